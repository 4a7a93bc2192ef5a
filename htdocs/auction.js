// auction.js - the winning-bids table (seeds 000/001) with a server-side
// amount filter.  Changing the filter re-subscribes in place: the new
// filtered snapshot is swapped in as one diff, so the table does not flash.
import { subscribe } from './tailgate.js';
import { LiveTable } from './livetable.js';
import { StateBadge, feedUrl, params, transport, expose, markReady, fmtNumber, fmtAgo, showProblem, outageText } from './ui.js';

const FEED = params.get('feed') || 'winning_bids';
const LIMIT = params.get('limit') === 'all' ? Infinity : Number(params.get('limit')) || 100;
const $ = (id) => document.getElementById(id);

const badge = new StateBadge($('badge'));
const money = (v) => (v == null ? '—' : '$' + fmtNumber(v));
const user = (v) => (v == null ? '—' : '#' + v);

let lastBatchAt = null;
const table = new LiveTable($('bids'), {
  key: 'auction_id',
  sort: { col: 'end_time', dir: 'desc' },
  limit: LIMIT,
  labels: { auction_id: 'Auction', bid_id: 'Bid', end_time: 'Ended', bid_time: 'Bid time' },
  priority: { auction_id: 'low', bid_id: 'low', seller: 'low', bid_time: 'low' },
  format: { amount: money, buyer: user, seller: user },
  onChange: summarize,
  onSort: (s) => ($('sort').value = `${s.col}:${s.dir}`),
});

function summarize() {
  let total = 0, max = null, n = 0;
  for (const o of table.items) {
    const a = Number(o.amount);
    if (Number.isFinite(a)) {
      total += a;
      n++;
      if (max === null || a > max) max = a;
    }
  }
  $('s-rows').textContent = fmtNumber(table.size);
  $('s-total').textContent = money(total);
  $('s-avg').textContent = n ? money(Math.round((total / n) * 10) / 10) : '—';
  $('s-max').textContent = money(max);
  const shown = Math.min(table.size, table.limit);
  $('more').hidden = shown >= table.size;
  $('shown').textContent = fmtNumber(shown);
  $('total').textContent = fmtNumber(table.size);
}

// ---- the filter: ?min=N in the page URL, amount=gte.N on the wire ----
const initialMin = Math.max(0, Number(params.get('min')) || 0);
const filterFor = (min) => (min > 0 ? { amount: ['gte', min] } : null);
function showFilter(min) {
  $('filter-text').textContent = min > 0 ? `amount=gte.${min}` : 'none';
}

const badgeState = badge.track(FEED);
const sub = subscribe(feedUrl(FEED), {
  transport: transport(),
  coalesce: true,
  filter: filterFor(initialMin),
  onBatch(batch, change) {
    table.apply(change);
    lastBatchAt = Date.now();
    if (change.kind === 'snapshot' || change.kind === 'resync') markReady();
  },
  onState(state, detail) {
    badgeState(state, detail);
    if (state === 'failed') showProblem(`The server refused the request: ${detail.error}`);
    else if (state === 'live') showProblem('');
    else if (outageText(state, detail)) showProblem(outageText(state, detail, FEED));
  },
});
expose(FEED, sub);
expose('table', table);
$('feed-url').textContent = feedUrl(FEED);

const range = $('min-range'), num = $('min');
range.value = num.value = String(initialMin);
showFilter(initialMin);
let timer = null;
function setMin(v, from) {
  const min = Math.max(0, Math.floor(Number(v) || 0));
  if (from !== range) range.value = String(Math.min(min, Number(range.max)));
  if (from !== num) num.value = String(min);
  showFilter(min);
  clearTimeout(timer);
  // Debounced: dragging the slider re-subscribes once, when it rests.
  timer = setTimeout(() => {
    sub.setFilter(filterFor(min));
    const u = new URL(location.href);
    if (min > 0) u.searchParams.set('min', String(min));
    else u.searchParams.delete('min');
    history.replaceState(null, '', u);
  }, 250);
}
range.addEventListener('input', () => setMin(range.value, range));
num.addEventListener('input', () => setMin(num.value, num));

$('sort').addEventListener('change', () => {
  const [col, dir] = $('sort').value.split(':');
  table.setSort(col, dir);
});
$('show-all').addEventListener('click', () => table.setLimit(Infinity));

setInterval(() => {
  $('s-updated').textContent = lastBatchAt ? 'last batch ' + fmtAgo(lastBatchAt) : '';
}, 1000);
