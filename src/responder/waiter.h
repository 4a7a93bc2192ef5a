/*
 * waiter.h - one feed request being served: a long-poll or an SSE stream,
 * from the handler that accepts it, through the parking lot (park.h) and
 * the writers (writer.h), to its end.
 *
 * A waiter holds its FCGX_Request (and so its connection to nginx), a
 * reference on the feed's segment it reads, its filter, and its position
 * in the feed: cursor (the last batch the client holds) and seq_after
 * (the ring sequence of the first batch not yet examined).  Exactly one
 * thread or structure holds a waiter at a time (a handler, a group of the
 * parking lot, the writers' queue, a writer's share), so its fields need
 * no lock of their own; each block below says who uses it.
 */
#ifndef TAILGATE_WAITER_H
#define TAILGATE_WAITER_H

#include "feeds.h"
#include "filter.h"

#include <fcgiapp.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A compiled filter and its key, shared by the waiters and groups that use
 * it.  NULL filter: unfiltered (key ""). */
struct fspec {
	_Atomic int refs;
	struct filter *filter;
	char *key;
};

/* Takes both f and key (key not NULL).  Out of memory is fatal. */
struct fspec *fspec_new(struct filter *f, char *key);
struct fspec *fspec_ref(struct fspec *fs);
void fspec_release(struct fspec *fs); /* NULL: nothing */

struct group;
struct reply;

struct waiter {
	FCGX_Request *req; /* NULL once finished */
	struct feed *feed;
	struct seg *seg;    /* referenced */
	struct fspec *fs;   /* referenced */
	uint64_t cursor;    /* the client's position (advanced past skipped batches) */
	uint32_t ident;     /* the identity of the history it is a position in */
	uint64_t seq_after; /* first batch not yet examined, in seg */
	bool sse;
	bool gzip;           /* a long-poll whose Accept-Encoding takes gzip (reply_for) */
	int64_t deadline_ms; /* long-poll timeout / next SSE keep-alive (clock_mono_ms) */

	/* While parked: its group and place in the deadline heap (park.c,
	 * under the lot's lock). */
	struct group *group;
	struct waiter *gnext, *gprev;
	size_t heap_idx;

	/* While queued or written (writer.c): the queue link (also any
	 * chain of waiters handed between modules), the reply to send, when
	 * the watcher saw the ring move (0: not a wake), and the SSE send
	 * buffer accounting. */
	struct waiter *qnext;
	struct reply *pending; /* referenced */
	int64_t wake_ns;
	bool keepalive; /* pending is an SSE keep-alive comment */
	int sndbuf;     /* SSE: the socket's SO_SNDBUF, 0 until read */
	size_t room;    /* SSE: bytes the socket surely still takes */

	/* A request for several feeds (multi.h): its state, freed with the
	 * waiter by multi_free; NULL for a request of one feed (feed, seg
	 * and fs above are then the first feed's, for the state header). */
	void *multi;
	void (*multi_free)(void *multi);
	/* Its state header lines, as writer_state_headers (writer.h). */
	size_t (*multi_state)(const void *multi, char *out, size_t cap);
};

/* A new waiter for req on feed, reading seg, filtered by fs (both
 * references are taken over), at no position yet (cursor and seq_after
 * 0).  Out of memory is fatal. */
struct waiter *waiter_new(FCGX_Request *req, struct feed *feed, struct seg *seg, struct fspec *fs,
                          bool sse, int64_t deadline_ms);
/* Free a waiter whose request is already finished (w->req NULL) or was
 * never to be answered (NULL: nothing).  Drops its references. */
void waiter_free(struct waiter *w);

#endif
