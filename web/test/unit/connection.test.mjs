// The connection without a browser: stand-in sockets and timers.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Backoff, ClockSync, Connection } from '../../public/connection.js';
import { FakeSocket, FakeTime } from './fakes.mjs';

test('reconnect delays double from 250 ms up to 5 s, and start over once connected', () => {
  const b = new Backoff();
  assert.deepEqual([1, 2, 3, 4, 5, 6, 7].map(() => b.next()), [250, 500, 1000, 2000, 4000, 5000, 5000]);
  b.reset();
  assert.equal(b.next(), 250);
});

test('the clock offset comes from the pong with the shortest round trip', () => {
  const sync = new ClockSync();
  // Sent at 1000, back at 1020: the server's 5000 is taken to be our 1010.
  assert.equal(sync.sample(1000, 5000, 1020), true);
  assert.deepEqual(sync.best, { rtt: 20, offset: 3990 });
  assert.equal(sync.sample(2000, 6000, 2100), false, 'a round trip five times longer says little');
  assert.deepEqual(sync.best, { rtt: 20, offset: 3990 });
  assert.equal(sync.sample(3000, 6990, 3020), true);
  assert.equal(sync.best.offset, 3980);
  assert.equal(sync.sample(Number.NaN, 0, 1), false);
});

/** A connection to `endpoint` whose sockets and events the test sees. */
function setup(endpoint = 'ws/fmp4') {
  const time = new FakeTime();
  const sockets = [];
  const events = [];
  const connection = new Connection({
    endpoint,
    openSocket: (e) => {
      const s = new FakeSocket();
      s.endpoint = e;
      sockets.push(s);
      return s;
    },
    timers: time.timers,
    events: {
      connecting: (e) => events.push(`connecting ${e}`),
      open: () => events.push('open'),
      message: () => events.push('message'),
      dropped: () => events.push('dropped'),
      ping: () => events.push('ping'),
    },
  });
  return { connection, time, sockets, events, last: () => sockets.at(-1) };
}

test('a drop is retried after the backoff, slower each time until a picture proves the connection', () => {
  const { connection, time, sockets, events, last } = setup('ws');
  connection.connect();
  last().open();
  last().close();
  assert.deepEqual(events.slice(0, 3), ['connecting ws', 'open', 'dropped']);
  time.advance(249);
  assert.equal(sockets.length, 1, 'not before 250 ms');
  time.advance(1);
  assert.equal(sockets.length, 2);
  last().open();
  last().close();
  time.advance(499);
  assert.equal(sockets.length, 2, 'opening is not proof: 500 ms now');
  time.advance(1);
  assert.equal(sockets.length, 3);
  connection.proven();
  last().open();
  last().close();
  time.advance(250);
  assert.equal(sockets.length, 4, 'a picture started the delays over');
});

test('/ws/fmp4 that never opens three times: /ws is tried; if it opens, the server has no fMP4', () => {
  const { connection, time, sockets, last } = setup('ws/fmp4');
  connection.connect();
  for (let i = 0; i < 3; i++) {
    last().close();
    time.advance(5000);
  }
  assert.deepEqual(sockets.map((s) => s.endpoint), ['ws/fmp4', 'ws/fmp4', 'ws/fmp4', 'ws']);
  last().open();
  assert.equal(connection.fmp4Missing, true);
});

test('when /ws fails too the server is down: back to /ws/fmp4, fMP4 not ruled out', () => {
  const { connection, time, sockets, last } = setup('ws/fmp4');
  connection.connect();
  for (let i = 0; i < 4; i++) {
    last().close();
    time.advance(5000);
  }
  assert.deepEqual(sockets.map((s) => s.endpoint), ['ws/fmp4', 'ws/fmp4', 'ws/fmp4', 'ws', 'ws/fmp4']);
  assert.equal(connection.fmp4Missing, false);
});

test('switching endpoints closes the old socket quietly and connects at once', () => {
  const { connection, sockets, events, last } = setup('ws');
  connection.connect();
  last().open();
  connection.switchTo('ws/fmp4');
  assert.equal(sockets.length, 2);
  assert.equal(sockets[0].readyState, 3);
  assert.equal(last().endpoint, 'ws/fmp4');
  assert.ok(!events.includes('dropped'), 'a switch is no drop');
  assert.equal(connection.send('x'), false, 'nothing is sent before the new socket opens');
  last().open();
  assert.equal(connection.send('x'), true);
  assert.deepEqual(last().sent, ['x']);
});

test('pings: three on opening, then one every 2 s, none after a drop', () => {
  const { connection, time, events, last } = setup('ws');
  connection.connect();
  last().open();
  time.advance(200);
  assert.equal(events.filter((e) => e === 'ping').length, 3);
  time.advance(4000);
  assert.equal(events.filter((e) => e === 'ping').length, 5);
  last().close();
  time.advance(200); // the reconnect attempt, which does not open
  assert.equal(events.filter((e) => e === 'ping').length, 5);
});
