/*
 * reply.h - a reply's bytes: immutable and reference-counted, so that one
 * render serves every waiter of a group; and its gzip form, made once.
 *
 * The bytes are FastCGI stdout as written to the connection: the response
 * head and the body of a long-poll, or one or more SSE events.  status
 * (the HTTP status) and batches (how many batches it holds) are for the
 * metrics and for deciding what follows the write.
 *
 * Compression.  A reply whose renderer set body_off (a long-poll reply
 * holding batches, a snapshot: JSON that compresses 3-7x) has a gzip
 * form for the clients whose Accept-Encoding takes gzip: the same head
 * plus "Content-Encoding: gzip" and "Vary: Accept-Encoding", and the body
 * deflated.  It is made the first time a client needs it (reply_for) and
 * kept with the reply, so every waiter of a group and every hit of the
 * render cache shares one compression instead of nginx compressing the
 * same bytes once per client.  nginx's gzip filter passes a reply that
 * already carries Content-Encoding as it is.  SSE events are never
 * compressed (no head; a stream would need its own deflate state).
 */
#ifndef TAILGATE_REPLY_H
#define TAILGATE_REPLY_H

#include "buf.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct reply {
	_Atomic int refs;
	int status;
	uint64_t batches;
	size_t len;
	/* Where the body starts after the head's blank line; 0: not to be
	 * compressed.  Set by the renderer right after reply_new. */
	size_t body_off;
	struct reply *_Atomic gz; /* the gzip form, once made (owned) */
	char data[];              /* len bytes, then a NUL */
};

/* Copy b into a new reply holding one reference.  Out of memory is fatal
 * (responder.h). */
struct reply *reply_new(const struct bbuf *b, int status, uint64_t batches);
struct reply *reply_ref(struct reply *r);
/* Drop a reference (NULL: nothing); the last one frees the reply. */
void reply_release(struct reply *r);

/* What to write to a client of r: r's gzip form when gzip is set, r has
 * one (body_off) and compression is on, else r.  Valid while r is held.
 * Any thread; the gzip form is made once per reply. */
const struct reply *reply_for(struct reply *r, bool gzip);

/* The deflate level of gzip forms, 1 (fastest) to 9; 0 turns them off
 * (nginx's gzip then compresses per client).  Set before serving. */
void reply_set_gzip_level(int level);
#define REPLY_GZIP_LEVEL 1 /* the default: see docs/BENCHMARKS.md, run 12 */

/* Does an Accept-Encoding header value take gzip?  RFC 9110 12.5.3:
 * "gzip" (or "x-gzip") or "*" with a q-value above 0, "gzip;q=0" refuses
 * it even when "*" allows; no header (NULL) takes nothing coded. */
bool reply_accepts_gzip(const char *accept_encoding);

#endif
