// The player's logic without a browser: stand-in sockets, decoders, clock and timers.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Player } from '../../public/player.js';
import { MAX_BACKLOG } from '../../public/playback.js';
import { FakeSocket, FakeTime } from './fakes.mjs';

const TIME_ORIGIN = 1_764_067_200_000; // ms since the epoch when the page started

class FakeDecoder {
  constructor(name, onPicture, onError) {
    Object.assign(this, { name, onPicture, onError });
    this.backlog = 0;
    this.warm = true;
    this.decoded = [];
    this.closed = false;
  }

  configure(info) { this.info = info; }

  decode(unit) {
    this.decoded.push(unit.seq);
    return true;
  }

  close() { this.closed = true; }

  /** Gives back the picture of the unit `seq` (the unit as decode got it). */
  output(unit) {
    const picture = { width: 640, height: 360, released: false, release() { this.released = true; }, draw() {} };
    this.onPicture(picture, unit);
    return picture;
  }
}

/** A player on stand-ins; `over` replaces collaborators or options. */
function setup(over = {}) {
  const time = new FakeTime();
  const sockets = [];
  const decoders = [];
  const painted = [];
  const shown = { state: null, unplayable: null };
  const player = new Player({
    wanted: 'auto',
    secure: true,
    webcodecs: () => true,
    newDecoder: (kind, onPicture, onError) => {
      const d = new FakeDecoder(kind, onPicture, onError);
      decoders.push(d);
      return d;
    },
    openSocket: () => {
      const s = new FakeSocket();
      sockets.push(s);
      return s;
    },
    now: time.now,
    timeOrigin: TIME_ORIGIN,
    timers: time.timers,
    view: {
      showState: (state, reason) => { shown.state = reason ? `${state}: ${reason}` : state; },
      showUnplayable: (e) => { shown.unplayable = e; },
      decoderChanged() {},
      paint: (picture) => painted.push(picture),
      readStamp: () => null,
    },
    ...over,
  });
  player.start();
  const socket = () => sockets.at(-1);
  return { player, time, sockets, socket, decoders, decoder: () => decoders.at(-1), painted, shown };
}

// Server messages, as the server frames them (docs/protocol.md).
function json(kind, value) {
  const body = new TextEncoder().encode(JSON.stringify(value));
  const out = new Uint8Array(1 + body.length);
  out[0] = kind;
  out.set(body, 1);
  return out;
}
const streamInfo = (info) => json(1, { fps: 30, source: 'test', ...info });
const status = (s) => json(4, s);
const BASELINE = { codec: 'avc1.42C01F', width: 640, height: 360, baseline: true, profile: 'Constrained Baseline' };
const MAIN = { codec: 'avc1.4D401F', width: 640, height: 360, baseline: false, profile: 'Main' };

function accessUnit({ seq, key = false, catchUp = false, captureUs = (TIME_ORIGIN) * 1000 }) {
  const out = new Uint8Array(14 + 5);
  const view = new DataView(out.buffer);
  out[0] = 2;
  out[1] = (key ? 1 : 0) | (catchUp ? 2 : 0);
  view.setUint32(2, seq, true);
  view.setBigUint64(6, BigInt(Math.round(captureUs)), true);
  out.set([0, 0, 0, 1, key ? 0x65 : 0x41], 14);
  return out;
}

function skipped(frames) {
  const out = new Uint8Array(5);
  out[0] = 3;
  new DataView(out.buffer).setUint32(1, frames, true);
  return out;
}

function pong(t, serverUs) {
  const out = new Uint8Array(17);
  const view = new DataView(out.buffer);
  out[0] = 5;
  view.setFloat64(1, t, true);
  view.setBigUint64(9, BigInt(serverUs), true);
  return out;
}

/** A connected player playing a Baseline stream with its WebCodecs stand-in. */
function playing(over) {
  const p = setup(over);
  p.socket().open();
  p.socket().receive(status({ state: 'live' }));
  p.socket().receive(streamInfo(BASELINE));
  return p;
}

const keyframeRequests = (socket) => socket.sent.filter((m) => m === '{"type":"keyframe"}').length;

test('a dropped connection is retried with backoff, keeping count and saying so', () => {
  const { player, time, sockets, socket, shown } = setup();
  socket().open();
  socket().close();
  assert.equal(player.stats.state, 'reconnecting');
  assert.equal(shown.state, 'reconnecting');
  assert.equal(player.stats.reconnects, 1);
  time.advance(249);
  assert.equal(sockets.length, 1, 'not before 250 ms');
  time.advance(1);
  assert.equal(sockets.length, 2);
  socket().close(); // refused: the server is still down
  time.advance(499);
  assert.equal(sockets.length, 2, 'the second wait is longer');
  time.advance(1);
  assert.equal(sockets.length, 3);
  socket().open();
  socket().close();
  time.advance(999);
  assert.equal(sockets.length, 3, 'a connection that opened and closed showed nothing: longer still');
  time.advance(1);
  assert.equal(sockets.length, 4);
  assert.equal(player.stats.reconnects, 3);
});

test('a server that drops every viewer at once: never "live", ever slower retries; a picture starts them over', () => {
  const { player, time, sockets, socket, shown, decoder } = playing();
  decoder().output({ seq: 1 });
  assert.equal(shown.state, 'live', 'a picture on this connection');
  const states = [];
  for (let i = 0; i < 5; i++) {
    socket().close();
    states.push(shown.state);
    time.advance(10_000);
    socket().open();
    socket().receive(status({ state: 'live' }));
    socket().receive(streamInfo(BASELINE));
    states.push(shown.state);
  }
  assert.ok(states.every((s) => s !== 'live'), `the badge said ${states}`);
  const before = sockets.length;
  socket().close();
  time.advance(4999);
  assert.equal(sockets.length, before, 'after five such drops the wait is 5 s');
  time.advance(1);
  socket().open();
  socket().receive(status({ state: 'live' }));
  socket().receive(streamInfo(BASELINE));
  decoder().output({ seq: 2 });
  assert.equal(player.stats.state, 'live');
  socket().close();
  time.advance(250);
  assert.equal(sockets.length, before + 2, 'a connection that showed a picture starts the delays over');
});

test('pings go out on connecting and every 2 s, stamped with the page clock', () => {
  const { time, socket } = setup();
  time.advance(1000);
  socket().open();
  time.advance(200);
  assert.deepEqual(socket().sent, [1000, 1100, 1200].map((ms) => `{"type":"ping","t":${TIME_ORIGIN + ms}}`));
  time.advance(2000);
  const first = socket();
  assert.equal(first.sent.length, 4);
  first.close();
  time.advance(10000);
  assert.equal(first.sent.length, 4, 'no more pings on the closed socket');
  assert.notEqual(socket(), first);
  assert.deepEqual(socket().sent, [], 'nor on the next one before it opens');
});

test('the pong with the shortest round trip sets the clock offset', () => {
  const { player, time, socket } = setup();
  socket().open();
  time.advance(30);
  const t = TIME_ORIGIN + 10;
  socket().receive(pong(t, (t + 10 + 2500) * 1000)); // the server's clock is 2.5 s ahead
  assert.equal(player.stats.rttMs, 20);
  assert.equal(player.stats.clockOffsetMs, 2500);
  assert.equal(player.serverNowUs(), (TIME_ORIGIN + 30 + 2500) * 1000);
});

test('a join burst deeper than the backlog limit is decoded whole; a backlog after it skips to a keyframe', () => {
  const { player, socket, decoder } = playing();
  const d = decoder();
  assert.equal(d.name, 'webcodecs');
  const burst = [];
  for (let seq = 100; seq < 130; seq++) {
    burst.push(seq);
    socket().receive(accessUnit({ seq, key: seq === 100, catchUp: true, captureUs: 0 }));
    d.backlog = seq - 99;
  }
  assert.deepEqual(d.decoded, burst, 'every catch-up unit decoded');
  assert.equal(player.stats.framesDropped, 0);
  assert.equal(keyframeRequests(socket()), 0);
  // The burst's last picture comes out: from now on a backlog means a slow decoder.
  d.output({ seq: 129, catchUp: true });
  d.backlog = MAX_BACKLOG + 1;
  socket().receive(accessUnit({ seq: 130 }));
  assert.equal(keyframeRequests(socket()), 1);
  assert.equal(player.stats.keyframeRequests, 1);
  assert.equal(player.stats.framesDropped, 1, 'the delta frame waits for the keyframe');
  d.backlog = 0;
  socket().receive(accessUnit({ seq: 131, key: true }));
  assert.equal(d.decoded.at(-1), 131);
});

test('a gap stops decoding until a keyframe, which is asked for; an announced skip is no gap', () => {
  const { player, socket, decoder } = playing();
  const d = decoder();
  socket().receive(accessUnit({ seq: 10, key: true }));
  socket().receive(accessUnit({ seq: 11 }));
  socket().receive(accessUnit({ seq: 13 }));
  socket().receive(accessUnit({ seq: 14 }));
  assert.deepEqual(d.decoded, [10, 11]);
  assert.equal(keyframeRequests(socket()), 1);
  assert.deepEqual(player.stats.lastGap, { expected: 12, got: 13, resumedAt: null });
  assert.equal(player.stats.framesDropped, 2);
  socket().receive(accessUnit({ seq: 15, key: true }));
  assert.deepEqual(d.decoded, [10, 11, 15]);
  assert.deepEqual(player.stats.lastGap, { expected: 12, got: 13, resumedAt: 15 });
  assert.equal(player.stats.sequenceGaps, 1);
  assert.equal(player.stats.framesMissing, 1);

  socket().receive(skipped(20));
  socket().receive(accessUnit({ seq: 36, key: true }));
  assert.equal(player.stats.sequenceGaps, 1);
  assert.equal(player.stats.framesSkippedByServer, 20);
  assert.deepEqual(d.decoded, [10, 11, 15, 36]);
});

test('a stream nothing here plays is explained; the same connection plays when it becomes Baseline', () => {
  const { player, socket, decoders, shown } = setup({ secure: false, webcodecs: () => false });
  socket().open();
  socket().receive(streamInfo(MAIN));
  assert.equal(player.stats.state, 'unsupported');
  assert.equal(player.stats.decoder, null);
  assert.match(player.stats.error, /Main profile needs WebCodecs/);
  assert.match(shown.unplayable.title, /plain-HTTP/);
  assert.equal(decoders.length, 0, 'no decoder started');
  socket().receive(accessUnit({ seq: 1, key: true }));
  assert.equal(player.stats.framesReceived, 1);
  socket().receive(status({ state: 'live' }));
  assert.equal(player.stats.state, 'unsupported', 'the source is live, the stream still cannot play');

  socket().receive(streamInfo(BASELINE));
  assert.equal(shown.unplayable, null);
  assert.equal(player.stats.decoder, 'broadway');
  assert.equal(player.stats.state, 'connecting');
  assert.equal(player.stats.error, null);
});

test('WebCodecs refusing the codec falls back to Broadway.js for a Baseline stream', (t) => {
  t.mock.method(console, 'warn', () => {});
  const { player, decoders } = playing();
  const wc = decoders[0];
  wc.onError(Object.assign(new Error('unsupported codec'), { name: 'NotSupportedError' }));
  assert.equal(wc.closed, true);
  assert.equal(player.stats.decoder, 'broadway');
  assert.equal(decoders.at(-1).info.codec, BASELINE.codec);
  // An error from the closed decoder, arriving late, changes nothing.
  wc.onError(new Error('late'));
  assert.equal(decoders.length, 2);
});

test('live pictures are painted at once; while catching up only the newest, after a moment', () => {
  const { player, time, decoder, painted, shown } = playing();
  const d = decoder();
  time.advance(1000);
  const first = d.output({ seq: 1, catchUp: true });
  assert.deepEqual(painted, [first], 'the first picture is painted at once');
  assert.equal(player.stats.firstPaintMs, 1000);
  // The cached GOP's first picture is old: not called live until a live one shows.
  assert.equal(shown.state, 'catching-up');
  const older = d.output({ seq: 2, catchUp: true });
  const newer = d.output({ seq: 3, catchUp: true });
  assert.equal(older.released, true, 'replaced before it was painted');
  assert.equal(painted.length, 1);
  time.advance(50);
  assert.deepEqual(painted, [first, newer]);
  assert.equal(shown.state, 'catching-up');
  d.output({ seq: 4, catchUp: false });
  assert.equal(painted.length, 3);
  assert.equal(shown.state, 'live');
  assert.equal(player.stats.framesDecoded, 4);
  assert.equal(player.stats.framesPainted, 3);
});

test('the source-lost status is shown with its reason; live again with the next picture', () => {
  const { player, socket, decoder } = playing();
  decoder().output({ seq: 1 });
  socket().receive(status({ state: 'source-lost', reason: 'camera exited' }));
  assert.equal(player.stats.state, 'source-lost');
  assert.equal(player.stats.sourceReason, 'camera exited');
  socket().receive(status({ state: 'live' }));
  assert.equal(player.stats.state, 'live');
  assert.equal(player.stats.sourceReason, null);
});

test('the latency to paint comes from the stamp on screen, else from the capture time sent', () => {
  let stamp = null;
  const { player, time, decoder } = playing({
    view: { showState() {}, showUnplayable() {}, decoderChanged() {}, paint() {}, readStamp: () => stamp },
  });
  time.advance(2000);
  const captureUs = (TIME_ORIGIN + 1900) * 1000;
  decoder().output({ seq: 7, captureUs });
  assert.equal(player.report().latencyMs, 100);
  assert.equal(player.stats.lastFrameNumber, null);
  stamp = { frame: 7, low40: captureUs % 2 ** 40 };
  time.advance(20);
  assert.equal(player.report().latencyMs, 120);
  assert.equal(player.stats.lastFrameNumber, 7);
});

// The MSE path: a plain-HTTP page with MSE connects to ws/fmp4.
function fragment({ seq, key = false, catchUp = false }) {
  const out = accessUnit({ seq, key, catchUp });
  out[0] = 7;
  return out;
}
const initSegment = () => Uint8Array.from([6, 0, 0, 0, 8, 0x66, 0x74, 0x79, 0x70]);

function plainHttp(over = {}) {
  return setup({
    secure: false,
    webcodecs: () => false,
    hasMse: () => true,
    mse: (codec) => codec !== 'avc1.F4001F',
    ...over,
  });
}

test('plain HTTP with MSE: ws/fmp4 from the start; init segment and fragments go to the MSE decoder', () => {
  const { player, socket, sockets, decoder } = plainHttp();
  assert.equal(player.stats.endpoint, 'ws/fmp4');
  socket().open();
  socket().receive(streamInfo(MAIN));
  assert.equal(player.stats.decoder, 'mse');
  const d = decoder();
  d.init = (bytes) => { d.initBytes = bytes; };
  socket().receive(initSegment());
  assert.deepEqual([...d.initBytes], [0, 0, 0, 8, 0x66, 0x74, 0x79, 0x70]);
  socket().receive(fragment({ seq: 1, key: true, catchUp: true }));
  socket().receive(fragment({ seq: 2 }));
  socket().receive(accessUnit({ seq: 3 })); // an Annex-B unit is not for MSE
  assert.deepEqual(d.decoded, [1, 2]);
  assert.equal(sockets.length, 1, 'no reconnect');
});

test('a codec MSE cannot play on ws/fmp4: straight back to ws, where Broadway plays Baseline', () => {
  const { player, socket, sockets } = plainHttp({ mse: () => false });
  socket().open();
  socket().receive(streamInfo(BASELINE));
  assert.equal(sockets.length, 2, 'reconnected at once');
  assert.equal(sockets[0].readyState, 3, 'the first socket is closed');
  assert.equal(player.stats.endpoint, 'ws');
  assert.equal(player.stats.endpointSwitches, 1);
  assert.equal(player.stats.reconnects, 0, 'a switch is no reconnect');
  socket().open();
  socket().receive(streamInfo(BASELINE));
  assert.equal(player.stats.decoder, 'broadway');
  assert.equal(sockets.length, 2);
});

test('MSE failing before its first picture (e.g. a Content-Security-Policy without media-src blob:) falls back to ws', (t) => {
  t.mock.method(console, 'warn', () => {});
  const { player, socket, sockets, decoder } = plainHttp();
  socket().open();
  socket().receive(streamInfo(BASELINE));
  const err = new Error('Media load rejected by URL safety check');
  err.beforeFirstPicture = true;
  decoder().onError(err);
  assert.equal(player.stats.endpoint, 'ws');
  assert.match(player.stats.error, /Media Source Extensions failed: Media load rejected/);
  socket().open();
  socket().receive(streamInfo(BASELINE));
  assert.equal(player.stats.decoder, 'broadway', 'MSE is not tried again for this codec');
  assert.equal(sockets.length, 2);
});

test('a server without ws/fmp4: after three attempts that never open, ws; once it opens, MSE is off', () => {
  const { player, socket, sockets, time } = plainHttp();
  for (let i = 0; i < 3; i++) {
    assert.equal(player.stats.endpoint, 'ws/fmp4');
    socket().close();
    time.advance(10000);
  }
  assert.equal(player.stats.endpoint, 'ws');
  socket().open();
  socket().receive(streamInfo(BASELINE));
  assert.equal(player.stats.decoder, 'broadway');
  assert.equal(sockets.length, 4, 'no switch back to the missing endpoint');
});

test('a server that is down: ws/fmp4 again after a failed try at ws', () => {
  const { player, socket, time } = plainHttp();
  for (let i = 0; i < 3; i++) {
    socket().close();
    time.advance(10000);
  }
  assert.equal(player.stats.endpoint, 'ws');
  socket().close();
  time.advance(10000);
  assert.equal(player.stats.endpoint, 'ws/fmp4');
  socket().open();
  socket().receive(streamInfo(MAIN));
  assert.equal(player.stats.decoder, 'mse');
});

test('a secure page asked for MSE (?decoder=mse) connects to ws/fmp4; pictures MSE presents count as painted at once', () => {
  const { player, socket, decoder, painted } = setup({ wanted: 'mse', hasMse: () => true, mse: () => true });
  assert.equal(player.stats.endpoint, 'ws/fmp4');
  socket().open();
  socket().receive(streamInfo(MAIN));
  const d = decoder();
  assert.equal(d.name, 'mse');
  d.presents = true;
  d.init = () => {};
  socket().receive(initSegment());
  socket().receive(fragment({ seq: 1, key: true, catchUp: true }));
  // Even a catch-up picture: the video element has already shown it (catching up
  // until a live one).
  d.output({ seq: 1, catchUp: true, captureUs: TIME_ORIGIN * 1000 });
  assert.equal(painted.length, 1);
  assert.equal(player.stats.state, 'catching-up');
  socket().receive(fragment({ seq: 2, key: false }));
  d.output({ seq: 2, catchUp: false, captureUs: TIME_ORIGIN * 1000 });
  assert.equal(player.stats.state, 'live');
});

test('a decoder reset on ws/fmp4 hands the new decoder the last init segment', (t) => {
  t.mock.method(console, 'warn', () => {});
  const { socket, decoders } = plainHttp();
  socket().open();
  socket().receive(streamInfo(MAIN));
  decoders[0].init = () => {};
  socket().receive(initSegment());
  FakeDecoder.prototype.init = function (bytes) { this.initBytes = bytes; };
  try {
    decoders[0].onError(new Error('decode failed'));
    assert.equal(decoders.length, 2);
    assert.equal(decoders[1].initBytes.length, 8);
  } finally {
    delete FakeDecoder.prototype.init;
  }
});
