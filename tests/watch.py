#!/usr/bin/env python3
"""watch.py - tailgate-watch against a real nginx + tailgate-fcgi stack
(tests/ringfeed writes the feed).  TAP output.

  - --once prints the table (header, rows; --sort numeric-aware and
    descending, --limit, --columns) and exits 0
  - line mode (stdout a pipe): the snapshot, then a change, appear as
    "+ ROW CURSOR" / "- ROW CURSOR"; --filter is passed to the server
  - a delete of a row not held starts again from a snapshot
  - a 410 (the watcher stopped while the ring dropped its cursor) is
    followed by a new snapshot: the rows it then holds are the feed's
  - under a pseudo-terminal: the alternate screen, the table, a change
    highlighted and the status line; a 503 shows "reconnecting" and keeps
    the rows, then live again; SIGWINCH redraws; SIGINT leaves the
    alternate screen and shows the cursor again, exit 0
  - a URL naming several feeds is refused with exit 2 at once

Environment: top_builddir (tailgate-watch, tailgate-fcgi, tests/ringfeed).
Skips (77) without nginx.
"""

import fcntl
import json
import os
import re
import pty
import shutil
import signal
import struct
import subprocess
import sys
import termios
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "lib"))
from stack import Stack  # noqa: E402
from tap import done, ok  # noqa: E402
from util import read_fd  # noqa: E402

BUILD = os.path.abspath(os.environ.get("top_builddir", "."))
WATCH = os.path.join(BUILD, "tailgate-watch")



def position(line):
    """A line-mode line with its cursor cut to the position: cursors are
    POSITION.IDENT (docs/API.md), and the identity is this ring's."""
    return re.sub(r"\.[0-9a-f]{8}$", "", line)

def read_until(fd, pred, timeout=15.0):
    """Read fd until pred(text so far) or timeout; the text."""
    return read_fd(fd, lambda b: pred(b.decode("utf-8", "replace")),
                   timeout).decode("utf-8", "replace")


def lines_until(proc, want, timeout=15.0):
    """Lines of proc.stdout until `want` lines are read or timeout."""
    out = []
    fd = proc.stdout.fileno()
    os.set_blocking(fd, False)
    text = read_until(fd, lambda t: t.count("\n") >= want, timeout)
    out = text.splitlines()
    return out


def main():
    if shutil.which("nginx") is None and not os.path.exists("/usr/sbin/nginx"):
        print("1..0 # SKIP nginx not installed")
        return 77
    with Stack() as st:
        feed = st.ringfeed("bids", [("id", "int8"), ("item", "text"), ("amount", "numeric")],
                           size=1 << 16)
        feed.batch(2, inserted=[[1, "anvil", 9.5], [2, "bell", 10], [3, "cart", 100]])
        url = st.url("/feeds/bids")

        # ---- --once ----
        r = subprocess.run([WATCH, "--once", "--sort", "-amount", url], capture_output=True,
                           text=True, timeout=30)
        lines = r.stdout.splitlines()
        ok(r.returncode == 0 and len(lines) == 4, "--once prints a header and 3 rows, exit 0",
           r.stdout + r.stderr)
        ok(lines[0].split() == ["id", "item", "amount"], "--once header names the columns",
           r.stdout)
        ok([ln.split()[1] for ln in lines[1:]] == ["cart", "bell", "anvil"],
           "--sort -amount is numeric and descending (100 > 10 > 9.5)", r.stdout)
        r = subprocess.run([WATCH, "--once", "--sort", "item", "--limit", "2", "--columns",
                            "item,id", url], capture_output=True, text=True, timeout=30)
        ok(r.returncode == 0 and r.stdout.split() == ["item", "id", "anvil", "1", "bell", "2"],
           "--columns item,id --sort item --limit 2", r.stdout + r.stderr)
        r = subprocess.run([WATCH, "--once", "--filter", "amount=gt.9.9", "--sort", "id", url],
                           capture_output=True, text=True, timeout=30)
        ok(r.returncode == 0 and [ln.split()[1] for ln in r.stdout.splitlines()[1:]] ==
           ["bell", "cart"], "--filter amount=gt.9.9 is applied by the server",
           r.stdout + r.stderr)
        r = subprocess.run([WATCH, "--once", "--filter", "nosuch=eq.1", url],
                           capture_output=True, text=True, timeout=30)
        ok(r.returncode == 1 and "nosuch" in r.stderr,
           "a filter the server refuses (400) ends with exit 1 and its message", r.stderr)
        r = subprocess.run([WATCH, "--once", "--sort", "nosuch", url], capture_output=True,
                           text=True, timeout=30)
        ok(r.returncode == 2 and "nosuch" in r.stderr, "--sort of an unknown column: exit 2",
           r.stderr)

        # ---- several feeds ----
        t0 = time.time()
        r = subprocess.run([WATCH, st.url("/feeds/bids,other")], capture_output=True, text=True,
                           timeout=30)
        ok(r.returncode == 2 and "several feeds" in r.stderr and time.time() - t0 < 5,
           "a URL naming several feeds: a clear error, exit 2, no retry", r.stderr)

        # ---- line mode ----
        p = subprocess.Popen([WATCH, "--timeout", "2", url], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
        first = lines_until(p, 3)
        ok(sorted(map(position, first)) == sorted(['+ [1,"anvil",9.5] 2', '+ [2,"bell",10] 2',
                                    '+ [3,"cart",100] 2']),
           "line mode: the snapshot as + lines with its cursor", "\n".join(first))
        feed.batch(3, inserted=[[4, "drum", 7]], deleted=[[1, "anvil", 9.5]])
        more = lines_until(p, 2)
        ok(list(map(position, more)) == ['- [1,"anvil",9.5] 3', '+ [4,"drum",7] 3'],
           "line mode: a change appears as - and + lines", "\n".join(more))

        # A delete of a row the watcher does not hold: it takes a new snapshot.
        feed.batch(4, inserted=[[5, "eel", 3]], deleted=[[77, "ghost", 1]])
        more2 = lines_until(p, 1)
        ok(list(map(position, more2)) == ['+ [5,"eel",3] 4'],
           "a delete of a row not held: a new snapshot, whose difference is the new row",
           "\n".join(more2))
        more += more2

        # 410: stop the watcher, let the ring drop its cursor, continue.
        p.send_signal(signal.SIGSTOP)
        feed.fill(2000, 5)
        info = feed.info()
        p.send_signal(signal.SIGCONT)
        want = json.loads(st.get("/feeds/bids")[2])
        rows = {}
        for b in want["batches"]:
            for row in b["inserted"]:
                rows[json.dumps(row, separators=(",", ":"))] = 1
        held = {}
        for ln in first + more:
            sign, row, _ = ln.split(" ")
            held[row] = held.get(row, 0) + (1 if sign == "+" else -1)
        deadline = time.time() + 20
        fd = p.stdout.fileno()
        buf = ""
        while time.time() < deadline:
            cur = {k: v for k, v in held.items() if v > 0}
            if cur == rows:
                break
            buf += read_until(fd, lambda t: t.endswith("\n"), 1.0)
            while "\n" in buf:
                ln, buf = buf.split("\n", 1)
                sign, row, _ = ln.split(" ")
                held[row] = held.get(row, 0) + (1 if sign == "+" else -1)
        cur = {k: v for k, v in held.items() if v > 0}
        ok(cur == rows and info["tail"] > 3,
           "after a 410 the watcher resyncs: its rows are the feed's (%d rows)" % len(rows),
           "held %d want %d, ring %r" % (len(cur), len(rows), info))
        p.terminate()
        p.wait(timeout=10)
        err = p.stderr.read().decode()
        ok("a deleted row was not held" in err and "gone" in err,
           "the watcher said why it resynced (a row not held, then a 410)", err[-500:])

        # ---- pseudo-terminal ----
        pid, fd = pty.fork()
        if pid == 0:
            os.execv(WATCH, [WATCH, "--timeout", "2", "--sort", "id", "--limit", "5", url])
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 20, 100, 0, 0))
        os.kill(pid, signal.SIGWINCH)
        text = read_until(fd, lambda t: "live" in t and "drum" in t)
        ok("\x1b[?1049h" in text, "a terminal gets the alternate screen", repr(text[:300]))
        ok("live" in text and "cursor" in text and "bids" in text,
           "the status line shows the feed, the state and the cursor", repr(text[-400:]))
        feed.batch(2100, inserted=[[0, "zither", 1]])
        text = read_until(fd, lambda t: "zither" in t)
        ok("\x1b[7m0" in text and "zither" in text,
           "a change appears, its row highlighted (reverse video)", repr(text[-600:]))
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 60, 0, 0))
        os.kill(pid, signal.SIGWINCH)
        text = read_until(fd, lambda t: "\x1b[30;1H" in t, 5)
        ok("\x1b[30;1H" in text, "SIGWINCH redraws at the new size (status line on row 30)",
           repr(text[-300:]))
        feed.cmd("state closed")  # the responder answers 503: back off, keep the rows
        text = read_until(fd, lambda t: "reconnecting" in t, 20)
        ok("reconnecting" in text and "zither" in text,
           "a 503 shows reconnecting in the status line, the rows kept", repr(text[-400:]))
        feed.cmd("state live")
        feed.batch(2101, inserted=[[-1, "yoyo", 2]])
        text = read_until(fd, lambda t: "yoyo" in t and "live" in t, 40)
        ok("yoyo" in text and "live" in text, "back live after the 503s, the next change shown",
           repr(text[-400:]))
        os.kill(pid, signal.SIGINT)
        text = read_until(fd, lambda t: False, 3)
        _, status = os.waitpid(pid, 0)
        ok(os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, "SIGINT: exit 0",
           "status %r" % status)
        ok(text.endswith("\x1b[?25h\x1b[?1049l"),
           "SIGINT leaves the alternate screen and shows the cursor again", repr(text[-200:]))
        os.close(fd)
    return done()


if __name__ == "__main__":
    sys.exit(main())
