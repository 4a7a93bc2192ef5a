/*
 * memtrim.c - malloc_trim after request buffers were freed, rate-limited
 * (see memtrim.h).
 */
#include "memtrim.h"

#include <stdatomic.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif

#define MEMTRIM_INTERVAL_MS 1000

static _Atomic unsigned freed; /* since the last trim */
static _Atomic int64_t last_trim_ms = INT64_MIN / 2;

void
memtrim_freed(unsigned n)
{
	atomic_fetch_add_explicit(&freed, n, memory_order_relaxed);
}

void
memtrim_tick(int64_t now_ms)
{
	int64_t last = atomic_load_explicit(&last_trim_ms, memory_order_relaxed);

	if (now_ms - last < MEMTRIM_INTERVAL_MS ||
	    atomic_load_explicit(&freed, memory_order_relaxed) == 0 ||
	    !atomic_compare_exchange_strong(&last_trim_ms, &last, now_ms))
		return;
	atomic_store_explicit(&freed, 0, memory_order_relaxed);
#ifdef __GLIBC__
	malloc_trim(0);
#endif
}
