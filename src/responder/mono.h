/*
 * mono.h - the responder's monotonic clock, in milliseconds (deadlines)
 * and nanoseconds (wake latency).  CLOCK_MONOTONIC: immune to wall-clock
 * steps.
 */
#ifndef TAILGATE_MONO_H
#define TAILGATE_MONO_H

#include <stdint.h>

int64_t mono_ms(void);
int64_t mono_ns(void);

#endif
