// Where a WebRTC viewer's first live picture spends its time (issue 31: the slowest
// rounds of bench/webrtc-glass.mjs). Each round opens the plain-HTTP page afresh in
// one headless Chromium, as webrtc-glass.mjs does, and the page's RTCPeerConnection,
// fetch and <video> are watched from an init script (the shipped page unchanged):
// milliseconds after navigation for each step, one line per round, then the
// median and the slowest per step.
//   node bench/webrtc-first-picture.mjs [rounds] [extra nalcast args...]
import {
  startServer, launchBrowser, LAN, webrtcNamespace, chromiumIn,
} from '../test/browser/helpers.mjs';

const rounds = Number(process.argv[2] || 12);
const extra = process.argv.slice(3);

// Runs in the page before its scripts: stamps each step once, since navigation.
const watch = () => {
  const marks = {};
  const mark = (name) => { if (!(name in marks)) marks[name] = Math.round(performance.now()); };
  window.__marks = marks;
  const Base = window.RTCPeerConnection;
  window.RTCPeerConnection = class extends Base {
    constructor(...a) {
      mark('pc_created');
      super(...a);
      this.addEventListener('iceconnectionstatechange', () => mark(`ice_${this.iceConnectionState}`));
      this.addEventListener('connectionstatechange', () => mark(`pc_${this.connectionState}`));
      this.addEventListener('track', () => mark('track'));
    }
    async createOffer(...a) { const r = await super.createOffer(...a); mark('offer_made'); return r; }
    async setLocalDescription(...a) { const r = await super.setLocalDescription(...a); mark('local_set'); return r; }
    async setRemoteDescription(...a) { mark('answer_in'); const r = await super.setRemoteDescription(...a); mark('remote_set'); return r; }
  };
  const origFetch = window.fetch;
  window.fetch = (...a) => {
    const post = a[1]?.method === 'POST';
    if (post) mark('whep_sent');
    return origFetch(...a).then((r) => { if (post) mark('whep_answered'); return r; });
  };
  document.addEventListener('DOMContentLoaded', () => mark('dom_ready'));
  const videoEvents = () => {
    for (const v of document.querySelectorAll('video')) {
      if (v.__watched) continue;
      v.__watched = true;
      for (const e of ['loadedmetadata', 'loadeddata', 'playing']) v.addEventListener(e, () => mark(`video_${e}`));
      v.requestVideoFrameCallback?.(() => mark('video_first_frame_cb'));
    }
  };
  new MutationObserver(videoEvents).observe(document, { childList: true, subtree: true });
};

const netns = webrtcNamespace();
const server = await startServer(['--webrtc', '0.0.0.0:0', '--width', '1280', '--height', '720', ...extra], 0, { netns });
const browser = await launchBrowser(LAN, { executablePath: chromiumIn(netns) });
await browser.addInitScript(watch);
const url = `http://camera.lan:${server.port}/`;
const rows = [];
try {
  for (let round = 0; round < rounds; round++) {
    const page = await browser.newPage();
    await page.goto(url);
    await page.waitForFunction(() => window.nalcast?.stats().firstLiveMs != null, null, { timeout: 15000 });
    const row = await page.evaluate(() => {
      const nav = performance.getEntriesByType('navigation')[0];
      const s = window.nalcast.stats();
      const scripts = performance.getEntriesByType('resource').filter((r) => r.initiatorType !== 'fetch' && r.name.endsWith('.js'));
      const resources = scripts.map((r) => [r.name.split('/').pop(), Math.round(r.startTime), Math.round(r.requestStart), Math.round(r.responseStart), Math.round(r.responseEnd)]);
      return {
        doc_response: Math.round(nav.responseEnd),
        scripts_loaded: Math.round(Math.max(0, ...scripts.map((r) => r.responseEnd))),
        resources,
        ...window.__marks,
        first_paint: s.firstPaintMs,
        first_live: s.firstLiveMs,
        first_age: s.firstLatencyMs,
        decoder: s.decoder,
      };
    });
    const { resources, ...times } = row;
    rows.push(times);
    console.log(JSON.stringify({ round, ...times }));
    // RESOURCES=1: each module's start, request, first byte and last byte.
    if (process.env.RESOURCES) console.log(JSON.stringify({ round, resources }));
    // Rounds at least the hub's keyframe-request interval (1 s) apart, as a
    // viewer joining after another would be; closer, a round waits for the
    // deferred keyframe.
    await page.waitForTimeout(2000);
    await page.close();
  }
} finally {
  await browser.close();
  await server.stop();
}
const steps = [...new Set(rows.flatMap((r) => Object.keys(r)))].filter((k) => k !== 'decoder');
const summary = {};
for (const step of steps) {
  const v = rows.map((r) => r[step]).filter((x) => typeof x === 'number').sort((a, b) => a - b);
  if (v.length) summary[step] = { median: v[Math.floor((v.length - 1) / 2)], max: v[v.length - 1] };
}
console.log(JSON.stringify({ rounds, summary }));
