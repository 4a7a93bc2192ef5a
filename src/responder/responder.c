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

void
responder_start(struct responder *r, int listen_fd, int max_fds, conn_handler handle,
                conn_quick quick)
{
	/* The writers and the watcher exist before the first request can
	 * reach them; conn_start starts the closer before it accepts. */
	writer_start(&r->writers, r->opt.writers, &r->conns, r->opt.sse_keepalive_s, park_repark,
	             &r->park);
	park_start(&r->park, &r->feeds, &r->render, &r->writers);
	conn_start(&r->conns, listen_fd, r->opt.handlers, max_fds, handle, quick, r);
}

void
responder_stop(struct responder *r)
{
	/* Upstream first: no new request, then no parked one, then no
	 * queued write, then no connection left to close. */
	conn_stop_accepting(&r->conns);
	park_stop(&r->park);
	writer_stop(&r->writers);
	conn_stop(&r->conns);
	render_free(&r->render);
	feeds_free(&r->feeds);
}
