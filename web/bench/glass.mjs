// Glass-to-glass latency on the test source: capture time burned into each frame,
// read back from the painted canvas by the page (window.nalcast.stats().latencyMs),
// sampled for a while per decoder (MSE through /ws/fmp4 too). Prints one JSON line per
// decoder, with the time from navigation to the first picture.
//   node bench/glass.mjs http://127.0.0.1:8000/ [seconds]
import { launchBrowser } from '../test/browser/helpers.mjs';

const url = process.argv[2];
const seconds = Number(process.argv[3] || 20);
if (!url) {
  console.error('usage: node bench/glass.mjs URL [seconds]');
  process.exit(2);
}

const pct = (v, p) => {
  const s = [...v].sort((a, b) => a - b);
  return s.length ? s[Math.max(0, Math.ceil((p / 100) * s.length) - 1)] : null;
};

// `decoder` in the output says which decoder really played (MSE falls back to /ws when
// it fails before its first picture).
const browser = await launchBrowser([]);
try {
  for (const decoder of ['webcodecs', 'mse', 'broadway']) {
    const page = await browser.newPage();
    await page.goto(new URL(`?decoder=${decoder}`, url).href);
    await page.waitForFunction(() => window.nalcast?.stats().lastFrameNumber !== null, null, { timeout: 15000 });
    await page.waitForTimeout(2000); // settle after the join burst
    const samples = [];
    let lastFrame = null;
    const end = Date.now() + seconds * 1000;
    while (Date.now() < end) {
      const s = await page.evaluate(() => window.nalcast.stats());
      if (s.lastFrameNumber !== null && s.lastFrameNumber !== lastFrame && s.latencyMs !== null) {
        samples.push(s.latencyMs);
        lastFrame = s.lastFrameNumber;
      }
      await page.waitForTimeout(37);
    }
    const final = await page.evaluate(() => window.nalcast.stats());
    console.log(JSON.stringify({
      decoder,
      played_by: final.decoder,
      first_picture_ms: final.firstPaintMs,
      samples: samples.length,
      p50_ms: pct(samples, 50),
      p95_ms: pct(samples, 95),
      max_ms: pct(samples, 100),
      fps: final.fps,
      framesPainted: final.framesPainted,
      framesDropped: final.framesDropped,
      videoFramesDropped: final.videoFramesDropped,
    }));
    await page.close();
  }
} finally {
  await browser.close();
}
