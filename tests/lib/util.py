"""util.py - small helpers the Python tests share.

    from util import free_port, tail, terminate
    port = free_port()          # a TCP port on 127.0.0.1 free right now
    text = tail(path, 25)       # the last lines of a log file, "" if none
    terminate(proc)             # SIGTERM a child, SIGKILL it after 10 s
    bad = sanitizer_reports(log_text)  # ASan/UBSan/TSan lines in a program's log
"""
import signal
import socket
import subprocess


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
