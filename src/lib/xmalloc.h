/*
 * xmalloc.h - allocation that cannot fail: out of memory is fatal
 * (fatalx, log.h).  For the daemon's own bookkeeping only; memory a
 * client or an upstream row can make large is allocated with a checked
 * malloc and its failure handled where it happens.
 */
#ifndef TAILGATE_XMALLOC_H
#define TAILGATE_XMALLOC_H

#include <stddef.h>

void *xcalloc(size_t n, size_t size); /* n == 0 allocates one byte */
void *xrealloc(void *p, size_t size);
char *xstrdup(const char *s); /* NULL duplicates as "" */

#endif
