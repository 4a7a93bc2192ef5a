#!/usr/bin/env python3
"""shop_stack.py - the real stack for the shop dashboard's browser test:
PostgreSQL with sql/shop/shop.sql, tailgated with the shop's feeds
(sql/shop/tailgated.conf), tailgate-shopgen (5 purchases/s, 300 pageviews/s:
calm, so a test's own purchase is what it sees), nginx + tailgate-fcgi
serving htdocs/.  Driven by shop.test.mjs over stdin/stdout, one JSON line
per command:

    -> {"url": "http://127.0.0.1:PORT/"}       once everything is up
    make-low          a purchase that leaves an item (not low yet) at 2 in stock
    -> {"item_id": N, "name": "..."}
    stop              -> {"ok": true}

`shop_stack.py --check` exits 0 when the machine can run it.
"""
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(TOP, "tests", "lib"))
from pg import PgCluster, PgError  # noqa: E402
from stack import Stack, builddir  # noqa: E402

FEEDS = ("item_summary", "low_stock", "orders_per_minute", "purchase_summary", "item_pageviews")


def reply(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def stop(p):
    if p and p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def make_low(pg):
    """Buy an item down to 2 in stock; retried if the generator moved it meanwhile."""
    for _ in range(20):
        row = pg.psql("SELECT id, name, inventory FROM items WHERE inventory >= 20"
                      " ORDER BY inventory DESC, id LIMIT 1")
        if not row:
            raise RuntimeError("no item with 20 or more in stock")
        iid, name, inv = row.split("|")
        try:
            pg.psql("INSERT INTO purchases (user_id, item_id, quantity, purchase_price)"
                    " SELECT 1, id, %d, price * %d FROM items WHERE id = %s"
                    % (int(inv) - 2, int(inv) - 2, iid))
            return {"item_id": int(iid), "name": name}
        except PgError:
            time.sleep(0.1)
    raise RuntimeError("could not make an item low in 20 tries")


def main():
    build = builddir()
    if sys.argv[1:] == ["--check"]:
        need = [os.path.join(build, x) for x in ("tailgated", "tailgate-fcgi", "tailgate-shopgen")]
        return 0 if all(os.access(x, os.X_OK) for x in need) else 1
    tmp = tempfile.mkdtemp(prefix="tailgate-shop-browser.")
    os.chmod(tmp, 0o755)
    ring_dir = os.path.join(tmp, "ring")
    os.makedirs(ring_dir, mode=0o755)
    pg = PgCluster()
    daemon = load = None
    try:
        pg.start()
        pg.psql(file=os.path.join(TOP, "sql", "shop", "shop.sql"))
        with open(os.path.join(TOP, "sql", "shop", "tailgated.conf")) as f:
            conf = f.read()
        conf = re.sub(r"(?m)^conninfo\s*=.*$", "conninfo = " + pg.dsn, conf)
        conf = re.sub(r"(?m)^ring_dir\s*=.*$", "ring_dir = " + ring_dir, conf)
        cpath = os.path.join(tmp, "tailgated.conf")
        with open(cpath, "w") as f:
            f.write(conf)
        log = open(os.path.join(tmp, "log"), "ab")
        load = subprocess.Popen([os.path.join(build, "tailgate-shopgen"), "-d", pg.dsn, "-p", "5",
                                 "-v", "300", "--inventory", "200", "-q", "--seed", "5"],
                                stdout=log, stderr=subprocess.STDOUT)
        daemon = subprocess.Popen([os.path.join(build, "tailgated"), "-c", cpath],
                                  stdout=log, stderr=subprocess.STDOUT)
        end = time.monotonic() + 60
        while not all(os.path.exists(os.path.join(ring_dir, f + ".ring")) for f in FEEDS):
            if time.monotonic() > end or daemon.poll() is not None:
                raise RuntimeError("tailgated made no rings")
            time.sleep(0.1)
        with Stack(ring_dir=ring_dir, htdocs=os.path.join(TOP, "htdocs")) as st:
            reply({"url": st.url("/")})
            for line in sys.stdin:
                cmd = line.split()
                if not cmd:
                    continue
                try:
                    if cmd[0] == "stop":
                        reply({"ok": True})
                        break
                    if cmd[0] == "make-low":
                        reply(make_low(pg))
                    else:
                        raise ValueError("unknown command %r" % cmd[0])
                except Exception as e:  # report, keep serving
                    reply({"error": "%s: %s" % (type(e).__name__, e)})
    except Exception as e:
        reply({"error": "%s: %s" % (type(e).__name__, e)})
        return 1
    finally:
        stop(load)
        stop(daemon)
        pg.stop()
        pg.cleanup()
        subprocess.call(["rm", "-rf", tmp])
    return 0


if __name__ == "__main__":
    sys.exit(main())
