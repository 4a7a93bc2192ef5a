/*
 * ring.h - the shared-memory feed ring.
 *
 * One segment per feed: a file under the ring directory (default
 * /dev/shm/tailgate) named FEED.ring, created by the daemon and mapped
 * read-only by any number of responder processes.  It holds:
 *
 *   - a header: layout version, feed name, source, the column list (JSON),
 *     the writer's pid and heartbeat, the upstream's liveness, the current
 *     row count and the snapshot generation;
 *   - a data area of variable-size records, one per batch, each tagged with
 *     its upstream timestamp (the cursor) and a sequence number, appended in
 *     order; when the area is full the oldest records are dropped;
 *   - an index of fixed-size entries (seq, lo, cursor, offset, length), one
 *     per record, which makes cursor lookup a binary search; a record
 *     stands for the upstream positions (lo, cursor]: lo is cursor - 1 for
 *     an ordinary batch, lower for one that merges several commits;
 *   - the frontier: the upstream position through which the feed is
 *     complete (at least the head's cursor), advanced by the writer even
 *     when no batch changes, and the identity of the upstream history
 *     the positions belong to (ring_ident).
 *
 * Positions.  A reader at position P holds the feed as of P.  It gets
 * every batch whose cursor is above P: ring_seek finds the first, for any
 * P at or above the floor, also one past the frontier (the host is only
 * behind: the batches come later).  A P strictly inside a merged record's
 * (lo, cursor) has no state of its own here, and a P older than the floor
 * is no longer held: ring_seek says so.
 *
 * The snapshot (the feed's full state at some cursor) lives beside it in
 * FEED.snap, replaced by rename(2) so a reader that opened the old file
 * keeps a consistent copy.  A snapshot records the seq of the first batch
 * after it; the writer never drops that batch while the snapshot is
 * current (ring_append says RING_NEED_SNAPSHOT instead).
 *
 * Concurrency contract: exactly ONE writer per segment (one thread of the
 * daemon, which holds an flock on the segment file; a restarted daemon
 * becomes the writer again with ring_adopt); any number of readers in any
 * number of processes and threads.
 * Readers never write to the segment and never block the writer.  A reader
 * that was lapped (the batch it wanted was overwritten, even while it was
 * copying it) is told RING_GONE; it never returns torn bytes.
 *
 * Handles (struct ring) are process-local and not thread-safe for the
 * writer; reader calls on one handle may run concurrently from threads.
 */
#ifndef TAILGATE_RING_H
#define TAILGATE_RING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#define RING_LAYOUT_VERSION                                                                        \
	3                  /* 2: error message, confirmed_ms, stall_ms;                            \
	                    * 3: frontier, upstream identity, ranges */
#define RING_ERROR_MAX 255 /* bytes of the error message */
#define RING_DEFAULT_DIR "/dev/shm/tailgate"
/* Rings, snapshots and the daemon's other files in ring_dir: the owner
 * writes, its group (tailgated.conf's ring_group) reads, nobody else. */
#define RING_FILE_MODE 0640
#define RING_FEED_NAME_MAX 63
#define RING_COLUMNS_MAX (64 * 1024) /* bytes of column-list JSON */
#define RING_UPSTREAM_MAX 127        /* bytes of the upstream's identity text */

/* A feed name: 1 to RING_FEED_NAME_MAX of ASCII [A-Za-z0-9_-], whatever the
 * locale.  It names the segment's files, a configuration section and the
 * URL; the daemon, the ring and the responder all check it with this. */
bool ring_feed_name_ok(const char *name);

enum ring_status {
	RING_OK = 0,
	RING_GONE = 1,          /* cursor/seq older than what the ring holds */
	RING_UNKNOWN = 2,       /* cursor is not a batch boundary of this history */
	RING_AHEAD = 3,         /* cursor/seq newer than the head */
	RING_TIMEOUT = 4,       /* ring_wait: nothing new before the deadline */
	RING_NEED_SNAPSHOT = 5, /* ring_append: write a snapshot first */
	RING_TOO_BIG = 6,       /* ring_append: record larger than half the ring */
	RING_ERR = -1           /* system error; errno and message set */
};

/* Liveness of the feed as the daemon last stated it. */
enum ring_state {
	RING_STATE_STARTING = 0, /* created, no snapshot yet */
	RING_STATE_LIVE = 1,     /* upstream connected and streaming */
	RING_STATE_DOWN = 2,     /* upstream lost; daemon reconnecting */
	RING_STATE_CLOSED = 3,   /* daemon stopped; segment is dead */
	RING_STATE_ERROR = 4     /* a permanent upstream error (ring_error says
	                          * which); the daemon retries slowly */
};

struct ring;

struct ring_config {
	const char *dir;          /* NULL: RING_DEFAULT_DIR */
	const char *feed;         /* [A-Za-z0-9_-], at most RING_FEED_NAME_MAX */
	const char *source;       /* "materialize", "postgresql", "test" */
	const char *columns_json; /* [{"name":..,"type":..},..] */
	uint64_t data_size;       /* bytes, rounded up to a power of two */
	uint32_t index_slots;     /* 0: data_size / 256; rounded up to 2^n */
	uint64_t base_cursor;     /* cursor before the first batch (snapshot) */
	const char *definition;   /* what the feed is (source settings), kept as
	                           * a hash: ring_adopt takes over only a segment
	                           * of the same definition; NULL: "" */
	const char *rows;         /* what determines the rows (the definition
	                           * without settings of this host alone, such
	                           * as its replication slot), hashed into the
	                           * identity; NULL: definition */
	const char *upstream;     /* the upstream history the cursors are
	                           * positions of ("pg:SYSID:TLI", "mz:ENV");
	                           * NULL: "" (not known yet: ring_set_upstream) */
};

/* What a reader learns about a record besides its bytes. */
struct ring_rec {
	uint64_t seq;
	uint64_t lo; /* the record stands for the positions (lo, cursor] */
	uint64_t cursor;
	size_t len; /* payload bytes */
};

/* A growable buffer the reader copies records into.  Owned by the caller;
 * free(buf->data) when done. */
struct ring_buf {
	char *data;
	size_t len;
	size_t cap;
};

/* A consistent picture of the head, for /feeds and the wait loop. */
struct ring_info {
	uint64_t head_seq;    /* seq the next batch will get */
	uint64_t head_cursor; /* cursor of the newest batch (or the base) */
	uint64_t frontier;    /* complete through here; >= head_cursor */
	uint32_t ident;       /* the history's identity (ring_ident) */
	uint64_t tail_seq;    /* oldest seq still held */
	uint64_t snap_gen;    /* bumps on every new snapshot */
	uint64_t snap_cursor;
	uint64_t row_count; /* rows in the feed's state at head_cursor */
	uint64_t heartbeat_ms;
	uint64_t segment_id; /* random, differs per created segment */
	int writer_pid;
	enum ring_state state;
	bool writer_alive;     /* heartbeat within 5 s and pid exists (probed <= every 100 ms) */
	uint64_t confirmed_ms; /* ring_confirmed's clock; 0: never */
	uint64_t lag_ms;       /* now - confirmed_ms (0 when never confirmed) */
	uint32_t stall_ms;     /* 0: no stall detection */
	bool stalled;          /* state LIVE, writer alive, lag_ms > stall_ms */
};

/* ---- writer (daemon) ---- */

/* Create (or replace) DIR/FEED.ring.  The new segment becomes visible only
 * once fully initialised (it is built under a temporary name and renamed).
 * On failure returns RING_ERR and writes a message into err. */
int ring_create(const struct ring_config *cfg, struct ring **out, char *err, size_t errlen);

/* Take over DIR/FEED.ring as its writer after a daemon restart (a clean
 * stop or a crash), keeping its batches, snapshot, segment_id and seqs, so
 * readers holding cursors or a mapping carry on.  cfg must describe the
 * same segment: feed, source, definition, data_size and index_slots as
 * ring_create would size them, and (unless columns_json is NULL) the same
 * columns.  The segment must hold a snapshot consistent with its index and
 * no live writer but this process.  The writer's private offsets are
 * recovered from the index; head_cursor is rewritten from the index (a
 * killed writer may have stored it before publishing); writer_pid,
 * heartbeat and state (DOWN: upstream not connected yet) become ours.
 * Returns RING_OK; RING_GONE when there is no segment; RING_ERR with the
 * reason in err when the segment exists but cannot be adopted (the caller
 * then ring_creates a new one, as after a first start). */
int ring_adopt(const struct ring_config *cfg, struct ring **out, char *err, size_t errlen);

/* Append one batch record.  cursor must be greater than the head's.
 * Drops the oldest records as needed.  The record is visible to readers on
 * return but waiters are not woken until ring_wake().
 * Returns RING_OK, RING_NEED_SNAPSHOT (the batch right after the current
 * snapshot would be dropped: write a snapshot at the head, then retry),
 * RING_TOO_BIG, or RING_ERR (cursor not increasing). */
int ring_append(struct ring *r, uint64_t cursor, const struct iovec *iov, int iovcnt);

/* Append a record that stands for the upstream positions (lo, cursor]:
 * several upstream commits merged into one batch (a diff after a new
 * snapshot).  lo must be at least the frontier and below cursor; a reader
 * at a position strictly inside (lo, cursor) is told RING_UNKNOWN by
 * ring_seek.  ring_append(cursor) is ring_append_range(cursor - 1, cursor). */
int ring_append_range(struct ring *r, uint64_t lo, uint64_t cursor, const struct iovec *iov,
                      int iovcnt);

/* The upstream confirmed the feed complete through position pos (a
 * keepalive, a progress row): the frontier moves up to pos (never down).
 * Returns whether it moved; wake readers with ring_wake as for a batch. */
bool ring_advance(struct ring *r, uint64_t pos);

/* The upstream history the feed now follows (see ring_config.upstream).
 * It takes effect at the next ring_reset (a new history starts there);
 * a ring that has no history yet takes it at once.  Returns true when it
 * differs from the identity of the history the ring holds: the caller must
 * then start a new history (a snapshot and ring_reset), never append. */
bool ring_set_upstream(struct ring *r, const char *upstream);
/* The identity text of the history held (writer side). */
const char *ring_upstream(const struct ring *r);

/* Wake every reader sleeping in ring_wait(), in every process. */
void ring_wake(struct ring *r);

/* Write the feed's state at the head cursor as the new snapshot: the bytes
 * go to DIR/FEED.snap.tmp, then rename(2) over DIR/FEED.snap.  On failure
 * (disk full...) the old snapshot stays current; returns RING_ERR with a
 * message in err. */
int ring_write_snapshot(struct ring *r, const struct iovec *iov, int iovcnt, char *err,
                        size_t errlen);

/* Start a new history at cursor: every held batch is dropped and cursor
 * becomes the floor.  The new history's seqs start one past the old head
 * (that seq is never written), so every reader of the old history, even
 * one waiting at its head, is woken and gets RING_GONE; ring_lookup of an
 * old cursor says RING_GONE too.  The caller then writes a snapshot at
 * that cursor and calls ring_wake. */
void ring_reset(struct ring *r, uint64_t cursor);

void ring_set_state(struct ring *r, enum ring_state state);
void ring_set_row_count(struct ring *r, uint64_t rows);
void ring_heartbeat(struct ring *r);

/* The last upstream error, one line, for /feeds and the 503 body; NULL or
 * "" clears it.  Written under a sequence count (err_seq, odd while being
 * written) so a reader never sees half of two messages. */
void ring_set_error(struct ring *r, const char *msg);

/* The upstream confirmed the feed complete up to now (a progress row, a
 * keepalive, a commit): the freshness that stall detection measures.
 * stall_ms: how long without one before readers call the feed stalled
 * (0: never). */
void ring_confirmed(struct ring *r);
void ring_set_stall_ms(struct ring *r, uint32_t stall_ms);

/* ---- reader (responder) ---- */

/* Map DIR/FEED.ring read-only.  Refuses a segment of another layout
 * version, a truncated or corrupt one, with a message naming the file and
 * the reason. */
int ring_open(const char *dir, const char *feed, struct ring **out, char *err, size_t errlen);

/* True when DIR/FEED.ring now names another segment than the mapped one
 * (the daemon restarted): the caller should ring_close and ring_open. */
bool ring_replaced(struct ring *r);

void ring_info(struct ring *r, struct ring_info *out);
const char *ring_feed(const struct ring *r);
const char *ring_source(const struct ring *r);
/* The column-list JSON; stable until ring_close. */
const char *ring_columns(const struct ring *r);

/* Find the seq of the first batch after cursor.  RING_OK, RING_GONE
 * (cursor older than the floor), RING_UNKNOWN (not a batch boundary),
 * RING_AHEAD (newer than the head). */
int ring_lookup(struct ring *r, uint64_t cursor, uint64_t *seq_after);

/* Position lookup (see Positions above): the seq of the first batch whose
 * cursor is above pos, in the history of identity ident.  RING_OK (for a
 * pos past the frontier *seq_after is the head: batches at or below pos
 * may still come, the reader skips them), RING_GONE (pos older than the
 * floor), RING_UNKNOWN (another history, or pos strictly inside a merged
 * record). */
int ring_seek(struct ring *r, uint32_t ident, uint64_t pos, uint64_t *seq_after);

/* The highest position through which a reader at pos, that has examined
 * every batch below seq, holds the feed: the frontier, or, while batches
 * from seq on are published, just below the first of them (its lo); never
 * below pos.  The reply's cursor. */
uint64_t ring_complete(struct ring *r, uint64_t seq, uint64_t pos);

/* The bytes the records [from, to) take in the data area (headers and
 * any skip at the area's end included): what reading them costs.  0 when
 * from >= to or a record there is no longer (or not yet) held. */
uint64_t ring_span_bytes(struct ring *r, uint64_t from, uint64_t to);

/* The identity of the history held: a hash of the upstream identity text
 * and the feed definition (never 0 once known).  Cursors carry it. */
uint32_t ring_ident(struct ring *r);

/* Copy record seq into buf (replacing its contents).  RING_OK, RING_GONE
 * (dropped or overwritten while copying), RING_AHEAD (not yet published). */
int ring_read(struct ring *r, uint64_t seq, struct ring_buf *buf, struct ring_rec *rec);

/* Sleep until a batch with seq >= want exists, or timeout_ms passes
 * (negative: forever).  RING_OK, RING_TIMEOUT; EINTR returns RING_TIMEOUT
 * early.  Does not poll: it sleeps on a futex the writer wakes. */
int ring_wait(struct ring *r, uint64_t want, int timeout_ms);

/* The futex word ring_wait sleeps on and its current value, for callers
 * that multiplex several rings (futex_waitv). */
const void *ring_wake_word(struct ring *r, uint32_t *value);

/* Map the current snapshot.  On RING_OK data and len hold the snapshot bytes
 * (valid until ring_snapshot_release), cursor its cursor and seq_after the
 * first batch after it. */
struct ring_snapshot {
	const char *data;
	size_t len;
	uint64_t cursor;
	uint32_t ident; /* of the history it starts */
	uint64_t seq_after;
	void *map_;
	size_t map_len_;
};
int ring_snapshot_open(struct ring *r, struct ring_snapshot *snap, char *err, size_t errlen);
void ring_snapshot_release(struct ring_snapshot *snap);

/* Unmap; the writer also marks the segment CLOSED and, if remove is set,
 * unlinks its files. */
void ring_close(struct ring *r, bool remove);

const char *ring_strstatus(int status);
/* "starting", "live", "down", "closed"; "unknown" for any other value
 * (a corrupt header). */
const char *ring_strstate(enum ring_state state);

/* Copy the writer's last error message into buf ("" when none). */
void ring_error(struct ring *r, char *buf, size_t len);

#endif
