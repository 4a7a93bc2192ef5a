"""util.py - small helpers the Python tests share.

    from util import free_port, tail, terminate
    port = free_port()          # a TCP port on 127.0.0.1 free right now
    text = tail(path, 25)       # the last lines of a log file, "" if none
    terminate(proc)             # SIGTERM a child, SIGKILL it after 10 s
    bad = sanitizer_reports(log_text)  # ASan/UBSan/TSan lines in a program's log
    argv = valgrind_cmd(log_path) + [program, ...]  # memcheck, as make check runs it
    why = sanitized(program)    # "asan"/"tsan" when built with a sanitizer, else None
    errors, leaks = valgrind_summary(log_text)  # counts a valgrind log reports
"""
import os
import re
import select
import signal
import socket
import subprocess
import time

HERE = os.path.dirname(os.path.abspath(__file__))

# The suppressions of third-party noise, each commented (tests/valgrind.supp).
VALGRIND_SUPP = os.path.join(HERE, "..", "valgrind.supp")


def free_port():
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tail(path, lines=20):
    """The last lines of the file at path, or "" when it cannot be read."""
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return ""


def terminate(proc, timeout=10):
    """SIGTERM a child process, wait up to timeout seconds, then SIGKILL it."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def sanitizer_reports(text):
    """The lines of a log that AddressSanitizer, UBSan or ThreadSanitizer
    wrote (a build with --enable-asan or --enable-tsan reports there
    instead of crashing quietly: "WARNING: ThreadSanitizer: data race",
    its "SUMMARY: ..." line)."""
    return [line for line in text.splitlines()
            if "runtime error" in line or "Sanitizer" in line or "SUMMARY" in line]


def valgrind_cmd(log_path):
    """The memcheck command line tests/valgrind.sh uses, for a program run
    as argv = valgrind_cmd(log) + [program, ...]: exit status 99 on any
    memory error or a definite or indirect leak, the report in log_path
    (%p in it: the process id)."""
    return ["valgrind", "--tool=memcheck", "--error-exitcode=99", "--leak-check=full",
            "--errors-for-leak-kinds=definite,indirect",
            "--suppressions=%s" % os.path.abspath(VALGRIND_SUPP),
            "--log-file=%s" % log_path]


def sanitized(program):
    """"asan" or "tsan" when program was built with a sanitizer (valgrind
    cannot run those; SANITIZER, which tools/test sets, is believed first),
    else None."""
    env = os.environ.get("SANITIZER")
    if env:
        return env
    try:
        with open(program, "rb") as f:
            exe = f.read()
    except OSError:
        return None
    if b"__tsan_init" in exe:
        return "tsan"
    if b"__asan_init" in exe:
        return "asan"
    return None


def valgrind_summary(text):
    """(errors, definitely + indirectly lost bytes) a memcheck log reports;
    errors is None when the log has no ERROR SUMMARY (the process did not
    finish under valgrind)."""
    m = re.search(r"ERROR SUMMARY: ([\d,]+) errors", text)
    errors = int(m.group(1).replace(",", "")) if m else None
    lost = 0
    for kind in ("definitely", "indirectly"):
        m = re.search(kind + r" lost: ([\d,]+) bytes", text)
        if m:
            lost += int(m.group(1).replace(",", ""))
    return errors, lost


def read_fd(fd, pred, timeout=15.0):
    """Read fd (a pipe or a pty's master) until pred(the bytes so far) is
    true, the other end closes, or timeout seconds pass; the bytes read."""
    buf = b""
    end = time.time() + timeout
    while time.time() < end:
        r, _, _ = select.select([fd], [], [], 0.2)
        if r:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                break
            if not chunk:
                break
            buf += chunk
            if pred(buf):
                break
    return buf
