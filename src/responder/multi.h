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
 * lot (park.h) is not involved, though parked long-polls count in its
 * gauge (tailgate_parked_requests).
 *
 * Shared replies.  Many browsers open the same page (htdocs/shop.html
 * follows three feeds in one request), so the requests of one feed list
 * and filters at one cursor get the same reply: it is rendered once per
 * (feed list, filters, format, kind, from, to, identity) and kept in a
 * small cache of the last --multi-cache replies (MULTI_CACHE_N by
 * default; 0: none, each request renders its own), shared by reference
 * with its gzip form (reply.h), like single-feed replies (render.h).  The
 * key's positions make a hit exactly what a render would give: a later
 * common position is another key.  The first reply (snapshots) shares by
 * the common position it is complete at; a step that no filtered row
 * changed is kept too (no reply: the requests just move past it).
 *
 * State headers.  A reply's Tailgate-Feed-State and Tailgate-Lag say the
 * worst of the requested feeds (multi_attach; docs/API.md), with
 * Tailgate-Feed-States naming each feed's, when any is not live.
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
struct reply;

#define MULTI_CACHE_N 16    /* the default; --multi-cache */
#define MULTI_CACHE_MAX 256 /* its upper bound */

/* One shared reply: what requests of key got for (kind, from, to, ident). */
struct multi_cache_ent {
	char *key; /* NULL: a free entry */
	uint64_t hash;
	int kind;
	uint64_t from, to;
	uint32_t ident;
	struct reply *r; /* referenced; NULL: no filtered row in the step */
};

struct multi {
	struct feeds *feeds;
	struct writers *writers;
	pthread_mutex_t mu;       /* the parked list's */
	struct multi_req *parked; /* linked by next */
	_Atomic uint32_t kick;    /* bumped (and woken) when a request parks */
	_Atomic bool stopping;    /* set under mu (see park() in multi.c) */
	pthread_t watcher;
	bool started;
	struct ring_buf scratch; /* the watcher's */

	/* The shared replies (any thread, under cache_mu); cache_n 0: every
	 * request renders its own. */
	pthread_mutex_t cache_mu;
	int cache_n;
	struct multi_cache_ent *cache;
	unsigned cache_next; /* the entry to replace next */
};

/* cache_n: replies kept for sharing (0: none, MULTI_CACHE_MAX at most). */
void multi_start(struct multi *m, struct feeds *feeds, struct writers *writers, int cache_n);
/* Answer every parked request (long-polls: an empty reply; streams:
 * closed) and stop the watcher.  Before writer_stop: the writers may
 * still hand SSE streams back (multi_serve), which then end. */
void multi_stop(struct multi *m);
/* Free the shared replies and the locks: after writer_stop, once no
 * writer can call multi_serve any more. */
void multi_free(struct multi *m);

/* Make w (a waiter on the first feed, owning the request) a multi-feed
 * request with no feed yet; add them with multi_add_feed.  Its state
 * headers (w->multi_state, for writer_state_headers): nothing while every
 * feed is live and confirmed; else Tailgate-Feed-State (the worst feed's
 * state), X-Accel-Expires: 0, Tailgate-Lag (the largest lag of the feeds
 * the upstream ever confirmed) and Tailgate-Feed-States
 * ("NAME=STATE[;lag=S]" per feed, in the request's order). */
void multi_attach(struct waiter *w);
/* Add a feed (taking over the seg and fs references). */
void multi_add_feed(struct waiter *w, struct feed *feed, struct seg *seg, struct fspec *fs);
/* Position w at a client's cursor (the request's cursor= or
 * Last-Event-ID); without one it starts from the snapshots. */
void multi_set_cursor(struct waiter *w, uint64_t pos, uint32_t ident, bool has_ident);

/* Serve multi-feed waiter w on thread t: write what is ready, or park. */
void multi_serve(struct multi *m, struct waiter *w, struct thread_ctx *t);

#endif
