/*
 * xmalloc.c - allocation that cannot fail (see xmalloc.h).
 */
#include "config.h" /* autoconf: _GNU_SOURCE and friends, first */

#include "xmalloc.h"

#include "log.h"

#include <stdlib.h>
#include <string.h>

void *
xcalloc(size_t n, size_t size)
{
	void *p = calloc(n ? n : 1, size ? size : 1);

	if (p == NULL)
		fatalx("out of memory (%zu x %zu bytes)", n, size);
	return p;
}

void *
xrealloc(void *p, size_t size)
{
	p = realloc(p, size);
	if (p == NULL)
		fatalx("out of memory (%zu bytes)", size);
	return p;
}

char *
xstrdup(const char *s)
{
	char *d = strdup(s ? s : "");

	if (d == NULL)
		fatalx("out of memory");
	return d;
}
