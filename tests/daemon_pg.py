#!/usr/bin/env python3
"""daemon_pg.py - tailgated's PostgreSQL source against a real server.

Starts a private PostgreSQL 15 (tests/lib/pg.py), loads the auction house,
runs tailgated with source = postgresql and reads each feed back with
`tailgate-ring dump` (snapshot + batches applied as a multiset), comparing
it with the table.  TAP output.

  1. snapshot + stream exactness under concurrent writes: the daemon starts
     while tailgate-loadgen writes; every feed equals its table at the end
     (a row written during the snapshot appears exactly once)
  2. UPDATE (delete old + insert new, one batch), DELETE, TRUNCATE (alone,
     then inserts, and after inserts in one transaction), unchanged TOAST
  3. one transaction touching two feeds: one batch each, same cursor
  4. a 100,000-row transaction: one batch
  5. server restart: reconnect, no loss, clients keep their cursor
  6. daemon restart with a permanent slot (SIGTERM, then kill -9): the new
     daemon adopts the segment, resumes the slot without a new snapshot, and
     a client's cursor from before the restart gets exactly the changes made
     while the daemon was down (no 410, no duplicate, no gap); a reader that
     kept the segment mapped across a kill -9 is woken by the new daemon

Environment: top_builddir, top_srcdir (automake), TAILGATED (the daemon
binary, default $top_builddir/tailgated).  Skips (77) without PostgreSQL.
"""
import collections
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

top_srcdir = os.environ.get("top_srcdir", ".")
top_builddir = os.environ.get("top_builddir", ".")
sys.path.insert(0, os.path.join(top_srcdir, "tests", "lib"))
from pg import PgCluster, skip_unless_pg  # noqa: E402
from tap import done, ok, wait_for  # noqa: E402
from util import sanitizer_reports  # noqa: E402

TAILGATED = os.environ.get("TAILGATED", os.path.join(top_builddir, "tailgated"))
RING = os.environ.get("TAILGATE_RING", os.path.join(top_builddir, "tailgate-ring"))
LOADGEN = os.environ.get("TAILGATE_LOADGEN", os.path.join(top_builddir, "tailgate-loadgen"))


def norm(v):
    if v is True:
        return "t"
    if v is False:
        return "f"
    return v


class Feed:
    """A feed read back from its ring: state (multiset) and batches."""

    def __init__(self, ring_dir, name):
        self.ring_dir, self.name = ring_dir, name

    def dump(self, cursor=None):
        argv = [RING, "-d", self.ring_dir, "dump", self.name] + ([cursor] if cursor else [])
        p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        return p.returncode, p.stdout, p.stderr

    def read(self):
        rc, out, err = self.dump()
        if rc != 0:
            return None, []
        state = collections.Counter()
        batches = []
        first = True
        for line in out.splitlines():
            rec = json.loads(line, parse_int=str, parse_float=str)
            if rec.get("restart"):
                state.clear()
                batches = []
                first = True
                continue
            b = rec["batch"]
            ins = [tuple(norm(v) for v in r) for r in b["inserted"]]
            dels = [tuple(norm(v) for v in r) for r in b["deleted"]]
            if first:
                state = collections.Counter(ins)
                first = False
            else:
                state.subtract(collections.Counter(dels))
                state.update(collections.Counter(ins))
                batches.append((rec["cursor"], ins, dels))
        return +state, batches


def apply_after(state, out):
    """Apply `tailgate-ring dump FEED CURSOR` output (the batches after a
    cursor) to a copy of state; also return the batches' cursors."""
    state = collections.Counter(state)
    cursors = []
    for line in out.splitlines():
        rec = json.loads(line, parse_int=str, parse_float=str)
        b = rec["batch"]
        state.subtract(collections.Counter(tuple(norm(v) for v in r) for r in b["deleted"]))
        state.update(collections.Counter(tuple(norm(v) for v in r) for r in b["inserted"]))
        cursors.append(int(rec["cursor"]))
    return state, cursors


def client_catches_up(pg, feed, held_state, held_cursor, cols, table):
    """A client at held_cursor with held_state asks for what came after:
    (served, equal to the table, cursors) once it catches up, or a diag."""
    deadline = time.monotonic() + 30
    while True:
        rc, out, err = feed.dump(held_cursor)
        if rc != 0:
            return False, False, [], "dump %s %s: exit %d: %s" % (feed.name, held_cursor, rc, err)
        state, cursors = apply_after(held_state, out)
        want = db_rows(pg, cols, table)
        if +state == want and all(v >= 0 for v in state.values()):
            return True, True, cursors, ""
        if time.monotonic() > deadline:
            return True, False, cursors, "held+after: %d rows, table %d; extra %s; missing %s" % (
                sum((+state).values()), sum(want.values()), list((+state - want).items())[:5],
                list((want - +state).items())[:5])
        time.sleep(0.2)


def maps_file(pid, prefix):
    """Whether process pid has a file starting with prefix mapped."""
    try:
        with open("/proc/%d/maps" % pid) as f:
            return any(" " + prefix in line for line in f)
    except OSError:
        return False


def db_rows(pg, cols, table, where=None):
    sql = "SELECT json_build_array(%s)::text FROM %s%s" % (
        ", ".join("%s::text" % c for c in cols), table, " WHERE " + where if where else "")
    out = pg.psql(sql)
    return collections.Counter(tuple(json.loads(line)) for line in out.splitlines() if line)


def wait_equal(pg, feed, cols, table, where=None, timeout=30):
    deadline = time.monotonic() + timeout
    while True:
        want = db_rows(pg, cols, table, where)
        got, batches = feed.read()
        if got is not None and got == want:
            return True, batches, ""
        if time.monotonic() > deadline:
            got = got or collections.Counter()
            missing = want - got
            extra = got - want
            return False, batches, "feed %s: %d rows, table %d; missing %s; extra %s" % (
                feed.name, sum(got.values()), sum(want.values()),
                list(missing.items())[:5], list(extra.items())[:5])
        time.sleep(0.2)


class Daemon:
    def __init__(self, pg, ring_dir, feeds):
        self.dir = ring_dir
        self.conf = os.path.join(ring_dir, "tailgated.conf")
        self.log = os.path.join(ring_dir, "tailgated.log")
        with open(self.conf, "w") as f:
            f.write("source = postgresql\nconninfo = %s\nring_dir = %s\n"
                    "backoff_min_ms = 100\nbackoff_max_ms = 1000\n\n" % (pg.dsn, ring_dir))
            for name, opts in feeds.items():
                f.write("[feed %s]\n" % name)
                for k, v in opts.items():
                    f.write("%s = %s\n" % (k, v))
                f.write("\n")
        self.proc = None

    def start(self):
        self.logf = open(self.log, "a")
        self.proc = subprocess.Popen([TAILGATED, "-c", self.conf], stdout=self.logf,
                                     stderr=subprocess.STDOUT)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def log_text(self):
        with open(self.log, errors="replace") as f:
            return f.read()


AUCTION_COLS = ["auction_id", "bid_id", "buyer", "seller", "item", "amount", "bid_time",
                "end_time"]


def main():
    skip = skip_unless_pg(TAILGATED, RING, LOADGEN)
    if skip is not None:
        return skip
    ring_dir = tempfile.mkdtemp(prefix="tailgate-pgtest.")
    pg = PgCluster()
    pg.start()
    d = None
    try:
        pg.psql(file=os.path.join(top_srcdir, "sql", "auction_house.sql"))
        pg.psql("""
            CREATE TABLE items (id int PRIMARY KEY, v text, n numeric, big text);
            ALTER TABLE items REPLICA IDENTITY FULL;
            ALTER TABLE items ALTER COLUMN big SET STORAGE EXTERNAL;
            CREATE TABLE items2 (id int PRIMARY KEY, v text);
            ALTER TABLE items2 REPLICA IDENTITY FULL;
            CREATE TABLE kept (id int PRIMARY KEY, v text);
            ALTER TABLE kept REPLICA IDENTITY FULL;
            INSERT INTO kept SELECT g, 'k' || g FROM generate_series(1, 100) g;
        """)
        feeds = {
            "winning_bids": {"table": "winning_bids"},
            "highest": {"table": "highest_bid_per_auction"},
            "top_buyers": {"table": "top_buyers"},
            "auction_stats": {"table": "auction_stats"},
            "big_bids": {"table": "bids", "columns": "auction_id, amount",
                         "where": "amount > 50", "ring_size": "64M"},
            "items": {"table": "items", "columns": "id, v, n", "ring_size": "64M"},
            "items_big": {"table": "items", "columns": "id, big"},
            "items2": {"table": "items2"},
            "kept": {"table": "kept", "permanent_slot": "yes"},
        }
        d = Daemon(pg, ring_dir, feeds)

        # ---- 1. exactness under concurrent writes -------------------------------
        lg = subprocess.Popen([LOADGEN, "-d", pg.dsn, "-r", "3000", "-t", "8", "--drain", "-q",
                               "--late", "5", "--seed", "7"])
        # The daemon snapshots in the middle of the load: once bids flow.
        wait_for(lambda: int(pg.psql("SELECT count(*) FROM bids") or 0) >= 5000, 30, 0.2)
        d.start()
        rc = lg.wait(60)
        ok(rc == 0, "tailgate-loadgen ran 8 s at 3000 bids/s and drained")
        problems = pg.psql("SELECT sum(problems) FROM check_auction_house()")
        ok(problems == "0", "the SQL's incremental state equals Materialize's published definitions "
           "after concurrent load (check_auction_house)", problems)
        for name, cols, table, where in [
                ("winning_bids", AUCTION_COLS, "winning_bids", None),
                ("highest", AUCTION_COLS, "highest_bid_per_auction", None),
                ("top_buyers", ["buyer", "name", "wins", "total_amount"], "top_buyers", None),
                ("auction_stats", ["id", "auctions", "open_auctions", "bids", "on_time_bids",
                                   "wins", "win_amount"], "auction_stats", None),
                ("big_bids", ["auction_id", "amount"], "bids", "amount > 50")]:
            good, batches, diag = wait_equal(pg, Feed(ring_dir, name), cols, table, where)
            ok(good, "feed %s equals its table after a snapshot taken under load (%d batches)"
               % (name, len(batches)), diag)
            cursors = [int(c) for c, _, _ in batches]
            ok(cursors == sorted(set(cursors)), "feed %s: cursors strictly increase" % name)
        nrows = sum(Feed(ring_dir, "big_bids").read()[0].values())
        ok(nrows > 1000, "big_bids holds %d projected, filtered rows" % nrows)

        # ---- 2. update, delete, truncate ------------------------------------------
        items = Feed(ring_dir, "items")
        icols = ["id", "v", "n"]
        pg.psql("INSERT INTO items VALUES (1, 'one', 1.50, 'b1'), (2, 'two', -2, 'b2'), "
                "(3, NULL, 3e2, 'b3')")
        good, batches, diag = wait_equal(pg, items, icols, "items")
        ok(good, "inserts reach the feed", diag)
        ok(batches and sorted(batches[-1][1]) == [("1", "one", "1.50"), ("2", "two", "-2"),
                                                  ("3", None, "300")] and not batches[-1][2],
           "one INSERT statement is one batch, numbers carry the database's text",
           batches[-1:] if batches else "no batches")
        pg.psql("UPDATE items SET v = 'uno' WHERE id = 1")
        good, batches, diag = wait_equal(pg, items, icols, "items")
        ok(good and batches[-1][1] == [("1", "uno", "1.50")] and
           batches[-1][2] == [("1", "one", "1.50")],
           "UPDATE is one batch: the old row deleted, the new inserted", diag or batches[-1])
        pg.psql("DELETE FROM items WHERE id = 2")
        good, batches, diag = wait_equal(pg, items, icols, "items")
        ok(good and batches[-1][2] == [("2", "two", "-2")] and not batches[-1][1],
           "DELETE deletes the old row", diag or batches[-1])
        pg.psql("UPDATE items SET big = repeat('x', 20000) WHERE id = 3")
        pg.psql("UPDATE items SET v = 'three' WHERE id = 3")   # big unchanged: 'u'
        good, _, diag = wait_equal(pg, Feed(ring_dir, "items_big"), ["id", "big"], "items")
        ok(good, "an UPDATE leaving a TOASTed value unchanged keeps it (taken from the old row)",
           diag)
        good, _, diag = wait_equal(pg, items, icols, "items")
        ok(good, "...and the other columns change", diag)
        pg.psql("BEGIN; TRUNCATE items; INSERT INTO items VALUES (7, 'seven', 7, 'b7'); COMMIT")
        good, batches, diag = wait_equal(pg, items, icols, "items")
        ok(good and batches[-1][1] == [("7", "seven", "7")] and
           sorted(batches[-1][2]) == [("1", "uno", "1.50"), ("3", "three", "300")],
           "TRUNCATE then INSERT in one transaction: one batch deleting the held rows",
           diag or batches[-1])
        pg.psql("BEGIN; INSERT INTO items VALUES (8, 'eight', 8, 'b8'); TRUNCATE items; COMMIT")
        good, batches, diag = wait_equal(pg, items, icols, "items")
        ok(good and batches[-1][2] == [("7", "seven", "7")] and not batches[-1][1],
           "INSERT then TRUNCATE in one transaction: only the held row is deleted",
           diag or batches[-1])

        # ---- 3. one transaction, two feeds --------------------------------------------
        pg.psql("BEGIN; INSERT INTO items VALUES (20, 'a', 1, 'x'); "
                "INSERT INTO items2 VALUES (20, 'b'); COMMIT")
        g1, b1, diag1 = wait_equal(pg, items, icols, "items")
        g2, b2, diag2 = wait_equal(pg, Feed(ring_dir, "items2"), ["id", "v"], "items2")
        ok(g1 and g2 and b1[-1][0] == b2[-1][0],
           "a transaction over two tables: one batch in each feed, at the same cursor "
           "(its commit LSN)", (diag1, diag2, b1[-1:], b2[-1:]))

        # ---- 4. a 100k-row transaction ----------------------------------------------------
        # Read it as a client at the cursor before it does: the snapshot that
        # follows such a batch is newer than it.
        items2 = Feed(ring_dir, "items2")
        rc, out, _ = items2.dump()
        before = json.loads(out.splitlines()[-1])["cursor"]
        pg.psql("INSERT INTO items2 SELECT g, 'r' || g FROM generate_series(1000, 100999) g")
        good, _, diag = wait_equal(pg, items2, ["id", "v"], "items2", timeout=60)
        rc, out, err = items2.dump(before)
        recs = [json.loads(line) for line in out.splitlines()] if rc == 0 else []
        ok(good and len(recs) == 1 and len(recs[0]["batch"]["inserted"]) == 100000,
           "a 100,000-row transaction is one batch of 100,000 rows",
           (diag, err, [(r["cursor"], len(r["batch"]["inserted"])) for r in recs]))

        # ---- 5. server restart ----------------------------------------------------------------
        before, _ = items.read()
        rc, out, _ = items.dump()
        held_cursor = json.loads(out.splitlines()[-1])["cursor"]
        pg.restart()
        pg.psql("INSERT INTO items VALUES (30, 'after restart', 30, 'x')")
        good, batches, diag = wait_equal(pg, items, icols, "items", timeout=60)
        ok(good, "after a server restart the daemon reconnects and the feed catches up", diag)
        rc, _, err = items.dump(held_cursor)
        ok(rc == 0, "a client's cursor from before the server restart is still served "
           "(the new snapshot was published as a difference)", err)
        pg.stop(mode="immediate")
        pg.start()
        pg.psql("DELETE FROM items WHERE id = 30")
        good, _, diag = wait_equal(pg, items, icols, "items", timeout=60)
        ok(good, "after a server crash (immediate stop) the feed catches up", diag)

        # ---- 6. daemon restart with a permanent slot ------------------------------------------
        kept = Feed(ring_dir, "kept")
        good, _, diag = wait_equal(pg, kept, ["id", "v"], "kept")
        ok(good, "the permanent-slot feed has its snapshot", diag)
        slot = pg.psql("SELECT slot_name || ' ' || temporary::text FROM pg_replication_slots "
                       "WHERE slot_name = 'tailgate_kept'")
        ok(slot == "tailgate_kept false", "the permanent slot tailgate_kept exists", slot)
        held_state, _ = kept.read()
        rc, out, _ = kept.dump()
        held_cursor = json.loads(out.splitlines()[-1])["cursor"]
        ino_before = os.stat(os.path.join(ring_dir, "kept.ring")).st_ino
        d.stop()
        pg.psql("UPDATE kept SET v = 'changed while down' WHERE id <= 10; "
                "DELETE FROM kept WHERE id > 90; INSERT INTO kept VALUES (500, 'new')")
        log_before = len(d.log_text())
        d.start()
        good, _, diag = wait_equal(pg, kept, ["id", "v"], "kept", timeout=60)
        ok(good, "after a daemon restart the permanent-slot feed has every change made while "
           "it was down (no gap)", diag)
        log = d.log_text()[log_before:]
        ok("feed=kept: adopted the existing segment" in log,
           "the restarted daemon adopted the feed's segment", log)
        ok("resuming slot tailgate_kept" in log and "feed=kept: taking a snapshot" not in log,
           "the restarted daemon resumes the permanent slot without a new snapshot", log)
        served, good, cursors, diag = client_catches_up(pg, kept, held_state, held_cursor,
                                                        ["id", "v"], "kept")
        ok(served, "a client's cursor from before the daemon restart is still served "
           "(no 410)", diag)
        ok(good and len(cursors) >= 1 and all(c > int(held_cursor) for c in cursors),
           "...and its batches after it are exactly the changes made while the daemon was "
           "down (%d batches; no duplicate, no gap)" % len(cursors), diag)
        ok(os.stat(os.path.join(ring_dir, "kept.ring")).st_ino == ino_before,
           "the segment file is the same one (responders keep their mapping)")

        # kill -9: a reader keeps the segment mapped (tailgate-ring wait at
        # the head) across the crash and the new daemon's adoption.
        held_state, _ = kept.read()
        rc, out, _ = kept.dump()
        held_cursor = json.loads(out.splitlines()[-1])["cursor"]
        waiter = subprocess.Popen([RING, "-d", ring_dir, "wait", "kept", held_cursor, "60000"],
                                  stderr=subprocess.PIPE, text=True)
        wait_for(lambda: maps_file(waiter.pid, os.path.join(ring_dir, "kept")), 10, 0.02)
        d.proc.kill()
        d.proc.wait()
        d.proc = None
        pg.psql("UPDATE kept SET v = 'changed while killed' WHERE id = 50; "
                "INSERT INTO kept VALUES (600, 'new after kill')")
        log_before = len(d.log_text())
        d.start()
        try:
            wrc = waiter.wait(60)
        except subprocess.TimeoutExpired:
            waiter.kill()
            wrc = "timeout"
        ok(wrc == 0, "a reader waiting at the head across a kill -9 is woken by the new "
           "daemon's batch (exit %s)" % wrc, waiter.stderr.read() if wrc != "timeout" else "")
        served, good, cursors, diag = client_catches_up(pg, kept, held_state, held_cursor,
                                                        ["id", "v"], "kept")
        ok(served and good and all(c > int(held_cursor) for c in cursors),
           "after a kill -9 and restart, a client's cursor gets exactly the changes made "
           "meanwhile, no 410", diag)
        log = d.log_text()[log_before:]
        ok("feed=kept: adopted the existing segment" in log and
           "resuming slot tailgate_kept" in log and "feed=kept: taking a snapshot" not in log,
           "after a kill -9 the daemon adopts the segment and resumes the slot without a "
           "new snapshot", log)
        # The slot's confirmed position follows the stream (WAL can be recycled).
        lsn1 = pg.psql("SELECT confirmed_flush_lsn FROM pg_replication_slots "
                       "WHERE slot_name = 'tailgate_kept'")
        pg.psql("INSERT INTO kept VALUES (501, 'more')")
        deadline = time.monotonic() + 10
        lsn2 = lsn1
        while time.monotonic() < deadline and lsn2 == lsn1:
            time.sleep(0.3)
            lsn2 = pg.psql("SELECT confirmed_flush_lsn FROM pg_replication_slots "
                           "WHERE slot_name = 'tailgate_kept'")
        ok(lsn2 != lsn1, "standby status updates advance the slot's confirmed_flush_lsn "
           "(%s -> %s)" % (lsn1, lsn2))
    except Exception as e:  # report, clean up, fail
        ok(False, "test aborted: %s" % e)
        if d:
            print("# tailgated log tail:")
            for line in d.log_text().splitlines()[-30:]:
                print("#   " + line)
    finally:
        if d:
            d.stop()
            reports = sanitizer_reports(d.log_text())
            ok(not reports, "no sanitizer reports in the daemon's log", "\n".join(reports[:20]))
        pg.cleanup()
        subprocess.run(["rm", "-rf", ring_dir])
    return done()


if __name__ == "__main__":
    sys.exit(main())
