// shop.js - the shop's live dashboard : the funnel from product
// pageviews to orders and the item summary (feed item_summary), the
// orders-per-minute trend (orders_per_minute), top sellers with their
// inventory (item_summary again), and the low-stock panel (low_stock),
// which highlights each new alert.  All three feeds in one multi-feed
// subscription (follow.js): one connection, every panel as of one moment.
import { followFeeds } from './follow.js';
import { LiveTable } from './livetable.js';
import { BarChart } from './barchart.js';
import { StateBadge, feedUrl, expose, fmtNumber, fmtTime, parseTimestamp, showProblem, flash } from './ui.js';

const $ = (id) => document.getElementById(id);
const FEEDS = ['item_summary', 'orders_per_minute', 'low_stock'];
const badge = new StateBadge($('badge'));
const num = (v) => (v == null ? 0 : Number(v));
const money = (v) => (v == null ? '—' : '$' + fmtNumber(Math.round(Number(v))));
const pct = (v) => (v == null ? '—' : (Number(v) * 100).toFixed(2) + ' %');
const esc = (s) => String(s).replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c]);
$('feed-urls').textContent = FEEDS.map(feedUrl).join(', ');

// ---- item summary, funnel, top sellers (item_summary) -----------------------
const table = new LiveTable($('items'), {
  key: 'item_id',
  sort: { col: 'conversion_rate', dir: 'desc' },
  limit: 25,
  labels: { item_id: 'Item', conversion_rate: 'Conversion', items_sold: 'Sold' },
  priority: { item_id: 'low', category: 'low', revenue: 'low', inventory: 'low' },
  format: { conversion_rate: pct, revenue: money },
});
expose('table', table);
const sellers = new BarChart($('sellers'), {
  top: 10,
  key: (o) => o.item_id,
  label: (o) => o.name,
  value: (o) => num(o.items_sold),
  text: (o) => `${fmtNumber(o.items_sold)} sold · ${fmtNumber(o.inventory)} in stock`,
  compare: (a, b) => num(b.items_sold) - num(a.items_sold) || num(a.item_id) - num(b.item_id),
});
expose('sellers', sellers);

function funnel(sub) {
  let views = 0, orders = 0, items = 0, revenue = 0;
  for (const o of sub.objects()) {
    views += num(o.pageviews);
    orders += num(o.orders);
    items += num(o.items_sold);
    revenue += num(o.revenue);
  }
  const set = (id, text, value) => {
    const el = $(id);
    if (el.textContent !== text) {
      el.textContent = text;
      el.parentElement.dataset.value = String(value);
    }
  };
  set('f-pageviews', fmtNumber(views), views);
  set('f-orders', fmtNumber(orders), orders);
  set('f-items', fmtNumber(items), items);
  set('f-conv', views ? ((orders / views) * 100).toFixed(2) + ' %' : '—', views ? orders / views : '');
  set('f-revenue', money(revenue), Math.round(revenue * 100) / 100);
  $('fb-views').style.width = views ? '100%' : '0';
  $('fb-orders').style.width = views ? Math.max(0.5, (orders / views) * 100 * 10) + '%' : '0';
  $('fb-orders').title = 'orders per pageview, x10';
}

const onItems = (batch, change, sub) => {
  table.apply(change);
  sellers.apply(change);
  funnel(sub);
};

// ---- orders per minute (orders_per_minute) ----------------------------------
const SVG = 'http://www.w3.org/2000/svg';
function drawTrend(sub) {
  const rows = sub
    .objects()
    .map((o) => ({ t: parseTimestamp(o.minute), n: num(o.orders) }))
    .filter((r) => !Number.isNaN(r.t))
    .sort((a, b) => a.t - b.t);
  const svg = $('trend');
  svg.replaceChildren();
  const W = 600, H = 180;
  const axis = document.createElementNS(SVG, 'line');
  axis.setAttribute('class', 'axis');
  axis.setAttribute('x1', 0), axis.setAttribute('x2', W), axis.setAttribute('y1', H - 1), axis.setAttribute('y2', H - 1);
  svg.appendChild(axis);
  svg.dataset.points = String(rows.length);
  if (!rows.length) {
    $('trend-text').textContent = 'No orders in the last hour yet.';
    return;
  }
  const end = Math.max(rows[rows.length - 1].t, Date.now() - (Date.now() % 60000));
  const start = end - 59 * 60000;
  const max = Math.max(1, ...rows.map((r) => r.n));
  const x = (t) => ((t - start) / (60 * 60000)) * W + W / 120;
  const y = (n) => H - 4 - (n / max) * (H - 12);
  // One bar per minute, and a line through their tops.
  const bw = W / 60;
  const pts = [];
  for (const r of rows.filter((r) => r.t >= start)) {
    const bar = document.createElementNS(SVG, 'rect');
    bar.setAttribute('class', 'area');
    bar.setAttribute('x', (x(r.t) - bw / 2 + 1).toFixed(1));
    bar.setAttribute('width', (bw - 2).toFixed(1));
    bar.setAttribute('y', y(r.n).toFixed(1));
    bar.setAttribute('height', (H - y(r.n)).toFixed(1));
    bar.dataset.minute = String(r.t);
    bar.dataset.orders = String(r.n);
    svg.appendChild(bar);
    pts.push(`${x(r.t).toFixed(1)},${y(r.n).toFixed(1)}`);
  }
  const line = document.createElementNS(SVG, 'polyline');
  line.setAttribute('class', 'line');
  line.setAttribute('points', pts.join(' '));
  svg.appendChild(line);
  const latest = rows[rows.length - 1];
  $('trend-text').textContent = `${fmtNumber(latest.n)} orders in the minute of ${fmtTime(new Date(latest.t).toISOString())}; peak ${fmtNumber(max)}/min.`;
}
const onTrend = (batch, change, sub) => drawTrend(sub);

// ---- low stock (low_stock) ------------------------------------------------------
// A new alert: an item inserted that was not in the panel (an item already
// low whose inventory drops further is an update, not a new alert).
const lowItems = new Map(); // item_id -> <li>
const alerts = [];
window.tailgatePage.alerts = alerts;
function renderLow(sub, change) {
  const rows = sub.objects().sort((a, b) => num(a.inventory) - num(b.inventory) || num(a.item_id) - num(b.item_id));
  const seen = new Set();
  const list = $('low');
  for (const o of rows) {
    const id = String(o.item_id);
    seen.add(id);
    let li = lowItems.get(id);
    const isNew = !li;
    if (!li) {
      li = document.createElement('li');
      li.dataset.item = id;
      lowItems.set(id, li);
    }
    li.dataset.inventory = String(o.inventory);
    li.innerHTML = `<span>${esc(o.name)} <span class="muted small">${esc(o.category)}</span></span><span class="inv">${fmtNumber(o.inventory)} left</span>`;
    list.appendChild(li); // in order
    if (isNew && change.live) {
      li.classList.add('alert-new');
      li.dataset.alert = 'new';
      setTimeout(() => {
        li.classList.remove('alert-new');
        delete li.dataset.alert;
      }, 10000);
      alerts.push({ item_id: o.item_id, inventory: o.inventory, at: Date.now() });
      const a = document.createElement('li');
      a.dataset.item = id;
      a.innerHTML = `<span class="muted mono">${fmtTime(new Date().toISOString())}</span> <span class="del">▼</span> ${esc(o.name)} down to ${fmtNumber(o.inventory)}`;
      $('alerts').prepend(a);
      while ($('alerts').children.length > 8) $('alerts').lastElementChild.remove();
    } else if (!isNew) flash(li.querySelector('.inv'), 'cell-changed');
  }
  for (const [id, li] of lowItems)
    if (!seen.has(id)) {
      li.remove();
      lowItems.delete(id);
      if (change.live) {
        const a = document.createElement('li');
        a.innerHTML = `<span class="muted mono">${fmtTime(new Date().toISOString())}</span> <span class="ins">▲</span> item ${esc(id)} restocked`;
        $('alerts').prepend(a);
        while ($('alerts').children.length > 8) $('alerts').lastElementChild.remove();
      }
    }
  $('low-empty').hidden = rows.length > 0;
}
followFeeds(
  {
    item_summary: onItems,
    orders_per_minute: onTrend,
    low_stock: (batch, change, sub) => renderLow(sub, change),
  },
  badge,
);
