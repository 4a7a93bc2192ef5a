#!/usr/bin/env python3
"""stack.py - a private nginx + tailgate-fcgi stack for tests, benches and the demo.

Everything lives in one temporary directory (mkdtemp, or `base_dir`): the
ring directory, the responder's unix socket, nginx's prefix (config, pid,
temp files, cache).  nginx listens on a free 127.0.0.1 port only.  When
run as root, nginx's workers run as `nobody` (the directories are made
traversable; the socket is mode 0660, the responder's default, and belongs
to the workers' group: st.socket_group), or as root when nobody could not
reach htdocs (a clone under /root).  Readiness is polled (the port answers
/healthz), never slept for.  Leaving the `with` block, an atexit hook, or
SIGTERM stop every process it started and remove the directory.

Python (stdlib only):

    import sys; sys.path.insert(0, "tests/lib")
    from stack import Stack

    with Stack() as st:                      # responder(s) + nginx, ready
        feed = st.ringfeed("bids", [("id", "int8"), ("item", "text")])
        feed.batch(2, inserted=[[1, "a"]])   # a fake daemon's batch, acked
        status, headers, body = st.get("/feeds/bids")
        status, obj = st.get_json("/feeds/bids?cursor=2&timeout=1")
        st.url("/feeds")                     # 'http://127.0.0.1:PORT/feeds'

    Stack(responders=2)          two responder processes sharing one socket,
                                 each inheriting it on fd 0 as under spawn-fcgi
    Stack(workers=2)             one responder with --workers 2
    Stack(responders=0)          no responder (start your own on st.socket)
    Stack(nginx_workers=2, connections=12000, nofile=30000)
    Stack(cache=True)            nginx's catch-up cache (snippet's block) on
    Stack(cache=True, cache_lock=True)   ... with fastcgi_cache_lock on
    Stack(htdocs=DIR)            static files at / (default: the repo's htdocs/)
    Stack(ring_dir=DIR)          use the daemon's ring directory (then the
                                 daemon, not ringfeed, writes the feeds)
    Stack(responder_args=[...])  extra tailgate-fcgi arguments
    Stack(keep=True)             keep the directory (logs) afterwards
    Stack(nginx_http="...", nginx_server="...")
                                 directives put at the top of nginx.conf's
                                 http {} and server {} blocks (an operator's
                                 existing configuration around the snippet);
                                 st.nginx_http / st.nginx_server may be
                                 changed before st.restart_nginx()
    Stack(tls=True)              nginx over TLS and HTTP/2 (`listen ... ssl
                                 http2`) with a self-signed certificate made
                                 for this run (openssl req -x509): st.url()
                                 is https://, st.cert the certificate (PEM)
    Stack(valgrind=True)         run the responder under valgrind (memcheck, as
                                 tests/valgrind.sh: util.valgrind_cmd)

    st.ringfeed(name, columns, size=1<<20, base=1, starting=False) -> RingFeed
        feed.cmd("state down")   any ringfeed command; returns its "ok ..." line
        feed.batch(cursor, inserted=[], deleted=[], wake=True)
        feed.fill(n, cursor)     n one-row batches (to make the ring drop)
        feed.info()              {'head':..,'tail':..,'cursor':..,'rows':..}
        feed.kill()              SIGKILL: the writer looks dead
        feed.quit()              close and remove the segment
    st.responder_pids            pids of the responder processes
    st.responder_exits           [(exit status, log tail)] of stopped responders
    st.sanitizer_reports()       ASan/UBSan/TSan lines in every responder's
                                 whole log (a sanitizer build reports there)
    st.stop_responders(); st.start_responders()
    st.kill_responder(i)         SIGKILL responder i (a crash) and forget it
    st.reload_nginx()            SIGHUP nginx's master, wait until it answers
    st.restart_nginx()           stop and start nginx on the same port
    st.dir, st.ring_dir, st.socket, st.port, st.prefix, st.cert (TLS)
    st.socket_group              nginx's worker group (None: not root, the
                                 workers run as this user)
    st.socket_args()             ["--socket", st.socket] plus --socket-group
                                 when needed: a responder of your own that
                                 nginx can reach

Errors raise StackError with the tail of the relevant log.

Shell:

    python3 tests/lib/stack.py run [--responders N] [--workers N] [--ring-dir D]
                                   [--htdocs D] [--port P] [--cache] [--keep] [--tls]
                                   [--nginx-workers N] [--connections N] [--nofile N]
                                   [--responder-arg ARG]... -- CMD ARGS...
        start the stack, run CMD with TAILGATE_URL, TAILGATE_PORT,
        TAILGATE_RING_DIR, TAILGATE_FCGI_SOCKET, TAILGATE_RESPONDER_PIDS and
        TAILGATE_NGINX_PID in its environment, stop; exit with CMD's status.
    python3 tests/lib/stack.py serve [same options]
        start it and keep it running until SIGINT/SIGTERM; prints the URL.

Environment: TAILGATE_BUILDDIR (where tailgate-fcgi and tests/ringfeed
are; default: $top_builddir, else ../../build from this file),
TAILGATE_NGINX (the nginx binary, default: nginx on PATH or /usr/sbin/nginx).
"""

import atexit
import http.client
import json
import os
import pwd
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time

from util import free_port, sanitizer_reports, tail, valgrind_cmd

__all__ = ["Stack", "RingFeed", "StackError", "free_port", "builddir", "srcdir"]

HERE = os.path.dirname(os.path.abspath(__file__))


class StackError(RuntimeError):
    pass


def srcdir():
    """The source tree (nginx/, htdocs/)."""
    env = os.environ.get("top_srcdir")
    if env and os.path.isdir(os.path.join(env, "nginx")):
        return os.path.abspath(env)
    return os.path.abspath(os.path.join(HERE, "..", ".."))


def builddir():
    """Where tailgate-fcgi and tests/ringfeed were built."""
    for env in (os.environ.get("TAILGATE_BUILDDIR"), os.environ.get("top_builddir")):
        if env and os.path.exists(os.path.join(env, "tailgate-fcgi")):
            return os.path.abspath(env)
    for cand in (os.path.join(srcdir(), "build"), srcdir()):
        if os.path.exists(os.path.join(cand, "tailgate-fcgi")):
            return cand
    raise StackError("tailgate-fcgi not built: run make, or set TAILGATE_BUILDDIR")


def nginx_bin():
    env = os.environ.get("TAILGATE_NGINX")
    if env:
        return env
    return shutil.which("nginx") or "/usr/sbin/nginx"


_live = []


def _cleanup_all():
    for st in list(_live):
        try:
            st.stop()
        except Exception:
            pass


atexit.register(_cleanup_all)


def _on_term(signum, frame):
    _cleanup_all()
    sys.exit(128 + signum)


class RingFeed:
    """A fake daemon (tests/ringfeed) writing one feed's ring."""

    def __init__(self, exe, ring_dir, name, columns, size=1 << 20, base=1, starting=False,
                 log=None):
        cols = json.dumps([{"name": n, "type": t} for n, t in columns])
        args = [exe, "--dir", ring_dir, "--feed", name, "--columns", cols,
                "--size", str(size), "--base", str(base)]
        if starting:
            args.append("--starting")
        self.name = name
        self.columns = columns
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=log or subprocess.DEVNULL, text=True, bufsize=1)
        line = self.proc.stdout.readline().strip()
        if line != "ready":
            raise StackError("ringfeed %s did not start: %r" % (name, line))

    def cmd(self, line):
        """Send one command; return its "ok ..." line or raise StackError."""
        if self.proc.poll() is not None:
            raise StackError("ringfeed %s has exited" % self.name)
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        reply = self.proc.stdout.readline().strip()
        if not reply.startswith("ok"):
            raise StackError("ringfeed %s: %s -> %s" % (self.name, line[:80], reply))
        return reply

    def batch(self, cursor, inserted=(), deleted=(), wake=True):
        body = json.dumps({"inserted": list(inserted), "deleted": list(deleted)},
                          separators=(",", ":"))
        return self.cmd("%s %d %s" % ("batch" if wake else "quiet", cursor, body))

    def fill(self, n, cursor):
        return self.cmd("fill %d %d" % (n, cursor))

    def info(self):
        out = {}
        for kv in self.cmd("info").split()[1:]:
            k, v = kv.split("=")
            out[k] = int(v)
        return out

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def quit(self):
        if self.proc.poll() is None:
            try:
                self.cmd("quit")
            except StackError:
                pass
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.kill()
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()
            except Exception:
                pass


class Stack:
    """nginx + tailgate-fcgi in a private directory; see the module docstring."""

    def __init__(self, responders=1, workers=1, nginx_workers=1, connections=4096,
                 nofile=None, cache=False, cache_lock=False, htdocs=None, ring_dir=None, port=None,
                 responder_args=(), base_dir=None, keep=False, valgrind=False,
                 tls=False, start_timeout=20, nginx_http="", nginx_server=""):
        self.build = builddir()
        self.src = srcdir()
        self.n_responders = responders
        self.workers = workers
        self.nginx_workers = nginx_workers
        self.connections = connections
        self.nofile = nofile or max(2 * connections + 64, 1024)
        self.cache = cache
        self.cache_lock = cache_lock
        self.htdocs = os.path.abspath(htdocs or os.path.join(self.src, "htdocs"))
        self.port = port or free_port()
        self.responder_args = list(responder_args)
        self.keep = keep
        self.valgrind = valgrind
        self.tls = tls
        self.nginx_http = nginx_http
        self.nginx_server = nginx_server
        self.start_timeout = start_timeout
        self._made_dir = base_dir is None
        self.dir = os.path.abspath(base_dir or tempfile.mkdtemp(prefix="tailgate-stack."))
        os.makedirs(self.dir, exist_ok=True)
        self.ring_dir = os.path.abspath(ring_dir or os.path.join(self.dir, "ring"))
        self.prefix = os.path.join(self.dir, "nginx")
        self.socket = os.path.join(self.dir, "fcgi.sock")
        self.cert = os.path.join(self.prefix, "cert.pem") if tls else None
        self._key = os.path.join(self.prefix, "key.pem") if tls else None
        self.nginx_user, self.socket_group = self._nginx_identity()
        self.responders = []
        self.responder_exits = []
        self.feeds = []
        self.nginx = None
        self._listen = None
        self._started = False

    # ---- lifecycle ----

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def start(self):
        if self._started:
            return self
        _live.append(self)
        if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
            signal.signal(signal.SIGTERM, _on_term)
        os.makedirs(self.ring_dir, exist_ok=True)
        os.makedirs(os.path.join(self.prefix, "tmp"), exist_ok=True)
        if os.geteuid() == 0:
            # nginx's workers run as nobody: they must reach the socket.
            for d in (self.dir, self.prefix):
                os.chmod(d, 0o755)
        self._started = True
        try:
            if self.n_responders > 0:
                self.start_responders()
            self._start_nginx()
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self):
        if self in _live:
            _live.remove(self)
        for f in self.feeds:
            f.quit()
        self.feeds = []
        self.stop_responders()
        if self._listen is not None:
            self._listen.close()
            self._listen = None
        if self.nginx is not None:
            self._terminate(self.nginx)
            self.nginx = None
        if self._made_dir and not self.keep and os.path.isdir(self.dir):
            shutil.rmtree(self.dir, ignore_errors=True)
        self._started = False

    @staticmethod
    def _terminate(proc, timeout=10):
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    # ---- the responder ----

    def _responder_cmd(self):
        cmd = [os.path.join(self.build, "tailgate-fcgi"), "--ring-dir", self.ring_dir]
        if self.workers > 1:
            cmd += ["--workers", str(self.workers)]
        cmd += self.responder_args
        if self.valgrind:
            cmd = valgrind_cmd("%s/valgrind.%%p.log" % self.dir) + cmd
        return cmd

    def _nginx_identity(self):
        """(user, group) nginx's workers run as; (None, None) when not root
        (they run as this user).  As root: nobody, unless nobody could not
        reach htdocs (a clone under /root): then root, so static files work."""
        if os.geteuid() != 0:
            return None, None
        try:
            pwd.getpwnam("nobody")
        except KeyError:
            return "root", "root"
        if not _world_traversable(self.htdocs):
            return "root", "root"
        return "nobody", "nogroup" if _group_exists("nogroup") else "nobody"

    def socket_args(self):
        """tailgate-fcgi arguments for a responder of the caller's own on
        st.socket that nginx's workers may connect to (mode 0660, their
        group)."""
        return ["--socket", self.socket] + (
            ["--socket-group", self.socket_group] if self.socket_group else [])

    def give_socket(self, path):
        """Make a socket the stack (not the responder) bound like the
        responder's own: mode 0660, group nginx's workers'."""
        os.chmod(path, 0o660)
        if self.socket_group:
            import grp
            os.chown(path, -1, grp.getgrnam(self.socket_group).gr_gid)

    def start_responders(self, n=None):
        """Start n (default: as configured) responder processes, each with
        the listening socket on fd 0 (as spawn-fcgi passes it)."""
        n = self.n_responders if n is None else n
        if self._listen is None:
            if os.path.exists(self.socket):
                os.unlink(self.socket)
            self._listen = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self._listen.bind(self.socket)
            self.give_socket(self.socket)
            self._listen.listen(4096)
        env = dict(os.environ)
        env.pop("LISTEN_FDS", None)
        env.pop("LISTEN_PID", None)
        for i in range(n):
            log = open(os.path.join(self.dir, "responder.%d.log" % len(self.responders)), "ab")
            p = subprocess.Popen(self._responder_cmd(), stdin=self._listen.fileno(),
                                 stdout=log, stderr=log, env=env)
            log.close()
            self.responders.append(p)

    def stop_responders(self):
        """SIGTERM every responder and wait; their exit statuses are kept in
        st.responder_exits (0: a clean stop; sanitizer builds exit non-zero
        on a leak or error)."""
        for i, p in enumerate(self.responders):
            self._terminate(p, timeout=30 if self.valgrind else 10)
            self.responder_exits.append((p.returncode, self.responder_log(i)))
        self.responders = []

    def kill_responder(self, i=0, sig=signal.SIGKILL):
        """Send responder i a signal (default SIGKILL: a crash), reap it and
        drop it from st.responders (its status goes to st.responder_exits);
        st.start_responders(1) starts a replacement on the same socket."""
        p = self.responders.pop(i)
        if p.poll() is None:
            p.send_signal(sig)
        p.wait()
        self.responder_exits.append((p.returncode, self.responder_log(i)))
        return p.returncode

    def sanitizer_reports(self):
        """The sanitizer lines (util.sanitizer_reports) of every responder
        log of this stack, whole (responder_log keeps only the tail, and a
        race is reported when it happens, not at exit)."""
        lines = []
        if not os.path.isdir(self.dir):
            return lines
        for name in sorted(os.listdir(self.dir)):
            if name.startswith("responder.") and name.endswith(".log"):
                with open(os.path.join(self.dir, name), errors="replace") as f:
                    lines += ["%s: %s" % (name, l) for l in sanitizer_reports(f.read())]
        return lines

    @property
    def responder_pids(self):
        return [p.pid for p in self.responders]

    def responder_log(self, i=0):
        return tail(os.path.join(self.dir, "responder.%d.log" % i), 200)

    # ---- nginx ----

    def _snippet(self):
        with open(os.path.join(self.src, "nginx", "tailgate.conf")) as f:
            text = f.read()
        text = text.replace("unix:/run/tailgate/fcgi.sock", "unix:" + self.socket)
        if self.cache:
            # The snippet turns any inherited cache off; the optional
            # block's `fastcgi_cache tailgate;` takes that line's place.
            text = re.sub(r"(?m)^\s*fastcgi_cache off;.*\n", "", text)
            for directive in ("fastcgi_cache tailgate;", "fastcgi_cache_key ",
                              "fastcgi_cache_valid ", "fastcgi_cache_lock ",
                              "add_header X-Cache-Status "):
                text = text.replace("# " + directive, directive)
            if self.cache_lock:
                text = text.replace("fastcgi_cache_lock off;", "fastcgi_cache_lock on;")
        path = os.path.join(self.prefix, "tailgate.conf")
        with open(path, "w") as f:
            f.write(text)
        # The snippet includes fastcgi_params, relative to nginx's conf dir.
        params = os.path.join(self.prefix, "fastcgi_params")
        if os.path.exists("/etc/nginx/fastcgi_params"):
            shutil.copyfile("/etc/nginx/fastcgi_params", params)
        else:
            with open(params, "w") as f:
                for name, var in (("QUERY_STRING", "query_string"),
                                  ("REQUEST_METHOD", "request_method"),
                                  ("CONTENT_TYPE", "content_type"),
                                  ("CONTENT_LENGTH", "content_length"),
                                  ("SCRIPT_NAME", "fastcgi_script_name"),
                                  ("REQUEST_URI", "request_uri"),
                                  ("DOCUMENT_URI", "document_uri"),
                                  ("SERVER_PROTOCOL", "server_protocol"),
                                  ("REMOTE_ADDR", "remote_addr")):
                    f.write("fastcgi_param %s $%s;\n" % (name, var))
        return path

    def _start_nginx(self):
        with open(os.path.join(self.src, "nginx", "nginx.conf")) as f:
            conf = f.read()
        user = ""
        if self.nginx_user == "root":
            user = "user root;"
        elif self.nginx_user is not None:
            user = "user %s %s;" % (self.nginx_user, self.socket_group)
        tls = ("", "")
        if self.tls:
            self._make_certificate()
            tls = (" ssl http2", "ssl_certificate %s; ssl_certificate_key %s;" % (self.cert, self._key))
        subst = {
            "@SSL_HTTP2@": tls[0], "@CERTIFICATE@": tls[1],
            "@PREFIX@": self.prefix, "@PORT@": str(self.port), "@FCGI_SOCKET@": self.socket,
            "@HTDOCS@": self.htdocs, "@WORKERS@": str(self.nginx_workers),
            "@CONNECTIONS@": str(self.connections), "@NOFILE@": str(self.nofile),
            "@SNIPPET@": self._snippet(), "@USER@": user,
            "@CACHE_PATH@": ("fastcgi_cache_path %s/cache levels=1:2 keys_zone=tailgate:10m "
                             "max_size=64m inactive=2m use_temp_path=off;" % self.prefix
                             if self.cache else ""),
        }
        for k, v in subst.items():
            conf = conf.replace(k, v)
        for marker, extra in (("http {\n", self.nginx_http),
                              ("server_name localhost;\n", self.nginx_server)):
            if extra:
                if marker not in conf:
                    raise StackError("nginx/nginx.conf has no %r to put %r after" %
                                     (marker.strip(), extra[:60]))
                conf = conf.replace(marker, marker + extra + "\n", 1)
        path = os.path.join(self.prefix, "nginx.conf")
        with open(path, "w") as f:
            f.write(conf)
        log = open(os.path.join(self.prefix, "nginx.log"), "ab")
        self.nginx = subprocess.Popen([nginx_bin(), "-p", self.prefix, "-c", path, "-e", "stderr"],
                                      stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        log.close()

    def _make_certificate(self):
        """A self-signed certificate for 127.0.0.1 and localhost, made once
        per stack (clients trust st.cert, or skip verification)."""
        if os.path.exists(self.cert):
            return
        try:
            r = subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                                "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
                                "-subj", "/CN=127.0.0.1",
                                "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
                                "-keyout", self._key, "-out", self.cert],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        except OSError as e:
            raise StackError("cannot run openssl to make the TLS certificate: %s" % e)
        if r.returncode != 0:
            raise StackError("openssl req -x509 failed (%d): %s" % (r.returncode, r.stdout.strip()))
        # nginx's master reads both before it drops privileges.
        os.chmod(self._key, 0o600)

    def reload_nginx(self):
        """SIGHUP to nginx's master: new workers take new connections, the
        old ones finish their requests and exit.  Waits until /healthz
        answers again."""
        self.nginx.send_signal(signal.SIGHUP)
        self.wait_ready()

    def restart_nginx(self):
        """Stop nginx (SIGTERM: fast shutdown, open connections dropped) and
        start it again on the same port; waits until ready."""
        self._terminate(self.nginx)
        self._start_nginx()
        self.wait_ready()

    def nginx_log(self):
        return tail(os.path.join(self.prefix, "nginx.log"), 50)

    def wait_ready(self, timeout=None):
        """Poll until nginx answers and (with a responder) /healthz is 200."""
        deadline = time.monotonic() + (timeout or self.start_timeout)
        last = None
        while time.monotonic() < deadline:
            if self.nginx.poll() is not None:
                raise StackError("nginx exited (%s):\n%s" % (self.nginx.returncode,
                                                             self.nginx_log()))
            for i, p in enumerate(self.responders):
                if p.poll() is not None:
                    raise StackError("responder exited (%s):\n%s" % (p.returncode,
                                                                     self.responder_log(i)))
            try:
                status, _, _ = self.get("/healthz", timeout=2)
                if status == 200 or (not self.responders and status in (502, 504)):
                    return
                last = status
            except OSError as e:
                last = e
            time.sleep(0.05)
        raise StackError("stack not ready after %ss (last: %r)\nnginx:\n%s\nresponder:\n%s" %
                         (timeout or self.start_timeout, last, self.nginx_log(),
                          self.responder_log()))

    # ---- feeds ----

    def ringfeed(self, name, columns, size=1 << 20, base=1, starting=False):
        log = open(os.path.join(self.dir, "ringfeed.%s.log" % name), "ab")
        f = RingFeed(os.path.join(self.build, "tests", "ringfeed"), self.ring_dir, name, columns,
                     size=size, base=base, starting=starting, log=log)
        log.close()
        self.feeds.append(f)
        return f

    # ---- HTTP ----

    def url(self, path):
        return "%s://127.0.0.1:%d%s" % ("https" if self.tls else "http", self.port, path)

    def get(self, path, headers=None, timeout=40, method="GET"):
        """One request on a fresh connection: (status, headers dict (lower-case
        names), body bytes)."""
        if self.tls:
            ctx = ssl.create_default_context(cafile=self.cert)
            c = http.client.HTTPSConnection("127.0.0.1", self.port, timeout=timeout, context=ctx)
        else:
            c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            c.request(method, path, headers=headers or {})
            r = c.getresponse()
            body = r.read()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, body
        finally:
            c.close()

    def get_json(self, path, headers=None, timeout=40):
        status, _, body = self.get(path, headers=headers, timeout=timeout)
        try:
            return status, json.loads(body)
        except ValueError:
            raise StackError("%s: %d, not JSON: %r" % (path, status, body[:200]))


def _world_traversable(path):
    """Can any user reach path (every directory on the way o+x)?"""
    path = os.path.abspath(path)
    while True:
        try:
            if not os.stat(path).st_mode & 0o001:
                return False
        except OSError:
            return True  # missing htdocs: nothing to protect
        parent = os.path.dirname(path)
        if parent == path:
            return True
        path = parent


def _group_exists(name):
    try:
        import grp
        grp.getgrnam(name)
        return True
    except (KeyError, ImportError):
        return False


def _main(argv):
    import argparse
    ap = argparse.ArgumentParser(prog="stack.py", description="a private nginx + tailgate-fcgi")
    ap.add_argument("mode", choices=["run", "serve"])
    ap.add_argument("--responders", type=int, default=1)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--ring-dir")
    ap.add_argument("--htdocs")
    ap.add_argument("--port", type=int)
    ap.add_argument("--cache", action="store_true")
    ap.add_argument("--nginx-workers", type=int, default=1)
    ap.add_argument("--connections", type=int, default=4096)
    ap.add_argument("--nofile", type=int)
    ap.add_argument("--responder-arg", action="append", default=[],
                    help="an extra tailgate-fcgi argument (repeatable)")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--tls", action="store_true", help="TLS and HTTP/2, self-signed")
    if "--" in argv:
        i = argv.index("--")
        argv, cmd = argv[:i], argv[i + 1:]
    else:
        cmd = []
    a = ap.parse_args(argv)
    with Stack(responders=a.responders, workers=a.workers, ring_dir=a.ring_dir,
               htdocs=a.htdocs, port=a.port, cache=a.cache, keep=a.keep,
               nginx_workers=a.nginx_workers, connections=a.connections, nofile=a.nofile,
               responder_args=a.responder_arg, tls=a.tls) as st:
        env = dict(os.environ, TAILGATE_URL=st.url("/"), TAILGATE_PORT=str(st.port),
                   TAILGATE_RING_DIR=st.ring_dir, TAILGATE_FCGI_SOCKET=st.socket,
                   TAILGATE_RESPONDER_PIDS=" ".join(map(str, st.responder_pids)),
                   TAILGATE_NGINX_PID=str(st.nginx.pid))
        if a.mode == "run":
            if not cmd:
                ap.error("run needs a command after --")
            return subprocess.call(cmd, env=env)
        print("tailgate stack at %s (ring dir %s); Ctrl-C stops it" % (st.url("/"), st.ring_dir),
              flush=True)
        try:
            signal.sigwait({signal.SIGINT, signal.SIGTERM})
        except KeyboardInterrupt:
            pass
        return 0


if __name__ == "__main__":
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM}) \
        if len(sys.argv) > 1 and sys.argv[1] == "serve" else None
    sys.exit(_main(sys.argv[1:]))
