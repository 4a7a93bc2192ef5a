/*
 * source_pg.c - the PostgreSQL source: one table (optionally some of its
 * columns and a row filter) streamed through logical replication with the
 * built-in pgoutput plugin (source.h, feed.h).
 *
 * A session, all of it non-blocking on the daemon's one thread:
 *
 *   1. a regular connection reads the table's columns and replica
 *      identity from the catalog, hands the columns to the feed
 *      (feed_set_columns), and creates or updates the publication
 *      tailgate_FEED FOR TABLE ONLY t [WHERE (filter)] (a partitioned
 *      table with publish_via_partition_root); a filter that reads a
 *      column outside the replica identity is refused by a guard in the
 *      same transaction (source_pg_where_guard), so no publication that
 *      would block the application's UPDATE and DELETE is left behind;
 *   2. resume or snapshot.  With a permanent slot that exists and a feed
 *      that holds state (feed_can_resume), go straight to 4 from
 *      feed_frontier().  Otherwise (no state, or a temporary slot, which
 *      died with the last connection) a permanent slot is dropped and:
 *   3. a replication connection (replication=database) runs
 *      CREATE_REPLICATION_SLOT ... LOGICAL pgoutput (SNAPSHOT 'export');
 *      the regular connection reads the table inside that exported
 *      snapshot (REPEATABLE READ, SET TRANSACTION SNAPSHOT), so the rows
 *      are exactly the state at the slot's consistent point, and the
 *      stream starts right after it: a row written meanwhile appears
 *      once, in the snapshot or in the stream, never both, never neither.
 *      The snapshot is published at cursor consistent_point - 1 (every
 *      streamed commit is at or after the consistent point).  When the
 *      feed already held state, feed.c publishes only the difference;
 *   4. START_REPLICATION SLOT s LOGICAL lsn (proto_version '1',
 *      publication_names 'tailgate_FEED'); every transaction becomes one
 *      batch at its commit LSN: INSERT +1, DELETE -1 of the old row,
 *      UPDATE -1 old +1 new (unchanged TOASTed values taken from the old
 *      row), TRUNCATE a snapshot at the commit with only the rows the
 *      transaction wrote after it (feed_snapshot_begin: the feed deletes
 *      every held row not mentioned).  Commit calls
 *      feed_progress(commit_lsn + 1).
 *
 * Standby status updates go out every second (and when the server asks),
 * confirming the end of the last commit handed to the feed, or the
 * server's WAL end when idle between transactions, so the server can
 * recycle WAL; every 10 s one asks for a reply, and 30 s of silence ends
 * the session.
 *
 * UPDATE and DELETE need the old row's every column: REPLICA IDENTITY
 * FULL on the table (a warning at start when it is not).  A change that
 * arrives without it ends the session and the next one takes a fresh
 * snapshot (published as a difference), so the feed stays exact.
 *
 * Columns.  The publication has no column list (with REPLICA IDENTITY
 * FULL, PostgreSQL 15 refuses UPDATE and DELETE on a table whose
 * publication lists only some columns); the source projects the
 * configured columns itself, in the order the configuration lists them.
 * A row filter (where =) is the publication's, and the snapshot's WHERE;
 * it may read only the replica identity's columns (every column with
 * FULL), as PostgreSQL refuses UPDATE and DELETE otherwise.
 * Text values are encoded by column kind (encode.h); both connections use
 * the same conninfo, client_encoding UTF8 and the pinned settings that
 * shape text (PINNED_OPTIONS: TimeZone UTC, DateStyle ISO, ...), so the
 * snapshot's text and the stream's are the same bytes in every session
 * (the database must be UTF8).
 *
 * A partitioned table is published via its root (publish_via_partition_root)
 * and read without ONLY; a feed of all columns starts over when a Relation
 * message brings another column count (ADD COLUMN).  A commit the feed
 * refuses makes the next session take a snapshot: a permanent slot would
 * otherwise send the same commit again, forever.
 *
 * The table renamed mid-stream (a Relation message with its OID and
 * another name) ends the session with an error naming both, so its rows
 * are neither published under the configured name nor skipped; a
 * permanent slot the server invalidated (wal_status 'lost') is dropped
 * and a new snapshot taken, rather than START_REPLICATION failing.
 * The table dropped, or dropped and created again under its name, is not
 * in the stream at all (DDL is not decoded; the table just leaves the
 * publication): the daemon's watch (cleanup.h) resolves the configured
 * name to its OID every slot_check_ms, and a session whose table's OID is
 * gone, renamed or replaced ends with an error; the next one fails on the
 * missing table (a permanent error) or takes a new snapshot of the new one.
 *
 * Slot and publication names: slot = NAME, or tailgate_FEED (lower-cased,
 * '-' as '_'); a temporary slot gets a random suffix so two hosts on one
 * database do not collide.  The publication is tailgate_FEED.
 *
 * Never harm the application: a table without a replica identity (no
 * primary key and REPLICA IDENTITY DEFAULT, or NOTHING) is refused before
 * anything is created, since publishing it would make the application's
 * UPDATE and DELETE fail (publishable()).  A feed without a permanent slot
 * drops its publication when it stops (feed removed, daemon stopped),
 * unless another host's slot streams from it.
 */
#include "source_pg.h"

#include "buf.h"
#include "cleanup.h"
#include "conf.h"
#include "encode.h"
#include "feed.h"
#include "log.h"
#include "pgconn.h"
#include "pgoutput.h"
#include "xmalloc.h"
#include "source.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#define STATUS_INTERVAL_MS 1000
#define REPLY_INTERVAL_MS 10000
#define SILENCE_MS 30000
#define STEP_TIMEOUT_MS 60000 /* connecting, and each setup command */
#define NAME_MAX_PG 63

enum pg_state {
	ST_IDLE = 0,
	ST_SQL_CONNECT,  /* regular connection */
	ST_META,         /* catalog: columns, identity, publication, slot */
	ST_PUBLICATION,  /* CREATE or ALTER PUBLICATION */
	ST_DROP_SLOT,    /* a permanent slot we cannot resume from */
	ST_REPL_CONNECT, /* replication connection */
	ST_IDENTIFY,     /* IDENTIFY_SYSTEM: which history the LSNs belong to */
	ST_CREATE_SLOT,
	ST_SNAP_BEGIN, /* BEGIN ... SET TRANSACTION SNAPSHOT */
	ST_SNAP_ROWS,  /* SELECT, single-row mode */
	ST_SNAP_COMMIT,
	ST_START, /* START_REPLICATION */
	ST_STREAM
};

struct pgcol {
	char *name;
	char *type; /* type name shown to clients (a domain's base type) */
	enum coltype_kind kind;
	int relidx; /* index in the Relation message's columns, -1 unknown */
};

struct pgsrc {
	struct source *src;
	char *feedname; /* a copy: a reload frees the configuration it came from */
	enum pg_state st;
	PGconn *sql;
	PGconn *repl;
	uint64_t step_deadline;
	PGresult *pending; /* results of the query in flight so far (collect) */

	/* names */
	char slot[NAME_MAX_PG + 1];
	char pub[NAME_MAX_PG + 1];
	bool permanent;
	char *qualname; /* "schema"."table", quoted */
	char *nspname, *relname;

	/* columns */
	struct pgcol *cols;
	size_t ncols;
	enum coltype_kind *kinds;
	char replident;
	bool partitioned;   /* relkind 'p': its rows live in its partitions */
	bool need_snapshot; /* next session must not resume */
	bool pub_exists;
	bool created; /* this process created or updated the publication */
	bool slot_exists;
	uint32_t table_oid; /* the table's OID in the catalog this session */
	uint64_t checks;    /* the watch's checks begun when the catalog was read */

	/* snapshot */
	char snapname[128];
	uint64_t consistent_point;
	uint64_t snap_rows;

	/* stream */
	uint32_t relid; /* our table's relation OID in the stream; 0 unknown */
	bool rel_known;
	bool in_txn;
	bool skip_txn; /* a transaction already applied (resent on resume) */
	uint64_t txn_lsn;
	bool txn_mine;      /* this transaction touched our table */
	uint64_t confirmed; /* what status updates confirm */
	uint64_t last_status_ms, last_reply_ms, last_recv_ms;
	bool status_due;
	struct pgo_decoder dec;
	struct bbuf row;
	const char **vals;
	size_t *lens;
	uint64_t txns, changes;
};

/* ---- small helpers ------------------------------------------------------------------- */

static void
notice_to_log(void *arg, const char *msg)
{
	struct pgsrc *s = arg;
	size_t n = strlen(msg);

	while (n > 0 && msg[n - 1] == '\n')
		n--;
	log_debug("feed=%s: server: %.*s", s->feedname, (int)n, msg);
}

/* A name PostgreSQL accepts as a slot: [a-z0-9_], at most 63 bytes. */
static void
slot_name_from(const char *prefix, const char *feed, const char *suffix, char *out, size_t outlen)
{
	size_t n = 0;

	for (const char *p = prefix; *p && n + 1 < outlen; p++)
		out[n++] = *p;
	for (const char *p = feed; *p && n + 1 < outlen; p++) {
		unsigned char c = (unsigned char)*p;
		out[n++] = isalnum(c) ? (char)tolower(c) : '_';
	}
	size_t sl = strlen(suffix);
	if (n + sl + 1 > outlen)
		n = outlen - sl - 1;
	memcpy(out + n, suffix, sl + 1);
}

static void
free_cols(struct pgsrc *s)
{
	for (size_t i = 0; i < s->ncols; i++) {
		free(s->cols[i].name);
		free(s->cols[i].type);
	}
	free(s->cols);
	free(s->kinds);
	free(s->vals);
	free(s->lens);
	s->cols = NULL;
	s->kinds = NULL;
	s->vals = NULL;
	s->lens = NULL;
	s->ncols = 0;
}

/* Log a failure on c (pgconn.h's format: r's SQLSTATE and message, or
 * c's own); returns SOURCE_RETRY. */
static enum source_status
fail_result(struct pgsrc *s, const char *what, PGconn *c, const PGresult *r)
{
	return source_fail_pg(s->src, what, c, r);
}

static void
want(struct pgsrc *s, PGconn *c, short events)
{
	s->src->fd = c ? PQsocket(c) : -1;
	s->src->events = events;
}

/* After sending a query: flush what we can, poll for more. */
static enum source_status
sent(struct pgsrc *s, PGconn *c, enum pg_state next, uint64_t now)
{
	short events;

	if (pgconn_flush(c, &events) < 0)
		return fail_result(s, "sending", c, NULL);
	s->st = next;
	s->step_deadline = now + STEP_TIMEOUT_MS;
	want(s, c, events);
	return SOURCE_OK;
}

/* pgconn_collect, polling for more when the query is not complete. */
static int
collect(struct pgsrc *s, PGconn *c, PGresult **res)
{
	int n = pgconn_collect(c, &s->pending, res);

	if (n == 0)
		want(s, c, POLLIN);
	return n;
}

static bool
result_ok(const PGresult *r, ExecStatusType want_st)
{
	return r != NULL && PQresultStatus(r) == want_st;
}

/*
 * The settings that shape values' text, pinned on both connections: the
 * snapshot's SELECT and the walsender's output functions must print a
 * value as the same bytes, in this session and in every later one (the
 * state holds rows by their text; a retraction printed otherwise would
 * not find its row), and on every host.  A database or role default
 * (ALTER DATABASE ... SET TimeZone) would otherwise change them between
 * sessions.  Appended to the conninfo's own options (or PGOPTIONS), so
 * these win.
 */
#define PINNED_OPTIONS                                                                             \
	"-c TimeZone=UTC -c DateStyle=ISO -c IntervalStyle=postgres -c bytea_output=hex "          \
	"-c extra_float_digits=1 -c lc_monetary=C"

static char *
pinned_options(const char *conninfo)
{
	return pgconn_options_with(conninfo, PINNED_OPTIONS);
}

static PGconn *
start_connect(struct pgsrc *s, bool replication)
{
	char *options = pinned_options(s->src->conf->conninfo);
	const struct pgconn_opts opts = {.replication = replication, .options = options};
	PGconn *c = pgconn_start(s->src->conf->conninfo, &opts);

	free(options);

	if (PQstatus(c) == CONNECTION_BAD) {
		fail_result(s, replication ? "replication connection" : "connection", c, NULL);
		PQfinish(c);
		return NULL;
	}
	PQsetNoticeProcessor(c, notice_to_log, s);
	return c;
}

/* Drive the connecting c; 1 connected, 0 in progress, -1 failed. */
static int
poll_connect(struct pgsrc *s, PGconn *c)
{
	short events;
	enum pgconn_poll p = pgconn_poll(c, &events);

	if (p == PGCONN_WAIT)
		want(s, c, events);
	return (int)p;
}

/* ---- session steps ----------------------------------------------------------------- */

static enum source_status send_meta(struct pgsrc *s, uint64_t now);
static enum source_status after_meta(struct pgsrc *s, PGresult *r, uint64_t now);
static enum source_status next_after_publication(struct pgsrc *s, uint64_t now);
static enum source_status send_create_slot(struct pgsrc *s, uint64_t now);
static enum source_status send_start(struct pgsrc *s, uint64_t start_lsn, uint64_t now);

/*
 * Drop this feed's publication, tailgate_FEED, unless a replication slot
 * other than this session's is streaming from it (another host following
 * the same feed of the same database with a temporary slot, whose slot is
 * tailgate_FEED_XXXXXXXX, or a permanent one named tailgate_FEED).  A
 * short blocking session of its own: this runs when a feed stops, where
 * the event loop has nothing else to wait for on this feed; a database
 * that does not answer within 5 s keeps the publication, and says so.
 */
static void
pgsrc_drop_publication(struct pgsrc *s)
{
	const struct pgconn_opts opts = {.connect_timeout_s = 5,
	                                 .options = "-c statement_timeout=5000"};
	char pattern[sizeof(s->pub) + 16];
	const char *params[3] = {s->pub, pattern, s->slot};
	PGconn *c = pgconn_open(s->src->conf->conninfo, &opts);
	struct pgconn_error e;
	PGresult *r = NULL;

	snprintf(pattern, sizeof(pattern), "%s\\_%%", s->pub);
	if (PQstatus(c) != CONNECTION_OK) {
		log_warning("feed=%s: cannot drop publication %s: %s; drop it by hand or with "
		            "tailgated --cleanup",
		            s->feedname, s->pub, pgconn_error(&e, "connecting", c, NULL));
		goto out;
	}
	r = PQexecParams(c,
	                 "SELECT count(*) FROM pg_replication_slots "
	                 "WHERE active AND (slot_name = $1 OR slot_name LIKE $2) "
	                 "  AND slot_name <> $3",
	                 3, NULL, params, NULL, NULL, 0);
	if (PQresultStatus(r) != PGRES_TUPLES_OK) {
		log_warning("feed=%s: cannot drop publication %s: %s", s->feedname, s->pub,
		            pgconn_error(&e, "counting the slots that stream from it", c, r));
		goto out;
	}
	if (strcmp(PQgetvalue(r, 0, 0), "0") != 0) {
		log_info("feed=%s: publication %s kept: %s other slot(s) stream from it",
		         s->feedname, s->pub, PQgetvalue(r, 0, 0));
		goto out;
	}
	PQclear(r);
	char *id = PQescapeIdentifier(c, s->pub, strlen(s->pub));
	if (id == NULL)
		fatalx("out of memory");
	char sql[sizeof(s->pub) * 2 + 64];
	snprintf(sql, sizeof(sql), "DROP PUBLICATION IF EXISTS %s", id);
	PQfreemem(id);
	r = PQexec(c, sql);
	if (PQresultStatus(r) != PGRES_COMMAND_OK)
		log_warning("feed=%s: %s", s->feedname, pgconn_error(&e, sql, c, r));
	else
		log_info("feed=%s: dropped publication %s", s->feedname, s->pub);
out:
	PQclear(r);
	PQfinish(c);
}

static enum source_status
send_meta(struct pgsrc *s, uint64_t now)
{
	const struct conf_feed *cf = s->src->cfeed;
	const char *params[3] = {cf->table, s->pub, s->slot};

	/* One row per column (attnum order, generated columns left out: pgoutput
	 * does not send them) with its type, a domain's (or a domain over a
	 * domain's) base type, with the table's identity and names, whether the
	 * publication and the slot exist, the database encoding, whether the
	 * table has a primary key, its kind (a partitioned table holds no
	 * rows itself), and the slot's wal_status ('lost': invalidated). */
	static const char *const q =
	        "SELECT c.oid, c.relreplident, n.nspname, c.relname, a.attname, "
	        "       bt.typname, bt.oid, "
	        "       EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $2), "
	        "       EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $3), "
	        "       pg_encoding_to_char(d.encoding), "
	        "       EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND "
	        "i.indisprimary), "
	        "       c.relkind, "
	        "       (SELECT wal_status FROM pg_replication_slots WHERE slot_name = $3) "
	        "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
	        "JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped "
	        "     AND a.attgenerated = '' "
	        "JOIN LATERAL (WITH RECURSIVE dom(oid, typtype, typbasetype) AS ("
	        "      SELECT t.oid, t.typtype, t.typbasetype FROM pg_type t "
	        "      WHERE t.oid = a.atttypid "
	        "    UNION ALL "
	        "      SELECT t.oid, t.typtype, t.typbasetype FROM dom "
	        "      JOIN pg_type t ON t.oid = dom.typbasetype WHERE dom.typtype = 'd') "
	        "    SELECT oid FROM dom WHERE typtype <> 'd') base ON true "
	        "JOIN pg_type bt ON bt.oid = base.oid "
	        "JOIN pg_database d ON d.datname = current_database() "
	        "WHERE c.oid = $1::regclass "
	        "ORDER BY a.attnum";

	if (!PQsendQueryParams(s->sql, q, 3, NULL, params, NULL, NULL, 0))
		return fail_result(s, "catalog query", s->sql, NULL);
	return sent(s, s->sql, ST_META, now);
}

/* The configured column names, split on commas, spaces and quotes trimmed. */
static char **
split_columns(const char *list, size_t *n)
{
	char **out = NULL;
	size_t cnt = 0;
	const char *p = list;

	while (*p) {
		const char *start, *end;

		while (*p == ' ' || *p == '\t' || *p == ',')
			p++;
		if (!*p)
			break;
		start = p;
		if (*p == '"') {
			start = ++p;
			while (*p && *p != '"')
				p++;
			end = p;
			if (*p)
				p++;
		} else {
			while (*p && *p != ',')
				p++;
			end = p;
			while (end > start && (end[-1] == ' ' || end[-1] == '\t'))
				end--;
		}
		out = realloc(out, (cnt + 1) * sizeof(*out));
		if (out == NULL)
			fatalx("out of memory");
		out[cnt] = strndup(start, (size_t)(end - start));
		if (out[cnt] == NULL)
			fatalx("out of memory");
		cnt++;
	}
	*n = cnt;
	return out;
}

const char *
source_pg_unpublishable(char replident, bool has_pk)
{
	if (replident == 'n')
		return "REPLICA IDENTITY NOTHING";
	if (replident == 'd' && !has_pk)
		return "no primary key and REPLICA IDENTITY DEFAULT";
	return NULL;
}

const char *
source_pg_not_table(char relkind)
{
	switch (relkind) {
	case 'r':
	case 'p':
		return NULL;
	case 'v':
		return "a view";
	case 'm':
		return "a materialized view";
	case 'f':
		return "a foreign table";
	case 'S':
		return "a sequence";
	default:
		return "not a table";
	}
}

char *
source_pg_where_guard(const char *pub_literal)
{
	/* A publication's filter is stored as a node tree: its columns are
	 * its Vars' varattno (a filter reads only its own table). */
	static const char fmt[] =
	        "DO $tailgate$ DECLARE bad text; tbl text; BEGIN "
	        "SELECT string_agg(DISTINCT quote_ident(a.attname), ', '), "
	        "       min(c.oid::regclass::text) INTO bad, tbl "
	        "FROM pg_publication p JOIN pg_publication_rel pr ON pr.prpubid = p.oid "
	        "JOIN pg_class c ON c.oid = pr.prrelid "
	        "CROSS JOIN LATERAL regexp_matches(pr.prqual::text, ':varattno (\\d+)', "
	        "'g') m "
	        "JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = m[1]::int "
	        "WHERE p.pubname = %s AND c.relreplident IN ('d', 'i') "
	        "  AND NOT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid "
	        "    AND ((c.relreplident = 'd' AND i.indisprimary) "
	        "      OR (c.relreplident = 'i' AND i.indisreplident)) "
	        "    AND a.attnum = ANY (i.indkey)); "
	        "IF bad IS NOT NULL THEN RAISE EXCEPTION USING ERRCODE = '55000', "
	        "MESSAGE = format('" SOURCE_PG_WHERE_REFUSED " on %%s: it reads %%s, not in "
	        "the table''s replica identity, so publishing it would make the "
	        "application''s UPDATE and DELETE fail; nothing was created. Fix: ALTER "
	        "TABLE %%s REPLICA IDENTITY FULL', tbl, bad, tbl); END IF; END $tailgate$";
	int n = snprintf(NULL, 0, fmt, pub_literal);
	char *sql = xcalloc((size_t)n + 1, 1);

	snprintf(sql, (size_t)n + 1, fmt, pub_literal);
	return sql;
}

/*
 * Can the table be published without harming the application?  A table in
 * a publication that publishes UPDATE and DELETE must have a replica
 * identity: without one (REPLICA IDENTITY NOTHING, or DEFAULT and no
 * primary key) PostgreSQL refuses the application's own UPDATE and DELETE
 * on it ("cannot update table ... because it does not have a replica
 * identity and publishes updates").  Such a feed is refused before
 * anything is created, with the fix in the message; a publication of ours
 * left from an earlier run is dropped, so the application's writes work
 * again.
 */
static bool
publishable(struct pgsrc *s, bool has_pk)
{
	const char *why = source_pg_unpublishable(s->replident, has_pk);

	if (why == NULL)
		return true;
	source_fail(s->src, true,
	            "refusing table %s.%s: it has %s, so publishing it would make the "
	            "application's UPDATE and DELETE on it fail; nothing was created. Fix: ALTER "
	            "TABLE %s.%s REPLICA IDENTITY FULL (or add a primary key)",
	            s->nspname, s->relname, why, s->nspname, s->relname);
	if (s->pub_exists)
		pgsrc_drop_publication(s);
	return false;
}

/* The table's names and identity from the catalog's first row; false
 * (logged) when it cannot be published. */
static bool
meta_table(struct pgsrc *s, const PGresult *r)
{
	s->replident = PQgetvalue(r, 0, 1)[0];
	free(s->nspname);
	free(s->relname);
	s->nspname = xstrdup(PQgetvalue(r, 0, 2));
	s->relname = xstrdup(PQgetvalue(r, 0, 3));
	s->pub_exists = strcmp(PQgetvalue(r, 0, 7), "t") == 0;
	s->slot_exists = strcmp(PQgetvalue(r, 0, 8), "t") == 0;
	s->table_oid = (uint32_t)strtoul(PQgetvalue(r, 0, 0), NULL, 10);
	/* After the catalog answered: see table_gone. */
	s->checks = cleanup_watch_follow(s->feedname, s->table_oid);
	/* An invalidated slot (wal_status 'lost': the server removed WAL it
	 * still needed, max_slot_wal_keep_size; from PostgreSQL 16 also other
	 * invalidations, e.g. on a standby) can never stream again: START_REPLICATION
	 * would fail every time.  Drop it and take a new snapshot. */
	if (s->slot_exists && strcmp(PQgetvalue(r, 0, 12), "lost") == 0) {
		log_error("feed=%s: replication slot %s was invalidated by the server (wal_status "
		          "lost: usually WAL it still needed was removed, see "
		          "max_slot_wal_keep_size); the changes since the feed's position cannot "
		          "be streamed, so the slot is dropped and a new snapshot taken",
		          s->feedname, s->slot);
		s->need_snapshot = true;
	}
	s->partitioned = PQgetvalue(r, 0, 11)[0] == 'p';
	const char *not_table = source_pg_not_table(PQgetvalue(r, 0, 11)[0]);
	if (not_table != NULL) {
		source_fail(s->src, true, "refusing %s.%s: it is %s, not a table: %s", s->nspname,
		            s->relname, not_table, SOURCE_PG_TABLES_ONLY);
		return false;
	}
	if (!publishable(s, strcmp(PQgetvalue(r, 0, 10), "t") == 0))
		return false;
	if (strcmp(PQgetvalue(r, 0, 9), "UTF8") != 0 &&
	    strcmp(PQgetvalue(r, 0, 9), "SQL_ASCII") != 0)
		log_warning(
		        "feed=%s: the database encoding is %s; tailgate expects UTF8 (values in "
		        "the stream are not converted)",
		        s->feedname, PQgetvalue(r, 0, 9));

	char *nsp = PQescapeIdentifier(s->sql, s->nspname, strlen(s->nspname));
	char *rel = PQescapeIdentifier(s->sql, s->relname, strlen(s->relname));
	if (!nsp || !rel)
		fatalx("out of memory");
	free(s->qualname);
	s->qualname = xcalloc(strlen(nsp) + strlen(rel) + 2, 1);
	sprintf(s->qualname, "%s.%s", nsp, rel);
	PQfreemem(nsp);
	PQfreemem(rel);
	return true;
}

/* The feed's columns: all, or the configured ones in their order; false
 * (logged) when one is missing. */
static bool
meta_columns(struct pgsrc *s, const PGresult *r)
{
	const struct conf_feed *cf = s->src->cfeed;
	int nrows = PQntuples(r);

	free_cols(s);
	size_t nwant = 0;
	char **wantcols = cf->columns ? split_columns(cf->columns, &nwant) : NULL;
	size_t n = cf->columns ? nwant : (size_t)nrows;
	s->cols = xcalloc(n, sizeof(*s->cols));
	for (size_t i = 0; i < n; i++) {
		int row = -1;
		if (!cf->columns) {
			row = (int)i;
		} else {
			for (int k = 0; k < nrows; k++)
				if (strcmp(PQgetvalue(r, k, 4), wantcols[i]) == 0)
					row = k;
			if (row < 0) {
				source_fail(s->src, true, "table %s has no column \"%s\"",
				            s->qualname, wantcols[i]);
				for (size_t k = 0; k < nwant; k++)
					free(wantcols[k]);
				free(wantcols);
				s->ncols = i;
				return false;
			}
		}
		s->cols[i].name = xstrdup(PQgetvalue(r, row, 4));
		s->cols[i].type = xstrdup(PQgetvalue(r, row, 5));
		s->cols[i].kind =
		        coltype_kind_of_oid((uint32_t)strtoul(PQgetvalue(r, row, 6), NULL, 10));
		s->cols[i].relidx = -1;
		s->ncols = i + 1;
	}
	for (size_t k = 0; k < nwant; k++)
		free(wantcols[k]);
	free(wantcols);
	if (s->ncols == 0) {
		source_fail(s->src, true, "no columns configured");
		return false;
	}
	return true;
}

/* Hand the columns to the feed; a new column set needs a new snapshot. */
static enum source_status
meta_to_feed(struct pgsrc *s)
{
	s->kinds = xcalloc(s->ncols, sizeof(*s->kinds));
	s->vals = xcalloc(s->ncols, sizeof(*s->vals));
	s->lens = xcalloc(s->ncols, sizeof(*s->lens));
	struct feed_column *fc = xcalloc(s->ncols, sizeof(*fc));
	for (size_t i = 0; i < s->ncols; i++) {
		s->kinds[i] = s->cols[i].kind;
		fc[i] = (struct feed_column){s->cols[i].name, s->cols[i].type, s->cols[i].kind};
	}
	enum feed_columns_status cs = feed_set_columns(s->src->feed, fc, s->ncols);
	free(fc);
	if (cs == FEED_COLUMNS_ERR)
		return SOURCE_RETRY;
	if (cs == FEED_COLUMNS_NEW)
		s->need_snapshot = true;
	if (s->replident != 'f')
		log_warning("feed=%s: %s has REPLICA IDENTITY %s, not FULL: an UPDATE or DELETE "
		            "will force a new snapshot (ALTER TABLE %s REPLICA IDENTITY FULL)",
		            s->feedname, s->qualname,
		            s->replident == 'd'   ? "DEFAULT"
		            : s->replident == 'n' ? "NOTHING"
		                                  : "USING INDEX",
		            s->qualname);
	return SOURCE_OK;
}

/* The publication, created or brought in line with the configuration. */
static enum source_status
send_publication(struct pgsrc *s, uint64_t now)
{
	const struct conf_feed *cf = s->src->cfeed;
	struct bbuf q = {0};
	char *pubid = PQescapeIdentifier(s->sql, s->pub, strlen(s->pub));

	if (!pubid)
		fatalx("out of memory");
	if (s->pub_exists)
		bbuf_adds(&q, "ALTER PUBLICATION ");
	else
		bbuf_adds(&q, "CREATE PUBLICATION ");
	bbuf_adds(&q, pubid);
	bbuf_adds(&q, s->pub_exists ? " SET TABLE ONLY " : " FOR TABLE ONLY ");
	bbuf_adds(&q, s->qualname);
	if (cf->where) {
		bbuf_adds(&q, " WHERE (");
		bbuf_adds(&q, cf->where);
		bbuf_adds(&q, ")");
	}
	/* A partitioned table's changes are its partitions': published as the
	 * root's (its OID, name and columns), or the Relation messages would
	 * name partitions this feed does not follow.  Only for one: the option
	 * is PostgreSQL 13's (as publishing a partitioned table is) and
	 * changes nothing for other tables. */
	if (!s->pub_exists) {
		bbuf_adds(&q, " WITH (publish = 'insert, update, delete, truncate'");
		bbuf_adds(&q, s->partitioned ? ", publish_via_partition_root = true)" : ")");
	} else if (s->partitioned) {
		bbuf_adds(&q, "; ALTER PUBLICATION ");
		bbuf_adds(&q, pubid);
		bbuf_adds(&q, " SET (publish_via_partition_root = true)");
	}
	/* One simple query is one transaction: a filter the guard refuses
	 * leaves no publication behind. */
	if (cf->where && s->replident != 'f') {
		char *lit = PQescapeLiteral(s->sql, s->pub, strlen(s->pub));
		if (!lit)
			fatalx("out of memory");
		char *guard = source_pg_where_guard(lit);
		bbuf_adds(&q, "; ");
		bbuf_adds(&q, guard);
		free(guard);
		PQfreemem(lit);
	}
	bbuf_add(&q, "", 1);
	PQfreemem(pubid);
	int ok = PQsendQuery(s->sql, q.p);
	bbuf_free(&q);
	if (!ok)
		return fail_result(s, "publication", s->sql, NULL);
	return sent(s, s->sql, ST_PUBLICATION, now);
}

/* The catalog query's answer: the table, its columns to the feed, then
 * the publication. */
static enum source_status
after_meta(struct pgsrc *s, PGresult *r, uint64_t now)
{
	enum source_status st;

	if (!result_ok(r, PGRES_TUPLES_OK) || PQnfields(r) != 13)
		return fail_result(s, "reading the catalog", s->sql, r);
	if (PQntuples(r) == 0)
		return source_fail(s->src, true, "table %s has no columns", s->src->cfeed->table);
	if (!meta_table(s, r) || !meta_columns(s, r))
		return SOURCE_RETRY;
	if ((st = meta_to_feed(s)) != SOURCE_OK)
		return st;
	return send_publication(s, now);
}

static enum source_status
next_after_publication(struct pgsrc *s, uint64_t now)
{
	if (s->permanent && s->slot_exists && !s->need_snapshot && feed_can_resume(s->src->feed)) {
		log_info("feed=%s: resuming slot %s at %" PRIu64, s->feedname, s->slot,
		         feed_frontier(s->src->feed));
		s->repl = start_connect(s, true);
		if (!s->repl)
			return SOURCE_RETRY;
		s->st = ST_REPL_CONNECT;
		s->step_deadline = now + STEP_TIMEOUT_MS;
		want(s, s->repl, POLLOUT);
		return SOURCE_OK;
	}
	if (s->permanent && s->slot_exists) {
		const char *params[1] = {s->slot};
		log_info("feed=%s: dropping slot %s to take a new snapshot", s->feedname, s->slot);
		if (!PQsendQueryParams(s->sql, "SELECT pg_drop_replication_slot($1)", 1, NULL,
		                       params, NULL, NULL, 0))
			return fail_result(s, "dropping the slot", s->sql, NULL);
		return sent(s, s->sql, ST_DROP_SLOT, now);
	}
	s->need_snapshot = true;
	s->repl = start_connect(s, true);
	if (!s->repl)
		return SOURCE_RETRY;
	s->st = ST_REPL_CONNECT;
	s->step_deadline = now + STEP_TIMEOUT_MS;
	want(s, s->repl, POLLOUT);
	return SOURCE_OK;
}

static enum source_status
send_create_slot(struct pgsrc *s, uint64_t now)
{
	char q[256];

	snprintf(q, sizeof(q),
	         "CREATE_REPLICATION_SLOT \"%s\" %sLOGICAL pgoutput (SNAPSHOT 'export')", s->slot,
	         s->permanent ? "" : "TEMPORARY ");
	if (!PQsendQuery(s->repl, q))
		return fail_result(s, "CREATE_REPLICATION_SLOT", s->repl, NULL);
	return sent(s, s->repl, ST_CREATE_SLOT, now);
}

static enum source_status
send_snapshot_begin(struct pgsrc *s, uint64_t now)
{
	char q[256];

	snprintf(q, sizeof(q),
	         "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT '%s'",
	         s->snapname);
	if (!PQsendQuery(s->sql, q))
		return fail_result(s, "BEGIN", s->sql, NULL);
	return sent(s, s->sql, ST_SNAP_BEGIN, now);
}

static enum source_status
send_snapshot_select(struct pgsrc *s, uint64_t now)
{
	struct bbuf q = {0};

	bbuf_adds(&q, "SELECT ");
	for (size_t i = 0; i < s->ncols; i++) {
		char *id = PQescapeIdentifier(s->sql, s->cols[i].name, strlen(s->cols[i].name));
		if (!id)
			fatalx("out of memory");
		if (i)
			bbuf_adds(&q, ", ");
		bbuf_adds(&q, id);
		PQfreemem(id);
	}
	/* ONLY, as the publication: an inheritance parent's children are
	 * not published; a partitioned table's rows are all in partitions. */
	bbuf_adds(&q, s->partitioned ? " FROM " : " FROM ONLY ");
	bbuf_adds(&q, s->qualname);
	if (s->src->cfeed->where) {
		bbuf_adds(&q, " WHERE (");
		bbuf_adds(&q, s->src->cfeed->where);
		bbuf_adds(&q, ")");
	}
	bbuf_add(&q, "", 1);
	int ok = PQsendQuery(s->sql, q.p);
	bbuf_free(&q);
	if (!ok || !PQsetSingleRowMode(s->sql))
		return fail_result(s, "snapshot SELECT", s->sql, NULL);
	/* Rows before the consistent point's commits: the snapshot's cursor. */
	if (feed_snapshot_begin(s->src->feed, s->consistent_point - 1) != 0)
		return SOURCE_RETRY;
	s->snap_rows = 0;
	return sent(s, s->sql, ST_SNAP_ROWS, now);
}

static enum source_status
send_start(struct pgsrc *s, uint64_t start_lsn, uint64_t now)
{
	char q[512], lsn[32];

	snprintf(q, sizeof(q),
	         "START_REPLICATION SLOT \"%s\" LOGICAL %s (proto_version '1', "
	         "publication_names '\"%s\"')",
	         s->slot, pgo_lsn_format(start_lsn, lsn, sizeof(lsn)), s->pub);
	if (!PQsendQuery(s->repl, q))
		return fail_result(s, "START_REPLICATION", s->repl, NULL);
	s->confirmed = start_lsn;
	return sent(s, s->repl, ST_START, now);
}

/* ---- the stream ------------------------------------------------------------------- */

/* Encode the feed's columns of a tuple; old fills 'u' values.  -1 when a
 * value cannot be had (no old row for an unchanged TOAST value, binary). */
static int
encode_tuple(struct pgsrc *s, const struct pgo_tuple *t, const struct pgo_tuple *old)
{
	s->row.len = 0;
	for (size_t i = 0; i < s->ncols; i++) {
		int k = s->cols[i].relidx;
		const struct pgo_value *v;

		if (k < 0 || k >= t->ncols) {
			log_error("feed=%s: a row of %u columns lacks column \"%s\"", s->feedname,
			          t->ncols, s->cols[i].name);
			return -1;
		}
		v = &t->vals[k];
		if (v->kind == 'u') {
			if (!old || k >= old->ncols || old->vals[k].kind == 'u') {
				log_error("feed=%s: unchanged TOASTed value of \"%s\" without the "
				          "old row "
				          "(REPLICA IDENTITY FULL needed)",
				          s->feedname, s->cols[i].name);
				return -1;
			}
			v = &old->vals[k];
		}
		switch (v->kind) {
		case 'n':
			s->vals[i] = NULL;
			s->lens[i] = 0;
			break;
		case 't':
			s->vals[i] = v->data;
			s->lens[i] = v->len;
			break;
		default:
			log_error(
			        "feed=%s: value of \"%s\" in format '%c' (only text is requested)",
			        s->feedname, s->cols[i].name, v->kind);
			return -1;
		}
	}
	(void)encode_row(&s->row, s->kinds, s->ncols, s->vals, s->lens);
	return 0;
}

static int
emit(struct pgsrc *s, int64_t diff)
{
	s->changes++;
	s->txn_mine = true;
	if (feed_row(s->src->feed, s->txn_lsn, diff, s->row.p, s->row.len) != 0) {
		s->need_snapshot = true; /* as a refused commit: see PGO_COMMIT */
		return -1;
	}
	return 0;
}

/* The table this session streams has another name now, its OID the same
 * (now: schema.name): say so and take a new snapshot next time, whether
 * the stream's Relation message or the watch (table_gone) saw it first.
 * The caller ends the session. */
static void
renamed(struct pgsrc *s, const char *now)
{
	log_error("feed=%s: table %s was renamed to %s; the feed stops until %s exists again",
	          s->feedname, s->qualname, now, s->qualname);
	s->need_snapshot = true;
}

static enum source_status
on_relation(struct pgsrc *s, const struct pgo_msg *m)
{
	const char *nsp = m->u.relation.nspname[0] ? m->u.relation.nspname : "pg_catalog";

	/* Our table under another name (ALTER TABLE RENAME, SET SCHEMA): the
	 * configured table is gone.  Its changes must not be published as the
	 * configured table's, nor skipped (they would be missing if the name
	 * comes back), and a permanent slot would send this one again: end
	 * the session, and the next one, if the name is back, takes a new
	 * snapshot. */
	if (m->u.relation.oid == s->table_oid &&
	    (strcmp(nsp, s->nspname) != 0 || strcmp(m->u.relation.relname, s->relname) != 0)) {
		char now[2 * NAME_MAX_PG + 2];
		snprintf(now, sizeof(now), "%s.%s", nsp, m->u.relation.relname);
		renamed(s, now);
		return SOURCE_RETRY;
	}
	if (strcmp(m->u.relation.nspname[0] ? m->u.relation.nspname : "pg_catalog", s->nspname) !=
	            0 ||
	    strcmp(m->u.relation.relname, s->relname) != 0) {
		log_debug("feed=%s: ignoring relation %s.%s", s->feedname, m->u.relation.nspname,
		          m->u.relation.relname);
		return SOURCE_OK;
	}
	s->relid = m->u.relation.oid;
	s->rel_known = true;
	for (size_t i = 0; i < s->ncols; i++) {
		s->cols[i].relidx = -1;
		for (uint16_t k = 0; k < m->u.relation.ncols; k++)
			if (strcmp(m->u.relation.cols[k].name, s->cols[i].name) == 0)
				s->cols[i].relidx = k;
		if (s->cols[i].relidx < 0) {
			log_warning("feed=%s: column \"%s\" is gone from %s; starting over",
			            s->feedname, s->cols[i].name, s->qualname);
			return SOURCE_RETRY;
		}
		enum coltype_kind k =
		        coltype_kind_of_oid(m->u.relation.cols[s->cols[i].relidx].type_oid);
		const char *tn = coltype_name(m->u.relation.cols[s->cols[i].relidx].type_oid);
		if (tn && (k != s->cols[i].kind || strcmp(tn, s->cols[i].type) != 0)) {
			log_warning(
			        "feed=%s: column \"%s\" of %s changed type to %s; starting over",
			        s->feedname, s->cols[i].name, s->qualname, tn);
			return SOURCE_RETRY;
		}
	}
	/* A feed of all the table's columns follows ADD COLUMN: the Relation
	 * message, sent again before the first change after it, lists the
	 * columns pgoutput sends (not dropped, not generated), which are
	 * the ones the catalog query reads; any other count is a new
	 * column set, and the next session publishes it (a new segment). */
	if (s->src->cfeed->columns == NULL && m->u.relation.ncols != s->ncols) {
		log_warning("feed=%s: %s now has %u columns, the feed %zu; starting over",
		            s->feedname, s->qualname, m->u.relation.ncols, s->ncols);
		return SOURCE_RETRY;
	}
	if (m->u.relation.replident != s->replident) {
		s->replident = m->u.relation.replident;
		if (s->replident != 'f')
			log_warning("feed=%s: %s is no longer REPLICA IDENTITY FULL", s->feedname,
			            s->qualname);
	}
	return SOURCE_OK;
}

static enum source_status
need_old_row(struct pgsrc *s, const char *what)
{
	log_error("feed=%s: %s on %s without the old row (REPLICA IDENTITY FULL is needed); "
	          "taking a new snapshot",
	          s->feedname, what, s->qualname);
	s->need_snapshot = true;
	return SOURCE_RETRY;
}

static enum source_status
on_message(struct pgsrc *s, const struct pgo_msg *m)
{
	struct feed *f = s->src->feed;

	switch (m->type) {
	case PGO_BEGIN:
		s->in_txn = true;
		s->txn_lsn = m->u.begin.final_lsn;
		s->txn_mine = false;
		/* On resume the server may send again what the feed already has. */
		s->skip_txn = s->txn_lsn < feed_frontier(f);
		if (s->skip_txn)
			log_debug("feed=%s: skipping transaction at %" PRIu64 ", already applied",
			          s->feedname, s->txn_lsn);
		return SOURCE_OK;
	case PGO_COMMIT:
		if (!s->in_txn || m->u.commit.commit_lsn != s->txn_lsn) {
			log_error("feed=%s: Commit at %" PRIu64 " without its Begin", s->feedname,
			          m->u.commit.commit_lsn);
			return SOURCE_RETRY;
		}
		s->in_txn = false;
		feed_confirmed(f);
		if (!s->skip_txn) {
			/* The feed refused the transaction (a retraction of a row
			 * it does not hold, an overflow): resuming would replay
			 * it and fail again; a fresh snapshot, published as a
			 * difference, brings the feed back to the table. */
			if (feed_progress(f, s->txn_lsn + 1) != 0) {
				s->need_snapshot = true;
				return SOURCE_RETRY;
			}
			if (s->txn_mine)
				s->txns++;
		}
		s->skip_txn = false;
		if (m->u.commit.end_lsn > s->confirmed)
			s->confirmed = m->u.commit.end_lsn;
		return SOURCE_OK;
	case PGO_RELATION:
		return on_relation(s, m);
	case PGO_TYPE:
	case PGO_ORIGIN:
	case PGO_MESSAGE:
		return SOURCE_OK;
	default:
		break;
	}

	/* Row changes: only inside a transaction, only our relation. */
	if (!s->in_txn) {
		log_error("feed=%s: %s outside a transaction", s->feedname, pgo_msg_name(m->type));
		return SOURCE_RETRY;
	}
	if (s->skip_txn)
		return SOURCE_OK;
	switch (m->type) {
	case PGO_INSERT:
		if (!s->rel_known || m->u.insert.relid != s->relid)
			return SOURCE_OK;
		if (encode_tuple(s, &m->u.insert.newtup, NULL) != 0 || emit(s, 1) != 0)
			return SOURCE_RETRY;
		return SOURCE_OK;
	case PGO_UPDATE:
		if (!s->rel_known || m->u.update.relid != s->relid)
			return SOURCE_OK;
		if (m->u.update.old_kind != 'O')
			return need_old_row(s, "UPDATE");
		if (encode_tuple(s, &m->u.update.oldtup, NULL) != 0 || emit(s, -1) != 0)
			return SOURCE_RETRY;
		if (encode_tuple(s, &m->u.update.newtup, &m->u.update.oldtup) != 0 ||
		    emit(s, 1) != 0)
			return SOURCE_RETRY;
		return SOURCE_OK;
	case PGO_DELETE:
		if (!s->rel_known || m->u.del.relid != s->relid)
			return SOURCE_OK;
		if (m->u.del.old_kind != 'O')
			return need_old_row(s, "DELETE");
		if (encode_tuple(s, &m->u.del.oldtup, NULL) != 0 || emit(s, -1) != 0)
			return SOURCE_RETRY;
		return SOURCE_OK;
	case PGO_TRUNCATE:
		for (uint32_t i = 0; i < m->u.truncate.nrels; i++) {
			if (!s->rel_known || m->u.truncate.relids[i] != s->relid)
				continue;
			/* The state at this commit is what the transaction writes after
			 * the TRUNCATE: a snapshot at the commit, diffed by the feed. */
			log_info("feed=%s: TRUNCATE at %" PRIu64, s->feedname, s->txn_lsn);
			s->txn_mine = true;
			if (feed_snapshot_begin(f, s->txn_lsn) != 0)
				return SOURCE_RETRY;
		}
		return SOURCE_OK;
	default:
		log_error("feed=%s: unexpected message %s", s->feedname, pgo_msg_name(m->type));
		return SOURCE_RETRY;
	}
}

/* Queue a standby status update confirming s->confirmed; false: libpq
 * refused it (its message says why). */
static bool
put_status(struct pgsrc *s, bool reply)
{
	uint8_t st[PGO_STATUS_LEN];

	pgo_build_status(st, s->confirmed, s->confirmed, s->confirmed, pgo_now_pg_us(), reply);
	return PQputCopyData(s->repl, (const char *)st, PGO_STATUS_LEN) == 1;
}

static enum source_status
send_status(struct pgsrc *s, uint64_t now, bool reply)
{
	if (!put_status(s, reply))
		return fail_result(s, "status update", s->repl, NULL);
	s->last_status_ms = now;
	if (reply)
		s->last_reply_ms = now;
	s->status_due = false;
	return SOURCE_OK;
}

static enum source_status
read_stream(struct pgsrc *s, uint64_t now)
{
	char err[256];

	if (!PQconsumeInput(s->repl))
		return fail_result(s, "reading the stream", s->repl, NULL);
	for (;;) {
		char *buf = NULL;
		int n = PQgetCopyData(s->repl, &buf, 1);

		if (n == 0)
			break;
		if (n == -1) {
			PGresult *r = PQgetResult(s->repl);
			enum source_status st =
			        fail_result(s, "the replication stream ended", s->repl, r);
			PQclear(r);
			return st;
		}
		if (n < 0)
			return fail_result(s, "reading the stream", s->repl, NULL);
		s->last_recv_ms = now;

		struct pgo_copy cp;
		struct pgo_msg m;
		enum source_status st = SOURCE_OK;
		if (pgo_parse_copy(buf, (size_t)n, &cp, err, sizeof(err)) < 0) {
			log_error("feed=%s: %s", s->feedname, err);
			st = SOURCE_RETRY;
		} else if (cp.kind == PGO_COPY_KEEPALIVE) {
			feed_confirmed(s->src->feed); /* the server is there and sending */
			/* Between transactions everything before the server's WAL end
			 * has been sent: confirm it so the slot does not hold WAL, and
			 * advance the feed's frontier to it (feed_progress), so that
			 * a quiet feed's readers move forward.
			 *
			 * Why that is safe (walsender.c): WalSndKeepalive sends
			 * sentPtr, or, for a transaction skipped as empty under
			 * synchronous replication (WalSndUpdateProgress), that
			 * transaction's end LSN.  A logical walsender sets sentPtr to
			 * the EndRecPtr of each WAL record after decoding it
			 * (XLogSendLogical), and decoding reads WAL in LSN order and
			 * hands a transaction to the output plugin when its commit
			 * record is decoded, so transactions reach us in commit-LSN
			 * order.  Every commit record starting below sentPtr was
			 * therefore decoded and its transaction written to this
			 * stream before the keepalive; any later transaction's
			 * commit record starts at or after sentPtr, and a Begin's
			 * final_lsn (our cursor) is that start.  So no commit at an
			 * LSN below wal_end can still come: the feed is complete
			 * through wal_end - 1.  (Inside a transaction's messages
			 * sentPtr is still below its commit; we only use it
			 * between transactions anyway.) */
			if (!s->in_txn && cp.wal_end > s->confirmed)
				s->confirmed = cp.wal_end;
			if (!s->in_txn && feed_progress(s->src->feed, cp.wal_end) != 0)
				st = SOURCE_RETRY;
			if (cp.reply_requested)
				s->status_due = true;
		} else if (pgo_decode(&s->dec, cp.data, cp.len, &m, err, sizeof(err)) < 0) {
			log_error("feed=%s: %s", s->feedname, err);
			st = SOURCE_RETRY;
		} else {
			st = on_message(s, &m);
		}
		PQfreemem(buf);
		if (st != SOURCE_OK)
			return st;
	}
	if (s->status_due) {
		if (send_status(s, now, false) != SOURCE_OK)
			return SOURCE_RETRY;
	}
	short events;
	if (pgconn_flush(s->repl, &events) < 0)
		return fail_result(s, "writing to the stream", s->repl, NULL);
	want(s, s->repl, events);
	return SOURCE_OK;
}

/* ---- the state machine ---------------------------------------------------------- */

/* What one state's step did: wait for the socket (or the timer), go on
 * with the state it moved to, or end the session. */
enum step { STEP_WAIT, STEP_NEXT, STEP_RETRY };

static enum step
then(enum source_status st)
{
	return st == SOURCE_OK ? STEP_NEXT : STEP_RETRY;
}

static enum step
step_idle(struct pgsrc *s, uint64_t now)
{
	(void)s;
	(void)now;
	return STEP_WAIT;
}

static enum step
step_sql_connect(struct pgsrc *s, uint64_t now)
{
	int c = poll_connect(s, s->sql);

	if (c == 0)
		return STEP_WAIT;
	if (c < 0)
		return then(fail_result(s, "connecting", s->sql, NULL));
	return then(send_meta(s, now));
}

/* The regular connection's query is complete: hand its result to after. */
static enum step
on_sql_result(struct pgsrc *s, uint64_t now,
              enum source_status (*after)(struct pgsrc *s, PGresult *r, uint64_t now))
{
	PGresult *r = NULL;
	int c = collect(s, s->sql, &r);
	enum source_status st;

	if (c == 0)
		return STEP_WAIT;
	if (c < 0)
		return then(fail_result(s, "reading", s->sql, NULL));
	st = after(s, r, now);
	PQclear(r);
	return then(st);
}

static enum source_status
after_publication(struct pgsrc *s, PGresult *r, uint64_t now)
{
	s->created = s->created || result_ok(r, PGRES_COMMAND_OK);
	if (!result_ok(r, PGRES_COMMAND_OK)) {
		const char *m = r ? PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY) : NULL;
		enum source_status st = fail_result(s, "creating the publication", s->sql, r);
		/* Ours from an earlier run, with a filter that harms the
		 * application's writes: gone, as for a table refused. */
		if (m != NULL &&
		    strncmp(m, SOURCE_PG_WHERE_REFUSED, strlen(SOURCE_PG_WHERE_REFUSED)) == 0 &&
		    s->pub_exists)
			pgsrc_drop_publication(s);
		return st;
	}
	return next_after_publication(s, now);
}

static enum source_status
after_drop_slot(struct pgsrc *s, PGresult *r, uint64_t now)
{
	s->slot_exists = false;
	if (!result_ok(r, PGRES_TUPLES_OK))
		return fail_result(s, "dropping the slot", s->sql, r);
	return next_after_publication(s, now);
}

static enum source_status
after_snap_begin(struct pgsrc *s, PGresult *r, uint64_t now)
{
	if (!result_ok(r, PGRES_COMMAND_OK))
		return fail_result(s, "SET TRANSACTION SNAPSHOT", s->sql, r);
	return send_snapshot_select(s, now);
}

static enum source_status
after_snap_commit(struct pgsrc *s, PGresult *r, uint64_t now)
{
	if (!result_ok(r, PGRES_COMMAND_OK))
		return fail_result(s, "ending the snapshot", s->sql, r);
	/* The regular connection is done; the stream takes over. */
	PQfinish(s->sql);
	s->sql = NULL;
	return send_start(s, s->consistent_point, now);
}

static enum step
step_repl_connect(struct pgsrc *s, uint64_t now)
{
	int c = poll_connect(s, s->repl);

	if (c == 0)
		return STEP_WAIT;
	if (c < 0)
		return then(fail_result(s, "replication connection", s->repl, NULL));
	if (!PQsendQuery(s->repl, "IDENTIFY_SYSTEM"))
		return then(fail_result(s, "IDENTIFY_SYSTEM", s->repl, NULL));
	return then(sent(s, s->repl, ST_IDENTIFY, now));
}

/* LSNs are positions in one WAL history: the cluster's system identifier
 * and the timeline name it (feed_set_upstream).  Another one than the
 * ring holds: no resuming, the next session takes a snapshot. */
static enum step
step_identify(struct pgsrc *s, uint64_t now)
{
	PGresult *r = NULL;
	int c = collect(s, s->repl, &r);
	enum source_status st;
	char ident[96];

	if (c == 0)
		return STEP_WAIT;
	if (c < 0 || !result_ok(r, PGRES_TUPLES_OK) || PQntuples(r) != 1 || PQnfields(r) < 2) {
		st = fail_result(s, "IDENTIFY_SYSTEM", s->repl, r);
		PQclear(r);
		return then(st);
	}
	snprintf(ident, sizeof(ident), "pg:%s:%s", PQgetvalue(r, 0, 0), PQgetvalue(r, 0, 1));
	PQclear(r);
	if (feed_set_upstream(s->src->feed, ident) && !s->need_snapshot && s->permanent &&
	    s->slot_exists) {
		log_warning("feed=%s: another database (%s); taking a new snapshot", s->feedname,
		            ident);
		s->need_snapshot = true;
		return STEP_RETRY;
	}
	if (s->need_snapshot || !s->permanent || !s->slot_exists)
		return then(send_create_slot(s, now));
	PQfinish(s->sql);
	s->sql = NULL;
	return then(send_start(s, feed_frontier(s->src->feed), now));
}

static enum step
step_create_slot(struct pgsrc *s, uint64_t now)
{
	PGresult *r = NULL;
	int c = collect(s, s->repl, &r);
	enum source_status st;

	if (c == 0)
		return STEP_WAIT;
	if (c < 0)
		return then(fail_result(s, "CREATE_REPLICATION_SLOT", s->repl, NULL));
	if (!result_ok(r, PGRES_TUPLES_OK) || PQntuples(r) != 1 || PQnfields(r) < 3 ||
	    PQgetisnull(r, 0, 2) || !pgo_lsn_parse(PQgetvalue(r, 0, 1), &s->consistent_point) ||
	    s->consistent_point == 0 || strlen(PQgetvalue(r, 0, 2)) >= sizeof(s->snapname)) {
		st = fail_result(s, "CREATE_REPLICATION_SLOT", s->repl, r);
		PQclear(r);
		return then(st);
	}
	snprintf(s->snapname, sizeof(s->snapname), "%s", PQgetvalue(r, 0, 2));
	log_info("feed=%s: slot %s%s created at %s, snapshot %s", s->feedname, s->slot,
	         s->permanent ? "" : " (temporary)", PQgetvalue(r, 0, 1), s->snapname);
	PQclear(r);
	s->slot_exists = true;
	s->need_snapshot = false;
	/* The exported snapshot lives while the replication connection
	 * stays idle: read the table now, on the regular one. */
	return then(send_snapshot_begin(s, now));
}

/* One row of the snapshot, at the snapshot's cursor. */
static int
snap_row(struct pgsrc *s, const PGresult *r)
{
	for (size_t i = 0; i < s->ncols; i++) {
		bool null = PQgetisnull(r, 0, (int)i);
		s->vals[i] = null ? NULL : PQgetvalue(r, 0, (int)i);
		s->lens[i] = null ? 0 : (size_t)PQgetlength(r, 0, (int)i);
	}
	s->row.len = 0;
	(void)encode_row(&s->row, s->kinds, s->ncols, s->vals, s->lens);
	s->snap_rows++;
	return feed_row(s->src->feed, s->consistent_point - 1, 1, s->row.p, s->row.len);
}

/* The snapshot SELECT is complete: publish it and end its transaction. */
static enum source_status
snap_done(struct pgsrc *s, uint64_t now)
{
	log_info("feed=%s: snapshot of %s: %" PRIu64 " rows", s->feedname, s->qualname,
	         s->snap_rows);
	if (feed_snapshot_end(s->src->feed) != 0)
		return SOURCE_RETRY;
	feed_upstream_live(s->src->feed);
	if (!PQsendQuery(s->sql, "COMMIT"))
		return fail_result(s, "COMMIT", s->sql, NULL);
	return sent(s, s->sql, ST_SNAP_COMMIT, now);
}

static enum step
step_snap_rows(struct pgsrc *s, uint64_t now)
{
	PGresult *r;
	enum source_status st;

	if (PQflush(s->sql) < 0 || !PQconsumeInput(s->sql))
		return then(fail_result(s, "reading the snapshot", s->sql, NULL));
	while (!PQisBusy(s->sql)) {
		r = PQgetResult(s->sql);
		if (r == NULL)
			return then(snap_done(s, now));
		ExecStatusType rs = PQresultStatus(r);
		if (rs == PGRES_SINGLE_TUPLE) {
			if (snap_row(s, r) != 0) {
				PQclear(r);
				return STEP_RETRY;
			}
		} else if (rs != PGRES_TUPLES_OK) {
			st = fail_result(s, "the snapshot SELECT", s->sql, r);
			PQclear(r);
			return then(st);
		}
		PQclear(r);
	}
	want(s, s->sql, POLLIN);
	return STEP_WAIT;
}

static enum step
step_start(struct pgsrc *s, uint64_t now)
{
	PGresult *r = NULL;
	int c = collect(s, s->repl, &r);
	enum source_status st;

	if (c == 0)
		return STEP_WAIT;
	if (c < 0 || !result_ok(r, PGRES_COPY_BOTH)) {
		st = fail_result(s, "START_REPLICATION", s->repl, r);
		PQclear(r);
		/* A permanent slot gone meanwhile: next time, a new one. */
		s->need_snapshot = true;
		return then(st);
	}
	PQclear(r);
	log_info("feed=%s: streaming from slot %s", s->feedname, s->slot);
	s->st = ST_STREAM;
	s->in_txn = false;
	s->rel_known = false;
	s->last_recv_ms = now;
	s->last_status_ms = 0;
	s->last_reply_ms = now;
	feed_upstream_live(s->src->feed);
	s->src->timer_ms = now + STATUS_INTERVAL_MS;
	return STEP_NEXT;
}

static enum step
step_stream(struct pgsrc *s, uint64_t now)
{
	return read_stream(s, now) == SOURCE_OK ? STEP_WAIT : STEP_RETRY;
}

/*
 * What each state does when its socket (or the timer) wakes it.  A state
 * that waits for the result of a query it sent on the regular connection
 * names only `after`: on_sql_result collects that result and hands it to
 * after, which checks it and sends the next state's query.  Every other
 * state names its own `step`, which polls what it waits for.  Exactly one
 * of the two is set.
 */
struct pg_state_ops {
	enum step (*step)(struct pgsrc *s, uint64_t now);
	enum source_status (*after)(struct pgsrc *s, PGresult *r, uint64_t now);
};

static const struct pg_state_ops states[] = {
        [ST_IDLE] = {.step = step_idle},
        [ST_SQL_CONNECT] = {.step = step_sql_connect},
        [ST_META] = {.after = after_meta},
        [ST_PUBLICATION] = {.after = after_publication},
        [ST_DROP_SLOT] = {.after = after_drop_slot},
        [ST_REPL_CONNECT] = {.step = step_repl_connect},
        [ST_IDENTIFY] = {.step = step_identify},
        [ST_CREATE_SLOT] = {.step = step_create_slot},
        [ST_SNAP_BEGIN] = {.after = after_snap_begin},
        [ST_SNAP_ROWS] = {.step = step_snap_rows},
        [ST_SNAP_COMMIT] = {.after = after_snap_commit},
        [ST_START] = {.step = step_start},
        [ST_STREAM] = {.step = step_stream},
};

/* Run the current state's step, and the next one's, until one waits. */
static enum source_status
step(struct pgsrc *s, uint64_t now)
{
	for (;;) {
		const struct pg_state_ops *ops = &states[s->st];
		enum step r = ops->after ? on_sql_result(s, now, ops->after) : ops->step(s, now);

		switch (r) {
		case STEP_WAIT:
			return SOURCE_OK;
		case STEP_RETRY:
			return SOURCE_RETRY;
		case STEP_NEXT:
			break;
		}
	}
}

/* ---- source ops ------------------------------------------------------------------- */

static int
pg_init(struct source *src)
{
	const struct conf_feed *cf = src->cfeed;
	struct pgsrc *s = xcalloc(1, sizeof(*s));

	if (cf->table == NULL) {
		log_error("feed=%s: source postgresql needs table = NAME", cf->name);
		free(s);
		return -1;
	}
	s->src = src;
	s->feedname = xstrdup(cf->name);
	s->permanent = cf->permanent_slot;
	slot_name_from("tailgate_", cf->name, "", s->pub, sizeof(s->pub));
	if (cf->slot)
		snprintf(s->slot, sizeof(s->slot), "%s", cf->slot);
	else if (s->permanent)
		snprintf(s->slot, sizeof(s->slot), "%s", s->pub);
	src->priv = s;
	return 0;
}

static void
pg_stop(struct source *src)
{
	struct pgsrc *s = src->priv;

	if (s == NULL)
		return;
	if (s->repl && s->st == ST_STREAM && PQstatus(s->repl) == CONNECTION_OK) {
		/* Confirm what we have before going; best effort, no waiting,
		 * and silent: after the stream ended (the retry that follows a
		 * failure comes here) it fails with "no COPY in progress", which
		 * must not replace the failure's own message (its SQLSTATE) in
		 * the log and the ring. */
		if (put_status(s, false))
			(void)PQflush(s->repl);
	}
	PQclear(s->pending);
	s->pending = NULL;
	PQfinish(s->sql);
	PQfinish(s->repl);
	s->sql = NULL;
	s->repl = NULL;
	s->st = ST_IDLE;
	s->in_txn = false;
	src->fd = -1;
	src->events = 0;
	src->timer_ms = 0;
}

static enum source_status
pg_start(struct source *src, uint64_t now)
{
	struct pgsrc *s = src->priv;

	pg_stop(src);
	if (!s->permanent && !src->cfeed->slot) {
		/* A fresh name per session: a temporary slot of a dead session
		 * may linger until the server notices, and two hosts may share
		 * the database. */
		uint32_t rnd = 0;
		char suffix[16];
		if (getrandom(&rnd, sizeof(rnd), GRND_NONBLOCK) != (ssize_t)sizeof(rnd))
			rnd = (uint32_t)now ^ (uint32_t)getpid();
		snprintf(suffix, sizeof(suffix), "_%08x", rnd);
		slot_name_from("tailgate_", src->cfeed->name, suffix, s->slot, sizeof(s->slot));
	}
	s->sql = start_connect(s, false);
	if (!s->sql)
		return SOURCE_RETRY;
	s->st = ST_SQL_CONNECT;
	s->step_deadline = now + STEP_TIMEOUT_MS;
	src->timer_ms = s->step_deadline;
	want(s, s->sql, POLLOUT);
	return step(s, now);
}

static enum source_status
pg_on_ready(struct source *src, short revents, uint64_t now)
{
	struct pgsrc *s = src->priv;

	(void)revents; /* libpq finds out itself what happened on the socket */
	return step(s, now);
}

/*
 * Is the table this session streams still the configured one?  A DROP
 * TABLE is not in the stream (and a rename only with the table's next
 * change): the watch's newest answer for the configured name says, when
 * its check began after this session read the catalog (an older one may
 * predate the table the session found, and must not end it).  Gone: the
 * next session fails on the missing table (a permanent error, retried
 * after error_retry_ms).  Another OID: the table was created again, and
 * the next session takes a snapshot of it, published as a difference.
 * Renamed: as on_relation says it.
 */
static bool
table_gone(struct pgsrc *s)
{
	char now[2 * NAME_MAX_PG + 2];
	uint32_t oid;

	if (!cleanup_watch_table(s->feedname, s->src->cfeed->table, s->checks, &oid, now,
	                         sizeof(now)) ||
	    oid == s->table_oid)
		return false;
	s->need_snapshot = true;
	if (now[0])
		renamed(s, now);
	else if (oid == 0)
		source_fail(s->src, false,
		            "table %s.%s was dropped (OID %" PRIu32 " is gone); the feed stops "
		            "until it exists again",
		            s->nspname, s->relname, s->table_oid);
	else
		source_fail(s->src, false,
		            "table %s.%s was dropped and created again (OID %" PRIu32 " -> %" PRIu32
		            "); taking a new snapshot",
		            s->nspname, s->relname, s->table_oid, oid);
	return true;
}

static enum source_status
pg_on_tick(struct source *src, uint64_t now)
{
	struct pgsrc *s = src->priv;

	if (s->st != ST_STREAM) {
		if (s->st != ST_IDLE && now >= s->step_deadline) {
			log_error("feed=%s: no answer from the server within %d s (setting up)",
			          s->feedname, STEP_TIMEOUT_MS / 1000);
			return SOURCE_RETRY;
		}
		src->timer_ms = s->step_deadline;
		return SOURCE_OK;
	}
	if (now - s->last_recv_ms > SILENCE_MS) {
		log_error("feed=%s: nothing from the server for %d s", s->feedname,
		          SILENCE_MS / 1000);
		return SOURCE_RETRY;
	}
	if (table_gone(s))
		return SOURCE_RETRY;
	bool reply = now - s->last_reply_ms >= REPLY_INTERVAL_MS;
	if (send_status(s, now, reply) != SOURCE_OK)
		return SOURCE_RETRY;
	short events;
	if (pgconn_flush(s->repl, &events) < 0)
		return fail_result(s, "writing to the stream", s->repl, NULL);
	want(s, s->repl, events);
	src->timer_ms = now + STATUS_INTERVAL_MS;
	return SOURCE_OK;
}

static void
pg_fini(struct source *src)
{
	struct pgsrc *s = src->priv;

	if (s == NULL)
		return;
	/* A feed with a temporary slot leaves nothing behind: its slot went
	 * with its connection (pg_stop), its publication goes now.  A
	 * permanent slot and its publication stay for the next start;
	 * tailgated --cleanup removes those of feeds no longer configured. */
	if (!s->permanent && !src->cfeed->slot && s->created)
		pgsrc_drop_publication(s);
	if (s->permanent && src->removed)
		log_warning("feed=%s: removed from the configuration; its permanent slot %s keeps "
		            "WAL on the server until it is dropped: SELECT "
		            "pg_drop_replication_slot('%s'); DROP PUBLICATION %s;",
		            s->feedname, s->slot, s->slot, s->pub);
	free_cols(s);
	free(s->qualname);
	free(s->nspname);
	free(s->relname);
	pgo_decoder_free(&s->dec);
	bbuf_free(&s->row);
	free(s->feedname);
	free(s);
	src->priv = NULL;
}

const struct source_ops source_pg_ops = {
        .name = "postgresql",
        .init = pg_init,
        .start = pg_start,
        .on_ready = pg_on_ready,
        .on_tick = pg_on_tick,
        .stop = pg_stop,
        .fini = pg_fini,
};
