/*
 * filter_eval.c - evaluate row filters on values as the daemon encodes
 * them, for tests/filter_diff.py (which asks PostgreSQL the same question).
 *
 * Reads lines "TYPE<TAB>VALUE<TAB>QUERY" from stdin: TYPE a column type
 * name (int8, numeric, float4, text, ...); VALUE "h" and the database's
 * text form of the value in hex, or "-" for NULL; QUERY a query string filtering
 * the one column "x" (e.g. "x=gt.1.5").  The value goes through the
 * daemon's encoder (encode.c), the query through the responder's parser
 * and filter compiler, and each line is answered with one line:
 *
 *   1   the row matches
 *   0   it does not
 *   E   the filter is refused (400), followed by the reason
 */
#include "encode.h"
#include "filter.h"
#include "http_params.h"
#include "text.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int
unhex(const char *s, size_t n, char *out)
{
	if (n % 2 != 0)
		return -1;
	for (size_t i = 0; i < n; i += 2) {
		int hi = hex_value((unsigned char)s[i]), lo = hex_value((unsigned char)s[i + 1]);
		if (hi < 0 || lo < 0)
			return -1;
		out[i / 2] = (char)(hi << 4 | lo);
	}
	return (int)(n / 2);
}

static void
eval_line(char *line)
{
	char *type = strtok(line, "\t"), *val = strtok(NULL, "\t"), *query = strtok(NULL, "\t\n");
	char cols_json[256], err[256];
	struct filter_cols cols;
	struct hp_request req;
	struct filter *f;
	struct bbuf row;

	if (type == NULL || val == NULL || query == NULL) {
		printf("E malformed input line\n");
		return;
	}
	snprintf(cols_json, sizeof(cols_json), "[{\"name\":\"x\",\"type\":\"%s\"}]", type);
	if (!filter_cols_parse(cols_json, &cols)) {
		printf("E bad type\n");
		return;
	}
	memset(&row, 0, sizeof(row));
	bbuf_add(&row, "[", 1);
	if (strcmp(val, "-") == 0) {
		encode_value(&row, cols.kinds[0], NULL, 0);
	} else {
		size_t n = strlen(val + 1);
		char *text = malloc(n / 2 + 1);
		int len = text != NULL && val[0] == 'h' ? unhex(val + 1, n, text) : -1;
		if (len < 0) {
			printf("E bad hex\n");
			free(text);
			filter_cols_free(&cols);
			bbuf_free(&row);
			return;
		}
		encode_value(&row, cols.kinds[0], text, (size_t)len);
		free(text);
	}
	bbuf_add(&row, "]", 1);

	if (!hp_parse(query, NULL, NULL, 25, &req, err, sizeof(err))) {
		printf("E %s\n", err);
	} else {
		f = filter_compile(&req, &cols, err, sizeof(err));
		if (f == NULL)
			printf("E %s\n", err);
		else
			printf("%d\n", filter_match(f, row.p, row.len) ? 1 : 0);
		filter_free(f);
		hp_free(&req);
	}
	filter_cols_free(&cols);
	bbuf_free(&row);
}

int
main(void)
{
	char *line = NULL;
	size_t cap = 0;

	while (getline(&line, &cap, stdin) > 0)
		eval_line(line);
	free(line);
	return 0;
}
