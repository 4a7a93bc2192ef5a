/*
 * batch.c - laying out and reading back the bytes of one batch (batch.h).
 */
#include "batch.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void
batch_builder_reset(struct batch_builder *b)
{
	b->ins.len = b->del.len = 0;
	b->ins_rows.len = b->del_rows.len = 0;
	b->index.len = 0;
	b->n_ins = b->n_del = 0;
}

void
batch_builder_free(struct batch_builder *b)
{
	bbuf_free(&b->ins);
	bbuf_free(&b->del);
	bbuf_free(&b->ins_rows);
	bbuf_free(&b->del_rows);
	bbuf_free(&b->index);
}

void
batch_add_row(struct batch_builder *b, bool inserted, const char *row, size_t len)
{
	struct bbuf *text = inserted ? &b->ins : &b->del;
	struct bbuf *rows = inserted ? &b->ins_rows : &b->del_rows;
	struct batch_row br;

	if (text->len > 0)
		bbuf_add(text, ",", 1);
	br.off = text->len;
	br.len = len;
	bbuf_add(text, row, len);
	bbuf_add(rows, &br, sizeof(br));
	if (inserted)
		b->n_ins++;
	else
		b->n_del++;
}

int
batch_format_cursor(uint64_t cursor, char *out, size_t outlen)
{
	return snprintf(out, outlen, "%" PRIu64, cursor);
}

bool
batch_parse_cursor(const char *s, uint64_t *cursor)
{
	uint64_t v = 0;
	size_t n = 0;

	if (s == NULL || *s == '\0')
		return false;
	for (; s[n] != '\0'; n++) {
		unsigned d = (unsigned)(s[n] - '0');
		if (d > 9 || n >= 20)
			return false;
		if (v > (UINT64_MAX - d) / 10)
			return false;
		v = v * 10 + d;
	}
	*cursor = v;
	return true;
}

static const char mid_text[] = "],\"deleted\":[";
static const char end_text[] = "]}";

int
batch_finish(struct batch_builder *b, uint64_t cursor, struct iovec *iov)
{
	char cur[24];
	size_t prefix_len, ins_off, del_off, json_len, pad;
	int n = 0;

	batch_format_cursor(cursor, cur, sizeof(cur));
	prefix_len = (size_t)snprintf(b->prefix, sizeof(b->prefix),
	                              "{\"timestamp\":\"%s\",\"inserted\":[", cur);
	ins_off = prefix_len;
	del_off = ins_off + b->ins.len + sizeof(mid_text) - 1;
	json_len = del_off + b->del.len + sizeof(end_text) - 1;
	pad = (8 - (json_len & 7)) & 7;

	/* The row index, rebased from each list's buffer to the JSON text. */
	b->index.len = 0;
	bbuf_reserve(&b->index, (b->n_ins + b->n_del) * sizeof(struct batch_row));
	for (uint64_t i = 0; i < b->n_ins; i++) {
		struct batch_row r;
		memcpy(&r, b->ins_rows.p + i * sizeof(r), sizeof(r));
		r.off += ins_off;
		bbuf_add(&b->index, &r, sizeof(r));
	}
	for (uint64_t i = 0; i < b->n_del; i++) {
		struct batch_row r;
		memcpy(&r, b->del_rows.p + i * sizeof(r), sizeof(r));
		r.off += del_off;
		bbuf_add(&b->index, &r, sizeof(r));
	}

	b->hdr.magic = BATCH_MAGIC;
	b->hdr.reserved = 0;
	b->hdr.n_ins = b->n_ins;
	b->hdr.n_del = b->n_del;
	b->hdr.json_len = json_len;
	memset(b->pad, 0, sizeof(b->pad));

	iov[n++] = (struct iovec){&b->hdr, sizeof(b->hdr)};
	iov[n++] = (struct iovec){b->prefix, prefix_len};
	iov[n++] = (struct iovec){b->ins.p, b->ins.len};
	iov[n++] = (struct iovec){(void *)mid_text, sizeof(mid_text) - 1};
	iov[n++] = (struct iovec){b->del.p, b->del.len};
	iov[n++] = (struct iovec){(void *)end_text, sizeof(end_text) - 1};
	iov[n++] = (struct iovec){b->pad, pad};
	iov[n++] = (struct iovec){b->index.p, b->index.len};
	return n;
}

int
batch_format_position(uint64_t pos, uint32_t ident, char *out, size_t outlen)
{
	return snprintf(out, outlen, "%" PRIu64 ".%08" PRIx32, pos, ident);
}

bool
batch_parse_position(const char *s, uint64_t *pos, uint32_t *ident, bool *has_ident)
{
	char digits[21];
	const char *dot;
	size_t n;
	uint32_t v = 0;

	if (s == NULL)
		return false;
	dot = strchr(s, '.');
	if (dot == NULL) {
		*has_ident = false;
		*ident = 0;
		return batch_parse_cursor(s, pos);
	}
	n = (size_t)(dot - s);
	if (n == 0 || n >= sizeof(digits) || strlen(dot + 1) != 8)
		return false;
	memcpy(digits, s, n);
	digits[n] = '\0';
	if (!batch_parse_cursor(digits, pos))
		return false;
	for (const char *p = dot + 1; *p; p++) {
		unsigned d;
		if (*p >= '0' && *p <= '9')
			d = (unsigned)(*p - '0');
		else if (*p >= 'a' && *p <= 'f')
			d = (unsigned)(*p - 'a' + 10);
		else if (*p >= 'A' && *p <= 'F')
			d = (unsigned)(*p - 'A' + 10);
		else
			return false;
		v = v << 4 | d;
	}
	*ident = v;
	*has_ident = true;
	return true;
}

size_t
batch_iov_len(const struct iovec *iov, int n)
{
	size_t len = 0;

	for (int i = 0; i < n; i++)
		len += iov[i].iov_len;
	return len;
}

bool
batch_view(const char *payload, size_t len, struct batch_view *v)
{
	struct batch_hdr h;
	size_t rows_off;
	uint64_t nrows;

	if (len < sizeof(h))
		return false;
	memcpy(&h, payload, sizeof(h));
	if (h.magic != BATCH_MAGIC || h.json_len > len - sizeof(h))
		return false;
	rows_off = sizeof(h) + ((h.json_len + 7) & ~(uint64_t)7);
	nrows = h.n_ins + h.n_del;
	if (h.n_ins > len || h.n_del > len || rows_off > len ||
	    nrows > (len - rows_off) / sizeof(struct batch_row) ||
	    len - rows_off != nrows * sizeof(struct batch_row))
		return false;
	v->json = payload + sizeof(h);
	v->json_len = h.json_len;
	v->n_ins = h.n_ins;
	v->n_del = h.n_del;
	v->rows = (const struct batch_row *)(const void *)(payload + rows_off);
	for (uint64_t i = 0; i < nrows; i++) {
		const struct batch_row *r = &v->rows[i];
		if (r->off > h.json_len || r->len > h.json_len - r->off || r->len < 2 ||
		    v->json[r->off] != '[' || v->json[r->off + r->len - 1] != ']')
			return false;
	}
	return true;
}
