// Gap tracking on the framed protocol's frame numbers, without a browser.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SequenceTracker } from '../../public/sequence.js';

test('consecutive numbers continue the run; the first one of a run is taken as it comes', () => {
  const t = new SequenceTracker();
  assert.equal(t.next(1000), true, 'the first frame after connecting starts a run');
  for (let seq = 1001; seq < 1100; seq++) assert.equal(t.next(seq), true);
  assert.equal(t.gaps, 0);
  assert.equal(t.missing, 0);
  assert.equal(t.lastGap, null);
});

test('a missing number is a gap; the run carries on from the number that came', () => {
  const t = new SequenceTracker();
  t.next(5);
  t.next(6);
  assert.equal(t.next(8), false, '7 never came');
  assert.deepEqual(t.lastGap, { expected: 7, got: 8 });
  assert.equal(t.gaps, 1);
  assert.equal(t.missing, 1);
  assert.equal(t.next(9), true, 'one gap is counted once');
  assert.equal(t.next(20), false);
  assert.equal(t.gaps, 2);
  assert.equal(t.missing, 11);
});

test('a number going backwards or repeating is a gap too, and misses nothing', () => {
  const t = new SequenceTracker();
  t.next(10);
  assert.equal(t.next(10), false, 'a repeat');
  assert.equal(t.next(3), false, 'backwards');
  assert.equal(t.next(4), true);
  assert.equal(t.gaps, 2);
  assert.equal(t.missing, 0);
});

test('numbers wrap at 2^32', () => {
  const t = new SequenceTracker();
  t.next(0xffff_fffe);
  assert.equal(t.next(0xffff_ffff), true);
  assert.equal(t.next(0), true);
  assert.equal(t.next(1), true);
  t.next(0xffff_ffff - 10);
  t.restart();
  t.next(0xffff_fffe);
  assert.equal(t.next(2), false, '0xffffffff, 0 and 1 are missing');
  assert.equal(t.missing, 3);
});

test('after a restart (connect, stream-info, announced skip) a jump is not a gap', () => {
  const t = new SequenceTracker();
  t.next(100);
  t.next(101);
  // The server said it skipped frames: the next one, a keyframe, comes later.
  t.restart();
  assert.equal(t.next(160), true);
  assert.equal(t.next(161), true);
  // A restart holds for one frame only.
  assert.equal(t.next(170), false);
  assert.equal(t.gaps, 1);
});
