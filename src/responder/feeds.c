/*
 * feeds.c - attached feeds and their segments (feeds.h).
 */
#include "feeds.h"

#include "clock.h"
#include "log.h"
#include "xmalloc.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

void
feeds_init(struct feeds *fs, const char *dir)
{
	memset(fs, 0, sizeof(*fs));
	pthread_mutex_init(&fs->mu, NULL);
	snprintf(fs->ring_dir, sizeof(fs->ring_dir), "%s", dir != NULL ? dir : RING_DEFAULT_DIR);
}

void
feeds_free(struct feeds *fs)
{
	int n = atomic_load(&fs->n);

	for (int i = 0; i < n; i++) {
		seg_release(fs->table[i]->seg);
		free(fs->table[i]);
		fs->table[i] = NULL;
	}
	atomic_store(&fs->n, 0);
	pthread_mutex_destroy(&fs->mu);
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
open_seg(const char *ring_dir, const char *name, struct seg **out, char *err, size_t errlen)
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
	s = xcalloc(1, sizeof(*s));
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

/* With fs->mu held: reopen f's segment when replaced. */
static void
refresh_locked(struct feeds *fs, struct feed *f)
{
	struct seg *s;
	char err[256];

	f->checked_ms = clock_mono_ms();
	if (f->seg != NULL && !ring_replaced(f->seg->ring))
		return;
	if (open_seg(fs->ring_dir, f->name, &s, err, sizeof(err)) != 200)
		return; /* keep the old one: it says CLOSED, which reads as not live */
	if (f->seg != NULL)
		log_info("feed=%s: segment replaced (daemon restarted), reattached", f->name);
	seg_release(f->seg);
	f->seg = s;
}

int
feeds_acquire(struct feeds *fs, const char *name, struct feed **feed, struct seg **seg, char *err,
              size_t errlen)
{
	struct feed *f = NULL;
	int n, status = 200;

	*feed = NULL;
	*seg = NULL;
	if (!ring_feed_name_ok(name)) {
		snprintf(err, errlen, "no feed named \"%.64s\"", name);
		return 404;
	}
	pthread_mutex_lock(&fs->mu);
	n = atomic_load(&fs->n);
	for (int i = 0; i < n; i++)
		if (strcmp(fs->table[i]->name, name) == 0) {
			f = fs->table[i];
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
		status = open_seg(fs->ring_dir, name, &s, err, errlen);
		if (status != 200)
			goto done;
		f = xcalloc(1, sizeof(*f));
		snprintf(f->name, sizeof(f->name), "%s", name);
		f->idx = n;
		f->seg = s;
		f->checked_ms = clock_mono_ms();
		fs->table[n] = f;
		/* Published after the entry is complete: feeds_at readers
		 * load n first. */
		atomic_store_explicit(&fs->n, n + 1, memory_order_release);
		log_info("feed=%s: attached %s/%s.ring", name, fs->ring_dir, name);
	} else {
		int64_t age = clock_mono_ms() - f->checked_ms;
		bool dead = f->seg == NULL;
		if (!dead && age >= 50) {
			const char *why;
			dead = !feeds_live_cached(f->seg, &why);
		}
		if (age >= 1000 || (dead && age >= 50))
			refresh_locked(fs, f);
		if (f->seg == NULL) {
			snprintf(err, errlen, "feed %s: segment missing", name);
			status = 503;
			goto done;
		}
	}
	*feed = f;
	*seg = seg_ref(f->seg);
done:
	pthread_mutex_unlock(&fs->mu);
	return status;
}

struct seg *
feeds_current(struct feeds *fs, struct feed *f, int64_t max_age_ms)
{
	struct seg *s;

	pthread_mutex_lock(&fs->mu);
	if (clock_mono_ms() - f->checked_ms >= max_age_ms)
		refresh_locked(fs, f);
	s = seg_ref(f->seg);
	pthread_mutex_unlock(&fs->mu);
	return s;
}

int
feeds_count(struct feeds *fs)
{
	return atomic_load_explicit(&fs->n, memory_order_acquire);
}

struct feed *
feeds_at(struct feeds *fs, int i)
{
	return fs->table[i];
}

bool
feeds_live(struct seg *s, struct ring_info *info, const char **why)
{
	ring_info(s->ring, info);
	if (info->state == RING_STATE_CLOSED) {
		*why = "the daemon closed this feed (it stopped, or the feed left its "
		       "configuration)";
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
	atomic_store_explicit(&s->pid_checked_ms, clock_mono_ms(), memory_order_relaxed);
	/* RING_STATE_DOWN with a snapshot: serve what we hold; long-polls
	 * park until the daemon reconnects upstream. */
	return true;
}

bool
feeds_live_cached(struct seg *s, const char **why)
{
	struct ring_info info;

	if (clock_mono_ms() - atomic_load_explicit(&s->pid_checked_ms, memory_order_relaxed) < 100)
		return true;
	return feeds_live(s, &info, why);
}

static int
cmp_names(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

char **
feeds_list_names(struct feeds *fs)
{
	DIR *d = opendir(fs->ring_dir);
	struct dirent *de;
	char **names = xcalloc(1, sizeof(*names));
	size_t n = 0;

	while (d != NULL && (de = readdir(d)) != NULL) {
		size_t len = strlen(de->d_name);
		if (len <= 5 || strcmp(de->d_name + len - 5, ".ring") != 0)
			continue;
		names = xrealloc(names, (n + 2) * sizeof(*names));
		names[n] = xstrdup(de->d_name);
		names[n++][len - 5] = '\0';
		names[n] = NULL;
	}
	if (d != NULL)
		closedir(d);
	if (n > 1) /* names is NULL when the directory holds no ring */
		qsort(names, n, sizeof(*names), cmp_names);
	return names;
}

void
feeds_free_names(char **names)
{
	for (size_t i = 0; names != NULL && names[i] != NULL; i++)
		free(names[i]);
	free(names);
}
