#!/usr/bin/env python3
"""filter_diff.py - row filters answer exactly as PostgreSQL does.

For a corpus of values of every column kind (int2/4/8 at their limits,
numerics of 1 to 40 digits with scales, NaN, +-Infinity, -0, float4 and
float8 edge values and subnormals, booleans, NULL, text with multi-byte
UTF-8 and escapes) and a corpus of constants, every (value, operator,
constant) triple is evaluated twice:

  tailgate    tests/filter_eval: the value as the database prints it, through
              the daemon's encoder; the filter through the responder's
              parser and compiler (1 match, 0 no match, E refused)
  PostgreSQL  SELECT value <op> constant on a real server, the constant an
              SQL numeric literal for number columns, text compared in the
              "C" collation; NULL (unknown) counts as no match, and a
              constant the server refuses for the column's type as E

and the answers must agree on every triple.  in.(a,b) is asked as
(x = a OR x = b), as the contract defines it; the one documented
difference from SQL, an in. list holding null matching null, is not in
the corpus.  Prints TAP, the corpus size and every difference.
"""
import os
import random
import subprocess
import sys
import urllib.parse

top_srcdir = os.environ.get("top_srcdir", ".")
top_builddir = os.environ.get("top_builddir", ".")
sys.path.insert(0, os.path.join(top_srcdir, "tests", "lib"))
from pg import PgCluster, PgError, skip_unless_pg  # noqa: E402
from tap import done, ok  # noqa: E402

EVAL = os.path.join(top_builddir, "tests", "filter_eval")
OPS = {"eq": "=", "neq": "<>", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}


def lit(s):
    return "'" + s.replace("'", "''") + "'"


def numerics():
    """Numerics of 1 to 40 digits with scales, signs, and the specials."""
    out = ["0", "-0", "1", "-1", "0.1", "0.10", "-0.1", "123.456", "-123.456", "100",
           "99.999", "NaN", "Infinity", "-Infinity", "0.000000000000000000000000000001",
           "-0.000000000000000000000000000002"]
    rnd = random.Random(17)
    for digits in range(1, 41, 3):
        for scale in (0, 2, digits // 2):
            s = "".join(rnd.choice("0123456789") for _ in range(digits)).lstrip("0") or "0"
            if scale and scale < len(s):
                s = s[:-scale] + "." + s[-scale:]
            out += [s, "-" + s]
    out += ["9" * 39, "1" + "0" * 38, "1" + "0" * 37 + "1", "123456789012345678901234567890123456789",
            "123456789012345678901234567890123456788", "9223372036854775807",
            "9223372036854775808", "-9223372036854775809"]
    return out


VALUES = {
    "int2": ["-32768", "-1", "0", "1", "100", "32767"],
    "int4": ["-2147483648", "-1", "0", "7", "100", "2147483647"],
    "int8": ["-9223372036854775808", "-9223372036854775807", "0", "100",
             "9007199254740993", "9223372036854775806", "9223372036854775807"],
    "numeric": numerics(),
    "float4": ["0.1", "-0", "0", "1", "100", "1e-45", "1.1754944e-38", "3.4028235e+38",
               "-3.4028235e+38", "16777217", "0.3", "NaN", "Infinity", "-Infinity", "123.456"],
    "float8": ["0.1", "-0", "0", "1", "100", "0.30000000000000004", "0.3", "5e-324",
               "2.2250738585072014e-308", "1.7976931348623157e+308", "9007199254740993",
               "1e+300", "NaN", "Infinity", "-Infinity", "123.456"],
    "bool": ["true", "false"],
    "text": ["a", "B", "", "abc", "ab", "caf\u00e9", "\u00e9", "\U0001f600", "a\"b", "tab\there",
             "back\\slash", "new\nline", "\uff21\uff22", "2024-01-02", "2024-1-2", "Z", "z",
             "null"],
}

NUM_CONSTS = ["0", "-0", "1", "-1", "0.1", "0.10", "0.100000001490116119384765625", "123.456",
              "-123.456", "100", "1e2", "1.5e2", ".5", "5.", "32767", "32768", "2147483647",
              "2147483648", "9223372036854775807", "9223372036854775808", "-9223372036854775808",
              "9007199254740992", "9007199254740993", "1e-45", "1.401298464324817e-45", "5e-324",
              "1e300", "1e-300", "3.4028235e38", "1.7976931348623157e308", "16777217", "NaN",
              "Infinity", "-Infinity", "inf", "-inf", "nan", "1e400", "1e-400",
              "123456789012345678901234567890123456789", "123456789012345678901234567890123456788",
              "0.30000000000000004", "0.3", "9" * 40, "0.000000000000000000000000000001", "abc",
              " 5", "5 ", " 5 ", "\t-1\n", "+5", "-.5", "1.e5", "1E5", "+Infinity", "+inf",
              "INFINITY", "00012", "1e+0005", "-0.0e10", "1e1001", "1e-1001", "1e", "e5", ".",
              "--1", "1e200000", "1e-20000", " NaN "]
TEXT_CONSTS = ["a", "B", "abc", "ab", "b", "caf\u00e9", "caf", "\U0001f600", "a\"b", "tab\there",
               "back\\slash", "\uff21", "2024-01-02", "2024-1-2", "2024-01-10", "Z", "z", "~"]
BOOL_CONSTS = ["true", "false", "yes", "no", "on", "off", "of", "o", "t", "f", "1", "0", "TRUE",
               "tr", "Fals", "y", "2", "truex", " true", "off "]


def consts_for(t):
    return {"bool": BOOL_CONSTS, "text": TEXT_CONSTS}.get(t, NUM_CONSTS)


def sql_const(t, c):
    if t == "text":
        return lit(c)
    if t == "bool":
        return lit(c) + "::bool"
    return lit(c) + "::numeric"


def canonical(pg):
    """Each value as the server prints it for its type (what the daemon
    receives), in hex, or None for NULL."""
    rows = []
    for t, vals in VALUES.items():
        for v in vals:
            rows.append((t, v))
    sql = "SELECT " + ", ".join(
        "encode(convert_to((%s::%s)::text, 'UTF8'), 'hex')" % (lit(v), t) for t, v in rows)
    out = pg.psql(sql).split("|")
    corpus = [(t, v, h) for (t, v), h in zip(rows, out)]
    for t in VALUES:
        corpus.append((t, None, None))
    return corpus


def refused_consts(pg):
    """Constants the server refuses for a column kind: {(type, const)}."""
    bad = set()
    for t in VALUES:
        for c in consts_for(t):
            probe = "SELECT 1 WHERE NULL::%s = %s" % (t, sql_const(t, c))
            try:
                pg.psql(probe)
            except PgError:
                bad.add((t, c))
    return bad


def triples(corpus):
    rnd = random.Random(5)
    for t, v, h in corpus:
        cs = consts_for(t)
        vexpr = "NULL::%s" % t if v is None else "%s::%s" % (lit(bytes.fromhex(h).decode()), t)
        if t == "text":
            vexpr = "(%s COLLATE \"C\")" % vexpr
        for c in cs:
            for op, sqlop in OPS.items():
                q = "x=%s.%s" % (op, urllib.parse.quote(c, safe=""))
                yield t, v, h, q, "coalesce(%s %s %s, false)" % (vexpr, sqlop, sql_const(t, c)), [c]
        for op, sqlop in (("eq", "IS NULL"), ("neq", "IS NOT NULL")):
            yield t, v, h, "x=%s.null" % op, "%s %s" % (vexpr, sqlop), []
        for _ in range(6):
            pick = rnd.sample([c for c in cs if '"' not in c and c != "null"], 3)
            inner = ",".join('"%s"' % c if set(c) & set(",()") else c for c in pick)
            q = "x=in.(%s)" % urllib.parse.quote(inner, safe="(),\"")
            # in. is eq. to any of the list (SQL's IN would first cast a
            # float4 column's list to float4: the contract defines in. as
            # the OR of eq.).
            yield t, v, h, q, "coalesce(%s, false)" % " OR ".join(
                "%s = %s" % (vexpr, sql_const(t, c)) for c in pick), pick


def main():
    skip = skip_unless_pg(EVAL)
    if skip is not None:
        return skip
    pg = PgCluster()
    pg.start()
    try:
        pg.psql("SET lc_messages = 'C'")
        corpus = canonical(pg)
        ok(len(corpus) > 100, "value corpus: %d values" % len(corpus))
        bad = refused_consts(pg)
        ok(("float8", "1e400") in bad and ("int8", "abc") in bad,
           "the server refuses %d (type, constant) pairs, e.g. 1e400 for float8" % len(bad))
        cases = list(triples(corpus))

        # tailgate's answers, one filter_eval run for the whole corpus.
        stdin = "".join("%s\t%s\t%s\n" % (t, "-" if h is None else "h" + h, q)
                        for t, v, h, q, e, cs in cases)
        ours = subprocess.run([EVAL], input=stdin, text=True,
                              stdout=subprocess.PIPE, check=True).stdout.splitlines()
        ok(len(ours) == len(cases), "filter_eval answered %d of %d lines" % (len(ours), len(cases)))

        # PostgreSQL's answers, in chunks of one VALUES list each.
        theirs = [None] * len(cases)
        todo = [i for i, c in enumerate(cases) if not any((c[0], k) in bad for k in c[5])]
        for i, c in enumerate(cases):
            if any((c[0], k) in bad for k in c[5]):
                theirs[i] = "E"
        for s in range(0, len(todo), 2000):
            chunk = todo[s:s + 2000]
            sql = "SELECT r FROM (VALUES %s) t(i, r) ORDER BY i" % ", ".join(
                "(%d, (%s)::int)" % (i, cases[i][4]) for i in chunk)
            for i, r in zip(chunk, pg.psql(sql).split("\n")):
                theirs[i] = r
        diffs = []
        for i, c in enumerate(cases):
            a = ours[i][:1] if i < len(ours) else "?"
            if a != theirs[i]:
                diffs.append((c, ours[i] if i < len(ours) else "?", theirs[i]))
        for c, a, b in diffs[:25]:
            print("# %s value %r %s: tailgate %s, PostgreSQL %s" % (
                c[0], c[1], urllib.parse.unquote(c[3]), a, b))
        print("# corpus: %d values, %d triples (%d the server refuses)" % (
            len(corpus), len(cases), sum(1 for t in theirs if t == "E")))
        ok(len(cases) >= 10000, "at least 10,000 triples: %d" % len(cases))
        ok(not diffs, "tailgate and PostgreSQL agree on every triple (%d differ)" % len(diffs))
    finally:
        pg.stop()
        pg.cleanup()
    return done()


if __name__ == "__main__":
    sys.exit(main())
