// Which decoder plays which stream, without a browser.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  profileName, broadwayCanPlay, chooseDecoder, explainUnplayable, firstEndpoint, endpointOf, triesWebrtc,
} from '../../public/decoder-choice.js';
import { answerHasH264, reconnectDelay } from '../../public/webrtc.js';

// Broadway's judge is the server (nalcast-h264 parses the SPS; its tests hold the
// table of profiles and constraint flags): the page takes stream-info's word.
test("Broadway plays what the server's baseline flag says it can, and nothing else", () => {
  assert.equal(broadwayCanPlay({ codec: 'avc1.42E01F', baseline: true, profile: 'Constrained Baseline' }), true);
  assert.equal(broadwayCanPlay({ codec: 'avc1.4DC01F', baseline: true, profile: 'Main' }), true);
  assert.equal(broadwayCanPlay({ codec: 'avc1.4D401F', baseline: false, profile: 'Main' }), false);
  assert.equal(broadwayCanPlay({ codec: 'avc1.42E01F' }), false, 'no word from the server: no');
  assert.equal(broadwayCanPlay({ codec: 'avc1.42E01F', baseline: 'true' }), false);
  assert.equal(broadwayCanPlay(null), false);
});

test("the profile's name is the server's", () => {
  assert.equal(profileName({ codec: 'avc1.640028', profile: 'High' }), 'High');
  assert.equal(profileName({ codec: 'avc1.42C01F', profile: 'Constrained Baseline' }), 'Constrained Baseline');
  for (const info of [undefined, null, {}, { profile: '' }, { profile: 42 }, { codec: 'avc1.640028' }]) {
    assert.equal(profileName(info), null, JSON.stringify(info));
  }
});

test('decoder choice: WebCodecs where it can, Broadway for Baseline only, else none', () => {
  const main = { codec: 'avc1.4D401F', baseline: false, profile: 'Main' };
  const base = { codec: 'avc1.42C01F', baseline: true, profile: 'Constrained Baseline' };
  const pick = (info, wanted, webcodecs) => chooseDecoder(info, { wanted, webcodecs }).decoder;
  // A secure page.
  assert.equal(pick(main, 'auto', true), 'webcodecs');
  assert.equal(pick(base, 'auto', true), 'webcodecs');
  assert.equal(pick(base, 'broadway', true), 'broadway');
  assert.equal(pick(main, 'broadway', true), 'webcodecs', 'forcing Broadway does not feed it Main');
  assert.match(chooseDecoder(main, { wanted: 'broadway', webcodecs: true }).note, /Broadway.js cannot decode Main profile/);
  // Plain HTTP: no WebCodecs.
  assert.equal(pick(base, 'auto', false), 'broadway');
  assert.equal(pick(base, 'webcodecs', false), 'broadway');
  assert.match(chooseDecoder(base, { wanted: 'webcodecs', webcodecs: false }).note, /WebCodecs is not available/);
  for (const wanted of ['auto', 'broadway', 'webcodecs']) {
    assert.equal(pick(main, wanted, false), null, `Main on plain HTTP, ?decoder=${wanted}`);
    assert.equal(pick({ codec: 'avc1.640028', baseline: false, profile: 'High' }, wanted, false), null);
  }
  // WebCodecs needs a codec string.
  assert.equal(pick({ baseline: true }, 'auto', true), 'broadway');
  assert.equal(pick({}, 'auto', true), null);
});

test('the explanation says why and what to do, for the case at hand', () => {
  const main = { codec: 'avc1.4D401F', baseline: false, profile: 'Main' };
  const http = explainUnplayable(main, { secure: false, hasWebCodecs: false });
  const all = (e) => [e.title, e.why, ...e.todo, e.after].join('\n');
  assert.equal(http.title, 'Main profile video cannot play on a plain-HTTP page');
  assert.match(http.why, /Main profile \(avc1\.4D401F\)/);
  assert.match(http.why, /plain-HTTP/);
  assert.match(http.why, /Baseline/);
  assert.match(all(http), /--tls self-signed/);
  assert.match(all(http), /https:\/\//);
  assert.match(all(http), /rpicam-vid --profile baseline/);
  assert.match(http.short, /Main profile needs WebCodecs/);
  const old = explainUnplayable({ codec: 'avc1.640028', profile: 'High' }, { secure: true, hasWebCodecs: false });
  assert.equal(old.title, 'High profile video cannot play in this browser');
  assert.match(old.why, /High profile/);
  assert.match(all(old), /browser with WebCodecs/);
  assert.doesNotMatch(all(old), /--tls/, 'the page is already secure');
  const refused = explainUnplayable({ codec: 'avc1.F4001F' }, { secure: true, hasWebCodecs: true });
  assert.match(refused.why, /WebCodecs cannot decode it/);
  assert.match(refused.todo[0], /^Make the camera send Baseline/);
  assert.match(explainUnplayable({}, { secure: false, hasWebCodecs: false }).why, /unknown profile \(unknown codec\)/);
});

test('the choice table: secure or not, MSE or not, Baseline or Main, and what the page asked for', () => {
  const main = { codec: 'avc1.4D401F', baseline: false, profile: 'Main' };
  const base = { codec: 'avc1.42E01F', baseline: true, profile: 'Constrained Baseline' };
  // [page, stream, ?decoder=, expected]; a secure page has WebCodecs (Chromium),
  // a plain-HTTP one has not; MSE may play the codec or not.
  const pages = {
    'secure, MSE': { webcodecs: true, mse: true },
    'secure, no MSE': { webcodecs: true, mse: false },
    'plain HTTP, MSE': { webcodecs: false, mse: true },
    'plain HTTP, no MSE': { webcodecs: false, mse: false },
  };
  const table = [
    ['secure, MSE', main, 'auto', 'webcodecs'],
    ['secure, MSE', base, 'auto', 'webcodecs'],
    ['secure, MSE', main, 'mse', 'mse'],
    ['secure, MSE', base, 'broadway', 'broadway'],
    ['secure, no MSE', main, 'mse', 'webcodecs'],
    ['plain HTTP, MSE', main, 'auto', 'mse'],
    ['plain HTTP, MSE', base, 'auto', 'mse'],
    ['plain HTTP, MSE', main, 'webcodecs', 'mse'],
    ['plain HTTP, MSE', main, 'broadway', 'mse'],
    ['plain HTTP, MSE', base, 'broadway', 'broadway'],
    ['plain HTTP, no MSE', base, 'auto', 'broadway'],
    ['plain HTTP, no MSE', base, 'mse', 'broadway'],
    ['plain HTTP, no MSE', main, 'auto', null],
    ['plain HTTP, no MSE', main, 'mse', null],
  ];
  for (const [page, info, wanted, want] of table) {
    assert.equal(chooseDecoder(info, { wanted, ...pages[page] }).decoder, want, `${page}, ${info.codec}, ?decoder=${wanted}`);
  }
  const note = (info, wanted, page) => chooseDecoder(info, { wanted, ...pages[page] }).note;
  assert.equal(note(main, 'broadway', 'plain HTTP, MSE'), 'Broadway.js cannot decode Main profile; using Media Source Extensions');
  assert.equal(note(main, 'webcodecs', 'plain HTTP, MSE'), 'WebCodecs is not available here (it needs https or localhost); using Media Source Extensions');
  assert.equal(note(base, 'mse', 'plain HTTP, no MSE'), 'Media Source Extensions cannot play avc1.42E01F here; using Broadway.js');
  assert.equal(note(main, 'auto', 'plain HTTP, MSE'), null);
  // MSE, like WebCodecs, needs a codec string.
  assert.equal(chooseDecoder({ baseline: true }, { mse: true }).decoder, 'broadway');
});

test('the first endpoint: /ws/fmp4 where MSE will likely play, else /ws', () => {
  assert.equal(firstEndpoint({ wanted: 'auto', webcodecs: false, mse: true }), 'ws/fmp4', 'plain HTTP with MSE');
  assert.equal(firstEndpoint({ wanted: 'auto', webcodecs: true, mse: true }), 'ws', 'secure: WebCodecs');
  assert.equal(firstEndpoint({ wanted: 'mse', webcodecs: true, mse: true }), 'ws/fmp4', '?decoder=mse');
  assert.equal(firstEndpoint({ wanted: 'webcodecs', webcodecs: false, mse: true }), 'ws/fmp4', 'no WebCodecs to grant');
  assert.equal(firstEndpoint({ wanted: 'broadway', webcodecs: false, mse: true }), 'ws');
  assert.equal(firstEndpoint({ wanted: 'auto', webcodecs: false, mse: false }), 'ws', 'no MSE');
  assert.equal(firstEndpoint({ wanted: 'mse', webcodecs: false, mse: false }), 'ws');
  assert.deepEqual(['webcodecs', 'mse', 'broadway'].map(endpointOf), ['ws', 'ws/fmp4', 'ws']);
});

test('on plain HTTP with MSE that refuses the codec, the explanation says so', () => {
  const e = explainUnplayable({ codec: 'avc1.F4001F' }, { secure: false, hasWebCodecs: false, hasMse: true });
  const withHls = explainUnplayable({ codec: 'avc1.640028' }, {
    secure: false, hasWebCodecs: false, hls: 'http://camera.lan:8000/hls/index.m3u8',
  });
  assert.match(withHls.todo.at(-1), /LL-HLS stream.*Safari.*`http:\/\/camera\.lan:8000\/hls\/index\.m3u8`/);
  assert.match(e.why, /Media Source Extensions, which cannot play this stream/);
  assert.match(e.todo[0], /--tls self-signed/);
});

test('WebRTC is tried on plain HTTP (no WebCodecs) and when asked for, never when another decoder is', () => {
  assert.equal(triesWebrtc({ wanted: 'auto', webcodecs: false, webrtc: true }), true, 'plain HTTP');
  assert.equal(triesWebrtc({ wanted: 'auto', webcodecs: true, webrtc: true }), false, 'secure page: WebCodecs');
  assert.equal(triesWebrtc({ wanted: 'webrtc', webcodecs: true, webrtc: true }), true, '?decoder=webrtc');
  assert.equal(triesWebrtc({ wanted: 'webrtc', webcodecs: false, webrtc: false }), false, 'no RTCPeerConnection');
  assert.equal(triesWebrtc({ wanted: 'auto', webcodecs: false, webrtc: false }), false);
  for (const wanted of ['mse', 'broadway', 'webcodecs']) {
    assert.equal(triesWebrtc({ wanted, webcodecs: false, webrtc: true }), false, wanted);
  }
});

test("a WHEP answer plays only when its video section kept H.264", () => {
  const answer = (video) => ['v=0', 'o=- 1 1 IN IP4 0.0.0.0', 's=-', 't=0 0', video, 'a=mid:0',
    'a=rtpmap:102 H264/90000', 'a=fmtp:102 packetization-mode=1'].join('\r\n');
  assert.equal(answerHasH264(answer('m=video 9 UDP/TLS/RTP/SAVPF 102')), true);
  assert.equal(answerHasH264(answer('m=video 0 UDP/TLS/RTP/SAVPF 102')), false, 'rejected section');
  assert.equal(answerHasH264(answer('m=audio 9 UDP/TLS/RTP/SAVPF 102')), false, 'not video');
  assert.equal(answerHasH264('m=video 9 UDP/TLS/RTP/SAVPF 96\na=rtpmap:96 VP8/90000'), false);
});

test('WebRTC reconnects quickly at first, then every 5 s', () => {
  assert.deepEqual([0, 1, 2, 3, 4, 5, 9].map(reconnectDelay), [250, 500, 1000, 2000, 4000, 5000, 5000]);
});
