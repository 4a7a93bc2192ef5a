/*
 * bench_daemon.c - rows per second from the upstream socket to published
 * batches, through the daemon's real code on one core.
 *
 *   bench/bench_daemon [--rows N] [--per-ts K] [--window W] [--ring-size S]
 *
 * A child process plays Materialize on a unix socket: the startup
 * handshake, the Parse/Describe of the SUBSCRIBE (10 view columns: int8,
 * int8, int4, numeric, text, bool, timestamptz, float8, text, int4), and
 * then one COPY of canned CopyData rows: K rows per timestamp, each
 * timestamp inserting K/2 new rows and retracting the K/2 inserted W
 * timestamps earlier (so the state stays at about W*K/2 rows), closed by
 * a progress row.  The parent runs daemon.c's event loop in this thread
 * (libpq, COPY text decoding, JSON encoding, consolidation against the
 * state, batch layout, ring append, snapshots) until the ring's head is
 * the last timestamp, and prints rows/s.  Parent and child are pinned to
 * different CPUs when there are two, so the figure is the daemon's one
 * core; the CPU time it used is printed beside the wall time.
 */
#include "config.h"

#include "clock.h"
#include "conf.h"
#include "daemon.h"
#include "feed.h"
#include "log.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define T0 1700000000000ull

static uint64_t opt_rows = 2000000, opt_per_ts = 1000, opt_window = 100;
static const char *opt_ring = "64M";

static double
now_s(void)
{
	return (double)clock_mono_ns() / 1e9;
}

static void
pin(int cpu)
{
	cpu_set_t set;

	if (sysconf(_SC_NPROCESSORS_ONLN) < 2)
		return;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	(void)sched_setaffinity(0, sizeof(set), &set);
}

/* ---- the fake upstream (child) ------------------------------------------ */

struct out {
	char *p;
	size_t len, cap;
	int fd;
	bool grow; /* collect everything instead of flushing */
};

static void
out_flush(struct out *o)
{
	size_t off = 0;

	while (off < o->len) {
		ssize_t n = write(o->fd, o->p + off, o->len - off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			_exit(0); /* the daemon went away */
		off += (size_t)n;
	}
	o->len = 0;
}

static char *
out_room(struct out *o, size_t n)
{
	if (o->len + n > o->cap) {
		if (!o->grow) {
			out_flush(o);
		} else {
			o->cap = o->cap * 2 + n;
			o->p = realloc(o->p, o->cap);
			if (o->p == NULL)
				_exit(3);
		}
	}
	return o->p + o->len;
}

static void
put_u32(char *p, uint32_t v)
{
	p[0] = (char)(v >> 24);
	p[1] = (char)(v >> 16);
	p[2] = (char)(v >> 8);
	p[3] = (char)v;
}

static void
msg(struct out *o, char type, const void *body, size_t len)
{
	char *p = out_room(o, len + 5);

	p[0] = type;
	put_u32(p + 1, (uint32_t)(len + 4));
	memcpy(p + 5, body, len);
	o->len += len + 5;
}

static char *
utoa(char *p, uint64_t v)
{
	char tmp[24];
	int n = 0;

	do {
		tmp[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	while (n)
		*p++ = tmp[--n];
	return p;
}

static char *
puts_(char *p, const char *s)
{
	size_t n = strlen(s);

	memcpy(p, s, n);
	return p + n;
}

/* One data row as CopyData: the row's content depends on id only. */
static void
data_row(struct out *o, uint64_t ts, int diff, uint64_t id)
{
	static const char *const items[] = {"Best Pizza in Town", "Custom Art", "Gift Basket",
	                                    "Signed Memorabilia", "City Bar Crawl"};
	char *m = out_room(o, 256), *p = m + 5;

	p = utoa(p, ts);
	p = puts_(p, "\tf\t");
	if (diff < 0)
		*p++ = '-';
	p = puts_(p, "1\t");
	p = utoa(p, id);
	*p++ = '\t';
	p = utoa(p, 1000 + id % 9000);
	*p++ = '\t';
	p = utoa(p, 300 + id % 4700);
	*p++ = '\t';
	p = utoa(p, id % 100000);
	*p++ = '.';
	*p++ = (char)('0' + id % 10);
	*p++ = '0';
	*p++ = '\t';
	p = puts_(p, items[id % 5]);
	p = puts_(p, " #");
	p = utoa(p, id % 977);
	p = puts_(p, id % 3 ? "\tt\t" : "\tf\t");
	p = puts_(p, "2023-11-14 22:13:");
	*p++ = (char)('0' + id % 6);
	*p++ = (char)('0' + id % 10);
	p = puts_(p, ".274+00\t0.");
	p = utoa(p, 1 + id % 997);
	p = puts_(p, "\tnote\\twith a tab ");
	p = utoa(p, id % 31);
	*p++ = '\t';
	p = utoa(p, id % 13);
	*p++ = '\n';
	m[0] = 'd';
	put_u32(m + 1, (uint32_t)(p - (m + 5) + 4));
	o->len += (size_t)(p - m);
}

static void
progress_row(struct out *o, uint64_t ts)
{
	char *m = out_room(o, 128), *p = m + 5;

	p = utoa(p, ts);
	p = puts_(p, "\tt\t\\N");
	for (int i = 0; i < 10; i++)
		p = puts_(p, "\t\\N");
	*p++ = '\n';
	m[0] = 'd';
	put_u32(m + 1, (uint32_t)(p - (m + 5) + 4));
	o->len += (size_t)(p - m);
}

static void
row_description(struct out *o)
{
	static const struct {
		const char *name;
		uint32_t oid;
		int16_t len;
	} cols[] = {{"mz_timestamp", 1700, -1},
	            {"mz_progressed", 16, 1},
	            {"mz_diff", 20, 8},
	            {"id", 20, 8},
	            {"seller", 20, 8},
	            {"buyer", 23, 4},
	            {"amount", 1700, -1},
	            {"item", 25, -1},
	            {"paid", 16, 1},
	            {"bid_time", 1184, 8},
	            {"score", 701, 8},
	            {"note", 25, -1},
	            {"qty", 23, 4}};
	char body[1024], *p = body;
	int n = (int)(sizeof(cols) / sizeof(cols[0]));

	*p++ = (char)(n >> 8);
	*p++ = (char)n;
	for (int i = 0; i < n; i++) {
		p = puts_(p, cols[i].name);
		*p++ = '\0';
		memset(p, 0, 6); /* table oid, attnum */
		p += 6;
		put_u32(p, cols[i].oid);
		p += 4;
		*p++ = (char)(cols[i].len >> 8);
		*p++ = (char)cols[i].len;
		put_u32(p, UINT32_MAX); /* typmod -1 */
		p += 4;
		*p++ = 0;
		*p++ = 0;
	}
	msg(o, 'T', body, (size_t)(p - body));
}

static bool
read_full(int fd, void *buf, size_t n)
{
	size_t off = 0;

	while (off < n) {
		ssize_t r = read(fd, (char *)buf + off, n - off);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return false;
		off += (size_t)r;
	}
	return true;
}

static uint32_t
get_u32(const unsigned char *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void
stream(struct out *o)
{
	uint64_t half = opt_per_ts / 2, id = 0, sent = 0, ts = T0;
	char copy[3 + 13 * 2];

	copy[0] = 0;
	copy[1] = 0;
	copy[2] = 13;
	memset(copy + 3, 0, 26);
	msg(o, 'H', copy, sizeof(copy));
	progress_row(o, ts); /* the as-of; the snapshot is empty */
	ts++;
	while (sent < opt_rows) {
		for (uint64_t k = 0; k < half; k++)
			data_row(o, ts, 1, id + k);
		if (id >= half * opt_window)
			for (uint64_t k = 0; k < half; k++)
				data_row(o, ts, -1, id - half * opt_window + k);
		sent += id >= half * opt_window ? 2 * half : half;
		id += half;
		progress_row(o, ++ts);
	}
}

static void
upstream(int lfd, int ready)
{
	struct out o = {malloc(1 << 20), 0, 1 << 20, -1, false};
	struct out pre = {malloc(1 << 20), 0, 1 << 20, -1, true};
	unsigned char hdr[5], *body = NULL;
	int fd;

	/* The whole COPY stream is made before the clock starts, so the
	 * bench measures the daemon, not this generator. */
	stream(&pre);
	if (write(ready, "r", 1) != 1)
		_exit(1);
	close(ready);
	fd = accept(lfd, NULL, NULL);
	if (fd < 0)
		_exit(1);
	o.fd = fd;
	/* Startup (answering 'N' to SSL or GSS encryption requests). */
	for (;;) {
		unsigned char len[4], rest[8];
		if (!read_full(fd, len, 4))
			_exit(1);
		uint32_t n = get_u32(len);
		if (n == 8) {
			if (!read_full(fd, rest, 4))
				_exit(1);
			if (write(fd, "N", 1) != 1)
				_exit(1);
			continue;
		}
		body = realloc(body, n);
		if (!read_full(fd, body, n - 4))
			_exit(1);
		break;
	}
	{
		static const char ok[] = {0, 0, 0, 0};
		static const char *const ps[][2] = {{"client_encoding", "UTF8"},
		                                    {"server_version", "9.5.0"},
		                                    {"standard_conforming_strings", "on"},
		                                    {"integer_datetimes", "on"}};
		char kd[8] = {0, 0, 0, 1, 0, 0, 0, 2};
		msg(&o, 'R', ok, 4);
		for (size_t i = 0; i < 4; i++) {
			char b[128];
			size_t a = strlen(ps[i][0]) + 1, c = strlen(ps[i][1]) + 1;
			memcpy(b, ps[i][0], a);
			memcpy(b + a, ps[i][1], c);
			msg(&o, 'S', b, a + c);
		}
		msg(&o, 'K', kd, 8);
		msg(&o, 'Z', "I", 1);
		out_flush(&o);
	}
	for (;;) {
		if (!read_full(fd, hdr, 5))
			_exit(0);
		uint32_t n = get_u32(hdr + 1) - 4;
		body = realloc(body, n + 1);
		if (!read_full(fd, body, n))
			_exit(0);
		body[n] = 0;
		switch (hdr[0]) {
		case 'P':
			msg(&o, '1', "", 0);
			break;
		case 'D':
			msg(&o, 't', "\0\0", 2);
			row_description(&o);
			break;
		case 'S':
			msg(&o, 'Z', "I", 1);
			out_flush(&o);
			break;
		case 'Q':
			if (strstr((char *)body, "COPY") != NULL) {
				out_flush(&o);
				pre.fd = fd;
				out_flush(&pre);
				/* Hold the connection until the daemon leaves. */
				while (read(fd, hdr, 1) > 0)
					;
				_exit(0);
			}
			msg(&o, 'E', "SERROR\0C0A000\0Mbench: unsupported\0\0", 35);
			msg(&o, 'Z', "I", 1);
			out_flush(&o);
			break;
		case 'X':
			_exit(0);
		default:
			break;
		}
	}
}

/* ---- the daemon (parent) ------------------------------------------------- */

static void
usage(FILE *f)
{
	fprintf(f, "usage: bench_daemon [--rows N] [--per-ts K] [--window W] [--ring-size S]\n"
	           "  rows from a fake Materialize socket to published batches, one core\n");
}

int
main(int argc, char **argv)
{
	static const struct option opts[] = {{"rows", required_argument, NULL, 'n'},
	                                     {"per-ts", required_argument, NULL, 'k'},
	                                     {"window", required_argument, NULL, 'w'},
	                                     {"ring-size", required_argument, NULL, 'r'},
	                                     {"help", no_argument, NULL, 'h'},
	                                     {NULL, 0, NULL, 0}};
	char dir[] = "/tmp/bench_daemon.XXXXXX", text[1024], err[512], path[256];
	char shm[] = "/dev/shm/bench_daemon.XXXXXX"; /* the rings live on tmpfs, as in production */
	struct sockaddr_un sa;
	struct feed_stats st;
	struct rusage ru;
	struct conf *conf;
	struct daemon *d;
	uint64_t last_ts, ts_count, half;
	double t0, t1, cpu;
	pid_t child;
	int c, lfd;

	while ((c = getopt_long(argc, argv, "n:k:w:r:h", opts, NULL)) != -1) {
		switch (c) {
		case 'n':
			opt_rows = strtoull(optarg, NULL, 10);
			break;
		case 'k':
			opt_per_ts = strtoull(optarg, NULL, 10);
			break;
		case 'w':
			opt_window = strtoull(optarg, NULL, 10);
			break;
		case 'r':
			opt_ring = optarg;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (opt_per_ts < 2 || opt_rows == 0) {
		usage(stderr);
		return 2;
	}
	half = opt_per_ts / 2;
	/* Timestamps the child will send: rows arrive half per ts during
	 * the warm-up window, a full opt_per_ts after it. */
	{
		uint64_t sent = 0, id = 0;
		ts_count = 0;
		while (sent < opt_rows) {
			sent += id >= half * opt_window ? 2 * half : half;
			id += half;
			ts_count++;
		}
		opt_rows = sent;
	}
	last_ts = T0 + ts_count; /* the batches are at T0+1 .. T0+ts_count */

	if (mkdtemp(dir) == NULL) {
		perror("mkdtemp");
		return 1;
	}
	if (mkdtemp(shm) != NULL)
		snprintf(path, sizeof(path), "%s", shm);
	else
		snprintf(path, sizeof(path), "%s/ring", dir);
	mkdir(path, 0700);
	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/.s.PGSQL.5432", dir);
	lfd = socket(AF_UNIX, SOCK_STREAM, 0);
	if (lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) != 0 || listen(lfd, 4) != 0) {
		perror("listen");
		return 1;
	}
	int ready[2];
	char r;
	if (pipe(ready) != 0) {
		perror("pipe");
		return 1;
	}
	child = fork();
	if (child == 0) {
		close(ready[0]);
		pin(1);
		upstream(lfd, ready[1]);
		_exit(0);
	}
	close(lfd);
	close(ready[1]);
	pin(0);
	if (read(ready[0], &r, 1) != 1) {
		fprintf(stderr, "bench_daemon: the upstream did not start\n");
		return 1;
	}
	close(ready[0]);

	log_init("bench_daemon", false);
	log_max_level = LOG_LEVEL_WARNING;
	snprintf(text, sizeof(text),
	         "source = materialize\n"
	         "conninfo = host=%s port=5432 user=bench dbname=bench\n"
	         "ring_dir = %s\n"
	         "ring_size = %s\n"
	         "[feed bench]\n"
	         "view = bench\n",
	         dir, path, opt_ring);
	conf = conf_parse("bench.conf", text, strlen(text), err, sizeof(err));
	if (conf == NULL) {
		fprintf(stderr, "bench_daemon: %s\n", err);
		return 1;
	}

	printf("bench_daemon: %" PRIu64 " rows of 10 columns in %" PRIu64 " timestamps (%" PRIu64
	       " rows each after warm-up; the state holds ~%" PRIu64 " rows), ring %s\n",
	       opt_rows, ts_count, opt_per_ts, half * opt_window, opt_ring);
	fflush(stdout);
	getrusage(RUSAGE_SELF, &ru);
	cpu = -((double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
	        (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6);
	t0 = now_s();
	d = daemon_new(conf, true);
	if (d == NULL)
		return 1;
	for (;;) {
		(void)daemon_step(d, -1, 1000);
		if (daemon_feed_stats(d, "bench", &st) && st.head_cursor >= last_ts)
			break;
		if (now_s() - t0 > 600) {
			fprintf(stderr, "bench_daemon: timed out at cursor %" PRIu64 "\n",
			        st.head_cursor);
			break;
		}
	}
	t1 = now_s();
	getrusage(RUSAGE_SELF, &ru);
	cpu += (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
	       ru.ru_stime.tv_usec / 1e6;

	printf("  %.3f s wall, %.3f s CPU in the daemon thread (%.0f%% of one core)\n", t1 - t0,
	       cpu, 100.0 * cpu / (t1 - t0));
	printf("  %.0f rows/s from the socket to published batches (%.2f us/row wall)\n",
	       (double)opt_rows / (t1 - t0), 1e6 * (t1 - t0) / (double)opt_rows);
	printf("  %.0f rows per CPU-second of the daemon thread (%.2f us/row CPU; the figure "
	       "wall time reaches when the core is not shared)\n",
	       (double)opt_rows / cpu, 1e6 * cpu / (double)opt_rows);
	printf("  %" PRIu64 " batches, %" PRIu64 " snapshots written, %" PRIu64 " rows accepted\n",
	       st.batches, st.snapshots, st.rows_in);
	printf("  state: %" PRIu64 " rows, %" PRIu64 " bytes of row JSON (with commas), "
	       "%" PRIu64 " bytes of memory = %.2fx\n",
	       st.state_rows, st.state_json, st.state_bytes,
	       st.state_json ? (double)st.state_bytes / (double)st.state_json : 0.0);
	printf("RESULT rows_per_s=%.0f rows_per_cpu_s=%.0f\n", (double)opt_rows / (t1 - t0),
	       (double)opt_rows / cpu);

	daemon_free(d);
	kill(child, SIGTERM);
	waitpid(child, NULL, 0);
	unlink(sa.sun_path);
	rmdir(path);
	rmdir(dir);
	return st.head_cursor >= last_ts ? 0 : 1;
}
