#!/usr/bin/env python3
"""pg.py - a private PostgreSQL 15 cluster for tests, the demo and benches.

The cluster lives in a directory this module creates (a mkdtemp directory
under $TMPDIR, or `base_dir`), runs as the `postgres` user when started by
root (never as root: the directory is chowned to it), listens on 127.0.0.1
on a free port and on a unix socket in that directory, and is set up for
logical replication (wal_level=logical, enough slots and WAL senders,
pg_hba allowing local and replication connections without a password).

Python (stdlib only):

    import sys; sys.path.insert(0, "tests/lib")
    from pg import PgCluster

    with PgCluster() as pg:              # initdb + start, waits until ready
        pg.psql("CREATE TABLE t (a int)")
        print(pg.psql("SELECT count(*) FROM t"))   # '0' (psql -At output)
        pg.dsn                           # 'host=127.0.0.1 port=N user=postgres dbname=postgres'
        pg.conninfo(dbname="x", replication="database")
        pg.restart()                     # fast shutdown, start, wait
        pg.stop(mode="immediate"); pg.start()   # a crash and recovery
    # leaving the block stops the server and removes the directory

    PgCluster(keep=True)        keep the directory (logs) after stop
    PgCluster(settings={...})   extra postgresql.conf lines (name -> value)
    PgCluster(base_dir=D)       use D (created if missing) instead of mkdtemp

Errors raise PgError with the tail of the server log.

Shell (also see pg.sh beside this file):

    python3 tests/lib/pg.py start [--dir D] [--port N] [--set name=value]...
        initdb (when D has no cluster) and start; prints `export` lines
        (PGHOST PGPORT PGUSER PGDATABASE PGDIR TAILGATE_PG_DSN) for eval;
        the server keeps running.
    python3 tests/lib/pg.py stop --dir D [--remove]
    python3 tests/lib/pg.py run [--set name=value]... -- CMD ARGS...
        start a throw-away cluster, run CMD with those variables in its
        environment, stop and remove the cluster, exit with CMD's status.

Environment: TAILGATE_PG_BIN (default /usr/lib/postgresql/15/bin, else the
newest /usr/lib/postgresql/*/bin), TAILGATE_PG_USER (the OS user the server
runs as when we are root; default postgres), TAILGATE_PG_START_TIMEOUT
(seconds, default 60).
"""

import atexit
import glob
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from util import free_port

__all__ = ["PgCluster", "PgError", "pg_bindir", "free_port", "skip_unless_pg"]


class PgError(RuntimeError):
    pass


def pg_bindir():
    """Directory of initdb/pg_ctl/postgres."""
    env = os.environ.get("TAILGATE_PG_BIN")
    if env:
        return env
    if os.path.exists("/usr/lib/postgresql/15/bin/initdb"):
        return "/usr/lib/postgresql/15/bin"
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(p.split("/")[-3]) if p.split("/")[-3].isdigit() else 0)
    if found:
        return os.path.dirname(found[-1])
    initdb = shutil.which("initdb")
    if initdb:
        return os.path.dirname(initdb)
    raise PgError("PostgreSQL server binaries not found: install postgresql-15 "
                  "or set TAILGATE_PG_BIN")


DEFAULT_SETTINGS = {
    "wal_level": "logical",
    "max_replication_slots": "32",
    "max_wal_senders": "32",
    "max_connections": "200",
    "wal_sender_timeout": "60s",
    # Tests restart the server a lot; durability against OS crashes is not
    # what they test (a crash is pg_ctl stop -m immediate, which fsync=off
    # survives).  Benches that care pass settings={"fsync": "on"}.
    "fsync": "off",
    "full_page_writes": "off",
    "shared_buffers": "128MB",
    "max_wal_size": "1GB",
    "logging_collector": "off",
    "log_min_messages": "warning",
    "log_line_prefix": "'%m [%p] %q%a '",
}


class PgCluster:
    """A private PostgreSQL cluster; see the module docstring."""

    def __init__(self, base_dir=None, port=None, settings=None, keep=False,
                 user="postgres", dbname="postgres"):
        self.bindir = pg_bindir()
        self._made_dir = base_dir is None
        if base_dir is None:
            base_dir = tempfile.mkdtemp(prefix="tailgate-pg.")
        else:
            os.makedirs(base_dir, exist_ok=True)
        self.dir = os.path.abspath(base_dir)
        self.data_dir = os.path.join(self.dir, "data")
        self.socket_dir = os.path.join(self.dir, "sock")
        self.log_file = os.path.join(self.dir, "server.log")
        self.port = port
        self.user = user          # database superuser
        self.dbname = dbname
        self.keep = keep
        self.settings = dict(DEFAULT_SETTINGS)
        if settings:
            self.settings.update({k: str(v) for k, v in settings.items()})
        self.os_user = None       # who the server runs as (None: ourselves)
        if os.geteuid() == 0:
            self.os_user = os.environ.get("TAILGATE_PG_USER", "postgres")
            try:
                pwd.getpwnam(self.os_user)
            except KeyError:
                raise PgError("running as root and there is no user %r to run the server "
                              "as (install postgresql or set TAILGATE_PG_USER)" % self.os_user)
        self.timeout = float(os.environ.get("TAILGATE_PG_START_TIMEOUT", "60"))
        self._running = False
        self._removed = False
        atexit.register(self._atexit)

    # ---- connection strings -------------------------------------------------

    @property
    def dsn(self):
        """libpq conninfo over TCP to the default database."""
        return self.conninfo()

    def conninfo(self, dbname=None, replication=None, host=None, **extra):
        parts = {
            "host": host or "127.0.0.1",
            "port": str(self.port),
            "user": self.user,
            "dbname": dbname or self.dbname,
        }
        if replication:
            parts["replication"] = replication
        parts.update({k: str(v) for k, v in extra.items()})
        return " ".join("%s=%s" % (k, v) for k, v in parts.items())

    @property
    def url(self):
        return "postgresql://%s@127.0.0.1:%d/%s" % (self.user, self.port, self.dbname)

    def env(self, base=None):
        """Environment for libpq programs (psql, the daemon, the load generator)."""
        e = dict(os.environ if base is None else base)
        e.update({
            "PGHOST": self.socket_dir,
            "PGPORT": str(self.port),
            "PGUSER": self.user,
            "PGDATABASE": self.dbname,
            "PGDIR": self.dir,
            "TAILGATE_PG_DSN": self.dsn,
        })
        return e

    # ---- lifecycle -----------------------------------------------------------

    def _as_server_user(self, argv):
        if self.os_user:
            return ["runuser", "-u", self.os_user, "--"] + argv
        return argv

    def _run(self, argv, check=True, **kw):
        p = subprocess.run(self._as_server_user(argv), stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, **kw)
        if check and p.returncode != 0:
            raise PgError("%s failed (exit %d):\n%s%s" % (
                os.path.basename(argv[0]), p.returncode, p.stdout, self.log_tail()))
        return p

    def log_tail(self, lines=30):
        try:
            with open(self.log_file, errors="replace") as f:
                t = f.readlines()[-lines:]
            return "---- %s (tail)\n%s" % (self.log_file, "".join(t))
        except OSError:
            return ""

    def initdb(self):
        os.makedirs(self.socket_dir, exist_ok=True)
        if self.os_user:
            pw = pwd.getpwnam(self.os_user)
            for d in (self.dir, self.socket_dir):
                os.chown(d, pw.pw_uid, pw.pw_gid)
            os.chmod(self.dir, 0o755)   # our own processes read the log
        self._run([os.path.join(self.bindir, "initdb"), "-D", self.data_dir,
                   "-U", self.user, "-A", "trust", "-E", "UTF8", "--locale=C",
                   "--no-sync", "--no-instructions"])
        with open(os.path.join(self.data_dir, "pg_hba.conf"), "w") as f:
            f.write("# written by tests/lib/pg.py: a private test cluster\n"
                    "local all         all                trust\n"
                    "local replication all                trust\n"
                    "host  all         all  127.0.0.1/32  trust\n"
                    "host  replication all  127.0.0.1/32  trust\n")

    def _write_conf(self):
        conf = os.path.join(self.data_dir, "postgresql.auto.conf")
        lines = ["# written by tests/lib/pg.py on every start\n"]
        s = dict(self.settings)
        s["listen_addresses"] = "'127.0.0.1'"
        s["port"] = str(self.port)
        s["unix_socket_directories"] = "'%s'" % self.socket_dir
        for k, v in s.items():
            lines.append("%s = %s\n" % (k, v))
        with open(conf, "w") as f:
            f.writelines(lines)
        if self.os_user:
            pw = pwd.getpwnam(self.os_user)
            os.chown(conf, pw.pw_uid, pw.pw_gid)

    def start(self):
        """initdb when needed, start, and wait until it accepts connections."""
        if not os.path.exists(os.path.join(self.data_dir, "PG_VERSION")):
            self.initdb()
        last = None
        for attempt in range(5):
            if self.port is None or attempt > 0:
                self.port = free_port()
            self._write_conf()
            # -W: do not wait here; we poll pg_isready with our own deadline.
            self._run([os.path.join(self.bindir, "pg_ctl"), "start", "-W", "-D",
                       self.data_dir, "-l", self.log_file], check=True)
            try:
                self.wait_ready()
                self._running = True
                return self
            except PgError as e:
                last = e
                if "Address already in use" not in self.log_tail():
                    break
                self._pg_ctl_stop("immediate", check=False)
        raise last

    def postmaster_pid(self):
        """The postmaster's pid, or None when it is not running."""
        try:
            with open(os.path.join(self.data_dir, "postmaster.pid")) as f:
                return int(f.readline().strip())
        except (OSError, ValueError):
            return None

    def wait_ready(self, timeout=None):
        """Poll pg_isready until the server accepts connections; fail early
        when the postmaster died (port taken, bad setting)."""
        timeout = timeout or self.timeout
        start = time.monotonic()
        deadline = start + timeout
        isready = os.path.join(self.bindir, "pg_isready")
        delay = 0.02
        while time.monotonic() < deadline:
            p = subprocess.run([isready, "-q", "-h", self.socket_dir, "-p", str(self.port),
                                "-U", self.user, "-d", self.dbname, "-t", "1"])
            if p.returncode == 0:
                return
            if p.returncode == 3:
                raise PgError("pg_isready: bad parameters")
            # 1: starting up, 2: no answer yet.  A postmaster that died does
            # not come back: stop polling after a short grace period.
            if time.monotonic() - start > 1 and not self._server_alive():
                raise PgError("server did not start\n" + self.log_tail())
            time.sleep(delay)
            delay = min(delay * 2, 0.2)
        raise PgError("server not ready within %.0f s\n%s" % (timeout, self.log_tail()))

    def _server_alive(self):
        p = subprocess.run(self._as_server_user([os.path.join(self.bindir, "pg_ctl"),
                                                 "status", "-D", self.data_dir]),
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return p.returncode == 0

    def _pg_ctl_stop(self, mode, check=True):
        return self._run([os.path.join(self.bindir, "pg_ctl"), "stop", "-D", self.data_dir,
                          "-m", mode, "-w", "-t", str(int(self.timeout))], check=check)

    def stop(self, mode="fast"):
        """Stop the server (mode: smart, fast, immediate = crash)."""
        if self._server_alive():
            self._pg_ctl_stop(mode)
        self._running = False

    def restart(self, mode="fast"):
        """Stop and start on the same port; waits until ready."""
        self.stop(mode)
        return self.start()

    def cleanup(self):
        """Stop, and remove the directory unless keep was set."""
        try:
            if os.path.exists(os.path.join(self.data_dir, "PG_VERSION")):
                self.stop("fast")
        finally:
            if not self.keep and self._made_dir and not self._removed:
                shutil.rmtree(self.dir, ignore_errors=True)
                self._removed = True

    def _atexit(self):
        if self._running:
            try:
                self.cleanup()
            except Exception as e:  # at exit nothing can be raised usefully
                sys.stderr.write("pg.py: cleanup: %s\n" % e)

    def __enter__(self):
        try:
            return self.start()
        except BaseException:
            self.cleanup()
            raise

    def __exit__(self, *exc):
        self.cleanup()
        return False

    # ---- SQL -------------------------------------------------------------------

    def psql(self, sql=None, dbname=None, file=None, check=True, vars=None):
        """Run SQL (a string, or file=PATH) with psql -At and ON_ERROR_STOP;
        return stdout without the trailing newline.  Raises PgError on error
        when check is set."""
        argv = ["psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1",
                "-h", self.socket_dir, "-p", str(self.port), "-U", self.user,
                "-d", dbname or self.dbname]
        for k, v in (vars or {}).items():
            argv += ["-v", "%s=%s" % (k, v)]
        if file:
            argv += ["-f", file]
        p = subprocess.run(argv, input=sql if file is None else None, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
        if check and p.returncode != 0:
            raise PgError("psql failed (exit %d): %s" % (p.returncode, p.stderr.strip()))
        return p.stdout.rstrip("\n")

    def createdb(self, name):
        self.psql('CREATE DATABASE "%s"' % name.replace('"', '""'))
        return self.conninfo(dbname=name)


# ---- command line ------------------------------------------------------------

def skip_unless_pg(*programs):
    """For a test's main(): None when PostgreSQL's binaries and every one of
    programs (paths) are here; else prints the TAP plan that skips the test
    and returns automake's SKIP status, 77, for main() to return."""
    try:
        pg_bindir()
    except PgError as e:
        print("1..0 # SKIP %s" % e)
        return 77
    for exe in programs:
        if not os.access(exe, os.X_OK):
            print("1..0 # SKIP %s not found or not built" % exe)
            return 77
    return None


def _shell_quote(s):
    return "'" + s.replace("'", "'\\''") + "'"


def _exports(pg):
    keys = ["PGHOST", "PGPORT", "PGUSER", "PGDATABASE", "PGDIR", "TAILGATE_PG_DSN"]
    e = pg.env({})
    return "".join("export %s=%s\n" % (k, _shell_quote(e[k])) for k in keys)


def _parse_set(values):
    out = {}
    for v in values:
        k, sep, val = v.partition("=")
        if not sep:
            raise SystemExit("pg.py: --set wants name=value, not %r" % v)
        out[k] = val
    return out


def main(argv):
    import argparse
    ap = argparse.ArgumentParser(prog="pg.py", description="A private PostgreSQL cluster "
                                 "for tailgate's tests and demo.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("start", help="initdb if needed, start, print export lines")
    s.add_argument("--dir", help="cluster directory (default: a new temp dir)")
    s.add_argument("--port", type=int)
    s.add_argument("--set", action="append", default=[], metavar="NAME=VALUE")
    t = sub.add_parser("stop", help="stop the cluster in --dir")
    t.add_argument("--dir", required=True)
    t.add_argument("--remove", action="store_true", help="also remove the directory")
    r = sub.add_parser("run", help="run a command against a throw-away cluster")
    r.add_argument("--set", action="append", default=[], metavar="NAME=VALUE")
    r.add_argument("--keep", action="store_true")
    r.add_argument("command", nargs=argparse.REMAINDER)
    a = ap.parse_args(argv)

    if a.cmd == "start":
        port = a.port
        if port is None and a.dir:
            # Restarting a kept cluster: reuse its port when still free.
            try:
                with open(os.path.join(a.dir, "data", "postgresql.auto.conf")) as f:
                    for line in f:
                        if line.startswith("port = "):
                            port = int(line.split("=")[1])
            except OSError:
                pass
        pg = PgCluster(base_dir=a.dir, port=port, settings=_parse_set(a.set), keep=True)
        pg.start()
        pg._running = False   # leave it running after we exit
        sys.stdout.write(_exports(pg))
        return 0
    if a.cmd == "stop":
        pg = PgCluster(base_dir=a.dir, keep=not a.remove)
        pg._made_dir = a.remove
        pg.cleanup()
        return 0
    cmd = a.command[1:] if a.command[:1] == ["--"] else a.command
    if not cmd:
        ap.error("run: no command")

    def term(signum, frame):
        raise SystemExit(128 + signum)
    signal.signal(signal.SIGTERM, term)
    signal.signal(signal.SIGINT, term)
    with PgCluster(settings=_parse_set(a.set), keep=a.keep) as pg:
        return subprocess.call(cmd, env=pg.env())


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
