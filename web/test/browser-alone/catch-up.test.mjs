// A join late in a GOP of a camera that cannot make keyframes on request: the page
// decodes the whole catch-up burst and drops nothing after it. Run alone, after the
// other browser tests: how fast the page gets through the burst is what is tested.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, launchBrowser, waitForStats, x264, countCatchUp } from '../browser/helpers.mjs';

let server;
before(async () => { server = await startServer(['--source', `exec:${x264('main', '640x360')}`]); });
after(async () => { await server?.stop(); });

test('a viewer joining late in a GOP decodes the whole catch-up and keeps every frame after it', async (t) => {
  // The camera cannot make a keyframe on request: a page that took the join burst
  // for a slow decoder and skipped to the next keyframe froze for up to a GOP.
  const browser = await launchBrowser();
  try {
    const joins = [];
    for (let i = 0; i < 6 && !joins.some((j) => j.catchUp >= 20); i++) {
      const page = await browser.newPage();
      await page.addInitScript(countCatchUp);
      await page.goto(server.url);
      const first = await waitForStats(page, (s) => s.framesPainted > 0, 'a first painted frame');
      const s = await waitForStats(page, (st) => st.framesPainted >= first.framesPainted + 30, 'a second of painted frames', 5000);
      const catchUp = await page.evaluate(() => window.catchUpFrames);
      joins.push({ catchUp, dropped: s.framesDropped, keyframeRequests: s.keyframeRequests, firstPaintMs: s.firstPaintMs });
      await page.close();
    }
    t.diagnostic(joins.map((j) => `${j.catchUp} catch-up: ${j.dropped} dropped, first paint ${j.firstPaintMs} ms`).join('; '));
    assert.ok(joins.some((j) => j.catchUp >= 20), 'one join came late in a GOP');
    for (const j of joins) {
      assert.equal(j.dropped, 0, `no frame dropped after a join with ${j.catchUp} catch-up frames`);
      assert.equal(j.keyframeRequests, 0);
    }
  } finally {
    await browser.close();
  }
});
