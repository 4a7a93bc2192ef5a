/*
 * coltype.h - how a column's PostgreSQL type becomes JSON.
 *
 * The daemon learns each column's type OID from the upstream's row
 * description and encodes values by kind; the responder reads the type
 * names back from the segment's column list to compare values in filters.
 *
 *   COLTYPE_NUMBER  int2 int4 int8 oid float4 float8 numeric: a JSON number
 *                   carrying the database's own text (NaN and +-Infinity,
 *                   which JSON cannot hold, become strings)
 *   COLTYPE_BOOL    bool: true/false
 *   COLTYPE_JSON    json jsonb: embedded as JSON
 *   COLTYPE_STRING  everything else: a JSON string of the text form
 * NULL is null in every kind.
 */
#ifndef TAILGATE_COLTYPE_H
#define TAILGATE_COLTYPE_H

#include <stdint.h>

enum coltype_kind { COLTYPE_STRING = 0, COLTYPE_NUMBER, COLTYPE_BOOL, COLTYPE_JSON };

/* Name of a well-known type OID ("int8"), or NULL when not built in. */
const char *coltype_name(uint32_t oid);
enum coltype_kind coltype_kind_of_oid(uint32_t oid);
enum coltype_kind coltype_kind_of_name(const char *name);

#endif
