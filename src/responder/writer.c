/*
 * writer.c - the writer pool (writer.h).
 */
#include "writer.h"

#include "clock.h"
#include "log.h"
#include "metrics.h"
#include "render.h"
#include "xmalloc.h"

#include <inttypes.h>
#include <linux/sockios.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/time.h>

#define WRITER_BATCH 32 /* waiters taken from the queue per lock round */

void
writer_enqueue_list(struct writers *wp, struct waiter *head, struct waiter *tail, size_t n)
{
	if (head == NULL)
		return;
	tail->qnext = NULL;
	pthread_mutex_lock(&wp->mu);
	if (wp->tail != NULL)
		wp->tail->qnext = head;
	else
		wp->head = head;
	wp->tail = tail;
	if (n > 1)
		pthread_cond_broadcast(&wp->cv);
	else
		pthread_cond_signal(&wp->cv);
	pthread_mutex_unlock(&wp->mu);
}

void
writer_enqueue(struct writers *wp, struct waiter *w, struct reply *r, int64_t wake_ns)
{
	w->pending = r;
	w->wake_ns = wake_ns;
	writer_enqueue_list(wp, w, w, 1);
}

void
writer_end(struct writers *wp, struct waiter *w, int status)
{
	if (w->sse)
		metrics_sse(-1);
	if (status != 0)
		metrics_request(w->sse ? MK_SSE : MK_LONGPOLL, status);
	conn_finish(wp->conns, w->req);
	w->req = NULL;
	waiter_free(w);
}

/* Append w to writer t's share (an SSE stream it just re-served). */
static void
share_append(struct thread_ctx *t, struct waiter *w, struct reply *r)
{
	w->pending = r;
	w->wake_ns = 0;
	w->qnext = NULL;
	if (t->share_tail != NULL)
		t->share_tail->qnext = w;
	else
		t->share_head = w;
	t->share_tail = w;
}

/* Write r to w: a long-poll's reply with its feed's state header as the
 * ring says now (the reply itself is shared and cached, so it cannot
 * hold it), and its end, in one write (conn_reply: w->req is then NULL);
 * an SSE stream's events as they are (its head said it). */
static bool
write_reply(struct writers *wp, struct waiter *w, const struct reply *r)
{
	char extra[WRITER_STATE_HEADERS_MAX];
	size_t n;
	bool ok;

	if (w->sse)
		return conn_write_head(w->req, r->data, r->len, NULL, 0);
	n = writer_state_headers(w, extra, sizeof(extra));
	ok = conn_reply(wp->conns, w->req, r->data, r->len, extra, n);
	w->req = NULL;
	return ok;
}

size_t
writer_state_headers(const struct waiter *w, char *out, size_t cap)
{
	if (w->multi != NULL)
		return w->multi_state(w->multi, out, cap);
	return w->seg != NULL ? render_state_headers(w->seg, out, cap) : 0;
}

void
writer_deliver(struct writers *wp, struct thread_ctx *t, struct waiter *w, struct reply *r)
{
	int status = r->status;
	bool ok;

	if (t->writer && w->sse) {
		/* A stream this writer just wrote, whose next batches were
		 * already there (a writer behind the ring): it stays with this
		 * writer, after the rest of its share, instead of a round
		 * through the queue (a lock and a wake per event). */
		share_append(t, w, r);
		return;
	}
	/* A long-poll's connection holds nothing unread when its request
	 * comes (nginx reads a whole reply before it sends the next request
	 * on a connection), so a reply well under a socket buffer is taken
	 * at once: writing it here cannot block, and saves waking a writer
	 * (a futex wake and a context switch per reply). */
	if (!t->inline_ok || w->sse || r->len > WRITER_INLINE_MAX) {
		writer_enqueue(wp, w, r, 0);
		return;
	}
	const struct reply *s = reply_for(r, w->gzip);
	ok = write_reply(wp, w, s);
	if (ok)
		metrics_served(s->batches, s->len);
	reply_release(r);
	writer_end(wp, w, status);
}

/* ---- SSE back-pressure ----
 *
 * An SSE stream whose connection already holds half a send buffer of
 * unread bytes is a client that does not keep up: it is dropped and
 * resumes with Last-Event-ID rather than stalling a writer thread.
 *
 * A reply that does not fit in what is left of the buffer is still
 * written when the client keeps up: an event larger than the whole buffer
 * (a snapshot, a catch-up: the buffer is ~208 KiB by default) would
 * otherwise drop every attempt, and the stream could never start (found
 * by tests/chaos/chaos_pg.py: SSE clients of a feed with a 300 KB snapshot
 * reconnected forever).  Such a write blocks while nginx passes it on, so
 * *guard says to bound it: a send timeout (send_timeout), so that a
 * client that stops reading holds the writer for at most SSE_STALL_S
 * without progress, and at most half the writers in such writes at once
 * (big_writes), so that slow clients cannot stall every writer: past
 * that the stream is dropped and the browser retries. */
#define SSE_STALL_S 5

/*
 * Asking the kernel before every event took two syscalls per event (the
 * SO_SNDBUF and SIOCOUTQ of the stream), more than the write itself.  The
 * buffer size is read once per stream (w->sndbuf); the queue is probed
 * only when the event may not fit in w->room, the room left at the last
 * probe less every byte written since.  nginx only ever drains the queue,
 * so the real room is at least w->room: an event within it is one the
 * probe would have found fitting too.
 */
static bool
sse_backlogged(struct waiter *w, size_t more, bool *guard)
{
	int queued = 0;
	size_t sndbuf;

	*guard = false;
	if (w->sndbuf > 0 && more <= w->room) {
		w->room -= more;
		return false; /* fits: the write cannot block */
	}
	if (w->sndbuf <= 0) {
		socklen_t sl = sizeof(w->sndbuf);
		if (getsockopt(w->req->ipcFd, SOL_SOCKET, SO_SNDBUF, &w->sndbuf, &sl) != 0 ||
		    w->sndbuf <= 0) {
			w->sndbuf = 0;
			return false;
		}
	}
	w->room = 0;
	if (ioctl(w->req->ipcFd, SIOCOUTQ, &queued) != 0 || queued < 0)
		return false;
	sndbuf = (size_t)w->sndbuf;
	if ((size_t)queued + more <= sndbuf) {
		w->room = sndbuf - (size_t)queued - more;
		return false; /* fits: the write cannot block */
	}
	if ((size_t)queued > sndbuf / 2)
		return true;
	*guard = true;
	return false;
}

/* SO_SNDTIMEO on the connection: a blocking write that makes no progress
 * for s seconds fails (libfcgi then closes the stream); 0 turns it off. */
static void
send_timeout(FCGX_Request *req, int s)
{
	struct timeval tv = {s, 0};

	(void)setsockopt(req->ipcFd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

/* ---- one write ---- */

/* Write w its pending reply r (r's gzip form when w takes gzip: *sent is
 * what was written); false: the connection is to be ended (a write
 * error, or an SSE stream dropped as too slow). */
static bool
write_one(struct writers *wp, struct waiter *w, struct reply *r, const struct reply **sent)
{
	bool ok, guard = false;

	if (w->sse && r->status != 200)
		return false; /* the stream is open: end it, the browser reconnects */
	if (w->sse && sse_backlogged(w, r->len, &guard)) {
		log_info("feed=%s: SSE client too slow (%zu bytes not taken), dropped",
		         w->feed->name, r->len);
		return false;
	}
	if (guard && atomic_fetch_add(&wp->big_writes, 1) >= (wp->n + 1) / 2) {
		atomic_fetch_sub(&wp->big_writes, 1);
		log_info("feed=%s: SSE event of %zu bytes while other writers are busy with large "
		         "ones, dropped",
		         w->feed->name, r->len);
		return false;
	}
	if (guard)
		send_timeout(w->req, SSE_STALL_S);
	*sent = reply_for(r, w->gzip);
	ok = write_reply(wp, w, *sent);
	if (ok && w->sse)
		ok = conn_flush(w->req);
	if (guard) {
		if (ok)
			send_timeout(w->req, 0);
		atomic_fetch_sub(&wp->big_writes, 1);
	}
	return ok;
}

/* Take a share of the queue into t (one lock round per share, not per
 * reply).  false: stopping and the queue is empty. */
static bool
take_share(struct writers *wp, struct thread_ctx *t)
{
	struct waiter *last;
	size_t take = 0;

	pthread_mutex_lock(&wp->mu);
	while (wp->head == NULL && !wp->stop)
		pthread_cond_wait(&wp->cv, &wp->mu);
	if (wp->head == NULL) {
		pthread_mutex_unlock(&wp->mu);
		return false;
	}
	t->share_head = last = wp->head;
	while (take < WRITER_BATCH - 1 && last->qnext != NULL) {
		last = last->qnext;
		take++;
	}
	wp->head = last->qnext;
	if (wp->head == NULL)
		wp->tail = NULL;
	last->qnext = NULL;
	t->share_tail = last;
	pthread_mutex_unlock(&wp->mu);
	return true;
}

static struct waiter *
share_pop(struct thread_ctx *t)
{
	struct waiter *w = t->share_head;

	t->share_head = w->qnext;
	if (t->share_head == NULL)
		t->share_tail = NULL;
	w->qnext = NULL;
	return w;
}

/* TAILGATE_TRACE: the replies of one watcher wake (wake_ns) are written
 * between first and last; the line goes out when the next wake's first
 * reply is written. */
static void
trace_written(struct writers *wp, int64_t wake_ns)
{
	int64_t now = clock_mono_ns();

	pthread_mutex_lock(&wp->trace_mu);
	if (wake_ns != wp->trace_wake_ns) {
		if (wp->trace_n > 0)
			log_info("trace wake_ns=%" PRId64 " first_ns=%" PRId64 " last_ns=%" PRId64
			         " replies=%zu",
			         wp->trace_wake_ns, wp->trace_first_ns, wp->trace_last_ns,
			         wp->trace_n);
		wp->trace_wake_ns = wake_ns;
		wp->trace_first_ns = now;
		wp->trace_n = 0;
	}
	wp->trace_last_ns = now;
	wp->trace_n++;
	pthread_mutex_unlock(&wp->trace_mu);
}

/* Write one waiter of the share; an SSE stream that stays open joins
 * *repark, anything else ends. */
static void
serve_one(struct writers *wp, struct waiter *w, struct waiter **repark)
{
	struct reply *r = w->pending;
	const struct reply *sent = r;
	int status = r->status;
	bool ok;

	w->pending = NULL;
	ok = write_one(wp, w, r, &sent);
	if (ok) {
		metrics_served(sent->batches, sent->len);
		if (w->wake_ns != 0)
			metrics_wake_latency((double)(clock_mono_ns() - w->wake_ns) / 1e9);
		if (w->wake_ns != 0 && wp->trace)
			trace_written(wp, w->wake_ns);
	}
	reply_release(r);
	w->keepalive = false;
	if (w->sse && ok && status == 200) {
		w->deadline_ms = clock_mono_ms() + (int64_t)wp->sse_keepalive_s * 1000;
		w->qnext = *repark;
		*repark = w;
		return;
	}
	writer_end(wp, w, w->sse ? 0 : status);
}

static void *
writer_main(void *arg)
{
	struct writers *wp = arg;
	struct thread_ctx t = {.writer = true};
	struct waiter *repark = NULL; /* SSE streams written, to re-serve */

	for (;;) {
		if (t.share_head == NULL && repark != NULL) {
			/* The share is written: re-serve its SSE streams, all in
			 * one call (this may give back to the share those with
			 * new batches). */
			wp->repark(wp->repark_arg, repark, &t);
			repark = NULL;
		}
		if (t.share_head == NULL && !take_share(wp, &t))
			break;
		serve_one(wp, share_pop(&t), &repark);
	}
	thread_ctx_free(&t);
	return NULL;
}

void
writer_start(struct writers *wp, int n, struct conns *conns, int sse_keepalive_s,
             writer_repark repark, void *repark_arg)
{
	memset(wp, 0, sizeof(*wp));
	wp->conns = conns;
	wp->sse_keepalive_s = sse_keepalive_s;
	wp->repark = repark;
	wp->repark_arg = repark_arg;
	pthread_mutex_init(&wp->mu, NULL);
	pthread_mutex_init(&wp->trace_mu, NULL);
	wp->trace = getenv("TAILGATE_TRACE") != NULL;
	pthread_cond_init(&wp->cv, NULL);
	wp->threads = xcalloc((size_t)n, sizeof(*wp->threads));
	wp->n = n;
	for (int i = 0; i < n; i++)
		if (pthread_create(&wp->threads[i], NULL, writer_main, wp) != 0)
			fatal("cannot start writer thread %d", i);
}

void
writer_stop(struct writers *wp)
{
	pthread_mutex_lock(&wp->mu);
	wp->stop = true;
	pthread_cond_broadcast(&wp->cv);
	pthread_mutex_unlock(&wp->mu);
	for (int i = 0; i < wp->n; i++)
		pthread_join(wp->threads[i], NULL);
	free(wp->threads);
	wp->threads = NULL;
	wp->n = 0;
}
