// The benchmark results at a glance: reads every dated `make bench` result
// (bench/results/YYYY-MM-DD.md) and draws the key figures over the runs as one SVG,
// so a regression shows as a bend in a line. No dependencies: the SVG is written by
// hand. Used by scripts/bench.sh after each run:
//   node web/bench/chart.mjs bench/results > bench/results/chart.svg
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

/** The markdown tables of a results file: each as {header: [..], rows: [[..]]}. */
export function tables(markdown) {
  const out = [];
  let current = null;
  for (const line of markdown.split('\n')) {
    if (!line.startsWith('|')) {
      current = null;
      continue;
    }
    const cells = line.split('|').slice(1, -1).map((c) => c.trim());
    if (cells.every((c) => /^-+$/.test(c))) continue;
    if (!current) {
      current = { header: cells, rows: [] };
      out.push(current);
    } else {
      current.rows.push(cells);
    }
  }
  return out;
}

/** The number at `index` of a cell like "5.3/7.9/8.5" or "1.00/2.50, 2.50". */
function part(cell, index) {
  if (cell === undefined) return undefined;
  const n = Number.parseFloat(cell.split(/[/,]/)[index]);
  return Number.isFinite(n) ? n : undefined;
}

/** The column whose header starts with `prefix`. */
function column(table, prefix) {
  return table.header.findIndex((h) => h.startsWith(prefix));
}

/**
 * The key figures of one run, by series name (a missing figure is left out):
 * time to first frame p95 and server-added p99 at 100 and 1000 viewers, CPU at 1000
 * viewers (and over ws:// and wss:// with a core of its own), glass-to-glass p95 per
 * decoder, time until live p95 per slow link.
 */
export function figures(markdown) {
  const f = {};
  for (const t of tables(markdown)) {
    if (t.header[0] === 'scenario' && column(t, 'ttff') > 0) {
      // (The floor-ratio table also starts with "scenario", without these columns.)
      const ttff = column(t, 'ttff');
      const server = column(t, 'server-added');
      const cpu = column(t, 'CPU');
      for (const row of t.rows) {
        const n = { 'fanout-100': '100', 'fanout-1000': '1000' }[row[0]];
        if (!n) continue;
        f[`first frame p95, ${n} viewers`] = part(row[ttff], 1);
        f[`server-added p99, ${n} viewers`] = part(row[server], 1);
        if (n === '1000') f['CPU %, 1000 viewers'] = part(row[cpu], 0);
      }
    } else if (t.header[0].startsWith('decoder')) {
      const p95 = column(t, 'p95');
      for (const row of t.rows) f[`glass-to-glass p95, ${row[0].split(' ')[0]}`] = part(row[p95], 0);
    } else if (t.header[0] === 'viewers' && column(t, 'wss:// CPU') > 0) {
      // WSS against plain: the pinned 1000-viewer row is nalcast's own CPU.
      const plain = column(t, 'ws:// CPU');
      const tls = column(t, 'wss:// CPU');
      for (const row of t.rows) {
        if (!/^1000, pinned/.test(row[0])) continue;
        f['CPU %, ws:// 1000, own core'] = part(row[plain], 0);
        f['CPU %, wss:// 1000, own core'] = part(row[tls], 0);
      }
    } else if (t.header[0] === 'link') {
      const live = column(t, 'live after');
      for (const row of t.rows) {
        const value = part(row[live], 1);
        // The first table wins: a day's slow-link file lists its runs oldest first.
        const key = `time to live p95, ${row[0]}`;
        if (/Mbit/.test(row[0]) && f[key] === undefined) f[key] = value;
      }
    }
  }
  for (const k of Object.keys(f)) if (f[k] === undefined) delete f[k];
  return f;
}

/**
 * Every dated result in `dir` (DATE.md, then DATE-2.md, … for later runs that day),
 * oldest first: [{date, figures}]. A day's slow-link-DATE.md (scripts/slow-link.sh
 * run alone) adds to that day's first run.
 */
export function history(dir) {
  const names = readdirSync(dir);
  return names
    .filter((name) => /^\d{4}-\d{2}-\d{2}(-\d+)?\.md$/.test(name))
    .map((name) => name.slice(0, -3))
    .sort((a, b) => a.slice(0, 10).localeCompare(b.slice(0, 10)) || Number(a.slice(11) || 1) - Number(b.slice(11) || 1))
    .map((date) => {
      let text = readFileSync(join(dir, `${date}.md`), 'utf8');
      // A day's slow-link file adds to the first run of that day (the later runs of
      // make bench have their own "Slow links" section); its first table, the state
      // before that day's changes, is the one read.
      if (names.includes(`slow-link-${date}.md`)) text += '\n' + readFileSync(join(dir, `slow-link-${date}.md`), 'utf8');
      return { date, figures: figures(text) };
    });
}

/** The panels: a title, its unit and the series drawn in it (by name prefix). */
export const PANELS = [
  { title: 'Time to first frame, p95', unit: 'ms', prefix: 'first frame' },
  { title: 'Server-added delay, p99 (bucket edge)', unit: 'ms', prefix: 'server-added' },
  { title: 'Glass-to-glass in Chromium, p95', unit: 'ms', prefix: 'glass-to-glass' },
  { title: 'CPU at 1000 viewers, ws:// and wss://', unit: '% of a core', prefix: 'CPU' },
  { title: 'Slow links: time until live, p95', unit: 'ms', prefix: 'time to live' },
];

const COLOURS = ['#1f77b4', '#d62728', '#2ca02c', '#9467bd', '#ff7f0e'];
const esc = (s) => String(s).replace(/&/g, '&amp;').replace(/</g, '&lt;');

/** One SVG with a line chart per panel over the runs. */
export function render(runs) {
  const w = 420, h = 220, pad = { l: 48, r: 28, t: 28, b: 56 };
  const cols = 2;
  const rows = Math.ceil(PANELS.length / cols);
  const parts = [];
  PANELS.forEach((panel, i) => {
    const x0 = (i % cols) * w, y0 = Math.floor(i / cols) * h;
    const names = [...new Set(runs.flatMap((r) => Object.keys(r.figures)))]
      .filter((n) => n.startsWith(panel.prefix)).sort();
    const values = runs.flatMap((r) => names.map((n) => r.figures[n])).filter((v) => v !== undefined);
    const top = values.length ? Math.max(...values) * 1.1 || 1 : 1;
    const px = (k) => x0 + pad.l + (runs.length < 2 ? (w - pad.l - pad.r) / 2 : (k * (w - pad.l - pad.r)) / (runs.length - 1));
    const py = (v) => y0 + h - pad.b - (v / top) * (h - pad.t - pad.b);
    parts.push(`<text x="${x0 + pad.l}" y="${y0 + 18}" font-weight="bold">${esc(panel.title)} (${esc(panel.unit)})</text>`);
    parts.push(`<line x1="${x0 + pad.l}" y1="${py(0)}" x2="${x0 + w - pad.r}" y2="${py(0)}" stroke="#888"/>`);
    parts.push(`<text x="${x0 + 4}" y="${py(top) + 4}" fill="#555">${+top.toPrecision(3)}</text>`);
    parts.push(`<text x="${x0 + 4}" y="${py(0) + 4}" fill="#555">0</text>`);
    runs.forEach((r, k) => {
      parts.push(`<text x="${px(k)}" y="${py(0) + 14}" text-anchor="middle" fill="#555">${esc(r.date.slice(5))}</text>`);
    });
    if (!names.length) {
      parts.push(`<text x="${x0 + w / 2}" y="${y0 + h / 2}" text-anchor="middle" fill="#888">not measured yet</text>`);
    }
    names.forEach((name, j) => {
      const colour = COLOURS[j % COLOURS.length];
      const points = runs
        .map((r, k) => (r.figures[name] === undefined ? null : [px(k), py(r.figures[name]), r.figures[name]]))
        .filter(Boolean);
      parts.push(`<polyline fill="none" stroke="${colour}" stroke-width="2" points="${points.map(([x, y]) => `${x.toFixed(1)},${y.toFixed(1)}`).join(' ')}"/>`);
      for (const [x, y] of points) parts.push(`<circle cx="${x.toFixed(1)}" cy="${y.toFixed(1)}" r="3" fill="${colour}"/>`);
      const last = points[points.length - 1];
      parts.push(`<text x="${x0 + pad.l + (j % 2) * 180}" y="${y0 + h - 22 + Math.floor(j / 2) * 12}" fill="${colour}">${esc(name.slice(panel.prefix.length).replace(/^[ ,]+/, '') || name)}: ${last[2]}</text>`);
    });
  });
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${cols * w}" height="${rows * h}" font-family="sans-serif" font-size="11">
<rect width="100%" height="100%" fill="white"/>
${parts.join('\n')}
</svg>
`;
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const dir = process.argv[2] ?? 'bench/results';
  process.stdout.write(render(history(dir)));
}
