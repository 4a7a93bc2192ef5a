/*
 * resp_ring.h - a feed written by the test itself, for the responder's
 * unit tests: a real segment in a private directory, with a snapshot and
 * batches of rows [id, item].
 */
#ifndef TAILGATE_RESP_RING_H
#define TAILGATE_RESP_RING_H

#include "batch.h"
#include "ring.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>

#define RR_COLUMNS "[{\"name\":\"id\",\"type\":\"int8\"},{\"name\":\"item\",\"type\":\"text\"}]"

/* A new feed "t" in a fresh directory (*dir), live, with a snapshot of
 * the rows in snap (NULL-terminated) at cursor base.  Dies on failure. */
static struct ring *
rr_create(char *dir, uint64_t base, const char *const *snap)
{
	struct ring_config cfg = {.feed = "t",
	                          .source = "test",
	                          .columns_json = RR_COLUMNS,
	                          .data_size = 1 << 20,
	                          .base_cursor = base};
	struct batch_builder b = {0};
	struct iovec iov[BATCH_IOV_MAX];
	struct ring *r;
	char err[256];
	int n;

	if (mkdtemp(dir) == NULL) {
		perror("mkdtemp");
		exit(1);
	}
	cfg.dir = dir;
	if (ring_create(&cfg, &r, err, sizeof(err)) != RING_OK) {
		fprintf(stderr, "ring_create: %s\n", err);
		exit(1);
	}
	for (int i = 0; snap != NULL && snap[i] != NULL; i++)
		batch_add_row(&b, true, snap[i], strlen(snap[i]));
	n = batch_finish(&b, base, iov);
	if (ring_write_snapshot(r, iov, n, err, sizeof(err)) != RING_OK) {
		fprintf(stderr, "ring_write_snapshot: %s\n", err);
		exit(1);
	}
	batch_builder_free(&b);
	ring_set_state(r, RING_STATE_LIVE);
	ring_heartbeat(r);
	return r;
}

/* Append a batch at cursor: ins and del are NULL-terminated row lists
 * (NULL: none).  Wakes the readers. */
static void
rr_append(struct ring *r, uint64_t cursor, const char *const *ins, const char *const *del)
{
	struct batch_builder b = {0};
	struct iovec iov[BATCH_IOV_MAX];
	int n, rc;

	for (int i = 0; ins != NULL && ins[i] != NULL; i++)
		batch_add_row(&b, true, ins[i], strlen(ins[i]));
	for (int i = 0; del != NULL && del[i] != NULL; i++)
		batch_add_row(&b, false, del[i], strlen(del[i]));
	n = batch_finish(&b, cursor, iov);
	rc = ring_append(r, cursor, iov, n);
	batch_builder_free(&b);
	if (rc != RING_OK) {
		fprintf(stderr, "ring_append %llu: %s\n", (unsigned long long)cursor,
		        ring_strstatus(rc));
		exit(1);
	}
	ring_heartbeat(r);
	ring_wake(r);
}

/* Remove the feed's files and directory. */
static void
rr_remove(struct ring *r, const char *dir)
{
	char path[600];

	ring_close(r, true);
	snprintf(path, sizeof(path), "rm -rf '%s'", dir);
	if (system(path) != 0)
		fprintf(stderr, "could not remove %s\n", dir);
}

#endif
