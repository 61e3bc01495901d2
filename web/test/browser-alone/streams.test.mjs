// Many cameras in one nalcast, in the real page: the grid at / with a live tile per
// stream (each tile's burned-in stamp read back and seen advancing), the tile
// opening the stream's own page, and that page playing the stream it names.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, launchBrowser, waitForStats, screenshotPath } from '../browser/helpers.mjs';

let browser;
before(async () => { browser = await launchBrowser(); });
after(async () => { await browser?.close(); });

const NAMES = ['garden', 'door', 'desk', 'yard'];

/** The grid's tiles, until `pred` holds for the list. */
async function waitForTiles(page, pred, what, timeoutMs = 20000) {
  const deadline = Date.now() + timeoutMs;
  let last = null;
  while (Date.now() < deadline) {
    last = await page.evaluate(() => window.nalcast?.tiles?.() ?? null).catch(() => null);
    if (last && pred(last)) return last;
    await page.waitForTimeout(100);
  }
  throw new Error(`timed out waiting for ${what}; last tiles: ${JSON.stringify(last)}`);
}

test('the grid shows every stream live, and a tile opens that stream alone', async () => {
  const server = await startServer([
    ...NAMES.flatMap((n) => ['--stream', `${n}=test`]),
    '--width', '320', '--height', '240', '--bitrate', '300000',
  ]);
  const page = await browser.newPage();
  await page.setViewportSize({ width: 1280, height: 800 });
  try {
    await page.goto(server.url);
    const live = (t) => t.stats?.state === 'live' && t.stats.lastFrameNumber !== null;
    const first = await waitForTiles(page, (tiles) => tiles.length === NAMES.length && tiles.every(live), 'four live tiles');
    assert.deepEqual(first.map((t) => t.name), NAMES, 'the tiles in the configured order');
    // Each tile's own stamp advances: four pictures, not one.
    const frameOf = new Map(first.map((t) => [t.name, t.stats.lastFrameNumber]));
    await waitForTiles(page, (tiles) => tiles.every((t) => live(t) && t.stats.lastFrameNumber >= frameOf.get(t.name) + 10), 'every tile to advance 10 frames');
    // Each caption names its stream, state and size (refreshed twice a second).
    await page.waitForFunction((names) => {
      const captions = [...document.querySelectorAll('figcaption')].map((c) => c.textContent);
      return names.every((n, i) => captions[i]?.startsWith(`${n} · live · 320x240 · `));
    }, NAMES, { timeout: 5000 });
    await page.screenshot({ path: screenshotPath('grid-four-streams') });

    // A click on a tile opens the stream's own page, which plays that stream.
    await page.getByRole('link', { name: 'open desk' }).click();
    await page.waitForURL(/\/streams\/desk\/$/);
    assert.equal(await page.title(), 'desk · nalcast');
    const alone = await waitForStats(page, (s) => s.state === 'live' && s.lastFrameNumber !== null, 'the single-stream page to play');
    await waitForStats(page, (s) => s.lastFrameNumber >= alone.lastFrameNumber + 10, 'its frames to advance');
    await page.screenshot({ path: screenshotPath('stream-page-desk') });
  } finally {
    await page.close();
    await server.stop();
  }
});

test('tiles out of view stop playing and start again when scrolled back', async () => {
  const many = Array.from({ length: 9 }, (_, i) => `cam${i}`);
  const server = await startServer([
    ...many.flatMap((n) => ['--stream', `${n}=test`]),
    '--width', '160', '--height', '96', '--bitrate', '100000', '--fps', '10',
  ]);
  // One column of 16:9 tiles 400 px wide: about three fit in 600 px.
  const page = await browser.newPage();
  await page.setViewportSize({ width: 420, height: 600 });
  try {
    await page.goto(server.url);
    const tiles = await waitForTiles(page, (t) => t.length === many.length && t[0].stats?.state === 'live', 'the first tile to play');
    const hidden = tiles.filter((t) => !t.visible).map((t) => t.name);
    assert.ok(hidden.includes('cam8'), `the last tile starts out of view: ${JSON.stringify(tiles.map((t) => [t.name, t.visible]))}`);
    assert.equal(tiles.find((t) => t.name === 'cam8').stats, null, 'a tile out of view has no player');
    const viewers = async () => (await (await fetch(`${server.url}api/streams`)).json()).streams.find((s) => s.name === 'cam8').viewers;
    assert.equal(await viewers(), 0, 'nor a connection');
    await page.locator('figure.tile').last().scrollIntoViewIfNeeded();
    await waitForTiles(page, (t) => t.find((x) => x.name === 'cam8')?.stats?.state === 'live', 'the last tile to play once in view');
    await waitForTiles(page, (t) => t.find((x) => x.name === 'cam0')?.stats === null, 'the first tile to stop once out of view');
  } finally {
    await page.close();
    await server.stop();
  }
});
