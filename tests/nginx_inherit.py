#!/usr/bin/env python3
"""nginx_inherit.py - nginx/tailgate.conf dropped into an existing server.

A location inherits every directive its server {} and http {} blocks set
and it does not set itself.  Operators include the snippet into configs
that already serve PHP sites, sit behind CDNs or come from hardened
templates; this test starts a real PostgreSQL, tailgated, tailgate-fcgi and
nginx, then restarts nginx with such settings around the snippet, one
group at a time (tests/lib/stack.py: nginx_http, nginx_server), and checks
docs/API.md's contract through it each time:

  * errors: 400, 404, 405, 410 and 503 arrive with their JSON body,
    application/json and no-store (not an operator's error page);
  * a snapshot says no-store and is fresh after a commit (never replayed
    from a cache); an empty long-poll says no-store;
  * a long-poll parks (the responder's parked gauge) and a commit wakes it;
    its batches say exactly the responder's Cache-Control, no Expires;
  * the Accept header separates SSE from JSON on the same URL;
  * SSE: text/event-stream, not compressed to a gzip client, no-store,
    and a commit's event arrives within EVENT_BOUND seconds;
  * a plain JSON reply nginx compresses keeps the connection open;
  * bodies are passed as the responder wrote them (SSI markup in a row).

Each hostile group (hostile() below) names the snippet line that undoes
it.  Without its line, the PHP cache, expires, gzip_types, ssi, charset,
chunked_transfer_encoding and read-timeout groups fail here; the
intercept_errors group passes even then (the snippet's own error_page
already keeps the server's error pages out), and fastcgi_next_upstream
only matters with several upstream servers.
Last, the snippet's optional catch-up cache, enabled on purpose under a
PHP cache's http settings: live replies are still not cached, batches
are, and SSE is never answered from it.

TAP output.
"""
import http.client
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time

top_srcdir = os.environ.get("top_srcdir", ".")
sys.path.insert(0, os.path.join(top_srcdir, "tests", "lib"))
sys.path.insert(0, os.path.join(top_srcdir, "tests"))
from pg import skip_unless_pg  # noqa: E402
from tap import done, ok, wait_for  # noqa: E402
from stack import nginx_bin  # noqa: E402
from env import test_env  # noqa: E402
from daemon_pg import TAILGATED, Daemon  # noqa: E402
import contract_pg as C  # noqa: E402  (req, Sse, is_error: plain HTTP clients)

# Seconds from a commit to its SSE event (and to a parked long-poll's
# reply); the daemon's path from PostgreSQL to the ring is well under it.
EVENT_BOUND = 3.0

# SSI markup in a row: an `ssi on; ssi_types *;` server would execute it.
SSI_TEXT = '<!--#echo var="host" -->'


def has_sub_module():
    r = subprocess.run([nginx_bin(), "-V"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True)
    return "http_sub_module" in r.stdout


def hostile(prefix, errdir):
    """(name, http {} text, server {} text, the snippet line that guards)."""
    sub = ("sub_filter '\"cursor\"' '\"rewritten\"'; sub_filter_once off;"
           if has_sub_module() else "")
    return [
        ("a PHP site's fastcgi_cache",
         "fastcgi_cache_path %s/phpcache keys_zone=php:1m;\n"
         "fastcgi_cache php;\n"
         'fastcgi_cache_key "$scheme$request_method$host$request_uri";\n'
         "fastcgi_cache_valid 200 10m;\n"
         "fastcgi_cache_valid any 1m;\n"
         "fastcgi_ignore_headers Cache-Control Expires Set-Cookie;\n" % prefix,
         "add_header X-Php-Cache $upstream_cache_status always;",
         "fastcgi_cache off; fastcgi_ignore_headers X-Accel-Redirect;"),
        ("fastcgi_intercept_errors and an error page",
         "", "fastcgi_intercept_errors on;\n"
         "error_page 400 404 405 410 500 502 503 /err.html;\n"
         "location = /err.html { root %s; }" % errdir,
         "fastcgi_intercept_errors off;"),
        ("expires 1h", "", "expires 1h;", "expires off;"),
        ("gzip of event-stream and JSON",
         "gzip on; gzip_types text/event-stream application/json; gzip_min_length 1;\n"
         "gzip_proxied any;", "gzip on;", "gzip_types application/json;"),
        ("FastCGI buffering and timeouts",
         "fastcgi_buffering off; fastcgi_buffers 4 4k; fastcgi_buffer_size 4k;\n"
         "fastcgi_read_timeout 10s; fastcgi_send_timeout 10s;\n"
         "fastcgi_next_upstream error timeout http_500 http_503;", "",
         "fastcgi_read_timeout 60s; fastcgi_next_upstream error timeout;"),
        ("security add_header", "",
         "add_header X-Frame-Options DENY;\n"
         "add_header X-Content-Type-Options nosniff always;\n"
         'add_header Strict-Transport-Security "max-age=31536000" always;',
         "(inherited on purpose)"),
        ("ssi, sub_filter, charset, chunking, keepalive, etag",
         "", "ssi on; ssi_types *;\n%s\n"
         "charset utf-8; charset_types *;\n"
         "chunked_transfer_encoding off;\n"
         "keepalive_timeout 5s;\n"
         "etag on; if_modified_since before;" % sub,
         "ssi off; charset off; chunked_transfer_encoding on;"),
    ]


class Checker:
    def __init__(self, pg, st):
        self.pg, self.st = pg, st
        self.next_id = 100
        self.base = {}  # what the plain config answers (Content-Types)

    def insert(self):
        self.next_id += 1
        self.pg.psql("INSERT INTO t VALUES (%d, 'row %d')" % (self.next_id, self.next_id))
        return self.next_id

    def parked(self):
        r = C.req("/metrics")
        m = re.search(rb"^tailgate_parked_requests (\d+)", r.body, re.M)
        return int(m.group(1)) if m else 0

    def errors(self, tag):
        for status, path, code, kw in ((404, "/feeds/nosuch", "unknown_feed", {}),
                                       (400, "/feeds/t?cursor=zzz", "bad_parameter", {}),
                                       (410, "/feeds/t?cursor=5&timeout=0", "cursor_gone", {}),
                                       (503, "/feeds/starting", "feed_not_live", {}),
                                       (405, "/feeds/t", "method_not_allowed",
                                        {"method": "DELETE"})):
            r = C.req(path, **kw)
            ct = self.base.setdefault("error", r.h("content-type"))
            ok(C.is_error(r, status, code) and r.h("content-type") == ct
               and r.h("expires") is None,
               "%s: %d %s with its JSON body, %s, no-store" % (tag, status, code, ct), r)

    def snapshot(self, tag):
        r = C.req("/feeds/t", {"Accept-Encoding": "gzip"})
        obj = r.json() or {}
        ct = self.base.setdefault("json", r.h("content-type"))
        ok(r.status == 200 and "cursor" in obj and r.h("cache-control") == "no-store"
           and r.count("cache-control") == 1 and r.h("expires") is None
           and r.h("content-type") == ct and r.h("x-php-cache") is None,
           "%s: a snapshot, %s, says no-store only (no Expires), not from a cache" % (tag, ct), r)
        # Fresh after a commit: never a stored snapshot.
        new = self.insert()
        r2 = wait_for(lambda: (lambda x: x if ("row %d" % new) in str(x.json()) else None)(
            C.req("/feeds/t")), timeout=10)
        ok(r2 is not None and r2.h("x-php-cache") is None,
           "%s: the snapshot after a commit holds the new row (not replayed)" % tag,
           C.req("/feeds/t"))
        # Uncompressed (nginx's body filters skip a gzip reply).
        ok(r2 is not None and SSI_TEXT in str(r2.json()),
           "%s: the snapshot's rows as the responder wrote them (SSI markup untouched)" % tag,
           r2.body[:400] if r2 is not None else None)
        return (r2.json() if r2 is not None else obj)["cursor"]

    def longpoll(self, tag, cursor):
        # Nothing after the cursor: an empty reply at the timeout, no-store.
        r = C.req("/feeds/t?cursor=%s&timeout=1" % cursor)
        obj = r.json() or {}
        ok(r.status == 200 and obj.get("batches") == [] and r.h("cache-control") == "no-store"
           and r.h("expires") is None and r.h("x-php-cache") is None,
           "%s: an empty long-poll says no-store, not from a cache" % tag, r)
        # Parked, then woken by a commit.
        got = {}
        path = "/feeds/t?cursor=%s&timeout=20" % cursor
        th = threading.Thread(target=lambda: got.update(r=C.req(path)))
        th.start()
        parked = wait_for(lambda: self.parked() >= 1, timeout=10, step=0.05)
        t0 = time.monotonic()
        new = self.insert()
        th.join(30)
        r = got.get("r")
        took = time.monotonic() - t0
        ok(parked and r is not None and r.status == 200 and ("row %d" % new) in str(r.json())
           and took < EVENT_BOUND,
           "%s: a long-poll parks and a commit wakes it (%.2fs)" % (tag, took), r)
        cc = self.base.setdefault("batches_cc", r.h("cache-control") if r else None)
        ok(r is not None and r.h("cache-control") == cc and r.count("cache-control") == 1
           and r.h("expires") is None and r.h("x-php-cache") is None,
           "%s: its batches say the responder's Cache-Control only (%s)" % (tag, cc), r)
        # The same URL as JSON again, then as SSE: Accept decides.
        C.req(path)
        s = C.Sse(path, {"Accept": "text/event-stream"})
        ok(s.status == 200 and s.headers.get("content-type", "").startswith("text/event-stream")
           and "x-php-cache" not in s.headers,
           "%s: SSE on a URL just answered as JSON is SSE (Accept separates them)" % tag,
           s.headers)
        s.close()

    def sse(self, tag):
        """An SSE stream over HTTP/1.1 from a gzip client (nginx compresses
        only HTTP/1.1 requests by default: gzip_http_version), read as raw
        bytes: a compressed or held-back event never shows its row."""
        s = socket.create_connection(("127.0.0.1", self.st.port), timeout=10)
        try:
            s.sendall(b"GET /feeds/t HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n"
                      b"Accept-Encoding: gzip\r\n\r\n")
            buf = b""
            while b"\r\n\r\n" not in buf:
                b = s.recv(65536)
                if not b:
                    break
                buf += b
            raw, _, buf = buf.partition(b"\r\n\r\n")
            lines = raw.decode("latin-1").split("\r\n")
            head = {k.strip().lower(): v.strip()
                    for k, _, v in (line.partition(":") for line in lines[1:])}
            ok(lines[0].split()[1:2] == ["200"]
               and head.get("content-type", "").startswith("text/event-stream")
               and "content-encoding" not in head and head.get("cache-control") == "no-store"
               and "expires" not in head,
               "%s: SSE to a gzip client: text/event-stream, uncompressed, no-store" % tag, raw)
            new = self.insert()
            t0 = time.monotonic()
            want = ("row %d" % new).encode()
            while want not in buf and time.monotonic() - t0 < EVENT_BOUND:
                s.settimeout(max(0.01, t0 + EVENT_BOUND - time.monotonic()))
                try:
                    b = s.recv(65536)
                except (socket.timeout, TimeoutError):
                    break
                if not b:
                    break
                buf += b
            took = time.monotonic() - t0
            ok(want in buf and took < EVENT_BOUND,
               "%s: a commit's SSE event arrives within %.0fs (%.2fs)" % (tag, EVENT_BOUND, took),
               buf[-300:])
        finally:
            s.close()

    def keepalive(self, tag):
        """A JSON reply nginx compresses (no Content-Length) over HTTP/1.1
        leaves the connection open for the next request."""
        c = http.client.HTTPConnection("127.0.0.1", self.st.port, timeout=10)
        try:
            c.request("GET", "/feeds", headers={"Accept-Encoding": "gzip"})
            r1 = c.getresponse()
            r1.read()
            closes = r1.will_close
            c.request("GET", "/healthz")
            r2 = c.getresponse()
            r2.read()
            ok(r1.status == 200 and not closes and r2.status == 200,
               "%s: a reply nginx compresses keeps the connection (chunked)" % tag,
               r1.getheaders())
        finally:
            c.close()

    def conditional(self, tag):
        r = C.req("/feeds/t", {"If-Modified-Since": "Mon, 01 Jan 2035 00:00:00 GMT",
                               "If-None-Match": "*"})
        ok(r.status == 200 and (r.json() or {}).get("cursor"),
           "%s: a snapshot with If-Modified-Since/If-None-Match is still 200" % tag, r)

    def all(self, tag):
        self.errors(tag)
        cursor = self.snapshot(tag)
        self.longpoll(tag, cursor)
        self.sse(tag)
        self.keepalive(tag)
        self.conditional(tag)


def main():
    skip = skip_unless_pg(TAILGATED)
    if skip is not None:
        return skip
    with test_env("inherit", start_stack=False) as env:
        pg, st = env.pg, env.st
        pg.psql("""CREATE TABLE t (id int8 PRIMARY KEY, v text);
                   ALTER TABLE t REPLICA IDENTITY FULL;
                   INSERT INTO t VALUES (1, '%s');""" % SSI_TEXT.replace("'", "''"))
        st.start()
        C.PORT = st.port
        starting = st.ringfeed("starting", [("id", "int8")], starting=True)
        env.at_end(starting.quit)
        d = env.stop_later(Daemon(pg, env.ring_dir, {"t": {"table": "t"}}))
        d.start()
        wait_for(lambda: C.req("/feeds/t").status == 200, 30)
        errdir = tempfile.mkdtemp(dir=env.tmp)
        os.chmod(errdir, 0o755)
        with open(os.path.join(errdir, "err.html"), "w") as f:
            f.write("<html>the site's error page</html>\n")
        os.chmod(os.path.join(errdir, "err.html"), 0o644)
        chk = Checker(pg, st)
        chk.all("plain server")
        for name, http_text, server_text, guard in hostile(st.prefix, errdir):
            st.nginx_http, st.nginx_server = http_text, server_text
            st.restart_nginx()
            print("# %s: guarded by %s" % (name, guard), flush=True)
            chk.all(name)
            if name == "FastCGI buffering and timeouts":
                r = C.req("/feeds/t?cursor=%s&timeout=12" % C.req("/feeds/t").json()["cursor"])
                ok(r.status == 200 and (r.json() or {}).get("batches") == [],
                   "%s: a 12 s long-poll outlives an inherited 10 s read timeout" % name, r)
            if name == "security add_header":
                r = C.req("/feeds/t")
                e = C.req("/feeds/nosuch")
                ok(r.h("x-frame-options") == "DENY" and r.h("x-content-type-options") == "nosniff"
                   and e.h("x-content-type-options") == "nosniff"
                   and r.h("strict-transport-security") is not None,
                   "%s: the server's headers reach the responder's replies" % name, (r, e))

        # The optional catch-up cache, on purpose, under the same PHP
        # cache's http settings (its fastcgi_ignore_headers included).
        php = hostile(st.prefix, errdir)[0]
        st.cache, st.nginx_http, st.nginx_server = True, php[1], ""
        st.restart_nginx()
        tag = "the snippet's cache under a PHP cache"
        a, b = C.req("/feeds/t"), C.req("/feeds/t")
        ok(a.h("x-cache-status") != "HIT" and b.h("x-cache-status") != "HIT"
           and b.h("cache-control") == "no-store",
           "%s: snapshots are never stored (no-store obeyed)" % tag, (a, b))
        cursor = b.json()["cursor"]
        new = chk.insert()
        path = "/feeds/t?cursor=%s&timeout=20" % cursor
        first = C.req(path)
        again = C.req(path)
        ok("row %d" % new in str(first.json()) and again.h("x-cache-status") == "HIT"
           and again.json() == first.json(),
           "%s: a reply with batches is stored and served again (HIT)" % tag, (first, again))
        s = C.Sse(path, {"Accept": "text/event-stream"})
        ok(s.status == 200 and s.headers.get("content-type", "").startswith("text/event-stream"),
           "%s: SSE on that URL is SSE, not the stored JSON" % tag, s.headers)
        s.close()
        chk.sse(tag)
    return done()


if __name__ == "__main__":
    sys.exit(main())
