/*
 * tailgate-watch.c - watch a live feed in a terminal, as watch-sql does.
 *
 *   tailgate-watch [--once] [--filter EXPR]... [--sort COL] [--limit N]
 *                  [--columns a,b] [--timeout S] URL
 *
 * On a terminal it draws the table on the alternate screen and redraws it
 * in place after every change, the rows of the last change in reverse
 * video, the cursor and the follower's state in a status line.  Otherwise
 * it prints one line per changed row: "+ ROW CURSOR" or "- ROW CURSOR",
 * ROW being the row's JSON array.  SIGINT and SIGTERM leave the terminal
 * as it was; SIGWINCH redraws.
 *
 * Values, column names and messages come from the server: they are drawn
 * as text only.  Control characters (C0, DEL, C1) and bytes that are not
 * characters in the locale show as '?', and widths are counted in
 * terminal columns (wcwidth), so no value can move the cursor, change
 * the screen or split a wide character.
 */
#include "config.h"

#include "follow.h"
#include "xmalloc.h"

#include <curl/curl.h>
#include <errno.h>
#include <getopt.h>
#include <locale.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>
#include <wchar.h>

#define MAX_FILTERS 32
#define SCREEN_ON "\033[?1049h\033[?25l"
#define SCREEN_OFF "\033[?25h\033[?1049l"

static volatile sig_atomic_t got_winch;
static bool tty;
static bool screen_on;
static const char *sort_col;
static long limit = -1;
static char *columns_opt;
static json_object *last_ins; /* rows of the last change, highlighted */
static size_t last_nins, last_ndel;

static void
usage(FILE *out)
{
	fprintf(out,
	        "usage: tailgate-watch [options] URL\n"
	        "\n"
	        "Follow a tailgate feed (URL = http://HOST/feeds/NAME) and show its rows live.\n"
	        "On a terminal the table is redrawn in place; otherwise one line is printed\n"
	        "per changed row: \"+ ROW CURSOR\" or \"- ROW CURSOR\".\n"
	        "\n"
	        "  --once            print the current table and exit\n"
	        "  --filter EXPR     keep rows matching COLUMN=OP.VALUE (repeatable), e.g. "
	        "amount=gt.10\n"
	        "  --sort COL        sort by COL (numbers numerically), descending with -COL\n"
	        "  --limit N         show at most N rows\n"
	        "  --columns a,b     show these columns only, in this order\n"
	        "  --timeout S       long-poll timeout in seconds (default 25)\n"
	        "  -h, --help        this help\n"
	        "  -V, --version     print the version\n"
	        "\n"
	        "Exit status: 0 after --once or Ctrl-C, 1 when the server refuses the feed,\n"
	        "2 for bad usage (also a URL naming several feeds).\n");
}

/* Async-signal-safe: restore the screen and leave. */
static void
on_stop(int sig)
{
	if (screen_on) {
		ssize_t w = write(STDOUT_FILENO, SCREEN_OFF, sizeof(SCREEN_OFF) - 1);
		(void)w;
	}
	_exit(sig == SIGINT ? 0 : 128 + sig);
}

static void
on_winch(int sig)
{
	got_winch = 1;
}

/* ---- the table ------------------------------------------------------------ */

static const char *
cell_text(json_object *v)
{
	if (v == NULL)
		return "NULL";
	if (json_object_is_type(v, json_type_string))
		return json_object_get_string(v);
	return json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN);
}

/* ---- text safe for a terminal --------------------------------------------- */

struct line {
	char *p;
	size_t n, cap;
	int cols; /* terminal columns used */
};

static void
line_put(struct line *l, const char *s, size_t n, int w)
{
	if (l->n + n + 1 > l->cap) {
		l->cap = (l->n + n + 1) * 2;
		l->p = xrealloc(l->p, l->cap);
	}
	memcpy(l->p + l->n, s, n);
	l->n += n;
	l->p[l->n] = '\0';
	l->cols += w;
}

/* Append t to l as printable text, at most max terminal columns (max < 0:
 * no limit), then spaces up to pad columns.  A character that is not
 * printable (a control, a byte that is not a character) shows as '?'. */
static void
line_text(struct line *l, const char *t, int max, int pad)
{
	mbstate_t ps;
	memset(&ps, 0, sizeof(ps));
	int used = 0;
	size_t len = strlen(t);
	while (len > 0) {
		wchar_t wc;
		size_t k = mbrtowc(&wc, t, len, &ps);
		int w;
		if (k == (size_t)-1 || k == (size_t)-2 || k == 0) {
			memset(&ps, 0, sizeof(ps));
			k = 1;
			wc = L'?';
			w = -1;
		} else
			w = wcwidth(wc);
		if (w < 0 || (w == 0 && wc != 0 && k == 1)) {
			if (max >= 0 && used + 1 > max)
				break;
			line_put(l, "?", 1, 1);
			used++;
		} else {
			if (max >= 0 && used + w > max)
				break;
			line_put(l, t, k, w);
			used += w;
		}
		t += k;
		len -= k;
	}
	for (; used < pad; used++)
		line_put(l, " ", 1, 1);
}

/* t's width in terminal columns as line_text draws it. */
static int
text_width(const char *t, int max)
{
	struct line l = {0};
	line_text(&l, t, max, 0);
	free(l.p);
	return l.cols;
}

static int
column_index(json_object *cols, const char *name)
{
	for (size_t i = 0; i < json_object_array_length(cols); i++) {
		json_object *c = json_object_array_get_idx(cols, i), *n;
		if (json_object_object_get_ex(c, "name", &n) &&
		    strcmp(json_object_get_string(n), name) == 0)
			return (int)i;
	}
	return -1;
}

static int sort_idx = -1, sort_desc;

static int
cmp_cells(json_object *a, json_object *b)
{
	if (a == NULL || b == NULL)
		return (a != NULL) - (b != NULL);
	const char *sa = cell_text(a);
	char *ea, *eb;
	double da = strtod(sa, &ea);
	bool na = *sa && *ea == '\0';
	char *copy = xstrdup(sa); /* cell_text of b may reuse a's buffer */
	const char *sb = cell_text(b);
	double db = strtod(sb, &eb);
	bool nb = *sb && *eb == '\0';
	int r = (na && nb) ? (da > db) - (da < db) : strcmp(copy, sb);
	free(copy);
	return r;
}

static int
cmp_rows(const void *x, const void *y)
{
	json_object *a = *(json_object *const *)x, *b = *(json_object *const *)y;
	int r = cmp_cells(json_object_array_get_idx(a, (size_t)sort_idx),
	                  json_object_array_get_idx(b, (size_t)sort_idx));
	return sort_desc ? -r : r;
}

/* Which columns to show: indexes into the feed's columns; -1 on error. */
static int
pick_columns(json_object *cols, int *idx, int max)
{
	int n = 0;
	if (columns_opt == NULL) {
		for (size_t i = 0; i < json_object_array_length(cols) && n < max; i++)
			idx[n++] = (int)i;
		return n;
	}
	char *list = xstrdup(columns_opt), *save = NULL;
	for (char *t = strtok_r(list, ",", &save); t && n < max; t = strtok_r(NULL, ",", &save)) {
		int i = column_index(cols, t);
		if (i < 0) {
			fprintf(stderr,
			        "tailgate-watch: --columns: the feed has no column \"%s\"\n", t);
			free(list);
			return -1;
		}
		idx[n++] = i;
	}
	free(list);
	return n;
}

static bool
highlighted(json_object *row)
{
	if (last_ins == NULL)
		return false;
	char *k = xstrdup(follow_row_key(row));
	bool hit = false;
	for (size_t i = 0; i < json_object_array_length(last_ins) && !hit; i++)
		hit = strcmp(k, follow_row_key(json_object_array_get_idx(last_ins, i))) == 0;
	free(k);
	return hit;
}

/* Print the table (columns, rows sorted and limited) to stdout; at most
 * height lines of rows when height > 0, each cut at width. */
static int
print_table(struct follow *f, int width, int height)
{
	int idx[256];
	int nc = pick_columns(f->columns, idx, 256);
	if (nc < 0)
		return -1;
	json_object *rows = follow_rows_json(f);
	size_t n = json_object_array_length(rows);
	json_object **v = xcalloc(n, sizeof(*v));
	for (size_t i = 0; i < n; i++)
		v[i] = json_object_array_get_idx(rows, i);
	if (sort_idx >= 0 && n > 1)
		qsort(v, n, sizeof(*v), cmp_rows);
	if (limit >= 0 && (size_t)limit < n)
		n = (size_t)limit;
	if (height > 0 && (size_t)height < n)
		n = (size_t)height;
	int w[256];
	for (int c = 0; c < nc; c++) {
		json_object *nm;
		json_object_object_get_ex(json_object_array_get_idx(f->columns, (size_t)idx[c]),
		                          "name", &nm);
		w[c] = text_width(json_object_get_string(nm), 40);
		for (size_t i = 0; i < n; i++) {
			int l = text_width(
			        cell_text(json_object_array_get_idx(v[i], (size_t)idx[c])), 40);
			if (l > w[c])
				w[c] = l;
		}
	}
	struct line line = {0};
	for (long r = -1; r < (long)n; r++) {
		line.n = 0;
		line.cols = 0;
		line_put(&line, "", 0, 0);
		for (int c = 0; c < nc && (width <= 0 || line.cols < width); c++) {
			json_object *nm = NULL;
			const char *t;
			if (r < 0) {
				json_object_object_get_ex(
				        json_object_array_get_idx(f->columns, (size_t)idx[c]),
				        "name", &nm);
				t = json_object_get_string(nm);
			} else
				t = cell_text(json_object_array_get_idx(v[r], (size_t)idx[c]));
			int room = width > 0 ? width - line.cols - (c ? 2 : 0) : -1;
			if (width > 0 && room <= 0)
				break;
			if (c)
				line_put(&line, "  ", 2, 2);
			int cw = room >= 0 && room < w[c] ? room : w[c];
			line_text(&line, t ? t : "", cw, cw);
		}
		while (line.n > 0 && line.p[line.n - 1] == ' ')
			line.p[--line.n] = '\0';
		bool hl = tty && r >= 0 && highlighted(v[r]);
		printf("%s%s%s%s\n", r < 0 && tty ? "\033[1m" : (hl ? "\033[7m" : ""), line.p,
		       (r < 0 && tty) || hl ? "\033[0m" : "", tty ? "\033[K" : "");
	}
	free(line.p);
	free(v);
	json_object_put(rows);
	return 0;
}

static void
redraw(struct follow *f)
{
	struct winsize ws = {0};
	if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) < 0 || ws.ws_row == 0)
		ws.ws_row = 24, ws.ws_col = 80;
	fputs("\033[H", stdout);
	char status[1024];
	snprintf(status, sizeof(status), "%s  %s  cursor %s  rows %zu  last +%zu -%zu%s%s", f->feed,
	         follow_state_name(f->state), f->cursor ? f->cursor : "-", follow_nrows(f),
	         last_nins, last_ndel, f->state != FOLLOW_LIVE && f->errbuf[0] ? "  " : "",
	         f->state != FOLLOW_LIVE ? f->errbuf : "");
	struct line sl = {0};
	line_put(&sl, "", 0, 0);
	line_text(&sl, status, ws.ws_col, 0);
	if (f->columns)
		print_table(f, ws.ws_col, ws.ws_row - 3);
	fputs("\033[J", stdout);
	printf("\033[%d;1H\033[7m%s\033[0m\033[K", ws.ws_row, sl.p);
	free(sl.p);
	fflush(stdout);
}

static int
idle(void *arg)
{
	if (got_winch) {
		got_winch = 0;
		redraw(arg);
	}
	return 0;
}

static void
print_lines(json_object *rows, char sign, const char *cursor)
{
	for (size_t i = 0; i < json_object_array_length(rows); i++)
		printf("%c %s %s\n", sign, follow_row_key(json_object_array_get_idx(rows, i)),
		       cursor);
}

int
main(int argc, char **argv)
{
	static const struct option opts[] = {{"once", no_argument, NULL, 'o'},
	                                     {"filter", required_argument, NULL, 'f'},
	                                     {"sort", required_argument, NULL, 's'},
	                                     {"limit", required_argument, NULL, 'l'},
	                                     {"columns", required_argument, NULL, 'c'},
	                                     {"timeout", required_argument, NULL, 't'},
	                                     {"help", no_argument, NULL, 'h'},
	                                     {"version", no_argument, NULL, 'V'},
	                                     {NULL, 0, NULL, 0}};
	char *filters[MAX_FILTERS];
	int nfilters = 0, timeout = 25, c;
	bool once = false;
	char *end;
	while ((c = getopt_long(argc, argv, "hV", opts, NULL)) != -1) {
		switch (c) {
		case 'o':
			once = true;
			break;
		case 'f':
			if (nfilters == MAX_FILTERS) {
				fprintf(stderr, "tailgate-watch: at most %d filters\n",
				        MAX_FILTERS);
				return 2;
			}
			filters[nfilters++] = optarg;
			break;
		case 's':
			sort_col = optarg;
			break;
		case 'l':
			limit = strtol(optarg, &end, 10);
			if (*optarg == '\0' || *end || limit < 0) {
				fprintf(stderr, "tailgate-watch: --limit %s: not a count\n",
				        optarg);
				return 2;
			}
			break;
		case 'c':
			columns_opt = optarg;
			break;
		case 't':
			timeout = (int)strtol(optarg, &end, 10);
			if (*optarg == '\0' || *end || timeout < 0 || timeout > 3600) {
				fprintf(stderr,
				        "tailgate-watch: --timeout %s: not 0..3600 seconds\n",
				        optarg);
				return 2;
			}
			break;
		case 'h':
			usage(stdout);
			return 0;
		case 'V':
			printf("tailgate-watch %s\n", PACKAGE_VERSION);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind != argc - 1) {
		usage(stderr);
		return 2;
	}
	setlocale(LC_CTYPE, ""); /* widths of characters: wcwidth */
	curl_global_init(CURL_GLOBAL_DEFAULT);
	struct follow f;
	char err[512];
	if (follow_open(&f, argv[optind], filters, nfilters, err, sizeof(err)) < 0) {
		fprintf(stderr, "tailgate-watch: %s\n", err);
		return 2;
	}
	f.timeout = timeout;
	tty = !once && isatty(STDOUT_FILENO);
	signal(SIGINT, on_stop);
	signal(SIGTERM, on_stop);
	signal(SIGHUP, on_stop);
	signal(SIGPIPE, SIG_IGN);
	if (tty) {
		struct sigaction sa = {.sa_handler = on_winch};
		sigaction(SIGWINCH, &sa, NULL); /* no SA_RESTART: nanosleep wakes */
		f.idle = idle;
		f.idle_arg = &f;
		screen_on = true;
		fputs(SCREEN_ON, stdout);
		redraw(&f);
	}
	for (;;) {
		struct follow_change ch;
		enum follow_result r = follow_next(&f, &ch);
		if (r == FOLLOW_FATAL) {
			if (screen_on) {
				fputs(SCREEN_OFF, stdout);
				fflush(stdout);
				screen_on = false;
			}
			fprintf(stderr, "tailgate-watch: %s\n", f.errbuf);
			json_object_put(last_ins);
			follow_close(&f);
			curl_global_cleanup();
			return 1;
		}
		if (r == FOLLOW_RETRY) {
			if (!tty)
				fprintf(stderr, "tailgate-watch: %s\n", f.errbuf);
			else
				redraw(&f);
			if (f.attempt > 0)
				follow_sleep(follow_backoff_ms(f.attempt, f.backoff_cap_ms),
				             tty ? idle : NULL, &f);
			continue;
		}
		if (r == FOLLOW_NOTHING) {
			if (tty)
				redraw(&f);
			continue;
		}
		if (sort_col && sort_idx < 0) {
			sort_desc = sort_col[0] == '-';
			sort_idx = column_index(f.columns, sort_col + sort_desc);
			if (sort_idx < 0) {
				if (screen_on)
					fputs(SCREEN_OFF, stdout);
				fflush(stdout);
				fprintf(stderr,
				        "tailgate-watch: --sort: the feed has no column \"%s\"\n",
				        sort_col + sort_desc);
				follow_change_free(&ch);
				json_object_put(last_ins);
				follow_close(&f);
				curl_global_cleanup();
				return 2;
			}
		}
		if (!tty && !once) {
			print_lines(ch.deleted, '-', ch.cursor);
			print_lines(ch.inserted, '+', ch.cursor);
		}
		last_nins = json_object_array_length(ch.inserted);
		last_ndel = json_object_array_length(ch.deleted);
		json_object_put(last_ins);
		last_ins = ch.snapshot ? NULL : json_object_get(ch.inserted);
		follow_commit(&f, &ch);
		if (once) {
			int rc = print_table(&f, 0, 0) < 0 ? 2 : 0;
			fflush(stdout);
			json_object_put(last_ins);
			follow_close(&f);
			curl_global_cleanup();
			return rc;
		}
		if (tty)
			redraw(&f);
		else if (fflush(stdout) == EOF && errno == EPIPE)
			return 0;
	}
}
