/*
 * source.c - the table of source kinds and what every kind shares
 * (source.h).  A new kind adds its ops to kinds[] and nothing else.
 */
#include "config.h" /* autoconf: _GNU_SOURCE and friends, first */

#include "source.h"

#include "conf.h"
#include "log.h"

#include "feed.h"
#include "pgconn.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

extern const struct source_ops source_mz_ops;
extern const struct source_ops source_pg_ops;

static const struct source_ops *const kinds[] = {
        &source_mz_ops,
        &source_pg_ops,
};

const struct source_ops *
source_find(const char *name)
{
	for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++)
		if (strcmp(kinds[i]->name, name) == 0)
			return kinds[i];
	return NULL;
}

int
source_init(struct source *src, const struct conf *conf, const struct conf_feed *cfeed,
            struct feed *feed)
{
	memset(src, 0, sizeof(*src));
	src->fd = -1;
	src->conf = conf;
	src->cfeed = cfeed;
	src->feed = feed;
	src->ops = source_find(conf->source);
	if (src->ops == NULL) {
		log_error("feed=%s: source \"%s\" is not built into this tailgated", cfeed->name,
		          conf->source);
		return -1;
	}
	if (src->ops->init(src) != 0) {
		src->ops = NULL;
		return -1;
	}
	return 0;
}

void
source_fini(struct source *src)
{
	if (src->ops == NULL)
		return;
	src->ops->stop(src);
	src->ops->fini(src);
	src->ops = NULL;
	src->priv = NULL;
	src->fd = -1;
	src->events = 0;
	src->timer_ms = 0;
}

bool
source_error_permanent(const char *sqlstate, const char *msg)
{
	static const char *const login[] = {"password authentication failed",
	                                    "does not exist",
	                                    "no pg_hba.conf entry",
	                                    "must be superuser or replication role",
	                                    "permission denied",
	                                    "must have replication",
	                                    "logical decoding requires",
	                                    "wal_level"};

	/* 42710 (duplicate_object) is class 42 but passes: a temporary slot of
	 * a dropped session lingers until its backend notices, and then the
	 * name is free again. */
	if (sqlstate != NULL && strcmp(sqlstate, "42710") == 0)
		return false;
	if (sqlstate != NULL && *sqlstate != '\0')
		return strncmp(sqlstate, "28", 2) == 0 || strncmp(sqlstate, "3D", 2) == 0 ||
		       strncmp(sqlstate, "42", 2) == 0 || strncmp(sqlstate, "0A", 2) == 0 ||
		       strcmp(sqlstate, "55000") == 0;
	for (size_t i = 0; msg != NULL && i < sizeof(login) / sizeof(login[0]); i++)
		if (strstr(msg, login[i]) != NULL)
			return true;
	return false;
}

enum source_status
source_fail(struct source *src, bool permanent, const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	log_error("feed=%s: %s", src->cfeed->name, msg);
	feed_upstream_error(src->feed, msg, permanent);
	return SOURCE_RETRY;
}

enum source_status
source_fail_pg(struct source *src, const char *what, const PGconn *c, const PGresult *r)
{
	struct pgconn_error e;

	pgconn_error(&e, what, c, r);
	return source_fail(src, source_error_permanent(e.sqlstate, e.reason), "%s", e.text);
}
