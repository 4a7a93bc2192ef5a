#!/usr/bin/env python3
"""valgrind_stack.py - the whole stack, briefly, with both programs under memcheck.

A real PostgreSQL (tests/lib/pg.py), tailgated and tailgate-fcgi each
under valgrind (tests/lib/util.py valgrind_cmd: exit status 99 on any
memory error or a definite or indirect leak), and a real nginx in front
(tests/lib/stack.py).  Small data, generous timeouts: valgrind runs the
programs 20 to 50 times slower.  Through nginx:

  * a snapshot (plain and gzip), a filtered snapshot;
  * a long-poll parked, then woken by an INSERT;
  * an SSE stream: its snapshot event, then a batch an INSERT made;
  * two feeds in one request, and its long-poll woken by an INSERT;
  * an SSE reconnect with Last-Event-ID;
  * bad requests: a malformed cursor, a bad filter value, a feed named
    twice (400), an unknown feed, a path under a feed (404), a feed in
    the error state (503: its table does not exist);
  * GET /feeds, /metrics, a HEAD;
  * SIGHUP: the daemon reloads its configuration, a feed added.
Then SIGTERM both, with a long-poll parked and an SSE stream open: each
exits 0, and its valgrind log says 0 errors and nothing definitely or
indirectly lost.

Run by tests/valgrind.sh; skips (77) without valgrind, PostgreSQL or
nginx, and in a sanitizer build.  Environment: top_builddir, top_srcdir.
After a failed check the directory stays, with both programs' logs and
valgrind's (tests/lib/env.py).  TAP output.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import threading

top_srcdir = os.environ.get("top_srcdir", ".")
top_builddir = os.environ.get("top_builddir", ".")
sys.path.insert(0, os.path.join(top_srcdir, "tests", "lib"))
from env import test_env  # noqa: E402
from pg import skip_unless_pg  # noqa: E402
from stack import nginx_bin  # noqa: E402
from tap import done, ok, wait_for  # noqa: E402
from util import sanitized, tail, valgrind_cmd, valgrind_summary  # noqa: E402

TAILGATED = os.path.join(top_builddir, "tailgated")
FCGI = os.path.join(top_builddir, "tailgate-fcgi")
SLOW = 90  # seconds: any one step under valgrind on a loaded machine


class Poll(threading.Thread):
    """One request in the background; .result is (status, headers, body)."""

    def __init__(self, st, path):
        super().__init__(daemon=True)
        self.st, self.path, self.result, self.error = st, path, None, None
        self.start()

    def run(self):
        try:
            self.result = self.st.get(self.path, timeout=SLOW + 30)
        except Exception as e:  # reported by the check
            self.error = e

    def wait(self):
        self.join(SLOW + 40)
        if self.result is None:
            return None, {}, {"error": repr(self.error)}
        status, headers, body = self.result
        return status, headers, json.loads(body or b"{}")


class SSE:
    """An SSE client through nginx; .event() reads one event."""

    def __init__(self, st, path, last_event_id=None):
        import http.client
        self.c = http.client.HTTPConnection("127.0.0.1", st.port, timeout=SLOW)
        headers = {"Accept": "text/event-stream"}
        if last_event_id:
            headers["Last-Event-ID"] = last_event_id
        self.c.request("GET", path, headers=headers)
        self.r = self.c.getresponse()
        self.status = self.r.status

    def event(self):
        ev, data = {}, []
        while True:
            line = self.r.fp.readline()
            if not line:
                raise EOFError("stream closed")
            line = line.decode().rstrip("\r\n")
            if line == "":
                if data:
                    ev["data"] = json.loads("\n".join(data))
                    return ev
                continue
            k, _, v = line.partition(": ")
            if k == "data":
                data.append(v)
            elif k in ("id", "event"):
                ev[k] = v

    def close(self):
        self.c.close()


def parked(st):
    _, _, body = st.get("/metrics", timeout=SLOW)
    for line in body.decode().splitlines():
        if line.startswith("tailgate_parked_requests "):
            return float(line.split()[1])
    return 0.0


def live(st, names):
    status, obj = st.get_json("/feeds", timeout=SLOW)
    feeds = {f["name"]: f for f in obj.get("feeds", [])} if status == 200 else {}
    return all(feeds.get(n, {}).get("live") for n in names)


def inserted(obj):
    return [r for b in obj.get("batches", []) for r in b.get("inserted", [])]


def check_log(what, rc, pattern_dir, prefix):
    """rc 0 and every valgrind log of the program clean."""
    logs = sorted(os.path.join(pattern_dir, f) for f in os.listdir(pattern_dir)
                  if f.startswith(prefix))
    texts = [open(p, errors="replace").read() for p in logs]
    sums = [valgrind_summary(t) for t in texts]
    ok(rc == 0, "%s: SIGTERM, exit status 0 under valgrind (got %s; 99: memcheck errors)"
       % (what, rc), "\n".join(t[-3000:] for t in texts))
    ok(logs and all(e == 0 for e, _ in sums),
       "%s: valgrind reports 0 errors (%s)" % (what, [e for e, _ in sums]),
       "\n".join(t[-4000:] for t in texts) or "no valgrind log in %s" % pattern_dir)
    ok(logs and all(lost == 0 for _, lost in sums),
       "%s: nothing definitely or indirectly lost (%s bytes)" % (what, [b for _, b in sums]),
       "\n".join(t[-4000:] for t in texts))


def main():
    skip = skip_unless_pg(TAILGATED, FCGI)
    if skip is not None:
        return skip
    san = sanitized(FCGI)
    if san:
        print("1..0 # SKIP a %s build: valgrind cannot run sanitized programs" % san)
        return 77
    if shutil.which("valgrind") is None:
        print("1..0 # SKIP valgrind not found")
        return 77
    if not os.access(nginx_bin(), os.X_OK):
        print("1..0 # SKIP nginx not found")
        return 77
    stack_args = {"valgrind": True, "start_timeout": SLOW,
                  "responder_args": ["--handlers", "1", "--writers", "2",
                                     "--max-timeout", str(SLOW)]}
    with test_env("valgrind", start_stack=False, stack_args=stack_args) as env:
        run(env)
    return done()


def run(env):
    """The checks, in env (tests/lib/env.py): its cluster, ring directory
    and stack (not started)."""
    pg, st, tmp, ring_dir = env.pg, env.st, env.tmp, env.ring_dir
    daemon = None

    def kill_daemon():
        if daemon is not None and daemon.poll() is None:
            daemon.kill()
            daemon.wait()
    env.at_end(kill_daemon)

    pg.psql("""
        CREATE TABLE items (id int PRIMARY KEY, v text, n int);
        CREATE TABLE tags (id int PRIMARY KEY, tag text);
        INSERT INTO items VALUES (1, 'one', 1), (2, 'two', 20), (3, 'three', 30);
        INSERT INTO tags VALUES (1, 'red');
    """)
    conf = os.path.join(tmp, "tailgated.conf")
    with open(conf, "w") as f:
        f.write("source = postgresql\nconninfo = %s\nring_dir = %s\n"
                "backoff_min_ms = 100\nbackoff_max_ms = 1000\n\n"
                "[feed items]\ntable = items\n\n[feed tags]\ntable = tags\n\n"
                "[feed later]\ntable = later\n" % (pg.dsn, ring_dir))
    dlog = open(os.path.join(tmp, "tailgated.log"), "w")
    daemon = subprocess.Popen(valgrind_cmd(os.path.join(tmp, "valgrind.tailgated.%p.log")) +
                              [TAILGATED, "-c", conf], stdout=dlog, stderr=subprocess.STDOUT)
    dlog.close()
    st.start()
    up = wait_for(lambda: daemon.poll() is None and live(st, ("items", "tags")), SLOW, 0.5)
    ok(up, "tailgated and tailgate-fcgi under valgrind: items and tags are live",
       tail(os.path.join(tmp, "tailgated.log"), 30))
    if not up:
        return

    # ---- a snapshot, plain and gzip; a filtered one
    status, obj = st.get_json("/feeds/items", timeout=SLOW)
    rows = inserted(obj)
    ok(status == 200 and sorted(r[0] for r in rows) == [1, 2, 3],
       "snapshot: 200, the 3 rows", obj)
    cursor = obj.get("cursor")
    status, h, _ = st.get("/feeds/items", headers={"Accept-Encoding": "gzip"}, timeout=SLOW)
    ok(status == 200 and h.get("content-encoding") == "gzip", "snapshot, gzip: 200", h)
    status, fobj = st.get_json("/feeds/items?n=gt.5&v=neq.three", timeout=SLOW)
    ok(status == 200 and [r[0] for r in inserted(fobj)] == [2],
       "filtered snapshot (n=gt.5&v=neq.three): only row 2", fobj)

    # ---- a long-poll parked, woken by an INSERT
    before = parked(st)
    p = Poll(st, "/feeds/items?cursor=%s&timeout=%d" % (cursor, SLOW - 10))
    ok(wait_for(lambda: parked(st) > before, SLOW, 0.3), "long-poll: parked")
    pg.psql("INSERT INTO items VALUES (4, 'four', 40)")
    status, _, pobj = p.wait()
    ok(status == 200 and [r[0] for r in inserted(pobj)] == [4],
       "long-poll: woken by the INSERT, its row", pobj)
    cursor = pobj.get("cursor", cursor)

    # ---- SSE: snapshot event, then a batch
    # (the ring's snapshot, then the batches after it: row 4's among them)
    s = SSE(st, "/feeds/items")
    ev = s.event()
    ids = {r[0] for r in ev.get("data", {}).get("inserted", [])}
    ok(s.status == 200 and ev.get("event") == "snapshot" and {1, 2, 3} <= ids,
       "SSE: the snapshot event", ev)
    for _ in range(5):
        if 4 in ids:
            break
        ev = s.event()
        ids |= {r[0] for r in ev.get("data", {}).get("inserted", [])}
    ok(ids == {1, 2, 3, 4}, "SSE: the snapshot and the batches after it, 4 rows", ids)
    pg.psql("INSERT INTO items VALUES (5, 'five', 50)")
    ev = s.event()
    ok(ev.get("data", {}).get("inserted") == [[5, "five", 50]], "SSE: the INSERT's batch", ev)
    s.close()
    # a reconnect resumes after Last-Event-ID: no snapshot, the next batch
    s = SSE(st, "/feeds/items", last_event_id=cursor)
    ev = s.event()
    ok(s.status == 200 and ev.get("event") != "snapshot" and
       [r[0] for r in ev.get("data", {}).get("inserted", [])] == [5],
       "SSE: a reconnect with Last-Event-ID resumes with the next batch", ev)
    s.close()
    cursor = ev.get("id", cursor)

    # ---- two feeds in one request, and its long-poll
    status, mobj = st.get_json("/feeds/items,tags", timeout=SLOW)
    feeds = mobj.get("feeds", {})
    ok(status == 200 and len(inserted(feeds.get("items", {}))) == 5 and
       inserted(feeds.get("tags", {})) == [[1, "red"]],
       "GET /feeds/items,tags: both snapshots at one position", mobj)
    mp = Poll(st, "/feeds/items,tags?cursor=%s&timeout=%d" % (mobj.get("cursor"), SLOW - 10))
    pg.psql("INSERT INTO tags VALUES (2, 'blue')")
    status, _, mpobj = mp.wait()
    ok(status == 200 and inserted(mpobj.get("feeds", {}).get("tags", {})) == [[2, "blue"]],
       "several feeds: the long-poll answered with the INSERT into tags", mpobj)

    # ---- bad requests
    for path, want in (("/feeds/items?cursor=x", 400), ("/feeds/items?n=eq.abc", 400),
                       ("/feeds/items,items", 400), ("/feeds/items?timeout=-1", 400),
                       ("/feeds/nosuch", 404), ("/feeds/items/x", 404),
                       ("/feeds/items,nosuch", 404), ("/feeds/later", 503)):
        status, _, body = st.get(path, timeout=SLOW)
        ok(status == want and b'"error"' in body, "%s: %d" % (path, want), (status, body[:200]))
    ok(st.get("/feeds", timeout=SLOW)[0] == 200 and st.get("/metrics", timeout=SLOW)[0] == 200,
       "GET /feeds and /metrics: 200")
    status, h, body = st.get("/feeds/items", method="HEAD", timeout=SLOW)
    ok(status == 200 and body == b"", "HEAD /feeds/items: 200, no body", (status, body[:100]))

    # ---- SIGHUP: the daemon reloads its configuration, a feed added
    with open(conf, "a") as f:
        f.write("\n[feed tags2]\ntable = tags\ncolumns = id\n")
    daemon.send_signal(signal.SIGHUP)
    ok(wait_for(lambda: live(st, ("items", "tags", "tags2")), SLOW, 0.5),
       "SIGHUP: the feed added to the configuration is live", tail(
           os.path.join(tmp, "tailgated.log"), 20))

    # ---- stop, with a long-poll parked and an SSE stream open
    before = parked(st)
    Poll(st, "/feeds/items?cursor=%s&timeout=%d" % (cursor, SLOW - 10))
    open_sse = SSE(st, "/feeds/tags")
    open_sse.event()
    ok(wait_for(lambda: parked(st) > before, SLOW, 0.3),
       "at shutdown: a long-poll parked and an SSE stream open")
    daemon.send_signal(signal.SIGTERM)
    try:
        drc = daemon.wait(SLOW)
    except subprocess.TimeoutExpired:
        daemon.kill()
        drc = daemon.wait()
    st.stop_responders()
    open_sse.close()
    check_log("tailgated", drc, tmp, "valgrind.tailgated.")
    rrc = st.responder_exits[0][0] if st.responder_exits else None
    check_log("tailgate-fcgi", rrc, st.dir, "valgrind.")


if __name__ == "__main__":
    sys.exit(main())
