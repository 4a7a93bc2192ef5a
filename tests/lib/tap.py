"""tap.py - TAP output and polling for the Python tests.

    from tap import ok, skip, done, wait_for
    ok(cond, "what was checked", diag)   # prints "ok N - ..." / "not ok N - ..."
    ok(cond, "known gap", diag, todo="why")  # "... # TODO why"; not a failure
    skip("what", "why")                  # "ok N - what # SKIP why"
    wait_for(lambda: ..., timeout=20)    # the condition's value, polled
    sys.exit(done())                     # prints "1..N"; 1 if any failed
"""
import sys
import time

_n = 0
_failed = 0

# A failed check's diagnostics: up to this many lines, the first and the
# last ones when there are more (the start says what, the end how it ended).
DIAG_HEAD = 10
DIAG_TAIL = 30
DIAG_WIDTH = 400


def _diag_lines(diag):
    lines = str(diag).splitlines()
    if len(lines) > DIAG_HEAD + DIAG_TAIL:
        cut = len(lines) - DIAG_HEAD - DIAG_TAIL
        lines = lines[:DIAG_HEAD] + ["... (%d lines left out)" % cut] + lines[-DIAG_TAIL:]
    return lines


def ok(cond, msg, diag=None, todo=None):
    """One TAP line; on failure the diag text as comments.  With todo, a
    failure is reported as a TODO and does not fail the test.  Returns
    cond."""
    global _n, _failed
    _n += 1
    print("%s %d - %s%s" % ("ok" if cond else "not ok", _n, msg,
                            " # TODO %s" % todo if todo else ""))
    if not cond:
        if not todo:
            _failed += 1
        if diag:
            for line in _diag_lines(diag):
                print("#   " + line[:DIAG_WIDTH])
    sys.stdout.flush()
    return cond


def skip(msg, why):
    """One skipped check: "ok N - msg # SKIP why"."""
    global _n
    _n += 1
    print("ok %d - %s # SKIP %s" % (_n, msg, why), flush=True)


def failed():
    """How many checks failed so far (TODOs not counted)."""
    return _failed


def count():
    """How many checks ran so far."""
    return _n


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
