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

#include "buf.h"

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
