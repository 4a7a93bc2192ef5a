/*
 * park.h - the parking lot: long-poll and SSE requests waiting for the
 * ring to move, without a thread each.
 *
 * A waiting request is a struct waiter holding its FCGX_Request (and so
 * its connection to nginx).  Waiters on one feed with the same segment,
 * next batch (seq_after), format (JSON or SSE) and filter key form a
 * group.  One thread (the watcher) sleeps in futex_waitv(2) on every
 * attached feed's wake word plus a private kick word; when a ring moves
 * it renders each ready group's reply ONCE and hands it, with every
 * waiter of the group, to the writer pool (reply.h).  Deadlines (the
 * long-poll timeout, the SSE keep-alive) sit in a binary heap the watcher
 * also serves: the futex_waitv timeout is the earliest deadline.
 *
 * Every 5 s the watcher also polls the parked descriptors at once and
 * releases the requests whose connection nginx closed (the browser left).
 *
 * A filtered group whose new batches hold no matching row is not answered:
 * its seq_after and cursor advance past them and it stays parked, so a
 * filtered client is never woken for rows it does not match.
 *
 * Ownership: park_serve() consumes the waiter: it ends up answered (and
 * freed), queued for a writer, or parked.  Lock order: the lot's lock,
 * then the feeds lock.
 */
#ifndef TAILGATE_PARK_H
#define TAILGATE_PARK_H

#include "feeds.h"
#include "filter.h"

#include <fcgiapp.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

/* A compiled filter and its key, shared by the waiters and groups that use
 * it.  NULL filter: unfiltered (key ""). */
struct fspec {
	_Atomic int refs;
	struct filter *filter;
	char *key;
};
struct fspec *fspec_new(struct filter *f, char *key); /* takes both */
struct fspec *fspec_ref(struct fspec *fs);
void fspec_release(struct fspec *fs);

struct group;
struct reply;

struct waiter {
	FCGX_Request *req;
	struct feed *feed;
	struct seg *seg;    /* referenced */
	struct fspec *fs;   /* referenced */
	uint64_t cursor;    /* the client's cursor (advanced past skipped batches) */
	uint64_t seq_after; /* first batch not yet examined, in seg */
	bool sse;
	int64_t deadline_ms; /* long-poll timeout / next SSE keep-alive */

	/* park.c */
	struct group *group;
	struct waiter *gnext, *gprev;
	size_t heap_idx;

	/* reply.c */
	struct waiter *qnext;
	struct reply *pending;
	int64_t wake_ns; /* when the watcher saw the ring move; 0: not a wake */
	bool keepalive;  /* pending is an SSE keep-alive comment */
	int sndbuf;      /* SSE: the socket's SO_SNDBUF, 0 until read */
	size_t room;     /* SSE: bytes the socket surely still takes (see reply.c) */
};

extern int park_sse_keepalive_s; /* SSE comment interval (seconds) */
extern int park_cache_max_age_s; /* max-age of replies holding batches */

void park_init(void);
/* Answer every parked request (long-polls with an empty reply, SSE streams
 * closed) and stop the watcher. */
void park_stop(void);
bool park_stopping(void);

/* Serve w from its cursor: write what exists, or park it.  scratch is the
 * calling thread's read buffer. */
void park_serve(struct waiter *w, struct ring_buf *scratch);
/* park_serve for a chain of waiters (linked by qnext), parking those that
 * only have to wait with one lock round. */
void park_serve_list(struct waiter *list, struct ring_buf *scratch);

/* The feed's snapshot and the batches after it, for w (filtered by its
 * fspec): JSON {"cursor","columns","batches"} with its head, or for SSE an
 * "event: snapshot" and one event per later batch.  Sets w's position to
 * after what it holds.  NULL when the feed has no readable snapshot. */
struct reply *park_snapshot_reply(struct waiter *w, struct ring_buf *scratch);

/* Free a waiter whose request is already finished (or NULL). */
void waiter_free(struct waiter *w);

int64_t mono_ns(void);

#endif
