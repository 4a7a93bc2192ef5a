#!/usr/bin/env python3
"""hook.py - tailgate-hook against a real nginx + tailgate-fcgi stack
(tests/ringfeed writes the feed) and a local receiver that fails.  TAP.

The receiver (this script run as `hook.py receiver PORT LOG FAILRATE`)
answers 500, drops the connection, or takes the POST and drops the
connection before its answer, at random, and records every POST it
took (headers and body) in LOG.  While batches are written, the
receiver is killed and restarted and the hook is killed -9 and restarted
(same --state file).  Then:

  - every signature verifies (HMAC-SHA256 of the body with the secret)
  - a key always names the same body; after dropping repeated keys the
    cursors increase and every change applies (no delete of a row not
    held), and the rows so rebuilt are the feed's, filtered as asked
  - the hook paused while the ring drops its cursor (410) posts the
    difference after its new snapshot, and the rebuilt rows still match
  - a 4xx ends the hook with exit 1 naming the response; with --skip-4xx
    it is logged and skipped; --once delivers and exits 0
  - the state file is JSON holding the acknowledged cursor

Environment: top_builddir.  Skips (77) without nginx.
"""

import hashlib
import hmac
import http.server
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "lib"))
from tap import done, failed, ok, wait_for  # noqa: E402
from util import free_port  # noqa: E402

BUILD = os.path.abspath(os.environ.get("top_builddir", "."))
HOOK = os.path.join(BUILD, "tailgate-hook")
SECRET = "s3cret-for-tests"


# ---- the receiver -----------------------------------------------------------

def receiver(port, log, failrate, refuse):
    class H(http.server.BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            roll = random.random()
            if roll < failrate / 3:
                self.send_response(500)
                self.end_headers()
                return
            if roll < failrate * 2 / 3:
                self.connection.shutdown(socket.SHUT_RDWR)  # dropped: no answer
                return
            rec = {"key": self.headers.get("Idempotency-Key"),
                   "sig": self.headers.get("X-Tailgate-Signature"),
                   "feed": self.headers.get("X-Tailgate-Feed"),
                   "cursor": self.headers.get("X-Tailgate-Cursor"),
                   "ctype": self.headers.get("Content-Type"),
                   "body": body.decode()}
            if refuse and rec["cursor"] == refuse:
                self.send_response(422)
                self.end_headers()
                self.wfile.write(b"no such warehouse item")
                return
            with open(log, "a") as f:
                f.write(json.dumps(rec) + "\n")
                f.flush()
                os.fsync(f.fileno())
            if roll < failrate:
                self.connection.shutdown(socket.SHUT_RDWR)  # taken, but the ack is lost
                return
            self.send_response(204)
            self.end_headers()

    http.server.HTTPServer.allow_reuse_address = True
    http.server.HTTPServer(("127.0.0.1", port), H).serve_forever()


class Receiver:
    def __init__(self, log, failrate=0.3, refuse=""):
        self.port, self.log, self.failrate, self.refuse = free_port(), log, failrate, refuse
        self.proc = None
        self.start()

    def start(self):
        self.proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "receiver",
                                      str(self.port), self.log, str(self.failrate), self.refuse])
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("receiver did not start")

    def stop(self):
        self.proc.kill()
        self.proc.wait()

    def records(self):
        if not os.path.exists(self.log):
            return []
        with open(self.log) as f:
            return [json.loads(x) for x in f if x.strip()]

    @property
    def url(self):
        return "http://127.0.0.1:%d/alerts" % self.port


def start_hook(args, log):
    env = dict(os.environ, TAILGATE_HOOK_SECRET=SECRET)
    return subprocess.Popen([HOOK, "--timeout", "2"] + args, env=env, stdout=log, stderr=log)


def rebuild(recs):
    """Dedup by key, check order and that every change applies; the rows."""
    seen, bodies, problems = {}, [], []
    for r in recs:
        if r["key"] in seen:
            if seen[r["key"]] != r["body"]:
                problems.append("key %s with two bodies" % r["key"])
            continue
        seen[r["key"]] = r["body"]
        bodies.append(json.loads(r["body"]))
    rows, last = {}, -1
    for b in bodies:
        pos = int(b["cursor"].split(".")[0])  # POSITION.IDENTITY
        if pos <= last:
            problems.append("cursor %s after %d" % (b["cursor"], last))
        last = pos
        for row in b["deleted"]:
            k = json.dumps(row)
            if rows.get(k, 0) <= 0:
                problems.append("cursor %s deletes %s, not held" % (b["cursor"], k))
            rows[k] = rows.get(k, 0) - 1
        for row in b["inserted"]:
            k = json.dumps(row)
            rows[k] = rows.get(k, 0) + 1
    return {k: v for k, v in rows.items() if v > 0}, bodies, problems


def feed_rows(st, query=""):
    reply = json.loads(st.get("/feeds/stock" + query)[2])
    rows = {}
    for b in reply["batches"]:
        for row in b["deleted"]:
            rows[json.dumps(row)] -= 1
        for row in b["inserted"]:
            rows[json.dumps(row)] = rows.get(json.dumps(row), 0) + 1
    return {k: v for k, v in rows.items() if v > 0}, reply["cursor"]


def main():
    if shutil.which("nginx") is None and not os.path.exists("/usr/sbin/nginx"):
        print("1..0 # SKIP nginx not installed")
        return 77
    from stack import Stack
    tmp = tempfile.mkdtemp(prefix="hooktest.")
    hooklog = open(os.path.join(tmp, "hook.log"), "ab")
    try:
        with Stack() as st:
            feed = st.ringfeed("stock", [("id", "int8"), ("name", "text"), ("qty", "int4")],
                               size=1 << 16)
            feed.batch(2, inserted=[[i, "item%d" % i, i % 20] for i in range(1, 11)])
            furl = st.url("/feeds/stock")
            rx = Receiver(os.path.join(tmp, "rx.log"))
            state = os.path.join(tmp, "state.json")
            args = ["--state", state, "--filter", "qty=lt.15", furl, rx.url]
            hook = start_hook(args, hooklog)
            qty = {i: i % 20 for i in range(1, 11)}
            cursor = 2
            rnd = random.Random(14)
            for step in range(60):
                cursor += 1
                i = rnd.randint(1, 12)
                ins, dele = [], []
                if i in qty:
                    dele.append([i, "item%d" % i, qty[i]])
                qty[i] = rnd.randint(0, 25)
                ins.append([i, "item%d" % i, qty[i]])
                feed.batch(cursor, inserted=ins, deleted=dele)
                if step in (15, 40):
                    hook.kill()  # kill -9 mid-stream
                    hook.wait()
                    hook = start_hook(args, hooklog)
                if step in (25, 50):
                    rx.stop()
                    time.sleep(0.3)  # the scenario: the receiver is down 0.3 s
                    rx.start()
                time.sleep(0.05)
            want, cur = feed_rows(st, "?qty=lt.15")
            ok(wait_for(lambda: rebuild(rx.records())[0] == want, 60),
               "after kills and receiver restarts the rebuilt rows are the feed's (%d rows)"
               % len(want), "got %r\nwant %r" % (rebuild(rx.records())[0], want))
            recs = rx.records()
            rows, bodies, problems = rebuild(recs)
            ok(not problems, "every change in order and applicable; one body per key",
               "\n".join(problems))
            ok(len(recs) >= len(bodies) and len(bodies) >= 5,
               "%d POSTs taken, %d distinct changes" % (len(recs), len(bodies)))
            ok(all(r["sig"] == "sha256=" + hmac.new(SECRET.encode(), r["body"].encode(),
                                                    hashlib.sha256).hexdigest() for r in recs),
               "every signature verifies with the secret")
            ok(all(r["key"] == "stock:" + r["cursor"] and r["feed"] == "stock" and
                   r["ctype"] == "application/json" for r in recs),
               "Idempotency-Key is FEED:CURSOR; X-Tailgate-Feed/Cursor, Content-Type set")
            b0 = bodies[0]
            ok(b0["feed"] == "stock" and [c["name"] for c in b0["columns"]] ==
               ["id", "name", "qty"] and b0["deleted"] == [] and
               all(r[2] < 15 for b in bodies for r in b["inserted"] + b["deleted"]),
               "the first body is the filtered snapshot with the columns; every row qty < 15",
               json.dumps(b0)[:400])
            ok(all(r[2] < 15 for r in map(json.loads, rows)), "the filter holds throughout")

            # 410: pause the hook while the ring drops its cursor.
            hook.send_signal(signal.SIGSTOP)
            feed.fill(1500, cursor + 1)
            cursor += 1500
            feed.batch(cursor + 1, inserted=[[99, "item99", 1]])
            cursor += 1
            hook.send_signal(signal.SIGCONT)
            want, cur = feed_rows(st, "?qty=lt.15")
            ok(wait_for(lambda: rebuild(rx.records())[0] == want, 60),
               "after a 410 the hook re-snapshots and posts the difference",
               "got %d rows, want %d" % (len(rebuild(rx.records())[0]), len(want)))
            ok(not rebuild(rx.records())[2], "still in order after the resync",
               "\n".join(rebuild(rx.records())[2][:5]))
            ok(wait_for(lambda: json.load(open(state)).get("cursor") == cur and
                        "pending" not in json.load(open(state)), 20),
               "the state file holds the acknowledged cursor %s and nothing pending" % cur,
               open(state).read()[:300])
            hook.terminate()
            ok(hook.wait(timeout=20) == 0, "SIGTERM: the hook exits 0")

            # 4xx handling and --once, on a fresh state.
            rx2 = Receiver(os.path.join(tmp, "rx2.log"), failrate=0, refuse=str(cur))
            st2 = os.path.join(tmp, "state2.json")
            r = subprocess.run([HOOK, "--once", "--state", st2, furl, rx2.url],
                               env=dict(os.environ, TAILGATE_HOOK_SECRET=SECRET),
                               capture_output=True, text=True, timeout=60)
            ok(r.returncode == 1 and "422" in r.stderr and "no such warehouse item" in r.stderr,
               "a 422 stops the hook with exit 1, naming the response", r.stderr)
            ok(not rx2.records() and "pending" in json.load(open(st2)),
               "the refused change stays pending in the state file")
            r = subprocess.run([HOOK, "--once", "--skip-4xx", "--state", st2, furl, rx2.url],
                               env=dict(os.environ, TAILGATE_HOOK_SECRET=SECRET),
                               capture_output=True, text=True, timeout=60)
            ok(r.returncode == 0 and "skipped" in r.stderr and
               json.load(open(st2))["cursor"] == cur,
               "--skip-4xx logs it, skips it and advances the cursor", r.stderr)
            rx2.stop()
            rx3 = Receiver(os.path.join(tmp, "rx3.log"), failrate=0)
            st3 = os.path.join(tmp, "state3.json")
            r = subprocess.run([HOOK, "--once", "--state", st3, furl, rx3.url],
                               env=dict(os.environ, TAILGATE_HOOK_SECRET=SECRET),
                               capture_output=True, text=True, timeout=60)
            ok(r.returncode == 0 and len(rx3.records()) == 1 and
               rebuild(rx3.records())[0] == feed_rows(st)[0],
               "--once posts the snapshot and exits 0", r.stderr)
            r = subprocess.run([HOOK, "--state", st3, furl, rx3.url], capture_output=True,
                               text=True, timeout=30, env={k: v for k, v in os.environ.items()
                                                           if k != "TAILGATE_HOOK_SECRET"})
            ok(r.returncode == 2 and "secret" in r.stderr, "no secret: exit 2", r.stderr)
            t0 = time.time()
            r = subprocess.run([HOOK, "--state", st3, st.url("/feeds/stock,other"), rx3.url],
                               env=dict(os.environ, TAILGATE_HOOK_SECRET=SECRET),
                               capture_output=True, text=True, timeout=30)
            ok(r.returncode == 2 and "several feeds" in r.stderr and time.time() - t0 < 5,
               "a URL naming several feeds: exit 2, no retry", r.stderr)
            rx3.stop()
            rx.stop()
    finally:
        hooklog.close()
        if failed():
            print("# hook log: %s" % os.path.join(tmp, "hook.log"))
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return done()


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "receiver":
        receiver(int(sys.argv[2]), sys.argv[3], float(sys.argv[4]),
                 sys.argv[5] if len(sys.argv) > 5 else "")
    else:
        sys.exit(main())
