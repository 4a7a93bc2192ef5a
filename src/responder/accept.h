/*
 * accept.h - taking FastCGI connections without letting a slow one stall
 * the others.
 *
 * libfcgi's FCGX_Accept_r accepts and then reads the whole params block
 * with blocking reads: a connection that sends its params slowly (or not
 * at all) holds the accepting thread, and behind an accept mutex every
 * other accept.  Here one thread accepts (non-blocking, from epoll) and
 * keeps each new connection in the same epoll set until its params block
 * is complete, looking with recv(MSG_PEEK) at the FastCGI record headers
 * only; a connection that does not complete it within ACCEPT_PARAMS_MS is
 * closed.  A complete params block is read with FCGX_Accept_r on the
 * accepting thread (keepConnection set, so it reads the params from the
 * open descriptor instead of accepting): by then the read cannot block.
 * Quick requests (the long-poll with a cursor: parse, look up, park) are
 * then served right there, saving a thread hand-off (a futex wake and a
 * context switch) per poll; the rest
 * go to the handler threads.  Several processes may accept on one socket.
 *
 * Kept connections: when nginx keeps its FastCGI connections (upstream
 * keepalive), a finished request's descriptor comes back through
 * accept_keep() and waits in the same epoll set, one-shot, for the next
 * request on it: no accept, shutdown or close per request.
 */
#ifndef TAILGATE_ACCEPT_H
#define TAILGATE_ACCEPT_H

#include "ring.h"

#include <fcgiapp.h>
#include <stdbool.h>

#define ACCEPT_PARAMS_MS 5000

typedef void (*accept_handler)(FCGX_Request *req, struct ring_buf *scratch);
/* May req be handled on the accepting thread itself?  Only for requests
 * whose handling never waits (no blocking write, no long render). */
typedef bool (*accept_quick)(FCGX_Request *req);

/* Start the accepting thread and n handler threads calling handle() with
 * each request (which the handler then owns).  A request quick() says
 * yes to is handled on the accepting thread, without a hand-off (quick
 * may be NULL).  Dies on failure. */
void accept_start(int listen_fd, int n_handlers, int max_fds, accept_handler handle,
                  accept_quick quick);
/* Stop accepting, let the handlers finish, join everything. */
void accept_stop(void);

/* Take back a connection whose request is finished and whose FastCGI
 * BEGIN_REQUEST asked to keep it (FCGI_KEEP_CONN: nginx's fastcgi_keep_conn
 * with an upstream keepalive cache): the accepting thread watches it for
 * nginx's next request on it, or its close.  false: not taken (stopping),
 * the caller closes it.  Any thread. */
bool accept_keep(int fd);

/* Is the params block of a FastCGI request complete in buf[0..len)?
 * 1 yes, 0 not yet, -1 malformed.  (Exposed for tests.) */
int accept_params_complete(const unsigned char *buf, size_t len);

#endif
