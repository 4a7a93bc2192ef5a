#!/usr/bin/env python3
"""follower_check.py - the chaos followers' ring comparison, checked itself.

follower.compare_record is what tells chaos_pg that no batch was skipped,
doubled or altered, and that a net batch (docs/API.md, "Catching up") is
the net effect of the ring's batches it stands for.  A checker that
accepts anything proves nothing: here it is given records that are right
and records that are wrong in each way it must see, against a made-up
ring.  No server needed.  TAP output.
"""
import os
import sys

top_srcdir = os.environ.get("top_srcdir", os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(top_srcdir, "tests", "lib"))
sys.path.insert(0, os.path.join(top_srcdir, "tests", "chaos"))
from tap import done, ok  # noqa: E402
from follower import batch_delta, batch_digest, compare_record  # noqa: E402


def batch(ins, dels=()):
    return {"inserted": [[k, v] for k, v in ins], "deleted": [[k, v] for k, v in dels]}


# The ring after cursor 100: row 1 goes a -> b -> c, row 2 is inserted and
# deleted again, row 3 is inserted.
RING = [(101, batch([("1", "b")], [("1", "a")])),
        (102, batch([("2", "x")])),
        (103, batch([("1", "c")], [("1", "b")])),
        (104, batch([], [("2", "x")])),
        (105, batch([("3", "y")]))]
HELD = [(c, batch_digest(b), b) for c, b in RING]


def plain(c):
    b = dict(RING)[c]
    return (c, batch_digest(b))


def net(frm, to, b):
    return (to, batch_digest(b), frm, batch_delta(b))


def check(record, want_ok, what):
    problems = compare_record(100, record, HELD)
    ok(not problems if want_ok else bool(problems), what, "; ".join(problems) or "accepted")


def main():
    check([plain(c) for c in (101, 102, 103, 104, 105)], True, "every batch one by one: right")
    check([plain(c) for c in (101, 103, 104, 105)], False, "a batch skipped: seen")
    check([plain(c) for c in (101, 102, 103, 104)], False, "the last batch missing: seen")
    check([plain(101), (102, batch_digest(batch([("2", "z")]))), plain(103), plain(104),
           plain(105)], False, "a batch altered: seen")
    right = batch([("1", "c")], [("1", "a")])
    check([net(100, 104, right), plain(105)], True,
          "a net batch (100, 104] then a batch: right")
    check([plain(101), net(101, 110, batch([("1", "c"), ("3", "y")], [("1", "b")]))], True,
          "a batch then a net batch to the frontier past the ring's last batch: right")
    check([net(100, 104, batch([("1", "c")], [("1", "b")])), plain(105)], False,
          "a net batch deleting the wrong version: seen")
    check([net(100, 104, batch([("1", "c"), ("2", "x")], [("1", "a")])), plain(105)], False,
          "a net batch keeping a row inserted and deleted within its range: seen")
    check([net(101, 104, batch([("1", "c")], [("1", "b")])), plain(105)], False,
          "a net batch whose from skips the ring's batch 101: seen")
    check([net(100, 104, right)], False,
          "a net batch, then the ring's batch 105 never applied: seen")
    check([net(100, 104, right), net(104, 106, batch([("3", "y")])), plain(105)], False,
          "a batch after a net batch that already stood for it: seen")
    return done()


if __name__ == "__main__":
    sys.exit(main())
