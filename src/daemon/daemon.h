/*
 * daemon.h - tailgated's event loop: every feed's source and ring on one
 * thread, one poll(2).
 *
 * The daemon owns a configuration and, per configured feed, a feed
 * (feed.h) and a source (source.h).  daemon_step() runs one iteration:
 * poll every source's socket and timer (and one extra descriptor the
 * caller watches, the signalfd), run what is ready, start sessions whose
 * backoff expired, beat the hearts once a second, and wake the readers of
 * every ring that got batches.  A session that fails (SOURCE_RETRY) is
 * stopped, its feed marked down, and restarted after an exponential
 * backoff with jitter (conf->backoff_min_ms doubling up to
 * backoff_max_ms; back to the minimum after a session stayed live 10 s).
 *
 * Not thread-safe; signals are the caller's business (it sees the extra
 * descriptor readable and decides: daemon_reload, daemon_free).
 */
#ifndef TAILGATE_DAEMON_H
#define TAILGATE_DAEMON_H

#include <stdbool.h>
#include <stdint.h>

struct conf;
struct feed_stats;
struct daemon;

/* Takes ownership of conf.  Returns NULL (logged) when a feed's source
 * cannot be set up. */
struct daemon *daemon_new(struct conf *conf, bool remove_on_exit);

/* One iteration; waits at most max_wait_ms (negative: as long as no
 * timer is due).  Returns true when extra_fd (if >= 0) is readable. */
bool daemon_step(struct daemon *d, int extra_fd, int max_wait_ms);

/* Switch to conf (taking ownership): feeds that are gone stop and their
 * segments are removed; feeds whose definition changed restart with a
 * new segment; unchanged feeds keep running untouched. */
void daemon_reload(struct daemon *d, struct conf *conf);

/* Stop every source; close every segment (marked closed for readers, and
 * unlinked when remove_on_exit was set). */
void daemon_free(struct daemon *d);

/* For tests and the bench: a feed's counters; false when unknown. */
bool daemon_feed_stats(struct daemon *d, const char *feed, struct feed_stats *out);

#endif
