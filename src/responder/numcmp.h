/*
 * numcmp.h - numbers compared the way PostgreSQL compares them.
 *
 * A filter `col=op.C` keeps the rows `WHERE col op C` keeps, with C read
 * as an SQL numeric literal.  PostgreSQL then compares:
 *
 *   int2 int4 int8 oid numeric (and Materialize's uint*, mz_timestamp)
 *           exactly, as numeric: sign, then magnitude digit by digit.
 *           Never through floating point, so 39-digit numerics and int8
 *           values near 2^63 compare right.
 *   float8  as double precision: C is rounded once to the nearest double.
 *   float4  the column's float4 widened to double against C as a double
 *           (the float4 = numeric operator does not exist; float48 does).
 *           So 0.1::float4 = 0.1 is false, as in PostgreSQL.
 *
 * In both orders NaN equals NaN and sorts above every other value, and
 * Infinity sorts above every finite value; -0 equals 0.
 *
 * Values are the database's own text as the daemon encodes it: a JSON
 * number, or the strings NaN, Infinity, -Infinity.  No allocation: the
 * caller provides a buffer at least as long as the text.
 */
#ifndef TAILGATE_NUMCMP_H
#define TAILGATE_NUMCMP_H

#include <stdbool.h>
#include <stddef.h>

enum numcmp_class { NUMCMP_EXACT = 0, NUMCMP_FLOAT4, NUMCMP_FLOAT8 };

/* Order classes: -Infinity < finite < Infinity < NaN. */
enum numcmp_rank { NUMCMP_NEG_INF = 0, NUMCMP_FINITE, NUMCMP_POS_INF, NUMCMP_NAN };

struct numcmp {
	enum numcmp_rank rank;
	bool is_float; /* parsed in a float class: compare d */
	/* NUMCMP_FINITE, exact classes: value = sign * 0.DIGITS * 10^exp, with
	 * no leading or trailing zeros in DIGITS; zero is sign 0, nd 0. */
	int sign;
	long exp;
	const char *digits;
	size_t nd;
	/* NUMCMP_FINITE, float classes: the value as a double. */
	double d;
};

/* The class a column's type name compares in. */
enum numcmp_class numcmp_class_of_type(const char *type);

/* Parse the text s[0..n) (a decimal with optional exponent, or NaN,
 * Infinity, -Infinity; a constant may also be written inf, +inf, nan in
 * any case) in class cls.  A float4 column's values parse as
 * NUMCMP_FLOAT4 (the float4 stored), its constants as NUMCMP_FLOAT8.
 * White space around the text is skipped, as numeric_in and float8in do.  buf must hold n bytes and
 * stay alive as long as out is used.  false with *why set when the text is no number, or a constant
 * out of range for the class (as PostgreSQL refuses it). */
bool numcmp_parse(const char *s, size_t n, enum numcmp_class cls, char *buf, struct numcmp *out,
                  const char **why);

/* <0, 0 or >0 as a compares to b (both parsed for the same class). */
int numcmp_compare(const struct numcmp *a, const struct numcmp *b);

#endif
