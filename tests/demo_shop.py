#!/usr/bin/env python3
"""demo_shop.py - `tools/demo shop` comes up and serves non-empty shop
feeds (item_summary, orders_per_minute, item_pageviews, purchase_summary)
through nginx within 60 s, shop.html is there, the warehouse re-orders
(through tailgate-hook when it is built, else by polling), and Ctrl-C
stops every process it started.

Runs tools/demo shop --no-deps --no-build against this build (top_builddir).
TAP output.
"""
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request

top_srcdir = os.path.abspath(os.environ.get("top_srcdir", "."))
top_builddir = os.path.abspath(os.environ.get("top_builddir", "."))
sys.path.insert(0, os.path.join(top_srcdir, "tests", "lib"))
from tap import done, ok  # noqa: E402


def get(url, timeout=10):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status, r.read()


def procs_mentioning(text):
    """pids whose command line mentions text (the demo's private directory)."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                if text.encode() in f.read():
                    found.append(int(pid))
        except OSError:
            pass
    return found


def main():
    env = dict(os.environ, TAILGATE_BUILDDIR=top_builddir)
    demo = subprocess.Popen([os.path.join(top_srcdir, "tools", "demo"), "shop", "--no-deps", "--no-build"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True)
    start = time.monotonic()
    url = tmp = None
    lines = []
    for line in demo.stdout:
        lines.append(line)
        m = re.search(r"logs in (\S+)", line)
        if m:
            tmp = m.group(1)
        m = re.search(r"tailgate shop demo: (http://127\.0\.0\.1:\d+/)shop\.html", line)
        if m:
            url = m.group(1)
            break
        if time.monotonic() - start > 60:
            break
    if not ok(url is not None, "tools/demo prints the URL (%.1f s)" % (time.monotonic() - start)):
        print("# " + "# ".join(lines[-20:]))
        demo.kill()
        return 1

    want = ("item_summary", "orders_per_minute", "item_pageviews", "purchase_summary")
    rows = {}
    body = b""
    while time.monotonic() - start < 60:
        for feed in want:
            if rows.get(feed):
                continue
            try:
                status, body = get(url + "feeds/" + feed)
                snap = json.loads(body)
                rows[feed] = sum(len(b["inserted"]) - len(b["deleted"]) for b in snap["batches"])
            except Exception as e:  # noqa: BLE001 - keep polling until the deadline
                body = str(e).encode()
        if all(rows.get(f) for f in want):
            break
        time.sleep(1)
    for feed in want:
        ok(rows.get(feed, 0) > 0, "%s is non-empty through nginx within 60 s (%d rows)"
           % (feed, rows.get(feed, 0)))
    ok(sum(1 for f in want if rows.get(f)) == len(want), "all after %.1f s" % (time.monotonic() - start))

    status, body = get(url + "shop.html")
    ok(status == 200 and b"<html" in body.lower(), "shop.html is served")
    status, body = get(url + "feeds")
    names = sorted(f["name"] for f in json.loads(body)["feeds"])
    ok(names == sorted(want + ("low_stock",)), "/feeds lists %s" % ", ".join(names))

    # The loop closes: items run low, the warehouse re-orders.
    wlog = os.path.join(tmp or "/nonexistent", "warehouse.log")
    reordered = False
    while time.monotonic() - start < 120 and not reordered:
        try:
            with open(wlog) as f:
                reordered = "re-ordered" in f.read()
        except OSError:
            pass
        time.sleep(1)
    ok(reordered, "the warehouse re-ordered stock after %.1f s" % (time.monotonic() - start))

    demo.send_signal(signal.SIGINT)
    try:
        rest = demo.communicate(timeout=40)[0]
    except subprocess.TimeoutExpired:
        demo.kill()
        rest = demo.communicate()[0]
    ok(demo.returncode == 0, "Ctrl-C: tools/demo exits 0 (%s)" % demo.returncode)
    ok("demo: stopped" in rest, "it says it stopped")
    left = procs_mentioning(tmp) if tmp else []
    ok(tmp is not None and not left, "no process of the demo is left (%s)" % left)
    ok(tmp is not None and not os.path.exists(tmp), "its directory is removed")
    return done()


if __name__ == "__main__":
    sys.exit(main())
