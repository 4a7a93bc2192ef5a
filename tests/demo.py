#!/usr/bin/env python3
"""demo.py - the README's main job: tools/demo comes up and serves a
non-empty winning_bids feed through nginx within 60 s, the pages and the
feed list are there, and Ctrl-C (SIGINT) stops every process it started.

Runs tools/demo --no-deps --no-build against this build (top_builddir).
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
    demo = subprocess.Popen([os.path.join(top_srcdir, "tools", "demo"), "--no-deps", "--no-build"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True)
    start = time.monotonic()
    url = tmp = None
    lines = []
    for line in demo.stdout:
        lines.append(line)
        m = re.search(r"logs in (\S+)", line)
        if m:
            tmp = m.group(1)
        m = re.search(r"tailgate demo: (http://127\.0\.0\.1:\d+/)", line)
        if m:
            url = m.group(1)
            break
        if time.monotonic() - start > 60:
            break
    if not ok(url is not None, "tools/demo prints the URL (%.1f s)" % (time.monotonic() - start)):
        print("# " + "# ".join(lines[-20:]))
        demo.kill()
        return 1

    rows = 0
    body = b""
    while time.monotonic() - start < 60:
        try:
            status, body = get(url + "feeds/winning_bids")
            snap = json.loads(body)
            rows = sum(len(b["inserted"]) - len(b["deleted"]) for b in snap["batches"])
            if rows > 0:
                break
        except Exception as e:  # noqa: BLE001 - keep polling until the deadline
            body = str(e).encode()
        time.sleep(1)
    ok(rows > 0, "winning_bids is non-empty through nginx after %.1f s (%d rows)"
       % (time.monotonic() - start, rows))
    if rows == 0:
        print("# last reply: %.300s" % body)

    status, body = get(url)
    ok(status == 200 and b"<html" in body.lower(), "the index page is served at /")
    status, body = get(url + "feeds")
    names = sorted(f["name"] for f in json.loads(body)["feeds"])
    ok("winning_bids" in names and "top_buyers" in names, "/feeds lists %s" % ", ".join(names))
    status, body = get(url + "auction.html")
    ok(status == 200, "auction.html is served")

    # A long-poll at the current cursor is answered by the next batch.
    snap = json.loads(get(url + "feeds/auction_stats")[1])
    t0 = time.monotonic()
    status, body = get(url + "feeds/auction_stats?cursor=" + snap["cursor"] + "&timeout=20", 30)
    lp = json.loads(body)
    ok(status == 200 and lp["batches"] and lp["cursor"] != snap["cursor"],
       "a long-poll on auction_stats gets the next batch (%.2f s)" % (time.monotonic() - t0))

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
