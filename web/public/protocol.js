// The framed WebSocket dialect on /ws and its fMP4 variant on /ws/fmp4
// (docs/protocol.md), the page's side of crates/core/src/protocol.rs: decoding what
// the server sends, encoding what the page sends. Pure functions of bytes and strings; both sides are checked against the same
// byte vectors, docs/protocol-vectors.json.

export const MSG_STREAM_INFO = 0x01;
export const MSG_ACCESS_UNIT = 0x02;
export const MSG_SKIPPED = 0x03;
export const MSG_STATUS = 0x04;
export const MSG_PONG = 0x05;
/** /ws/fmp4 only: ftyp + moov for the Media Source Extensions path. */
export const MSG_INIT_SEGMENT = 0x06;
/** /ws/fmp4 only: one moof + mdat (one access unit), with the access unit's header. */
export const MSG_FRAGMENT = 0x07;

export const FLAG_KEYFRAME = 0x01;
export const FLAG_CATCH_UP = 0x02;

/** Type, flags, sequence number, capture time: the bytes before an access unit's (or a fragment's) data. */
export const AU_HEADER_LEN = 14;
const SKIPPED_LEN = 5;
const PONG_LEN = 17;

const utf8 = new TextDecoder();

/**
 * Decodes one binary message from the server (`bytes`: a Uint8Array). Returns one of
 *   {type: 'stream-info', info}   info: the JSON object ({codec, width, height, fps, source, baseline, profile})
 *   {type: 'access-unit', seq, captureUs, key, catchUp, data}   data: a view into `bytes`
 *   {type: 'init-segment', data}  data: ftyp + moov, a view into `bytes`
 *   {type: 'fragment', seq, captureUs, key, catchUp, data}   data: moof + mdat, a view into `bytes`
 *   {type: 'skipped', frames}
 *   {type: 'status', status}      status: the JSON object ({state, reason?})
 *   {type: 'pong', t, serverUs}
 *   {type: 'invalid', error}      error: 'empty' | 'too-short' | 'unknown-type' | 'bad-json'
 * The fields of the JSON objects are left for the caller to check: a page from an
 * older or newer server plays on with the fields it knows.
 */
export function decodeServerMessage(bytes) {
  if (bytes.length === 0) return invalid('empty');
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  switch (bytes[0]) {
    case MSG_STREAM_INFO: {
      const info = readJson(bytes);
      return info ? { type: 'stream-info', info } : invalid('bad-json');
    }
    case MSG_ACCESS_UNIT:
    case MSG_FRAGMENT: {
      // A fragment carries the same header as an access unit; only its data differs.
      if (bytes.length < AU_HEADER_LEN) return invalid('too-short');
      const flags = bytes[1];
      return {
        type: bytes[0] === MSG_FRAGMENT ? 'fragment' : 'access-unit',
        seq: view.getUint32(2, true),
        // Microseconds since the epoch stay exact in a double until the year 2255.
        captureUs: Number(view.getBigUint64(6, true)),
        key: (flags & FLAG_KEYFRAME) !== 0,
        catchUp: (flags & FLAG_CATCH_UP) !== 0,
        data: bytes.subarray(AU_HEADER_LEN),
      };
    }
    case MSG_INIT_SEGMENT:
      return { type: 'init-segment', data: bytes.subarray(1) };
    case MSG_SKIPPED:
      if (bytes.length < SKIPPED_LEN) return invalid('too-short');
      return { type: 'skipped', frames: view.getUint32(1, true) };
    case MSG_STATUS: {
      const status = readJson(bytes);
      return status ? { type: 'status', status } : invalid('bad-json');
    }
    case MSG_PONG:
      if (bytes.length < PONG_LEN) return invalid('too-short');
      return {
        type: 'pong',
        t: view.getFloat64(1, true),
        serverUs: Number(view.getBigUint64(9, true)),
      };
    default:
      return invalid('unknown-type');
  }
}

/** A clock probe carrying `t` (the page's clock, ms), answered with a pong echoing it. */
export function encodePing(t) {
  return JSON.stringify({ type: 'ping', t });
}

/** Asks the server for a keyframe. */
export function encodeKeyframeRequest() {
  return JSON.stringify({ type: 'keyframe' });
}

function invalid(error) {
  return { type: 'invalid', error };
}

/** The JSON object after the type byte; null when it is not one. */
function readJson(bytes) {
  try {
    const value = JSON.parse(utf8.decode(bytes.subarray(1)));
    return value && typeof value === 'object' ? value : null;
  } catch {
    return null;
  }
}
