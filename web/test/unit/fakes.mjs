// Stand-ins the page's node tests share: a clock with timers the test moves on, and
// a WebSocket the test opens, closes and feeds.

/** Timers that fire when the test moves the clock on. */
export class FakeTime {
  constructor() {
    this.nowMs = 0;
    this.pending = new Map(); // id -> {at, f, every}
    this.nextId = 1;
  }

  now = () => this.nowMs;

  timers = {
    setTimeout: (f, ms) => this.add(f, ms, null),
    clearTimeout: (id) => this.pending.delete(id),
    setInterval: (f, ms) => this.add(f, ms, ms),
    clearInterval: (id) => this.pending.delete(id),
  };

  add(f, ms, every) {
    const id = this.nextId++;
    this.pending.set(id, { at: this.nowMs + ms, f, every });
    return id;
  }

  /** Moves the clock on by `ms`, firing what falls due in order. */
  advance(ms) {
    const end = this.nowMs + ms;
    for (;;) {
      let next = null;
      for (const [id, t] of this.pending) if (t.at <= end && (!next || t.at < next[1].at)) next = [id, t];
      if (!next) break;
      const [id, t] = next;
      this.nowMs = t.at;
      if (t.every === null) this.pending.delete(id);
      else t.at += t.every;
      t.f();
    }
    this.nowMs = end;
  }
}

export class FakeSocket {
  constructor() {
    this.readyState = 0;
    this.sent = [];
  }

  send(text) { this.sent.push(text); }

  open() {
    this.readyState = 1;
    this.onopen();
  }

  close() {
    this.readyState = 3;
    this.onclose();
  }

  receive(bytes) { this.onmessage({ data: bytes.buffer }); }
}
