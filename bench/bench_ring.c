/*
 * bench_ring.c - what the feed ring costs: publish rate and wake-up latency.
 *
 *   publish rate   one writer appends batches of 100 B, 64 KiB and 1 MiB to
 *                  a 64 MiB ring and calls ring_wake after every append (the
 *                  daemon wakes once per upstream timestamp), alone and with
 *                  reader processes attached that copy every batch out
 *                  (ring_read, ring_wait when caught up); batches/s, MB/s.
 *                  One more line for 100 B without the wake.
 *   wake latency   N waiter processes (not threads: responders are
 *                  processes) block in ring_wait.  The writer stores a
 *                  CLOCK_MONOTONIC stamp in a batch, appends it and calls
 *                  ring_wake; each waiter, once running, records now - stamp
 *                  into a shared anonymous mapping.  The writer publishes
 *                  the next batch only after every waiter has reported and
 *                  200 us more, so that waiters are asleep again.  Prints
 *                  p50/p99/max over every (waiter, wake) sample, of the
 *                  last waiter per wake (everyone running), and the cost of
 *                  ring_wake itself.
 *
 * Not a test: it prints figures, and every wait in it is bounded.
 *
 *   bench_ring [--quick] [--waiters N] [--wakes N] [--readers N]
 */
#include "clock.h"
#include "ring.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define RING_BYTES (64ull << 20)
#define WAKE_GAP_NS 200000   /* after all waiters reported, before the next wake */
#define CHECKIN_TIMEOUT_S 10 /* a waiter that does not report in this long failed */
#define ALARM_S 900          /* the whole run, whatever happens */

static struct {
	bool quick;
	int waiters;
	int wakes;
	int readers;
} opt = {false, 100, 10000, 4};

static char dir[256];
static int feed_no;

static uint64_t
now_ns(void)
{
	return (uint64_t)clock_mono_ns();
}

static void
sleep_ns(uint64_t ns)
{
	struct timespec ts = {(time_t)(ns / 1000000000ull), (long)(ns % 1000000000ull)};

	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

static struct ring *
new_ring(char *feed, size_t feedlen)
{
	struct ring_config cfg = {0};
	struct ring *w;
	char err[512];

	snprintf(feed, feedlen, "bench%d", feed_no++);
	cfg.dir = dir;
	cfg.feed = feed;
	cfg.source = "test";
	cfg.data_size = RING_BYTES;
	cfg.base_cursor = 0;
	if (ring_create(&cfg, &w, err, sizeof(err)) != RING_OK) {
		fprintf(stderr, "bench_ring: %s\n", err);
		exit(1);
	}
	ring_set_state(w, RING_STATE_LIVE);
	return w;
}

static void *
shared_map(size_t len)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED) {
		fprintf(stderr, "bench_ring: mmap %zu bytes: %s\n", len, strerror(errno));
		exit(1);
	}
	return p;
}

static int
reap(pid_t *pids, int n)
{
	int bad = 0;

	for (int i = 0; i < n; i++) {
		int status;
		if (pids[i] <= 0)
			continue;
		while (waitpid(pids[i], &status, 0) < 0 && errno == EINTR)
			;
		if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
			bad++;
	}
	return bad;
}

/* ---- publish rate ---------------------------------------------------------- */

struct reader_counts {
	atomic_uint ready;
	_Atomic uint64_t reads;
	_Atomic uint64_t laps;
	_Atomic uint64_t bytes;
};

/* A reader process: copy every batch out, as a responder does. */
static void
copy_reader(const char *feed, struct reader_counts *rc)
{
	struct ring_buf buf = {0};
	struct ring_info info;
	struct ring_rec rec;
	struct ring *r;
	char err[512];
	uint64_t next, reads = 0, laps = 0, bytes = 0;

	if (ring_open(dir, feed, &r, err, sizeof(err)) != RING_OK) {
		fprintf(stderr, "reader: %s\n", err);
		_exit(1);
	}
	ring_info(r, &info);
	next = info.head_seq; /* past the warm-up batches */
	atomic_fetch_add(&rc->ready, 1);
	for (;;) {
		int st = ring_read(r, next, &buf, &rec);
		if (st == RING_OK) {
			reads++;
			bytes += rec.len;
			next++;
		} else if (st == RING_GONE) {
			laps++;
			ring_info(r, &info);
			next = info.tail_seq;
		} else if (st == RING_AHEAD) {
			ring_info(r, &info);
			if (info.state == RING_STATE_CLOSED) {
				ring_info(r, &info);
				if (next >= info.head_seq)
					break;
				continue;
			}
			ring_wait(r, next, 100);
		} else {
			fprintf(stderr, "reader: ring_read: %s\n", ring_strstatus(st));
			_exit(1);
		}
	}
	atomic_fetch_add(&rc->reads, reads);
	atomic_fetch_add(&rc->laps, laps);
	atomic_fetch_add(&rc->bytes, bytes);
	free(buf.data);
	ring_close(r, false);
	_exit(0);
}

static void
bench_publish(const char *label, size_t size, uint64_t n, int readers, bool wake)
{
	struct reader_counts *rc = shared_map(sizeof(*rc));
	pid_t *pids = calloc((size_t)(readers > 0 ? readers : 1), sizeof(*pids));
	char *payload = malloc(size);
	char feed[32];
	struct ring *w = new_ring(feed, sizeof(feed));
	uint64_t t0, t1;
	int bad;

	if (pids == NULL || payload == NULL) {
		fprintf(stderr, "bench_ring: out of memory\n");
		exit(1);
	}
	for (size_t i = 0; i < size; i++)
		payload[i] = (char)('a' + i % 26);

	/* Warm-up: write the whole data area once, so the timed part runs
	 * on mapped pages (steady state) rather than first-touch faults. */
	struct iovec iov = {payload, size};
	uint64_t cursor = 0, warm = RING_BYTES / (size + 24) + 16;
	for (uint64_t i = 0; i < warm; i++) {
		if (ring_append(w, ++cursor, &iov, 1) != RING_OK) {
			fprintf(stderr, "bench_ring: warm-up append failed\n");
			exit(1);
		}
	}
	fflush(stdout);
	for (int i = 0; i < readers; i++) {
		pids[i] = fork();
		if (pids[i] == 0)
			copy_reader(feed, rc);
		if (pids[i] < 0) {
			fprintf(stderr, "bench_ring: fork: %s\n", strerror(errno));
			exit(1);
		}
	}
	t0 = now_ns();
	while (atomic_load(&rc->ready) < (unsigned)readers && now_ns() - t0 < 10000000000ull)
		sleep_ns(1000000);

	t0 = now_ns();
	for (uint64_t i = 0; i < n; i++) {
		int st = ring_append(w, ++cursor, &iov, 1);
		if (st != RING_OK) {
			fprintf(stderr, "bench_ring: append: %s\n", ring_strstatus(st));
			exit(1);
		}
		if (wake)
			ring_wake(w);
	}
	t1 = now_ns();
	ring_set_state(w, RING_STATE_CLOSED);
	ring_wake(w);
	bad = reap(pids, readers);

	double s = (double)(t1 - t0) / 1e9;
	printf("  %-8s %-7s %7d %9" PRIu64 " %12.0f %9.1f", label, wake ? "yes" : "no", readers, n,
	       (double)n / s, (double)n * (double)size / s / 1e6);
	if (readers > 0)
		printf("   readers copied %.1f%% of batches, %" PRIu64 " laps%s",
		       100.0 * (double)atomic_load(&rc->reads) / ((double)n * readers),
		       atomic_load(&rc->laps), bad ? ", SOME READERS FAILED" : "");
	printf("\n");
	ring_close(w, true);
	munmap(rc, sizeof(*rc));
	free(pids);
	free(payload);
}

/* ---- wake latency ------------------------------------------------------------ */

struct lat_shared {
	atomic_uint ready;
	atomic_uint done; /* reports, all waiters, all wakes */
	atomic_uint failures;
	uint32_t ns[]; /* [wake * waiters + waiter], saturated at 2^32-1 */
};

static void
waiter(const char *feed, struct lat_shared *ls, int id, int waiters, int wakes)
{
	struct ring_buf buf = {0};
	struct ring_rec rec;
	struct ring *r;
	char err[512];

	if (ring_open(dir, feed, &r, err, sizeof(err)) != RING_OK) {
		fprintf(stderr, "waiter %d: %s\n", id, err);
		atomic_fetch_add(&ls->failures, 1);
		_exit(1);
	}
	atomic_fetch_add(&ls->ready, 1);
	for (int k = 0; k < wakes; k++) {
		int st = ring_wait(r, (uint64_t)k, CHECKIN_TIMEOUT_S * 1000);
		uint64_t t = now_ns(), stamp;
		if (st != RING_OK || ring_read(r, (uint64_t)k, &buf, &rec) != RING_OK ||
		    rec.len < sizeof(stamp)) {
			atomic_fetch_add(&ls->failures, 1);
			break;
		}
		memcpy(&stamp, buf.data, sizeof(stamp));
		uint64_t d = t - stamp;
		ls->ns[(size_t)k * (size_t)waiters + (size_t)id] =
		        d > UINT32_MAX ? UINT32_MAX : (uint32_t)d;
		/* The writer reads the sample after seeing the count. */
		atomic_fetch_add_explicit(&ls->done, 1, memory_order_release);
	}
	free(buf.data);
	ring_close(r, false);
	_exit(0);
}

static int
cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return x < y ? -1 : x > y;
}

static double
pct_us(const uint32_t *sorted, size_t n, double p)
{
	size_t i = (size_t)(p / 100.0 * (double)(n - 1) + 0.5);

	return sorted[i] / 1e3;
}

static void
bench_wake(int waiters, int wakes)
{
	size_t nsamples = (size_t)waiters * (size_t)wakes;
	size_t len = sizeof(struct lat_shared) + nsamples * sizeof(uint32_t);
	struct lat_shared *ls = shared_map(len);
	pid_t *pids = calloc((size_t)waiters, sizeof(*pids));
	uint32_t *wake_cost = calloc((size_t)wakes, sizeof(uint32_t));
	uint32_t *last = calloc((size_t)wakes, sizeof(uint32_t));
	char payload[100] = {0};
	char feed[32];
	struct ring *w = new_ring(feed, sizeof(feed));
	int published = 0, bad;
	uint64_t t0;

	if (pids == NULL || wake_cost == NULL || last == NULL) {
		fprintf(stderr, "bench_ring: out of memory\n");
		exit(1);
	}
	fflush(stdout);
	for (int i = 0; i < waiters; i++) {
		pids[i] = fork();
		if (pids[i] == 0)
			waiter(feed, ls, i, waiters, wakes);
		if (pids[i] < 0) {
			fprintf(stderr, "bench_ring: fork: %s\n", strerror(errno));
			exit(1);
		}
	}
	t0 = now_ns();
	while (atomic_load(&ls->ready) < (unsigned)waiters &&
	       now_ns() - t0 < CHECKIN_TIMEOUT_S * 1000000000ull)
		sleep_ns(1000000);
	sleep_ns(100000000); /* let them all reach futex_wait */

	for (int k = 0; k < wakes; k++) {
		uint64_t want = (uint64_t)k * (uint64_t)waiters, tw = now_ns();
		while (atomic_load_explicit(&ls->done, memory_order_acquire) < want) {
			if (atomic_load(&ls->failures) > 0 ||
			    now_ns() - tw > CHECKIN_TIMEOUT_S * 1000000000ull)
				goto stop;
			sleep_ns(20000);
		}
		sleep_ns(WAKE_GAP_NS);

		uint64_t stamp = now_ns();
		memcpy(payload, &stamp, sizeof(stamp));
		struct iovec iov = {payload, sizeof(payload)};
		if (ring_append(w, (uint64_t)k + 1, &iov, 1) != RING_OK) {
			fprintf(stderr, "bench_ring: append failed\n");
			goto stop;
		}
		ring_wake(w);
		wake_cost[k] = (uint32_t)(now_ns() - stamp);
		published++;
	}
	{
		uint64_t want = (uint64_t)wakes * (uint64_t)waiters, tw = now_ns();
		while (atomic_load_explicit(&ls->done, memory_order_acquire) < want &&
		       atomic_load(&ls->failures) == 0 &&
		       now_ns() - tw < CHECKIN_TIMEOUT_S * 1000000000ull)
			sleep_ns(100000);
	}
stop:
	ring_set_state(w, RING_STATE_CLOSED);
	ring_wake(w);
	bad = reap(pids, waiters);

	unsigned done = atomic_load(&ls->done);
	if (published < wakes || done < nsamples || bad) {
		printf("wake latency (%d waiters): FAILED after %d wakes, %u of %zu reports, %d "
		       "waiters failed\n",
		       waiters, published, done, nsamples, bad);
	} else {
		for (int k = 0; k < wakes; k++) {
			uint32_t m = 0;
			for (int i = 0; i < waiters; i++)
				if (ls->ns[(size_t)k * (size_t)waiters + (size_t)i] > m)
					m = ls->ns[(size_t)k * (size_t)waiters + (size_t)i];
			last[k] = m;
		}
		qsort(ls->ns, nsamples, sizeof(uint32_t), cmp_u32);
		qsort(last, (size_t)wakes, sizeof(uint32_t), cmp_u32);
		qsort(wake_cost, (size_t)wakes, sizeof(uint32_t), cmp_u32);
		printf("wake latency (%d waiter process%s, %d wakes): p50 %.1f us p90 %.1f us p99 "
		       "%.1f us max %.1f us\n",
		       waiters, waiters == 1 ? "" : "es", wakes, pct_us(ls->ns, nsamples, 50),
		       pct_us(ls->ns, nsamples, 90), pct_us(ls->ns, nsamples, 99),
		       pct_us(ls->ns, nsamples, 100));
		if (waiters > 1)
			printf("  last of the %d running: p50 %.1f us p99 %.1f us max %.1f us\n",
			       waiters, pct_us(last, (size_t)wakes, 50),
			       pct_us(last, (size_t)wakes, 99), pct_us(last, (size_t)wakes, 100));
		printf("  append + ring_wake in the writer: p50 %.1f us p99 %.1f us max %.1f us\n",
		       pct_us(wake_cost, (size_t)wakes, 50), pct_us(wake_cost, (size_t)wakes, 99),
		       pct_us(wake_cost, (size_t)wakes, 100));
	}
	ring_close(w, true);
	munmap(ls, len);
	free(pids);
	free(wake_cost);
	free(last);
}

/* ---- main ------------------------------------------------------------------- */

static void
usage(FILE *f)
{
	fprintf(f, "usage: bench_ring [--quick] [--waiters N] [--wakes N] [--readers N]\n"
	           "  --quick      about a tenth of the work (wakes 1000)\n"
	           "  --waiters N  processes blocked in ring_wait, default 100\n"
	           "  --wakes N    wakes measured, default 10000\n"
	           "  --readers N  reader processes attached in the publish runs, default 4\n");
}

int
main(int argc, char **argv)
{
	static const struct option longopts[] = {
	        {"quick", no_argument, NULL, 'q'},       {"waiters", required_argument, NULL, 'w'},
	        {"wakes", required_argument, NULL, 'k'}, {"readers", required_argument, NULL, 'r'},
	        {"help", no_argument, NULL, 'h'},        {NULL, 0, NULL, 0},
	};
	bool wakes_set = false;
	int c;

	while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		switch (c) {
		case 'q':
			opt.quick = true;
			break;
		case 'w':
			opt.waiters = atoi(optarg);
			break;
		case 'k':
			opt.wakes = atoi(optarg);
			wakes_set = true;
			break;
		case 'r':
			opt.readers = atoi(optarg);
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind != argc || opt.waiters < 1 || opt.waiters > 10000 || opt.wakes < 1 ||
	    opt.readers < 0 || opt.readers > 1000) {
		usage(stderr);
		return 2;
	}
	if (opt.quick && !wakes_set)
		opt.wakes = 1000;
	alarm(ALARM_S);
	setvbuf(stdout, NULL, _IOLBF, 0);

	const char *tmp = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : getenv("TMPDIR");
	snprintf(dir, sizeof(dir), "%s/bench_ring.XXXXXX", tmp && *tmp ? tmp : "/tmp");
	if (mkdtemp(dir) == NULL) {
		fprintf(stderr, "bench_ring: mkdtemp %s: %s\n", dir, strerror(errno));
		return 1;
	}

	uint64_t scale = opt.quick ? 10 : 1;
	printf("bench_ring: %ld CPUs, ring of 64 MiB data / 262144 index slots in %s, "
	       "written once before timing\n",
	       sysconf(_SC_NPROCESSORS_ONLN), dir);
	printf("publish rate (one writer; readers are processes copying every batch):\n");
	printf("  %-8s %-7s %7s %9s %12s %9s\n", "payload", "wake", "readers", "batches",
	       "batches/s", "MB/s");
	bench_publish("100 B", 100, 2000000 / scale, 0, false);
	bench_publish("100 B", 100, 2000000 / scale, 0, true);
	bench_publish("100 B", 100, 2000000 / scale, opt.readers, true);
	bench_publish("64 KiB", 64 << 10, 20000 / scale, 0, true);
	bench_publish("64 KiB", 64 << 10, 20000 / scale, opt.readers, true);
	bench_publish("1 MiB", 1 << 20, 2000 / scale, 0, true);
	bench_publish("1 MiB", 1 << 20, 2000 / scale, opt.readers, true);

	bench_wake(1, opt.wakes);
	bench_wake(opt.waiters, opt.wakes);

	rmdir(dir);
	return 0;
}
