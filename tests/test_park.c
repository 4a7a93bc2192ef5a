/*
 * test_park.c - parking and waking without nginx: a long-poll parked at
 * the head of a ring the test writes is woken by an append and answered
 * with the new batch; one that sees no batch is answered empty at its
 * timeout.  The watcher, the writers and the connection ends are the
 * real ones; the test plays nginx on the other end of a socketpair.
 */
#include "clock.h"
#include "conn.h"
#include "feeds.h"
#include "park.h"
#include "render.h"
#include "writer.h"

#include "resp_ring.h"
#include "tap.h"

#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static const char *const snap_rows[] = {"[1,\"apple\"]", NULL};
static const char *const b2[] = {"[2,\"plum\"]", NULL};

/* Write one FastCGI record. */
static void
put_record(int fd, int type, const void *content, size_t clen)
{
	unsigned char h[8] = {
	        1, (unsigned char)type, 0, 1, (unsigned char)(clen >> 8), (unsigned char)clen, 0,
	        0};

	if (write(fd, h, 8) != 8 || (clen > 0 && write(fd, content, clen) != (ssize_t)clen))
		perror("write");
}

/* A request as nginx sends it (BEGIN_REQUEST, no keep-conn; one param;
 * end of params; empty stdin), read by libfcgi as conn.c does.  *peer:
 * nginx's end. */
static FCGX_Request *
new_request(int *peer)
{
	static const unsigned char begin[8] = {0, 1, 0, 0, 0, 0, 0, 0}; /* responder */
	static const unsigned char param[] = "\x0e\x03REQUEST_METHODGET";
	FCGX_Request *req = calloc(1, sizeof(*req));
	int sv[2];

	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0)
		return NULL;
	put_record(sv[1], 1, begin, sizeof(begin));
	put_record(sv[1], 4, param, sizeof(param) - 1);
	put_record(sv[1], 4, NULL, 0);
	put_record(sv[1], 5, NULL, 0);
	FCGX_InitRequest(req, -1, 0);
	req->ipcFd = sv[0];
	req->keepConnection = 1;
	if (FCGX_Accept_r(req) != 0) {
		free(req);
		return NULL;
	}
	*peer = sv[1];
	return req;
}

/* Read nginx's end until FCGI_END_REQUEST or timeout_ms; the STDOUT
 * content into out (NUL-terminated).  false: no END_REQUEST in time. */
static bool
read_reply(int fd, int timeout_ms, char *out, size_t outlen)
{
	static unsigned char buf[1 << 16];
	size_t have = 0, o = 0;
	int64_t end = clock_mono_ms() + timeout_ms;

	out[0] = '\0';
	for (;;) {
		struct pollfd pfd = {fd, POLLIN, 0};
		size_t off = 0;
		ssize_t n;

		if (poll(&pfd, 1, (int)(end - clock_mono_ms())) <= 0)
			return false;
		n = read(fd, buf + have, sizeof(buf) - have);
		if (n <= 0)
			return false;
		have += (size_t)n;
		while (off + 8 <= have) {
			size_t clen = (size_t)buf[off + 4] << 8 | buf[off + 5];
			size_t rlen = 8 + clen + buf[off + 6];
			if (off + rlen > have)
				break;
			if (buf[off + 1] == 6 && o + clen < outlen) { /* STDOUT */
				memcpy(out + o, buf + off + 8, clen);
				o += clen;
				out[o] = '\0';
			}
			if (buf[off + 1] == 3) /* END_REQUEST */
				return true;
			off += rlen;
		}
		memmove(buf, buf + off, have - off);
		have -= off;
	}
}

int
main(void)
{
	char dir[] = "/tmp/test_park.XXXXXX";
	struct ring *ring = rr_create(dir, 1, snap_rows);
	struct feeds fs;
	struct render rd;
	struct conns conns = {0}; /* no table: conn_finish closes at once */
	struct writers wp;
	struct park park;
	struct thread_ctx t = {.inline_ok = true};
	struct feed *feed;
	struct seg *seg;
	struct waiter *w;
	char err[256], out[4096];
	int peer = -1;
	int64_t t0;
	uint32_t ident = ring_ident(ring);
	char c2[64], c7[64], c9[64], cur[BATCH_POSITION_MAX];

	if (FCGX_Init() != 0)
		return 99;
	batch_format_position(2, ident, cur, sizeof(cur));
	snprintf(c2, sizeof(c2), "{\"cursor\":\"%s\",\"batches\":[", cur);
	batch_format_position(7, ident, cur, sizeof(cur));
	snprintf(c7, sizeof(c7), "{\"cursor\":\"%s\",\"batches\":[]}", cur);
	batch_format_position(9, ident, cur, sizeof(cur));
	snprintf(c9, sizeof(c9), "{\"cursor\":\"%s\",\"batches\":[", cur);
	feeds_init(&fs, dir);
	render_init(&rd, 60);
	writer_start(&wp, 2, &conns, 15, park_repark, &park);
	park_start(&park, &fs, &rd, &wp);
	is_int(feeds_acquire(&fs, "t", &feed, &seg, err, sizeof(err)), 200, "the feed attaches");

	/* A long-poll at the head (cursor 1, the snapshot): parked. */
	FCGX_Request *req = new_request(&peer);
	ok(req != NULL, "a FastCGI request read from the socketpair");
	w = waiter_new(req, feed, seg_ref(seg), fspec_new(NULL, strdup("")), false,
	               clock_mono_ms() + 10000);
	w->cursor = 1;
	w->ident = ident;
	w->seq_after = 0;
	park_serve(&park, w, &t);
	ok(!read_reply(peer, 300, out, sizeof(out)),
	   "at the head: no reply, the request is parked");
	pthread_mutex_lock(&park.mu);
	is_int(park.heap_n, 1, "one waiter in the lot");
	pthread_mutex_unlock(&park.mu);

	/* An append wakes it. */
	t0 = clock_mono_ms();
	rr_append(ring, 2, b2, NULL);
	ok(read_reply(peer, 5000, out, sizeof(out)), "an append wakes the parked request");
	ok(clock_mono_ms() - t0 < 2000, "within 2 s (%lld ms)", (long long)(clock_mono_ms() - t0));
	ok(strstr(out, "Status: 200 OK") != NULL, "200");
	ok(strstr(out, c2) != NULL, "the reply moves the cursor to 2");
	ok(strstr(out, "[2,\"plum\"]") != NULL, "and holds the new row");
	close(peer);
	pthread_mutex_lock(&park.mu);
	is_int(park.heap_n, 0, "the lot is empty again");
	pthread_mutex_unlock(&park.mu);

	/* No batch before the timeout: an empty reply at the cursor. */
	req = new_request(&peer);
	w = waiter_new(req, feed, seg_ref(seg), fspec_new(NULL, strdup("")), false,
	               clock_mono_ms() + 400);
	w->cursor = 2;
	w->ident = ident;
	w->seq_after = 1;
	t0 = clock_mono_ms();
	park_serve(&park, w, &t);
	ok(read_reply(peer, 5000, out, sizeof(out)), "a timed-out long-poll is answered");
	ok(clock_mono_ms() - t0 >= 350, "at its timeout (%lld ms)",
	   (long long)(clock_mono_ms() - t0));
	ok(strstr(out, c2) != NULL && strstr(out, "[]}") != NULL, "with no batches, cursor 2");
	ok(strstr(out, "no-store") != NULL, "not cacheable");
	close(peer);

	/* Behind the head: answered at once, without parking. */
	req = new_request(&peer);
	w = waiter_new(req, feed, seg_ref(seg), fspec_new(NULL, strdup("")), false,
	               clock_mono_ms() + 10000);
	w->cursor = 1;
	w->ident = ident;
	w->seq_after = 0;
	park_serve(&park, w, &t);
	ok(read_reply(peer, 2000, out, sizeof(out)) && strstr(out, "[2,\"plum\"]") != NULL,
	   "behind the head: the batch at once");
	close(peer);

	/* A quiet feed: the frontier moves without a batch; the timeout
	 * reply carries it, so the client moves forward. */
	ring_advance(ring, 7);
	ring_wake(ring);
	req = new_request(&peer);
	w = waiter_new(req, feed, seg_ref(seg), fspec_new(NULL, strdup("")), false,
	               clock_mono_ms() + 300);
	w->cursor = 2;
	w->ident = ident;
	w->seq_after = 1;
	park_serve(&park, w, &t);
	ok(read_reply(peer, 5000, out, sizeof(out)) && strstr(out, c7) != NULL,
	   "a timeout reply carries the frontier (7), not the last batch");
	close(peer);

	/* A position past the frontier (from a host further ahead): parked,
	 * batches at or below it are skipped, the first above it answers. */
	req = new_request(&peer);
	w = waiter_new(req, feed, seg_ref(seg), fspec_new(NULL, strdup("")), false,
	               clock_mono_ms() + 10000);
	w->cursor = 8;
	w->ident = ident;
	ok(ring_seek(seg->ring, ident, 8, &w->seq_after) == RING_OK, "position 8 is sought");
	park_serve(&park, w, &t);
	ok(!read_reply(peer, 300, out, sizeof(out)), "past the frontier: parked, no 410");
	rr_append(ring, 8, b2, NULL);
	ok(!read_reply(peer, 500, out, sizeof(out)), "a batch at its position: still parked");
	rr_append(ring, 9, b2, NULL);
	ok(read_reply(peer, 5000, out, sizeof(out)) && strstr(out, c9) != NULL,
	   "the batch above it answers, at cursor 9");
	ok(strstr(out, "\"timestamp\":\"8\"") == NULL, "without the batch it held");
	close(peer);

	/* Stopping answers a parked long-poll (empty). */
	req = new_request(&peer);
	w = waiter_new(req, feed, seg_ref(seg), fspec_new(NULL, strdup("")), false,
	               clock_mono_ms() + 10000);
	w->cursor = 9;
	w->ident = ident;
	ring_seek(seg->ring, ident, 9, &w->seq_after);
	park_serve(&park, w, &t);
	park_stop(&park);
	ok(read_reply(peer, 5000, out, sizeof(out)) && strstr(out, "\"batches\":[]}") != NULL,
	   "park_stop answers a parked long-poll, empty");
	close(peer);

	writer_stop(&wp);
	render_free(&rd);
	seg_release(seg);
	feeds_free(&fs);
	thread_ctx_free(&t);
	rr_remove(ring, dir);
	return tap_done();
}
