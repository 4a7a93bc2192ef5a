/*
 * test_ring.c - unit tests of the feed ring: append, wrap, lookup,
 * snapshot replacement, reset, waiting, a writer that died, version mismatch
 * and corrupt or truncated segments, adoption by a restarted writer.
 */
#include "clock.h"
#include "ring.h"

#include "tap.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
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
	is_int(after, 11, "the new history starts one seq past the old head");
	is_int(ring_read(r, 9, &(struct ring_buf){0}, NULL), RING_GONE, "old batches are gone");
	is_int(ring_read(r, 10, &(struct ring_buf){0}, NULL), RING_GONE,
	       "a reader waiting at the old head is told GONE, not AHEAD");
	is_int(ring_wait(r, 10, 0), RING_OK, "and its wait returns at once");
	is_int(append(w, 999, 100), RING_ERR, "cursor must exceed the reset cursor");
	is_int(append(w, 1001, 100), RING_OK, "append after reset");
	ok(check(r, 11, 1001, 100), "batch after reset reads");
	is_int(ring_read(r, 10, &(struct ring_buf){0}, NULL), RING_GONE,
	       "the skipped seq stays GONE after the next append");
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
	return (double)clock_mono_ns() / 1e6;
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
	usleep(50 * 1000); /* time to block first; had it not, the checks still hold */
	append(w, 1, 10);
	ring_wake(w);
	pthread_join(th, NULL);
	is_int(wt.rc, RING_OK, "waiter woken by publish");
	ok(wt.waited_ms < 2000, "woken promptly (%.1f ms)", wt.waited_ms);
	is_int(ring_wait(r, 0, 0), RING_OK, "no wait when the batch already exists");

	wt = (struct waiter){.r = r, .want = 1};
	pthread_create(&th, NULL, wait_thread, &wt);
	usleep(20 * 1000); /* time to block first; had it not, the checks still hold */
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

/* Feed names are ASCII whatever the locale: a Latin-1 letter, which
 * isalnum() accepts in such a locale, is refused. */
static void
test_feed_names(void)
{
	char name[RING_FEED_NAME_MAX + 2];

	ok(ring_feed_name_ok("Winning_bids-2"), "letters, digits, _ and - are a feed name");
	ok(!ring_feed_name_ok(""), "the empty name is refused");
	ok(!ring_feed_name_ok("a b") && !ring_feed_name_ok("a.b") && !ring_feed_name_ok("a/b"),
	   "space, dot and slash are refused");
	ok(!ring_feed_name_ok("caf\xe9") && !ring_feed_name_ok("caf\xc3\xa9"),
	   "non-ASCII letters (Latin-1, UTF-8) are refused");
	memset(name, 'a', RING_FEED_NAME_MAX);
	name[RING_FEED_NAME_MAX] = '\0';
	ok(ring_feed_name_ok(name), "%d characters are allowed", RING_FEED_NAME_MAX);
	strcat(name, "a");
	ok(!ring_feed_name_ok(name), "%d are not", RING_FEED_NAME_MAX + 1);
}

/* ring_info reuses its kill(writer_pid, 0) for 100 ms: a writer that dies
 * must still read as gone soon after, without waiting for its heartbeat to
 * go stale (5 s). */
/* A writer process that exits without ring_close (as a killed daemon
 * would) keeps its ring here: still reachable at _exit, not a leak under
 * valgrind (tests/valgrind.sh).  volatile: the store is kept. */
static struct ring *volatile dead_writer;

static void
test_writer_gone(void)
{
	int up[2], go[2];
	struct ring_info info;
	struct ring *r;
	pid_t pid;
	char c = 0;
	int st;

	if (pipe(up) != 0 || pipe(go) != 0) {
		ok(false, "pipe: %s", strerror(errno));
		return;
	}
	pid = fork();
	if (pid == 0) {
		dead_writer = make_ring("gone", 1 << 16, 0, 0);
		ring_set_state(dead_writer, RING_STATE_LIVE);
		if (write(up[1], "u", 1) != 1 || read(go[0], &c, 1) < 0)
			_exit(1);
		_exit(0); /* dies holding the segment, as a killed daemon would */
	}
	ok(pid > 0 && read(up[0], &c, 1) == 1, "writer process created its segment");
	is_int(ring_open(dir, "gone", &r, err, sizeof(err)), RING_OK, "open the writer's segment");
	ring_info(r, &info);
	ok(info.writer_alive, "writer alive while its process runs");
	is_int(info.writer_pid, pid, "writer pid in the header");
	for (int i = 0; i < 1000; i++)
		ring_info(r, &info); /* one kill(2) for all of these */
	ok(info.writer_alive, "still alive over repeated calls");
	ok(write(go[1], "g", 1) == 1 && waitpid(pid, &st, 0) == pid, "writer process exited");
	usleep(150 * 1000); /* past the probe's reuse period, well before a stale heartbeat */
	ring_info(r, &info);
	ok(!info.writer_alive, "writer gone within 150 ms of its exit");
	ring_info(r, &info);
	ok(!info.writer_alive, "and stays gone");
	ring_close(r, false);
	unlink("gone.ring");
	unlink("gone.snap");
	close(up[0]);
	close(up[1]);
	close(go[0]);
	close(go[1]);
}

/* ---- ring_adopt: a restarted writer takes its segment back ---- */

static uint64_t
peek_u64(const char *path, off_t off)
{
	uint64_t v = 0;
	int fd = open(path, O_RDONLY);

	if (fd < 0 || pread(fd, &v, sizeof(v), off) != (ssize_t)sizeof(v))
		exit(1);
	close(fd);
	return v;
}

static void
copy_file(const char *from, const char *to)
{
	static char buf[1 << 16];
	int in = open(from, O_RDONLY), out = open(to, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	ssize_t n;

	if (in < 0 || out < 0)
		exit(1);
	while ((n = read(in, buf, sizeof(buf))) > 0)
		if (write(out, buf, (size_t)n) != n)
			exit(1);
	close(in);
	close(out);
}

static struct ring_config
adopt_cfg(const char *feed)
{
	return (struct ring_config){
	        .dir = dir,
	        .feed = feed,
	        .source = "test",
	        .columns_json = "[{\"name\":\"id\",\"type\":\"int8\"}]",
	        .data_size = 64 * 1024,
	};
}

/* Append cursor c, writing a snapshot first when the ring asks for one
 * (the snapshot's bytes name its cursor). */
static int
append_snap(struct ring *w, uint64_t c)
{
	int rc = append(w, c, 3000);

	if (rc == RING_NEED_SNAPSHOT) {
		struct ring_info info;
		char s[32];
		ring_info(w, &info);
		snprintf(s, sizeof(s), "state-at-%llu", (unsigned long long)info.head_cursor);
		struct iovec iov = {s, strlen(s)};
		if (ring_write_snapshot(w, &iov, 1, err, sizeof(err)) != RING_OK)
			return RING_ERR;
		rc = append(w, c, 3000);
	}
	return rc;
}

static void
test_adopt(void)
{
	struct ring_config cfg = adopt_cfg("adopt");
	struct ring_info before, info;
	struct ring_snapshot snap;
	struct ring_buf buf = {0};
	struct ring_rec rec;
	struct ring *w, *r, *w2;
	uint64_t old_seq, seq, c, index_off, data_off, slots, off, len, bogus;
	int up[2], go[2], st;
	char c1 = 0;
	pid_t pid;
	bool all;

	/* A writer process appends (wrapping the 64 KiB ring many times,
	 * snapshots on demand) and dies without ring_close, as kill -9
	 * would leave it; a reader maps the segment throughout. */
	if (pipe(up) != 0 || pipe(go) != 0)
		exit(1);
	pid = fork();
	if (pid == 0) {
		struct ring *cw;
		if (ring_create(&cfg, &cw, err, sizeof(err)) != RING_OK)
			_exit(1);
		struct iovec iov = {"state-at-0", 10};
		if (ring_write_snapshot(cw, &iov, 1, err, sizeof(err)) != RING_OK)
			_exit(1);
		for (c = 1; c <= 10; c++)
			if (append_snap(cw, c) != RING_OK)
				_exit(1);
		ring_set_state(cw, RING_STATE_LIVE);
		if (write(up[1], "u", 1) != 1 || read(go[0], &c1, 1) != 1)
			_exit(1);
		for (c = 11; c <= 1000; c++)
			if (append_snap(cw, c) != RING_OK)
				_exit(1);
		dead_writer = cw;
		_exit(0);
	}
	ok(pid > 0 && read(up[0], &c1, 1) == 1, "adopt: a writer process created its segment");
	is_int(ring_open(dir, "adopt", &r, err, sizeof(err)), RING_OK, "adopt: a reader maps it");
	ok(ring_lookup(r, 10, &old_seq) == RING_OK && old_seq == 10,
	   "adopt: the reader holds cursor 10 (next seq 10)");
	ok(write(go[1], "g", 1) == 1 && waitpid(pid, &st, 0) == pid && WIFEXITED(st) &&
	           WEXITSTATUS(st) == 0,
	   "adopt: the writer appended 1000 batches and died");
	close(up[0]);
	close(up[1]);
	close(go[0]);
	close(go[1]);
	ring_info(r, &before);

	/* What a writer killed mid-append leaves: a record and index entry
	 * written past the head, head_cursor stored, head_seq not.  Offsets
	 * are the header's layout (see struct ring_hdr). */
	index_off = peek_u64("adopt.ring", 40);
	data_off = peek_u64("adopt.ring", 48);
	slots = peek_u64("adopt.ring", 64) & 0xffffffffu;
	off = peek_u64("adopt.ring",
	               (off_t)(index_off + ((before.head_seq - 1) % slots) * 32 + 16));
	len = peek_u64("adopt.ring",
	               (off_t)(index_off + ((before.head_seq - 1) % slots) * 32 + 24));
	{
		uint64_t ent[4] = {before.head_seq, 5000, off + len, 64};
		static const char junk[64] = "half-written record";
		patch("adopt.ring", (off_t)(data_off + ((off + len) & (64 * 1024 - 1))), junk,
		      (off + len) % (64 * 1024) + 64 <= 64 * 1024 ? 64 : 0);
		patch("adopt.ring", (off_t)(index_off + (before.head_seq % slots) * 32), ent,
		      sizeof(ent));
		bogus = 5000;
		patch("adopt.ring", 200, &bogus, sizeof(bogus)); /* head_cursor */
	}

	/* Refusals leave the segment as it was. */
	w2 = NULL;
	cfg.source = "postgresql";
	ok(ring_adopt(&cfg, &w2, err, sizeof(err)) == RING_ERR && w2 == NULL &&
	           strstr(err, "source") != NULL,
	   "adopt: another source kind is refused: %s", err);
	cfg.source = "test";
	cfg.definition = "view=other";
	ok(ring_adopt(&cfg, &w2, err, sizeof(err)) == RING_ERR && strstr(err, "definition"),
	   "adopt: another definition is refused: %s", err);
	cfg.definition = NULL;
	cfg.data_size = 128 * 1024;
	ok(ring_adopt(&cfg, &w2, err, sizeof(err)) == RING_ERR && strstr(err, "ring size"),
	   "adopt: another ring size is refused: %s", err);
	cfg.data_size = 64 * 1024;
	cfg.columns_json = "[]";
	ok(ring_adopt(&cfg, &w2, err, sizeof(err)) == RING_ERR && strstr(err, "columns"),
	   "adopt: other columns are refused: %s", err);
	cfg.columns_json = NULL; /* not known yet: accepted */

	is_int(ring_adopt(&cfg, &w, err, sizeof(err)), RING_OK, "adopt: the segment is adopted");
	if (w == NULL) {
		printf("# %s\n", err);
		exit(1);
	}
	ok(ring_adopt(&cfg, &w2, err, sizeof(err)) == RING_ERR && strstr(err, "writer"),
	   "adopt: a second writer is refused while one holds it: %s", err);
	ring_info(r, &info);
	ok(info.segment_id == before.segment_id && info.head_seq == before.head_seq &&
	           info.tail_seq == before.tail_seq && info.snap_gen == before.snap_gen,
	   "adopt: same segment, seqs and snapshot");
	is_int(info.head_cursor, 1000, "adopt: head_cursor recovered from the index (not 5000)");
	ok(info.state == RING_STATE_DOWN && info.writer_pid == getpid(),
	   "adopt: state DOWN, writer_pid ours");
	usleep(150 * 1000); /* past the reader's pid probe of the dead writer */
	ring_info(r, &info);
	ok(info.writer_alive, "adopt: the reader sees a live writer");
	ok(!ring_replaced(r), "adopt: the reader's mapping stays current");
	ok(ring_snapshot_open(r, &snap, err, sizeof(err)) == RING_OK &&
	           snap.seq_after >= info.tail_seq,
	   "adopt: the snapshot still serves");
	ring_snapshot_release(&snap);
	is_int(ring_read(r, before.head_seq, &buf, &rec), RING_AHEAD,
	       "adopt: the half-written record is invisible");
	ok(ring_lookup(r, 1000, &seq) == RING_OK && seq == before.head_seq,
	   "adopt: the last cursor before the restart leads to the next seq");

	/* Appends continue where the dead writer stopped. */
	is_int(append_snap(w, 1001), RING_OK, "adopt: append 1001");
	ok(check(r, before.head_seq, 1001, 3000), "adopt: the reader reads it at the next seq");
	is_int(append_snap(w, 1001), RING_ERR, "adopt: cursors must still increase");
	for (c = 1002, all = true; c <= 3000; c++)
		all &= append_snap(w, c) == RING_OK;
	ok(all, "adopt: 2000 more appends wrap the ring from the recovered offsets");
	ring_info(r, &info);
	for (seq = info.tail_seq, all = true; seq < info.head_seq; seq++)
		all &= check(r, seq, seq + 1, 3000);
	ok(all && info.head_cursor == 3000, "adopt: every held batch reads back");
	ok(ring_lookup(r, 10, &seq) == RING_GONE, "adopt: the old reader's cursor 10 is gone now "
	                                          "(dropped by the appends, not by the restart)");
	free(buf.data);

	/* A clean stop (CLOSED) is adopted the same way. */
	ring_close(w, false);
	is_int(ring_adopt(&cfg, &w, err, sizeof(err)), RING_OK,
	       "adopt: a segment closed by ring_close is adopted");
	is_int(append_snap(w, 3001), RING_OK, "adopt: and appended to");
	ok(check(r, info.head_seq, 3001, 3000), "adopt: the reader follows");

	/* Another feed's segment; truncated ones; damaged index; missing. */
	copy_file("adopt.ring", "other.ring");
	copy_file("adopt.snap", "other.snap");
	cfg.feed = "other";
	ok(ring_adopt(&cfg, &w2, err, sizeof(err)) == RING_ERR && strstr(err, "feed adopt"),
	   "adopt: another feed's segment is refused: %s", err);
	cfg.feed = "adopt";
	ring_close(w, false);
	copy_file("adopt.ring", "cut.ring");
	ok(truncate("cut.ring", 8192) == 0 && rename("cut.ring", "adopt.ring") == 0,
	   "adopt: truncate a copy of the segment body and put it in place");
	ok(ring_adopt(&cfg, &w2, err, sizeof(err)) == RING_ERR &&
	           (strstr(err, "truncated") || strstr(err, "corrupt")),
	   "adopt: a truncated segment is refused: %s", err);
	ok(truncate("adopt.ring", 100) == 0 &&
	           ring_adopt(&cfg, &w2, err, sizeof(err)) == RING_ERR && strstr(err, "truncated"),
	   "adopt: a truncated header is refused: %s", err);
	copy_file("other.ring", "adopt.ring");
	is_int(ring_adopt(&cfg, &w, err, sizeof(err)), RING_OK, "adopt: an intact copy is adopted");
	ring_close(w, false);
	ring_info(r, &info);
	{
		uint64_t ent_seq = 12345;
		patch("adopt.ring", (off_t)(index_off + ((info.head_seq - 2) % slots) * 32),
		      &ent_seq, sizeof(ent_seq));
	}
	ok(ring_adopt(&cfg, &w2, err, sizeof(err)) == RING_ERR && strstr(err, "damaged"),
	   "adopt: a damaged index entry is refused: %s", err);
	cfg.feed = "absent";
	ok(ring_adopt(&cfg, &w2, err, sizeof(err)) == RING_GONE && w2 == NULL,
	   "adopt: no segment: RING_GONE");
	ring_close(r, false);
	unlink("adopt.ring");
	unlink("adopt.snap");
	unlink("other.ring");
	unlink("other.snap");

	/* No snapshot; a reset whose snapshot was never written. */
	cfg.feed = "nosnap";
	w = make_ring("nosnap", 64 * 1024, 0, 0);
	append(w, 1, 100);
	ring_close(w, false);
	ok(ring_adopt(&cfg, &w2, err, sizeof(err)) == RING_ERR && strstr(err, ".snap"),
	   "adopt: a segment without a snapshot is refused: %s", err);
	w = make_ring("nosnap", 64 * 1024, 0, 0);
	{
		struct iovec iov = {"s", 1};
		ring_write_snapshot(w, &iov, 1, err, sizeof(err));
	}
	append(w, 1, 100);
	ring_reset(w, 50); /* as feed.c's restart_ring, its snapshot then failed */
	ring_close(w, false);
	ok(ring_adopt(&cfg, &w2, err, sizeof(err)) == RING_ERR && strstr(err, "not in the held"),
	   "adopt: a snapshot from before a reset is refused: %s", err);
	unlink("nosnap.ring");
	unlink("nosnap.snap");
}

/* The error message and the stall fields the daemon sets for readers. */
/* Positions (ring_seek), the frontier (ring_advance, ring_complete),
 * merged ranges and the upstream identity. */
static void
test_positions(void)
{
	struct ring_config cfg = {.dir = dir,
	                          .feed = "pos",
	                          .source = "test",
	                          .columns_json = "[]",
	                          .data_size = 1 << 16,
	                          .base_cursor = 100,
	                          .definition = "def",
	                          .upstream = "pg:1:1"};
	struct ring *w, *r;
	struct ring_info info;
	struct ring_buf buf = {0};
	struct ring_rec rec;
	uint64_t after;
	uint32_t id;
	char one = 'x';
	struct iovec iov = {&one, 1};

	ok(ring_create(&cfg, &w, err, sizeof(err)) == RING_OK, "a ring with an upstream identity");
	ok(ring_open(dir, "pos", &r, err, sizeof(err)) == RING_OK, "reader maps it");
	id = ring_ident(r);
	ok(id != 0, "the identity is known");
	cfg.feed = "pos2";
	cfg.upstream = "pg:2:1";
	struct ring *other;
	ok(ring_create(&cfg, &other, err, sizeof(err)) == RING_OK, "a ring of another database");
	ok(ring_ident(other) != id, "another database: another identity");
	ring_close(other, true);

	ok(append(w, 110, 100) == RING_OK && append(w, 120, 100) == RING_OK, "batches 110, 120");
	is_int(ring_seek(r, id, 99, &after), RING_GONE, "below the floor: gone");
	ok(ring_seek(r, id, 100, &after) == RING_OK && after == 0, "the floor: seq 0");
	ok(ring_seek(r, id, 115, &after) == RING_OK && after == 1,
	   "between batches: the first batch above it");
	ok(ring_seek(r, id, 120, &after) == RING_OK && after == 2, "the head: nothing yet");
	ok(ring_seek(r, id, 5000, &after) == RING_OK && after == 2,
	   "past the frontier: the head (the host is only behind)");
	is_int(ring_seek(r, id ^ 1, 115, &after), RING_UNKNOWN, "another history: unknown");

	/* The frontier moves without batches; replies are complete there. */
	ring_info(r, &info);
	is_int(info.frontier, 120, "the frontier starts at the head");
	ok(ring_advance(w, 150), "advance to 150");
	ok(!ring_advance(w, 140), "the frontier never moves back");
	ring_info(r, &info);
	is_int(info.frontier, 150, "readers see frontier 150");
	is_int(info.head_cursor, 120, "the head did not move");
	is_int(ring_complete(r, 2, 120), 150, "a reader past every batch: complete at 150");
	is_int(ring_complete(r, 1, 110), 119, "a reader before batch 120: complete at 119");
	is_int(ring_complete(r, 2, 5000), 5000, "never below the reader's own position");
	is_int(append(w, 150, 100), RING_ERR, "a batch at or below the frontier is refused");

	/* A merged batch stands for (lo, cursor]. */
	is_int(ring_append_range(w, 140, 200, &iov, 1), RING_ERR, "a range below the frontier");
	ok(ring_append_range(w, 150, 200, &iov, 1) == RING_OK, "a merged batch (150, 200]");
	ok(ring_read(r, 2, &buf, &rec) == RING_OK && rec.lo == 150 && rec.cursor == 200,
	   "the record carries its range");
	ok(ring_seek(r, id, 150, &after) == RING_OK && after == 2, "at lo: the merged batch");
	ok(ring_seek(r, id, 130, &after) == RING_OK && after == 2, "below lo: the merged batch");
	is_int(ring_seek(r, id, 151, &after), RING_UNKNOWN, "strictly inside: unknown");
	is_int(ring_seek(r, id, 199, &after), RING_UNKNOWN, "just below its cursor: unknown");
	ok(ring_seek(r, id, 200, &after) == RING_OK && after == 3, "at its cursor: after it");
	is_int(ring_complete(r, 2, 120), 150, "before the merged batch: complete at its lo");
	ring_info(r, &info);
	is_int(info.frontier, 200, "an append moves the frontier to its cursor");

	/* Identity: the same upstream changes nothing; another one takes
	 * effect with the new history (ring_reset). */
	ok(!ring_set_upstream(w, "pg:1:1"), "the same upstream: nothing to do");
	ok(ring_set_upstream(w, "pg:1:2"), "another timeline: the caller must reset");
	is_int(ring_ident(r), id, "not before the reset");
	ring_reset(w, 300);
	ok(ring_ident(r) != id, "the reset publishes the new identity");
	is_int(ring_seek(r, id, 300, &after), RING_UNKNOWN, "an old history's cursor: unknown");
	ok(ring_seek(r, ring_ident(r), 300, &after) == RING_OK, "the new one's floor: held");
	is_str(ring_upstream(w), "pg:1:2", "the writer knows the text");
	ring_info(r, &info);
	is_int(info.frontier, 300, "a reset starts the frontier at its cursor");

	free(buf.data);
	ring_close(r, false);
	ring_close(w, true);

	/* A restarted writer (ring_adopt) keeps the identity and the
	 * frontier, so clients keep their cursors. */
	cfg.feed = "pos4";
	cfg.upstream = "pg:1:1";
	ok(ring_create(&cfg, &w, err, sizeof(err)) == RING_OK, "a ring to adopt");
	ring_reset(w, 100);
	ok(ring_write_snapshot(w, &iov, 1, err, sizeof(err)) == RING_OK, "its snapshot");
	ok(append(w, 110, 100) == RING_OK && ring_advance(w, 130), "a batch, frontier 130");
	id = ring_ident(w);
	ring_close(w, false);
	ok(ring_adopt(&cfg, &w, err, sizeof(err)) == RING_OK, "adopted: %s", err);
	ok(ring_open(dir, "pos4", &r, err, sizeof(err)) == RING_OK, "a reader maps it");
	ring_info(r, &info);
	ok(ring_ident(r) == id && info.frontier == 130 && info.head_cursor == 110,
	   "adopted: the same identity and frontier 130");
	ok(ring_seek(r, id, 120, &after) == RING_OK && after == 2,
	   "adopted: a client's cursor between the head and the frontier is held");
	ok(!ring_set_upstream(w, "pg:1:1"), "adopted: the same upstream needs no reset");
	ring_close(r, false);
	ring_close(w, true);

	/* A new segment takes an identity at once: it has no history yet. */
	cfg.feed = "pos3";
	cfg.upstream = NULL;
	ok(ring_create(&cfg, &w, err, sizeof(err)) == RING_OK, "a ring without an upstream yet");
	id = ring_ident(w);
	ok(!ring_set_upstream(w, "mz:env"), "no history: no reset needed");
	ok(ring_ident(w) != id, "and the identity is the new one");
	ring_close(w, true);
}

static void
test_error_and_stall(void)
{
	struct ring *w = make_ring("err", 1 << 16, 0, 0), *r;
	struct ring_info info;
	char msg[RING_ERROR_MAX + 1], long_msg[400];

	ring_open(dir, "err", &r, err, sizeof(err));
	ring_error(r, msg, sizeof(msg));
	ok(msg[0] == '\0', "a new segment has no error message");
	ring_set_error(w, "relation \"x\" does not exist (SQLSTATE 42P01)");
	ring_set_state(w, RING_STATE_ERROR);
	ring_error(r, msg, sizeof(msg));
	ok(strcmp(msg, "relation \"x\" does not exist (SQLSTATE 42P01)") == 0,
	   "a reader sees the writer's error message");
	ring_info(r, &info);
	ok(info.state == RING_STATE_ERROR && strcmp(ring_strstate(info.state), "error") == 0,
	   "and the error state");
	memset(long_msg, 'e', sizeof(long_msg) - 1);
	long_msg[sizeof(long_msg) - 1] = '\0';
	ring_set_error(w, long_msg);
	ring_error(r, msg, sizeof(msg));
	ok(strlen(msg) == RING_ERROR_MAX, "a long message is cut at %d bytes", RING_ERROR_MAX);
	ring_set_error(w, NULL);
	ring_error(r, msg, sizeof(msg));
	ok(msg[0] == '\0', "NULL clears it");

	ring_set_state(w, RING_STATE_LIVE);
	ring_heartbeat(w);
	ring_info(r, &info);
	ok(info.confirmed_ms == 0 && !info.stalled, "never confirmed: no lag, not stalled");
	ring_set_stall_ms(w, 50);
	ring_confirmed(w);
	ring_info(r, &info);
	ok(info.stall_ms == 50 && info.confirmed_ms != 0 && !info.stalled,
	   "just confirmed: not stalled");
	usleep(120 * 1000); /* the thing measured: 120 ms without a confirmation */
	ring_heartbeat(w);
	ring_info(r, &info);
	ok(info.stalled && info.lag_ms >= 100,
	   "120 ms without a confirmation: stalled (lag %llu ms)", (unsigned long long)info.lag_ms);
	ring_set_state(w, RING_STATE_DOWN);
	ring_info(r, &info);
	ok(!info.stalled, "only a live feed is called stalled");
	ring_close(r, false);
	ring_close(w, true);
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
	test_writer_gone();
	test_bad_segments();
	test_feed_names();
	test_adopt();
	test_error_and_stall();
	test_positions();

	if (chdir("/") != 0 || rmdir(dir) != 0)
		printf("# leftover files in %s\n", dir);
	return tap_done();
}
