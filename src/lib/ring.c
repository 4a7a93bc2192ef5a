/*
 * ring.c - the shared-memory feed ring (see ring.h for the contract).
 *
 * Segment layout (offsets from the start of FEED.ring):
 *
 *   0              struct ring_hdr      identity, then one cache line each
 *                                       for head, tail, wake word, status
 *   columns_off    column-list JSON     written once, before publication
 *   index_off      struct ring_ent[n]   n = index_slots, a power of two
 *   data_off       data area            data_size bytes, a power of two
 *
 * Sequence numbers and data offsets are free-running uint64 values; a
 * slot is seq & (n - 1) and a byte position is off & (data_size - 1).
 * Records never straddle the end of the data area: when one does not fit,
 * the writer skips to offset 0 (the skipped bytes belong to no record).
 *
 * Invariants (asserted in debug builds on the writer side):
 *   I1  base_seq <= tail_seq <= head_seq
 *   I2  head_seq - tail_seq <= index_slots - 2, so the entry of tail_seq-1
 *       (the floor: the cursor just before the oldest held batch) is never
 *       overwritten while tail_seq is unchanged;
 *   I3  the bytes of every held record lie in [tail_off, head_off) and
 *       head_off - tail_off <= data_size;
 *   I4  cursors strictly increase with seq, and each record's lo is at
 *       least the cursor before it (ranges (lo, cursor] never overlap);
 *   I5  while a snapshot is current, tail_seq <= snap_seq_after;
 *   I6  head_cursor <= frontier, and every record appended from now on
 *       has lo >= frontier (the frontier only promises what is held).
 *
 * Memory ordering.  The writer publishes a record in this order:
 *     1. drop old records: tail_seq = new tail            (store, relaxed)
 *        release fence
 *     2. write record bytes and its index entry
 *     3. head_seq = seq + 1                                (store-release)
 * A reader acquires head_seq, then reads the entry and bytes (ordered after
 * step 2 by the release/acquire pair on head_seq).  Because the writer may
 * overwrite those bytes at any time after step 1 of a later append, the
 * reader copies them out and only then rechecks tail_seq behind an acquire
 * fence: the seqlock pattern.  If the writer's step-2 stores of a later
 * append reached any byte the reader copied, the reader's fence guarantees
 * it also sees the tail_seq stored before the writer's release fence, so it
 * reports RING_GONE and discards the copy.  The copy itself races with the
 * writer by design; it is excluded from TSan (see copy_racy).
 *
 * The frontier.  The writer stores it with a release store after the
 * head_seq of every record at or below it (ring_append stores head_seq,
 * then the frontier; ring_advance stores only the frontier, for a position
 * with no batch).  A reader that acquires the frontier F and only then
 * head_seq therefore sees every record with cursor <= F below that head:
 * a reply built from the records below it is complete through F
 * (ring_complete).  Reading them the other way round could pair an old
 * head with a new frontier and skip a batch.
 *
 * Restart.  A restarted writer takes its segment back with ring_adopt: the
 * writer's private offsets (w_*) are recovered from the index, and what a
 * killed writer can leave half done is discussed there.  One writer at a
 * time: the writer holds an flock on the segment file, which the kernel
 * releases when it dies.
 */
#include "ring.h"

#include "atomics.h"
#include "clock.h"
#include "log.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdalign.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define RING_MAGIC "TGRING\0\1"
#define SNAP_MAGIC "TGSNAP\0\1"
#define REC_MAGIC 0x54475243u /* "TGRC" */
#define CACHELINE 64
#define MIN_DATA_SIZE (64 * 1024)
#define MIN_INDEX_SLOTS 16
#define HEARTBEAT_STALE_MS 5000
#define PID_PROBE_MS 100 /* ring_info probes the writer's pid at most this often */

struct ring_hdr {
	/* Identity: written once by ring_create before the segment is
	 * renamed into place, read-only afterwards. */
	char magic[8];
	uint32_t layout_version;
	uint32_t hdr_size;
	uint64_t segment_size;
	uint64_t segment_id;
	uint64_t columns_off;
	uint64_t index_off;
	uint64_t data_off;
	uint64_t data_size;
	uint32_t index_slots;
	uint32_t columns_len;
	int32_t writer_pid; /* rewritten by ring_adopt (see there) */
	uint32_t def_hash;  /* def_hash(ring_config.definition); 0 before it existed */
	uint32_t rows_hash; /* def_hash(ring_config.rows): the identity's part */
	uint32_t pad_;
	char feed[RING_FEED_NAME_MAX + 1];
	char source[32];

	/* Head: written by the writer on every append. */
	alignas(CACHELINE) atomic_u64 head_seq;
	atomic_u64 head_cursor;
	atomic_u64 frontier; /* complete through here (see the top of the file) */

	/* Tail: advanced by the writer when it drops records. */
	alignas(CACHELINE) atomic_u64 tail_seq;

	/* Base of the current history (changes only on ring_reset), guarded
	 * by base_gen, a sequence count: odd while a reset is in progress. */
	alignas(CACHELINE) atomic_u64 base_gen;
	atomic_u64 base_seq;
	atomic_u64 base_cursor;
	atomic_u32 base_ident; /* the history's identity (ring_ident) */
	/* The identity's text: read and written by the writer only. */
	char upstream[RING_UPSTREAM_MAX + 1];

	/* The futex word readers sleep on; bumped by ring_wake. */
	alignas(CACHELINE) atomic_u32 wake;

	/* Status, written now and then by the writer. */
	alignas(CACHELINE) atomic_u64 heartbeat_ms;
	atomic_u64 row_count;
	atomic_u32 state;
	atomic_u64 snap_gen;
	atomic_u64 snap_cursor;
	atomic_u64 snap_seq_after;
	atomic_u64 confirmed_ms; /* ring_confirmed (clock_mono_ms) */
	atomic_u32 stall_ms;

	/* The last upstream error (ring_set_error): err_seq is odd while the
	 * writer rewrites err; readers retry until they see the same even
	 * value before and after copying (a seqlock over a byte string). */
	alignas(CACHELINE) atomic_u32 err_seq;
	_Atomic unsigned char err[RING_ERROR_MAX + 1]; /* relaxed bytes */
};

/* One index entry per record; fields are relaxed atomics because readers
 * may read a slot the writer is rewriting (they then fail validation). */
struct ring_ent {
	atomic_u64 seq;
	atomic_u64 lo; /* the record stands for (lo, cursor] */
	atomic_u64 cursor;
	atomic_u64 off; /* free-running offset of the record header */
	atomic_u64 len; /* record bytes including header, 8-aligned */
};

/* What precedes each record's payload in the data area. */
struct rec_hdr {
	uint32_t magic;
	uint32_t payload_len;
	uint64_t seq;
	uint64_t cursor;
};

struct snap_hdr {
	char magic[8];
	uint32_t layout_version;
	uint32_t hdr_size;
	uint64_t segment_id;
	uint64_t cursor;
	uint64_t seq_after;
	uint64_t payload_len;
	uint32_t ident; /* base_ident when written */
	uint32_t pad;
};

struct ring {
	struct ring_hdr *hdr;
	struct ring_ent *index;
	char *data;
	size_t map_len;
	uint64_t data_mask;
	uint64_t index_mask;
	bool writer;
	dev_t dev;
	ino_t ino;
	char path[PATH_MAX];
	char snap_path[PATH_MAX];
	const char *columns;

	/* Writer-local copies (only the writer changes these words, so it
	 * never needs to read them back from shared memory). */
	uint64_t w_head_off;
	uint64_t w_tail_off;
	bool w_has_snap;
	/* The identity the next ring_reset publishes (ring_set_upstream). */
	char w_upstream[RING_UPSTREAM_MAX + 1];
	/* The segment's fd, held open with flock(LOCK_EX) for as long as we
	 * are its writer: ring_adopt in another process sees the lock and
	 * refuses; the kernel drops it when the writer dies, even by kill -9. */
	int w_lock_fd;

	/* Reader-local: the last kill(writer_pid, 0), as (ms << 23 | pid << 1
	 * | alive), 0 before the first (writer_pid_alive).  One word, so
	 * threads sharing this struct ring read a consistent triple; relaxed,
	 * as it publishes nothing else. */
	atomic_u64 pid_probe;
};

static uint64_t
round_pow2(uint64_t v)
{
	uint64_t p = 1;

	while (p < v)
		p <<= 1;
	return p;
}

static uint64_t
align_up(uint64_t v, uint64_t a)
{
	return (v + a - 1) & ~(a - 1);
}

/* FNV-1a of the feed's definition; never 0, which marks a segment made
 * before definitions were recorded (ring_adopt refuses those). */
static uint32_t
def_hash(const char *def)
{
	uint32_t h = 2166136261u;

	for (const unsigned char *p = (const unsigned char *)(def ? def : ""); *p; p++)
		h = (h ^ *p) * 16777619u;
	return h ? h : 1;
}

/* The identity of a history: the hash of what determines the feed's rows
 * (ring_config.rows) and the upstream's identity text, hashed on (FNV-1a);
 * never 0.  Two hosts with the same feed on the same upstream agree on it,
 * whatever their slots. */
static uint32_t
ident_of(uint32_t def, const char *upstream)
{
	uint32_t h = 2166136261u;

	for (int i = 0; i < 4; i++)
		h = (h ^ ((def >> (8 * i)) & 0xff)) * 16777619u;
	for (const unsigned char *p = (const unsigned char *)upstream; *p; p++)
		h = (h ^ *p) * 16777619u;
	return h ? h : 1;
}

/* The data area and index sizes ring_create gives cfg. */
static void
config_sizes(const struct ring_config *cfg, uint64_t *data_size, uint64_t *slots)
{
	*data_size = round_pow2(cfg->data_size < MIN_DATA_SIZE ? MIN_DATA_SIZE : cfg->data_size);
	*slots = cfg->index_slots ? cfg->index_slots : *data_size / 256;
	*slots = round_pow2(*slots < MIN_INDEX_SLOTS ? MIN_INDEX_SLOTS : *slots);
}

bool
ring_feed_name_ok(const char *feed)
{
	size_t n = strlen(feed);

	if (n == 0 || n > RING_FEED_NAME_MAX)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = feed[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '_' || c == '-'))
			return false;
	}
	return true;
}

static int
make_paths(struct ring *r, const char *dir, const char *feed, char *err, size_t errlen)
{
	if (dir == NULL)
		dir = RING_DEFAULT_DIR;
	if (!ring_feed_name_ok(feed)) {
		log_seterr(err, errlen, "invalid feed name \"%s\": use 1-%d of [A-Za-z0-9_-]", feed,
		           RING_FEED_NAME_MAX);
		return RING_ERR;
	}
	if ((size_t)snprintf(r->path, sizeof(r->path), "%s/%s.ring", dir, feed) >=
	            sizeof(r->path) ||
	    (size_t)snprintf(r->snap_path, sizeof(r->snap_path), "%s/%s.snap", dir, feed) >=
	            sizeof(r->snap_path)) {
		log_seterr(err, errlen, "ring directory path too long: %s", dir);
		return RING_ERR;
	}
	return RING_OK;
}

static void
bind_mapping(struct ring *r, void *base, size_t len)
{
	r->hdr = base;
	r->map_len = len;
	r->index = (struct ring_ent *)((char *)base + r->hdr->index_off);
	r->data = (char *)base + r->hdr->data_off;
	r->data_mask = r->hdr->data_size - 1;
	r->index_mask = (uint64_t)r->hdr->index_slots - 1;
	r->columns = (const char *)base + r->hdr->columns_off;
}

/* ------------------------------------------------------------------ */
/* writer                                                              */
/* ------------------------------------------------------------------ */

int
ring_create(const struct ring_config *cfg, struct ring **out, char *err, size_t errlen)
{
	struct ring *r;
	char tmp[PATH_MAX + 8];
	const char *columns = cfg->columns_json ? cfg->columns_json : "[]";
	size_t columns_len = strlen(columns);
	uint64_t data_size, slots, columns_off, index_off, data_off, total;
	struct stat st;
	void *base;
	int fd;

	*out = NULL;
	if (columns_len >= RING_COLUMNS_MAX) {
		log_seterr(err, errlen, "feed %s: column list is %zu bytes, the limit is %d",
		           cfg->feed, columns_len, RING_COLUMNS_MAX);
		return RING_ERR;
	}
	r = calloc(1, sizeof(*r));
	if (r == NULL) {
		log_seterr(err, errlen, "out of memory");
		return RING_ERR;
	}
	if (make_paths(r, cfg->dir, cfg->feed, err, errlen) != RING_OK)
		goto failed;

	config_sizes(cfg, &data_size, &slots);
	if (slots > UINT32_MAX / 2) {
		log_seterr(err, errlen, "feed %s: index of %llu slots is too large", cfg->feed,
		           (unsigned long long)slots);
		goto failed;
	}
	columns_off = align_up(sizeof(struct ring_hdr), CACHELINE);
	index_off = align_up(columns_off + columns_len + 1, 4096);
	data_off = align_up(index_off + slots * sizeof(struct ring_ent), 4096);
	total = data_off + data_size;

	snprintf(tmp, sizeof(tmp), "%s.tmp", r->path);
	fd = open(tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, RING_FILE_MODE);
	if (fd < 0) {
		log_seterr(err, errlen, "cannot create %s: %s", tmp, strerror(errno));
		goto failed;
	}
	/* Ours alone: nobody else has the new file yet, and the lock is
	 * held on past the rename (ring_adopt in another daemon refuses). */
	(void)flock(fd, LOCK_EX | LOCK_NB);
	/* posix_fallocate reserves the pages now, so a full /dev/shm is an
	 * error here rather than a SIGBUS on first touch. */
	if ((errno = posix_fallocate(fd, 0, (off_t)total)) != 0) {
		log_seterr(err, errlen, "cannot size %s to %llu bytes: %s%s", tmp,
		           (unsigned long long)total, strerror(errno),
		           errno == ENOSPC ? " (the ring directory's filesystem is full: lower "
		                             "ring_size, or give it more room; tailgated --check "
		                             "compares the two)"
		                           : "");
		close(fd);
		unlink(tmp);
		goto failed;
	}
	base = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (base == MAP_FAILED || fstat(fd, &st) != 0) {
		log_seterr(err, errlen, "cannot map %s: %s", tmp, strerror(errno));
		close(fd);
		unlink(tmp);
		goto failed;
	}

	struct ring_hdr *h = base;
	memcpy(h->magic, RING_MAGIC, sizeof(h->magic));
	h->layout_version = RING_LAYOUT_VERSION;
	h->hdr_size = sizeof(struct ring_hdr);
	h->segment_size = total;
	if (getrandom(&h->segment_id, sizeof(h->segment_id), 0) != sizeof(h->segment_id))
		h->segment_id = ((uint64_t)getpid() << 32) ^ clock_mono_ms();
	h->columns_off = columns_off;
	h->index_off = index_off;
	h->data_off = data_off;
	h->data_size = data_size;
	h->index_slots = (uint32_t)slots;
	h->columns_len = (uint32_t)columns_len;
	h->writer_pid = (int32_t)getpid();
	h->def_hash = def_hash(cfg->definition);
	h->rows_hash = def_hash(cfg->rows ? cfg->rows : cfg->definition);
	snprintf(h->feed, sizeof(h->feed), "%s", cfg->feed);
	snprintf(h->source, sizeof(h->source), "%s", cfg->source ? cfg->source : "");
	memcpy((char *)base + columns_off, columns, columns_len + 1);
	store_relaxed(&h->head_cursor, cfg->base_cursor);
	store_relaxed(&h->frontier, cfg->base_cursor);
	store_relaxed(&h->base_cursor, cfg->base_cursor);
	snprintf(h->upstream, sizeof(h->upstream), "%s", cfg->upstream ? cfg->upstream : "");
	store_relaxed(&h->base_ident, ident_of(h->rows_hash, h->upstream));
	store_relaxed(&h->heartbeat_ms, clock_mono_ms());
	store_relaxed(&h->state, RING_STATE_STARTING);

	bind_mapping(r, base, total);
	r->writer = true;
	r->w_lock_fd = fd;
	r->dev = st.st_dev;
	r->ino = st.st_ino;
	memcpy(r->w_upstream, h->upstream, sizeof(r->w_upstream));

	/* Readers open the segment by name; rename(2) makes it appear whole,
	 * and replaces a previous daemon's segment atomically.  A stale
	 * snapshot of the previous segment is removed first: its segment_id
	 * would not match, but there is no reason to keep serving it. */
	unlink(r->snap_path);
	if (rename(tmp, r->path) != 0) {
		log_seterr(err, errlen, "cannot rename %s to %s: %s", tmp, r->path,
		           strerror(errno));
		munmap(base, total);
		close(fd);
		unlink(tmp);
		goto failed;
	}
	*out = r;
	return RING_OK;
failed:
	free(r);
	return RING_ERR;
}

#ifndef NDEBUG
static void
check_invariants(struct ring *r)
{
	struct ring_hdr *h = r->hdr;
	uint64_t head = load_relaxed(&h->head_seq), tail = load_relaxed(&h->tail_seq);

	assert(load_relaxed(&h->base_seq) <= tail && tail <= head);          /* I1 */
	assert(head - tail <= (uint64_t)h->index_slots - 2);                 /* I2 */
	assert(r->w_head_off - r->w_tail_off <= h->data_size);               /* I3 */
	assert(load_relaxed(&h->head_cursor) <= load_relaxed(&h->frontier)); /* I6 */
	assert(!r->w_has_snap || tail <= load_relaxed(&h->snap_seq_after));  /* I5 */
}
#else
#define check_invariants(r) ((void)0)
#endif

int
ring_append(struct ring *r, uint64_t cursor, const struct iovec *iov, int iovcnt)
{
	if (cursor == 0) {
		errno = EINVAL;
		return RING_ERR; /* I4: nothing is below the base */
	}
	return ring_append_range(r, cursor - 1, cursor, iov, iovcnt);
}

int
ring_append_range(struct ring *r, uint64_t lo, uint64_t cursor, const struct iovec *iov, int iovcnt)
{
	struct ring_hdr *h = r->hdr;
	uint64_t size = h->data_size, slots = h->index_slots;
	uint64_t seq = load_relaxed(&h->head_seq);
	uint64_t tail = load_relaxed(&h->tail_seq);
	uint64_t payload = 0, len, start, end, new_tail, new_tail_off;
	struct rec_hdr rh;
	struct ring_ent *e;
	char *p;

	assert(r->writer);
	for (int i = 0; i < iovcnt; i++)
		payload += iov[i].iov_len;
	len = align_up(sizeof(rh) + payload, 8);
	if (len > size / 2 || payload > UINT32_MAX)
		return RING_TOO_BIG;
	if (cursor <= load_relaxed(&h->head_cursor) || lo >= cursor ||
	    lo < load_relaxed(&h->frontier)) {
		errno = EINVAL;
		return RING_ERR; /* I4, I6 */
	}

	start = r->w_head_off;
	if (size - (start & r->data_mask) < len)
		start += size - (start & r->data_mask); /* skip to offset 0 */
	end = start + len;

	/* Decide what to drop before touching anything, so that refusing
	 * (RING_NEED_SNAPSHOT) leaves the ring as it was. */
	new_tail = tail;
	new_tail_off = r->w_tail_off;
	while (new_tail < seq && (end - new_tail_off > size || seq + 1 - new_tail > slots - 2)) {
		if (r->w_has_snap && new_tail >= load_relaxed(&h->snap_seq_after))
			return RING_NEED_SNAPSHOT; /* I5 */
		e = &r->index[new_tail & r->index_mask];
		new_tail_off = load_relaxed(&e->off) + load_relaxed(&e->len);
		new_tail++;
	}
	if (new_tail == seq)
		new_tail_off = start;

	if (new_tail != tail) {
		store_relaxed(&h->tail_seq, new_tail);
		/* Order the tail store before the record and entry stores
		 * below: a reader that copies any byte we overwrite sees this
		 * tail after its acquire fence and discards its copy. */
		fence_release();
	}
	r->w_tail_off = new_tail_off;

	p = r->data + (start & r->data_mask);
	rh.magic = REC_MAGIC;
	rh.payload_len = (uint32_t)payload;
	rh.seq = seq;
	rh.cursor = cursor;
	memcpy(p, &rh, sizeof(rh));
	p += sizeof(rh);
	for (int i = 0; i < iovcnt; i++) {
		/* An empty iovec may have a NULL base (batch_finish's empty
		 * deleted list): memcpy(p, NULL, 0) is undefined behaviour. */
		if (iov[i].iov_len > 0)
			memcpy(p, iov[i].iov_base, iov[i].iov_len);
		p += iov[i].iov_len;
	}

	e = &r->index[seq & r->index_mask];
	store_relaxed(&e->seq, seq);
	store_relaxed(&e->lo, lo);
	store_relaxed(&e->cursor, cursor);
	store_relaxed(&e->off, start);
	store_relaxed(&e->len, len);

	r->w_head_off = end;
	store_relaxed(&h->head_cursor, cursor);
	/* Publish: a reader that acquires the new head_seq sees the record
	 * bytes, its index entry and head_cursor written above. */
	store_release(&h->head_seq, seq + 1);
	/* After the head: a reader that acquires this frontier and then
	 * head_seq sees the record (the top of the file). */
	store_release(&h->frontier, cursor);
	check_invariants(r);
	return RING_OK;
}

bool
ring_advance(struct ring *r, uint64_t pos)
{
	struct ring_hdr *h = r->hdr;

	assert(r->writer);
	if (pos <= load_relaxed(&h->frontier))
		return false;
	/* Release: orders every record published before (their head_seq
	 * stores) before the new frontier, for readers that acquire it. */
	store_release(&h->frontier, pos);
	return true;
}

bool
ring_set_upstream(struct ring *r, const char *upstream)
{
	struct ring_hdr *h = r->hdr;

	assert(r->writer);
	snprintf(r->w_upstream, sizeof(r->w_upstream), "%s", upstream ? upstream : "");
	if (strcmp(h->upstream, r->w_upstream) == 0)
		return false;
	if (load_relaxed(&h->snap_gen) == 0 && load_relaxed(&h->head_seq) == 0) {
		/* No history yet (a new segment): nothing to keep apart. */
		uint64_t gen = load_relaxed(&h->base_gen);
		store_relaxed(&h->base_gen, gen + 1);
		fence_release();
		memcpy(h->upstream, r->w_upstream, sizeof(h->upstream));
		store_relaxed(&h->base_ident, ident_of(h->rows_hash, h->upstream));
		store_release(&h->base_gen, gen + 2);
		return false;
	}
	return true;
}

const char *
ring_upstream(const struct ring *r)
{
	return r->hdr->upstream;
}

void
ring_wake(struct ring *r)
{
	/* Bump the word after the head was released (ring_append), so a
	 * waiter that read the old word either sees the new head or sleeps
	 * on a value that no longer matches and returns at once. */
	fetch_add_release(&r->hdr->wake, 1);
	futex_wake_all_shared(&r->hdr->wake);
}

static int
write_all(int fd, const struct iovec *iov, int iovcnt)
{
	for (int i = 0; i < iovcnt; i++) {
		const char *p = iov[i].iov_base;
		size_t left = iov[i].iov_len;
		while (left > 0) {
			ssize_t n = write(fd, p, left);
			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0)
				return -1;
			p += n;
			left -= (size_t)n;
		}
	}
	return 0;
}

int
ring_write_snapshot(struct ring *r, const struct iovec *iov, int iovcnt, char *err, size_t errlen)
{
	struct ring_hdr *h = r->hdr;
	char tmp[PATH_MAX + 8];
	struct snap_hdr sh;
	struct iovec hv = {&sh, sizeof(sh)};
	uint64_t payload = 0;
	int fd;

	assert(r->writer);
	for (int i = 0; i < iovcnt; i++)
		payload += iov[i].iov_len;
	memset(&sh, 0, sizeof(sh));
	memcpy(sh.magic, SNAP_MAGIC, sizeof(sh.magic));
	sh.layout_version = RING_LAYOUT_VERSION;
	sh.hdr_size = sizeof(sh);
	sh.segment_id = h->segment_id;
	sh.cursor = load_relaxed(&h->head_cursor);
	sh.seq_after = load_relaxed(&h->head_seq);
	sh.payload_len = payload;
	sh.ident = load_relaxed(&h->base_ident);

	snprintf(tmp, sizeof(tmp), "%s.tmp", r->snap_path);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, RING_FILE_MODE);
	if (fd < 0) {
		log_seterr(err, errlen, "cannot create %s: %s", tmp, strerror(errno));
		return RING_ERR;
	}
	if (write_all(fd, &hv, 1) != 0 || write_all(fd, iov, iovcnt) != 0) {
		log_seterr(err, errlen, "cannot write snapshot %s (%llu bytes): %s", tmp,
		           (unsigned long long)payload, strerror(errno));
		close(fd);
		unlink(tmp);
		return RING_ERR;
	}
	if (close(fd) != 0 || rename(tmp, r->snap_path) != 0) {
		log_seterr(err, errlen, "cannot install snapshot %s: %s", r->snap_path,
		           strerror(errno));
		unlink(tmp);
		return RING_ERR;
	}
	/* The file is in place before the header says so: a reader that
	 * sees the new snap_gen finds the new file. */
	store_relaxed(&h->snap_cursor, sh.cursor);
	store_relaxed(&h->snap_seq_after, sh.seq_after);
	fetch_add_release(&h->snap_gen, 1);
	r->w_has_snap = true;
	return RING_OK;
}

void
ring_reset(struct ring *r, uint64_t cursor)
{
	struct ring_hdr *h = r->hdr;
	uint64_t head = load_relaxed(&h->head_seq);
	uint64_t gen = load_relaxed(&h->base_gen);

	assert(r->writer);
	/* The new history starts one seq past the old head, and that seq is
	 * never written: a reader waiting at the old head (ring_wait for seq
	 * `head`) is woken by the head moving and its ring_read says
	 * RING_GONE, instead of it sleeping through the reset or reading the
	 * new history's first batch as the next one of the old. */
	head++;
	/* Sequence count: odd while the base fields are inconsistent. */
	store_relaxed(&h->base_gen, gen + 1);
	fence_release();
	store_relaxed(&h->base_seq, head);
	store_relaxed(&h->base_cursor, cursor);
	memcpy(h->upstream, r->w_upstream, sizeof(h->upstream));
	store_relaxed(&h->base_ident, ident_of(h->rows_hash, h->upstream));
	store_relaxed(&h->head_cursor, cursor);
	/* The new history is complete through its base: a frontier of the
	 * old one promised positions the new one may still have batches at
	 * (a reader still at one is told RING_GONE: seq numbers moved). */
	store_relaxed(&h->frontier, cursor);
	store_relaxed(&h->tail_seq, head);
	/* After the tail: a reader that acquires this head sees the tail
	 * above it (ring_read's order). Readers that see a mix of old and new
	 * fields retry on base_gen or on head < tail (ring_lookup). */
	store_release(&h->head_seq, head);
	/* Readers that saw the old tail/base retry when they see gen move. */
	store_release(&h->base_gen, gen + 2);
	/* The next appends overwrite the bytes and index slots of the
	 * batches dropped here without dropping anything themselves, so
	 * ring_append issues no fence: order the tail store above before
	 * them, as ring_append does for its own drops (a release store
	 * orders only what precedes it). */
	fence_release();
	r->w_tail_off = r->w_head_off;
	r->w_has_snap = false;
	check_invariants(r);
}

void
ring_set_state(struct ring *r, enum ring_state state)
{
	store_release(&r->hdr->state, (uint32_t)state);
}

void
ring_set_error(struct ring *r, const char *msg)
{
	struct ring_hdr *h = r->hdr;
	uint32_t seq = load_relaxed(&h->err_seq);
	size_t n = msg ? strnlen(msg, RING_ERROR_MAX) : 0;
	bool same = true;

	for (size_t i = 0; i <= n && same; i++)
		same = load_relaxed(&h->err[i]) == (i < n ? (unsigned char)msg[i] : 0);
	if (same)
		return; /* unchanged: readers need not retry */
	/* Odd: being written.  The release fence orders the odd count before
	 * the bytes; the release store of the even count orders the bytes
	 * before it (readers acquire it). */
	store_relaxed(&h->err_seq, seq + 1);
	fence_release();
	for (size_t i = 0; i < sizeof(h->err); i++)
		store_relaxed(&h->err[i], i < n ? (unsigned char)msg[i] : 0);
	store_release(&h->err_seq, seq + 2);
}

void
ring_error(struct ring *r, char *buf, size_t len)
{
	struct ring_hdr *h = r->hdr;
	char tmp[RING_ERROR_MAX + 1];

	for (int tries = 0; tries < 100; tries++) {
		uint32_t s1 = load_acquire(&h->err_seq);
		if (s1 & 1)
			continue;
		for (size_t i = 0; i < sizeof(tmp); i++)
			tmp[i] = (char)load_relaxed(&h->err[i]);
		fence_acquire(); /* the copy before the second read of err_seq */
		if (load_relaxed(&h->err_seq) == s1) {
			tmp[RING_ERROR_MAX] = '\0';
			snprintf(buf, len, "%s", tmp);
			return;
		}
	}
	snprintf(buf, len, "%s", ""); /* the writer keeps rewriting: no message */
}

void
ring_confirmed(struct ring *r)
{
	store_relaxed(&r->hdr->confirmed_ms, clock_mono_ms());
}

void
ring_set_stall_ms(struct ring *r, uint32_t stall_ms)
{
	store_relaxed(&r->hdr->stall_ms, stall_ms);
}

void
ring_set_row_count(struct ring *r, uint64_t rows)
{
	store_relaxed(&r->hdr->row_count, rows);
}

void
ring_heartbeat(struct ring *r)
{
	store_relaxed(&r->hdr->heartbeat_ms, clock_mono_ms());
}

/* ------------------------------------------------------------------ */
/* reader                                                              */
/* ------------------------------------------------------------------ */

static int
validate_segment(const char *path, const struct ring_hdr *h, uint64_t file_size, char *err,
                 size_t errlen)
{
	if (file_size < sizeof(struct ring_hdr)) {
		log_seterr(err, errlen, "%s: truncated segment (%llu bytes, header needs %zu)",
		           path, (unsigned long long)file_size, sizeof(struct ring_hdr));
		return RING_ERR;
	}
	if (memcmp(h->magic, RING_MAGIC, sizeof(h->magic)) != 0) {
		log_seterr(err, errlen, "%s: not a tailgate ring segment (bad magic)", path);
		return RING_ERR;
	}
	if (h->layout_version != RING_LAYOUT_VERSION) {
		log_seterr(err, errlen,
		           "%s: segment layout version %u, this program reads version %u; "
		           "restart tailgated and tailgate-fcgi from the same release",
		           path, h->layout_version, RING_LAYOUT_VERSION);
		return RING_ERR;
	}
	if (h->hdr_size != sizeof(struct ring_hdr) || h->segment_size != file_size) {
		log_seterr(err, errlen,
		           "%s: corrupt or truncated segment (size %llu, header says %llu)", path,
		           (unsigned long long)file_size, (unsigned long long)h->segment_size);
		return RING_ERR;
	}
	if (h->data_size < MIN_DATA_SIZE || (h->data_size & (h->data_size - 1)) != 0 ||
	    h->index_slots < MIN_INDEX_SLOTS || (h->index_slots & (h->index_slots - 1)) != 0 ||
	    h->columns_off < sizeof(struct ring_hdr) ||
	    h->columns_off + h->columns_len + 1 > h->index_off ||
	    h->index_off + (uint64_t)h->index_slots * sizeof(struct ring_ent) > h->data_off ||
	    h->data_off + h->data_size != file_size || h->columns_len >= RING_COLUMNS_MAX ||
	    memchr(h->feed, '\0', sizeof(h->feed)) == NULL ||
	    memchr(h->source, '\0', sizeof(h->source)) == NULL ||
	    ((const char *)h)[h->columns_off + h->columns_len] != '\0') {
		log_seterr(err, errlen, "%s: corrupt segment header (inconsistent layout)", path);
		return RING_ERR;
	}
	return RING_OK;
}

int
ring_open(const char *dir, const char *feed, struct ring **out, char *err, size_t errlen)
{
	struct ring *r;
	struct stat st;
	void *base;
	int fd;

	*out = NULL;
	r = calloc(1, sizeof(*r));
	if (r == NULL) {
		log_seterr(err, errlen, "out of memory");
		return RING_ERR;
	}
	if (make_paths(r, dir, feed, err, errlen) != RING_OK)
		goto failed;
	fd = open(r->path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		log_seterr(err, errlen, "cannot open %s: %s", r->path, strerror(errno));
		goto failed;
	}
	if (fstat(fd, &st) != 0) {
		log_seterr(err, errlen, "cannot stat %s: %s", r->path, strerror(errno));
		close(fd);
		goto failed;
	}
	if ((uint64_t)st.st_size < sizeof(struct ring_hdr)) {
		log_seterr(err, errlen, "%s: truncated segment (%llu bytes, header needs %zu)",
		           r->path, (unsigned long long)st.st_size, sizeof(struct ring_hdr));
		close(fd);
		goto failed;
	}
	base = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
	close(fd);
	if (base == MAP_FAILED) {
		log_seterr(err, errlen, "cannot map %s: %s", r->path, strerror(errno));
		goto failed;
	}
	if (validate_segment(r->path, base, (uint64_t)st.st_size, err, errlen) != RING_OK) {
		munmap(base, (size_t)st.st_size);
		goto failed;
	}
	bind_mapping(r, base, (size_t)st.st_size);
	r->dev = st.st_dev;
	r->ino = st.st_ino;
	*out = r;
	return RING_OK;
failed:
	free(r);
	return RING_ERR;
}

/* ------------------------------------------------------------------ */
/* adoption: a restarted writer takes its segment back                 */
/* ------------------------------------------------------------------ */

/*
 * ring_adopt maps a segment that an earlier writer left behind and makes
 * this process its writer.  The earlier writer is gone (ring_close, or
 * killed at any instruction: its flock went with it), so only readers map
 * the segment, and they never write it: nothing checked below changes
 * while we check it.  Readers keep reading throughout; the only shared
 * words adoption stores are head_cursor, the snap_* announcement,
 * writer_pid, heartbeat and state.
 *
 * What a killed writer can leave half done, and why that is harmless:
 *   - an append cut short in step 2 (see the ordering above): its record
 *     bytes and index entry are partly written, but head_seq was not
 *     advanced (step 3), so the record is invisible: ring_read answers
 *     RING_AHEAD for it, ring_lookup searches only below head_seq, and its
 *     entry's slot (seq & mask) is neither a held record's nor the floor's
 *     (I2).  Our next append gets the same seq and overwrites it.  If step
 *     1 ran, tail_seq already drops what the append needed dropped: held
 *     records stay consistent, just fewer.  head_cursor, stored just
 *     before head_seq, may name the unpublished record: it is recomputed
 *     from the index below.
 *   - a snapshot renamed into place but not announced (snap_* not yet
 *     stored): the file is checked against the index, not the header, and
 *     the header is brought in line.
 *   - a reset cut short (base_gen odd): refused (base_cursor may not be
 *     stored).  Readers spin in read_base while base_gen is odd, so the
 *     refusal first makes it even and marks the segment CLOSED; the new
 *     segment ring_create renames into place then reaches them.
 *   - a snapshot that failed after a reset (feed.c's ring_stale): the old
 *     file's seq_after is below the new tail, so it does not match: refused.
 */

#define adopt_bad(...)                                                                             \
	do {                                                                                       \
		log_seterr(err, errlen, __VA_ARGS__);                                              \
		return RING_ERR;                                                                   \
	} while (0)

/* The cursor just before seq (the snapshot's or the floor's): the base
 * cursor at the start of the history, else the cursor of seq - 1. */
static uint64_t
cursor_before(struct ring *r, uint64_t seq)
{
	struct ring_hdr *h = r->hdr;

	if (seq == load_relaxed(&h->base_seq))
		return load_relaxed(&h->base_cursor);
	return load_relaxed(&r->index[(seq - 1) & r->index_mask].cursor);
}

/* Check the floor's entry and every held record's entry and record header
 * against each other (I1-I4) and recover the writer's offsets; *head_cursor
 * gets the cursor of the newest held batch (or the floor). */
static int
adopt_index(struct ring *r, uint64_t *head_cursor, char *err, size_t errlen)
{
	struct ring_hdr *h = r->hdr;
	uint64_t head = load_relaxed(&h->head_seq), tail = load_relaxed(&h->tail_seq);
	uint64_t base_seq = load_relaxed(&h->base_seq), size = h->data_size;
	uint64_t prev_cursor = load_relaxed(&h->base_cursor), end = 0, first_off = 0;

	if (!(base_seq <= tail && tail <= head) || head - tail > (uint64_t)h->index_slots - 2)
		adopt_bad("%s: sequence numbers out of order (base %llu, tail %llu, head %llu)",
		          r->path, (unsigned long long)base_seq, (unsigned long long)tail,
		          (unsigned long long)head);
	if (tail > base_seq) {
		struct ring_ent *e = &r->index[(tail - 1) & r->index_mask];
		if (load_relaxed(&e->seq) != tail - 1 || load_relaxed(&e->cursor) <= prev_cursor)
			adopt_bad("%s: the floor's index entry (seq %llu) is damaged", r->path,
			          (unsigned long long)(tail - 1));
		prev_cursor = load_relaxed(&e->cursor);
	}
	for (uint64_t seq = tail; seq < head; seq++) {
		struct ring_ent *e = &r->index[seq & r->index_mask];
		uint64_t cursor = load_relaxed(&e->cursor), off = load_relaxed(&e->off);
		uint64_t len = load_relaxed(&e->len), lo = load_relaxed(&e->lo);
		struct rec_hdr rh;

		if (load_relaxed(&e->seq) != seq || cursor <= prev_cursor || lo < prev_cursor ||
		    lo >= cursor || len < sizeof(rh) || len % 8 != 0 || len > size / 2 ||
		    (off & r->data_mask) + len > size ||
		    (seq > tail && off != end && off != align_up(end, size)))
			adopt_bad("%s: index entry of seq %llu is damaged", r->path,
			          (unsigned long long)seq);
		memcpy(&rh, r->data + (off & r->data_mask), sizeof(rh));
		if (rh.magic != REC_MAGIC || rh.seq != seq || rh.cursor != cursor ||
		    align_up(sizeof(rh) + rh.payload_len, 8) != len)
			adopt_bad("%s: record of seq %llu is damaged", r->path,
			          (unsigned long long)seq);
		if (seq == tail)
			first_off = off;
		end = off + len;
		prev_cursor = cursor;
	}
	if (end - first_off > size) /* I3 */
		adopt_bad("%s: held records overlap", r->path);
	/* An empty ring may restart anywhere in the data area. */
	r->w_tail_off = first_off;
	r->w_head_off = end;
	*head_cursor = prev_cursor;
	return RING_OK;
}

/* The snapshot file must belong to this segment and sit at a batch
 * boundary of the held history (I5); announce it if the writer died
 * between its rename and the header's update. */
static int
adopt_snapshot(struct ring *r, char *err, size_t errlen)
{
	struct ring_hdr *h = r->hdr;
	uint64_t head = load_relaxed(&h->head_seq), tail = load_relaxed(&h->tail_seq);
	struct snap_hdr sh;
	struct stat st;
	ssize_t n;
	int fd;

	fd = open(r->snap_path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		adopt_bad("cannot open %s: %s", r->snap_path, strerror(errno));
	n = pread(fd, &sh, sizeof(sh), 0);
	if (fstat(fd, &st) != 0)
		n = -1;
	close(fd);
	if (n != (ssize_t)sizeof(sh) || memcmp(sh.magic, SNAP_MAGIC, sizeof(sh.magic)) != 0 ||
	    sh.layout_version != RING_LAYOUT_VERSION || sh.hdr_size != sizeof(sh) ||
	    sh.payload_len != (uint64_t)st.st_size - sizeof(sh))
		adopt_bad("%s: truncated or corrupt snapshot", r->snap_path);
	if (sh.segment_id != h->segment_id)
		adopt_bad("%s: snapshot of another segment", r->snap_path);
	if (sh.ident != load_relaxed(&h->base_ident))
		adopt_bad("%s: snapshot of another upstream history", r->snap_path);
	if (sh.seq_after < tail || sh.seq_after > head ||
	    sh.cursor != cursor_before(r, sh.seq_after))
		adopt_bad("%s: snapshot at cursor %llu (seq %llu) is not in the held history "
		          "(seqs %llu-%llu)",
		          r->snap_path, (unsigned long long)sh.cursor,
		          (unsigned long long)sh.seq_after, (unsigned long long)tail,
		          (unsigned long long)head);
	if (load_relaxed(&h->snap_gen) == 0 || load_relaxed(&h->snap_seq_after) != sh.seq_after ||
	    load_relaxed(&h->snap_cursor) != sh.cursor) {
		/* As ring_write_snapshot: the file is in place before the
		 * header says so. */
		store_relaxed(&h->snap_cursor, sh.cursor);
		store_relaxed(&h->snap_seq_after, sh.seq_after);
		fetch_add_release(&h->snap_gen, 1);
	}
	return RING_OK;
}

/* Everything but the index: is this the segment cfg would create? */
static int
adopt_identity(struct ring *r, const struct ring_config *cfg, char *err, size_t errlen)
{
	struct ring_hdr *h = r->hdr;
	uint64_t data_size, slots;

	config_sizes(cfg, &data_size, &slots);
	if (strcmp(h->feed, cfg->feed) != 0)
		adopt_bad("%s: segment of feed %s", r->path, h->feed);
	if (strcmp(h->source, cfg->source ? cfg->source : "") != 0)
		adopt_bad("%s: segment of source %s", r->path, h->source);
	if (h->def_hash != def_hash(cfg->definition))
		adopt_bad("%s: the feed's definition changed", r->path);
	if (h->data_size != data_size || h->index_slots != slots)
		adopt_bad("%s: ring size %llu, configured %llu", r->path,
		          (unsigned long long)h->data_size, (unsigned long long)data_size);
	if (cfg->columns_json != NULL && strcmp(r->columns, cfg->columns_json) != 0)
		adopt_bad("%s: the columns changed", r->path);
	return RING_OK;
}

int
ring_adopt(const struct ring_config *cfg, struct ring **out, char *err, size_t errlen)
{
	struct ring *r;
	struct ring_hdr *h;
	struct stat st;
	uint64_t head_cursor, gen;
	void *base;
	int fd, rc = RING_ERR;

	*out = NULL;
	r = calloc(1, sizeof(*r));
	if (r == NULL) {
		log_seterr(err, errlen, "out of memory");
		return RING_ERR;
	}
	if (make_paths(r, cfg->dir, cfg->feed, err, errlen) != RING_OK)
		goto failed;
	fd = open(r->path, O_RDWR | O_CLOEXEC);
	if (fd < 0) {
		log_seterr(err, errlen, "cannot open %s: %s", r->path, strerror(errno));
		if (errno == ENOENT)
			rc = RING_GONE;
		goto failed;
	}
	if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
		log_seterr(err, errlen, "%s: another process is its writer (%s)", r->path,
		           strerror(errno));
		close(fd);
		goto failed;
	}
	if (fstat(fd, &st) != 0 || (uint64_t)st.st_size < sizeof(struct ring_hdr)) {
		log_seterr(err, errlen, "%s: truncated segment", r->path);
		close(fd);
		goto failed;
	}
	base = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (base == MAP_FAILED) {
		log_seterr(err, errlen, "cannot map %s: %s", r->path, strerror(errno));
		close(fd);
		goto failed;
	}
	if (validate_segment(r->path, base, (uint64_t)st.st_size, err, errlen) != RING_OK)
		goto unmap;
	bind_mapping(r, base, (size_t)st.st_size);
	h = r->hdr;
	if (adopt_identity(r, cfg, err, errlen) != RING_OK)
		goto unmap;
	gen = load_relaxed(&h->base_gen);
	if ((gen & 1) != 0) {
		log_seterr(err, errlen, "%s: the writer died resetting it", r->path);
		/* Let readers out of read_base (see above); they find the
		 * replacement by name. */
		store_release(&h->state, RING_STATE_CLOSED);
		store_release(&h->base_gen, gen + 1);
		goto unmap;
	}
	if (adopt_index(r, &head_cursor, err, errlen) != RING_OK ||
	    adopt_snapshot(r, err, errlen) != RING_OK)
		goto unmap;

	/* Ours now.  head_cursor may only move back (a record the dead writer
	 * never published); readers reading it after head_seq see the
	 * published cursor of head_seq - 1, as ring_append leaves it. */
	if (load_relaxed(&h->head_cursor) != head_cursor)
		store_relaxed(&h->head_cursor, head_cursor);
	/* The frontier is stored only after the head_seq of what it covers
	 * (ring_append), so it is never below the published head; a damaged
	 * one is brought up to it (I6). */
	if (load_relaxed(&h->frontier) < head_cursor)
		store_release(&h->frontier, head_cursor);
	memcpy(r->w_upstream, h->upstream, sizeof(r->w_upstream));
	r->w_upstream[RING_UPSTREAM_MAX] = '\0';
	/* writer_pid is read unordered by ring_info's liveness probe: an
	 * aligned 32-bit store, and the heartbeat beside it vouches for the
	 * writer whichever pid a reader sees; a probe that found the old pid
	 * dead answers "gone" for at most PID_PROBE_MS more. */
	h->writer_pid = (int32_t)getpid();
	store_relaxed(&h->heartbeat_ms, clock_mono_ms());
	/* DOWN: a snapshot is here to serve, the upstream is not connected.
	 * Release: a reader that sees the state sees the fixes above. */
	store_release(&h->state, RING_STATE_DOWN);
	r->writer = true;
	r->w_lock_fd = fd;
	r->w_has_snap = true;
	r->dev = st.st_dev;
	r->ino = st.st_ino;
	check_invariants(r);
	*out = r;
	return RING_OK;
unmap:
	munmap(base, (size_t)st.st_size);
	close(fd);
failed:
	free(r);
	return rc;
}

#undef adopt_bad

bool
ring_replaced(struct ring *r)
{
	struct stat st;

	if (stat(r->path, &st) != 0)
		return load_acquire(&r->hdr->state) == RING_STATE_CLOSED;
	return st.st_dev != r->dev || st.st_ino != r->ino;
}

/* Does the writer's process exist?  kill(pid, 0) is a syscall, and
 * ring_info is on the responder's per-request and per-event paths, so the
 * answer for a pid is reused for PID_PROBE_MS: a writer that died is
 * noticed within that (its heartbeat, checked on every call, goes stale
 * only after HEARTBEAT_STALE_MS).  The cached word holds the pid it is
 * about (ms << 23 | pid << 1 | alive; pids are below 2^22 on Linux), so
 * a new writer_pid (ring_adopt: a restarted writer) is probed at once. */
static bool
writer_pid_alive(struct ring *r, uint64_t now)
{
	uint64_t p = load_relaxed(&r->pid_probe);
	uint64_t pid = (uint64_t)(uint32_t)r->hdr->writer_pid & 0x3fffff;
	uint64_t at = p >> 23;
	bool alive;

	if (p != 0 && ((p >> 1) & 0x3fffff) == pid && now >= at && now - at < PID_PROBE_MS)
		return (p & 1) != 0;
	alive = kill(r->hdr->writer_pid, 0) == 0 || errno == EPERM;
	store_relaxed(&r->pid_probe, now << 23 | pid << 1 | (alive ? 1u : 0u));
	return alive;
}

void
ring_info(struct ring *r, struct ring_info *out)
{
	struct ring_hdr *h = r->hdr;
	uint64_t now = clock_mono_ms();

	/* The frontier before head_seq (the top of the file); head_seq
	 * acquired before head_cursor: head_cursor is at least as new. */
	out->frontier = load_acquire(&h->frontier);
	out->head_seq = load_acquire(&h->head_seq);
	out->head_cursor = load_relaxed(&h->head_cursor);
	if (out->frontier < out->head_cursor)
		out->frontier = out->head_cursor; /* appended meanwhile */
	out->ident = load_relaxed(&h->base_ident);
	out->tail_seq = load_acquire(&h->tail_seq);
	out->snap_gen = load_acquire(&h->snap_gen);
	out->snap_cursor = load_relaxed(&h->snap_cursor);
	out->row_count = load_relaxed(&h->row_count);
	out->heartbeat_ms = load_relaxed(&h->heartbeat_ms);
	out->segment_id = h->segment_id;
	out->writer_pid = h->writer_pid;
	out->state = (enum ring_state)load_acquire(&h->state);
	out->writer_alive = out->state != RING_STATE_CLOSED &&
	                    now - out->heartbeat_ms < HEARTBEAT_STALE_MS + 0ull &&
	                    writer_pid_alive(r, now);
	out->confirmed_ms = load_relaxed(&h->confirmed_ms);
	out->stall_ms = load_relaxed(&h->stall_ms);
	out->lag_ms =
	        out->confirmed_ms != 0 && now > out->confirmed_ms ? now - out->confirmed_ms : 0;
	out->stalled = out->state == RING_STATE_LIVE && out->writer_alive && out->stall_ms != 0 &&
	               out->confirmed_ms != 0 && out->lag_ms > out->stall_ms;
}

const char *
ring_feed(const struct ring *r)
{
	return r->hdr->feed;
}

const char *
ring_source(const struct ring *r)
{
	return r->hdr->source;
}

const char *
ring_columns(const struct ring *r)
{
	return r->columns;
}

/* Read the base of the history consistently (see ring_reset). */
static void
read_base(struct ring_hdr *h, uint64_t *seq, uint64_t *cursor, uint64_t *gen)
{
	uint64_t g1, g2;

	do {
		g1 = load_acquire(&h->base_gen);
		*seq = load_relaxed(&h->base_seq);
		*cursor = load_relaxed(&h->base_cursor);
		fence_acquire();
		g2 = load_relaxed(&h->base_gen);
	} while ((g1 & 1) != 0 || g1 != g2);
	*gen = g1;
}

/* Read index entry for seq.  Returns false when the slot no longer holds
 * seq (the writer dropped it). */
static bool
read_entry(struct ring *r, uint64_t seq, uint64_t *cursor, uint64_t *off, uint64_t *len)
{
	struct ring_ent *e = &r->index[seq & r->index_mask];
	uint64_t s = load_relaxed(&e->seq);

	*cursor = load_relaxed(&e->cursor);
	*off = load_relaxed(&e->off);
	*len = load_relaxed(&e->len);
	/* Pairs with the writer's release fence in ring_append: if any field
	 * above came from a newer record, this sees the tail that dropped
	 * seq (I2 keeps seq-1 too: callers pass the floor's seq). */
	fence_acquire();
	return s == seq && load_relaxed(&r->hdr->tail_seq) <= seq + 1;
}

int
ring_lookup(struct ring *r, uint64_t cursor, uint64_t *seq_after)
{
	struct ring_hdr *h = r->hdr;

	for (int attempt = 0; attempt < 64; attempt++) {
		uint64_t base_seq, base_cursor, gen, floor, c, off, len;
		uint64_t tail = load_acquire(&h->tail_seq);
		uint64_t head = load_acquire(&h->head_seq);

		read_base(h, &base_seq, &base_cursor, &gen);
		if (tail < base_seq || head < tail)
			continue; /* raced with a reset */
		if (tail == base_seq) {
			floor = base_cursor;
		} else if (read_entry(r, tail - 1, &floor, &off, &len) &&
		           load_acquire(&h->tail_seq) == tail) {
			/* floor is the cursor of the last dropped batch */
		} else {
			continue; /* the tail moved while we looked */
		}
		if (load_acquire(&h->base_gen) != gen)
			continue;
		if (cursor == floor) {
			*seq_after = tail;
			return RING_OK;
		}
		if (cursor < floor)
			return RING_GONE;
		if (head == tail)
			return RING_AHEAD;

		/* Binary search [tail, head) for the entry whose cursor
		 * equals cursor (I4: cursors increase with seq). */
		uint64_t lo = tail, hi = head;
		bool raced = false;
		while (lo < hi) {
			uint64_t mid = lo + (hi - lo) / 2;
			if (!read_entry(r, mid, &c, &off, &len) ||
			    load_relaxed(&h->tail_seq) > mid) {
				raced = true;
				break;
			}
			if (c == cursor) {
				*seq_after = mid + 1;
				return RING_OK;
			}
			if (c < cursor)
				lo = mid + 1;
			else
				hi = mid;
		}
		if (raced)
			continue;
		if (lo == head)
			return RING_AHEAD;
		return RING_UNKNOWN;
	}
	/* The writer lapped us 64 times in a row: whatever we were
	 * looking for is certainly gone. */
	return RING_GONE;
}

uint32_t
ring_ident(struct ring *r)
{
	return load_relaxed(&r->hdr->base_ident);
}

/* One attempt of ring_seek against a stable base: RING_ERR means the
 * writer moved something while we looked (retry). */
static int
seek_once(struct ring *r, uint32_t ident, uint64_t pos, uint64_t *seq_after)
{
	struct ring_hdr *h = r->hdr;
	uint64_t base_seq, base_cursor, gen, floor, c, lo, off, len;
	uint64_t tail = load_acquire(&h->tail_seq);
	uint64_t head = load_acquire(&h->head_seq);

	read_base(h, &base_seq, &base_cursor, &gen);
	if (tail < base_seq || head < tail)
		return RING_ERR; /* raced with a reset */
	if (load_relaxed(&h->base_ident) != ident)
		return load_acquire(&h->base_gen) == gen ? RING_UNKNOWN : RING_ERR;
	if (tail == base_seq)
		floor = base_cursor;
	else if (!read_entry(r, tail - 1, &floor, &off, &len) || load_acquire(&h->tail_seq) != tail)
		return RING_ERR;
	if (load_acquire(&h->base_gen) != gen)
		return RING_ERR;
	if (pos < floor)
		return RING_GONE;

	/* The first record in [tail, head) whose cursor is above pos (I4:
	 * cursors increase with seq); none: the head (pos at or past the
	 * newest batch, maybe past the frontier: later batches at or below
	 * pos are the reader's to skip). */
	uint64_t a = tail, b = head;
	while (a < b) {
		uint64_t mid = a + (b - a) / 2;
		if (!read_entry(r, mid, &c, &off, &len) || load_relaxed(&h->tail_seq) > mid)
			return RING_ERR;
		if (c <= pos)
			a = mid + 1;
		else
			b = mid;
	}
	if (a < head) {
		struct ring_ent *e = &r->index[a & r->index_mask];
		lo = load_relaxed(&e->lo);
		fence_acquire(); /* lo before the tail recheck, as read_entry */
		if (load_relaxed(&e->seq) != a || load_relaxed(&h->tail_seq) > a)
			return RING_ERR;
		if (lo < pos)
			return RING_UNKNOWN; /* strictly inside a merged record */
	}
	*seq_after = a;
	return RING_OK;
}

int
ring_seek(struct ring *r, uint32_t ident, uint64_t pos, uint64_t *seq_after)
{
	for (int attempt = 0; attempt < 64; attempt++) {
		int rc = seek_once(r, ident, pos, seq_after);
		if (rc != RING_ERR)
			return rc;
	}
	return RING_GONE; /* lapped 64 times in a row: what we sought is gone */
}

uint64_t
ring_complete(struct ring *r, uint64_t seq, uint64_t pos)
{
	struct ring_hdr *h = r->hdr;
	/* Frontier first, then head_seq (the top of the file). */
	uint64_t c = load_acquire(&h->frontier);
	uint64_t head = load_acquire(&h->head_seq);

	if (seq < head) {
		struct ring_ent *e = &r->index[seq & r->index_mask];
		uint64_t lo = load_relaxed(&e->lo);
		fence_acquire();
		if (load_relaxed(&e->seq) != seq || load_relaxed(&h->tail_seq) > seq)
			return pos; /* dropped or reset meanwhile: the reader finds out */
		if (lo < c)
			c = lo;
	}
	return c > pos ? c : pos;
}

uint64_t
ring_span_bytes(struct ring *r, uint64_t from, uint64_t to)
{
	uint64_t c, off0, off1, len0, len1;

	if (from >= to || to > load_acquire(&r->hdr->head_seq))
		return 0;
	if (!read_entry(r, from, &c, &off0, &len0) || !read_entry(r, to - 1, &c, &off1, &len1) ||
	    off1 + len1 < off0)
		return 0;
	return off1 + len1 - off0;
}

/* The seqlock copy: may read bytes the writer is overwriting, which the
 * caller detects afterwards.  TSan would report the (intended) race. */
#if defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define NO_TSAN __attribute__((no_sanitize("thread")))
#endif
#endif
#if !defined(NO_TSAN) && defined(__SANITIZE_THREAD__)
#define NO_TSAN __attribute__((no_sanitize_thread))
#endif
#ifndef NO_TSAN
#define NO_TSAN
#endif

NO_TSAN static void
copy_racy(void *dst, const void *src, size_t n)
{
	/* A plain byte loop, not memcpy: sanitizers intercept memcpy even in
	 * no_sanitize functions. */
	unsigned char *d = dst;
	const unsigned char *s = src;
	size_t i = 0;

	for (; i + 8 <= n; i += 8) {
		uint64_t w;
		__builtin_memcpy(&w, s + i, 8);
		__builtin_memcpy(d + i, &w, 8);
	}
	for (; i < n; i++)
		d[i] = s[i];
}

int
ring_read(struct ring *r, uint64_t seq, struct ring_buf *buf, struct ring_rec *rec)
{
	struct ring_hdr *h = r->hdr;
	uint64_t head = load_acquire(&h->head_seq);
	uint64_t cursor, off, len;
	struct rec_hdr rh;
	const char *p;

	if (seq >= head)
		return RING_AHEAD;
	if (seq < load_acquire(&h->tail_seq))
		return RING_GONE;
	if (!read_entry(r, seq, &cursor, &off, &len) || len < sizeof(rh) || len > h->data_size / 2)
		return RING_GONE;

	p = r->data + (off & r->data_mask);
	if ((off & r->data_mask) + len > h->data_size)
		return RING_GONE; /* torn entry; tail recheck would say so */
	copy_racy(&rh, p, sizeof(rh));
	size_t payload = len - sizeof(rh);
	if (rh.payload_len <= payload)
		payload = rh.payload_len;
	if (buf->cap < payload + 1) {
		size_t cap = buf->cap ? buf->cap : 4096;
		while (cap < payload + 1)
			cap *= 2;
		char *nd = realloc(buf->data, cap);
		if (nd == NULL)
			return RING_ERR;
		buf->data = nd;
		buf->cap = cap;
	}
	copy_racy(buf->data, p + sizeof(rh), payload);

	/* Seqlock validation: pairs with the release fence the writer issues
	 * after advancing tail_seq and before overwriting. */
	fence_acquire();
	if (load_relaxed(&h->tail_seq) > seq)
		return RING_GONE;

	/* The copy is stable; now a mismatch is corruption, not a race. */
	if (rh.magic != REC_MAGIC || rh.seq != seq || rh.cursor != cursor ||
	    rh.payload_len != payload) {
		errno = EILSEQ;
		return RING_ERR;
	}
	buf->len = payload;
	buf->data[payload] = '\0';
	if (rec != NULL) {
		rec->seq = seq;
		rec->lo = load_relaxed(&r->index[seq & r->index_mask].lo);
		rec->cursor = cursor;
		rec->len = payload;
	}
	return RING_OK;
}

int
ring_wait(struct ring *r, uint64_t want, int timeout_ms)
{
	struct ring_hdr *h = r->hdr;
	struct timespec deadline, now, rel;

	clock_gettime(CLOCK_MONOTONIC, &deadline);
	if (timeout_ms >= 0) {
		deadline.tv_sec += timeout_ms / 1000;
		deadline.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
		if (deadline.tv_nsec >= 1000000000L) {
			deadline.tv_sec++;
			deadline.tv_nsec -= 1000000000L;
		}
	}
	for (;;) {
		/* Word first, then head: see ring_wake. */
		uint32_t w = load_acquire(&h->wake);
		if (load_acquire(&h->head_seq) > want)
			return RING_OK;
		if (load_acquire(&h->state) == RING_STATE_CLOSED)
			return RING_TIMEOUT;
		if (timeout_ms >= 0) {
			clock_gettime(CLOCK_MONOTONIC, &now);
			rel.tv_sec = deadline.tv_sec - now.tv_sec;
			rel.tv_nsec = deadline.tv_nsec - now.tv_nsec;
			if (rel.tv_nsec < 0) {
				rel.tv_sec--;
				rel.tv_nsec += 1000000000L;
			}
			if (rel.tv_sec < 0)
				return RING_TIMEOUT;
		}
		if (futex_wait_shared(&h->wake, w, timeout_ms >= 0 ? &rel : NULL) != 0) {
			if (errno == EINTR || errno == ETIMEDOUT)
				return load_acquire(&h->head_seq) > want ? RING_OK : RING_TIMEOUT;
		}
	}
}

const void *
ring_wake_word(struct ring *r, uint32_t *value)
{
	*value = load_acquire(&r->hdr->wake);
	return &r->hdr->wake;
}

int
ring_snapshot_open(struct ring *r, struct ring_snapshot *snap, char *err, size_t errlen)
{
	struct stat st;
	const struct snap_hdr *sh;
	void *base;
	int fd;

	memset(snap, 0, sizeof(*snap));
	fd = open(r->snap_path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		log_seterr(err, errlen, "cannot open %s: %s", r->snap_path, strerror(errno));
		return RING_ERR;
	}
	if (fstat(fd, &st) != 0 || (uint64_t)st.st_size < sizeof(struct snap_hdr)) {
		log_seterr(err, errlen, "%s: truncated snapshot", r->snap_path);
		close(fd);
		return RING_ERR;
	}
	base = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
	close(fd);
	if (base == MAP_FAILED) {
		log_seterr(err, errlen, "cannot map %s: %s", r->snap_path, strerror(errno));
		return RING_ERR;
	}
	sh = base;
	if (memcmp(sh->magic, SNAP_MAGIC, sizeof(sh->magic)) != 0 ||
	    sh->layout_version != RING_LAYOUT_VERSION || sh->hdr_size != sizeof(*sh) ||
	    sh->payload_len != (uint64_t)st.st_size - sizeof(*sh)) {
		log_seterr(err, errlen, "%s: corrupt snapshot or another layout version",
		           r->snap_path);
		munmap(base, (size_t)st.st_size);
		return RING_ERR;
	}
	if (sh->segment_id != r->hdr->segment_id) {
		log_seterr(err, errlen, "%s: snapshot belongs to another segment", r->snap_path);
		munmap(base, (size_t)st.st_size);
		return RING_GONE;
	}
	snap->data = (const char *)base + sizeof(*sh);
	snap->len = sh->payload_len;
	snap->cursor = sh->cursor;
	snap->ident = sh->ident;
	snap->seq_after = sh->seq_after;
	snap->map_ = base;
	snap->map_len_ = (size_t)st.st_size;
	return RING_OK;
}

void
ring_snapshot_release(struct ring_snapshot *snap)
{
	if (snap->map_ != NULL)
		munmap(snap->map_, snap->map_len_);
	memset(snap, 0, sizeof(*snap));
}

void
ring_close(struct ring *r, bool remove)
{
	if (r == NULL)
		return;
	if (r->writer) {
		ring_set_state(r, RING_STATE_CLOSED);
		ring_wake(r);
		if (remove) {
			/* Remove only what is still ours: a newer daemon may
			 * have renamed its own segment into place. */
			struct stat st;
			if (stat(r->path, &st) == 0 && st.st_dev == r->dev && st.st_ino == r->ino) {
				unlink(r->path);
				unlink(r->snap_path);
			}
		}
		close(r->w_lock_fd); /* and with it the writer's lock */
	}
	munmap(r->hdr, r->map_len);
	free(r);
}

const char *
ring_strstate(enum ring_state state)
{
	switch (state) {
	case RING_STATE_STARTING:
		return "starting";
	case RING_STATE_LIVE:
		return "live";
	case RING_STATE_DOWN:
		return "down";
	case RING_STATE_CLOSED:
		return "closed";
	case RING_STATE_ERROR:
		return "error";
	}
	return "unknown";
}

const char *
ring_strstatus(int status)
{
	switch (status) {
	case RING_OK:
		return "ok";
	case RING_GONE:
		return "cursor gone";
	case RING_UNKNOWN:
		return "cursor unknown";
	case RING_AHEAD:
		return "cursor ahead of head";
	case RING_TIMEOUT:
		return "timeout";
	case RING_NEED_SNAPSHOT:
		return "snapshot needed";
	case RING_TOO_BIG:
		return "record too big";
	default:
		return "system error";
	}
}
