// subscribeMany(): several feeds at one moment (GET /feeds/a,b) against a
// scripted fetch: the URL, snapshots and deltas applied together, a 410
// resync that keeps the rows until the new snapshot replaces them, a 400,
// and SSE through an injected EventSource.
import test from 'node:test';
import assert from 'node:assert/strict';
import { subscribeMany, multiUrl, STATES } from '../../htdocs/tailgate.js';

const COLS = [{ name: 'id', type: 'int4' }];
const NCOLS = [{ name: 'n', type: 'int8' }];
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
async function until(cond, ms = 2000) {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('timed out');
    await sleep(2);
  }
}
const reply = (status, body) => new Response(JSON.stringify(body), { status });

// A fetch answering from a list of replies, recording the URLs; once the
// list is used up, requests wait until aborted (a long-poll held open).
function scripted(replies) {
  const f = async (url, init = {}) => {
    f.urls.push(String(url));
    const r = replies.shift();
    if (r) return r;
    return new Promise((_, rej) =>
      init.signal.addEventListener('abort', () => rej(Object.assign(new Error('aborted'), { name: 'AbortError' }))),
    );
  };
  f.urls = [];
  return f;
}

const snap = (cursor, ids, n) => ({
  cursor,
  feeds: {
    items: { columns: COLS, batches: [{ timestamp: '1', inserted: ids.map((i) => [i]), deleted: [] }] },
    counts: { columns: NCOLS, batches: [{ timestamp: '1', inserted: [[n]], deleted: [] }] },
  },
});

test('multiUrl: the feeds comma-separated, each filter prefixed with its feed', () => {
  assert.equal(
    multiUrl('/feeds', ['items', 'counts'], { items: { id: 'gt.5' } }, { cursor: '7.ab', timeout: 3 }),
    '/feeds/items,counts?items.id=gt.5&cursor=7.ab&timeout=3',
  );
  assert.equal(multiUrl('/feeds/', ['a', 'b']), '/feeds/a,b');
});

test('long-poll: one update per reply, both feeds at one cursor', async (t) => {
  const fetch = scripted([
    reply(200, snap('10.aa', [1, 2], 2)),
    reply(200, {
      cursor: '12.aa',
      feeds: {
        items: { batches: [{ timestamp: '11', inserted: [[3]], deleted: [] }] },
        counts: { batches: [{ timestamp: '11', inserted: [[3]], deleted: [[2]] }] },
      },
    }),
  ]);
  const updates = [];
  const sub = subscribeMany('/feeds', ['items', 'counts'], {
    fetch,
    onUpdate: (ch, info) => updates.push([ch, info]),
  });
  t.after(() => sub.unsubscribe());
  await until(() => updates.length === 2);
  assert.equal(updates[0][1].kind, 'snapshot');
  assert.equal(updates[1][1].kind, 'delta');
  assert.equal(sub.cursor, '12.aa');
  assert.equal(sub.rows('items').length, 3);
  assert.deepEqual(sub.rows('counts'), [[3]]);
  assert.deepEqual(sub.columns('counts'), NCOLS);
  assert.deepEqual(updates[1][0].counts.insert, [{ n: 3 }]);
  assert.equal(sub.state, STATES.LIVE);
  assert.match(fetch.urls[0], /^\/feeds\/items,counts$/);
  assert.match(fetch.urls[1], /cursor=10\.aa/);
  await until(() => fetch.urls.length === 3);
  assert.match(fetch.urls[2], /cursor=12\.aa/);
});

// A reply with several batches of one feed: a row the first inserts and a
// later one removes is in neither list (a page applying insert and remove
// by identity would otherwise keep it), an update is a remove and an insert.
test('long-poll: a row inserted and removed within one reply is in no change', async (t) => {
  const fetch = scripted([
    reply(200, snap('10.aa', [1, 2], 2)),
    reply(200, {
      cursor: '13.aa',
      feeds: {
        items: {
          batches: [
            { timestamp: '11', inserted: [[3]], deleted: [[1]] },
            { timestamp: '12', inserted: [[4]], deleted: [[3]] },
          ],
        },
        counts: { batches: [] },
      },
    }),
  ]);
  const updates = [];
  const sub = subscribeMany('/feeds', ['items', 'counts'], { fetch, onUpdate: (ch, info) => updates.push([ch, info]) });
  t.after(() => sub.unsubscribe());
  await until(() => updates.length === 2);
  const ch = updates[1][0].items;
  assert.deepEqual(ch.insert, [{ id: 4 }]);
  assert.deepEqual(ch.remove, [{ id: 1 }]);
  assert.equal(ch.batches.length, 2);
  // Applied by identity, as a page's table does, the change gives the rows.
  const held = new Set(updates[0][0].items.insert);
  for (const o of ch.remove) assert.ok(held.delete(o), 'a removed object is one the page holds');
  for (const o of ch.insert) held.add(o);
  assert.deepEqual([...held].map((o) => o.id).sort(), [2, 4]);
  assert.deepEqual(updates[1][0].counts.insert, []);
});

test('410: a new snapshot, the rows kept until it replaces them', async (t) => {
  const fetch = scripted([
    reply(200, snap('10.aa', [1, 2], 2)),
    reply(410, { error: 'cursor_gone', message: 'gone' }),
    reply(200, snap('20.bb', [2, 4], 2)),
  ]);
  const updates = [];
  const states = [];
  let kept = null;
  const sub = subscribeMany('/feeds', ['items', 'counts'], {
    fetch,
    onUpdate: (ch, info) => updates.push([ch, info]),
    onState: (s) => {
      states.push(s);
      if (s === STATES.RESYNCING) kept = sub.rows('items').length;
    },
  });
  t.after(() => sub.unsubscribe());
  const two = () => sub.objects('items').find((o) => o.id === 2);
  await until(() => updates.length === 2);
  const obj = updates[0][0].items.insert.find((o) => o.id === 2);
  assert.equal(kept, 2, 'rows held while resyncing');
  assert.equal(updates[1][1].kind, 'resync');
  assert.deepEqual(updates[1][0].items.insert, [{ id: 4 }]);
  assert.deepEqual(updates[1][0].items.remove, [{ id: 1 }]);
  assert.deepEqual(updates[1][0].counts.insert, [], 'an unchanged feed reports nothing');
  assert.equal(two(), obj, 'a row in both snapshots keeps its object');
  assert.equal(sub.cursor, '20.bb');
  assert.ok(!/cursor/.test(fetch.urls[2]), 'the resync is a snapshot request');
  assert.ok(states.includes(STATES.RESYNCING));
});

test('400: failed, no retry', async () => {
  const fetch = scripted([reply(400, { error: 'bad_parameter', message: 'filter' })]);
  const states = [];
  const sub = subscribeMany('/feeds', { items: { filter: { id: 'eq.1' } }, counts: {} }, {
    fetch,
    onState: (s) => states.push(s),
  });
  await until(() => states.includes(STATES.FAILED));
  await sleep(20);
  assert.equal(fetch.urls.length, 1);
  assert.match(fetch.urls[0], /items\.id=eq\.1/);
  sub.unsubscribe();
});

// A browser's hints that a retry may work now: the network back
// ("online"), the page back from the back/forward cache ("pageshow",
// persisted).  A stand-in window for node.
function fakeWindow(t) {
  const had = Object.getOwnPropertyDescriptor(globalThis, 'window');
  globalThis.window = new EventTarget();
  t.after(() => (had ? Object.defineProperty(globalThis, 'window', had) : delete globalThis.window));
  return globalThis.window;
}

for (const [what, event] of [
  ['online', () => new Event('online')],
  ['pageshow (persisted)', () => Object.assign(new Event('pageshow'), { persisted: true })],
]) {
  test(`a backoff ends at the browser's ${what} event, not a minute later`, async (t) => {
    const win = fakeWindow(t);
    let calls = 0;
    const rest = scripted([reply(200, snap('5.x', [1], 1))]); // then polls hang
    const fetch = async (url, init) => {
      if (++calls === 1) throw new TypeError('Failed to fetch'); // offline
      return rest(url, init);
    };
    const states = [];
    const sub = subscribeMany('/feeds', ['items', 'counts'], {
      fetch,
      backoff: { base: 60000, cap: 60000 },
      random: () => 0.99,
      onState: (s) => states.push(s),
    });
    t.after(() => sub.unsubscribe());
    await until(() => states.includes(STATES.RECONNECTING));
    await sleep(20);
    assert.equal(calls, 1, 'sleeping in the backoff');
    win.dispatchEvent(new Event('pageshow')); // not persisted: no hint
    await sleep(20);
    assert.equal(calls, 1, 'a plain pageshow is no reason to retry');
    win.dispatchEvent(event());
    await until(() => sub.state === STATES.LIVE); // within 2 s, not 59
    assert.equal(sub.cursor, '5.x');
  });
}

test('a request unanswered past requestTimeout is a failure, retried', async (t) => {
  const fetch = scripted([reply(200, snap('5.x', [1], 1))]); // then polls hang
  const states = [];
  const sub = subscribeMany('/feeds', ['items', 'counts'], {
    fetch,
    requestTimeout: 40,
    backoff: { base: 1, cap: 1 },
    onState: (s, d) => states.push([s, d]),
  });
  t.after(() => sub.unsubscribe());
  await until(() => states.some(([s]) => s === STATES.RECONNECTING));
  const [, d] = states.find(([s]) => s === STATES.RECONNECTING);
  assert.match(d.error, /no reply within 40 ms/);
  assert.equal(sub.detail.failures >= 1, true);
  await until(() => fetch.urls.length >= 3); // polls again, from the same cursor
  assert.match(fetch.urls.at(-1), /cursor=5\.x/);
});

test('SSE: the snapshot event, then one event per common step', async (t) => {
  let es = null;
  class FakeES {
    constructor(url) {
      this.url = url;
      this.l = {};
      es = this;
    }
    addEventListener(type, fn) {
      this.l[type] = fn;
    }
    close() {
      this.closed = true;
    }
    emit(type, body) {
      this.l[type]({ data: JSON.stringify(body) });
    }
  }
  const updates = [];
  const sub = subscribeMany('/feeds', ['items', 'counts'], {
    transport: 'sse',
    EventSource: FakeES,
    onUpdate: (ch, info) => updates.push(info),
  });
  t.after(() => sub.unsubscribe());
  await until(() => es !== null);
  assert.equal(es.url, '/feeds/items,counts?stream=sse');
  es.emit('snapshot', snap('10.aa', [1], 1));
  es.emit('message', {
    cursor: '11.aa',
    feeds: {
      items: { batches: [{ timestamp: '11', inserted: [[2]], deleted: [] }] },
      counts: { batches: [{ timestamp: '11', inserted: [[2]], deleted: [[1]] }] },
    },
  });
  assert.deepEqual(updates.map((u) => u.kind), ['snapshot', 'delta']);
  assert.equal(sub.cursor, '11.aa');
  assert.deepEqual(sub.rows('counts'), [[2]]);
  assert.equal(sub.rows('items').length, 2);
});
