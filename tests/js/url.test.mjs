// Filter and URL building, the feeds list, reply parsing, backoff bounds.
import test from 'node:test';
import assert from 'node:assert/strict';
import {
  buildUrl,
  normalizeFilter,
  encodeFilter,
  feedsUrlFor,
  feedNameOf,
  parseFeedList,
  parseReply,
  backoffDelay,
} from '../../htdocs/tailgate.js';

test('filters: the accepted shapes all give PostgREST terms', () => {
  assert.deepEqual(normalizeFilter({ amount: 'gte.50' }), [['amount', 'gte.50']]);
  assert.deepEqual(normalizeFilter({ amount: ['gte', 50] }), [['amount', 'gte.50']]);
  assert.deepEqual(normalizeFilter({ amount: { gte: 10, lt: 50 } }), [['amount', 'gte.10'], ['amount', 'lt.50']]);
  assert.deepEqual(normalizeFilter({ amount: ['gte.10', 'lt.50'] }), [['amount', 'gte.10'], ['amount', 'lt.50']]);
  assert.deepEqual(normalizeFilter({ buyer: ['in', [1, 2, 3]] }), [['buyer', 'in.(1,2,3)']]);
  assert.deepEqual(normalizeFilter('amount=gt.100&buyer=eq.42'), [['amount', 'gt.100'], ['buyer', 'eq.42']]);
  assert.deepEqual(normalizeFilter('?amount=gt.100'), [['amount', 'gt.100']]);
  assert.deepEqual(normalizeFilter([['item', 'neq.Gift Basket']]), [['item', 'neq.Gift Basket']]);
  assert.deepEqual(normalizeFilter(new URLSearchParams('a=lte.3')), [['a', 'lte.3']]);
  assert.deepEqual(normalizeFilter({ amount: null, buyer: undefined, x: '' }), []);
  assert.deepEqual(normalizeFilter(null), []);
  assert.deepEqual(normalizeFilter(''), []);
});

test('filters: values with reserved characters are quoted', () => {
  assert.deepEqual(normalizeFilter({ item: ['eq', 'a,b'] }), [['item', 'eq."a,b"']]);
  assert.deepEqual(normalizeFilter({ item: ['in', ['x', 'y (z)', 'q"r']] }), [['item', 'in.(x,"y (z)","q\\"r")']]);
  assert.deepEqual(normalizeFilter({ item: ['eq', ''] }), [['item', 'eq.""']]);
  assert.deepEqual(normalizeFilter({ seller: ['eq', null] }), [['seller', 'eq.null']]);
});

test('filters: unknown operators throw before any request', () => {
  assert.throws(() => normalizeFilter({ amount: 'like.5' }), TypeError);
  assert.throws(() => normalizeFilter({ amount: '50' }), TypeError);
  assert.throws(() => normalizeFilter({ amount: ['between', [1, 2]] }), TypeError);
  assert.throws(() => normalizeFilter({ amount: { ge: 1 } }), TypeError);
  assert.throws(() => normalizeFilter({ amount: ['eq', [1, 2]] }), TypeError);
});

test('buildUrl: filters, cursor, timeout, stream; relative and absolute', () => {
  assert.equal(buildUrl('/feeds/winning_bids'), '/feeds/winning_bids');
  assert.equal(buildUrl('/feeds/winning_bids', { filter: { amount: 'gte.50' } }), '/feeds/winning_bids?amount=gte.50');
  assert.equal(
    buildUrl('/feeds/winning_bids', { filter: { amount: 'gte.50' }, cursor: '123', timeout: 25 }),
    '/feeds/winning_bids?amount=gte.50&cursor=123&timeout=25',
  );
  assert.equal(buildUrl('/feeds/w', { stream: 'sse' }), '/feeds/w?stream=sse');
  assert.equal(
    buildUrl('http://127.0.0.1:8080/feeds/w', { filter: { item: ['in', ['a b', 'c']] }, cursor: '18446744073709551615' }),
    'http://127.0.0.1:8080/feeds/w?item=in.%28%22a+b%22%2Cc%29&cursor=18446744073709551615',
  );
  // Parameters already in the base URL stay; the cursor is replaced, not repeated.
  assert.equal(buildUrl('/feeds/w?cursor=1', { cursor: '2' }), '/feeds/w?cursor=2');
  assert.equal(buildUrl('feeds/w', { cursor: '2' }), '/feeds/w?cursor=2');
  assert.equal(encodeFilter({ amount: ['gte', 5], buyer: 'eq.3' }), 'amount=gte.5&buyer=eq.3');
  // URLSearchParams decodes back to the terms the server parses.
  const q = new URL(buildUrl('http://h/feeds/w', { filter: { item: ['eq', 'a&b=c'] } })).searchParams;
  assert.equal(q.get('item'), 'eq.a&b=c');
});

test('feeds list URL and feed name from a feed URL', () => {
  assert.equal(feedsUrlFor('/feeds/winning_bids'), '/feeds');
  assert.equal(feedsUrlFor('/feeds/winning_bids/'), '/feeds');
  assert.equal(feedsUrlFor('/api/v1/feeds/x?amount=gt.1'), '/api/v1/feeds');
  assert.equal(feedsUrlFor('http://127.0.0.1:9/feeds/x'), 'http://127.0.0.1:9/feeds');
  assert.equal(feedNameOf('/feeds/winning_bids?x=1'), 'winning_bids');
  assert.equal(feedNameOf('http://h/feeds/top%20buyers/'), 'top buyers');
});

test('parseFeedList: the documented shape and tolerated variants', () => {
  const doc = {
    feeds: [
      { name: 'winning_bids', columns: [{ name: 'auction_id', type: 'int8' }], cursor: '1608081358001', rows: 12, live: true },
      { name: 'top_buyers', columns: [{ name: 'buyer', type: 'int8' }], cursor: 42, rows: '3', live: false },
    ],
  };
  const l = parseFeedList(doc);
  assert.equal(l.length, 2);
  assert.deepEqual(
    { name: l[0].name, columns: l[0].columns, cursor: l[0].cursor, rows: l[0].rows, live: l[0].live, state: l[0].state },
    { name: 'winning_bids', columns: [{ name: 'auction_id', type: 'int8' }], cursor: '1608081358001', rows: 12, live: true, state: 'live' },
  );
  assert.equal(l[1].cursor, '42');
  assert.equal(l[1].rows, 3);
  assert.equal(l[1].live, false);
  // A bare array, a name-keyed map, and row_count/state spellings.
  assert.equal(parseFeedList([{ name: 'a' }])[0].name, 'a');
  const m = parseFeedList({ feeds: { a: { row_count: 5, state: 'live', columns: ['x'] } } });
  assert.deepEqual([m[0].name, m[0].rows, m[0].live, m[0].columns], ['a', 5, true, [{ name: 'x', type: null }]]);
  assert.throws(() => parseFeedList(7), TypeError);
});

test('parseReply keeps the digits of a cursor beyond 2^53', () => {
  assert.equal(parseReply('{"cursor":18446744073709551615,"batches":[]}').cursor, '18446744073709551615');
  assert.equal(parseReply('{"cursor":"18446744073709551615","batches":[]}').cursor, '18446744073709551615');
  assert.equal(parseReply('{"cursor":12,"batches":[]}').cursor, '12');
  assert.throws(() => parseReply('[1]'));
  assert.throws(() => parseReply('{"cursor":'));
});

test('backoff: full jitter within [0, min(cap, base*2^(n-1)))', () => {
  const opts = { base: 100, cap: 5000 };
  for (let n = 1; n <= 12; n++) {
    const ceiling = Math.min(5000, 100 * 2 ** (n - 1));
    assert.equal(backoffDelay(n, opts, () => 0), 0);
    assert.equal(backoffDelay(n, opts, () => 0.999999), Math.floor(0.999999 * ceiling));
    assert.ok(backoffDelay(n, opts, () => 0.999999) < ceiling);
    for (let i = 0; i < 200; i++) {
      const d = backoffDelay(n, opts);
      assert.ok(d >= 0 && d < ceiling, `attempt ${n}: ${d} within [0, ${ceiling})`);
    }
  }
  // Capped, even for absurd attempt counts; attempt 0 behaves as 1.
  assert.ok(backoffDelay(1e6, opts, () => 0.5) <= 2500);
  assert.equal(backoffDelay(0, opts, () => 0.5), 50);
  // Jitter spreads: 1000 draws at attempt 6 are not all alike and fill the range.
  const ds = Array.from({ length: 1000 }, () => backoffDelay(6, opts));
  assert.ok(Math.min(...ds) < 3200 * 0.1 && Math.max(...ds) > 3200 * 0.9);
  // Defaults: 500 ms base, 30 s cap.
  assert.equal(backoffDelay(1, undefined, () => 0.5), 250);
  assert.equal(backoffDelay(40, undefined, () => 0.5), 15000);
});
