/*
 * conn.h - a FastCGI connection's lifecycle: accepted, read, handed to a
 * handler, kept for nginx's next request, closed.
 *
 * Accepting.  libfcgi's FCGX_Accept_r accepts and then reads the whole
 * params block with blocking reads: a connection that sends its params
 * slowly (or not at all) holds the accepting thread, and behind an accept
 * mutex every other accept.  Here one thread accepts (non-blocking, from
 * epoll) and keeps each new connection in the same epoll set until its
 * params block is complete, looking with recv(MSG_PEEK) at the FastCGI
 * record headers only; a connection that does not complete it within
 * CONN_PARAMS_MS is closed.  A complete params block is read with
 * FCGX_Accept_r (keepConnection set, so it reads the params from the open
 * descriptor instead of accepting) on a handler thread: by then the read
 * cannot block, and a storm of new connections (thousands of SSE streams
 * opening) costs the accepting thread no more than the accept and the
 * peek.  Several processes may accept on one socket.
 *
 * Keeping.  When nginx keeps its FastCGI connections (upstream keepalive,
 * fastcgi_keep_conn), a finished request's descriptor goes back to the
 * accepting thread, to wait for the next request on it: no accept,
 * shutdown or close per request.  It stays in the epoll set,
 * edge-triggered, with an atomic owner flag per descriptor (conn.c's
 * KEPT_*), so that handing it back costs no system call either.  nginx's
 * next request on it is read with one recv, no peek, and made into a
 * request by fcgi_request.c instead of libfcgi (no 17 kB of stream
 * buffers per request); what is written to it is gathered and sent with
 * the end records in one write.  Quick requests (the long-poll with a
 * cursor: parse, look up, park; conn_quick) are served there on the
 * accepting thread, saving a thread hand-off (a futex wake and a context
 * switch) per poll; the rest go to the handler threads.  A request that comes in pieces waits
 * with the pending connections (CONN_PARAMS_MS at most) with what came so
 * far; a malformed one, or one over FCGIREQ_MAX, closes the connection.
 *
 * Closing.  libfcgi's FCGX_Finish_r shuts the socket down and waits up to
 * 2 s (LIBFCGI_OS_CLOSE_POLL_TIMEOUT) for nginx to close, on the calling
 * thread.  conn_finish() instead marks the request keepConnection so that
 * FCGX_Finish_r only flushes and writes FCGI_END_REQUEST, then takes the
 * descriptor itself: shutdown(SHUT_WR), then the closer thread waits in
 * epoll for nginx to close its end, draining what it sent, or
 * CONN_CLOSE_WAIT_MS, then closes.  No thread ever waits on one
 * connection's close.
 *
 * Detached streams.  libfcgi gives each request an 8 kB input and an
 * 8 kB output buffer (and a 512-byte error one) for its whole life; an
 * SSE stream lives for hours and writes whole events, so conn_detach
 * frees them (and the params) once its head is written: conn_write then
 * sends each event as FCGI_STDOUT records straight from the reply's
 * bytes (writev: a header and the data, no copy), and conn_finish writes
 * the end records itself.  A long-poll that came on a new connection
 * (read by libfcgi) is detached as soon as its request is read
 * (conn_shed): a parked one keeps no buffer while it waits, and its reply
 * goes out with its end records in one writev (conn_reply).
 *
 * What a request is for is not known here: the handler (and whether a
 * request is quick) is passed in to conn_start.
 */
#ifndef TAILGATE_CONN_H
#define TAILGATE_CONN_H

#include "thread_ctx.h"

#include <fcgiapp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define CONN_PARAMS_MS 5000     /* for a new connection's params block */
#define CONN_CLOSE_WAIT_MS 2000 /* as libfcgi's LIBFCGI_OS_CLOSE_POLL_TIMEOUT */

/* Serve req (which the handler then owns: it ends with conn_finish), on
 * thread t. */
typedef void (*conn_handler)(void *arg, FCGX_Request *req, struct thread_ctx *t);
/* May req be handled on the accepting thread itself?  Only for requests
 * whose handling never waits (no blocking write, no long render). */
typedef bool (*conn_quick)(void *arg, FCGX_Request *req);

/* A FIFO of (descriptor, generation, deadline): connections waiting for
 * their params, and closes waiting for nginx.  An entry whose generation
 * no longer matches the descriptor's is stale and skipped. */
struct conn_deadline {
	int fd;
	uint32_t gen;
	int64_t deadline_ms;
};
struct conn_fifo {
	struct conn_deadline *v;
	size_t head, len, cap;
};

/* Work for the handlers: a request whose params the accepting thread
 * read, or (req NULL) a connection whose params block was too large to
 * peek at, for FCGX_Accept_r to read blocking. */
struct conn_ready {
	int fd;
	FCGX_Request *req;
};

/* A kept connection's next request read so far (FCGIREQ_MAX bytes), while
 * the rest has not come. */
struct conn_part {
	unsigned char *buf;
	size_t len;
};

struct conns {
	int listen_fd, epfd, stop_fd, max_fds;
	conn_handler handle;
	conn_quick quick;
	void *arg;
	_Atomic bool stopping;

	/* The accepting thread's own. */
	pthread_t acceptor;
	struct thread_ctx acc_ctx;
	uint32_t *pend_gen;     /* [max_fds]: generation of a pending fd, 0: none */
	struct conn_part *part; /* [max_fds]: a pending kept fd's request so far */
	uint32_t gen_counter;
	struct conn_fifo pending; /* params deadlines */
	unsigned char *peek;      /* CONN_PEEK_MAX bytes */
	ssize_t peeked;           /* what the last peek returned */
	int64_t last_emfile_ms;

	/* The handlers and their queue. */
	pthread_t *handlers;
	int n_handlers;
	pthread_mutex_t rq_mu;
	pthread_cond_t rq_cv;
	struct conn_ready *rq;
	size_t rq_head, rq_len, rq_cap;

	/* The closer. */
	pthread_t closer;
	int close_epfd;
	_Atomic bool closer_stop;
	pthread_mutex_t close_mu; /* guards the rest */
	uint32_t *owner;          /* [max_fds]: generation of the close we own, 0: none */

	/* Kept connections keep() hands back to the accepting thread because
	 * an edge came while their request ran (conn.c's hand_back): any
	 * thread adds under hand_mu and writes hand_fd (an eventfd in the
	 * accepting thread's epoll set); hand_closed: that thread has left. */
	int hand_fd;
	pthread_mutex_t hand_mu;
	int *hand;
	size_t hand_len, hand_cap;
	bool hand_closed;

	/* [max_fds]: who owns a kept connection (KEPT_* in conn.c); any thread. */
	_Atomic unsigned char *kept;
	uint32_t close_gen;
	size_t open_closes;
	struct conn_fifo closing; /* close deadlines */
};

/* Start the closer, the accepting thread and n_handlers handler threads
 * calling handle(arg, ...) with each request.  A request quick() says yes
 * to is handled on the accepting thread (quick may be NULL).  max_fds:
 * the descriptor limit.  Dies on failure. */
void conn_start(struct conns *c, int listen_fd, int n_handlers, int max_fds, conn_handler handle,
                conn_quick quick, void *arg);
/* Stop accepting, let the handlers finish, join them. */
void conn_stop_accepting(struct conns *c);
/* Close what the closer holds and join it: after every conn_finish. */
void conn_stop(struct conns *c);

/* End req: flush, FCGI_END_REQUEST, then keep its connection for nginx's
 * next request (when nginx asked to keep it) or close it without waiting.
 * Frees req.  Any thread. */
void conn_finish(struct conns *c, FCGX_Request *req);
/* Write data to req now, on this thread; false on a write error (a
 * detached request's connection is then closed). */
bool conn_write(FCGX_Request *req, const char *data, size_t len);
/* Send what req's output buffer holds (nothing to do once detached). */
bool conn_flush(FCGX_Request *req);
/* Flush req and free libfcgi's buffers and params for the rest of its
 * life (an SSE stream, once its head is written): req's params are gone,
 * and later writes go out as FastCGI records unbuffered.  false: the
 * flush failed. */
bool conn_detach(FCGX_Request *req);
/* conn_write of a reply that starts with its head ("Status: ...\r\n"),
 * with the header lines extra[0..extra_len) after the status line (none:
 * the reply as it is). */
bool conn_write_head(FCGX_Request *req, const char *data, size_t len, const char *extra,
                     size_t extra_len);
/* Before req parks (a long-poll): conn_detach for a request libfcgi read
 * (its 17 kB of buffers go), nothing for one fcgi_request.c read (it has
 * none, and gathers its reply).  false: the flush failed. */
bool conn_shed(FCGX_Request *req);
/* A whole reply (as conn_write_head) and its end (conn_finish) in one: a
 * detached libfcgi request's records and FCGI_END_REQUEST go out in one
 * writev; a gathered or buffered one's as they would anyway.  Frees req,
 * written or not; false: not written. */
bool conn_reply(struct conns *c, FCGX_Request *req, const char *data, size_t len, const char *extra,
                size_t extra_len);

/* Is the params block of a FastCGI request complete in buf[0..len)?
 * 1 yes, 0 not yet, -1 malformed. */
int conn_params_complete(const unsigned char *buf, size_t len);

#endif
