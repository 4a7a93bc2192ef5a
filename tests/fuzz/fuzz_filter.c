/*
 * fuzz_filter.c - libFuzzer target: row filters on rows the daemon's
 * encoder made from arbitrary column text.
 *
 * Input: a type selector byte, then NUL-separated parts: a query string,
 * a constant, and one value per column (the upstream's text for it).
 * The values go through encode_value as the daemon would encode them;
 * the query is parsed, compiled and matched, never crashing, and a
 * refusal always carries its message (the 400's body).  Then the three
 * comparisons lt, eq and gt of the constant against the first column are
 * compiled: when they compile, at most one of them matches (the order
 * is total, NaN included), and when the value is null none does (a
 * constant "null" is IS NULL, not a comparison, and is skipped).
 *
 * fuzz-sources: src/responder/http_params.c src/responder/filter.c src/responder/numcmp.c
 * fuzz-sources: src/daemon/encode.c src/lib/batch.c src/lib/coltype.c src/lib/log.c
 * fuzz-sources: src/lib/xmalloc.c
 */
#include "encode.h"
#include "filter.h"
#include "http_params.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *types[] = {"int8", "numeric", "float4", "float8",
                              "text", "bool",    "jsonb",  "int2"};
#define NTYPES (sizeof(types) / sizeof(types[0]))

static struct filter_cols cols[NTYPES];

/* Next NUL-terminated part of the input, or "" past its end. */
static const char *
part(const char **p, const char *end, size_t *len)
{
	const char *s = *p;
	const char *z = s < end ? memchr(s, '\0', (size_t)(end - s)) : NULL;

	if (s >= end) {
		*len = 0;
		return "";
	}
	*len = z != NULL ? (size_t)(z - s) : (size_t)(end - s);
	*p = s + *len + 1;
	return s;
}

static struct filter *
compile(const char *query, const struct filter_cols *c, struct hp_request *req)
{
	char err[256] = "";
	struct filter *f = NULL;

	if (!hp_parse(query, NULL, NULL, 25, req, err, sizeof(err))) {
		if (err[0] == '\0')
			abort();
		return NULL;
	}
	f = filter_compile(req, c, err, sizeof(err));
	if (f == NULL) {
		if (req->n_filters > 0 && err[0] == '\0')
			abort();
		hp_free(req);
	}
	return f;
}

static void
ordering(const struct filter_cols *c, const char *constant, size_t clen, const char *row,
         size_t rowlen, bool null_value)
{
	static const char *ops[] = {"lt", "eq", "gt"};
	char *q = malloc(clen * 3 + 16);
	int matched = 0;

	/* eq.null is IS NULL, not a comparison: no order to check. */
	if (clen == 4 && memcmp(constant, "null", 4) == 0) {
		free(q);
		return;
	}

	for (int o = 0; o < 3; o++) {
		struct hp_request req;
		char *w = q + sprintf(q, "x=%s.", ops[o]);
		for (size_t i = 0; i < clen; i++)
			w += sprintf(w, "%%%02X", (unsigned char)constant[i]);
		struct filter *f = compile(q, c, &req);
		if (f != NULL) {
			matched += filter_match(f, row, rowlen);
			filter_free(f);
			hp_free(&req);
		}
	}
	if (matched > 1 || (null_value && matched > 0))
		abort();
	free(q);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *p = (const char *)data + (size > 0), *end = (const char *)data + size;
	size_t qlen, clen, vlen;
	const char *query, *constant, *value;
	struct bbuf row = {0};
	struct hp_request req;
	struct filter *f;
	char *qz;
	unsigned t;

	if (size == 0)
		return 0;
	t = data[0] % NTYPES;
	if (cols[t].n == 0) {
		char json[128];
		snprintf(json, sizeof(json), "[{\"name\":\"x\",\"type\":\"%s\"},{\"name\":\"y\"}]",
		         types[t]);
		if (!filter_cols_parse(json, &cols[t]))
			abort();
	}
	query = part(&p, end, &qlen);
	constant = part(&p, end, &clen);
	value = part(&p, end, &vlen);
	bbuf_add(&row, "[", 1);
	encode_value(&row, cols[t].kinds[0], data[0] & 0x80 ? NULL : value, vlen);
	bbuf_add(&row, ",", 1);
	value = part(&p, end, &vlen);
	encode_value(&row, COLTYPE_STRING, value, vlen);
	bbuf_add(&row, "]", 1);

	qz = strndup(query, qlen);
	f = compile(qz, &cols[t], &req);
	if (f != NULL) {
		(void)filter_match(f, row.p, row.len);
		filter_free(f);
		hp_free(&req);
	}
	free(qz);
	ordering(&cols[t], constant, clen, row.p, row.len, (data[0] & 0x80) != 0);
	bbuf_free(&row);
	return 0;
}
