// fakefetch.mjs - a fetch() for the unit tests, answering the feed API from
// FeedModels (helpers/feedmodel.mjs), with hooks to script failures, hold
// requests, and count requests in flight.  Test aid only.

import { answer, sseEvents } from './feedmodel.mjs';

const json = (status, body, headers = {}) =>
  new Response(JSON.stringify(body), { status, headers: { 'content-type': 'application/json', ...headers } });

/**
 * makeFetch(models, {prefix, timeScale}) -> fetch with extra fields:
 *   calls      [{url, path, query, init}] in order
 *   inflight   requests not yet finished; maxInflight the most at once
 *   script     queue of one-shot handlers (call) => Response | Promise | undefined;
 *              undefined falls through to the model
 *   hold()     the next request waits until release() (returns release)
 */
export function makeFetch(models, { prefix = '/feeds', timeScale = 1, sseGone } = {}) {
  const f = async (url, init = {}) => {
    const u = new URL(url, 'http://test.invalid');
    const call = { url: String(url), path: u.pathname, query: u.searchParams, init };
    f.calls.push(call);
    f.inflight++;
    f.maxInflight = Math.max(f.maxInflight, f.inflight);
    let streaming = false; // a stream stays in flight until it ends
    try {
      if (init.signal?.aborted) throw abortError();
      const aborted = new Promise((_, rej) => init.signal?.addEventListener('abort', () => rej(abortError())));
      aborted.catch(() => {});
      if (f.holds.length) {
        const gate = f.holds.shift();
        await Promise.race([gate.promise, aborted]);
      }
      const s = f.script.shift();
      if (s) {
        const r = await Promise.race([Promise.resolve(s(call)), aborted]);
        if (r) return r;
      }
      if (!u.pathname.startsWith(prefix)) return json(404, { error: 'not_found', message: u.pathname });
      const path = u.pathname.slice(prefix.length).replace(/^\//, '');
      const h = init.headers || {};
      const lastEventId = h['Last-Event-ID'] ?? h['last-event-id'];
      const r = await Promise.race([
        answer(models, path, u.searchParams, { signal: init.signal, timeScale, lastEventId, sseGone }),
        aborted,
      ]);
      if (init.signal?.aborted) throw abortError();
      if (r.stream) {
        streaming = true;
        return sseResponse(r, init.signal, f);
      }
      return json(r.status, r.body);
    } finally {
      if (!streaming) f.inflight--;
    }
  };
  f.calls = [];
  f.inflight = 0;
  f.maxInflight = 0;
  f.script = [];
  f.streams = 0;
  f.heartbeat = 50;
  f.holds = [];
  f.hold = () => {
    let release;
    const promise = new Promise((r) => (release = r));
    f.holds.push({ promise });
    return release;
  };
  return f;
}

// A streaming text/event-stream Response fed by sseEvents(); the stream
// counts as in flight until it ends.
function sseResponse(r, signal, f) {
  const enc = new TextEncoder();
  const it = sseEvents(r.model, r.filters, r.cursor, { signal, heartbeat: f.heartbeat });
  f.streams++;
  let open = true;
  const end = () => {
    if (open) (open = false), f.inflight--, f.streams--;
  };
  signal?.addEventListener('abort', end);
  const body = new ReadableStream({
    async pull(c) {
      try {
        const { value, done } = await it.next();
        if (done || signal?.aborted) {
          end();
          return c.close();
        }
        c.enqueue(enc.encode(value));
      } catch (e) {
        end();
        c.error(e);
      }
    },
    cancel() {
      end();
    },
  });
  return new Response(body, { status: 200, headers: { 'content-type': 'text/event-stream' } });
}

export function abortError() {
  const e = new Error('The operation was aborted.');
  e.name = 'AbortError';
  return e;
}

export { json };

/** Resolve when pred() is true (polling), or reject after ms. */
export async function until(pred, ms = 2000, what = 'condition') {
  const end = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 2));
  }
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Canonical multiset of rows, for comparisons. */
export function bag(rows) {
  return rows.map((r) => JSON.stringify(r)).sort();
}
