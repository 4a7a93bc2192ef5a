/*
 * source.h - one kind of upstream, as the daemon's event loop drives it.
 *
 * A source kind (Materialize SUBSCRIBE in source_mz.c, PostgreSQL logical
 * replication in source_pg.c) is a table of operations, chosen by name
 * from one table in source.c, the way OpenSMTPD picks its queue backends.
 * The daemon makes one struct source per configured feed and owns it; the
 * source kind owns src->priv and the upstream connection.
 *
 * Everything runs on the daemon's one thread and no operation may block
 * (libpq in non-blocking mode: PQconnectStart/PQconnectPoll,
 * PQsetnonblocking, PQconsumeInput, PQgetCopyData(conn, &buf, 1)).
 * After every call the loop reads three fields the source keeps current:
 *
 *   src->fd       the socket to poll, or -1 (PQsocket() may change while
 *                 connecting: set it again after every PQconnectPoll)
 *   src->events   POLLIN and/or POLLOUT wanted on fd
 *   src->timer_ms clock_mono_ms() milliseconds at which on_tick is due
 *                 (keepalives, status messages, connect timeouts); 0: none
 *
 * Life cycle:
 *
 *   init  once, when the feed is configured; allocates priv.  Returns -1
 *         (after logging why) when this kind cannot serve the feed.
 *   start begin connecting and subscribing.  Resume from the feed's held
 *         state when feed_can_resume() says so, else take a snapshot.
 *   on_ready  fd is ready (revents from poll, including POLLERR/POLLHUP).
 *         Read everything available, hand rows and progress to the feed
 *         (feed.h), return.
 *   on_tick   timer_ms has passed.
 *   stop  drop the connection (idempotent).  The feed's held state stays.
 *   fini  free priv; stop was called before.
 *
 * start, on_ready and on_tick return SOURCE_OK or SOURCE_RETRY.
 * SOURCE_RETRY means this session is over (connection lost, an upstream
 * error, or a protocol violation the feed refused); the source has logged
 * the reason (SQLSTATE and message where there is one).  The daemon then
 * calls stop, feed_upstream_lost(), and start again after an exponential
 * backoff with jitter, which restarts from the backoff minimum once a
 * session has stayed live for a while.
 */
#ifndef TAILGATE_SOURCE_H
#define TAILGATE_SOURCE_H

#include <stdbool.h>
#include <stdint.h>

struct conf;
struct conf_feed;
struct feed;
struct pg_conn;   /* libpq's PGconn */
struct pg_result; /* libpq's PGresult */

enum source_status {
	SOURCE_OK = 0,
	SOURCE_RETRY = 1 /* session over: stop, back off, start again */
};

struct source;

struct source_ops {
	const char *name; /* "materialize", "postgresql": conf's `source` */
	/* The upstream sends each row at most once per timestamp (Materialize
	 * consolidates): a repeat is refused as a broken stream instead of
	 * being summed, unless the resent timestamp repeats a row again
	 * (feed_params.unique_rows). */
	bool consolidated;
	int (*init)(struct source *src);
	enum source_status (*start)(struct source *src, uint64_t now_ms);
	enum source_status (*on_ready)(struct source *src, short revents, uint64_t now_ms);
	enum source_status (*on_tick)(struct source *src, uint64_t now_ms);
	void (*stop)(struct source *src);
	void (*fini)(struct source *src);
};

struct source {
	const struct source_ops *ops;
	const struct conf *conf;       /* conninfo etc.; valid while the source lives */
	const struct conf_feed *cfeed; /* this feed's section; same lifetime */
	struct feed *feed;             /* the sink (feed.h); owned by the daemon */
	void *priv;                    /* the kind's own state */

	int fd;            /* -1: nothing to poll */
	short events;      /* POLLIN | POLLOUT */
	uint64_t timer_ms; /* 0: no timer */
	bool removed;      /* set before fini: the feed left the configuration */
};

/* The source kind named name, or NULL. */
const struct source_ops *source_find(const char *name);

/* Fill src for one feed and call ops->init.  Returns -1 when the kind is
 * unknown or init refused (logged). */
int source_init(struct source *src, const struct conf *conf, const struct conf_feed *cfeed,
                struct feed *feed);

/* Stop and fini; src may be reused with source_init afterwards. */
void source_fini(struct source *src);

/* Does an upstream error need a fix (configuration, grants, the database's
 * settings) rather than time?  sqlstate may be NULL (a failed connection
 * attempt, which libpq reports as text only): then msg decides.
 * Permanent: SQLSTATE classes 28 (credentials), 3D (no such database), 42
 * (no such table or column, no privilege), 0A, and 55000 (wal_level);
 * refused logins and pg_hba.  Everything else (08 connection, 57P
 * shutdown, 53 resources, XX000, a dropped socket) is transient. */
bool source_error_permanent(const char *sqlstate, const char *msg);

/* Log "feed=NAME: msg" as an error and hand it to the feed (shown to
 * readers; a permanent one puts the feed in its error state).
 * Returns SOURCE_RETRY. */
enum source_status source_fail(struct source *src, bool permanent, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));

/* source_fail with what failed on the libpq connection c: the result r
 * when there is one, else c's own message, in pgconn.h's one format, and
 * permanent as source_error_permanent says.  Returns SOURCE_RETRY. */
enum source_status source_fail_pg(struct source *src, const char *what, const struct pg_conn *c,
                                  const struct pg_result *r);

#endif
