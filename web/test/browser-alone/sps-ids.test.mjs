// A stream with three SPS and PPS ids (0, 1, 2), each GOP using the next, as
// some encoders send them: every keyframe nalcast sends carries every SPS and PPS
// in force, so WebCodecs (secure page) and MSE (plain HTTP, an avcC with all of
// them) decode every picture; before, only SPS 0 reached the page and the
// pictures naming the others failed to decode.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { appendFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { startServer, launchBrowser, waitForStats, screenshotPath, LAN } from '../browser/helpers.mjs';

// One second of x264 per id, encoded once into one file, looped and paced by ffmpeg
// as a camera would be. (Encoding the three seconds afresh in every loop, as this
// test once did, kept a core busy with x264 starting every second, and Chromium's
// MSE player beside it stalled in bursts: 23-40 of ~135 frames dropped in a third of
// the runs on a 2-core machine.)
const dir = mkdtempSync(path.join(tmpdir(), 'nalcast-sps-ids-'));
function threeIds() {
  const file = path.join(dir, 'three-ids.h264');
  for (const id of [0, 1, 2]) {
    appendFileSync(file, execFileSync('ffmpeg', ['-hide_banner', '-loglevel', 'error',
      '-f', 'lavfi', '-i', 'testsrc2=size=640x360:rate=30', '-t', '1', '-c:v', 'libx264',
      '-profile:v', 'baseline', '-tune', 'zerolatency', '-g', '30', '-x264-params', `sps-id=${id}`,
      '-f', 'h264', '-'], { maxBuffer: 64 << 20 }));
  }
  return `exec:while :; do cat '${file}'; done `
    + '| ffmpeg -hide_banner -loglevel error -re -f h264 -i - -c copy -f h264 -';
}

let server;
before(async () => { server = await startServer(['--source', threeIds()]); });
after(async () => {
  await server?.stop();
  rmSync(dir, { recursive: true, force: true });
});

/** Opens `url` in `browser` and checks 4 s of pictures (every id twice or more). */
async function playsAll(browser, url, decoder, shot) {
  const page = await browser.newPage();
  try {
    await page.goto(url);
    const first = await waitForStats(page, (s) => s.framesPainted > 0, 'a first picture');
    assert.equal(first.decoder, decoder);
    const later = await waitForStats(page, (s) => s.framesPainted >= first.framesPainted + 120,
      'four seconds of pictures', 20000);
    assert.equal(later.error, null);
    assert.equal(later.sequenceGaps, 0);
    assert.equal(later.canvasWidth, 640);
    if (decoder === 'mse') {
      assert.ok(later.videoFramesDropped <= later.videoFramesTotal / 6,
        `${later.videoFramesDropped} of ${later.videoFramesTotal} dropped `
        + `(${later.liveSeeks} seeks, ${later.liveStalls} stalls, cushion ${later.cushionS} s)`);
    } else {
      // A WebCodecs decode error makes the page drop frames and ask for a keyframe.
      assert.equal(later.keyframeRequests, 0, 'no decode error made the page ask for a keyframe');
      assert.ok(later.framesDropped <= 5, `${later.framesDropped} dropped`);
    }
    await page.screenshot({ path: screenshotPath(shot) });
    return later;
  } finally {
    await page.close();
  }
}

test('three SPS ids play with WebCodecs on a secure page', async (t) => {
  const browser = await launchBrowser();
  try {
    const s = await playsAll(browser, server.url, 'webcodecs', 'sps-ids-webcodecs');
    t.diagnostic(`${s.framesPainted} painted, ${s.framesDropped} dropped`);
  } finally {
    await browser.close();
  }
});

test('three SPS ids play with MSE on a plain-HTTP LAN name', async (t) => {
  const browser = await launchBrowser(LAN);
  try {
    const s = await playsAll(browser, `http://camera.lan:${server.port}/`, 'mse', 'sps-ids-mse');
    t.diagnostic(`${s.framesPainted} painted, dropped ${s.videoFramesDropped}/${s.videoFramesTotal}`);
  } finally {
    await browser.close();
  }
});
