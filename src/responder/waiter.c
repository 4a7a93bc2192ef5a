/*
 * waiter.c - waiters and their filter specs (waiter.h).
 */
#include "waiter.h"

#include "reply.h"
#include "xmalloc.h"

#include <stdlib.h>

struct fspec *
fspec_new(struct filter *f, char *key)
{
	struct fspec *fs = xcalloc(1, sizeof(*fs));

	fs->filter = f;
	fs->key = key;
	atomic_store(&fs->refs, 1);
	return fs;
}

struct fspec *
fspec_ref(struct fspec *fs)
{
	atomic_fetch_add_explicit(&fs->refs, 1, memory_order_relaxed);
	return fs;
}

void
fspec_release(struct fspec *fs)
{
	if (fs == NULL || atomic_fetch_sub_explicit(&fs->refs, 1, memory_order_acq_rel) != 1)
		return;
	filter_free(fs->filter);
	free(fs->key);
	free(fs);
}

struct waiter *
waiter_new(FCGX_Request *req, struct feed *feed, struct seg *seg, struct fspec *fs, bool sse,
           int64_t deadline_ms)
{
	struct waiter *w = xcalloc(1, sizeof(*w));

	w->req = req;
	w->feed = feed;
	w->seg = seg;
	w->fs = fs;
	w->sse = sse;
	w->deadline_ms = deadline_ms;
	return w;
}

void
waiter_free(struct waiter *w)
{
	if (w == NULL)
		return;
	reply_release(w->pending);
	seg_release(w->seg);
	fspec_release(w->fs);
	if (w->multi != NULL)
		w->multi_free(w->multi);
	free(w);
}
