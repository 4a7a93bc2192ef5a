#!/usr/bin/env python3
"""bench/gzip_cost.py - server CPU per long-poll reply, gzip made by the
responder once per reply (tailgate-fcgi --gzip-level 1) against nginx's
gzip per client (--gzip-level 0), through a private nginx and responder
(tests/lib/stack.py), loopback only.

One client on one keep-alive connection asks R times for the same
catch-up reply (?cursor= behind the head: a render-cache hit, as for
the thousands of long-pollers that lag by the same batches), sending
Accept-Encoding as browsers do.  CPU = time on CPU of nginx (master and
workers) and tailgate-fcgi over the R requests (every thread's
/proc/PID/task/TID/schedstat, in ns), per reply.  Levels alternate for --rounds rounds, so a busy machine hurts
both alike.

usage: bench/gzip_cost.py [--requests R] [--rounds K] [--rows N] [--levels 0,1,6]
"""
import argparse
import http.client
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from stack_cpu import bench_stack, cpu_s, nginx_pids  # noqa: E402

COLUMNS = [("auction_id", "int8"), ("item", "text"), ("buyer", "int8"), ("amount", "int4")]


def measure(level, o):
    with bench_stack(["--gzip-level", str(level)]) as st:
        feed = st.ringfeed("auction", COLUMNS)
        rows = [[i, "item %d" % i, 100000 + i, 1000 + i] for i in range(o.rows)]
        feed.batch(2, inserted=rows, deleted=rows)
        feed.batch(3, inserted=rows[:1])
        ngx = nginx_pids(st)
        fcgi = list(st.responder_pids)
        c = http.client.HTTPConnection("127.0.0.1", st.port, timeout=20)
        hdr = {"Accept-Encoding": "gzip, deflate, br"}
        # Cursors are POSITION.IDENT: the ident from the snapshot's cursor.
        c.request("GET", "/feeds/auction")
        ident = json.loads(c.getresponse().read())["cursor"].split(".", 1)[1]
        path = "/feeds/auction?cursor=1." + ident
        c.request("GET", path, headers=hdr)
        r = c.getresponse()
        size = len(r.read())
        coded = r.getheader("Content-Encoding")
        n0, f0, w0 = cpu_s(ngx), cpu_s(fcgi), time.monotonic()
        for _ in range(o.requests):
            c.request("GET", path, headers=hdr)
            r = c.getresponse()
            r.read()
            if r.status != 200:
                raise RuntimeError("%s: %d" % (path, r.status))
        n1, f1, wall = cpu_s(ngx) - n0, cpu_s(fcgi) - f0, time.monotonic() - w0
        c.close()
        return {"level": level, "us_per_reply": (n1 + f1) / o.requests * 1e6,
                "nginx_us": n1 / o.requests * 1e6, "fcgi_us": f1 / o.requests * 1e6,
                "wall_us": wall / o.requests * 1e6, "bytes": size, "coded": coded}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=5000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--rows", type=int, default=3, help="rows inserted and deleted by the batch")
    ap.add_argument("--levels", default="0,1")
    o = ap.parse_args()
    levels = [int(x) for x in o.levels.split(",")]
    res = {lv: [] for lv in levels}
    for k in range(o.rounds):
        for lv in levels:
            m = measure(lv, o)
            res[lv].append(m["us_per_reply"])
            print("round %d gzip-level %d: %.1f us server CPU per reply (nginx %.1f, "
                  "tailgate-fcgi %.1f; %.0f us wall), %d bytes on the wire, "
                  "Content-Encoding %s" % (
                      k + 1, lv, m["us_per_reply"], m["nginx_us"], m["fcgi_us"],
                      m["wall_us"], m["bytes"], m["coded"]), flush=True)
    for lv in levels:
        v = sorted(res[lv])
        print("gzip-level %d: median %.1f us per reply (%s)" % (
            lv, v[len(v) // 2], ", ".join("%.1f" % x for x in res[lv])))


if __name__ == "__main__":
    main()
