/*
 * clock.h - the one monotonic clock every program uses: CLOCK_MONOTONIC,
 * immune to wall-clock steps, in milliseconds (deadlines, timers,
 * heartbeats) and nanoseconds (latencies).  Wall-clock time (log lines,
 * replication timestamps) is not this clock's business.
 */
#ifndef TAILGATE_CLOCK_H
#define TAILGATE_CLOCK_H

#include <stdint.h>

/* Nanoseconds since an arbitrary fixed point (boot). */
int64_t clock_mono_ns(void);
/* The same in milliseconds. */
int64_t clock_mono_ms(void);

#endif
