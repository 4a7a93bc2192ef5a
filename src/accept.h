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
 * closed.  Complete connections go to the handler threads, which give the
 * descriptor to FCGX_Accept_r (keepConnection set, so it reads the params
 * from the open descriptor instead of accepting): by then the read cannot
 * block.  Several processes may accept on one socket.
 */
#ifndef TAILGATE_ACCEPT_H
#define TAILGATE_ACCEPT_H

#include "ring.h"

#include <fcgiapp.h>

#define ACCEPT_PARAMS_MS 5000

typedef void (*accept_handler)(FCGX_Request *req, struct ring_buf *scratch);

/* Start the accepting thread and n handler threads calling handle() with
 * each request (which the handler then owns).  Dies on failure. */
void accept_start(int listen_fd, int n_handlers, int max_fds, accept_handler handle);
/* Stop accepting, let the handlers finish, join everything. */
void accept_stop(void);

/* Is the params block of a FastCGI request complete in buf[0..len)?
 * 1 yes, 0 not yet, -1 malformed.  (Exposed for tests.) */
int accept_params_complete(const unsigned char *buf, size_t len);

#endif
