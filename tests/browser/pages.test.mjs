// The demo pages in headless Chromium against a stack (tests/browser/stack.mjs):
// the tables and the chart equal the feeds' rows, the filter shows only
// matching rows, 410s, dropped connections, 503s and restarts are survived,
// no page logs an error, and screenshots land in tests/artifacts/.
//
//   tests/browser/run.sh                         (see tests/browser/README.md)
//   TAILGATE_URL=http://127.0.0.1:8080/ node --test tests/browser/

import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { launch } from './chromium.mjs';
import { startStack } from './stack.mjs';
import { expectPageAtFeeds, watchApi, expectOneConnection } from './multi.mjs';
import { checksFor, assertNoErrors, waitFor, recordBadge } from './checks.mjs';
import { parseReply, parseFeedList } from '../../htdocs/tailgate.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const ART = path.resolve(here, '../artifacts');
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const T = { timeout: 180_000 };

const stack = await startStack();
const tag = `[${stack.name}]`;
let chrome;

const { apiUrl, pageUrl, feedState, pageTable, expectTableEqualsFeed, expectTableEqualsDatabase, quiet } = checksFor(stack);

async function shot(page, name) {
  fs.mkdirSync(ART, { recursive: true });
  await page.screenshot({ path: path.join(ART, `${name}.png`) });
}

async function openTable(url, feed, { batches = 0, timeout = 60_000, badge = false } = {}) {
  const page = await chrome.newPage();
  if (badge) await recordBadge(page);
  await page.goto(pageUrl(url));
  await waitFor(page, () => document.documentElement.dataset.ready === '1', undefined, timeout);
  if (batches) await waitFor(page, ([f, n]) => window.tailgatePage.subs[f].stats.batches >= n, [feed, batches], timeout);
  return page;
}

const amountIndex = (columns) => columns.findIndex((c) => c.name === 'amount');

describe(`demo pages ${tag}`, () => {
  before(async () => {
    chrome = await launch();
    console.log(`# browser tests against ${stack.name} at ${stack.url}`);
  });
  after(async () => {
    await chrome?.close();
    await stack.stop();
  });

  test(`${tag} index lists the feeds with row counts and cursors, live`, T, async () => {
    const page = await chrome.newPage();
    await page.goto(pageUrl('./'));
    await waitFor(page, () => document.documentElement.dataset.ready === '1');
    const api = parseFeedList(await (await fetch(apiUrl())).json());
    const names = await page.$$eval('#feeds tbody tr[data-feed]', (trs) => trs.map((t) => t.dataset.feed));
    assert.deepEqual(names.slice().sort(), api.map((f) => f.name).sort());
    for (const f of ['winning_bids', 'top_buyers', 'auction_stats']) assert.ok(names.includes(f), `feed ${f} listed`);
    // The page shows what it read.
    const shown = await page.evaluate(() =>
      window.tailgatePage.feeds.map((f) => {
        const tr = document.querySelector(`tr[data-feed="${CSS.escape(f.name)}"]`);
        return { name: f.name, rows: f.rows, cursor: f.cursor, rowsText: tr.children[1].dataset.value, cursorText: tr.children[2].textContent };
      }),
    );
    for (const s of shown) {
      assert.equal(s.rowsText, String(s.rows ?? ''), `${s.name} rows`);
      assert.equal(s.cursorText, s.cursor ?? '—', `${s.name} cursor`);
    }
    // It follows the feeds: a new cursor within a few refreshes.
    const before = shown.find((s) => s.name === 'winning_bids').cursor;
    await waitFor(
      page,
      (c) => document.querySelector('tr[data-feed="winning_bids"]').children[2].textContent !== c,
      before,
      60_000,
    );
    // With the load paused, the numbers are exactly the API's.
    if (stack.pauseLoad) {
      await stack.pauseLoad();
      try {
        await sleep(2500);
        const now = parseFeedList(await (await fetch(apiUrl())).json());
        await waitFor(
          page,
          (want) =>
            want.every((f) => {
              const tr = document.querySelector(`tr[data-feed="${CSS.escape(f.name)}"]`);
              return tr && tr.children[1].dataset.value === String(f.rows) && tr.children[2].textContent === f.cursor;
            }),
          now.map((f) => ({ name: f.name, rows: f.rows, cursor: f.cursor })),
          10_000,
        );
      } finally {
        await stack.resumeLoad();
      }
    }
    const badge = await page.getAttribute('#badge', 'data-state');
    assert.equal(badge, 'live');
    assertNoErrors(page);
    await page.closeAll();
  });

  test(`${tag} auction table equals the winning_bids feed after live batches`, T, async () => {
    const page = await openTable('auction.html', 'winning_bids', { batches: 4 });
    const { expected } = await expectTableEqualsFeed(page, 'winning_bids');
    assert.ok(expected.rows.length > 0, 'the demo has winning bids');
    // Cells show the values: the amount column of every row, in order.
    const ai = amountIndex(expected.columns);
    const cells = await page.$$eval('#bids tbody tr', (trs) =>
      trs.map((tr) => [JSON.parse(tr.dataset.key), tr.querySelector('td[data-col="amount"]').textContent]),
    );
    for (const [row, text] of cells) assert.equal(text.replace(/[^0-9.-]/g, ''), String(row[ai]));
    // Sorted by end time, newest first (the default) ...
    const { page: p0 } = await expectTableEqualsFeed(page, 'winning_bids');
    assert.deepEqual(p0.sort, { col: 'end_time', dir: 'desc' });
    // ... and by amount after a click on its header (the order is checked
    // against the feed's rows sorted the same way).
    await page.click('#bids th[data-col="amount"] button');
    const { page: p1 } = await expectTableEqualsFeed(page, 'winning_bids');
    assert.deepEqual(p1.sort, { col: 'amount', dir: 'desc' });
    // "Show all": every row in the table.
    if (p1.size > p1.shown.length) {
      await page.click('#show-all');
      const { page: p2 } = await expectTableEqualsFeed(page, 'winning_bids');
      assert.equal(p2.shown.length, p2.size);
    }
    const db = await expectTableEqualsDatabase(page, 'winning_bids');
    if (db) console.log('# auction table checked against the database');
    assertNoErrors(page);
    await page.closeAll();
  });

  test(`${tag} amount filter: only matching rows, exactly the filtered feed`, T, async () => {
    const page = await openTable('auction.html', 'winning_bids', { batches: 2 });
    const requests = [];
    page.on('request', (r) => requests.push(r.url()));
    const all = await expectTableEqualsFeed(page, 'winning_bids');
    const ai = amountIndex(all.expected.columns);
    const amounts = all.expected.rows.map((r) => Number(r[ai])).sort((a, b) => a - b);
    const min = amounts[Math.floor(amounts.length / 2)]; // about half the rows
    await page.fill('#min', String(min));
    await waitFor(
      page,
      (want) => {
        const s = window.tailgatePage.subs.winning_bids;
        return s.filter.length === 1 && s.filter[0][1] === want && s.state === 'live';
      },
      `gte.${min}`,
    );
    const { page: p, expected } = await expectTableEqualsFeed(page, 'winning_bids', { filter: { amount: ['gte', min] } });
    // The feed grows while the page loads, so compare with the unfiltered
    // feed as it is now: some of its rows lie below the filter.
    const now = await feedState('winning_bids');
    const below = now.rows.filter((r) => Number(r[ai]) < min).length;
    assert.ok(p.rows.length > 0 && below > 0, `filtered ${p.rows.length}; ${below} of the feed's ${now.rows.length} rows lie below ${min}`);
    for (const k of p.rows) assert.ok(Number(JSON.parse(k)[ai]) >= min, `row ${k} matches amount >= ${min}`);
    assert.ok(expected.rows.every((r) => Number(r[ai]) >= min), 'the server filtered too');
    assert.ok(
      requests.some((u) => new URL(u).searchParams.get('amount') === `gte.${min}`),
      'the filter went to the server as amount=gte.N',
    );
    assert.ok(page.url().includes(`min=${min}`), 'the filter is in the page URL');
    // Batches keep coming, still filtered.
    const b0 = p.batches;
    await waitFor(page, (n) => window.tailgatePage.subs.winning_bids.stats.batches > n, b0);
    await expectTableEqualsFeed(page, 'winning_bids', { filter: { amount: ['gte', min] } });
    // Back to no filter: every row again.
    await page.fill('#min', '0');
    await waitFor(page, () => window.tailgatePage.subs.winning_bids.filter.length === 0);
    await expectTableEqualsFeed(page, 'winning_bids');
    assertNoErrors(page);
    await page.closeAll();
    // The filter in the URL applies on load.
    const p2 = await openTable(`auction.html?min=${min}`, 'winning_bids');
    await expectTableEqualsFeed(p2, 'winning_bids', { filter: { amount: ['gte', min] } });
    assert.equal(await p2.inputValue('#min'), String(min));
    assertNoErrors(p2);
    await p2.closeAll();
  });

  // top10.html follows both feeds in one subscription: its cursor is the
  // multi-feed one, so the bars and tiles are compared with GET
  // /feeds/top_buyers,auction_stats at that cursor (with each feed's own
  // reply where the page follows them one by one: ?together=0, or a server
  // without the multi-feed endpoint).
  const TOP10 = ['top_buyers', 'auction_stats'];
  const readTop10 = () => ({
    bars: [...document.querySelectorAll('#chart .bar:not(.leaving)')]
      .map((b) => ({ key: b.dataset.key, value: Number(b.dataset.value), rank: Number(b.dataset.rank) }))
      .sort((a, b) => a.rank - b.rank),
    tiles: Object.fromEntries([...document.querySelectorAll('#counters .counter')].map((t) => [t.dataset.col, t.dataset.value])),
  });
  function checkTop10(shown, feeds) {
    const num = (v) => (v == null ? 0 : Number(v));
    const tb = feeds.top_buyers;
    const ix = Object.fromEntries(tb.columns.map((c, i) => [c.name, i]));
    const want = tb.rows
      .slice()
      .sort((a, b) => num(b[ix.wins]) - num(a[ix.wins]) || num(b[ix.total_amount]) - num(a[ix.total_amount]) || num(a[ix.buyer]) - num(b[ix.buyer]))
      .slice(0, 10)
      .map((r, i) => ({ key: String(r[ix.buyer]), value: num(r[ix.wins]), rank: i + 1 }));
    assert.deepEqual(shown.bars, want, 'the top-10 chart is not top_buyers at the cursor');
    const st = feeds.auction_stats;
    assert.equal(st.rows.length, 1);
    const tiles = {};
    st.columns.forEach((c, i) => {
      if (c.name !== 'id') tiles[c.name] = String(Number(st.rows[0][i]));
    });
    assert.deepEqual(shown.tiles, tiles, 'the counters are not auction_stats at the cursor');
    // The pair agrees: the ten best buyers' wins are among all wins.
    const topWins = shown.bars.reduce((a, b) => a + b.value, 0);
    assert.ok(topWins <= Number(shown.tiles.wins), `the top 10 hold ${topWins} wins, the counter says ${shown.tiles.wins}`);
  }
  for (const mode of ['', '?together=0']) {
    test(`${tag} top-10 chart and counters equal top_buyers and auction_stats${mode && ' (' + mode + ')'}`, T, async () => {
      const page = await chrome.newPage();
      await page.goto(pageUrl('top10.html' + mode));
      await waitFor(page, () => document.documentElement.dataset.ready === '1');
      const together = await page.evaluate(() => !!window.tailgatePage.subs.together);
      if (mode) assert.equal(together, false, '?together=0 follows the feeds one by one');
      else if (stack.name === 'real') assert.equal(together, true, 'the page follows both feeds in one subscription');
      await expectPageAtFeeds(page, TOP10, readTop10, checkTop10, { api: apiUrl(), single: (n) => feedState(n), pauseLoad: stack.pauseLoad, resumeLoad: stack.resumeLoad });
      assertNoErrors(page);
      await page.closeAll();
    });
  }

  // One long-poll for both feeds, never one per feed: the page's requests
  // to the API are all /feeds/top_buyers,auction_stats, one open at a time.
  // The real server only: the development server has no multi-feed endpoint.
  test(`${tag} top-10: one long-poll connection for both feeds`, T, async (t) => {
    if (stack.name !== 'real') return t.skip('needs the real server');
    const page = await chrome.newPage();
    const w = watchApi(page, stack.apiPath);
    await page.goto(pageUrl('top10.html'));
    await waitFor(page, () => document.documentElement.dataset.ready === '1');
    await waitFor(page, () => window.tailgatePage.subs.together.stats.updates >= 3);
    await expectOneConnection(page, w, stack.apiPath, TOP10);
    await expectPageAtFeeds(page, TOP10, readTop10, checkTop10, { api: apiUrl(), pauseLoad: stack.pauseLoad, resumeLoad: stack.resumeLoad });
    assertNoErrors(page);
    await page.closeAll();
  });

  test(`${tag} SSE transport: the table equals the feed`, T, async () => {
    const page = await chrome.newPage();
    const urls = [];
    page.on('request', (r) => urls.push(r.url()));
    await page.goto(pageUrl('auction.html?transport=sse'));
    await waitFor(page, () => document.documentElement.dataset.ready === '1');
    await waitFor(page, () => window.tailgatePage.subs.winning_bids.stats.batches >= 3);
    assert.ok(urls.some((u) => new URL(u).searchParams.get('stream') === 'sse'), 'an event stream was opened');
    await expectTableEqualsFeed(page, 'winning_bids');
    await page.fill('#min', '50');
    await waitFor(page, () => window.tailgatePage.subs.winning_bids.filter.length === 1);
    await expectTableEqualsFeed(page, 'winning_bids', { filter: { amount: ['gte', 50] } });
    assertNoErrors(page);
    await page.closeAll();
  });

  // The Changes panel of top10.html lists what happens while the page is
  // open: the snapshot, and the history the server sends with it (an SSE
  // stream's snapshot event is followed by every batch the ring holds
  // after it), go into the chart only; so does what a reconnection
  // catches up.  Entries are stamped with their arrival.
  for (const transport of ['sse', 'longpoll']) {
    test(
      `${tag} Changes panel (${transport}): history and catch-up in the chart, only live changes listed`,
      { ...T, skip: !stack.pauseLoad && 'the stack has no pauseLoad hook' },
      async () => {
        // The ring must hold batches after the snapshot, or there is no history to leak.
        const end = Date.now() + 60_000;
        for (;;) {
          const r = await fetch(apiUrl('top_buyers'), { headers: { accept: 'application/json' }, cache: 'no-store' });
          const n = parseReply(await r.text()).batches.length;
          if (n > 3) break;
          assert.ok(Date.now() < end, `top_buyers holds only ${n} batches: no history to test with`);
          await sleep(500);
        }
        const page = await chrome.newPage();
        await page.addInitScript(() => {
          window.__ticks = [];
          new MutationObserver((ms) => {
            for (const m of ms) for (const n of m.addedNodes) if (n.nodeName === 'LI' && m.target.id === 'ticker') window.__ticks.push(Number(n.dataset.at));
          }).observe(document, { subtree: true, childList: true });
        });
        const ticks = () => page.evaluate(() => window.__ticks.length);
        await stack.pauseLoad();
        let paused = true;
        try {
          await quiet('top_buyers');
          await page.goto(pageUrl(`top10.html?transport=${transport}`));
          await waitFor(page, () => document.documentElement.dataset.ready === '1');
          await waitFor(page, () => document.querySelectorAll('#chart .bar').length > 0);
          await sleep(1500);
          assert.equal(await ticks(), 0, 'nothing happened since the page opened, yet the Changes panel lists entries (replayed history)');
          // Live changes are listed, stamped with their arrival.
          const t0 = Date.now();
          await stack.resumeLoad();
          paused = false;
          await waitFor(page, () => window.__ticks.length >= 2);
          const at = await page.evaluate(() => window.__ticks);
          assert.ok(at.every((t) => t >= t0 - 1000 && t <= Date.now() + 1000), `entries stamped with their arrival: ${at.map((t) => t - t0)} ms after the load resumed`);
          if (transport === 'longpoll') {
            // Polls fail for a while the load runs; then the load stops
            // and the polls succeed: what they catch up is not listed.
            let blocked = true;
            await page.route(
              (u) => /\/top_buyers(,auction_stats)?$/.test(u.pathname) && u.searchParams.has('cursor'),
              (route) => (blocked ? route.abort('connectionreset') : route.continue()),
            );
            await waitFor(page, () => window.tailgatePage.subs.top_buyers.stats.failures >= 1);
            const before = await page.evaluate(() => window.tailgatePage.subs.top_buyers.cursor);
            await sleep(2500);
            await stack.pauseLoad();
            paused = true;
            const together = await page.evaluate(() => !!window.tailgatePage.subs.together);
            const head = await quiet(together ? TOP10.join(',') : 'top_buyers');
            assert.notEqual(head, before, 'top_buyers moved while the polls failed');
            const n0 = await ticks();
            blocked = false;
            // Caught up: at head's position or past it (a cursor is a
            // position, and the upstream may confirm progress, moving it on
            // with no batch, after quiet() returned), in the same history.
            await waitFor(
              page,
              (c) => {
                const s = window.tailgatePage.subs.top_buyers;
                if (s.state !== 'live' || !s.cursor) return false;
                const [pos, id] = s.cursor.split('.');
                const [hpos, hid] = c.split('.');
                return id === hid && BigInt(pos) >= BigInt(hpos);
              },
              head,
            );
            await sleep(1000);
            assert.equal(await ticks(), n0, 'the batches caught up after the failures were listed as changes');
            await page.unroute(() => true).catch(() => {});
          }
          assertNoErrors(page, { faults: transport === 'longpoll' });
        } finally {
          if (paused) await stack.resumeLoad();
          await page.closeAll();
        }
      },
    );
  }

  test(`${tag} a 410 is survived: rows kept while resyncing, then exact`, T, async () => {
    const page = await openTable('auction.html', 'winning_bids', { batches: 2, badge: true });
    const before = (await pageTable(page, 'winning_bids')).size;
    let gone = false, during = null;
    await page.route(
      (u) => u.pathname.endsWith('/winning_bids'),
      async (route) => {
        const u = new URL(route.request().url());
        if (!gone && u.searchParams.has('cursor')) {
          gone = true;
          return route.fulfill({ status: 410, contentType: 'application/json', body: '{"error":"cursor_gone","message":"take a new snapshot"}' });
        }
        if (gone && during === null && !u.searchParams.has('cursor')) {
          // The new snapshot is slow: the page must keep showing its rows.
          await sleep(1000);
          during = await page.evaluate(() => ({
            rows: window.tailgatePage.subs.table.size,
            state: window.tailgatePage.subs.winning_bids.state,
          }));
        }
        return route.continue();
      },
    );
    await waitFor(page, () => window.tailgatePage.subs.winning_bids.stats.resyncs >= 1 && window.tailgatePage.subs.winning_bids.state === 'live');
    assert.ok(gone, 'a poll was answered 410');
    assert.equal(during.state, 'resyncing');
    assert.ok(during.rows >= before * 0.9 && during.rows > 0, `rows kept while resyncing (${during.rows} of ${before})`);
    await page.unroute(() => true).catch(() => {});
    await expectTableEqualsFeed(page, 'winning_bids');
    const states = await page.evaluate(() => window.__badge);
    assert.ok(states.includes('resyncing') && states.at(-1) === 'live', `badge: ${states}`);
    assertNoErrors(page, { faults: true });
    await page.closeAll();
  });

  test(`${tag} dropped connections and 503s are survived`, T, async () => {
    const page = await openTable('auction.html', 'winning_bids', { batches: 2, badge: true });
    let n = 0;
    await page.route(
      (u) => u.pathname.endsWith('/winning_bids') && u.searchParams.has('cursor'),
      async (route) => {
        n++;
        if (n <= 2) return route.abort('connectionreset');
        if (n <= 4) return route.fulfill({ status: 503, contentType: 'application/json', body: '{"error":"feed_not_live","message":"upstream down"}' });
        return route.continue();
      },
    );
    // The poll in flight ends with the next batch; then the faults begin.
    await waitFor(page, () => window.tailgatePage.subs.winning_bids.stats.failures >= 4);
    await waitFor(page, () => window.tailgatePage.subs.winning_bids.state === 'live');
    const b = (await pageTable(page, 'winning_bids')).batches;
    await waitFor(page, (b) => window.tailgatePage.subs.winning_bids.stats.batches > b, b);
    await expectTableEqualsFeed(page, 'winning_bids');
    const states = await page.evaluate(() => window.__badge);
    assert.ok(states.includes('reconnecting'), `badge: ${states}`);
    assert.equal(states.at(-1), 'live');
    assertNoErrors(page, { faults: true });
    await page.closeAll();
  });

  for (const [what, hook] of [
    ['responder', 'restartResponder'],
    ['daemon', 'restartDaemon'],
  ]) {
    test(
      `${tag} restarting the ${what} is survived`,
      { ...T, skip: !stack[hook] && `the stack has no ${hook} hook` },
      async () => {
        const page = await openTable('auction.html', 'winning_bids', { batches: 2, badge: true });
        const top = await chrome.newPage();
        await top.goto(pageUrl('top10.html'));
        await waitFor(top, () => document.documentElement.dataset.ready === '1');
        await stack[hook]();
        const b = (await pageTable(page, 'winning_bids')).batches;
        await waitFor(page, (b) => window.tailgatePage.subs.winning_bids.stats.batches > b && window.tailgatePage.subs.winning_bids.state === 'live', b, 120_000);
        await expectTableEqualsFeed(page, 'winning_bids', { timeout: 60_000 });
        await waitFor(top, () => Object.values(window.tailgatePage.subs).every((s) => !s.state || s.state === 'live'), undefined, 120_000);
        assertNoErrors(page, { faults: true });
        assertNoErrors(top, { faults: true });
        await page.closeAll();
        await top.closeAll();
      },
    );
  }

  // Page polish: one test per fix, each seen to fail without it.
  test(`${tag} polish: feed.html?feed=nope shows the 404's message`, T, async () => {
    const page = await chrome.newPage();
    await page.goto(pageUrl('feed.html?feed=nope'));
    await waitFor(page, () => !document.getElementById('problem').hidden && /no feed named "nope"/.test(document.getElementById('problem').textContent), undefined, 20_000);
    await page.closeAll();
  });

  test(`${tag} polish: an invalid filter in the URL is reported and the box marked`, T, async () => {
    const page = await chrome.newPage();
    await page.goto(pageUrl('feed.html?feed=winning_bids&filter=foo'));
    await waitFor(page, () => document.documentElement.dataset.ready === '1');
    assert.match(await page.textContent('#problem'), /not valid/);
    assert.equal(await page.getAttribute('#filter', 'aria-invalid'), 'true');
    assert.equal((await page.evaluate(() => window.tailgatePage.subs.winning_bids.filter)).length, 0, 'every row shown');
    await page.closeAll();
  });

  test(`${tag} polish: Apply with "foo" gives a message and keeps the filter`, T, async () => {
    const page = await chrome.newPage();
    await page.goto(pageUrl('feed.html?feed=winning_bids'));
    await waitFor(page, () => document.documentElement.dataset.ready === '1');
    await page.fill('#filter', 'amount=gte.10');
    await page.click('#filter-form button[type="submit"]');
    await waitFor(page, () => window.tailgatePage.subs.winning_bids.filter.length === 1);
    await page.fill('#filter', 'foo');
    await page.click('#filter-form button[type="submit"]');
    assert.match(await page.textContent('#problem'), /Not applied: "foo" is not a filter term/);
    assert.equal(await page.getAttribute('#filter', 'aria-invalid'), 'true');
    assert.equal((await page.evaluate(() => window.tailgatePage.subs.winning_bids.filter)).length, 1);
    assertNoErrors(page);
    await page.closeAll();
  });

  test(`${tag} polish: the top-10 bars never leave their card, from the first frame on`, T, async () => {
    const page = await chrome.newPage();
    // Every frame from the start: how far the lowest visible part of a bar
    // reaches below the card (a chart that clips hides what passes it).
    await page.addInitScript(() => {
      window.__barWorst = { px: -Infinity, frames: 0, bars: 0 };
      const t0 = performance.now();
      const frame = () => {
        const chart = document.getElementById('chart');
        const card = chart && chart.closest('.card');
        if (card) {
          const c = card.getBoundingClientRect();
          const ch = chart.getBoundingClientRect();
          const clips = getComputedStyle(chart).overflowY !== 'visible';
          const w = window.__barWorst;
          w.frames++;
          w.px = Math.max(w.px, ch.bottom - c.bottom);
          for (const b of chart.querySelectorAll('.bar')) {
            if (Number(getComputedStyle(b).opacity) < 0.05) continue;
            const r = b.getBoundingClientRect();
            const bottom = clips ? Math.min(r.bottom, ch.bottom) : r.bottom;
            if (clips && r.top >= ch.bottom) continue;
            w.bars = Math.max(w.bars, chart.querySelectorAll('.bar').length);
            w.px = Math.max(w.px, bottom - c.bottom);
          }
        }
        if (performance.now() - t0 < 6000) requestAnimationFrame(frame);
      };
      requestAnimationFrame(frame);
    });
    await page.goto(pageUrl('top10.html'));
    await waitFor(page, () => document.documentElement.dataset.ready === '1');
    await sleep(3000);
    const w = await page.evaluate(() => window.__barWorst);
    assert.ok(w.frames > 10 && w.bars >= 2, `bars seen in frames: ${JSON.stringify(w)}`);
    assert.ok(w.px <= 0, `the top-10 chart overflows its card by ${w.px}px (${w.frames} frames)`);
    await page.closeAll();
  });

  test(`${tag} polish: the Changes panel, full, shows whole entries only`, T, async () => {
    const page = await chrome.newPage();
    await page.goto(pageUrl('top10.html'));
    await waitFor(page, () => document.documentElement.dataset.ready === '1');
    // Full: as many entries as the page keeps (the cut shows once they pass the panel).
    await waitFor(page, () => document.querySelectorAll('#ticker li').length >= 8, undefined, 120_000);
    const cut = await page.evaluate(() => {
      const ul = document.getElementById('ticker');
      const last = ul.lastElementChild.getBoundingClientRect();
      return {
        px: Math.max(last.bottom - ul.getBoundingClientRect().bottom, last.bottom - ul.closest('.card').getBoundingClientRect().bottom),
        hidden: ul.scrollHeight - ul.clientHeight,
      };
    });
    assert.ok(cut.px <= 0.5, `the last Changes entry is cut by ${cut.px}px`);
    assert.ok(cut.hidden <= 1, `the Changes panel hides ${cut.hidden}px of its entries`);
    await page.closeAll();
  });

  test(`${tag} polish: nav labels are the headings of the pages they open, on every page`, T, async () => {
    const heading = new Map();
    for (const href of ['./', 'auction.html', 'top10.html', 'shop.html', 'feed.html?feed=winning_bids']) {
      const page = await chrome.newPage();
      await page.goto(pageUrl(href));
      const links = await page.$$eval('.topbar nav a', (as) => as.map((a) => [a.textContent.trim(), a.getAttribute('href')]));
      assert.ok(links.length >= 3, `${href}: a nav`);
      for (const [label, to] of links) {
        if (to === './') continue;
        if (!heading.has(to)) {
          const p = await chrome.newPage();
          await p.goto(pageUrl(to));
          heading.set(to, (await p.textContent('h1')).trim());
          await p.closeAll();
        }
        assert.equal(label, heading.get(to), `${href}: nav "${label}" opens ${to}, headed "${heading.get(to)}"`);
      }
      await page.closeAll();
    }
  });

  test(`${tag} polish: the feeds list at 1280 px clips no cell`, T, async () => {
    const page = await chrome.newPage({ viewport: { width: 1280, height: 900 } });
    await page.goto(pageUrl('./'));
    await waitFor(page, () => document.documentElement.dataset.ready === '1');
    const clipped = await page.evaluate(() =>
      [...document.querySelectorAll('#feeds td')].filter((td) => td.scrollWidth > td.clientWidth + 1).map((td) => td.dataset.col || td.textContent.slice(0, 20)),
    );
    assert.deepEqual(clipped, []);
    const wrap = await page.evaluate(() => { const w = document.querySelector('#feeds').closest('.table-wrap'); return w.scrollWidth - w.clientWidth; });
    assert.ok(wrap <= 1, `the feeds table scrolls sideways by ${wrap}px at 1280 px`);
    await page.closeAll();
  });

  test(`${tag} every page renders without errors; screenshots (desktop, phone)`, T, async () => {
    const pages = [
      ['index', './'],
      ['auction', 'auction.html'],
      ['top10', 'top10.html'],
      ['feed', 'feed.html?feed=winning_bids'],
    ];
    for (const [name, url] of pages) {
      for (const [dev, opts] of [
        ['desktop', { viewport: { width: 1280, height: 900 } }],
        ['phone', { viewport: { width: 390, height: 844 }, mobile: true }],
      ]) {
        const page = await chrome.newPage(opts);
        await page.goto(pageUrl(url));
        await waitFor(page, () => document.documentElement.dataset.ready === '1');
        await sleep(1500); // some batches, some highlights
        const badge = await page.getAttribute('#badge', 'data-state');
        assert.equal(badge, 'live', `${name} ${dev}: badge`);
        if (dev === 'phone') {
          const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
          assert.ok(overflow <= 1, `${name} on a phone scrolls sideways by ${overflow}px`);
        }
        await shot(page, `${name}-${dev}`);
        assertNoErrors(page);
        await page.closeAll();
      }
    }
  });
});
