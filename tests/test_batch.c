/*
 * test_batch.c - the batch layout: what batch_finish writes, batch_view
 * reads back, the JSON is valid and the row index points at the rows.
 */
#include "batch.h"
#include "text.h"

#include "tap.h"

#include <json-c/json.h>
#include <stdlib.h>
#include <string.h>

static char *
flatten(const struct iovec *iov, int n, size_t *len)
{
	char *p = malloc(batch_iov_len(iov, n) + 1);
	size_t off = 0;

	for (int i = 0; i < n; i++) {
		memcpy(p + off, iov[i].iov_base, iov[i].iov_len);
		off += iov[i].iov_len;
	}
	*len = off;
	return p;
}

static void
test_roundtrip(void)
{
	struct batch_builder b = {0};
	struct iovec iov[BATCH_IOV_MAX];
	struct batch_view v;
	size_t len;
	char *p;
	int n;

	batch_add_row(&b, false, "[\"Lockal\",4590]", 15);
	batch_add_row(&b, true, "[\"Epidosis\",4595]", 17);
	batch_add_row(&b, false, "[\"Matlin\",5220]", 15);
	batch_add_row(&b, true, "[\"Matlin\",5221]", 15);
	n = batch_finish(&b, 1608081358001ull, iov);
	ok(n <= BATCH_IOV_MAX, "iovec count within BATCH_IOV_MAX");
	p = flatten(iov, n, &len);
	ok(batch_view(p, len, &v), "payload validates");
	is_int(v.n_ins, 2, "two inserted");
	is_int(v.n_del, 2, "two deleted");

	char *json = strndup(v.json, v.json_len);
	is_str(json,
	       "{\"timestamp\":\"1608081358001\",\"inserted\":[[\"Epidosis\",4595],"
	       "[\"Matlin\",5221]],\"deleted\":[[\"Lockal\",4590],[\"Matlin\",5220]]}",
	       "the JSON is the example batch");
	json_object *o = json_tokener_parse(json);
	ok(o != NULL, "json-c parses it");
	json_object_put(o);
	free(json);

	const char *want[] = {"[\"Epidosis\",4595]", "[\"Matlin\",5221]", "[\"Lockal\",4590]",
	                      "[\"Matlin\",5220]"};
	bool rows_ok = true;
	for (int i = 0; i < 4; i++)
		rows_ok &= v.rows[i].len == strlen(want[i]) &&
		           memcmp(v.json + v.rows[i].off, want[i], v.rows[i].len) == 0;
	ok(rows_ok, "row index: inserted rows first, then deleted, each its JSON array");

	/* Every truncation of a valid payload is refused, none crashes. */
	bool refused = true;
	for (size_t cut = 0; cut < len; cut++)
		refused &= !batch_view(p, cut, &v);
	ok(refused, "every truncated payload is refused");

	/* A row offset pointing outside the JSON is refused. */
	struct batch_row bad = {.off = 1000000, .len = 5};
	memcpy(p + len - sizeof(bad), &bad, sizeof(bad));
	ok(!batch_view(p, len, &v), "row outside the JSON is refused");
	free(p);

	batch_builder_reset(&b);
	n = batch_finish(&b, 5, iov);
	p = flatten(iov, n, &len);
	ok(batch_view(p, len, &v) && v.n_ins == 0 && v.n_del == 0, "empty batch");
	ok(strncmp(v.json, "{\"timestamp\":\"5\",\"inserted\":[],\"deleted\":[]}", v.json_len) == 0,
	   "empty batch JSON");
	free(p);
	batch_builder_free(&b);
}

static void
test_cursor(void)
{
	uint64_t c;
	char buf[32];

	ok(batch_parse_cursor("0", &c) && c == 0, "cursor 0");
	ok(batch_parse_cursor("18446744073709551615", &c) && c == UINT64_MAX, "max cursor");
	ok(!batch_parse_cursor("18446744073709551616", &c), "overflow refused");
	ok(!batch_parse_cursor("", &c), "empty refused");
	ok(!batch_parse_cursor("-1", &c), "negative refused");
	ok(!batch_parse_cursor("12a", &c), "junk refused");
	ok(!batch_parse_cursor(" 12", &c), "space refused");
	ok(!batch_parse_cursor("123456789012345678901", &c), "21 digits refused");
	batch_format_cursor(1608081358001ull, buf, sizeof(buf));
	is_str(buf, "1608081358001", "format");
}

/* utf8_char_len: what the responder uses to keep client text out of its
 * JSON replies unless it is UTF-8 (hostile-input review). */
static void
test_utf8(void)
{
	static const struct {
		const char *s;
		size_t n, want;
	} cases[] = {
	        {"a", 1, 1},
	        {"\xc3\xa9", 2, 2},
	        {"\xe2\x82\xac", 3, 3},
	        {"\xf0\x9f\x98\x80", 4, 4},
	        {"\xf4\x8f\xbf\xbf", 4, 4}, /* U+10FFFF */
	        {"\xed\x9f\xbf", 3, 3},     /* U+D7FF */
	        {"", 0, 0},
	        {"\x80", 1, 0}, /* continuation byte */
	        {"\xbf", 1, 0},
	        {"\xc0\xaf", 2, 0}, /* overlong */
	        {"\xc1\xbf", 2, 0},
	        {"\xe0\x80\xaf", 3, 0},
	        {"\xf0\x80\x80\xaf", 4, 0},
	        {"\xed\xa0\x80", 3, 0},     /* surrogate */
	        {"\xf4\x90\x80\x80", 4, 0}, /* above U+10FFFF */
	        {"\xf5\x80\x80\x80", 4, 0},
	        {"\xff", 1, 0},
	        {"\xc3", 1, 0}, /* cut short by n */
	        {"\xe2\x82", 2, 0},
	        {"\xe2\x82\xac", 2, 0}, /* n says 2 */
	        {"\xc3\x28", 2, 0},     /* bad continuation */
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		is_int(utf8_char_len((const unsigned char *)cases[i].s, cases[i].n), cases[i].want,
		       "utf8_char_len case %zu", i);
}

int
main(void)
{
	test_roundtrip();
	test_cursor();
	test_utf8();
	return tap_done();
}
