// Shared helpers for the browser tests: start the real nalcast binary, drive Debian's
// Chromium with playwright-core, wait for conditions instead of sleeping.
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, mkdirSync, existsSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import assert from 'node:assert/strict';
import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
export const repoRoot = path.resolve(here, '..', '..', '..');
export const outputDir = path.join(repoRoot, 'test-output');
mkdirSync(outputDir, { recursive: true });

const BIN = process.env.NALCAST_BIN || path.join(repoRoot, 'target', 'debug', 'nalcast');

/**
 * The test kit's policy for a missing tool (crates/testkit/src/tools.rs): `missing`
 * says what is missing, or is null when all is there. Under NALCAST_REQUIRE_ALL
 * (`make test`, whose setup installs every tool) a missing tool fails the test;
 * elsewhere this returns the reason to give `t.skip`, which says SKIPPED.
 */
export function requireTool(test, missing) {
  if (!missing) return null;
  if (process.env.NALCAST_REQUIRE_ALL) {
    throw new Error(`${test} needs ${missing} (scripts/setup.sh --test installs it)`);
  }
  return `SKIPPED ${test}: needs ${missing} (scripts/setup.sh --test installs it)`;
}

/** The load generator, built next to the nalcast binary. */
export function benchBin() {
  const bin = path.join(path.dirname(BIN), 'nalcast-bench');
  if (!existsSync(bin)) throw new Error(`nalcast-bench not found at ${bin}: cargo build -p nalcast-bench`);
  return bin;
}

/**
 * Starts nalcast on 127.0.0.1 (port 0 = any free one); resolves once it listens.
 * The tests open it as http://127.0.0.1 (a secure context) or as the LAN name
 * camera.lan (mapped to loopback in Chromium, not a secure context), which nalcast
 * serves only when told (--public-host: its DNS rebinding defence).
 */
export function startServer(args = [], port = 0, { legacyPort = null, netns = null } = {}) {
  if (!existsSync(BIN)) {
    throw new Error(`nalcast binary not found at ${BIN}: build it (cargo build -p nalcast) or set NALCAST_BIN`);
  }
  const legacy = legacyPort === null ? 'off' : `127.0.0.1:${legacyPort}`;
  const base = ['--listen', `127.0.0.1:${port}`, '--legacy-listen', legacy, '--public-host', 'camera.lan'];
  // WebRTC only where a test asks for it (webrtc.test.mjs): elsewhere the plain-HTTP
  // page finds it off (404) and plays over the WebSocket, the path those tests check.
  if (!args.some((a) => a.startsWith('--webrtc'))) base.push('--webrtc', 'off');
  // In a network namespace (webrtcNamespace) when asked: `ip netns exec` runs nalcast there.
  const [cmd, argv] = netns ? ['ip', ['netns', 'exec', netns, BIN, ...base, ...args]] : [BIN, [...base, ...args]];
  const proc = spawn(cmd, argv, {
    stdio: ['ignore', 'pipe', 'inherit'],
    env: { ...process.env, RUST_LOG: process.env.RUST_LOG || 'warn' },
  });
  return new Promise((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error(`nalcast did not start: ${out}`)), 20000);
    proc.on('exit', (code) => reject(new Error(`nalcast exited with ${code}: ${out}`)));
    proc.stdout.on('data', (chunk) => {
      out += chunk;
      const m = out.match(/listening on (https?:\/\/[^\s]+)/);
      if (m) {
        clearTimeout(timer);
        const url = m[1];
        resolve({
          url,
          // Base64 SHA-256 of the TLS certificate's public key, when serving HTTPS.
          spki: out.match(/SPKI, base64\) (\S+)/)?.[1] ?? null,
          port: Number(new URL(url).port),
          proc,
          stop(signal = 'SIGTERM') {
            return new Promise((done) => {
              if (proc.exitCode !== null || proc.signalCode !== null) return done();
              proc.removeAllListeners('exit');
              proc.on('exit', () => done());
              proc.kill(signal);
            });
          },
        });
      }
    });
  });
}

/** Debian's Chromium, headless, with a fresh profile; `extraArgs` and `options` add to the launch. */
export async function launchBrowser(extraArgs = [], options = {}) {
  const userDataDir = mkdtempSync(path.join(tmpdir(), 'nalcast-chromium-'));
  return chromium.launchPersistentContext(userDataDir, {
    ...options,
    executablePath: options.executablePath || process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    viewport: { width: 1280, height: 800 },
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      ...extraArgs,
    ],
  });
}

/**
 * A network namespace for the WebRTC tests: Chromium gathers no ICE candidates on
 * the loopback device, so the namespace has a second address (10.213.0.1, on a veth
 * pair inside it) besides its own loopback. Made once, idempotently (needs root, as
 * `make test` has). Returns its name, or throws saying what is missing.
 */
export function webrtcNamespace() {
  const name = 'nalcast-webrtc';
  const ip = (...a) => execFileSync('ip', a, { stdio: ['ignore', 'pipe', 'pipe'] }).toString();
  if (!ip('netns', 'list').split('\n').some((l) => l.split(' ')[0] === name)) ip('netns', 'add', name);
  ip('-n', name, 'link', 'set', 'lo', 'up');
  if (!ip('-n', name, 'link', 'show').includes('rtc0')) {
    // A veth pair with both ends inside: kernels without the dummy module have veth.
    ip('-n', name, 'link', 'add', 'rtc0', 'type', 'veth', 'peer', 'name', 'rtc1');
    ip('-n', name, 'addr', 'add', '10.213.0.1/24', 'dev', 'rtc0');
  }
  ip('-n', name, 'link', 'set', 'rtc0', 'up');
  ip('-n', name, 'link', 'set', 'rtc1', 'up');
  return name;
}

/** Chromium (launchBrowser's) run inside network namespace `netns`: a wrapper script as its executable. */
export function chromiumIn(netns) {
  const dir = mkdtempSync(path.join(tmpdir(), 'nalcast-netns-chromium-'));
  const wrapper = path.join(dir, 'chromium');
  writeFileSync(wrapper, `#!/bin/sh\nexec ip netns exec ${netns} ${process.env.CHROMIUM || '/usr/bin/chromium'} "$@"\n`, { mode: 0o755 });
  return wrapper;
}

/** Polls `window.nalcast.stats()` until `pred(stats)` holds; returns the stats. */
export async function waitForStats(page, pred, what, timeoutMs = 15000) {
  const deadline = Date.now() + timeoutMs;
  let last = null;
  while (Date.now() < deadline) {
    last = await page.evaluate(() => window.nalcast?.stats() ?? null).catch(() => null);
    if (last && pred(last)) return last;
    await page.waitForTimeout(50);
  }
  throw new Error(`timed out waiting for ${what}; last stats: ${JSON.stringify(last)}`);
}

export const screenshotPath = (name) => path.join(outputDir, `${name}.png`);

/**
 * Opens the page in `browser` and checks it paints changing test-pattern frames
 * at the stream's size.
 */
export async function playsLive(browser, server, query, decoder, width, height, shot) {
  const page = await browser.newPage();
  const cspViolations = [];
  page.on('console', (m) => { if (/Content Security Policy/i.test(m.text())) cspViolations.push(m.text()); });
  try {
    await page.goto(new URL(query, server.url).href);
    const first = await waitForStats(page, (s) => s.framesPainted > 0 && s.lastFrameNumber !== null, 'a first painted frame');
    assert.equal(first.decoder, decoder);
    // firstPaintMs is measured from navigation start (performance.timeOrigin). Its
    // target lives in the benchmark (web/bench/glass.mjs, first_picture_ms): on a busy
    // 2-core machine a cold page load alone can take a second, so this only catches a
    // page that does not start.
    assert.ok(first.firstPaintMs < 5000, `first frame painted after ${first.firstPaintMs} ms`);
    // Advancing, and live: the catch-up after joining is over (Broadway at 720p takes
    // a moment to warm up on a small machine).
    const later = await waitForStats(page, (s) => s.lastFrameNumber >= first.lastFrameNumber + 15 && s.latencyMs !== null && s.latencyMs < 1000,
      'the frame stamp to advance and the picture to be live');
    assert.equal(later.width, width);
    assert.equal(later.height, height);
    assert.equal(later.canvasWidth, width);
    assert.equal(later.canvasHeight, height);
    assert.equal(later.state, 'live');
    // And it keeps moving: a second's worth of frames painted within a few seconds
    // (a Broadway page that lost count of its decoder's backlog painted one keyframe a second).
    await waitForStats(page, (s) => s.framesPainted >= later.framesPainted + 30, 'the picture to keep moving', 5000);
    await page.screenshot({ path: screenshotPath(shot) });
    assert.deepEqual(cspViolations, [], 'the page runs under its Content-Security-Policy');
    return later;
  } finally {
    await page.close();
  }
}

// x264 with low-latency settings; ffmpeg paces it at 30 fps (-re). Like a camera, it
// makes keyframes on its own schedule only (here every 2 s), never on request.
export const x264 = (profile, size, extra = '') => 'ffmpeg -hide_banner -loglevel error -re -f lavfi '
  + `-i testsrc2=size=${size}:rate=30 ${extra} -c:v libx264 -profile:v ${profile} -tune zerolatency -g 60 -f h264 -`;

// Counts the catch-up access units (flag bit 1) the page receives after joining.
export const countCatchUp = () => {
  const Native = window.WebSocket;
  window.catchUpFrames = 0;
  window.WebSocket = class extends Native {
    get onmessage() { return super.onmessage; }
    set onmessage(handler) {
      super.onmessage = (ev) => {
        const b = new Uint8Array(ev.data);
        if (b[0] === 2 && b[1] & 2) window.catchUpFrames++;
        handler.call(this, ev);
      };
    }
  };
};

/** Chromium's flag that maps the LAN name camera.lan to loopback (a plain-HTTP origin). */
export const LAN = ['--host-resolver-rules=MAP camera.lan 127.0.0.1'];

// Records, in the page, the fMP4 messages and every picture the video presents.
export const watchMse = () => {
  window.mseLog = { catchUp: 0, fragments: 0, firstFragmentMs: null, frames: [] };
  const Native = window.WebSocket;
  window.WebSocket = class extends Native {
    constructor(...args) {
      super(...args);
      this.addEventListener('message', (ev) => {
        const b = new Uint8Array(ev.data);
        if (b[0] !== 7) return;
        window.mseLog.fragments++;
        window.mseLog.firstFragmentMs ??= performance.now();
        if (b[1] & 2) window.mseLog.catchUp++;
      });
    }
  };
  const rvfc = HTMLVideoElement.prototype.requestVideoFrameCallback;
  HTMLVideoElement.prototype.requestVideoFrameCallback = function (cb) {
    return rvfc.call(this, (now, meta) => {
      const log = window.mseLog;
      if (log.frames.length < 2000) log.frames.push({ at: performance.now(), mediaTime: meta.mediaTime, presented: meta.presentedFrames });
      cb(now, meta);
    });
  };
};

/** A page of `browser` on http://camera.lan:PORT`query`, recording what MSE shows (watchMse). */
export async function openWatchingMse(browser, server, query = '/?stats=1') {
  const page = await browser.newPage();
  await page.addInitScript(watchMse);
  await page.goto(`http://camera.lan:${server.port}${query}`);
  return page;
}

/** The page's picture (#video: the canvas WebCodecs and Broadway paint, or MSE's
 *  video element), sampled every 97th pixel: how many colours it shows (a blank or
 *  grey picture shows few) and a checksum (two pictures apart in time differ). */
export function samplePicture(page) {
  return page.evaluate(() => {
    const el = document.getElementById('video');
    const width = el.videoWidth ?? el.width;
    const height = el.videoHeight ?? el.height;
    const ctx = document.createElement('canvas').getContext('2d', { willReadFrequently: true });
    ctx.canvas.width = width;
    ctx.canvas.height = height;
    ctx.drawImage(el, 0, 0);
    const data = ctx.getImageData(0, 0, width, height).data;
    const seen = new Set();
    let sum = 0;
    for (let i = 0; i < data.length; i += 4 * 97) {
      seen.add((data[i] >> 4) << 8 | (data[i + 1] >> 4) << 4 | (data[i + 2] >> 4));
      sum = (sum * 31 + data[i] + data[i + 1]) % 1e9;
    }
    return { colours: seen.size, sum };
  });
}
