/*
 * conf.h - the daemon's configuration file (tailgated.conf(5)).
 *
 * (Named conf.h, not config.h: autoconf's config.h owns that name, and a
 * src/config.h would shadow it for every file in src/.)
 *
 *   # global keys first; then one section per feed
 *   source   = materialize
 *   conninfo = host=mz port=6875 user=materialize
 *   ring_dir = /dev/shm/tailgate
 *
 *   [feed winning_bids]
 *   view      = winning_bids
 *   ring_size = 64M
 *
 * conf_load() parses and validates the whole file or nothing: unknown
 * keys, duplicate feeds or keys, bad values and keys of the other source
 * kind are refused with "FILE:LINE: reason".  A conninfo that is a
 * connection string ("k=v ..." or a postgresql:// URI) is parsed by libpq
 * here: a malformed one is refused at once, with libpq's message stripped
 * of the quoted pieces it echoes (they may be part of a password).  The result is immutable; a
 * reload (SIGHUP) loads a new one and compares feeds with
 * conf_feed_equal().  conf_free() frees everything; pointers into a
 * config are valid until then.
 */
#ifndef TAILGATE_CONF_H
#define TAILGATE_CONF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CONF_DEFAULT_RING_SIZE (16u * 1024 * 1024)
#define CONF_DEFAULT_BACKOFF_MIN_MS 250
#define CONF_DEFAULT_BACKOFF_MAX_MS 30000
#define CONF_DEFAULT_STALL_TIMEOUT_MS 30000 /* no confirmation for this long: stalled */
#define CONF_DEFAULT_ERROR_RETRY_MS 300000  /* a permanent error is retried this slowly */
#define CONF_DEFAULT_SLOT_CHECK_MS 60000    /* how often the slots' WAL is looked at */

/* One [feed NAME] section. */
struct conf_feed {
	char *name; /* [A-Za-z0-9_-], 1..RING_FEED_NAME_MAX */
	int line;   /* of the [feed] header, for messages */

	/* source = materialize: exactly one of these is set. */
	char *view;  /* an object name: SUBSCRIBE view */
	char *query; /* a query: SUBSCRIBE (query) */

	/* source = postgresql (used by source_pg.c). */
	char *table;         /* required: [schema.]table */
	char *columns;       /* NULL: every column; else "a, b, c" as written */
	char *where;         /* NULL: every row; else a row filter expression */
	char *slot;          /* NULL: the source picks "tailgate_FEED" */
	bool permanent_slot; /* false: a temporary slot */

	uint64_t ring_size; /* bytes of the ring's data area */
};

struct conf {
	char *path;
	char *source;   /* "materialize" or "postgresql" */
	char *conninfo; /* libpq conninfo; "" means the PG* environment */
	char *password; /* the conninfo's password, NULL when none: for
	                   log_redact(), never for printing */
	char *ring_dir;
	char *ring_group;          /* NULL: none; the group ring_dir and its files get */
	unsigned ring_gid;         /* its gid (resolved when parsed) */
	uint64_t ring_size;        /* default for feeds */
	unsigned backoff_min_ms;   /* first reconnect delay */
	unsigned backoff_max_ms;   /* reconnect delay cap */
	unsigned stall_timeout_ms; /* 0: no stall detection */
	unsigned error_retry_ms;   /* delay after a permanent error (or SIGHUP) */
	unsigned slot_check_ms;    /* PostgreSQL: the slots' WAL every this long; 0: never */
	struct conf_feed *feeds;
	size_t nfeeds;
};

/* Parse path.  On failure returns NULL and writes "path:line: reason"
 * (or "path: reason") into err. */
struct conf *conf_load(const char *path, char *err, size_t errlen);

/* Parse text as if read from a file named name (tests). */
struct conf *conf_parse(const char *name, const char *text, size_t len, char *err, size_t errlen);

void conf_free(struct conf *c);

const struct conf_feed *conf_find_feed(const struct conf *c, const char *name);

/* True when a running feed built from (ca, fa) can keep running under
 * (cb, fb): same definition, same connection and source, same ring. */
bool conf_feed_equal(const struct conf *ca, const struct conf_feed *fa, const struct conf *cb,
                     const struct conf_feed *fb);

/* "16M" style sizes: digits with an optional K, M or G suffix. */
bool conf_parse_size(const char *s, uint64_t *out);

#endif
