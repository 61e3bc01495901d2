// Media Source Extensions: the browser's own H.264 decoder (hardware where it has one)
// on plain-HTTP pages, where WebCodecs is not offered. It plays fragmented MP4 from
// /ws/fmp4 (docs/protocol.md) into a <video>, behind the interface of decoders.js:
//   new MseDecoder(onPicture, onError)
//   name         'mse'
//   presents     true: a picture reported is already on screen (the video element
//                paints at its own pace), the player paints it at once
//   element      the <video> the view puts on the stage
//   configure(info)    stream-info: the codec string chooses the SourceBuffer's type
//   init(bytes)        an init segment (ftyp + moov) for the codec of the last configure
//   decode(unit)       a fragment (unit.data: moof + mdat, one sample); false until an
//                      init segment came
//   backlog, warm, close(), stats()
// onPicture(picture, unit) runs for every picture the video element presents
// (requestVideoFrameCallback); `unit` is the fragment it came from, found by its
// presentation time. The player's latency to paint is computed from that unit.
import { readFragmentTiming, readTimescale } from './fmp4.js';
import {
  CaptureTimes, Cushion, Reorder, liveEdgeAction, rangesOf, stallWidens, trimPoint,
} from './live-edge.js';

const DEFAULT_TIMESCALE = 90000;
/** A decode time this far beyond the expected one means a new timeline (a reconnect to a restarted server). */
const TIMELINE_JUMP_S = 5;
/** Keep the playhead live between appends too (a stalled or paused video). */
const POLICY_EVERY_MS = 250;
/** After a seek the video waits for its decoder this long without it counting as a stall. */
const SETTLE_MS = 1000;
/** Keyframe times kept (more than the buffer ever holds). */
const MAX_KEY_TIMES = 64;

/** The MediaSource constructor here: ManagedMediaSource (Safari iOS) or MediaSource; null without MSE. */
export function mediaSourceClass(scope = globalThis) {
  return scope.ManagedMediaSource ?? scope.MediaSource ?? null;
}

/** The SourceBuffer type for an RFC 6381 codec string. */
export function mimeOf(codec) {
  return `video/mp4; codecs="${codec}"`;
}

export class MseDecoder {
  /** Whether this browser has MSE at all. */
  static supported() {
    return mediaSourceClass() !== null;
  }

  /** Whether this browser's MSE plays the codec. */
  static canPlay(codec) {
    const MS = mediaSourceClass();
    return Boolean(MS && typeof codec === 'string' && codec && MS.isTypeSupported(mimeOf(codec)));
  }

  constructor(onPicture, onError) {
    this.name = 'mse';
    this.presents = true;
    this.onPicture = onPicture;
    this.onError = onError;
    const video = document.createElement('video');
    video.muted = true;
    video.defaultMuted = true;
    video.playsInline = true;
    video.autoplay = true;
    video.controls = false;
    // ManagedMediaSource plays only with AirPlay off or an alternative source given.
    video.disableRemotePlayback = true;
    video.setAttribute('aria-label', 'live video');
    this.element = video;
    this.ms = null;
    this.sb = null;
    this.codec = null;
    this.initSegment = null;
    this.timescale = DEFAULT_TIMESCALE;
    this.ops = []; // {kind: 'append', data} | {kind: 'remove', start, end} | {kind: 'type', codec}
    this.current = null; // the op the SourceBuffer is working on
    this.captures = new CaptureTimes();
    this.reorder = new Reorder();
    this.keyTimes = []; // s: presentation times of the keyframes appended, where a trim may end
    this.nextDecodeTime = null; // ticks: where the next fragment should start
    this.newest = null; // s: presentation time of the newest sample appended
    this.inBurst = false;
    this.burstOver = false;
    this.frame = 1 / 30; // s: duration of the newest sample
    this.trimming = false;
    this.presented = 0;
    this.seeks = 0;
    this.behind = null;
    this.closed = false;
    this.cushion = new Cushion(performance.now());
    this.stalls = 0;
    this.lastSeekAt = -Infinity;
    video.addEventListener('error', () => this.fail(video.error));
    video.addEventListener('waiting', () => {
      // Ran dry while live: play further from the edge. Not for a seek's wait, nor
      // while catching up (the decoder working through a burst is not a late arrival).
      const now = performance.now();
      if (this.presented > 0 && !video.seeking) {
        this.stalls++;
        if (stallWidens({ playbackRate: video.playbackRate, sinceSeekMs: now - this.lastSeekAt, settleMs: SETTLE_MS })) {
          this.cushion.stalled(now);
        }
      }
      this.keepLive();
    });
    // A stall may be a gap or a playhead left behind: see to it now.
    for (const ev of ['stalled', 'canplay']) video.addEventListener(ev, () => this.keepLive());
    this.policyTimer = setInterval(() => this.keepLive(), POLICY_EVERY_MS);
    this.watchFrames();
  }

  configure(info) {
    const codec = info.codec;
    if (!this.ms) {
      this.open(codec);
    } else if (codec !== this.codec) {
      // A new profile or level (a restarted camera): the same SourceBuffer takes it
      // after changeType; without it, start over with a new MediaSource.
      if (this.sb && typeof this.sb.changeType === 'function') this.enqueue({ kind: 'type', codec });
      else this.open(codec);
    }
    this.codec = codec;
    // The init segment that follows is for this stream.
    this.initSegment = null;
  }

  open(codec) {
    const MS = mediaSourceClass();
    const ms = new MS();
    this.ms = ms;
    this.sb = null;
    this.ops = [];
    this.captures.clear();
    this.reorder.clear();
    this.keyTimes = [];
    this.nextDecodeTime = null;
    this.newest = null;
    ms.addEventListener('sourceopen', () => {
      if (this.ms !== ms || this.closed) return;
      try {
        const sb = ms.addSourceBuffer(mimeOf(this.codec ?? codec));
        sb.mode = 'segments';
        sb.addEventListener('updateend', () => {
          if (this.sb !== sb) return;
          this.trimming = false;
          const appended = this.current?.kind === 'append';
          this.current = null;
          if (!this.inBurst) this.keepLive(appended);
          this.pump();
        });
        sb.addEventListener('error', () => this.fail(new Error('SourceBuffer append failed')));
        this.sb = sb;
        this.pump();
      } catch (e) {
        this.fail(e);
      }
    });
    const video = this.element;
    if (typeof globalThis.ManagedMediaSource === 'function' && ms instanceof globalThis.ManagedMediaSource) {
      video.srcObject = ms;
    } else {
      // Needs `media-src blob:` in the page's Content-Security-Policy.
      video.src = URL.createObjectURL(ms);
    }
  }

  /** Appends `bytes` (ftyp + moov) before the fragments that follow. */
  init(bytes) {
    if (!this.ms) return;
    this.initSegment = bytes;
    this.timescale = readTimescale(bytes) ?? DEFAULT_TIMESCALE;
    this.enqueue({ kind: 'append', data: bytes });
  }

  /** Appends not made yet. */
  get backlog() {
    return this.ops.length;
  }

  /** The browser's decoder is up to speed at once. */
  get warm() {
    return true;
  }

  decode(unit) {
    if (!this.initSegment || this.closed) return false;
    const timing = readFragmentTiming(unit.data);
    if (!timing) throw new Error('fragment without a decode time (tfdt)');
    const ts = this.timescale;
    const expected = this.nextDecodeTime;
    if (expected !== null && (timing.decodeTime < expected || timing.decodeTime > expected + TIMELINE_JUMP_S * ts)) {
      // A new timeline (a restarted server counts from 0 again): what is buffered
      // belongs to another time, so drop it; the playhead follows the new data.
      this.enqueue({ kind: 'remove', start: 0, end: Infinity });
      this.captures.clear();
      this.reorder.clear();
      this.keyTimes = [];
      this.newest = null;
    }
    const duration = timing.duration ?? Math.round(ts / 30);
    this.nextDecodeTime = timing.decodeTime + duration;
    this.frame = duration / ts;
    const start = timing.presentationTime / ts;
    this.captures.add(start, start + duration / ts, unit);
    this.reorder.add(start, start + duration / ts);
    this.newest = Math.max(this.newest ?? start, start);
    if (unit.key) {
      this.keyTimes.push(start);
      if (this.keyTimes.length > MAX_KEY_TIMES) this.keyTimes.shift();
    }
    if (unit.catchUp) {
      this.inBurst = true;
    } else if (this.inBurst) {
      this.inBurst = false;
      this.burstOver = true;
    }
    this.enqueue({ kind: 'append', data: unit.data });
    return true;
  }

  enqueue(op) {
    this.ops.push(op);
    this.pump();
  }

  /** Makes the next append or removal, when the SourceBuffer is free. */
  pump() {
    const sb = this.sb;
    if (!sb || sb.updating || this.closed || this.ms.readyState !== 'open') return;
    const op = this.ops.shift();
    if (!op) return;
    this.current = op;
    try {
      if (op.kind === 'append') {
        sb.appendBuffer(op.data);
      } else if (op.kind === 'remove') {
        const end = Math.min(op.end, this.ms.duration || op.end);
        if (end > op.start) sb.remove(op.start, end);
        else this.pump();
      } else {
        sb.changeType(mimeOf(op.codec));
        this.pump();
      }
    } catch (e) {
      if (e.name === 'QuotaExceededError' && op.kind === 'append') {
        // The buffer is full: drop what lies before the last keyframe at least half a
        // second behind the playhead, then try the append again.
        const keep = trimPoint(this.element.currentTime - 0.5, this.keyTimes);
        this.ops.unshift(op);
        if (keep !== null && keep > 0 && !this.trimming) {
          this.trimming = true;
          this.current = { kind: 'remove' };
          sb.remove(0, keep);
          return;
        }
        this.ops.shift();
      }
      this.fail(e);
    }
  }

  /** Whether appends are queued or under way. */
  appending() {
    return this.ops.some((o) => o.kind === 'append') || (this.sb?.updating && this.current?.kind === 'append');
  }

  /**
   * Keeps the playhead at the live edge (live-edge.js), the buffer trimmed, the video
   * playing; `steer`: a sample was just appended, set the rate.
   */
  keepLive(steer = false) {
    const sb = this.sb;
    const video = this.element;
    if (!sb || this.closed || this.ms.readyState !== 'open') return;
    let ranges;
    try {
      ranges = rangesOf(sb.buffered);
    } catch {
      return; // the SourceBuffer was removed
    }
    const act = liveEdgeAction({
      currentTime: video.currentTime,
      ranges,
      newest: this.newest,
      frame: this.frame,
      reorder: this.reorder.s,
      steer,
      playbackRate: video.playbackRate,
      // Only once the whole burst is in the buffer: its end is the live edge.
      burstOver: this.burstOver && !this.appending(),
      cushion: this.cushion.at(performance.now()),
    });
    if (ranges.length && !this.appending()) this.burstOver = false;
    this.behind = act.behind;
    if (act.seekTo !== null) {
      video.currentTime = act.seekTo;
      this.seeks++;
      this.lastSeekAt = performance.now();
    }
    if (act.playbackRate !== video.playbackRate) video.playbackRate = act.playbackRate;
    const trimTo = act.trimBefore === null ? null : trimPoint(act.trimBefore, this.keyTimes);
    if (trimTo !== null && trimTo > ranges[0][0] && !this.trimming && !this.ops.some((o) => o.kind === 'remove')) {
      this.trimming = true;
      this.enqueue({ kind: 'remove', start: 0, end: trimTo });
    }
    if (video.paused && ranges.length) video.play().catch(() => {});
  }

  /** Reports each picture the video presents, with the fragment it came from. */
  watchFrames() {
    const video = this.element;
    if (typeof video.requestVideoFrameCallback === 'function') {
      const onFrame = (now, meta) => {
        if (this.closed) return;
        video.requestVideoFrameCallback(onFrame);
        this.presentedAt(meta.mediaTime, meta.width, meta.height);
      };
      video.requestVideoFrameCallback(onFrame);
      return;
    }
    // Without requestVideoFrameCallback: a picture per change of the playhead.
    let last = -1;
    const poll = () => {
      if (this.closed) return;
      requestAnimationFrame(poll);
      if (video.currentTime !== last && video.readyState >= 2) {
        last = video.currentTime;
        this.presentedAt(last, video.videoWidth, video.videoHeight);
      }
    };
    requestAnimationFrame(poll);
  }

  presentedAt(mediaTime, width, height) {
    this.presented++;
    const video = this.element;
    const unit = this.captures.at(mediaTime) ?? undefined;
    this.onPicture({
      width: width || video.videoWidth,
      height: height || video.videoHeight,
      element: video,
      draw: (canvas) => canvas.getContext('2d').drawImage(video, 0, 0, canvas.width, canvas.height),
      release() {},
    }, unit && { ...unit, catchUp: false });
  }

  /** Buffer and playback figures for the stats. */
  stats() {
    const q = this.element.getVideoPlaybackQuality?.();
    return {
      bufferedAheadS: this.behind === null ? null : Math.round(this.behind * 1000) / 1000,
      videoFramesDropped: q ? q.droppedVideoFrames : null,
      videoFramesTotal: q ? q.totalVideoFrames : null,
      playbackRate: this.element.playbackRate,
      liveSeeks: this.seeks,
      liveStalls: this.stalls,
      cushionS: this.cushion.s,
      reorderS: Math.round(this.reorder.s * 1000) / 1000,
    };
  }

  fail(e) {
    if (this.closed) return;
    const error = e instanceof Error ? e : new Error(e?.message || `video error ${e?.code ?? ''}`.trim());
    // Whether MSE ever showed a picture here: if not, it cannot play this stream at all
    // (an unsupported codec, or a Content-Security-Policy without media-src blob:).
    error.beforeFirstPicture = this.presented === 0;
    error.mse = true;
    this.onError(error);
  }

  close() {
    this.closed = true;
    clearInterval(this.policyTimer);
    this.ops = [];
    // The last picture stays on the stage until the next decoder paints.
    this.element.pause();
  }
}
