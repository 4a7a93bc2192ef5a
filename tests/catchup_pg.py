#!/usr/bin/env python3
"""catchup_pg.py - catch-up bounded by the snapshot, over HTTP.

A real PostgreSQL, tailgated, tailgate-fcgi and nginx (tests/lib/stack.py),
a table of 300 rows of which five change thousands of times:

  * a client close behind (three transactions) gets the three batches,
    one by one, as always;
  * a client that held its cursor while 3000 transactions passed gets
    ONE batch, the net effect, with "from" naming the cursor it applies
    to; it is no larger than the snapshot, and applied to the client's
    rows it gives exactly the table in the database;
  * a filtered client far behind gets the net batch of its rows only;
  * an SSE stream resuming that far behind (Last-Event-ID) gets the net
    batch as one event, its id the batch's timestamp, then the next
    batch as its own event.

TAP output.
"""
import collections
import http.client
import json
import os
import sys

top_srcdir = os.environ.get("top_srcdir", ".")
sys.path.insert(0, os.path.join(top_srcdir, "tests", "lib"))
sys.path.insert(0, os.path.join(top_srcdir, "tests"))
from pg import skip_unless_pg  # noqa: E402
from tap import done, ok, wait_for  # noqa: E402
from env import test_env  # noqa: E402
from daemon_pg import TAILGATED, Daemon  # noqa: E402

ROWS = 300
CHURN = 3000


def key(row):
    return json.dumps(row, separators=(",", ":"))


def apply(state, batch):
    for row in batch["deleted"]:
        state[key(row)] -= 1
        if state[key(row)] == 0:
            del state[key(row)]
    for row in batch["inserted"]:
        state[key(row)] += 1


def db_rows(pg, where="true"):
    out = pg.psql("SELECT json_build_array(id, n)::text FROM counters WHERE %s" % where)
    return collections.Counter(key(json.loads(line)) for line in out.split("\n") if line)


def poll(st, cursor, query=""):
    status, obj = st.get_json("/feeds/counters?cursor=%s&timeout=0%s" % (cursor, query),
                              timeout=20)
    return obj if status == 200 else {"status": status, "batches": []}


def sse_events(st, cursor, n, after_first, timeout=20):
    """The first n events of an SSE stream resumed after cursor:
    [(event, id, batch)], or the status when it is not 200; after_first()
    is called once the first event is in."""
    c = http.client.HTTPConnection("127.0.0.1", st.port, timeout=timeout)
    try:
        c.request("GET", "/feeds/counters", headers={"Accept": "text/event-stream",
                                                     "Last-Event-ID": cursor})
        r = c.getresponse()
        if r.status != 200:
            return r.status
        out, ev, data = [], {}, []
        while len(out) < n:
            line = r.readline()
            if not line:
                break
            line = line.decode("utf-8").rstrip("\r\n")
            if line.startswith(":"):
                continue
            if line:
                k, _, v = line.partition(":")
                v = v[1:] if v.startswith(" ") else v
                if k == "data":
                    data.append(v)
                else:
                    ev[k] = v
                continue
            if data:
                out.append((ev.get("event"), ev.get("id"), json.loads("\n".join(data))))
                if len(out) == 1:
                    after_first()
            ev, data = {}, []
        return out
    finally:
        c.close()


def main():
    skip = skip_unless_pg(TAILGATED)
    if skip is not None:
        return skip
    with test_env("catchup") as env:
        pg, st = env.pg, env.st
        pg.psql("CREATE TABLE counters (id int PRIMARY KEY, n int); "
                "ALTER TABLE counters REPLICA IDENTITY FULL; "
                "INSERT INTO counters SELECT i, 0 FROM generate_series(1, %d) i" % ROWS)
        d = env.stop_later(Daemon(pg, env.ring_dir, {"counters": {"table": "counters"}}))
        d.start()
        snap = wait_for(lambda: st.get_json("/feeds/counters", timeout=10)[1]
                        if st.get("/feeds/counters", timeout=10)[0] == 200 else None)
        ok(snap and len(snap["batches"]) >= 1, "the snapshot is served")
        state = collections.Counter()
        for b in snap["batches"]:
            apply(state, b)
        c0 = snap["cursor"]

        # Close behind: three transactions, three batches.
        for i in range(3):
            pg.psql("UPDATE counters SET n = n + 1 WHERE id = %d" % (i + 1))
        near = wait_for(lambda: len(poll(st, c0)["batches"]) == 3 and poll(st, c0))
        ok(near and len(near["batches"]) == 3 and
           not any("from" in b for b in near["batches"]),
           "close behind: the three batches, one by one", json.dumps(near)[:300])
        for b in (near or {}).get("batches", []):
            apply(state, b)
        c1 = near["cursor"] if near else c0

        # Far behind: five rows change CHURN times, one transaction each,
        # then a marker row says the daemon has them all.
        pg.psql("DO $$ BEGIN FOR i IN 1..%d LOOP "
                "UPDATE counters SET n = n + 1 WHERE id = 1 + i %% 5; COMMIT; "
                "END LOOP; END $$" % CHURN)
        pg.psql("INSERT INTO counters VALUES (%d, -1)" % (ROWS + 1))
        marker = key([ROWS + 1, -1])

        def caught_up():
            r = poll(st, c1)
            return any(marker in map(key, b["inserted"]) for b in r["batches"]) and r
        far = wait_for(caught_up, 30)
        batches = (far or {}).get("batches", [])
        ok(len(batches) == 1, "far behind: one batch instead of %d" % (CHURN + 1),
           "%d batches" % len(batches))
        net = batches[0] if batches else {}
        ok(net.get("from") == c1.split(".")[0] and
           far["cursor"].split(".")[0] == net.get("timestamp"),
           "it names its range: from the client's cursor to the reply's",
           json.dumps(net)[:300])
        fresh = st.get_json("/feeds/counters", timeout=10)[1]
        snap_bytes = len(key(fresh["batches"][0]))
        ok(net and len(key(net)) <= snap_bytes,
           "it is no larger than the snapshot (%d <= %d bytes)" % (len(key(net)), snap_bytes))
        ok(net and len(net["deleted"]) == 5 and len(net["inserted"]) == 6,
           "five rows out, five changed rows and the marker in",
           json.dumps(net)[:300])
        for b in batches:
            apply(state, b)
        ok(state == db_rows(pg), "applied, it gives the database's table")

        # Filtered: the same catch-up, only its rows.
        r = poll(st, c1, "&id=eq.2")
        ok(len(r["batches"]) == 1 and r["batches"][0]["inserted"] ==
           [json.loads(k) for k in db_rows(pg, "id = 2")] and
           len(r["batches"][0]["deleted"]) == 1,
           "filtered far behind: the net batch of its rows", json.dumps(r)[:300])

        # SSE resuming at c1: the same catch-up as one event; then (after
        # one more transaction) the stream goes on a batch per event.
        sse_state = collections.Counter()
        for b in snap["batches"] + (near or {}).get("batches", []):
            apply(sse_state, b)
        evs = sse_events(st, c1, 2, lambda: pg.psql(
            "UPDATE counters SET n = n + 1 WHERE id = 8"))
        ok(isinstance(evs, list) and len(evs) == 2, "SSE resumed far behind: a stream",
           repr(evs)[:300])
        evs = evs if isinstance(evs, list) else []
        first = evs[0] if evs else (None, None, {})
        ok(first[0] is None and first[2].get("from") == c1.split(".")[0] and
           first[1] is not None and first[1].split(".")[0] == first[2].get("timestamp") and
           len(first[2].get("deleted", [])) == 5 and len(first[2].get("inserted", [])) == 6,
           "SSE resumed far behind: one event holding the net batch (from the cursor, "
           "its id the batch's timestamp)", repr(first)[:300])
        for _, _, b in evs:
            apply(sse_state, b)
        ok(len(evs) == 2 and "from" not in evs[1][2] and sse_state == db_rows(pg),
           "then the next batch as its own event; applied, the stream's table is the "
           "database's", repr(evs[1:])[:300])

        # Normal following again from there: a batch at a time.
        pg.psql("UPDATE counters SET n = n + 1 WHERE id = 7")
        nxt = wait_for(lambda: len(poll(st, far["cursor"])["batches"]) == 2 and
                       poll(st, far["cursor"]))
        ok(nxt and len(nxt["batches"]) == 2 and not any("from" in b for b in nxt["batches"]),
           "and from its new cursor, the next two batches one by one, as usual",
           json.dumps(nxt)[:300])
    return done()


if __name__ == "__main__":
    sys.exit(main())
