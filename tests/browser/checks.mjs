// checks.mjs - what the browser tests compare: a table page's rows with
// its feed's (GET /feeds/NAME) at the page's cursor, with the database's
// with the load paused, and the page's badge states and console errors.
// checksFor(stack) binds them to a stack (tests/browser/stack.mjs); used by
// pages.test.mjs and traffic.test.mjs.
import assert from 'node:assert/strict';
import { multiState } from './multi.mjs';
import { RowSet, rowKey, buildUrl, parseReply } from '../../htdocs/tailgate.js';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Console errors a page may log by design in a fault test: the browser's
// own line for a failed request (410, 503, a dropped connection).
export const NETWORK_NOISE = /Failed to load resource|net::ERR_/;
export function assertNoErrors(page, { faults = false } = {}) {
  const errs = page.errors.filter((e) => !(faults && NETWORK_NOISE.test(e)));
  assert.deepEqual(errs, [], `errors on ${page.url()}`);
}

export function waitFor(page, fn, arg, timeout = 60_000) {
  return page.waitForFunction(fn, arg, { timeout, polling: 100 });
}

// Record the badge's states (window.__badge), from the page's first frame.
export async function recordBadge(page) {
  await page.addInitScript(() => {
    window.__badge = [];
    new MutationObserver(() => {
      const b = document.getElementById('badge');
      const s = b && b.dataset.state;
      if (s && window.__badge[window.__badge.length - 1] !== s) window.__badge.push(s);
    }).observe(document, { subtree: true, attributes: true, attributeFilter: ['data-state'] });
  });
}

export function checksFor(stack) {
  // The API as node reads it: the stack's own client when it has one (the
  // TLS stack's HTTP/2 client trusting the run's certificate), else fetch.
  const get = stack.fetch || fetch;
  const apiUrl = (p = '') => new URL(stack.apiPath.replace(/^\/+/, '').replace(/\/+$/, '') + (p ? '/' + p : ''), stack.url).href;
  const pageUrl = (p) => new URL(p, stack.url).href;

  /** The feed's rows now, through the API: {cursor, columns, rows}. */
  async function feedState(feed, filter) {
    let res, text;
    // A stack being restarted may answer 502/503 for a moment.
    for (let i = 0; ; i++) {
      res = await get(buildUrl(apiUrl(feed), { filter }), { headers: { accept: 'application/json' }, cache: 'no-store' }).catch((e) => e);
      if (!(res instanceof Error) && res.status < 500) break;
      if (i >= 40) throw new Error(`GET ${feed}: ${res instanceof Error ? res.message : res.status} for 20 s`);
      await sleep(500);
    }
    text = await res.text();
    assert.equal(res.status, 200, `GET ${feed}: ${text.slice(0, 200)}`);
    const body = parseReply(text);
    const set = new RowSet(body.columns);
    for (const b of body.batches) set.apply(b);
    return { cursor: body.cursor, columns: body.columns, rows: set.rows() };
  }

  /**
   * What a table page holds: its subscription's cursor, state and every row
   * (canonical keys), and the rows the table shows, in order.
   */
  function pageTable(page, feed) {
    return page.evaluate((feed) => {
      const s = window.tailgatePage.subs[feed];
      const t = window.tailgatePage.subs.table;
      return {
        cursor: s.cursor,
        state: s.state,
        batches: s.stats.batches,
        requests: s.stats.requests,
        resyncs: s.stats.resyncs,
        failures: s.stats.failures,
        filter: s.filter,
        rows: s.rows().map(window.tailgatePage.rowKey),
        shown: [...t.table.querySelectorAll('tbody tr')].map((tr) => tr.dataset.key),
        size: t.size,
        limit: t.limit === Infinity ? null : t.limit,
        sort: t.sort,
        key: t.key,
      };
    }, feed);
  }

  const NUMERIC = /^(int2|int4|int8|oid|float4|float8|numeric)$/;
  const parseTs = (s) => Date.parse(String(s).replace(' ', 'T').replace(/([+-]\d\d)$/, '$1:00').replace(/(\.\d{3})\d+/, '$1'));

  /** The rows in the table's order (htdocs/livetable.js's rules: nulls last, then the key column descending). */
  function sortRows(rows, columns, sort, keyCol) {
    if (!sort) return rows.slice();
    const i = columns.findIndex((c) => c.name === sort.col);
    const k = columns.findIndex((c) => c.name === keyCol);
    const type = columns[i].type || '';
    const sign = sort.dir === 'asc' ? 1 : -1;
    const val = (r) => (r[i] == null ? null : NUMERIC.test(type) ? Number(r[i]) : /timestamp|date/.test(type) ? parseTs(r[i]) : String(r[i]));
    return rows.slice().sort((a, b) => {
      const x = val(a), y = val(b);
      if (x !== y) {
        if (x === null) return 1;
        if (y === null) return -1;
        if (typeof x === 'string') {
          const c = x.localeCompare(y);
          if (c) return sign * c;
        } else if (x < y) return -sign;
        else if (x > y) return sign;
      }
      if (k >= 0 && a[k] !== b[k]) return a[k] < b[k] ? 1 : -1;
      return 0;
    });
  }

  /**
   * Wait until the page and the API are at the same cursor, then require the
   * page to hold exactly the API's rows (a multiset of canonical keys) and the
   * table to show exactly the first rows of them in its order.
   *
   * The page's cursor is read first, the API's after it, while the load keeps
   * publishing a batch every ~140 ms.  On a loaded machine one round of the
   * page's long-poll loop (request, reply, table update) and one round here
   * both take longer than that, so the page is always a batch or two behind
   * the API when sampled, though it follows: the two cursors never met for a
   * minute ("[real] restarting the daemon is survived" failed so, and fails
   * just the same with no restart at all under `taskset -c 0`; the page's
   * every request had returned batches, none failed).  So after a few seconds
   * without a match the load is paused (when the stack can): the feed goes
   * quiet and a page that follows reaches the API's rows; one that is stuck
   * still does not.  loadPaused: the caller paused the load (and resumes
   * it): the rows are the test from the start.
   */
  async function expectTableEqualsFeed(page, feed, { filter, timeout = 45_000, loadPaused = false } = {}) {
    const end = Date.now() + timeout;
    const pauseAt = Date.now() + 5_000;
    let last, paused = loadPaused, pausedHere = false;
    try {
      while (Date.now() < end) {
        if (!paused && stack.pauseLoad && Date.now() > pauseAt) {
          await stack.pauseLoad();
          paused = pausedHere = true;
        }
        const p = await pageTable(page, feed);
        const e = await feedState(feed, filter);
        const want = e.rows.map(rowKey);
        // Paused, the rows are the test: a cursor is a position, and the API's
        // may move on (the upstream confirms progress) while no batch comes.
        const same = p.cursor === e.cursor || (paused && JSON.stringify(p.rows.slice().sort()) === JSON.stringify(want.slice().sort()));
        if (same && p.state === 'live') {
          assert.equal(p.rows.length, want.length, `${feed}: the page holds ${p.rows.length} rows, the feed has ${want.length}`);
          assert.deepEqual(p.rows.slice().sort(), want.slice().sort(), `${feed}: rows differ from the feed at cursor ${e.cursor}`);
          const shown = sortRows(e.rows, e.columns, p.sort, p.key).slice(0, p.limit ?? undefined).map(rowKey);
          assert.equal(p.size, want.length, `${feed}: the table counts ${p.size} rows`);
          assert.deepEqual(p.shown, shown, `${feed}: the table does not show the feed's first ${shown.length} rows in its order`);
          return { page: p, expected: e };
        }
        last = { page: p.cursor, api: e.cursor, state: p.state, requests: p.requests, failures: p.failures, loadPaused: paused };
        await sleep(100 + Math.random() * 200);
      }
    } finally {
      if (pausedHere) await stack.resumeLoad();
    }
    throw new Error(`${feed}: page and API never at the same cursor: ${JSON.stringify(last)}`);
  }

  /** With the load paused: the table equals what the database holds. */
  async function expectTableEqualsDatabase(page, feed) {
    if (!stack.dbRows || !stack.pauseLoad) return false;
    await stack.pauseLoad();
    try {
      const db = await stack.dbRows(feed);
      // The page must get there: wait for a quiet moment where it equals the database.
      const end = Date.now() + 30_000;
      let p;
      for (;;) {
        p = await pageTable(page, feed);
        const a = p.rows.slice().sort(), b = db.map(rowKey).sort();
        if (JSON.stringify(a) === JSON.stringify(b)) break;
        if (Date.now() > end) assert.deepEqual(a, b, `${feed}: table differs from the database`);
        await sleep(200);
      }
      return true;
    } finally {
      await stack.resumeLoad();
    }
  }

  /** With the load paused: wait until the feed's cursor (feeds "A,B": their common one) stays put for 1.5 s; returns it. */
  async function quiet(feed) {
    let last = null, since = Date.now();
    for (const end = Date.now() + 30_000; Date.now() < end; await sleep(250)) {
      const c = feed.includes(',') ? (await multiState(apiUrl(), feed.split(','))).cursor : (await feedState(feed)).cursor;
      if (c !== last) [last, since] = [c, Date.now()];
      else if (Date.now() - since >= 1500) return c;
    }
    throw new Error(`${feed} never stopped moving with the load paused`);
  }

  return { apiUrl, pageUrl, feedState, pageTable, sortRows, expectTableEqualsFeed, expectTableEqualsDatabase, quiet };
}
