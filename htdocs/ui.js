// ui.js - what the demo pages share: where the API is, the connection
// badge, formatting, and the hook the browser tests read (window.tailgatePage).

import { STATES, rowKey } from './tailgate.js';

/** The API prefix: <meta name="tailgate-api" content="/feeds"> (operators change it there). */
export function apiBase() {
  const m = document.querySelector('meta[name="tailgate-api"]');
  return ((m && m.content) || '/feeds').replace(/\/+$/, '');
}

export function feedUrl(name) {
  return apiBase() + '/' + encodeURIComponent(name);
}

export const params = new URLSearchParams(location.search);

/** ?transport=sse selects Server-Sent Events; long-poll otherwise. */
export function transport() {
  return params.get('transport') === 'sse' ? 'sse' : 'longpoll';
}

// The page's subscriptions, for debugging from the console and for tests.
const page = (window.tailgatePage = window.tailgatePage || { subs: {}, ready: false, rowKey });
export function expose(name, sub) {
  page.subs[name] = sub;
}
export function markReady() {
  page.ready = true;
  document.documentElement.dataset.ready = '1';
}

// ---------------------------------------------------------------------------
// Connection badge: one per page, showing the worst state of the page's
// subscriptions; its title lists each one.

const ORDER = ['failed', 'stalled', 'reconnecting', 'resyncing', 'connecting', 'live', 'closed'];
const LABEL = {
  connecting: 'Connecting…',
  live: 'Live',
  reconnecting: 'Reconnecting…',
  resyncing: 'Resyncing…',
  stalled: 'Stalled',
  failed: 'Failed',
  closed: 'Closed',
};

export class StateBadge {
  constructor(el) {
    this.el = el;
    this.states = new Map();
    el.setAttribute('role', 'status');
    el.setAttribute('aria-live', 'polite');
    el.innerHTML = '<span class="dot" aria-hidden="true"></span><span class="label"></span>';
    this.render();
  }
  /** An onState callback for the subscription called `name`. */
  track(name) {
    this.states.set(name, { state: STATES.CONNECTING, detail: {} });
    this.render();
    return (state, detail) => {
      this.states.set(name, { state, detail: detail || {} });
      this.render();
    };
  }
  set(name, state, detail = {}) {
    this.states.set(name, { state, detail });
    this.render();
  }
  render() {
    let worst = 'live';
    for (const { state } of this.states.values()) if (ORDER.indexOf(state) < ORDER.indexOf(worst)) worst = state;
    if (!this.states.size) worst = 'connecting';
    const lines = [];
    let label = LABEL[worst] || worst;
    for (const [name, { state, detail }] of this.states) {
      let line = `${name}: ${state}`;
      if (detail.failures) line += `, attempt ${detail.failures}`;
      if (detail.delay != null) line += `, retry in ${(detail.delay / 1000).toFixed(1)} s`;
      if (detail.reason) line += ` (${detail.reason})`;
      if (detail.error) line += ` — ${detail.error}`;
      lines.push(line);
      if (state === worst && detail.failures && (worst === 'reconnecting' || worst === 'stalled')) label += ` (${detail.failures})`;
    }
    this.el.dataset.state = worst;
    this.el.querySelector('.label').textContent = label;
    this.el.title = lines.join('\n');
  }
}

// ---------------------------------------------------------------------------
// Formatting

const nf = new Intl.NumberFormat();
export function fmtNumber(v) {
  if (v === null || v === undefined || v === '') return '—';
  const n = Number(v);
  return Number.isFinite(n) && Math.abs(n) < 2 ** 53 ? nf.format(n) : String(v);
}

/** PostgreSQL timestamptz text ("2025-01-02 03:04:05.678+00") -> ms since epoch (NaN if not). */
export function parseTimestamp(s) {
  if (typeof s !== 'string') return NaN;
  let t = s.trim().replace(' ', 'T');
  t = t.replace(/([+-]\d\d)$/, '$1:00').replace(/([+-]\d\d)(\d\d)$/, '$1:$2');
  // Fractions beyond milliseconds are not ISO for Date.parse in every engine.
  t = t.replace(/(\.\d{3})\d+/, '$1');
  return Date.parse(t);
}

// One formatter for every cell (toLocaleTimeString would build one per call).
const tf = new Intl.DateTimeFormat([], { hour: '2-digit', minute: '2-digit', second: '2-digit', hour12: false });
export function fmtTime(v) {
  const ms = parseTimestamp(v);
  if (Number.isNaN(ms)) return v == null ? '—' : String(v);
  return tf.format(ms);
}

export function fmtAgo(ms) {
  if (ms == null) return '—';
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  return `${Math.floor(s / 3600)} h ago`;
}

/** "open_auctions" -> "Open auctions" */
export function humanize(name) {
  const s = String(name).replace(/_/g, ' ');
  return s.charAt(0).toUpperCase() + s.slice(1);
}

export const isNumericType = (t) => /^(int2|int4|int8|oid|float4|float8|numeric|integer|bigint|smallint|real|double precision)$/.test(t || '');
export const isTimeType = (t) => /^(timestamptz|timestamp|date|time|timetz)/.test(t || '') || /timestamp/.test(t || '');

/**
 * Play a CSS animation class on an element (a flash), restarting it if it
 * is still playing.  No forced layout: a page applying a burst of batches
 * stays cheap.  The class comes off when its animation ends.
 */
export function flash(el, cls) {
  if (el.classList.contains(cls)) {
    el.classList.remove(cls);
    requestAnimationFrame(() => flash(el, cls));
    return;
  }
  el.classList.add(cls);
  const done = (e) => {
    if (e.target !== el) return;
    el.classList.remove(cls);
    el.removeEventListener('animationend', done);
  };
  el.addEventListener('animationend', done);
}

/** Show a message in the page's #problem box (empty text hides it). */
export function showProblem(text) {
  const el = document.getElementById('problem');
  if (el) {
    el.textContent = text;
    el.hidden = !text;
  }
}

/**
 * What to tell the reader while a subscription retries (reconnecting or
 * stalled): the server's gateway without its responder (502, 504), a feed
 * not live (503), no network at all.  '' when there is nothing to say.
 */
export function outageText(state, detail, what = 'the feed') {
  if (state !== 'reconnecting' && state !== 'stalled') return '';
  const d = detail || {};
  const err = String(d.error || '').replace(/^tailgate: /, '');
  if (d.status === 502 || d.status === 504)
    return `The server is not answering for ${what} (HTTP ${d.status}: its responder is down); showing the last rows, retrying.`;
  if (d.status === 503) return `${what}: ${err || 'not live on the server'} (HTTP 503); showing the last rows, retrying.`;
  if (d.status == null && typeof navigator !== 'undefined' && navigator.onLine === false)
    return `Offline: showing the last rows of ${what}; they catch up when the network is back.`;
  return '';
}
