/*
 * test_ring.c - unit tests of the feed ring: append, wrap, lookup,
 * snapshot replacement, reset, waiting, version mismatch and corrupt or
 * truncated segments.
 */
#include "ring.h"

#include "tap.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static char dir[256];
static char err[512];

static struct ring *
make_ring(const char *feed, uint64_t size, uint32_t slots, uint64_t base)
{
	struct ring_config cfg = {
		.dir = dir,
		.feed = feed,
		.source = "test",
		.columns_json = "[{\"name\":\"id\",\"type\":\"int8\"}]",
		.data_size = size,
		.index_slots = slots,
		.base_cursor = base,
	};
	struct ring *r = NULL;

	if (ring_create(&cfg, &r, err, sizeof(err)) != RING_OK) {
		printf("# ring_create: %s\n", err);
		exit(1);
	}
	return r;
}

/* Payload of batch with this cursor: deterministic bytes of a length
 * derived from the cursor, so readers can check them without state. */
static size_t
fill(char *buf, uint64_t cursor, size_t maxlen)
{
	size_t len = 1 + (size_t)(cursor * 2654435761u % maxlen);

	for (size_t i = 0; i < len; i++)
		buf[i] = (char)(cursor * 31 + i * 7);
	return len;
}

static int
append(struct ring *r, uint64_t cursor, size_t maxlen)
{
	static char buf[1 << 20];
	size_t len = fill(buf, cursor, maxlen);
	struct iovec iov = {buf, len};

	return ring_append(r, cursor, &iov, 1);
}

static bool
check(struct ring *r, uint64_t seq, uint64_t cursor, size_t maxlen)
{
	static char want[1 << 20];
	struct ring_buf buf = {0};
	struct ring_rec rec;
	size_t len = fill(want, cursor, maxlen);
	int rc = ring_read(r, seq, &buf, &rec);
	bool good = rc == RING_OK && rec.cursor == cursor && rec.seq == seq && buf.len == len &&
		    memcmp(buf.data, want, len) == 0;

	free(buf.data);
	return good;
}

static void
test_append_lookup(void)
{
	struct ring *w = make_ring("basic", 1 << 20, 0, 100), *r;
	struct ring_info info;
	uint64_t after;

	ok(ring_open(dir, "basic", &r, err, sizeof(err)) == RING_OK, "reader maps the segment");
	is_str(ring_feed(r), "basic", "feed name in header");
	is_str(ring_source(r), "test", "source in header");
	is_str(ring_columns(r), "[{\"name\":\"id\",\"type\":\"int8\"}]", "columns in header");

	is_int(ring_lookup(r, 100, &after), RING_OK, "base cursor is the floor");
	is_int(after, 0, "floor: next batch is seq 0");
	is_int(ring_lookup(r, 101, &after), RING_AHEAD, "cursor past an empty ring is ahead");
	is_int(ring_lookup(r, 99, &after), RING_GONE, "cursor before the floor is gone");

	for (uint64_t c = 110; c < 210; c += 10)
		ok(append(w, c, 300) == RING_OK, "append cursor %llu", (unsigned long long)c);
	is_int(append(w, 200, 300), RING_ERR, "a cursor that does not increase is refused");

	bool all = true;
	for (uint64_t s = 0; s < 10; s++)
		all &= check(r, s, 110 + s * 10, 300);
	ok(all, "every batch reads back byte-identical");
	is_int(ring_read(r, 10, &(struct ring_buf){0}, NULL), RING_AHEAD, "unpublished seq");

	all = true;
	for (uint64_t s = 0; s < 10; s++)
		all &= ring_lookup(r, 110 + s * 10, &after) == RING_OK && after == s + 1;
	ok(all, "lookup of each cursor gives the next seq");
	is_int(ring_lookup(r, 115, &after), RING_UNKNOWN, "cursor between batches is unknown");
	is_int(ring_lookup(r, 201, &after), RING_AHEAD, "cursor past the head is ahead");

	ring_info(r, &info);
	is_int(info.head_seq, 10, "head seq");
	is_int(info.head_cursor, 200, "head cursor");
	is_int(info.tail_seq, 0, "nothing dropped");
	ok(info.writer_alive, "writer is alive (our own pid)");
	is_int(info.state, RING_STATE_STARTING, "state starts as starting");
	ring_set_state(w, RING_STATE_LIVE);
	ring_set_row_count(w, 42);
	ring_info(r, &info);
	is_int(info.state, RING_STATE_LIVE, "state live");
	is_int(info.row_count, 42, "row count");

	ring_close(r, false);
	ring_close(w, true);
	ok(access("basic.ring", F_OK) != 0, "segment removed on close");
}

static void
test_wrap(void)
{
	/* 64 KiB ring, records of up to 3000 bytes: wraps many times. */
	struct ring *w = make_ring("wrap", 64 * 1024, 0, 0), *r;
	struct ring_info info;
	uint64_t after, c;

	ring_open(dir, "wrap", &r, err, sizeof(err));
	for (c = 1; c <= 5000; c++)
		if (append(w, c * 3, 3000) != RING_OK)
			break;
	is_int(c, 5001, "5000 appends into 64 KiB (no snapshot, nothing refused)");
	ring_info(r, &info);
	ok(info.tail_seq > 4900 && info.tail_seq < 5000, "oldest batches were dropped (tail %llu)",
	   (unsigned long long)info.tail_seq);

	bool all = true;
	for (uint64_t s = info.tail_seq; s < info.head_seq; s++)
		all &= check(r, s, (s + 1) * 3, 3000);
	ok(all, "every held batch reads back after wrapping");
	is_int(ring_read(r, info.tail_seq - 1, &(struct ring_buf){0}, NULL), RING_GONE,
	       "a dropped batch is gone");
	is_int(ring_lookup(r, 3, &after), RING_GONE, "the first cursor is gone");
	is_int(ring_lookup(r, info.tail_seq * 3, &after), RING_OK,
	       "the last dropped batch's cursor is the floor");
	is_int(after, info.tail_seq, "floor leads to the oldest held batch");
	is_int(ring_lookup(r, info.tail_seq * 3 - 1, &after), RING_GONE,
	       "a cursor below the floor is gone");

	ring_close(r, false);
	ring_close(w, true);
}

static void
test_index_capacity(void)
{
	/* 16 index slots: at most 14 batches held (one slot keeps the floor). */
	struct ring *w = make_ring("slots", 1 << 20, 16, 0), *r;
	struct ring_info info;
	uint64_t after;

	ring_open(dir, "slots", &r, err, sizeof(err));
	for (uint64_t c = 1; c <= 100; c++)
		append(w, c, 10);
	ring_info(r, &info);
	is_int(info.head_seq - info.tail_seq, 14, "index capacity bounds held batches");
	is_int(ring_lookup(r, 86, &after), RING_OK, "floor held by the reserved slot");
	is_int(after, 86, "floor -> oldest held");
	ok(check(r, 86, 87, 10), "oldest held reads");
	ring_close(r, false);
	ring_close(w, true);
}

static void
test_too_big(void)
{
	struct ring *w = make_ring("big", 64 * 1024, 0, 0);
	static char buf[40000];
	struct iovec iov = {buf, sizeof(buf)};

	is_int(ring_append(w, 1, &iov, 1), RING_TOO_BIG, "a record over half the ring is refused");
	ring_close(w, true);
}

static void
test_snapshot(void)
{
	struct ring *w = make_ring("snap", 64 * 1024, 0, 7), *r;
	struct ring_snapshot s1, s2;
	struct iovec iov;
	uint64_t c;
	int rc;

	ring_open(dir, "snap", &r, err, sizeof(err));
	ok(ring_snapshot_open(r, &s1, err, sizeof(err)) == RING_ERR, "no snapshot yet: error (%s)",
	   err);

	iov = (struct iovec){"state-at-7", 10};
	ok(ring_write_snapshot(w, &iov, 1, err, sizeof(err)) == RING_OK, "write first snapshot");
	ok(ring_snapshot_open(r, &s1, err, sizeof(err)) == RING_OK, "open snapshot");
	is_int(s1.cursor, 7, "snapshot cursor is the head");
	is_int(s1.seq_after, 0, "snapshot is followed by seq 0");
	ok(s1.len == 10 && memcmp(s1.data, "state-at-7", 10) == 0, "snapshot bytes");

	/* Fill until the ring would have to drop seq 0, which follows the
	 * snapshot: the writer is told to write a snapshot first. */
	for (c = 8;; c++) {
		rc = append(w, c, 2000);
		if (rc != RING_OK)
			break;
	}
	is_int(rc, RING_NEED_SNAPSHOT, "dropping the batch after the snapshot needs a snapshot");
	ok(check(r, 0, 8, 2000), "the batch after the snapshot is still held");

	iov = (struct iovec){"state-newer", 11};
	ok(ring_write_snapshot(w, &iov, 1, err, sizeof(err)) == RING_OK, "write second snapshot");
	is_int(append(w, c, 2000), RING_OK, "append proceeds after the snapshot");

	/* The reader that opened the old file keeps a consistent copy. */
	ok(s1.len == 10 && memcmp(s1.data, "state-at-7", 10) == 0,
	   "old snapshot mapping unchanged after replacement");
	ok(ring_snapshot_open(r, &s2, err, sizeof(err)) == RING_OK, "open new snapshot");
	is_int(s2.cursor, c - 1, "new snapshot cursor");
	ok(s2.len == 11 && memcmp(s2.data, "state-newer", 11) == 0, "new snapshot bytes");
	uint64_t after;
	is_int(ring_lookup(r, s2.cursor, &after), RING_OK, "new snapshot cursor is valid");
	is_int(after, s2.seq_after, "lookup agrees with the snapshot's next seq");
	ring_snapshot_release(&s1);
	ring_snapshot_release(&s2);
	ring_close(r, false);
	ring_close(w, true);
}

static void
test_reset(void)
{
	struct ring *w = make_ring("reset", 1 << 20, 0, 0), *r;
	uint64_t after;

	ring_open(dir, "reset", &r, err, sizeof(err));
	for (uint64_t c = 1; c <= 10; c++)
		append(w, c, 100);
	ring_reset(w, 1000);
	is_int(ring_lookup(r, 5, &after), RING_GONE, "old cursors are gone after reset");
	is_int(ring_lookup(r, 1000, &after), RING_OK, "reset cursor is the floor");
	is_int(after, 10, "seqs continue across a reset");
	is_int(ring_read(r, 9, &(struct ring_buf){0}, NULL), RING_GONE, "old batches are gone");
	is_int(append(w, 999, 100), RING_ERR, "cursor must exceed the reset cursor");
	is_int(append(w, 1001, 100), RING_OK, "append after reset");
	ok(check(r, 10, 1001, 100), "batch after reset reads");
	ring_close(r, false);
	ring_close(w, true);
}

struct waiter {
	struct ring *r;
	uint64_t want;
	int rc;
	double waited_ms;
};

static double
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void *
wait_thread(void *arg)
{
	struct waiter *wt = arg;
	double t0 = now_ms();

	wt->rc = ring_wait(wt->r, wt->want, 5000);
	wt->waited_ms = now_ms() - t0;
	return NULL;
}

static void
test_wait(void)
{
	struct ring *w = make_ring("wait", 1 << 20, 0, 0), *r;
	struct waiter wt;
	pthread_t th;
	double t0;
	int rc;

	ring_open(dir, "wait", &r, err, sizeof(err));
	t0 = now_ms();
	rc = ring_wait(r, 0, 200);
	is_int(rc, RING_TIMEOUT, "wait with nothing published times out");
	ok(now_ms() - t0 >= 190 && now_ms() - t0 < 2000, "after about the timeout (%.0f ms)",
	   now_ms() - t0);

	wt = (struct waiter){.r = r, .want = 0};
	pthread_create(&th, NULL, wait_thread, &wt);
	usleep(50 * 1000);
	append(w, 1, 10);
	ring_wake(w);
	pthread_join(th, NULL);
	is_int(wt.rc, RING_OK, "waiter woken by publish");
	ok(wt.waited_ms < 2000, "woken promptly (%.1f ms)", wt.waited_ms);
	is_int(ring_wait(r, 0, 0), RING_OK, "no wait when the batch already exists");

	wt = (struct waiter){.r = r, .want = 1};
	pthread_create(&th, NULL, wait_thread, &wt);
	usleep(20 * 1000);
	ring_close(w, true);
	pthread_join(th, NULL);
	is_int(wt.rc, RING_TIMEOUT, "closing the segment releases waiters");
	ok(wt.waited_ms < 2000, "released promptly (%.1f ms)", wt.waited_ms);
	ring_info(r, &(struct ring_info){0});
	ring_close(r, false);
}

static void
test_replaced(void)
{
	struct ring *w1 = make_ring("repl", 1 << 16, 0, 0), *r, *w2;

	ring_open(dir, "repl", &r, err, sizeof(err));
	ok(!ring_replaced(r), "fresh mapping is current");
	w2 = make_ring("repl", 1 << 16, 0, 0);
	ok(ring_replaced(r), "a new segment renamed into place is noticed");
	ring_close(w1, true); /* must not remove w2's files */
	ok(access("repl.ring", F_OK) == 0, "old writer does not unlink the new segment");
	ring_close(r, false);
	ring_close(w2, true);
}

static void
patch(const char *path, off_t off, const void *bytes, size_t n)
{
	int fd = open(path, O_WRONLY);

	if (fd < 0 || pwrite(fd, bytes, n, off) != (ssize_t)n)
		exit(1);
	close(fd);
}

static void
test_bad_segments(void)
{
	struct ring *w, *r = NULL;
	uint32_t v = RING_LAYOUT_VERSION + 1;
	char path[600];

	snprintf(path, sizeof(path), "%s/bad.ring", dir);

	w = make_ring("bad", 1 << 16, 0, 0);
	patch(path, 8, &v, sizeof(v)); /* layout_version follows the 8-byte magic */
	ok(ring_open(dir, "bad", &r, err, sizeof(err)) == RING_ERR && r == NULL,
	   "another layout version is refused");
	ok(strstr(err, "layout version") != NULL, "with a clear message: %s", err);
	ring_close(w, true);

	w = make_ring("bad", 1 << 16, 0, 0);
	patch(path, 0, "GARBAGE!", 8);
	ok(ring_open(dir, "bad", &r, err, sizeof(err)) == RING_ERR, "bad magic is refused");
	ok(strstr(err, "not a tailgate ring") != NULL, "message: %s", err);
	ring_close(w, true);

	w = make_ring("bad", 1 << 16, 0, 0);
	ok(truncate(path, 100) == 0, "truncate segment to 100 bytes");
	ok(ring_open(dir, "bad", &r, err, sizeof(err)) == RING_ERR, "truncated header is refused");
	ok(strstr(err, "truncated") != NULL, "message: %s", err);
	ring_close(w, true);

	w = make_ring("bad", 1 << 16, 0, 0);
	ok(truncate(path, 8192) == 0, "truncate segment body");
	ok(ring_open(dir, "bad", &r, err, sizeof(err)) == RING_ERR, "truncated body is refused");
	ok(strstr(err, "truncated") != NULL || strstr(err, "corrupt") != NULL, "message: %s", err);
	ring_close(w, true);

	w = make_ring("bad", 1 << 16, 0, 0);
	uint64_t huge = 3; /* index_off field: not page-consistent with the rest */
	patch(path, 8 + 4 + 4 + 8 + 8 + 8, &huge, sizeof(huge));
	ok(ring_open(dir, "bad", &r, err, sizeof(err)) == RING_ERR, "inconsistent layout refused");
	ok(strstr(err, "corrupt") != NULL, "message: %s", err);
	ring_close(w, true);

	ok(ring_open(dir, "missing", &r, err, sizeof(err)) == RING_ERR, "missing segment: error");
	ok(strstr(err, "No such file") != NULL, "message: %s", err);
	ok(ring_open(dir, "../etc", &r, err, sizeof(err)) == RING_ERR, "path in feed name refused");
	ok(strstr(err, "invalid feed name") != NULL, "message: %s", err);
}

int
main(void)
{
	snprintf(dir, sizeof(dir), "/tmp/tailgate-test-ring.XXXXXX");
	if (mkdtemp(dir) == NULL) {
		perror("mkdtemp");
		return 1;
	}
	if (chdir(dir) != 0)
		return 1;

	test_append_lookup();
	test_wrap();
	test_index_capacity();
	test_too_big();
	test_snapshot();
	test_reset();
	test_wait();
	test_replaced();
	test_bad_segments();

	if (chdir("/") != 0 || rmdir(dir) != 0)
		printf("# leftover files in %s\n", dir);
	return tap_done();
}
