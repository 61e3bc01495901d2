// Reads the test pattern's frame stamp (docs/test-pattern.md) from RGBA pixels:
// two rows of 40 cells, 80 bits: frame number, low 40 bits of the capture time in
// µs, check byte.
/** A picture whose stamp is at most this old (ms) is live: the first such is the "first live picture". */
export const LIVE_MS = 200;

const CELLS = 40;
const ROW_HEIGHT = 16;

/** Decodes a stamp from RGBA `data` of an image `width` pixels wide (at least 32 rows). */
export function readStamp(data, width) {
  const cw = Math.floor(width / CELLS);
  if (cw < 1) return null;
  const bytes = new Uint8Array(10);
  for (let i = 0; i < 80; i++) {
    const row = Math.floor(i / CELLS);
    const col = i % CELLS;
    const x = col * cw + (cw >> 1);
    const y = row * ROW_HEIGHT + (ROW_HEIGHT >> 1);
    const p = (y * width + x) * 4;
    const luma = 0.299 * data[p] + 0.587 * data[p + 1] + 0.114 * data[p + 2];
    if (luma >= 128) bytes[i >> 3] |= 0x80 >> (i & 7);
  }
  let check = 0xa5; // so that a blank strip is never a valid stamp
  for (let i = 0; i < 9; i++) check ^= bytes[i];
  if (check !== bytes[9]) return null;
  const frame = ((bytes[0] << 24) | (bytes[1] << 16) | (bytes[2] << 8) | bytes[3]) >>> 0;
  let low40 = 0;
  for (let i = 4; i < 9; i++) low40 = low40 * 256 + bytes[i];
  return { frame, low40 };
}

/** The full capture time (µs) with these low 40 bits nearest to `nowUs`. */
export function captureNear(low40, nowUs) {
  const span = 2 ** 40;
  const base = Math.floor(nowUs / span) * span;
  let best = base + low40;
  for (const c of [base - span + low40, base + span + low40]) {
    if (Math.abs(c - nowUs) < Math.abs(best - nowUs)) best = c;
  }
  return best;
}
