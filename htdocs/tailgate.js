// tailgate.js - the browser client for tailgate feeds.
//
// A dependency-free ES module: served by nginx as it is, imported by the
// demo pages and by node (unit tests, scripts).  It keeps the rows of one
// feed in memory, applies every batch the server sends, and hands each batch
// to the page, also as a Vega-style changeset:
//
//   import { subscribe } from './tailgate.js';
//   const sub = subscribe('/feeds/winning_bids', {
//     filter: { amount: 'gte.50' },          // PostgREST-style, applied by the server
//     onBatch(batch, change) {               // change.insert / change.remove: objects
//       view.change('data', vega.changeset().insert(change.insert).remove(change.remove)).run();
//     },
//     onState(state, detail) { badge.textContent = state; },
//   });
//   sub.rows();          // the current rows (arrays, a multiset: duplicates repeat)
//   sub.objects();       // the same rows as objects keyed by column name
//   sub.setFilter({ amount: 'gte.10' });     // new snapshot, reported as a diff
//   sub.unsubscribe();
//
// The protocol (docs in the repository's PRODUCT brief and ARCHITECTURE):
//   GET url[?filters]               -> {"cursor":C,"columns":[{name,type}],"batches":[snapshot,...]}
//   GET url?cursor=C&timeout=s      -> {"cursor":C2,"batches":[...]}  (long-poll; [] on timeout)
//   410 Gone                        -> take a new snapshot; swap when it is in, report the diff
//   GET url?stream=sse              -> Server-Sent Events, id: cursor, data: batch JSON,
//                                      the first event being the snapshot batch
//
// Objects in change.insert / change.remove keep their identity: an object
// passed in `remove` is the very object passed earlier in `insert`, which is
// what Vega's changeset().remove(tuples) and keyed D3 joins need.

// SSE catch-up detection (see Subscription._startCatchUp).
const CATCHUP_GAP_MS = 150;
const CATCHUP_MAX_MS = 3000;

export const DEFAULT_TIMEOUT = 25; // seconds; the server's default long-poll timeout
export const FILTER_OPS = Object.freeze(['eq', 'neq', 'gt', 'gte', 'lt', 'lte', 'in']);
export const STATES = Object.freeze({
  CONNECTING: 'connecting', // no state yet: the first snapshot is on its way
  LIVE: 'live', // the last request succeeded; batches arrive as they happen
  RECONNECTING: 'reconnecting', // a request failed; retrying with backoff, keeping the rows
  RESYNCING: 'resyncing', // taking a new snapshot (410, filter change); rows kept until it is in
  STALLED: 'stalled', // nothing succeeded for 2x the long-poll timeout, or repeated failures
  FAILED: 'failed', // the server refused the request (400): retrying cannot help; stopped
  CLOSED: 'closed', // unsubscribe() was called
});

// ---------------------------------------------------------------------------
// Rows

// Canonical JSON text of a value: object keys sorted, so two rows holding
// the same json/jsonb values compare equal whatever their key order.
function canonical(v) {
  if (v === null || typeof v !== 'object') {
    const s = JSON.stringify(v);
    return s === undefined ? 'null' : s;
  }
  if (Array.isArray(v)) return '[' + v.map(canonical).join(',') + ']';
  return '{' + Object.keys(v).sort().map((k) => JSON.stringify(k) + ':' + canonical(v[k])).join(',') + '}';
}

/** The key a row is compared by: its canonical JSON text. */
export function rowKey(row) {
  for (const x of row) if (x !== null && typeof x === 'object') return canonical(row);
  return JSON.stringify(row);
}

function columnNames(columns) {
  return (columns || []).map((c, i) => (typeof c === 'string' ? c : c && c.name != null ? String(c.name) : String(i)));
}

/** A row (array in column order) as an object keyed by column name. */
export function rowToObject(columns, row) {
  const names = Array.isArray(columns) && typeof columns[0] === 'string' ? columns : columnNames(columns);
  const o = {};
  for (let i = 0; i < row.length; i++) o[i < names.length ? names[i] : String(i)] = row[i];
  return o;
}

export function rowsToObjects(columns, rows) {
  const names = columnNames(columns);
  return rows.map((r) => rowToObject(names, r));
}

/** The inverse of rowToObject. */
export function objectToRow(columns, obj) {
  return columnNames(columns).map((n) => (obj[n] === undefined ? null : obj[n]));
}

function sameColumns(a, b) {
  if (!a || !b || a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) {
    const x = a[i], y = b[i];
    if ((x && x.name) !== (y && y.name) || (x && x.type) !== (y && y.type)) return false;
  }
  return true;
}

// Net change per row key of one batch: deletes and inserts of the same row
// in one batch cancel out (a batch is one timestamp: order inside it has no
// meaning).
function netChange(batch) {
  const d = new Map();
  const bump = (row, n) => {
    const k = rowKey(row);
    const e = d.get(k);
    if (e) e.n += n;
    else d.set(k, { row, n });
  };
  for (const r of (batch && batch.deleted) || []) bump(r, -1);
  for (const r of (batch && batch.inserted) || []) bump(r, 1);
  return d;
}

// Row counts only: a new snapshot is built here before it replaces the rows.
class RowCounts {
  constructor() {
    this.m = new Map();
  }
  apply(batch) {
    for (const [k, { row, n }] of netChange(batch)) {
      const e = this.m.get(k);
      const c = (e ? e.n : 0) + n;
      if (c > 0) this.m.set(k, { row: e ? e.row : row, n: c });
      else this.m.delete(k);
    }
  }
}

/**
 * A multiset of rows.  Each copy of a row has one object (keyed by column
 * names) that keeps its identity until that copy is deleted.
 */
export class RowSet {
  constructor(columns = []) {
    this.columns = columns || [];
    this._names = columnNames(this.columns);
    this._m = new Map(); // key -> { row, objs: [object per copy] }
    this._size = 0;
  }
  /** Number of rows, counting duplicates. */
  get size() {
    return this._size;
  }
  count(row) {
    const e = this._m.get(rowKey(row));
    return e ? e.objs.length : 0;
  }
  has(row) {
    return this._m.has(rowKey(row));
  }
  /** Every row (arrays), a row with multiplicity n n times.  Do not mutate. */
  rows() {
    const out = [];
    for (const e of this._m.values()) for (let i = 0; i < e.objs.length; i++) out.push(e.row);
    return out;
  }
  /** Every row as an object keyed by column name (the objects the changesets carry). */
  objects() {
    const out = [];
    for (const e of this._m.values()) for (const o of e.objs) out.push(o);
    return out;
  }
  /** [row, count] for each distinct row. */
  *entries() {
    for (const e of this._m.values()) yield [e.row, e.objs.length];
  }
  _add(k, row, n, insert) {
    let e = this._m.get(k);
    if (!e) this._m.set(k, (e = { row, objs: [] }));
    for (let i = 0; i < n; i++) {
      const o = rowToObject(this._names, e.row);
      e.objs.push(o);
      insert.push(o);
    }
    this._size += n;
  }
  _remove(k, e, n, remove) {
    for (let i = 0; i < n; i++) remove.push(e.objs.pop());
    this._size -= n;
    if (e.objs.length === 0) this._m.delete(k);
  }
  /**
   * Apply one batch: `deleted` removes one copy per listed row, `inserted`
   * adds copies.  Returns the changeset {insert, remove} (objects) and
   * `missing`: how many deleted rows were not held (0 unless the client and
   * the server disagree, which calls for a new snapshot).
   */
  apply(batch) {
    const insert = [], remove = [];
    let missing = 0;
    for (const [k, { row, n }] of netChange(batch)) {
      if (n > 0) this._add(k, row, n, insert);
      else if (n < 0) {
        const e = this._m.get(k);
        const have = e ? e.objs.length : 0;
        const take = Math.min(have, -n);
        missing += -n - take;
        if (take > 0) this._remove(k, e, take, remove);
      }
    }
    return { insert, remove, missing };
  }
  /**
   * Become `next` (a RowCounts, a RowSet or an array of rows), changing only
   * what differs: objects of rows present in both stay the same objects.
   * Returns {inserted, deleted} (rows) and {insert, remove} (objects).
   */
  replace(next, columns) {
    let target = next;
    if (Array.isArray(next)) {
      target = new RowCounts();
      target.apply({ inserted: next });
    }
    const count = (e) => (e.objs ? e.objs.length : e.n);
    const inserted = [], deleted = [], insert = [], remove = [];
    if (columns && !sameColumns(columns, this.columns)) {
      // Other columns: every object changes shape, so everything is replaced.
      for (const [k, e] of this._m) {
        for (let i = 0; i < e.objs.length; i++) deleted.push(e.row);
        this._remove(k, e, e.objs.length, remove);
      }
      this.columns = columns;
      this._names = columnNames(columns);
    }
    for (const [k, e] of this._m) {
      const t = target.m ? target.m.get(k) : target._m.get(k);
      const want = t ? count(t) : 0;
      const n = e.objs.length - want;
      if (n > 0) {
        for (let i = 0; i < n; i++) deleted.push(e.row);
        this._remove(k, e, n, remove);
      }
    }
    for (const [k, t] of target.m || target._m) {
      const e = this._m.get(k);
      const n = count(t) - (e ? e.objs.length : 0);
      if (n > 0) {
        for (let i = 0; i < n; i++) inserted.push(t.row);
        this._add(k, t.row, n, insert);
      }
    }
    return { inserted, deleted, insert, remove };
  }
  clear() {
    this._m.clear();
    this._size = 0;
  }
}

// ---------------------------------------------------------------------------
// URLs and filters

function formatFilterValue(v) {
  if (v === null) return 'null';
  const s = String(v);
  // PostgREST quoting: a value holding a reserved character goes in double quotes.
  return /[,()"\\\s]/.test(s) || s === '' ? '"' + s.replace(/["\\]/g, (c) => '\\' + c) + '"' : s;
}

function filterTerm(col, op, value) {
  if (!FILTER_OPS.includes(op)) throw new TypeError(`tailgate: unknown filter operator "${op}" for column "${col}"`);
  if (op === 'in') {
    const list = Array.isArray(value) ? value : [value];
    return 'in.(' + list.map(formatFilterValue).join(',') + ')';
  }
  if (Array.isArray(value)) throw new TypeError(`tailgate: filter ${col}=${op} takes one value`);
  return op + '.' + formatFilterValue(value);
}

function checkTerm(col, term) {
  const op = term.slice(0, term.indexOf('.'));
  if (term.indexOf('.') < 1 || !FILTER_OPS.includes(op))
    throw new TypeError(`tailgate: bad filter "${col}=${term}" (want op.value, op one of ${FILTER_OPS.join(', ')})`);
  return term;
}

/**
 * Normalise a row filter to a list of [column, "op.value"] pairs.
 * Accepted:   "amount=gte.50&buyer=eq.3"  (a query string)
 *             { amount: 'gte.50' }  { amount: ['gte', 50] }  { buyer: ['in', [1, 2]] }
 *             { amount: ['gte.10', 'lt.50'] }  (several terms on one column)
 *             { amount: { gte: 10, lt: 50 } }
 *             [['amount', 'gte.50'], ...]  or a URLSearchParams
 * Throws TypeError on an unknown operator.  null/undefined/{} mean no filter.
 */
export function normalizeFilter(filter) {
  const out = [];
  if (filter == null || filter === '') return out;
  if (typeof filter === 'string') filter = new URLSearchParams(filter.replace(/^\?/, ''));
  const entries =
    typeof URLSearchParams !== 'undefined' && filter instanceof URLSearchParams
      ? [...filter.entries()]
      : Array.isArray(filter)
        ? filter
        : Object.entries(filter);
  for (const [col, spec] of entries) {
    if (spec === undefined || spec === null || spec === '') continue;
    if (typeof spec === 'string') out.push([col, checkTerm(col, spec)]);
    else if (Array.isArray(spec)) {
      if (spec.length === 2 && FILTER_OPS.includes(spec[0])) out.push([col, filterTerm(col, spec[0], spec[1])]);
      else for (const t of spec) out.push([col, typeof t === 'string' ? checkTerm(col, t) : filterTerm(col, t[0], t[1])]);
    } else if (typeof spec === 'object') {
      for (const [op, v] of Object.entries(spec)) out.push([col, filterTerm(col, op, v)]);
    } else throw new TypeError(`tailgate: bad filter for column "${col}"`);
  }
  return out;
}

/** The query string of a filter ("amount=gte.50&buyer=eq.3"), for links and display. */
export function encodeFilter(filter) {
  const p = new URLSearchParams();
  for (const [c, t] of normalizeFilter(filter)) p.append(c, t);
  return p.toString();
}

const DUMMY_BASE = 'http://tailgate.invalid';

/**
 * The URL of a request: `base` (absolute, or relative to the page) plus the
 * filter terms, then cursor, timeout and stream.  Query parameters already
 * in `base` are kept.
 */
export function buildUrl(base, { filter, cursor, timeout, stream } = {}) {
  const abs = /^[a-z][a-z0-9+.-]*:/i.test(base);
  const u = new URL(base, abs ? undefined : DUMMY_BASE);
  for (const [c, t] of normalizeFilter(filter)) u.searchParams.append(c, t);
  if (cursor != null) u.searchParams.set('cursor', String(cursor));
  if (timeout != null) u.searchParams.set('timeout', String(timeout));
  if (stream) u.searchParams.set('stream', stream);
  const s = u.toString();
  return abs ? s : s.slice(DUMMY_BASE.length);
}

/** The feeds-list URL beside a feed URL: "/feeds/winning_bids" -> "/feeds". */
export function feedsUrlFor(feedUrl) {
  const abs = /^[a-z][a-z0-9+.-]*:/i.test(feedUrl);
  const u = new URL(feedUrl, abs ? undefined : DUMMY_BASE);
  u.search = '';
  u.hash = '';
  u.pathname = u.pathname.replace(/\/+$/, '').replace(/\/[^/]*$/, '') || '/';
  const s = u.toString();
  return abs ? s : s.slice(DUMMY_BASE.length);
}

/** The feed's name: the last path segment of its URL. */
export function feedNameOf(feedUrl) {
  const u = new URL(feedUrl, /^[a-z][a-z0-9+.-]*:/i.test(feedUrl) ? undefined : DUMMY_BASE);
  return decodeURIComponent(u.pathname.replace(/\/+$/, '').split('/').pop() || '');
}

// ---------------------------------------------------------------------------
// The feeds list (GET /feeds).  Every knowledge of its JSON shape is here.

function normalizeFeed(f, name) {
  const num = (v) => (v == null || v === '' ? null : Number(v));
  return {
    name: String(f.name ?? f.feed ?? name ?? ''),
    columns: Array.isArray(f.columns)
      ? f.columns.map((c) => (typeof c === 'string' ? { name: c, type: null } : { name: c.name, type: c.type ?? null }))
      : [],
    cursor: f.cursor == null ? null : String(f.cursor),
    rows: num(f.rows ?? f.row_count ?? f.count),
    live: f.live == null ? (f.state == null ? null : f.state === 'live') : Boolean(f.live),
    state: f.state ?? (f.live == null ? null : f.live ? 'live' : 'down'),
    raw: f,
  };
}

/**
 * The feeds list as [{name, columns:[{name,type}], cursor, rows, live, state, raw}],
 * from the reply of GET /feeds: {"feeds":[...]}, a bare array, or {name: {...}}.
 */
export function parseFeedList(json) {
  const list = Array.isArray(json) ? json : json && Array.isArray(json.feeds) ? json.feeds : null;
  if (list) return list.map((f) => normalizeFeed(f));
  const map = json && typeof json.feeds === 'object' && json.feeds ? json.feeds : json;
  if (map && typeof map === 'object') return Object.entries(map).map(([n, f]) => normalizeFeed(f || {}, n));
  throw new TypeError('tailgate: unexpected feeds list');
}

/** GET the feeds list. */
export async function listFeeds(url = '/feeds', { fetch: f, signal } = {}) {
  const doFetch = f || globalThis.fetch.bind(globalThis);
  const res = await doFetch(url, { signal, headers: { Accept: 'application/json' }, cache: 'no-store' });
  if (!res.ok) throw httpError(res.status, await res.text().catch(() => ''));
  return parseFeedList(await res.json());
}

// ---------------------------------------------------------------------------
// Backoff

/**
 * Full-jitter exponential backoff: a uniform delay in
 * [0, min(cap, base * 2^(attempt-1))) milliseconds, attempt counting from 1.
 */
export function backoffDelay(attempt, { base = 500, cap = 30000 } = {}, random = Math.random) {
  const n = Math.max(1, attempt | 0);
  const ceiling = Math.min(cap, base * 2 ** Math.min(n - 1, 30));
  return Math.floor(random() * ceiling);
}

// The browser says a retry may work now: the network is back ("online"),
// the page is shown again from the back/forward cache ("pageshow",
// persisted) or thawed after being frozen ("resume").  fn is called then;
// returns the function that stops listening.  Nothing outside a browser.
export function onRetryHint(fn) {
  const win = typeof window !== 'undefined' && window && typeof window.addEventListener === 'function' ? window : null;
  const doc = typeof document !== 'undefined' && document && typeof document.addEventListener === 'function' ? document : null;
  if (!win) return () => {};
  const onPageShow = (e) => e && e.persisted && fn('pageshow');
  const onOnline = () => fn('online');
  const onResume = () => fn('resume');
  win.addEventListener('online', onOnline);
  win.addEventListener('pageshow', onPageShow);
  if (doc) doc.addEventListener('resume', onResume);
  return () => {
    win.removeEventListener('online', onOnline);
    win.removeEventListener('pageshow', onPageShow);
    if (doc) doc.removeEventListener('resume', onResume);
  };
}

// ---------------------------------------------------------------------------
// Replies and errors

function httpError(status, text) {
  let body = null;
  try {
    body = JSON.parse(text);
  } catch {
    /* not JSON */
  }
  const msg = (body && (body.message || body.error)) || `HTTP ${status}`;
  const e = new Error(`tailgate: ${status} ${msg}`);
  e.status = status;
  e.body = body;
  return e;
}

// A reply's JSON.  The cursor is opaque text ("POSITION.IDENTITY" today):
// kept as the string the server sent, never parsed or compared.  (A server
// that sent it as a JSON number beyond 2^53 would lose digits in
// JSON.parse: its text is taken from the reply instead.)
export function parseReply(text) {
  const body = JSON.parse(text);
  if (!body || typeof body !== 'object' || Array.isArray(body)) throw new Error('tailgate: reply is not an object');
  if (typeof body.cursor === 'number' && !Number.isSafeInteger(body.cursor)) {
    const m = /"cursor"\s*:\s*(-?\d+)/.exec(text);
    if (m) body.cursor = m[1];
  }
  if (body.cursor != null) body.cursor = String(body.cursor);
  return body;
}

// ---------------------------------------------------------------------------
// Server-Sent Events: a parser and a fetch-based EventSource, used where
// the platform has no EventSource (node) and in tests.

/**
 * Incremental text/event-stream parser (the WHATWG rules): feed it text as
 * it arrives, it calls onEvent({type, data, id}) per dispatched event and
 * onRetry(ms) for retry fields.  `lastEventId` persists across events.
 */
export class SSEParser {
  constructor(onEvent, onRetry) {
    this.onEvent = onEvent;
    this.onRetry = onRetry || (() => {});
    this.buf = '';
    this.data = [];
    this.type = '';
    this.lastEventId = '';
    this.first = true;
    this.pendingCR = false;
  }
  feed(text) {
    if (this.first && text.length) {
      if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
      this.first = false;
    }
    if (this.pendingCR && text.startsWith('\n')) text = text.slice(1);
    this.pendingCR = false;
    this.buf += text;
    let start = 0;
    for (;;) {
      const m = /\r\n|\r|\n/g;
      m.lastIndex = start;
      const hit = m.exec(this.buf);
      if (!hit) break;
      // A lone CR at the very end may be the first half of CRLF.
      if (hit[0] === '\r' && hit.index === this.buf.length - 1) this.pendingCR = true;
      this.line(this.buf.slice(start, hit.index));
      start = hit.index + hit[0].length;
    }
    this.buf = this.buf.slice(start);
  }
  line(l) {
    if (l === '') {
      if (this.data.length) {
        this.onEvent({ type: this.type || 'message', data: this.data.join('\n'), id: this.lastEventId });
      }
      this.data = [];
      this.type = '';
      return;
    }
    if (l[0] === ':') return; // comment (heartbeat)
    const i = l.indexOf(':');
    const field = i < 0 ? l : l.slice(0, i);
    let value = i < 0 ? '' : l.slice(i + 1);
    if (value[0] === ' ') value = value.slice(1);
    if (field === 'data') this.data.push(value);
    else if (field === 'event') this.type = value;
    else if (field === 'id') {
      if (!value.includes('\0')) this.lastEventId = value;
    } else if (field === 'retry') {
      if (/^\d+$/.test(value)) this.onRetry(Number(value));
    }
  }
}

/**
 * The subset of EventSource that subscribe() uses, over fetch: readyState,
 * onopen/onmessage/onerror, addEventListener, close().  Like EventSource it
 * reconnects by itself with Last-Event-ID after a dropped stream, and closes
 * for good on an HTTP status other than 200 or a wrong content type.
 */
export class FetchEventSource {
  static CONNECTING = 0;
  static OPEN = 1;
  static CLOSED = 2;
  constructor(url, init = {}) {
    this.url = url;
    this.readyState = 0;
    this.onopen = this.onmessage = this.onerror = null;
    this._fetch = init.fetch || globalThis.fetch.bind(globalThis);
    this._listeners = new Map();
    this._retry = init.retry ?? 3000;
    this._lastId = '';
    this._ac = null;
    this._timer = null;
    this._connect();
  }
  addEventListener(type, fn) {
    if (!this._listeners.has(type)) this._listeners.set(type, new Set());
    this._listeners.get(type).add(fn);
  }
  removeEventListener(type, fn) {
    this._listeners.get(type)?.delete(fn);
  }
  _dispatch(type, ev) {
    const h = this['on' + type];
    if (typeof h === 'function') h.call(this, ev);
    for (const fn of this._listeners.get(type) || []) fn.call(this, ev);
  }
  close() {
    this.readyState = 2;
    clearTimeout(this._timer);
    if (this._ac) this._ac.abort();
  }
  async _connect() {
    const ac = (this._ac = new AbortController());
    const headers = { Accept: 'text/event-stream' };
    if (this._lastId) headers['Last-Event-ID'] = this._lastId;
    let res;
    try {
      res = await this._fetch(this.url, { headers, signal: ac.signal, cache: 'no-store' });
    } catch {
      return this._reconnect(ac);
    }
    if (this.readyState === 2) return;
    const ct = (res.headers && res.headers.get && res.headers.get('content-type')) || '';
    if (res.status !== 200 || !/^text\/event-stream/i.test(ct)) {
      this.status = res.status;
      this.readyState = 2;
      try {
        await res.body?.cancel();
      } catch {
        /* ignore */
      }
      this._dispatch('error', { type: 'error', status: res.status });
      return;
    }
    this.readyState = 1;
    this._dispatch('open', { type: 'open' });
    const parser = new SSEParser(
      (e) => {
        this._lastId = e.id;
        if (this.readyState !== 1) return;
        this._dispatch(e.type, { type: e.type, data: e.data, lastEventId: e.id });
      },
      (ms) => (this._retry = ms),
    );
    parser.lastEventId = this._lastId;
    try {
      const dec = new TextDecoder();
      const reader = res.body.getReader();
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        parser.feed(dec.decode(value, { stream: true }));
        if (this.readyState === 2) return;
      }
    } catch {
      /* dropped: reconnect below */
    }
    this._reconnect(ac);
  }
  _reconnect(ac) {
    if (this.readyState === 2 || ac !== this._ac) return;
    this.readyState = 0;
    this._dispatch('error', { type: 'error' });
    if (this.readyState === 2) return;
    this._timer = setTimeout(() => this._connect(), this._retry);
  }
}

// ---------------------------------------------------------------------------
// The subscription

const INTERRUPTED = Symbol('interrupted');

class Subscription {
  constructor(url, o) {
    this.url = url;
    this.feed = feedNameOf(url);
    this.transport = o.transport === 'sse' ? 'sse' : 'longpoll';
    // The long-poll timeout: sent as timeout= only when given (a server
    // refuses one above its --max-timeout); else the server's default,
    // assumed 25 s and raised when empty replies are seen to take longer.
    this.timeout = o.timeout ?? null;
    this._serverTimeout = DEFAULT_TIMEOUT;
    this.columns = o.columns || null;
    this.stats = { requests: 0, batches: 0, resyncs: 0, failures: 0, lastBatchAt: null, lastOkAt: null };
    this._filter = normalizeFilter(o.filter);
    this._onBatch = o.onBatch || null;
    this._coalesce = Boolean(o.coalesce);
    this._onState = o.onState || null;
    this._onError = o.onError || ((e) => console.error(e));
    this._fetch = o.fetch || globalThis.fetch.bind(globalThis);
    this._ES = o.EventSource || globalThis.EventSource || FetchEventSource;
    this._feedsUrl = o.feedsUrl || feedsUrlFor(url);
    this._backoff = { base: o.backoff?.base ?? 500, cap: o.backoff?.cap ?? 30000 };
    this._random = o.random || Math.random;
    this._stallAfterOpt = o.stallAfter;
    this._stallFailures = o.stallFailures ?? 5;
    this._deadlineOpt = o.requestTimeout;
    this._snapshotDeadline = o.snapshotTimeout ?? 90000;
    this._rows = new RowSet(this.columns || []);
    this._hasState = false;
    this._cursor = null;
    this._needSnapshot = true;
    this._state = STATES.CONNECTING;
    this._detail = {};
    this._closed = false;
    this._failed = false;
    this._failures = 0;
    this._gone = 0; // 410s since the last successful poll
    this._fastEmpty = 0;
    this._ac = null;
    this._wake = null;
    this._stallTimer = null;
    this._es = null;
    this._catchUp = null; // SSE: {last, until} while a (re)connection's burst is delivered
    this._afterFailure = false; // long-poll: the next reply brings what was missed
  }

  get state() {
    return this._state;
  }
  get cursor() {
    return this._cursor;
  }
  // The long-poll timeout in force (seconds).
  get _pollTimeout() {
    return this.timeout ?? this._serverTimeout;
  }
  // No success for this long: stalled (2x the long-poll timeout).
  get _stallAfter() {
    return this._stallAfterOpt ?? 2 * this._pollTimeout * 1000;
  }
  // A long-poll not answered by then is given up.  Without a timeout of
  // our own the server's may be longer than we think: wait generously
  // (nginx ends a silent upstream after its fastcgi_read_timeout anyway).
  get _deadline() {
    return this._deadlineOpt ?? (this.timeout != null ? (this.timeout + 15) * 1000 : 90000);
  }
  /** The detail of the last state report: {failures, delay, status, error, reason}. */
  get detail() {
    return this._detail;
  }
  get filter() {
    return this._filter.slice();
  }
  get size() {
    return this._rows.size;
  }
  rows() {
    return this._rows.rows();
  }
  objects() {
    return this._rows.objects();
  }
  toObject(row) {
    return rowToObject(this._rows.columns, row);
  }

  /** Stop: abort the request in flight, close the stream, report `closed`. */
  unsubscribe() {
    if (this._closed && !this._failed) return;
    this._closed = true;
    this._failed = false;
    if (this._unhint) this._unhint();
    this._interrupt('closed');
    clearTimeout(this._stallTimer);
    this._setState(STATES.CLOSED, {});
  }

  /**
   * Change the row filter: the request in flight is aborted, a snapshot with
   * the new filter is taken, and the difference to the rows held is reported
   * as one batch (kind "resync").  Throws TypeError on a bad filter.
   */
  setFilter(filter) {
    const f = normalizeFilter(filter);
    if (this._closed && !this._failed) return;
    const key = (x) => x.map(([c, t]) => c + '=' + t).join('&');
    if (key(f) === key(this._filter)) return;
    this._filter = f;
    this.resync('filter');
  }

  /** Take a new snapshot now (keeping the rows until it is in). */
  resync(reason = 'requested') {
    if (this._closed && !this._failed) return;
    this._needSnapshot = true;
    this._gone = 0;
    if (this._failed) {
      // After a 400 (say, a bad filter typed by a user) a new request may work.
      this._failed = false;
      this._closed = false;
      this._setState(this._hasState ? STATES.RESYNCING : STATES.CONNECTING, { reason });
      this._armStall();
      this._loop();
      return;
    }
    if (this._hasState) this._setState(STATES.RESYNCING, { reason });
    this._interrupt(reason);
  }

  // ---- internals ----

  _setState(state, detail = {}) {
    const changed = state !== this._state;
    this._state = state;
    this._detail = detail;
    if (state === STATES.STALLED || state === STATES.FAILED || state === STATES.CLOSED) {
      clearTimeout(this._stallTimer);
      this._stallTimer = null;
    }
    if (this._onState && (changed || Object.keys(detail).length)) {
      try {
        this._onState(state, detail, this);
      } catch (e) {
        this._onError(e);
      }
    }
  }

  _armStall() {
    clearTimeout(this._stallTimer);
    this._stallTimer = null;
    // An open event stream may be quiet for as long as the feed is: not a stall.
    if (this._closed || !(this._stallAfter > 0) || (this._es && this._es.readyState === 1)) return;
    this._stallTimer = setTimeout(() => {
      this._stallTimer = null;
      if (this._closed || this._state === STATES.FAILED) return;
      this._setState(STATES.STALLED, { since: this.stats.lastOkAt, reason: 'no reply', failures: this._failures });
    }, this._stallAfter);
  }

  _ok() {
    this._failures = 0;
    this.stats.lastOkAt = Date.now();
    this._armStall();
  }

  _emit(batch, change, kind, live = false) {
    this.stats.batches++;
    this.stats.lastBatchAt = Date.now();
    if (!this._onBatch) return;
    const ch = {
      kind,
      insert: change.insert,
      remove: change.remove,
      cursor: this._cursor,
      columns: this._rows.columns,
      live: kind === 'delta' && live,
    };
    try {
      this._onBatch(batch, ch, this);
    } catch (e) {
      this._onError(e);
    }
  }

  _interrupt() {
    if (this._ac) this._ac.abort();
    if (this._wake) this._wake();
    if (this._es) this._closeES(INTERRUPTED);
  }

  _sleep(ms) {
    return new Promise((resolve) => {
      const t = setTimeout(done, ms);
      function done() {
        clearTimeout(t);
        resolve();
      }
      this._wake = done;
    }).finally(() => (this._wake = null));
  }

  // One request, never two: the loops await each before making the next.
  async _request(url, { snapshot = false, deadline = this._deadline } = {}) {
    const ac = new AbortController();
    this._ac = ac;
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      ac.abort();
    }, deadline);
    this.stats.requests++;
    try {
      const init = { signal: ac.signal, headers: { Accept: 'application/json' } };
      if (snapshot) init.cache = 'no-store';
      const res = await this._fetch(url, init);
      const text = await res.text();
      return { status: res.status, text, headers: res.headers };
    } catch (e) {
      if (timedOut) {
        const err = new Error(`tailgate: no reply within ${deadline} ms`);
        err.timeout = true;
        throw err;
      }
      if (ac.signal.aborted) throw INTERRUPTED;
      throw e;
    } finally {
      clearTimeout(timer);
      if (this._ac === ac) this._ac = null;
    }
  }

  _start() {
    this._armStall();
    // Back online (or shown again): a backoff in progress ends now, not up
    // to 30 s later.  Only the sleep is cut short: still one request at a time.
    this._unhint = onRetryHint(() => {
      if (this._wake && !this._closed) this._wake();
    });
    // Let the caller keep the handle before the first callback.
    Promise.resolve().then(() => {
      if (this._closed) return;
      this._state = null; // so that the first state is reported
      this._setState(STATES.CONNECTING, {});
      this._loop();
    });
  }

  // Each loop has a generation: a loop started after a failure (resync)
  // retires any older one still unwinding, so requests never overlap.
  _loop() {
    const gen = (this._gen = (this._gen || 0) + 1);
    (this.transport === 'sse' ? this._runSSE(gen) : this._runLongPoll(gen)).catch((e) => this._onError(e));
  }

  async _runLongPoll(gen) {
    while (!this._closed && gen === this._gen) {
      try {
        if (this._needSnapshot) await this._snapshot();
        else await this._poll();
      } catch (e) {
        if (this._closed) break;
        if (e === INTERRUPTED) continue;
        await this._fail(e);
      }
    }
  }

  // Backoff, the state to show while waiting, then back to the loop.
  async _fail(err) {
    this._afterFailure = true;
    if (err && err.status === 400) {
      this._closed = true; // stopped until setFilter() or resync()
      this._failed = true;
      clearTimeout(this._stallTimer);
      this._setState(STATES.FAILED, { status: 400, error: err.message, body: err.body });
      return;
    }
    this._failures++;
    this.stats.failures++;
    let delay = backoffDelay(this._failures, this._backoff, this._random);
    const ra = err && err.retryAfter;
    if (ra > delay) delay = Math.min(ra, this._backoff.cap);
    const sinceOk = Date.now() - (this.stats.lastOkAt ?? this._startedAt ?? Date.now());
    const stalled = this._failures >= this._stallFailures || (this.stats.lastOkAt != null && sinceOk > this._stallAfter);
    const base = stalled ? STATES.STALLED : STATES.RECONNECTING;
    this._setState(base, {
      failures: this._failures,
      delay,
      status: err && err.status,
      error: err && err.message ? err.message : String(err),
    });
    await this._sleep(delay);
  }

  _checkStatus(r) {
    if (r.status === 200) return;
    const e = httpError(r.status, r.text);
    const ra = r.headers && r.headers.get && r.headers.get('retry-after');
    if (ra && /^\d+$/.test(ra)) e.retryAfter = Number(ra) * 1000;
    throw e;
  }

  async _snapshot() {
    const first = !this._hasState;
    if (!first && this._state !== STATES.RESYNCING) this._setState(STATES.RESYNCING, { reason: 'gone' });
    if (this._gone > 1) {
      // 410 right after a fresh snapshot: something (a cache?) serves stale
      // cursors.  Do not spin: back off, more each time, until a poll succeeds.
      const delay = backoffDelay(this._gone - 1, this._backoff, this._random);
      this._setState(STATES.RESYNCING, { reason: 'gone again', status: 410, delay, failures: this._gone - 1 });
      await this._sleep(delay);
      if (this._closed || !this._needSnapshot) return;
    }
    const r = await this._request(buildUrl(this.url, { filter: this._filter }), {
      snapshot: true,
      deadline: this._snapshotDeadline,
    });
    this._checkStatus(r);
    const body = parseReply(r.text);
    if (!Array.isArray(body.batches) || body.cursor == null) throw new Error('tailgate: snapshot reply without cursor or batches');
    this._installSnapshot(body.batches, body.cursor, body.columns);
    this._ok();
    this._setState(STATES.LIVE, {});
  }

  // A snapshot reply holds the snapshot batch and the batches after it
  // (as many as the server's ring holds): they are folded into one state
  // first (no object is made for a row deleted later).  The first snapshot
  // is reported as one batch of kind "snapshot" holding every row; a later
  // one replaces the rows held and is reported as their difference, one
  // synthetic batch of kind "resync".
  _installSnapshot(batches, cursor, columns) {
    if (columns) this.columns = columns;
    this._needSnapshot = false;
    this._afterFailure = false; // the snapshot holds what was missed
    const next = new RowCounts();
    for (const b of batches) next.apply(b);
    const last = batches[batches.length - 1];
    const timestamp = last && last.timestamp != null ? String(last.timestamp) : cursor;
    this._cursor = cursor;
    if (!this._hasState) {
      this._rows = new RowSet(this.columns || []);
      this._hasState = true;
      const d = this._rows.replace(next);
      this._emit({ timestamp, inserted: d.inserted, deleted: [] }, d, 'snapshot');
      return;
    }
    const d = this._rows.replace(next, this.columns || undefined);
    this.stats.resyncs++;
    this._emit({ timestamp, inserted: d.inserted, deleted: d.deleted }, d, 'resync');
  }

  // live: false for catch-up, batches published before this connection
  // delivered them (what a reconnection brings at once).
  _applyDeltas(batches, live = true) {
    if (this._coalesce && batches.length > 1) {
      // One change for the whole reply (catching up after a pause): pages
      // that redraw per batch do it once.
      const merged = { timestamp: batches[batches.length - 1].timestamp, inserted: [], deleted: [] };
      for (const b of batches) {
        for (const r of b.inserted || []) merged.inserted.push(r);
        for (const r of b.deleted || []) merged.deleted.push(r);
      }
      batches = [merged];
    }
    for (const b of batches) {
      if (this._closed) return;
      const ch = this._rows.apply(b);
      this._emit(b, ch, 'delta', live);
      if (ch.missing > 0 && !this._needSnapshot) {
        // The server deleted rows we do not hold: we disagree.  Start over.
        this._needSnapshot = true;
        this._setState(STATES.RESYNCING, { reason: 'diverged', missing: ch.missing });
      }
    }
  }

  async _poll() {
    const started = Date.now();
    const r = await this._request(buildUrl(this.url, { filter: this._filter, cursor: this._cursor, timeout: this.timeout }));
    if (r.status === 410) {
      this._gone++;
      this._needSnapshot = true;
      this._setState(STATES.RESYNCING, { reason: 'gone', status: 410 });
      return;
    }
    this._checkStatus(r);
    const body = parseReply(r.text);
    if (!Array.isArray(body.batches)) throw new Error('tailgate: reply without batches');
    this._gone = 0;
    this._ok();
    if (this._state !== STATES.LIVE && !this._needSnapshot) this._setState(STATES.LIVE, {});
    if (body.cursor != null) this._cursor = body.cursor;
    // The first reply after a failure holds what was missed meanwhile.
    const live = !this._afterFailure;
    this._afterFailure = false;
    this._applyDeltas(body.batches, live);
    if (this._needSnapshot && this._state !== STATES.RESYNCING) this._setState(STATES.RESYNCING, { reason: 'diverged' });
    // An empty reply long before the timeout, again and again, means
    // something answers for the server (a cache): do not spin.
    const took = Date.now() - started;
    if (body.batches.length === 0 && this.timeout == null && took > this._serverTimeout * 1000)
      this._serverTimeout = Math.min(600, Math.ceil(took / 1000));
    if (body.batches.length === 0 && took < Math.min(1000, this._pollTimeout * 500)) {
      if (++this._fastEmpty >= 3) await this._sleep(backoffDelay(this._fastEmpty - 2, this._backoff, this._random));
    } else this._fastEmpty = 0;
  }

  // ---- SSE ----
  //
  // A fresh EventSource (no Last-Event-ID) starts with the snapshot event.
  // EventSource itself resumes dropped streams with Last-Event-ID; when it
  // gives up (any non-200 answer, such as 410 for a cursor the server no
  // longer holds, or 503), we back off and open a fresh one, whose
  // snapshot replaces the rows held (reported as their difference).

  async _runSSE(gen) {
    while (!this._closed && gen === this._gen) {
      try {
        if (!this.columns) await this._fetchColumns();
        const why = await this._sseSession();
        if (this._closed) break;
        if (why === INTERRUPTED) continue;
        await this._fail(new Error('tailgate: event stream closed by the server'));
      } catch (e) {
        if (this._closed) break;
        if (e === INTERRUPTED) continue;
        await this._fail(e);
      }
    }
  }

  async _fetchColumns() {
    const r = await this._request(this._feedsUrl);
    this._checkStatus(r);
    const feed = parseFeedList(JSON.parse(r.text)).find((f) => f.name === this.feed);
    if (!feed) throw Object.assign(new Error(`tailgate: feed "${this.feed}" not in the feeds list`), { status: 404 });
    this.columns = feed.columns;
  }

  _closeES(why) {
    const es = this._es;
    if (!es) return;
    this._es = null;
    es.close();
    if (es._tgDone) es._tgDone(why);
  }

  // A stream's catch-up: the server writes the snapshot event and every
  // batch after it (or, resumed, every batch missed) at once, and they are
  // dispatched back to back.  A gap of CATCHUP_GAP_MS ends the burst (as
  // does CATCHUP_MAX_MS): later events are batches published as they
  // arrive.  A live batch right at the end of a burst may be taken for
  // catch-up, never the other way round but for a burst longer than the cap.
  _startCatchUp() {
    const now = Date.now();
    this._catchUp = { last: now, until: now + CATCHUP_MAX_MS };
  }

  _inCatchUp() {
    const c = this._catchUp;
    const now = Date.now();
    if (c && now - c.last <= CATCHUP_GAP_MS && now <= c.until) {
      c.last = now;
      return true;
    }
    this._catchUp = null;
    return false;
  }

  _sseSession() {
    return new Promise((resolve) => {
      const url = buildUrl(this.url, { filter: this._filter, stream: 'sse' });
      this.stats.requests++;
      const es = new this._ES(url, { fetch: this._fetch });
      this._es = es;
      let expectSnapshot = true;
      es._tgDone = resolve;
      const onData = (ev, named) => {
        if (this._es !== es || this._closed) return;
        let msg;
        try {
          msg = parseReply(ev.data);
        } catch (e) {
          this._closeES('bad event');
          this._onError(new Error(`tailgate: bad event data: ${e.message}`));
          return resolve('bad event');
        }
        // An event may carry an envelope like the long-poll reply, or one batch.
        const batches = Array.isArray(msg.batches) ? msg.batches : [msg];
        // The cursor is opaque: the event's id (or an envelope's cursor),
        // never made from a batch's timestamp.
        const cursor = ev.lastEventId || msg.cursor || this._cursor;
        if (expectSnapshot || named === 'snapshot') {
          expectSnapshot = false;
          this._installSnapshot(batches, cursor, msg.columns);
          this._gone = 0;
          this._startCatchUp();
        } else {
          this._cursor = cursor;
          this._applyDeltas(batches, !this._inCatchUp());
        }
        this._ok();
        if (this._state !== STATES.LIVE && !this._needSnapshot) this._setState(STATES.LIVE, {});
        if (this._needSnapshot) this._closeES(INTERRUPTED); // diverged: start over
      };
      es.onmessage = (ev) => onData(ev, 'message');
      es.addEventListener('snapshot', (ev) => onData(ev, 'snapshot'));
      es.addEventListener('batch', (ev) => onData(ev, 'batch'));
      es.onopen = () => {
        if (this._es !== es) return;
        this._failures = 0;
        clearTimeout(this._stallTimer);
        this._stallTimer = null;
        // Resumed (Last-Event-ID): live again, after the burst of what was
        // missed.  Fresh: live once the snapshot is in.
        if (!expectSnapshot) {
          this._startCatchUp();
          this._ok();
          this._setState(STATES.LIVE, {});
        }
      };
      es.onerror = () => {
        if (this._es !== es) return;
        if (es.readyState === 2) {
          this._es = null;
          return resolve('closed');
        }
        // EventSource reconnects by itself with Last-Event-ID.
        if (!this._stallTimer) this._armStall();
        this._failures++;
        this.stats.failures++;
        const stalled = this._failures >= this._stallFailures;
        this._setState(stalled ? STATES.STALLED : STATES.RECONNECTING, { failures: this._failures, error: 'event stream dropped' });
      };
    });
  }
}

/**
 * Subscribe to a feed.
 *
 * url: the feed's URL ("/feeds/winning_bids").  Options:
 *   onBatch(batch, change, sub)  each batch as the server sent it; the first
 *       snapshot as one batch holding every row (kind "snapshot"); after a
 *       resync, one synthetic batch with the difference (kind "resync").  And
 *       the change:
 *       {kind: "snapshot"|"delta"|"resync", insert: [objects], remove: [objects],
 *        cursor, columns, live}.  `insert`/`remove` form a Vega changeset.
 *       live: true for a delta that arrived as it happened; false for the
 *       snapshot, a resync, and catch-up: the batches a reconnection brings
 *       at once (the first long-poll reply after a failure; an SSE stream's
 *       batches after its snapshot event, or a resumed stream's first
 *       burst).  A change list shows live deltas only.
 *   onState(state, detail, sub)  connecting | live | reconnecting | resyncing |
 *       stalled | failed | closed; detail: {failures, delay, status, error, reason}
 *   filter       row filter (see normalizeFilter), evaluated by the server
 *   coalesce     true: the batches of one long-poll reply are merged into one
 *                (default false: one onBatch per batch)
 *   transport    "longpoll" (default) or "sse"
 *   timeout      long-poll timeout in seconds, sent as timeout= (default: not
 *                sent, the server's own, 25 s unless its operator changed it)
 *   fetch, EventSource  injected implementations (tests, node)
 *   backoff      {base: 500, cap: 30000} ms for full-jitter backoff; random: () => [0,1)
 *   stallAfter   ms without a successful request before "stalled" (2x the timeout)
 *   stallFailures consecutive failures before "stalled" (5)
 *   requestTimeout ms before a long-poll is given up (timeout + 15 s, or 90 s)
 *   snapshotTimeout ms before a snapshot request is given up (90 s)
 *   columns, feedsUrl  for SSE: the columns, or where to read them (the feeds list)
 *   onError(e)   called with exceptions thrown by the callbacks (console.error)
 * Returns the subscription: rows(), objects(), toObject(row), size, cursor,
 * state, detail, columns, filter, stats, setFilter(f), resync(), unsubscribe().
 */
export function subscribe(url, options = {}) {
  const sub = new Subscription(url, options);
  sub._startedAt = Date.now();
  sub._start();
  return sub;
}

// ---------------------------------------------------------------------------
// Several feeds at one moment

/** The URL of a request for several feeds: base "/feeds", names ["a","b"]
 * -> "/feeds/a,b", each feed's filter terms prefixed with its name
 * ("a.amount=gte.50"). */
export function multiUrl(base, names, filters = {}, { cursor, timeout, stream } = {}) {
  const terms = [];
  for (const n of names) for (const [c, t] of normalizeFilter(filters[n])) terms.push([n + '.' + c, t]);
  return buildUrl(base.replace(/\/+$/, '') + '/' + names.map(encodeURIComponent).join(','), {
    filter: terms,
    cursor,
    timeout,
    stream,
  });
}

class MultiSubscription {
  constructor(base, feeds, o) {
    const list = Array.isArray(feeds) ? feeds.map((n) => [n, {}]) : Object.entries(feeds);
    if (list.length < 2) throw new TypeError('tailgate: subscribeMany needs two feeds or more');
    this.names = list.map(([n]) => n);
    this._filters = Object.fromEntries(list.map(([n, f]) => [n, (f && f.filter) || null]));
    for (const n of this.names) normalizeFilter(this._filters[n]); // throws on a bad one
    this.base = base;
    this.transport = o.transport === 'sse' ? 'sse' : 'longpoll';
    this.timeout = o.timeout ?? null;
    this.stats = { requests: 0, updates: 0, resyncs: 0, failures: 0 };
    this._onUpdate = o.onUpdate || null;
    this._onState = o.onState || null;
    this._onError = o.onError || ((e) => console.error(e));
    this._fetch = o.fetch || globalThis.fetch.bind(globalThis);
    this._ES = o.EventSource || globalThis.EventSource || FetchEventSource;
    this._backoff = { base: o.backoff?.base ?? 500, cap: o.backoff?.cap ?? 30000 };
    this._random = o.random || Math.random;
    this._deadline = o.requestTimeout ?? (this.timeout != null ? (this.timeout + 15) * 1000 : 90000);
    this._snapshotDeadline = o.snapshotTimeout ?? 90000;
    this._sets = Object.fromEntries(this.names.map((n) => [n, new RowSet([])]));
    this._hasState = false;
    this._cursor = null;
    this._state = null;
    this._closed = false;
    this._failures = 0;
    this._ac = null;
    this._es = null;
    this._wake = null;
  }
  get cursor() {
    return this._cursor;
  }
  get state() {
    return this._state;
  }
  /** The detail of the last state report: {failures, delay, status, error, reason}. */
  get detail() {
    return this._detail || {};
  }
  /** Feed name's rows (arrays), objects and columns, as of the cursor. */
  rows(name) {
    return this._sets[name].rows();
  }
  objects(name) {
    return this._sets[name].objects();
  }
  columns(name) {
    return this._sets[name].columns;
  }
  unsubscribe() {
    if (this._closed) return;
    this._closed = true;
    if (this._unhint) this._unhint();
    if (this._ac) this._ac.abort();
    if (this._wake) this._wake();
    if (this._es) this._es.close();
    this._setState(STATES.CLOSED, {});
  }
  /** Take new snapshots now (keeping the rows until they are in). */
  resync() {
    this._cursor = null;
    if (this._ac) this._ac.abort();
    if (this._es) this._restartSSE();
  }

  _setState(state, detail) {
    if (state === this._state && !Object.keys(detail).length) return;
    this._state = state;
    this._detail = detail;
    if (this._onState)
      try {
        this._onState(state, detail, this);
      } catch (e) {
        this._onError(e);
      }
  }
  // One reply (or event) of all feeds at one cursor: a snapshot replaces
  // each feed's rows (reported as the difference: rows are kept until the
  // new ones are in), later ones apply each feed's batches.  onUpdate gets
  // every feed's change together, at one moment.
  _apply(body, snapshot) {
    if (!body || typeof body.feeds !== 'object' || body.cursor == null) throw new Error('tailgate: reply without cursor or feeds');
    const changes = {};
    for (const n of this.names) {
      const f = body.feeds[n];
      if (!f || !Array.isArray(f.batches)) throw new Error(`tailgate: reply without feed ${n}`);
      const set = this._sets[n];
      if (snapshot) {
        const next = new RowCounts();
        for (const b of f.batches) next.apply(b);
        const d = set.replace(next, f.columns || undefined);
        changes[n] = { insert: d.insert, remove: d.remove, columns: set.columns, batches: [] };
      } else {
        const insert = [], remove = [];
        for (const b of f.batches) {
          const ch = set.apply(b);
          insert.push(...ch.insert);
          remove.push(...ch.remove);
          if (ch.missing > 0) this._cursor = null; // we disagree with the server: start over
        }
        // A row one batch inserts and a later one removes is in neither:
        // the change takes the rows from before the reply to after it.
        const gone = new Set(remove), added = new Set(insert);
        changes[n] = {
          insert: insert.filter((o) => !gone.has(o)),
          remove: remove.filter((o) => !added.has(o)),
          columns: set.columns,
          batches: f.batches,
        };
      }
    }
    const kind = snapshot ? (this._hasState ? 'resync' : 'snapshot') : 'delta';
    if (snapshot && this._hasState) this.stats.resyncs++;
    this._hasState = true;
    if (this._cursor !== null || snapshot) this._cursor = String(body.cursor);
    this._failures = 0;
    this._setState(STATES.LIVE, {});
    this.stats.updates++;
    if (this._onUpdate)
      try {
        this._onUpdate(changes, { kind, cursor: this._cursor }, this);
      } catch (e) {
        this._onError(e);
      }
  }
  async _fail(e) {
    if (e && e.status === 400) {
      this._closed = true;
      this._setState(STATES.FAILED, { status: 400, error: e.message });
      return;
    }
    this._failures++;
    this.stats.failures++;
    let delay = backoffDelay(this._failures, this._backoff, this._random);
    if (e && e.retryAfter > delay) delay = Math.min(e.retryAfter, this._backoff.cap);
    this._setState(this._failures >= 5 ? STATES.STALLED : STATES.RECONNECTING, {
      failures: this._failures,
      delay,
      status: e && e.status,
      error: e && e.message ? e.message : String(e),
    });
    await new Promise((resolve) => {
      const t = setTimeout(resolve, delay);
      this._wake = () => (clearTimeout(t), resolve());
    });
    this._wake = null;
  }
  async _runLongPoll() {
    while (!this._closed) {
      const snapshot = this._cursor == null;
      const url = multiUrl(this.base, this.names, this._filters, {
        cursor: this._cursor ?? undefined,
        timeout: snapshot ? undefined : (this.timeout ?? undefined),
      });
      // A request not answered by its deadline (a connection that died
      // without a word: a sleeping laptop, a NAT that forgot it) is given up
      // as a failure.
      const deadline = snapshot ? this._snapshotDeadline : this._deadline;
      let timedOut = false;
      const ac = (this._ac = new AbortController());
      const timer = setTimeout(() => {
        timedOut = true;
        ac.abort();
      }, deadline);
      try {
        this.stats.requests++;
        const res = await this._fetch(url, {
          signal: ac.signal,
          headers: { Accept: 'application/json' },
          cache: snapshot ? 'no-store' : undefined,
        });
        const text = await res.text();
        if (res.status === 410) {
          this._cursor = null; // a fresh snapshot, the rows kept until it is in
          this._setState(STATES.RESYNCING, { reason: 'gone', status: 410 });
          continue;
        }
        if (res.status !== 200) {
          const err = httpError(res.status, text);
          const ra = res.headers && res.headers.get && res.headers.get('retry-after');
          if (ra && /^\d+$/.test(ra)) err.retryAfter = Number(ra) * 1000;
          throw err;
        }
        this._apply(parseReply(text), snapshot);
      } catch (e) {
        if (this._closed) break;
        if (timedOut) await this._fail(new Error(`tailgate: no reply within ${deadline} ms`));
        else if (ac.signal.aborted) continue; // resync()
        else await this._fail(e);
      } finally {
        clearTimeout(timer);
        this._ac = null;
      }
    }
  }
  _restartSSE() {
    if (this._es) this._es.close();
    this._es = null;
    if (!this._closed) this._startSSE();
  }
  _startSSE() {
    // A stream resumes by itself (Last-Event-ID); the server answers a
    // cursor it cannot resume with a new snapshot event.
    const es = new this._ES(multiUrl(this.base, this.names, this._filters, { stream: 'sse' }), { fetch: this._fetch });
    this._es = es;
    const on = (snapshot) => (ev) => {
      if (es !== this._es) return;
      try {
        this._apply(parseReply(ev.data), snapshot);
        if (this._cursor == null) this._restartSSE(); // diverged
      } catch (e) {
        this._onError(e);
      }
    };
    es.addEventListener('snapshot', on(true));
    es.addEventListener('message', on(false));
    es.addEventListener('error', () => {
      if (es !== this._es || this._closed) return;
      this._failures++;
      this._setState(STATES.RECONNECTING, { failures: this._failures });
    });
  }
}

/**
 * Follow several feeds of one server at one moment: every update holds all
 * of them as of one position (GET /feeds/a,b in docs/API.md), so feeds
 * derived from the same tables always agree on the page.
 *   base     the feeds' prefix, "/feeds"
 *   feeds    ["a", "b"] or {a: {filter}, b: {filter: {amount: 'gte.5'}}}
 *   options  onUpdate(changes, {kind, cursor}, sub): changes[name] =
 *            {insert, remove, columns, batches} (objects, as subscribe's
 *            onBatch; batches: a delta's raw batches, none for a snapshot),
 *            kind "snapshot" | "resync" | "delta"; onState(state, detail);
 *            transport "longpoll" (default) or "sse"; timeout; fetch,
 *            EventSource, backoff, random, requestTimeout, snapshotTimeout,
 *            onError as for subscribe.
 * A 410 takes new snapshots, keeping the rows until they replace them
 * (reported as their difference, kind "resync").
 * Returns the subscription: rows(name), objects(name), columns(name),
 * cursor, state, detail, stats, resync(), unsubscribe().
 */
export function subscribeMany(base, feeds, options = {}) {
  const sub = new MultiSubscription(base, feeds, options);
  Promise.resolve().then(() => {
    if (sub._closed) return;
    sub._setState(STATES.CONNECTING, {});
    sub._unhint = onRetryHint(() => {
      if (sub._wake && !sub._closed) sub._wake();
    });
    if (sub.transport === 'sse') sub._startSSE();
    else sub._runLongPoll().catch((e) => sub._onError(e));
  });
  return sub;
}
