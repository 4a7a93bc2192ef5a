#!/usr/bin/env python3
"""states_pg.py - a feed's error and stalled states, seen over HTTP.

A real PostgreSQL, tailgated, tailgate-fcgi and nginx (tests/lib/stack.py):

  * a feed on a table that does not exist is in the "error" state with the
    server's message in /feeds, in the 503 body of
    GET /feeds/NAME and in /metrics (tailgate_feed_state), and the daemon
    does not retry it in a loop;
  * after the table is created, SIGHUP retries it at once and it goes live;
  * a feed whose walsender is stopped (SIGSTOP: no keepalive, no commit)
    turns "stalled" after stall_timeout_ms, with its lag in /feeds and
    tailgate_feed_lag_seconds in /metrics, and live again after SIGCONT.

TAP output.
"""
import json
import os
import re
import signal
import sys
import tempfile
import time

top_srcdir = os.environ.get("top_srcdir", ".")
sys.path.insert(0, os.path.join(top_srcdir, "tests", "lib"))
sys.path.insert(0, os.path.join(top_srcdir, "tests"))
from pg import PgCluster, PgError, pg_bindir  # noqa: E402
from tap import done, ok, wait_for  # noqa: E402
from stack import Stack  # noqa: E402
from daemon_pg import TAILGATED, Daemon  # noqa: E402


def feed_info(st, name):
    status, obj = st.get_json("/feeds", timeout=10)
    if status != 200:
        return {}
    return {f["name"]: f for f in obj.get("feeds", [])}.get(name, {})


def main():
    try:
        pg_bindir()
    except PgError as e:
        print("1..0 # SKIP %s" % e)
        return 77
    if not os.access(TAILGATED, os.X_OK):
        print("1..0 # SKIP %s not built" % TAILGATED)
        return 77
    tmp = tempfile.mkdtemp(prefix="tailgate-states.")
    os.chmod(tmp, 0o755)  # nginx's workers reach the socket below it
    ring_dir = os.path.join(tmp, "ring")
    os.mkdir(ring_dir)
    pg = PgCluster()
    pg.start()
    d = None
    st = Stack(ring_dir=ring_dir, base_dir=os.path.join(tmp, "stack"))
    try:
        st.start()
        pg.psql("CREATE TABLE orders (id int PRIMARY KEY, v text); "
                "ALTER TABLE orders REPLICA IDENTITY FULL; INSERT INTO orders VALUES (1, 'a')")
        d = Daemon(pg, ring_dir, {"orders": {"table": "orders"},
                                  "later": {"table": "later"}})
        # stall detection after 1.5 s without a confirmation
        text = open(d.conf).read().replace("backoff_max_ms = 1000\n",
                                           "backoff_max_ms = 1000\nstall_timeout_ms = 1500\n")
        open(d.conf, "w").write(text)
        d.start()

        info = wait_for(lambda: feed_info(st, "later").get("state") == "error"
                        and feed_info(st, "later"))
        ok(info and 'relation "later" does not exist' in info.get("error", ""),
           "a missing table: /feeds says state error, with the server's message",
           json.dumps(info))
        status, _, body = st.get("/feeds/later", timeout=10)
        obj = json.loads(body or b"{}")
        ok(status == 503 and "does not exist" in obj.get("message", ""),
           "GET /feeds/later: 503 with the message: %s" % obj.get("message", "")[:100], body)
        status, _, body = st.get("/metrics", timeout=10)
        ok(status == 200 and b'tailgate_feed_state{feed="later",state="error"} 1' in body,
           "/metrics: tailgate_feed_state{feed=\"later\",state=\"error\"} 1")
        tries = d.log_text().count("relation \"later\" does not exist")
        time.sleep(2.5)  # the thing measured: no retry within this time
        again = d.log_text().count("relation \"later\" does not exist")
        ok(tries >= 1 and again == tries and "retrying in 300 s or on SIGHUP" in d.log_text(),
           "the permanent error is not retried in a loop (%d tries, then %d)" % (tries, again),
           d.log_text()[-1500:])

        pg.psql("CREATE TABLE later (id int PRIMARY KEY, v text); "
                "INSERT INTO later VALUES (7, 'x')")
        d.proc.send_signal(signal.SIGHUP)
        info = wait_for(lambda: feed_info(st, "later").get("state") == "live"
                        and feed_info(st, "later"), 20)
        ok(info and "error" not in info and info.get("rows") == 1,
           "after the fix, SIGHUP retries at once and the feed is live", json.dumps(info))
        status, _, body = st.get("/feeds/later", timeout=10)
        ok(status == 200 and b'"x"' in body, "GET /feeds/later serves its row")

        # Stalled: the walsender stops sending (no keepalive, no commit).
        info = wait_for(lambda: feed_info(st, "orders").get("state") == "live"
                        and feed_info(st, "orders"))
        ok(info and info.get("lag_s", 99) < 1.5, "orders is live, lag %.3f s"
           % (info or {}).get("lag_s", -1), json.dumps(info))
        pids = pg.psql("SELECT pid FROM pg_stat_replication").split()
        ok(len(pids) == 2, "two walsenders (%s)" % pids)
        for p in pids:
            os.kill(int(p), signal.SIGSTOP)
        try:
            info = wait_for(lambda: feed_info(st, "orders").get("state") == "stalled"
                            and feed_info(st, "orders"), 15)
            ok(info and info.get("live") is False and info.get("lag_s", 0) > 1.5,
               "with the walsender stopped, orders is stalled (lag %.1f s)"
               % (info or {}).get("lag_s", -1), json.dumps(info))
            status, _, body = st.get("/metrics", timeout=10)
            m = re.search(rb'tailgate_feed_lag_seconds\{feed="orders"\} ([0-9.]+)', body)
            ok(m and float(m.group(1)) > 1.5 and
               b'tailgate_feed_state{feed="orders",state="stalled"} 1' in body,
               "/metrics: the stalled state and the lag gauge (%s)" % (m.group(1) if m else None))
        finally:
            for p in pids:
                os.kill(int(p), signal.SIGCONT)
        pg.psql("INSERT INTO orders VALUES (2, 'b')")
        info = wait_for(lambda: feed_info(st, "orders").get("state") == "live"
                        and feed_info(st, "orders"), 15)
        ok(info and info.get("rows") == 2, "after SIGCONT orders is live again with the new row",
           json.dumps(info))
    finally:
        if d is not None:
            d.stop()
        st.stop()
        pg.stop()
        pg.cleanup()
    return done()


if __name__ == "__main__":
    sys.exit(main())
