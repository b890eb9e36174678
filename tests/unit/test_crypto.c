/*
 * test_crypto.c - the ctx.crypto and ctx.time drivers, called from Lua
 * code running as a task in a real sandbox (as a module's handler would):
 * known-answer vectors (NIST SHA-256, RFC 4231 HMAC-SHA-256, RFC 1321 MD5,
 * RFC 4648 base64, the AWS SigV4 signing-key derivation example), strict
 * decoding, random UUIDs, fixed dates in the HTTP and ISO 8601 formats,
 * and the errors every invalid argument raises.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <lauxlib.h>
#include <lua.h>

#include "common.h"
#include "drivers.h"
#include "sandbox.h"

/* ---- helpers ------------------------------------------------------------ */

/* A sandbox without a runtime whose globals hold ctx = {crypto, time}. */
static int setup(void **state)
{
	mo_sandbox *sb = NULL;
	lua_State *L;

	if (mo_sandbox_new(&sb, NULL, "module crypto-test", NULL, NULL) < 0)
		return -1;
	L = mo_sandbox_L(sb);
	lua_createtable(L, 0, 2);
	mo_open_crypto(L);
	lua_setfield(L, -2, "crypto");
	mo_open_time(L);
	lua_setfield(L, -2, "time");
	lua_setglobal(L, "ctx");
	*state = sb;
	return 0;
}

static int teardown(void **state)
{
	mo_sandbox_free(*state);
	return 0;
}

/* Run code as a task.  Returns the task's rc; on success *out is a copy of
 * tostring(first result) (caller frees), on failure the error message. */
static int run(mo_sandbox *sb, const char *code, char **out)
{
	mo_task *t = NULL;
	int status = -1, nres = 0, rc;

	*out = NULL;
	if ((rc = mo_sandbox_loadbuffer(sb, code, strlen(code), "=test")) < 0)
		return rc;
	if ((rc = mo_task_new(&t, sb, 0, "crypto test")) < 0)
		return rc;
	rc = mo_task_resume(t, 0, &status, &nres);
	if (rc == 0) {
		lua_State *L = mo_task_thread(t);
		assert_int_equal(status, MO_TASK_DONE);
		assert_true(nres >= 1);
		*out = mo_strdup(luaL_tolstring(L, -nres, NULL));
		lua_pop(L, 1);
	} else {
		*out = mo_strdup(mo_error_last()->message);
	}
	mo_task_free(t);
	return rc;
}

/* code must succeed and return exactly `want`. */
static void check_value(mo_sandbox *sb, const char *code, const char *want)
{
	char *got = NULL;
	int rc = run(sb, code, &got);
	if (rc != 0)
		fail_msg("%s\n-> error: %s", code, got);
	if (strcmp(got, want) != 0)
		fail_msg("%s\n-> got  %s\n   want %s", code, got, want);
	mo_free(got);
}

/* code must fail with a message containing `want`. */
static void check_error(mo_sandbox *sb, const char *code, const char *want)
{
	char *got = NULL;
	int rc = run(sb, code, &got);
	if (rc == 0)
		fail_msg("%s\n-> succeeded with %s, want an error containing \"%s\"", code, got,
			 want);
	assert_int_equal(rc, MO_EMODULE);
	if (!strstr(got, want))
		fail_msg("%s\n-> error %s\n   want it to contain \"%s\"", code, got, want);
	mo_free(got);
}

/* ---- sha256 ------------------------------------------------------------- */

static void test_crypto_sha256_nist(void **state)
{
	mo_sandbox *sb = *state;
	/* FIPS 180-2 appendix B and the empty message */
	check_value(sb, "return ctx.crypto.sha256('abc')",
		    "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
	check_value(sb, "return ctx.crypto.sha256('')",
		    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
	check_value(sb,
		    "return ctx.crypto.sha256("
		    "'abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq')",
		    "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
	check_value(sb, "return ctx.crypto.sha256(string.rep('a', 1000000))",
		    "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
	/* other encodings of the same digest */
	check_value(sb, "return ctx.crypto.sha256('abc', 'base64')",
		    "ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0=");
	check_value(sb, "return ctx.crypto.hex_encode(ctx.crypto.sha256('abc', 'raw'))",
		    "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
	/* binary input with NUL bytes */
	check_value(sb, "return ctx.crypto.sha256('\\0')",
		    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d");
}

static void test_crypto_md5_rfc1321(void **state)
{
	mo_sandbox *sb = *state;
	check_value(sb, "return ctx.crypto.md5('')", "d41d8cd98f00b204e9800998ecf8427e");
	check_value(sb, "return ctx.crypto.md5('abc')", "900150983cd24fb0d6963f7d28e17f72");
	check_value(sb, "return ctx.crypto.md5('message digest')",
		    "f96b697d7cb7938d525a2f31aaf161d0");
	check_value(sb,
		    "return ctx.crypto.md5('12345678901234567890123456789012345678901234567890"
		    "123456789012345678901234567890')",
		    "57edf4a22be3c955ac49da2e2107b67a");
	/* the Content-MD5 form */
	check_value(sb, "return ctx.crypto.md5('', 'base64')", "1B2M2Y8AsgTpgAmY7PhCfg==");
}

/* ---- HMAC-SHA-256: RFC 4231 test cases 1 to 7 --------------------------- */

static void test_crypto_hmac_rfc4231(void **state)
{
	mo_sandbox *sb = *state;
	check_value(sb, "return ctx.crypto.hmac_sha256(string.rep('\\x0b', 20), 'Hi There', 'hex')",
		    "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");
	check_value(sb,
		    "return ctx.crypto.hmac_sha256('Jefe', 'what do ya want for nothing?', "
		    "'hex')",
		    "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
	check_value(sb,
		    "return ctx.crypto.hmac_sha256(string.rep('\\xaa', 20), "
		    "string.rep('\\xdd', 50), 'hex')",
		    "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe");
	check_value(sb,
		    "local k = '' for i = 1, 25 do k = k .. string.char(i) end "
		    "return ctx.crypto.hmac_sha256(k, string.rep('\\xcd', 50), 'hex')",
		    "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b");
	/* test case 5 is truncated to 128 bits */
	check_value(sb,
		    "return string.sub(ctx.crypto.hmac_sha256(string.rep('\\x0c', 20), "
		    "'Test With Truncation', 'hex'), 1, 32)",
		    "a3b6167473100ee06e0c796c2955552b");
	check_value(sb,
		    "return ctx.crypto.hmac_sha256(string.rep('\\xaa', 131), "
		    "'Test Using Larger Than Block-Size Key - Hash Key First', 'hex')",
		    "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
	check_value(sb,
		    "return ctx.crypto.hmac_sha256(string.rep('\\xaa', 131), "
		    "'This is a test using a larger than block-size key and a larger than "
		    "block-size data. The key needs to be hashed before being used by the HMAC "
		    "algorithm.', 'hex')",
		    "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2");
}

static void test_crypto_hmac_encodings(void **state)
{
	mo_sandbox *sb = *state;
	/* raw is the default: 32 bytes, equal to the hex form once encoded */
	check_value(sb,
		    "local m = ctx.crypto.hmac_sha256('Jefe', 'what do ya want for nothing?') "
		    "return #m .. ' ' .. ctx.crypto.hex_encode(m)",
		    "32 5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
	check_value(sb,
		    "return ctx.crypto.hmac_sha256('Jefe', 'what do ya want for nothing?', "
		    "'base64')",
		    "W9zBRr9gdU5qBCQmCJV1x1oAPwidJzmDnexYuWTsOEM=");
	/* an empty key is a valid HMAC key */
	check_value(sb, "return ctx.crypto.hmac_sha256('', '', 'hex')",
		    "b613679a0814d9ec772f95d778c35fc5ff1697c493715653c6c712144292c5ad");
}

/* The AWS documentation's SigV4 signing-key derivation: HMACs chained on
 * raw output (secret wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY, 20120215,
 * us-east-1, iam). */
static void test_crypto_hmac_sigv4_key(void **state)
{
	mo_sandbox *sb = *state;
	check_value(sb,
		    "local h = ctx.crypto.hmac_sha256 "
		    "local k = h('AWS4wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY', '20120215') "
		    "k = h(k, 'us-east-1') k = h(k, 'iam') k = h(k, 'aws4_request') "
		    "return ctx.crypto.hex_encode(k)",
		    "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d");
}

/* ---- encodings ---------------------------------------------------------- */

static void test_crypto_base64_rfc4648(void **state)
{
	mo_sandbox *sb = *state;
	static const char *const v[][2] = {
		{ "", "" },
		{ "f", "Zg==" },
		{ "fo", "Zm8=" },
		{ "foo", "Zm9v" },
		{ "foob", "Zm9vYg==" },
		{ "fooba", "Zm9vYmE=" },
		{ "foobar", "Zm9vYmFy" },
	};
	char code[256], want[64];
	for (size_t i = 0; i < MO_ARRAY_SIZE(v); i++) {
		snprintf(code, sizeof(code), "return ctx.crypto.base64_encode('%s')", v[i][0]);
		check_value(sb, code, v[i][1]);
		snprintf(code, sizeof(code), "return '<' .. ctx.crypto.base64_decode('%s') .. '>'",
			 v[i][1]);
		snprintf(want, sizeof(want), "<%s>", v[i][0]);
		check_value(sb, code, want);
	}
	/* every byte value survives the round trip; the well-known azurite
	 * account key decodes to 64 bytes */
	check_value(sb,
		    "local s = '' for i = 0, 255 do s = s .. string.char(i) end "
		    "local e = ctx.crypto.base64_encode(s) "
		    "return tostring(ctx.crypto.base64_decode(e) == s) .. ' ' .. #e",
		    "true 344");
	check_value(sb,
		    "return #ctx.crypto.base64_decode('Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50"
		    "uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==')",
		    "64");
}

static void test_crypto_base64_invalid(void **state)
{
	mo_sandbox *sb = *state;
	check_error(sb, "return ctx.crypto.base64_decode('Zm9')",
		    "base64_decode: invalid base64: length 3 is not a multiple of 4");
	check_error(sb, "return ctx.crypto.base64_decode('Zm9v!A==')",
		    "invalid base64: unexpected character at offset 4");
	check_error(sb, "return ctx.crypto.base64_decode('Zm 9')", "unexpected character");
	check_error(sb, "return ctx.crypto.base64_decode('Zm9v\\n')", "not a multiple of 4");
	check_error(sb, "return ctx.crypto.base64_decode('Zg==Zm9v')", "unexpected character");
	check_error(sb, "return ctx.crypto.base64_decode('Z===')", "unexpected character");
	check_error(sb, "return ctx.crypto.base64_decode('Zg=a')", "misplaced '='");
	check_error(sb, "return ctx.crypto.base64_decode('Zh==')", "non-zero padding bits");
	check_error(sb, "return ctx.crypto.base64_decode('Zm9=')", "non-zero padding bits");
	check_error(sb, "return ctx.crypto.base64_decode('Zm-_')", "unexpected character");
}

static void test_crypto_hex(void **state)
{
	mo_sandbox *sb = *state;
	check_value(sb, "return ctx.crypto.hex_encode('')", "");
	check_value(sb, "return ctx.crypto.hex_encode('\\0\\x01\\x7f\\x80\\xffAz')",
		    "00017f80ff417a");
}

static void test_crypto_uuid(void **state)
{
	mo_sandbox *sb = *state;
	/* 100 UUIDs: the v4 layout, version and variant bits, all distinct */
	check_value(sb,
		    "local seen, n = {}, 0 "
		    "for i = 1, 100 do "
		    "  local u = ctx.crypto.uuid() "
		    "  if not u:find('^%x%x%x%x%x%x%x%x%-%x%x%x%x%-4%x%x%x%-[89ab]%x%x%x%-"
		    "%x%x%x%x%x%x%x%x%x%x%x%x$') then return 'bad ' .. u end "
		    "  if u:find('%u') then return 'upper ' .. u end "
		    "  if not seen[u] then n = n + 1 end seen[u] = true "
		    "end return n",
		    "100");
}

/* ---- argument checks ---------------------------------------------------- */

static void test_crypto_bad_arguments(void **state)
{
	mo_sandbox *sb = *state;
	check_error(sb, "return ctx.crypto.sha256(42)",
		    "ctx.crypto.sha256: data must be a string, got number");
	check_error(sb, "return ctx.crypto.sha256()", "data must be a string, got no value");
	check_error(sb, "return ctx.crypto.md5({})", "ctx.crypto.md5: data must be a string");
	check_error(sb, "return ctx.crypto.hmac_sha256(nil, 'x')",
		    "ctx.crypto.hmac_sha256: key must be a string, got nil");
	check_error(sb, "return ctx.crypto.hmac_sha256('k', 1)",
		    "ctx.crypto.hmac_sha256: data must be a string, got number");
	check_error(sb, "return ctx.crypto.hmac_sha256('k', 'd', 'base32')",
		    "encoding must be \"raw\", \"hex\" or \"base64\", got \"base32\"");
	check_error(
		sb, "return ctx.crypto.sha256('d', true)",
		"ctx.crypto.sha256: encoding must be \"raw\", \"hex\" or \"base64\", got boolean");
	check_error(sb, "return ctx.crypto.base64_encode(nil)",
		    "ctx.crypto.base64_encode: data must be a string");
	check_error(sb, "return ctx.crypto.base64_decode(12)",
		    "ctx.crypto.base64_decode: text must be a string, got number");
	check_error(sb, "return ctx.crypto.hex_encode(false)",
		    "ctx.crypto.hex_encode: data must be a string, got boolean");
	/* errors are catchable by the module and leave the driver usable */
	check_value(sb,
		    "local ok, e = pcall(ctx.crypto.base64_decode, '***') "
		    "return tostring(ok) .. ' ' .. ctx.crypto.base64_encode('ok')",
		    "false b2s=");
}

/* ---- ctx.time ----------------------------------------------------------- */

static void test_crypto_time_formats(void **state)
{
	mo_sandbox *sb = *state;
	/* RFC 7231's example date */
	check_value(sb, "return ctx.time.http_date(784111777)", "Sun, 06 Nov 1994 08:49:37 GMT");
	check_value(sb, "return ctx.time.http_date(784111777.999)",
		    "Sun, 06 Nov 1994 08:49:37 GMT");
	check_value(sb, "return ctx.time.http_date(0)", "Thu, 01 Jan 1970 00:00:00 GMT");
	check_value(sb, "return ctx.time.http_date(-0.5)", "Wed, 31 Dec 1969 23:59:59 GMT");
	check_value(sb, "return ctx.time.http_date(951782400)", "Tue, 29 Feb 2000 00:00:00 GMT");
	/* the SigV4 documentation's date */
	check_value(sb, "return ctx.time.iso8601(1369353600)", "20130524T000000Z");
	check_value(sb, "return ctx.time.iso8601(1369353600, 'basic')", "20130524T000000Z");
	check_value(sb, "return ctx.time.iso8601(1369353600, 'extended')", "2013-05-24T00:00:00Z");
	check_value(sb, "return ctx.time.iso8601(1369353600 + 86399, 'date')", "20130524");
	check_value(sb, "return ctx.time.iso8601(253402300799, 'extended')",
		    "9999-12-31T23:59:59Z");
}

static void test_crypto_time_now(void **state)
{
	mo_sandbox *sb = *state;
	char *got = NULL;
	struct timespec ts;
	double before, after, t;

	/* Compare against the same clock now() reads.  time(2) reads the coarse
	 * clock, which lags CLOCK_REALTIME by up to a tick, and the printed value
	 * is rounded to milliseconds: allow one millisecond either side. */
	clock_gettime(CLOCK_REALTIME, &ts);
	before = (double)ts.tv_sec + ts.tv_nsec / 1e9;
	assert_int_equal(run(sb, "return string.format('%.3f', ctx.time.now())", &got), 0);
	clock_gettime(CLOCK_REALTIME, &ts);
	after = (double)ts.tv_sec + ts.tv_nsec / 1e9;
	t = strtod(got, NULL);
	mo_free(got);
	assert_true(t >= before - 0.001 && t <= after + 0.001);
	/* now is the default t, and it is a float with a fraction */
	check_value(sb, "return math.type(ctx.time.now())", "float");
	check_value(sb,
		    "return (ctx.time.http_date():match('^%a%a%a, %d%d %a%a%a %d%d%d%d "
		    "%d%d:%d%d:%d%d GMT$')) ~= nil",
		    "true");
	check_value(sb,
		    "return (ctx.time.iso8601(nil, 'extended'):match("
		    "'^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%dZ$')) ~= nil",
		    "true");
}

static void test_crypto_time_bad_arguments(void **state)
{
	mo_sandbox *sb = *state;
	check_error(
		sb, "return ctx.time.http_date('now')",
		"ctx.time.http_date: t must be a number of seconds since the epoch, got string");
	check_error(sb, "return ctx.time.http_date(0/0)", "ctx.time.http_date: t is out of range");
	check_error(sb, "return ctx.time.iso8601(1e300)", "ctx.time.iso8601: t is out of range");
	check_error(sb, "return ctx.time.iso8601(math.huge)", "t is out of range");
	check_error(sb, "return ctx.time.iso8601(0, 'rfc3339')",
		    "ctx.time.iso8601: format must be \"basic\", \"extended\" or \"date\", got "
		    "\"rfc3339\"");
	check_error(sb, "return ctx.time.iso8601(0, 1)", "format must be");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_crypto_sha256_nist, setup, teardown),
		cmocka_unit_test_setup_teardown(test_crypto_md5_rfc1321, setup, teardown),
		cmocka_unit_test_setup_teardown(test_crypto_hmac_rfc4231, setup, teardown),
		cmocka_unit_test_setup_teardown(test_crypto_hmac_encodings, setup, teardown),
		cmocka_unit_test_setup_teardown(test_crypto_hmac_sigv4_key, setup, teardown),
		cmocka_unit_test_setup_teardown(test_crypto_base64_rfc4648, setup, teardown),
		cmocka_unit_test_setup_teardown(test_crypto_base64_invalid, setup, teardown),
		cmocka_unit_test_setup_teardown(test_crypto_hex, setup, teardown),
		cmocka_unit_test_setup_teardown(test_crypto_uuid, setup, teardown),
		cmocka_unit_test_setup_teardown(test_crypto_bad_arguments, setup, teardown),
		cmocka_unit_test_setup_teardown(test_crypto_time_formats, setup, teardown),
		cmocka_unit_test_setup_teardown(test_crypto_time_now, setup, teardown),
		cmocka_unit_test_setup_teardown(test_crypto_time_bad_arguments, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
