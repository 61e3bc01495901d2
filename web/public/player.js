// nalcast player: connects to /ws (docs/protocol.md), decodes with WebCodecs or
// Broadway.js, paints only the newest picture, reconnects on its own.
import { WebCodecsDecoder, BroadwayDecoder, paintAtOnce } from './decoders.js';
import { readStamp, captureNear } from './stamp.js';

const MSG_STREAM_INFO = 1, MSG_ACCESS_UNIT = 2, MSG_SKIPPED = 3, MSG_STATUS = 4, MSG_PONG = 5;
const FLAG_KEYFRAME = 1, FLAG_CATCH_UP = 2;
// Beyond this many undecoded access units the decoder cannot keep up: drop to the next keyframe.
const MAX_BACKLOG = 12;
// A live frame older than this on arrival means we stalled: skip ahead to a keyframe.
const STALE_MS = 1500;
// While catching up, still show a picture this often.
const CATCH_UP_PAINT_MS = 200;

const params = new URLSearchParams(location.search);
const wanted = params.get('decoder') || 'auto';
const $ = (id) => document.getElementById(id);
const decoder_ = new TextDecoder();

const stats = {
  decoder: null, state: 'connecting', width: 0, height: 0, codec: null,
  framesReceived: 0, framesDecoded: 0, framesPainted: 0, framesDropped: 0, framesSkippedByServer: 0,
  lastFrameNumber: null, latencyMs: null, networkLatencyMs: null, fps: 0, bitrateKbps: 0,
  clockOffsetMs: 0, rttMs: null, reconnects: 0, firstPaintMs: null, error: null, sourceReason: null,
};

let ws = null;
let decoder = null;
let info = null;
let canvas = $('video');
let waitForKey = true;
let held = null; // {picture, unit}: newest decoded picture not painted yet
let heldTimer = 0;
let lastPaint = 0;
let lastPainted = null; // unit of the last painted picture
let lastStampRead = 0;
let backoff = 250;
let pingTimer = 0;
let bestPing = null;
const window5s = []; // [time, bytes] of received frames, for fps and bitrate

const serverNowUs = () => (performance.timeOrigin + performance.now() + stats.clockOffsetMs) * 1000;

function setState(state, reason) {
  stats.state = state;
  stats.sourceReason = reason ?? null;
  const badge = $('state');
  badge.textContent = reason ? `${state}: ${reason}` : state;
  badge.className = `badge ${state}`;
}

function chooseDecoder() {
  const webcodecs = WebCodecsDecoder.supported();
  if (wanted === 'webcodecs' && !webcodecs) {
    stats.error = 'WebCodecs is not available here (it needs https or localhost); using Broadway.js';
  }
  const useWebCodecs = wanted !== 'broadway' && webcodecs && !(info && !info.codec);
  return useWebCodecs ? WebCodecsDecoder : BroadwayDecoder;
}

function freshCanvas() {
  // A canvas keeps the context type it was first given (2d or WebGL): make a new
  // one per decoder, keeping the old picture on screen until the new one paints.
  const c = document.createElement('canvas');
  c.id = 'video';
  c.width = canvas.width;
  c.height = canvas.height;
  c.setAttribute('aria-label', 'live video');
  return c;
}

function makeDecoder() {
  decoder?.close();
  const Kind = chooseDecoder();
  decoder = new Kind(onPicture, (e) => {
    stats.error = String(e?.message || e);
    console.warn('decoder error', e);
    resetDecoder();
  });
  stats.decoder = decoder.name;
  pendingCanvas = freshCanvas();
}
let pendingCanvas = null;

function resetDecoder() {
  // After an error, start over at the next keyframe with a new decoder.
  dropHeld();
  makeDecoder();
  if (info) decoder.configure(info);
  waitForKey = true;
  requestKeyframe();
}

function requestKeyframe() {
  if (ws?.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type: 'keyframe' }));
}

function dropHeld() {
  clearTimeout(heldTimer);
  if (held) {
    held.picture.release();
    held = null;
  }
}

function onStreamInfo(next) {
  const changed = !info || info.codec !== next.codec || info.width !== next.width || info.height !== next.height;
  info = next;
  stats.codec = next.codec;
  stats.width = next.width;
  stats.height = next.height;
  if (!decoder) makeDecoder();
  if (changed) stats.error = null;
  try {
    decoder.configure(next);
  } catch (e) {
    // e.g. a codec string WebCodecs does not support: fall back to Broadway.
    stats.error = `cannot configure ${decoder.name}: ${e.message}`;
    decoder.close();
    decoder = new BroadwayDecoder(onPicture, () => resetDecoder());
    stats.decoder = decoder.name;
    pendingCanvas = freshCanvas();
    decoder.configure(next);
  }
  waitForKey = true;
}

function onAccessUnit(view, bytes) {
  const flags = bytes[1];
  const unit = {
    seq: view.getUint32(2, true),
    captureUs: Number(view.getBigUint64(6, true)),
    key: (flags & FLAG_KEYFRAME) !== 0,
    catchUp: (flags & FLAG_CATCH_UP) !== 0,
    data: bytes.subarray(14),
    arrivedUs: serverNowUs(),
  };
  stats.framesReceived++;
  const now = performance.now();
  window5s.push([now, bytes.length]);
  while (window5s.length && window5s[0][0] < now - 5000) window5s.shift();
  if (!unit.catchUp) stats.networkLatencyMs = (unit.arrivedUs - unit.captureUs) / 1000;
  if (!decoder || !info) return;
  if (!waitForKey) {
    const stale = !unit.catchUp && stats.networkLatencyMs > STALE_MS;
    if ((decoder.backlog > MAX_BACKLOG && decoder.warm) || stale) {
      // Too far behind to catch up by decoding: skip to the next keyframe.
      waitForKey = true;
      requestKeyframe();
    }
  }
  if (waitForKey) {
    if (!unit.key) {
      stats.framesDropped++;
      return;
    }
    waitForKey = false;
  }
  try {
    if (!decoder.decode(unit)) waitForKey = true;
  } catch (e) {
    stats.error = String(e.message || e);
    resetDecoder();
  }
}

function onPicture(picture, unit) {
  stats.framesDecoded++;
  const now = performance.now();
  if (paintAtOnce(unit, decoder?.backlog) || now - lastPaint > CATCH_UP_PAINT_MS) {
    dropHeld();
    paint(picture, unit);
  } else {
    // Catching up: hold the newest picture; paint it if nothing newer comes soon.
    dropHeld();
    held = { picture, unit };
    heldTimer = setTimeout(() => {
      if (held) {
        const h = held;
        held = null;
        paint(h.picture, h.unit);
      }
    }, 50);
  }
}

function paint(picture, unit) {
  if (pendingCanvas) {
    canvas.replaceWith(pendingCanvas);
    canvas = pendingCanvas;
    pendingCanvas = null;
  }
  if (canvas.width !== picture.width || canvas.height !== picture.height) {
    canvas.width = picture.width;
    canvas.height = picture.height;
  }
  picture.draw(canvas);
  lastPaint = performance.now();
  lastPainted = unit || null;
  stats.framesPainted++;
  if (stats.firstPaintMs === null) stats.firstPaintMs = Math.round(lastPaint);
  if (stats.state !== 'live' && stats.state !== 'source-lost') setState('live');
  if (lastPaint - lastStampRead > 100) refreshStamp();
}

let scratch = null;
/** Reads the stamp back from the painted canvas: which frame is on screen, and how old. */
function refreshStamp() {
  lastStampRead = performance.now();
  const w = canvas.width;
  if (!scratch) {
    scratch = document.createElement('canvas').getContext('2d', { willReadFrequently: true });
  }
  if (scratch.canvas.width !== w) scratch.canvas.width = w;
  scratch.canvas.height = 32;
  scratch.drawImage(canvas, 0, 0, w, 32, 0, 0, w, 32);
  const stamp = readStamp(scratch.getImageData(0, 0, w, 32).data, w);
  if (stamp) {
    const now = serverNowUs();
    stats.lastFrameNumber = stamp.frame;
    stats.latencyMs = Math.round((now - captureNear(stamp.low40, now)) / 100) / 10;
  } else if (lastPainted) {
    // Not the test pattern: use the capture time the server sent.
    stats.lastFrameNumber = null;
    stats.latencyMs = Math.round((serverNowUs() - lastPainted.captureUs) / 100) / 10;
  }
}

function onMessage(ev) {
  const bytes = new Uint8Array(ev.data);
  const view = new DataView(ev.data);
  switch (bytes[0]) {
    case MSG_ACCESS_UNIT: onAccessUnit(view, bytes); break;
    case MSG_STREAM_INFO: onStreamInfo(JSON.parse(decoder_.decode(bytes.subarray(1)))); break;
    case MSG_SKIPPED: stats.framesSkippedByServer += view.getUint32(1, true); break;
    case MSG_STATUS: {
      const s = JSON.parse(decoder_.decode(bytes.subarray(1)));
      if (s.state === 'source-lost') setState('source-lost', s.reason);
      else if (s.state === 'live' && stats.framesPainted > 0) setState('live');
      break;
    }
    case MSG_PONG: {
      const t = view.getFloat64(1, true);
      const serverMs = Number(view.getBigUint64(9, true)) / 1000;
      const now = performance.timeOrigin + performance.now();
      const rtt = now - t;
      // NTP-style offset; trust the sample with the smallest round trip.
      if (!bestPing || rtt <= bestPing.rtt * 1.5) {
        bestPing = { rtt, offset: serverMs - (t + now) / 2 };
        stats.clockOffsetMs = bestPing.offset;
        stats.rttMs = Math.round(rtt * 10) / 10;
      }
      break;
    }
    default: break;
  }
}

function ping() {
  if (ws?.readyState === WebSocket.OPEN) {
    ws.send(JSON.stringify({ type: 'ping', t: performance.timeOrigin + performance.now() }));
  }
}

function connect() {
  const url = new URL('ws', location.href);
  url.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';
  const socket = new WebSocket(url);
  socket.binaryType = 'arraybuffer';
  ws = socket;
  socket.onopen = () => {
    backoff = 250;
    bestPing = null;
    waitForKey = true;
    for (let i = 0; i < 3; i++) setTimeout(ping, i * 100);
    clearInterval(pingTimer);
    pingTimer = setInterval(ping, 2000);
  };
  socket.onmessage = onMessage;
  socket.onclose = () => {
    if (ws !== socket) return;
    clearInterval(pingTimer);
    // Keep the last picture on screen; try again with backoff.
    stats.reconnects++;
    setState('reconnecting');
    setTimeout(connect, backoff);
    backoff = Math.min(backoff * 2, 5000);
  };
}

function renderOverlay() {
  const now = performance.now();
  const span = window5s.length > 1 ? (now - window5s[0][0]) / 1000 : 0;
  stats.fps = span > 0 ? Math.round((window5s.length / span) * 10) / 10 : 0;
  stats.bitrateKbps = span > 0 ? Math.round(window5s.reduce((a, [, b]) => a + b, 0) * 8 / span / 1000) : 0;
  if (now - lastStampRead > 500 && stats.framesPainted > 0) refreshStamp();
  const o = $('overlay');
  if (o.hidden) return;
  const f = (v, unit = '') => (v === null || v === undefined ? '-' : `${v}${unit}`);
  o.textContent = [
    `decoder   ${stats.decoder}${stats.error ? ` (${stats.error})` : ''}`,
    `stream    ${f(stats.codec)} ${stats.width}x${stats.height}`,
    `rate      ${stats.fps} fps, ${stats.bitrateKbps} kbit/s`,
    `frames    ${stats.framesPainted} painted / ${stats.framesDecoded} decoded, ${stats.framesDropped + stats.framesSkippedByServer} dropped`,
    `latency   network ${f(stats.networkLatencyMs?.toFixed(1), ' ms')}, to paint ${f(stats.latencyMs, ' ms')}`,
    `clock     offset ${stats.clockOffsetMs.toFixed(1)} ms, rtt ${f(stats.rttMs, ' ms')}`,
    `frame     #${f(stats.lastFrameNumber)}`,
  ].join('\n');
}

function snapshot() {
  canvas.toBlob((blob) => {
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
    if (stats.framesPainted > 0) refreshStamp();
    return { ...stats, canvasWidth: canvas.width, canvasHeight: canvas.height };
  },
};

makeDecoder();
connect();
