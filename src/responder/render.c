/*
 * render.c - reply bytes (render.h).
 */
#include "render.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

const char *
render_reason(int status)
{
	switch (status) {
	case 200:
		return "OK";
	case 400:
		return "Bad Request";
	case 404:
		return "Not Found";
	case 405:
		return "Method Not Allowed";
	case 410:
		return "Gone";
	case 500:
		return "Internal Server Error";
	case 503:
		return "Service Unavailable";
	default:
		return "Unknown";
	}
}

void
render_json_string(struct bbuf *out, const char *s)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *p = (const unsigned char *)s;
	size_t left = strlen(s);

	/* Messages may quote what a client sent (a feed name, a parameter):
	 * bytes that are not UTF-8 become U+FFFD, so the reply stays JSON. */
	bbuf_add(out, "\"", 1);
	while (left > 0) {
		unsigned char c = *p;
		size_t n = 1;
		if (c == '"' || c == '\\') {
			char e[2] = {'\\', (char)c};
			bbuf_add(out, e, 2);
		} else if (c < 0x20 || c == 0x7f) {
			char e[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
			bbuf_add(out, e, 6);
		} else if (c < 0x80) {
			bbuf_add(out, p, 1);
		} else if ((n = utf8_char_len(p, left)) > 0) {
			bbuf_add(out, p, n);
		} else {
			n = 1;
			bbuf_add(out, "\\ufffd", 6);
		}
		p += n;
		left -= n;
	}
	bbuf_add(out, "\"", 1);
}

void
render_head(struct bbuf *out, int status, const char *content_type, const char *cache_control,
            const char *extra)
{
	char line[128];

	snprintf(line, sizeof(line), "Status: %d %s\r\n", status, render_reason(status));
	bbuf_adds(out, line);
	bbuf_adds(out, "Content-Type: ");
	bbuf_adds(out, content_type);
	bbuf_adds(out, "\r\nCache-Control: ");
	bbuf_adds(out, cache_control);
	bbuf_adds(out, "\r\n");
	if (extra != NULL)
		bbuf_adds(out, extra);
	bbuf_adds(out, "\r\n");
}

void
render_error(struct bbuf *out, int status, const char *code, const char *message)
{
	render_head(out, status, "application/json", "no-store", NULL);
	bbuf_adds(out, "{\"error\":");
	render_json_string(out, code);
	bbuf_adds(out, ",\"message\":");
	render_json_string(out, message);
	bbuf_adds(out, "}\n");
}

void
render_sse_event(struct bbuf *out, const char *name, uint64_t id, const char *json, size_t len)
{
	char line[48];

	if (name != NULL) {
		bbuf_adds(out, "event: ");
		bbuf_adds(out, name);
		bbuf_adds(out, "\n");
	}
	snprintf(line, sizeof(line), "id: %" PRIu64 "\n", id);
	bbuf_adds(out, line);
	/* Compact JSON has no raw newline, but a json column keeps its input
	 * text: each line of it becomes one data: line (SSE joins them). */
	while (len > 0) {
		size_t n = 0;
		while (n < len && json[n] != '\n' && json[n] != '\r')
			n++;
		bbuf_adds(out, "data: ");
		bbuf_add(out, json, n);
		bbuf_adds(out, "\n");
		if (n < len)
			n++;
		json += n;
		len -= n;
	}
	bbuf_adds(out, "\n");
}

/* Append the rows [from, to) of v that f matches, comma-separated;
 * returns how many. */
static uint64_t
render_matching(struct bbuf *out, const struct batch_view *v, const struct filter *f, uint64_t from,
                uint64_t to)
{
	uint64_t matched = 0;

	for (uint64_t i = from; i < to; i++) {
		const struct batch_row *r = &v->rows[i];
		if (!filter_match(f, v->json + r->off, r->len))
			continue;
		if (matched > 0)
			bbuf_add(out, ",", 1);
		bbuf_add(out, v->json + r->off, r->len);
		matched++;
	}
	return matched;
}

bool
render_batch(struct bbuf *out, const struct batch_view *v, const struct filter *f, uint64_t cursor)
{
	char prefix[64];
	size_t mark = out->len;
	uint64_t matched;

	if (f == NULL) {
		bbuf_add(out, v->json, v->json_len);
		return true;
	}
	snprintf(prefix, sizeof(prefix), "{\"timestamp\":\"%" PRIu64 "\",\"inserted\":[", cursor);
	bbuf_adds(out, prefix);
	matched = render_matching(out, v, f, 0, v->n_ins);
	bbuf_adds(out, "],\"deleted\":[");
	matched += render_matching(out, v, f, v->n_ins, v->n_ins + v->n_del);
	bbuf_adds(out, "]}");
	if (matched == 0) {
		out->len = mark;
		return false;
	}
	return true;
}

int
render_range(struct ring *r, uint64_t from, uint64_t head, const struct filter *f, bool sse,
             size_t max_bytes, struct bbuf *out, struct ring_buf *scratch, struct render_range *rr,
             uint64_t start_cursor)
{
	struct bbuf tmp = {0};
	int rc = RING_OK;

	rr->n_batches = 0;
	rr->next_seq = from;
	rr->last_cursor = start_cursor;
	rr->bytes = 0;
	for (uint64_t seq = from; seq < head; seq++) {
		struct ring_rec rec;
		struct batch_view v;
		size_t mark = out->len;

		rc = ring_read(r, seq, scratch, &rec);
		if (rc != RING_OK)
			break;
		if (!batch_view(scratch->data, scratch->len, &v)) {
			rc = RING_ERR;
			break;
		}
		if (sse) {
			tmp.len = 0;
			if (render_batch(&tmp, &v, f, rec.cursor)) {
				render_sse_event(out, NULL, rec.cursor, tmp.p, tmp.len);
				rr->n_batches++;
			}
		} else {
			if (rr->n_batches > 0)
				bbuf_add(out, ",", 1);
			if (render_batch(out, &v, f, rec.cursor))
				rr->n_batches++;
			else
				out->len = mark;
		}
		rr->bytes += out->len - mark;
		rr->next_seq = seq + 1;
		rr->last_cursor = rec.cursor;
		if (rr->bytes >= max_bytes)
			break;
	}
	bbuf_free(&tmp);
	return rc;
}
