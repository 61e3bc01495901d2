// The page's connection to the server: one WebSocket at a time, on the endpoint
// whose format the chosen decoder takes (/ws/fmp4 for Media Source Extensions, /ws
// for the others), reconnected with backoff when it drops, with pings for the clock
// offset. No DOM: the socket factory and the timers come in, so node tests drive it.
import { ENDPOINT_ANNEX_B, ENDPOINT_FMP4 } from './decoder-choice.js';

const PING_EVERY_MS = 2000;
const SOCKET_OPEN = 1; // WebSocket.OPEN
// After this many attempts at /ws/fmp4 that never opened, try /ws once: a server
// without /ws/fmp4 (older than the page) still plays, with WebCodecs or Broadway.js.
const FMP4_ATTEMPTS = 3;

/** Reconnect delays: 250 ms after a drop, doubling up to 5 s; back to 250 ms once connected. */
export class Backoff {
  constructor(firstMs = 250, maxMs = 5000) {
    this.firstMs = firstMs;
    this.maxMs = maxMs;
    this.delayMs = firstMs;
  }

  /** The delay before the next attempt. */
  next() {
    const delay = this.delayMs;
    this.delayMs = Math.min(this.delayMs * 2, this.maxMs);
    return delay;
  }

  reset() {
    this.delayMs = this.firstMs;
  }
}

/**
 * The offset between the page's clock and the server's, from ping/pong round trips
 * (NTP style: the server's time is taken to be that of the round trip's midpoint).
 */
export class ClockSync {
  constructor() {
    /** The sample in use: {rtt, offset} in ms; null before the first pong. */
    this.best = null;
  }

  reset() {
    this.best = null;
  }

  /**
   * Takes a pong: `sentMs` the ping's time and `receivedMs` the pong's, page clock;
   * `serverMs` the server's clock in between. Trusts samples whose round trip is not
   * much longer than the one in use; returns whether this one was taken.
   */
  sample(sentMs, serverMs, receivedMs) {
    const rtt = receivedMs - sentMs;
    if (!Number.isFinite(rtt) || (this.best && rtt > this.best.rtt * 1.5)) return false;
    this.best = { rtt, offset: serverMs - (sentMs + receivedMs) / 2 };
    return true;
  }
}

/**
 * The connection. Collaborators:
 *   endpoint        the first endpoint ('ws' or 'ws/fmp4')
 *   openSocket(endpoint)   a WebSocket to it; the connection sets its handlers
 *   timers          {setTimeout, clearTimeout, setInterval, clearInterval}
 *   events          connecting(endpoint), open(), message(data), dropped() (a new
 *                   attempt follows after the backoff), ping() (send one now)
 */
export class Connection {
  constructor({ endpoint, openSocket, timers, events }) {
    this.endpoint = endpoint;
    this.openSocket = openSocket;
    this.timers = timers;
    this.events = events;
    this.ws = null;
    this.fmp4Failures = 0; // attempts at /ws/fmp4 in a row that never opened
    this.probingAnnexB = false; // trying /ws after those: if it opens, /ws/fmp4 is missing
    this.fmp4Missing = false; // the server has no /ws/fmp4: no MSE
    this.backoff = new Backoff();
    this.pingTimer = 0;
  }

  /** Opens a socket to the endpoint; from here on the connection reconnects by itself. */
  connect() {
    const endpoint = this.endpoint;
    const socket = this.openSocket(endpoint);
    this.ws = socket;
    this.events.connecting(endpoint);
    let opened = false;
    socket.onopen = () => {
      opened = true;
      if (endpoint === ENDPOINT_FMP4) this.fmp4Failures = 0;
      if (this.probingAnnexB) {
        // /ws opens where /ws/fmp4 never did: this server has no fMP4.
        this.probingAnnexB = false;
        this.fmp4Missing = true;
      }
      this.events.open();
      // A few pings at once for a first offset, then one now and then to follow drift.
      for (let i = 0; i < 3; i++) this.timers.setTimeout(() => this.events.ping(), i * 100);
      this.timers.clearInterval(this.pingTimer);
      this.pingTimer = this.timers.setInterval(() => this.events.ping(), PING_EVERY_MS);
    };
    socket.onmessage = (ev) => this.events.message(ev.data);
    socket.onclose = () => {
      if (this.ws !== socket) return;
      this.timers.clearInterval(this.pingTimer);
      if (!opened) this.noteFailedOpen(endpoint);
      // The last picture stays on screen; try again with backoff.
      this.events.dropped();
      this.timers.setTimeout(() => this.connect(), this.backoff.next());
    };
  }

  /**
   * This connection showed a picture: the delays start over. (Not when it opens: a
   * server that drops viewers at once is retried ever slower.)
   */
  proven() {
    this.backoff.reset();
  }

  /** After a connection attempt that never opened: give /ws a try when /ws/fmp4 keeps failing. */
  noteFailedOpen(endpoint) {
    if (endpoint === ENDPOINT_FMP4 && ++this.fmp4Failures >= FMP4_ATTEMPTS) {
      this.fmp4Failures = 0;
      this.probingAnnexB = true;
      this.endpoint = ENDPOINT_ANNEX_B;
    } else if (this.probingAnnexB) {
      // Neither opens: the server is down, not lacking /ws/fmp4.
      this.probingAnnexB = false;
      this.endpoint = ENDPOINT_FMP4;
    }
  }

  /** Drops the connection and connects to `endpoint` at once (no backoff: nothing failed). */
  switchTo(endpoint) {
    const old = this.ws;
    this.endpoint = endpoint;
    this.timers.clearInterval(this.pingTimer);
    if (old) {
      old.onclose = () => {};
      old.onmessage = () => {};
      old.close();
    }
    this.connect();
  }

  /** Sends a text message; false when not connected. */
  send(text) {
    if (this.ws?.readyState !== SOCKET_OPEN) return false;
    this.ws.send(text);
    return true;
  }
}
