/*
 * conf.c - reading tailgated.conf (conf.h, tailgated.conf(5)).
 *
 * Line-oriented: "key = value", "[feed NAME]" opens a feed section, '#'
 * or ';' at the start of a line is a comment, a line ending in a
 * backslash continues on the next (joined with a newline, for long
 * queries).  A value wholly in double quotes loses them (wholly_quoted:
 * not SQL names; quotes inside table, columns and view are SQL's and
 * kept).  A UTF-8 byte-order mark and CRLF line ends are read; a UTF-16
 * file is refused by name.  Everything is
 * checked while parsing; the first problem ends the parse with
 * "FILE:LINE: reason".
 */
#include "config.h" /* autoconf: _GNU_SOURCE and friends, first */

#include "conf.h"

#include "ring.h"

#include <ctype.h>
#include <errno.h>
#include <grp.h>
#include <libpq-fe.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#define CONF_MAX_BYTES (4 * 1024 * 1024)
#define RING_SIZE_MIN (64ull * 1024)
#define RING_SIZE_MAX (4ull * 1024 * 1024 * 1024)

/* Where each feed's kind-specific keys were first seen, checked once the
 * whole file (and so the source) is known. */
struct feed_lines {
	int mz;
	int pg;
	int perm;
};

/* The global keys, in the order global_key's switch handles them.  A
 * parser remembers which it has seen (a key given twice is an error). */
static const char *const global_keys[] = {
        "source",         "conninfo",         "ring_dir",       "ring_size",     "backoff_min_ms",
        "backoff_max_ms", "stall_timeout_ms", "error_retry_ms", "slot_check_ms", "ring_group"};
#define NGLOBAL_KEYS (sizeof(global_keys) / sizeof(global_keys[0]))

struct parser {
	const char *name;
	struct conf *c;
	struct feed_lines *lines;
	char *err;
	size_t errlen;
	int line;
	bool global_seen[NGLOBAL_KEYS];
};

static void __attribute__((format(printf, 3, 4)))
perr(struct parser *p, int line, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (line > 0)
		n = snprintf(p->err, p->errlen, "%s:%d: ", p->name, line);
	else
		n = snprintf(p->err, p->errlen, "%s: ", p->name);
	if (n < 0 || (size_t)n >= p->errlen)
		return;
	va_start(ap, fmt);
	vsnprintf(p->err + n, p->errlen - (size_t)n, fmt, ap);
	va_end(ap);
}

static char *
xstrdup(const char *s)
{
	char *d = strdup(s);

	if (d == NULL) {
		fprintf(stderr, "tailgated: out of memory\n");
		abort();
	}
	return d;
}

bool
conf_parse_size(const char *s, uint64_t *out)
{
	uint64_t v = 0, mult = 1;
	size_t i = 0;

	if (!isdigit((unsigned char)s[0]))
		return false;
	for (; isdigit((unsigned char)s[i]); i++) {
		if (v > (UINT64_MAX - 9) / 10)
			return false;
		v = v * 10 + (uint64_t)(s[i] - '0');
	}
	switch (s[i]) {
	case '\0':
		break;
	case 'k':
	case 'K':
		mult = 1024;
		i++;
		break;
	case 'm':
	case 'M':
		mult = 1024 * 1024;
		i++;
		break;
	case 'g':
	case 'G':
		mult = 1024 * 1024 * 1024;
		i++;
		break;
	default:
		return false;
	}
	if (s[i] == 'B' || s[i] == 'b')
		i++;
	if (s[i] != '\0' || v > UINT64_MAX / mult)
		return false;
	*out = v * mult;
	return true;
}

static bool
parse_bool(const char *s, bool *out)
{
	static const char *const yes[] = {"yes", "true", "on", "1"};
	static const char *const no[] = {"no", "false", "off", "0"};

	for (size_t i = 0; i < 4; i++) {
		if (strcasecmp(s, yes[i]) == 0) {
			*out = true;
			return true;
		}
		if (strcasecmp(s, no[i]) == 0) {
			*out = false;
			return true;
		}
	}
	return false;
}

static bool
parse_uint(const char *s, unsigned max, unsigned *out)
{
	unsigned long v;
	char *end;

	if (!isdigit((unsigned char)s[0]))
		return false;
	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno != 0 || *end != '\0' || v > max)
		return false;
	*out = (unsigned)v;
	return true;
}

/* PostgreSQL replication slot names: ASCII lower-case letters, digits and
 * '_', whatever the locale. */
static bool
slot_name_ok(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > 63)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '_'))
			return false;
	return true;
}

static bool
has_control(const char *s, bool allow_newline)
{
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if (c < 0x20 && c != '\t' && !(allow_newline && c == '\n'))
			return true;
	}
	return false;
}

static char *
trim(char *s)
{
	char *e;

	while (isspace((unsigned char)*s))
		s++;
	e = s + strlen(s);
	while (e > s && isspace((unsigned char)e[-1]))
		*--e = '\0';
	return s;
}

/* Set a string key once. */
static int
set_str(struct parser *p, char **slot, const char *key, const char *val)
{
	if (*slot != NULL) {
		perr(p, p->line, "duplicate key \"%s\"", key);
		return -1;
	}
	if (val[0] == '\0') {
		perr(p, p->line, "empty value for \"%s\"", key);
		return -1;
	}
	*slot = xstrdup(val);
	return 0;
}

static int
parse_ring_size(struct parser *p, const char *val, uint64_t *out)
{
	if (!conf_parse_size(val, out) || *out < RING_SIZE_MIN || *out > RING_SIZE_MAX) {
		perr(p, p->line,
		     "bad ring_size \"%s\": a size from 64K to 4G (digits with K, M or G)", val);
		return -1;
	}
	return 0;
}

/*
 * Whether a value is wholly in double quotes, which it then loses: one
 * quoted string, no other double quote inside.  Never for the keys that
 * name SQL objects (table, columns, view), where double quotes are SQL's
 * own identifier quoting: "My Schema"."Orders" or "Id", "Col A" stay as
 * written, and "orders" names the table orders either way.
 */
static bool
wholly_quoted(const char *key, const char *val)
{
	size_t n = strlen(val);

	if (strcmp(key, "table") == 0 || strcmp(key, "columns") == 0 || strcmp(key, "view") == 0)
		return false;
	return n >= 2 && val[0] == '"' && val[n - 1] == '"' && memchr(val + 1, '"', n - 2) == NULL;
}

/* libpq's parse errors quote what they trip on ("missing \"=\" after
 * \"x\"", "invalid percent-encoded token: \"x\""), and that may be part
 * of a password (an unquoted one with a space, a URI's user:password):
 * keep the message, drop what is inside the quotes. */
static void
unquote_message(char *dst, size_t cap, const char *msg)
{
	size_t o = 0;
	bool in_quote = false;

	for (const char *s = msg; *s != '\0' && o + 6 < cap; s++) {
		if (*s == '"') {
			if (!in_quote) {
				memcpy(dst + o, "\"...\"", 5);
				o += 5;
			}
			in_quote = !in_quote;
			continue;
		}
		if (!in_quote && *s != '\n')
			dst[o++] = *s;
	}
	dst[o] = '\0';
}

/* A connection string is parsed now (libpq's rules: one with '=' or a
 * URI; anything else is a database name), its password kept aside for
 * log redaction.  A malformed one is refused here rather than retried
 * (and logged, echoing its pieces) forever. */
static int
check_conninfo(struct parser *p, const char *val)
{
	PQconninfoOption *opts;
	char *msg = NULL;

	if (strchr(val, '=') == NULL && strncmp(val, "postgresql://", 13) != 0 &&
	    strncmp(val, "postgres://", 11) != 0)
		return 0;
	opts = PQconninfoParse(val, &msg);
	if (opts == NULL) {
		char clean[256];
		const char *hint = "";
		unquote_message(clean, sizeof(clean), msg ? msg : "out of memory");
		/* The word libpq names is hidden (it may be a piece of a
		 * password): say what to look for instead. */
		if (msg != NULL && strncmp(msg, "invalid connection option", 25) == 0)
			hint = " (a key libpq does not know: check the spelling of each key= "
			       "against libpq's parameter keywords, e.g. host port user dbname "
			       "password sslmode; a value with blanks needs single quotes)";
		else if (msg != NULL && strncmp(msg, "missing \"=\"", 11) == 0)
			hint = " (every piece is key=value; a value with blanks needs single "
			       "quotes: password='a b')";
		perr(p, p->line, "bad conninfo: %s%s", clean, hint);
		PQfreemem(msg);
		return -1;
	}
	free(p->c->password);
	p->c->password = NULL;
	for (PQconninfoOption *o = opts; o->keyword != NULL; o++)
		if (strcmp(o->keyword, "password") == 0 && o->val != NULL && o->val[0] != '\0')
			p->c->password = xstrdup(o->val);
	PQconninfoFree(opts);
	return 0;
}

static int
global_key(struct parser *p, const char *key, char *val)
{
	struct conf *c = p->c;
	size_t k;

	for (k = 0; k < NGLOBAL_KEYS; k++)
		if (strcmp(key, global_keys[k]) == 0)
			break;
	if (k == NGLOBAL_KEYS) {
		static const char *const feed_keys[] = {
		        "view", "query", "table", "columns", "where", "slot", "permanent_slot"};
		for (size_t i = 0; i < sizeof(feed_keys) / sizeof(feed_keys[0]); i++)
			if (strcmp(key, feed_keys[i]) == 0) {
				perr(p, p->line, "key \"%s\" belongs in a [feed NAME] section",
				     key);
				return -1;
			}
		perr(p, p->line, "unknown key \"%s\"", key);
		return -1;
	}
	if (p->global_seen[k]) {
		perr(p, p->line, "duplicate key \"%s\"", key);
		return -1;
	}
	p->global_seen[k] = true;

	switch (k) {
	case 0:
		if (strcmp(val, "materialize") != 0 && strcmp(val, "postgresql") != 0) {
			perr(p, p->line, "bad source \"%s\": materialize or postgresql", val);
			return -1;
		}
		free(c->source);
		c->source = xstrdup(val);
		return 0;
	case 1:
		if (has_control(val, false)) {
			perr(p, p->line, "control character in conninfo");
			return -1;
		}
		if (check_conninfo(p, val) != 0)
			return -1;
		free(c->conninfo);
		c->conninfo = xstrdup(val); /* may be empty: the PG* environment */
		return 0;
	case 2:
		if (val[0] != '/' || strlen(val) > 200) {
			perr(p, p->line,
			     "bad ring_dir \"%s\": an absolute path (200 bytes at most)", val);
			return -1;
		}
		free(c->ring_dir);
		c->ring_dir = xstrdup(val);
		return 0;
	case 3:
		return parse_ring_size(p, val, &c->ring_size);
	case 4:
	case 5: {
		unsigned v;
		if (!parse_uint(val, 3600 * 1000, &v) || v == 0) {
			perr(p, p->line, "bad %s \"%s\": milliseconds, 1 to 3600000", key, val);
			return -1;
		}
		if (k == 4)
			c->backoff_min_ms = v;
		else
			c->backoff_max_ms = v;
		return 0;
	}
	case 6:
	case 7:
	case 8: {
		unsigned v;
		if (!parse_uint(val, 24 * 3600 * 1000, &v) || (k == 7 && v == 0)) {
			perr(p, p->line, "bad %s \"%s\": milliseconds, %d to 86400000", key, val,
			     k == 7 ? 1 : 0);
			return -1;
		}
		if (k == 6)
			c->stall_timeout_ms = v;
		else if (k == 7)
			c->error_retry_ms = v;
		else
			c->slot_check_ms = v;
		return 0;
	}
	case 9: {
		struct group *gr = getgrnam(val);
		if (gr == NULL) {
			perr(p, p->line, "bad ring_group \"%s\": no such group", val);
			return -1;
		}
		free(c->ring_group);
		c->ring_group = xstrdup(val);
		c->ring_gid = (unsigned)gr->gr_gid;
		return 0;
	}
	}
	return -1;
}

static int
feed_key(struct parser *p, struct conf_feed *f, struct feed_lines *fl, const char *key, char *val)
{
	if (strcmp(key, "view") == 0 || strcmp(key, "query") == 0) {
		char **slot = key[0] == 'v' ? &f->view : &f->query;
		if (fl->mz == 0)
			fl->mz = p->line;
		if (has_control(val, key[0] == 'q')) {
			perr(p, p->line, "control character in %s", key);
			return -1;
		}
		if (key[0] == 'q') {
			/* A trailing semicolon would end the SUBSCRIBE early. */
			size_t n = strlen(val);
			while (n > 0 && (val[n - 1] == ';' || isspace((unsigned char)val[n - 1])))
				val[--n] = '\0';
		} else if (strchr(val, ';') != NULL || strchr(val, '(') != NULL) {
			perr(p, p->line,
			     "bad view \"%s\": an object name (use query = for a SELECT)", val);
			return -1;
		}
		if (set_str(p, slot, key, val) != 0)
			return -1;
		if (f->view != NULL && f->query != NULL) {
			perr(p, p->line, "feed %s: view and query are exclusive", f->name);
			return -1;
		}
		return 0;
	}
	if (strcmp(key, "table") == 0 || strcmp(key, "columns") == 0 || strcmp(key, "where") == 0 ||
	    strcmp(key, "slot") == 0) {
		char **slot = key[0] == 't'   ? &f->table
		              : key[0] == 'c' ? &f->columns
		              : key[0] == 'w' ? &f->where
		                              : &f->slot;
		if (fl->pg == 0)
			fl->pg = p->line;
		if (has_control(val, key[0] == 'w')) {
			perr(p, p->line, "control character in %s", key);
			return -1;
		}
		if (key[0] == 's' && !slot_name_ok(val)) {
			perr(p, p->line,
			     "bad slot \"%s\": 1-63 of lower-case letters, digits and _", val);
			return -1;
		}
		return set_str(p, slot, key, val);
	}
	if (strcmp(key, "permanent_slot") == 0) {
		if (fl->perm != 0) {
			perr(p, p->line, "duplicate key \"permanent_slot\"");
			return -1;
		}
		fl->perm = p->line;
		if (fl->pg == 0)
			fl->pg = p->line;
		if (!parse_bool(val, &f->permanent_slot)) {
			perr(p, p->line, "bad permanent_slot \"%s\": yes or no", val);
			return -1;
		}
		return 0;
	}
	if (strcmp(key, "ring_size") == 0) {
		if (f->ring_size != 0) {
			perr(p, p->line, "duplicate key \"ring_size\"");
			return -1;
		}
		return parse_ring_size(p, val, &f->ring_size);
	}
	perr(p, p->line, "unknown key \"%s\" in [feed %s]", key, f->name);
	return -1;
}

static int
open_feed(struct parser *p, char *hdr)
{
	struct conf *c = p->c;
	char *name;
	size_t n = strlen(hdr);
	struct conf_feed *f;

	if (n < 2 || hdr[n - 1] != ']') {
		perr(p, p->line, "bad section header: use [feed NAME]");
		return -1;
	}
	hdr[n - 1] = '\0';
	name = trim(hdr + 1);
	if (strncmp(name, "feed", 4) != 0 || !isspace((unsigned char)name[4])) {
		perr(p, p->line, "unknown section [%s]: use [feed NAME]", name);
		return -1;
	}
	name = trim(name + 4);
	if (!ring_feed_name_ok(name)) {
		perr(p, p->line, "bad feed name \"%s\": 1-%d of A-Z a-z 0-9 _ -", name,
		     RING_FEED_NAME_MAX);
		return -1;
	}
	for (size_t i = 0; i < c->nfeeds; i++)
		if (strcmp(c->feeds[i].name, name) == 0) {
			perr(p, p->line, "duplicate feed \"%s\" (first at line %d)", name,
			     c->feeds[i].line);
			return -1;
		}
	c->feeds = realloc(c->feeds, (c->nfeeds + 1) * sizeof(*c->feeds));
	p->lines = realloc(p->lines, (c->nfeeds + 1) * sizeof(*p->lines));
	if (c->feeds == NULL || p->lines == NULL) {
		fprintf(stderr, "tailgated: out of memory\n");
		abort();
	}
	f = &c->feeds[c->nfeeds];
	memset(f, 0, sizeof(*f));
	memset(&p->lines[c->nfeeds], 0, sizeof(*p->lines));
	f->name = xstrdup(name);
	f->line = p->line;
	c->nfeeds++;
	return 0;
}

/* Checks that need the whole file. */
static int
finish(struct parser *p)
{
	struct conf *c = p->c;
	bool mz = strcmp(c->source, "materialize") == 0;

	if (c->backoff_min_ms > c->backoff_max_ms) {
		perr(p, 0, "backoff_min_ms (%u) is larger than backoff_max_ms (%u)",
		     c->backoff_min_ms, c->backoff_max_ms);
		return -1;
	}
	if (c->nfeeds == 0) {
		perr(p, 0, "no feeds: add a [feed NAME] section");
		return -1;
	}
	for (size_t i = 0; i < c->nfeeds; i++) {
		struct conf_feed *f = &c->feeds[i];
		struct feed_lines *fl = &p->lines[i];
		if (f->ring_size == 0)
			f->ring_size = c->ring_size;
		if (mz && fl->pg != 0) {
			perr(p, fl->pg,
			     "feed %s: table, columns, where, slot and permanent_slot are for "
			     "source = postgresql (this file says materialize)",
			     f->name);
			return -1;
		}
		if (!mz && fl->mz != 0) {
			perr(p, fl->mz,
			     "feed %s: view and query are for source = materialize "
			     "(this file says postgresql)",
			     f->name);
			return -1;
		}
		if (mz && f->view == NULL && f->query == NULL) {
			perr(p, f->line, "feed %s: needs view = NAME or query = SELECT ...",
			     f->name);
			return -1;
		}
		if (!mz && f->table == NULL) {
			perr(p, f->line, "feed %s: needs table = [SCHEMA.]TABLE", f->name);
			return -1;
		}
	}
	return 0;
}

struct conf *
conf_parse(const char *name, const char *text, size_t len, char *err, size_t errlen)
{
	struct parser p;
	struct conf *c = calloc(1, sizeof(*c));
	struct {
		char *s;
		size_t len, cap;
	} logical = {0};
	size_t pos = 0;
	int start_line = 0;
	bool joining = false;

	if (c == NULL)
		abort();
	memset(&p, 0, sizeof(p));
	p.name = name;
	p.c = c;
	p.err = err;
	p.errlen = errlen;
	c->path = xstrdup(name);
	c->source = xstrdup("postgresql");
	c->conninfo = xstrdup("");
	c->ring_dir = xstrdup(RING_DEFAULT_DIR);
	c->ring_size = CONF_DEFAULT_RING_SIZE;
	c->backoff_min_ms = CONF_DEFAULT_BACKOFF_MIN_MS;
	c->backoff_max_ms = CONF_DEFAULT_BACKOFF_MAX_MS;
	c->stall_timeout_ms = CONF_DEFAULT_STALL_TIMEOUT_MS;
	c->error_retry_ms = CONF_DEFAULT_ERROR_RETRY_MS;
	c->slot_check_ms = CONF_DEFAULT_SLOT_CHECK_MS;

	if (len >= 2 && ((unsigned char)text[0] == 0xff || (unsigned char)text[0] == 0xfe) &&
	    ((unsigned char)text[1] == 0xff || (unsigned char)text[1] == 0xfe)) {
		perr(&p, 1,
		     "the file is UTF-16 (it starts with a byte-order mark); save it as UTF-8");
		goto failed;
	}
	if (memchr(text, '\0', len) != NULL) {
		perr(&p, 0, "NUL byte in the file");
		goto failed;
	}
	/* A UTF-8 byte-order mark (some Windows editors write one) is not part
	 * of the first key. */
	if (len >= 3 && memcmp(text, "\xef\xbb\xbf", 3) == 0)
		pos = 3;
	while (pos < len) {
		const char *ls = text + pos;
		const char *nl = memchr(ls, '\n', len - pos);
		size_t n = nl ? (size_t)(nl - ls) : len - pos;
		bool cont;

		pos += n + (nl ? 1 : 0);
		p.line++;
		if (!joining)
			start_line = p.line;
		if (n > 0 && ls[n - 1] == '\r')
			n--;
		cont = n > 0 && ls[n - 1] == '\\';
		if (cont)
			n--;
		if (logical.len + n + 2 > logical.cap) {
			logical.cap = (logical.len + n + 2) * 2;
			logical.s = realloc(logical.s, logical.cap);
			if (logical.s == NULL)
				abort();
		}
		if (joining)
			logical.s[logical.len++] = '\n';
		memcpy(logical.s + logical.len, ls, n);
		logical.len += n;
		logical.s[logical.len] = '\0';
		joining = cont && pos < len;
		if (joining)
			continue;

		/* A complete logical line. */
		int save = p.line;
		char *l = trim(logical.s), *eq, *key, *val;
		p.line = start_line;
		logical.len = 0;
		if (*l == '\0' || *l == '#' || *l == ';') {
			p.line = save;
			continue;
		}
		if (*l == '[') {
			if (open_feed(&p, l) != 0)
				goto failed;
			p.line = save;
			continue;
		}
		eq = strchr(l, '=');
		if (eq == NULL) {
			perr(&p, p.line, "expected key = value, [feed NAME] or a comment");
			goto failed;
		}
		*eq = '\0';
		key = trim(l);
		val = trim(eq + 1);
		if (wholly_quoted(key, val)) {
			val[strlen(val) - 1] = '\0';
			val++;
		}
		if (*key == '\0') {
			perr(&p, p.line, "missing key before '='");
			goto failed;
		}
		if (c->nfeeds == 0) {
			if (global_key(&p, key, val) != 0)
				goto failed;
		} else if (feed_key(&p, &c->feeds[c->nfeeds - 1], &p.lines[c->nfeeds - 1], key,
		                    val) != 0) {
			goto failed;
		}
		p.line = save;
	}
	if (finish(&p) != 0)
		goto failed;
	free(logical.s);
	free(p.lines);
	return c;
failed:
	free(logical.s);
	free(p.lines);
	conf_free(c);
	return NULL;
}

struct conf *
conf_load(const char *path, char *err, size_t errlen)
{
	struct conf *c;
	struct stat st;
	char *text;
	size_t n;
	FILE *fp = fopen(path, "r");

	if (fp == NULL) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return NULL;
	}
	if (fstat(fileno(fp), &st) != 0 || !S_ISREG(st.st_mode) || st.st_size > CONF_MAX_BYTES) {
		snprintf(err, errlen, "%s: not a regular file of at most %d bytes", path,
		         CONF_MAX_BYTES);
		fclose(fp);
		return NULL;
	}
	text = malloc((size_t)st.st_size + 1);
	if (text == NULL)
		abort();
	n = fread(text, 1, (size_t)st.st_size, fp);
	if (ferror(fp)) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		fclose(fp);
		free(text);
		return NULL;
	}
	fclose(fp);
	c = conf_parse(path, text, n, err, errlen);
	free(text);
	return c;
}

void
conf_free(struct conf *c)
{
	if (c == NULL)
		return;
	for (size_t i = 0; i < c->nfeeds; i++) {
		struct conf_feed *f = &c->feeds[i];
		free(f->name);
		free(f->view);
		free(f->query);
		free(f->table);
		free(f->columns);
		free(f->where);
		free(f->slot);
	}
	free(c->feeds);
	free(c->path);
	free(c->source);
	free(c->conninfo);
	free(c->password);
	free(c->ring_dir);
	free(c->ring_group);
	free(c);
}

const struct conf_feed *
conf_find_feed(const struct conf *c, const char *name)
{
	for (size_t i = 0; i < c->nfeeds; i++)
		if (strcmp(c->feeds[i].name, name) == 0)
			return &c->feeds[i];
	return NULL;
}

static bool
same(const char *a, const char *b)
{
	if (a == NULL || b == NULL)
		return a == b;
	return strcmp(a, b) == 0;
}

bool
conf_feed_equal(const struct conf *ca, const struct conf_feed *fa, const struct conf *cb,
                const struct conf_feed *fb)
{
	return same(ca->source, cb->source) && same(ca->conninfo, cb->conninfo) &&
	       same(ca->ring_dir, cb->ring_dir) && same(fa->name, fb->name) &&
	       same(fa->view, fb->view) && same(fa->query, fb->query) &&
	       same(fa->table, fb->table) && same(fa->columns, fb->columns) &&
	       same(fa->where, fb->where) && same(fa->slot, fb->slot) &&
	       fa->permanent_slot == fb->permanent_slot && fa->ring_size == fb->ring_size;
}
