/*
 * test_copytext.c - the COPY text-format row decoder: every escape, NULL,
 * empty fields, many columns, and malformed rows.
 *
 * Each case is a raw row and the fields it must decode to, written as a
 * '|'-separated list where "~" is NULL (cases needing | or ~ in a value,
 * or NUL bytes, are written out as separate checks below).
 */
#include "copytext.h"

#include "tap.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

static struct copytext ct;

static const struct {
	const char *row;
	const char *want; /* fields joined by '|', "~" for NULL; NULL: malformed */
	const char *what;
} cases[] = {
        {"a\tb\tc\n", "a|b|c", "three plain fields"},
        {"a\tb\tc", "a|b|c", "no trailing newline"},
        {"\n", "", "one empty field"},
        {"\t\n", "|", "two empty fields"},
        {"a\t\n", "a|", "trailing empty field"},
        {"\\N\n", "~", "NULL"},
        {"\\N\t\\N\tx\n", "~|~|x", "NULLs and a value"},
        {"a\\N\n", "aN", "\\N inside a field is N"},
        {"\\Nx\n", "Nx", "\\N followed by more is N"},
        {"\\\\N\n", "\\N", "escaped backslash then N is the text \\N"},
        {"\\b\\f\\n\\r\\t\\v\n", "\b\f\n\r\t\v", "the six letter escapes"},
        {"\\\\\n", "\\", "backslash"},
        {"a\\tb\tc\n", "a\tb|c", "escaped tab is data, raw tab separates"},
        {"\\101\\102\n", "AB", "3-digit octal"},
        {"\\7x\n", "\ax", "1-digit octal"},
        {"\\12z\n", "\nz", "2-digit octal"},
        {"\\1012\n", "A2", "octal takes at most 3 digits"},
        {"\\18\n", "\0018", "octal stops at 8"},
        {"\\x41\\x4a\n", "AJ", "2-digit hex"},
        {"\\x4\n", "\004", "1-digit hex at the end"},
        {"\\x4g\n", "\004g", "1-digit hex before a non-hex"},
        {"\\x414\n", "A4", "hex takes at most 2 digits"},
        {"\\xg\n", "xg", "\\x without hex digits is x"},
        {"\\x\n", "x", "\\x at the end is x"},
        {"\\q\\\"\\'\n", "q\"'", "other escaped bytes are themselves"},
        {"\\.\n", ".", "\\. is a dot (no end marker in COPY TO)"},
        {"abcdefg\\\\\thij\n", "abcdefg\\|hij",
         "an escaped backslash across a word boundary, then a tab"},
        {"abcdefg\\\thij\n", "abcdefg\thij", "backslash then a raw tab: the tab is data"},
        {"1234567\\N\t\\N\n", "1234567N|~", "\\N across a word boundary"},
        {"0123456789abcdef\t0123456789abcdef\t\\N\n", "0123456789abcdef|0123456789abcdef|~",
         "fields on word boundaries"},
        {"abcdefg\\\n", NULL, "backslash before the terminator at a word boundary"},
        {"abcdefgh\tx\ry\n", NULL, "raw carriage return after a word boundary"},
        {"\xc3\xa9\t\xf0\x9f\x98\x80\n", "\xc3\xa9|\xf0\x9f\x98\x80", "UTF-8 passes through"},
        {"\\303\\251\n", "\xc3\xa9", "octal-escaped UTF-8 bytes"},
        {"a\\\n", NULL, "backslash before the terminator"},
        {"a\\", NULL, "backslash at the very end"},
        {"a\nb\n", NULL, "raw newline inside (two rows in one message)"},
        {"a\rb\n", NULL, "raw carriage return"},
        {"a\tb\r\n", NULL, "CRLF row end"},
};

static void
check_case(size_t i)
{
	long n = copytext_parse(&ct, cases[i].row, strlen(cases[i].row));
	char got[256];
	size_t o = 0;

	if (cases[i].want == NULL) {
		ok(n < 0 && ct.err[0] != '\0', "malformed: %s (%s)", cases[i].what,
		   n < 0 ? ct.err : "accepted");
		return;
	}
	if (n < 0) {
		ok(0, "%s: refused: %s", cases[i].what, ct.err);
		return;
	}
	for (long k = 0; k < n; k++) {
		if (k > 0)
			got[o++] = '|';
		if (ct.vals[k] == NULL) {
			got[o++] = '~';
		} else {
			memcpy(got + o, ct.vals[k], ct.lens[k]);
			o += ct.lens[k];
		}
	}
	got[o] = '\0';
	is_str(got, cases[i].want, "%s", cases[i].what);
}

int
main(void)
{
	long n;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		check_case(i);

	/* NUL bytes: \0, \000 and \x00 decode to a real NUL inside a value. */
	n = copytext_parse(&ct, "a\\0b\\000c\\x00d\n", 15);
	ok(n == 1 && ct.lens[0] == 7 && memcmp(ct.vals[0], "a\0b\0c\0d", 7) == 0,
	   "\\0, \\000 and \\x00 are NUL bytes inside the value");
	{
		const char *row = "plain\tesc\\\\aped\n";
		n = copytext_parse(&ct, row, strlen(row));
		ok(n == 2 && ct.vals[0] == row && ct.lens[0] == 5,
		   "a field without escapes points into the row (no copy)");
		ok(n == 2 && ct.vals[1] != row + 6 && ct.lens[1] == 8 &&
		           memcmp(ct.vals[1], "esc\\aped", 8) == 0,
		   "a field with escapes is decoded into the parser's buffer");
	}

	/* High octal: \377 is 0xff, \400 wraps to 0x00 (value & 0xff). */
	n = copytext_parse(&ct, "\\377\\400\n", 9);
	ok(n == 1 && ct.lens[0] == 2 && (unsigned char)ct.vals[0][0] == 0xff &&
	           ct.vals[0][1] == '\0',
	   "\\377 is 0xff and \\400 is 0x00");

	/* Separators and markers as data. */
	n = copytext_parse(&ct, "|\t~\n", 4);
	ok(n == 2 && ct.lens[0] == 1 && ct.vals[0][0] == '|' && ct.vals[1][0] == '~',
	   "| and ~ are plain bytes");

	/* Many columns. */
	{
		size_t cols = 1500, len = 0;
		char *row = malloc(cols * 8 + 2);
		bool good = true;
		for (size_t k = 0; k < cols; k++)
			len += (size_t)sprintf(row + len, "%s%zu", k ? "\t" : "", k);
		row[len++] = '\n';
		n = copytext_parse(&ct, row, len);
		for (size_t k = 0; good && k < cols && n == (long)cols; k++) {
			char want[16];
			sprintf(want, "%zu", k);
			good = ct.lens[k] == strlen(want) &&
			       memcmp(ct.vals[k], want, ct.lens[k]) == 0;
		}
		ok(n == (long)cols && good, "1500 columns decode in order");
		free(row);
	}

	/* The parser is reusable and pointers from the last parse are stable
	 * for it. */
	n = copytext_parse(&ct, "x\\ty\t\\N\n", 8);
	ok(n == 2 && ct.lens[0] == 3 && memcmp(ct.vals[0], "x\ty", 3) == 0 && ct.vals[1] == NULL,
	   "reuse after a large row");
	n = copytext_parse(&ct, "", 0);
	ok(n == 1 && ct.lens[0] == 0 && ct.vals[0] != NULL, "empty input is one empty field");

	copytext_free(&ct);
	return tap_done();
}
