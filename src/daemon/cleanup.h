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

/* At the daemon's start: log a warning for each inactive leftover slot
 * (as --cleanup would list it) with the WAL it retains.  Best effort:
 * a short connect timeout, nothing when the upstream cannot be asked. */
void cleanup_warn_retained(const struct conf *conf);

#endif
