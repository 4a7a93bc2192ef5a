#!/usr/bin/env python3
"""multihost.py - two tailgate hosts behind a load balancer, and the clients
that follow them, for the multi-host tests and bench.

A *host* is what one machine of a deployment runs: its own tailgated
(own ring directory, own upstream subscription or replication slots) and
its own nginx + tailgate-fcgi (tests/lib/stack.py) reading that ring
directory.  A Balancer is one more nginx in front of the hosts'
nginx ports, running nginx/balancer.conf.example (docs/HOSTS.md): an
`upstream { server A; server B; }` that round-robins every request (one
client's successive long-polls land on alternate hosts, as behind any
HTTP load balancer).

FeedClient follows one feed with nothing but the HTTP contract
(docs/API.md): a cursor is an opaque string, stored and sent back, never
parsed or compared.  It applies every batch to a multiset of rows and
records what breaks the contract:

  * a deleted row it does not hold (a gap);
  * an inserted row it then holds more often than the feed can (with
    unique=True, the default: every row of the auction feeds carries its
    key, so more than one copy is a duplicate);
  * a batch whose upstream timestamp it already applied since its last
    snapshot (the same batch twice), including the snapshot's own;
  * a malformed reply.

Python (stdlib only):

    import sys; sys.path.insert(0, "tests/lib")
    from multihost import Balancer, Daemon, FeedClient, parse_json, rows_key

    d = Daemon(conf_text, log_path, exe); d.start(); d.kill9(); d.stop()
    lb = Balancer([port_a, port_b], base_dir); lb.start(); lb.port; lb.stop()
    c = FeedClient("winning_bids", [("127.0.0.1", lb.port)])          # long-poll
    c = FeedClient("winning_bids", [a, b])            # alternates on every poll
    c = FeedClient("winning_bids", [a, b], mode="sse", switch_every=3)
    c.start(); c.counts(); c.table(); c.violations; c.gone_log; c.stop()
    stop_clients(clients)             # all at once
    wait_tables(clients, want_of)     # poll until every table is want_of(feed)

    host = start_host(build, tmp, "a", conf_for_ring)   # tailgated + nginx/responder
    host_live(host, feeds); wait_live(host, feeds)
    h = PgHosts(build, src, tmp)      # PostgreSQL + load + hosts a, b + balancer

    try: ...
    except Exception as e:
        report_abort(e, hosts)        # not ok, and each host's tailgated log
    finally:
        teardown(tmp, clients, hosts, then=[srv.stop], keep=KEEP)

Counts (c.counts(), a Counter): polls (long-polls answered), snapshots,
batches, bytes (reply bodies, uncompressed), status_NNN per status,
gone (410s, and SSE streams resumed with Last-Event-ID that restarted
with `event: snapshot`), resynced (snapshots taken after a gone),
errors (network errors), streams (SSE).
"""

import collections
import http.client
import json
import os
import socket
import subprocess
import threading
import time
import shutil
import urllib.parse

from stack import nginx_bin
from tap import ok
from util import free_port, tail, terminate

__all__ = ["Balancer", "Daemon", "FeedClient", "PgHosts", "parse_json", "rows_key",
           "stop_clients", "sum_counts", "wait_tables", "start_host", "feeds_state", "host_live", "wait_live", "stop_hosts",
           "report_abort", "teardown"]

MAX_VIOLATIONS = 50


def parse_json(text):
    """JSON with numbers kept as their text (never re-rounded)."""
    return json.loads(text, parse_int=str, parse_float=str)


def rows_key(row):
    """A row as a hashable key; booleans as PostgreSQL's text (t, f)."""
    return tuple("t" if v is True else "f" if v is False else v for v in row)


def stop_clients(clients):
    """Stop every client at once (their requests in flight cut)."""
    for c in clients:
        c.halt()
    for c in clients:
        if c.is_alive():
            c.join(c.io_timeout + 5)


def sum_counts(clients):
    total = collections.Counter()
    for c in clients:
        total.update(c.counts())
    return total


class Daemon:
    """One tailgated with its configuration file and log."""

    def __init__(self, conf_text, conf_path, log_path, exe):
        self.conf, self.log_path, self.exe = conf_path, log_path, exe
        with open(conf_path, "w") as f:
            f.write(conf_text)
        self.proc = None
        self.starts = 0

    def start(self):
        self.starts += 1
        with open(self.log_path, "a") as log:
            log.write("--- start %d\n" % self.starts)
            log.flush()
            self.proc = subprocess.Popen([self.exe, "-c", self.conf], stdout=log,
                                         stderr=subprocess.STDOUT)

    def kill9(self):
        self.proc.kill()
        self.proc.wait()

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self):
        if self.proc is not None:
            terminate(self.proc)
            return self.proc.returncode
        return None

    def log(self, n=30):
        return tail(self.log_path, n)


# The balancer runs nginx/balancer.conf.example (what docs/HOSTS.md shows)
# as it is, with its example addresses replaced by the hosts' ports and its
# listen line by a private one, inside this main context.
BALANCER_CONF = """\
daemon off;
master_process on;
worker_processes 1;
pid %(prefix)s/nginx.pid;
error_log stderr warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path %(prefix)s/tmp/body;
    proxy_temp_path %(prefix)s/tmp/proxy;
    fastcgi_temp_path %(prefix)s/tmp/fastcgi;
    scgi_temp_path %(prefix)s/tmp/scgi;
    uwsgi_temp_path %(prefix)s/tmp/uwsgi;
    include %(example)s;
}
"""
EXAMPLE_SERVERS = ["    server 10.0.0.11:80 max_fails=0;\n",
                   "    server 10.0.0.12:80 max_fails=0;\n"]
EXAMPLE_LISTEN = "    listen 80;\n"


def balancer_example(src, ports, port):
    """The text of nginx/balancer.conf.example with its two example hosts
    replaced by 127.0.0.1:ports and its listen line by 127.0.0.1:port."""
    with open(os.path.join(src, "nginx", "balancer.conf.example")) as f:
        text = f.read()
    for line in EXAMPLE_SERVERS + [EXAMPLE_LISTEN]:
        if text.count(line) != 1:
            raise RuntimeError("nginx/balancer.conf.example: expected the line %r once"
                               % line.strip())
    servers = "".join("    server 127.0.0.1:%d max_fails=0;\n" % p for p in ports)
    text = text.replace(EXAMPLE_SERVERS[0], servers).replace(EXAMPLE_SERVERS[1], "")
    return text.replace(EXAMPLE_LISTEN, "    listen 127.0.0.1:%d;\n" % port)


class Balancer:
    """An nginx round-robin load balancer in front of host ports."""

    def __init__(self, ports, base_dir, src=None):
        from stack import srcdir
        self.src = src or srcdir()
        self.ports = list(ports)
        self.prefix = os.path.abspath(base_dir)
        self.port = free_port()
        self.proc = None

    def start(self, timeout=20):
        os.makedirs(os.path.join(self.prefix, "tmp"), exist_ok=True)
        os.chmod(self.prefix, 0o755)
        example = os.path.join(self.prefix, "balancer.conf")
        with open(example, "w") as f:
            f.write(balancer_example(self.src, self.ports, self.port))
        conf = os.path.join(self.prefix, "nginx.conf")
        with open(conf, "w") as f:
            f.write(BALANCER_CONF % {"prefix": self.prefix, "example": example})
        self.log_path = os.path.join(self.prefix, "nginx.log")
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([nginx_bin(), "-p", self.prefix, "-c", conf, "-e",
                                          "stderr"], stdout=log, stderr=log,
                                         stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("balancer nginx exited: %s" % tail(self.log_path))
            try:
                c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                c.request("GET", "/healthz")
                if c.getresponse().status == 200:
                    c.close()
                    return self
                c.close()
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError("balancer not ready: %s" % tail(self.log_path))

    def stop(self):
        if self.proc is not None:
            terminate(self.proc)
            self.proc = None


class _Gone(Exception):
    pass


class _Retry(Exception):
    pass


class FeedClient(threading.Thread):
    """One client following one feed over HTTP; see the module docstring.

    targets: [(host, port)], request i goes to targets[i % len(targets)].
    mode: "longpoll" or "sse" (an SSE stream is closed after switch_every
    batches and resumed on the next target with Last-Event-ID)."""

    def __init__(self, feed, targets, mode="longpoll", name=None, poll_timeout=5,
                 switch_every=3, unique=True):
        super().__init__(name=name or "%s-%s" % (feed, mode), daemon=True)
        self.feed, self.targets, self.mode = feed, list(targets), mode
        self.poll_timeout, self.switch_every, self.unique = poll_timeout, switch_every, unique
        self.io_timeout = poll_timeout + 20
        self._lock = threading.Lock()
        self._halt = threading.Event()
        self._conns = {}
        self._turn = 0
        self._table = collections.Counter()
        self._seen = set()          # batch timestamps applied since the snapshot
        self.cursor = None          # opaque: sent back as received
        self._need_snapshot = True
        self._after_gone = False
        self._stats = collections.Counter()
        self.violations = []
        self.gone_log = []          # (monotonic time, target, cursor, message)
        self.last_error = None

    # ---- control and state (any thread) ----

    def halt(self):
        """Stop asking: the request or stream in flight is cut."""
        self._halt.set()
        for c in list(self._conns.values()):
            if c.sock is not None:
                try:
                    c.sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def stop(self):
        self.halt()
        if self.is_alive():
            self.join(self.io_timeout + 5)

    def counts(self):
        with self._lock:
            return collections.Counter(self._stats)

    def table(self):
        with self._lock:
            return collections.Counter(self._table)

    def _violate(self, msg):
        with self._lock:
            self._stats["violations"] += 1
            if len(self.violations) < MAX_VIOLATIONS:
                self.violations.append("%s: %s" % (self.name, msg))

    # ---- applying ----

    def _snapshot_batch(self, batch):
        if batch.get("deleted"):
            self._violate("a snapshot with deleted rows")
        new = collections.Counter(rows_key(r) for r in batch.get("inserted", []))
        with self._lock:
            self._table = new
            self._seen = {batch.get("timestamp")}
            self._stats["snapshots"] += 1
            if self._after_gone:
                self._stats["resynced"] += 1
                self._after_gone = False
        if self.unique:
            many = [k for k, n in new.items() if n > 1]
            if many:
                self._violate("the snapshot holds %d rows more than once: %.200r"
                              % (len(many), many[:3]))

    def _apply(self, batch):
        ts = batch.get("timestamp")
        if not isinstance(ts, str):
            self._violate("a batch without a timestamp: %.200r" % (batch,))
            return
        problems = []
        with self._lock:
            if ts in self._seen:
                problems.append("batch %s applied twice (a duplicate)" % ts)
            else:
                self._seen.add(ts)
                t = self._table
                for r in batch.get("deleted", []):
                    k = rows_key(r)
                    if t[k] <= 0:
                        problems.append("batch %s deletes a row not held (a gap): %.200r"
                                        % (ts, k))
                        del t[k]
                    else:
                        t[k] -= 1
                        if t[k] == 0:
                            del t[k]
                for r in batch.get("inserted", []):
                    k = rows_key(r)
                    t[k] += 1
                    if self.unique and t[k] > 1:
                        problems.append("batch %s inserts a row already held (a duplicate): "
                                        "%.200r" % (ts, k))
                self._stats["batches"] += 1
        for p in problems:
            self._violate(p)

    # ---- HTTP ----

    def _next_target(self):
        t = self.targets[self._turn % len(self.targets)]
        self._turn += 1
        return t

    def _conn(self, target):
        c = self._conns.get(target)
        if c is None:
            c = self._conns[target] = http.client.HTTPConnection(target[0], target[1],
                                                                 timeout=self.io_timeout)
        return c

    def _drop(self, target):
        c = self._conns.pop(target, None)
        if c is not None:
            c.close()

    def _get(self, path, headers=None, stream=False):
        """(target, response); the body is read unless stream."""
        target = self._next_target()
        try:
            c = self._conn(target)
            c.request("GET", path, headers=headers or {})
            r = c.getresponse()
            body = None if stream else r.read()
        except (OSError, http.client.HTTPException) as e:
            self._drop(target)
            raise _Retry("%s %s: %s: %s" % (target, path, type(e).__name__, e))
        with self._lock:
            self._stats["status_%d" % r.status] += 1
            if body is not None:
                self._stats["bytes"] += len(body)
        if stream:
            return target, r, None
        if r.getheader("Connection", "").lower() == "close":
            self._drop(target)
        return target, r, body

    def _status(self, target, r, body, asked):
        if r.status == 410:
            try:
                msg = parse_json(body).get("message")
            except (ValueError, AttributeError):
                msg = None
                self._violate("a 410 without a JSON error body: %.200r" % body)
            self.gone_log.append((time.monotonic(), target, asked, msg))
            raise _Gone()
        if r.status != 200:
            raise _Retry("%s: HTTP %d: %.200r" % (target, r.status, body))

    def run(self):
        try:
            self._loop()
        except Exception as e:  # a bug here must fail the test, not vanish
            self._violate("client crashed: %s: %s" % (type(e).__name__, e))
            raise

    def _loop(self):
        delay = 0.05
        while not self._halt.is_set():
            try:
                if self.mode == "sse":
                    self._sse()
                elif self._need_snapshot:
                    self._take_snapshot()
                else:
                    self._poll()
                delay = 0.05
            except _Gone:
                with self._lock:
                    self._stats["gone"] += 1
                self._after_gone = True
                self._need_snapshot = True
            except _Retry as e:
                if self._halt.is_set():
                    break
                self.last_error = str(e)
                with self._lock:
                    self._stats["errors"] += 1
                self._halt.wait(delay)
                delay = min(delay * 2, 1.0)
        for t in list(self._conns):
            self._drop(t)

    def _take_snapshot(self):
        target, r, body = self._get("/feeds/%s" % self.feed)
        self._status(target, r, body, None)
        try:
            obj = parse_json(body)
            batches = obj["batches"]
            cursor = obj["cursor"]
        except (ValueError, KeyError, TypeError):
            self._violate("a malformed snapshot reply: %.200r" % body)
            raise _Retry("malformed")
        if not batches or not isinstance(cursor, str):
            self._violate("a snapshot reply without its snapshot or cursor: %.200r" % body)
            raise _Retry("malformed")
        self._snapshot_batch(batches[0])
        for b in batches[1:]:
            self._apply(b)
        self.cursor = cursor
        self._need_snapshot = False

    def _poll(self):
        asked = self.cursor
        target, r, body = self._get("/feeds/%s?cursor=%s&timeout=%d" % (
            self.feed, urllib.parse.quote(asked, safe=""), self.poll_timeout))
        self._status(target, r, body, asked)
        try:
            obj = parse_json(body)
            batches = obj["batches"]
            cursor = obj["cursor"]
        except (ValueError, KeyError, TypeError):
            self._violate("a malformed long-poll reply: %.200r" % body)
            raise _Retry("malformed")
        if not isinstance(cursor, str):
            self._violate("a reply without a string cursor: %.200r" % body)
            raise _Retry("malformed")
        for b in batches:
            self._apply(b)
        self.cursor = cursor
        with self._lock:
            self._stats["polls"] += 1

    def _sse(self):
        headers = {"Accept": "text/event-stream"}
        resuming = self.cursor is not None
        if resuming:
            headers["Last-Event-ID"] = self.cursor
        target, r, _ = self._get("/feeds/%s" % self.feed, headers, stream=True)
        if r.status != 200:
            try:
                body = r.read()
            except (OSError, http.client.HTTPException):
                body = b""
            self._drop(target)
            raise _Retry("%s: HTTP %d: %.200r" % (target, r.status, body))
        with self._lock:
            self._stats["streams"] += 1
        n = 0
        event, ident, data = None, None, []
        first = True
        try:
            while not self._halt.is_set():
                line = r.readline()
                if not line:
                    raise _Retry("%s: the stream ended" % (target,))
                with self._lock:
                    self._stats["bytes"] += len(line)
                line = line.decode("utf-8").rstrip("\r\n")
                if line.startswith(":"):
                    continue
                if line:
                    field, _, value = line.partition(":")
                    value = value[1:] if value.startswith(" ") else value
                    if field == "event":
                        event = value
                    elif field == "id":
                        ident = value
                    elif field == "data":
                        data.append(value)
                    continue
                if not data:
                    event, ident, data = None, None, []
                    continue
                try:
                    batch = parse_json("\n".join(data))
                except ValueError:
                    self._violate("an SSE event that is not JSON: %.200r" % data)
                    raise _Retry("bad event")
                if event == "snapshot":
                    if resuming and first:
                        # An EventSource cannot follow a 410: the stream
                        # restarts in-band.
                        with self._lock:
                            self._stats["gone"] += 1
                        self.gone_log.append((time.monotonic(), target, self.cursor,
                                              "SSE: event: snapshot after Last-Event-ID"))
                        self._after_gone = True
                    elif not first:
                        self._violate("event: snapshot in the middle of a stream")
                    self._snapshot_batch(batch)
                elif event is None:
                    if first and not resuming:
                        self._violate("a new stream that does not begin with a snapshot")
                    self._apply(batch)
                    n += 1
                else:
                    self._violate("unknown SSE event %r" % event)
                if ident is None:
                    self._violate("an SSE event without an id")
                else:
                    self.cursor = ident
                first = False
                event, ident, data = None, None, []
                if n >= self.switch_every:
                    break    # resume on the next host
        except (OSError, http.client.HTTPException, UnicodeDecodeError) as e:
            raise _Retry("%s: stream: %s: %s" % (target, type(e).__name__, e))
        finally:
            self._drop(target)


def wait_tables(clients, want_of, timeout=60, step=0.25):
    """Poll until every client's table equals want_of(feed) (the database's
    rows, as rows_key tuples); [] or a list of (client, why) still unequal
    at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        want = {}
        bad = []
        for c in clients:
            if c.feed not in want:
                want[c.feed] = want_of(c.feed)
            got = c.table()
            if got != want[c.feed]:
                missing = list((want[c.feed] - got).items())[:3]
                extra = list((got - want[c.feed]).items())[:3]
                bad.append((c, "%d rows, want %d; missing %s; extra %s; last error %s" % (
                    sum(got.values()), sum(want[c.feed].values()), missing, extra,
                    c.last_error)))
        if not bad or time.monotonic() > deadline:
            return bad
        time.sleep(step)


# ---- hosts ------------------------------------------------------------------------

def start_host(build, tmp, name, conf_for_ring):
    """Start a host in tmp/name: its tailgated (configuration
    conf_for_ring(ring_dir)) and its nginx + responder on that ring
    directory.  {"daemon": Daemon, "stack": Stack, "target": (host, port),
    "ring": ring_dir}."""
    from stack import Stack
    d = os.path.join(tmp, name)
    ring = os.path.join(d, "ring")
    os.makedirs(ring)
    for p in (tmp, d, ring):
        os.chmod(p, 0o755)   # nginx's workers and PostgreSQL run as other users
    daemon = Daemon(conf_for_ring(ring), os.path.join(d, "tailgated.conf"),
                    os.path.join(d, "tailgated.log"), os.path.join(build, "tailgated"))
    daemon.start()
    st = Stack(responders=1, ring_dir=ring, base_dir=os.path.join(d, "stack"), keep=True,
               responder_args=["--sse-keepalive", "5"])
    st.start()
    return {"name": name, "daemon": daemon, "stack": st, "target": ("127.0.0.1", st.port),
            "ring": ring}


def stop_hosts(hosts):
    """Stop each host ({name: host}): its nginx + responder, then its tailgated."""
    for h in hosts.values():
        h["stack"].stop()
        h["daemon"].stop()


def feeds_state(host):
    """{feed: its /feeds entry} on one host, {} when the host does not answer."""
    try:
        status, obj = host["stack"].get_json("/feeds", timeout=10)
    except (OSError, RuntimeError, ValueError):
        return {}
    if status != 200:
        return {}
    return {f["name"]: f for f in obj.get("feeds", [])}


def host_live(host, feeds):
    states = feeds_state(host)
    return all(states.get(f, {}).get("state") == "live" for f in feeds)


def wait_live(host, feeds, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if host_live(host, feeds):
            return True
        time.sleep(0.1)
    return False


# ---- two hosts on one PostgreSQL ------------------------------------------------

AUCTION_FEEDS = ["winning_bids", "highest_bid_per_auction", "top_buyers", "auction_stats"]


class PgHosts:
    """A private PostgreSQL with the auction house under tailgate-loadgen,
    and two hosts "a" and "b" (each its tailgated with its own replication
    slots, its nginx + responder) behind a Balancer.

    permanent: {"a": True, "b": False} - the hosts' slot kinds.
    h.hosts["a"] = {"daemon": Daemon, "stack": Stack, "target": (host, port)}
    h.start(); h.wait_live(); h.db_rows(feed); h.stop()"""

    def __init__(self, build, src, tmp, feeds=AUCTION_FEEDS, permanent=None, rate="200",
                 ring_size=None):
        from pg import PgCluster
        self.build, self.src, self.tmp = build, src, tmp
        self.feeds = list(feeds)
        self.permanent = permanent or {"a": True, "b": False}
        self.rate = rate
        self.ring_size = ring_size
        self.pg = PgCluster(base_dir=os.path.join(tmp, "pg"), keep=True)
        self.hosts = {}
        self.load = None
        self.balancer = None
        self._cols = {}

    def _conf(self, name, ring_dir):
        text = ("source = postgresql\nconninfo = %s\nring_dir = %s\n"
                "backoff_min_ms = 50\nbackoff_max_ms = 500\n\n" % (self.pg.dsn, ring_dir))
        for feed in self.feeds:
            text += "[feed %s]\ntable = %s\nslot = mh_%s_%s\npermanent_slot = %s\n" % (
                feed, feed, name, feed, "yes" if self.permanent[name] else "no")
            if self.ring_size:
                text += "ring_size = %s\n" % self.ring_size
            text += "\n"
        return text

    def start(self):
        os.chmod(self.tmp, 0o755)   # the server runs as postgres when we are root
        self.pg.start()
        self.pg.psql(file=os.path.join(self.src, "sql", "auction_house.sql"))
        self.start_load()
        for name in sorted(self.permanent):
            self.hosts[name] = start_host(self.build, self.tmp, name,
                                          lambda ring, n=name: self._conf(n, ring))
        self.balancer = Balancer([h["stack"].port for _, h in sorted(self.hosts.items())],
                                 os.path.join(self.tmp, "balancer"), self.src).start()
        return self

    def start_load(self):
        with open(os.path.join(self.tmp, "loadgen.log"), "ab") as log:
            self.load = subprocess.Popen([os.path.join(self.build, "tailgate-loadgen"), "-d",
                                          self.pg.dsn, "-r", self.rate, "--report", "0",
                                          "--seed", "7"], stdout=log, stderr=subprocess.STDOUT)

    def stop_load(self):
        """Stop writing (SIGTERM: the load generator finishes its tick)."""
        if self.load is not None:
            terminate(self.load)

    def live(self, name):
        return host_live(self.hosts[name], self.feeds)

    def wait_live(self, name, timeout=60):
        return wait_live(self.hosts[name], self.feeds, timeout)

    def db_rows(self, feed):
        if feed not in self._cols:
            self._cols[feed] = self.pg.psql(
                "SELECT string_agg(quote_ident(column_name) || '::text', ', ' "
                "ORDER BY ordinal_position) FROM information_schema.columns "
                "WHERE table_name = '%s'" % feed)
        out = self.pg.psql("SELECT coalesce(json_agg(json_build_array(%s)), '[]') FROM %s"
                           % (self._cols[feed], feed))
        return collections.Counter(rows_key(r) for r in parse_json(out))

    def stop(self):
        if self.load is not None and self.load.poll() is None:
            terminate(self.load)
        if self.balancer is not None:
            self.balancer.stop()
        stop_hosts(self.hosts)
        self.pg.cleanup()


# ---- the end of a test --------------------------------------------------------------

def report_abort(e, hosts):
    """A test's `except Exception as e`: fail with what aborted it, and show
    each host's tailgated log (hosts: {name: host})."""
    ok(False, "test aborted: %s: %s" % (type(e).__name__, e))
    for name, h in hosts.items():
        print("# tailgated %s log:\n# %s" % (name, h["daemon"].log().replace("\n", "\n# ")),
              flush=True)


def teardown(tmp, clients=(), hosts=None, then=(), keep=False):
    """A test's `finally`, whatever happened: stop the clients, then each
    host (stop_hosts), then call each of then in order (None entries, for
    what was never started, are passed over), and remove tmp unless keep."""
    stop_clients(clients)
    stop_hosts(hosts or {})
    for stop in then:
        if stop is not None:
            stop()
    if keep:
        print("# kept " + tmp, flush=True)
    else:
        shutil.rmtree(tmp, ignore_errors=True)
