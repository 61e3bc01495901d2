// Which decoder plays a stream, judged from its stream-info (docs/protocol.md):
// WebCodecs where the browser has it (secure contexts only), else the browser's own
// decoder through Media Source Extensions (plain-HTTP pages too, fed fMP4 from
// /ws/fmp4), else Broadway.js, which decodes the Baseline profile only, else nothing,
// with a message saying why and what to do. Main and High profile streams (a Pi 5,
// most USB and IP cameras) are never handed to Broadway: it has no CABAC and no
// B-frames and paints garbage.

/** The WebSocket endpoint of each decoder: MSE takes fragmented MP4, the others Annex-B. */
export const ENDPOINT_FMP4 = 'ws/fmp4';
export const ENDPOINT_ANNEX_B = 'ws';

/** The profile's name for people ("Main", "Constrained Baseline"), as the server names it; null when unknown. */
export function profileName(info) {
  return typeof info?.profile === 'string' && info.profile !== '' ? info.profile : null;
}

/**
 * Whether Broadway.js can decode a stream. The server is the one judge (it parses the
 * SPS: Baseline, or any profile whose constraint_set0 promises Baseline's tools) and
 * says so in stream-info's `baseline`; the page does not judge again.
 */
export function broadwayCanPlay(info) {
  return info?.baseline === true;
}

/**
 * Picks the decoder for a stream.
 *  info:       stream-info ({codec, baseline, profile, ...})
 *  wanted:     'auto' | 'webcodecs' | 'mse' | 'broadway' (the page's ?decoder=)
 *  webcodecs:  whether WebCodecs can be used here for this codec
 *  mse:        whether Media Source Extensions can play this codec here
 * Returns {decoder: 'webcodecs' | 'mse' | 'broadway' | null, note: string | null}; null
 * means no decoder here can play the stream (see `explainUnplayable`). Without a
 * wish: WebCodecs, then MSE, then Broadway.js (Baseline only). A wish is granted
 * when that decoder can play the stream; the note says when it is not.
 */
export function chooseDecoder(info, { wanted = 'auto', webcodecs = false, mse = false } = {}) {
  const hasCodec = typeof info?.codec === 'string' && info.codec !== '';
  const can = {
    webcodecs: webcodecs && hasCodec,
    mse: mse && hasCodec,
    broadway: broadwayCanPlay(info),
  };
  if (can[wanted]) return { decoder: wanted, note: null };
  const decoder = ['webcodecs', 'mse', 'broadway'].find((d) => can[d]) ?? null;
  if (!decoder || wanted === 'auto' || !(wanted in can)) return { decoder, note: null };
  return { decoder, note: `${whyNot(wanted, info)}; using ${NAMES[decoder]}` };
}

const NAMES = { webcodecs: 'WebCodecs', mse: 'Media Source Extensions', broadway: 'Broadway.js' };

function whyNot(wanted, info) {
  if (wanted === 'broadway') return `Broadway.js cannot decode ${profileName(info) ?? 'this'} profile`;
  if (wanted === 'webcodecs') return 'WebCodecs is not available here (it needs https or localhost)';
  return `Media Source Extensions cannot play ${info?.codec || 'this stream'} here`;
}

/**
 * Whether the page tries WebRTC (webrtc.js) before the WebSocket decoders: where it
 * is asked for (?decoder=webrtc), or on a page without WebCodecs (plain HTTP), where
 * the browser's WebRTC receiver plays at WebCodecs' latency and MSE buffers. Never
 * when another decoder is asked for, nor without RTCPeerConnection.
 */
export function triesWebrtc({ wanted = 'auto', webcodecs, webrtc }) {
  if (!webrtc) return false;
  return wanted === 'webrtc' || (wanted === 'auto' && !webcodecs);
}

/**
 * Where the page connects first, before any stream-info says what the stream is:
 * /ws/fmp4 when it will likely play with MSE (it has MSE, and no WebCodecs or MSE was
 * asked for: plain HTTP on a LAN address), else /ws. A stream-info that MSE cannot
 * play there sends the page back to /ws (player.js), one reconnect.
 */
export function firstEndpoint({ wanted = 'auto', webcodecs, mse }) {
  if (!mse) return ENDPOINT_ANNEX_B;
  if (wanted === 'mse' || ((wanted === 'auto' || wanted === 'webcodecs') && !webcodecs)) return ENDPOINT_FMP4;
  return ENDPOINT_ANNEX_B;
}

/** The endpoint a decoder is fed from. */
export function endpointOf(decoder) {
  return decoder === 'mse' ? ENDPOINT_FMP4 : ENDPOINT_ANNEX_B;
}

/**
 * What to tell the viewer when no decoder here plays the stream: {title, why, todo: [],
 * after, short}; commands in `todo` are marked with backticks. `secure` is the page's isSecureContext, `hasWebCodecs` whether the
 * browser has VideoDecoder at all (it may have it and still refuse this codec).
 */
export function explainUnplayable(info, { secure, hasWebCodecs, hasMse = false, hls = null }) {
  const codec = typeof info?.codec === 'string' && info.codec ? info.codec : 'unknown codec';
  const profile = profileName(info);
  const stream = profile ? `H.264 ${profile} profile (${codec})` : `H.264 of an unknown profile (${codec})`;
  const baseline = 'Or make the camera send Baseline profile: `rpicam-vid --profile baseline` '
    + '(what `nalcast --source rpicam` runs), `ffmpeg -profile:v baseline`, or the camera\'s own settings.';
  let title = `${profile ? `${profile} profile` : 'This'} video cannot play in this browser`;
  let why, todo, short;
  if (!secure) {
    title = `${profile ? `${profile} profile` : 'This'} video cannot play on a plain-HTTP page`;
    why = hasMse
      ? `The camera sends ${stream}. On a plain-HTTP page this browser offers Media Source `
        + 'Extensions, which cannot play this stream, and the Baseline-profile software decoder '
        + '(Broadway.js). WebCodecs, which browsers enable only on secure pages (HTTPS, or '
        + 'localhost), may play it.'
      : `The camera sends ${stream}. On a plain-HTTP page this browser has only the `
        + 'Baseline-profile software decoder (Broadway.js). Main and High profile need WebCodecs, '
        + 'which browsers enable only on secure pages: HTTPS, or localhost.';
    todo = [
      'Open the HTTPS address instead: start nalcast with `--tls self-signed`, then open the `https://` address it prints.',
      baseline,
    ];
    short = `${profile ?? 'this'} profile needs WebCodecs (https); Broadway.js plays Baseline only: `
      + 'open the https address (nalcast --tls self-signed) or send Baseline';
  } else if (!hasWebCodecs) {
    why = `The camera sends ${stream}. This browser has no WebCodecs, only the `
      + 'Baseline-profile software decoder (Broadway.js).';
    todo = ['Open this page in a browser with WebCodecs: Chrome or Edge 94+, Firefox 130+, Safari 17+.', baseline];
    short = `${profile ?? 'this'} profile needs WebCodecs, which this browser lacks; Broadway.js plays Baseline only`;
  } else {
    why = `The camera sends ${stream}. This browser's WebCodecs cannot decode it, and the `
      + 'software decoder (Broadway.js) plays Baseline profile only.';
    todo = [baseline.replace(/^Or m/, 'M')];
    short = `WebCodecs here cannot decode ${codec}; Broadway.js plays Baseline only`;
  }
  // A player of its own plays LL-HLS on devices where this page cannot.
  if (hls) todo.push(`Or play the LL-HLS stream, which Safari (every iPhone and iPad) and VLC play by themselves: \`${hls}\``);
  return {
    title,
    why,
    todo,
    after: 'The page stays connected and plays as soon as the stream can be decoded here.',
    short,
  };
}
