/*
 * tailgate-loadgen.c - the auction house's load generator for PostgreSQL.
 *
 * Writes what Materialize's AUCTION load generator writes, into the tables
 * of sql/auction_house.sql: organizations, users and accounts once, then a
 * steady stream of auctions (each ends 10 s after it starts) and their 2 to
 * 9 bids of amount 1..99, spread over the auction's life in real time, and
 * calls close_ended_auctions() so ended auctions reach winning_bids.
 *
 * Time advances in ticks (default 100 ms, Materialize's TICK INTERVAL in
 * the seeds).  Each tick is one transaction holding every auction and bid
 * due in it, as two multi-row INSERTs, then a second transaction that
 * closes ended auctions.  Ticks are sent in libpq pipeline mode: the next
 * tick goes out while the server still works on the previous ones (at most
 * --pipeline ticks in flight), so one connection sustains tens of thousands
 * of bids per second.  When the server falls behind, ticks are caught up
 * (never skipped) and the progress line shows the lag.
 *
 * Default rate: Materialize's generator emits one row per tick; an auction
 * and its 2..9 bids (5.5 on average) are 6.5 rows, so at 100 ms it makes
 * about 1.5 auctions and 8.5 bids per second.  That is our default.
 */
#include "gen.h"
#include "log.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <limits.h>
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

#define LOADGEN_VERSION "0.1.0"
#define AUCTION_SECONDS 10
#define BID_WINDOW_MS 9000 /* on-time bids land in [0, 9 s) of the auction's 10 s */
#define LATE_MIN_MS 10500  /* late bids land in [10.5 s, 12 s) */
#define LATE_MAX_MS 12000
#define WHEEL_MS 13000 /* the bid schedule covers this much of the future */
#define DEFAULT_RATE 8.5
#define MEAN_BIDS 5.5

/* ---- options -------------------------------------------------------------------- */

struct opts {
	const char *dsn;
	double rate;           /* bids per second */
	double auctions_per_s; /* 0: rate / 5.5 */
	double duration;       /* seconds, 0: until stopped */
	int tick_ms;
	int pipeline;    /* ticks in flight */
	double late_pct; /* percent of bids placed after the auction ended */
	int users;
	uint64_t seed;
	int report_s;
	bool drain;
	bool quiet;
};

static void
usage(FILE *f)
{
	fprintf(f,
	        "usage: tailgate-loadgen [options]\n"
	        "\n"
	        "Write the auction house (sql/auction_house.sql must be loaded) at a steady rate:\n"
	        "auctions that end 10 s after they start, each with 2 to 9 bids of 1..99 spread\n"
	        "over its life, and close_ended_auctions() every tick.\n"
	        "\n"
	        "  -d, --dsn CONNINFO        libpq connection string (default: PG* environment)\n"
	        "  -r, --rate BIDS           bids per second (default %.1f, like Materialize's\n"
	        "                            AUCTION generator at TICK INTERVAL '100ms')\n"
	        "  -a, --auctions-per-s N    auctions per second (default: rate / %.1f, so 2..9\n"
	        "                            bids per auction; otherwise rate / N per auction)\n"
	        "  -t, --duration SECONDS    stop after this long (default: until SIGINT/SIGTERM)\n"
	        "      --drain               when stopping, place the scheduled bids and wait "
	        "until\n"
	        "                            every auction is closed (winning_bids final)\n"
	        "      --tick MS             one transaction per tick (default 100)\n"
	        "      --pipeline N          ticks in flight at once (default 4)\n"
	        "      --late PERCENT        percent of bids placed after their auction ended,\n"
	        "                            which on_time_bids ignores (default 0)\n"
	        "      --users N             users to create (default 500)\n"
	        "      --seed N              random seed (default: from the clock)\n"
	        "      --report SECONDS      progress line every SECONDS on stderr (default 10, 0 "
	        "off)\n"
	        "  -q, --quiet               no progress lines\n"
	        "  -h, --help                this help\n"
	        "  -V, --version             print the version\n",
	        DEFAULT_RATE, MEAN_BIDS);
}

/* ---- random numbers (xorshift64*) ------------------------------------------------- */

/* ---- the schedule of bids ------------------------------------------------------- */

struct bid {
	int64_t id;
	int64_t auction_id;
	int64_t buyer;
	int amount;
};

struct bucket {
	struct bid *bids;
	size_t n, cap;
};

/* A timing wheel: bucket (tick % nbuckets) holds the bids due in that tick. */
struct wheel {
	struct bucket *b;
	size_t nbuckets;
	size_t pending;
};

static void
wheel_add(struct wheel *w, uint64_t tick, const struct bid *bid)
{
	struct bucket *b = &w->b[tick % w->nbuckets];

	if (b->n == b->cap) {
		size_t cap = b->cap ? b->cap * 2 : 16;
		struct bid *p = realloc(b->bids, cap * sizeof(*p));

		if (!p)
			fatal("out of memory");
		b->bids = p;
		b->cap = cap;
	}
	b->bids[b->n++] = *bid;
	w->pending++;
}

static void
wheel_clear(struct wheel *w)
{
	for (size_t i = 0; i < w->nbuckets; i++)
		w->b[i].n = 0;
	w->pending = 0;
}

/* ---- SQL text ------------------------------------------------------------------------- */

static const char *const items[] = {
        "Signed Memorabilia", "City Bar Crawl", "Best Pizza in Town", "Gift Basket", "Custom Art",
};
#define N_ITEMS (sizeof(items) / sizeof(items[0]))

static const char *const organizations[] = {
        "Acme Anvils",     "Blue Harbor",   "Copperleaf",  "Driftwood Labs", "Evergreen Works",
        "Foxglove & Sons", "Granite Peak",  "Hollow Oak",  "Ironbark",       "Juniper Trading",
        "Kestrel Freight", "Lantern Guild", "Marigold Co", "Northwind",      "Orchard Row",
};
#define N_ORGS (sizeof(organizations) / sizeof(organizations[0]))

/* ---- the connection -------------------------------------------------------------------- */

struct gen {
	struct opts o;
	PGconn *conn;
	struct wheel wheel;
	int64_t next_auction;
	uint64_t tick;      /* the next tick to send */
	double auction_acc; /* fractional auctions carried between ticks */
	double mean_bids;
	struct gen_pipe pipe;
	/* counters */
	uint64_t auctions, bids, closed;
	double max_lag_ms;
};

static bool
setup_once(struct gen *g)
{
	struct gen_sql s = {0};
	PGresult *r;
	bool ok = false;

	r = gen_exec(g->conn,
	             "SELECT to_regclass('auctions') IS NOT NULL AND "
	             "to_regprocedure('close_ended_auctions(int)') IS NOT NULL",
	             PGRES_TUPLES_OK);
	if (!r)
		return false;
	if (PQntuples(r) != 1 || strcmp(PQgetvalue(r, 0, 0), "t") != 0) {
		log_error(
		        "the auction house is not loaded: run psql -f sql/auction_house.sql first");
		PQclear(r);
		return false;
	}
	PQclear(r);

	gen_sql_printf(&s, "INSERT INTO organizations (id, name) VALUES ");
	for (size_t i = 0; i < N_ORGS; i++)
		gen_sql_printf(&s, "%s(%zu, '%s')", i ? "," : "", i + 1, organizations[i]);
	gen_sql_printf(&s,
	               " ON CONFLICT DO NOTHING;\nINSERT INTO users (id, org_id, name) VALUES ");
	for (int i = 0; i < g->o.users; i++) {
		const char *f, *l;

		gen_user_name((size_t)i, &f, &l);
		gen_sql_printf(&s, "%s(%d, %zu, '%s %s')", i ? "," : "", i + 1,
		               (size_t)i % N_ORGS + 1, f, l);
	}
	gen_sql_printf(
	        &s, " ON CONFLICT DO NOTHING;\nINSERT INTO accounts (id, org_id, balance) VALUES ");
	for (size_t i = 0; i < N_ORGS; i++)
		gen_sql_printf(&s, "%s(%zu, %zu, 10000)", i ? "," : "", i + 1, i + 1);
	gen_sql_printf(&s, " ON CONFLICT DO NOTHING");
	r = gen_exec(g->conn, s.p, PGRES_COMMAND_OK);
	if (!r)
		goto done;
	PQclear(r);

	/* Carry on after what an earlier run wrote.  Bid ids are
	 * auction id * 10 + i, like Materialize's. */
	r = gen_exec(g->conn, "SELECT coalesce(max(id), 0) + 1 FROM auctions", PGRES_TUPLES_OK);
	if (!r)
		goto done;
	g->next_auction = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
	PQclear(r);
	ok = true;
done:
	free(s.p);
	return ok;
}

/* For gen_connect_retry: arg is the struct gen. */
static bool
connect_db(void *arg)
{
	struct gen *g = arg;

	g->conn = gen_connect(g->o.dsn, "tailgate-loadgen");
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

/* Make the auctions due in this tick and schedule their bids. */
static void
make_auctions(struct gen *g, struct gen_sql *auctions_sql, uint64_t tick, double tick_s,
              bool stopping)
{
	size_t n = 0;

	if (stopping)
		return;
	g->auction_acc += g->o.auctions_per_s * tick_s;
	while (g->auction_acc >= 1.0) {
		int64_t id = g->next_auction++;
		int nbids;

		g->auction_acc -= 1.0;
		gen_sql_printf(
		        auctions_sql, "%s(%" PRId64 ",%" PRId64 ",'%s',now()+interval '%d s')",
		        n++ ? "," : "INSERT INTO auctions (id, seller, item, end_time) VALUES ", id,
		        gen_rng_range(1, g->o.users), items[gen_rng_range(0, N_ITEMS - 1)],
		        AUCTION_SECONDS);
		if (g->mean_bids == MEAN_BIDS) {
			nbids = (int)gen_rng_range(2, 9);
		} else {
			nbids = (int)g->mean_bids;
			if (gen_rng_unit() < g->mean_bids - nbids)
				nbids++;
			if (nbids > 9)
				nbids = 9; /* ids are auction * 10 + i */
		}
		for (int i = 0; i < nbids; i++) {
			struct bid b = {
			        .id = id * 10 + i,
			        .auction_id = id,
			        .buyer = gen_rng_range(1, g->o.users),
			        .amount = (int)gen_rng_range(1, 99),
			};
			int64_t at_ms;

			if (g->o.late_pct > 0 && gen_rng_unit() * 100.0 < g->o.late_pct)
				at_ms = gen_rng_range(LATE_MIN_MS, LATE_MAX_MS - 1);
			else
				at_ms = gen_rng_range(0, BID_WINDOW_MS - 1);
			/* From the next tick on: bids arrive in real time. */
			uint64_t due = tick + 1 + (uint64_t)at_ms / (uint64_t)g->o.tick_ms;
			wheel_add(&g->wheel, due, &b);
		}
	}
	g->auctions += n;
}

static void
take_bids(struct gen *g, struct gen_sql *bids_sql, uint64_t tick, size_t *nbids)
{
	struct bucket *b = &g->wheel.b[tick % g->wheel.nbuckets];

	for (size_t i = 0; i < b->n; i++) {
		const struct bid *x = &b->bids[i];

		gen_sql_printf(bids_sql, "%s(%" PRId64 ",%" PRId64 ",%" PRId64 ",%d)",
		               i ? "," : "INSERT INTO bids (id, buyer, auction_id, amount) VALUES ",
		               x->id, x->buyer, x->auction_id, x->amount);
	}
	*nbids = b->n;
	g->wheel.pending -= b->n;
	b->n = 0;
}

/* Read every result that has arrived; with wait set, block until at least
 * one tick completed.  A tick is two pipeline syncs. */
/* close_ended_auctions()'s count. */
static void
count_closed(PGresult *r, void *arg)
{
	struct gen *g = arg;

	if (PQntuples(r) == 1 && PQnfields(r) == 1)
		g->closed += strtoull(PQgetvalue(r, 0, 0), NULL, 10);
}

/* Send one tick: its auctions and bids in one transaction, then a close. */
static bool
send_tick(struct gen *g, uint64_t tick, bool stopping)
{
	struct gen_sql a = {0}, b = {0};
	size_t nbids = 0;
	bool ok = false;

	make_auctions(g, &a, tick, g->o.tick_ms / 1000.0, stopping);
	take_bids(g, &b, tick, &nbids);
	if (a.len && !gen_send(g->conn, a.p))
		goto done;
	if (b.len && !gen_send(g->conn, b.p))
		goto done;
	if (PQpipelineSync(g->conn) != 1)
		goto done;
	if (!gen_send(g->conn, "SELECT close_ended_auctions()") || PQpipelineSync(g->conn) != 1)
		goto done;
	g->pipe.in_flight += 2;
	g->bids += nbids;
	ok = true;
done:
	free(a.p);
	free(b.p);
	return ok;
}

static void
report(struct gen *g, double elapsed, double lag_ms)
{
	static double last_t;
	static uint64_t last_bids;
	double dt = elapsed - last_t;

	if (g->o.quiet)
		return;
	fprintf(stderr,
	        "tailgate-loadgen: %.0fs auctions=%" PRIu64 " bids=%" PRIu64
	        " (%.0f/s) closed=%" PRIu64 " lag=%.0fms max_lag=%.0fms errors=%" PRIu64 "\n",
	        elapsed, g->auctions, g->bids, dt > 0 ? (double)(g->bids - last_bids) / dt : 0.0,
	        g->closed, lag_ms, g->max_lag_ms, g->pipe.errors);
	last_t = elapsed;
	last_bids = g->bids;
}

/* Close what is left: keep calling close_ended_auctions() until no auction
 * is open (they all end within 10 s of the last one's start). */
static bool
drain_closes(struct gen *g)
{
	double deadline = gen_now_s() + AUCTION_SECONDS + 5;

	if (PQexitPipelineMode(g->conn) != 1 || PQsetnonblocking(g->conn, 0) != 0) {
		log_error("leaving pipeline mode: %s", PQerrorMessage(g->conn));
		return false;
	}
	while (gen_now_s() < deadline) {
		PGresult *r = gen_exec(g->conn,
		                       "SELECT close_ended_auctions(), "
		                       "(SELECT count(*) FROM open_auctions)",
		                       PGRES_TUPLES_OK);
		if (!r)
			return false;
		g->closed += strtoull(PQgetvalue(r, 0, 0), NULL, 10);
		bool empty = strcmp(PQgetvalue(r, 0, 1), "0") == 0;
		PQclear(r);
		if (empty)
			return true;
		gen_sleep_until(gen_now_s() + 0.2);
		if (gen_stop > 1)
			return false;
	}
	log_warning("drain: auctions still open after %d s", AUCTION_SECONDS + 5);
	return false;
}

static int
run(struct gen *g)
{
	double t0 = gen_now_s(), tick_s = g->o.tick_ms / 1000.0, next_report;
	double deadline = g->o.duration > 0 ? t0 + g->o.duration : 0; /* connecting */
	uint64_t last_tick = UINT64_MAX;  /* with --duration: the last tick that makes auctions */
	uint64_t final_tick = UINT64_MAX; /* with --drain: the last tick that places bids */

	if (g->o.duration > 0)
		last_tick = (uint64_t)(g->o.duration / tick_s);
	next_report = g->o.report_s;
	if (!gen_connect_retry(connect_db, g, deadline))
		return 1;
	for (;;) {
		bool stopping = gen_stop || g->tick > last_tick;

		if (stopping && !g->o.drain)
			break;
		if (stopping && final_tick == UINT64_MAX)
			final_tick = g->tick + (uint64_t)(LATE_MAX_MS / g->o.tick_ms) + 1;
		if (stopping && (g->tick > final_tick || g->wheel.pending == 0))
			break;

		double due = t0 + (double)g->tick * tick_s;
		double lag_ms;
		bool ready = gen_wait_tick(g->conn, &g->pipe, due, 2 * g->o.pipeline, &lag_ms);

		if (lag_ms > g->max_lag_ms)
			g->max_lag_ms = lag_ms;
		if (!ready)
			goto reconnect;
		if (!send_tick(g, g->tick, stopping))
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
		/* Ticks in flight are lost or committed, we cannot tell which:
		 * start over after what the database holds. */
		log_warning("reconnecting; %zu scheduled bids dropped", g->wheel.pending);
		PQfinish(g->conn);
		g->conn = NULL;
		wheel_clear(&g->wheel);
		g->pipe.errors++;
		if (!gen_connect_retry(connect_db, g, deadline))
			goto out;
		/* Resume at the wall clock: do not replay the ticks missed. */
		g->tick = (uint64_t)((gen_now_s() - t0) / tick_s) + 1;
	}
	while (g->conn && g->pipe.in_flight > 0)
		if (!gen_read_results(g->conn, &g->pipe, true))
			break;
	if (g->o.drain && g->conn && !drain_closes(g))
		g->pipe.errors++;
out:
	report(g, gen_now_s() - t0, 0);
	if (g->conn)
		PQfinish(g->conn);
	return g->pipe.errors && g->o.drain ? 1 : 0;
}

int
main(int argc, char **argv)
{
	static const struct option longopts[] = {
	        {"dsn", required_argument, NULL, 'd'},
	        {"rate", required_argument, NULL, 'r'},
	        {"auctions-per-s", required_argument, NULL, 'a'},
	        {"duration", required_argument, NULL, 't'},
	        {"drain", no_argument, NULL, 'D'},
	        {"tick", required_argument, NULL, 'T'},
	        {"pipeline", required_argument, NULL, 'P'},
	        {"late", required_argument, NULL, 'L'},
	        {"users", required_argument, NULL, 'U'},
	        {"seed", required_argument, NULL, 'S'},
	        {"report", required_argument, NULL, 'R'},
	        {"quiet", no_argument, NULL, 'q'},
	        {"help", no_argument, NULL, 'h'},
	        {"version", no_argument, NULL, 'V'},
	        {NULL, 0, NULL, 0},
	};
	struct gen g = {
	        .o = {.dsn = "",
	              .rate = DEFAULT_RATE,
	              .tick_ms = 100,
	              .pipeline = 4,
	              .users = 500,
	              .report_s = 10},
	};
	bool seeded = false;
	long l;
	int c;

	log_init("tailgate-loadgen", false);
	while ((c = getopt_long(argc, argv, "d:r:a:t:qhV", longopts, NULL)) != -1) {
		switch (c) {
		case 'd':
			g.o.dsn = optarg;
			break;
		case 'r':
			if (!gen_parse_double(optarg, 0, 1e7, &g.o.rate))
				goto bad;
			break;
		case 'a':
			if (!gen_parse_double(optarg, 0.001, 1e6, &g.o.auctions_per_s))
				goto bad;
			break;
		case 't':
			if (!gen_parse_double(optarg, 0, 1e9, &g.o.duration))
				goto bad;
			break;
		case 'D':
			g.o.drain = true;
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
		case 'L':
			if (!gen_parse_double(optarg, 0, 100, &g.o.late_pct))
				goto bad;
			break;
		case 'U':
			if (!gen_parse_int(optarg, 1, 10000000, &l))
				goto bad;
			g.o.users = (int)l;
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
			printf("tailgate-loadgen %s\n", LOADGEN_VERSION);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
		continue;
	bad:
		fprintf(stderr, "tailgate-loadgen: bad value for %s: %s\n", argv[optind - 1],
		        optarg);
		usage(stderr);
		return 2;
	}
	if (optind < argc) {
		fprintf(stderr, "tailgate-loadgen: unexpected argument %s\n", argv[optind]);
		usage(stderr);
		return 2;
	}
	if (g.o.auctions_per_s == 0)
		g.o.auctions_per_s = g.o.rate / MEAN_BIDS;
	g.mean_bids = g.o.auctions_per_s > 0 ? g.o.rate / g.o.auctions_per_s : 0;
	if (g.mean_bids > 9.0) {
		fprintf(stderr,
		        "tailgate-loadgen: %.1f bids per auction is more than 9: raise "
		        "--auctions-per-s\n",
		        g.mean_bids);
		return 2;
	}
	if (g.o.rate == 0)
		g.o.auctions_per_s = 0;
	if (!seeded)
		g.o.seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
	gen_rng_seed(g.o.seed);
	g.pipe = (struct gen_pipe){.syncs_per_tick = 2, .on_tuples = count_closed, .arg = &g};
	g.wheel.nbuckets = (size_t)(WHEEL_MS / g.o.tick_ms) + 4;
	g.wheel.b = calloc(g.wheel.nbuckets, sizeof(*g.wheel.b));
	if (!g.wheel.b)
		fatal("out of memory");

	gen_catch_signals();

	log_info("%.1f bids/s, %.2f auctions/s, tick %d ms, seed %" PRIu64, g.o.rate,
	         g.o.auctions_per_s, g.o.tick_ms, g.o.seed);
	int rc = run(&g);
	for (size_t i = 0; i < g.wheel.nbuckets; i++)
		free(g.wheel.b[i].bids);
	free(g.wheel.b);
	return rc;
}
