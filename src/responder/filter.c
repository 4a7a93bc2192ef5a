/*
 * filter.c - row filters on batch rows (filter.h).
 */
#include "filter.h"

#include "log.h"
#include "text.h"

#include <ctype.h>
#include <json-c/json.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct term {
	int col;
	enum coltype_kind kind;
	enum hp_op op;
	int n;
	/* per value: */
	bool *is_null;
	struct numcmp *num; /* COLTYPE_NUMBER, digits in text[] */
	enum numcmp_class numclass;
	int *boolean; /* COLTYPE_BOOL: 0/1 */
	char **text;  /* COLTYPE_STRING */
	size_t *len;
};

struct filter {
	int n;
	struct term *terms;
};

bool
filter_cols_parse(const char *columns_json, struct filter_cols *out)
{
	json_object *arr = json_tokener_parse(columns_json ? columns_json : "[]");
	size_t n;

	memset(out, 0, sizeof(*out));
	if (arr == NULL || !json_object_is_type(arr, json_type_array)) {
		json_object_put(arr);
		return false;
	}
	n = json_object_array_length(arr);
	out->names = calloc(n + 1, sizeof(*out->names));
	out->kinds = calloc(n + 1, sizeof(*out->kinds));
	out->numclass = calloc(n + 1, sizeof(*out->numclass));
	if (out->names == NULL || out->kinds == NULL || out->numclass == NULL)
		goto failed;
	for (size_t i = 0; i < n; i++) {
		json_object *c = json_object_array_get_idx(arr, i), *name, *type;
		if (!json_object_object_get_ex(c, "name", &name) ||
		    !json_object_is_type(name, json_type_string))
			goto failed;
		out->names[i] = strdup(json_object_get_string(name));
		if (out->names[i] == NULL)
			goto failed;
		out->n = (int)i + 1;
		out->kinds[i] = COLTYPE_STRING;
		if (json_object_object_get_ex(c, "type", &type) &&
		    json_object_is_type(type, json_type_string)) {
			out->kinds[i] = coltype_kind_of_name(json_object_get_string(type));
			out->numclass[i] = numcmp_class_of_type(json_object_get_string(type));
		}
	}
	json_object_put(arr);
	return true;
failed:
	json_object_put(arr);
	filter_cols_free(out);
	return false;
}

void
filter_cols_free(struct filter_cols *c)
{
	if (c->names != NULL)
		for (int i = 0; i < c->n; i++)
			free(c->names[i]);
	free(c->names);
	free(c->kinds);
	free(c->numclass);
	memset(c, 0, sizeof(*c));
}

static void
free_term(struct term *t)
{
	if (t->text != NULL)
		for (int i = 0; i < t->n; i++)
			free(t->text[i]);
	free(t->text);
	free(t->len);
	free(t->num);
	free(t->boolean);
	free(t->is_null);
}

void
filter_free(struct filter *f)
{
	if (f == NULL)
		return;
	for (int i = 0; i < f->n; i++)
		free_term(&f->terms[i]);
	free(f->terms);
	free(f);
}

/* A boolean constant as PostgreSQL's boolin reads it: any case, a unique
 * prefix of true, false, yes, no, or on, off, 1, 0.  1, 0, or -1 when it
 * is none of them. */
static int
parse_bool(const char *s, size_t n)
{
	static const struct {
		const char *word;
		size_t min; /* shortest accepted prefix */
		int value;
	} words[] = {{"true", 1, 1}, {"false", 1, 0}, {"yes", 1, 1}, {"no", 1, 0},
	             {"on", 2, 1},   {"off", 2, 0},   {"1", 1, 1},   {"0", 1, 0}};

	/* boolin skips white space around the word. */
	while (n > 0 && isspace((unsigned char)s[0])) {
		s++;
		n--;
	}
	while (n > 0 && isspace((unsigned char)s[n - 1]))
		n--;
	for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++)
		if (n >= words[i].min && n <= strlen(words[i].word) &&
		    strncasecmp(s, words[i].word, n) == 0)
			return words[i].value;
	return -1;
}

/* A number constant, read as an SQL numeric literal for the column's class
 * (a float4 column's constants are doubles: numcmp.h). */
static bool
compile_number(struct term *t, int j, const struct hp_value *v, const char *column, char *err,
               size_t errlen)
{
	enum numcmp_class cls = t->numclass == NUMCMP_FLOAT4 ? NUMCMP_FLOAT8 : t->numclass;
	const char *why;

	t->text[j] = malloc(v->len + 1);
	if (t->text[j] == NULL) {
		log_seterr(err, errlen, "out of memory");
		return false;
	}
	if (!numcmp_parse(v->text, v->len, cls, t->text[j], &t->num[j], &why)) {
		log_seterr(err, errlen, "%.64s is a number column: \"%.40s\" is %s", column,
		           v->text, why);
		return false;
	}
	return true;
}

struct filter *
filter_compile(const struct hp_request *req, const struct filter_cols *cols, char *err,
               size_t errlen)
{
	struct filter *f;

	if (err != NULL && errlen > 0)
		err[0] = '\0';
	if (req->n_filters == 0)
		return NULL;
	f = calloc(1, sizeof(*f));
	if (f == NULL || (f->terms = calloc((size_t)req->n_filters, sizeof(*f->terms))) == NULL) {
		free(f);
		log_seterr(err, errlen, "out of memory");
		return NULL;
	}
	for (int i = 0; i < req->n_filters; i++) {
		const struct hp_filter *hf = &req->filters[i];
		struct term *t = &f->terms[i];
		int col = -1;

		f->n = i + 1;
		for (int c = 0; c < cols->n; c++)
			if (strcmp(cols->names[c], hf->column) == 0) {
				col = c;
				break;
			}
		if (col < 0) {
			log_seterr(err, errlen, "unknown parameter or column \"%.64s\"",
			           hf->column);
			goto failed;
		}
		t->col = col;
		t->kind = cols->kinds[col];
		t->numclass = cols->numclass[col];
		t->op = hf->op;
		t->n = hf->n_values;
		size_t nv = (size_t)(hf->n_values > 0 ? hf->n_values : 1);
		t->is_null = calloc(nv, sizeof(*t->is_null));
		t->num = calloc(nv, sizeof(*t->num));
		t->boolean = calloc(nv, sizeof(*t->boolean));
		t->text = calloc(nv, sizeof(*t->text));
		t->len = calloc(nv, sizeof(*t->len));
		if (!t->is_null || !t->num || !t->boolean || !t->text || !t->len) {
			log_seterr(err, errlen, "out of memory");
			goto failed;
		}
		for (int j = 0; j < hf->n_values; j++) {
			const struct hp_value *v = &hf->values[j];

			if (v->is_null) {
				t->is_null[j] = true;
				if (hf->op != HP_EQ && hf->op != HP_NEQ && hf->op != HP_IN) {
					log_seterr(err, errlen,
					           "%.64s: null compares only with eq, neq or in",
					           hf->column);
					goto failed;
				}
				continue;
			}
			switch (t->kind) {
			case COLTYPE_NUMBER:
				if (!compile_number(t, j, v, hf->column, err, errlen))
					goto failed;
				break;
			case COLTYPE_BOOL:
				if ((t->boolean[j] = parse_bool(v->text, v->len)) < 0) {
					log_seterr(err, errlen,
					           "%.64s is a boolean column: use true, false "
					           "(or yes, no, on, off, 1, 0) or null",
					           hf->column);
					goto failed;
				}
				break;
			case COLTYPE_JSON:
				log_seterr(
				        err, errlen,
				        "%.64s is a json column: only eq.null and neq.null apply",
				        hf->column);
				goto failed;
			case COLTYPE_STRING:
			default:
				t->text[j] = malloc(v->len + 1);
				if (t->text[j] == NULL) {
					log_seterr(err, errlen, "out of memory");
					goto failed;
				}
				memcpy(t->text[j], v->text, v->len + 1);
				t->len[j] = v->len;
				break;
			}
		}
	}
	return f;
failed:
	filter_free(f);
	return NULL;
}

/* Skip a JSON string starting at s[i] == '"'; returns the index after the
 * closing quote, or n when unterminated. */
static size_t
skip_string(const char *s, size_t i, size_t n)
{
	for (i++; i < n; i++) {
		if (s[i] == '\\')
			i++;
		else if (s[i] == '"')
			return i + 1;
	}
	return n;
}

bool
json_array_nth(const char *row, size_t len, int k, const char **elem, size_t *elen)
{
	size_t i = 0, start;
	int idx = 0;

	while (i < len && (row[i] == ' ' || row[i] == '\t' || row[i] == '\n' || row[i] == '\r'))
		i++;
	if (i >= len || row[i] != '[')
		return false;
	i++;
	for (;;) {
		int depth = 0;

		while (i < len &&
		       (row[i] == ' ' || row[i] == '\t' || row[i] == '\n' || row[i] == '\r'))
			i++;
		if (i >= len || row[i] == ']')
			return false;
		start = i;
		/* One element: up to a ',' or ']' at depth 0. */
		while (i < len) {
			char c = row[i];
			if (c == '"') {
				i = skip_string(row, i, len);
				continue;
			}
			if (c == '[' || c == '{')
				depth++;
			else if (c == ']' || c == '}') {
				if (depth == 0)
					break;
				depth--;
			} else if (c == ',' && depth == 0)
				break;
			i++;
		}
		if (i >= len)
			return false;
		if (idx == k) {
			size_t e = i;
			while (e > start && (row[e - 1] == ' ' || row[e - 1] == '\t' ||
			                     row[e - 1] == '\n' || row[e - 1] == '\r'))
				e--;
			if (e == start)
				return false;
			*elem = row + start;
			*elen = e - start;
			return true;
		}
		if (row[i] == ']')
			return false;
		i++; /* the comma */
		idx++;
	}
}

static size_t
put_utf8(char *o, uint32_t cp)
{
	if (cp < 0x80) {
		o[0] = (char)cp;
		return 1;
	}
	if (cp < 0x800) {
		o[0] = (char)(0xC0 | (cp >> 6));
		o[1] = (char)(0x80 | (cp & 0x3F));
		return 2;
	}
	if (cp < 0x10000) {
		o[0] = (char)(0xE0 | (cp >> 12));
		o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
		o[2] = (char)(0x80 | (cp & 0x3F));
		return 3;
	}
	o[0] = (char)(0xF0 | (cp >> 18));
	o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
	o[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
	o[3] = (char)(0x80 | (cp & 0x3F));
	return 4;
}

static bool
read_hex4(const char *s, size_t n, size_t i, uint32_t *v)
{
	*v = 0;
	if (i + 4 > n)
		return false;
	for (size_t k = 0; k < 4; k++) {
		int h = hex_value((unsigned char)s[i + k]);
		if (h < 0)
			return false;
		*v = *v * 16 + (uint32_t)h;
	}
	return true;
}

/* Decode the JSON string s[0..n) (quotes included) into out, which has
 * room for n bytes (decoding never grows).  false when malformed. */
static bool
decode_string(const char *s, size_t n, char *out, size_t *outlen)
{
	size_t j = 0;

	if (n < 2 || s[0] != '"' || s[n - 1] != '"')
		return false;
	for (size_t i = 1; i < n - 1; i++) {
		char c = s[i];
		if (c != '\\') {
			out[j++] = c;
			continue;
		}
		if (++i >= n - 1)
			return false;
		switch (s[i]) {
		case '"':
			out[j++] = '"';
			break;
		case '\\':
			out[j++] = '\\';
			break;
		case '/':
			out[j++] = '/';
			break;
		case 'b':
			out[j++] = '\b';
			break;
		case 'f':
			out[j++] = '\f';
			break;
		case 'n':
			out[j++] = '\n';
			break;
		case 'r':
			out[j++] = '\r';
			break;
		case 't':
			out[j++] = '\t';
			break;
		case 'u': {
			uint32_t cp, lo;
			if (!read_hex4(s, n - 1, i + 1, &cp))
				return false;
			i += 4;
			if (cp >= 0xD800 && cp <= 0xDBFF && i + 6 < n - 1 && s[i + 1] == '\\' &&
			    s[i + 2] == 'u' && read_hex4(s, n - 1, i + 3, &lo) && lo >= 0xDC00 &&
			    lo <= 0xDFFF) {
				cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
				i += 6;
			}
			j += put_utf8(out + j, cp); /* \uXXXX is 6 bytes, UTF-8 at most 4 */
			break;
		}
		default:
			return false;
		}
	}
	*outlen = j;
	return true;
}

static int
cmp_bytes(const char *a, size_t al, const char *b, size_t bl)
{
	int c = memcmp(a, b, al < bl ? al : bl);
	if (c != 0)
		return c;
	return al < bl ? -1 : al > bl;
}

static bool
op_result(enum hp_op op, int cmp)
{
	switch (op) {
	case HP_EQ:
	case HP_IN:
		return cmp == 0;
	case HP_NEQ:
		return cmp != 0;
	case HP_GT:
		return cmp > 0;
	case HP_GTE:
		return cmp >= 0;
	case HP_LT:
		return cmp < 0;
	case HP_LTE:
		return cmp <= 0;
	}
	return false;
}

/* A row's number: the database's text as a JSON number, or the strings
 * NaN, Infinity and -Infinity that JSON cannot hold as numbers.  buf holds
 * vl bytes. */
static bool
number_value(enum numcmp_class cls, const char *v, size_t vl, char *buf, struct numcmp *out)
{
	const char *why;
	size_t n;

	if (v[0] != '"')
		return numcmp_parse(v, vl, cls, buf, out, &why);
	if (!decode_string(v, vl, buf, &n))
		return false;
	/* Only the names of the special values: numcmp_parse keeps the
	 * digits of a decimal in buf, which holds the name. */
	return (n == 3 && memcmp(buf, "NaN", 3) == 0 &&
	        numcmp_parse("NaN", 3, cls, buf, out, &why)) ||
	       (n == 8 && memcmp(buf, "Infinity", 8) == 0 &&
	        numcmp_parse("Infinity", 8, cls, buf, out, &why)) ||
	       (n == 9 && memcmp(buf, "-Infinity", 9) == 0 &&
	        numcmp_parse("-Infinity", 9, cls, buf, out, &why));
}

static bool
term_match(const struct term *t, const char *v, size_t vl)
{
	bool is_null = vl == 4 && memcmp(v, "null", 4) == 0;
	char small[256], *dec = NULL;
	size_t declen = 0;
	struct numcmp num;
	int boolean = 0;
	bool have = false, result = false;

	if (is_null) {
		for (int j = 0; j < t->n; j++)
			if (t->is_null[j])
				return t->op == HP_EQ || t->op == HP_IN;
		return false;
	}
	/* A non-null value against the value(s). */
	switch (t->kind) {
	case COLTYPE_NUMBER:
		dec = vl <= sizeof(small) ? small : malloc(vl);
		if (dec != NULL)
			have = number_value(t->numclass, v, vl, dec, &num);
		break;
	case COLTYPE_BOOL:
		if (vl == 4 && memcmp(v, "true", 4) == 0) {
			boolean = 1;
			have = true;
		} else if (vl == 5 && memcmp(v, "false", 5) == 0) {
			have = true;
		}
		break;
	case COLTYPE_STRING:
		if (v[0] != '"')
			break;
		dec = vl <= sizeof(small) ? small : malloc(vl);
		if (dec != NULL)
			have = decode_string(v, vl, dec, &declen);
		break;
	default:
		break;
	}
	if (t->op == HP_IN) {
		for (int j = 0; j < t->n && have && !result; j++) {
			if (t->is_null[j])
				continue;
			if (t->kind == COLTYPE_NUMBER)
				result = numcmp_compare(&num, &t->num[j]) == 0;
			else if (t->kind == COLTYPE_BOOL)
				result = boolean == t->boolean[j];
			else
				result = cmp_bytes(dec, declen, t->text[j], t->len[j]) == 0;
		}
	} else if (t->is_null[0]) {
		result = t->op == HP_NEQ; /* x <> NULL is "is not null" here */
	} else if (have) {
		int cmp;
		if (t->kind == COLTYPE_NUMBER)
			cmp = numcmp_compare(&num, &t->num[0]);
		else if (t->kind == COLTYPE_BOOL)
			cmp = boolean - t->boolean[0];
		else
			cmp = cmp_bytes(dec, declen, t->text[0], t->len[0]);
		result = op_result(t->op, cmp);
	}
	if (dec != small)
		free(dec);
	return result;
}

bool
filter_match(const struct filter *f, const char *row, size_t len)
{
	if (f == NULL)
		return true;
	for (int i = 0; i < f->n; i++) {
		const char *v;
		size_t vl;
		if (!json_array_nth(row, len, f->terms[i].col, &v, &vl))
			return false;
		if (!term_match(&f->terms[i], v, vl))
			return false;
	}
	return true;
}
