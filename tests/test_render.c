/*
 * test_render.c - the responder's replies without nginx: SSE framing,
 * filtered and unfiltered batches, ranges read from a ring the test
 * writes, the replies a waiter gets from its cursor (render.h), and
 * their gzip form and Accept-Encoding (reply.h).
 */
#include "feeds.h"
#include "http_params.h"
#include "render.h"
#include "reply.h"
#include "waiter.h"

#include "resp_ring.h"
#include "tap.h"

#include <stdlib.h>
#include <string.h>
#include <zlib.h>

static const char *const snap_rows[] = {"[1,\"apple\"]", "[2,\"pear\"]", NULL};
static const char *const b2[] = {"[3,\"plum\"]", NULL};
static const char *const b3[] = {"[4,\"fig\"]", "[5,\"kiwi\"]", NULL};
static const char *const b4_del[] = {"[1,\"apple\"]", NULL};

/* Count the non-overlapping occurrences of needle in hay[0..n). */
static int
count(const char *hay, const char *needle)
{
	int n = 0;

	for (const char *p = hay; (p = strstr(p, needle)) != NULL; p += strlen(needle))
		n++;
	return n;
}

static struct filter *
compile(const char *query, struct seg *seg, char **key)
{
	struct hp_request hp;
	struct filter *f;
	char err[256];

	if (!hp_parse(query, NULL, NULL, 25, &hp, err, sizeof(err))) {
		printf("# %s: %s\n", query, err);
		return NULL;
	}
	f = filter_compile(&hp, &seg->cols, err, sizeof(err));
	*key = hp.filter_key;
	hp.filter_key = NULL;
	hp_free(&hp);
	return f;
}

static uint32_t ident; /* the ring's history */

/* pre + "POS.IDENT" + post: the text a reply carries around a cursor. */
static const char *
cur3(const char *pre, uint64_t pos, const char *post)
{
	static char out[4][128];
	static int n;
	char c[BATCH_POSITION_MAX];

	batch_format_position(pos, ident, c, sizeof(c));
	n = (n + 1) % 4;
	snprintf(out[n], sizeof(out[n]), "%s%s%s", pre, c, post);
	return out[n];
}

static void
test_sse_framing(void)
{
	struct bbuf b = {0};

	render_sse_event(&b, "snapshot", 7, 0xabcdef01u, "{\"a\":1}", 7);
	bbuf_add(&b, "", 1);
	is_str(b.p, "event: snapshot\nid: 7.abcdef01\ndata: {\"a\":1}\n\n",
	       "an SSE event: name, id (position.identity), data");
	b.len = 0;
	render_sse_event(&b, NULL, 8, 1, "[\"x\ny\"]", 7);
	bbuf_add(&b, "", 1);
	is_str(b.p, "id: 8.00000001\ndata: [\"x\ndata: y\"]\n\n",
	       "a newline in the JSON starts a data: line");
	b.len = 0;
	render_error(&b, 410, "cursor_gone", "bad \xff byte");
	bbuf_add(&b, "", 1);
	ok(strncmp(b.p, "Status: 410 Gone\r\n", 18) == 0, "an error's status line");
	ok(strstr(b.p, "\"message\":\"bad \\ufffd byte\"") != NULL,
	   "a message's non-UTF-8 byte becomes U+FFFD");
	bbuf_free(&b);
}

static void
test_range(struct ring *r, struct seg *seg)
{
	struct ring_buf scratch = {0};
	struct render_range rr;
	struct bbuf out = {0};
	struct filter *f;
	char *key;
	int rc;

	/* seq 0 is the batch at cursor 2 (the snapshot is at 1). */
	rc = render_range(r, 0, 3, NULL, false, RENDER_MAX_REPLY, &out, &scratch, &rr, 1);
	bbuf_add(&out, "", 1);
	is_int(rc, RING_OK, "a range reads");
	is_int(rr.n_batches, 3, "three batches");
	is_int(rr.next_seq, 3, "next seq after them");
	is_int(rr.last_cursor, 4, "last cursor 4");
	is_int(count(out.p, "\"timestamp\""), 3, "three batch objects, comma-separated");
	ok(strstr(out.p, "[5,\"kiwi\"]") != NULL && strstr(out.p, "},{") != NULL,
	   "rows copied, batches joined by commas");

	out.len = 0;
	render_range(r, 0, 3, NULL, true, RENDER_MAX_REPLY, &out, &scratch, &rr, 1);
	bbuf_add(&out, "", 1);
	is_int(count(out.p, "\n\n"), 3, "SSE: three events");
	ok(strncmp(out.p, cur3("id: ", 2, "\ndata: {"), 22) == 0,
	   "SSE: each event's id is its cursor");
	ok(strstr(out.p, cur3("id: ", 4, "\ndata: ")) != NULL, "SSE: the last event is cursor 4");

	/* A position at or past a batch skips it: the client holds it. */
	out.len = 0;
	rc = render_range(r, 0, 3, NULL, false, RENDER_MAX_REPLY, &out, &scratch, &rr, 3);
	is_int(rc, RING_OK, "from position 3: reads");
	is_int(rr.n_batches, 1, "from position 3: only the batch at 4");
	is_int(rr.next_seq, 3, "from position 3: all three examined");

	f = compile("item=eq.fig", seg, &key);
	ok(f != NULL, "filter item=eq.fig compiles");
	out.len = 0;
	render_range(r, 0, 3, f, false, RENDER_MAX_REPLY, &out, &scratch, &rr, 1);
	bbuf_add(&out, "", 1);
	is_int(rr.n_batches, 1, "filtered: one batch passes");
	is_int(rr.last_cursor, 4, "filtered: the position still moves past all three");
	ok(strstr(out.p, "\"inserted\":[[4,\"fig\"]]") != NULL && strstr(out.p, "kiwi") == NULL,
	   "filtered: only the matching row");
	ok(strstr(out.p, "\"timestamp\":\"3\"") != NULL, "filtered: the batch keeps its cursor");
	filter_free(f);
	free(key);

	/* Stop past max_bytes: one batch at a time. */
	out.len = 0;
	render_range(r, 0, 3, NULL, false, 1, &out, &scratch, &rr, 1);
	is_int(rr.n_batches, 1, "max_bytes: stops after the first batch");
	is_int(rr.next_seq, 1, "max_bytes: next seq 1");
	bbuf_free(&out);
	free(scratch.data);
}

static void
test_waiters(struct feeds *fs, struct feed *feed, struct seg *seg)
{
	struct render rd;
	struct ring_buf scratch = {0};
	struct reply *r, *again;
	struct waiter *w;
	uint64_t seq;
	char *key;
	struct filter *f;

	render_init(&rd, 77);
	/* A long-poll at cursor 2: the two batches after it. */
	w = waiter_new(NULL, feed, seg_ref(seg), fspec_new(NULL, strdup("")), false, 0);
	ok(ring_lookup(seg->ring, 2, &seq) == RING_OK, "cursor 2 is held");
	w->seq_after = seq;
	w->cursor = 2;
	w->ident = ident;
	r = render_next(&rd, w, 3, &scratch);
	ok(r != NULL && r->status == 200, "render_next: a reply");
	is_int(r ? r->batches : 0, 2, "render_next: two batches");
	ok(r && strstr(r->data, cur3("{\"cursor\":\"", 4, "\",\"batches\":[{")) != NULL,
	   "render_next: the new cursor leads");
	ok(r && strstr(r->data, "max-age=77, immutable") != NULL,
	   "render_next: batches are cacheable for the configured max-age");
	is_int(w->cursor, 4, "the waiter moved to cursor 4");
	is_int(w->seq_after, 3, "and seq 3");
	reply_release(r);

	/* The cache: the same position and head share one reply. */
	w->seq_after = seq;
	w->cursor = 2;
	r = render_next_shared(&rd, w, 3, &scratch);
	w->seq_after = seq;
	w->cursor = 2;
	again = render_next_shared(&rd, w, 3, &scratch);
	ok(r != NULL && r == again, "render_next_shared: a second request shares the reply");
	is_int(w->cursor, 4, "a cache hit moves the waiter too");
	reply_release(r);
	reply_release(again);

	/* Timeout: an empty batch list at the cursor, not cacheable. */
	r = render_timeout_reply(&rd, w);
	ok(strstr(r->data, cur3("{\"cursor\":\"", 4, "\",\"batches\":[]}")) != NULL,
	   "timeout: no batches");
	ok(strstr(r->data, "no-store") != NULL, "timeout: no-store");
	reply_release(r);

	/* A position between batches: the batches above it. */
	ok(ring_seek(seg->ring, ident, 3, &seq) == RING_OK && seq == 2, "position 3: seq 2");
	w->seq_after = 0;
	w->cursor = 3;
	r = render_next(&rd, w, 3, &scratch);
	is_int(r ? r->batches : 0, 1, "from an earlier seq, batches at or below 3 are skipped");
	reply_release(r);
	/* A position past the frontier: nothing yet, the same cursor back. */
	ok(ring_seek(seg->ring, ident, 9, &seq) == RING_OK && seq == 3,
	   "position 9 (past the frontier): the head");
	w->seq_after = 3;
	w->cursor = 9;
	ok(render_next(&rd, w, 3, &scratch) == NULL, "past the frontier: nothing to send");
	r = render_timeout_reply(&rd, w);
	ok(strstr(r->data, cur3("{\"cursor\":\"", 9, "\",")) != NULL,
	   "past the frontier: the timeout reply keeps the cursor");
	reply_release(r);
	is_int(ring_seek(seg->ring, ident, 0, &seq), RING_GONE, "below the floor: gone");
	is_int(ring_seek(seg->ring, ident ^ 1, 2, &seq), RING_UNKNOWN, "another history: unknown");
	/* A waiter whose batches were dropped, at a position below the floor. */
	w->seq_after = 0;
	w->cursor = 0;
	w->ident = ident ^ 1;
	r = render_gone_reply(w->cursor, w->ident);
	is_int(r ? r->status : 0, 410, "a position out of the history: 410");
	ok(r && strstr(r->data, "cursor_gone") != NULL, "410 says cursor_gone");
	reply_release(r);
	waiter_free(w);

	/* Filtered with no match: NULL, and the waiter moves past. */
	f = compile("item=eq.none", seg, &key);
	w = waiter_new(NULL, feed, seg_ref(seg), fspec_new(f, key), false, 0);
	w->seq_after = 0;
	w->cursor = 1;
	w->ident = ident;
	ok(render_next(&rd, w, 3, &scratch) == NULL, "nothing matches: no reply");
	is_int(w->cursor, 4, "nothing matches: the waiter still moves to cursor 4");
	waiter_free(w);

	/* The snapshot and the batches after it. */
	w = waiter_new(NULL, feed, seg_ref(seg), fspec_new(NULL, strdup("")), false, 0);
	r = render_snapshot(w, &scratch);
	ok(r != NULL, "render_snapshot: a reply");
	ok(r && strstr(r->data, cur3("{\"cursor\":\"", 4, "\",\"columns\":[")) != NULL,
	   "snapshot: cursor and columns");
	ok(r && strstr(r->data, "[2,\"pear\"]") != NULL && strstr(r->data, "[5,\"kiwi\"]") != NULL,
	   "snapshot: its rows and the later batches");
	is_int(r ? r->batches : 0, 4, "snapshot: the snapshot batch and three more");
	reply_release(r);
	waiter_free(w);

	/* SSE snapshot: an "event: snapshot" first. */
	w = waiter_new(NULL, feed, seg_ref(seg), fspec_new(NULL, strdup("")), true, 0);
	r = render_snapshot(w, &scratch);
	ok(r && strncmp(r->data, cur3("event: snapshot\nid: ", 1, "\ndata: "), 37) == 0,
	   "SSE snapshot: event snapshot at the snapshot's cursor");
	ok(r && strstr(r->data, cur3("\nid: ", 4, "\n")) != NULL,
	   "SSE snapshot: then the batches as events");
	reply_release(r);
	waiter_free(w);

	/* /feeds */
	struct bbuf b = {0};
	render_feed_list(fs, &b);
	bbuf_add(&b, "", 1);
	ok(strstr(b.p, "{\"feeds\":[{\"name\":\"t\",\"source\":\"test\"") != NULL,
	   "the feed list names the feed");
	ok(strstr(b.p, cur3("\"cursor\":\"", 4, "\"")) != NULL,
	   "the feed list gives the frontier's cursor");
	bbuf_free(&b);
	render_free(&rd);
	free(scratch.data);
}

/* ---- gzip ---- */

/* Inflate the body of a gzip reply (after its head's blank line) into a
 * new NUL-terminated string; NULL when it is not a whole gzip stream. */
static char *
inflate_body(const struct reply *g)
{
	const char *body = strstr(g->data, "\r\n\r\n");
	size_t cap = 1 << 16;
	char *out = calloc(1, cap + 1);
	z_stream z = {0};
	int rc;

	if (body == NULL || out == NULL || inflateInit2(&z, 15 + 16) != Z_OK) {
		free(out);
		return NULL;
	}
	body += 4;
	z.next_in = (Bytef *)body;
	z.avail_in = (uInt)(g->len - (size_t)(body - g->data));
	z.next_out = (Bytef *)out;
	z.avail_out = (uInt)cap;
	rc = inflate(&z, Z_FINISH);
	inflateEnd(&z);
	if (rc != Z_STREAM_END || z.avail_in != 0) {
		free(out);
		return NULL;
	}
	return out;
}

/* g is r's gzip form: r's head with the three headers, r's body inflated. */
static void
check_gzip_form(struct reply *r, const char *what)
{
	const struct reply *g = reply_for(r, true);
	const char *plain_body = strstr(r->data, "\r\n\r\n");
	char *body;

	ok(g != r, "%s: a gzip form", what);
	ok(strstr(g->data, "\r\nContent-Encoding: gzip\r\nVary: Accept-Encoding\r\n\r\n") != NULL,
	   "%s: gzip form says Content-Encoding and Vary", what);
	ok(strncmp(g->data, r->data, (size_t)(plain_body - r->data)) == 0,
	   "%s: gzip form keeps the plain head", what);
	{
		const char *cl = strstr(g->data, "\r\nContent-Length: ");
		const char *end = strstr(g->data, "\r\n\r\n");
		unsigned long n = cl != NULL ? strtoul(cl + 18, NULL, 10) : 0;

		/* nginx then passes it as it is instead of chunking it */
		ok(cl != NULL && end != NULL && cl < end &&
		           n == g->len - (size_t)(end + 4 - g->data),
		   "%s: gzip form's Content-Length is its body's (%lu)", what, n);
	}
	body = inflate_body(g);
	ok(body != NULL && plain_body != NULL && strcmp(body, plain_body + 4) == 0,
	   "%s: the gzip body inflates to the plain body", what);
	ok(g->len < r->len || r->len < 200, "%s: and is smaller (%zu < %zu)", what, g->len, r->len);
	is_int(g->batches, r->batches, "%s: gzip form counts the same batches", what);
	ok(reply_for(r, true) == g, "%s: made once, then shared", what);
	ok(reply_for(r, false) == r, "%s: a client without gzip gets the plain reply", what);
	ok(strstr(r->data, "Content-Encoding") == NULL, "%s: plain reply has no Content-Encoding",
	   what);
	free(body);
}

static void
test_accept_encoding(void)
{
	static const struct {
		const char *ae;
		bool gzip;
	} cases[] = {
	        {NULL, false},
	        {"", false},
	        {"gzip", true},
	        {"GZip", true},
	        {"x-gzip", true},
	        {"gzip, deflate, br", true},
	        {"br,gzip;q=0.5", true},
	        {"deflate, br", false},
	        {"identity", false},
	        {"gzip;q=0", false},
	        {"gzip; q=0.000", false},
	        {"gzip;q=0.", false},
	        {"gzip;q=0.001", true},
	        {"gzip;Q=1.0", true},
	        {"gzip ;q=0, br", false},
	        {"*", true},
	        {"*;q=0", false},
	        {"*, gzip;q=0", false},
	        {"gzip;q=0, *", false},
	        {"gzip;q=0.8, *;q=0", true},
	        {"gzipx, br", false},
	        {"br;q=1, *;q=0.1", true},
	        {"gzip;q=bad", false},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		ok(reply_accepts_gzip(cases[i].ae) == cases[i].gzip, "Accept-Encoding \"%s\": %s",
		   cases[i].ae ? cases[i].ae : "(none)", cases[i].gzip ? "gzip" : "not gzip");
}

static void
test_gzip(struct feed *feed, struct seg *seg)
{
	struct render rd;
	struct ring_buf scratch = {0};
	struct reply *r;
	struct waiter *w;
	uint64_t seq;

	render_init(&rd, 60);
	w = waiter_new(NULL, feed, seg_ref(seg), fspec_new(NULL, strdup("")), false, 0);
	ok(ring_lookup(seg->ring, 1, &seq) == RING_OK, "gzip: cursor 1 is held");
	w->seq_after = seq;
	w->cursor = 1;
	r = render_next(&rd, w, 3, &scratch);
	check_gzip_form(r, "long-poll");
	reply_release(r);

	r = render_snapshot(w, &scratch);
	check_gzip_form(r, "snapshot");
	reply_release(r);

	r = render_timeout_reply(&rd, w);
	ok(reply_for(r, true) == r, "an empty long-poll reply stays plain");
	reply_release(r);
	r = render_gone_reply(1, ident);
	ok(reply_for(r, true) == r, "an error stays plain");
	reply_release(r);
	waiter_free(w);

	w = waiter_new(NULL, feed, seg_ref(seg), fspec_new(NULL, strdup("")), true, 0);
	r = render_snapshot(w, &scratch);
	ok(r != NULL && reply_for(r, true) == r, "SSE events stay plain");
	reply_release(r);
	waiter_free(w);

	/* --gzip-level 0: nothing is compressed here. */
	w = waiter_new(NULL, feed, seg_ref(seg), fspec_new(NULL, strdup("")), false, 0);
	w->seq_after = seq;
	w->cursor = 1;
	reply_set_gzip_level(0);
	r = render_next(&rd, w, 3, &scratch);
	ok(r != NULL && reply_for(r, true) == r, "gzip level 0: the plain reply");
	reply_set_gzip_level(REPLY_GZIP_LEVEL);
	reply_release(r);
	waiter_free(w);
	render_free(&rd);
	free(scratch.data);
}

int
main(void)
{
	char dir[] = "/tmp/test_render.XXXXXX";
	struct ring *r = rr_create(dir, 1, snap_rows);
	struct feeds fs;
	struct feed *feed;
	struct seg *seg;
	char err[256];

	rr_append(r, 2, b2, NULL);
	rr_append(r, 3, b3, NULL);
	rr_append(r, 4, NULL, b4_del);
	ident = ring_ident(r);
	feeds_init(&fs, dir);
	is_int(feeds_acquire(&fs, "t", &feed, &seg, err, sizeof(err)), 200, "the feed attaches");
	struct feed *no_feed;
	struct seg *no_seg;
	is_int(feeds_acquire(&fs, "t/..", &no_feed, &no_seg, err, sizeof(err)), 404,
	       "a bad name: 404");

	test_sse_framing();
	test_range(seg->ring, seg);
	test_waiters(&fs, feed, seg);
	test_accept_encoding();
	test_gzip(feed, seg);

	seg_release(seg);
	feeds_free(&fs);
	rr_remove(r, dir);
	return tap_done();
}
