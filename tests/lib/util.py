"""util.py - small helpers the Python tests share.

    from util import free_port, tail
    port = free_port()          # a TCP port on 127.0.0.1 free right now
    text = tail(path, 25)       # the last lines of a log file, "" if none
"""
import socket


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
