/*
 * feeds.c - attached feeds and their segments (feeds.h).
 */
#include "feeds.h"

#include "log.h"
#include "render.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

static pthread_mutex_t feeds_mu = PTHREAD_MUTEX_INITIALIZER;
static struct feed *table[FEEDS_MAX];
static _Atomic int n_feeds;
static char ring_dir[PATH_MAX] = RING_DEFAULT_DIR;

int64_t
mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void
feeds_init(const char *dir)
{
	if (dir != NULL)
		snprintf(ring_dir, sizeof(ring_dir), "%s", dir);
}

const char *
feeds_dir(void)
{
	return ring_dir;
}

static bool
name_ok(const char *name)
{
	size_t n = strlen(name);

	if (n == 0 || n > RING_FEED_NAME_MAX)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = name[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '_' || c == '-'))
			return false;
	}
	return true;
}

struct seg *
seg_ref(struct seg *s)
{
	if (s != NULL)
		atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
	return s;
}

void
seg_release(struct seg *s)
{
	if (s == NULL)
		return;
	if (atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) != 1)
		return;
	ring_close(s->ring, false);
	filter_cols_free(&s->cols);
	free(s);
}

/* Open name's segment; 200, 404 or 503. */
static int
open_seg(const char *name, struct seg **out, char *err, size_t errlen)
{
	char path[PATH_MAX + 80];
	struct ring_info info;
	struct stat st;
	struct seg *s;

	*out = NULL;
	snprintf(path, sizeof(path), "%s/%s.ring", ring_dir, name);
	if (stat(path, &st) != 0) {
		snprintf(err, errlen, "no feed named \"%s\"", name);
		return errno == ENOENT || errno == ENOTDIR ? 404 : 503;
	}
	s = calloc(1, sizeof(*s));
	if (s == NULL) {
		snprintf(err, errlen, "out of memory");
		return 503;
	}
	if (ring_open(ring_dir, name, &s->ring, err, errlen) != RING_OK) {
		log_warning("feed=%s: %s", name, err);
		free(s);
		return 503;
	}
	if (!filter_cols_parse(ring_columns(s->ring), &s->cols)) {
		snprintf(err, errlen, "feed %s: the segment's column list is not valid JSON", name);
		log_warning("%s", err);
		ring_close(s->ring, false);
		free(s);
		return 503;
	}
	ring_info(s->ring, &info);
	s->id = info.segment_id;
	atomic_store(&s->refs, 1);
	*out = s;
	return 200;
}

/* With feeds_mu held: reopen f's segment when replaced. */
static void
refresh_locked(struct feed *f)
{
	struct seg *s;
	char err[256];

	f->checked_ms = mono_ms();
	if (f->seg != NULL && !ring_replaced(f->seg->ring))
		return;
	if (open_seg(f->name, &s, err, sizeof(err)) != 200)
		return; /* keep the old one: it says CLOSED, which reads as not live */
	if (f->seg != NULL)
		log_info("feed=%s: segment replaced (daemon restarted), reattached", f->name);
	seg_release(f->seg);
	f->seg = s;
}

int
feeds_acquire(const char *name, struct feed **feed, struct seg **seg, char *err, size_t errlen)
{
	struct feed *f = NULL;
	int n, status = 200;

	*feed = NULL;
	*seg = NULL;
	if (!name_ok(name)) {
		snprintf(err, errlen, "no feed named \"%.64s\"", name);
		return 404;
	}
	pthread_mutex_lock(&feeds_mu);
	n = atomic_load(&n_feeds);
	for (int i = 0; i < n; i++)
		if (strcmp(table[i]->name, name) == 0) {
			f = table[i];
			break;
		}
	if (f == NULL) {
		struct seg *s;

		if (n >= FEEDS_MAX) {
			snprintf(err, errlen, "too many feeds (this responder serves %d)",
			         FEEDS_MAX);
			status = 503;
			goto done;
		}
		status = open_seg(name, &s, err, errlen);
		if (status != 200)
			goto done;
		f = calloc(1, sizeof(*f));
		if (f == NULL) {
			seg_release(s);
			snprintf(err, errlen, "out of memory");
			status = 503;
			goto done;
		}
		snprintf(f->name, sizeof(f->name), "%s", name);
		f->idx = n;
		f->seg = s;
		f->checked_ms = mono_ms();
		table[n] = f;
		/* Published after the entry is complete: feeds_at readers
		 * load n_feeds first. */
		atomic_store_explicit(&n_feeds, n + 1, memory_order_release);
		log_info("feed=%s: attached %s/%s.ring", name, ring_dir, name);
	} else {
		int64_t age = mono_ms() - f->checked_ms;
		bool dead = f->seg == NULL;
		if (!dead && age >= 50) {
			const char *why;
			dead = !feeds_live_cached(f->seg, &why);
		}
		if (age >= 1000 || (dead && age >= 50))
			refresh_locked(f);
		if (f->seg == NULL) {
			snprintf(err, errlen, "feed %s: segment missing", name);
			status = 503;
			goto done;
		}
	}
	*feed = f;
	*seg = seg_ref(f->seg);
done:
	pthread_mutex_unlock(&feeds_mu);
	return status;
}

struct seg *
feeds_current(struct feed *f, int64_t max_age_ms)
{
	struct seg *s;

	pthread_mutex_lock(&feeds_mu);
	if (mono_ms() - f->checked_ms >= max_age_ms)
		refresh_locked(f);
	s = seg_ref(f->seg);
	pthread_mutex_unlock(&feeds_mu);
	return s;
}

int
feeds_count(void)
{
	return atomic_load_explicit(&n_feeds, memory_order_acquire);
}

struct feed *
feeds_at(int i)
{
	return table[i];
}

bool
feeds_live(struct seg *s, struct ring_info *info, const char **why)
{
	ring_info(s->ring, info);
	if (info->state == RING_STATE_CLOSED) {
		*why = "the daemon closed this feed";
		return false;
	}
	if (!info->writer_alive) {
		*why = "the daemon writing this feed is not running (no heartbeat)";
		return false;
	}
	if (info->state == RING_STATE_ERROR) {
		/* A permanent upstream error: the daemon's message (with the
		 * fix it names) is the 503's body. */
		static __thread char msg[RING_ERROR_MAX + 64];
		char e[RING_ERROR_MAX + 1];
		ring_error(s->ring, e, sizeof(e));
		snprintf(msg, sizeof(msg), "upstream error: %s", e[0] ? e : "(no message)");
		*why = msg;
		return false;
	}
	if (info->state == RING_STATE_STARTING || info->snap_gen == 0) {
		*why = "the feed is starting: no snapshot yet";
		return false;
	}
	atomic_store_explicit(&s->pid_checked_ms, mono_ms(), memory_order_relaxed);
	/* RING_STATE_DOWN with a snapshot: serve what we hold; long-polls
	 * park until the daemon reconnects upstream. */
	return true;
}

bool
feeds_live_cached(struct seg *s, const char **why)
{
	struct ring_info info;

	if (mono_ms() - atomic_load_explicit(&s->pid_checked_ms, memory_order_relaxed) < 100)
		return true;
	return feeds_live(s, &info, why);
}

static int
cmp_names(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The feed names in the ring directory (FEED.ring), sorted; *n of them. */
static char **
list_names(size_t *np)
{
	DIR *d = opendir(ring_dir);
	struct dirent *de;
	char **names = NULL;
	size_t n = 0, cap = 0;

	while (d != NULL && (de = readdir(d)) != NULL) {
		size_t len = strlen(de->d_name);
		if (len <= 5 || strcmp(de->d_name + len - 5, ".ring") != 0)
			continue;
		if (n == cap) {
			cap = cap ? cap * 2 : 16;
			char **nn = realloc(names, cap * sizeof(*names));
			if (nn == NULL)
				break;
			names = nn;
		}
		names[n] = strndup(de->d_name, len - 5);
		if (names[n] != NULL)
			n++;
	}
	if (d != NULL)
		closedir(d);
	if (n > 0)
		qsort(names, n, sizeof(*names), cmp_names);
	*np = n;
	return names;
}

static void
free_names(char **names, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
}

/* What /feeds and /metrics say about a feed's state: the ring's, "dead"
 * without a writer, "stalled" when live but unconfirmed too long. */
static const char *
state_name(const struct ring_info *info)
{
	if (!info->writer_alive && info->state != RING_STATE_CLOSED)
		return "dead";
	if (info->stalled)
		return "stalled";
	return ring_strstate(info->state);
}

void
feeds_render_list(struct bbuf *out)
{
	size_t n;
	char **names = list_names(&n);
	bool first = true;

	bbuf_adds(out, "{\"feeds\":[");
	for (size_t i = 0; i < n; i++) {
		struct feed *f;
		struct seg *s;
		struct ring_info info;
		const char *why;
		char err[RING_ERROR_MAX + 1], num[64];
		bool live;

		if (feeds_acquire(names[i], &f, &s, err, sizeof(err)) != 200)
			continue;
		live = feeds_live(s, &info, &why) && info.state == RING_STATE_LIVE;
		if (!first)
			bbuf_adds(out, ",");
		first = false;
		bbuf_adds(out, "{\"name\":");
		render_json_string(out, f->name);
		bbuf_adds(out, ",\"source\":");
		render_json_string(out, ring_source(s->ring));
		bbuf_adds(out, ",\"columns\":");
		bbuf_adds(out, ring_columns(s->ring));
		snprintf(num, sizeof(num), ",\"cursor\":\"%" PRIu64 "\"", info.head_cursor);
		bbuf_adds(out, num);
		snprintf(num, sizeof(num), ",\"rows\":%" PRIu64, info.row_count);
		bbuf_adds(out, num);
		bbuf_adds(out, live && !info.stalled ? ",\"live\":true" : ",\"live\":false");
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
	free_names(names, n);
	bbuf_adds(out, "]}\n");
}

void
feeds_render_metrics(struct bbuf *out)
{
	static const char *const states[] = {"starting", "live", "down",   "closed",
	                                     "error",    "dead", "stalled"};
	size_t n;
	char **names = list_names(&n);
	char line[512];

	bbuf_adds(out, "# HELP tailgate_feed_state The feed's state (1 for the one it is in).\n"
	               "# TYPE tailgate_feed_state gauge\n"
	               "# HELP tailgate_feed_lag_seconds Seconds since the upstream last confirmed "
	               "the feed complete (a progress row, keepalive or commit).\n"
	               "# TYPE tailgate_feed_lag_seconds gauge\n");
	for (size_t i = 0; i < n; i++) {
		struct feed *f;
		struct seg *s;
		struct ring_info info;
		const char *why, *st;
		char err[256];

		if (feeds_acquire(names[i], &f, &s, err, sizeof(err)) != 200)
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
	free_names(names, n);
}
