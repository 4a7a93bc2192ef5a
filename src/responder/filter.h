/*
 * filter.h - PostgREST-style row filters evaluated on a batch's rows.
 *
 * A filter is compiled once per request against the feed's column list
 * (the segment's JSON [{"name":..,"type":..},..]) and then tested on rows
 * picked out of a batch through its row index: a small scanner finds the
 * k-th element of a row's JSON array without a parser.  Comparison follows
 * the column's kind (coltype.h):
 *
 *   number  as PostgreSQL compares the column's type with a numeric
 *           constant (numcmp.h): exactly for integers and numeric, as
 *           double precision for float4/float8; NaN = NaN above
 *           everything, Infinity above every finite value, -0 = 0
 *   string  by the decoded text, bytewise: PostgreSQL's "C" collation
 *   bool    true/false (false < true)
 *   json    only eq.null / neq.null (400 otherwise)
 *
 * NULL behaves as in SQL, with one documented difference: eq.null and
 * neq.null are IS NULL and IS NOT NULL, and an in. list holding null
 * matches null; any other comparison with null is false.  Several filters are ANDed.
 *
 * Thread safety: a compiled filter is immutable; filter_match may be
 * called from any number of threads at once.
 */
#ifndef TAILGATE_FILTER_H
#define TAILGATE_FILTER_H

#include "coltype.h"
#include "http_params.h"
#include "numcmp.h"

#include <stdbool.h>
#include <stddef.h>

struct filter_cols {
	int n;
	char **names;
	enum coltype_kind *kinds;
	enum numcmp_class *numclass; /* COLTYPE_NUMBER: how it compares */
};

/* Parse the segment's column list.  false on malformed JSON. */
bool filter_cols_parse(const char *columns_json, struct filter_cols *out)
        __attribute__((warn_unused_result));
void filter_cols_free(struct filter_cols *c);

struct filter;

/* Compile req's filters; NULL with a client-facing message in err (the
 * reply is 400) when a column is unknown or a value does not fit its
 * column's kind.  A request without filters compiles to NULL with
 * err[0] == '\0': check hp_request.n_filters first. */
struct filter *filter_compile(const struct hp_request *req, const struct filter_cols *cols,
                              char *err, size_t errlen);
void filter_free(struct filter *f);

/* Does the row (one JSON array, as the batch row index delimits it) pass?
 * A row too short or malformed for a filtered column never passes. */
bool filter_match(const struct filter *f, const char *row, size_t len);

/* The k-th (0-based) element of the JSON array row[0..len): its first byte
 * and length.  false when the array has fewer elements or is malformed. */
bool json_array_nth(const char *row, size_t len, int k, const char **elem, size_t *elen);

#endif
