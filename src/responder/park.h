/*
 * park.h - the parking lot: long-poll and SSE requests waiting for the
 * ring to move, without a thread each.
 *
 * Waiters (waiter.h) on one feed with the same segment, next batch
 * (seq_after), cursor, format (JSON or SSE) and filter key form a group.
 * One thread (the watcher) sleeps in futex_waitv(2) on every attached
 * feed's wake word plus a private kick word; when a ring moves it renders
 * each ready group's reply ONCE (render.h) and hands it, with every waiter
 * of the group, to the writers (writer.h).  Deadlines (the long-poll
 * timeout, the SSE keep-alive) sit in a binary heap the watcher also
 * serves: the futex_waitv timeout is the earliest deadline.
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
 * then the feeds lock.  The request path runs one way: park uses render
 * and the writers; the writers re-serve SSE streams through the
 * park_serve_list they were given (park_repark), never by name.
 */
#ifndef TAILGATE_PARK_H
#define TAILGATE_PARK_H

#include "feeds.h"
#include "render.h"
#include "thread_ctx.h"
#include "waiter.h"
#include "writer.h"

#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct group;

struct park {
	struct feeds *feeds;
	struct render *render;
	struct writers *writers;

	pthread_mutex_t mu;              /* the lot's lock: everything below to "watcher" */
	struct group *groups[FEEDS_MAX]; /* by feed idx: that feed's groups */
	struct waiter **heap;            /* every parked waiter, by deadline_ms */
	size_t heap_n, heap_cap;
	int64_t sleep_until_ms;         /* the watcher's current futex_waitv deadline */
	struct seg *watched[FEEDS_MAX]; /* segments in that futex_waitv (not referenced) */
	int n_watched;

	_Atomic uint32_t kick; /* bumped (and woken) when the watcher must look again */
	_Atomic bool stopping;

	/* The watcher's own. */
	pthread_t watcher;
	bool started;
	struct pollfd *pfd; /* the hang-up sweep's */
	size_t pfd_cap;
};

/* Start the watcher.  Dies on failure. */
void park_start(struct park *p, struct feeds *feeds, struct render *render,
                struct writers *writers);
/* Answer every parked request (long-polls with an empty reply, SSE streams
 * closed) and stop the watcher. */
void park_stop(struct park *p);

/* Serve w from its position, on thread t: write what exists, or park it. */
void park_serve(struct park *p, struct waiter *w, struct thread_ctx *t);
/* park_serve for a chain of waiters (linked by qnext), parking those that
 * only have to wait with one lock round. */
void park_serve_list(struct park *p, struct waiter *list, struct thread_ctx *t);
/* park_serve_list as a writer_repark (arg: the struct park). */
void park_repark(void *arg, struct waiter *list, struct thread_ctx *t);

#endif
