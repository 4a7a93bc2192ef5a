#!/usr/bin/python3
"""seedserver.py - a Tornado server keeping the state in Python, for the comparative benchmarks.

A Tornado server in the style of the classic Tornado pub/sub design ("A Simple and Efficient Real Time
Application Powered by Materialize's TAIL Command"), written from its
description so that bench/compare can put tailgate next to it:

  * one View per view name keeps the current rows (a list, one entry per
    copy of a row) and the current timestamp;
  * a WebSocket listener first gets the compacted state as one batch
    {"deleted": [], "inserted": current_rows, "timestamp": ...}, then every
    batch, written to each listener in turn (write_message of the batch
    dict, as the seed does);
  * batches come in as they did from the seed's TAIL loop - here POSTed one
    at a time by the publisher ("tail | post"), each applied to the rows
    (deleted rows removed one copy each, inserted rows appended) and then
    broadcast.

The seed has only the WebSocket endpoint.  For long-poll clients this
server adds the obvious Tornado long-poll beside it, speaking tailgate's
protocol so the same load client drives both:

    GET /api/poll/VIEW              -> {"cursor": T, "batches": [state]}
    GET /api/poll/VIEW?cursor=T     -> {"cursor": T', "batches": [...]}
                                       at once if batches after T are held,
                                       else parked until the next batch or
                                       the timeout (25 s, ?timeout= lowers)
    410 when T is older than the recent batches it keeps (1,000).

Endpoints:
    GET  /api/stream/VIEW    WebSocket
    GET  /api/poll/VIEW      long-poll
    POST /api/publish/VIEW   body: one batch {"timestamp", "inserted", "deleted"}
    GET  /healthz

Usage: seedserver.py [--port N] [--address 127.0.0.1]
Listens on loopback only.  Needs Debian's python3-tornado (run it with
/usr/bin/python3).
"""

import argparse
import collections
import datetime
import json
import logging
import sys

import tornado.concurrent
import tornado.gen
import tornado.ioloop
import tornado.util
import tornado.web
import tornado.websocket

log = logging.getLogger("seedserver")

RECENT_BATCHES = 1000
LONGPOLL_TIMEOUT = 25.0


class View:
    """The current state of one view and its listeners (the classic design's View)."""

    def __init__(self, name):
        self.name = name
        self.current_rows = []
        self.current_timestamp = None
        self.listeners = set()
        # for the long-poll endpoint only: recent batches and parked polls
        self.recent = collections.deque(maxlen=RECENT_BATCHES)
        self.waiters = set()

    def add_listener(self, conn):
        """Catch a new listener up with the compacted state, then subscribe it."""
        conn.write_message(
            {
                "deleted": [],
                "inserted": self.current_rows,
                "timestamp": self.current_timestamp,
            }
        )
        self.listeners.add(conn)

    def remove_listener(self, conn):
        self.listeners.discard(conn)

    def broadcast(self, payload):
        """Write the batch to every listener; forget the closed ones."""
        closed = set()
        for listener in self.listeners:
            try:
                listener.write_message(payload)
            except tornado.websocket.WebSocketClosedError:
                closed.add(listener)
        for listener in closed:
            self.listeners.discard(listener)

    def update(self, deleted, inserted, timestamp):
        """Apply one batch to the state and broadcast it."""
        self.current_timestamp = timestamp
        for row in deleted:
            self.current_rows.remove(row)
        self.current_rows.extend(inserted)

        payload = {"deleted": deleted, "inserted": inserted, "timestamp": timestamp}
        if self.listeners:
            self.broadcast(payload)
        self.recent.append(payload)
        waiters, self.waiters = self.waiters, set()
        for future in waiters:
            if not future.done():
                future.set_result(None)

    # -- long-poll helpers ---------------------------------------------------

    def batches_after(self, cursor):
        """Batches after cursor, [] if none yet, None if cursor is unknown."""
        if str(self.current_timestamp) == cursor:
            return []
        found = False
        out = []
        for batch in self.recent:
            if found:
                out.append(batch)
            elif str(batch["timestamp"]) == cursor:
                found = True
        return out if found else None


VIEWS = {}


def get_view(name):
    view = VIEWS.get(name)
    if view is None:
        view = VIEWS[name] = View(name)
    return view


class StreamHandler(tornado.websocket.WebSocketHandler):
    """GET /api/stream/VIEW: the seed's WebSocket endpoint."""

    def open(self, view_name):
        self.view = get_view(view_name)
        self.view.add_listener(self)

    def on_message(self, message):
        pass

    def on_close(self):
        self.view.remove_listener(self)


class PollHandler(tornado.web.RequestHandler):
    """GET /api/poll/VIEW[?cursor=T][&timeout=S]: long-poll beside the seed."""

    async def get(self, view_name):
        view = get_view(view_name)
        cursor = self.get_query_argument("cursor", None)
        try:
            timeout = min(float(self.get_query_argument("timeout", LONGPOLL_TIMEOUT)),
                          LONGPOLL_TIMEOUT)
        except ValueError:
            raise tornado.web.HTTPError(400)
        if cursor is None:
            self.write({"cursor": str(view.current_timestamp),
                        "batches": [{"deleted": [], "inserted": view.current_rows,
                                     "timestamp": view.current_timestamp}]})
            return
        batches = view.batches_after(cursor)
        if batches is None:
            self.set_status(410)
            self.write({"error": "gone", "message": "take a new snapshot"})
            return
        if not batches:
            future = tornado.concurrent.Future()
            view.waiters.add(future)
            try:
                await tornado.gen.with_timeout(datetime.timedelta(seconds=timeout), future)
            except tornado.util.TimeoutError:
                view.waiters.discard(future)
            if self.request.connection.stream.closed():
                return
            batches = view.batches_after(cursor) or []
        self.write({"cursor": str(view.current_timestamp), "batches": batches})


class PublishHandler(tornado.web.RequestHandler):
    """POST /api/publish/VIEW: one batch, as the seed's TAIL loop made them."""

    def post(self, view_name):
        try:
            batch = json.loads(self.request.body)
            deleted, inserted = batch["deleted"], batch["inserted"]
            timestamp = batch["timestamp"]
        except (ValueError, KeyError, TypeError):
            raise tornado.web.HTTPError(400)
        try:
            get_view(view_name).update(deleted, inserted, timestamp)
        except ValueError:  # a deleted row that is not there
            raise tornado.web.HTTPError(409)
        self.set_status(204)


class HealthHandler(tornado.web.RequestHandler):
    def get(self):
        self.write("ok\n")


def make_app():
    return tornado.web.Application([
        (r"/api/stream/(\w+)", StreamHandler),
        (r"/api/poll/(\w+)", PollHandler),
        (r"/api/publish/(\w+)", PublishHandler),
        (r"/healthz", HealthHandler),
    ])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, default=8875)
    ap.add_argument("--address", default="127.0.0.1")
    args = ap.parse_args()
    if not args.address.startswith("127."):
        ap.error("--address must be a loopback address")
    logging.basicConfig(level=logging.WARNING)
    # the seed's long-poll-free app had no body limit to speak of; batches
    # are small, 1 MiB is plenty
    app = make_app()
    app.listen(args.port, address=args.address, backlog=4096,
               max_body_size=1 << 20)
    print("READY", flush=True)
    tornado.ioloop.IOLoop.current().start()


if __name__ == "__main__":
    sys.exit(main())
