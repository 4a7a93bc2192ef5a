/*
 * tailgate-hook.c - pipe a feed out to an HTTP API: every change of the
 * feed is POSTed as JSON to a target URL, at least once and in order.
 *
 *   tailgate-hook --state FILE [--secret-file FILE] [--filter EXPR]...
 *                 [--skip-4xx] [--once] [--timeout S] [--post-timeout S] [--cacert F]
 *                 FEED_URL TARGET_URL
 *
 * A POST carries one reply of the feed (the snapshot first, then each
 * long-poll reply, its batches netted into one change):
 *
 *   {"feed":NAME,"cursor":C,"columns":[{name,type}],"inserted":[..],"deleted":[..]}
 *
 * with Idempotency-Key: NAME:C and X-Tailgate-Signature: sha256=HMAC
 * (HMAC-SHA256 of the body with the shared secret, lowercase hex).
 *
 * Durability: the state file holds the acknowledged cursor, the columns and
 * the rows as of that cursor, and the body being delivered ("pending").
 * The pending body is written (temp file, fsync, rename, fsync of the
 * directory) before its first POST, and the cursor advances past it only
 * after a 2xx.  After a crash the same body, with the same key, is posted
 * again first: a kill -9 repeats at most the unacknowledged POST, and a
 * receiver that deduplicates by key sees every change exactly once.
 */
#include "config.h"

#include "follow.h"
#include "xmalloc.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <libgen.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_FILTERS 32

static volatile sig_atomic_t stopping;
static const char *state_path;
static char *secret;
static bool skip_4xx;
static long post_timeout = 30; /* seconds a POST may take, answer included */
static const char *cacert;     /* --cacert, or NULL: the system's CA store */

/* The longest Retry-After honoured, seconds: a receiver asking for more
 * is asked again after this long. */
#define RETRY_AFTER_MAX 300

static void
usage(FILE *out)
{
	fprintf(out,
	        "usage: tailgate-hook --state FILE [options] FEED_URL TARGET_URL\n"
	        "\n"
	        "Follow a tailgate feed (FEED_URL = http://HOST/feeds/NAME) and POST each change\n"
	        "as JSON to TARGET_URL, at least once and in order, signed with HMAC-SHA256.\n"
	        "\n"
	        "  --state FILE        the durable cursor (required); resumed on restart\n"
	        "  --secret-file FILE  the signing secret (else $TAILGATE_HOOK_SECRET)\n"
	        "  --filter EXPR       keep rows matching COLUMN=OP.VALUE (repeatable)\n"
	        "  --skip-4xx          log and skip a change the target refuses with a 4xx\n"
	        "                      (not 408/429); without it the hook stops with exit 1\n"
	        "  --once              deliver what is there now, then exit\n"
	        "  --timeout S         long-poll timeout in seconds (default 25)\n"
	        "  --post-timeout S    give up on a POST not answered in S seconds and\n"
	        "                      retry it (default 30)\n"
	        "  --cacert FILE       trust these CA certificates (PEM) for https://\n"
	        "                      URLs instead of the system's\n"
	        "  -h, --help          this help\n"
	        "  -V, --version       print the version\n");
}

static void
on_stop(int sig)
{
	stopping = 1;
}

static int
idle(void *arg)
{
	return stopping;
}

/* libcurl's progress callback: a SIGTERM aborts a POST under way (it
 * stays pending in the state file and is posted again on restart). */
static int
post_progress(void *arg, curl_off_t a, curl_off_t b, curl_off_t c, curl_off_t d)
{
	return stopping;
}

static void logf_(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void
logf_(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs("tailgate-hook: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
}

/* ---- the state file -------------------------------------------------------- */

/* Create path's temp file (PATH.tmp, mode 0600) for writing: its
 * descriptor, with *tmp its name (the caller frees it), or -1, said. */
static int
open_temp(const char *path, char **tmp)
{
	size_t len = strlen(path);
	*tmp = xcalloc(1, len + 8);
	snprintf(*tmp, len + 8, "%s.tmp", path);
	int fd = open(*tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0) {
		logf_("cannot write the state file: %s: %s", *tmp, strerror(errno));
		free(*tmp);
		*tmp = NULL;
	}
	return fd;
}

/* Write text to path durably: temp file, fsync, rename, fsync the directory. */
static int
write_durably(const char *path, const char *text)
{
	char *tmp;
	int fd = open_temp(path, &tmp);
	if (fd < 0)
		return -1;
	size_t n = strlen(text), off = 0;
	while (off < n) {
		ssize_t w = write(fd, text + off, n - off);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0) {
			logf_("cannot write the state file: write %s: %s", tmp, strerror(errno));
			close(fd);
			unlink(tmp);
			free(tmp);
			return -1;
		}
		off += (size_t)w;
	}
	if (fsync(fd) < 0 || close(fd) < 0 || rename(tmp, path) < 0) {
		logf_("cannot write the state file %s: %s", path, strerror(errno));
		unlink(tmp);
		free(tmp);
		return -1;
	}
	char *dcopy = xstrdup(path);
	int dfd = open(dirname(dcopy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd >= 0) {
		fsync(dfd);
		close(dfd);
	}
	free(dcopy);
	free(tmp);
	return 0;
}

/* Save the acknowledged state, and the body about to be posted (or NULL). */
static int
save_state(struct follow *f, const char *pending)
{
	json_object *s = json_object_new_object();
	json_object_object_add(s, "feed", json_object_new_string(f->feed));
	json_object_object_add(s, "cursor", f->cursor ? json_object_new_string(f->cursor) : NULL);
	json_object_object_add(s, "columns", json_object_get(f->columns));
	json_object_object_add(s, "rows", follow_rows_json(f));
	if (pending)
		json_object_object_add(s, "pending", json_object_new_string(pending));
	int rc = write_durably(state_path,
	                       json_object_to_json_string_ext(s, JSON_C_TO_STRING_PLAIN));
	json_object_put(s);
	return rc;
}

/* A cursor as the API hands them out (follow_cursor_ok), as a JSON string. */
static bool
cursor_ok(json_object *c)
{
	return json_object_is_type(c, json_type_string) &&
	       follow_cursor_ok(json_object_get_string(c));
}

/* Load the state file if there is one; *pending gets the unacknowledged
 * body (or NULL).  A missing or empty file is a first run.  -1 (after a
 * message) on a file that exists but cannot be used: it is never
 * overwritten then, so a mistake loses no cursor. */
static int
load_state(struct follow *f, char **pending)
{
	*pending = NULL;
	FILE *fp = fopen(state_path, "r");
	if (fp == NULL && errno == ENOENT)
		return 0;
	if (fp == NULL) {
		logf_("cannot read the state file %s: %s", state_path, strerror(errno));
		return -1;
	}
	int c = fgetc(fp);
	bool empty = c == EOF && !ferror(fp);
	bool bad = ferror(fp);
	int err = errno;
	fclose(fp);
	if (bad) {
		logf_("cannot read the state file %s: %s", state_path, strerror(err));
		return -1;
	}
	if (empty)
		return 0;
	json_object *s = json_object_from_file(state_path), *feed = NULL, *cur = NULL, *cols = NULL,
	            *rows = NULL, *p = NULL;
	if (s == NULL || !json_object_is_type(s, json_type_object)) {
		logf_("%s: not a tailgate-hook state file (not a JSON object%s%s); move it "
		      "away to start from a new snapshot",
		      state_path, s ? "" : ": ", s ? "" : json_util_get_last_err());
		json_object_put(s);
		return -1;
	}
	json_object_object_get_ex(s, "feed", &feed);
	if (!json_object_is_type(feed, json_type_string) ||
	    strcmp(json_object_get_string(feed), f->feed) != 0) {
		logf_("%s: holds the state of another feed (\"%s\"), not \"%s\"", state_path,
		      json_object_is_type(feed, json_type_string) ? json_object_get_string(feed)
		                                                  : "(none)",
		      f->feed);
		json_object_put(s);
		return -1;
	}
	json_object_object_get_ex(s, "cursor", &cur);
	json_object_object_get_ex(s, "columns", &cols);
	json_object_object_get_ex(s, "rows", &rows);
	json_object_object_get_ex(s, "pending", &p);
	bool rows_ok = json_object_is_type(rows, json_type_array);
	for (size_t i = 0; rows_ok && i < json_object_array_length(rows); i++)
		rows_ok = json_object_is_type(json_object_array_get_idx(rows, i), json_type_array);
	if ((cur && !cursor_ok(cur)) ||
	    (cur && (!json_object_is_type(cols, json_type_array) || !rows_ok)) ||
	    (p && !json_object_is_type(p, json_type_string))) {
		logf_("%s: a damaged state file (cursor, columns, rows or pending of the wrong "
		      "type); move it away to start from a new snapshot",
		      state_path);
		json_object_put(s);
		return -1;
	}
	if (cur)
		follow_restore(f, json_object_get_string(cur), cols, rows);
	if (p)
		*pending = xstrdup(json_object_get_string(p));
	json_object_put(s);
	return 0;
}

/* Fail early, before any POST, when the state file cannot be written. */
static int
probe_state_dir(void)
{
	char *tmp;
	int fd = open_temp(state_path, &tmp);
	if (fd < 0)
		return -1;
	close(fd);
	unlink(tmp);
	free(tmp);
	return 0;
}

/* ---- posting --------------------------------------------------------------- */

static void
sign(const char *body, char out[72])
{
	unsigned char mac[EVP_MAX_MD_SIZE];
	unsigned int maclen = 0;
	HMAC(EVP_sha256(), secret, (int)strlen(secret), (const unsigned char *)body, strlen(body),
	     mac, &maclen);
	strcpy(out, "sha256=");
	for (unsigned int i = 0; i < maclen; i++)
		sprintf(out + 7 + 2 * i, "%02x", mac[i]);
}

static size_t
keep_reply(char *ptr, size_t size, size_t nmemb, void *arg)
{
	char *r = arg;
	size_t len = strlen(r), add = size * nmemb;
	/* one line of printable text for the log: controls (a newline, an
	 * escape sequence) become '?' */
	for (size_t i = 0; i < add && len < 200; i++) {
		unsigned char ch = (unsigned char)ptr[i];
		r[len++] = (ch < 0x20 || ch == 0x7f) ? '?' : (char)ch;
	}
	r[len] = '\0';
	return size * nmemb;
}

/* libcurl's header callback: *arg is set when the answer's header block
 * has ended (its empty line).  libcurl takes a connection closed in the
 * middle of the headers, after "HTTP/1.1 200", for a complete 200; the
 * hook must not take that for an acknowledgement. */
static size_t
on_header(char *ptr, size_t size, size_t nmemb, void *arg)
{
	bool *ended = arg;
	size_t len = size * nmemb;
	if (len >= 5 && memcmp(ptr, "HTTP/", 5) == 0)
		*ended = false; /* a new (final or 1xx) answer */
	else if ((len == 2 && ptr[0] == '\r' && ptr[1] == '\n') || (len == 1 && ptr[0] == '\n'))
		*ended = true;
	return len;
}

/* POST body once: the HTTP status, 0 on a transport error (err set), -1
 * on one retrying cannot mend (a malformed URL, a scheme libcurl lacks);
 * *retry_after the reply's Retry-After in seconds (-1: none). */
static long
post_once(CURL *h, const char *target, const char *feed, const char *cursor, const char *body,
          char *reply, char *err, long *retry_after)
{
	char sig[72], hdr[3][1024];
	sign(body, sig);
	snprintf(hdr[0], sizeof(hdr[0]), "Idempotency-Key: %s:%s", feed, cursor);
	snprintf(hdr[1], sizeof(hdr[1]), "X-Tailgate-Feed: %s", feed);
	snprintf(hdr[2], sizeof(hdr[2]), "X-Tailgate-Cursor: %s", cursor);
	struct curl_slist *hl = curl_slist_append(NULL, "Content-Type: application/json");
	hl = curl_slist_append(hl, hdr[0]);
	hl = curl_slist_append(hl, hdr[1]);
	hl = curl_slist_append(hl, hdr[2]);
	char sighdr[128];
	snprintf(sighdr, sizeof(sighdr), "X-Tailgate-Signature: %s", sig);
	hl = curl_slist_append(hl, sighdr);
	hl = curl_slist_append(hl, "Expect:");
	curl_easy_reset(h);
	reply[0] = '\0';
	curl_easy_setopt(h, CURLOPT_URL, target);
	curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, hl);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, keep_reply);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, reply);
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, post_timeout < 10 ? post_timeout : 10L);
	curl_easy_setopt(h, CURLOPT_TIMEOUT, post_timeout);
	curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
	curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, post_progress);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_USERAGENT, "tailgate-hook/" PACKAGE_VERSION);
	if (cacert)
		curl_easy_setopt(h, CURLOPT_CAINFO, cacert);
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, err);
	bool ended = false;
	curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(h, CURLOPT_HEADERDATA, &ended);
	err[0] = '\0';
	CURLcode rc = curl_easy_perform(h);
	if (rc == CURLE_OK && !ended) {
		curl_slist_free_all(hl);
		snprintf(err, CURL_ERROR_SIZE,
		         "the connection closed inside the answer's headers (not an "
		         "acknowledgement)");
		*retry_after = -1;
		return 0;
	}
	long st = 0;
	curl_off_t ra = -1;
	*retry_after = -1;
	if (rc == CURLE_OK) {
		curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &st);
		/* seconds, or an HTTP-date turned into seconds from now */
		if (curl_easy_getinfo(h, CURLINFO_RETRY_AFTER, &ra) == CURLE_OK && ra > 0)
			*retry_after = ra > RETRY_AFTER_MAX ? RETRY_AFTER_MAX : (long)ra;
	} else if (err[0] == '\0')
		snprintf(err, CURL_ERROR_SIZE, "%s", curl_easy_strerror(rc));
	if (follow_curl_fatal(rc))
		st = -1;
	curl_slist_free_all(hl);
	return st;
}

enum delivery { DELIVERED, SKIPPED, STOPPED, REFUSED };

/* POST until a 2xx (or a 4xx to skip), backing off on 5xx/408/429 and
 * transport errors (waiting what a Retry-After asks, at most
 * RETRY_AFTER_MAX seconds). */
static enum delivery
deliver(CURL *h, const char *target, const char *feed, const char *cursor, const char *body)
{
	char reply[201], err[CURL_ERROR_SIZE];
	for (int attempt = 1;; attempt++) {
		long retry_after;
		long st = post_once(h, target, feed, cursor, body, reply, err, &retry_after);
		if (st >= 200 && st < 300)
			return DELIVERED;
		if (stopping) /* SIGTERM aborted the POST: it stays pending */
			return STOPPED;
		if (st < 0) {
			logf_("POST %s (%s:%s): %s", target, feed, cursor, err);
			return REFUSED;
		}
		if (st >= 400 && st < 500 && st != 408 && st != 429) {
			logf_("POST %s (%s:%s): HTTP %ld %s%s", target, feed, cursor, st, reply,
			      skip_4xx ? " - skipped (--skip-4xx)" : "");
			return skip_4xx ? SKIPPED : REFUSED;
		}
		if (st >= 300 && st < 400) {
			char *loc = NULL;
			curl_easy_getinfo(h, CURLINFO_REDIRECT_URL, &loc);
			logf_("POST %s (%s:%s): HTTP %ld redirect to %s is not followed (a "
			      "redirect "
			      "would turn the POST into a GET); give the final URL as TARGET_URL",
			      target, feed, cursor, st, loc ? loc : "(no Location)");
			return REFUSED;
		}
		int ms = retry_after >= 0 && (st == 429 || st == 503)
		                 ? (int)retry_after * 1000
		                 : follow_backoff_ms(attempt, 30000);
		if (st == 0)
			logf_("POST %s (%s:%s): %s; retry in %d ms", target, feed, cursor, err, ms);
		else
			logf_("POST %s (%s:%s): HTTP %ld %s; retry in %d ms", target, feed, cursor,
			      st, reply, ms);
		follow_sleep(ms, idle, NULL);
		if (stopping)
			return STOPPED;
	}
}

static char *
make_body(struct follow *f, const struct follow_change *ch)
{
	json_object *b = json_object_new_object();
	json_object_object_add(b, "feed", json_object_new_string(f->feed));
	json_object_object_add(b, "cursor", json_object_new_string(ch->cursor));
	json_object_object_add(b, "columns", json_object_get(f->columns));
	json_object_object_add(b, "inserted", json_object_get(ch->inserted));
	json_object_object_add(b, "deleted", json_object_get(ch->deleted));
	char *s = xstrdup(json_object_to_json_string_ext(b, JSON_C_TO_STRING_PLAIN));
	json_object_put(b);
	return s;
}

/* Deliver a body saved as pending by an earlier run, then commit it. */
static int
deliver_pending(struct follow *f, CURL *h, const char *target, char *pending)
{
	json_object *b = json_tokener_parse(pending), *cur, *ins, *del, *cols;
	if (b == NULL || !json_object_object_get_ex(b, "cursor", &cur) ||
	    !json_object_object_get_ex(b, "inserted", &ins) ||
	    !json_object_object_get_ex(b, "deleted", &del) ||
	    !json_object_object_get_ex(b, "columns", &cols) || !cursor_ok(cur) ||
	    !json_object_is_type(ins, json_type_array) ||
	    !json_object_is_type(del, json_type_array) ||
	    !json_object_is_type(cols, json_type_array)) {
		logf_("%s: the pending body is not a hook body", state_path);
		json_object_put(b);
		return 1;
	}
	const char *c = json_object_get_string(cur);
	logf_("resuming: posting the unacknowledged change %s:%s again", f->feed, c);
	enum delivery d = deliver(h, target, f->feed, c, pending);
	if (d == STOPPED || d == REFUSED) {
		json_object_put(b);
		return d == STOPPED ? 0 : 1;
	}
	struct follow_change ch = {.cursor = xstrdup(c),
	                           .inserted = json_object_get(ins),
	                           .deleted = json_object_get(del)};
	json_object_put(f->columns);
	f->columns = json_object_get(cols);
	follow_commit(f, &ch);
	f->state = FOLLOW_CONNECTING;
	json_object_put(b);
	return save_state(f, NULL) < 0 ? 1 : -1;
}

/* The secret in path, its trailing newline dropped; NULL after a message. */
static char *
read_secret(const char *path)
{
	FILE *fp = fopen(path, "r");
	if (fp == NULL) {
		logf_("--secret-file %s: cannot open: %s", path, strerror(errno));
		return NULL;
	}
	char buf[4096];
	size_t n = fread(buf, 1, sizeof(buf) - 1, fp);
	int err = errno;
	bool bad = ferror(fp), more = !bad && fgetc(fp) != EOF;
	fclose(fp);
	if (bad) {
		logf_("--secret-file %s: cannot read: %s", path, strerror(err));
		return NULL;
	}
	if (more) {
		logf_("--secret-file %s: longer than %zu bytes", path, sizeof(buf) - 1);
		return NULL;
	}
	buf[n] = '\0';
	while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
		buf[--n] = '\0';
	if (n == 0 || strlen(buf) != n) {
		logf_("--secret-file %s: %s", path,
		      n == 0 ? "empty (no secret)" : "holds a NUL byte");
		return NULL;
	}
	return xstrdup(buf);
}

int
main(int argc, char **argv)
{
	static const struct option opts[] = {{"state", required_argument, NULL, 's'},
	                                     {"secret-file", required_argument, NULL, 'k'},
	                                     {"filter", required_argument, NULL, 'f'},
	                                     {"skip-4xx", no_argument, NULL, '4'},
	                                     {"once", no_argument, NULL, 'o'},
	                                     {"timeout", required_argument, NULL, 't'},
	                                     {"post-timeout", required_argument, NULL, 'p'},
	                                     {"cacert", required_argument, NULL, 'C'},
	                                     {"help", no_argument, NULL, 'h'},
	                                     {"version", no_argument, NULL, 'V'},
	                                     {NULL, 0, NULL, 0}};
	char *filters[MAX_FILTERS], *end;
	const char *secret_file = NULL;
	int nfilters = 0, timeout = 25, c;
	bool once = false;
	while ((c = getopt_long(argc, argv, "hV", opts, NULL)) != -1) {
		switch (c) {
		case 's':
			state_path = optarg;
			break;
		case 'k':
			secret_file = optarg;
			break;
		case 'f':
			if (nfilters == MAX_FILTERS) {
				logf_("at most %d filters", MAX_FILTERS);
				return 2;
			}
			filters[nfilters++] = optarg;
			break;
		case '4':
			skip_4xx = true;
			break;
		case 'o':
			once = true;
			break;
		case 't':
			timeout = (int)strtol(optarg, &end, 10);
			if (*optarg == '\0' || *end || timeout < 0 || timeout > 3600) {
				logf_("--timeout %s: not 0..3600 seconds", optarg);
				return 2;
			}
			break;
		case 'p':
			post_timeout = strtol(optarg, &end, 10);
			if (*optarg == '\0' || *end || post_timeout < 1 || post_timeout > 3600) {
				logf_("--post-timeout %s: not 1..3600 seconds", optarg);
				return 2;
			}
			break;
		case 'C':
			if (access(optarg, R_OK) != 0) {
				logf_("--cacert %s: %s", optarg, strerror(errno));
				return 2;
			}
			cacert = optarg;
			break;
		case 'h':
			usage(stdout);
			return 0;
		case 'V':
			printf("tailgate-hook %s\n", PACKAGE_VERSION);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind != argc - 2 || state_path == NULL) {
		if (optind == argc - 2)
			logf_("--state FILE is required (the durable cursor)");
		usage(stderr);
		return 2;
	}
	const char *target = argv[optind + 1];
	if (strncmp(target, "http://", 7) != 0 && strncmp(target, "https://", 8) != 0) {
		logf_("%s: the target is not an http:// or https:// URL", target);
		return 2;
	}
	secret = secret_file
	                 ? read_secret(secret_file)
	                 : (getenv("TAILGATE_HOOK_SECRET") ? xstrdup(getenv("TAILGATE_HOOK_SECRET"))
	                                                   : NULL);
	if (secret_file && secret == NULL)
		return 2;
	if (secret == NULL || secret[0] == '\0') {
		logf_("no secret: give --secret-file FILE or set TAILGATE_HOOK_SECRET");
		free(secret);
		return 2;
	}
	curl_global_init(CURL_GLOBAL_DEFAULT);
	struct follow f;
	char err[512], *pending = NULL;
	int status = 0;
	CURL *h = NULL;
	if (follow_open(&f, argv[optind], filters, nfilters, err, sizeof(err)) < 0) {
		logf_("%s", err);
		free(secret);
		curl_global_cleanup();
		return 2;
	}
	f.timeout = once ? 0 : timeout;
	f.cacert = cacert;
	f.idle = idle;
	if (load_state(&f, &pending) < 0 || probe_state_dir() < 0) {
		status = 1;
		goto out;
	}
	struct sigaction sa = {.sa_handler = on_stop};
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	h = curl_easy_init();
	if (pending) {
		int rc = deliver_pending(&f, h, target, pending);
		if (rc >= 0) {
			status = rc;
			goto out;
		}
	}
	while (!stopping) {
		struct follow_change ch;
		enum follow_result r = follow_next(&f, &ch);
		if (r == FOLLOW_FATAL) {
			logf_("%s", f.errbuf);
			status = 1;
			break;
		}
		if (r == FOLLOW_RETRY) {
			if (stopping)
				break;
			logf_("%s", f.errbuf);
			if (f.attempt > 0)
				follow_sleep(follow_backoff_ms(f.attempt, f.backoff_cap_ms), idle,
				             NULL);
			continue;
		}
		if (r == FOLLOW_NOTHING) {
			if (once)
				break;
			continue;
		}
		bool first = f.cursor == NULL;
		bool empty = json_object_array_length(ch.inserted) == 0 &&
		             json_object_array_length(ch.deleted) == 0;
		if (empty && !first) { /* a resync that changed nothing */
			follow_commit(&f, &ch);
			if (save_state(&f, NULL) < 0) {
				status = 1;
				break;
			}
			continue;
		}
		char *body = make_body(&f, &ch);
		enum delivery d = save_state(&f, body) < 0
		                          ? REFUSED
		                          : deliver(h, target, f.feed, ch.cursor, body);
		free(body);
		if (d == STOPPED || d == REFUSED) {
			follow_change_free(&ch); /* still pending in the state file */
			status = d == REFUSED ? 1 : 0;
			break;
		}
		follow_commit(&f, &ch);
		if (save_state(&f, NULL) < 0) {
			status = 1;
			break;
		}
		if (once)
			break;
	}
out:
	free(pending);
	if (h)
		curl_easy_cleanup(h);
	follow_close(&f);
	free(secret);
	curl_global_cleanup();
	return status;
}
