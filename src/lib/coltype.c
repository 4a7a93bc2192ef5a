/*
 * coltype.c - the built-in types tailgate knows by OID (coltype.h).
 *
 * OIDs are PostgreSQL's (pg_type.dat); Materialize reports the same OIDs
 * for the types it shares with PostgreSQL.  Types not listed here are
 * named by the daemon from pg_type and encoded as strings.
 */
#include "coltype.h"

#include <stddef.h>
#include <string.h>

static const struct {
	uint32_t oid;
	const char *name;
	enum coltype_kind kind;
} builtin[] = {
        {16, "bool", COLTYPE_BOOL},
        {17, "bytea", COLTYPE_STRING},
        {18, "char", COLTYPE_STRING},
        {19, "name", COLTYPE_STRING},
        {20, "int8", COLTYPE_NUMBER},
        {21, "int2", COLTYPE_NUMBER},
        {23, "int4", COLTYPE_NUMBER},
        {25, "text", COLTYPE_STRING},
        {26, "oid", COLTYPE_NUMBER},
        {114, "json", COLTYPE_JSON},
        {700, "float4", COLTYPE_NUMBER},
        {701, "float8", COLTYPE_NUMBER},
        {1042, "bpchar", COLTYPE_STRING},
        {1043, "varchar", COLTYPE_STRING},
        {1082, "date", COLTYPE_STRING},
        {1083, "time", COLTYPE_STRING},
        {1114, "timestamp", COLTYPE_STRING},
        {1184, "timestamptz", COLTYPE_STRING},
        {1186, "interval", COLTYPE_STRING},
        {1700, "numeric", COLTYPE_NUMBER},
        {2950, "uuid", COLTYPE_STRING},
        {3802, "jsonb", COLTYPE_JSON},
        /* Materialize's own types: their OIDs are looked up in pg_type by
         * the daemon, so they are matched by name only (oid 0). */
        {0, "uint2", COLTYPE_NUMBER},
        {0, "uint4", COLTYPE_NUMBER},
        {0, "uint8", COLTYPE_NUMBER},
        {0, "mz_timestamp", COLTYPE_NUMBER},
};

const char *
coltype_name(uint32_t oid)
{
	for (size_t i = 0; i < sizeof(builtin) / sizeof(builtin[0]); i++)
		if (oid != 0 && builtin[i].oid == oid)
			return builtin[i].name;
	return NULL;
}

enum coltype_kind
coltype_kind_of_oid(uint32_t oid)
{
	for (size_t i = 0; i < sizeof(builtin) / sizeof(builtin[0]); i++)
		if (oid != 0 && builtin[i].oid == oid)
			return builtin[i].kind;
	return COLTYPE_STRING;
}

enum coltype_kind
coltype_kind_of_name(const char *name)
{
	for (size_t i = 0; i < sizeof(builtin) / sizeof(builtin[0]); i++)
		if (strcmp(builtin[i].name, name) == 0)
			return builtin[i].kind;
	return COLTYPE_STRING;
}
