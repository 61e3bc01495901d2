// The benchmark chart (web/bench/chart.mjs): the figures it reads from results of
// every format `make bench` has written, and the SVG it draws from them.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { figures, history, render, PANELS } from '../../bench/chart.mjs';

const OLD = `# nalcast benchmarks, 2026-11-24

| scenario | viewers | started | errors | ttff p50/p95/max ms | ≥95% fps | fps p5/p50 | max gap ms | lost | capture→arrival p50/p95/p99 ms | server-added p50/p99 ms (≤) | CPU mean/max % | RSS | Mbit/s |
|---|---|---|---|---|---|---|---|---|---|---|---|---|---|
| fanout-100 | 100 | 100 | 0 | 5.3/7.9/8.5 | 100.0% | 29.8/29.8 | 100 | 0 | 5.7/7.2/8.9 | 1.00/2.50 | 17.6/22.0 | 21.9/24.1/24.1 | 307.6 |
| fanout-1000 | 1000 | 1000 | 0 | 63.9/125.8/142.0 | 100.0% | 29.7/29.9 | 166 | 0 | 16.5/36.4/61.6 | 10.00/50.00 | 47.3/59.9 | 46.5/67.9/67.9 | 3002.3 |

| decoder | samples | p50 ms | p95 ms | max ms | fps | dropped |
|---|---|---|---|---|---|---|
| webcodecs | 481 | 24.4 | 39.1 | 45.9 | 29.9 | 12 |
`;

const NEW = `| scenario | viewers | ttff p50/p95/max ms | server-added steady p50/p99, whole-run p99 ms (≤) | steady ≤ 1 ms | CPU mean/max % |
|---|---|---|---|---|---|
| fanout-1000 | 1000 | 351.7/572.6/607.7 | 7.50/20.00, 20.00 | 1.6% | 109.5/125.2 |

| decoder (played by) | first picture ms | samples | p50 ms | p95 ms | max ms | fps | dropped |
|---|---|---|---|---|---|---|---|
| mse (mse) | 280 | 367 | 90.3 | 117.1 | 135.6 | 29.6 | 0 |

| link | stream | joins | first picture p50 / p95 ms | first picture ≤ 150 ms | live after p50 / p95 / max ms |
|---|---|---|---|---|---|
| 20 Mbit/s | 720p30 | 20 | 14 / 15 | 20 of 20 | 145 / 299 / 308 |
| 5 Mbit/s | 720p30 | 20 | 54 / 57 | 20 of 20 | 1782 / never / never |

| scenario | viewers | nalcast p99 ms (≤) | floor p99 ms | ratio | ≤ 1.5× |
|---|---|---|---|---|---|
| fanout-1000 | 1000 | 16.5 | 10.16 | 1.62 | no |

| viewers | ws:// CPU % | wss:// CPU % | ratio |
|---|---|---|---|
| 200 | 31.5 | 42.2 | 1.34 |
| 1000, pinned: nalcast on core 0, load generator on core 1, file source | 46.5 | 66.0 | 1.42 |

| link Mbit/s | join | GOP phase ms |
|---|---|---|
| 20 | 1 | 154 |
`;

test('the figures are read by column name from old and new result tables', () => {
  assert.deepEqual(figures(OLD), {
    'first frame p95, 100 viewers': 7.9,
    'server-added p99, 100 viewers': 2.5,
    'first frame p95, 1000 viewers': 125.8,
    'server-added p99, 1000 viewers': 50,
    'CPU %, 1000 viewers': 47.3,
    'glass-to-glass p95, webcodecs': 39.1,
  });
  assert.deepEqual(figures(NEW), {
    'first frame p95, 1000 viewers': 572.6,
    'server-added p99, 1000 viewers': 20,
    'CPU %, 1000 viewers': 109.5,
    'glass-to-glass p95, mse': 117.1,
    'time to live p95, 20 Mbit/s': 299,
    'CPU %, ws:// 1000, own core': 46.5,
    'CPU %, wss:// 1000, own core': 66,
  }, 'a "never" is left out, the per-join table is not a summary, nor the floor-ratio table');
});

test('the chart draws one line per series over the runs, and says what is missing', () => {
  const svg = render([
    { date: '2026-11-24', figures: figures(OLD) },
    { date: '2026-11-26', figures: figures(NEW) },
  ]);
  assert.match(svg, /^<svg xmlns="http:\/\/www.w3.org\/2000\/svg"/);
  const lines = svg.match(/<polyline /g) ?? [];
  assert.equal(lines.length, 10, 'one line per series seen in either run');
  for (const p of PANELS) assert.ok(svg.includes(p.title), p.title);
  assert.match(svg, /1000 viewers: 572.6/, 'the latest value is written beside its line');
  assert.match(svg, /11-24[\s\S]*11-26/);
  const empty = render([{ date: '2026-11-24', figures: {} }]);
  assert.equal((empty.match(/not measured yet/g) ?? []).length, PANELS.length);
});

test('the committed chart is the one the committed results make, and the README shows it', () => {
  const dir = new URL('../../../bench/results/', import.meta.url).pathname;
  const committed = readFileSync(new URL('../../../bench/results/chart.svg', import.meta.url), 'utf8');
  assert.equal(committed, render(history(dir)), 'run: node web/bench/chart.mjs bench/results > bench/results/chart.svg');
  const readme = readFileSync(new URL('../../../README.md', import.meta.url), 'utf8');
  assert.match(readme, /!\[[^\]]*\]\(bench\/results\/chart\.svg\)/);
});
