// nalcast player: connects to /ws (docs/protocol.md), decodes with WebCodecs or
// Broadway.js, paints only the newest picture, reconnects on its own. It never
// decodes across a gap in the frame numbers, and never hands a Main or High profile
// stream to Broadway.js: without WebCodecs it says so on the stage instead.
import { WebCodecsDecoder, BroadwayDecoder, paintAtOnce, preloadBroadway } from './decoders.js';
import { chooseDecoder, explainUnplayable } from './decoder-choice.js';
import { SequenceTracker } from './sequence.js';
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
  // Gaps in the frame numbers, the numbers they skipped, the last one
  // ({expected, got, resumedAt: seq of the keyframe decoding resumed at}).
  sequenceGaps: 0, framesMissing: 0, lastGap: null, keyframeRequests: 0,
  lastFrameNumber: null, latencyMs: null, networkLatencyMs: null, fps: 0, bitrateKbps: 0,
  clockOffsetMs: 0, rttMs: null, reconnects: 0, firstPaintMs: null, error: null, sourceReason: null,
};

let ws = null;
let decoder = null; // null until a stream-info says what to decode, and while nothing here can
let info = null;
let webcodecsFailedFor = null; // a codec string this browser's WebCodecs refused
let unplayable = null; // the explanation on the stage, while no decoder here plays the stream
let sourceState = null; // the server's last status: 'live' or 'source-lost'
const sequence = new SequenceTracker();
let gapPending = false; // a gap stopped decoding; the next keyframe resumes it
// The last catch-up unit handed to the decoder, until its picture (or a live one)
// comes out: a join burst is a backlog by design, no sign of a slow decoder.
let burstEnd = null;
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

function closeDecoder() {
  dropHeld();
  decoder?.close();
  decoder = null;
  stats.decoder = null;
}

function makeDecoder(kind) {
  closeDecoder();
  const Kind = kind === 'webcodecs' ? WebCodecsDecoder : BroadwayDecoder;
  const made = new Kind(onPicture, (e) => {
    if (decoder === made) onDecoderError(e);
  });
  decoder = made;
  burstEnd = null;
  stats.decoder = decoder.name;
  pendingCanvas = freshCanvas();
}
let pendingCanvas = null;

function onDecoderError(e) {
  stats.error = String(e?.message || e);
  console.warn('decoder error', e);
  if (decoder?.name === 'webcodecs' && e?.name === 'NotSupportedError' && info) {
    // This browser's WebCodecs cannot decode the codec: choose again without it.
    webcodecsFailedFor = info.codec;
    closeDecoder();
    onStreamInfo(info);
    return;
  }
  resetDecoder();
}

function resetDecoder() {
  // After an error, start over at the next keyframe with a new decoder of the same kind.
  if (!decoder) return;
  makeDecoder(decoder.name);
  if (info) decoder.configure(info);
  waitForKey = true;
  requestKeyframe();
}

function requestKeyframe() {
  if (ws?.readyState === WebSocket.OPEN) {
    ws.send(JSON.stringify({ type: 'keyframe' }));
    stats.keyframeRequests++;
  }
}

function dropHeld() {
  clearTimeout(heldTimer);
  if (held) {
    held.picture.release();
    held = null;
  }
}

/** Shows (or with null, hides) why the stream cannot play here, on the stage itself. */
function showUnplayable(explanation) {
  unplayable = explanation;
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
}

function onStreamInfo(next) {
  if (!next || typeof next !== 'object') return;
  const changed = !info || info.codec !== next.codec || info.width !== next.width || info.height !== next.height;
  info = next;
  stats.codec = typeof next.codec === 'string' ? next.codec : null;
  stats.width = Number(next.width) || 0;
  stats.height = Number(next.height) || 0;
  // Whatever comes next starts afresh at a keyframe.
  waitForKey = true;
  sequence.restart();
  const hasWebCodecs = WebCodecsDecoder.supported();
  const choice = chooseDecoder(next, { wanted, webcodecs: hasWebCodecs && webcodecsFailedFor !== next.codec });
  if (changed || choice.note) stats.error = choice.note;
  if (!choice.decoder) {
    // Nothing here can decode it: say why on the stage and stay connected (the
    // stream may become playable, e.g. a camera restarted with Baseline).
    closeDecoder();
    const explanation = explainUnplayable(next, { secure: window.isSecureContext, hasWebCodecs });
    stats.error = explanation.short;
    showUnplayable(explanation);
    setState('unsupported');
    return;
  }
  if (unplayable) {
    showUnplayable(null);
    setState(sourceState === 'source-lost' ? 'source-lost' : 'connecting');
  }
  if (decoder?.name !== choice.decoder) makeDecoder(choice.decoder);
  try {
    decoder.configure(next);
  } catch (e) {
    // e.g. a codec string this WebCodecs does not take: choose again without it.
    const failed = decoder.name;
    stats.error = `cannot configure ${failed}: ${e.message}`;
    closeDecoder();
    if (failed === 'webcodecs') {
      webcodecsFailedFor = next.codec;
      onStreamInfo(next);
    }
  }
}

/** Reads an access unit message; null when it is too short to be one. */
function readAccessUnit(view, bytes) {
  if (bytes.length < 14) return null;
  const flags = bytes[1];
  return {
    seq: view.getUint32(2, true),
    captureUs: Number(view.getBigUint64(6, true)),
    key: (flags & FLAG_KEYFRAME) !== 0,
    catchUp: (flags & FLAG_CATCH_UP) !== 0,
    data: bytes.subarray(14),
    arrivedUs: serverNowUs(),
  };
}

function onAccessUnit(view, bytes) {
  const unit = readAccessUnit(view, bytes);
  if (!unit) return;
  stats.framesReceived++;
  const now = performance.now();
  window5s.push([now, bytes.length]);
  while (window5s.length && window5s[0][0] < now - 5000) window5s.shift();
  if (!unit.catchUp) stats.networkLatencyMs = (unit.arrivedUs - unit.captureUs) / 1000;
  if (!sequence.next(unit.seq)) {
    // Frames are missing: the next delta frames would predict from pictures we never
    // got. Stop decoding until a keyframe, and ask for one (unless this is one).
    stats.sequenceGaps = sequence.gaps;
    stats.framesMissing = sequence.missing;
    stats.lastGap = { ...sequence.lastGap, resumedAt: null };
    gapPending = true;
    waitForKey = true;
    if (!unit.key && decoder) requestKeyframe();
  }
  if (!decoder || !info) return;
  if (!waitForKey) {
    const stale = !unit.catchUp && stats.networkLatencyMs > STALE_MS;
    const behind = decoder.backlog > MAX_BACKLOG && decoder.warm && burstEnd === null;
    if (behind || stale) {
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
    if (gapPending) {
      gapPending = false;
      stats.lastGap = { ...stats.lastGap, resumedAt: unit.seq };
    }
  }
  try {
    if (!decoder.decode(unit)) waitForKey = true;
    else if (unit.catchUp) burstEnd = unit.seq;
  } catch (e) {
    stats.error = String(e.message || e);
    resetDecoder();
  }
}

function onPicture(picture, unit) {
  stats.framesDecoded++;
  if (unit && (!unit.catchUp || unit.seq === burstEnd)) burstEnd = null;
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

/** The JSON after a message's type byte; null when it is not a JSON object. */
function readJson(bytes) {
  try {
    const value = JSON.parse(decoder_.decode(bytes.subarray(1)));
    return value && typeof value === 'object' ? value : null;
  } catch {
    return null;
  }
}

function onSkipped(view, bytes) {
  if (bytes.length < 5) return;
  stats.framesSkippedByServer += view.getUint32(1, true);
  // The server dropped frames on purpose and resumes at a keyframe: its number
  // jumps by design, so the next frame starts a new run rather than counting as a gap.
  sequence.restart();
  waitForKey = true;
}

function onStatus(s) {
  if (!s) return;
  if (s.state === 'source-lost') {
    sourceState = 'source-lost';
    setState('source-lost', typeof s.reason === 'string' ? s.reason : null);
  } else if (s.state === 'live') {
    sourceState = 'live';
    if (unplayable) setState('unsupported');
    else if (stats.framesPainted > 0) setState('live');
  }
}

function onPong(view, bytes) {
  if (bytes.length < 17) return;
  const t = view.getFloat64(1, true);
  const serverMs = Number(view.getBigUint64(9, true)) / 1000;
  const now = performance.timeOrigin + performance.now();
  const rtt = now - t;
  // NTP-style offset; trust the sample with the smallest round trip.
  if (Number.isFinite(rtt) && (!bestPing || rtt <= bestPing.rtt * 1.5)) {
    bestPing = { rtt, offset: serverMs - (t + now) / 2 };
    stats.clockOffsetMs = bestPing.offset;
    stats.rttMs = Math.round(rtt * 10) / 10;
  }
}

function onMessage(ev) {
  // The server sends only binary messages; anything else, or too short, is ignored.
  if (!(ev.data instanceof ArrayBuffer) || ev.data.byteLength === 0) return;
  const bytes = new Uint8Array(ev.data);
  const view = new DataView(ev.data);
  switch (bytes[0]) {
    case MSG_ACCESS_UNIT: onAccessUnit(view, bytes); break;
    case MSG_STREAM_INFO: onStreamInfo(readJson(bytes)); break;
    case MSG_SKIPPED: onSkipped(view, bytes); break;
    case MSG_STATUS: onStatus(readJson(bytes)); break;
    case MSG_PONG: onPong(view, bytes); break;
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
    sequence.restart();
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
  const n = (count, noun) => `${count} ${noun}${count === 1 ? '' : 's'}`;
  o.textContent = [
    `decoder   ${stats.decoder ?? 'none'}${stats.error ? ` (${stats.error})` : ''}`,
    `stream    ${f(stats.codec)} ${stats.width}x${stats.height}`,
    `rate      ${stats.fps} fps, ${stats.bitrateKbps} kbit/s`,
    `frames    ${stats.framesPainted} painted / ${stats.framesDecoded} decoded, ${stats.framesDropped + stats.framesSkippedByServer} dropped`,
    `latency   network ${f(stats.networkLatencyMs?.toFixed(1), ' ms')}, to paint ${f(stats.latencyMs, ' ms')}`,
    `clock     offset ${stats.clockOffsetMs.toFixed(1)} ms, rtt ${f(stats.rttMs, ' ms')}`,
    `frame     #${f(stats.lastFrameNumber)}`,
    `sequence  ${n(stats.sequenceGaps, 'gap')} (${n(stats.framesMissing, 'frame')} missing), ${n(stats.keyframeRequests, 'keyframe')} asked for`,
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

// The decoder is chosen when the first stream-info says what the stream is. Where
// Broadway may be needed, fetch its renderer now so the first picture can use it.
if (wanted === 'broadway' || !WebCodecsDecoder.supported()) preloadBroadway();
connect();

