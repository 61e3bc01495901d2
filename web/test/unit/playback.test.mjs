// The playback policy without a browser: which pictures are painted, when to skip
// to a keyframe, the rates.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MAX_BACKLOG, Painter, RateWindow, STALE_MS, tooFarBehind } from '../../public/playback.js';
import { FakeTime } from './fakes.mjs';

test('frame and bit rates over the last five seconds', () => {
  const w = new RateWindow();
  assert.deepEqual(w.rates(0), { fps: 0, bitrateKbps: 0 });
  for (let i = 0; i <= 60; i++) w.add(i * 100, 1000);
  // 61 units of 1000 bytes in 6 s of arrivals: the first ten fell out of the window.
  assert.equal(w.entries.length, 51);
  assert.deepEqual(w.rates(6000), { fps: 10.2, bitrateKbps: 82 });
});

test('too far behind: a stale live frame, or a warm decoder backlogged outside a join burst', () => {
  const live = { catchUp: false, networkLatencyMs: 40, backlog: 0, warm: true, inBurst: false };
  assert.equal(tooFarBehind(live), false);
  assert.equal(tooFarBehind({ ...live, networkLatencyMs: STALE_MS + 1 }), true, 'the tab stalled');
  assert.equal(tooFarBehind({ ...live, catchUp: true, networkLatencyMs: 30000 }), false, 'catch-up frames are old by design');
  assert.equal(tooFarBehind({ ...live, backlog: MAX_BACKLOG }), false);
  assert.equal(tooFarBehind({ ...live, backlog: MAX_BACKLOG + 1 }), true);
  assert.equal(tooFarBehind({ ...live, backlog: MAX_BACKLOG + 1, warm: false }), false, 'a decoder still loading');
  assert.equal(tooFarBehind({ ...live, backlog: MAX_BACKLOG + 1, inBurst: true }), false, 'working through a join burst');
});

/** A picture that says whether it was released unpainted. */
function picture(name) {
  return { name, released: false, release() { this.released = true; } };
}

function painter() {
  const time = new FakeTime();
  const painted = [];
  const p = new Painter({ now: time.now, timers: time.timers, paint: (pic) => painted.push(pic.name) });
  return { p, time, painted };
}

test('live pictures are painted at once', () => {
  const { p, painted } = painter();
  p.offer(picture('a'), { seq: 1, catchUp: false }, { presents: false, backlog: 0 });
  p.offer(picture('b'), { seq: 2, catchUp: false }, { presents: false, backlog: 0 });
  assert.deepEqual(painted, ['a', 'b']);
});

test('while catching up the newest picture is held a moment and the ones it replaces released', () => {
  const { p, time, painted } = painter();
  time.advance(1000);
  p.offer(picture('first'), { seq: 1, catchUp: true }, { presents: false, backlog: 5 });
  assert.deepEqual(painted, ['first'], 'nothing painted for a while: this one at once');
  const older = picture('older');
  p.offer(older, { seq: 2, catchUp: true }, { presents: false, backlog: 4 });
  p.offer(picture('newer'), { seq: 3, catchUp: true }, { presents: false, backlog: 3 });
  assert.equal(older.released, true);
  assert.deepEqual(painted, ['first']);
  time.advance(50);
  assert.deepEqual(painted, ['first', 'newer']);
});

test('a decoder that presents its own pictures counts each as painted at once', () => {
  const { p, painted } = painter();
  p.offer(picture('a'), { seq: 1, catchUp: true }, { presents: true, backlog: 9 });
  assert.deepEqual(painted, ['a']);
});

test('dropping the held picture releases it unpainted', () => {
  const { p, time, painted } = painter();
  time.advance(1000);
  p.offer(picture('first'), { seq: 1, catchUp: true }, { presents: false, backlog: 5 });
  const held = picture('held');
  p.offer(held, { seq: 2, catchUp: true }, { presents: false, backlog: 4 });
  p.dropHeld();
  time.advance(100);
  assert.equal(held.released, true);
  assert.deepEqual(painted, ['first']);
});
