/*
 * feeds.h - the responder's attached feeds: one ring segment per name,
 * opened read-only from the ring directory on first use and reopened when
 * the daemon replaces it (ring_replaced: the daemon restarted).
 *
 * A struct feed lives for the whole process (at most FEEDS_MAX of them;
 * futex_waitv watches one word per feed).  Its current segment (struct
 * seg) is reference-counted: feeds_acquire hands out a reference the
 * caller drops with seg_release; a replaced segment is unmapped when its
 * last reference goes.  The table of attached feeds is a struct feeds,
 * one per process (in struct responder); all functions are thread-safe.
 */
#ifndef TAILGATE_FEEDS_H
#define TAILGATE_FEEDS_H

#include "filter.h"
#include "ring.h"

#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#define FEEDS_MAX 120

struct seg {
	struct ring *ring;
	uint64_t id; /* segment_id */
	struct filter_cols cols;
	_Atomic int refs;
	_Atomic int64_t pid_checked_ms; /* last kill(pid, 0) that found the writer */
};

struct feed {
	char name[RING_FEED_NAME_MAX + 1];
	int idx;            /* in struct feeds' table, for ever */
	struct seg *seg;    /* current segment or NULL (guarded by the feeds lock) */
	int64_t checked_ms; /* last ring_replaced check */
};

struct feeds {
	pthread_mutex_t mu; /* the feeds lock: attaching, segment swaps */
	struct feed *table[FEEDS_MAX];
	/* Entries [0, n) are complete: published with release after the
	 * entry is written, read with acquire (feeds_count). */
	_Atomic int n;
	char ring_dir[PATH_MAX];
};

/* An empty table reading ring_dir (NULL: RING_DEFAULT_DIR). */
void feeds_init(struct feeds *fs, const char *ring_dir);
/* Detach everything (no other thread may use fs any more). */
void feeds_free(struct feeds *fs);

/* Look up (attaching if needed) the feed name and take a reference on its
 * current segment.  Returns 200, 404 (no such feed: bad name or no
 * segment file) or 503 (segment unreadable), with a message in err. */
int feeds_acquire(struct feeds *fs, const char *name, struct feed **feed, struct seg **seg,
                  char *err, size_t errlen);
struct seg *seg_ref(struct seg *s);
void seg_release(struct seg *s);

/* The current segment of an attached feed, referenced (NULL if none);
 * reopens it first when the daemon replaced it and the last check is
 * older than max_age_ms. */
struct seg *feeds_current(struct feeds *fs, struct feed *f, int64_t max_age_ms);

/* Attached feeds, for the parking lot's watch loop. */
int feeds_count(struct feeds *fs);
struct feed *feeds_at(struct feeds *fs, int i);

/* Is the feed serving?  false with a reason: writer dead, heartbeat stale,
 * closed, or still starting (no snapshot yet).  The writer's pid is probed
 * at most every 100 ms per segment (the heartbeat is checked every time). */
bool feeds_live(struct seg *s, struct ring_info *info, const char **why);

/* feeds_live without the ring_info when it said live in the last 100 ms. */
bool feeds_live_cached(struct seg *s, const char **why);

/* The names of every *.ring in the ring directory, sorted, in a
 * NULL-terminated array (feeds_free_names).  Out of memory is fatal. */
char **feeds_list_names(struct feeds *fs);
void feeds_free_names(char **names);

#endif
