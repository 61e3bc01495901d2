// LL-HLS in a browser: hls.js (the library most web players build on) in Chromium
// plays nalcast's /hls/index.m3u8 in low-latency mode: parts loaded, blocking
// reloads, the live test pattern on screen (its frame stamp read back from the
// <video> advances), and how far behind the camera it plays (stamp capture time to
// the picture on screen), reported.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { createRequire } from 'node:module';
import { startServer, launchBrowser, screenshotPath } from '../browser/helpers.mjs';

const require = createRequire(import.meta.url);
const HLS_JS = readFileSync(require.resolve('hls.js/dist/hls.min.js'));

// The page under test: not nalcast's own (which plays WebSockets), a minimal hls.js
// player served at the server's origin by the browser itself (so the playlist is
// same-origin and nalcast's files, e.g. /stamp.js, load as they are).
const PAGE = `<!doctype html><meta charset="utf-8"><title>hls.js</title>
<video id="v" muted autoplay playsinline style="width:640px;height:360px"></video>
<script src="/hls-test/hls.js"></script>
<script type="module">
import { readStamp, captureNear } from '/stamp.js';
const log = window.hlsLog = { parts: 0, fragments: 0, reloads: 0, canBlockReload: null, errors: [], stamps: [] };
const video = document.getElementById('v');
const hls = new Hls({ lowLatencyMode: true, backBufferLength: 4 });
hls.on(Hls.Events.FRAG_LOADED, (_, d) => { if (d.part) log.parts++; else log.fragments++; });
hls.on(Hls.Events.LEVEL_LOADED, (_, d) => {
  log.reloads++;
  log.canBlockReload = d.details.canBlockReload;
  log.partTarget = d.details.partTarget;
});
hls.on(Hls.Events.ERROR, (_, d) => log.errors.push(d.details + (d.fatal ? ' (fatal)' : '')));
hls.loadSource('/hls/index.m3u8');
hls.attachMedia(video);
const canvas = document.createElement('canvas');
const ctx = canvas.getContext('2d', { willReadFrequently: true });
const onFrame = () => {
  video.requestVideoFrameCallback(onFrame);
  if (!video.videoWidth) return;
  canvas.width = video.videoWidth;
  canvas.height = 32;
  ctx.drawImage(video, 0, 0, video.videoWidth, video.videoHeight, 0, 0, video.videoWidth, video.videoHeight);
  const s = readStamp(ctx.getImageData(0, 0, canvas.width, 32).data, canvas.width);
  if (!s) return;
  const nowUs = (performance.timeOrigin + performance.now()) * 1000;
  log.stamps.push({ frame: s.frame, latencyMs: (nowUs - captureNear(s.low40, nowUs)) / 1000 });
};
video.requestVideoFrameCallback(onFrame);
</script>`;

let browser;
before(async () => {
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
});

test('hls.js plays /hls/index.m3u8 in low-latency mode: parts, blocking reload, the live picture', async (t) => {
  const server = await startServer(['--width', '640', '--height', '360', '--keyframe-interval', '30']);
  try {
    const page = await browser.newPage();
    await page.route('**/hls-test.html', (r) => r.fulfill({ contentType: 'text/html', body: PAGE }));
    await page.route('**/hls-test/hls.js', (r) => r.fulfill({ contentType: 'text/javascript', body: HLS_JS }));
    await page.goto(`http://127.0.0.1:${server.port}/hls-test.html`);
    // Two seconds of live pictures after the first.
    await page.waitForFunction(() => window.hlsLog?.stamps.length > 0, null, { timeout: 20000 });
    await page.waitForFunction(() => {
      const s = window.hlsLog.stamps;
      return s.length >= 60 && s.at(-1).frame - s[0].frame >= 60;
    }, null, { timeout: 20000 });
    const log = await page.evaluate(() => window.hlsLog);
    assert.equal(log.canBlockReload, true, 'the playlist says CAN-BLOCK-RELOAD');
    assert.ok(Math.abs(log.partTarget - 0.2) < 1e-6, `PART-TARGET ${log.partTarget}`);
    assert.ok(log.parts > 10, `${log.parts} parts loaded (low-latency mode), ${log.fragments} segments`);
    // About one blocking reload per 0.2 s part over the ~2 s watched (11-12 on a
    // quiet machine, 10 once on a busy one); a player not in low-latency mode
    // reloads once per segment target (about 1 s), 2 or 3 times.
    assert.ok(log.reloads >= 8, `${log.reloads} playlist reloads`);
    assert.deepEqual(log.errors.filter((e) => e.includes('fatal')), [], 'no fatal hls.js error');
    // Pictures move forward: frame numbers only grow (no going back), mostly by one.
    const frames = log.stamps.map((s) => s.frame);
    const back = frames.filter((f, i) => i > 0 && f < frames[i - 1]);
    assert.deepEqual(back, [], 'frame numbers never go back');
    const latencies = log.stamps.slice(-60).map((s) => s.latencyMs).sort((a, b) => a - b);
    const p50 = latencies[latencies.length >> 1];
    // LL-HLS plays PART-HOLD-BACK (3 parts, 0.6 s) and more behind the live edge; this
    // only says it is live, not a recording minutes old.
    assert.ok(p50 < 5000, `p50 ${p50} ms behind the camera`);
    t.diagnostic(`hls.js ${log.parts} parts, ${log.fragments} segments, ${log.reloads} reloads; camera to screen p50 ${p50.toFixed(0)} ms, max ${latencies.at(-1).toFixed(0)} ms; errors: ${log.errors.join(', ') || 'none'}`);
    await page.screenshot({ path: screenshotPath('hls-js') });
    await page.close();
  } finally {
    await server.stop();
  }
});

// A dashboard of its own origin (another port on loopback: a dashboard on the LAN
// is in the camera's address space too) playing nalcast's LL-HLS with hls.js: the
// browser lets it read the playlist and parts only when nalcast names the
// dashboard's origin (--allow-origin).
const DASHBOARD = (playlist) => `<!doctype html><meta charset="utf-8"><title>dashboard</title>
<video id="v" muted autoplay playsinline style="width:640px;height:360px"></video>
<script src="/hls.js"></script>
<script>
const log = window.dashLog = { errors: [], times: [] };
const video = document.getElementById('v');
const hls = new Hls({ lowLatencyMode: true });
hls.on(Hls.Events.ERROR, (_, d) => log.errors.push(d.details + (d.fatal ? ' (fatal)' : '')));
hls.loadSource(${JSON.stringify(playlist)});
hls.attachMedia(video);
setInterval(() => { if (video.videoWidth) log.times.push(video.currentTime); log.width = video.videoWidth; }, 100);
</script>`;

/** The dashboard's own web server, on a port of its own: its origin. */
async function dashboardServer(nalcastPort) {
  const playlist = `http://127.0.0.1:${nalcastPort}/hls/index.m3u8`;
  const srv = http.createServer((req, res) => {
    const js = req.url === '/hls.js';
    res.writeHead(200, { 'content-type': js ? 'text/javascript' : 'text/html' });
    res.end(js ? HLS_JS : DASHBOARD(playlist));
  });
  await new Promise((done) => srv.listen(0, '127.0.0.1', done));
  return { srv, origin: `http://127.0.0.1:${srv.address().port}` };
}

/** nalcast with `args`, a dashboard, and its page open in a browser. */
async function watchFromDashboard(args, check) {
  const port = await freePort();
  const dash = await dashboardServer(port);
  const server = await startServer(['--width', '640', '--height', '360', ...args(dash.origin)], port);
  const page = await browser.newPage();
  try {
    await page.goto(`${dash.origin}/`);
    return await check(page);
  } finally {
    await page.close();
    await server.stop();
    dash.srv.close();
  }
}

function freePort() {
  return new Promise((resolve) => {
    const probe = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = probe.address();
      probe.close(() => resolve(port));
    });
  });
}

test('an hls.js player on another origin plays when nalcast allows that origin, and is refused when not', async (t) => {
  await watchFromDashboard((origin) => ['--allow-origin', origin], async (page) => {
    await page.waitForFunction(() => window.dashLog.times.length > 0
      && window.dashLog.times.at(-1) - window.dashLog.times[0] >= 2, null, { timeout: 25000 });
    const log = await page.evaluate(() => window.dashLog);
    assert.equal(log.width, 640);
    assert.deepEqual(log.errors.filter((e) => e.includes('fatal')), []);
    await page.screenshot({ path: screenshotPath('hls-cross-origin') });
    t.diagnostic(`played ${(log.times.at(-1) - log.times[0]).toFixed(1)} s from another origin`);
  });
  await watchFromDashboard(() => [], async (page) => {
    await page.waitForFunction(() => window.dashLog.errors.some((e) => e.includes('fatal')), null, { timeout: 25000 });
    const log = await page.evaluate(() => window.dashLog);
    assert.equal(log.times.length, 0, 'nothing played without --allow-origin');
  });
});
