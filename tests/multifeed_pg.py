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
  * per-feed filters (FEED.COLUMN=OP.VALUE), and the errors: an unknown
    feed 404, an unprefixed or foreign filter 400, a feed named twice 400,
    a cursor of another history 410.

TAP output.
"""
import http.client
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

top_srcdir = os.environ.get("top_srcdir", ".")
sys.path.insert(0, os.path.join(top_srcdir, "tests", "lib"))
sys.path.insert(0, os.path.join(top_srcdir, "tests"))
from pg import PgCluster, skip_unless_pg  # noqa: E402
from tap import done, ok, wait_for  # noqa: E402
from stack import Stack  # noqa: E402
from daemon_pg import TAILGATED, Daemon  # noqa: E402

URL = "/feeds/items,counts"


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

    def __init__(self, pg):
        super().__init__(daemon=True)
        self.p = subprocess.Popen(
            ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", pg.socket_dir, "-p",
             str(pg.port), "-U", pg.user, "-d", pg.dbname],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=pg.env())
        self.stop = threading.Event()
        self.n = 0

    def run(self):
        i = 1000
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
    tmp = tempfile.mkdtemp(prefix="tailgate-multifeed.")
    os.chmod(tmp, 0o755)
    ring_dir = os.path.join(tmp, "ring")
    os.mkdir(ring_dir)
    pg = PgCluster()
    pg.start()
    d = None
    load = None
    st = Stack(ring_dir=ring_dir, base_dir=os.path.join(tmp, "stack"))
    try:
        st.start()
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
        """)
        d = Daemon(pg, ring_dir, {"items": {"table": "items"},
                                  "counts": {"table": "counts"}})
        d.start()
        live = wait_for(lambda: st.get_json("/feeds", timeout=10)[0] == 200 and
                        all(f["live"] for f in st.get_json("/feeds", timeout=10)[1]["feeds"])
                        and len(st.get_json("/feeds", timeout=10)[1]["feeds"]) == 2, 30)
        ok(live, "both feeds are live")

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
            wait_for(lambda: all(f["live"] for f in st.get_json("/feeds", timeout=10)[1]
                                 .get("feeds", [])), 30)
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
        load.finish()
        load = None

        status, _, body = st.get(URL + "?items.id=gt.100000000", timeout=40)
        obj = json.loads(body or b"{}")
        ok(status == 200 and obj["feeds"]["items"]["batches"][0]["inserted"] == [] and
           len(obj["feeds"]["counts"]["batches"][0]["inserted"]) == 1,
           "a filter names its feed: items.id=gt.100000000 empties items only")
        for path, want, what in (
                ("/feeds/items,nosuch", 404, "an unknown feed"),
                (URL + "?id=eq.1", 400, "a filter without its feed"),
                (URL + "?other.id=eq.1", 400, "a filter of a feed not requested"),
                ("/feeds/items,items", 400, "a feed named twice"),
                ("/feeds/items,", 400, "an empty name"),
                (URL + "?cursor=123.deadbeef", 410, "a cursor of another history"),
                (URL + "?cursor=123", 410, "a bare position")):
            status, _, body = st.get(path, timeout=40)
            ok(status == want and b'"error"' in body, "%s: %s (%s)" % (path, want, what),
               "%s %s" % (status, body[:200]))
    finally:
        if load is not None:
            load.finish()
        if d is not None:
            d.stop()
        st.stop()
        pg.stop()
        pg.cleanup()
    return done()


if __name__ == "__main__":
    sys.exit(main())
