/*
 * cleanup.c - tailgated --cleanup [--yes]: the replication slots and
 * publications tailgated created on a PostgreSQL upstream that the
 * configuration no longer names.
 *
 * Everything tailgated creates is named tailgate_...: the publication of
 * feed F is tailgate_F, its permanent slot tailgate_F (or the configured
 * slot = NAME), a temporary slot tailgate_F_XXXXXXXX (F lower-cased, any
 * character but [a-z0-9] as '_').  A leftover is such an object in the
 * configured database that no feed of the configuration would use:
 *
 *   slot         a permanent (not temporary) slot named tailgate_...
 *                that is no configured feed's slot.  An inactive one
 *                keeps WAL on the server for ever: its retained bytes and
 *                wal_status are shown.  An active one (a walsender uses
 *                it: another tailgated) is listed and never dropped.
 *                Temporary slots are the server's to drop (they end with
 *                their session) and are not listed;
 *   publication  tailgate_... that is no configured feed's publication
 *                and that no active slot of the same feed streams.
 *
 * Without --yes the leftovers are listed, one line each, with the command
 * that would drop them; with --yes they are dropped.  Slots and
 * publications named otherwise are never touched: tailgated did not make
 * them.  Several daemons on one database: run it with a configuration
 * naming every feed of all of them, or it lists the others' (their active
 * slots stay, but an idle permanent one would be dropped with --yes).
 *
 * The daemon runs a watch (cleanup_watch_start): a thread of its own that
 * every slot_check_ms, and at once after a start or a reload, asks the
 * upstream for tailgated's permanent slots and writes the WAL each retains
 * to RING_DIR/tailgated.slots, which tailgate-fcgi adds to /metrics; an
 * inactive leftover slot is also logged, with the command that drops it,
 * when first seen.  The same check resolves each feed's table to its OID
 * and publishes it for source_pg.c (cleanup_watch_table): nothing in the
 * replication stream tells of a DROP TABLE, so this is how a session
 * learns that the table it streams is gone or was created again.
 *
 * Blocking libpq calls: a command, or the watch's own thread.
 */
#include "config.h"

#include "cleanup.h"

#include "log.h"
#include "pgconn.h"
#include "ring.h"

#include "xmalloc.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define PG_NAME_MAX 64 /* NAMEDATALEN */

/* The name tailgated gives: prefix, then the feed's name lower-cased with
 * anything but [a-z0-9] as '_', at most 63 bytes (source_pg.c does the
 * same). */
static void
pg_name(const char *feed, char *out)
{
	size_t n = 0;

	memcpy(out, "tailgate_", 9);
	n = 9;
	for (const char *p = feed; *p && n + 1 < PG_NAME_MAX; p++) {
		unsigned char c = (unsigned char)*p;
		out[n++] = isalnum(c) ? (char)tolower(c) : '_';
	}
	out[n] = '\0';
}

static bool
wanted_slot(const struct conf *conf, const char *slot)
{
	char name[PG_NAME_MAX];

	for (size_t i = 0; i < conf->nfeeds; i++) {
		const struct conf_feed *cf = &conf->feeds[i];
		if (cf->slot != NULL) {
			if (strcmp(cf->slot, slot) == 0)
				return true;
			continue;
		}
		pg_name(cf->name, name);
		if (strcmp(name, slot) == 0)
			return true;
	}
	return false;
}

static bool
wanted_publication(const struct conf *conf, const char *pub)
{
	char name[PG_NAME_MAX];

	for (size_t i = 0; i < conf->nfeeds; i++) {
		pg_name(conf->feeds[i].name, name);
		if (strcmp(name, pub) == 0)
			return true;
	}
	return false;
}

/* A slot of the feed whose publication is pub: pub itself, or pub_XXXXXXXX. */
static bool
slot_of_publication(const char *slot, const char *pub)
{
	size_t n = strlen(pub);

	if (strncmp(slot, pub, n) != 0)
		return false;
	if (slot[n] == '\0')
		return true;
	if (slot[n] != '_' || strlen(slot + n + 1) != 8)
		return false;
	for (const char *p = slot + n + 1; *p; p++)
		if (!isxdigit((unsigned char)*p))
			return false;
	return true;
}

static int
drop(PGconn *c, FILE *out, const char *what, const char *name, const char *sql)
{
	const char *params[1] = {name};
	PGresult *r = PQexecParams(c, sql, strchr(sql, '$') ? 1 : 0, NULL, params, NULL, NULL, 0);
	ExecStatusType st = PQresultStatus(r);
	int rc = 0;

	if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
		struct pgconn_error e;
		char doing[PG_NAME_MAX + 32];
		snprintf(doing, sizeof(doing), "dropping %s %s", what, name);
		fprintf(out, "%s\n", pgconn_error(&e, doing, c, r));
		rc = 1;
	} else {
		fprintf(out, "dropped %s %s\n", what, name);
	}
	PQclear(r);
	return rc;
}

static const char q_slots[] =
        "SELECT slot_name, active, coalesce(active_pid::text, ''), "
        "       coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint::text, '?'), "
        "       coalesce(wal_status, '?'), coalesce(safe_wal_size::text, 'unlimited') "
        "FROM pg_replication_slots "
        "WHERE slot_type = 'logical' AND NOT temporary AND database = current_database() "
        "ORDER BY slot_name";
static const char q_active[] = "SELECT slot_name FROM pg_replication_slots "
                               "WHERE active AND database = current_database()";
static const char q_pubs[] = "SELECT pubname FROM pg_publication "
                             "WHERE pubname LIKE 'tailgate\\_%' ORDER BY pubname";

static int
cleanup_slots(PGconn *c, const struct conf *conf, bool yes, FILE *out, int *found)
{
	PGresult *r = PQexec(c, q_slots);
	int rc = 0;

	struct pgconn_error e;

	if (PQresultStatus(r) != PGRES_TUPLES_OK) {
		fprintf(out, "%s: %s\n", conf->path,
		        pgconn_error(&e, "listing the replication slots", c, r));
		PQclear(r);
		return 1;
	}
	for (int i = 0; i < PQntuples(r); i++) {
		const char *slot = PQgetvalue(r, i, 0);
		bool active = strcmp(PQgetvalue(r, i, 1), "t") == 0;

		if (strncmp(slot, "tailgate_", 9) != 0 || wanted_slot(conf, slot))
			continue;
		(*found)++;
		if (active) {
			fprintf(out,
			        "slot %s: not in %s, but in use (walsender pid %s: another "
			        "tailgated?); not dropped\n",
			        slot, conf->path, PQgetvalue(r, i, 2));
			continue;
		}
		fprintf(out,
		        "slot %s: not in %s; inactive, retains %s bytes of WAL (wal_status %s, "
		        "safe_wal_size %s)%s%s%s\n",
		        slot, conf->path, PQgetvalue(r, i, 3), PQgetvalue(r, i, 4),
		        PQgetvalue(r, i, 5), yes ? "" : "; SELECT pg_drop_replication_slot('",
		        yes ? "" : slot, yes ? "" : "');");
		if (yes)
			rc |= drop(c, out, "slot", slot, "SELECT pg_drop_replication_slot($1)");
	}
	PQclear(r);
	return rc;
}

static int
cleanup_publications(PGconn *c, const struct conf *conf, bool yes, FILE *out, int *found)
{
	PGresult *pubs = PQexec(c, q_pubs), *act = PQexec(c, q_active);
	int rc = 0;

	struct pgconn_error e;

	if (PQresultStatus(pubs) != PGRES_TUPLES_OK || PQresultStatus(act) != PGRES_TUPLES_OK) {
		fprintf(out, "%s: %s\n", conf->path,
		        pgconn_error(&e, "listing the publications", c,
		                     PQresultStatus(pubs) != PGRES_TUPLES_OK ? pubs : act));
		PQclear(pubs);
		PQclear(act);
		return 1;
	}
	for (int i = 0; i < PQntuples(pubs); i++) {
		const char *pub = PQgetvalue(pubs, i, 0);
		const char *user = NULL;

		if (wanted_publication(conf, pub))
			continue;
		(*found)++;
		for (int k = 0; k < PQntuples(act) && user == NULL; k++)
			if (slot_of_publication(PQgetvalue(act, k, 0), pub))
				user = PQgetvalue(act, k, 0);
		if (user != NULL) {
			fprintf(out,
			        "publication %s: not in %s, but streamed by the active slot %s; "
			        "not dropped\n",
			        pub, conf->path, user);
			continue;
		}
		fprintf(out, "publication %s: not in %s%s%s%s\n", pub, conf->path,
		        yes ? "" : "; DROP PUBLICATION ", yes ? "" : pub, yes ? "" : ";");
		if (yes) {
			char *id = PQescapeIdentifier(c, pub, strlen(pub));
			char sql[PG_NAME_MAX * 2 + 32];
			snprintf(sql, sizeof(sql), "DROP PUBLICATION IF EXISTS %s", id ? id : pub);
			PQfreemem(id);
			rc |= drop(c, out, "publication", pub, sql);
		}
	}
	PQclear(pubs);
	PQclear(act);
	return rc;
}

int
cleanup_run(const struct conf *conf, bool yes, FILE *out)
{
	const struct pgconn_opts opts = {.app_name = "tailgated --cleanup",
	                                 .connect_timeout_s = 10};
	struct pgconn_error e;
	int found = 0, rc;
	PGconn *c;

	if (strcmp(conf->source, "postgresql") != 0) {
		fprintf(out,
		        "%s: source %s: tailgated creates nothing upstream; nothing to clean up\n",
		        conf->path, conf->source);
		return 0;
	}
	c = pgconn_open(conf->conninfo, &opts);
	if (PQstatus(c) != CONNECTION_OK) {
		fprintf(out, "%s: %s\n", conf->path, pgconn_error(&e, "connecting", c, NULL));
		PQfinish(c);
		return 1;
	}
	rc = cleanup_slots(c, conf, yes, out, &found);
	rc |= cleanup_publications(c, conf, yes, out, &found);
	PQfinish(c);
	if (found == 0)
		fprintf(out, "%s: nothing to clean up\n", conf->path);
	else if (!yes)
		fprintf(out, "%s: %d leftover%s; tailgated --cleanup --yes -c %s drops them\n",
		        conf->path, found, found == 1 ? "" : "s", conf->path);
	return rc;
}

/* ---- the daemon's watch on the slots' WAL ---- */

/* What the watch needs of a configuration: copies, the thread's own. */
struct watch_conf {
	char *conninfo, *path, *file; /* file: RING_DIR/tailgated.slots */
	char **wanted;                /* the configured feeds' slot names */
	size_t nwanted;
	char **feeds, **tables; /* each feed's name and table =, as configured */
	size_t nfeeds;
	unsigned interval_ms;
};

struct cleanup_watch {
	pthread_t thread;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool stop;               /* under mu */
	struct watch_conf *next; /* under mu: a reload's, not yet taken */
	char **warned;           /* the thread's: inactive leftovers logged */
	size_t nwarned;
};

static struct watch_conf *
watch_conf_new(const struct conf *conf)
{
	struct watch_conf *wc = xcalloc(1, sizeof(*wc));
	char name[PG_NAME_MAX];

	wc->conninfo = xstrdup(conf->conninfo);
	wc->path = xstrdup(conf->path);
	if (asprintf(&wc->file, "%s/tailgated.slots", conf->ring_dir) < 0)
		fatalx("out of memory");
	wc->wanted = xcalloc(conf->nfeeds + 1, sizeof(*wc->wanted));
	for (size_t i = 0; i < conf->nfeeds; i++) {
		pg_name(conf->feeds[i].name, name);
		wc->wanted[i] = xstrdup(conf->feeds[i].slot ? conf->feeds[i].slot : name);
	}
	wc->nwanted = conf->nfeeds;
	wc->feeds = xcalloc(conf->nfeeds + 1, sizeof(*wc->feeds));
	wc->tables = xcalloc(conf->nfeeds + 1, sizeof(*wc->tables));
	for (size_t i = 0; i < conf->nfeeds; i++) {
		if (conf->feeds[i].table == NULL)
			continue; /* refused by source_pg.c */
		wc->feeds[wc->nfeeds] = xstrdup(conf->feeds[i].name);
		wc->tables[wc->nfeeds++] = xstrdup(conf->feeds[i].table);
	}
	wc->interval_ms = conf->slot_check_ms;
	return wc;
}

static void
watch_conf_free(struct watch_conf *wc)
{
	if (wc == NULL)
		return;
	for (size_t i = 0; i < wc->nwanted; i++)
		free(wc->wanted[i]);
	free(wc->wanted);
	for (size_t i = 0; i < wc->nfeeds; i++) {
		free(wc->feeds[i]);
		free(wc->tables[i]);
	}
	free(wc->feeds);
	free(wc->tables);
	free(wc->conninfo);
	free(wc->path);
	free(wc->file);
	free(wc);
}

static bool
in_list(char *const *list, size_t n, const char *s)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(list[i], s) == 0)
			return true;
	return false;
}

/* q_slots lists every permanent logical slot of the database: tailgated's
 * are named tailgate_..., or configured. */
static bool
ours(const struct watch_conf *wc, const char *slot)
{
	return strncmp(slot, "tailgate_", 9) == 0 || in_list(wc->wanted, wc->nwanted, slot);
}

/* The metrics of our slots in r (q_slots' rows), written to wc->file
 * through a temporary and a rename. */
static void
watch_write(const struct watch_conf *wc, const PGresult *r)
{
	char tmp[4200];
	FILE *f;
	int fd;

	snprintf(tmp, sizeof(tmp), "%s.tmp", wc->file);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, RING_FILE_MODE);
	if (fd < 0 || (f = fdopen(fd, "w")) == NULL) {
		log_warning("cannot write %s: %s", tmp, strerror(errno));
		if (fd >= 0)
			close(fd);
		return;
	}
	fprintf(f, "# HELP tailgate_slot_retained_bytes WAL the server keeps for a permanent "
	           "replication slot of tailgated (current LSN - restart_lsn); an inactive "
	           "slot's grows until it is dropped or invalidated.\n"
	           "# TYPE tailgate_slot_retained_bytes gauge\n");
	for (int i = 0; i < PQntuples(r); i++) {
		const char *slot = PQgetvalue(r, i, 0);
		if (!ours(wc, slot) || strcmp(PQgetvalue(r, i, 3), "?") == 0)
			continue; /* not ours; no restart_lsn: nothing retained */
		fprintf(f,
		        "tailgate_slot_retained_bytes{slot=\"%s\",configured=\"%s\",active=\"%s\","
		        "wal_status=\"%s\"} %s\n",
		        slot, in_list(wc->wanted, wc->nwanted, slot) ? "true" : "false",
		        strcmp(PQgetvalue(r, i, 1), "t") == 0 ? "true" : "false",
		        PQgetvalue(r, i, 4), PQgetvalue(r, i, 3));
	}
	fprintf(f, "# HELP tailgate_slot_safe_wal_size_bytes WAL that can still be written "
	           "before the slot is invalidated (max_slot_wal_keep_size); absent when "
	           "unlimited.\n"
	           "# TYPE tailgate_slot_safe_wal_size_bytes gauge\n");
	for (int i = 0; i < PQntuples(r); i++)
		if (ours(wc, PQgetvalue(r, i, 0)) && strcmp(PQgetvalue(r, i, 5), "unlimited") != 0)
			fprintf(f, "tailgate_slot_safe_wal_size_bytes{slot=\"%s\"} %s\n",
			        PQgetvalue(r, i, 0), PQgetvalue(r, i, 5));
	fprintf(f,
	        "# HELP tailgate_slot_checked_timestamp_seconds When tailgated last read the "
	        "slots (Unix time).\n"
	        "# TYPE tailgate_slot_checked_timestamp_seconds gauge\n"
	        "tailgate_slot_checked_timestamp_seconds %lld\n",
	        (long long)time(NULL));
	if (fclose(f) != 0 || rename(tmp, wc->file) != 0) {
		log_warning("cannot write %s: %s", wc->file, strerror(errno));
		unlink(tmp);
	}
}

/* Log each inactive leftover slot not logged at the previous check. */
static void
watch_log(struct cleanup_watch *w, const struct watch_conf *wc, const PGresult *r)
{
	char **now = xcalloc((size_t)PQntuples(r) + 1, sizeof(*now));
	size_t n = 0;

	for (int i = 0; i < PQntuples(r); i++) {
		const char *slot = PQgetvalue(r, i, 0);
		if (!ours(wc, slot) || in_list(wc->wanted, wc->nwanted, slot) ||
		    strcmp(PQgetvalue(r, i, 1), "t") == 0)
			continue;
		now[n++] = xstrdup(slot);
		if (in_list(w->warned, w->nwarned, slot))
			continue;
		log_warning("slot %s is not in %s and inactive: it retains %s bytes of WAL "
		            "(wal_status %s, safe_wal_size %s); tailgated --cleanup --yes -c %s "
		            "drops it",
		            slot, wc->path, PQgetvalue(r, i, 3), PQgetvalue(r, i, 4),
		            PQgetvalue(r, i, 5), wc->path);
	}
	for (size_t i = 0; i < w->nwarned; i++)
		free(w->warned[i]);
	free(w->warned);
	w->warned = now;
	w->nwarned = n;
}

/*
 * The tables' OIDs the watch found, for the feeds' sessions on the
 * daemon's thread (cleanup_watch_table).  One process-wide table: the
 * daemon runs one watch.  tables_mu guards all of it and is held only to
 * copy in or look up, never across a query, so the event loop never waits
 * on the upstream.  The mutex orders everything: a check's number is
 * taken, and the OIDs the sessions follow copied, under it before the
 * check's first query is sent; its answers are stored under it after the
 * last one returned; a session records the OID it follows and reads the
 * number under it after its own catalog read returned.  So a check whose
 * number is greater than the one a session read asked the server after
 * that session's catalog read, about that session's OID, and its answer
 * is never older than what the session streams.
 */
struct watch_table {
	char *feed, *table;
	uint32_t oid;    /* what table resolves to; 0: no such relation */
	uint32_t asked;  /* the OID the feed's session followed, 0: none */
	char *asked_now; /* its schema.name now; NULL: no such OID */
};
struct watch_follow {
	char *feed;
	uint32_t oid;
};
static pthread_mutex_t tables_mu = PTHREAD_MUTEX_INITIALIZER;
static uint64_t tables_started;    /* checks begun */
static uint64_t tables_check;      /* the check whose answers tables holds; 0: none */
static struct watch_table *tables; /* tables_check's answers */
static size_t ntables;
static struct watch_follow *follows; /* each feed's session's OID, by feed name */
static size_t nfollows;

static void
tables_free(struct watch_table *t, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(t[i].feed);
		free(t[i].table);
		free(t[i].asked_now);
	}
	free(t);
}

/* Under tables_mu: feed's entry in follows, NULL: none yet. */
static struct watch_follow *
follow_of(const char *feed)
{
	for (size_t i = 0; i < nfollows; i++)
		if (strcmp(follows[i].feed, feed) == 0)
			return &follows[i];
	return NULL;
}

/* Under tables_mu: the OID feed's session follows, 0: none. */
static uint32_t
followed(const char *feed)
{
	const struct watch_follow *f = follow_of(feed);

	return f != NULL ? f->oid : 0;
}

uint64_t
cleanup_watch_follow(const char *feed, uint32_t oid)
{
	pthread_mutex_lock(&tables_mu);
	struct watch_follow *f = follow_of(feed);
	if (f == NULL) {
		follows = xrealloc(follows, (nfollows + 1) * sizeof(*follows));
		f = &follows[nfollows++];
		f->feed = xstrdup(feed);
	}
	f->oid = oid;
	uint64_t n = tables_started;
	pthread_mutex_unlock(&tables_mu);
	return n;
}

bool
cleanup_watch_table(const char *feed, const char *table, uint64_t after, uint32_t *oid,
                    char *renamed, size_t renamedlen)
{
	bool found = false;

	pthread_mutex_lock(&tables_mu);
	for (size_t i = 0; i < ntables && tables_check > after && !found; i++)
		if (strcmp(tables[i].feed, feed) == 0 && strcmp(tables[i].table, table) == 0) {
			*oid = tables[i].oid;
			snprintf(renamed, renamedlen, "%s",
			         tables[i].asked != 0 && tables[i].asked != tables[i].oid &&
			                         tables[i].asked_now
			                 ? tables[i].asked_now
			                 : "");
			found = true;
		}
	pthread_mutex_unlock(&tables_mu);
	return found;
}

/* Each feed's table, resolved as source_pg.c's catalog query resolves it
 * ($1::regclass: the same quoting rules and search_path), to its OID or 0
 * when no relation has that name, and the name the OID its session
 * follows has now (a rename), if any.  A name the server cannot parse is
 * left out: the feed's own session reports it. */
static void
watch_tables(PGconn *c, const struct watch_conf *wc)
{
	static const char q[] = "SELECT coalesce(to_regclass($1)::oid, 0), "
	                        "       (SELECT format('%s.%s', n.nspname, r.relname) "
	                        "        FROM pg_class r JOIN pg_namespace n "
	                        "        ON n.oid = r.relnamespace WHERE r.oid = $2::oid)";
	struct watch_table *t = xcalloc(wc->nfeeds + 1, sizeof(*t));
	uint32_t *asked = xcalloc(wc->nfeeds + 1, sizeof(*asked));
	size_t n = 0;
	uint64_t check;

	pthread_mutex_lock(&tables_mu);
	check = ++tables_started;
	for (size_t i = 0; i < wc->nfeeds; i++)
		asked[i] = followed(wc->feeds[i]);
	pthread_mutex_unlock(&tables_mu);
	for (size_t i = 0; i < wc->nfeeds; i++) {
		char oidtext[16];
		snprintf(oidtext, sizeof(oidtext), "%" PRIu32, asked[i]);
		const char *params[2] = {wc->tables[i], oidtext};
		PGresult *r = PQexecParams(c, q, 2, NULL, params, NULL, NULL, 0);
		if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1) {
			t[n].feed = xstrdup(wc->feeds[i]);
			t[n].table = xstrdup(wc->tables[i]);
			t[n].oid = (uint32_t)strtoul(PQgetvalue(r, 0, 0), NULL, 10);
			t[n].asked = asked[i];
			t[n++].asked_now =
			        PQgetisnull(r, 0, 1) ? NULL : xstrdup(PQgetvalue(r, 0, 1));
		} else {
			struct pgconn_error e;
			char doing[256];
			snprintf(doing, sizeof(doing), "looking up table %.200s", wc->tables[i]);
			log_debug("feed=%s: %s", wc->feeds[i], pgconn_error(&e, doing, c, r));
		}
		PQclear(r);
	}
	free(asked);
	pthread_mutex_lock(&tables_mu);
	struct watch_table *old = tables;
	size_t nold = ntables;
	tables = t;
	ntables = n;
	tables_check = check;
	pthread_mutex_unlock(&tables_mu);
	tables_free(old, nold);
}

static void
watch_check(struct cleanup_watch *w, const struct watch_conf *wc)
{
	/* The user's options kept: the tables are resolved with the
	 * search_path the feeds' sessions see. */
	char *options = pgconn_options_with(wc->conninfo, "-c statement_timeout=5000");
	const struct pgconn_opts opts = {.connect_timeout_s = 5, .options = options};
	PGconn *c = pgconn_open(wc->conninfo, &opts);
	struct pgconn_error e;
	PGresult *r = NULL;

	free(options);

	if (PQstatus(c) != CONNECTION_OK)
		goto out; /* the feeds' own sessions say why; the file keeps its time */
	r = PQexec(c, q_slots);
	if (PQresultStatus(r) != PGRES_TUPLES_OK) {
		log_warning("%s", pgconn_error(&e, "listing the replication slots", c, r));
	} else {
		watch_write(wc, r);
		watch_log(w, wc, r);
	}
	watch_tables(c, wc);
out:
	PQclear(r);
	PQfinish(c);
}

static void *
watch_main(void *arg)
{
	struct cleanup_watch *w = arg;
	struct watch_conf *wc = NULL;
	struct timespec due = {0};

	pthread_mutex_lock(&w->mu);
	for (;;) {
		while (!w->stop && w->next == NULL) {
			if (wc != NULL && wc->interval_ms == 0)
				pthread_cond_wait(&w->cv, &w->mu);
			else if (pthread_cond_timedwait(&w->cv, &w->mu, &due) == ETIMEDOUT)
				break;
		}
		if (w->stop)
			break;
		if (w->next != NULL) {
			watch_conf_free(wc);
			wc = w->next;
			w->next = NULL;
		}
		pthread_mutex_unlock(&w->mu);
		if (wc->interval_ms != 0)
			watch_check(w, wc);
		else
			unlink(wc->file); /* turned off: no stale numbers */
		clock_gettime(CLOCK_REALTIME, &due);
		due.tv_sec += wc->interval_ms / 1000;
		due.tv_nsec += (long)(wc->interval_ms % 1000) * 1000000;
		if (due.tv_nsec >= 1000000000) {
			due.tv_sec++;
			due.tv_nsec -= 1000000000;
		}
		pthread_mutex_lock(&w->mu);
	}
	pthread_mutex_unlock(&w->mu);
	watch_conf_free(wc);
	return NULL;
}

struct cleanup_watch *
cleanup_watch_start(const struct conf *conf)
{
	struct cleanup_watch *w;

	if (strcmp(conf->source, "postgresql") != 0)
		return NULL;
	w = xcalloc(1, sizeof(*w));
	pthread_mutex_init(&w->mu, NULL);
	pthread_cond_init(&w->cv, NULL);
	w->next = watch_conf_new(conf);
	if (pthread_create(&w->thread, NULL, watch_main, w) != 0)
		fatalx("cannot start the slot watch thread");
	return w;
}

void
cleanup_watch_reload(struct cleanup_watch *w, const struct conf *conf)
{
	struct watch_conf *wc, *old;

	if (w == NULL)
		return;
	wc = watch_conf_new(conf);
	pthread_mutex_lock(&w->mu);
	old = w->next;
	w->next = wc;
	pthread_cond_signal(&w->cv);
	pthread_mutex_unlock(&w->mu);
	watch_conf_free(old);
}

void
cleanup_watch_stop(struct cleanup_watch *w)
{
	if (w == NULL)
		return;
	pthread_mutex_lock(&w->mu);
	w->stop = true;
	pthread_cond_signal(&w->cv);
	pthread_mutex_unlock(&w->mu);
	pthread_join(w->thread, NULL);
	watch_conf_free(w->next);
	for (size_t i = 0; i < w->nwarned; i++)
		free(w->warned[i]);
	free(w->warned);
	pthread_mutex_lock(&tables_mu);
	tables_free(tables, ntables);
	tables = NULL;
	ntables = 0;
	tables_check = 0; /* tables_started stays: a later watch's numbers go on */
	for (size_t i = 0; i < nfollows; i++)
		free(follows[i].feed);
	free(follows);
	follows = NULL;
	nfollows = 0;
	pthread_mutex_unlock(&tables_mu);
	pthread_mutex_destroy(&w->mu);
	pthread_cond_destroy(&w->cv);
	free(w);
}
