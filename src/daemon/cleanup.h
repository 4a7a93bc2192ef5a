/*
 * cleanup.h - tailgated --cleanup: what tailgated created upstream and the
 * configuration no longer names (cleanup.c).
 */
#ifndef TAILGATE_CLEANUP_H
#define TAILGATE_CLEANUP_H

#include "conf.h"

#include <stdbool.h>
#include <stdio.h>

/* List (drop, with drop set) the leftover slots and publications of
 * conf's upstream on out.  Returns 0, or 1 when the upstream could not be
 * asked or a drop failed (said on out). */
int cleanup_run(const struct conf *conf, bool drop, FILE *out);

/* The daemon's watch on the WAL its permanent slots retain (PostgreSQL
 * only; NULL otherwise): a thread that at once, then every
 * conf->slot_check_ms (0: never), reads the upstream's slots named
 * tailgate_... or configured, writes RING_DIR/tailgated.slots (Prometheus
 * text: tailgate_slot_retained_bytes{slot,configured,active,wal_status},
 * tailgate_slot_safe_wal_size_bytes{slot}, and when it looked) for
 * tailgate-fcgi's /metrics, and logs a warning for each inactive leftover
 * slot (as --cleanup would list it) when first seen.  Best effort: short
 * timeouts; when the upstream cannot be asked the file keeps its time. */
struct cleanup_watch;
struct cleanup_watch *cleanup_watch_start(const struct conf *conf);
/* A reloaded configuration (copied): checked again at once. */
void cleanup_watch_reload(struct cleanup_watch *w, const struct conf *conf);
/* Stop and join the thread, free w (NULL: nothing). */
void cleanup_watch_stop(struct cleanup_watch *w);

#endif
