// index.js - the feeds list (GET /feeds), refreshed every two seconds.
import { listFeeds, backoffDelay } from './tailgate.js';
import { apiBase, StateBadge, fmtNumber, fmtAgo, flash, markReady, showProblem } from './ui.js';

const INTERVAL = 2000;
const badge = new StateBadge(document.getElementById('badge'));
const onState = badge.track('feeds list');
const tbody = document.querySelector('#feeds tbody');
const rows = new Map(); // feed name -> <tr>
let failures = 0;
let lastOk = null;

document.getElementById('api').textContent = apiBase();
document.getElementById('api2').textContent = apiBase();

const PAGES = {
  winning_bids: 'auction.html',
  top_buyers: 'top10.html',
  auction_stats: 'top10.html',
  item_summary: 'shop.html',
  low_stock: 'shop.html',
  orders_per_minute: 'shop.html',
};

function cell(tr, i, text, cls) {
  const td = tr.children[i];
  if (td.textContent !== text) {
    const had = td.textContent !== '';
    td.textContent = text;
    if (had) flash(td, 'changed');
  }
  if (cls) td.className = cls;
  return td;
}

function render(feeds) {
  const seen = new Set();
  for (const f of feeds) {
    seen.add(f.name);
    let tr = rows.get(f.name);
    if (!tr) {
      tr = document.createElement('tr');
      tr.dataset.feed = f.name;
      tr.innerHTML =
        '<td><a></a></td><td class="num" data-col="rows"></td><td class="mono" data-col="cursor"></td>' +
        '<td data-col="live"><span class="live-dot"></span> <span></span></td><td data-priority="low" data-col="columns"></td>';
      const a = tr.querySelector('a');
      a.textContent = f.name;
      a.href = 'feed.html?feed=' + encodeURIComponent(f.name);
      if (PAGES[f.name]) {
        const demo = document.createElement('a');
        demo.href = PAGES[f.name];
        demo.className = 'small';
        demo.textContent = 'demo';
        tr.children[0].append(' · ', demo);
      }
      tr.children[4].replaceChildren(
        ...f.columns.map((c) => {
          const s = document.createElement('span');
          s.className = 'chip';
          s.textContent = c.type ? `${c.name}: ${c.type}` : c.name;
          return s;
        }),
      );
      tbody.appendChild(tr);
      rows.set(f.name, tr);
    }
    cell(tr, 1, f.rows == null ? '—' : fmtNumber(f.rows));
    tr.children[1].dataset.value = f.rows == null ? '' : String(f.rows);
    cell(tr, 2, f.cursor ?? '—');
    const dot = tr.children[3].querySelector('.live-dot');
    dot.className = 'live-dot ' + (f.live ? 'on' : f.live === false ? 'off' : '');
    tr.children[3].lastElementChild.textContent = f.live ? 'live' : f.live === false ? f.state || 'down' : '?';
  }
  for (const [name, tr] of rows)
    if (!seen.has(name)) {
      tr.remove();
      rows.delete(name);
    }
  if (!feeds.length && !tbody.querySelector('.empty')) {
    tbody.innerHTML = '<tr class="empty"><td colspan="5" class="muted">No feeds configured.</td></tr>';
  } else if (feeds.length) tbody.querySelector('.empty')?.remove();
}

async function refresh() {
  let delay = INTERVAL;
  try {
    const feeds = await listFeeds(apiBase());
    failures = 0;
    lastOk = Date.now();
    render(feeds);
    window.tailgatePage.feeds = feeds;
    showProblem('');
    onState('live', {});
    markReady();
  } catch (e) {
    failures++;
    delay = backoffDelay(failures, { base: 1000, cap: 30000 });
    onState(failures >= 5 ? 'stalled' : 'reconnecting', { failures, delay, error: e.message });
    if (failures >= 3) showProblem(`Cannot read the feeds list (${e.message}); retrying.`);
  }
  setTimeout(refresh, delay);
}

setInterval(() => {
  document.getElementById('updated').textContent = lastOk ? 'updated ' + fmtAgo(lastOk) : '';
}, 1000);
refresh();
