/*
 * crypto.c - the ctx.crypto driver: digests, HMAC, encodings and random
 * UUIDs for modules that sign their own requests (Azure SharedKey, content
 * hashes for S3, ...).
 *
 * Every function is synchronous, does no I/O and may run anywhere (inside
 * or outside a task).  Arguments are checked strictly: data and keys must
 * be Lua strings (numbers are not converted), an encoding must be one of
 * "raw", "hex", "base64"; anything else raises a Lua error naming the
 * function and the argument.  Strings are byte strings: binary data (a raw
 * HMAC, a decoded key) passes through unchanged.
 *
 *   sha256(data [, enc])        digest, enc default "hex"
 *   md5(data [, enc])           digest, enc default "hex"
 *   hmac_sha256(key, data [, enc])  HMAC-SHA-256, enc default "raw"
 *   base64_encode(data)         standard alphabet, padded
 *   base64_decode(text)         strict: standard alphabet, padded, no spaces
 *   hex_encode(data)            lower-case hex
 *   uuid()                      random (version 4) UUID, lower case
 *
 * Digests use OpenSSL's libcrypto (EVP_Digest, HMAC); random bytes come
 * from RAND_bytes.  Result strings are built in Lua buffers, so they are
 * charged to the running task's memory cap.
 */
#include "drivers.h"

#include <lauxlib.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <stdint.h>
#include <string.h>

typedef enum {
	ENC_RAW,
	ENC_HEX,
	ENC_BASE64
} enc_kind;

static const char hexdigits[] = "0123456789abcdef";
static const char b64chars[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* The string argument arg of fn; raises unless it is a Lua string. */
static const char *check_bytes(lua_State *L, int arg, const char *fn, const char *name, size_t *len)
{
	if (lua_type(L, arg) != LUA_TSTRING)
		luaL_error(L, "ctx.crypto.%s: %s must be a string, got %s", fn, name,
			   luaL_typename(L, arg));
	return lua_tolstring(L, arg, len);
}

/* The optional encoding argument arg of fn (dflt when absent or nil). */
static enc_kind check_enc(lua_State *L, int arg, const char *fn, enc_kind dflt)
{
	const char *s;
	if (lua_isnoneornil(L, arg))
		return dflt;
	if (lua_type(L, arg) != LUA_TSTRING)
		luaL_error(L,
			   "ctx.crypto.%s: encoding must be \"raw\", \"hex\" or \"base64\", got %s",
			   fn, luaL_typename(L, arg));
	s = lua_tostring(L, arg);
	if (strcmp(s, "raw") == 0)
		return ENC_RAW;
	if (strcmp(s, "hex") == 0)
		return ENC_HEX;
	if (strcmp(s, "base64") == 0)
		return ENC_BASE64;
	luaL_error(L, "ctx.crypto.%s: encoding must be \"raw\", \"hex\" or \"base64\", got \"%s\"",
		   fn, s);
	return ENC_RAW;
}

/* Push hex(data).  Stack: +1. */
static void push_hex(lua_State *L, const unsigned char *data, size_t len)
{
	luaL_Buffer b;
	char *o;
	if (len > (((size_t)-1) >> 2))
		luaL_error(L, "ctx.crypto: input too large");
	o = luaL_buffinitsize(L, &b, 2 * len);
	for (size_t i = 0; i < len; i++) {
		o[2 * i] = hexdigits[data[i] >> 4];
		o[2 * i + 1] = hexdigits[data[i] & 15];
	}
	luaL_pushresultsize(&b, 2 * len);
}

/* Push base64(data), padded.  Stack: +1. */
static void push_base64(lua_State *L, const unsigned char *d, size_t len)
{
	luaL_Buffer b;
	size_t outlen, i, o = 0;
	char *out;
	if (len > (((size_t)-1) >> 2))
		luaL_error(L, "ctx.crypto: input too large");
	outlen = (len + 2) / 3 * 4;
	out = luaL_buffinitsize(L, &b, outlen);
	for (i = 0; i + 2 < len; i += 3) {
		uint32_t v = (uint32_t)d[i] << 16 | (uint32_t)d[i + 1] << 8 | d[i + 2];
		out[o++] = b64chars[v >> 18];
		out[o++] = b64chars[(v >> 12) & 63];
		out[o++] = b64chars[(v >> 6) & 63];
		out[o++] = b64chars[v & 63];
	}
	if (i < len) {
		uint32_t v = (uint32_t)d[i] << 16 | (i + 1 < len ? (uint32_t)d[i + 1] << 8 : 0);
		out[o++] = b64chars[v >> 18];
		out[o++] = b64chars[(v >> 12) & 63];
		out[o++] = i + 1 < len ? b64chars[(v >> 6) & 63] : '=';
		out[o++] = '=';
	}
	luaL_pushresultsize(&b, o);
}

/* Push a binary value in the asked encoding.  Stack: +1. */
static void push_enc(lua_State *L, const unsigned char *d, size_t len, enc_kind enc)
{
	switch (enc) {
	case ENC_HEX:
		push_hex(L, d, len);
		break;
	case ENC_BASE64:
		push_base64(L, d, len);
		break;
	default:
		lua_pushlstring(L, (const char *)d, len);
		break;
	}
}

static int digest(lua_State *L, const char *fn, const EVP_MD *md)
{
	size_t len;
	const char *data = check_bytes(L, 1, fn, "data", &len);
	enc_kind enc = check_enc(L, 2, fn, ENC_HEX);
	unsigned char out[EVP_MAX_MD_SIZE];
	unsigned int outlen = 0;
	if (!EVP_Digest(data, len, out, &outlen, md, NULL))
		return luaL_error(L, "ctx.crypto.%s: digest failed", fn);
	push_enc(L, out, outlen, enc);
	return 1;
}

/* sha256(data [, enc]).  Stack: 1-2 in, the digest out. */
static int l_sha256(lua_State *L)
{
	return digest(L, "sha256", EVP_sha256());
}

/* md5(data [, enc]).  Stack: 1-2 in, the digest out.  MD5 is offered for
 * protocol checksums (Content-MD5, S3 ETags), not for security. */
static int l_md5(lua_State *L)
{
	return digest(L, "md5", EVP_md5());
}

/* hmac_sha256(key, data [, enc]).  Stack: 2-3 in, the MAC out. */
static int l_hmac_sha256(lua_State *L)
{
	size_t klen, dlen;
	const char *key = check_bytes(L, 1, "hmac_sha256", "key", &klen);
	const char *data = check_bytes(L, 2, "hmac_sha256", "data", &dlen);
	enc_kind enc = check_enc(L, 3, "hmac_sha256", ENC_RAW);
	unsigned char out[EVP_MAX_MD_SIZE];
	unsigned int outlen = 0;
	if (klen > INT32_MAX)
		return luaL_error(L, "ctx.crypto.hmac_sha256: key too long");
	/* HMAC() with a NULL key and length 0 would fail: pass "" instead. */
	if (!HMAC(EVP_sha256(), klen ? key : "", (int)klen, (const unsigned char *)data, dlen, out,
		  &outlen))
		return luaL_error(L, "ctx.crypto.hmac_sha256: HMAC failed");
	push_enc(L, out, outlen, enc);
	return 1;
}

/* base64_encode(data).  Stack: 1 in, the text out. */
static int l_base64_encode(lua_State *L)
{
	size_t len;
	const char *data = check_bytes(L, 1, "base64_encode", "data", &len);
	push_base64(L, (const unsigned char *)data, len);
	return 1;
}

static int b64val(unsigned char ch)
{
	if (ch >= 'A' && ch <= 'Z')
		return ch - 'A';
	if (ch >= 'a' && ch <= 'z')
		return ch - 'a' + 26;
	if (ch >= '0' && ch <= '9')
		return ch - '0' + 52;
	if (ch == '+')
		return 62;
	if (ch == '/')
		return 63;
	return -1;
}

/* base64_decode(text).  Stack: 1 in, the bytes out.  Accepts exactly the
 * canonical form push_base64 produces: the length a multiple of 4, '='
 * only as the last one or two characters, unused bits zero. */
static int l_base64_decode(lua_State *L)
{
	size_t len, o = 0;
	const unsigned char *s =
		(const unsigned char *)check_bytes(L, 1, "base64_decode", "text", &len);
	luaL_Buffer b;
	unsigned char *out;

	if (len % 4 != 0)
		return luaL_error(L,
				  "ctx.crypto.base64_decode: invalid base64: length %I is not "
				  "a multiple of 4",
				  (lua_Integer)len);
	out = (unsigned char *)luaL_buffinitsize(L, &b, len / 4 * 3);
	for (size_t i = 0; i < len; i += 4) {
		int v[4], pad = 0;
		for (int k = 0; k < 4; k++) {
			unsigned char ch = s[i + (size_t)k];
			if (ch == '=' && i + 4 == len && k >= 2) {
				/* "xx==" or "xxx=": padding only at the very end */
				if (k == 2 && s[i + 3] != '=')
					return luaL_error(
						L,
						"ctx.crypto.base64_decode: invalid base64: "
						"misplaced '=' at offset %I",
						(lua_Integer)(i + 2));
				v[k] = 0;
				pad++;
				continue;
			}
			if ((v[k] = b64val(ch)) < 0)
				return luaL_error(L,
						  "ctx.crypto.base64_decode: invalid base64: "
						  "unexpected character at offset %I",
						  (lua_Integer)(i + (size_t)k));
		}
		uint32_t w = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 |
			     (uint32_t)v[3];
		if ((pad == 1 && (w & 0xff)) || (pad == 2 && (w & 0xffff)))
			return luaL_error(L,
					  "ctx.crypto.base64_decode: invalid base64: non-zero "
					  "padding bits at offset %I",
					  (lua_Integer)i);
		out[o++] = (unsigned char)(w >> 16);
		if (pad < 2)
			out[o++] = (unsigned char)(w >> 8);
		if (pad < 1)
			out[o++] = (unsigned char)w;
	}
	luaL_pushresultsize(&b, o);
	return 1;
}

/* hex_encode(data).  Stack: 1 in, the text out. */
static int l_hex_encode(lua_State *L)
{
	size_t len;
	const char *data = check_bytes(L, 1, "hex_encode", "data", &len);
	push_hex(L, (const unsigned char *)data, len);
	return 1;
}

/* uuid().  Stack: 0 in, "xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx" out. */
static int l_uuid(lua_State *L)
{
	unsigned char r[16];
	char s[37];
	size_t o = 0;
	if (RAND_bytes(r, (int)sizeof(r)) != 1)
		return luaL_error(L, "ctx.crypto.uuid: no random bytes available");
	r[6] = (unsigned char)((r[6] & 0x0f) | 0x40); /* version 4 */
	r[8] = (unsigned char)((r[8] & 0x3f) | 0x80); /* variant 10xx */
	for (int i = 0; i < 16; i++) {
		if (i == 4 || i == 6 || i == 8 || i == 10)
			s[o++] = '-';
		s[o++] = hexdigits[r[i] >> 4];
		s[o++] = hexdigits[r[i] & 15];
	}
	s[o] = '\0';
	lua_pushlstring(L, s, o);
	return 1;
}

int mo_open_crypto(lua_State *L)
{
	static const luaL_Reg fns[] = {
		{ "sha256", l_sha256 },
		{ "md5", l_md5 },
		{ "hmac_sha256", l_hmac_sha256 },
		{ "base64_encode", l_base64_encode },
		{ "base64_decode", l_base64_decode },
		{ "hex_encode", l_hex_encode },
		{ "uuid", l_uuid },
		{ NULL, NULL },
	};
	luaL_newlib(L, fns);
	return 1;
}
