/*
 * loadclient.c - the shared load client of the comparative benchmarks
 * (bench/compare, docs/BENCHMARKS.md).
 *
 * One process, one thread, one epoll loop keeping N clients of one kind on
 * one URL of a server on the loopback interface:
 *
 *   longpoll        tailgate's protocol: GET URL (snapshot), then
 *                   GET URL?cursor=C with the reply's "cursor", forever;
 *                   410 Gone takes a new snapshot (counted as a resync).
 *                   bench/seedserver.py's /api/poll speaks the same.
 *   nchan-longpoll  nchan's: GET URL, then the same with If-Modified-Since
 *                   and If-None-Match set from the previous reply's
 *                   Last-Modified and Etag; 304/408 just poll again.
 *   sse             Accept: text/event-stream; one event per "data:" block;
 *                   reconnects with Last-Event-ID.
 *   ws              RFC 6455 client: handshake, unmasked server frames
 *                   (text, binary, continuation, ping, close).
 *
 * Delivery latency: the publisher (bench/publisher.c) writes the batch's
 * scheduled publish time, CLOCK_MONOTONIC in ns, as the batch's
 * "timestamp" (tailgate's cursor is that timestamp).  Whenever a complete
 * message (long-poll body, SSE event, WebSocket frame) has arrived, every
 * "timestamp" in it newer than the newest one this client has seen, and
 * not older than the client itself, counts as one delivery with latency
 * now - t.  A compacted snapshot therefore never counts as a delivery of
 * old batches.
 *
 * Bounded: at most CLIENTS_MAX clients, at most DURATION_MAX seconds of
 * measurement, the whole run ends by alarm(2) at ramp + warm-up + duration
 * + 30 s.  Only loopback: the URL's host must be 127.x.y.z or localhost,
 * anything else is refused; source addresses are 127.0.0.1..K.
 *
 * --mark STR takes the time from the digits after the literal STR instead of
 * after a JSON key: bench/e2e's rows carry a text column "commit_ns=T".
 * --dump FILE writes every delivery of the window, "T ARRIVAL_NS" a line,
 * so that the caller can measure from another start than T (bench/e2e: the
 * moment the writer's COMMIT returned).
 *
 * Output: one line
 *   RESULT key=value ...
 * with the --label pairs first (server=, mode=, N=, rate= ...), then
 * connected clients, latency p50/p99/max (ms), deliveries and deliveries/s
 * in the window, errors, timeouts, resyncs, clients that got nothing in the
 * window, and the CPU seconds / PSS of the --pids process trees.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#define CLIENTS_MAX 20000
#define DURATION_MAX 600
#define WARMUP_MAX 60
#define RAMP_MAX 300
#define SRC_IPS_MAX 64
#define PIDS_MAX 64
#define LABELS_MAX 16
#define READ_CHUNK (256 * 1024)
#define BODY_MAX (64u << 20) /* a reply bigger than this is an error */

/* ---- time ------------------------------------------------------------- */

static uint64_t
now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ---- latency histogram: log-linear buckets of microseconds, 0.2 % ---- */

#define HIST_SUB_BITS 10
#define HIST_BUCKETS (64 << (HIST_SUB_BITS - 1))

static uint64_t hist[HIST_BUCKETS];
static uint64_t hist_count, hist_max_us;

static unsigned
hist_index(uint64_t us)
{
	unsigned msb, shift;

	if (us < (1u << HIST_SUB_BITS))
		return (unsigned)us;
	msb = 63u - (unsigned)__builtin_clzll(us);
	shift = msb - HIST_SUB_BITS + 1;
	return (shift << (HIST_SUB_BITS - 1)) + (unsigned)(us >> shift);
}

/* The middle of bucket i, in microseconds. */
static double
hist_value(unsigned i)
{
	unsigned shift;
	uint64_t lo;

	if (i < (1u << HIST_SUB_BITS))
		return i;
	shift = (i >> (HIST_SUB_BITS - 1)) - 1;
	lo = (uint64_t)(i - (shift << (HIST_SUB_BITS - 1))) << shift;
	return (double)lo + (double)((1ull << shift) - 1) / 2.0;
}

static void
hist_add(uint64_t us)
{
	hist[hist_index(us)]++;
	hist_count++;
	if (us > hist_max_us)
		hist_max_us = us;
}

static double
hist_quantile_ms(double q)
{
	uint64_t want, seen = 0;

	if (hist_count == 0)
		return 0;
	want = (uint64_t)(q * (double)hist_count);
	if (want >= hist_count)
		want = hist_count - 1;
	for (unsigned i = 0; i < HIST_BUCKETS; i++) {
		seen += hist[i];
		if (seen > want) /* a bucket's middle may lie above the true max */
			return (hist_value(i) < (double)hist_max_us ? hist_value(i)
			                                            : (double)hist_max_us) /
			       1000.0;
	}
	return (double)hist_max_us / 1000.0;
}

/* ---- options -------------------------------------------------------------- */

enum mode { M_LONGPOLL, M_NCHAN_LONGPOLL, M_SSE, M_WS };

static const char *const mode_names[] = {"longpoll", "nchan-longpoll", "sse", "ws"};

static struct {
	enum mode mode;
	int clients;
	double duration, warmup, ramp_timeout, stall_timeout;
	int concurrency;
	int src_ips;
	char host[64];
	struct sockaddr_in dst;
	char path[1024];  /* path without query */
	char query[1024]; /* query without '?', may be empty */
	char key[64];     /* "\"timestamp\"" */
	pid_t pids[PIDS_MAX];
	int npids;
	const char *labels[LABELS_MAX];
	int nlabels;
	bool verbose;
	bool gzip;        /* send Accept-Encoding as browsers do */
	const char *dump; /* --dump FILE: every delivery, "T ARRIVAL" */
} opt = {
        .mode = M_LONGPOLL,
        .clients = 100,
        .duration = 10,
        .warmup = 1,
        .ramp_timeout = 60,
        .stall_timeout = 40,
        .concurrency = 256,
        .src_ips = 0,
        .key = "\"timestamp\"",
};

static void
usage(FILE *f)
{
	fprintf(f,
	        "usage: loadclient --url http://127.0.0.1:PORT/PATH --mode MODE -n N [options]\n"
	        "\n"
	        "Keeps N clients of one kind on one loopback URL and measures delivery\n"
	        "latency (publish time carried in each batch's \"timestamp\", CLOCK_MONOTONIC "
	        "ns).\n"
	        "\n"
	        "  --url URL              http://HOST:PORT/PATH[?QUERY]; HOST must be 127.x.y.z\n"
	        "                         or localhost (anything else is refused)\n"
	        "  --mode MODE            longpoll (tailgate's ?cursor= protocol), nchan-longpoll\n"
	        "                         (If-Modified-Since/If-None-Match), sse, ws\n"
	        "  -n, --clients N        clients, 1..%d (default 100)\n"
	        "  -d, --duration S       measurement window in seconds, <= %d (default 10)\n"
	        "  -w, --warmup S         after every client is subscribed (default 1)\n"
	        "  --ramp-timeout S       give up waiting for all clients after S (default 60)\n"
	        "  --concurrency K        connections being opened at once (default 256)\n"
	        "  --src-ips K            bind to source addresses 127.0.0.1..127.0.0.K\n"
	        "                         (default: one per 4000 clients)\n"
	        "  --stall-timeout S      reconnect a client silent for S seconds (default 40)\n"
	        "  --key NAME             JSON key carrying the publish time (default timestamp)\n"
	        "  --mark STR             the publish time follows the literal STR instead\n"
	        "  --dump FILE            write every delivery in the window to FILE,\n"
	        "                         \"PUBLISH_T ARRIVAL_NS\" a line\n"
	        "  --pids P[,P...]        report CPU seconds and PSS of these processes and\n"
	        "                         their descendants over the window\n"
	        "  --label K=V            put K=V in the RESULT line (repeatable)\n"
	        "  --gzip                 send \"Accept-Encoding: gzip, deflate, br\" as browsers\n"
	        "                         do and inflate gzip/deflate replies and streams\n"
	        "  -v, --verbose          progress on stderr\n"
	        "  -h, --help             this text\n"
	        "\n"
	        "Prints one line: RESULT <labels> connected= p50_ms= p99_ms= max_ms= delivered=\n"
	        "delivered_per_s= errors= timeouts= resyncs= silent= cpu_s= cpu_per_1k= pss_mb=\n"
	        "client_cpu_s= machine_cpu_s= other_cpu_s= wire_bytes= wire_per_delivery=\n"
	        "body_bytes= coded= gzip= pss_by= cpu_by= (CPU seconds in the window: this\n"
	        "client, the whole machine, and what neither it nor the --pids used: noise;\n"
	        "pss_by: the PSS in MB by process name, e.g. nginx:33.1,tailgate-fcgi:2.3;\n"
	        "cpu_by: the window's CPU seconds by process name, e.g. nginx:0.750)\n",
	        CLIENTS_MAX, DURATION_MAX);
}

static void
die(const char *what)
{
	fprintf(stderr, "loadclient: %s\n", what);
	exit(2);
}

/* Only loopback: "localhost" or a dotted quad in 127.0.0.0/8. */
static void
parse_url(const char *url)
{
	const char *p, *hend, *colon, *slash;
	char port[8];
	size_t n;
	long portn;

	if (strncmp(url, "http://", 7) != 0)
		die("--url must start with http:// (ws mode uses http:// too)");
	p = url + 7;
	slash = strchr(p, '/');
	hend = slash ? slash : p + strlen(p);
	colon = memchr(p, ':', (size_t)(hend - p));
	if (colon == NULL)
		die("--url needs an explicit port");
	n = (size_t)(colon - p);
	if (n == 0 || n >= sizeof(opt.host))
		die("--url: bad host");
	memcpy(opt.host, p, n);
	opt.host[n] = '\0';
	n = (size_t)(hend - colon - 1);
	if (n == 0 || n >= sizeof(port))
		die("--url: bad port");
	memcpy(port, colon + 1, n);
	port[n] = '\0';
	portn = strtol(port, NULL, 10);
	if (portn <= 0 || portn > 65535)
		die("--url: bad port");

	memset(&opt.dst, 0, sizeof(opt.dst));
	opt.dst.sin_family = AF_INET;
	opt.dst.sin_port = htons((uint16_t)portn);
	if (strcmp(opt.host, "localhost") == 0)
		opt.dst.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	else if (inet_pton(AF_INET, opt.host, &opt.dst.sin_addr) != 1)
		die("--url: host must be a 127.x.y.z address or localhost");
	if ((ntohl(opt.dst.sin_addr.s_addr) >> 24) != 127)
		die("refusing a non-loopback target: only 127.0.0.0/8 and localhost are allowed");

	if (slash == NULL) {
		strcpy(opt.path, "/");
		opt.query[0] = '\0';
		return;
	}
	p = strchr(slash, '?');
	n = p ? (size_t)(p - slash) : strlen(slash);
	if (n >= sizeof(opt.path) || (p && strlen(p + 1) >= sizeof(opt.query)))
		die("--url too long");
	memcpy(opt.path, slash, n);
	opt.path[n] = '\0';
	if (p)
		strcpy(opt.query, p + 1);
	else
		opt.query[0] = '\0';
	for (const char *c = url; *c; c++)
		if ((unsigned char)*c <= ' ' || *c == 0x7f)
			die("--url: no spaces or control characters");
}

static double
parse_seconds(const char *s, double max, const char *name)
{
	char *end;
	double v = strtod(s, &end);
	char msg[128];

	if (*s == '\0' || *end != '\0' || !(v >= 0) || v > max) {
		snprintf(msg, sizeof(msg), "%s must be a number of seconds in 0..%g", name, max);
		die(msg);
	}
	return v;
}

static long
parse_int(const char *s, long lo, long hi, const char *name)
{
	char *end;
	long v = strtol(s, &end, 10);
	char msg[128];

	if (*s == '\0' || *end != '\0' || v < lo || v > hi) {
		snprintf(msg, sizeof(msg), "%s must be an integer in %ld..%ld", name, lo, hi);
		die(msg);
	}
	return v;
}

/* ---- /proc accounting ------------------------------------------------------ */

static long clk_tck;

/* utime+stime of one process in ticks, its parent in *ppid; -1 if gone. */
static long long
proc_ticks(pid_t pid, pid_t *ppid)
{
	char path[64], buf[1024];
	FILE *f;
	char *p;
	long long ut = 0, st = 0;
	int pp = 0;
	size_t n;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	f = fopen(path, "r");
	if (f == NULL)
		return -1;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	p = strrchr(buf, ')');
	if (p == NULL)
		return -1;
	/* after ") ": state ppid pgrp session tty tpgid flags minflt cminflt
	 * majflt cmajflt utime stime */
	if (sscanf(p + 2, "%*c %d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lld %lld", &pp, &ut, &st) !=
	    3)
		return -1;
	if (ppid)
		*ppid = pp;
	return ut + st;
}

static long
proc_pss_kb(pid_t pid)
{
	char path[64], line[256];
	FILE *f;
	long kb = 0;

	snprintf(path, sizeof(path), "/proc/%d/smaps_rollup", (int)pid);
	f = fopen(path, "r");
	if (f == NULL)
		return 0;
	while (fgets(line, sizeof(line), f))
		if (strncmp(line, "Pss:", 4) == 0) {
			kb = strtol(line + 4, NULL, 10);
			break;
		}
	fclose(f);
	return kb;
}

#define TREE_MAX 4096
struct tree {
	pid_t pid[TREE_MAX];
	long long ticks[TREE_MAX];
	int n;
};

static bool
is_root(pid_t p)
{
	for (int i = 0; i < opt.npids; i++)
		if (opt.pids[i] == p)
			return true;
	return false;
}

/* Every process that is one of opt.pids or descends from one. */
static void
tree_sample(struct tree *t)
{
	static pid_t allpid[65536], allpp[65536];
	static long long allticks[65536];
	int nall = 0;
	DIR *d;
	struct dirent *de;
	bool changed = true;
	bool in[65536];

	t->n = 0;
	if (opt.npids == 0)
		return;
	d = opendir("/proc");
	if (d == NULL)
		return;
	while ((de = readdir(d)) != NULL && nall < 65536) {
		pid_t pid, pp = 0;
		long long tk;

		if (!isdigit((unsigned char)de->d_name[0]))
			continue;
		pid = (pid_t)atoi(de->d_name);
		tk = proc_ticks(pid, &pp);
		if (tk < 0)
			continue;
		allpid[nall] = pid;
		allpp[nall] = pp;
		allticks[nall] = tk;
		nall++;
	}
	closedir(d);
	for (int i = 0; i < nall; i++)
		in[i] = is_root(allpid[i]);
	while (changed) { /* close over parent links; trees are shallow */
		changed = false;
		for (int i = 0; i < nall; i++) {
			if (in[i])
				continue;
			for (int j = 0; j < nall; j++)
				if (in[j] && allpid[j] == allpp[i]) {
					in[i] = changed = true;
					break;
				}
		}
	}
	for (int i = 0; i < nall && t->n < TREE_MAX; i++)
		if (in[i]) {
			t->pid[t->n] = allpid[i];
			t->ticks[t->n] = allticks[i];
			t->n++;
		}
}

/* CPU seconds the tree used between a and b (a process new in b counts
 * whole). */
static double
tree_cpu(const struct tree *a, const struct tree *b)
{
	long long sum = 0;

	for (int i = 0; i < b->n; i++) {
		long long before = 0;
		for (int j = 0; j < a->n; j++)
			if (a->pid[j] == b->pid[i]) {
				before = a->ticks[j];
				break;
			}
		sum += b->ticks[i] - before;
	}
	return (double)sum / (double)clk_tck;
}

static double
tree_pss_mb(const struct tree *t)
{
	long kb = 0;

	for (int i = 0; i < t->n; i++)
		kb += proc_pss_kb(t->pid[i]);
	return (double)kb / 1024.0;
}

/* The slot of pid's process name (/proc/PID/comm) in names[0..*n), added
 * when new; -1 when all 16 slots hold other names. */
static int
name_slot(pid_t pid, char names[16][32], int *n)
{
	char path[64], comm[32] = "?";
	FILE *f;
	int k;

	snprintf(path, sizeof(path), "/proc/%d/comm", (int)pid);
	if ((f = fopen(path, "r")) != NULL) {
		if (fgets(comm, sizeof(comm), f) != NULL)
			comm[strcspn(comm, "\n ,:")] = '\0';
		fclose(f);
	}
	for (k = 0; k < *n && strcmp(names[k], comm) != 0; k++)
		;
	if (k == *n) {
		if (*n == 16)
			return -1;
		snprintf(names[(*n)++], sizeof(names[0]), "%s", comm);
	}
	return k;
}

/* CPU seconds between a and b by process name (/proc/PID/comm) into out:
 * "nginx:0.750,floor_fcgi:0.210", so that CPU per delivery can be split
 * between nginx and the server behind it (bench/compare's floor lines). */
static void
tree_cpu_by(const struct tree *a, const struct tree *b, char *out, size_t cap)
{
	char names[16][32];
	long long ticks[16] = {0};
	int n = 0;
	size_t len = 0;

	for (int i = 0; i < b->n; i++) {
		long long before = 0;
		int k = name_slot(b->pid[i], names, &n);

		if (k < 0)
			continue;
		for (int j = 0; j < a->n; j++)
			if (a->pid[j] == b->pid[i]) {
				before = a->ticks[j];
				break;
			}
		ticks[k] += b->ticks[i] - before;
	}
	out[0] = '\0';
	for (int k = 0; k < n && len < cap; k++)
		len += (size_t)snprintf(out + len, cap - len, "%s%s:%.3f", k ? "," : "", names[k],
		                        (double)ticks[k] / (double)clk_tck);
	if (n == 0)
		snprintf(out, cap, "-");
}

/* PSS by process name (/proc/PID/comm) into out: "nginx:33.1,tailgate-fcgi:2.3"
 * (MB), so that a figure can be split between nginx and the server behind it. */
static void
tree_pss_by(const struct tree *t, char *out, size_t cap)
{
	char names[16][32];
	long kb[16] = {0};
	int n = 0;
	size_t len = 0;

	for (int i = 0; i < t->n; i++) {
		int k = name_slot(t->pid[i], names, &n);

		if (k < 0)
			continue;
		kb[k] += proc_pss_kb(t->pid[i]);
	}
	out[0] = '\0';
	for (int k = 0; k < n && len < cap; k++)
		len += (size_t)snprintf(out + len, cap - len, "%s%s:%.1f", k ? "," : "", names[k],
		                        (double)kb[k] / 1024.0);
	if (n == 0)
		snprintf(out, cap, "-");
}

/* Busy CPU seconds of the whole machine (all CPUs) since boot. */
static double
machine_busy_s(void)
{
	unsigned long long v[10] = {0};
	FILE *f = fopen("/proc/stat", "r");
	unsigned long long busy;

	if (f == NULL)
		return 0;
	if (fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2],
	           &v[3], &v[4], &v[5], &v[6], &v[7], &v[8], &v[9]) < 8) {
		fclose(f);
		return 0;
	}
	fclose(f);
	/* user nice system idle iowait irq softirq steal (guest is in user) */
	busy = v[0] + v[1] + v[2] + v[5] + v[6] + v[7];
	return (double)busy / (double)clk_tck;
}

static double
self_cpu_s(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
	       (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

/* ---- connections ----------------------------------------------------------- */

enum cstate {
	C_IDLE,       /* not connected; (re)connect at retry_at */
	C_CONNECTING, /* non-blocking connect in progress */
	C_OPEN,       /* request written or being written; reading */
};

enum rstate {
	R_HEAD,        /* reading the status line and headers */
	R_BODY_LEN,    /* Content-Length body */
	R_BODY_EOF,    /* body until the server closes */
	R_CHUNK_SIZE,  /* chunked: size line */
	R_CHUNK_DATA,  /* chunked: data */
	R_CHUNK_CRLF,  /* chunked: CRLF after data */
	R_CHUNK_TRAIL, /* chunked: trailer lines up to the empty one */
	R_WS,          /* WebSocket frames */
};

struct buf {
	char *p;
	size_t len, cap;
};

static void
buf_reserve(struct buf *b, size_t more)
{
	size_t cap;

	if (b->len + more <= b->cap)
		return;
	cap = b->cap ? b->cap : 512;
	while (cap < b->len + more)
		cap *= 2;
	b->p = realloc(b->p, cap);
	if (b->p == NULL)
		die("out of memory");
	b->cap = cap;
}

static void
buf_add(struct buf *b, const void *p, size_t n)
{
	buf_reserve(b, n + 1);
	memcpy(b->p + b->len, p, n);
	b->len += n;
	b->p[b->len] = '\0';
}

/* Give back big buffers once drained (a 12 kB snapshot per client adds up). */
static void
buf_trim(struct buf *b)
{
	if (b->len == 0 && b->cap > 16384) {
		free(b->p);
		b->p = NULL;
		b->cap = 0;
	}
}

struct conn {
	int fd;
	int idx;
	enum cstate state;
	enum rstate rs;
	bool subscribed;    /* counted once, in n_subscribed */
	bool first_msg;     /* no message yet on this connection */
	bool keepalive;     /* the current reply allows another request */
	bool want_out;      /* EPOLLOUT registered */
	int status;         /* HTTP status of the current reply */
	uint64_t body_left; /* R_BODY_LEN / R_CHUNK_DATA */
	uint64_t start_ns;  /* when this client first connected */
	uint64_t last_t;    /* newest publish time counted */
	uint64_t activity;  /* last byte received (or connect) */
	uint64_t retry_at;  /* C_IDLE: reconnect time */
	uint64_t window_deliveries;
	int backoff_ms;
	struct buf in;   /* raw bytes not yet parsed */
	struct buf body; /* long-poll body / SSE line data / WS payload */
	struct buf out;  /* request bytes not yet written */
	struct buf ev;   /* SSE: data of the event being read */
	char cursor[32];
	char etag[128];
	char lastmod[64];
	char event_id[64];
	z_stream *z; /* Content-Encoding gzip/deflate: the inflater, else NULL */
};

static struct conn *conns;
static int epfd;
static int n_subscribed, n_open;
static bool measuring;
static uint64_t window_start, window_end;
static uint64_t deliveries, errors, timeouts, resyncs, empties;
/* in the window: bytes read from sockets (heads, chunk framing, coded
 * bodies: what crossed the wire), decoded body bytes, and replies that
 * came Content-Encoded (SSE: streams opened coded, window or not) */
static uint64_t wire_bytes, body_bytes, coded;
static struct sockaddr_in src_addr[SRC_IPS_MAX];
static volatile sig_atomic_t stop_flag;

static void conn_close(struct conn *c, bool error);
static void conn_request(struct conn *c);

static void
on_signal(int sig)
{
	(void)sig;
	stop_flag = 1;
}

static void
ep_set(struct conn *c, bool out)
{
	struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP | (out ? EPOLLOUT : 0),
	                         .data.u32 = (uint32_t)c->idx};

	if (out == c->want_out)
		return;
	c->want_out = out;
	if (epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev) != 0)
		die("epoll_ctl MOD failed");
}

/* --dump: the window's deliveries (publish time, arrival), kept in memory
 * and written when the run ends. */
static uint64_t (*dump_buf)[2];
static size_t dump_len, dump_cap;

static void
dump_add(uint64_t t, uint64_t now)
{
	if (opt.dump == NULL)
		return;
	if (dump_len == dump_cap) {
		size_t cap = dump_cap ? dump_cap * 2 : 65536;
		void *p = realloc(dump_buf, cap * sizeof(*dump_buf));
		if (p == NULL)
			die("out of memory for --dump");
		dump_buf = p;
		dump_cap = cap;
	}
	dump_buf[dump_len][0] = t;
	dump_buf[dump_len][1] = now;
	dump_len++;
}

static void
dump_write(void)
{
	FILE *f;

	if (opt.dump == NULL)
		return;
	f = fopen(opt.dump, "w");
	if (f == NULL) {
		fprintf(stderr, "loadclient: cannot write --dump %s: %s\n", opt.dump,
		        strerror(errno));
		return;
	}
	for (size_t i = 0; i < dump_len; i++)
		fprintf(f, "%" PRIu64 " %" PRIu64 "\n", dump_buf[i][0], dump_buf[i][1]);
	if (fclose(f) != 0)
		fprintf(stderr, "loadclient: writing --dump %s failed: %s\n", opt.dump,
		        strerror(errno));
}

/* Count every publish time in a complete message. */
static void
scan_message(struct conn *c, const char *p, size_t n)
{
	size_t klen = strlen(opt.key);
	const char *end = p + n;
	uint64_t now = 0;

	while (p < end) {
		const char *k = memmem(p, (size_t)(end - p), opt.key, klen);
		uint64_t t = 0;
		int digits = 0;

		if (k == NULL)
			break;
		p = k + klen;
		while (p < end && (*p == ' ' || *p == ':' || *p == '"'))
			p++;
		while (p < end && *p >= '0' && *p <= '9' && digits < 20) {
			t = t * 10 + (uint64_t)(*p - '0');
			p++;
			digits++;
		}
		if (digits == 0 || t <= c->last_t)
			continue;
		c->last_t = t;
		/* The state a client is first handed (tailgate's snapshot, the
		 * seed's compacted batch) carries the newest timestamp at that
		 * moment: not a delivery.  Later messages always count, even
		 * with a time from before the client connected (a publisher
		 * held up by the server). */
		if (c->first_msg && t < c->start_ns)
			continue;
		if (now == 0)
			now = now_ns();
		if (measuring && now >= window_start && now <= window_end) {
			hist_add(now > t ? (now - t) / 1000 : 0);
			dump_add(t, now);
			deliveries++;
			c->window_deliveries++;
		}
	}
	c->first_msg = false;
}

/* tailgate's reply cursor, opaque ("123.5c1e09a2"; "cursor":123 from an
 * older server): copied as it is, to be sent back. */
static bool
find_cursor(const char *p, size_t n, char *out, size_t outlen)
{
	const char *k = memmem(p, n, "\"cursor\"", 8), *end = p + n;
	size_t len = 0;

	if (k == NULL)
		return false;
	k += 8;
	while (k < end && (*k == ' ' || *k == ':' || *k == '"'))
		k++;
	while (k < end &&
	       ((*k >= '0' && *k <= '9') || (*k >= 'a' && *k <= 'f') || (*k >= 'A' && *k <= 'F') ||
	        *k == '.') &&
	       len + 1 < outlen)
		out[len++] = *k++;
	out[len] = '\0';
	return len > 0;
}

static void
mark_subscribed(struct conn *c)
{
	if (!c->subscribed) {
		c->subscribed = true;
		n_subscribed++;
	}
}

/* A whole long-poll reply is in c->body. */
static void
longpoll_done(struct conn *c)
{
	if (opt.mode == M_LONGPOLL) {
		if (c->status == 200) {
			uint64_t before = deliveries;
			scan_message(c, c->body.p, c->body.len);
			if (!find_cursor(c->body.p, c->body.len, c->cursor, sizeof(c->cursor))) {
				errors++;
				c->cursor[0] = '\0';
			} else if (c->subscribed && deliveries == before) {
				/* no new batch: the long-poll timeout, or a
				 * reply for batches counted already */
				if (memmem(c->body.p, c->body.len, opt.key, strlen(opt.key)) ==
				    NULL)
					empties++;
			}
			mark_subscribed(c);
			c->backoff_ms = 0;
		} else if (c->status == 410) {
			resyncs++;
			c->cursor[0] = '\0';
		} else {
			errors++;
			c->keepalive = false; /* back off through a reconnect */
		}
	} else { /* M_NCHAN_LONGPOLL */
		if (c->status == 200) {
			scan_message(c, c->body.p, c->body.len);
			c->backoff_ms = 0;
		} else if (c->status == 304 || c->status == 408) {
			empties++;
		} else {
			errors++;
			c->keepalive = false;
		}
	}
	c->body.len = 0;
	buf_trim(&c->body);
	if (c->keepalive)
		conn_request(c);
	else
		conn_close(c, c->status != 200 && c->status != 304 && c->status != 408 &&
		                      c->status != 410);
}

/* SSE: decoded body bytes; events end at an empty line. */
static void
sse_feed(struct conn *c, const char *p, size_t n)
{
	buf_add(&c->body, p, n);
	for (;;) {
		char *nl = memchr(c->body.p, '\n', c->body.len);
		size_t linelen, used;
		char *line = c->body.p;

		if (nl == NULL)
			break;
		used = (size_t)(nl - line) + 1;
		linelen = (size_t)(nl - line);
		if (linelen > 0 && line[linelen - 1] == '\r')
			linelen--;
		if (linelen == 0) {
			if (c->ev.len > 0) {
				scan_message(c, c->ev.p, c->ev.len);
				c->ev.len = 0;
				buf_trim(&c->ev);
			}
		} else if (linelen >= 5 && memcmp(line, "data:", 5) == 0) {
			size_t off = (linelen > 5 && line[5] == ' ') ? 6 : 5;
			if (c->ev.len > 0)
				buf_add(&c->ev, "\n", 1);
			buf_add(&c->ev, line + off, linelen - off);
		} else if (linelen >= 3 && memcmp(line, "id:", 3) == 0) {
			size_t off = (linelen > 3 && line[3] == ' ') ? 4 : 3;
			size_t idl = linelen - off;
			if (idl < sizeof(c->event_id)) {
				memcpy(c->event_id, line + off, idl);
				c->event_id[idl] = '\0';
			}
		}
		memmove(c->body.p, c->body.p + used, c->body.len - used);
		c->body.len -= used;
	}
}

static void body_plain(struct conn *c, const char *p, size_t n);

static bool
in_window(void)
{
	uint64_t now;

	if (!measuring)
		return false;
	now = now_ns();
	return now >= window_start && now <= window_end;
}

/* A Content-Encoded body: inflate what came and pass it on. */
static void
body_data(struct conn *c, const char *p, size_t n)
{
	static unsigned char zout[READ_CHUNK];

	if (c->z == NULL) {
		body_plain(c, p, n);
		return;
	}
	c->z->next_in = (unsigned char *)(uintptr_t)p;
	c->z->avail_in = (uInt)n;
	do {
		int rc;
		c->z->next_out = zout;
		c->z->avail_out = sizeof(zout);
		rc = inflate(c->z, Z_SYNC_FLUSH);
		if (rc != Z_OK && rc != Z_STREAM_END && rc != Z_BUF_ERROR) {
			errors++;
			conn_close(c, true);
			return;
		}
		if (sizeof(zout) - c->z->avail_out > 0) {
			body_plain(c, (const char *)zout, sizeof(zout) - c->z->avail_out);
			if (c->state != C_OPEN || c->z == NULL)
				return;
		}
		if (rc == Z_STREAM_END || (rc == Z_BUF_ERROR && c->z->avail_in == 0))
			break;
	} while (c->z->avail_in > 0 || c->z->avail_out == 0);
}

static void
z_end(struct conn *c)
{
	if (c->z != NULL) {
		inflateEnd(c->z);
		free(c->z);
		c->z = NULL;
	}
}

static void
body_plain(struct conn *c, const char *p, size_t n)
{
	if (in_window())
		body_bytes += n;
	if (opt.mode == M_SSE && c->status == 200) {
		sse_feed(c, p, n);
		return;
	}
	if (c->body.len + n > BODY_MAX) {
		errors++;
		conn_close(c, true);
		return;
	}
	buf_add(&c->body, p, n);
}

static bool
header_is(const char *line, size_t len, const char *name, const char **val, size_t *vlen)
{
	size_t nl = strlen(name);

	if (len <= nl || line[nl] != ':' || strncasecmp(line, name, nl) != 0)
		return false;
	line += nl + 1;
	len -= nl + 1;
	while (len > 0 && (*line == ' ' || *line == '\t')) {
		line++;
		len--;
	}
	while (len > 0 && (line[len - 1] == ' ' || line[len - 1] == '\r'))
		len--;
	*val = line;
	*vlen = len;
	return true;
}

static void
copy_hdr(char *dst, size_t cap, const char *v, size_t n)
{
	if (n >= cap)
		n = cap - 1;
	memcpy(dst, v, n);
	dst[n] = '\0';
}

/* Parse the head in [p, p+n) (ends with CRLFCRLF); sets c->rs. Returns false
 * when the connection was closed. */
static bool
parse_head(struct conn *c, const char *p, size_t n)
{
	const char *end = p + n, *line = p;
	bool chunked = false, have_len = false, close_hdr = false, http10 = false;
	int zenc = 0; /* 1 gzip/deflate, -1 one we cannot decode */
	uint64_t clen = 0;

	if (n < 12 || memcmp(p, "HTTP/1.", 7) != 0) {
		errors++;
		conn_close(c, true);
		return false;
	}
	http10 = p[7] == '0';
	c->status = atoi(p + 9);
	while (line < end) {
		const char *eol = memchr(line, '\n', (size_t)(end - line));
		const char *v;
		size_t vl, len;

		if (eol == NULL)
			break;
		len = (size_t)(eol - line);
		if (header_is(line, len, "Content-Length", &v, &vl)) {
			clen = strtoull(v, NULL, 10);
			have_len = true;
		} else if (header_is(line, len, "Transfer-Encoding", &v, &vl)) {
			chunked = vl >= 7 && memmem(v, vl, "chunked", 7) != NULL;
		} else if (header_is(line, len, "Connection", &v, &vl)) {
			close_hdr = vl >= 5 && strncasecmp(v, "close", 5) == 0;
		} else if (header_is(line, len, "Etag", &v, &vl)) {
			copy_hdr(c->etag, sizeof(c->etag), v, vl);
		} else if (header_is(line, len, "Last-Modified", &v, &vl)) {
			copy_hdr(c->lastmod, sizeof(c->lastmod), v, vl);
		} else if (header_is(line, len, "Content-Encoding", &v, &vl)) {
			if ((vl == 4 && strncasecmp(v, "gzip", 4) == 0) ||
			    (vl == 7 && strncasecmp(v, "deflate", 7) == 0))
				zenc = 1;
			else if (!(vl == 8 && strncasecmp(v, "identity", 8) == 0))
				zenc = -1;
		}
		line = eol + 1;
	}
	c->keepalive = !close_hdr && !http10;
	c->body.len = 0;
	z_end(c);
	if (zenc < 0 || (zenc > 0 && !opt.gzip)) { /* br, or coded unasked */
		errors++;
		conn_close(c, true);
		return false;
	}
	if (zenc > 0) {
		c->z = calloc(1, sizeof(*c->z));
		/* 15 + 32: a gzip or zlib header, detected */
		if (c->z == NULL || inflateInit2(c->z, 15 + 32) != Z_OK)
			die("inflateInit2 failed");
		if (in_window() || opt.mode == M_SSE) /* a stream: counted once */
			coded++;
	}

	if (opt.mode == M_WS) {
		if (c->status != 101) {
			errors++;
			conn_close(c, true);
			return false;
		}
		mark_subscribed(c);
		c->rs = R_WS;
		return true;
	}
	if (opt.mode == M_SSE) {
		if (c->status != 200) {
			errors++;
			conn_close(c, true);
			return false;
		}
		mark_subscribed(c);
		c->backoff_ms = 0;
	}
	if (chunked)
		c->rs = R_CHUNK_SIZE;
	else if (have_len) {
		c->rs = R_BODY_LEN;
		c->body_left = clen;
	} else if (c->status == 304 || c->status == 204 || c->status / 100 == 1) {
		c->rs = R_BODY_LEN;
		c->body_left = 0;
	} else {
		c->rs = R_BODY_EOF;
		c->keepalive = false;
	}
	return true;
}

static void
message_done(struct conn *c)
{
	c->rs = R_HEAD;
	z_end(c);
	if (opt.mode == M_SSE) {
		/* the stream ended: reconnect (with Last-Event-ID) */
		conn_close(c, false);
		return;
	}
	longpoll_done(c);
}

static void
ws_send_pong(struct conn *c, const char *payload, size_t n)
{
	unsigned char hdr[6 + 125];
	ssize_t w;

	if (n > 125)
		n = 125;
	hdr[0] = 0x8a;
	hdr[1] = (unsigned char)(0x80 | n);
	memset(hdr + 2, 0, 4); /* zero mask: payload unchanged */
	memcpy(hdr + 6, payload, n);
	w = write(c->fd, hdr, 6 + n);
	(void)w;
}

/* Parse WebSocket frames; returns bytes consumed, or -1 if closed. */
static ssize_t
parse_ws(struct conn *c, const char *p, size_t n)
{
	size_t used = 0;

	while (n - used >= 2) {
		const unsigned char *h = (const unsigned char *)p + used;
		size_t hl = 2, avail = n - used;
		uint64_t len = h[1] & 0x7f;
		bool masked = h[1] & 0x80;
		int op = h[0] & 0x0f;
		const char *payload;

		if (len == 126) {
			if (avail < 4)
				break;
			len = ((uint64_t)h[2] << 8) | h[3];
			hl = 4;
		} else if (len == 127) {
			if (avail < 10)
				break;
			len = 0;
			for (int i = 0; i < 8; i++)
				len = (len << 8) | h[2 + i];
			hl = 10;
		}
		if (masked)
			hl += 4;
		if (len > BODY_MAX) {
			errors++;
			conn_close(c, true);
			return -1;
		}
		if (avail < hl || avail - hl < len)
			break;
		payload = p + used + hl;
		if (masked) { /* servers must not mask; unmask anyway */
			unsigned char *q = (unsigned char *)(uintptr_t)payload;
			const unsigned char *m = h + hl - 4;
			for (uint64_t i = 0; i < len; i++)
				q[i] ^= m[i & 3];
		}
		used += hl + len;
		switch (op) {
		case 0x0: /* continuation */
		case 0x1: /* text */
		case 0x2: /* binary */
			scan_message(c, payload, len);
			break;
		case 0x8: /* close */
			conn_close(c, false);
			return -1;
		case 0x9: /* ping */
			ws_send_pong(c, payload, len);
			break;
		default:
			break;
		}
	}
	return (ssize_t)used;
}

/* Parse what we can of [p, p+n); returns bytes consumed, or -1 when the
 * connection was closed (c may have been reset). */
static ssize_t
parse(struct conn *c, const char *p, size_t n)
{
	size_t used = 0;

	while (used < n || c->rs == R_BODY_LEN) {
		const char *q = p + used;
		size_t avail = n - used;

		switch (c->rs) {
		case R_HEAD: {
			const char *e = memmem(q, avail, "\r\n\r\n", 4);
			if (e == NULL) {
				if (avail > 65536) {
					errors++;
					conn_close(c, true);
					return -1;
				}
				return (ssize_t)used;
			}
			if (!parse_head(c, q, (size_t)(e - q) + 4))
				return -1;
			used += (size_t)(e - q) + 4;
			break;
		}
		case R_BODY_LEN: {
			size_t take = avail < c->body_left ? avail : (size_t)c->body_left;
			if (take > 0) {
				body_data(c, q, take);
				if (c->state != C_OPEN)
					return -1;
			}
			used += take;
			c->body_left -= take;
			if (c->body_left > 0)
				return (ssize_t)used;
			message_done(c);
			if (c->state != C_OPEN)
				return -1;
			break;
		}
		case R_BODY_EOF:
			body_data(c, q, avail);
			if (c->state != C_OPEN)
				return -1;
			used += avail;
			break;
		case R_CHUNK_SIZE: {
			const char *e = memmem(q, avail, "\r\n", 2);
			if (e == NULL)
				return (ssize_t)used;
			c->body_left = strtoull(q, NULL, 16);
			used += (size_t)(e - q) + 2;
			c->rs = c->body_left ? R_CHUNK_DATA : R_CHUNK_TRAIL;
			break;
		}
		case R_CHUNK_DATA: {
			size_t take = avail < c->body_left ? avail : (size_t)c->body_left;
			body_data(c, q, take);
			if (c->state != C_OPEN)
				return -1;
			used += take;
			c->body_left -= take;
			if (c->body_left == 0)
				c->rs = R_CHUNK_CRLF;
			break;
		}
		case R_CHUNK_CRLF:
			if (avail < 2)
				return (ssize_t)used;
			used += 2;
			c->rs = R_CHUNK_SIZE;
			break;
		case R_CHUNK_TRAIL: {
			const char *e = memmem(q, avail, "\r\n", 2);
			if (e == NULL)
				return (ssize_t)used;
			used += (size_t)(e - q) + 2;
			if (e == q) {
				message_done(c);
				if (c->state != C_OPEN)
					return -1;
			}
			break;
		}
		case R_WS: {
			ssize_t k = parse_ws(c, q, avail);
			if (k < 0)
				return -1;
			used += (size_t)k;
			return (ssize_t)used;
		}
		}
	}
	return (ssize_t)used;
}

static void
conn_flush(struct conn *c)
{
	while (c->out.len > 0) {
		ssize_t w = write(c->fd, c->out.p, c->out.len);
		if (w < 0) {
			if (errno == EAGAIN || errno == EINTR) {
				ep_set(c, true);
				return;
			}
			errors++;
			conn_close(c, true);
			return;
		}
		memmove(c->out.p, c->out.p + w, c->out.len - (size_t)w);
		c->out.len -= (size_t)w;
	}
	ep_set(c, false);
}

/* Queue and send the next request of this client. */
static void
conn_request(struct conn *c)
{
	char req[2048];
	int n = 0;
	const char *q = opt.query;

	c->rs = R_HEAD;
	c->body.len = 0;
	switch (opt.mode) {
	case M_LONGPOLL:
		if (c->cursor[0])
			n = snprintf(req, sizeof(req), "GET %s?%s%scursor=%s HTTP/1.1\r\n",
			             opt.path, q, *q ? "&" : "", c->cursor);
		else {
			n = snprintf(req, sizeof(req), "GET %s%s%s HTTP/1.1\r\n", opt.path,
			             *q ? "?" : "", q);
			c->first_msg = true; /* a snapshot comes */
		}
		break;
	case M_NCHAN_LONGPOLL:
		n = snprintf(req, sizeof(req), "GET %s%s%s HTTP/1.1\r\n", opt.path, *q ? "?" : "",
		             q);
		if (c->lastmod[0])
			n += snprintf(req + n, sizeof(req) - (size_t)n, "If-Modified-Since: %s\r\n",
			              c->lastmod);
		if (c->etag[0])
			n += snprintf(req + n, sizeof(req) - (size_t)n, "If-None-Match: %s\r\n",
			              c->etag);
		break;
	case M_SSE:
		n = snprintf(req, sizeof(req),
		             "GET %s%s%s HTTP/1.1\r\nAccept: text/event-stream\r\n"
		             "Cache-Control: no-cache\r\n",
		             opt.path, *q ? "?" : "", q);
		if (c->event_id[0])
			n += snprintf(req + n, sizeof(req) - (size_t)n, "Last-Event-ID: %s\r\n",
			              c->event_id);
		break;
	case M_WS:
		n = snprintf(req, sizeof(req),
		             "GET %s%s%s HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
		             "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
		             "Sec-WebSocket-Version: 13\r\n",
		             opt.path, *q ? "?" : "", q);
		break;
	}
	if (opt.gzip) /* what Chromium and Firefox send */
		n += snprintf(req + n, sizeof(req) - (size_t)n,
		              "Accept-Encoding: gzip, deflate, br\r\n");
	n += snprintf(req + n, sizeof(req) - (size_t)n,
	              "Host: %s:%u\r\nUser-Agent: tailgate-loadclient\r\n\r\n", opt.host,
	              (unsigned)ntohs(opt.dst.sin_port));
	if (n <= 0 || (size_t)n >= sizeof(req))
		die("request too long");
	buf_add(&c->out, req, (size_t)n);
	conn_flush(c);
	if (opt.mode == M_NCHAN_LONGPOLL && c->state == C_OPEN)
		mark_subscribed(c); /* nchan answers only when a message comes */
}

static void
conn_close(struct conn *c, bool error)
{
	uint64_t now = now_ns();

	if (c->fd >= 0) {
		epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
		close(c->fd);
		n_open--;
	}
	c->fd = -1;
	c->state = C_IDLE;
	c->rs = R_HEAD;
	c->in.len = c->body.len = c->out.len = c->ev.len = 0;
	buf_trim(&c->in);
	buf_trim(&c->body);
	buf_trim(&c->ev);
	c->want_out = false;
	z_end(c);
	if (error) {
		c->backoff_ms = c->backoff_ms ? c->backoff_ms * 2 : 50;
		if (c->backoff_ms > 2000)
			c->backoff_ms = 2000;
	} else {
		c->backoff_ms = 0;
	}
	c->retry_at = now + (uint64_t)c->backoff_ms * 1000000u;
}

static int connecting;

static void
conn_start(struct conn *c)
{
	const struct sockaddr_in *src = &src_addr[c->idx % opt.src_ips];
	struct epoll_event ev = {.events = EPOLLOUT | EPOLLIN | EPOLLRDHUP,
	                         .data.u32 = (uint32_t)c->idx};
	int one = 1, fd;

	fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		errors++;
		c->retry_at = now_ns() + 100000000u;
		return;
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	/* pick the port at connect(2), on the full 4-tuple */
	setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
	if (opt.src_ips > 1 && bind(fd, (const struct sockaddr *)src, sizeof(*src)) != 0) {
		errors++;
		close(fd);
		c->retry_at = now_ns() + 100000000u;
		return;
	}
	if (connect(fd, (const struct sockaddr *)&opt.dst, sizeof(opt.dst)) != 0 &&
	    errno != EINPROGRESS) {
		errors++;
		close(fd);
		c->backoff_ms = c->backoff_ms ? c->backoff_ms * 2 : 50;
		if (c->backoff_ms > 2000)
			c->backoff_ms = 2000;
		c->retry_at = now_ns() + (uint64_t)c->backoff_ms * 1000000u;
		return;
	}
	if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) != 0)
		die("epoll_ctl ADD failed");
	c->fd = fd;
	c->want_out = true;
	c->state = C_CONNECTING;
	c->first_msg = true;
	c->activity = now_ns();
	if (c->start_ns == 0)
		c->start_ns = c->activity;
	n_open++;
	connecting++;
}

static void
conn_connected(struct conn *c)
{
	int err = 0;
	socklen_t len = sizeof(err);

	connecting--;
	if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err != 0) {
		errors++;
		conn_close(c, true);
		return;
	}
	c->state = C_OPEN;
	conn_request(c);
}

static void
conn_readable(struct conn *c)
{
	static char rb[READ_CHUNK];
	ssize_t r = read(c->fd, rb, sizeof(rb));
	ssize_t used;

	if (r < 0) {
		if (errno == EAGAIN || errno == EINTR)
			return;
		errors++;
		conn_close(c, true);
		return;
	}
	if (r == 0) {
		/* EOF: ends an R_BODY_EOF body; otherwise the server hung up */
		if (c->rs == R_BODY_EOF) {
			c->keepalive = false;
			message_done(c);
			if (c->state == C_OPEN)
				conn_close(c, false);
		} else {
			if (c->rs != R_HEAD || c->in.len > 0 || opt.mode == M_SSE ||
			    opt.mode == M_WS)
				errors++;
			conn_close(c, c->rs != R_HEAD);
		}
		return;
	}
	c->activity = now_ns();
	if (measuring && c->activity >= window_start && c->activity <= window_end)
		wire_bytes += (uint64_t)r;
	if (c->in.len == 0) {
		used = parse(c, rb, (size_t)r);
		if (used < 0)
			return;
		if ((size_t)used < (size_t)r)
			buf_add(&c->in, rb + used, (size_t)r - (size_t)used);
	} else {
		buf_add(&c->in, rb, (size_t)r);
		used = parse(c, c->in.p, c->in.len);
		if (used < 0)
			return;
		memmove(c->in.p, c->in.p + used, c->in.len - (size_t)used);
		c->in.len -= (size_t)used;
		buf_trim(&c->in);
	}
}

/* ---- main loop --------------------------------------------------------------- */

static void
raise_nofile(int need)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
		die("getrlimit failed");
	if (rl.rlim_cur < (rlim_t)need) {
		rl.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max > (rlim_t)need * 2
		                      ? (rlim_t)need * 2
		                      : rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur < (rlim_t)need) {
			rl.rlim_max = rl.rlim_cur =
			        (rlim_t)need * 2; /* root may raise the hard limit */
			if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
				char msg[160];
				getrlimit(RLIMIT_NOFILE, &rl);
				snprintf(msg, sizeof(msg),
				         "RLIMIT_NOFILE hard limit %llu is below the %d "
				         "descriptors needed",
				         (unsigned long long)rl.rlim_max, need);
				die(msg);
			}
		}
	}
}

static void
run(void)
{
	struct epoll_event evs[1024];
	uint64_t t0 = now_ns(), ramp_deadline, last_scan = 0, last_progress = t0;
	uint64_t stall_ns = (uint64_t)(opt.stall_timeout * 1e9);
	static struct tree before, after;
	double cpu = 0, pss = 0, client_cpu = 0, client0 = 0, machine = 0, machine0 = 0;
	char pss_by[512] = "-", cpu_by[512] = "-";
	bool sampled = false;
	bool ramp_done = false;
	int silent = 0;

	ramp_deadline = t0 + (uint64_t)(opt.ramp_timeout * 1e9);
	for (;;) {
		uint64_t now = now_ns();
		int n, timeout_ms = 20;

		if (stop_flag)
			break;
		if (!ramp_done && (n_subscribed >= opt.clients || now >= ramp_deadline)) {
			ramp_done = true;
			window_start = now + (uint64_t)(opt.warmup * 1e9);
			window_end = window_start + (uint64_t)(opt.duration * 1e9);
			measuring = true;
			if (opt.verbose)
				fprintf(stderr, "loadclient: %d/%d subscribed after %.2f s\n",
				        n_subscribed, opt.clients, (double)(now - t0) / 1e9);
		}
		if (measuring && !sampled && now >= window_start) {
			sampled = true;
			tree_sample(&before);
			machine0 = machine_busy_s();
			client0 = self_cpu_s();
		}
		if (measuring && now >= window_end)
			break;

		/* open connections, at most opt.concurrency at once */
		if (now - last_scan >= 20000000u) {
			last_scan = now;
			for (int i = 0; i < opt.clients; i++) {
				struct conn *c = &conns[i];
				if (c->state == C_IDLE && now >= c->retry_at &&
				    connecting < opt.concurrency)
					conn_start(c);
				else if (c->state != C_IDLE && now - c->activity > stall_ns) {
					timeouts++;
					if (c->state == C_CONNECTING)
						connecting--;
					conn_close(c, true);
				}
			}
		}
		if (opt.verbose && now - last_progress > 1000000000u) {
			last_progress = now;
			fprintf(stderr,
			        "loadclient: open=%d subscribed=%d deliveries=%" PRIu64
			        " errors=%" PRIu64 "\n",
			        n_open, n_subscribed, deliveries, errors);
		}

		n = epoll_wait(epfd, evs, 1024, timeout_ms);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			die("epoll_wait failed");
		}
		for (int i = 0; i < n; i++) {
			struct conn *c = &conns[evs[i].data.u32];
			uint32_t e = evs[i].events;

			if (c->fd < 0)
				continue;
			if (c->state == C_CONNECTING) {
				if (e & (EPOLLOUT | EPOLLERR | EPOLLHUP))
					conn_connected(c);
				continue;
			}
			if (e & EPOLLOUT) {
				conn_flush(c);
				if (c->fd < 0)
					continue;
			}
			if (e & (EPOLLIN | EPOLLERR | EPOLLHUP | EPOLLRDHUP))
				conn_readable(c);
		}
	}
	if (sampled) {
		tree_sample(&after);
		cpu = tree_cpu(&before, &after);
		pss = tree_pss_mb(&after);
		tree_pss_by(&after, pss_by, sizeof(pss_by));
		tree_cpu_by(&before, &after, cpu_by, sizeof(cpu_by));
		machine = machine_busy_s() - machine0;
		client_cpu = self_cpu_s() - client0;
	}
	for (int i = 0; i < opt.clients; i++)
		if (conns[i].subscribed && conns[i].window_deliveries == 0)
			silent++;

	{
		double win = measuring ? (double)(window_end - window_start) / 1e9 : 0;
		uint64_t end = now_ns();
		if (measuring && end < window_end) /* stopped early */
			win = end > window_start ? (double)(end - window_start) / 1e9 : 0;
		printf("RESULT");
		for (int i = 0; i < opt.nlabels; i++)
			printf(" %s", opt.labels[i]);
		printf(" mode=%s N=%d connected=%d p50_ms=%.3f p99_ms=%.3f max_ms=%.3f"
		       " delivered=%" PRIu64 " delivered_per_s=%.1f errors=%" PRIu64
		       " timeouts=%" PRIu64 " empty_replies=%" PRIu64 " resyncs=%" PRIu64
		       " silent=%d window_s=%.2f cpu_s=%.3f cpu_per_1k=%.5f pss_mb=%.1f"
		       " client_cpu_s=%.3f machine_cpu_s=%.3f other_cpu_s=%.3f"
		       " wire_bytes=%" PRIu64 " wire_per_delivery=%.1f body_bytes=%" PRIu64
		       " coded=%" PRIu64 " gzip=%d pss_by=%s cpu_by=%s\n",
		       mode_names[opt.mode], opt.clients, n_subscribed, hist_quantile_ms(0.50),
		       hist_quantile_ms(0.99), (double)hist_max_us / 1000.0, deliveries,
		       win > 0 ? (double)deliveries / win : 0.0, errors, timeouts, empties, resyncs,
		       silent, win, cpu, deliveries ? cpu / ((double)deliveries / 1000.0) : 0.0,
		       pss, client_cpu, machine, machine - cpu - client_cpu, wire_bytes,
		       deliveries ? (double)wire_bytes / (double)deliveries : 0.0, body_bytes,
		       coded, opt.gzip ? 1 : 0, pss_by, cpu_by);
		fflush(stdout);
	}
}

int
main(int argc, char **argv)
{
	static const struct option longopts[] = {
	        {"url", required_argument, NULL, 'u'},
	        {"mode", required_argument, NULL, 'm'},
	        {"clients", required_argument, NULL, 'n'},
	        {"duration", required_argument, NULL, 'd'},
	        {"warmup", required_argument, NULL, 'w'},
	        {"ramp-timeout", required_argument, NULL, 'R'},
	        {"concurrency", required_argument, NULL, 'c'},
	        {"src-ips", required_argument, NULL, 's'},
	        {"stall-timeout", required_argument, NULL, 'S'},
	        {"key", required_argument, NULL, 'k'},
	        {"pids", required_argument, NULL, 'p'},
	        {"label", required_argument, NULL, 'l'},
	        {"gzip", no_argument, NULL, 'g'},
	        {"mark", required_argument, NULL, 'M'},
	        {"dump", required_argument, NULL, 'D'},
	        {"verbose", no_argument, NULL, 'v'},
	        {"help", no_argument, NULL, 'h'},
	        {NULL, 0, NULL, 0},
	};
	const char *url = NULL;
	int ch;

	while ((ch = getopt_long(argc, argv, "n:d:w:vh", longopts, NULL)) != -1) {
		switch (ch) {
		case 'u':
			url = optarg;
			break;
		case 'm': {
			bool found = false;
			for (int i = 0; i < 4; i++)
				if (strcmp(optarg, mode_names[i]) == 0) {
					opt.mode = (enum mode)i;
					found = true;
				}
			if (!found)
				die("--mode must be longpoll, nchan-longpoll, sse or ws");
			break;
		}
		case 'n':
			opt.clients = (int)parse_int(optarg, 1, CLIENTS_MAX, "--clients");
			break;
		case 'd':
			opt.duration = parse_seconds(optarg, DURATION_MAX, "--duration");
			break;
		case 'w':
			opt.warmup = parse_seconds(optarg, WARMUP_MAX, "--warmup");
			break;
		case 'R':
			opt.ramp_timeout = parse_seconds(optarg, RAMP_MAX, "--ramp-timeout");
			break;
		case 'c':
			opt.concurrency = (int)parse_int(optarg, 1, 4096, "--concurrency");
			break;
		case 's':
			opt.src_ips = (int)parse_int(optarg, 1, SRC_IPS_MAX, "--src-ips");
			break;
		case 'S':
			opt.stall_timeout = parse_seconds(optarg, 3600, "--stall-timeout");
			break;
		case 'k':
			if (strlen(optarg) + 3 > sizeof(opt.key) || strchr(optarg, '"'))
				die("--key: a plain JSON key name");
			snprintf(opt.key, sizeof(opt.key), "\"%s\"", optarg);
			break;
		case 'p': {
			char *s = optarg, *tok, *save = NULL;
			while ((tok = strtok_r(s, ",", &save)) != NULL) {
				s = NULL;
				if (opt.npids >= PIDS_MAX)
					die("too many --pids");
				opt.pids[opt.npids++] = (pid_t)parse_int(tok, 1, 1 << 30, "--pids");
			}
			break;
		}
		case 'l':
			if (opt.nlabels >= LABELS_MAX || strchr(optarg, '=') == NULL ||
			    strpbrk(optarg, " \t\n"))
				die("--label K=V (no spaces), at most 16");
			opt.labels[opt.nlabels++] = optarg;
			break;
		case 'g':
			opt.gzip = true;
			break;
		case 'M':
			if (strlen(optarg) + 1 > sizeof(opt.key) || optarg[0] == '\0')
				die("--mark: 1..63 characters");
			snprintf(opt.key, sizeof(opt.key), "%s", optarg);
			break;
		case 'D':
			opt.dump = optarg;
			break;
		case 'v':
			opt.verbose = true;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind != argc || url == NULL) {
		usage(stderr);
		return 2;
	}
	parse_url(url);
	if (opt.src_ips == 0)
		opt.src_ips = (opt.clients + 3999) / 4000;
	for (int i = 0; i < opt.src_ips; i++) {
		src_addr[i].sin_family = AF_INET;
		src_addr[i].sin_port = 0;
		src_addr[i].sin_addr.s_addr = htonl(INADDR_LOOPBACK + (uint32_t)i);
	}
	clk_tck = sysconf(_SC_CLK_TCK);
	raise_nofile(opt.clients + 64);
	signal(SIGPIPE, SIG_IGN);
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	signal(SIGALRM, on_signal); /* ends the loop; the RESULT line still prints */
	/* hard bound on the whole run */
	alarm((unsigned)(opt.ramp_timeout + opt.warmup + opt.duration + 30));

	epfd = epoll_create1(EPOLL_CLOEXEC);
	if (epfd < 0)
		die("epoll_create1 failed");
	conns = calloc((size_t)opt.clients, sizeof(*conns));
	if (conns == NULL)
		die("out of memory");
	for (int i = 0; i < opt.clients; i++) {
		conns[i].fd = -1;
		conns[i].idx = i;
		conns[i].state = C_IDLE;
		/* spread first connects a little so the ramp is not one burst */
		conns[i].retry_at = 0;
	}
	run();
	dump_write();
	return 0;
}
