/*
 * netbatch.h - catch-up bounded by the snapshot: the net effect of many
 * batches as one batch.
 *
 * A client far behind (the batches after its cursor outweigh the feed's
 * snapshot) would download every step the rows took since; what it needs
 * is only where they ended.  The fold (struct netbatch) counts each row,
 * by its bytes, +1 per insert and -1 per delete: a row inserted and later
 * deleted cancels, a row deleted and re-inserted cancels, and what is
 * left is one batch (a positive count n: inserted n times; negative:
 * deleted).  Rows are compared by the bytes the daemon stored, which are
 * canonical: one value always encodes to the same text (docs/API.md).
 *
 * netbatch_catchup decides and builds the reply's batch for a long-poll
 * (or SSE stream) at a position: nothing when it is not far behind; the
 * net batch, marked with the range it covers, when it is; 410 when even
 * the net batch is larger than the snapshot (a new snapshot costs less).
 * So a lagging client never downloads much more than a fresh snapshot.
 * Safe from any thread (the caller's scratch buffer, no shared state).
 */
#ifndef TAILGATE_NETBATCH_H
#define TAILGATE_NETBATCH_H

#include "batch.h"
#include "buf.h"
#include "filter.h"
#include "ring.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Below this many bytes of batches a client is never "far behind": the
 * fold and the snapshot's size are not worth looking up for a few
 * batches. */
#define NETBATCH_MIN_BYTES (8u << 10)

struct netbatch_row; /* netbatch.c */

struct netbatch {
	struct bbuf text;          /* every distinct row's bytes, once */
	struct netbatch_row *rows; /* in the order first seen */
	size_t n, cap;
	uint32_t *slots; /* open addressing: row index + 1, 0 empty */
	size_t nslots;   /* a power of two, or 0 */
	size_t bytes;    /* what the net rows take rendered (rows and commas) */
	size_t n_ins, n_del;
};

void netbatch_init(struct netbatch *nb);
void netbatch_free(struct netbatch *nb);

/* Count row[0..len) delta more times (+1 inserted, -1 deleted). */
void netbatch_add_row(struct netbatch *nb, const char *row, size_t len, int64_t delta);
/* Fold one batch's rows that f passes (NULL: all). */
void netbatch_add(struct netbatch *nb, const struct batch_view *v, const struct filter *f);
/* True when every count cancelled (or nothing was added). */
bool netbatch_empty(const struct netbatch *nb);
/* Append the net batch as JSON: {"timestamp":"TO","from":"FROM",
 * "inserted":[...],"deleted":[...]}, rows in the order first seen. */
void netbatch_render(const struct netbatch *nb, struct bbuf *out, uint64_t from, uint64_t to);

enum netbatch_result {
	NETBATCH_NO,    /* not far behind, or something to let the usual path say */
	NETBATCH_OK,    /* out holds the net batch */
	NETBATCH_EMPTY, /* far behind, but the net effect (filtered) is nothing */
	NETBATCH_GONE,  /* the net batch is larger than the snapshot: 410 */
};

struct netbatch_at {
	uint64_t next_seq; /* first seq not folded */
	uint64_t cursor;   /* the position the net batch brings the client to */
};

/* For a reader at cursor whose first unexamined batch is seq_after, with
 * batches up to head: when the batches' bytes pass both
 * NETBATCH_MIN_BYTES and the snapshot's, fold them (filtered by f) and
 * append the net batch's JSON to out.  scratch is the caller's read
 * buffer. */
enum netbatch_result netbatch_catchup(struct ring *r, uint64_t seq_after, uint64_t cursor,
                                      uint64_t head, const struct filter *f, struct bbuf *out,
                                      struct ring_buf *scratch, struct netbatch_at *at);

#endif
