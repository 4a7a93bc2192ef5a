/*
 * test_feed.c - batch assembly, state and snapshots, read back the way a
 * responder reads them.
 *
 * The feed is driven through feed.h as a source would; after every step
 * the state rebuilt from the ring (snapshot file + every batch after it)
 * must equal a model multiset, every batch must be valid JSON (json-c),
 * and the batches appended must be exactly the ones expected.  A feed
 * restarted on an existing segment (a daemon restart) must come back with
 * the same state and head and go on without a gap.
 */
#include "config.h"

#include "feed.h"

#include "batch.h"
#include "ring.h"
#include "tap.h"

#include <json-c/json.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAXROWS 16384

static char dir[] = "/tmp/test_feed.XXXXXX";
static char err_buf[256];

/* ---- the model: distinct rows and counts ---- */
struct model {
	char *row[MAXROWS];
	long count[MAXROWS];
	size_t n;
};

static void
model_add(struct model *m, const char *row, long n)
{
	if (m->n == MAXROWS)
		abort();
	for (size_t i = 0; i < m->n; i++)
		if (strcmp(m->row[i], row) == 0) {
			m->count[i] += n;
			return;
		}
	m->row[m->n] = strdup(row);
	m->count[m->n++] = n;
}

static int
cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* "row*count" lines, sorted, for rows with count > 0. */
static char *
model_text(struct model *m)
{
	char **lines = calloc(m->n + 1, sizeof(char *));
	size_t k = 0, len = 1;
	char *out;

	for (size_t i = 0; i < m->n; i++) {
		if (m->count[i] == 0)
			continue;
		if (asprintf(&lines[k], "%s*%ld", m->row[i], m->count[i]) < 0)
			abort();
		len += strlen(lines[k++]) + 1;
	}
	qsort(lines, k, sizeof(char *), cmp_str);
	out = calloc(1, len);
	for (size_t i = 0; i < k; i++) {
		strcat(out, lines[i]);
		strcat(out, "\n");
		free(lines[i]);
	}
	free(lines);
	return out;
}

static void
model_free(struct model *m)
{
	for (size_t i = 0; i < m->n; i++)
		free(m->row[i]);
	m->n = 0;
}

/* ---- reading the ring back ---- */
static int json_bad;
static int negative;

static void
apply_batch(struct model *m, const char *payload, size_t len)
{
	struct batch_view v;
	struct json_object *o;
	char *json;

	if (!batch_view(payload, len, &v)) {
		json_bad++;
		return;
	}
	json = strndup(v.json, v.json_len);
	o = json_tokener_parse(json);
	if (o == NULL || !json_object_is_type(o, json_type_object))
		json_bad++;
	json_object_put(o);
	free(json);
	for (uint64_t i = 0; i < v.n_ins + v.n_del; i++) {
		char *row = strndup(v.json + v.rows[i].off, v.rows[i].len);
		model_add(m, row, i < v.n_ins ? 1 : -1);
		free(row);
	}
	for (size_t i = 0; i < m->n; i++)
		if (m->count[i] < 0)
			negative++;
}

/* The state a client rebuilds: snapshot, then every batch after it.
 * Also returns the cursors of those batches. */
static char *
ring_state(const char *feed, uint64_t *cursors, size_t *ncursors, uint64_t *snap_cursor)
{
	struct ring *r;
	struct ring_snapshot s;
	struct ring_buf buf = {0};
	struct ring_rec rec;
	struct model m = {0};
	char err[256], *text;
	uint64_t seq;

	if (ring_open(dir, feed, &r, err, sizeof(err)) != RING_OK)
		return strdup(err);
	if (ring_snapshot_open(r, &s, err, sizeof(err)) != RING_OK) {
		ring_close(r, false);
		return strdup(err);
	}
	apply_batch(&m, s.data, s.len);
	seq = s.seq_after;
	if (snap_cursor)
		*snap_cursor = s.cursor;
	ring_snapshot_release(&s);
	if (ncursors)
		*ncursors = 0;
	while (ring_read(r, seq, &buf, &rec) == RING_OK) {
		apply_batch(&m, buf.data, buf.len);
		if (cursors)
			cursors[(*ncursors)++] = rec.cursor;
		seq++;
	}
	free(buf.data);
	ring_close(r, false);
	text = model_text(&m);
	model_free(&m);
	return text;
}

static struct model want;
static struct feed *f;

static void
check(const char *what)
{
	char *w = model_text(&want), *got = ring_state("t", NULL, NULL, NULL);

	is_str(got, w, "%s: the ring's state is the model's", what);
	free(w);
	free(got);
}

static void
row(uint64_t ts, int64_t diff, const char *r)
{
	if (feed_row(f, ts, diff, r, strlen(r)) != 0)
		printf("# unexpected refusal of %s at %llu\n", r, (unsigned long long)ts);
}

static uint64_t
head_cursor(void)
{
	struct feed_stats st;

	feed_stats(f, &st);
	return st.head_cursor;
}

static uint64_t
nbatches(void)
{
	struct feed_stats st;

	feed_stats(f, &st);
	return st.batches;
}

static void
test_basics(void)
{
	struct feed_params p = {.name = "t",
	                        .ring_dir = dir,
	                        .source = "test",
	                        .ring_size = 1 << 20,
	                        .unique_rows = false,
	                        .definition = NULL,
	                        .fresh = false,
	                        .stall_ms = 0};
	struct feed_column cols[] = {{"item", "text", COLTYPE_STRING},
	                             {"qty", "int4", COLTYPE_NUMBER}};
	uint64_t cursors[64];
	size_t n;
	struct ring *r;
	struct ring_info info;
	char err[256], *got;

	f = feed_new(&p);
	ok(!feed_can_resume(f), "a new feed cannot resume");
	is_int(feed_set_columns(f, cols, 2), FEED_COLUMNS_NEW, "first columns are new");
	ok(ring_open(dir, "t", &r, err, sizeof(err)) == RING_OK, "segment exists after columns");
	is_str(ring_columns(r),
	       "[{\"name\":\"item\",\"type\":\"text\"},{\"name\":\"qty\",\"type\":\"int4\"}]",
	       "columns JSON in the segment");
	ring_info(r, &info);
	is_int(info.state, RING_STATE_STARTING, "state STARTING before the snapshot");
	ring_close(r, false);

	ok(feed_row(f, 100, 1, "[\"a\",1]", 7) != 0, "a row before any snapshot is refused");

	/* Snapshot at 100: first progress AT the as-of, rows, progress past. */
	ok(feed_snapshot_begin(f, 100) == 0, "snapshot begins at 100");
	ok(feed_progress(f, 100) == 0, "progress at the as-of closes nothing");
	row(100, 3, "[\"apple\",1]");
	row(100, 2, "[\"pear\",5]");
	row(100, 1, "[\"fig\",2]");
	row(101, 1, "[\"early\",0]"); /* a later timestamp before the snapshot closes */
	ok(feed_progress(f, 101) == 0, "progress 101 closes the snapshot");
	model_add(&want, "[\"apple\",1]", 3);
	model_add(&want, "[\"pear\",5]", 2);
	model_add(&want, "[\"fig\",2]", 1);
	check("snapshot");
	got = ring_state("t", cursors, &n, &cursors[63]);
	ok(n == 0 && cursors[63] == 100, "snapshot at cursor 100, no batches yet");
	free(got);
	ok(feed_can_resume(f) && feed_frontier(f) == 101, "resumable at frontier 101");

	feed_upstream_live(f);
	ring_open(dir, "t", &r, err, sizeof(err));
	ring_info(r, &info);
	is_int(info.state, RING_STATE_LIVE, "state LIVE");
	is_int(info.row_count, 6, "row count with multiplicity");
	ring_close(r, false);

	/* Retraction before insertion, multiplicities, the pending row at 101. */
	row(105, -1, "[\"apple\",1]");
	row(105, 2, "[\"kiwi\",1]");
	row(105, -2, "[\"pear\",5]");
	ok(feed_progress(f, 106) == 0, "progress 106");
	model_add(&want, "[\"early\",0]", 1);
	model_add(&want, "[\"apple\",1]", -1);
	model_add(&want, "[\"kiwi\",1]", 2);
	model_add(&want, "[\"pear\",5]", -2);
	check("101 and 105");
	got = ring_state("t", cursors, &n, NULL);
	ok(n == 2 && cursors[0] == 101 && cursors[1] == 105, "one batch each for 101 and 105");
	free(got);

	/* Progress with no data; net-zero timestamp; unconsolidated rows. */
	ok(feed_progress(f, 107) == 0 && nbatches() == 2,
	   "progress without data publishes nothing");
	row(107, 1, "[\"ghost\",0]");
	row(107, -1, "[\"ghost\",0]");
	ok(feed_progress(f, 108) == 0 && nbatches() == 2,
	   "a timestamp netting to zero publishes nothing");
	row(108, 1, "[\"x\",1]");
	row(108, 1, "[\"x\",1]");
	row(108, -1, "[\"x\",1]");
	ok(feed_progress(f, 109) == 0 && nbatches() == 3, "unconsolidated rows: one batch");
	model_add(&want, "[\"x\",1]", 1);
	check("consolidated");

	/* Two timestamps, arriving interleaved, closed by one progress row. */
	row(112, 1, "[\"b\",12]");
	row(110, 1, "[\"b\",10]");
	row(112, -1, "[\"x\",1]");
	row(110, 1, "[\"c\",10]");
	row(130, 1, "[\"later\",0]");
	ok(feed_progress(f, 113) == 0 && nbatches() == 5, "two timestamps, two batches");
	got = ring_state("t", cursors, &n, NULL);
	ok(n == 5 && cursors[3] == 110 && cursors[4] == 112, "in timestamp order");
	free(got);
	model_add(&want, "[\"b\",12]", 1);
	model_add(&want, "[\"b\",10]", 1);
	model_add(&want, "[\"c\",10]", 1);
	model_add(&want, "[\"x\",1]", -1);
	check("interleaved");

	/* Errors: below the frontier; retraction of a row not held. */
	ok(feed_row(f, 112, 1, "[\"old\",0]", 9) != 0, "a row below the frontier is refused");
	ok(feed_progress(f, 131) == 0 && nbatches() == 5,
	   "the refusal dropped the pending rows (130 too)");
	ok(feed_frontier(f) == 131, "frontier 131");
	row(140, 1, "[\"new\",0]");
	row(140, -1, "[\"never\",0]");
	ok(feed_progress(f, 141) != 0, "a retraction of a row not held is refused");
	ok(nbatches() == 5 && feed_frontier(f) == 140, "nothing published; frontier stays at 140");
	check("after refusals");
	ok(feed_progress(f, 150) == 0 && nbatches() == 5, "and its rows are gone");

	/* A resumed session's first progress row is below the frontier. */
	ok(feed_progress(f, 149) == 0, "an old progress row is ignored");
	row(150, 1, "[\"resumed\",0]");
	ok(feed_progress(f, 151) == 0 && nbatches() == 6, "resume continues");
	model_add(&want, "[\"resumed\",0]", 1);

	/* Lost mid-timestamp: pending rows go. */
	row(160, 1, "[\"half\",0]");
	feed_upstream_lost(f);
	ring_open(dir, "t", &r, err, sizeof(err));
	ring_info(r, &info);
	is_int(info.state, RING_STATE_DOWN, "state DOWN when lost");
	ring_close(r, false);
	feed_upstream_live(f);
	ok(feed_progress(f, 161) == 0 && nbatches() == 6, "rows of a lost session are dropped");
	check("after a lost session");

	/* A fresh snapshot after a refused resume: only the difference. */
	ok(feed_snapshot_begin(f, 200) == 0, "fresh snapshot at 200");
	row(200, 2, "[\"apple\",1]");   /* held 2: same */
	row(200, 3, "[\"kiwi\",1]");    /* held 2: +1 */
	row(200, 1, "[\"b\",12]");      /* same */
	row(200, 1, "[\"brand\",0]");   /* new */
	row(200, 1, "[\"resumed\",0]"); /* same */
	/* fig, early, b/10, c/10 are gone */
	ok(feed_progress(f, 201) == 0 && nbatches() == 7, "the difference is one batch");
	got = ring_state("t", cursors, &n, NULL);
	ok(cursors[n - 1] == 200, "at the new as-of");
	free(got);
	model_add(&want, "[\"kiwi\",1]", 1);
	model_add(&want, "[\"brand\",0]", 1);
	model_add(&want, "[\"fig\",2]", -1);
	model_add(&want, "[\"early\",0]", -1);
	model_add(&want, "[\"b\",10]", -1);
	model_add(&want, "[\"c\",10]", -1);
	check("fresh snapshot diff");
	{
		struct ring_buf buf = {0};
		struct ring_rec rec;
		uint64_t seq;
		ring_open(dir, "t", &r, err, sizeof(err));
		ring_lookup(r, 150, &seq);
		ring_read(r, seq, &buf, &rec);
		struct batch_view v;
		batch_view(buf.data, buf.len, &v);
		char *j = strndup(v.json, v.json_len);
		is_str(j,
		       "{\"timestamp\":\"200\",\"inserted\":[[\"brand\",0],[\"kiwi\",1]],"
		       "\"deleted\":[[\"b\",10],[\"c\",10],[\"early\",0],[\"fig\",2]]}",
		       "the difference batch, rows sorted");
		free(j);
		free(buf.data);
		ring_close(r, false);
	}

	/* A fresh snapshot that is not past the head: the ring restarts. */
	ok(feed_snapshot_begin(f, 190) == 0, "fresh snapshot at 190 (behind the head 200)");
	row(190, 1, "[\"only\",0]");
	ok(feed_progress(f, 191) == 0, "closes");
	model_free(&want);
	model_add(&want, "[\"only\",0]", 1);
	check("restart behind the head");
	got = ring_state("t", cursors, &n, &cursors[63]);
	ok(n == 0 && cursors[63] == 190, "the ring restarted at 190 with a snapshot");
	free(got);

	/* An empty fresh snapshot against held state deletes everything. */
	ok(feed_snapshot_begin(f, 300) == 0 && feed_snapshot_end(f) == 0,
	   "an empty snapshot closed by feed_snapshot_end");
	model_add(&want, "[\"only\",0]", -1);
	check("empty snapshot");

	/* Same columns again: resumable; new columns: a new segment. */
	is_int(feed_set_columns(f, cols, 2), FEED_COLUMNS_SAME, "same columns");
	ok(feed_can_resume(f), "still resumable");
	{
		struct ring_info before, after;
		ring_open(dir, "t", &r, err, sizeof(err));
		ring_info(r, &before);
		ring_close(r, false);
		is_int(feed_set_columns(f, cols, 1), FEED_COLUMNS_NEW, "changed columns are new");
		ok(!feed_can_resume(f), "and not resumable");
		ring_open(dir, "t", &r, err, sizeof(err));
		ring_info(r, &after);
		ok(after.segment_id != before.segment_id && after.state == RING_STATE_STARTING,
		   "a new segment, STARTING");
		ring_close(r, false);
	}
	ok(json_bad == 0 && negative == 0, "every batch was valid JSON; no count went negative");
	feed_free(f, true);
	ok(access("/tmp", F_OK) == 0 && ring_open(dir, "t", &r, err, sizeof(err)) != RING_OK,
	   "feed_free(remove) unlinks the segment");
	model_free(&want);
}

/* A small ring and many batches: snapshots on demand and proactively;
 * batches larger than half the ring restart it.  The client's state is
 * right after every batch. */
static void
test_small_ring(void)
{
	struct feed_params p = {.name = "t",
	                        .ring_dir = dir,
	                        .source = "test",
	                        .ring_size = 64 * 1024,
	                        .unique_rows = false,
	                        .definition = NULL,
	                        .fresh = false,
	                        .stall_ms = 0};
	struct feed_column cols[] = {{"k", "int8", COLTYPE_NUMBER},
	                             {"pad", "text", COLTYPE_STRING}};
	struct feed_stats st;
	char rowbuf[256], pad[120];
	size_t wrong = 0;

	memset(pad, 'p', sizeof(pad) - 1);
	pad[sizeof(pad) - 1] = '\0';
	f = feed_new(&p);
	feed_set_columns(f, cols, 2);
	ok(feed_snapshot_begin(f, 1) == 0 && feed_progress(f, 2) == 0, "empty first snapshot");
	feed_upstream_live(f);
	for (uint64_t t = 2; t < 600; t++) {
		/* Insert 8 rows, delete the ones inserted 20 steps ago. */
		for (int k = 0; k < 8; k++) {
			snprintf(rowbuf, sizeof(rowbuf), "[%llu,\"%s\"]",
			         (unsigned long long)(t * 8 + (uint64_t)k), pad);
			row(t, 1, rowbuf);
			model_add(&want, rowbuf, 1);
			if (t >= 22) {
				snprintf(rowbuf, sizeof(rowbuf), "[%llu,\"%s\"]",
				         (unsigned long long)((t - 20) * 8 + (uint64_t)k), pad);
				row(t, -1, rowbuf);
				model_add(&want, rowbuf, -1);
			}
		}
		if (feed_progress(f, t + 1) != 0)
			wrong++;
		if (t % 25 == 0) {
			char *w = model_text(&want), *got = ring_state("t", NULL, NULL, NULL);
			if (strcmp(w, got) != 0 && wrong == 0) {
				struct feed_stats fs;
				feed_stats(f, &fs);
				printf("# first wrong at t=%llu: want %zu bytes, got %zu: %.100s "
				       "(snapshots %llu)\n",
				       (unsigned long long)t, strlen(w), strlen(got), got,
				       (unsigned long long)fs.snapshots);
			}
			wrong += strcmp(w, got) != 0;
			free(w);
			free(got);
		}
	}
	feed_stats(f, &st);
	ok(wrong == 0, "a 64 KiB ring through 600 batches: the client's state is always right");
	ok(st.snapshots > 5, "snapshots were written along the way (%llu)",
	   (unsigned long long)st.snapshots);
	ok(st.resets == 1, "no restart");
	check("small ring");

	/* A batch larger than half the ring. */
	for (int k = 0; k < 400; k++) {
		snprintf(rowbuf, sizeof(rowbuf), "[%d,\"big %s\"]", k, pad);
		row(700, 1, rowbuf);
		model_add(&want, rowbuf, 1);
	}
	ok(feed_progress(f, 701) == 0, "a too-big batch is not an error");
	feed_stats(f, &st);
	ok(st.resets == 2 && head_cursor() == 700, "the ring restarted at its timestamp");
	check("after a too-big batch");
	model_free(&want);
	feed_free(f, true);
}

/* A big ring and a steady trickle of small batches: snapshots are written
 * often enough that a new client's reply (snapshot plus the batches after
 * it) stays near the snapshot's size, not the ring's. */
static void
test_snapshot_cadence(void)
{
	struct feed_params p = {.name = "c",
	                        .ring_dir = dir,
	                        .source = "test",
	                        .ring_size = 16 * 1024 * 1024,
	                        .unique_rows = false,
	                        .definition = NULL,
	                        .fresh = false,
	                        .stall_ms = 0};
	struct feed_column cols[] = {{"k", "int8", COLTYPE_NUMBER},
	                             {"pad", "text", COLTYPE_STRING}};
	struct feed_stats st;
	char rowbuf[256];
	size_t most = 0, wrong = 0;
	unsigned ver[200] = {0};
	uint64_t *cursors = malloc(4096 * sizeof(*cursors));

	f = feed_new(&p);
	feed_set_columns(f, cols, 2);
	ok(feed_snapshot_begin(f, 1) == 0, "snapshot begins");
	for (int k = 0; k < 200; k++) {
		snprintf(rowbuf, sizeof(rowbuf), "[%d,\"v0 %080d\"]", k, k);
		row(1, 1, rowbuf);
		model_add(&want, rowbuf, 1);
	}
	ok(feed_progress(f, 2) == 0, "200-row snapshot (about 20 KiB)");
	feed_upstream_live(f);
	for (uint64_t t = 2; t < 3000; t++) {
		int k = (int)(t % 200);

		snprintf(rowbuf, sizeof(rowbuf), "[%d,\"v%u %080d\"]", k, ver[k], k);
		row(t, -1, rowbuf);
		model_add(&want, rowbuf, -1);
		ver[k]++;
		snprintf(rowbuf, sizeof(rowbuf), "[%d,\"v%u %080d\"]", k, ver[k], k);
		row(t, 1, rowbuf);
		model_add(&want, rowbuf, 1);
		if (feed_progress(f, t + 1) != 0)
			wrong++;
		if (t % 50 == 0) {
			size_t n = 0;
			char *w = model_text(&want), *got = ring_state("c", cursors, &n, NULL);
			wrong += strcmp(w, got) != 0;
			if (n > most)
				most = n;
			free(w);
			free(got);
		}
	}
	feed_stats(f, &st);
	ok(wrong == 0 && st.batches == 2998,
	   "3,000 one-row updates, %llu batches: the client's state is always right",
	   (unsigned long long)st.batches);
	/* Each batch is about 250 bytes, the snapshot about 20 KiB: a fresh
	 * snapshot every ~80 batches, so never more than ~100 after one. */
	ok(most <= 120, "at most %zu batches after the snapshot (want <= 120)", most);
	ok(st.snapshots >= 20 && st.snapshots <= 60,
	   "snapshots follow the bytes appended: %llu for 3,000 batches",
	   (unsigned long long)st.snapshots);
	free(cursors);
	model_free(&want);
	feed_free(f, true);
}

/* unique_rows: a row twice in one timestamp is refused, unless the
 * next closing repeats a row again. */
static void
test_unique(void)
{
	struct feed_params p = {.name = "u",
	                        .ring_dir = dir,
	                        .source = "test",
	                        .ring_size = 1 << 20,
	                        .unique_rows = true,
	                        .definition = NULL,
	                        .fresh = false,
	                        .stall_ms = 0};
	struct feed_column cols[] = {{"k", "int8", COLTYPE_NUMBER}};
	struct feed_stats st;

	f = feed_new(&p);
	feed_set_columns(f, cols, 1);
	ok(feed_snapshot_begin(f, 10) == 0, "unique: snapshot");
	row(10, 1, "[1]");
	row(10, 1, "[1]");
	ok(feed_progress(f, 11) != 0, "unique: a row twice in the snapshot is refused");
	ok(feed_snapshot_begin(f, 12) == 0, "unique: snapshot again");
	row(12, 2, "[1]");
	ok(feed_progress(f, 13) == 0, "unique: a row once with diff 2 is fine");
	row(13, -1, "[1]");
	row(13, 1, "[2]");
	row(13, -1, "[1]");
	ok(feed_progress(f, 14) != 0,
	   "unique: a row twice in a timestamp is refused (a closing in between: again)");
	feed_stats(f, &st);
	ok(st.batches == 0 && st.state_rows == 2 && feed_frontier(f) == 13,
	   "unique: nothing published, state and frontier kept");
	/* The session resumes; the upstream resends timestamp 13 the same way:
	 * it does not consolidate, so its rows are summed from now on. */
	row(13, -1, "[1]");
	row(13, 1, "[2]");
	row(13, -1, "[1]");
	ok(feed_progress(f, 14) == 0, "unique: the same timestamp repeated again is summed");
	feed_stats(f, &st);
	ok(st.batches == 1 && st.state_rows == 1 && feed_frontier(f) == 14,
	   "unique: one batch, [1] gone twice, [2] held");
	row(14, 1, "[3]");
	row(14, -1, "[3]");
	row(14, 1, "[4]");
	row(14, 1, "[4]");
	ok(feed_progress(f, 15) == 0, "unique: ...and later repeats too (in and out: nothing)");
	feed_stats(f, &st);
	ok(st.batches == 2 && st.state_rows == 3 && feed_frontier(f) == 15,
	   "unique: [4] held twice, [3] never");
	feed_free(f, true);
}

/* A daemon restart: a feed started on an existing segment adopts it (the
 * state and head come back from the snapshot and batches, the source may
 * resume), and the first batch after the restart follows the last one
 * before it, for a reader that held its cursor and mapping throughout. */
static void
restart_row(bool to_feed, uint64_t ts, int64_t diff, const char *r)
{
	if (to_feed)
		row(ts, diff, r);
	model_add(&want, r, diff);
}

/* Batches at [from, to): to the feed f and the model, or (to_feed false)
 * to the model only. */
static void
restart_publish(bool to_feed, uint64_t from, uint64_t to)
{
	char rowbuf[64];

	for (uint64_t t = from; t < to; t++) {
		snprintf(rowbuf, sizeof(rowbuf), "[%llu,\"v\"]", (unsigned long long)t);
		restart_row(to_feed, t, 1, rowbuf);
		if (t % 3 == 0 && t > from) {
			snprintf(rowbuf, sizeof(rowbuf), "[%llu,\"v\"]",
			         (unsigned long long)(t - 1));
			restart_row(to_feed, t, -1, rowbuf);
		}
		if (t % 5 == 0) /* a multiplicity */
			restart_row(to_feed, t, 2, "[0,\"dup\"]");
		if (to_feed && feed_progress(f, t + 1) != 0)
			printf("# refused at %llu\n", (unsigned long long)t);
	}
}

static void
test_restart(void)
{
	struct feed_params p = {.name = "r",
	                        .ring_dir = dir,
	                        .source = "test",
	                        .ring_size = 64 * 1024,
	                        .unique_rows = false,
	                        .definition = "view=r",
	                        .fresh = false,
	                        .stall_ms = 0};
	struct feed_column cols[] = {{"k", "int8", COLTYPE_NUMBER}, {"v", "text", COLTYPE_STRING}};
	struct feed_stats st1, st2;
	struct ring_info before, info;
	struct ring_buf buf = {0};
	struct ring_rec rec;
	struct ring *r;
	uint64_t seq;
	char *w, *got;
	pid_t pid;
	int status;

	/* The first daemon: snapshot, 300 batches (some snapshots on the way
	 * in a 64 KiB ring), then killed: it never closes the segment. */
	fflush(stdout);
	pid = fork();
	if (pid == 0) {
		f = feed_new(&p);
		feed_set_columns(f, cols, 2);
		if (feed_snapshot_begin(f, 10) != 0)
			_exit(1);
		row(10, 1, "[1,\"first\"]");
		row(10, 3, "[2,\"three\"]");
		if (feed_progress(f, 11) != 0)
			_exit(1);
		feed_upstream_live(f);
		restart_publish(true, 11, 311);
		feed_flush(f);
		_exit(0); /* as kill -9 leaves it */
	}
	model_add(&want, "[1,\"first\"]", 1);
	model_add(&want, "[2,\"three\"]", 3);
	restart_publish(false, 11, 311); /* the model only: the child had f */
	ok(pid > 0 && waitpid(pid, &status, 0) == pid && WIFEXITED(status) &&
	           WEXITSTATUS(status) == 0,
	   "restart: the first daemon published 300 batches and died");
	w = model_text(&want);
	got = ring_state("r", NULL, NULL, NULL);
	is_str(got, w, "restart: the ring holds the model's state");
	free(got);
	ok(ring_open(dir, "r", &r, err_buf, sizeof(err_buf)) == RING_OK,
	   "restart: a reader maps it");
	ring_info(r, &before);
	ok(ring_lookup(r, 310, &seq) == RING_OK && seq == before.head_seq,
	   "restart: the reader's cursor is the head, 310");

	/* The second daemon. */
	f = feed_new(&p);
	feed_stats(f, &st1);
	ok(feed_can_resume(f) && feed_frontier(f) == 311 && st1.head_cursor == 310,
	   "restart: the new feed resumes at frontier 311, head 310");
	ok(st1.resets == 0 && st1.snapshots == 0, "restart: no ring restart, no snapshot written");
	ring_info(r, &info);
	ok(info.segment_id == before.segment_id && info.head_seq == before.head_seq &&
	           info.state == RING_STATE_DOWN,
	   "restart: the same segment and head, DOWN until the upstream is back");
	is_int(feed_set_columns(f, cols, 2), FEED_COLUMNS_SAME,
	       "restart: the same columns from the source: FEED_COLUMNS_SAME");
	ok(feed_can_resume(f), "restart: still resumable");
	feed_upstream_live(f);
	/* The upstream resends 310 (already applied: the source skips it, as
	 * source_pg's skip_txn does) and goes on at 311. */
	ok(feed_row(f, 310, 1, "[9,\"dup\"]", 9) != 0, "restart: a row at the head is refused");
	restart_publish(true, 311, 320);
	feed_flush(f);
	got = ring_state("r", NULL, NULL, NULL);
	is_str(got, w = (free(w), model_text(&want)),
	       "restart: the state goes on from the model's");
	free(got);
	is_int(ring_read(r, before.head_seq, &buf, &rec), RING_OK,
	       "restart: the reader reads the next seq");
	is_int(rec.cursor, 311, "restart: the first batch after the restart is 311 (no gap)");
	ok(!ring_replaced(r), "restart: no new segment for the reader");
	feed_stats(f, &st2);
	long rows = 0;
	for (size_t i = 0; i < want.n; i++)
		rows += want.count[i];
	ok(st2.state_rows == (uint64_t)rows && st2.batches == 9 && st1.state_rows == 324,
	   "restart: 9 batches after it, %llu rows held", (unsigned long long)st2.state_rows);

	/* Clean stop, other definitions, other columns. */
	feed_free(f, false);
	f = feed_new(&p);
	ok(feed_can_resume(f) && feed_frontier(f) == 320, "restart: after a clean stop too");
	feed_free(f, false);
	p.definition = "view=other";
	f = feed_new(&p);
	ok(!feed_can_resume(f), "restart: another definition is not adopted");
	feed_free(f, false);
	p.definition = "view=r";
	p.fresh = true;
	f = feed_new(&p);
	ok(!feed_can_resume(f), "restart: fresh: not adopted");
	feed_free(f, false);
	p.fresh = false;
	f = feed_new(&p);
	ok(feed_can_resume(f), "restart: adopted again");
	is_int(feed_set_columns(f, cols, 1), FEED_COLUMNS_NEW,
	       "restart: other columns from the source: a new segment");
	ok(!feed_can_resume(f), "restart: which needs a snapshot");
	ok(ring_replaced(r), "restart: readers see the new segment");
	feed_free(f, true);
	free(buf.data);
	free(w);
	ring_close(r, false);
	model_free(&want);
	f = NULL;
}

/* The frontier, merged ranges and the upstream identity (feed.c, top). */
static void
test_positions(void)
{
	struct feed_params p = {.name = "pf",
	                        .ring_dir = dir,
	                        .source = "test",
	                        .ring_size = 64 * 1024,
	                        .unique_rows = false,
	                        .definition = "view=pf",
	                        .fresh = false,
	                        .stall_ms = 0};
	struct feed_column cols[] = {{"k", "int8", COLTYPE_NUMBER}};
	struct ring_info info;
	struct ring_buf buf = {0};
	struct ring_rec rec;
	struct ring *r;
	uint64_t seq;
	uint32_t id;

	f = feed_new(&p);
	feed_set_columns(f, cols, 1);
	ok(!feed_set_upstream(f, "pg:1:1"), "positions: a new segment takes its upstream at once");
	ok(ring_open(dir, "pf", &r, err_buf, sizeof(err_buf)) == RING_OK, "positions: mapped");
	id = ring_ident(r);
	ok(feed_snapshot_begin(f, 10) == 0, "positions: snapshot at 10");
	row(10, 1, "[1]");
	ok(feed_progress(f, 11) == 0, "positions: closed");
	ring_info(r, &info);
	is_int(info.frontier, 10, "positions: complete through the snapshot");
	ok(feed_progress(f, 50) == 0, "positions: a keepalive at 50, no rows");
	feed_flush(f);
	ring_info(r, &info);
	ok(info.frontier == 49 && info.head_cursor == 10,
	   "positions: the frontier moved to 49 without a batch");
	row(60, 1, "[2]");
	ok(feed_progress(f, 61) == 0, "positions: a batch at 60");
	ok(ring_read(r, info.head_seq, &buf, &rec) == RING_OK && rec.lo == 59 && rec.cursor == 60,
	   "positions: an ordinary batch stands for (59, 60]");

	/* A gap (the session was lost), then a fresh snapshot: one batch
	 * standing for everything since the frontier. */
	feed_upstream_lost(f);
	ok(feed_snapshot_begin(f, 100) == 0, "positions: a new session's snapshot at 100");
	row(100, 1, "[2]");
	row(100, 1, "[3]");
	ok(feed_progress(f, 101) == 0, "positions: closed");
	ring_info(r, &info);
	ok(ring_read(r, info.head_seq - 1, &buf, &rec) == RING_OK && rec.lo == 60 &&
	           rec.cursor == 100,
	   "positions: the difference after a gap stands for (60, 100]");
	is_int(ring_seek(r, id, 80, &seq), RING_UNKNOWN, "positions: a cursor inside it: 410");
	ok(ring_seek(r, id, 60, &seq) == RING_OK && seq == info.head_seq - 1,
	   "positions: a cursor at its lo: the batch");

	/* Another upstream: no resuming; the next snapshot starts a new
	 * history under the new identity. */
	ok(feed_can_resume(f), "positions: resumable before");
	ok(feed_set_upstream(f, "pg:2:1"), "positions: another database is news");
	ok(!feed_can_resume(f), "positions: not resumable: a snapshot must come");
	is_int(ring_ident(r), id, "positions: the old identity until then");
	ok(feed_snapshot_begin(f, 30) == 0, "positions: the other database's snapshot at 30");
	row(30, 1, "[7]");
	ok(feed_progress(f, 31) == 0, "positions: closed");
	ring_info(r, &info);
	ok(ring_ident(r) != id && info.head_cursor == 30 && info.frontier == 30,
	   "positions: a new history at 30, under a new identity");
	is_int(ring_seek(r, id, 60, &seq), RING_UNKNOWN, "positions: an old cursor: 410");
	free(buf.data);
	ring_close(r, false);
	feed_free(f, true);
	f = NULL;
}

int
main(void)
{
	if (mkdtemp(dir) == NULL) {
		perror("mkdtemp");
		return 1;
	}
	test_basics();
	test_small_ring();
	test_snapshot_cadence();
	test_unique();
	f = NULL;
	test_restart();
	test_positions();
	rmdir(dir);
	return tap_done();
}
