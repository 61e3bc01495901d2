// Where a live <video> fed by Media Source Extensions should play: at the live edge,
// the end of what has been appended. A video element plays what it is given at its own
// pace, however late; for a camera feed only the newest picture matters. So: seek
// onto the newest data when the playhead is outside it (after a join, a skip or a
// gap) or far behind it, speed up a little while slightly behind (a seek stalls the
// picture for a moment, a faster rate does not), and drop what lies well behind the
// playhead so the buffer stays small. Pure: times in, decisions out.

/** Aim: this far behind the live edge after a seek, in seconds (a few frames to play into). */
export const TARGET_BEHIND_S = 0.06;
/**
 * Behind the live edge by more than the cushion plus this: play faster until back
 * within the cushion. The cushion is how close to the edge the video plays without
 * running dry (see Cushion): Chromium's software decoder with B-frames needs about
 * 0.25 s, and nudging it closer dropped a quarter of the frames in stalls.
 */
export const NUDGE_MARGIN_S = 0.07;
/** How much faster: 10 % gains 100 ms a second and is not seen in a camera picture. */
export const NUDGE_RATE = 1.1;
/** Behind by more than this: seek instead (catching up at NUDGE_RATE would take 10 s). */
export const SEEK_BEHIND_S = 1.0;
/** Once the buffer reaches this far behind the playhead, remove all but KEEP_BEHIND_S of it. */
export const TRIM_AT_S = 3;
export const KEEP_BEHIND_S = 2;
/** A playhead this close to a range's start or end counts as inside (timestamps round). */
const EPSILON_S = 0.002;

/**
 * Decides what to do now.
 *  currentTime   the video's playhead (s)
 *  ranges        buffered ranges, [[start, end], ...] in order (s)
 *  newest        presentation time of the newest sample appended (s); null before the first
 *  playbackRate  the rate now
 *  burstOver     the catch-up burst after a join or a skip has just ended: go live now,
 *                even if within SEEK_BEHIND_S
 * Returns {seekTo: s | null, playbackRate, trimBefore: s | null, behind: s | null}.
 */
export function liveEdgeAction({
  currentTime, ranges, newest, playbackRate = 1, burstOver = false, cushion = Cushion.START_S,
}) {
  const none = { seekTo: null, playbackRate, trimBefore: null, behind: null };
  if (!ranges.length || newest === null || newest === undefined) return none;
  // The live edge: the end of the range holding the newest sample (after a timeline
  // reset, older data may sit in a range at later times), else the last range's.
  const live = ranges.find(([s, e]) => newest >= s - EPSILON_S && newest < e + EPSILON_S) ?? ranges.at(-1);
  const edge = live[1];
  const inside = currentTime >= live[0] - EPSILON_S && currentTime <= live[1] + EPSILON_S;
  const behind = edge - currentTime;
  const goLive = Math.max(live[0], edge - TARGET_BEHIND_S);
  let seekTo = null;
  const nudgeAbove = cushion + NUDGE_MARGIN_S;
  if (!inside || behind > SEEK_BEHIND_S || (burstOver && behind > nudgeAbove)) seekTo = goLive;

  let rate = playbackRate;
  const after = seekTo === null ? behind : edge - seekTo;
  if (after > nudgeAbove) rate = NUDGE_RATE;
  else if (after < cushion) rate = 1;

  const head = seekTo ?? currentTime;
  const trimBefore = ranges[0][0] < head - TRIM_AT_S ? head - KEEP_BEHIND_S : null;
  return { seekTo, playbackRate: rate, trimBefore, behind: after };
}

/**
 * How far behind the live edge the video should play: as close as it goes without
 * running dry. Every stall (the element waits for data while live) widens it; a
 * stretch without one narrows it again. Time is passed in (ms).
 */
export class Cushion {
  static START_S = 0.1;
  static MIN_S = 0.04;
  static MAX_S = 0.6;
  static WIDEN_S = 0.04;
  static NARROW_S = 0.01;
  static CALM_MS = 5000;

  constructor(nowMs) {
    this.s = Cushion.START_S;
    this.since = nowMs;
  }

  /** The video ran dry. */
  stalled(nowMs) {
    this.s = Math.min(Cushion.MAX_S, this.s + Cushion.WIDEN_S);
    this.since = nowMs;
  }

  /** The cushion now: narrowed by NARROW_S for every CALM_MS without a stall. */
  at(nowMs) {
    while (nowMs - this.since >= Cushion.CALM_MS) {
      this.s = Math.max(Cushion.MIN_S, this.s - Cushion.NARROW_S);
      this.since += Cushion.CALM_MS;
    }
    return this.s;
  }
}

/** A TimeRanges as [[start, end], ...]. */
export function rangesOf(timeRanges) {
  const out = [];
  for (let i = 0; i < timeRanges.length; i++) out.push([timeRanges.start(i), timeRanges.end(i)]);
  return out;
}

/**
 * Capture times by presentation time: the page records each fragment's, and looks up
 * the picture the video element reports on screen. Keeps the newest `max` entries.
 */
export class CaptureTimes {
  constructor(max = 600) {
    this.max = max;
    this.entries = []; // {start, end, unit}, sorted by start (s)
  }

  clear() {
    this.entries = [];
  }

  /** Records that the sample presented from `start` to `end` (s) is `unit`. */
  add(start, end, unit) {
    const e = this.entries;
    let i = e.length;
    while (i > 0 && e[i - 1].start > start) i--; // B-frames arrive out of presentation order
    if (i > 0 && Math.abs(e[i - 1].start - start) < 1e-6) e[i - 1] = { start, end, unit };
    else e.splice(i, 0, { start, end, unit });
    if (e.length > this.max) e.splice(0, e.length - this.max);
  }

  /** The unit whose presentation interval holds `t` (s), else the latest starting before it; null when none. */
  at(t) {
    const e = this.entries;
    let lo = 0;
    let hi = e.length - 1;
    let found = -1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      if (e[mid].start <= t + 0.0005) {
        found = mid;
        lo = mid + 1;
      } else {
        hi = mid - 1;
      }
    }
    return found < 0 ? null : e[found].unit;
  }
}
