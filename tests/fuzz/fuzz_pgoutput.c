/*
 * fuzz_pgoutput.c - libFuzzer target: the replication stream parser must
 * accept or refuse any CopyData message without reading outside it, and
 * every value it accepts must lie inside the message.
 *
 * fuzz-sources: src/daemon/pgoutput.c
 */
#include "pgoutput.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);

static void
check_tuple(const struct pgo_tuple *t, const unsigned char *p, size_t size)
{
	for (uint16_t i = 0; i < t->ncols; i++) {
		const struct pgo_value *v = &t->vals[i];
		if ((v->kind == 't' || v->kind == 'b') &&
		    ((const unsigned char *)v->data < p ||
		     (const unsigned char *)v->data + v->len > p + size))
			abort();
	}
}

int
LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
	static struct pgo_decoder dec;
	unsigned char *p = malloc(size ? size : 1);
	struct pgo_copy cp;
	struct pgo_msg m;
	char err[256];

	memcpy(p, data, size);
	/* As the stream delivers it, and as a bare pgoutput message. */
	if (pgo_parse_copy(p, size, &cp, err, sizeof(err)) == 0 && cp.kind == PGO_COPY_XLOGDATA)
		(void)pgo_decode(&dec, cp.data, cp.len, &m, err, sizeof(err));
	if (pgo_decode(&dec, p, size, &m, err, sizeof(err)) == 0) {
		if (m.type == PGO_INSERT)
			check_tuple(&m.u.insert.newtup, p, size);
		if (m.type == PGO_UPDATE) {
			check_tuple(&m.u.update.newtup, p, size);
			if (m.u.update.old_kind)
				check_tuple(&m.u.update.oldtup, p, size);
		}
		if (m.type == PGO_DELETE)
			check_tuple(&m.u.del.oldtup, p, size);
	}
	free(p);
	return 0;
}
