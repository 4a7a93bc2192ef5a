#!/usr/bin/env python3
"""restart_pg.py - long-poll clients survive daemon restarts under load.

A real PostgreSQL with the auction house and tailgate-loadgen writing it,
tailgated with permanent slots, tailgate-fcgi and nginx
(tests/lib/stack.py).  HTTP clients follow winning_bids and top_buyers as
tailgate.js does (snapshot, then long-poll with the last cursor; a 410
takes a new snapshot; a 502/503 or a dropped connection retries the same
cursor): some with the default timeout (parked at the head between
batches), some with timeout=1 (polling continuously).  The daemon is
stopped (SIGTERM) and started again several times; it adopts its segments
and resumes its slots.  After each restart every client must reach the
cursor a fresh snapshot shows within a bound, and at the end, with the
load paused, every client's rows must equal the table.

Environment: top_builddir, top_srcdir (automake).  Skips (77) without
PostgreSQL.  TAP output.
"""
import collections
import gzip
import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time

top_srcdir = os.environ.get("top_srcdir", ".")
sys.path.insert(0, os.path.join(top_srcdir, "tests", "lib"))
sys.path.insert(0, os.path.join(top_srcdir, "tests"))
from pg import skip_unless_pg  # noqa: E402
from tap import done, ok, wait_for  # noqa: E402
from env import test_env  # noqa: E402
from daemon_pg import LOADGEN, TAILGATED, AUCTION_COLS, Daemon, db_rows, norm  # noqa: E402

RESTARTS = 6
CATCH_UP_S = 15  # a client reaches the snapshot's cursor within this
COLS = {"winning_bids": AUCTION_COLS, "top_buyers": ["buyer", "name", "wins", "total_amount"]}


def rows_of(batch):
    def conv(rows):
        return collections.Counter(tuple(norm(v) for v in r) for r in rows)
    return conv(batch.get("inserted", [])), conv(batch.get("deleted", []))


class Client(threading.Thread):
    """One tailgate.js-like follower of a feed over HTTP."""

    def __init__(self, st, feed, timeout, gzip):
        super().__init__(daemon=True)
        self.st, self.feed, self.timeout, self.gzip = st, feed, timeout, gzip
        self.name = "%s/timeout=%s%s" % (feed, timeout, "/gzip" if gzip else "")
        self.cursor = None
        self.state = collections.Counter()
        self.lock = threading.Lock()
        self.stop = False
        self.log = collections.deque(maxlen=12)  # recent replies, for diagnostics

    def get(self, path, timeout):
        c = http.client.HTTPConnection("127.0.0.1", self.st.port, timeout=timeout)
        try:
            c.request("GET", path, headers={"Accept-Encoding": "gzip"} if self.gzip else {})
            r = c.getresponse()
            body = r.read()
            if r.getheader("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            return r.status, body
        finally:
            c.close()

    def poll_once(self):
        if self.cursor is None:
            path = "/feeds/%s" % self.feed
        else:
            path = "/feeds/%s?cursor=%s" % (self.feed, self.cursor)
            if self.timeout is not None:
                path += "&timeout=%d" % self.timeout
        t0 = time.monotonic()
        try:
            status, body = self.get(path, 40)
        except (OSError, http.client.HTTPException) as e:
            self.log.append("%s: %s" % (path, e))
            time.sleep(0.2)
            return
        obj = json.loads(body or b"{}", parse_int=str, parse_float=str) if body else {}
        self.log.append("%s: %d in %.1f s, cursor %s, %d batches" % (
            path, status, time.monotonic() - t0, obj.get("cursor"), len(obj.get("batches", []))))
        if status == 410:
            with self.lock:
                self.cursor = None
            return
        if status != 200:
            time.sleep(0.2)
            return
        with self.lock:
            batches = obj["batches"]
            if self.cursor is None:
                self.state = collections.Counter()
            for b in batches:
                ins, dels = rows_of(b)
                self.state.subtract(dels)
                self.state.update(ins)
            self.cursor = obj["cursor"]

    def run(self):
        while not self.stop:
            self.poll_once()

    def snapshot(self):
        with self.lock:
            return self.cursor, +self.state


def api_snapshot(st, feed):
    """The feed's cursor and rows as a fresh snapshot shows them."""
    status, _, body = st.get("/feeds/%s" % feed, timeout=10)
    if status != 200:
        return None
    obj = json.loads(body, parse_int=str, parse_float=str)
    rows = collections.Counter()
    for b in obj["batches"]:
        ins, dels = rows_of(b)
        rows.subtract(dels)
        rows.update(ins)
    return obj["cursor"], +rows


def feeds_live(st):
    try:
        status, obj = st.get_json("/feeds", timeout=10)
    except Exception:
        return False
    return status == 200 and all(f.get("state") == "live" for f in obj.get("feeds", [])
                                 if f["name"] in COLS)


def caught_up(clients, want):
    """Every client at the snapshot's cursor or, the load paused, holding its
    rows (a cursor is a position: the snapshot's may have moved on without a
    batch, which a parked client learns only at its timeout)."""
    return all(c.snapshot()[0] == want[c.feed][0] or c.snapshot()[1] == want[c.feed][1]
               for c in clients)


def lagging(clients, want):
    return "; ".join("%s at %s, snapshot at %s, recent: %s" % (
        c.name, c.snapshot()[0], want[c.feed][0], " | ".join(list(c.log)[-4:]))
        for c in clients if not caught_up([c], want))


def quiet_cursors(st, load):
    """Pause the load; the feeds' snapshots (cursor, rows) once their rows
    hold still (0.5 s)."""
    load.send_signal(signal.SIGSTOP)
    last, since = None, time.monotonic()
    while time.monotonic() - since < 10:
        now = {f: api_snapshot(st, f) for f in COLS}
        if not all(now.values()):
            time.sleep(0.1)
            continue
        if last is None or any(now[f][1] != last[f][1] for f in COLS):
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= 0.5:
            break
        time.sleep(0.1)
    return last


def main():
    skip = skip_unless_pg(TAILGATED, LOADGEN)
    if skip is not None:
        return skip
    with test_env("restart", start_stack=False) as env:
        pg, st = env.pg, env.st
        os.chmod(env.ring_dir, 0o755)
        d = load = None
        clients = []

        def stop_workload():
            """The clients, the load, the daemon: before the stack."""
            for c in clients:
                c.stop = True
            if load is not None:
                load.send_signal(signal.SIGCONT)
                load.terminate()
                load.wait()
            if d is not None:
                d.stop()
        env.at_end(stop_workload)
        pg.psql(file=os.path.join(top_srcdir, "sql", "auction_house.sql"))
        load = subprocess.Popen([LOADGEN, "-d", pg.dsn, "-r", "40", "-q", "--seed", "7"],
                                stdout=open(os.path.join(env.tmp, "loadgen.log"), "ab"),
                                stderr=subprocess.STDOUT)
        d = Daemon(pg, env.ring_dir, {f: {"table": f, "permanent_slot": "yes"} for f in COLS})
        d.start()
        st.start()
        ok(wait_for(lambda: feeds_live(st), 60), "the feeds are live under load",
           d.log_text()[-1500:])
        # Auctions close 10 s after they open: then winning_bids fills.
        ok(wait_for(lambda: sum(db_rows(pg, AUCTION_COLS, "winning_bids").values()) >= 20, 40),
           "the load closes auctions")
        for feed in COLS:
            for timeout in (None, 1):
                for gz in (False, True):
                    clients.append(Client(st, feed, timeout, gz))
        for c in clients:
            c.start()
        ok(wait_for(lambda: all(c.snapshot()[0] is not None for c in clients), 30),
           "%d clients follow the feeds" % len(clients))

        for i in range(RESTARTS):
            # Odd rounds with the load paused: the clients park at the
            # head and stay parked across the restart.  From round 3 on the
            # daemon ends with SIGKILL (what a stop that takes too long gets).
            quiet, kill = i % 2 == 1, i >= 2
            if quiet:
                load.send_signal(signal.SIGSTOP)
                time.sleep(0.5)  # its last transaction commits
            if kill:
                d.proc.kill()
                d.proc.wait()
                d.proc = None
            else:
                d.stop()
            d.start()
            if quiet:
                time.sleep(1)
                load.send_signal(signal.SIGCONT)
            live = wait_for(lambda: feeds_live(st), 30)
            # Some batches after the restart, then quiet: every client must
            # reach what a snapshot shows (with the load running a client
            # is a batch behind now and then).
            time.sleep(1)
            want = quiet_cursors(st, load)
            fine = live and want is not None and wait_for(lambda: caught_up(clients, want),
                                                            CATCH_UP_S)
            load.send_signal(signal.SIGCONT)
            ok(fine, "restart %d: live again, every client reaches the snapshot "
               "within %d s" % (i + 1, CATCH_UP_S),
               "live %s: %s\n%s" % (live, want and lagging(clients, want),
                                    d.log_text()[-1200:]))
            if not fine:
                break
            # Some traffic before the next restart: every client moves on.
            moved = {c: c.snapshot()[0] for c in clients}
            wait_for(lambda: all(c.snapshot()[0] != moved[c] for c in clients), 5)

        want = quiet_cursors(st, load)  # the tables hold still
        wait_for(lambda: want is not None and caught_up(clients, want), CATCH_UP_S)
        for feed, cols in COLS.items():
            table = db_rows(pg, cols, feed)
            bad = [c for c in clients if c.feed == feed and c.snapshot()[1] != table]
            ok(not bad, "%s: every client's rows equal the table (%d rows)" % (
                feed, sum(table.values())),
               "; ".join("%s at %s: %d rows, extra %s, missing %s" % (
                   c.name, c.snapshot()[0], sum(c.snapshot()[1].values()),
                   list((c.snapshot()[1] - table).items())[:3],
                   list((table - c.snapshot()[1]).items())[:3]) for c in bad))
    return done()


if __name__ == "__main__":
    sys.exit(main())
