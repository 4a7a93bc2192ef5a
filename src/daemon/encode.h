/*
 * encode.h - one row of upstream text values as a JSON array, typed by
 * each column's kind (coltype.h).  Both sources use it.
 *
 *   COLTYPE_NUMBER  the database's own text, unchanged, when it is a
 *                   JSON number (RFC 8259 grammar); NaN, Infinity,
 *                   -Infinity and anything else that is not become strings
 *   COLTYPE_BOOL    t/true -> true, f/false -> false; other text: a string
 *   COLTYPE_JSON    embedded when the whole text is one strict RFC 8259
 *                   JSON value in valid UTF-8 (nesting up to 1024 deep);
 *                   outer whitespace is trimmed and tab, CR and newline
 *                   between tokens become spaces, so a batch stays one
 *                   line; otherwise a string
 *   COLTYPE_STRING  a JSON string
 *   NULL (val == NULL) is null in every kind.
 *
 * Strings escape '"', '\\' and every control character below 0x20
 * (\b \f \n \r \t, else \u00XX with lowercase hex), byte for byte what
 * json-c writes with JSON_C_TO_STRING_NOSLASHESCAPE.  Invalid UTF-8
 * (bad lead or continuation bytes, overlong forms, surrogates, code
 * points above U+10FFFF, truncated sequences) is replaced by U+FFFD, one
 * per maximal invalid subpart, so a row is never lost and every host
 * produces the same bytes for the same input; ENCODE_REPLACED says it
 * happened.  A NUL byte (possible through COPY's \0 escapes) is \u0000.
 *
 * Output is appended to a bbuf (batch.h), which dies on allocation
 * failure.  No state: safe from any thread.  tests/test_encode.c checks
 * strings byte for byte against json-c and the JSON validator against
 * json-c's parser (json-c's own tokenizer is not strict enough to decide
 * what may be embedded: it takes single quotes and NaN).
 */
#ifndef TAILGATE_ENCODE_H
#define TAILGATE_ENCODE_H

#include <stdbool.h>
#include <stddef.h>

#include "buf.h"
#include "coltype.h"

/* What encode_value/encode_row had to do; 0 when the text was taken as is. */
enum {
	ENCODE_REPLACED = 1 << 0, /* invalid UTF-8 replaced by U+FFFD */
	ENCODE_AS_STRING = 1 << 1 /* a number, bool or json value that was not
	                           * one became a string */
};

/* Append one value.  val == NULL is SQL NULL.  Returns ENCODE_* flags. */
int encode_value(struct bbuf *out, enum coltype_kind kind, const char *val, size_t len);

/* Append "[v1,v2,...]".  vals[i] == NULL is NULL.  Returns the OR of the
 * values' flags. */
int encode_row(struct bbuf *out, const enum coltype_kind *kinds, size_t ncols,
               const char *const *vals, const size_t *lens);

/* Append s as a JSON string (quotes included).  Returns ENCODE_* flags. */
int encode_string(struct bbuf *out, const char *s, size_t len);

/* True when s is exactly one JSON number: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)? */
bool encode_is_json_number(const char *s, size_t len);

/* True when s is valid UTF-8 (no surrogates, overlongs, or > U+10FFFF). */
bool encode_utf8_valid(const char *s, size_t len);

/* True when s is exactly one strict JSON value, surrounding whitespace
 * allowed.  Does not check UTF-8 (see encode_utf8_valid). */
bool encode_is_json(const char *s, size_t len);

#endif
