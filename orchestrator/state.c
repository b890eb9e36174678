/*
 * state.c - the state store on SQLite: resources, the operations journal,
 * the writer lock, plan outputs, the event log, lineage, serial and the key
 * for sensitive-value hashes.
 *
 * One database file in WAL mode.  The schema is versioned with
 * PRAGMA user_version and upgraded by the `migrations` table below, one
 * transaction per step, so an interrupted upgrade leaves the file at a
 * consistent earlier version.  A step is never edited once released: a new
 * schema change is a new step.
 *
 * Durability: synchronous=FULL.  In WAL mode NORMAL already survives a
 * process crash (a kill -9 in the middle of an apply), but a commit may be
 * lost on power loss, and the journal's promise ("an intent is on disk
 * before the module is called") must hold then too.  FULL costs one fsync of
 * the WAL per commit, two per resource action (op_begin, op_finish):
 * measured on ext4, 0.44 ms per action against 0.19 ms with NORMAL, nothing
 * next to the seconds a cloud API call takes.
 *
 * Every write is one transaction; writes that read first (serial, checks)
 * start with BEGIN IMMEDIATE so two writers never deadlock upgrading a read
 * lock.  JSON is stored as canonical text (compact, keys sorted), so equal
 * values are equal strings and unchanged rewrites are detected in SQL: the
 * serial moves only when something actually changed, which keeps saved
 * plans valid across a no-op refresh.
 *
 * SQLite errors are translated in one place (db_err).  A handle belongs to
 * one thread; several handles (in one or several processes) may share a
 * file, the writer lock deciding who may apply.
 */
#include "state.h"
#include "common.h"
#include "secret.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <sqlite3.h>

struct mo_state {
	sqlite3 *db;
	char *path;
	char *lineage;
	char *lock_id; /* id of the writer lock this handle holds, or NULL */
	int lock_lost; /* it held one, and it was forced or taken over since */
	int schema;
	int batch;     /* inside mo_state_batch_begin: writes nest as savepoints */
	/* prepared statements kept for reuse (prep / unprep): preparing was a
	 * third of the executor's instructions per action */
	struct {
		const char *sql;
		sqlite3_stmt *s;
		int busy;
	} cache[48];
};

#define MO_JSON_FLAGS (JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY)
#define DEPOSED_MARK  "~deposed-"

/*
 * Schema migrations: migrations[i] upgrades version i to version i + 1.
 * Released steps are frozen (tests/unit/test_state.c keeps a copy of step 1
 * to build a version-1 file).
 */
static const char *const migrations[] = {
	/* 1: meta (lineage, serial, secret_key), resources, the operations
	 * journal, the writer lock (at most one row), plan outputs. */
	"CREATE TABLE meta ("
	"  key TEXT PRIMARY KEY,"
	"  value NOT NULL"
	");"
	"CREATE TABLE resources ("
	"  address TEXT PRIMARY KEY,"
	"  module TEXT NOT NULL,"
	"  type TEXT NOT NULL,"
	"  id TEXT,"
	"  source TEXT,"
	"  props TEXT NOT NULL,"
	"  outputs TEXT NOT NULL,"
	"  deps TEXT NOT NULL,"
	"  status INTEGER NOT NULL DEFAULT 0,"
	"  serial INTEGER NOT NULL DEFAULT 0"
	");"
	"CREATE TABLE operations ("
	"  id INTEGER PRIMARY KEY AUTOINCREMENT,"
	"  run_id TEXT,"
	"  kind INTEGER NOT NULL,"
	"  token TEXT,"
	"  status TEXT NOT NULL,"
	"  error TEXT,"
	"  address TEXT NOT NULL,"
	"  module TEXT NOT NULL,"
	"  type TEXT NOT NULL,"
	"  source TEXT,"
	"  props TEXT NOT NULL,"
	"  res_id TEXT,"
	"  deps TEXT NOT NULL,"
	"  started INTEGER NOT NULL,"
	"  finished INTEGER"
	");"
	"CREATE TABLE locks ("
	"  one INTEGER PRIMARY KEY CHECK (one = 1),"
	"  id TEXT NOT NULL,"
	"  owner TEXT NOT NULL,"
	"  host TEXT NOT NULL,"
	"  pid INTEGER NOT NULL,"
	"  operation TEXT NOT NULL,"
	"  created INTEGER NOT NULL,"
	"  expires INTEGER NOT NULL"
	");"
	"CREATE TABLE outputs ("
	"  name TEXT PRIMARY KEY,"
	"  value TEXT NOT NULL,"
	"  sensitive INTEGER NOT NULL DEFAULT 0"
	");",

	/* 2: the event log (ts in Unix milliseconds); pending intents are
	 * looked up by status on every run. */
	"CREATE TABLE events ("
	"  id INTEGER PRIMARY KEY AUTOINCREMENT,"
	"  run_id TEXT,"
	"  ts INTEGER NOT NULL,"
	"  json TEXT NOT NULL"
	");"
	"CREATE INDEX events_run ON events (run_id);"
	"CREATE INDEX operations_status ON operations (status);",
	/* 3: a create looks up the address's latest create intent
	 * (mo_state_op_unused_token): without this index, a scan per create. */
	"CREATE INDEX operations_address ON operations (address, kind, id);",
};

#define RES_COLS "address, module, type, id, source, props, outputs, deps, status, serial"
#define OP_COLS                                                                          \
	"id, run_id, kind, token, status, error, address, module, type, source, props, " \
	"res_id, deps, started"
#define LOCK_COLS "id, owner, host, pid, operation, created, expires"

/* Outcomes mo_state_op_finish accepts. */
static const char *const op_outcomes[] = { "done", "failed", "adopted", "absent", "tainted" };

/* ---- helpers ---------------------------------------------------------- */

/* Free text produced by json_dumps with whichever allocator jansson uses. */
static void json_text_free(char *text)
{
	json_free_t free_fn = NULL;
	json_get_alloc_funcs(NULL, &free_fn);
	if (text && free_fn)
		free_fn(text);
}

/* The one translation of SQLite result codes. */
static int db_err(mo_state *st, int rc)
{
	int code = (rc & 0xff) == SQLITE_NOMEM ? MO_ENOMEM : MO_ESTATE;
	return mo_error_set_native(code, rc, "state %s: %s", st->path,
				   st->db ? sqlite3_errmsg(st->db) : sqlite3_errstr(rc));
}

static int oom(void)
{
	return mo_error_set(MO_ENOMEM, "out of memory");
}

/* Prepare sql, reusing a cached statement for the same text when one is
 * free; release it with unprep(). */
static int prep(mo_state *st, sqlite3_stmt **s, const char *sql)
{
	int rc;
	size_t i, free_slot = MO_ARRAY_SIZE(st->cache);
	for (i = 0; i < MO_ARRAY_SIZE(st->cache); i++) {
		if (!st->cache[i].s) {
			if (free_slot == MO_ARRAY_SIZE(st->cache))
				free_slot = i;
			continue;
		}
		if (!st->cache[i].busy && st->cache[i].sql == sql &&
		    !strcmp(sqlite3_sql(st->cache[i].s), sql)) {
			st->cache[i].busy = 1;
			*s = st->cache[i].s;
			return 0;
		}
	}
	rc = sqlite3_prepare_v2(st->db, sql, -1, s, NULL);
	if (rc != SQLITE_OK)
		return db_err(st, rc);
	if (free_slot < MO_ARRAY_SIZE(st->cache)) {
		st->cache[free_slot].sql = sql;
		st->cache[free_slot].s = *s;
		st->cache[free_slot].busy = 1;
	}
	return 0;
}

/* Done with a statement from prep(): reset a cached one, finalize others. */
static void unprep(mo_state *st, sqlite3_stmt *s)
{
	if (!s)
		return;
	for (size_t i = 0; i < MO_ARRAY_SIZE(st->cache); i++) {
		if (st->cache[i].s == s) {
			sqlite3_reset(s);
			sqlite3_clear_bindings(s);
			st->cache[i].busy = 0;
			return;
		}
	}
	sqlite3_finalize(s);
}

static void cache_clear(mo_state *st)
{
	for (size_t i = 0; i < MO_ARRAY_SIZE(st->cache); i++) {
		sqlite3_finalize(st->cache[i].s);
		st->cache[i].s = NULL;
		st->cache[i].sql = NULL;
		st->cache[i].busy = 0;
	}
}

static int exec_sql(mo_state *st, const char *sql)
{
	int rc = sqlite3_exec(st->db, sql, NULL, NULL, NULL);
	return rc == SQLITE_OK ? 0 : db_err(st, rc);
}

/* Inside a batch every write is a savepoint of the batch's transaction:
 * it stays atomic on its own and becomes durable with the batch. */
static int tx_begin(mo_state *st)
{
	return exec_sql(st, st->batch ? "SAVEPOINT mo_write" : "BEGIN IMMEDIATE");
}

static int tx_commit(mo_state *st)
{
	return exec_sql(st, st->batch ? "RELEASE mo_write" : "COMMIT");
}

/* Roll back if a transaction is open; leaves the current error alone. */
static void tx_rollback(mo_state *st)
{
	if (st->batch)
		sqlite3_exec(st->db, "ROLLBACK TO mo_write; RELEASE mo_write", NULL, NULL, NULL);
	else if (!sqlite3_get_autocommit(st->db))
		sqlite3_exec(st->db, "ROLLBACK", NULL, NULL, NULL);
}

static int run(mo_state *st, const char *sql, const char *fmt, ...);

static int lock_lost_error(mo_state *st)
{
	return mo_error_set(MO_ELOCKED, "state %s: this run's lock is no longer held (it was "
			    "force-unlocked, or taken over after its lease expired): nothing more is "
			    "written",
			    st->path);
}

/* Inside a write transaction (which keeps every other writer out until it
 * ends): fail unless the lock this handle took is still its own.  A handle
 * that never locked writes freely (tests, `state` commands). */
static int lock_check(mo_state *st)
{
	int rc;
	if (st->lock_lost)
		return lock_lost_error(st);
	if (!st->lock_id)
		return 0;
	if ((rc = run(st, "UPDATE locks SET id = id WHERE id = ?", "t", st->lock_id)) < 0)
		return rc;
	if (sqlite3_changes(st->db) == 0) {
		mo_free(st->lock_id);
		st->lock_id = NULL;
		st->lock_lost = 1;
		return lock_lost_error(st);
	}
	return 0;
}

/* tx_begin for the state's writes: outside a batch (which checked when it
 * began) it also checks, inside the transaction, that this handle still
 * holds the lock it took. */
static int tx_begin_write(mo_state *st)
{
	int rc;
	if ((rc = tx_begin(st)) < 0 || st->batch)
		return rc;
	if ((rc = lock_check(st)) < 0)
		tx_rollback(st);
	return rc;
}

int mo_state_batch_begin(mo_state *st)
{
	int rc;
	if (st->batch)
		return mo_error_set(MO_EINVAL, "state: a batch is already open");
	if ((rc = exec_sql(st, "BEGIN IMMEDIATE")) < 0)
		return rc;
	if ((rc = lock_check(st)) < 0) {
		sqlite3_exec(st->db, "ROLLBACK", NULL, NULL, NULL);
		return rc;
	}
	st->batch = 1;
	return 0;
}

int mo_state_holds_lock(const mo_state *st)
{
	return st->lock_id != NULL;
}

int mo_state_batch_commit(mo_state *st)
{
	int rc;
	if (!st->batch)
		return 0;
	st->batch = 0;
	if ((rc = exec_sql(st, "COMMIT")) < 0) {
		sqlite3_exec(st->db, "ROLLBACK", NULL, NULL, NULL);
		return rc;
	}
	return 0;
}

/*
 * Bind parameters 1..n from fmt: 't' const char * (NULL binds NULL),
 * 'd' int, 'I' int64_t, and JSON values as canonical text: 'o' an object
 * (NULL binds "{}"), 'a' an array (NULL binds "[]"), 'v' any value (NULL
 * binds "null").
 */
static int bind_va(mo_state *st, sqlite3_stmt *s, const char *fmt, va_list ap)
{
	int rc = SQLITE_OK, err = 0, i = 1;

	for (const char *f = fmt; *f && !err; f++, i++) {
		switch (*f) {
		case 't':
			rc = sqlite3_bind_text(s, i, va_arg(ap, const char *), -1,
					       SQLITE_TRANSIENT);
			break;
		case 'd':
			rc = sqlite3_bind_int(s, i, va_arg(ap, int));
			break;
		case 'I':
			rc = sqlite3_bind_int64(s, i, va_arg(ap, int64_t));
			break;
		case 'o':
		case 'a':
		case 'v': {
			const json_t *v = va_arg(ap, const json_t *);
			const char *dflt = *f == 'o' ? "{}" : *f == 'a' ? "[]" : "null";
			char *text = v ? json_dumps(v, MO_JSON_FLAGS) : NULL;
			if (v && !text) {
				err = mo_error_set(MO_ENOMEM, "out of memory encoding JSON");
				break;
			}
			rc = sqlite3_bind_text(s, i, text ? text : dflt, -1, SQLITE_TRANSIENT);
			json_text_free(text);
			break;
		}
		default:
			assert(!"bad bind format");
			rc = SQLITE_MISUSE;
		}
		if (!err && rc != SQLITE_OK)
			err = db_err(st, rc);
	}
	return err;
}

static int bindv(mo_state *st, sqlite3_stmt *s, const char *fmt, ...)
{
	va_list ap;
	int rc;

	va_start(ap, fmt);
	rc = bind_va(st, s, fmt, ap);
	va_end(ap);
	return rc;
}

/* Step a statement whose rows, if any, are not wanted. */
static int step_done(mo_state *st, sqlite3_stmt *s)
{
	int rc = sqlite3_step(s);
	return rc == SQLITE_DONE || rc == SQLITE_ROW ? 0 : db_err(st, rc);
}

/* Prepare, bind (as bindv) and run one statement, ignoring result rows. */
static int run(mo_state *st, const char *sql, const char *fmt, ...)
{
	sqlite3_stmt *s = NULL;
	va_list ap;
	int rc;

	if ((rc = prep(st, &s, sql)) < 0)
		return rc;
	va_start(ap, fmt);
	rc = bind_va(st, s, fmt, ap);
	va_end(ap);
	if (rc == 0)
		rc = step_done(st, s);
	unprep(st, s);
	return rc;
}

/* *out = copy of text column i, NULL for SQL NULL. */
static int col_str(sqlite3_stmt *s, int i, char **out)
{
	const char *t;
	*out = NULL;
	if (sqlite3_column_type(s, i) == SQLITE_NULL)
		return 0;
	t = (const char *)sqlite3_column_text(s, i);
	if (!t || !(*out = mo_strndup(t, (size_t)sqlite3_column_bytes(s, i))))
		return oom();
	return 0;
}

/* *out = new reference parsed from JSON text column i. */
static int col_json(mo_state *st, sqlite3_stmt *s, int i, json_t **out)
{
	const char *t = (const char *)sqlite3_column_text(s, i);
	json_error_t e;

	*out = NULL;
	if (!t) {
		if (sqlite3_column_type(s, i) != SQLITE_NULL)
			return oom();
		return mo_error_set(MO_ESTATE, "state %s: missing JSON in column %s", st->path,
				    sqlite3_column_name(s, i));
	}
	if (!(*out = json_loads(t, JSON_DECODE_ANY, &e))) {
		if (json_error_code(&e) == json_error_out_of_memory)
			return oom();
		return mo_error_set(MO_ESTATE, "state %s: corrupt JSON in column %s: %s", st->path,
				    sqlite3_column_name(s, i), e.text);
	}
	return 0;
}

static int meta_text(mo_state *st, const char *key, char **out)
{
	sqlite3_stmt *s = NULL;
	int rc, step;

	if ((rc = prep(st, &s, "SELECT value FROM meta WHERE key = ?")) < 0 ||
	    (rc = bindv(st, s, "t", key)) < 0)
		goto done;
	step = sqlite3_step(s);
	if (step == SQLITE_ROW)
		rc = col_str(s, 0, out);
	else if (step == SQLITE_DONE)
		rc = mo_error_set(MO_ENOTFOUND, "state %s: no %s in meta", st->path, key);
	else
		rc = db_err(st, step);
done:
	unprep(st, s);
	return rc;
}

static int serial_get(mo_state *st, int64_t *out)
{
	sqlite3_stmt *s = NULL;
	int rc, step;

	if ((rc = prep(st, &s, "SELECT value FROM meta WHERE key = 'serial'")) < 0)
		return rc;
	step = sqlite3_step(s);
	if (step == SQLITE_ROW)
		*out = sqlite3_column_int64(s, 0);
	else if (step == SQLITE_DONE)
		rc = mo_error_set(MO_ESTATE, "state %s: no serial in meta", st->path);
	else
		rc = db_err(st, step);
	unprep(st, s);
	return rc;
}

static int serial_set(mo_state *st, int64_t serial)
{
	return run(st, "UPDATE meta SET value = ? WHERE key = 'serial'", "I", serial);
}

/* 1 if a resource lives at address, 0 if not, or an error. */
static int res_exists(mo_state *st, const char *address)
{
	sqlite3_stmt *s = NULL;
	int rc, step;

	if ((rc = prep(st, &s, "SELECT 1 FROM resources WHERE address = ?")) < 0 ||
	    (rc = bindv(st, s, "t", address)) < 0)
		goto done;
	step = sqlite3_step(s);
	rc = step == SQLITE_ROW ? 1 : step == SQLITE_DONE ? 0 : db_err(st, step);
done:
	unprep(st, s);
	return rc;
}

static int res_check(const mo_resource *r)
{
	if (!r || !r->address || !*r->address)
		return mo_error_set(MO_EINVAL, "state: resource without an address");
	if (!r->module || !r->type)
		return mo_error_set(MO_EINVAL, "state: resource %s: module and type are required",
				    r->address);
	if (r->props && !json_is_object(r->props))
		return mo_error_set(MO_EINVAL, "state: resource %s: props must be an object",
				    r->address);
	if (r->outputs && !json_is_object(r->outputs))
		return mo_error_set(MO_EINVAL, "state: resource %s: outputs must be an object",
				    r->address);
	if (r->deps && !json_is_array(r->deps))
		return mo_error_set(MO_EINVAL, "state: resource %s: deps must be an array",
				    r->address);
	if (r->status < MO_RES_OK || r->status > MO_RES_DEPOSED)
		return mo_error_set(MO_EINVAL, "state: resource %s: bad status %d", r->address,
				    r->status);
	return 0;
}

/*
 * Insert or replace r (inside the caller's transaction) stamped with serial
 * `next`; the row is rewritten only when a column differs.  *changed is set
 * to 1 when it was.
 */
static int res_write(mo_state *st, const mo_resource *r, int64_t next, int *changed)
{
	static const char sql[] =
		"INSERT INTO resources (" RES_COLS
		") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"
		" ON CONFLICT (address) DO UPDATE SET module = excluded.module,"
		" type = excluded.type, id = excluded.id, source = excluded.source,"
		" props = excluded.props, outputs = excluded.outputs, deps = excluded.deps,"
		" status = excluded.status, serial = excluded.serial"
		" WHERE (module, type, id, source, props, outputs, deps, status) IS NOT"
		" (excluded.module, excluded.type, excluded.id, excluded.source, excluded.props,"
		" excluded.outputs, excluded.deps, excluded.status)";
	sqlite3_stmt *s = NULL;
	int rc;

	if ((rc = prep(st, &s, sql)) < 0 ||
	    (rc = bindv(st, s, "tttttooadI", r->address, r->module, r->type, r->id, r->source,
			r->props, r->outputs, r->deps, r->status, next)) < 0 ||
	    (rc = step_done(st, s)) < 0)
		goto done;
	*changed = sqlite3_changes(st->db) > 0;
done:
	unprep(st, s);
	return rc;
}

static int res_from_row(mo_state *st, sqlite3_stmt *s, mo_resource **out)
{
	mo_resource *r = mo_calloc(1, sizeof(*r));
	int rc;

	if (!r)
		return oom();
	if ((rc = col_str(s, 0, &r->address)) < 0 || (rc = col_str(s, 1, &r->module)) < 0 ||
	    (rc = col_str(s, 2, &r->type)) < 0 || (rc = col_str(s, 3, &r->id)) < 0 ||
	    (rc = col_str(s, 4, &r->source)) < 0 || (rc = col_json(st, s, 5, &r->props)) < 0 ||
	    (rc = col_json(st, s, 6, &r->outputs)) < 0 || (rc = col_json(st, s, 7, &r->deps)) < 0) {
		mo_resource_free(r);
		return rc;
	}
	r->status = sqlite3_column_int(s, 8);
	r->serial = sqlite3_column_int64(s, 9);
	*out = r;
	return 0;
}

/* ---- resources: ownership helpers --------------------------------------- */

void mo_resource_free(mo_resource *r)
{
	if (!r)
		return;
	mo_free(r->address);
	mo_free(r->module);
	mo_free(r->type);
	mo_free(r->id);
	mo_free(r->source);
	json_decref(r->props);
	json_decref(r->outputs);
	json_decref(r->deps);
	mo_free(r);
}

void mo_resource_list_free(mo_resource **list, size_t n)
{
	if (!list)
		return;
	for (size_t i = 0; i < n; i++)
		mo_resource_free(list[i]);
	mo_free(list);
}

static int dup_str(char **dst, const char *src)
{
	*dst = NULL;
	if (src && !(*dst = mo_strdup(src)))
		return oom();
	return 0;
}

static int dup_json(json_t **dst, const json_t *src)
{
	*dst = NULL;
	if (src && !(*dst = json_deep_copy(src)))
		return oom();
	return 0;
}

int mo_resource_dup(mo_resource **out, const mo_resource *r)
{
	mo_resource *d;
	int rc;

	if (!r)
		return mo_error_set(MO_EINVAL, "state: no resource to copy");
	if (!(d = mo_calloc(1, sizeof(*d))))
		return oom();
	if ((rc = dup_str(&d->address, r->address)) < 0 ||
	    (rc = dup_str(&d->module, r->module)) < 0 || (rc = dup_str(&d->type, r->type)) < 0 ||
	    (rc = dup_str(&d->id, r->id)) < 0 || (rc = dup_str(&d->source, r->source)) < 0 ||
	    (rc = dup_json(&d->props, r->props)) < 0 ||
	    (rc = dup_json(&d->outputs, r->outputs)) < 0 ||
	    (rc = dup_json(&d->deps, r->deps)) < 0) {
		mo_resource_free(d);
		return rc;
	}
	d->status = r->status;
	d->serial = r->serial;
	*out = d;
	return 0;
}

/* ---- open, migrate, close ----------------------------------------------- */

int mo_state_schema_latest(void)
{
	return (int)MO_ARRAY_SIZE(migrations);
}

static int schema_read(mo_state *st, int *version)
{
	sqlite3_stmt *s = NULL;
	int rc, step;

	if ((rc = prep(st, &s, "PRAGMA user_version")) < 0)
		return rc;
	step = sqlite3_step(s);
	if (step == SQLITE_ROW)
		*version = sqlite3_column_int(s, 0);
	else
		rc = db_err(st, step);
	unprep(st, s);
	return rc;
}

static int schema_newer(mo_state *st, int version)
{
	return mo_error_set(MO_ESTATE,
			    "state %s: schema version %d is newer than this mecorch %s supports "
			    "(%d); upgrade mecorch to use this state",
			    st->path, version, MO_VERSION, mo_state_schema_latest());
}

/* A version-0 file must be empty: refuse to add tables to a foreign database. */
static int check_foreign(mo_state *st)
{
	sqlite3_stmt *s = NULL;
	int rc, step;

	if ((rc = prep(st, &s, "SELECT name FROM sqlite_master LIMIT 1")) < 0)
		return rc;
	step = sqlite3_step(s);
	if (step == SQLITE_ROW)
		rc = mo_error_set(MO_ESTATE,
				  "state %s: not a mecorch state (it holds table '%s' but no "
				  "schema version)",
				  st->path, (const char *)sqlite3_column_text(s, 0));
	else if (step != SQLITE_DONE)
		rc = db_err(st, step);
	unprep(st, s);
	return rc;
}

/* Bring the schema to the latest version, one transaction per step. */
static int migrate(mo_state *st)
{
	int latest = mo_state_schema_latest(), v, rc;
	char sql[64];

	if ((rc = schema_read(st, &v)) < 0)
		return rc;
	while (v < latest) {
		if ((rc = tx_begin(st)) < 0)
			return rc;
		/* re-read under the write lock: another process may have migrated */
		if ((rc = schema_read(st, &v)) < 0)
			goto fail;
		if (v >= latest) {
			tx_rollback(st);
			break;
		}
		if (v == 0 && (rc = check_foreign(st)) < 0)
			goto fail;
		if ((rc = exec_sql(st, migrations[v])) < 0) {
			mo_error_prefix("migrating to schema version %d", v + 1);
			goto fail;
		}
		snprintf(sql, sizeof(sql), "PRAGMA user_version = %d", v + 1);
		if ((rc = exec_sql(st, sql)) < 0 || (rc = tx_commit(st)) < 0)
			goto fail;
		v++;
	}
	if (v > latest)
		return schema_newer(st, v);
	st->schema = v;
	return 0;
fail:
	tx_rollback(st);
	return rc;
}

/* Lineage, serial and the secret key, created once per store. */
static int meta_init(mo_state *st)
{
	unsigned char raw[16];
	char lineage[40], key[65];
	sqlite3_stmt *s = NULL;
	int rc, step, have = 0;

	if ((rc = prep(st, &s,
		       "SELECT count(*) FROM meta WHERE key IN ('lineage', 'serial', "
		       "'secret_key')")) < 0)
		return rc;
	step = sqlite3_step(s);
	if (step == SQLITE_ROW)
		have = sqlite3_column_int(s, 0);
	else
		rc = db_err(st, step);
	unprep(st, s);
	if (rc < 0)
		return rc;
	if (have == 3)
		return meta_text(st, "lineage", &st->lineage);

	/* a random (version 4) UUID names the lineage */
	if ((rc = mo_random(raw, sizeof(raw))) < 0 || (rc = mo_random_hex(key, 32)) < 0)
		return rc;
	raw[6] = (unsigned char)((raw[6] & 0x0f) | 0x40);
	raw[8] = (unsigned char)((raw[8] & 0x3f) | 0x80);
	snprintf(lineage, sizeof(lineage),
		 "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", raw[0],
		 raw[1], raw[2], raw[3], raw[4], raw[5], raw[6], raw[7], raw[8], raw[9], raw[10],
		 raw[11], raw[12], raw[13], raw[14], raw[15]);
	/* OR IGNORE: a concurrent first open may have won the race */
	if ((rc = tx_begin(st)) < 0 ||
	    (rc = run(st,
		      "INSERT OR IGNORE INTO meta (key, value)"
		      " VALUES ('lineage', ?), ('serial', ?), ('secret_key', ?)",
		      "tIt", lineage, (int64_t)0, key)) < 0 ||
	    (rc = tx_commit(st)) < 0)
		tx_rollback(st);
	OPENSSL_cleanse(key, sizeof(key));
	if (rc < 0)
		return rc;
	return meta_text(st, "lineage", &st->lineage);
}

/*
 * Create a missing state file readable by its owner only before SQLite
 * opens it: it holds the key of the sensitive-value hashes.  SQLite gives
 * the -wal and -shm files the mode of the database file.
 */
static int precreate(const char *path)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd >= 0)
		return close(fd), 0;
	if (errno == EEXIST)
		return 0;
	return mo_error_set_native(MO_EIO, errno, "state %s: %s", path, strerror(errno));
}

int mo_state_open(mo_state **out, const char *path)
{
	mo_state *st = NULL;
	int rc, src;

	if (!out || !path || !*path)
		return mo_error_set(MO_EINVAL, "state: no path given");
	if (!(st = mo_calloc(1, sizeof(*st))) || !(st->path = mo_strdup(path))) {
		rc = oom();
		goto fail;
	}
	if (strcmp(path, ":memory:") && (rc = precreate(path)) < 0)
		goto fail;
	src = sqlite3_open_v2(path, &st->db,
			      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
			      NULL);
	if (src != SQLITE_OK) {
		rc = db_err(st, src);
		goto fail;
	}
	sqlite3_busy_timeout(st->db, 5000);
	if ((rc = exec_sql(st, "PRAGMA foreign_keys = ON")) < 0 ||
	    (rc = exec_sql(st, "PRAGMA journal_mode = WAL")) < 0 ||
	    (rc = exec_sql(st, "PRAGMA synchronous = FULL")) < 0 || (rc = migrate(st)) < 0 ||
	    (rc = meta_init(st)) < 0)
		goto fail;
	*out = st;
	return 0;
fail:
	mo_state_close(st);
	return rc;
}

/* Closing releases the writer lock this handle holds (best effort). */
void mo_state_close(mo_state *st)
{
	if (!st)
		return;
	if (st->db) {
		if (st->lock_id)
			run(st, "DELETE FROM locks WHERE id = ?", "t", st->lock_id);
		tx_rollback(st);
		cache_clear(st);
		sqlite3_close_v2(st->db);
	}
	mo_free(st->lock_id);
	mo_free(st->lineage);
	mo_free(st->path);
	mo_free(st);
}

int mo_state_schema_version(mo_state *st)
{
	return st->schema;
}

const char *mo_state_lineage(mo_state *st)
{
	return st->lineage;
}

/* The current serial, or -1 with the error set. */
int64_t mo_state_serial(mo_state *st)
{
	int64_t serial = -1;
	if (serial_get(st, &serial) < 0)
		return -1;
	return serial;
}

/* An empty MECORCH_STATE_KEY counts as unset (a well-known key protects nothing). */
int mo_state_secret_key(mo_state *st, unsigned char key[32])
{
	const char *env = getenv("MECORCH_STATE_KEY");
	char *hex = NULL;
	int rc;

	if (env && *env) {
		SHA256((const unsigned char *)env, strlen(env), key);
		return 0;
	}
	if ((rc = meta_text(st, "secret_key", &hex)) < 0)
		return rc;
	if (strlen(hex) != 64) {
		rc = mo_error_set(MO_ESTATE, "state %s: malformed secret key", st->path);
		goto done;
	}
	for (int i = 0; i < 32; i++) {
		int hi = mo_hex_digit(hex[2 * i]), lo = mo_hex_digit(hex[2 * i + 1]);
		if (hi < 0 || lo < 0) {
			rc = mo_error_set(MO_ESTATE, "state %s: malformed secret key", st->path);
			OPENSSL_cleanse(key, 32);
			goto done;
		}
		key[i] = (unsigned char)(hi << 4 | lo);
	}
done:
	OPENSSL_cleanse(hex, strlen(hex));
	mo_free(hex);
	return rc;
}

/* ---- resources ------------------------------------------------------------ */

int mo_state_list(mo_state *st, mo_resource ***out, size_t *n)
{
	sqlite3_stmt *s = NULL;
	mo_resource **list = NULL;
	size_t len = 0, cap = 0;
	int rc, step;

	if ((rc = prep(st, &s, "SELECT " RES_COLS " FROM resources ORDER BY address")) < 0)
		return rc;
	while ((step = sqlite3_step(s)) == SQLITE_ROW) {
		if (len == cap) {
			size_t ncap = cap ? 2 * cap : 16;
			mo_resource **p = mo_realloc(list, ncap * sizeof(*p));
			if (!p) {
				rc = oom();
				goto done;
			}
			list = p;
			cap = ncap;
		}
		if ((rc = res_from_row(st, s, &list[len])) < 0)
			goto done;
		len++;
	}
	if (step != SQLITE_DONE) {
		rc = db_err(st, step);
		goto done;
	}
	*out = list;
	*n = len;
	list = NULL;
	len = 0;
done:
	unprep(st, s);
	mo_resource_list_free(list, len);
	return rc;
}

int mo_state_get(mo_state *st, const char *address, mo_resource **out)
{
	sqlite3_stmt *s = NULL;
	int rc, step;

	if (!address)
		return mo_error_set(MO_EINVAL, "state: no address given");
	if ((rc = prep(st, &s, "SELECT " RES_COLS " FROM resources WHERE address = ?")) < 0 ||
	    (rc = bindv(st, s, "t", address)) < 0)
		goto done;
	step = sqlite3_step(s);
	if (step == SQLITE_ROW)
		rc = res_from_row(st, s, out);
	else if (step == SQLITE_DONE)
		rc = mo_error_set(MO_ENOTFOUND, "no resource %s in the state", address);
	else
		rc = db_err(st, step);
done:
	unprep(st, s);
	return rc;
}

/*
 * Insert or replace r.  The serial moves (and r's row takes the new serial)
 * only if r differs from what is stored; r->serial is ignored.  A NULL
 * props/outputs is stored as {}, a NULL deps as [].
 */
int mo_state_put(mo_state *st, const mo_resource *r)
{
	int64_t serial;
	int rc, changed = 0;

	if ((rc = res_check(r)) < 0 || (rc = tx_begin_write(st)) < 0)
		return rc;
	if ((rc = serial_get(st, &serial)) < 0 ||
	    (rc = res_write(st, r, serial + 1, &changed)) < 0 ||
	    (changed && (rc = serial_set(st, serial + 1)) < 0) || (rc = tx_commit(st)) < 0)
		tx_rollback(st);
	return rc;
}

int mo_state_rm(mo_state *st, const char *address)
{
	int64_t serial;
	int rc;

	if (!address)
		return mo_error_set(MO_EINVAL, "state: no address given");
	if ((rc = tx_begin_write(st)) < 0)
		return rc;
	if ((rc = run(st, "DELETE FROM resources WHERE address = ?", "t", address)) < 0)
		goto done;
	if (sqlite3_changes(st->db) == 0) {
		rc = mo_error_set(MO_ENOTFOUND, "no resource %s in the state", address);
		goto done;
	}
	if ((rc = serial_get(st, &serial)) < 0 || (rc = serial_set(st, serial + 1)) < 0)
		goto done;
	rc = tx_commit(st);
done:
	if (rc < 0)
		tx_rollback(st);
	return rc;
}

/*
 * Point every deps array that names `from` at `to` instead, so destroy
 * order survives a `state mv`.  Rows are collected first and rewritten
 * after the scan.
 */
static int deps_rename(mo_state *st, const char *from, const char *to, int64_t serial)
{
	sqlite3_stmt *s = NULL;
	json_t *quoted = NULL, *todo = NULL, *deps = NULL, *d;
	const char *address;
	char *needle = NULL;
	int rc, step;
	size_t i;

	if (!(quoted = json_string(from)) || !(needle = json_dumps(quoted, MO_JSON_FLAGS)) ||
	    !(todo = json_object())) {
		rc = oom();
		goto done;
	}
	rc = prep(st, &s, "SELECT address, deps FROM resources WHERE instr(deps, ?) > 0");
	if (rc < 0 || (rc = bindv(st, s, "t", needle)) < 0)
		goto done;
	while ((step = sqlite3_step(s)) == SQLITE_ROW) {
		if ((rc = col_json(st, s, 1, &deps)) < 0)
			goto done;
		json_array_foreach(deps, i, d) {
			if (json_is_string(d) && !strcmp(json_string_value(d), from) &&
			    json_array_set_new(deps, i, json_string(to)) < 0) {
				rc = oom();
				goto done;
			}
		}
		/* set_new takes the reference, on failure too */
		rc = json_object_set_new(todo, (const char *)sqlite3_column_text(s, 0), deps);
		deps = NULL;
		if (rc < 0) {
			rc = oom();
			goto done;
		}
	}
	if (step != SQLITE_DONE) {
		rc = db_err(st, step);
		goto done;
	}
	json_object_foreach(todo, address, d) {
		if ((rc = run(st, "UPDATE resources SET deps = ?, serial = ? WHERE address = ?",
			      "aIt", d, serial, address)) < 0)
			goto done;
	}
done:
	unprep(st, s);
	json_decref(deps);
	json_decref(todo);
	json_decref(quoted);
	json_text_free(needle);
	return rc;
}

/* Rename a resource; other resources' deps follow the new address. */
int mo_state_mv(mo_state *st, const char *from, const char *to)
{
	int64_t serial;
	int rc;

	if (!from || !to || !*to)
		return mo_error_set(MO_EINVAL, "state: mv needs a source and a destination");
	if ((rc = tx_begin_write(st)) < 0)
		return rc;
	if ((rc = res_exists(st, from)) < 0)
		goto done;
	if (rc == 0) {
		rc = mo_error_set(MO_ENOTFOUND, "no resource %s in the state", from);
		goto done;
	}
	if ((rc = res_exists(st, to)) < 0)
		goto done;
	if (rc == 1) {
		rc = mo_error_set(MO_EINVAL, "cannot move %s to %s: %s already exists", from, to,
				  to);
		goto done;
	}
	if ((rc = serial_get(st, &serial)) < 0)
		goto done;
	serial++;
	if ((rc = run(st, "UPDATE resources SET address = ?, serial = ? WHERE address = ?", "tIt",
		      to, serial, from)) < 0 ||
	    (rc = deps_rename(st, from, to, serial)) < 0 || (rc = serial_set(st, serial)) < 0)
		goto done;
	rc = tx_commit(st);
done:
	if (rc < 0)
		tx_rollback(st);
	return rc;
}

int mo_state_set_status(mo_state *st, const char *address, int status)
{
	int64_t serial;
	int rc;

	if (!address)
		return mo_error_set(MO_EINVAL, "state: no address given");
	if (status < MO_RES_OK || status > MO_RES_DEPOSED)
		return mo_error_set(MO_EINVAL, "state: bad resource status %d", status);
	if ((rc = tx_begin_write(st)) < 0)
		return rc;
	if ((rc = serial_get(st, &serial)) < 0 ||
	    (rc = run(st,
		      "UPDATE resources SET status = ?, serial = ?"
		      " WHERE address = ? AND status != ?",
		      "dItd", status, serial + 1, address, status)) < 0)
		goto done;
	if (sqlite3_changes(st->db) > 0) {
		if ((rc = serial_set(st, serial + 1)) < 0)
			goto done;
	} else {
		if ((rc = res_exists(st, address)) < 0)
			goto done;
		if (rc == 0) {
			rc = mo_error_set(MO_ENOTFOUND, "no resource %s in the state", address);
			goto done;
		}
	}
	rc = tx_commit(st);
done:
	if (rc < 0)
		tx_rollback(st);
	return rc;
}

/* n is the smallest number >= 1 not in use for that address. */
int mo_state_depose(mo_state *st, const char *address, char **deposed)
{
	char *name = NULL;
	int64_t serial;
	int rc;

	if (!address)
		return mo_error_set(MO_EINVAL, "state: no address given");
	if (strstr(address, DEPOSED_MARK))
		return mo_error_set(MO_EINVAL, "state: %s is already deposed", address);
	if ((rc = tx_begin_write(st)) < 0)
		return rc;
	if ((rc = res_exists(st, address)) < 0)
		goto done;
	if (rc == 0) {
		rc = mo_error_set(MO_ENOTFOUND, "no resource %s in the state", address);
		goto done;
	}
	for (int n = 1;; n++) {
		mo_free(name);
		if (!(name = mo_sprintf("%s" DEPOSED_MARK "%d", address, n))) {
			rc = oom();
			goto done;
		}
		if ((rc = res_exists(st, name)) < 0)
			goto done;
		if (rc == 0)
			break;
	}
	if ((rc = serial_get(st, &serial)) < 0 ||
	    (rc = run(st,
		      "UPDATE resources SET address = ?, status = ?, serial = ? WHERE address = ?",
		      "tdIt", name, MO_RES_DEPOSED, serial + 1, address)) < 0 ||
	    (rc = serial_set(st, serial + 1)) < 0 || (rc = tx_commit(st)) < 0)
		goto done;
	if (deposed) {
		*deposed = name;
		name = NULL;
	}
done:
	if (rc < 0)
		tx_rollback(st);
	mo_free(name);
	return rc;
}

/* ---- outputs -------------------------------------------------------------- */

static int outputs_read(mo_state *st, json_t **out)
{
	sqlite3_stmt *s = NULL;
	json_t *obj = json_object(), *value = NULL, *entry;
	int rc, step;

	if (!obj)
		return oom();
	if ((rc = prep(st, &s, "SELECT name, value, sensitive FROM outputs ORDER BY name")) < 0)
		goto done;
	while ((step = sqlite3_step(s)) == SQLITE_ROW) {
		if ((rc = col_json(st, s, 1, &value)) < 0)
			goto done;
		entry = json_pack("{s:o,s:b}", "value", value, "sensitive",
				  sqlite3_column_int(s, 2));
		value = NULL; /* json_pack "o" steals it, even on failure */
		if (!entry ||
		    json_object_set_new(obj, (const char *)sqlite3_column_text(s, 0), entry) < 0) {
			rc = oom();
			goto done;
		}
	}
	if (step != SQLITE_DONE) {
		rc = db_err(st, step);
		goto done;
	}
	*out = obj;
	obj = NULL;
done:
	unprep(st, s);
	json_decref(obj);
	return rc;
}

/* Validate outputs and bring each entry to {"value": v, "sensitive": bool}. */
static int outputs_normalize(json_t *outputs, json_t **out)
{
	json_t *norm = json_object(), *entry, *value, *sens;
	const char *name;
	int rc = 0;

	if (!norm)
		return oom();
	if (outputs && !json_is_object(outputs)) {
		rc = mo_error_set(MO_EINVAL, "state: outputs must be an object");
		goto done;
	}
	json_object_foreach(outputs, name, entry) {
		value = json_object_get(entry, "value");
		sens = json_object_get(entry, "sensitive");
		if (!json_is_object(entry) || !value) {
			rc = mo_error_set(
				MO_EINVAL,
				"state: output %s: expected {value = ..., sensitive = ...}", name);
			goto done;
		}
		if (sens && !json_is_boolean(sens)) {
			rc = mo_error_set(MO_EINVAL,
					  "state: output %s: sensitive must be a boolean", name);
			goto done;
		}
		if (json_is_true(sens) && !json_is_null(value) && !mo_secret_is_hash(value)) {
			rc = mo_error_set(
				MO_EINVAL,
				"state: output %s is sensitive but its value is not masked", name);
			goto done;
		}
		if (json_object_set_new(norm, name,
					json_pack("{s:O,s:b}", "value", value, "sensitive",
						  json_is_true(sens))) < 0) {
			rc = oom();
			goto done;
		}
	}
	*out = norm;
	norm = NULL;
done:
	json_decref(norm);
	return rc;
}

/*
 * Replace all outputs (NULL clears them).  A sensitive output's value must
 * already be masked (secret.h) or null.  The serial moves only if the set
 * differs from the stored one.
 */
int mo_state_outputs_set(mo_state *st, json_t *outputs)
{
	sqlite3_stmt *s = NULL;
	json_t *norm = NULL, *cur = NULL, *entry;
	const char *name;
	int64_t serial;
	int rc;

	if ((rc = outputs_normalize(outputs, &norm)) < 0)
		return rc;
	if ((rc = tx_begin_write(st)) < 0)
		goto done;
	if ((rc = outputs_read(st, &cur)) < 0)
		goto done;
	if (json_equal(cur, norm)) {
		rc = tx_commit(st);
		goto done;
	}
	if ((rc = run(st, "DELETE FROM outputs", "")) < 0)
		goto done;
	rc = prep(st, &s, "INSERT INTO outputs (name, value, sensitive) VALUES (?, ?, ?)");
	if (rc < 0)
		goto done;
	json_object_foreach(norm, name, entry) {
		sqlite3_reset(s);
		if ((rc = bindv(st, s, "tvd", name, json_object_get(entry, "value"),
				json_is_true(json_object_get(entry, "sensitive")))) < 0 ||
		    (rc = step_done(st, s)) < 0)
			goto done;
	}
	if ((rc = serial_get(st, &serial)) < 0 || (rc = serial_set(st, serial + 1)) < 0)
		goto done;
	rc = tx_commit(st);
done:
	unprep(st, s);
	if (rc < 0)
		tx_rollback(st);
	json_decref(norm);
	json_decref(cur);
	return rc;
}

int mo_state_outputs_get(mo_state *st, json_t **out)
{
	return outputs_read(st, out);
}

/* ---- the operations journal --------------------------------------------------- */

void mo_op_free(mo_op *op)
{
	if (!op)
		return;
	mo_free(op->run_id);
	mo_free(op->token);
	mo_free(op->status);
	mo_free(op->error);
	mo_resource_free(op->res);
	mo_free(op);
}

void mo_op_list_free(mo_op **ops, size_t n)
{
	if (!ops)
		return;
	for (size_t i = 0; i < n; i++)
		mo_op_free(ops[i]);
	mo_free(ops);
}

static int op_from_row(mo_state *st, sqlite3_stmt *s, mo_op **out)
{
	mo_op *op = mo_calloc(1, sizeof(*op));
	mo_resource *r;
	int rc;

	if (!op || !(op->res = r = mo_calloc(1, sizeof(*r)))) {
		mo_free(op);
		return oom();
	}
	op->id = sqlite3_column_int64(s, 0);
	op->kind = sqlite3_column_int(s, 2);
	op->started = sqlite3_column_int64(s, 13);
	if ((rc = col_str(s, 1, &op->run_id)) < 0 || (rc = col_str(s, 3, &op->token)) < 0 ||
	    (rc = col_str(s, 4, &op->status)) < 0 || (rc = col_str(s, 5, &op->error)) < 0 ||
	    (rc = col_str(s, 6, &r->address)) < 0 || (rc = col_str(s, 7, &r->module)) < 0 ||
	    (rc = col_str(s, 8, &r->type)) < 0 || (rc = col_str(s, 9, &r->source)) < 0 ||
	    (rc = col_json(st, s, 10, &r->props)) < 0 || (rc = col_str(s, 11, &r->id)) < 0 ||
	    (rc = col_json(st, s, 12, &r->deps)) < 0)
		goto fail;
	if (!(r->outputs = json_object())) {
		rc = oom();
		goto fail;
	}
	*out = op;
	return 0;
fail:
	mo_op_free(op);
	return rc;
}

static int op_query(mo_state *st, const char *sql, int limit, mo_op ***out, size_t *n)
{
	sqlite3_stmt *s = NULL;
	mo_op **list = NULL;
	size_t len = 0, cap = 0;
	int rc, step;

	if ((rc = prep(st, &s, sql)) < 0)
		return rc;
	if (sqlite3_bind_parameter_count(s) > 0 && (rc = bindv(st, s, "d", limit)) < 0)
		goto done;
	while ((step = sqlite3_step(s)) == SQLITE_ROW) {
		if (len == cap) {
			size_t ncap = cap ? 2 * cap : 16;
			mo_op **p = mo_realloc(list, ncap * sizeof(*p));
			if (!p) {
				rc = oom();
				goto done;
			}
			list = p;
			cap = ncap;
		}
		if ((rc = op_from_row(st, s, &list[len])) < 0)
			goto done;
		len++;
	}
	if (step != SQLITE_DONE) {
		rc = db_err(st, step);
		goto done;
	}
	*out = list;
	*n = len;
	list = NULL;
	len = 0;
done:
	unprep(st, s);
	mo_op_list_free(list, len);
	return rc;
}

/*
 * The intent is committed (and, with synchronous=FULL, on disk) when this
 * returns 0.  res->address, module and type are required.
 */
int mo_state_op_begin(mo_state *st, const char *run_id, int kind, const char *token,
		      const mo_resource *res, int64_t *op_id)
{
	static const char sql[] = "INSERT INTO operations (run_id, kind, token, status, address, "
				  "module, type, source,"
				  " props, res_id, deps, started) VALUES (?, ?, ?, 'pending', ?, "
				  "?, ?, ?, ?, ?, ?, ?)";
	sqlite3_stmt *s = NULL;
	int rc;

	if (kind < MO_OP_CREATE || kind > MO_OP_DELETE)
		return mo_error_set(MO_EINVAL, "state: bad operation kind %d", kind);
	if ((rc = res_check(res)) < 0)
		return rc;
	if ((rc = tx_begin_write(st)) < 0)
		return rc;
	if ((rc = prep(st, &s, sql)) < 0 ||
	    (rc = bindv(st, s, "tdtttttotaI", run_id, kind, token, res->address, res->module,
			res->type, res->source, res->props, res->id, res->deps, mo_wall_s())) < 0 ||
	    (rc = step_done(st, s)) < 0)
		goto done;
	if (op_id)
		*op_id = sqlite3_last_insert_rowid(st->db);
	rc = tx_commit(st);
done:
	unprep(st, s);
	if (rc < 0)
		tx_rollback(st);
	return rc;
}

/*
 * Only a pending intent can be finished (MO_ENOTFOUND for an unknown id,
 * MO_EINVAL if it was finished already).  Removing or tainting an address
 * that holds no resource is not an error: there is nothing to change.
 */
int mo_state_op_finish(mo_state *st, int64_t op_id, const char *status, const char *error,
		       const mo_resource *upsert, const char *remove_address,
		       const char *taint_address)
{
	sqlite3_stmt *s = NULL;
	char *cur = NULL;
	int64_t serial;
	int rc, step, changed = 0, known = 0;

	for (size_t i = 0; status && i < MO_ARRAY_SIZE(op_outcomes); i++)
		known |= !strcmp(status, op_outcomes[i]);
	if (!known)
		return mo_error_set(MO_EINVAL, "state: bad operation outcome '%s'",
				    status ? status : "(null)");
	if (!!upsert + !!remove_address + !!taint_address > 1)
		return mo_error_set(MO_EINVAL,
				    "state: an operation applies at most one resource change");
	if (upsert && (rc = res_check(upsert)) < 0)
		return rc;
	if ((rc = tx_begin_write(st)) < 0)
		return rc;

	if ((rc = prep(st, &s, "SELECT status FROM operations WHERE id = ?")) < 0 ||
	    (rc = bindv(st, s, "I", op_id)) < 0)
		goto done;
	step = sqlite3_step(s);
	if (step == SQLITE_DONE) {
		rc = mo_error_set(MO_ENOTFOUND, "no operation %lld in the journal",
				  (long long)op_id);
		goto done;
	}
	if (step != SQLITE_ROW) {
		rc = db_err(st, step);
		goto done;
	}
	if ((rc = col_str(s, 0, &cur)) < 0)
		goto done;
	if (!cur || strcmp(cur, "pending")) {
		rc = mo_error_set(MO_EINVAL, "operation %lld is already %s", (long long)op_id,
				  cur ? cur : "finished");
		goto done;
	}

	if ((rc = run(st, "UPDATE operations SET status = ?, error = ?, finished = ? WHERE id = ?",
		      "ttII", status, error, mo_wall_s(), op_id)) < 0 ||
	    (rc = serial_get(st, &serial)) < 0)
		goto done;
	if (upsert) {
		if ((rc = res_write(st, upsert, serial + 1, &changed)) < 0)
			goto done;
	} else if (remove_address) {
		rc = run(st, "DELETE FROM resources WHERE address = ?", "t", remove_address);
		if (rc < 0)
			goto done;
		changed = sqlite3_changes(st->db) > 0;
	} else if (taint_address) {
		rc = run(st,
			 "UPDATE resources SET status = ?, serial = ? WHERE address = ?"
			 " AND status != ?",
			 "dItd", MO_RES_TAINTED, serial + 1, taint_address, MO_RES_TAINTED);
		if (rc < 0)
			goto done;
		changed = sqlite3_changes(st->db) > 0;
	}
	if (changed && (rc = serial_set(st, serial + 1)) < 0)
		goto done;
	rc = tx_commit(st);
done:
	unprep(st, s);
	if (rc < 0)
		tx_rollback(st);
	mo_free(cur);
	return rc;
}

int mo_state_op_pending(mo_state *st, mo_op ***out, size_t *n)
{
	return op_query(st,
			"SELECT " OP_COLS " FROM operations WHERE status = 'pending' ORDER BY id",
			0, out, n);
}

/*
 * The token of the address's latest create intent when that intent ended
 * "absent": recovery found nothing, yet the request may still be in flight
 * at the provider.  Reusing the token lets the provider's idempotency
 * return that object instead of making a second one.  *token is NULL when
 * there is none.
 */
int mo_state_op_unused_token(mo_state *st, const char *address, char **token)
{
	sqlite3_stmt *s = NULL;
	int rc, step;
	*token = NULL;
	if ((rc = prep(st, &s, "SELECT status, token FROM operations WHERE address = ? AND kind = ? "
			       "ORDER BY id DESC LIMIT 1")) < 0)
		return rc;
	if ((rc = bindv(st, s, "td", address, MO_OP_CREATE)) < 0)
		goto done;
	step = sqlite3_step(s);
	if (step == SQLITE_ROW) {
		const char *status = (const char *)sqlite3_column_text(s, 0);
		if (status && !strcmp(status, "absent") && sqlite3_column_type(s, 1) != SQLITE_NULL)
			rc = col_str(s, 1, token);
	} else if (step != SQLITE_DONE) {
		rc = db_err(st, step);
	}
done:
	unprep(st, s);
	return rc;
}

/* limit <= 0 lists the whole journal. */
int mo_state_op_recent(mo_state *st, int limit, mo_op ***out, size_t *n)
{
	return op_query(st, "SELECT " OP_COLS " FROM operations ORDER BY id DESC LIMIT ?",
			limit > 0 ? limit : -1, out, n);
}

/* ---- events ----------------------------------------------------------------- */

/* json_line must be one JSON value; it is stored as given. */
int mo_state_event_add(mo_state *st, const char *run_id, const char *json_line)
{
	struct timespec ts;
	json_error_t e;
	json_t *probe;

	if (!json_line)
		return mo_error_set(MO_EINVAL, "state: no event given");
	if (!(probe = json_loads(json_line, JSON_DECODE_ANY, &e))) {
		if (json_error_code(&e) == json_error_out_of_memory)
			return oom();
		return mo_error_set(MO_EINVAL, "state: event is not JSON: %s", e.text);
	}
	json_decref(probe);
	clock_gettime(CLOCK_REALTIME, &ts);
	return run(st, "INSERT INTO events (run_id, ts, json) VALUES (?, ?, ?)", "tIt", run_id,
		   (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000, json_line);
}

/* ---- the writer lock ----------------------------------------------------------- */

void mo_lock_info_clear(mo_lock_info *li)
{
	if (!li)
		return;
	mo_free(li->id);
	mo_free(li->owner);
	mo_free(li->host);
	mo_free(li->operation);
	memset(li, 0, sizeof(*li));
}

/* This process's host name and "user@host". */
static int self_identity(char *host, size_t hostlen, char **owner)
{
	struct passwd pw, *res = NULL;
	char buf[1024], uid[32];
	const char *user;

	if (gethostname(host, hostlen) < 0 || !*host)
		snprintf(host, hostlen, "localhost");
	host[hostlen - 1] = '\0';
	if (getpwuid_r(geteuid(), &pw, buf, sizeof(buf), &res) == 0 && res && res->pw_name)
		user = res->pw_name;
	else if (!(user = getenv("USER")) || !*user) {
		snprintf(uid, sizeof(uid), "uid%ld", (long)geteuid());
		user = uid;
	}
	if (!(*owner = mo_sprintf("%s@%s", user, host)))
		return oom();
	return 0;
}

/* Read the lock row: 0 and *li filled, MO_ENOTFOUND, or an error. */
static int lock_read(mo_state *st, mo_lock_info *li)
{
	sqlite3_stmt *s = NULL;
	int rc, step;

	memset(li, 0, sizeof(*li));
	if ((rc = prep(st, &s, "SELECT " LOCK_COLS " FROM locks")) < 0)
		return rc;
	step = sqlite3_step(s);
	if (step == SQLITE_ROW) {
		li->pid = (long)sqlite3_column_int64(s, 3);
		li->created = sqlite3_column_int64(s, 5);
		li->expires = sqlite3_column_int64(s, 6);
		if ((rc = col_str(s, 0, &li->id)) < 0 || (rc = col_str(s, 1, &li->owner)) < 0 ||
		    (rc = col_str(s, 2, &li->host)) < 0 || (rc = col_str(s, 4, &li->operation)) < 0)
			mo_lock_info_clear(li);
	} else if (step == SQLITE_DONE) {
		rc = mo_error_set(MO_ENOTFOUND, "state %s is not locked", st->path);
	} else {
		rc = db_err(st, step);
	}
	unprep(st, s);
	return rc;
}

/* A process on this host that no longer exists (e.g. after kill -9). */
static int pid_dead(long pid)
{
	return pid > 0 && kill((pid_t)pid, 0) < 0 && errno == ESRCH;
}

static void fmt_age(char *buf, size_t n, int64_t s)
{
	if (s < 0)
		s = 0;
	if (s < 60)
		snprintf(buf, n, "%llds", (long long)s);
	else if (s < 3600)
		snprintf(buf, n, "%lldm%02llds", (long long)(s / 60), (long long)(s % 60));
	else if (s < 86400)
		snprintf(buf, n, "%lldh%02lldm", (long long)(s / 3600), (long long)(s % 3600 / 60));
	else
		snprintf(buf, n, "%lldd%02lldh", (long long)(s / 86400),
			 (long long)(s % 86400 / 3600));
}

static int locked_error(mo_state *st, const mo_lock_info *li, int64_t now)
{
	char since[32] = "?", age[32];
	time_t t = (time_t)li->created;
	struct tm tm;

	if (gmtime_r(&t, &tm))
		strftime(since, sizeof(since), "%Y-%m-%d %H:%M:%S", &tm);
	fmt_age(age, sizeof(age), now - li->created);
	return mo_error_set(MO_ELOCKED,
			    "state %s is locked by %s (pid %ld) running %s since %s UTC (%s ago), "
			    "lock id %s; if that process is gone, run `mecorch lock unlock %s`",
			    st->path, li->owner, li->pid, li->operation, since, age, li->id,
			    li->id);
}

/*
 * Take the writer lock.  Taken over when free, when its lease expired, or
 * when its holder was a process on this host that is gone.  Calling it
 * again while holding the lock updates the operation and the lease.
 * *holder is zeroed on entry and, on MO_ELOCKED, describes the holder (the
 * caller clears it with mo_lock_info_clear).
 */
int mo_state_lock(mo_state *st, const char *operation, int lease_s, mo_lock_info *holder)
{
	static const char take_sql[] = "INSERT OR REPLACE INTO locks (one, " LOCK_COLS
				       ") VALUES (1, ?, ?, ?, ?, ?, ?, ?)";
	mo_lock_info cur = { 0 };
	char host[256], id[17], *owner = NULL, *new_id = NULL;
	int64_t now = mo_wall_s();
	int rc;

	if (holder)
		memset(holder, 0, sizeof(*holder));
	if (!operation || !*operation)
		return mo_error_set(MO_EINVAL, "state: lock needs an operation name");
	if (lease_s <= 0)
		return mo_error_set(MO_EINVAL, "state: lock lease must be positive, not %d",
				    lease_s);
	if ((rc = self_identity(host, sizeof(host), &owner)) < 0)
		return rc;
	if ((rc = tx_begin(st)) < 0)
		goto done;
	if ((rc = lock_read(st, &cur)) < 0 && rc != MO_ENOTFOUND)
		goto done;
	if (rc == 0 && st->lock_id && !strcmp(cur.id, st->lock_id)) {
		/* ours already: refresh */
		if ((rc = run(st, "UPDATE locks SET operation = ?, expires = ? WHERE id = ?", "tIt",
			      operation, now + lease_s, st->lock_id)) < 0)
			goto done;
		rc = tx_commit(st);
		goto done;
	}
	/* any lock this handle remembered is gone (forced or taken over) */
	mo_free(st->lock_id);
	st->lock_id = NULL;
	if (rc == 0 && cur.expires > now && !(!strcmp(cur.host, host) && pid_dead(cur.pid))) {
		tx_rollback(st);
		rc = locked_error(st, &cur, now);
		if (holder) {
			*holder = cur;
			memset(&cur, 0, sizeof(cur));
		}
		goto done;
	}
	if ((rc = mo_random_hex(id, 8)) < 0)
		goto done;
	if (!(new_id = mo_strdup(id))) {
		rc = oom();
		goto done;
	}
	if ((rc = run(st, take_sql, "tttItII", id, owner, host, (int64_t)getpid(), operation, now,
		      now + (int64_t)lease_s)) < 0 ||
	    (rc = tx_commit(st)) < 0)
		goto done;
	st->lock_id = new_id;
	st->lock_lost = 0;
	new_id = NULL;
done:
	if (rc < 0)
		tx_rollback(st);
	mo_lock_info_clear(&cur);
	mo_free(new_id);
	mo_free(owner);
	return rc;
}

/*
 * MO_EINVAL if this handle holds no lock; MO_ELOCKED if the lock it held was
 * force-released or taken over meanwhile (the handle then holds none).
 */
int mo_state_lock_renew(mo_state *st, int lease_s)
{
	int rc;

	if (!st->lock_id)
		return mo_error_set(MO_EINVAL, "state %s: this handle holds no lock to renew",
				    st->path);
	if (lease_s <= 0)
		return mo_error_set(MO_EINVAL, "state: lock lease must be positive, not %d",
				    lease_s);
	if ((rc = run(st, "UPDATE locks SET expires = ? WHERE id = ?", "It",
		      mo_wall_s() + (int64_t)lease_s, st->lock_id)) < 0)
		return rc;
	if (sqlite3_changes(st->db) == 0) {
		rc = mo_error_set(
			MO_ELOCKED,
			"state %s: lock %s is no longer held (it was force-unlocked or taken "
			"over after its lease expired)",
			st->path, st->lock_id);
		mo_free(st->lock_id);
		st->lock_id = NULL;
		st->lock_lost = 1;
	}
	return rc;
}

/* Deletes the lock row only if it is still this handle's. */
int mo_state_unlock(mo_state *st)
{
	int rc;

	if (!st->lock_id)
		return 0;
	if ((rc = run(st, "DELETE FROM locks WHERE id = ?", "t", st->lock_id)) < 0)
		return rc;
	mo_free(st->lock_id);
	st->lock_id = NULL;
	return 0;
}

/* *out is zeroed on entry; on success the caller clears it. */
int mo_state_lock_get(mo_state *st, mo_lock_info *out)
{
	return lock_read(st, out);
}

int mo_state_lock_force(mo_state *st, const char *lock_id)
{
	int rc;

	if (!lock_id || !*lock_id)
		return mo_error_set(MO_EINVAL, "state: no lock id given");
	if ((rc = run(st, "DELETE FROM locks WHERE id = ?", "t", lock_id)) < 0)
		return rc;
	if (sqlite3_changes(st->db) == 0)
		return mo_error_set(MO_ENOTFOUND, "state %s: no lock with id %s", st->path,
				    lock_id);
	if (st->lock_id && !strcmp(st->lock_id, lock_id)) {
		mo_free(st->lock_id);
		st->lock_id = NULL;
	}
	return 0;
}
