/*
 * encode.c - upstream text values to typed JSON (encode.h).
 *
 * A hand encoder, because it runs once per value on the daemon's hot
 * path (json-c would build an object per value and re-format numbers).
 * tests/test_encode.c keeps it byte-identical to json-c's string
 * encoder, checks every output parses back with json-c, and checks the
 * strict JSON validator below against json-c.
 */
#include "config.h" /* autoconf: _GNU_SOURCE and friends, first */

#include "encode.h"

#include "text.h"

#include <stdint.h>
#include <string.h>

/* Nesting accepted in json values (json-c's default is 32). */
#define ENCODE_JSON_DEPTH 1024

static const char hexdig[] = "0123456789abcdef";

/* Non-zero for the ASCII bytes a JSON string must escape. */
static const unsigned char needs_escape[128] = {
        1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0x00 */
        1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0x10 */
        0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 0x20: '"' */
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, /* 0x50: '\\' */
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        0, 0, 0, 0, 0, 0, 0, 0,
};

bool
encode_utf8_valid(const char *s, size_t len)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t i = 0, bad;

	while (i < len) {
		size_t n;
		if (p[i] < 0x80) {
			i++;
			continue;
		}
		n = utf8_seq_len(p + i, len - i, &bad);
		if (n == 0)
			return false;
		i += n;
	}
	return true;
}

/*
 * Write s as a JSON string at o, which has room for 6 * len + 2 bytes
 * (the worst case: every byte a \u00XX escape; a U+FFFD replacement is
 * 3 bytes for at least 1 input byte).  Returns the end and ENCODE_* flags
 * in *flags.  Runs of plain ASCII are found 8 bytes at a time.
 */
static char *
put_string(char *o, const char *s, size_t len, int *flags)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t i = 0, bad;

	*o++ = '"';
	while (i < len) {
		size_t start = i;
		/* Skip plain ASCII: no byte < 0x20, '"', '\\' or >= 0x80. */
		while (i + 8 <= len) {
			uint64_t w;
			memcpy(&w, p + i, 8);
			uint64_t hi = w & 0x8080808080808080ull;
			uint64_t lo = (w - 0x2020202020202020ull) & ~w & 0x8080808080808080ull;
			uint64_t q = w ^ 0x2222222222222222ull;
			uint64_t quote = (q - 0x0101010101010101ull) & ~q & 0x8080808080808080ull;
			uint64_t b = w ^ 0x5c5c5c5c5c5c5c5cull;
			uint64_t bsl = (b - 0x0101010101010101ull) & ~b & 0x8080808080808080ull;
			if (hi | lo | quote | bsl)
				break;
			i += 8;
		}
		while (i < len && p[i] < 0x80 && !needs_escape[p[i]])
			i++;
		memcpy(o, s + start, i - start);
		o += i - start;
		if (i >= len)
			break;

		unsigned char c = p[i];
		if (c < 0x80) {
			*o++ = '\\';
			switch (c) {
			case '"':
				*o++ = '"';
				break;
			case '\\':
				*o++ = '\\';
				break;
			case '\b':
				*o++ = 'b';
				break;
			case '\f':
				*o++ = 'f';
				break;
			case '\n':
				*o++ = 'n';
				break;
			case '\r':
				*o++ = 'r';
				break;
			case '\t':
				*o++ = 't';
				break;
			default:
				memcpy(o, "u00", 3);
				o[3] = hexdig[c >> 4];
				o[4] = hexdig[c & 15];
				o += 5;
				break;
			}
			i++;
			continue;
		}
		size_t n = utf8_seq_len(p + i, len - i, &bad);
		if (n > 0) {
			memcpy(o, s + i, n);
			o += n;
			i += n;
			continue;
		}
		memcpy(o, "\xef\xbf\xbd", 3); /* U+FFFD */
		o += 3;
		*flags |= ENCODE_REPLACED;
		i += bad;
	}
	*o++ = '"';
	return o;
}

int
encode_string(struct bbuf *out, const char *s, size_t len)
{
	int flags = 0;

	bbuf_reserve(out, 6 * len + 2);
	out->len = (size_t)(put_string(out->p + out->len, s, len, &flags) - out->p);
	return flags;
}

bool
encode_is_json_number(const char *s, size_t len)
{
	size_t i = 0;

	if (i < len && s[i] == '-')
		i++;
	if (i >= len)
		return false;
	if (s[i] == '0') {
		i++;
	} else if (s[i] >= '1' && s[i] <= '9') {
		while (i < len && s[i] >= '0' && s[i] <= '9')
			i++;
	} else {
		return false;
	}
	if (i < len && s[i] == '.') {
		size_t d = ++i;
		while (i < len && s[i] >= '0' && s[i] <= '9')
			i++;
		if (i == d)
			return false;
	}
	if (i < len && (s[i] == 'e' || s[i] == 'E')) {
		size_t d;
		i++;
		if (i < len && (s[i] == '+' || s[i] == '-'))
			i++;
		d = i;
		while (i < len && s[i] >= '0' && s[i] <= '9')
			i++;
		if (i == d)
			return false;
	}
	return i == len;
}

static bool
json_space(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* Trim JSON whitespace from both ends of [*s, *s + *len). */
static void
trim_json_space(const char **s, size_t *len)
{
	while (*len > 0 && json_space((*s)[0])) {
		(*s)++;
		(*len)--;
	}
	while (*len > 0 && json_space((*s)[*len - 1]))
		(*len)--;
}

/*
 * A strict RFC 8259 validator: json-c's tokenizer (0.16), even with
 * JSON_TOKENER_STRICT, accepts single-quoted strings, NaN and raw control
 * characters inside strings, none of which may reach a client.  Arrays
 * and objects nest through an explicit stack (no recursion); valid UTF-8
 * is checked separately by the caller.
 */
static size_t
skip_ws(const char *s, size_t i, size_t len)
{
	while (i < len && json_space(s[i]))
		i++;
	return i;
}

/* A string at s[i] == '"'; returns the index after it, or 0. */
static size_t
scan_string(const char *s, size_t i, size_t len)
{
	for (i++; i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c == '"')
			return i + 1;
		if (c < 0x20)
			return 0;
		if (c != '\\')
			continue;
		if (++i >= len)
			return 0;
		switch (s[i]) {
		case '"':
		case '\\':
		case '/':
		case 'b':
		case 'f':
		case 'n':
		case 'r':
		case 't':
			break;
		case 'u':
			for (int k = 0; k < 4; k++) {
				char h = ++i < len ? s[i] : 0;
				if (!((h >= '0' && h <= '9') || (h >= 'a' && h <= 'f') ||
				      (h >= 'A' && h <= 'F')))
					return 0;
			}
			break;
		default:
			return 0;
		}
	}
	return 0;
}

/* A scalar (number or literal) at s[i]; returns the index after it, or 0. */
static size_t
scan_scalar(const char *s, size_t i, size_t len)
{
	static const char *const lits[] = {"true", "false", "null"};
	size_t j = i;

	for (size_t k = 0; k < 3; k++) {
		size_t n = strlen(lits[k]);
		if (len - i >= n && memcmp(s + i, lits[k], n) == 0)
			return i + n;
	}
	while (j < len && (s[j] == '-' || s[j] == '+' || s[j] == '.' || s[j] == 'e' ||
	                   s[j] == 'E' || (s[j] >= '0' && s[j] <= '9')))
		j++;
	if (j == i || !encode_is_json_number(s + i, j - i))
		return 0;
	return j;
}

bool
encode_is_json(const char *s, size_t len)
{
	char stack[ENCODE_JSON_DEPTH]; /* '[' or '{' per open container */
	int depth = 0;
	size_t i;

	trim_json_space(&s, &len);
	i = 0;
	for (;;) {
		/* Expect a value at s[i]. */
		i = skip_ws(s, i, len);
		if (i >= len)
			return false;
		if (s[i] == '[' || s[i] == '{') {
			if (depth == ENCODE_JSON_DEPTH)
				return false;
			stack[depth++] = s[i];
			i = skip_ws(s, i + 1, len);
			if (i < len && s[i] == (stack[depth - 1] == '[' ? ']' : '}')) {
				depth--;
				i++;
				goto after_value;
			}
			if (stack[depth - 1] == '{')
				goto member_key;
			continue;
		}
		if (s[i] == '"')
			i = scan_string(s, i, len);
		else
			i = scan_scalar(s, i, len);
		if (i == 0)
			return false;
	after_value:
		/* After a value: end, a separator, or a closing bracket. */
		for (;;) {
			i = skip_ws(s, i, len);
			if (depth == 0)
				return i == len;
			if (i >= len)
				return false;
			if (s[i] == ',') {
				i++;
				if (stack[depth - 1] == '{')
					goto member_key;
				break; /* next array element */
			}
			if (s[i] != (stack[depth - 1] == '[' ? ']' : '}'))
				return false;
			depth--;
			i++;
		}
		continue;
	member_key:
		i = skip_ws(s, i, len);
		if (i >= len || s[i] != '"' || (i = scan_string(s, i, len)) == 0)
			return false;
		i = skip_ws(s, i, len);
		if (i >= len || s[i] != ':')
			return false;
		i++;
	}
}

/* Embed a JSON value checked by encode_is_json.  Strict JSON has raw
 * tab, newline and carriage return only as whitespace between tokens, so
 * they become spaces: a batch stays one line (SSE, JSON lines). */
static char *
put_json(char *o, const char *s, size_t len)
{
	trim_json_space(&s, &len);
	for (size_t i = 0; i < len; i++)
		o[i] = (s[i] == '\n' || s[i] == '\r' || s[i] == '\t') ? ' ' : s[i];
	return o + len;
}

/* One value at o (room reserved by the caller: 6 * len + 8). */
static char *
put_value(char *o, enum coltype_kind kind, const char *val, size_t len, int *flags)
{
	if (val == NULL) {
		memcpy(o, "null", 4);
		return o + 4;
	}
	switch (kind) {
	case COLTYPE_NUMBER:
		if (encode_is_json_number(val, len)) {
			memcpy(o, val, len);
			return o + len;
		}
		/* NaN, Infinity and -Infinity are expected; only other text is
		 * worth a flag. */
		if (!((len == 3 && memcmp(val, "NaN", 3) == 0) ||
		      (len == 8 && memcmp(val, "Infinity", 8) == 0) ||
		      (len == 9 && memcmp(val, "-Infinity", 9) == 0)))
			*flags |= ENCODE_AS_STRING;
		return put_string(o, val, len, flags);
	case COLTYPE_BOOL:
		if ((len == 1 && val[0] == 't') || (len == 4 && memcmp(val, "true", 4) == 0)) {
			memcpy(o, "true", 4);
			return o + 4;
		}
		if ((len == 1 && val[0] == 'f') || (len == 5 && memcmp(val, "false", 5) == 0)) {
			memcpy(o, "false", 5);
			return o + 5;
		}
		*flags |= ENCODE_AS_STRING;
		return put_string(o, val, len, flags);
	case COLTYPE_JSON:
		if (encode_utf8_valid(val, len) && encode_is_json(val, len))
			return put_json(o, val, len);
		*flags |= ENCODE_AS_STRING;
		return put_string(o, val, len, flags);
	case COLTYPE_STRING:
	default:
		return put_string(o, val, len, flags);
	}
}

int
encode_value(struct bbuf *out, enum coltype_kind kind, const char *val, size_t len)
{
	int flags = 0;

	bbuf_reserve(out, 6 * len + 8);
	out->len = (size_t)(put_value(out->p + out->len, kind, val, len, &flags) - out->p);
	return flags;
}

int
encode_row(struct bbuf *out, const enum coltype_kind *kinds, size_t ncols, const char *const *vals,
           const size_t *lens)
{
	size_t room = 2;
	int flags = 0;
	char *o;

	/* One reservation for the worst case of the whole row. */
	for (size_t i = 0; i < ncols; i++)
		room += 6 * lens[i] + 9;
	bbuf_reserve(out, room);
	o = out->p + out->len;
	*o++ = '[';
	for (size_t i = 0; i < ncols; i++) {
		if (i > 0)
			*o++ = ',';
		o = put_value(o, kinds[i], vals[i], lens[i], &flags);
	}
	*o++ = ']';
	out->len = (size_t)(o - out->p);
	return flags;
}
