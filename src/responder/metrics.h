/*
 * metrics.h - the responder's counters, in Prometheus text format.
 *
 * The counters live in one shared anonymous mapping created before
 * --workers forks, so every worker of one tailgate-fcgi adds to the same
 * numbers and any of them answers /metrics for the group.  (Separate
 * processes started by spawn-fcgi each count their own; the pid label
 * tells them apart.)  All updates are relaxed atomics.
 */
#ifndef TAILGATE_METRICS_H
#define TAILGATE_METRICS_H

#include "buf.h"

#include <stdint.h>

enum metrics_kind {
	MK_SNAPSHOT,
	MK_LONGPOLL,
	MK_SSE,
	MK_FEEDS,
	MK_METRICS,
	MK_HEALTHZ,
	MK_OTHER,
	MK_N
};

/* Map the counters; call once, before forking workers.  Dies on failure. */
void metrics_init(void);

void metrics_request(enum metrics_kind kind, int status);
void metrics_parked(int delta); /* long-poll requests parked now */
void metrics_sse(int delta);    /* SSE streams open now */
void metrics_served(uint64_t batches, uint64_t bytes);
void metrics_render(void); /* one render for a group of waiters */
/* Seconds from the ring moving (the parking lot seeing it) to a reply
 * written to the request's connection. */
void metrics_wake_latency(double seconds);

/* Append the text exposition format. */
void metrics_render_text(struct bbuf *out);

#endif
