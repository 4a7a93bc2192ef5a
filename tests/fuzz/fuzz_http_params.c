/*
 * fuzz_http_params.c - libFuzzer target: the query-string parser and the
 * filter compiler and matcher on arbitrary input.
 *
 * The input is split at the first two NUL bytes into a query string, a
 * Last-Event-ID header and a row (a JSON array) the compiled filter is
 * tested on.  A refusal must carry a message; what is accepted must be
 * UTF-8 without NULs (a value that is not could match no row, and is
 * quoted back in error messages).
 *
 * fuzz-sources: src/responder/http_params.c src/responder/filter.c src/responder/numcmp.c
 * fuzz-sources: src/lib/batch.c src/lib/coltype.c src/lib/log.c src/lib/xmalloc.c
 */
#include "text.h"
#include "filter.h"
#include "http_params.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static const char columns[] =
        "[{\"name\":\"id\",\"type\":\"int8\"},{\"name\":\"item\",\"type\":\"text\"},"
        "{\"name\":\"amount\",\"type\":\"numeric\"},{\"name\":\"open\",\"type\":\"bool\"},"
        "{\"name\":\"meta\",\"type\":\"jsonb\"}]";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool
utf8_ok(const char *s, size_t n)
{
	for (size_t i = 0; i < n;) {
		size_t k = utf8_char_len((const unsigned char *)s + i, n - i);
		if (k == 0)
			return false;
		i += k;
	}
	return true;
}

/* The Last-Event-ID part also as a path of several feeds: a refusal
 * says why; what is accepted names valid feeds, each once; the filters
 * split per feed keep every filter exactly once when they all name one. */
static void
multi_feeds(const struct hp_request *req, const char *path)
{
	char names[HP_MULTI_MAX][HP_FEED_NAME_MAX + 1], err[256] = "";
	int n = hp_parse_feed_list(path, names, HP_MULTI_MAX, err, sizeof(err)), total = 0;

	if (n < 0) {
		if (err[0] == '\0')
			abort();
		return;
	}
	for (int i = 0; i < n; i++)
		for (int j = 0; j < i; j++)
			if (names[i][0] == '\0' || strcmp(names[i], names[j]) == 0)
				abort();
	if (!hp_check_feed_filters(req, names, n, err, sizeof(err))) {
		if (err[0] == '\0')
			abort();
		return;
	}
	for (int i = 0; i < n; i++) {
		struct hp_request one;
		hp_feed_filters(req, names, n, i, &one);
		total += one.n_filters;
		hp_free(&one);
	}
	if (total != req->n_filters)
		abort();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct filter_cols cols;
	static int have_cols;
	char *buf = malloc(size + 3), *query, *leid, *row;
	struct hp_request req;
	char err[256];

	if (!have_cols)
		have_cols = filter_cols_parse(columns, &cols) ? 1 : -1;
	memcpy(buf, data, size);
	buf[size] = buf[size + 1] = buf[size + 2] = '\0';
	query = buf;
	leid = query + strlen(query) + 1;
	if (leid > buf + size)
		leid = buf + size + 1;
	row = leid + strlen(leid) + 1;
	if (row > buf + size + 1)
		row = buf + size + 2;
	err[0] = '\0';
	if (!hp_parse(query, "text/event-stream", *leid ? leid : NULL, 25, &req, err,
	              sizeof(err))) {
		if (err[0] == '\0')
			abort(); /* a refusal always says why (the 400's message) */
	} else {
		/* What parsed is UTF-8 without NULs (http_params.h). */
		for (int i = 0; i < req.n_filters; i++) {
			const struct hp_filter *hf = &req.filters[i];
			if (!utf8_ok(hf->column, strlen(hf->column)))
				abort();
			for (int j = 0; j < hf->n_values; j++)
				if (strlen(hf->values[j].text) != hf->values[j].len ||
				    !utf8_ok(hf->values[j].text, hf->values[j].len))
					abort();
		}
		if (have_cols > 0) {
			struct filter *f = filter_compile(&req, &cols, err, sizeof(err));
			if (f != NULL)
				(void)filter_match(f, row, strlen(row));
			filter_free(f);
		}
		multi_feeds(&req, leid);
		hp_free(&req);
	}
	for (int k = 0; k < 4; k++) {
		const char *e;
		size_t el;
		(void)json_array_nth(row, strlen(row), k, &e, &el);
	}
	free(buf);
	return 0;
}
