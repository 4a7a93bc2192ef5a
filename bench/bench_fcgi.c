/*
 * bench_fcgi.c - N long-pollers (or SSE clients) on one feed through nginx
 * and tailgate-fcgi, while this program writes the feed's ring.
 *
 *   bench_fcgi --port P --ring-dir D [--feed NAME] [-n N] [--sse]
 *              [--rate R] [--batches B] [--rows K] [--pid PID]...
 *              [--max-seconds S]
 *
 * It creates the ring (it is the writer: tailgate-fcgi must use the same
 * ring directory), opens N keep-alive HTTP/1.1 connections to 127.0.0.1:P
 * (loopback only) driven by one epoll loop, waits until the responder
 * reports N parked requests (/metrics), then publishes B batches of K rows
 * at R per second.  Long-pollers re-poll with the cursor of each reply.
 * Printed: delivery latency (publish -> the client has the whole reply or
 * event) p50/p99/max over every (client, batch), the responder's CPU per
 * delivered batch (utime+stime of each --pid from /proc/PID/stat, children
 * included when --workers forks), and its RSS growth per parked request.
 * Bounded: at most --max-seconds (default 60) from the first publish.
 */
#include <config.h> /* autoconf's: _GNU_SOURCE for memmem */

#include "batch.h"
#include "clock.h"
#include "ring.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_PIDS 16
#define MAX_BATCHES 100000

struct client {
	int fd;
	int idx;
	bool sent;
	uint64_t cursor;
	char *buf;
	size_t len, cap;
	/* response parsing */
	bool in_body;
	bool chunked;
	size_t body_start;
	size_t consumed; /* SSE: bytes of the decoded stream handled */
	char *dec;       /* decoded body (chunked) */
	size_t dec_len, dec_cap;
	size_t chunk_left;
	size_t parse_pos;
	bool chunk_done;
};

static struct {
	int port;
	const char *dir, *feed;
	int n;
	bool sse;
	double rate;
	int batches, rows;
	int pids[MAX_PIDS], n_pids;
	int max_seconds;
	int nginx_pid;
} opt = {0, NULL, "bench", 1000, false, 10, 50, 10, {0}, 0, 60, 0};

static struct ring *ring;
static int64_t pub_ns[MAX_BATCHES + 2];
static double *lat;
static size_t n_lat, cap_lat;
static int epfd;
static uint64_t base_cursor = 1000;
static uint32_t ident; /* the ring's history: cursors are POSITION.IDENT */
static uint64_t deliveries_bytes;

static void
add_lat(uint64_t cursor)
{
	int64_t k = (int64_t)(cursor - base_cursor);

	if (k < 1 || k > opt.batches || pub_ns[k] == 0)
		return;
	if (n_lat == cap_lat) {
		cap_lat = cap_lat ? cap_lat * 2 : 65536;
		lat = realloc(lat, cap_lat * sizeof(*lat));
		if (lat == NULL)
			abort();
	}
	lat[n_lat++] = (double)(clock_mono_ns() - pub_ns[k]) / 1e9;
}

static void
buf_add(char **p, size_t *len, size_t *cap, const char *d, size_t n)
{
	if (*len + n + 1 > *cap) {
		size_t nc = *cap ? *cap : 4096;
		while (nc < *len + n + 1)
			nc *= 2;
		*p = realloc(*p, nc);
		if (*p == NULL)
			abort();
		*cap = nc;
	}
	memcpy(*p + *len, d, n);
	*len += n;
	(*p)[*len] = '\0';
}

static int
connect_one(void)
{
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)opt.port)};
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), one = 1;

	if (fd < 0)
		return -1;
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 && errno != EINPROGRESS) {
		close(fd);
		return -1;
	}
	return fd;
}

static void
send_request(struct client *c)
{
	char req[512];
	int n;

	if (opt.sse)
		n = snprintf(req, sizeof(req),
		             "GET /feeds/%s?cursor=%" PRIu64 ".%08" PRIx32
		             " HTTP/1.1\r\nHost: localhost\r\n"
		             "Accept: text/event-stream\r\n\r\n",
		             opt.feed, c->cursor, ident);
	else
		n = snprintf(req, sizeof(req),
		             "GET /feeds/%s?cursor=%" PRIu64 ".%08" PRIx32
		             " HTTP/1.1\r\nHost: localhost\r\n\r\n",
		             opt.feed, c->cursor, ident);
	if (write(c->fd, req, (size_t)n) != n) {
		fprintf(stderr, "bench_fcgi: client %d: short write\n", c->idx);
		return;
	}
	c->sent = true;
	c->len = 0;
	c->in_body = false;
	c->dec_len = 0;
	c->parse_pos = 0;
	c->chunk_left = 0;
	c->chunk_done = false;
	c->consumed = 0;
}

/* Decode what chunked data arrived; true once the terminal chunk is seen. */
static bool
dechunk(struct client *c)
{
	for (;;) {
		if (c->chunk_left > 0) {
			size_t avail = c->len - c->parse_pos;
			size_t take = avail < c->chunk_left ? avail : c->chunk_left;
			if (take == 0)
				return false;
			buf_add(&c->dec, &c->dec_len, &c->dec_cap, c->buf + c->parse_pos, take);
			c->parse_pos += take;
			c->chunk_left -= take;
			if (c->chunk_left > 0)
				return false;
			c->parse_pos += 2; /* CRLF after the data (may be pending) */
			continue;
		}
		if (c->parse_pos >= c->len)
			return false;
		char *eol = memmem(c->buf + c->parse_pos, c->len - c->parse_pos, "\r\n", 2);
		if (eol == NULL)
			return false;
		size_t size = strtoul(c->buf + c->parse_pos, NULL, 16);
		c->parse_pos = (size_t)(eol - c->buf) + 2;
		if (size == 0) {
			c->chunk_done = true;
			return true;
		}
		c->chunk_left = size;
	}
}

static void
handle_sse(struct client *c)
{
	/* Events are separated by a blank line; take each id. */
	for (;;) {
		char *start = c->dec + c->consumed;
		char *end = memmem(start, c->dec_len - c->consumed, "\n\n", 2);
		if (end == NULL)
			return;
		char *id = memmem(start, (size_t)(end - start), "id: ", 4);
		if (id != NULL) {
			uint64_t cur = strtoull(id + 4, NULL, 10);
			if (cur > c->cursor) {
				c->cursor = cur;
				add_lat(cur);
			}
		}
		c->consumed = (size_t)(end - c->dec) + 2;
	}
}

/* Data arrived on c. */
static void
on_read(struct client *c)
{
	char tmp[65536];
	ssize_t r;

	while ((r = read(c->fd, tmp, sizeof(tmp))) > 0) {
		deliveries_bytes += (size_t)r;
		buf_add(&c->buf, &c->len, &c->cap, tmp, (size_t)r);
	}
	if (r == 0) {
		fprintf(stderr, "bench_fcgi: client %d: connection closed\n", c->idx);
		epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
		close(c->fd);
		c->fd = -1;
		return;
	}
	if (!c->in_body) {
		char *hend = memmem(c->buf, c->len, "\r\n\r\n", 4);
		if (hend == NULL)
			return;
		if (strncmp(c->buf, "HTTP/1.1 200", 12) != 0) {
			fprintf(stderr, "bench_fcgi: client %d: %.40s\n", c->idx, c->buf);
		}
		c->in_body = true;
		c->chunked = memmem(c->buf, (size_t)(hend - c->buf), "chunked", 7) != NULL;
		c->parse_pos = (size_t)(hend - c->buf) + 4;
	}
	bool done = dechunk(c);
	if (opt.sse) {
		handle_sse(c);
		return;
	}
	if (!done)
		return;
	/* A complete long-poll reply: {"cursor":"C",...} */
	char *cur = strstr(c->dec, "\"cursor\":\"");
	if (cur != NULL) {
		uint64_t v = strtoull(cur + 10, NULL, 10);
		/* Every batch the reply carries is one delivery (a client
		 * that fell behind gets several in one reply). */
		for (uint64_t k = c->cursor + 1; k <= v; k++)
			add_lat(k);
		c->cursor = v;
	}
	send_request(c);
}

static double
pct(double p)
{
	if (n_lat == 0)
		return 0;
	size_t i = (size_t)(p * (double)(n_lat - 1));
	return lat[i];
}

static int
cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

/* utime+stime (+ children's) in clock ticks, and RSS in kB, of pid. */
static void
proc_usage(int pid, unsigned long long *ticks, long *rss_kb)
{
	char path[64], buf[4096];
	FILE *f;

	*ticks = 0;
	*rss_kb = 0;
	snprintf(path, sizeof(path), "/proc/%d/stat", pid);
	if ((f = fopen(path, "r")) != NULL) {
		if (fgets(buf, sizeof(buf), f) != NULL) {
			char *p = strrchr(buf, ')');
			unsigned long long ut, st;
			long long cut, cst;
			if (p && sscanf(p + 2,
			                "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu "
			                "%lld %lld",
			                &ut, &st, &cut, &cst) == 4)
				*ticks = ut + st;
		}
		fclose(f);
	}
	snprintf(path, sizeof(path), "/proc/%d/status", pid);
	if ((f = fopen(path, "r")) != NULL) {
		while (fgets(buf, sizeof(buf), f) != NULL)
			if (strncmp(buf, "VmRSS:", 6) == 0)
				*rss_kb = strtol(buf + 6, NULL, 10);
		fclose(f);
	}
}

/* The pid and its direct children (--workers). */
static int
family(int pid, int *out, int max)
{
	char path[64], buf[8192];
	FILE *f;
	int n = 0;

	out[n++] = pid;
	snprintf(path, sizeof(path), "/proc/%d/task/%d/children", pid, pid);
	if ((f = fopen(path, "r")) != NULL) {
		if (fgets(buf, sizeof(buf), f) != NULL) {
			char *tok = strtok(buf, " \n");
			while (tok != NULL && n < max) {
				out[n++] = atoi(tok);
				tok = strtok(NULL, " \n");
			}
		}
		fclose(f);
	}
	return n;
}

static void
usage_of(const int *pids, int n_pids, unsigned long long *ticks, long *rss)
{
	*ticks = 0;
	*rss = 0;
	for (int i = 0; i < n_pids; i++) {
		int fam[64], n = family(pids[i], fam, 64);
		for (int j = 0; j < n; j++) {
			unsigned long long t;
			long r;
			proc_usage(fam[j], &t, &r);
			*ticks += t;
			*rss += r;
		}
	}
}

static void
usage_total(unsigned long long *ticks, long *rss)
{
	usage_of(opt.pids, opt.n_pids, ticks, rss);
}

/* tailgate_parked_requests from /metrics (blocking, one request). */
static long
parked_now(void)
{
	int fd = connect_one();
	char req[] = "GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n", buf[65536];
	size_t len = 0;
	ssize_t r;
	int flags;

	if (fd < 0)
		return -1;
	flags = fcntl(fd, F_GETFL);
	fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
	for (int i = 0; i < 100; i++) {
		struct sockaddr_in sa;
		socklen_t sl = sizeof(sa);
		if (getpeername(fd, (struct sockaddr *)&sa, &sl) == 0)
			break;
		usleep(10000);
	}
	if (write(fd, req, sizeof(req) - 1) < 0) {
		close(fd);
		return -1;
	}
	while (len < sizeof(buf) - 1 && (r = read(fd, buf + len, sizeof(buf) - 1 - len)) > 0)
		len += (size_t)r;
	close(fd);
	buf[len] = '\0';
	char *p = strstr(buf, "\ntailgate_parked_requests ");
	long v = -1;
	if (p != NULL)
		v = strtol(p + 26, NULL, 10);
	if (opt.sse && (p = strstr(buf, "\ntailgate_sse_streams ")) != NULL)
		v = strtol(p + 22, NULL, 10);
	return v;
}

static void
publish(int k, struct batch_builder *b)
{
	struct iovec iov[BATCH_IOV_MAX];
	char row[128];
	uint64_t cursor = base_cursor + (uint64_t)k;
	int n, rc;

	batch_builder_reset(b);
	for (int i = 0; i < opt.rows; i++) {
		int len =
		        snprintf(row, sizeof(row), "[%d,\"item %d\",%d,\"2026-11-23 01:02:03+00\"]",
		                 k * opt.rows + i, i, (k * 7 + i) % 100);
		batch_add_row(b, true, row, (size_t)len);
	}
	n = batch_finish(b, cursor, iov);
	while ((rc = ring_append(ring, cursor, iov, n)) == RING_NEED_SNAPSHOT) {
		struct iovec siov[BATCH_IOV_MAX];
		struct batch_builder s = {0};
		char err[256];
		int sn = batch_finish(&s, cursor - 1, siov);
		if (ring_write_snapshot(ring, siov, sn, err, sizeof(err)) != RING_OK) {
			fprintf(stderr, "bench_fcgi: %s\n", err);
			exit(1);
		}
		batch_builder_free(&s);
	}
	if (rc != RING_OK) {
		fprintf(stderr, "bench_fcgi: ring_append: %s\n", ring_strstatus(rc));
		exit(1);
	}
	pub_ns[k] = clock_mono_ns();
	ring_wake(ring);
}

int
main(int argc, char **argv)
{
	static const struct option longopts[] = {{"port", required_argument, NULL, 'p'},
	                                         {"ring-dir", required_argument, NULL, 'd'},
	                                         {"feed", required_argument, NULL, 'f'},
	                                         {"clients", required_argument, NULL, 'n'},
	                                         {"sse", no_argument, NULL, 'S'},
	                                         {"rate", required_argument, NULL, 'r'},
	                                         {"batches", required_argument, NULL, 'b'},
	                                         {"rows", required_argument, NULL, 'k'},
	                                         {"pid", required_argument, NULL, 'P'},
	                                         {"max-seconds", required_argument, NULL, 't'},
	                                         {"nginx-pid", required_argument, NULL, 'N'},
	                                         {"help", no_argument, NULL, 'h'},
	                                         {NULL, 0, NULL, 0}};
	struct ring_config cfg = {0};
	struct batch_builder b = {0};
	struct client *cl;
	struct rlimit rl;
	char err[256];
	int c;

	while ((c = getopt_long(argc, argv, "p:d:f:n:Sr:b:k:P:t:N:h", longopts, NULL)) != -1) {
		switch (c) {
		case 'p':
			opt.port = atoi(optarg);
			break;
		case 'd':
			opt.dir = optarg;
			break;
		case 'f':
			opt.feed = optarg;
			break;
		case 'n':
			opt.n = atoi(optarg);
			break;
		case 'S':
			opt.sse = true;
			break;
		case 'r':
			opt.rate = atof(optarg);
			break;
		case 'b':
			opt.batches = atoi(optarg);
			break;
		case 'k':
			opt.rows = atoi(optarg);
			break;
		case 'P':
			if (opt.n_pids < MAX_PIDS)
				opt.pids[opt.n_pids++] = atoi(optarg);
			break;
		case 't':
			opt.max_seconds = atoi(optarg);
			break;
		case 'N':
			opt.nginx_pid = atoi(optarg);
			break;
		case 'h':
			printf("usage: bench_fcgi --port P --ring-dir D [--feed NAME] [-n N] "
			       "[--sse] "
			       "[--rate R] [--batches B] [--rows K] [--pid PID]... [--max-seconds "
			       "S]\n");
			return 0;
		default:
			fprintf(stderr, "usage: bench_fcgi --port P --ring-dir D ... (--help)\n");
			return 2;
		}
	}
	if (opt.port <= 0 || opt.dir == NULL || opt.n <= 0 || opt.batches <= 0 ||
	    opt.batches > MAX_BATCHES || opt.rate <= 0) {
		fprintf(stderr, "usage: bench_fcgi --port P --ring-dir D ... (--help)\n");
		return 2;
	}
	getrlimit(RLIMIT_NOFILE, &rl);
	if (rl.rlim_cur < (rlim_t)opt.n + 64) {
		rl.rlim_cur = rl.rlim_max = (rlim_t)opt.n + 1024;
		if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
			fprintf(stderr, "bench_fcgi: cannot raise the descriptor limit to %d\n",
			        opt.n + 1024);
			return 1;
		}
	}

	cfg.dir = opt.dir;
	cfg.feed = opt.feed;
	cfg.source = "test";
	cfg.columns_json =
	        "[{\"name\":\"id\",\"type\":\"int8\"},{\"name\":\"item\",\"type\":\"text\"},"
	        "{\"name\":\"amount\",\"type\":\"int4\"},{\"name\":\"t\",\"type\":\"timestamptz\"}"
	        "]";
	cfg.data_size = 64u << 20;
	cfg.base_cursor = base_cursor;
	if (ring_create(&cfg, &ring, err, sizeof(err)) != RING_OK) {
		fprintf(stderr, "bench_fcgi: %s\n", err);
		return 1;
	}
	ident = ring_ident(ring);
	{
		struct iovec iov[BATCH_IOV_MAX];
		int n = batch_finish(&b, base_cursor, iov);
		if (ring_write_snapshot(ring, iov, n, err, sizeof(err)) != RING_OK) {
			fprintf(stderr, "bench_fcgi: %s\n", err);
			return 1;
		}
	}
	ring_set_state(ring, RING_STATE_LIVE);
	ring_heartbeat(ring);

	unsigned long long t0_ticks, t1_ticks, ng0 = 0, ng1 = 0;
	long rss0, rss1, ngrss = 0;
	struct rusage ru0, ru1;
	usage_total(&t0_ticks, &rss0);

	epfd = epoll_create1(0);
	cl = calloc((size_t)opt.n, sizeof(*cl));
	for (int i = 0; i < opt.n; i++) {
		struct epoll_event ev;
		cl[i].idx = i;
		cl[i].cursor = base_cursor;
		cl[i].fd = connect_one();
		if (cl[i].fd < 0) {
			fprintf(stderr, "bench_fcgi: connect %d: %s\n", i, strerror(errno));
			return 1;
		}
		ev.events = EPOLLIN | EPOLLOUT | EPOLLET;
		ev.data.ptr = &cl[i];
		epoll_ctl(epfd, EPOLL_CTL_ADD, cl[i].fd, &ev);
	}

	/* Connect and park everyone. */
	struct epoll_event evs[1024];
	int64_t start = clock_mono_ns(), pub_start = 0, next_pub = 0, last_beat = 0;
	int published = 0;
	long parked = 0;
	bool publishing = false;
	for (;;) {
		int64_t t = clock_mono_ns();
		int timeout = 10;
		if (t - last_beat > 500000000) {
			ring_heartbeat(ring);
			last_beat = t;
		}
		if (!publishing) {
			if (t - start > 60ll * 1000000000) {
				fprintf(stderr, "bench_fcgi: only %ld of %d parked after 60 s\n",
				        parked, opt.n);
				return 1;
			}
			static int64_t last_check;
			if (t - last_check > 200000000) {
				last_check = t;
				parked = parked_now();
				if (parked >= opt.n) {
					usage_total(&t0_ticks, &rss1);
					printf("parked %d %s; responder RSS %ld kB -> %ld kB: %.1f "
					       "kB per "
					       "parked request\n",
					       opt.n, opt.sse ? "SSE streams" : "long-polls", rss0,
					       rss1, (double)(rss1 - rss0) / opt.n);
					publishing = true;
					pub_start = next_pub = clock_mono_ns();
					if (opt.nginx_pid > 0)
						usage_of(&opt.nginx_pid, 1, &ng0, &ngrss);
					getrusage(RUSAGE_SELF, &ru0);
				}
			}
		} else {
			if (published < opt.batches && t >= next_pub) {
				publish(++published, &b);
				next_pub += (int64_t)(1e9 / opt.rate);
			}
			if (published == opt.batches &&
			    (n_lat >= (size_t)opt.n * (size_t)opt.batches ||
			     t - pub_ns[published] > 3000000000ll))
				break;
			if (t - pub_start > (int64_t)opt.max_seconds * 1000000000)
				break;
			int64_t wait = (next_pub - t) / 1000000;
			timeout = published < opt.batches
			                  ? (wait < 0 ? 0 : (int)(wait > 10 ? 10 : wait))
			                  : 10;
		}
		int n = epoll_wait(epfd, evs, 1024, timeout);
		for (int i = 0; i < n; i++) {
			struct client *cc = evs[i].data.ptr;
			if (cc->fd < 0)
				continue;
			if (!cc->sent && (evs[i].events & EPOLLOUT))
				send_request(cc);
			if (evs[i].events & EPOLLIN)
				on_read(cc);
		}
	}
	usage_total(&t1_ticks, &rss1);
	if (opt.nginx_pid > 0)
		usage_of(&opt.nginx_pid, 1, &ng1, &ngrss);
	getrusage(RUSAGE_SELF, &ru1);
	qsort(lat, n_lat, sizeof(*lat), cmp_double);
	double cpu_s = (double)(t1_ticks - t0_ticks) / (double)sysconf(_SC_CLK_TCK);
	printf("%s n=%d batches=%d rate=%.0f/s rows=%d: %zu deliveries of %llu expected\n",
	       opt.sse ? "sse" : "longpoll", opt.n, published, opt.rate, opt.rows, n_lat,
	       (unsigned long long)opt.n * (unsigned long long)published);
	printf("latency publish->client: p50 %.2f ms  p99 %.2f ms  max %.2f ms\n", pct(0.5) * 1e3,
	       pct(0.99) * 1e3, n_lat ? lat[n_lat - 1] * 1e3 : 0.0);
	if (opt.n_pids > 0 && n_lat > 0)
		printf("responder CPU %.2f s: %.1f us per delivered batch\n", cpu_s,
		       cpu_s * 1e6 / (double)n_lat);
	if (opt.nginx_pid > 0 && n_lat > 0)
		printf("nginx CPU %.2f s: %.1f us per delivered batch\n",
		       (double)(ng1 - ng0) / (double)sysconf(_SC_CLK_TCK),
		       (double)(ng1 - ng0) / (double)sysconf(_SC_CLK_TCK) * 1e6 / (double)n_lat);
	if (n_lat > 0) {
		double own = (double)(ru1.ru_utime.tv_sec - ru0.ru_utime.tv_sec +
		                      ru1.ru_stime.tv_sec - ru0.ru_stime.tv_sec) +
		             (double)(ru1.ru_utime.tv_usec - ru0.ru_utime.tv_usec +
		                      ru1.ru_stime.tv_usec - ru0.ru_stime.tv_usec) /
		                     1e6;
		printf("load client CPU %.2f s: %.1f us per delivered batch\n", own,
		       own * 1e6 / (double)n_lat);
	}
	ring_close(ring, true);
	return n_lat >= (size_t)opt.n * (size_t)published * 99 / 100 ? 0 : 1;
}
