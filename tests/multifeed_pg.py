#!/usr/bin/env python3
"""multifeed_pg.py - several feeds in one request, at one common position.

A real PostgreSQL, tailgated, tailgate-fcgi and nginx (tests/lib/stack.py).
Two feeds derived from one table: `items` (the rows) and `counts` (one
row, its count of items, kept by a trigger in the same transaction).
Each feed has its own walsender, so their rings move independently; a
client reading them at different positions sees the count disagree with
the rows.  Under a steady load of transactions:

  * GET /feeds/items,counts and its long-polls: at EVERY reply the
    client's count equals its number of rows;
  * the same request as Server-Sent Events: at every event, after a
    reconnect with Last-Event-ID (which resumes, no new snapshot), and on
    a stream open while the daemon restarts;
  * a long-poll parked while the daemon restarts (the feeds' new
    segments): answered when the feeds move on, in agreement, or 410;
  * shared replies: concurrent long-polls at one cursor get one render
    (tailgate_renders_total), byte for byte the same reply, plain or gzip;
  * the state headers of several feeds: a third feed, `extra`, whose
    walsender is stopped (SIGSTOP) turns stalled while `items` stays live;
    a reply for both says Tailgate-Feed-State: stalled (the worst),
    Tailgate-Lag (the largest) and Tailgate-Feed-States per feed, on a
    snapshot, a long-poll and an SSE head; a request not naming `extra`
    says nothing, and neither does any once it is live again;
  * per-feed filters (FEED.COLUMN=OP.VALUE), and the errors with their
    codes and messages: an unknown feed among known ones 404, a feed in
    the error state (`later`, a missing table) 503, an unprefixed,
    foreign or empty-column filter or an unknown column 400, a feed named
    twice, an empty name (A,,B) and too many feeds 400, a cursor of
    another history 410.

TAP output.
"""
import gzip
import http.client
import json
import os
import re
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
from daemon_pg import TAILGATED, Daemon  # noqa: E402

URL = "/feeds/items,counts"
FEEDS = ("items", "counts", "extra")  # live; "later" is in the error state


def feeds_by_name(st):
    status, obj = st.get_json("/feeds", timeout=10)
    return {f["name"]: f for f in obj.get("feeds", [])} if status == 200 else {}


def all_live(st, names=FEEDS):
    f = feeds_by_name(st)
    return all(f.get(n, {}).get("live") for n in names)


def metric(st, name):
    _, _, body = st.get("/metrics", timeout=10)
    m = re.search(rb"^" + name.encode() + rb" (\d+)", body, re.M)
    return int(m.group(1)) if m else -1


def renders(st):
    return metric(st, "tailgate_renders_total")


def parked_now(st):
    return metric(st, "tailgate_parked_requests")


def state_heads(st, url, cur=None):
    """The state headers of url's snapshot (3 s timeout), of a long-poll
    from cur (default: the snapshot's cursor) and of its SSE stream's head:
    {kind: (status, state, lag, per-feed)}."""
    out = {}
    status, h, body = st.get(url + "?timeout=3", timeout=20)
    cur = cur or json.loads(body or b"{}").get("cursor", "x")
    heads = {"snapshot": (status, h)}
    status, h, _ = st.get("%s?cursor=%s&timeout=1" % (url, cur), timeout=20)
    heads["long-poll"] = (status, h)
    c = http.client.HTTPConnection("127.0.0.1", st.port, timeout=10)
    try:
        c.request("GET", url, headers={"Accept": "text/event-stream"})
        r = c.getresponse()
        heads["sse"] = (r.status, {k.lower(): v for k, v in r.getheaders()})
    finally:
        c.close()
    for kind, (status, h) in heads.items():
        lag = h.get("tailgate-lag")
        out[kind] = (status, h.get("tailgate-feed-state"), float(lag) if lag else None,
                     h.get("tailgate-feed-states"))
    return out


def per_feed(value):
    """Tailgate-Feed-States: {name: (state, lag or None)}."""
    out = {}
    for part in (value or "").split(","):
        fields = part.strip().split(";")
        name, _, state = fields[0].partition("=")
        lag = [float(f[4:]) for f in fields[1:] if f.startswith("lag=")]
        out[name] = (state, lag[0] if lag else None)
    return out


class Client:
    """The two feeds' states as a client holds them."""

    def __init__(self):
        self.state = {"items": {}, "counts": {}}
        self.cursor = None
        self.bad = []  # (cursor, rows, count) where they disagreed
        self.checks = 0
        self.with_batches = 0

    def apply(self, reply, snapshot):
        if snapshot:
            self.state = {"items": {}, "counts": {}}
        n = 0
        for name, feed in reply["feeds"].items():
            st = self.state[name]
            for b in feed["batches"]:
                n += 1
                for row in b["inserted"]:
                    st[json.dumps(row)] = st.get(json.dumps(row), 0) + 1
                for row in b["deleted"]:
                    k = json.dumps(row)
                    if k not in st:  # a batch missed or applied twice
                        self.bad.append(("deleted a row not held", name, k))
                        continue
                    st[k] -= 1
                    if st[k] == 0:
                        del st[k]
        self.cursor = reply["cursor"]
        if n > 0 and not snapshot:
            self.with_batches += 1
        rows = sum(self.state["items"].values())
        counts = [json.loads(k)[1] for k in self.state["counts"]]
        self.checks += 1
        if counts != [rows]:
            self.bad.append((self.cursor, rows, counts))


class Load(threading.Thread):
    """Transactions inserting and deleting items, through one psql."""

    def __init__(self, pg, base=1000):
        super().__init__(daemon=True)
        self.base = base
        self.p = subprocess.Popen(
            ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", pg.socket_dir, "-p",
             str(pg.port), "-U", pg.user, "-d", pg.dbname],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=pg.env())
        self.stop = threading.Event()
        self.n = 0

    def run(self):
        i = self.base
        while not self.stop.is_set() and self.p.poll() is None:
            i += 3
            self.p.stdin.write(
                "BEGIN; INSERT INTO items VALUES (%d, 'a'), (%d, 'b'); "
                "DELETE FROM items WHERE id = (SELECT min(id) FROM items); COMMIT;\n"
                "INSERT INTO items VALUES (%d, 'c');\n" % (i, i + 1, i + 2))
            self.p.stdin.flush()
            self.n += 2
            time.sleep(0.003)

    def finish(self):
        self.stop.set()
        self.join()
        self.p.stdin.close()
        self.p.wait(30)


def sse_events(st, path, headers, want, client, deadline, more=None):
    """Read events of an SSE stream until want events with batches (or the
    deadline); apply each to client.  Returns (events, snapshots, last id)."""
    c = http.client.HTTPConnection("127.0.0.1", st.port, timeout=10)
    h = {"Accept": "text/event-stream"}
    h.update(headers)
    c.request("GET", path, headers=h)
    r = c.getresponse()
    events = snaps = 0
    last_id, name, data = None, None, []
    try:
        while time.time() < deadline and (client.with_batches < want or
                                          (more is not None and more())):
            line = r.readline()
            if not line:
                break
            line = line.decode().rstrip("\n")
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("id: "):
                last_id = line[4:]
            elif line.startswith("data: "):
                data.append(line[6:])
            elif line == "" and data:
                obj = json.loads("\n".join(data))
                client.apply(obj, name == "snapshot")
                ok_id = obj["cursor"] == last_id
                if not ok_id:
                    client.bad.append(("id", last_id, obj["cursor"]))
                events += 1
                snaps += name == "snapshot"
                name, data = None, []
    finally:
        c.close()
    return r.status, events, snaps, last_id


def main():
    skip = skip_unless_pg(TAILGATED)
    if skip is not None:
        return skip
    with test_env("multifeed") as env:
        pg, st = env.pg, env.st
        load = None
        pg.psql("""
            CREATE TABLE items (id int PRIMARY KEY, v text);
            CREATE TABLE counts (k int PRIMARY KEY, n int NOT NULL);
            ALTER TABLE items REPLICA IDENTITY FULL;
            ALTER TABLE counts REPLICA IDENTITY FULL;
            INSERT INTO counts VALUES (1, 0);
            CREATE FUNCTION count_items() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                UPDATE counts SET n = n + CASE WHEN TG_OP = 'INSERT' THEN 1 ELSE -1 END;
                RETURN NULL;
            END $$;
            CREATE TRIGGER count_items AFTER INSERT OR DELETE ON items
                FOR EACH ROW EXECUTE FUNCTION count_items();
            INSERT INTO items SELECT g, 'x' FROM generate_series(1, 50) g;
            CREATE TABLE extra (id int PRIMARY KEY);
            ALTER TABLE extra REPLICA IDENTITY FULL;
            INSERT INTO extra VALUES (1);
        """)
        d = env.stop_later(Daemon(pg, env.ring_dir, {"items": {"table": "items"},
                                                     "counts": {"table": "counts"},
                                                     "extra": {"table": "extra"},
                                                     "later": {"table": "later"}}))
        # at the end, the load running then (if any) finishes first
        env.at_end(lambda: load is not None and load.finish())
        # stall detection after 1.5 s without a confirmation (the state headers)
        text = open(d.conf).read().replace("backoff_max_ms = 1000\n",
                                           "backoff_max_ms = 1000\nstall_timeout_ms = 1500\n")
        open(d.conf, "w").write(text)
        d.start()
        live = wait_for(lambda: all_live(st) and
                        feeds_by_name(st).get("later", {}).get("state") == "error", 30)
        ok(live, "items, counts and extra are live, later (no table) is in the error state",
           json.dumps(feeds_by_name(st)))

        status, _, body = st.get(URL, timeout=40)
        obj = json.loads(body or b"{}")
        ok(status == 200 and set(obj.get("feeds", {})) == {"items", "counts"} and
           all("columns" in f for f in obj["feeds"].values()),
           "GET %s: one snapshot of both feeds, with their columns" % URL, body[:300])
        c = Client()
        c.apply(obj, True)
        ok(c.bad == [] and sum(c.state["items"].values()) == 50,
           "the snapshot: 50 rows and a count of 50", repr(c.state["counts"]))

        load = Load(pg)
        load.start()
        end = time.time() + 60
        replies = 0
        while time.time() < end and c.with_batches < 60:
            status, _, body = st.get("%s?cursor=%s&timeout=5" % (URL, c.cursor), timeout=40)
            if status != 200:
                c.bad.append(("status", status, body[:200]))
                break
            obj = json.loads(body)
            c.apply(obj, False)
            replies += 1
            ok_keys = set(obj["feeds"]) == {"items", "counts"} and not any(
                "columns" in f for f in obj["feeds"].values())
            if not ok_keys:
                c.bad.append(("shape", body[:200]))
        ok(c.with_batches >= 60 and c.bad == [],
           "long-poll under load: %d replies (%d with batches, %d transactions), the count "
           "equals the rows at every one" % (replies, c.with_batches, load.n),
           repr(c.bad[:5]))

        # The same with the feeds asked one by one: the check above is able
        # to fail (their rings move on their own).
        s = Client()
        single = {}
        for name in ("items", "counts"):
            _, _, body = st.get("/feeds/%s" % name, timeout=40)
            single[name] = json.loads(body)
        s.apply({"cursor": "", "feeds": {n: {"batches": o["batches"]} for n, o in
                                         single.items()}}, True)
        diverged = 0
        cur = {n: o["cursor"] for n, o in single.items()}
        for _ in range(40):
            for name in ("items", "counts"):
                _, _, body = st.get("/feeds/%s?cursor=%s&timeout=5" % (name, cur[name]),
                                    timeout=40)
                o = json.loads(body)
                cur[name] = o["cursor"]
                s.apply({"cursor": "", "feeds": {name: {"batches": o["batches"]}}}, False)
            diverged = len(s.bad)
        ok(diverged > 0, "control: two single-feed long-polls disagree at %d of %d steps"
           % (diverged, s.checks))

        sc = Client()
        status, events, snaps, last = sse_events(st, URL, {}, 40, sc, time.time() + 60)
        ok(status == 200 and snaps == 1 and sc.with_batches >= 40 and sc.bad == [],
           "SSE under load: %d events (one snapshot), the count equals the rows at every "
           "one" % events, repr(sc.bad[:5]))
        before = sc.with_batches
        status, events, snaps, last = sse_events(st, URL, {"Last-Event-ID": last},
                                                 before + 20, sc, time.time() + 60)
        ok(status == 200 and snaps == 0 and sc.with_batches >= before + 20 and sc.bad == [],
           "SSE resumed with Last-Event-ID: %d events, no snapshot, still in agreement"
           % events, repr(sc.bad[:5]))

        # The daemon restarts under an open stream: it follows the feeds'
        # new segments (or starts again with a snapshot), still in agreement.
        restarted = {}

        def restart():
            time.sleep(1.5)
            d.stop()
            d.start()
            wait_for(lambda: all_live(st), 30)
            restarted["at"] = sc.with_batches
        r = threading.Thread(target=restart, daemon=True)
        r.start()
        status, events, snaps, last = sse_events(
            st, URL, {"Last-Event-ID": last}, 0, sc, time.time() + 90,
            more=lambda: "at" not in restarted or sc.with_batches < restarted["at"] + 20)
        r.join()
        ok(status == 200 and "at" in restarted and sc.with_batches >= restarted["at"] + 20
           and sc.bad == [],
           "SSE across a daemon restart: %d events (%d snapshots), 20 after it, still in "
           "agreement" % (events, snaps), repr(sc.bad[:5]))

        # A long-poll parked while the daemon restarts: the request moves to
        # the feeds' new segments and is answered when they move on (the
        # same history: its batches, in agreement), or 410 when the new
        # segments are another history; never left to its timeout.
        load.finish()
        load = None
        status, _, body = st.get(URL, timeout=40)
        lc = Client()
        lc.apply(json.loads(body), True)
        answer = {}

        def parked():
            t0 = time.monotonic()
            answer["r"] = st.get("%s?cursor=%s&timeout=25" % (URL, lc.cursor), timeout=60)
            answer["s"] = time.monotonic() - t0
        pt = threading.Thread(target=parked, daemon=True)
        pt.start()
        ok(wait_for(lambda: parked_now(st) == 1, 10),
           "the long-poll is parked (tailgate_parked_requests)")
        d.stop()
        d.start()
        wait_for(lambda: all_live(st), 30)
        pg.psql("INSERT INTO items VALUES (900001, 'after the restart')")
        pt.join(60)
        status, _, body = answer.get("r", (0, {}, b""))
        obj = json.loads(body or b"{}")
        if status == 200:
            lc.apply(obj, False)
        ok((status == 200 and lc.bad == [] and lc.with_batches == 1) or
           (status == 410 and obj.get("error") == "cursor_gone"),
           "a long-poll parked across a daemon restart: %d after %.1f s of a 25 s timeout "
           "(%s)" % (status, answer.get("s", -1),
                     "its batches, in agreement" if status == 200 else obj.get("message")),
           "%s %r" % (body[:300], lc.bad[:3]))
        ok(answer.get("s", 99) < 20, "... answered when the feeds moved on, not at its timeout")

        # Shared replies: long-polls at one cursor get one render.
        wait_for(lambda: all_live(st), 30)
        status, _, body = st.get(URL, timeout=40)
        cur = json.loads(body)["cursor"]
        n_polls = 16
        got = [None] * n_polls
        sent = threading.Semaphore(0)

        def poll(i):
            c = http.client.HTTPConnection("127.0.0.1", st.port, timeout=60)
            try:
                c.request("GET", "%s?cursor=%s&timeout=25" % (URL, cur),
                          headers={"Accept-Encoding": "gzip"} if i % 2 else {})
                sent.release()
                r = c.getresponse()
                data = r.read()
                coding = r.getheader("Content-Encoding")
                got[i] = (r.status, coding, gzip.decompress(data) if coding == "gzip" else data)
            finally:
                c.close()
        r0 = renders(st)
        polls = [threading.Thread(target=poll, args=(i,), daemon=True) for i in range(n_polls)]
        for t in polls:
            t.start()
        for _ in polls:
            sent.acquire()
        ok(wait_for(lambda: parked_now(st) == n_polls, 10),
           "%d long-polls parked at one cursor" % n_polls)
        pg.psql("INSERT INTO items VALUES (900002, 'shared')")
        for t in polls:
            t.join(60)
        r1 = renders(st)
        bodies = {}
        for g in got:
            if g is not None and g[0] == 200:
                bodies.setdefault(json.loads(g[2])["cursor"], set()).add(g[2])
        ok(all(g is not None and g[0] == 200 for g in got) and
           all(len(v) == 1 for v in bodies.values()) and
           any(b"900002" in g[2] for g in got),
           "%d concurrent long-polls at one cursor: every reply at one cursor byte for byte "
           "the same (%d distinct cursors)" % (n_polls, len(bodies)), repr(got)[:400])
        ok(sum(1 for g in got if g and g[1] == "gzip") == n_polls // 2 and
           not any(g and g[1] for g in got[0::2]),
           "... the gzip form to the clients that take it, the plain one to the others")
        ok(0 < r1 - r0 <= 4, "... from %d renders for %d replies (tailgate_renders_total)"
           % (r1 - r0, n_polls))

        # The state headers of several feeds: extra's walsender stops.  Under
        # load (an idle feed is confirmed only every 10 s: stalled at 1.5 s).
        XURL = "/feeds/items,extra"
        load = Load(pg, base=10 ** 6)
        load.start()
        heads = wait_for(lambda: (lambda h: all(v[1] is None and v[3] is None
                                                for v in h.values()) and h)(
                                                    state_heads(st, XURL)), 10)
        ok(heads and all(v[0] == 200 for v in heads.values()),
           "all live: no state header on %s (snapshot, long-poll, SSE head)" % XURL,
           repr(heads))
        xcur = {u: json.loads(st.get(u, timeout=20)[2])["cursor"]
                for u in (XURL, "/feeds/extra,items")}
        pids = pg.psql("SELECT active_pid FROM pg_replication_slots "
                       "WHERE slot_name LIKE 'tailgate_extra%' AND active_pid IS NOT NULL").split()
        ok(len(pids) == 1, "extra's walsender: %s" % pids)
        for p in pids:
            os.kill(int(p), signal.SIGSTOP)
        try:
            stalled = wait_for(lambda: feeds_by_name(st).get("extra", {}).get("state")
                               == "stalled", 15)
            ok(stalled and feeds_by_name(st)["items"]["state"] == "live",
               "extra stalled, items live", json.dumps(feeds_by_name(st)))
            # A stalled feed holds the common position back: a first reply
            # may wait for it (503 at its timeout), saying why in its head.
            heads = state_heads(st, XURL, xcur[XURL])
            good = True
            for kind, (status, state, lag, per) in heads.items():
                pf = per_feed(per)
                good = good and status in ((200, 503) if kind == "snapshot" else (200,)) and \
                    state == "stalled" and lag is not None and \
                    lag > 1.5 and list(pf) == ["items", "extra"] and \
                    pf["items"][0] == "live" and pf["extra"][0] == "stalled" and \
                    pf["extra"][1] is not None and abs(pf["extra"][1] - lag) < 1 and \
                    (pf["items"][1] or 0) < lag
            ok(good, "%s: Tailgate-Feed-State: stalled, Tailgate-Lag the largest lag, "
               "Tailgate-Feed-States \"items=live;lag=.., extra=stalled;lag=..\" on a "
               "snapshot, a long-poll and an SSE head" % XURL, repr(heads))
            heads = state_heads(st, "/feeds/extra,items", xcur["/feeds/extra,items"])
            ok(all(v[1] == "stalled" and list(per_feed(v[3])) == ["extra", "items"]
                   for v in heads.values()),
               "/feeds/extra,items: the same, the feeds in the request's order", repr(heads))
            heads = state_heads(st, URL)
            ok(all(v[0] == 200 and v[1] is None and v[2] is None and v[3] is None
                   for v in heads.values()),
               "%s (not naming extra): no state header" % URL, repr(heads))
        finally:
            for p in pids:
                os.kill(int(p), signal.SIGCONT)
        heads = wait_for(lambda: (lambda h: all(v[1] is None and v[3] is None
                                                for v in h.values()) and h)(
                                                    state_heads(st, XURL)), 20)
        ok(heads, "extra live again: %s says nothing" % XURL, repr(heads))
        load.finish()
        load = None

        status, _, body = st.get(URL + "?items.id=gt.100000000", timeout=40)
        obj = json.loads(body or b"{}")
        ok(status == 200 and obj["feeds"]["items"]["batches"][0]["inserted"] == [] and
           len(obj["feeds"]["counts"]["batches"][0]["inserted"]) == 1,
           "a filter names its feed: items.id=gt.100000000 empties items only")
        _, _, body = st.get(URL, timeout=40)
        want = sorted(r for r in json.loads(body)["feeds"]["items"]["batches"][0]["inserted"]
                      if r[1] == "c")
        status, _, body = st.get(URL + "?counts.n=lt.0&items.v=eq.c", timeout=40)
        obj = json.loads(body or b"{}")
        got = sorted(obj["feeds"]["items"]["batches"][0]["inserted"]) if status == 200 else None
        ok(status == 200 and obj["feeds"]["counts"]["batches"][0]["inserted"] == [] and
           want != [] and got == want,
           "a filter for each feed: counts.n=lt.0 and items.v=eq.c apply to their own feed "
           "(%d rows)" % len(want), "%s %s" % (status, body[:300]))
        nine = ",".join("f%d" % i for i in range(9))
        for path, want, code, says, what in (
                ("/feeds/items,nosuch", 404, "unknown_feed", "nosuch",
                 "an unknown feed among known ones"),
                ("/feeds/nosuch,items", 404, "unknown_feed", "nosuch", "... first"),
                ("/feeds/items,later", 503, "feed_not_live", "later",
                 "a feed in the error state"),
                (URL + "?id=eq.1", 400, "bad_parameter", "FEED.COLUMN",
                 "a filter without its feed"),
                (URL + "?other.id=eq.1", 400, "bad_parameter", "FEED.COLUMN",
                 "a filter of a feed not requested"),
                (URL + "?items.=eq.1", 400, "bad_parameter", "FEED.COLUMN",
                 "a filter with an empty column"),
                (URL + "?items.nosuch=eq.1", 400, "bad_parameter", "nosuch",
                 "a filter on a column the feed does not have"),
                ("/feeds/items,items", 400, "bad_parameter", "named twice",
                 "a feed named twice"),
                ("/feeds/items,counts,items", 400, "bad_parameter", "named twice",
                 "... not next to each other"),
                ("/feeds/items,", 400, "bad_parameter", "1 to 63 characters", "an empty name"),
                ("/feeds/items,,counts", 400, "bad_parameter", "1 to 63 characters",
                 "an empty name between two"),
                ("/feeds/,items", 400, "bad_parameter", "1 to 63 characters",
                 "an empty first name"),
                ("/feeds/" + nine, 400, "bad_parameter", "at most 8 feeds", "nine feeds"),
                ("/feeds/items,it.ems", 400, "bad_parameter", '"it.ems" is not a feed name',
                 "a name with a dot"),
                (URL + "?cursor=123.deadbeef", 410, "cursor_gone", "",
                 "a cursor of another history"),
                ("/feeds/counts,items?cursor=" + cur, 410, "cursor_gone", "",
                 "the cursor of the same feeds in another order"),
                (URL + "?cursor=123", 410, "cursor_gone", "", "a bare position")):
            status, _, body = st.get(path, timeout=40)
            obj = json.loads(body or b"{}")
            ok(status == want and obj.get("error") == code and says in obj.get("message", ""),
               "%s: %s %s (%s)" % (path, want, code, what), "%s %s" % (status, body[:200]))
        eight = "/feeds/" + ",".join(("items", "counts", "extra") + tuple(
            "f%d" % i for i in range(5)))
        status, _, body = st.get(eight, timeout=40)
        ok(status == 404 and json.loads(body).get("error") == "unknown_feed",
           "eight feeds is not too many (404 for the unknown ones, not 400)",
           "%s %s" % (status, body[:200]))
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
