/*
 * tailgate-fcgi.c - the FastCGI responder: serves the feeds' rings to
 * browsers through nginx.
 *
 * Threads of one process (responder.h): the accepting thread, a few
 * handlers and the closer (conn.c: a connection slow to send its params
 * stalls nobody), the watcher (park.c: every parked request, one
 * futex_waitv), the watcher of requests for several feeds (multi.c) and
 * the writer pool (writer.c).  Nothing blocks per waiting request.  This
 * file routes each request (/feeds, /feeds/FEED, /feeds/A,B, /metrics,
 * /healthz; 404 and 405 otherwise) and starts a feed request on its way:
 * parse, attach, make its waiter, drop a long-poll's libfcgi buffers
 * (conn_shed), hand it to the parking lot (handle_feed) or to multi.c
 * (handle_multi).
 *
 * Processes: --workers N forks N such processes on one listening socket;
 * without --socket the socket is inherited, from systemd (LISTEN_FDS) or
 * from spawn-fcgi (a listening socket on fd 0).
 */
#include <config.h> /* autoconf's (build dir); src/config.h is the daemon's */

#include "buf.h"
#include "clock.h"
#include "http_params.h"
#include "log.h"
#include "metrics.h"
#include "reply.h"
#include "responder.h"
#include "xmalloc.h"

#include <errno.h>
#include <fcgiapp.h>
#include <getopt.h>
#include <grp.h>
#include <inttypes.h>
#include <netdb.h>
#include <pthread.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#define SD_LISTEN_FDS_START 3

static struct {
	const char *socket_path;
	int socket_mode;
	const char *socket_group; /* --socket-group GROUP */
	const char *ring_dir;
	int workers;
	int handlers;
	int writers;
	int max_timeout_s;
	int backlog;
	const char *user; /* --user USER[:GROUP] */
	int sse_keepalive_s;
	int cache_max_age_s;
	int multi_cache; /* shared replies of several-feed requests (multi.h) */
} opt = {NULL, 0660, NULL, NULL, 1, 2, 4, HP_DEFAULT_TIMEOUT_S, 4096, NULL, 15, 60, MULTI_CACHE_N};

static int listen_fd = -1;
static volatile sig_atomic_t got_stop;

static void
usage(FILE *out)
{
	fprintf(out,
	        "usage: tailgate-fcgi [options]\n"
	        "\n"
	        "The tailgate FastCGI responder: answers snapshot, long-poll and SSE\n"
	        "requests for the feeds in the ring directory, behind nginx.\n"
	        "\n"
	        "  -s, --socket PATH|[HOST]:PORT  listen here (a unix socket path, or TCP);\n"
	        "                             without it the listening socket is inherited:\n"
	        "                             systemd socket activation (LISTEN_FDS) or\n"
	        "                             spawn-fcgi (a listening socket on fd 0)\n"
	        "  -m, --socket-mode MODE     permissions of a unix socket (octal, default 0660:\n"
	        "                             its owner and group only)\n"
	        "  -g, --socket-group GROUP   the unix socket's group (e.g. nginx's worker\n"
	        "                             group, www-data), so nginx may connect\n"
	        "  -b, --backlog N            listen backlog (default 4096)\n"
	        "  -u, --user USER[:GROUP]    started as root: switch to this user (and its\n"
	        "                             group, or GROUP) once the socket is open; the\n"
	        "                             unix socket is handed to them too\n"
	        "  -d, --ring-dir DIR         where the daemon's FEED.ring files are\n"
	        "                             (default " RING_DEFAULT_DIR ")\n"
	        "  -w, --workers N            processes sharing the socket (default 1)\n"
	        "  -a, --handlers N           request handler threads per process (default 2)\n"
	        "  -W, --writers N            writer threads per process (default 4)\n"
	        "  -T, --max-timeout S        long-poll timeout and its upper bound (default 25)\n"
	        "  -k, --sse-keepalive S      seconds between SSE keep-alive comments (default "
	        "15)\n"
	        "  -c, --cache-max-age S      max-age of replies holding batches (default 60)\n"
	        "  -z, --gzip-level N         deflate level (1-9) of the gzip form of long-poll\n"
	        "                             replies and snapshots, made once per reply for\n"
	        "                             clients that accept gzip; 0: never (default 1)\n"
	        "  -M, --multi-cache N        replies of several-feed requests kept for sharing\n"
	        "                             (default %d, at most %d); 0: each request\n"
	        "                             renders its own\n"
	        "  -v, --verbose              log debug messages\n"
	        "  -q, --quiet                log warnings and errors only\n"
	        "      --syslog               log to syslog instead of stderr\n"
	        "  -V, --version              print the version\n"
	        "  -h, --help                 this text\n"
	        "\n"
	        "HTTP API (see tailgate-fcgi(8)): GET /feeds, /feeds/FEED[?cursor=C&timeout=S\n"
	        "&stream=sse&COLUMN=OP.VALUE], /metrics, /healthz.\n",
	        MULTI_CACHE_N, MULTI_CACHE_MAX);
}

static int
parse_int(const char *s, int lo, int hi, const char *what)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno != 0 || *end != '\0' || end == s || v < lo || v > hi) {
		fprintf(stderr, "tailgate-fcgi: %s must be %d..%d, not \"%s\"\n", what, lo, hi, s);
		usage(stderr);
		exit(2);
	}
	return (int)v;
}

/* ---- requests ---- */

static const char *
param(FCGX_Request *req, const char *name)
{
	return FCGX_GetParam(name, req->envp);
}

/* Write a whole reply on this thread and end the request. */
static void
send_now(struct responder *r, FCGX_Request *req, enum metrics_kind kind, int status,
         const struct bbuf *b)
{
	if (conn_write(req, b->p, b->len))
		metrics_served(0, b->len);
	metrics_request(kind, status);
	conn_finish(&r->conns, req);
}

static void
send_error(struct responder *r, FCGX_Request *req, enum metrics_kind kind, int status,
           const char *code, const char *message)
{
	struct bbuf b = {0};

	render_error(&b, status, code, message);
	send_now(r, req, kind, status, &b);
	bbuf_free(&b);
}

static void
send_text(struct responder *r, FCGX_Request *req, enum metrics_kind kind, const char *type,
          const struct bbuf *body)
{
	struct bbuf b = {0};

	render_head(&b, 200, type, "no-store", NULL);
	bbuf_add(&b, body->p, body->len);
	send_now(r, req, kind, 200, &b);
	bbuf_free(&b);
}

/* An error before a feed request has a waiter. */
struct feed_error {
	int status; /* 0: none */
	const char *code;
	char message[512];
};

static void
feed_error(struct feed_error *e, int status, const char *code, const char *message)
{
	e->status = status;
	e->code = code;
	if (message != e->message)
		snprintf(e->message, sizeof(e->message), "%s", message);
}

/* The waiter for a parsed feed request, placed at its cursor; NULL with
 * e set (400, 404, 410, 503).  *from_snapshot: it starts from the
 * snapshot (no cursor, or an SSE cursor no longer held). */
static struct waiter *
feed_waiter(struct responder *r, FCGX_Request *req, const char *name, struct hp_request *hp,
            struct feed_error *e, bool *from_snapshot)
{
	struct feed *feed;
	struct seg *seg;
	struct ring_info info;
	struct filter *filter;
	struct waiter *w;
	const char *why;
	uint64_t seq;
	int status, rc;

	status = feeds_acquire(&r->feeds, name, &feed, &seg, e->message, sizeof(e->message));
	if (status != 200) {
		feed_error(e, status, status == 404 ? "unknown_feed" : "feed_not_live", e->message);
		return NULL;
	}
	if (!feeds_live(seg, &info, &why)) {
		seg_release(seg);
		feed_error(e, 503, "feed_not_live", why);
		return NULL;
	}
	filter = filter_compile(hp, &seg->cols, e->message, sizeof(e->message));
	if (hp->n_filters > 0 && filter == NULL) {
		seg_release(seg);
		feed_error(e, 400, "bad_parameter", e->message);
		return NULL;
	}
	w = waiter_new(req, feed, seg, fspec_new(filter, hp->filter_key), hp->sse,
	               clock_mono_ms() + (int64_t)hp->timeout_s * 1000);
	hp->filter_key = NULL; /* the fspec's now */
	w->gzip = !hp->sse && reply_accepts_gzip(param(req, "HTTP_ACCEPT_ENCODING"));
	*from_snapshot = !hp->has_cursor;
	if (!hp->has_cursor)
		return w;
	/* A bare position (an older release's cursor) names no history:
	 * it cannot be checked, so it is not resumed (docs/API.md). */
	rc = hp->has_ident ? ring_seek(seg->ring, hp->cursor_ident, hp->cursor, &seq)
	                   : RING_UNKNOWN;
	if (rc == RING_OK) {
		w->seq_after = seq;
		w->cursor = hp->cursor;
		w->ident = hp->cursor_ident;
	} else if (hp->sse) {
		*from_snapshot = true; /* EventSource cannot follow a 410 */
	} else {
		char cur[BATCH_POSITION_MAX];
		w->req = NULL; /* the caller answers req */
		waiter_free(w);
		if (hp->has_ident)
			batch_format_position(hp->cursor, hp->cursor_ident, cur, sizeof(cur));
		else
			batch_format_cursor(hp->cursor, cur, sizeof(cur));
		snprintf(e->message, sizeof(e->message),
		         "cursor %s cannot be resumed here (%s): take a new snapshot (request "
		         "the feed without a cursor)",
		         cur,
		         !hp->has_ident    ? "it names no upstream history"
		         : rc == RING_GONE ? "older than the oldest batch held"
		                           : "another upstream history, or inside a merged batch");
		feed_error(e, 410, "cursor_gone", e->message);
		return NULL;
	}
	return w;
}

/* Open w's SSE stream: the head, now.  false: the client is gone (w ended). */
static bool
open_stream(struct responder *r, struct waiter *w)
{
	static const char head[] = "Status: 200 OK\r\n"
	                           "Content-Type: text/event-stream\r\n"
	                           "Cache-Control: no-store\r\n"
	                           "X-Accel-Buffering: no\r\n\r\n"
	                           "retry: 2000\n\n";
	char extra[WRITER_STATE_HEADERS_MAX];
	size_t n = writer_state_headers(w, extra, sizeof(extra));

	metrics_request(MK_SSE, 200);
	metrics_sse(1);
	/* Detached after the head: the stream keeps no libfcgi buffer while
	 * it lives. */
	if (!conn_write_head(w->req, head, sizeof(head) - 1, extra, n) || !conn_detach(w->req)) {
		writer_end(&r->writers, w, 0);
		return false;
	}
	w->deadline_ms = clock_mono_ms() + (int64_t)r->opt.sse_keepalive_s * 1000;
	return true;
}

/* Serve w from the feed's snapshot: a long-poll's whole reply here, an SSE
 * stream's first events through the writers. */
static void
serve_snapshot(struct responder *r, struct waiter *w, struct thread_ctx *t)
{
	struct reply *rep = render_snapshot(w, &t->scratch);

	if (rep == NULL && w->sse) {
		writer_end(&r->writers, w, 0);
	} else if (rep == NULL) {
		send_error(r, w->req, MK_SNAPSHOT, 503, "feed_not_live",
		           "the feed has no readable snapshot yet");
		w->req = NULL;
		waiter_free(w);
	} else if (w->sse) {
		writer_enqueue(&r->writers, w, rep, 0); /* the writer continues the stream */
	} else {
		const struct reply *s = reply_for(rep, w->gzip);
		char extra[RENDER_STATE_HEADERS_MAX];
		size_t n = render_state_headers(w->seg, extra, sizeof(extra));
		if (conn_write_head(w->req, s->data, s->len, extra, n))
			metrics_served(s->batches, s->len + n);
		metrics_request(MK_SNAPSHOT, 200);
		conn_finish(&r->conns, w->req);
		reply_release(rep);
		w->req = NULL;
		waiter_free(w);
	}
}

/* The common start of a feed request once its waiter w owns req: an SSE
 * stream's head goes out now (open_stream); a long-poll (longpoll: it
 * waits for a batch, most do until the next one) sheds what it need not
 * keep while it waits: libfcgi's buffers, when it came on a new
 * connection; its reply still goes out in one write (conn_reply).
 * false: w has ended (the client is gone), there is nothing to serve. */
static bool
begin_serving(struct responder *r, struct waiter *w, bool longpoll)
{
	if (w->sse && !open_stream(r, w))
		return false;
	if (longpoll && !conn_shed(w->req)) {
		writer_end(&r->writers, w, 0);
		return false;
	}
	return true;
}

static void
handle_feed(struct responder *r, FCGX_Request *req, const char *name, struct thread_ctx *t)
{
	struct hp_request hp;
	struct feed_error e = {0};
	enum metrics_kind kind = MK_OTHER;
	struct waiter *w = NULL;
	bool from_snapshot = false;

	if (!hp_parse(param(req, "QUERY_STRING"), param(req, "HTTP_ACCEPT"),
	              param(req, "HTTP_LAST_EVENT_ID"), r->opt.max_timeout_s, &hp, e.message,
	              sizeof(e.message))) {
		feed_error(&e, 400, "bad_parameter", e.message);
		goto out;
	}
	kind = hp.sse ? MK_SSE : hp.has_cursor ? MK_LONGPOLL : MK_SNAPSHOT;
	w = feed_waiter(r, req, name, &hp, &e, &from_snapshot);
	hp_free(&hp);
	if (w == NULL)
		goto out;
	/* From here w owns req, and each path ends or hands on w. */
	if (!begin_serving(r, w, !w->sse && !from_snapshot))
		return;
	if (from_snapshot)
		serve_snapshot(r, w, t);
	else
		park_serve(&r->park, w, t);
	return;
out:
	send_error(r, req, kind, e.status, e.code, e.message);
}

/* One feed of a request for several: acquired, live, its filters
 * compiled.  false with e set. */
static bool
multi_feed(struct responder *r, const char *name, const struct hp_request *fhp, struct feed **feed,
           struct seg **seg, struct fspec **fs, struct feed_error *e)
{
	struct ring_info info;
	struct filter *filter;
	const char *why;
	int status = feeds_acquire(&r->feeds, name, feed, seg, e->message, sizeof(e->message));

	if (status != 200) {
		feed_error(e, status, status == 404 ? "unknown_feed" : "feed_not_live", e->message);
		return false;
	}
	if (!feeds_live(*seg, &info, &why)) {
		seg_release(*seg);
		snprintf(e->message, sizeof(e->message), "feed %.64s: %.400s", name, why);
		feed_error(e, 503, "feed_not_live", e->message);
		return false;
	}
	filter = filter_compile(fhp, &(*seg)->cols, e->message, sizeof(e->message));
	if (fhp->n_filters > 0 && filter == NULL) {
		seg_release(*seg);
		feed_error(e, 400, "bad_parameter", e->message);
		return false;
	}
	*fs = fspec_new(filter, xstrdup(fhp->filter_key));
	return true;
}

/* The waiter of a request for several feeds (multi.h); NULL with e set. */
static struct waiter *
multi_waiter(struct responder *r, FCGX_Request *req, char names[][HP_FEED_NAME_MAX + 1], int n,
             const struct hp_request *hp, struct feed_error *e)
{
	struct waiter *w = NULL;

	if (!hp_check_feed_filters(hp, names, n, e->message, sizeof(e->message))) {
		feed_error(e, 400, "bad_parameter", e->message);
		return NULL;
	}
	for (int i = 0; i < n; i++) {
		struct hp_request fhp;
		struct feed *feed;
		struct seg *seg;
		struct fspec *fs;
		bool ok;
		hp_feed_filters(hp, names, n, i, &fhp);
		ok = multi_feed(r, names[i], &fhp, &feed, &seg, &fs, e);
		hp_free(&fhp);
		if (!ok) {
			if (w != NULL)
				w->req = NULL; /* the caller answers req */
			waiter_free(w);
			return NULL;
		}
		if (w == NULL) {
			w = waiter_new(req, feed, seg_ref(seg), fspec_ref(fs), hp->sse,
			               clock_mono_ms() + (int64_t)hp->timeout_s * 1000);
			w->gzip =
			        !hp->sse && reply_accepts_gzip(param(req, "HTTP_ACCEPT_ENCODING"));
			multi_attach(w);
		}
		multi_add_feed(w, feed, seg, fs);
	}
	if (hp->has_cursor)
		multi_set_cursor(w, hp->cursor, hp->cursor_ident, hp->has_ident);
	return w;
}

/* GET /feeds/a,b: several feeds at one common position (multi.h). */
static void
handle_multi(struct responder *r, FCGX_Request *req, const char *list, struct thread_ctx *t)
{
	char names[HP_MULTI_MAX][HP_FEED_NAME_MAX + 1];
	struct hp_request hp;
	struct feed_error e = {0};
	enum metrics_kind kind = MK_OTHER;
	struct waiter *w;
	int n = hp_parse_feed_list(list, names, HP_MULTI_MAX, e.message, sizeof(e.message));

	if (n < 0) {
		feed_error(&e, 400, "bad_parameter", e.message);
		goto out;
	}
	if (!hp_parse(param(req, "QUERY_STRING"), param(req, "HTTP_ACCEPT"),
	              param(req, "HTTP_LAST_EVENT_ID"), r->opt.max_timeout_s, &hp, e.message,
	              sizeof(e.message))) {
		feed_error(&e, 400, "bad_parameter", e.message);
		goto out;
	}
	kind = hp.sse ? MK_SSE : hp.has_cursor ? MK_LONGPOLL : MK_SNAPSHOT;
	w = multi_waiter(r, req, names, n, &hp, &e);
	hp_free(&hp);
	if (w == NULL)
		goto out;
	if (begin_serving(r, w, kind == MK_LONGPOLL))
		multi_serve(&r->multi, w, t);
	return;
out:
	send_error(r, req, kind, e.status, e.code, e.message);
}

static const char *
route_of(FCGX_Request *req)
{
	const char *route = param(req, "PATH_INFO");

	if (route == NULL || *route == '\0')
		route = param(req, "DOCUMENT_URI");
	if (route == NULL || *route == '\0')
		route = param(req, "SCRIPT_NAME");
	return route != NULL ? route : "/";
}

/* The accepting thread serves a long-poll with a cursor itself: parse,
 * look up, park (or queue a ready reply for the writers), nothing that
 * waits.  Snapshots (a render, a large write), SSE (the stream head is
 * written here) and the other routes go to the handlers.  A guess from
 * the raw strings is enough: a wrong yes costs a slower accept, not a
 * wrong answer. */
static bool
quick(void *arg, FCGX_Request *req)
{
	const char *q = param(req, "QUERY_STRING"), *accept = param(req, "HTTP_ACCEPT");

	(void)arg;
	return strncmp(route_of(req), "/feeds/", 7) == 0 && q != NULL &&
	       strstr(q, "cursor=") != NULL && strstr(q, "stream=") == NULL &&
	       (accept == NULL || strstr(accept, "event-stream") == NULL);
}

static void
handle(void *arg, FCGX_Request *req, struct thread_ctx *t)
{
	struct responder *r = arg;
	const char *method = param(req, "REQUEST_METHOD");
	const char *route = route_of(req);
	struct bbuf b = {0};

	if (method != NULL && strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
		/* As the nginx snippet answers it: with Allow. */
		render_head(&b, 405, "application/json", "no-store", "Allow: GET, HEAD\r\n");
		bbuf_adds(&b,
		          "{\"error\":\"method_not_allowed\",\"message\":\"only GET and HEAD\"}\n");
		send_now(r, req, MK_OTHER, 405, &b);
		bbuf_free(&b);
		return;
	}
	if (strcmp(route, "/healthz") == 0) {
		bbuf_adds(&b, "ok\n");
		send_text(r, req, MK_HEALTHZ, "text/plain", &b);
	} else if (strcmp(route, "/metrics") == 0) {
		metrics_render_text(&b);
		render_feed_metrics(&r->feeds, &b);
		render_slot_metrics(r->feeds.ring_dir, &b);
		send_text(r, req, MK_METRICS, "text/plain; version=0.0.4", &b);
	} else if (strcmp(route, "/feeds") == 0 || strcmp(route, "/feeds/") == 0) {
		const char *q = param(req, "QUERY_STRING");

		if (q != NULL && *q != '\0') { /* the list takes no parameter */
			send_error(r, req, MK_FEEDS, 400, "bad_parameter",
			           "the feed list takes no parameters: GET /feeds");
			return;
		}
		render_feed_list(&r->feeds, &b);
		send_text(r, req, MK_FEEDS, "application/json", &b);
	} else if (strncmp(route, "/feeds/", 7) == 0 && strchr(route + 7, ',') != NULL) {
		handle_multi(r, req, route + 7, t);
	} else if (strncmp(route, "/feeds/", 7) == 0) {
		handle_feed(r, req, route + 7, t);
	} else {
		/* Named, for an operator whose prefix reached the responder
		 * (/live/feeds/x: nginx passed the whole path as the route). */
		char msg[320];

		snprintf(
		        msg, sizeof(msg),
		        "no such endpoint \"%.100s\": the routes are /feeds, /feeds/FEED, /metrics "
		        "and /healthz (under a prefix, nginx passes the route in PATH_INFO: see "
		        "nginx/tailgate.conf)",
		        route);
		send_error(r, req, MK_OTHER, 404, "not_found", msg);
	}
	bbuf_free(&b);
}

/* ---- threads ---- */

static void
raise_nofile(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
			log_warning("cannot raise the descriptor limit to %llu",
			            (unsigned long long)rl.rlim_max);
	}
}

static int
nofile(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY ||
	    rl.rlim_cur > (1 << 22))
		return 1 << 20;
	return (int)rl.rlim_cur;
}
/* Has a tailgated ever run on dir?  Its lock file stays after it stops. */
static bool
has_lock(const char *dir)
{
	char lock[4096];

	if (snprintf(lock, sizeof(lock), "%s/tailgated.lock", dir) >= (int)sizeof(lock))
		return true;
	return access(lock, F_OK) == 0;
}

/* A ring directory that is missing, unreadable or that no tailgated has
 * used is served (tailgated may create it later) but said at start: every
 * feed would be a 404. */
static void
ring_dir_check(const char *dir)
{
	struct stat st;

	if (stat(dir, &st) != 0)
		log_warning("ring directory %s: %s: no feed is served until tailgated creates it "
		            "(--ring-dir must name tailgated.conf's ring_dir)",
		            dir, strerror(errno));
	else if (!S_ISDIR(st.st_mode))
		log_warning("ring directory %s is not a directory: no feed is served", dir);
	else if (access(dir, R_OK | X_OK) != 0)
		log_warning("ring directory %s: %s: no feed is served (this user cannot read it)",
		            dir, strerror(errno));
	else if (!has_lock(dir))
		log_warning("ring directory %s has no tailgated.lock: no tailgated has run with "
		            "ring_dir = %s (--ring-dir must name tailgated.conf's ring_dir)",
		            dir, dir);
}

/* One worker process: serve until SIGTERM/SIGINT. */
static int
serve(void)
{
	struct responder_opts ro = {
	        .ring_dir = opt.ring_dir,
	        .handlers = opt.handlers,
	        .writers = opt.writers,
	        .max_timeout_s = opt.max_timeout_s,
	        .sse_keepalive_s = opt.sse_keepalive_s,
	        .cache_max_age_s = opt.cache_max_age_s,
	        .multi_cache = opt.multi_cache,
	};
	struct responder r;
	sigset_t set;
	int sig;

	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &set, NULL); /* every thread inherits this */

	if (FCGX_Init() != 0)
		fatalx("FCGX_Init failed");
	responder_init(&r, &ro);
	log_info("serving %s with %d handlers, %d writers, fd limit %d", r.feeds.ring_dir,
	         opt.handlers, opt.writers, nofile());
	ring_dir_check(r.feeds.ring_dir);
	if (opt.max_timeout_s >= 60 || opt.sse_keepalive_s >= 60)
		log_warning(
		        "--max-timeout %d s / --sse-keepalive %d s: nginx must wait longer "
		        "between two reads (fastcgi_read_timeout, 60 s in nginx/tailgate.conf), or "
		        "it answers parked requests 504",
		        opt.max_timeout_s, opt.sse_keepalive_s);
	responder_start(&r, listen_fd, nofile(), handle, quick);

	do {
		if (sigwait(&set, &sig) != 0)
			sig = SIGTERM;
	} while (sig == SIGHUP);
	log_info("signal %d: answering parked requests and stopping", sig);
	got_stop = 1;
	responder_stop(&r);
	return 0;
}

/* ---- the listening socket ---- */

/* The unix socket this process made (its inode): removed at exit only if
 * the path still names it. */
static ino_t socket_ino;

/* Does a process accept connections on the unix socket at path?  A second
 * responder started on a running one's path would otherwise unlink it and
 * take it over, then remove it at exit: the first one keeps running,
 * unreachable, and nginx answers 502. */
static bool
socket_in_use(const char *path)
{
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	int fd;
	bool used;

	if (strlen(path) >= sizeof(a.sun_path))
		return false;
	memcpy(a.sun_path, path, strlen(path) + 1);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return false;
	used = connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
	close(fd);
	return used;
}

/* Listen on a unix socket path or [HOST]:PORT, as FCGX_OpenSocket does,
 * but a failure names the address and the reason (libfcgi's prints only
 * "bind/listen" and exits). */
static int
listen_on(const char *spec, int backlog)
{
	const char *colon = strrchr(spec, ':');
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE}, *res, *ai;
	char host[256];
	int fd = -1, one = 1, rc, saved = 0;

	if (colon == NULL) {
		struct sockaddr_un sa = {.sun_family = AF_UNIX};

		if (strlen(spec) >= sizeof(sa.sun_path))
			fatalx("cannot listen on %s: a unix socket path is at most %zu bytes", spec,
			       sizeof(sa.sun_path) - 1);
		memcpy(sa.sun_path, spec, strlen(spec) + 1);
		fd = socket(AF_UNIX, SOCK_STREAM, 0);
		if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 ||
		    listen(fd, backlog) != 0)
			fatal("cannot listen on %s (does its directory exist, and may this user "
			      "write there?)",
			      spec);
		return fd;
	}
	if (*spec == '[' && colon > spec && colon[-1] == ']') /* [::1]:9000 */
		snprintf(host, sizeof(host), "%.*s", (int)(colon - spec - 2), spec + 1);
	else
		snprintf(host, sizeof(host), "%.*s", (int)(colon - spec), spec);
	rc = getaddrinfo(*host != '\0' ? host : NULL, colon + 1, &hints, &res);
	if (rc != 0)
		fatalx("cannot listen on %s: %s", spec, gai_strerror(rc));
	for (ai = res; ai != NULL; ai = ai->ai_next) {
		fd = socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
		if (fd >= 0 && setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) == 0 &&
		    bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, backlog) == 0)
			break;
		saved = errno;
		if (fd >= 0)
			close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	if (fd < 0) {
		errno = saved;
		fatal("cannot listen on %s", spec);
	}
	return fd;
}

/* --socket-group: hand the freshly bound unix socket to GROUP (nginx's
 * worker group) so that the default mode 0660 lets nginx, and only it
 * and the owner, connect.  Root may give any group; another user only a
 * group it belongs to. */
static void
chgrp_socket(void)
{
	struct group *gr = getgrnam(opt.socket_group);

	if (gr == NULL) {
		unlink(opt.socket_path);
		fatalx("--socket-group %s: no such group", opt.socket_group);
	}
	if (chown(opt.socket_path, (uid_t)-1, gr->gr_gid) != 0) {
		int e = errno;
		unlink(opt.socket_path);
		errno = e;
		fatal("--socket-group %s: cannot give %s to group %s (gid %d; only root, or a "
		      "member of the group, may)",
		      opt.socket_group, opt.socket_path, opt.socket_group, (int)gr->gr_gid);
	}
}

static void
open_socket(void)
{
	const char *lpid = getenv("LISTEN_PID"), *lfds = getenv("LISTEN_FDS");
	int accepting = 0;
	socklen_t len = sizeof(accepting);

	if (opt.socket_path != NULL) {
		bool unix_path = strchr(opt.socket_path, ':') == NULL;
		struct stat st;

		if (unix_path && stat(opt.socket_path, &st) == 0 && S_ISSOCK(st.st_mode)) {
			if (socket_in_use(opt.socket_path))
				fatalx("%s: another process (a running tailgate-fcgi?) accepts "
				       "connections on this socket; stop it first, or give another "
				       "--socket",
				       opt.socket_path);
			unlink(opt.socket_path); /* a previous run's */
		}
		/* The socket file is born with its final mode (bind applies the
		 * umask): no moment in which another user could connect. */
		mode_t old_mask = umask(0777 & ~(mode_t)opt.socket_mode);
		listen_fd = listen_on(opt.socket_path, opt.backlog);
		umask(old_mask);
		if (unix_path && opt.socket_group != NULL)
			chgrp_socket();
		if (unix_path && chmod(opt.socket_path, (mode_t)opt.socket_mode) != 0)
			fatal("chmod %s", opt.socket_path);
		if (unix_path && stat(opt.socket_path, &st) == 0)
			socket_ino = st.st_ino;
		log_info("listening on %s", opt.socket_path);
		return;
	}
	if (lpid != NULL && lfds != NULL && strtol(lpid, NULL, 10) == (long)getpid()) {
		if (strtol(lfds, NULL, 10) < 1)
			fatalx("LISTEN_FDS=%s: systemd passed no socket", lfds);
		listen_fd = SD_LISTEN_FDS_START;
		unsetenv("LISTEN_PID");
		unsetenv("LISTEN_FDS");
		unsetenv("LISTEN_FDNAMES");
		log_info("listening on the socket systemd passed (fd %d)", listen_fd);
		return;
	}
	if (getsockopt(0, SOL_SOCKET, SO_ACCEPTCONN, &accepting, &len) == 0 && accepting) {
		listen_fd = 0;
		log_info("listening on the inherited socket on fd 0 (spawn-fcgi)");
		return;
	}
	fprintf(stderr, "tailgate-fcgi: no socket: give --socket, or start it under spawn-fcgi "
	                "or systemd socket activation\n");
	usage(stderr);
	exit(2);
}

/* ---- privileges ---- */

/* Started as root: become --user once the socket is open (before any
 * thread or worker exists).  The responder needs no privilege to serve:
 * it reads the ring files (by group: tailgated.conf's ring_group) and
 * writes to its socket. */
static void
drop_privileges(void)
{
	char name[256], *group;
	struct passwd *pw;
	uid_t uid;
	gid_t gid;

	if (opt.user == NULL) {
		if (geteuid() == 0)
			log_warning("running as root: give --user USER[:GROUP] (the responder "
			            "needs no privilege once its socket is open)");
		return;
	}
	snprintf(name, sizeof(name), "%s", opt.user);
	group = strchr(name, ':');
	if (group != NULL)
		*group++ = '\0';
	pw = getpwnam(name);
	if (pw == NULL)
		fatalx("--user %s: no such user", name);
	uid = pw->pw_uid;
	gid = pw->pw_gid;
	if (group != NULL && *group != '\0') {
		struct group *gr = getgrnam(group);
		if (gr == NULL)
			fatalx("--user %s: no such group \"%s\"", opt.user, group);
		gid = gr->gr_gid;
	}
	if (geteuid() != 0) {
		if (geteuid() == uid && getegid() == gid)
			return; /* already that user: nothing to do */
		fatalx("--user %s: only root can switch users (running as uid %d)", opt.user,
		       (int)geteuid());
	}
	if (opt.socket_path != NULL && strchr(opt.socket_path, ':') == NULL &&
	    chown(opt.socket_path, uid, opt.socket_group != NULL ? (gid_t)-1 : gid) != 0)
		fatal("chown %s to %s", opt.socket_path, opt.user);
	if (setgroups(1, &gid) != 0 || setgid(gid) != 0 || setuid(uid) != 0)
		fatal("cannot switch to user %s", opt.user);
	if (setuid(0) == 0 || geteuid() == 0)
		fatalx("--user %s: still able to regain root", opt.user);
	log_info("running as user %s (uid %d, gid %d)", name, (int)uid, (int)gid);
}

/* ---- workers ---- */

static void
on_stop(int sig)
{
	(void)sig;
	got_stop = 1;
}

static pid_t
spawn_worker(void)
{
	pid_t pid = fork();

	if (pid < 0) {
		log_error("fork: %s", strerror(errno));
		return -1;
	}
	if (pid == 0) {
		signal(SIGTERM, SIG_DFL);
		signal(SIGINT, SIG_DFL);
		exit(serve());
	}
	return pid;
}

static int
supervise(void)
{
	pid_t *pids = calloc((size_t)opt.workers, sizeof(*pids));
	struct sigaction sa;

	if (pids == NULL)
		fatal("out of memory");
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_stop;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	for (int i = 0; i < opt.workers; i++)
		pids[i] = spawn_worker();
	while (!got_stop) {
		int st;
		pid_t pid = waitpid(-1, &st, 0);
		if (pid < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		for (int i = 0; i < opt.workers; i++)
			if (pids[i] == pid) {
				pids[i] = -1;
				if (!got_stop) {
					log_warning("worker %d exited (status %d): restarting",
					            (int)pid, st);
					sleep(1);
					pids[i] = spawn_worker();
				}
			}
	}
	for (int i = 0; i < opt.workers; i++)
		if (pids[i] > 0)
			kill(pids[i], SIGTERM);
	for (int i = 0; i < opt.workers; i++)
		if (pids[i] > 0)
			waitpid(pids[i], NULL, 0);
	free(pids);
	return 0;
}

int
main(int argc, char **argv)
{
	static const struct option longopts[] = {{"socket", required_argument, NULL, 's'},
	                                         {"socket-mode", required_argument, NULL, 'm'},
	                                         {"socket-group", required_argument, NULL, 'g'},
	                                         {"backlog", required_argument, NULL, 'b'},
	                                         {"user", required_argument, NULL, 'u'},
	                                         {"ring-dir", required_argument, NULL, 'd'},
	                                         {"workers", required_argument, NULL, 'w'},
	                                         {"handlers", required_argument, NULL, 'a'},
	                                         {"writers", required_argument, NULL, 'W'},
	                                         {"max-timeout", required_argument, NULL, 'T'},
	                                         {"sse-keepalive", required_argument, NULL, 'k'},
	                                         {"cache-max-age", required_argument, NULL, 'c'},
	                                         {"gzip-level", required_argument, NULL, 'z'},
	                                         {"multi-cache", required_argument, NULL, 'M'},
	                                         {"verbose", no_argument, NULL, 'v'},
	                                         {"quiet", no_argument, NULL, 'q'},
	                                         {"syslog", no_argument, NULL, 'S'},
	                                         {"version", no_argument, NULL, 'V'},
	                                         {"help", no_argument, NULL, 'h'},
	                                         {NULL, 0, NULL, 0}};
	bool use_syslog = false;
	int c, rc;

	while ((c = getopt_long(argc, argv, "s:m:g:b:d:u:w:a:W:T:k:c:z:M:vqVh", longopts, NULL)) !=
	       -1) {
		switch (c) {
		case 's':
			opt.socket_path = optarg;
			break;
		case 'm': {
			char *end;
			long m = strtol(optarg, &end, 8);
			if (*end != '\0' || m < 0 || m > 07777) {
				fprintf(stderr, "tailgate-fcgi: bad socket mode \"%s\"\n", optarg);
				usage(stderr);
				return 2;
			}
			opt.socket_mode = (int)m;
			break;
		}
		case 'g':
			opt.socket_group = optarg;
			break;
		case 'b':
			opt.backlog = parse_int(optarg, 1, 1 << 20, "--backlog");
			break;
		case 'd':
			opt.ring_dir = optarg;
			break;
		case 'u':
			opt.user = optarg;
			break;
		case 'w':
			opt.workers = parse_int(optarg, 1, 256, "--workers");
			break;
		case 'a':
			opt.handlers = parse_int(optarg, 1, 64, "--handlers");
			break;
		case 'W':
			opt.writers = parse_int(optarg, 1, 256, "--writers");
			break;
		case 'T':
			opt.max_timeout_s = parse_int(optarg, 1, 3600, "--max-timeout");
			break;
		case 'k':
			opt.sse_keepalive_s = parse_int(optarg, 1, 3600, "--sse-keepalive");
			break;
		case 'c':
			opt.cache_max_age_s = parse_int(optarg, 0, 86400 * 365, "--cache-max-age");
			break;
		case 'z':
			reply_set_gzip_level(parse_int(optarg, 0, 9, "--gzip-level"));
			break;
		case 'M':
			opt.multi_cache = parse_int(optarg, 0, MULTI_CACHE_MAX, "--multi-cache");
			break;
		case 'v':
			log_max_level = LOG_LEVEL_DEBUG;
			break;
		case 'q':
			log_max_level = LOG_LEVEL_WARNING;
			break;
		case 'S':
			use_syslog = true;
			break;
		case 'V':
			printf("tailgate-fcgi %s\n", PACKAGE_VERSION);
			return 0;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "tailgate-fcgi: unexpected argument \"%s\"\n", argv[optind]);
		usage(stderr);
		return 2;
	}
	log_init("tailgate-fcgi", use_syslog);
	/* Before FCGX_Init: libfcgi installs its own SIGUSR1 (shutdown) and
	 * SIGPIPE handlers only where the disposition is still the default. */
	signal(SIGPIPE, SIG_IGN);
	signal(SIGUSR1, SIG_IGN);
	raise_nofile();
	metrics_init();
	open_socket();
	drop_privileges();
	if (opt.workers > 1)
		rc = supervise();
	else
		rc = serve();
	if (opt.socket_path != NULL && strchr(opt.socket_path, ':') == NULL) {
		struct stat st;
		if (stat(opt.socket_path, &st) == 0 && st.st_ino == socket_ino)
			unlink(opt.socket_path);
	}
	return rc;
}
