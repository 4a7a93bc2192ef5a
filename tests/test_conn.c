/*
 * test_conn.c - conn_params_complete: when has a FastCGI connection sent
 * its whole params block (conn.h)?  And fcgireq_scan/fcgireq_parse: a
 * request read from bytes in hand (fcgi_request.h).  Records built byte
 * by byte here.  Then a kept connection through conn_start's threads
 * whose next request comes while one is being served (keep()'s hand-back
 * to the accepting thread; run under ThreadSanitizer by tools/test).
 */
#include "conn.h"
#include "fcgi_request.h"

#include "tap.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

/* Append one FastCGI record of type with clen content bytes (all 'x')
 * and pad padding bytes. */
static size_t
record(unsigned char *buf, size_t off, int type, size_t clen, int pad)
{
	unsigned char *h = buf + off;

	h[0] = 1;
	h[1] = (unsigned char)type;
	h[2] = 0;
	h[3] = 1;
	h[4] = (unsigned char)(clen >> 8);
	h[5] = (unsigned char)clen;
	h[6] = (unsigned char)pad;
	h[7] = 0;
	memset(h + 8, 'x', clen + (size_t)pad);
	return off + 8 + clen + (size_t)pad;
}

/* Append a record of type carrying data[0..len) for request id. */
static size_t
record_with(unsigned char *buf, size_t off, int type, int id, const void *data, size_t len)
{
	unsigned char *h = buf + off;

	h[0] = 1;
	h[1] = (unsigned char)type;
	h[2] = (unsigned char)(id >> 8);
	h[3] = (unsigned char)id;
	h[4] = (unsigned char)(len >> 8);
	h[5] = (unsigned char)len;
	h[6] = 0;
	h[7] = 0;
	if (len > 0) /* an empty record's data may be NULL */
		memcpy(h + 8, data, len);
	return off + 8 + len;
}

/* A name-value pair, with a 4-byte value length when vlen > 127. */
static size_t
pair(unsigned char *p, const char *name, const char *value, size_t vlen)
{
	size_t nl = strlen(name), o = 0;

	p[o++] = (unsigned char)nl;
	if (vlen > 127) {
		p[o++] = (unsigned char)(0x80 | vlen >> 24);
		p[o++] = (unsigned char)(vlen >> 16);
		p[o++] = (unsigned char)(vlen >> 8);
		p[o++] = (unsigned char)vlen;
	} else {
		p[o++] = (unsigned char)vlen;
	}
	memcpy(p + o, name, nl);
	memcpy(p + o + nl, value, vlen);
	return o + nl + vlen;
}

/* A request as nginx sends it on a kept connection, read by us. */
static void
test_fcgireq(void)
{
	static const unsigned char begin[8] = {0, 1, 1, 0, 0, 0, 0, 0}; /* responder, keep */
	unsigned char buf[2048], params[1024];
	char longq[300];
	size_t n = 0, plen = 0, cut;
	struct fcgireq *r;
	bool prefixes_incomplete = true;

	memset(longq, 'q', sizeof(longq) - 1);
	longq[sizeof(longq) - 1] = '\0';
	plen += pair(params + plen, "REQUEST_METHOD", "GET", 3);
	plen += pair(params + plen, "QUERY_STRING", longq, strlen(longq));
	plen += pair(params + plen, "PATH_INFO", "/feeds/x", 8);
	n = record_with(buf, n, 1, 7, begin, 8);
	cut = 5; /* a pair split across two PARAMS records */
	n = record_with(buf, n, 4, 7, params, cut);
	n = record_with(buf, n, 4, 7, params + cut, plen - cut);
	n = record_with(buf, n, 4, 7, NULL, 0);
	n = record_with(buf, n, 5, 7, NULL, 0);
	is_int(fcgireq_scan(buf, n), (long)n, "fcgireq: a whole request is all of it");
	for (size_t k = 0; k < n; k++)
		if (fcgireq_scan(buf, k) != 0)
			prefixes_incomplete = false;
	ok(prefixes_incomplete, "fcgireq: every shorter prefix is not all there yet");
	r = fcgireq_parse(buf, n, 42);
	ok(r != NULL, "fcgireq: parsed");
	if (r != NULL) {
		const char *q = FCGX_GetParam("QUERY_STRING", r->req.envp);

		is_str(FCGX_GetParam("REQUEST_METHOD", r->req.envp), "GET", "fcgireq: a param");
		ok(q != NULL && strcmp(q, longq) == 0,
		   "fcgireq: a 4-byte length split across records");
		is_str(FCGX_GetParam("PATH_INFO", r->req.envp), "/feeds/x",
		       "fcgireq: the last one");
		ok(FCGX_GetParam("HTTP_ACCEPT", r->req.envp) == NULL, "fcgireq: absent is NULL");
		is_int(r->req.requestId, 7, "fcgireq: its request id");
		is_int(r->req.keepConnection, 1, "fcgireq: FCGI_KEEP_CONN kept");
		is_int(r->req.ipcFd, 42, "fcgireq: its descriptor");
		ok(fcgireq_is(&r->req) && r->req.out == NULL, "fcgireq: ours, no libfcgi stream");
		r->req.ipcFd = -1;
		fcgireq_free(r);
	}
	/* Without the empty STDIN the request is not all there. */
	is_int(fcgireq_scan(buf, n - 8), 0, "fcgireq: no empty STDIN yet: wait");
	/* Another request id in the middle: not ours. */
	buf[n - 8 + 3] = 8;
	is_int(fcgireq_scan(buf, n), -1, "fcgireq: a record of another request id: refused");
	buf[n - 8 + 3] = 7;
	buf[9] = 2; /* role authorizer */
	is_int(fcgireq_scan(buf, n), -1, "fcgireq: a role other than responder: refused");
	buf[9] = 1;
	/* A pair whose length runs past the params: malformed. */
	params[0] = 100;
	n = record_with(buf, 0, 1, 7, begin, 8);
	n = record_with(buf, n, 4, 7, params, 10);
	n = record_with(buf, n, 4, 7, NULL, 0);
	n = record_with(buf, n, 5, 7, NULL, 0);
	is_int(fcgireq_scan(buf, n), (long)n, "fcgireq: framing alone is fine");
	ok(fcgireq_parse(buf, n, -1) == NULL, "fcgireq: a pair longer than the params: NULL");
	{ /* params over the parser's stack buffer (4 kB) */
		static unsigned char big[16384], bigp[8192];
		static char q[6001];
		size_t bl = 0, bp = 0;

		memset(q, 'z', sizeof(q) - 1);
		bp += pair(bigp + bp, "QUERY_STRING", q, strlen(q));
		bl = record_with(big, bl, 1, 3, begin, 8);
		bl = record_with(big, bl, 4, 3, bigp, bp);
		bl = record_with(big, bl, 4, 3, NULL, 0);
		bl = record_with(big, bl, 5, 3, NULL, 0);
		r = fcgireq_scan(big, bl) == (long)bl ? fcgireq_parse(big, bl, -1) : NULL;
		ok(r != NULL && strlen(FCGX_GetParam("QUERY_STRING", r->req.envp)) == 6000,
		   "fcgireq: a 6,000-byte param");
		if (r != NULL)
			fcgireq_free(r);
	}
	is_int(fcgireq_scan((const unsigned char *)"GET / HTTP/1.1\r\n", 16), -1,
	       "fcgireq: HTTP: refused");
}

/* ---- a kept connection whose next request comes while one is served ----
 *
 * What nginx does under load with fastcgi_keep_conn: a request's edge
 * comes while the previous one on the connection is still being served
 * (conn.c: KEPT_BUSY -> KEPT_EVENT), so conn_finish hands the connection
 * back to the accepting thread instead of marking it idle.  Request 2's
 * handler waits until the accepting thread has seen request 3's bytes
 * arrive; request 3 must then be served, and the connection closed when
 * the client closes it.  Under ThreadSanitizer this also checks that the
 * thread finishing request 2 touches the descriptor only before handing
 * it on (it used to call epoll_ctl on it after: a race with its close). */

static struct conns kc;
static pthread_mutex_t kmu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t kcv = PTHREAD_COND_INITIALIZER;
static int k_served, k_fd = -1;
static bool k_in_two, k_three_sent;

static int64_t
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void
pause_ms(long ms)
{
	struct timespec ts = {0, ms * 1000000};

	nanosleep(&ts, NULL);
}

static void
k_handle(void *arg, FCGX_Request *req, struct thread_ctx *t)
{
	/* The owner flag as this request found it (busy, until conn_finish):
	 * the accepting thread changes it (busy -> event) on an edge. */
	unsigned char busy = atomic_load(&kc.kept[req->ipcFd]);
	char body[64];
	int n;

	(void)arg;
	(void)t;
	pthread_mutex_lock(&kmu);
	n = ++k_served;
	k_fd = req->ipcFd;
	if (n == 2) {
		k_in_two = true;
		pthread_cond_broadcast(&kcv);
		while (!k_three_sent)
			pthread_cond_wait(&kcv, &kmu);
	}
	pthread_mutex_unlock(&kmu);
	if (n == 2) {
		int64_t until = now_ms() + 5000;
		while (atomic_load(&kc.kept[req->ipcFd]) == busy && now_ms() < until)
			pause_ms(1);
		ok(atomic_load(&kc.kept[req->ipcFd]) != busy,
		   "kept: request 3's edge came while request 2 was served");
	}
	snprintf(body, sizeof(body), "Status: 200 OK\r\n\r\nreply %d", n);
	conn_reply(&kc, req, body, strlen(body), NULL, 0);
}

/* Request 3 is served on the accepting thread itself (as a long-poll
 * with a cursor is): nothing but the hand-back then orders what request
 * 2's handler did with the descriptor before that thread closes it. */
static bool
k_quick(void *arg, FCGX_Request *req)
{
	const char *path = FCGX_GetParam("PATH_INFO", req->envp);

	(void)arg;
	return path != NULL && strcmp(path, "/three") == 0;
}

/* One request as nginx sends it with fastcgi_keep_conn on. */
static size_t
k_request(unsigned char *buf, int id, const char *path)
{
	static const unsigned char begin[8] = {0, 1, 1, 0, 0, 0, 0, 0}; /* responder, keep */
	unsigned char params[256];
	size_t n = 0, plen = 0;

	plen += pair(params + plen, "REQUEST_METHOD", "GET", 3);
	plen += pair(params + plen, "PATH_INFO", path, strlen(path));
	n = record_with(buf, n, 1, id, begin, 8);
	n = record_with(buf, n, 4, id, params, plen);
	n = record_with(buf, n, 4, id, NULL, 0);
	n = record_with(buf, n, 5, id, NULL, 0);
	return n;
}

/* Read records from fd until `ends` FCGI_END_REQUEST records came; the
 * FCGI_STDOUT content goes to out (NUL-terminated).  false: closed,
 * timed out or malformed. */
static bool
k_read_replies(int fd, int ends, char *out, size_t cap)
{
	size_t len = 0;

	while (ends > 0) {
		unsigned char h[8], body[65536 + 256];
		size_t clen;

		if (recv(fd, h, 8, MSG_WAITALL) != 8)
			return false;
		clen = (size_t)h[4] << 8 | h[5];
		if (clen + h[6] > 0 &&
		    recv(fd, body, clen + h[6], MSG_WAITALL) != (ssize_t)(clen + h[6]))
			return false;
		if (h[1] == 6 && len + clen < cap) {
			memcpy(out + len, body, clen);
			len += clen;
		} else if (h[1] == 3) {
			ends--;
		}
	}
	out[len] = '\0';
	return true;
}

static void
test_kept_edge_while_busy(void)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	struct timeval tv = {10, 0};
	unsigned char req[512];
	char got[1024];
	int lfd, cfd, fd;
	int64_t until;

	snprintf(sa.sun_path, sizeof(sa.sun_path), "/tmp/tailgate-test-conn.%d.sock",
	         (int)getpid());
	unlink(sa.sun_path);
	lfd = socket(AF_UNIX, SOCK_STREAM, 0);
	if (lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) != 0 || listen(lfd, 16) != 0) {
		ok(0, "kept: listening on %s: %s", sa.sun_path, strerror(errno));
		return;
	}
	FCGX_Init();
	conn_start(&kc, lfd, 1, 1024, k_handle, k_quick, NULL);
	cfd = socket(AF_UNIX, SOCK_STREAM, 0);
	setsockopt(cfd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	ok(connect(cfd, (struct sockaddr *)&sa, sizeof(sa)) == 0, "kept: connected");
	/* Request 1 on the new connection: then it is kept (registered). */
	(void)!write(cfd, req, k_request(req, 1, "/one"));
	ok(k_read_replies(cfd, 1, got, sizeof(got)) && strstr(got, "reply 1") != NULL,
	   "kept: request 1 answered");
	/* Request 2, and request 3 while request 2 is being served. */
	(void)!write(cfd, req, k_request(req, 1, "/two"));
	pthread_mutex_lock(&kmu);
	while (!k_in_two)
		pthread_cond_wait(&kcv, &kmu);
	pthread_mutex_unlock(&kmu);
	(void)!write(cfd, req, k_request(req, 1, "/three"));
	pthread_mutex_lock(&kmu);
	k_three_sent = true;
	pthread_cond_broadcast(&kcv);
	pthread_mutex_unlock(&kmu);
	ok(k_read_replies(cfd, 2, got, sizeof(got)) && strstr(got, "reply 2") != NULL &&
	           strstr(got, "reply 3") != NULL &&
	           strstr(got, "reply 2") < strstr(got, "reply 3"),
	   "kept: request 3, come while request 2 was served, answered after it: %s", got);
	/* The client closes: the accepting thread closes its end. */
	pthread_mutex_lock(&kmu);
	fd = k_fd;
	pthread_mutex_unlock(&kmu);
	close(cfd);
	until = now_ms() + 5000;
	while (fcntl(fd, F_GETFD) != -1 && now_ms() < until)
		pause_ms(1);
	ok(fcntl(fd, F_GETFD) == -1 && errno == EBADF,
	   "kept: closed when the client closed the connection");
	conn_stop_accepting(&kc);
	conn_stop(&kc);
	close(lfd);
	unlink(sa.sun_path);
}

int
main(void)
{
	unsigned char buf[1024] = {0};
	size_t n = 0, full;

	is_int(conn_params_complete(buf, 0), 0, "nothing yet: not complete");
	n = record(buf, n, 1, 8, 0); /* BEGIN_REQUEST */
	is_int(conn_params_complete(buf, n), 0, "BEGIN_REQUEST only: not complete");
	n = record(buf, n, 4, 300, 4); /* PARAMS with content and padding */
	is_int(conn_params_complete(buf, n), 0, "a PARAMS record with content: not complete");
	full = record(buf, n, 4, 0, 0); /* the empty PARAMS that ends the block */
	is_int(conn_params_complete(buf, full), 1, "the empty PARAMS record: complete");
	for (size_t cut = 1; cut < 8; cut++)
		if (conn_params_complete(buf, full - cut) != 0) {
			ok(0, "the empty PARAMS header cut at %zu bytes is not complete", 8 - cut);
			break;
		} else if (cut == 7) {
			ok(1, "the empty PARAMS header cut short: not complete (7 cuts)");
		}
	/* A content length above 255 uses both bytes, and padding counts:
	 * a PARAMS record of 0x0100 bytes is not mistaken for an empty one. */
	n = record(buf, 0, 1, 8, 0);
	n = record(buf, n, 4, 256, 0);
	is_int(conn_params_complete(buf, n), 0, "PARAMS of 256 bytes is not the empty one");
	n = record(buf, n, 4, 0, 0);
	is_int(conn_params_complete(buf, n), 1, "then the empty one completes it");
	/* Padding hides a fake header: the padding bytes are skipped. */
	n = record(buf, 0, 1, 8, 8);
	memcpy(buf + 16, "\x01\x04\x00\x01\x00\x00\x00\x00", 8); /* inside the padding */
	is_int(conn_params_complete(buf, n), 0, "a header inside padding is not read");
	/* Not FastCGI (an HTTP request sent to the socket). */
	memcpy(buf, "GET / HTTP/1.1\r\n", 16);
	is_int(conn_params_complete(buf, 16), -1, "an HTTP request: malformed");
	n = record(buf, 0, 1, 8, 0);
	buf[n] = 2; /* a later record with version 2 */
	is_int(conn_params_complete(buf, n + 8), -1, "a record of another version: malformed");
	test_fcgireq();
	test_kept_edge_while_busy();
	return tap_done();
}
