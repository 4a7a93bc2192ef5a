/*
 * batch.h - the bytes of one batch, as the daemon stores it in the ring
 * and in the snapshot file, and as the responder reads it back.
 *
 * A batch payload is:
 *
 *   struct batch_hdr                 magic, counts, json_len
 *   JSON text (json_len bytes)       {"timestamp":"T","inserted":[..],"deleted":[..]}
 *   zero padding to 8 bytes
 *   struct batch_row[n_ins + n_del]  where each row's JSON array lies in
 *                                    the text: inserted rows first
 *
 * The JSON text is exactly what an unfiltered client receives for this
 * batch, so the responder's hot path copies it without parsing.  The row
 * index lets a filtered request pick rows out without a JSON parser.
 * Rows are JSON arrays in column order; a row with multiplicity n appears
 * n times.  The snapshot is a batch with nothing deleted.
 */
#ifndef TAILGATE_BATCH_H
#define TAILGATE_BATCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#define BATCH_MAGIC 0x54474254u /* "TGBT" */

struct batch_hdr {
	uint32_t magic;
	uint32_t reserved;
	uint64_t n_ins;
	uint64_t n_del;
	uint64_t json_len;
};

struct batch_row {
	uint64_t off; /* from the start of the JSON text */
	uint64_t len;
};

/* ---- building (daemon) ---- */

/* Growable byte buffer; dies on allocation failure (the daemon's state is
 * in memory anyway, so there is nothing sensible to continue with). */
struct bbuf {
	char *p;
	size_t len;
	size_t cap;
};
void bbuf_reserve(struct bbuf *b, size_t more);
void bbuf_add(struct bbuf *b, const void *data, size_t len);
void bbuf_adds(struct bbuf *b, const char *s);
void bbuf_free(struct bbuf *b);

/* Collects one batch's rows; reusable after batch_builder_reset. */
struct batch_builder {
	char prefix[64];
	struct bbuf ins, del;           /* comma-separated row JSON */
	struct bbuf ins_rows, del_rows; /* struct batch_row, offsets within ins/del */
	uint64_t n_ins, n_del;
	struct batch_hdr hdr;
	struct bbuf index; /* final row index, built by batch_finish */
	char pad[8];
};

void batch_builder_reset(struct batch_builder *b);
void batch_builder_free(struct batch_builder *b);
/* Add one row (a JSON array) to inserted or deleted. */
void batch_add_row(struct batch_builder *b, bool inserted, const char *row, size_t len);
/* Lay the batch out as iovecs (at most BATCH_IOV_MAX) pointing into b,
 * valid until the builder is next changed.  Returns the iovec count. */
#define BATCH_IOV_MAX 9
int batch_finish(struct batch_builder *b, uint64_t cursor, struct iovec *iov);
/* Total payload bytes of the iovecs batch_finish produced. */
size_t batch_iov_len(const struct iovec *iov, int n);

/* Cursor as the decimal string clients see. */
int batch_format_cursor(uint64_t cursor, char *out, size_t outlen);
/* Parse a decimal cursor; false on anything but 1-20 digits in range. */
bool batch_parse_cursor(const char *s, uint64_t *cursor);

/* The cursor clients hold: an upstream position and the identity of the
 * history it belongs to, "POSITION.IIIIIIII" (decimal, a dot, 8 lowercase
 * hex digits; docs/API.md calls it opaque).  BATCH_POSITION_MAX bytes
 * with the NUL. */
#define BATCH_POSITION_MAX 32
int batch_format_position(uint64_t pos, uint32_t ident, char *out, size_t outlen);
/* Parse a cursor: 1-20 decimal digits, then '.' and 8 hex digits (either
 * case).  A bare decimal position (an older release's cursor) parses with
 * *has_ident false.  false: malformed. */
bool batch_parse_position(const char *s, uint64_t *pos, uint32_t *ident, bool *has_ident);

/* The length (1-4) of the well-formed UTF-8 character at s[0..n), or 0
 * when it is not one (a stray continuation byte, an overlong form, a
 * surrogate, above U+10FFFF, or cut short by n).  For text that came from
 * a client: JSON replies must be valid UTF-8 whatever was asked. */
size_t utf8_char_len(const unsigned char *s, size_t n);
/* The same, and when it is not one, *bad = the length (>= 1) of its
 * maximal invalid subpart (Unicode 15, 3.9, "U+FFFD substitution of
 * maximal subparts"), for encoders that replace bad bytes. */
size_t utf8_seq_len(const unsigned char *s, size_t n, size_t *bad);

/* The value of one hexadecimal digit, or -1: for the parsers' escapes
 * (COPY's \xHH, the query string's %HH, JSON's \uHHHH). */
static inline int
hex_value(unsigned char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* ---- reading (responder) ---- */

struct batch_view {
	const char *json;
	size_t json_len;
	uint64_t n_ins;
	uint64_t n_del;
	const struct batch_row *rows; /* n_ins + n_del entries, may be unaligned-safe copy */
};

/* Check a payload's structure (bounds of every row) and describe it.
 * Returns false on a corrupt payload. */
bool batch_view(const char *payload, size_t len, struct batch_view *v);

#endif
