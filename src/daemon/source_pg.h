/*
 * source_pg.h - the PostgreSQL logical-replication source kind
 * ("postgresql"), for the table of kinds in source.c.  See source_pg.c
 * for what a session does, and source.h for how the daemon drives it.
 *
 * Per feed (conf.h): table = [schema.]table (required), columns = "a,
 * b" (default: all, in table order), where = a row filter (a PostgreSQL
 * 15 publication row filter, also the snapshot's WHERE), slot = NAME
 * (default tailgate_FEED; a temporary slot gets a random suffix),
 * permanent_slot = yes (the slot survives the daemon: a restart that still
 * holds the feed's state resumes without a snapshot).
 *
 * The server needs wal_level = logical and a free replication slot and WAL
 * sender per feed; the user needs REPLICATION (or superuser) and CREATE on
 * the database (for the publication tailgate_FEED).  Tables whose rows are
 * updated or deleted need REPLICA IDENTITY FULL.
 */
#ifndef TAILGATE_SOURCE_PG_H
#define TAILGATE_SOURCE_PG_H

#include "source.h"

#include <stdbool.h>

extern const struct source_ops source_pg_ops;

/* Why a table with this replica identity (pg_class.relreplident) cannot
 * be published without making the application's UPDATE and DELETE on it
 * fail ("REPLICA IDENTITY NOTHING", "no primary key and REPLICA IDENTITY
 * DEFAULT"), or NULL when it can.  The daemon refuses such a feed and
 * tailgated --check reports it: one rule for both. */
const char *source_pg_unpublishable(char replident, bool has_pk);

/* What a relation of this pg_class.relkind is ("a view", "a materialized
 * view", ...) when logical replication cannot follow it, or NULL for a
 * table or a partitioned table.  SOURCE_PG_TABLES_ONLY is the fix both
 * the daemon and tailgated --check name. */
const char *source_pg_not_table(char relkind);

/*
 * A row filter (where) that reads a column outside the table's replica
 * identity makes PostgreSQL refuse the application's UPDATE and DELETE on
 * the table while the publication exists ("Column used in the publication
 * WHERE expression is not part of the replica identity").  This returns a
 * DO statement (malloc'd) to run right after CREATE or ALTER PUBLICATION
 * pub_literal (an SQL string literal) in the same transaction: it raises
 * SQLSTATE 55000 with SOURCE_PG_WHERE_REFUSED and the fix when the
 * publication's filter reads such a column, so the publication is never
 * committed.  Nothing for REPLICA IDENTITY FULL.
 */
char *source_pg_where_guard(const char *pub_literal);
#define SOURCE_PG_WHERE_REFUSED "refusing the where filter"
#define SOURCE_PG_TABLES_ONLY                                                                      \
	"PostgreSQL logical replication follows tables only: set table = the table under it "      \
	"(where = its filter), or serve the view from Materialize"

#endif
