/*
 * pgconn.h - the one way tailgated talks to libpq: how a connection is
 * opened (one keyword set), driven without blocking, and how its failures
 * read.
 *
 * Every connection, the sources' (source_mz.c, source_pg.c) and the
 * commands' (check.c, cleanup.c), is opened with:
 *
 *   defaults the conninfo may override
 *       fallback_application_name (tailgated, or the command's name),
 *       keepalives=1, keepalives_idle=30, keepalives_interval=10,
 *       keepalives_count=3
 *   the user's conninfo (dbname, expanded)
 *   what tailgated needs whatever the conninfo says
 *       client_encoding=UTF8, replication=database (replication
 *       connections), connect_timeout and options (blocking commands)
 *
 * One error format, for the log, the feed's error and the commands' lines:
 *
 *   WHAT failed (SQLSTATE 42P01): message[ DETAIL: detail][ HINT: hint]
 *   WHAT failed (connection): libpq's message, on one line
 *   WHAT failed (unexpected result PGRES_TUPLES_OK, 0 rows, 2 columns)
 *
 * The second is a failure without a server error (a refused or dropped
 * connection, libpq's own errors); its reason is never empty.
 */
#ifndef TAILGATE_PGCONN_H
#define TAILGATE_PGCONN_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>

struct pgconn_opts {
	const char *app_name;  /* fallback_application_name; NULL: "tailgated" */
	bool replication;      /* replication=database */
	int connect_timeout_s; /* connect_timeout; 0: none (the caller times it) */
	const char *options;   /* server options ("-c name=value"), or NULL */
};

/* Start a non-blocking connection (PQconnectStartParams); drive it with
 * pgconn_poll.  Never NULL; PQstatus is CONNECTION_BAD when it failed at
 * once (pgconn_error says why). */
PGconn *pgconn_start(const char *conninfo, const struct pgconn_opts *o);

/* A blocking connection, for commands; check PQstatus as above. */
PGconn *pgconn_open(const char *conninfo, const struct pgconn_opts *o);

/* The server options of the user's conninfo (its options =, else
 * PGOPTIONS) followed by extra, so extra wins (malloc'd): for a
 * connection that must see what the user set (search_path) but needs
 * settings of its own, as pgconn_opts.options replaces the user's. */
char *pgconn_options_with(const char *conninfo, const char *extra);

enum pgconn_poll {
	PGCONN_FAILED = -1,
	PGCONN_WAIT = 0, /* *events says what to poll for */
	PGCONN_READY = 1 /* connected, and in non-blocking mode */
};

/* Drive PQconnectPoll one step. */
enum pgconn_poll pgconn_poll(PGconn *c, short *events);

/* Flush what libpq could not write yet.  Returns -1 when the connection
 * broke, else 0 with *events set: POLLIN, and POLLOUT while output waits. */
int pgconn_flush(PGconn *c, short *events);

/* Read the results of the query in flight.  Returns 1 with *res set (the
 * first error, else the last result, or a COPY start; the caller clears
 * it) when the query is complete, 0 when more must be read (poll for
 * POLLIN), -1 when the connection broke.  *keep holds what arrived so far
 * between calls: NULL before the query, and again after a return of 1 or
 * -1; PQclear it when abandoning the query.  An error that arrived
 * before the connection broke is returned (1), with its SQLSTATE. */
int pgconn_collect(PGconn *c, PGresult **keep, PGresult **res);

/* A failure, in the format above. */
struct pgconn_error {
	char sqlstate[6]; /* "" when there is none */
	char reason[400]; /* the message alone: what classification reads */
	char text[512];   /* the whole line */
};

/* Describe a failure of what from the result r (may be NULL), else from
 * the connection c (may be NULL).  Returns e->text. */
const char *pgconn_error(struct pgconn_error *e, const char *what, const PGconn *c,
                         const PGresult *r);

/* The format itself, from the pieces (any may be NULL): a server error
 * when sqlstate is set, a connection failure when it is not; fallback is
 * the message when primary is NULL or empty.  For tests and for
 * pgconn_error. */
const char *pgconn_format(struct pgconn_error *e, const char *what, const char *sqlstate,
                          const char *primary, const char *detail, const char *hint,
                          const char *fallback);

/* libpq's multi-line message as one line: newlines and tabs as single
 * spaces, trailing space dropped; in place.  Returns msg. */
char *pgconn_one_line(char *msg);

#endif
