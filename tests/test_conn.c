/*
 * test_conn.c - conn_params_complete: when has a FastCGI connection sent
 * its whole params block (conn.h)?  Records built byte by byte here.
 */
#include "conn.h"

#include "tap.h"

#include <string.h>

/* Append one FastCGI record of type with clen content bytes (all 'x')
 * and pad padding bytes. */
static size_t
record(unsigned char *buf, size_t off, int type, size_t clen, int pad)
{
	unsigned char *h = buf + off;

	h[0] = 1;
	h[1] = (unsigned char)type;
	h[2] = 0;
	h[3] = 1;
	h[4] = (unsigned char)(clen >> 8);
	h[5] = (unsigned char)clen;
	h[6] = (unsigned char)pad;
	h[7] = 0;
	memset(h + 8, 'x', clen + (size_t)pad);
	return off + 8 + clen + (size_t)pad;
}

int
main(void)
{
	unsigned char buf[1024] = {0};
	size_t n = 0, full;

	is_int(conn_params_complete(buf, 0), 0, "nothing yet: not complete");
	n = record(buf, n, 1, 8, 0); /* BEGIN_REQUEST */
	is_int(conn_params_complete(buf, n), 0, "BEGIN_REQUEST only: not complete");
	n = record(buf, n, 4, 300, 4); /* PARAMS with content and padding */
	is_int(conn_params_complete(buf, n), 0, "a PARAMS record with content: not complete");
	full = record(buf, n, 4, 0, 0); /* the empty PARAMS that ends the block */
	is_int(conn_params_complete(buf, full), 1, "the empty PARAMS record: complete");
	for (size_t cut = 1; cut < 8; cut++)
		if (conn_params_complete(buf, full - cut) != 0) {
			ok(0, "the empty PARAMS header cut at %zu bytes is not complete", 8 - cut);
			break;
		} else if (cut == 7) {
			ok(1, "the empty PARAMS header cut short: not complete (7 cuts)");
		}
	/* A content length above 255 uses both bytes, and padding counts:
	 * a PARAMS record of 0x0100 bytes is not mistaken for an empty one. */
	n = record(buf, 0, 1, 8, 0);
	n = record(buf, n, 4, 256, 0);
	is_int(conn_params_complete(buf, n), 0, "PARAMS of 256 bytes is not the empty one");
	n = record(buf, n, 4, 0, 0);
	is_int(conn_params_complete(buf, n), 1, "then the empty one completes it");
	/* Padding hides a fake header: the padding bytes are skipped. */
	n = record(buf, 0, 1, 8, 8);
	memcpy(buf + 16, "\x01\x04\x00\x01\x00\x00\x00\x00", 8); /* inside the padding */
	is_int(conn_params_complete(buf, n), 0, "a header inside padding is not read");
	/* Not FastCGI (an HTTP request sent to the socket). */
	memcpy(buf, "GET / HTTP/1.1\r\n", 16);
	is_int(conn_params_complete(buf, 16), -1, "an HTTP request: malformed");
	n = record(buf, 0, 1, 8, 0);
	buf[n] = 2; /* a later record with version 2 */
	is_int(conn_params_complete(buf, n + 8), -1, "a record of another version: malformed");
	return tap_done();
}
