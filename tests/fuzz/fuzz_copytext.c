/*
 * fuzz_copytext.c - libFuzzer target: the COPY text-format row decoder
 * (src/daemon/copytext.c) against a plain byte-at-a-time reference decoder
 * written here from copytext.h's description of the format.
 *
 * Both must agree on every input: malformed or not, and when not, the
 * number of fields and each field's bytes (NULL included).  The decoder's
 * SWAR scan (eight bytes at a time, a backslash skipping the byte after it
 * across word boundaries) is what this checks; ASan/UBSan check that
 * nothing reads outside the row or writes outside the parser's buffer.
 * The row is copied into an exact-size allocation so a read past its end
 * is caught.
 *
 * fuzz-sources: src/daemon/copytext.c src/lib/batch.c
 */
#include "copytext.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct ref_field {
	bool null;
	size_t off, len; /* into ref.out */
};

static struct {
	unsigned char *out;
	struct ref_field *f;
	size_t nf;
} ref;

static int
hexdig(unsigned char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* The reference: -1 when malformed, else the field count. */
static long
ref_parse(const unsigned char *p, size_t len)
{
	size_t o = 0, fstart = 0, i = 0;
	bool only_backslash_n = false; /* the field so far is exactly \N */
	size_t raw_start = 0;

	ref.nf = 0;
	ref.out = realloc(ref.out, len + 1);
	ref.f = realloc(ref.f, (len + 2) * sizeof(*ref.f));
	if (len > 0 && p[len - 1] == '\n')
		len--;
	for (;;) {
		if (i == len || p[i] == '\t') {
			only_backslash_n = i - raw_start == 2 && p[raw_start] == '\\' &&
			                   p[raw_start + 1] == 'N';
			ref.f[ref.nf].null = only_backslash_n;
			ref.f[ref.nf].off = fstart;
			ref.f[ref.nf].len = only_backslash_n ? 0 : o - fstart;
			ref.nf++;
			if (i == len)
				return (long)ref.nf;
			i++;
			fstart = o;
			raw_start = i;
			continue;
		}
		unsigned char c = p[i++];
		if (c == '\n' || c == '\r')
			return -1;
		if (c != '\\') {
			ref.out[o++] = c;
			continue;
		}
		if (i == len)
			return -1;
		c = p[i++];
		switch (c) {
		case 'b':
			ref.out[o++] = '\b';
			break;
		case 'f':
			ref.out[o++] = '\f';
			break;
		case 'n':
			ref.out[o++] = '\n';
			break;
		case 'r':
			ref.out[o++] = '\r';
			break;
		case 't':
			ref.out[o++] = '\t';
			break;
		case 'v':
			ref.out[o++] = '\v';
			break;
		case 'x': {
			int h1 = i < len ? hexdig(p[i]) : -1;
			if (h1 < 0) {
				ref.out[o++] = 'x';
				break;
			}
			i++;
			int h2 = i < len ? hexdig(p[i]) : -1;
			if (h2 >= 0) {
				i++;
				ref.out[o++] = (unsigned char)(h1 * 16 + h2);
			} else {
				ref.out[o++] = (unsigned char)h1;
			}
			break;
		}
		default:
			if (c >= '0' && c <= '7') {
				unsigned v = c - '0';
				if (i < len && p[i] >= '0' && p[i] <= '7') {
					v = v * 8 + (p[i++] - '0');
					if (i < len && p[i] >= '0' && p[i] <= '7')
						v = v * 8 + (p[i++] - '0');
				}
				ref.out[o++] = (unsigned char)(v & 0xff);
			} else {
				ref.out[o++] = c; /* \\ and any other byte */
			}
		}
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct copytext ct;
	unsigned char *row = malloc(size ? size : 1);
	long got, want;

	memcpy(row, data, size);
	got = copytext_parse(&ct, (const char *)row, size);
	want = ref_parse(row, size);
	if (got != want)
		abort();
	if (got < 0) {
		if (ct.err[0] == '\0')
			abort(); /* a refusal always says why */
	} else {
		if ((size_t)got != ct.nfields)
			abort();
		for (size_t k = 0; k < ct.nfields; k++) {
			const struct ref_field *f = &ref.f[k];
			if (f->null != (ct.vals[k] == NULL))
				abort();
			if (f->null)
				continue;
			if (ct.lens[k] != f->len ||
			    (f->len > 0 && memcmp(ct.vals[k], ref.out + f->off, f->len) != 0))
				abort();
		}
	}
	/* Parsing again (buffer reuse) gives the same answer. */
	if (copytext_parse(&ct, (const char *)row, size) != got)
		abort();
	free(row);
	return 0;
}
