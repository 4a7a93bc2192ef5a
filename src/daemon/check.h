/*
 * check.h - tailgated --check: the configuration against the upstream and
 * the ring directory it will run with (check.c).
 */
#ifndef TAILGATE_CHECK_H
#define TAILGATE_CHECK_H

#include "conf.h"

#include <stdio.h>

/* Connect and verify everything the daemon needs for conf; one line per
 * problem on out.  Returns the number of problems (0: all good). */
int check_run(const struct conf *conf, FILE *out);

#endif
