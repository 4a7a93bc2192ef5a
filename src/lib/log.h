/*
 * log.h - one line per event on stderr (or syslog), for every program.
 *
 *   2026-11-23T01:02:03.456Z tailgated[123] warning feed=winning_bids: ...
 *
 * log_debug() is gated before its arguments are evaluated.  Every call
 * keeps errno.  fatal()/fatalx() are for start-up errors and broken
 * invariants only: they log and exit(1).  A feed's or a client's trouble is
 * logged and returned, never fatal.
 */
#ifndef TAILGATE_LOG_H
#define TAILGATE_LOG_H

#include <stdbool.h>
#include <stddef.h>

enum log_level { LOG_LEVEL_ERROR, LOG_LEVEL_WARNING, LOG_LEVEL_INFO, LOG_LEVEL_DEBUG };

extern enum log_level log_max_level;

void log_init(const char *progname, bool use_syslog);
/* Never write secret: from now on every occurrence of it in a log line
 * (stderr or syslog) is written as "********".  For the daemon's
 * password, whatever message (libpq's included) might quote it.  Call
 * before starting threads; at most 8 secrets are kept. */
void log_redact(const char *secret);
void log_msg(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
void fatalx(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

/* Format a message into the caller's err[errlen], the out-parameter the
 * ring, the query-string parser and the filters report failures in;
 * nothing when err is NULL or errlen is 0.  Logs nothing. */
void log_seterr(char *err, size_t errlen, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));

#define log_error(...) log_msg(LOG_LEVEL_ERROR, __VA_ARGS__)
#define log_warning(...) log_msg(LOG_LEVEL_WARNING, __VA_ARGS__)
#define log_info(...)                                                                              \
	do {                                                                                       \
		if (log_max_level >= LOG_LEVEL_INFO)                                               \
			log_msg(LOG_LEVEL_INFO, __VA_ARGS__);                                      \
	} while (0)
#define log_debug(...)                                                                             \
	do {                                                                                       \
		if (log_max_level >= LOG_LEVEL_DEBUG)                                              \
			log_msg(LOG_LEVEL_DEBUG, __VA_ARGS__);                                     \
	} while (0)

#endif
