/*
 * publisher.c - publishes the benchmark's batches at a fixed rate, into a
 * tailgate ring or by HTTP POST (nchan's publisher location, the seed-style
 * server's /api/publish), so that every server gets the same bytes.
 *
 * The batches are a "winning bids" view kept by this program: AUCTIONS rows
 * (auction_id int8, item text, buyer int8, amount int4, bid_time
 * timestamptz); each batch updates UPDATES auctions, i.e. deletes their
 * current row and inserts the new one (about 450 bytes of JSON with the
 * defaults).  Deleted rows are always rows inserted before, so a consumer
 * that keeps the state (the seed's View.update) never fails.
 *
 * Batch k is scheduled at t0 + k/RATE on CLOCK_MONOTONIC; its "timestamp"
 * (tailgate's cursor) is that scheduled time in ns.  The load client
 * measures latency against it, so a publisher that falls behind (a server
 * slow to accept POSTs) shows up as latency, not as a slower clock.
 *
 *   --ring DIR   creates DIR/FEED.ring (libtailgate's ring_create), writes
 *                the initial snapshot, marks the feed live, heartbeats every
 *                second, appends and wakes per batch, and writes a new
 *                snapshot every --snapshot-every seconds or when the ring
 *                asks for one.  It stands in for tailgated.
 *   --post URL   POSTs the initial state (all rows inserted) and then every
 *                batch, one request at a time on a keep-alive connection.
 *
 * Prints "READY" on stdout once the first state is published, and a
 * "PUBLISHED ..." line on stderr when stopped (SIGTERM/SIGINT/--duration).
 * Only loopback URLs are accepted.
 */
#define _GNU_SOURCE
#include "batch.h"
#include "clock.h"
#include "ring.h"

#include <arpa/inet.h>
#include <errno.h>
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
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define AUCTIONS_MAX 100000
#define RATE_MAX 10000
#define DURATION_MAX 3600

static const char columns_json[] =
        "[{\"name\":\"auction_id\",\"type\":\"int8\"},{\"name\":\"item\",\"type\":\"text\"},"
        "{\"name\":\"buyer\",\"type\":\"int8\"},{\"name\":\"amount\",\"type\":\"int4\"},"
        "{\"name\":\"bid_time\",\"type\":\"timestamptz\"}]";

static const char *const items[] = {
        "Signed Memorabilia", "City Bar Crawl", "Best Pizza in Town", "Gift Basket",
        "Custom Art",         "Vintage Vinyl",  "Weekend Cabin Stay", "Rare Coffee Beans",
};

static volatile sig_atomic_t stop_flag;

static void
on_signal(int sig)
{
	(void)sig;
	stop_flag = 1;
}

static uint64_t
now_ns(void)
{
	return (uint64_t)clock_mono_ns();
}

static void
die(const char *msg)
{
	fprintf(stderr, "publisher: %s\n", msg);
	exit(2);
}

/* ---- the view ------------------------------------------------------------ */

struct row {
	char json[128];
	size_t len;
};

static struct row *rows;
static int n_auctions = 200;
static int n_updates = 3;
static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint64_t bid_clock_ms = 1714564800000ull; /* 2024-05-01 12:00:00 UTC */

static uint64_t
rnd(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

static void
make_row(struct row *out, int i)
{
	time_t secs;
	struct tm tm;
	char when[40];
	int n;

	bid_clock_ms += 1 + rnd() % 300;
	secs = (time_t)(bid_clock_ms / 1000);
	gmtime_r(&secs, &tm);
	strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S", &tm);
	n = snprintf(out->json, sizeof(out->json), "[%d,\"%s\",%" PRIu64 ",%u,\"%s.%03u+00\"]",
	             40000 + i, items[(unsigned)i % (sizeof(items) / sizeof(items[0]))],
	             1 + rnd() % 5000, (unsigned)(1 + rnd() % 99), when,
	             (unsigned)(bid_clock_ms % 1000));
	out->len = (size_t)n;
}

/* The next batch: UPDATES distinct auctions get a new winning bid.  The
 * new rows wait in pending[] until next_commit(), so that the state before
 * the batch is still at hand if the ring asks for a snapshot first. */
static int picked[64], n_picked;
static struct row pending[64];

static void
next_batch(struct batch_builder *b)
{
	n_picked = 0;
	batch_builder_reset(b);
	while (n_picked < n_updates) {
		int i = (int)(rnd() % (uint64_t)n_auctions);
		bool dup = false;
		for (int j = 0; j < n_picked; j++)
			dup |= picked[j] == i;
		if (dup)
			continue;
		picked[n_picked] = i;
		make_row(&pending[n_picked], i);
		batch_add_row(b, false, rows[i].json, rows[i].len);
		batch_add_row(b, true, pending[n_picked].json, pending[n_picked].len);
		n_picked++;
	}
}

static void
next_commit(void)
{
	for (int j = 0; j < n_picked; j++)
		rows[picked[j]] = pending[j];
	n_picked = 0;
}

static void
state_batch(struct batch_builder *b)
{
	batch_builder_reset(b);
	for (int i = 0; i < n_auctions; i++)
		batch_add_row(b, true, rows[i].json, rows[i].len);
}

/* The JSON text of a finished batch: iov[1..5] (see batch_finish). */
static size_t
batch_json(const struct iovec *iov, char **out, size_t *cap)
{
	size_t len = 0;

	for (int i = 1; i <= 5; i++)
		len += iov[i].iov_len;
	if (len + 1 > *cap) {
		*cap = len + 1;
		*out = realloc(*out, *cap);
		if (*out == NULL)
			die("out of memory");
	}
	len = 0;
	for (int i = 1; i <= 5; i++) {
		if (iov[i].iov_len == 0)
			continue; /* an empty part may have no base: memcpy(NULL) is UB */
		memcpy(*out + len, iov[i].iov_base, iov[i].iov_len);
		len += iov[i].iov_len;
	}
	(*out)[len] = '\0';
	return len;
}

/* ---- HTTP POST sink -------------------------------------------------------- */

static struct sockaddr_in post_addr;
static char post_host[64], post_path[512];
static int post_fd = -1;

static void
parse_post_url(const char *url)
{
	const char *p, *slash, *colon;
	size_t n;

	if (strncmp(url, "http://", 7) != 0)
		die("--post URL must be http://127.x.y.z:PORT/PATH");
	p = url + 7;
	slash = strchr(p, '/');
	if (slash == NULL || strlen(slash) >= sizeof(post_path))
		die("--post URL needs a path");
	colon = memchr(p, ':', (size_t)(slash - p));
	if (colon == NULL)
		die("--post URL needs a port");
	n = (size_t)(colon - p);
	if (n == 0 || n >= sizeof(post_host))
		die("--post: bad host");
	memcpy(post_host, p, n);
	post_host[n] = '\0';
	strcpy(post_path, slash);
	post_addr.sin_family = AF_INET;
	post_addr.sin_port = htons((uint16_t)atoi(colon + 1));
	if (strcmp(post_host, "localhost") == 0)
		post_addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	else if (inet_pton(AF_INET, post_host, &post_addr.sin_addr) != 1)
		die("--post: host must be a 127.x.y.z address or localhost");
	if ((ntohl(post_addr.sin_addr.s_addr) >> 24) != 127 || post_addr.sin_port == 0)
		die("refusing a non-loopback target: only 127.0.0.0/8 and localhost are allowed");
}

static bool
post_connect(void)
{
	struct timeval tv = {.tv_sec = 10};
	int one = 1;

	post_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (post_fd < 0)
		return false;
	setsockopt(post_fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	setsockopt(post_fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(post_fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	if (connect(post_fd, (const struct sockaddr *)&post_addr, sizeof(post_addr)) != 0) {
		close(post_fd);
		post_fd = -1;
		return false;
	}
	return true;
}

static bool
write_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return false;
		p += w;
		n -= (size_t)w;
	}
	return true;
}

/* One POST and its whole reply; false on any failure (the caller retries
 * on a new connection once). */
static bool
post_once(const char *body, size_t len, int *status)
{
	char head[1024], resp[65536];
	size_t have = 0, need;
	char *e, *cl;
	bool chunked, close_after;
	int n;

	if (post_fd < 0 && !post_connect())
		return false;
	n = snprintf(head, sizeof(head),
	             "POST %s HTTP/1.1\r\nHost: %s:%u\r\nContent-Type: application/json\r\n"
	             "Content-Length: %zu\r\nUser-Agent: tailgate-bench-publisher\r\n\r\n",
	             post_path, post_host, (unsigned)ntohs(post_addr.sin_port), len);
	if (!write_all(post_fd, head, (size_t)n) || !write_all(post_fd, body, len))
		goto fail;
	for (;;) {
		ssize_t r;
		if (have + 1 >= sizeof(resp))
			goto fail;
		r = read(post_fd, resp + have, sizeof(resp) - 1 - have);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			goto fail;
		have += (size_t)r;
		resp[have] = '\0';
		e = strstr(resp, "\r\n\r\n");
		if (e == NULL)
			continue;
		*status = atoi(resp + 9);
		cl = strcasestr(resp, "\r\nContent-Length:");
		chunked = strcasestr(resp, "\r\nTransfer-Encoding: chunked") != NULL;
		close_after = strcasestr(resp, "\r\nConnection: close") != NULL;
		if (chunked) {
			if (strstr(e + 4, "0\r\n\r\n") == NULL)
				continue;
		} else {
			need = (size_t)(e + 4 - resp) + (cl ? strtoul(cl + 17, NULL, 10) : 0);
			if (have < need)
				continue;
		}
		if (close_after) {
			close(post_fd);
			post_fd = -1;
		}
		return true;
	}
fail:
	if (post_fd >= 0)
		close(post_fd);
	post_fd = -1;
	return false;
}

static bool
post_batch(const char *body, size_t len)
{
	int status = 0;

	for (int attempt = 0; attempt < 2; attempt++)
		if (post_once(body, len, &status))
			return status >= 200 && status < 300;
	return false;
}

/* The whole state (rows[]) as the ring's snapshot at cursor. */
static int
write_snapshot(struct ring *ring, struct batch_builder *sb, uint64_t cursor)
{
	struct iovec iov[BATCH_IOV_MAX];
	char err[512];
	int n;

	state_batch(sb);
	n = batch_finish(sb, cursor, iov);
	if (ring_write_snapshot(ring, iov, n, err, sizeof(err)) != RING_OK) {
		fprintf(stderr, "publisher: %s\n", err);
		return RING_ERR;
	}
	ring_set_row_count(ring, (uint64_t)n_auctions);
	return RING_OK;
}

/* ---- main ---------------------------------------------------------------------- */

static void
usage(FILE *f)
{
	fprintf(f,
	        "usage: publisher --rate R (--ring DIR | --post URL) [options]\n"
	        "\n"
	        "Publishes \"winning bids\" batches at R per second; each batch's \"timestamp\"\n"
	        "is its scheduled publish time (CLOCK_MONOTONIC ns).\n"
	        "\n"
	        "  --rate R             batches per second, 1..%d\n"
	        "  --duration S         stop after S seconds (default and max %d)\n"
	        "  --ring DIR           write the tailgate ring DIR/FEED.ring (and FEED.snap)\n"
	        "  --feed NAME          feed name (default bench)\n"
	        "  --ring-mb M          ring data area in MiB (default 16)\n"
	        "  --snapshot-every S   ring: new snapshot every S seconds (default 1)\n"
	        "  --post URL           POST each batch to http://127.x.y.z:PORT/PATH\n"
	        "  --auctions A         rows in the view (default 200)\n"
	        "  --updates U          auctions updated per batch, 1..64 (default 3)\n"
	        "  -h, --help           this text\n",
	        RATE_MAX, DURATION_MAX);
}

int
main(int argc, char **argv)
{
	static const struct option longopts[] = {
	        {"rate", required_argument, NULL, 'r'},
	        {"duration", required_argument, NULL, 'd'},
	        {"ring", required_argument, NULL, 'R'},
	        {"feed", required_argument, NULL, 'f'},
	        {"ring-mb", required_argument, NULL, 'm'},
	        {"snapshot-every", required_argument, NULL, 's'},
	        {"post", required_argument, NULL, 'p'},
	        {"auctions", required_argument, NULL, 'a'},
	        {"updates", required_argument, NULL, 'u'},
	        {"help", no_argument, NULL, 'h'},
	        {NULL, 0, NULL, 0},
	};
	double rate = 0, duration = DURATION_MAX, snap_every = 1;
	const char *ring_dir = NULL, *feed = "bench", *post_url = NULL;
	long ring_mb = 16;
	struct batch_builder bb, sbb;
	struct iovec iov[BATCH_IOV_MAX];
	struct ring *ring = NULL;
	char err[512], *json = NULL;
	size_t json_cap = 0, json_len;
	uint64_t t0, period, k = 0, head_cursor, last_snap, last_beat, max_lag = 0, errors = 0;
	uint64_t max_pub = 0, slow = 0, pub_start;
	uint64_t bytes = 0;
	int ch, niov;
	struct sigaction sa;

	while ((ch = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		switch (ch) {
		case 'r':
			rate = strtod(optarg, NULL);
			if (!(rate >= 1 && rate <= RATE_MAX))
				die("--rate must be in 1..10000");
			break;
		case 'd':
			duration = strtod(optarg, NULL);
			if (!(duration > 0 && duration <= DURATION_MAX))
				die("--duration must be in (0, 3600]");
			break;
		case 'R':
			ring_dir = optarg;
			break;
		case 'f':
			feed = optarg;
			break;
		case 'm':
			ring_mb = strtol(optarg, NULL, 10);
			if (ring_mb < 1 || ring_mb > 4096)
				die("--ring-mb must be in 1..4096");
			break;
		case 's':
			snap_every = strtod(optarg, NULL);
			if (!(snap_every > 0))
				die("--snapshot-every must be positive");
			break;
		case 'p':
			post_url = optarg;
			break;
		case 'a':
			n_auctions = atoi(optarg);
			if (n_auctions < 1 || n_auctions > AUCTIONS_MAX)
				die("--auctions must be in 1..100000");
			break;
		case 'u':
			n_updates = atoi(optarg);
			if (n_updates < 1 || n_updates > 64)
				die("--updates must be in 1..64");
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind != argc || rate == 0 || (ring_dir == NULL) == (post_url == NULL)) {
		usage(stderr);
		return 2;
	}
	if (n_updates > n_auctions)
		die("--updates must not exceed --auctions");
	if (post_url)
		parse_post_url(post_url);

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);

	rows = calloc((size_t)n_auctions, sizeof(*rows));
	if (rows == NULL)
		die("out of memory");
	for (int i = 0; i < n_auctions; i++)
		make_row(&rows[i], i);
	memset(&bb, 0, sizeof(bb));
	memset(&sbb, 0, sizeof(sbb));

	period = (uint64_t)(1e9 / rate);
	t0 = now_ns() + 50000000u; /* first batch 50 ms from now */
	head_cursor = t0 - period; /* the initial state's cursor */

	state_batch(&bb);
	niov = batch_finish(&bb, head_cursor, iov);
	if (ring_dir) {
		struct ring_config cfg = {
		        .dir = ring_dir,
		        .feed = feed,
		        .source = "test",
		        .columns_json = columns_json,
		        .data_size = (uint64_t)ring_mb << 20,
		        .index_slots = 0,
		        .base_cursor = head_cursor,
		};
		if (ring_create(&cfg, &ring, err, sizeof(err)) != RING_OK) {
			fprintf(stderr, "publisher: %s\n", err);
			return 1;
		}
		if (ring_write_snapshot(ring, iov, niov, err, sizeof(err)) != RING_OK) {
			fprintf(stderr, "publisher: %s\n", err);
			ring_close(ring, true);
			return 1;
		}
		ring_set_row_count(ring, (uint64_t)n_auctions);
		ring_set_state(ring, RING_STATE_LIVE);
		ring_heartbeat(ring);
	} else {
		json_len = batch_json(iov, &json, &json_cap);
		if (!post_batch(json, json_len)) {
			fprintf(stderr, "publisher: the initial POST to %s failed\n", post_url);
			return 1;
		}
	}
	printf("READY\n");
	fflush(stdout);
	last_snap = last_beat = now_ns();
	/* the schedule starts once the initial state is in (a POST of it may
	 * take a while on a server that just started); its cursor stays below */
	if (t0 < last_snap + 10000000u)
		t0 = last_snap + 10000000u;

	while (!stop_flag) {
		uint64_t due = t0 + k * period, now = now_ns();
		struct timespec ts;

		if (due > t0 + (uint64_t)(duration * 1e9))
			break;
		if (now < due) {
			ts.tv_sec = (time_t)(due / 1000000000u);
			ts.tv_nsec = (long)(due % 1000000000u);
			if (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) != 0)
				continue; /* EINTR: look at stop_flag */
			now = now_ns();
		}
		if (now - due > max_lag)
			max_lag = now - due;
		if (now - due > 100000000u && slow++ < 10)
			fprintf(stderr, "publisher: batch %" PRIu64 " started %.1f ms late\n", k,
			        (double)(now - due) / 1e6);

		pub_start = now;
		next_batch(&bb);
		niov = batch_finish(&bb, due, iov);
		if (ring) {
			int rc = ring_append(ring, due, iov, niov);
			if (rc == RING_NEED_SNAPSHOT) {
				/* the state before this batch, at the head; then retry */
				if (write_snapshot(ring, &sbb, head_cursor) == RING_OK)
					rc = ring_append(ring, due, iov, niov);
				last_snap = now_ns();
			}
			if (rc != RING_OK) {
				fprintf(stderr, "publisher: ring_append: %s\n", ring_strstatus(rc));
				errors++;
			} else {
				head_cursor = due;
				bytes += bb.hdr.json_len; /* the JSON clients get */
			}
			next_commit();
			ring_wake(ring);
			now = now_ns();
			if (now - last_snap >= (uint64_t)(snap_every * 1e9)) {
				if (write_snapshot(ring, &sbb, head_cursor) != RING_OK)
					errors++;
				last_snap = now;
			}
			if (now - last_beat >= 1000000000u) {
				ring_heartbeat(ring);
				last_beat = now;
			}
		} else {
			json_len = batch_json(iov, &json, &json_cap);
			bytes += json_len;
			if (!post_batch(json, json_len))
				errors++;
			next_commit();
		}
		now = now_ns() - pub_start; /* how long publishing this batch took */
		if (now > max_pub)
			max_pub = now;
		if (now > 100000000u && slow++ < 10)
			fprintf(stderr, "publisher: batch %" PRIu64 " took %.1f ms to publish\n", k,
			        (double)now / 1e6);
		k++;
	}

	fprintf(stderr,
	        "PUBLISHED batches=%" PRIu64 " rate=%.1f avg_bytes=%.0f max_lag_ms=%.3f"
	        " max_publish_ms=%.3f errors=%" PRIu64 "\n",
	        k, rate, k ? (double)bytes / (double)k : 0.0, (double)max_lag / 1e6,
	        (double)max_pub / 1e6, errors);
	if (ring)
		ring_close(ring, true);
	if (post_fd >= 0)
		close(post_fd);
	batch_builder_free(&bb);
	batch_builder_free(&sbb);
	free(json);
	free(rows);
	return 0;
}
