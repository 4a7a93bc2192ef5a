/*
 * floor_fcgi.c - the cheapest FastCGI responder of tailgate's shape, the
 * "floor" of bench/compare (--servers tailgate,floor,nchan; see
 * docs/BENCHMARKS.md, "the floor").
 *
 *   floor_fcgi --socket PATH [--socket-group GROUP] --publish-port P
 *
 * It sits where tailgate-fcgi sits: behind the repo's nginx config, on the
 * unix socket the snippet passes to, with nginx keeping its FastCGI
 * connections (FCGI_KEEP_CONN).  It does the least a responder of that
 * shape can do, in one thread and one epoll loop:
 *
 *   - a request without ?cursor= (the load client's first, compare's
 *     readiness probe) gets the snapshot at once: the initial state;
 *   - an SSE request (Accept: text/event-stream) gets its head at once and
 *     then one event per published batch;
 *   - a long-poll (?cursor=C) is parked, unless C is older than the newest
 *     batch: then it gets at once every batch after C (of the last 64),
 *     rendered once per starting batch and publish, as tailgate does;
 *   - bench/publisher POSTs each batch to 127.0.0.1:P (its --post sink, as
 *     for nchan); the batch is formatted once, as tailgate's long-poll reply
 *     (the same head and JSON envelope, gzip at tailgate's default level 1
 *     for a request that sent Accept-Encoding gzip) and as tailgate's SSE
 *     event, and written to every parked request and every stream in the
 *     order they arrived.  Each reply is one writev: the record header, the
 *     shared preformatted bytes, and (long-poll) the end records.
 *
 * No ring, no rendering per request, no cursor checks beyond the number, no
 * libfcgi, no threads, no timeouts (a parked request waits for the next
 * batch; bench runs are far shorter than nginx's 60 s read timeout), and
 * every path is the one feed.  Whatever tailgate spends above this, for the
 * same deliveries through the same nginx, is tailgate's own.  A benchmark
 * program: it trusts nginx and the publisher on loopback, and gives up
 * (closes the connection) on anything it does not expect.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <grp.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>
#include <zlib.h>

#define FCGI_HEADER_LEN 8
#define FCGI_BEGIN_REQUEST 1
#define FCGI_ABORT_REQUEST 2
#define FCGI_END_REQUEST 3
#define FCGI_PARAMS 4
#define FCGI_STDIN 5
#define FCGI_STDOUT 6
#define FCGI_KEEP_CONN 1
#define CONTENT_MAX 65535u       /* one FastCGI record's content */
#define IN_MAX (4u << 20)        /* a request or a POST larger than this is an error */
#define GZIP_LEVEL 1             /* tailgate-fcgi's default --gzip-level */
#define EPOCH_SUFFIX ".00000000" /* tailgate's cursors are "TIMESTAMP.EPOCH" */

enum conn_kind { CONN_FCGI, CONN_PUBLISH };
enum conn_state { ST_IDLE, ST_READING, ST_PARKED, ST_STREAM };

struct conn {
	int fd;
	enum conn_kind kind;
	enum conn_state state;
	unsigned char *in; /* bytes read and not yet consumed */
	size_t in_len, in_cap;
	unsigned char *params; /* the request's FCGI_PARAMS stream */
	size_t params_len, params_cap;
	char *out; /* bytes a write could not take yet */
	size_t out_len, out_cap;
	uint16_t id;   /* FastCGI request id */
	bool keep;     /* FCGI_KEEP_CONN */
	bool gzip;     /* Accept-Encoding holds gzip */
	int list_pos;  /* index in parked[] or streams[], -1 if in neither */
	bool want_out; /* EPOLLOUT registered */
};

/* One preformatted FastCGI STDOUT content (head and body). */
struct reply {
	char *p;
	size_t len;
};

static int epfd;
static struct conn **conns; /* by descriptor */
static int conns_max;
static int *parked, n_parked;
static int *streams, n_streams;
static uint64_t newest_ts; /* the newest batch's timestamp (the state's, before any) */
static struct reply snap, lp_plain, lp_gzip, sse_event;

/* The last KEEP batches, for long-polls that fell behind: batch j (0 = the
 * first after the state) is kept[j % KEEP]; catch_ups[j % KEEP] is the
 * reply from batch j to the newest, once rendered. */
#define KEEP 64
struct batch {
	uint64_t ts;
	char *body;
	size_t len;
};
struct catch_up {
	uint64_t from, upto; /* batches from..upto-1; upto 0: none yet */
	struct reply plain, gzip;
};
static struct batch kept[KEEP];
static struct catch_up catch_ups[KEEP];
static uint64_t published; /* batches after the state */

static const struct reply *catch_up(uint64_t cursor, bool gzip);
static const char sse_head[] = "Status: 200 OK\r\nContent-Type: text/event-stream\r\n"
                               "Cache-Control: no-store\r\nX-Accel-Buffering: no\r\n\r\n"
                               "retry: 2000\n\n";

static void
die(const char *what, const char *why)
{
	fprintf(stderr, "floor_fcgi: %s: %s\n", what, why);
	exit(1);
}

static void
grow(void **p, size_t *cap, size_t need)
{
	size_t c = *cap ? *cap : 1024;

	if (need <= *cap)
		return;
	while (c < need)
		c *= 2;
	*p = realloc(*p, c);
	if (*p == NULL)
		die("out of memory", "a buffer");
	*cap = c;
}

static void
record_header(unsigned char *h, int type, uint16_t id, size_t len)
{
	h[0] = 1;
	h[1] = (unsigned char)type;
	h[2] = (unsigned char)(id >> 8);
	h[3] = (unsigned char)id;
	h[4] = (unsigned char)(len >> 8);
	h[5] = (unsigned char)len;
	h[6] = 0;
	h[7] = 0;
}

/* ---- lists ------------------------------------------------------------- */

static void
list_add(int **list, int *n, struct conn *c)
{
	c->list_pos = (*n)++;
	(*list)[c->list_pos] = c->fd;
}

static void
list_remove(int *list, int *n, struct conn *c)
{
	int last = list[--*n];

	list[c->list_pos] = last;
	conns[last]->list_pos = c->list_pos;
	c->list_pos = -1;
}

/* ---- connections ----------------------------------------------------------- */

static void
conn_close(struct conn *c)
{
	if (c->state == ST_PARKED)
		list_remove(parked, &n_parked, c);
	else if (c->state == ST_STREAM)
		list_remove(streams, &n_streams, c);
	close(c->fd);
	conns[c->fd] = NULL;
	free(c->in);
	free(c->params);
	free(c->out);
	free(c);
}

static void
set_out_interest(struct conn *c, bool want)
{
	struct epoll_event ev = {.events = EPOLLIN | (want ? EPOLLOUT : 0u), .data.fd = c->fd};

	if (want != c->want_out) {
		epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
		c->want_out = want;
	}
}

/* Writes iov (after what is pending) without blocking; keeps the rest.
 * false: the connection is gone (closed here). */
static bool
conn_writev(struct conn *c, struct iovec *iov, int n)
{
	size_t total = 0, done;
	ssize_t w = 0;

	for (int i = 0; i < n; i++)
		total += iov[i].iov_len;
	if (c->out_len == 0) {
		w = writev(c->fd, iov, n);
		if (w < 0) {
			if (errno != EAGAIN && errno != EINTR) {
				conn_close(c);
				return false;
			}
			w = 0;
		}
		if ((size_t)w == total)
			return true;
	}
	done = (size_t)w;
	for (int i = 0; i < n; i++) {
		size_t skip = done < iov[i].iov_len ? done : iov[i].iov_len;
		done -= skip;
		grow((void **)&c->out, &c->out_cap, c->out_len + iov[i].iov_len - skip);
		memcpy(c->out + c->out_len, (char *)iov[i].iov_base + skip, iov[i].iov_len - skip);
		c->out_len += iov[i].iov_len - skip;
	}
	set_out_interest(c, true);
	return true;
}

static bool
conn_flush(struct conn *c)
{
	while (c->out_len > 0) {
		ssize_t w = write(c->fd, c->out, c->out_len);
		if (w < 0) {
			if (errno == EAGAIN)
				return true;
			if (errno == EINTR)
				continue;
			conn_close(c);
			return false;
		}
		memmove(c->out, c->out + w, c->out_len - (size_t)w);
		c->out_len -= (size_t)w;
	}
	set_out_interest(c, false);
	return true;
}

/* A whole reply: STDOUT record, empty STDOUT, END_REQUEST. */
static bool
answer(struct conn *c, const struct reply *r)
{
	unsigned char h[FCGI_HEADER_LEN], end[2 * FCGI_HEADER_LEN + 8];
	struct iovec iov[3] = {{h, sizeof(h)}, {r->p, r->len}, {end, sizeof(end)}};

	record_header(h, FCGI_STDOUT, c->id, r->len);
	record_header(end, FCGI_STDOUT, c->id, 0);
	record_header(end + FCGI_HEADER_LEN, FCGI_END_REQUEST, c->id, 8);
	memset(end + 2 * FCGI_HEADER_LEN, 0, 8); /* appStatus 0, FCGI_REQUEST_COMPLETE */
	c->state = ST_IDLE;
	if (!conn_writev(c, iov, 3))
		return false;
	if (!c->keep) {
		conn_close(c);
		return false;
	}
	return true;
}

static bool
stream_write(struct conn *c, const char *p, size_t len)
{
	unsigned char h[FCGI_HEADER_LEN];
	struct iovec iov[2] = {{h, sizeof(h)}, {(void *)p, len}};

	record_header(h, FCGI_STDOUT, c->id, len);
	return conn_writev(c, iov, 2);
}

/* ---- requests -------------------------------------------------------------- */

static uint32_t
nv_len(const unsigned char **p, const unsigned char *end, bool *ok)
{
	uint32_t v;

	if (*p >= end) {
		*ok = false;
		return 0;
	}
	if (!(**p & 0x80))
		return *(*p)++;
	if (end - *p < 4) {
		*ok = false;
		return 0;
	}
	v = ((uint32_t)((*p)[0] & 0x7f) << 24) | ((uint32_t)(*p)[1] << 16) |
	    ((uint32_t)(*p)[2] << 8) | (*p)[3];
	*p += 4;
	return v;
}

static bool
name_is(const unsigned char *n, uint32_t nl, const char *want)
{
	return nl == strlen(want) && memcmp(n, want, nl) == 0;
}

/* The request's parameters are in; answer, park or stream it. */
static bool
request(struct conn *c)
{
	const unsigned char *p = c->params, *end = c->params + c->params_len;
	bool ok = true, sse = false, has_cursor = false;
	uint64_t cursor = 0;

	c->gzip = false;
	while (p < end && ok) {
		uint32_t nl = nv_len(&p, end, &ok), vl = nv_len(&p, end, &ok);
		const unsigned char *n = p, *v = p + nl;

		if (!ok || (size_t)(end - p) < (size_t)nl + vl)
			return false;
		p += nl + vl;
		if (name_is(n, nl, "HTTP_ACCEPT"))
			sse = memmem(v, vl, "text/event-stream", 17) != NULL;
		else if (name_is(n, nl, "HTTP_ACCEPT_ENCODING"))
			c->gzip = memmem(v, vl, "gzip", 4) != NULL;
		else if (name_is(n, nl, "QUERY_STRING")) {
			const unsigned char *q = memmem(v, vl, "cursor=", 7);
			if (q != NULL) {
				has_cursor = true;
				for (q += 7; q < v + vl && *q >= '0' && *q <= '9'; q++)
					cursor = cursor * 10 + (uint64_t)(*q - '0');
			}
		}
	}
	c->params_len = 0;
	if (sse) {
		c->state = ST_STREAM;
		list_add(&streams, &n_streams, c);
		return stream_write(c, sse_head, sizeof(sse_head) - 1);
	}
	if (!has_cursor)
		return answer(c, &snap);
	if (cursor < newest_ts && published > 0)
		return answer(c, catch_up(cursor, c->gzip));
	c->state = ST_PARKED;
	list_add(&parked, &n_parked, c);
	return true;
}

/* Consumes the FastCGI records in c->in. */
static bool
fcgi_input(struct conn *c)
{
	size_t off = 0;
	bool alive = true;

	while (alive && c->in_len - off >= FCGI_HEADER_LEN) {
		const unsigned char *h = c->in + off;
		size_t clen = ((size_t)h[4] << 8) | h[5], rlen = FCGI_HEADER_LEN + clen + h[6];
		uint16_t id = (uint16_t)((h[2] << 8) | h[3]);

		if (c->in_len - off < rlen)
			break;
		off += rlen;
		switch (h[1]) {
		case FCGI_BEGIN_REQUEST:
			if (c->state != ST_IDLE || clen < 8) {
				conn_close(c);
				return false;
			}
			c->id = id;
			c->keep = (h[FCGI_HEADER_LEN + 2] & FCGI_KEEP_CONN) != 0;
			c->state = ST_READING;
			c->params_len = 0;
			break;
		case FCGI_PARAMS:
			if (c->state != ST_READING)
				break;
			grow((void **)&c->params, &c->params_cap, c->params_len + clen + 1);
			memcpy(c->params + c->params_len, h + FCGI_HEADER_LEN, clen);
			c->params_len += clen;
			break;
		case FCGI_STDIN:
			if (c->state == ST_READING && clen == 0)
				alive = request(c);
			break;
		case FCGI_ABORT_REQUEST:
			conn_close(c);
			return false;
		default:
			break; /* nginx sends nothing else */
		}
	}
	if (alive) {
		memmove(c->in, c->in + off, c->in_len - off);
		c->in_len -= off;
	}
	return alive;
}

/* ---- publishing -------------------------------------------------------------- */

/* tailgate-fcgi's head, in its order, and the body. */
static void
reply_set(struct reply *r, const char *cache, const char *more, const void *body, size_t len)
{
	char head[512];
	int n = snprintf(head, sizeof(head),
	                 "Status: 200 OK\r\nContent-Type: application/json\r\nCache-Control: %s\r\n"
	                 "Content-Length: %zu\r\n%s\r\n",
	                 cache, len, more);

	if (n < 0 || (size_t)n >= sizeof(head) || (size_t)n + len > CONTENT_MAX)
		die("a published batch", "its reply does not fit one FastCGI record");
	free(r->p);
	r->p = malloc((size_t)n + len);
	if (r->p == NULL)
		die("out of memory", "a reply");
	memcpy(r->p, head, (size_t)n);
	memcpy(r->p + n, body, len);
	r->len = (size_t)n + len;
}

static size_t
gzip_once(const char *in, size_t len, unsigned char **out)
{
	z_stream z;
	size_t bound;

	memset(&z, 0, sizeof(z));
	if (deflateInit2(&z, GZIP_LEVEL, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
		die("gzip", "deflateInit2 failed");
	bound = deflateBound(&z, len);
	*out = malloc(bound);
	if (*out == NULL)
		die("out of memory", "gzip");
	z.next_in = (unsigned char *)in;
	z.avail_in = (unsigned)len;
	z.next_out = *out;
	z.avail_out = (unsigned)bound;
	if (deflate(&z, Z_FINISH) != Z_STREAM_END)
		die("gzip", "deflate did not finish");
	deflateEnd(&z);
	return bound - z.avail_out;
}

/* The long-poll reply holding batches from..published-1 (plain and gzip),
 * tailgate's envelope: {"cursor":"NEWEST.EPOCH","batches":[...]}. */
static void
render_from(uint64_t from, struct reply *plain, struct reply *gz)
{
	size_t jl = 0, gl;
	unsigned char *z;
	char *json;
	int n;

	for (uint64_t j = from; j < published; j++)
		jl += kept[j % KEEP].len + 1;
	json = malloc(jl + 64);
	if (json == NULL)
		die("out of memory", "a reply");
	n = snprintf(json, 64, "{\"cursor\":\"%" PRIu64 EPOCH_SUFFIX "\",\"batches\":[", newest_ts);
	jl = (size_t)n;
	for (uint64_t j = from; j < published; j++) {
		if (j > from)
			json[jl++] = ',';
		memcpy(json + jl, kept[j % KEEP].body, kept[j % KEEP].len);
		jl += kept[j % KEEP].len;
	}
	json[jl++] = ']';
	json[jl++] = '}';
	reply_set(plain, "public, max-age=60, immutable", "", json, jl);
	gl = gzip_once(json, jl, &z);
	reply_set(gz, "public, max-age=60, immutable",
	          "Content-Encoding: gzip\r\nVary: Accept-Encoding\r\n", z, gl);
	free(z);
	free(json);
}

/* The reply for a long-poll whose cursor is behind the newest batch: every
 * kept batch after it, rendered once per starting batch and publish (as
 * tailgate renders once per cursor). */
static const struct reply *
catch_up(uint64_t cursor, bool gzip)
{
	uint64_t from = published > KEEP ? published - KEEP : 0;
	struct catch_up *cu;

	while (from < published - 1 && kept[from % KEEP].ts <= cursor)
		from++;
	if (from == published - 1)
		return gzip ? &lp_gzip : &lp_plain;
	cu = &catch_ups[from % KEEP];
	if (cu->from != from || cu->upto != published) {
		render_from(from, &cu->plain, &cu->gzip);
		cu->from = from;
		cu->upto = published;
	}
	return gzip ? &cu->gzip : &cu->plain;
}

/* A batch (the publisher's JSON, {"timestamp":"T",...}) arrived. */
static void
publish(const char *body, size_t len)
{
	const char *t = memmem(body, len, "\"timestamp\":\"", 13);
	struct batch *b;
	uint64_t ts = 0;
	char *json;
	size_t jl;
	int n;

	if (t == NULL)
		die("a published batch", "no \"timestamp\" in it (not bench/publisher's JSON?)");
	for (t += 13; *t >= '0' && *t <= '9'; t++)
		ts = ts * 10 + (uint64_t)(*t - '0');
	if (snap.p == NULL) { /* the first POST is the initial state: the snapshot */
		json = malloc(len + 64);
		if (json == NULL)
			die("out of memory", "the state");
		n = snprintf(json, 64, "{\"cursor\":\"%" PRIu64 EPOCH_SUFFIX "\",\"batches\":[",
		             ts);
		memcpy(json + n, body, len);
		jl = (size_t)n + len;
		json[jl++] = ']';
		json[jl++] = '}';
		reply_set(&snap, "no-store", "", json, jl);
		newest_ts = ts;
		free(json);
		return;
	}
	b = &kept[published % KEEP];
	free(b->body);
	b->body = malloc(len);
	if (b->body == NULL)
		die("out of memory", "a batch");
	memcpy(b->body, body, len);
	b->len = len;
	b->ts = ts;
	published++;
	newest_ts = ts;
	render_from(published - 1, &lp_plain, &lp_gzip);
	json = malloc(len + 64);
	if (json == NULL)
		die("out of memory", "an event");
	n = snprintf(json, 64, "id: %" PRIu64 EPOCH_SUFFIX "\ndata: ", ts);
	memcpy(json + n, body, len);
	jl = (size_t)n + len;
	json[jl++] = '\n';
	json[jl++] = '\n';
	free(sse_event.p);
	sse_event.p = json;
	sse_event.len = jl;

	/* every parked long-poll, in arrival order; then every stream */
	for (int i = 0; i < n_parked; i++) {
		struct conn *c = conns[parked[i]];
		c->list_pos = -1;
		answer(c, c->gzip ? &lp_gzip : &lp_plain);
	}
	n_parked = 0;
	for (int i = 0; i < n_streams;) {
		int fd = streams[i];
		stream_write(conns[fd], sse_event.p, sse_event.len);
		if (i < n_streams && streams[i] == fd)
			i++; /* else it closed, and the last one moved here */
	}
}

/* The publisher's HTTP/1.1 POSTs on a keep-alive connection. */
static bool
publish_input(struct conn *c)
{
	static const char ok[] = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";

	for (;;) {
		char *e, *cl;
		size_t head, need;

		if (c->in_len == 0)
			return true;
		c->in[c->in_len] = '\0';
		e = strstr((char *)c->in, "\r\n\r\n");
		if (e == NULL)
			return true;
		head = (size_t)(e + 4 - (char *)c->in);
		cl = strcasestr((char *)c->in, "\r\nContent-Length:");
		need = head + (cl != NULL && cl < e ? strtoul(cl + 17, NULL, 10) : 0);
		if (need >= IN_MAX) {
			conn_close(c);
			return false;
		}
		if (c->in_len < need)
			return true;
		publish((char *)c->in + head, need - head);
		if (write(c->fd, ok, sizeof(ok) - 1) != (ssize_t)sizeof(ok) - 1) {
			conn_close(c);
			return false;
		}
		memmove(c->in, c->in + need, c->in_len - need);
		c->in_len -= need;
	}
}

static void
conn_readable(struct conn *c)
{
	for (;;) {
		ssize_t r;

		grow((void **)&c->in, &c->in_cap, c->in_len + 16384 + 1);
		r = read(c->fd, c->in + c->in_len, c->in_cap - c->in_len - 1);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0 && errno == EAGAIN)
			return;
		if (r <= 0 || c->in_len + (size_t)r >= IN_MAX) {
			conn_close(c); /* nginx closes when the browser went away */
			return;
		}
		c->in_len += (size_t)r;
		if (!(c->kind == CONN_FCGI ? fcgi_input(c) : publish_input(c)))
			return;
	}
}

static void
accept_all(int lfd, enum conn_kind kind)
{
	for (;;) {
		int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		struct epoll_event ev = {.events = EPOLLIN};
		struct conn *c;

		if (fd < 0)
			return;
		if (fd >= conns_max) {
			close(fd);
			continue;
		}
		c = calloc(1, sizeof(*c));
		if (c == NULL)
			die("out of memory", "a connection");
		c->fd = fd;
		c->kind = kind;
		c->list_pos = -1;
		conns[fd] = c;
		ev.data.fd = fd;
		if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) != 0)
			conn_close(c);
	}
}

/* ---- main ------------------------------------------------------------------------ */

static int
listen_unix(const char *path, const char *group)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	int fd;

	if (strlen(path) >= sizeof(sa.sun_path))
		die(path, "--socket path too long");
	strcpy(sa.sun_path, path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	unlink(path);
	if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0)
		die(path, strerror(errno));
	if (group != NULL) { /* nginx's workers' group may connect, no one else */
		struct group *g = getgrnam(group);
		if (g == NULL || chown(path, (uid_t)-1, g->gr_gid) != 0)
			die(group, "--socket-group: no such group, or chown failed");
		chmod(path, 0660);
	}
	if (listen(fd, 4096) != 0)
		die(path, strerror(errno));
	return fd;
}

static int
listen_publish(int port)
{
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), one = 1;

	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 || listen(fd, 16) != 0)
		die("--publish-port on 127.0.0.1", strerror(errno));
	return fd;
}

static void
usage(FILE *f)
{
	fprintf(f, "usage: floor_fcgi --socket PATH [--socket-group GROUP] --publish-port P\n"
	           "  the cheapest FastCGI responder of tailgate's shape (bench/compare's floor):\n"
	           "  parks every long-poll on PATH and answers them all with one preformatted\n"
	           "  reply when bench/publisher POSTs a batch to http://127.0.0.1:P/\n");
}

int
main(int argc, char **argv)
{
	static const struct option longopts[] = {{"socket", required_argument, NULL, 's'},
	                                         {"socket-group", required_argument, NULL, 'g'},
	                                         {"publish-port", required_argument, NULL, 'p'},
	                                         {"help", no_argument, NULL, 'h'},
	                                         {NULL, 0, NULL, 0}};
	const char *sock = NULL, *group = NULL;
	int port = 0, ch, ufd, pfd;
	struct epoll_event ev = {.events = EPOLLIN}, evs[256];
	struct rlimit rl;

	while ((ch = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		switch (ch) {
		case 's':
			sock = optarg;
			break;
		case 'g':
			group = optarg;
			break;
		case 'p':
			port = atoi(optarg);
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (sock == NULL || port <= 0 || port > 65535 || optind != argc) {
		usage(stderr);
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	conns_max = getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < 1048576 ? (int)rl.rlim_cur
	                                                                        : 1048576;
	conns = calloc((size_t)conns_max, sizeof(*conns));
	parked = calloc((size_t)conns_max, sizeof(*parked));
	streams = calloc((size_t)conns_max, sizeof(*streams));
	if (conns == NULL || parked == NULL || streams == NULL)
		die("out of memory", "the tables");
	epfd = epoll_create1(EPOLL_CLOEXEC);
	pfd = listen_publish(port); /* first: the socket's existence means ready */
	ufd = listen_unix(sock, group);
	ev.data.fd = pfd;
	epoll_ctl(epfd, EPOLL_CTL_ADD, pfd, &ev);
	ev.data.fd = ufd;
	epoll_ctl(epfd, EPOLL_CTL_ADD, ufd, &ev);

	for (;;) {
		int n = epoll_wait(epfd, evs, 256, -1);

		for (int i = 0; i < n; i++) {
			int fd = evs[i].data.fd;
			struct conn *c;

			if (fd == ufd) {
				accept_all(ufd, CONN_FCGI);
				continue;
			}
			if (fd == pfd) {
				accept_all(pfd, CONN_PUBLISH);
				continue;
			}
			c = conns[fd];
			if (c == NULL)
				continue; /* closed earlier in this round */
			if ((evs[i].events & EPOLLOUT) && !conn_flush(c))
				continue;
			if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))
				conn_readable(c);
		}
	}
}
