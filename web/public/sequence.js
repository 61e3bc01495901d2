// Sequence continuity on the framed protocol (docs/protocol.md): the server numbers
// every source frame. A number that does not follow the one before means frames the
// decoder needed never arrived, and decoding on would predict from pictures we do
// not have (a smeared picture until the next keyframe).

const U32 = 2 ** 32;

/**
 * Follows the sequence numbers of arriving access units. A run starts fresh (any
 * number is taken as it comes) after connecting, after a stream-info and after a
 * `skipped` message, whose jump the server announced. Within a run every number
 * must be the one before plus one (mod 2^32); anything else is a gap.
 */
export class SequenceTracker {
  constructor() {
    /** The number the next access unit should carry; null at the start of a run. */
    this.expected = null;
    /** Gaps seen in all. */
    this.gaps = 0;
    /** Numbers skipped over by forward gaps (a number going backwards adds none). */
    this.missing = 0;
    /** The last gap: {expected, got}. */
    this.lastGap = null;
  }

  /** Starts a new run: the next number is not compared with the last one. */
  restart() {
    this.expected = null;
  }

  /** Takes the next access unit's number; returns false when it does not continue the run. */
  next(seq) {
    const expected = this.expected;
    this.expected = (seq + 1) % U32;
    if (expected === null || seq === expected) return true;
    this.gaps++;
    const ahead = (seq - expected + U32) % U32;
    if (ahead < U32 / 2) this.missing += ahead;
    this.lastGap = { expected, got: seq };
    return false;
  }
}
