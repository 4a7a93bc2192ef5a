#!/usr/bin/env python3
"""follower.py - HTTP clients that follow a tailgate feed and check what they see.

A Follower is one client of the HTTP API (docs/API.md), as a browser's
tailgate.js would be, on its own thread (stdlib only; hundreds per process
are fine): it takes a snapshot of a feed through nginx, then follows it by
long-poll with the reply's cursor, or (mode="sse") by Server-Sent Events
resumed with Last-Event-ID.  It applies every batch to a local multiset of
rows and checks, as it goes:

  * every batch is after the cursor it asked with, and after the last one
    it applied: a batch seen twice or a cursor going backwards is a
    violation (a cursor is a position in the upstream's own order plus the
    history's identity, POSITION.IDENTITY: PostgreSQL commit LSNs and
    Materialize timestamps only grow, across daemon restarts and resyncs
    too; the follower sends cursors back as they came and reads their
    position only to check);
  * a long-poll reply's cursor is at or past its last batch's timestamp
    (the frontier it is complete at), and an empty reply never moves it
    back;
  * a deleted row was held (a missing batch usually shows here first);
  * a new snapshot at the cursor the follower already holds equals its
    table.

On 410 it takes a new snapshot and carries on (an SSE stream gets the
snapshot in-band, `event: snapshot`); on network errors and 5xx it retries
the same cursor with exponential backoff (50 ms doubling to 2 s, jittered).

What it cannot see by itself is a batch that was skipped without a 410.
Two oracles close that gap; the chaos tests use both while the load is
paused (every follower at the feed's head):

  * tables: `f.table()` (a Counter of rows) must equal the database's view
    at `f.cursor`: `rows_key(row)` gives the comparable form of a row
    parsed as the followers parse them (`parse_json`);
  * the ring: `f.take_unverified()` returns the cursor the follower's
    record starts from (its last snapshot, or the last verification) and
    the (cursor, digest) of every batch applied since; `verify_with_ring`
    compares them with `tailgate-ring dump FEED CURSOR`, which lists every
    batch the ring holds after that cursor: equal lists mean no batch was
    skipped, doubled or altered.  A client far behind may get one net
    batch instead (a batch with "from": docs/API.md, "Catching up"); it
    stands for every ring batch after the follower's previous one up to
    its timestamp, none of them at or before "from", and must equal their
    net effect (`compare_record`).

Python:

    import sys; sys.path.insert(0, "tests/chaos")
    from follower import Follower, verify_with_ring

    f = Follower("127.0.0.1", port, "winning_bids", mode="longpoll")  # or "sse"
    f.start()
    ...
    f.cursor, f.table(), f.stats, f.violations
    f.pause(); f.resume()      stop polling (cut the request or stream in flight,
                               wait until idle) / go on from the same cursor
    f.stop()

Followers never raise: problems are appended to f.violations (strings),
connections silent past io_timeout to f.stalls, counts kept in f.stats
(batches, replies, snapshots, gone, errors, stalls, ...).
"""

import collections
import http.client
import json
import random
import socket
import subprocess
import threading
import time

__all__ = ["Follower", "parse_json", "rows_key", "batch_digest", "batch_delta", "compare_record",
           "verify_with_ring"]

BACKOFF_MIN = 0.05
BACKOFF_MAX = 2.0
MAX_VIOLATIONS = 50  # per follower; later ones only counted


def parse_json(text):
    """JSON with numbers kept as their text, so that 1.50 and 1.5 differ
    exactly as the database's text does, and nothing is re-rounded."""
    return json.loads(text, parse_int=str, parse_float=str)


def rows_key(row):
    """A row (a parsed JSON array) as a hashable, comparable key."""
    return json.dumps(row, separators=(",", ":"), ensure_ascii=False)


def batch_digest(batch):
    """What identifies a batch's content: its rows in order, inserted and deleted."""
    return hash((rows_key(batch.get("inserted", [])), rows_key(batch.get("deleted", []))))


def batch_delta(batch):
    """A batch's effect on a table: {row key: inserted minus deleted}, zeros
    left out.  The net effect of several batches is the sum of theirs."""
    d = collections.Counter()
    for r in batch.get("inserted", []):
        d[rows_key(r)] += 1
    for r in batch.get("deleted", []):
        d[rows_key(r)] -= 1
    return {k: n for k, n in d.items() if n != 0}


class _Gone(Exception):
    pass


class _Retry(Exception):
    pass


class Follower(threading.Thread):
    """One client following one feed; see the module docstring."""

    def __init__(self, host, port, feed, mode="longpoll", name=None, poll_timeout=5,
                 prefix="/feeds/", sse_query=False, io_timeout=None):
        super().__init__(name=name or "follower-%s-%s" % (feed, mode), daemon=True)
        if mode not in ("longpoll", "sse"):
            raise ValueError("mode must be longpoll or sse")
        self.host, self.port, self.feed, self.mode = host, port, feed, mode
        self.poll_timeout = poll_timeout
        self.prefix = prefix
        self.sse_query = sse_query  # ?stream=sse instead of the Accept header
        # Silence longer than this on a connection is a stall (counted in
        # stats["stalls"], noted in self.stalls): a long-poll is answered by
        # its timeout, an SSE stream carries a keep-alive comment at least
        # every --sse-keepalive seconds (15 by default).
        self.io_timeout = io_timeout or (poll_timeout + 15 if mode == "longpoll" else 20)
        self.stalls = []
        self._lock = threading.Lock()
        self._halt = threading.Event()
        self._running = threading.Event()  # cleared while paused
        self._running.set()
        self._idle = threading.Event()     # set while paused
        self._conn = None
        self._resync = False
        self._table = collections.Counter()
        self.cursor = None          # int: the position of the last batch applied
        self.token = None           # the server's cursor, opaque: sent back as is
        self.verify_from = None     # int: where the unverified record starts
        self._record = []           # [(cursor, digest)] applied since verify_from
        self.violations = []
        self.n_violations = 0
        self.stats = collections.Counter()
        self.last_error = None
        self.last_progress = time.monotonic()

    # ---- control (any thread) ----

    def stop(self):
        self._halt.set()
        self._running.set()
        self._break()

    def pause(self, timeout=10):
        """Stop asking for batches (the request in flight or the SSE stream
        is cut) and wait until the thread is idle, so that the cursor no
        longer moves; resume() goes on from that cursor."""
        self._running.clear()
        self._break()
        return self._idle.wait(timeout)

    def resume(self):
        self._running.set()

    @property
    def paused(self):
        return not self._running.is_set()

    def table(self):
        with self._lock:
            return collections.Counter(self._table)

    def state(self):
        """(cursor, table copy), consistent with each other."""
        with self._lock:
            return self.cursor, collections.Counter(self._table)

    def take_unverified(self):
        """(verify_from, record, cursor): the record of batches applied after
        verify_from, up to the current cursor; the record restarts there."""
        with self._lock:
            out = (self.verify_from, self._record, self.cursor)
            self.verify_from = self.cursor
            self._record = []
            return out

    # ---- bookkeeping ----

    def _violate(self, msg):
        self.n_violations += 1
        self.stats["violations"] += 1
        if len(self.violations) < MAX_VIOLATIONS:
            self.violations.append("%s: %s" % (self.name, msg))

    def _reset(self, batch, cursor):
        """A snapshot batch at cursor: the table starts over from it."""
        new = collections.Counter(rows_key(r) for r in batch.get("inserted", []))
        if batch.get("deleted"):
            self._violate("snapshot at %d has deleted rows" % cursor)
        with self._lock:
            if self.cursor is not None:
                if cursor < self.cursor:
                    self._violate("snapshot cursor %d is before the cursor %d already held"
                                  % (cursor, self.cursor))
                elif cursor == self.cursor and new != self._table:
                    self._violate("snapshot at %d differs from the table held at that cursor "
                                  "(%d rows vs %d)" % (cursor, sum(new.values()),
                                                       sum(self._table.values())))
            self._table = new
            self.cursor = cursor
            self.verify_from = cursor
            # Batches applied since the last verification, superseded by
            # this snapshot: the ring may no longer hold them.
            self.stats["unverified_resync"] += len(self._record)
            self._record = []
        self.stats["snapshots"] += 1
        self.stats["snapshot_rows"] += sum(new.values())
        self.last_progress = time.monotonic()

    def _apply(self, batch, asked):
        """One batch after cursor `asked` (the reply's request cursor).  A
        batch with "from" (a catch-up: the net effect of the positions
        (from, timestamp], docs/API.md) must start at or after asked and
        be net: no row both deleted and inserted.  Whether it is the net
        effect of the ring's batches there is verify_with_ring's check."""
        try:
            ts = int(batch["timestamp"])
            frm = int(batch["from"]) if "from" in batch else None
        except (KeyError, TypeError, ValueError):
            self._violate("batch without a numeric timestamp or from: %.200r" % (batch,))
            return
        with self._lock:
            if ts <= asked:
                self._violate("batch %d not after the position %d asked after" % (ts, asked))
                return
            if ts <= self.cursor:
                self._violate("batch %d not after the cursor %d held (asked after %s): "
                              "seen twice or out of order" % (ts, self.cursor, asked))
                return
            if frm is not None:
                both = ({rows_key(r) for r in batch.get("inserted", [])} &
                        {rows_key(r) for r in batch.get("deleted", [])})
                if frm < asked or frm >= ts:
                    self._violate("net batch (%d, %d] does not start at or after the position "
                                  "%d asked after" % (frm, ts, asked))
                    return
                if both:
                    self._violate("net batch (%d, %d] both deletes and inserts %d rows: %.200s"
                                  % (frm, ts, len(both), sorted(both)[0]))
            t = self._table
            for r in batch.get("deleted", []):
                k = rows_key(r)
                if t[k] <= 0:
                    self._violate("batch %d deletes a row not held: %.200s" % (ts, k))
                    del t[k]
                else:
                    t[k] -= 1
                    if t[k] == 0:
                        del t[k]
            for r in batch.get("inserted", []):
                t[rows_key(r)] += 1
            self.cursor = ts
            if frm is None:
                self._record.append((ts, batch_digest(batch)))
            else:
                self._record.append((ts, batch_digest(batch), frm, batch_delta(batch)))
                self.stats["net_batches"] += 1
        self.stats["batches"] += 1
        self.last_progress = time.monotonic()

    # ---- HTTP ----

    def _break(self):
        c = self._conn
        if c is not None and c.sock is not None:
            try:
                c.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _close(self):
        c, self._conn = self._conn, None
        if c is not None:
            try:
                c.close()
            except Exception:
                pass

    def _stalled(self, what):
        self.stats["stalls"] += 1
        if len(self.stalls) < MAX_VIOLATIONS:
            self.stalls.append("%s: %s silent for %.0f s at cursor %s" % (
                self.name, what, self.io_timeout, self.cursor))

    def _request(self, path, headers=None):
        if self._conn is None:
            self._conn = http.client.HTTPConnection(self.host, self.port,
                                                    timeout=self.io_timeout)
        try:
            self._conn.request("GET", path, headers=headers or {})
            return self._conn.getresponse()
        except (OSError, http.client.HTTPException) as e:
            self._close()
            if isinstance(e, socket.timeout) and self._running.is_set():
                self._stalled("request " + path)
            raise _Retry("%s: %s" % (type(e).__name__, e))

    def _get_json(self, path):
        r = self._request(path)
        try:
            body = r.read()
        except (OSError, http.client.HTTPException) as e:
            self._close()
            if isinstance(e, socket.timeout) and self._running.is_set():
                self._stalled("reply to " + path)
            raise _Retry("reading: %s: %s" % (type(e).__name__, e))
        if r.getheader("Connection", "").lower() == "close":
            self._close()
        self.stats["status_%d" % r.status] += 1
        if r.status == 410:
            try:
                err = parse_json(body)
                if not isinstance(err.get("error"), str):
                    raise ValueError
            except (ValueError, AttributeError):
                self._violate("a 410 without a JSON error body: %.200r" % body)
            raise _Gone()
        if r.status != 200:
            raise _Retry("HTTP %d: %.200r" % (r.status, body))
        try:
            return parse_json(body)
        except ValueError:
            self._violate("a 200 reply that is not JSON: %.200r" % body)
            raise _Retry("not JSON")

    # ---- the loops ----

    def run(self):
        delay = BACKOFF_MIN
        while not self._halt.is_set():
            if not self._running.is_set():
                self._close()
                self._idle.set()
                self._running.wait()
                self._idle.clear()
                continue
            try:
                if self.mode == "sse":
                    self._sse_session()
                elif self.token is None or self._resync:
                    self._snapshot()
                else:
                    self._poll()
                delay = BACKOFF_MIN
            except _Gone:
                # Take a new snapshot next.  The table stays as it is until
                # the snapshot replaces it (a 410 says "resync", not "your
                # table is wrong"): _reset compares them at an equal cursor.
                self.stats["gone"] += 1
                self._resync = True
            except _Retry as e:
                if self._halt.is_set() or not self._running.is_set():
                    continue
                self.stats["errors"] += 1
                self.last_error = str(e)
                self._close()
                self._halt.wait(delay / 2 + random.random() * delay / 2)
                delay = min(delay * 2, BACKOFF_MAX)
        self._close()

    def _snapshot(self):
        obj = self._get_json(self.prefix + self.feed)
        batches = obj.get("batches") or []
        if not batches:
            self._violate("a snapshot reply without the snapshot batch: %.200r" % (obj,))
            raise _Retry("empty snapshot")
        snap = batches[0]
        cur = int(snap["timestamp"])
        self._reset(snap, cur)
        for b in batches[1:]:
            self._apply(b, cur)
        self._check_reply_cursor(obj, batches[1:], cur)
        self._resync = False

    def _check_reply_cursor(self, obj, batches, asked):
        """The reply's cursor is the position it is complete at: at or past
        its last batch (the frontier), never behind the request's.  The
        follower sends it back as is (it is opaque to clients); this test
        reads its position (POSITION.IDENTITY) to check it."""
        try:
            rc = position(obj["cursor"])
        except (KeyError, TypeError, ValueError, AttributeError):
            self._violate("a reply without a cursor: %.200r" % (obj,))
            return
        if batches:
            last = int(batches[-1]["timestamp"])
            if rc < last:
                self._violate("reply cursor %d is before its last batch's %d" % (rc, last))
        elif rc < asked:
            self._violate("an empty reply moved the cursor back from %d to %d" % (asked, rc))
        with self._lock:
            if rc < self.cursor:
                self._violate("reply cursor %d but the table is at %d" % (rc, self.cursor))
            self.token = obj["cursor"]

    def _poll(self):
        token = self.token
        asked = position(token)
        obj = self._get_json("%s%s?cursor=%s&timeout=%d" % (self.prefix, self.feed, token,
                                                            self.poll_timeout))
        self.stats["replies"] += 1
        batches = obj.get("batches") or []
        for b in batches:
            self._apply(b, asked)
        self._check_reply_cursor(obj, batches, asked)

    def _sse_session(self):
        headers = {}
        path = self.prefix + self.feed
        if self.sse_query:
            path += "?stream=sse"
        else:
            headers["Accept"] = "text/event-stream"
        if self.token is not None:
            headers["Last-Event-ID"] = self.token
        # One connection per stream: it ends with the stream.
        self._close()
        r = self._request(path, headers)
        self.stats["status_%d" % r.status] += 1
        if r.status != 200:
            try:
                body = r.read()
            except (OSError, http.client.HTTPException):
                body = b""
            self._close()
            raise _Retry("HTTP %d: %.200r" % (r.status, body))
        self.stats["streams"] += 1
        event, ident, data = None, None, []
        try:
            while not self._halt.is_set() and self._running.is_set():
                line = r.readline()
                if not line:
                    raise _Retry("stream ended")
                line = line.decode("utf-8").rstrip("\r\n")
                if line == "":
                    if data or event:
                        self._sse_event(event, ident, "\n".join(data))
                    event, ident, data = None, None, []
                    continue
                if line.startswith(":"):
                    self.stats["sse_comments"] += 1
                    self.last_progress = time.monotonic()
                    continue
                field, _, value = line.partition(":")
                if value.startswith(" "):
                    value = value[1:]
                if field == "event":
                    event = value
                elif field == "id":
                    ident = value
                elif field == "data":
                    data.append(value)
                elif field == "retry":
                    pass
                else:
                    self._violate("unknown SSE field %r" % field)
        except (OSError, http.client.HTTPException, ValueError) as e:
            if isinstance(e, socket.timeout) and self._running.is_set():
                self._stalled("SSE stream")
            raise _Retry("stream: %s: %s" % (type(e).__name__, e))
        finally:
            self._close()

    def _sse_event(self, event, ident, data):
        try:
            batch = parse_json(data)
            cur = position(ident)
        except (TypeError, ValueError, AttributeError):
            self._violate("bad SSE event %r id %r: %.200r" % (event, ident, data))
            return
        if str(batch.get("timestamp")) != str(cur):
            self._violate("SSE id %s is not the batch's timestamp %s" %
                          (ident, batch.get("timestamp")))
        if event == "snapshot":
            if self.cursor is not None:
                self.stats["gone"] += 1  # an in-band resync: SSE's 410
            self._reset(batch, cur)
        elif event is None:
            if self.cursor is None:
                self._violate("an SSE batch before any snapshot")
                return
            self._apply(batch, self.cursor)
        else:
            self._violate("unknown SSE event %r" % event)
            return
        with self._lock:
            self.token = ident


def position(cursor):
    """The upstream position of a cursor (POSITION.IDENTITY): clients treat
    cursors as opaque; this test checks their order."""
    return int(str(cursor).split(".")[0])


def _dump(ring_tool, ring_dir, feed, cursor):
    """Batches the ring holds after cursor: [(cursor, digest, batch)], or None
    when the cursor is gone (lapped, or another history)."""
    p = subprocess.run([ring_tool, "-d", ring_dir, "dump", feed, str(cursor)],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if p.returncode != 0:
        return None
    out = []
    for line in p.stdout.splitlines():
        rec = parse_json(line)
        if rec.get("restart"):
            return None  # lapped while reading
        out.append((int(rec["cursor"]), batch_digest(rec["batch"]), rec["batch"]))
    return out


def compare_record(start, record, held):
    """What is wrong with a follower's record after start (its entries
    (cursor, digest) for a batch, (cursor, digest, from, delta) for a net
    batch) against held, the ring's [(cursor, digest, batch)] after start up
    to the follower's cursor: a list of strings, empty when every batch is
    the ring's next one and every net batch (from, cursor] stands for the
    ring's batches after the previous entry up to its cursor, none of them
    at or before from, and equals their net effect (batch_delta summed)."""
    problems = []
    i, prev = 0, start
    for e in record:
        c = e[0]
        if len(e) == 2:
            if i < len(held) and held[i][0] == c and held[i][1] == e[1]:
                i, prev = i + 1, c
                continue
            ring_next = held[i][0] if i < len(held) else None
            if ring_next == c:
                problems.append("batch %d differs from the ring's" % c)
            else:
                problems.append("after %d the follower applied batch %d, the ring's next is %s "
                                "(skipped, doubled or not in the ring)" % (prev, c, ring_next))
            break
        frm, delta = e[2], e[3]
        j = i
        while j < len(held) and held[j][0] <= c:
            j += 1
        covered = held[i:j]
        before = [h[0] for h in covered if h[0] <= frm]
        net = collections.Counter()
        for h in covered:
            if h[0] > frm:
                net.update(batch_delta(h[2]))
        net = {k: n for k, n in net.items() if n != 0}
        if before:
            problems.append("net batch (%d, %d] after %d skips the ring's batches %s"
                            % (frm, c, prev, before[:5]))
        if not covered:
            problems.append("net batch (%d, %d] stands for no batch of the ring" % (frm, c))
        if net != delta:
            extra = sorted(k for k in set(delta) | set(net) if delta.get(k) != net.get(k))
            problems.append("net batch (%d, %d] is not the net effect of the ring's %d batches "
                            "there: %d rows differ, e.g. %s (batch %+d, ring %+d)" % (
                                frm, c, len(covered), len(extra), extra[0][:120],
                                delta.get(extra[0], 0), net.get(extra[0], 0)))
        if problems:
            break
        i, prev = j, c
    else:
        if i < len(held):
            problems.append("the ring holds %d batches after %d the follower skipped: %s"
                            % (len(held) - i, prev, [h[0] for h in held[i:i + 5]]))
    return problems


def verify_with_ring(followers, ring_tool, ring_dir, feed):
    """Compare every follower's record since its last verification with the
    ring's batches after that cursor, up to the follower's cursor
    (compare_record: batches one for one, a net batch against the net
    effect of the ring's batches it stands for).  Works while the feed
    moves (the dump is taken after the records, so it holds at least as
    much).  Returns (verified, unverifiable, problems): batches matched
    (a net batch counts the ring batches it stands for), batches that
    could not be checked (the ring no longer holds their start: lapped,
    or a new history), and a list of strings.  Each follower's record
    restarts at its cursor."""
    taken = [(f, f.take_unverified()) for f in followers]
    verified = unverifiable = 0
    problems = []
    dumps = {}  # start cursor -> [(cursor, digest, batch)] or None

    def after(start):
        if start in dumps:
            return dumps[start]
        # A dump from an earlier cursor covers every later start in it.
        for s, d in dumps.items():
            if d is None or s > start:
                continue
            for i, (c, _, _) in enumerate(d):
                if c == start:
                    return d[i + 1:]
        dumps[start] = _dump(ring_tool, ring_dir, feed, start)
        return dumps[start]

    for f, (start, record, end) in sorted(taken, key=lambda t: t[1][0] or 0):
        if start is None or not record:
            continue
        held = after(start)
        # The last batch applied one for one must be held (a net batch's
        # cursor is the frontier, often past the ring's last batch).
        last_plain = max([e[0] for e in record if len(e) == 2], default=None)
        if (held is None or not held or
                (last_plain is not None and held[-1][0] < last_plain)):
            unverifiable += len(record)  # gone, or the ring is another history
            continue
        want = [h for h in held if h[0] <= end]
        p = compare_record(start, record, want)
        if not p:
            verified += len(want)
            continue
        problems.append("%s: after cursor %d up to %d the ring holds %d batches, the follower "
                        "applied %d (%d net): %s" % (
                            f.name, start, end, len(want), len(record),
                            sum(1 for e in record if len(e) > 2), "; ".join(p)))
    return verified, unverifiable, problems
