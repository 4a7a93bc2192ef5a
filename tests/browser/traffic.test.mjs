// Browser traffic: what real browsers do to the pages' connections, in
// headless Chromium against the stack (tests/browser/stack.mjs).  The
// network drops and comes back (context.setOffline), a tab is frozen and
// thawed (CDP Page.setWebLifecycleState), eight tabs of the multi-feed page
// share the browser's six HTTP/1.1 connections per host, a slow network
// (CDP Network.emulateNetworkConditions), the responder down (nginx answers
// 502) then back, the daemon restarted, and a page left and restored from
// the back/forward cache.  After each, the page must hold exactly the
// feed's rows at its cursor (no row missing, none twice) and keep one API
// request open at a time.
//
//   TAILGATE_STACK=tests/browser/real_stack.mjs node --test tests/browser/traffic.test.mjs

import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { launch } from './chromium.mjs';
import { startStack } from './stack.mjs';
import { expectPageAtFeeds, watchApi } from './multi.mjs';
import { checksFor, assertNoErrors, waitFor, recordBadge } from './checks.mjs';
import { rowKey } from '../../htdocs/tailgate.js';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const T = { timeout: 120_000 };
const TOP10 = ['top_buyers', 'auction_stats'];

const stack = await startStack();
const tag = `[${stack.name}]`;
const { apiUrl, pageUrl, expectTableEqualsFeed } = checksFor(stack);
let chrome;

// Every API request a page makes, and the most it ever held open at once
// (counted at each request's start: exact, not sampled).
function watchOpen(page) {
  const w = watchApi(page, stack.apiPath);
  w.max = 0;
  w.times = [];
  w.log = [];
  page.on('request', (r) => {
    w.max = Math.max(w.max, w.open.size);
    w.times.push(Date.now());
    w.log.push(`${Date.now() % 100000} ${r.url().replace(/^.*\/feeds/, '')}`);
  });
  page.on('response', (r) => w.log.push(`${Date.now() % 100000} -> ${r.status()}`));
  page.on('requestfailed', (r) => w.log.push(`${Date.now() % 100000} failed ${r.failure()?.errorText}`));
  w.reset = () => {
    w.max = w.open.size;
    w.times = [];
    w.log = [];
  };
  return w;
}

async function open(context, url, { badge = true } = {}) {
  const page = await context.newPage();
  page.errors = [];
  page.on('console', (m) => m.type() === 'error' && page.errors.push(`console: ${m.text()}`));
  page.on('pageerror', (e) => page.errors.push(`pageerror: ${e.message}`));
  if (badge) await recordBadge(page);
  page.api = watchOpen(page);
  await page.goto(pageUrl(url));
  await waitFor(page, () => document.documentElement.dataset.ready === '1', undefined, 60_000);
  return page;
}

// The subscription a page's badge follows: auction's winning_bids, top-10's
// multi-feed one.
const SUB = `(window.tailgatePage.subs.together || window.tailgatePage.subs.winning_bids)`;
const subState = (page) => page.evaluate(`${SUB}.state`);
const waitState = (page, states, timeout = 30_000) =>
  waitFor(page, ([src, states]) => states.includes((0, eval)(src).state), [SUB, states], timeout);
const updates = (page) => page.evaluate(`${SUB}.stats.updates ?? ${SUB}.stats.batches`);

/** top10.html's two feeds hold exactly GET /feeds/top_buyers,auction_stats's rows at the page's cursor. */
function expectTop10Exact(page) {
  const read = () =>
    Object.fromEntries(['top_buyers', 'auction_stats'].map((n) => [n, window.tailgatePage.subs[n].rows().map(window.tailgatePage.rowKey).sort()]));
  const check = (shown, feeds) => {
    for (const n of TOP10) {
      const want = feeds[n].rows.map(rowKey).sort();
      assert.equal(shown[n].length, want.length, `${n}: the page holds ${shown[n].length} rows, the feed ${want.length}`);
      assert.deepEqual(shown[n], want, `${n}: rows differ from the feed`);
    }
  };
  return expectPageAtFeeds(page, TOP10, read, check, { api: apiUrl(), pauseLoad: stack.pauseLoad, resumeLoad: stack.resumeLoad });
}

async function expectExact(page) {
  if (await page.evaluate(() => !!window.tailgatePage.subs.together)) await expectTop10Exact(page);
  else await expectTableEqualsFeed(page, 'winning_bids');
}

// New updates arrive (n of them) and the page is live.
async function expectFlowing(page, n = 2, timeout = 30_000) {
  const u = await updates(page);
  await waitFor(page, ([src, u, n]) => { const s = (0, eval)(src); return s.state === 'live' && (s.stats.updates ?? s.stats.batches) >= u + n; }, [SUB, u, n], timeout);
}

// The development server has no multi-feed endpoint, and its faults are
// its own: these checks are about the real server's traffic.
const SKIP = stack.name === 'fake-dev-server' && 'needs a real server (TAILGATE_STACK or TAILGATE_URL)';

describe(`browser traffic ${tag}`, { skip: SKIP }, () => {
  before(async () => {
    if (!SKIP) chrome = await launch();
  });
  after(async () => {
    await chrome?.close();
    await stack.stop();
  });

  // Offline for a while, the backoff grown: back online, the pages are
  // live again at once (not after a 30 s backoff), and exact.
  test(`${tag} the network drops and comes back`, T, async () => {
    const context = await chrome.browser.newContext();
    const pages = [await open(context, 'auction.html'), await open(context, 'top10.html')];
    for (const p of pages) await expectFlowing(p, 1);
    await context.setOffline(true);
    for (const p of pages) await waitState(p, ['reconnecting', 'stalled'], 30_000);
    await sleep(8000); // failures pile up: the backoff's ceiling reaches 16 s and more
    // The page says it is offline.
    for (const p of pages)
      await waitFor(p, () => /offline/i.test(document.getElementById('problem')?.textContent || ''), undefined, 5_000).catch(
        async () => assert.fail(`${p.url()}: the page does not say it is offline: ${await p.evaluate(() => document.getElementById('problem')?.textContent)}`),
      );
    const fails = await Promise.all(pages.map((p) => p.evaluate(`${SUB}.stats.failures`)));
    for (const p of pages) p.api.reset();
    await context.setOffline(false);
    const back = Date.now();
    // Both at once: the second page's wait must not hide the first one's.
    const took = await Promise.all(
      pages.map(async (p) => {
        await waitState(p, ['live'], 30_000);
        return Date.now() - back;
      }),
    );
    console.log(`# live again ${took.join(' ms, ')} ms after the network came back (failures: ${fails.join(', ')})`);
    for (const [i, ms] of took.entries()) assert.ok(ms < 2500, `${pages[i].url()}: live ${ms} ms after the network came back (a backoff sleep not cut short)`);
    for (const p of pages) {
      await expectFlowing(p);
      await expectExact(p);
      const states = await p.evaluate(() => window.__badge);
      assert.ok(states.includes('reconnecting'), `${p.url()} badge: ${states}`);
      assert.equal(states.at(-1), 'live', `${p.url()} badge: ${states}`);
      assert.ok(p.api.max <= 1, `${p.url()}: ${p.api.max} API requests open at once`);
      assertNoErrors(p, { faults: true });
    }
    await context.close();
  });

  // A frozen tab (as a browser freezes a hidden one) runs no script; thawed,
  // it carries on: one request at a time, no burst, exact.
  test(`${tag} a tab frozen for a while resumes`, T, async () => {
    const context = await chrome.browser.newContext();
    const pages = [await open(context, 'auction.html'), await open(context, 'top10.html')];
    for (const p of pages) await expectFlowing(p, 1);
    const cdps = [];
    for (const p of pages) {
      const cdp = await context.newCDPSession(p);
      cdps.push(cdp);
      await cdp.send('Page.enable');
      await cdp.send('Page.setWebLifecycleState', { state: 'frozen' });
    }
    await sleep(8000);
    for (const p of pages) p.api.reset();
    for (const cdp of cdps) await cdp.send('Page.setWebLifecycleState', { state: 'active' });
    for (const p of pages) await expectFlowing(p, 2, 30_000);
    for (const p of pages) {
      await expectExact(p);
      assert.ok(p.api.max <= 1, `${p.url()}: ${p.api.max} API requests open at once after thawing`);
      // A long-poll answers at each batch (~7/s here): a burst is many more.
      const first = p.api.times.filter((t) => t - p.api.times[0] < 1000).length;
      assert.ok(first <= 20, `${p.url()}: ${first} API requests in the first second after thawing:\n${p.api.log.slice(0, 60).join('\n')}`);
      assertNoErrors(p, { faults: true });
    }
    await context.close();
  });

  // HTTP/1.1: six connections per host.  One long-poll per page: eight
  // tabs of the multi-feed page all stay live.
  test(`${tag} eight tabs of the top-10 page all stay live`, T, async () => {
    const context = await chrome.browser.newContext();
    const tabs = [];
    for (let i = 0; i < 8; i++) tabs.push(await open(context, 'top10.html', { badge: false }));
    await Promise.all(tabs.map((p) => expectFlowing(p, 3, 45_000)));
    for (const p of tabs) {
      assert.ok(p.api.max <= 1, `${p.url()}: ${p.api.max} API requests open at once`);
      assert.ok(p.api.paths.every((x) => x.endsWith('/top_buyers,auction_stats')), `requests: ${[...new Set(p.api.paths)]}`);
      assertNoErrors(p);
    }
    await expectTop10Exact(tabs[7]);
    await context.close();
  });

  // 300 ms each way and a thin pipe: live, exact.
  test(`${tag} a slow network: live and exact`, T, async () => {
    const context = await chrome.browser.newContext();
    const pages = [];
    for (const url of ['auction.html', 'top10.html']) {
      const p = await context.newPage();
      p.errors = [];
      p.on('pageerror', (e) => p.errors.push(`pageerror: ${e.message}`));
      p.on('console', (m) => m.type() === 'error' && p.errors.push(`console: ${m.text()}`));
      p.api = watchOpen(p);
      const cdp = await context.newCDPSession(p);
      await cdp.send('Network.enable');
      await cdp.send('Network.emulateNetworkConditions', { offline: false, latency: 300, downloadThroughput: 256 * 1024, uploadThroughput: 32 * 1024 });
      await p.goto(pageUrl(url));
      await waitFor(p, () => document.documentElement.dataset.ready === '1', undefined, 60_000);
      pages.push(p);
    }
    for (const p of pages) {
      await expectFlowing(p, 3, 45_000);
      await expectExact(p);
      assert.ok(p.api.max <= 1, `${p.url()}: ${p.api.max} API requests open at once`);
      assertNoErrors(p);
    }
    await context.close();
  });

  // The responder down: nginx answers 502.  The pages say so, and are live
  // and exact once it is back; then the daemon is restarted under them.
  test(
    `${tag} the responder down (502), then back; the daemon restarted`,
    { ...T, skip: !(stack.stopResponder && stack.restartDaemon) && 'the stack has no stopResponder/restartDaemon hooks' },
    async () => {
      const context = await chrome.browser.newContext();
      const pages = [await open(context, 'auction.html'), await open(context, 'top10.html')];
      for (const p of pages) await expectFlowing(p, 1);
      await stack.stopResponder();
      try {
        for (const p of pages) {
          await waitState(p, ['reconnecting', 'stalled'], 30_000);
          await waitFor(p, (src) => (0, eval)(src).detail?.status === 502 || window.__badge.includes('stalled'), SUB, 30_000);
          await waitFor(p, () => /502|not answering|unavailable/i.test(document.getElementById('problem')?.textContent || ''), undefined, 15_000).catch(
            async () => assert.fail(`${p.url()}: the page does not say the server is down: ${await p.evaluate(() => document.getElementById('problem')?.textContent)}`),
          );
        }
        await sleep(3000);
      } finally {
        await stack.startResponder();
      }
      for (const p of pages) {
        await expectFlowing(p, 2, 45_000);
        await waitFor(p, () => document.getElementById('problem').hidden || !document.getElementById('problem').textContent, undefined, 5_000);
      }
      await stack.restartDaemon();
      for (const p of pages) {
        await expectFlowing(p, 2, 60_000);
        await expectExact(p);
        const states = await p.evaluate(() => window.__badge);
        assert.ok(states.includes('reconnecting'), `${p.url()} badge: ${states}`);
        assert.ok(p.api.max <= 1, `${p.url()}: ${p.api.max} API requests open at once`);
        assertNoErrors(p, { faults: true });
      }
      await context.close();
    },
  );

  // Away and back: restored from the back/forward cache (Chromium with its
  // cache on), the page resumes its subscription: live, exact.
  test(`${tag} back/forward navigation`, T, async () => {
    const bf = await launch({ bfcache: true });
    try {
      const context = await bf.browser.newContext();
      for (const url of ['auction.html', 'top10.html']) {
        const page = await open(context, url);
        await page.evaluate(() => {
          window.__shown = [];
          addEventListener('pageshow', (e) => window.__shown.push(e.persisted));
        });
        const cdp = await context.newCDPSession(page);
        await cdp.send('Page.enable');
        const notUsed = [];
        cdp.on('Page.backForwardCacheNotUsed', (e) => notUsed.push(e.notRestoredExplanations.map((x) => x.reason)));
        await expectFlowing(page, 1);
        await page.goto(pageUrl('style.css'));
        await sleep(1500);
        page.api.reset();
        await page.goBack({ waitUntil: 'commit' });
        await waitFor(page, () => document.readyState === 'complete', undefined, 30_000);
        const restored = await page.evaluate(() => (window.__shown || []).includes(true));
        console.log(`# back/forward ${url}: ${restored ? 'restored from the cache' : 'loaded again: ' + JSON.stringify(notUsed)}`);
        assert.ok(restored, `${url}: not restored from the back/forward cache: ${JSON.stringify(notUsed)}`);
        await expectFlowing(page, 2, 30_000);
        await expectExact(page);
        assert.ok(page.api.max <= 1, `${url}: ${page.api.max} API requests open at once after coming back`);
        assertNoErrors(page, { faults: true });
        await page.close();
      }
      await context.close();
    } finally {
      await bf.close();
    }
  });
});
