/*
 * fcgi_request.h - a FastCGI request read from bytes in hand, without
 * libfcgi's streams.
 *
 * nginx sends a request on a kept connection in one write:
 * FCGI_BEGIN_REQUEST, the FCGI_PARAMS records and the empty one, then
 * the empty FCGI_STDIN (a GET has no body).  The accepting thread reads
 * those bytes with one recv and this module makes the request from them:
 * no peek first, and none of libfcgi's per-request allocations (an 8 kB
 * input and an 8 kB output buffer, a 512-byte error one, the params
 * table), which a parked long-poll otherwise keeps until it is answered.
 *
 * The request is an FCGX_Request with no streams (in, out and err NULL,
 * like a detached one, conn.h) and its own envp: FCGX_GetParam works on
 * it.  conn.c gathers what is written to it and sends it with the end
 * records in one write.
 */
#ifndef TAILGATE_FCGI_REQUEST_H
#define TAILGATE_FCGI_REQUEST_H

#include <fcgiapp.h>
#include <stdbool.h>
#include <stddef.h>

/* The most a request read this way may take, in bytes (all its records;
 * nginx's are a few hundred). */
#define FCGIREQ_MAX (64 * 1024)

struct fcgireq {
	FCGX_Request req; /* first: a struct fcgireq * is its FCGX_Request * */
	char **env;       /* req.envp: the array and its strings, one block */
	bool gather;      /* writes go to out until finished or detached */
	char *out;        /* FCGI_STDOUT records not sent yet */
	size_t out_len, out_cap;
	size_t last; /* offset in out of the last record's header, or SIZE_MAX */
};

/* How much of buf[0..len) is one whole request: BEGIN_REQUEST (role
 * responder), PARAMS records up to the empty one, STDIN records up to the
 * empty one, all of one request id.  > 0: its length; 0: not all there
 * yet; -1: anything else (not FastCGI, another record type, over
 * FCGIREQ_MAX). */
long fcgireq_scan(const unsigned char *buf, size_t len);
/* The request in buf[0..len) (fcgireq_scan said len) for descriptor fd,
 * gathering its output; NULL when its params are malformed. */
struct fcgireq *fcgireq_parse(const unsigned char *buf, size_t len, int fd);
/* Is req one of these? */
bool fcgireq_is(const FCGX_Request *req);
/* Free the params (once the request is detached: they are not read after)
 * and then, with fcgireq_free, the rest. */
void fcgireq_free_params(struct fcgireq *r);
void fcgireq_free(struct fcgireq *r);

#endif
