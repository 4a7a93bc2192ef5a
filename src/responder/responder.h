/*
 * responder.h - one tailgate-fcgi worker process: its parts, started and
 * stopped together, in one context passed explicitly.
 *
 * The request path runs one way, each module using only those below it:
 *
 *   tailgate-fcgi.c  options, socket, workers; routes a request, parses
 *                    it (http_params), attaches the feed (feeds), makes
 *                    its waiter (waiter)
 *   multi            requests for several feeds at one common position
 *                    (its own watcher thread, its shared replies)
 *   park             serves a waiter from its position, or parks it until
 *                    its ring moves (the watcher thread)
 *   render           the reply for a waiter's position, through its cache;
 *                    a client far behind gets one net batch (netbatch)
 *   writer           writes replies (the writer threads); re-serves SSE
 *                    streams through the function it was given (park's)
 *   conn             a connection's lifecycle: accept, keep, close (the
 *                    accepting thread, the handlers, the closer); a kept
 *                    connection's requests parsed by fcgi_request; calls
 *                    the handler it was given (tailgate-fcgi.c's)
 *
 * below them all: reply (bytes and their gzip form), waiter, memtrim,
 * feeds, filter, numcmp, http_params, metrics, thread_ctx, and src/lib.
 * Each part keeps its state in its own struct, and struct responder holds
 * them all; a thread gets a pointer to the part it runs (and that part
 * points at the parts below it that it uses).
 *
 * Out of memory.  The responder aborts: an allocation that fails logs
 * what it was for and exits (fatalx, through xmalloc.h, bbuf and
 * reply_new), in every module; no request is answered half-built.  With
 * --workers the supervisor starts a new worker; nginx answers the
 * connections of the dead one with 502, and clients resume from their
 * cursors (EventSource with Last-Event-ID).  What a client controls is
 * bounded before it is allocated (HP_MAX_QUERY, RENDER_MAX_REPLY, the
 * params peek), so a request cannot ask for an unbounded amount.
 * http_params allocates the same way (xmalloc.h).  Not yet converted:
 * filter.c (and numcmp.c), which still refuse the request (400, "out of
 * memory") when an allocation fails.
 */
#ifndef TAILGATE_RESPONDER_H
#define TAILGATE_RESPONDER_H

#include "conn.h"
#include "feeds.h"
#include "multi.h"
#include "park.h"
#include "render.h"
#include "writer.h"

struct responder_opts {
	const char *ring_dir; /* NULL: RING_DEFAULT_DIR */
	int handlers;         /* request handler threads */
	int writers;          /* writer threads */
	int max_timeout_s;    /* long-poll timeout and its upper bound */
	int sse_keepalive_s;  /* SSE keep-alive comment interval */
	int cache_max_age_s;  /* max-age of replies holding batches */
	int multi_cache;      /* shared replies of several-feed requests (multi.h) */
};

struct responder {
	struct responder_opts opt;
	struct feeds feeds;
	struct render render;
	struct conns conns;
	struct writers writers;
	struct park park;
	struct multi multi; /* requests for several feeds */
};

/* Set up r (no thread yet). */
void responder_init(struct responder *r, const struct responder_opts *opt);
/* Start every thread: the closer, the writers, the watcher, then the
 * accepting thread and the handlers, which call handle(r, ...) and
 * quick(r, ...) for each request on listen_fd.  Dies on failure. */
void responder_start(struct responder *r, int listen_fd, int max_fds, conn_handler handle,
                     conn_quick quick);
/* Stop accepting, answer every parked request, drain the writers, close
 * what the closer holds; then free everything. */
void responder_stop(struct responder *r);

#endif
