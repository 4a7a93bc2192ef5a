// feedmodel.mjs - an in-memory model of one tailgate feed, as the HTTP API
// describes it (snapshot, cursors, a ring that forgets old batches, 410,
// PostgREST-style row filters).  TEST AND DEVELOPMENT AID ONLY: the unit
// tests' fake fetch and the development server (tests/browser/fake_server.mjs)
// use it.  The product is the C responder; nothing here is shipped.

export const OPS = ['eq', 'neq', 'gt', 'gte', 'lt', 'lte', 'in'];
const NUMERIC = /^(int2|int4|int8|oid|float4|float8|numeric|integer|bigint|smallint|real|double precision)$/;

const key = (row) => JSON.stringify(row);

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
  get body() {
    return { error: this.code, message: this.message };
  }
}

// Split a PostgREST "in" list: (a,"b,c",d)
function splitList(s) {
  if (!s.startsWith('(') || !s.endsWith(')')) throw new ApiError(400, 'bad_filter', `in needs a (list): ${s}`);
  const out = [];
  let cur = '', q = false, had = false;
  for (let i = 1; i < s.length - 1; i++) {
    const c = s[i];
    if (q) {
      if (c === '\\') cur += s[++i];
      else if (c === '"') q = false;
      else cur += c;
    } else if (c === '"') (q = true), (had = true);
    else if (c === ',') out.push(cur), (cur = ''), (had = false);
    else cur += c;
  }
  if (cur !== '' || had || out.length) out.push(cur);
  return out;
}

function unquote(v) {
  if (v.length >= 2 && v.startsWith('"') && v.endsWith('"')) return v.slice(1, -1).replace(/\\(.)/g, '$1');
  return v;
}

/** Parse filter params into predicates over rows; throws ApiError(400). */
export function parseFilters(params, columns) {
  const preds = [];
  for (const [col, term] of params) {
    const idx = columns.findIndex((c) => c.name === col);
    if (idx < 0) throw new ApiError(400, 'bad_filter', `unknown column "${col}"`);
    const dot = term.indexOf('.');
    const op = dot < 0 ? term : term.slice(0, dot);
    if (!OPS.includes(op)) throw new ApiError(400, 'bad_filter', `unknown operator "${op}"`);
    const raw = term.slice(dot + 1);
    const numeric = NUMERIC.test(columns[idx].type || '');
    const conv = (v) => {
      if (v === 'null') return null;
      if (!numeric) return v;
      const n = Number(v);
      if (v === '' || Number.isNaN(n)) throw new ApiError(400, 'bad_filter', `not a number: ${v}`);
      return n;
    };
    if (op === 'in') {
      const set = splitList(raw).map(conv);
      preds.push((row) => row[idx] !== null && set.includes(numeric ? Number(row[idx]) : String(row[idx])));
      continue;
    }
    const want = conv(unquote(raw));
    preds.push((row) => {
      const v = row[idx];
      if (v === null || want === null) return op === 'eq' ? v === want : op === 'neq' ? v !== want : false;
      const a = numeric ? Number(v) : String(v);
      switch (op) {
        case 'eq': return a === want;
        case 'neq': return a !== want;
        case 'gt': return a > want;
        case 'gte': return a >= want;
        case 'lt': return a < want;
        case 'lte': return a <= want;
      }
      return false;
    });
  }
  return (row) => preds.every((p) => p(row));
}

export class FeedModel {
  /**
   * columns: [{name, type}]; rows: initial rows; opts.capacity: batches the
   * ring holds; opts.cursor: the first cursor (a BigInt-able integer).
   */
  constructor(name, columns, rows = [], { capacity = 64, cursor = 1000, epoch = 0 } = {}) {
    this.name = name;
    this.columns = columns;
    this.capacity = capacity;
    this.state = new Map(); // key -> {row, n}
    for (const r of rows) this._add(r, 1);
    this.epoch = epoch; // a new history: cursors of the old one are 410
    this.floor = String(cursor); // cursor of the state before the oldest held batch
    this.head = this.floor;
    this.ring = []; // [{cursor, batch}]
    this.floorState = this._copyState();
    this.waiters = new Set();
    this.live = true;
  }
  _copyState() {
    return new Map([...this.state].map(([k, v]) => [k, { row: v.row, n: v.n }]));
  }
  _add(row, n) {
    const k = key(row);
    const e = this.state.get(k);
    const c = (e ? e.n : 0) + n;
    if (c < 0) throw new Error(`feedmodel: deleting a row not held: ${k}`);
    if (c === 0) this.state.delete(k);
    else this.state.set(k, { row, n: c });
  }
  rows() {
    const out = [];
    for (const { row, n } of this.state.values()) for (let i = 0; i < n; i++) out.push(row);
    return out;
  }
  get rowCount() {
    let n = 0;
    for (const e of this.state.values()) n += e.n;
    return n;
  }
  nextCursor() {
    return String(BigInt(this.head) + 1n + BigInt(Math.floor(Math.random() * 3)));
  }
  /** Publish one batch {inserted, deleted}; returns its cursor. */
  publish({ inserted = [], deleted = [] }, cursor = this.nextCursor()) {
    for (const r of deleted) this._add(r, -1);
    for (const r of inserted) this._add(r, 1);
    const batch = { timestamp: cursor, inserted, deleted };
    this.ring.push({ cursor, batch });
    this.head = cursor;
    while (this.ring.length > this.capacity) this.dropOldest();
    for (const w of [...this.waiters]) w();
    return cursor;
  }
  dropOldest() {
    const { cursor, batch } = this.ring.shift();
    for (const r of batch.deleted) this._applyTo(this.floorState, r, -1);
    for (const r of batch.inserted) this._applyTo(this.floorState, r, 1);
    this.floor = cursor;
  }
  _applyTo(m, row, n) {
    const k = key(row);
    const e = m.get(k);
    const c = (e ? e.n : 0) + n;
    if (c === 0) m.delete(k);
    else m.set(k, { row, n: c });
  }
  /** Forget every held batch: every cursor but the head's becomes 410. */
  expire() {
    while (this.ring.length) this.dropOldest();
  }
  /** A new upstream history: every cursor handed out so far becomes 410. */
  newHistory() {
    this.epoch++;
    this.ring = [];
    this.head = this.floor = String(BigInt(this.head) + 1000000n);
    this.floorState = this._copyState();
    for (const w of [...this.waiters]) w();
  }
  filterFn(params) {
    return parseFilters(params, this.columns);
  }
  static filterBatch(batch, pred) {
    return { timestamp: batch.timestamp, inserted: batch.inserted.filter(pred), deleted: batch.deleted.filter(pred) };
  }
  snapshot(params = []) {
    const pred = this.filterFn(params);
    return {
      cursor: this.head,
      columns: this.columns,
      batches: [{ timestamp: this.head, inserted: this.rows().filter(pred), deleted: [] }],
    };
  }
  /** Batches after `cursor` (filtered): null when none yet; throws ApiError 410/400. */
  since(cursor, params = []) {
    if (!/^\d{1,20}$/.test(String(cursor))) throw new ApiError(400, 'bad_cursor', `bad cursor "${cursor}"`);
    const pred = this.filterFn(params);
    if (cursor === this.head) return null;
    let i;
    if (cursor === this.floor) i = 0;
    else {
      i = this.ring.findIndex((e) => e.cursor === cursor);
      if (i < 0) throw new ApiError(410, 'cursor_gone', `cursor ${cursor} is not held: take a new snapshot`);
      i++;
    }
    const batches = this.ring.slice(i).map((e) => FeedModel.filterBatch(e.batch, pred));
    return { cursor: this.head, batches };
  }
  /** Wait until the head moves, `ms` passes, or `signal` aborts. */
  wait(ms, signal) {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(t);
        this.waiters.delete(done);
        signal?.removeEventListener?.('abort', done);
        resolve();
      };
      const t = setTimeout(done, ms);
      this.waiters.add(done);
      signal?.addEventListener?.('abort', done);
    });
  }
  info() {
    return { name: this.name, columns: this.columns, cursor: this.head, rows: this.rowCount, live: this.live };
  }
}

/**
 * Answer one API request against a set of models: the same routing and
 * errors as the real responder's API.  `path` is the part after the API
 * prefix ("" for the list, "winning_bids"), `query` a URLSearchParams.
 * Returns {status, body} or, for a long-poll with nothing yet, waits.
 */
export async function answer(models, path, query, { signal, timeScale = 1000, lastEventId, sseGone = 'snapshot' } = {}) {
  try {
    if (path === '' || path === '/') return { status: 200, body: { feeds: [...models.values()].map((m) => m.info()) } };
    const m = models.get(path);
    if (!m) throw new ApiError(404, 'unknown_feed', `no feed "${path}"`);
    if (!m.live) throw new ApiError(503, 'feed_not_live', `feed "${path}" is not live`);
    let cursor = null, timeout = 25, stream = null;
    const filters = [];
    for (const [k, v] of query) {
      if (k === 'cursor') cursor = v;
      else if (k === 'timeout') {
        timeout = Number(v);
        if (!/^\d+(\.\d+)?$/.test(v) || timeout > 60) throw new ApiError(400, 'bad_timeout', `bad timeout "${v}"`);
      } else if (k === 'stream') stream = v;
      else filters.push([k, v]);
    }
    m.filterFn(filters); // 400 on a bad filter, even for a snapshot
    if (stream) {
      let from = lastEventId || cursor;
      if (from != null) {
        // A cursor not held: tailgate-fcgi starts the stream with a new
        // snapshot event (EventSource cannot act on a 410); sseGone: '410'
        // answers 410 instead.
        try {
          m.since(from, filters);
        } catch (e) {
          if (!(e instanceof ApiError) || e.status !== 410 || sseGone === '410') throw e;
          from = null;
        }
      }
      return { status: 200, stream: true, model: m, filters, cursor: from };
    }
    if (cursor == null) return { status: 200, body: m.snapshot(filters) };
    const deadline = Date.now() + timeout * timeScale;
    for (;;) {
      const r = m.since(cursor, filters);
      if (r && r.batches.some((b) => b.inserted.length || b.deleted.length)) return { status: 200, body: r };
      // Batches filtered to nothing: the client moves on, but need not wake.
      if (r) cursor = r.cursor;
      const left = deadline - Date.now();
      if (left <= 0 || signal?.aborted) return { status: 200, body: { cursor, batches: [] } };
      await m.wait(left, signal);
      if (!m.live) throw new ApiError(503, 'feed_not_live', `feed "${path}" is not live`);
    }
  } catch (e) {
    if (e instanceof ApiError) return { status: e.status, body: e.body };
    throw e;
  }
}

/**
 * The text of an SSE stream for a feed: the snapshot event ("event:
 * snapshot") first when no cursor is given (else the batches after it),
 * then one event per batch as
 * it is published (id: its cursor), comments as heartbeats.  Ends when the
 * history it follows is gone, the feed stops being live, or signal aborts.
 */
export async function* sseEvents(m, filters, cursor, { signal, heartbeat = 15000 } = {}) {
  const ev = (id, data, name) => `${name ? `event: ${name}\n` : ''}id: ${id}\ndata: ${JSON.stringify(data)}\n\n`;
  if (cursor == null) {
    const s = m.snapshot(filters);
    cursor = s.cursor;
    yield ev(cursor, s.batches[0], 'snapshot'); // as tailgate-fcgi names it
  }
  while (!signal?.aborted && m.live) {
    let r;
    try {
      r = m.since(cursor, filters);
    } catch {
      return; // history gone: the client's reconnect (Last-Event-ID) gets 410
    }
    if (!r) {
      const head = m.head;
      await m.wait(heartbeat, signal);
      if (m.head === head && !signal?.aborted) yield ': keepalive\n\n';
      continue;
    }
    for (const b of r.batches) if (b.inserted.length || b.deleted.length) yield ev(b.timestamp, b);
    cursor = r.cursor;
  }
}
