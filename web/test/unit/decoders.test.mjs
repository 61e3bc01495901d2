// The decoders' bookkeeping, without a browser: a stand-in Worker plays Broadway.
import { test } from 'node:test';
import assert from 'node:assert/strict';

const posted = [];
globalThis.Worker = class {
  postMessage(msg) { posted.push(msg); }
  terminate() {}
};
globalThis.document = { createElement: () => ({}), head: { append() {} } };
const { BroadwayDecoder, paintAtOnce } = await import('../../public/decoders.js');

function picture(decoder, seq) {
  const width = 16, height = 16;
  decoder.message({ buf: new ArrayBuffer(width * height * 1.5), width, height, infos: [{ seq }] });
}

test('Broadway units that give no picture do not count as in flight', () => {
  const pictures = [];
  const decoder = new BroadwayDecoder((p, unit) => pictures.push(unit.seq), (e) => { throw e; });
  decoder.configure({ width: 16, height: 16 });
  for (const seq of [1, 2, 3, 4]) decoder.decode({ seq, data: new Uint8Array(8) });
  assert.equal(decoder.backlog, 4);
  // Broadway could not decode 1 and 2 (say, a reference was missing): 3 comes back.
  picture(decoder, 3);
  assert.deepEqual(pictures, [3]);
  assert.equal(decoder.backlog, 1, 'only 4 is still being decoded');
  picture(decoder, 4);
  assert.equal(decoder.backlog, 0);
  assert.ok(decoder.warm);
});

test('live pictures are painted while the decoder keeps up; a burst paints only its newest', () => {
  const live = { seq: 7, catchUp: false };
  assert.equal(paintAtOnce(live, 0), true);
  assert.equal(paintAtOnce(live, 1), true, 'the next frame already in the decoder is no reason to wait');
  assert.equal(paintAtOnce(live, 5), false);
  assert.equal(paintAtOnce({ seq: 3, catchUp: true }, 0), false, 'catch-up pictures are painted by the timer');
  assert.equal(paintAtOnce(null, 0), false);
});
