/*
 * memtrim.h - giving the memory of finished request buffers back to the
 * system, at most once a second.
 *
 * Every request arrives with libfcgi's buffers (8 kB in, 8 kB out, the
 * params); SSE streams and long-polls drop them early (conn_detach), but
 * glibc keeps freed chunks mapped in the thread's arena, and the small
 * structures that outlive them (a parked request's struct and waiter,
 * allocated while the buffers lived) sit between them, so arenas seldom
 * shrink from their top: the responder held 12-18 MB at 10,000 SSE
 * streams and 9-35 MB at 10,000 long-pollers, ~5 MB and ~2 MB trimmed
 * (docs/BENCHMARKS.md, runs 33-56).  malloc_trim(0) gives back every
 * whole free page of every arena (~30 madvise calls).
 *
 * memtrim_freed() counts requests that dropped their buffers (any thread,
 * no lock); memtrim_tick() (the parking lot's watcher, once per round)
 * trims when some did and the last trim is at least a second old: one
 * trim a second under a steady long-poll load (pages the next requests
 * take again are faulted back in: no measurable CPU), none when nothing
 * new arrives.
 */
#ifndef TAILGATE_MEMTRIM_H
#define TAILGATE_MEMTRIM_H

#include <stdint.h>

/* n requests freed their buffers. */
void memtrim_freed(unsigned n);
/* Trim if buffers were freed since the last trim and that trim is at
 * least a second before now_ms (clock_mono_ms). */
void memtrim_tick(int64_t now_ms);

#endif
