#!/usr/bin/env python3
"""warehouse.py - the shop's warehouse: receives low-stock alerts and
re-orders, which closes the shop's loop (purchases take stock, the
warehouse puts it back).

An HTTP receiver for the webhooks tailgate-hook POSTs (one per batch of the
low_stock feed):

    POST /alerts
    X-Tailgate-Signature: sha256=<hex of HMAC-SHA256(secret, body)>
    Idempotency-Key: <feed>:<cursor>
    {"feed": "low_stock", "cursor": C, "columns": [{"name", "type"}...],
     "inserted": [[row]...], "deleted": [[row]...]}

It checks the signature (401 when it does not verify), answers a key it has
seen with 200 and does nothing (at-least-once delivery repeats a batch),
and re-orders every item of `inserted` that is a new alert (not also in
`deleted`: that pair is an update of an alert already handled):

    UPDATE items SET inventory = inventory + N
    WHERE id = ITEM AND inventory < (SELECT low_stock_threshold FROM shop_config)

(the WHERE keeps a late or repeated alert from ordering twice).  400 for a
body that is not such JSON.  Answers 200 with {"restocked": [ids]}.

With --poll SECONDS it also restocks by itself, reading low_stock every so
often: the demo's fallback when tailgate-hook is not built.

Stdlib only; the database is reached with psql (--psql, default from
TAILGATE_PG_BIN or PATH).
"""
import argparse
import hashlib
import hmac
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MAX_BODY = 8 << 20
SEEN_MAX = 100000


def log(msg):
    print("warehouse: " + msg, flush=True)


class Warehouse:
    def __init__(self, dsn, psql, restock, secret):
        self.dsn, self.psql, self.restock, self.secret = dsn, psql, restock, secret
        self.seen = {}          # idempotency key -> time first seen
        self.lock = threading.Lock()
        self.stats = {"alerts": 0, "duplicates": 0, "rejected": 0, "restocked": 0}

    def sql(self, text):
        r = subprocess.run([self.psql, "-X", "-At", "-q", "-v", "ON_ERROR_STOP=1", "-d", self.dsn,
                            "-c", text], capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            raise RuntimeError("psql: %s" % r.stderr.strip())
        return r.stdout.strip()

    def reorder(self, ids):
        """Restock the items of ids that are still low; returns those restocked."""
        ids = sorted({int(i) for i in ids})
        if not ids:
            return []
        out = self.sql("UPDATE items SET inventory = inventory + %d WHERE id IN (%s) AND inventory <"
                       " (SELECT low_stock_threshold FROM shop_config WHERE id = 1) RETURNING id"
                       % (self.restock, ",".join(str(i) for i in ids)))
        done = [int(x) for x in out.split()] if out else []
        with self.lock:
            self.stats["restocked"] += len(done)
        if done:
            log("re-ordered %d of item%s %s" % (self.restock, "s" if len(done) > 1 else "",
                                               ", ".join(map(str, done))))
        return done

    def verify(self, body, header):
        if not header or not header.startswith("sha256="):
            return False
        want = hmac.new(self.secret, body, hashlib.sha256).hexdigest()
        return hmac.compare_digest(want, header[7:].strip().lower())

    def first_time(self, key):
        with self.lock:
            if key in self.seen:
                self.stats["duplicates"] += 1
                return False
            if len(self.seen) >= SEEN_MAX:  # forget the oldest half
                for k in sorted(self.seen, key=self.seen.get)[:SEEN_MAX // 2]:
                    del self.seen[k]
            self.seen[key] = time.time()
            return True

    def forget(self, key):
        with self.lock:
            self.seen.pop(key, None)


def new_alerts(msg):
    """Item ids of the batch's new alerts: inserted, not also deleted."""
    if not isinstance(msg, dict):
        raise ValueError("the body is not a JSON object")
    cols = msg.get("columns")
    if not isinstance(cols, list):
        raise ValueError("no columns")
    names = [c.get("name") if isinstance(c, dict) else c for c in cols]
    if "item_id" not in names:
        raise ValueError("the feed has no item_id column")
    i = names.index("item_id")
    ins, dels = msg.get("inserted", []), msg.get("deleted", [])
    if not isinstance(ins, list) or not isinstance(dels, list):
        raise ValueError("inserted and deleted must be arrays")
    old = {r[i] for r in dels if isinstance(r, list) and len(r) > i}
    out = []
    for r in ins:
        if not isinstance(r, list) or len(r) <= i or not isinstance(r[i], int):
            raise ValueError("a row without an integer item_id: %.80r" % (r,))
        if r[i] not in old:
            out.append(r[i])
    return out


def handler_for(wh):
    class H(BaseHTTPRequestHandler):
        server_version = "tailgate-warehouse"

        def log_message(self, fmt, *args):
            pass

        def reply(self, code, obj):
            body = json.dumps(obj).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            if self.path == "/stats":
                with wh.lock:
                    return self.reply(200, dict(wh.stats))
            self.reply(404, {"error": "not_found"})

        def do_POST(self):
            if self.path.split("?")[0] != "/alerts":
                return self.reply(404, {"error": "not_found", "message": "POST alerts to /alerts"})
            try:
                length = int(self.headers.get("Content-Length", ""))
            except ValueError:
                return self.reply(411, {"error": "length_required"})
            if length < 0 or length > MAX_BODY:
                return self.reply(413, {"error": "too_large"})
            body = self.rfile.read(length)
            if not wh.verify(body, self.headers.get("X-Tailgate-Signature")):
                with wh.lock:
                    wh.stats["rejected"] += 1
                log("rejected a POST: the signature does not verify")
                return self.reply(401, {"error": "bad_signature",
                                        "message": "X-Tailgate-Signature does not verify"})
            try:
                ids = new_alerts(json.loads(body))
            except ValueError as e:
                return self.reply(400, {"error": "bad_body", "message": str(e)})
            key = self.headers.get("Idempotency-Key") or ""
            if key and not wh.first_time(key):
                return self.reply(200, {"duplicate": True, "restocked": []})
            with wh.lock:
                wh.stats["alerts"] += 1
            try:
                done = wh.reorder(ids)
            except Exception as e:  # noqa: BLE001 - the sender retries
                wh.forget(key)
                log("re-order failed: %s" % e)
                return self.reply(503, {"error": "database", "message": str(e)})
            self.reply(200, {"restocked": done})
    return H


def poll_loop(wh, every, stop):
    while not stop.wait(every):
        try:
            out = wh.sql("SELECT item_id FROM low_stock")
            wh.reorder(out.split() if out else [])
        except Exception as e:  # noqa: BLE001 - keep polling
            log("poll failed: %s" % e)


def find_psql():
    d = os.environ.get("TAILGATE_PG_BIN")
    if d and os.access(os.path.join(d, "psql"), os.X_OK):
        return os.path.join(d, "psql")
    return shutil.which("psql") or "/usr/lib/postgresql/15/bin/psql"


def main():
    ap = argparse.ArgumentParser(prog="warehouse.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--dsn", required=True, help="libpq connection string of the shop's database")
    ap.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: a free one)")
    ap.add_argument("--secret-file", help="the shared HMAC secret (required unless --poll only)")
    ap.add_argument("--restock", type=int, default=50, help="units re-ordered per alert (default 50)")
    ap.add_argument("--poll", type=float, default=0,
                    help="also restock low_stock by itself every SECONDS (default: off)")
    ap.add_argument("--psql", default=find_psql(), help="the psql program")
    args = ap.parse_args()
    if args.restock <= 0:
        ap.error("--restock must be positive")
    secret = b""
    if args.secret_file:
        with open(args.secret_file, "rb") as f:
            secret = f.read().strip()
        if not secret:
            ap.error("the secret file %s is empty" % args.secret_file)
    elif not args.poll:
        ap.error("--secret-file is required (or --poll)")
    wh = Warehouse(args.dsn, args.psql, args.restock, secret)
    srv = ThreadingHTTPServer(("127.0.0.1", args.port), handler_for(wh))
    srv.daemon_threads = True
    stop = threading.Event()
    if args.poll:
        threading.Thread(target=poll_loop, args=(wh, args.poll, stop), daemon=True).start()
        log("restocking by itself every %g s" % args.poll)
    log("listening on http://127.0.0.1:%d/alerts" % srv.server_address[1])
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        srv.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
