#!/usr/bin/env python3
"""multihost_pg.py - two tailgate hosts on one PostgreSQL, behind a load balancer.

One private PostgreSQL with the auction house under tailgate-loadgen;
two hosts (tests/lib/multihost.py), each its own tailgated, ring
directory and replication slots (host a's permanent, host b's temporary)
and its own nginx + tailgate-fcgi; one nginx balancer round-robins every
request between the two: nginx/balancer.conf.example as it is (with the
hosts' addresses), which docs/HOSTS.md shows (checked here).  Clients
use nothing but the HTTP contract (docs/API.md; cursors are opaque
strings) and follow every feed:

  * a long-poll client through the balancer (its polls alternate hosts);
  * a long-poll client that asks host a and host b in turn, directly;
  * an SSE client that closes its stream every three batches and resumes
    on the other host with Last-Event-ID.

Phases, while the load runs (MULTIHOST_SECONDS, default 24, split among
them):

  1. steady state: no 410 (no in-band SSE resnapshot either);
  2. kill -9 of host a's daemon (permanent slots) and its restart: 503s
     while it is down, and no 410;
  3. kill -9 of host b's daemon (temporary slots) and its restart: it takes
     a new snapshot, published as a difference over a merged range, so a
     client whose cursor lies inside that range may get a 410; each one
     must be followed by a clean resync (counted and reported);
  4. settled again: no 410.

Between the phases nothing about 410s is asserted (at the start a cursor
from host a's first snapshot may lie below host b's later one).  Always:
no duplicate and no gap (FeedClient: a delete of a row not held,
a row held twice, a batch applied twice), and after the load stops every
client's table equals the database's (polled until equal, with a
deadline).  The counts (polls, 410s, 503s) are printed as TAP comments.

Environment: top_builddir, top_srcdir (automake), MULTIHOST_SECONDS,
MULTIHOST_KEEP=1 (keep the directory).  Skips (77) without PostgreSQL or
nginx.
"""
import os
import sys
import tempfile
import time

top_srcdir = os.environ.get("top_srcdir", os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(top_srcdir, "tests", "lib"))
from tap import ok, done, wait_for  # noqa: E402
from pg import skip_unless_pg  # noqa: E402
from util import sanitizer_reports  # noqa: E402
from stack import builddir, nginx_bin  # noqa: E402
from multihost import (FeedClient, PgHosts, report_abort, stop_clients, sum_counts,  # noqa: E402
                       teardown, wait_tables)

SECONDS = float(os.environ.get("MULTIHOST_SECONDS", "24"))
KEEP = os.environ.get("MULTIHOST_KEEP") == "1"
T0 = time.monotonic()


def note(msg):
    print("# [%5.1fs] %s" % (time.monotonic() - T0, msg), flush=True)


def report(label, before, after):
    d = after.copy()
    d.subtract(before)
    note("%s: %d polls, %d batches, %d snapshots, %d 410s (incl. SSE resnapshots), "
         "%d 503s, %d network errors" % (label, d["polls"], d["batches"], d["snapshots"],
                                         d["gone"], d["status_503"], d["errors"]))
    return d


def progressed(clients, since, n=2):
    """Has every client applied n more batches (or polls) than in since?"""
    def check():
        for c in clients:
            now = c.counts()
            if now["batches"] + now["polls"] < since[c.name]["batches"] + \
                    since[c.name]["polls"] + n:
                return False
        return True
    return check


def window(clients, seconds):
    """Let the clients follow for seconds while the load writes (a phase's
    length, not a wait for something to happen)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        time.sleep(min(0.2, max(0.0, end - time.monotonic())))


def gone_diag(clients, since):
    lines = []
    for c in clients:
        for t, target, cursor, msg in c.gone_log:
            if t >= since:
                lines.append("%s: %s cursor %r: %s" % (c.name, target, cursor, msg))
    return "\n".join(lines[:15])


def main():
    build = builddir()
    skip = skip_unless_pg(nginx_bin(), *(os.path.join(build, exe) for exe in ("tailgated", "tailgate-loadgen", "tailgate-fcgi")))
    if skip is not None:
        return skip
    with open(os.path.join(top_srcdir, "nginx", "balancer.conf.example")) as f:
        example = f.read()
    with open(os.path.join(top_srcdir, "docs", "HOSTS.md")) as f:
        hosts_md = f.read()
    example = example[example.index("upstream tailgate_hosts"):]
    ok(example in hosts_md, "docs/HOSTS.md shows nginx/balancer.conf.example (the "
       "balancer this test runs) as it is")
    tmp = tempfile.mkdtemp(prefix="tailgate-multihost-pg.")
    h = PgHosts(build, top_srcdir, tmp)
    clients = []
    try:
        h.start()
        ok(h.wait_live("a") and h.wait_live("b"),
           "both hosts serve every feed live (%s)" % ", ".join(h.feeds),
           h.hosts["a"]["daemon"].log() + h.hosts["b"]["daemon"].log())
        a, b = h.hosts["a"]["target"], h.hosts["b"]["target"]
        lb = ("127.0.0.1", h.balancer.port)
        for feed in h.feeds:
            clients += [FeedClient(feed, [lb], name="%s-balancer" % feed),
                        FeedClient(feed, [a, b], name="%s-alternating" % feed),
                        FeedClient(feed, [a, b], mode="sse", name="%s-sse" % feed)]
        for c in clients:
            c.start()
        ok(wait_for(lambda: all(c.counts()["snapshots"] for c in clients), 30),
           "every client took its first snapshot (%d clients)" % len(clients),
           "\n".join("%s: %s" % (c.name, c.last_error) for c in clients
                     if not c.counts()["snapshots"]))

        # ---- 1. steady state ----
        t1, c1 = time.monotonic(), sum_counts(clients)
        window(clients, SECONDS * 0.3)
        d = report("steady state", c1, sum_counts(clients))
        ok(d["polls"] > 0 and d["batches"] > 0, "steady state: the clients follow "
           "(%d polls, %d batches)" % (d["polls"], d["batches"]))
        ok(d["gone"] == 0, "steady state through two hosts: 0 410s (%d)" % d["gone"],
           gone_diag(clients, t1))

        # ---- 2. kill -9 of the daemon with permanent slots, and restart ----
        t2, c2 = time.monotonic(), sum_counts(clients)
        da = h.hosts["a"]["daemon"]
        da.kill9()
        ok(wait_for(lambda: not h.live("a"), 30), "host a: with its daemon killed, "
           "/feeds says its feeds are not live")
        st503 = sum_counts(clients)["status_503"]
        wait_for(lambda: sum_counts(clients)["status_503"] > st503, 10)
        da.start()
        ok(h.wait_live("a"), "host a: the restarted daemon (permanent slots) is live again",
           da.log())
        per = {c.name: c.counts() for c in clients}
        ok(wait_for(progressed(clients, per), 30), "every client follows on after the restart")
        window(clients, SECONDS * 0.2)
        d = report("kill -9 and restart of host a (permanent slots)", c2, sum_counts(clients))
        ok(d["gone"] == 0, "kill -9 and restart with permanent slots: 0 410s (%d; %d 503s "
           "while down)" % (d["gone"], d["status_503"]), gone_diag(clients, t2))

        # ---- 3. kill -9 of the daemon with temporary slots, and restart ----
        t3, c3 = time.monotonic(), sum_counts(clients)
        db = h.hosts["b"]["daemon"]
        db.kill9()
        ok(wait_for(lambda: not h.live("b"), 30), "host b: with its daemon killed, "
           "/feeds says its feeds are not live")
        db.start()
        ok(h.wait_live("b"), "host b: the restarted daemon (temporary slots: a new snapshot) "
           "is live again", db.log())
        per = {c.name: c.counts() for c in clients}
        ok(wait_for(progressed(clients, per), 30), "every client follows on after the restart")
        window(clients, SECONDS * 0.2)
        d3 = report("kill -9 and restart of host b (temporary slots)", c3, sum_counts(clients))
        note("temporary slots: %d 410s (cursors inside the merged re-snapshot range)"
             % d3["gone"])
        if d3["gone"]:
            note(gone_diag(clients, t3).replace("\n", "\n# "))

        # ---- 4. settled ----
        per = {c.name: c.counts() for c in clients}
        wait_for(progressed(clients, per, 3), 30)
        t4, c4 = time.monotonic(), sum_counts(clients)
        window(clients, SECONDS * 0.3)
        d = report("settled", c4, sum_counts(clients))
        ok(d["gone"] == 0, "settled after the re-snapshot: 0 410s (%d)" % d["gone"],
           gone_diag(clients, t4))

        # ---- the end: every table equals the database ----
        h.stop_load()
        note("the load stopped; waiting for every client's table to equal the database's")
        bad = wait_tables(clients, h.db_rows, timeout=60)
        note("compared")
        ok(not bad, "after the load stops, every client's table equals the database's "
           "(%s)" % ", ".join("%s %d rows" % (f, sum(h.db_rows(f).values())) for f in h.feeds),
           "\n".join("%s: %s" % (c.name, why) for c, why in bad[:8]))
        total = sum_counts(clients)
        stop_clients(clients)
        viol = [v for c in clients for v in c.violations]
        ok(total["violations"] == 0, "no client saw a duplicate, a gap or a malformed reply "
           "(%d)" % total["violations"], "\n".join(viol[:15]))
        unresynced = [c.name for c in clients
                      if c.counts()["gone"] != c.counts()["resynced"]]
        ok(not unresynced, "every 410 was followed by a clean resync (%d 410s, %d resyncs)"
           % (total["gone"], total["resynced"]), ", ".join(unresynced))
        note("in all: %d clients, %d polls, %d batches, %d snapshots, %d 410s, %d 503s, "
             "%d network errors, %d bytes" % (
                 len(clients), total["polls"], total["batches"], total["snapshots"],
                 total["gone"], total["status_503"], total["errors"], total["bytes"]))
        rep = [line for n in ("a", "b") for line in sanitizer_reports(h.hosts[n]["daemon"].log(2000))]
        ok(not rep, "no sanitizer reports in the daemons' logs", "\n".join(rep[:10]))
    except Exception as e:  # report, clean up, fail
        report_abort(e, h.hosts)
    finally:
        teardown(tmp, clients, then=[h.stop], keep=KEEP)
    note("runtime %.0f s" % (time.monotonic() - T0))
    return done()


if __name__ == "__main__":
    sys.exit(main())
