/*
 * test_pgconn.c - pgconn.h without a server: the one error format (a
 * server error with its SQLSTATE, a connection failure that always says
 * why, an unexpected result), its classification by
 * source_error_permanent, and the keyword set every connection gets.
 *
 * The connection failures are real libpq ones: a conninfo libpq refuses
 * to parse, and a connection to a port nothing listens on.
 */
#include "config.h"

#include "pgconn.h"
#include "source.h"

#include "tap.h"

#include <stdlib.h>
#include <string.h>

static void
test_format(void)
{
	struct pgconn_error e;

	is_str(pgconn_format(&e, "reading the catalog", "42P01",
	                     "relation \"later\" does not exist", NULL, NULL, "ERROR: ignored"),
	       "reading the catalog failed (SQLSTATE 42P01): relation \"later\" does not exist",
	       "a server error: what, SQLSTATE, the primary message");
	is_str(e.sqlstate, "42P01", "  its SQLSTATE is kept for classification");
	is_str(e.reason, "relation \"later\" does not exist", "  and its message alone");
	ok(source_error_permanent(e.sqlstate, e.reason), "  42P01 is permanent");
	ok(!source_error_permanent("42710", "replication slot \"tailgate_x\" already exists"),
	   "  42710 (a lingering temporary slot) is transient");

	is_str(pgconn_format(&e, "streaming", "XX000", "Evaluation error: division by zero",
	                     "in view v", "check the data", NULL),
	       "streaming failed (SQLSTATE XX000): Evaluation error: division by zero DETAIL: in "
	       "view v HINT: check the data",
	       "detail and hint follow the message");
	ok(!source_error_permanent(e.sqlstate, e.reason), "  XX000 is transient");

	is_str(pgconn_format(&e, "START_REPLICATION", "58P01", NULL, NULL, NULL,
	                     "ERROR:  requested WAL segment\n\thas been removed\n"),
	       "START_REPLICATION failed (SQLSTATE 58P01): ERROR: requested WAL segment has been "
	       "removed",
	       "no primary message: the fallback, on one line");
	is_str(pgconn_format(&e, "x", "57P01", "", NULL, "", NULL),
	       "x failed (SQLSTATE 57P01): (no message)",
	       "a server error never has an empty reason");

	is_str(pgconn_format(&e, "connecting", NULL, NULL, NULL, NULL,
	                     "connection to server at \"db\" (10.0.0.1), port 5432 failed: "
	                     "FATAL:  password authentication failed for user \"u\"\n"),
	       "connecting failed (connection): connection to server at \"db\" (10.0.0.1), port "
	       "5432 failed: FATAL: password authentication failed for user \"u\"",
	       "no SQLSTATE: class connection, libpq's message on one line");
	is_str(e.sqlstate, "", "  and no SQLSTATE");
	ok(source_error_permanent(e.sqlstate, e.reason), "  a refused password is permanent");

	is_str(pgconn_format(&e, "reading the stream", "", "", NULL, NULL, " \n\t"),
	       "reading the stream failed (connection): connection lost (libpq gave no reason)",
	       "a connection failure never has an empty reason");
	ok(!source_error_permanent(e.sqlstate, e.reason), "  a lost connection is transient");

	char big[2000];
	memset(big, 'm', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	pgconn_format(&e, "x", "XX000", big, big, NULL, NULL);
	ok(strlen(e.reason) == sizeof(e.reason) - 1 &&
	           strncmp(e.text, "x failed (SQLSTATE XX000): mmm", 30) == 0,
	   "a long message is cut to the buffer, the head intact");
}

static void
test_one_line(void)
{
	char s[] = "\n a\n\tb  \r\n c \n\n";

	is_str(pgconn_one_line(s), "a b c", "one_line: one line, single spaces, no ends");
}

static void
test_connection_failures(void)
{
	struct pgconn_error e;
	const struct pgconn_opts plain = {0};
	PGconn *c;
	PGresult *r;

	is_str(pgconn_error(&e, "sending", NULL, NULL),
	       "sending failed (connection): no connection",
	       "no connection and no result: says so");

	c = pgconn_start("host=127.0.0.1 nosuchoption=1", &plain);
	ok(c != NULL && PQstatus(c) == CONNECTION_BAD, "a conninfo libpq refuses fails at once");
	pgconn_error(&e, "connecting", c, NULL);
	ok(strncmp(e.text, "connecting failed (connection): ", 32) == 0 &&
	           strstr(e.text, "nosuchoption") != NULL && strchr(e.text, '\n') == NULL,
	   "  with libpq's reason on one line: %s", e.text);
	PQfinish(c);

	/* Port 1 on the loopback: refused at once, no server involved. */
	c = pgconn_open("host=127.0.0.1 port=1", &(struct pgconn_opts){.connect_timeout_s = 5});
	ok(PQstatus(c) == CONNECTION_BAD, "a refused connection fails");
	pgconn_error(&e, "connecting", c, NULL);
	ok(strncmp(e.text, "connecting failed (connection): ", 32) == 0 &&
	           strstr(e.text, "refused") != NULL && strchr(e.text, '\n') == NULL,
	   "  with libpq's reason on one line: %s", e.text);
	ok(!source_error_permanent(e.sqlstate, e.reason), "  and is transient");

	r = PQmakeEmptyPGresult(c, PGRES_FATAL_ERROR);
	pgconn_error(&e, "reading", c, r);
	ok(strncmp(e.text, "reading failed (connection): ", 29) == 0 &&
	           strstr(e.text, "refused") != NULL,
	   "an error result without SQLSTATE (libpq's own): class connection: %s", e.text);
	PQclear(r);

	r = PQmakeEmptyPGresult(c, PGRES_TUPLES_OK);
	is_str(pgconn_error(&e, "CREATE_REPLICATION_SLOT", c, r),
	       "CREATE_REPLICATION_SLOT failed (unexpected result PGRES_TUPLES_OK, 0 rows, 0 "
	       "columns)",
	       "a result of the wrong shape is named, not an empty error");
	PQclear(r);
	PQfinish(c);
}

/* The value of keyword in c's options, or NULL. */
static char *
option(PGconn *c, const char *keyword)
{
	PQconninfoOption *opts = PQconninfo(c), *o;
	char *val = NULL;

	for (o = opts; o != NULL && o->keyword != NULL; o++)
		if (strcmp(o->keyword, keyword) == 0 && o->val != NULL)
			val = strdup(o->val);
	PQconninfoFree(opts);
	return val;
}

static void
check_option(PGconn *c, const char *keyword, const char *want, const char *what)
{
	char *got = option(c, keyword);

	if (want == NULL) {
		ok(got == NULL || *got == '\0', "%s: %s not set", what, keyword);
	} else {
		is_str(got, want, "%s: %s=%s", what, keyword, want);
	}
	free(got);
}

static void
test_keywords(void)
{
	/* Port 1: the connection is only started, never completed. */
	PGconn *c = pgconn_start("host=127.0.0.1 port=1 keepalives_idle=7",
	                         &(struct pgconn_opts){.replication = true});

	check_option(c, "fallback_application_name", "tailgated", "replication");
	check_option(c, "keepalives", "1", "replication");
	check_option(c, "keepalives_idle", "7", "replication (the conninfo's own wins)");
	check_option(c, "keepalives_interval", "10", "replication");
	check_option(c, "keepalives_count", "3", "replication");
	check_option(c, "client_encoding", "UTF8", "replication");
	check_option(c, "replication", "database", "replication");
	PQfinish(c);

	c = pgconn_open("host=127.0.0.1 port=1 client_encoding=LATIN1 connect_timeout=60",
	                &(struct pgconn_opts){.app_name = "tailgated --check",
	                                      .connect_timeout_s = 5,
	                                      .options = "-c statement_timeout=5000"});
	check_option(c, "fallback_application_name", "tailgated --check", "command");
	check_option(c, "keepalives_idle", "30", "command");
	check_option(c, "client_encoding", "UTF8", "command (tailgated's wins)");
	check_option(c, "connect_timeout", "5", "command (tailgated's wins)");
	check_option(c, "options", "-c statement_timeout=5000", "command");
	check_option(c, "replication", NULL, "command");
	PQfinish(c);
}

int
main(void)
{
	test_format();
	test_one_line();
	test_connection_failures();
	test_keywords();
	return tap_done();
}
