#!/usr/bin/env python3
"""safety_pg.py - tailgated never harms the database it follows.

Against a private PostgreSQL 15 (tests/lib/pg.py) with a table that has no
primary key (events) and one with a key and REPLICA IDENTITY FULL (orders):

  * a feed on events is refused with the fix in the message, nothing is
    created for it, and the application's UPDATE and DELETE on events work
    while tailgated runs and after it stops;
  * a second tailgated on the same ring directory exits non-zero naming the
    first one's pid, and the first one still delivers;
  * a feed with a temporary slot leaves no publication and no slot behind
    after SIGTERM, and none after a kill -9 followed by a restart and a stop;
  * a publication of ours left on a table that lost its replica identity is
    dropped when the feed is refused, so the application's writes work again;
  * a permanent feed removed on SIGHUP logs the exact commands that drop
    its slot and publication; tailgated --cleanup lists that slot (with the
    WAL it retains) and publication, --cleanup --yes drops them, and never
    an active slot; while that slot is idle the running daemon logs it and
    /metrics (through nginx) shows the WAL it retains, growing;
  * tailgated --check (like nginx -t) exits 1 with a line naming each
    misconfiguration: a missing table or column, a table without a replica
    identity, a role without REPLICATION or not owning the table, refused
    credentials, a missing ring_dir, wal_level = replica.

TAP output.
"""
import os
import re
import signal
import subprocess
import sys
import tempfile

top_srcdir = os.environ.get("top_srcdir", ".")
sys.path.insert(0, os.path.join(top_srcdir, "tests", "lib"))
sys.path.insert(0, os.path.join(top_srcdir, "tests"))
from pg import PgCluster, PgError, skip_unless_pg  # noqa: E402
from tap import done, ok, wait_for  # noqa: E402
from daemon_pg import TAILGATED, Daemon, Feed, wait_equal  # noqa: E402
from stack import Stack  # noqa: E402


def ours(pg):
    """(publications, slots) whose names tailgated gives."""
    pubs = pg.psql("SELECT string_agg(pubname, ',' ORDER BY pubname) FROM pg_publication "
                   "WHERE pubname LIKE 'tailgate\\_%'")
    slots = pg.psql("SELECT string_agg(slot_name, ',' ORDER BY slot_name) "
                    "FROM pg_replication_slots WHERE slot_name LIKE 'tailgate\\_%'")
    return pubs, slots


def app_writes(pg, tag):
    """The application's own UPDATE and DELETE on the key-less table."""
    try:
        pg.psql("UPDATE events SET v = v || '%s' WHERE id = 1; "
                "DELETE FROM events WHERE id = 2; INSERT INTO events VALUES (2, 'two')" % tag)
        return True, ""
    except PgError as e:
        return False, str(e)


def run_check(pg, ring_dir, feeds, conninfo=None, conf_dir=None):
    """tailgated --check on a configuration: (exit status, output)."""
    path = os.path.join(conf_dir or ring_dir, "check.conf")
    with open(path, "w") as f:
        f.write("source = postgresql\nconninfo = %s\nring_dir = %s\n\n"
                % (conninfo or pg.dsn, ring_dir))
        for name, opts in feeds.items():
            f.write("[feed %s]\n" % name)
            for k, v in opts.items():
                f.write("%s = %s\n" % (k, v))
    p = subprocess.run([TAILGATED, "--check", "-c", path], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True, timeout=60)
    return p.returncode, p.stdout


def run_cleanup(pg, ring_dir, feeds, yes=False):
    """tailgated --cleanup [--yes] on a configuration: (exit status, output)."""
    path = os.path.join(ring_dir, "cleanup.conf")
    with open(path, "w") as f:
        f.write("source = postgresql\nconninfo = %s\nring_dir = %s\n\n" % (pg.dsn, ring_dir))
        for name, opts in feeds.items():
            f.write("[feed %s]\n" % name)
            for k, v in opts.items():
                f.write("%s = %s\n" % (k, v))
    p = subprocess.run([TAILGATED, "--cleanup"] + (["--yes"] if yes else []) + ["-c", path],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=60)
    return p.returncode, p.stdout


def check_cases(pg, ring_dir):
    """--check works like nginx -t: each misconfiguration is a non-zero exit
    with a line naming it."""
    rc, out = run_check(pg, ring_dir, {"orders": {"table": "orders"}})
    ok(rc == 0 and "upstream and ring_dir checked" in out, "--check: a good configuration", out)
    cases = [
        ("a missing table", {"f": {"table": "nosuch"}}, None, "table nosuch does not exist"),
        ("a missing column", {"f": {"table": "orders", "columns": "id, nope"}}, None,
         'has no column "nope"'),
        ("a table without a replica identity", {"f": {"table": "events"}}, None,
         "REPLICA IDENTITY FULL"),
        ("a role without REPLICATION", {"f": {"table": "orders"}},
         pg.dsn + " user=norepl", "has no REPLICATION attribute"),
        ("a role that does not own the table", {"f": {"table": "orders"}},
         pg.dsn + " user=notowner", "cannot create the publication"),
        ("credentials the server refuses", {"f": {"table": "orders"}},
         pg.dsn + " user=nosuchrole", "opening a connection failed (connection): "),
    ]
    # notowner's one problem is not owning the table (it has REPLICATION
    # and may create publications in the database); norepl also lacks
    # REPLICATION.
    pg.psql("CREATE ROLE norepl LOGIN; GRANT SELECT ON orders TO norepl; "
            "CREATE ROLE notowner LOGIN REPLICATION; GRANT SELECT ON orders TO notowner; "
            "DO $$BEGIN EXECUTE format('GRANT CREATE ON DATABASE %I TO norepl, notowner', "
            "current_database()); END$$")
    for what, feeds, conninfo, want in cases:
        rc, out = run_check(pg, ring_dir, feeds, conninfo)
        lines = [x for x in out.splitlines() if want in x]
        ok(rc == 1 and lines, "--check refuses %s: %s" % (
            what, (lines or ["(nothing)"])[0][-110:]), out)
        if "notowner" in (conninfo or ""):
            ok(len(out.strip().splitlines()) == 2, "(that is notowner's one problem)", out)
    rc, out = run_check(pg, os.path.join(ring_dir, "nonexistent"), {"f": {"table": "orders"}},
                        conf_dir=ring_dir)
    ok(rc == 1 and "does not exist" in out, "--check refuses a missing ring_dir", out)
    other = PgCluster(settings={"wal_level": "replica"})
    other.start()
    try:
        other.psql("CREATE TABLE orders (id int PRIMARY KEY)")
        rc, out = run_check(other, ring_dir, {"f": {"table": "orders"}})
        ok(rc == 1 and "wal_level is replica" in out, "--check refuses wal_level = replica", out)
    finally:
        other.stop()
        other.cleanup()


def slot_metrics(pg, d, ring_dir):
    """The running daemon watches the removed feed's idle slot: the log
    names it, and /metrics (through nginx) shows the WAL it retains, growing
    as the database writes."""
    ok(wait_for(lambda: "slot tailgate_orders is not in" in d.log_text()
                and "bytes of WAL (wal_status" in d.log_text()),
       "after the reload, the running daemon logs the idle slot and the WAL it retains",
       d.log_text()[-1500:])
    pat = re.compile(rb'tailgate_slot_retained_bytes\{slot="tailgate_orders",configured="false",'
                     rb'active="false",wal_status="(\w+)"\} (\d+)')
    os.chmod(ring_dir, 0o755)  # nginx's workers reach the socket below it
    st = Stack(ring_dir=ring_dir)
    try:
        st.start()

        def retained():
            status, _, body = st.get("/metrics", timeout=10)
            m = pat.search(body) if status == 200 else None
            return m and (m.group(1).decode(), int(m.group(2)), body)
        first = wait_for(retained, 20)
        ok(first and b"tailgate_slot_checked_timestamp_seconds " in first[2],
           "/metrics: tailgate_slot_retained_bytes of the idle slot (%s bytes, wal_status %s)"
           % ((first[1], first[0]) if first else (None, None)),
           first[2].decode()[-1500:] if first else "")
        pg.psql("INSERT INTO orders SELECT g, repeat('x', 100) FROM generate_series(100, 2000) g")
        later = wait_for(lambda: (retained() or (0, 0))[1] > (first or (0, 0))[1] and retained(),
                         20)
        ok(later, "and it grows as the database writes (%s -> %s bytes)"
           % ((first or (0, 0))[1], (later or (0, 0))[1]))
        pg.psql("DELETE FROM orders WHERE id >= 100")
    finally:
        st.stop()


def main():
    skip = skip_unless_pg(TAILGATED)
    if skip is not None:
        return skip
    ring_dir = tempfile.mkdtemp(prefix="tailgate-safety.")
    pg = PgCluster()
    pg.start()
    d = d2 = None
    try:
        pg.psql("CREATE TABLE events (id int, v text); "
                "INSERT INTO events VALUES (1, 'one'), (2, 'two'); "
                "CREATE TABLE orders (id int PRIMARY KEY, v text); "
                "ALTER TABLE orders REPLICA IDENTITY FULL; "
                "INSERT INTO orders VALUES (1, 'a'), (2, 'b')")
        d = Daemon(pg, ring_dir, {"events": {"table": "events"}, "orders": {"table": "orders"}})
        d.start()
        orders = Feed(ring_dir, "orders")
        good, _, why = wait_equal(pg, orders, ["id", "v"], "orders")
        ok(good, "the orders feed streams", why)
        ok(wait_for(lambda: "refusing table public.events" in d.log_text()),
           "the events feed is refused", d.log_text()[-1500:])
        log = d.log_text()
        ok("REPLICA IDENTITY FULL" in log and "nothing was created" in log,
           "the refusal names the fix and says nothing was created")
        pubs, slots = ours(pg)
        ok(pubs == "tailgate_orders", "no publication for events (%s)" % pubs)
        w, why = app_writes(pg, "x")
        ok(w, "the application's UPDATE and DELETE on events work while tailgated runs", why)

        # A second daemon on the same ring directory.
        d2 = Daemon(pg, ring_dir, {"orders": {"table": "orders"}})
        d2.conf = d.conf  # the same configuration file
        d2.log = os.path.join(ring_dir, "second.log")
        d2.start()
        try:
            rc = d2.proc.wait(15)
        except subprocess.TimeoutExpired:
            rc = None
        second = d2.log_text()
        ok(rc not in (None, 0), "a second tailgated on the same ring_dir exits non-zero (%s)" % rc,
           second)
        ok("in use by another tailgated (pid %d)" % d.proc.pid in second,
           "its message names the first one's pid", second)
        pg.psql("INSERT INTO orders VALUES (3, 'c')")
        good, _, why = wait_equal(pg, orders, ["id", "v"], "orders")
        ok(good and d.proc.poll() is None, "the first tailgated still delivers", why)

        # A clean stop leaves nothing behind.
        d.stop()
        ok(wait_for(lambda: ours(pg) == ("", "")),
           "after SIGTERM: no publication and no slot left (%s)" % (ours(pg),))
        w, why = app_writes(pg, "y")
        ok(w, "the application's UPDATE and DELETE on events work after tailgated stopped", why)

        # kill -9, restart, stop: still nothing left.
        # The ring from the last run still holds rows 1-3, so only a row
        # inserted now shows that this daemon streams (and so has created
        # its publication) before it is killed.
        d = Daemon(pg, ring_dir, {"orders": {"table": "orders"}})
        d.start()
        pg.psql("INSERT INTO orders VALUES (31, 'c2')")
        good, _, why = wait_equal(pg, orders, ["id", "v"], "orders")
        ok(good and wait_for(lambda: ours(pg)[0] == "tailgate_orders"),
           "restarted, the feed streams", why)
        d.proc.send_signal(signal.SIGKILL)
        d.proc.wait()
        pubs, _ = ours(pg)
        ok(pubs == "tailgate_orders", "after kill -9 the publication is still there (%s)" % pubs)
        d.start()
        pg.psql("INSERT INTO orders VALUES (4, 'd')")
        good, _, why = wait_equal(pg, orders, ["id", "v"], "orders")
        ok(good, "after kill -9 and a restart the feed streams on", why)
        d.stop()
        ok(wait_for(lambda: ours(pg) == ("", "")),
           "after kill -9, restart and SIGTERM: nothing left (%s)" % (ours(pg),))

        # A publication of ours on a table that lost its identity: dropped.
        pg.psql("CREATE PUBLICATION tailgate_events FOR TABLE events")
        w, why = app_writes(pg, "z")
        ok(not w and "replica identity" in why,
           "(a publication on events breaks the application's UPDATE: %s)" % why.strip()[:90])
        d = Daemon(pg, ring_dir, {"events": {"table": "events"}})
        d.start()
        ok(wait_for(lambda: ours(pg)[0] == ""),
           "the refused feed drops the publication it finds (%s)" % (ours(pg),), d.log_text())
        w, why = app_writes(pg, "w")
        ok(w, "and the application's UPDATE and DELETE work again", why)
        d.stop()

        # A permanent feed removed on SIGHUP says how to drop what it keeps.
        d = Daemon(pg, ring_dir, {"orders": {"table": "orders", "permanent_slot": "yes"}})
        d.start()
        good, _, why = wait_equal(pg, orders, ["id", "v"], "orders")
        ok(good and ours(pg)[1] == "tailgate_orders", "a permanent feed streams from slot "
           "tailgate_orders (%s)" % (ours(pg),), why)
        # --cleanup with a configuration that does not name it: listed as
        # in use, and --yes leaves an active slot alone.
        rc, out = run_cleanup(pg, ring_dir, {"other": {"table": "orders"}}, yes=True)
        ok(rc == 0 and "slot tailgate_orders: " in out and "in use" in out
           and ours(pg)[1] == "tailgate_orders",
           "--cleanup --yes never drops an active slot", out)
        Daemon(pg, ring_dir, {"events2": {"table": "orders", "where": "id < 0"}})  # rewrites
        text = open(d.conf).read().replace("backoff_max_ms = 1000\n",
                                           "backoff_max_ms = 1000\nslot_check_ms = 300\n")
        open(d.conf, "w").write(text)
        d.proc.send_signal(signal.SIGHUP)
        want = ("SELECT pg_drop_replication_slot('tailgate_orders'); "
                "DROP PUBLICATION tailgate_orders;")
        ok(wait_for(lambda: want in d.log_text()),
           "removing it on SIGHUP logs the exact commands to drop its slot", d.log_text())
        slot_metrics(pg, d, ring_dir)
        d.stop()
        # A restart names the idle leftover slot and the WAL it keeps.
        d.start()
        ok(wait_for(lambda: "slot tailgate_orders is not in" in d.log_text()
                    and "bytes of WAL (wal_status" in d.log_text()),
           "at start, the log names the idle leftover slot and the WAL it retains",
           d.log_text())
        d.stop()
        conf = os.path.join(ring_dir, "tailgated.conf")
        p = subprocess.run([TAILGATED, "--cleanup", "-c", conf], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, timeout=60)
        ok(p.returncode == 0 and "slot tailgate_orders: not in %s; inactive, retains" % conf
           in p.stdout and "wal_status" in p.stdout
           and "publication tailgate_orders: not in" in p.stdout
           and ours(pg) == ("tailgate_orders", "tailgate_orders"),
           "--cleanup lists the removed permanent feed's slot (WAL retained, wal_status) "
           "and publication, and drops nothing", p.stdout)
        p = subprocess.run([TAILGATED, "--cleanup", "--yes", "-c", conf],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           timeout=60)
        ok(p.returncode == 0 and "dropped slot tailgate_orders" in p.stdout
           and "dropped publication tailgate_orders" in p.stdout and ours(pg) == ("", ""),
           "--cleanup --yes drops them (left: %s)" % (ours(pg),), p.stdout)
        p = subprocess.run([TAILGATED, "--cleanup", "-c", conf], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, timeout=60)
        ok(p.returncode == 0 and "nothing to clean up" in p.stdout,
           "--cleanup then finds nothing", p.stdout)
        check_cases(pg, ring_dir)
    finally:
        for x in (d, d2):
            if x is not None:
                x.stop()
        pg.stop()
        pg.cleanup()
    return done()


if __name__ == "__main__":
    sys.exit(main())
