/*
 * gen.c - the load generators' shared parts (gen.h).
 */
#include "gen.h"

#include "clock.h"
#include "log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <time.h>

volatile sig_atomic_t gen_stop;

static void
on_signal(int sig)
{
	(void)sig;
	/* The first signal stops after the ticks in flight (and loadgen's
	 * --drain); a second one stops at once. */
	gen_stop = gen_stop ? 2 : 1;
}

void
gen_catch_signals(void)
{
	struct sigaction sa = {.sa_handler = on_signal};

	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
}

/* ---- options ---------------------------------------------------------------------------- */

bool
gen_parse_double(const char *s, double min, double max, double *out)
{
	char *end;
	double v;

	errno = 0;
	v = strtod(s, &end);
	if (errno || end == s || *end || !(v >= min && v <= max))
		return false;
	*out = v;
	return true;
}

bool
gen_parse_int(const char *s, long min, long max, long *out)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || end == s || *end || v < min || v > max)
		return false;
	*out = v;
	return true;
}

/* ---- random numbers (xorshift64*) ------------------------------------------------------- */

static uint64_t rng_state = 0x9E3779B97F4A7C15ULL;

void
gen_rng_seed(uint64_t seed)
{
	rng_state = seed ? seed : 0x9E3779B97F4A7C15ULL;
}

uint64_t
gen_rng_next(void)
{
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * 0x2545F4914F6CDD1DULL;
}

int64_t
gen_rng_range(int64_t lo, int64_t hi)
{
	return lo + (int64_t)(gen_rng_next() % (uint64_t)(hi - lo + 1));
}

double
gen_rng_unit(void)
{
	return (double)(gen_rng_next() >> 11) / 9007199254740992.0;
}

/* ---- SQL text ----------------------------------------------------------------------------- */

void
gen_sql_printf(struct gen_sql *s, const char *fmt, ...)
{
	va_list ap;
	int n;

	for (;;) {
		size_t room = s->cap - s->len;

		va_start(ap, fmt);
		n = vsnprintf(s->p ? s->p + s->len : NULL, room, fmt, ap);
		va_end(ap);
		if (n < 0)
			fatal("vsnprintf");
		if ((size_t)n < room) {
			s->len += (size_t)n;
			return;
		}
		size_t cap = s->cap ? s->cap * 2 : 4096;
		while (cap - s->len <= (size_t)n)
			cap *= 2;
		char *p = realloc(s->p, cap);
		if (!p)
			fatal("out of memory");
		s->p = p;
		s->cap = cap;
	}
}

static const char *const first_names[] = {
        "Ada",   "Bruno", "Chloe", "Dario", "Elena", "Farid", "Greta", "Hugo",  "Ines",
        "Jonas", "Kira",  "Luca",  "Maya",  "Nils",  "Olga",  "Pablo", "Quinn", "Rosa",
        "Sami",  "Tara",  "Umar",  "Vera",  "Wim",   "Xenia", "Yusuf",
};
static const char *const last_names[] = {
        "Abbott", "Brandt",  "Costa",    "Dubois", "Eriksen", "Fischer", "Garcia",
        "Horvat", "Ivanova", "Jensen",   "Kovacs", "Larsen",  "Moreau",  "Novak",
        "Okafor", "Petrov",  "Quintero", "Rossi",  "Silva",   "Tanaka",
};
#define N_FIRST (sizeof(first_names) / sizeof(first_names[0]))
#define N_LAST (sizeof(last_names) / sizeof(last_names[0]))

void
gen_user_name(size_t i, const char **first, const char **last)
{
	*first = first_names[i % N_FIRST];
	*last = last_names[(i / N_FIRST) % N_LAST];
}

/* ---- time ----------------------------------------------------------------------------------- */

double
gen_now_s(void)
{
	return (double)clock_mono_ns() / 1e9;
}

void
gen_sleep_until(double t)
{
	double d = t - gen_now_s();

	if (d <= 0)
		return;
	struct timespec ts = {(time_t)d, (long)((d - (double)(time_t)d) * 1e9)};
	nanosleep(&ts, NULL);
}

/* ---- the connection ------------------------------------------------------------------------ */

/* Set by gen_connect: the connection string cannot be parsed. */
static bool dsn_malformed;

PGconn *
gen_connect(const char *dsn, const char *app)
{
	const char *keys[] = {"dbname", "application_name", NULL};
	const char *vals[] = {dsn, app, NULL};

	/* A string with '=' or a URI is a connection string (else a database
	 * name): one libpq cannot parse never connects. */
	if (dsn && (strchr(dsn, '=') || strncmp(dsn, "postgres://", 11) == 0 ||
	            strncmp(dsn, "postgresql://", 13) == 0)) {
		char *msg = NULL;
		PQconninfoOption *o = PQconninfoParse(dsn, &msg);
		if (o == NULL) {
			log_error("--dsn: not a libpq connection string: %s",
			          msg ? msg : "out of memory");
			PQfreemem(msg);
			dsn_malformed = true;
			return NULL;
		}
		PQconninfoFree(o);
	}
	PGconn *c = PQconnectdbParams(keys, vals, 1);

	if (PQstatus(c) != CONNECTION_OK) {
		log_error("connect: %s", PQerrorMessage(c));
		PQfinish(c);
		return NULL;
	}
	return c;
}

bool
gen_connect_retry(bool (*connect)(void *arg), void *arg, double deadline)
{
	double backoff = 0.25;

	while (!connect(arg)) {
		if (gen_stop || dsn_malformed)
			return false;
		if (deadline > 0 && gen_now_s() + backoff > deadline) {
			log_error("no connection to the database within --duration");
			return false;
		}
		gen_sleep_until(gen_now_s() + backoff);
		backoff = backoff * 2 > 5 ? 5 : backoff * 2;
	}
	return true;
}

bool
gen_pipeline_mode(PGconn *c)
{
	if (PQenterPipelineMode(c) != 1 || PQsetnonblocking(c, 1) != 0) {
		log_error("pipeline mode: %s", PQerrorMessage(c));
		return false;
	}
	return true;
}

PGresult *
gen_exec(PGconn *c, const char *sql, ExecStatusType want)
{
	PGresult *r = PQexec(c, sql);

	if (PQresultStatus(r) != want) {
		log_error("%.120s: %s", sql, PQerrorMessage(c));
		PQclear(r);
		return NULL;
	}
	return r;
}

bool
gen_send(PGconn *c, const char *sql)
{
	if (!PQsendQueryParams(c, sql, 0, NULL, NULL, NULL, NULL, 0)) {
		log_error("send: %s", PQerrorMessage(c));
		return false;
	}
	return true;
}

/* Until the server sends something (or 1 s); false on a select error. */
static bool
wait_socket(PGconn *c)
{
	fd_set rfds, wfds;
	int fd = PQsocket(c);

	FD_ZERO(&rfds);
	FD_ZERO(&wfds);
	FD_SET(fd, &rfds);
	if (PQflush(c) == 1)
		FD_SET(fd, &wfds);
	struct timeval tv = {1, 0};
	if (select(fd + 1, &rfds, &wfds, NULL, &tv) < 0 && errno != EINTR) {
		log_error("select: %s", strerror(errno));
		return false;
	}
	return true;
}

/* One result: the sync that ends a transaction, rows, or an error. */
static bool
take_result(PGconn *c, struct gen_pipe *p, PGresult *r, bool *progressed)
{
	switch (PQresultStatus(r)) {
	case PGRES_PIPELINE_SYNC:
		p->in_flight--;
		if (p->in_flight % p->syncs_per_tick == 0) {
			p->ticks_done++;
			*progressed = true;
		}
		break;
	case PGRES_TUPLES_OK:
		if (p->on_tuples)
			p->on_tuples(r, p->arg);
		break;
	case PGRES_COMMAND_OK:
	case PGRES_PIPELINE_ABORTED:
		break;
	default:
		p->errors++;
		log_warning("tick failed: %s", PQresultErrorMessage(r));
		if (PQstatus(c) != CONNECTION_OK)
			return false;
		break;
	}
	return true;
}

bool
gen_read_results(PGconn *c, struct gen_pipe *p, bool wait)
{
	bool progressed = false;

	for (;;) {
		if (p->in_flight == 0)
			return true;
		if (PQflush(c) < 0 || !PQconsumeInput(c)) {
			log_error("connection: %s", PQerrorMessage(c));
			return false;
		}
		while (!PQisBusy(c)) {
			PGresult *r = PQgetResult(c);

			if (!r) {
				if (p->in_flight == 0)
					return true;
				continue; /* end of one query's results */
			}
			bool ok = take_result(c, p, r, &progressed);
			PQclear(r);
			if (!ok)
				return false;
			if (p->in_flight == 0)
				return true;
		}
		if (PQstatus(c) != CONNECTION_OK) {
			log_error("connection lost: %s", PQerrorMessage(c));
			return false;
		}
		if (!wait || progressed)
			return true;
		if (!wait_socket(c) || gen_stop > 1)
			return false;
	}
}

bool
gen_wait_tick(PGconn *c, struct gen_pipe *p, double due, int max_in_flight, double *lag_ms)
{
	double lag = (gen_now_s() - due) * 1000.0;

	*lag_ms = lag < 0 ? 0 : lag;
	if (lag < 0) {
		/* Early: read what has come back, then sleep till the tick. */
		if (!gen_read_results(c, p, false))
			return false;
		gen_sleep_until(due);
	}
	while (p->in_flight >= max_in_flight)
		if (!gen_read_results(c, p, true))
			return false;
	return true;
}
