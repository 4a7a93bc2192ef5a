/*
 * fuzz_conf.c - libFuzzer target: tailgated.conf parsing (src/daemon/conf.c) on
 * arbitrary bytes.
 *
 * conf_parse() takes the text as (pointer, length), not NUL-terminated:
 * the input is copied into an exact-size allocation so a read past its
 * end is caught.  A refusal must say "NAME:..." and fit its buffer; an
 * accepted config must satisfy what conf.h promises (at least one feed,
 * valid feed names, sizes in range, the right keys for the source), and
 * compare equal to itself.  The input is also tried as a size ("16M")
 * for conf_parse_size.
 *
 * fuzz-sources: src/daemon/conf.c
 */
#include "conf.h"

#include "ring.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
check(const struct conf *c)
{
	bool mz;

	if (c->nfeeds == 0 || c->source == NULL || c->conninfo == NULL || c->ring_dir == NULL)
		abort();
	mz = strcmp(c->source, "materialize") == 0;
	if (!mz && strcmp(c->source, "postgresql") != 0)
		abort();
	if (c->ring_dir[0] != '/' || c->backoff_min_ms == 0 ||
	    c->backoff_min_ms > c->backoff_max_ms)
		abort();
	for (size_t i = 0; i < c->nfeeds; i++) {
		const struct conf_feed *f = &c->feeds[i];
		size_t n = strlen(f->name);
		if (n == 0 || n > RING_FEED_NAME_MAX)
			abort();
		for (size_t k = 0; k < n; k++)
			if (!((f->name[k] >= 'a' && f->name[k] <= 'z') ||
			      (f->name[k] >= 'A' && f->name[k] <= 'Z') ||
			      (f->name[k] >= '0' && f->name[k] <= '9') || f->name[k] == '_' ||
			      f->name[k] == '-'))
				abort();
		if (f->ring_size < 64 * 1024 || f->ring_size > 4ull * 1024 * 1024 * 1024)
			abort();
		if (mz && (f->table || f->columns || f->where || f->slot ||
		           (f->view == NULL) == (f->query == NULL)))
			abort();
		if (!mz && (f->view || f->query || f->table == NULL))
			abort();
		if (conf_find_feed(c, f->name) != f || !conf_feed_equal(c, f, c, f))
			abort();
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *text = malloc(size ? size : 1), *s;
	char err[160];
	struct conf *c;
	uint64_t v;

	memcpy(text, data, size);
	memset(err, 0, sizeof(err));
	c = conf_parse("f.conf", text, size, err, sizeof(err));
	if (c == NULL) {
		if (strncmp(err, "f.conf:", 7) != 0 || memchr(err, '\0', sizeof(err)) == NULL)
			abort();
	} else {
		check(c);
		conf_free(c);
	}
	free(text);

	s = malloc(size + 1);
	memcpy(s, data, size);
	s[size] = '\0';
	if (conf_parse_size(s, &v) && (s[0] < '0' || s[0] > '9'))
		abort();
	free(s);
	return 0;
}
