// Where a live <video> fed by Media Source Extensions should play: at the live edge,
// the end of what has been appended. A video element plays what it is given at its own
// pace, however late; for a camera feed only the newest picture matters. So: seek
// onto the newest data when the playhead is outside it (after a join, a skip or a
// gap) or far behind it, else steer the rate toward the aim (a seek stalls the picture
// while the decoder works from the keyframe, a changed rate does not), and drop what
// lies well behind the playhead, up to a keyframe, so the buffer stays small. Pure:
// times in, decisions out.

/**
 * How far behind the live edge the playhead aims: one picture (the newest on screen
 * ends at the edge) plus a cushion for the irregular arrival of the next one (see
 * Cushion). Closer than that the video runs dry and Chromium drops the picture that
 * ends the stall; further, every picture is shown later than it must be.
 *
 * The rate steers toward that aim: a little faster while behind it, a little slower
 * while too close (a video slowed by 5 % for a moment is not seen; a stall is).
 */
/** The rate moves in steps of this much (fewer changes of the video's clock). */
export const RATE_STEP = 0.05;
/**
 * Per second away from the aim, this much faster or slower: 0.1 s behind plays 15 %
 * faster, 0.5 s (a join: the decoder worked through the catch-up burst while new
 * pictures came in) plays 1.75 times as fast, live again within a second.
 */
export const RATE_GAIN = 1.5;
export const MIN_RATE = 0.9;
export const MAX_RATE = 2;
/** Within this of the aim, play at the normal rate. */
export const DEADBAND_S = 0.012;
/** After a catch-up burst: behind the aim by more than this, seek there instead of nudging. */
export const BURST_SEEK_S = 0.1;
/** Behind by more than this: seek (catching up at MAX_RATE would take seconds). */
export const SEEK_BEHIND_S = 1.0;
/** Once the buffer reaches this far behind the playhead, remove all but KEEP_BEHIND_S of it. */
export const TRIM_AT_S = 3;
export const KEEP_BEHIND_S = 2;
/** A playhead this close to a range's start or end counts as inside (timestamps round). */
const EPSILON_S = 0.002;

/** The rate that steers a playhead `error` seconds behind its aim (negative: too close) back to it. */
export function steeringRate(error) {
  if (Math.abs(error) <= DEADBAND_S) return 1;
  // At least one step, so that a small error still closes.
  const steps = Math.max(1, Math.round((Math.abs(error) * RATE_GAIN) / RATE_STEP));
  const rate = 1 + Math.sign(error) * steps * RATE_STEP;
  return Math.round(Math.min(MAX_RATE, Math.max(MIN_RATE, rate)) * 100) / 100;
}

/**
 * Decides what to do now.
 *  currentTime   the video's playhead (s)
 *  ranges        buffered ranges, [[start, end], ...] in order (s)
 *  newest        presentation time of the newest sample appended (s); null before the first
 *  frame         duration of the newest sample (s)
 *  reorder       how far behind the live edge a sample may still arrive (s): with
 *                B-frames, a picture is sent after the later one it refers to; 0 without.
 *                Counted twice: the picture must arrive, and the decoder gives a picture
 *                out only once it holds as many after it as the stream reorders
 *  cushion       the margin for late arrivals (s, from Cushion)
 *  burstOver     the catch-up burst after a join or a skip has been appended: go live
 *                now, even if within SEEK_BEHIND_S
 *  steer         whether to set the rate: only right after a sample was appended, when
 *                the distance to the edge is at its largest (between appends it shrinks
 *                as the video plays; steering on that would slow the video for nothing)
 *  playbackRate  the rate now, kept when not steering
 * Returns {seekTo: s | null, playbackRate, trimBefore: s | null, behind: s | null}:
 * `behind` is how far the playhead is (or will be, after the seek) from the live edge.
 */
export function liveEdgeAction({
  currentTime, ranges, newest, frame = 1 / 30, reorder = 0, burstOver = false, cushion = Cushion.START_S,
  steer = true, playbackRate = 1,
}) {
  const none = { seekTo: null, playbackRate, trimBefore: null, behind: null };
  if (!ranges.length || newest === null || newest === undefined) return none;
  // The live edge: the end of the range holding the newest sample (after a timeline
  // reset, older data may sit in a range at later times), else the last range's.
  const live = ranges.find(([s, e]) => newest >= s - EPSILON_S && newest < e + EPSILON_S) ?? ranges.at(-1);
  const edge = live[1];
  const inside = currentTime >= live[0] - EPSILON_S && currentTime <= live[1] + EPSILON_S;
  const behind = edge - currentTime;
  const aim = frame + 2 * reorder + cushion;
  let seekTo = null;
  if (!inside || behind > SEEK_BEHIND_S || (burstOver && behind > aim + BURST_SEEK_S)) {
    seekTo = Math.max(live[0], edge - aim);
  }
  const after = seekTo === null ? behind : edge - seekTo;
  // Right after a seek the video waits for its decoder: no steering yet.
  let rate = playbackRate;
  if (seekTo !== null) rate = 1;
  else if (steer) rate = steeringRate(after - aim);
  const head = seekTo ?? currentTime;
  const trimBefore = ranges[0][0] < head - TRIM_AT_S ? head - KEEP_BEHIND_S : null;
  return { seekTo, playbackRate: rate, trimBefore, behind: after };
}

/**
 * Whether the video running dry says the cushion is too thin. Not while the decoder
 * settles after a seek (`sinceSeekMs` below `settleMs`), nor while catching up faster
 * than the steering's gentlest nudge (a decoder working through a burst is not a late
 * arrival). At that nudge it does count: the steering plays a little fast to reach
 * an aim too close to the edge, and a stall there that did not widen the cushion let
 * it narrow on, each narrowing adding stalls (a quarter of the pictures dropped).
 */
export function stallWidens({ playbackRate, sinceSeekMs, settleMs }) {
  return playbackRate <= 1 + RATE_STEP + 1e-9 && sinceSeekMs > settleMs;
}

/**
 * The margin for late arrivals: as small as it goes without the video running dry.
 * Every stall (the element waits for data while live) widens it; a stretch without
 * one narrows it again. Time is passed in (ms).
 */
export class Cushion {
  static START_S = 0.02;
  static MIN_S = 0.005;
  static MAX_S = 0.5;
  static WIDEN_S = 0.01;
  static WIDEN_EVERY_MS = 500;
  static NARROW_S = 0.005;
  static CALM_MS = 2000;

  constructor(nowMs) {
    this.s = Cushion.START_S;
    this.since = nowMs;
    this.widened = -Infinity; // when it last widened (ms)
  }

  /** The video ran dry. Stalls within WIDEN_EVERY_MS of a widening count as one: the
   * wider cushion takes that long to come into effect. */
  stalled(nowMs) {
    if (nowMs - this.widened >= Cushion.WIDEN_EVERY_MS) {
      this.s = Math.min(Cushion.MAX_S, this.s + Cushion.WIDEN_S);
      this.widened = nowMs;
    }
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

/**
 * How far behind the live edge samples arrive: 0 for pictures sent in presentation
 * order, a picture or more for B-frames (sent after the picture they precede). The
 * largest over the last `window` samples, so one reordered stretch is remembered for
 * a while and a stream without B-frames returns to 0.
 */
export class Reorder {
  constructor(window = 90) {
    this.window = window;
    this.leads = [];
    this.edge = null;
  }

  clear() {
    this.leads = [];
    this.edge = null;
  }

  /** A sample presented from `start` to `end` (s) was appended; returns the lead now. */
  add(start, end) {
    this.leads.push(this.edge === null ? 0 : Math.max(0, this.edge - end));
    if (this.leads.length > this.window) this.leads.shift();
    this.edge = this.edge === null ? end : Math.max(this.edge, end);
    return this.s;
  }

  /** Seconds: the largest lead in the window. */
  get s() {
    return this.leads.length ? Math.max(...this.leads) : 0;
  }
}

/**
 * Where a removal of old data may end: at a keyframe. MSE removes with a sample every
 * sample that depends on it up to the next keyframe, so ending a removal inside a GOP
 * would empty the buffer up to the live edge, playhead and all. `keyTimes`: the
 * presentation times of the keyframes appended, in order (s). Null: nothing to remove.
 */
export function trimPoint(trimBefore, keyTimes) {
  let at = null;
  for (const t of keyTimes) {
    if (t > trimBefore) break;
    at = t;
  }
  return at;
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
