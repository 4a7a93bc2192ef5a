/*
 * writer.h - writing replies to waiters' connections, off the threads that
 * must not block.
 *
 * The writer pool takes queued waiters (each with its pending reply),
 * writes the reply, then ends a long-poll (conn_finish) or hands an SSE
 * stream on to be re-served: to the repark function given to
 * writer_start (the parking lot's park_serve_list), in one call for a
 * writer's whole share of the queue.  The writers never call back into
 * the module that queued the waiter: what happens to a stream after its
 * write is passed in.
 *
 * A long-poll's small reply may skip the queue (writer_deliver): the
 * accepting thread and the handlers write it themselves, as their
 * connection holds nothing unread when its request comes.
 */
#ifndef TAILGATE_WRITER_H
#define TAILGATE_WRITER_H

#include "conn.h"
#include "reply.h"
#include "thread_ctx.h"
#include "waiter.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define WRITER_INLINE_MAX (32u * 1024) /* a reply written inline is at most this */

/* Re-serve a chain of SSE streams (linked by qnext) just written, on
 * writer thread t: each ends up parked, queued again, or ended. */
typedef void (*writer_repark)(void *arg, struct waiter *list, struct thread_ctx *t);

struct writers {
	struct conns *conns;
	int sse_keepalive_s; /* an SSE stream's next keep-alive after a write */
	writer_repark repark;
	void *repark_arg;

	pthread_mutex_t mu; /* the queue's */
	pthread_cond_t cv;
	struct waiter *head, *tail; /* linked by qnext */
	bool stop;

	pthread_t *threads;
	int n;
	_Atomic int big_writes; /* writers in a write that may block (see writer.c) */

	/* TAILGATE_TRACE set: one log line per ring wake, when its replies
	 * were written (a debugging aid, see docs/BENCHMARKS.md). */
	bool trace;
	pthread_mutex_t trace_mu;
	int64_t trace_wake_ns, trace_first_ns, trace_last_ns;
	size_t trace_n;
};

/* Start n writer threads.  Dies on failure. */
void writer_start(struct writers *wp, int n, struct conns *conns, int sse_keepalive_s,
                  writer_repark repark, void *repark_arg);
/* Drain the queue and join the writers. */
void writer_stop(struct writers *wp);

/* Queue w to be sent r (taking the reference). */
void writer_enqueue(struct writers *wp, struct waiter *w, struct reply *r, int64_t wake_ns);
/* Queue a chain of n waiters (linked by qnext, head to tail) whose pending
 * and wake_ns are set: one lock round for the whole group. */
void writer_enqueue_list(struct writers *wp, struct waiter *head, struct waiter *tail, size_t n);

/* Send w the reply r (taking the reference), from thread t: a long-poll's
 * small reply on t itself when t->inline_ok, finishing it; an SSE event
 * found by a writer re-serving its stream, in that writer's share;
 * everything else through the queue. */
void writer_deliver(struct writers *wp, struct thread_ctx *t, struct waiter *w, struct reply *r);

/* End w's request without a reply (an SSE stream closed, a client gone)
 * and free w.  status: for the metrics of a long-poll (0: none). */
void writer_end(struct writers *wp, struct waiter *w, int status);

/* The state header lines of a reply to w, as its feeds' rings say now:
 * render_state_headers for one feed, w->multi_state for several (multi.h).
 * The length written to out, 0 when none; WRITER_STATE_HEADERS_MAX is
 * enough. */
#define WRITER_STATE_HEADERS_MAX 1024
size_t writer_state_headers(const struct waiter *w, char *out, size_t cap);

#endif
