/*
 * copytext.c - decoding one COPY text-format row (copytext.h).
 *
 * One pass finds the bytes that matter (tab, backslash, newline, CR)
 * eight at a time with an exact SWAR byte-equality mask, and visits only
 * those.  A field without a backslash is not copied: its value points into
 * the row.  A field with one is decoded into the parser's buffer; decoded
 * bytes never outnumber raw ones, so one reservation of the row's length
 * up front keeps that buffer from moving while pointers are taken.
 */
#include "config.h" /* autoconf: _GNU_SOURCE and friends, first */

#include "copytext.h"

#include "text.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void
grow_fields(struct copytext *ct)
{
	size_t cap = ct->cap_ ? ct->cap_ * 2 : 16;

	ct->vals = realloc(ct->vals, cap * sizeof(*ct->vals));
	ct->lens = realloc(ct->lens, cap * sizeof(*ct->lens));
	if (ct->vals == NULL || ct->lens == NULL) {
		fprintf(stderr, "tailgate: out of memory parsing a COPY row\n");
		abort();
	}
	ct->cap_ = cap;
}

#define ONES 0x0101010101010101ull
#define LOW7 0x7f7f7f7f7f7f7f7full

/* 0x80 in every byte of w equal to b, exactly (no false positives). */
static inline uint64_t
eq_mask(uint64_t w, unsigned char b)
{
	uint64_t x = w ^ (ONES * b);

	return ~(((x & LOW7) + LOW7) | x | LOW7);
}

/* The bytes COPY text gives meaning to: tab, backslash, newline, CR. */
static inline uint64_t
special_mask(uint64_t w)
{
	return eq_mask(w, '\t') | eq_mask(w, '\\') | eq_mask(w, '\n') | eq_mask(w, '\r');
}

/* Decode the escapes of one field [p, p + n) to o; returns the end.  The
 * field was delimited by copytext_parse, so a backslash is never last. */
static char *
decode(const unsigned char *p, size_t n, char *o)
{
	size_t i = 0;

	while (i < n) {
		unsigned char c = p[i++];
		if (c != '\\') {
			*o++ = (char)c;
			continue;
		}
		c = p[i++];
		switch (c) {
		case 'b':
			*o++ = '\b';
			break;
		case 'f':
			*o++ = '\f';
			break;
		case 'n':
			*o++ = '\n';
			break;
		case 'r':
			*o++ = '\r';
			break;
		case 't':
			*o++ = '\t';
			break;
		case 'v':
			*o++ = '\v';
			break;
		case '0':
		case '1':
		case '2':
		case '3':
		case '4':
		case '5':
		case '6':
		case '7': {
			unsigned v = c - '0';
			for (int k = 0; k < 2 && i < n && p[i] >= '0' && p[i] <= '7'; k++)
				v = (v << 3) + (unsigned)(p[i++] - '0');
			*o++ = (char)(v & 0xff);
			break;
		}
		case 'x': {
			int h = i < n ? hex_value(p[i]) : -1;
			if (h < 0) {
				*o++ = 'x';
				break;
			}
			unsigned v = (unsigned)h;
			i++;
			if (i < n && (h = hex_value(p[i])) >= 0) {
				v = (v << 4) + (unsigned)h;
				i++;
			}
			*o++ = (char)v;
			break;
		}
		default:
			*o++ = (char)c; /* \\ and any other byte: itself */
			break;
		}
	}
	return o;
}

static void
add_field(struct copytext *ct, const unsigned char *p, size_t start, size_t end, bool escaped)
{
	if (ct->nfields == ct->cap_)
		grow_fields(ct);
	if (!escaped) {
		/* No backslash: the raw bytes are the value. */
		ct->vals[ct->nfields] = (const char *)p + start;
		ct->lens[ct->nfields] = end - start;
	} else if (end - start == 2 && p[start] == '\\' && p[start + 1] == 'N') {
		ct->vals[ct->nfields] = NULL;
		ct->lens[ct->nfields] = 0;
	} else {
		char *o = ct->buf.p + ct->buf.len;
		char *e = decode(p + start, end - start, o);
		ct->vals[ct->nfields] = o;
		ct->lens[ct->nfields] = (size_t)(e - o);
		ct->buf.len += (size_t)(e - o);
	}
	ct->nfields++;
}

long
copytext_parse(struct copytext *ct, const char *row, size_t len)
{
	const unsigned char *p = (const unsigned char *)row;
	size_t fstart = 0, skip_to = 0;
	bool escaped = false;

	ct->nfields = 0;
	ct->err[0] = '\0';
	if (len > 0 && p[len - 1] == '\n')
		len--;
	/* Decoded bytes never outnumber raw ones: one reservation. */
	ct->buf.len = 0;
	bbuf_reserve(&ct->buf, len + 1);

	for (size_t i = 0; i < len; i += 8) {
		uint64_t w = 0x6161616161616161ull, m;
		memcpy(&w, p + i, len - i < 8 ? len - i : 8);
		for (m = special_mask(w); m != 0; m &= m - 1) {
			size_t j = i + (size_t)(__builtin_ctzll(m) >> 3);
			if (j < skip_to)
				continue; /* the byte after a backslash */
			switch (p[j]) {
			case '\t':
				add_field(ct, p, fstart, j, escaped);
				fstart = j + 1;
				escaped = false;
				break;
			case '\\':
				if (j + 1 >= len) {
					snprintf(ct->err, sizeof(ct->err),
					         "backslash at the end of the row (field %zu)",
					         ct->nfields + 1);
					return -1;
				}
				escaped = true;
				skip_to = j + 2;
				break;
			default:
				snprintf(ct->err, sizeof(ct->err),
				         "raw %s at byte %zu (COPY escapes it)",
				         p[j] == '\n' ? "newline" : "carriage return", j);
				return -1;
			}
		}
	}
	add_field(ct, p, fstart, len, escaped);
	return (long)ct->nfields;
}

void
copytext_free(struct copytext *ct)
{
	bbuf_free(&ct->buf);
	free(ct->vals);
	free(ct->lens);
	memset(ct, 0, sizeof(*ct));
}
