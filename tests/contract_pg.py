#!/usr/bin/env python3
"""contract_pg.py - docs/API.md, statement by statement, from a client that
knows nothing of tailgate but HTTP.

A real PostgreSQL, tailgated, tailgate-fcgi and nginx (tests/lib/stack.py);
every request is plain HTTP/1.1 through http.client or a raw socket, never
the repository's own clients.  What it checks, in the order of docs/API.md:

  * the endpoints: GET /feeds (every field of every feed), a snapshot
    (cursor, columns, one snapshot batch, row typing: numbers as the
    database's text, NaN/Infinity as strings, bool, null, json embedded),
    a long-poll, SSE, several feeds, /metrics, /healthz; HEAD answers
    like GET without a body; every other method 405 with Allow;
  * the long-poll: answered at once when batches exist, parked until a
    commit, at timeout=S with no batches and the same cursor, at once with
    timeout=0, the default 25 s; a cursor ahead of the frontier waits;
  * cursors: POSITION.IDENTITY, another feed's identity 410, a bare
    position 410, below the floor 410, malformed 400; given twice 400;
  * SSE: text/event-stream, retry:, event: snapshot first, id: the cursor,
    Last-Event-ID resumes, an unresumable one restarts with a snapshot, a
    malformed one 400, the keep-alive comment, no Content-Encoding;
  * several feeds: the shapes, 2 to 8 names each once, order matters for
    the cursor, prefixed filters, no-store on long-polls;
  * filters: each operator, in.() with quotes, eq.null, "null", the 400s
    and their messages (the missing operator hint names the fix);
  * errors: JSON {error, message}, application/json, no-store; 404s;
    unknown parameters, a query over 8192 bytes, bad UTF-8, NUL; a request
    line beyond nginx's buffer (414);
  * caching: Cache-Control of each kind of reply, gzip for snapshots and
    long-polls by Accept-Encoding (gzip, x-gzip, *, q=0 refuses), one
    Vary: Accept-Encoding, the state headers absent on a live feed.

Then the daemon stopped: every kind of request for its feed a 503
feed_not_live, and /feeds says so.

Then an operator's mistakes: tailgated with no ring_dir, a misspelt key,
a ring directory it cannot create, a missing configuration; the responder
on a ring directory that does not exist (a warning naming it: the daemon
may create it later), on a socket path whose directory is missing or with
no socket at all (exits naming it); nginx with no responder on the
upstream's socket (the API's JSON 502); a ring written by another layout
version (503 naming both versions, the other feeds still served).

TAP output.
"""
import gzip
import http.client
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time

top_srcdir = os.environ.get("top_srcdir", ".")
sys.path.insert(0, os.path.join(top_srcdir, "tests", "lib"))
sys.path.insert(0, os.path.join(top_srcdir, "tests"))
from pg import skip_unless_pg  # noqa: E402
from tap import done, ok, wait_for  # noqa: E402
from stack import Stack, builddir  # noqa: E402
from env import test_env  # noqa: E402
from daemon_pg import TAILGATED, Daemon  # noqa: E402

PORT = None


class Reply:
    def __init__(self, status, headers, body, seconds):
        self.status, self.headers, self.body, self.seconds = status, headers, body, seconds

    def h(self, name):
        """The header's value, or None; a header sent twice is "A, B"."""
        vals = [v for k, v in self.headers if k.lower() == name.lower()]
        return ", ".join(vals) if vals else None

    def count(self, name):
        return len([1 for k, _ in self.headers if k.lower() == name.lower()])

    def json(self):
        body = self.body
        if self.h("content-encoding") == "gzip":
            body = gzip.decompress(body)
        try:
            return json.loads(body)
        except ValueError:
            return None

    def __repr__(self):
        return "<%s %r %.2fs %r>" % (self.status, self.headers, self.seconds, self.body[:300])


def req(path, headers=None, method="GET", timeout=40):
    t0 = time.monotonic()
    c = http.client.HTTPConnection("127.0.0.1", PORT, timeout=timeout)
    try:
        c.putrequest(method, path, skip_accept_encoding=True)
        for k, v in (headers or {}).items():
            c.putheader(k, v)
        c.endheaders()
        r = c.getresponse()
        body = r.read()
        return Reply(r.status, r.getheaders(), body, time.monotonic() - t0)
    finally:
        c.close()


def raw_status(data, timeout=10):
    """Send raw bytes, return the status of what comes back (or None)."""
    s = socket.create_connection(("127.0.0.1", PORT), timeout=timeout)
    got = b""
    try:
        s.sendall(data)
        while b"\r\n" not in got:
            b = s.recv(4096)
            if not b:
                break
            got += b
    finally:
        s.close()
    try:
        return int(got.split(b" ")[1])
    except (IndexError, ValueError):
        return None


def same_or_later(c, c0):
    """c is c0, or a later position of the same history (the test may
    compare; a client never does)."""
    try:
        p, i = c.split(".")
        p0, i0 = c0.split(".")
        return i == i0 and int(p) >= int(p0)
    except (ValueError, AttributeError):
        return False


def is_error(r, status, code, contains=None):
    """A JSON error of the contract: the status, {"error", "message"},
    application/json, no-store."""
    obj = r.json()
    return (r.status == status and isinstance(obj, dict) and set(obj) == {"error", "message"}
            and obj["error"] == code and isinstance(obj["message"], str) and obj["message"]
            and (r.h("content-type") or "").startswith("application/json")
            and r.h("cache-control") == "no-store"
            and (contains is None or contains in obj["message"]))


class Sse:
    """An open SSE stream (HTTP/1.0 on a raw socket, so the body is the
    stream itself, unchunked): events as dicts {event, id, data}."""

    def __init__(self, path, headers=None, timeout=10):
        self.s = socket.create_connection(("127.0.0.1", PORT), timeout=timeout)
        head = "GET %s HTTP/1.0\r\nHost: x\r\n" % path
        for k, v in (headers or {}).items():
            head += "%s: %s\r\n" % (k, v)
        self.s.sendall((head + "\r\n").encode())
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            b = self.s.recv(65536)
            if not b:
                break
            self.buf += b
        raw, _, self.buf = self.buf.partition(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split()[1])
        self.headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            self.headers[k.strip().lower()] = v.strip()
        self.retry = None
        self.comments = 0

    def _line(self, deadline):
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.s.settimeout(left)
            try:
                b = self.s.recv(65536)
            except (socket.timeout, TimeoutError):
                return None
            if not b:
                return None
            self.buf += b
        line, _, self.buf = self.buf.partition(b"\n")
        return line.decode()

    def next(self, timeout=10):
        """The next event (comments counted, retry: kept), or None."""
        deadline = time.monotonic() + timeout
        ev = {}
        while True:
            line = self._line(deadline)
            if line is None:
                return None
            if line == "":
                if "data" in ev:
                    return ev
                ev = {}
                continue
            if line.startswith(":"):
                self.comments += 1
                continue
            k, _, v = line.partition(":")
            v = v[1:] if v.startswith(" ") else v
            if k == "retry":
                self.retry = v
            elif k == "data":
                ev["data"] = json.loads(v)
            else:
                ev[k] = v

    def close(self):
        self.s.close()


def fcgi(sock_path, params):
    """One FastCGI request straight to the responder: its stdout (the CGI
    head and body)."""
    def rec(kind, content):
        return struct.pack(">BBHHBx", 1, kind, 1, len(content), 0) + content

    def nv(k, v):
        k, v = k.encode(), v.encode()
        return bytes([len(k)]) + (bytes([len(v)]) if len(v) < 128 else
                                  struct.pack(">I", len(v) | 0x80000000)) + k + v
    body = b"".join(nv(k, v) for k, v in params.items())
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(sock_path)
    s.sendall(rec(1, struct.pack(">HB5x", 1, 0)) + rec(4, body) + rec(4, b"") + rec(5, b""))
    out, buf = b"", b""
    try:
        while True:
            b = s.recv(65536)
            if not b:
                break
            buf += b
            while len(buf) >= 8:
                _, kind, _, clen, plen = struct.unpack(">BBHHB", buf[:7])
                if len(buf) < 8 + clen + plen:
                    break
                if kind == 6:
                    out += buf[8:8 + clen]
                buf = buf[8 + clen + plen:]
                if kind == 3:
                    return out
    finally:
        s.close()
    return out


def insert(pg, sql):
    pg.psql(sql)


def main():
    global PORT
    skip = skip_unless_pg(TAILGATED)
    if skip is not None:
        return skip
    with test_env("contract", start_stack=False,
                  stack_args={"responder_args": ["--sse-keepalive", "1"]}) as env:
        pg, st = env.pg, env.st
        pg.psql("""
            CREATE TABLE orders (id int8 PRIMARY KEY, item text, amount numeric,
                                 ok bool, j jsonb, f float8);
            ALTER TABLE orders REPLICA IDENTITY FULL;
            INSERT INTO orders VALUES
              (1, 'a', 10, true, '{"x": 1}', 1.5),
              (2, 'c,d', 123456789012345678901234567890.5, false, NULL, 'NaN'),
              (3, 'null', -0.5, NULL, '[1, 2]', '-Infinity');
            CREATE TABLE other (id int PRIMARY KEY, v text);
            ALTER TABLE other REPLICA IDENTITY FULL;
            INSERT INTO other VALUES (1, 'x');""")
        st.start()
        PORT = st.port
        d = env.stop_later(Daemon(pg, env.ring_dir, {"orders": {"table": "orders"},
                                                     "other": {"table": "other"}}))
        d.start()
        wait_for(lambda: all(f.get("state") == "live"
                             for f in (req("/feeds").json() or {}).get("feeds", [{}]))
                 and len(req("/feeds").json()["feeds"]) == 2, 30)
        check_methods.socket = st.socket
        check_feeds(st)
        snap = check_snapshot(pg)
        check_methods(snap)
        check_longpoll(pg, snap)
        check_cursors(pg)
        check_sse(pg)
        check_multi(pg)
        check_filters(pg)
        check_errors()
        check_caching(pg)
        check_metrics()
        check_not_live(d)
        env.stop()  # the daemon, stack and cluster; their directory stays
        operator_mistakes(pg, env.tmp)
    return done()


# ---------------------------------------------------------------------------
# Endpoints
# ---------------------------------------------------------------------------

def check_feeds(st):
    r = req("/feeds")
    obj = r.json() or {}
    feeds = {f.get("name"): f for f in obj.get("feeds", [])}
    o = feeds.get("orders", {})
    want = {"name", "source", "columns", "cursor", "rows", "live", "state", "lag_s"}
    ok(r.status == 200 and list(obj) == ["feeds"] and set(feeds) == {"orders", "other"}
       and want <= set(o) and set(o) - want <= {"error"},
       "GET /feeds: {\"feeds\": [...]} with name, source, columns, cursor, rows, live, "
       "state, lag_s", r)
    ok(o.get("source") == "postgresql" and o.get("rows") == 3 and o.get("live") is True
       and o.get("state") == "live" and isinstance(o.get("lag_s"), (int, float))
       and o.get("columns") == [{"name": "id", "type": "int8"}, {"name": "item", "type": "text"},
                                {"name": "amount", "type": "numeric"},
                                {"name": "ok", "type": "bool"}, {"name": "j", "type": "jsonb"},
                                {"name": "f", "type": "float8"}],
       "/feeds: orders has its columns (name, type), 3 rows, live, state live", o)
    cur = o.get("cursor", "")
    pos, _, ident = cur.partition(".")
    ok(pos.isdigit() and len(ident) == 8 and all(c in "0123456789abcdef" for c in ident),
       "/feeds: the cursor is POSITION.IDENTITY (%s)" % cur)
    ok((r.h("content-type") or "").startswith("application/json")
       and r.h("cache-control") == "no-store", "/feeds: application/json, no-store", r)
    r2 = req("/feeds/")
    ok(r2.status == 200 and "feeds" in (r2.json() or {}), "GET /feeds/ is the list too", r2)


def check_snapshot(pg):
    r = req("/feeds/orders")
    obj = r.json() or {}
    b = obj.get("batches", [])
    ok(r.status == 200 and list(obj) == ["cursor", "columns", "batches"],
       "snapshot: {cursor, columns, batches}", r)
    ok(len(b) == 1 and b[0].get("deleted") == [] and len(b[0].get("inserted", [])) == 3
       and isinstance(b[0].get("timestamp"), str),
       "snapshot: one batch, every row in inserted, nothing in deleted, a string timestamp",
       b)
    rows = {row[0]: row for row in (b[0].get("inserted", []) if b else [])}
    ok(rows.get(1) == [1, "a", 10, True, {"x": 1}, 1.5]
       and rows.get(3) == [3, "null", -0.5, None, [1, 2], "-Infinity"]
       and rows.get(2, [0] * 6)[5] == "NaN" and rows.get(2, [0] * 6)[3] is False,
       "rows typed: integers and numerics as numbers, bool, null, jsonb embedded, NaN and "
       "-Infinity as strings", rows)
    ok(b"123456789012345678901234567890.5" in r.body,
       "a 31-digit numeric carries the database's own text, never re-rounded")
    ok(r.h("cache-control") == "no-store" and r.h("tailgate-feed-state") is None
       and r.h("tailgate-lag") is None,
       "snapshot: no-store; a live feed's reply has no Tailgate-Feed-State or Tailgate-Lag", r)
    return obj


def check_methods(snap):
    r = req("/feeds/orders", method="HEAD")
    ok(r.status == 200 and r.body == b"" and r.h("content-type") == "application/json"
       and r.h("cache-control") == "no-store", "HEAD /feeds/orders: GET's head, no body", r)
    r = req("/feeds/orders?cursor=%s&timeout=0" % snap["cursor"], method="HEAD")
    ok(r.status == 200 and r.body == b"", "HEAD of a long-poll", r)
    r = req("/feeds/nope", method="HEAD")
    ok(r.status == 404 and r.body == b"", "HEAD of an unknown feed: 404", r)
    for m in ("POST", "PUT", "DELETE", "PATCH", "OPTIONS"):
        r = req("/feeds/orders", method=m)
        ok(is_error(r, 405, "method_not_allowed") and r.h("allow") == "GET, HEAD",
           "%s /feeds/orders: 405 method_not_allowed, Allow: GET, HEAD" % m, r)
    r = req("/feeds", method="POST")
    ok(r.status == 405, "POST /feeds: 405", r)
    out = fcgi(check_methods.socket, {"REQUEST_METHOD": "GET", "PATH_INFO": "/live/feeds/orders",
                                      "QUERY_STRING": ""})
    ok(out.startswith(b"Status: 404") and b'"error":"not_found"' in out
       and b"/live/feeds/orders" in out and b"PATH_INFO" in out,
       "a prefix passed to the responder as part of the route (an nginx config without "
       "fastcgi_split_path_info): 404 not_found naming the path and PATH_INFO", out)
    out = fcgi(check_methods.socket, {"REQUEST_METHOD": "DELETE", "PATH_INFO": "/feeds/orders",
                                      "QUERY_STRING": ""})
    ok(out.startswith(b"Status: 405") and b"\r\nAllow: GET, HEAD\r\n" in out
       and b'"error":"method_not_allowed"' in out,
       "the responder itself (without the snippet) answers DELETE with 405 and Allow", out)


# ---------------------------------------------------------------------------
# Long-poll
# ---------------------------------------------------------------------------

def check_longpoll(pg, snap):
    c0 = snap["cursor"]
    r = req("/feeds/orders?cursor=%s&timeout=0" % c0)
    ok(r.status == 200 and (r.json() or {}).get("batches") == [] and r.seconds < 2
       and same_or_later(r.json()["cursor"], c0),
       "timeout=0 at the frontier: at once, no batches, the same cursor (or one the "
       "upstream confirmed since)", r)
    r = req("/feeds/orders?cursor=%s&timeout=1" % c0)
    obj = r.json() or {}
    ok(r.status == 200 and obj.get("batches") == [] and 0.8 < r.seconds < 6
       and same_or_later(obj.get("cursor", ""), c0),
       "timeout=1: answered after ~1 s (%.2f s), no batches" % r.seconds, r)
    ok(r.h("cache-control") == "no-store", "an empty long-poll reply is no-store", r)

    # Parked, then answered by a commit.
    out = {}
    t = threading.Thread(target=lambda: out.update(r=req("/feeds/orders?cursor=%s" % c0)))
    t.start()
    time.sleep(0.5)  # the thing tested: a request already parked
    t_ins = time.monotonic()
    insert(pg, "INSERT INTO orders VALUES (4, 'e', 5, true, NULL, 2)")
    t.join(30)
    r = out.get("r")
    obj = r.json() if r else {}
    ok(r and r.status == 200 and len(obj.get("batches", [])) == 1
       and obj["batches"][0]["inserted"] == [[4, "e", 5, True, None, 2]]
       and obj["batches"][0]["deleted"] == [] and time.monotonic() - t_ins < 5
       and list(obj) == ["cursor", "batches"],
       "a parked long-poll is answered by the commit with {cursor, batches} "
       "(no columns)", r)
    c1 = obj.get("cursor", c0)
    ok(r and r.h("cache-control") == "public, max-age=60, immutable",
       "a long-poll reply holding batches: public, max-age=60, immutable", r)
    r = req("/feeds/orders?cursor=%s" % c0)
    ok(r.status == 200 and len((r.json() or {}).get("batches", [])) == 1 and r.seconds < 2,
       "batches after C exist: answered at once", r)
    # An UPDATE: a delete of the old row plus an insert of the new, one batch.
    insert(pg, "UPDATE orders SET amount = 6 WHERE id = 4")
    r = req("/feeds/orders?cursor=%s&timeout=10" % c1)
    b = (r.json() or {}).get("batches", [])
    ok(len(b) == 1 and b[0]["deleted"] == [[4, "e", 5, True, None, 2]]
       and b[0]["inserted"] == [[4, "e", 6, True, None, 2]],
       "an UPDATE: one batch, the old row in deleted, the new in inserted", b)
    c2 = (r.json() or {}).get("cursor")
    # A cursor ahead of the frontier (a host behind) waits, answers the same cursor.
    pos, ident = c2.split(".")
    ahead = "%d.%s" % (int(pos) + 10 ** 9, ident)
    r = req("/feeds/orders?cursor=%s&timeout=1" % ahead)
    ok(r.status == 200 and r.json() == {"cursor": ahead, "batches": []} and r.seconds > 0.8,
       "a cursor ahead of the frontier waits, then no batches and the same cursor", r)
    # The default timeout: 25 s (run beside the rest).
    res = {}

    def slow():  # a cursor ahead: nothing can answer it before the timeout
        res["r"] = req("/feeds/orders?cursor=%s" % ahead, timeout=60)
    th = threading.Thread(target=slow, daemon=True)
    th.start()
    check_longpoll.default = (th, res)


# ---------------------------------------------------------------------------
# Cursors
# ---------------------------------------------------------------------------

def check_cursors(pg):
    co = req("/feeds/orders").json()["cursor"]
    cx = req("/feeds/other").json()["cursor"]
    r = req("/feeds/orders?cursor=%s&timeout=0" % cx)
    ok(is_error(r, 410, "cursor_gone"), "another feed's cursor (another definition): 410", r)
    pos = co.split(".")[0]
    r = req("/feeds/orders?cursor=%s&timeout=0" % pos)
    ok(is_error(r, 410, "cursor_gone"), "a bare decimal cursor: 410", r)
    r = req("/feeds/orders?cursor=1.%s&timeout=0" % co.split(".")[1])
    ok(is_error(r, 410, "cursor_gone"), "a cursor below the floor: 410", r)
    r = req("/feeds/orders?cursor=%s.00000000&timeout=0" % pos)
    ok(is_error(r, 410, "cursor_gone"), "another upstream history: 410", r)
    for bad in ("", "abc", "1.2.3", "-1.%s" % co.split(".")[1], "%s.zz" % pos,
                "%s." % pos, ".%s" % co.split(".")[1], "1e5"):
        r = req("/feeds/orders?cursor=%s&timeout=0" % bad)
        ok(is_error(r, 400, "bad_parameter", "cursor"), "malformed cursor %r: 400" % bad, r)
    r = req("/feeds/orders?cursor=%s&cursor=%s&timeout=0" % (co, co))
    ok(is_error(r, 400, "bad_parameter", "twice"), "cursor given twice: 400", r)
    r = req("/feeds/orders?cursor=%s&timeout=0&timeout=0" % co)
    ok(is_error(r, 400, "bad_parameter", "twice"), "timeout given twice: 400", r)
    for t in ("26", "-1", "1.5", "", "x", "1e1", "+1", "99999999999999999999"):
        r = req("/feeds/orders?cursor=%s&timeout=%s" % (co, t))
        ok(is_error(r, 400, "bad_parameter", "timeout"), "timeout=%r: 400" % t, r)
    r = req("/feeds/orders?cursor=%s&timeout=0" % co.replace(".", "%2E"))
    ok(r.status == 200 and (r.json() or {}).get("batches") == []
       and same_or_later(r.json()["cursor"], co),
       "a percent-encoded cursor is the same cursor", r)


# ---------------------------------------------------------------------------
# Server-Sent Events
# ---------------------------------------------------------------------------

def check_sse(pg):
    for how, path, hdrs in (("Accept: text/event-stream", "/feeds/orders",
                             {"Accept": "text/event-stream"}),
                            ("?stream=sse", "/feeds/orders?stream=sse", {})):
        s = Sse(path, dict(hdrs, **{"Accept-Encoding": "gzip"}))
        ev = s.next()
        ok(s.status == 200 and s.headers.get("content-type", "").startswith("text/event-stream")
           and s.headers.get("cache-control") == "no-store"
           and "content-encoding" not in s.headers,
           "SSE by %s: 200 text/event-stream, no-store, never gzip" % how, s.headers)
        ok(ev and ev.get("event") == "snapshot" and s.retry is not None
           and len(ev["data"].get("inserted", [])) == 3 and ev["data"].get("deleted") == []
           and "." in ev.get("id", ""),
           "SSE by %s: retry:, then event: snapshot with id: a cursor and the snapshot "
           "batch" % how, ev)
        s.close()
    s = Sse("/feeds/orders?stream=sse")
    snap = s.next()
    later = []
    while True:  # the batches after the snapshot batch, then quiet
        ev = s.next(timeout=2.5)
        if ev is None:
            break
        later.append(ev)
    ok(len(later) == 2 and all(e.get("event") is None for e in later)
       and later[1]["data"]["deleted"] == [[4, "e", 5, True, None, 2]],
       "SSE: the snapshot batch, then one event per later batch (no event: name)", later)
    c0 = later[-1].get("id") if later else None
    ok(s.comments > 0, "an idle stream gets keep-alive comment lines (--sse-keepalive 1)",
       s.comments)
    insert(pg, "INSERT INTO orders VALUES (5, 'f', 7, false, 'null', 3)")
    ev = s.next()
    ok(ev and ev.get("event") in (None, "batch", "message") and ev["data"]["inserted"] ==
       [[5, "f", 7, False, None, 3]] and ev.get("id") and ev.get("id") != c0,
       "a commit reaches the stream as one event with a new id:", ev)
    c1 = (ev or {}).get("id")
    s.close()
    insert(pg, "INSERT INTO orders VALUES (6, 'g', 8, true, NULL, 4)")
    s = Sse("/feeds/orders?stream=sse", {"Last-Event-ID": c1 or ""})
    ev = s.next()
    ok(ev and ev.get("event") != "snapshot" and ev["data"]["inserted"] ==
       [[6, "g", 8, True, None, 4]],
       "Last-Event-ID resumes after that cursor (the next batch, no snapshot)", ev)
    s.close()
    s = Sse("/feeds/orders?stream=sse", {"Last-Event-ID": "1.%s" % (c1 or ".").split(".")[1]})
    ev = s.next()
    ok(s.status == 200 and ev and ev.get("event") == "snapshot",
       "a Last-Event-ID below the floor: the stream starts again with a snapshot", ev)
    s.close()
    s = Sse("/feeds/orders?stream=sse", {"Last-Event-ID": (c1 or "1.x").split(".")[0]})
    ev = s.next()
    ok(s.status == 200 and ev and ev.get("event") == "snapshot",
       "a bare decimal Last-Event-ID: a snapshot", ev)
    s.close()
    r = req("/feeds/orders?stream=sse", {"Last-Event-ID": "garbage"})
    ok(is_error(r, 400, "bad_parameter", "Last-Event-ID"), "a malformed Last-Event-ID: 400",
       r)
    r = req("/feeds/orders?stream=sse&stream=sse")
    ok(is_error(r, 400, "bad_parameter", "stream"), "stream given twice: 400", r)
    r = req("/feeds/orders?stream=json")
    ok(is_error(r, 400, "bad_parameter", "stream"), "stream=json: 400", r)
    r = req("/feeds/nope?stream=sse")
    ok(is_error(r, 404, "unknown_feed"), "SSE of an unknown feed: 404 JSON", r)
    s = Sse("/feeds/orders?stream=sse&item=eq.g")
    ev = s.next()
    ev2 = s.next()
    ok(ev and ev.get("event") == "snapshot" and ev["data"]["inserted"] == []
       and ev2 and ev2["data"]["inserted"] == [[6, "g", 8, True, None, 4]],
       "SSE with a filter: the snapshot batch with its matching rows (none), then only "
       "the batch that matches", [ev, ev2])
    s.close()


# ---------------------------------------------------------------------------
# Several feeds
# ---------------------------------------------------------------------------

def check_multi(pg):
    r = req("/feeds/orders,other")
    obj = r.json() or {}
    feeds = obj.get("feeds", {})
    ok(r.status == 200 and list(obj) == ["cursor", "feeds"] and list(feeds) == ["orders", "other"]
       and all(set(f) == {"columns", "batches"} for f in feeds.values())
       and feeds["other"]["batches"][0]["inserted"] == [[1, "x"]],
       "GET /feeds/A,B: {cursor, feeds: {A: {columns, batches}, B: ...}}", r)
    c = obj.get("cursor", "")
    ok(r.h("cache-control") == "no-store", "the first reply of several feeds: no-store", r)
    # The first reply is complete at the lowest frontier: a feed's batch
    # above it comes in the next replies.  Follow until a poll times out.
    for _ in range(20):
        r = req("/feeds/orders,other?cursor=%s&timeout=1" % c)
        o2 = r.json() or {}
        if r.status != 200 or not any(f.get("batches") for f in o2.get("feeds", {}).values()):
            break
        c = o2.get("cursor", c)
    ok(r.status == 200 and set(o2) == {"cursor", "feeds"}
       and o2["feeds"] == {"orders": {"batches": []}, "other": {"batches": []}}
       and r.h("cache-control") == "no-store",
       "a long-poll of several feeds at the timeout: every feed present, empty batches, "
       "no columns, no-store", r)
    c = o2.get("cursor", c)
    insert(pg, "INSERT INTO other VALUES (2, 'y')")
    r = req("/feeds/orders,other?cursor=%s&timeout=10" % c)
    o3 = r.json() or {}
    ok(r.status == 200 and o3.get("feeds", {}).get("other", {}).get("batches", [{}])[0]
       .get("inserted") == [[2, "y"]] and o3["feeds"].get("orders") == {"batches": []}
       and r.h("cache-control") == "no-store",
       "a long-poll of several feeds: the batch for one, an empty list for the other, "
       "no-store", r)
    r = req("/feeds/other,orders?cursor=%s&timeout=0" % c)
    ok(is_error(r, 410, "cursor_gone"), "B,A with the cursor of A,B: 410", r)
    r = req("/feeds/orders?cursor=%s&timeout=0" % c)
    ok(is_error(r, 410, "cursor_gone"), "a single feed with the cursor of A,B: 410", r)
    for path, code, st in (("/feeds/orders,orders", "bad_parameter", 400),
                           ("/feeds/orders,", "bad_parameter", 400),
                           ("/feeds/,orders", "bad_parameter", 400),
                           ("/feeds/orders,,other", "bad_parameter", 400),
                           ("/feeds/a,b,c,d,e,f,g,h,i", "bad_parameter", 400),
                           ("/feeds/orders,nope", "unknown_feed", 404),
                           ("/feeds/orders,other?amount=gt.1", "bad_parameter", 400),
                           ("/feeds/orders,other?x.amount=gt.1", "bad_parameter", 400),
                           ("/feeds/orders,other?orders.amount=1", "bad_parameter", 400),
                           ("/feeds/orders,other?orders.nope=eq.1", "bad_parameter", 400)):
        r = req(path)
        ok(is_error(r, st, code), "%s: %d %s" % (path, st, code), r)
    r = req("/feeds/orders,other?orders.item=eq.a&other.v=eq.zz")
    f = (r.json() or {}).get("feeds", {})
    ob = f.get("other", {}).get("batches", [])
    ok(r.status == 200 and f.get("orders", {}).get("batches", [{}])[0].get("inserted") ==
       [[1, "a", 10, True, {"x": 1}, 1.5]] and len(ob) == 1 and ob[0]["inserted"] == [],
       "prefixed filters: each feed filtered; a feed with no matching row has its (empty) "
       "snapshot batch and no later batch", r)
    s = Sse("/feeds/orders,other?stream=sse")
    ev = s.next()
    ok(s.status == 200 and ev and ev.get("event") == "snapshot" and ev.get("id") and
       set(ev["data"]) == {"cursor", "feeds"} and ev["data"]["cursor"] == ev["id"],
       "SSE of several feeds: event: snapshot, id: = its cursor", ev)
    s.close()
    mid = (ev or {}).get("id", "")
    insert(pg, "INSERT INTO other VALUES (3, 'z')")
    s = Sse("/feeds/orders,other", {"Accept": "text/event-stream", "Last-Event-ID": mid})
    ev = s.next()
    ok(ev and ev.get("event") is None and ev["data"]["feeds"]["other"]["batches"][0]["inserted"]
       == [[3, "z"]] and ev["data"]["feeds"]["orders"] == {"batches": []}
       and ev["id"] == ev["data"]["cursor"],
       "SSE of several feeds: Last-Event-ID resumes (no snapshot; every feed present)", ev)
    s.close()
    s = Sse("/feeds/other,orders", {"Accept": "text/event-stream", "Last-Event-ID": mid})
    ev = s.next()
    ok(ev and ev.get("event") == "snapshot",
       "SSE of several feeds: the Last-Event-ID of another list (B,A): a snapshot", ev)
    s.close()
    r = req("/feeds/orders%2Cother")
    ok(r.status == 200 and "feeds" in (r.json() or {}), "an encoded comma (%2C) is a comma", r)


# ---------------------------------------------------------------------------
# Filters
# ---------------------------------------------------------------------------

def ids(r):
    """The ids of the rows a client holds after applying the reply."""
    held = []
    for b in (r.json() or {}).get("batches", []):
        for row in b["deleted"]:
            held.remove(row)
        held += b["inserted"]
    return sorted(row[0] for row in held)


def check_filters(pg):
    cases = [("amount=gt.9", [1, 2]), ("amount=gte.10", [1, 2]), ("amount=lt.0", [3]),
             ("amount=lte.8", [3, 4, 5, 6]), ("amount=eq.10.0", [1]),
             ("amount=neq.10", [2, 3, 4, 5, 6]),
             ("amount=gt.123456789012345678901234567890.4", [2]),
             ("amount=gt.123456789012345678901234567890.5", []),
             ("item=in.(a,%22c,d%22)", [1, 2]), ("item=eq.%22null%22", [3]),
             ("item=eq.null", []), ("ok=eq.null", [3]), ("ok=neq.null", [1, 2, 4, 5, 6]),
             ("ok=eq.t", [1, 4, 6]), ("ok=eq.OFF", [2, 5]),
             # row 5's jsonb is the JSON null: sent as null, so taken as NULL
             # (docs/API.md, Filters)
             ("j=eq.null", [2, 4, 5, 6]),
             ("f=gt.1e300", [2]), ("f=lt.0", [3]), ("f=eq.nan", [2]),
             ("amount=gt.1&amount=lt.100", [1, 4, 5, 6]), ("%61mount=eq.10", [1]),
             ("item=gt.B", [1, 2, 3, 4, 5, 6]), ("id=in.(1,3,null)", [1, 3])]
    for q, want in cases:
        r = req("/feeds/orders?" + q)
        ok(r.status == 200 and ids(r) == want, "filter %s keeps %s" % (q, want),
           "%s %s" % (ids(r), r))
    for q, what in (("amount=100", "write amount=eq.100"), ("amount=", "write amount=eq.VALUE"),
                    ("amount=gt", "write amount=gt.VALUE"),
                    ("amount=gt.abc", "amount"), ("nope=eq.1", "nope"),
                    ("amount=xx.1", "xx"), ("j=eq.1", "j"), ("ok=eq.maybe", "ok"),
                    ("f=gt.1e400", "f"), ("item=in.(a", "in."), ("foo=1", "foo"),
                    ("=eq.1", None), ("id=eq.1.5.5", "id")):
        r = req("/feeds/orders?" + q)
        ok(is_error(r, 400, "bad_parameter", what), "?%s: 400 naming %r" % (q, what), r)


# ---------------------------------------------------------------------------
# Errors and paths
# ---------------------------------------------------------------------------

def check_errors():
    r = req("/feeds/nope")
    ok(is_error(r, 404, "unknown_feed", "nope"), "an unknown feed: 404 unknown_feed", r)
    for p in ("/feeds/orders/", "/feeds/orders/x"):
        r = req(p)
        ok(is_error(r, 404, "unknown_feed"), "%s: 404 unknown_feed" % p, r)
    r = req("/feeds/orders?" + "a" * 8200 + "=eq.1")
    ok(is_error(r, 400, "bad_parameter", "8192") or r.status == 414,
       "a query string over 8192 bytes: 400 (or nginx's 414 for the request line)", r)
    r = req("/feeds/orders?" + "a" * 8000 + "=eq.1")
    ok(is_error(r, 400, "bad_parameter", "a" * 50), "an 8000-byte query with an unknown "
       "column reaches the responder: 400 naming it", r)
    r = req("/feeds/orders?item=eq.%FF")
    ok(is_error(r, 400, "bad_parameter", "UTF-8"), "a parameter that is not UTF-8: 400", r)
    r = req("/feeds/orders?item=eq.a%00b")
    ok(is_error(r, 400, "bad_parameter", "NUL"), "a NUL in a parameter: 400", r)
    st = raw_status(b"GET /feeds/orders?" + b"x" * 20000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    ok(st in (400, 414), "a request line beyond nginx's buffer: %s (nginx's 4xx)" % st)
    r = req("/healthz")
    ok(r.status == 200 and r.body.strip() == b"ok" and r.h("cache-control") == "no-store",
       "/healthz: 200 ok", r)
    r = req("/healthz?x=1")
    ok(r.status in (200, 400), "/healthz with a parameter still answers", r)
    r = req("/feeds?cursor=1")
    ok(is_error(r, 400, "bad_parameter"), "/feeds with a parameter (unknown there): 400", r)


# ---------------------------------------------------------------------------
# Caching and gzip
# ---------------------------------------------------------------------------

def check_caching(pg):
    snap = req("/feeds/orders").json()
    insert(pg, "INSERT INTO orders VALUES (7, 'h', 9, true, NULL, 5)")
    wait_for(lambda: req("/feeds/orders?cursor=%s&timeout=0" % snap["cursor"]).json()
             .get("batches"), 10)
    lp = "/feeds/orders?cursor=%s" % snap["cursor"]
    for ae, want in (("gzip", True), ("x-gzip", True), ("*", True), ("gzip;q=0", False),
                     ("gzip;q=0.0", False), ("deflate, gzip;q=0.5", True), ("br", False),
                     (None, False), ("GZIP", True), ("*;q=0", False)):
        for path in ("/feeds/orders", lp):
            r = req(path, {"Accept-Encoding": ae} if ae else {})
            gz = r.h("content-encoding") == "gzip"
            body_ok = r.json() is not None
            ok(r.status == 200 and gz == want and body_ok and r.count("vary") == 1
               and r.h("vary") == "Accept-Encoding",
               "Accept-Encoding %s on %s: %s, one Vary: Accept-Encoding" %
               (ae, "a snapshot" if path == "/feeds/orders" else "a long-poll",
                "gzip" if want else "plain"), r)
    r = req("/feeds/orders?cursor=x", {"Accept-Encoding": "gzip"})
    ok(r.h("cache-control") == "no-store" and r.count("vary") <= 1,
       "an error: no-store, at most one Vary", r)


def check_metrics():
    r = req("/metrics")
    text = r.body.decode(errors="replace")
    ok(r.status == 200 and (r.h("content-type") or "").startswith("text/plain")
       and r.h("cache-control") == "no-store"
       and 'tailgate_feed_state{feed="orders",state="live"} 1' in text
       and 'tailgate_feed_lag_seconds{feed="orders"}' in text
       and "tailgate_slot_checked_timestamp_seconds" in text,
       "/metrics: Prometheus text with tailgate_feed_state, tailgate_feed_lag_seconds and "
       "the slot check", text[-1500:])
    th, res = check_longpoll.default
    th.join(40)
    r = res.get("r")
    ok(r and r.status == 200 and (r.json() or {}).get("batches") == [] and 24 < r.seconds < 28,
       "no timeout= : the long-poll is answered empty after the default 25 s (%.1f s)"
       % (r.seconds if r else -1), r)


def check_not_live(d):
    c = req("/feeds/orders").json()["cursor"]
    d.stop()
    info = wait_for(lambda: {f["name"]: f for f in req("/feeds").json()["feeds"]}
                    .get("orders", {}).get("state") in ("closed", "dead")
                    and req("/feeds").json(), 15)
    o = {f["name"]: f for f in (info or {}).get("feeds", [])}.get("orders", {})
    ok(o.get("live") is False and o.get("state") in ("closed", "dead"),
       "the daemon stopped: /feeds says live false, state %s" % o.get("state"), info)
    for path in ("/feeds/orders", "/feeds/orders?cursor=%s&timeout=1" % c,
                 "/feeds/orders,other", "/feeds/orders?stream=sse"):
        r = req(path, timeout=10)
        ok(is_error(r, 503, "feed_not_live"), "%s with the daemon stopped: 503 feed_not_live"
           % path, r)


# ---------------------------------------------------------------------------
# An operator's mistakes
# ---------------------------------------------------------------------------

def run(cmd, timeout=10):
    try:
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout)
        return p.returncode, p.stdout.decode(errors="replace")
    except subprocess.TimeoutExpired as e:
        return "timeout", (e.stdout or b"").decode(errors="replace")


def operator_mistakes(pg, tmp):
    fcgi_bin = os.path.join(builddir(), "tailgate-fcgi")
    d = os.path.join(tmp, "mistakes")
    os.mkdir(d)

    def conf(text):
        path = os.path.join(d, "tailgated.conf")
        with open(path, "w") as f:
            f.write(text)
        return path

    base = "source = postgresql\nconninfo = host=127.0.0.1 port=1\n"
    rc, out = run([TAILGATED, "-c", conf(base + "[feed a]\ntable = t\n"), "--check"])
    ok(rc != 0 and "ring_dir" in out, "tailgated without ring_dir: refused, naming ring_dir",
       out)
    rc, out = run([TAILGATED, "-c", conf(base + "ring_dir = %s\nring_dri = x\n[feed a]\n"
                                         "table = t\n" % d), "--check"])
    ok(rc != 0 and "ring_dri" in out, "tailgated with a misspelt key: refused, naming it", out)
    rc, out = run([TAILGATED, "-c", conf(base + "ring_dir = /proc/nope/ring\n[feed a]\n"
                                         "table = t\n")])
    ok(rc != 0 and "/proc/nope/ring" in out,
       "tailgated with a ring directory it cannot create: exits, naming it", out)
    rc, out = run([TAILGATED, "-c", os.path.join(d, "missing.conf")])
    ok(rc != 0 and "missing.conf" in out, "tailgated with a missing config: names the file",
       out)
    # A ring directory holding a segment of something else, and a second
    # daemon started on the same ring directory.
    rd = os.path.join(d, "two-daemons")
    os.mkdir(rd)
    with open(os.path.join(rd, "a.ring"), "wb") as f:
        f.write(b"not a ring" * 400)
    cf = conf(base + "ring_dir = %s\nbackoff_min_ms = 100\n[feed a]\ntable = t\n" % rd)
    log1 = open(os.path.join(d, "first.log"), "w+")
    first = subprocess.Popen([TAILGATED, "-c", cf], stdout=log1, stderr=subprocess.STDOUT)
    try:
        seen = wait_for(lambda: "not adopting the existing segment" in open(log1.name).read(), 10)
        text = open(log1.name).read()
        ok(seen and "a.ring: not a tailgate ring segment (bad magic)" in text,
           "tailgated finding a segment that is not its own: says so, naming the file, and "
           "makes a new one", text)
        rc, out = run([TAILGATED, "-c", cf], timeout=5)
        ok(rc not in (0, "timeout") and "in use by another tailgated (pid %d)" % first.pid in out,
           "a second tailgated on the same ring_dir: refused, naming the first one's pid", out)
    finally:
        first.terminate()
        first.wait(10)
        log1.close()

    rc, out = run([fcgi_bin, "--ring-dir", os.path.join(d, "no-such-dir"), "--socket",
                   os.path.join(d, "s.sock")], timeout=3)
    ok("warning ring directory %s" % os.path.join(d, "no-such-dir") in out,
       "tailgate-fcgi on a ring directory that does not exist: a warning naming it", out)
    rc, out = run([fcgi_bin, "--ring-dir", d, "--socket", os.path.join(d, "no", "s.sock")],
                  timeout=3)
    ok(rc not in (0, "timeout") and os.path.join(d, "no", "s.sock") in out,
       "tailgate-fcgi on a socket path whose directory is missing: exits, naming it", out)
    rc, out = run([fcgi_bin, "--ring-dir", d, "--socket", os.path.join(d, "t.sock"),
                   "--max-timeout", "90"], timeout=2)
    ok("fastcgi_read_timeout" in out and "--max-timeout 90" in out,
       "tailgate-fcgi --max-timeout 90 (beyond the snippet's fastcgi_read_timeout): a warning",
       out)
    rc, out = run([fcgi_bin, "--ring-dir", d], timeout=3)
    ok(rc not in (0, "timeout") and "socket" in out,
       "tailgate-fcgi with no socket given or inherited: exits, saying so", out)

    # nginx with no responder on the socket the upstream names.
    st = Stack(responders=0, base_dir=os.path.join(d, "stack0"))
    try:
        st.start()
        global PORT
        PORT = st.port
        r = req("/feeds/orders", timeout=10)
        ok(is_error(r, 502, "responder_unavailable", "tailgate-fcgi"),
           "nothing on the upstream's socket: nginx's 502 as the API's JSON error", r)
    finally:
        st.stop()

    # A ring written by another version: the responder refuses that feed
    # with a message naming the file, and serves the others.
    ring_dir = os.path.join(d, "ring")
    os.mkdir(ring_dir)
    st = Stack(ring_dir=ring_dir, base_dir=os.path.join(d, "stack"))
    try:
        st.start()
        PORT = st.port
        good = st.ringfeed("good", [("id", "int8")])
        good.batch(2, inserted=[[1]])
        bad = st.ringfeed("old", [("id", "int8")])
        bad.batch(2, inserted=[[1]])
        path = os.path.join(ring_dir, "old.ring")
        with open(path, "r+b") as f:
            f.seek(8)  # the layout version, after the 8-byte magic
            f.write(struct.pack("<I", 2))
        r = req("/feeds/old")
        log = st.responder_log()
        ok(r.status == 503 and (r.json() or {}).get("error") == "feed_not_live"
           and "version 2" in r.json().get("message", ""),
           "a ring of another format: 503 naming why (%s)" % (r.json() or {}).get("message"),
           "%r\n%s" % (r, log[-800:]))
        r = req("/feeds/good")
        ok(r.status == 200, "the other feeds are still served", r)
        # A feed served but not live says so in the head of each reply.
        ok(r.h("tailgate-feed-state") is None, "live: no Tailgate-Feed-State", r)
        good.cmd("state down")
        r = req("/feeds/good")
        ok(r.status == 200 and r.h("tailgate-feed-state") == "down"
           and r.h("tailgate-lag") is None and r.h("x-accel-expires") is None,
           "down: the snapshot says Tailgate-Feed-State: down (no Tailgate-Lag: this writer "
           "never confirmed the feed; nginx keeps X-Accel-Expires to itself)", r)
        out = fcgi(st.socket, {"REQUEST_METHOD": "GET", "PATH_INFO": "/feeds/good",
                               "QUERY_STRING": "cursor=%s&timeout=0" % r.json()["cursor"]})
        ok(b"Tailgate-Feed-State: down\r\n" in out and b"X-Accel-Expires: 0\r\n" in out,
           "down, from the responder itself: X-Accel-Expires: 0 beside the state headers",
           out[:400])
        good.cmd("state live")
        st.ringfeed("early", [("id", "int8")], starting=True)
        r = req("/feeds/early")
        o = {f["name"]: f for f in (req("/feeds").json() or {}).get("feeds", [])}.get("early", {})
        ok(is_error(r, 503, "feed_not_live") and o.get("state") == "starting"
           and o.get("live") is False,
           "a feed with no snapshot yet: 503 feed_not_live, /feeds says starting", r)
        r = req("/feeds")
        names = [f.get("name") for f in (r.json() or {}).get("feeds", [])]
        ok(r.status == 200 and "good" in names, "/feeds still lists the good feed", r)
    finally:
        st.stop()


if __name__ == "__main__":
    sys.exit(main())
