// nalcast's page, the view: wires the DOM to the player (player.js), which connects
// to /ws or /ws/fmp4 (docs/protocol.md), decodes with WebCodecs or Broadway.js
// (decoders.js) into a canvas or plays through Media Source Extensions (mse.js) in a
// <video>, and reconnects on its own. This file is the only one that touches the
// page: the picture on the stage, the state badge, the explanation on the stage, the
// overlay and the buttons.
import { WebCodecsDecoder, BroadwayDecoder, preloadBroadway } from './decoders.js';
import { MseDecoder } from './mse.js';
import { Player } from './player.js';
import { readStamp } from './stamp.js';
import { WebRtcPlayer, webrtcAvailable } from './webrtc.js';
import { triesWebrtc } from './decoder-choice.js';

const params = new URLSearchParams(location.search);
const wanted = params.get('decoder') || 'auto';
const $ = (id) => document.getElementById(id);

// A stream's own page is /streams/NAME/; in the grid at / it is a tile (?tile=1),
// whose caption the grid draws, without the buttons.
const streamName = decodeURIComponent(location.pathname.match(/\/streams\/([^/]+)\//)?.[1] ?? '');
if (streamName) document.title = `${streamName} · nalcast`;
if (params.get('tile') === '1') document.body.classList.add('tile');

// What is on the stage: the canvas WebCodecs and Broadway paint into, or MSE's <video>.
let canvas = $('video');
let stage = canvas;
let pendingCanvas = null; // the next decoder's canvas, put on the stage with its first picture
let scratch = null; // a 2d context the stamp strip is copied to for reading

function freshCanvas() {
  // A canvas keeps the context type it was first given (2d or WebGL): make a new
  // one per decoder, keeping the old picture on screen until the new one paints.
  const c = document.createElement('canvas');
  c.id = 'video';
  c.width = stage === canvas ? canvas.width : stage.videoWidth || canvas.width;
  c.height = stage === canvas ? canvas.height : stage.videoHeight || canvas.height;
  c.setAttribute('aria-label', 'live video');
  return c;
}

/** Puts `el` on the stage in place of what is there. */
function putOnStage(el) {
  if (stage === el) return;
  el.id = 'video';
  stage.replaceWith(el);
  if (stage.tagName === 'VIDEO') {
    // A video leaving the stage lets go of its MediaSource and decoder.
    stage.removeAttribute('src');
    stage.srcObject = null;
    stage.load();
  }
  stage = el;
}

/** The picture's size on the stage. */
function stageSize() {
  return stage === canvas
    ? { width: canvas.width, height: canvas.height }
    : { width: stage.videoWidth, height: stage.videoHeight };
}

/** What the player shows on the page. */
const view = {
  showState(state, reason) {
    const badge = $('state');
    // "starting": the camera is being started (at nalcast's start, or for the first
    // viewer of a stream started on demand).
    const label = { starting: 'starting camera', 'catching-up': 'catching up' }[state] ?? state;
    badge.textContent = reason ? `${label}: ${reason}` : label;
    badge.className = `badge ${state}`;
  },

  /** Shows (or with null, hides) why the stream cannot play here, on the stage itself. */
  showUnplayable(explanation) {
    $('stage').classList.toggle('unplayable', Boolean(explanation));
    const box = $('message');
    box.hidden = !explanation;
    if (!explanation) return;
    $('message-title').textContent = explanation.title;
    $('message-why').textContent = explanation.why;
    $('message-todo').replaceChildren(...explanation.todo.map((line) => {
      // `command` in the text is shown as code, kept on one line.
      const li = document.createElement('li');
      li.append(...line.split('`').map((part, i) => {
        if (i % 2 === 0) return part;
        const code = document.createElement('code');
        code.textContent = part;
        return code;
      }));
      return li;
    }));
    $('message-after').textContent = explanation.after;
  },

  decoderChanged() {
    pendingCanvas = freshCanvas();
  },

  paint(picture) {
    if (picture.element) {
      // MSE: the video element has painted the picture itself; it only needs to be on stage.
      pendingCanvas = null;
      putOnStage(picture.element);
      return;
    }
    if (pendingCanvas) {
      canvas = pendingCanvas;
      putOnStage(pendingCanvas);
      pendingCanvas = null;
    }
    if (canvas.width !== picture.width || canvas.height !== picture.height) {
      canvas.width = picture.width;
      canvas.height = picture.height;
    }
    picture.draw(canvas);
  },

  /** The test pattern's stamp on the painted canvas; null when there is none. */
  readStamp() {
    const w = stageSize().width;
    if (!w) return null;
    if (!scratch) {
      scratch = document.createElement('canvas').getContext('2d', { willReadFrequently: true });
    }
    if (scratch.canvas.width !== w) scratch.canvas.width = w;
    scratch.canvas.height = 32;
    // A video draws its current picture, a canvas what was painted into it.
    scratch.drawImage(stage, 0, 0, w, 32, 0, 0, w, 32);
    return readStamp(scratch.getImageData(0, 0, w, 32).data, w);
  },
};

const player = new Player({
  wanted,
  secure: window.isSecureContext,
  webcodecs: () => WebCodecsDecoder.supported(),
  hasMse: () => MseDecoder.supported(),
  mse: (codec) => MseDecoder.canPlay(codec),
  hls: new URL('hls/index.m3u8', location.href).href,
  newDecoder(kind, onPicture, onError) {
    if (kind === 'webcodecs') return new WebCodecsDecoder(onPicture, onError);
    if (kind === 'mse') return new MseDecoder(onPicture, onError);
    return new BroadwayDecoder(onPicture, onError);
  },
  openSocket(endpoint) {
    const url = new URL(endpoint, location.href);
    url.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const socket = new WebSocket(url);
    socket.binaryType = 'arraybuffer';
    return socket;
  },
  now: () => performance.now(),
  timeOrigin: performance.timeOrigin,
  timers: {
    setTimeout: (f, ms) => setTimeout(f, ms),
    clearTimeout: (id) => clearTimeout(id),
    setInterval: (f, ms) => setInterval(f, ms),
    clearInterval: (id) => clearInterval(id),
  },
  view,
});

// Plain HTTP (no WebCodecs) with WebRTC: the browser's WebRTC receiver plays at
// WebCodecs' latency (webrtc.js); ?decoder=webrtc asks for it anywhere. Where it
// cannot play (no H.264 in this browser's WebRTC, WebRTC off on the server) the
// WebSocket player takes over: MSE, then Broadway.js.
const tryWebrtc = triesWebrtc({ wanted, webcodecs: WebCodecsDecoder.supported(), webrtc: webrtcAvailable() });
let rtc = null;
let webrtcNote = null;

function renderOverlay() {
  const o = $('overlay');
  if (rtc) {
    const s = rtc.report();
    if (o.hidden) return;
    const f = (v, unit = '') => (v === null || v === undefined ? '-' : `${v}${unit}`);
    o.textContent = [
      `decoder   webrtc (${f(s.decoderImplementation)})`,
      `stream    H264 ${s.width}x${s.height}`,
      `rate      ${s.fps} fps, ${s.bitrateKbps} kbit/s`,
      `frames    ${s.framesPainted} painted / ${s.framesDecoded} decoded, ${s.framesDropped} dropped`,
      `latency   to paint ${f(s.latencyMs, ' ms')}, jitter buffer ${f(s.jitterBufferMs, ' ms')}`,
      `first     picture ${f(s.firstPaintMs, ' ms')}, live picture ${f(s.firstLiveMs, ' ms')}`,
      `network   ${s.packetsLost} packets lost, ${s.nacks} NACKs, ${s.keyframeRequests} keyframes asked for`,
      `frame     #${f(s.lastFrameNumber)}`,
    ].join('\n');
    return;
  }
  // The overlay's timer also keeps the rates and the frame on screen current for stats().
  player.tick();
  if (o.hidden) return;
  const stats = player.stats;
  const f = (v, unit = '') => (v === null || v === undefined ? '-' : `${v}${unit}`);
  const n = (count, noun) => `${count} ${noun}${count === 1 ? '' : 's'}`;
  o.textContent = [
    `decoder   ${stats.decoder ?? 'none'}${stats.error ? ` (${stats.error})` : ''}`,
    `stream    ${f(stats.codec)} ${stats.width}x${stats.height}`,
    `rate      ${stats.fps} fps, ${stats.bitrateKbps} kbit/s`,
    `frames    ${stats.framesPainted} painted / ${stats.framesDecoded} decoded, ${stats.framesDropped + stats.framesSkippedByServer} dropped`,
    `latency   network ${f(stats.networkLatencyMs?.toFixed(1), ' ms')}, to paint ${f(stats.latencyMs, ' ms')}`,
    ...(stats.decoder === 'mse' ? [
      `buffer    ${f(stats.bufferedAheadS === null ? null : Math.round(stats.bufferedAheadS * 1000), ' ms')} ahead, rate ${f(stats.playbackRate)}, `
        + `${n(stats.liveSeeks ?? 0, 'seek')}, video dropped ${f(stats.videoFramesDropped)}/${f(stats.videoFramesTotal)}`,
    ] : []),
    `first     picture ${f(stats.firstPaintMs, ' ms')}, live picture ${f(stats.firstLiveMs, ' ms')}`,
    `clock     offset ${stats.clockOffsetMs.toFixed(1)} ms, rtt ${f(stats.rttMs, ' ms')}`,
    `frame     #${f(stats.lastFrameNumber)}`,
    `sequence  ${n(stats.sequenceGaps, 'gap')} (${n(stats.framesMissing, 'frame')} missing), ${n(stats.keyframeRequests, 'keyframe')} asked for`,
  ].join('\n');
}

function snapshot() {
  // The picture on the stage at its own size: a video's current picture is drawn into
  // a canvas first.
  let source = canvas;
  if (stage !== canvas) {
    source = document.createElement('canvas');
    ({ width: source.width, height: source.height } = stageSize());
    source.getContext('2d').drawImage(stage, 0, 0, source.width, source.height);
  }
  source.toBlob((blob) => {
    if (!blob) return;
    const a = document.createElement('a');
    a.href = URL.createObjectURL(blob);
    a.download = `nalcast-${new Date().toISOString().replace(/[:.]/g, '-')}.png`;
    a.click();
    setTimeout(() => URL.revokeObjectURL(a.href), 1000);
  }, 'image/png');
}

function toggleOverlay() {
  $('overlay').hidden = !$('overlay').hidden;
  renderOverlay();
}

function toggleFullscreen() {
  if (document.fullscreenElement) document.exitFullscreen();
  else $('stage').requestFullscreen?.();
}

$('btn-overlay').addEventListener('click', toggleOverlay);
$('btn-snapshot').addEventListener('click', snapshot);
$('btn-fullscreen').addEventListener('click', toggleFullscreen);
document.addEventListener('keydown', (e) => {
  if (e.key === 's') toggleOverlay();
  if (e.key === 'f') toggleFullscreen();
});
if (params.get('stats') === '1') toggleOverlay();
setInterval(renderOverlay, 500);

// Test and debugging hook.
window.nalcast = {
  stats() {
    // canvasWidth/Height: the size of the picture on the stage (the canvas, or MSE's video).
    const size = stageSize();
    const report = rtc ? rtc.report() : { ...player.report(), webrtcNote };
    return { ...report, canvasWidth: size.width, canvasHeight: size.height };
  },
};

// The decoder is chosen when the first stream-info says what the stream is. Where
// Broadway may be needed, fetch its renderer now so the first picture can use it.
if (wanted === 'broadway' || (!WebCodecsDecoder.supported() && !MseDecoder.supported() && !tryWebrtc)) preloadBroadway();
if (tryWebrtc) {
  rtc = new WebRtcPlayer({
    view,
    onUnavailable(reason) {
      // Why WebRTC did not play, for stats(); the WebSocket player takes over.
      webrtcNote = reason;
      rtc = null;
      player.start();
    },
  });
  rtc.start();
  // Leaving the page ends the session (DELETE, sent with keepalive), rather than
  // leaving the server to notice the silence.
  addEventListener('pagehide', () => rtc?.stop());
} else {
  player.start();
}
