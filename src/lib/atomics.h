/*
 * atomics.h - the few memory-ordering primitives tailgate's shared memory
 * uses, and the futex calls that let a reader sleep on a shared word.
 *
 * Every cross-process word in a ring segment is read and written only
 * through these wrappers, so each call site names its ordering.  At each
 * release/acquire pair the caller writes a comment saying what it orders
 * against ("the reader sees the new head only after the record bytes").
 *
 * Futexes are shared (no FUTEX_PRIVATE_FLAG): the word lives in a
 * MAP_SHARED file mapping and waiters sit in other processes.  FUTEX_WAIT
 * only reads the word, so it works on a read-only mapping.
 */
#ifndef TAILGATE_ATOMICS_H
#define TAILGATE_ATOMICS_H

#include <stdatomic.h>
#include <stdint.h>
#include <time.h>

typedef _Atomic uint64_t atomic_u64;
typedef _Atomic uint32_t atomic_u32;

#define load_relaxed(p) atomic_load_explicit((p), memory_order_relaxed)
#define load_acquire(p) atomic_load_explicit((p), memory_order_acquire)
#define store_relaxed(p, v) atomic_store_explicit((p), (v), memory_order_relaxed)
#define store_release(p, v) atomic_store_explicit((p), (v), memory_order_release)
#define fetch_add_release(p, v) atomic_fetch_add_explicit((p), (v), memory_order_release)
#define fence_acquire() atomic_thread_fence(memory_order_acquire)
#define fence_release() atomic_thread_fence(memory_order_release)
#define fence_seq_cst() atomic_thread_fence(memory_order_seq_cst)

/*
 * Sleep while *word == expected, at most timeout (NULL: forever).
 * Returns 0 when woken or when the word had already changed, -1 with
 * errno ETIMEDOUT or EINTR otherwise.
 */
int futex_wait_shared(atomic_u32 *word, uint32_t expected, const struct timespec *timeout);

/* Wake every waiter on word, in every process.  Returns how many woke. */
int futex_wake_all_shared(atomic_u32 *word);

#endif
