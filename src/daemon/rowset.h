/*
 * rowset.h - a multiset of rows: the feed's current state.
 *
 * Each distinct row (the bytes of its JSON array) is stored once with its
 * multiplicity, in an open-addressing hash table of entry pointers
 * (linear probing, backward-shift deletion, grown at 3/4 load).  An entry
 * is a 16-byte header and the row bytes, rounded up to 8, carved from
 * 256 KiB slabs with a free list per size (entries over 1 KiB get their
 * own malloc).  So the state costs the rows' JSON plus about 20 + 11..21
 * (table) bytes a distinct row; freed space is reused by rows of the same
 * size class and returned only by rowset_clear.  rowset_memory() counts
 * all of it; tests/test_rowset.c and bench/bench_daemon.c print it
 * against the rows' JSON size.
 *
 * Entries stay at one address until removed.  mark is scratch space for
 * the caller (feed.c keeps an index there while closing a timestamp); the
 * rowset never reads it and new entries start with 0.  Not thread-safe.
 * Allocation failure is fatal (the state is the daemon's reason to live).
 */
#ifndef TAILGATE_ROWSET_H
#define TAILGATE_ROWSET_H

#include <stddef.h>
#include <stdint.h>

struct rowset_entry {
	uint32_t hash;
	uint32_t len;
	uint32_t count; /* multiplicity; 0 only while the caller holds it */
	uint32_t mark;  /* the caller's */
	char row[];     /* len bytes, not NUL-terminated */
};

struct rowset {
	struct rowset_entry **slots;
	size_t cap;            /* power of two, or 0 */
	size_t distinct;       /* entries */
	uint64_t rows;         /* sum of counts */
	uint64_t row_bytes;    /* sum of len over entries */
	uint64_t listed_bytes; /* sum of (len + 1) * count: the rows as a
	                        * snapshot lists them, commas included */
	uint64_t entry_bytes;  /* heap bytes of the slabs and large entries */

	/* The entry allocator (rowset.c). */
	char **slabs;
	size_t nslabs, slabs_cap;
	char *slab_next;
	size_t slab_left;
	void *free_list[1024 / 8 + 1];
};

uint32_t rowset_hash(const char *row, size_t len);

void rowset_init(struct rowset *rs);
void rowset_clear(struct rowset *rs);

/* The entry for row, or NULL. */
struct rowset_entry *rowset_find(const struct rowset *rs, const char *row, size_t len,
                                 uint32_t hash);

/* The entry for row; a new one has count 0 and stays (counted in
 * distinct) until the caller gives it a count or removes it. */
struct rowset_entry *rowset_intern(struct rowset *rs, const char *row, size_t len, uint32_t hash);

/* Change an entry's count (keeps rs->rows right). */
void rowset_set_count(struct rowset *rs, struct rowset_entry *e, uint32_t count);

/* Remove and free e. */
void rowset_remove(struct rowset *rs, struct rowset_entry *e);

/* Iterate: start with *pos = 0; NULL at the end.  The set must not change
 * during iteration. */
struct rowset_entry *rowset_next(const struct rowset *rs, size_t *pos);

/* Heap bytes the set holds: entries (with malloc's per-chunk overhead)
 * and the table. */
uint64_t rowset_memory(const struct rowset *rs);

#endif
