#!/usr/bin/env python3
"""credentials.py - the daemon's credentials never show: not in its log, not in
/feeds, /metrics or a feed's reply, not in the ring files, not on its
command line.  TAP output.

tailgated runs against the Materialize SUBSCRIBE test server
(tests/mzserver/mzserver.py --password), the responder and nginx read its
rings (tests/lib/stack.py), and everything is searched for the password:

  1. the right password in a key=value conninfo: the feed goes live; the
     password is in none of: the daemon's log, /feeds, /metrics,
     /feeds/FEED, /healthz, the reply headers, the .ring and .snap files,
     /proc/PID/cmdline of either process, the responder's log
  2. the same as a postgresql:// URI (user:password@host)
  3. a wrong password: the daemon retries and logs the upstream's refusal
     ("invalid password"), never the password it tried
  4. malformed conninfos whose libpq parse errors would quote part of the
     password (an unquoted space, a bad %-escape in a URI): refused at
     start and by --check with "bad conninfo", no piece of the password
  5. the password from PGPASSWORD (no password in the file): live, and
     nowhere to be seen either

    python3 tests/credentials.py

Environment: top_builddir (tailgated, tailgate-fcgi, tests/ringfeed),
top_srcdir.  Skips (77) without nginx.
"""

import glob
import os
import re
import binascii
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "lib"))
if os.environ.get("top_builddir") and not os.environ.get("TAILGATE_BUILDDIR"):
    os.environ["TAILGATE_BUILDDIR"] = os.path.abspath(os.environ["top_builddir"])
from stack import Stack, builddir, nginx_bin  # noqa: E402
from tap import done, failed, ok  # noqa: E402

SCENARIO = os.path.join(HERE, "mzserver", "scenarios", "winning_bids.scn")
DEADLINE = 30.0


class MzServer:
    def __init__(self, tmp, password):
        self.proc = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "mzserver", "mzserver.py"), "--port", "0",
             "--password", password, "--scenario", SCENARIO],
            stdout=subprocess.PIPE, stderr=open(os.path.join(tmp, "mzserver.err"), "w"),
            text=True)
        line = self.proc.stdout.readline()
        m = re.match(r"PORT=(\d+)", line)
        if not m:
            raise RuntimeError("mzserver did not start: %r" % line)
        self.port = int(m.group(1))

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


DAEMONS = []


class Daemon:
    def __init__(self, tmp, name, conninfo, ring_dir, env=None):
        DAEMONS.append(self)
        self.conf = os.path.join(tmp, name + ".conf")
        self.log_path = os.path.join(tmp, name + ".log")
        with open(self.conf, "w") as f:
            f.write("source = materialize\nconninfo = %s\nring_dir = %s\n"
                    "backoff_min_ms = 50\nbackoff_max_ms = 100\n"
                    "[feed wb]\nview = winning_bids\n" % (conninfo, ring_dir))
        os.chmod(self.conf, 0o600)
        self.exe = os.path.join(builddir(), "tailgated")
        self.proc = subprocess.Popen([self.exe, "-c", self.conf, "-d"],
                                     stderr=open(self.log_path, "w"),
                                     stdout=subprocess.DEVNULL,
                                     env=dict(os.environ, **(env or {})))

    def log(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def cmdline(self):
        try:
            with open("/proc/%d/cmdline" % self.proc.pid, "rb") as f:
                return f.read()
        except OSError:
            return b""

    def check(self):
        return subprocess.run([self.exe, "--check", "-c", self.conf], capture_output=True,
                              text=True, timeout=10)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def wait_live(st, feed, deadline=DEADLINE):
    end = time.monotonic() + deadline
    last = None
    while time.monotonic() < end:
        try:
            s, obj = st.get_json("/feeds")
            last = obj
            for f in obj.get("feeds", []):
                if f["name"] == feed and f["live"] and int(f["cursor"].split(".")[0]) > 0:
                    return True
        except Exception as e:  # nginx up, responder busy: retry
            last = e
        time.sleep(0.1)
    print("#   not live: %r" % (last,))
    return False


def everything_served(st, feed):
    """Every byte the HTTP API serves about the feed, headers included."""
    out = b""
    for path in ("/feeds", "/feeds/", "/metrics", "/healthz", "/feeds/" + feed,
                 "/feeds/" + feed + "?timeout=0&cursor=1", "/feeds/nope"):
        s, h, body = st.get(path, timeout=10)
        out += path.encode() + b" " + str(s).encode() + b"\n"
        out += "".join("%s: %s\n" % kv for kv in h.items()).encode() + body + b"\n"
    return out


def ring_bytes(ring_dir):
    out = b""
    for p in glob.glob(os.path.join(ring_dir, "*")):
        if os.path.isfile(p):
            with open(p, "rb") as f:
                out += f.read()
    return out


def pieces(secret):
    """The secret and its halves: a fragment counts as a leak too."""
    half = len(secret) // 2
    return [secret, secret[:half], secret[half:]]


def leaks(blob, secret):
    if isinstance(blob, str):
        blob = blob.encode("utf-8", "replace")
    return [p for p in pieces(secret) if p.encode() in blob]


def main():
    if not (shutil.which("nginx") or os.path.exists(nginx_bin())):
        print("1..0 # skip nginx not found")
        return 77
    t0 = time.monotonic()
    tmp = tempfile.mkdtemp(prefix="tailgate-secrets.")
    # Distinctive, and split in halves none of which occurs by chance.
    password = "pw" + binascii.hexlify(os.urandom(8)).decode() + "Zq"
    mz = None
    try:
        mz = MzServer(tmp, password)
        ring_dir = os.path.join(tmp, "ring")
        os.mkdir(ring_dir)
        os.chmod(tmp, 0o755)
        base = "host=127.0.0.1 port=%d user=materialize" % mz.port
        with Stack(ring_dir=ring_dir) as st:
            # 1. key=value, the right password.
            d = Daemon(tmp, "kv", base + " password=" + password, ring_dir)
            live = ok(wait_live(st, "wb"), "key=value conninfo with the password: the feed is live",
                      d.log()[-2000:])
            served = everything_served(st, "wb")
            ok(live and b'"wb"' in served and not leaks(served, password),
               "the password is not in /feeds, /metrics, /feeds/wb, /healthz or any header",
               leaks(served, password))
            ok(not leaks(ring_bytes(ring_dir), password),
               "the password is not in the .ring or .snap files")
            ok(not leaks(d.cmdline(), password), "the password is not on the daemon's command line")
            for i, pid in enumerate(st.responder_pids):
                with open("/proc/%d/cmdline" % pid, "rb") as f:
                    ok(not leaks(f.read(), password),
                       "the password is not on the responder's command line")
            d.stop()
            log = d.log()
            ok("connected to" in log and not leaks(log, password),
               "the daemon's log (connect, stream, stop) never shows the password",
               leaks(log, password))

            # 2. A URI.
            for f in glob.glob(os.path.join(ring_dir, "*")):
                os.unlink(f)
            d = Daemon(tmp, "uri", "postgresql://materialize:%s@127.0.0.1:%d/materialize" %
                       (password, mz.port), ring_dir)
            live = ok(wait_live(st, "wb"), "URI conninfo with user:password@: the feed is live",
                      d.log()[-2000:])
            served = everything_served(st, "wb")
            ok(live and not leaks(served, password) and not leaks(d.cmdline(), password),
               "URI: not in any reply, header or the command line")
            d.stop()
            ok(not leaks(d.log(), password), "URI: not in the daemon's log",
               leaks(d.log(), password))

            # 3. A wrong password: refused upstream, retried, never logged.
            wrong = "pw" + binascii.hexlify(os.urandom(8)).decode() + "Wr"
            d = Daemon(tmp, "wrong", base + " password=" + wrong, ring_dir)
            end = time.monotonic() + DEADLINE
            while time.monotonic() < end and d.log().count("invalid password") < 3:
                time.sleep(0.1)
            d.stop()
            log = d.log()
            ok(log.count("invalid password") >= 3,
               "a wrong password: the upstream's refusal is logged on each retry (%d)" %
               log.count("invalid password"), log[-1000:])
            ok(not leaks(log, wrong) and not leaks(log, password),
               "a wrong password: it is never logged", leaks(log, wrong))
            served = everything_served(st, "wb")
            ok(not leaks(served, wrong), "a wrong password: not in any reply")

            # 4. Malformed conninfos whose parse errors would quote the password.
            for what, conninfo, secret in (
                    ("an unquoted space in the password",
                     base + " password=%s %s" % (password[:9], password[9:]), password),
                    ("a bad %-escape in a URI's password",
                     "postgresql://materialize:%s%%zz@127.0.0.1:%d/db" % (password, mz.port),
                     password),
                    ("an unterminated quote",
                     base + " password='%s" % password, password)):
                d = Daemon(tmp, "bad", conninfo, ring_dir)
                try:
                    rc = d.proc.wait(10)
                except subprocess.TimeoutExpired:
                    rc = None
                d.stop()
                log = d.log()
                ok(rc not in (0, None) and "bad conninfo" in log,
                   "%s: the daemon refuses to start (exit %s)" % (what, rc), log[-500:])
                ok(not leaks(log, secret), "%s: its message quotes no piece of the password" %
                   what, log[-500:])
                chk = d.check()
                ok(chk.returncode != 0 and "bad conninfo" in chk.stderr and
                   not leaks(chk.stdout + chk.stderr, secret),
                   "%s: --check refuses it without the password" % what, chk.stderr)

            # 5. PGPASSWORD instead of the file.
            for f in glob.glob(os.path.join(ring_dir, "*")):
                os.unlink(f)
            d = Daemon(tmp, "env", base, ring_dir, env={"PGPASSWORD": password})
            live = ok(wait_live(st, "wb"), "PGPASSWORD: the feed is live", d.log()[-2000:])
            served = everything_served(st, "wb")
            d.stop()
            ok(live and not leaks(served, password) and not leaks(d.log(), password),
               "PGPASSWORD: not in any reply or the daemon's log")

            st.stop_responders()
            rlog = "".join(log for _, log in st.responder_exits)
            ok(not leaks(rlog, password) and not leaks(rlog, wrong),
               "the responder's log never shows a password")
    finally:
        for d in DAEMONS:
            d.stop()
        if mz is not None:
            mz.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    status = done()
    print("# %d failed, %.1fs" % (failed(), time.monotonic() - t0))
    return status


if __name__ == "__main__":
    sys.exit(main())
