// feed.js - any feed as a live table: feed.html?feed=NAME[&filter=...].
import { subscribe, encodeFilter } from './tailgate.js';
import { LiveTable } from './livetable.js';
import { StateBadge, feedUrl, params, transport, expose, markReady, fmtNumber, showProblem } from './ui.js';

const $ = (id) => document.getElementById(id);
const FEED = params.get('feed');
const badge = new StateBadge($('badge'));

if (!FEED) {
  showProblem('No feed given: open this page as feed.html?feed=NAME (see the feeds list).');
  badge.set('page', 'failed', { error: 'no feed' });
} else {
  document.title = `${FEED} — tailgate`;
  $('title').textContent = FEED;
  const table = new LiveTable($('rows'), {
    limit: params.get('limit') === 'all' ? Infinity : Number(params.get('limit')) || 200,
    onChange(t) {
      $('s-rows').textContent = fmtNumber(t.size);
      $('more').hidden = t.size <= t.limit;
      $('shown').textContent = `${fmtNumber(Math.min(t.size, t.limit))} of ${fmtNumber(t.size)}`;
    },
  });
  let initial = params.get('filter') || '';
  $('filter').value = initial;
  try {
    encodeFilter(initial);
  } catch (err) {
    showProblem(`${err.message}: showing every row`);
    initial = '';
  }
  const onState = badge.track(FEED);
  const sub = subscribe(feedUrl(FEED), {
    transport: transport(),
    coalesce: true,
    filter: initial,
    onBatch(batch, change) {
      if (!table.sort && change.columns.length) table.sort = { col: change.columns[0].name, dir: 'desc' };
      table.apply(change);
      $('s-cursor').textContent = change.cursor ?? '—';
      $('s-batches').textContent = fmtNumber(sub.stats.batches);
      if (change.kind !== 'delta') markReady();
    },
    onState(s, d) {
      onState(s, d);
      if (s === 'failed') showProblem(`The server refused the request: ${d.error}`);
      else if (s === 'live') showProblem('');
    },
  });
  expose(FEED, sub);
  expose('table', table);
  $('filter-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const text = $('filter').value.trim();
    try {
      sub.setFilter(text);
      showProblem('');
      const u = new URL(location.href);
      if (text) u.searchParams.set('filter', encodeFilter(text));
      else u.searchParams.delete('filter');
      history.replaceState(null, '', u);
    } catch (err) {
      showProblem(err.message);
    }
  });
  $('show-all').addEventListener('click', () => table.setLimit(Infinity));
}
