/*
 * accept.c - the accepting thread and the handler pool (accept.h).
 */
#include <config.h> /* autoconf's: _GNU_SOURCE for accept4 */

#include "accept.h"

#include "feeds.h"
#include "log.h"
#include "reply.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#define FCGI_HEADER_LEN 8
#define FCGI_TYPE_PARAMS 4
#define PEEK_MAX (64 * 1024) /* a params block larger than this is read blocking */
/* epoll data of a kept connection (accept_keep): fd | KEPT_TAG.  Others
 * carry their bare fd (the listening socket, stop_fd, a pending one). */
#define KEPT_TAG ((uint64_t)1 << 32)

struct pending {
	int fd;
	uint32_t gen;
	int64_t deadline_ms;
};

static int listen_fd = -1, epfd = -1, stop_fd = -1;
static pthread_t acceptor;
static pthread_t *handlers;
static int n_handlers;
static accept_handler handle_fn;
static accept_quick quick_fn;
static struct ring_buf acc_scratch; /* the accepting thread's */
static _Atomic bool stopping;

/* Connections waiting for their params (accepting thread only). */
static uint32_t *pend_gen;
static int pend_n;
static uint32_t gen_counter;
static struct pending *fifo;
static size_t fifo_head, fifo_len, fifo_cap;

/* Work for the handlers: a request whose params the accepting thread
 * read, or (req NULL) a connection whose params block was too large to
 * peek at, for FCGX_Accept_r to read blocking. */
struct ready_conn {
	int fd;
	FCGX_Request *req;
};

static pthread_mutex_t rq_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t rq_cv = PTHREAD_COND_INITIALIZER;
static struct ready_conn *rq;
static size_t rq_head, rq_len, rq_cap;

int
accept_params_complete(const unsigned char *buf, size_t len)
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

static void
rq_push(int fd, FCGX_Request *req)
{
	pthread_mutex_lock(&rq_mu);
	if (rq_len == rq_cap) {
		size_t nc = rq_cap ? rq_cap * 2 : 1024;
		struct ready_conn *n = malloc(nc * sizeof(*n));
		if (n == NULL)
			fatal("out of memory");
		for (size_t i = 0; i < rq_len; i++)
			n[i] = rq[(rq_head + i) % rq_cap];
		free(rq);
		rq = n;
		rq_cap = nc;
		rq_head = 0;
	}
	rq[(rq_head + rq_len++) % rq_cap] = (struct ready_conn){fd, req};
	pthread_cond_signal(&rq_cv);
	pthread_mutex_unlock(&rq_mu);
}

/* Read the request on fd into a new FCGX_Request (libfcgi's
 * FCGX_Accept_r, reading from the open descriptor: keepConnection keeps
 * its opening FCGX_Finish_r from closing it).  NULL on a protocol error,
 * fd closed.  The listening socket it is given is -1: after closing a
 * connection that failed, FCGX_Accept_r tries to accept another, which
 * must fail at once instead of blocking this thread. */
static FCGX_Request *
read_request(int fd)
{
	FCGX_Request *req = calloc(1, sizeof(*req));

	if (req == NULL)
		fatal("out of memory");
	FCGX_InitRequest(req, -1, FCGI_FAIL_ACCEPT_ON_INTR);
	req->ipcFd = fd;
	req->keepConnection = 1;
	if (FCGX_Accept_r(req) != 0) {
		free(req);
		return NULL;
	}
	return req;
}

/* fd's params block is complete (the accepting thread): read it here
 * (cannot block) and serve a quick request on this thread, no hand-off;
 * the rest goes to a handler. */
static void
dispatch(int fd)
{
	FCGX_Request *req = read_request(fd);

	if (req == NULL)
		return;
	if (quick_fn != NULL && quick_fn(req))
		handle_fn(req, &acc_scratch);
	else
		rq_push(-1, req);
}

static void
drop_pending(int fd)
{
	epoll_ctl(epfd, EPOLL_CTL_DEL, fd, NULL);
	if (fd < pend_n)
		pend_gen[fd] = 0;
}

/* Look at what fd has sent so far: 1 handed on (or closed), 0 wait.
 * hup: the peer has shut down its side (EPOLLRDHUP), so an incomplete
 * params block will stay incomplete.  here: read a complete request on
 * this thread (dispatch), for a kept connection; a new connection goes
 * to a handler as it is, so that a storm of new connections (thousands
 * of SSE streams opening) costs this thread no more than the accept and
 * the peek, and the listen queue keeps moving. */
static int
check_pending(int fd, bool watched, bool hup, bool here)
{
	static unsigned char peek[PEEK_MAX];
	ssize_t n = recv(fd, peek, sizeof(peek), MSG_PEEK | MSG_DONTWAIT);
	int c;

	if (n < 0 && (errno == EAGAIN || errno == EINTR) && !hup)
		return 0;
	if (n <= 0) {
		c = -1;
	} else {
		c = accept_params_complete(peek, (size_t)n);
		if (c == 0 && hup)
			c = -1;
		if (c == 0 && (size_t)n < sizeof(peek))
			return 0; /* wait for more */
	}
	if (watched)
		drop_pending(fd);
	if (c < 0) {
		if (n > 0)
			log_debug("fd %d: not FastCGI or closed mid-request, closed", fd);
		close(fd);
		return 1;
	}
	if (c > 0 && here)
		dispatch(fd);
	else
		rq_push(fd, NULL); /* a handler reads it (blocking, when too large to peek) */
	return 1;
}

/* Wait for fd's params: in the epoll set (mod: it is there already, as a
 * kept connection) and the deadline FIFO.  false: fd was closed. */
static bool
watch_pending(int fd, bool mod)
{
	struct epoll_event ev;

	if (fifo_len == fifo_cap) {
		size_t nc = fifo_cap ? fifo_cap * 2 : 1024;
		struct pending *nf = malloc(nc * sizeof(*nf));
		if (nf == NULL)
			fatal("out of memory");
		for (size_t k = 0; k < fifo_len; k++)
			nf[k] = fifo[(fifo_head + k) % fifo_cap];
		free(fifo);
		fifo = nf;
		fifo_cap = nc;
		fifo_head = 0;
	}
	if (++gen_counter == 0)
		gen_counter = 1;
	pend_gen[fd] = gen_counter;
	fifo[(fifo_head + fifo_len++) % fifo_cap] =
	        (struct pending){fd, gen_counter, mono_ms() + ACCEPT_PARAMS_MS};
	ev.events = EPOLLIN | EPOLLRDHUP;
	ev.data.u64 = (uint64_t)fd;
	if (epoll_ctl(epfd, mod ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, fd, &ev) != 0) {
		pend_gen[fd] = 0;
		close(fd);
		return false;
	}
	return true;
}

/* A kept connection woke: nginx sent its next request, or closed it. */
static void
check_kept(int fd, uint32_t events)
{
	/* EPOLLONESHOT disarmed it: a complete request is read and served
	 * (dispatch) with the registration left in place for accept_keep to
	 * re-arm. */
	if (check_pending(fd, false, (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) != 0, true))
		return;
	/* Part of a params block: wait for the rest like a new connection. */
	if (watch_pending(fd, true))
		check_pending(fd, true, false, false);
}

bool
accept_keep(int fd)
{
	struct epoll_event ev;

	/* Once stopping, the accepting thread may be gone: let the caller
	 * close it. */
	if (atomic_load_explicit(&stopping, memory_order_acquire) || fd >= pend_n)
		return false;
	/* One-shot: the accepting thread gets one event, then the descriptor
	 * is quiet while its request is served.  MOD when it is still
	 * registered from its previous request (the usual case), ADD when it
	 * never was (its params came with the connection) or left the set. */
	ev.events = EPOLLIN | EPOLLRDHUP | EPOLLONESHOT;
	ev.data.u64 = (uint64_t)fd | KEPT_TAG;
	if (epoll_ctl(epfd, EPOLL_CTL_MOD, fd, &ev) == 0)
		return true;
	return errno == ENOENT && epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) == 0;
}

static void
accept_some(void)
{
	/* A few per wake-up, then back to epoll_wait, so that the other
	 * workers' accepting threads get their share. */
	for (int i = 0; i < 16; i++) {
		int fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);

		if (fd < 0) {
			if (errno == EMFILE || errno == ENFILE) {
				static int64_t last;
				if (mono_ms() - last > 5000) {
					log_warning("accept: %s (raise ulimit -n)",
					            strerror(errno));
					last = mono_ms();
				}
				/* The socket stays readable: do not spin on it. */
				usleep(20 * 1000);
			} else if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED) {
				log_warning("accept: %s", strerror(errno));
			}
			return;
		}
		/* nginx usually sent the params with the connection: look
		 * before paying for the epoll registration. */
		if (check_pending(fd, false, false, false))
			continue;
		if (fd >= pend_n) {
			rq_push(fd, NULL); /* outside the table: let libfcgi read it */
			continue;
		}
		if (watch_pending(fd, false))
			check_pending(fd, true, false,
			              false); /* the params may have come meanwhile */
	}
}

static void *
accept_main(void *arg)
{
	struct epoll_event evs[256];

	(void)arg;
	reply_inline_here(true); /* quick requests' small replies: see dispatch */
	while (!atomic_load(&stopping)) {
		int n = epoll_wait(epfd, evs, 256, 500);
		for (int i = 0; i < n; i++) {
			int fd = (int)(evs[i].data.u64 & 0xffffffffu);
			if (evs[i].data.u64 & KEPT_TAG)
				check_kept(fd, evs[i].events);
			else if (fd == stop_fd)
				continue;
			else if (fd == listen_fd)
				accept_some();
			else if (fd < pend_n && pend_gen[fd] != 0)
				check_pending(
				        fd, true,
				        (evs[i].events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) != 0,
				        false);
		}
		/* Connections that did not send their params in time. */
		int64_t now = mono_ms();
		while (fifo_len > 0 && fifo[fifo_head].deadline_ms <= now) {
			struct pending p = fifo[fifo_head];
			fifo_head = (fifo_head + 1) % fifo_cap;
			fifo_len--;
			if (p.fd < pend_n && pend_gen[p.fd] == p.gen) {
				log_info("fd %d: no complete FastCGI params within %d ms, closed",
				         p.fd, ACCEPT_PARAMS_MS);
				drop_pending(p.fd);
				close(p.fd);
			}
		}
	}
	/* Close what never completed. */
	for (int fd = 0; fd < pend_n; fd++)
		if (pend_gen[fd] != 0) {
			drop_pending(fd);
			close(fd);
		}
	free(acc_scratch.data);
	acc_scratch = (struct ring_buf){0};
	return NULL;
}

static void *
handler_main(void *arg)
{
	struct ring_buf scratch = {0};

	(void)arg;
	reply_inline_here(true);
	for (;;) {
		struct ready_conn rc;

		pthread_mutex_lock(&rq_mu);
		while (rq_len == 0 && !atomic_load(&stopping))
			pthread_cond_wait(&rq_cv, &rq_mu);
		if (rq_len == 0) {
			pthread_mutex_unlock(&rq_mu);
			break;
		}
		rc = rq[rq_head];
		rq_head = (rq_head + 1) % rq_cap;
		rq_len--;
		pthread_mutex_unlock(&rq_mu);

		if (rc.req == NULL && (rc.req = read_request(rc.fd)) == NULL)
			continue; /* a protocol error: libfcgi closed it */
		handle_fn(rc.req, &scratch);
	}
	free(scratch.data);
	return NULL;
}

void
accept_start(int lfd, int n, int max_fds, accept_handler handle, accept_quick quick)
{
	struct epoll_event ev;

	listen_fd = lfd;
	handle_fn = handle;
	quick_fn = quick;
	if (fcntl(lfd, F_SETFL, fcntl(lfd, F_GETFL) | O_NONBLOCK) != 0)
		fatal("cannot make the listening socket non-blocking");
	pend_gen = calloc((size_t)max_fds, sizeof(*pend_gen));
	if (pend_gen == NULL)
		fatal("out of memory");
	pend_n = max_fds;
	epfd = epoll_create1(EPOLL_CLOEXEC);
	stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (epfd < 0 || stop_fd < 0)
		fatal("epoll_create1/eventfd");
	/* Not EPOLLEXCLUSIVE: with it the kernel keeps waking the first
	 * process whose thread sits in epoll_wait, even a stopped one, and
	 * connections wait for it.  Waking every worker's accepting thread
	 * costs a failed accept4 (EAGAIN) per extra worker, and spreads the
	 * connections. */
	ev.events = EPOLLIN;
	ev.data.u64 = (uint64_t)lfd;
	if (epoll_ctl(epfd, EPOLL_CTL_ADD, lfd, &ev) != 0)
		fatal("epoll_ctl on the listening socket");
	ev.events = EPOLLIN;
	ev.data.u64 = (uint64_t)stop_fd;
	epoll_ctl(epfd, EPOLL_CTL_ADD, stop_fd, &ev);
	handlers = calloc((size_t)n, sizeof(*handlers));
	if (handlers == NULL)
		fatal("out of memory");
	for (int i = 0; i < n; i++)
		if (pthread_create(&handlers[i], NULL, handler_main, NULL) != 0)
			fatal("cannot start handler %d", i);
	n_handlers = n;
	if (pthread_create(&acceptor, NULL, accept_main, NULL) != 0)
		fatal("cannot start the accepting thread");
}

void
accept_stop(void)
{
	uint64_t one = 1;

	atomic_store_explicit(&stopping, true, memory_order_release);
	if (write(stop_fd, &one, sizeof(one)) < 0)
		log_warning("eventfd write: %s", strerror(errno));
	pthread_join(acceptor, NULL);
	pthread_mutex_lock(&rq_mu);
	pthread_cond_broadcast(&rq_cv);
	pthread_mutex_unlock(&rq_mu);
	for (int i = 0; i < n_handlers; i++)
		pthread_join(handlers[i], NULL);
	free(handlers);
	/* epfd stays open (and pend_n set): a writer may still be in
	 * accept_keep, past its stopping check.  A connection it registered
	 * after the accepting thread left closes with the process. */
	close(stop_fd);
	free(pend_gen);
	pend_gen = NULL;
	free(fifo);
	free(rq);
}
