/*
 * test_secret.c - keyed hashes of sensitive values: canonical form, known
 * answers, key and value separation, marker recognition.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "common.h"
#include "secret.h"

static unsigned char key_a[32], key_b[32];

static int setup(void **ts)
{
	(void)ts;
	for (int i = 0; i < 32; i++) {
		key_a[i] = (unsigned char)i;
		key_b[i] = (unsigned char)(0xff - i);
	}
	return 0;
}

static json_t *parse(const char *text)
{
	json_error_t e;
	json_t *v = json_loads(text, JSON_DECODE_ANY, &e);
	assert_non_null(v);
	return v;
}

static const char *marker(const json_t *h)
{
	const json_t *s = json_object_get(h, "$sensitive");
	assert_true(json_is_string(s));
	return json_string_value(s);
}

/* Hash of the value written as JSON text under key. */
static json_t *hash_text(const unsigned char key[32], const char *text)
{
	json_t *v = parse(text), *h = mo_secret_hash(key, v);
	json_decref(v);
	assert_non_null(h);
	return h;
}

static void test_secret_known_answer(void **ts)
{
	json_t *h;
	(void)ts;

	/* HMAC-SHA256 under key 00..1f of the canonical text {"a":1,"b":[true,null]} */
	h = hash_text(key_a, "{ \"b\": [true, null], \"a\": 1 }");
	assert_int_equal(json_object_size(h), 1);
	assert_string_equal(marker(h),
			    "hmac-sha256:"
			    "3053c303524ac0d8b7686f0761379c3da7fc86b619e1e6d024dc87b4f0b7c4de");
	json_decref(h);

	/* a scalar is hashed as its JSON text, quotes included */
	h = hash_text(key_a, "\"hunter2\"");
	assert_string_equal(marker(h),
			    "hmac-sha256:"
			    "d21965d819fbbae9edced814ab4e2e32051f8b608a3009118f77cb8c05dfc655");
	json_decref(h);
}

static void test_secret_equal_values(void **ts)
{
	json_t *h1, *h2;
	(void)ts;

	/* key order and whitespace do not matter */
	h1 = hash_text(key_a, "{\"user\":\"admin\",\"pass\":{\"x\":1,\"y\":[1,2]}}");
	h2 = hash_text(key_a, "{ \"pass\": { \"y\": [1, 2], \"x\": 1 }, \"user\": \"admin\" }");
	assert_true(json_equal(h1, h2));
	json_decref(h1);
	json_decref(h2);
}

static void test_secret_different_values(void **ts)
{
	json_t *h1, *h2, *h3;
	(void)ts;

	h1 = hash_text(key_a, "\"s3cret\"");
	h2 = hash_text(key_a, "\"s3cre7\"");
	assert_false(json_equal(h1, h2));
	json_decref(h2);
	/* the string "1" and the number 1 are different values */
	h2 = hash_text(key_a, "\"1\"");
	h3 = hash_text(key_a, "1");
	assert_false(json_equal(h2, h3));
	/* array order matters */
	json_decref(h2);
	json_decref(h3);
	h2 = hash_text(key_a, "[1,2]");
	h3 = hash_text(key_a, "[2,1]");
	assert_false(json_equal(h2, h3));
	json_decref(h1);
	json_decref(h2);
	json_decref(h3);
}

static void test_secret_different_keys(void **ts)
{
	json_t *h1, *h2;
	(void)ts;

	h1 = hash_text(key_a, "\"s3cret\"");
	h2 = hash_text(key_b, "\"s3cret\"");
	assert_false(json_equal(h1, h2));
	assert_true(mo_secret_is_hash(h1));
	assert_true(mo_secret_is_hash(h2));
	json_decref(h1);
	json_decref(h2);
}

static void test_secret_no_cleartext(void **ts)
{
	json_t *h;
	char *text;
	(void)ts;

	h = hash_text(key_a, "{\"password\":\"correct horse battery staple\"}");
	text = json_dumps(h, JSON_COMPACT);
	assert_non_null(text);
	assert_null(strstr(text, "correct horse"));
	assert_null(strstr(text, "password"));
	/* "$sensitive":"hmac-sha256:" + 64 hex digits */
	assert_int_equal(strlen(marker(h)), strlen("hmac-sha256:") + 64);
	for (const char *p = marker(h) + strlen("hmac-sha256:"); *p; p++)
		assert_non_null(strchr("0123456789abcdef", *p));
	free(text);
	json_decref(h);
}

static void test_secret_idempotent(void **ts)
{
	json_t *h1, *h2;
	(void)ts;

	h1 = hash_text(key_a, "[\"token\", 42]");
	h2 = mo_secret_hash(key_a, h1);
	assert_non_null(h2);
	assert_true(json_equal(h1, h2));
	/* a copy, not the same object */
	assert_ptr_not_equal(h1, h2);
	json_decref(h1);
	json_decref(h2);
	assert_null(mo_secret_hash(key_a, NULL));
}

static void test_secret_is_hash(void **ts)
{
	static const char *const not_hashes[] = {
		"\"hmac-sha256:00\"",
		"{}",
		"{\"$sensitive\": 1}",
		"{\"$sensitive\": \"sha256:00\"}",
		"{\"$sensitive\": \"hmac-sha256:00\", \"extra\": 1}",
		"{\"sensitive\": \"hmac-sha256:00\"}",
		"[\"$sensitive\", \"hmac-sha256:00\"]",
		"null",
	};
	json_t *v;
	(void)ts;

	v = parse("{\"$sensitive\": \"hmac-sha256:00\"}");
	assert_true(mo_secret_is_hash(v));
	json_decref(v);
	for (size_t i = 0; i < MO_ARRAY_SIZE(not_hashes); i++) {
		v = parse(not_hashes[i]);
		assert_false(mo_secret_is_hash(v));
		json_decref(v);
	}
	assert_false(mo_secret_is_hash(NULL));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_secret_known_answer),
		cmocka_unit_test(test_secret_equal_values),
		cmocka_unit_test(test_secret_different_values),
		cmocka_unit_test(test_secret_different_keys),
		cmocka_unit_test(test_secret_no_cleartext),
		cmocka_unit_test(test_secret_idempotent),
		cmocka_unit_test(test_secret_is_hash),
	};
	return cmocka_run_group_tests(tests, setup, NULL);
}
