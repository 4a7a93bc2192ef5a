#!/usr/bin/env python3
"""operator_pg.py - the mistakes an operator makes get an error that names
the fix, and lose nothing.

Against a private PostgreSQL 15 (tests/lib/pg.py), tailgated --check, the
daemon, the responder and nginx with the shipped snippet:

  * a configuration saved by a Windows editor (a UTF-8 byte-order mark,
    CRLF line ends, tabs around keys and values) is read as written and
    passes tailgated --check; one saved as UTF-16 is refused naming UTF-16;
  * a misspelt conninfo key is refused with the hint to check the keys'
    spelling (the word itself stays hidden: it may be part of a password);
  * a feed on a view is refused by --check and by the daemon as a view
    ("not a table", logical replication follows tables), never with the
    ALTER TABLE ... REPLICA IDENTITY advice that fails on a view, and
    nothing is created in the database for it;
  * a where filter that reads a column outside the replica identity
    (REPLICA IDENTITY DEFAULT: the primary key) would make the
    application's UPDATE and DELETE fail while the publication exists: it
    is refused by --check and by the daemon with the fix, no publication
    is left, and the application's UPDATE works while the daemon runs; a
    filter on the key passes, and --check reports a filter's syntax error;
  * ring sizes the ring_dir's filesystem cannot hold are a --check problem
    (the daemon would fail each feed at its first snapshot);
  * a responder started on a ring directory that does not exist, or that
    no tailgated has used, warns and names --ring-dir;
  * a second responder started on a running one's socket exits naming it,
    and the first keeps its socket (it used to take the path over and
    remove it at exit: the first ran on, unreachable); a stale socket file
    is replaced; a socket in a missing directory is named in the error;
  * the responder's socket is mode 0660 by default (another local user,
    nobody, cannot connect and so cannot bypass nginx's access rules);
    --socket-group gives it a group whose members (nginx's workers) can
    connect; an unknown group is an error naming it, leaving no socket;
    --socket-mode still overrides the mode;
  * the daemon's ring files are mode 0640, and a ring file an earlier
    version left 0644 is made 0640 at start; with ring_group the ring
    directory becomes that group's, mode 2750, every file in it the
    group's, and a member of the group (nobody) can read the rings while
    another user could not; an unknown ring_group is refused naming it;
  * nginx with the snippet and no responder answers the API's JSON error
    (502 responder_unavailable, no-store), not nginx's HTML page.

TAP output.
"""
import json
import os
import socket
import subprocess
import sys
import tempfile

top_srcdir = os.environ.get("top_srcdir", ".")
sys.path.insert(0, os.path.join(top_srcdir, "tests", "lib"))
sys.path.insert(0, os.path.join(top_srcdir, "tests"))
from pg import PgCluster, skip_unless_pg  # noqa: E402
from tap import done, ok, wait_for  # noqa: E402
from daemon_pg import TAILGATED, Daemon  # noqa: E402
from stack import Stack, builddir, nginx_bin  # noqa: E402


def check(conf, *extra):
    p = subprocess.run([TAILGATED, "--check"] + list(extra) + ["-c", conf],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return p.returncode, p.stdout


def write(path, data):
    with open(path, "wb") as f:
        f.write(data)
    os.chmod(path, 0o600)
    return path


def windows_files(pg, tmp, ring_dir):
    text = ("source\t=\tpostgresql\r\nconninfo = %s\r\nring_dir =\t%s\t\r\n\r\n"
            "[feed orders]\r\n\ttable\t= public.orders\r\n" % (pg.dsn, ring_dir))
    conf = write(os.path.join(tmp, "bom.conf"), b"\xef\xbb\xbf" + text.encode())
    rc, out = check(conf)
    ok(rc == 0 and "ok" in out, "a UTF-8 BOM, CRLF and tabs: --check passes", out)
    conf = write(os.path.join(tmp, "utf16.conf"), text.encode("utf-16"))
    rc, out = check(conf, "--syntax")
    ok(rc == 1 and "UTF-16" in out and "UTF-8" in out,
       "a UTF-16 file is refused naming UTF-16 and UTF-8", out)


def conninfo_typo(pg, tmp, ring_dir):
    conf = write(os.path.join(tmp, "typo.conf"),
                 ("source = postgresql\nconninfo = %s prot=5432\nring_dir = %s\n"
                  "[feed orders]\ntable = orders\n" % (pg.dsn, ring_dir)).encode())
    rc, out = check(conf, "--syntax")
    ok(rc == 1 and "bad conninfo" in out and "spelling" in out and ":2:" in out,
       "a misspelt conninfo key: its line and the hint to check the keys' spelling", out)


def view_feed(pg, tmp, ring_dir):
    conf = write(os.path.join(tmp, "view.conf"),
                 ("source = postgresql\nconninfo = %s\nring_dir = %s\n"
                  "[feed big]\ntable = big_orders\n" % (pg.dsn, ring_dir)).encode())
    rc, out = check(conf)
    ok(rc == 1 and "big_orders is a view, not a table" in out and "ALTER TABLE" not in out
       and "Materialize" in out,
       "--check: a view is named a view, with the fix (its table, or Materialize)", out)

    d = Daemon(pg, tempfile.mkdtemp(prefix="tailgate-op-ring.", dir=tmp),
               {"big": {"table": "big_orders"}})
    d.start()
    try:
        refused = wait_for(lambda: "is a view, not a table" in d.log_text(), timeout=20)
        log = d.log_text()
        ok(refused and "REPLICA IDENTITY" not in log,
           "the daemon refuses the view the same way", log[-1500:])
        pubs = pg.psql("SELECT count(*) FROM pg_publication WHERE pubname = 'tailgate_big'")
        slots = pg.psql("SELECT count(*) FROM pg_replication_slots "
                        "WHERE slot_name LIKE 'tailgate\\_big%'")
        ok(pubs == "0" and slots == "0", "nothing is created for it",
           "publications %s, slots %s" % (pubs, slots))
    finally:
        d.stop()


def where_filter(pg, tmp, ring_dir):
    def conf(name, where):
        return write(os.path.join(tmp, name + ".conf"),
                     ("source = postgresql\nconninfo = %s\nring_dir = %s\n"
                      "[feed w]\ntable = orders\nwhere = %s\n" % (pg.dsn, ring_dir, where))
                     .encode())
    rc, out = check(conf("where_bad", "amount > 100"))
    ok(rc == 1 and "refusing the where filter" in out and "amount" in out
       and "ALTER TABLE orders REPLICA IDENTITY FULL" in out,
       "--check: a filter on a column outside the identity, with the fix", out)
    rc, out = check(conf("where_key", "id > 1"))
    ok(rc == 0, "--check: a filter on the primary key passes", out)
    rc, out = check(conf("where_syntax", "amount >"))
    ok(rc == 1 and "where = amount >" in out and "42601" in out,
       "--check: a filter's syntax error is reported", out)
    left = pg.psql("SELECT count(*) FROM pg_publication WHERE pubname LIKE 'tailgate\\_check%'")
    ok(left == "0", "--check leaves no publication", left)

    d = Daemon(pg, tempfile.mkdtemp(prefix="tailgate-op-where.", dir=tmp),
               {"w": {"table": "orders", "where": "amount > 100"}})
    d.start()
    try:
        refused = wait_for(lambda: "refusing the where filter" in d.log_text(), timeout=20)
        ok(refused and "REPLICA IDENTITY FULL" in d.log_text(),
           "the daemon refuses the filter with the fix", d.log_text()[-1500:])
        try:
            pg.psql("UPDATE orders SET amount = amount + 1 WHERE id = 1; "
                    "UPDATE orders SET amount = amount - 1 WHERE id = 1")
            wrote = ""
        except Exception as e:  # noqa: BLE001
            wrote = str(e)
        ok(wrote == "", "the application's UPDATE works while the daemon runs", wrote)
        pubs = pg.psql("SELECT count(*) FROM pg_publication WHERE pubname = 'tailgate_w'")
        ok(pubs == "0", "no publication is left for it", pubs)
    finally:
        d.stop()


def ring_space(pg, tmp):
    ring_dir = tempfile.mkdtemp(prefix="tailgate-op-space.", dir="/dev/shm")
    try:
        vfs = os.statvfs(ring_dir)
        free = vfs.f_bavail * vfs.f_frsize
        n = free // (4 << 30) + 2
        if n > 200:
            ok(True, "# SKIP ring_dir space: %d GiB free is too much to overfill" % (free >> 30))
            return
        text = "source = postgresql\nconninfo = %s\nring_dir = %s\nring_size = 4G\n" % (
            pg.dsn, ring_dir)
        for i in range(n):
            text += "[feed f%d]\ntable = orders\n" % i
        rc, out = check(write(os.path.join(tmp, "space.conf"), text.encode()))
        ok(rc == 1 and ("ring_dir %s has" % ring_dir) in out and "lower ring_size" in out,
           "%d rings of 4G on %d MiB free: --check names the space and ring_size"
           % (n, free >> 20), out)
    finally:
        os.rmdir(ring_dir)


def responder_ring_dir(tmp):
    fcgi = os.path.join(builddir(), "tailgate-fcgi")
    empty = tempfile.mkdtemp(prefix="tailgate-op-empty.", dir=tmp)
    for d, what in ((os.path.join(tmp, "no-such-dir"), "No such file or directory"),
                    (empty, "has no tailgated.lock")):
        sock = os.path.join(tmp, "op.sock")
        log = os.path.join(tmp, "fcgi.log")
        with open(log, "w") as lf:
            p = subprocess.Popen([fcgi, "--socket", sock, "--ring-dir", d], stdout=lf,
                                 stderr=subprocess.STDOUT)

        def said():
            with open(log) as f:
                t = f.read()
            return what in t and "--ring-dir" in t
        warned = wait_for(said, timeout=10)
        p.terminate()
        p.wait(10)
        with open(log) as f:
            ok(warned, "responder on a ring dir: %s, a warning naming --ring-dir" % what,
               f.read())


def responder_socket(tmp):
    fcgi = os.path.join(builddir(), "tailgate-fcgi")
    ring = tempfile.mkdtemp(prefix="tailgate-op-sock.", dir=tmp)
    sock = os.path.join(tmp, "live.sock")
    log = os.path.join(tmp, "first.log")

    def connects():
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(sock)
            return True
        except OSError:
            return False
        finally:
            s.close()
    with open(log, "w") as lf:
        first = subprocess.Popen([fcgi, "--socket", sock, "--ring-dir", ring], stdout=lf,
                                 stderr=subprocess.STDOUT)
    try:
        ok(wait_for(connects, timeout=10), "the first responder listens")
        second = subprocess.Popen([fcgi, "--socket", sock, "--ring-dir", ring],
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            out, _ = second.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            second.terminate()
            out, _ = second.communicate()
            out = "(still running after 10 s: it took the socket over)\n" + out
        ok(second.returncode != 0 and sock in out and "--socket" in out
           and "another process" in out,
           "a second responder on a live socket exits naming it and the fix", out)
        ok(first.poll() is None and connects(),
           "the first responder still has its socket")
    finally:
        first.terminate()
        first.wait(10)
    ok(not os.path.exists(sock), "the first removes its socket at exit")

    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(sock)
    stale.close()
    with open(log, "w") as lf:
        p = subprocess.Popen([fcgi, "--socket", sock, "--ring-dir", ring], stdout=lf,
                             stderr=subprocess.STDOUT)
    try:
        ok(wait_for(connects, timeout=10), "a stale socket file is replaced")
    finally:
        p.terminate()
        p.wait(10)

    missing = os.path.join(tmp, "no-such-dir", "f.sock")
    r = subprocess.run([fcgi, "--socket", missing, "--ring-dir", ring], timeout=10,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    ok(r.returncode != 0 and ("cannot listen on " + missing) in r.stdout
       and "does its directory exist" in r.stdout,
       "a socket in a missing directory: the error names the path and the fix", r.stdout)


def responder_socket_access(tmp):
    import grp
    import pwd
    fcgi = os.path.join(builddir(), "tailgate-fcgi")
    ring = tempfile.mkdtemp(prefix="tailgate-op-perm.", dir=tmp)
    sock = os.path.join(tmp, "perm.sock")
    log = os.path.join(tmp, "perm.log")
    try:
        nobody = pwd.getpwnam("nobody")
    except KeyError:
        nobody = None

    def connect_as_nobody():
        """'ok' or the errno name of nobody's connect to sock (a forked
        child that drops to nobody, no supplementary groups)."""
        import errno
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                os.setgroups([])
                os.setgid(nobody.pw_gid)
                os.setuid(nobody.pw_uid)
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.connect(sock)
            except OSError as e:
                code = e.errno or 255
            finally:
                os._exit(code)
        code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
        return "ok" if code == 0 else errno.errorcode.get(code, str(code))

    def serve(args):
        with open(log, "w") as lf:
            p = subprocess.Popen([fcgi, "--socket", sock, "--ring-dir", ring] + args,
                                 stdout=lf, stderr=subprocess.STDOUT)
        wait_for(lambda: os.path.exists(sock) or p.poll() is not None, timeout=10)
        return p

    def stop(p):
        p.terminate()
        p.wait(10)

    p = serve([])
    try:
        st = os.stat(sock)
        ok(st.st_mode & 0o7777 == 0o660, "the socket's default mode is 0660", oct(st.st_mode))
        if os.geteuid() == 0 and nobody is not None and nobody.pw_gid != st.st_gid:
            ok(connect_as_nobody() == "EACCES",
               "another local user (nobody) cannot connect to the default socket")
    finally:
        stop(p)
    if os.geteuid() != 0 or nobody is None:
        ok(True, "# SKIP --socket-group: needs root and a user nobody")
        return
    group = grp.getgrgid(nobody.pw_gid).gr_name
    p = serve(["--socket-group", group])
    try:
        st = os.stat(sock)
        ok(st.st_gid == nobody.pw_gid and st.st_mode & 0o7777 == 0o660,
           "--socket-group %s: the socket belongs to that group, mode 0660" % group,
           (st.st_gid, oct(st.st_mode)))
        r = connect_as_nobody()
        ok(r == "ok", "a member of the group (nobody) connects", r)
    finally:
        stop(p)
    r = subprocess.run([fcgi, "--socket", sock, "--ring-dir", ring, "--socket-group",
                        "no-such-group-here"], timeout=10, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True)
    ok(r.returncode != 0 and "--socket-group no-such-group-here: no such group" in r.stdout
       and not os.path.exists(sock),
       "--socket-group with an unknown group: an error naming it, no socket left", r.stdout)
    p = serve(["--socket-mode", "0600"])
    try:
        st = os.stat(sock)
        ok(st.st_mode & 0o7777 == 0o600, "--socket-mode 0600 overrides the default",
           oct(st.st_mode))
    finally:
        stop(p)


def as_nobody_open(path):
    """'ok' or the errno name of a read-only open of path by nobody (a
    forked child that drops to nobody, no supplementary groups)."""
    import errno
    import pwd
    nobody = pwd.getpwnam("nobody")
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            os.setgroups([])
            os.setgid(nobody.pw_gid)
            os.setuid(nobody.pw_uid)
            os.close(os.open(path, os.O_RDONLY))
        except OSError as e:
            code = e.errno or 255
        finally:
            os._exit(code)
    code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    return "ok" if code == 0 else errno.errorcode.get(code, str(code))


def ring_permissions(pg, tmp):
    import grp
    import pwd
    if os.geteuid() != 0:
        ok(True, "# SKIP ring file permissions: needs root (a user nobody to read as)")
        return
    try:
        nobody = pwd.getpwnam("nobody")
    except KeyError:
        ok(True, "# SKIP ring file permissions: no user nobody")
        return
    group = grp.getgrgid(nobody.pw_gid).gr_name
    for ring_group in (None, group):
        ring_dir = tempfile.mkdtemp(prefix="tailgate-op-perm.", dir=tmp)
        os.chmod(ring_dir, 0o755)
        stale = os.path.join(ring_dir, "stale.snap")   # an earlier version's, 0644
        with open(stale, "w") as f:
            f.write("x")
        os.chmod(stale, 0o644)
        conf = os.path.join(tmp, "perm.conf")
        write(conf, ("source = postgresql\nconninfo = %s\nring_dir = %s\n%s"
                     "[feed perm]\ntable = orders\n"
                     % (pg.dsn, ring_dir, "ring_group = %s\n" % ring_group if ring_group
                        else "")).encode())
        log = os.path.join(tmp, "perm-daemon.log")
        with open(log, "w") as lf:
            p = subprocess.Popen([TAILGATED, "-c", conf], stdout=lf, stderr=subprocess.STDOUT)
        ring = os.path.join(ring_dir, "perm.ring")
        what = "ring_group = %s" % ring_group if ring_group else "no ring_group"
        try:
            made = wait_for(lambda: os.path.exists(ring), timeout=20)
            with open(log) as f:
                ok(made, "%s: the daemon creates its ring" % what, f.read()[-1500:])
            if not made:
                continue
            rs, ds, ss = os.stat(ring), os.stat(ring_dir), os.stat(stale)
            lock = os.stat(os.path.join(ring_dir, "tailgated.lock"))
            ok(rs.st_mode & 0o7777 == 0o640 and lock.st_mode & 0o7777 == 0o640,
               "%s: the ring and tailgated.lock are mode 0640" % what,
               (oct(rs.st_mode), oct(lock.st_mode)))
            ok(ss.st_mode & 0o7777 == 0o640,
               "%s: a file an earlier version left 0644 is made 0640" % what, oct(ss.st_mode))
            if ring_group is None:
                ok(as_nobody_open(ring) == "EACCES", "another user (nobody) cannot read the ring")
                continue
            ok(ds.st_gid == nobody.pw_gid and ds.st_mode & 0o7777 == 0o2750,
               "ring_group: the directory is the group's, mode 2750",
               (ds.st_gid, oct(ds.st_mode)))
            ok(rs.st_gid == nobody.pw_gid and ss.st_gid == nobody.pw_gid,
               "ring_group: the ring and the older file are the group's",
               (rs.st_gid, ss.st_gid))
            r = as_nobody_open(ring)
            ok(r == "ok", "ring_group: a member of the group (nobody) reads the ring", r)
        finally:
            p.terminate()
            p.wait(10)
    bad = os.path.join(tmp, "perm-bad.conf")
    write(bad, ("source = postgresql\nconninfo = %s\nring_group = no-such-group-here\n"
                "[feed perm]\ntable = orders\n" % pg.dsn).encode())
    rc, out = check(bad, "--syntax")
    ok(rc != 0 and 'bad ring_group "no-such-group-here": no such group' in out,
       "an unknown ring_group is refused, naming it", out)


def nginx_without_responder():
    if not os.access(nginx_bin(), os.X_OK):
        ok(True, "# SKIP no nginx")
        return
    with Stack(responders=0) as st:
        status, headers, body = st.get("/feeds/orders")
        try:
            js = json.loads(body)
        except ValueError:
            js = {}
        ok(status == 502 and js.get("error") == "responder_unavailable"
           and "tailgate-fcgi" in js.get("message", "")
           and headers.get("content-type", "").startswith("application/json")
           and "no-store" in headers.get("cache-control", ""),
           "nginx without the responder: a JSON 502 responder_unavailable, no-store",
           "%d %r %r" % (status, headers, body[:300]))


def main():
    skip = skip_unless_pg(TAILGATED)
    if skip is not None:
        return skip
    tmp = tempfile.mkdtemp(prefix="tailgate-operator.")
    os.chmod(tmp, 0o755)
    ring_dir = os.path.join(tmp, "ring")
    os.makedirs(ring_dir)
    pg = PgCluster()
    pg.start()
    try:
        pg.psql("CREATE TABLE orders (id int PRIMARY KEY, amount int); "
                "INSERT INTO orders VALUES (1, 50), (2, 500); "
                "CREATE VIEW big_orders AS SELECT * FROM orders WHERE amount > 100")
        windows_files(pg, tmp, ring_dir)
        conninfo_typo(pg, tmp, ring_dir)
        view_feed(pg, tmp, ring_dir)
        where_filter(pg, tmp, ring_dir)
        ring_space(pg, tmp)
        responder_ring_dir(tmp)
        responder_socket(tmp)
        responder_socket_access(tmp)
        ring_permissions(pg, tmp)
        nginx_without_responder()
    finally:
        pg.stop()
    return done()


if __name__ == "__main__":
    sys.exit(main())
