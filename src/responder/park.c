/*
 * park.c - the parking lot (park.h).
 *
 * Lost-wakeup argument.  The watcher, holding the lot's lock, reads each
 * feed's wake word BEFORE its head_seq, takes out every group behind the
 * head, then sleeps in futex_waitv on the words it read.  park_insert(),
 * also under the lock, re-reads the head before parking a waiter.  A
 * batch published after the watcher's read of the head bumps the word
 * after the head (ring_wake), so the futex_waitv that follows returns at
 * once; a batch published before it is seen either by the watcher's scan
 * or by park_insert's re-check.  A new waiter that the watcher's current
 * sleep does not cover (an earlier deadline, a feed or segment not yet
 * watched) bumps the kick word, which is in the same futex_waitv.
 */
#include <config.h> /* autoconf's: _GNU_SOURCE for POLLRDHUP */

#include "park.h"

#include "clock.h"
#include "log.h"
#include "memtrim.h"
#include "metrics.h"
#include "reply.h"
#include "xmalloc.h"

#include <errno.h>
#include <linux/futex.h>
#include <malloc.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define HANGUP_SWEEP_MS 5000
#define TRIM_AFTER_ABANDONED 256 /* released by one sweep: malloc_trim */

struct group {
	struct group *next, *prev; /* in its feed's list (park.groups) */
	struct feed *feed;
	struct seg *seg;  /* referenced */
	struct fspec *fs; /* referenced */
	uint64_t seq_after, cursor;
	uint32_t ident;
	bool sse;
	struct waiter *head; /* linked by gnext/gprev */
	size_t n;
};

static void
do_kick(struct park *p)
{
	atomic_fetch_add_explicit(&p->kick, 1, memory_order_release);
	syscall(SYS_futex, (uint32_t *)&p->kick, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

/* ---- the deadline heap (lock held) ---- */

static void
heap_swap(struct park *p, size_t a, size_t b)
{
	struct waiter *t = p->heap[a];

	p->heap[a] = p->heap[b];
	p->heap[b] = t;
	p->heap[a]->heap_idx = a;
	p->heap[b]->heap_idx = b;
}

static void
heap_up(struct park *p, size_t i)
{
	while (i > 0) {
		size_t parent = (i - 1) / 2;
		if (p->heap[parent]->deadline_ms <= p->heap[i]->deadline_ms)
			break;
		heap_swap(p, i, parent);
		i = parent;
	}
}

static void
heap_down(struct park *p, size_t i)
{
	for (;;) {
		size_t l = 2 * i + 1, r = l + 1, m = i;
		if (l < p->heap_n && p->heap[l]->deadline_ms < p->heap[m]->deadline_ms)
			m = l;
		if (r < p->heap_n && p->heap[r]->deadline_ms < p->heap[m]->deadline_ms)
			m = r;
		if (m == i)
			break;
		heap_swap(p, i, m);
		i = m;
	}
}

static void
heap_push(struct park *p, struct waiter *w)
{
	if (p->heap_n == p->heap_cap) {
		p->heap_cap = p->heap_cap ? p->heap_cap * 2 : 1024;
		p->heap = xrealloc(p->heap, p->heap_cap * sizeof(*p->heap));
	}
	w->heap_idx = p->heap_n;
	p->heap[p->heap_n++] = w;
	heap_up(p, w->heap_idx);
}

static void
heap_remove(struct park *p, struct waiter *w)
{
	size_t i = w->heap_idx;

	p->heap_n--;
	if (i != p->heap_n) {
		p->heap[i] = p->heap[p->heap_n];
		p->heap[i]->heap_idx = i;
		heap_down(p, i);
		heap_up(p, i);
	}
}

/* ---- groups (lock held) ---- */

static void
group_unlink(struct park *p, struct group *g)
{
	if (g->prev != NULL)
		g->prev->next = g->next;
	else
		p->groups[g->feed->idx] = g->next;
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

/* The group w belongs in (same segment, position, format and filter),
 * made when there is none.  Parked waiters all wait at the head (park_insert
 * checks), so every position up to where the ring is complete there (c:
 * the frontier) is the same position: clients whose cursors differ only
 * because they were answered at different frontiers share one group, and
 * one render, at the highest of them.  A position past c (a client from a
 * host further ahead) keeps its own: the batches it holds are skipped. */
static struct group *
group_for(struct park *p, const struct waiter *w)
{
	struct group **list = &p->groups[w->feed->idx], *g;
	uint64_t c = ring_complete(w->seg->ring, w->seq_after, 0);

	for (g = *list; g != NULL; g = g->next)
		if (g->seg == w->seg && g->seq_after == w->seq_after && g->sse == w->sse &&
		    g->ident == w->ident && strcmp(g->fs->key, w->fs->key) == 0 &&
		    (g->cursor == w->cursor || (g->cursor <= c && w->cursor <= c))) {
			if (g->cursor != w->cursor)
				g->cursor = c;
			return g;
		}
	g = xcalloc(1, sizeof(*g));
	g->feed = w->feed;
	g->seg = seg_ref(w->seg);
	g->fs = fspec_ref(w->fs);
	g->seq_after = w->seq_after;
	g->cursor = w->cursor;
	g->ident = w->ident;
	g->sse = w->sse;
	g->next = *list;
	if (*list != NULL)
		(*list)->prev = g;
	*list = g;
	return g;
}

/* Take w out of its group and the heap. */
static void
unpark(struct park *p, struct waiter *w)
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
	heap_remove(p, w);
	if (!w->sse)
		metrics_parked(-1);
	if (g->n == 0) {
		group_unlink(p, g);
		group_free(g);
	}
}

/* Detach g's waiters from the heap (the group itself is already out of
 * its list); they stay chained through gnext. */
static void
group_take(struct park *p, struct group *g)
{
	for (struct waiter *w = g->head; w != NULL; w = w->gnext) {
		heap_remove(p, w);
		if (!w->sse)
			metrics_parked(-1);
	}
}

/* Put w in its group and the heap.  Returns whether the watcher's
 * current sleep does not cover it (kick it). */
static bool
park_insert_locked(struct park *p, struct waiter *w)
{
	struct group *g = group_for(p, w);

	w->group = g;
	w->gprev = NULL;
	w->gnext = g->head;
	if (g->head != NULL)
		g->head->gprev = w;
	g->head = w;
	g->n++;
	heap_push(p, w);
	if (!w->sse)
		metrics_parked(1);
	return w->deadline_ms < p->sleep_until_ms || w->feed->idx >= p->n_watched ||
	       p->watched[w->feed->idx] != w->seg;
}

/* Park w unless its ring already moved past it.  true: parked. */
static bool
park_insert(struct park *p, struct waiter *w)
{
	bool need_kick;

	pthread_mutex_lock(&p->mu);
	/* ring_wait with no time: has the head passed seq_after?  (Cheaper
	 * than ring_info, which also probes the writer's pid.) */
	if (atomic_load(&p->stopping) || ring_wait(w->seg->ring, w->seq_after, 0) == RING_OK) {
		pthread_mutex_unlock(&p->mu);
		return false;
	}
	need_kick = park_insert_locked(p, w);
	pthread_mutex_unlock(&p->mu);
	if (need_kick)
		do_kick(p);
	return true;
}

/* ---- serving one waiter (the accepting thread, handlers, writers) ---- */

void
park_serve(struct park *p, struct waiter *w, struct thread_ctx *t)
{
	for (;;) {
		struct ring_info info;
		const char *why;
		struct reply *r;

		if (atomic_load(&p->stopping)) {
			if (w->sse)
				writer_end(p->writers, w, 0);
			else
				writer_enqueue(p->writers, w, render_timeout_reply(p->render, w),
				               0);
			return;
		}
		if (!feeds_live_cached(w->seg, &why)) {
			if (w->sse) /* headers are out: end the stream, the browser reconnects */
				writer_end(p->writers, w, 503);
			else
				writer_enqueue(p->writers, w,
				               render_error_reply(503, "feed_not_live", why), 0);
			return;
		}
		if (ring_wait(w->seg->ring, w->seq_after, 0) == RING_OK) {
			ring_info(w->seg->ring, &info);
			r = render_next_shared(p->render, w, info.head_seq, &t->scratch);
			if (r == NULL)
				continue; /* filtered out: look again, maybe park */
			writer_deliver(p->writers, t, w, r);
			return;
		}
		if (!w->sse && w->deadline_ms <= clock_mono_ms()) {
			writer_deliver(p->writers, t, w, render_timeout_reply(p->render, w));
			return;
		}
		if (park_insert(p, w))
			return;
	}
}

void
park_serve_list(struct park *p, struct waiter *list, struct thread_ctx *t)
{
	struct waiter *rest = NULL, **rest_tail = &rest;
	bool need_kick = false;
	int64_t now = clock_mono_ms();

	/* The usual case (the stream is at the head, live, not stopping)
	 * parks again at once: all of those with one round of the lock, not
	 * one each (the writers re-park every SSE stream after every event,
	 * and contended for the lock).  Anything else takes park_serve's
	 * path. */
	pthread_mutex_lock(&p->mu);
	while (list != NULL) {
		struct waiter *w = list;
		const char *why;

		list = w->qnext;
		w->qnext = NULL;
		if (atomic_load(&p->stopping) || !feeds_live_cached(w->seg, &why) ||
		    (!w->sse && w->deadline_ms <= now) ||
		    ring_wait(w->seg->ring, w->seq_after, 0) == RING_OK) {
			*rest_tail = w;
			rest_tail = &w->qnext;
			continue;
		}
		need_kick |= park_insert_locked(p, w);
	}
	pthread_mutex_unlock(&p->mu);
	if (need_kick)
		do_kick(p);
	while (rest != NULL) {
		struct waiter *w = rest;
		rest = w->qnext;
		w->qnext = NULL;
		park_serve(p, w, t);
	}
}

void
park_repark(void *arg, struct waiter *list, struct thread_ctx *t)
{
	park_serve_list(arg, list, t);
}

/* ---- the watcher's round ----
 *
 * One pass of the watcher: look at every feed and the deadlines under the
 * lock, collecting what is due; answer it outside the lock; sleep until a
 * ring moves, a deadline, or a kick. */

struct ready {
	struct group *g;
	int status; /* 0: render; else an error for every waiter */
	const char *why;
	struct ready *next;
};

struct round {
	int n;                       /* feeds attached */
	struct seg *segs[FEEDS_MAX]; /* their current segments, referenced */
	struct futex_waitv wv[FEEDS_MAX + 1];
	int nw;                   /* wake words in wv (the kick word follows) */
	struct ready *ready;      /* groups to answer */
	struct waiter *expired;   /* past their deadline (qnext chain) */
	struct waiter *abandoned; /* their client left (qnext chain) */
	int64_t now, deadline_ms;
	bool stop;
};

/* Outside the lock: each feed's current segment, reopening replaced ones
 * (file I/O). */
static void
round_segments(struct park *p, struct round *rd)
{
	rd->n = feeds_count(p->feeds);
	for (int i = 0; i < rd->n; i++)
		rd->segs[i] = feeds_current(p->feeds, feeds_at(p->feeds, i), 1000);
}

/* Take out every parked waiter whose connection nginx has closed (the
 * browser went away: fastcgi_ignore_client_abort off), so that it does
 * not hold a descriptor until its timeout.  One poll(2) over every parked
 * descriptor; they are chained through qnext into rd->abandoned. */
static void
sweep_hangups(struct park *p, struct round *rd)
{
	size_t n = p->heap_n, n_gone = 0;
	struct waiter **dead;

	if (n == 0)
		return;
	if (n > p->pfd_cap) {
		struct pollfd *grown = realloc(p->pfd, n * sizeof(*p->pfd));
		if (grown == NULL)
			return; /* try again next time: the sweep is an optimisation */
		p->pfd = grown;
		p->pfd_cap = n;
	}
	for (size_t i = 0; i < n; i++)
		p->pfd[i] = (struct pollfd){.fd = p->heap[i]->req->ipcFd, .events = POLLRDHUP};
	if (poll(p->pfd, n, 0) <= 0)
		return;
	/* Unparking reorders the heap: collect first, then unpark. */
	for (size_t i = 0; i < n; i++)
		if (p->pfd[i].revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL))
			p->pfd[n_gone++].fd = (int)i;
	dead = xcalloc(n_gone, sizeof(*dead));
	for (size_t k = 0; k < n_gone; k++)
		dead[k] = p->heap[p->pfd[k].fd];
	for (size_t k = 0; k < n_gone; k++) {
		unpark(p, dead[k]);
		dead[k]->qnext = rd->abandoned;
		rd->abandoned = dead[k];
	}
	free(dead);
}

/* Add the wake word of segment s to the round's futex_waitv.  Read BEFORE
 * the head (see the top of the file). */
static void
arm_word(struct round *rd, struct seg *s)
{
	uint32_t val = 0;
	const void *word = ring_wake_word(s->ring, &val);

	rd->wv[rd->nw] = (struct futex_waitv){
	        .uaddr = (uint64_t)(uintptr_t)word,
	        .val = val,
	        .flags = FUTEX_32, /* shared: the word is in a file mapping */
	};
	rd->nw++;
}

/* The status of group g against its feed's current segment s: 0 ready
 * to render (or nothing new: *behind false), 410 its position is not in
 * s's history, 503 the feed is not live.  A group of a replaced segment
 * (the daemon restarted) moves to s when its position is held there.
 * A group whose position is past the frontier (a client that came from
 * a host further ahead) is not behind until batches come: the wake word
 * moves with the frontier too, and render skips batches it holds. */
static int
group_status(struct group *g, struct seg *s, const struct ring_info *info, bool live, bool *behind)
{
	*behind = true;
	if (g->seg != s) {
		uint64_t seq;
		if (ring_seek(s->ring, g->ident, g->cursor, &seq) != RING_OK)
			return 410;
		seg_release(g->seg);
		g->seg = seg_ref(s);
		g->seq_after = seq;
	}
	if (!live)
		return 503;
	*behind = g->seq_after < info->head_seq;
	return 0;
}

/* Take out feed i's groups that have something to answer. */
static void
collect_ready(struct park *p, struct round *rd, int i)
{
	struct seg *s = rd->segs[i];
	struct ring_info info;
	const char *why = NULL;
	struct group *g, *gn;
	bool live;

	arm_word(rd, s);
	live = feeds_live(s, &info, &why);
	p->watched[i] = s;
	for (g = p->groups[i]; g != NULL; g = gn) {
		bool behind;
		int status = group_status(g, s, &info, live, &behind);
		struct ready *r;

		gn = g->next;
		if (!behind)
			continue;
		group_unlink(p, g);
		group_take(p, g);
		r = xcalloc(1, sizeof(*r));
		*r = (struct ready){g, status, why, rd->ready};
		rd->ready = r;
	}
}

/* Take out the waiters past their deadline (every one when stopping). */
static void
collect_expired(struct park *p, struct round *rd)
{
	while (p->heap_n > 0 && (rd->stop || p->heap[0]->deadline_ms <= rd->now)) {
		struct waiter *w = p->heap[0];
		unpark(p, w);
		w->qnext = rd->expired;
		rd->expired = w;
	}
}

/* The round's sleep: until the earliest deadline, at most a second (for
 * liveness and segment checks), or a kick. */
static void
arm_sleep(struct park *p, struct round *rd)
{
	rd->deadline_ms = rd->now + 1000;
	if (p->heap_n > 0 && p->heap[0]->deadline_ms < rd->deadline_ms)
		rd->deadline_ms = p->heap[0]->deadline_ms;
	p->sleep_until_ms = rd->deadline_ms;
	rd->wv[rd->nw] = (struct futex_waitv){
	        .uaddr = (uint64_t)(uintptr_t)&p->kick,
	        .val = atomic_load_explicit(&p->kick, memory_order_acquire),
	        .flags = FUTEX_32 | FUTEX_PRIVATE_FLAG,
	};
}

/* Under the lock: everything due this round. */
static void
round_collect(struct park *p, struct round *rd, int64_t *last_sweep)
{
	pthread_mutex_lock(&p->mu);
	/* Sweep before taking out the ready groups, while every parked
	 * waiter is in the heap: under steady load a filtered group whose
	 * batches all miss is ready at nearly every iteration, and a sweep
	 * after the scan kept missing its members (found by
	 * tests/chaos/chaos_pg.py: 2,000 vanished filtered long-polls held
	 * their descriptors until their timeout, ~25 s, not 5). */
	if (rd->now - *last_sweep >= HANGUP_SWEEP_MS) {
		sweep_hangups(p, rd);
		*last_sweep = rd->now;
	}
	for (int i = 0; i < rd->n; i++)
		if (rd->segs[i] != NULL)
			collect_ready(p, rd, i);
	p->n_watched = rd->n;
	collect_expired(p, rd);
	arm_sleep(p, rd);
	pthread_mutex_unlock(&p->mu);
	for (int i = 0; i < rd->n; i++)
		seg_release(rd->segs[i]); /* groups and waiters hold their own */
}

/* End the requests whose client left (499). */
static void
end_abandoned(struct park *p, struct round *rd)
{
	size_t n = 0;

	while (rd->abandoned != NULL) {
		struct waiter *w = rd->abandoned;
		rd->abandoned = w->qnext;
		w->qnext = NULL;
		writer_end(p->writers, w, 499); /* a closed peer: no wait */
		n++;
	}
#ifdef __GLIBC__
	/* Many clients gone at once: give their memory back.  glibc keeps
	 * the freed chunks of the handler threads' arenas mapped, so the RSS
	 * would stay at its peak (tests/chaos/chaos_pg.py: 2 MB, 24 MB with
	 * 2,000 parked, still 24 MB after they vanished; 2.3 MB after
	 * malloc_trim, about a millisecond). */
	if (n >= TRIM_AFTER_ABANDONED)
		malloc_trim(0);
#endif
}

/* w leaves its group g (the group is being answered or re-parked whole)
 * and takes the group's position: where the render left it. */
static void
take_position(struct waiter *w, const struct group *g)
{
	w->gnext = w->gprev = NULL;
	w->group = NULL;
	w->seq_after = g->seq_after;
	w->cursor = g->cursor;
	w->ident = g->ident;
	if (w->seg != g->seg) {
		seg_release(w->seg);
		w->seg = seg_ref(g->seg);
	}
}

/* Hand every waiter of g, with r, to the writers. */
static void
answer_group(struct park *p, struct group *g, struct reply *r, int64_t wake_ns)
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
	writer_enqueue_list(p->writers, g->head, tail, n);
	g->head = NULL;
	g->n = 0;
}

/* Re-serve every waiter of a group that the render advanced without a
 * match (or whose cursor left the history: SSE resyncs in park_serve). */
static void
repark_group(struct park *p, struct group *g, struct thread_ctx *t)
{
	struct waiter *w = g->head, *next;

	for (; w != NULL; w = next) {
		next = w->gnext;
		take_position(w, g);
		park_serve(p, w, t);
	}
	g->head = NULL;
	g->n = 0;
}

/* Render once for the whole group: any member stands for all (same
 * segment, position, format, filter).  NULL: nothing matched, the group
 * advanced. */
static struct reply *
render_group(struct park *p, struct group *g, struct thread_ctx *t)
{
	struct waiter proto = *g->head;
	struct ring_info info;
	struct reply *r;

	proto.seg = g->seg;
	proto.fs = g->fs;
	proto.seq_after = g->seq_after;
	proto.cursor = g->cursor;
	proto.ident = g->ident;
	proto.sse = g->sse;
	ring_info(g->seg->ring, &info);
	r = render_next(p->render, &proto, info.head_seq, &t->scratch);
	g->seq_after = proto.seq_after;
	g->cursor = proto.cursor;
	g->ident = proto.ident;
	return r;
}

static void
answer_ready(struct park *p, struct round *rd, struct thread_ctx *t, int64_t wake_ns)
{
	while (rd->ready != NULL) {
		struct ready *ready = rd->ready;
		struct group *g = ready->g;
		struct reply *r = NULL;

		rd->ready = ready->next;
		if (ready->status == 410 && g->sse) {
			repark_group(p, g, t); /* park_serve resyncs in-band */
		} else if (ready->status == 410) {
			r = render_gone_reply(g->cursor, g->ident);
			answer_group(p, g, r, 0);
		} else if (ready->status != 0) {
			r = render_error_reply(ready->status, "feed_not_live", ready->why);
			answer_group(p, g, r, 0);
		} else if ((r = render_group(p, g, t)) == NULL) {
			repark_group(p, g, t);
		} else {
			answer_group(p, g, r, wake_ns);
		}
		reply_release(r);
		group_free(g);
		free(ready);
	}
}

/* Long-polls past their timeout get an empty reply, SSE streams a
 * keep-alive comment; when stopping, SSE streams end. */
static void
answer_expired(struct park *p, struct round *rd)
{
	while (rd->expired != NULL) {
		struct waiter *w = rd->expired;
		rd->expired = w->qnext;
		w->qnext = NULL;
		if (rd->stop && w->sse) {
			writer_end(p->writers, w, 0);
			continue;
		}
		w->keepalive = w->sse;
		writer_enqueue(p->writers, w, render_timeout_reply(p->render, w), 0);
	}
}

static long
futex_waitv_call(struct futex_waitv *v, unsigned n, int64_t deadline_ms)
{
	struct timespec ts = {deadline_ms / 1000, (deadline_ms % 1000) * 1000000};

	return syscall(SYS_futex_waitv, v, n, 0, &ts, CLOCK_MONOTONIC);
}

/* Sleep until a wake word or the kick moves, or the round's deadline.
 * *have_waitv: futex_waitv(2) exists (Linux >= 5.16); else poll. */
static void
round_sleep(struct round *rd, bool *have_waitv)
{
	if (*have_waitv) {
		long rc = futex_waitv_call(rd->wv, (unsigned)rd->nw + 1, rd->deadline_ms);
		if (rc < 0 && errno == ENOSYS) {
			log_warning(
			        "futex_waitv(2) is missing (Linux < 5.16): polling every 10 ms");
			*have_waitv = false;
		}
	} else {
		struct timespec ts = {0, 10 * 1000000};
		nanosleep(&ts, NULL);
	}
}

static bool
lot_empty(struct park *p)
{
	bool empty;

	pthread_mutex_lock(&p->mu);
	empty = p->heap_n == 0;
	pthread_mutex_unlock(&p->mu);
	return empty;
}

static void *
watch_main(void *arg)
{
	struct park *p = arg;
	struct thread_ctx t = {0}; /* not inline_ok: the watcher never writes */
	bool have_waitv = true;
	int64_t wake_ns = clock_mono_ns(), last_sweep = clock_mono_ms();

	for (;;) {
		struct round rd = {.now = clock_mono_ms(), .stop = atomic_load(&p->stopping)};
		bool answered;

		round_segments(p, &rd);
		round_collect(p, &rd, &last_sweep);
		end_abandoned(p, &rd);
		memtrim_tick(rd.now);
		answered = rd.ready != NULL;
		answer_ready(p, &rd, &t, wake_ns);
		answer_expired(p, &rd);
		if (rd.stop) {
			if (lot_empty(p))
				break;
			continue;
		}
		if (answered) {
			/* Look again before sleeping; what that round answers was
			 * seen from now (the wake latency metric starts here). */
			wake_ns = clock_mono_ns();
			continue;
		}
		round_sleep(&rd, &have_waitv);
		wake_ns = clock_mono_ns();
	}
	thread_ctx_free(&t);
	return NULL;
}

void
park_start(struct park *p, struct feeds *feeds, struct render *render, struct writers *writers)
{
	memset(p, 0, sizeof(*p));
	p->feeds = feeds;
	p->render = render;
	p->writers = writers;
	pthread_mutex_init(&p->mu, NULL);
	if (pthread_create(&p->watcher, NULL, watch_main, p) != 0)
		fatal("cannot start the watcher thread");
	p->started = true;
}

void
park_stop(struct park *p)
{
	atomic_store(&p->stopping, true);
	if (!p->started)
		return;
	do_kick(p);
	pthread_join(p->watcher, NULL);
	p->started = false;
	free(p->heap);
	p->heap = NULL;
	free(p->pfd);
	p->pfd = NULL;
}
