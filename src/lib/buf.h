/*
 * buf.h - a growable byte buffer, for building replies, rows and batches.
 */
#ifndef TAILGATE_BUF_H
#define TAILGATE_BUF_H

#include <stddef.h>

/* Growable byte buffer; dies on allocation failure (the daemon's state is
 * in memory anyway, so there is nothing sensible to continue with). */
struct bbuf {
	char *p;
	size_t len;
	size_t cap;
};
void bbuf_reserve(struct bbuf *b, size_t more);
void bbuf_add(struct bbuf *b, const void *data, size_t len);
void bbuf_adds(struct bbuf *b, const char *s);
void bbuf_free(struct bbuf *b);

#endif
