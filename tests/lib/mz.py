#!/usr/bin/env python3
"""mz.py - the Materialize SUBSCRIBE test server (tests/mzserver) as a child process.

    import sys; sys.path.insert(0, "tests/lib")
    from mz import MzServer

    srv = MzServer(directory, [scenario.scn], tick_ms=20)   # started, ports read
    MzServer(directory, [...], extra_args=["--realtime", "--speed", "20"])
    srv.port, srv.control          # SQL port, control-channel port
    srv.ctl("status")              # one control command, its JSON reply
    srv.wait_hold("name"); srv.release("name")
    srv.events("subscribe")        # the --events log, parsed
    srv.stop()

The server's events go to DIR/mzserver.events, its stderr to
DIR/mzserver.err.  extra_args are more mzserver.py options.
"""
import json
import os
import re
import socket
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
MZSERVER = os.path.join(os.path.dirname(HERE), "mzserver", "mzserver.py")

__all__ = ["MzServer", "MZSERVER", "read_events"]


def read_events(path, kind=None):
    """mzserver's --events log (JSON lines), only events of kind if given;
    [] before the file exists.  A line being written is skipped."""
    out = []
    try:
        with open(path) as f:
            for line in f:
                try:
                    e = json.loads(line)
                except ValueError:
                    continue
                if kind is None or e.get("event") == kind:
                    out.append(e)
    except OSError:
        pass
    return out


class MzServer:
    def __init__(self, d, scenarios, tick_ms=None, extra_args=()):
        self.events_path = os.path.join(d, "mzserver.events")
        self.err_path = os.path.join(d, "mzserver.err")
        self.proc = subprocess.Popen(
            [sys.executable, MZSERVER, "--port", "0", "--control-port", "0",
             "--events", self.events_path]
            + (["--tick-ms", str(tick_ms)] if tick_ms else []) + list(extra_args) + [a for s in scenarios for a in ("--scenario", s)],
            stdout=subprocess.PIPE, stderr=open(self.err_path, "w"), text=True)
        self.port = self.control = None
        while self.port is None or self.control is None:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError("mzserver did not start: %s" % open(self.err_path).read())
            m = re.match(r"(PORT|CONTROL_PORT)=(\d+)", line)
            if m and m.group(1) == "PORT":
                self.port = int(m.group(2))
            elif m:
                self.control = int(m.group(2))

    def ctl(self, cmd, timeout=60):
        with socket.create_connection(("127.0.0.1", self.control), timeout=timeout) as s:
            s.sendall((cmd + "\n").encode())
            f = s.makefile("rb")
            return json.loads(f.readline())

    def wait_hold(self, name, timeout=40):
        return self.ctl("wait-hold %s %d" % (name, timeout), timeout + 5).get("ok")

    def release(self, name):
        return self.ctl("release %s" % name)

    def events(self, kind=None):
        return read_events(self.events_path, kind)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()
