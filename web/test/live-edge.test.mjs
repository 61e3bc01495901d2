// Keeping a live <video> at the live edge (live-edge.js): when to seek, when to play
// faster, when to trim, how close to the edge to play; and which fragment is on screen.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  liveEdgeAction, Cushion, CaptureTimes, rangesOf, TARGET_BEHIND_S, NUDGE_MARGIN_S, NUDGE_RATE, SEEK_BEHIND_S,
  TRIM_AT_S, KEEP_BEHIND_S,
} from '../public/live-edge.js';

const CUSHION = 0.1;
const act = (o) => liveEdgeAction({ playbackRate: 1, cushion: CUSHION, ...o });
const close = (a, b) => Math.abs(a - b) < 1e-9;

test('nothing to do before data, or at the live edge', () => {
  assert.deepEqual(act({ currentTime: 0, ranges: [], newest: null }), { seekTo: null, playbackRate: 1, trimBefore: null, behind: null });
  const live = act({ currentTime: 10.95, ranges: [[9, 11]], newest: 10.96 });
  assert.equal(live.seekTo, null);
  assert.equal(live.playbackRate, 1);
  assert.equal(live.trimBefore, null);
  assert.ok(close(live.behind, 0.05));
});

test('a playhead outside the data (a join, a skip, a gap) jumps to just behind the live edge', () => {
  // The first data of a join sits an hour into the server's timeline; the video is at 0.
  const join = act({ currentTime: 0, ranges: [[3600, 3601.5]], newest: 3601.46 });
  assert.ok(close(join.seekTo, 3601.5 - TARGET_BEHIND_S));
  assert.equal(join.playbackRate, 1, 'no nudge right after a seek');
  // Stuck at the end of one range, the data goes on after a gap (a skip).
  const gap = act({ currentTime: 20, ranges: [[18, 20], [23, 24]], newest: 23.96 });
  assert.ok(close(gap.seekTo, 24 - TARGET_BEHIND_S));
  // A range shorter than the target: its start.
  assert.equal(act({ currentTime: 0, ranges: [[50, 50.03]], newest: 50 }).seekTo, 50);
});

test('after a timeline reset the live edge is the range of the newest sample, not the latest range', () => {
  const a = act({ currentTime: 3700, ranges: [[2, 4], [3690, 3700.2]], newest: 3.9 });
  assert.ok(close(a.seekTo, 4 - TARGET_BEHIND_S));
});

test('slightly behind: play faster until within the cushion; far behind: seek', () => {
  const nudgeAt = CUSHION + NUDGE_MARGIN_S;
  const slightly = act({ currentTime: 10 - nudgeAt - 0.05, ranges: [[5, 10]], newest: 9.97 });
  assert.equal(slightly.seekTo, null);
  assert.equal(slightly.playbackRate, NUDGE_RATE);
  // Between the cushion and the nudge threshold, the rate stays as it is (hysteresis).
  const between = 10 - (CUSHION + NUDGE_MARGIN_S / 2);
  assert.equal(act({ currentTime: between, ranges: [[5, 10]], newest: 9.97, playbackRate: NUDGE_RATE }).playbackRate, NUDGE_RATE);
  assert.equal(act({ currentTime: between, ranges: [[5, 10]], newest: 9.97, playbackRate: 1 }).playbackRate, 1);
  assert.equal(act({ currentTime: 10 - CUSHION / 2, ranges: [[5, 10]], newest: 9.97, playbackRate: NUDGE_RATE }).playbackRate, 1);
  const far = act({ currentTime: 10 - SEEK_BEHIND_S - 0.01, ranges: [[5, 10]], newest: 9.97, playbackRate: NUDGE_RATE });
  assert.ok(close(far.seekTo, 10 - TARGET_BEHIND_S));
  assert.equal(far.playbackRate, 1);
  // A wider cushion (a video that ran dry) nudges later.
  assert.equal(act({ currentTime: 10 - nudgeAt - 0.05, ranges: [[5, 10]], newest: 9.97, cushion: 0.3 }).playbackRate, 1);
});

test('when a catch-up burst ends, the playhead goes live at once, not by nudging', () => {
  const o = { currentTime: 9.4, ranges: [[9, 10]], newest: 9.97 };
  assert.equal(act(o).seekTo, null);
  assert.equal(act(o).playbackRate, NUDGE_RATE);
  assert.ok(close(act({ ...o, burstOver: true }).seekTo, 10 - TARGET_BEHIND_S));
  assert.equal(act({ ...o, currentTime: 9.9, burstOver: true }).seekTo, null, 'already live');
});

test('the buffer is trimmed to KEEP_BEHIND_S behind the playhead once it holds TRIM_AT_S', () => {
  assert.equal(act({ currentTime: 12.95, ranges: [[10, 13]], newest: 12.96 }).trimBefore, null);
  const t = act({ currentTime: 12.95, ranges: [[12.95 - TRIM_AT_S - 0.01, 13]], newest: 12.96 });
  assert.ok(close(t.trimBefore, 12.95 - KEEP_BEHIND_S));
  // After a seek, trimmed behind the new playhead (old data of another range too).
  const s = act({ currentTime: 0, ranges: [[3600, 3605]], newest: 3604.96 });
  assert.ok(close(s.trimBefore, s.seekTo - KEEP_BEHIND_S));
});

test('the cushion widens with every stall and narrows after calm stretches', () => {
  const c = new Cushion(0);
  assert.equal(c.at(0), Cushion.START_S);
  c.stalled(1000);
  c.stalled(1100);
  assert.ok(close(c.at(1100), Cushion.START_S + 2 * Cushion.WIDEN_S));
  assert.ok(close(c.at(1100 + Cushion.CALM_MS * 3), Cushion.START_S + 2 * Cushion.WIDEN_S - 3 * Cushion.NARROW_S));
  assert.equal(c.at(1e9), Cushion.MIN_S);
  for (let i = 0; i < 100; i++) c.stalled(1e9);
  assert.equal(c.at(1e9), Cushion.MAX_S);
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
