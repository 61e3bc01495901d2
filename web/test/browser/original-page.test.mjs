// The original design's page, as its users have it: its own copy of Broadway.js
// (Decoder.js, YUVCanvas.js, Player.js) on a plain web server of its own, feeding
// every binary message of ws://HOST:9000/ to Broadway's player. nalcast serving
// several cameras must still play the first one to it, unchanged; the picture's
// burned-in stamp is read back from Broadway's canvas.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { startServer, launchBrowser, repoRoot, screenshotPath } from './helpers.mjs';

let browser;
before(async () => { browser = await launchBrowser(); });
after(async () => { await browser?.close(); });

const broadway = path.join(repoRoot, 'web', 'node_modules', 'broadway-player', 'Player');

// Written as such pages were: globals, Broadway's Player in the page, the WebSocket
// on port 9000 of the page's host (here the port the test gives nalcast).
const PAGE = `<!doctype html>
<html><head><title>camera</title>
<script src="Decoder.js"></script>
<script src="YUVCanvas.js"></script>
<script src="Player.js"></script>
</head><body>
<script>
var player = new Player({ useWorker: false, webgl: false, size: { width: 320, height: 240 } });
document.body.appendChild(player.canvas);
window.pictures = 0;
player.onPictureDecoded = function () { window.pictures++; };
var port = new URLSearchParams(location.search).get('port') || '9000';
var ws = new WebSocket('ws://' + location.hostname + ':' + port + '/');
ws.binaryType = 'arraybuffer';
ws.onmessage = function (e) { player.decode(new Uint8Array(e.data)); };
</script>
<script type="module">
import { readStamp } from './stamp.js';
window.stamp = function () {
  var c = player.canvas;
  var data = c.getContext('2d').getImageData(0, 0, c.width, 32).data;
  return readStamp(data, c.width);
};
</script>
</body></html>`;

/** A plain static server for the page, its Broadway copy and the stamp reader. */
function pageServer() {
  const files = {
    '/': ['text/html', PAGE],
    '/Decoder.js': ['text/javascript', readFileSync(path.join(broadway, 'Decoder.js'))],
    '/YUVCanvas.js': ['text/javascript', readFileSync(path.join(broadway, 'YUVCanvas.js'))],
    '/Player.js': ['text/javascript', readFileSync(path.join(broadway, 'Player.js'))],
    '/stamp.js': ['text/javascript', readFileSync(path.join(repoRoot, 'web', 'public', 'stamp.js'))],
  };
  const server = createServer((req, res) => {
    const file = files[new URL(req.url, 'http://x').pathname];
    if (!file) { res.writeHead(404); res.end(); return; }
    res.writeHead(200, { 'content-type': file[0] });
    res.end(file[1]);
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}

/** A free loopback port for nalcast's legacy listener. */
function freePort() {
  const probe = createServer();
  return new Promise((resolve) => probe.listen(0, '127.0.0.1', () => {
    const { port } = probe.address();
    probe.close(() => resolve(port));
  }));
}

test('the original Broadway page plays the first camera from the legacy port', async () => {
  const legacyPort = await freePort();
  const server = await startServer([
    '--stream', 'front=test', '--stream', 'back=test',
    '--width', '320', '--height', '240', '--bitrate', '300000',
  ], 0, { legacyPort });
  const web = await pageServer();
  const page = await browser.newPage();
  try {
    await page.goto(`http://127.0.0.1:${web.address().port}/?port=${legacyPort}`);
    const stampNow = () => page.evaluate(() => (window.stamp ? window.stamp() : null));
    let first = null;
    const deadline = Date.now() + 15000;
    while (Date.now() < deadline && !first) {
      if (await page.evaluate(() => window.pictures) > 0) first = await stampNow();
      if (!first) await page.waitForTimeout(100);
    }
    assert.ok(first, 'a picture with a readable stamp from ws://HOST:PORT/');
    let later = first;
    while (Date.now() < deadline && later.frame < first.frame + 15) {
      await page.waitForTimeout(100);
      later = (await stampNow()) ?? later;
    }
    assert.ok(later.frame >= first.frame + 15, `the stamp advances: #${first.frame} then #${later.frame}`);
    await page.screenshot({ path: screenshotPath('original-page-legacy-port') });
  } finally {
    await page.close();
    web.close();
    await server.stop();
  }
});
