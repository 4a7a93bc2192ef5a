#!/usr/bin/env python3
"""chaos_pg.py - faults on the PostgreSQL side of tailgate, with followers checking.

A private PostgreSQL (tests/lib/pg.py) with sql/auction_house.sql;
tailgated streaming winning_bids (default ring) and highest_bid_per_auction
(a 128 KiB ring, so that it laps) with permanent slots; tailgate-loadgen
writing at TAILGATE_CHAOS_RATE bids/s (default 200: ten transactions a
second); nginx and two tailgate-fcgi processes (tests/lib/stack.py).
Thirty followers (tests/chaos/follower.py: 20 long-poll, 10 SSE, over both
feeds) follow through nginx the whole time.

Faults, each injected while the load runs, each followed by a check:

  1. kill -9 the daemon mid-stream, three times at random moments,
     restarting it each time
  2. kill -9 one responder of two (the other keeps serving), restart it
  3. nginx reload (SIGHUP), then nginx restart (stop, start)
  4. PostgreSQL restart (fast shutdown), then a crash (immediate stop) and
     recovery
  5. clients that disconnect mid-response, slow-loris clients (SSE streams
     and snapshots never read, a request header sent a byte at a time),
     then TAILGATE_CHAOS_PARKED (default 10,000) parked long-polls that all
     vanish at once: the responders answer /healthz and a long-poll after
     it, and their descriptors, threads and RSS return near baseline
  6. the ring lapping two paused followers: on resume they get a 410 (the
     SSE one an in-band snapshot) and recover

A check pauses the load generator (SIGSTOP), waits until every process
is back (nginx, both responders, the daemon answer; /healthz 200; every
feed live in /feeds), until every follower's cursor is its feed's head
and its table equals the database's view (at that cursor, since nothing
writes), reports the comparison of every batch each follower applied
with what the ring holds after the follower's previous cursor (done every
second in the background too, before the small ring laps: tailgate-ring
dump; no batch skipped, doubled or altered, and a net batch given to a
follower far behind equal to the net effect of the ring's batches it
stands for: follower.compare_record), collects what the followers
saw on the way (a batch twice, a cursor going backwards, a row deleted
that was not held), and resumes the load.

TAP output; the counts (faults, follower checks, batches verified) as
comments at the end.  Environment: top_builddir, top_srcdir (automake),
TAILGATE_BUILDDIR, TAILGATE_CHAOS_RATE, TAILGATE_CHAOS_PARKED,
TAILGATE_CHAOS_KEEP=1 (keep the logs' directory).  Skips (77) without
PostgreSQL or nginx.
"""
import collections
import json
import os
import random
import re
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

top_srcdir = os.environ.get("top_srcdir", os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(top_srcdir, "tests", "lib"))
sys.path.insert(0, os.path.join(top_srcdir, "tests", "chaos"))
from pg import PgCluster, PgError, pg_bindir  # noqa: E402
from stack import Stack, StackError, builddir, nginx_bin  # noqa: E402
from follower import Follower, parse_json, rows_key, verify_with_ring  # noqa: E402
from tap import done, ok, wait_for  # noqa: E402
from util import sanitizer_reports, tail  # noqa: E402

RATE = os.environ.get("TAILGATE_CHAOS_RATE", "200")
PARKED = int(os.environ.get("TAILGATE_CHAOS_PARKED", "10000"))
KEEP = os.environ.get("TAILGATE_CHAOS_KEEP") == "1"

AUCTION_COLS = ("auction_id, bid_id, buyer, seller, item, amount, bid_time::text, "
                "end_time::text")
FEEDS = {
    # name: (table, ring_size or None)
    "winning_bids": ("winning_bids", None),
    "highest_bid_per_auction": ("highest_bid_per_auction", "128K"),
}
SMALL = "highest_bid_per_auction"
SSE_KEEPALIVE = 5
# (feed, long-poll followers, SSE followers)
LAYOUT = [("winning_bids", 12, 6), (SMALL, 8, 4)]

T0 = time.monotonic()


def sanitized():
    """Which sanitizer the responder was built with: "AddressSanitizer",
    "ThreadSanitizer" or None."""
    try:
        with open(os.path.join(builddir(), "tailgate-fcgi"), "rb") as f:
            exe = f.read()
    except OSError:
        return None
    if b"__asan_init" in exe:
        return "AddressSanitizer"
    return "ThreadSanitizer" if b"__tsan_init" in exe else None


def note(msg):
    print("# [%5.1fs] %s" % (time.monotonic() - T0, msg), flush=True)


def proc_stats(pid):
    """(descriptors, threads, RSS kB) of a process, from /proc."""
    fds = len(os.listdir("/proc/%d/fd" % pid))
    threads = rss = 0
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("Threads:"):
                threads = int(line.split()[1])
            elif line.startswith("VmRSS:"):
                rss = int(line.split()[1])
    return fds, threads, rss


class ProbeThread(threading.Thread):
    """Long-polls at the head, one after another: how long each waits for
    the next batch (ten a second while the load runs)."""

    def __init__(self, st, feed="winning_bids"):
        super().__init__(daemon=True)
        self.st, self.feed = st, feed
        self.n, self.worst, self.errors, self.times = 0, 0.0, [], []
        self._halt = threading.Event()

    def median(self):
        t = sorted(self.times)
        return t[len(t) // 2] if t else 0.0

    def run(self):
        cursor = None
        while not self._halt.is_set():
            try:
                if cursor is None:
                    status, obj = self.st.get_json("/feeds/%s" % self.feed, timeout=20)
                    cursor = obj["cursor"]
                    continue
                t = time.monotonic()
                status, obj = self.st.get_json("/feeds/%s?cursor=%s&timeout=10"
                                               % (self.feed, cursor), timeout=20)
                dt = time.monotonic() - t
                if status != 200:
                    self.errors.append("HTTP %d" % status)
                    cursor = None
                    continue
                cursor = obj["cursor"]
                self.n += 1
                self.worst = max(self.worst, dt)
                self.times.append(dt)
            except (OSError, StackError, KeyError) as e:
                self.errors.append("%s: %s" % (type(e).__name__, e))
                time.sleep(0.2)

    def stop(self):
        self._halt.set()
        self.join(15)


class Chaos:
    def __init__(self):
        self.build = builddir()
        self.tmp = tempfile.mkdtemp(prefix="tailgate-chaos-pg.")
        os.chmod(self.tmp, 0o755)
        self.ring_dir = os.path.join(self.tmp, "ring")
        os.makedirs(self.ring_dir)
        os.chmod(self.ring_dir, 0o755)
        self.ring_tool = os.path.join(self.build, "tailgate-ring")
        self.pg = None
        self.daemon = None
        self.load = None
        self.load_stopped = False
        self.st = None
        self.followers = []
        self.faults = 0
        self.follower_checks = 0
        self.verified = 0
        self.unverifiable = 0
        self.checks = 0
        self.verify_lock = threading.Lock()
        self.verifier_stop = threading.Event()
        self.verifier = threading.Thread(target=self._verifier, daemon=True)
        self.ring_problems = []
        self.stalls_seen = {}
        self.verified_reported = self.unverifiable_reported = self.problems_reported = 0

    # ---- processes ----

    def start(self):
        self.pg = PgCluster(base_dir=os.path.join(self.tmp, "pg"), keep=True)
        self.pg.start()
        self.pg.psql(file=os.path.join(top_srcdir, "sql", "auction_house.sql"))
        self.conf = os.path.join(self.tmp, "tailgated.conf")
        with open(self.conf, "w") as f:
            f.write("source = postgresql\nconninfo = %s\nring_dir = %s\n"
                    "backoff_min_ms = 100\nbackoff_max_ms = 1000\n\n" % (self.pg.dsn,
                                                                          self.ring_dir))
            for name, (table, size) in FEEDS.items():
                f.write("[feed %s]\ntable = %s\npermanent_slot = yes\n" % (name, table))
                if size:
                    f.write("ring_size = %s\n" % size)
                f.write("\n")
        self.start_load()
        self.start_daemon()
        self.wait_rings()
        # SSE keep-alive comments every 5 s: a stream silent for 12 s is
        # a stall (the followers' io_timeout).
        # nginx holds two connections per parked request (client and
        # FastCGI), plus the followers'.
        self.st = Stack(responders=2, ring_dir=self.ring_dir,
                        connections=max(8192, 2 * PARKED + 2048),
                        responder_args=["--sse-keepalive", str(SSE_KEEPALIVE)],
                        base_dir=os.path.join(self.tmp, "stack"), keep=True,
                        htdocs=os.path.join(top_srcdir, "htdocs"))
        self.st.start()

    def start_daemon(self):
        logf = open(os.path.join(self.tmp, "tailgated.log"), "ab")
        self.daemon = subprocess.Popen([os.path.join(self.build, "tailgated"), "-c", self.conf],
                                       stdout=logf, stderr=subprocess.STDOUT)
        logf.close()

    def start_load(self):
        logf = open(os.path.join(self.tmp, "loadgen.log"), "ab")
        self.load = subprocess.Popen([os.path.join(self.build, "tailgate-loadgen"), "-d",
                                      self.pg.dsn, "-r", RATE, "--report", "0", "--seed", "7"],
                                     stdout=logf, stderr=subprocess.STDOUT)
        logf.close()

    def pause_load(self):
        if not self.load_stopped:
            self.load.send_signal(signal.SIGSTOP)
            self.load_stopped = True

    def resume_load(self):
        if self.load_stopped:
            self.load.send_signal(signal.SIGCONT)
            self.load_stopped = False

    def wait_rings(self, timeout=60):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if all(os.path.exists(os.path.join(self.ring_dir, f + ".ring")) for f in FEEDS):
                return
            if self.daemon.poll() is not None:
                raise RuntimeError("tailgated exited: %s" % self.daemon_log())
            time.sleep(0.1)
        raise RuntimeError("no rings after %d s: %s" % (timeout, self.daemon_log()))

    def daemon_log(self, lines=25):
        return tail(os.path.join(self.tmp, "tailgated.log"), lines)

    def stop(self):
        self.verifier_stop.set()
        for f in self.followers:
            f.stop()
        if self.load is not None:
            if self.load.poll() is None:
                self.load.send_signal(signal.SIGCONT)
            Stack._terminate(self.load)
        if self.st is not None:
            self.st.stop()
        if self.daemon is not None:
            Stack._terminate(self.daemon)
        if self.pg is not None:
            self.pg.stop()
            self.pg.cleanup()
        if KEEP:
            note("kept " + self.tmp)
        else:
            subprocess.call(["rm", "-rf", self.tmp])

    # ---- observing ----

    def feeds(self):
        status, obj = self.st.get_json("/feeds", timeout=10)
        if status != 200:
            raise StackError("/feeds: %d" % status)
        return {f["name"]: f for f in obj["feeds"]}

    def heads(self):
        """Each feed's head: the cursor of its newest batch, from the ring
        (a reply's cursor is the frontier, which moves on without batches)."""
        out = {}
        for feed in FEEDS:
            p = subprocess.run([self.ring_tool, "-d", self.ring_dir, "info", feed],
                               capture_output=True, text=True)
            m = re.search(r"^head cursor +(\d+)$", p.stdout, re.M)
            if p.returncode != 0 or not m:
                raise StackError("tailgate-ring info %s: %s" % (feed, p.stderr.strip()))
            out[feed] = int(m.group(1))
        return out

    def why_down(self):
        """None when every process is up and every feed live, else why not."""
        if self.st.nginx.poll() is not None:
            return "nginx exited: %s" % self.st.nginx_log()
        for i, p in enumerate(self.st.responders):
            if p.poll() is not None:
                return "responder %d exited (%s): %s" % (i, p.returncode,
                                                         self.st.responder_log(i))
        if self.daemon.poll() is not None:
            return "tailgated exited (%s): %s" % (self.daemon.returncode, self.daemon_log())
        try:
            status, _, body = self.st.get("/healthz", timeout=5)
            if status != 200:
                return "/healthz: %d %r" % (status, body[:200])
            feeds = self.feeds()
        except (OSError, StackError) as e:
            return "%s: %s" % (type(e).__name__, e)
        for name in FEEDS:
            f = feeds.get(name)
            if f is None or not f.get("live") or f.get("state") != "live":
                return "feed %s not live: %r" % (name, f)
        return None

    def wait_up(self, timeout=60):
        end = time.monotonic() + timeout
        why = None
        while time.monotonic() < end:
            why = self.why_down()
            if why is None:
                return None
            time.sleep(0.2)
        return why

    def db_rows(self, feed):
        table = FEEDS[feed][0]
        out = self.pg.psql("SELECT coalesce(json_agg(json_build_array(%s)), '[]') FROM %s"
                           % (AUCTION_COLS, table))
        return collections.Counter(rows_key(r) for r in parse_json(out))

    # ---- the check after a fault ----

    def check(self, label, timeout=30):
        """Pause the load; processes up; every follower at its feed's head
        with the database's table; the ring confirms every batch; no
        violation seen.  Resumes the load."""
        self.checks += 1
        t0 = time.monotonic()
        self.pause_load()
        try:
            why = self.wait_up(timeout)
            ok(why is None, "%s: every process is back (nginx, 2 responders, tailgated; "
               "/healthz 200; every feed live in /feeds)" % label, why)
            active = [f for f in self.followers if not f.paused]
            end = time.monotonic() + timeout
            next_note = time.monotonic() + 5
            while True:
                try:
                    heads = self.heads()
                    db = {feed: self.db_rows(feed) for feed in FEEDS}
                    same = heads == self.heads()
                except (OSError, StackError, PgError, KeyError) as e:
                    heads, db, same, bad = {}, {}, False, [("-", str(e))]
                if same:
                    bad = []
                    for f in active:
                        cur, table = f.state()
                        head = heads.get(f.feed)
                        if cur != head:
                            bad.append((f, "cursor %s, head %s (last error: %s)" % (
                                cur, head, f.last_error)))
                        elif table != db[f.feed]:
                            want = db[f.feed]
                            missing = list((want - table).items())[:3]
                            extra = list((table - want).items())[:3]
                            bad.append((f, "at the head %s: %d rows, the database %d; missing "
                                        "%s; extra %s" % (cur, sum(table.values()),
                                                          sum(want.values()), missing, extra)))
                if same and not bad:
                    break
                if time.monotonic() > end:
                    break
                if time.monotonic() > next_note:
                    next_note += 10
                    note("%s: still waiting: %s" % (label, "; ".join(
                        "%s: %s" % (getattr(f, "name", f), d[:160]) for f, d in bad[:3])
                        if bad else "the heads moved"))
                time.sleep(0.25)
            diag = "\n".join("%s: %s" % (getattr(f, "name", f), d) for f, d in bad[:8])
            if bad:
                diag += "\nresponder 0 log:\n" + self.st.responder_log(0)[-1500:]
                diag += "\ndaemon log:\n" + self.daemon_log(10)
            ok(not bad, "%s: all %d followers reached their feed's head and their tables "
               "equal the database's (%s)" % (
                   label, len(active),
                   ", ".join("%s %d rows" % (k, sum(v.values())) for k, v in db.items())),
               diag)
            if not bad:
                self.follower_checks += len(active)
            self.verify()
            verified = self.verified - self.verified_reported
            unverifiable = self.unverifiable - self.unverifiable_reported
            problems = self.ring_problems[self.problems_reported:]
            self.verified_reported = self.verified
            self.unverifiable_reported = self.unverifiable
            self.problems_reported = len(self.ring_problems)
            ok(not problems, "%s: the %d batches the followers applied since the last check "
               "are exactly the ring's after their cursors (no batch skipped, doubled or "
               "altered; %d more the ring no longer held when compared)" % (
                   label, verified, unverifiable), "\n".join(problems[:8]))
            stalls = []
            for f in self.followers:
                stalls += f.stalls[self.stalls_seen.get(f, 0):]
                self.stalls_seen[f] = len(f.stalls)
            ok(not stalls, "%s: no follower's connection went silent (an SSE stream %d s "
               "without an event or keep-alive, a long-poll 15 s past its timeout)" % (
                   label, SSE_KEEPALIVE + 7), "\n".join(stalls[:10]))
            viol = [v for f in self.followers for v in f.violations]
            total = sum(f.n_violations for f in self.followers)
            ok(total == 0, "%s: no follower saw a batch twice, a cursor go backwards, a row "
               "deleted it did not hold or a malformed reply" % label, "\n".join(viol[:10]))
            note("%s: checked in %.1f s (followers: %d batches, %d snapshots, %d resyncs, "
                 "%d retried errors so far)" % (
                     label, time.monotonic() - t0, self.total("batches"),
                     self.total("snapshots"), self.total("gone"), self.total("errors")))
        finally:
            self.resume_load()

    def verify(self):
        """Compare the followers' records since the last call with the rings
        (follower.verify_with_ring); runs every second in the background
        too, so that the small ring is compared before it laps."""
        with self.verify_lock:
            for feed in FEEDS:
                v, u, p = verify_with_ring([f for f in self.followers if f.feed == feed],
                                           self.ring_tool, self.ring_dir, feed)
                self.verified += v
                self.unverifiable += u
                self.ring_problems += p

    def _verifier(self):
        while not self.verifier_stop.wait(1.0):
            try:
                self.verify()
            except Exception as e:  # a dump racing a daemon restart: next time
                note("background ring comparison: %s: %s" % (type(e).__name__, e))

    def total(self, key):
        return sum(f.stats[key] for f in self.followers)

    def run_load(self, seconds):
        self.resume_load()
        time.sleep(seconds)

    # ---- followers ----

    def start_followers(self):
        port = self.st.port
        k = 0
        for feed, n_lp, n_sse in LAYOUT:
            for i in range(n_lp):
                self.followers.append(Follower("127.0.0.1", port, feed, "longpoll",
                                               name="lp-%s-%d" % (feed[:7], i),
                                               poll_timeout=3 + i % 5))
            for i in range(n_sse):
                self.followers.append(Follower("127.0.0.1", port, feed, "sse",
                                               name="sse-%s-%d" % (feed[:7], i),
                                               sse_query=i % 2 == 1,
                                               io_timeout=SSE_KEEPALIVE + 7))
        for f in self.followers:
            f.start()
            k += 1
        self.verifier.start()

    # ---- faults ----

    def kill_daemon(self):
        pid = self.daemon.pid
        self.daemon.kill()
        self.daemon.wait()
        self.faults += 1
        return pid

    def fault_daemon(self):
        """kill -9 three times at random moments of the stream (appending,
        writing a snapshot of the small ring, between), restarting it each
        time; the last restart gets the full check."""
        self.run_load(3)
        gone = self.total("gone")
        pid = self.kill_daemon()
        note("tailgated (pid %d) killed with SIGKILL mid-stream" % pid)
        # The outage lasts 1.5 s (the scenario): followers see the feed
        # not live (503) meanwhile.
        time.sleep(1.5)
        feeds = self.feeds()
        ok(all(not feeds[f]["live"] for f in FEEDS),
           "with the daemon dead, /feeds shows its feeds not live",
           json.dumps({k: (v["live"], v["state"]) for k, v in feeds.items()}))
        for i in range(2):
            self.start_daemon()
            why = self.wait_up(30)
            if not ok(why is None, "the restarted daemon's feeds are live again", why):
                break
            t = random.uniform(0.2, 2.0)
            self.run_load(t)
            pid = self.kill_daemon()
            note("tailgated (pid %d) killed with SIGKILL again, %.1f s after it was live"
                 % (pid, t))
            time.sleep(random.uniform(0, 0.5))
        self.start_daemon()
        self.run_load(4)
        self.check("daemon kill -9 (3 times) and restart")
        note("followers resynced %d times (410 or in-band snapshot) after the daemon restarts"
             % (self.total("gone") - gone))

    def fault_responder(self):
        self.faults += 1
        self.run_load(2)
        pid = self.st.responder_pids[0]
        errors = self.total("errors")
        self.st.kill_responder(0)
        note("responder pid %d killed with SIGKILL" % pid)
        self.run_load(3)
        self.check("one responder of two killed (the other serving)")
        note("%d follower requests retried after the responder crash"
             % (self.total("errors") - errors))
        self.st.start_responders(1)
        self.run_load(3)
        self.check("the killed responder restarted")

    def fault_nginx(self):
        self.faults += 1
        self.run_load(2)
        self.st.reload_nginx()
        note("nginx reloaded (SIGHUP)")
        self.run_load(3)
        self.check("nginx reload")
        self.faults += 1
        self.run_load(2)
        self.st.restart_nginx()
        note("nginx restarted (stop, start)")
        self.run_load(3)
        self.check("nginx restart")

    def fault_postgres(self):
        self.faults += 1
        self.run_load(2)
        self.pg.restart()
        note("PostgreSQL restarted")
        self.run_load(5)
        self.check("PostgreSQL restart")
        self.faults += 1
        self.run_load(2)
        self.pg.stop(mode="immediate")
        self.pg.start()
        note("PostgreSQL crashed (immediate stop) and recovered")
        self.run_load(5)
        self.check("PostgreSQL crash and recovery")

    def _connect(self, rcvbuf=None):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        s.settimeout(10)
        s.connect(("127.0.0.1", self.st.port))
        return s

    @staticmethod
    def _req(path, extra=""):
        return ("GET %s HTTP/1.1\r\nHost: localhost\r\n%s\r\n" % (path, extra)).encode()

    @staticmethod
    def _vanish(s):
        """Close with a RST, as a client that goes away without a word."""
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
            s.close()
        except OSError:
            pass

    def fault_clients(self):
        """Clients that go away mid-response, and slow loris."""
        self.faults += 1
        heads = {k: v["cursor"] for k, v in self.feeds().items()}
        loris = []
        # Slow loris: SSE streams and a big snapshot never read, on tiny
        # receive buffers, and a request header sent a byte at a time.
        for i in range(6):   # more than the responders' writers (4 each)
            s = self._connect(rcvbuf=4096)
            s.sendall(self._req("/feeds/%s?stream=sse" % (SMALL, "winning_bids")[i % 2]))
            loris.append(s)
        for i in range(2):
            s = self._connect(rcvbuf=4096)
            s.sendall(self._req("/feeds/%s" % SMALL))
            loris.append(s)
        dribble = [self._connect() for _ in range(4)]
        partial = self._req("/feeds/winning_bids?cursor=%s" % heads["winning_bids"])
        aborted = 0
        t_end = time.monotonic() + 8
        i = 0
        self.resume_load()
        probe = ProbeThread(self.st, SMALL)
        probe.start()
        while time.monotonic() < t_end:
            for s in dribble:
                if i < len(partial) - 2:
                    try:
                        s.send(partial[i:i + 1])
                    except OSError:
                        pass
            i += 1
            # Mid-response disconnects: a snapshot read a little, an SSE
            # stream after its first bytes, a long-poll before its answer.
            for path, extra, nread in (
                    ("/feeds/%s" % SMALL, "", 200),
                    ("/feeds/winning_bids", "Accept: text/event-stream\r\n", 50),
                    ("/feeds/%s?cursor=%s&timeout=10" % (SMALL, heads[SMALL]), "", 0),
                    ("/feeds/winning_bids?cursor=%s&timeout=10" % heads["winning_bids"],
                     "", 0)):
                try:
                    s = self._connect()
                    s.sendall(self._req(path, extra))
                    if nread:
                        s.recv(nread)
                    if aborted % 2:
                        self._vanish(s)
                    else:
                        s.close()
                    aborted += 1
                except OSError:
                    pass
            time.sleep(0.05)
        probe.stop()
        status, _, _ = self.st.get("/healthz", timeout=5)
        ok(status == 200, "with %d slow-loris connections open, after %d clients went away "
           "mid-response, /healthz answers 200" % (len(loris) + len(dribble), aborted))
        # A writer stuck on a slow client gives up after 5 s without
        # progress (reply.c SSE_STALL_S), and at most half the writers are
        # in such writes: live long-polls must never wait that long.
        ok(probe.n > 0 and not probe.errors and probe.worst < 5,
           "meanwhile %d live long-polls were answered, median %.2f s, slowest %.2f s (the "
           "slow clients held no writer pool)" % (probe.n, probe.median(), probe.worst),
           "\n".join(probe.errors[:5]))
        self.check("clients gone mid-response and slow loris (%d aborted, %d slow)"
                   % (aborted, len(loris) + len(dribble)))
        for s in loris + dribble:
            self._vanish(s)

    def fault_parked(self):
        """PARKED long-polls parked at once, then all gone at once."""
        self.faults += 1
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = PARKED + 512
        if soft < want:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(want, soft)), hard))
        pids = self.st.responder_pids
        # The baseline once the previous phase's descriptors are closed:
        # two looks in a row that agree.
        last = [None]

        def settled():
            now = {p: proc_stats(p)[0] for p in pids}
            same, last[0] = now == last[0], now
            return same
        wait_for(settled, 10, 0.25)
        base = {p: proc_stats(p) for p in pids}
        head = self.feeds()["winning_bids"]["cursor"]
        # A filter no row matches (amount is 1..99) keeps them parked while
        # the load goes on: a filtered group whose batches all miss stays
        # parked with its cursor advanced.
        req = self._req("/feeds/winning_bids?cursor=%s&timeout=25&amount=gt.1000" % head)
        socks = []
        t0 = time.monotonic()
        try:
            for _ in range(PARKED):
                s = self._connect()
                s.sendall(req)
                socks.append(s)
        except OSError as e:
            note("opened %d of %d parked long-polls: %s" % (len(socks), PARKED, e))
        opened = time.monotonic() - t0
        # Wait until the responders hold them (one descriptor each).
        end = time.monotonic() + 30
        peak = base
        while time.monotonic() < end:
            peak = {p: proc_stats(p) for p in pids}
            held = sum(peak[p][0] - base[p][0] for p in pids)
            if held >= len(socks) * 0.98:
                break
            time.sleep(0.2)
        held = sum(peak[p][0] - base[p][0] for p in pids)
        ok(held >= len(socks) * 0.98, "%d long-polls opened in %.1f s are parked in the "
           "responders (%d more descriptors; per responder %s)" % (
               len(socks), opened, held, [peak[p][0] - base[p][0] for p in pids]))
        # Every one answered nothing so far: filtered, nothing matches.
        for s in socks[:: max(1, len(socks) // 20)]:
            s.setblocking(False)
            try:
                data = s.recv(1)
                ok(False, "a parked long-poll was answered early", repr(data))
                break
            except BlockingIOError:
                pass
            except OSError:
                break
        t1 = time.monotonic()
        for s in socks:
            self._vanish(s)
        note("%d parked long-polls vanished at once (RST)" % len(socks))
        # The responders' hang-up sweep runs every 5 s.  The followers'
        # own requests (about 30 descriptors) move between the two
        # responders: compare the sum.
        def fds_back(now):
            return sum(now[p][0] for p in pids) <= sum(base[p][0] for p in pids) + 10

        end = time.monotonic() + 30
        after = peak
        while time.monotonic() < end:
            after = {p: proc_stats(p) for p in pids}
            if fds_back(after):
                break
            time.sleep(0.25)
        released = time.monotonic() - t1
        # Sweep every 5 s, then the closer waits up to 2 s for nginx's EOF.
        ok(fds_back(after) and released < 15,
           "the responders released the vanished requests' descriptors in %.1f s "
           "(fds %s -> %s -> %s)" % (released, [base[p][0] for p in pids],
                                     [peak[p][0] for p in pids], [after[p][0] for p in pids]))
        ok(all(after[p][1] == base[p][1] for p in pids),
           "thread counts unchanged (%s -> %s -> %s)" % (
               [base[p][1] for p in pids], [peak[p][1] for p in pids],
               [after[p][1] for p in pids]))
        # RSS: the parked requests' memory (~11 kB each) is freed, and the
        # responder gives it back after a mass hang-up (park.c, malloc_trim).
        # Near baseline: at most half the peak's growth or 8 MB above it,
        # whichever is larger.
        # Not under a sanitizer: AddressSanitizer's quarantine holds freed
        # memory on purpose, ThreadSanitizer's allocator and shadow memory
        # grow with every thread's accesses, so RSS says nothing about the
        # responder's own frees.
        rss_ok = all(after[p][2] <= base[p][2] + max(8192, (peak[p][2] - base[p][2]) // 2)
                     for p in pids)
        what = "responder RSS back near baseline (kB %s -> %s -> %s)" % (
            [base[p][2] for p in pids], [peak[p][2] for p in pids],
            [after[p][2] for p in pids])
        if sanitized():
            ok(True, what + " # SKIP %s build: its allocator keeps freed memory" % sanitized())
        else:
            ok(rss_ok, what)
        status, _, _ = self.st.get("/healthz", timeout=5)
        head = self.feeds()["winning_bids"]["cursor"]
        t = time.monotonic()
        s2, obj = self.st.get_json("/feeds/winning_bids?cursor=%s&timeout=3" % head, timeout=15)
        ok(status == 200 and s2 == 200 and "cursor" in obj,
           "after the vanishing the responders answer /healthz (%d) and a long-poll "
           "(%d, %.2f s)" % (status, s2, time.monotonic() - t))
        self.run_load(2)
        self.check("%d parked long-polls vanished at once" % len(socks))

    def fault_lapping(self):
        """The small ring laps two paused followers."""
        self.faults += 1
        slow = [f for f in self.followers if f.feed == SMALL]
        slow = [next(f for f in slow if f.mode == "longpoll"),
                next(f for f in slow if f.mode == "sse")]
        gone = {f: f.stats["gone"] for f in slow}
        for f in slow:
            if not f.pause():
                ok(False, "%s stops within 10 s when paused" % f.name)
        cursors = {f: f.cursor for f in slow}
        self.resume_load()
        t0 = time.monotonic()
        lapped = False
        while time.monotonic() < t0 + 60:
            time.sleep(0.5)
            rc = [subprocess.call([self.ring_tool, "-d", self.ring_dir, "dump", SMALL,
                                   str(c)], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL) for c in cursors.values()]
            if all(r == 3 for r in rc):
                lapped = True
                break
        ok(lapped, "the %s ring (128 KiB) lapped two paused followers in %.1f s" % (
            SMALL, time.monotonic() - t0))
        for f in slow:
            f.resume()
        end = time.monotonic() + 20
        while time.monotonic() < end and not all(f.stats["gone"] > gone[f] for f in slow):
            time.sleep(0.1)
        ok(all(f.stats["gone"] > gone[f] for f in slow),
           "on resuming, the long-poll follower got a 410 and the SSE one an in-band "
           "snapshot (resyncs: %s)" % [(f.name, f.stats["gone"] - gone[f]) for f in slow])
        self.run_load(2)
        self.check("ring lapping two paused followers")


def main():
    try:
        pg_bindir()
        builddir()
    except Exception as e:
        print("1..0 # SKIP %s" % e)
        return 77
    if not os.access(nginx_bin(), os.X_OK):
        print("1..0 # SKIP nginx not found")
        return 77
    # SIGTERM (make check's timeout, Ctrl-C's cousin): unwind through the
    # finally below, which stops every process this test started.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    c = Chaos()
    try:
        c.start()
        note("PostgreSQL, tailgated, tailgate-loadgen -r %s, nginx, 2 responders up" % RATE)
        c.start_followers()
        c.run_load(4)
        c.check("no fault (warm-up)")
        c.fault_daemon()
        c.fault_responder()
        c.fault_nginx()
        c.fault_postgres()
        c.fault_clients()
        c.fault_parked()
        c.fault_lapping()
    except Exception as e:  # report, clean up, fail
        import traceback
        ok(False, "test aborted: %s: %s" % (type(e).__name__, e), traceback.format_exc())
        print("# tailgated log tail:")
        for line in c.daemon_log(20).splitlines():
            print("#   " + line)
    finally:
        for f in c.followers:
            f.stop()
        logs = ""
        try:
            with open(os.path.join(c.tmp, "tailgated.log"), errors="replace") as f:
                logs = f.read()
        except OSError:
            pass
        # The responders' logs go with the stack's directory.
        resp_bad = c.st.sanitizer_reports() if c.st is not None else []
        c.stop()
        bad = sanitizer_reports(logs)
        ok(not bad, "no sanitizer reports in the daemon's log", "\n".join(bad[:10]))
        ok(not resp_bad, "no sanitizer reports in the responders' logs",
           "\n".join(resp_bad[:10]))
        if c.st is not None:
            exits = [(rc, log) for rc, log in c.st.responder_exits if rc not in (0, -9)]
            ok(not exits, "every responder stopped cleanly (but the one killed)",
               "\n".join("exit %s: %s" % (rc, log[-800:]) for rc, log in exits[:3]))
    print("# faults injected: %d" % c.faults)
    print("# followers: %d (%d long-poll, %d SSE); follower-table checks passed: %d in %d "
          "checks" % (len(c.followers), sum(f.mode == "longpoll" for f in c.followers),
                      sum(f.mode == "sse" for f in c.followers), c.follower_checks, c.checks))
    print("# batches applied by followers: %d, %d of them net batches (a follower far "
          "behind); ring batches verified against them: %d (not comparable: %d the ring had "
          "lapped, %d superseded by a resync); snapshots %d; resyncs (410 or in-band) %d; "
          "retried errors %d" % (
              c.total("batches"), c.total("net_batches"), c.verified, c.unverifiable,
              c.total("unverified_resync"), c.total("snapshots"), c.total("gone"),
              c.total("errors")))
    print("# wall time %.0f s" % (time.monotonic() - T0))
    return done()


if __name__ == "__main__":
    sys.exit(main())
