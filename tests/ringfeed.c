/*
 * ringfeed.c - a fake daemon for responder tests: owns one feed's ring
 * and plays batches into it from commands on stdin.
 *
 *   ringfeed --dir DIR --feed NAME --columns JSON [--size BYTES] [--base CURSOR]
 *            [--starting]
 *
 * On start it creates DIR/NAME.ring (base cursor CURSOR, default 1),
 * writes an empty snapshot and sets the state live (with --starting: no
 * snapshot, state starting), heartbeats every 200 ms, and prints
 * "ready". Each command line is acknowledged with one line, "ok ..." or
 * "error ...", so a test can sequence:
 *
 *   batch CURSOR JSON        append a batch: JSON is {"inserted":[rows],
 *                            "deleted":[rows]} (rows are JSON arrays); the
 *                            feed's state (a multiset) follows; wakes readers
 *   quiet CURSOR JSON        the same without waking readers
 *   wake                     wake readers
 *   fill N CURSOR            N batches of one generated row each, cursors
 *                            CURSOR, CURSOR+1, ... (to make the ring drop)
 *   snapshot                 write the state at the head as the snapshot
 *   state live|down|starting|closed
 *   reset CURSOR             start a new history at CURSOR (ring_reset) and
 *                            write a snapshot there
 *   info                     "ok head=H tail=T cursor=C rows=N"
 *   hang                     stop heartbeating (the writer looks dead)
 *   quit                     close and remove the segment, exit
 *
 * The daemon-side contract it follows: ring_append then ring_wake, and on
 * RING_NEED_SNAPSHOT a snapshot at the head before retrying.
 */
#include "batch.h"
#include "clock.h"
#include "ring.h"

#include <getopt.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static struct ring *ring;
static char **rows;
static size_t n_rows, cap_rows;
static uint64_t head_cursor;

static void
usage(FILE *out)
{
	fprintf(out,
	        "usage: ringfeed --dir DIR --feed NAME --columns JSON [--size BYTES] "
	        "[--base CURSOR] [--starting]\n"
	        "commands on stdin: batch C JSON | quiet C JSON | wake | fill N C | snapshot |\n"
	        "  state live|down|starting|closed | reset C | info | hang | quit\n");
}

static void
state_add(const char *row)
{
	if (n_rows == cap_rows) {
		cap_rows = cap_rows ? cap_rows * 2 : 64;
		rows = realloc(rows, cap_rows * sizeof(*rows));
		if (rows == NULL)
			abort();
	}
	rows[n_rows++] = strdup(row);
}

static void
state_del(const char *row)
{
	for (size_t i = 0; i < n_rows; i++)
		if (strcmp(rows[i], row) == 0) {
			free(rows[i]);
			rows[i] = rows[--n_rows];
			return;
		}
}

static int
write_snapshot(char *err, size_t errlen)
{
	struct batch_builder b = {0};
	struct iovec iov[BATCH_IOV_MAX];
	int n, rc;

	for (size_t i = 0; i < n_rows; i++)
		batch_add_row(&b, true, rows[i], strlen(rows[i]));
	n = batch_finish(&b, head_cursor, iov);
	rc = ring_write_snapshot(ring, iov, n, err, errlen);
	batch_builder_free(&b);
	return rc;
}

static const char *
row_text(json_object *row)
{
	return json_object_to_json_string_ext(row, JSON_C_TO_STRING_PLAIN |
	                                                   JSON_C_TO_STRING_NOSLASHESCAPE);
}

/* Append one batch from parsed JSON; 0 or -1 with a message.  The state
 * changes only once the batch is in the ring, so a snapshot written on
 * RING_NEED_SNAPSHOT is the state at the previous head. */
static int
append(uint64_t cursor, json_object *obj, bool wake, char *err, size_t errlen)
{
	static const char *const keys[2] = {"inserted", "deleted"};
	struct batch_builder b = {0};
	struct iovec iov[BATCH_IOV_MAX];
	json_object *arr[2] = {NULL, NULL};
	int n, rc = RING_OK;

	for (int k = 0; k < 2; k++) {
		if (!json_object_object_get_ex(obj, keys[k], &arr[k]))
			continue;
		if (!json_object_is_type(arr[k], json_type_array)) {
			snprintf(err, errlen, "%s is not an array", keys[k]);
			return -1;
		}
		for (size_t i = 0; i < json_object_array_length(arr[k]); i++) {
			json_object *row = json_object_array_get_idx(arr[k], i);
			const char *text;
			if (!json_object_is_type(row, json_type_array)) {
				snprintf(err, errlen, "a row is not an array");
				batch_builder_free(&b);
				return -1;
			}
			text = row_text(row);
			batch_add_row(&b, k == 0, text, strlen(text));
		}
	}
	n = batch_finish(&b, cursor, iov);
	for (int attempt = 0; attempt < 3; attempt++) {
		rc = ring_append(ring, cursor, iov, n);
		if (rc != RING_NEED_SNAPSHOT)
			break;
		if (write_snapshot(err, errlen) != RING_OK) {
			batch_builder_free(&b);
			return -1;
		}
	}
	batch_builder_free(&b);
	if (rc != RING_OK) {
		snprintf(err, errlen, "ring_append: %s", ring_strstatus(rc));
		return -1;
	}
	for (int k = 0; k < 2; k++)
		for (size_t i = 0; arr[k] != NULL && i < json_object_array_length(arr[k]); i++) {
			const char *text = row_text(json_object_array_get_idx(arr[k], i));
			if (k == 0)
				state_add(text);
			else
				state_del(text);
		}
	head_cursor = cursor;
	ring_set_row_count(ring, n_rows);
	if (wake)
		ring_wake(ring);
	return 0;
}

static void
command(char *line, bool *quit, bool *hang)
{
	char err[512] = "";
	char *cmd = strtok(line, " \t\n"), *rest;
	uint64_t cursor;

	if (cmd == NULL) {
		printf("error empty command\n");
		return;
	}
	rest = strtok(NULL, "\n");
	if (strcmp(cmd, "batch") == 0 || strcmp(cmd, "quiet") == 0) {
		char *c = rest ? strtok(rest, " \t") : NULL, *js = c ? strtok(NULL, "\n") : NULL;
		json_object *obj;
		if (c == NULL || js == NULL || !batch_parse_cursor(c, &cursor)) {
			printf("error usage: batch CURSOR JSON\n");
			return;
		}
		obj = json_tokener_parse(js);
		if (obj == NULL || !json_object_is_type(obj, json_type_object)) {
			json_object_put(obj);
			printf("error bad JSON\n");
			return;
		}
		if (append(cursor, obj, strcmp(cmd, "batch") == 0, err, sizeof(err)) != 0)
			printf("error %s\n", err);
		else
			printf("ok batch %" PRIu64 "\n", cursor);
		json_object_put(obj);
	} else if (strcmp(cmd, "fill") == 0) {
		char *a = rest ? strtok(rest, " \t") : NULL, *c = a ? strtok(NULL, " \t\n") : NULL;
		long nb = a ? strtol(a, NULL, 10) : 0;
		if (nb <= 0 || c == NULL || !batch_parse_cursor(c, &cursor)) {
			printf("error usage: fill N CURSOR\n");
			return;
		}
		for (long i = 0; i < nb; i++) {
			char js[128];
			json_object *obj;
			snprintf(js, sizeof(js), "{\"inserted\":[[%ld,\"fill\"]],\"deleted\":[]}",
			         i);
			obj = json_tokener_parse(js);
			if (append(cursor + (uint64_t)i, obj, false, err, sizeof(err)) != 0) {
				json_object_put(obj);
				printf("error %s\n", err);
				return;
			}
			json_object_put(obj);
		}
		ring_wake(ring);
		printf("ok fill %ld\n", nb);
	} else if (strcmp(cmd, "wake") == 0) {
		ring_wake(ring);
		printf("ok wake\n");
	} else if (strcmp(cmd, "snapshot") == 0) {
		if (write_snapshot(err, sizeof(err)) != RING_OK)
			printf("error %s\n", err);
		else
			printf("ok snapshot %" PRIu64 "\n", head_cursor);
	} else if (strcmp(cmd, "state") == 0) {
		static const char *const names[] = {"starting", "live", "down", "closed"};
		int s = -1;
		for (int i = 0; i < 4; i++)
			if (rest != NULL && strcmp(rest, names[i]) == 0)
				s = i;
		if (s < 0) {
			printf("error usage: state live|down|starting|closed\n");
			return;
		}
		ring_set_state(ring, (enum ring_state)s);
		ring_wake(ring);
		printf("ok state %s\n", names[s]);
	} else if (strcmp(cmd, "reset") == 0) {
		if (rest == NULL || !batch_parse_cursor(rest, &cursor)) {
			printf("error usage: reset CURSOR\n");
			return;
		}
		ring_reset(ring, cursor);
		head_cursor = cursor;
		if (write_snapshot(err, sizeof(err)) != RING_OK) {
			printf("error %s\n", err);
			return;
		}
		ring_wake(ring);
		printf("ok reset %" PRIu64 "\n", cursor);
	} else if (strcmp(cmd, "info") == 0) {
		struct ring_info info;
		ring_info(ring, &info);
		printf("ok head=%" PRIu64 " tail=%" PRIu64 " cursor=%" PRIu64 " rows=%zu\n",
		       info.head_seq, info.tail_seq, info.head_cursor, n_rows);
	} else if (strcmp(cmd, "hang") == 0) {
		*hang = true;
		printf("ok hang\n");
	} else if (strcmp(cmd, "quit") == 0) {
		*quit = true;
		printf("ok quit\n");
	} else {
		printf("error unknown command %s\n", cmd);
	}
}

int
main(int argc, char **argv)
{
	static const struct option longopts[] = {
	        {"dir", required_argument, NULL, 'd'},     {"feed", required_argument, NULL, 'f'},
	        {"columns", required_argument, NULL, 'c'}, {"size", required_argument, NULL, 's'},
	        {"base", required_argument, NULL, 'b'},    {"starting", no_argument, NULL, 'S'},
	        {"help", no_argument, NULL, 'h'},          {NULL, 0, NULL, 0}};
	struct ring_config cfg = {.source = "test", .data_size = 1 << 20, .base_cursor = 1};
	bool starting = false, quit = false, hang = false;
	char err[512], *line = NULL;
	size_t cap = 0;
	int64_t last_beat = 0;
	int c;

	cfg.columns_json = "[]";
	while ((c = getopt_long(argc, argv, "d:f:c:s:b:Sh", longopts, NULL)) != -1) {
		switch (c) {
		case 'd':
			cfg.dir = optarg;
			break;
		case 'f':
			cfg.feed = optarg;
			break;
		case 'c':
			cfg.columns_json = optarg;
			break;
		case 's':
			cfg.data_size = strtoull(optarg, NULL, 10);
			break;
		case 'b':
			if (!batch_parse_cursor(optarg, &cfg.base_cursor)) {
				usage(stderr);
				return 2;
			}
			break;
		case 'S':
			starting = true;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (cfg.feed == NULL) {
		usage(stderr);
		return 2;
	}
	if (ring_create(&cfg, &ring, err, sizeof(err)) != RING_OK) {
		fprintf(stderr, "ringfeed: %s\n", err);
		return 1;
	}
	head_cursor = cfg.base_cursor;
	if (!starting) {
		if (write_snapshot(err, sizeof(err)) != RING_OK) {
			fprintf(stderr, "ringfeed: %s\n", err);
			return 1;
		}
		ring_set_state(ring, RING_STATE_LIVE);
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	printf("ready\n");
	while (!quit) {
		struct pollfd pfd = {0, POLLIN, 0};
		if (!hang && clock_mono_ms() - last_beat >= 200) {
			ring_heartbeat(ring);
			last_beat = clock_mono_ms();
		}
		if (poll(&pfd, 1, 200) <= 0)
			continue;
		if (getline(&line, &cap, stdin) < 0)
			break;
		command(line, &quit, &hang);
	}
	free(line);
	ring_close(ring, true);
	for (size_t i = 0; i < n_rows; i++)
		free(rows[i]);
	free(rows);
	return 0;
}
