// Frames lost on the way (a gap in the framed protocol's frame numbers): the page
// stops decoding, asks for a keyframe and resumes there, never decoding a frame
// that predicts from one it did not get. A skip the server announces is no gap.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, launchBrowser, waitForStats, screenshotPath } from './helpers.mjs';

/**
 * Runs in the page before its scripts: wraps WebSocket so the test can drop access
 * units on their way to the page, and records what the page sends and which chunks
 * it hands to WebCodecs (their timestamps are the frame numbers).
 */
function lossyWebSocket() {
  const net = window.net = {
    // What to do with the next live delta frame that follows a live keyframe:
    // 'drop' it alone, or 'skip' up to the next keyframe and announce it as the
    // server does (a 0x03 message).
    plan: null,
    dropped: [], // frame numbers dropped
    delivered: [], // {seq, key} of access units passed on after a drop
    sent: [], // text messages the page sent after a drop
    decoded: [], // chunk timestamps handed to the decoder
    lastKey: false,
  };
  const Native = window.WebSocket;
  window.WebSocket = class extends Native {
    get onmessage() { return super.onmessage; }
    set onmessage(handler) {
      super.onmessage = (ev) => {
        const b = ev.data instanceof ArrayBuffer ? new Uint8Array(ev.data) : null;
        if (b && b[0] === 2 && !(b[1] & 2)) {
          const seq = new DataView(ev.data).getUint32(2, true);
          const key = (b[1] & 1) !== 0;
          const afterKey = net.lastKey;
          net.lastKey = key;
          if (net.plan === 'skip' && net.dropped.length && key) {
            // Resume at the keyframe, after an announcement as the server makes it.
            const skipped = new Uint8Array(5);
            skipped[0] = 3;
            new DataView(skipped.buffer).setUint32(1, net.dropped.length, true);
            handler.call(this, new MessageEvent('message', { data: skipped.buffer }));
            net.plan = 'done';
          }
          if (net.plan && net.plan !== 'done' && !key && (afterKey || net.dropped.length)) {
            net.dropped.push(seq);
            if (net.plan === 'drop') net.plan = 'done';
            return;
          }
          if (net.dropped.length) net.delivered.push({ seq, key });
        }
        handler.call(this, ev);
      };
    }
    send(data) {
      if (net.dropped.length) net.sent.push(String(data));
      super.send(data);
    }
  };
  const decode = VideoDecoder.prototype.decode;
  VideoDecoder.prototype.decode = function (chunk) {
    net.decoded.push(chunk.timestamp);
    return decode.call(this, chunk);
  };
}

let browser;
let server;
before(async () => {
  browser = await launchBrowser();
  // A keyframe a second; the test pattern also makes one when asked.
  server = await startServer(['--width', '640', '--height', '360', '--keyframe-interval', '30']);
});
after(async () => {
  await browser?.close();
  await server?.stop();
});

async function livePage() {
  const page = await browser.newPage();
  await page.addInitScript(lossyWebSocket);
  await page.goto(new URL('/?stats=1', server.url).href);
  const live = await waitForStats(page, (s) => s.framesPainted > 10 && s.latencyMs !== null && s.latencyMs < 500, 'live frames');
  assert.equal(live.decoder, 'webcodecs');
  assert.equal(live.sequenceGaps, 0);
  return { page, live };
}

test('a lost frame: no decoding until the next keyframe, which is asked for; then the picture moves on', async (t) => {
  const { page, live } = await livePage();
  try {
    await page.evaluate(() => { window.net.plan = 'drop'; });
    await page.waitForFunction(() => window.net.delivered.some((u) => u.key), null, { timeout: 5000 });
    const resumed = await waitForStats(page, (s) => s.lastGap?.resumedAt != null && s.framesPainted > live.framesPainted + 10,
      'decoding and painting to resume');
    const net = await page.evaluate(() => window.net);
    const [lost] = net.dropped;
    const keyframe = net.delivered.find((u) => u.key).seq;
    const between = net.delivered.filter((u) => u.seq < keyframe).map((u) => u.seq);
    assert.ok(between.length >= 1, `frames between the gap and the keyframe: ${between}`);
    t.diagnostic(`dropped #${lost}; not decoded: #${between.join(', #')}; resumed at keyframe #${keyframe}`);

    assert.equal(resumed.sequenceGaps, 1);
    assert.equal(resumed.framesMissing, 1);
    assert.deepEqual(resumed.lastGap, { expected: lost, got: lost + 1, resumedAt: keyframe });
    assert.ok(net.sent.includes('{"type":"keyframe"}'), `a keyframe was asked for: ${net.sent}`);
    assert.ok(resumed.keyframeRequests > live.keyframeRequests);
    // Nothing between the gap and the keyframe went to the decoder; the keyframe did.
    const decodedBetween = net.decoded.filter((seq) => seq > lost && seq < keyframe);
    assert.deepEqual(decodedBetween, [], 'no frame predicted from the lost one was decoded');
    assert.ok(net.decoded.includes(keyframe));
    assert.ok(resumed.framesDropped >= live.framesDropped + between.length);
    // And the picture is live again: the stamp on the canvas moves on.
    const after = await waitForStats(page, (s) => s.lastFrameNumber > resumed.lastFrameNumber + 15 && s.latencyMs < 500, 'the stamp to advance');
    assert.equal(after.state, 'live');
    assert.equal(after.sequenceGaps, 1);
    await page.screenshot({ path: screenshotPath('sequence-gap-recovered') });
  } finally {
    await page.close();
  }
});

test('frames the server skips and announces are not a gap', async (t) => {
  const { page, live } = await livePage();
  try {
    await page.evaluate(() => { window.net.plan = 'skip'; });
    await page.waitForFunction(() => window.net.plan === 'done', null, { timeout: 5000 });
    const s = await waitForStats(page, (st) => st.framesPainted > live.framesPainted + 15, 'painting after the skip');
    const net = await page.evaluate(() => window.net);
    assert.ok(net.dropped.length >= 1);
    assert.equal(s.framesSkippedByServer, live.framesSkippedByServer + net.dropped.length);
    assert.equal(s.sequenceGaps, 0);
    assert.equal(s.lastGap, null);
    t.diagnostic(`skipped #${net.dropped[0]}..#${net.dropped.at(-1)}, announced, resumed at #${net.delivered[0].seq}`);
  } finally {
    await page.close();
  }
});
