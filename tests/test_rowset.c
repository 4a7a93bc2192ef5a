/*
 * test_rowset.c - the multiset of rows against a plain reference, and its
 * memory against the rows' JSON size.
 *
 * Random interns, count changes and removals (backward-shift deletion
 * under heavy probing) are checked after every step against a simple
 * array; then the memory per row is printed for row shapes like the
 * auction house's, a 10-column row and a tiny 2-column row, and must stay
 * under 2x the rows' encoded size as a snapshot lists them (row + comma +
 * the batch's 16-byte row index entry), and for rows of 40 bytes or more
 * under 2x the bare JSON text.
 */
#include "rowset.h"

#include "tap.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NKEYS 3000

static uint64_t rng = 88172645463325252ull;

static uint32_t
rnd(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return (uint32_t)rng;
}

static void
key(unsigned k, char *buf, size_t *len)
{
	*len = (size_t)snprintf(buf, 64, "[%u,\"row %u\"]", k, k * 7919u);
}

static void
test_random(void)
{
	static uint32_t ref[NKEYS]; /* reference counts */
	struct rowset rs;
	size_t mismatches = 0;
	char buf[64];
	size_t len;

	rowset_init(&rs);
	for (int step = 0; step < 200000; step++) {
		unsigned k = rnd() % NKEYS;
		struct rowset_entry *e;
		key(k, buf, &len);
		uint32_t h = rowset_hash(buf, len);
		switch (rnd() % 3) {
		case 0: /* add copies */
		case 1: {
			uint32_t n = 1 + rnd() % 3;
			e = rowset_intern(&rs, buf, len, h);
			rowset_set_count(&rs, e, e->count + n);
			ref[k] += n;
			break;
		}
		default: /* remove all copies */
			e = rowset_find(&rs, buf, len, h);
			if ((e != NULL) != (ref[k] != 0))
				mismatches++;
			if (e != NULL)
				rowset_remove(&rs, e);
			ref[k] = 0;
			break;
		}
	}
	uint64_t rows = 0;
	size_t distinct = 0;
	for (unsigned k = 0; k < NKEYS; k++) {
		key(k, buf, &len);
		struct rowset_entry *e = rowset_find(&rs, buf, len, rowset_hash(buf, len));
		if ((e ? e->count : 0) != ref[k])
			mismatches++;
		rows += ref[k];
		distinct += ref[k] != 0;
	}
	ok(mismatches == 0, "200000 random operations agree with the reference (%zu differ)",
	   mismatches);
	is_int(rs.rows, rows, "row count with multiplicity");
	is_int(rs.distinct, distinct, "distinct rows");

	/* Iteration visits each entry once. */
	size_t pos = 0, seen = 0;
	uint64_t sum = 0;
	struct rowset_entry *e;
	while ((e = rowset_next(&rs, &pos)) != NULL) {
		seen++;
		sum += e->count;
	}
	ok(seen == distinct && sum == rows, "iteration visits every entry once");

	/* Remove everything through iteration snapshots. */
	for (unsigned k = 0; k < NKEYS; k++) {
		key(k, buf, &len);
		e = rowset_find(&rs, buf, len, rowset_hash(buf, len));
		if (e)
			rowset_remove(&rs, e);
	}
	ok(rs.distinct == 0 && rs.rows == 0 && rs.row_bytes == 0,
	   "empty after removing everything");
	/* Freed entries are reused: the same rows again need no new slab. */
	uint64_t before = rs.entry_bytes;
	for (unsigned k = 0; k < NKEYS; k++) {
		key(k, buf, &len);
		rowset_set_count(&rs, rowset_intern(&rs, buf, len, rowset_hash(buf, len)), 1);
	}
	ok(rs.entry_bytes == before, "freed entries are reused (%llu bytes before, %llu after)",
	   (unsigned long long)before, (unsigned long long)rs.entry_bytes);
	rowset_clear(&rs);
}

static void
test_collisions(void)
{
	/* Same hash for every row: one long probe run; deletions from its
	 * middle must keep every other row findable. */
	struct rowset rs;
	char buf[64];
	size_t len, lost = 0;

	rowset_init(&rs);
	for (unsigned k = 0; k < 40; k++) {
		key(k, buf, &len);
		rowset_set_count(&rs, rowset_intern(&rs, buf, len, 12345), 1);
	}
	for (unsigned k = 0; k < 40; k += 3) {
		key(k, buf, &len);
		rowset_remove(&rs, rowset_find(&rs, buf, len, 12345));
	}
	for (unsigned k = 0; k < 40; k++) {
		key(k, buf, &len);
		bool found = rowset_find(&rs, buf, len, 12345) != NULL;
		if (found != (k % 3 != 0))
			lost++;
	}
	ok(lost == 0, "backward-shift deletion inside one collision run");
	rowset_clear(&rs);
}

/* Memory for n distinct rows built by make(). */
static void
measure(const char *what, size_t n, size_t (*make)(unsigned, char *))
{
	struct rowset rs;
	char buf[512];
	uint64_t json = 0;

	rowset_init(&rs);
	for (unsigned i = 0; i < n; i++) {
		size_t len = make(i, buf);
		rowset_set_count(&rs, rowset_intern(&rs, buf, len, rowset_hash(buf, len)), 1);
		json += len;
	}
	uint64_t mem = rowset_memory(&rs);
	uint64_t snap = json + n + 16 * (uint64_t)n; /* comma + batch_row index entry */
	double per = (double)mem / (double)n;
	printf("# %s: %zu rows, JSON %.1f B/row, state %.1f B/row = %.2fx the JSON, %.2fx the "
	       "snapshot bytes\n",
	       what, n, (double)json / n, per, (double)mem / (double)json,
	       (double)mem / (double)snap);
	ok((double)mem <= 2.0 * (double)snap, "%s: state within 2x its snapshot bytes", what);
	/* A distinct row costs ~40 bytes besides its JSON (header, rounding,
	 * table): only rows of 40 bytes or more stay within 2x the bare text. */
	if (json >= 40 * (uint64_t)n)
		ok((double)mem <= 2.0 * (double)json, "%s: state within 2x its JSON text", what);
	rowset_clear(&rs);
}

static size_t
winning_bid(unsigned i, char *b)
{
	return (size_t)sprintf(b,
	                       "[%u,%u,%u,%u,\"Best Pizza in Town\",%u,\"2023-11-14 "
	                       "22:13:24.274+00\",\"2023-11-14 22:13:35+00\"]",
	                       i, i * 3 + 1, 1000 + i % 4000, 300 + i % 1700, 1 + i % 99);
}

static size_t
ten_cols(unsigned i, char *b)
{
	return (size_t)sprintf(b,
	                       "[%u,%u,\"item %u\",%u.%02u,true,\"2024-01-01 00:00:%02u+00\","
	                       "%u,\"abcdefgh\",null,%u]",
	                       i, i * 7, i % 1000, i % 500, i % 100, i % 60, i % 13, i * 3);
}

static size_t
top10(unsigned i, char *b)
{
	return (size_t)sprintf(b, "[%u,%u]", 1000 + i, 1 + i % 50);
}

int
main(void)
{
	test_random();
	test_collisions();
	measure("winning_bids rows (8 columns)", 200000, winning_bid);
	measure("10-column rows", 200000, ten_cols);
	measure("2-column rows (top buyers)", 200000, top10);
	return tap_done();
}
