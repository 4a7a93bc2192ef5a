#!/usr/bin/env python3
"""identity_pg.py - a cursor is refused by a host of another upstream history.

A cursor is a position in the upstream's order plus the identity of the
history it belongs to (docs/ARCHITECTURE.md, "The cursor"): PostgreSQL's
system identifier and timeline, hashed with what determines the feed's
rows.  Two PostgreSQL clusters X and Y with the same schema and the same
feed configuration produce positions (LSNs) of the same kind and close
together, so without the identity a cursor of X would be answered by Y
with Y's rows.  This test runs, on each cluster, a host (tailgated, nginx
+ tailgate-fcgi: tests/lib/multihost.py start_host) and checks:

  1. Y's own cursors are resumed: its snapshot cursor, and any position
     between Y's floor and frontier (200 with the batches after it);
  2. X's cursor sent to Y's host is 410 cursor_gone, never rows; also with
     its position moved between Y's floor and frontier (the same position
     that Y's own identity resumes, so only the identity differs); an SSE
     stream resumed with it starts again with `event: snapshot`;
  3. after Y's daemon restarts with the feed's columns changed, Y's
     cursors of the old definition are 410, also at a position the new
     history holds (where the new identity is resumed).

The cursors of 1-3 at a position Y holds are built from a position and an
identity taken from real cursors: the server is under test, not a client.
With the identity check removed from ring_seek, checks 2 and 3 fail.
Also: `tailgate-ring dump` takes Y's cursor as the responder hands it out
and as a bare position, and refuses X's identity.

Environment: top_builddir, top_srcdir (automake), IDENTITY_KEEP=1 (keep
the directory).  Skips (77) without PostgreSQL or nginx.
"""
import json
import os
import subprocess
import sys
import tempfile

top_srcdir = os.environ.get("top_srcdir", os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(top_srcdir, "tests", "lib"))
from tap import ok, done, wait_for  # noqa: E402
from pg import PgCluster, skip_unless_pg  # noqa: E402
from util import sanitizer_reports  # noqa: E402
from stack import builddir, nginx_bin  # noqa: E402
from multihost import report_abort, start_host, teardown, wait_live  # noqa: E402

KEEP = os.environ.get("IDENTITY_KEEP") == "1"
FEED = "items"
SCHEMA = """
CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL, qty int NOT NULL);
ALTER TABLE items REPLICA IDENTITY FULL;
INSERT INTO items SELECT g, 'item ' || g, g FROM generate_series(1, 20) g;
"""


def conf(pg, ring, columns=None):
    text = ("source = postgresql\nconninfo = %s\nring_dir = %s\n"
            "backoff_min_ms = 50\nbackoff_max_ms = 500\n\n[feed %s]\ntable = items\n"
            % (pg.dsn, ring, FEED))
    if columns:
        text += "columns = %s\n" % columns
    return text


def split(cursor):
    """(position, identity) of a cursor the responder handed out."""
    pos, _, ident = cursor.partition(".")
    return int(pos), ident


def get(host, path, headers=None):
    status, _, body = host["stack"].get(path, headers=headers, timeout=30)
    try:
        obj = json.loads(body)
    except ValueError:
        obj = None
    return status, obj, body


def poll(host, cursor, timeout=0):
    return get(host, "/feeds/%s?cursor=%s&timeout=%d" % (FEED, cursor, timeout))


def sse_first_event(host, cursor):
    """The first event's name (None: a batch) of an SSE stream resumed
    with Last-Event-ID cursor."""
    import http.client
    c = http.client.HTTPConnection("127.0.0.1", host["stack"].port, timeout=20)
    try:
        c.request("GET", "/feeds/%s?stream=sse" % FEED, headers={"Last-Event-ID": cursor})
        r = c.getresponse()
        if r.status != 200:
            return "HTTP %d" % r.status
        event = None
        while True:
            line = r.readline()
            if not line:
                return "the stream ended"
            line = line.decode().rstrip("\r\n")
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                return event
    finally:
        c.close()


def snapshot(host):
    status, obj, body = get(host, "/feeds/%s" % FEED)
    if status != 200:
        raise RuntimeError("snapshot: HTTP %d: %r" % (status, body[:200]))
    return obj


def advance(pg, host, cursor, n):
    """Write n transactions and long-poll from cursor until a reply holds
    batches; the reply's cursor."""
    for i in range(n):
        pg.psql("UPDATE items SET qty = qty + 1 WHERE id = %d" % (i % 20 + 1))
    got = []

    def moved():
        status, obj, _ = poll(host, cursor, timeout=2)
        if status == 200 and obj["batches"]:
            got.append(obj["cursor"])
            return True
        return False
    if not wait_for(moved, 30):
        raise RuntimeError("no batches after %s" % cursor)
    return got[0]


def gone(status, obj):
    return status == 410 and obj is not None and obj.get("error") == "cursor_gone" \
        and "batches" not in obj


def main():
    build = builddir()
    skip = skip_unless_pg(nginx_bin(), *(os.path.join(build, exe) for exe in ("tailgated", "tailgate-fcgi")))
    if skip is not None:
        return skip
    tmp = tempfile.mkdtemp(prefix="tailgate-identity-pg.")
    os.chmod(tmp, 0o755)
    pgs, hosts = {}, {}
    try:
        for n in ("x", "y"):
            pgs[n] = PgCluster(base_dir=os.path.join(tmp, "pg-" + n), keep=True)
            pgs[n].start()
            pgs[n].psql(SCHEMA)
        for n in ("x", "y"):
            hosts[n] = start_host(build, tmp, n, lambda ring, n=n: conf(pgs[n], ring))
        ok(wait_live(hosts["x"], [FEED]) and wait_live(hosts["y"], [FEED]),
           "both hosts serve the feed live", hosts["x"]["daemon"].log() +
           hosts["y"]["daemon"].log())
        x, y = hosts["x"], hosts["y"]
        sysid = {n: pgs[n].psql("SELECT system_identifier FROM pg_control_system()")
                 for n in pgs}
        ok(sysid["x"] != sysid["y"], "two clusters, two system identifiers (%s, %s)"
           % (sysid["x"], sysid["y"]))

        # ---- 1. Y's own cursors ----
        cx = snapshot(x)["cursor"]
        cy0 = snapshot(y)["cursor"]
        (px, ix), (py0, iy) = split(cx), split(cy0)
        ok(ix != iy, "the clusters' cursors name different histories (%s, %s)" % (cx, cy0))
        cy1 = advance(pgs["y"], y, cy0, 6)
        py1 = split(cy1)[0]
        mid = (py0 + py1) // 2
        note = "Y's floor %d, frontier %d, X's cursor %s" % (py0, py1, cx)
        print("# " + note)
        status, obj, body = poll(y, cy0)
        ok(status == 200 and obj["batches"], "Y's snapshot cursor is resumed on Y "
           "(200 with %d batches)" % (len(obj["batches"]) if obj else -1), body[:300])
        status, obj, body = poll(y, "%d.%s" % (mid, iy))
        ok(status == 200 and obj["batches"], "a position between Y's floor and frontier "
           "with Y's identity is resumed on Y (200)", body[:300])

        # ---- 2. X's cursor on Y ----
        status, obj, body = poll(y, cx)
        ok(gone(status, obj), "X's snapshot cursor on Y's host: 410 cursor_gone (%d)"
           % status, body[:300])
        status, obj, body = poll(y, "%d.%s" % (mid, ix))
        ok(gone(status, obj), "X's identity at a position between Y's floor and frontier: "
           "410 cursor_gone, no rows (%d)" % status, body[:300])
        status, obj, body = poll(y, "%d.%s" % (py0, ix))
        ok(gone(status, obj), "X's identity at Y's floor: 410 (%d)" % status, body[:300])
        status, obj, body = poll(x, "%d.%s" % (mid, iy))
        ok(gone(status, obj), "and the other way: Y's identity on X's host: 410 (%d)"
           % status, body[:300])
        ev = sse_first_event(y, "%d.%s" % (mid, ix))
        ok(ev == "snapshot", "an SSE stream resumed on Y with X's cursor starts again with "
           "event: snapshot (%r)" % ev)
        ev = sse_first_event(y, "%d.%s" % (mid, iy))
        ok(ev is None, "an SSE stream resumed on Y with Y's cursor goes on with batches (%r)"
           % ev)
        status, obj, body = poll(x, cx)
        ok(status == 200, "X's cursor is resumed on X's own host (%d)" % status, body[:300])

        # ---- tailgate-ring dump takes the responder's cursors ----
        ring = os.path.join(build, "tailgate-ring")
        ydir = os.path.join(tmp, "y", "ring")

        def dump(cursor):
            p = subprocess.run([ring, "-d", ydir, "dump", FEED, cursor], capture_output=True,
                               text=True, timeout=30)
            return p.returncode, p.stdout, p.stderr
        rc1, out1, err1 = dump(cy0)
        rc2, out2, err2 = dump(str(py0))
        ok(rc1 == 0 and out1.count("\n") >= 6, "tailgate-ring dump takes Y's cursor as the "
           "responder hands it out (%d, %d batches)" % (rc1, out1.count("\n")), err1)
        ok(rc2 == 0 and out2 == out1, "and the bare position, with the same batches (%d)"
           % rc2, err2)
        rc3, out3, err3 = dump("%d.%s" % (mid, ix))
        ok(rc3 == 3 and not out3 and "another upstream history" in err3,
           "tailgate-ring dump refuses X's identity: exit 3 (%d), %s" % (rc3, err3.strip()))
        rc4, _, err4 = dump("%d.xyz" % mid)
        ok(rc4 == 2, "tailgate-ring dump: a malformed cursor is exit 2 (%d)" % rc4, err4)

        # ---- 3. a changed feed definition ----
        dy = y["daemon"]
        dy.stop()
        with open(dy.conf, "w") as f:
            f.write(conf(pgs["y"], os.path.join(tmp, "y", "ring"), columns="id, qty"))
        dy.start()
        ok(wait_for(lambda: (snapshot_or_none(y) or {}).get("columns") is not None and
                    [c["name"] for c in snapshot_or_none(y)["columns"]] == ["id", "qty"], 60),
           "Y restarted with the feed's columns changed serves the new columns",
           dy.log())
        cz0 = snapshot(y)["cursor"]
        pz0, iz = split(cz0)
        ok(iz != iy, "the new definition is a new history (%s, was %s)" % (iz, iy))
        cz1 = advance(pgs["y"], y, cz0, 6)
        pz1 = split(cz1)[0]
        zmid = (pz0 + pz1) // 2
        status, obj, body = poll(y, cy1)
        ok(gone(status, obj), "a cursor of the old definition: 410 (%d)" % status, body[:300])
        status, obj, body = poll(y, "%d.%s" % (zmid, iy))
        ok(gone(status, obj), "the old definition's identity at a position the new history "
           "holds: 410, no rows (%d)" % status, body[:300])
        status, obj, body = poll(y, "%d.%s" % (zmid, iz))
        ok(status == 200 and obj["batches"], "the same position with the new identity is "
           "resumed (200)", body[:300])
        for n in ("x", "y"):
            rep = sanitizer_reports(hosts[n]["daemon"].log(2000))
            ok(not rep, "no sanitizer reports in %s's daemon log" % n, "\n".join(rep[:10]))
    except Exception as e:  # report, clean up, fail
        report_abort(e, hosts)
    finally:
        teardown(tmp, hosts=hosts, then=[p.cleanup for p in pgs.values()], keep=KEEP)
    return done()


def snapshot_or_none(host):
    try:
        status, obj, _ = get(host, "/feeds/%s" % FEED)
    except (OSError, RuntimeError):
        return None
    return obj if status == 200 else None


if __name__ == "__main__":
    sys.exit(main())
