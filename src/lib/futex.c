/*
 * futex.c - shared futex wait/wake on a word in a MAP_SHARED mapping.
 *
 * glibc has no wrapper; these are the two calls the ring needs.  The
 * operations are the non-private ones so that waiters in other processes
 * that map the same file are found by the kernel (it keys the futex on the
 * file's page, not on this process's address).
 */
#include "atomics.h"

#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

int
futex_wait_shared(atomic_u32 *word, uint32_t expected, const struct timespec *timeout)
{
	/* FUTEX_WAIT takes a relative timeout. */
	long rc = syscall(SYS_futex, (uint32_t *)word, FUTEX_WAIT, expected, timeout, NULL, 0);
	if (rc == -1 && errno == EAGAIN)
		return 0; /* the word had already moved on */
	return rc == 0 ? 0 : -1;
}

int
futex_wake_all_shared(atomic_u32 *word)
{
	long rc = syscall(SYS_futex, (uint32_t *)word, FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
	return rc < 0 ? 0 : (int)rc;
}
