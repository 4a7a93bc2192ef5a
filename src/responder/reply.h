/*
 * reply.h - a reply's bytes: immutable and reference-counted, so that one
 * render serves every waiter of a group.
 *
 * The bytes are FastCGI stdout as written to the connection: the response
 * head and the body of a long-poll, or one or more SSE events.  status
 * (the HTTP status) and batches (how many batches it holds) are for the
 * metrics and for deciding what follows the write.
 */
#ifndef TAILGATE_REPLY_H
#define TAILGATE_REPLY_H

#include "buf.h"

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

struct reply {
	_Atomic int refs;
	int status;
	uint64_t batches;
	size_t len;
	char data[]; /* len bytes, then a NUL */
};

/* Copy b into a new reply holding one reference.  Out of memory is fatal
 * (responder.h). */
struct reply *reply_new(const struct bbuf *b, int status, uint64_t batches);
struct reply *reply_ref(struct reply *r);
/* Drop a reference (NULL: nothing); the last one frees the reply. */
void reply_release(struct reply *r);

#endif
