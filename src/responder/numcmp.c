/*
 * numcmp.c - numbers compared the way PostgreSQL compares them (numcmp.h).
 */
#include "numcmp.h"

#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* What numeric_in (PostgreSQL 15) can store: the exponent is read up to
 * INT_MAX/2, then the value must fit 131072 digits before the point and
 * 16383 after it ("value overflows numeric format"). */
#define NUMCMP_MAX_EXP (1L << 30)
#define NUMCMP_MAX_INT_DIGITS 131072
#define NUMCMP_MAX_SCALE 16383

enum numcmp_class
numcmp_class_of_type(const char *type)
{
	if (type == NULL)
		return NUMCMP_EXACT;
	if (strcmp(type, "float4") == 0 || strcmp(type, "real") == 0)
		return NUMCMP_FLOAT4;
	if (strcmp(type, "float8") == 0 || strcmp(type, "double precision") == 0)
		return NUMCMP_FLOAT8;
	return NUMCMP_EXACT;
}

/* NaN, Infinity and their spellings; true when s is one of them. */
static bool
parse_special(const char *s, size_t n, enum numcmp_rank *rank)
{
	bool neg = false;

	if (n == 3 && strncasecmp(s, "nan", 3) == 0) {
		*rank = NUMCMP_NAN;
		return true;
	}
	if (n > 0 && (s[0] == '-' || s[0] == '+')) {
		neg = s[0] == '-';
		s++;
		n--;
	}
	if ((n == 3 && strncasecmp(s, "inf", 3) == 0) ||
	    (n == 8 && strncasecmp(s, "infinity", 8) == 0)) {
		*rank = neg ? NUMCMP_NEG_INF : NUMCMP_POS_INF;
		return true;
	}
	return false;
}

/* [+-]digits[.digits][e[+-]digits], or [+-].digits[...]: the significant
 * digits into buf, leading and trailing zeros dropped. */
static bool
parse_decimal(const char *s, size_t n, char *buf, struct numcmp *out, const char **why)
{
	size_t i = 0, nd = 0, first;
	long point = 0, e = 0;
	bool any = false, eneg = false;

	out->sign = 1;
	if (i < n && (s[i] == '-' || s[i] == '+'))
		out->sign = s[i++] == '-' ? -1 : 1;
	for (; i < n && s[i] >= '0' && s[i] <= '9'; i++, any = true) {
		buf[nd++] = s[i];
		point++;
	}
	if (i < n && s[i] == '.')
		for (i++; i < n && s[i] >= '0' && s[i] <= '9'; i++, any = true)
			buf[nd++] = s[i];
	if (!any) {
		*why = "not a number";
		return false;
	}
	if (i < n && (s[i] == 'e' || s[i] == 'E')) {
		if (++i < n && (s[i] == '-' || s[i] == '+'))
			eneg = s[i++] == '-';
		if (i == n) {
			*why = "not a number";
			return false;
		}
		for (; i < n && s[i] >= '0' && s[i] <= '9'; i++)
			if ((e = e * 10 + (s[i] - '0')) > NUMCMP_MAX_EXP) {
				*why = "out of range for type numeric";
				return false;
			}
		if (eneg)
			e = -e;
	}
	if (i != n) {
		*why = "not a number";
		return false;
	}
	long scale = (long)nd - point - e; /* digits after the point, as numeric_in counts */
	if (scale > NUMCMP_MAX_SCALE || point + e > NUMCMP_MAX_INT_DIGITS) {
		*why = "out of range for type numeric";
		return false;
	}
	for (first = 0; first < nd && buf[first] == '0'; first++)
		point--;
	while (nd > first && buf[nd - 1] == '0')
		nd--;
	out->digits = buf + first;
	out->nd = nd - first;
	out->exp = point + e;
	if (out->nd == 0) {
		out->sign = 0; /* -0 is 0 */
		out->exp = 0;
	}
	return true;
}

bool
numcmp_parse(const char *s, size_t n, enum numcmp_class cls, char *buf, struct numcmp *out,
             const char **why)
{
	memset(out, 0, sizeof(*out));
	*why = NULL;
	out->is_float = cls != NUMCMP_EXACT;
	/* numeric_in and float8in skip white space around the number. */
	while (n > 0 && isspace((unsigned char)s[0])) {
		s++;
		n--;
	}
	while (n > 0 && isspace((unsigned char)s[n - 1]))
		n--;
	if (parse_special(s, n, &out->rank))
		return true;
	out->rank = NUMCMP_FINITE;
	if (!parse_decimal(s, n, buf, out, why))
		return false;
	if (cls == NUMCMP_EXACT)
		return true;

	/* Floats: the syntax is checked, so strtod/strtof see a plain decimal
	 * (never hex, inf or nan).  buf holds the digits only: parse s. */
	char small[128], *text = n < sizeof(small) ? small : malloc(n + 1);
	if (text == NULL) {
		*why = "out of memory";
		return false;
	}
	memcpy(text, s, n);
	text[n] = '\0';
	errno = 0;
	if (cls == NUMCMP_FLOAT4) {
		out->d = (double)strtof(text, NULL);
	} else {
		out->d = strtod(text, NULL);
		/* float8in's rule: underflow to 0 or overflow is an error. */
		if (errno == ERANGE && (out->d == 0.0 || isinf(out->d)) && out->sign != 0)
			*why = "out of range for type double precision";
	}
	if (text != small)
		free(text);
	return *why == NULL;
}

static int
cmp_magnitude(const struct numcmp *a, const struct numcmp *b)
{
	size_t n = a->nd < b->nd ? a->nd : b->nd;
	int c;

	if (a->exp != b->exp)
		return a->exp < b->exp ? -1 : 1;
	if ((c = memcmp(a->digits, b->digits, n)) != 0)
		return c < 0 ? -1 : 1;
	/* Equal prefix: no trailing zeros, so the longer one is larger. */
	return a->nd < b->nd ? -1 : a->nd > b->nd;
}

int
numcmp_compare(const struct numcmp *a, const struct numcmp *b)
{
	assert(a->is_float == b->is_float);
	if (a->rank != b->rank)
		return a->rank < b->rank ? -1 : 1;
	if (a->rank != NUMCMP_FINITE)
		return 0; /* NaN = NaN, Infinity = Infinity */
	if (a->is_float)
		return a->d < b->d ? -1 : a->d > b->d; /* -0.0 == 0.0 */
	if (a->sign != b->sign)
		return a->sign < b->sign ? -1 : 1;
	return a->sign * cmp_magnitude(a, b);
}
