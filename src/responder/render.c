/*
 * render.c - reply bytes, replies for waiters, and the render cache
 * (render.h).
 */
#include "render.h"

#include "log.h"
#include "metrics.h"
#include "netbatch.h"
#include "reply.h"
#include "text.h"
#include "waiter.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *
render_reason(int status)
{
	switch (status) {
	case 200:
		return "OK";
	case 400:
		return "Bad Request";
	case 404:
		return "Not Found";
	case 405:
		return "Method Not Allowed";
	case 410:
		return "Gone";
	case 500:
		return "Internal Server Error";
	case 503:
		return "Service Unavailable";
	default:
		return "Unknown";
	}
}

void
render_json_string(struct bbuf *out, const char *s)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *p = (const unsigned char *)s;
	size_t left = strlen(s);

	/* Messages may quote what a client sent (a feed name, a parameter):
	 * bytes that are not UTF-8 become U+FFFD, so the reply stays JSON. */
	bbuf_add(out, "\"", 1);
	while (left > 0) {
		unsigned char c = *p;
		size_t n = 1;
		if (c == '"' || c == '\\') {
			char e[2] = {'\\', (char)c};
			bbuf_add(out, e, 2);
		} else if (c < 0x20 || c == 0x7f) {
			char e[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
			bbuf_add(out, e, 6);
		} else if (c < 0x80) {
			bbuf_add(out, p, 1);
		} else if ((n = utf8_char_len(p, left)) > 0) {
			bbuf_add(out, p, n);
		} else {
			n = 1;
			bbuf_add(out, "\\ufffd", 6);
		}
		p += n;
		left -= n;
	}
	bbuf_add(out, "\"", 1);
}

void
render_head(struct bbuf *out, int status, const char *content_type, const char *cache_control,
            const char *extra)
{
	char line[128];

	snprintf(line, sizeof(line), "Status: %d %s\r\n", status, render_reason(status));
	bbuf_adds(out, line);
	bbuf_adds(out, "Content-Type: ");
	bbuf_adds(out, content_type);
	bbuf_adds(out, "\r\nCache-Control: ");
	bbuf_adds(out, cache_control);
	bbuf_adds(out, "\r\n");
	if (extra != NULL)
		bbuf_adds(out, extra);
	bbuf_adds(out, "\r\n");
}

void
render_error(struct bbuf *out, int status, const char *code, const char *message)
{
	render_head(out, status, "application/json", "no-store", NULL);
	bbuf_adds(out, "{\"error\":");
	render_json_string(out, code);
	bbuf_adds(out, ",\"message\":");
	render_json_string(out, message);
	bbuf_adds(out, "}\n");
}

void
render_sse_event(struct bbuf *out, const char *name, uint64_t id, uint32_t ident, const char *json,
                 size_t len)
{
	char line[48], cur[BATCH_POSITION_MAX];

	if (name != NULL) {
		bbuf_adds(out, "event: ");
		bbuf_adds(out, name);
		bbuf_adds(out, "\n");
	}
	batch_format_position(id, ident, cur, sizeof(cur));
	snprintf(line, sizeof(line), "id: %s\n", cur);
	bbuf_adds(out, line);
	/* Compact JSON has no raw newline, but a json column keeps its input
	 * text: each line of it becomes one data: line (SSE joins them). */
	while (len > 0) {
		size_t n = 0;
		while (n < len && json[n] != '\n' && json[n] != '\r')
			n++;
		bbuf_adds(out, "data: ");
		bbuf_add(out, json, n);
		bbuf_adds(out, "\n");
		if (n < len)
			n++;
		json += n;
		len -= n;
	}
	bbuf_adds(out, "\n");
}

/* Append the rows [from, to) of v that f matches, comma-separated;
 * returns how many. */
static uint64_t
render_matching(struct bbuf *out, const struct batch_view *v, const struct filter *f, uint64_t from,
                uint64_t to)
{
	uint64_t matched = 0;

	for (uint64_t i = from; i < to; i++) {
		const struct batch_row *r = &v->rows[i];
		if (!filter_match(f, v->json + r->off, r->len))
			continue;
		if (matched > 0)
			bbuf_add(out, ",", 1);
		bbuf_add(out, v->json + r->off, r->len);
		matched++;
	}
	return matched;
}

bool
render_batch(struct bbuf *out, const struct batch_view *v, const struct filter *f, uint64_t cursor)
{
	char prefix[64];
	size_t mark = out->len;
	uint64_t matched;

	if (f == NULL) {
		bbuf_add(out, v->json, v->json_len);
		return true;
	}
	snprintf(prefix, sizeof(prefix), "{\"timestamp\":\"%" PRIu64 "\",\"inserted\":[", cursor);
	bbuf_adds(out, prefix);
	matched = render_matching(out, v, f, 0, v->n_ins);
	bbuf_adds(out, "],\"deleted\":[");
	matched += render_matching(out, v, f, v->n_ins, v->n_ins + v->n_del);
	bbuf_adds(out, "]}");
	if (matched == 0) {
		out->len = mark;
		return false;
	}
	return true;
}

int
render_range(struct ring *r, uint64_t from, uint64_t head, const struct filter *f, bool sse,
             size_t max_bytes, struct bbuf *out, struct ring_buf *scratch, struct render_range *rr,
             uint64_t start_cursor)
{
	struct bbuf tmp = {0};
	uint32_t ident = ring_ident(r);
	int rc = RING_OK;

	rr->n_batches = 0;
	rr->next_seq = from;
	rr->last_cursor = start_cursor;
	rr->bytes = 0;
	for (uint64_t seq = from; seq < head; seq++) {
		struct ring_rec rec;
		struct batch_view v;
		size_t mark = out->len;

		rc = ring_read(r, seq, scratch, &rec);
		if (rc != RING_OK)
			break;
		if (rec.cursor <= rr->last_cursor) {
			/* A batch the reader already holds: it came from a host
			 * further ahead (its position is past this one's). */
			rr->next_seq = seq + 1;
			continue;
		}
		if (rec.lo < rr->last_cursor) {
			rc = RING_UNKNOWN; /* inside a merged batch: no state here */
			break;
		}
		if (!batch_view(scratch->data, scratch->len, &v)) {
			rc = RING_ERR;
			break;
		}
		if (sse) {
			tmp.len = 0;
			if (render_batch(&tmp, &v, f, rec.cursor)) {
				render_sse_event(out, NULL, rec.cursor, ident, tmp.p, tmp.len);
				rr->n_batches++;
			}
		} else {
			if (rr->n_batches > 0)
				bbuf_add(out, ",", 1);
			if (render_batch(out, &v, f, rec.cursor))
				rr->n_batches++;
			else
				out->len = mark;
		}
		rr->bytes += out->len - mark;
		rr->next_seq = seq + 1;
		rr->last_cursor = rec.cursor;
		if (rr->bytes >= max_bytes)
			break;
	}
	bbuf_free(&tmp);
	return rc;
}

static uint64_t
head_seq(struct seg *s)
{
	struct ring_info info;

	ring_info(s->ring, &info);
	return info.head_seq;
}

/* ---- replies for waiters ---- */

static struct reply *
json_reply(const struct render *rd, uint64_t cursor, uint32_t ident, const struct bbuf *batches,
           int n_batches)
{
	struct bbuf b = {0};
	char head[160], cc[64], cur[BATCH_POSITION_MAX];
	struct reply *r;
	size_t body_off;

	if (n_batches > 0)
		snprintf(cc, sizeof(cc), "public, max-age=%d, immutable", rd->cache_max_age_s);
	else
		snprintf(cc, sizeof(cc), "no-store");
	render_head(&b, 200, "application/json", cc, NULL);
	body_off = b.len;
	batch_format_position(cursor, ident, cur, sizeof(cur));
	snprintf(head, sizeof(head), "{\"cursor\":\"%s\",\"batches\":[", cur);
	bbuf_adds(&b, head);
	if (batches != NULL)
		bbuf_add(&b, batches->p, batches->len);
	bbuf_adds(&b, "]}");
	r = reply_new(&b, 200, (uint64_t)n_batches);
	if (n_batches > 0)
		r->body_off = body_off; /* batches: worth a gzip form (reply.h) */
	bbuf_free(&b);
	return r;
}

struct reply *
render_error_reply(int status, const char *code, const char *message)
{
	struct bbuf b = {0};
	struct reply *r;

	render_error(&b, status, code, message);
	r = reply_new(&b, status, 0);
	bbuf_free(&b);
	return r;
}

struct reply *
render_gone_reply(uint64_t cursor, uint32_t ident)
{
	char msg[200], cur[BATCH_POSITION_MAX];

	batch_format_position(cursor, ident, cur, sizeof(cur));
	snprintf(msg, sizeof(msg),
	         "cursor %s cannot be resumed here: take a new snapshot (request the feed "
	         "without a cursor)",
	         cur);
	return render_error_reply(410, "cursor_gone", msg);
}

struct reply *
render_snapshot(struct waiter *w, struct ring_buf *scratch)
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
			render_sse_event(&body, "snapshot", snap.cursor, snap.ident, sb.p, sb.len);
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
		uint32_t ident = snap.ident;
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
		w->ident = ident;
		w->cursor = ring_complete(w->seg->ring, rr.next_seq, rr.last_cursor);
		metrics_render();
		if (w->sse) {
			r = reply_new(&body, 200, (uint64_t)rr.n_batches + 1);
		} else {
			render_head(&b, 200, "application/json", "no-store", NULL);
			size_t body_off = b.len;
			char cur[BATCH_POSITION_MAX];
			batch_format_position(w->cursor, w->ident, cur, sizeof(cur));
			snprintf(num, sizeof(num), "{\"cursor\":\"%s\",\"columns\":", cur);
			bbuf_adds(&b, num);
			bbuf_adds(&b, ring_columns(w->seg->ring));
			bbuf_adds(&b, ",\"batches\":[");
			bbuf_add(&b, body.p, body.len);
			bbuf_adds(&b, "]}");
			r = reply_new(&b, 200, (uint64_t)rr.n_batches + 1);
			r->body_off = body_off;
			bbuf_free(&b);
		}
		bbuf_free(&body);
		return r;
	}
	log_warning("feed=%s: the snapshot kept being replaced while read", w->feed->name);
	return NULL;
}

/* w's batches from seq_after up to head into b.  A waiter is a position
 * (w->cursor), seq_after only where to look next: when the batches there
 * are gone (dropped, or a new history began) the position is sought
 * again, and only when it is not held any more is the answer RING_GONE
 * (or RING_UNKNOWN: another history, inside a merged batch). */
static int
render_at(struct waiter *w, uint64_t head, struct bbuf *b, struct ring_buf *scratch,
          struct render_range *rr)
{
	int rc = RING_GONE;

	for (int attempt = 0; attempt < 3; attempt++) {
		uint64_t seq;
		rc = render_range(w->seg->ring, w->seq_after, head, w->fs->filter, w->sse,
		                  RENDER_MAX_REPLY, b, scratch, rr, w->cursor);
		if (rc != RING_GONE || rr->n_batches > 0)
			return rc;
		b->len = 0;
		rc = ring_seek(w->seg->ring, w->ident, w->cursor, &seq);
		if (rc != RING_OK)
			return rc;
		if (seq == w->seq_after)
			return RING_GONE; /* not a drop we can step over */
		w->seq_after = seq;
		if (head < seq)
			head = seq;
	}
	return rc;
}

/* 410 for w's position (why: the reply's message, NULL for the usual
 * one); for SSE a new snapshot in-band instead. */
static struct reply *
gone_reply(struct waiter *w, struct ring_buf *scratch, const char *why)
{
	char msg[256], cur[BATCH_POSITION_MAX];
	struct reply *r;

	if (!w->sse && why == NULL)
		return render_gone_reply(w->cursor, w->ident);
	if (!w->sse) {
		batch_format_position(w->cursor, w->ident, cur, sizeof(cur));
		snprintf(msg, sizeof(msg),
		         "cursor %s %s: take a new snapshot (request the feed "
		         "without a cursor)",
		         cur, why);
		return render_error_reply(410, "cursor_gone", msg);
	}
	r = render_snapshot(w, scratch); /* EventSource cannot follow a 410 */
	return r != NULL ? r : render_error_reply(503, "feed_not_live", "no snapshot");
}

/* Far behind, w gets the net effect of its batches as one batch
 * (netbatch.h): a reply, or NULL with w advanced (the net effect passes
 * no row).  *used false: not far behind, the usual path answers. */
static struct reply *
catchup_next(const struct render *rd, struct waiter *w, uint64_t head, struct ring_buf *scratch,
             bool *used)
{
	struct bbuf b = {0}, ev = {0};
	struct netbatch_at at;
	struct reply *r = NULL;
	enum netbatch_result res = netbatch_catchup(w->seg->ring, w->seq_after, w->cursor, head,
	                                            w->fs->filter, &b, scratch, &at);

	*used = res != NETBATCH_NO;
	if (res == NETBATCH_GONE) {
		r = gone_reply(w, scratch,
		               "is so far behind that even the net batch after it is larger "
		               "than a new snapshot");
	} else if (res == NETBATCH_OK || res == NETBATCH_EMPTY) {
		w->seq_after = at.next_seq;
		w->cursor = at.cursor;
		if (res == NETBATCH_OK && w->sse) {
			render_sse_event(&ev, NULL, at.cursor, w->ident, b.p, b.len);
			r = reply_new(&ev, 200, 1);
		} else if (res == NETBATCH_OK) {
			r = json_reply(rd, at.cursor, w->ident, &b, 1);
		}
		if (r != NULL)
			metrics_render();
	}
	bbuf_free(&b);
	bbuf_free(&ev);
	return r;
}

/* What w gets now: a reply, or NULL with w advanced (nothing matched). */
struct reply *
render_next(const struct render *rd, struct waiter *w, uint64_t head, struct ring_buf *scratch)
{
	struct bbuf b = {0};
	struct render_range rr;
	struct reply *r;
	bool far;
	int rc;

	r = catchup_next(rd, w, head, scratch, &far);
	if (far)
		return r;
	rc = render_at(w, head, &b, scratch, &rr);
	if (rr.n_batches == 0 && rc != RING_OK) {
		bbuf_free(&b);
		if (rc == RING_GONE || rc == RING_UNKNOWN)
			return gone_reply(w, scratch, NULL);
		log_warning("feed=%s: corrupt batch at seq %" PRIu64, w->feed->name, w->seq_after);
		return render_error_reply(503, "feed_not_live",
		                          "the feed's segment holds a corrupt batch");
	}
	w->seq_after = rr.next_seq;
	/* Complete through the frontier (or just below the next batch not
	 * sent): a quiet feed's clients move forward too. */
	w->cursor = ring_complete(w->seg->ring, rr.next_seq, rr.last_cursor);
	if (rr.n_batches == 0) {
		bbuf_free(&b);
		return NULL;
	}
	metrics_render();
	if (w->sse)
		r = reply_new(&b, 200, (uint64_t)rr.n_batches);
	else
		r = json_reply(rd, w->cursor, w->ident, &b, rr.n_batches);
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

static bool
rcache_match(const struct render_cache_ent *e, const struct waiter *w, uint64_t head)
{
	return e->r != NULL && e->seg == w->seg && e->seg_id == w->seg->id &&
	       e->seq_after == w->seq_after && e->cursor == w->cursor && e->head == head &&
	       e->sse == w->sse && strcmp(e->key, w->fs->key) == 0;
}

/* A shared reply for w at head, advancing w as the render did; NULL: none. */
static struct reply *
rcache_get(struct render *rd, struct waiter *w, uint64_t head)
{
	struct reply *r = NULL;
	uint64_t next_seq = 0, last_cursor = 0;

	pthread_mutex_lock(&rd->mu);
	for (int i = 0; i < RENDER_CACHE_N; i++)
		if (rcache_match(&rd->cache[i], w, head)) {
			r = reply_ref(rd->cache[i].r);
			next_seq = rd->cache[i].next_seq;
			last_cursor = rd->cache[i].last_cursor;
			break;
		}
	pthread_mutex_unlock(&rd->mu);
	if (r == NULL)
		return NULL;
	/* A new history since (ring_reset) moved the head: no hit. */
	w->seq_after = next_seq;
	w->cursor = last_cursor;
	return r;
}

/* Remember r, rendered for w's position before the render (seq_after,
 * cursor) at head; w has been advanced to after it. */
static void
rcache_put(struct render *rd, const struct waiter *w, uint64_t seq_after, uint64_t cursor,
           uint64_t head, struct reply *r)
{
	struct render_cache_ent *e;
	struct reply *old;
	char *oldkey, *key = strdup(w->fs->key);

	if (key == NULL)
		return;
	pthread_mutex_lock(&rd->mu);
	e = &rd->cache[rd->next++ % RENDER_CACHE_N];
	old = e->r;
	oldkey = e->key;
	*e = (struct render_cache_ent){.seg = w->seg,
	                               .seg_id = w->seg->id,
	                               .seq_after = seq_after,
	                               .cursor = cursor,
	                               .head = head,
	                               .sse = w->sse,
	                               .key = key,
	                               .r = reply_ref(r),
	                               .next_seq = w->seq_after,
	                               .last_cursor = w->cursor};
	pthread_mutex_unlock(&rd->mu);
	if (old != NULL)
		reply_release(old);
	free(oldkey);
}

struct reply *
render_next_shared(struct render *rd, struct waiter *w, uint64_t head, struct ring_buf *scratch)
{
	uint64_t seq_after = w->seq_after, cursor = w->cursor;
	struct reply *r = rcache_get(rd, w, head);

	if (r != NULL)
		return r;
	r = render_next(rd, w, head, scratch);
	/* Only batches: an error is not for sharing.  (An in-band SSE resync
	 * is stored but never found: the history check fails on it.) */
	if (r != NULL && r->status == 200 && r->batches > 0 && w->seq_after > seq_after &&
	    w->seg != NULL)
		rcache_put(rd, w, seq_after, cursor, head, r);
	return r;
}

void
render_init(struct render *rd, int cache_max_age_s)
{
	memset(rd, 0, sizeof(*rd));
	rd->cache_max_age_s = cache_max_age_s;
	pthread_mutex_init(&rd->mu, NULL);
}

void
render_free(struct render *rd)
{
	for (int i = 0; i < RENDER_CACHE_N; i++) {
		reply_release(rd->cache[i].r);
		free(rd->cache[i].key);
		rd->cache[i] = (struct render_cache_ent){0};
	}
	pthread_mutex_destroy(&rd->mu);
}

struct reply *
render_timeout_reply(const struct render *rd, const struct waiter *w)
{
	static const char ka[] = ": keep-alive\n\n";

	if (w->sse) {
		struct bbuf b = {(char *)ka, sizeof(ka) - 1, 0};
		return reply_new(&b, 200, 0);
	}
	return json_reply(rd, ring_complete(w->seg->ring, w->seq_after, w->cursor), w->ident, NULL,
	                  0);
}

/* ---- the feed's state ---- */

/* What /feeds, /metrics and the state header say about a feed's state:
 * the ring's, "dead" without a writer, "stalled" when live but
 * unconfirmed too long. */
static const char *
state_name(const struct ring_info *info)
{
	if (!info->writer_alive && info->state != RING_STATE_CLOSED)
		return "dead";
	if (info->stalled)
		return "stalled";
	return ring_strstate(info->state);
}

const char *
render_state_name(const struct ring_info *info)
{
	return state_name(info);
}

size_t
render_state_headers(struct seg *s, char *out, size_t cap)
{
	struct ring_info info;
	int n;

	ring_info(s->ring, &info);
	if (info.state == RING_STATE_LIVE && info.writer_alive && !info.stalled)
		return 0;
	/* X-Accel-Expires: 0 keeps the reply out of an nginx cache (which
	 * would hand the state on long after it changed); nginx does not
	 * pass the header on. */
	n = snprintf(out, cap, "Tailgate-Feed-State: %s\r\nX-Accel-Expires: 0\r\n",
	             state_name(&info));
	if (info.confirmed_ms != 0 && n > 0 && (size_t)n < cap)
		n += snprintf(out + n, cap - (size_t)n, "Tailgate-Lag: %.3f\r\n",
		              (double)info.lag_ms / 1000);
	return n > 0 && (size_t)n < cap ? (size_t)n : 0;
}

/* ---- the /feeds document and the per-feed gauges ---- */

void
render_feed_list(struct feeds *fs, struct bbuf *out)
{
	char **names = feeds_list_names(fs);
	bool first = true;

	bbuf_adds(out, "{\"feeds\":[");
	for (size_t i = 0; names[i] != NULL; i++) {
		struct feed *f;
		struct seg *s;
		struct ring_info info;
		const char *why;
		char err[RING_ERROR_MAX + 1], num[64];
		bool live;

		if (feeds_acquire(fs, names[i], &f, &s, err, sizeof(err)) != 200)
			continue;
		live = feeds_live(s, &info, &why) && info.state == RING_STATE_LIVE && !info.stalled;
		if (!first)
			bbuf_adds(out, ",");
		first = false;
		bbuf_adds(out, "{\"name\":");
		render_json_string(out, f->name);
		bbuf_adds(out, ",\"source\":");
		render_json_string(out, ring_source(s->ring));
		bbuf_adds(out, ",\"columns\":");
		bbuf_adds(out, ring_columns(s->ring));
		char cur[BATCH_POSITION_MAX];
		batch_format_position(info.frontier, info.ident, cur, sizeof(cur));
		snprintf(num, sizeof(num), ",\"cursor\":\"%s\"", cur);
		bbuf_adds(out, num);
		snprintf(num, sizeof(num), ",\"rows\":%" PRIu64, info.row_count);
		bbuf_adds(out, num);
		bbuf_adds(out, live ? ",\"live\":true" : ",\"live\":false");
		bbuf_adds(out, ",\"state\":\"");
		bbuf_adds(out, state_name(&info));
		bbuf_adds(out, "\"");
		if (info.confirmed_ms != 0) {
			snprintf(num, sizeof(num), ",\"lag_s\":%.3f", (double)info.lag_ms / 1000);
			bbuf_adds(out, num);
		}
		ring_error(s->ring, err, sizeof(err));
		if (err[0] != '\0') {
			bbuf_adds(out, ",\"error\":");
			render_json_string(out, err);
		}
		bbuf_adds(out, "}");
		seg_release(s);
	}
	feeds_free_names(names);
	bbuf_adds(out, "]}\n");
}

void
render_slot_metrics(const char *ring_dir, struct bbuf *out)
{
	char path[PATH_MAX + 32], line[1024];
	FILE *f;

	snprintf(path, sizeof(path), "%s/tailgated.slots", ring_dir);
	f = fopen(path, "re");
	if (f == NULL)
		return; /* not PostgreSQL, or the daemon has not looked yet */
	/* The daemon's lines, whole, and only its metric family. */
	while (fgets(line, sizeof(line), f) != NULL) {
		size_t n = strlen(line);
		if (n > 0 && line[n - 1] == '\n' &&
		    (strncmp(line, "tailgate_slot_", 14) == 0 ||
		     strncmp(line, "# HELP tailgate_slot_", 21) == 0 ||
		     strncmp(line, "# TYPE tailgate_slot_", 21) == 0))
			bbuf_add(out, line, n);
	}
	fclose(f);
}

void
render_feed_metrics(struct feeds *fs, struct bbuf *out)
{
	static const char *const states[] = {"starting", "live", "down",   "closed",
	                                     "error",    "dead", "stalled"};
	char **names = feeds_list_names(fs);
	char line[512];

	bbuf_adds(out, "# HELP tailgate_feed_state The feed's state (1 for the one it is in).\n"
	               "# TYPE tailgate_feed_state gauge\n"
	               "# HELP tailgate_feed_lag_seconds Seconds since the upstream last confirmed "
	               "the feed complete (a progress row, keepalive or commit).\n"
	               "# TYPE tailgate_feed_lag_seconds gauge\n");
	for (size_t i = 0; names[i] != NULL; i++) {
		struct feed *f;
		struct seg *s;
		struct ring_info info;
		const char *why, *st;
		char err[256];

		if (feeds_acquire(fs, names[i], &f, &s, err, sizeof(err)) != 200)
			continue;
		(void)feeds_live(s, &info, &why);
		st = state_name(&info);
		for (size_t k = 0; k < sizeof(states) / sizeof(states[0]); k++) {
			snprintf(line, sizeof(line),
			         "tailgate_feed_state{feed=\"%s\",state=\"%s\"} %d\n", f->name,
			         states[k], strcmp(st, states[k]) == 0);
			bbuf_adds(out, line);
		}
		if (info.confirmed_ms != 0) {
			snprintf(line, sizeof(line),
			         "tailgate_feed_lag_seconds{feed=\"%s\"} %.3f\n", f->name,
			         (double)info.lag_ms / 1000);
			bbuf_adds(out, line);
		}
		seg_release(s);
	}
	feeds_free_names(names);
}
