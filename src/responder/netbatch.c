/*
 * netbatch.c - the net effect of many batches as one batch, and the
 * decision to send it to a client far behind (netbatch.h).
 */
#include "netbatch.h"

#include "xmalloc.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct netbatch_row {
	uint64_t hash;
	size_t off, len; /* in nb->text */
	int64_t count;   /* inserts minus deletes */
};

static uint64_t
row_hash(const char *p, size_t len)
{
	uint64_t h = 14695981039346656037ull; /* FNV-1a */

	for (size_t i = 0; i < len; i++) {
		h ^= (unsigned char)p[i];
		h *= 1099511628211ull;
	}
	return h;
}

void
netbatch_init(struct netbatch *nb)
{
	memset(nb, 0, sizeof(*nb));
}

void
netbatch_free(struct netbatch *nb)
{
	bbuf_free(&nb->text);
	free(nb->rows);
	free(nb->slots);
	memset(nb, 0, sizeof(*nb));
}

/* Rebuild the slots at twice the size when they are half full. */
static void
grow_slots(struct netbatch *nb)
{
	size_t n = nb->nslots ? nb->nslots * 2 : 64;
	uint32_t *slots = xcalloc(n, sizeof(*slots));

	for (size_t i = 0; i < nb->n; i++) {
		size_t k = nb->rows[i].hash & (n - 1);
		while (slots[k] != 0)
			k = (k + 1) & (n - 1);
		slots[k] = (uint32_t)(i + 1);
	}
	free(nb->slots);
	nb->slots = slots;
	nb->nslots = n;
}

/* The row with these bytes, added (count 0) when new. */
static struct netbatch_row *
find_row(struct netbatch *nb, const char *row, size_t len)
{
	uint64_t h = row_hash(row, len);
	size_t k;

	if ((nb->n + 1) * 2 > nb->nslots)
		grow_slots(nb);
	for (k = h & (nb->nslots - 1); nb->slots[k] != 0; k = (k + 1) & (nb->nslots - 1)) {
		struct netbatch_row *e = &nb->rows[nb->slots[k] - 1];
		if (e->hash == h && e->len == len && memcmp(nb->text.p + e->off, row, len) == 0)
			return e;
	}
	if (nb->n == nb->cap) {
		nb->cap = nb->cap ? nb->cap * 2 : 64;
		nb->rows = xrealloc(nb->rows, nb->cap * sizeof(*nb->rows));
	}
	nb->rows[nb->n] = (struct netbatch_row){.hash = h, .off = nb->text.len, .len = len};
	bbuf_add(&nb->text, row, len);
	nb->slots[k] = (uint32_t)(++nb->n);
	return &nb->rows[nb->n - 1];
}

static uint64_t
mag(int64_t c)
{
	return c < 0 ? (uint64_t)-c : (uint64_t)c;
}

void
netbatch_add_row(struct netbatch *nb, const char *row, size_t len, int64_t delta)
{
	struct netbatch_row *e = find_row(nb, row, len);
	int64_t was = e->count;

	e->count += delta;
	/* Each copy is rendered as its bytes and a comma. */
	nb->bytes = nb->bytes - mag(was) * (len + 1) + mag(e->count) * (len + 1);
	nb->n_ins = nb->n_ins - (was > 0 ? (size_t)was : 0) + (e->count > 0 ? (size_t)e->count : 0);
	nb->n_del =
	        nb->n_del - (was < 0 ? (size_t)-was : 0) + (e->count < 0 ? (size_t)-e->count : 0);
}

void
netbatch_add(struct netbatch *nb, const struct batch_view *v, const struct filter *f)
{
	for (uint64_t i = 0; i < v->n_ins + v->n_del; i++) {
		const char *row = v->json + v->rows[i].off;
		size_t len = v->rows[i].len;
		if (f != NULL && !filter_match(f, row, len))
			continue;
		netbatch_add_row(nb, row, len, i < v->n_ins ? 1 : -1);
	}
}

bool
netbatch_empty(const struct netbatch *nb)
{
	return nb->n_ins == 0 && nb->n_del == 0;
}

/* Append every row whose count has sign, |count| times each. */
static void
render_rows(const struct netbatch *nb, struct bbuf *out, int sign)
{
	bool first = true;

	for (size_t i = 0; i < nb->n; i++) {
		const struct netbatch_row *e = &nb->rows[i];
		int64_t times = sign > 0 ? e->count : -e->count;
		for (int64_t t = 0; t < times; t++) {
			if (!first)
				bbuf_add(out, ",", 1);
			bbuf_add(out, nb->text.p + e->off, e->len);
			first = false;
		}
	}
}

void
netbatch_render(const struct netbatch *nb, struct bbuf *out, uint64_t from, uint64_t to)
{
	char head[96];

	snprintf(head, sizeof(head),
	         "{\"timestamp\":\"%" PRIu64 "\",\"from\":\"%" PRIu64 "\",\"inserted\":[", to,
	         from);
	bbuf_adds(out, head);
	render_rows(nb, out, 1);
	bbuf_adds(out, "],\"deleted\":[");
	render_rows(nb, out, -1);
	bbuf_adds(out, "]}");
}

/* What the snapshot costs: *state the bytes of its JSON (the feed's rows
 * as of its cursor), *reply those and the batches a snapshot reply adds
 * after it up to head.  false when it cannot be read. */
static bool
snapshot_bytes(struct ring *r, uint64_t head, size_t *state, size_t *reply)
{
	struct ring_snapshot snap;
	struct batch_view v;
	char err[256];
	bool ok;

	if (ring_snapshot_open(r, &snap, err, sizeof(err)) != RING_OK)
		return false;
	ok = batch_view(snap.data, snap.len, &v);
	if (ok) {
		*state = v.json_len;
		*reply = v.json_len + ring_span_bytes(r, snap.seq_after, head);
	}
	ring_snapshot_release(&snap);
	return ok && *state > 0;
}

/* Fold the batches [seq_after, head) above cursor into nb; false when one
 * is gone, corrupt, or a merged batch that cursor is strictly inside (the
 * usual path then says what that means). */
static bool
fold(struct netbatch *nb, struct ring *r, uint64_t seq_after, uint64_t cursor, uint64_t head,
     const struct filter *f, struct ring_buf *scratch, uint64_t *last)
{
	*last = cursor;
	for (uint64_t seq = seq_after; seq < head; seq++) {
		struct ring_rec rec;
		struct batch_view v;

		if (ring_read(r, seq, scratch, &rec) != RING_OK)
			return false;
		if (rec.cursor <= *last)
			continue; /* from a host further ahead: already held */
		if (rec.lo < *last || !batch_view(scratch->data, scratch->len, &v))
			return false;
		netbatch_add(nb, &v, f);
		*last = rec.cursor;
	}
	return true;
}

enum netbatch_result
netbatch_catchup(struct ring *r, uint64_t seq_after, uint64_t cursor, uint64_t head,
                 const struct filter *f, struct bbuf *out, struct ring_buf *scratch,
                 struct netbatch_at *at)
{
	uint64_t span = ring_span_bytes(r, seq_after, head), last;
	struct netbatch nb;
	size_t state, reply;
	enum netbatch_result res;

	if (span < NETBATCH_MIN_BYTES || !snapshot_bytes(r, head, &state, &reply) || span <= state)
		return NETBATCH_NO;
	netbatch_init(&nb);
	if (!fold(&nb, r, seq_after, cursor, head, f, scratch, &last)) {
		netbatch_free(&nb);
		return NETBATCH_NO;
	}
	at->next_seq = head;
	at->cursor = ring_complete(r, head, last);
	if (nb.bytes > reply)
		res = NETBATCH_GONE;
	else if (netbatch_empty(&nb))
		res = NETBATCH_EMPTY;
	else {
		netbatch_render(&nb, out, cursor, at->cursor);
		res = NETBATCH_OK;
	}
	netbatch_free(&nb);
	return res;
}
