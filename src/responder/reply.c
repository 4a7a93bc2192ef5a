/*
 * reply.c - the writer pool and the closer (reply.h).
 */
#include "reply.h"

#include "accept.h"
#include "log.h"
#include "metrics.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/sockios.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#define CLOSE_WAIT_MS 2000 /* as libfcgi's LIBFCGI_OS_CLOSE_POLL_TIMEOUT */

/* ---- replies ---- */

struct reply *
reply_new(const struct bbuf *b, int status, uint64_t batches)
{
	struct reply *r = malloc(sizeof(*r) + b->len + 1);

	if (r == NULL)
		fatal("out of memory for a %zu-byte reply", b->len);
	atomic_store(&r->refs, 1);
	r->status = status;
	r->batches = batches;
	r->len = b->len;
	if (b->len > 0)
		memcpy(r->data, b->p, b->len);
	r->data[b->len] = '\0';
	return r;
}

struct reply *
reply_ref(struct reply *r)
{
	atomic_fetch_add_explicit(&r->refs, 1, memory_order_relaxed);
	return r;
}

void
reply_release(struct reply *r)
{
	if (r != NULL && atomic_fetch_sub_explicit(&r->refs, 1, memory_order_acq_rel) == 1)
		free(r);
}

/* ---- the closer ---- */

struct pending_close {
	int fd;
	uint32_t gen;
	int64_t deadline_ms;
};

static pthread_mutex_t close_mu = PTHREAD_MUTEX_INITIALIZER;
static uint32_t *owner; /* owner[fd]: generation of the close we own, 0: none */
static int owner_n;
static uint32_t close_gen;
static size_t open_closes;
static struct pending_close *fifo;
static size_t fifo_head, fifo_len, fifo_cap;
static int epfd = -1;
static pthread_t closer;
static _Atomic bool closer_stop;

static void
close_owned(int fd, uint32_t gen)
{
	pthread_mutex_lock(&close_mu);
	if (fd < owner_n && owner[fd] == gen) {
		owner[fd] = 0;
		open_closes--;
		close(fd); /* also leaves the epoll set */
	}
	pthread_mutex_unlock(&close_mu);
}

static void
closer_add(int fd)
{
	struct epoll_event ev;
	uint32_t gen;

	/* As libfcgi's OS_Close: send EOF, then wait for nginx's.  nginx
	 * (1.22, buffered) finishes the reply on our EOF, not on
	 * FCGI_END_REQUEST alone: without the shutdown every reply would wait
	 * for the 2 s sweep below.  Reads are MSG_DONTWAIT. */
	shutdown(fd, SHUT_WR);
	pthread_mutex_lock(&close_mu);
	if (fd >= owner_n || epfd < 0) {
		pthread_mutex_unlock(&close_mu);
		close(fd);
		return;
	}
	if (fifo_len == fifo_cap) {
		size_t nc = fifo_cap ? fifo_cap * 2 : 1024;
		struct pending_close *nf = malloc(nc * sizeof(*nf));
		if (nf == NULL)
			fatal("out of memory");
		for (size_t i = 0; i < fifo_len; i++)
			nf[i] = fifo[(fifo_head + i) % fifo_cap];
		free(fifo);
		fifo = nf;
		fifo_cap = nc;
		fifo_head = 0;
	}
	gen = ++close_gen;
	if (gen == 0)
		gen = ++close_gen;
	owner[fd] = gen;
	open_closes++;
	fifo[(fifo_head + fifo_len++) % fifo_cap] =
	        (struct pending_close){fd, gen, mono_ms() + CLOSE_WAIT_MS};
	ev.events = EPOLLIN | EPOLLRDHUP;
	ev.data.u64 = (uint64_t)(unsigned)fd | (uint64_t)gen << 32;
	if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) != 0) {
		owner[fd] = 0;
		open_closes--;
		close(fd);
	}
	pthread_mutex_unlock(&close_mu);
}

static void *
closer_main(void *arg)
{
	struct epoll_event evs[256];
	char trash[4096];

	(void)arg;
	for (;;) {
		int n = epoll_wait(epfd, evs, 256, 200);
		for (int i = 0; i < n; i++) {
			int fd = (int)(evs[i].data.u64 & 0xffffffffu);
			uint32_t gen = (uint32_t)(evs[i].data.u64 >> 32);
			ssize_t r;

			pthread_mutex_lock(&close_mu);
			bool mine = fd < owner_n && owner[fd] == gen;
			pthread_mutex_unlock(&close_mu);
			if (!mine)
				continue;
			while ((r = recv(fd, trash, sizeof(trash), MSG_DONTWAIT)) > 0)
				;
			if (r == 0 || (errno != EAGAIN && errno != EINTR))
				close_owned(fd, gen);
		}
		/* Connections nginx did not close within CLOSE_WAIT_MS. */
		int64_t now = mono_ms();
		for (;;) {
			struct pending_close pc;
			pthread_mutex_lock(&close_mu);
			if (fifo_len == 0 || fifo[fifo_head].deadline_ms > now) {
				pthread_mutex_unlock(&close_mu);
				break;
			}
			pc = fifo[fifo_head];
			fifo_head = (fifo_head + 1) % fifo_cap;
			fifo_len--;
			pthread_mutex_unlock(&close_mu);
			close_owned(pc.fd, pc.gen);
		}
		if (atomic_load(&closer_stop)) {
			pthread_mutex_lock(&close_mu);
			size_t left = open_closes;
			pthread_mutex_unlock(&close_mu);
			if (left == 0)
				break;
		}
	}
	return NULL;
}

void
reply_finish(FCGX_Request *req)
{
	bool keep;
	int fd;

	if (req == NULL)
		return;
	/* What nginx asked for in FCGI_BEGIN_REQUEST (libfcgi copies its
	 * FCGI_KEEP_CONN flag here): fastcgi_keep_conn on. */
	keep = req->keepConnection != 0;
	/* keepConnection: FCGX_Finish_r flushes, writes FCGI_END_REQUEST and
	 * frees the streams but leaves the descriptor to us (unless a stream
	 * failed, when it closes it itself). */
	req->keepConnection = 1;
	FCGX_Finish_r(req);
	fd = req->ipcFd;
	free(req);
	if (fd < 0)
		return;
	/* A kept connection: nginx finishes the reply on FCGI_END_REQUEST
	 * and may send its next request on it. */
	if (keep && accept_keep(fd))
		return;
	closer_add(fd);
}

bool
reply_write(FCGX_Request *req, const char *data, size_t len)
{
	while (len > 0) {
		int chunk = len > (1u << 30) ? (1 << 30) : (int)len;
		if (FCGX_PutStr(data, chunk, req->out) != chunk)
			return false;
		data += chunk;
		len -= (size_t)chunk;
	}
	return true;
}

/* ---- the writer pool ---- */

static pthread_mutex_t q_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t q_cv = PTHREAD_COND_INITIALIZER;
static struct waiter *q_head, *q_tail;
static bool q_stop;
static pthread_t *writers;
static int n_writers;

void
reply_enqueue_list(struct waiter *head, struct waiter *tail, size_t n)
{
	if (head == NULL)
		return;
	tail->qnext = NULL;
	pthread_mutex_lock(&q_mu);
	if (q_tail != NULL)
		q_tail->qnext = head;
	else
		q_head = head;
	q_tail = tail;
	if (n > 1)
		pthread_cond_broadcast(&q_cv);
	else
		pthread_cond_signal(&q_cv);
	pthread_mutex_unlock(&q_mu);
}

void
reply_enqueue(struct waiter *w, struct reply *r, int64_t wake_ns)
{
	w->pending = r;
	w->wake_ns = wake_ns;
	reply_enqueue_list(w, w, 1);
}

/* An SSE stream whose connection already holds half a send buffer of
 * unread bytes is a client that does not keep up: it is dropped and
 * resumes with Last-Event-ID rather than stalling a writer thread.
 *
 * A reply that does not fit in what is left of the buffer is still
 * written when the client keeps up: an event larger than the whole buffer
 * (a snapshot, a catch-up: the buffer is ~208 KiB by default) would
 * otherwise drop every attempt, and the stream could never start (found
 * by tests/chaos/chaos_pg.py: SSE clients of a feed with a 300 KB snapshot
 * reconnected forever).  Such a write blocks while nginx passes it on, so
 * *guard says to bound it: a send timeout (sse_send_timeout), so that a
 * client that stops reading holds the writer for at most SSE_STALL_S
 * without progress, and at most half the writers in such writes at once
 * (big_writes), so that slow clients cannot stall every writer: past
 * that the stream is dropped and the browser retries. */
#define SSE_STALL_S 5

static _Atomic int big_writes;

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
sse_send_timeout(FCGX_Request *req, int s)
{
	struct timeval tv = {s, 0};

	(void)setsockopt(req->ipcFd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

/* May this thread write small long-poll replies itself (reply_deliver)? */
static _Thread_local bool inline_here;
/* A writer's current share of the queue (writer_main), which reply_deliver
 * extends with the SSE streams this writer re-serves. */
static _Thread_local bool in_writer;
static _Thread_local struct waiter *share_head, *share_tail;

void
reply_inline_here(bool yes)
{
	inline_here = yes;
}

void
reply_deliver(struct waiter *w, struct reply *r)
{
	int status = r->status;
	bool ok;

	/* A long-poll's connection holds nothing unread when its request
	 * comes (nginx reads a whole reply before it sends the next request
	 * on a connection), so a reply well under a socket buffer is taken
	 * at once: writing it here cannot block, and saves waking a writer
	 * (a futex wake and a context switch per reply). */
	if (in_writer && w->sse) {
		/* A stream this writer just wrote, whose next batches were
		 * already there (a writer behind the ring): it stays with this
		 * writer, after the rest of its share, instead of a round
		 * through the queue (a lock and a wake per event). */
		w->pending = r;
		w->wake_ns = 0;
		w->qnext = NULL;
		if (share_tail != NULL)
			share_tail->qnext = w;
		else
			share_head = w;
		share_tail = w;
		return;
	}
	if (!inline_here || w->sse || r->len > REPLY_INLINE_MAX) {
		reply_enqueue(w, r, 0);
		return;
	}
	ok = reply_write(w->req, r->data, r->len);
	if (ok)
		metrics_served(r->batches, r->len);
	reply_release(r);
	metrics_request(MK_LONGPOLL, status);
	reply_finish(w->req);
	w->req = NULL;
	waiter_free(w);
}

#define WRITER_BATCH 32

static void *
writer_main(void *arg)
{
	struct ring_buf scratch = {0};
	struct waiter *repark = NULL; /* SSE streams written, to park again */

	(void)arg;
	in_writer = true;
	for (;;) {
		struct waiter *w;
		struct reply *r;
		bool ok, guard = false;
		int status;

		if (share_head == NULL && repark != NULL) {
			/* The share is written: park its SSE streams again (this
			 * may give back to the share those with new batches). */
			park_serve_list(repark, &scratch);
			repark = NULL;
		}
		if (share_head == NULL) {
			/* Take a share of the queue at once: one lock round per
			 * share, not per reply. */
			size_t take = 0;
			struct waiter *last;
			pthread_mutex_lock(&q_mu);
			while (q_head == NULL && !q_stop)
				pthread_cond_wait(&q_cv, &q_mu);
			if (q_head == NULL) {
				pthread_mutex_unlock(&q_mu);
				break;
			}
			share_head = last = q_head;
			while (take < WRITER_BATCH - 1 && last->qnext != NULL) {
				last = last->qnext;
				take++;
			}
			q_head = last->qnext;
			if (q_head == NULL)
				q_tail = NULL;
			last->qnext = NULL;
			share_tail = last;
			pthread_mutex_unlock(&q_mu);
		}
		w = share_head;
		share_head = w->qnext;
		if (share_head == NULL)
			share_tail = NULL;
		w->qnext = NULL;

		r = w->pending;
		w->pending = NULL;
		status = r->status;
		if (w->sse && status != 200) {
			ok = false; /* the stream is open: end it, the browser reconnects */
		} else if (w->sse && sse_backlogged(w, r->len, &guard)) {
			log_info("feed=%s: SSE client too slow (%zu bytes not taken), dropped",
			         w->feed->name, r->len);
			ok = false;
		} else if (guard && atomic_fetch_add(&big_writes, 1) >= (n_writers + 1) / 2) {
			atomic_fetch_sub(&big_writes, 1);
			log_info("feed=%s: SSE event of %zu bytes while other writers are busy "
			         "with large ones, dropped",
			         w->feed->name, r->len);
			ok = false;
		} else {
			if (guard)
				sse_send_timeout(w->req, SSE_STALL_S);
			ok = reply_write(w->req, r->data, r->len);
			if (ok && w->sse)
				ok = FCGX_FFlush(w->req->out) == 0;
			if (guard) {
				if (ok)
					sse_send_timeout(w->req, 0);
				atomic_fetch_sub(&big_writes, 1);
			}
		}
		if (ok) {
			metrics_served(r->batches, r->len);
			if (w->wake_ns != 0)
				metrics_wake_latency((double)(mono_ns() - w->wake_ns) / 1e9);
		}
		reply_release(r);
		w->keepalive = false;
		if (w->sse && ok && status == 200 && !park_stopping()) {
			w->deadline_ms = mono_ms() + (int64_t)park_sse_keepalive_s * 1000;
			/* Back to the parking lot once this share is written:
			 * all of them in one lock round (park_serve_list). */
			w->qnext = repark;
			repark = w;
			continue;
		}
		if (w->sse)
			metrics_sse(-1);
		else
			metrics_request(MK_LONGPOLL, status);
		reply_finish(w->req);
		w->req = NULL;
		waiter_free(w);
	}
	free(scratch.data);
	return NULL;
}

void
reply_init(int n, int max_fds)
{
	owner = calloc((size_t)max_fds, sizeof(*owner));
	if (owner == NULL)
		fatal("out of memory for %d descriptors", max_fds);
	owner_n = max_fds;
	epfd = epoll_create1(EPOLL_CLOEXEC);
	if (epfd < 0)
		fatal("epoll_create1");
	if (pthread_create(&closer, NULL, closer_main, NULL) != 0)
		fatal("cannot start the closer thread");
	writers = calloc((size_t)n, sizeof(*writers));
	if (writers == NULL)
		fatal("out of memory");
	for (int i = 0; i < n; i++)
		if (pthread_create(&writers[i], NULL, writer_main, NULL) != 0)
			fatal("cannot start writer thread %d", i);
	n_writers = n;
}

void
reply_stop(void)
{
	pthread_mutex_lock(&q_mu);
	q_stop = true;
	pthread_cond_broadcast(&q_cv);
	pthread_mutex_unlock(&q_mu);
	for (int i = 0; i < n_writers; i++)
		pthread_join(writers[i], NULL);
	free(writers);
	writers = NULL;
	n_writers = 0;
	atomic_store(&closer_stop, true);
	if (epfd >= 0) {
		pthread_join(closer, NULL);
		close(epfd);
		epfd = -1;
	}
	free(owner);
	owner = NULL;
	owner_n = 0;
	free(fifo);
	fifo = NULL;
	fifo_len = fifo_cap = fifo_head = 0;
}
