/*
 * test_filter.c - row filters: the array scanner and every operator on
 * every column kind, data-driven.
 */
#include "filter.h"

#include "tap.h"

#include <stdlib.h>
#include <string.h>

static const char *columns =
        "[{\"name\":\"id\",\"type\":\"int8\"},{\"name\":\"item\",\"type\":\"text\"},"
        "{\"name\":\"amount\",\"type\":\"numeric\"},{\"name\":\"open\",\"type\":\"bool\"},"
        "{\"name\":\"meta\",\"type\":\"jsonb\"},{\"name\":\"price\",\"type\":\"float8\"},"
        "{\"name\":\"real\",\"type\":\"float4\"}]";

struct row_case {
	const char *query;
	const char *row;
	bool match;
};

static const struct row_case cases[] = {
        {"id=eq.42", "[42,\"a\",1,true,null,1.5]", true},
        {"id=eq.42", "[43,\"a\",1,true,null,1.5]", false},
        {"id=eq.42", "[42.0,\"a\",1,true,null,1.5]", true},
        {"id=neq.42", "[43,\"a\",1,true,null,1.5]", true},
        {"id=gt.9", "[10,\"a\",1,true,null,1.5]", true}, /* numeric, not text order */
        {"id=lt.9", "[10,\"a\",1,true,null,1.5]", false},
        {"id=gte.10", "[10,\"a\",1,true,null,1.5]", true},
        {"id=lte.10", "[10,\"a\",1,true,null,1.5]", true},
        {"id=eq.9007199254740993", "[9007199254740993,\"a\",1,true,null,1.5]", true},
        {"id=eq.9007199254740993", "[9007199254740992,\"a\",1,true,null,1.5]", false},
        {"id=gt.-5", "[-4,\"a\",1,true,null,1.5]", true},
        {"price=lt.1e1", "[1,\"a\",1,true,null,9.99]", true},
        {"amount=gt.100", "[1,\"a\",100.5,true,null,1]", true},
        /* NaN is above every number and equals itself; Infinity above every
         * finite value; -0 = 0; decimals compared exactly (as PostgreSQL). */
        {"amount=gt.100", "[1,\"a\",\"NaN\",true,null,1]", true},
        {"amount=neq.100", "[1,\"a\",\"NaN\",true,null,1]", true},
        {"amount=eq.NaN", "[1,\"a\",\"NaN\",true,null,1]", true},
        {"amount=lt.NaN", "[1,\"a\",\"Infinity\",true,null,1]", true},
        {"amount=gte.0", "[1,\"a\",\"Infinity\",true,null,1]", true},
        {"amount=eq.Infinity", "[1,\"a\",\"Infinity\",true,null,1]", true},
        {"amount=lt.-Infinity", "[1,\"a\",\"-Infinity\",true,null,1]", false},
        {"amount=lte.-Infinity", "[1,\"a\",\"-Infinity\",true,null,1]", true},
        {"amount=gt.-Infinity", "[1,\"a\",-1e300,true,null,1]", true},
        {"amount=eq.-0", "[1,\"a\",0,true,null,1]", true},
        {"amount=eq.0.10", "[1,\"a\",0.1,true,null,1]", true},
        {"amount=eq.1e2", "[1,\"a\",100.000,true,null,1]", true},
        {"amount=gt.123456789012345678901234567890123456788",
         "[1,\"a\",123456789012345678901234567890123456789,true,null,1]", true},
        {"amount=eq.123456789012345678901234567890123456788",
         "[1,\"a\",123456789012345678901234567890123456789,true,null,1]", false},
        {"amount=lt.-0.000000000000000000000000000000000000001",
         "[1,\"a\",-0.000000000000000000000000000000000000002,true,null,1]", true},
        {"id=lt.9223372036854775807", "[9223372036854775806,\"a\",1,true,null,1]", true},
        {"id=eq.9223372036854775807", "[9223372036854775806,\"a\",1,true,null,1]", false},
        {"price=eq.-0", "[1,\"a\",1,true,null,-0]", true},
        {"price=eq.NaN", "[1,\"a\",1,true,null,\"NaN\"]", true},
        {"price=eq.0.30000000000000004", "[1,\"a\",1,true,null,0.30000000000000004]", true},
        {"price=eq.0.3", "[1,\"a\",1,true,null,0.30000000000000004]", false},
        {"real=eq.0.1", "[1,\"a\",1,true,null,1,0.1]", false}, /* 0.1::float4 <> 0.1 */
        {"real=gt.0.1", "[1,\"a\",1,true,null,1,0.1]", true},
        {"real=eq.0.100000001490116119384765625", "[1,\"a\",1,true,null,1,0.1]", true},
        {"id=in.(1,2,3)", "[2,\"a\",1,true,null,1]", true},
        {"id=in.(1,2,3)", "[4,\"a\",1,true,null,1]", false},
        {"id=in.()", "[4,\"a\",1,true,null,1]", false},
        {"item=eq.Epidosis", "[1,\"Epidosis\",1,true,null,1]", true},
        {"item=eq.Epi", "[1,\"Epidosis\",1,true,null,1]", false},
        {"item=gt.B", "[1,\"C\",1,true,null,1]", true},
        {"item=lt.B", "[1,\"A\",1,true,null,1]", true},
        {"item=eq.a%22b", "[1,\"a\\\"b\",1,true,null,1]", true},
        {"item=eq.caf%C3%A9", "[1,\"caf\\u00e9\",1,true,null,1]", true},
        {"item=eq.%F0%9F%98%80", "[1,\"\\ud83d\\ude00\",1,true,null,1]", true},
        {"item=eq.a,b", "[1,\"a,b\",1,true,null,1]", true},
        {"item=in.(\"a,b\",c)", "[1,\"a,b\",1,true,null,1]", true},
        {"item=in.(\"a,b\",c)", "[1,\"c\",1,true,null,1]", true},
        {"item=in.(\"a,b\",c)", "[1,\"a\",1,true,null,1]", false},
        {"item=eq.null", "[1,null,1,true,null,1]", true},
        {"item=eq.null", "[1,\"null\",1,true,null,1]", false},
        {"item=eq.\"null\"", "[1,\"null\",1,true,null,1]", true},
        {"item=neq.null", "[1,\"x\",1,true,null,1]", true},
        {"item=neq.null", "[1,null,1,true,null,1]", false},
        {"item=neq.x", "[1,null,1,true,null,1]", false}, /* SQL: null <> x is not true */
        {"item=in.(x,null)", "[1,null,1,true,null,1]", true},
        {"open=eq.true", "[1,\"a\",1,true,null,1]", true},
        {"open=eq.true", "[1,\"a\",1,false,null,1]", false},
        {"open=gt.false", "[1,\"a\",1,true,null,1]", true},
        {"meta=eq.null", "[1,\"a\",1,true,null,1]", true},
        {"meta=neq.null", "[1,\"a\",1,true,{\"k\":[1,2,\"],\"]},1]", true},
        {"price=eq.2", "[1,\"a\",1,true,{\"k\":[1,2,\"],\"]},2]", true}, /* after nested json */
        {"id=gt.1&id=lt.5", "[3,\"a\",1,true,null,1]", true},
        {"id=gt.1&id=lt.5", "[5,\"a\",1,true,null,1]", false},
        {"id=eq.1&item=eq.a", "[1,\"a\",1,true,null,1]", true},
        {"id=eq.1&item=eq.b", "[1,\"a\",1,true,null,1]", false},
        {"price=eq.1", "[1,\"a\"]", false}, /* short row */
        {"id=eq.1", "[ 1 , \"a\" ]", true},
        {"item=eq.a", "[ 1 , \"a\" ]", true},
};

static const char *bad_queries[] = {
        "nosuch=eq.1",    "id=eq.abc",     "id=eq.0x10", "id=eq.1e",   "price=eq.1e400",
        "id=eq.1e200000", "open=eq.maybe", "open=eq.o",  "meta=eq.{}", "id=gt.null",
};

int
main(void)
{
	struct filter_cols cols;
	char err[256];

	ok(filter_cols_parse(columns, &cols), "column list parses");
	is_int(cols.n, 7, "seven columns");
	is_int(cols.kinds[0], COLTYPE_NUMBER, "int8 is a number");
	is_int(cols.kinds[1], COLTYPE_STRING, "text is a string");
	is_int(cols.kinds[3], COLTYPE_BOOL, "bool");
	is_int(cols.kinds[4], COLTYPE_JSON, "jsonb");

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct hp_request r;
		struct filter *f;

		if (!hp_parse(cases[i].query, NULL, NULL, 25, &r, err, sizeof(err))) {
			ok(0, "%s parses: %s", cases[i].query, err);
			continue;
		}
		f = filter_compile(&r, &cols, err, sizeof(err));
		if (f == NULL) {
			ok(0, "%s compiles: %s", cases[i].query, err);
			hp_free(&r);
			continue;
		}
		ok(filter_match(f, cases[i].row, strlen(cases[i].row)) == cases[i].match,
		   "%s %s %s", cases[i].query, cases[i].match ? "matches" : "does not match",
		   cases[i].row);
		filter_free(f);
		hp_free(&r);
	}
	for (size_t i = 0; i < sizeof(bad_queries) / sizeof(bad_queries[0]); i++) {
		struct hp_request r;
		struct filter *f;

		if (!hp_parse(bad_queries[i], NULL, NULL, 25, &r, err, sizeof(err))) {
			ok(1, "%s refused by the parser: %s", bad_queries[i], err);
			continue;
		}
		f = filter_compile(&r, &cols, err, sizeof(err));
		ok(f == NULL && err[0] != '\0', "%s refused: %s", bad_queries[i], err);
		filter_free(f);
		hp_free(&r);
	}

	/* The scanner on its own. */
	const char *e;
	size_t el;
	const char *row = "[\"a]\\\"\",[1,[2]],{\"x\":\"}\"},3]";
	ok(json_array_nth(row, strlen(row), 0, &e, &el) && el == 6,
	   "element 0 is a string with ] and \\\"");
	ok(json_array_nth(row, strlen(row), 1, &e, &el) && strncmp(e, "[1,[2]]", el) == 0,
	   "element 1 nested");
	ok(json_array_nth(row, strlen(row), 2, &e, &el) && strncmp(e, "{\"x\":\"}\"}", el) == 0,
	   "element 2 object");
	ok(json_array_nth(row, strlen(row), 3, &e, &el) && el == 1 && *e == '3', "element 3");
	ok(!json_array_nth(row, strlen(row), 4, &e, &el), "no element 4");
	ok(!json_array_nth("[1,2", 4, 1, &e, &el), "unterminated array");
	ok(!json_array_nth("[]", 2, 0, &e, &el), "empty array");
	ok(!json_array_nth("{}", 2, 0, &e, &el), "not an array");
	ok(!json_array_nth("[\"abc", 5, 0, &e, &el), "unterminated string");
	filter_cols_free(&cols);
	return tap_done();
}
