// HTTP/2: the real stack served by nginx over TLS and HTTP/2 (`listen ...
// ssl http2`, a self-signed certificate made for the run, nginx/tailgate.conf
// included unchanged: real_stack.mjs's start({ tls: true })), in headless
// Chromium.  What HTTP/2 is for: a browser keeps six HTTP/1.1 connections
// per host and every parked long-poll or SSE stream holds one, so a
// seventh tab waits; over HTTP/2 they are streams of one connection.
//
//   - the pages and every API request are h2 (Resource Timing's
//     nextHopProtocol, CDP Network.responseReceived's protocol); the
//     snapshot is gzip (Content-Encoding on the h2 response)
//   - twelve tabs holding an SSE stream each, then twelve long-polling:
//     all on one connection (CDP connectionId), all open at once (the
//     responder's tailgate_sse_streams / tailgate_parked_requests), each
//     live with new batches, each exactly the feed's rows at its cursor;
//     six SSE tabs closed, their streams end in the responder (RST_STREAM
//     reaches the upstream request) and the other six stay live
//   - an SSE event is not held back: a commit (the load paused, one UPDATE)
//     is on the page within 1.5 s
//
// Node reads the API over HTTP/2 too (node:http2, trusting the run's
// certificate).  Skipped without the real stack (real_stack.py --check),
// or when TAILGATE_URL names another server.
//
//   node --test --test-reporter=tap tests/browser/h2.test.mjs

import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import http2 from 'node:http2';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { launch } from './chromium.mjs';
import { checksFor, assertNoErrors, waitFor } from './checks.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const T = { timeout: 120_000 };
const TABS = 12; // more than HTTP/1.1's six connections per host
const PROMPT_MS = 1500;
const SKIP =
  (process.env.TAILGATE_URL && 'TAILGATE_URL names another server') ||
  (process.env.TAILGATE_BROWSER_DEV === '1' && 'TAILGATE_BROWSER_DEV=1') ||
  (spawnSync('python3', [path.join(here, 'real_stack.py'), '--check'], { stdio: 'ignore' }).status !== 0 && 'no real stack on this machine (real_stack.py --check)');

/**
 * fetch() for the API over HTTP/2, on one session trusting ca: what
 * checks.mjs needs of a Response (status, headers.get, text, json).
 */
function h2fetch(origin, ca) {
  let session;
  const connect = () => {
    if (!session || session.closed || session.destroyed) {
      session = http2.connect(origin, { ca });
      session.on('error', () => {}); // the request that used it reports it
    }
    return session;
  };
  const get = (url, { headers = {} } = {}) =>
    new Promise((resolve, reject) => {
      const u = new URL(url);
      const req = connect().request({ ':path': u.pathname + u.search, ...headers });
      const chunks = [];
      let head;
      req.on('response', (h) => (head = h));
      req.on('data', (c) => chunks.push(c));
      req.on('error', reject);
      req.on('end', () => {
        const body = Buffer.concat(chunks).toString('utf8');
        const hs = new Headers(Object.entries(head).filter(([k]) => !k.startsWith(':')).map(([k, v]) => [k, String(v)]));
        resolve({ status: head[':status'], headers: hs, text: async () => body, json: async () => JSON.parse(body) });
      });
      req.end();
    });
  get.close = () => session?.close();
  return get;
}

let stack, chrome, checks;
const tag = '[real-h2]';

/** A /metrics gauge now. */
async function gauge(name) {
  const text = await (await stack.fetch(new URL('/metrics', stack.url).href)).text();
  const m = text.match(new RegExp(`^${name} (\\d+)`, 'm'));
  return m ? Number(m[1]) : null;
}
async function waitGauge(name, ok, what, tabs = [], timeout = 20_000) {
  let v;
  for (const end = Date.now() + timeout; Date.now() < end; await new Promise((r) => setTimeout(r, 100))) if (ok((v = await gauge(name)))) return v;
  const states = await Promise.all(tabs.map((p) => p.evaluate(() => { const s = window.tailgatePage.subs.winning_bids; return `${s.state} ${s.stats.batches}`; }).catch((e) => e.message)));
  assert.fail(`${name} is ${v}: ${what} (tabs: ${states.join(', ')})`);
}

// A tab of the page, with CDP's view of its API responses (protocol,
// connection, headers) in page.net.
async function open(context, url) {
  const page = await context.newPage();
  page.errors = [];
  page.on('console', (m) => m.type() === 'error' && page.errors.push(`console: ${m.text()}`));
  page.on('pageerror', (e) => page.errors.push(`pageerror: ${e.message}`));
  page.net = [];
  const cdp = await context.newCDPSession(page);
  cdp.on('Network.responseReceived', (e) => {
    if (new URL(e.response.url).pathname.startsWith(stack.apiPath))
      page.net.push({ url: e.response.url, type: e.type, protocol: e.response.protocol, connection: e.response.connectionId, headers: e.response.headers });
  });
  await cdp.send('Network.enable');
  await page.goto(checks.pageUrl(url));
  await waitFor(page, () => document.documentElement.dataset.ready === '1', undefined, 60_000);
  return page;
}

const batches = (page) => page.evaluate(() => window.tailgatePage.subs.winning_bids.stats.batches);
async function expectFlowing(page, n, timeout) {
  const b = await batches(page);
  await waitFor(page, ([b, n]) => { const s = window.tailgatePage.subs.winning_bids; return s.state === 'live' && s.stats.batches >= b + n; }, [b, n], timeout);
}

describe(`HTTP/2 ${tag}`, { skip: SKIP }, () => {
  before(async () => {
    if (SKIP) return;
    const { start } = await import('./real_stack.mjs');
    const s = await start({ tls: true });
    stack = { ...s, fetch: h2fetch(new URL(s.url).origin, s.cert) };
    checks = checksFor(stack);
    chrome = await launch();
  });
  after(async () => {
    await chrome?.close();
    stack?.fetch.close();
    await stack?.stop();
  });

  const newContext = () => chrome.browser.newContext({ ignoreHTTPSErrors: true });

  test(`${tag} the page and the API are HTTP/2; the snapshot is gzip`, T, async () => {
    assert.match(stack.url, /^https:/);
    const context = await newContext();
    const page = await open(context, 'auction.html');
    await expectFlowing(page, 2, 30_000);
    const timing = await page.evaluate(() =>
      [...performance.getEntriesByType('navigation'), ...performance.getEntriesByType('resource')].map((e) => [e.name, e.nextHopProtocol]),
    );
    assert.ok(timing.length >= 3, `resource timing: ${JSON.stringify(timing)}`);
    for (const [name, proto] of timing) assert.equal(proto, 'h2', `${name} came over ${proto}`);
    assert.ok(timing.some(([n]) => n.includes('/feeds/winning_bids?') && n.includes('cursor=')), `no long-poll in resource timing: ${JSON.stringify(timing)}`);
    const snap = page.net.find((r) => !new URL(r.url).searchParams.has('cursor'));
    assert.ok(snap, `no snapshot request: ${JSON.stringify(page.net.map((r) => r.url))}`);
    assert.equal(snap.protocol, 'h2', `the snapshot came over ${snap.protocol}`);
    assert.equal(snap.headers['content-encoding'], 'gzip', `the snapshot's headers over h2: ${JSON.stringify(snap.headers)}`);
    assert.ok(page.net.every((r) => r.protocol === 'h2'), `API responses: ${JSON.stringify(page.net.map((r) => r.protocol))}`);
    await checks.expectTableEqualsFeed(page, 'winning_bids');
    assertNoErrors(page);
    await context.close();
  });

  for (const transport of ['sse', 'longpoll']) {
    // Each tab its own filter (amount >= i): its own request.  Identical
    // cacheable GETs from tabs of one browser wait on each other in
    // Chromium's HTTP cache (the first goes out, the others wait up to
    // 20 s for its reply), and would not be twelve streams.
    const url = (i) => `auction.html?min=${i}` + (transport === 'sse' ? '&transport=sse' : '');
    const filter = (i) => ({ amount: ['gte', i] });
    const metric = transport === 'sse' ? 'tailgate_sse_streams' : 'tailgate_parked_requests';
    test(`${tag} ${TABS} tabs ${transport === 'sse' ? 'holding an SSE stream each' : 'long-polling'}: one connection, all live, exact`, T, async () => {
      const t0 = Date.now();
      const context = await newContext();
      try {
        const tabs = [];
        for (let i = 0; i < TABS; i++)
          tabs.push(
            await open(context, url(i)).catch((e) => {
              throw new Error(`tab ${i + 1} of ${TABS} did not load (the others' requests holding every connection, as HTTP/1.1's six would?): ${e.message}`);
            }),
          );
        const opened = Date.now() - t0;
        await Promise.all(tabs.map((p) => expectFlowing(p, 2, 45_000)));
        // With the load paused every tab's request waits for the next batch
        // at once: twelve open streams (HTTP/1.1 would hold six, the others
        // queued in the browser), and every tab reaches the feed's rows.
        await stack.pauseLoad();
        let peak;
        try {
          peak = await waitGauge(metric, (v) => v === TABS, `${TABS} tabs, the feed quiet: not every tab's request open at once`, tabs);
          for (const [i, p] of tabs.entries()) await checks.expectTableEqualsFeed(p, 'winning_bids', { filter: filter(i), loadPaused: true });
        } finally {
          await stack.resumeLoad();
        }
        await Promise.all(tabs.map((p) => expectFlowing(p, 2, 45_000)));
        const conns = new Set(tabs.flatMap((p) => p.net.map((r) => r.connection)));
        const protos = new Set(tabs.flatMap((p) => p.net.map((r) => r.protocol)));
        console.log(`# ${transport}: ${TABS} tabs open in ${opened} ms, ${metric} ${peak} with the feed quiet, API responses over ${[...protos]} on ${conns.size} connection(s), ${Date.now() - t0} ms`);
        assert.deepEqual([...protos], ['h2']);
        assert.equal(conns.size, 1, `the tabs' API requests used ${conns.size} connections, not one`);
        if (transport === 'sse') assert.ok(tabs.every((p) => p.net.some((r) => r.type === 'EventSource')), 'a tab without an EventSource response');
        for (const p of tabs) assertNoErrors(p);
        if (transport === 'sse') {
          // Half the tabs closed: their streams end upstream too, the rest flow on.
          for (const p of tabs.slice(0, TABS / 2)) await p.close();
          tabs.splice(0, TABS / 2);
          await waitGauge(metric, (v) => v === TABS / 2, `${TABS / 2} SSE tabs closed, their streams still open in the responder`, tabs);
          await Promise.all(tabs.map((p) => expectFlowing(p, 2, 30_000)));
        }
      } finally {
        await context.close();
      }
    });
  }

  test(`${tag} an SSE event reaches the page promptly after a commit`, T, async () => {
    const context = await newContext();
    const page = await open(context, 'auction.html?transport=sse');
    await expectFlowing(page, 1, 30_000);
    await stack.pauseLoad();
    const took = [];
    try {
      // Twice: the second when the feed is quiet, nothing behind the event.
      for (let i = 0; i < 2; i++) {
        const word = `h2probe${i}x${Date.now()}`;
        const t0 = Date.now();
        await stack.setItem(word);
        await waitFor(page, (w) => window.tailgatePage.subs.winning_bids.rows().some((r) => r.includes(w)), word, 15_000).catch(() =>
          assert.fail(`the commit setting item ${word} never reached the page`),
        );
        took.push(Date.now() - t0);
      }
    } finally {
      await stack.resumeLoad();
    }
    console.log(`# SSE over h2: commit to the page in ${took.join(' ms, ')} ms`);
    for (const ms of took) assert.ok(ms < PROMPT_MS, `a commit reached the page ${ms} ms later (over ${PROMPT_MS} ms: held back)`);
    assert.ok(page.net.some((r) => r.type === 'EventSource' && r.protocol === 'h2'), 'the stream was not an h2 EventSource');
    await checks.expectTableEqualsFeed(page, 'winning_bids');
    assertNoErrors(page);
    await context.close();
  });
});
