/*
 * reply.c - reference-counted reply bytes and their gzip form (reply.h).
 */
#include "reply.h"

#include "log.h"

#include <ctype.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <zlib.h>

struct reply *
reply_new(const struct bbuf *b, int status, uint64_t batches)
{
	struct reply *r = malloc(sizeof(*r) + b->len + 1);

	if (r == NULL)
		fatalx("out of memory for a %zu-byte reply", b->len);
	atomic_store(&r->refs, 1);
	r->status = status;
	r->batches = batches;
	r->len = b->len;
	r->body_off = 0;
	atomic_store_explicit(&r->gz, NULL, memory_order_relaxed);
	if (b->len > 0)
		memcpy(r->data, b->p, b->len);
	r->data[b->len] = '\0';
	return r;
}

struct reply *
reply_ref(struct reply *r)
{
	atomic_fetch_add_explicit(&r->refs, 1, memory_order_relaxed);
	return r;
}

void
reply_release(struct reply *r)
{
	/* acq_rel: the last releaser sees every other holder's reads done
	 * before it frees. */
	if (r != NULL && atomic_fetch_sub_explicit(&r->refs, 1, memory_order_acq_rel) == 1) {
		free(atomic_load_explicit(&r->gz, memory_order_relaxed));
		free(r);
	}
}

/* ---- the gzip form ---- */

static _Atomic int gzip_level = REPLY_GZIP_LEVEL;

void
reply_set_gzip_level(int level)
{
	atomic_store(&gzip_level, level < 0 ? 0 : level > 9 ? 9 : level);
}

/* Each thread keeps one deflate state (deflateInit allocates ~270 kB:
 * once per thread, then deflateReset per reply), freed when it exits. */
static pthread_key_t zkey;
static pthread_once_t zkey_once = PTHREAD_ONCE_INIT;

struct zstate {
	z_stream z;
	int level;
};

static void
zstate_free(void *p)
{
	struct zstate *zs = p;

	deflateEnd(&zs->z);
	free(zs);
}

static void
zkey_init(void)
{
	if (pthread_key_create(&zkey, zstate_free) != 0)
		fatalx("cannot create the deflate state's thread key");
}

/* This thread's deflate state at level, reset; NULL when zlib fails. */
static z_stream *
zstream(int level)
{
	struct zstate *zs;

	pthread_once(&zkey_once, zkey_init);
	zs = pthread_getspecific(zkey);
	if (zs != NULL && zs->level == level) {
		deflateReset(&zs->z);
		return &zs->z;
	}
	if (zs != NULL) { /* the level changed */
		pthread_setspecific(zkey, NULL);
		zstate_free(zs);
	}
	zs = calloc(1, sizeof(*zs));
	if (zs == NULL)
		return NULL;
	/* 15 + 16: a gzip wrapper, as Content-Encoding: gzip wants. */
	if (deflateInit2(&zs->z, level, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK) {
		log_warning("gzip: deflateInit2 at level %d failed: %s", level,
		            zs->z.msg != NULL ? zs->z.msg : "no message");
		free(zs);
		return NULL;
	}
	zs->level = level;
	pthread_setspecific(zkey, zs);
	return &zs->z;
}

/* "Content-Length: " and up to 20 digits and CRLF */
#define CL_MAX 38

/* r's gzip form: r's head with three headers added (its length and
 * encoding, Vary), then the body deflated.  NULL when zlib fails (r is then sent plain). */
static struct reply *
gzip_form(const struct reply *r, int level)
{
	static const char hdr[] = "Content-Encoding: gzip\r\nVary: Accept-Encoding\r\n\r\n";
	size_t head = r->body_off - 2, body = r->len - r->body_off; /* head: up to the blank line */
	z_stream *z = zstream(level);
	struct reply *g;
	size_t cap, out_len;

	if (z == NULL)
		return NULL;
	/* The body is deflated first, CL_MAX bytes further on than it will
	 * be, then moved up behind the Content-Length line: with a length
	 * nginx passes the reply as it is instead of chunking it. */
	cap = head + CL_MAX + sizeof(hdr) - 1 + deflateBound(z, body);
	g = malloc(sizeof(*g) + cap + 1);
	if (g == NULL)
		fatalx("out of memory for a %zu-byte gzip reply", cap);
	z->next_in = (Bytef *)(r->data + r->body_off);
	z->avail_in = (uInt)body;
	z->next_out = (Bytef *)(g->data + head + CL_MAX + sizeof(hdr) - 1);
	z->avail_out = (uInt)(cap - (head + CL_MAX + sizeof(hdr) - 1));
	if (body > UINT32_MAX || deflate(z, Z_FINISH) != Z_STREAM_END) {
		log_warning("gzip: deflating a %zu-byte reply failed: %s", body,
		            z->msg != NULL ? z->msg : "no message");
		free(g);
		return NULL;
	}
	memcpy(g->data, r->data, head);
	out_len = head + (size_t)snprintf(g->data + head, CL_MAX + 1, "Content-Length: %lu\r\n",
	                                  (unsigned long)z->total_out);
	memcpy(g->data + out_len, hdr, sizeof(hdr) - 1);
	out_len += sizeof(hdr) - 1;
	memmove(g->data + out_len, g->data + head + CL_MAX + sizeof(hdr) - 1, z->total_out);
	out_len += z->total_out;
	atomic_store_explicit(&g->refs, 1, memory_order_relaxed);
	g->status = r->status;
	g->batches = r->batches;
	g->len = out_len;
	g->body_off = 0;
	atomic_store_explicit(&g->gz, NULL, memory_order_relaxed);
	g->data[out_len] = '\0';
	return g;
}

/* Replies are made gzip under one of these locks (by address), so the
 * waiters of a group wait for the one compression instead of each
 * making its own. */
#define GZ_LOCKS 16
static pthread_mutex_t gz_locks[GZ_LOCKS];
static pthread_once_t gz_locks_once = PTHREAD_ONCE_INIT;

static void
gz_locks_init(void)
{
	for (int i = 0; i < GZ_LOCKS; i++)
		pthread_mutex_init(&gz_locks[i], NULL);
}

const struct reply *
reply_for(struct reply *r, bool gzip)
{
	struct reply *g;
	pthread_mutex_t *mu;
	int level = atomic_load_explicit(&gzip_level, memory_order_relaxed);

	if (!gzip || r->body_off < 4 || r->body_off > r->len || level == 0)
		return r;
	g = atomic_load_explicit(&r->gz, memory_order_acquire);
	if (g != NULL)
		return g;
	pthread_once(&gz_locks_once, gz_locks_init);
	mu = &gz_locks[((uintptr_t)r >> 6) % GZ_LOCKS];
	pthread_mutex_lock(mu);
	g = atomic_load_explicit(&r->gz, memory_order_acquire);
	if (g == NULL && (g = gzip_form(r, level)) != NULL)
		atomic_store_explicit(&r->gz, g, memory_order_release);
	pthread_mutex_unlock(mu);
	return g != NULL ? g : r;
}

/* ---- Accept-Encoding ---- */

/* The q-value in an element's parameters p[0..n) ("q=0.5"): 1 when
 * absent; 0 for "0", "0.", "0.000" or anything malformed. */
static bool
q_positive(const char *p, size_t n)
{
	size_t i = 0;

	for (;;) {
		while (i < n && (p[i] == ';' || p[i] == ' ' || p[i] == '\t'))
			i++;
		if (i >= n)
			return true; /* no q: 1 */
		if (i + 1 < n && (p[i] == 'q' || p[i] == 'Q') && p[i + 1] == '=') {
			i += 2;
			if (i < n && p[i] == '1')
				return true;
			if (i >= n || p[i] != '0')
				return false; /* malformed: refuse */
			for (i++; i < n && (p[i] == '.' || p[i] == '0'); i++)
				;
			return i < n && isdigit((unsigned char)p[i]);
		}
		while (i < n && p[i] != ';')
			i++; /* another parameter */
	}
}

bool
reply_accepts_gzip(const char *ae)
{
	int gz = -1, star = -1; /* -1: not named, 0: refused, 1: taken */

	if (ae == NULL)
		return false;
	while (*ae != '\0') {
		size_t n = strcspn(ae, ","), t;
		const char *e = ae;

		while (n > 0 && (*e == ' ' || *e == '\t')) {
			e++;
			n--;
		}
		t = strcspn(e, ";, \t");
		if (t > n)
			t = n;
		if ((t == 4 && strncasecmp(e, "gzip", 4) == 0) ||
		    (t == 6 && strncasecmp(e, "x-gzip", 6) == 0))
			gz = q_positive(e + t, n - t);
		else if (t == 1 && e[0] == '*')
			star = q_positive(e + t, n - t);
		ae = e + n;
		if (*ae == ',')
			ae++;
	}
	return gz >= 0 ? gz > 0 : star > 0;
}
