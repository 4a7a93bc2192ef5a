/*
 * cleanup.h - tailgated --cleanup: what tailgated created upstream and the
 * configuration no longer names (cleanup.c).
 */
#ifndef TAILGATE_CLEANUP_H
#define TAILGATE_CLEANUP_H

#include "conf.h"

#include <stdbool.h>
#include <stdint.h>
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

/*
 * Each check of the watch also resolves every feed's table = to its OID
 * (0: no such relation), for a PostgreSQL session to learn that the table
 * it streams was dropped, dropped and created again, or renamed: the
 * replication stream never says the first two, and the third only with
 * the table's next change.  Thread-safe; they never wait on the upstream.
 *
 * cleanup_watch_follow: the OID feed's session found in its catalog read,
 * which later checks also look up; called once that read returned, it
 * returns how many checks have begun so far.
 * cleanup_watch_table: the OID the newest check found for feed's table
 * (compared as configured, so a reload that changed it finds nothing
 * older), when that check began after `after` checks; false when there is
 * no such answer (yet, or the watch is off: slot_check_ms = 0).  renamed
 * gets the schema.name the followed OID had then when that is another
 * name (the table was renamed), else "".
 */
uint64_t cleanup_watch_follow(const char *feed, uint32_t oid);
bool cleanup_watch_table(const char *feed, const char *table, uint64_t after, uint32_t *oid,
                         char *renamed, size_t renamedlen);

#endif
