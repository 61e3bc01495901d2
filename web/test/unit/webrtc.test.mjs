// The WebRTC player's decisions without a browser: fakes for the peer connection,
// fetch and the <video>, node's mock timers for time.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { WebRtcPlayer, CONNECT_TIMEOUT_MS } from '../../public/webrtc.js';

const ANSWER = 'v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 102\r\na=mid:0\r\na=rtpmap:102 H264/90000\r\n';

/** A peer connection whose ICE never comes up (a firewall drops the UDP port), or does. */
function fakes({ connects }) {
  const made = [];
  class FakePc {
    constructor() { this.connectionState = 'new'; made.push(this); }
    addTransceiver() { return { setCodecPreferences() {} }; }
    async createOffer() { return { type: 'offer', sdp: 'v=0\r\n' }; }
    async setLocalDescription() {}
    async setRemoteDescription() {
      this.connectionState = connects ? 'connected' : 'checking';
    }
    close() { this.connectionState = 'closed'; }
    async getStats() { return new Map(); }
  }
  globalThis.RTCPeerConnection = FakePc;
  globalThis.RTCRtpReceiver = { getCapabilities: () => ({ codecs: [{ mimeType: 'video/H264' }] }) };
  globalThis.document = { createElement: () => ({ setAttribute() {}, play: async () => {} }) };
  const requests = [];
  globalThis.fetch = async (url, init = {}) => {
    requests.push({ url: String(url), method: init.method ?? 'GET' });
    if (init.method === 'POST') {
      return { status: 201, text: async () => ANSWER, headers: new Map([['Location', '/streams/camera/whep/abc']]) };
    }
    return { ok: false, status: 200, text: async () => '', json: async () => ({}) };
  };
  return { made, requests };
}

const view = { showState() {}, paint() {}, readStamp: () => null };

test('a WebRTC connection that does not come up in time hands over to the WebSocket player, ending the session', async (t) => {
  t.mock.timers.enable({ apis: ['setTimeout', 'setInterval'] });
  const { requests } = fakes({ connects: false });
  let reason = null;
  const rtc = new WebRtcPlayer({ view, onUnavailable: (r) => { reason = r; }, base: 'http://camera.lan:8000/' });
  rtc.start();
  await new Promise((r) => setImmediate(r));
  await new Promise((r) => setImmediate(r));
  assert.equal(requests[0].method, 'POST');
  assert.equal(requests[0].url, 'http://camera.lan:8000/whep');
  t.mock.timers.tick(CONNECT_TIMEOUT_MS - 1);
  assert.equal(reason, null, 'not before the time is up');
  t.mock.timers.tick(1);
  assert.match(reason, /no WebRTC connection within 5 s/);
  assert.ok(requests.some((r) => r.method === 'DELETE' && r.url === 'http://camera.lan:8000/streams/camera/whep/abc'),
    'the session given up is ended on the server');
});

test('a WebRTC connection that comes up is kept however long the first picture takes', async (t) => {
  t.mock.timers.enable({ apis: ['setTimeout', 'setInterval'] });
  fakes({ connects: true });
  let reason = null;
  const rtc = new WebRtcPlayer({ view, onUnavailable: (r) => { reason = r; }, base: 'http://camera.lan:8000/' });
  rtc.start();
  await new Promise((r) => setImmediate(r));
  await new Promise((r) => setImmediate(r));
  t.mock.timers.tick(CONNECT_TIMEOUT_MS * 3);
  assert.equal(reason, null);
  rtc.stop();
});
