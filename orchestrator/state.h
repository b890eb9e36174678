/*
 * state.h - the state store: what mecorch created, the operations journal,
 * the writer lock, lineage and serial.  SQLite (WAL) is the embedded
 * backend; the interface keeps the store swappable.
 *
 * Crash safety: mo_state_op_begin() commits the intent before the module is
 * called; mo_state_op_finish() records the outcome and the resource change
 * in one transaction.  So after a crash at any instant the journal holds a
 * pending intent for anything that may exist remotely but is not recorded,
 * and the next run resolves it (see exec.h: recovery).
 *
 * JSON values stored here are already masked: sensitive values arrive as
 * {"$sensitive":"hmac-sha256:..."} (see secret.h); the store never sees a
 * secret in clear.  A handle belongs to one thread.
 */
#ifndef MO_STATE_H
#define MO_STATE_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

typedef struct mo_state mo_state;

enum { MO_RES_OK = 0, MO_RES_TAINTED = 1, MO_RES_DEPOSED = 2 };

typedef struct {
	char *address;   /* module.<instance>.<type>.<name>[~deposed-N] */
	char *module;    /* module instance name */
	char *type;      /* resource type within the module */
	char *id;        /* remote id returned by create() */
	char *source;    /* module source the resource was created with */
	json_t *props;   /* properties as last applied or read (object) */
	json_t *outputs; /* outputs returned by create/update/read (object) */
	json_t *deps;    /* array of addresses it depended on (for destroy order) */
	int status;      /* MO_RES_* */
	int64_t serial;  /* state serial of its last change */
} mo_resource;

/* Frees the fields and r itself; accepts NULL. */
void mo_resource_free(mo_resource *r);
void mo_resource_list_free(mo_resource **list, size_t n);
/* Deep copy; *out is the caller's. */
int mo_resource_dup(mo_resource **out, const mo_resource *r);

/* Open or create the store at path (":memory:" allowed), apply pending
 * migrations, create lineage on first use.  A store whose schema is newer
 * than this binary knows is refused (MO_ESTATE). */
int mo_state_open(mo_state **out, const char *path);
void mo_state_close(mo_state *st);

int mo_state_schema_version(mo_state *st);
/* Latest schema version this binary knows. */
int mo_state_schema_latest(void);
const char *mo_state_lineage(mo_state *st);
/* Serial: bumped by every committed resource or output change. */
int64_t mo_state_serial(mo_state *st);
/* 32-byte key for keyed hashes of sensitive values: SHA-256 of the
 * environment variable MECORCH_STATE_KEY if set, else a random key created
 * with the store and kept in it. */
int mo_state_secret_key(mo_state *st, unsigned char key[32]);

/* Resources, sorted by address.  *out is the caller's. */
int mo_state_list(mo_state *st, mo_resource ***out, size_t *n);
/* MO_ENOTFOUND when absent. */
int mo_state_get(mo_state *st, const char *address, mo_resource **out);
/* Insert or replace (import, refresh); bumps the serial. */
int mo_state_put(mo_state *st, const mo_resource *r);
int mo_state_rm(mo_state *st, const char *address);
/* Rename; MO_ENOTFOUND if from is absent, MO_EINVAL if to exists. */
int mo_state_mv(mo_state *st, const char *from, const char *to);
int mo_state_set_status(mo_state *st, const char *address, int status);
/* Move a resource aside before a create-before-destroy replace: renames it
 * to "<address>~deposed-<n>" with status DEPOSED; *deposed (optional,
 * caller's) receives the new address. */
int mo_state_depose(mo_state *st, const char *address, char **deposed);

/* Plan-level outputs: object name -> {"value": v, "sensitive": bool}. */
int mo_state_outputs_set(mo_state *st, json_t *outputs);
int mo_state_outputs_get(mo_state *st, json_t **out);

/* Group commit.  Between batch_begin and batch_commit every write joins one
 * transaction (each write still atomic on its own, as a savepoint), made
 * durable at once by batch_commit.  The executor opens a batch around the
 * work of one loop turn and commits it before the loop sends any request:
 * an intent is still on disk before its call, at one fsync per turn
 * instead of two per action. */
int mo_state_batch_begin(mo_state *st);
int mo_state_batch_commit(mo_state *st);

/* The operations journal. */
enum { MO_OP_CREATE = 1, MO_OP_UPDATE = 2, MO_OP_DELETE = 3 };

typedef struct {
	int64_t id;
	char *run_id;
	int kind;        /* MO_OP_* */
	char *token;     /* idempotency token handed to the module (ctx.intent) */
	char *status;    /* pending, done, failed, adopted, absent, tainted */
	char *error;
	mo_resource *res;/* address, module, type, source, props (desired), id (update/delete), deps */
	int64_t started; /* wall clock, seconds */
} mo_op;

void mo_op_free(mo_op *op);
void mo_op_list_free(mo_op **ops, size_t n);

/* Journal an intent and commit it before returning.  res gives the
 * address, module, type, source, desired props, deps and (update/delete)
 * the id.  *op_id receives the journal id. */
int mo_state_op_begin(mo_state *st, const char *run_id, int kind, const char *token,
		      const mo_resource *res, int64_t *op_id);
/* Finish an intent in one transaction: set its status ("done", "failed",
 * "adopted", "absent", "tainted") and error, then apply at most one of:
 * upsert `upsert`, delete the resource at `remove_address`, mark the
 * resource at `taint_address` tainted.  Bumps the serial when a resource
 * changed. */
int mo_state_op_finish(mo_state *st, int64_t op_id, const char *status, const char *error,
		       const mo_resource *upsert, const char *remove_address,
		       const char *taint_address);
/* The token of the address's latest create intent if recovery found that
 * create "absent" (the request may still land): a new create reuses it so
 * the provider's idempotency key dedupes.  *token NULL when none. */
int mo_state_op_unused_token(mo_state *st, const char *address, char **token);
/* Intents still pending (a run crashed), oldest first. */
int mo_state_op_pending(mo_state *st, mo_op ***out, size_t *n);
/* The last `limit` journal entries, newest first (for `state journal`). */
int mo_state_op_recent(mo_state *st, int limit, mo_op ***out, size_t *n);

/* Event log (used by the API server and `--json` replays). */
int mo_state_event_add(mo_state *st, const char *run_id, const char *json_line);

/* The writer lock: one writer per store. */
typedef struct {
	char *id;
	char *owner;     /* user@host */
	char *host;
	long pid;
	char *operation; /* apply, destroy, plan, ... */
	int64_t created; /* wall clock seconds */
	int64_t expires; /* lease expiry, wall clock seconds */
} mo_lock_info;

void mo_lock_info_clear(mo_lock_info *li);

/* Take the lock for `operation` with a lease of lease_s seconds.  A lock
 * whose lease expired, or held by a dead pid on this host, is taken over.
 * MO_ELOCKED when someone else holds it: *holder (optional) is filled in and
 * the error message names the owner, pid, operation and age. */
int mo_state_lock(mo_state *st, const char *operation, int lease_s, mo_lock_info *holder);
/* This handle holds the writer lock (as far as it knows: the journal's
 * writes check it for real, and fail with MO_ELOCKED once it is lost). */
int mo_state_holds_lock(const mo_state *st);
/* Extend the lease of the lock this handle holds. */
int mo_state_lock_renew(mo_state *st, int lease_s);
/* Release the lock this handle holds (no-op if it holds none). */
int mo_state_unlock(mo_state *st);
/* Current lock, if any: MO_ENOTFOUND when unlocked. */
int mo_state_lock_get(mo_state *st, mo_lock_info *out);
/* Force-release the lock with that id (`lock unlock ID`). */
int mo_state_lock_force(mo_state *st, const char *lock_id);

#endif
