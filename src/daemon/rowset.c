/*
 * rowset.c - the multiset of rows (rowset.h).
 */
#include "config.h" /* autoconf: _GNU_SOURCE and friends, first */

#include "rowset.h"

#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MALLOC_CHUNK_OVERHEAD 8 /* glibc's size word before each chunk */
#define SLAB_SIZE (256 * 1024)
#define SLAB_MAX_ENTRY 1024 /* larger entries get their own malloc */
#define GRAIN 8

static void *
xalloc(size_t n)
{
	void *p = malloc(n);

	if (p == NULL) {
		fprintf(stderr, "tailgate: out of memory allocating %zu bytes for the row state\n",
		        n);
		abort();
	}
	return p;
}

static inline uint64_t
mix(uint64_t a, uint64_t b)
{
	__uint128_t r = (__uint128_t)a * b;

	return (uint64_t)r ^ (uint64_t)(r >> 64);
}

static inline uint64_t
read64(const unsigned char *p)
{
	uint64_t v;

	memcpy(&v, p, 8);
	return v;
}

/* A multiply-mix hash in the manner of wyhash: rows come from the
 * trusted upstream, so speed matters more than flooding resistance. */
uint32_t
rowset_hash(const char *row, size_t len)
{
	const unsigned char *p = (const unsigned char *)row;
	uint64_t seed = 0x9e3779b97f4a7c15ull ^ len;
	size_t i = 0;

	for (; i + 16 <= len; i += 16)
		seed = mix(read64(p + i) ^ 0xa0761d6478bd642full, read64(p + i + 8) ^ seed);
	if (len - i >= 8) {
		seed = mix(read64(p + i) ^ 0xe7037ed1a0b428dbull, seed);
		i += 8;
	}
	if (i < len) {
		uint64_t w = 0;
		memcpy(&w, p + i, len - i);
		seed = mix(w ^ 0x8ebc6af09c88c6e3ull, seed ^ 0x589965cc75374cc3ull);
	}
	seed = mix(seed ^ 0x1d8e4e27c47d124full, len ^ 0xa0761d6478bd642full);
	return (uint32_t)(seed ^ (seed >> 32));
}

static size_t
entry_size(size_t len)
{
	return (sizeof(struct rowset_entry) + len + GRAIN - 1) & ~(size_t)(GRAIN - 1);
}

void
rowset_init(struct rowset *rs)
{
	memset(rs, 0, sizeof(*rs));
}

void
rowset_clear(struct rowset *rs)
{
	for (size_t i = 0; i < rs->cap; i++) {
		struct rowset_entry *e = rs->slots[i];
		if (e != NULL && entry_size(e->len) > SLAB_MAX_ENTRY)
			free(e);
	}
	for (size_t i = 0; i < rs->nslabs; i++)
		free(rs->slabs[i]);
	free(rs->slabs);
	free(rs->slots);
	rowset_init(rs);
}

static void
grow(struct rowset *rs)
{
	size_t cap = rs->cap ? rs->cap * 2 : 64;
	struct rowset_entry **slots = xalloc(cap * sizeof(*slots));

	memset(slots, 0, cap * sizeof(*slots));
	for (size_t i = 0; i < rs->cap; i++) {
		struct rowset_entry *e = rs->slots[i];
		size_t j;
		if (e == NULL)
			continue;
		for (j = e->hash & (cap - 1); slots[j] != NULL; j = (j + 1) & (cap - 1))
			;
		slots[j] = e;
	}
	free(rs->slots);
	rs->slots = slots;
	rs->cap = cap;
}

/* Entries up to SLAB_MAX_ENTRY bytes are carved from big slabs, in
 * GRAIN-byte size classes with one free list each: no per-entry malloc
 * header or minimum chunk, which is most of the cost of a short row. */
static struct rowset_entry *
entry_alloc(struct rowset *rs, size_t len)
{
	size_t size = entry_size(len), cls = size / GRAIN;
	void *p;

	if (size > SLAB_MAX_ENTRY) {
		p = xalloc(size);
		rs->entry_bytes += malloc_usable_size(p) + MALLOC_CHUNK_OVERHEAD;
		return p;
	}
	if (rs->free_list[cls] != NULL) {
		p = rs->free_list[cls];
		memcpy(&rs->free_list[cls], p, sizeof(rs->free_list[cls]));
		return p;
	}
	if (rs->slab_left < size) {
		if (rs->nslabs == rs->slabs_cap) {
			rs->slabs_cap = rs->slabs_cap ? rs->slabs_cap * 2 : 16;
			rs->slabs = realloc(rs->slabs, rs->slabs_cap * sizeof(*rs->slabs));
			if (rs->slabs == NULL) {
				fprintf(stderr, "tailgate: out of memory for the row state\n");
				abort();
			}
		}
		rs->slab_next = xalloc(SLAB_SIZE);
		rs->slabs[rs->nslabs++] = rs->slab_next;
		rs->slab_left = SLAB_SIZE;
		rs->entry_bytes += SLAB_SIZE + MALLOC_CHUNK_OVERHEAD;
	}
	p = rs->slab_next;
	rs->slab_next += size;
	rs->slab_left -= size;
	return p;
}

static void
entry_free(struct rowset *rs, struct rowset_entry *e)
{
	size_t size = entry_size(e->len), cls = size / GRAIN;

	if (size > SLAB_MAX_ENTRY) {
		rs->entry_bytes -= malloc_usable_size(e) + MALLOC_CHUNK_OVERHEAD;
		free(e);
		return;
	}
	/* A free entry holds the list's link in its first bytes. */
	memcpy(e, &rs->free_list[cls], sizeof(rs->free_list[cls]));
	rs->free_list[cls] = e;
}

struct rowset_entry *
rowset_find(const struct rowset *rs, const char *row, size_t len, uint32_t hash)
{
	size_t mask = rs->cap - 1;

	if (rs->cap == 0)
		return NULL;
	for (size_t j = hash & mask;; j = (j + 1) & mask) {
		struct rowset_entry *e = rs->slots[j];
		if (e == NULL)
			return NULL;
		if (e->hash == hash && e->len == len && memcmp(e->row, row, len) == 0)
			return e;
	}
}

struct rowset_entry *
rowset_intern(struct rowset *rs, const char *row, size_t len, uint32_t hash)
{
	struct rowset_entry *e;
	size_t j, mask;

	if ((rs->distinct + 1) * 4 > rs->cap * 3)
		grow(rs);
	mask = rs->cap - 1;
	for (j = hash & mask; (e = rs->slots[j]) != NULL; j = (j + 1) & mask)
		if (e->hash == hash && e->len == len && memcmp(e->row, row, len) == 0)
			return e;
	e = entry_alloc(rs, len);
	e->hash = hash;
	e->len = (uint32_t)len;
	e->count = 0;
	e->mark = 0;
	memcpy(e->row, row, len);
	rs->slots[j] = e;
	rs->distinct++;
	rs->row_bytes += len;
	return e;
}

void
rowset_set_count(struct rowset *rs, struct rowset_entry *e, uint32_t count)
{
	rs->rows += (uint64_t)count - e->count;
	rs->listed_bytes += ((uint64_t)count - e->count) * (e->len + 1);
	e->count = count;
}

void
rowset_remove(struct rowset *rs, struct rowset_entry *e)
{
	size_t mask = rs->cap - 1, i, j;

	for (i = e->hash & mask; rs->slots[i] != e; i = (i + 1) & mask)
		;
	/* Backward-shift deletion: move later members of the probe run into
	 * the hole when their home slot is not between the hole and them. */
	for (j = (i + 1) & mask; rs->slots[j] != NULL; j = (j + 1) & mask) {
		size_t home = rs->slots[j]->hash & mask;
		if (((j - home) & mask) >= ((j - i) & mask)) {
			rs->slots[i] = rs->slots[j];
			i = j;
		}
	}
	rs->slots[i] = NULL;
	rs->distinct--;
	rs->rows -= e->count;
	rs->listed_bytes -= (uint64_t)e->count * (e->len + 1);
	rs->row_bytes -= e->len;
	entry_free(rs, e);
}

struct rowset_entry *
rowset_next(const struct rowset *rs, size_t *pos)
{
	while (*pos < rs->cap) {
		struct rowset_entry *e = rs->slots[(*pos)++];
		if (e != NULL)
			return e;
	}
	return NULL;
}

uint64_t
rowset_memory(const struct rowset *rs)
{
	return rs->entry_bytes + rs->cap * sizeof(*rs->slots);
}
