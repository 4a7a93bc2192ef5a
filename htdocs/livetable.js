// livetable.js - an HTML table kept equal to a subscription's rows by
// applying each batch's changeset: rows are added, removed and updated in
// place (never redrawn from scratch), changed rows flash briefly, sorting is
// by clicking a column header.
//
//   const table = new LiveTable(document.querySelector('table'), { key: 'auction_id' });
//   subscribe(url, { onBatch: (batch, change) => table.apply(change) });
//
// Every body row carries data-key (the row's canonical JSON, as tailgate.js
// compares rows), so tests can compare the table with the feed exactly.

import { rowKey, objectToRow } from './tailgate.js';
import { fmtNumber, fmtTime, humanize, isNumericType, isTimeType, parseTimestamp, flash } from './ui.js';

export class LiveTable {
  /**
   * options:
   *   columns     [{name, type}] (or set later by the first change)
   *   key         column identifying a row across updates (a delete and an
   *               insert with the same key in one batch are an update)
   *   sort        {col, dir: 'asc'|'desc'}
   *   limit       rows shown (the rest are counted); Infinity for all
   *   format      {col: (value, obj) => string}
   *   labels      {col: 'Header text'}
   *   priority    {col: 'low'} columns hidden on narrow screens
   *   sortable    columns that sort on click (all when omitted)
   *   onChange()  after each apply/render (for summaries)
   */
  constructor(table, o = {}) {
    this.table = table;
    this.o = o;
    this.columns = [];
    this.key = o.key || null;
    this.sort = o.sort || null;
    this.limit = o.limit ?? 200;
    this.items = new Set(); // the row objects, as tailgate hands them out
    this.trs = new Map(); // object -> <tr> for the rows shown
    this.fresh = new Set(); // objects to flash when first shown
    this.tbody = table.tBodies[0] || table.appendChild(document.createElement('tbody'));
    this.thead = table.tHead || table.createTHead();
    if (o.columns) this.setColumns(o.columns);
  }

  get size() {
    return this.items.size;
  }

  setColumns(columns) {
    this.columns = columns.map((c) => (typeof c === 'string' ? { name: c, type: null } : c));
    const tr = document.createElement('tr');
    for (const c of this.columns) {
      const th = document.createElement('th');
      th.scope = 'col';
      th.dataset.col = c.name;
      if (this.o.priority?.[c.name]) th.dataset.priority = this.o.priority[c.name];
      if (isNumericType(c.type)) th.classList.add('num');
      const label = this.o.labels?.[c.name] ?? humanize(c.name);
      if (!this.o.sortable || this.o.sortable.includes(c.name)) {
        const b = document.createElement('button');
        b.type = 'button';
        b.textContent = label;
        b.addEventListener('click', () => {
          const dir = this.sort && this.sort.col === c.name && this.sort.dir === 'desc' ? 'asc' : 'desc';
          this.setSort(c.name, dir);
          this.o.onSort?.(this.sort);
        });
        th.appendChild(b);
      } else th.textContent = label;
      tr.appendChild(th);
    }
    this.thead.replaceChildren(tr);
    this._markSort();
  }

  setSort(col, dir = 'desc') {
    this.sort = { col, dir };
    this._markSort();
    this.render();
  }

  setLimit(n) {
    this.limit = n;
    this.render();
  }

  _markSort() {
    for (const th of this.thead.querySelectorAll('th')) {
      if (this.sort && th.dataset.col === this.sort.col) th.setAttribute('aria-sort', this.sort.dir === 'asc' ? 'ascending' : 'descending');
      else th.removeAttribute('aria-sort');
    }
  }

  /** Replace everything (no highlight). */
  reset(objects) {
    this.items = new Set(objects);
    this.trs.clear();
    this.fresh.clear();
    this.tbody.replaceChildren();
    this.render();
  }

  /** Apply one batch's changeset: {kind, insert, remove, columns}. */
  apply(change) {
    if (change.columns && change.columns.length && !sameNames(change.columns, this.columns)) this.setColumns(change.columns);
    const quiet = change.kind === 'snapshot';
    // Pair removals with insertions of the same key: updates in place.
    const byKey = new Map();
    if (this.key) for (const o of change.remove) byKey.set(o[this.key], o);
    for (const o of change.remove) {
      this.items.delete(o);
      this.fresh.delete(o);
    }
    for (const o of change.insert) {
      this.items.add(o);
      const old = this.key ? byKey.get(o[this.key]) : undefined;
      const tr = old && this.trs.get(old);
      if (old) byKey.delete(o[this.key]);
      if (tr) {
        this.trs.delete(old);
        this.trs.set(o, tr);
        this._fill(tr, o, old);
        flash(tr, 'row-updated');
      } else if (!quiet) this.fresh.add(o);
    }
    for (const o of change.remove) {
      const tr = this.trs.get(o);
      if (tr) {
        tr.remove();
        this.trs.delete(o);
      }
    }
    this.render();
  }

  _compare() {
    const s = this.sort;
    if (!s) return null;
    const col = this.columns.find((c) => c.name === s.col);
    const sign = s.dir === 'asc' ? 1 : -1;
    const num = col && isNumericType(col.type);
    const time = col && isTimeType(col.type);
    const val = (o) => {
      const v = o[s.col];
      if (v === null || v === undefined) return null;
      return num ? Number(v) : time ? parseTimestamp(v) : String(v);
    };
    const tie = this.key;
    return (a, b) => {
      const x = val(a), y = val(b);
      if (x !== y) {
        if (x === null) return 1; // nulls last either way
        if (y === null) return -1;
        if (typeof x === 'string' && typeof y === 'string') {
          const c = x.localeCompare(y);
          if (c) return sign * c;
        } else if (x < y) return -sign;
        else if (x > y) return sign;
      }
      if (tie && a[tie] !== b[tie]) return a[tie] < b[tie] ? 1 : -1;
      return 0;
    };
  }

  /** Put the shown rows in order, creating and dropping <tr>s as needed. */
  render() {
    let list = [...this.items];
    const cmp = this._compare();
    if (cmp) list.sort(cmp);
    const shown = list.slice(0, this.limit);
    const keep = new Set(shown);
    for (const [o, tr] of this.trs)
      if (!keep.has(o)) {
        tr.remove();
        this.trs.delete(o);
      }
    let at = this.tbody.firstElementChild;
    for (const o of shown) {
      let tr = this.trs.get(o);
      if (!tr) {
        tr = this._row(o);
        this.trs.set(o, tr);
        if (this.fresh.has(o)) flash(tr, 'row-new');
      }
      this.fresh.delete(o);
      if (tr !== at) this.tbody.insertBefore(tr, at);
      else at = at.nextElementSibling;
    }
    // Whatever follows the shown rows is no row of ours (a <tr> whose
    // object was replaced without passing through apply): never leave it
    // below the sorted rows.
    while (at) {
      const next = at.nextElementSibling;
      at.remove();
      at = next;
    }
    this.fresh.clear();
    this.table.dataset.rows = String(this.items.size);
    this.table.dataset.shown = String(shown.length);
    this.o.onChange?.(this);
  }

  _row(o) {
    const tr = document.createElement('tr');
    for (const c of this.columns) {
      const td = document.createElement('td');
      td.dataset.col = c.name;
      if (this.o.priority?.[c.name]) td.dataset.priority = this.o.priority[c.name];
      if (isNumericType(c.type)) td.classList.add('num');
      tr.appendChild(td);
    }
    this._fill(tr, o);
    return tr;
  }

  _fill(tr, o, old) {
    tr.dataset.key = rowKey(objectToRow(this.columns, o));
    this.columns.forEach((c, i) => {
      const td = tr.children[i];
      const text = this._format(c, o[c.name], o);
      if (td.textContent !== text) td.textContent = text;
      if (typeof o[c.name] === 'string' && isTimeType(c.type)) td.title = o[c.name];
      if (old && old[c.name] !== o[c.name]) flash(td, 'cell-changed');
    });
  }

  _format(c, v, o) {
    const f = this.o.format?.[c.name];
    if (f) return f(v, o);
    if (v === null || v === undefined) return '—';
    if (isNumericType(c.type)) return /(^|_)id$/.test(c.name) ? String(v) : fmtNumber(v);
    if (isTimeType(c.type)) return fmtTime(v);
    if (typeof v === 'object') return JSON.stringify(v);
    return String(v);
  }
}

function sameNames(a, b) {
  return a.length === b.length && a.every((c, i) => (c.name ?? c) === (b[i].name ?? b[i]));
}
