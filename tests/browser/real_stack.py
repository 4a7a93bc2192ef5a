#!/usr/bin/env python3
"""real_stack.py - the real tailgate stack for the browser tests.

PostgreSQL (tests/lib/pg.py) with sql/auction_house.sql, tailgated streaming
winning_bids, top_buyers and auction_stats into rings, tailgate-loadgen
writing the auction house, and nginx + tailgate-fcgi (tests/lib/stack.py)
serving htdocs/ at / and the API at /feeds.  Driven by real_stack.mjs (the
TAILGATE_STACK module) over stdin/stdout, one JSON line per command:

    -> {"url": "http://127.0.0.1:PORT/"}          once everything is up
    restart-responder | restart-daemon | pause-load | resume-load | stop
    -> {"ok": true}  or  {"error": "..."}
    db-rows FEED
    -> {"rows": [[...], ...]}                     as the daemon encodes them
    set-item WORD
    -> {"ok": true, "auction_id": N}              one commit: the newest
                                                  winning_bids row's item
                                                  set to WORD ([A-Za-z0-9_-])

`real_stack.py --tls` serves it over TLS and HTTP/2 instead (nginx's
`listen ... ssl http2`, with a certificate made for the run by openssl;
tailgate.conf included unchanged):

    -> {"url": "https://127.0.0.1:PORT/", "cert": "/tmp/.../cert.pem"}

`real_stack.py --check` exits 0 when the machine can run it (run.sh uses it).

Environment: TAILGATE_BUILDDIR (tailgated, tailgate-fcgi, tailgate-loadgen,
tests/ringfeed; default build/ in the source tree), TAILGATE_LOAD_RATE
(bids/s, default 40: an auction closes every ~1/7 s so batches keep
coming).
"""
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(TOP, "tests", "lib"))
from pg import PgCluster  # noqa: E402
from stack import Stack, builddir  # noqa: E402
from util import tail  # noqa: E402

FEEDS = ("winning_bids", "top_buyers", "auction_stats")
# db-rows: each feed's rows as JSON arrays in column order, encoded as the
# daemon encodes them (numbers as numbers, timestamps as PostgreSQL text).
ROWS_SQL = {
    "winning_bids": "SELECT coalesce(json_agg(json_build_array(auction_id, bid_id, buyer, seller, item,"
                    " amount, bid_time::text, end_time::text)), '[]') FROM winning_bids",
    "top_buyers": "SELECT coalesce(json_agg(json_build_array(buyer, name, wins, total_amount)), '[]')"
                  " FROM top_buyers",
    "auction_stats": "SELECT coalesce(json_agg(json_build_array(id, auctions, open_auctions, bids,"
                     " on_time_bids, wins, win_amount)), '[]') FROM auction_stats",
}


def log(msg):
    print("# real_stack: " + msg, file=sys.stderr, flush=True)


class Procs:
    def __init__(self, tmp, pg, build):
        self.tmp, self.pg, self.build = tmp, pg, build
        self.ring_dir = os.path.join(tmp, "ring")
        os.makedirs(self.ring_dir, exist_ok=True)
        os.chmod(tmp, 0o755)
        os.chmod(self.ring_dir, 0o755)
        self.conf = os.path.join(tmp, "tailgated.conf")
        with open(self.conf, "w") as f:
            f.write("source = postgresql\nconninfo = %s\nring_dir = %s\n"
                    "backoff_min_ms = 100\nbackoff_max_ms = 1000\n\n" % (pg.dsn, self.ring_dir))
            for name in FEEDS:
                f.write("[feed %s]\ntable = %s\npermanent_slot = yes\n\n" % (name, name))
        self.daemon = self.load = None

    def start_daemon(self):
        logf = open(os.path.join(self.tmp, "tailgated.log"), "ab")
        self.daemon = subprocess.Popen([os.path.join(self.build, "tailgated"), "-c", self.conf],
                                       stdout=logf, stderr=subprocess.STDOUT)

    def stop_daemon(self):
        stop(self.daemon)

    def start_load(self):
        logf = open(os.path.join(self.tmp, "loadgen.log"), "ab")
        rate = os.environ.get("TAILGATE_LOAD_RATE", "40")
        self.load = subprocess.Popen([os.path.join(self.build, "tailgate-loadgen"), "-d", self.pg.dsn,
                                      "-r", rate, "-q", "--seed", "7"],
                                     stdout=logf, stderr=subprocess.STDOUT)

    def wait_rings(self, timeout=60):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if all(os.path.exists(os.path.join(self.ring_dir, f + ".ring")) for f in FEEDS):
                return
            if self.daemon.poll() is not None:
                raise RuntimeError("tailgated exited: %s" % tail(os.path.join(self.tmp, "tailgated.log")))
            time.sleep(0.1)
        raise RuntimeError("no rings after %d s: %s" % (timeout, tail(os.path.join(self.tmp, "tailgated.log"))))


def stop(p):
    if p and p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def reply(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def check():
    """Exit 0 when this machine can run the real stack (a build, PostgreSQL, nginx)."""
    from pg import pg_bindir
    from stack import nginx_bin
    try:
        b = builddir()
        pg_bindir()
    except Exception as e:
        print("real stack unavailable: %s" % e, file=sys.stderr)
        return 1
    need = [os.path.join(b, x) for x in ("tailgated", "tailgate-fcgi", "tailgate-loadgen")]
    need.append(nginx_bin())
    missing = [x for x in need if not os.access(x, os.X_OK)]
    if missing:
        print("real stack unavailable: missing %s" % " ".join(missing), file=sys.stderr)
        return 1
    return 0


def main():
    if sys.argv[1:] == ["--check"]:
        return check()
    tls = sys.argv[1:] == ["--tls"]
    if sys.argv[1:] and not tls:
        print("usage: real_stack.py [--check | --tls]", file=sys.stderr)
        return 2
    build = builddir()
    tmp = tempfile.mkdtemp(prefix="tailgate-browser.")
    pg = PgCluster()
    procs = None
    try:
        pg.start()
        pg.psql(file=os.path.join(TOP, "sql", "auction_house.sql"))
        procs = Procs(tmp, pg, build)
        procs.start_load()
        procs.start_daemon()
        procs.wait_rings()
        with Stack(ring_dir=procs.ring_dir, htdocs=os.path.join(TOP, "htdocs"), tls=tls) as st:
            reply({"url": st.url("/"), "cert": st.cert} if tls else {"url": st.url("/")})
            for line in sys.stdin:
                cmd = line.split()
                if not cmd:
                    continue
                try:
                    if cmd[0] == "stop":
                        reply({"ok": True})
                        break
                    elif cmd[0] == "restart-responder":
                        st.stop_responders()
                        st.start_responders()
                    elif cmd[0] == "stop-responder":
                        # Down, socket gone: nginx answers 502 until started again.
                        st.stop_responders()
                        st._listen.close()
                        st._listen = None
                        os.unlink(st.socket)
                    elif cmd[0] == "start-responder":
                        st.start_responders()
                    elif cmd[0] == "restart-daemon":
                        procs.stop_daemon()
                        procs.start_daemon()
                    elif cmd[0] == "pause-load":
                        procs.load.send_signal(signal.SIGSTOP)
                    elif cmd[0] == "resume-load":
                        procs.load.send_signal(signal.SIGCONT)
                    elif cmd[0] == "set-item":
                        if len(cmd) != 2 or not re.fullmatch(r"[A-Za-z0-9_-]+", cmd[1]):
                            raise ValueError("set-item needs one word of [A-Za-z0-9_-]")
                        aid = pg.psql("UPDATE winning_bids SET item = '%s' WHERE auction_id ="
                                      " (SELECT max(auction_id) FROM winning_bids) RETURNING auction_id"
                                      % cmd[1]).strip()
                        reply({"ok": True, "auction_id": int(aid.split()[0]) if aid else None})
                        continue
                    elif cmd[0] == "db-rows":
                        reply({"rows": json.loads(pg.psql(ROWS_SQL[cmd[1]]))})
                        continue
                    else:
                        raise ValueError("unknown command %r" % cmd[0])
                    reply({"ok": True})
                except Exception as e:  # report, keep serving
                    reply({"error": "%s: %s" % (type(e).__name__, e)})
    except Exception as e:
        reply({"error": "%s: %s" % (type(e).__name__, e)})
        if procs:
            log("tailgated log:\n" + tail(os.path.join(tmp, "tailgated.log")))
        return 1
    finally:
        if procs:
            if procs.load and procs.load.poll() is None:
                procs.load.send_signal(signal.SIGCONT)
            stop(procs.load)
            stop(procs.daemon)
        pg.stop()
        pg.cleanup()
        subprocess.call(["rm", "-rf", tmp])
    return 0


if __name__ == "__main__":
    sys.exit(main())
