/*
 * follow.h - follow one tailgate feed over HTTP (libcurl), as tailgate.js
 * does: a first GET takes the snapshot, then `?cursor=C` long-polls.  A 410
 * takes a new snapshot and reports the difference against the rows held;
 * errors and 503s back off with capped full jitter.  Shared by
 * tailgate-watch and tailgate-hook.
 *
 * A change is the net effect of one reply (all of its batches): the rows
 * it deletes and inserts, each row repeated by its multiplicity, and the
 * cursor that holds after it.  The follower applies a change to its rows
 * only when the caller commits it, so a caller that could not deliver a
 * change can take it again (tailgate-hook's at-least-once rule).
 */
#ifndef TAILGATE_FOLLOW_H
#define TAILGATE_FOLLOW_H

#include <json-c/json.h>
#include <stdbool.h>
#include <stddef.h>

enum follow_state { FOLLOW_CONNECTING, FOLLOW_LIVE, FOLLOW_RECONNECTING, FOLLOW_RESYNCING };

struct follow_rows; /* a multiset of rows keyed by their JSON text */

struct follow_change {
	char *cursor;          /* the cursor after this change */
	json_object *inserted; /* array of rows */
	json_object *deleted;  /* array of rows */
	bool snapshot;         /* a (re-)snapshot's difference */
};

struct follow {
	char *base;           /* scheme://host/feeds/NAME, no query */
	char *query;          /* filters and the URL's own parameters, "" or "a=b&..." */
	char *feed;           /* NAME */
	char *cursor;         /* NULL until the first snapshot is committed */
	json_object *columns; /* [{name,type}] of the last snapshot, or NULL */
	struct follow_rows *rows;
	enum follow_state state;
	int attempt; /* failed requests in a row */
	int timeout; /* long-poll timeout sent, seconds */
	int backoff_cap_ms;
	void *curl; /* CURL * */
	/* Called about once a second while a request waits; nonzero aborts
	 * the request (it is then retried at once). */
	int (*idle)(void *arg);
	void *idle_arg;
	const char *cacert; /* CA certificates (PEM) for https://, or NULL: the system's */
	char errbuf[512];   /* the last failure, for a status line or a log */
};

enum follow_result {
	FOLLOW_CHANGE,  /* *ch holds a change: commit it or drop it */
	FOLLOW_NOTHING, /* the long-poll timed out with no batch */
	FOLLOW_RETRY,   /* a failure worth retrying; f->errbuf says which */
	FOLLOW_FATAL,   /* retrying cannot help (400, 404, bad reply shape) */
};

/* Parse url (http[s]://host[:port]/.../feeds/NAME[?params]) and append the
 * filters (COLUMN=OP.VALUE each).  A URL naming several feeds
 * (/feeds/a,b) or no feed is refused: -1 and err set. */
int follow_open(struct follow *f, const char *url, char **filters, int nfilters, char *err,
                size_t errlen);
void follow_close(struct follow *f);

/* One request: the snapshot when no cursor is held (or after a 410), else
 * a long-poll.  On FOLLOW_CHANGE, *ch is filled. */
enum follow_result follow_next(struct follow *f, struct follow_change *ch);
/* Apply ch to the rows held and take its cursor; frees ch's contents. */
void follow_commit(struct follow *f, struct follow_change *ch);
void follow_change_free(struct follow_change *ch);

/* Restore a held state (tailgate-hook's state file): the cursor, the
 * columns and the rows as of that cursor.  Takes references. */
void follow_restore(struct follow *f, const char *cursor, json_object *columns, json_object *rows);
/* The rows held, as a new JSON array (each row repeated by its count). */
json_object *follow_rows_json(const struct follow *f);
size_t follow_nrows(const struct follow *f);

/* Full-jitter backoff before retry `attempt` (1, 2, ...): a uniform delay in
 * [0, min(cap, 500 * 2^(attempt-1))) milliseconds, never below 50. */
int follow_backoff_ms(int attempt, int cap_ms);
/* Sleep ms, a slice at a time, calling idle (may be NULL) between slices;
 * returns early when it returns nonzero. */
void follow_sleep(int ms, int (*idle)(void *), void *arg);

/* A cursor as the API hands them out: 1..200 bytes of printable ASCII,
 * no space (it goes into URLs, headers, terminals). */
bool follow_cursor_ok(const char *t);
/* A libcurl result (a CURLcode) retrying cannot mend: the URL itself is
 * wrong (malformed, or a scheme this libcurl lacks). */
bool follow_curl_fatal(int rc);

const char *follow_state_name(enum follow_state s);
/* A row's key: its JSON text (plain). */
const char *follow_row_key(json_object *row);

#endif
