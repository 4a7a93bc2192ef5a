/*
 * buf.c - the growable byte buffer (buf.h).
 */
#include "buf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void
bbuf_reserve(struct bbuf *b, size_t more)
{
	size_t cap;

	if (b->len + more <= b->cap)
		return;
	cap = b->cap ? b->cap : 256;
	while (cap < b->len + more)
		cap *= 2;
	b->p = realloc(b->p, cap);
	if (b->p == NULL) {
		fprintf(stderr, "tailgate: out of memory growing a buffer to %zu bytes\n", cap);
		abort();
	}
	b->cap = cap;
}

void
bbuf_add(struct bbuf *b, const void *data, size_t len)
{
	bbuf_reserve(b, len);
	if (len > 0)
		memcpy(b->p + b->len, data, len);
	b->len += len;
}

void
bbuf_adds(struct bbuf *b, const char *s)
{
	bbuf_add(b, s, strlen(s));
}

void
bbuf_free(struct bbuf *b)
{
	free(b->p);
	memset(b, 0, sizeof(*b));
}
