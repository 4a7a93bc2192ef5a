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
    tailgate_feed_lag_seconds in /metrics, and live again after SIGCONT;
  * while it is stalled (and only then) every reply for it says so in
    its head: Tailgate-Feed-State: stalled and Tailgate-Lag on the
    snapshot, on a long-poll (one answered with a batch, one timing out)
    and on an SSE stream's head; a stopped server makes it "down" there too;
  * every upstream error has a reason in the log and in /feeds: a refused
    connection (no PGresult: libpq's message), a walsender the server
    terminates (SQLSTATE 57P01), a role the server refuses at connect.

TAP output.
"""
import http.client
import json
import os
import re
import signal
import sys
import time

top_srcdir = os.environ.get("top_srcdir", ".")
sys.path.insert(0, os.path.join(top_srcdir, "tests", "lib"))
sys.path.insert(0, os.path.join(top_srcdir, "tests"))
from pg import skip_unless_pg  # noqa: E402
from tap import done, ok, wait_for  # noqa: E402
from env import test_env  # noqa: E402
from daemon_pg import TAILGATED, Daemon  # noqa: E402


def feed_info(st, name):
    status, obj = st.get_json("/feeds", timeout=10)
    if status != 200:
        return {}
    return {f["name"]: f for f in obj.get("feeds", [])}.get(name, {})


def state_heads(st, older, head):
    """The state headers of a snapshot, of a long-poll from the older cursor
    (answered at once with a batch), of one at the head cursor (timing out),
    and of an SSE stream's head: {kind: (status, state, lag, batches)}."""
    out = {}
    for kind, path, hdrs in (("snapshot", "/feeds/orders", {}),
                             ("long-poll batch", "/feeds/orders?cursor=%s&timeout=1" % older, {}),
                             ("long-poll timeout", "/feeds/orders?cursor=%s&timeout=1" % head,
                              {}),
                             ("sse", "/feeds/orders", {"Accept": "text/event-stream"})):
        if kind == "sse":  # only the head: the stream stays open
            c = http.client.HTTPConnection("127.0.0.1", st.port, timeout=10)
            try:
                c.request("GET", path, headers=hdrs)
                r = c.getresponse()
                status, h, n = r.status, {k.lower(): v for k, v in r.getheaders()}, None
            finally:
                c.close()
        else:
            status, h, body = st.get(path, headers=hdrs, timeout=10)
            n = len(json.loads(body or b"{}").get("batches", []))
        lag = h.get("tailgate-lag")
        out[kind] = (status, h.get("tailgate-feed-state"), float(lag) if lag else None, n)
    return out


def plain(heads):
    """Every reply 200 without a state header, the long-polls' batches right."""
    return (all(v[0] == 200 and v[1] is None and v[2] is None for v in heads.values())
            and heads["long-poll batch"][3] == 1 and heads["long-poll timeout"][3] == 0)


def main():
    skip = skip_unless_pg(TAILGATED)
    if skip is not None:
        return skip
    with test_env("states") as env:
        pg, st = env.pg, env.st
        pg.psql("CREATE TABLE orders (id int PRIMARY KEY, v text); "
                "ALTER TABLE orders REPLICA IDENTITY FULL; INSERT INTO orders VALUES (1, 'a')")
        d = env.stop_later(Daemon(pg, env.ring_dir, {"orders": {"table": "orders"},
                                                     "later": {"table": "later"}}))
        # stall detection after 1.5 s without a confirmation
        text = open(d.conf).read().replace("backoff_max_ms = 1000\n",
                                           "backoff_max_ms = 1000\nstall_timeout_ms = 1500\n")
        open(d.conf, "w").write(text)
        d.start()

        info = wait_for(lambda: feed_info(st, "later").get("state") == "error"
                        and feed_info(st, "later"))
        ok(info and 'reading the catalog failed (SQLSTATE 42P01): relation "later" does '
           'not exist' in info.get("error", ""),
           "a missing table: /feeds says state error, with what failed, the SQLSTATE and "
           "the server's message",
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
        older = info.get("cursor")
        pg.psql("INSERT INTO orders VALUES (2, 'b')")
        info = wait_for(lambda: feed_info(st, "orders").get("rows") == 2
                        and feed_info(st, "orders"))
        head = (info or {}).get("cursor")
        heads = state_heads(st, older, head)
        ok(plain(heads), "live: no Tailgate-Feed-State or Tailgate-Lag on a snapshot, "
           "the long-polls or an SSE head", repr(heads))
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
            heads = state_heads(st, older, head)
            ok(all(v[0] == 200 and v[1] == "stalled" and v[2] is not None and v[2] > 1.5
                   for v in heads.values()) and heads["long-poll batch"][3] == 1,
               "stalled: Tailgate-Feed-State: stalled and Tailgate-Lag > 1.5 s on a snapshot, "
               "the long-polls and an SSE head", repr(heads))
        finally:
            for p in pids:
                os.kill(int(p), signal.SIGCONT)
        info = wait_for(lambda: feed_info(st, "orders").get("state") == "live"
                        and feed_info(st, "orders"), 15)
        # The feed's cursor is its frontier: the same, or later (keepalives
        # move it on without a change); POSITION.IDENTITY, compared here.
        ok(info and info.get("cursor", "").split(".")[-1] == head.split(".")[-1] and
           int(info["cursor"].split(".")[0]) >= int(head.split(".")[0]),
           "after SIGCONT orders is live again", json.dumps(info))
        # The same requests as while stalled (the long-poll from the older
        # cursor is the render cache's): the state is not kept in a reply.
        heads = state_heads(st, older, head)
        ok(plain(heads), "live again: the same replies carry no state header", repr(heads))
        pg.psql("INSERT INTO orders VALUES (3, 'c')")
        info = wait_for(lambda: feed_info(st, "orders").get("rows") == 3
                        and feed_info(st, "orders"), 15)
        ok(info and info.get("state") == "live", "and it delivers a new row", json.dumps(info))

        # Down: the server stops; what the daemon holds is still served.
        pg.stop()
        info = wait_for(lambda: feed_info(st, "orders").get("state") == "down"
                        and feed_info(st, "orders"), 20)
        ok(info, "with the server stopped orders is down", json.dumps(info))
        status, h, _ = st.get("/feeds/orders", timeout=10)
        ok(status == 200 and h.get("tailgate-feed-state") == "down" and "tailgate-lag" in h,
           "down: the snapshot is served with Tailgate-Feed-State: down (%s, %s)"
           % (h.get("tailgate-feed-state"), h.get("tailgate-lag")), repr(h))

        # Every upstream error has a reason: its SQLSTATE where the server
        # sent one, else what failed and libpq's message.  A refused
        # connection has no PGresult at all.
        info = wait_for(lambda: "refused" in feed_info(st, "orders").get("error", "")
                        and feed_info(st, "orders"), 20)
        err = (info or {}).get("error", "")
        ok(info and err.startswith("connecting failed (connection): ")
           and "Connection refused" in err,
           "server down: /feeds names the refused connection: %s" % err[:120], json.dumps(info))
        m = re.search(r"feed=orders: (connecting failed \(connection\): "
                      r"[^\n]*Connection refused[^\n]*)", d.log_text())
        ok(m,
           "and so does the log line: %s" % (m.group(1)[:120] if m else None),
           d.log_text()[-1500:])

        # The server closes the connection (a terminated walsender): the
        # server's SQLSTATE, 57P01, in the log.
        pg.start()
        wait_for(lambda: feed_info(st, "orders").get("state") == "live", 20)
        before = d.log_text().count("SQLSTATE 57P01")
        pg.psql("SELECT pg_terminate_backend(pid) FROM pg_stat_replication")
        ok(wait_for(lambda: d.log_text().count("SQLSTATE 57P01") > before, 20),
           "a terminated walsender: the log line names SQLSTATE 57P01",
           d.log_text()[-1500:])
        m = re.findall(r"feed=\w+: [^\n]*administrator command[^\n]*", d.log_text())
        ok(m and all(re.search(r"\(SQLSTATE 57P01\): \S", x) for x in m),
           "every line about it names the SQLSTATE and the server's message (the "
           "retry's goodbye to the ended stream does not log over it): %s" % m)
        info = wait_for(lambda: feed_info(st, "orders").get("state") == "live"
                        and feed_info(st, "orders"), 20)
        ok(info and "error" not in info, "orders is live again, the error cleared",
           json.dumps(info))

        # Credentials the server refuses at connect (no PGresult either):
        # the feed is in the error state with the server's refusal.
        d.stop()
        d = env.stop_later(Daemon(pg, env.ring_dir, {"orders": {"table": "orders"}}))
        text = open(d.conf).read().replace("conninfo = %s\n" % pg.dsn,
                                           "conninfo = %s user=nosuchrole\n" % pg.dsn)
        open(d.conf, "w").write(text)
        d.start()
        info = wait_for(lambda: feed_info(st, "orders").get("state") == "error"
                        and feed_info(st, "orders"), 20)
        err = (info or {}).get("error", "")
        ok(info and 'role "nosuchrole" does not exist' in err and "failed: " in err,
           "a role the server refuses: state error, /feeds says why: %s" % err[:120],
           json.dumps(info))
        ok('role "nosuchrole" does not exist' in d.log_text().split("\n", 1)[-1] and
           re.search(r'feed=orders: [^\n]*failed: [^\n]*role "nosuchrole"', d.log_text()),
           "and so does the log line", d.log_text()[-1500:])
        # A sanitizer build (--enable-tsan: the responder's threads)
        # reports in the responder's log, and exits non-zero at the end.
        st.stop_responders()
        rep = st.sanitizer_reports()
        ok(not rep, "no sanitizer reports in the responder's log", "\n".join(rep[:20]))
        code, log = st.responder_exits[-1]
        ok(code == 0, "the responder stops cleanly on SIGTERM (exit %s)" % code, log[-2000:])
    return done()


if __name__ == "__main__":
    sys.exit(main())
