// The player, apart from the DOM: it puts the parts together (the connection,
// connection.js; the decoder choice and what failed here, decoder-choice.js; the
// playback policy, playback.js; sequence continuity, sequence.js) and keeps the
// stats. Everything it touches comes in through the constructor (socket and decoder
// factories, clock, timers, view), so node tests can drive it without a browser.
import { Connection, ClockSync } from './connection.js';
import { chooseDecoder, endpointOf, explainUnplayable, firstEndpoint } from './decoder-choice.js';
import { Painter, RateWindow, tooFarBehind } from './playback.js';
import { decodeServerMessage, encodeKeyframeRequest, encodePing } from './protocol.js';
import { SequenceTracker } from './sequence.js';
import { captureNear, LIVE_MS } from './stamp.js';

/** The stats `window.nalcast.stats()` reports, as they are before connecting. */
function initialStats() {
  return {
    decoder: null, state: 'connecting', width: 0, height: 0, codec: null,
    framesReceived: 0, framesDecoded: 0, framesPainted: 0, framesDropped: 0, framesSkippedByServer: 0,
    // Gaps in the frame numbers, the numbers they skipped, the last one
    // ({expected, got, resumedAt: seq of the keyframe decoding resumed at}).
    sequenceGaps: 0, framesMissing: 0, lastGap: null, keyframeRequests: 0,
    lastFrameNumber: null, latencyMs: null, networkLatencyMs: null, fps: 0, bitrateKbps: 0,
    clockOffsetMs: 0, rttMs: null, reconnects: 0, firstPaintMs: null, firstLiveMs: null, error: null, sourceReason: null,
    // The WebSocket endpoint in use ('ws' or 'ws/fmp4') and how often the page changed it.
    endpoint: null, endpointSwitches: 0,
    // MSE only (mse.js): how far the playhead is behind the newest data, the video
    // element's own dropped and total frames, its rate, and seeks to the live edge.
    bufferedAheadS: null, videoFramesDropped: null, videoFramesTotal: null, playbackRate: null, liveSeeks: null,
  };
}

/**
 * The player. Collaborators:
 *   wanted          'auto' | 'webcodecs' | 'mse' | 'broadway' (the page's ?decoder=)
 *   secure          whether the page is a secure context
 *   webcodecs()     whether this browser has WebCodecs (here)
 *   hasMse()        whether this browser has Media Source Extensions
 *   hls             the LL-HLS playlist's URL, offered where the page cannot play
 *   mse(codec)      whether its MSE plays this codec
 *   newDecoder(kind, onPicture, onError)    a decoder of decoders.js's interface (mse.js's for 'mse')
 *   openSocket(endpoint)   a WebSocket to that endpoint ('ws' or 'ws/fmp4', relative to
 *                   the page; binaryType 'arraybuffer'); the player sets its onopen,
 *                   onmessage and onclose
 *   now()           ms since the page started (performance.now)
 *   timeOrigin      the wall-clock time (ms since the epoch) `now` counts from
 *   timers          {setTimeout, clearTimeout, setInterval, clearInterval}
 *   view            the page: showState(state, reason), showUnplayable(explanation | null),
 *                   decoderChanged(), paint(picture), readStamp() -> {frame, low40} | null
 */
export class Player {
  constructor({
    wanted = 'auto', secure, webcodecs, hasMse = () => false, mse = () => false, hls = null,
    newDecoder, openSocket, now, timeOrigin, timers, view,
  }) {
    this.wanted = wanted;
    this.hls = hls;
    this.secure = secure;
    this.webcodecs = webcodecs;
    this.hasMse = hasMse;
    this.mse = mse;
    this.newDecoder = newDecoder;
    this.openSocket = openSocket;
    this.now = now;
    this.timeOrigin = timeOrigin;
    this.timers = timers;
    this.view = view;
    this.stats = initialStats();
    this.decoder = null; // null until a stream-info says what to decode, and while nothing here can
    this.info = null;
    this.webcodecsFailedFor = null; // a codec string this browser's WebCodecs refused
    this.mseFailedFor = null; // a codec string MSE failed on before showing a picture
    this.initSegment = null; // the last init segment (/ws/fmp4), for a decoder made anew
    // The endpoint is chosen before the stream is known, because the two carry different
    // formats: /ws/fmp4 when the page will likely play with MSE (plain HTTP with MSE: no
    // WebCodecs there), /ws otherwise. A stream-info that the decoder chosen for it
    // cannot take on this endpoint (MSE cannot play the codec, or WebCodecs can) makes
    // the page reconnect to the other one at once (onStreamInfo).
    this.connection = new Connection({
      endpoint: firstEndpoint({ wanted, webcodecs: webcodecs(), mse: hasMse() }),
      openSocket,
      timers,
      events: {
        connecting: (endpoint) => { this.stats.endpoint = endpoint; },
        open: () => this.onOpen(),
        message: (data) => this.onMessage(data),
        dropped: () => {
          this.stats.reconnects++;
          this.setState('reconnecting');
        },
        ping: () => this.ping(),
      },
    });
    this.unplayable = null; // the explanation on the stage, while no decoder here plays the stream
    this.sourceState = null; // the server's last status: 'live' or 'source-lost'
    this.sequence = new SequenceTracker();
    this.gapPending = false; // a gap stopped decoding; the next keyframe resumes it
    // The last catch-up unit handed to the decoder, until its picture (or a live one)
    // comes out: a join burst is a backlog by design, no sign of a slow decoder.
    this.burstEnd = null;
    this.waitForKey = true;
    this.painter = new Painter({ now, timers, paint: (picture, unit) => this.paint(picture, unit) });
    this.lastPainted = null; // unit of the last painted picture
    this.lastStampRead = 0;
    this.clock = new ClockSync();
    this.rates = new RateWindow();
  }

  /** Connects; from here on the player reconnects by itself. */
  start() {
    this.connection.connect();
  }

  /** The stats, with the frame on screen read afresh. */
  report() {
    if (this.stats.framesPainted > 0) this.refreshStamp();
    Object.assign(this.stats, this.decoder?.stats?.());
    return { ...this.stats };
  }

  /** Updates the rates, and the frame on screen when painting has paused (every 500 ms). */
  tick() {
    const now = this.now();
    Object.assign(this.stats, this.rates.rates(now), this.decoder?.stats?.());
    if (now - this.lastStampRead > 500 && this.stats.framesPainted > 0) this.refreshStamp();
  }

  /** The server's clock (µs since the epoch), as far as the pongs tell. */
  serverNowUs() {
    return (this.timeOrigin + this.now() + this.stats.clockOffsetMs) * 1000;
  }

  /** A connection opened: the stream starts afresh, at a keyframe. */
  onOpen() {
    this.paintedThisConnection = false;
    this.clock.reset();
    this.waitForKey = true;
    this.sequence.restart();
  }

  /** Reconnects to `endpoint` at once: the chosen decoder takes the other format. */
  switchEndpoint(endpoint) {
    this.stats.endpointSwitches++;
    this.connection.switchTo(endpoint);
  }

  send(text) {
    return this.connection.send(text);
  }

  ping() {
    this.send(encodePing(this.timeOrigin + this.now()));
  }

  requestKeyframe() {
    if (this.send(encodeKeyframeRequest())) this.stats.keyframeRequests++;
  }

  onMessage(data) {
    // The server sends only binary messages; anything else, or invalid, is ignored.
    if (!(data instanceof ArrayBuffer)) return;
    const msg = decodeServerMessage(new Uint8Array(data));
    switch (msg.type) {
      case 'access-unit':
      case 'fragment': this.onAccessUnit(msg, data.byteLength); break;
      case 'init-segment': this.onInitSegment(msg.data); break;
      case 'stream-info': this.onStreamInfo(msg.info); break;
      case 'skipped': this.onSkipped(msg.frames); break;
      case 'status': this.onStatus(msg.status); break;
      case 'pong': this.onPong(msg.t, msg.serverUs); break;
      default: break;
    }
  }

  setState(state, reason) {
    this.stats.state = state;
    this.stats.sourceReason = reason ?? null;
    this.view.showState(state, reason);
  }

  /** Shows (or with null, hides) why the stream cannot play here. */
  showUnplayable(explanation) {
    this.unplayable = explanation;
    this.view.showUnplayable(explanation);
  }

  onStreamInfo(next) {
    const changed = !this.info || this.info.codec !== next.codec
      || this.info.width !== next.width || this.info.height !== next.height;
    this.info = next;
    this.initSegment = null; // the one for this stream follows
    const { stats } = this;
    stats.codec = typeof next.codec === 'string' ? next.codec : null;
    stats.width = Number(next.width) || 0;
    stats.height = Number(next.height) || 0;
    // Whatever comes next starts afresh at a keyframe.
    this.waitForKey = true;
    this.sequence.restart();
    const hasWebCodecs = this.webcodecs();
    const hasMse = this.hasMse() && !this.connection.fmp4Missing;
    const choice = chooseDecoder(next, {
      wanted: this.wanted,
      webcodecs: hasWebCodecs && this.webcodecsFailedFor !== next.codec,
      mse: hasMse && this.mseFailedFor !== next.codec && this.mse(next.codec),
    });
    if (changed || choice.note) stats.error = choice.note;
    if (choice.decoder && endpointOf(choice.decoder) !== this.connection.endpoint) {
      // This endpoint carries the wrong format for the decoder: reconnect to the right one.
      this.switchEndpoint(endpointOf(choice.decoder));
      return;
    }
    if (!choice.decoder) {
      // Nothing here can decode it: say why on the stage and stay connected (the
      // stream may become playable, e.g. a camera restarted with Baseline).
      this.closeDecoder();
      const explanation = explainUnplayable(next, { secure: this.secure, hasWebCodecs, hasMse, hls: this.hls });
      stats.error = explanation.short;
      this.showUnplayable(explanation);
      this.setState('unsupported');
      return;
    }
    if (this.unplayable) {
      this.showUnplayable(null);
      this.setState(this.sourceState === 'source-lost' ? 'source-lost' : 'connecting');
    }
    if (this.decoder?.name !== choice.decoder) this.makeDecoder(choice.decoder);
    try {
      this.decoder.configure(next);
    } catch (e) {
      // e.g. a codec string this WebCodecs does not take: choose again without it.
      const failed = this.decoder.name;
      stats.error = `cannot configure ${failed}: ${e.message}`;
      this.closeDecoder();
      if (failed === 'webcodecs') {
        this.webcodecsFailedFor = next.codec;
        this.onStreamInfo(next);
      }
    }
  }

  /** Takes an init segment (/ws/fmp4), for the stream of the last stream-info. */
  onInitSegment(data) {
    this.initSegment = data;
    if (typeof this.decoder?.init === 'function') this.decoder.init(data);
  }

  /** Takes an access unit (or, on /ws/fmp4, fragment) message of `size` bytes. */
  onAccessUnit(msg, size) {
    const { stats } = this;
    const unit = { seq: msg.seq, captureUs: msg.captureUs, key: msg.key, catchUp: msg.catchUp, data: msg.data };
    const arrivedUs = this.serverNowUs();
    stats.framesReceived++;
    this.rates.add(this.now(), size);
    if (!unit.catchUp) stats.networkLatencyMs = (arrivedUs - unit.captureUs) / 1000;
    if (!this.sequence.next(unit.seq)) {
      // Frames are missing: the next delta frames would predict from pictures we never
      // got. Stop decoding until a keyframe, and ask for one (unless this is one).
      stats.sequenceGaps = this.sequence.gaps;
      stats.framesMissing = this.sequence.missing;
      stats.lastGap = { ...this.sequence.lastGap, resumedAt: null };
      this.gapPending = true;
      this.waitForKey = true;
      if (!unit.key && this.decoder) this.requestKeyframe();
    }
    const decoder = this.decoder;
    if (!decoder || !this.info) return;
    // Only MSE takes fragments, and it takes nothing else (a message of the other
    // endpoint, in the moment of switching).
    if ((msg.type === 'fragment') !== (decoder.name === 'mse')) return;
    if (!this.waitForKey && tooFarBehind({
      catchUp: unit.catchUp,
      networkLatencyMs: stats.networkLatencyMs,
      backlog: decoder.backlog,
      warm: decoder.warm,
      inBurst: this.burstEnd !== null,
    })) {
      this.waitForKey = true;
      this.requestKeyframe();
    }
    if (this.waitForKey) {
      if (!unit.key) {
        stats.framesDropped++;
        return;
      }
      this.waitForKey = false;
      if (this.gapPending) {
        this.gapPending = false;
        stats.lastGap = { ...stats.lastGap, resumedAt: unit.seq };
      }
    }
    try {
      if (!decoder.decode(unit)) this.waitForKey = true;
      else if (unit.catchUp) this.burstEnd = unit.seq;
    } catch (e) {
      stats.error = String(e.message || e);
      this.resetDecoder();
    }
  }

  onSkipped(frames) {
    this.stats.framesSkippedByServer += frames;
    // The server dropped frames on purpose and resumes at a keyframe: its number
    // jumps by design, so the next frame starts a new run rather than counting as a gap.
    this.sequence.restart();
    this.waitForKey = true;
  }

  onStatus(s) {
    if (s.state === 'source-lost') {
      this.sourceState = 'source-lost';
      this.setState('source-lost', typeof s.reason === 'string' ? s.reason : null);
    } else if (s.state === 'live') {
      this.sourceState = 'live';
      if (this.unplayable) this.setState('unsupported');
      // Live once this connection has shown a picture: a picture from an earlier
      // connection says nothing about this one.
      else if (this.paintedThisConnection) this.setState('live');
    }
  }

  onPong(t, serverUs) {
    if (this.clock.sample(t, serverUs / 1000, this.timeOrigin + this.now())) {
      this.stats.clockOffsetMs = this.clock.best.offset;
      this.stats.rttMs = Math.round(this.clock.best.rtt * 10) / 10;
    }
  }

  makeDecoder(kind) {
    this.closeDecoder();
    const made = this.newDecoder(
      kind,
      (picture, unit) => this.onPicture(picture, unit),
      (e) => {
        if (this.decoder === made) this.onDecoderError(e);
      },
    );
    this.decoder = made;
    this.burstEnd = null;
    this.stats.decoder = made.name;
    this.view.decoderChanged();
  }

  closeDecoder() {
    this.painter.dropHeld();
    this.decoder?.close();
    this.decoder = null;
    this.stats.decoder = null;
  }

  onDecoderError(e) {
    this.stats.error = String(e?.message || e);
    console.warn('decoder error', e);
    if (this.decoder?.name === 'mse' && e?.beforeFirstPicture && this.info) {
      // MSE cannot play this here at all (e.g. a codec it claimed, or a page whose
      // Content-Security-Policy does not allow media from blob: URLs): choose again
      // without it, which means /ws and WebCodecs or Broadway.js.
      this.mseFailedFor = this.info.codec;
      this.stats.error = `Media Source Extensions failed: ${this.stats.error}`;
      this.closeDecoder();
      this.onStreamInfo(this.info);
      return;
    }
    if (this.decoder?.name === 'webcodecs' && e?.name === 'NotSupportedError' && this.info) {
      // This browser's WebCodecs cannot decode the codec: choose again without it.
      this.webcodecsFailedFor = this.info.codec;
      this.closeDecoder();
      this.onStreamInfo(this.info);
      return;
    }
    this.resetDecoder();
  }

  /** After an error, starts over at the next keyframe with a new decoder of the same kind. */
  resetDecoder() {
    if (!this.decoder) return;
    this.makeDecoder(this.decoder.name);
    if (this.info) this.decoder.configure(this.info);
    if (this.initSegment && typeof this.decoder.init === 'function') this.decoder.init(this.initSegment);
    this.waitForKey = true;
    this.requestKeyframe();
  }

  onPicture(picture, unit) {
    this.stats.framesDecoded++;
    if (unit && (!unit.catchUp || unit.seq === this.burstEnd)) this.burstEnd = null;
    this.painter.offer(picture, unit, { presents: this.decoder?.presents, backlog: this.decoder?.backlog });
  }

  paint(picture, unit) {
    this.view.paint(picture);
    this.lastPainted = unit || null;
    const { stats } = this;
    const at = this.painter.lastPaint;
    stats.framesPainted++;
    if (!this.paintedThisConnection) {
      this.paintedThisConnection = true;
      this.connection.proven();
    }
    if (stats.firstPaintMs === null) stats.firstPaintMs = Math.round(at);
    // A picture of the join burst (the cached GOP) is not live yet: "catching up"
    // until the first live one is on screen, rather than an old picture called live.
    const catchingUp = Boolean(unit?.catchUp);
    const want = catchingUp ? 'catching-up' : 'live';
    if (stats.state !== want && stats.state !== 'source-lost' && !(catchingUp && stats.state === 'live')) {
      this.setState(want);
    }
    if (at - this.lastStampRead > 100) this.refreshStamp();
  }

  /** Reads the stamp back from the screen: which frame is on it, and how old. */
  refreshStamp() {
    this.lastStampRead = this.now();
    const stamp = this.view.readStamp();
    const { stats } = this;
    if (stamp) {
      const now = this.serverNowUs();
      stats.lastFrameNumber = stamp.frame;
      stats.latencyMs = Math.round((now - captureNear(stamp.low40, now)) / 100) / 10;
      // The first picture on screen may be the start of the catch-up burst, seconds
      // old; the first live one is the first whose stamp is at most 200 ms old.
      if (stats.firstLiveMs === null && stats.latencyMs <= LIVE_MS) stats.firstLiveMs = Math.round(this.now());
    } else if (this.lastPainted) {
      // Not the test pattern: use the capture time the server sent.
      stats.lastFrameNumber = null;
      stats.latencyMs = Math.round((this.serverNowUs() - this.lastPainted.captureUs) / 100) / 10;
    }
  }
}
