/*
 * stress_ring.c - the feed ring under load: one writer, many readers.
 *
 * The writer appends millions of small batches (20-200 bytes) and some of
 * 1-4 MB, with strictly increasing cursors and random gaps.  It wakes the
 * readers every few appends, answers RING_NEED_SNAPSHOT by writing a
 * snapshot and retrying, writes snapshots at random too, and alternates a
 * paced rate with unpaced bursts so that slow readers get lapped.
 *
 * Every payload is a function of (seq, cursor, previous cursor): a reader
 * recomputes it and checks byte-identity without any shared state.  Each
 * payload carries its predecessor's cursor, so a reader that skips a batch
 * without being told RING_GONE breaks the chain and is caught.
 *
 * Readers are processes (fork) by default, threads with --threads (the
 * mode ThreadSanitizer can follow; half the threads then read through the
 * writer's own handle so that TSan sees both sides at the same addresses).
 * Each reads every seq in order, sometimes waiting (ring_wait, random
 * timeouts), sleeping (to get lapped), restarting from its last cursor
 * (ring_lookup) or from the snapshot (ring_snapshot_open), and checks:
 *
 *   - contents byte-identical, seq contiguous, cursor increasing and
 *     chained to the previous batch's cursor;
 *   - lookup(cursor of batch s) gives s + 1, or RING_GONE once the tail
 *     has passed s + 1;
 *   - a lap is always reported: after ring_read says RING_GONE the tail is
 *     past that seq, lookup of the last cursor says RING_GONE (or, if it
 *     finds the same seq, reading it says RING_GONE again), and the
 *     snapshot it resumes from lies past the lost seq;
 *   - snapshots are consistent: the payload names their cursor and
 *     seq_after, lookup(cursor) gives seq_after, batch seq_after - 1 has
 *     that cursor and batch seq_after chains to it;
 *   - ring_wait never says RING_OK while nothing new exists;
 *   - at the end every seq was verified exactly once or lost to a reported
 *     lap: verified + lost == head.
 *
 * The writer also calls ring_reset now and then (--resets), right after a
 * pause so that readers are likely caught up.  The new history starts one
 * seq past the old head, so a reader waiting at the head is woken and told
 * RING_GONE.  As the responder does (park.c, same_history), a reader also
 * accepts a batch only while lookup of its last cursor still leads to it;
 * --no-history-check drops that check, leaving the ring's own guarantee.
 *
 * Exit status 0 when the writer and every reader found no error and every
 * reader reached the end within --seconds; 1 otherwise; 2 on bad usage.
 */
#include "clock.h"
#include "ring.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define FEED "stress"
#define PAY_HDR 17 /* u64 seq, u64 previous cursor, u8 kind */
/* Kinds of batch.  With the default geometry (128 data bytes per index
 * slot) short ones fill the index first and long ones the data area, so
 * the writer's phases alternate which limit drops records: the index (the
 * floor entry must survive, I2) or the bytes (a lapped reader's copy is
 * overwritten under it: the seqlock). */
enum kind { KIND_SHORT = 0, KIND_BIG = 1, KIND_LONG = 2 };
#define SHORT_MIN 20
#define SHORT_MAX 64
#define LONG_MIN 100
#define LONG_MAX 200
#define BIG_MIN (1u << 20)
#define BIG_MAX (4u << 20)
#define SNAP_WORD 0x5453534e41505354ull /* "TSPANSST": snapshot payload magic */
#define SNAP_FIXED 32                   /* magic, cursor, seq_after, check */
#define SNAP_PAD_MAX 4096
#define ERRORS_SHOWN 10   /* per reader; the count goes on */
#define KILL_GRACE_S 10.0 /* after --seconds, readers still running are killed */

struct options {
	int readers;
	uint64_t batches;
	uint64_t big;
	bool threads;
	double seconds;
	uint64_t seed;
	uint64_t ring_mb;
	uint64_t slots; /* index slots; 0: the ring's default (data / 256) */
	uint64_t rate;  /* batches/s outside bursts; 0: never paced */
	uint64_t resets;
	bool history_check;    /* confirm each batch read with lookup (resets) */
	uint32_t lookup_every; /* check lookup of one batch in this many */
};

static struct options opt = {
        .readers = 8,
        .batches = 3000000,
        .big = 20,
        .seconds = 120,
        .ring_mb = 16,
        .slots = 131072,
        .rate = 250000,
        .resets = 4,
        .history_check = true,
        .lookup_every = 1,
};

static char dir[256];
static double t_start, t_writer_stop, t_deadline;

/* What each reader reports; in process mode these live in a shared
 * anonymous mapping, each reader writing only its own slot. */
struct reader_stats {
	uint64_t verified;
	uint64_t bytes;
	uint64_t big;
	uint64_t laps;        /* ring_read said RING_GONE */
	uint64_t lookup_laps; /* lookup of the last cursor said RING_GONE first */
	uint64_t new_history; /* ...right after a read: a reset, or a lap */
	uint64_t lost;        /* seqs skipped by resuming after a lap */
	uint64_t lookups;     /* lookup(cursor of batch s) == s + 1 checks */
	uint64_t restarts_lookup;
	uint64_t restarts_snap;
	uint64_t snap_stale;  /* snapshot replaced between open and lookup */
	uint64_t oldest;      /* resumed at the oldest held batch after a lap */
	uint64_t probes;      /* batches at the tail verified out of order */
	uint64_t probes_gone; /* ... that were dropped under the probe */
	uint64_t waits;
	uint64_t wait_timeouts;
	uint64_t sleeps;
	uint64_t errors;
	uint64_t head; /* the writer's final head, as this reader saw it */
	int finished;
	int exit_status; /* process mode: from waitpid */
};

struct writer_stats {
	uint64_t appended;
	uint64_t big;
	uint64_t bytes;
	uint64_t snaps_forced;
	uint64_t snaps_random;
	uint64_t wakes;
	uint64_t resets;
	uint64_t bursts;
	uint64_t phases;
	uint64_t errors;
	bool cut_short;
	double seconds;
};

struct reader {
	int id;
	struct ring *r;
	bool shared_handle; /* threads mode: reading through the writer's handle */
	bool slow;          /* reads slower than the writer: lapped again and again */
	bool prober;        /* also reads at the tail, racing the writer's drops */
	uint64_t rng;
	uint64_t next;        /* seq to read next */
	uint64_t last_cursor; /* cursor of batch next - 1 (or the snapshot's) */
	struct ring_buf buf;
	char *want;
	struct reader_stats *st;
};

/* ---- time, randomness, payloads ------------------------------------------- */

static double
now_s(void)
{
	return (double)clock_mono_ns() / 1e9;
}

static void
sleep_ms(double ms)
{
	struct timespec ts = {(time_t)(ms / 1000),
	                      (long)((ms - (double)(long)(ms / 1000) * 1000) * 1e6)};

	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

static uint64_t
splitmix(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static uint64_t
mix(uint64_t x)
{
	return splitmix(&x);
}

/* Uniform enough in [0, n) for n well below 2^64. */
static uint64_t
rnd(uint64_t *s, uint64_t n)
{
	return n ? splitmix(s) % n : 0;
}

static size_t
payload_len(int kind, uint64_t cursor)
{
	uint64_t h = mix(cursor ^ opt.seed ^ 0x6c656e677468ull);

	switch (kind) {
	case KIND_SHORT:
		return SHORT_MIN + (size_t)(h % (SHORT_MAX - SHORT_MIN + 1));
	case KIND_LONG:
		return LONG_MIN + (size_t)(h % (LONG_MAX - LONG_MIN + 1));
	case KIND_BIG:
		return BIG_MIN + (size_t)(h % (BIG_MAX - BIG_MIN + 1));
	default:
		return 0;
	}
}

/* Bytes seeded by the cursor (and the run's seed). */
static void
fill_bytes(char *p, size_t n, uint64_t cursor)
{
	uint64_t s = cursor ^ opt.seed;
	size_t i = 0;

	for (; i + 8 <= n; i += 8) {
		uint64_t v = splitmix(&s);
		memcpy(p + i, &v, 8);
	}
	if (i < n) {
		uint64_t v = splitmix(&s);
		memcpy(p + i, &v, n - i);
	}
}

static void
fill_payload(char *p, size_t len, uint64_t seq, uint64_t cursor, uint64_t prev, int kind)
{
	memcpy(p, &seq, 8);
	memcpy(p + 8, &prev, 8);
	p[16] = (char)kind;
	fill_bytes(p + PAY_HDR, len - PAY_HDR, cursor);
}

/* The snapshot's bytes name the cursor and seq_after it was written at. */
static size_t
fill_snapshot(char *p, uint64_t cursor, uint64_t seq_after)
{
	uint64_t w[4] = {SNAP_WORD, cursor, seq_after, mix(cursor ^ seq_after ^ opt.seed)};
	size_t pad = (size_t)(mix(cursor ^ 0x736e6170ull) % (SNAP_PAD_MAX + 1));

	memcpy(p, w, sizeof(w));
	fill_bytes(p + SNAP_FIXED, pad, ~cursor);
	return SNAP_FIXED + pad;
}

/* ---- writer --------------------------------------------------------------- */

static int
write_snapshot(struct ring *w, uint64_t cursor, uint64_t seq_after)
{
	static char blob[SNAP_FIXED + SNAP_PAD_MAX];
	char err[512];
	struct iovec iov = {blob, fill_snapshot(blob, cursor, seq_after)};

	if (ring_write_snapshot(w, &iov, 1, err, sizeof(err)) != RING_OK) {
		fprintf(stderr, "writer: snapshot at seq %" PRIu64 ": %s\n", seq_after, err);
		return -1;
	}
	return 0;
}

static void
run_writer(struct ring *w, uint64_t base_cursor, struct writer_stats *ws)
{
	char *buf = malloc(BIG_MAX);
	uint64_t rng = opt.seed ^ 0x777269746572ull;
	uint64_t seq = 0, cursor = base_cursor, prev = base_cursor;
	uint64_t big_left = opt.big, resets_left = opt.resets;
	uint64_t wake_in = 1 + rnd(&rng, 8), burst_left = 0, paced_from = 0;
	uint64_t phase_left = 0;
	int small = rnd(&rng, 2) ? KIND_LONG : KIND_SHORT;
	double paced_t0 = now_s(), t0 = paced_t0;

	if (buf == NULL) {
		fprintf(stderr, "writer: out of memory\n");
		ws->errors++;
		return;
	}
	for (uint64_t i = 0; i < opt.batches; i++) {
		if ((i & 1023) == 0) {
			double t = now_s();
			if (t > t_writer_stop) {
				ws->cut_short = true;
				break;
			}
			ring_heartbeat(w);
			ring_set_row_count(w, i);
			if (burst_left > 0) {
				if (--burst_left == 0) {
					paced_from = i;
					paced_t0 = t;
				}
			} else if (rnd(&rng, 512) == 0) {
				/* Unpaced for 64k-256k batches: readers fall behind. */
				burst_left = 64 + rnd(&rng, 193);
				ws->bursts++;
			} else if (opt.rate > 0) {
				double ahead = (double)(i - paced_from) / (double)opt.rate -
				               (t - paced_t0);
				if (ahead > 0)
					sleep_ms(ahead * 1000);
			}
			/* Resets come after a pause, when readers are
			 * likely to be caught up and waiting (long-poll). */
			uint64_t blocks_left = (opt.batches - i + 1023) / 1024;
			if (resets_left > 0 && rnd(&rng, blocks_left) < resets_left) {
				cursor += 1 + rnd(&rng, 1000);
				ring_reset(w, cursor);
				seq++; /* the new history skips one seq (ring.h) */
				prev = cursor;
				if (write_snapshot(w, prev, seq) != 0) {
					ws->errors++;
					break;
				}
				ws->resets++;
				resets_left--;
			}
		}

		if (phase_left == 0) {
			small = small == KIND_LONG ? KIND_SHORT : KIND_LONG;
			phase_left = 50000 + rnd(&rng, 200000);
			ws->phases++;
		}
		phase_left--;
		int kind = big_left > 0 && rnd(&rng, opt.batches - i) < big_left ? KIND_BIG : small;
		uint64_t gap = 1 + rnd(&rng, 64);
		if (rnd(&rng, 1000) == 0)
			gap += rnd(&rng, 1000000000);
		cursor += gap;
		size_t len = payload_len(kind, cursor);
		fill_payload(buf, len, seq, cursor, prev, kind);

		/* One to three pieces: ring_append concatenates them. */
		struct iovec iov[3];
		int n = 1 + (int)rnd(&rng, 3);
		size_t a = rnd(&rng, len + 1), b = rnd(&rng, len + 1);
		if (a > b) {
			size_t t = a;
			a = b;
			b = t;
		}
		if (n == 1) {
			iov[0] = (struct iovec){buf, len};
		} else if (n == 2) {
			iov[0] = (struct iovec){buf, a};
			iov[1] = (struct iovec){buf + a, len - a};
		} else {
			iov[0] = (struct iovec){buf, a};
			iov[1] = (struct iovec){buf + a, b - a};
			iov[2] = (struct iovec){buf + b, len - b};
		}

		int rc = ring_append(w, cursor, iov, n);
		if (rc == RING_NEED_SNAPSHOT) {
			/* The batch after the snapshot would be dropped: write
			 * one at the head, then the append must go through. */
			if (write_snapshot(w, prev, seq) != 0) {
				ws->errors++;
				break;
			}
			ws->snaps_forced++;
			rc = ring_append(w, cursor, iov, n);
		}
		if (rc != RING_OK) {
			fprintf(stderr, "writer: append seq %" PRIu64 " (%zu bytes): %s\n", seq,
			        len, ring_strstatus(rc));
			ws->errors++;
			break;
		}
		seq++;
		prev = cursor;
		ws->appended++;
		/* Now and then the upstream confirms a position past the batch
		 * without a change (ring_advance); the next batch comes after. */
		if (rnd(&rng, 32) == 0) {
			cursor += 1 + rnd(&rng, 8);
			ring_advance(w, cursor);
		}
		ws->bytes += len;
		if (kind == KIND_BIG) {
			ws->big++;
			big_left--;
		}
		if (--wake_in == 0) {
			ring_wake(w);
			ws->wakes++;
			wake_in = 1 + rnd(&rng, 8);
		}
		if (rnd(&rng, 100000) == 0) {
			if (write_snapshot(w, prev, seq) != 0) {
				ws->errors++;
				break;
			}
			ws->snaps_random++;
		}
	}
	ring_wake(w);
	ws->seconds = now_s() - t0;
	free(buf);
}

/* ---- reader --------------------------------------------------------------- */

__attribute__((format(printf, 2, 3))) static void
fail(struct reader *rd, const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	if (rd->st->errors++ >= ERRORS_SHOWN)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	fprintf(stderr, "reader %d: at seq %" PRIu64 ": %s\n", rd->id, rd->next, msg);
}

static void
info_now(struct reader *rd, struct ring_info *info)
{
	ring_info(rd->r, info);
}

/* Check a batch read as seq: header, chain, length and every byte. */
static bool
verify_batch(struct reader *rd, uint64_t seq, uint64_t prev_cursor, const struct ring_rec *rec)
{
	uint64_t pseq, pprev;
	int kind;

	if (rec->seq != seq || rec->len != rd->buf.len) {
		fail(rd, "record says seq %" PRIu64 " len %zu, buffer holds %zu", rec->seq,
		     rec->len, rd->buf.len);
		return false;
	}
	if (rec->len < PAY_HDR) {
		fail(rd, "payload of %zu bytes is too short", rec->len);
		return false;
	}
	memcpy(&pseq, rd->buf.data, 8);
	memcpy(&pprev, rd->buf.data + 8, 8);
	kind = rd->buf.data[16];
	if (pseq != seq) {
		fail(rd, "payload was written as seq %" PRIu64, pseq);
		return false;
	}
	if (rec->cursor <= prev_cursor) {
		fail(rd, "cursor %" PRIu64 " does not increase (previous %" PRIu64 ")", rec->cursor,
		     prev_cursor);
		return false;
	}
	if (pprev != prev_cursor) {
		fail(rd,
		     "batch (cursor %" PRIu64 ") follows cursor %" PRIu64 ", but the reader's "
		     "previous cursor is %" PRIu64 ": a batch was skipped or the history changed "
		     "without RING_GONE",
		     rec->cursor, pprev, prev_cursor);
		return false;
	}
	if (rec->len != payload_len(kind, rec->cursor)) {
		fail(rd, "kind %d, length %zu, expected %zu", kind, rec->len,
		     payload_len(kind, rec->cursor));
		return false;
	}
	fill_bytes(rd->want, rec->len - PAY_HDR, rec->cursor);
	if (memcmp(rd->want, rd->buf.data + PAY_HDR, rec->len - PAY_HDR) != 0) {
		size_t i = 0;
		while (rd->want[i] == rd->buf.data[PAY_HDR + i])
			i++;
		fail(rd, "payload differs at byte %zu of %zu (cursor %" PRIu64 ")", PAY_HDR + i,
		     rec->len, rec->cursor);
		return false;
	}
	return true;
}

/* A batch read out of order: everything but the chain can be checked. */
static bool
verify_alone(struct reader *rd, uint64_t seq, const struct ring_rec *rec, uint64_t *prev)
{
	uint64_t pseq;

	if (rec->seq != seq || rec->len != rd->buf.len || rec->len < PAY_HDR) {
		fail(rd, "probe of seq %" PRIu64 ": record says seq %" PRIu64 " len %zu", seq,
		     rec->seq, rec->len);
		return false;
	}
	memcpy(&pseq, rd->buf.data, 8);
	memcpy(prev, rd->buf.data + 8, 8);
	if (pseq != seq || *prev >= rec->cursor ||
	    rec->len != payload_len(rd->buf.data[16], rec->cursor)) {
		fail(rd,
		     "probe of seq %" PRIu64 " (cursor %" PRIu64 "): payload says seq %" PRIu64
		     ", previous cursor %" PRIu64 ", kind %d, length %zu",
		     seq, rec->cursor, pseq, *prev, rd->buf.data[16], rec->len);
		return false;
	}
	fill_bytes(rd->want, rec->len - PAY_HDR, rec->cursor);
	if (memcmp(rd->want, rd->buf.data + PAY_HDR, rec->len - PAY_HDR) != 0) {
		fail(rd, "probe of seq %" PRIu64 ": payload differs (cursor %" PRIu64 ")", seq,
		     rec->cursor);
		return false;
	}
	return true;
}

/*
 * Read one of the oldest held batches, where the writer drops and
 * overwrites: a copy torn by the writer must come back RING_GONE, never as
 * bytes.  Then lookup of the floor (the cursor before the oldest batch)
 * must lead to the oldest batch.  The reader's own position is untouched.
 */
static void
probe_tail(struct reader *rd)
{
	struct ring_info info;
	struct ring_rec rec;
	uint64_t seq, prev, after = UINT64_MAX;
	int rc;

	info_now(rd, &info);
	seq = info.tail_seq + rnd(&rd->rng, 3);
	rc = ring_read(rd->r, seq, &rd->buf, &rec);
	if (rc == RING_GONE) {
		rd->st->probes_gone++;
		return;
	}
	if (rc == RING_AHEAD)
		return;
	if (rc != RING_OK) {
		fail(rd, "probe of seq %" PRIu64 ": %s", seq, ring_strstatus(rc));
		return;
	}
	if (!verify_alone(rd, seq, &rec, &prev))
		return;
	rd->st->probes++;
	if (seq != info.tail_seq)
		return;
	rc = ring_lookup(rd->r, prev, &after);
	if (rc == RING_OK && after == seq)
		return;
	if (rc == RING_GONE) {
		info_now(rd, &info);
		if (info.tail_seq > seq)
			return; /* the floor moved on */
	}
	fail(rd,
	     "lookup of the floor %" PRIu64 " (before the oldest batch %" PRIu64
	     "): %s, seq %" PRIu64 ", tail now %" PRIu64,
	     prev, seq, ring_strstatus(rc), after, info.tail_seq);
}

/* After a lap the tail, the snapshot or the oldest batch lies past the lost
 * seq; after a reset that caught the reader up at the head, at it. */
static bool
moved_past(uint64_t seq, uint64_t next)
{
	return seq > next || (opt.resets > 0 && seq == next);
}

/* lookup(cursor of batch seq) must lead to seq + 1, unless seq has been
 * dropped since (then the tail is past seq + 1). */
static void
check_lookup(struct reader *rd, uint64_t seq, uint64_t cursor)
{
	struct ring_info info;
	uint64_t after = UINT64_MAX;
	int rc = ring_lookup(rd->r, cursor, &after);

	if (rc == RING_OK && after == seq + 1) {
		rd->st->lookups++;
		return;
	}
	if (rc == RING_GONE) {
		info_now(rd, &info);
		/* Across a ring_reset the floor moves up to the reset cursor
		 * while the tail stays at seq + 1. */
		if (info.tail_seq > seq + 1 || (opt.resets > 0 && info.tail_seq >= seq + 1))
			return;
		fail(rd,
		     "lookup(%" PRIu64 ") of seq %" PRIu64 " says gone but the tail is %" PRIu64,
		     cursor, seq, info.tail_seq);
		return;
	}
	fail(rd, "lookup(%" PRIu64 ") of seq %" PRIu64 ": %s, after %" PRIu64, cursor, seq,
	     ring_strstatus(rc), after);
}

enum resume { RESUME_START, RESUME_LAPPED, RESUME_VOLUNTARY };

/*
 * Open the snapshot and check it against the ring.  RESUME_START and
 * RESUME_LAPPED move the reader to it; RESUME_VOLUNTARY (a new client
 * would start there) only checks it, since jumping would skip or repeat
 * batches this reader still has to see exactly once.
 */
static void
resume_snapshot(struct reader *rd, enum resume why)
{
	char err[512];

	for (;;) {
		struct ring_snapshot snap;
		struct ring_rec rec;
		uint64_t w[4], after = UINT64_MAX;
		int rc;

		if (now_s() > t_deadline) {
			fail(rd, "time limit while resuming from the snapshot");
			return;
		}
		rc = ring_snapshot_open(rd->r, &snap, err, sizeof(err));
		if (rc != RING_OK) {
			fail(rd, "ring_snapshot_open: %s: %s", ring_strstatus(rc), err);
			sleep_ms(10);
			continue;
		}
		if (snap.len < SNAP_FIXED) {
			fail(rd, "snapshot of %zu bytes", snap.len);
			ring_snapshot_release(&snap);
			return;
		}
		memcpy(w, snap.data, sizeof(w));
		if (w[0] != SNAP_WORD || w[1] != snap.cursor || w[2] != snap.seq_after ||
		    w[3] != mix(snap.cursor ^ snap.seq_after ^ opt.seed) ||
		    snap.len !=
		            SNAP_FIXED + mix(snap.cursor ^ 0x736e6170ull) % (SNAP_PAD_MAX + 1)) {
			fail(rd,
			     "snapshot header says cursor %" PRIu64 " seq_after %" PRIu64
			     ", its payload says %" PRIu64 " %" PRIu64 " (len %zu)",
			     snap.cursor, snap.seq_after, w[1], w[2], snap.len);
			ring_snapshot_release(&snap);
			return;
		}
		fill_bytes(rd->want, snap.len - SNAP_FIXED, ~snap.cursor);
		if (memcmp(rd->want, snap.data + SNAP_FIXED, snap.len - SNAP_FIXED) != 0)
			fail(rd, "snapshot bytes differ");

		rc = ring_lookup(rd->r, snap.cursor, &after);
		if (rc == RING_GONE) {
			/* Replaced (and its seq_after dropped) since we opened
			 * it: a newer snapshot is in place; take that. */
			rd->st->snap_stale++;
			ring_snapshot_release(&snap);
			continue;
		}
		if (rc != RING_OK || after != snap.seq_after) {
			fail(rd,
			     "lookup of the snapshot cursor %" PRIu64 ": %s, seq %" PRIu64
			     "; the snapshot says %" PRIu64,
			     snap.cursor, ring_strstatus(rc), after, snap.seq_after);
			ring_snapshot_release(&snap);
			return;
		}
		/* The batch before the snapshot has its cursor... */
		if (snap.seq_after > 0) {
			rc = ring_read(rd->r, snap.seq_after - 1, &rd->buf, &rec);
			if (rc == RING_OK && rec.cursor != snap.cursor)
				fail(rd,
				     "batch %" PRIu64 " before the snapshot has cursor %" PRIu64
				     ", the snapshot %" PRIu64,
				     snap.seq_after - 1, rec.cursor, snap.cursor);
			else if (rc != RING_OK && rc != RING_GONE)
				fail(rd, "reading the batch before the snapshot: %s",
				     ring_strstatus(rc));
		}
		/* ...and the batch after it chains to it. */
		rc = ring_read(rd->r, snap.seq_after, &rd->buf, &rec);
		if (rc == RING_OK)
			verify_batch(rd, snap.seq_after, snap.cursor, &rec);
		else if (rc != RING_AHEAD && rc != RING_GONE)
			fail(rd, "reading the batch after the snapshot: %s", ring_strstatus(rc));

		switch (why) {
		case RESUME_START:
			rd->next = snap.seq_after;
			rd->last_cursor = snap.cursor;
			rd->st->lost += snap.seq_after;
			break;
		case RESUME_LAPPED:
			/* The tail passed next before we opened it, and the
			 * lookup says the snapshot is still held: it must lie
			 * past the lost batch. */
			if (!moved_past(snap.seq_after, rd->next)) {
				fail(rd, "lapped, but the snapshot resumes at seq %" PRIu64,
				     snap.seq_after);
			} else {
				rd->st->lost += snap.seq_after - rd->next;
				rd->next = snap.seq_after;
				rd->last_cursor = snap.cursor;
			}
			break;
		case RESUME_VOLUNTARY:
			rd->st->restarts_snap++;
			break;
		}
		ring_snapshot_release(&snap);
		return;
	}
}

/*
 * After a lap, resume at the oldest batch the ring still holds instead of
 * the snapshot: its payload names the cursor before it (the floor), and
 * lookup of that cursor must lead back to it.  Readers that do this sit
 * right at the tail, where the writer overwrites what they copy.
 */
static void
resume_oldest(struct reader *rd)
{
	for (;;) {
		struct ring_info info;
		struct ring_rec rec;
		uint64_t tail, floor, after = UINT64_MAX;
		int rc;

		if (now_s() > t_deadline) {
			fail(rd, "time limit while resuming at the oldest batch");
			return;
		}
		info_now(rd, &info);
		tail = info.tail_seq;
		rc = ring_read(rd->r, tail, &rd->buf, &rec);
		if (rc == RING_GONE)
			continue; /* dropped already: the tail moved on */
		if (rc == RING_AHEAD) {
			/* Nothing held (only after a reset): the snapshot
			 * is the way back. */
			resume_snapshot(rd, RESUME_LAPPED);
			return;
		}
		if (rc != RING_OK) {
			fail(rd, "reading the oldest batch %" PRIu64 ": %s", tail,
			     ring_strstatus(rc));
			return;
		}
		if (!moved_past(tail, rd->next)) {
			fail(rd, "lapped, but the oldest held batch is %" PRIu64, tail);
			return;
		}
		if (rec.len < PAY_HDR) {
			fail(rd, "oldest batch %" PRIu64 " has %zu bytes", tail, rec.len);
			return;
		}
		memcpy(&floor, rd->buf.data + 8, 8);
		rc = ring_lookup(rd->r, floor, &after);
		if (rc == RING_GONE)
			continue;
		if (rc != RING_OK || after != tail) {
			fail(rd,
			     "lookup of the floor %" PRIu64 " (before the oldest batch %" PRIu64
			     "): %s, seq %" PRIu64,
			     floor, tail, ring_strstatus(rc), after);
			return;
		}
		rd->st->oldest++;
		rd->st->lost += tail - rd->next;
		rd->next = tail;
		rd->last_cursor = floor;
		return; /* the main loop reads and verifies batch tail */
	}
}

/* A lap was reported (by ring_read, or by lookup of the last cursor):
 * prove it real and resume from the snapshot or the oldest batch. */
static void
lapped(struct reader *rd)
{
	struct ring_info info;

	info_now(rd, &info);
	if (!moved_past(info.tail_seq, rd->next))
		fail(rd, "told gone, but the tail is %" PRIu64, info.tail_seq);
	if (rnd(&rd->rng, 2) == 0)
		resume_oldest(rd);
	else
		resume_snapshot(rd, RESUME_LAPPED);
}

/* Start over from the last cursor seen, as a client asking ?cursor=C. */
static void
restart_lookup(struct reader *rd)
{
	uint64_t after = UINT64_MAX;
	int rc = ring_lookup(rd->r, rd->last_cursor, &after);

	rd->st->restarts_lookup++;
	if (rc == RING_OK) {
		if (after != rd->next)
			fail(rd, "lookup of the last cursor %" PRIu64 " gives seq %" PRIu64,
			     rd->last_cursor, after);
		/* As a position (ring_seek), racing the writer: it is held (or
		 * gone by now), never inside a range: every batch here is its
		 * own (cursor - 1, cursor].  The reply cursor there is never
		 * below it. */
		uint64_t pos_after;
		int prc = ring_seek(rd->r, ring_ident(rd->r), rd->last_cursor + 1, &pos_after);
		if (prc != RING_OK && prc != RING_GONE)
			fail(rd, "seek of position %" PRIu64 ": %s", rd->last_cursor + 1,
			     ring_strstatus(prc));
		if (ring_complete(rd->r, rd->next, rd->last_cursor) < rd->last_cursor)
			fail(rd, "complete below the reader's position %" PRIu64, rd->last_cursor);
		return;
	}
	if (rc == RING_GONE) {
		rd->st->lookup_laps++;
		lapped(rd);
		return;
	}
	fail(rd, "lookup of the last cursor %" PRIu64 ": %s", rd->last_cursor, ring_strstatus(rc));
}

/*
 * Is the batch just read at rd->next still in our history?  ring_reset
 * keeps seqs running, so only lookup of our cursor can tell (park.c does
 * the same).  RING_GONE here is a reset, or a lap since the read.
 */
static bool
same_history(struct reader *rd)
{
	uint64_t after = UINT64_MAX;
	int rc = ring_lookup(rd->r, rd->last_cursor, &after);

	if (rc == RING_OK && after == rd->next)
		return true;
	if (rc != RING_GONE)
		fail(rd, "lookup of the last cursor %" PRIu64 " after a read: %s, seq %" PRIu64,
		     rd->last_cursor, ring_strstatus(rc), after);
	return false;
}

/* ring_read said RING_GONE for rd->next: the lap must be real and be
 * confirmed by lookup of the last cursor (or by the next read). */
static void
read_gone(struct reader *rd)
{
	uint64_t after = UINT64_MAX;
	int rc;

	rd->st->laps++;
	rc = ring_lookup(rd->r, rd->last_cursor, &after);
	if (rc == RING_OK) {
		if (after != rd->next) {
			fail(rd, "lapped, but lookup of the last cursor gives seq %" PRIu64, after);
		} else {
			rc = ring_read(rd->r, rd->next, &rd->buf, NULL);
			if (rc != RING_GONE)
				fail(rd,
				     "lapped, lookup still finds the seq and reading it says %s",
				     ring_strstatus(rc));
		}
	} else if (rc != RING_GONE) {
		fail(rd, "lapped, then lookup of the last cursor says %s", ring_strstatus(rc));
	}
	lapped(rd);
}

/* Caught up.  Returns true when the writer is done and we read its last
 * batch. */
static bool
caught_up(struct reader *rd)
{
	static const int timeouts[] = {0, 1, 5, 20, 100, 250};
	struct ring_info info;
	int rc, t;

	info_now(rd, &info);
	if (info.state == RING_STATE_CLOSED) {
		/* head_seq is final once the state says closed. */
		info_now(rd, &info);
		if (rd->next >= info.head_seq) {
			if (rd->next > info.head_seq)
				fail(rd, "past the final head %" PRIu64, info.head_seq);
			rd->st->head = info.head_seq;
			return true;
		}
		return false;
	}
	t = timeouts[rnd(&rd->rng, sizeof(timeouts) / sizeof(timeouts[0]))];
	rd->st->waits++;
	double t0 = now_s();
	rc = ring_wait(rd->r, rd->next, t);
	double waited_ms = (now_s() - t0) * 1000;
	if (rc == RING_OK) {
		info_now(rd, &info);
		if (info.head_seq <= rd->next)
			fail(rd, "ring_wait says ready, the head is %" PRIu64, info.head_seq);
	} else if (rc == RING_TIMEOUT) {
		rd->st->wait_timeouts++;
		/* Only the deadline, or the writer closing, ends a wait
		 * with nothing new (no signals are sent here). */
		info_now(rd, &info);
		if (waited_ms < t - 1.0 && info.state != RING_STATE_CLOSED)
			fail(rd, "ring_wait(%d ms) timed out after %.2f ms", t, waited_ms);
	} else {
		fail(rd, "ring_wait: %s", ring_strstatus(rc));
	}
	return false;
}

static void
reader_run(struct reader *rd)
{
	rd->want = malloc(BIG_MAX);
	if (rd->want == NULL) {
		fail(rd, "out of memory");
		return;
	}
	resume_snapshot(rd, RESUME_START);
	for (uint64_t iter = 0;; iter++) {
		struct ring_rec rec;
		uint64_t dice;
		int rc;

		if ((iter & 255) == 0 && now_s() > t_deadline) {
			fail(rd, "time limit: not at the end after %.0f s", opt.seconds);
			break;
		}
		if (rd->st->errors >= 1000) {
			fprintf(stderr, "reader %d: giving up after %" PRIu64 " errors\n", rd->id,
			        rd->st->errors);
			break;
		}
		dice = rnd(&rd->rng, 1000000);
		if (rd->slow && rnd(&rd->rng, 50) == 0) {
			/* Slower than the writer's paced rate on average. */
			sleep_ms(0.2 + (double)rnd(&rd->rng, 1000) / 1000);
		}
		if (rd->prober && rnd(&rd->rng, 4) == 0)
			probe_tail(rd);
		if (dice < 3) {
			/* Long enough to be lapped by a burst. */
			rd->st->sleeps++;
			sleep_ms(200 + (double)rnd(&rd->rng, 1300));
		} else if (dice < 30) {
			rd->st->sleeps++;
			sleep_ms(1 + (double)rnd(&rd->rng, 20));
		} else if (dice < 230) {
			restart_lookup(rd);
		} else if (dice < 280) {
			resume_snapshot(rd, RESUME_VOLUNTARY);
		} else if (dice < 300) {
			probe_tail(rd);
		} else if (dice < 500) {
			/* A wait for something that may already be there. */
			rd->st->waits++;
			rc = ring_wait(rd->r, rd->next, 0);
			if (rc == RING_TIMEOUT)
				rd->st->wait_timeouts++;
		}

		rc = ring_read(rd->r, rd->next, &rd->buf, &rec);
		if (rc == RING_OK && opt.resets > 0 && opt.history_check && !same_history(rd)) {
			rd->st->new_history++;
			lapped(rd);
			continue;
		}
		if (rc == RING_OK) {
			if (verify_batch(rd, rd->next, rd->last_cursor, &rec)) {
				rd->st->verified++;
				rd->st->bytes += rec.len;
				if (rec.len >= BIG_MIN)
					rd->st->big++;
			}
			if (opt.lookup_every > 0 && rnd(&rd->rng, opt.lookup_every) == 0)
				check_lookup(rd, rd->next, rec.cursor);
			/* Move on even after an error, so one bad batch does
			 * not become millions of reports. */
			rd->last_cursor = rec.cursor;
			rd->next++;
		} else if (rc == RING_GONE) {
			read_gone(rd);
		} else if (rc == RING_AHEAD) {
			if (caught_up(rd)) {
				rd->st->finished = 1;
				break;
			}
		} else {
			fail(rd, "ring_read: %s (%s)", ring_strstatus(rc), strerror(errno));
			break;
		}
	}
	free(rd->want);
	free(rd->buf.data);
}

static void *
reader_thread(void *arg)
{
	reader_run(arg);
	return NULL;
}

/* ---- main ------------------------------------------------------------------- */

static void
usage(FILE *f)
{
	fprintf(f, "usage: stress_ring [--readers N] [--batches N] [--big N] [--threads]\n"
	           "                   [--seconds S] [--seed N] [--ring-mb M] [--slots N]\n"
	           "                   [--rate N] [--resets N] [--no-history-check]\n"
	           "                   [--lookup-every N]\n"
	           "  --readers N       reader processes (threads with --threads), default 8\n"
	           "  --batches N       batches the writer appends, default 3000000\n"
	           "  --big N           of which 1-4 MB ones, default 20\n"
	           "  --threads         readers are threads of one process (for TSan)\n"
	           "  --seconds S       hard time limit, default 120: the writer stops at 3/4\n"
	           "                    of it, readers still running at S fail\n"
	           "  --seed N          random seed (default: from the clock; printed)\n"
	           "  --ring-mb M       data area in MiB, default 16\n"
	           "  --slots N         index slots (batches held + 2), default 131072;\n"
	           "                    0: the ring's default, one per 256 bytes of data\n"
	           "  --rate N          batches/s between unpaced bursts, default 250000\n"
	           "                    (0: never paced)\n"
	           "  --resets N        ring_reset calls, default 4\n"
	           "  --no-history-check  accept a batch without confirming by lookup that\n"
	           "                    it follows the reader's cursor (the ring alone\n"
	           "                    must then keep histories apart)\n"
	           "  --lookup-every N  check lookup(cursor) for one batch in N, default 1\n");
}

static bool
parse_u64(const char *s, uint64_t *out)
{
	char *end;

	errno = 0;
	*out = strtoull(s, &end, 0);
	return errno == 0 && end != s && *end == '\0' && s[0] != '-';
}

static int
parse_args(int argc, char **argv)
{
	static const struct option longopts[] = {
	        {"readers", required_argument, NULL, 'r'},
	        {"batches", required_argument, NULL, 'b'},
	        {"big", required_argument, NULL, 'B'},
	        {"threads", no_argument, NULL, 't'},
	        {"seconds", required_argument, NULL, 's'},
	        {"seed", required_argument, NULL, 'S'},
	        {"ring-mb", required_argument, NULL, 'm'},
	        {"slots", required_argument, NULL, 'i'},
	        {"rate", required_argument, NULL, 'R'},
	        {"resets", required_argument, NULL, 'x'},
	        {"no-history-check", no_argument, NULL, 'H'},
	        {"lookup-every", required_argument, NULL, 'l'},
	        {"help", no_argument, NULL, 'h'},
	        {NULL, 0, NULL, 0},
	};
	bool seeded = false;
	uint64_t v;
	int c;

	while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		if (c == 'h') {
			usage(stdout);
			exit(0);
		}
		if (c == 't') {
			opt.threads = true;
			continue;
		}
		if (c == 'H') {
			opt.history_check = false;
			continue;
		}
		if (c == '?' || optarg == NULL || !parse_u64(optarg, &v)) {
			if (c != '?')
				fprintf(stderr, "stress_ring: bad number: %s\n", optarg);
			usage(stderr);
			return -1;
		}
		switch (c) {
		case 'r':
			opt.readers = (int)(v > 1024 ? 1024 : v);
			break;
		case 'b':
			opt.batches = v;
			break;
		case 'B':
			opt.big = v;
			break;
		case 's':
			opt.seconds = (double)v;
			break;
		case 'S':
			opt.seed = v;
			seeded = true;
			break;
		case 'm':
			opt.ring_mb = v;
			break;
		case 'i':
			opt.slots = v;
			break;
		case 'R':
			opt.rate = v;
			break;
		case 'x':
			opt.resets = v;
			break;
		case 'l':
			opt.lookup_every = (uint32_t)v;
			break;
		default:
			usage(stderr);
			return -1;
		}
	}
	if (optind != argc || opt.readers < 1 || opt.seconds < 1 ||
	    opt.ring_mb < (opt.big ? 16 : 1) || opt.ring_mb > 4096 || opt.big > opt.batches ||
	    opt.slots > (1u << 30)) {
		fprintf(stderr, "stress_ring: need --readers >= 1, --seconds >= 1, --ring-mb "
		                "1..4096 (16 or more for 4 MB batches), --big <= --batches, "
		                "--slots <= 2^30\n");
		usage(stderr);
		return -1;
	}
	if (!seeded) {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		opt.seed = mix((uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 20) ^
		               (uint64_t)getpid());
	}
	return 0;
}

static void
remove_dir(void)
{
	char path[512];
	const char *names[] = {FEED ".ring", FEED ".snap", FEED ".snap.tmp", FEED ".ring.tmp"};

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
		unlink(path);
	}
	rmdir(dir);
}

static void
print_reader(int i, const struct reader_stats *s)
{
	printf("reader %d (%s%s): verified %" PRIu64 " batches (%.1f MB, %" PRIu64
	       " big), laps %" PRIu64 " (+%" PRIu64 " by lookup, %" PRIu64 " new history, %" PRIu64
	       " seqs lost), lookups %" PRIu64 ", restarts %" PRIu64 " lookup / %" PRIu64
	       " snapshot (%" PRIu64 " stale), %" PRIu64 " resumed at the oldest, probes %" PRIu64
	       " (%" PRIu64 " gone), waits %" PRIu64 " (%" PRIu64 " timed out), sleeps %" PRIu64
	       ", errors %" PRIu64 "%s\n",
	       i, opt.threads ? "thread" : "process",
	       i % 4 == 3   ? ", slow"
	       : i % 4 == 2 ? ", prober"
	                    : "",
	       s->verified, (double)s->bytes / 1e6, s->big, s->laps, s->lookup_laps, s->new_history,
	       s->lost, s->lookups, s->restarts_lookup, s->restarts_snap, s->snap_stale, s->oldest,
	       s->probes, s->probes_gone, s->waits, s->wait_timeouts, s->sleeps, s->errors,
	       s->finished ? "" : " NOT FINISHED");
}

int
main(int argc, char **argv)
{
	struct ring_config cfg = {0};
	struct writer_stats ws = {0};
	struct reader_stats *stats;
	struct reader *readers;
	struct ring *w;
	pthread_t *threads = NULL;
	pid_t *pids = NULL;
	char err[512];
	const char *tmp;
	uint64_t base_cursor, total_verified = 0, total_laps = 0, total_lost = 0;
	uint64_t total_errors = 0;
	size_t stats_len;
	int failed = 0;

	if (parse_args(argc, argv) != 0)
		return 2;
	setvbuf(stdout, NULL, _IOLBF, 0);

	tmp = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : getenv("TMPDIR");
	snprintf(dir, sizeof(dir), "%s/stress_ring.XXXXXX", tmp && *tmp ? tmp : "/tmp");
	if (mkdtemp(dir) == NULL) {
		fprintf(stderr, "stress_ring: mkdtemp %s: %s\n", dir, strerror(errno));
		return 1;
	}
	t_start = now_s();
	t_writer_stop = t_start + opt.seconds * 0.75;
	t_deadline = t_start + opt.seconds;
	printf("stress_ring: seed %" PRIu64 ", %d reader %s, %" PRIu64 " batches (%" PRIu64
	       " big), ring %" PRIu64 " MiB / %" PRIu64 " slots, rate %" PRIu64
	       "/s, resets %" PRIu64 ", limit %.0f s, dir %s\n",
	       opt.seed, opt.readers, opt.threads ? "threads" : "processes", opt.batches, opt.big,
	       opt.ring_mb, opt.slots, opt.rate, opt.resets, opt.seconds, dir);

	base_cursor = 1000000 + mix(opt.seed) % 1000000;
	cfg.dir = dir;
	cfg.feed = FEED;
	cfg.source = "test";
	cfg.columns_json = "[{\"name\":\"stress\",\"type\":\"bytea\"}]";
	cfg.data_size = opt.ring_mb << 20;
	cfg.index_slots = (uint32_t)opt.slots;
	cfg.base_cursor = base_cursor;
	if (ring_create(&cfg, &w, err, sizeof(err)) != RING_OK) {
		fprintf(stderr, "stress_ring: %s\n", err);
		rmdir(dir);
		return 1;
	}
	/* Readers start from a snapshot, as a new client does. */
	if (write_snapshot(w, base_cursor, 0) != 0) {
		ring_close(w, true);
		rmdir(dir);
		return 1;
	}
	ring_set_state(w, RING_STATE_LIVE);

	stats_len = sizeof(*stats) * (size_t)opt.readers;
	stats = mmap(NULL, stats_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	readers = calloc((size_t)opt.readers, sizeof(*readers));
	if (stats == MAP_FAILED || readers == NULL) {
		fprintf(stderr, "stress_ring: out of memory\n");
		return 1;
	}
	for (int i = 0; i < opt.readers; i++) {
		readers[i].id = i;
		readers[i].rng = mix(opt.seed ^ (0x72656164ull + (uint64_t)i * 0x1000193ull));
		readers[i].st = &stats[i];
		readers[i].slow = i % 4 == 3;
		readers[i].prober = i % 4 == 2;
	}

	if (opt.threads) {
		threads = calloc((size_t)opt.readers, sizeof(*threads));
		for (int i = 0; i < opt.readers; i++) {
			struct reader *rd = &readers[i];
			/* Odd readers share the writer's mapping, so TSan sees
			 * writer and reader accesses at the same addresses. */
			rd->shared_handle = i % 2 == 1;
			if (rd->shared_handle) {
				rd->r = w;
			} else if (ring_open(dir, FEED, &rd->r, err, sizeof(err)) != RING_OK) {
				fprintf(stderr, "reader %d: %s\n", i, err);
				stats[i].errors++;
				continue;
			}
			if (pthread_create(&threads[i], NULL, reader_thread, rd) != 0) {
				fprintf(stderr, "reader %d: pthread_create failed\n", i);
				stats[i].errors++;
				if (!rd->shared_handle)
					ring_close(rd->r, false);
				rd->r = NULL;
			}
		}
	} else {
		pids = calloc((size_t)opt.readers, sizeof(*pids));
		fflush(stdout);
		fflush(stderr);
		for (int i = 0; i < opt.readers; i++) {
			pid_t pid = fork();
			if (pid < 0) {
				fprintf(stderr, "stress_ring: fork: %s\n", strerror(errno));
				stats[i].errors++;
				continue;
			}
			if (pid == 0) {
				struct reader *rd = &readers[i];
				/* The writer's mapping came along with fork;
				 * readers map the segment themselves. */
				if (ring_open(dir, FEED, &rd->r, err, sizeof(err)) != RING_OK) {
					fprintf(stderr, "reader %d: %s\n", i, err);
					_exit(1);
				}
				reader_run(rd);
				ring_close(rd->r, false);
				_exit(rd->st->errors || !rd->st->finished ? 1 : 0);
			}
			pids[i] = pid;
		}
	}

	run_writer(w, base_cursor, &ws);
	/* The head is final: readers that catch up with it stop. */
	ring_set_state(w, RING_STATE_CLOSED);
	ring_wake(w);
	struct ring_info winfo;
	ring_info(w, &winfo);

	if (opt.threads) {
		for (int i = 0; i < opt.readers; i++) {
			if (readers[i].r == NULL)
				continue;
			pthread_join(threads[i], NULL);
			if (!readers[i].shared_handle)
				ring_close(readers[i].r, false);
		}
	} else {
		int left = 0;
		for (int i = 0; i < opt.readers; i++)
			left += pids[i] > 0;
		while (left > 0) {
			int status;
			pid_t pid = waitpid(-1, &status, WNOHANG);
			if (pid < 0 && errno == EINTR)
				continue;
			if (pid < 0)
				break;
			if (pid == 0) {
				if (now_s() > t_deadline + KILL_GRACE_S) {
					for (int i = 0; i < opt.readers; i++) {
						if (pids[i] > 0) {
							fprintf(stderr,
							        "reader %d: killed at the time "
							        "limit\n",
							        i);
							kill(pids[i], SIGKILL);
						}
					}
				}
				sleep_ms(10);
				continue;
			}
			for (int i = 0; i < opt.readers; i++) {
				if (pids[i] != pid)
					continue;
				pids[i] = 0;
				stats[i].exit_status = status;
				if (WIFSIGNALED(status)) {
					fprintf(stderr, "reader %d: killed by signal %d\n", i,
					        WTERMSIG(status));
					stats[i].errors++;
				}
				left--;
			}
		}
	}

	printf("writer: %" PRIu64 " batches (%" PRIu64 " big, %.1f MB) in %.1f s, %" PRIu64
	       " snapshots (%" PRIu64 " forced), %" PRIu64 " wakes, %" PRIu64 " bursts, %" PRIu64
	       " phases, %" PRIu64 " resets, head seq %" PRIu64 ", tail seq %" PRIu64 "%s\n",
	       ws.appended, ws.big, (double)ws.bytes / 1e6, ws.seconds,
	       ws.snaps_forced + ws.snaps_random, ws.snaps_forced, ws.wakes, ws.bursts, ws.phases,
	       ws.resets, winfo.head_seq, winfo.tail_seq,
	       ws.cut_short ? " (stopped at 3/4 of --seconds)" : "");
	if (ws.errors) {
		printf("writer: %" PRIu64 " errors\n", ws.errors);
		failed = 1;
	}
	/* Each reset skips one seq (ring.h). */
	if (winfo.head_seq != ws.appended + ws.resets) {
		printf("writer: head seq %" PRIu64 " but %" PRIu64 " appended and %" PRIu64
		       " resets\n",
		       winfo.head_seq, ws.appended, ws.resets);
		failed = 1;
	}
	for (int i = 0; i < opt.readers; i++) {
		struct reader_stats *s = &stats[i];
		print_reader(i, s);
		if (s->finished && s->verified + s->lost != winfo.head_seq) {
			printf("reader %d: verified %" PRIu64 " + lost %" PRIu64 " != head %" PRIu64
			       ": a batch was seen twice or skipped\n",
			       i, s->verified, s->lost, winfo.head_seq);
			s->errors++;
		}
		if (s->finished && s->head != winfo.head_seq) {
			printf("reader %d: finished at head %" PRIu64 "\n", i, s->head);
			s->errors++;
		}
		if (!opt.threads && WIFEXITED(s->exit_status) && WEXITSTATUS(s->exit_status) != 0 &&
		    s->errors == 0)
			s->errors++;
		if (s->errors || !s->finished)
			failed = 1;
		total_verified += s->verified;
		total_laps += s->laps + s->lookup_laps + s->new_history;
		total_lost += s->lost;
		total_errors += s->errors;
	}
	printf("total: %d readers verified %" PRIu64 " batches, %" PRIu64 " laps detected (%" PRIu64
	       " seqs lost to laps), %" PRIu64 " errors, %.1f s: %s\n",
	       opt.readers, total_verified, total_laps, total_lost, total_errors, now_s() - t_start,
	       failed ? "FAIL" : "PASS");

	ring_close(w, true);
	remove_dir();
	munmap(stats, stats_len);
	free(readers);
	free(threads);
	free(pids);
	return failed;
}
