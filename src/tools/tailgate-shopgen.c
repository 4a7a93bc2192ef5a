/*
 * tailgate-shopgen.c - the shop's load generator for PostgreSQL.
 *
 * Writes what the e-commerce seed's load generator writes, into the tables
 * of sql/shop/shop.sql: items and users once (kept when they exist), then a
 * steady stream of purchases (default 20/s) and pageviews (default
 * 1,000/s).  Purchases go through buy(), which takes the quantity off the
 * item's inventory and skips an order the stock cannot cover; stock comes
 * back only from the warehouse (tools/warehouse.py), which re-orders when
 * low_stock alerts it.
 *
 * Items have a popularity (how often they are viewed) and a conversion (how
 * often a view becomes an order), both skewed, so the item summary has
 * leaders and the funnel differs per item.  80% of pageviews are product
 * pages (/products/N), the rest /, /cart and /search.
 *
 * Time advances in ticks (default 100 ms).  Each tick is two transactions
 * sent in libpq pipeline mode: the purchases (SELECT buy(...), with
 * expire_orders_per_minute()), then the pageviews as one multi-row INSERT.
 * Separate transactions keep the lock order of sql/shop/shop.sql (items
 * before derived rows).  At most --pipeline ticks are in flight; when the
 * server falls behind, ticks are caught up, never skipped.
 */
#include "gen.h"
#include "log.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <time.h>
#include <unistd.h>

#define SHOPGEN_VERSION "0.1.0"
#define SYNCS_PER_TICK 2

/* ---- options -------------------------------------------------------------------- */

struct opts {
	const char *dsn;
	double purchases; /* per second */
	double pageviews; /* per second */
	double duration;  /* seconds, 0: until stopped */
	int items;
	int users;
	int inventory; /* initial stock of a new item: inventory/2 .. inventory */
	int max_quantity;
	int tick_ms;
	int pipeline;
	uint64_t seed;
	int report_s;
	bool quiet;
};

static void
usage(FILE *f)
{
	fprintf(f,
	        "usage: tailgate-shopgen [options]\n"
	        "\n"
	        "Write the shop (sql/shop/shop.sql must be loaded) at a steady rate: purchases\n"
	        "through buy(), which takes stock off items.inventory, and pageviews.\n"
	        "\n"
	        "  -d, --dsn CONNINFO        libpq connection string (default: PG* environment)\n"
	        "  -p, --purchases N         purchases per second (default 20)\n"
	        "  -v, --pageviews N         pageviews per second (default 1000)\n"
	        "  -t, --duration SECONDS    stop after this long (default: until SIGINT/SIGTERM)\n"
	        "      --items N             items to create (default 100)\n"
	        "      --users N             users to create (default 1000)\n"
	        "      --inventory N         initial stock of a new item, N/2..N (default 60)\n"
	        "      --max-quantity N      items per purchase, 1..N (default 3)\n"
	        "      --tick MS             one tick every MS (default 100)\n"
	        "      --pipeline N          ticks in flight at once (default 4)\n"
	        "      --seed N              random seed (default: from the clock)\n"
	        "      --report SECONDS      progress line every SECONDS on stderr (default 10, "
	        "0 off)\n"
	        "  -q, --quiet               no progress lines\n"
	        "  -h, --help                this help\n"
	        "  -V, --version             print the version\n");
}

/* ---- random numbers (xorshift64*) ------------------------------------------------- */

/* A weighted choice: index i with probability w[i] / total, by binary
 * search over the cumulative weights cum[0..n-1] (cum[n-1] == total). */
static int
pick(const double *cum, int n)
{
	double x = gen_rng_unit() * cum[n - 1];
	int lo = 0, hi = n - 1;

	while (lo < hi) {
		int mid = (lo + hi) / 2;

		if (cum[mid] > x)
			hi = mid;
		else
			lo = mid + 1;
	}
	return lo;
}

/* ---- SQL text ------------------------------------------------------------------------- */

/* Item names: an adjective and a product of a category. */
static const char *const adjectives[] = {
        "Classic", "Deluxe", "Eco", "Compact", "Vintage", "Smart", "Rugged", "Mini", "Pro", "Soft",
};
#define N_ADJ (sizeof(adjectives) / sizeof(adjectives[0]))

static const struct {
	const char *category;
	const char *products[5];
	int price_lo, price_hi; /* dollars */
} catalog[] = {
        {"apparel", {"T-Shirt", "Hoodie", "Cap", "Scarf", "Sneakers"}, 12, 90},
        {"kitchen", {"Mug", "Kettle", "Knife Set", "Teapot", "Skillet"}, 8, 120},
        {"electronics", {"Headphones", "Charger", "Speaker", "Keyboard", "Webcam"}, 15, 250},
        {"books", {"Cookbook", "Atlas", "Novel", "Notebook", "Field Guide"}, 6, 45},
        {"outdoor", {"Tent", "Backpack", "Lantern", "Water Bottle", "Hammock"}, 10, 220},
};
#define N_CAT (sizeof(catalog) / sizeof(catalog[0]))

static const char *const channels[] = {"direct", "search", "social", "email", "ads"};
static const double channel_cum[] = {0.30, 0.65, 0.82, 0.92, 1.00};
#define N_CHANNELS (sizeof(channels) / sizeof(channels[0]))

static const char *const searches[] = {"gift", "sale", "new", "blue", "camping", "coffee"};
#define N_SEARCHES (sizeof(searches) / sizeof(searches[0]))

/* ---- the generator ---------------------------------------------------------------------- */

struct gen {
	struct opts o;
	PGconn *conn;
	int64_t *item_ids; /* the items of the database, o.items of them */
	int nitems;
	double *view_cum; /* cumulative popularity per item */
	double *buy_cum;  /* cumulative popularity x conversion per item */
	uint64_t tick;
	double purchase_acc, pageview_acc;
	struct gen_pipe pipe;
	/* counters */
	uint64_t orders, purchases, pageviews, expired;
	double max_lag_ms;
};

/* Items 1..n and users 1..n when missing (an earlier run's stay as they
 * are, inventory included). */
static bool
create_catalog(struct gen *g)
{
	struct gen_sql s = {0};
	PGresult *r;

	gen_sql_printf(&s, "INSERT INTO items (id, name, category, price, inventory) VALUES ");
	for (int i = 0; i < g->o.items; i++) {
		size_t c = (size_t)i % N_CAT;
		size_t p = ((size_t)i / N_CAT) % 5;
		size_t a = ((size_t)i / (N_CAT * 5)) % N_ADJ;
		int64_t cents = gen_rng_range(catalog[c].price_lo * 100, catalog[c].price_hi * 100);

		gen_sql_printf(&s, "%s(%d,'%s %s','%s',%" PRId64 ".%02d,%" PRId64 ")", i ? "," : "",
		               i + 1, adjectives[a], catalog[c].products[p], catalog[c].category,
		               cents / 100, (int)(cents % 100),
		               gen_rng_range(g->o.inventory / 2, g->o.inventory));
	}
	gen_sql_printf(&s, " ON CONFLICT DO NOTHING;\nINSERT INTO users (id, name, email) VALUES ");
	for (int i = 0; i < g->o.users; i++) {
		const char *f, *l;

		gen_user_name((size_t)i, &f, &l);

		gen_sql_printf(&s, "%s(%d,'%s %s','%s.%s%d@example.com')", i ? "," : "", i + 1, f,
		               l, f, l, i + 1);
	}
	gen_sql_printf(&s, " ON CONFLICT DO NOTHING");
	r = gen_exec(g->conn, s.p, PGRES_COMMAND_OK);
	free(s.p);
	if (!r)
		return false;
	PQclear(r);
	return true;
}

/* The items to sell: every item of the table (the catalog may hold more
 * than this run created), each with a popularity and a conversion. */
static bool
load_items(struct gen *g)
{
	PGresult *r = gen_exec(g->conn, "SELECT id FROM items ORDER BY id", PGRES_TUPLES_OK);
	int n;

	if (!r)
		return false;
	n = PQntuples(r);
	if (n == 0) {
		log_error("the items table is empty");
		PQclear(r);
		return false;
	}
	free(g->item_ids);
	free(g->view_cum);
	free(g->buy_cum);
	g->item_ids = calloc((size_t)n, sizeof(*g->item_ids));
	g->view_cum = calloc((size_t)n, sizeof(*g->view_cum));
	g->buy_cum = calloc((size_t)n, sizeof(*g->buy_cum));
	if (!g->item_ids || !g->view_cum || !g->buy_cum)
		fatal("out of memory");
	/* Popularity falls off as 1/rank^0.8 over a shuffled rank; conversion
	 * is 1% to 8%, independent of it.  Seeded: the same seed, the same
	 * shop. */
	double vsum = 0, bsum = 0;
	for (int i = 0; i < n; i++) {
		int rank = (int)gen_rng_range(1, n);
		double view = 1.0 / pow(rank, 0.8);
		double conv = 0.01 + 0.07 * gen_rng_unit();

		g->item_ids[i] = strtoll(PQgetvalue(r, i, 0), NULL, 10);
		vsum += view;
		bsum += view * conv;
		g->view_cum[i] = vsum;
		g->buy_cum[i] = bsum;
	}
	g->nitems = n;
	PQclear(r);
	return true;
}

static bool
setup_once(struct gen *g)
{
	PGresult *r = gen_exec(g->conn,
	                       "SELECT to_regclass('pageviews') IS NOT NULL AND "
	                       "to_regprocedure('buy(int8[],int8[],int4[])') IS NOT NULL",
	                       PGRES_TUPLES_OK);

	if (!r)
		return false;
	if (PQntuples(r) != 1 || strcmp(PQgetvalue(r, 0, 0), "t") != 0) {
		log_error("the shop is not loaded: run psql -f sql/shop/shop.sql first");
		PQclear(r);
		return false;
	}
	PQclear(r);
	return create_catalog(g) && load_items(g);
}

/* For gen_connect_retry: arg is the struct gen. */
static bool
connect_db(void *arg)
{
	struct gen *g = arg;

	g->conn = gen_connect(g->o.dsn, "tailgate-shopgen");
	if (g->conn == NULL)
		return false;
	if (!setup_once(g) || !gen_pipeline_mode(g->conn)) {
		PQfinish(g->conn);
		g->conn = NULL;
		return false;
	}
	g->pipe.in_flight = 0;
	return true;
}

/* This tick's orders as one SELECT buy(users, items, quantities). */
static size_t
make_purchases(struct gen *g, struct gen_sql *s, double tick_s)
{
	struct gen_sql u = {0}, it = {0}, q = {0};
	size_t n = 0;

	g->purchase_acc += g->o.purchases * tick_s;
	while (g->purchase_acc >= 1.0) {
		g->purchase_acc -= 1.0;
		gen_sql_printf(&u, "%s%" PRId64, n ? "," : "", gen_rng_range(1, g->o.users));
		gen_sql_printf(&it, "%s%" PRId64, n ? "," : "",
		               g->item_ids[pick(g->buy_cum, g->nitems)]);
		gen_sql_printf(&q, "%s%" PRId64, n ? "," : "", gen_rng_range(1, g->o.max_quantity));
		n++;
	}
	if (n)
		gen_sql_printf(s,
		               "SELECT buy('{%s}'::int8[], '{%s}'::int8[], '{%s}'::int4[]), "
		               "expire_orders_per_minute()",
		               u.p, it.p, q.p);
	else
		gen_sql_printf(s, "SELECT 0::int8, expire_orders_per_minute()");
	free(u.p);
	free(it.p);
	free(q.p);
	return n;
}

/* This tick's pageviews as one multi-row INSERT (empty when none). */
static size_t
make_pageviews(struct gen *g, struct gen_sql *s, double tick_s)
{
	size_t n = 0;

	g->pageview_acc += g->o.pageviews * tick_s;
	while (g->pageview_acc >= 1.0) {
		char url[64];
		double x = gen_rng_unit();
		int c = 0;

		g->pageview_acc -= 1.0;
		if (x < 0.80)
			snprintf(url, sizeof(url), "/products/%" PRId64,
			         g->item_ids[pick(g->view_cum, g->nitems)]);
		else if (x < 0.90)
			snprintf(url, sizeof(url), "/");
		else if (x < 0.95)
			snprintf(url, sizeof(url), "/cart");
		else
			snprintf(url, sizeof(url), "/search?q=%s",
			         searches[gen_rng_range(0, N_SEARCHES - 1)]);
		double y = gen_rng_unit();
		while (c < (int)N_CHANNELS - 1 && y >= channel_cum[c])
			c++;
		gen_sql_printf(s, "%s(%" PRId64 ",'%s','%s')",
		               n++ ? "," : "INSERT INTO pageviews (user_id, url, channel) VALUES ",
		               gen_rng_range(1, g->o.users), url, channels[c]);
	}
	return n;
}

/* Send one tick: the purchases (and the expiry) in one transaction, the
 * pageviews in a second. */
static bool
send_tick(struct gen *g)
{
	struct gen_sql p = {0}, v = {0};
	double tick_s = g->o.tick_ms / 1000.0;
	bool ok = false;

	g->orders += make_purchases(g, &p, tick_s);
	g->pageviews += make_pageviews(g, &v, tick_s);
	if (!gen_send(g->conn, p.p) || PQpipelineSync(g->conn) != 1)
		goto done;
	if (v.len && !gen_send(g->conn, v.p))
		goto done;
	if (PQpipelineSync(g->conn) != 1)
		goto done;
	g->pipe.in_flight += SYNCS_PER_TICK;
	ok = true;
done:
	free(p.p);
	free(v.p);
	return ok;
}

/* Read every result that has arrived; with wait set, block until at least
 * one tick completed. */
/* buy()'s purchases, expire_orders_per_minute()'s minutes. */
static void
count_purchases(PGresult *r, void *arg)
{
	struct gen *g = arg;

	if (PQntuples(r) == 1 && PQnfields(r) == 2) {
		g->purchases += strtoull(PQgetvalue(r, 0, 0), NULL, 10);
		g->expired += strtoull(PQgetvalue(r, 0, 1), NULL, 10);
	}
}

static void
report(struct gen *g, double elapsed, double lag_ms)
{
	static double last_t;
	static uint64_t last_p, last_v;
	double dt = elapsed - last_t;

	if (g->o.quiet)
		return;
	fprintf(stderr,
	        "tailgate-shopgen: %.0fs purchases=%" PRIu64 " (%.1f/s) of orders=%" PRIu64
	        " pageviews=%" PRIu64 " (%.0f/s) lag=%.0fms max_lag=%.0fms errors=%" PRIu64 "\n",
	        elapsed, g->purchases, dt > 0 ? (double)(g->purchases - last_p) / dt : 0.0,
	        g->orders, g->pageviews, dt > 0 ? (double)(g->pageviews - last_v) / dt : 0.0,
	        lag_ms, g->max_lag_ms, g->pipe.errors);
	last_t = elapsed;
	last_p = g->purchases;
	last_v = g->pageviews;
}

static int
run(struct gen *g)
{
	double t0 = gen_now_s(), tick_s = g->o.tick_ms / 1000.0, next_report = g->o.report_s;
	double deadline = g->o.duration > 0 ? t0 + g->o.duration : 0; /* connecting */
	uint64_t last_tick = UINT64_MAX;

	if (g->o.duration > 0)
		last_tick = (uint64_t)(g->o.duration / tick_s);
	if (!gen_connect_retry(connect_db, g, deadline))
		return 1;
	while (!gen_stop && g->tick < last_tick) {
		double due = t0 + (double)g->tick * tick_s;
		double lag_ms;
		bool ready = gen_wait_tick(g->conn, &g->pipe, due, SYNCS_PER_TICK * g->o.pipeline,
		                           &lag_ms);

		if (lag_ms > g->max_lag_ms)
			g->max_lag_ms = lag_ms;
		if (!ready)
			goto reconnect;
		if (!send_tick(g))
			goto reconnect;
		g->tick++;
		if (!gen_read_results(g->conn, &g->pipe, false))
			goto reconnect;
		double elapsed = gen_now_s() - t0;
		if (g->o.report_s && elapsed >= next_report) {
			report(g, elapsed, lag_ms);
			next_report += g->o.report_s;
		}
		continue;
	reconnect:
		if (gen_stop > 1)
			break;
		log_warning("reconnecting");
		PQfinish(g->conn);
		g->conn = NULL;
		g->pipe.errors++;
		if (!gen_connect_retry(connect_db, g, deadline))
			goto out;
		/* Resume at the wall clock: do not replay the ticks missed. */
		g->tick = (uint64_t)((gen_now_s() - t0) / tick_s) + 1;
	}
	while (g->conn && g->pipe.in_flight > 0)
		if (!gen_read_results(g->conn, &g->pipe, true))
			break;
out:
	report(g, gen_now_s() - t0, 0);
	if (g->conn)
		PQfinish(g->conn);
	return 0;
}

int
main(int argc, char **argv)
{
	static const struct option longopts[] = {
	        {"dsn", required_argument, NULL, 'd'},
	        {"purchases", required_argument, NULL, 'p'},
	        {"pageviews", required_argument, NULL, 'v'},
	        {"duration", required_argument, NULL, 't'},
	        {"items", required_argument, NULL, 'I'},
	        {"users", required_argument, NULL, 'U'},
	        {"inventory", required_argument, NULL, 'N'},
	        {"max-quantity", required_argument, NULL, 'Q'},
	        {"tick", required_argument, NULL, 'T'},
	        {"pipeline", required_argument, NULL, 'P'},
	        {"seed", required_argument, NULL, 'S'},
	        {"report", required_argument, NULL, 'R'},
	        {"quiet", no_argument, NULL, 'q'},
	        {"help", no_argument, NULL, 'h'},
	        {"version", no_argument, NULL, 'V'},
	        {NULL, 0, NULL, 0},
	};
	struct gen g = {
	        .o = {.dsn = "",
	              .purchases = 20,
	              .pageviews = 1000,
	              .items = 100,
	              .users = 1000,
	              .inventory = 60,
	              .max_quantity = 3,
	              .tick_ms = 100,
	              .pipeline = 4,
	              .report_s = 10},
	};
	bool seeded = false;
	long l;
	int c;

	log_init("tailgate-shopgen", false);
	while ((c = getopt_long(argc, argv, "d:p:v:t:qhV", longopts, NULL)) != -1) {
		switch (c) {
		case 'd':
			g.o.dsn = optarg;
			break;
		case 'p':
			if (!gen_parse_double(optarg, 0, 1e6, &g.o.purchases))
				goto bad;
			break;
		case 'v':
			if (!gen_parse_double(optarg, 0, 1e7, &g.o.pageviews))
				goto bad;
			break;
		case 't':
			if (!gen_parse_double(optarg, 0, 1e9, &g.o.duration))
				goto bad;
			break;
		case 'I':
			if (!gen_parse_int(optarg, 1, 1000000, &l))
				goto bad;
			g.o.items = (int)l;
			break;
		case 'U':
			if (!gen_parse_int(optarg, 1, 10000000, &l))
				goto bad;
			g.o.users = (int)l;
			break;
		case 'N':
			if (!gen_parse_int(optarg, 0, 1000000000, &l))
				goto bad;
			g.o.inventory = (int)l;
			break;
		case 'Q':
			if (!gen_parse_int(optarg, 1, 1000, &l))
				goto bad;
			g.o.max_quantity = (int)l;
			break;
		case 'T':
			if (!gen_parse_int(optarg, 1, 10000, &l))
				goto bad;
			g.o.tick_ms = (int)l;
			break;
		case 'P':
			if (!gen_parse_int(optarg, 1, 1000, &l))
				goto bad;
			g.o.pipeline = (int)l;
			break;
		case 'S':
			if (!gen_parse_int(optarg, 0, LONG_MAX, &l))
				goto bad;
			g.o.seed = (uint64_t)l;
			seeded = true;
			break;
		case 'R':
			if (!gen_parse_int(optarg, 0, 86400, &l))
				goto bad;
			g.o.report_s = (int)l;
			break;
		case 'q':
			g.o.quiet = true;
			break;
		case 'h':
			usage(stdout);
			return 0;
		case 'V':
			printf("tailgate-shopgen %s\n", SHOPGEN_VERSION);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
		continue;
	bad:
		fprintf(stderr, "tailgate-shopgen: bad value for %s: %s\n", argv[optind - 1],
		        optarg);
		usage(stderr);
		return 2;
	}
	if (optind < argc) {
		fprintf(stderr, "tailgate-shopgen: unexpected argument %s\n", argv[optind]);
		usage(stderr);
		return 2;
	}
	if (!seeded)
		g.o.seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
	gen_rng_seed(g.o.seed);
	g.pipe = (struct gen_pipe){
	        .syncs_per_tick = SYNCS_PER_TICK, .on_tuples = count_purchases, .arg = &g};

	gen_catch_signals();

	log_info("%.1f purchases/s, %.0f pageviews/s, %d items, tick %d ms, seed %" PRIu64,
	         g.o.purchases, g.o.pageviews, g.o.items, g.o.tick_ms, g.o.seed);
	int rc = run(&g);
	free(g.item_ids);
	free(g.view_cum);
	free(g.buy_cum);
	return rc;
}
