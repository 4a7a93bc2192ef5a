/*
 * fuzz_batch_view.c - libFuzzer target: batch_view() must accept or refuse
 * any payload without reading outside it, and every row it accepts must
 * lie inside the JSON text.
 */
#include "batch.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);

int
LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
	/* Copy to an 8-aligned buffer of exactly size bytes, as the ring does. */
	char *p = malloc(size ? size : 1);
	struct batch_view v;

	memcpy(p, data, size);
	if (batch_view(p, size, &v)) {
		for (uint64_t i = 0; i < v.n_ins + v.n_del; i++)
			if (v.rows[i].off + v.rows[i].len > v.json_len)
				abort();
	}
	free(p);
	return 0;
}
