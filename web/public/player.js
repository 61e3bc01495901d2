// nalcast player page: wires the DOM to the player (player-state.js), which connects
// to /ws (docs/protocol.md), decodes with WebCodecs or Broadway.js (decoders.js) and
// reconnects on its own. This file is the only one that touches the page: the
// canvas, the state badge, the explanation on the stage, the overlay and the buttons.
import { WebCodecsDecoder, BroadwayDecoder, preloadBroadway } from './decoders.js';
import { Player } from './player-state.js';
import { readStamp } from './stamp.js';

const params = new URLSearchParams(location.search);
const wanted = params.get('decoder') || 'auto';
const $ = (id) => document.getElementById(id);

let canvas = $('video');
let pendingCanvas = null; // the next decoder's canvas, put on the stage with its first picture
let scratch = null; // a 2d context the stamp strip is copied to for reading

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

/** What the player shows on the page. */
const view = {
  showState(state, reason) {
    const badge = $('state');
    badge.textContent = reason ? `${state}: ${reason}` : state;
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
  },

  /** The test pattern's stamp on the painted canvas; null when there is none. */
  readStamp() {
    const w = canvas.width;
    if (!scratch) {
      scratch = document.createElement('canvas').getContext('2d', { willReadFrequently: true });
    }
    if (scratch.canvas.width !== w) scratch.canvas.width = w;
    scratch.canvas.height = 32;
    scratch.drawImage(canvas, 0, 0, w, 32, 0, 0, w, 32);
    return readStamp(scratch.getImageData(0, 0, w, 32).data, w);
  },
};

const player = new Player({
  wanted,
  secure: window.isSecureContext,
  webcodecs: () => WebCodecsDecoder.supported(),
  newDecoder: (kind, onPicture, onError) => (kind === 'webcodecs'
    ? new WebCodecsDecoder(onPicture, onError)
    : new BroadwayDecoder(onPicture, onError)),
  openSocket() {
    const url = new URL('ws', location.href);
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

function renderOverlay() {
  // The overlay's timer also keeps the rates and the frame on screen current for stats().
  player.tick();
  const o = $('overlay');
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
    return { ...player.report(), canvasWidth: canvas.width, canvasHeight: canvas.height };
  },
};

// The decoder is chosen when the first stream-info says what the stream is. Where
// Broadway may be needed, fetch its renderer now so the first picture can use it.
if (wanted === 'broadway' || !WebCodecsDecoder.supported()) preloadBroadway();
player.start();
