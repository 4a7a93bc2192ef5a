/*
 * pgoutput_capture.c - record a real pgoutput stream for test_pgoutput.
 *
 *   tests/pgoutput_capture CONNINFO OUTFILE
 *
 * Against a PostgreSQL 15 server with wal_level=logical (tests/lib/pg.sh
 * starts one), in the database CONNINFO names: creates the tables
 * cap_full (REPLICA IDENTITY FULL, a TOASTed column), cap_key (default
 * identity), cap_enum (a column of an enum type) and the publication
 * cap_pub; a temporary slot over a replication=database connection; then
 * runs the workload below and reads the stream with START_REPLICATION
 * (proto_version '1', messages 'true') until the last transaction's commit
 * and a primary keepalive answering our status update have arrived.  Every
 * CopyData message is written to OUTFILE as a 4-byte big-endian length and
 * the bytes.  tests/data/pgoutput_pg15.bin was made this way; test_pgoutput
 * checks both it and a fresh capture (tests/pgoutput_live.sh) against the
 * same expectations, so keep the workload and those in step.
 */
#include <libpq-fe.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pgoutput.h"

static const char *const setup_sql =
        "SET client_min_messages = warning;"
        "DROP PUBLICATION IF EXISTS cap_pub;"
        "DROP TABLE IF EXISTS cap_full, cap_key, cap_enum;"
        "DROP TYPE IF EXISTS cap_mood;"
        "CREATE TYPE cap_mood AS ENUM ('sad', 'ok', 'happy');"
        "CREATE TABLE cap_full (id int PRIMARY KEY, name text, amount numeric, doc jsonb, big "
        "text);"
        "ALTER TABLE cap_full REPLICA IDENTITY FULL;"
        "ALTER TABLE cap_full ALTER COLUMN big SET STORAGE EXTERNAL;"
        "CREATE TABLE cap_key (id int PRIMARY KEY, v text);"
        "CREATE TABLE cap_enum (id int PRIMARY KEY, mood cap_mood);"
        "CREATE PUBLICATION cap_pub FOR TABLE cap_full, cap_key, cap_enum;"
        "SELECT pg_replication_origin_drop('cap_origin') FROM pg_replication_origin "
        " WHERE roname = 'cap_origin';"
        "SELECT pg_replication_origin_create('cap_origin');";

/* One transaction per statement unless BEGIN'd.  The last one is the
 * TRUNCATE, whose commit ends the capture. */
static const char *const workload[] = {
        /* 1: two inserts, a NULL, a tab, a negative number, json, a TOASTed value */
        "INSERT INTO cap_full VALUES (1, 'one', 1.50, '{\"x\": 1}', NULL),"
        " (2, E'tab\\there', -3, '[1, 2]', repeat('x', 10000))",
        /* 2: update with the old row (FULL) */
        "UPDATE cap_full SET name = 'uno' WHERE id = 1",
        /* 3: update leaving the TOASTed column unchanged: 'u' in the new row */
        "UPDATE cap_full SET amount = 7 WHERE id = 2",
        /* 4: delete with the old row */
        "DELETE FROM cap_full WHERE id = 1",
        /* 5-8: default identity: no old row, then 'K' key-only rows */
        "INSERT INTO cap_key VALUES (10, 'k')",
        "UPDATE cap_key SET v = 'k2' WHERE id = 10",
        "UPDATE cap_key SET id = 11 WHERE id = 10",
        "DELETE FROM cap_key WHERE id = 11",
        /* 9: an enum column: a Type message before its Relation */
        "INSERT INTO cap_enum VALUES (1, 'happy')",
        /* 10: one transaction over two tables, with a transactional message */
        "BEGIN; INSERT INTO cap_full VALUES (3, 'three', 3, 'null', 'b');"
        " INSERT INTO cap_key VALUES (12, NULL);"
        " SELECT pg_logical_emit_message(true, 'tailgate', 'hello'); COMMIT",
        /* 11: a non-transactional message, outside any transaction */
        "SELECT pg_logical_emit_message(false, 'tailgate', 'now')",
        /* 12: a transaction carrying a replication origin: an Origin message */
        "SELECT pg_replication_origin_session_setup('cap_origin');"
        " BEGIN; SELECT pg_replication_origin_xact_setup('0/AB', now());"
        " INSERT INTO cap_key VALUES (13, 'from elsewhere'); COMMIT;"
        " SELECT pg_replication_origin_session_reset()",
        /* 13: truncate of two tables */
        "TRUNCATE cap_full, cap_key",
};
#define N_WORK (sizeof(workload) / sizeof(workload[0]))

static void
die(PGconn *c, const char *what)
{
	fprintf(stderr, "pgoutput_capture: %s: %s", what, c ? PQerrorMessage(c) : "\n");
	exit(1);
}

static void
exec_ok(PGconn *c, const char *sql)
{
	PGresult *r = PQexec(c, sql);
	ExecStatusType st = PQresultStatus(r);

	if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
		fprintf(stderr, "pgoutput_capture: %s\n  %s", sql, PQerrorMessage(c));
		exit(1);
	}
	PQclear(r);
}

static void
put_record(FILE *f, const char *buf, int len)
{
	uint8_t h[4] = {(uint8_t)(len >> 24), (uint8_t)(len >> 16), (uint8_t)(len >> 8),
	                (uint8_t)len};

	if (fwrite(h, 1, 4, f) != 4 || fwrite(buf, 1, (size_t)len, f) != (size_t)len) {
		perror("pgoutput_capture: write");
		exit(1);
	}
}

int
main(int argc, char **argv)
{
	char err[256];
	char conninfo[1024];

	if (argc != 3) {
		fprintf(stderr, "usage: pgoutput_capture CONNINFO OUTFILE\n");
		return 2;
	}
	PGconn *sql = PQconnectdb(argv[1]);
	if (PQstatus(sql) != CONNECTION_OK)
		die(sql, "connect");
	exec_ok(sql, setup_sql);

	snprintf(conninfo, sizeof(conninfo), "%s replication=database", argv[1]);
	PGconn *repl = PQconnectdb(conninfo);
	if (PQstatus(repl) != CONNECTION_OK)
		die(repl, "replication connect");
	exec_ok(repl,
	        "CREATE_REPLICATION_SLOT cap_slot TEMPORARY LOGICAL pgoutput (SNAPSHOT 'nothing')");

	for (size_t i = 0; i < N_WORK; i++)
		exec_ok(sql, workload[i]);
	PQfinish(sql);

	PGresult *r =
	        PQexec(repl, "START_REPLICATION SLOT cap_slot LOGICAL 0/0 (proto_version '1', "
	                     "publication_names 'cap_pub', messages 'true')");
	if (PQresultStatus(r) != PGRES_COPY_BOTH)
		die(repl, "START_REPLICATION");
	PQclear(r);

	FILE *out = fopen(argv[2], "wb");
	if (!out) {
		perror(argv[2]);
		return 1;
	}
	struct pgo_decoder dec = {0};
	int truncates = 0;
	bool asked = false, answered = false;
	time_t deadline = time(NULL) + 30;
	uint64_t last_end = 0;

	while (!(truncates && answered)) {
		char *buf;
		int n = PQgetCopyData(repl, &buf, 1);

		if (n == 0) {
			struct pollfd p = {.fd = PQsocket(repl), .events = POLLIN};
			if (time(NULL) > deadline) {
				fprintf(stderr,
				        "pgoutput_capture: timed out waiting for the stream\n");
				return 1;
			}
			poll(&p, 1, 1000);
			if (!PQconsumeInput(repl))
				die(repl, "read");
			continue;
		}
		if (n < 0)
			die(repl, "stream ended");
		put_record(out, buf, n);

		struct pgo_copy cp;
		struct pgo_msg m;
		if (pgo_parse_copy(buf, (size_t)n, &cp, err, sizeof(err)) < 0) {
			fprintf(stderr, "pgoutput_capture: %s\n", err);
			return 1;
		}
		if (cp.kind == PGO_COPY_KEEPALIVE) {
			if (asked)
				answered = true;
		} else {
			if (pgo_decode(&dec, cp.data, cp.len, &m, err, sizeof(err)) < 0) {
				fprintf(stderr, "pgoutput_capture: %s\n", err);
				return 1;
			}
			if (m.type == PGO_TRUNCATE)
				truncates++;
			if (m.type == PGO_COMMIT)
				last_end = m.u.commit.end_lsn;
		}
		PQfreemem(buf);
		if (truncates && !asked && last_end) {
			/* Confirm everything and ask for an answer: the server sends a
			 * keepalive with replyRequested = 0 back. */
			uint8_t st[PGO_STATUS_LEN];
			pgo_build_status(st, last_end, last_end, last_end, pgo_now_pg_us(), true);
			if (PQputCopyData(repl, (const char *)st, PGO_STATUS_LEN) != 1 ||
			    PQflush(repl) != 0)
				die(repl, "status update");
			asked = true;
		}
	}
	if (fclose(out) != 0) {
		perror(argv[2]);
		return 1;
	}
	pgo_decoder_free(&dec);
	PQfinish(repl);
	return 0;
}
