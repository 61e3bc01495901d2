// End-to-end: the real nalcast binary on the test source, the real page in Debian's
// headless Chromium, checked by reading the burned-in frame stamp from the canvas.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { startServer, launchBrowser, waitForStats, screenshotPath, benchBin, playsLive as playsLiveIn } from './helpers.mjs';

let browser;
before(async () => { browser = await launchBrowser(); });
after(async () => { await browser?.close(); });

const playsLive = (...args) => playsLiveIn(browser, ...args);

test('WebCodecs path paints the live 1280x720 test pattern', async () => {
  const server = await startServer(['--width', '1280', '--height', '720']);
  try {
    await playsLive(server, '/?stats=1', 'webcodecs', 1280, 720, 'webcodecs-1280x720');
  } finally {
    await server.stop();
  }
});

test('Broadway path paints the live 640x360 test pattern', async () => {
  const server = await startServer(['--width', '640', '--height', '360', '--bitrate', '1000000']);
  try {
    await playsLive(server, '/?decoder=broadway&stats=1', 'broadway', 640, 360, 'broadway-640x360');
  } finally {
    await server.stop();
  }
});

test('the size comes from the stream: WebCodecs at 640x360', async () => {
  const server = await startServer(['--width', '640', '--height', '360', '--bitrate', '1000000']);
  try {
    await playsLive(server, '/', 'webcodecs', 640, 360, 'webcodecs-640x360');
  } finally {
    await server.stop();
  }
});

test('the page reconnects after a server restart and paints again without a reload', async () => {
  let server = await startServer(['--width', '640', '--height', '360']);
  const port = server.port;
  const page = await browser.newPage();
  try {
    await page.goto(server.url);
    await page.evaluate(() => { window.notReloaded = true; });
    const before = await waitForStats(page, (s) => s.lastFrameNumber !== null && s.lastFrameNumber > 30, 'frames before the restart');
    await server.stop('SIGKILL');
    await waitForStats(page, (s) => s.state === 'reconnecting', 'the reconnecting state');
    server = await startServer(['--width', '640', '--height', '360'], port);
    // Frame numbers restart with the new server process.
    const after = await waitForStats(page, (s) => s.state === 'live' && s.lastFrameNumber !== null && s.lastFrameNumber < before.lastFrameNumber, 'frames from the restarted server');
    await waitForStats(page, (s) => s.lastFrameNumber > after.lastFrameNumber + 5, 'frames to keep advancing');
    assert.equal(await page.evaluate(() => window.notReloaded), true, 'the page was not reloaded');
    assert.ok(after.reconnects >= 1);
    // The restarted server numbers its frames from 0 again: a new connection starts
    // a new run of sequence numbers, not a gap.
    assert.equal(after.sequenceGaps, 0);
  } finally {
    await page.close();
    await server.stop();
  }
});

test('a stalled tab recovers to live', async (t) => {
  const server = await startServer(['--width', '640', '--height', '360', '--keyframe-interval', '30']);
  const page = await browser.newPage();
  try {
    await page.goto(server.url);
    await waitForStats(page, (s) => s.lastFrameNumber !== null && s.latencyMs !== null && s.latencyMs < 500, 'live frames');
    // Block the page's main thread for 3 s, as a busy or throttled tab would be.
    await page.evaluate(() => { const end = Date.now() + 3000; while (Date.now() < end) { /* stall */ } });
    const stalled = await page.evaluate(() => window.nalcast.stats());
    const recovered = await waitForStats(page, (s) => s.lastFrameNumber > stalled.lastFrameNumber + 60 && s.latencyMs < 500, 'the picture to be live again', 20000);
    assert.equal(recovered.state, 'live');
    // What the server dropped meanwhile it announced: no gap in the frame numbers.
    assert.equal(recovered.sequenceGaps, 0);
    t.diagnostic(`after the stall: ${recovered.framesSkippedByServer} frames skipped by the server, ${recovered.framesDropped} by the page, ${recovered.sequenceGaps} gaps`);
  } finally {
    await page.close();
    await server.stop();
  }
});

test('killing the camera process shows "source lost", then the live picture again without a reload', async () => {
  // The "camera": a second nalcast's raw stream, relayed by nalcast-bench --record -,
  // a child process of the nalcast under test that we can kill like a crashed camera app.
  const camera = await startServer(['--width', '640', '--height', '360', '--keyframe-interval', '15']);
  const relay = `${benchBin()} --url ws://127.0.0.1:${camera.port}/ws/raw --dialect raw --duration 100000 --record -`;
  const server = await startServer(['--source', `exec:${relay}`]);
  const page = await browser.newPage();
  try {
    await page.goto(server.url);
    await page.evaluate(() => { window.notReloaded = true; });
    const before = await waitForStats(page, (s) => s.state === 'live' && s.framesPainted > 10, 'live frames from the camera');
    // Only the relay: the server's own command line mentions it too.
    execFileSync('pkill', ['-KILL', '-f', `^${benchBin()} --url ws://127.0.0.1:${camera.port}/`]);
    const lost = await waitForStats(page, (s) => s.state === 'source-lost', 'the source-lost state');
    assert.ok(lost.sourceReason, 'the reason is shown');
    await page.screenshot({ path: screenshotPath('source-lost') });
    const back = await waitForStats(page, (s) => s.state === 'live' && s.framesPainted > before.framesPainted + 10, 'the picture to come back');
    assert.equal(await page.evaluate(() => window.notReloaded), true, 'the page was not reloaded');
    assert.equal(back.reconnects, 0, 'the WebSocket stayed open');
  } finally {
    await page.close();
    await server.stop();
    await camera.stop();
  }
});
