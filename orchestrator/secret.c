/*
 * secret.c - keyed hashes of sensitive values.
 *
 * A sensitive value is replaced by {"$sensitive":"hmac-sha256:<64 hex>"},
 * the HMAC-SHA256 of its canonical JSON text (compact, keys sorted, any
 * top-level type) under the store's 32-byte key.  Canonical text makes the
 * hash independent of key order, so equal values hash equal and the planner
 * can tell whether a sensitive property changed without ever holding it in
 * clear; keying the hash keeps a stolen state file from confirming guesses
 * of low-entropy secrets without the key.
 */
#include "secret.h"
#include "common.h"

#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#define MO_SECRET_KEY    "$sensitive"
#define MO_SECRET_PREFIX "hmac-sha256:"

/* Free text produced by json_dumps with whichever allocator jansson uses. */
static void json_text_free(char *text)
{
	json_free_t free_fn = NULL;
	json_get_alloc_funcs(NULL, &free_fn);
	if (free_fn)
		free_fn(text);
}

int mo_secret_is_hash(const json_t *v)
{
	const json_t *s;
	if (!json_is_object(v) || json_object_size(v) != 1)
		return 0;
	s = json_object_get(v, MO_SECRET_KEY);
	return json_is_string(s) &&
	       !strncmp(json_string_value(s), MO_SECRET_PREFIX, strlen(MO_SECRET_PREFIX));
}

/*
 * Returns a new reference the caller owns, or NULL when out of memory or
 * when v is NULL.  A value that already is a hash marker is returned as a
 * copy rather than hashed again, so masking is idempotent and a value read
 * back from the state compares equal to a freshly masked one.
 */
json_t *mo_secret_hash(const unsigned char key[32], const json_t *v)
{
	static const char hex[] = "0123456789abcdef";
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	char marker[sizeof(MO_SECRET_PREFIX) + 2 * 32];
	char *text = NULL;
	json_t *out = NULL;
	size_t plen = strlen(MO_SECRET_PREFIX);

	if (!v)
		return NULL;
	if (mo_secret_is_hash(v))
		return json_deep_copy(v);
	text = json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
	if (!text)
		return NULL;
	if (!HMAC(EVP_sha256(), key, 32, (const unsigned char *)text, strlen(text), md, &mdlen) ||
	    mdlen != 32)
		goto done;
	memcpy(marker, MO_SECRET_PREFIX, plen);
	for (unsigned int i = 0; i < mdlen; i++) {
		marker[plen + 2 * i] = hex[md[i] >> 4];
		marker[plen + 2 * i + 1] = hex[md[i] & 15];
	}
	marker[plen + 2 * mdlen] = '\0';
	out = json_pack("{s:s}", MO_SECRET_KEY, marker);
done:
	/* the canonical text is the secret in clear: wipe it before freeing */
	OPENSSL_cleanse(text, strlen(text));
	json_text_free(text);
	OPENSSL_cleanse(md, sizeof(md));
	return out;
}
