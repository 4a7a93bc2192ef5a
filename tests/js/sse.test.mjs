// Server-Sent Events: the text/event-stream parser, the fetch-based
// EventSource, and subscribe({transport: 'sse'}) with an injected
// EventSource (scripted) and end to end over a streaming fake fetch.
import test from 'node:test';
import assert from 'node:assert/strict';
import { SSEParser, FetchEventSource, subscribe, STATES } from '../../htdocs/tailgate.js';
import { FeedModel } from './helpers/feedmodel.mjs';
import { makeFetch, json, until, sleep, bag } from './helpers/fakefetch.mjs';

function parseAll(chunks) {
  const events = [];
  const retries = [];
  const p = new SSEParser((e) => events.push(e), (ms) => retries.push(ms));
  for (const c of chunks) p.feed(c);
  return { events, retries, p };
}

test('SSE parser: fields, ids, named events, multi-line data, comments', () => {
  const { events, retries } = parseAll([
    ': hello\n\n',
    'id: 100\ndata: {"timestamp":"100","inserted":[[1]],"deleted":[]}\n\n',
    'event: snapshot\nid: 101\ndata: a\ndata: b\n\n',
    'data:no space\n\n',
    'retry: 2500\n',
    'retry: soon\n',
    'id\ndata: empty id\n\n',
    'data: x\nid: bad\0id\n\n',
    'event: nothing\n\n', // no data: not dispatched
    'field-unknown: 1\ndata: y\n\n',
  ]);
  assert.deepEqual(events, [
    { type: 'message', data: '{"timestamp":"100","inserted":[[1]],"deleted":[]}', id: '100' },
    { type: 'snapshot', data: 'a\nb', id: '101' },
    { type: 'message', data: 'no space', id: '101' },
    { type: 'message', data: 'empty id', id: '' },
    { type: 'message', data: 'x', id: '' }, // an id with NUL is ignored
    { type: 'message', data: 'y', id: '' },
  ]);
  assert.deepEqual(retries, [2500]);
});

test('SSE parser: any chunking, CRLF/CR/LF line ends, a BOM', () => {
  const text = '\uFEFFid: 7\r\ndata: {"a":1}\r\n\r\nid: 8\rdata: two\r\rdata: three\n\n';
  const want = [
    { type: 'message', data: '{"a":1}', id: '7' },
    { type: 'message', data: 'two', id: '8' },
    { type: 'message', data: 'three', id: '8' },
  ];
  assert.deepEqual(parseAll([text]).events, want);
  // Every split point, including between \r and \n.
  for (let i = 1; i < text.length; i++) assert.deepEqual(parseAll([text.slice(0, i), text.slice(i)]).events, want, `split at ${i}`);
  assert.deepEqual(parseAll([...text]).events, want, 'one character at a time');
  // An event without its closing blank line is not dispatched.
  assert.deepEqual(parseAll(['data: partial\n']).events, []);
});

// A streaming fetch whose bodies the test writes.
function streamFetch() {
  const f = async (url, init = {}) => {
    const conn = { url, init, status: 200, ct: 'text/event-stream' };
    f.conns.push(conn);
    const plan = f.plan.shift() || {};
    if (plan.throw) throw new TypeError('fetch failed');
    if (plan.status) return new Response(plan.body || '', { status: plan.status, headers: { 'content-type': 'application/json' } });
    const body = new ReadableStream({
      start(c) {
        conn.write = (s) => c.enqueue(new TextEncoder().encode(s));
        conn.end = () => c.close();
      },
      cancel() {
        conn.cancelled = true;
      },
    });
    init.signal?.addEventListener('abort', () => (conn.aborted = true));
    return new Response(body, { status: 200, headers: { 'content-type': plan.ct || 'text/event-stream' } });
  };
  f.conns = [];
  f.plan = [];
  return f;
}

test('FetchEventSource: open, messages, reconnect with Last-Event-ID, retry:', async () => {
  const fetch = streamFetch();
  const es = new FetchEventSource('/feeds/w?stream=sse', { fetch, retry: 10 });
  const got = [];
  const opens = [];
  const errors = [];
  es.onopen = () => opens.push(es.readyState);
  es.onmessage = (e) => got.push([e.data, e.lastEventId]);
  es.addEventListener('snapshot', (e) => got.push(['snapshot:' + e.data, e.lastEventId]));
  es.onerror = () => errors.push(es.readyState);
  await until(() => fetch.conns[0]?.write);
  assert.equal(fetch.conns[0].init.headers['Last-Event-ID'], undefined);
  assert.equal(fetch.conns[0].init.headers.Accept, 'text/event-stream');
  await until(() => opens.length === 1);
  assert.equal(es.readyState, FetchEventSource.OPEN);
  fetch.conns[0].write('event: snapshot\nid: 5\ndata: s\n\nid: 6\ndata: d1\n\nretry: 20\n\n');
  await until(() => got.length === 2);
  assert.deepEqual(got, [['snapshot:s', '5'], ['d1', '6']]);
  fetch.conns[0].end(); // dropped: reconnects by itself
  await until(() => errors.length === 1);
  assert.deepEqual(errors, [FetchEventSource.CONNECTING]);
  await until(() => fetch.conns.length === 2 && fetch.conns[1].write, 2000, 'reconnect');
  assert.equal(fetch.conns[1].init.headers['Last-Event-ID'], '6');
  fetch.conns[1].write('id: 7\ndata: d2\n\n');
  await until(() => got.length === 3);
  assert.deepEqual(got[2], ['d2', '7']);
  es.close();
  assert.equal(es.readyState, FetchEventSource.CLOSED);
  await sleep(40);
  assert.equal(fetch.conns.length, 2, 'no reconnect after close()');
});

test('FetchEventSource: a non-200 answer or a wrong content type closes for good', async () => {
  for (const plan of [{ status: 410, body: '{"error":"cursor_gone"}' }, { status: 503 }, { ct: 'application/json' }]) {
    const fetch = streamFetch();
    fetch.plan.push(plan);
    const es = new FetchEventSource('/x', { fetch, retry: 5 });
    const errors = [];
    es.onerror = (e) => errors.push([es.readyState, e.status]);
    await until(() => errors.length === 1);
    assert.equal(es.readyState, FetchEventSource.CLOSED);
    await sleep(20);
    assert.equal(fetch.conns.length, 1, 'no reconnect');
  }
  // A network error, by contrast, is retried.
  const fetch = streamFetch();
  fetch.plan.push({ throw: true });
  const es = new FetchEventSource('/x', { fetch, retry: 5 });
  await until(() => fetch.conns.length === 2);
  assert.equal(es.readyState, FetchEventSource.OPEN);
  es.close();
});

// A scripted EventSource: the test opens it, sends events, drops it.
function fakeEventSourceClass() {
  class FakeES {
    static instances = [];
    constructor(url, init) {
      this.url = url;
      this.init = init;
      this.readyState = 0;
      this.listeners = {};
      FakeES.instances.push(this);
    }
    addEventListener(t, fn) {
      (this.listeners[t] ||= []).push(fn);
    }
    close() {
      this.readyState = 2;
    }
    open() {
      this.readyState = 1;
      this.onopen?.({});
    }
    send(data, id, type = 'message') {
      const ev = { data: typeof data === 'string' ? data : JSON.stringify(data), lastEventId: id };
      if (type === 'message') this.onmessage?.(ev);
      for (const fn of this.listeners[type] || []) fn(ev);
    }
    drop() {
      this.readyState = 0;
      this.onerror?.({});
    }
    fail() {
      this.readyState = 2;
      this.onerror?.({});
    }
  }
  FakeES.live = () => FakeES.instances.filter((e) => e.readyState !== 2);
  return FakeES;
}

const COLS = [
  { name: 'buyer', type: 'int8' },
  { name: 'wins', type: 'int8' },
];

function sseSetup(opts = {}) {
  const m = new FeedModel('top', COLS, [[1, 5], [2, 3]]);
  const fetch = makeFetch(new Map([['top', m]]));
  const ES = fakeEventSourceClass();
  const events = [];
  const states = [];
  const sub = subscribe('/feeds/top', {
    transport: 'sse',
    fetch,
    EventSource: ES,
    onBatch: (b, ch) => events.push({ b, ch }),
    onState: (s, d) => states.push([s, d]),
    backoff: { base: 1, cap: 5 },
    ...opts,
  });
  return { m, fetch, ES, sub, events, states };
}

test('sse: columns from the feeds list, the first event is the snapshot, then deltas', async (t) => {
  const { fetch, ES, sub, events, states } = sseSetup({ filter: { wins: 'gte.2' } });
  t.after(() => sub.unsubscribe());
  await until(() => ES.instances.length === 1);
  assert.equal(fetch.calls.length, 1);
  assert.equal(fetch.calls[0].path, '/feeds', 'columns read from the feeds list');
  const es = ES.instances[0];
  assert.equal(es.url, '/feeds/top?wins=gte.2&stream=sse');
  es.open();
  assert.equal(sub.state, STATES.CONNECTING, 'live once the snapshot is in');
  es.send({ timestamp: '10', inserted: [[1, 5], [2, 3]], deleted: [] }, '10');
  assert.equal(sub.state, STATES.LIVE);
  assert.equal(events[0].ch.kind, 'snapshot');
  assert.deepEqual(events[0].ch.insert, [{ buyer: 1, wins: 5 }, { buyer: 2, wins: 3 }]);
  assert.equal(sub.cursor, '10');
  es.send({ timestamp: '11', inserted: [[2, 4]], deleted: [[2, 3]] }, '11');
  assert.equal(events[1].ch.kind, 'delta');
  assert.deepEqual(bag(sub.rows()), bag([[1, 5], [2, 4]]));
  assert.equal(sub.cursor, '11');
  // Named events and envelopes are understood too.
  es.send({ cursor: '13', batches: [{ timestamp: '12', inserted: [[3, 2]], deleted: [] }, { timestamp: '13', inserted: [[4, 2]], deleted: [] }] }, '13', 'batch');
  assert.equal(sub.cursor, '13');
  assert.equal(sub.size, 4);
  // A dropped stream: EventSource resumes by itself (Last-Event-ID): reconnecting, then live.
  es.drop();
  assert.equal(sub.state, STATES.RECONNECTING);
  es.open();
  assert.equal(sub.state, STATES.LIVE);
  es.send({ timestamp: '14', inserted: [], deleted: [[4, 2]] }, '14');
  assert.equal(sub.size, 3);
  assert.equal(ES.instances.length, 1, 'no new EventSource for a resumable drop');
  assert.deepEqual(
    states.map(([s]) => s),
    ['connecting', 'live', 'reconnecting', 'live'],
  );
});

test('sse: change.live is false for the burst after the snapshot event and after a resume, true later', async (t) => {
  const { ES, sub, events } = sseSetup({ columns: COLS });
  t.after(() => sub.unsubscribe());
  await until(() => ES.instances.length === 1);
  const es = ES.instances[0];
  es.open();
  // The server writes the snapshot and every batch after it at once.
  es.send({ timestamp: '10', inserted: [[1, 5], [2, 3]], deleted: [] }, '10', 'snapshot');
  es.send({ timestamp: '11', inserted: [[2, 4]], deleted: [[2, 3]] }, '11');
  es.send({ timestamp: '12', inserted: [[3, 1]], deleted: [] }, '12');
  assert.deepEqual(events.map((e) => [e.ch.kind, e.ch.live]), [['snapshot', false], ['delta', false], ['delta', false]]);
  await sleep(250);
  es.send({ timestamp: '13', inserted: [[4, 1]], deleted: [] }, '13');
  assert.equal(events.at(-1).ch.live, true, 'a batch after the burst is live');
  // Resumed with Last-Event-ID: what was missed comes at once.
  es.drop();
  es.open();
  es.send({ timestamp: '14', inserted: [[5, 1]], deleted: [] }, '14');
  assert.equal(events.at(-1).ch.live, false, 'the catch-up of a resumed stream');
  await sleep(250);
  es.send({ timestamp: '15', inserted: [[6, 1]], deleted: [] }, '15');
  assert.equal(events.at(-1).ch.live, true);
  assert.equal(sub.size, 6);
});

test('sse: when EventSource gives up (410, 503), a fresh stream resyncs with a diff', async (t) => {
  const { ES, sub, events } = sseSetup({ columns: COLS });
  t.after(() => sub.unsubscribe());
  await until(() => ES.instances.length === 1);
  const es = ES.instances[0];
  es.open();
  es.send({ timestamp: '10', inserted: [[1, 5], [2, 3]], deleted: [] }, '10');
  const kept = sub.objects().find((o) => o.buyer === 1);
  es.fail(); // e.g. the server answered the Last-Event-ID reconnect with 410
  assert.equal(sub.size, 2, 'rows kept');
  await until(() => ES.instances.length === 2, 2000, 'fresh EventSource');
  const es2 = ES.instances[1];
  assert.equal(es2.url, '/feeds/top?stream=sse');
  assert.equal(sub.size, 2, 'rows kept until the snapshot is in');
  es2.open();
  es2.send({ timestamp: '50', inserted: [[1, 5], [3, 9]], deleted: [] }, '50');
  const last = events.at(-1);
  assert.equal(last.ch.kind, 'resync');
  assert.deepEqual(last.b.inserted, [[3, 9]]);
  assert.deepEqual(last.b.deleted, [[2, 3]]);
  assert.ok(sub.objects().includes(kept));
  assert.equal(sub.cursor, '50');
  assert.equal(sub.state, STATES.LIVE);
  assert.equal(ES.live().length, 1, 'one stream at a time');
});

test('sse: setFilter reopens with the filter; unsubscribe closes the stream', async () => {
  const { ES, sub, events } = sseSetup({ columns: COLS });
  await until(() => ES.instances.length === 1);
  ES.instances[0].open();
  ES.instances[0].send({ timestamp: '10', inserted: [[1, 5], [2, 3]], deleted: [] }, '10');
  sub.setFilter({ wins: ['gt', 4] });
  assert.equal(ES.instances[0].readyState, 2, 'old stream closed');
  await until(() => ES.instances.length === 2);
  assert.equal(ES.instances[1].url, '/feeds/top?wins=gt.4&stream=sse');
  ES.instances[1].open();
  ES.instances[1].send({ timestamp: '11', inserted: [[1, 5]], deleted: [] }, '11');
  assert.equal(events.at(-1).ch.kind, 'resync');
  assert.deepEqual(events.at(-1).b.deleted, [[2, 3]]);
  sub.unsubscribe();
  assert.equal(ES.instances[1].readyState, 2);
  assert.equal(sub.state, STATES.CLOSED);
  ES.instances[1].send({ timestamp: '12', inserted: [[9, 9]], deleted: [] }, '12');
  assert.equal(sub.size, 1, 'nothing applied after unsubscribe');
  await sleep(20);
  assert.equal(ES.instances.length, 2);
});

test('sse: bad event data drops the stream and starts over', async (t) => {
  const errors = [];
  const { ES, sub } = sseSetup({ columns: COLS, onError: (e) => errors.push(e) });
  t.after(() => sub.unsubscribe());
  await until(() => ES.instances.length === 1);
  ES.instances[0].open();
  ES.instances[0].send('{not json', '1');
  assert.equal(errors.length, 1);
  await until(() => ES.instances.length === 2);
  assert.equal(ES.instances[0].readyState, 2);
});

for (const sseGone of ['snapshot', '410'])
test(`sse end to end: FetchEventSource over a streaming server, resume, resync (server answers a lost cursor with ${sseGone})`, async (t) => {
  const m = new FeedModel('top', COLS, [[1, 5], [2, 3]], { capacity: 3 });
  const fetch = makeFetch(new Map([['top', m]]), { sseGone });
  const events = [];
  const sub = subscribe('/feeds/top', {
    transport: 'sse',
    fetch,
    EventSource: class extends FetchEventSource {
      constructor(url, init) {
        super(url, { ...init, retry: 5 });
      }
    },
    onBatch: (b, ch) => events.push(ch.kind),
    backoff: { base: 1, cap: 5 },
  });
  t.after(() => sub.unsubscribe());
  const synced = () => sub.cursor === m.head && JSON.stringify(bag(sub.rows())) === JSON.stringify(bag(m.rows()));
  await until(synced, 2000, 'snapshot');
  assert.equal(sub.state, STATES.LIVE);
  m.publish({ inserted: [[3, 1]] });
  m.publish({ inserted: [[4, 1]], deleted: [[1, 5]] });
  await until(synced, 2000, 'deltas');
  assert.deepEqual(events, ['snapshot', 'delta', 'delta']);
  // A new history: the stream ends; the Last-Event-ID reconnect gets a
  // snapshot event (as tailgate-fcgi does) or a 410 (then a fresh stream's
  // snapshot); either is swapped in as a diff.
  m.newHistory();
  m.publish({ inserted: [[5, 1]] });
  await until(synced, 3000, 'resynced');
  assert.ok(events.includes('resync'));
  assert.equal(sub.state, STATES.LIVE);
  assert.ok(fetch.maxInflight <= 1, `max in flight ${fetch.maxInflight}`);
  sub.unsubscribe();
  await until(() => fetch.inflight === 0, 1000, 'stream closed');
});
