/*
 * test_pgoutput.c - the pgoutput parser (src/daemon/pgoutput.c).
 *
 *   tests/test_pgoutput [CAPTURE]
 *
 * Handcrafted messages of every kind, then every proper prefix and a
 * trailing byte of each (all must fail cleanly), then a stream captured
 * from a real PostgreSQL 15 (tests/data/pgoutput_pg15.bin by default, or
 * CAPTURE: tests/pgoutput_live.sh passes a fresh one made by
 * tests/pgoutput_capture.c), checked message by message.
 */
#include "pgoutput.h"
#include "tap.h"

#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- a tiny message builder ---------------------------------------------------- */

struct mb {
	uint8_t b[4096];
	size_t n;
};

static void
mb_u8(struct mb *m, unsigned v)
{
	m->b[m->n++] = (uint8_t)v;
}
static void
mb_u16(struct mb *m, unsigned v)
{
	mb_u8(m, v >> 8);
	mb_u8(m, v & 0xff);
}
static void
mb_u32(struct mb *m, uint32_t v)
{
	mb_u16(m, v >> 16);
	mb_u16(m, v & 0xffff);
}
static void
mb_u64(struct mb *m, uint64_t v)
{
	mb_u32(m, (uint32_t)(v >> 32));
	mb_u32(m, (uint32_t)v);
}
static void
mb_str(struct mb *m, const char *s)
{
	size_t l = strlen(s) + 1;
	memcpy(m->b + m->n, s, l);
	m->n += l;
}
static void
mb_text(struct mb *m, const char *s)
{
	mb_u8(m, 't');
	mb_u32(m, (uint32_t)strlen(s));
	memcpy(m->b + m->n, s, strlen(s));
	m->n += strlen(s);
}

static struct pgo_decoder dec;
static char err[256];

static int
decode(const struct mb *m, struct pgo_msg *out)
{
	return pgo_decode(&dec, m->b, m->n, out, err, sizeof(err));
}

static bool
val_is(const struct pgo_value *v, const char *s)
{
	return v->kind == 't' && v->len == strlen(s) && memcmp(v->data, s, v->len) == 0;
}

/* Every proper prefix fails, and so does one byte more. */
static void
check_prefixes(const struct mb *m, const char *what)
{
	struct pgo_msg msg;
	struct mb longer = *m;
	int bad = 0;

	for (size_t n = 0; n < m->n; n++)
		if (pgo_decode(&dec, m->b, n, &msg, err, sizeof(err)) != -1)
			bad++;
	ok(bad == 0, "%s: every one of its %zu proper prefixes is refused", what, m->n);
	mb_u8(&longer, 0);
	ok(pgo_decode(&dec, longer.b, longer.n, &msg, err, sizeof(err)) == -1 &&
	           (strstr(err, "trailing") || strstr(err, "remain")),
	   "%s: a trailing byte is refused (%s)", what, err);
}

static void
test_handcrafted(void)
{
	struct mb m;
	struct pgo_msg msg;

	/* Begin */
	m = (struct mb){0};
	mb_u8(&m, 'B');
	mb_u64(&m, 0x16B374D848ULL);
	mb_u64(&m, 12345);
	mb_u32(&m, 777);
	is_int(decode(&m, &msg), 0, "Begin parses");
	ok(msg.type == PGO_BEGIN && msg.u.begin.final_lsn == 0x16B374D848ULL &&
	           msg.u.begin.commit_time == 12345 && msg.u.begin.xid == 777,
	   "Begin fields");
	check_prefixes(&m, "Begin");

	/* Commit */
	m = (struct mb){0};
	mb_u8(&m, 'C');
	mb_u8(&m, 0);
	mb_u64(&m, 100);
	mb_u64(&m, 148);
	mb_u64(&m, (uint64_t)-5);
	is_int(decode(&m, &msg), 0, "Commit parses");
	ok(msg.u.commit.commit_lsn == 100 && msg.u.commit.end_lsn == 148 &&
	           msg.u.commit.commit_time == -5,
	   "Commit fields (a negative timestamp too)");
	check_prefixes(&m, "Commit");

	/* Origin */
	m = (struct mb){0};
	mb_u8(&m, 'O');
	mb_u64(&m, 0xAB);
	mb_str(&m, "upstream");
	is_int(decode(&m, &msg), 0, "Origin parses");
	ok(msg.u.origin.lsn == 0xAB && strcmp(msg.u.origin.name, "upstream") == 0, "Origin fields");
	check_prefixes(&m, "Origin");

	/* Relation */
	m = (struct mb){0};
	mb_u8(&m, 'R');
	mb_u32(&m, 16384);
	mb_str(&m, "");
	mb_str(&m, "bids");
	mb_u8(&m, 'f');
	mb_u16(&m, 2);
	mb_u8(&m, 1);
	mb_str(&m, "id");
	mb_u32(&m, 20);
	mb_u32(&m, (uint32_t)-1);
	mb_u8(&m, 0);
	mb_str(&m, "amount");
	mb_u32(&m, 23);
	mb_u32(&m, 7);
	is_int(decode(&m, &msg), 0, "Relation parses");
	ok(msg.u.relation.oid == 16384 && strcmp(msg.u.relation.nspname, "") == 0 &&
	           strcmp(msg.u.relation.relname, "bids") == 0 && msg.u.relation.replident == 'f' &&
	           msg.u.relation.ncols == 2,
	   "Relation header");
	ok(msg.u.relation.cols[0].flags == 1 && strcmp(msg.u.relation.cols[0].name, "id") == 0 &&
	           msg.u.relation.cols[0].type_oid == 20 && msg.u.relation.cols[0].typmod == -1 &&
	           strcmp(msg.u.relation.cols[1].name, "amount") == 0 &&
	           msg.u.relation.cols[1].type_oid == 23 && msg.u.relation.cols[1].typmod == 7,
	   "Relation columns");
	check_prefixes(&m, "Relation");
	m.b[11] = 'x'; /* the replica identity: after 'R', the OID, "" and "bids" */
	ok(decode(&m, &msg) == -1 && strstr(err, "replica identity"),
	   "Relation with an unknown replica identity is refused (%s)", err);

	/* Relation whose string runs off the end */
	m = (struct mb){0};
	mb_u8(&m, 'R');
	mb_u32(&m, 1);
	memcpy(m.b + m.n, "abc", 3);
	m.n += 3;
	ok(decode(&m, &msg) == -1 && strstr(err, "namespace"),
	   "an unterminated string is refused, naming the field (%s)", err);

	/* Type */
	m = (struct mb){0};
	mb_u8(&m, 'Y');
	mb_u32(&m, 99999);
	mb_str(&m, "public");
	mb_str(&m, "mood");
	is_int(decode(&m, &msg), 0, "Type parses");
	ok(msg.u.type.oid == 99999 && strcmp(msg.u.type.typname, "mood") == 0, "Type fields");
	check_prefixes(&m, "Type");

	/* Insert: null, unchanged, text with a NUL and a tab, binary */
	m = (struct mb){0};
	mb_u8(&m, 'I');
	mb_u32(&m, 16384);
	mb_u8(&m, 'N');
	mb_u16(&m, 4);
	mb_u8(&m, 'n');
	mb_u8(&m, 'u');
	mb_u8(&m, 't');
	mb_u32(&m, 3);
	mb_u8(&m, 'a');
	mb_u8(&m, 0);
	mb_u8(&m, '\t');
	mb_u8(&m, 'b');
	mb_u32(&m, 2);
	mb_u16(&m, 0xBEEF);
	is_int(decode(&m, &msg), 0, "Insert parses");
	{
		const struct pgo_tuple *t = &msg.u.insert.newtup;
		ok(msg.u.insert.relid == 16384 && t->ncols == 4 && t->vals[0].kind == 'n' &&
		           t->vals[1].kind == 'u' && t->vals[2].kind == 't' &&
		           t->vals[2].len == 3 && memcmp(t->vals[2].data, "a\0\t", 3) == 0 &&
		           t->vals[3].kind == 'b' && t->vals[3].len == 2 &&
		           (uint8_t)t->vals[3].data[0] == 0xBE,
		   "Insert values: n, u, t with a NUL byte, b");
	}
	check_prefixes(&m, "Insert");
	m.b[5] = 'X';
	ok(decode(&m, &msg) == -1 && strstr(err, "'N'"), "Insert without 'N' is refused (%s)", err);

	/* Insert with an unknown TupleData kind */
	m = (struct mb){0};
	mb_u8(&m, 'I');
	mb_u32(&m, 1);
	mb_u8(&m, 'N');
	mb_u16(&m, 1);
	mb_u8(&m, 'q');
	ok(decode(&m, &msg) == -1 && strstr(err, "unknown TupleData kind 0x71"),
	   "an unknown TupleData kind is refused (%s)", err);

	/* Insert whose value length runs past the end (a huge length) */
	m = (struct mb){0};
	mb_u8(&m, 'I');
	mb_u32(&m, 1);
	mb_u8(&m, 'N');
	mb_u16(&m, 1);
	mb_u8(&m, 't');
	mb_u32(&m, 0xFFFFFFFFu);
	mb_u8(&m, 'x');
	ok(decode(&m, &msg) == -1 && strstr(err, "TupleData value"),
	   "a value length past the end is refused (%s)", err);

	/* Insert claiming 65535 columns with none present */
	m = (struct mb){0};
	mb_u8(&m, 'I');
	mb_u32(&m, 1);
	mb_u8(&m, 'N');
	mb_u16(&m, 65535);
	ok(decode(&m, &msg) == -1, "a column count larger than the message is refused (%s)", err);

	/* Update with an old row: the old values survive the array growing */
	m = (struct mb){0};
	mb_u8(&m, 'U');
	mb_u32(&m, 7);
	mb_u8(&m, 'O');
	mb_u16(&m, 2);
	mb_text(&m, "1");
	mb_text(&m, "old");
	mb_u8(&m, 'N');
	mb_u16(&m, 40);
	mb_text(&m, "1");
	for (int i = 1; i < 40; i++)
		mb_text(&m, i == 1 ? "new" : "z");
	pgo_decoder_free(&dec); /* start small so the new tuple must grow it */
	is_int(decode(&m, &msg), 0, "Update with an old row parses");
	ok(msg.u.update.old_kind == 'O' && msg.u.update.oldtup.ncols == 2 &&
	           val_is(&msg.u.update.oldtup.vals[1], "old") && msg.u.update.newtup.ncols == 40 &&
	           val_is(&msg.u.update.newtup.vals[1], "new") &&
	           val_is(&msg.u.update.newtup.vals[39], "z"),
	   "Update old and new tuples");
	check_prefixes(&m, "Update O");

	/* Update with a key */
	m = (struct mb){0};
	mb_u8(&m, 'U');
	mb_u32(&m, 7);
	mb_u8(&m, 'K');
	mb_u16(&m, 2);
	mb_text(&m, "1");
	mb_u8(&m, 'n');
	mb_u8(&m, 'N');
	mb_u16(&m, 2);
	mb_text(&m, "2");
	mb_text(&m, "v");
	is_int(decode(&m, &msg), 0, "Update with a key parses");
	ok(msg.u.update.old_kind == 'K' && val_is(&msg.u.update.oldtup.vals[0], "1") &&
	           msg.u.update.oldtup.vals[1].kind == 'n' &&
	           val_is(&msg.u.update.newtup.vals[0], "2"),
	   "Update K fields");
	check_prefixes(&m, "Update K");

	/* Update with the new row only */
	m = (struct mb){0};
	mb_u8(&m, 'U');
	mb_u32(&m, 7);
	mb_u8(&m, 'N');
	mb_u16(&m, 1);
	mb_text(&m, "x");
	is_int(decode(&m, &msg), 0, "Update without an old row parses");
	ok(msg.u.update.old_kind == 0 && msg.u.update.newtup.ncols == 1, "Update N fields");
	m.b[5] = 'Z';
	ok(decode(&m, &msg) == -1 && strstr(err, "Update"), "Update with a bad tuple tag (%s)",
	   err);

	/* Delete */
	m = (struct mb){0};
	mb_u8(&m, 'D');
	mb_u32(&m, 7);
	mb_u8(&m, 'O');
	mb_u16(&m, 1);
	mb_text(&m, "gone");
	is_int(decode(&m, &msg), 0, "Delete parses");
	ok(msg.u.del.old_kind == 'O' && val_is(&msg.u.del.oldtup.vals[0], "gone"), "Delete fields");
	check_prefixes(&m, "Delete");
	m.b[5] = 'N';
	ok(decode(&m, &msg) == -1 && strstr(err, "Delete"), "Delete with 'N' is refused (%s)", err);

	/* Truncate */
	m = (struct mb){0};
	mb_u8(&m, 'T');
	mb_u32(&m, 3);
	mb_u8(&m, PGO_TRUNCATE_CASCADE | PGO_TRUNCATE_RESTART_IDENTITY);
	mb_u32(&m, 10);
	mb_u32(&m, 11);
	mb_u32(&m, 12);
	is_int(decode(&m, &msg), 0, "Truncate parses");
	ok(msg.u.truncate.nrels == 3 && msg.u.truncate.options == 3 &&
	           msg.u.truncate.relids[0] == 10 && msg.u.truncate.relids[2] == 12,
	   "Truncate fields");
	check_prefixes(&m, "Truncate");
	m = (struct mb){0};
	mb_u8(&m, 'T');
	mb_u32(&m, 0x40000000u);
	mb_u8(&m, 0);
	ok(decode(&m, &msg) == -1 && strstr(err, "relations need"),
	   "Truncate claiming 2^30 relations is refused before allocating (%s)", err);

	/* Message */
	m = (struct mb){0};
	mb_u8(&m, 'M');
	mb_u8(&m, 1);
	mb_u64(&m, 0x55);
	mb_str(&m, "tailgate");
	mb_u32(&m, 5);
	memcpy(m.b + m.n, "he\0lo", 5);
	m.n += 5;
	is_int(decode(&m, &msg), 0, "Message parses");
	ok(msg.u.message.flags == 1 && msg.u.message.lsn == 0x55 &&
	           strcmp(msg.u.message.prefix, "tailgate") == 0 && msg.u.message.len == 5 &&
	           memcmp(msg.u.message.content, "he\0lo", 5) == 0,
	   "Message fields (content with a NUL)");
	check_prefixes(&m, "Message");

	/* Unsupported and unknown */
	static const char streamed[] = "SEcA", twophase[] = "bPKrp";
	for (const char *c = streamed; *c; c++) {
		m = (struct mb){0};
		mb_u8(&m, (unsigned)*c);
		mb_u32(&m, 1);
		ok(decode(&m, &msg) == -1 && strstr(err, "streamed transactions are not supported"),
		   "%s is refused as unsupported (%s)", pgo_msg_name((uint8_t)*c), err);
	}
	for (const char *c = twophase; *c; c++) {
		m = (struct mb){0};
		mb_u8(&m, (unsigned)*c);
		ok(decode(&m, &msg) == -1 && strstr(err, "two-phase"),
		   "%s is refused as unsupported (%s)", pgo_msg_name((uint8_t)*c), err);
	}
	m = (struct mb){0};
	mb_u8(&m, 'Z');
	ok(decode(&m, &msg) == -1 && strstr(err, "unknown pgoutput message type 0x5a"),
	   "an unknown type is refused (%s)", err);
	ok(pgo_decode(&dec, "", 0, &msg, err, sizeof(err)) == -1, "an empty message is refused");
}

static void
test_framing(void)
{
	struct mb m = {0};
	struct pgo_copy cp;
	uint8_t st[PGO_STATUS_LEN];

	mb_u8(&m, 'w');
	mb_u64(&m, 0x100);
	mb_u64(&m, 0x200);
	mb_u64(&m, 42);
	mb_u8(&m, 'B');
	ok(pgo_parse_copy(m.b, m.n, &cp, err, sizeof(err)) == 0 && cp.kind == PGO_COPY_XLOGDATA &&
	           cp.wal_start == 0x100 && cp.wal_end == 0x200 && cp.send_time == 42 &&
	           cp.len == 1 && cp.data[0] == 'B',
	   "XLogData framing");
	ok(pgo_parse_copy(m.b, 25, &cp, err, sizeof(err)) == -1,
	   "XLogData without data is refused (%s)", err);
	ok(pgo_parse_copy(m.b, 20, &cp, err, sizeof(err)) == -1 && strstr(err, "truncated"),
	   "a short XLogData header is refused (%s)", err);

	m = (struct mb){0};
	mb_u8(&m, 'k');
	mb_u64(&m, 0x300);
	mb_u64(&m, 43);
	mb_u8(&m, 1);
	ok(pgo_parse_copy(m.b, m.n, &cp, err, sizeof(err)) == 0 && cp.kind == PGO_COPY_KEEPALIVE &&
	           cp.wal_end == 0x300 && cp.send_time == 43 && cp.reply_requested,
	   "keepalive with a reply requested");
	int bad = 0;
	for (size_t n = 0; n < m.n; n++)
		bad += pgo_parse_copy(m.b, n, &cp, err, sizeof(err)) != -1;
	ok(bad == 0, "every proper prefix of a keepalive is refused");
	mb_u8(&m, 0);
	ok(pgo_parse_copy(m.b, m.n, &cp, err, sizeof(err)) == -1, "a long keepalive is refused");
	m.n--;
	m.b[m.n - 1] = 2;
	ok(pgo_parse_copy(m.b, m.n, &cp, err, sizeof(err)) == -1 && strstr(err, "replyRequested"),
	   "replyRequested 2 is refused (%s)", err);
	ok(pgo_parse_copy("x", 1, &cp, err, sizeof(err)) == -1 && strstr(err, "0x78"),
	   "an unknown stream message is refused (%s)", err);
	ok(pgo_parse_copy("", 0, &cp, err, sizeof(err)) == -1, "an empty CopyData is refused");

	is_int(pgo_build_status(st, 0x0102030405060708ULL, 0x10, 0x20, 0x7FEDCBA987654321LL, true),
	       PGO_STATUS_LEN, "status update length");
	static const uint8_t want[PGO_STATUS_LEN] = {
	        'r', 1, 2, 3, 4, 5, 6, 7,    8,    0,    0,    0,    0,    0,    0,    0,    0x10,
	        0,   0, 0, 0, 0, 0, 0, 0x20, 0x7F, 0xED, 0xCB, 0xA9, 0x87, 0x65, 0x43, 0x21, 1};
	ok(memcmp(st, want, PGO_STATUS_LEN) == 0, "status update bytes");
	int64_t now = pgo_now_pg_us();
	ok(now > 800000000LL * 1000000 && now < 3000000000LL * 1000000,
	   "now in PostgreSQL microseconds is plausible (%" PRId64 ")", now);

	uint64_t lsn;
	char buf[32];
	ok(pgo_lsn_parse("16/B374D848", &lsn) && lsn == 0x16B374D848ULL, "LSN parse");
	is_str(pgo_lsn_format(0x16B374D848ULL, buf, sizeof(buf)), "16/B374D848", "LSN format");
	ok(pgo_lsn_parse("0/0", &lsn) && lsn == 0, "LSN 0/0");
	ok(pgo_lsn_parse("FFFFFFFF/ffffffff", &lsn) && lsn == UINT64_MAX, "LSN max");
	ok(!pgo_lsn_parse("16B374D848", &lsn) && !pgo_lsn_parse("/1", &lsn) &&
	           !pgo_lsn_parse("1/", &lsn) && !pgo_lsn_parse("1/2/3", &lsn) &&
	           !pgo_lsn_parse("123456789/0", &lsn) && !pgo_lsn_parse("1/g", &lsn) &&
	           !pgo_lsn_parse("", &lsn),
	   "malformed LSNs are refused");
}

/* ---- the capture ------------------------------------------------------------------------ */

struct rec {
	uint8_t *p;
	size_t n;
};

static size_t
load_capture(const char *path, struct rec **out)
{
	FILE *f = fopen(path, "rb");
	struct rec *recs = NULL;
	size_t n = 0;
	uint8_t h[4];

	if (!f) {
		perror(path);
		return 0;
	}
	while (fread(h, 1, 4, f) == 4) {
		size_t len = (size_t)h[0] << 24 | (size_t)h[1] << 16 | (size_t)h[2] << 8 | h[3];
		recs = realloc(recs, (n + 1) * sizeof(*recs));
		recs[n].p = malloc(len ? len : 1);
		recs[n].n = len;
		if (!recs[n].p || fread(recs[n].p, 1, len, f) != len) {
			fprintf(stderr, "%s: truncated record %zu\n", path, n);
			break;
		}
		n++;
	}
	fclose(f);
	*out = recs;
	return n;
}

static void
test_capture(const char *path)
{
	struct rec *recs = NULL;
	size_t n = load_capture(path, &recs);
	struct pgo_copy cp;
	struct pgo_msg m;
	char types[128];
	size_t nt = 0;
	int failures = 0, keepalives = 0, prefix_bad = 0;
	uint64_t begin_lsn = 0, last_commit = 0;
	bool commits_match = true, commits_increase = true;
	uint32_t full_oid = 0, key_oid = 0, enum_oid = 0, mood_oid = 0;
	bool seen_toast_u = false, seen_ins2 = false, seen_upd_full = false, seen_upd_nokey = false,
	     seen_upd_k = false, seen_del_k = false, seen_del_o = false, seen_msg_tx = false,
	     seen_msg_nontx = false, seen_origin = false, seen_trunc = false, seen_enum = false;

	ok(n > 20, "capture %s holds %zu CopyData messages", path, n);
	if (n == 0)
		return;
	for (size_t i = 0; i < n; i++) {
		if (pgo_parse_copy(recs[i].p, recs[i].n, &cp, err, sizeof(err)) < 0) {
			printf("# record %zu: %s\n", i, err);
			failures++;
			continue;
		}
		if (cp.kind == PGO_COPY_KEEPALIVE) {
			keepalives++;
			continue;
		}
		if (pgo_decode(&dec, cp.data, cp.len, &m, err, sizeof(err)) < 0) {
			printf("# record %zu: %s\n", i, err);
			failures++;
			continue;
		}
		/* Every proper prefix of a real message is refused too. */
		for (size_t k = 0; k<cp.len; k += cp.len> 200 ? 97 : 1) {
			struct pgo_msg x;
			if (pgo_decode(&dec, cp.data, k, &x, err, sizeof(err)) != -1)
				prefix_bad++;
		}
		/* Decode again: the prefix loop reused the decoder's arrays. */
		if (pgo_decode(&dec, cp.data, cp.len, &m, err, sizeof(err)) < 0)
			failures++;
		if (nt < sizeof(types) - 1)
			types[nt++] = (char)m.type;
		switch (m.type) {
		case PGO_BEGIN:
			begin_lsn = m.u.begin.final_lsn;
			break;
		case PGO_COMMIT:
			if (m.u.commit.commit_lsn != begin_lsn ||
			    m.u.commit.end_lsn <= m.u.commit.commit_lsn)
				commits_match = false;
			if (m.u.commit.commit_lsn <= last_commit)
				commits_increase = false;
			last_commit = m.u.commit.commit_lsn;
			break;
		case PGO_RELATION:
			if (strcmp(m.u.relation.relname, "cap_full") == 0) {
				full_oid = m.u.relation.oid;
				ok(m.u.relation.replident == 'f' && m.u.relation.ncols == 5 &&
				           strcmp(m.u.relation.nspname, "public") == 0 &&
				           strcmp(m.u.relation.cols[4].name, "big") == 0 &&
				           m.u.relation.cols[0].type_oid == 23 &&
				           m.u.relation.cols[2].type_oid == 1700 &&
				           m.u.relation.cols[3].type_oid == 3802 &&
				           m.u.relation.cols[0].flags == 1,
				   "capture: Relation cap_full (FULL, 5 columns, "
				   "int4/numeric/jsonb)");
			} else if (strcmp(m.u.relation.relname, "cap_key") == 0) {
				key_oid = m.u.relation.oid;
			} else if (strcmp(m.u.relation.relname, "cap_enum") == 0) {
				enum_oid = m.u.relation.oid;
				ok(mood_oid != 0 && m.u.relation.cols[1].type_oid == mood_oid,
				   "capture: the Type message came before cap_enum's Relation");
			}
			break;
		case PGO_TYPE:
			if (strcmp(m.u.type.typname, "cap_mood") == 0)
				mood_oid = m.u.type.oid;
			break;
		case PGO_INSERT: {
			const struct pgo_tuple *t = &m.u.insert.newtup;
			if (m.u.insert.relid == full_oid && t->ncols == 5 &&
			    val_is(&t->vals[0], "2"))
				seen_ins2 = val_is(&t->vals[1], "tab\there") &&
				            val_is(&t->vals[2], "-3") &&
				            val_is(&t->vals[3], "[1, 2]") &&
				            t->vals[4].len == 10000;
			if (m.u.insert.relid == enum_oid && t->ncols == 2)
				seen_enum = val_is(&t->vals[1], "happy");
			break;
		}
		case PGO_UPDATE: {
			const struct pgo_tuple *o = &m.u.update.oldtup, *t = &m.u.update.newtup;
			if (m.u.update.relid == full_oid && m.u.update.old_kind == 'O' &&
			    val_is(&t->vals[0], "1"))
				seen_upd_full =
				        val_is(&o->vals[1], "one") && val_is(&t->vals[1], "uno") &&
				        val_is(&o->vals[2], "1.50") && o->vals[4].kind == 'n';
			if (m.u.update.relid == full_oid && m.u.update.old_kind == 'O' &&
			    val_is(&t->vals[0], "2"))
				seen_toast_u = t->vals[4].kind == 'u' && o->vals[4].kind == 't' &&
				               o->vals[4].len == 10000 && val_is(&t->vals[2], "7");
			if (m.u.update.relid == key_oid && m.u.update.old_kind == 0)
				seen_upd_nokey = val_is(&t->vals[1], "k2");
			if (m.u.update.relid == key_oid && m.u.update.old_kind == 'K')
				seen_upd_k = val_is(&o->vals[0], "10") && o->vals[1].kind == 'n' &&
				             val_is(&t->vals[0], "11");
			break;
		}
		case PGO_DELETE:
			if (m.u.del.relid == full_oid)
				seen_del_o = m.u.del.old_kind == 'O' &&
				             val_is(&m.u.del.oldtup.vals[1], "uno");
			if (m.u.del.relid == key_oid)
				seen_del_k = m.u.del.old_kind == 'K' &&
				             val_is(&m.u.del.oldtup.vals[0], "11") &&
				             m.u.del.oldtup.vals[1].kind == 'n';
			break;
		case PGO_TRUNCATE:
			seen_trunc = m.u.truncate.nrels == 2 && m.u.truncate.options == 0 &&
			             ((m.u.truncate.relids[0] == full_oid &&
			               m.u.truncate.relids[1] == key_oid) ||
			              (m.u.truncate.relids[1] == full_oid &&
			               m.u.truncate.relids[0] == key_oid));
			break;
		case PGO_MESSAGE:
			if (m.u.message.flags == 1)
				seen_msg_tx = strcmp(m.u.message.prefix, "tailgate") == 0 &&
				              m.u.message.len == 5 &&
				              memcmp(m.u.message.content, "hello", 5) == 0;
			else
				seen_msg_nontx = m.u.message.len == 3 &&
				                 memcmp(m.u.message.content, "now", 3) == 0;
			break;
		case PGO_ORIGIN:
			seen_origin = strcmp(m.u.origin.name, "cap_origin") == 0 &&
			              m.u.origin.lsn == 0xAB;
			break;
		}
	}
	types[nt] = 0;
	is_int(failures, 0, "capture: every message parses");
	is_int(prefix_bad, 0, "capture: proper prefixes of real messages are refused");
	ok(keepalives >= 1, "capture: %d primary keepalives", keepalives);
	is_str(types, "BRIICBUCBUCBDCBRICBUCBUCBDCBYRICBIIMCMBOICBRRTC",
	       "capture: the message sequence (B=Begin R=Relation I U D T C M O Y)");
	ok(commits_match, "capture: each Commit's LSN is its Begin's final LSN, end after it");
	ok(commits_increase, "capture: commit LSNs increase");
	ok(seen_ins2,
	   "capture: Insert with a tab, a negative numeric, json and a 10000-byte value");
	ok(seen_upd_full, "capture: Update with the whole old row (REPLICA IDENTITY FULL)");
	ok(seen_toast_u,
	   "capture: Update with an unchanged TOASTed value ('u'), whole in the old row");
	ok(seen_upd_nokey, "capture: Update without an old row (default identity, key unchanged)");
	ok(seen_upd_k, "capture: Update with a key-only old row ('K')");
	ok(seen_del_o, "capture: Delete with the whole old row");
	ok(seen_del_k, "capture: Delete with the key only");
	ok(seen_enum, "capture: an enum value as text");
	ok(seen_msg_tx, "capture: a transactional logical decoding message");
	ok(seen_msg_nontx, "capture: a non-transactional logical decoding message");
	ok(seen_origin, "capture: an Origin message");
	ok(seen_trunc, "capture: Truncate of two tables");

	/* Flip bytes of real messages: must never crash (ASan checks reads). */
	uint64_t x = 88172645463325252ULL;
	int parsed = 0;
	for (int round = 0; round < 20000; round++) {
		struct rec *r = &recs[round % n];
		uint8_t buf[512];
		size_t len = r->n < sizeof(buf) ? r->n : sizeof(buf);
		memcpy(buf, r->p, len);
		for (int k = 0; k < 3; k++) {
			x ^= x << 13;
			x ^= x >> 7;
			x ^= x << 17;
			buf[x % len] = (uint8_t)(x >> 24);
		}
		if (pgo_parse_copy(buf, len, &cp, err, sizeof(err)) == 0 &&
		    cp.kind == PGO_COPY_XLOGDATA &&
		    pgo_decode(&dec, cp.data, cp.len, &m, err, sizeof(err)) == 0)
			parsed++;
	}
	ok(1, "capture: 20000 corrupted messages handled without a crash (%d still parsed)",
	   parsed);

	for (size_t i = 0; i < n; i++)
		free(recs[i].p);
	free(recs);
}

int
main(int argc, char **argv)
{
	char path[4096];
	const char *top = getenv("top_srcdir");

	test_handcrafted();
	test_framing();
	if (argc > 1)
		snprintf(path, sizeof(path), "%s", argv[1]);
	else
		snprintf(path, sizeof(path), "%s/tests/data/pgoutput_pg15.bin", top ? top : ".");
	test_capture(path);
	pgo_decoder_free(&dec);
	return tap_done();
}
