/*
 * multi.c - requests for several feeds at one common position (multi.h).
 *
 * The watcher's round: take the parked list, read every feed's wake word
 * (BEFORE looking at the rings, so that a batch published after the look
 * changes a word the futex_waitv then sees moved), render what is ready,
 * answer what is due, put the rest back and sleep.
 *
 * Every render goes through the shared replies (multi.h): a request
 * first looks for the reply of its key at its (from, to); only a miss
 * renders, outside the lock, and offers the result to the others.
 */
#include "multi.h"

#include "batch.h"
#include "clock.h"
#include "log.h"
#include "metrics.h"
#include "render.h"
#include "reply.h"
#include "xmalloc.h"

#include <errno.h>
#include <inttypes.h>
#include <linux/futex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

struct multi_feed {
	struct feed *feed;
	struct seg *seg;  /* referenced */
	struct fspec *fs; /* referenced */
};

struct multi_req {
	struct waiter *w; /* the request (owns this) */
	struct bbuf key;  /* format, then each feed's name and filter key */
	uint64_t hash;    /* of key */
	int n;
	struct multi_feed f[HP_MULTI_MAX];
	bool started;    /* holds a position (a snapshot was sent, or a cursor) */
	uint64_t cursor; /* the common position the client holds */
	uint32_t ident;  /* of the feeds' histories together */
	struct multi_req *next;
};

static size_t state_headers(const void *arg, char *out, size_t cap);

static void
req_free(void *arg)
{
	struct multi_req *q = arg;

	for (int i = 0; i < q->n; i++) {
		seg_release(q->f[i].seg);
		fspec_release(q->f[i].fs);
	}
	bbuf_free(&q->key);
	free(q);
}

void
multi_attach(struct waiter *w)
{
	struct multi_req *q = xcalloc(1, sizeof(*q));

	q->w = w;
	w->multi = q;
	w->multi_free = req_free;
	w->multi_state = state_headers;
	bbuf_adds(&q->key, w->sse ? "sse" : "poll");
}

void
multi_add_feed(struct waiter *w, struct feed *feed, struct seg *seg, struct fspec *fs)
{
	struct multi_req *q = w->multi;

	q->f[q->n++] = (struct multi_feed){feed, seg, fs};
	/* "/NAME LEN:FILTERKEY": a feed name holds neither '/' nor ' '
	 * (http_params.h), and the length delimits the filter key whatever
	 * bytes its values hold. */
	char len[32];
	snprintf(len, sizeof(len), " %zu:", strlen(fs->key));
	bbuf_adds(&q->key, "/");
	bbuf_adds(&q->key, feed->name);
	bbuf_adds(&q->key, len);
	bbuf_adds(&q->key, fs->key);
	q->hash = 14695981039346656037u;
	for (size_t i = 0; i < q->key.len; i++) {
		q->hash ^= (unsigned char)q->key.p[i];
		q->hash *= 1099511628211u;
	}
}

void
multi_set_cursor(struct waiter *w, uint64_t pos, uint32_t ident, bool has_ident)
{
	struct multi_req *q = w->multi;

	q->started = true;
	q->cursor = pos;
	q->ident = has_ident ? ident : 0; /* no history: never resumed */
}

/* ---- positions ---- */

/* The feeds' common position (the lowest frontier), their identities and
 * the request's (FNV-1a over theirs, never 0). */
static uint64_t
common_position(const struct multi_req *q, uint32_t *ids, uint32_t *ident)
{
	uint64_t common = UINT64_MAX;
	uint32_t h = 2166136261u;

	for (int i = 0; i < q->n; i++) {
		struct ring_info info;
		ring_info(q->f[i].seg->ring, &info);
		if (info.frontier < common)
			common = info.frontier;
		ids[i] = info.ident;
		for (int k = 0; k < 4; k++) {
			h ^= (info.ident >> (8 * k)) & 0xff;
			h *= 16777619u;
		}
	}
	*ident = h != 0 ? h : 1;
	return common;
}

/* Feed i's batches in (from_pos, to_pos] from seq from_seq, as JSON
 * batches appended to out.  RING_OK or why not. */
static int
feed_range(struct multi_req *q, int i, uint32_t id, uint64_t from_seq, uint64_t from_pos,
           uint64_t to_pos, struct bbuf *out, struct ring_buf *scratch, int *n_batches)
{
	struct ring *r = q->f[i].seg->ring;
	struct render_range rr;
	uint64_t to_seq;
	int rc = ring_seek(r, id, to_pos, &to_seq);

	if (rc != RING_OK)
		return rc;
	rc = render_range(r, from_seq, to_seq, q->f[i].fs->filter, false, SIZE_MAX, out, scratch,
	                  &rr, from_pos);
	*n_batches += rr.n_batches;
	return rc;
}

/* {"cursor":C,"feeds":{"a":{["columns":..,]"batches":[..]},..}} from
 * each feed's batches, as a long-poll reply or an SSE event. */
static struct reply *
multi_reply(struct multi_req *q, struct bbuf *feeds, bool snapshot, int n_batches)
{
	struct bbuf b = {0}, body = {0};
	char cur[BATCH_POSITION_MAX];
	size_t body_off = 0;
	struct reply *r;

	batch_format_position(q->cursor, q->ident, cur, sizeof(cur));
	bbuf_adds(&body, "{\"cursor\":\"");
	bbuf_adds(&body, cur);
	bbuf_adds(&body, "\",\"feeds\":{");
	for (int i = 0; i < q->n; i++) {
		if (i > 0)
			bbuf_adds(&body, ",");
		render_json_string(&body, q->f[i].feed->name);
		bbuf_adds(&body, ":{");
		if (snapshot) {
			bbuf_adds(&body, "\"columns\":");
			bbuf_adds(&body, ring_columns(q->f[i].seg->ring));
			bbuf_adds(&body, ",");
		}
		bbuf_adds(&body, "\"batches\":[");
		bbuf_add(&body, feeds[i].p, feeds[i].len);
		bbuf_adds(&body, "]}");
	}
	bbuf_adds(&body, "}}");
	if (q->w->sse) {
		render_sse_event(&b, snapshot ? "snapshot" : NULL, q->cursor, q->ident, body.p,
		                 body.len);
	} else {
		render_head(&b, 200, "application/json", "no-store", NULL);
		body_off = b.len;
		bbuf_add(&b, body.p, body.len);
	}
	r = reply_new(&b, 200, (uint64_t)n_batches);
	if (n_batches > 0 || snapshot)
		r->body_off = body_off; /* worth a gzip form (reply.h); SSE: 0 */
	bbuf_free(&b);
	bbuf_free(&body);
	metrics_render();
	return r;
}

static void
free_bufs(struct bbuf *b, int n)
{
	for (int i = 0; i < n; i++)
		bbuf_free(&b[i]);
}

/* Feed i's snapshot batch (filtered) and its batches up to common into
 * out.  false: not there yet (no snapshot, or it is above common, or it
 * was replaced while read). */
static bool
feed_first(struct multi_req *q, int i, uint32_t id, uint64_t common, struct bbuf *out,
           struct ring_buf *scratch, int *n_batches)
{
	struct ring_snapshot snap;
	struct batch_view v;
	char err[256];
	bool ok = false;

	if (ring_snapshot_open(q->f[i].seg->ring, &snap, err, sizeof(err)) != RING_OK)
		return false;
	if (snap.ident == id && snap.cursor <= common && batch_view(snap.data, snap.len, &v)) {
		uint64_t cursor = snap.cursor, seq_after = snap.seq_after;
		if (!render_batch(out, &v, q->f[i].fs->filter, cursor)) {
			char num[96];
			snprintf(num, sizeof(num),
			         "{\"timestamp\":\"%" PRIu64 "\",\"inserted\":[],\"deleted\":[]}",
			         cursor);
			bbuf_adds(out, num);
		}
		size_t mark = out->len;
		bbuf_adds(out, ",");
		ok = feed_range(q, i, id, seq_after, cursor, common, out, scratch, n_batches) ==
		     RING_OK;
		if (out->len == mark + 1)
			out->len = mark; /* no later batch: drop the comma */
	}
	ring_snapshot_release(&snap);
	return ok;
}

/* The first reply: every feed's snapshot and batches up to the common
 * position, once that is at or above every snapshot.  NULL: wait. */
static struct reply *
render_first(struct multi_req *q, uint64_t common, uint32_t ident, const uint32_t *ids,
             struct ring_buf *scratch)
{
	struct bbuf out[HP_MULTI_MAX] = {{0}};
	int n_batches = 0;
	struct reply *r;

	for (int i = 0; i < q->n; i++) {
		if (!feed_first(q, i, ids[i], common, &out[i], scratch, &n_batches)) {
			free_bufs(out, q->n);
			return NULL;
		}
	}
	q->started = true;
	q->cursor = common;
	q->ident = ident;
	r = multi_reply(q, out, true, n_batches + q->n);
	free_bufs(out, q->n);
	return r;
}

/* ---- the shared replies ---- */

enum share_kind {
	SHARE_FIRST, /* snapshots up to to (from 0) */
	SHARE_STEP,  /* batches in (from, to] */
	SHARE_DUE,   /* a long-poll's timeout at from == to */
};

static bool
ent_is(const struct multi_cache_ent *e, const struct multi_req *q, enum share_kind kind,
       uint64_t from, uint64_t to, uint32_t ident)
{
	return e->key != NULL && e->hash == q->hash && e->kind == (int)kind && e->from == from &&
	       e->to == to && e->ident == ident && strlen(e->key) == q->key.len &&
	       memcmp(e->key, q->key.p, q->key.len) == 0;
}

/* The reply requests like q got for (kind, from, to, ident): true when
 * there is one, in *r (referenced; NULL: a step with no filtered row). */
static bool
shared_get(struct multi *m, const struct multi_req *q, enum share_kind kind, uint64_t from,
           uint64_t to, uint32_t ident, struct reply **r)
{
	bool hit = false;

	if (m->cache_n == 0)
		return false;
	pthread_mutex_lock(&m->cache_mu);
	for (int i = 0; i < m->cache_n && !hit; i++) {
		const struct multi_cache_ent *e = &m->cache[i];
		if (ent_is(e, q, kind, from, to, ident)) {
			*r = e->r != NULL ? reply_ref(e->r) : NULL;
			hit = true;
		}
	}
	pthread_mutex_unlock(&m->cache_mu);
	return hit;
}

/* Offer r, what q got for (kind, from, to, ident), to the requests like
 * it (unless another thread rendered the same first). */
static void
shared_put(struct multi *m, const struct multi_req *q, enum share_kind kind, uint64_t from,
           uint64_t to, uint32_t ident, struct reply *r)
{
	struct multi_cache_ent *e, old;
	char *key;

	if (m->cache_n == 0)
		return;
	key = xcalloc(q->key.len + 1, 1);
	memcpy(key, q->key.p, q->key.len);
	pthread_mutex_lock(&m->cache_mu);
	for (int i = 0; i < m->cache_n; i++) {
		if (ent_is(&m->cache[i], q, kind, from, to, ident)) {
			pthread_mutex_unlock(&m->cache_mu);
			free(key);
			return;
		}
	}
	e = &m->cache[m->cache_next++ % (unsigned)m->cache_n];
	old = *e;
	*e = (struct multi_cache_ent){
	        key, q->hash, (int)kind, from, to, ident, r != NULL ? reply_ref(r) : NULL};
	pthread_mutex_unlock(&m->cache_mu);
	free(old.key);
	reply_release(old.r);
}

/* render_first through the shared replies. */
static struct reply *
first_shared(struct multi *m, struct multi_req *q, uint64_t common, uint32_t ident,
             const uint32_t *ids, struct ring_buf *scratch)
{
	struct reply *r = NULL;

	if (shared_get(m, q, SHARE_FIRST, 0, common, ident, &r) && r != NULL) {
		q->started = true;
		q->cursor = common;
		q->ident = ident;
		return r;
	}
	r = render_first(q, common, ident, ids, scratch);
	if (r != NULL)
		shared_put(m, q, SHARE_FIRST, 0, common, ident, r);
	return r;
}

/* What q gets now: a reply (q advanced), or NULL (wait; q may have moved
 * forward past a common step that changed no filtered row). */
static struct reply *
render_now(struct multi *m, struct multi_req *q, struct ring_buf *scratch)
{
	struct bbuf out[HP_MULTI_MAX] = {{0}};
	uint32_t ids[HP_MULTI_MAX], ident;
	uint64_t common = common_position(q, ids, &ident), from = q->cursor;
	int n_batches = 0, rc = RING_OK;
	struct reply *r;

	if (!q->started)
		return first_shared(m, q, common, ident, ids, scratch);
	if (ident != q->ident)
		rc = RING_UNKNOWN;
	else if (common <= q->cursor)
		return NULL;
	else if (shared_get(m, q, SHARE_STEP, from, common, ident, &r)) {
		q->cursor = common;
		return r;
	}
	for (int i = 0; i < q->n && rc == RING_OK; i++) {
		uint64_t seq;
		rc = ring_seek(q->f[i].seg->ring, ids[i], q->cursor, &seq);
		if (rc == RING_OK)
			rc = feed_range(q, i, ids[i], seq, q->cursor, common, &out[i], scratch,
			                &n_batches);
	}
	if (rc != RING_OK) {
		free_bufs(out, q->n);
		if (q->w->sse) { /* EventSource cannot follow a 410: a new snapshot */
			q->started = false;
			return first_shared(m, q, common, ident, ids, scratch);
		}
		return render_gone_reply(q->cursor, q->ident);
	}
	q->cursor = common;
	r = n_batches > 0 ? multi_reply(q, out, false, n_batches) : NULL;
	free_bufs(out, q->n);
	shared_put(m, q, SHARE_STEP, from, common, ident, r);
	return r;
}

/* A long-poll's timeout: every feed with no batch at the common position
 * (503 when it never got a first reply); an SSE keep-alive. */
static struct reply *
render_due(struct multi *m, struct multi_req *q)
{
	static const char ka[] = ": keep-alive\n\n";
	struct bbuf none[HP_MULTI_MAX] = {{0}};
	struct reply *r = NULL;

	if (q->w->sse) {
		struct bbuf b = {(char *)ka, sizeof(ka) - 1, 0};
		return reply_new(&b, 200, 0);
	}
	if (!q->started)
		return render_error_reply(503, "feed_not_live",
		                          "the feeds did not reach a common position in time");
	if (shared_get(m, q, SHARE_DUE, q->cursor, q->cursor, q->ident, &r) && r != NULL)
		return r;
	r = multi_reply(q, none, false, 0);
	shared_put(m, q, SHARE_DUE, q->cursor, q->cursor, q->ident, r);
	return r;
}

/* ---- the state headers ---- */

/* The states from best to worst: a request's state is its worst feed's
 * (an unknown name counts as the worst). */
static int
state_rank(const char *state)
{
	static const char *const order[] = {"live",  "stalled", "down", "starting",
	                                    "error", "closed",  "dead"};
	int n = (int)(sizeof(order) / sizeof(order[0]));

	for (int i = 0; i < n; i++)
		if (strcmp(order[i], state) == 0)
			return i;
	return n;
}

/* w->multi_state (multi.h). */
static size_t
state_headers(const void *arg, char *out, size_t cap)
{
	const struct multi_req *q = arg;
	char per[WRITER_STATE_HEADERS_MAX];
	const char *worst = "live";
	uint64_t lag_ms = 0;
	bool confirmed = false;
	size_t np = 0;
	int n;

	per[0] = '\0';
	for (int i = 0; i < q->n; i++) {
		struct ring_info info;
		const char *st;
		ring_info(q->f[i].seg->ring, &info);
		st = render_state_name(&info);
		if (state_rank(st) > state_rank(worst))
			worst = st;
		n = snprintf(per + np, sizeof(per) - np, "%s%s=%s", i > 0 ? ", " : "",
		             q->f[i].feed->name, st);
		if (n > 0 && np + (size_t)n < sizeof(per))
			np += (size_t)n;
		if (info.confirmed_ms == 0)
			continue;
		confirmed = true;
		if (info.lag_ms > lag_ms)
			lag_ms = info.lag_ms;
		n = snprintf(per + np, sizeof(per) - np, ";lag=%.3f", (double)info.lag_ms / 1000);
		if (n > 0 && np + (size_t)n < sizeof(per))
			np += (size_t)n;
	}
	if (strcmp(worst, "live") == 0)
		return 0;
	/* X-Accel-Expires as for one feed (render_state_headers). */
	n = snprintf(out, cap, "Tailgate-Feed-State: %s\r\nX-Accel-Expires: 0\r\n", worst);
	if (confirmed && n > 0 && (size_t)n < cap)
		n += snprintf(out + n, cap - (size_t)n, "Tailgate-Lag: %.3f\r\n",
		              (double)lag_ms / 1000);
	if (n > 0 && (size_t)n < cap)
		n += snprintf(out + n, cap - (size_t)n, "Tailgate-Feed-States: %s\r\n", per);
	return n > 0 && (size_t)n < cap ? (size_t)n : 0;
}

/* ---- the watcher ---- */

static void
do_kick(struct multi *m)
{
	atomic_fetch_add_explicit(&m->kick, 1, memory_order_release);
	syscall(SYS_futex, (uint32_t *)&m->kick, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

/* A long-poll parks once and leaves when answered: counted in the
 * parked gauge with the single-feed ones (SSE streams are not).  false:
 * stopping, not parked.
 *
 * stopping is read under mu, and multi_stop sets it under mu: a writer
 * re-serving an SSE stream (multi_serve) while multi_stop runs either
 * parks it before multi_stop takes the list (which then ends it) or sees
 * stopping and does not park.  Read outside the lock, a writer could
 * check stopping, lose the CPU, and park the stream after multi_stop had
 * taken the list: the stream never ended, and park() then locked a mutex
 * multi_stop had destroyed (ThreadSanitizer: "use of an invalid mutex"). */
static bool
park(struct multi *m, struct multi_req *q)
{
	pthread_mutex_lock(&m->mu);
	if (atomic_load_explicit(&m->stopping, memory_order_relaxed)) {
		pthread_mutex_unlock(&m->mu);
		return false;
	}
	if (!q->w->sse)
		metrics_parked(1);
	q->next = m->parked;
	m->parked = q;
	pthread_mutex_unlock(&m->mu);
	do_kick(m);
	return true;
}

void
multi_serve(struct multi *m, struct waiter *w, struct thread_ctx *t)
{
	struct multi_req *q = w->multi;
	struct reply *r;

	/* Stopping: a stream ends (the browser reconnects to another
	 * worker), as park_serve ends single-feed ones.  Re-served with a
	 * keep-alive instead, a stream went round the writer that re-served
	 * it (writer_deliver keeps it in its share) until its client left,
	 * and writer_stop waited for that. */
	if (w->sse && atomic_load(&m->stopping)) {
		writer_end(m->writers, w, 0);
		return;
	}
	r = render_now(m, q, &t->scratch);
	if (r != NULL)
		writer_deliver(m->writers, t, w, r);
	else if (park(m, q))
		return;
	else if (w->sse) /* stopping */
		writer_end(m->writers, w, 0);
	else
		writer_deliver(m->writers, t, w, render_due(m, q));
}

struct wordset {
	struct futex_waitv wv[FEEDS_MAX + 1];
	int n;
};

static void
arm(struct wordset *ws, struct seg *s)
{
	uint32_t val = 0;
	const void *word = ring_wake_word(s->ring, &val);

	for (int i = 0; i < ws->n; i++)
		if (ws->wv[i].uaddr == (uint64_t)(uintptr_t)word)
			return;
	if (ws->n == FEEDS_MAX)
		return; /* the 1 s round catches it */
	ws->wv[ws->n++] = (struct futex_waitv){
	        .uaddr = (uint64_t)(uintptr_t)word, .val = val, .flags = FUTEX_32};
}

/* Move q to its feeds' current segments when the daemon replaced one
 * (a restart): its position is sought there at the next render. */
static void
follow_segments(struct multi *m, struct multi_req *q)
{
	for (int i = 0; i < q->n; i++) {
		struct seg *s = feeds_current(m->feeds, q->f[i].feed, 1000);
		if (s == NULL || s == q->f[i].seg) {
			seg_release(s);
			continue;
		}
		seg_release(q->f[i].seg);
		q->f[i].seg = s;
		if (i == 0) { /* the waiter's, for the state header */
			seg_release(q->w->seg);
			q->w->seg = seg_ref(s);
		}
	}
}

/* One round over list: answer what is ready or due; return the rest and
 * set *deadline_ms to the earliest deadline left. */
static struct multi_req *
round_serve(struct multi *m, struct multi_req *list, int64_t *deadline_ms)
{
	struct multi_req *keep = NULL, *next;
	int64_t now = clock_mono_ms();

	for (struct multi_req *q = list; q != NULL; q = next) {
		struct reply *r = render_now(m, q, &m->scratch);
		next = q->next;
		if (r == NULL && q->w->deadline_ms <= now) {
			r = render_due(m, q);
			q->w->keepalive = q->w->sse;
		}
		if (r != NULL) {
			if (!q->w->sse)
				metrics_parked(-1);
			writer_enqueue(m->writers, q->w, r, clock_mono_ns());
			continue;
		}
		if (q->w->deadline_ms < *deadline_ms)
			*deadline_ms = q->w->deadline_ms;
		q->next = keep;
		keep = q;
	}
	return keep;
}

static void *
watcher_main(void *arg)
{
	struct multi *m = arg;
	bool have_waitv = true;

	while (!atomic_load(&m->stopping)) {
		struct wordset ws = {.n = 0};
		struct multi_req *list, *keep, *tail;
		int64_t deadline_ms = clock_mono_ms() + 1000;

		pthread_mutex_lock(&m->mu);
		list = m->parked;
		m->parked = NULL;
		pthread_mutex_unlock(&m->mu);
		uint32_t kick = atomic_load_explicit(&m->kick, memory_order_acquire);
		for (struct multi_req *q = list; q != NULL; q = q->next) {
			follow_segments(m, q);
			for (int i = 0; i < q->n; i++)
				arm(&ws, q->f[i].seg);
		}
		keep = round_serve(m, list, &deadline_ms);
		if (keep != NULL) {
			for (tail = keep; tail->next != NULL; tail = tail->next)
				;
			pthread_mutex_lock(&m->mu);
			tail->next = m->parked;
			m->parked = keep;
			pthread_mutex_unlock(&m->mu);
		}
		ws.wv[ws.n] = (struct futex_waitv){.uaddr = (uint64_t)(uintptr_t)&m->kick,
		                                   .val = kick,
		                                   .flags = FUTEX_32 | FUTEX_PRIVATE_FLAG};
		if (have_waitv) {
			struct timespec ts = {deadline_ms / 1000, (deadline_ms % 1000) * 1000000};
			if (syscall(SYS_futex_waitv, ws.wv, (unsigned)ws.n + 1, 0, &ts,
			            CLOCK_MONOTONIC) < 0 &&
			    errno == ENOSYS)
				have_waitv = false;
		} else {
			struct timespec ts = {0, 10 * 1000000};
			nanosleep(&ts, NULL);
		}
	}
	return NULL;
}

void
multi_start(struct multi *m, struct feeds *feeds, struct writers *writers, int cache_n)
{
	int rc;

	m->feeds = feeds;
	m->writers = writers;
	m->cache_n = cache_n < 0 ? 0 : cache_n > MULTI_CACHE_MAX ? MULTI_CACHE_MAX : cache_n;
	m->cache = m->cache_n > 0 ? xcalloc((size_t)m->cache_n, sizeof(*m->cache)) : NULL;
	pthread_mutex_init(&m->cache_mu, NULL);
	pthread_mutex_init(&m->mu, NULL);
	rc = pthread_create(&m->watcher, NULL, watcher_main, m);
	if (rc != 0)
		fatalx("cannot start the multi-feed watcher thread: %s", strerror(rc));
	m->started = true;
}

void
multi_stop(struct multi *m)
{
	struct multi_req *list, *next;

	if (!m->started)
		return;
	/* Under mu: see park(). */
	pthread_mutex_lock(&m->mu);
	atomic_store(&m->stopping, true);
	pthread_mutex_unlock(&m->mu);
	do_kick(m);
	pthread_join(m->watcher, NULL);
	m->started = false;
	pthread_mutex_lock(&m->mu);
	list = m->parked;
	m->parked = NULL;
	pthread_mutex_unlock(&m->mu);
	for (struct multi_req *q = list; q != NULL; q = next) {
		next = q->next;
		if (q->w->sse) {
			writer_end(m->writers, q->w, 0);
		} else {
			metrics_parked(-1);
			writer_enqueue(m->writers, q->w, render_due(m, q), 0);
		}
	}
}

void
multi_free(struct multi *m)
{
	/* Not in multi_stop: until writer_stop has joined them, writers
	 * re-serving SSE streams reach multi_serve, whose render_now reads
	 * the shared replies (shared_get) and their lock.  Freed there,
	 * ThreadSanitizer saw a writer read m->cache as multi_stop freed it
	 * and a writer lock the destroyed cache_mu, and the writer then
	 * crashed on the freed entries (a multi-feed SSE stream open at
	 * SIGTERM). */
	free(m->scratch.data);
	m->scratch.data = NULL;
	pthread_mutex_destroy(&m->mu);
	for (int i = 0; i < m->cache_n; i++) {
		free(m->cache[i].key);
		reply_release(m->cache[i].r);
	}
	free(m->cache);
	m->cache = NULL;
	m->cache_n = 0;
	pthread_mutex_destroy(&m->cache_mu);
}
