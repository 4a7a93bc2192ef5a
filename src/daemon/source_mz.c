/*
 * source_mz.c - the Materialize source: one streaming SUBSCRIBE per feed.
 *
 * One session, on a non-blocking libpq connection:
 *
 *   CONNECTING  PQconnectStartParams + PQconnectPoll
 *   PREPARING   PQsendPrepare("SUBSCRIBE ... WITH (PROGRESS)")
 *   DESCRIBING  PQsendDescribePrepared: the row description names the
 *               columns and their type OIDs; mz_timestamp, mz_progressed
 *               and mz_diff are found by name, the rest are the view's
 *   TYPES       (only for OIDs coltype.c does not know) their names from
 *               pg_catalog.pg_type
 *   ENVIRONMENT SELECT mz_environment_id(): the history the timestamps
 *               belong to (feed_set_upstream; another one: no resuming)
 *   COPY_WAIT   PQsendQuery("COPY (SUBSCRIBE ... WITH (PROGRESS ...)
 *               [AS OF t]) TO STDOUT"), waiting for PGRES_COPY_OUT
 *   STREAMING   PQgetCopyData(conn, &buf, 1): one CopyData per row
 *   COPY_END    the COPY ended; collecting its final result (an error, or
 *               the SUBSCRIBE complete: copy_complete)
 *
 * Which COPY: when the feed holds state for the same columns it resumes
 * with AS OF frontier-1 WITH (SNAPSHOT = false): exactly the updates at
 * times >= the feed's frontier.  If Materialize refuses (the AS OF is
 * older than the retained history: "Timestamp (t) is not valid for all
 * inputs", or "could not find a valid timestamp"), or with no state, the
 * COPY has no AS OF; its first row is a progress row at the as-of, which
 * begins the feed's snapshot: the feed diffs it against the held state.
 * A refusal is any error outside the connection classes (08, 57P, 53)
 * before the resuming COPY's first row, also one that arrives after
 * CopyOutResponse (refusal()).  After Materialize said the relation was
 * dropped (note_dropped()) the next COPY takes a fresh snapshot too: the
 * name may now be another object.  Notices, which may arrive between
 * rows, are logged with the feed's name.
 *
 * Rows are decoded (copytext.c), checked (field count, mz_timestamp and
 * mz_diff digits, mz_progressed t/f, valid UTF-8, the row terminator),
 * encoded (encode.c) and handed to the feed.  A malformed row or a row the
 * feed refuses ends the session (SOURCE_RETRY) before anything of its
 * timestamp is published.
 */
#include "config.h" /* autoconf: _GNU_SOURCE and friends, first */

#include "source.h"

#include "conf.h"
#include "copytext.h"
#include "encode.h"
#include "feed.h"
#include "log.h"
#include "pgconn.h"
#include "xmalloc.h"

#include <inttypes.h>
#include <libpq-fe.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MZ_SETUP_TIMEOUT_MS 30000 /* connect + describe + COPY start */
#define MZ_ROWS_PER_CALL 50000    /* then yield to the other feeds */
#define MZ_EXCERPT 120

enum mz_phase {
	MZ_IDLE,
	MZ_CONNECTING,
	MZ_PREPARING,
	MZ_DESCRIBING,
	MZ_TYPES,
	MZ_ENVIRONMENT,
	MZ_COPY_WAIT,
	MZ_STREAMING,
	MZ_COPY_END,
	MZ_COMPLETE /* the SUBSCRIBE completed: its final state is held */
};

struct mz_col {
	char *name;
	char *type;
	uint32_t oid;
	enum coltype_kind kind;
};

struct mz {
	PGconn *conn;
	enum mz_phase phase;
	char *subscribe; /* "SUBSCRIBE name" or "SUBSCRIBE (query)" */

	/* The row description of the last describe. */
	struct mz_col *cols;
	int ncols;
	int i_ts, i_prog, i_diff;
	int *view_idx; /* positions of the view's columns */
	int nview;
	enum coltype_kind *kinds;

	bool resuming;      /* this COPY has AS OF frontier-1, no snapshot */
	uint64_t resume_at; /* its AS OF */
	bool refused;       /* the resume was refused: send a fresh COPY next */
	bool dropped;       /* the relation was dropped: no resuming until a fresh
	                     * snapshot completed (kept across sessions) */
	uint64_t snap_at;   /* the as-of of this COPY's snapshot */
	bool want_snapshot; /* first progress row begins the feed's snapshot */
	bool setup_error;   /* an error result arrived during setup */
	uint64_t rows;      /* rows of this COPY */
	uint64_t max_ts;    /* the highest mz_timestamp of this COPY */

	struct copytext ct;
	struct bbuf row;
	const char **vals;
	size_t *lens;
	bool warned_encode;
};

static struct mz *
mzp(struct source *src)
{
	return src->priv;
}

static const char *
fname(struct source *src)
{
	return src->cfeed->name;
}

static void
free_cols(struct mz *m)
{
	for (int i = 0; i < m->ncols; i++) {
		free(m->cols[i].name);
		free(m->cols[i].type);
	}
	free(m->cols);
	free(m->view_idx);
	free(m->kinds);
	free(m->vals);
	free(m->lens);
	m->cols = NULL;
	m->view_idx = NULL;
	m->kinds = NULL;
	m->vals = NULL;
	m->lens = NULL;
	m->ncols = m->nview = 0;
}

/* Log a failed result (pgconn.h's format, with its SQLSTATE). */
static void
log_result(struct source *src, const char *what, const PGresult *res)
{
	source_fail_pg(src, what, mzp(src)->conn, res);
}

/* Log a libpq-level failure: the connection's own message. */
static void
log_conn(struct source *src, const char *what)
{
	source_fail_pg(src, what, mzp(src)->conn, NULL);
}

static void
want(struct source *src, short events)
{
	struct mz *m = mzp(src);

	src->fd = m->conn ? PQsocket(m->conn) : -1;
	src->events = events;
}

/* After sending: flush what libpq could not write yet. */
static enum source_status
flush_out(struct source *src)
{
	short events;

	if (pgconn_flush(mzp(src)->conn, &events) < 0) {
		log_conn(src, "sending to the upstream");
		return SOURCE_RETRY;
	}
	want(src, events);
	return SOURCE_OK;
}

/* ---- statements --------------------------------------------------------- */

static enum source_status
send_prepare(struct source *src)
{
	struct mz *m = mzp(src);
	char *sql;

	if (asprintf(&sql, "%s WITH (PROGRESS)", m->subscribe) < 0)
		fatalx("out of memory");
	m->phase = MZ_PREPARING;
	m->setup_error = false;
	if (!PQsendPrepare(m->conn, "", sql, 0, NULL)) {
		free(sql);
		log_conn(src, "sending the SUBSCRIBE to describe");
		return SOURCE_RETRY;
	}
	free(sql);
	return flush_out(src);
}

static enum source_status
send_describe(struct source *src)
{
	struct mz *m = mzp(src);

	m->phase = MZ_DESCRIBING;
	if (!PQsendDescribePrepared(m->conn, "")) {
		log_conn(src, "describing the SUBSCRIBE");
		return SOURCE_RETRY;
	}
	return flush_out(src);
}

static enum source_status
send_copy(struct source *src)
{
	struct mz *m = mzp(src);
	struct feed *feed = src->feed;
	char *sql;
	int n;

	m->resuming = !m->refused && !m->dropped && feed_can_resume(feed);
	if (m->resuming) {
		m->resume_at = feed_frontier(feed) - 1;
		n = asprintf(&sql,
		             "COPY (%s WITH (PROGRESS, SNAPSHOT = false) AS OF %" PRIu64
		             ") TO STDOUT",
		             m->subscribe, m->resume_at);
		log_info("feed=%s: resuming AS OF %" PRIu64, fname(src), m->resume_at);
	} else {
		n = asprintf(&sql, "COPY (%s WITH (PROGRESS)) TO STDOUT", m->subscribe);
		log_info("feed=%s: subscribing with a snapshot", fname(src));
	}
	if (n < 0)
		fatalx("out of memory");
	m->want_snapshot = !m->resuming;
	m->refused = false;
	m->setup_error = false;
	m->rows = 0; /* refusal(): nothing of this COPY delivered yet */
	m->max_ts = 0;
	m->phase = MZ_COPY_WAIT;
	if (!PQsendQuery(m->conn, sql)) {
		free(sql);
		log_conn(src, "starting the COPY");
		return SOURCE_RETRY;
	}
	free(sql);
	return flush_out(src);
}

static enum source_status
send_types(struct source *src)
{
	struct mz *m = mzp(src);
	char sql[4096];
	size_t len;
	bool any = false;

	len = (size_t)snprintf(sql, sizeof(sql),
	                       "SELECT oid, typname FROM pg_catalog.pg_type WHERE oid IN (");
	for (int i = 0; i < m->ncols; i++) {
		if (m->cols[i].type != NULL || len + 16 >= sizeof(sql))
			continue;
		len += (size_t)snprintf(sql + len, sizeof(sql) - len, "%s%" PRIu32, any ? ", " : "",
		                        m->cols[i].oid);
		any = true;
	}
	snprintf(sql + len, sizeof(sql) - len, ")");
	m->phase = MZ_TYPES;
	if (!PQsendQuery(m->conn, sql)) {
		log_conn(src, "looking up type names");
		return SOURCE_RETRY;
	}
	return flush_out(src);
}

/* ---- setup results ------------------------------------------------------ */

static bool
has_unnamed_types(const struct mz *m)
{
	for (int i = 0; i < m->ncols; i++)
		if (m->cols[i].type == NULL)
			return true;
	return false;
}

/* Materialize's own built-in types have fixed OIDs (from 16384, below
 * its first user OID, 20000), and record is PostgreSQL's: named without
 * asking pg_type, which an upstream may not serve.  Only here: in
 * PostgreSQL 16384 and up are user OIDs. */
static const char *
mz_builtin_type(uint32_t oid)
{
	switch (oid) {
	case 2249:
		return "record";
	case 16384:
		return "list";
	case 16385:
		return "map";
	case 16460:
		return "uint2";
	case 16462:
		return "uint4";
	case 16464:
		return "uint8";
	case 16552:
		return "mz_timestamp";
	case 16566:
		return "mz_aclitem";
	default:
		return NULL;
	}
}

static void
describe_result(struct source *src, const PGresult *res)
{
	struct mz *m = mzp(src);
	int n = PQnfields(res);

	free_cols(m);
	m->cols = xcalloc((size_t)n, sizeof(*m->cols));
	m->ncols = n;
	for (int i = 0; i < n; i++) {
		const char *name = coltype_name(PQftype(res, i));
		if (name == NULL)
			name = mz_builtin_type(PQftype(res, i));
		m->cols[i].name = xstrdup(PQfname(res, i));
		m->cols[i].oid = PQftype(res, i);
		m->cols[i].type = name ? xstrdup(name) : NULL;
	}
}

static void
types_result(struct source *src, const PGresult *res)
{
	struct mz *m = mzp(src);

	if (PQnfields(res) != 2)
		return;
	for (int r = 0; r < PQntuples(res); r++) {
		unsigned long oid;
		if (PQgetisnull(res, r, 0) || PQgetisnull(res, r, 1))
			continue;
		oid = strtoul(PQgetvalue(res, r, 0), NULL, 10);
		for (int i = 0; i < m->ncols; i++)
			if (m->cols[i].type == NULL && m->cols[i].oid == oid)
				m->cols[i].type = xstrdup(PQgetvalue(res, r, 1));
	}
}

/* The describe (and type names) are in: find the mz_ columns, tell the
 * feed the view's columns, start the COPY. */
static enum source_status
columns_known(struct source *src)
{
	struct mz *m = mzp(src);
	struct feed_column *fc;
	enum feed_columns_status st;

	m->i_ts = m->i_prog = m->i_diff = -1;
	m->view_idx = xcalloc((size_t)m->ncols, sizeof(int));
	m->nview = 0;
	for (int i = 0; i < m->ncols; i++) {
		struct mz_col *c = &m->cols[i];
		if (c->type == NULL) {
			char buf[32];
			snprintf(buf, sizeof(buf), "oid%" PRIu32, c->oid);
			c->type = xstrdup(buf);
		}
		c->kind = coltype_kind_of_name(c->type);
		if (m->i_ts < 0 && strcmp(c->name, "mz_timestamp") == 0)
			m->i_ts = i;
		else if (m->i_prog < 0 && strcmp(c->name, "mz_progressed") == 0)
			m->i_prog = i;
		else if (m->i_diff < 0 && strcmp(c->name, "mz_diff") == 0)
			m->i_diff = i;
		else
			m->view_idx[m->nview++] = i;
	}
	/* ENVELOPE UPSERT or DEBEZIUM in a view's text replace mz_diff with
	 * mz_state: not a stream of diffs this source can apply.  A fix is
	 * needed, not time: a permanent error (the feed's state says so). */
	if (m->i_ts < 0 || m->i_prog < 0 || m->i_diff < 0)
		return source_fail(
		        src, true,
		        "the SUBSCRIBE's columns lack %s (ENVELOPE UPSERT and DEBEZIUM are "
		        "not supported; is the upstream Materialize?)",
		        m->i_ts < 0     ? "mz_timestamp"
		        : m->i_prog < 0 ? "mz_progressed"
		                        : "mz_diff");
	m->kinds = xcalloc((size_t)m->nview, sizeof(*m->kinds));
	m->vals = xcalloc((size_t)m->nview, sizeof(*m->vals));
	m->lens = xcalloc((size_t)m->nview, sizeof(*m->lens));
	fc = xcalloc((size_t)m->nview, sizeof(*fc));
	for (int k = 0; k < m->nview; k++) {
		struct mz_col *c = &m->cols[m->view_idx[k]];
		m->kinds[k] = c->kind;
		fc[k] = (struct feed_column){c->name, c->type, c->kind};
	}
	st = feed_set_columns(src->feed, fc, (size_t)m->nview);
	free(fc);
	if (st == FEED_COLUMNS_ERR)
		return SOURCE_RETRY;
	m->phase = MZ_ENVIRONMENT;
	if (!PQsendQuery(m->conn, "SELECT mz_environment_id()")) {
		log_conn(src, "asking for the environment id");
		return SOURCE_RETRY;
	}
	return flush_out(src);
}

/* Timestamps are positions in one environment's history: cursors carry
 * its id (feed_set_upstream), so another environment's are refused. */
static void
environment_result(struct source *src, PGresult *res)
{
	char ident[160];

	if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1 || PQnfields(res) != 1 ||
	    PQgetisnull(res, 0, 0)) {
		log_warning("feed=%s: cannot read mz_environment_id() (%s); cursors name only the "
		            "feed's definition",
		            fname(src), PQresultErrorMessage(res));
		snprintf(ident, sizeof(ident), "mz:");
	} else {
		snprintf(ident, sizeof(ident), "mz:%s", PQgetvalue(res, 0, 0));
	}
	(void)feed_set_upstream(src->feed, ident); /* send_copy asks feed_can_resume */
}

static bool
connection_class(const char *sqlstate)
{
	/* 08: connection exceptions; 57P: operator intervention (shutdown);
	 * 53: insufficient resources.  None of these says "AS OF too old". */
	return sqlstate == NULL || strncmp(sqlstate, "08", 2) == 0 ||
	       strncmp(sqlstate, "57P", 3) == 0 || strncmp(sqlstate, "53", 2) == 0;
}

/* Is res the upstream refusing to resume?  A resuming COPY (AS OF) that
 * fails with an error outside the connection classes before it delivered
 * a single row is a refusal, whatever phase the error arrives in: before
 * CopyOutResponse, or after it and before the first row.  Retrying the
 * same AS OF would fail the same way forever, so the refusal is noted
 * and the next COPY takes a fresh snapshot. */
static bool
refusal(struct source *src, PGresult *res)
{
	struct mz *m = mzp(src);

	if (PQresultStatus(res) != PGRES_FATAL_ERROR || !m->resuming || m->rows != 0 ||
	    connection_class(PQresultErrorField(res, PG_DIAG_SQLSTATE)))
		return false;
	log_result(src, "resuming", res);
	log_warning("feed=%s: the upstream cannot resume AS OF %" PRIu64 "; taking a fresh "
	            "snapshot and publishing the difference",
	            fname(src), m->resume_at);
	m->refused = true;
	return true;
}

/*
 * Materialize ends every SUBSCRIBE that depends on an object being
 * dropped with an error "subscribe has been terminated because underlying
 * relation <name> was dropped" (or "... underlying cluster ...").  The name
 * may come back as another object (DROP VIEW + CREATE VIEW under the same
 * name, same columns): resuming AS OF the frontier without a snapshot
 * would apply the new object's changes to the old one's state.  After a
 * relation was dropped the next COPY takes a fresh snapshot instead, diffed
 * against the held state, whenever the name exists again.
 */
static void
note_dropped(struct source *src, const PGresult *res)
{
	static const char prefix[] = "subscribe has been terminated because underlying ";
	const char *msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);

	if (msg == NULL || strncmp(msg, prefix, sizeof(prefix) - 1) != 0)
		return;
	if (strncmp(msg + sizeof(prefix) - 1, "relation", 8) == 0) {
		mzp(src)->dropped = true;
		log_warning("feed=%s: the upstream dropped the relation under the SUBSCRIBE; the "
		            "next subscription takes a fresh snapshot (the name may now be another "
		            "object) and publishes the difference",
		            fname(src));
	}
}

/* NoticeResponse may arrive at any time, between CopyData messages too
 * (PostgreSQL protocol, "COPY Operations"; libpq consumes it inside
 * PQgetCopyData): logged with the feed's name instead of libpq's default
 * bare line on stderr.  Materialize also announces a dropped dependency
 * this way. */
static void
notice_to_log(void *arg, const PGresult *res)
{
	struct source *src = arg;
	const char *sev = PQresultErrorField(res, PG_DIAG_SEVERITY);
	const char *code = PQresultErrorField(res, PG_DIAG_SQLSTATE);
	const char *msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);

	log_info("feed=%s: upstream %s (SQLSTATE %s): %s", fname(src), sev ? sev : "NOTICE",
	         code ? code : "?", msg ? msg : "");
	note_dropped(src, res);
}

/* Not fatal: unnamed types become "oidN" strings. */
static void
warn_types(struct source *src, const PGresult *res)
{
	struct pgconn_error e;

	log_warning("feed=%s: %s; encoding those columns as strings", fname(src),
	            pgconn_error(&e, "looking up type names", mzp(src)->conn, res));
}

/*
 * The COPY ended without an error: the SUBSCRIBE is over because "all
 * updates have been presented" (SUBSCRIBE, "Duration": a constant
 * relation, which will never change again).  No progress row follows the
 * last timestamp's rows (the frontier is empty), so close every pending
 * timestamp now, keep the feed live with that final state and end the
 * session without a retry.  A COPY that ended before its first progress
 * row says nothing: retry.
 */
static enum source_status
copy_complete(struct source *src)
{
	struct mz *m = mzp(src);

	if (m->rows == 0 || m->want_snapshot) {
		log_error("feed=%s: the SUBSCRIBE ended before its first progress row", fname(src));
		return SOURCE_RETRY;
	}
	if (m->max_ts < UINT64_MAX && feed_progress(src->feed, m->max_ts + 1) != 0)
		return SOURCE_RETRY;
	feed_upstream_live(src->feed);
	log_info("feed=%s: the SUBSCRIBE completed (every update presented: the relation will "
	         "not change); holding its final state at %" PRIu64,
	         fname(src), m->max_ts);
	PQfinish(m->conn);
	m->conn = NULL;
	m->phase = MZ_COMPLETE;
	src->fd = -1;
	src->events = 0;
	src->timer_ms = 1; /* mz_on_tick: confirmed from now on, never stalled */
	return SOURCE_OK;
}

/* Consume every result available during setup; advance the phase when a
 * command's results end (PQgetResult returns NULL). */
static enum source_status
setup_results(struct source *src)
{
	struct mz *m = mzp(src);

	while (m->phase != MZ_STREAMING && !PQisBusy(m->conn)) {
		PGresult *res = PQgetResult(m->conn);
		ExecStatusType st;

		if (res == NULL) {
			/* This command is done. */
			if (m->setup_error) {
				if ((m->phase == MZ_COPY_WAIT || m->phase == MZ_COPY_END) &&
				    m->refused)
					return send_copy(src); /* fresh snapshot */
				return SOURCE_RETRY;
			}
			switch (m->phase) {
			case MZ_PREPARING:
				return send_describe(src);
			case MZ_DESCRIBING:
				if (has_unnamed_types(m))
					return send_types(src);
				return columns_known(src);
			case MZ_TYPES:
				return columns_known(src);
			case MZ_ENVIRONMENT:
				return send_copy(src);
			case MZ_COPY_END:
				return copy_complete(src);
			default:
				log_error("feed=%s: unexpected end of results", fname(src));
				return SOURCE_RETRY;
			}
		}
		st = PQresultStatus(res);
		switch (m->phase) {
		case MZ_PREPARING:
			if (st != PGRES_COMMAND_OK) {
				log_result(src, "preparing the SUBSCRIBE", res);
				m->setup_error = true;
			}
			break;
		case MZ_DESCRIBING:
			if (st != PGRES_COMMAND_OK) {
				log_result(src, "describing the SUBSCRIBE", res);
				m->setup_error = true;
			} else {
				describe_result(src, res);
			}
			break;
		case MZ_TYPES:
			/* Not fatal: unnamed types become "oidN" strings. */
			if (st == PGRES_TUPLES_OK)
				types_result(src, res);
			else
				warn_types(src, res);
			break;
		case MZ_ENVIRONMENT:
			environment_result(src, res);
			break;
		case MZ_COPY_WAIT:
			if (st == PGRES_COPY_OUT) {
				bool binary = PQbinaryTuples(res) != 0;
				PQclear(res);
				if (binary) {
					log_error("feed=%s: COPY is not in text format",
					          fname(src));
					return SOURCE_RETRY;
				}
				m->phase = MZ_STREAMING;
				m->rows = 0;
				return SOURCE_OK;
			}
			if (!refusal(src, res))
				log_result(src, "starting the SUBSCRIBE", res);
			m->setup_error = true;
			break;
		case MZ_COPY_END:
			if (st == PGRES_COMMAND_OK)
				break;
			if (refusal(src, res)) {
				/* Refused after CopyOutResponse, before any row:
				 * the same fresh COPY as a refusal before it. */
				m->setup_error = true;
				break;
			}
			log_result(src, "streaming", res);
			note_dropped(src, res);
			PQclear(res);
			return SOURCE_RETRY;
		default:
			break;
		}
		PQclear(res);
	}
	return SOURCE_OK;
}

/* ---- streaming -------------------------------------------------------- */

static bool
parse_u64(const char *s, size_t len, uint64_t *out)
{
	uint64_t v = 0;

	if (s == NULL || len == 0 || len > 20)
		return false;
	for (size_t i = 0; i < len; i++) {
		unsigned d = (unsigned)(s[i] - '0');
		if (d > 9 || v > (UINT64_MAX - d) / 10)
			return false;
		v = v * 10 + d;
	}
	*out = v;
	return true;
}

static bool
parse_i64(const char *s, size_t len, int64_t *out)
{
	uint64_t v;
	bool neg = len > 0 && s[0] == '-';

	if (s == NULL || !parse_u64(s + neg, len - neg, &v))
		return false;
	if (v > (uint64_t)INT64_MAX + neg)
		return false;
	*out = neg ? (int64_t)(0 - v) : (int64_t)v;
	return true;
}

static void
log_malformed(struct source *src, const char *why, const char *buf, int n)
{
	char ex[MZ_EXCERPT * 4 + 8];
	size_t o = 0;

	/* A printable excerpt of the raw CopyData. */
	for (int i = 0; i < n && i < MZ_EXCERPT && o + 5 < sizeof(ex); i++) {
		unsigned char c = (unsigned char)buf[i];
		if (c >= 0x20 && c < 0x7f && c != '\\')
			ex[o++] = (char)c;
		else
			o += (size_t)snprintf(ex + o, sizeof(ex) - o, "\\x%02x", c);
	}
	ex[o] = '\0';
	log_error("feed=%s: malformed row from the upstream (%s): \"%s\"%s; nothing of it "
	          "published, dropping the session",
	          fname(src), why, ex, n > MZ_EXCERPT ? "..." : "");
}

/* One CopyData message. */
static enum source_status
handle_row(struct source *src, const char *buf, int n)
{
	struct mz *m = mzp(src);
	struct copytext *ct = &m->ct;
	uint64_t ts;
	int64_t diff;
	long nf;
	const char *prog;
	char why[160];
	int flags;

	if (n == 0 || buf[n - 1] != '\n') {
		log_malformed(src, "no row terminator", buf, n);
		return SOURCE_RETRY;
	}
	nf = copytext_parse(ct, buf, (size_t)n);
	if (nf < 0) {
		log_malformed(src, ct->err, buf, n);
		return SOURCE_RETRY;
	}
	if (nf != m->ncols) {
		snprintf(why, sizeof(why), "%ld fields, the description has %d", nf, m->ncols);
		log_malformed(src, why, buf, n);
		return SOURCE_RETRY;
	}
	if (!parse_u64(ct->vals[m->i_ts], ct->lens[m->i_ts], &ts)) {
		log_malformed(src, "mz_timestamp is not a non-negative integer", buf, n);
		return SOURCE_RETRY;
	}
	prog = ct->vals[m->i_prog];
	if (prog == NULL || ct->lens[m->i_prog] != 1 || (prog[0] != 't' && prog[0] != 'f')) {
		log_malformed(src, "mz_progressed is not t or f", buf, n);
		return SOURCE_RETRY;
	}
	m->rows++;
	if (ts > m->max_ts)
		m->max_ts = ts;

	if (prog[0] == 't') {
		if (m->want_snapshot) {
			/* The first progress row is at the as-of: the snapshot's
			 * rows carry that timestamp. */
			m->want_snapshot = false;
			m->snap_at = ts;
			if (feed_snapshot_begin(src->feed, ts) != 0)
				return SOURCE_RETRY;
		}
		if (feed_progress(src->feed, ts) != 0)
			return SOURCE_RETRY;
		if (m->dropped && !m->resuming && ts > m->snap_at)
			m->dropped = false; /* the fresh snapshot is complete */
		feed_upstream_live(src->feed);
		return SOURCE_OK;
	}

	if (m->want_snapshot) {
		log_malformed(src, "a data row before the first progress row", buf, n);
		return SOURCE_RETRY;
	}
	if (!parse_i64(ct->vals[m->i_diff], ct->lens[m->i_diff], &diff) || diff == 0) {
		log_malformed(src, "mz_diff is not a non-zero integer", buf, n);
		return SOURCE_RETRY;
	}
	for (int k = 0; k < m->nview; k++) {
		m->vals[k] = ct->vals[m->view_idx[k]];
		m->lens[k] = ct->lens[m->view_idx[k]];
	}
	m->row.len = 0;
	flags = encode_row(&m->row, m->kinds, (size_t)m->nview, m->vals, m->lens);
	if (flags & ENCODE_REPLACED) {
		/* The connection's client_encoding is UTF8: bytes that are not
		 * UTF-8 mean the stream is corrupt, not that the data is. */
		log_malformed(src, "invalid UTF-8", buf, n);
		return SOURCE_RETRY;
	}
	if ((flags & ENCODE_AS_STRING) && !m->warned_encode) {
		m->warned_encode = true;
		log_warning("feed=%s: a value did not parse as its column's type and was sent "
		            "as a string (logged once per session): %.*s",
		            fname(src), (int)(m->row.len > 200 ? 200 : m->row.len), m->row.p);
	}
	/* Timestamps come in non-decreasing order (SUBSCRIBE, "PROGRESS"): a
	 * row at ts says no more rows come below ts, as a progress row at ts
	 * would.  Close what lies below now instead of at the next progress
	 * row, which an upstream may send only much later. */
	if (ts > feed_frontier(src->feed) && feed_progress(src->feed, ts) != 0)
		return SOURCE_RETRY;
	if (feed_row(src->feed, ts, diff, m->row.p, m->row.len) != 0)
		return SOURCE_RETRY;
	return SOURCE_OK;
}

static enum source_status
read_copy(struct source *src, uint64_t now)
{
	struct mz *m = mzp(src);

	src->timer_ms = 0;
	for (int i = 0; i < MZ_ROWS_PER_CALL; i++) {
		char *buf = NULL;
		int n = PQgetCopyData(m->conn, &buf, 1);
		enum source_status st;

		if (n > 0) {
			st = handle_row(src, buf, n);
			PQfreemem(buf);
			if (st != SOURCE_OK)
				return st;
			continue;
		}
		if (n == 0)
			return SOURCE_OK; /* wait for the socket */
		if (n == -1) {
			m->phase = MZ_COPY_END;
			return setup_results(src);
		}
		log_conn(src, "reading the SUBSCRIBE");
		return SOURCE_RETRY;
	}
	/* More may be buffered inside libpq, where poll cannot see it:
	 * come back on the next loop iteration, after the other feeds. */
	src->timer_ms = now;
	return SOURCE_OK;
}

/* ---- ops -------------------------------------------------------------- */

static int
mz_init(struct source *src)
{
	const struct conf_feed *cf = src->cfeed;
	struct mz *m = xcalloc(1, sizeof(*m));
	int n;

	if (cf->view != NULL)
		n = asprintf(&m->subscribe, "SUBSCRIBE %s", cf->view);
	else if (cf->query != NULL)
		n = asprintf(&m->subscribe, "SUBSCRIBE (%s)", cf->query);
	else {
		log_error("feed=%s: needs view or query", cf->name);
		free(m);
		return -1;
	}
	if (n < 0)
		fatalx("out of memory");
	src->priv = m;
	return 0;
}

static enum source_status
mz_start(struct source *src, uint64_t now)
{
	struct mz *m = mzp(src);
	const struct pgconn_opts opts = {0};

	m->conn = pgconn_start(src->conf->conninfo, &opts);
	if (PQstatus(m->conn) == CONNECTION_BAD) {
		log_conn(src, "connecting");
		return SOURCE_RETRY;
	}
	PQsetNoticeReceiver(m->conn, notice_to_log, src);
	m->phase = MZ_CONNECTING;
	m->refused = false;
	m->warned_encode = false;
	src->timer_ms = now + MZ_SETUP_TIMEOUT_MS;
	want(src, POLLOUT);
	return SOURCE_OK;
}

static enum source_status
connect_poll(struct source *src)
{
	struct mz *m = mzp(src);
	short events;

	switch (pgconn_poll(m->conn, &events)) {
	case PGCONN_WAIT:
		want(src, events);
		return SOURCE_OK;
	case PGCONN_READY:
		break;
	default:
		log_conn(src, "connecting");
		return SOURCE_RETRY;
	}
	log_info("feed=%s: connected to %s:%s (server %d)", fname(src), PQhost(m->conn),
	         PQport(m->conn), PQserverVersion(m->conn));
	return send_prepare(src);
}

static enum source_status
mz_on_ready(struct source *src, short revents, uint64_t now)
{
	struct mz *m = mzp(src);
	enum source_status st;

	if (m->phase == MZ_CONNECTING)
		return connect_poll(src);
	if (m->phase == MZ_IDLE || m->phase == MZ_COMPLETE)
		return SOURCE_OK;
	if (revents & POLLOUT) {
		if ((st = flush_out(src)) != SOURCE_OK)
			return st;
	}
	if (revents & (POLLIN | POLLERR | POLLHUP)) {
		if (!PQconsumeInput(m->conn)) {
			log_conn(src, m->phase == MZ_STREAMING ? "reading the SUBSCRIBE"
			                                       : "reading from the upstream");
			return SOURCE_RETRY;
		}
	}
	if (m->phase == MZ_STREAMING)
		return read_copy(src, now);
	st = setup_results(src);
	if (st == SOURCE_OK && m->phase == MZ_STREAMING)
		return read_copy(src, now); /* rows may have come with the COPY start */
	return st;
}

static enum source_status
mz_on_tick(struct source *src, uint64_t now)
{
	struct mz *m = mzp(src);

	if (m->phase == MZ_STREAMING)
		return read_copy(src, now);
	if (m->phase == MZ_COMPLETE) {
		/* Final, not stalled: nothing more will ever come.  Confirmed
		 * well within stall_timeout_ms. */
		uint64_t every = src->conf->stall_timeout_ms / 4;
		feed_confirmed(src->feed);
		src->timer_ms = now + (every == 0 || every > 1000 ? 1000 : every < 20 ? 20 : every);
		return SOURCE_OK;
	}
	if (m->phase != MZ_IDLE) {
		log_error("feed=%s: no answer from the upstream within %d s", fname(src),
		          MZ_SETUP_TIMEOUT_MS / 1000);
		return SOURCE_RETRY;
	}
	src->timer_ms = 0;
	return SOURCE_OK;
}

static void
mz_stop(struct source *src)
{
	struct mz *m = mzp(src);

	if (m == NULL)
		return;
	if (m->conn != NULL)
		PQfinish(m->conn);
	m->conn = NULL;
	m->phase = MZ_IDLE;
	src->fd = -1;
	src->events = 0;
	src->timer_ms = 0;
}

static void
mz_fini(struct source *src)
{
	struct mz *m = mzp(src);

	if (m == NULL)
		return;
	free_cols(m);
	copytext_free(&m->ct);
	bbuf_free(&m->row);
	free(m->subscribe);
	free(m);
	src->priv = NULL;
}

const struct source_ops source_mz_ops = {
        .name = "materialize",
        .consolidated = true,
        .init = mz_init,
        .start = mz_start,
        .on_ready = mz_on_ready,
        .on_tick = mz_on_tick,
        .stop = mz_stop,
        .fini = mz_fini,
};
