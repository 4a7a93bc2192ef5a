// top10.js - a live dashboard for the auction house: total counters
// (feed auction_stats, one row) and a top-10 buyers bar chart (feed
// top_buyers), both moved by each batch's changeset.
//
// Both feeds come in one subscription (follow.js; GET
// /feeds/top_buyers,auction_stats), every update holding both as of one
// moment, so the counters and the chart never disagree (?together=0: one
// subscription per feed).
import { followFeeds } from './follow.js';
import { BarChart } from './barchart.js';
import { StateBadge, feedUrl, params, expose, fmtNumber, fmtTime, humanize, isNumericType, flash } from './ui.js';

const TOP = params.get('top_feed') || 'top_buyers';
const STATS = params.get('stats_feed') || 'auction_stats';
const $ = (id) => document.getElementById(id);
const badge = new StateBadge($('badge'));
$('feed-urls').textContent = `${feedUrl(TOP)}, ${feedUrl(STATS)}`;

// ---- the chart --------------------------------------------------------------
// top_buyers(buyer, name, wins, total_amount): ranked by wins, then total,
// then the lower buyer id (the view's own order; it has no rank column).
const num = (v) => (v == null ? 0 : Number(v));
const chart = new BarChart($('chart'), {
  top: 10,
  key: (o) => o.buyer,
  label: (o) => o.name || `buyer #${o.buyer}`,
  value: (o) => num(o.wins),
  text: (o) => `${fmtNumber(o.wins)} win${num(o.wins) === 1 ? '' : 's'}` + (o.total_amount == null ? '' : ` · $${fmtNumber(o.total_amount)}`),
  compare: (a, b) => num(b.wins) - num(a.wins) || num(b.total_amount) - num(a.total_amount) || num(a.buyer) - num(b.buyer),
});
expose('chart', chart);

// The ticker: a batch's deleted and inserted rows of one buyer are one change.
// Each entry is stamped with when its batch arrived (a batch carries no
// commit time: its timestamp is the upstream's opaque cursor).
const ticker = $('ticker');
function tick(batch, columns) {
  const idx = (n) => columns.findIndex((c) => c.name === n);
  const [ib, iname, iw] = [idx('buyer'), idx('name'), idx('wins')];
  const who = (r) => r[iname] || `buyer #${r[ib]}`;
  const old = new Map(batch.deleted.map((r) => [r[ib], r]));
  const lines = [];
  for (const r of batch.inserted) {
    const o = old.get(r[ib]);
    old.delete(r[ib]);
    const up = o && Number(r[iw]) >= Number(o[iw]);
    lines.push(
      o
        ? `<span class="${up ? 'ins' : 'del'}">${up ? '▲' : '▼'}</span> ${esc(who(r))}: ${o[iw]} → ${r[iw]} wins`
        : `<span class="ins">+</span> ${esc(who(r))} enters with ${r[iw]} wins`,
    );
  }
  for (const r of old.values()) lines.push(`<span class="del">-</span> ${esc(who(r))} drops out`);
  if (!lines.length) return;
  const now = new Date();
  const li = document.createElement('li');
  li.dataset.at = String(now.getTime());
  li.innerHTML = `<span class="muted mono">${fmtTime(now.toISOString())}</span> ` + lines.join('; ');
  ticker.prepend(li);
  while (ticker.children.length > 8) ticker.lastElementChild.remove();
}
const esc = (s) => String(s).replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c]);

function onTop(batch, change) {
  chart.apply(change);
  // Only what happens while the page watches: the snapshot and the
  // catch-up a (re)connection brings go into the chart, not the list.
  if (change.live) tick(batch, change.columns);
}

// ---- the counters -------------------------------------------------------------
// auction_stats is one row; each numeric column (but id) is a tile whose
// number counts up to its new value.
const tiles = new Map();
function tile(name) {
  let t = tiles.get(name);
  if (!t) {
    const el = document.createElement('div');
    el.className = 'counter';
    el.dataset.col = name;
    el.innerHTML = '<div class="c-label"></div><div class="c-value">0</div>';
    el.querySelector('.c-label').textContent = humanize(name);
    $('counters').appendChild(el);
    t = { el, value: el.querySelector('.c-value'), shown: 0, anim: 0, money: money(name) };
    tiles.set(name, t);
  }
  return t;
}
const money = (name) => /amount|total/.test(name);
function countTo(t, to, instant) {
  const from = t.shown;
  t.el.dataset.value = String(to);
  cancelAnimationFrame(t.anim);
  if (instant || !Number.isFinite(from) || !Number.isFinite(to) || from === to) {
    t.shown = to;
    t.value.textContent = (t.money ? '$' : '') + fmtNumber(to);
    return;
  }
  flash(t.value, 'bumped');
  if (document.hidden) {
    t.shown = to;
    t.value.textContent = (t.money ? '$' : '') + fmtNumber(to);
    return;
  }
  const t0 = performance.now();
  const step = (now) => {
    const k = Math.min(1, (now - t0) / 600);
    const e = 1 - (1 - k) ** 3;
    t.shown = k === 1 ? to : from + (to - from) * e;
    t.value.textContent = (t.money ? '$' : '') + fmtNumber(Math.round(t.shown));
    if (k < 1) t.anim = requestAnimationFrame(step);
  };
  t.anim = requestAnimationFrame(step);
}

function onStats(row, change) {
  const instant = change.kind === 'snapshot';
  for (const c of change.columns) {
    if (c.name === 'id' || !isNumericType(c.type)) continue;
    countTo(tile(c.name), row ? Number(row[c.name]) : 0, instant);
  }
}

followFeeds(
  {
    [TOP]: onTop,
    [STATS]: (batch, change, sub) => onStats(sub.objects()[0], change),
  },
  badge,
);
