/*
 * pgoutput.c - parse PostgreSQL's logical replication stream (pgoutput.h).
 *
 * A reader (struct rd) walks the message; every read checks the bytes
 * left first and, when short, records which field it was reading and
 * refuses every later read, so a parse function reads its fields in
 * order and checks rd.bad once at the end.
 */
#include "pgoutput.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct rd {
	const uint8_t *p;
	size_t len;
	size_t off;
	const char *bad; /* the field that did not fit, or NULL */
	size_t bad_off;
};

static bool
rd_need(struct rd *r, size_t n, const char *field)
{
	if (r->bad)
		return false;
	if (r->len - r->off < n) {
		r->bad = field;
		r->bad_off = r->off;
		return false;
	}
	return true;
}

static uint8_t
rd_u8(struct rd *r, const char *field)
{
	if (!rd_need(r, 1, field))
		return 0;
	return r->p[r->off++];
}

static uint16_t
rd_u16(struct rd *r, const char *field)
{
	if (!rd_need(r, 2, field))
		return 0;
	uint16_t v = (uint16_t)((unsigned)r->p[r->off] << 8 | r->p[r->off + 1]);
	r->off += 2;
	return v;
}

static uint32_t
rd_u32(struct rd *r, const char *field)
{
	if (!rd_need(r, 4, field))
		return 0;
	const uint8_t *b = r->p + r->off;
	r->off += 4;
	return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
}

static uint64_t
rd_u64(struct rd *r, const char *field)
{
	uint64_t hi = rd_u32(r, field);
	uint64_t lo = rd_u32(r, field);

	return hi << 32 | lo;
}

/* A NUL-terminated string inside the message. */
static const char *
rd_str(struct rd *r, const char *field)
{
	if (r->bad)
		return "";
	const uint8_t *start = r->p + r->off;
	const uint8_t *nul = memchr(start, 0, r->len - r->off);

	if (!nul) {
		r->bad = field;
		r->bad_off = r->off;
		return "";
	}
	r->off += (size_t)(nul - start) + 1;
	return (const char *)start;
}

static const uint8_t *
rd_bytes(struct rd *r, size_t n, const char *field)
{
	if (!rd_need(r, n, field))
		return NULL;
	const uint8_t *b = r->p + r->off;
	r->off += n;
	return b;
}

static int fail(char *err, size_t errlen, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));

static int
fail(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (err && errlen) {
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return -1;
}

/* End of a parse: every byte read, nothing short. */
static int
rd_finish(struct rd *r, const char *what, char *err, size_t errlen)
{
	if (r->bad)
		return fail(err, errlen, "%s message truncated: %zu bytes, %s needed at offset %zu",
		            what, r->len, r->bad, r->bad_off);
	if (r->off != r->len)
		return fail(err, errlen, "%s message has %zu trailing bytes after offset %zu", what,
		            r->len - r->off, r->off);
	return 0;
}

/* ---- framing ------------------------------------------------------------------------ */

int
pgo_parse_copy(const void *buf, size_t len, struct pgo_copy *out, char *err, size_t errlen)
{
	struct rd r = {.p = buf, .len = len};

	memset(out, 0, sizeof(*out));
	if (len == 0)
		return fail(err, errlen, "empty CopyData message in the replication stream");
	uint8_t kind = rd_u8(&r, "kind");

	switch (kind) {
	case 'w':
		out->kind = PGO_COPY_XLOGDATA;
		out->wal_start = rd_u64(&r, "dataStart");
		out->wal_end = rd_u64(&r, "walEnd");
		out->send_time = (int64_t)rd_u64(&r, "sendTime");
		if (r.bad)
			return rd_finish(&r, "XLogData", err, errlen);
		out->data = r.p + r.off;
		out->len = len - r.off;
		if (out->len == 0)
			return fail(err, errlen, "XLogData message carries no data");
		return 0;
	case 'k':
		out->kind = PGO_COPY_KEEPALIVE;
		out->wal_end = rd_u64(&r, "walEnd");
		out->send_time = (int64_t)rd_u64(&r, "sendTime");
		uint8_t reply = rd_u8(&r, "replyRequested");
		if (rd_finish(&r, "primary keepalive", err, errlen) < 0)
			return -1;
		if (reply > 1)
			return fail(err, errlen,
			            "primary keepalive: replyRequested is %u, not 0 or 1", reply);
		out->reply_requested = reply == 1;
		return 0;
	default:
		return fail(err, errlen, "unknown replication stream message type 0x%02x", kind);
	}
}

static void
put_u64(uint8_t *p, uint64_t v)
{
	for (int i = 7; i >= 0; i--) {
		p[i] = (uint8_t)(v & 0xff);
		v >>= 8;
	}
}

size_t
pgo_build_status(uint8_t out[PGO_STATUS_LEN], uint64_t written, uint64_t flushed, uint64_t applied,
                 int64_t now_pg_us, bool reply)
{
	out[0] = 'r';
	put_u64(out + 1, written);
	put_u64(out + 9, flushed);
	put_u64(out + 17, applied);
	put_u64(out + 25, (uint64_t)now_pg_us);
	out[33] = reply ? 1 : 0;
	return PGO_STATUS_LEN;
}

int64_t
pgo_now_pg_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return ((int64_t)ts.tv_sec - PGO_EPOCH_OFFSET_S) * 1000000 + ts.tv_nsec / 1000;
}

static int
hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

bool
pgo_lsn_parse(const char *s, uint64_t *lsn)
{
	uint64_t half[2] = {0, 0};
	int h = 0, digits = 0;

	for (; *s; s++) {
		if (*s == '/') {
			if (h == 1 || digits == 0)
				return false;
			h = 1;
			digits = 0;
			continue;
		}
		int v = hexval(*s);
		if (v < 0 || ++digits > 8)
			return false;
		half[h] = half[h] << 4 | (uint64_t)v;
	}
	if (h != 1 || digits == 0)
		return false;
	*lsn = half[0] << 32 | half[1];
	return true;
}

char *
pgo_lsn_format(uint64_t lsn, char *out, size_t outlen)
{
	snprintf(out, outlen, "%" PRIX32 "/%" PRIX32, (uint32_t)(lsn >> 32), (uint32_t)lsn);
	return out;
}

/* ---- pgoutput messages ------------------------------------------------------------------ */

static bool
grow(void **arr, size_t *cap, size_t need, size_t size)
{
	if (need <= *cap)
		return true;
	size_t n = *cap ? *cap : 16;
	while (n < need)
		n *= 2;
	void *p = realloc(*arr, n * size);
	if (!p)
		return false;
	*arr = p;
	*cap = n;
	return true;
}

/* One TupleData into vals (the decoder's array from index at). */
static int
read_tuple(struct pgo_decoder *d, struct rd *r, size_t at, struct pgo_tuple *t, const char *what,
           char *err, size_t errlen)
{
	uint16_t n = rd_u16(r, "TupleData column count");

	if (r->bad)
		return rd_finish(r, what, err, errlen);
	if (!grow((void **)&d->vals, &d->vals_cap, at + n, sizeof(*d->vals)))
		return fail(err, errlen, "%s message: out of memory for %u columns", what, n);
	for (uint16_t i = 0; i < n; i++) {
		struct pgo_value *v = &d->vals[at + i];
		uint8_t kind = rd_u8(r, "TupleData column kind");

		if (r->bad)
			return rd_finish(r, what, err, errlen);
		v->kind = (char)kind;
		v->len = 0;
		v->data = NULL;
		switch (kind) {
		case 'n':
		case 'u':
			break;
		case 't':
		case 'b': {
			uint32_t len = rd_u32(r, "TupleData value length");
			const uint8_t *data = rd_bytes(r, len, "TupleData value");

			if (r->bad)
				return rd_finish(r, what, err, errlen);
			v->len = len;
			v->data = (const char *)data;
			break;
		}
		default:
			return fail(err, errlen,
			            "%s message: column %u has unknown TupleData kind 0x%02x at "
			            "offset %zu",
			            what, i + 1, kind, r->off - 1);
		}
	}
	t->ncols = n;
	t->vals = d->vals + at;
	return 0;
}

const char *
pgo_msg_name(uint8_t type)
{
	switch (type) {
	case 'B':
		return "Begin";
	case 'C':
		return "Commit";
	case 'O':
		return "Origin";
	case 'R':
		return "Relation";
	case 'Y':
		return "Type";
	case 'I':
		return "Insert";
	case 'U':
		return "Update";
	case 'D':
		return "Delete";
	case 'T':
		return "Truncate";
	case 'M':
		return "Message";
	case 'S':
		return "Stream Start";
	case 'E':
		return "Stream Stop";
	case 'c':
		return "Stream Commit";
	case 'A':
		return "Stream Abort";
	case 'b':
		return "Begin Prepare";
	case 'P':
		return "Prepare";
	case 'K':
		return "Commit Prepared";
	case 'r':
		return "Rollback Prepared";
	case 'p':
		return "Stream Prepare";
	default:
		return "unknown";
	}
}

int
pgo_decode(struct pgo_decoder *d, const void *buf, size_t len, struct pgo_msg *m, char *err,
           size_t errlen)
{
	struct rd r = {.p = buf, .len = len};

	memset(m, 0, sizeof(*m));
	if (len == 0)
		return fail(err, errlen, "empty pgoutput message");
	uint8_t type = rd_u8(&r, "type");
	const char *name = pgo_msg_name(type);

	m->type = (enum pgo_msg_type)type;
	switch (type) {
	case 'B':
		m->u.begin.final_lsn = rd_u64(&r, "final LSN");
		m->u.begin.commit_time = (int64_t)rd_u64(&r, "commit timestamp");
		m->u.begin.xid = rd_u32(&r, "xid");
		return rd_finish(&r, name, err, errlen);

	case 'C':
		m->u.commit.flags = rd_u8(&r, "flags");
		m->u.commit.commit_lsn = rd_u64(&r, "commit LSN");
		m->u.commit.end_lsn = rd_u64(&r, "end LSN");
		m->u.commit.commit_time = (int64_t)rd_u64(&r, "commit timestamp");
		return rd_finish(&r, name, err, errlen);

	case 'O':
		m->u.origin.lsn = rd_u64(&r, "origin commit LSN");
		m->u.origin.name = rd_str(&r, "origin name");
		return rd_finish(&r, name, err, errlen);

	case 'R': {
		m->u.relation.oid = rd_u32(&r, "relation OID");
		m->u.relation.nspname = rd_str(&r, "namespace");
		m->u.relation.relname = rd_str(&r, "relation name");
		m->u.relation.replident = (char)rd_u8(&r, "replica identity");
		uint16_t n = rd_u16(&r, "column count");

		if (r.bad)
			return rd_finish(&r, name, err, errlen);
		if (!grow((void **)&d->cols, &d->cols_cap, n, sizeof(*d->cols)))
			return fail(err, errlen, "Relation message: out of memory for %u columns",
			            n);
		for (uint16_t i = 0; i < n; i++) {
			d->cols[i].flags = rd_u8(&r, "column flags");
			d->cols[i].name = rd_str(&r, "column name");
			d->cols[i].type_oid = rd_u32(&r, "column type OID");
			d->cols[i].typmod = (int32_t)rd_u32(&r, "column type modifier");
		}
		m->u.relation.ncols = n;
		m->u.relation.cols = d->cols;
		if (rd_finish(&r, name, err, errlen) < 0)
			return -1;
		switch (m->u.relation.replident) {
		case 'd':
		case 'n':
		case 'f':
		case 'i':
			return 0;
		default:
			return fail(err, errlen,
			            "Relation message: unknown replica identity 0x%02x",
			            (uint8_t)m->u.relation.replident);
		}
	}

	case 'Y':
		m->u.type.oid = rd_u32(&r, "type OID");
		m->u.type.nspname = rd_str(&r, "namespace");
		m->u.type.typname = rd_str(&r, "type name");
		return rd_finish(&r, name, err, errlen);

	case 'I': {
		m->u.insert.relid = rd_u32(&r, "relation OID");
		uint8_t n = rd_u8(&r, "'N'");

		if (r.bad)
			return rd_finish(&r, name, err, errlen);
		if (n != 'N')
			return fail(err, errlen,
			            "Insert message: expected 'N' before the new tuple, got 0x%02x",
			            n);
		if (read_tuple(d, &r, 0, &m->u.insert.newtup, name, err, errlen) < 0)
			return -1;
		return rd_finish(&r, name, err, errlen);
	}

	case 'U': {
		m->u.update.relid = rd_u32(&r, "relation OID");
		uint8_t k = rd_u8(&r, "'K', 'O' or 'N'");
		size_t at = 0;

		if (r.bad)
			return rd_finish(&r, name, err, errlen);
		if (k == 'K' || k == 'O') {
			m->u.update.old_kind = (char)k;
			if (read_tuple(d, &r, 0, &m->u.update.oldtup, name, err, errlen) < 0)
				return -1;
			at = m->u.update.oldtup.ncols;
			k = rd_u8(&r, "'N'");
			if (r.bad)
				return rd_finish(&r, name, err, errlen);
		}
		if (k != 'N')
			return fail(err, errlen,
			            "Update message: expected 'K', 'O' or 'N' before a tuple, got "
			            "0x%02x",
			            k);
		if (read_tuple(d, &r, at, &m->u.update.newtup, name, err, errlen) < 0)
			return -1;
		/* The new tuple may have moved the array: point old at it again. */
		if (m->u.update.old_kind)
			m->u.update.oldtup.vals = d->vals;
		return rd_finish(&r, name, err, errlen);
	}

	case 'D': {
		m->u.del.relid = rd_u32(&r, "relation OID");
		uint8_t k = rd_u8(&r, "'K' or 'O'");

		if (r.bad)
			return rd_finish(&r, name, err, errlen);
		if (k != 'K' && k != 'O')
			return fail(err, errlen,
			            "Delete message: expected 'K' or 'O' before the old tuple, got "
			            "0x%02x",
			            k);
		m->u.del.old_kind = (char)k;
		if (read_tuple(d, &r, 0, &m->u.del.oldtup, name, err, errlen) < 0)
			return -1;
		return rd_finish(&r, name, err, errlen);
	}

	case 'T': {
		uint32_t n = rd_u32(&r, "relation count");

		m->u.truncate.options = rd_u8(&r, "options");
		if (r.bad)
			return rd_finish(&r, name, err, errlen);
		/* Check the size before allocating: n comes from the wire. */
		if ((uint64_t)n * 4 != len - r.off)
			return fail(err, errlen,
			            "Truncate message: %u relations need %" PRIu64
			            " bytes, %zu remain",
			            n, (uint64_t)n * 4, len - r.off);
		if (!grow((void **)&d->relids, &d->relids_cap, n ? n : 1, sizeof(*d->relids)))
			return fail(err, errlen, "Truncate message: out of memory for %u relations",
			            n);
		for (uint32_t i = 0; i < n; i++)
			d->relids[i] = rd_u32(&r, "relation OID");
		m->u.truncate.nrels = n;
		m->u.truncate.relids = d->relids;
		return rd_finish(&r, name, err, errlen);
	}

	case 'M': {
		m->u.message.flags = rd_u8(&r, "flags");
		m->u.message.lsn = rd_u64(&r, "LSN");
		m->u.message.prefix = rd_str(&r, "prefix");
		uint32_t n = rd_u32(&r, "content length");
		const uint8_t *content = rd_bytes(&r, n, "content");

		m->u.message.len = n;
		m->u.message.content = (const char *)content;
		return rd_finish(&r, name, err, errlen);
	}

	case 'S':
	case 'E':
	case 'c':
	case 'A':
		return fail(
		        err, errlen,
		        "%s message: streamed transactions are not supported (use proto_version "
		        "'1' without streaming)",
		        name);
	case 'b':
	case 'P':
	case 'K':
	case 'r':
	case 'p':
		return fail(err, errlen,
		            "%s message: two-phase commit decoding is not supported (use "
		            "proto_version '1' without two_phase)",
		            name);
	default:
		return fail(err, errlen, "unknown pgoutput message type 0x%02x", type);
	}
}

void
pgo_decoder_free(struct pgo_decoder *d)
{
	free(d->vals);
	free(d->cols);
	free(d->relids);
	memset(d, 0, sizeof(*d));
}
