// barchart.js - a top-N horizontal bar chart fed by Vega-style changesets
// (a live top-10 chart, without Vega): the chart keeps its own dataset
// of the objects tailgate.js hands out, removes by identity and inserts as
// each batch says, then moves, grows and shrinks the bars with CSS
// transitions.  One element per key (a buyer): a buyer whose row is replaced
// (wins 4 -> 5) keeps its bar, which slides to its new rank.

import { flash } from './ui.js';

export class BarChart {
  /**
   * options:
   *   key(o)      identity of a bar across updates (e.g. o.buyer)
   *   label(o)    text beside the bar
   *   value(o)    the bar's length
   *   text(o)     the value as shown (default: value(o))
   *   compare(a,b) ranking (default: value descending)
   *   top         bars shown (10)
   */
  constructor(el, o) {
    this.el = el;
    this.o = { top: 10, compare: (a, b) => o.value(b) - o.value(a), ...o };
    this.data = new Set();
    this.bars = new Map(); // key -> element
    el.classList.add('barchart');
    el.setAttribute('role', 'list');
    this.empty = document.createElement('p');
    this.empty.className = 'barchart-empty';
    this.empty.textContent = 'No data yet.';
    el.appendChild(this.empty);
  }

  /** Apply a changeset {insert, remove} (objects; remove by identity). */
  apply(change) {
    for (const o of change.remove) this.data.delete(o);
    for (const o of change.insert) this.data.add(o);
    this.render(change.kind === 'snapshot');
  }

  reset(objects) {
    this.data = new Set(objects);
    this.render(true);
  }

  /** The bars shown, best first: [{key, label, value}] (for tests). */
  ranking() {
    return [...this.data].sort(this.o.compare).slice(0, this.o.top);
  }

  render(instant = false) {
    const { key, label, value, top } = this.o;
    const text = this.o.text || ((o) => String(value(o)));
    const ranked = this.ranking();
    const max = Math.max(1, ...ranked.map(value));
    const seen = new Set();
    ranked.forEach((o, rank) => {
      const k = String(key(o));
      seen.add(k);
      let bar = this.bars.get(k);
      const entering = !bar;
      if (entering) {
        bar = document.createElement('div');
        bar.className = 'bar';
        bar.setAttribute('role', 'listitem');
        bar.innerHTML =
          '<span class="bar-rank"></span><span class="bar-label"></span>' +
          '<span class="bar-track"><span class="bar-fill"></span></span><span class="bar-value"></span>';
        bar.style.setProperty('--rank', String(instant ? rank : top));
        if (!instant) bar.classList.add('entering');
        this.el.appendChild(bar);
        this.bars.set(k, bar);
      }
      bar.classList.remove('leaving');
      bar.dataset.key = k;
      bar.dataset.value = String(value(o));
      bar.dataset.rank = String(rank + 1);
      bar.querySelector('.bar-rank').textContent = String(rank + 1);
      bar.querySelector('.bar-label').textContent = label(o);
      const v = bar.querySelector('.bar-value');
      const shown = text(o);
      if (v.textContent !== shown) {
        if (!entering && !instant) flash(v, 'bumped');
        v.textContent = shown;
      }
      const set = () => {
        bar.style.setProperty('--rank', String(rank));
        bar.style.setProperty('--fill', (100 * value(o)) / max + '%');
        bar.classList.remove('entering');
      };
      // A new bar starts below the chart, transparent, then moves into place.
      if (entering && !instant) requestAnimationFrame(() => requestAnimationFrame(set));
      else set();
    });
    for (const [k, bar] of this.bars) {
      if (seen.has(k) || bar.classList.contains('leaving')) continue;
      bar.classList.add('leaving');
      bar.style.setProperty('--rank', String(top));
      const gone = () => {
        if (bar.classList.contains('leaving')) {
          bar.remove();
          if (this.bars.get(k) === bar) this.bars.delete(k);
        }
      };
      if (instant) gone();
      else setTimeout(gone, 700);
    }
    // A snapshot sizes the chart at once: a height growing for 0.6 s under
    // bars already in place would overflow the card meanwhile.
    if (instant) {
      this.el.classList.add('instant');
      requestAnimationFrame(() => requestAnimationFrame(() => this.el.classList.remove('instant')));
    }
    this.el.style.setProperty('--bars', String(Math.max(ranked.length, 1)));
    this.empty.hidden = ranked.length > 0;
  }
}
