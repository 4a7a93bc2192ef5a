#!/usr/bin/env python3
"""demo.py - run the auction-house demo: PostgreSQL, tailgated, nginx,
tailgate-fcgi and tailgate-loadgen, all private to this run.  `demo.py shop`
runs the shop instead: sql/shop/shop.sql, tailgate-shopgen, the shop's
feeds, the warehouse (tools/warehouse.py) and, when it is built,
tailgate-hook piping low_stock alerts to the warehouse.

Called by tools/demo after it installed and built; run it directly when
the programs are built (TAILGATE_BUILDDIR, default build/).  Everything
lives in one temporary directory (printed), removed on exit; the rings in
/dev/shm/tailgate-demo.PID.  SIGINT or SIGTERM stop, in order: the load
generator, nginx and the responder, the daemon (which removes its rings),
PostgreSQL.
"""
import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

TOP = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.join(TOP, "tests", "lib"))
from pg import PgCluster  # noqa: E402
from stack import Stack, builddir, free_port  # noqa: E402

FEEDS = ("winning_bids", "top_buyers", "auction_stats", "highest_bid_per_auction")
SHOP_FEEDS = ("item_summary", "low_stock", "orders_per_minute", "purchase_summary", "item_pageviews")
LOW_STOCK_BELOW = 10   # shop_config's default threshold, the hook's filter


class Stop(Exception):
    pass


def on_signal(signum, frame):
    raise Stop()


def say(msg):
    print("demo: " + msg, flush=True)


def tail(path, n=15):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return ""


def daemon_conf(path, conninfo, ring_dir, source=os.path.join(TOP, "sql", "tailgated.conf")):
    """sql/tailgated.conf (or source) with this cluster's conninfo and ring directory."""
    with open(source) as f:
        text = f.read()
    text = re.sub(r"(?m)^conninfo\s*=.*$", "conninfo = " + conninfo, text)
    text = re.sub(r"(?m)^ring_dir\s*=.*$", "ring_dir = " + ring_dir, text)
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, 0o600)   # it holds the conninfo


def wait_rings(daemon, ring_dir, log, timeout=60, feeds=FEEDS):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if all(os.path.exists(os.path.join(ring_dir, f + ".ring")) for f in feeds):
            return
        if daemon.poll() is not None:
            raise RuntimeError("tailgated exited (%d):\n%s" % (daemon.returncode, tail(log)))
        time.sleep(0.1)
    raise RuntimeError("tailgated made no rings in %d s:\n%s" % (timeout, tail(log)))


def stop(proc, name):
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        say("%s did not stop in 10 s, killing it" % name)
        proc.kill()
        proc.wait()


def main():
    ap = argparse.ArgumentParser(prog="tools/demo", description=__doc__.split("\n\n")[0])
    ap.add_argument("what", nargs="?", choices=("auction", "shop"), default="auction",
                    help="which demo (default: the auction house)")
    ap.add_argument("--purchases", default=None, help="shop: purchases per second (default 20)")
    ap.add_argument("--pageviews", default=None, help="shop: pageviews per second (default 1000)")
    ap.add_argument("--port", type=int, default=0, help="nginx port on 127.0.0.1 (default: a free one)")
    ap.add_argument("--rate", default=None,
                    help="bids per second (default: tailgate-loadgen's, like Materialize's AUCTION source)")
    ap.add_argument("--no-deps", action="store_true", help="do not run tools/deps.sh")
    ap.add_argument("--no-build", action="store_true", help="do not build; use TAILGATE_BUILDDIR")
    ap.add_argument("--keep", action="store_true", help="keep the run's directory (logs) afterwards")
    args = ap.parse_args()
    if args.port and not 0 < args.port < 65536:
        ap.error("--port must be 1..65535")

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    if args.what == "shop":
        return shop(args)
    build = builddir()
    tmp = tempfile.mkdtemp(prefix="tailgate-demo.")
    os.chmod(tmp, 0o755)
    ring_dir = "/dev/shm/tailgate-demo.%d" % os.getpid()
    os.makedirs(ring_dir, mode=0o755, exist_ok=True)
    pg = daemon = load = st = None
    dlog = os.path.join(tmp, "tailgated.log")
    llog = os.path.join(tmp, "loadgen.log")
    status = 0
    try:
        say("logs in " + tmp)
        say("starting PostgreSQL")
        pg = PgCluster(base_dir=os.path.join(tmp, "pg"))
        pg.start()
        pg.psql(file=os.path.join(TOP, "sql", "auction_house.sql"))

        conf = os.path.join(tmp, "tailgated.conf")
        daemon_conf(conf, pg.dsn, ring_dir)
        say("starting tailgated (%s)" % ", ".join(FEEDS))
        daemon = subprocess.Popen([os.path.join(build, "tailgated"), "-c", conf],
                                  stdout=open(dlog, "ab"), stderr=subprocess.STDOUT,
                                  start_new_session=True)
        wait_rings(daemon, ring_dir, dlog)

        say("starting nginx and tailgate-fcgi")
        st = Stack(ring_dir=ring_dir, htdocs=os.path.join(TOP, "htdocs"), port=args.port or None,
                   base_dir=os.path.join(tmp, "stack"), keep=args.keep)
        st.start()

        say("starting tailgate-loadgen")
        cmd = [os.path.join(build, "tailgate-loadgen"), "-d", pg.dsn, "--report", "0"]
        if args.rate:
            cmd += ["-r", str(args.rate)]
        load = subprocess.Popen(cmd, stdout=open(llog, "ab"), stderr=subprocess.STDOUT,
                                start_new_session=True)

        url = st.url("/")
        print("\n  tailgate demo: %s\n" % url
              + "    pages    %s  (auction.html, top10.html, feed.html)\n" % url
              + "    API      %s  (winning_bids, top_buyers, auction_stats, highest_bid_per_auction)\n"
              % st.url("/feeds/")
              + "    metrics  %s\n" % st.url("/metrics")
              + "  auctions end 10 s after they open: winning_bids fills within ~15 s.\n"
              + "  Ctrl-C stops everything.\n", flush=True)
        while True:
            for proc, name, log in ((daemon, "tailgated", dlog), (load, "tailgate-loadgen", llog)):
                if proc.poll() is not None:
                    raise RuntimeError("%s exited (%d):\n%s" % (name, proc.returncode, tail(log)))
            time.sleep(0.5)
    except Stop:
        say("stopping")
    except Exception as e:
        say("error: %s" % e)
        status = 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stop(load, "tailgate-loadgen")
        if st is not None:
            st.stop()
        stop(daemon, "tailgated")
        if pg is not None:
            pg.cleanup()
        shutil.rmtree(ring_dir, ignore_errors=True)
        if args.keep:
            say("kept " + tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
        say("stopped")
    return status


def shop(args):
    """The shop: like the auction house, plus the warehouse and tailgate-hook."""
    build = builddir()
    tmp = tempfile.mkdtemp(prefix="tailgate-demo.")
    os.chmod(tmp, 0o755)
    ring_dir = "/dev/shm/tailgate-demo.%d" % os.getpid()
    os.makedirs(ring_dir, mode=0o755, exist_ok=True)
    pg = daemon = load = st = wh = hook = None
    logs = {name: os.path.join(tmp, name + ".log")
            for name in ("tailgated", "tailgate-shopgen", "warehouse", "tailgate-hook")}
    status = 0

    def spawn(name, cmd):
        return subprocess.Popen(cmd, stdout=open(logs[name], "ab"), stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        say("logs in " + tmp)
        say("starting PostgreSQL")
        pg = PgCluster(base_dir=os.path.join(tmp, "pg"))
        pg.start()
        pg.psql(file=os.path.join(TOP, "sql", "shop", "shop.sql"))

        conf = os.path.join(tmp, "tailgated.conf")
        daemon_conf(conf, pg.dsn, ring_dir, os.path.join(TOP, "sql", "shop", "tailgated.conf"))
        say("starting tailgated (%s)" % ", ".join(SHOP_FEEDS))
        daemon = spawn("tailgated", [os.path.join(build, "tailgated"), "-c", conf])
        wait_rings(daemon, ring_dir, logs["tailgated"], feeds=SHOP_FEEDS)

        say("starting nginx and tailgate-fcgi")
        st = Stack(ring_dir=ring_dir, htdocs=os.path.join(TOP, "htdocs"), port=args.port or None,
                   base_dir=os.path.join(tmp, "stack"), keep=args.keep)
        st.start()

        say("starting tailgate-shopgen")
        cmd = [os.path.join(build, "tailgate-shopgen"), "-d", pg.dsn, "--report", "0"]
        if args.purchases:
            cmd += ["--purchases", str(args.purchases)]
        if args.pageviews:
            cmd += ["--pageviews", str(args.pageviews)]
        load = spawn("tailgate-shopgen", cmd)

        secret = os.path.join(tmp, "webhook.secret")
        with open(secret, "w") as f:
            f.write(os.urandom(24).hex() + "\n")
        os.chmod(secret, 0o600)
        whport = free_port()
        hook_bin = os.path.join(build, "tailgate-hook")
        cmd = [sys.executable, os.path.join(TOP, "tools", "warehouse.py"), "--dsn", pg.dsn,
               "--port", str(whport), "--secret-file", secret]
        if not os.access(hook_bin, os.X_OK):
            cmd += ["--poll", "2"]
        say("starting the warehouse on http://127.0.0.1:%d/alerts" % whport)
        wh = spawn("warehouse", cmd)
        if os.access(hook_bin, os.X_OK):
            say("starting tailgate-hook: low_stock alerts -> the warehouse")
            hook = spawn("tailgate-hook", [
                hook_bin, "--state", os.path.join(tmp, "hook.state"), "--secret-file", secret,
                "--filter", "inventory=lt.%d" % LOW_STOCK_BELOW, st.url("/feeds/low_stock"),
                "http://127.0.0.1:%d/alerts" % whport])
        else:
            say("tailgate-hook is not built (%s): the warehouse restocks by itself, polling"
                " low_stock every 2 s" % hook_bin)

        url = st.url("/")
        print("\n  tailgate shop demo: %s\n" % st.url("/shop.html")
              + "    pages    %s  (shop.html, feed.html)\n" % url
              + "    API      %s  (%s)\n" % (st.url("/feeds/"), ", ".join(SHOP_FEEDS))
              + "    metrics  %s\n" % st.url("/metrics")
              + "  purchases take stock; low_stock alerts make the warehouse re-order.\n"
              + "  Ctrl-C stops everything.\n", flush=True)
        procs = [(daemon, "tailgated"), (load, "tailgate-shopgen"), (wh, "warehouse")]
        if hook:
            procs.append((hook, "tailgate-hook"))
        while True:
            for proc, name in procs:
                if proc.poll() is not None:
                    raise RuntimeError("%s exited (%d):\n%s" % (name, proc.returncode, tail(logs[name])))
            time.sleep(0.5)
    except Stop:
        say("stopping")
    except Exception as e:
        say("error: %s" % e)
        status = 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stop(hook, "tailgate-hook")
        stop(wh, "warehouse")
        stop(load, "tailgate-shopgen")
        if st is not None:
            st.stop()
        stop(daemon, "tailgated")
        if pg is not None:
            pg.cleanup()
        shutil.rmtree(ring_dir, ignore_errors=True)
        if args.keep:
            say("kept " + tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
        say("stopped")
    return status


if __name__ == "__main__":
    sys.exit(main())
