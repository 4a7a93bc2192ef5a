/*
 * daemon.c - the event loop (daemon.h).
 *
 * One thread, one poll(2) over every feed's upstream socket: feeds are
 * independent and the work per row is small, so a thread per feed would
 * only add locking around the log and the shared reload.  A slow feed
 * cannot starve the others: a source yields after a bounded number of
 * rows (it sets its timer to "now" to be called again next iteration).
 */
#include "config.h" /* autoconf: _GNU_SOURCE and friends, first */

#include "daemon.h"

#include "clock.h"
#include "conf.h"
#include "feed.h"
#include "log.h"
#include "source.h"

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#define HEARTBEAT_MS 1000
#define LIVE_RESET_MS 10000 /* a session live this long resets the backoff */

struct dfeed {
	const struct conf_feed *cf;
	struct feed *feed;
	struct source src;
	bool running;        /* a session is under way */
	uint64_t restart_at; /* when not running: start then */
	unsigned delay_ms;   /* the last backoff delay, 0 before any */
	uint64_t live_at;    /* when the session went live, 0: not yet */
};

struct daemon {
	struct conf *conf;
	struct dfeed **feeds;
	size_t nfeeds;
	bool remove_on_exit;
	uint64_t next_heartbeat;
	struct pollfd *pfd;
	struct dfeed **pfd_feed;
	size_t pfd_cap;
	bool trace; /* TAILGATE_TRACE set: log each wake's timing */
};

/* What the feed streams, for the segment (feed_params.definition): every
 * setting of conf_feed_equal but the connection (a new password or host
 * for the same database should not cost clients a resync: a resume that
 * the new upstream cannot honour falls back to a snapshot anyway) and the
 * ring's directory and size (ring_adopt checks those itself). */
static char *
feed_definition(const struct conf *c, const struct conf_feed *cf)
{
	char *s;

	if (asprintf(&s,
	             "source=%s\nview=%s\nquery=%s\ntable=%s\ncolumns=%s\nwhere=%s\n"
	             "slot=%s\npermanent=%d\n",
	             c->source ? c->source : "", cf->view ? cf->view : "\x01",
	             cf->query ? cf->query : "\x01", cf->table ? cf->table : "\x01",
	             cf->columns ? cf->columns : "\x01", cf->where ? cf->where : "\x01",
	             cf->slot ? cf->slot : "\x01", cf->permanent_slot ? 1 : 0) < 0)
		fatalx("out of memory");
	return s;
}

/* What determines the feed's rows: feed_definition without this host's
 * slot settings, so that every host serving the feed from one upstream
 * names the same history in its cursors. */
static char *
feed_rows(const struct conf *c, const struct conf_feed *cf)
{
	char *s;

	if (asprintf(&s, "source=%s\nview=%s\nquery=%s\ntable=%s\ncolumns=%s\nwhere=%s\n",
	             c->source ? c->source : "", cf->view ? cf->view : "\x01",
	             cf->query ? cf->query : "\x01", cf->table ? cf->table : "\x01",
	             cf->columns ? cf->columns : "\x01", cf->where ? cf->where : "\x01") < 0)
		fatalx("out of memory");
	return s;
}

/* adopt: the feed may take over a segment an earlier daemon left (a
 * restart); not when its definition just changed on reload. */
static struct dfeed *
dfeed_new(struct daemon *d, const struct conf_feed *cf, bool adopt)
{
	struct dfeed *df = calloc(1, sizeof(*df));
	const struct source_ops *ops;
	struct feed_params fp;
	char *def, *rows;

	if (df == NULL)
		fatalx("out of memory");
	memset(&fp, 0, sizeof(fp));
	fp.name = cf->name;
	fp.ring_dir = d->conf->ring_dir;
	fp.source = d->conf->source;
	fp.ring_size = cf->ring_size;
	ops = source_find(d->conf->source);
	fp.unique_rows = ops != NULL && ops->consolidated;
	fp.definition = def = feed_definition(d->conf, cf);
	fp.rows = rows = feed_rows(d->conf, cf);
	fp.fresh = !adopt;
	fp.stall_ms = d->conf->stall_timeout_ms;
	df->cf = cf;
	df->feed = feed_new(&fp);
	free(def);
	free(rows);
	if (source_init(&df->src, d->conf, cf, df->feed) != 0) {
		feed_free(df->feed, false);
		free(df);
		return NULL;
	}
	return df;
}

static void
dfeed_free(struct dfeed *df, bool remove)
{
	source_fini(&df->src);
	feed_free(df->feed, remove);
	free(df);
}

static unsigned
jitter(unsigned delay)
{
	unsigned r = 0;

	if (getrandom(&r, sizeof(r), GRND_NONBLOCK) != sizeof(r))
		r = (unsigned)random();
	/* "Equal jitter": half fixed, half random, so feeds that fell
	 * together do not reconnect together. */
	return delay / 2 + r % (delay / 2 + 1);
}

static void
session_over(struct daemon *d, struct dfeed *df, uint64_t now)
{
	unsigned min = d->conf->backoff_min_ms, max = d->conf->backoff_max_ms, wait;

	df->src.ops->stop(&df->src);
	feed_upstream_lost(df->feed);
	df->running = false;
	if (df->live_at != 0 && now - df->live_at >= LIVE_RESET_MS)
		df->delay_ms = min;
	else if (df->delay_ms == 0)
		df->delay_ms = min;
	else
		df->delay_ms = df->delay_ms > max / 2 ? max : df->delay_ms * 2;
	df->live_at = 0;
	if (feed_error_permanent(df->feed)) {
		/* The same error would come back at once: retry slowly, or
		 * on SIGHUP (daemon_reload), after the fix. */
		wait = d->conf->error_retry_ms;
		df->restart_at = now + wait;
		log_warning("feed=%s: a permanent upstream error (see above); retrying in %u s or "
		            "on SIGHUP",
		            df->cf->name, wait / 1000);
		return;
	}
	wait = jitter(df->delay_ms);
	df->restart_at = now + wait;
	log_info("feed=%s: upstream down; reconnecting in %u ms", df->cf->name, wait);
}

static void
session_start(struct daemon *d, struct dfeed *df, uint64_t now)
{
	df->running = true;
	df->live_at = 0;
	if (df->src.ops->start(&df->src, now) != SOURCE_OK)
		session_over(d, df, now);
}

struct daemon *
daemon_new(struct conf *conf, bool remove_on_exit)
{
	struct daemon *d = calloc(1, sizeof(*d));

	if (d == NULL)
		fatalx("out of memory");
	d->conf = conf;
	d->trace = getenv("TAILGATE_TRACE") != NULL;
	d->remove_on_exit = remove_on_exit;
	d->feeds = calloc(conf->nfeeds ? conf->nfeeds : 1, sizeof(*d->feeds));
	if (d->feeds == NULL)
		fatalx("out of memory");
	for (size_t i = 0; i < conf->nfeeds; i++) {
		struct dfeed *df = dfeed_new(d, &conf->feeds[i], true);
		if (df == NULL) {
			daemon_free(d);
			return NULL;
		}
		d->feeds[d->nfeeds++] = df;
		log_info("feed=%s: configured (%s, ring %llu bytes)", conf->feeds[i].name,
		         conf->source, (unsigned long long)conf->feeds[i].ring_size);
	}
	return d;
}

void
daemon_free(struct daemon *d)
{
	if (d == NULL)
		return;
	for (size_t i = 0; i < d->nfeeds; i++)
		dfeed_free(d->feeds[i], d->remove_on_exit);
	free(d->feeds);
	free(d->pfd);
	free(d->pfd_feed);
	conf_free(d->conf);
	free(d);
}

void
daemon_reload(struct daemon *d, struct conf *conf)
{
	struct dfeed **next = calloc(conf->nfeeds ? conf->nfeeds : 1, sizeof(*next));
	bool *changed = calloc(conf->nfeeds ? conf->nfeeds : 1, sizeof(*changed));
	size_t n = 0;

	if (next == NULL || changed == NULL)
		fatalx("out of memory");
	/* Keep or stop each running feed. */
	for (size_t i = 0; i < d->nfeeds; i++) {
		struct dfeed *df = d->feeds[i];
		const struct conf_feed *nf = conf_find_feed(conf, df->cf->name);
		if (nf != NULL && conf_feed_equal(d->conf, df->cf, conf, nf)) {
			if (!df->running && feed_error_permanent(df->feed))
				df->restart_at = 0; /* SIGHUP: retry a failed feed now */
			df->cf = nf;
			df->src.conf = conf;
			df->src.cfeed = nf;
			next[n++] = df;
			continue;
		}
		log_info("feed=%s: %s", df->cf->name,
		         nf ? "definition changed; restarting with a new segment"
		            : "removed from the configuration");
		if (nf != NULL)
			changed[nf - conf->feeds] = true;
		df->src.removed = nf == NULL; /* a permanent slot says how to drop it */
		dfeed_free(df, nf == NULL);
	}
	free(d->feeds);
	conf_free(d->conf);
	d->conf = conf;
	d->feeds = next;
	/* Start the new and changed ones. */
	for (size_t i = 0; i < conf->nfeeds; i++) {
		bool have = false;
		for (size_t j = 0; j < n && !have; j++)
			have = strcmp(next[j]->cf->name, conf->feeds[i].name) == 0;
		if (have)
			continue;
		struct dfeed *df = dfeed_new(d, &conf->feeds[i], !changed[i]);
		if (df == NULL)
			continue; /* logged; the other feeds go on */
		log_info("feed=%s: added", conf->feeds[i].name);
		next[n++] = df; /* started by the next step */
	}
	free(changed);
	d->nfeeds = n;
}

static void
add_pfd(struct daemon *d, size_t *n, int fd, short events, struct dfeed *df)
{
	if (*n == d->pfd_cap) {
		d->pfd_cap = d->pfd_cap ? d->pfd_cap * 2 : 16;
		d->pfd = realloc(d->pfd, d->pfd_cap * sizeof(*d->pfd));
		d->pfd_feed = realloc(d->pfd_feed, d->pfd_cap * sizeof(*d->pfd_feed));
		if (d->pfd == NULL || d->pfd_feed == NULL)
			fatalx("out of memory");
	}
	d->pfd[*n] = (struct pollfd){fd, events, 0};
	d->pfd_feed[*n] = df;
	(*n)++;
}

static void
clamp_wait(int64_t *wait, uint64_t at, uint64_t now)
{
	int64_t w = at > now ? (int64_t)(at - now) : 0;

	if (*wait < 0 || w < *wait)
		*wait = w;
}

bool
daemon_step(struct daemon *d, int extra_fd, int max_wait_ms)
{
	uint64_t now = clock_mono_ms();
	int64_t wait = max_wait_ms;
	size_t npfd = 0;
	bool extra = false;
	int rc;

	if (d->next_heartbeat == 0)
		d->next_heartbeat = now;
	clamp_wait(&wait, d->next_heartbeat, now);
	if (extra_fd >= 0)
		add_pfd(d, &npfd, extra_fd, POLLIN, NULL);
	for (size_t i = 0; i < d->nfeeds; i++) {
		struct dfeed *df = d->feeds[i];
		if (!df->running) {
			clamp_wait(&wait, df->restart_at, now);
			continue;
		}
		if (df->src.timer_ms != 0)
			clamp_wait(&wait, df->src.timer_ms, now);
		if (df->src.fd >= 0 && df->src.events != 0)
			add_pfd(d, &npfd, df->src.fd, df->src.events, df);
	}
	if (wait > 60000)
		wait = 60000;

	rc = poll(d->pfd, npfd, (int)wait);
	if (rc < 0 && errno != EINTR)
		fatal("poll");
	now = clock_mono_ms();
	int64_t ready_ns = d->trace ? clock_mono_ns() : 0;

	for (size_t i = 0; rc > 0 && i < npfd; i++) {
		struct dfeed *df = d->pfd_feed[i];
		short rev = d->pfd[i].revents;
		if (rev == 0)
			continue;
		if (df == NULL) {
			extra = true;
			continue;
		}
		if (!df->running || df->src.fd != d->pfd[i].fd)
			continue; /* changed under us this iteration */
		if (df->src.ops->on_ready(&df->src, rev, now) != SOURCE_OK)
			session_over(d, df, now);
	}
	for (size_t i = 0; i < d->nfeeds; i++) {
		struct dfeed *df = d->feeds[i];
		if (df->running && df->src.timer_ms != 0 && df->src.timer_ms <= now) {
			if (df->src.ops->on_tick(&df->src, now) != SOURCE_OK)
				session_over(d, df, now);
		} else if (!df->running && df->restart_at <= now) {
			session_start(d, df, now);
		}
		if (df->running && df->live_at == 0 && feed_is_live(df->feed))
			df->live_at = now;
	}
	if (now >= d->next_heartbeat) {
		for (size_t i = 0; i < d->nfeeds; i++)
			feed_heartbeat(d->feeds[i]->feed);
		d->next_heartbeat = now + HEARTBEAT_MS;
	}
	for (size_t i = 0; i < d->nfeeds; i++) {
		/* TAILGATE_TRACE: the time is taken before the wake, since the
		 * woken watcher may take this CPU before futex(2) returns. */
		int64_t wake_ns = d->trace ? clock_mono_ns() : 0;
		if (feed_flush(d->feeds[i]->feed) && d->trace)
			log_info("trace feed=%s ready_ns=%" PRId64 " wake_ns=%" PRId64,
			         d->feeds[i]->cf->name, ready_ns, wake_ns);
	}
	return extra;
}

bool
daemon_feed_stats(struct daemon *d, const char *name, struct feed_stats *out)
{
	for (size_t i = 0; i < d->nfeeds; i++)
		if (strcmp(d->feeds[i]->cf->name, name) == 0) {
			feed_stats(d->feeds[i]->feed, out);
			return true;
		}
	return false;
}
