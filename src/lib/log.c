/*
 * log.c - one-line-per-event logging (log.h).
 */
#include "log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

enum log_level log_max_level = LOG_LEVEL_INFO;

static const char *log_prog = "tailgate";
static bool log_syslog;

static const char *const level_names[] = {"error", "warning", "info", "debug"};

#define LOG_MAX_SECRETS 8
static char *secrets[LOG_MAX_SECRETS];

void
log_redact(const char *secret)
{
	if (secret == NULL || *secret == '\0')
		return;
	for (int i = 0; i < LOG_MAX_SECRETS; i++) {
		if (secrets[i] != NULL && strcmp(secrets[i], secret) == 0)
			return;
		if (secrets[i] == NULL) {
			secrets[i] = strdup(secret);
			return;
		}
	}
	/* Full: forget the oldest (a reload's previous password). */
	free(secrets[0]);
	memmove(secrets, secrets + 1, (LOG_MAX_SECRETS - 1) * sizeof(*secrets));
	secrets[LOG_MAX_SECRETS - 1] = strdup(secret);
}

/* Replace every secret in s (a NUL-terminated buffer of cap bytes). */
static void
redact(char *s, size_t cap)
{
	static const char mask[] = "********";

	for (int i = 0; i < LOG_MAX_SECRETS && secrets[i] != NULL; i++) {
		size_t n = strlen(secrets[i]);
		char *hit = s;
		while ((hit = strstr(hit, secrets[i])) != NULL) {
			size_t tail = strlen(hit + n) + 1, m = sizeof(mask) - 1;
			if ((size_t)(hit - s) + m + tail > cap)
				m = n < m ? n : m; /* no room to grow: mask in place */
			memmove(hit + m, hit + n, tail);
			memcpy(hit, mask, m);
			hit += m;
		}
	}
}

void
log_init(const char *progname, bool use_syslog)
{
	log_prog = progname;
	log_syslog = use_syslog;
	if (use_syslog)
		openlog(progname, LOG_PID | LOG_NDELAY, LOG_DAEMON);
}

static void
vlog(enum log_level level, const char *fmt, va_list ap, const char *suffix)
{
	static const int prio[] = {LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG};
	char msg[2048];
	int saved = errno;

	vsnprintf(msg, sizeof(msg), fmt, ap);
	if (suffix != NULL) {
		size_t n = strlen(msg);
		snprintf(msg + n, sizeof(msg) - n, ": %s", suffix);
		suffix = NULL;
	}
	if (secrets[0] != NULL)
		redact(msg, sizeof(msg));
	if (log_syslog) {
		syslog(prio[level], "%s%s%s", msg, suffix ? ": " : "", suffix ? suffix : "");
	} else {
		struct timeval tv;
		struct tm tm;
		char ts[32];

		gettimeofday(&tv, NULL);
		gmtime_r(&tv.tv_sec, &tm);
		strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
		fprintf(stderr, "%s.%03ldZ %s[%d] %s %s%s%s\n", ts, (long)(tv.tv_usec / 1000),
		        log_prog, (int)getpid(), level_names[level], msg, suffix ? ": " : "",
		        suffix ? suffix : "");
	}
	errno = saved;
}

void
log_msg(enum log_level level, const char *fmt, ...)
{
	va_list ap;

	if (level > log_max_level)
		return;
	va_start(ap, fmt);
	vlog(level, fmt, ap, NULL);
	va_end(ap);
}

void
fatal(const char *fmt, ...)
{
	va_list ap;
	const char *why = strerror(errno);

	va_start(ap, fmt);
	vlog(LOG_LEVEL_ERROR, fmt, ap, why);
	va_end(ap);
	exit(1);
}

void
fatalx(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vlog(LOG_LEVEL_ERROR, fmt, ap, NULL);
	va_end(ap);
	exit(1);
}

void
log_seterr(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (err == NULL || errlen == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}
