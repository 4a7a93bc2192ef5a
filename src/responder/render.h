/*
 * render.h - what the responder sends: reply bytes, and the reply a
 * waiter gets from its position, through a small cache of recent renders.
 *
 * Bytes.  An unfiltered batch is copied as the daemon stored it
 * (batch_view: no JSON parse, no re-encode).  A filtered batch is rebuilt
 * from the rows its row index delimits that pass the filter; a batch with
 * no passing row is skipped.  The byte functions append to a struct bbuf
 * (buf.h, dies on allocation failure) and are safe from any thread.
 *
 * Replies for waiters.  render_next reads a waiter's batches from its
 * position (seq_after, cursor) up to a head and advances the waiter past
 * them; it answers 410 for a cursor no longer in the ring's history (for
 * SSE: a fresh snapshot in-band, as EventSource cannot follow a 410).
 * A waiter far behind gets the net effect of its batches as one batch
 * instead (netbatch.h), or 410 when a snapshot costs less.
 * render_snapshot is a request without a cursor.  None of them touches a
 * connection: the caller hands the reply to the writers (writer.h).
 *
 * The cache.  The watcher renders once per group of waiters, but requests
 * served one by one (a long-poll re-polling behind the head, an SSE stream
 * whose writer fell behind) ask for the same ranges in a row under load.
 * render_next_shared keeps the last RENDER_CACHE_N replies by (segment,
 * position, head, format, filter key), so they share one.  A hit still
 * checks the cursor's history; a new head misses, so nobody gets a reply
 * older than a render would give.  A cached reply keeps its gzip form
 * with it (reply.h), so a hit shares the compression too.  struct render
 * is one per process (in struct responder); its functions are safe from
 * any thread.
 */
#ifndef TAILGATE_RENDER_H
#define TAILGATE_RENDER_H

#include "batch.h"
#include "feeds.h"
#include "filter.h"
#include "ring.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#define RENDER_MAX_REPLY (4u << 20) /* stop adding batches past this many bytes */

/* What render_range saw. */
struct render_range {
	int n_batches;        /* batches appended (after filtering) */
	uint64_t next_seq;    /* first seq not examined */
	uint64_t last_cursor; /* cursor of the last examined batch (unchanged if none) */
	size_t bytes;         /* batch bytes appended */
};

/* Append the batches with seq in [from, head) (or fewer, once max_bytes is
 * passed), comma-separated, filtered by f (NULL: all).  With sse set, each
 * batch becomes one event ("id: C\ndata: JSON\n\n") instead.  scratch is
 * the caller's read buffer.  Returns RING_OK, RING_GONE (a batch was
 * dropped meanwhile; out may hold a partial result to discard) or RING_ERR
 * (a corrupt record). */
int render_range(struct ring *r, uint64_t from, uint64_t head, const struct filter *f, bool sse,
                 size_t max_bytes, struct bbuf *out, struct ring_buf *scratch,
                 struct render_range *rr, uint64_t start_cursor);

/* Append one batch (a validated view) filtered by f; false (nothing
 * appended) when f passes no row.  With f == NULL the JSON is copied. */
bool render_batch(struct bbuf *out, const struct batch_view *v, const struct filter *f,
                  uint64_t cursor);

/* Append one SSE event: "event: NAME\n" (when name), "id: ID\n", then
 * data lines (a newline inside the JSON starts another data: line), "\n". */
void render_sse_event(struct bbuf *out, const char *name, uint64_t id, uint32_t ident,
                      const char *json, size_t len);

/* Append s as a JSON string (quotes included). */
void render_json_string(struct bbuf *out, const char *s);

/* FastCGI response head: "Status: ...\r\n" and the headers, then "\r\n". */
void render_head(struct bbuf *out, int status, const char *content_type, const char *cache_control,
                 const char *extra);

/* A JSON error reply, head included: {"error":code,"message":text}. */
void render_error(struct bbuf *out, int status, const char *code, const char *message);

const char *render_reason(int status);

/* ---- replies for waiters ---- */

struct reply;
struct waiter;

#define RENDER_CACHE_N 8

struct render_cache_ent {
	struct seg *seg; /* not referenced: only compared (with seg_id), never followed */
	uint64_t seg_id, seq_after, cursor, head;
	bool sse;
	char *key;
	struct reply *r; /* referenced */
	uint64_t next_seq, last_cursor;
};

struct render {
	int cache_max_age_s; /* max-age of replies holding batches */
	pthread_mutex_t mu;  /* the cache's */
	struct render_cache_ent cache[RENDER_CACHE_N];
	unsigned next; /* the entry to replace next */
};

void render_init(struct render *rd, int cache_max_age_s);
void render_free(struct render *rd);

/* What w gets now from its position up to head: a reply, with w advanced
 * past what it holds, or NULL with w advanced past batches none of which
 * passed its filter (nothing to send: park it again).  Errors are
 * replies: 410 cursor_gone (SSE: a new snapshot, in-band), 503. */
struct reply *render_next(const struct render *rd, struct waiter *w, uint64_t head,
                          struct ring_buf *scratch);
/* render_next through the cache. */
struct reply *render_next_shared(struct render *rd, struct waiter *w, uint64_t head,
                                 struct ring_buf *scratch);

/* The feed's snapshot and the batches after it, for w (filtered by its
 * fspec): JSON {"cursor","columns","batches"} with its head, or for SSE an
 * "event: snapshot" and one event per later batch.  Sets w's position to
 * after what it holds.  NULL when the feed has no readable snapshot. */
struct reply *render_snapshot(struct waiter *w, struct ring_buf *scratch);

/* A long-poll's timeout (an empty batch list at its cursor, no-store) or
 * an SSE keep-alive comment. */
struct reply *render_timeout_reply(const struct render *rd, const struct waiter *w);
/* render_error as a reply. */
struct reply *render_error_reply(int status, const char *code, const char *message);
/* 410 cursor_gone for a long-poll at cursor. */
struct reply *render_gone_reply(uint64_t cursor, uint32_t ident);

/* The feed-state header lines for a reply of s's feed, as the ring says
 * now (replies are rendered once and shared, so the state is added when
 * each is written, not stored in it): nothing while the feed is live and
 * confirmed, else "Tailgate-Feed-State: STATE\r\n" (the /feeds state:
 * stalled, down, ...), "X-Accel-Expires: 0\r\n" (no nginx cache keeps it)
 * and, once the upstream ever confirmed the feed, "Tailgate-Lag:
 * SECONDS\r\n".  Returns the length written into out (0: none);
 * RENDER_STATE_HEADERS_MAX is enough. */
#define RENDER_STATE_HEADERS_MAX 128
/* A feed's state as /feeds names it (live, stalled, down, ...). */
const char *render_state_name(const struct ring_info *info);
size_t render_state_headers(struct seg *s, char *out, size_t cap);

/* The /feeds document: every *.ring in the ring directory. */
void render_feed_list(struct feeds *fs, struct bbuf *out);

/* The daemon's gauges of its replication slots' WAL (RING_DIR/
 * tailgated.slots, written by tailgated on PostgreSQL), for /metrics. */
void render_slot_metrics(const char *ring_dir, struct bbuf *out);

/* Per-feed gauges for /metrics: state and freshness lag. */
void render_feed_metrics(struct feeds *fs, struct bbuf *out);

#endif
