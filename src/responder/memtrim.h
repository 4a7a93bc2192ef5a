/*
 * memtrim.h - giving the memory of finished request buffers back to the
 * system, at most once a second.
 *
 * Every request arrives with libfcgi's buffers (8 kB in, 8 kB out, the
 * params); an SSE stream drops them once its head is written (conn.c's
 * detach), but glibc keeps the freed chunks mapped in the thread's arena,
 * and the small structures a stream keeps for its life (its request and
 * waiter, allocated while the buffers lived) sit between them, so no
 * arena ever shrinks from its top: 10,000 streams held ~15 MB of such
 * pages in the responder where ~5 MB is live (docs/BENCHMARKS.md, runs
 * 25-).  malloc_trim(0) gives back every whole free page of every arena.
 *
 * memtrim_freed() counts streams that dropped their buffers (any thread,
 * no lock); memtrim_tick() (the parking lot's watcher, once per round)
 * trims when some did and the last trim is at least a second old, so a
 * ramp of thousands of streams costs a trim a second, and a steady load
 * none.  Long-polls are not counted: theirs are freed as soon as the
 * request is read (handle_feed detaches them too) and the next request's
 * buffers take the same chunks, so trimming would only fault them back in.
 */
#ifndef TAILGATE_MEMTRIM_H
#define TAILGATE_MEMTRIM_H

#include <stdint.h>

/* n streams freed their request buffers. */
void memtrim_freed(unsigned n);
/* Trim if buffers were freed since the last trim and that trim is at
 * least a second before now_ms (clock_mono_ms). */
void memtrim_tick(int64_t now_ms);

#endif
