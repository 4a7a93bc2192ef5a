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
 * The daemon calls cleanup_warn_retained once at start, so an idle
 * leftover slot and the WAL it holds show in the log too.
 *
 * Blocking libpq calls: a command, or the daemon before its loop.
 */
#include "config.h"

#include "cleanup.h"

#include "log.h"
#include "pgconn.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

void
cleanup_warn_retained(const struct conf *conf)
{
	const struct pgconn_opts opts = {.connect_timeout_s = 3};
	PGresult *r;
	PGconn *c;

	if (strcmp(conf->source, "postgresql") != 0)
		return;
	c = pgconn_open(conf->conninfo, &opts);
	if (PQstatus(c) != CONNECTION_OK) {
		PQfinish(c); /* the feeds' own sessions say why, with SQLSTATE */
		return;
	}
	r = PQexec(c, q_slots);
	for (int i = 0; PQresultStatus(r) == PGRES_TUPLES_OK && i < PQntuples(r); i++) {
		const char *slot = PQgetvalue(r, i, 0);
		if (strncmp(slot, "tailgate_", 9) != 0 || wanted_slot(conf, slot) ||
		    strcmp(PQgetvalue(r, i, 1), "t") == 0)
			continue;
		log_warning("slot %s is not in %s and inactive: it retains %s bytes of WAL "
		            "(wal_status %s, safe_wal_size %s); tailgated --cleanup --yes -c %s "
		            "drops it",
		            slot, conf->path, PQgetvalue(r, i, 3), PQgetvalue(r, i, 4),
		            PQgetvalue(r, i, 5), conf->path);
	}
	PQclear(r);
	PQfinish(c);
}
