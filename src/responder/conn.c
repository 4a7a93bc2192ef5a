/*
 * conn.c - accepting, keeping and closing FastCGI connections (conn.h).
 *
 * Threads: the accepting thread (accept_main) owns the listening socket,
 * the pending connections and the kept ones; the handlers (handler_main)
 * take ready requests from rq; the closer (closer_main) drains and closes
 * finished connections.  conn_finish runs on any thread.
 */
#include <config.h> /* autoconf's: _GNU_SOURCE for accept4 */

#include "conn.h"

#include "clock.h"
#include "fcgi_request.h"
#include "log.h"
#include "memtrim.h"
#include "xmalloc.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#define FCGI_HEADER_LEN 8
#define FCGI_TYPE_END_REQUEST 3
#define FCGI_TYPE_PARAMS 4
#define FCGI_TYPE_STDOUT 6
#define FCGI_MAX_CONTENT 65535
#define CONN_PEEK_MAX (64 * 1024) /* a params block larger than this is read blocking */
/* epoll data of a kept connection (conn_finish): fd | KEPT_TAG.  Others
 * carry their bare fd (the listening socket, stop_fd, a pending one). */
#define KEPT_TAG ((uint64_t)1 << 32)

/* Who owns a kept connection (conns.kept[fd]).  A kept descriptor stays
 * in the accepting thread's epoll set, edge-triggered, from one request to
 * the next: finishing a request is then an atomic store, not an
 * epoll_ctl re-arm per request.
 *   KEPT_NONE  not registered as kept (new, pending, or handed on)
 *   KEPT_IDLE  registered, waiting for nginx's next request: the
 *              accepting thread takes it (-> KEPT_BUSY) on an event
 *   KEPT_BUSY  a request on it is being served; events are not for now
 *   KEPT_EVENT busy, and an event came meanwhile (nginx's next request
 *              raced our finish, or nginx closed): keep() hands it back
 *              to the accepting thread through a queue (hand_back), which
 *              reads it as on an edge
 * Ownership and ordering.  KEPT_IDLE gives the descriptor to the
 * accepting thread: its CAS IDLE -> BUSY (acquire) pairs with keep()'s CAS
 * BUSY -> IDLE (release), so that everything the finishing thread did
 * (the reply's writes, the request freed) happens before the next request
 * is read; from BUSY the request's thread owns it, and the accepting
 * thread only notes an edge (BUSY -> EVENT) without touching it.  A
 * thread that stores KEPT_IDLE on a registered descriptor must not touch
 * it afterwards: the next edge can hand it on at once (see keep()).  The
 * operations are sequentially consistent (the default), more than the
 * acquire/release they need, at no cost that matters on x86-64. */
enum { KEPT_NONE, KEPT_IDLE, KEPT_BUSY, KEPT_EVENT };

int
conn_params_complete(const unsigned char *buf, size_t len)
{
	size_t off = 0;

	while (off + FCGI_HEADER_LEN <= len) {
		const unsigned char *h = buf + off;
		size_t clen = (size_t)h[4] << 8 | h[5];

		if (h[0] != 1)
			return -1; /* FCGI_VERSION_1 */
		if (h[1] == FCGI_TYPE_PARAMS && clen == 0)
			return 1;
		off += FCGI_HEADER_LEN + clen + h[6];
	}
	return 0;
}

/* ---- deadline FIFOs ---- */

static void
fifo_push(struct conn_fifo *q, int fd, uint32_t gen, int64_t deadline_ms)
{
	if (q->len == q->cap) {
		size_t nc = q->cap ? q->cap * 2 : 1024;
		struct conn_deadline *nv = xcalloc(nc, sizeof(*nv));
		for (size_t k = 0; k < q->len; k++)
			nv[k] = q->v[(q->head + k) % q->cap];
		free(q->v);
		q->v = nv;
		q->cap = nc;
		q->head = 0;
	}
	q->v[(q->head + q->len++) % q->cap] = (struct conn_deadline){fd, gen, deadline_ms};
}

/* Take the oldest entry if its deadline is at or before now. */
static bool
fifo_pop_due(struct conn_fifo *q, int64_t now, struct conn_deadline *out)
{
	if (q->len == 0 || q->v[q->head].deadline_ms > now)
		return false;
	*out = q->v[q->head];
	q->head = (q->head + 1) % q->cap;
	q->len--;
	return true;
}

static void
fifo_free(struct conn_fifo *q)
{
	free(q->v);
	*q = (struct conn_fifo){0};
}

/* ---- the handlers' queue ---- */

static void
rq_push(struct conns *c, int fd, FCGX_Request *req)
{
	pthread_mutex_lock(&c->rq_mu);
	if (c->rq_len == c->rq_cap) {
		size_t nc = c->rq_cap ? c->rq_cap * 2 : 1024;
		struct conn_ready *n = xcalloc(nc, sizeof(*n));
		for (size_t i = 0; i < c->rq_len; i++)
			n[i] = c->rq[(c->rq_head + i) % c->rq_cap];
		free(c->rq);
		c->rq = n;
		c->rq_cap = nc;
		c->rq_head = 0;
	}
	c->rq[(c->rq_head + c->rq_len++) % c->rq_cap] = (struct conn_ready){fd, req};
	pthread_cond_signal(&c->rq_cv);
	pthread_mutex_unlock(&c->rq_mu);
}

/* Wait for work; false once stopping with nothing left. */
static bool
rq_pop(struct conns *c, struct conn_ready *out)
{
	pthread_mutex_lock(&c->rq_mu);
	while (c->rq_len == 0 && !atomic_load(&c->stopping))
		pthread_cond_wait(&c->rq_cv, &c->rq_mu);
	if (c->rq_len == 0) {
		pthread_mutex_unlock(&c->rq_mu);
		return false;
	}
	*out = c->rq[c->rq_head];
	c->rq_head = (c->rq_head + 1) % c->rq_cap;
	c->rq_len--;
	pthread_mutex_unlock(&c->rq_mu);
	return true;
}

/* ---- reading a request ---- */

/* Read the request on fd into a new FCGX_Request (libfcgi's
 * FCGX_Accept_r, reading from the open descriptor: keepConnection keeps
 * its opening FCGX_Finish_r from closing it).  NULL on a protocol error,
 * fd closed.  The listening socket it is given is -1: after closing a
 * connection that failed, FCGX_Accept_r tries to accept another, which
 * must fail at once instead of blocking this thread. */
static FCGX_Request *
read_request(int fd)
{
	FCGX_Request *req = xcalloc(1, sizeof(*req));

	FCGX_InitRequest(req, -1, FCGI_FAIL_ACCEPT_ON_INTR);
	req->ipcFd = fd;
	req->keepConnection = 1;
	if (FCGX_Accept_r(req) != 0) {
		free(req);
		return NULL;
	}
	return req;
}

/* The whole request in buf[0..len) (fcgireq_scan), read by us from fd on
 * the accepting thread: a quick request is served here, no hand-off; the
 * rest goes to a handler. */
static void
dispatch(struct conns *c, int fd, const unsigned char *buf, size_t len)
{
	struct fcgireq *r = fcgireq_parse(buf, len, fd);

	if (r == NULL) {
		log_debug("fd %d: malformed FastCGI params, closed", fd);
		close(fd);
		return;
	}
	if (c->quick != NULL && c->quick(c->arg, &r->req))
		c->handle(c->arg, &r->req, &c->acc_ctx);
	else
		rq_push(c, -1, &r->req);
}

/* ---- pending connections (the accepting thread) ---- */

static void
drop_pending(struct conns *c, int fd)
{
	epoll_ctl(c->epfd, EPOLL_CTL_DEL, fd, NULL);
	if (fd < c->max_fds) {
		c->pend_gen[fd] = 0;
		free(c->part[fd].buf);
		c->part[fd].buf = NULL;
		c->part[fd].len = 0;
	}
}

/* A kept connection whose next request came in part (c->part[fd], read
 * by check_kept): read more; serve it once whole, close it when it cannot
 * be.  Never blocks: a peer that stops half-way holds no thread, only
 * its buffer until the pending deadline. */
static void
check_part(struct conns *c, int fd, bool hup)
{
	struct conn_part *p = &c->part[fd];
	ssize_t n = recv(fd, p->buf + p->len, FCGIREQ_MAX - p->len, MSG_DONTWAIT);
	unsigned char *buf;
	size_t len;
	long whole;

	if (n < 0 && (errno == EAGAIN || errno == EINTR) && !hup)
		return;
	if (n > 0)
		p->len += (size_t)n;
	whole = fcgireq_scan(p->buf, p->len);
	if (whole == 0 && n > 0 && !hup && p->len < FCGIREQ_MAX)
		return; /* wait for more */
	buf = p->buf;
	len = p->len;
	p->buf = NULL; /* ours now: drop_pending leaves it */
	drop_pending(c, fd);
	if (whole > 0 && (size_t)whole == len) {
		dispatch(c, fd, buf, len);
	} else {
		log_debug("fd %d: its next FastCGI request malformed or cut short, closed", fd);
		close(fd);
	}
	free(buf);
}

/* Look at what fd has sent so far: 1 handed on (or closed), 0 wait.
 * hup: the peer has shut down its side (EPOLLRDHUP), so an incomplete
 * params block will stay incomplete.  A new connection goes to a handler
 * as it is, so that a storm of new connections (thousands of SSE streams
 * opening) costs this thread no more than the accept and the peek, and
 * the listen queue keeps moving (kept connections' requests are read
 * here: check_kept, check_part). */
static int
check_pending(struct conns *c, int fd, bool watched, bool hup)
{
	ssize_t n = recv(fd, c->peek, CONN_PEEK_MAX, MSG_PEEK | MSG_DONTWAIT);
	int complete;

	if (n < 0 && (errno == EAGAIN || errno == EINTR) && !hup)
		return 0;
	if (n <= 0) {
		complete = -1;
	} else {
		complete = conn_params_complete(c->peek, (size_t)n);
		if (complete == 0 && hup)
			complete = -1;
		if (complete == 0 && (size_t)n < CONN_PEEK_MAX)
			return 0; /* wait for more */
	}
	if (watched)
		drop_pending(c, fd);
	if (complete < 0) {
		if (n > 0)
			log_debug("fd %d: not FastCGI or closed mid-request, closed", fd);
		close(fd);
		return 1;
	}
	rq_push(c, fd, NULL); /* a handler reads it (blocking, when too large to peek) */
	return 1;
}

/* Wait for fd's params: in the epoll set (mod: it is there already, as a
 * kept connection) and the deadline FIFO.  false: fd was closed. */
static bool
watch_pending(struct conns *c, int fd, bool mod)
{
	struct epoll_event ev;

	if (++c->gen_counter == 0)
		c->gen_counter = 1;
	c->pend_gen[fd] = c->gen_counter;
	fifo_push(&c->pending, fd, c->gen_counter, clock_mono_ms() + CONN_PARAMS_MS);
	ev.events = EPOLLIN | EPOLLRDHUP;
	ev.data.u64 = (uint64_t)fd;
	if (epoll_ctl(c->epfd, mod ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, fd, &ev) != 0) {
		c->pend_gen[fd] = 0;
		close(fd);
		return false;
	}
	return true;
}

/* A kept connection woke: nginx sent its next request, or closed it. */
static void
check_kept(struct conns *c, int fd, uint32_t events)
{
	unsigned char st = KEPT_IDLE;
	bool hup;
	ssize_t n;
	long whole;

	if (fd >= c->max_fds)
		return;
	/* Take it, or tell keep() that an event came while it was busy. */
	if (!atomic_compare_exchange_strong(&c->kept[fd], &st, KEPT_BUSY)) {
		if (st == KEPT_BUSY)
			atomic_compare_exchange_strong(&c->kept[fd], &st, KEPT_EVENT);
		return; /* KEPT_EVENT already, or KEPT_NONE: an event from before */
	}
	/* nginx's next request, read with one recv (no peek: the bytes are
	 * ours once read, fcgi_request.h) and served with the registration
	 * left in place: keep() makes it KEPT_IDLE again. */
	hup = (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) != 0;
	n = recv(fd, c->peek, FCGIREQ_MAX, MSG_DONTWAIT);
	if (n < 0 && (errno == EAGAIN || errno == EINTR) && !hup) {
		atomic_store(&c->kept[fd], KEPT_IDLE); /* nothing after all: the next edge */
		return;
	}
	whole = n > 0 ? fcgireq_scan(c->peek, (size_t)n) : -1;
	if (whole > 0 && whole == n) {
		dispatch(c, fd, c->peek, (size_t)n);
	} else if (whole == 0 && !hup && n < FCGIREQ_MAX) {
		/* Part of it: kept with the pending connections (and their
		 * deadline) until the rest comes, see check_part. */
		c->part[fd].buf = xcalloc(1, FCGIREQ_MAX);
		memcpy(c->part[fd].buf, c->peek, (size_t)n);
		c->part[fd].len = (size_t)n;
		atomic_store(&c->kept[fd], KEPT_NONE);
		if (!watch_pending(c, fd, true)) { /* closed */
			free(c->part[fd].buf);
			c->part[fd].buf = NULL;
		}
	} else {
		if (n > 0)
			log_debug("fd %d: not one whole FastCGI request, or closed mid-request, "
			          "closed",
			          fd);
		close(fd); /* nginx closed it (n == 0), or not a request of ours */
	}
}

/* Log an EMFILE/ENFILE at most every 5 s, and do not spin on it. */
static void
accept_exhausted(struct conns *c)
{
	if (clock_mono_ms() - c->last_emfile_ms > 5000) {
		log_warning("accept: %s (raise ulimit -n)", strerror(errno));
		c->last_emfile_ms = clock_mono_ms();
	}
	usleep(20 * 1000); /* the socket stays readable */
}

static void
accept_some(struct conns *c)
{
	/* A few per wake-up, then back to epoll_wait, so that the other
	 * workers' accepting threads get their share. */
	for (int i = 0; i < 16; i++) {
		int fd = accept4(c->listen_fd, NULL, NULL, SOCK_CLOEXEC);

		if (fd < 0) {
			if (errno == EMFILE || errno == ENFILE)
				accept_exhausted(c);
			else if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
				log_warning("accept: %s", strerror(errno));
			return;
		}
		if (fd < c->max_fds) /* a new descriptor: whatever its number was is over */
			atomic_store(&c->kept[fd], KEPT_NONE);
		/* nginx usually sent the params with the connection: look
		 * before paying for the epoll registration. */
		if (check_pending(c, fd, false, false))
			continue;
		if (fd >= c->max_fds) {
			rq_push(c, fd, NULL); /* outside the table: let libfcgi read it */
			continue;
		}
		if (watch_pending(c, fd, false)) /* the params may have come meanwhile: */
			check_pending(c, fd, true, false);
	}
}

/* Close the connections that did not send their params in time. */
static void
expire_pending(struct conns *c)
{
	struct conn_deadline p;
	int64_t now = clock_mono_ms();

	while (fifo_pop_due(&c->pending, now, &p))
		if (p.fd < c->max_fds && c->pend_gen[p.fd] == p.gen) {
			log_info("fd %d: no complete FastCGI params within %d ms, closed", p.fd,
			         CONN_PARAMS_MS);
			drop_pending(c, p.fd);
			close(p.fd);
		}
}

/* The connections keep() handed back (hand_back): each still registered,
 * edge-triggered, with an edge already consumed while its request ran;
 * read it as on a new edge (check_kept: nginx's next request, its close,
 * or nothing yet, then KEPT_IDLE until the next edge). */
static void
take_handed(struct conns *c)
{
	uint64_t v;
	int *fds;
	size_t n;

	if (read(c->hand_fd, &v, sizeof(v)) < 0 && errno != EAGAIN)
		log_warning("eventfd read: %s", strerror(errno));
	pthread_mutex_lock(&c->hand_mu);
	fds = c->hand;
	n = c->hand_len;
	c->hand = NULL;
	c->hand_len = c->hand_cap = 0;
	pthread_mutex_unlock(&c->hand_mu);
	for (size_t i = 0; i < n; i++) {
		atomic_store(&c->kept[fds[i]], KEPT_IDLE);
		check_kept(c, fds[i], 0);
	}
	free(fds);
}

static void *
accept_main(void *arg)
{
	struct conns *c = arg;
	struct epoll_event evs[256];

	c->acc_ctx.inline_ok = true; /* quick requests' small replies: see dispatch */
	while (!atomic_load(&c->stopping)) {
		int n = epoll_wait(c->epfd, evs, 256, 500);
		for (int i = 0; i < n; i++) {
			int fd = (int)(evs[i].data.u64 & 0xffffffffu);
			bool hup = (evs[i].events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) != 0;
			if (evs[i].data.u64 & KEPT_TAG)
				check_kept(c, fd, evs[i].events);
			else if (fd == c->stop_fd)
				continue;
			else if (fd == c->hand_fd)
				take_handed(c);
			else if (fd == c->listen_fd)
				accept_some(c);
			else if (fd < c->max_fds && c->pend_gen[fd] != 0 && c->part[fd].buf != NULL)
				check_part(c, fd, hup);
			else if (fd < c->max_fds && c->pend_gen[fd] != 0)
				check_pending(c, fd, true, hup);
		}
		expire_pending(c);
	}
	/* Close what never completed. */
	for (int fd = 0; fd < c->max_fds; fd++)
		if (c->pend_gen[fd] != 0) {
			drop_pending(c, fd);
			close(fd);
		}
	thread_ctx_free(&c->acc_ctx);
	return NULL;
}

static void *
handler_main(void *arg)
{
	struct conns *c = arg;
	struct thread_ctx t = {.inline_ok = true};
	struct conn_ready rc;

	while (rq_pop(c, &rc)) {
		if (rc.req == NULL && (rc.req = read_request(rc.fd)) == NULL)
			continue; /* a protocol error: libfcgi closed it */
		c->handle(c->arg, rc.req, &t);
	}
	thread_ctx_free(&t);
	return NULL;
}

/* ---- keeping and closing ---- */

/* keep() of a connection whose edge came while its request ran
 * (KEPT_EVENT): queue it for the accepting thread (take_handed), which
 * owns it from then on.  hand_mu orders everything this thread did with
 * the descriptor before everything that thread does.  false: that thread
 * has left (conn_stop_accepting): the caller closes it. */
static bool
hand_back(struct conns *c, int fd)
{
	uint64_t one = 1;

	pthread_mutex_lock(&c->hand_mu);
	if (c->hand_closed) {
		pthread_mutex_unlock(&c->hand_mu);
		atomic_store(&c->kept[fd], KEPT_NONE);
		return false;
	}
	if (c->hand_len == c->hand_cap) {
		c->hand_cap = c->hand_cap ? c->hand_cap * 2 : 64;
		c->hand = xrealloc(c->hand, c->hand_cap * sizeof(*c->hand));
	}
	c->hand[c->hand_len++] = fd;
	/* Under the lock: conn_stop_accepting closes hand_fd under it. */
	if (write(c->hand_fd, &one, sizeof(one)) < 0)
		log_warning("eventfd write: %s", strerror(errno));
	pthread_mutex_unlock(&c->hand_mu);
	return true;
}

/* Hand a finished request's connection back to the accepting thread, for
 * nginx's next request on it.  false: not taken (stopping), close it. */
static bool
keep(struct conns *c, int fd)
{
	struct epoll_event ev;
	unsigned char st = KEPT_BUSY;

	/* Once stopping, the accepting thread may be gone: let the caller
	 * close it. */
	if (atomic_load_explicit(&c->stopping, memory_order_acquire) || fd >= c->max_fds)
		return false;
	/* Registered from its previous request and no event meanwhile (the
	 * usual case): hand it back, no system call. */
	if (atomic_compare_exchange_strong(&c->kept[fd], &st, KEPT_IDLE))
		return true;
	/* KEPT_EVENT: the accepting thread saw an edge while this request
	 * ran and left it.  Handed back to that thread, which reads it as it
	 * would on an edge (take_handed).  It used to be re-armed here
	 * (KEPT_IDLE, then epoll_ctl(MOD) to deliver the edge again), but
	 * KEPT_IDLE hands the descriptor over: nginx's next bytes (or its
	 * close) are a new edge, so the accepting thread could take it, serve
	 * a request on it and close it (nginx gone, a failed write), and the
	 * descriptor number be accepted again, while this thread was still
	 * to call epoll_ctl on it; the MOD then failed, and this thread closed
	 * a descriptor that was no longer its own (ThreadSanitizer: close()
	 * in ours_flush on a writer racing epoll_ctl() in keep() on a
	 * handler, nothing ordering them). */
	if (st == KEPT_EVENT)
		return hand_back(c, fd);
	/* KEPT_NONE: not registered as kept yet (its params came with the
	 * connection, or it was pending): MOD when it is still in the set,
	 * ADD when it never was or left it.  KEPT_IDLE first, so that the
	 * event it may bring at once is taken.  This thread owns it until the
	 * epoll_ctl: no edge of a kept descriptor can come before it is
	 * registered as one (a pending one's events carry the bare fd and
	 * never look at kept[]), and when an epoll_ctl fails nothing was
	 * registered, so it is still ours to close. */
	atomic_store(&c->kept[fd], KEPT_IDLE);
	ev.events = EPOLLIN | EPOLLRDHUP | EPOLLET;
	ev.data.u64 = (uint64_t)fd | KEPT_TAG;
	if (epoll_ctl(c->epfd, EPOLL_CTL_MOD, fd, &ev) == 0)
		return true;
	if (errno == ENOENT && epoll_ctl(c->epfd, EPOLL_CTL_ADD, fd, &ev) == 0)
		return true;
	atomic_store(&c->kept[fd], KEPT_NONE);
	return false;
}

static void
close_owned(struct conns *c, int fd, uint32_t gen)
{
	pthread_mutex_lock(&c->close_mu);
	if (fd < c->max_fds && c->owner[fd] == gen) {
		c->owner[fd] = 0;
		c->open_closes--;
		close(fd); /* also leaves the epoll set */
	}
	pthread_mutex_unlock(&c->close_mu);
}

static void
closer_add(struct conns *c, int fd)
{
	struct epoll_event ev;
	uint32_t gen;

	/* As libfcgi's OS_Close: send EOF, then wait for nginx's.  nginx
	 * (1.22, buffered) finishes the reply on our EOF, not on
	 * FCGI_END_REQUEST alone: without the shutdown every reply would wait
	 * for the CONN_CLOSE_WAIT_MS sweep.  Reads are MSG_DONTWAIT. */
	shutdown(fd, SHUT_WR);
	pthread_mutex_lock(&c->close_mu);
	if (fd >= c->max_fds || c->close_epfd < 0) {
		pthread_mutex_unlock(&c->close_mu);
		close(fd);
		return;
	}
	gen = ++c->close_gen;
	if (gen == 0)
		gen = ++c->close_gen;
	c->owner[fd] = gen;
	c->open_closes++;
	fifo_push(&c->closing, fd, gen, clock_mono_ms() + CONN_CLOSE_WAIT_MS);
	ev.events = EPOLLIN | EPOLLRDHUP;
	ev.data.u64 = (uint64_t)(unsigned)fd | (uint64_t)gen << 32;
	if (epoll_ctl(c->close_epfd, EPOLL_CTL_ADD, fd, &ev) != 0) {
		c->owner[fd] = 0;
		c->open_closes--;
		close(fd);
	}
	pthread_mutex_unlock(&c->close_mu);
}

/* nginx closed its end (or an error): drain, close. */
static void
closer_event(struct conns *c, int fd, uint32_t gen)
{
	char trash[4096];
	ssize_t r;

	pthread_mutex_lock(&c->close_mu);
	bool mine = fd < c->max_fds && c->owner[fd] == gen;
	pthread_mutex_unlock(&c->close_mu);
	if (!mine)
		return;
	while ((r = recv(fd, trash, sizeof(trash), MSG_DONTWAIT)) > 0)
		;
	if (r == 0 || (errno != EAGAIN && errno != EINTR))
		close_owned(c, fd, gen);
}

/* Close the connections nginx did not close within CONN_CLOSE_WAIT_MS. */
static void
closer_expire(struct conns *c)
{
	int64_t now = clock_mono_ms();

	for (;;) {
		struct conn_deadline pc;
		bool due;

		pthread_mutex_lock(&c->close_mu);
		due = fifo_pop_due(&c->closing, now, &pc);
		pthread_mutex_unlock(&c->close_mu);
		if (!due)
			break;
		close_owned(c, pc.fd, pc.gen);
	}
}

static void *
closer_main(void *arg)
{
	struct conns *c = arg;
	struct epoll_event evs[256];

	for (;;) {
		int n = epoll_wait(c->close_epfd, evs, 256, 200);
		for (int i = 0; i < n; i++)
			closer_event(c, (int)(evs[i].data.u64 & 0xffffffffu),
			             (uint32_t)(evs[i].data.u64 >> 32));
		closer_expire(c);
		if (atomic_load(&c->closer_stop)) {
			pthread_mutex_lock(&c->close_mu);
			size_t left = c->open_closes;
			pthread_mutex_unlock(&c->close_mu);
			if (left == 0)
				break;
		}
	}
	return NULL;
}

/* ---- detached streams (conn.h) ---- */

static void
record_header(unsigned char h[FCGI_HEADER_LEN], int type, int id, size_t clen)
{
	h[0] = 1; /* FCGI_VERSION_1 */
	h[1] = (unsigned char)type;
	h[2] = (unsigned char)(id >> 8);
	h[3] = (unsigned char)id;
	h[4] = (unsigned char)(clen >> 8);
	h[5] = (unsigned char)clen;
	h[6] = 0; /* no padding */
	h[7] = 0;
}

/* Write all of iov[0..n) to fd (blocking, as libfcgi's writes are);
 * false on an error or a send timeout. */
static bool
writev_all(int fd, struct iovec *iov, int n)
{
	while (n > 0) {
		ssize_t w = writev(fd, iov, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return false;
		while (n > 0 && (size_t)w >= iov->iov_len) {
			w -= (ssize_t)iov->iov_len;
			iov++;
			n--;
		}
		if (n > 0) {
			iov->iov_base = (char *)iov->iov_base + w;
			iov->iov_len -= (size_t)w;
		}
	}
	return true;
}

/* Send what an fcgireq gathered; false (and its descriptor closed) on
 * an error. */
static bool
ours_flush(struct fcgireq *r)
{
	struct iovec iov = {r->out, r->out_len};
	bool ok = r->out_len == 0 || (r->req.ipcFd >= 0 && writev_all(r->req.ipcFd, &iov, 1));

	r->out_len = 0;
	r->last = SIZE_MAX;
	if (!ok && r->req.ipcFd >= 0) {
		close(r->req.ipcFd);
		r->req.ipcFd = -1;
	}
	return ok;
}

/* Room for n more bytes in what an fcgireq gathers. */
static void
ours_room(struct fcgireq *r, size_t n)
{
	if (r->out_len + n > r->out_cap) {
		r->out_cap = (r->out_len + n) * 2;
		r->out = xrealloc(r->out, r->out_cap);
	}
}

/* Add data to what an fcgireq gathered, as FCGI_STDOUT records: the last
 * one grown while it has room, so that a head and its body go as one. */
static void
ours_add(struct fcgireq *r, const char *data, size_t len)
{
	while (len > 0) {
		size_t clen, n;
		unsigned char *h;

		if (r->last == SIZE_MAX ||
		    ((size_t)(unsigned char)r->out[r->last + 4] << 8 |
		     (unsigned char)r->out[r->last + 5]) == FCGI_MAX_CONTENT) {
			ours_room(r, FCGI_HEADER_LEN);
			record_header((unsigned char *)r->out + r->out_len, FCGI_TYPE_STDOUT,
			              r->req.requestId, 0);
			r->last = r->out_len;
			r->out_len += FCGI_HEADER_LEN;
		}
		h = (unsigned char *)r->out + r->last;
		clen = (size_t)h[4] << 8 | h[5];
		n = len < FCGI_MAX_CONTENT - clen ? len : FCGI_MAX_CONTENT - clen;
		ours_room(r, n);
		memcpy(r->out + r->out_len, data, n);
		r->out_len += n;
		record_header((unsigned char *)r->out + r->last, FCGI_TYPE_STDOUT, r->req.requestId,
		              clen + n);
		data += n;
		len -= n;
	}
}

/* The end records (the empty FCGI_STDOUT and FCGI_END_REQUEST, appStatus
 * 0, FCGI_REQUEST_COMPLETE), after what an fcgireq gathered. */
static void
ours_end(struct fcgireq *r)
{
	ours_room(r, 3 * FCGI_HEADER_LEN);
	memset(r->out + r->out_len, 0, 3 * FCGI_HEADER_LEN);
	record_header((unsigned char *)r->out + r->out_len, FCGI_TYPE_STDOUT, r->req.requestId, 0);
	record_header((unsigned char *)r->out + r->out_len + FCGI_HEADER_LEN, FCGI_TYPE_END_REQUEST,
	              r->req.requestId, 8);
	r->out_len += 3 * FCGI_HEADER_LEN;
	r->last = SIZE_MAX;
}

bool
conn_detach(FCGX_Request *req)
{
	if (fcgireq_is(req)) {
		struct fcgireq *r = (struct fcgireq *)req;

		if (!r->gather)
			return true;
		r->gather = false;
		if (!ours_flush(r))
			return false;
		free(r->out);
		r->out = NULL;
		r->out_cap = 0;
		fcgireq_free_params(r);
		memtrim_freed(1);
		return true;
	}
	if (req->out == NULL)
		return true;
	if (FCGX_FFlush(req->out) != 0)
		return false;
	/* Not FCGX_Finish_r: no FCGI_END_REQUEST yet, and the descriptor
	 * stays; only the streams and the params go. */
	FCGX_Free(req, 0);
	req->envp = NULL;
	memtrim_freed(1);
	return true;
}

bool
conn_shed(FCGX_Request *req)
{
	/* One read by fcgi_request.c has no buffer to shed, and gathers its
	 * reply for one write already. */
	return fcgireq_is(req) || conn_detach(req);
}

/* data as FCGI_STDOUT records straight from the caller's bytes. */
static bool
detached_write(FCGX_Request *req, const char *data, size_t len)
{
	if (fcgireq_is(req) && ((struct fcgireq *)req)->gather) {
		struct fcgireq *r = (struct fcgireq *)req;

		ours_add(r, data, len);
		/* As libfcgi's buffer would, but 64 kB of it. */
		return r->out_len < FCGIREQ_MAX || ours_flush(r);
	}
	while (len > 0) {
		size_t n = len > FCGI_MAX_CONTENT ? FCGI_MAX_CONTENT : len;
		unsigned char h[FCGI_HEADER_LEN];
		struct iovec iov[2] = {{h, sizeof(h)}, {(char *)data, n}};

		record_header(h, FCGI_TYPE_STDOUT, req->requestId, n);
		if (req->ipcFd < 0 || !writev_all(req->ipcFd, iov, 2)) {
			/* As libfcgi does on a failed write: the connection
			 * is closed, and conn_finish has nothing left to do. */
			if (req->ipcFd >= 0)
				close(req->ipcFd);
			req->ipcFd = -1;
			return false;
		}
		data += n;
		len -= n;
	}
	return true;
}

#define REPLY_IOV 64

/* A detached libfcgi request's whole reply, piece[0..np) (np <= 3), as
 * FCGI_STDOUT records of at most FCGI_MAX_CONTENT bytes, and its end
 * records, in one writev while they fit in REPLY_IOV entries (a reply
 * under 64 kB: one record, one syscall, as libfcgi's buffered reply and
 * end were).  Blocking, as detached_write; false: not all written (the
 * connection is then closed). */
static bool
detached_reply(FCGX_Request *req, const struct iovec *piece, int np)
{
	struct iovec iov[REPLY_IOV];
	unsigned char hdr[REPLY_IOV][FCGI_HEADER_LEN], end[3 * FCGI_HEADER_LEN] = {0};
	size_t total = 0, off = 0;
	int n = 0, p = 0;

	for (int i = 0; i < np; i++)
		total += piece[i].iov_len;
	while (total > 0) {
		size_t clen = total > FCGI_MAX_CONTENT ? FCGI_MAX_CONTENT : total, left = clen;

		if (n + 1 + np >= REPLY_IOV) { /* a record and its pieces, and the end */
			if (req->ipcFd < 0 || !writev_all(req->ipcFd, iov, n))
				goto fail;
			n = 0;
		}
		record_header(hdr[n], FCGI_TYPE_STDOUT, req->requestId, clen);
		iov[n] = (struct iovec){hdr[n], FCGI_HEADER_LEN};
		n++;
		while (left > 0) {
			size_t take = piece[p].iov_len - off;
			if (take > left)
				take = left;
			if (take > 0)
				iov[n++] = (struct iovec){(char *)piece[p].iov_base + off, take};
			off += take;
			left -= take;
			if (off == piece[p].iov_len) {
				p++;
				off = 0;
			}
		}
		total -= clen;
	}
	/* The empty FCGI_STDOUT and FCGI_END_REQUEST (body: appStatus 0,
	 * FCGI_REQUEST_COMPLETE, reserved). */
	record_header(end, FCGI_TYPE_STDOUT, req->requestId, 0);
	record_header(end + FCGI_HEADER_LEN, FCGI_TYPE_END_REQUEST, req->requestId, 8);
	iov[n++] = (struct iovec){end, sizeof(end)};
	if (req->ipcFd >= 0 && writev_all(req->ipcFd, iov, n))
		return true;
fail:
	if (req->ipcFd >= 0)
		close(req->ipcFd);
	req->ipcFd = -1;
	return false;
}

/* End a detached request: the empty FCGI_STDOUT record and
 * FCGI_END_REQUEST, without blocking; false: not written (the connection
 * must then be closed, not kept). */
static bool
detached_end(FCGX_Request *req)
{
	unsigned char rec[3 * FCGI_HEADER_LEN] = {0};

	record_header(rec, FCGI_TYPE_STDOUT, req->requestId, 0);
	record_header(rec + FCGI_HEADER_LEN, FCGI_TYPE_END_REQUEST, req->requestId, 8);
	/* body: appStatus 0 (4 bytes), FCGI_REQUEST_COMPLETE (0), reserved */
	return send(req->ipcFd, rec, sizeof(rec), MSG_DONTWAIT | MSG_NOSIGNAL) ==
	       (ssize_t)sizeof(rec);
}

bool
conn_flush(FCGX_Request *req)
{
	if (fcgireq_is(req))
		return ours_flush((struct fcgireq *)req);
	return req->out == NULL || FCGX_FFlush(req->out) == 0;
}

/* conn_finish; end_written: a detached libfcgi request whose end records
 * are already out (conn_reply). */
static void
finish(struct conns *c, FCGX_Request *req, bool end_written)
{
	bool keep_conn;
	int fd;

	if (req == NULL)
		return;
	/* What nginx asked for in FCGI_BEGIN_REQUEST (libfcgi copies its
	 * FCGI_KEEP_CONN flag here): fastcgi_keep_conn on. */
	keep_conn = req->keepConnection != 0;
	if (fcgireq_is(req)) {
		struct fcgireq *r = (struct fcgireq *)req;

		/* Gathered: the reply and its end records in one write. */
		if (r->gather) {
			ours_end(r);
			if (!ours_flush(r))
				keep_conn = false;
		} else if (req->ipcFd >= 0 && !detached_end(req)) {
			keep_conn = false;
		}
		fd = req->ipcFd;
		fcgireq_free(r);
		if (fd < 0)
			return;
		if (keep_conn && keep(c, fd))
			return;
		closer_add(c, fd);
		return;
	}
	if (req->out == NULL && req->ipcFd >= 0 && !end_written && !detached_end(req))
		keep_conn = false; /* a stream whose end did not fit: close */
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
	if (keep_conn && keep(c, fd))
		return;
	closer_add(c, fd);
}

void
conn_finish(struct conns *c, FCGX_Request *req)
{
	finish(c, req, false);
}

bool
conn_write(FCGX_Request *req, const char *data, size_t len)
{
	if (req->out == NULL)
		return detached_write(req, data, len);
	while (len > 0) {
		int chunk = len > (1u << 30) ? (1 << 30) : (int)len;
		if (FCGX_PutStr(data, chunk, req->out) != chunk)
			return false;
		data += chunk;
		len -= (size_t)chunk;
	}
	return true;
}

bool
conn_write_head(FCGX_Request *req, const char *data, size_t len, const char *extra,
                size_t extra_len)
{
	const char *eol;
	size_t first;

	if (extra_len == 0 || len < 7 || memcmp(data, "Status:", 7) != 0 ||
	    (eol = memchr(data, '\n', len)) == NULL)
		return conn_write(req, data, len);
	first = (size_t)(eol - data) + 1;
	return conn_write(req, data, first) && conn_write(req, extra, extra_len) &&
	       conn_write(req, data + first, len - first);
}

bool
conn_reply(struct conns *c, FCGX_Request *req, const char *data, size_t len, const char *extra,
           size_t extra_len)
{
	struct iovec piece[3] = {{(char *)data, len}};
	const char *eol;
	int np = 1;
	bool ok;

	/* Gathered (fcgi_request.c's) or buffered (libfcgi's): the reply
	 * and its end go out in one write as it is. */
	if (fcgireq_is(req) || req->out != NULL) {
		ok = conn_write_head(req, data, len, extra, extra_len);
		conn_finish(c, req);
		return ok;
	}
	if (extra_len > 0 && len >= 7 && memcmp(data, "Status:", 7) == 0 &&
	    (eol = memchr(data, '\n', len)) != NULL) {
		size_t first = (size_t)(eol - data) + 1;
		piece[0].iov_len = first;
		piece[1] = (struct iovec){(char *)extra, extra_len};
		piece[2] = (struct iovec){(char *)data + first, len - first};
		np = 3;
	}
	ok = detached_reply(req, piece, np);
	finish(c, req, true);
	return ok;
}

/* ---- start and stop ---- */

static void
epoll_add_in(int epfd, int fd)
{
	struct epoll_event ev = {.events = EPOLLIN, .data.u64 = (uint64_t)fd};

	if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) != 0)
		fatal("epoll_ctl(ADD, %d)", fd);
}

void
conn_start(struct conns *c, int lfd, int n, int max_fds, conn_handler handle, conn_quick quick,
           void *arg)
{
	memset(c, 0, sizeof(*c));
	c->listen_fd = lfd;
	c->max_fds = max_fds;
	c->handle = handle;
	c->quick = quick;
	c->arg = arg;
	pthread_mutex_init(&c->rq_mu, NULL);
	pthread_cond_init(&c->rq_cv, NULL);
	pthread_mutex_init(&c->close_mu, NULL);
	pthread_mutex_init(&c->hand_mu, NULL);
	c->pend_gen = xcalloc((size_t)max_fds, sizeof(*c->pend_gen));
	c->owner = xcalloc((size_t)max_fds, sizeof(*c->owner));
	c->kept = xcalloc((size_t)max_fds, sizeof(*c->kept));
	c->part = xcalloc((size_t)max_fds, sizeof(*c->part));
	c->peek = xcalloc(1, CONN_PEEK_MAX);
	if (fcntl(lfd, F_SETFL, fcntl(lfd, F_GETFL) | O_NONBLOCK) != 0)
		fatal("cannot make the listening socket non-blocking");
	c->epfd = epoll_create1(EPOLL_CLOEXEC);
	c->close_epfd = epoll_create1(EPOLL_CLOEXEC);
	c->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	c->hand_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (c->epfd < 0 || c->close_epfd < 0 || c->stop_fd < 0 || c->hand_fd < 0)
		fatal("epoll_create1/eventfd");
	/* Not EPOLLEXCLUSIVE: with it the kernel keeps waking the first
	 * process whose thread sits in epoll_wait, even a stopped one, and
	 * connections wait for it.  Waking every worker's accepting thread
	 * costs a failed accept4 (EAGAIN) per extra worker, and spreads the
	 * connections. */
	epoll_add_in(c->epfd, lfd);
	epoll_add_in(c->epfd, c->stop_fd);
	epoll_add_in(c->epfd, c->hand_fd);
	if (pthread_create(&c->closer, NULL, closer_main, c) != 0)
		fatal("cannot start the closer thread");
	c->handlers = xcalloc((size_t)n, sizeof(*c->handlers));
	for (int i = 0; i < n; i++)
		if (pthread_create(&c->handlers[i], NULL, handler_main, c) != 0)
			fatal("cannot start handler %d", i);
	c->n_handlers = n;
	if (pthread_create(&c->acceptor, NULL, accept_main, c) != 0)
		fatal("cannot start the accepting thread");
}

void
conn_stop_accepting(struct conns *c)
{
	uint64_t one = 1;

	atomic_store_explicit(&c->stopping, true, memory_order_release);
	if (write(c->stop_fd, &one, sizeof(one)) < 0)
		log_warning("eventfd write: %s", strerror(errno));
	pthread_join(c->acceptor, NULL);
	pthread_mutex_lock(&c->rq_mu);
	pthread_cond_broadcast(&c->rq_cv);
	pthread_mutex_unlock(&c->rq_mu);
	for (int i = 0; i < c->n_handlers; i++)
		pthread_join(c->handlers[i], NULL);
	free(c->handlers);
	c->handlers = NULL;
	c->n_handlers = 0;
	/* epfd stays open (and pend_gen): a writer may still be in keep(),
	 * past its stopping check.  A connection it registered after the
	 * accepting thread left closes with the process; one it handed back
	 * (hand_back) is closed here, or refused to it from now on. */
	close(c->stop_fd);
	c->stop_fd = -1;
	pthread_mutex_lock(&c->hand_mu);
	c->hand_closed = true;
	for (size_t i = 0; i < c->hand_len; i++)
		closer_add(c, c->hand[i]);
	free(c->hand);
	c->hand = NULL;
	c->hand_len = c->hand_cap = 0;
	close(c->hand_fd);
	c->hand_fd = -1;
	pthread_mutex_unlock(&c->hand_mu);
	free(c->rq);
	c->rq = NULL;
	fifo_free(&c->pending);
}

void
conn_stop(struct conns *c)
{
	atomic_store(&c->closer_stop, true);
	pthread_join(c->closer, NULL);
	pthread_mutex_lock(&c->close_mu);
	close(c->close_epfd);
	c->close_epfd = -1;
	fifo_free(&c->closing);
	pthread_mutex_unlock(&c->close_mu);
	free(c->peek);
	c->peek = NULL;
	free(c->pend_gen);
	c->pend_gen = NULL;
	free(c->owner);
	c->owner = NULL;
	free(c->kept);
	c->kept = NULL;
	free(c->part);
	c->part = NULL;
	c->max_fds = 0; /* keep() and closer_add() take nothing any more */
}
