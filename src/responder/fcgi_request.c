/*
 * fcgi_request.c - a FastCGI request read from bytes in hand
 * (fcgi_request.h).
 */
#include "fcgi_request.h"

#include "xmalloc.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define HDR 8
#define T_BEGIN_REQUEST 1
#define T_PARAMS 4
#define T_STDIN 5
#define ROLE_RESPONDER 1
#define FLAG_KEEP_CONN 1
/* In req.flags, next to libfcgi's own (FCGI_FAIL_ACCEPT_ON_INTR, 1). */
#define FLAG_OURS 0x40000000

long
fcgireq_scan(const unsigned char *buf, size_t len)
{
	size_t off = 0;
	int stage = 0, id = -1; /* 0: BEGIN next, 1: PARAMS, 2: STDIN */

	while (off + HDR <= len) {
		const unsigned char *h = buf + off;
		size_t clen = (size_t)h[4] << 8 | h[5], rec = HDR + clen + h[6];
		int rid = h[2] << 8 | h[3];

		if (h[0] != 1 || off + rec > FCGIREQ_MAX)
			return -1;
		if (off + rec > len)
			return 0;
		if (stage == 0) {
			if (h[1] != T_BEGIN_REQUEST || clen < 8 ||
			    (h[HDR] << 8 | h[HDR + 1]) != ROLE_RESPONDER)
				return -1;
			id = rid;
			stage = 1;
		} else if (rid != id || h[1] != (stage == 1 ? T_PARAMS : T_STDIN)) {
			return -1;
		} else if (clen == 0 && stage++ == 2) {
			return (long)(off + rec);
		}
		off += rec;
	}
	return 0;
}

/* A name-value pair's length (1 byte, or 4 with the top bit set). */
static bool
pair_len(const unsigned char **p, const unsigned char *end, size_t *out)
{
	if (*p >= end)
		return false;
	if (**p < 0x80) {
		*out = *(*p)++;
		return true;
	}
	if (end - *p < 4)
		return false;
	*out = ((size_t)((*p)[0] & 0x7f) << 24) | (size_t)(*p)[1] << 16 | (size_t)(*p)[2] << 8 |
	       (*p)[3];
	*p += 4;
	return true;
}

struct fcgireq *
fcgireq_parse(const unsigned char *buf, size_t len, int fd)
{
	unsigned char small[4096], *params = small; /* nginx's fit in small */
	size_t plen = 0, off = 0, n = 0, strbytes = 0;
	const unsigned char *p, *end;
	struct fcgireq *r;
	char *s;
	int id = buf[2] << 8 | buf[3], flags = buf[HDR + 2];

	if (len > sizeof(small))
		params = xcalloc(1, len);
	/* The params' bytes, joined: a pair may span records. */
	while (off + HDR <= len) {
		const unsigned char *h = buf + off;
		size_t clen = (size_t)h[4] << 8 | h[5];

		if (h[1] == T_PARAMS) {
			memcpy(params + plen, h + HDR, clen);
			plen += clen;
		}
		off += HDR + clen + h[6];
	}
	for (p = params, end = params + plen; p < end; n++) {
		size_t nl, vl;

		if (!pair_len(&p, end, &nl) || !pair_len(&p, end, &vl) ||
		    (size_t)(end - p) < nl + vl) {
			if (params != small)
				free(params);
			return NULL;
		}
		p += nl + vl;
		strbytes += nl + vl + 2; /* "=" and NUL */
	}
	r = xcalloc(1, sizeof(*r));
	r->env = xcalloc(1, (n + 1) * sizeof(char *) + strbytes);
	s = (char *)(r->env + n + 1);
	n = 0;
	for (p = params; p < end; n++) {
		size_t nl, vl;

		pair_len(&p, end, &nl);
		pair_len(&p, end, &vl);
		r->env[n] = s;
		memcpy(s, p, nl);
		s[nl] = '=';
		memcpy(s + nl + 1, p + nl, vl);
		s[nl + 1 + vl] = '\0';
		s += nl + vl + 2;
		p += nl + vl;
	}
	r->env[n] = NULL;
	if (params != small)
		free(params);
	r->req.requestId = id;
	r->req.role = ROLE_RESPONDER;
	r->req.envp = r->env;
	r->req.ipcFd = fd;
	r->req.isBeginProcessed = 1;
	r->req.keepConnection = (flags & FLAG_KEEP_CONN) != 0;
	r->req.flags = FLAG_OURS;
	r->req.listen_sock = -1;
	r->gather = true;
	r->last = SIZE_MAX;
	return r;
}

bool
fcgireq_is(const FCGX_Request *req)
{
	return (req->flags & FLAG_OURS) != 0;
}

void
fcgireq_free_params(struct fcgireq *r)
{
	free(r->env);
	r->env = NULL;
	r->req.envp = NULL;
}

void
fcgireq_free(struct fcgireq *r)
{
	fcgireq_free_params(r);
	free(r->out);
	free(r);
}
