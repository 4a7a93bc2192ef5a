/*
 * copytext.h - one row of PostgreSQL's COPY text format, decoded.
 *
 * COPY ... TO STDOUT (text format) sends each row as one CopyData
 * message: fields separated by a tab, the row ended by a newline, NULL
 * written \N, and these backslash escapes (PostgreSQL's COPY FROM reads
 * the same set; Materialize writes it):
 *
 *   \b \f \n \r \t \v   backspace, form feed, newline, CR, tab, vertical tab
 *   \\                  backslash
 *   \NNN                1 to 3 octal digits, the byte value & 0xff
 *   \xHH                1 or 2 hex digits (\x not followed by one: "x")
 *   \ any other byte    that byte
 *   \N                  NULL, when it is the whole field (else "N")
 *
 * Malformed: a backslash ending the row, or a raw newline or carriage
 * return inside it (COPY TO always escapes them, so one means the framing
 * went wrong).  A decoded value may contain any byte, NUL included.
 *
 * Values are (pointer, length), not NUL-terminated.  A field without a
 * backslash points into the row itself (no copy); a field with escapes
 * is decoded into the parser's buffer.  So the pointers stay valid until
 * the next copytext_parse, copytext_free, or the row's bytes are freed,
 * whichever comes first.  Allocation failure is fatal (batch.h's bbuf).
 */
#ifndef TAILGATE_COPYTEXT_H
#define TAILGATE_COPYTEXT_H

#include <stddef.h>

#include "buf.h"

struct copytext {
	struct bbuf buf;   /* decoded bytes of fields with escapes */
	const char **vals; /* nfields pointers (row or buf), NULL for NULL */
	size_t *lens;
	size_t nfields;
	size_t cap_;
	char err[128]; /* why the last parse failed */
};

/* Decode one row (with or without its trailing newline).  Returns the
 * number of fields, or -1 with ct->err saying what is malformed. */
long copytext_parse(struct copytext *ct, const char *row, size_t len)
        __attribute__((warn_unused_result));

void copytext_free(struct copytext *ct);

#endif
