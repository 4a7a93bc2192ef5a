/*
 * test_netbatch.c - the net batch (netbatch.h): folding rows with their
 * multiplicities, cancelling, and the catch-up decision on a ring the
 * test writes (far behind, close behind, filtered, larger than the
 * snapshot).
 */
#include "http_params.h"
#include "netbatch.h"

#include "resp_ring.h"
#include "tap.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

static void
add(struct netbatch *nb, const char *row, int64_t delta)
{
	netbatch_add_row(nb, row, strlen(row), delta);
}

/* The net batch's JSON as a C string (static). */
static const char *
rendered(const struct netbatch *nb, uint64_t from, uint64_t to)
{
	static char out[4096];
	struct bbuf b = {0};

	netbatch_render(nb, &b, from, to);
	snprintf(out, sizeof(out), "%.*s", (int)b.len, b.p);
	bbuf_free(&b);
	return out;
}

static void
test_fold(void)
{
	struct netbatch nb;

	netbatch_init(&nb);
	ok(netbatch_empty(&nb), "a new fold is empty");
	add(&nb, "[1,\"a\"]", 1);
	add(&nb, "[1,\"a\"]", 1); /* two copies */
	add(&nb, "[2,\"b\"]", -1);
	add(&nb, "[2,\"b\"]", 1); /* deleted, then the identical row re-inserted */
	add(&nb, "[3,\"c\"]", -1);
	add(&nb, "[3,\"c\"]", -1); /* held twice at the start, both deleted */
	add(&nb, "[4,\"d\"]", 1);
	add(&nb, "[4,\"d\"]", -1); /* inserted, then deleted */
	add(&nb, "[1,\"a\"]", -1); /* one of the two copies deleted again */
	add(&nb, "[1, \"a\"]", 1); /* other bytes: another row */
	is_str(rendered(&nb, 10, 20),
	       "{\"timestamp\":\"20\",\"from\":\"10\",\"inserted\":[[1,\"a\"],[1, \"a\"]],"
	       "\"deleted\":[[3,\"c\"],[3,\"c\"]]}",
	       "multiplicities kept, identical rows cancel, the range is named");
	is_int(nb.bytes, strlen("[1,\"a\"],[1, \"a\"],[3,\"c\"],[3,\"c\"],"),
	       "the size counts what is rendered");
	add(&nb, "[1,\"a\"]", -1);
	add(&nb, "[1, \"a\"]", -1);
	add(&nb, "[3,\"c\"]", 2);
	ok(netbatch_empty(&nb), "everything cancelled: empty");
	is_int(nb.bytes, 0, "and nothing to render");
	netbatch_free(&nb);

	/* Many distinct rows: the table grows and still finds each. */
	netbatch_init(&nb);
	for (int round = 0; round < 2; round++)
		for (int i = 0; i < 5000; i++) {
			char row[32];
			snprintf(row, sizeof(row), "[%d,\"x\"]", i);
			add(&nb, row, round == 0 ? 1 : -1);
		}
	ok(netbatch_empty(&nb), "5000 rows inserted then deleted cancel");
	is_int(nb.n, 5000, "each row kept once");
	netbatch_free(&nb);
}

static struct filter *
compile(const char *query)
{
	struct hp_request hp;
	struct filter_cols cols;
	struct filter *f;
	char err[256];

	if (!filter_cols_parse(RR_COLUMNS, &cols) ||
	    !hp_parse(query, NULL, NULL, 25, &hp, err, sizeof(err)))
		return NULL;
	f = filter_compile(&hp, &cols, err, sizeof(err));
	hp_free(&hp);
	filter_cols_free(&cols);
	return f;
}

static const char *const snap_rows[] = {"[1,\"v0\"]", "[2,\"fixed\"]", NULL};

/* Row 1 changes value n times: batch k deletes [1,"v(k-1)"], inserts
 * [1,"vk"], at cursor 100 + k. */
static void
churn(struct ring *w, int n)
{
	for (int k = 1; k <= n; k++) {
		char ins[64], del[64];
		const char *const i[] = {ins, NULL}, *const d[] = {del, NULL};
		snprintf(ins, sizeof(ins), "[1,\"v%d\"]", k);
		snprintf(del, sizeof(del), "[1,\"v%d\"]", k - 1);
		rr_append(w, 100 + (uint64_t)k, i, d);
	}
}

/* A snapshot of one row at cursor, the batches before it still held. */
static void
new_snapshot(struct ring *w, uint64_t cursor)
{
	struct batch_builder b = {0};
	struct iovec iov[BATCH_IOV_MAX];
	char err[256] = "";
	int n;

	batch_add_row(&b, true, "[1,\"x\"]", 7);
	n = batch_finish(&b, cursor, iov);
	ok(ring_write_snapshot(w, iov, n, err, sizeof(err)) == RING_OK, "a new snapshot: %s", err);
	batch_builder_free(&b);
}

static enum netbatch_result
catchup(struct ring *r, uint64_t cursor, const struct filter *f, struct bbuf *out,
        struct netbatch_at *at)
{
	struct ring_info info;
	struct ring_buf scratch = {0};
	uint64_t seq;
	enum netbatch_result res;

	ring_info(r, &info);
	if (ring_seek(r, ring_ident(r), cursor, &seq) != RING_OK)
		return NETBATCH_NO;
	out->len = 0;
	res = netbatch_catchup(r, seq, cursor, info.head_seq, f, out, &scratch, at);
	bbuf_add(out, "", 1);
	free(scratch.data);
	return res;
}

static void
test_catchup(void)
{
	char dir[] = "/tmp/test_netbatch.XXXXXX";
	struct ring *w = rr_create(dir, 100, snap_rows), *r;
	struct bbuf out = {0};
	struct netbatch_at at;
	struct filter *f;
	char err[256], want[256];
	int n = 2000;

	churn(w, n);
	if (ring_open(dir, "t", &r, err, sizeof(err)) != RING_OK) {
		ok(0, "ring_open: %s", err);
		return;
	}
	ok(ring_span_bytes(r, 0, 1) > 0, "a record's span has bytes");

	is_int(catchup(r, 100, NULL, &out, &at), NETBATCH_OK, "far behind: a net batch");
	snprintf(want, sizeof(want),
	         "{\"timestamp\":\"%d\",\"from\":\"100\",\"inserted\":[[1,\"v%d\"]],"
	         "\"deleted\":[[1,\"v0\"]]}",
	         100 + n, n);
	is_str(out.p, want, "the net batch: the last value in, the first out, (C, frontier]");
	is_int(at.cursor, 100 + n, "it brings the client to the frontier");

	is_int(catchup(r, 100 + (uint64_t)n - 5, NULL, &out, &at), NETBATCH_NO,
	       "close behind: the batches one by one, as before");

	f = compile("id=eq.2");
	is_int(catchup(r, 100, f, &out, &at), NETBATCH_EMPTY,
	       "filtered to the row that never changed: nothing to send");
	is_int(at.cursor, 100 + n, "but the client moves to the frontier");
	filter_free(f);
	f = compile("item=gte.v1");
	is_int(catchup(r, 100, f, &out, &at), NETBATCH_OK, "filtered: a net batch");
	snprintf(want, sizeof(want),
	         "{\"timestamp\":\"%d\",\"from\":\"100\",\"inserted\":[[1,\"v%d\"]],"
	         "\"deleted\":[]}",
	         100 + n, n);
	is_str(out.p, want, "the filter applies to the net batch's rows");
	filter_free(f);

	/* Rows that only arrive: the net batch outweighs the snapshot. */
	for (int k = 1; k <= 1000; k++) {
		char ins[64];
		const char *const i[] = {ins, NULL};
		snprintf(ins, sizeof(ins), "[%d,\"new\"]", 10 + k);
		rr_append(w, 100 + (uint64_t)n + (uint64_t)k, i, NULL);
	}
	is_int(catchup(r, 100 + (uint64_t)n, NULL, &out, &at), NETBATCH_OK,
	       "a net batch smaller than the snapshot and the batches after it");
	/* A new snapshot (the daemon writes one when the ring wraps) now
	 * costs less than those 1000 rows. */
	new_snapshot(w, 100 + (uint64_t)n + 1000);
	is_int(catchup(r, 100 + (uint64_t)n, NULL, &out, &at), NETBATCH_GONE,
	       "a net batch larger than a fresh snapshot: 410");
	bbuf_free(&out);
	ring_close(r, false);
	rr_remove(w, dir);
}

int
main(void)
{
	test_fold();
	test_catchup();
	return tap_done();
}
