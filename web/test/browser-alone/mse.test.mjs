// The Media Source Extensions path end to end: the real nalcast binary's /ws/fmp4 and
// the page in Chromium on a plain-HTTP LAN name (camera.lan mapped to loopback: not a
// secure context, so no WebCodecs), checked by reading the test pattern's frame stamp
// back from the <video> and by the video element's own counters.
//
// The server's Content-Security-Policy allows `media-src 'self' blob:` (the blob: URL
// a MediaSource plays from); a stricter policy makes the page fall back to /ws
// (tested below). These tests run under the server's own policy.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, launchBrowser, waitForStats, screenshotPath, x264, LAN, openWatchingMse, samplePicture } from '../browser/helpers.mjs';

let browser;
before(async () => { browser = await launchBrowser(LAN); });
after(async () => { await browser?.close(); });

const open = (server, query) => openWatchingMse(browser, server, query);

test('plain HTTP on a LAN name: the page picks MSE by itself and plays the live 1280x720 test pattern', async (t) => {
  const server = await startServer(['--width', '1280', '--height', '720']);
  try {
    const page = await open(server);
    assert.equal(await page.evaluate(() => window.isSecureContext), false);
    const first = await waitForStats(page, (s) => s.framesPainted > 0 && s.lastFrameNumber !== null, 'a first picture with a stamp');
    assert.equal(first.decoder, 'mse');
    assert.equal(first.endpoint, 'ws/fmp4');
    assert.equal(first.endpointSwitches, 0);
    const later = await waitForStats(page, (s) => s.lastFrameNumber >= first.lastFrameNumber + 30 && s.latencyMs !== null && s.latencyMs < 1000,
      'the stamp to advance, live');
    assert.equal(later.state, 'live');
    assert.equal(later.canvasWidth, 1280);
    assert.equal(later.canvasHeight, 720);
    assert.equal(await page.evaluate(() => document.getElementById('video').tagName), 'VIDEO');
    // A few seconds on: still live, the buffer small, few frames dropped.
    await page.waitForTimeout(3000);
    const s = await page.evaluate(() => window.nalcast.stats());
    assert.ok(s.lastFrameNumber > later.lastFrameNumber + 45, `frame #${s.lastFrameNumber} after #${later.lastFrameNumber}`);
    assert.ok(s.latencyMs < 1000, `latency ${s.latencyMs} ms`);
    assert.ok(s.bufferedAheadS < 1, `${s.bufferedAheadS} s buffered ahead`);
    assert.ok(s.videoFramesDropped <= s.videoFramesTotal / 8, `${s.videoFramesDropped} of ${s.videoFramesTotal} dropped`);
    await page.screenshot({ path: screenshotPath('mse-1280x720') });
    t.diagnostic(`first picture ${first.firstPaintMs} ms; latency ${s.latencyMs} ms, ${s.bufferedAheadS} s ahead, `
      + `dropped ${s.videoFramesDropped}/${s.videoFramesTotal}, ${s.liveSeeks} seeks, ${s.liveStalls} stalls, cushion ${s.cushionS} s`);
    await page.close();
  } finally {
    await server.stop();
  }
});

test('a Main profile stream with B-frames plays in order', async (t) => {
  const server = await startServer(['--source', `exec:${x264('main', '640x360', '-bf 2')}`]);
  try {
    const page = await open(server);
    const first = await waitForStats(page, (s) => s.framesPainted > 0, 'a first picture');
    assert.equal(first.decoder, 'mse');
    assert.match(first.codec, /^avc1\.4D/i);
    const s = await waitForStats(page, (st) => st.framesPainted >= first.framesPainted + 60, 'two seconds of pictures', 10000);
    const log = await page.evaluate(() => window.mseLog);
    // Presentation order: the media time of the pictures shown only goes forward,
    // except where the page jumped to the live edge.
    const frames = log.frames.slice(5);
    const back = frames.filter((f, i) => i > 0 && f.mediaTime < frames[i - 1].mediaTime);
    assert.ok(back.length <= s.liveSeeks, `${back.length} steps back, ${s.liveSeeks} seeks`);
    assert.ok(s.videoFramesDropped <= s.videoFramesTotal / 8, `${s.videoFramesDropped} of ${s.videoFramesTotal} dropped`);
    // testsrc2 moves: two pictures a second apart differ, and are colourful.
    const a = await samplePicture(page);
    await page.waitForTimeout(1000);
    const b = await samplePicture(page);
    assert.ok(a.colours > 50, `${a.colours} colours`);
    assert.notEqual(a.sum, b.sum, 'the picture changes');
    assert.equal(s.canvasWidth, 640);
    await page.screenshot({ path: screenshotPath('mse-main-bframes') });
    t.diagnostic(`${s.codec}: ${s.framesPainted} painted, dropped ${s.videoFramesDropped}/${s.videoFramesTotal}, latency ${s.latencyMs} ms, ${back.length} steps back`);
    await page.close();
  } finally {
    await server.stop();
  }
});

test('a resolution change and a source restart play on without a reload', async (t) => {
  // 3 s at 640x360, then 320x180; the command then exits and is restarted by nalcast.
  const server = await startServer(['--source', `exec:${x264('main', '640x360', '-t 3')}; exec ${x264('main', '320x180', '-t 3')}`]);
  try {
    const page = await open(server);
    await page.evaluate(() => { window.notReloaded = true; });
    const big = await waitForStats(page, (s) => s.framesPainted > 10 && s.canvasWidth === 640, 'pictures at 640x360');
    assert.equal(big.decoder, 'mse');
    const small = await waitForStats(page, (s) => s.canvasWidth === 320 && s.framesPainted > big.framesPainted + 10, 'pictures at 320x180');
    assert.equal(small.width, 320);
    // The command ends; nalcast restarts it: 640x360 again, a new stream-info and init segment.
    const again = await waitForStats(page, (s) => s.canvasWidth === 640 && s.framesPainted > small.framesPainted + 10, 'pictures after the restart', 20000);
    const more = await waitForStats(page, (s) => s.framesPainted > again.framesPainted + 20, 'the picture to keep moving');
    assert.equal(more.state, 'live');
    assert.equal(more.reconnects, 0, 'the same connection');
    assert.equal(more.decoder, 'mse');
    assert.equal(await page.evaluate(() => window.notReloaded), true, 'the page was not reloaded');
    t.diagnostic(`640 -> 320 -> restart -> 640: ${more.framesPainted} painted, ${more.liveSeeks} seeks, dropped ${more.videoFramesDropped}/${more.videoFramesTotal}`);
    await page.close();
  } finally {
    await server.stop();
  }
});

test('the page reconnects to /ws/fmp4 after a server restart', async () => {
  let server = await startServer(['--width', '640', '--height', '360']);
  const port = server.port;
  const page = await open(server);
  try {
    const before = await waitForStats(page, (s) => s.decoder === 'mse' && s.lastFrameNumber !== null && s.lastFrameNumber > 30, 'frames before the restart');
    await server.stop('SIGKILL');
    await waitForStats(page, (s) => s.state === 'reconnecting', 'the reconnecting state');
    server = await startServer(['--width', '640', '--height', '360'], port);
    // The new process numbers frames from 0 and starts a new timeline.
    const after = await waitForStats(page, (s) => s.state === 'live' && s.lastFrameNumber !== null && s.lastFrameNumber < before.lastFrameNumber, 'frames from the restarted server');
    await waitForStats(page, (s) => s.lastFrameNumber > after.lastFrameNumber + 15, 'frames to keep advancing');
    assert.equal(after.decoder, 'mse');
  } finally {
    await page.close();
    await server.stop();
  }
});

test('MSE plays under the server\'s own Content-Security-Policy', async () => {
  const server = await startServer(['--width', '640', '--height', '360']);
  const strict = await launchBrowser(LAN);
  try {
    const page = await strict.newPage();
    await page.goto(`http://camera.lan:${server.port}/`);
    const s = await waitForStats(page, (st) => st.framesPainted > 5, 'pictures', 8000);
    assert.equal(s.decoder, 'mse');
  } finally {
    await strict.close();
    await server.stop();
  }
});
