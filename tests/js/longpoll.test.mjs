// subscribe() over long-poll against a fake fetch: snapshot, cursors, 410
// resync swap, errors and backoff, stall, filters, one request at a time,
// unsubscribe.
import test from 'node:test';
import assert from 'node:assert/strict';
import { subscribe, STATES, rowKey } from '../../htdocs/tailgate.js';
import { FeedModel } from './helpers/feedmodel.mjs';
import { makeFetch, json, until, sleep, bag } from './helpers/fakefetch.mjs';

const COLS = [
  { name: 'auction_id', type: 'int8' },
  { name: 'buyer', type: 'int8' },
  { name: 'amount', type: 'int4' },
];
const ROWS = [
  [1, 10, 5],
  [2, 11, 50],
  [3, 12, 70],
];

function setup({ rows = ROWS, capacity = 64, opts = {} } = {}) {
  const m = new FeedModel('w', COLS, rows, { capacity });
  const fetch = makeFetch(new Map([['w', m]]), { timeScale: 1 }); // timeout=25 -> 25 ms
  const events = [];
  const states = [];
  const errors = [];
  const sub = subscribe('/feeds/w', {
    fetch,
    onBatch: (batch, change) => events.push({ batch, change }),
    onState: (s, d) => states.push([s, d]),
    onError: (e) => errors.push(e),
    backoff: { base: 1, cap: 5 },
    ...opts,
  });
  return { m, fetch, sub, events, states, errors };
}

const polls = (fetch) => fetch.calls.filter((c) => c.query.has('cursor'));
const snapshots = (fetch) => fetch.calls.filter((c) => !c.query.has('cursor'));
const stateNames = (states) => states.map(([s]) => s);
const synced = (sub, m, filter = (r) => true) => () =>
  sub.cursor === m.head && JSON.stringify(bag(sub.rows())) === JSON.stringify(bag(m.rows().filter(filter)));

test('snapshot, then long-polls from the returned cursor', async (t) => {
  const { m, fetch, sub, events, states } = setup();
  t.after(() => sub.unsubscribe());
  assert.equal(sub.state, STATES.CONNECTING);
  assert.equal(states.length, 0, 'no callback before subscribe() returns');
  await until(() => events.length === 1, 2000, 'snapshot');
  assert.equal(events[0].change.kind, 'snapshot');
  assert.deepEqual(bag(sub.rows()), bag(ROWS));
  assert.equal(sub.cursor, m.head);
  assert.equal(sub.state, STATES.LIVE);
  assert.deepEqual(stateNames(states), ['connecting', 'live']);
  assert.deepEqual(sub.columns, COLS);
  assert.deepEqual(
    sub.objects().map((o) => o.amount).sort((a, b) => a - b),
    [5, 50, 70],
  );

  await until(() => polls(fetch).length >= 1, 2000, 'first poll');
  const c1 = m.publish({ inserted: [[4, 13, 99]], deleted: [[1, 10, 5]] });
  await until(() => events.length === 2, 2000, 'delta');
  assert.equal(events[1].change.kind, 'delta');
  assert.deepEqual(events[1].batch, { timestamp: c1, inserted: [[4, 13, 99]], deleted: [[1, 10, 5]] });
  assert.deepEqual(events[1].change.insert, [{ auction_id: 4, buyer: 13, amount: 99 }]);
  assert.deepEqual(events[1].change.remove, [{ auction_id: 1, buyer: 10, amount: 5 }]);
  assert.equal(sub.cursor, c1);
  const p = polls(fetch);
  assert.equal(p[0].query.get('cursor'), events[0].change.cursor);
  assert.equal(p[0].query.has('timeout'), false, "the server's own timeout unless one is given");
  await until(() => polls(fetch).some((c) => c.query.get('cursor') === c1), 2000, 'poll from the new cursor');
  assert.equal(fetch.maxInflight, 1);
});

test('empty replies at the timeout: poll again with the cursor returned', async (t) => {
  const { m, fetch, sub, events } = setup({ opts: { filter: { amount: 'gte.50' }, timeout: 10 } });
  t.after(() => sub.unsubscribe());
  await until(() => events.length === 1);
  assert.deepEqual(bag(sub.rows()), bag([[2, 11, 50], [3, 12, 70]]));
  await until(() => polls(fetch).length >= 3, 2000, 'three empty polls');
  assert.equal(new Set(polls(fetch).map((c) => c.query.get('cursor'))).size, 1);
  // A batch the filter drops: the server answers empty at the timeout, with
  // a newer cursor, which the client must use.
  const c1 = m.publish({ inserted: [[9, 9, 1]] });
  await until(() => polls(fetch).some((c) => c.query.get('cursor') === c1), 2000, 'advanced cursor');
  assert.equal(events.length, 1, 'no batch for rows the filter drops');
  for (const c of fetch.calls) assert.equal(c.query.get('amount'), 'gte.50', 'the filter goes with every request');
  for (const c of polls(fetch)) assert.equal(c.query.get('timeout'), '10', 'a timeout given is sent');
});

test('410: the rows stay until the new snapshot is in, then the difference is one batch', async (t) => {
  const { m, fetch, sub, events, states } = setup();
  t.after(() => sub.unsubscribe());
  await until(() => events.length === 1);
  await until(() => polls(fetch).length === 1, 2000, 'in a poll');
  const before = sub.objects();
  const kept = before.find((o) => o.auction_id === 2);

  let release;
  const gate = new Promise((r) => (release = r));
  fetch.script.push(() => json(410, { error: 'cursor_gone', message: 'take a new snapshot' }));
  fetch.script.push(async () => {
    await gate; // the snapshot is slow: the page must keep its rows meanwhile
  });
  m.publish({ inserted: [[4, 13, 40]] }); // ends the poll in flight
  await until(() => sub.state === STATES.RESYNCING, 2000, 'resyncing');
  await until(() => snapshots(fetch).length === 2, 2000, 'second snapshot requested');
  // Meanwhile the upstream moves on and the ring forgets.
  m.publish({ inserted: [[5, 14, 60]], deleted: [[1, 10, 5]] });
  m.newHistory();
  await sleep(20);
  assert.equal(sub.state, STATES.RESYNCING);
  assert.deepEqual(bag(sub.rows()), bag([...ROWS, [4, 13, 40]]), 'rows kept while resyncing');
  const n = events.length;
  release();
  await until(() => events.length === n + 1, 2000, 'resync batch');
  const { batch, change } = events[n];
  assert.equal(change.kind, 'resync');
  assert.deepEqual(bag(batch.inserted), bag([[5, 14, 60]]));
  assert.deepEqual(bag(batch.deleted), bag([[1, 10, 5]]));
  assert.deepEqual(change.insert, [{ auction_id: 5, buyer: 14, amount: 60 }]);
  assert.equal(change.remove.length, 1);
  assert.ok(before.includes(change.remove[0]), 'removed object is the one handed out before');
  assert.ok(sub.objects().includes(kept), 'unchanged rows keep their objects');
  assert.deepEqual(bag(sub.rows()), bag(m.rows()));
  assert.equal(sub.cursor, m.head);
  assert.equal(sub.state, STATES.LIVE);
  assert.ok(stateNames(states).includes('resyncing'));
  assert.equal(sub.stats.resyncs, 1);
  // And it carries on from the new history's cursor.
  m.publish({ inserted: [[6, 1, 1]] });
  await until(synced(sub, m), 2000, 'synced after resync');
  assert.equal(fetch.maxInflight, 1);
});

test('410 from a cursor the ring dropped, without scripting', async (t) => {
  const { m, fetch, sub, events } = setup({ capacity: 2 });
  t.after(() => sub.unsubscribe());
  await until(() => events.length === 1);
  // Hold the client back (its next poll waits), let the ring overflow.
  let release;
  const gate = new Promise((r) => (release = r));
  fetch.script.push(async () => {
    await gate;
  });
  await until(() => polls(fetch).length >= 1);
  m.publish({ inserted: [[7, 1, 1]] }); // ends the current poll
  await until(() => polls(fetch).length >= 2, 2000, 'held poll');
  for (let i = 0; i < 5; i++) m.publish({ inserted: [[100 + i, 1, i]] });
  release();
  await until(() => sub.stats.resyncs === 1, 2000, 'resync');
  await until(synced(sub, m), 2000, 'synced');
});

test('410 again right after a new snapshot backs off instead of spinning', async (t) => {
  const delays = [];
  const { fetch, sub, events, states } = setup({ opts: { backoff: { base: 40, cap: 1000 }, random: () => 0.99 } });
  t.after(() => sub.unsubscribe());
  await until(() => events.length === 1);
  await until(() => polls(fetch).length >= 1);
  // Every poll answers 410 (as a proxy caching the resync answer would).
  for (let i = 0; i < 8; i++) fetch.script.push((c) => (c.query.has('cursor') ? json(410, { error: 'cursor_gone' }) : undefined));
  await until(() => snapshots(fetch).length >= 4, 3000, 'several snapshots');
  for (const [s, d] of states) if (d.reason === 'gone again') delays.push(d.delay);
  assert.ok(delays.length >= 2, 'backed off');
  assert.ok(delays[1] > delays[0], `growing delays ${delays}`);
  assert.ok(delays.every((d) => d < 1000));
});

test('errors: 503, 500, network failure -> reconnecting with jittered backoff, same cursor', async (t) => {
  const draws = [];
  const random = () => {
    const r = 0.5;
    draws.push(r);
    return r;
  };
  const { m, fetch, sub, events, states } = setup({ opts: { backoff: { base: 8, cap: 20 }, random } });
  t.after(() => sub.unsubscribe());
  await until(() => events.length === 1);
  await until(() => polls(fetch).length === 1);
  const cursor = sub.cursor;
  fetch.script.push(() => json(503, { error: 'feed_not_live', message: 'upstream down' }));
  fetch.script.push(() => json(500, { error: 'internal' }));
  fetch.script.push(() => {
    throw new TypeError('fetch failed');
  });
  fetch.script.push(() => new Response('<html>bad gateway</html>', { status: 502 }));
  fetch.script.push(() => new Response('not json', { status: 200 }));
  m.publish({ inserted: [[8, 1, 1]] });
  await until(() => events.length === 2);
  await until(() => polls(fetch).length >= 7, 3000, 'retries');
  const retried = polls(fetch).slice(1, 6).map((c) => c.query.get('cursor'));
  assert.deepEqual(new Set(retried).size, 1, 'every retry asks with the same cursor');
  assert.notEqual(retried[0], cursor);
  const rec = states.filter(([s]) => s === 'reconnecting').map(([, d]) => d);
  assert.deepEqual(rec.map((d) => d.failures), [1, 2, 3, 4, 5].slice(0, rec.length));
  assert.ok(rec.length >= 4);
  assert.deepEqual(rec.slice(0, 3).map((d) => d.status), [503, 500, undefined]);
  assert.match(rec[0].error, /upstream down/);
  // Full jitter: random() * min(cap, base * 2^(n-1)) with random = 0.5.
  assert.deepEqual(rec.slice(0, 4).map((d) => d.delay), [4, 8, 10, 10]);
  await until(() => sub.state === STATES.LIVE, 2000, 'live again');
  assert.deepEqual(bag(sub.rows()), bag(m.rows()));
  assert.equal(fetch.maxInflight, 1);
});

test('Retry-After on 503 is honoured (up to the cap)', async (t) => {
  const { fetch, sub, events, states } = setup({ opts: { backoff: { base: 1, cap: 2000 }, random: () => 0 } });
  t.after(() => sub.unsubscribe());
  await until(() => events.length === 1);
  fetch.script.push(() => json(503, { error: 'feed_not_live' }, { 'retry-after': '1' }));
  await until(() => states.some(([s]) => s === 'reconnecting'), 2000);
  const d = states.find(([s]) => s === 'reconnecting')[1];
  assert.equal(d.delay, 1000);
});

test('repeated failures -> stalled; recovery -> live', async (t) => {
  const { m, fetch, sub, events, states } = setup({ opts: { stallFailures: 3 } });
  t.after(() => sub.unsubscribe());
  await until(() => events.length === 1);
  for (let i = 0; i < 4; i++)
    fetch.script.push(() => {
      throw new TypeError('fetch failed');
    });
  m.publish({ inserted: [[8, 1, 1]] });
  await until(() => stateNames(states).includes('stalled'), 2000, 'stalled');
  const names = stateNames(states);
  assert.deepEqual(names.slice(names.indexOf('live') + 1, names.indexOf('stalled') + 1), ['reconnecting', 'reconnecting', 'stalled']);
  await until(() => sub.state === STATES.LIVE, 2000, 'recovered');
  await until(synced(sub, m), 2000);
});

test('no reply for 2x the timeout -> stalled; the hung request is given up and retried', async (t) => {
  const { m, fetch, sub, events, states } = setup({ opts: { stallAfter: 60, requestTimeout: 150 } });
  t.after(() => sub.unsubscribe());
  await until(() => events.length === 1);
  await until(() => polls(fetch).length === 1);
  fetch.script.push(() => new Promise(() => {})); // a server that never answers
  m.publish({ inserted: [[8, 1, 1]] });
  await until(() => sub.state === STATES.STALLED, 2000, 'stalled');
  const hung = polls(fetch)[1];
  await until(() => hung.init.signal.aborted, 2000, 'hung request aborted at the deadline');
  await until(() => sub.state === STATES.LIVE, 2000, 'live again');
  await until(synced(sub, m), 2000);
  assert.ok(stateNames(states).indexOf('stalled') < stateNames(states).lastIndexOf('live'));
});

test('400 (a filter the server refuses) -> failed, no retry', async (t) => {
  const { fetch, sub, states } = setup({ opts: { filter: { nosuchcolumn: 'eq.1' } } });
  t.after(() => sub.unsubscribe());
  await until(() => sub.state === STATES.FAILED, 2000);
  const [, d] = states.find(([s]) => s === 'failed');
  assert.equal(d.status, 400);
  assert.match(d.error, /unknown column/);
  await sleep(30);
  assert.equal(fetch.calls.length, 1);
});

test('after a 400, setFilter() with a good filter starts again', async (t) => {
  const { m, fetch, sub, events } = setup({ opts: { filter: { nosuchcolumn: 'eq.1' } } });
  t.after(() => sub.unsubscribe());
  await until(() => sub.state === STATES.FAILED, 2000);
  sub.setFilter({ amount: 'gte.50' });
  await until(() => sub.state === STATES.LIVE, 2000);
  assert.equal(events[0].change.kind, 'snapshot');
  await until(synced(sub, m, (r) => r[2] >= 50), 2000);
  // Also when the page reacts inside onState('failed') itself.
  let again = 0;
  const { sub: sub2, fetch: fetch2 } = setup({
    opts: {
      filter: { nosuchcolumn: 'eq.1' },
      onState: (s) => s === 'failed' && again++ === 0 && sub2.setFilter(null),
    },
  });
  t.after(() => sub2.unsubscribe());
  await until(() => sub2.state === STATES.LIVE, 2000);
  await sleep(60);
  assert.equal(fetch2.maxInflight, 1);
  sub2.unsubscribe();
  assert.equal(sub2.state, STATES.CLOSED);
});

test('404 is retried (the feed may be coming back)', async (t) => {
  const { fetch, sub, events } = setup();
  t.after(() => sub.unsubscribe());
  fetch.script.push(() => json(404, { error: 'unknown_feed' }));
  await until(() => events.length === 1, 2000);
  assert.equal(snapshots(fetch).length, 2);
});

test('unsubscribe() aborts the request in flight and stops', async () => {
  const { m, fetch, sub, events, states } = setup();
  await until(() => events.length === 1);
  await until(() => polls(fetch).length === 1);
  const inflight = polls(fetch)[0];
  assert.equal(inflight.init.signal.aborted, false);
  sub.unsubscribe();
  assert.equal(inflight.init.signal.aborted, true);
  assert.equal(sub.state, STATES.CLOSED);
  assert.equal(states.at(-1)[0], 'closed');
  const n = fetch.calls.length;
  m.publish({ inserted: [[8, 1, 1]] });
  await sleep(60);
  assert.equal(fetch.calls.length, n, 'no request after unsubscribe');
  assert.equal(events.length, 1, 'no batch after unsubscribe');
  await until(() => fetch.inflight === 0, 1000, 'nothing in flight');
  sub.unsubscribe(); // twice is fine
});

test('unsubscribe() during a backoff wait: no further request', async () => {
  const { fetch, sub } = setup({ opts: { backoff: { base: 200, cap: 200 }, random: () => 0.99 } });
  fetch.script.push(() => json(503, { error: 'feed_not_live' }));
  await until(() => sub.state === STATES.RECONNECTING, 2000);
  sub.unsubscribe();
  await sleep(300);
  assert.equal(fetch.calls.length, 1);
});

test('unsubscribe() right away: at most the first request, aborted', async () => {
  const { fetch, sub, events } = setup();
  sub.unsubscribe();
  await sleep(30);
  assert.ok(fetch.calls.length <= 1);
  assert.equal(events.length, 0);
});

test('setFilter(): aborts the poll, new snapshot with the filter, reported as a difference', async (t) => {
  const { m, fetch, sub, events } = setup();
  t.after(() => sub.unsubscribe());
  await until(() => events.length === 1);
  await until(() => polls(fetch).length === 1);
  const inflight = polls(fetch)[0];
  const objs = sub.objects();
  sub.setFilter({ amount: ['gte', 50] });
  assert.equal(inflight.init.signal.aborted, true, 'poll in flight aborted');
  assert.equal(sub.state, STATES.RESYNCING);
  await until(() => events.length === 2, 2000);
  const { batch, change } = events[1];
  assert.equal(change.kind, 'resync');
  assert.deepEqual(batch.deleted, [[1, 10, 5]]);
  assert.deepEqual(batch.inserted, []);
  assert.ok(objs.includes(change.remove[0]));
  assert.equal(snapshots(fetch).at(-1).query.get('amount'), 'gte.50');
  assert.deepEqual(sub.filter, [['amount', 'gte.50']]);
  m.publish({ inserted: [[8, 1, 1], [9, 1, 90]] });
  await until(synced(sub, m, (r) => r[2] >= 50), 2000);
  // The same filter again changes nothing; a bad one throws and changes nothing.
  const n = fetch.calls.length;
  sub.setFilter({ amount: 'gte.50' });
  assert.throws(() => sub.setFilter({ amount: 'about.50' }), TypeError);
  assert.equal(sub.state, STATES.LIVE);
  await sleep(10);
  assert.ok(fetch.calls.slice(n).every((c) => c.query.has('cursor')), 'no new snapshot');
  // Widening again brings the rows back.
  sub.setFilter(null);
  await until(synced(sub, m), 2000);
  assert.equal(fetch.maxInflight, 1);
});

test('a delete of a row the client does not hold starts a resync', async (t) => {
  const { m, fetch, sub, events, states } = setup();
  t.after(() => sub.unsubscribe());
  await until(() => events.length === 1);
  fetch.script.push((c) => json(200, { cursor: m.head, batches: [{ timestamp: m.head, inserted: [], deleted: [[77, 7, 7]] }] }));
  await until(() => states.some(([s, d]) => s === 'resyncing' && d.reason === 'diverged'), 2000);
  await until(() => sub.stats.resyncs === 1 && sub.state === STATES.LIVE, 2000);
  assert.deepEqual(bag(sub.rows()), bag(m.rows()));
});

test('a snapshot reply with later batches: folded into one snapshot batch', async (t) => {
  const { fetch, sub, events } = setup();
  t.after(() => sub.unsubscribe());
  fetch.script.push(() =>
    json(200, {
      cursor: '1003',
      columns: COLS,
      batches: [
        { timestamp: '1001', inserted: [[1, 1, 1]], deleted: [] },
        { timestamp: '1002', inserted: [[2, 2, 2]], deleted: [] },
        { timestamp: '1003', inserted: [[3, 3, 3]], deleted: [[1, 1, 1]] },
      ],
    }),
  );
  fetch.script.push(() => new Promise(() => {}));
  await until(() => events.length === 1, 2000);
  await sleep(10);
  assert.equal(events.length, 1);
  assert.equal(events[0].change.kind, 'snapshot');
  assert.deepEqual(events[0].batch, { timestamp: '1003', inserted: [[2, 2, 2], [3, 3, 3]], deleted: [] });
  assert.deepEqual(events[0].change.insert, [{ auction_id: 2, buyer: 2, amount: 2 }, { auction_id: 3, buyer: 3, amount: 3 }]);
  assert.deepEqual(bag(sub.rows()), bag([[2, 2, 2], [3, 3, 3]]));
  assert.equal(sub.cursor, '1003');
  assert.equal(events[0].change.cursor, '1003');
});

test('coalesce: the batches of one reply become one change', async (t) => {
  const { m, fetch, sub, events } = setup({ opts: { coalesce: true } });
  t.after(() => sub.unsubscribe());
  await until(() => events.length === 1);
  const objs = sub.objects();
  fetch.script.push(() =>
    json(200, {
      cursor: '9',
      batches: [
        { timestamp: '8', inserted: [[7, 7, 7]], deleted: [[1, 10, 5]] },
        { timestamp: '9', inserted: [[8, 8, 8]], deleted: [[7, 7, 7]] },
      ],
    }),
  );
  fetch.script.push(() => new Promise(() => {}));
  await until(() => events.length === 2);
  await sleep(10);
  assert.equal(events.length, 2);
  const { batch, change } = events[1];
  assert.equal(change.kind, 'delta');
  assert.equal(batch.timestamp, '9');
  assert.deepEqual(change.insert, [{ auction_id: 8, buyer: 8, amount: 8 }]);
  assert.equal(change.remove.length, 1);
  assert.ok(objs.includes(change.remove[0]));
  assert.deepEqual(bag(sub.rows()), bag([[2, 11, 50], [3, 12, 70], [8, 8, 8]]));
});

test('an exception in onBatch is reported and the subscription goes on', async (t) => {
  const errors = [];
  const m = new FeedModel('w', COLS, ROWS);
  const fetch = makeFetch(new Map([['w', m]]));
  let n = 0;
  const sub = subscribe('/feeds/w', {
    fetch,
    onBatch: () => {
      n++;
      throw new Error('page bug');
    },
    onError: (e) => errors.push(e),
  });
  t.after(() => sub.unsubscribe());
  await until(() => n === 1);
  await until(() => polls(fetch).length === 1);
  m.publish({ inserted: [[8, 1, 1]] });
  await until(() => n === 2);
  assert.equal(errors.length, 2);
  assert.equal(sub.state, STATES.LIVE);
  assert.deepEqual(bag(sub.rows()), bag(m.rows()));
});

test('fast empty replies (a cache answering for the server) do not spin', async (t) => {
  const { fetch, sub, events } = setup({ opts: { backoff: { base: 40, cap: 1000 }, random: () => 0.99 } });
  t.after(() => sub.unsubscribe());
  await until(() => events.length === 1);
  const cursor = sub.cursor;
  for (let i = 0; i < 6; i++) fetch.script.push(() => json(200, { cursor, batches: [] }));
  const t0 = Date.now();
  await until(() => polls(fetch).length >= 7, 3000);
  // Replies 3..6 each wait backoff(1..4) ~ 40+80+160+320 ms.
  assert.ok(Date.now() - t0 >= 300, `waited ${Date.now() - t0} ms`);
});

test('never two requests in flight, whatever happens (random schedule)', async () => {
  let seed = 7;
  const rnd = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
  const { m, fetch, sub } = setup({ capacity: 4 });
  const filters = [null, { amount: 'gte.30' }, { amount: 'lt.60' }, { buyer: ['in', [10, 11, 1]] }];
  let filter = null;
  let next = 100;
  for (let step = 0; step < 120; step++) {
    const r = rnd();
    if (r < 0.45) m.publish({ inserted: [[next++, Math.floor(rnd() * 3), Math.floor(rnd() * 100)]] });
    else if (r < 0.55) {
      const rows = m.rows();
      if (rows.length) m.publish({ deleted: [rows[Math.floor(rnd() * rows.length)]] });
    } else if (r < 0.65) fetch.script.push(() => json(503, { error: 'feed_not_live' }));
    else if (r < 0.7)
      fetch.script.push(() => {
        throw new TypeError('fetch failed');
      });
    else if (r < 0.75) fetch.script.push((c) => (c.query.has('cursor') ? json(410, { error: 'cursor_gone' }) : undefined));
    else if (r < 0.82) {
      filter = filters[Math.floor(rnd() * filters.length)];
      sub.setFilter(filter);
    } else if (r < 0.85) m.newHistory();
    await sleep(Math.floor(rnd() * 6));
  }
  fetch.script.length = 0;
  const pred = (row) =>
    !filter ||
    (filter.amount === 'gte.30' ? row[2] >= 30 : filter.amount === 'lt.60' ? row[2] < 60 : [10, 11, 1].includes(row[1]));
  await until(synced(sub, m, pred), 5000, 'converged');
  assert.equal(fetch.maxInflight, 1, 'at most one request in flight');
  sub.unsubscribe();
  await until(() => fetch.inflight === 0, 1000);
});

test('rows(), objects(), size and toObject() agree', async (t) => {
  const { sub, events } = setup({ rows: [[1, 1, 1], [1, 1, 1], [2, 2, 2]] });
  t.after(() => sub.unsubscribe());
  await until(() => events.length === 1);
  assert.equal(sub.size, 3);
  assert.equal(sub.rows().length, 3);
  assert.equal(sub.objects().length, 3);
  assert.deepEqual(sub.toObject([1, 2, 3]), { auction_id: 1, buyer: 2, amount: 3 });
  assert.equal(new Set(sub.rows().map(rowKey)).size, 2);
});

test('change.live: deltas as they happen; not the snapshot, nor what the first reply after a failure catches up', async (t) => {
  const { m, fetch, sub, events } = setup();
  t.after(() => sub.unsubscribe());
  await until(() => events.length === 1 && polls(fetch).length >= 1, 2000, 'snapshot, first poll');
  assert.equal(events[0].change.live, false, 'the snapshot is not a live change');
  m.publish({ inserted: [[4, 13, 99]] });
  await until(() => events.length === 2, 2000, 'delta');
  assert.equal(events[1].change.live, true);
  // The next poll fails; meanwhile two batches are published: the retry
  // brings them at once, as catch-up.
  fetch.script.push(() => {
    m.publish({ inserted: [[5, 14, 1]] });
    m.publish({ inserted: [[6, 15, 2]] });
    return json(503, { error: 'feed_not_live', message: 'upstream down' });
  });
  await until(() => events.length === 4, 2000, 'catch-up');
  assert.deepEqual(events.slice(2).map((e) => [e.change.kind, e.change.live]), [['delta', false], ['delta', false]]);
  await until(() => sub.state === STATES.LIVE);
  m.publish({ inserted: [[7, 16, 3]] });
  await until(() => events.length === 5, 2000, 'live again');
  assert.equal(events[4].change.live, true);
});

test("a backoff ends at the browser's online event (subscribe)", async (t) => {
  const had = Object.getOwnPropertyDescriptor(globalThis, 'window');
  const win = (globalThis.window = new EventTarget());
  t.after(() => (had ? Object.defineProperty(globalThis, 'window', had) : delete globalThis.window));
  let calls = 0;
  const fetch = async (url, init) => {
    calls++;
    if (calls === 1) throw new TypeError('Failed to fetch'); // offline
    if (calls === 2) return json(200, { cursor: '3.x', columns: COLS, batches: [{ timestamp: '3', inserted: ROWS, deleted: [] }] });
    return new Promise((_, rej) => init.signal.addEventListener('abort', () => rej(new Error('aborted'))));
  };
  const sub = subscribe('/feeds/w', { fetch, backoff: { base: 60000, cap: 60000 }, random: () => 0.99 });
  t.after(() => sub.unsubscribe());
  await until(() => sub.state === STATES.RECONNECTING, 2000, 'reconnecting');
  await sleep(20);
  assert.equal(calls, 1, 'sleeping in the backoff');
  win.dispatchEvent(new Event('online'));
  await until(() => sub.state === STATES.LIVE, 2000, 'live within 2 s, not 59');
  assert.equal(sub.cursor, '3.x');
  assert.deepEqual(bag(sub.rows()), bag(ROWS));
});
