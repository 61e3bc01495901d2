// End-to-end for `--source rtsp://…`: GStreamer's RTSP server as the IP camera
// (crates/nalcast/tests/fixtures/rtsp_server.py), the real nalcast binary, the real
// page in Debian's headless Chromium decoding with WebCodecs. The camera draws no
// nalcast frame stamp, so the picture is checked by its pixels changing (a moving
// ball) next to the page's counters.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import net from 'node:net';
import path from 'node:path';
import { startServer, launchBrowser, waitForStats, screenshotPath, repoRoot, requireTool } from './helpers.mjs';

const PYTHON = '/usr/bin/python3';
const FIXTURE = path.join(repoRoot, 'crates', 'nalcast', 'tests', 'fixtures', 'rtsp_server.py');

/** Why the RTSP tests cannot run here, or null when they can. */
function missingGstreamer() {
  const probe = "import gi; gi.require_version('Gst', '1.0'); gi.require_version('GstRtspServer', '1.0'); "
    + 'from gi.repository import Gst, GstRtspServer; Gst.init(None); '
    + "assert Gst.ElementFactory.find('x264enc') and Gst.ElementFactory.find('rtph264pay')";
  const r = spawnSync(PYTHON, ['-c', probe], { stdio: 'ignore' });
  if (r.status === 0) return null;
  return "GStreamer's RTSP server with x264enc (python3-gi, gir1.2-gst-rtsp-server-1.0, "
    + 'gstreamer1.0-plugins-{base,good,ugly,bad})';
}

/** A loopback port nobody listens on. */
function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/** Starts the stand-in camera on `port`; resolves once it listens. */
function startCamera(port) {
  const proc = spawn(PYTHON, [FIXTURE, String(port)], { stdio: ['ignore', 'pipe', 'inherit'] });
  return new Promise((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error(`RTSP server did not start: ${out}`)), 20000);
    proc.on('exit', (code) => reject(new Error(`RTSP server exited with ${code}: ${out}`)));
    proc.stdout.on('data', (chunk) => {
      out += chunk;
      if (out.includes('ready ')) {
        clearTimeout(timer);
        proc.removeAllListeners('exit');
        resolve({
          url: (mount) => `rtsp://127.0.0.1:${port}${mount}`,
          kill() {
            return new Promise((done) => {
              if (proc.exitCode !== null || proc.signalCode !== null) return done();
              proc.on('exit', () => done());
              proc.kill('SIGKILL');
            });
          },
        });
      }
    });
  });
}

/** The picture on the stage, as PNG bytes. */
const picture = (page) => page.locator('canvas').first().screenshot();

/** Waits until the page paints frames that advance and a picture that moves. */
async function playsAndMoves(page, after, what) {
  const first = await waitForStats(page, (s) => s.state === 'live' && s.framesPainted > after.framesPainted,
    `a first painted frame ${what}`);
  const firstAt = Date.now();
  const before = await picture(page);
  const later = await waitForStats(page, (s) => s.framesPainted >= first.framesPainted + 30,
    `frames to keep coming ${what}`);
  const moved = await picture(page);
  assert.notDeepEqual(moved, before, `the picture moves ${what}`);
  return { ...later, firstAt };
}

let browser;
let skip = null;
before(async () => {
  skip = requireTool('the RTSP page tests', missingGstreamer());
  if (!skip) browser = await launchBrowser();
});
after(async () => { await browser?.close(); });

test('an RTSP camera plays in the page with WebCodecs, and again after the camera restarts', async (t) => {
  if (skip) return t.skip(skip);
  const port = await freePort();
  let camera = await startCamera(port);
  const server = await startServer(['--source', camera.url('/baseline')]);
  const page = await browser.newPage();
  try {
    await page.goto(new URL('/?decoder=webcodecs&stats=1', server.url).href);
    await page.evaluate(() => { window.notReloaded = true; });
    const live = await playsAndMoves(page, { framesPainted: 0 }, 'from the camera');
    assert.equal(live.decoder, 'webcodecs');
    assert.equal(live.width, 320);
    assert.equal(live.height, 240);
    assert.equal(live.sequenceGaps, 0);
    const info = await page.evaluate(() => fetch('/api/stream').then((r) => r.json()));
    assert.equal(info.source, 'rtsp');
    await page.screenshot({ path: screenshotPath('rtsp-baseline') });

    await camera.kill();
    const lost = await waitForStats(page, (s) => s.state === 'source-lost', 'the source-lost state');
    t.diagnostic(`camera gone: ${lost.sourceReason}`);
    const restarted = Date.now();
    camera = await startCamera(port);
    const back = await playsAndMoves(page, lost, 'after the camera restarted');
    t.diagnostic(`first picture again ${back.firstAt - restarted} ms after the camera listened again (50 ms stats polling included)`);
    assert.equal(back.decoder, 'webcodecs');
    assert.equal(back.reconnects, 0, 'the page kept its connection');
    assert.equal(back.sequenceGaps, 0);
    assert.equal(await page.evaluate(() => window.notReloaded), true, 'the page was not reloaded');
  } finally {
    await page.close();
    await server.stop();
    await camera.kill();
  }
});
