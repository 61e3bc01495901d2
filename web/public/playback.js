// Playback policy, apart from the DOM: when decoding is too far behind and should
// skip to a keyframe, which decoded pictures to paint while catching up, and the
// received frame and bit rates. Time comes in (now, timers), so node tests drive it.
import { paintAtOnce } from './decoders.js';

// Beyond this many undecoded access units the decoder cannot keep up: drop to the next keyframe.
export const MAX_BACKLOG = 12;
// A live frame older than this on arrival means we stalled: skip ahead to a keyframe.
export const STALE_MS = 1500;
// While catching up, still show a picture this often.
const CATCH_UP_PAINT_MS = 200;
// A held picture is painted after this long unless a newer one replaces it.
const HOLD_MS = 50;

/**
 * Whether decoding is too far behind to catch up by decoding, and should skip to the
 * next keyframe: a live unit that arrived stale (the tab stalled), or a backlog
 * beyond MAX_BACKLOG in a decoder that is warm and not working through a join burst
 * (a catch-up burst is a backlog by design, no sign of a slow decoder).
 */
export function tooFarBehind({ catchUp, networkLatencyMs, backlog, warm, inBurst }) {
  const stale = !catchUp && networkLatencyMs > STALE_MS;
  const behind = backlog > MAX_BACKLOG && warm && !inBurst;
  return stale || behind;
}

/** Frame rate and bit rate over the last five seconds of received access units. */
export class RateWindow {
  constructor(spanMs = 5000) {
    this.spanMs = spanMs;
    this.entries = []; // [time ms, bytes]
  }

  add(nowMs, bytes) {
    this.entries.push([nowMs, bytes]);
    while (this.entries.length && this.entries[0][0] < nowMs - this.spanMs) this.entries.shift();
  }

  /** {fps, bitrateKbps}; both 0 until two units have arrived. */
  rates(nowMs) {
    const span = this.entries.length > 1 ? (nowMs - this.entries[0][0]) / 1000 : 0;
    if (span <= 0) return { fps: 0, bitrateKbps: 0 };
    const bytes = this.entries.reduce((sum, [, b]) => sum + b, 0);
    return {
      fps: Math.round((this.entries.length / span) * 10) / 10,
      bitrateKbps: Math.round((bytes * 8) / span / 1000),
    };
  }
}

/**
 * Which decoded pictures are painted: live ones at once; while catching up, the
 * newest one held for a moment (a newer one replaces it), and one at least every
 * CATCH_UP_PAINT_MS. Collaborators: now(), timers, paint(picture, unit).
 */
export class Painter {
  constructor({ now, timers, paint }) {
    this.now = now;
    this.timers = timers;
    this.paint = paint;
    this.held = null; // {picture, unit}: newest decoded picture not painted yet
    this.heldTimer = 0;
    this.lastPaint = 0;
  }

  /**
   * A decoded picture of `unit`. `presents`: the decoder shows its pictures itself
   * (MSE's video element has painted this one); `backlog`: units still to decode.
   */
  offer(picture, unit, { presents, backlog }) {
    this.dropHeld();
    if (presents || paintAtOnce(unit, backlog) || this.now() - this.lastPaint > CATCH_UP_PAINT_MS) {
      this.show(picture, unit);
      return;
    }
    this.held = { picture, unit };
    this.heldTimer = this.timers.setTimeout(() => {
      const held = this.held;
      if (!held) return;
      this.held = null;
      this.show(held.picture, held.unit);
    }, HOLD_MS);
  }

  /** Lets go of a held picture without painting it. */
  dropHeld() {
    this.timers.clearTimeout(this.heldTimer);
    if (this.held) {
      this.held.picture.release();
      this.held = null;
    }
  }

  show(picture, unit) {
    this.lastPaint = this.now();
    this.paint(picture, unit);
  }
}
