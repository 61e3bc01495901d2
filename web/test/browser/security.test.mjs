// End-to-end in Chromium: which decoder a page gets on a LAN address with and without
// HTTPS, and that the page plays behind a token or a password.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { startServer, launchBrowser, waitForStats, screenshotPath, LAN } from './helpers.mjs';

const small = ['--width', '640', '--height', '360', '--bitrate', '1000000'];

/** Waits until the page paints advancing frames; returns the stats. */
async function paints(page, what) {
  const first = await waitForStats(page, (s) => s.framesPainted > 0 && s.lastFrameNumber !== null, `a first frame (${what})`);
  return waitForStats(page, (s) => s.lastFrameNumber >= first.lastFrameNumber + 10 && s.state === 'live', `frames to advance (${what})`);
}

test('plain HTTP on a LAN name is not a secure context: without MSE the page picks Broadway.js by itself', async () => {
  const server = await startServer(small);
  const browser = await launchBrowser(LAN);
  try {
    const page = await browser.newPage();
    // (With MSE it picks that: mse.test.mjs.)
    await page.addInitScript(() => { delete window.MediaSource; delete window.ManagedMediaSource; });
    await page.goto(`http://camera.lan:${server.port}/`);
    assert.equal(await page.evaluate(() => window.isSecureContext), false);
    const stats = await paints(page, 'http on the LAN');
    assert.equal(stats.decoder, 'broadway');
  } finally {
    await browser.close();
    await server.stop();
  }
});

test('HTTPS with the self-signed certificate on a LAN name: WebCodecs over WSS', async () => {
  const dataDir = mkdtempSync(path.join(tmpdir(), 'nalcast-data-'));
  const server = await startServer([...small, '--tls', 'self-signed', '--data-dir', dataDir]);
  assert.ok(server.url.startsWith('https://'), server.url);
  assert.ok(server.spki, 'nalcast prints the public key hash to trust');
  // Trust exactly this certificate, as a user does by accepting it once.
  const browser = await launchBrowser([...LAN, `--ignore-certificate-errors-spki-list=${server.spki}`]);
  try {
    const page = await browser.newPage();
    const sockets = [];
    page.on('websocket', (ws) => sockets.push(ws.url()));
    await page.goto(`https://camera.lan:${server.port}/?stats=1`);
    assert.equal(await page.evaluate(() => window.isSecureContext), true);
    const stats = await paints(page, 'https on the LAN');
    assert.equal(stats.decoder, 'webcodecs');
    assert.equal(stats.width, 640);
    assert.ok(sockets.some((u) => u === `wss://camera.lan:${server.port}/ws`), `sockets: ${sockets}`);
    await page.screenshot({ path: screenshotPath('https-webcodecs-lan') });
  } finally {
    await browser.close();
    await server.stop();
  }
});

test('with --token, opening /?token= once lets the page and its WebSocket in', async () => {
  const token = 'c0ffee00c0ffee00c0ffee00';
  const server = await startServer([...small, '--token', token]);
  const browser = await launchBrowser();
  try {
    const page = await browser.newPage();
    const denied = await page.goto(server.url);
    assert.equal(denied.status(), 401);
    await page.goto(`${server.url}?token=${token}&decoder=broadway`);
    // The token went into a cookie and out of the address bar.
    assert.equal(new URL(page.url()).search, '?decoder=broadway');
    const stats = await paints(page, 'token');
    assert.equal(stats.decoder, 'broadway');
  } finally {
    await browser.close();
    await server.stop();
  }
});

test('with --auth, the browser asks for the password and then plays', async () => {
  const server = await startServer([...small, '--auth', 'viewer:let me in']);
  const withPassword = await launchBrowser([], { httpCredentials: { username: 'viewer', password: 'let me in' } });
  const without = await launchBrowser();
  try {
    const page = await withPassword.newPage();
    await page.goto(server.url);
    await paints(page, 'basic auth');
    // Headless Chromium with no password to give ends the challenge at once.
    const refused = await (await without.newPage()).goto(server.url).then((r) => r.status(), (e) => e.message);
    assert.match(String(refused), /^401$|ERR_INVALID_AUTH_CREDENTIALS/);
  } finally {
    await withPassword.close();
    await without.close();
    await server.stop();
  }
});
