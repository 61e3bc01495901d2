// Shared helpers for the browser tests: start the real nalcast binary, drive Debian's
// Chromium with playwright-core, wait for conditions instead of sleeping.
import { spawn } from 'node:child_process';
import { mkdtempSync, mkdirSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
export const repoRoot = path.resolve(here, '..', '..');
export const outputDir = path.join(repoRoot, 'test-output');
mkdirSync(outputDir, { recursive: true });

const BIN = process.env.NALCAST_BIN || path.join(repoRoot, 'target', 'debug', 'nalcast');

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
export function startServer(args = [], port = 0) {
  if (!existsSync(BIN)) {
    throw new Error(`nalcast binary not found at ${BIN}: build it (cargo build -p nalcast) or set NALCAST_BIN`);
  }
  const base = ['--listen', `127.0.0.1:${port}`, '--legacy-listen', 'off', '--public-host', 'camera.lan'];
  const proc = spawn(BIN, [...base, ...args], {
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
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    viewport: { width: 1280, height: 800 },
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      ...extraArgs,
    ],
  });
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
