/*
 * check.c - tailgated --check: the configuration checked against the
 * world it will run in, like nginx -t.
 *
 * After the file parsed (conf.c), check_run connects to the upstream with
 * the configured conninfo and verifies what the daemon needs, so a
 * mistake is found before the first start and not as a reconnect loop:
 *
 *   every source   ring_dir exists, is a directory, writable and searchable,
 *                  and its filesystem has room for the rings it must create
 *   postgresql     the connection (credentials, pg_hba), wal_level = logical,
 *                  the role's REPLICATION attribute and a replication
 *                  connection, and per feed: the table exists, is a table
 *                  or a partitioned table (a view is refused as a view),
 *                  and can be read, the configured columns exist, the
 *                  table has a replica identity (a primary key or REPLICA
 *                  IDENTITY FULL; without one the feed is refused), the
 *                  role may create its publication (CREATE on the database
 *                  and ownership of the table), and the where filter is
 *                  accepted by PostgreSQL and reads only replica-identity
 *                  columns (a publication made and rolled back)
 *   materialize    the connection, and per feed that the view or query can
 *                  be described (SELECT ... LIMIT 0)
 *
 * One line per problem on out, "path: feed=NAME: what; fix", upstream
 * failures in pgconn.h's format.  Blocking libpq calls with a 10 s
 * connect timeout: this is a command, not the daemon's loop.
 */
#include "config.h"

#include "check.h"
#include "pgconn.h"
#include "source_pg.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

struct checker {
	const struct conf *conf;
	FILE *out;
	int problems;
};

static void __attribute__((format(printf, 3, 4)))
problem(struct checker *k, const struct conf_feed *cf, const char *fmt, ...)
{
	va_list ap;

	fprintf(k->out, "%s: ", k->conf->path);
	if (cf != NULL)
		fprintf(k->out, "feed=%s: ", cf->name);
	va_start(ap, fmt);
	vfprintf(k->out, fmt, ap);
	va_end(ap);
	fputc('\n', k->out);
	k->problems++;
}

/* posix_fallocate reserves every ring's pages when it is created, so a
 * tmpfs too small for the configured ring sizes fails each feed at its
 * first snapshot.  Rings of feeds that have a segment already may be taken
 * over and are not counted; the sum is of data areas, a lower bound. */
static void
check_ring_space(struct checker *k)
{
	const char *dir = k->conf->ring_dir;
	struct statvfs vfs;
	unsigned long long need = 0, avail;

	if (statvfs(dir, &vfs) != 0)
		return;
	for (size_t i = 0; i < k->conf->nfeeds; i++) {
		const struct conf_feed *cf = &k->conf->feeds[i];
		char path[4096];
		struct stat st;

		snprintf(path, sizeof(path), "%s/%s.ring", dir, cf->name);
		if (stat(path, &st) != 0)
			need += cf->ring_size;
	}
	avail = (unsigned long long)vfs.f_bavail * vfs.f_frsize;
	if (need > avail)
		problem(k, NULL,
		        "ring_dir %s has %llu MiB free, and the new rings need at least %llu "
		        "MiB; lower ring_size, or give the filesystem more room (a tmpfs: "
		        "mount -o remount,size=... %s)",
		        dir, avail >> 20, (need + (1 << 20) - 1) >> 20, dir);
}

static void
check_ring_dir(struct checker *k)
{
	const char *dir = k->conf->ring_dir;
	struct stat st;

	if (stat(dir, &st) != 0)
		problem(k, NULL,
		        "ring_dir %s does not exist; create it, writable by the daemon's "
		        "user (install -d -o USER %s)",
		        dir, dir);
	else if (!S_ISDIR(st.st_mode))
		problem(k, NULL, "ring_dir %s is not a directory", dir);
	else if (access(dir, W_OK | X_OK) != 0)
		problem(k, NULL,
		        "ring_dir %s is not writable by this user (uid %ld); make the daemon's "
		        "user its owner (chown USER %s, or install -d -o USER %s)",
		        dir, (long)getuid(), dir, dir);
	else
		check_ring_space(k);
}

static PGconn *
connect_upstream(struct checker *k, bool replication)
{
	const struct pgconn_opts opts = {.app_name = "tailgated --check",
	                                 .replication = replication,
	                                 .connect_timeout_s = 10};
	PGconn *c = pgconn_open(k->conf->conninfo, &opts);
	struct pgconn_error e;

	if (PQstatus(c) != CONNECTION_OK) {
		problem(k, NULL, "%s",
		        pgconn_error(&e,
		                     replication ? "opening a replication connection"
		                                 : "opening a connection",
		                     c, NULL));
		PQfinish(c);
		return NULL;
	}
	return c;
}

/* One row of one column, or NULL (a problem is recorded when the query
 * failed).  The result is kept in *res for the caller to PQclear. */
static const char *
query1(struct checker *k, const struct conf_feed *cf, PGconn *c, const char *sql, int nparams,
       const char *const *params, PGresult **res)
{
	struct pgconn_error e;

	*res = PQexecParams(c, sql, nparams, NULL, params, NULL, NULL, 0);
	if (PQresultStatus(*res) != PGRES_TUPLES_OK) {
		problem(k, cf, "%s", pgconn_error(&e, "a catalog query", c, *res));
		return NULL;
	}
	if (PQntuples(*res) < 1 || PQgetisnull(*res, 0, 0))
		return NULL;
	return PQgetvalue(*res, 0, 0);
}

static void
check_pg_server(struct checker *k, PGconn *c)
{
	PGresult *r;
	const char *v;

	v = query1(k, NULL, c, "SELECT current_setting('wal_level')", 0, NULL, &r);
	if (v != NULL && strcmp(v, "logical") != 0)
		problem(k, NULL,
		        "wal_level is %s; logical replication needs wal_level = logical "
		        "(postgresql.conf, then restart the server)",
		        v);
	PQclear(r);
	v = query1(k, NULL, c,
	           "SELECT (rolreplication OR rolsuper)::text || ' ' || rolname "
	           "FROM pg_roles WHERE rolname = current_user",
	           0, NULL, &r);
	if (v != NULL && strncmp(v, "true", 4) != 0)
		problem(k, NULL, "role %s has no REPLICATION attribute: ALTER ROLE %s REPLICATION",
		        v + 6, v + 6);
	PQclear(r);
}

/* The configured columns, comma-separated as conf.c keeps them, that the
 * table lacks: one problem each. */
static void
check_pg_columns(struct checker *k, const struct conf_feed *cf, PGconn *c)
{
	const char *p = cf->columns;

	while (p != NULL && *p) {
		char name[256];
		size_t n;
		PGresult *r;
		const char *params[2] = {cf->table, name};

		while (*p == ' ' || *p == '\t' || *p == ',')
			p++;
		if (!*p)
			break;
		if (*p == '"') {
			const char *e = strchr(p + 1, '"');
			n = e ? (size_t)(e - p - 1) : strlen(p + 1);
			snprintf(name, sizeof(name), "%.*s", (int)n, p + 1);
			p = e ? e + 1 : p + strlen(p);
		} else {
			n = strcspn(p, ",");
			while (n > 0 && (p[n - 1] == ' ' || p[n - 1] == '\t'))
				n--;
			snprintf(name, sizeof(name), "%.*s", (int)n, p);
			p += strcspn(p, ",");
		}
		if (query1(k, cf, c,
		           "SELECT 1 FROM pg_attribute WHERE attrelid = $1::regclass "
		           "AND attname = $2 AND attnum > 0 AND NOT attisdropped",
		           2, params, &r) == NULL &&
		    PQresultStatus(r) == PGRES_TUPLES_OK)
			problem(k, cf, "table %s has no column \"%s\"", cf->table, name);
		PQclear(r);
	}
}

/* The feed's where, as the daemon will publish it: a publication made and
 * rolled back in one transaction, so PostgreSQL checks the filter (its
 * syntax, its columns, what a row filter may call) and the guard refuses
 * one that reads a column outside the replica identity. */
static void
check_pg_where(struct checker *k, const struct conf_feed *cf, PGconn *c)
{
	char pub[64], *pubid, *lit, *guard, *sql;
	struct pgconn_error e;
	PGresult *r;
	int n;

	snprintf(pub, sizeof(pub), "tailgate_check_%ld", (long)getpid());
	pubid = PQescapeIdentifier(c, pub, strlen(pub));
	lit = PQescapeLiteral(c, pub, strlen(pub));
	if (pubid == NULL || lit == NULL) {
		problem(k, cf, "out of memory");
		PQfreemem(pubid);
		PQfreemem(lit);
		return;
	}
	guard = source_pg_where_guard(lit);
	n = asprintf(&sql, "CREATE PUBLICATION %s FOR TABLE ONLY %s WHERE (%s); %s", pubid,
	             cf->table, cf->where, guard);
	free(guard);
	PQfreemem(pubid);
	PQfreemem(lit);
	if (n < 0) {
		problem(k, cf, "out of memory");
		return;
	}
	PQclear(PQexec(c, "BEGIN"));
	r = PQexec(c, sql);
	free(sql);
	if (PQresultStatus(r) != PGRES_COMMAND_OK)
		problem(k, cf, "where = %s: %s", cf->where,
		        pgconn_error(&e, "a trial publication", c, r));
	PQclear(r);
	PQclear(PQexec(c, "ROLLBACK"));
}

static void
check_pg_feed(struct checker *k, const struct conf_feed *cf, PGconn *c)
{
	const char *params[1] = {cf->table};
	PGresult *r;
	const char *v;

	v = query1(
	        k, cf, c,
	        "SELECT concat_ws(' ', c.relreplident, "
	        "  EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary), "
	        "  has_table_privilege(c.oid, 'SELECT'), "
	        "  pg_has_role(c.relowner, 'USAGE'), "
	        "  has_database_privilege(current_database(), 'CREATE'), c.relkind) "
	        "FROM pg_class c WHERE c.oid = to_regclass($1)",
	        1, params, &r);
	if (v == NULL) {
		if (PQresultStatus(r) == PGRES_TUPLES_OK)
			problem(k, cf, "table %s does not exist (or is not visible to this role)",
			        cf->table);
		PQclear(r);
		return;
	}
	char ident = v[0];
	bool pk = strncmp(v + 2, "t", 1) == 0;
	char sel, own, create, kind;
	if (sscanf(v + 2, "%*c %c %c %c %c", &sel, &own, &create, &kind) != 4)
		sel = own = create = kind = 't';
	const char *not_table = source_pg_not_table(kind);
	if (not_table != NULL) {
		problem(k, cf, "%s is %s, not a table: %s", cf->table, not_table,
		        SOURCE_PG_TABLES_ONLY);
		PQclear(r);
		return;
	}
	const char *unpublishable = source_pg_unpublishable(ident, pk);
	if (unpublishable != NULL)
		problem(k, cf,
		        "table %s has %s: it would be refused, since publishing it makes the "
		        "application's UPDATE and DELETE fail; ALTER TABLE %s REPLICA IDENTITY "
		        "FULL",
		        cf->table, unpublishable, cf->table);
	if (sel != 't')
		problem(k, cf, "this role may not read table %s: GRANT SELECT ON %s TO ROLE",
		        cf->table, cf->table);
	if (own != 't')
		problem(k, cf,
		        "this role does not own table %s, so it cannot create the publication "
		        "tailgate_%s: make it the owner (or a member of the owning role), or "
		        "create "
		        "the publication as its owner",
		        cf->table, cf->name);
	if (create != 't')
		problem(k, cf,
		        "this role may not create publications in the database: GRANT CREATE ON "
		        "DATABASE ... TO ROLE");
	PQclear(r);
	check_pg_columns(k, cf, c);
	if (cf->where != NULL && unpublishable == NULL && own == 't' && create == 't')
		check_pg_where(k, cf, c);
}

static void
check_postgresql(struct checker *k)
{
	PGconn *c = connect_upstream(k, false), *repl;

	if (c == NULL)
		return;
	check_pg_server(k, c);
	for (size_t i = 0; i < k->conf->nfeeds; i++)
		check_pg_feed(k, &k->conf->feeds[i], c);
	PQfinish(c);
	if ((repl = connect_upstream(k, true)) != NULL)
		PQfinish(repl);
}

static void
check_materialize(struct checker *k)
{
	PGconn *c = connect_upstream(k, false);

	if (c == NULL)
		return;
	for (size_t i = 0; i < k->conf->nfeeds; i++) {
		const struct conf_feed *cf = &k->conf->feeds[i];
		char *sql = NULL;
		int n = cf->view ? asprintf(&sql, "SELECT * FROM %s LIMIT 0", cf->view)
		                 : asprintf(&sql, "SELECT * FROM (%s) q LIMIT 0", cf->query);
		if (n < 0) {
			problem(k, cf, "out of memory");
			continue;
		}
		PGresult *r = PQexec(c, sql);
		struct pgconn_error e;
		if (PQresultStatus(r) != PGRES_TUPLES_OK)
			problem(k, cf, "%s", pgconn_error(&e, sql, c, r));
		PQclear(r);
		free(sql);
	}
	PQfinish(c);
}

int
check_run(const struct conf *conf, FILE *out)
{
	struct checker k = {conf, out, 0};

	check_ring_dir(&k);
	if (strcmp(conf->source, "postgresql") == 0)
		check_postgresql(&k);
	else
		check_materialize(&k);
	return k.problems;
}
