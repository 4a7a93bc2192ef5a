#!/usr/bin/env python3
"""hostile_http.py - hostile HTTP through a real nginx and tailgate-fcgi, and
the responder's own security properties.  TAP output.

Part 1, through nginx (raw sockets: nothing is cleaned up by a client
library).  Every request below must get a 4xx: the responder's JSON error
({"error", "message"}, valid UTF-8 whatever was asked, Cache-Control
no-store), or nginx's own 4xx page where nginx refuses before the
responder (414 for a request line over its 8 KB buffer, 400 for a NUL or a
bad header, 405 with a JSON body from the snippet for a method other than
GET and HEAD).  Never a 5xx, a
reset without an answer, or a hang (each request has a 10 s budget, and
none of them may park):

  - oversized query strings (8 KB, 64 KB, 1 MB), thousands of parameters,
    a 3,000-item in.() list, thousands of empty separators
  - invalid UTF-8 (escaped and raw) and NUL (%00, raw) in parameters and
    feed names
  - negative, huge, fractional, hex and empty timeouts and cursors
  - path traversal in feed names, very long names, names with slashes
  - POST/PUT/DELETE/PATCH/OPTIONS/TRACE and an unknown method; HTTP/1.0 and
    HTTP/0.9 (served: they are valid), huge and malformed headers, a huge
    or malformed Last-Event-ID
  - then the whole barrage again from 16 threads at once

Part 2, straight to the responder's FastCGI socket (what nginx would pass
if an operator raised its limits, and what any local user can send when
the socket's mode lets them): a 1 MB query string, 100,000 parameters, NUL
and invalid UTF-8 inside PATH_INFO, traversal in PATH_INFO without nginx's
normalisation, POST with a body, malformed FastCGI records, a connection
that never completes its params while others are served.

After each part: the same responder pid, /healthz 200, a snapshot and a
long-poll still answered, nothing alarming in its log (no sanitizer
report, no "fatal").

Part 3, security: the responder maps every ring segment read-only
(/proc/PID/maps: no 'w' on any .ring or .snap mapping, and the file
descriptors are opened read-only); started as root with --user nobody it
runs as nobody (uid, gid, supplementary groups) and still serves;
started as root without --user it warns.

Part 4, nginx/auth_request.conf.example: `nginx -t` accepts it included
before tailgate.conf in a temporary config, and a second nginx running
that config with a small auth service (Authorization: Bearer good is
allowed) refuses private feeds and the feed list without credentials
(401/403), serves them with (Cache-Control: private, no-store), leaves
public feeds public and keeps the auth location internal.

    python3 tests/hostile_http.py

Environment: TAILGATE_BUILDDIR or top_builddir (tailgate-fcgi and
tests/ringfeed), top_srcdir.  Skips (77) without nginx.
"""

import json
import os
import pwd
import re
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "lib"))
if os.environ.get("top_builddir") and not os.environ.get("TAILGATE_BUILDDIR"):
    os.environ["TAILGATE_BUILDDIR"] = os.path.abspath(os.environ["top_builddir"])
from stack import Stack, free_port, nginx_bin  # noqa: E402
from tap import done, failed, ok  # noqa: E402

COLUMNS = [("id", "int8"), ("item", "text"), ("amount", "int4"), ("open", "bool")]
BUDGET = 10.0  # seconds per request: more is a hang


# ---------------------------------------------------------------------------
# Raw HTTP
# ---------------------------------------------------------------------------

class Reply:
    def __init__(self, status=None, headers=None, body=b"", seconds=0.0, error=None, raw=b""):
        self.status, self.headers, self.body = status, headers or {}, body
        self.seconds, self.error, self.raw = seconds, error, raw

    def __repr__(self):
        return "<%s %s %.2fs %r%s>" % (self.status, self.headers.get("content-type"),
                                       self.seconds, self.body[:120],
                                       " error=%s" % self.error if self.error else "")


def _dechunk(data):
    out = b""
    while True:
        line, _, rest = data.partition(b"\r\n")
        try:
            size = int(line.split(b";")[0], 16)
        except ValueError:
            return out + data
        if size == 0:
            return out
        out += rest[:size]
        data = rest[size + 2:]


def parse_reply(data, seconds):
    if not data.startswith(b"HTTP/"):
        return Reply(None, {}, data, seconds, raw=data)
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    try:
        status = int(lines[0].split()[1])
    except (IndexError, ValueError):
        return Reply(None, {}, data, seconds, raw=data)
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(b":")
        headers[k.strip().lower().decode("latin-1")] = v.strip().decode("latin-1")
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = _dechunk(body)
    return Reply(status, headers, body, seconds, raw=data)


def raw_request(port, data, timeout=BUDGET):
    """Send bytes, read until the server closes: a Reply (status None when
    what came back is not HTTP; error set on a timeout or reset)."""
    t0 = time.monotonic()
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    got = b""
    err = None
    try:
        try:
            s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # nginx answered and closed before reading it all
        while True:
            b = s.recv(65536)
            if not b:
                break
            got += b
    except socket.timeout:
        err = "timeout (hang)"
    except ConnectionResetError:
        if not got:
            err = "reset without an answer"
    finally:
        s.close()
    r = parse_reply(got, time.monotonic() - t0)
    r.error = err
    return r


def http(port, target, method=b"GET", proto=b"HTTP/1.1", headers=b"", body=b""):
    if isinstance(target, str):
        target = target.encode()
    req = method + b" " + target + b" " + proto + b"\r\nHost: localhost\r\n"
    if proto != b"HTTP/1.0":
        req += b"Connection: close\r\n"
    return raw_request(port, req + headers + b"\r\n" + body)


def json_error(r):
    """The responder's error body, parsed strictly (UTF-8, JSON), or None."""
    if "application/json" not in r.headers.get("content-type", ""):
        return None
    try:
        obj = json.loads(r.body.decode("utf-8", errors="strict"))
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(obj, dict) or set(obj) != {"error", "message"}:
        return None
    return obj


def nginx_page(r):
    return "text/html" in r.headers.get("content-type", "") and b"nginx" in r.body


def verdict(r, want):
    """'' when r is what want says, else why not.
    want: 'json'   the responder's 4xx JSON error
          'any'    that, or nginx's own 4xx page
          'ok'     a 200 (a valid request)"""
    if r.error:
        return r.error
    if r.seconds > BUDGET:
        return "took %.1fs" % r.seconds
    if r.status is None:
        return "not an HTTP reply: %r" % r.body[:100]
    if want == "ok":
        return "" if r.status == 200 else "status %d" % r.status
    if not 400 <= r.status < 500:
        return "status %d" % r.status
    obj = json_error(r)
    if obj is not None:
        if r.headers.get("cache-control") != "no-store":
            return "a JSON error without Cache-Control: no-store"
        return ""
    if want == "any" and nginx_page(r):
        return ""
    return "not a JSON error%s: %r %r" % (" or nginx's page" if want == "any" else "",
                                          r.headers.get("content-type"), r.body[:160])


# ---------------------------------------------------------------------------
# FastCGI, straight to the responder's socket
# ---------------------------------------------------------------------------

FCGI_BEGIN, FCGI_END, FCGI_PARAMS, FCGI_STDIN, FCGI_STDOUT = 1, 3, 4, 5, 6


def fcgi_record(rtype, content, req_id=1):
    out = b""
    while True:
        chunk, content = content[:65535], content[65535:]
        pad = (8 - len(chunk) % 8) % 8
        out += struct.pack(">BBHHBB", 1, rtype, req_id, len(chunk), pad, 0) + chunk + b"\0" * pad
        if not content:
            return out


def fcgi_pair(k, v):
    def ln(n):
        return struct.pack(">B", n) if n < 128 else struct.pack(">I", n | 0x80000000)
    return ln(len(k)) + ln(len(v)) + k + v


def fcgi_request(params, stdin=b""):
    body = b"".join(fcgi_pair(k if isinstance(k, bytes) else k.encode(),
                              v if isinstance(v, bytes) else v.encode())
                    for k, v in params.items())
    out = fcgi_record(FCGI_BEGIN, struct.pack(">HB5x", 1, 0))
    out += fcgi_record(FCGI_PARAMS, body) + fcgi_record(FCGI_PARAMS, b"")
    if stdin:
        out += fcgi_record(FCGI_STDIN, stdin)
    return out + fcgi_record(FCGI_STDIN, b"")


def fcgi_raw(sock_path, data, timeout=BUDGET, half_close=False):
    """Send bytes to the FastCGI socket; (stdout bytes, ended, error,
    seconds).  half_close: then shut our side down, as a peer that died
    mid-request would (nginx never half-closes a FastCGI connection)."""
    t0 = time.monotonic()
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(sock_path)
    got, err = b"", None
    try:
        try:
            s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass
        if half_close:
            s.shutdown(socket.SHUT_WR)
        while True:
            b = s.recv(65536)
            if not b:
                break
            got += b
    except socket.timeout:
        err = "timeout (hang)"
    except ConnectionResetError:
        pass
    finally:
        s.close()
    out, ended = b"", False
    while len(got) >= 8:
        _, rtype, _, clen, plen, _ = struct.unpack(">BBHHBB", got[:8])
        content = got[8:8 + clen]
        got = got[8 + clen + plen:]
        if rtype == FCGI_STDOUT:
            out += content
        elif rtype == FCGI_END:
            ended = True
    return out, ended, err, time.monotonic() - t0


def fcgi_get(sock_path, path, query="", method="GET", extra=None, stdin=b""):
    params = {"REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": query,
              "SERVER_PROTOCOL": "HTTP/1.1"}
    if extra:
        params.update(extra)
    out, ended, err, secs = fcgi_raw(sock_path, fcgi_request(params, stdin))
    head, _, body = out.partition(b"\r\n\r\n")
    headers = {}
    for line in head.split(b"\r\n"):
        k, _, v = line.partition(b":")
        headers[k.strip().lower().decode("latin-1")] = v.strip().decode("latin-1")
    try:
        status = int(headers.get("status", "200").split()[0])
    except ValueError:
        status = None
    r = Reply(status, headers, body, secs, err)
    if not ended and not err:
        r.error = "no FCGI_END_REQUEST"
    return r


# ---------------------------------------------------------------------------
# The cases
# ---------------------------------------------------------------------------

def http_cases():
    """(what, kwargs for http(), want)."""
    big = lambda n: "/feeds/bids?item=eq." + "a" * n  # noqa: E731
    c = [
        # oversized query strings
        ("8 KB query string", dict(target=big(8 * 1024)), "any"),
        ("64 KB query string", dict(target=big(64 * 1024)), "any"),
        ("1 MB query string", dict(target=big(1 << 20)), "any"),
        ("8 KB query string of one bare word", dict(target="/feeds/bids?" + "a" * 8000), "json"),
        ("query just over the responder's 8192 bytes, if nginx passes it",
         dict(target="/feeds/bids?item=eq." + "b" * 8180), "any"),
        # thousands of parameters
        ("1,000 filters", dict(target="/feeds/bids?" + "&".join(["id=gt.1"] * 1000)), "json"),
        ("2,600 bare parameters", dict(target="/feeds/bids?" + "&".join(["a"] * 2600)), "json"),
        ("800 cursors", dict(target="/feeds/bids?" + "&".join(["cursor=1"] * 800)), "json"),
        ("3,000 parameters (over nginx's buffer)",
         dict(target="/feeds/bids?" + "&".join("id=gt.%d" % i for i in range(3000))), "any"),
        ("an in. list of 3,000 values",
         dict(target="/feeds/bids?id=in.(" + ",".join(["1"] * 3000) + ")"), "json"),
        # invalid UTF-8 and NUL
        ("%ff%fe in a filter value", dict(target="/feeds/bids?item=eq.%ff%fe"), "json"),
        ("raw 0xff 0xfe in a filter value", dict(target=b"/feeds/bids?item=eq.\xff\xfe"), "json"),
        ("an overlong '/' (%c0%af) in a value", dict(target="/feeds/bids?item=eq.%c0%af"), "json"),
        ("a UTF-16 surrogate in a value", dict(target="/feeds/bids?item=eq.%ed%a0%80"), "json"),
        ("a cut-short sequence in a column name", dict(target="/feeds/bids?it%c3=eq.1"), "json"),
        ("invalid UTF-8 in an in. list", dict(target="/feeds/bids?id=in.(1,%80)"), "json"),
        ("%00 in a filter value", dict(target="/feeds/bids?item=eq.a%00b"), "json"),
        ("%00 in a parameter name", dict(target="/feeds/bids?it%00em=eq.1"), "json"),
        ("%00 in cursor", dict(target="/feeds/bids?cursor=1%00"), "json"),
        ("raw NUL in the request line", dict(target=b"/feeds/bids?item=eq.a\x00b"), "any"),
        ("%ff in a feed name", dict(target="/feeds/%ff"), "json"),
        ("raw 0xff 0xfe as a feed name", dict(target=b"/feeds/\xff\xfe"), "json"),
        ("a lone continuation byte in a feed name", dict(target="/feeds/bi%80ds"), "json"),
        ("%00 in a feed name", dict(target="/feeds/bi%00ds"), "any"),
        ("%00 then .ring in a feed name", dict(target="/feeds/bids%00.ring"), "any"),
        # timeouts
        ("timeout=-1", dict(target="/feeds/bids?timeout=-1"), "json"),
        ("timeout=1e99", dict(target="/feeds/bids?timeout=1e99"), "json"),
        ("timeout=18446744073709551616", dict(target="/feeds/bids?timeout=18446744073709551616"),
         "json"),
        ("timeout=0x10", dict(target="/feeds/bids?timeout=0x10"), "json"),
        ("timeout=26 (over --max-timeout)", dict(target="/feeds/bids?timeout=26"), "json"),
        ("timeout=2.5", dict(target="/feeds/bids?timeout=2.5"), "json"),
        ("timeout= (empty)", dict(target="/feeds/bids?timeout="), "json"),
        ("timeout=+5", dict(target="/feeds/bids?timeout=%2B5"), "json"),
        ("timeout=%205", dict(target="/feeds/bids?timeout=%205"), "json"),
        ("timeout=NaN", dict(target="/feeds/bids?timeout=NaN"), "json"),
        ("timeout=99999999999999999999999999", dict(target="/feeds/bids?timeout=" + "9" * 26),
         "json"),
        # cursors
        ("cursor=-1", dict(target="/feeds/bids?cursor=-1"), "json"),
        ("cursor=1e99", dict(target="/feeds/bids?cursor=1e99"), "json"),
        ("cursor=18446744073709551616", dict(target="/feeds/bids?cursor=18446744073709551616"),
         "json"),
        ("cursor=0x10", dict(target="/feeds/bids?cursor=0x10"), "json"),
        ("cursor= (empty)", dict(target="/feeds/bids?cursor="), "json"),
        ("cursor=+5", dict(target="/feeds/bids?cursor=%2B5"), "json"),
        ("cursor of 4,000 digits", dict(target="/feeds/bids?cursor=" + "9" * 4000), "json"),
        ("cursor=18446744073709551615 (valid, not held: 410)",
         dict(target="/feeds/bids?cursor=18446744073709551615&timeout=0"), "json"),
        ("cursor=0 (valid, before the floor: 410)", dict(target="/feeds/bids?cursor=0"), "json"),
        # path traversal and odd names
        ("/feeds/..%2f..%2fetc%2fpasswd", dict(target="/feeds/..%2f..%2fetc%2fpasswd"), "any"),
        ("/feeds/../../etc/passwd", dict(target="/feeds/../../etc/passwd"), "any"),
        ("/feeds/%2e%2e/%2e%2e/etc/passwd", dict(target="/feeds/%2e%2e/%2e%2e/etc/passwd"), "any"),
        ("/feeds/..%5c..%5cetc%5cpasswd", dict(target="/feeds/..%5c..%5cetc%5cpasswd"), "json"),
        ("/feeds/bids.ring", dict(target="/feeds/bids.ring"), "json"),
        ("/feeds/.ring", dict(target="/feeds/.ring"), "json"),
        ("/feeds/bids.snap", dict(target="/feeds/bids.snap"), "json"),
        ("a 5,000-byte feed name", dict(target="/feeds/" + "a" * 5000), "json"),
        ("a 64-byte feed name (one over the limit)", dict(target="/feeds/" + "a" * 64), "json"),
        ("a feed name with a slash", dict(target="/feeds/bids/x"), "json"),
        ("a feed name with an escaped slash", dict(target="/feeds/a%2fb"), "json"),
        ("a feed name with many slashes", dict(target="/feeds/" + "a/" * 500 + "b"), "json"),
        ("a feed name with spaces and quotes", dict(target="/feeds/%22a%20b%22"), "json"),
        ("a feed name with a newline (no location matches)", dict(target="/feeds/a%0ab"), "any"),
        ("a route ending in a newline", dict(target="/feeds%0a"), "any"),
        ("/feeds/-", dict(target="/feeds/-"), "json"),
        # methods
        ("POST", dict(target="/feeds/bids", method=b"POST",
                      headers=b"Content-Length: 5\r\n", body=b"x=1&y"), "any"),
        ("PUT", dict(target="/feeds/bids", method=b"PUT", headers=b"Content-Length: 0\r\n"),
         "any"),
        ("DELETE", dict(target="/feeds/bids", method=b"DELETE"), "any"),
        ("PATCH", dict(target="/feeds/bids", method=b"PATCH"), "any"),
        ("OPTIONS", dict(target="/feeds/bids", method=b"OPTIONS"), "any"),
        ("TRACE", dict(target="/feeds/bids", method=b"TRACE"), "any"),
        ("an unknown method", dict(target="/feeds/bids", method=b"FROB"), "any"),
        ("POST to /metrics", dict(target="/metrics", method=b"POST"), "any"),
        # headers
        ("a 20 KB Last-Event-ID", dict(target="/feeds/bids", headers=b"Accept: text/event-stream"
                                       b"\r\nLast-Event-ID: " + b"9" * 20000 + b"\r\n"), "any"),
        ("a 7,000-digit Last-Event-ID", dict(target="/feeds/bids", headers=b"Accept: "
                                              b"text/event-stream\r\nLast-Event-ID: " +
                                              b"9" * 7000 + b"\r\n"), "json"),
        ("Last-Event-ID: -1", dict(target="/feeds/bids", headers=b"Accept: text/event-stream\r\n"
                                   b"Last-Event-ID: -1\r\n"), "json"),
        ("Last-Event-ID: 0xff 0xfe", dict(target="/feeds/bids", headers=b"Accept: "
                                          b"text/event-stream\r\nLast-Event-ID: \xff\xfe\r\n"),
         "json"),
        ("Last-Event-ID: 1e99 with stream=sse", dict(target="/feeds/bids?stream=sse",
                                                     headers=b"Last-Event-ID: 1e99\r\n"), "json"),
        ("a 100 KB header", dict(target="/feeds/bids", headers=b"X-Big: " + b"a" * 100000 +
                                 b"\r\n"), "any"),
        ("2,000 headers", dict(target="/feeds/bids", headers=b"".join(
            b"X-H%d: %s\r\n" % (i, b"v" * 40) for i in range(2000))), "any"),
        ("a header line without a colon (nginx drops it)",
         dict(target="/feeds/bids", headers=b"NoColonHere\r\n"), "ok"),
        ("a header with an underscore (nginx drops it)",
         dict(target="/feeds/bids", headers=b"Last_Event_ID: x\r\n"), "ok"),
        ("a NUL inside a header", dict(target="/feeds/bids", headers=b"X-A: a\x00b\r\n"), "any"),
        ("a header name with a space", dict(target="/feeds/bids", headers=b"Bad Name: x\r\n"),
         "any"),
        ("SSE with a bad filter", dict(target="/feeds/bids?amount=gt.abc",
                                       headers=b"Accept: text/event-stream\r\n"), "json"),
        ("a filter on an unknown column", dict(target="/feeds/bids?nope=eq.1"), "json"),
        ("a json-kind comparison on a bool column", dict(target="/feeds/bids?open=gt.maybe"),
         "json"),
        ("an unknown endpoint", dict(target="/feedsx"), "any"),
        ("a request line of junk", dict(target=b"\x01\x02", method=b"\xff"), "any"),
    ]
    return c


def alive(st, pid, what):
    """The responder still serves: same pid, /healthz, a snapshot, a long-poll."""
    s, _, body = st.get("/healthz", timeout=BUDGET)
    ok(s == 200 and body == b"ok\n", "%s: /healthz 200" % what, body)
    ok(st.responder_pids == [pid] and st.responders[0].poll() is None,
       "%s: the same responder process (pid %d) is running" % (what, pid),
       "pids %s, exit %s" % (st.responder_pids, st.responders[0].poll()))
    s, obj = st.get_json("/feeds/bids")
    # A cursor is POSITION.IDENTITY (opaque to clients; this test knows).
    ok(s == 200 and obj["cursor"].split(".")[0] == "3", "%s: a snapshot is served" % what, obj)
    ident = obj["cursor"].split(".")[-1]
    s, obj = st.get_json("/feeds/bids?cursor=2.%s&timeout=1" % ident)
    ok(s == 200 and obj["cursor"] == "3." + ident and len(obj["batches"]) == 1,
       "%s: a long-poll is served" % what, obj)
    log = st.responder_log(0)
    bad = [l for l in log.splitlines()
           if re.search(r"Sanitizer|runtime error|fatal|assert|segfault|double free", l)]
    ok(not bad, "%s: nothing alarming in the responder's log" % what, "\n".join(bad[:5]))


def part_nginx(st, pid):
    cases = http_cases()
    results = {}
    for what, kw, want in cases:
        r = http(st.port, **kw)
        results[what] = r
        why = verdict(r, want)
        ok(not why, "%s: %s" % (what, "%d %s" % (r.status, "JSON" if json_error(r) else
                                                  "nginx") if not why else want), why)

    # Named expectations on top of "a clean 4xx".
    def status(what):
        return results[what].status
    ok(status("8 KB query string") == 414 and status("1 MB query string") == 414,
       "oversized request lines are nginx's 414",
       [status("8 KB query string"), status("1 MB query string")])
    e = json_error(results["1,000 filters"])
    ok(e and "at most 16 filters" in e["message"], "1,000 filters: 'at most 16 filters'", e)
    e = json_error(results["an in. list of 3,000 values"])
    ok(e and "at most 256" in e["message"], "a 3,000-item in. list: 'at most 256 values'", e)
    for what in ("%ff%fe in a filter value", "raw 0xff 0xfe in a filter value"):
        e = json_error(results[what])
        ok(e and "UTF-8" in e["message"], "%s: refused as not UTF-8" % what, e)
    for what in ("%ff in a feed name", "raw 0xff 0xfe as a feed name"):
        e = json_error(results[what])
        ok(e and e["error"] == "unknown_feed" and "\ufffd" in e["message"],
           "%s: 404, the name quoted with U+FFFD (the body is valid JSON)" % what, e)
    e = json_error(results["Last-Event-ID: 0xff 0xfe"])
    ok(e and "\ufffd" in e["message"], "a non-UTF-8 Last-Event-ID is quoted with U+FFFD", e)
    e = json_error(results["a 5,000-byte feed name"])
    ok(e and len(e["message"]) < 200, "a 5,000-byte feed name is not echoed whole", e)
    for what in ("cursor=18446744073709551615 (valid, not held: 410)",
                 "cursor=0 (valid, before the floor: 410)"):
        ok(status(what) == 410, "%s" % what, results[what])
    for what in ("POST", "PUT", "DELETE", "PATCH", "OPTIONS", "an unknown method",
                 "POST to /metrics"):
        e = json_error(results[what])
        ok(status(what) == 405 and e and e["error"] == "method_not_allowed"
           and results[what].headers.get("allow") == "GET, HEAD",
           "%s: 405 with the API's JSON error and Allow: GET, HEAD" % what, results[what])
    # gzip'd and plain replies share a URL: Vary says so, to every cache.
    r = http(st.port, "/feeds/bids", headers=b"Accept-Encoding: gzip\r\n")
    plain = http(st.port, "/feeds/bids")
    ok(r.status == 200 and r.headers.get("content-encoding") == "gzip"
       and "accept-encoding" in r.headers.get("vary", "").lower()
       and "accept-encoding" in plain.headers.get("vary", "").lower(),
       "a reply that may be gzip'd says Vary: Accept-Encoding (gzip'd or not)",
       (r.headers, plain.headers))

    # Dot segments nginx resolves before matching a location: /feeds/%2e%2e
    # is "/" and /feeds/bids%2f.. is "/feeds/" - never a file outside root.
    r = http(st.port, "/feeds/%2e%2e")
    root = http(st.port, "/")
    ok(r.status == root.status and r.body == root.body,
       "/feeds/%%2e%%2e is nginx's '/' (dot segments resolved before routing): %s" % r.status,
       (r, root))
    r = http(st.port, "/feeds/bids%2f..")
    ok(r.status == 200 and json.loads(r.body).get("feeds") is not None,
       "/feeds/bids%2f.. is the feed list /feeds/ (resolved by nginx)", r)
    for target in ("/feeds/..%2f..%2fetc%2fpasswd", "/feeds/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
                   "/feeds/..%2f..%2f..%2f..%2fproc%2fself%2fenviron"):
        r = http(st.port, target)
        ok(b"root:" not in r.body and b"PATH=" not in r.body and r.status and r.status < 500,
           "%s reads no file outside the root (%s)" % (target, r.status), r)

    # Valid, if unusual: HTTP/1.0, HTTP/0.9, many empty separators, a long Accept.
    r = http(st.port, "/feeds/bids", proto=b"HTTP/1.0")
    ok(r.status == 200 and json.loads(r.body)["cursor"].startswith("3."), "HTTP/1.0 is served", r)
    r = raw_request(st.port, b"GET /feeds/bids\r\n")
    ok(r.error is None and r.body.startswith(b'{"cursor":"3.'),
       "HTTP/0.9 (a bare GET line) is served", r)
    r = http(st.port, "/feeds/bids?" + "&" * 8000)
    ok(r.status == 200, "8,000 empty separators: a plain snapshot (no parameter at all)", r)
    r = http(st.port, "/feeds/bids", headers=b"Accept: " + b"a/b, " * 1500 + b"\r\n")
    ok(r.status == 200, "a 7.5 KB Accept header: served", r)
    r = http(st.port, "/feeds/bids", method=b"HEAD")
    ok(r.status == 200 and r.body == b"", "HEAD: 200 without a body", r)

    alive(st, pid, "after the barrage")

    # The whole barrage at once from 16 threads.
    failures = []
    lock = threading.Lock()

    def worker(items):
        for what, kw, want in items:
            r = http(st.port, **kw)
            why = verdict(r, want)
            if why:
                with lock:
                    failures.append("%s: %s" % (what, why))
    threads = [threading.Thread(target=worker, args=(cases[i::4],)) for i in range(4)
               for _ in range(4)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    ok(not failures and not any(t.is_alive() for t in threads),
       "the barrage from 16 threads at once: %d requests, all clean 4xx, %.1fs" %
       (4 * len(cases), time.monotonic() - t0), "\n".join(failures[:10]))
    alive(st, pid, "after the concurrent barrage")


def part_fcgi(st, pid):
    sock = st.socket
    cases = [
        ("1 MB QUERY_STRING", dict(path="/feeds/bids", query="item=eq." + "a" * (1 << 20)),
         "longer than"),
        ("QUERY_STRING of 8,193 bytes", dict(path="/feeds/bids", query="a" * 8193),
         "longer than"),
        ("100,000 parameters", dict(path="/feeds/bids", query="&".join(["id=gt.1"] * 100000)),
         "longer than"),
        ("4,096 parameters in 8 KB", dict(path="/feeds/bids", query="&".join(["a=b"] * 2047)),
         "unknown parameter"),
        ("a raw NUL in PATH_INFO", dict(path="/feeds/bi\0ds/../../x"), None),
        ("invalid UTF-8 in PATH_INFO", dict(path="/feeds/\xff\xfe\xc0\xaf"), None),
        ("traversal in PATH_INFO", dict(path="/feeds/../../../../etc/passwd"), None),
        ("traversal to a ring file", dict(path="/feeds/../ring/bids"), None),
        ("an absolute path in PATH_INFO", dict(path="/feeds//etc/passwd"), None),
        ("a 60 KB feed name", dict(path="/feeds/" + "a" * 60000), None),
        ("an empty PATH_INFO", dict(path=""), None),
        ("POST with a body", dict(path="/feeds/bids", method="POST", stdin=b"x" * 100000),
         "only GET"),
        ("a 64 KB REQUEST_METHOD", dict(path="/feeds/bids", method="G" * 65536), "only GET"),
        ("a 1 MB Last-Event-ID", dict(path="/feeds/bids", extra={
            "HTTP_ACCEPT": "text/event-stream", "HTTP_LAST_EVENT_ID": "9" * (1 << 20)}),
         "Last-Event-ID"),
    ]
    for what, kw, part in cases:
        r = fcgi_get(sock, **kw)
        why = verdict(r, "json")
        if not why and part:
            e = json_error(r)
            if part not in e["message"]:
                why = "message %r lacks %r" % (e["message"], part)
        ok(not why, "FastCGI %s: %s" % (what, r.status if not why else "a 4xx JSON error"), why)

    # libfcgi hands params over as C strings: a raw NUL (which nginx refuses
    # to pass) ends the value, and what is before it is an ordinary query.
    r = fcgi_get(sock, "/feeds/bids", query="item=eq.a\0b&x=y")
    ok(r.status == 200 and json.loads(r.body)["cursor"].startswith("3."),
       "FastCGI a raw NUL in QUERY_STRING: the query ends there (200)", r)

    # A wrong FastCGI role, garbage, truncated records, a params block never
    # completed (held open while other requests are served).
    junk = [
        ("garbage bytes", b"\xff" * 64),
        ("a record header cut short", b"\x01\x01\x00"),
        ("a params record claiming 65535 bytes, then EOF",
         fcgi_record(FCGI_BEGIN, struct.pack(">HB5x", 1, 0)) +
         struct.pack(">BBHHBB", 1, FCGI_PARAMS, 1, 65535, 0, 0) + b"x" * 100),
        ("a name-value pair longer than its record",
         fcgi_record(FCGI_BEGIN, struct.pack(">HB5x", 1, 0)) +
         fcgi_record(FCGI_PARAMS, b"\x7f\x7fAB") + fcgi_record(FCGI_PARAMS, b"")),
        ("the AUTHORIZER role", fcgi_record(FCGI_BEGIN, struct.pack(">HB5x", 2, 0)) +
         fcgi_record(FCGI_PARAMS, b"") + fcgi_record(FCGI_STDIN, b"")),
        ("version 9 records", b"\x09" + fcgi_request({"PATH_INFO": "/healthz"})[1:]),
    ]
    for what, data in junk:
        out, ended, err, secs = fcgi_raw(sock, data, half_close=True)
        ok(err is None and b"Status: 5" not in out and secs < 3,
           "FastCGI %s: closed or answered within %.1fs, no 5xx" % (what, secs), (out[:200], err))
    hold = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    hold.connect(sock)
    hold.sendall(fcgi_record(FCGI_BEGIN, struct.pack(">HB5x", 1, 0)) +
                 fcgi_record(FCGI_PARAMS, fcgi_pair(b"PATH_INFO", b"/healthz"))[:12])
    t0 = time.monotonic()
    served = all(fcgi_get(sock, "/healthz").status == 200 for _ in range(20))
    ok(served and time.monotonic() - t0 < 5,
       "20 requests served while a connection holds half a params block (%.2fs)" %
       (time.monotonic() - t0))
    hold.close()
    part_fcgi_kept(sock)
    alive(st, pid, "after the FastCGI barrage")


def fcgi_read_reply(s):
    """Read one reply (up to its FCGI_END_REQUEST) from a kept connection:
    (stdout bytes, ended)."""
    got, out = b"", b""
    while True:
        while len(got) >= 8:
            _, rtype, _, clen, plen, _ = struct.unpack(">BBHHBB", got[:8])
            if len(got) < 8 + clen + plen:
                break
            content, got = got[8:8 + clen], got[8 + clen + plen:]
            if rtype == FCGI_STDOUT:
                out += content
            elif rtype == FCGI_END:
                return out, True
        try:
            b = s.recv(65536)
        except ConnectionResetError:  # closed with our bytes unread
            return out, False
        if not b:
            return out, False
        got += b


def part_fcgi_kept(sock):
    """A kept connection (FCGI_KEEP_CONN): after the first request the
    responder reads each next one with one recv (fcgi_request.h); one that
    comes in pieces is waited for, one too large or malformed closes the
    connection, and nothing hangs."""
    def keep_req(path, query=""):
        params = {"REQUEST_METHOD": "GET", "PATH_INFO": path, "QUERY_STRING": query}
        body = b"".join(fcgi_pair(k.encode(), v.encode()) for k, v in params.items())
        return (fcgi_record(FCGI_BEGIN, struct.pack(">HB5x", 1, 1)) +
                fcgi_record(FCGI_PARAMS, body) + fcgi_record(FCGI_PARAMS, b"") +
                fcgi_record(FCGI_STDIN, b""))
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(BUDGET)
    s.connect(sock)
    try:
        statuses = []
        for i in range(3):
            s.sendall(keep_req("/healthz"))
            out, ended = fcgi_read_reply(s)
            statuses.append(ended and out.startswith(b"Status: 200"))
        ok(all(statuses), "kept FastCGI connection: three requests, three replies", statuses)
        # The next request in three pieces, 50 ms apart.
        data = keep_req("/feeds/bids")
        for k in range(3):
            s.sendall(data[k * len(data) // 3:(k + 1) * len(data) // 3])
            time.sleep(0.05)
        out, ended = fcgi_read_reply(s)
        ok(ended and b'"cursor"' in out, "kept FastCGI connection: a request in pieces is served",
           out[:200])
        s.sendall(keep_req("/healthz"))
        out, ended = fcgi_read_reply(s)
        ok(ended and out.startswith(b"Status: 200"), "kept FastCGI connection: and the next one")
        # Garbage on it: closed, not a hang.
        t0 = time.monotonic()
        s.sendall(b"\xff" * 64)
        out, ended = fcgi_read_reply(s)
        ok(not ended and time.monotonic() - t0 < 3,
           "kept FastCGI connection: garbage closes it (%.2fs)" % (time.monotonic() - t0))
    except (socket.timeout, OSError) as e:
        ok(False, "kept FastCGI connection", repr(e))
    finally:
        s.close()
    # Half a next request held on a kept connection stalls nobody.
    hold = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    hold.settimeout(BUDGET)
    hold.connect(sock)
    try:
        hold.sendall(keep_req("/healthz"))
        fcgi_read_reply(hold)
        hold.sendall(keep_req("/healthz")[:20])
        t0 = time.monotonic()
        served = all(fcgi_get(sock, "/healthz").status == 200 for _ in range(20))
        ok(served and time.monotonic() - t0 < 5,
           "20 requests served while a kept connection holds half its next request (%.2fs)" %
           (time.monotonic() - t0))
    except (socket.timeout, OSError) as e:
        ok(False, "kept FastCGI connection holding half a request", repr(e))
    finally:
        hold.close()
    # A next request over 64 kB: closed, no hang.
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(BUDGET)
    s.connect(sock)
    try:
        s.sendall(keep_req("/healthz"))
        first, _ = fcgi_read_reply(s)
        t0 = time.monotonic()
        try:
            s.sendall(keep_req("/feeds/bids", "a" * 100000))
        except (BrokenPipeError, ConnectionResetError):
            pass
        out, ended = fcgi_read_reply(s)
        ok(first.startswith(b"Status: 200") and not ended and time.monotonic() - t0 < 3,
           "kept FastCGI connection: a 100 kB next request closes it")
    except (socket.timeout, OSError) as e:
        ok(False, "kept FastCGI connection, 100 kB request", repr(e))
    finally:
        s.close()


def proc_uids(pid):
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("Uid", "Gid", "Groups"):
                out[k] = v.split()
    return out


def part_security(st, pid):
    # Read-only maps of every segment the responder attached.
    maps = open("/proc/%d/maps" % pid).read().splitlines()
    rings = [l for l in maps if l.endswith(".ring") or l.endswith(".snap")]
    ok(any(l.endswith("/bids.ring") for l in rings),
       "the responder maps bids.ring (%d ring/snapshot mappings)" % len(rings), "\n".join(maps))
    writable = [l for l in rings if "w" in l.split()[1]]
    ok(rings and not writable, "every ring and snapshot mapping is read-only (%s)" %
       ", ".join(sorted({l.split()[1] for l in rings})), "\n".join(writable))
    fds = []
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            target = os.readlink("/proc/%d/fd/%s" % (pid, fd))
        except OSError:
            continue
        if target.endswith((".ring", ".snap")):
            with open("/proc/%d/fdinfo/%s" % (pid, fd)) as f:
                flags = int(re.search(r"flags:\s*(\d+)", f.read()).group(1), 8)
            fds.append((target, flags & 3))
    ok(all(acc == os.O_RDONLY for _, acc in fds),
       "ring descriptors the responder keeps open are O_RDONLY (%d)" % len(fds), fds)

    if os.geteuid() != 0:
        ok(True, "# skip --user: not root")
        return
    log = st.responder_log(0)
    ok("running as root: give --user" in log, "started as root without --user: it warns",
       log[-500:])
    try:
        nobody = pwd.getpwnam("nobody")
    except KeyError:
        ok(True, "# skip --user: no user nobody")
        return
    # A second responder as nobody on its own socket, reading the same rings
    # (mode 0640: given to nobody's group, as tailgated's ring_group does).
    for name in os.listdir(st.ring_dir):
        os.chown(os.path.join(st.ring_dir, name), -1, nobody.pw_gid)
    sock = os.path.join(st.dir, "nobody.sock")
    logp = os.path.join(st.dir, "nobody.log")
    exe = os.path.join(st.build, "tailgate-fcgi")
    p = subprocess.Popen([exe, "--socket", sock, "--socket-mode", "0660", "--user", "nobody",
                          "--ring-dir", st.ring_dir], stdout=open(logp, "w"),
                         stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        r = None
        while time.monotonic() < deadline:
            if os.path.exists(sock):
                try:
                    r = fcgi_get(sock, "/feeds/bids")
                    break
                except OSError:
                    pass
            time.sleep(0.05)
        ok(r is not None and r.status == 200 and json.loads(r.body)["cursor"].startswith("3."),
           "tailgate-fcgi --user nobody serves the feed", (r, open(logp).read()[-500:]))
        ids = proc_uids(p.pid)
        ok(set(ids["Uid"]) == {str(nobody.pw_uid)} and set(ids["Gid"]) == {str(nobody.pw_gid)}
           and ids.get("Groups", []) in ([], [str(nobody.pw_gid)]),
           "it runs as nobody: real, effective, saved and fs ids, no other groups", ids)
        stt = os.stat(sock)
        ok(stt.st_uid == nobody.pw_uid and stt.st_mode & 0o777 == 0o660,
           "its socket belongs to nobody, mode 0660", (stt.st_uid, oct(stt.st_mode)))
        ok("running as user nobody" in open(logp).read(), "it logs the switch")
    finally:
        p.terminate()
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    r = subprocess.run([exe, "--socket", os.path.join(st.dir, "x.sock"), "--user",
                        "no-such-user-here", "--ring-dir", st.ring_dir],
                       capture_output=True, text=True, timeout=10)
    ok(r.returncode != 0 and "no such user" in r.stderr, "--user with an unknown user fails",
       r.stderr)


class AuthService(threading.Thread):
    """A stand-in auth service: 204 for "Bearer good", 403 for "Bearer bad",
    else 401; remembers the X-Original-URI it was asked about."""

    def __init__(self):
        super().__init__(daemon=True)
        import http.server

        seen = self.seen = []

        class H(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                seen.append(self.headers.get("X-Original-URI"))
                auth = self.headers.get("Authorization", "")
                code = 204 if auth == "Bearer good" else 403 if auth == "Bearer bad" else 401
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a):
                pass

        self.httpd = http.server.HTTPServer(("127.0.0.1", 0), H)
        self.port = self.httpd.server_address[1]
        self.start()

    def run(self):
        self.httpd.serve_forever()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def part_auth_example(st):
    src = os.path.join(st.src, "nginx", "auth_request.conf.example")
    with open(src) as f:
        example = f.read()
    auth = AuthService()
    prefix = os.path.join(st.dir, "auth-nginx")
    os.makedirs(os.path.join(prefix, "tmp"), exist_ok=True)
    shutil.copyfile(os.path.join(st.prefix, "fastcgi_params"),
                    os.path.join(prefix, "fastcgi_params"))
    with open(os.path.join(st.src, "nginx", "tailgate.conf")) as f:
        snippet = f.read()
    # The example passes to the responder the way the snippet does: the
    # http-level upstream the snippet's header asks for, or its socket.
    upstream = "fastcgi_pass tailgate_fcgi;" in snippet
    via = ("fastcgi_pass tailgate_fcgi;" if upstream
           else "fastcgi_pass unix:/run/tailgate/fcgi.sock;")
    ok(example.count(via) >= 3 and "127.0.0.1:9180" in example,
       "the example reaches the responder as tailgate.conf does (%s)" % via)
    with open(os.path.join(prefix, "auth.conf"), "w") as f:
        f.write(example.replace("unix:/run/tailgate/fcgi.sock", "unix:" + st.socket)
                .replace("127.0.0.1:9180", "127.0.0.1:%d" % auth.port))
    up = ("upstream tailgate_fcgi { server unix:%s; keepalive 16; }" % st.socket
          if upstream else "")
    port = free_port()
    user = ""
    if os.geteuid() == 0:
        user = "user nobody %s;" % ("nogroup" if os.path.exists("/etc/group") and
                                    "nogroup:" in open("/etc/group").read() else "nobody")
    conf = os.path.join(prefix, "nginx.conf")
    with open(conf, "w") as f:
        f.write("""%s
daemon off;
pid %s/nginx.pid;
error_log stderr warn;
events { worker_connections 256; }
http {
    access_log off;
    client_body_temp_path %s/tmp/body;
    fastcgi_temp_path %s/tmp/fastcgi;
    proxy_temp_path %s/tmp/proxy;
    scgi_temp_path %s/tmp/scgi;
    uwsgi_temp_path %s/tmp/uwsgi;
    %s
    server {
        listen 127.0.0.1:%d;
        include %s/auth.conf;
        include %s;
    }
}
""" % ((user, prefix) + (prefix,) * 5 + (up, port, prefix,
                                            os.path.join(st.prefix, "tailgate.conf"))))
    t = subprocess.run([nginx_bin(), "-t", "-p", prefix, "-c", conf, "-e", "stderr"],
                       capture_output=True, text=True, timeout=30)
    ok(t.returncode == 0 and "test is successful" in t.stderr,
       "nginx -t accepts auth_request.conf.example included before tailgate.conf", t.stderr)
    log = open(os.path.join(prefix, "nginx.log"), "w")
    ng = subprocess.Popen([nginx_bin(), "-p", prefix, "-c", conf, "-e", "stderr"],
                          stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        feed = st.ringfeed("private-x", COLUMNS)
        feed.batch(2, inserted=[[9, "secret row", 1, True]])

        def get(path, token=None):
            return http(port, path, headers=b"Authorization: Bearer %s\r\n" % token.encode()
                        if token else b"")
        r = get("/feeds/private-x")
        ok(r.status == 401 and b"secret row" not in r.body,
           "a private feed without credentials: 401 from auth_request", r)
        r = get("/feeds/private-x", "bad")
        ok(r.status == 403 and b"secret row" not in r.body,
           "a private feed with refused credentials: 403", r)
        r = get("/feeds/private-x?cursor=1&timeout=0")
        ok(r.status == 401, "a private feed's long-poll without credentials: 401", r)
        r = get("/feeds/private-x", "good")
        ok(r.status == 200 and b"secret row" in r.body and
           r.headers.get("cache-control") == "private, no-store",
           "a private feed with credentials: 200, Cache-Control: private, no-store", r)
        cur = json.loads(r.body)["cursor"]
        r = get("/feeds/private-x?cursor=%s&timeout=0" % cur, "good")
        ok(r.status == 200 and r.headers.get("cache-control") == "private, no-store",
           "its long-poll with credentials: 200, not public", r)
        r = get("/feeds")
        ok(r.status == 401 and b"private-x" not in r.body,
           "the feed list (which names private feeds) without credentials: 401", r)
        r = get("/feeds", "good")
        ok(r.status == 200 and b"private-x" in r.body, "the feed list with credentials", r)
        r = get("/feeds/bids")
        ok(r.status == 200 and json.loads(r.body)["cursor"].startswith("3."),
           "a public feed needs no credentials", r)
        r = get("/metrics")
        ok(r.status == 200 and b"tailgate_" in r.body, "/metrics from 127.0.0.1: allowed", r)
        r = get("/_tailgate_auth", "good")
        ok(r.status == 404, "the auth location is internal (404 from outside)", r)
        ok("/feeds/private-x" in auth.seen and "/feeds" in auth.seen and
           "/feeds/bids" not in auth.seen,
           "the auth service was asked about private URIs only", auth.seen)
        feed.quit()
        st.feeds.remove(feed)
    finally:
        ng.terminate()
        try:
            ng.wait(10)
        except subprocess.TimeoutExpired:
            ng.kill()
            ng.wait()
        auth.stop()


def main():
    if not (shutil.which("nginx") or os.path.exists(nginx_bin())):
        print("1..0 # skip nginx not found")
        return 77
    t0 = time.monotonic()
    with Stack() as st:
        feed = st.ringfeed("bids", COLUMNS)
        feed.batch(2, inserted=[[1, "a", 5, True]])
        feed.batch(3, inserted=[[2, "\u00e9t\u00e9", 7, False]])
        pid = st.responder_pids[0]
        part_nginx(st, pid)
        part_fcgi(st, pid)
        part_security(st, pid)
        part_auth_example(st)
        st.stop_responders()
        code, log = st.responder_exits[-1]
        ok(code == 0, "the responder stops cleanly on SIGTERM (exit %s)" % code, log[-2000:])
        rep = st.sanitizer_reports()
        ok(not rep, "no sanitizer reports in the responder's whole log", "\n".join(rep[:20]))
    status = done()
    print("# %d failed, %.1fs" % (failed(), time.monotonic() - t0))
    return status


if __name__ == "__main__":
    sys.exit(main())
