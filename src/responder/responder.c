/*
 * responder.c - starting and stopping a worker's parts in order
 * (responder.h).
 */
#include "responder.h"

#include <string.h>

void
responder_init(struct responder *r, const struct responder_opts *opt)
{
	memset(r, 0, sizeof(*r));
	r->opt = *opt;
	feeds_init(&r->feeds, opt->ring_dir);
	render_init(&r->render, opt->cache_max_age_s);
}

/* The writers' repark: SSE streams of several feeds go back to their own
 * watcher (multi.h), the rest to the parking lot, in one chain. */
static void
responder_repark(void *arg, struct waiter *list, struct thread_ctx *t)
{
	struct responder *r = arg;
	struct waiter *one = NULL, **tail = &one, *next;

	for (struct waiter *w = list; w != NULL; w = next) {
		next = w->qnext;
		if (w->multi != NULL) {
			w->qnext = NULL;
			multi_serve(&r->multi, w, t);
		} else {
			*tail = w;
			tail = &w->qnext;
		}
	}
	*tail = NULL;
	if (one != NULL)
		park_serve_list(&r->park, one, t);
}

void
responder_start(struct responder *r, int listen_fd, int max_fds, conn_handler handle,
                conn_quick quick)
{
	/* The writers and the watcher exist before the first request can
	 * reach them; conn_start starts the closer before it accepts. */
	writer_start(&r->writers, r->opt.writers, &r->conns, r->opt.sse_keepalive_s,
	             responder_repark, r);
	park_start(&r->park, &r->feeds, &r->render, &r->writers);
	multi_start(&r->multi, &r->feeds, &r->writers, r->opt.multi_cache);
	conn_start(&r->conns, listen_fd, r->opt.handlers, max_fds, handle, quick, r);
}

void
responder_stop(struct responder *r)
{
	/* Upstream first: no new request, then no parked one, then no
	 * queued write, then no connection left to close. */
	conn_stop_accepting(&r->conns);
	park_stop(&r->park);
	multi_stop(&r->multi);
	writer_stop(&r->writers);
	multi_free(&r->multi); /* after writer_stop: writers re-serve its streams */
	conn_stop(&r->conns);
	render_free(&r->render);
	feeds_free(&r->feeds);
}
