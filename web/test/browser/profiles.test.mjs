// Main profile streams, as a Pi 5 or a USB/IP camera sends them: WebCodecs plays them
// on a secure page; on plain HTTP, where only Broadway.js (Baseline only) is left, the
// page explains on the stage why nothing plays and what to do, and stays connected.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, launchBrowser, waitForStats, screenshotPath, x264, LAN, samplePicture } from './helpers.mjs';

const MAIN_PROFILE = `exec:${x264('main', '640x360')}`;

// Counts Web Workers the page creates: Broadway.js runs in one, nothing else does.
const countWorkers = () => {
  const Native = window.Worker;
  window.workersCreated = 0;
  window.Worker = class extends Native {
    constructor(...args) {
      super(...args);
      window.workersCreated++;
    }
  };
};

// A browser without Media Source Extensions (as Safari on older iPhones): on plain HTTP
// only Broadway.js is left. (With MSE the page plays these streams: mse.test.mjs.)
const withoutMse = () => {
  delete window.MediaSource;
  delete window.ManagedMediaSource;
};

let server;
before(async () => { server = await startServer(['--source', MAIN_PROFILE]); });
after(async () => { await server?.stop(); });

test('a Main profile stream plays with WebCodecs on a secure page, even with ?decoder=broadway', async (t) => {
  const browser = await launchBrowser();
  try {
    const page = await browser.newPage();
    await page.addInitScript(countWorkers);
    await page.goto(new URL('/?stats=1', server.url).href);
    const first = await waitForStats(page, (s) => s.framesPainted > 0, 'a first painted frame');
    assert.equal(first.decoder, 'webcodecs');
    assert.match(first.codec, /^avc1\.4D/i, 'the stream is Main profile');
    const later = await waitForStats(page, (s) => s.framesPainted >= first.framesPainted + 30, 'a second of painted frames', 5000);
    assert.equal(later.state, 'live');
    assert.equal(later.sequenceGaps, 0);
    assert.equal(later.canvasWidth, 640);
    assert.equal(later.canvasHeight, 360);
    // testsrc2 is a colourful moving pattern: the canvas shows many colours, not a
    // blank or grey picture.
    const { colours } = await samplePicture(page);
    assert.ok(colours > 50, `the canvas shows ${colours} colours`);
    assert.equal(await page.evaluate(() => window.workersCreated), 0, 'no Broadway worker');
    assert.equal(await page.isVisible('#message'), false);
    await page.screenshot({ path: screenshotPath('main-profile-webcodecs') });
    t.diagnostic(`${later.codec}: ${later.framesPainted} painted, ${later.framesDecoded} decoded, ${colours} colours on the canvas`);
    // Forcing Broadway does not feed it a Main stream: WebCodecs plays it.
    const forced = await browser.newPage();
    await forced.addInitScript(countWorkers);
    await forced.goto(new URL('/?decoder=broadway', server.url).href);
    const s = await waitForStats(forced, (st) => st.framesPainted > 10, 'painted frames with ?decoder=broadway');
    assert.equal(s.decoder, 'webcodecs');
    assert.match(s.error, /Broadway.js cannot decode Main profile; using WebCodecs/);
    assert.equal(await forced.evaluate(() => window.workersCreated), 0, 'no Broadway worker');
  } finally {
    await browser.close();
  }
});

test('a Main profile stream on a plain-HTTP LAN name without MSE: the explanation, not garbage, not a reconnect loop', async (t) => {
  // camera.lan resolves to loopback, but unlike 127.0.0.1 it is not a secure
  // context: no WebCodecs, only Broadway.js.
  const browser = await launchBrowser(LAN);
  try {
    for (const query of ['/', '/?decoder=broadway']) {
      const page = await browser.newPage();
      await page.addInitScript(countWorkers);
      await page.addInitScript(withoutMse);
      await page.goto(`http://camera.lan:${server.port}${query}`);
      assert.equal(await page.evaluate(() => window.isSecureContext), false);
      // Two seconds of frames arrive over the same connection, none is decoded.
      const s = await waitForStats(page, (st) => st.state === 'unsupported' && st.framesReceived >= 60, `the unsupported state (${query})`);
      assert.equal(s.reconnects, 0, 'the connection stays open');
      assert.equal(s.framesDecoded, 0);
      assert.equal(s.framesPainted, 0);
      assert.equal(s.decoder, null);
      assert.match(s.error, /Main profile needs WebCodecs/);
      assert.equal(await page.evaluate(() => window.workersCreated), 0, 'Broadway was never started');
      assert.ok(await page.isVisible('#message'), 'the explanation is on the stage');
      const text = await page.textContent('#message');
      assert.match(text, /Main profile \(avc1\.4D/i);
      assert.match(text, /plain-HTTP/);
      assert.match(text, /--tls self-signed/);
      assert.match(text, /rpicam-vid --profile baseline/);
      assert.equal(await page.textContent('#state'), 'unsupported');
      t.diagnostic(`${query}: ${s.framesReceived} frames received, ${s.framesDecoded} decoded, ${s.reconnects} reconnects`);
      if (query === '/') await page.screenshot({ path: screenshotPath('main-profile-plain-http') });
      await page.close();
    }
  } finally {
    await browser.close();
  }
});

test('without MSE, the page stays connected and plays when the camera switches from Main to Baseline', async (t) => {
  // One camera process: 4 s of Main profile, then Baseline (a camera restarted with
  // --profile baseline looks the same to the page: a new stream-info).
  const camera = await startServer(['--source', `exec:${x264('main', '320x180', '-t 4')}; exec ${x264('baseline', '320x180')}`]);
  const browser = await launchBrowser(LAN);
  try {
    const page = await browser.newPage();
    await page.addInitScript(withoutMse);
    await page.goto(`http://camera.lan:${camera.port}/`);
    const before = await waitForStats(page, (s) => s.state === 'unsupported', 'the unsupported state');
    assert.match(before.codec, /^avc1\.4D/i);
    assert.ok(await page.isVisible('#message'));
    const after = await waitForStats(page, (s) => s.decoder === 'broadway' && s.framesPainted > 10, 'Broadway to play the Baseline stream');
    assert.match(after.codec, /^avc1\.42/i);
    assert.equal(after.state, 'live');
    assert.equal(after.reconnects, 0, 'the same connection');
    assert.equal(after.canvasWidth, 320);
    assert.equal(await page.isVisible('#message'), false, 'the explanation is gone');
    t.diagnostic(`${before.codec} -> ${after.codec}: ${after.framesPainted} painted by Broadway, ${after.reconnects} reconnects`);
  } finally {
    await browser.close();
    await camera.stop();
  }
});
