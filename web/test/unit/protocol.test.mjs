// The page's side of the framed dialect, on the byte vectors the Rust tests also use
// (docs/protocol-vectors.json, checked by crates/core/tests/protocol_vectors.rs).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import {
  decodeServerMessage, encodePing, encodeKeyframeRequest,
  MSG_STREAM_INFO, MSG_ACCESS_UNIT, MSG_SKIPPED, MSG_STATUS, MSG_PONG, MSG_INIT_SEGMENT, MSG_FRAGMENT,
} from '../../public/protocol.js';

const vectors = JSON.parse(readFileSync(new URL('../../../docs/protocol-vectors.json', import.meta.url), 'utf8'));
// /ws/fmp4's messages: checked here only until the Rust side takes them (see its `about`).
const server = [...vectors.server, ...vectors.fmp4.server];
const invalidVectors = [...vectors.invalid, ...vectors.fmp4.invalid];

function fromHex(hex) {
  const clean = hex.replace(/\s+/g, '');
  assert.match(clean, /^([0-9a-f]{2})*$/i, `hex: ${hex}`);
  return Uint8Array.from(clean.match(/../g) ?? [], (h) => parseInt(h, 16));
}

/** What decodeServerMessage should return for a vector's `message`. */
function expected(message) {
  switch (message.type) {
    case 'access-unit':
    case 'fragment':
      return {
        type: message.type,
        seq: message.seq,
        captureUs: message.capture_us,
        key: message.keyframe,
        catchUp: message.catch_up,
        data: fromHex(message.data),
      };
    case 'pong':
      return { type: 'pong', t: message.t, serverUs: message.server_us };
    case 'init-segment':
      return { type: 'init-segment', data: fromHex(message.data) };
    default:
      return message;
  }
}

/** A message with its data as an array: a subarray and a fresh Uint8Array compare alike. */
const plain = (message) => (message.data ? { ...message, data: [...message.data] } : message);

/** The same bytes at an offset into a larger buffer, as a message may arrive. */
function offset(bytes) {
  const buffer = new Uint8Array(bytes.length + 3).fill(0xee);
  buffer.set(bytes, 3);
  return buffer.subarray(3);
}

test('every server message decodes to the fields of its vector', () => {
  for (const v of server) {
    const bytes = fromHex(v.hex);
    const got = decodeServerMessage(bytes);
    assert.deepEqual(plain(got), plain(expected(v.message)), v.name);
    assert.deepEqual(decodeServerMessage(offset(bytes)), got, `${v.name}, at an offset in its buffer`);
  }
});

test('the vectors cover every server message type and every way to be invalid', () => {
  const types = new Set(server.map((v) => fromHex(v.hex)[0]));
  assert.deepEqual([...types].sort(), [
    MSG_STREAM_INFO, MSG_ACCESS_UNIT, MSG_SKIPPED, MSG_STATUS, MSG_PONG, MSG_INIT_SEGMENT, MSG_FRAGMENT,
  ]);
  const errors = new Set(invalidVectors.map((v) => v.error));
  assert.deepEqual([...errors].sort(), ['bad-json', 'empty', 'too-short', 'unknown-type']);
});

test('invalid messages are reported, not thrown', () => {
  for (const v of invalidVectors) {
    assert.deepEqual(decodeServerMessage(fromHex(v.hex)), { type: 'invalid', error: v.error }, v.name);
  }
});

test('an access unit hands its data on without copying', () => {
  const v = vectors.server.find((x) => x.message.type === 'access-unit' && x.message.data !== '');
  const bytes = fromHex(v.hex);
  const unit = decodeServerMessage(bytes);
  assert.equal(unit.data.buffer, bytes.buffer);
});

test('init segments and fragments hand their data on without copying', () => {
  for (const type of ['init-segment', 'fragment']) {
    const v = server.find((x) => x.message.type === type && x.message.data !== '');
    const bytes = fromHex(v.hex);
    assert.equal(decodeServerMessage(bytes).data.buffer, bytes.buffer, type);
  }
});

test('client messages encode to the text of their vector', () => {
  const kinds = new Set();
  for (const v of vectors.client) {
    kinds.add(v.message.type);
    const text = v.message.type === 'ping' ? encodePing(v.message.t) : encodeKeyframeRequest();
    assert.equal(text, v.text, v.name);
  }
  assert.deepEqual([...kinds].sort(), ['keyframe', 'ping']);
});
