"""tap.py - TAP output and polling for the Python tests.

    from tap import ok, done, wait_for
    ok(cond, "what was checked", diag)   # prints "ok N - ..." / "not ok N - ..."
    wait_for(lambda: ..., timeout=20)    # the condition's value, polled
    sys.exit(done())                     # prints "1..N"; 1 if any failed
"""
import time

_n = 0
_failed = 0


def ok(cond, msg, diag=None):
    """One TAP line; on failure the last 15 lines of diag as comments.
    Returns cond."""
    global _n, _failed
    _n += 1
    if not cond:
        _failed += 1
        if diag:
            for line in str(diag).splitlines()[-15:]:
                print("# " + line)
    print("%s %d - %s" % ("ok" if cond else "not ok", _n, msg), flush=True)
    return cond


def done():
    """Print the plan; the exit status: 1 when a check failed."""
    print("1..%d" % _n, flush=True)
    return 1 if _failed else 0


def wait_for(cond, timeout=20, step=0.1):
    """Poll cond until it returns a true value or timeout seconds pass;
    that value, or the last one."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(step)
    return cond()
