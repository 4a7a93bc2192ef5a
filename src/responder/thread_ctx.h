/*
 * thread_ctx.h - what each responder thread carries with it: its ring read
 * buffer and what it may do with a reply it produces.
 *
 * Every thread that serves requests (the accepting thread and the handlers
 * of conn.c, the watcher of park.c, the writers of writer.c) owns one
 * struct thread_ctx and passes it down the request path; nothing in it is
 * shared between threads, so nothing in it is locked.
 */
#ifndef TAILGATE_THREAD_CTX_H
#define TAILGATE_THREAD_CTX_H

#include "ring.h"

#include <stdbool.h>
#include <stdlib.h>

struct waiter;

struct thread_ctx {
	struct ring_buf scratch; /* ring_read's buffer, reused */
	/* May this thread write a small long-poll reply itself
	 * (writer_deliver)?  Yes for the accepting thread and the handlers,
	 * whose requests come with nothing unread on their connection; no
	 * for the watcher, which must never block on a socket. */
	bool inline_ok;
	/* A writer thread: an SSE stream it re-serves and finds more batches
	 * for stays with it, appended to its current share of the queue. */
	bool writer;
	struct waiter *share_head, *share_tail;
};

static inline void
thread_ctx_free(struct thread_ctx *t)
{
	free(t->scratch.data);
	t->scratch = (struct ring_buf){0};
}

#endif
