/*
 * reply.c - reference-counted reply bytes (reply.h).
 */
#include "reply.h"

#include "log.h"

#include <stdlib.h>
#include <string.h>

struct reply *
reply_new(const struct bbuf *b, int status, uint64_t batches)
{
	struct reply *r = malloc(sizeof(*r) + b->len + 1);

	if (r == NULL)
		fatalx("out of memory for a %zu-byte reply", b->len);
	atomic_store(&r->refs, 1);
	r->status = status;
	r->batches = batches;
	r->len = b->len;
	if (b->len > 0)
		memcpy(r->data, b->p, b->len);
	r->data[b->len] = '\0';
	return r;
}

struct reply *
reply_ref(struct reply *r)
{
	atomic_fetch_add_explicit(&r->refs, 1, memory_order_relaxed);
	return r;
}

void
reply_release(struct reply *r)
{
	/* acq_rel: the last releaser sees every other holder's reads done
	 * before it frees. */
	if (r != NULL && atomic_fetch_sub_explicit(&r->refs, 1, memory_order_acq_rel) == 1)
		free(r);
}
