// follow.js - how a page showing several feeds follows them.  By default
// one multi-feed subscription (subscribeMany: GET /feeds/A,B): one
// connection for all of them (browsers allow only six per host over
// HTTP/1.1), every update holding all feeds as of one position, so panels
// made from different feeds never disagree.  ?together=0, or a server that
// answers the multi-feed URL with 404 (a responder without it), gives one
// subscription per feed instead.  Either way the page sees subscribe()'s
// per-feed onBatch(batch, change, view): change.kind snapshot | resync |
// delta, change.live only for deltas that arrived as they happened (not the
// catch-up after a failure), and view.objects()/rows()/cursor/state/stats.
import { subscribe, subscribeMany, STATES } from './tailgate.js';
import { apiBase, feedUrl, params, transport, expose, markReady, showProblem, outageText } from './ui.js';

// An SSE stream resumed after a failure delivers what it missed back to
// back: updates closer than this to the previous catch-up one are catch-up.
const CATCHUP_GAP_MS = 150;

/** One feed of a multi-feed subscription, shaped like subscribe()'s result. */
class FeedView {
  constructor(multi, name) {
    this.multi = multi;
    this.name = name;
    this.batches = 0;
  }
  get cursor() {
    return this.multi.cursor;
  }
  get state() {
    return this.multi.state;
  }
  get columns() {
    return this.multi.columns(this.name);
  }
  get size() {
    return this.multi.rows(this.name).length;
  }
  get stats() {
    const s = this.multi.stats;
    return { batches: this.batches, requests: s.requests, failures: s.failures, resyncs: s.resyncs, updates: s.updates };
  }
  rows() {
    return this.multi.rows(this.name);
  }
  objects() {
    return this.multi.objects(this.name);
  }
  toObject(row) {
    return Object.fromEntries(this.columns.map((c, i) => [c.name, row[i]]));
  }
}

// A delta's batches as one (subscribe's coalesced form).
function merged(batches) {
  const out = { inserted: [], deleted: [] };
  for (const b of batches) {
    out.inserted.push(...(b.inserted || []));
    out.deleted.push(...(b.deleted || []));
    if (b.timestamp != null) out.timestamp = b.timestamp;
  }
  return out;
}

/**
 * Follow feeds ({name: onBatch(batch, change, view)}, in the order the
 * page shows them); badge: the page's StateBadge.  Marks the page ready once
 * every feed has its snapshot.  Exposes each feed's view under its name
 * and, together, the multi-feed subscription as "together".
 */
export function followFeeds(feeds, badge) {
  const names = Object.keys(feeds);
  const ready = new Set();
  const isReady = (name) => {
    ready.add(name);
    if (ready.size === names.length) markReady();
  };
  if (params.get('together') === '0') return followEach(feeds, badge, isReady);

  const label = names.join(' + ');
  const onBadge = badge.track(label);
  const views = {};
  let catchUp = null; // {pending, last} after a failure
  let fellBack = false;
  const multi = subscribeMany(apiBase(), names, {
    transport: transport(),
    onUpdate(changes, { kind, cursor }) {
      let live = kind === 'delta';
      if (live && catchUp) {
        const now = Date.now();
        if (catchUp.pending || (multi.transport === 'sse' && now - catchUp.last <= CATCHUP_GAP_MS)) {
          live = false;
          catchUp = { pending: false, last: now };
        } else catchUp = null;
      }
      for (const n of names) {
        const c = changes[n];
        if (kind === 'delta' && !c.batches.length) continue;
        views[n].batches += Math.max(1, c.batches.length);
        const change = { kind, insert: c.insert, remove: c.remove, columns: c.columns, cursor, live };
        feeds[n](merged(c.batches), change, views[n]);
        if (kind !== 'delta') isReady(n);
      }
    },
    onState(s, d) {
      if (fellBack) return;
      if (d && d.status === 404 && multi.transport === 'longpoll') {
        // No multi-feed endpoint here (or no such feed): one subscription
        // per feed, which names what is missing.
        fellBack = true;
        multi.unsubscribe();
        badge.states.delete(label);
        expose('together', undefined);
        followEach(feeds, badge, isReady);
        return;
      }
      onBadge(s, d);
      if (s === STATES.RECONNECTING || s === STATES.STALLED) catchUp = { pending: true, last: 0 };
      if (s === STATES.FAILED) showProblem(`${names.join(', ')}: ${d.error}`);
      else if (s === STATES.LIVE) showProblem('');
      else if (outageText(s, d)) showProblem(outageText(s, d, names.join(', ')));
    },
  });
  for (const n of names) {
    views[n] = new FeedView(multi, n);
    expose(n, views[n]);
  }
  expose('together', multi);
  return multi;
}

// One subscription per feed (?together=0, or no multi-feed endpoint).
function followEach(feeds, badge, isReady) {
  for (const [feed, onBatch] of Object.entries(feeds)) {
    const onState = badge.track(feed);
    const sub = subscribe(feedUrl(feed), {
      transport: transport(),
      coalesce: true,
      onBatch(batch, change) {
        onBatch(batch, change, sub);
        if (change.kind !== 'delta') isReady(feed);
      },
      onState(s, d) {
        onState(s, d);
        if (s === STATES.FAILED) showProblem(`${feed}: ${d.error}`);
      },
    });
    expose(feed, sub);
  }
  return null;
}
