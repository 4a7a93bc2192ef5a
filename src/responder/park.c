/*
 * park.c - the parking lot (park.h).
 *
 * Lost-wakeup argument.  The watcher, holding park_mu, reads each feed's
 * wake word BEFORE its head_seq, takes out every group behind the head,
 * then sleeps in futex_waitv on the words it read.  park_insert(), also
 * under park_mu, re-reads the head before parking a waiter.  A batch
 * published after the watcher's read of the head bumps the word after the
 * head (ring_wake), so the futex_waitv that follows returns at once; a
 * batch published before it is seen either by the watcher's scan or by
 * park_insert's re-check.  A new waiter that the watcher's current sleep
 * does not cover (an earlier deadline, a feed or segment not yet watched)
 * bumps the kick word, which is in the same futex_waitv.
 */
#include <config.h> /* autoconf's: _GNU_SOURCE for POLLRDHUP */

#include "park.h"

#include "log.h"
#include "metrics.h"
#include "render.h"
#include "reply.h"

#include <errno.h>
#include <inttypes.h>
#include <linux/futex.h>
#include <malloc.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

int park_sse_keepalive_s = 15;
int park_cache_max_age_s = 60;

struct group {
	struct group *next, *prev; /* in the feed's lot */
	struct feed *feed;
	struct seg *seg;  /* referenced */
	struct fspec *fs; /* referenced */
	uint64_t seq_after, cursor;
	bool sse;
	struct waiter *head;
	size_t n;
};

struct lot {
	struct group *groups;
};

static pthread_mutex_t park_mu = PTHREAD_MUTEX_INITIALIZER;
static struct waiter **heap;
static size_t heap_n, heap_cap;
static int64_t sleep_until_ms;         /* the watcher's current futex_waitv deadline */
static struct seg *watched[FEEDS_MAX]; /* segments in the current futex_waitv (not referenced) */
static int n_watched;
static _Atomic uint32_t kick;
static _Atomic bool stopping;
static pthread_t watcher;
static bool watcher_started;

int64_t
mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

struct fspec *
fspec_new(struct filter *f, char *key)
{
	struct fspec *fs = calloc(1, sizeof(*fs));

	if (fs == NULL)
		fatal("out of memory");
	fs->filter = f;
	fs->key = key;
	atomic_store(&fs->refs, 1);
	return fs;
}

struct fspec *
fspec_ref(struct fspec *fs)
{
	atomic_fetch_add_explicit(&fs->refs, 1, memory_order_relaxed);
	return fs;
}

void
fspec_release(struct fspec *fs)
{
	if (fs == NULL || atomic_fetch_sub_explicit(&fs->refs, 1, memory_order_acq_rel) != 1)
		return;
	filter_free(fs->filter);
	free(fs->key);
	free(fs);
}

void
waiter_free(struct waiter *w)
{
	if (w == NULL)
		return;
	seg_release(w->seg);
	fspec_release(w->fs);
	free(w);
}

bool
park_stopping(void)
{
	return atomic_load(&stopping);
}

static void
do_kick(void)
{
	atomic_fetch_add_explicit(&kick, 1, memory_order_release);
	syscall(SYS_futex, (uint32_t *)&kick, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

/* ---- the deadline heap (park_mu held) ---- */

static void
heap_swap(size_t a, size_t b)
{
	struct waiter *t = heap[a];
	heap[a] = heap[b];
	heap[b] = t;
	heap[a]->heap_idx = a;
	heap[b]->heap_idx = b;
}

static void
heap_up(size_t i)
{
	while (i > 0) {
		size_t p = (i - 1) / 2;
		if (heap[p]->deadline_ms <= heap[i]->deadline_ms)
			break;
		heap_swap(i, p);
		i = p;
	}
}

static void
heap_down(size_t i)
{
	for (;;) {
		size_t l = 2 * i + 1, r = l + 1, m = i;
		if (l < heap_n && heap[l]->deadline_ms < heap[m]->deadline_ms)
			m = l;
		if (r < heap_n && heap[r]->deadline_ms < heap[m]->deadline_ms)
			m = r;
		if (m == i)
			break;
		heap_swap(i, m);
		i = m;
	}
}

static void
heap_push(struct waiter *w)
{
	if (heap_n == heap_cap) {
		size_t nc = heap_cap ? heap_cap * 2 : 1024;
		struct waiter **nh = realloc(heap, nc * sizeof(*heap));
		if (nh == NULL)
			fatal("out of memory growing the deadline heap");
		heap = nh;
		heap_cap = nc;
	}
	w->heap_idx = heap_n;
	heap[heap_n++] = w;
	heap_up(w->heap_idx);
}

static void
heap_remove(struct waiter *w)
{
	size_t i = w->heap_idx;

	heap_n--;
	if (i != heap_n) {
		heap[i] = heap[heap_n];
		heap[i]->heap_idx = i;
		heap_down(i);
		heap_up(i);
	}
}

/* ---- groups (park_mu held) ---- */

static struct lot *
lot_of(struct feed *f)
{
	if (f->lot == NULL) {
		f->lot = calloc(1, sizeof(*f->lot));
		if (f->lot == NULL)
			fatal("out of memory");
	}
	return f->lot;
}

static void
group_unlink(struct group *g)
{
	struct lot *lot = g->feed->lot;

	if (g->prev != NULL)
		g->prev->next = g->next;
	else
		lot->groups = g->next;
	if (g->next != NULL)
		g->next->prev = g->prev;
	g->next = g->prev = NULL;
}

static void
group_free(struct group *g)
{
	seg_release(g->seg);
	fspec_release(g->fs);
	free(g);
}

/* Take w out of its group and the heap. */
static void
unpark(struct waiter *w)
{
	struct group *g = w->group;

	if (w->gprev != NULL)
		w->gprev->gnext = w->gnext;
	else
		g->head = w->gnext;
	if (w->gnext != NULL)
		w->gnext->gprev = w->gprev;
	w->gnext = w->gprev = NULL;
	w->group = NULL;
	g->n--;
	heap_remove(w);
	if (!w->sse)
		metrics_parked(-1);
	if (g->n == 0) {
		group_unlink(g);
		group_free(g);
	}
}

/* Detach g's waiters from the heap (the group itself is already out of
 * the lot); they stay chained through gnext. */
static void
group_take(struct group *g)
{
	for (struct waiter *w = g->head; w != NULL; w = w->gnext) {
		heap_remove(w);
		if (!w->sse)
			metrics_parked(-1);
	}
}

static uint64_t
head_seq(struct seg *s)
{
	struct ring_info info;

	ring_info(s->ring, &info);
	return info.head_seq;
}

/* With park_mu held: put w in its group and the heap.  Returns whether
 * the watcher's current sleep does not cover it (kick it). */
static bool
park_insert_locked(struct waiter *w)
{
	struct lot *lot;
	struct group *g;

	lot = lot_of(w->feed);
	for (g = lot->groups; g != NULL; g = g->next)
		if (g->seg == w->seg && g->seq_after == w->seq_after && g->sse == w->sse &&
		    g->cursor == w->cursor && strcmp(g->fs->key, w->fs->key) == 0)
			break;
	if (g == NULL) {
		g = calloc(1, sizeof(*g));
		if (g == NULL)
			fatal("out of memory");
		g->feed = w->feed;
		g->seg = seg_ref(w->seg);
		g->fs = fspec_ref(w->fs);
		g->seq_after = w->seq_after;
		g->cursor = w->cursor;
		g->sse = w->sse;
		g->next = lot->groups;
		if (lot->groups != NULL)
			lot->groups->prev = g;
		lot->groups = g;
	}
	w->group = g;
	w->gprev = NULL;
	w->gnext = g->head;
	if (g->head != NULL)
		g->head->gprev = w;
	g->head = w;
	g->n++;
	heap_push(w);
	if (!w->sse)
		metrics_parked(1);
	return w->deadline_ms < sleep_until_ms || w->feed->idx >= n_watched ||
	       watched[w->feed->idx] != w->seg;
}

/* Park w unless its ring already moved past it.  true: parked. */
static bool
park_insert(struct waiter *w)
{
	bool need_kick;

	pthread_mutex_lock(&park_mu);
	/* ring_wait with no time: has the head passed seq_after?  (Cheaper
	 * than ring_info, which also probes the writer's pid.) */
	if (atomic_load(&stopping) || ring_wait(w->seg->ring, w->seq_after, 0) == RING_OK) {
		pthread_mutex_unlock(&park_mu);
		return false;
	}
	need_kick = park_insert_locked(w);
	pthread_mutex_unlock(&park_mu);
	if (need_kick)
		do_kick();
	return true;
}

/* ---- building replies ---- */

static struct reply *
json_reply(uint64_t cursor, const struct bbuf *batches, int n_batches)
{
	struct bbuf b = {0};
	char head[160], cc[64];
	struct reply *r;

	if (n_batches > 0)
		snprintf(cc, sizeof(cc), "public, max-age=%d, immutable", park_cache_max_age_s);
	else
		snprintf(cc, sizeof(cc), "no-store");
	render_head(&b, 200, "application/json", cc, NULL);
	snprintf(head, sizeof(head), "{\"cursor\":\"%" PRIu64 "\",\"batches\":[", cursor);
	bbuf_adds(&b, head);
	if (batches != NULL)
		bbuf_add(&b, batches->p, batches->len);
	bbuf_adds(&b, "]}");
	r = reply_new(&b, 200, (uint64_t)n_batches);
	bbuf_free(&b);
	return r;
}

static struct reply *
error_reply(int status, const char *code, const char *message)
{
	struct bbuf b = {0};
	struct reply *r;

	render_error(&b, status, code, message);
	r = reply_new(&b, status, 0);
	bbuf_free(&b);
	return r;
}

static struct reply *
gone_reply(uint64_t cursor)
{
	char msg[200];

	snprintf(msg, sizeof(msg),
	         "cursor %" PRIu64 " is no longer held here: take a new snapshot (request the feed "
	         "without a cursor)",
	         cursor);
	return error_reply(410, "cursor_gone", msg);
}

struct reply *
park_snapshot_reply(struct waiter *w, struct ring_buf *scratch)
{
	for (int attempt = 0; attempt < 5; attempt++) {
		struct ring_snapshot snap;
		struct batch_view v;
		struct render_range rr;
		struct bbuf b = {0}, body = {0}, sb = {0};
		char err[256], num[96];
		struct reply *r;
		int rc;

		if (ring_snapshot_open(w->seg->ring, &snap, err, sizeof(err)) != RING_OK) {
			log_warning("feed=%s: %s", w->feed->name, err);
			return NULL;
		}
		if (!batch_view(snap.data, snap.len, &v)) {
			log_warning("feed=%s: the snapshot file is corrupt", w->feed->name);
			ring_snapshot_release(&snap);
			return NULL;
		}
		/* The snapshot batch is always sent, even filtered to nothing:
		 * it is the state the later batches apply to. */
		if (!render_batch(&sb, &v, w->fs->filter, snap.cursor)) {
			snprintf(num, sizeof(num),
			         "{\"timestamp\":\"%" PRIu64 "\",\"inserted\":[],\"deleted\":[]}",
			         snap.cursor);
			bbuf_adds(&sb, num);
		}
		if (w->sse) {
			render_sse_event(&body, "snapshot", snap.cursor, sb.p, sb.len);
		} else {
			bbuf_add(&body, sb.p, sb.len);
			bbuf_adds(&body, ",");
		}
		size_t mark = body.len;
		/* Kept: ring_snapshot_release zeroes snap, and the check below
		 * must compare with the real seq_after, or a snapshot whose next
		 * batch is gone (lapped, or the ring restarted without a new
		 * snapshot) would be served alone as if it were current. */
		uint64_t seq_after = snap.seq_after;
		rc = render_range(w->seg->ring, seq_after, head_seq(w->seg), w->fs->filter, w->sse,
		                  RENDER_MAX_REPLY, &body, scratch, &rr, snap.cursor);
		ring_snapshot_release(&snap);
		bbuf_free(&sb);
		if (rc != RING_OK && rr.next_seq == seq_after) {
			bbuf_free(&body);
			if (rc == RING_GONE)
				continue; /* a newer snapshot replaced this one */
			return NULL;
		}
		if (!w->sse && body.len == mark)
			body.len--; /* no later batch: drop the comma */
		w->seq_after = rr.next_seq;
		w->cursor = rr.last_cursor;
		metrics_render();
		if (w->sse) {
			r = reply_new(&body, 200, (uint64_t)rr.n_batches + 1);
		} else {
			render_head(&b, 200, "application/json", "no-store", NULL);
			snprintf(num, sizeof(num),
			         "{\"cursor\":\"%" PRIu64 "\",\"columns\":", w->cursor);
			bbuf_adds(&b, num);
			bbuf_adds(&b, ring_columns(w->seg->ring));
			bbuf_adds(&b, ",\"batches\":[");
			bbuf_add(&b, body.p, body.len);
			bbuf_adds(&b, "]}");
			r = reply_new(&b, 200, (uint64_t)rr.n_batches + 1);
			bbuf_free(&b);
		}
		bbuf_free(&body);
		return r;
	}
	log_warning("feed=%s: the snapshot kept being replaced while read", w->feed->name);
	return NULL;
}

static bool
same_history(const struct waiter *w)
{
	uint64_t seq;

	return ring_lookup(w->seg->ring, w->cursor, &seq) == RING_OK && seq == w->seq_after;
}

/* What w gets now: a reply, or NULL with w advanced (nothing matched). */
static struct reply *
render_for(struct waiter *w, uint64_t head, struct ring_buf *scratch)
{
	struct bbuf b = {0};
	struct render_range rr;
	struct reply *r;
	int rc;

	/* Still the same history?  ring_reset (a new history in the same
	 * segment) keeps seq numbers running, so seq_after alone cannot
	 * tell; the cursor must still name the batch before seq_after, before
	 * and after the copy. */
	if (!same_history(w)) {
		rc = RING_GONE;
		rr.next_seq = w->seq_after;
	} else {
		rc = render_range(w->seg->ring, w->seq_after, head, w->fs->filter, w->sse,
		                  RENDER_MAX_REPLY, &b, scratch, &rr, w->cursor);
		if (!same_history(w)) {
			rc = RING_GONE;
			rr.next_seq = w->seq_after;
		}
	}
	if (rr.next_seq == w->seq_after && rc != RING_OK) {
		bbuf_free(&b);
		if (rc == RING_GONE) {
			if (w->sse) { /* EventSource cannot follow a 410: resync in-band */
				r = park_snapshot_reply(w, scratch);
				return r != NULL ? r
				                 : error_reply(503, "feed_not_live", "no snapshot");
			}
			return gone_reply(w->cursor);
		}
		log_warning("feed=%s: corrupt batch at seq %" PRIu64, w->feed->name, w->seq_after);
		return error_reply(503, "feed_unavailable",
		                   "the feed's segment holds a corrupt batch");
	}
	w->seq_after = rr.next_seq;
	w->cursor = rr.last_cursor;
	if (rr.n_batches == 0) {
		bbuf_free(&b);
		return NULL;
	}
	metrics_render();
	if (w->sse)
		r = reply_new(&b, 200, (uint64_t)rr.n_batches);
	else
		r = json_reply(w->cursor, &b, rr.n_batches);
	bbuf_free(&b);
	return r;
}

/* ---- shared renders for waiters served one by one ----
 *
 * The watcher renders once per group, but a request that finds its
 * batches already there (a long-poll re-polling behind the head, an SSE
 * stream whose writer fell behind) is served by park_serve alone.  Under
 * load thousands of them ask for the same range in a row: each rendered
 * its own copy (ring_read, batch_view, the reply's malloc and copy).  The
 * last few replies are kept here by (segment, position, head, format,
 * filter), so those requests share one.  A hit still checks the cursor's
 * history (same_history) like a render; a new head misses, so nobody gets
 * a reply older than a render would give. */

#define RCACHE_N 8

struct rcache_ent {
	struct seg *seg; /* not referenced: only compared (with seg_id), never followed */
	uint64_t seg_id, seq_after, cursor, head;
	bool sse;
	char *key;
	struct reply *r; /* referenced */
	uint64_t next_seq, last_cursor;
};

static pthread_mutex_t rcache_mu = PTHREAD_MUTEX_INITIALIZER;
static struct rcache_ent rcache[RCACHE_N];
static unsigned rcache_next;

static bool
rcache_match(const struct rcache_ent *e, const struct waiter *w, uint64_t head)
{
	return e->r != NULL && e->seg == w->seg && e->seg_id == w->seg->id &&
	       e->seq_after == w->seq_after && e->cursor == w->cursor && e->head == head &&
	       e->sse == w->sse && strcmp(e->key, w->fs->key) == 0;
}

/* A shared reply for w at head, advancing w as the render did; NULL: none. */
static struct reply *
rcache_get(struct waiter *w, uint64_t head)
{
	struct reply *r = NULL;
	uint64_t next_seq = 0, last_cursor = 0;

	pthread_mutex_lock(&rcache_mu);
	for (int i = 0; i < RCACHE_N; i++)
		if (rcache_match(&rcache[i], w, head)) {
			r = reply_ref(rcache[i].r);
			next_seq = rcache[i].next_seq;
			last_cursor = rcache[i].last_cursor;
			break;
		}
	pthread_mutex_unlock(&rcache_mu);
	if (r == NULL)
		return NULL;
	if (!same_history(w)) {
		reply_release(r);
		return NULL; /* a new history since: render (and answer 410) */
	}
	w->seq_after = next_seq;
	w->cursor = last_cursor;
	return r;
}

/* Remember r, rendered for w's position before the render (seq_after,
 * cursor) at head; w has been advanced to after it. */
static void
rcache_put(const struct waiter *w, uint64_t seq_after, uint64_t cursor, uint64_t head,
           struct reply *r)
{
	struct rcache_ent *e;
	struct reply *old;
	char *oldkey, *key = strdup(w->fs->key);

	if (key == NULL)
		return;
	pthread_mutex_lock(&rcache_mu);
	e = &rcache[rcache_next++ % RCACHE_N];
	old = e->r;
	oldkey = e->key;
	*e = (struct rcache_ent){.seg = w->seg,
	                         .seg_id = w->seg->id,
	                         .seq_after = seq_after,
	                         .cursor = cursor,
	                         .head = head,
	                         .sse = w->sse,
	                         .key = key,
	                         .r = reply_ref(r),
	                         .next_seq = w->seq_after,
	                         .last_cursor = w->cursor};
	pthread_mutex_unlock(&rcache_mu);
	if (old != NULL)
		reply_release(old);
	free(oldkey);
}

static void
rcache_clear(void)
{
	for (int i = 0; i < RCACHE_N; i++) {
		if (rcache[i].r != NULL)
			reply_release(rcache[i].r);
		free(rcache[i].key);
		rcache[i] = (struct rcache_ent){0};
	}
}

/* render_for through the cache (park_serve's path). */
static struct reply *
render_shared(struct waiter *w, uint64_t head, struct ring_buf *scratch)
{
	uint64_t seq_after = w->seq_after, cursor = w->cursor;
	struct reply *r = rcache_get(w, head);

	if (r != NULL)
		return r;
	r = render_for(w, head, scratch);
	/* Only batches: an error is not for sharing.  (An in-band SSE resync
	 * is stored but never found: the history check fails on it.) */
	if (r != NULL && r->status == 200 && r->batches > 0 && w->seq_after > seq_after &&
	    w->seg != NULL)
		rcache_put(w, seq_after, cursor, head, r);
	return r;
}

static struct reply *
timeout_reply(struct waiter *w)
{
	static const char ka[] = ": keep-alive\n\n";

	if (w->sse) {
		struct bbuf b = {(char *)ka, sizeof(ka) - 1, 0};
		return reply_new(&b, 200, 0);
	}
	return json_reply(w->cursor, NULL, 0);
}

/* ---- serving one waiter (acceptor and writer threads) ---- */

void
park_serve(struct waiter *w, struct ring_buf *scratch)
{
	for (;;) {
		struct ring_info info;
		const char *why;
		struct reply *r;

		if (atomic_load(&stopping)) {
			if (w->sse) {
				reply_finish(w->req);
				metrics_sse(-1);
				waiter_free(w);
			} else {
				reply_enqueue(w, timeout_reply(w), 0);
			}
			return;
		}
		if (!feeds_live_cached(w->seg, &why)) {
			r = error_reply(503, "feed_not_live", why);
			if (w->sse) {
				/* Headers are out: end the stream, the browser reconnects. */
				reply_release(r);
				reply_finish(w->req);
				metrics_sse(-1);
				metrics_request(MK_SSE, 503);
				waiter_free(w);
				return;
			}
			reply_enqueue(w, r, 0);
			return;
		}
		if (ring_wait(w->seg->ring, w->seq_after, 0) == RING_OK) {
			ring_info(w->seg->ring, &info);
			r = render_shared(w, info.head_seq, scratch);
			if (r == NULL)
				continue; /* filtered out: look again, maybe park */
			reply_deliver(w, r);
			return;
		}
		if (!w->sse && w->deadline_ms <= mono_ms()) {
			reply_deliver(w, timeout_reply(w));
			return;
		}
		if (park_insert(w))
			return;
	}
}

void
park_serve_list(struct waiter *list, struct ring_buf *scratch)
{
	struct waiter *rest = NULL, **rest_tail = &rest;
	bool need_kick = false;
	int64_t now = mono_ms();

	/* The usual case (the stream is at the head, live, not stopping)
	 * parks again at once: all of those with one round of park_mu, not
	 * one each (the writers re-park every SSE stream after every event,
	 * and contended for the lock).  Anything else takes park_serve's
	 * path. */
	pthread_mutex_lock(&park_mu);
	while (list != NULL) {
		struct waiter *w = list;
		const char *why;

		list = w->qnext;
		w->qnext = NULL;
		if (atomic_load(&stopping) || !feeds_live_cached(w->seg, &why) ||
		    (!w->sse && w->deadline_ms <= now) ||
		    ring_wait(w->seg->ring, w->seq_after, 0) == RING_OK) {
			*rest_tail = w;
			rest_tail = &w->qnext;
			continue;
		}
		need_kick |= park_insert_locked(w);
	}
	pthread_mutex_unlock(&park_mu);
	if (need_kick)
		do_kick();
	while (rest != NULL) {
		struct waiter *w = rest;
		rest = w->qnext;
		w->qnext = NULL;
		park_serve(w, scratch);
	}
}

/* ---- abandoned requests ---- */

#define HANGUP_SWEEP_MS 5000
#define TRIM_AFTER_ABANDONED 256 /* released by one sweep: malloc_trim */

/* With park_mu held: take out every parked waiter whose connection nginx
 * has closed (the browser went away: fastcgi_ignore_client_abort off), so
 * that it does not hold a descriptor until its timeout.  One poll(2) over
 * every parked descriptor, every HANGUP_SWEEP_MS; they are chained through
 * qnext into *gone. */
static void
sweep_hangups(struct waiter **gone)
{
	static struct pollfd *pfd;
	static size_t cap;

	if (heap_n == 0)
		return;
	if (heap_n > cap) {
		struct pollfd *n = realloc(pfd, heap_n * sizeof(*pfd));
		if (n == NULL)
			return; /* try again next time */
		pfd = n;
		cap = heap_n;
	}
	for (size_t i = 0; i < heap_n; i++) {
		pfd[i].fd = heap[i]->req->ipcFd;
		pfd[i].events = POLLRDHUP;
		pfd[i].revents = 0;
	}
	if (poll(pfd, heap_n, 0) <= 0)
		return;
	/* Unparking reorders the heap: collect first, then unpark. */
	size_t n_gone = 0;
	for (size_t i = 0; i < heap_n; i++)
		if (pfd[i].revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL))
			pfd[n_gone++].fd = (int)i;
	struct waiter **dead = calloc(n_gone, sizeof(*dead));
	if (dead == NULL)
		return;
	for (size_t k = 0; k < n_gone; k++)
		dead[k] = heap[pfd[k].fd];
	for (size_t k = 0; k < n_gone; k++) {
		unpark(dead[k]);
		dead[k]->qnext = *gone;
		*gone = dead[k];
	}
	free(dead);
}

/* ---- the watcher ---- */

struct ready {
	struct group *g;
	int status; /* 0: render; else an error for every waiter */
	const char *why;
	struct ready *next;
};

/* w leaves its group g (the group is being answered or re-parked whole)
 * and takes the group's position: where the render left it. */
static void
take_position(struct waiter *w, const struct group *g)
{
	w->gnext = w->gprev = NULL;
	w->group = NULL;
	w->seq_after = g->seq_after;
	w->cursor = g->cursor;
	if (w->seg != g->seg) {
		seg_release(w->seg);
		w->seg = seg_ref(g->seg);
	}
}

static void
answer_group(struct group *g, struct reply *r, int64_t wake_ns)
{
	struct waiter *w = g->head, *next, *tail = NULL;
	size_t n = 0;

	for (; w != NULL; w = next) {
		next = w->gnext;
		take_position(w, g);
		w->pending = reply_ref(r);
		w->wake_ns = wake_ns;
		w->qnext = next;
		tail = w;
		n++;
	}
	reply_enqueue_list(g->head, tail, n);
	g->head = NULL;
	g->n = 0;
}

/* Re-park every waiter of a group that the render advanced without a
 * match (or that moved to a new segment). */
static void
repark_group(struct group *g, struct ring_buf *scratch)
{
	struct waiter *w = g->head, *next;

	for (; w != NULL; w = next) {
		next = w->gnext;
		take_position(w, g);
		park_serve(w, scratch);
	}
	g->head = NULL;
	g->n = 0;
}

static void
process_ready(struct ready *list, struct ring_buf *scratch, int64_t wake_ns)
{
	while (list != NULL) {
		struct ready *rd = list;
		struct group *g = rd->g;
		struct reply *r = NULL;

		list = rd->next;
		if (rd->status == 410) {
			if (g->sse) {
				repark_group(g, scratch); /* park_serve resyncs in-band */
			} else {
				r = gone_reply(g->cursor);
				answer_group(g, r, 0);
			}
		} else if (rd->status != 0) {
			r = error_reply(rd->status, "feed_not_live", rd->why);
			answer_group(g, r, 0);
		} else {
			/* Render once for the whole group: any member stands
			 * for all (same segment, position, format, filter). */
			struct waiter proto = *g->head;
			proto.seg = g->seg;
			proto.fs = g->fs;
			proto.seq_after = g->seq_after;
			proto.cursor = g->cursor;
			proto.sse = g->sse;
			r = render_for(&proto, head_seq(g->seg), scratch);
			g->seq_after = proto.seq_after;
			g->cursor = proto.cursor;
			if (r == NULL)
				repark_group(g, scratch);
			else
				answer_group(g, r, wake_ns);
		}
		if (r != NULL)
			reply_release(r);
		group_free(g);
		free(rd);
	}
}

static long
futex_waitv_call(struct futex_waitv *v, unsigned n, int64_t deadline_ms)
{
	struct timespec ts = {deadline_ms / 1000, (deadline_ms % 1000) * 1000000};

	return syscall(SYS_futex_waitv, v, n, 0, &ts, CLOCK_MONOTONIC);
}

static void *
watch_main(void *arg)
{
	struct ring_buf scratch = {0};
	struct futex_waitv wv[FEEDS_MAX + 1];
	struct seg *segs[FEEDS_MAX];
	bool have_waitv = true;
	int64_t wake_ns = mono_ns(), last_sweep = mono_ms();

	(void)arg;
	for (;;) {
		struct ready *ready = NULL;
		struct waiter *expired = NULL, *abandoned = NULL;
		int64_t now = mono_ms(), deadline;
		int n = feeds_count(), nw = 0;
		bool stop = atomic_load(&stopping);

		/* Outside park_mu: reopen replaced segments (file I/O). */
		for (int i = 0; i < n; i++)
			segs[i] = feeds_current(feeds_at(i), 1000);

		pthread_mutex_lock(&park_mu);
		/* Sweep before taking out the ready groups, while every parked
		 * waiter is in the heap: under steady load a filtered group
		 * whose batches all miss is ready at nearly every iteration, and
		 * a sweep after the scan kept missing its members (found by
		 * tests/chaos/chaos_pg.py: 2,000 vanished filtered long-polls
		 * held their descriptors until their timeout, ~25 s, not 5). */
		if (now - last_sweep >= HANGUP_SWEEP_MS) {
			sweep_hangups(&abandoned);
			last_sweep = now;
		}
		for (int i = 0; i < n; i++) {
			struct feed *f = feeds_at(i);
			struct seg *s = segs[i];
			struct group *g, *gn;
			struct ring_info info;
			const char *why = NULL;
			uint32_t val = 0;
			const void *word = NULL;
			bool live;

			if (s == NULL)
				continue;
			/* Word before head: see the comment at the top. */
			word = ring_wake_word(s->ring, &val);
			live = feeds_live(s, &info, &why);
			wv[nw].uaddr = (uint64_t)(uintptr_t)word;
			wv[nw].val = val;
			wv[nw].flags = FUTEX_32; /* shared: the word is in a file mapping */
			wv[nw].__reserved = 0;
			nw++;
			watched[i] = s;
			if (f->lot == NULL)
				continue;
			for (g = f->lot->groups; g != NULL; g = gn) {
				int status = 0;

				gn = g->next;
				if (g->seg != s) {
					/* The daemon restarted: find the group's
					 * cursor in the new history. */
					uint64_t seq;
					if (ring_lookup(s->ring, g->cursor, &seq) == RING_OK) {
						seg_release(g->seg);
						g->seg = seg_ref(s);
						g->seq_after = seq;
					} else {
						status = 410;
					}
				}
				if (status == 0 && !live)
					status = 503;
				if (status == 0 && g->seq_after >= info.head_seq)
					continue;
				struct ready *rd = calloc(1, sizeof(*rd));
				if (rd == NULL)
					fatal("out of memory");
				group_unlink(g);
				group_take(g);
				rd->g = g;
				rd->status = status;
				rd->why = why;
				rd->next = ready;
				ready = rd;
			}
		}
		n_watched = n;
		/* Deadlines. */
		while (heap_n > 0 && (stop || heap[0]->deadline_ms <= now)) {
			struct waiter *w = heap[0];
			unpark(w);
			w->qnext = expired;
			expired = w;
		}
		deadline = now + 1000; /* liveness and segment checks */
		if (heap_n > 0 && heap[0]->deadline_ms < deadline)
			deadline = heap[0]->deadline_ms;
		sleep_until_ms = deadline;
		wv[nw].uaddr = (uint64_t)(uintptr_t)&kick;
		wv[nw].val = atomic_load_explicit(&kick, memory_order_acquire);
		wv[nw].flags = FUTEX_32 | FUTEX_PRIVATE_FLAG;
		wv[nw].__reserved = 0;
		pthread_mutex_unlock(&park_mu);

		for (int i = 0; i < n; i++)
			seg_release(segs[i]); /* groups and waiters hold their own */

		size_t n_abandoned = 0;
		while (abandoned != NULL) {
			struct waiter *w = abandoned;
			abandoned = w->qnext;
			w->qnext = NULL;
			metrics_request(w->sse ? MK_SSE : MK_LONGPOLL, 499);
			if (w->sse)
				metrics_sse(-1);
			reply_finish(w->req); /* a closed peer: no wait */
			w->req = NULL;
			waiter_free(w);
			n_abandoned++;
		}
#ifdef __GLIBC__
		/* Many clients gone at once: give their memory back.  glibc
		 * keeps the freed chunks of the handler threads' arenas mapped,
		 * so the RSS would stay at its peak (tests/chaos/chaos_pg.py:
		 * 2 MB, 24 MB with 2,000 parked, still 24 MB after they
		 * vanished; 2.3 MB after malloc_trim, about a millisecond). */
		if (n_abandoned >= TRIM_AFTER_ABANDONED)
			malloc_trim(0);
#endif
		if (ready != NULL)
			process_ready(ready, &scratch, wake_ns);
		while (expired != NULL) {
			struct waiter *w = expired;
			expired = w->qnext;
			w->qnext = NULL;
			if (stop && w->sse) {
				reply_finish(w->req);
				metrics_sse(-1);
				waiter_free(w);
				continue;
			}
			w->keepalive = w->sse;
			reply_enqueue(w, timeout_reply(w), 0);
		}
		if (stop) {
			pthread_mutex_lock(&park_mu);
			bool empty = heap_n == 0;
			pthread_mutex_unlock(&park_mu);
			if (empty)
				break;
			continue;
		}
		if (ready != NULL)
			continue; /* look again before sleeping */

		if (have_waitv) {
			long rc = futex_waitv_call(wv, (unsigned)nw + 1, deadline);
			if (rc < 0 && errno == ENOSYS) {
				log_warning("futex_waitv(2) is missing (Linux < 5.16): polling "
				            "every 10 ms");
				have_waitv = false;
			}
		} else {
			struct timespec ts = {0, 10 * 1000000};
			nanosleep(&ts, NULL);
		}
		wake_ns = mono_ns();
	}
	free(scratch.data);
	return NULL;
}

void
park_init(void)
{
	if (pthread_create(&watcher, NULL, watch_main, NULL) != 0)
		fatal("cannot start the watcher thread");
	watcher_started = true;
}

void
park_stop(void)
{
	atomic_store(&stopping, true);
	if (!watcher_started)
		return;
	do_kick();
	pthread_join(watcher, NULL);
	watcher_started = false;
	pthread_mutex_lock(&rcache_mu);
	rcache_clear();
	pthread_mutex_unlock(&rcache_mu);
}
