// The page at / when nalcast has several streams: a live tile per stream, each its
// own single-stream page (streams/NAME/?tile=1) in a frame, so that each tile
// chooses its decoder, falls back and explains itself exactly as that page does. A
// caption gives the stream's name, state, size and latency; a click opens the
// stream's own page. Tiles out of view are emptied, which closes their connection
// and stops their decoder; the list follows the server's (streams added or removed
// by a reload).
const grid = document.getElementById('grid');
const message = document.getElementById('grid-message');

/** name -> { figure, frame, caption, src } */
const tiles = new Map();

const observer = new IntersectionObserver((entries) => {
  for (const entry of entries) {
    const tile = [...tiles.values()].find((t) => t.figure === entry.target);
    if (!tile) continue;
    tile.visible = entry.isIntersecting;
    // Loading the page starts the tile; leaving it for an empty document ends it.
    const want = entry.isIntersecting ? tile.src : 'about:blank';
    if (tile.frame.getAttribute('src') !== want) tile.frame.setAttribute('src', want);
  }
});

function addTile(name) {
  const figure = document.createElement('figure');
  figure.className = 'tile';
  const frame = document.createElement('iframe');
  frame.title = `${name}, live`;
  const src = `streams/${encodeURIComponent(name)}/?tile=1`;
  const open = document.createElement('a');
  open.className = 'open';
  open.href = `streams/${encodeURIComponent(name)}/`;
  open.setAttribute('aria-label', `open ${name}`);
  const caption = document.createElement('figcaption');
  caption.textContent = name;
  figure.append(frame, open, caption);
  grid.append(figure);
  tiles.set(name, { figure, frame, caption, src, visible: false });
  observer.observe(figure);
}

function removeTile(name) {
  const tile = tiles.get(name);
  observer.unobserve(tile.figure);
  tile.figure.remove();
  tiles.delete(name);
}

/** The tile's player's stats, or null while it has none (out of view, loading). */
function statsOf(tile) {
  try {
    return tile.frame.contentWindow?.nalcast?.stats() ?? null;
  } catch {
    return null;
  }
}

function caption(name, tile) {
  if (!tile.visible) return `${name} · paused while out of view`;
  const s = statsOf(tile);
  if (!s) return `${name} · loading`;
  const parts = [name, s.state];
  if (s.width) parts.push(`${s.width}x${s.height}`);
  if (s.latencyMs !== null && s.latencyMs !== undefined) parts.push(`${Math.round(s.latencyMs)} ms`);
  return parts.join(' · ');
}

function renderCaptions() {
  for (const [name, tile] of tiles) {
    const text = caption(name, tile);
    if (tile.caption.textContent !== text) tile.caption.textContent = text;
  }
}

async function refresh() {
  let streams;
  try {
    const answer = await fetch('api/streams', { cache: 'no-store' });
    if (!answer.ok) throw new Error(`the server answered ${answer.status}`);
    ({ streams } = await answer.json());
    message.hidden = true;
  } catch (e) {
    message.textContent = `cannot read the list of cameras: ${e.message}`;
    message.hidden = false;
    return;
  }
  const names = streams.map((s) => s.name);
  for (const name of [...tiles.keys()]) if (!names.includes(name)) removeTile(name);
  for (const name of names) if (!tiles.has(name)) addTile(name);
  // Keep the server's order.
  for (const name of names) grid.append(tiles.get(name).figure);
}

// Test and debugging hook: each tile's name and its player's stats.
window.nalcast = {
  tiles() {
    return [...tiles].map(([name, tile]) => ({ name, visible: tile.visible, stats: statsOf(tile) }));
  },
};

await refresh();
setInterval(refresh, 5000);
setInterval(renderCaptions, 500);
