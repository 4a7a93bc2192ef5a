/*
 * feed.h - where a source hands its rows: one feed's state, batches and
 * ring segment.
 *
 * A source (source.h) reports what the upstream says, in upstream terms;
 * the feed turns it into exactly one batch per timestamp and keeps the
 * multiset of current rows (rowset.h) to write snapshots from:
 *
 *   feed_set_columns   the upstream's columns (after every connect);
 *   feed_snapshot_begin  rows at timestamp ts are a full snapshot, not
 *                      changes (a first start, or a lost resume point);
 *   feed_row           one change: row (an encoded JSON array, encode.h)
 *                      with multiplicity diff at timestamp ts;
 *   feed_progress      no more rows at times < frontier: every timestamp
 *                      below it is closed and published;
 *   feed_upstream_live / feed_upstream_lost.
 *
 * Timestamps are the cursor clients see (mz_timestamp, a commit LSN).
 *
 * Publication.  When feed_progress(F) closes timestamp T (T < F), the
 * rows of T are consolidated (a row's diffs summed, zero dropped; with
 * feed_params.unique_rows a row given twice is an error instead, once:
 * when the next timestamp closed repeats a row again, the upstream does
 * not consolidate, and its rows are summed from then on),
 * checked against the state, appended to the ring as one batch (inserted:
 * rows with positive net diff, repeated; deleted: negative) and applied.
 * A timestamp whose net change is empty publishes nothing.  Rows of
 * timestamps >= F wait; their order of arrival does not matter.
 *
 * Snapshots.  After feed_snapshot_begin(ts) the rows at exactly ts are
 * the whole upstream state at ts (rows at later times are ordinary
 * changes).  When ts closes:
 *   - the feed holds no state (first start, new columns): the state
 *     becomes the snapshot and the ring restarts at ts (ring_reset and a
 *     snapshot file): clients holding older cursors resync;
 *   - the feed holds state (the upstream could not resume): the feed
 *     diffs the new snapshot against the held state and publishes only
 *     the difference, as one batch at ts, so clients keep their place.
 *     When ts is not past the last published cursor the ring restarts as
 *     above instead.
 * feed_snapshot_end() closes the snapshot timestamp explicitly (for a
 * source whose next timestamps are not known yet); feed_progress past ts
 * closes it too.
 *
 * Errors.  feed_row, feed_progress and the snapshot calls return 0, or
 * -1 when the upstream broke the contract: a row at a timestamp already
 * closed (or, during a snapshot, below the snapshot's), a retraction of
 * a row the state does not hold, a multiplicity that overflows, a row
 * twice in one timestamp with unique_rows (a diff of 0 is ignored).  The feed has then logged it
 * naming the feed, published nothing of the offending timestamp, kept the state as of the last
 * published batch, and dropped every pending row; the source must end the session (SOURCE_RETRY)
 * and resume from feed_frontier().
 *
 * Resuming.  feed_frontier() is the last frontier applied: every change
 * at a time below it is in the state and the ring, none at or above it.
 * A source resumes at it (Materialize: AS OF frontier - 1 WITH
 * (SNAPSHOT = false)) when feed_can_resume() is true.  A feed that
 * adopted its segment at a restart (feed_new) knows only the ring's head,
 * so its frontier is head + 1: the timestamps between that and the old
 * daemon's frontier changed nothing, and resuming there repeats nothing.
 *
 * Liveness.  The ring says LIVE between feed_upstream_live and
 * feed_upstream_lost once a snapshot exists, DOWN otherwise (STARTING
 * before the first snapshot).  feed_upstream_lost drops pending rows.
 *
 * Memory: the feed copies row bytes it keeps; the pointers passed in are
 * not retained.  Nothing here blocks except writing a snapshot file.
 */
#ifndef TAILGATE_FEED_H
#define TAILGATE_FEED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "coltype.h"

struct feed;

struct feed_params {
	const char *name;       /* the feed's name, also the segment's */
	const char *ring_dir;   /* NULL: RING_DEFAULT_DIR */
	const char *source;     /* "materialize", "postgresql": shown by the ring */
	uint64_t ring_size;     /* data area bytes */
	bool unique_rows;       /* a row twice in one timestamp is an error,
	                         * not summed (source_ops.consolidated) */
	const char *definition; /* what the feed streams (the source's settings
	                         * for it), recorded in the segment: a restart
	                         * adopts only a segment of the same one */
	const char *rows;       /* what determines the rows (the definition
	                         * without this host's slot settings): cursors
	                         * name it, so every host agrees; NULL: definition */
	bool fresh;             /* do not adopt an existing segment */
	uint32_t stall_ms;      /* readers call the feed stalled after this long
	                         * without feed_confirmed (0: never) */
};

struct feed_column {
	const char *name;
	const char *type; /* the upstream's type name: "int8", "text", "mz_timestamp" */
	enum coltype_kind kind;
};

enum feed_columns_status {
	FEED_COLUMNS_SAME = 0, /* same as held: the source may resume */
	FEED_COLUMNS_NEW = 1,  /* first or changed: held state dropped, new
	                        * segment created; take a full snapshot */
	FEED_COLUMNS_ERR = -1  /* the segment could not be created (logged) */
};

/* Allocates; dies on allocation failure only.
 *
 * Restart.  Unless p->fresh, feed_new adopts the segment a previous
 * daemon left (ring_adopt: same feed, source, definition and ring size,
 * a snapshot, no other writer): the state is rebuilt from its snapshot
 * and the batches after it, the head and frontier (head + 1) follow its
 * head, and the ring says DOWN; feed_can_resume is then true, so the
 * source resumes instead of taking a snapshot, and clients keep their
 * cursors.  The columns are checked when the source reports them:
 * feed_set_columns returns FEED_COLUMNS_SAME, or starts a new segment as
 * for changed columns.  When there is no segment, or it cannot be
 * adopted (logged in one line, with the reason), no segment exists
 * until feed_set_columns, which creates one. */
struct feed *feed_new(const struct feed_params *p);

/* Close the segment (marked CLOSED for readers); unlink its files when
 * remove is set.  Frees everything. */
void feed_free(struct feed *f, bool remove);

const char *feed_name(const struct feed *f);

enum feed_columns_status feed_set_columns(struct feed *f, const struct feed_column *cols,
                                          size_t ncols);

/* True when the feed holds state for its current columns, so a source
 * may resume at feed_frontier() instead of taking a snapshot. */
bool feed_can_resume(const struct feed *f);
uint64_t feed_frontier(const struct feed *f);

int feed_snapshot_begin(struct feed *f, uint64_t ts) __attribute__((warn_unused_result));
int feed_snapshot_end(struct feed *f) __attribute__((warn_unused_result));
int feed_row(struct feed *f, uint64_t ts, int64_t diff, const char *row, size_t len)
        __attribute__((warn_unused_result));
int feed_progress(struct feed *f, uint64_t frontier) __attribute__((warn_unused_result));

void feed_upstream_live(struct feed *f);
void feed_upstream_lost(struct feed *f);

/* The upstream history the source is connected to, as text that names it
 * exactly ("pg:SYSTEM_ID:TIMELINE", "mz:ENVIRONMENT_ID"); cursors carry a
 * hash of it.  Returns true when the ring holds another history: the
 * source must not resume but take a snapshot (feed_can_resume is false
 * until then), which starts a new history; clients resync. */
bool feed_set_upstream(struct feed *f, const char *upstream);

/* The upstream failed with msg (one line, SQLSTATE included where there is
 * one).  Shown to readers (/feeds, the 503 body) until the feed is live
 * again.  A permanent error (the configuration or the database must
 * change: a missing table, refused credentials, wal_level) puts the feed
 * in RING_STATE_ERROR, also before it has a segment (one without columns
 * is made to carry it); feed_error_permanent says the last one was. */
void feed_upstream_error(struct feed *f, const char *msg, bool permanent);
bool feed_error_permanent(const struct feed *f);

/* The upstream confirmed the feed complete up to now: a progress row, a
 * keepalive, a commit.  Stall detection measures the time since. */
void feed_confirmed(struct feed *f);
bool feed_is_live(const struct feed *f);

/* Once per event-loop iteration: wake readers if anything was appended
 * since the last call; true when it woke them. */
bool feed_flush(struct feed *f);

/* Once a second: the ring's heartbeat. */
void feed_heartbeat(struct feed *f);

/* Counters for logs, tests and the bench. */
struct feed_stats {
	uint64_t rows_in;        /* feed_row calls accepted */
	uint64_t batches;        /* batches appended */
	uint64_t snapshots;      /* snapshot files written */
	uint64_t resets;         /* ring restarts (first snapshot included) */
	uint64_t state_rows;     /* rows in the state, with multiplicity */
	uint64_t state_distinct; /* distinct rows in the state */
	uint64_t state_bytes;    /* memory held by the state (rowset_memory) */
	uint64_t state_json;     /* bytes of the state's rows as JSON text */
	uint64_t head_cursor;    /* last published cursor */
};
void feed_stats(const struct feed *f, struct feed_stats *out);

#endif
