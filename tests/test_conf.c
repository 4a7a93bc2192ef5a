/*
 * test_conf.c - tailgated.conf parsing: a full valid file, then every
 * refusal with its "FILE:LINE: reason".
 */
#include "conf.h"

#include "log.h"
#include "tap.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char good[] = "# a comment\n"
                           "; another\n"
                           "source = materialize\n"
                           "conninfo = \"host=mz port=6875 user=materialize options=--cluster=c\"\n"
                           "ring_dir = /tmp/rings\n"
                           "ring_size = 1M\n"
                           "backoff_min_ms = 100\n"
                           "backoff_max_ms = 5000\n"
                           "\n"
                           "[feed winning_bids]\n"
                           "view = winning_bids\n"
                           "ring_size = 64M\n"
                           "[ feed  top-10 ]\n"
                           "query = SELECT buyer, count(*) \\\n"
                           "        FROM winning_bids # not a comment \\\n"
                           "        GROUP BY buyer;  \n";

static const struct {
	const char *text;
	const char *err; /* expected message, after "t.conf:" */
} bad[] = {
        {"bogus = 1\n", "1: unknown key \"bogus\""},
        {"source = mysql\n", "1: bad source \"mysql\": materialize or postgresql"},
        {"source = materialize\nsource = materialize\n", "2: duplicate key \"source\""},
        {"slot_check_ms = 1000\nslot_check_ms = 2000\n", "2: duplicate key \"slot_check_ms\""},
        {"source = materialize\n[feed a]\nview = v\n[feed a]\nview = w\n",
         "4: duplicate feed \"a\" (first at line 2)"},
        {"source = materialize\n[feed a b]\n", "2: bad feed name \"a b\""},
        {"source = materialize\n[feed ]\n", "2: unknown section [feed]"},
        {"source = materialize\n[view x]\n", "2: unknown section [view x]"},
        {"source = materialize\n[feed a\n", "2: bad section header"},
        {"source = materialize\n[feed a]\nview = v\nview = w\n", "4: duplicate key \"view\""},
        {"source = materialize\n[feed a]\nview = v\nquery = select 1\n",
         "4: feed a: view and query are exclusive"},
        {"source = materialize\n[feed a]\nring_size = 12\n", "3: bad ring_size \"12\""},
        {"source = materialize\n[feed a]\nring_size = 8G\n", "3: bad ring_size \"8G\""},
        {"source = materialize\n[feed a]\nring_size = 1X\n", "3: bad ring_size \"1X\""},
        {"source = materialize\n[feed a]\n", "2: feed a: needs view = NAME or query"},
        {"source = materialize\n[feed a]\nview = v\ntable = t\n",
         "4: feed a: table, columns, where, slot and permanent_slot are for source = postgresql"},
        {"source = postgresql\n[feed a]\nquery = select 1\n",
         "3: feed a: view and query are for source = materialize"},
        {"source = postgresql\n[feed a]\ncolumns = a\n", "2: feed a: needs table ="},
        {"source = postgresql\n[feed a]\ntable = t\nslot = Bad-Slot\n", "4: bad slot \"Bad-Slot\""},
        {"source = postgresql\n[feed a]\ntable = t\npermanent_slot = maybe\n",
         "4: bad permanent_slot \"maybe\""},
        {"source = postgresql\n[feed a]\ntable = t\npermanent_slot = yes\npermanent_slot = no\n",
         "5: duplicate key \"permanent_slot\""},
        {"source = materialize\n[feed a]\nview = v\nbogus = 1\n",
         "4: unknown key \"bogus\" in [feed a]"},
        {"view = v\n", "1: key \"view\" belongs in a [feed NAME] section"},
        {"ring_dir = relative\n", "1: bad ring_dir \"relative\""},
        {"ring_group = no-such-group-here\n",
         "1: bad ring_group \"no-such-group-here\": no such group"},
        {"ring_group = root\nring_group = root\n", "2: duplicate key \"ring_group\""},
        {"backoff_min_ms = 0\n", "1: bad backoff_min_ms \"0\""},
        {"backoff_min_ms = 500\nbackoff_max_ms = 100\n[feed a]\ntable = t\n",
         " backoff_min_ms (500) is larger than backoff_max_ms (100)"},
        {"source = materialize\n", " no feeds"},
        {"just words\n", "1: expected key = value"},
        {" = x\n", "1: missing key"},
        {"source = materialize\n[feed a]\nview = \n", "3: empty value for \"view\""},
        {"source = materialize\n[feed a]\nview = x(1)\n", "3: bad view \"x(1)\""},
        /* a continued line reports its first line */
        {"source = materialize\n[feed a]\nquery = select 1 \\\n from t\nbogus \\\n = 1\n",
         "5: unknown key \"bogus\" in [feed a]"},
};

static struct conf *
parse_conninfo(const char *conninfo, char *err, size_t errlen)
{
	char text[512];

	snprintf(text, sizeof(text), "conninfo = %s\n[feed a]\ntable = t\n", conninfo);
	return conf_parse("t.conf", text, strlen(text), err, errlen);
}

/* The conninfo is parsed by libpq at load time: its password is kept for
 * log redaction, and a malformed one is refused with libpq's message
 * minus the quoted pieces, which can be a password's (security review:
 * the daemon logged 'missing "=" after "word" in connection info string'
 * and 'invalid percent-encoded token: "pass%zzword"' on every retry). */
static void
test_conninfo(void)
{
	static const struct {
		const char *conninfo, *password;
	} goods[] = {
	        {"host=h user=u password=s3cret dbname=d", "s3cret"},
	        {"host=h password='two words'", "two words"},
	        {"postgresql://u:s3cret@h:5432/d", "s3cret"},
	        {"postgresql://u:s3%20cret@h/d", "s3 cret"},
	        {"host=h user=u", NULL},
	        {"mydb", NULL}, /* a database name, not a connection string */
	        {"", NULL},     /* the PG* environment */
	};
	static const char *const bads[] = {
	        "host=h password=two s3cret",   /* an unquoted space */
	        "postgresql://u:s3cret%zz@h/d", /* a bad escape in the password */
	        "host=h password='s3cret",      /* unterminated quote */
	        "host=h s3cret=1",              /* an unknown keyword */
	        "postgresql://u@h/d?s3cret=1",  /* an unknown URI parameter */
	};
	char err[512];

	for (size_t i = 0; i < sizeof(goods) / sizeof(goods[0]); i++) {
		struct conf *c = parse_conninfo(goods[i].conninfo, err, sizeof(err));
		ok(c != NULL, "conninfo accepted: %s%s%s", goods[i].conninfo, c ? "" : ": ",
		   c ? "" : err);
		if (c == NULL)
			continue;
		if (goods[i].password)
			is_str(c->password, goods[i].password, "  its password is found");
		else
			ok(c->password == NULL, "  it has no password");
		conf_free(c);
	}
	for (size_t i = 0; i < sizeof(bads) / sizeof(bads[0]); i++) {
		struct conf *c = parse_conninfo(bads[i], err, sizeof(err));
		ok(c == NULL && strncmp(err, "t.conf:1: bad conninfo: ", 24) == 0,
		   "malformed conninfo refused at load: %s", bads[i]);
		ok(strstr(err, "s3cret") == NULL && strstr(err, "two") == NULL,
		   "  the message quotes none of it: %s", err);
		conf_free(c);
	}

	/* What the daemon does with the password: no log line shows it,
	 * whichever message (libpq's, an upstream's) quotes it. */
	char path[] = "/tmp/test_conf.XXXXXX", buf[4096];
	int fd = mkstemp(path), saved = dup(2);
	FILE *f;
	size_t n;

	dup2(fd, 2);
	log_init("test_conf", false);
	log_redact("s3cret");
	log_redact("s3cret"); /* twice: kept once */
	log_error("connecting: missing \"=\" after \"s3cret\" in connection info string");
	log_error("short s3cret%s", "");
	log_error("s3crets3cret and ends with s3cret");
	errno = ENOENT;
	log_error("no secret here");
	fflush(stderr);
	dup2(saved, 2);
	close(saved);
	f = fdopen(fd, "r");
	rewind(f);
	n = fread(buf, 1, sizeof(buf) - 1, f);
	buf[n] = '\0';
	fclose(f);
	unlink(path);
	ok(strstr(buf, "s3cret") == NULL, "log_redact: the secret never reaches the log");
	ok(strstr(buf, "after \"********\" in connection") != NULL &&
	           strstr(buf, "**************** and ends with ********") != NULL,
	   "  it is written as ********");
	ok(strstr(buf, "no secret here") != NULL, "  other lines are untouched");
}

/* Files saved by Windows editors: a UTF-8 byte-order mark is skipped, CRLF
 * and tabs are blanks; UTF-16 is refused by name (its NULs would say "NUL
 * byte"); a misspelt conninfo key gets a hint (the word stays hidden). */
static void
test_windows_files(void)
{
	static const char bom[] = "\xef\xbb\xbfsource\t=\tpostgresql\r\nring_dir = /tmp/r\t\r\n"
	                          "[feed a]\r\n\ttable\t=\tt\r\n";
	static const char utf16[] = "\xff\xfes\0o\0u\0r\0c\0e\0";
	char err[512];
	struct conf *c = conf_parse("w.conf", bom, strlen(bom), err, sizeof(err));

	ok(c != NULL, "a UTF-8 BOM, CRLF and tabs: parsed%s%s", c ? "" : ": ", c ? "" : err);
	if (c != NULL) {
		is_str(c->source, "postgresql", "  the first key after the BOM");
		is_str(c->ring_dir, "/tmp/r", "  a value before a tab and CR");
		is_str(c->feeds[0].table, "t", "  a feed key between tabs");
	}
	conf_free(c);
	c = conf_parse("w.conf", utf16, sizeof(utf16) - 1, err, sizeof(err));
	ok(c == NULL && strstr(err, "w.conf:1: the file is UTF-16") != NULL &&
	           strstr(err, "save it as UTF-8") != NULL,
	   "a UTF-16 file is refused by name");
	conf_free(c);
	c = parse_conninfo("host=h prot=5432", err, sizeof(err));
	ok(c == NULL && strstr(err, "bad conninfo") != NULL && strstr(err, "spelling") != NULL &&
	           strstr(err, "prot") == NULL,
	   "a misspelt conninfo key: a hint, not the word");
	conf_free(c);
}

int
main(void)
{
	char err[512];
	struct conf *c = conf_parse("t.conf", good, strlen(good), err, sizeof(err));
	uint64_t sz;

	ok(c != NULL, "the good file parses%s%s", c ? "" : ": ", c ? "" : err);
	if (c != NULL) {
		is_str(c->source, "materialize", "source");
		is_str(c->conninfo, "host=mz port=6875 user=materialize options=--cluster=c",
		       "conninfo, quotes removed");
		is_str(c->ring_dir, "/tmp/rings", "ring_dir");
		is_int(c->backoff_min_ms, 100, "backoff_min_ms");
		is_int(c->nfeeds, 2, "two feeds");
		is_str(c->feeds[0].name, "winning_bids", "feed 1 name");
		is_str(c->feeds[0].view, "winning_bids", "feed 1 view");
		is_int(c->feeds[0].ring_size, 64 << 20, "feed 1 ring_size");
		is_str(c->feeds[1].name, "top-10", "feed 2 name (blanks in the header)");
		is_str(c->feeds[1].query,
		       "SELECT buyer, count(*) \n        FROM winning_bids # not a comment "
		       "\n        GROUP BY buyer",
		       "continued query, '#' kept, trailing ';' dropped");
		is_int(c->feeds[1].ring_size, 1 << 20, "feed 2 gets the global ring_size");
		ok(c->feeds[1].line == 13, "feed 2 header line");
		ok(conf_find_feed(c, "top-10") == &c->feeds[1], "conf_find_feed");
		ok(conf_feed_equal(c, &c->feeds[0], c, &c->feeds[0]) &&
		           !conf_feed_equal(c, &c->feeds[0], c, &c->feeds[1]),
		   "conf_feed_equal");
	}

	const char *pg = "source = postgresql\n[feed bids]\ntable = public.bids\n"
	                 "columns = id, amount\nwhere = amount > 10\nslot = tg_bids\n"
	                 "permanent_slot = yes\n";
	struct conf *p = conf_parse("pg.conf", pg, strlen(pg), err, sizeof(err));
	ok(p != NULL && strcmp(p->feeds[0].table, "public.bids") == 0 &&
	           strcmp(p->feeds[0].columns, "id, amount") == 0 &&
	           strcmp(p->feeds[0].where, "amount > 10") == 0 &&
	           strcmp(p->feeds[0].slot, "tg_bids") == 0 && p->feeds[0].permanent_slot,
	   "postgresql keys parse");
	ok(c && p && !conf_feed_equal(c, &c->feeds[0], p, &p->feeds[0]),
	   "different sources are not equal");
	ok(p != NULL && p->ring_group == NULL, "no ring_group by default");
	conf_free(p);

	/* ring_group names a group; its gid is resolved when parsed (root: gid 0
	 * on every system). */
	const char *g = "ring_group = root\n[feed g]\ntable = t\n";
	p = conf_parse("g.conf", g, strlen(g), err, sizeof(err));
	ok(p != NULL && p->ring_group != NULL && strcmp(p->ring_group, "root") == 0 &&
	           p->ring_gid == 0,
	   "ring_group = root: the group and its gid 0%s%s", p ? "" : ": ", p ? "" : err);
	conf_free(p);

	/* Double quotes: SQL's own in table and columns, stripped elsewhere
	 * only around one whole quoted string. */
	const char *q = "source = postgresql\nconninfo = \"host=h port=1\"\n[feed q]\n"
	                "table = \"My Schema\".\"Mixed Case\"\ncolumns = \"Id\", \"Col A\"\n"
	                "where = \"flag\"\n[feed r]\ntable = \"orders\"\n"
	                "where = \"a\" = 'x' OR \"b\"\n";
	p = conf_parse("q.conf", q, strlen(q), err, sizeof(err));
	ok(p != NULL, "quoted values parse%s%s", p ? "" : ": ", p ? "" : err);
	if (p != NULL) {
		is_str(p->conninfo, "host=h port=1", "a wholly quoted conninfo loses its quotes");
		is_str(p->feeds[0].table, "\"My Schema\".\"Mixed Case\"",
		       "table keeps SQL identifier quotes");
		is_str(p->feeds[0].columns, "\"Id\", \"Col A\"", "columns keep them");
		is_str(p->feeds[0].where, "flag", "a wholly quoted where loses them");
		is_str(p->feeds[1].table, "\"orders\"", "a table in one pair of quotes keeps them");
		is_str(p->feeds[1].where, "\"a\" = 'x' OR \"b\"",
		       "a where with quotes inside keeps them");
	}
	conf_free(p);
	conf_free(c);

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char want[300];
		snprintf(want, sizeof(want), "t.conf:%s", bad[i].err);
		c = conf_parse("t.conf", bad[i].text, strlen(bad[i].text), err, sizeof(err));
		ok(c == NULL && strncmp(err, want, strlen(want)) == 0, "refused: %s", want);
		if (c != NULL || strncmp(err, want, strlen(want)) != 0)
			printf("#   got: %s\n", c ? "(accepted)" : err);
		conf_free(c);
	}

	ok(conf_parse_size("64K", &sz) && sz == 65536, "size 64K");
	ok(conf_parse_size("2MB", &sz) && sz == 2 << 20, "size 2MB");
	ok(conf_parse_size("123", &sz) && sz == 123, "size in bytes");
	ok(!conf_parse_size("-1", &sz) && !conf_parse_size("", &sz) &&
	           !conf_parse_size("99999999999999999999G", &sz),
	   "bad sizes refused");

	test_conninfo();
	test_windows_files();

	c = conf_load("/nonexistent/tailgated.conf", err, sizeof(err));
	ok(c == NULL && strstr(err, "/nonexistent/tailgated.conf: No such file") != NULL,
	   "a missing file names itself");
	return tap_done();
}
