/*
 * tailgate-ring.c - inspect feed segments from the shell.
 *
 *   tailgate-ring [-d DIR] list
 *   tailgate-ring [-d DIR] info FEED
 *   tailgate-ring [-d DIR] dump FEED [CURSOR]
 *   tailgate-ring [-d DIR] wait FEED CURSOR [TIMEOUT_MS]
 *
 * `dump` prints one JSON object per line: the snapshot (unless a cursor is
 * given) then every held batch after it, each {"cursor":..,"batch":..}.
 * A CURSOR is what the responder hands out (POSITION.IDENT: the batches
 * after that position, if the ring holds that history) or a bare
 * POSITION (taken in the history the ring holds).
 * It only reads; it is safe to run against a live daemon.
 */
#include "config.h"

#include "batch.h"
#include "ring.h"

#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *ring_dir = RING_DEFAULT_DIR;

static void
usage(FILE *f)
{
	fprintf(f,
	        "usage: tailgate-ring [-d DIR] list\n"
	        "       tailgate-ring [-d DIR] info FEED\n"
	        "       tailgate-ring [-d DIR] dump FEED [CURSOR]\n"
	        "       tailgate-ring [-d DIR] wait FEED CURSOR [TIMEOUT_MS]\n"
	        "\n"
	        "Inspect tailgate feed segments (read-only).\n"
	        "  -d, --dir DIR   ring directory (default %s)\n"
	        "  -h, --help      this help\n"
	        "  -V, --version   print the version\n"
	        "\n"
	        "list   the feeds in DIR, one line each\n"
	        "info   the segment header: state, cursors, sequence numbers, columns\n"
	        "dump   the snapshot and batches as JSON lines; with CURSOR, the batches\n"
	        "       after it (exit 3 if the ring cannot resume it)\n"
	        "wait   block until a batch after CURSOR exists (exit 0), or time out (exit 4)\n"
	        "\n"
	        "CURSOR is a cursor as the responder hands it out, POSITION.IDENT (e.g.\n"
	        "27391840.5c1e09a2: refused when IDENT is not the ring's history), or a\n"
	        "bare POSITION, taken in the history the ring holds.\n",
	        RING_DEFAULT_DIR);
}

static struct ring *
open_feed(const char *feed)
{
	char err[512];
	struct ring *r;

	if (ring_open(ring_dir, feed, &r, err, sizeof(err)) != RING_OK) {
		fprintf(stderr, "tailgate-ring: %s\n", err);
		exit(2);
	}
	return r;
}

/* The seq of the first batch after the cursor text from: POSITION.IDENT
 * or a bare POSITION (in the ring's own history).  0, or the exit status
 * after a message: 2 malformed, 3 not resumable here. */
static int
seek_cursor(struct ring *r, const char *from, uint64_t *seq)
{
	uint64_t pos;
	uint32_t ident;
	bool has_ident;
	int rc;

	if (!batch_parse_position(from, &pos, &ident, &has_ident)) {
		fprintf(stderr,
		        "tailgate-ring: bad cursor \"%s\": want POSITION.IDENT (digits, a dot, "
		        "8 hex digits) or POSITION\n",
		        from);
		return 2;
	}
	if (!has_ident)
		ident = ring_ident(r);
	rc = ring_seek(r, ident, pos, seq);
	if (rc == RING_OK)
		return 0;
	if (rc == RING_UNKNOWN && ident != ring_ident(r))
		fprintf(stderr,
		        "tailgate-ring: cursor %s: another upstream history (the ring holds "
		        "%08" PRIx32 ")\n",
		        from, ring_ident(r));
	else if (rc == RING_UNKNOWN)
		fprintf(stderr, "tailgate-ring: cursor %s: inside a merged batch\n", from);
	else if (rc == RING_GONE)
		fprintf(stderr, "tailgate-ring: cursor %s: older than the oldest batch held\n",
		        from);
	else
		fprintf(stderr, "tailgate-ring: cursor %s: %s\n", from, ring_strstatus(rc));
	return 3;
}

static int
cmd_info(const char *feed)
{
	struct ring *r = open_feed(feed);
	struct ring_info i;

	ring_info(r, &i);
	printf("feed         %s\n", ring_feed(r));
	printf("source       %s\n", ring_source(r));
	printf("state        %s%s\n", ring_strstate(i.state),
	       i.writer_alive ? "" : " (writer gone)");
	printf("writer pid   %d\n", i.writer_pid);
	printf("head cursor  %" PRIu64 "\n", i.head_cursor);
	printf("frontier     %" PRIu64 "\n", i.frontier);
	printf("identity     %08" PRIx32 "\n", i.ident);
	printf("head seq     %" PRIu64 "\n", i.head_seq);
	printf("tail seq     %" PRIu64 "\n", i.tail_seq);
	printf("snapshot     %" PRIu64 " (generation %" PRIu64 ")\n", i.snap_cursor, i.snap_gen);
	printf("rows         %" PRIu64 "\n", i.row_count);
	if (i.confirmed_ms != 0)
		printf("confirmed    %" PRIu64 " ms ago%s\n", i.lag_ms,
		       i.stalled ? " (stalled)" : "");
	printf("columns      %s\n", ring_columns(r));
	ring_close(r, false);
	return 0;
}

static int
cmd_list(void)
{
	DIR *d = opendir(ring_dir);
	struct dirent *de;

	int nfeeds = 0, nbad = 0;

	if (d == NULL) {
		fprintf(stderr, "tailgate-ring: cannot list %s: %s\n", ring_dir, strerror(errno));
		return 2;
	}
	while ((de = readdir(d)) != NULL) {
		size_t n = strlen(de->d_name);
		char feed[RING_FEED_NAME_MAX + 1], err[512];
		struct ring_info i;
		struct ring *r;

		if (n <= 5 || n - 5 > RING_FEED_NAME_MAX ||
		    strcmp(de->d_name + n - 5, ".ring") != 0)
			continue;
		memcpy(feed, de->d_name, n - 5);
		feed[n - 5] = '\0';
		nfeeds++;
		if (ring_open(ring_dir, feed, &r, err, sizeof(err)) != RING_OK) {
			printf("%-24s error: %s\n", feed, err);
			nbad++;
			continue;
		}
		ring_info(r, &i);
		printf("%-24s %-8s cursor %" PRIu64 " rows %" PRIu64 "\n", feed,
		       i.writer_alive ? ring_strstate(i.state) : "dead", i.head_cursor,
		       i.row_count);
		ring_close(r, false);
	}
	closedir(d);
	if (nfeeds == 0) {
		fprintf(stderr, "tailgate-ring: %s holds no feed segments (FEED.ring)\n", ring_dir);
		return 1;
	}
	return nbad ? 1 : 0;
}

static void
print_batch(uint64_t cursor, const char *payload, size_t len)
{
	struct batch_view v;

	if (!batch_view(payload, len, &v)) {
		fprintf(stderr, "tailgate-ring: corrupt batch at cursor %" PRIu64 "\n", cursor);
		exit(2);
	}
	printf("{\"cursor\":\"%" PRIu64 "\",\"batch\":%.*s}\n", cursor, (int)v.json_len, v.json);
}

static int
cmd_dump(const char *feed, const char *from)
{
	struct ring *r = open_feed(feed);
	struct ring_buf buf = {0};
	struct ring_rec rec;
	uint64_t seq;
	char err[512];
	int rc, status = 0;

	for (int attempt = 0;; attempt++) {
		if (from != NULL) {
			status = seek_cursor(r, from, &seq);
			if (status != 0)
				goto out;
		} else {
			struct ring_snapshot s;
			if (ring_snapshot_open(r, &s, err, sizeof(err)) != RING_OK) {
				fprintf(stderr, "tailgate-ring: %s\n", err);
				status = 2;
				goto out;
			}
			print_batch(s.cursor, s.data, s.len);
			seq = s.seq_after;
			ring_snapshot_release(&s);
		}
		while ((rc = ring_read(r, seq, &buf, &rec)) == RING_OK) {
			print_batch(rec.cursor, buf.data, buf.len);
			seq++;
		}
		if (rc == RING_AHEAD)
			break;
		if (from != NULL || attempt > 10) {
			fprintf(stderr, "tailgate-ring: lapped by the writer at seq %" PRIu64 "\n",
			        seq);
			status = 3;
			goto out;
		}
		printf("{\"restart\":true}\n"); /* lapped: start over from a new snapshot */
	}
out:
	free(buf.data);
	ring_close(r, false);
	return status;
}

static int
cmd_wait(const char *feed, const char *from, const char *timeout)
{
	struct ring *r = open_feed(feed);
	uint64_t seq;
	long ms = -1;
	char *end;
	int rc;

	if (timeout != NULL) {
		errno = 0;
		ms = strtol(timeout, &end, 10);
		if (*timeout == '\0' || *end || errno || ms < 0 || ms > 86400000) {
			fprintf(stderr,
			        "tailgate-ring: wait: TIMEOUT_MS %s: not 0..86400000 "
			        "milliseconds\n",
			        timeout);
			ring_close(r, false);
			return 2;
		}
	}
	rc = seek_cursor(r, from, &seq);
	if (rc != 0) {
		ring_close(r, false);
		return rc;
	}
	rc = ring_wait(r, seq, (int)ms);
	ring_close(r, false);
	return rc == RING_OK ? 0 : 4;
}

int
main(int argc, char **argv)
{
	static const struct option opts[] = {{"dir", required_argument, NULL, 'd'},
	                                     {"help", no_argument, NULL, 'h'},
	                                     {"version", no_argument, NULL, 'V'},
	                                     {NULL, 0, NULL, 0}};
	int c;

	while ((c = getopt_long(argc, argv, "+d:hV", opts, NULL)) != -1) {
		switch (c) {
		case 'd':
			ring_dir = optarg;
			break;
		case 'h':
			usage(stdout);
			return 0;
		case 'V':
			printf("tailgate-ring %s\n", PACKAGE_VERSION);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	argc -= optind;
	argv += optind;
	if (argc == 1 && strcmp(argv[0], "list") == 0)
		return cmd_list();
	if (argc == 2 && strcmp(argv[0], "info") == 0)
		return cmd_info(argv[1]);
	if ((argc == 2 || argc == 3) && strcmp(argv[0], "dump") == 0)
		return cmd_dump(argv[1], argc == 3 ? argv[2] : NULL);
	if ((argc == 3 || argc == 4) && strcmp(argv[0], "wait") == 0)
		return cmd_wait(argv[1], argv[2], argc == 4 ? argv[3] : NULL);
	usage(stderr);
	return 2;
}
