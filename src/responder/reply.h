/*
 * reply.h - writing replies to FastCGI requests and closing them, off the
 * threads that must not block.
 *
 * A struct reply is immutable, reference-counted bytes (FastCGI stdout:
 * head and body, or SSE events) that a group of waiters share.  The writer
 * pool (reply_init's threads) writes a queued waiter's reply, then either
 * finishes the request or, for an SSE stream, hands the waiter back to the
 * parking lot.
 *
 * Finishing: libfcgi's FCGX_Finish_r shuts the socket down and waits up to
 * 2 s (LIBFCGI_OS_CLOSE_POLL_TIMEOUT) for nginx to close, on the calling
 * thread.  reply_finish() instead marks the request keepConnection so that
 * FCGX_Finish_r only flushes and writes FCGI_END_REQUEST, then takes the
 * descriptor itself: shutdown(SHUT_WR), then an epoll "closer" thread
 * waits for nginx to close its end, draining what it sent, or 2 s, then
 * closes.  No thread ever waits on one
 * connection's close.
 */
#ifndef TAILGATE_REPLY_H
#define TAILGATE_REPLY_H

#include "batch.h"
#include "park.h"

#include <fcgiapp.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

struct reply {
	_Atomic int refs;
	int status;
	uint64_t batches;
	size_t len;
	char data[];
};

/* Copy b into a new reply with one reference.  Dies on allocation failure. */
struct reply *reply_new(const struct bbuf *b, int status, uint64_t batches);
struct reply *reply_ref(struct reply *r);
void reply_release(struct reply *r);

void reply_init(int writers, int max_fds);
/* Drain the queue, stop the writers, close what the closer holds. */
void reply_stop(void);

/* Queue w to be sent r (reply_enqueue takes the reference). */
void reply_enqueue(struct waiter *w, struct reply *r, int64_t wake_ns);
/* Queue a chain of n waiters (linked by qnext, head to tail) whose
 * pending and wake_ns are set: one lock round for the whole group. */
void reply_enqueue_list(struct waiter *head, struct waiter *tail, size_t n);

/* Send w its long-poll reply r (taking the reference) and finish it: on
 * this thread when reply_inline_here(true) was said on it and r is small
 * (REPLY_INLINE_MAX), else through the writers (reply_enqueue). */
#define REPLY_INLINE_MAX (32u * 1024)
void reply_deliver(struct waiter *w, struct reply *r);
/* Whether the calling thread may write replies itself (default no: the
 * watcher and the writers hand them on). */
void reply_inline_here(bool yes);

/* Write data to req now, on this thread; false on a write error. */
bool reply_write(FCGX_Request *req, const char *data, size_t len);
/* End req (see above) and free it. */
void reply_finish(FCGX_Request *req);

#endif
