/*
 * test_http_params.c - the query-string parser, data-driven: every input
 * either parses to the expected fields or is refused with a message.
 *
 * Allocation failure: linked with -Wl,--wrap=calloc,--wrap=realloc, so
 * that every allocation the parser makes (through xmalloc.h) can be made
 * to fail.  The responder's policy (responder.h) is to abort on out of
 * memory: hp_parse must never return (false with err unset, as it once
 * did, or true with a half-built request).
 */
#include "http_params.h"

#include "tap.h"

#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* The allocation (counted from 0) to fail; -1: none. */
static long fail_at = -1, n_allocs;

void *__real_calloc(size_t n, size_t size);
void *__real_realloc(void *p, size_t size);
void *__wrap_calloc(size_t n, size_t size);
void *__wrap_realloc(void *p, size_t size);

void *
__wrap_calloc(size_t n, size_t size)
{
	if (fail_at >= 0 && n_allocs++ == fail_at)
		return NULL;
	return __real_calloc(n, size);
}

void *
__wrap_realloc(void *p, size_t size)
{
	if (fail_at >= 0 && n_allocs++ == fail_at)
		return NULL;
	return __real_realloc(p, size);
}

/* Parse a query with every kind of parameter in a child whose k-th
 * allocation fails.  Returns the child's wait status; its stderr in msg. */
static int
parse_failing(long k, char *msg, size_t msglen)
{
	int fds[2], st = 0;
	pid_t pid;
	ssize_t n;

	fflush(stdout); /* the child's exit() must not print the TAP lines again */
	if (pipe(fds) != 0 || (pid = fork()) < 0)
		return -1;
	if (pid == 0) {
		struct hp_request r;
		char err[256] = "\x01unset";

		dup2(fds[1], 2);
		close(fds[0]);
		fail_at = k;
		if (hp_parse("cursor=5&timeout=3&name=in.(\"a,b\",c)&x=eq.%41&y=neq.null", NULL,
		             "7", 25, &r, err, sizeof(err)))
			_exit(0); /* no k-th allocation: every one was tried */
		fprintf(stderr, "hp_parse returned false: %s\n", err);
		_exit(3);
	}
	close(fds[1]);
	n = read(fds[0], msg, msglen - 1);
	msg[n > 0 ? n : 0] = '\0';
	close(fds[0]);
	waitpid(pid, &st, 0);
	return st;
}

static void
test_out_of_memory(void)
{
	char msg[512];
	long k;
	int st = 0;

	for (k = 0; k < 200; k++) {
		st = parse_failing(k, msg, sizeof(msg));
		if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
			break;
		if (!WIFEXITED(st) || WEXITSTATUS(st) != 1 || strstr(msg, "out of memory") == NULL)
			break;
	}
	ok(WIFEXITED(st) && WEXITSTATUS(st) == 0,
	   "allocation failures 0..%ld each end the process with \"out of memory\"", k - 1);
	if (!(WIFEXITED(st) && WEXITSTATUS(st) == 0))
		printf("#   allocation %ld: status %d, stderr: %s\n", k, st, msg);
	ok(k >= 8, "the query made %ld allocations (each one failed once)", k);
}

struct good {
	const char *query, *accept, *last_event_id;
	bool has_cursor;
	unsigned long long cursor;
	int timeout_s;
	bool sse;
	int n_filters;
	const char *key;
};

static const struct good goods[] = {
        {NULL, NULL, NULL, false, 0, 25, false, 0, ""},
        {"", NULL, NULL, false, 0, 25, false, 0, ""},
        {"cursor=42", NULL, NULL, true, 42, 25, false, 0, ""},
        {"cursor=18446744073709551615", NULL, NULL, true, 18446744073709551615ull, 25, false, 0,
         ""},
        {"cursor=0&timeout=0", NULL, NULL, true, 0, 0, false, 0, ""},
        {"timeout=25&cursor=7", NULL, NULL, true, 7, 25, false, 0, ""},
        {"&&cursor=7&", NULL, NULL, true, 7, 25, false, 0, ""},
        {"stream=sse", NULL, NULL, false, 0, 25, true, 0, ""},
        {"", "text/event-stream", NULL, false, 0, 25, true, 0, ""},
        {"", "application/json, text/event-stream;q=0.5", "99", true, 99, 25, true, 0, ""},
        {"cursor=5", "text/event-stream", "99", true, 99, 25, true, 0, ""},
        {"cursor=5", NULL, "99", true, 5, 25, false, 0, ""}, /* Last-Event-ID only for SSE */
        {"amount=gt.100", NULL, NULL, false, 0, 25, false, 1, "amount=gt:100&"},
        {"amount=gt.100&buyer=eq.42", NULL, NULL, false, 0, 25, false, 2,
         "amount=gt:100&buyer=eq:42&"},
        {"item=eq.a%20b+c", NULL, NULL, false, 0, 25, false, 1, "item=eq:a b c&"},
        {"item=eq.x.y", NULL, NULL, false, 0, 25, false, 1, "item=eq:x.y&"},
        {"id=in.(1,2,3)", NULL, NULL, false, 0, 25, false, 1, "id=in:1,2,3&"},
        {"name=in.(\"a,b\",c)", NULL, NULL, false, 0, 25, false, 1, "name=in:a\\,b,c&"},
        {"name=in.()", NULL, NULL, false, 0, 25, false, 1, "name=in&"},
        {"x=eq.null", NULL, NULL, false, 0, 25, false, 1, "x=eq:\\N&"},
        {"x=eq.\"null\"", NULL, NULL, false, 0, 25, false, 1, "x=eq:null&"},
        {"x=neq.", NULL, NULL, false, 0, 25, false, 1, "x=neq:&"},
        {"a%3Db=eq.1", NULL, NULL, false, 0, 25, false, 1, "a\\=b=eq:1&"},
        /* UTF-8, escaped and raw (hostile-input review) */
        {"item=eq.%C3%A9t%E2%82%AC%F0%9F%98%80", NULL, NULL, false, 0, 25, false, 1,
         "item=eq:\xc3\xa9t\xe2\x82\xac\xf0\x9f\x98\x80&"},
        {"item=eq.\xc3\xa9", NULL, NULL, false, 0, 25, false, 1, "item=eq:\xc3\xa9&"},
};

struct bad {
	const char *query, *accept, *last_event_id, *message_part;
};

static const struct bad bads[] = {
        {"cursor=", NULL, NULL, "malformed cursor"},
        {"cursor=abc", NULL, NULL, "malformed cursor"},
        {"cursor=-1", NULL, NULL, "malformed cursor"},
        {"cursor=18446744073709551616", NULL, NULL, "malformed cursor"},
        {"cursor=123456789012345678901", NULL, NULL, "malformed cursor"},
        {"cursor=1&cursor=2", NULL, NULL, "twice"},
        {"timeout=26", NULL, NULL, "timeout"},
        {"timeout=-1", NULL, NULL, "timeout"},
        {"timeout=1.5", NULL, NULL, "timeout"},
        {"timeout=", NULL, NULL, "timeout"},
        {"timeout=99999999999", NULL, NULL, "timeout"},
        {"timeout=1&timeout=2", NULL, NULL, "twice"},
        {"stream=ws", NULL, NULL, "stream"},
        {"cursor", NULL, NULL, "no value"},
        {"foo=bar", NULL, NULL, "unknown parameter"},
        {"amount=like.5", NULL, NULL, "bad filter operator"},
        {"amount=gt", NULL, NULL, "unknown parameter"},
        {"amount=100", NULL, NULL, "missing its operator: write amount=eq.100"},
        {"id=in.1,2", NULL, NULL, "parentheses"},
        {"id=in.(\"a,b)", NULL, NULL, "unterminated"},
        {"x=eq.%zz", NULL, NULL, "percent"},
        {"x=eq.%4", NULL, NULL, "percent"},
        {"x=eq.a%00b", NULL, NULL, "NUL"},
        {"=eq.1", NULL, NULL, "empty parameter"},
        {"x=gt.null", NULL, NULL, NULL}, /* checked by filter_compile, parses here */
        {"", "text/event-stream", "12x", "Last-Event-ID"},
        /* Not UTF-8 after decoding (hostile-input review: such a value
         * matched nothing and was echoed raw into JSON messages). */
        {"item=eq.%ff%fe", NULL, NULL, "UTF-8"},
        {"item=eq.\xff", NULL, NULL, "UTF-8"},
        {"it%ffem=eq.1", NULL, NULL, "UTF-8"},
        {"item=eq.%c3", NULL, NULL, "UTF-8"},          /* cut short */
        {"item=eq.%c0%af", NULL, NULL, "UTF-8"},       /* overlong '/' */
        {"item=eq.%ed%a0%80", NULL, NULL, "UTF-8"},    /* a surrogate */
        {"item=eq.%f4%90%80%80", NULL, NULL, "UTF-8"}, /* above U+10FFFF */
        {"id=in.(1,%80)", NULL, NULL, "UTF-8"},
        {"stream=sse%ff", NULL, NULL, "UTF-8"},
        {"", "text/event-stream", "\xff\xfe", "Last-Event-ID"},
};

int
main(void)
{
	char err[256];

	for (size_t i = 0; i < sizeof(goods) / sizeof(goods[0]); i++) {
		const struct good *g = &goods[i];
		struct hp_request r;
		bool okay =
		        hp_parse(g->query, g->accept, g->last_event_id, 25, &r, err, sizeof(err));
		ok(okay, "parses \"%s\"", g->query ? g->query : "(null)");
		if (!okay) {
			printf("#   %s\n", err);
			continue;
		}
		ok(r.has_cursor == g->has_cursor && (!g->has_cursor || r.cursor == g->cursor),
		   "\"%s\": cursor", g->query ? g->query : "");
		is_int(r.timeout_s, g->timeout_s, "\"%s\": timeout", g->query ? g->query : "");
		ok(r.sse == g->sse, "\"%s\": sse", g->query ? g->query : "");
		is_int(r.n_filters, g->n_filters, "\"%s\": filters", g->query ? g->query : "");
		is_str(r.filter_key, g->key, "\"%s\": filter key", g->query ? g->query : "");
		hp_free(&r);
	}
	for (size_t i = 0; i < sizeof(bads) / sizeof(bads[0]); i++) {
		const struct bad *b = &bads[i];
		struct hp_request r;
		bool okay;

		memset(err, 0x01, sizeof(err)); /* a refusal must always write err */
		okay = hp_parse(b->query, b->accept, b->last_event_id, 25, &r, err, sizeof(err));
		if (b->message_part == NULL) {
			ok(okay, "\"%s\" parses (the column check comes later)", b->query);
			if (okay)
				hp_free(&r);
			continue;
		}
		ok(!okay, "refuses \"%s\"", b->query);
		if (okay) {
			hp_free(&r);
			continue;
		}
		ok(strstr(err, b->message_part) != NULL, "\"%s\": message names the problem (%s)",
		   b->query, err);
	}

	/* Several feeds: the path's list and the filters' FEED. prefixes. */
	{
		char names[HP_MULTI_MAX][HP_FEED_NAME_MAX + 1];
		static const char *const bad_lists[] = {
		        "a,", ",a", "a,,b", "a,a", "a,b c", "a,b/c", "a,b,c,d,e,f,g,h,i"};
		struct hp_request m, one;

		is_int(hp_parse_feed_list("bids,auctions", names, HP_MULTI_MAX, err, sizeof(err)),
		       2, "two feeds");
		is_str(names[1], "auctions", "the second feed's name");
		for (size_t i = 0; i < sizeof(bad_lists) / sizeof(bad_lists[0]); i++) {
			err[0] = '\0';
			ok(hp_parse_feed_list(bad_lists[i], names, HP_MULTI_MAX, err, sizeof(err)) <
			                   0 &&
			           err[0] != '\0',
			   "feed list \"%s\" refused: %s", bad_lists[i], err);
		}
		hp_parse_feed_list("bids,auctions", names, HP_MULTI_MAX, err, sizeof(err));
		if (hp_parse("bids.amount=gt.5&auctions.id=eq.1&bids.item=eq.x.y", NULL, NULL, 25,
		             &m, err, sizeof(err))) {
			ok(hp_check_feed_filters(&m, names, 2, err, sizeof(err)),
			   "prefixed filters pass");
			hp_feed_filters(&m, names, 2, 0, &one);
			is_int(one.n_filters, 2, "bids has two filters");
			is_str(one.filters[1].column, "item", "the prefix is removed");
			is_str(one.filters[1].values[0].text, "x.y", "the value is kept");
			hp_free(&one);
			hp_feed_filters(&m, names, 2, 1, &one);
			is_int(one.n_filters, 1, "auctions has one filter");
			is_str(one.filter_key, "id=eq:1&", "its own filter key");
			hp_free(&one);
			hp_free(&m);
		}
		static const char *const bad_filters[] = {"amount=gt.5", "other.id=eq.1",
		                                          "bids.=eq.1"};
		for (size_t i = 0; i < sizeof(bad_filters) / sizeof(bad_filters[0]); i++) {
			if (!hp_parse(bad_filters[i], NULL, NULL, 25, &m, err, sizeof(err)))
				continue;
			ok(!hp_check_feed_filters(&m, names, 2, err, sizeof(err)) &&
			           strstr(err, "FEED.COLUMN") != NULL,
			   "\"%s\" refused in a request for several feeds", bad_filters[i]);
			hp_free(&m);
		}
	}

	/* The values of a filter, decoded. */
	struct hp_request r;
	if (hp_parse("name=in.(\"x\\\"y\",null,\"null\",plain)&amount=lte.5", NULL, NULL, 25, &r,
	             err, sizeof(err))) {
		is_int(r.filters[0].op, HP_IN, "in op");
		is_int(r.filters[0].n_values, 4, "four values");
		is_str(r.filters[0].values[0].text, "x\"y", "quoted value unescaped");
		ok(r.filters[0].values[1].is_null, "bare null is NULL");
		ok(!r.filters[0].values[2].is_null, "quoted null is text");
		is_str(r.filters[0].values[3].text, "plain", "plain value");
		is_int(r.filters[1].op, HP_LTE, "lte op");
		is_str(r.filters[1].column, "amount", "second column");
		hp_free(&r);
	} else {
		ok(0, "in list parses: %s", err);
	}
	/* Long inputs are refused, not truncated. */
	char *big = malloc(HP_MAX_QUERY + 10);
	memset(big, 'a', HP_MAX_QUERY + 9);
	big[HP_MAX_QUERY + 9] = '\0';
	ok(!hp_parse(big, NULL, NULL, 25, &r, err, sizeof(err)), "an over-long query is refused");
	free(big);
	/* A lower max timeout lowers the default. */
	if (hp_parse("", NULL, NULL, 10, &r, err, sizeof(err))) {
		is_int(r.timeout_s, 10, "the default timeout is the maximum");
		hp_free(&r);
	}
	test_out_of_memory();
	return tap_done();
}
