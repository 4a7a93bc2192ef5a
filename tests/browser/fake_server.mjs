#!/usr/bin/env node
// fake_server.mjs - DEVELOPMENT AID ONLY.  NOT the product, NOT the real
// stack, and passing browser tests against it proves nothing about tailgate's
// C daemon, responder or nginx configuration.
//
// A throwaway node server that serves htdocs/ and imitates the feed API
// (GET /feeds, /feeds/NAME snapshot, ?cursor= long-poll, 410, ?stream=sse,
// row filters) over an in-memory auction house, so that the pages and the
// browser tests can be developed before the real stack exists.  The real
// browser tests run against nginx + tailgate-fcgi + tailgated + PostgreSQL
// (see tests/browser/README.md and tests/browser/stack.mjs).
//
//   node tests/browser/fake_server.mjs [--port 8089] [--tick 250]
//
// Development controls (POST, loopback only): /_dev/pause, /_dev/resume,
// /_dev/tick?n=N, /_dev/new-history (every cursor becomes 410),
// /_dev/down?ms=N (feeds answer 503), /_dev/drop (cut every open request),
// and GET /_dev/state?feed=NAME (the exact rows at the current cursor).

import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { FeedModel, answer, sseEvents } from '../js/helpers/feedmodel.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const HTDOCS = path.resolve(here, '../../htdocs');

const TYPES = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
};

const NAMES = ['Ada', 'Bao', 'Chidi', 'Dara', 'Elif', 'Femi', 'Gus', 'Hana', 'Ivo', 'Jun', 'Kai', 'Lena', 'Milo', 'Nia', 'Omar',
  'Pia', 'Quinn', 'Ravi', 'Sol', 'Tara', 'Uma', 'Vik', 'Wren', 'Xia', 'Yara', 'Zed'];
const ITEMS = ['Best Pizza in Town', 'Gift Basket', 'City Bar Crawl', 'Custom Art', 'Signed Memorabilia'];

// PostgreSQL's text form of a timestamptz in UTC: "2025-01-02 03:04:05.678901+00"
function pgTime(ms) {
  const micro = String(Math.floor(Math.random() * 1000)).padStart(3, '0');
  return new Date(ms).toISOString().replace('T', ' ').replace('Z', micro + '+00');
}

/** The auction house in memory, publishing one batch per feed per tick. */
export class AuctionHouse {
  constructor({ capacity = 256, seed = 1 } = {}) {
    this.rand = mulberry32(seed);
    this.users = Array.from({ length: 40 }, (_, i) => ({ id: i + 1, name: `${NAMES[i % NAMES.length]}${i >= NAMES.length ? ' ' + (i + 1) : ''}` }));
    this.open = new Map(); // auction id -> {auction, bids: []}
    this.winners = new Map(); // auction id -> winning_bids row
    this.stats = { auctions: 0, open_auctions: 0, bids: 0, on_time_bids: 0, wins: 0, win_amount: 0 };
    this.buyerStats = new Map(); // buyer -> {wins, total}
    this.nextAuction = 1;
    this.nextBid = 1;
    this.cursor = 23000000n + BigInt(Math.floor(this.rand() * 1e6)); // like an LSN
    this.models = new Map([
      ['winning_bids', new FeedModel('winning_bids', [
        { name: 'auction_id', type: 'int8' }, { name: 'bid_id', type: 'int8' }, { name: 'buyer', type: 'int8' },
        { name: 'seller', type: 'int8' }, { name: 'item', type: 'text' }, { name: 'amount', type: 'int4' },
        { name: 'bid_time', type: 'timestamptz' }, { name: 'end_time', type: 'timestamptz' }], [], { capacity, cursor: this.cursor })],
      ['top_buyers', new FeedModel('top_buyers', [
        { name: 'buyer', type: 'int8' }, { name: 'name', type: 'text' }, { name: 'wins', type: 'int8' },
        { name: 'total_amount', type: 'int8' }], [], { capacity, cursor: this.cursor })],
      ['auction_stats', new FeedModel('auction_stats', [
        { name: 'id', type: 'int4' }, { name: 'auctions', type: 'int8' }, { name: 'open_auctions', type: 'int8' },
        { name: 'bids', type: 'int8' }, { name: 'on_time_bids', type: 'int8' }, { name: 'wins', type: 'int8' },
        { name: 'win_amount', type: 'int8' }], [[1, 0, 0, 0, 0, 0, 0]], { capacity, cursor: this.cursor })],
    ]);
    this.statsRow = [1, 0, 0, 0, 0, 0, 0];
    this.top = [];
  }
  pick(list) {
    return list[Math.floor(this.rand() * list.length)];
  }
  /** One "transaction": new auctions and bids, closes, a late bid now and then. */
  tick(now = Date.now()) {
    const win = { inserted: [], deleted: [] };
    if (this.rand() < 0.45) {
      const id = this.nextAuction++;
      this.open.set(id, { id, seller: this.pick(this.users).id, item: this.pick(ITEMS), end: now + 10000, bids: [] });
      this.stats.auctions++;
      this.stats.open_auctions++;
    }
    for (const a of this.open.values()) {
      if (this.rand() < 0.12) {
        const t = now - Math.floor(this.rand() * 50);
        a.bids.push({ id: this.nextBid++, buyer: this.pick(this.users).id, amount: 1 + Math.floor(this.rand() * 99), time: t });
        this.stats.bids++;
        if (t < a.end) this.stats.on_time_bids++;
      }
    }
    for (const a of [...this.open.values()]) {
      if (a.end >= now) continue;
      this.open.delete(a.id);
      this.stats.open_auctions--;
      const best = a.bids.filter((b) => b.time < a.end).sort((x, y) => y.amount - x.amount || x.time - y.time || x.id - y.id)[0];
      if (!best) continue;
      const row = [a.id, best.id, best.buyer, a.seller, a.item, best.amount, pgTime(best.time), pgTime(a.end)];
      this.winners.set(a.id, row);
      win.inserted.push(row);
      this.credit(best.buyer, 1, best.amount);
    }
    // A bid that committed after its auction closed raises the winner (the
    // SQL's "closed" path): an update of a winning_bids row.
    if (this.winners.size && this.rand() < 0.08) {
      const ids = [...this.winners.keys()].slice(-20);
      const old = this.winners.get(this.pick(ids));
      if (old[5] < 99) {
        const amount = Math.min(99, old[5] + 1 + Math.floor(this.rand() * 10));
        const buyer = this.pick(this.users).id;
        const row = [old[0], this.nextBid++, buyer, old[3], old[4], amount, old[6], old[7]];
        this.stats.bids++;
        this.stats.on_time_bids++;
        this.winners.set(old[0], row);
        win.deleted.push(old);
        win.inserted.push(row);
        this.credit(old[2], -1, -old[5]);
        this.credit(buyer, 1, amount);
      }
    }
    // Keep the demo's memory bounded: the oldest winners go (as deletes).
    while (this.winners.size > 3000) {
      const [id, row] = this.winners.entries().next().value;
      this.winners.delete(id);
      win.deleted.push(row);
      this.credit(row[2], -1, -row[5]);
    }
    consolidate(win);
    const cursor = String((this.cursor += 1n + BigInt(Math.floor(this.rand() * 400))));
    const m = this.models;
    if (win.inserted.length || win.deleted.length) m.get('winning_bids').publish(win, cursor);
    const s = this.stats;
    const statsRow = [1, s.auctions, s.open_auctions, s.bids, s.on_time_bids, s.wins, s.win_amount];
    if (JSON.stringify(statsRow) !== JSON.stringify(this.statsRow)) {
      m.get('auction_stats').publish({ inserted: [statsRow], deleted: [this.statsRow] }, cursor);
      this.statsRow = statsRow;
    }
    const top = [...this.buyerStats.entries()]
      .filter(([, v]) => v.wins > 0)
      .sort(([a, x], [b, y]) => y.wins - x.wins || y.total - x.total || a - b)
      .slice(0, 10)
      .map(([b, v]) => [b, this.users[b - 1].name, v.wins, v.total]);
    const keys = new Set(top.map((r) => JSON.stringify(r)));
    const oldKeys = new Set(this.top.map((r) => JSON.stringify(r)));
    const tb = { inserted: top.filter((r) => !oldKeys.has(JSON.stringify(r))), deleted: this.top.filter((r) => !keys.has(JSON.stringify(r))) };
    if (tb.inserted.length || tb.deleted.length) m.get('top_buyers').publish(tb, cursor);
    this.top = top;
  }
  credit(buyer, wins, amount) {
    const v = this.buyerStats.get(buyer) || { wins: 0, total: 0 };
    v.wins += wins;
    v.total += amount;
    this.buyerStats.set(buyer, v);
    this.stats.wins += wins;
    this.stats.win_amount += amount;
  }
}

// A timestamp's changes are consolidated: a row inserted and deleted in the
// same transaction appears in neither list (as the real daemon sends it).
function consolidate(batch) {
  const n = new Map();
  for (const r of batch.inserted) n.set(JSON.stringify(r), (n.get(JSON.stringify(r)) || 0) + 1);
  const deleted = [];
  for (const r of batch.deleted) {
    const k = JSON.stringify(r);
    if (n.get(k) > 0) n.set(k, n.get(k) - 1);
    else deleted.push(r);
  }
  const inserted = [];
  for (const r of batch.inserted) {
    const k = JSON.stringify(r);
    if (n.get(k) > 0) {
      inserted.push(r);
      n.set(k, n.get(k) - 1);
    }
  }
  batch.inserted = inserted;
  batch.deleted = deleted;
}

function mulberry32(a) {
  return () => {
    a |= 0;
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * Start the development server.  Returns {url, house, close(), control}.
 * tick: ms between transactions; warm: ticks simulated before serving.
 */
export async function startFakeServer({ port = 0, host = '127.0.0.1', tick = 250, warm = 600, prefix = '/feeds', seed = 1 } = {}) {
  const house = new AuctionHouse({ seed });
  const t0 = Date.now() - warm * tick;
  for (let i = 0; i < warm; i++) house.tick(t0 + i * tick);
  let paused = false;
  const timer = setInterval(() => paused || house.tick(), tick);
  const open = new Set(); // responses in progress, for /_dev/drop

  const control = {
    pause: () => (paused = true),
    resume: () => (paused = false),
    tick: (n = 1) => {
      for (let i = 0; i < n; i++) house.tick();
    },
    newHistory: () => {
      for (const m of house.models.values()) m.newHistory();
    },
    down: (ms = 2000) => {
      for (const m of house.models.values()) {
        m.live = false;
        for (const w of [...m.waiters]) w();
      }
      setTimeout(() => {
        for (const m of house.models.values()) m.live = true;
      }, ms);
    },
    drop: (except) => {
      for (const res of open) if (res !== except) res.socket?.destroy();
    },
    state: (feed) => {
      const m = house.models.get(feed);
      return m && { cursor: m.head, columns: m.columns, rows: m.rows() };
    },
  };

  const server = http.createServer(async (req, res) => {
    const u = new URL(req.url, 'http://localhost');
    open.add(res);
    res.on('close', () => open.delete(res));
    try {
      if (u.pathname.startsWith('/_dev/')) return devControl(u, req, res, control);
      if (u.pathname === prefix || u.pathname.startsWith(prefix + '/')) return await api(u, req, res);
      return serveStatic(u, res);
    } catch (e) {
      if (!res.headersSent) send(res, 500, { error: 'internal', message: String(e && e.message) });
      else res.destroy();
    }
  });

  async function api(u, req, res) {
    const ac = new AbortController();
    res.on('close', () => ac.abort());
    const name = decodeURIComponent(u.pathname.slice(prefix.length).replace(/^\//, ''));
    const wantsSSE = /text\/event-stream/.test(req.headers.accept || '');
    if (wantsSSE && !u.searchParams.has('stream')) u.searchParams.set('stream', 'sse');
    const r = await answer(house.models, name, u.searchParams, { signal: ac.signal, timeScale: 1000, lastEventId: req.headers['last-event-id'] });
    if (ac.signal.aborted) return;
    if (!r.stream) return send(res, r.status, r.body);
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-store', 'x-accel-buffering': 'no' });
    res.write('retry: 1000\n\n');
    for await (const chunk of sseEvents(r.model, r.filters, r.cursor, { signal: ac.signal, heartbeat: 15000 })) {
      if (ac.signal.aborted) return;
      res.write(chunk);
    }
    res.end();
  }

  function serveStatic(u, res) {
    let p = decodeURIComponent(u.pathname);
    if (p.endsWith('/')) p += 'index.html';
    const file = path.resolve(HTDOCS, '.' + p);
    if (!file.startsWith(HTDOCS + path.sep)) return send(res, 403, { error: 'forbidden' });
    fs.readFile(file, (err, data) => {
      if (err) return send(res, 404, { error: 'not_found', message: p });
      res.writeHead(200, { 'content-type': TYPES[path.extname(file)] || 'application/octet-stream', 'cache-control': 'no-cache' });
      res.end(data);
    });
  }

  await new Promise((r) => server.listen(port, host, r));
  const url = `http://${host}:${server.address().port}/`;
  return {
    url,
    house,
    control,
    close: () =>
      new Promise((r) => {
        clearInterval(timer);
        for (const res of open) res.socket?.destroy();
        server.close(() => r());
      }),
  };
}

function send(res, status, body) {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

function devControl(u, req, res, control) {
  const a = u.pathname.slice('/_dev/'.length);
  const n = Number(u.searchParams.get('n') || u.searchParams.get('ms') || 0) || undefined;
  if (a === 'state') {
    const s = control.state(u.searchParams.get('feed'));
    return s ? send(res, 200, s) : send(res, 404, { error: 'unknown_feed' });
  }
  if (req.method !== 'POST') return send(res, 405, { error: 'use POST' });
  const fn = { pause: control.pause, resume: control.resume, tick: control.tick, 'new-history': control.newHistory, down: control.down, drop: control.drop }[a];
  if (!fn) return send(res, 404, { error: 'unknown control' });
  fn(a === 'drop' ? res : n);
  send(res, 200, { ok: true });
}

if (process.argv[1] && fileURLToPath(import.meta.url) === path.resolve(process.argv[1])) {
  const arg = (k, d) => {
    const i = process.argv.indexOf(k);
    return i > 0 ? process.argv[i + 1] : d;
  };
  const s = await startFakeServer({ port: Number(arg('--port', process.env.PORT || 8089)), tick: Number(arg('--tick', 250)) });
  console.log(`fake_server (DEVELOPMENT AID, not the real stack): ${s.url}`);
}
