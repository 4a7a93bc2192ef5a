/*
 * pgconn.c - how tailgated opens, drives and reports libpq connections
 * (pgconn.h): the keyword set, connect polling, flushing, result
 * collection and the one error format.
 */
#include "config.h" /* autoconf: _GNU_SOURCE and friends, first */

#include "pgconn.h"

#include "log.h"

#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PGCONN_MAX_KEYS 16

/* Fill keys/vals in the order pgconn.h gives; returns the count. */
static int
keywords(const char *conninfo, const struct pgconn_opts *o, const char **keys, const char **vals,
         char *timeout, size_t timeoutlen)
{
	int k = 0;

#define KV(key, val) (keys[k] = (key), vals[k++] = (val))
	/* Defaults the conninfo may override. */
	KV("fallback_application_name", o->app_name ? o->app_name : "tailgated");
	KV("keepalives", "1");
	KV("keepalives_idle", "30");
	KV("keepalives_interval", "10");
	KV("keepalives_count", "3");
	KV("dbname", conninfo);
	/* What tailgated needs, whatever the conninfo says. */
	KV("client_encoding", "UTF8");
	if (o->replication)
		KV("replication", "database");
	if (o->connect_timeout_s > 0) {
		snprintf(timeout, timeoutlen, "%d", o->connect_timeout_s);
		KV("connect_timeout", timeout);
	}
	if (o->options != NULL)
		KV("options", o->options);
#undef KV
	keys[k] = vals[k] = NULL;
	return k;
}

PGconn *
pgconn_start(const char *conninfo, const struct pgconn_opts *o)
{
	const char *keys[PGCONN_MAX_KEYS], *vals[PGCONN_MAX_KEYS];
	char timeout[16];
	PGconn *c;

	keywords(conninfo, o, keys, vals, timeout, sizeof(timeout));
	c = PQconnectStartParams(keys, vals, 1);
	if (c == NULL)
		fatalx("out of memory");
	return c;
}

PGconn *
pgconn_open(const char *conninfo, const struct pgconn_opts *o)
{
	const char *keys[PGCONN_MAX_KEYS], *vals[PGCONN_MAX_KEYS];
	char timeout[16];
	PGconn *c;

	keywords(conninfo, o, keys, vals, timeout, sizeof(timeout));
	c = PQconnectdbParams(keys, vals, 1);
	if (c == NULL)
		fatalx("out of memory");
	return c;
}

char *
pgconn_options_with(const char *conninfo, const char *extra)
{
	PQconninfoOption *opts = PQconninfoParse(conninfo, NULL);
	const char *user = NULL;
	char *out;

	for (PQconninfoOption *o = opts; o && o->keyword; o++)
		if (strcmp(o->keyword, "options") == 0 && o->val && o->val[0])
			user = o->val;
	if (user == NULL)
		user = getenv("PGOPTIONS");
	if (asprintf(&out, "%s%s%s", user && user[0] ? user : "", user && user[0] ? " " : "",
	             extra) < 0)
		fatalx("out of memory");
	PQconninfoFree(opts);
	return out;
}

enum pgconn_poll
pgconn_poll(PGconn *c, short *events)
{
	switch (PQconnectPoll(c)) {
	case PGRES_POLLING_READING:
		*events = POLLIN;
		return PGCONN_WAIT;
	case PGRES_POLLING_WRITING:
		*events = POLLOUT;
		return PGCONN_WAIT;
	case PGRES_POLLING_OK:
		if (PQsetnonblocking(c, 1) != 0)
			return PGCONN_FAILED;
		return PGCONN_READY;
	default:
		return PGCONN_FAILED;
	}
}

int
pgconn_flush(PGconn *c, short *events)
{
	int f = PQflush(c);

	if (f < 0)
		return -1;
	*events = (short)(POLLIN | (f == 1 ? POLLOUT : 0));
	return 0;
}

static bool
is_error(const PGresult *r)
{
	ExecStatusType st = PQresultStatus(r);

	return st == PGRES_FATAL_ERROR || st == PGRES_BAD_RESPONSE;
}

int
pgconn_collect(PGconn *c, PGresult **keep, PGresult **res)
{
	PGresult *r;

	if (PQflush(c) < 0 || !PQconsumeInput(c)) {
		if (*keep != NULL && is_error(*keep))
			goto done;
		PQclear(*keep);
		*keep = NULL;
		return -1;
	}
	for (;;) {
		if (PQisBusy(c))
			return 0;
		r = PQgetResult(c);
		if (r == NULL)
			break;
		ExecStatusType st = PQresultStatus(r);
		if (st == PGRES_COPY_BOTH || st == PGRES_COPY_OUT) {
			PQclear(*keep);
			*keep = r; /* COPY modes have no terminating NULL result yet */
			break;
		}
		if (*keep != NULL && is_error(*keep)) {
			PQclear(r); /* the first error is the one to report */
		} else {
			PQclear(*keep);
			*keep = r;
		}
	}
done:
	*res = *keep;
	*keep = NULL;
	return 1;
}

char *
pgconn_one_line(char *msg)
{
	size_t n = 0;

	for (char *p = msg; *p; p++) {
		char c = (*p == '\n' || *p == '\t' || *p == '\r') ? ' ' : *p;
		if (c == ' ' && (n == 0 || msg[n - 1] == ' '))
			continue;
		msg[n++] = c;
	}
	while (n > 0 && msg[n - 1] == ' ')
		n--;
	msg[n] = '\0';
	return msg;
}

/* Append " LABEL: s" to e->reason when s has anything to say. */
static void
add_field(struct pgconn_error *e, const char *label, const char *s)
{
	size_t n = strlen(e->reason);

	if (s == NULL || *s == '\0' || n + 1 >= sizeof(e->reason))
		return;
	snprintf(e->reason + n, sizeof(e->reason) - n, " %s: %s", label, s);
}

const char *
pgconn_format(struct pgconn_error *e, const char *what, const char *sqlstate, const char *primary,
              const char *detail, const char *hint, const char *fallback)
{
	bool server = sqlstate != NULL && *sqlstate != '\0';

	snprintf(e->sqlstate, sizeof(e->sqlstate), "%s", server ? sqlstate : "");
	snprintf(e->reason, sizeof(e->reason), "%s",
	         primary != NULL && *primary != '\0' ? primary
	         : fallback                          ? fallback
	                                             : "");
	add_field(e, "DETAIL", detail);
	add_field(e, "HINT", hint);
	pgconn_one_line(e->reason);
	if (e->reason[0] == '\0')
		snprintf(e->reason, sizeof(e->reason), "%s",
		         server ? "(no message)" : "connection lost (libpq gave no reason)");
	if (server)
		snprintf(e->text, sizeof(e->text), "%s failed (SQLSTATE %s): %s", what, e->sqlstate,
		         e->reason);
	else
		snprintf(e->text, sizeof(e->text), "%s failed (connection): %s", what, e->reason);
	return e->text;
}

const char *
pgconn_error(struct pgconn_error *e, const char *what, const PGconn *c, const PGresult *r)
{
	const char *conn_msg = c != NULL ? PQerrorMessage(c) : "no connection";

	if (r != NULL && !is_error(r)) {
		/* A result of the wrong kind or shape: the server did not fail. */
		e->sqlstate[0] = '\0';
		snprintf(e->reason, sizeof(e->reason), "unexpected result %s, %d rows, %d columns",
		         PQresStatus(PQresultStatus(r)), PQntuples(r), PQnfields(r));
		snprintf(e->text, sizeof(e->text), "%s failed (%s)", what, e->reason);
		return e->text;
	}
	if (r == NULL)
		return pgconn_format(e, what, NULL, NULL, NULL, NULL, conn_msg);
	const char *msg = PQresultErrorMessage(r);
	return pgconn_format(e, what, PQresultErrorField(r, PG_DIAG_SQLSTATE),
	                     PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY),
	                     PQresultErrorField(r, PG_DIAG_MESSAGE_DETAIL),
	                     PQresultErrorField(r, PG_DIAG_MESSAGE_HINT),
	                     msg != NULL && *msg != '\0' ? msg : conn_msg);
}
