/*
 * feeds.h - the responder's attached feeds: one ring segment per name,
 * opened read-only from the ring directory on first use and reopened when
 * the daemon replaces it (ring_replaced: the daemon restarted).
 *
 * A struct feed lives for the whole process (at most FEEDS_MAX of them;
 * futex_waitv watches one word per feed).  Its current segment (struct
 * seg) is reference-counted: feeds_acquire hands out a reference the
 * caller drops with seg_release; a replaced segment is unmapped when its
 * last reference goes.  All functions are thread-safe.
 */
#ifndef TAILGATE_FEEDS_H
#define TAILGATE_FEEDS_H

#include "batch.h"
#include "filter.h"
#include "ring.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#define FEEDS_MAX 120

struct lot; /* park.c */

struct seg {
	struct ring *ring;
	uint64_t id; /* segment_id */
	struct filter_cols cols;
	_Atomic int refs;
	_Atomic int64_t pid_checked_ms; /* last kill(pid, 0) that found the writer */
};

struct feed {
	char name[RING_FEED_NAME_MAX + 1];
	int idx;
	struct seg *seg;    /* current segment or NULL (guarded by the feeds lock) */
	int64_t checked_ms; /* last ring_replaced check */
	struct lot *lot;    /* the parking lot's (guarded by its lock) */
};

void feeds_init(const char *ring_dir);
const char *feeds_dir(void);

/* Look up (attaching if needed) the feed name and take a reference on its
 * current segment.  Returns 200, 404 (no such feed: bad name or no
 * segment file) or 503 (segment unreadable), with a message in err. */
int feeds_acquire(const char *name, struct feed **feed, struct seg **seg, char *err, size_t errlen);
struct seg *seg_ref(struct seg *s);
void seg_release(struct seg *s);

/* The current segment of an attached feed, referenced (NULL if none);
 * reopens it first when the daemon replaced it and the last check is
 * older than max_age_ms. */
struct seg *feeds_current(struct feed *f, int64_t max_age_ms);

/* Attached feeds, for the parking lot's watch loop. */
int feeds_count(void);
struct feed *feeds_at(int i);

/* Is the feed serving?  false with a reason: writer dead, heartbeat stale,
 * closed, or still starting (no snapshot yet).  The writer's pid is probed
 * at most every 100 ms per segment (the heartbeat is checked every time). */
bool feeds_live(struct seg *s, struct ring_info *info, const char **why);

/* feeds_live without the ring_info when it said live in the last 100 ms. */
bool feeds_live_cached(struct seg *s, const char **why);

/* Append the /feeds document: every *.ring in the ring directory. */
void feeds_render_list(struct bbuf *out);

/* Per-feed gauges for /metrics: state and freshness lag. */
void feeds_render_metrics(struct bbuf *out);

int64_t mono_ms(void);

#endif
