/*
 * feed.c - one feed's pending rows, state, batches and ring (feed.h).
 *
 * Rows wait in a pending list (timestamp, diff, bytes in one text buffer)
 * until a frontier passes their timestamp.  Closing timestamp T then:
 *
 *   1. interns each of T's rows in the state (a new row gets count 0)
 *      and sums its diffs in a "touched" list (entry->mark indexes it);
 *   2. checks every touched row: count + delta must stay in 0..UINT32_MAX,
 *      and its copies (count + delta, and |delta|) must fit in half the
 *      ring, else the upstream broke the contract or sent what no batch
 *      can hold: roll back (drop the count-0 entries) and fail, nothing
 *      published;
 *   3. lays out the batch (inserted: rows with delta > 0, delta copies
 *      each, in order of arrival; deleted likewise) and appends it, after
 *      writing a snapshot first if the ring asks for one (the snapshot is
 *      the state at the head, so it must be written before step 4);
 *   4. applies the deltas to the state and frees rows that reached 0.
 *
 * A snapshot timestamp closes the same way, except the touched counts
 * are the new state rather than changes: every untouched row goes to 0.
 *
 * When a batch cannot be appended (larger than half the ring, a failed
 * snapshot write) the state is still applied and the ring restarts at
 * that timestamp (ring_reset and a snapshot file): readers resync with a
 * 410, but never see a state the upstream did not have.
 *
 * The frontier.  feed_progress(F) says every change below F is here: the
 * ring's frontier (the position through which readers are complete)
 * becomes F - 1, also when no batch changed, so a quiet feed's clients
 * move forward.  A snapshot that follows a gap in the stream (a new
 * session that could not resume) is a batch standing for every commit
 * since the frontier: it is appended as the range (frontier, ts].
 *
 * Identity.  The ring's positions are positions of one upstream history
 * (feed_set_upstream); when the upstream turns out to be another one, the
 * held state cannot be diffed into it: the next snapshot starts a new
 * history (ring_reset with the new identity) and clients resync.
 *
 * A restarted daemon's feed_new adopts the segment the last one left
 * (ring_adopt) and replays its snapshot and batches into the state, so
 * the source resumes after the ring's head and the next batch follows
 * the last one published before the restart.
 */
#include "config.h" /* autoconf: _GNU_SOURCE and friends, first */

#include "feed.h"

#include "batch.h"
#include "encode.h"
#include "log.h"
#include "xmalloc.h"
#include "ring.h"
#include "rowset.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ROW_EXCERPT 160 /* bytes of a row quoted in an error */
#define ROW_SLACK 1024  /* a one-row batch's framing, index and record header */

struct pend {
	uint64_t ts;
	int64_t diff;
	size_t off; /* into pend_text */
	size_t len;
};

struct touch {
	struct rowset_entry *e;
	int64_t delta; /* or, closing a snapshot, the new count */
};

struct feed {
	char *name;
	char *ring_dir;
	char *source;
	char *definition;
	char *rows_def; /* feed_params.rows */
	uint64_t ring_size;
	bool unique_rows;
	bool dup_refused; /* the last timestamp closing was refused for a repeated row */

	struct ring *ring;
	char *columns_json; /* of the current segment; NULL before columns */

	struct rowset state;
	bool have_state;   /* state is the upstream's at frontier */
	uint64_t frontier; /* every change below it is applied */
	uint64_t head;     /* last published cursor (the ring's head) */

	bool snap_active;
	uint64_t snap_ts;
	bool gap;         /* the upstream was lost since the last rows closed */
	bool new_history; /* another upstream: the next snapshot resets */
	char *upstream;   /* its identity text (feed_set_upstream) */

	struct bbuf pend_text;
	struct pend *pend;
	size_t npend, pend_cap;
	size_t *order; /* scratch: pending items being closed, by timestamp */
	size_t order_cap;

	struct touch *touch;
	size_t ntouch, touch_cap;

	struct batch_builder bb;
	uint64_t since_snapshot; /* bytes appended since the last snapshot */
	uint64_t snapshot_len;   /* bytes of the last snapshot written */
	bool appended;           /* since the last feed_flush */
	bool live;               /* the source says so */
	bool error_permanent;    /* the last upstream error needs a fix */
	char *error;             /* the last upstream error, NULL: none */
	uint32_t stall_ms;
	bool ring_stale;      /* the ring lags the state: restart it */
	bool snapshot_failed; /* the last proactive snapshot could not be written */
	enum ring_state shown;

	struct feed_stats stats;
};

/* ---- restart: adopting the segment a previous daemon left --------------- */

/* Apply one payload's rows to the state: every inserted row +1, then every
 * deleted row -1 (inserted first, so no count dips below 0 on the way).
 * The rows are the row index's byte ranges, the bytes the state held when
 * the batch was written: nothing is parsed.  False on a corrupt payload, a
 * deleted row the state does not hold, or an overflowing count. */
static bool
replay(struct feed *f, const char *payload, size_t len)
{
	struct batch_view v;

	if (!batch_view(payload, len, &v))
		return false;
	for (uint64_t i = 0; i < v.n_ins + v.n_del; i++) {
		const char *row = v.json + v.rows[i].off;
		size_t rlen = (size_t)v.rows[i].len;
		uint32_t hash = rowset_hash(row, rlen);
		struct rowset_entry *e;

		if (i < v.n_ins) {
			e = rowset_intern(&f->state, row, rlen, hash);
			if (e->count == UINT32_MAX)
				return false;
			rowset_set_count(&f->state, e, e->count + 1);
		} else {
			e = rowset_find(&f->state, row, rlen, hash);
			if (e == NULL)
				return false;
			if (e->count == 1)
				rowset_remove(&f->state, e);
			else
				rowset_set_count(&f->state, e, e->count - 1);
		}
	}
	return true;
}

/* Take over the segment of an earlier daemon (feed.h, Restart): the state
 * is its snapshot plus every batch after it, the head its head.  The
 * columns wait for feed_set_columns.  On any mismatch, nothing is kept. */
static void
adopt_segment(struct feed *f)
{
	struct ring_config rc;
	struct ring_snapshot snap;
	struct ring_buf buf = {0};
	struct ring_info info;
	struct ring_rec rec;
	struct ring *r;
	uint64_t seq, since = 0, snap_len, snap_seq;
	char err[512];
	int st;

	memset(&rc, 0, sizeof(rc));
	rc.dir = f->ring_dir;
	rc.feed = f->name;
	rc.source = f->source;
	rc.data_size = f->ring_size;
	rc.definition = f->definition;
	rc.rows = f->rows_def;
	rc.columns_json = NULL; /* not known yet: feed_set_columns compares */
	st = ring_adopt(&rc, &r, err, sizeof(err));
	if (st == RING_GONE)
		return; /* a first start */
	if (st != RING_OK) {
		log_warning("feed=%s: not adopting the existing segment (%s); a new one "
		            "follows the first snapshot, clients resync",
		            f->name, err);
		return;
	}
	if (ring_snapshot_open(r, &snap, err, sizeof(err)) != RING_OK)
		goto refused;
	seq = snap_seq = snap.seq_after;
	snap_len = snap.len;
	if (!replay(f, snap.data, snap.len)) {
		ring_snapshot_release(&snap);
		snprintf(err, sizeof(err), "its snapshot's rows are corrupt");
		goto refused;
	}
	ring_snapshot_release(&snap);
	ring_info(r, &info);
	for (; seq < info.head_seq; seq++) {
		st = ring_read(r, seq, &buf, &rec);
		if (st != RING_OK || !replay(f, buf.data, buf.len)) {
			snprintf(err, sizeof(err), "the batch of seq %" PRIu64 " %s", seq,
			         st != RING_OK ? ring_strstatus(st)
			                       : "is corrupt or deletes a row not held");
			goto refused;
		}
		since += rec.len;
	}
	free(buf.data);

	f->ring = r;
	ring_set_stall_ms(r, f->stall_ms);
	f->columns_json = xstrdup(ring_columns(r));
	f->have_state = true;
	f->head = info.head_cursor;
	f->frontier = info.frontier + 1; /* complete through the ring's frontier */
	f->upstream = xstrdup(ring_upstream(r));
	f->gap = true; /* a snapshot, unless the source resumes, follows a gap */
	f->since_snapshot = since;
	f->snapshot_len = snap_len;
	f->shown = RING_STATE_DOWN; /* as ring_adopt left it */
	f->appended = true;         /* wake readers the dead writer left asleep */
	ring_set_row_count(r, f->state.rows);
	log_info("feed=%s: adopted the existing segment: %" PRIu64 " rows at cursor %" PRIu64
	         " (a snapshot and %" PRIu64 " batches); resuming after it",
	         f->name, f->state.rows, f->head, info.head_seq - snap_seq);
	return;
refused:
	log_warning("feed=%s: not adopting the existing segment (%s); a new one follows the "
	            "first snapshot, clients resync",
	            f->name, err);
	free(buf.data);
	rowset_clear(&f->state);
	ring_close(r, false);
}

struct feed *
feed_new(const struct feed_params *p)
{
	struct feed *f = calloc(1, sizeof(*f));

	if (f == NULL)
		fatalx("out of memory");
	f->name = xstrdup(p->name);
	f->ring_dir = xstrdup(p->ring_dir ? p->ring_dir : RING_DEFAULT_DIR);
	f->source = xstrdup(p->source);
	f->definition = xstrdup(p->definition);
	f->rows_def = p->rows ? xstrdup(p->rows) : NULL;
	f->ring_size = p->ring_size;
	f->stall_ms = p->stall_ms;
	f->unique_rows = p->unique_rows;
	rowset_init(&f->state);
	f->shown = RING_STATE_STARTING;
	if (!p->fresh)
		adopt_segment(f);
	return f;
}

void
feed_free(struct feed *f, bool remove)
{
	if (f == NULL)
		return;
	ring_close(f->ring, remove);
	rowset_clear(&f->state);
	batch_builder_free(&f->bb);
	bbuf_free(&f->pend_text);
	free(f->pend);
	free(f->order);
	free(f->touch);
	free(f->columns_json);
	free(f->name);
	free(f->ring_dir);
	free(f->source);
	free(f->definition);
	free(f->rows_def);
	free(f->upstream);
	free(f->error);
	free(f);
}

const char *
feed_name(const struct feed *f)
{
	return f->name;
}

bool
feed_can_resume(const struct feed *f)
{
	return f->have_state && f->ring != NULL && !f->new_history;
}

uint64_t
feed_frontier(const struct feed *f)
{
	return f->frontier;
}

bool
feed_is_live(const struct feed *f)
{
	return f->live;
}

static void
show_state(struct feed *f)
{
	enum ring_state s;

	if (f->ring == NULL)
		return;
	if (f->error_permanent)
		s = RING_STATE_ERROR; /* until the fix: ring_error says which */
	else if (!f->have_state)
		s = RING_STATE_STARTING; /* no snapshot yet: nothing to serve */
	else if (f->live && !f->ring_stale)
		s = RING_STATE_LIVE;
	else
		s = RING_STATE_DOWN;
	if (s != f->shown) {
		ring_set_state(f->ring, s);
		f->shown = s;
		f->appended = true; /* wake readers so they see it */
	}
}

static void
drop_pending(struct feed *f)
{
	f->npend = 0;
	f->pend_text.len = 0;
	f->snap_active = false;
}

enum feed_columns_status
feed_set_columns(struct feed *f, const struct feed_column *cols, size_t ncols)
{
	struct bbuf j = {0};
	struct ring_config rc;
	struct ring *r;
	char err[512];

	bbuf_add(&j, "[", 1);
	for (size_t i = 0; i < ncols; i++) {
		if (i > 0)
			bbuf_add(&j, ",", 1);
		bbuf_adds(&j, "{\"name\":");
		(void)encode_string(&j, cols[i].name, strlen(cols[i].name));
		bbuf_adds(&j, ",\"type\":");
		(void)encode_string(&j, cols[i].type, strlen(cols[i].type));
		bbuf_add(&j, "}", 1);
	}
	bbuf_add(&j, "]", 2); /* with the NUL */

	drop_pending(f);
	if (f->ring != NULL && strcmp(f->columns_json, j.p) == 0) {
		bbuf_free(&j);
		return f->have_state ? FEED_COLUMNS_SAME : FEED_COLUMNS_NEW;
	}

	memset(&rc, 0, sizeof(rc));
	rc.dir = f->ring_dir;
	rc.feed = f->name;
	rc.source = f->source;
	rc.columns_json = j.p;
	rc.data_size = f->ring_size;
	rc.definition = f->definition;
	rc.rows = f->rows_def;
	rc.upstream = f->upstream;
	if (ring_create(&rc, &r, err, sizeof(err)) != RING_OK) {
		log_error("feed=%s: %s", f->name, err);
		bbuf_free(&j);
		return FEED_COLUMNS_ERR;
	}
	if (f->ring != NULL)
		log_warning("feed=%s: the columns changed to %s; new segment, clients resync",
		            f->name, j.p);
	else
		log_info("feed=%s: columns %s", f->name, j.p);
	/* The old segment was renamed over; readers that still map it see
	 * CLOSED and reopen by name. */
	ring_close(f->ring, false);
	f->ring = r;
	ring_set_stall_ms(r, f->stall_ms);
	ring_set_error(r, f->error);
	free(f->columns_json);
	f->columns_json = j.p;
	rowset_clear(&f->state);
	f->have_state = false;
	f->new_history = false;
	f->ring_stale = false;
	f->snapshot_failed = false;
	f->frontier = 0;
	f->head = 0;
	f->since_snapshot = 0;
	f->shown = RING_STATE_STARTING;
	show_state(f);
	return FEED_COLUMNS_NEW;
}

/* ---- pending rows ---------------------------------------------------- */

int
feed_snapshot_begin(struct feed *f, uint64_t ts)
{
	if (f->ring == NULL) {
		log_error("feed=%s: snapshot at %" PRIu64 " before the columns are known", f->name,
		          ts);
		return -1;
	}
	drop_pending(f);
	f->snap_active = true;
	f->snap_ts = ts;
	log_info("feed=%s: taking a snapshot at %" PRIu64 "%s", f->name, ts,
	         f->have_state ? " (to diff against the held state)" : "");
	return 0;
}

int
feed_row(struct feed *f, uint64_t ts, int64_t diff, const char *row, size_t len)
{
	struct pend *p;

	if (diff == 0)
		return 0;
	if (f->snap_active ? ts < f->snap_ts : (!f->have_state || ts < f->frontier)) {
		if (!f->have_state && !f->snap_active)
			log_error("feed=%s: upstream sent a row at %" PRIu64
			          " before any snapshot began; dropping the session",
			          f->name, ts);
		else
			log_error("feed=%s: upstream sent a row at %" PRIu64
			          ", below the frontier %" PRIu64
			          " (that timestamp is closed); dropping the session",
			          f->name, ts, f->snap_active ? f->snap_ts : f->frontier);
		drop_pending(f);
		return -1;
	}
	/* A row larger than half the ring could never be published in a
	 * batch (RING_TOO_BIG): taking it would restart the ring at every
	 * change and send it to every client in each snapshot.  Refused like
	 * a malformed row: nothing of its timestamp is published, the state
	 * stays, other feeds are untouched; ring_size raises the limit. */
	if (len > UINT32_MAX || len > f->ring_size / 2 - ROW_SLACK) {
		log_error("feed=%s: upstream sent a row of %zu bytes at %" PRIu64 ", larger than "
		          "any batch this feed's ring can hold (ring_size %" PRIu64 " takes rows "
		          "up to %" PRIu64 " bytes of JSON); nothing of it published, dropping the "
		          "session",
		          f->name, len, ts, f->ring_size, f->ring_size / 2 - ROW_SLACK);
		drop_pending(f);
		return -1;
	}
	if (f->npend == f->pend_cap) {
		f->pend_cap = f->pend_cap ? f->pend_cap * 2 : 256;
		f->pend = xrealloc(f->pend, f->pend_cap * sizeof(*f->pend));
	}
	p = &f->pend[f->npend++];
	p->ts = ts;
	p->diff = diff;
	p->off = f->pend_text.len;
	p->len = len;
	bbuf_add(&f->pend_text, row, len);
	f->stats.rows_in++;
	return 0;
}

/* ---- closing a timestamp --------------------------------------------- */

static void
touch_add(struct feed *f, const char *row, size_t len, int64_t diff, bool *overflow,
          struct rowset_entry **dup)
{
	struct rowset_entry *e = rowset_intern(&f->state, row, len, rowset_hash(row, len));
	struct touch *t;

	if (e->mark != 0 && f->unique_rows && *dup == NULL)
		*dup = e;
	if (e->mark == 0) {
		if (f->ntouch == f->touch_cap) {
			f->touch_cap = f->touch_cap ? f->touch_cap * 2 : 256;
			f->touch = xrealloc(f->touch, f->touch_cap * sizeof(*f->touch));
		}
		f->touch[f->ntouch] = (struct touch){e, 0};
		e->mark = (uint32_t)++f->ntouch;
	}
	t = &f->touch[e->mark - 1];
	if (__builtin_add_overflow(t->delta, diff, &t->delta))
		*overflow = true;
}

/* Forget the touched list: clear marks, free rows left at count 0. */
static void
touch_release(struct feed *f)
{
	for (size_t i = 0; i < f->ntouch; i++) {
		struct rowset_entry *e = f->touch[i].e;
		e->mark = 0;
		if (e->count == 0)
			rowset_remove(&f->state, e);
	}
	f->ntouch = 0;
}

static void
log_bad_row(struct feed *f, const char *what, uint64_t ts, const struct rowset_entry *e,
            int64_t delta)
{
	int n = e->len > ROW_EXCERPT ? ROW_EXCERPT : (int)e->len;

	log_error("feed=%s: upstream %s at %" PRIu64 ": row %.*s%s held %" PRIu32
	          " times, change %+" PRId64 "; nothing published, dropping the session",
	          f->name, what, ts, n, e->row, e->len > ROW_EXCERPT ? "..." : "", e->count, delta);
}

static void
add_copies(struct batch_builder *bb, bool inserted, const struct rowset_entry *e, uint64_t n)
{
	for (uint64_t k = 0; k < n; k++)
		batch_add_row(bb, inserted, e->row, e->len);
}

static int
write_snapshot(struct feed *f)
{
	struct batch_builder sb;
	struct iovec iov[BATCH_IOV_MAX];
	struct rowset_entry *e;
	size_t pos = 0, len;
	char err[512];
	int n, rc;

	memset(&sb, 0, sizeof(sb));
	while ((e = rowset_next(&f->state, &pos)) != NULL)
		add_copies(&sb, true, e, e->count);
	n = batch_finish(&sb, f->head, iov);
	len = batch_iov_len(iov, n);
	rc = ring_write_snapshot(f->ring, iov, n, err, sizeof(err));
	if (rc != RING_OK)
		log_error("feed=%s: %s", f->name, err);
	else
		log_debug("feed=%s: snapshot at %" PRIu64 ": %" PRIu64 " rows, %zu bytes", f->name,
		          f->head, sb.n_ins, len);
	batch_builder_free(&sb);
	if (rc != RING_OK)
		return -1;
	f->since_snapshot = 0;
	f->snapshot_len = len;
	f->stats.snapshots++;
	return 0;
}

/* Start the ring over at ts with the state as its snapshot. */
static void
restart_ring(struct feed *f, uint64_t ts)
{
	f->snapshot_failed = false;
	ring_reset(f->ring, ts);
	f->new_history = false;
	f->head = ts;
	f->stats.resets++;
	f->ring_stale = write_snapshot(f) != 0;
	ring_set_row_count(f->ring, f->state.rows);
	f->appended = true;
	show_state(f);
}

/* Append the builder's batch at ts.  Returns false when it could not be
 * appended; the caller restarts the ring once the state is applied. */
static bool
append_batch(struct feed *f, uint64_t lo, uint64_t ts)
{
	struct iovec iov[BATCH_IOV_MAX];
	size_t len;
	int n, rc;

	if (f->ring_stale)
		return false;
	n = batch_finish(&f->bb, ts, iov);
	len = batch_iov_len(iov, n);
	rc = ring_append_range(f->ring, lo, ts, iov, n);
	if (rc == RING_NEED_SNAPSHOT) {
		if (write_snapshot(f) != 0)
			return false;
		rc = ring_append_range(f->ring, lo, ts, iov, n);
	}
	if (rc == RING_OK) {
		f->head = ts;
		f->since_snapshot += len;
		f->appended = true;
		f->stats.batches++;
		return true;
	}
	if (rc == RING_TOO_BIG)
		log_warning("feed=%s: the batch at %" PRIu64 " (%zu bytes, %" PRIu64 " rows) is "
		            "larger than half the ring (ring_size %" PRIu64 "); clients resync",
		            f->name, ts, len, f->bb.n_ins + f->bb.n_del, f->ring_size);
	else
		log_error("feed=%s: cannot append the batch at %" PRIu64 ": %s", f->name, ts,
		          ring_strstatus(rc));
	return false;
}

/*
 * A new client's first reply is the snapshot plus every batch after it.
 * Write a fresh snapshot once the batches since the last one outweigh it
 * (or SNAPSHOT_MIN_DELTA, for tiny views): that reply then stays under
 * about twice the snapshot's size, and rewriting snapshots costs at most
 * as many bytes as the batches themselves. Half the ring is the hard
 * limit, so the snapshot's successors are always still held.
 */
#define SNAPSHOT_MIN_DELTA (16u * 1024)

static bool
snapshot_due(const struct feed *f)
{
	uint64_t due = f->snapshot_len > SNAPSHOT_MIN_DELTA ? f->snapshot_len : SNAPSHOT_MIN_DELTA;

	if (due > f->ring_size / 2)
		due = f->ring_size / 2;
	return f->since_snapshot > due;
}

/* After a batch or a restart: row count, and the proactive snapshot. */
static void
after_publish(struct feed *f)
{
	ring_set_row_count(f->ring, f->state.rows);
	/* On failure (a full disk) the old snapshot keeps serving, and
	 * feed_heartbeat retries once a second: each try builds the whole
	 * snapshot and logs an error, too much to repeat for every batch. */
	if (!f->ring_stale && !f->snapshot_failed && snapshot_due(f))
		f->snapshot_failed = write_snapshot(f) != 0;
}

/* A batch could not be appended: restart the ring at ts, or, while it is
 * already stale (no snapshot could be written for the last restart),
 * leave that to feed_heartbeat's retry once a second, which restarts it
 * at the head: a failed restart per batch would cost as much as a failed
 * proactive snapshot per batch. */
static void
not_published(struct feed *f, uint64_t ts)
{
	if (f->ring_stale)
		f->head = ts;
	else
		restart_ring(f, ts);
}

/* Would n copies of e (a comma each, as batch.c lays them out) overflow
 * what one batch or snapshot of this ring can hold? */
static bool
copies_too_big(const struct feed *f, const struct rowset_entry *e, uint64_t n)
{
	uint64_t bytes;

	if (__builtin_mul_overflow(n, (uint64_t)e->len + 1, &bytes))
		return true;
	return bytes > f->ring_size / 2;
}

static int
validate_touched(struct feed *f, uint64_t ts, bool snapshot)
{
	for (size_t i = 0; i < f->ntouch; i++) {
		struct touch *t = &f->touch[i];
		int64_t after = snapshot ? t->delta : (int64_t)t->e->count + t->delta;
		if (after < 0) {
			log_bad_row(f,
			            snapshot ? "snapshot has a negative count"
			                     : "retracted a row it does not hold",
			            ts, t->e, t->delta);
			return -1;
		}
		if (after > (int64_t)UINT32_MAX) {
			log_bad_row(f, "multiplicity overflow", ts, t->e, t->delta);
			return -1;
		}
		/* A row held n times is n copies in every batch and snapshot
		 * (docs/API.md); mz_diff may be anything in int8's range.
		 * Copies that cannot fit in half the ring could never be
		 * published, and laying them out would exhaust memory first:
		 * refused before a byte of them is built. */
		if (copies_too_big(f, t->e, (uint64_t)after) ||
		    copies_too_big(f, t->e,
		                   t->delta < 0 ? 0 - (uint64_t)t->delta : (uint64_t)t->delta)) {
			char what[200];
			snprintf(what, sizeof(what),
			         "sent a multiplicity whose copies exceed half the ring "
			         "(ring_size %" PRIu64 ")",
			         f->ring_size);
			log_bad_row(f, what, ts, t->e, t->delta);
			return -1;
		}
	}
	return 0;
}

/* Close an ordinary timestamp: items are indexes into f->pend. */
/* Intern a timestamp's rows into the touched list; false (logged) when
 * the upstream broke consolidation (the first time) or the sums overflow. */
static bool
touch_items(struct feed *f, uint64_t ts, const size_t *items, size_t nitems)
{
	struct rowset_entry *dup = NULL;
	bool overflow = false;

	f->ntouch = 0;
	for (size_t i = 0; i < nitems; i++) {
		const struct pend *p = &f->pend[items[i]];
		touch_add(f, f->pend_text.p + p->off, p->len, p->diff, &overflow, &dup);
	}
	/* A row twice in one timestamp from an upstream that consolidates is
	 * refused once: a glitch, or a stream broken in transit, and the
	 * resumed session sends that timestamp again.  If the next timestamp
	 * closed (that same one, resent) repeats a row again, the upstream
	 * does not consolidate at all: its diffs are summed from then on, as
	 * any other source's (its documentation promises a row's change, not
	 * one line per row), rather than refusing the same timestamp forever. */
	if (dup != NULL && f->unique_rows && !f->dup_refused) {
		log_bad_row(f, "sent a row twice in one timestamp (its output is consolidated)", ts,
		            dup, f->touch[dup->mark - 1].delta);
		f->dup_refused = true;
		touch_release(f);
		return false;
	}
	if (dup != NULL && f->unique_rows) {
		log_warning("feed=%s: upstream sent a row twice in one timestamp again, at %" PRIu64
		            ": it does not consolidate its output; summing repeated rows from "
		            "now on",
		            f->name, ts);
		f->unique_rows = false;
	}
	if (overflow) {
		log_error("feed=%s: upstream diffs at %" PRIu64 " overflow; dropping the session",
		          f->name, ts);
		touch_release(f);
		return false;
	}
	f->dup_refused = false;
	return true;
}

/* Closing timestamp ts, after its batch was appended (or could not be):
 * the touched rows' counts become the state, then the ring catches up. */
static void
commit_touched(struct feed *f, uint64_t ts, bool published)
{
	for (size_t i = 0; i < f->ntouch; i++) {
		struct touch *t = &f->touch[i];
		rowset_set_count(&f->state, t->e, (uint32_t)((int64_t)t->e->count + t->delta));
	}
	touch_release(f);
	if (!published)
		not_published(f, ts);
	after_publish(f);
}

static int
close_ts(struct feed *f, uint64_t ts, const size_t *items, size_t nitems)
{
	bool published;

	if (!touch_items(f, ts, items, nitems))
		return -1;
	if (validate_touched(f, ts, false) != 0) {
		touch_release(f);
		return -1;
	}

	batch_builder_reset(&f->bb);
	for (size_t i = 0; i < f->ntouch; i++) {
		struct touch *t = &f->touch[i];
		if (t->delta > 0)
			add_copies(&f->bb, true, t->e, (uint64_t)t->delta);
	}
	for (size_t i = 0; i < f->ntouch; i++) {
		struct touch *t = &f->touch[i];
		if (t->delta < 0)
			add_copies(&f->bb, false, t->e, (uint64_t)-t->delta);
	}
	if (f->bb.n_ins + f->bb.n_del == 0) {
		touch_release(f); /* consolidated to nothing */
		return 0;
	}
	published = append_batch(f, ts - 1, ts);
	commit_touched(f, ts, published);
	return 0;
}

static int
cmp_rows(const void *a, const void *b)
{
	const struct touch *x = a, *y = b;
	size_t n = x->e->len < y->e->len ? x->e->len : y->e->len;
	int c = memcmp(x->e->row, y->e->row, n);

	if (c != 0)
		return c;
	return x->e->len < y->e->len ? -1 : x->e->len > y->e->len;
}

/* Close the snapshot at ts: items are its rows. */
static int
close_snapshot(struct feed *f, uint64_t ts, const size_t *items, size_t nitems)
{
	bool published;
	struct rowset_entry *e;
	size_t pos = 0, ntouched;

	f->snap_active = false;
	if (!touch_items(f, ts, items, nitems))
		return -1;
	if (validate_touched(f, ts, true) != 0) {
		touch_release(f);
		return -1;
	}

	if (!f->have_state) {
		/* First snapshot: the state is empty, the counts are it. */
		for (size_t i = 0; i < f->ntouch; i++)
			rowset_set_count(&f->state, f->touch[i].e, (uint32_t)f->touch[i].delta);
		touch_release(f);
		f->have_state = true;
		restart_ring(f, ts);
		log_info("feed=%s: snapshot at %" PRIu64 ": %" PRIu64 " rows", f->name, ts,
		         f->state.rows);
		after_publish(f);
		return 0;
	}

	/* A fresh snapshot against held state: every held row the snapshot
	 * did not mention goes to 0.  The touched list becomes the change
	 * list (delta = new - old), sorted so every host lays the batch out
	 * the same way. */
	ntouched = f->ntouch;
	for (size_t i = 0; i < ntouched; i++)
		f->touch[i].delta -= f->touch[i].e->count;
	while ((e = rowset_next(&f->state, &pos)) != NULL) {
		if (e->mark != 0 || e->count == 0)
			continue;
		if (f->ntouch == f->touch_cap) {
			f->touch_cap = f->touch_cap ? f->touch_cap * 2 : 256;
			f->touch = xrealloc(f->touch, f->touch_cap * sizeof(*f->touch));
		}
		f->touch[f->ntouch] = (struct touch){e, -(int64_t)e->count};
		e->mark = (uint32_t)++f->ntouch;
	}
	if (f->ntouch > 1) /* touch is NULL while nothing was ever touched */
		qsort(f->touch, f->ntouch, sizeof(*f->touch), cmp_rows);
	batch_builder_reset(&f->bb);
	for (size_t i = 0; i < f->ntouch; i++)
		if (f->touch[i].delta > 0)
			add_copies(&f->bb, true, f->touch[i].e, (uint64_t)f->touch[i].delta);
	for (size_t i = 0; i < f->ntouch; i++)
		if (f->touch[i].delta < 0)
			add_copies(&f->bb, false, f->touch[i].e, (uint64_t)-f->touch[i].delta);
	log_info("feed=%s: fresh snapshot at %" PRIu64 " differs from the held state at %" PRIu64
	         " by %" PRIu64 " inserted, %" PRIu64 " deleted rows",
	         f->name, ts, f->head, f->bb.n_ins, f->bb.n_del);

	if (f->bb.n_ins + f->bb.n_del == 0 && !f->new_history) {
		touch_release(f);
		return 0;
	}
	if (f->new_history) {
		log_warning("feed=%s: the snapshot at %" PRIu64 " is of another upstream history "
		            "(%s); restarting the ring, clients resync",
		            f->name, ts, f->upstream ? f->upstream : "");
		published = false;
	} else if (ts > f->head) {
		/* After a gap the batch stands for every commit since the
		 * frontier; in a continuous stream (a TRUNCATE) for ts alone. */
		struct ring_info info;
		ring_info(f->ring, &info);
		published =
		        append_batch(f, f->gap && info.frontier < ts ? info.frontier : ts - 1, ts);
	} else {
		log_warning("feed=%s: the snapshot at %" PRIu64 " is not after the last published "
		            "cursor %" PRIu64 "; restarting the ring, clients resync",
		            f->name, ts, f->head);
		published = false;
	}
	if (!published && f->new_history)
		f->ring_stale = false; /* restart now, with the new identity */
	commit_touched(f, ts, published);
	return 0;
}

static int
cmp_pend(const void *a, const void *b, void *arg)
{
	const struct pend *pend = arg;
	size_t x = *(const size_t *)a, y = *(const size_t *)b;
	uint64_t tx = pend[x].ts, ty = pend[y].ts;

	if (tx != ty)
		return tx < ty ? -1 : 1;
	return x < y ? -1 : x > y; /* arrival order within a timestamp */
}

/* Keep only the pending items at or after frontier (their text too). */
static void
keep_pending_from(struct feed *f, uint64_t frontier)
{
	struct bbuf text = {0};
	size_t n = 0;

	for (size_t i = 0; i < f->npend; i++) {
		struct pend p = f->pend[i];
		if (p.ts < frontier)
			continue;
		bbuf_add(&text, f->pend_text.p + p.off, p.len);
		p.off = text.len - p.len;
		f->pend[n++] = p;
	}
	bbuf_free(&f->pend_text);
	f->pend_text = text;
	f->npend = n;
}

int
feed_progress(struct feed *f, uint64_t frontier)
{
	size_t nclosed = 0, i, j;
	bool sorted = true;
	uint64_t floor = f->snap_active ? f->snap_ts : f->frontier;

	if (frontier <= floor || (!f->have_state && !f->snap_active))
		return 0; /* nothing new can close */

	if (f->order_cap < f->npend) {
		f->order_cap = f->npend;
		f->order = xrealloc(f->order, f->order_cap * sizeof(*f->order));
	}
	for (i = 0; i < f->npend; i++) {
		if (f->pend[i].ts >= frontier)
			continue;
		if (nclosed > 0 && f->pend[f->order[nclosed - 1]].ts > f->pend[i].ts)
			sorted = false;
		f->order[nclosed++] = i;
	}
	if (!sorted) {
		qsort_r(f->order, nclosed, sizeof(*f->order), cmp_pend, f->pend);
	}

	i = 0;
	if (f->snap_active) {
		/* The snapshot timestamp is the lowest one pending. */
		for (j = i; j < nclosed && f->pend[f->order[j]].ts == f->snap_ts; j++)
			;
		if (close_snapshot(f, f->snap_ts, f->order, j) != 0)
			goto failed;
		f->frontier = f->snap_ts + 1;
		i = j;
	}
	while (i < nclosed) {
		uint64_t ts = f->pend[f->order[i]].ts;
		for (j = i; j < nclosed && f->pend[f->order[j]].ts == ts; j++)
			;
		if (close_ts(f, ts, f->order + i, j - i) != 0) {
			f->frontier = ts; /* everything before ts is published */
			goto failed;
		}
		f->frontier = ts + 1;
		i = j;
	}
	f->frontier = frontier;
	f->gap = false;
	/* Complete through frontier - 1 (the top of the file); not while
	 * the ring lags the state (its batches are not all there). */
	if (f->ring != NULL && f->have_state && !f->ring_stale &&
	    ring_advance(f->ring, frontier - 1))
		f->appended = true; /* feed_flush wakes parked readers */
	if (nclosed == f->npend) {
		f->npend = 0;
		f->pend_text.len = 0;
	} else {
		keep_pending_from(f, frontier);
	}
	show_state(f);
	return 0;
failed:
	drop_pending(f);
	show_state(f);
	return -1;
}

int
feed_snapshot_end(struct feed *f)
{
	if (!f->snap_active)
		return 0;
	return feed_progress(f, f->snap_ts + 1);
}

/* ---- liveness and housekeeping ----------------------------------------- */

void
feed_upstream_live(struct feed *f)
{
	feed_confirmed(f);
	if (f->error != NULL) {
		free(f->error);
		f->error = NULL;
		f->error_permanent = false;
		if (f->ring != NULL)
			ring_set_error(f->ring, NULL);
	}
	if (!f->live) {
		f->live = true;
		show_state(f);
	}
}

void
feed_confirmed(struct feed *f)
{
	if (f->ring != NULL)
		ring_confirmed(f->ring);
}

/* A segment with no columns to carry a permanent error for a feed that
 * never got as far as its columns (a missing table): readers see the feed
 * and why, instead of no feed at all.  Its real segment replaces it when
 * the columns are known (feed_set_columns). */
static void
error_segment(struct feed *f)
{
	struct ring_config rc;
	struct ring *r;
	char err[512];

	memset(&rc, 0, sizeof(rc));
	rc.dir = f->ring_dir;
	rc.feed = f->name;
	rc.source = f->source;
	rc.columns_json = "[]";
	rc.data_size = f->ring_size;
	rc.definition = f->definition;
	rc.rows = f->rows_def;
	if (ring_create(&rc, &r, err, sizeof(err)) != RING_OK) {
		log_error("feed=%s: %s", f->name, err);
		return;
	}
	f->ring = r;
	ring_set_stall_ms(r, f->stall_ms);
	f->columns_json = xstrdup("[]");
	f->shown = RING_STATE_STARTING;
}

void
feed_upstream_error(struct feed *f, const char *msg, bool permanent)
{
	free(f->error);
	f->error = xstrdup(msg);
	f->error_permanent = permanent;
	if (f->ring == NULL && permanent)
		error_segment(f);
	if (f->ring != NULL)
		ring_set_error(f->ring, msg);
	show_state(f);
}

bool
feed_set_upstream(struct feed *f, const char *upstream)
{
	if (f->upstream == NULL || strcmp(f->upstream, upstream) != 0) {
		free(f->upstream);
		f->upstream = xstrdup(upstream);
	}
	if (f->ring == NULL || !ring_set_upstream(f->ring, upstream))
		return false;
	if (!f->new_history)
		log_warning("feed=%s: the upstream is %s, the ring holds the history of %s: "
		            "a new history begins with the next snapshot, clients resync",
		            f->name, upstream,
		            ring_upstream(f->ring)[0] ? ring_upstream(f->ring) : "(unknown)");
	f->new_history = true;
	return true;
}

bool
feed_error_permanent(const struct feed *f)
{
	return f->error_permanent;
}

void
feed_upstream_lost(struct feed *f)
{
	drop_pending(f);
	f->gap = true;
	if (f->live) {
		f->live = false;
		show_state(f);
	}
}

bool
feed_flush(struct feed *f)
{
	if (f->appended && f->ring != NULL) {
		ring_wake(f->ring);
		f->appended = false;
		return true;
	}
	return false;
}

void
feed_heartbeat(struct feed *f)
{
	if (f->ring == NULL)
		return;
	ring_heartbeat(f->ring);
	if (f->ring_stale && f->have_state) {
		restart_ring(f, f->head); /* retry the snapshot file, once a second */
		/* The state is complete through the frontier, past the head. */
		if (!f->ring_stale && f->frontier > f->head + 1)
			ring_advance(f->ring, f->frontier - 1);
		ring_wake(f->ring);
		f->appended = false;
	} else if (f->snapshot_failed && f->have_state) {
		f->snapshot_failed = write_snapshot(f) != 0; /* likewise */
	}
}

void
feed_stats(const struct feed *f, struct feed_stats *out)
{
	*out = f->stats;
	out->state_rows = f->state.rows;
	out->state_distinct = f->state.distinct;
	out->state_bytes = rowset_memory(&f->state);
	out->state_json = f->state.listed_bytes;
	out->head_cursor = f->head;
}
