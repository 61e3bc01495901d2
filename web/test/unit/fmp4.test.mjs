// The page's own reading of fMP4 boxes (fmp4.js): an init segment's timescale and a
// fragment's timing, on the fmp4 vectors of docs/protocol-vectors.json and on boxes built here.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { boxes, readFragmentTiming, readTimescale } from '../../public/fmp4.js';
import { decodeServerMessage } from '../../public/protocol.js';

const vectors = JSON.parse(readFileSync(new URL('../../../docs/protocol-vectors.json', import.meta.url), 'utf8'));
const fromHex = (hex) => Uint8Array.from(hex.replace(/\s+/g, '').match(/../g) ?? [], (h) => parseInt(h, 16));

/** A box of `type` around the byte arrays in `parts`. */
function box(type, ...parts) {
  const body = parts.flatMap((p) => [...p]);
  const size = 8 + body.length;
  return Uint8Array.from([size >>> 24, (size >>> 16) & 255, (size >>> 8) & 255, size & 255, ...[...type].map((c) => c.charCodeAt(0)), ...body]);
}
const u32 = (v) => [v >>> 24, (v >>> 16) & 255, (v >>> 8) & 255, v & 255];
const u64 = (v) => [...u32(Math.floor(v / 2 ** 32)), ...u32(v % 2 ** 32)];
const full = (type, version, flags, ...parts) => box(type, [version, (flags >>> 16) & 255, (flags >>> 8) & 255, flags & 255], ...parts);

test('the vectors: the init segment says 90 kHz, the fragment its decode time, duration and offset', () => {
  const [init, frag] = vectors.fmp4.server;
  const initMsg = decodeServerMessage(fromHex(init.hex));
  assert.equal(readTimescale(initMsg.data), 90000);
  const fragMsg = decodeServerMessage(fromHex(frag.hex));
  const t = frag.timing;
  assert.deepEqual(readFragmentTiming(fragMsg.data), {
    decodeTime: t.decode_time,
    duration: t.duration,
    compositionOffset: t.composition_offset,
    presentationTime: t.decode_time + t.composition_offset,
  });
});

test('version 0 boxes: 32-bit tfdt, mdhd, unsigned offsets; the duration from tfhd when trun has none', () => {
  const mdhd = full('mdhd', 0, 0, u32(0), u32(0), u32(15360), u32(0), [0x55, 0xc4, 0, 0]);
  assert.equal(readTimescale(box('moov', box('mvhd', [0, 0, 0, 0]), box('trak', box('tkhd', [0]), box('mdia', mdhd)))), 15360);
  const mdhd1 = full('mdhd', 1, 0, u64(0), u64(0), u32(1000), u64(0), [0, 0, 0, 0]);
  assert.equal(readTimescale(box('moov', box('trak', box('mdia', mdhd1)))), 1000);
  // tfhd with base_data_offset (0x01) and default_sample_duration (0x08); trun with
  // sample flags and an unsigned composition offset only.
  const tfhd = full('tfhd', 0, 0x09, u32(1), u64(0), u32(512));
  const tfdt = full('tfdt', 0, 0, u32(123456));
  const trun = full('trun', 0, 0x001 | 0x400 | 0x800, u32(1), u32(100), u32(0x01010000), u32(1024));
  const frag = new Uint8Array([...box('moof', full('mfhd', 0, 0, u32(1)), box('traf', tfhd, tfdt, trun)), ...box('mdat', [1, 2])]);
  assert.deepEqual(readFragmentTiming(frag), { decodeTime: 123456, duration: 512, compositionOffset: 1024, presentationTime: 124480 });
});

test('missing or cut boxes give null, not an exception', () => {
  assert.equal(readTimescale(new Uint8Array()), null);
  assert.equal(readTimescale(box('moov', box('trak'))), null);
  assert.equal(readFragmentTiming(box('mdat', [1])), null);
  assert.equal(readFragmentTiming(box('moof', box('traf', full('tfhd', 0, 0, u32(1))))), null, 'no tfdt');
  const whole = box('moof', box('traf', full('tfdt', 1, 0, u64(5))));
  assert.equal(readFragmentTiming(whole.subarray(0, whole.length - 3)), null, 'cut short');
  assert.deepEqual(boxes(new Uint8Array([0, 0, 0, 4, 0x61])), [], 'a size below the header');
  // A size of 0 runs to the end; a 64-bit size (1) is read.
  assert.deepEqual(boxes(new Uint8Array([0, 0, 0, 0, 0x6d, 0x64, 0x61, 0x74, 9])), [{ type: 'mdat', start: 8, end: 9 }]);
  const large = new Uint8Array([0, 0, 0, 1, 0x66, 0x72, 0x65, 0x65, ...u64(17), 7]);
  assert.deepEqual(boxes(large), [{ type: 'free', start: 16, end: 17 }]);
});
