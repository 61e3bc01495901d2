// WebRTC (WHEP) in a real Chromium on a plain-HTTP LAN name (camera.lan: not a secure
// context, so no WebCodecs): the page chooses WebRTC by itself and paints the live
// stamped picture. Chromium and nalcast run in a network namespace with an address
// on a veth pair, as Chromium gathers no ICE candidates on the loopback device.
// Alone: its 720p decoding beside the MSE tests made Chromium drop their frames.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startServer, launchBrowser, waitForStats, screenshotPath, LAN, webrtcNamespace, chromiumIn, requireTool,
} from '../browser/helpers.mjs';

let browser;
let netns;
let skip = null;
before(async () => {
  try {
    netns = webrtcNamespace();
  } catch (e) {
    skip = requireTool('webrtc.test.mjs', `a network namespace (ip netns, as root): ${e.message.split('\n')[0]}`);
    return;
  }
  browser = await launchBrowser(LAN, { executablePath: chromiumIn(netns) });
});
after(async () => { await browser?.close(); });

const rtcServer = (args = []) => startServer(['--webrtc', '0.0.0.0:0', ...args], 0, { netns });

test('plain HTTP on a LAN name: the page plays over WebRTC by itself, live from its first picture', async (t) => {
  if (skip) return t.skip(skip);
  const server = await rtcServer(['--width', '1280', '--height', '720']);
  try {
    const page = await browser.newPage();
    await page.goto(`http://camera.lan:${server.port}/?stats=1`);
    assert.equal(await page.evaluate(() => window.isSecureContext), false);
    assert.equal(await page.evaluate(() => typeof VideoDecoder), 'undefined');
    const first = await waitForStats(page, (s) => s.framesPainted > 0 && s.lastFrameNumber !== null, 'a first stamped picture');
    assert.equal(first.decoder, 'webrtc');
    assert.equal(first.state, 'live');
    const later = await waitForStats(page, (s) => s.lastFrameNumber >= first.lastFrameNumber + 60 && s.firstLiveMs !== null,
      'the stamp to advance two seconds');
    assert.equal(later.canvasWidth, 1280);
    assert.equal(later.canvasHeight, 720);
    assert.ok(later.latencyMs < 500, `latency ${later.latencyMs} ms`);
    assert.equal(later.packetsLost, 0);
    assert.equal(await page.evaluate(() => document.getElementById('video').tagName), 'VIDEO');
    // The overlay tells the WebRTC path's own figures.
    assert.match(await page.locator('#overlay').textContent(), /decoder\s+webrtc[\s\S]*jitter buffer/);
    await page.screenshot({ path: screenshotPath('webrtc-1280x720') });
    t.diagnostic(`first picture ${later.firstPaintMs} ms, first live picture ${later.firstLiveMs} ms after navigation; `
      + `latency ${later.latencyMs} ms, jitter buffer ${later.jitterBufferMs} ms, ${later.nacks} NACKs`);
    await page.close();
  } finally {
    await server.stop();
  }
});

test('?decoder=webrtc on a named stream\'s page; the session ends when the page goes', async (t) => {
  if (skip) return t.skip(skip);
  const server = await rtcServer(['--stream', 'porch=test', '--stream', 'yard=test', '--width', '640', '--height', '360']);
  try {
    const page = await browser.newPage();
    await page.goto(`http://camera.lan:${server.port}/streams/yard/?decoder=webrtc`);
    const s = await waitForStats(page, (st) => st.framesPainted > 30 && st.lastFrameNumber !== null, 'thirty stamped pictures');
    assert.equal(s.decoder, 'webrtc');
    assert.equal(s.canvasWidth, 640);
    // nalcast runs in the namespace: ask from inside it, through the page.
    const viewersInPage = () => page.evaluate(async () => (await (await fetch('api/stream')).json()).viewers);
    assert.equal(await viewersInPage(), 1);
    await page.close();
    // The page DELETEs its session when it goes (pagehide): the viewer is gone at once.
    const probe = await browser.newPage();
    await probe.goto(`http://camera.lan:${server.port}/streams/yard/api/stream`);
    let left = null;
    for (let i = 0; i < 30 && left !== 0; i++) {
      left = await probe.evaluate(async () => (await (await fetch('/streams/yard/api/stream')).json()).viewers);
      if (left !== 0) await probe.waitForTimeout(100);
    }
    assert.equal(left, 0, 'the WebRTC viewer is still counted after its page closed');
    await probe.close();
  } finally {
    await server.stop();
  }
});

test('WebRTC off on the server: the plain-HTTP page falls back to Media Source Extensions', async (t) => {
  if (skip) return t.skip(skip);
  const server = await startServer(['--webrtc', 'off'], 0, { netns });
  try {
    const page = await browser.newPage();
    await page.goto(`http://camera.lan:${server.port}/`);
    const s = await waitForStats(page, (st) => st.framesPainted > 10, 'pictures');
    assert.equal(s.decoder, 'mse');
    assert.match(s.webrtcNote, /WebRTC is off/);
    await page.close();
  } finally {
    await server.stop();
  }
});
