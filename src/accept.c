/*
 * accept.c - the accepting thread and the handler pool (accept.h).
 */
#include <config.h> /* autoconf's: _GNU_SOURCE for accept4 */

#include "accept.h"

#include "feeds.h"
#include "log.h"

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
static _Atomic bool stopping;

/* Connections waiting for their params (accepting thread only). */
static uint32_t *pend_gen;
static int pend_n;
static uint32_t gen_counter;
static struct pending *fifo;
static size_t fifo_head, fifo_len, fifo_cap;

/* Ready connections for the handlers. */
static pthread_mutex_t rq_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t rq_cv = PTHREAD_COND_INITIALIZER;
static int *rq;
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
rq_push(int fd)
{
	pthread_mutex_lock(&rq_mu);
	if (rq_len == rq_cap) {
		size_t nc = rq_cap ? rq_cap * 2 : 1024;
		int *n = malloc(nc * sizeof(*n));
		if (n == NULL)
			fatal("out of memory");
		for (size_t i = 0; i < rq_len; i++)
			n[i] = rq[(rq_head + i) % rq_cap];
		free(rq);
		rq = n;
		rq_cap = nc;
		rq_head = 0;
	}
	rq[(rq_head + rq_len++) % rq_cap] = fd;
	pthread_cond_signal(&rq_cv);
	pthread_mutex_unlock(&rq_mu);
}

static void
drop_pending(int fd)
{
	epoll_ctl(epfd, EPOLL_CTL_DEL, fd, NULL);
	if (fd < pend_n)
		pend_gen[fd] = 0;
}

/* Look at what fd has sent so far: 1 handed on (or closed), 0 wait. */
static int
check_pending(int fd, bool watched)
{
	static unsigned char peek[PEEK_MAX];
	ssize_t n = recv(fd, peek, sizeof(peek), MSG_PEEK | MSG_DONTWAIT);
	int c;

	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return 0;
	if (n <= 0) {
		c = -1;
	} else {
		c = accept_params_complete(peek, (size_t)n);
		if (c == 0 && (size_t)n < sizeof(peek))
			return 0; /* wait for more */
	}
	if (watched)
		drop_pending(fd);
	if (c < 0) {
		if (n > 0)
			log_debug("fd %d: not FastCGI, closed", fd);
		close(fd);
		return 1;
	}
	rq_push(fd); /* complete (or too large to peek: read blocking) */
	return 1;
}

static void
accept_some(void)
{
	/* A few per wake-up, then back to epoll_wait, so that the other
	 * workers' accepting threads get their share. */
	for (int i = 0; i < 16; i++) {
		struct epoll_event ev;
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
		if (check_pending(fd, false))
			continue;
		if (fd >= pend_n) {
			rq_push(fd); /* outside the table: let libfcgi read it */
			continue;
		}
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
		ev.data.fd = fd;
		if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) != 0) {
			pend_gen[fd] = 0;
			close(fd);
			continue;
		}
		check_pending(fd, true); /* the params may have come meanwhile */
	}
}

static void *
accept_main(void *arg)
{
	struct epoll_event evs[256];

	(void)arg;
	while (!atomic_load(&stopping)) {
		int n = epoll_wait(epfd, evs, 256, 500);
		for (int i = 0; i < n; i++) {
			int fd = evs[i].data.fd;
			if (fd == stop_fd)
				continue;
			if (fd == listen_fd)
				accept_some();
			else if (fd < pend_n && pend_gen[fd] != 0)
				check_pending(fd, true);
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
	return NULL;
}

static void *
handler_main(void *arg)
{
	struct ring_buf scratch = {0};

	(void)arg;
	for (;;) {
		FCGX_Request *req;
		int fd;

		pthread_mutex_lock(&rq_mu);
		while (rq_len == 0 && !atomic_load(&stopping))
			pthread_cond_wait(&rq_cv, &rq_mu);
		if (rq_len == 0) {
			pthread_mutex_unlock(&rq_mu);
			break;
		}
		fd = rq[rq_head];
		rq_head = (rq_head + 1) % rq_cap;
		rq_len--;
		pthread_mutex_unlock(&rq_mu);

		req = calloc(1, sizeof(*req));
		if (req == NULL)
			fatal("out of memory");
		FCGX_InitRequest(req, listen_fd, FCGI_FAIL_ACCEPT_ON_INTR);
		/* An open connection: FCGX_Accept_r reads its params instead of
		 * accepting (keepConnection keeps its opening FCGX_Finish_r from
		 * closing it). */
		req->ipcFd = fd;
		req->keepConnection = 1;
		if (FCGX_Accept_r(req) != 0) {
			/* A protocol error: libfcgi closed fd, then found nothing
			 * to accept on the non-blocking socket. */
			free(req);
			continue;
		}
		handle_fn(req, &scratch);
	}
	free(scratch.data);
	return NULL;
}

void
accept_start(int lfd, int n, int max_fds, accept_handler handle)
{
	struct epoll_event ev;

	listen_fd = lfd;
	handle_fn = handle;
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
	ev.data.fd = lfd;
	if (epoll_ctl(epfd, EPOLL_CTL_ADD, lfd, &ev) != 0)
		fatal("epoll_ctl on the listening socket");
	ev.events = EPOLLIN;
	ev.data.fd = stop_fd;
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

	atomic_store(&stopping, true);
	if (write(stop_fd, &one, sizeof(one)) < 0)
		log_warning("eventfd write: %s", strerror(errno));
	pthread_join(acceptor, NULL);
	pthread_mutex_lock(&rq_mu);
	pthread_cond_broadcast(&rq_cv);
	pthread_mutex_unlock(&rq_mu);
	for (int i = 0; i < n_handlers; i++)
		pthread_join(handlers[i], NULL);
	free(handlers);
	close(epfd);
	close(stop_fd);
	free(pend_gen);
	free(fifo);
	free(rq);
}
