"""stack_cpu.py - the CPU benches' server: a private nginx + tailgate-fcgi
(tests/lib/stack.py, loopback only) and the CPU time its processes use.
bench/gzip_cost.py and bench/multifeed_cost.py measure with it.

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
    from stack_cpu import bench_stack, cpu_s, nginx_pids

    with bench_stack(["--gzip-level", "1"]) as st:   # started; stopped after
        feed = st.ringfeed("auction", columns)
        before = cpu_s(nginx_pids(st) + st.responder_pids)

    bench_stack(responder_args, **kw)   a started Stack (kw: more Stack()
                                        arguments, e.g. connections=N)
    nginx_pids(st)     nginx's master and its workers
    cpu_s(pids)        CPU seconds of pids and all their threads so far

Importing it puts tests/lib on sys.path (stack, tap, util import from there).
"""
import contextlib
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                                "tests", "lib"))
from stack import Stack  # noqa: E402

__all__ = ["bench_stack", "cpu_s", "nginx_pids"]


@contextlib.contextmanager
def bench_stack(responder_args, **kw):
    """A Stack with these tailgate-fcgi arguments, started; stopped when
    the block ends, whatever ends it."""
    st = Stack(responder_args=list(responder_args), **kw).start()
    try:
        yield st
    finally:
        st.stop()


def cpu_s(pids):
    """CPU seconds of pids and all their threads: the scheduler's own
    nanosecond count (/proc/PID/task/TID/schedstat), not 10 ms ticks.  A
    process or thread gone meanwhile counts for nothing."""
    total = 0
    for pid in pids:
        try:
            tids = os.listdir("/proc/%d/task" % pid)
        except OSError:
            continue
        for tid in tids:
            try:
                with open("/proc/%d/task/%s/schedstat" % (pid, tid)) as f:
                    total += int(f.read().split()[0])
            except OSError:
                pass
    return total / 1e9


def children(pid):
    """The pids whose parent is pid (from /proc/PID/stat)."""
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open("/proc/%s/stat" % d) as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(d))
            except OSError:
                pass
    return out


def nginx_pids(st):
    """nginx's master and its workers (the workers of now: read after a
    reload again)."""
    return [st.nginx.pid] + children(st.nginx.pid)
