#!/usr/bin/env python3
"""shop_views.py - the shop's incrementally kept views equal their
definitions.  A private PostgreSQL with sql/shop/shop.sql; tailgate-shopgen
writes purchases and pageviews for a few seconds while a second connection
restocks low items (as the warehouse does) and an operator deletes some
pageviews and moves the low-stock threshold; then, quiesced, check_shop()
recomputes every derived table from the base tables and must find no
difference.  Also: purchases decrement inventory and never drive it below
zero, a purchase the stock cannot cover is refused.  TAP output.
"""
import os
import subprocess
import sys
import threading
import time

top_srcdir = os.path.abspath(os.environ.get("top_srcdir", "."))
top_builddir = os.path.abspath(os.environ.get("top_builddir", "."))
sys.path.insert(0, os.path.join(top_srcdir, "tests", "lib"))
from pg import PgCluster, pg_bindir, skip_unless_pg  # noqa: E402
from tap import done, failed, ok, wait_for  # noqa: E402


def main():
    skip = skip_unless_pg()
    if skip is not None:
        return skip
    with PgCluster() as pg:
        pg.psql(file=os.path.join(top_srcdir, "sql", "shop", "shop.sql"))
        pg.psql(file=os.path.join(top_srcdir, "sql", "shop", "shop.sql"))
        ok(True, "shop.sql loads twice (idempotent)")
        # Every table has a primary key and REPLICA IDENTITY FULL.
        bad = pg.psql("SELECT string_agg(c.relname, ',') FROM pg_class c JOIN pg_namespace s"
                      " ON s.oid = c.relnamespace WHERE s.nspname = 'public' AND c.relkind = 'r'"
                      " AND (c.relreplident <> 'f' OR NOT EXISTS (SELECT 1 FROM pg_index i"
                      " WHERE i.indrelid = c.oid AND i.indisprimary))")
        ok(bad == "", "every table has a primary key and REPLICA IDENTITY FULL (%s)" % (bad or "all"))

        gen = subprocess.Popen([os.path.join(top_builddir, "tailgate-shopgen"), "-d", pg.dsn,
                                "-p", "200", "-v", "2000", "--items", "30", "--inventory", "40",
                                "--seed", "11", "-t", "8", "--report", "0"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        stop = threading.Event()
        restocks = [0]

        def warehouse():
            # The warehouse's re-order, concurrently with the purchases.
            while not stop.is_set():
                out = pg.psql("WITH r AS (UPDATE items SET inventory = inventory + 25 WHERE id IN"
                              " (SELECT item_id FROM low_stock ORDER BY item_id LIMIT 3)"
                              " RETURNING 1) SELECT count(*) FROM r")
                restocks[0] += int(out or 0)
                time.sleep(0.05)
        th = threading.Thread(target=warehouse)
        th.start()
        # Change the data mid-run: once a few seconds' pageviews are in.
        wait_for(lambda: int(pg.psql("SELECT count(*) FROM pageviews") or 0) >= 4000, 30, 0.2)
        pg.psql("DELETE FROM pageviews WHERE id % 7 = 0")
        pg.psql("UPDATE shop_config SET low_stock_threshold = 15")
        out = gen.communicate(timeout=60)[0]
        stop.set()
        th.join()
        ok(gen.returncode == 0, "tailgate-shopgen ran 8 s and exited 0")
        counts = pg.psql("SELECT (SELECT count(*) FROM purchases), (SELECT count(*) FROM pageviews)")
        p, v = (int(x) for x in counts.split("|"))
        ok(p > 200 and v > 5000, "it wrote %d purchases and %d pageviews" % (p, v))
        ok(restocks[0] > 0, "the warehouse restocked %d times meanwhile" % restocks[0])
        rows = dict(line.split("|") for line in pg.psql("SELECT * FROM check_shop()").splitlines())
        for what in ("item_pageviews", "purchase_summary", "item_summary", "low_stock",
                     "orders_per_minute"):
            ok(rows.get(what) == "0", "%s equals its definition (%s rows differ)" % (what, rows.get(what)))
        nonempty = pg.psql("SELECT (SELECT count(*) FROM item_summary WHERE orders > 0),"
                           " (SELECT count(*) FROM orders_per_minute),"
                           " (SELECT count(*) FROM item_pageviews)")
        ok(all(int(x) > 0 for x in nonempty.split("|")), "the views are not empty (%s)" % nonempty)
        ok(pg.psql("SELECT count(*) FROM items WHERE inventory < 0") == "0", "no inventory below zero")
        # Inventory: initial stock - sold + restocked, per item (the catalog's
        # first stock is not stored, so check the sum moved by purchases).
        before = int(pg.psql("SELECT inventory FROM items WHERE id = 1"))
        pg.psql("INSERT INTO purchases (user_id, item_id, quantity, purchase_price) VALUES (1, 1, 1, 1)")
        ok(int(pg.psql("SELECT inventory FROM items WHERE id = 1")) == before - 1,
           "a purchase takes its quantity off the inventory")
        r = subprocess.run([os.path.join(pg_bindir(), "psql"), "-X", "-At", "-v", "ON_ERROR_STOP=1",
                            "-d", pg.dsn, "-c",
                            "INSERT INTO purchases (user_id, item_id, quantity, purchase_price)"
                            " VALUES (1, 1, %d, 1)" % (before + 1000)],
                           capture_output=True, text=True)
        ok(r.returncode != 0 and "out of stock" in r.stderr, "a purchase beyond the stock is refused")
        rows = dict(line.split("|") for line in pg.psql("SELECT * FROM check_shop()").splitlines())
        ok(set(rows.values()) == {"0"}, "still exact after the manual purchase: %s" % rows)
        pg.psql("SELECT reset_shop()")
        rows = dict(line.split("|") for line in pg.psql("SELECT * FROM check_shop()").splitlines())
        ok(set(rows.values()) == {"0"} and pg.psql("SELECT count(*) FROM purchase_summary") == "0",
           "reset_shop() empties the sums and stays exact")
        if failed():
            print("# shopgen: " + out.replace("\n", "\n# "))
    return done()


if __name__ == "__main__":
    sys.exit(main())
