/*
 * pgoutput.h - a pure parser of PostgreSQL's logical replication stream:
 * the CopyBoth framing of START_REPLICATION and the messages of the
 * built-in pgoutput plugin, protocol version 1.  No I/O, no libpq.
 *
 * Framing (PostgreSQL docs, "Streaming Replication Protocol"): each
 * CopyData message the server sends is
 *
 *   'w' XLogData:   Int64 dataStart, Int64 walEnd, Int64 sendTime, then
 *                   one pgoutput message
 *   'k' keepalive:  Int64 walEnd, Int64 sendTime, Byte1 replyRequested
 *
 * and the client answers with standby status updates ('r', built by
 * pgo_build_status).  Times are microseconds since 2000-01-01 UTC.
 *
 * pgoutput messages ("Logical Replication Message Formats", version 1):
 * Begin, Commit, Origin, Relation, Type, Insert, Update (with an optional
 * 'K' key or 'O' old tuple), Delete, Truncate and Message.  TupleData
 * values are 'n' null, 'u' unchanged TOASTed (value not sent), 't' text
 * or 'b' binary.  The messages of streamed transactions (protocol 2) and
 * of two-phase commit (protocol 3) are recognised and refused as
 * unsupported; any other type is refused as unknown.
 *
 * Safety: every length is checked against what remains before anything is
 * read, strings must be NUL-terminated inside the message, and a message
 * must be consumed exactly (trailing bytes are an error).  Malformed input
 * returns -1 with a message naming the message type and the field; it
 * never reads out of bounds and never aborts.
 *
 * Lifetime: a parsed message points into the input buffer (strings and
 * values are not copied) and into the decoder's arrays; it is valid until
 * the next pgo_decode on the same decoder, pgo_decoder_free, or until the
 * caller frees the input.  Text values ('t') are NOT NUL-terminated: use
 * their length.  The decoder's arrays grow with malloc; on allocation
 * failure pgo_decode returns -1 ("out of memory"), it does not die.
 */
#ifndef TAILGATE_PGOUTPUT_H
#define TAILGATE_PGOUTPUT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Seconds between the Unix epoch and PostgreSQL's (2000-01-01). */
#define PGO_EPOCH_OFFSET_S 946684800LL

/* Length of a standby status update. */
#define PGO_STATUS_LEN 34

/* ---- framing ----------------------------------------------------------------- */

enum pgo_copy_kind { PGO_COPY_XLOGDATA = 'w', PGO_COPY_KEEPALIVE = 'k' };

struct pgo_copy {
	enum pgo_copy_kind kind;
	uint64_t wal_start;   /* 'w' only */
	uint64_t wal_end;     /* 'w': the server's WAL end; 'k': the same */
	int64_t send_time;    /* microseconds since 2000-01-01 */
	bool reply_requested; /* 'k' only: answer with a status update now */
	const uint8_t *data;  /* 'w' only: the pgoutput message */
	size_t len;
};

/* Parse one CopyData message of the replication stream.  0 or -1 (err). */
int pgo_parse_copy(const void *buf, size_t len, struct pgo_copy *out, char *err, size_t errlen);

/* Write a standby status update ('r') into out (PGO_STATUS_LEN bytes):
 * the WAL positions written, flushed and applied (the server may recycle
 * WAL and advances the slot's confirmed_flush_lsn to flushed), now in
 * microseconds since 2000-01-01, and whether the server should answer at
 * once.  Returns PGO_STATUS_LEN. */
size_t pgo_build_status(uint8_t out[PGO_STATUS_LEN], uint64_t written, uint64_t flushed,
                        uint64_t applied, int64_t now_pg_us, bool reply);

/* The current time in microseconds since 2000-01-01 (CLOCK_REALTIME). */
int64_t pgo_now_pg_us(void);

/* LSNs as PostgreSQL writes them: "16/B374D848" (hex, upper half/lower
 * half).  Parse accepts exactly that form; format writes it into out
 * (at least 18 bytes) and returns out. */
bool pgo_lsn_parse(const char *s, uint64_t *lsn);
char *pgo_lsn_format(uint64_t lsn, char *out, size_t outlen);

/* ---- pgoutput messages ---------------------------------------------------------- */

enum pgo_msg_type {
	PGO_BEGIN = 'B',
	PGO_COMMIT = 'C',
	PGO_ORIGIN = 'O',
	PGO_RELATION = 'R',
	PGO_TYPE = 'Y',
	PGO_INSERT = 'I',
	PGO_UPDATE = 'U',
	PGO_DELETE = 'D',
	PGO_TRUNCATE = 'T',
	PGO_MESSAGE = 'M'
};

/* One column value of a TupleData. */
struct pgo_value {
	char kind;        /* 'n' null, 'u' unchanged TOAST, 't' text, 'b' binary */
	uint32_t len;     /* 't', 'b': bytes at data */
	const char *data; /* 't', 'b': into the input; not NUL-terminated */
};

struct pgo_tuple {
	uint16_t ncols;
	const struct pgo_value *vals;
};

/* One column of a Relation message. */
struct pgo_column {
	uint8_t flags;    /* 1: part of the replica identity key */
	const char *name; /* NUL-terminated, into the input */
	uint32_t type_oid;
	int32_t typmod;
};

#define PGO_TRUNCATE_CASCADE 1
#define PGO_TRUNCATE_RESTART_IDENTITY 2
#define PGO_MESSAGE_TRANSACTIONAL 1

struct pgo_msg {
	enum pgo_msg_type type;
	union {
		struct {
			uint64_t final_lsn; /* the commit's LSN */
			int64_t commit_time;
			uint32_t xid;
		} begin;
		struct {
			uint8_t flags;
			uint64_t commit_lsn; /* == the Begin's final_lsn */
			uint64_t end_lsn;    /* end of the commit record */
			int64_t commit_time;
		} commit;
		struct {
			uint64_t lsn;
			const char *name;
		} origin;
		struct {
			uint32_t oid;
			const char *nspname; /* "" for pg_catalog */
			const char *relname;
			char replident; /* 'd' default, 'n' nothing, 'f' full, 'i' index */
			uint16_t ncols;
			const struct pgo_column *cols;
		} relation;
		struct {
			uint32_t oid;
			const char *nspname;
			const char *typname;
		} type;
		struct {
			uint32_t relid;
			struct pgo_tuple newtup;
		} insert;
		struct {
			uint32_t relid;
			char old_kind; /* 0: none, 'K': key columns only, 'O': whole old row */
			struct pgo_tuple oldtup; /* when old_kind != 0 */
			struct pgo_tuple newtup;
		} update;
		struct {
			uint32_t relid;
			char old_kind; /* 'K' or 'O' */
			struct pgo_tuple oldtup;
		} del;
		struct {
			uint8_t options; /* PGO_TRUNCATE_* */
			uint32_t nrels;
			const uint32_t *relids;
		} truncate;
		struct {
			uint8_t flags; /* PGO_MESSAGE_TRANSACTIONAL */
			uint64_t lsn;
			const char *prefix;
			const char *content; /* not NUL-terminated */
			uint32_t len;
		} message;
	} u;
};

/* Scratch arrays the parsed messages point into; zero-initialise. */
struct pgo_decoder {
	struct pgo_value *vals;
	size_t vals_cap;
	struct pgo_column *cols;
	size_t cols_cap;
	uint32_t *relids;
	size_t relids_cap;
};

/* Parse one pgoutput message (the data of an XLogData).  0, or -1 with a
 * message in err (malformed, unknown, unsupported, out of memory). */
int pgo_decode(struct pgo_decoder *d, const void *buf, size_t len, struct pgo_msg *out, char *err,
               size_t errlen);

void pgo_decoder_free(struct pgo_decoder *d);

/* A printable name of a message type byte, for logs ("Insert",
 * "Stream Start", "unknown"). */
const char *pgo_msg_name(uint8_t type);

#endif
