// WebRTC against WebCodecs, glass to glass, in one headless Chromium (issue 31's
// bench): the test pattern's capture time burned into each picture, read back from
// the screen by the page (stats().latencyMs). WebCodecs on a secure page
// (http://127.0.0.1), WebRTC on a plain-HTTP LAN name (camera.lan, where the page
// picks WebRTC by itself), each opened afresh per round, the order alternating.
// Reports per path: first picture and first live picture (stamp at most 200 ms old)
// after navigation, and the latency's p50/p95 over all rounds. nalcast and Chromium
// run in a network namespace with a veth address (Chromium gathers no ICE
// candidates on loopback).
// With CAMERA=1 the stream comes from a camera that cannot make keyframes on demand
// (a second nalcast relaying the first one's test pattern through
// packaging/tools/ws_capture.py, a keyframe every 2 s): its first live picture is
// weighed against the wait for the camera's next keyframe (target: at most 150 ms
// more), estimated per round as the first picture's time less its age.
//   node bench/webrtc-glass.mjs [rounds] [seconds] [extra nalcast args...]
import {
  startServer, launchBrowser, LAN, webrtcNamespace, chromiumIn,
} from '../test/browser/helpers.mjs';

const rounds = Number(process.argv[2] || 6);
const seconds = Number(process.argv[3] || 12);
const extra = process.argv.slice(4);

const pct = (v, p) => {
  const s = [...v].sort((a, b) => a - b);
  return s.length ? s[Math.max(0, Math.ceil((p / 100) * s.length) - 1)] : null;
};
const median = (v) => pct(v, 50);

const netns = webrtcNamespace();
const camera = process.env.CAMERA === '1';
let upstream = null;
let source = [];
if (camera) {
  upstream = await startServer(['--width', '1280', '--height', '720', '--keyframe-interval', '60'], 0, { netns });
  const relay = new URL('../../packaging/tools/ws_capture.py', import.meta.url).pathname;
  source = ['--source', `exec:python3 ${relay} ws://127.0.0.1:${upstream.port}/ws/raw - 100000`];
}
const server = await startServer(['--webrtc', '0.0.0.0:0', '--width', '1280', '--height', '720', ...source, ...extra], 0, { netns });
const browser = await launchBrowser(LAN, { executablePath: chromiumIn(netns) });
const paths = {
  webcodecs: `http://127.0.0.1:${server.port}/?decoder=webcodecs`,
  webrtc: `http://camera.lan:${server.port}/`,
};
const results = Object.fromEntries(Object.keys(paths).map((k) => [k, { first: [], live: [], overKeyframe: [], samples: [], dropped: [], playedBy: new Set() }]));
try {
  for (let round = 0; round < rounds; round++) {
    const order = round % 2 ? ['webrtc', 'webcodecs'] : ['webcodecs', 'webrtc'];
    for (const path of order) {
      const r = results[path];
      const page = await browser.newPage();
      await page.goto(paths[path]);
      await page.waitForFunction(() => window.nalcast?.stats().firstLiveMs != null, null, { timeout: 15000 });
      const start = await page.evaluate(() => window.nalcast.stats());
      r.first.push(start.firstPaintMs);
      r.live.push(start.firstLiveMs);
      // The keyframe's capture came at first picture less its age: what the first
      // live picture took beyond that wait (WebRTC reports its first picture's age).
      if (start.firstLatencyMs != null) r.overKeyframe.push(Math.round(start.firstLiveMs - (start.firstPaintMs - start.firstLatencyMs)));
      r.playedBy.add(start.decoder);
      let lastFrame = null;
      const end = Date.now() + seconds * 1000;
      while (Date.now() < end) {
        const s = await page.evaluate(() => window.nalcast.stats());
        if (s.lastFrameNumber !== null && s.lastFrameNumber !== lastFrame && s.latencyMs !== null) {
          r.samples.push(s.latencyMs);
          lastFrame = s.lastFrameNumber;
        }
        await page.waitForTimeout(37);
      }
      const final = await page.evaluate(() => window.nalcast.stats());
      r.dropped.push((final.framesDropped ?? 0) + (final.videoFramesDropped ?? 0));
      await page.close();
    }
  }
} finally {
  await browser.close();
  await server.stop();
  await upstream?.stop();
}
for (const [path, r] of Object.entries(results)) {
  console.log(JSON.stringify({
    path,
    source: camera ? 'camera (no keyframes on demand, one every 2 s)' : 'test pattern (keyframes on demand)',
    played_by: [...r.playedBy].join(','),
    rounds,
    first_picture_ms_median: median(r.first),
    first_live_picture_ms_median: median(r.live),
    first_live_picture_ms_max: pct(r.live, 100),
    first_live_over_keyframe_wait_ms_max: pct(r.overKeyframe, 100),
    samples: r.samples.length,
    p50_ms: pct(r.samples, 50),
    p95_ms: pct(r.samples, 95),
    dropped_per_round_median: median(r.dropped),
  }));
}
