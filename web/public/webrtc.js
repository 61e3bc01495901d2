// The WebRTC path (docs/protocol.md, "WebRTC"): on a plain-HTTP page there is no
// WebCodecs, and Media Source Extensions buffer; the browser's own WebRTC receiver
// plays at WebCodecs' latency with its hardware decoder. The page offers to receive
// H.264 (WHEP: POST the offer to the stream's `whep`, the answer comes back with the
// session's URL), and shows the track in a <video>. The server starts each viewer
// at a live keyframe and offers playout-delay 0, so the first picture is live.
//
// Not a Player decoder: the media do not come through the WebSocket. The stream's
// state comes from its /api/stream, read every 2 s; the picture's size, frames and
// latency from the <video> and RTCPeerConnection.getStats().
import { captureNear, LIVE_MS } from './stamp.js';

/** The first connection must be up this soon, or the page plays over the WebSocket. */
export const CONNECT_TIMEOUT_MS = 5000;

/** Whether this browser can try WebRTC at all. */
export function webrtcAvailable() {
  return typeof RTCPeerConnection === 'function' && typeof RTCRtpReceiver === 'function';
}

/** Whether an SDP answer accepted H.264 video. */
export function answerHasH264(sdp) {
  let video = false;
  for (const line of sdp.split(/\r?\n/)) {
    if (line.startsWith('m=')) video = line.startsWith('m=video ') && !line.startsWith('m=video 0 ');
    else if (video && /^a=rtpmap:\d+ H264\/90000/i.test(line)) return true;
  }
  return false;
}

/** The waits between reconnects: quick at first, then every 5 s. */
export function reconnectDelay(attempt) {
  return Math.min(5000, 250 * 2 ** Math.min(attempt, 5));
}

/**
 * Plays a stream over WebRTC. `view` is page.js's (showState, paint, readStamp);
 * `onUnavailable(reason)` is called once when WebRTC cannot play here at all (no
 * H.264 in this browser's WebRTC, or the server has it off), so the page falls back
 * to the WebSocket player.
 */
export class WebRtcPlayer {
  constructor({ view, onUnavailable, base = location.href }) {
    this.view = view;
    this.onUnavailable = onUnavailable;
    this.whep = new URL('whep', base).href;
    this.api = new URL('api/stream', base).href;
    this.video = document.createElement('video');
    this.video.muted = true;
    this.video.autoplay = true;
    this.video.playsInline = true;
    this.video.setAttribute('aria-label', 'live video');
    this.pc = null;
    this.session = null;
    this.attempt = 0;
    this.stopped = false;
    this.connectedOnce = false;
    this.stats = {
      decoder: 'webrtc', endpoint: 'whep', state: 'connecting', framesPainted: 0, framesDecoded: 0,
      firstPaintMs: null, firstLiveMs: null, firstLatencyMs: null, lastFrameNumber: null, latencyMs: null, width: 0, height: 0,
      codec: 'H264', reconnects: 0, packetsLost: 0, nacks: 0, jitterBufferMs: null, decoderImplementation: null,
      framesDropped: 0, sourceReason: null, error: null, sequenceGaps: 0, framesMissing: 0, endpointSwitches: 0,
      keyframeRequests: 0, fps: 0, bitrateKbps: 0, clockOffsetMs: 0, rttMs: null, networkLatencyMs: null,
      framesSkippedByServer: 0,
    };
    this.lastBytes = null;
  }

  start() {
    this.connect();
    this.statusTimer = setInterval(() => this.pollStatus(), 2000);
    this.statsTimer = setInterval(() => this.pollStats(), 500);
    this.watchFrames();
  }

  setState(state, reason = null) {
    this.stats.state = state;
    this.view.showState(state, reason);
  }

  async connect() {
    if (this.stopped) return;
    this.setState(this.connectedOnce ? 'reconnecting' : 'connecting');
    const pc = new RTCPeerConnection({ bundlePolicy: 'max-bundle' });
    this.pc = pc;
    const transceiver = pc.addTransceiver('video', { direction: 'recvonly' });
    // H.264 first (the only codec nalcast sends), when the browser lets the page say so.
    const caps = RTCRtpReceiver.getCapabilities?.('video');
    const h264 = caps?.codecs.filter((c) => /h264/i.test(c.mimeType)) ?? [];
    if (!caps || h264.length === 0) {
      this.giveUp('this browser\'s WebRTC has no H.264');
      return;
    }
    try { transceiver.setCodecPreferences?.(h264); } catch { /* older browsers: the offer lists all */ }
    pc.ontrack = (e) => {
      this.video.srcObject = e.streams[0] ?? new MediaStream([e.track]);
      this.video.play?.().catch(() => {});
    };
    pc.onconnectionstatechange = () => {
      if (pc !== this.pc) return;
      if (pc.connectionState === 'failed' || pc.connectionState === 'closed') this.retry('connection lost');
    };
    try {
      const offer = await pc.createOffer();
      await pc.setLocalDescription(offer);
      // Sent at once, without waiting for this side's candidates: the server is
      // ICE-lite and learns the viewer's address from its checks, so the candidates
      // would only cost the time to gather them.
      const res = await fetch(this.whep, {
        method: 'POST', headers: { 'Content-Type': 'application/sdp' }, body: offer.sdp,
      });
      const text = await res.text();
      if (pc !== this.pc) return;
      if (res.status === 404 || res.status === 406 || res.status === 415) {
        this.giveUp(text.trim() || `the server answered ${res.status}`);
        return;
      }
      if (res.status !== 201) {
        this.retry(text.trim() || `the server answered ${res.status}`);
        return;
      }
      if (!answerHasH264(text)) {
        this.giveUp('the answer has no H.264');
        return;
      }
      this.session = res.headers.get('Location') ? new URL(res.headers.get('Location'), this.whep).href : null;
      await pc.setRemoteDescription({ type: 'answer', sdp: text });
      // A firewall that drops the UDP port leaves ICE checking for half a minute:
      // if the first connection is not up soon, play over the WebSocket instead.
      if (!this.connectedOnce) {
        clearTimeout(this.connectTimer);
        this.connectTimer = setTimeout(() => {
          if (pc === this.pc && pc.connectionState !== 'connected' && !this.connectedOnce) {
            this.giveUp(`no WebRTC connection within ${CONNECT_TIMEOUT_MS / 1000} s (is the server's UDP port reachable?)`);
          }
        }, CONNECT_TIMEOUT_MS);
      }
    } catch (e) {
      if (pc === this.pc) this.retry(String(e?.message ?? e));
    }
  }

  /** WebRTC cannot play here: hand over to the WebSocket player, once. */
  giveUp(reason) {
    this.stop();
    this.stats.error = reason;
    this.onUnavailable?.(reason);
  }

  retry(reason) {
    this.close();
    if (this.stopped) return;
    this.stats.reconnects++;
    this.setState('reconnecting', reason);
    const delay = reconnectDelay(this.attempt++);
    this.retryTimer = setTimeout(() => this.connect(), delay);
  }

  close() {
    const { pc, session } = this;
    this.pc = null;
    this.session = null;
    if (session) fetch(session, { method: 'DELETE', keepalive: true }).catch(() => {});
    pc?.close();
  }

  stop() {
    this.stopped = true;
    clearInterval(this.statusTimer);
    clearInterval(this.statsTimer);
    clearTimeout(this.retryTimer);
    clearTimeout(this.connectTimer);
    this.close();
  }

  /** Counts painted pictures (requestVideoFrameCallback) and reads their stamps. */
  watchFrames() {
    if (typeof this.video.requestVideoFrameCallback !== 'function') return;
    const onFrame = (now) => {
      if (this.stopped) return;
      const { stats } = this;
      stats.framesPainted++;
      if (stats.framesPainted === 1) {
        this.view.paint({ element: this.video });
        // Since navigation, as the WebSocket player counts it.
        stats.firstPaintMs = Math.round(now);
      }
      this.connectedOnce = true;
      this.attempt = 0;
      stats.width = this.video.videoWidth;
      stats.height = this.video.videoHeight;
      if (stats.state !== 'live' && stats.state !== 'source-lost') this.setState('live');
      this.readStamp(now);
      this.video.requestVideoFrameCallback(onFrame);
    };
    this.video.requestVideoFrameCallback(onFrame);
  }

  readStamp(now) {
    const stamp = this.view.readStamp();
    if (!stamp) return;
    const { stats } = this;
    const nowUs = (performance.timeOrigin + performance.now()) * 1000;
    stats.lastFrameNumber = stamp.frame;
    stats.latencyMs = Math.round((nowUs - captureNear(stamp.low40, nowUs)) / 100) / 10;
    // The first stamped picture's age: with a camera that cannot make keyframes,
    // the wait for its next one is the first picture's time less this.
    if (stats.firstLatencyMs === null) stats.firstLatencyMs = stats.latencyMs;
    if (stats.firstLiveMs === null && stats.latencyMs <= LIVE_MS) stats.firstLiveMs = Math.round(now);
  }

  async pollStats() {
    const pc = this.pc;
    if (!pc) return;
    const report = await pc.getStats().catch(() => null);
    report?.forEach((s) => {
      if (s.type !== 'inbound-rtp' || s.kind !== 'video') return;
      const { stats } = this;
      stats.framesDecoded = s.framesDecoded ?? 0;
      stats.framesDropped = s.framesDropped ?? 0;
      stats.packetsLost = s.packetsLost ?? 0;
      stats.nacks = s.nackCount ?? 0;
      stats.keyframeRequests = (s.pliCount ?? 0) + (s.firCount ?? 0);
      stats.decoderImplementation = s.decoderImplementation ?? null;
      stats.fps = Math.round(s.framesPerSecond ?? 0);
      if (s.jitterBufferEmittedCount) {
        stats.jitterBufferMs = Math.round((s.jitterBufferDelay / s.jitterBufferEmittedCount) * 10000) / 10;
      }
      if (this.lastBytes) {
        const dt = (s.timestamp - this.lastBytes.t) / 1000;
        if (dt > 0) stats.bitrateKbps = Math.round(((s.bytesReceived - this.lastBytes.b) * 8) / dt / 1000);
      }
      this.lastBytes = { t: s.timestamp, b: s.bytesReceived };
    });
    if (this.stats.framesPainted > 0 && performance.now() - (this.lastStampAt ?? 0) > 500) {
      this.lastStampAt = performance.now();
      this.readStamp(performance.now());
    }
  }

  /** The stream's state (source lost, ended) from the server. */
  async pollStatus() {
    const res = await fetch(this.api, { cache: 'no-store' }).catch(() => null);
    if (!res?.ok) return;
    const info = await res.json().catch(() => null);
    const state = info?.state;
    if (state === 'source-lost' || state === 'ended') {
      this.stats.sourceReason = info.reason ?? null;
      this.setState(state, info.reason ?? null);
    } else if (this.stats.state === 'source-lost' && state === 'live') {
      this.setState('live');
    }
  }

  report() {
    return { ...this.stats };
  }
}
