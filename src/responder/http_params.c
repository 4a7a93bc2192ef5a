/*
 * http_params.c - parse and check a feed request's query (http_params.h).
 */
#include "http_params.h"

#include "batch.h"
#include "text.h"
#include "log.h"
#include "xmalloc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Percent-decode s[0..n) into a new NUL-terminated string; NULL when an
 * escape is malformed. */
static char *
pct_decode(const char *s, size_t n, size_t *outlen)
{
	char *o = xcalloc(n + 1, 1);
	size_t j = 0;

	for (size_t i = 0; i < n; i++) {
		if (s[i] == '%') {
			int hi, lo;
			if (i + 2 >= n) {
				free(o);
				return NULL;
			}
			hi = hex_value((unsigned char)s[i + 1]);
			lo = hex_value((unsigned char)s[i + 2]);
			if (hi < 0 || lo < 0) {
				free(o);
				return NULL;
			}
			o[j++] = (char)(hi * 16 + lo);
			i += 2;
		} else if (s[i] == '+') {
			o[j++] = ' ';
		} else {
			o[j++] = s[i];
		}
	}
	o[j] = '\0';
	*outlen = j;
	return o;
}

/* Every row the daemon stores is UTF-8, and replies quote parameters. */
static bool
utf8_ok(const char *s, size_t n)
{
	const unsigned char *p = (const unsigned char *)s;

	for (size_t i = 0; i < n;) {
		size_t k = p[i] < 0x80 ? 1 : utf8_char_len(p + i, n - i);
		if (k == 0)
			return false;
		i += k;
	}
	return true;
}

const char *
hp_op_name(enum hp_op op)
{
	static const char *const names[] = {"eq", "neq", "gt", "gte", "lt", "lte", "in"};
	return (unsigned)op < sizeof(names) / sizeof(names[0]) ? names[op] : "?";
}

static bool
parse_op(const char *s, size_t n, enum hp_op *op)
{
	for (int i = HP_EQ; i <= HP_IN; i++) {
		const char *name = hp_op_name((enum hp_op)i);
		if (strlen(name) == n && memcmp(s, name, n) == 0) {
			*op = (enum hp_op)i;
			return true;
		}
	}
	return false;
}

static void
set_value(struct hp_value *v, const char *s, size_t n, bool quoted)
{
	v->text = xcalloc(n + 1, 1);
	memcpy(v->text, s, n);
	v->text[n] = '\0';
	v->len = n;
	v->is_null = !quoted && n == 4 && memcmp(s, "null", 4) == 0;
}

/* One value: bare text, or "quoted" with \" and \\ escapes. */
static bool
parse_scalar(const char *s, size_t n, struct hp_value *v, char *err, size_t errlen)
{
	if (n >= 2 && s[0] == '"' && s[n - 1] == '"') {
		char *buf = xcalloc(n, 1);
		size_t j = 0;

		for (size_t i = 1; i < n - 1; i++) {
			if (s[i] == '\\' && i + 1 < n - 1)
				i++;
			else if (s[i] == '"' || s[i] == '\\') {
				free(buf);
				log_seterr(err, errlen, "bad quoting in a filter value");
				return false;
			}
			buf[j++] = s[i];
		}
		set_value(v, buf, j, true);
		free(buf);
		return true;
	}
	set_value(v, s, n, false);
	return true;
}

/* in.(a,b,"c,d"): split at commas outside quotes. */
static bool
parse_list(const char *s, size_t n, struct hp_filter *f, char *err, size_t errlen)
{
	size_t i, start;
	int count = 0;

	if (n < 2 || s[0] != '(' || s[n - 1] != ')') {
		log_seterr(err, errlen, "in. takes a list in parentheses: in.(1,2,3)");
		return false;
	}
	s++;
	n -= 2;
	f->values = xcalloc(HP_MAX_VALUES, sizeof(*f->values));
	if (n == 0) {
		f->n_values = 0;
		return true; /* in.() matches nothing */
	}
	start = 0;
	for (i = 0; i <= n; i++) {
		if (i < n && s[i] == '"') {
			for (i++; i < n && s[i] != '"'; i++)
				if (s[i] == '\\')
					i++;
			if (i >= n) {
				log_seterr(err, errlen, "unterminated quote in an in. list");
				return false;
			}
			continue;
		}
		if (i == n || s[i] == ',') {
			if (count >= HP_MAX_VALUES) {
				log_seterr(err, errlen, "an in. list holds at most %d values",
				           HP_MAX_VALUES);
				return false;
			}
			if (!parse_scalar(s + start, i - start, &f->values[count], err, errlen))
				return false;
			count++;
			f->n_values = count;
			start = i + 1;
		}
	}
	return true;
}

static void
free_filter(struct hp_filter *f)
{
	free(f->column);
	if (f->values != NULL)
		for (int i = 0; i < f->n_values; i++)
			free(f->values[i].text);
	free(f->values);
	memset(f, 0, sizeof(*f));
}

void
hp_free(struct hp_request *req)
{
	for (int i = 0; i < req->n_filters; i++)
		free_filter(&req->filters[i]);
	free(req->filter_key);
	memset(req, 0, sizeof(*req));
}

static bool
parse_timeout(const char *s, int max, int *out)
{
	int v = 0;

	if (*s == '\0' || strlen(s) > 6)
		return false;
	for (; *s; s++) {
		if (*s < '0' || *s > '9')
			return false;
		v = v * 10 + (*s - '0');
	}
	if (v > max)
		return false;
	*out = v;
	return true;
}

/* The filter key is built in a growable string; separators are written
 * raw (key_putc) and text escaped (key_add), so distinct filters never
 * produce the same key. */
struct keybuf {
	char *p;
	size_t len, cap;
};

static void
key_reserve(struct keybuf *k, size_t more)
{
	size_t nc;
	char *np;

	if (k->len + more + 1 <= k->cap)
		return;
	nc = k->cap ? k->cap : 64;
	while (nc < k->len + more + 1)
		nc *= 2;
	np = xrealloc(k->p, nc);
	k->p = np;
	k->cap = nc;
}

static void
key_putc(struct keybuf *k, char c)
{
	key_reserve(k, 1);
	k->p[k->len++] = c;
	k->p[k->len] = '\0';
}

static void
key_add(struct keybuf *k, const char *s, size_t n)
{
	key_reserve(k, 2 * n);
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (c == '\\' || c == '&' || c == '=' || c == ',' || c == ':')
			k->p[k->len++] = '\\';
		k->p[k->len++] = c;
	}
	k->p[k->len] = '\0';
}

static void
build_key(struct hp_request *req)
{
	struct keybuf k = {0};

	key_reserve(&k, 0);
	k.p[0] = '\0';
	for (int i = 0; i < req->n_filters; i++) {
		const struct hp_filter *f = &req->filters[i];
		const char *op = hp_op_name(f->op);

		key_add(&k, f->column, strlen(f->column));
		key_putc(&k, '=');
		key_add(&k, op, strlen(op));
		for (int j = 0; j < f->n_values; j++) {
			key_putc(&k, j == 0 ? ':' : ',');
			if (f->values[j].is_null) {
				key_putc(&k, '\\');
				key_putc(&k, 'N');
			} else {
				key_add(&k, f->values[j].text, f->values[j].len);
			}
		}
		key_putc(&k, '&');
	}
	req->filter_key = k.p;
}

/* What one query string has set so far. */
struct parse_state {
	struct hp_request req;
	bool seen_cursor, seen_timeout, seen_stream;
	int max_timeout_s;
	char *err;
	size_t errlen;
};

static bool
param_cursor(struct parse_state *ps, const char *val)
{
	if (ps->seen_cursor) {
		log_seterr(ps->err, ps->errlen, "cursor given twice");
		return false;
	}
	ps->seen_cursor = true;
	if (!batch_parse_position(val, &ps->req.cursor, &ps->req.cursor_ident,
	                          &ps->req.has_ident)) {
		log_seterr(ps->err, ps->errlen,
		           "malformed cursor \"%.40s\": send back the cursor of a reply as it is",
		           val);
		return false;
	}
	ps->req.has_cursor = true;
	return true;
}

static bool
param_timeout(struct parse_state *ps, const char *val)
{
	if (ps->seen_timeout) {
		log_seterr(ps->err, ps->errlen, "timeout given twice");
		return false;
	}
	ps->seen_timeout = true;
	if (!parse_timeout(val, ps->max_timeout_s, &ps->req.timeout_s)) {
		log_seterr(ps->err, ps->errlen,
		           "timeout must be whole seconds from 0 to %d, not \"%.20s\"",
		           ps->max_timeout_s, val);
		return false;
	}
	return true;
}

static bool
param_stream(struct parse_state *ps, const char *val)
{
	if (ps->seen_stream || strcmp(val, "sse") != 0) {
		log_seterr(ps->err, ps->errlen, "stream takes the value sse, once");
		return false;
	}
	ps->seen_stream = true;
	ps->req.sse = true;
	return true;
}

#define OPS_HINT "eq, neq, gt, gte, lt, lte or in"

/* COLUMN=OP.VALUE: *key moves into the filter (set to NULL) once it is
 * counted in the request. */
static bool
param_filter(struct parse_state *ps, char **key, const char *val)
{
	const char *dot = strchr(val, '.');
	struct hp_filter *f;

	if (ps->req.n_filters >= HP_MAX_FILTERS) {
		log_seterr(ps->err, ps->errlen, "at most %d filters", HP_MAX_FILTERS);
		return false;
	}
	if (dot == NULL) {
		/* Columns are known later (filter.c): say both what an unknown
		 * name and what a filter missing its operator (amount=100) needs.
		 * With no value, or an operator as the value (amount=gt), the
		 * example holds VALUE rather than what was sent. */
		bool no_value = *val == '\0' || strcmp(val, "eq") == 0 || strcmp(val, "neq") == 0 ||
		                strcmp(val, "gt") == 0 || strcmp(val, "gte") == 0 ||
		                strcmp(val, "lt") == 0 || strcmp(val, "lte") == 0 ||
		                strcmp(val, "in") == 0;

		log_seterr(ps->err, ps->errlen,
		           "unknown parameter \"%.64s\", or a filter missing its operator: "
		           "write %.64s=%s.%.32s (a filter is column=op.value, op one of "
		           "" OPS_HINT ")",
		           *key, *key, no_value && *val != '\0' ? val : "eq",
		           no_value ? "VALUE" : val);
		return false;
	}
	f = &ps->req.filters[ps->req.n_filters];
	if (!parse_op(val, (size_t)(dot - val), &f->op)) {
		log_seterr(ps->err, ps->errlen,
		           "bad filter operator \"%.*s\" for %.64s: use " OPS_HINT,
		           (int)(dot - val > 16 ? 16 : dot - val), val, *key);
		return false;
	}
	ps->req.n_filters++;
	f->column = *key;
	*key = NULL;
	if (f->op == HP_IN)
		return parse_list(dot + 1, strlen(dot + 1), f, ps->err, ps->errlen);
	f->values = xcalloc(1, sizeof(*f->values));
	if (!parse_scalar(dot + 1, strlen(dot + 1), &f->values[0], ps->err, ps->errlen))
		return false;
	f->n_values = 1;
	return true;
}

/* One key=value of p[0..n): decoded, checked, and applied. */
static bool
parse_param(struct parse_state *ps, const char *p, size_t n)
{
	const char *eq = memchr(p, '=', n);
	char *key = NULL, *val = NULL;
	size_t klen, vlen;
	bool ok = false;

	if (eq == NULL) {
		log_seterr(ps->err, ps->errlen, "parameter \"%.*s\" has no value",
		           (int)(n > 64 ? 64 : n), p);
		return false;
	}
	key = pct_decode(p, (size_t)(eq - p), &klen);
	val = pct_decode(eq + 1, (size_t)(p + n - eq - 1), &vlen);
	if (key == NULL || val == NULL)
		log_seterr(ps->err, ps->errlen, "malformed percent-escape in the query string");
	else if (klen == 0 || strlen(key) != klen || strlen(val) != vlen)
		log_seterr(ps->err, ps->errlen, "empty parameter name or NUL in the query string");
	else if (!utf8_ok(key, klen) || !utf8_ok(val, vlen))
		log_seterr(ps->err, ps->errlen,
		           "the query string is not UTF-8 (after percent-decoding)");
	else if (strcmp(key, "cursor") == 0)
		ok = param_cursor(ps, val);
	else if (strcmp(key, "timeout") == 0)
		ok = param_timeout(ps, val);
	else if (strcmp(key, "stream") == 0)
		ok = param_stream(ps, val);
	else
		ok = param_filter(ps, &key, val);
	free(key);
	free(val);
	return ok;
}

/* The headers: an Accept naming text/event-stream asks for SSE, and an
 * SSE reconnect's Last-Event-ID overrides cursor=. */
static bool
parse_headers(struct parse_state *ps, const char *accept, const char *last_event_id)
{
	if (accept != NULL && strstr(accept, "text/event-stream") != NULL)
		ps->req.sse = true;
	if (!ps->req.sse || last_event_id == NULL || *last_event_id == '\0')
		return true;
	if (!batch_parse_position(last_event_id, &ps->req.cursor, &ps->req.cursor_ident,
	                          &ps->req.has_ident)) {
		log_seterr(ps->err, ps->errlen,
		           "malformed Last-Event-ID \"%.40s\": send back an event's id as it is",
		           last_event_id);
		return false;
	}
	ps->req.has_cursor = true;
	return true;
}

bool
hp_parse(const char *query, const char *accept, const char *last_event_id, int max_timeout_s,
         struct hp_request *out, char *err, size_t errlen)
{
	struct parse_state ps = {.max_timeout_s = max_timeout_s, .err = err, .errlen = errlen};
	const char *p, *end;

	if (errlen > 0)
		err[0] = '\0';            /* failed: says "out of memory" if nothing else did */
	ps.req.timeout_s = max_timeout_s; /* the operator's long-poll timeout */
	if (query == NULL)
		query = "";
	if (strlen(query) > HP_MAX_QUERY) {
		log_seterr(err, errlen, "query string longer than %d bytes", HP_MAX_QUERY);
		return false;
	}
	for (p = query; *p != '\0'; p = *end ? end + 1 : end) {
		end = strchr(p, '&');
		if (end == NULL)
			end = p + strlen(p);
		if (end == p)
			continue; /* a&&b, trailing & */
		if (!parse_param(&ps, p, (size_t)(end - p)))
			goto failed;
	}
	if (!parse_headers(&ps, accept, last_event_id))
		goto failed;
	build_key(&ps.req);
	*out = ps.req;
	return true;
failed:
	/* Every failure above that is not an allocation wrote its reason. */
	if (errlen > 0 && err[0] == '\0')
		log_seterr(err, errlen, "out of memory");
	hp_free(&ps.req);
	return false;
}

/* ---- several feeds in one request ---- */

int
hp_parse_feed_list(const char *path, char names[][HP_FEED_NAME_MAX + 1], int max, char *err,
                   size_t errlen)
{
	int n = 0;
	const char *p = path;

	for (;;) {
		size_t len = strcspn(p, ",");
		if (len == 0 || len > HP_FEED_NAME_MAX) {
			log_seterr(err, errlen,
			           "feed list \"%.100s\": each name is 1 to %d characters, "
			           "separated by single commas",
			           path, HP_FEED_NAME_MAX);
			return -1;
		}
		for (size_t i = 0; i < len; i++) {
			char c = p[i];
			if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
			      (c >= '0' && c <= '9') || c == '_' || c == '-')) {
				log_seterr(err, errlen,
				           "feed list \"%.100s\": \"%.*s\" is not a feed name",
				           path, (int)len, p);
				return -1;
			}
		}
		if (n == max) {
			log_seterr(err, errlen,
			           "feed list \"%.100s\": at most %d feeds in one request", path,
			           max);
			return -1;
		}
		memcpy(names[n], p, len);
		names[n][len] = '\0';
		for (int i = 0; i < n; i++) {
			if (strcmp(names[i], names[n]) == 0) {
				log_seterr(err, errlen, "feed list \"%.100s\": %s named twice",
				           path, names[n]);
				return -1;
			}
		}
		n++;
		if (p[len] == '\0')
			return n;
		p += len + 1;
	}
}

/* The feed of filter column col ("FEED.COLUMN"): its index in names, or
 * -1. */
static int
filter_feed(const char *col, char names[][HP_FEED_NAME_MAX + 1], int n)
{
	const char *dot = strchr(col, '.');

	if (dot == NULL)
		return -1;
	for (int i = 0; i < n; i++) {
		if (strlen(names[i]) == (size_t)(dot - col) &&
		    memcmp(names[i], col, (size_t)(dot - col)) == 0)
			return i;
	}
	return -1;
}

bool
hp_check_feed_filters(const struct hp_request *req, char names[][HP_FEED_NAME_MAX + 1], int n,
                      char *err, size_t errlen)
{
	for (int i = 0; i < req->n_filters; i++) {
		const char *col = req->filters[i].column;
		if (filter_feed(col, names, n) < 0 || strchr(col, '.')[1] == '\0') {
			log_seterr(err, errlen,
			           "filter \"%.100s\": in a request for several feeds a filter is "
			           "FEED.COLUMN=OP.VALUE, FEED one of the requested feeds",
			           col);
			return false;
		}
	}
	return true;
}

void
hp_feed_filters(const struct hp_request *req, char names[][HP_FEED_NAME_MAX + 1], int n, int feed,
                struct hp_request *out)
{
	memset(out, 0, sizeof(*out));
	out->has_cursor = req->has_cursor;
	out->cursor = req->cursor;
	out->cursor_ident = req->cursor_ident;
	out->has_ident = req->has_ident;
	out->timeout_s = req->timeout_s;
	out->sse = req->sse;
	for (int i = 0; i < req->n_filters; i++) {
		const struct hp_filter *f = &req->filters[i];
		struct hp_filter *g;
		if (filter_feed(f->column, names, n) != feed)
			continue;
		g = &out->filters[out->n_filters++];
		g->column = xstrdup(strchr(f->column, '.') + 1);
		g->op = f->op;
		g->n_values = f->n_values;
		g->values = xcalloc((size_t)f->n_values, sizeof(*g->values));
		for (int j = 0; j < f->n_values; j++) {
			g->values[j].len = f->values[j].len;
			g->values[j].is_null = f->values[j].is_null;
			g->values[j].text = xcalloc(f->values[j].len + 1, 1);
			memcpy(g->values[j].text, f->values[j].text, f->values[j].len);
		}
	}
	build_key(out);
}
