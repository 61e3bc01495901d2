// The few fields of fragmented MP4 (ISO/IEC 14496-12) the page reads itself: the
// track's timescale from the init segment, and a fragment's decode time, duration and
// composition offset. The video element reports the picture on screen by its
// presentation time (requestVideoFrameCallback's mediaTime); these fields map it back
// to the fragment, whose message header carries the capture time. Hand-written: a box
// walk of a few dozen lines, where an MP4 library would be a hundred kilobytes.

/** The boxes directly inside `bytes` (a Uint8Array): [{type, start, end}] (payload range). */
export function boxes(bytes) {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out = [];
  let at = 0;
  while (at + 8 <= bytes.length) {
    let size = view.getUint32(at);
    const type = String.fromCharCode(bytes[at + 4], bytes[at + 5], bytes[at + 6], bytes[at + 7]);
    let header = 8;
    if (size === 1) {
      if (at + 16 > bytes.length) break;
      size = Number(view.getBigUint64(at + 8));
      header = 16;
    } else if (size === 0) {
      size = bytes.length - at;
    }
    if (size < header || at + size > bytes.length) break; // truncated: stop, keep what was whole
    out.push({ type, start: at + header, end: at + size });
    at += size;
  }
  return out;
}

/** The payload of the first box along `path` (['moof', 'traf', 'tfdt']); null when absent. */
export function findBox(bytes, path) {
  let cur = bytes;
  for (const type of path) {
    const box = boxes(cur).find((b) => b.type === type);
    if (!box) return null;
    cur = cur.subarray(box.start, box.end);
  }
  return cur;
}

const viewOf = (b) => new DataView(b.buffer, b.byteOffset, b.byteLength);

/** The track's timescale (ticks per second) from an init segment's mdhd; null when absent. */
export function readTimescale(init) {
  const mdhd = findBox(init, ['moov', 'trak', 'mdia', 'mdhd']);
  if (!mdhd || mdhd.length < 4) return null;
  const version = mdhd[0];
  const at = version === 1 ? 4 + 16 : 4 + 8; // after creation and modification times
  if (mdhd.length < at + 4) return null;
  return viewOf(mdhd).getUint32(at) || null;
}

/**
 * The first sample's timing in a fragment (moof + mdat), in timescale ticks:
 * {decodeTime, duration, compositionOffset, presentationTime}; duration is null
 * when neither the trun nor the tfhd gives one. Null when there is no moof/traf/tfdt.
 */
export function readFragmentTiming(fragment) {
  const traf = findBox(fragment, ['moof', 'traf']);
  if (!traf) return null;
  const inTraf = (type) => {
    const box = boxes(traf).find((b) => b.type === type);
    return box ? traf.subarray(box.start, box.end) : null;
  };
  const tfdt = inTraf('tfdt');
  if (!tfdt || tfdt.length < 8) return null;
  const tv = viewOf(tfdt);
  const decodeTime = tfdt[0] === 1 && tfdt.length >= 12 ? Number(tv.getBigUint64(4)) : tv.getUint32(4);

  let duration = null;
  const tfhd = inTraf('tfhd');
  if (tfhd && tfhd.length >= 8) {
    const flags = viewOf(tfhd).getUint32(0) & 0xffffff;
    let at = 8; // version/flags, track_ID
    if (flags & 0x01) at += 8; // base_data_offset
    if (flags & 0x02) at += 4; // sample_description_index
    if (flags & 0x08 && tfhd.length >= at + 4) duration = viewOf(tfhd).getUint32(at);
  }

  let compositionOffset = 0;
  const trun = inTraf('trun');
  if (trun && trun.length >= 8) {
    const v = viewOf(trun);
    const version = trun[0];
    const flags = v.getUint32(0) & 0xffffff;
    const count = v.getUint32(4);
    let at = 8;
    if (flags & 0x001) at += 4; // data_offset
    if (flags & 0x004) at += 4; // first_sample_flags
    if (count > 0) {
      if (flags & 0x100 && trun.length >= at + 4) { duration = v.getUint32(at); at += 4; }
      if (flags & 0x200) at += 4; // sample_size
      if (flags & 0x400) at += 4; // sample_flags
      if (flags & 0x800 && trun.length >= at + 4) {
        compositionOffset = version === 0 ? v.getUint32(at) : v.getInt32(at);
      }
    }
  }
  return { decodeTime, duration, compositionOffset, presentationTime: decodeTime + compositionOffset };
}
