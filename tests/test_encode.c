/*
 * test_encode.c - the hand JSON encoder against json-c.
 *
 *  - strings: for every byte value, every escape and many random valid
 *    UTF-8 strings, encode_string() is byte-identical to json-c's
 *    json_object_to_json_string_ext(NOSLASHESCAPE), and json-c parses it
 *    back to the input;
 *  - invalid UTF-8 becomes U+FFFD per maximal subpart (Unicode 15 table
 *    3-8 and more), and the result is valid UTF-8 json-c parses;
 *  - numbers: the JSON grammar table, and every number accepted parses
 *    with json-c; PostgreSQL's NaN/Infinity become strings;
 *  - bools, json/jsonb (the strict validator: a table, and random
 *    documents and mutations that json-c must parse whenever we accept
 *    them), NULL;
 *  - whole rows parse with json-c into arrays of the right types.
 */
#include "encode.h"

#include "tap.h"

#include <json-c/json.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static struct bbuf out;

static const char *
enc_str(const char *s, size_t len, int *flags)
{
	out.len = 0;
	int f = encode_string(&out, s, len);
	if (flags)
		*flags = f;
	bbuf_add(&out, "", 1);
	return out.p;
}

static const char *
enc_val(enum coltype_kind k, const char *s, int *flags)
{
	out.len = 0;
	int f = encode_value(&out, k, s, s ? strlen(s) : 0);
	if (flags)
		*flags = f;
	bbuf_add(&out, "", 1);
	return out.p;
}

/* json-c's own encoding of a string. */
static char *
jsonc_str(const char *s, size_t len)
{
	struct json_object *o = json_object_new_string_len(s, (int)len);
	char *r = strdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_NOSLASHESCAPE));
	json_object_put(o);
	return r;
}

/* Parse text with json-c; the string value (or NULL) in *val. */
static bool
jsonc_roundtrip(const char *text, const char *want, size_t wantlen)
{
	struct json_tokener *tok = json_tokener_new();
	struct json_object *o;
	bool good;

	json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
	o = json_tokener_parse_ex(tok, text, (int)strlen(text));
	good = o != NULL && json_object_is_type(o, json_type_string) &&
	       (size_t)json_object_get_string_len(o) == wantlen &&
	       memcmp(json_object_get_string(o), want, wantlen) == 0;
	json_object_put(o);
	json_tokener_free(tok);
	return good;
}

static uint64_t rng = 0x853c49e6748fea9bull;

static uint32_t
rnd(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return (uint32_t)rng;
}

/* Append one random valid UTF-8 code point, biased to the interesting. */
static size_t
rand_cp(char *o)
{
	uint32_t cp, pick = rnd() % 10;

	if (pick < 3)
		cp = rnd() % 0x20; /* controls */
	else if (pick < 5)
		cp = "\"\\/ aZ\x7f"[rnd() % 7];
	else if (pick < 7)
		cp = 0x80 + rnd() % 0x780;
	else if (pick < 9)
		cp = 0x800 + rnd() % 0xf800;
	else
		cp = 0x10000 + rnd() % 0x100000;
	if (cp >= 0xd800 && cp <= 0xdfff)
		cp = 0xfffd;
	if (cp < 0x80) {
		o[0] = (char)cp;
		return 1;
	}
	if (cp < 0x800) {
		o[0] = (char)(0xc0 | (cp >> 6));
		o[1] = (char)(0x80 | (cp & 0x3f));
		return 2;
	}
	if (cp < 0x10000) {
		o[0] = (char)(0xe0 | (cp >> 12));
		o[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
		o[2] = (char)(0x80 | (cp & 0x3f));
		return 3;
	}
	o[0] = (char)(0xf0 | (cp >> 18));
	o[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
	o[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
	o[3] = (char)(0x80 | (cp & 0x3f));
	return 4;
}

static void
test_strings(void)
{
	int flags;
	size_t mism = 0, bad_rt = 0;
	char s[512];

	/* Every ASCII byte alone and inside text (NUL excluded: json-c's
	 * new_string_len keeps it, and so do we; checked separately). */
	for (int c = 1; c < 128; c++) {
		char one[4] = {'a', (char)c, 'b', 0};
		char *j = jsonc_str(one, 3);
		if (strcmp(enc_str(one, 3, NULL), j) != 0)
			mism++;
		if (!jsonc_roundtrip(out.p, one, 3))
			bad_rt++;
		free(j);
	}
	ok(mism == 0, "every ASCII byte: same bytes as json-c (%zu differ)", mism);
	ok(bad_rt == 0, "every ASCII byte: json-c parses it back (%zu fail)", bad_rt);

	is_str(enc_str("\0", 1, NULL), "\"\\u0000\"", "NUL is \\u0000");
	is_str(enc_str("a\"b\\c/d", 7, NULL), "\"a\\\"b\\\\c/d\"", "quote, backslash; / unescaped");
	is_str(enc_str("\b\f\n\r\t\x0b\x1f\x7f", 8, NULL), "\"\\b\\f\\n\\r\\t\\u000b\\u001f\x7f\"",
	       "short escapes, \\u00XX lowercase, DEL raw");
	is_str(enc_str("", 0, NULL), "\"\"", "empty string");

	/* Random valid UTF-8 strings. */
	mism = bad_rt = 0;
	for (int i = 0; i < 20000; i++) {
		size_t len = 0, want = rnd() % 40;
		while (len < want && len + 4 < sizeof(s))
			len += rand_cp(s + len);
		char *j = jsonc_str(s, len);
		enc_str(s, len, &flags);
		if (strcmp(out.p, j) != 0 || flags != 0)
			mism++;
		if (!jsonc_roundtrip(out.p, s, len))
			bad_rt++;
		free(j);
	}
	ok(mism == 0, "20000 random UTF-8 strings: same bytes as json-c (%zu differ)", mism);
	ok(bad_rt == 0, "20000 random UTF-8 strings: json-c parses them back (%zu fail)", bad_rt);
}

static void
test_invalid_utf8(void)
{
	static const struct {
		const char *in;
		const char *want;
		const char *what;
	} cases[] = {
	        {"\x80", "\"\xef\xbf\xbd\"", "lone continuation byte"},
	        {"a\xff"
	         "b",
	         "\"a\xef\xbf\xbd"
	         "b\"",
	         "0xff"},
	        {"\xc0\xaf", "\"\xef\xbf\xbd\xef\xbf\xbd\"", "overlong 2-byte: two replacements"},
	        {"\xe0\x80\xaf", "\"\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\"", "overlong 3-byte"},
	        {"\xed\xa0\x80", "\"\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\"", "surrogate D800"},
	        {"\xf4\x90\x80\x80", "\"\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\"",
	         "above U+10FFFF"},
	        {"\xe2\x82", "\"\xef\xbf\xbd\"", "truncated 3-byte: one replacement"},
	        {"\xe2\x82x", "\"\xef\xbf\xbdx\"", "truncated 3-byte before ASCII"},
	        {"\xf0\x9f\x98", "\"\xef\xbf\xbd\"", "truncated 4-byte"},
	        /* Unicode 15, table 3-8: 61 F1 80 80 E1 80 C2 62 80 63 80 BF 64 */
	        {"\x61\xf1\x80\x80\xe1\x80\xc2\x62\x80\x63\x80\xbf\x64",
	         "\"a\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"
	         "b\xef\xbf\xbd"
	         "c\xef\xbf\xbd\xef\xbf\xbd"
	         "d\"",
	         "Unicode table 3-8"},
	};
	int flags;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		enc_str(cases[i].in, strlen(cases[i].in), &flags);
		is_str(out.p, cases[i].want, "invalid UTF-8: %s", cases[i].what);
		ok(flags == ENCODE_REPLACED, "  flagged ENCODE_REPLACED");
	}
	ok(!encode_utf8_valid("\xc3", 1) && encode_utf8_valid("\xc3\xa9", 2) &&
	           encode_utf8_valid("\xf4\x8f\xbf\xbf", 4) &&
	           !encode_utf8_valid("\xf5\x80\x80\x80", 4),
	   "encode_utf8_valid edges");

	/* Random bytes: the output is always valid UTF-8 JSON. */
	size_t bad = 0;
	for (int i = 0; i < 20000; i++) {
		char s[64];
		size_t len = rnd() % sizeof(s);
		for (size_t k = 0; k < len; k++)
			s[k] = (char)(rnd() | 1); /* no NUL: strlen in the parse */
		enc_str(s, len, NULL);
		struct json_tokener *tok = json_tokener_new();
		json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
		struct json_object *o = json_tokener_parse_ex(tok, out.p, (int)strlen(out.p));
		if (o == NULL || !json_object_is_type(o, json_type_string))
			bad++;
		json_object_put(o);
		json_tokener_free(tok);
	}
	ok(bad == 0, "20000 random byte strings encode to valid JSON (%zu bad)", bad);
}

static void
test_numbers(void)
{
	static const struct {
		const char *s;
		bool json;
	} nums[] = {
	        {"0", true},
	        {"-0", true},
	        {"42", true},
	        {"-9223372036854775808", true},
	        {"1.5", true},
	        {"1.5e+20", true},
	        {"1E-7", true},
	        {"3.4028235e+38", true},
	        {"123456789012345678901234567890.123456789012345678901234567890", true},
	        {"0.000000000000000000000000000001", true},
	        {"1e308", true},
	        {"", false},
	        {"-", false},
	        {"01", false},
	        {"+1", false},
	        {".5", false},
	        {"1.", false},
	        {"1e", false},
	        {"1e+", false},
	        {"0x10", false},
	        {"NaN", false},
	        {"Infinity", false},
	        {"-Infinity", false},
	        {"1 ", false},
	        {" 1", false},
	        {"1.5.5", false},
	        {"--1", false},
	        {"1e5e5", false},
	};
	size_t bad = 0;

	for (size_t i = 0; i < sizeof(nums) / sizeof(nums[0]); i++) {
		bool got = encode_is_json_number(nums[i].s, strlen(nums[i].s));
		ok(got == nums[i].json, "number grammar: \"%s\" is %sa JSON number", nums[i].s,
		   nums[i].json ? "" : "not ");
		if (got) {
			struct json_object *o = json_tokener_parse(nums[i].s);
			if (o == NULL || !(json_object_is_type(o, json_type_int) ||
			                   json_object_is_type(o, json_type_double)))
				bad++;
			json_object_put(o);
		}
	}
	ok(bad == 0, "every accepted number parses with json-c");

	int flags;
	is_str(enc_val(COLTYPE_NUMBER, "1.50", &flags), "1.50", "numeric keeps its own text");
	ok(flags == 0, "  no flags");
	is_str(enc_val(COLTYPE_NUMBER, "NaN", &flags), "\"NaN\"", "NaN is a string");
	ok(flags == 0, "  expected, so not flagged");
	is_str(enc_val(COLTYPE_NUMBER, "-Infinity", NULL), "\"-Infinity\"",
	       "-Infinity is a string");
	is_str(enc_val(COLTYPE_NUMBER, "12abc", &flags), "\"12abc\"", "garbage is a string");
	ok(flags == ENCODE_AS_STRING, "  flagged ENCODE_AS_STRING");
}

static void
test_kinds(void)
{
	int flags;

	is_str(enc_val(COLTYPE_BOOL, "t", NULL), "true", "bool t");
	is_str(enc_val(COLTYPE_BOOL, "f", NULL), "false", "bool f");
	is_str(enc_val(COLTYPE_BOOL, "true", NULL), "true", "bool true");
	is_str(enc_val(COLTYPE_BOOL, "maybe", &flags), "\"maybe\"", "bool garbage is a string");
	ok(flags == ENCODE_AS_STRING, "  flagged");
	for (int k = COLTYPE_STRING; k <= COLTYPE_JSON; k++)
		is_str(enc_val((enum coltype_kind)k, NULL, NULL), "null", "NULL of kind %d is null",
		       k);
	is_str(enc_val(COLTYPE_STRING, "42", NULL), "\"42\"", "text 42 is a string");

	is_str(enc_val(COLTYPE_JSON, "{\"a\": [1, 2.50, null]}", NULL), "{\"a\": [1, 2.50, null]}",
	       "json object embedded with its own number text");
	is_str(enc_val(COLTYPE_JSON, "  {\"a\":\n\t1}\r\n", NULL), "{\"a\":  1}",
	       "json: outer whitespace trimmed, inner newline/tab become spaces");
	is_str(enc_val(COLTYPE_JSON, "\"line\\nbreak\"", NULL), "\"line\\nbreak\"",
	       "json string embedded");
	is_str(enc_val(COLTYPE_JSON, "123", NULL), "123", "json bare number");
	is_str(enc_val(COLTYPE_JSON, "null", NULL), "null", "json null literal");
	is_str(enc_val(COLTYPE_JSON, "[]", NULL), "[]", "json empty array");
	is_str(enc_val(COLTYPE_JSON, "{\"a\":1} x", &flags), "\"{\\\"a\\\":1} x\"",
	       "json with trailing garbage becomes a string");
	ok(flags == ENCODE_AS_STRING, "  flagged");
	is_str(enc_val(COLTYPE_JSON, "{'a':1}", NULL), "\"{'a':1}\"",
	       "json-c's lenient single quotes are refused (strict)");
	is_str(enc_val(COLTYPE_JSON, "[1,]", NULL), "\"[1,]\"", "trailing comma refused");
	is_str(enc_val(COLTYPE_JSON, "\"raw\ttab\"", NULL), "\"\\\"raw\\ttab\\\"\"",
	       "raw control character in a JSON string refused");
	is_str(enc_val(COLTYPE_JSON, "NaN", NULL), "\"NaN\"", "NaN is not JSON");
	is_str(enc_val(COLTYPE_JSON, "", NULL), "\"\"", "empty json text is a string");

	/* Deep nesting within the limit. */
	{
		char deep[2100];
		for (int i = 0; i < 1000; i++) {
			deep[i] = '[';
			deep[1000 + i] = ']';
		}
		deep[2000] = '\0';
		ok(encode_is_json(deep, 2000), "1000 levels of nesting are JSON");
	}
}

/* A random JSON document (valid by construction). */
static void
gen_json(struct bbuf *b, int depth)
{
	char tmp[64];
	uint32_t pick = rnd() % (depth > 6 ? 6 : 9);

	switch (pick) {
	case 0:
		bbuf_adds(b, "null");
		break;
	case 1:
		bbuf_adds(b, rnd() % 2 ? "true" : "false");
		break;
	case 2:
		snprintf(tmp, sizeof(tmp), "%s%u%s%s", rnd() % 2 ? "-" : "", rnd() % 100000,
		         rnd() % 2 ? ".25" : "", rnd() % 3 == 0 ? "e-3" : "");
		bbuf_adds(b, tmp);
		break;
	case 3:
	case 4:
	case 5: {
		char s[32];
		size_t len = 0, want = rnd() % 8;
		while (len < want)
			len += rand_cp(s + len);
		(void)encode_string(b, s, len);
		break;
	}
	case 6:
	case 7: {
		int n = (int)(rnd() % 4);
		bbuf_adds(b, "[");
		for (int i = 0; i < n; i++) {
			if (i)
				bbuf_adds(b, rnd() % 2 ? "," : " , ");
			gen_json(b, depth + 1);
		}
		bbuf_adds(b, "]");
		break;
	}
	default: {
		int n = (int)(rnd() % 4);
		bbuf_adds(b, "{");
		for (int i = 0; i < n; i++) {
			if (i)
				bbuf_adds(b, ",");
			snprintf(tmp, sizeof(tmp), "\"k%d\"%s", i, rnd() % 2 ? ":" : " : ");
			bbuf_adds(b, tmp);
			gen_json(b, depth + 1);
		}
		bbuf_adds(b, "}");
		break;
	}
	}
}

static bool
jsonc_parses(const char *s, size_t len)
{
	struct json_tokener *tok = json_tokener_new_ex(2000);
	struct json_object *o = json_tokener_parse_ex(tok, s, (int)len);
	bool good;

	if (o == NULL && json_tokener_get_error(tok) == json_tokener_continue)
		o = json_tokener_parse_ex(tok, "", 1);
	good = o != NULL || (json_tokener_get_error(tok) == json_tokener_success);
	good = good && (json_tokener_get_parse_end(tok) >= len ||
	                json_tokener_get_error(tok) == json_tokener_success);
	json_object_put(o);
	json_tokener_free(tok);
	return good;
}

static void
test_json_validator(void)
{
	static const char *const valid[] = {
	        "0",
	        "-1.5e+3",
	        "\"\"",
	        "\"\\u00e9\\n\"",
	        "true",
	        "false",
	        "null",
	        "[]",
	        "{}",
	        "[1,[2,[3]]]",
	        "{\"a\":{\"b\":[]}}",
	        " [ 1 , 2 ] ",
	        "{\"\":0}",
	        "[\"\\\"\\\\\\/\\b\\f\\n\\r\\t\"]",
	};
	static const char *const invalid[] = {
	        "",           "[",         "]",
	        "[1,]",       "[,1]",      "{,}",
	        "{\"a\"}",    "{\"a\":}",  "{a:1}",
	        "{'a':1}",    "'a'",       "NaN",
	        "Infinity",   "-Infinity", "nul",
	        "tru",        "[1 2]",     "{\"a\":1 \"b\":2}",
	        "01",         "+1",        ".5",
	        "1.",         "\"\\x41\"", "\"\\u12\"",
	        "\"a\tb\"",   "\"a",       "[]]",
	        "{}{}",       "1 2",       "[1]x",
	        "{\"a\":1,}", "\"\\\"",    "[true false]",
	        "/* c */1",   "0x1F",
	};
	size_t disagree = 0, accepted = 0;
	struct bbuf b = {0};

	for (size_t i = 0; i < sizeof(valid) / sizeof(valid[0]); i++)
		ok(encode_is_json(valid[i], strlen(valid[i])) &&
		           jsonc_parses(valid[i], strlen(valid[i])),
		   "valid JSON (and json-c agrees): %s", valid[i]);
	for (size_t i = 0; i < sizeof(invalid) / sizeof(invalid[0]); i++)
		ok(!encode_is_json(invalid[i], strlen(invalid[i])), "not JSON: %s", invalid[i]);

	/* Random documents are accepted and json-c parses them; random
	 * one-byte mutations that we accept json-c parses too (we are the
	 * stricter of the two). */
	for (int i = 0; i < 20000; i++) {
		b.len = 0;
		gen_json(&b, 0);
		if (!encode_is_json(b.p, b.len) || !jsonc_parses(b.p, b.len))
			disagree++;
		size_t at = b.len ? rnd() % b.len : 0;
		{
			static const char muts[] = "[]{}\",:0a-. \t\\ex";
			if (b.len)
				b.p[at] = muts[rnd() % (sizeof(muts) - 1)];
		}
		if (encode_is_json(b.p, b.len)) {
			accepted++;
			if (!jsonc_parses(b.p, b.len))
				disagree++;
		}
	}
	ok(disagree == 0,
	   "20000 random documents and mutations: nothing we accept is refused by "
	   "json-c (%zu disagree; %zu mutations still valid)",
	   disagree, accepted);
	bbuf_free(&b);
}

static void
test_rows(void)
{
	enum coltype_kind kinds[] = {COLTYPE_NUMBER, COLTYPE_STRING, COLTYPE_BOOL,
	                             COLTYPE_JSON,   COLTYPE_NUMBER, COLTYPE_STRING};
	const char *vals[] = {"-7", "tab\there \"q\"", "t", "{\"k\":[1,2]}", "NaN", NULL};
	size_t lens[6];
	struct json_object *o;

	for (int i = 0; i < 6; i++)
		lens[i] = vals[i] ? strlen(vals[i]) : 0;
	out.len = 0;
	ok(encode_row(&out, kinds, 6, vals, lens) == 0, "row encodes without flags");
	bbuf_add(&out, "", 1);
	is_str(out.p, "[-7,\"tab\\there \\\"q\\\"\",true,{\"k\":[1,2]},\"NaN\",null]", "row bytes");
	o = json_tokener_parse(out.p);
	ok(o != NULL && json_object_is_type(o, json_type_array) &&
	           json_object_array_length(o) == 6 &&
	           json_object_is_type(json_object_array_get_idx(o, 0), json_type_int) &&
	           json_object_is_type(json_object_array_get_idx(o, 2), json_type_boolean) &&
	           json_object_is_type(json_object_array_get_idx(o, 3), json_type_object) &&
	           json_object_is_type(json_object_array_get_idx(o, 5), json_type_null),
	   "json-c reads the row as an array of the right types");
	json_object_put(o);

	out.len = 0;
	encode_row(&out, kinds, 0, vals, lens);
	bbuf_add(&out, "", 1);
	is_str(out.p, "[]", "zero columns: []");
}

int
main(void)
{
	test_strings();
	test_invalid_utf8();
	test_numbers();
	test_kinds();
	test_json_validator();
	test_rows();
	bbuf_free(&out);
	return tap_done();
}
