/*
 * render.h - the bytes of the responder's replies.
 *
 * An unfiltered batch is copied as the daemon stored it (batch_view: no
 * JSON parse, no re-encode).  A filtered batch is rebuilt from the rows its
 * row index delimits that pass the filter; a batch with no passing row is
 * skipped.  Everything here appends to a struct bbuf (batch.h, dies on
 * allocation failure) and is safe to call from any thread.
 */
#ifndef TAILGATE_RENDER_H
#define TAILGATE_RENDER_H

#include "batch.h"
#include "filter.h"
#include "ring.h"

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
void render_sse_event(struct bbuf *out, const char *name, uint64_t id, const char *json,
                      size_t len);

/* Append s as a JSON string (quotes included). */
void render_json_string(struct bbuf *out, const char *s);

/* FastCGI response head: "Status: ...\r\n" and the headers, then "\r\n". */
void render_head(struct bbuf *out, int status, const char *content_type, const char *cache_control,
                 const char *extra);

/* A JSON error reply, head included: {"error":code,"message":text}. */
void render_error(struct bbuf *out, int status, const char *code, const char *message);

const char *render_reason(int status);

#endif
