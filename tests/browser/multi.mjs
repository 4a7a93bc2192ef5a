// multi.mjs - checks for pages that follow several feeds in one multi-feed
// subscription (htdocs/follow.js): what GET /feeds/A,B says now, a page's
// panels compared with it once both are at the same cursor, and the page's
// requests to the API (one long-poll for all its feeds, never one per feed).
import assert from 'node:assert/strict';
import { RowSet, parseReply } from '../../htdocs/tailgate.js';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** GET {api}/A,B now: {cursor, feeds: {A: {columns, rows}, ...}}. */
export async function multiState(api, names) {
  const url = api.replace(/\/+$/, '') + '/' + names.map(encodeURIComponent).join(',');
  let res;
  for (let i = 0; ; i++) {
    res = await fetch(url, { headers: { accept: 'application/json' }, cache: 'no-store' }).catch((e) => e);
    if (!(res instanceof Error) && res.status < 500) break;
    if (i >= 40) throw new Error(`GET ${url}: ${res instanceof Error ? res.message : res.status} for 20 s`);
    await sleep(500);
  }
  const text = await res.text();
  assert.equal(res.status, 200, `GET ${url}: ${text.slice(0, 200)}`);
  const body = parseReply(text);
  const feeds = {};
  for (const n of names) {
    const f = body.feeds && body.feeds[n];
    assert.ok(f, `GET ${url}: no feed ${n} in the reply`);
    const set = new RowSet(f.columns);
    for (const b of f.batches) set.apply(b);
    feeds[n] = { columns: f.columns, rows: set.rows(), objects: set.objects() };
  }
  return { cursor: String(body.cursor), feeds };
}

/**
 * Poll until the page and the API agree on the cursor the page follows,
 * then run check(shown, feeds) on what the page showed at that cursor
 * (read: a function run in the page, returning what its panels show).
 * A page following the feeds together is compared with GET /feeds/A,B;
 * one following them one by one (?together=0, a server without the
 * multi-feed endpoint) with each feed's own reply, via single(name).
 * With pauseLoad/resumeLoad (a busy machine may keep page and API a batch
 * apart): after 5 s the load is paused, and then what the page shows is the
 * test (check passing), as the API's cursor may move on without a batch.
 */
export async function expectPageAtFeeds(page, names, read, check, { api, single, pauseLoad, resumeLoad, timeout = 45_000 } = {}) {
  const end = Date.now() + timeout;
  const pauseAt = Date.now() + 5_000;
  let last, paused = false;
  try {
    return await poll();
  } finally {
    if (paused) await resumeLoad();
  }
  async function poll() {
    while (Date.now() < end) {
      if (!paused && pauseLoad && Date.now() > pauseAt) {
        await pauseLoad();
        paused = true;
      }
      const p = await page.evaluate(
        ([src, names]) => {
          const subs = window.tailgatePage.subs;
          const t = subs.together;
          return {
            together: t ? { cursor: t.cursor, state: t.state } : null,
            each: names.map((n) => ({ cursor: subs[n].cursor, state: subs[n].state })),
            shown: (0, eval)('(' + src + ')')(),
          };
        },
        [read.toString(), names],
      );
      let agree, feeds;
      if (p.together) {
        const e = await multiState(api, names);
        agree = p.together.state === 'live' && p.together.cursor === e.cursor;
        feeds = e.feeds;
        last = { page: p.together.cursor, api: e.cursor, state: p.together.state };
      } else {
        const es = await Promise.all(names.map((n) => single(n)));
        agree = p.each.every((s, i) => s.state === 'live' && s.cursor === es[i].cursor);
        feeds = Object.fromEntries(names.map((n, i) => [n, es[i]]));
        last = { page: p.each.map((s) => s.cursor), api: es.map((e) => e.cursor) };
      }
      if (agree) return check(p.shown, feeds);
      if (paused && (p.together ? p.together.state : p.each[0].state) === 'live') {
        try {
          return check(p.shown, feeds);
        } catch (e) {
          last.check = e.message.split('\n')[0];
        }
      }
      await sleep(150);
    }
    throw new Error(`${names.join(',')}: page and API never at the same cursor: ${JSON.stringify({ ...last, loadPaused: paused })}`);
  }
}

/** Record a page's requests to the API (path prefix apiPath): every URL, and how many are open. */
export function watchApi(page, apiPath) {
  const prefix = apiPath.replace(/\/+$/, '') + '/';
  const w = { paths: [], open: new Set() };
  const isApi = (r) => new URL(r.url()).pathname.startsWith(prefix);
  page.on('request', (r) => {
    if (!isApi(r)) return;
    w.paths.push(new URL(r.url()).pathname);
    w.open.add(r);
  });
  const done = (r) => w.open.delete(r);
  page.on('requestfinished', done);
  page.on('requestfailed', done);
  return w;
}

/**
 * For ms: every API request the page makes is for all its feeds at once
 * (apiPath/A,B,...), and it holds one request open at a time (sampled; a
 * sample may catch one poll ending as the next begins).
 */
export async function expectOneConnection(page, w, apiPath, names, ms = 4000) {
  const want = apiPath.replace(/\/+$/, '') + '/' + names.join(',');
  const from = w.paths.length;
  const samples = [];
  const end = Date.now() + ms;
  while (Date.now() < end) {
    samples.push(w.open.size);
    await sleep(100);
  }
  const seen = w.paths.slice(from);
  assert.ok(w.paths.length > 0, 'the page made no API request');
  const other = [...new Set(w.paths.filter((p) => p !== want))];
  assert.deepEqual(other, [], `requests not for ${want}`);
  const many = samples.filter((n) => n > 1).length;
  assert.ok(many <= 2, `more than one API request open in ${many} of ${samples.length} samples (max ${Math.max(...samples)})`);
  assert.ok(samples.filter((n) => n === 1).length >= samples.length / 2, `no long-poll held open: ${samples.join(' ')}`);
  return seen;
}
