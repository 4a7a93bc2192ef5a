#!/usr/bin/env python3
"""limits_pg.py - tailgated's PostgreSQL source against the server's limits
and the DDL the logical replication protocol documents, on a real server
(tests/lib/pg.py), each feed read back with `tailgate-ring dump`
(daemon_pg.py's Feed) and compared with its table.  TAP output.

  1. wal_sender_timeout = 2s: a 200,000-row transaction spilled to disk
     (logical_decoding_work_mem = 64kB) that stays open 3 s between its
     writes.  The walsender's keepalives asking for a reply are answered
     in time: no "replication timeout" in the server's log, no new
     session, the transaction one batch
  2. a table renamed mid-stream (the Relation message is sent again with
     the new name): the feed stops with an error naming both names, never
     publishes the renamed table's rows as its own, and is exact again
     once the name is back; renamed with no change after it (no Relation
     message): the daemon's watch finds the table under its new name
  3. TRUNCATE ... CASCADE RESTART IDENTITY of a parent with a child
     table, each followed by its own feed, with new rows in the same
     transaction: both feeds exact, each change one batch
  4. a row filter (the publication's WHERE, PostgreSQL 15): an UPDATE
     moving a row into the filter arrives as an INSERT, one moving it out
     as a DELETE of the old row, one outside it not at all; a stored
     generated column (pgoutput leaves it out) is not a column of a feed
     of all columns, and the feed is exact
  5. a table dropped and created again under its name mid-stream (the
     publication loses the table with the DROP and nothing in the stream
     says so): the daemon's watch (slot_check_ms = 1000 here) finds the
     name on another OID, the session ends with an error naming both OIDs,
     and the feed follows the new table; a table dropped for good: the
     feed ends with an error naming the gone OID, its next session fails
     on the missing table (state error, the old rows no longer live), and
     once the table is created again the feed is exact
  6. a permanent slot invalidated (max_slot_wal_keep_size = 1MB, WAL
     switched and a checkpoint while the daemon is stopped): the daemon
     says the slot was invalidated and why, drops it, takes a fresh
     snapshot published as a difference, and streams on

Skips (77) without PostgreSQL.
"""
import collections
import json
import os
import signal
import subprocess
import sys
import tempfile

top_srcdir = os.environ.get("top_srcdir", ".")
top_builddir = os.environ.get("top_builddir", ".")
sys.path.insert(0, os.path.join(top_srcdir, "tests", "lib"))
sys.path.insert(0, os.path.join(top_srcdir, "tests"))
from pg import PgCluster, skip_unless_pg  # noqa: E402
from tap import done, ok, wait_for  # noqa: E402
from util import sanitizer_reports  # noqa: E402
from daemon_pg import Daemon, Feed, RING, TAILGATED, wait_equal  # noqa: E402

BIG = 200000


def server_log(pg):
    with open(pg.log_file, errors="replace") as f:
        return f.read()


def head_cursor(feed):
    """The cursor of the feed's last record."""
    rc, out, err = feed.dump()
    lines = out.splitlines()
    return json.loads(lines[-1])["cursor"] if rc == 0 and lines else None


def batches_after(feed, cursor):
    """[(cursor, inserted, deleted)] of the batches after cursor (counts)."""
    rc, out, err = feed.dump(cursor)
    if rc != 0:
        return "dump %s: exit %d: %s" % (cursor, rc, err)
    return [(r["cursor"], len(r["batch"]["inserted"]), len(r["batch"]["deleted"]))
            for r in map(json.loads, out.splitlines())]


def ring_state(ring_dir, feed):
    """The state tailgate-ring info shows (live, down, error, ...)."""
    p = subprocess.run([RING, "-d", ring_dir, "info", feed], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True)
    for line in p.stdout.splitlines():
        if line.startswith("state"):
            return line.split()[1]
    return None


def sessions(d, feed):
    return d.log_text().count("feed=%s: streaming from slot" % feed)


def main():
    skip = skip_unless_pg(TAILGATED, RING)
    if skip is not None:
        return skip
    ring_dir = tempfile.mkdtemp(prefix="tailgate-limits.")
    pg = PgCluster(settings={"wal_sender_timeout": "2s",
                             "logical_decoding_work_mem": "64kB",
                             "wal_keep_size": "0"})
    pg.start()
    d = None
    try:
        pg.psql("""
            CREATE TABLE big (id int PRIMARY KEY, v text);
            ALTER TABLE big REPLICA IDENTITY FULL;
            INSERT INTO big VALUES (0, 'before');
            CREATE TABLE ren (id int PRIMARY KEY, v text);
            ALTER TABLE ren REPLICA IDENTITY FULL;
            INSERT INTO ren VALUES (1, 'one');
            CREATE TABLE tc_p (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, v text);
            CREATE TABLE tc_c (id int PRIMARY KEY, p int REFERENCES tc_p, v text);
            ALTER TABLE tc_p REPLICA IDENTITY FULL;
            ALTER TABLE tc_c REPLICA IDENTITY FULL;
            INSERT INTO tc_p (v) SELECT 'p' || g FROM generate_series(1, 5) g;
            INSERT INTO tc_c SELECT g, g, 'c' || g FROM generate_series(1, 5) g;
            CREATE TABLE inv (id int PRIMARY KEY, v text);
            ALTER TABLE inv REPLICA IDENTITY FULL;
            INSERT INTO inv SELECT g, 'i' || g FROM generate_series(1, 10) g;
            CREATE TABLE rf (id int PRIMARY KEY, n int);
            ALTER TABLE rf REPLICA IDENTITY FULL;
            INSERT INTO rf SELECT g, g FROM generate_series(1, 20) g;
            CREATE TABLE gen (id int PRIMARY KEY, v text,
                twice int GENERATED ALWAYS AS (id * 2) STORED);
            ALTER TABLE gen REPLICA IDENTITY FULL;
            INSERT INTO gen (id, v) VALUES (1, 'one');
            CREATE TABLE dropped (id int PRIMARY KEY, v text);
            ALTER TABLE dropped REPLICA IDENTITY FULL;
            INSERT INTO dropped VALUES (1, 'old');
            CREATE TABLE gone (id int PRIMARY KEY, v text);
            ALTER TABLE gone REPLICA IDENTITY FULL;
            INSERT INTO gone VALUES (1, 'old');
        """)
        feeds = {
            "big": {"table": "big", "ring_size": "64M"},
            "ren": {"table": "ren"},
            "tc_p": {"table": "tc_p"},
            "tc_c": {"table": "tc_c"},
            "inv": {"table": "inv", "permanent_slot": "yes"},
            "rf": {"table": "rf", "where": "n > 10"},
            "gen": {"table": "gen"},
            "dropped": {"table": "dropped"},
            "gone": {"table": "gone"},
        }
        d = Daemon(pg, ring_dir, feeds)
        # While a renamed table's name is gone, each new session finds no
        # such table, a permanent error (SQLSTATE 42P01) retried after
        # error_retry_ms (5 min by default): retried each second here, so
        # that the rename's check does not race the session restarting
        # before the name is back.  The watch that sees a DROP TABLE looks
        # every slot_check_ms (a minute by default): each second here.
        with open(d.conf) as f:
            text = f.read()
        with open(d.conf, "w") as f:
            f.write(text.replace("backoff_max_ms = 1000\n",
                                 "backoff_max_ms = 1000\nerror_retry_ms = 1000\n"
                                 "slot_check_ms = 1000\n", 1))
        d.start()
        for name, cols in (("big", ["id", "v"]), ("ren", ["id", "v"]),
                           ("tc_p", ["id", "v"]), ("tc_c", ["id", "p", "v"]),
                           ("inv", ["id", "v"]), ("rf", ["id", "n"]), ("gen", ["id", "v"]),
                           ("dropped", ["id", "v"]), ("gone", ["id", "v"])):
            good, _, diag = wait_equal(pg, Feed(ring_dir, name), cols, name,
                                       "n > 10" if name == "rf" else None)
            ok(good, "%s: snapshot" % name, diag)

        # ---- 1. keepalives under wal_sender_timeout --------------------------
        big = Feed(ring_dir, "big")
        n_sessions = sessions(d, "big")
        before = head_cursor(big)
        pg.psql("BEGIN; INSERT INTO big SELECT g, 'v' || g FROM generate_series(1, %d) g; "
                "SELECT pg_sleep(3); INSERT INTO big SELECT g, 'w' || g "
                "FROM generate_series(%d, %d) g; UPDATE big SET v = 'after' WHERE id = 0; "
                "COMMIT;" % (BIG // 2, BIG // 2 + 1, BIG))
        good, _, diag = wait_equal(pg, big, ["id", "v"], "big", timeout=120)
        ok(good, "a %d-row transaction open 3 s under wal_sender_timeout = 2s: exact" % BIG,
           diag)
        new = batches_after(big, before)
        ok(isinstance(new, list) and len(new) == 1 and new[0][1:] == (BIG + 1, 1),
           "...published as one batch (+%d -1)" % (BIG + 1), new)
        ok("replication timeout" not in server_log(pg),
           "...the walsender never timed out waiting for a status update",
           pg.log_tail(10))
        ok(sessions(d, "big") == n_sessions, "...and the session never restarted",
           "sessions %d -> %d" % (n_sessions, sessions(d, "big")))

        # ---- 2. a table renamed mid-stream -----------------------------------
        ren = Feed(ring_dir, "ren")
        pg.psql("ALTER TABLE ren RENAME TO ren2; INSERT INTO ren2 VALUES (2, 'renamed');")
        ok(wait_for(lambda: "renamed to public.ren2" in d.log_text(), 20),
           "a table renamed mid-stream: the feed stops with an error naming the new name",
           d.log_text()[-2000:])
        state, _ = ren.read()
        ok(state == collections.Counter({("1", "one"): 1}),
           "...and never publishes the renamed table's rows as the configured table's",
           state)
        pg.psql("ALTER TABLE ren2 RENAME TO ren; INSERT INTO ren VALUES (3, 'back');")
        good, _, diag = wait_equal(pg, ren, ["id", "v"], "ren")
        ok(good, "...the name back: the feed is exact again", diag)
        # Renamed with no change after it: no Relation message comes; the
        # watch (slot_check_ms) finds the OID under its new name.
        pg.psql("ALTER TABLE ren RENAME TO ren3;")
        ok(wait_for(lambda: "renamed to public.ren3" in d.log_text(), 15),
           "a table renamed and left unchanged: the watch sees the new name",
           d.log_text()[-2000:])
        pg.psql("ALTER TABLE ren3 RENAME TO ren; INSERT INTO ren VALUES (4, 'again');")
        good, _, diag = wait_equal(pg, ren, ["id", "v"], "ren")
        ok(good, "...the name back: the feed is exact again", diag)

        # ---- 3. TRUNCATE ... CASCADE RESTART IDENTITY across two feeds -------
        fp, fc = Feed(ring_dir, "tc_p"), Feed(ring_dir, "tc_c")
        _, bp = fp.read()
        _, bc = fc.read()
        pg.psql("BEGIN; TRUNCATE tc_p RESTART IDENTITY CASCADE; "
                "INSERT INTO tc_p (v) VALUES ('new'); INSERT INTO tc_c VALUES (9, 1, 'c9'); "
                "COMMIT;")
        good_p, batches_p, diag = wait_equal(pg, fp, ["id", "v"], "tc_p")
        ok(good_p, "TRUNCATE parent CASCADE RESTART IDENTITY: the parent's feed exact", diag)
        good_c, batches_c, diag = wait_equal(pg, fc, ["id", "p", "v"], "tc_c")
        ok(good_c, "...and the child's (truncated by the cascade)", diag)
        ok(len(batches_p) - len(bp) == 1 and len(batches_c) - len(bc) == 1,
           "...each one batch", (len(bp), len(batches_p), len(bc), len(batches_c)))
        ok(fp.read()[0] == collections.Counter({("1", "new"): 1}),
           "...the identity restarted (the new row is id 1)", fp.read()[0])

        # ---- 4. a row filter; a generated column --------------------------
        rf = Feed(ring_dir, "rf")
        before = head_cursor(rf)
        pg.psql("UPDATE rf SET n = 100 WHERE id = 1; UPDATE rf SET n = 0 WHERE id = 15; "
                "UPDATE rf SET n = 5 WHERE id = 2; UPDATE rf SET n = 50 WHERE id = 16;")
        good, _, diag = wait_equal(pg, rf, ["id", "n"], "rf", "n > 10")
        ok(good, "row filter: UPDATEs into, out of, outside and inside the filter: exact", diag)
        new = batches_after(rf, before)
        ok(new == [(new[0][0], 1, 0), (new[1][0], 0, 1), (new[2][0], 1, 1)]
           if isinstance(new, list) and len(new) == 3 else False,
           "...into: an insert; out of: a delete; outside: nothing; inside: -old +new", new)
        gen = Feed(ring_dir, "gen")
        pg.psql("INSERT INTO gen (id, v) VALUES (2, 'two'); UPDATE gen SET v = 'uno' WHERE id = 1;")
        good, _, diag = wait_equal(pg, gen, ["id", "v"], "gen")
        ok(good, "a stored generated column (not sent by pgoutput): the feed of all columns "
           "is exact without it", diag)
        ok('"twice"' not in d.log_text(), "...and its columns do not name it")

        # ---- 5. a table dropped (and created again) -------------------------
        dropped = Feed(ring_dir, "dropped")
        old_oid = pg.psql("SELECT 'dropped'::regclass::oid").strip()
        pg.psql("DROP TABLE dropped; CREATE TABLE dropped (id int PRIMARY KEY, v text); "
                "ALTER TABLE dropped REPLICA IDENTITY FULL; INSERT INTO dropped VALUES (2, 'new');")
        new_oid = pg.psql("SELECT 'dropped'::regclass::oid").strip()
        good, _, diag = wait_equal(pg, dropped, ["id", "v"], "dropped", timeout=15)
        ok(good, "a table dropped and created again mid-stream: the feed follows the new one",
           diag)
        ok("table public.dropped was dropped and created again (OID %s -> %s)"
           % (old_oid, new_oid) in d.log_text(),
           "...the session ended with an error naming both OIDs", d.log_text()[-2000:])
        pg.psql("INSERT INTO dropped VALUES (3, 'more');")
        good, _, diag = wait_equal(pg, dropped, ["id", "v"], "dropped")
        ok(good, "...and streams the new table on", diag)

        gone = Feed(ring_dir, "gone")
        gone_oid = pg.psql("SELECT 'gone'::regclass::oid").strip()
        pg.psql("DROP TABLE gone;")
        ok(wait_for(lambda: "table public.gone was dropped (OID %s is gone)" % gone_oid
                    in d.log_text(), 15),
           "a table dropped mid-stream: the session ends with an error naming its OID",
           d.log_text()[-2000:])
        ok(wait_for(lambda: ring_state(ring_dir, "gone") == "error", 15),
           "...the next session finds no such table: the feed's state is error, its old "
           "rows no longer live", ring_state(ring_dir, "gone"))
        ok('relation "gone" does not exist' in d.log_text(),
           "...and says why", d.log_text()[-2000:])
        pg.psql("CREATE TABLE gone (id int PRIMARY KEY, v text); "
                "ALTER TABLE gone REPLICA IDENTITY FULL; INSERT INTO gone VALUES (5, 'back');")
        good, _, diag = wait_equal(pg, gone, ["id", "v"], "gone", timeout=20)
        ok(good and ring_state(ring_dir, "gone") == "live",
           "...created again: the feed is live and exact again", diag)

        # ---- 6. a permanent slot invalidated ---------------------------------
        inv = Feed(ring_dir, "inv")
        pg.psql("ALTER SYSTEM SET max_slot_wal_keep_size = '1MB'; SELECT pg_reload_conf();")
        d.proc.send_signal(signal.SIGSTOP)
        try:
            for _ in range(3):
                pg.psql("CREATE TABLE IF NOT EXISTS filler (x text); "
                        "INSERT INTO filler VALUES (repeat('x', 1000)); SELECT pg_switch_wal();")
            pg.psql("CHECKPOINT;")
            lost = wait_for(lambda: pg.psql(
                "SELECT wal_status FROM pg_replication_slots WHERE slot_name = 'tailgate_inv'"
            ).strip() == "lost", 20)
            # Written after the slot is lost: no stream can carry these.
            pg.psql("DELETE FROM inv WHERE id <= 5; UPDATE inv SET v = 'changed' WHERE id = 6; "
                    "INSERT INTO inv VALUES (11, 'while lost');")
        finally:
            d.proc.send_signal(signal.SIGCONT)
        ok(lost, "the permanent slot is invalidated (wal_status lost)",
           pg.psql("SELECT slot_name, wal_status FROM pg_replication_slots"))
        good, _, diag = wait_equal(pg, inv, ["id", "v"], "inv", timeout=60)
        ok(good, "...the feed is exact again (a fresh snapshot, published as a difference)",
           diag)
        ok(wait_for(lambda: "replication slot tailgate_inv was invalidated" in d.log_text()),
           "...the log says the slot was invalidated and why",
           d.log_text()[-2000:])
        ok(wait_for(lambda: pg.psql(
            "SELECT wal_status FROM pg_replication_slots WHERE slot_name = 'tailgate_inv'"
        ).strip() in ("reserved", "extended"), 20), "...on a new slot")
        pg.psql("INSERT INTO inv VALUES (12, 'after');")
        good, _, diag = wait_equal(pg, inv, ["id", "v"], "inv")
        ok(good, "...and streams on", diag)
        ok(d.proc.poll() is None, "the daemon survived it all")
    except Exception as e:  # noqa: BLE001
        ok(False, "test aborted: %s" % e)
    finally:
        if d is not None:
            if d.proc is not None and d.proc.poll() is not None:
                ok(False, "the daemon exited with %s" % d.proc.returncode)
            d.stop()
            reports = sanitizer_reports(d.log_text())
            ok(not reports, "no sanitizer reports in the daemon's log", "\n".join(reports[:20]))
        pg.stop()
        pg.cleanup()
    return done()


if __name__ == "__main__":
    sys.exit(main())
