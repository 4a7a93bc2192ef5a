#!/usr/bin/env python3
"""warehouse.py - tools/warehouse.py against a private PostgreSQL with the
shop: a signed alert re-orders its low item, a repeated Idempotency-Key
does nothing, a bad signature is 401, a bad body 400, an update of an
alert already handled (the item both deleted and inserted) re-orders
nothing, an item no longer low is not re-ordered.  TAP output.
"""
import hashlib
import hmac
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

top_srcdir = os.path.abspath(os.environ.get("top_srcdir", "."))
sys.path.insert(0, os.path.join(top_srcdir, "tests", "lib"))
from pg import PgCluster, pg_bindir, skip_unless_pg  # noqa: E402
from tap import done, ok  # noqa: E402

SECRET = b"s3cret-for-the-test"


COLS = [{"name": "item_id", "type": "int8"}, {"name": "name", "type": "text"},
        {"name": "category", "type": "text"}, {"name": "inventory", "type": "int4"},
        {"name": "threshold", "type": "int4"}]


def post(url, msg, key, secret=SECRET, raw=None):
    body = raw if raw is not None else json.dumps(msg).encode()
    sig = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
    req = urllib.request.Request(url, data=body, method="POST", headers={
        "Content-Type": "application/json", "X-Tailgate-Signature": sig, "Idempotency-Key": key})
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def main():
    skip = skip_unless_pg()
    if skip is not None:
        return skip
    bindir = pg_bindir()
    with PgCluster() as pg, tempfile.TemporaryDirectory() as tmp:
        pg.psql(file=os.path.join(top_srcdir, "sql", "shop", "shop.sql"))
        pg.psql("INSERT INTO items VALUES (1,'Mug','kitchen',4,3),(2,'Hat','apparel',9,50),"
                "(3,'Tent','outdoor',99,2)")
        secret = os.path.join(tmp, "secret")
        with open(secret, "wb") as f:
            f.write(SECRET + b"\n")
        wh = subprocess.Popen([sys.executable, os.path.join(top_srcdir, "tools", "warehouse.py"),
                               "--dsn", pg.dsn, "--secret-file", secret, "--restock", "40",
                               "--psql", os.path.join(bindir, "psql")],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            line = wh.stdout.readline()
            m = re.search(r"(http://127\.0\.0\.1:\d+/alerts)", line)
            if not ok(m, "the warehouse listens (%s)" % line.strip()):
                return 1
            url = m.group(1)
            inv = lambda i: int(pg.psql("SELECT inventory FROM items WHERE id = %d" % i))  # noqa: E731
            alert = {"feed": "low_stock", "cursor": "5", "columns": COLS,
                     "inserted": [[1, "Mug", "kitchen", 3, 10]], "deleted": []}
            st, body = post(url, alert, "low_stock:5")
            ok(st == 200 and body["restocked"] == [1] and inv(1) == 43,
               "a signed alert re-orders its item (%s %s, inventory %d)" % (st, body, inv(1)))
            st, body = post(url, alert, "low_stock:5")
            ok(st == 200 and body.get("duplicate") and inv(1) == 43, "the same Idempotency-Key again: nothing")
            pg.psql("UPDATE items SET inventory = 3 WHERE id = 1")
            st, body = post(url, alert, "low_stock:6", secret=b"wrong")
            ok(st == 401 and inv(1) == 3, "a bad signature is refused with 401 (%s)" % st)
            st, body = post(url, None, "low_stock:7", raw=b"{not json")
            ok(st == 400, "a body that is not JSON is 400 (%s)" % st)
            st, body = post(url, {"feed": "x", "columns": [{"name": "id"}], "inserted": []}, "low_stock:8")
            ok(st == 400 and "item_id" in body.get("message", ""), "a feed without item_id is 400: %s" % body)
            upd = {"feed": "low_stock", "cursor": "9", "columns": COLS,
                   "inserted": [[3, "Tent", "outdoor", 1, 10]], "deleted": [[3, "Tent", "outdoor", 2, 10]]}
            st, body = post(url, upd, "low_stock:9")
            ok(st == 200 and body["restocked"] == [] and inv(3) == 2,
               "an update of an alert already handled re-orders nothing")
            late = {"feed": "low_stock", "cursor": "10", "columns": COLS,
                    "inserted": [[2, "Hat", "apparel", 5, 10], [1, "Mug", "kitchen", 3, 10]], "deleted": []}
            st, body = post(url, late, "low_stock:10")
            ok(st == 200 and body["restocked"] == [1] and inv(2) == 50 and inv(1) == 43,
               "only items still low are re-ordered (%s)" % body)
            rows = dict(line.split("|") for line in pg.psql("SELECT * FROM check_shop()").splitlines())
            ok(set(rows.values()) == {"0"}, "the views are still exact")
        finally:
            wh.terminate()
            wh.wait(10)
    return done()


if __name__ == "__main__":
    sys.exit(main())
