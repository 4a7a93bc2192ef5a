/*
 * metrics.c - shared counters and their exposition (metrics.h).
 */
#include "metrics.h"

#include "log.h"

#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>

/* 499: the browser went away while its request was parked (nginx's code). */
static const int status_codes[] = {200, 400, 404, 405, 410, 499, 500, 503};
#define N_STATUS (sizeof(status_codes) / sizeof(status_codes[0]))
static const char *const kind_names[MK_N] = {"snapshot", "longpoll", "sse",  "feeds",
                                             "metrics",  "healthz",  "other"};
/* Upper bounds of the wake latency histogram, seconds. */
static const double buckets[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                 0.05,   0.1,   0.25,   0.5,   1.0,  2.5};
#define N_BUCKETS (sizeof(buckets) / sizeof(buckets[0]))

struct metrics {
	_Atomic uint64_t requests[MK_N][N_STATUS + 1]; /* last: other statuses */
	_Atomic int64_t parked;
	_Atomic int64_t sse;
	_Atomic uint64_t batches;
	_Atomic uint64_t bytes;
	_Atomic uint64_t renders;
	_Atomic uint64_t wake[N_BUCKETS + 1];
	_Atomic uint64_t wake_count;
	_Atomic uint64_t wake_sum_ns;
};

static struct metrics local_metrics;
static struct metrics *m = &local_metrics;

void
metrics_init(void)
{
	void *p = mmap(NULL, sizeof(struct metrics), PROT_READ | PROT_WRITE,
	               MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		fatal("cannot map the metrics counters");
	m = p;
}

void
metrics_request(enum metrics_kind kind, int status)
{
	size_t i;

	for (i = 0; i < N_STATUS; i++)
		if (status_codes[i] == status)
			break;
	atomic_fetch_add_explicit(&m->requests[kind][i], 1, memory_order_relaxed);
}

void
metrics_parked(int delta)
{
	atomic_fetch_add_explicit(&m->parked, delta, memory_order_relaxed);
}

void
metrics_sse(int delta)
{
	atomic_fetch_add_explicit(&m->sse, delta, memory_order_relaxed);
}

void
metrics_served(uint64_t batches, uint64_t bytes)
{
	atomic_fetch_add_explicit(&m->batches, batches, memory_order_relaxed);
	atomic_fetch_add_explicit(&m->bytes, bytes, memory_order_relaxed);
}

void
metrics_render(void)
{
	atomic_fetch_add_explicit(&m->renders, 1, memory_order_relaxed);
}

void
metrics_wake_latency(double seconds)
{
	size_t i;

	for (i = 0; i < N_BUCKETS; i++)
		if (seconds <= buckets[i])
			break;
	atomic_fetch_add_explicit(&m->wake[i], 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&m->wake_count, 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&m->wake_sum_ns, (uint64_t)(seconds * 1e9), memory_order_relaxed);
}

#define LOAD(x) atomic_load_explicit(&(x), memory_order_relaxed)

void
metrics_render_text(struct bbuf *out)
{
	char line[256];
	uint64_t cum = 0;

	bbuf_adds(out,
	          "# HELP tailgate_requests_total Requests answered, by endpoint and HTTP status.\n"
	          "# TYPE tailgate_requests_total counter\n");
	for (int k = 0; k < MK_N; k++)
		for (size_t i = 0; i <= N_STATUS; i++) {
			uint64_t v = LOAD(m->requests[k][i]);
			if (v == 0)
				continue;
			if (i < N_STATUS)
				snprintf(line, sizeof(line),
				         "tailgate_requests_total{endpoint=\"%s\",status=\"%d\"} "
				         "%" PRIu64 "\n",
				         kind_names[k], status_codes[i], v);
			else
				snprintf(line, sizeof(line),
				         "tailgate_requests_total{endpoint=\"%s\",status=\"other\"}"
				         " %" PRIu64 "\n",
				         kind_names[k], v);
			bbuf_adds(out, line);
		}
	snprintf(line, sizeof(line),
	         "# HELP tailgate_parked_requests Long-poll requests parked, waiting for a batch.\n"
	         "# TYPE tailgate_parked_requests gauge\ntailgate_parked_requests %" PRId64 "\n",
	         LOAD(m->parked));
	bbuf_adds(out, line);
	snprintf(line, sizeof(line),
	         "# HELP tailgate_sse_streams Server-Sent Events streams open.\n"
	         "# TYPE tailgate_sse_streams gauge\ntailgate_sse_streams %" PRId64 "\n",
	         LOAD(m->sse));
	bbuf_adds(out, line);
	snprintf(line, sizeof(line),
	         "# HELP tailgate_batches_served_total Batches written to clients (one per "
	         "client).\n"
	         "# TYPE tailgate_batches_served_total counter\ntailgate_batches_served_total "
	         "%" PRIu64 "\n",
	         LOAD(m->batches));
	bbuf_adds(out, line);
	snprintf(line, sizeof(line),
	         "# HELP tailgate_bytes_served_total Reply bytes written to clients.\n"
	         "# TYPE tailgate_bytes_served_total counter\ntailgate_bytes_served_total %" PRIu64
	         "\n",
	         LOAD(m->bytes));
	bbuf_adds(out, line);
	snprintf(line, sizeof(line),
	         "# HELP tailgate_renders_total Replies rendered for a group of parked requests.\n"
	         "# TYPE tailgate_renders_total counter\ntailgate_renders_total %" PRIu64 "\n",
	         LOAD(m->renders));
	bbuf_adds(out, line);
	bbuf_adds(
	        out,
	        "# HELP tailgate_wake_latency_seconds From the ring moving to the reply written.\n"
	        "# TYPE tailgate_wake_latency_seconds histogram\n");
	for (size_t i = 0; i <= N_BUCKETS; i++) {
		cum += LOAD(m->wake[i]);
		if (i < N_BUCKETS)
			snprintf(line, sizeof(line),
			         "tailgate_wake_latency_seconds_bucket{le=\"%g\"} %" PRIu64 "\n",
			         buckets[i], cum);
		else
			snprintf(line, sizeof(line),
			         "tailgate_wake_latency_seconds_bucket{le=\"+Inf\"} %" PRIu64 "\n",
			         cum);
		bbuf_adds(out, line);
	}
	snprintf(line, sizeof(line),
	         "tailgate_wake_latency_seconds_sum %.6f\ntailgate_wake_latency_seconds_count "
	         "%" PRIu64 "\n",
	         (double)LOAD(m->wake_sum_ns) / 1e9, LOAD(m->wake_count));
	bbuf_adds(out, line);
}
