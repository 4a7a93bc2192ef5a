/*
 * multi.h - requests for several feeds at one moment (GET /feeds/a,b):
 * every reply holds each feed's batches up to ONE common position, so a
 * client following feeds derived from the same tables never sees them
 * disagree.
 *
 * All feeds of a daemon share one position space (the LSNs of one
 * database, the timestamps of one Materialize environment).  The common
 * position of a request is the minimum of its feeds' frontiers: every
 * feed is complete through it.  The first reply waits until that is at or
 * above every feed's snapshot, then holds each snapshot plus its batches
 * up to it; later replies hold each feed's batches in (C, common].  The
 * cursor is POSITION.IDENT with IDENT a hash of the feeds' identities.
 *
 * A multi-feed request is a waiter (waiter.h) whose multi field holds its
 * struct multi_req: the writers (writer.h) write its replies and end it
 * like any other; an SSE stream comes back through multi_serve (the
 * responder routes writer reparks by that field).  One thread of its own
 * (the multi watcher) keeps the parked ones, sleeping in futex_waitv on
 * the wake words of their feeds plus a kick word; the single-feed parking
 * lot (park.h) is not involved.  Replies are rendered per request (no
 * groups): the feature is for a page's few subscriptions, not for the
 * thousands of clients of one feed.
 */
#ifndef TAILGATE_MULTI_H
#define TAILGATE_MULTI_H

#include "feeds.h"
#include "http_params.h"
#include "thread_ctx.h"
#include "waiter.h"
#include "writer.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

struct multi_req;

struct multi {
	struct feeds *feeds;
	struct writers *writers;
	pthread_mutex_t mu;       /* the parked list's */
	struct multi_req *parked; /* linked by next */
	_Atomic uint32_t kick;    /* bumped (and woken) when a request parks */
	_Atomic bool stopping;
	pthread_t watcher;
	bool started;
	struct ring_buf scratch; /* the watcher's */
};

void multi_start(struct multi *m, struct feeds *feeds, struct writers *writers);
/* Answer every parked request (long-polls: an empty reply; streams:
 * closed) and stop the watcher.  Before writer_stop. */
void multi_stop(struct multi *m);

/* Make w (a waiter on the first feed, owning the request) a multi-feed
 * request with no feed yet; add them with multi_add_feed. */
void multi_attach(struct waiter *w);
/* Add a feed (taking over the seg and fs references). */
void multi_add_feed(struct waiter *w, struct feed *feed, struct seg *seg, struct fspec *fs);
/* Position w at a client's cursor (the request's cursor= or
 * Last-Event-ID); without one it starts from the snapshots. */
void multi_set_cursor(struct waiter *w, uint64_t pos, uint32_t ident, bool has_ident);

/* Serve multi-feed waiter w on thread t: write what is ready, or park. */
void multi_serve(struct multi *m, struct waiter *w, struct thread_ctx *t);

#endif
