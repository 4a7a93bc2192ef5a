// feed.js - any feed as a live table: feed.html?feed=NAME[&filter=...].
import { subscribe, encodeFilter } from './tailgate.js';
import { LiveTable } from './livetable.js';
import { StateBadge, feedUrl, params, transport, expose, markReady, fmtNumber, showProblem, outageText } from './ui.js';

const $ = (id) => document.getElementById(id);
const FEED = params.get('feed');
const badge = new StateBadge($('badge'));

// A filter as typed: every &-separated term must be column=op.value (the
// client's parser would take a bare "foo" for no filter at all).
function parseFilterText(text) {
  for (const term of text.split('&')) {
    if (!term) continue;
    const eq = term.indexOf('=');
    if (eq < 1 || eq === term.length - 1)
      throw new TypeError(`"${term}" is not a filter term: write column=op.value, e.g. amount=gte.50`);
  }
  encodeFilter(text); // throws on an unknown operator or a term without op.value
  return text;
}
const filterBox = () => $('filter');
function markFilter(err) {
  if (err) filterBox().setAttribute('aria-invalid', 'true');
  else filterBox().removeAttribute('aria-invalid');
}

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
  let badFilter = null;
  try {
    parseFilterText(initial);
  } catch (err) {
    badFilter = `The filter in the address is not valid (${err.message.replace(/^tailgate: /, '')}): showing every row.`;
    showProblem(badFilter);
    markFilter(err);
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
      else if (d.status === 404)
        showProblem(`There is no feed named "${FEED}" (${String(d.error).replace(/^tailgate: /, '')}). Pick one from the feeds list; retrying in case it appears.`);
      else if (s === 'live') showProblem(badFilter || '');
      else if (outageText(s, d)) showProblem(outageText(s, d, FEED));
    },
  });
  expose(FEED, sub);
  expose('table', table);
  $('filter-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const text = $('filter').value.trim();
    try {
      sub.setFilter(parseFilterText(text));
      badFilter = null;
      markFilter(null);
      showProblem('');
      const u = new URL(location.href);
      if (text) u.searchParams.set('filter', encodeFilter(text));
      else u.searchParams.delete('filter');
      history.replaceState(null, '', u);
    } catch (err) {
      markFilter(err);
      showProblem(`Not applied: ${err.message.replace(/^tailgate: /, '')}`);
    }
  });
  $('show-all').addEventListener('click', () => table.setLimit(Infinity));
}
