/*
 * follow.c - the feed follower shared by tailgate-watch and tailgate-hook:
 * libcurl GETs, the reply shapes of the HTTP API, the rows held (a multiset
 * in an open-addressing hash keyed by each row's JSON text), and the
 * resync rules of tailgate.js.
 *
 * Invariant: f->rows is the feed as of f->cursor (filtered as the query
 * says); it changes only in follow_commit().
 */
#include "config.h"

#include "follow.h"
#include "xmalloc.h"

#include <assert.h>
#include <curl/curl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

/* ---- rows: key -> (row, count) -------------------------------------------- */

struct slot {
	char *key; /* NULL: empty */
	json_object *row;
	long n; /* > 0 in a row set; any sign in a delta */
};

struct follow_rows {
	struct slot *s;
	size_t cap; /* a power of two */
	size_t used;
};

static uint64_t
hash_key(const char *k)
{
	uint64_t h = 1469598103934665603ULL; /* FNV-1a */
	for (; *k; k++)
		h = (h ^ (unsigned char)*k) * 1099511628211ULL;
	return h;
}

static struct follow_rows *
rows_new(void)
{
	struct follow_rows *r = xcalloc(1, sizeof(*r));
	r->cap = 64;
	r->s = xcalloc(r->cap, sizeof(*r->s));
	return r;
}

static void
rows_free(struct follow_rows *r)
{
	if (r == NULL)
		return;
	for (size_t i = 0; i < r->cap; i++)
		if (r->s[i].key) {
			free(r->s[i].key);
			json_object_put(r->s[i].row);
		}
	free(r->s);
	free(r);
}

static struct slot *
rows_find(struct follow_rows *r, const char *key)
{
	size_t i = hash_key(key) & (r->cap - 1);
	while (r->s[i].key && strcmp(r->s[i].key, key) != 0)
		i = (i + 1) & (r->cap - 1);
	return &r->s[i];
}

static void rows_add(struct follow_rows *r, json_object *row, long n);

static void
rows_grow(struct follow_rows *r)
{
	struct slot *old = r->s;
	size_t oldcap = r->cap;
	r->cap *= 2;
	r->s = xcalloc(r->cap, sizeof(*r->s));
	r->used = 0;
	for (size_t i = 0; i < oldcap; i++)
		if (old[i].key) {
			*rows_find(r, old[i].key) = old[i];
			r->used++;
		}
	free(old);
}

/* Remove the slot at s, keeping every probe chain whole (backward shift). */
static void
rows_erase(struct follow_rows *r, struct slot *s)
{
	size_t i = (size_t)(s - r->s), j = i;
	free(s->key);
	json_object_put(s->row);
	r->s[i].key = NULL;
	r->used--;
	for (;;) {
		j = (j + 1) & (r->cap - 1);
		if (r->s[j].key == NULL)
			return;
		size_t home = hash_key(r->s[j].key) & (r->cap - 1);
		/* r->s[j] may move to i when i lies cyclically in [home, j). */
		if ((j > i && (home <= i || home > j)) || (j < i && home <= i && home > j)) {
			r->s[i] = r->s[j];
			r->s[j].key = NULL;
			i = j;
		}
	}
}

/* Add n (any sign) copies of row; a count reaching 0 removes the row. */
static void
rows_add(struct follow_rows *r, json_object *row, long n)
{
	const char *key = follow_row_key(row);
	struct slot *s = rows_find(r, key);
	if (s->key == NULL) {
		if (n == 0)
			return;
		if ((r->used + 1) * 4 > r->cap * 3) {
			rows_grow(r);
			s = rows_find(r, key);
		}
		s->key = xstrdup(key);
		s->row = json_object_get(row);
		s->n = 0;
		r->used++;
	}
	s->n += n;
	if (s->n == 0)
		rows_erase(r, s);
}

static void
push_copies(json_object *arr, json_object *row, long n)
{
	for (long i = 0; i < n; i++)
		json_object_array_add(arr, json_object_get(row));
}

const char *
follow_row_key(json_object *row)
{
	return json_object_to_json_string_ext(row, JSON_C_TO_STRING_PLAIN);
}

/* ---- opening: the URL and the filters -------------------------------------- */

static void
append(char **s, const char *sep, const char *t)
{
	size_t a = strlen(*s), b = strlen(sep), c = strlen(t);
	*s = xrealloc(*s, a + b + c + 1);
	if (a > 0) {
		memcpy(*s + a, sep, b);
		a += b;
	}
	memcpy(*s + a, t, c + 1);
}

int
follow_open(struct follow *f, const char *url, char **filters, int nfilters, char *err,
            size_t errlen)
{
	memset(f, 0, sizeof(*f));
	f->timeout = 25;
	f->backoff_cap_ms = 30000;
	if (strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0) {
		snprintf(err, errlen, "%s: not an http:// or https:// URL", url);
		return -1;
	}
	const char *q = strchr(url, '?');
	size_t blen = q ? (size_t)(q - url) : strlen(url);
	while (blen > 0 && url[blen - 1] == '/')
		blen--;
	f->base = strndup(url, blen);
	const char *feeds = strstr(f->base, "/feeds/");
	const char *name = feeds ? feeds + 7 : NULL;
	if (name == NULL || *name == '\0' || strchr(name, '/')) {
		snprintf(err, errlen, "%s: the URL names no feed (expected .../feeds/NAME)", url);
		goto fail;
	}
	if (strchr(name, ',') || strstr(name, "%2C") || strstr(name, "%2c")) {
		snprintf(err, errlen,
		         "%s: the URL names several feeds; follow one feed per process "
		         "(/feeds/NAME)",
		         url);
		goto fail;
	}
	f->feed = xstrdup(name);
	f->query = xstrdup(q ? q + 1 : "");
	for (int i = 0; i < nfilters; i++) {
		const char *eq = strchr(filters[i], '=');
		if (eq == NULL || eq == filters[i] || strchr(eq + 1, '.') == NULL) {
			snprintf(err, errlen,
			         "--filter %s: expected COLUMN=OP.VALUE, e.g. amount=gt.10",
			         filters[i]);
			goto fail;
		}
		char *col = curl_easy_escape(NULL, filters[i], (int)(eq - filters[i]));
		char *val = curl_easy_escape(NULL, eq + 1, 0);
		char *term = xcalloc(1, strlen(col) + strlen(val) + 2);
		sprintf(term, "%s=%s", col, val);
		append(&f->query, "&", term);
		free(term);
		curl_free(col);
		curl_free(val);
	}
	f->rows = rows_new();
	f->curl = curl_easy_init();
	if (f->curl == NULL) {
		snprintf(err, errlen, "curl_easy_init failed");
		goto fail;
	}
	return 0;
fail:
	follow_close(f);
	return -1;
}

void
follow_close(struct follow *f)
{
	if (f->curl)
		curl_easy_cleanup(f->curl);
	rows_free(f->rows);
	json_object_put(f->columns);
	free(f->base);
	free(f->query);
	free(f->feed);
	free(f->cursor);
	memset(f, 0, sizeof(*f));
}

/* ---- one request ---------------------------------------------------------- */

struct buf {
	char *p;
	size_t n;
};

static size_t
on_data(char *ptr, size_t size, size_t nmemb, void *arg)
{
	struct buf *b = arg;
	size_t len = size * nmemb;
	if (b->n + len > (256u << 20))
		return 0; /* over 256 MB: refuse (the transfer fails) */
	b->p = xrealloc(b->p, b->n + len + 1);
	memcpy(b->p + b->n, ptr, len);
	b->n += len;
	b->p[b->n] = '\0';
	return len;
}

static int
on_progress(void *arg, curl_off_t a, curl_off_t b, curl_off_t c, curl_off_t d)
{
	struct follow *f = arg;
	return f->idle ? f->idle(f->idle_arg) : 0;
}

bool
follow_curl_fatal(int rc)
{
	return rc == CURLE_URL_MALFORMAT || rc == CURLE_UNSUPPORTED_PROTOCOL;
}

/* GET base?query[&cursor=C&timeout=T]; returns the HTTP status (0 on a
 * transport error, errbuf set; -1 on one retrying cannot mend) and the
 * body in *b. */
static long
get(struct follow *f, const char *cursor, struct buf *b)
{
	char *url = xstrdup(f->base);
	char *q = xstrdup(f->query);
	if (cursor) {
		char *c = curl_easy_escape(f->curl, cursor, 0);
		char tail[256];
		snprintf(tail, sizeof(tail), "cursor=%s&timeout=%d", c, f->timeout);
		append(&q, "&", tail);
		curl_free(c);
	}
	if (*q)
		append(&url, "?", q);
	CURL *h = f->curl;
	curl_easy_reset(h);
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_data);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, b);
	curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
	curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_progress);
	curl_easy_setopt(h, CURLOPT_XFERINFODATA, f);
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, 10L);
	curl_easy_setopt(h, CURLOPT_TIMEOUT, (long)f->timeout + 30);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	if (f->cacert)
		curl_easy_setopt(h, CURLOPT_CAINFO, f->cacert);
	curl_easy_setopt(h, CURLOPT_USERAGENT, "tailgate-follow/" PACKAGE_VERSION);
	char cerr[CURL_ERROR_SIZE] = "";
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, cerr);
	struct curl_slist *hdr = curl_slist_append(NULL, "Accept: application/json");
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdr);
	CURLcode rc = curl_easy_perform(h);
	long status = 0;
	if (rc == CURLE_OK)
		curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
	else
		snprintf(f->errbuf, sizeof(f->errbuf), "GET %s: %s", url,
		         cerr[0] ? cerr : curl_easy_strerror(rc));
	if (follow_curl_fatal(rc))
		status = -1;
	curl_slist_free_all(hdr);
	free(url);
	free(q);
	return status;
}

bool
follow_cursor_ok(const char *t)
{
	size_t n = strlen(t);

	for (size_t i = 0; i < n; i++)
		if (t[i] <= 0x20 || t[i] >= 0x7f)
			return false;
	return n > 0 && n <= 200;
}

/* The reply's cursor as text, opaque: sent back as it came, never parsed
 * or compared (a JSON string; a number from an older server is kept as
 * its digits). */
static char *
cursor_text(json_object *reply)
{
	json_object *c;
	if (!json_object_object_get_ex(reply, "cursor", &c))
		return NULL;
	if (json_object_is_type(c, json_type_string)) {
		const char *t = json_object_get_string(c);
		return follow_cursor_ok(t) ? xstrdup(t) : NULL;
	}
	if (json_object_is_type(c, json_type_int)) {
		char t[32];
		snprintf(t, sizeof(t), "%" PRId64, json_object_get_int64(c));
		if (json_object_get_int64(c) == INT64_MAX) /* beyond int64: json-c saturates */
			snprintf(t, sizeof(t), "%" PRIu64, json_object_get_uint64(c));
		return xstrdup(t);
	}
	return NULL;
}

/* An array of rows (each a JSON array), or absent. */
static bool
rows_shaped(json_object *a)
{
	if (a == NULL)
		return true;
	if (!json_object_is_type(a, json_type_array))
		return false;
	for (size_t j = 0; j < json_object_array_length(a); j++)
		if (!json_object_is_type(json_object_array_get_idx(a, j), json_type_array))
			return false;
	return true;
}

/* The API's batches: an array of objects whose "inserted" and "deleted"
 * are arrays of rows.  Checked before any use: json-c's array calls on a
 * value of another type read it as an array (a hostile or broken server
 * would crash us). */
static bool
batches_shaped(json_object *batches)
{
	if (!json_object_is_type(batches, json_type_array))
		return false;
	for (size_t i = 0; i < json_object_array_length(batches); i++) {
		json_object *b = json_object_array_get_idx(batches, i), *ins = NULL, *del = NULL;
		if (!json_object_is_type(b, json_type_object))
			return false;
		json_object_object_get_ex(b, "inserted", &ins);
		json_object_object_get_ex(b, "deleted", &del);
		if (!rows_shaped(ins) || !rows_shaped(del))
			return false;
	}
	return true;
}

/* The API's columns: an array of objects, each with a string "name". */
static bool
columns_shaped(json_object *cols)
{
	if (!json_object_is_type(cols, json_type_array))
		return false;
	for (size_t i = 0; i < json_object_array_length(cols); i++) {
		json_object *c = json_object_array_get_idx(cols, i), *n;
		if (!json_object_is_type(c, json_type_object) ||
		    !json_object_object_get_ex(c, "name", &n) ||
		    !json_object_is_type(n, json_type_string))
			return false;
	}
	return true;
}

/* Add every batch of `batches` (shaped) into delta d (inserted +1, deleted -1). */
static int
sum_batches(struct follow_rows *d, json_object *batches)
{
	if (!batches_shaped(batches))
		return -1;
	for (size_t i = 0; i < json_object_array_length(batches); i++) {
		json_object *b = json_object_array_get_idx(batches, i), *ins, *del;
		if (json_object_object_get_ex(b, "deleted", &del) && del)
			for (size_t j = 0; j < json_object_array_length(del); j++)
				rows_add(d, json_object_array_get_idx(del, j), -1);
		if (json_object_object_get_ex(b, "inserted", &ins) && ins)
			for (size_t j = 0; j < json_object_array_length(ins); j++)
				rows_add(d, json_object_array_get_idx(ins, j), 1);
	}
	return 0;
}

/* The change that turns f->rows into `target` (a row set). */
static void
diff_into(struct follow *f, struct follow_rows *target, struct follow_change *ch)
{
	struct follow_rows *held = f->rows;
	for (size_t i = 0; i < held->cap; i++) {
		struct slot *h = &held->s[i];
		if (h->key == NULL)
			continue;
		struct slot *t = rows_find(target, h->key);
		long want = t->key ? t->n : 0;
		if (h->n > want)
			push_copies(ch->deleted, h->row, h->n - want);
	}
	for (size_t i = 0; i < target->cap; i++) {
		struct slot *t = &target->s[i];
		if (t->key == NULL)
			continue;
		struct slot *h = rows_find(held, t->key);
		long have = h->key ? h->n : 0;
		if (t->n > have)
			push_copies(ch->inserted, t->row, t->n - have);
	}
}

/* A long-poll's delta d as a change; false when it deletes more copies of
 * a row than are held. */
static bool
net_change(struct follow *f, struct follow_rows *d, struct follow_change *ch)
{
	for (size_t i = 0; i < d->cap; i++) {
		struct slot *s = &d->s[i];
		if (s->key && s->n > 0)
			push_copies(ch->inserted, s->row, s->n);
		else if (s->key && s->n < 0) {
			struct slot *h = rows_find(f->rows, s->key);
			if (h->key == NULL || h->n < -s->n)
				return false;
			push_copies(ch->deleted, s->row, -s->n);
		}
	}
	return true;
}

static enum follow_result fail(struct follow *f, enum follow_result r, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));
static enum follow_result
fail(struct follow *f, enum follow_result r, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(f->errbuf, sizeof(f->errbuf), fmt, ap);
	va_end(ap);
	if (r == FOLLOW_RETRY) {
		f->attempt++;
		if (f->state == FOLLOW_LIVE || f->state == FOLLOW_CONNECTING)
			f->state = FOLLOW_RECONNECTING;
	}
	return r;
}

/* text's first bytes on one line, fit for a terminal or a log: HTML tags
 * dropped, runs of white space folded, control bytes (C0, DEL, and the
 * C1 range in UTF-8) shown as '?', at most 160 bytes. */
static const char *
excerpt(const char *text, char *out, size_t outlen)
{
	size_t n = 0;
	bool tag = false, space = false;
	if (text == NULL || *text == '\0')
		text = "(empty reply)";
	for (const unsigned char *p = (const unsigned char *)text; *p && n + 4 < outlen && n < 160;
	     p++) {
		unsigned char ch = *p;
		if (ch == '<') {
			tag = true;
			continue;
		}
		if (tag) {
			tag = ch != '>';
			if (!tag)
				space = n > 0;
			continue;
		}
		if (ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r') {
			space = n > 0;
			continue;
		}
		if (space) {
			out[n++] = ' ';
			space = false;
		}
		if (ch == 0xc2 && p[1] >= 0x80 && p[1] <= 0x9f) {
			out[n++] = '?';
			p++;
		} else
			out[n++] = (ch < 0x20 || ch == 0x7f) ? '?' : (char)ch;
	}
	out[n] = '\0';
	if (n == 0)
		snprintf(out, outlen, "(no text)");
	return out;
}

/* The error reply's message, or its body's first bytes, as an excerpt. */
static const char *
error_text(json_object *reply, const struct buf *b, char *out, size_t outlen)
{
	json_object *m;
	if (reply && json_object_is_type(reply, json_type_object) &&
	    json_object_object_get_ex(reply, "message", &m))
		return excerpt(json_object_get_string(m), out, outlen);
	return excerpt(b->p, out, outlen);
}

enum follow_result
follow_next(struct follow *f, struct follow_change *ch)
{
	memset(ch, 0, sizeof(*ch));
	bool snapshot = f->cursor == NULL || f->state == FOLLOW_RESYNCING;
	struct buf b = {0};
	long st = get(f, snapshot ? NULL : f->cursor, &b);
	json_object *reply = b.p ? json_tokener_parse(b.p) : NULL;
	enum follow_result r;
	char ex[200];
	if (st < 0) {
		r = FOLLOW_FATAL;
	} else if (st == 0) {
		f->attempt++;
		if (f->state != FOLLOW_RESYNCING)
			f->state = FOLLOW_RECONNECTING;
		r = FOLLOW_RETRY;
	} else if (st == 410) {
		f->state = FOLLOW_RESYNCING; /* next request: a new snapshot */
		snprintf(f->errbuf, sizeof(f->errbuf), "cursor %s gone: taking a new snapshot",
		         f->cursor ? f->cursor : "-");
		r = FOLLOW_RETRY;
	} else if (st == 503 || st >= 500 || st == 408 || st == 429) {
		r = fail(f, FOLLOW_RETRY, "%s (HTTP %ld)", error_text(reply, &b, ex, sizeof(ex)),
		         st);
	} else if (st >= 300 && st < 400) {
		/* Not followed: a feed URL is the server's own, never moved. */
		char *loc = NULL;
		curl_easy_getinfo(f->curl, CURLINFO_REDIRECT_URL, &loc);
		r = fail(f, FOLLOW_FATAL, "HTTP %ld redirect to %s is not followed: give that URL",
		         st, loc ? excerpt(loc, ex, sizeof(ex)) : "(no Location)");
	} else if (st != 200) {
		r = fail(f, FOLLOW_FATAL, "%s (HTTP %ld)", error_text(reply, &b, ex, sizeof(ex)),
		         st);
	} else if (reply == NULL || !json_object_is_type(reply, json_type_object)) {
		r = fail(f, FOLLOW_RETRY, "reply is not a JSON object: %s",
		         excerpt(b.p, ex, sizeof(ex)));
	} else {
		json_object *batches = NULL, *cols = NULL;
		json_object_object_get_ex(reply, "batches", &batches);
		char *cur = cursor_text(reply);
		struct follow_rows *d = rows_new();
		if (cur == NULL || sum_batches(d, batches) < 0 ||
		    (snapshot && (!json_object_object_get_ex(reply, "columns", &cols) ||
		                  !columns_shaped(cols)))) {
			free(cur);
			rows_free(d);
			r = fail(f, FOLLOW_FATAL,
			         "reply is not the feed API's: it lacks a cursor, batches of "
			         "rows or columns: %s",
			         excerpt(b.p, ex, sizeof(ex)));
		} else {
			ch->cursor = cur;
			ch->inserted = json_object_new_array();
			ch->deleted = json_object_new_array();
			ch->snapshot = snapshot;
			if (snapshot) {
				/* The snapshot and the batches after it are the whole feed. */
				for (size_t i = 0; i < d->cap; i++)
					if (d->s[i].key && d->s[i].n < 0)
						d->s[i].n = 0; /* a delete of nothing held: the
						                  server's word wins */
				diff_into(f, d, ch);
				json_object_put(f->columns);
				f->columns = json_object_get(cols);
			} else if (!net_change(f, d, ch)) {
				/* We and the server disagree: start again from a
				 * snapshot, as tailgate.js does. */
				rows_free(d);
				follow_change_free(ch);
				f->state = FOLLOW_RESYNCING;
				snprintf(f->errbuf, sizeof(f->errbuf),
				         "a deleted row was not held: taking a new snapshot");
				r = FOLLOW_RETRY;
				goto out;
			}
			rows_free(d);
			f->attempt = 0;
			f->state = FOLLOW_LIVE;
			r = (!snapshot && json_object_array_length(batches) == 0) ? FOLLOW_NOTHING
			                                                          : FOLLOW_CHANGE;
			if (r == FOLLOW_NOTHING) {
				/* same cursor (or a later one past filtered-out batches) */
				free(f->cursor);
				f->cursor = cur;
				ch->cursor = NULL;
				follow_change_free(ch);
			}
		}
	}
out:
	json_object_put(reply);
	free(b.p);
	return r;
}

void
follow_change_free(struct follow_change *ch)
{
	free(ch->cursor);
	json_object_put(ch->inserted);
	json_object_put(ch->deleted);
	memset(ch, 0, sizeof(*ch));
}

void
follow_commit(struct follow *f, struct follow_change *ch)
{
	for (size_t i = 0; i < json_object_array_length(ch->deleted); i++)
		rows_add(f->rows, json_object_array_get_idx(ch->deleted, i), -1);
	for (size_t i = 0; i < json_object_array_length(ch->inserted); i++)
		rows_add(f->rows, json_object_array_get_idx(ch->inserted, i), 1);
	/* A delete of a row not held leaves a negative count: drop it. */
	for (size_t i = 0; i < f->rows->cap; i++)
		if (f->rows->s[i].key && f->rows->s[i].n < 0) {
			rows_erase(f->rows, &f->rows->s[i]);
			i--; /* the backward shift may have moved a row into slot i */
		}
	free(f->cursor);
	f->cursor = ch->cursor;
	ch->cursor = NULL;
	follow_change_free(ch);
}

void
follow_restore(struct follow *f, const char *cursor, json_object *columns, json_object *rows)
{
	free(f->cursor);
	f->cursor = xstrdup(cursor);
	json_object_put(f->columns);
	f->columns = json_object_get(columns);
	for (size_t i = 0; i < json_object_array_length(rows); i++)
		rows_add(f->rows, json_object_array_get_idx(rows, i), 1);
	f->state = FOLLOW_CONNECTING;
}

json_object *
follow_rows_json(const struct follow *f)
{
	json_object *a = json_object_new_array();
	for (size_t i = 0; i < f->rows->cap; i++)
		if (f->rows->s[i].key)
			push_copies(a, f->rows->s[i].row, f->rows->s[i].n);
	return a;
}

size_t
follow_nrows(const struct follow *f)
{
	size_t n = 0;
	for (size_t i = 0; i < f->rows->cap; i++)
		if (f->rows->s[i].key)
			n += (size_t)f->rows->s[i].n;
	return n;
}

/* ---- backoff -------------------------------------------------------------- */

int
follow_backoff_ms(int attempt, int cap_ms)
{
	if (attempt < 1)
		attempt = 1;
	long ceiling = 500L << (attempt - 1 > 20 ? 20 : attempt - 1);
	if (ceiling > cap_ms)
		ceiling = cap_ms;
	uint32_t r;
	if (getrandom(&r, sizeof(r), 0) != sizeof(r))
		r = (uint32_t)rand();
	long ms = (long)(r % (uint32_t)(ceiling > 0 ? ceiling : 1));
	return ms < 50 ? 50 : (int)ms;
}

void
follow_sleep(int ms, int (*idle)(void *), void *arg)
{
	while (ms > 0) {
		int step = ms > 100 ? 100 : ms;
		struct timespec ts = {0, step * 1000000L};
		nanosleep(&ts, NULL);
		ms -= step;
		if (idle && idle(arg))
			return;
	}
}

const char *
follow_state_name(enum follow_state s)
{
	switch (s) {
	case FOLLOW_CONNECTING:
		return "connecting";
	case FOLLOW_LIVE:
		return "live";
	case FOLLOW_RECONNECTING:
		return "reconnecting";
	case FOLLOW_RESYNCING:
		return "resync";
	}
	return "?";
}
