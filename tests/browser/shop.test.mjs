// The shop dashboard (htdocs/shop.html) in headless Chromium against the
// real stack (tests/browser/shop_stack.py: PostgreSQL with sql/shop/shop.sql,
// tailgated with the shop's feeds, tailgate-shopgen, nginx + tailgate-fcgi):
// it shows live data (item summary sorted by conversion rate, the funnel
// equal to the feed's sums, the trend chart, top sellers), and a purchase
// that takes an item below the threshold appears as a highlighted new
// low-stock alert; the page follows its three feeds in one long-poll
// (GET /feeds/item_summary,orders_per_minute,low_stock) and its panels agree
// with each other and with that request at the page's cursor.  Skipped when the build has no shop (shop_stack.py --check).

import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import { launch } from './chromium.mjs';
import { expectPageAtFeeds, watchApi, expectOneConnection } from './multi.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const ART = path.resolve(here, '../artifacts');
const helper = path.join(here, 'shop_stack.py');
const FEEDS = ['item_summary', 'orders_per_minute', 'low_stock'];
const usable = spawnSync('python3', [helper, '--check']).status === 0 && !process.env.TAILGATE_URL;

function startShop() {
  const child = spawn('python3', [helper], { stdio: ['pipe', 'pipe', 'inherit'] });
  const lines = readline.createInterface({ input: child.stdout });
  const waiting = [];
  lines.on('line', (l) => {
    try {
      waiting.shift()?.(JSON.parse(l));
    } catch {
      /* not ours */
    }
  });
  const exited = new Promise((r) => child.on('exit', (c) => r(c)));
  const next = () => Promise.race([new Promise((r) => waiting.push(r)), exited.then((c) => ({ error: `shop_stack.py exited (${c})` }))]);
  const call = async (cmd) => {
    const p = next();
    child.stdin.write(cmd + '\n');
    const r = await p;
    if (r.error) throw new Error(`${cmd}: ${r.error}`);
    return r;
  };
  return next().then((up) => {
    if (up.error) throw new Error(up.error);
    return {
      url: up.url,
      call,
      stop: async () => {
        await call('stop').catch(() => {});
        child.stdin.end();
        await exited;
      },
    };
  });
}

describe('shop dashboard [real]', { skip: !usable && 'no shop build (tailgate-shopgen) or an external stack' }, () => {
  let shop, chrome;
  before(async () => {
    shop = await startShop();
    chrome = await launch();
  });
  after(async () => {
    await chrome?.close();
    await shop?.stop();
  });

  test('shows live data and highlights a low-stock alert caused by a purchase', { timeout: 180_000 }, async () => {
    const page = await chrome.newPage();
    const w = watchApi(page, '/feeds');
    await page.goto(new URL('shop.html', shop.url).href);
    await page.waitForFunction(() => document.documentElement.dataset.ready === '1', undefined, { timeout: 60_000 });
    assert.ok(await page.evaluate(() => !!window.tailgatePage.subs.together), 'the page follows its feeds in one subscription');
    // Live: item_summary batches keep coming (pageviews every tick).
    const b0 = await page.evaluate(() => window.tailgatePage.subs.item_summary.stats.batches);
    await page.waitForFunction((b) => window.tailgatePage.subs.item_summary.stats.batches > b + 2, b0, { timeout: 30_000 });
    // The item table is sorted by conversion rate, highest first.
    const rates = await page.$$eval('#items tbody tr', (trs) => trs.map((tr) => JSON.parse(tr.dataset.key)));
    const cols = await page.evaluate(() => window.tailgatePage.subs.item_summary.toObject ? window.tailgatePage.subs.table.columns.map((c) => c.name) : []);
    const ci = cols.indexOf('conversion_rate');
    assert.ok(rates.length > 0 && ci >= 0, 'the item summary has rows');
    const vals = rates.map((r) => (r[ci] == null ? -1 : Number(r[ci])));
    const shown = await page.evaluate(() => window.tailgatePage.subs.table.table.dataset.shown);
    for (let i = 1; i < vals.length; i++)
      assert.ok(vals[i - 1] >= vals[i], `sorted by conversion rate at row ${i}: ${vals.join(' ')} (${rates.length} rows in the DOM, ${shown} shown; page errors: ${page.errors?.join('; ') || 'none'})`);
    // The funnel equals the sums of the rows the page holds.
    const f = await page.evaluate(() => {
      const objs = window.tailgatePage.subs.item_summary.objects();
      const sum = (k) => objs.reduce((a, o) => a + Number(o[k] || 0), 0);
      return {
        want: { pageviews: String(sum('pageviews')), orders: String(sum('orders')) },
        shown: {
          pageviews: document.querySelector('#funnel [data-col="pageviews"]').dataset.value,
          orders: document.querySelector('#funnel [data-col="orders"]').dataset.value,
        },
      };
    });
    assert.deepEqual(f.shown, f.want, 'the funnel shows the feed\'s sums');
    assert.ok(Number(f.want.pageviews) > 0, 'pageviews counted');
    // One long-poll for the three feeds, never one per feed.
    await expectOneConnection(page, w, '/feeds', FEEDS);
    // At the page's cursor: the funnel is item_summary's sums, the table
    // holds its rows, the low-stock panel is low_stock, and each low item's
    // inventory is the one item_summary has (one transaction moves both).
    await page.waitForFunction(() => document.querySelectorAll('#sellers .bar').length > 0, undefined, { timeout: 30_000 });
    await expectPageAtFeeds(
      page,
      FEEDS,
      () => ({
        funnel: Object.fromEntries([...document.querySelectorAll('#funnel [data-col]')].map((e) => [e.dataset.col, e.dataset.value])),
        tableSize: window.tailgatePage.subs.table.size,
        low: [...document.querySelectorAll('#low li')].map((li) => [li.dataset.item, li.dataset.inventory]),
        sellers: [...document.querySelectorAll('#sellers .bar:not(.leaving)')].map((b) => b.dataset.key).length,
        summaryInv: Object.fromEntries(window.tailgatePage.subs.item_summary.objects().map((o) => [String(o.item_id), String(o.inventory)])),
      }),
      (shown, feeds) => {
        const items = feeds.item_summary.objects;
        const sum = (k) => items.reduce((a, o) => a + Number(o[k] || 0), 0);
        assert.equal(shown.funnel.pageviews, String(sum('pageviews')), 'funnel pageviews = item_summary at the cursor');
        assert.equal(shown.funnel.orders, String(sum('orders')), 'funnel orders = item_summary at the cursor');
        assert.equal(shown.tableSize, items.length, 'the item table holds item_summary at the cursor');
        const want = feeds.low_stock.objects
          .slice()
          .sort((a, b) => Number(a.inventory) - Number(b.inventory) || Number(a.item_id) - Number(b.item_id))
          .map((o) => [String(o.item_id), String(o.inventory)]);
        assert.deepEqual(shown.low, want, 'the low-stock panel = low_stock at the cursor');
        for (const [id, inv] of shown.low) assert.equal(shown.summaryInv[id], inv, `item ${id}: the low-stock panel and the item summary disagree on its inventory`);
        assert.equal(shown.sellers, Math.min(10, items.length), 'top sellers: ten bars');
      },
      { api: new URL('feeds', shop.url).href },
    );
    // Top sellers: bars; the trend: a line once a minute has orders.
    await page.waitForFunction(() => document.querySelectorAll('#sellers .bar').length > 0, undefined, { timeout: 30_000 });
    await page.waitForFunction(() => Number(document.getElementById('trend').dataset.points) > 0, undefined, { timeout: 30_000 });
    // A purchase takes an item below the threshold: a new, highlighted alert.
    const { item_id } = await shop.call('make-low');
    await page.waitForFunction(
      (id) => {
        const li = document.querySelector(`#low li[data-item="${id}"]`);
        return li && li.classList.contains('alert-new') && window.tailgatePage.alerts.some((a) => String(a.item_id) === String(id));
      },
      item_id,
      { timeout: 30_000, polling: 100 },
    );
    const inv = await page.getAttribute(`#low li[data-item="${item_id}"]`, 'data-inventory');
    assert.equal(inv, '2', 'the alert shows the inventory the purchase left');
    assert.ok(await page.$(`#alerts li[data-item="${item_id}"]`), 'the alert is in the alerts list');
    fs.mkdirSync(ART, { recursive: true });
    await page.screenshot({ path: path.join(ART, 'shop-desktop.png'), fullPage: true });
    assert.equal(await page.getAttribute('#badge', 'data-state'), 'live');
    assert.deepEqual(page.errors, []);
    await page.closeAll();
  });
});
