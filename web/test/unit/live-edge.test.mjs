// Keeping a live <video> at the live edge (live-edge.js): when to seek, when to play
// faster, when to trim, how close to the edge to play; and which fragment is on screen.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  liveEdgeAction, stallWidens, steeringRate, trimPoint, Cushion, Reorder, CaptureTimes, rangesOf, RATE_STEP, MIN_RATE, MAX_RATE,
  DEADBAND_S, BURST_SEEK_S, SEEK_BEHIND_S, TRIM_AT_S, KEEP_BEHIND_S,
} from '../../public/live-edge.js';

const CUSHION = 0.03;
const FRAME = 1 / 30;
const AIM = FRAME + CUSHION;
const act = (o) => liveEdgeAction({ playbackRate: 1, cushion: CUSHION, frame: FRAME, ...o });
const close = (a, b) => Math.abs(a - b) < 1e-9;

test('nothing to do before data, or at the aim', () => {
  assert.deepEqual(act({ currentTime: 0, ranges: [], newest: null }), { seekTo: null, playbackRate: 1, trimBefore: null, behind: null });
  const live = act({ currentTime: 11 - AIM, ranges: [[9, 11]], newest: 11 - FRAME });
  assert.equal(live.seekTo, null);
  assert.equal(live.playbackRate, 1);
  assert.equal(live.trimBefore, null);
  assert.ok(close(live.behind, AIM));
});

test('a playhead outside the data (a join, a skip, a gap) jumps to one picture and the cushion behind the live edge', () => {
  // The first data of a join sits an hour into the server's timeline; the video is at 0.
  const join = act({ currentTime: 0, ranges: [[3600, 3601.5]], newest: 3601.46 });
  assert.ok(close(join.seekTo, 3601.5 - AIM));
  assert.equal(join.playbackRate, 1, 'no steering right after a seek');
  // Stuck at the end of one range, the data goes on after a gap (a skip).
  const gap = act({ currentTime: 20, ranges: [[18, 20], [23, 24]], newest: 23.96 });
  assert.ok(close(gap.seekTo, 24 - AIM));
  // A range shorter than the aim: its start.
  assert.equal(act({ currentTime: 0, ranges: [[50, 50.03]], newest: 50 }).seekTo, 50);
  // A wider cushion (a video that ran dry) aims further back.
  assert.ok(close(act({ currentTime: 0, ranges: [[5, 10]], newest: 9.97, cushion: 0.2 }).seekTo, 10 - FRAME - 0.2));
});

test('after a timeline reset the live edge is the range of the newest sample, not the latest range', () => {
  const a = act({ currentTime: 3700, ranges: [[2, 4], [3690, 3700.2]], newest: 3.9 });
  assert.ok(close(a.seekTo, 4 - AIM));
});

test('the rate steers toward the aim: faster while behind, slower while too close, 1 near it', () => {
  assert.equal(steeringRate(0), 1);
  assert.equal(steeringRate(DEADBAND_S), 1);
  assert.equal(steeringRate(-DEADBAND_S), 1);
  // Just outside the deadband: one step, so a small error still closes.
  assert.equal(steeringRate(DEADBAND_S + 0.001), 1 + RATE_STEP);
  assert.equal(steeringRate(-DEADBAND_S - 0.001), 1 - RATE_STEP);
  // Further: faster the further behind, within bounds.
  assert.ok(steeringRate(0.1) > steeringRate(0.03));
  assert.ok(steeringRate(0.5) > steeringRate(0.1));
  assert.equal(steeringRate(10), MAX_RATE);
  assert.equal(steeringRate(-10), MIN_RATE);
  for (const e of [-1, -0.2, -0.05, 0.02, 0.07, 0.3, 0.8]) {
    const r = steeringRate(e);
    assert.ok(close(Math.round((r - 1) / RATE_STEP) * RATE_STEP, r - 1), `${r} is a whole number of steps`);
  }
});

test('steering happens only when told (right after an append), and never right after a seek', () => {
  const behindAim = { currentTime: 10 - AIM - 0.1, ranges: [[5, 10]], newest: 10 - FRAME };
  assert.equal(act(behindAim).playbackRate, steeringRate(0.1));
  assert.ok(act(behindAim).playbackRate > 1);
  assert.equal(act({ ...behindAim, steer: false, playbackRate: 0.95 }).playbackRate, 0.95, 'kept between appends');
  const tooClose = { currentTime: 10 - FRAME, ranges: [[5, 10]], newest: 10 - FRAME };
  assert.ok(act(tooClose).playbackRate < 1, 'closer than one picture and the cushion: slower');
  const far = act({ currentTime: 10 - SEEK_BEHIND_S - 0.01, ranges: [[5, 10]], newest: 9.97, playbackRate: 1.5 });
  assert.ok(close(far.seekTo, 10 - AIM));
  assert.equal(far.playbackRate, 1);
});

test('when a catch-up burst ends, the playhead goes live at once, not by steering', () => {
  const o = { currentTime: 10 - AIM - BURST_SEEK_S - 0.05, ranges: [[9, 10]], newest: 9.97 };
  assert.equal(act(o).seekTo, null);
  assert.ok(act(o).playbackRate > 1);
  assert.ok(close(act({ ...o, burstOver: true }).seekTo, 10 - AIM));
  assert.equal(act({ ...o, currentTime: 10 - AIM - BURST_SEEK_S / 2, burstOver: true }).seekTo, null, 'close enough to steer');
});

test('the buffer is trimmed to KEEP_BEHIND_S behind the playhead once it holds TRIM_AT_S', () => {
  assert.equal(act({ currentTime: 12.95, ranges: [[10, 13]], newest: 12.96 }).trimBefore, null);
  const t = act({ currentTime: 12.95, ranges: [[12.95 - TRIM_AT_S - 0.01, 13]], newest: 12.96 });
  assert.ok(close(t.trimBefore, 12.95 - KEEP_BEHIND_S));
  // After a seek, trimmed behind the new playhead (old data of another range too).
  const s = act({ currentTime: 0, ranges: [[3600, 3605]], newest: 3604.96 });
  assert.ok(close(s.trimBefore, s.seekTo - KEEP_BEHIND_S));
});

test('a trim ends at a keyframe, never inside a GOP (MSE would remove the rest of it too)', () => {
  const keys = [10, 12, 14, 16];
  assert.equal(trimPoint(15.5, keys), 14);
  assert.equal(trimPoint(14, keys), 14);
  assert.equal(trimPoint(13.99, keys), 12);
  assert.equal(trimPoint(9, keys), null, 'no keyframe before it: nothing to remove');
  assert.equal(trimPoint(20, []), null);
});

test('the cushion widens with stalls (once per WIDEN_EVERY_MS) and narrows after calm stretches', () => {
  const c = new Cushion(0);
  assert.equal(c.at(0), Cushion.START_S);
  c.stalled(1000);
  c.stalled(1000 + Cushion.WIDEN_EVERY_MS / 2); // the same shortfall: not wider yet
  assert.ok(close(c.at(1000 + Cushion.WIDEN_EVERY_MS / 2), Cushion.START_S + Cushion.WIDEN_S));
  const t = 1000 + Cushion.WIDEN_EVERY_MS;
  c.stalled(t);
  assert.ok(close(c.at(t), Cushion.START_S + 2 * Cushion.WIDEN_S));
  assert.ok(close(c.at(t + Cushion.CALM_MS * 3), Cushion.START_S + 2 * Cushion.WIDEN_S - 3 * Cushion.NARROW_S));
  assert.equal(c.at(1e9), Cushion.MIN_S);
  for (let i = 0; i < 100; i++) c.stalled(1e9 + i * Cushion.WIDEN_EVERY_MS);
  assert.equal(c.at(1e9 + 99 * Cushion.WIDEN_EVERY_MS), Cushion.MAX_S);
});

test('the reorder lead: 0 in presentation order, the depth of B-frames, forgotten after the window', () => {
  const d = 1 / 30;
  const r = new Reorder(6);
  for (let i = 0; i < 5; i++) r.add(i * d, (i + 1) * d);
  assert.equal(r.s, 0);
  // Decode order P3 B1 B2: B1 lands two pictures behind the edge P3 made.
  r.add(8 * d, 9 * d);
  r.add(6 * d, 7 * d);
  r.add(7 * d, 8 * d);
  assert.ok(close(r.s, 2 * d));
  const aimWith = liveEdgeAction({ currentTime: 0, ranges: [[5, 10]], newest: 9.9, frame: d, cushion: 0.01, reorder: r.s });
  assert.ok(close(aimWith.seekTo, 10 - d - 2 * r.s - 0.01), 'the aim counts the reorder twice');
  for (let i = 9; i < 15; i++) r.add(i * d, (i + 1) * d);
  assert.equal(r.s, 0, 'in order again');
  r.clear();
  assert.equal(r.s, 0);
});

test('the fragment on screen is found by presentation time, B-frames arriving out of order', () => {
  const times = new CaptureTimes(4);
  // Decode order I0 P3 B1 B2 (presentation 0, 0.1, 0.033.., 0.066..).
  const d = 1 / 30;
  for (const [pts, seq] of [[0, 0], [3 * d, 3], [d, 1], [2 * d, 2]]) times.add(pts, pts + d, { seq });
  assert.deepEqual([0, d, 2 * d, 3 * d].map((t) => times.at(t).seq), [0, 1, 2, 3]);
  assert.equal(times.at(1.5 * d).seq, 1, 'inside a picture\'s interval');
  assert.equal(times.at(d - 0.0001).seq, 1, 'a mediaTime rounded down a little');
  assert.equal(times.at(-1), null);
  times.add(4 * d, 5 * d, { seq: 4 });
  assert.equal(times.entries.length, 4, 'only the newest are kept');
  assert.equal(times.at(0), null);
  times.add(4 * d, 5 * d, { seq: 44 });
  assert.equal(times.at(4 * d).seq, 44, 'the same time again replaces');
  times.clear();
  assert.equal(times.at(1), null);
});

test('TimeRanges become pairs', () => {
  const tr = { length: 2, start: (i) => [1, 5][i], end: (i) => [2, 6][i] };
  assert.deepEqual(rangesOf(tr), [[1, 2], [5, 6]]);
});

test('a stall at the steering\'s gentlest nudge widens the cushion; catching up or settling after a seek does not', () => {
  const settleMs = 1000;
  assert.equal(stallWidens({ playbackRate: 1, sinceSeekMs: 5000, settleMs }), true);
  assert.equal(stallWidens({ playbackRate: 1 - RATE_STEP, sinceSeekMs: 5000, settleMs }), true);
  // The steering plays a little fast toward an aim too close to the edge: the stall
  // says the cushion is too thin (before, it did not count, and the cushion narrowed on).
  assert.equal(stallWidens({ playbackRate: steeringRate(0.02), sinceSeekMs: 5000, settleMs }), true);
  assert.equal(steeringRate(0.02), 1 + RATE_STEP);
  // Working through a catch-up burst, or the decoder settling after a seek.
  assert.equal(stallWidens({ playbackRate: 1 + 2 * RATE_STEP, sinceSeekMs: 5000, settleMs }), false);
  assert.equal(stallWidens({ playbackRate: 1, sinceSeekMs: 500, settleMs }), false);
});
