#!/usr/bin/env python3
"""bench/multifeed_cost.py - server CPU per delivery of N long-pollers of one
several-feed URL (GET /feeds/a,b,c, as htdocs/shop.html follows three feeds),
with the responder's shared multi-feed replies (tailgate-fcgi --multi-cache
16, the default) against every request rendering and compressing its own
(--multi-cache 0), through a private nginx and responder (tests/lib/stack.py),
loopback only.

Three fake daemons (tests/ringfeed) publish one batch each at the same
position RATE times a second (the position is CLOCK_MONOTONIC in ns, so
bench/loadclient measures the delivery latency from it); each batch
updates --rows rows of its feed.  bench/loadclient keeps N long-pollers on
the URL with Accept-Encoding: gzip (as browsers send it) and reports the
CPU seconds of nginx and tailgate-fcgi per 1,000 deliveries over its
window.  The settings alternate for --rounds rounds, so a busy machine
hurts both alike; the last lines are the medians and their ratio.

usage: bench/multifeed_cost.py [--clients N] [--rate R] [--rows K]
                               [--duration S] [--warmup S] [--rounds K]
                               [--caches 0,16] [--verbose]
"""
import argparse
import os
import re
import resource
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from stack_cpu import bench_stack, cpu_s, nginx_pids  # noqa: E402
from stack import builddir  # noqa: E402

FEEDS = ("orders", "stock", "revenue")
COLUMNS = [("id", "int8"), ("item", "text"), ("qty", "int4"), ("amount", "numeric")]
RESULT_RE = re.compile(r"^RESULT (.*)$", re.M)


def answered(st):
    """Requests the responder answered (tailgate_requests_total, summed)."""
    _, _, body = st.get("/metrics")
    return sum(int(v) for v in re.findall(rb"^tailgate_requests_total\{[^}]*\} (\d+)", body,
                                          re.M))


class Publisher(threading.Thread):
    """One batch per feed at one position (monotonic ns), rate times a
    second: each batch replaces `rows` rows by their next version."""

    def __init__(self, feeds, rate, rows):
        super().__init__(daemon=True)
        self.feeds, self.rate, self.rows = feeds, rate, rows
        self.stop = threading.Event()
        self.version = 0
        self.n = 0
        self.error = None

    def row(self, i, v):
        return [i, "item %d of the shop's catalogue" % i, v % 97, "%d.%02d" % (10 + v, i % 100)]

    def run(self):
        try:
            for f in self.feeds:  # the rows the updates replace
                f.batch(time.monotonic_ns(), inserted=[self.row(i, 0) for i in range(self.rows)])
            period = 1.0 / self.rate
            t = time.monotonic()
            while not self.stop.is_set():
                t += period
                delay = t - time.monotonic()
                if delay > 0 and self.stop.wait(delay):
                    break
                v = self.version
                pos = time.monotonic_ns()
                for f in self.feeds:
                    f.batch(pos, deleted=[self.row(i, v) for i in range(self.rows)],
                            inserted=[self.row(i, v + 1) for i in range(self.rows)])
                self.version += 1
                self.n += 1
        except Exception as e:  # reported by main
            self.error = e


def measure(cache, o):
    with bench_stack(["--multi-cache", str(cache)],
                     connections=max(4096, 2 * o.clients + 64)) as st:
        pub = None
        try:
            feeds = [st.ringfeed(name, COLUMNS) for name in FEEDS]
            pub = Publisher(feeds, o.rate, o.rows)
            pub.start()
            pids = nginx_pids(st) + list(st.responder_pids)
            argv = [os.path.join(builddir(), "bench", "loadclient"),
                    "--url", "http://127.0.0.1:%d/feeds/%s" % (st.port, ",".join(FEEDS)),
                    "--mode", "longpoll", "-n", str(o.clients), "-d", str(o.duration),
                    "-w", str(o.warmup), "--gzip", "--pids", ",".join(str(p) for p in pids),
                    "--label", "multi_cache=%d" % cache]
            fcgi0, req0 = cpu_s(st.responder_pids), answered(st)
            r = subprocess.run(argv, capture_output=True, text=True,
                               timeout=60 + o.warmup + o.duration + 60)
            if o.verbose:
                sys.stderr.write(r.stderr)
            m = RESULT_RE.search(r.stdout)
            if m is None:
                raise RuntimeError("loadclient: %s" % (r.stderr.strip().splitlines()
                                                       or ["no RESULT"])[-1])
            if pub.error is not None:
                raise RuntimeError("publisher: %s" % pub.error)
            res = dict(kv.split("=", 1) for kv in m.group(1).split() if "=" in kv)
            # The responder alone, over the whole run (ramp and warm-up too).
            res["fcgi_us_per_reply"] = (cpu_s(st.responder_pids) - fcgi0) / max(
                1, answered(st) - req0) * 1e6
            res["us_per_reply"] = float(res["cpu_s"]) / max(1, int(res.get("coded", 0))) * 1e6
            _, _, metrics = st.get("/metrics")
            renders = re.search(rb"^tailgate_renders_total (\d+)", metrics, re.M)
            res["renders"] = int(renders.group(1)) if renders else -1
            res["published"] = pub.n
            return res
        finally:
            if pub is not None:
                pub.stop.set()
                pub.join()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=1000)
    ap.add_argument("--rate", type=int, default=10, help="positions published per second")
    ap.add_argument("--rows", type=int, default=5, help="rows each feed's batch updates")
    ap.add_argument("--duration", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--caches", default="0,16", help="--multi-cache settings to compare")
    ap.add_argument("--verbose", action="store_true")
    o = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < min(hard, 4 * o.clients + 256):
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4 * o.clients + 256), hard))
    caches = [int(x) for x in o.caches.split(",")]
    res = {c: [] for c in caches}
    rep = {c: [] for c in caches}
    fcgi = {c: [] for c in caches}
    for k in range(o.rounds):
        for c in caches:
            m = measure(c, o)
            per = float(m["cpu_per_1k"]) * 1e3  # ms of CPU per 1,000 -> us per delivery
            res[c].append(per)
            rep[c].append(m["us_per_reply"])
            fcgi[c].append(m["fcgi_us_per_reply"])
            print("round %d multi-cache %d: %.1f us server CPU per delivery, %.1f per gzip'd "
                  "reply (%s), tailgate-fcgi %.1f us per answered request, %s deliveries/s, "
                  "p50 %s ms, p99 %s ms, %s connected, %s errors, %s renders in all, "
                  "%s wire bytes per delivery, other load %.2f cores" % (
                      k + 1, c, per, m["us_per_reply"], m.get("coded"),
                      m["fcgi_us_per_reply"], m.get("delivered_per_s"), m.get("p50_ms"),
                      m.get("p99_ms"), m.get("connected"), m.get("errors"), m["renders"],
                      m.get("wire_per_delivery"),
                      float(m.get("other_cpu_s", 0)) / o.duration), flush=True)
    for what, d in (("server us per delivery", res), ("server us per gzip'd reply", rep),
                    ("tailgate-fcgi us per answered request", fcgi)):
        med = {}
        for c in caches:
            v = sorted(d[c])
            med[c] = v[len(v) // 2]
            print("multi-cache %d: median %.1f %s (%s)" % (
                c, med[c], what, ", ".join("%.1f" % x for x in d[c])))
        if len(caches) == 2 and med[caches[1]] > 0:
            print("ratio multi-cache %d / multi-cache %d, %s: %.2f" % (
                caches[0], caches[1], what, med[caches[0]] / med[caches[1]]))


if __name__ == "__main__":
    main()
