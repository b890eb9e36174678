/*
 * secret.h - sensitive values: masking and keyed hashes.
 *
 * A sensitive value is never stored or printed in clear.  Stored form:
 * {"$sensitive":"hmac-sha256:<hex>"} where the HMAC key comes from the
 * state (mo_state_secret_key).  Equal values hash equal, so the planner can
 * still tell whether a sensitive property changed.
 */
#ifndef MO_SECRET_H
#define MO_SECRET_H

#include <jansson.h>

/* {"$sensitive": "hmac-sha256:..."} of the canonical JSON of v; NULL on OOM. */
json_t *mo_secret_hash(const unsigned char key[32], const json_t *v);
/* 1 when v is a hashed sensitive marker. */
int mo_secret_is_hash(const json_t *v);

#endif
