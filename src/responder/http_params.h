/*
 * http_params.h - the query string of a feed request, parsed and checked.
 *
 * A pure function of its inputs (no I/O, no globals), so it can be fuzzed
 * on its own (tests/fuzz/fuzz_http_params.c) and unit-tested
 * (tests/test_http_params.c).  What it accepts:
 *
 *   cursor=C          POSITION.IDENT (batch_parse_position); a bare
 *                     POSITION parses with has_ident false
 *   timeout=S         whole seconds, 0..max_timeout_s (0: answer at once);
 *                     without it the timeout is max_timeout_s (the
 *                     responder's --max-timeout, 25 by default)
 *   stream=sse        Server-Sent Events (as does an Accept header naming
 *                     text/event-stream)
 *   COLUMN=OP.VALUE   a PostgREST-style row filter, OP one of eq neq gt gte
 *                     lt lte in; for in the value is (v1,v2,...) with
 *                     optional "double quotes" (backslash escapes) around an
 *                     item; the value null means SQL NULL, "null" the text.
 *
 * Keys and values are percent-decoded ('+' is a space) and must then be
 * UTF-8 without NUL bytes (every stored row is UTF-8, so any other value
 * could match nothing; refusing it keeps error messages JSON-safe too).
 * cursor, timeout and stream may appear once; a column may carry several
 * filters (they are ANDed).  For SSE, a Last-Event-ID header overrides cursor= (a browser's
 * EventSource resends its original URL with the header on reconnect).
 * Column names are not checked here: filter_compile() knows the columns.
 */
#ifndef TAILGATE_HTTP_PARAMS_H
#define TAILGATE_HTTP_PARAMS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define HP_MAX_FILTERS 16
#define HP_MAX_VALUES 256 /* items in one in.(...) list */
#define HP_MAX_QUERY 8192 /* bytes of query string */
#define HP_DEFAULT_TIMEOUT_S 25

enum hp_op { HP_EQ, HP_NEQ, HP_GT, HP_GTE, HP_LT, HP_LTE, HP_IN };

struct hp_value {
	char *text; /* decoded, NUL-terminated (may hold NULs: use len) */
	size_t len;
	bool is_null; /* the bare word null */
};

struct hp_filter {
	char *column;
	enum hp_op op;
	int n_values; /* 1, or the items of in.(...) */
	struct hp_value *values;
};

struct hp_request {
	bool has_cursor;
	uint64_t cursor;       /* the position */
	uint32_t cursor_ident; /* the history's identity, when has_ident */
	bool has_ident;
	int timeout_s;
	bool sse;
	int n_filters;
	struct hp_filter filters[HP_MAX_FILTERS];
	/* A canonical text of the filters ("" when none): requests with equal
	 * keys render identical replies.  Owned by the request. */
	char *filter_key;
};

/* Parse query (may be NULL or empty).  accept and last_event_id are the
 * request's headers (NULL when absent).  On success returns true and *out
 * must be released with hp_free().  On failure returns false, always
 * with a client-facing message in err (the reply is 400), and leaves
 * nothing to free.  Out of memory is fatal (xmalloc.h), as everywhere
 * in the responder (responder.h). */
bool hp_parse(const char *query, const char *accept, const char *last_event_id, int max_timeout_s,
              struct hp_request *out, char *err, size_t errlen) __attribute__((warn_unused_result));
void hp_free(struct hp_request *req);

const char *hp_op_name(enum hp_op op);

/* ---- several feeds in one request (GET /feeds/a,b) ----
 *
 * The path names 2 or more feeds separated by single commas (a feed name
 * never holds one).  A filter then names its feed: FEED.COLUMN=OP.VALUE,
 * FEED one of the path's (the dot is the first one: a feed name has
 * none).  cursor, timeout and stream are the request's, as for one feed. */

#define HP_FEED_NAME_MAX 63 /* RING_FEED_NAME_MAX */
#define HP_MULTI_MAX 8      /* feeds in one request */

/* Split path into at most max names; returns how many, or -1 with a
 * client-facing message (an empty or bad name, a duplicate, too many). */
int hp_parse_feed_list(const char *path, char names[][HP_FEED_NAME_MAX + 1], int max, char *err,
                       size_t errlen);
/* Does every filter of req name one of the n feeds?  false with a message. */
bool hp_check_feed_filters(const struct hp_request *req, char names[][HP_FEED_NAME_MAX + 1], int n,
                           char *err, size_t errlen);
/* req's filters of feed names[feed], with the FEED. prefix removed, as a
 * request of their own (filter_key built; cursor, timeout, sse copied):
 * release it with hp_free. */
void hp_feed_filters(const struct hp_request *req, char names[][HP_FEED_NAME_MAX + 1], int n,
                     int feed, struct hp_request *out);

#endif
