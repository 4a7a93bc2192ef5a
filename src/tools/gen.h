/*
 * gen.h - what the load generators (tailgate-loadgen, tailgate-shopgen)
 * share: stopping on a signal, option numbers, a seeded random stream,
 * SQL text built in a growable buffer, the users' names, the clock in
 * seconds, the libpq calls outside and into pipeline mode, connecting
 * again with a backoff, and pacing the ticks.
 */
#ifndef TAILGATE_GEN_H
#define TAILGATE_GEN_H

#include <libpq-fe.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* 0 while running; 1 after SIGINT/SIGTERM (finish the ticks in flight),
 * 2 after a second one (stop at once).  gen_catch_signals installs it and
 * ignores SIGPIPE. */
extern volatile sig_atomic_t gen_stop;
void gen_catch_signals(void);

/* An option's number in [min, max]; false on anything else. */
bool gen_parse_double(const char *s, double min, double max, double *out);
bool gen_parse_int(const char *s, long min, long max, long *out);

/* xorshift64*: the same seed, the same load.  Seed 0 picks a fixed one. */
void gen_rng_seed(uint64_t seed);
uint64_t gen_rng_next(void);
/* Uniform in [lo, hi]. */
int64_t gen_rng_range(int64_t lo, int64_t hi);
/* Uniform in [0, 1). */
double gen_rng_unit(void);

/* SQL text; free(s.p) when done.  Dies on allocation failure. */
struct gen_sql {
	char *p;
	size_t len, cap;
};
void gen_sql_printf(struct gen_sql *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* User i's first and last name (25 x 20 combinations before they repeat). */
void gen_user_name(size_t i, const char **first, const char **last);

/* The monotonic clock in seconds; sleeping until such a time. */
double gen_now_s(void);
void gen_sleep_until(double t);

/* Connect to dsn as application app: the connection, or NULL (logged). */
PGconn *gen_connect(const char *dsn, const char *app);
/* Call connect(arg) until it returns true, sleeping 0.25 s after the first
 * failure and twice as long after each next one, 5 s at most; false when a
 * signal came first (gen_stop), when deadline (gen_now_s() time, 0: none)
 * passed, or when gen_connect found the connection string malformed
 * (retrying cannot help), each logged. */
bool gen_connect_retry(bool (*connect)(void *arg), void *arg, double deadline);
/* Pipeline mode, non-blocking; false (logged) when refused. */
bool gen_pipeline_mode(PGconn *c);
/* Run one statement outside the pipeline: its result when its status is
 * want, else NULL (logged with the statement's start). */
PGresult *gen_exec(PGconn *c, const char *sql, ExecStatusType want);
/* Send one statement into the pipeline; false (logged) on failure. */
bool gen_send(PGconn *c, const char *sql);

/* The pipeline's bookkeeping: a tick is syncs_per_tick syncs. */
struct gen_pipe {
	int in_flight; /* pipeline syncs sent whose results are not all read */
	int syncs_per_tick;
	uint64_t ticks_done, errors;
	/* A statement's rows (PGRES_TUPLES_OK), for the caller's counters. */
	void (*on_tuples)(PGresult *r, void *arg);
	void *arg;
};
/* Read what results have arrived (with wait, block until a tick completes
 * or all are read).  A failed statement counts in errors and is logged.
 * False when the connection is lost or a second signal came. */
bool gen_read_results(PGconn *c, struct gen_pipe *p, bool wait);
/* Wait until the tick due at time due (gen_now_s) may be sent: read what
 * results arrive while it is early, sleep until it is due, then wait for
 * fewer than max_in_flight syncs in flight.  *lag_ms: how late the tick
 * is, 0 when early.  False as gen_read_results. */
bool gen_wait_tick(PGconn *c, struct gen_pipe *p, double due, int max_in_flight, double *lag_ms);

#endif
