/*
 * test_jdiff.c - structural JSON equality and diffs: numbers by value,
 * key order, arrays, kind changes, path quoting, top-level keys, NULL
 * inputs and recovery from allocation failures.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "jdiff.h"

static json_t *parse(const char *text)
{
	json_error_t err;
	json_t *v = json_loads(text, JSON_DECODE_ANY, &err);
	if (!v)
		fail_msg("bad test JSON %s: %s", text, err.text);
	return v;
}

/* The diff of two JSON texts rendered one entry per line as
 * "path: before => after" with "-" for an absent side (caller frees). */
static char *diff_text(const char *before, const char *after)
{
	json_t *a = before ? parse(before) : NULL, *b = after ? parse(after) : NULL;
	mo_jdiff_entry *e = NULL;
	mo_buf out = MO_BUF_INIT;
	size_t n = 99;

	assert_int_equal(mo_jdiff(a, b, &e, &n), 0);
	assert_int_equal(mo_buf_puts(&out, ""), 0);
	assert_true(n == 0 ? e == NULL : e != NULL);
	for (size_t i = 0; i < n; i++) {
		char *x = e[i].before ? json_dumps(e[i].before, JSON_ENCODE_ANY | JSON_COMPACT) :
					NULL;
		char *y = e[i].after ? json_dumps(e[i].after, JSON_ENCODE_ANY | JSON_COMPACT) :
				       NULL;
		assert_non_null(e[i].path);
		assert_true(e[i].before || e[i].after);
		assert_false(mo_json_equal(e[i].before, e[i].after));
		assert_int_equal(mo_buf_printf(&out, "%s: %s => %s\n", e[i].path, x ? x : "-",
					       y ? y : "-"),
				 0);
		free(x);
		free(y);
	}
	mo_jdiff_free(e, n);
	json_decref(a);
	json_decref(b);
	return out.ptr;
}

static void assert_diff(const char *before, const char *after, const char *expected)
{
	char *got = diff_text(before, after);
	assert_string_equal(got, expected);
	mo_free(got);
}

static int equal_text(const char *a, const char *b)
{
	json_t *x = parse(a), *y = parse(b);
	int eq = mo_json_equal(x, y), eq2 = mo_json_equal(y, x);
	assert_int_equal(eq, eq2); /* symmetric */
	json_decref(x);
	json_decref(y);
	return eq;
}

static void test_jdiff_scalars(void **state)
{
	json_t *nul_a = json_stringn("a\0b", 3), *nul_c = json_stringn("a\0c", 3);
	(void)state;
	assert_true(equal_text("\"abc\"", "\"abc\""));
	assert_false(equal_text("\"abc\"", "\"abd\""));
	assert_false(equal_text("\"abc\"", "\"ab\""));
	assert_true(equal_text("true", "true"));
	assert_false(equal_text("true", "false"));
	assert_true(equal_text("null", "null"));
	assert_false(equal_text("null", "false"));
	assert_false(equal_text("\"1\"", "1"));
	assert_false(equal_text("0", "false"));
	/* Strings compare by length and bytes, past embedded NULs. */
	assert_false(mo_json_equal(nul_a, nul_c));
	json_decref(nul_a);
	json_decref(nul_c);

	assert_diff("\"a\"", "\"a\"", "");
	assert_diff("\"a\"", "\"b\"", ": \"a\" => \"b\"\n");
	assert_diff("{\"on\":true}", "{\"on\":false}", "on: true => false\n");
}

static void test_jdiff_int_real(void **state)
{
	json_t *big_i, *big_r, *max_i, *max_r;
	(void)state;
	assert_true(equal_text("1", "1.0"));
	assert_true(equal_text("-3", "-3.0"));
	assert_true(equal_text("0", "-0.0"));
	assert_true(equal_text("2.5", "2.5"));
	assert_false(equal_text("1", "1.5"));
	assert_false(equal_text("1", "2"));
	assert_false(equal_text("1.25", "1.5"));
	assert_false(equal_text("1", "1e300"));
	assert_true(equal_text("[1, {\"x\": 2}]", "[1.0, {\"x\": 2.0}]"));

	/* Exact comparison: 2^53 + 1 has no double; it must not equal 2^53.0. */
	big_i = json_integer(9007199254740993LL);
	big_r = json_real(9007199254740992.0);
	assert_false(mo_json_equal(big_i, big_r));
	assert_false(mo_json_equal(big_r, big_i));
	json_integer_set(big_i, 9007199254740992LL);
	assert_true(mo_json_equal(big_i, big_r));
	/* INT64_MAX rounds to 2^63 as a double, which no json_int_t holds. */
	max_i = json_integer(INT64_MAX);
	max_r = json_real((double)INT64_MAX);
	assert_false(mo_json_equal(max_i, max_r));
	json_decref(big_i);
	json_decref(big_r);
	json_decref(max_i);
	json_decref(max_r);

	assert_diff("{\"n\":1,\"m\":[2]}", "{\"n\":1.0,\"m\":[2.0]}", "");
	assert_diff("{\"n\":1}", "{\"n\":1.5}", "n: 1 => 1.5\n");
}

static void test_jdiff_nested_objects(void **state)
{
	json_t *a, *b;
	mo_jdiff_entry *e = NULL;
	size_t n = 0;
	(void)state;

	/* Key order never matters, at any depth. */
	assert_true(equal_text("{\"a\":1,\"b\":{\"x\":[1,2],\"y\":null}}",
			       "{\"b\":{\"y\":null,\"x\":[1,2]},\"a\":1}"));
	assert_false(equal_text("{\"a\":1,\"b\":{\"x\":[1,2]}}", "{\"a\":1,\"b\":{\"x\":[2,1]}}"));
	assert_false(equal_text("{\"a\":1}", "{\"a\":1,\"b\":2}"));
	assert_false(equal_text("{\"a\":1}", "{\"b\":1}"));

	/* Entries in traversal order with keys sorted, whatever the input
	 * order: changed, added and removed leaves. */
	assert_diff(
		"{\"tags\":{\"team\":\"a\",\"env\":\"dev\",\"old\":1},\"size\":1,\"name\":\"x\"}",
		"{\"size\":2,\"name\":\"x\",\"tags\":{\"owner\":\"me\",\"env\":\"prod\",\"team\":"
		"\"a\"}}",
		"size: 1 => 2\n"
		"tags.env: \"dev\" => \"prod\"\n"
		"tags.old: 1 => -\n"
		"tags.owner: - => \"me\"\n");
	/* An added or removed subtree is one entry holding the whole value. */
	assert_diff("{\"a\":{}}", "{\"a\":{},\"b\":{\"c\":{\"d\":1}}}",
		    "b: - => {\"c\":{\"d\":1}}\n");
	assert_diff("{\"a\":{\"b\":{\"c\":1}}}", "{\"a\":{}}", "a.b: {\"c\":1} => -\n");

	/* before/after are new references to the compared values themselves. */
	a = parse("{\"x\":{\"y\":[1]}}");
	b = parse("{\"x\":{\"y\":[2]}}");
	assert_int_equal(mo_jdiff(a, b, &e, &n), 0);
	assert_int_equal(n, 1);
	assert_string_equal(e[0].path, "x.y[0]");
	assert_ptr_equal(e[0].before,
			 json_array_get(json_object_get(json_object_get(a, "x"), "y"), 0));
	assert_ptr_equal(e[0].after,
			 json_array_get(json_object_get(json_object_get(b, "x"), "y"), 0));
	assert_int_equal(e[0].before->refcount, 2);
	json_decref(a);
	json_decref(b);
	/* The entries keep the values alive after their parents are gone. */
	assert_int_equal(e[0].before->refcount, 1);
	assert_int_equal(json_integer_value(e[0].before), 1);
	assert_int_equal(json_integer_value(e[0].after), 2);
	mo_jdiff_free(e, n);
}

static void test_jdiff_arrays(void **state)
{
	(void)state;
	assert_false(equal_text("[1,2]", "[1,2,3]"));
	assert_false(equal_text("[]", "[null]"));
	assert_true(equal_text("[]", "[]"));

	assert_diff("{\"ports\":[{\"host\":\"a\",\"port\":1},{\"host\":\"b\"}]}",
		    "{\"ports\":[{\"host\":\"a\",\"port\":2},{\"host\":\"c\"},{\"host\":\"d\"},5]}",
		    "ports[0].port: 1 => 2\n"
		    "ports[1].host: \"b\" => \"c\"\n"
		    "ports[2]: - => {\"host\":\"d\"}\n"
		    "ports[3]: - => 5\n");
	assert_diff("[1,2,3]", "[1]",
		    "[1]: 2 => -\n"
		    "[2]: 3 => -\n");
	assert_diff("[[1,[2]]]", "[[1,[3]]]", "[0][1][0]: 2 => 3\n");
	assert_diff("[]", "[]", "");
}

static void test_jdiff_kind_change(void **state)
{
	(void)state;
	assert_false(equal_text("{}", "[]"));
	assert_diff("{\"a\":{\"x\":1,\"y\":2}}", "{\"a\":\"str\"}",
		    "a: {\"x\":1,\"y\":2} => \"str\"\n");
	assert_diff("{\"a\":[1]}", "{\"a\":{}}", "a: [1] => {}\n");
	assert_diff("{\"a\":null}", "{\"a\":0}", "a: null => 0\n");
	assert_diff("{}", "[]", ": {} => []\n");
	assert_diff("{\"a\":1}", "\"s\"", ": {\"a\":1} => \"s\"\n");
}

static void test_jdiff_key_quoting(void **state)
{
	(void)state;
	assert_diff("{}",
		    "{\"ok_name\":1,\"dash-ed\":1,\"a.b\":1,\"with space\":1,\"1st\":1,\"\":1,"
		    "\"q\\\"t\":1,\"b\\\\s\":1,\"nl\\n\":1,\"_x9\":1,\"[0]\":1}",
		    "[\"\"]: - => 1\n"
		    "[\"1st\"]: - => 1\n"
		    "[\"[0]\"]: - => 1\n"
		    "_x9: - => 1\n"
		    "[\"a.b\"]: - => 1\n"
		    "[\"b\\\\s\"]: - => 1\n"
		    "dash-ed: - => 1\n"
		    "[\"nl\\n\"]: - => 1\n"
		    "ok_name: - => 1\n"
		    "[\"q\\\"t\"]: - => 1\n"
		    "[\"with space\"]: - => 1\n");
	/* Quoted keys join without a dot; identifiers after them take one. */
	assert_diff("{\"labels\":{\"app.kubernetes.io/name\":\"a\"}}",
		    "{\"labels\":{\"app.kubernetes.io/name\":{\"v\":\"b\"}}}",
		    "labels[\"app.kubernetes.io/name\"]: \"a\" => {\"v\":\"b\"}\n");
	assert_diff("{\"m\":{\"a b\":{\"c\":[1]}}}", "{\"m\":{\"a b\":{\"c\":[2]}}}",
		    "m[\"a b\"].c[0]: 1 => 2\n");
}

static void assert_top_keys(const char *before, const char *after, const char *expected)
{
	json_t *a = before ? parse(before) : NULL, *b = after ? parse(after) : NULL;
	json_t *keys = mo_jdiff_top_keys(a, b);
	char *text;
	assert_non_null(keys);
	assert_true(json_is_array(keys));
	text = json_dumps(keys, JSON_COMPACT);
	assert_string_equal(text, expected);
	free(text);
	json_decref(keys);
	json_decref(a);
	json_decref(b);
}

static void test_jdiff_top_keys(void **state)
{
	(void)state;
	assert_top_keys("{\"d\":4,\"a\":1,\"b\":{\"x\":1},\"c\":3}",
			"{\"e\":5,\"a\":1.0,\"b\":{\"x\":2},\"d\":4}", "[\"b\",\"c\",\"e\"]");
	assert_top_keys("{\"a\":{\"x\":1,\"y\":2}}", "{\"a\":{\"y\":2,\"x\":1.0}}", "[]");
	assert_top_keys("{}", "{}", "[]");
	assert_top_keys("1", "\"1\"", "[\"\"]");
	assert_top_keys("1", "1.0", "[]");
	assert_top_keys("[1]", "[1]", "[]");
	assert_top_keys("{\"a\":1}", "[1]", "[\"\"]");
	assert_top_keys("{\"a\":1}", NULL, "[\"\"]");
	assert_top_keys(NULL, NULL, "[]");
}

static void test_jdiff_null(void **state)
{
	json_t *obj = parse("{\"a\":1}"), *jnull = json_null();
	mo_jdiff_entry *e = NULL;
	size_t n = 99;
	(void)state;

	assert_true(mo_json_equal(NULL, NULL));
	assert_false(mo_json_equal(NULL, jnull));
	assert_false(mo_json_equal(jnull, NULL));
	assert_false(mo_json_equal(NULL, obj));

	assert_int_equal(mo_jdiff(NULL, NULL, &e, &n), 0);
	assert_int_equal(n, 0);
	assert_null(e);

	/* A whole value appearing or disappearing is one entry at the root. */
	assert_int_equal(mo_jdiff(NULL, obj, &e, &n), 0);
	assert_int_equal(n, 1);
	assert_string_equal(e[0].path, "");
	assert_null(e[0].before);
	assert_ptr_equal(e[0].after, obj);
	assert_int_equal(obj->refcount, 2);
	mo_jdiff_free(e, n);
	assert_int_equal(obj->refcount, 1);

	assert_int_equal(mo_jdiff(obj, NULL, &e, &n), 0);
	assert_int_equal(n, 1);
	assert_ptr_equal(e[0].before, obj);
	assert_null(e[0].after);
	mo_jdiff_free(e, n);

	assert_int_equal(mo_jdiff(NULL, jnull, &e, &n), 0);
	assert_int_equal(n, 1);
	assert_null(e[0].before);
	assert_true(json_is_null(e[0].after));
	mo_jdiff_free(e, n);

	assert_int_equal(mo_jdiff(obj, obj, NULL, &n), MO_EINVAL);
	mo_jdiff_free(NULL, 0);
	json_decref(obj);
	json_decref(jnull);
}

static void test_jdiff_alloc_failure(void **state)
{
	json_t *a =
		parse("{\"z\":[1,2,{\"k\":1}],\"tags\":{\"a.b\":1,\"c\":2},\"n\":1,\"s\":\"x\"}");
	json_t *b = parse("{\"z\":[1,3,{\"k\":2},4],\"tags\":{\"a.b\":2},\"n\":1.5,\"t\":true}");
	json_t *z1 = json_array_get(json_object_get(a, "z"), 1);
	json_t *ref_keys = mo_jdiff_top_keys(a, b);
	mo_jdiff_entry *ref = NULL, *e;
	size_t nref, n;
	size_t z1_refs;
	long fail_at;
	int rc;
	(void)state;

	assert_non_null(ref_keys);
	assert_int_equal(mo_jdiff(a, b, &ref, &nref), 0);
	assert_int_equal(nref, 8);
	z1_refs = z1->refcount; /* the parent's and ref[]'s */
	assert_int_equal(z1_refs, 2);
	for (fail_at = 1;; fail_at++) {
		e = (mo_jdiff_entry *)&fail_at; /* must survive a failure untouched */
		n = 77;
		mo_alloc_fail_after(fail_at);
		rc = mo_jdiff(a, b, &e, &n);
		mo_alloc_fail_after(0);
		if (rc == 0)
			break;
		assert_int_equal(rc, MO_ENOMEM);
		assert_int_equal(mo_error_last()->code, MO_ENOMEM);
		assert_ptr_equal(e, (mo_jdiff_entry *)&fail_at);
		assert_int_equal(n, 77);
		/* References taken for entries already made were dropped. */
		assert_int_equal(z1->refcount, z1_refs);
	}
	assert_true(fail_at > (long)nref);
	assert_int_equal(n, nref);
	for (size_t i = 0; i < n; i++) {
		assert_string_equal(e[i].path, ref[i].path);
		assert_ptr_equal(e[i].before, ref[i].before);
		assert_ptr_equal(e[i].after, ref[i].after);
	}
	mo_jdiff_free(e, n);
	mo_jdiff_free(ref, nref);

	/* Top keys: jansson allocates the result itself; only the key list
	 * comes from mo_malloc. */
	mo_alloc_fail_after(1);
	assert_null(mo_jdiff_top_keys(a, b));
	assert_int_equal(mo_error_last()->code, MO_ENOMEM);
	mo_alloc_fail_after(0);
	{
		json_t *keys = mo_jdiff_top_keys(a, b);
		assert_true(json_equal(keys, ref_keys));
		json_decref(keys);
	}
	json_decref(ref_keys);
	json_decref(a);
	json_decref(b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_jdiff_scalars),
		cmocka_unit_test(test_jdiff_int_real),
		cmocka_unit_test(test_jdiff_nested_objects),
		cmocka_unit_test(test_jdiff_arrays),
		cmocka_unit_test(test_jdiff_kind_change),
		cmocka_unit_test(test_jdiff_key_quoting),
		cmocka_unit_test(test_jdiff_top_keys),
		cmocka_unit_test(test_jdiff_null),
		cmocka_unit_test(test_jdiff_alloc_failure),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
