#!/usr/bin/env python3
"""cache_lock.py - does nginx's fastcgi_cache_lock help tailgate?

Two scenarios through a private stack (tests/lib/stack.py), each with the
snippet's catch-up cache on, once with fastcgi_cache_lock off (what the
snippet ships) and once on:

  live      N identical long-polls parked at the head; one batch is
            published; latency from publish to each reply.
  catch-up  N identical requests at an old cursor (B batches behind, not
            yet cached) all at once; time until all are answered, and how
            many reached the responder (its longpoll 200 counter).

    python3 bench/cache_lock.py [--clients N] [--batches B]

Loopback only; bounded (a few seconds per run).
"""

import argparse
import asyncio
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "lib"))
from stack import Stack  # noqa: E402

COLUMNS = [("id", "int8"), ("item", "text"), ("amount", "int4")]


async def fetch(port, path):
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(("GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % path).encode())
    await w.drain()
    data = await r.read()
    w.close()
    return time.monotonic(), data


def metric(st, name):
    _, _, body = st.get("/metrics")
    total = 0.0
    for line in body.decode().splitlines():
        if line.startswith(name):
            total += float(line.split()[-1])
    return total


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * (len(xs) - 1)))]


def live(st, n, rounds=5):
    """n identical long-polls at the head, then a publish; repeated with the
    publish 1.0, 1.1, ... s after the requests, so that the lock waiters'
    500 ms re-check falls at every phase."""
    f = st.ringfeed("live", COLUMNS)
    lat = []

    async def one_round(cursor, delay):
        tasks = [asyncio.ensure_future(fetch(st.port, "/feeds/live?cursor=%d" % cursor))
                 for _ in range(n)]
        await asyncio.sleep(delay)
        t0 = time.monotonic()
        f.batch(cursor + 1, inserted=[[cursor, "a", 1]])
        res = await asyncio.wait_for(asyncio.gather(*tasks), 30)
        return [t - t0 for t, _ in res]

    loop = asyncio.new_event_loop()
    for r in range(rounds):
        lat += loop.run_until_complete(one_round(1 + r, 1.0 + 0.1 * r))
    return "live long-polls (%d rounds): p50 %.0f ms, p99 %.0f ms, max %.0f ms" % (
        rounds, pct(lat, 0.5) * 1e3, pct(lat, 0.99) * 1e3, max(lat) * 1e3)


def catch_up(st, n, batches):
    f = st.ringfeed("catch", COLUMNS, size=64 << 20)
    for k in range(batches // 500):
        f.fill(500, 10 + k * 500)
    before = metric(st, 'tailgate_requests_total{endpoint="longpoll",status="200"}')

    async def main():
        t0 = time.monotonic()
        res = await asyncio.wait_for(asyncio.gather(
            *[fetch(st.port, "/feeds/catch?cursor=1") for _ in range(n)]), 60)
        return [t - t0 for t, _ in res], len(res[0][1])

    lat, size = asyncio.new_event_loop().run_until_complete(main())
    upstream = metric(st, 'tailgate_requests_total{endpoint="longpoll",status="200"}') - before
    return ("catch-up storm (%d kB reply): all answered in %.0f ms (p50 %.0f ms), "
            "%d of %d reached the responder" % (size // 1024, max(lat) * 1e3,
                                                pct(lat, 0.5) * 1e3, upstream, n))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clients", type=int, default=200)
    ap.add_argument("--batches", type=int, default=2000)
    a = ap.parse_args()
    for lock in (False, True):
        with Stack(cache=True, cache_lock=lock, nginx_workers=2,
                   connections=4 * a.clients + 256) as st:
            print("fastcgi_cache_lock %s, %d clients" % ("on " if lock else "off", a.clients))
            print("  " + live(st, a.clients))
            print("  " + catch_up(st, a.clients, a.batches))
            sys.stdout.flush()


if __name__ == "__main__":
    main()
