#!/usr/bin/env python3
"""h2.py - the HTTP contract over TLS and HTTP/2 through nginx, with curl.

nginx (nginx/nginx.conf with `listen ... ssl http2` and a self-signed
certificate made for the run: tests/lib/stack.py's Stack(tls=True)) in
front of tailgate-fcgi, nginx/tailgate.conf included unchanged; the feed
written by tests/ringfeed.  Checked with `curl --http2`:

  - every reply is HTTP/2 (curl's %{http_version} is 2)
  - a snapshot is gzip (Content-Encoding: gzip, Vary: Accept-Encoding)
    and decodes to the feed's rows
  - a parked long-poll is answered within a bound after the batch is
    written, with that batch
  - SSE streams are not buffered: eight streams multiplexed on one
    connection (curl --parallel: one connect for all of them) each get
    a batch's event within a bound after it is written, and again for a
    second batch (snapshot, then live events, each `id:` the cursor)
  - clients gone (the connection closed), the responder holds no parked
    request and no SSE stream (tailgate_parked_requests,
    tailgate_sse_streams in /metrics)

Environment: top_builddir.  Skips (77) without nginx, or a curl or nginx
without HTTP/2.
"""

import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "lib"))
from stack import Stack, nginx_bin  # noqa: E402
from tap import done, ok, wait_for  # noqa: E402

COLUMNS = [("id", "int8"), ("item", "text"), ("amount", "int4")]
# A batch written to the ring reaches a parked client well within this
# over loopback; nginx holding an SSE event in a buffer would hold it
# until the next 2 kB, or the 15 s keep-alive comment.
PROMPT_S = 1.0
STREAMS = 8
# How long the SSE streams stay open (curl --max-time).
SSE_S = 15


def pos(cursor):
    """A cursor's position (the number before its history's "."), or None."""
    try:
        return int(str(cursor).split(".")[0])
    except ValueError:
        return None


def skip_all(why):
    print("1..0 # SKIP %s" % why)
    sys.exit(77)


def curl(*args, timeout=30):
    r = subprocess.run(["curl", "-sS", "--http2", "-k"] + list(args), stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=timeout)
    return r.returncode, r.stdout, r.stderr.decode(errors="replace")


def metric(st, name):
    _, _, body = st.get("/metrics")
    for line in body.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return None


def sse_events(text):
    """[(event, id, data)] of an event stream's text (comments skipped)."""
    out = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        ev, eid, data = "message", None, []
        for line in block.split("\n"):
            if line.startswith("event:"):
                ev = line[6:].strip()
            elif line.startswith("id:"):
                eid = line[3:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].lstrip())
        if data:
            out.append((ev, eid, "\n".join(data)))
    return out


def main():
    if not shutil.which("curl"):
        skip_all("no curl")
    if "HTTP2" not in subprocess.run(["curl", "-V"], stdout=subprocess.PIPE, text=True).stdout:
        skip_all("this curl has no HTTP/2")
    nginx = nginx_bin()
    if not os.access(nginx, os.X_OK) and not shutil.which(nginx):
        skip_all("no nginx")
    v = subprocess.run([nginx, "-V"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True).stdout
    if "--with-http_v2_module" not in v:
        skip_all("nginx built without http_v2")

    work = tempfile.mkdtemp(prefix="tailgate-h2.")
    try:
        with Stack(tls=True) as st:
            run(st, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return done()


def run(st, work):
    feed = st.ringfeed("h2", COLUMNS)
    rows = [[i, "item %d with a name long enough to compress" % i, i * 7] for i in range(1, 201)]
    feed.batch(2, inserted=rows)
    url = st.url("/feeds/h2")

    # A snapshot: HTTP/2, gzip.
    rc, out, err = curl("-H", "Accept-Encoding: gzip", "-D", "-", "-o", os.path.join(work, "snap.gz"),
                        "-w", "\nversion=%{http_version}\n", url)
    head = out.decode(errors="replace")
    ok(rc == 0 and "version=2" in head, "a snapshot over HTTP/2 (curl --http2)", head + err)
    heads = {ln.split(":", 1)[0].lower(): ln.split(":", 1)[1].strip()
             for ln in head.splitlines() if ":" in ln and not ln.startswith("HTTP/")}
    ok(heads.get("content-encoding") == "gzip" and "accept-encoding" in heads.get("vary", "").lower(),
       "the snapshot is gzip over HTTP/2, with Vary: Accept-Encoding", head)
    try:
        with open(os.path.join(work, "snap.gz"), "rb") as f:
            body = json.loads(gzip.decompress(f.read()))
        got = sorted(r for b in body["batches"] for r in b.get("inserted", []))
    except (OSError, ValueError, KeyError) as e:
        body, got = {}, repr(e)
    cursor = str(body.get("cursor", ""))
    ok(got == rows and pos(cursor) == 2, "the gzip snapshot decodes to the feed's 200 rows at cursor 2",
       "cursor %r, %s" % (cursor, str(got)[:200]))

    # A parked long-poll, answered when the batch is written.
    lp = subprocess.Popen(["curl", "-sS", "--http2", "-k", "-w", "\nversion=%{http_version}\n",
                           url + "?cursor=%s&timeout=20" % cursor], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    parked = wait_for(lambda: metric(st, "tailgate_parked_requests") == 1, timeout=10)
    ok(parked, "the long-poll over HTTP/2 is parked in the responder")
    t0 = time.monotonic()
    feed.batch(3, inserted=[[1000, "new", 1]])
    out, err = lp.communicate(timeout=25)
    took = time.monotonic() - t0
    text = out.decode(errors="replace")
    try:
        reply = json.loads(text.rsplit("\nversion=", 1)[0])
    except ValueError:
        reply = {}
    ok("version=2" in text and pos(reply.get("cursor")) == 3
       and [b.get("inserted") for b in reply.get("batches", [])] == [[[1000, "new", 1]]],
       "the long-poll's HTTP/2 reply holds the batch written", text[-400:] + err.decode(errors="replace"))
    ok(took < PROMPT_S, "the long-poll is answered %.0f ms after the batch is written (< %d ms)"
       % (took * 1000, PROMPT_S * 1000))

    # SSE streams multiplexed on one connection, each event prompt.
    outs = [os.path.join(work, "sse.%d" % i) for i in range(STREAMS)]
    # --max-time ends them (and has curl write each one's -w line) once
    # the checks below are done with them.
    args = ["curl", "-sS", "--no-progress-meter", "--http2", "-k", "-N", "--parallel",
            "--parallel-max", str(STREAMS), "--max-time", str(SSE_S), "-w", "%{http_version} %{num_connects}\n"]
    started = time.monotonic()
    for o in outs:
        # --compressed: Accept-Encoding as a browser's EventSource sends it.
        args += ["--compressed", "-H", "Accept: text/event-stream", "-o", o, url]
    sse = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def events(i):
        try:
            with open(outs[i], encoding="utf-8", errors="replace") as f:
                return sse_events(f.read())
        except OSError:
            return []

    try:
        opened = wait_for(lambda: all(events(i)[:1] and events(i)[0][0] == "snapshot" for i in range(STREAMS))
                          and metric(st, "tailgate_sse_streams") == STREAMS, timeout=20)
        ok(opened, "%d SSE streams over HTTP/2 each start with their snapshot" % STREAMS,
           "first events: %r, streams: %r" % ([(events(i)[:1] or [("-",)])[0][0] for i in range(STREAMS)],
                                              metric(st, "tailgate_sse_streams")))
        for cursor in (4, 5):
            t0 = time.monotonic()
            feed.batch(cursor, inserted=[[2000 + cursor, "live %d" % cursor, cursor]])
            arrived = [None] * STREAMS

            def all_arrived():
                for i in range(STREAMS):
                    if arrived[i] is None and any(pos(e[1]) == cursor for e in events(i)):
                        arrived[i] = time.monotonic() - t0
                return all(a is not None for a in arrived)

            wait_for(all_arrived, timeout=10, step=0.005)
            late = [a for a in arrived if a is None or a >= PROMPT_S]
            ok(not late, "SSE over HTTP/2: batch %d's event reached all %d streams within %d ms (slowest %s ms)"
               % (cursor, STREAMS, PROMPT_S * 1000,
                  "never" if None in arrived else "%.0f" % (max(arrived) * 1000)),
               "arrival (s): %r" % arrived)
        # The snapshot, then one event per position up to the last batch
        # written (the snapshot's history may end before the head).
        seen = [[(e[0], pos(e[1])) for e in events(i)] for i in range(STREAMS)]
        ok(all(s and s[0][0] == "snapshot" and [x[1] for x in s] == list(range(s[0][1], 6))
               and all(x[0] == "message" for x in s[1:]) for s in seen),
           "each stream: its snapshot, then one event per batch up to batch 5, in order",
           "(event, position) per stream: %r" % seen)
        out, err = sse.communicate(timeout=SSE_S + 10 - (time.monotonic() - started))
    finally:
        if sse.poll() is None:
            sse.kill()
            out, err = sse.communicate()
    lines = out.decode(errors="replace").split()
    versions, connects = lines[0::2], lines[1::2]
    ok(len(versions) == STREAMS and set(versions) == {"2"} and sum(map(int, connects)) == 1,
       "the %d streams were HTTP/2, multiplexed on one connection" % STREAMS,
       "versions %r, connects %r, %s" % (versions, connects, err.decode(errors="replace")[-300:]))

    # Gone: the responder holds nothing for them.
    freed = wait_for(lambda: metric(st, "tailgate_sse_streams") == 0
                     and metric(st, "tailgate_parked_requests") == 0, timeout=10)
    ok(freed, "clients gone: no SSE stream or parked request left in the responder",
       "sse %r, parked %r" % (metric(st, "tailgate_sse_streams"), metric(st, "tailgate_parked_requests")))


if __name__ == "__main__":
    sys.exit(main())
