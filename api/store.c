/*
 * store.c - the API server's own database: its resources (packages,
 * instances, operation occurrences, subscriptions, deployments) as JSON
 * records, the notification outbox, run events and a little metadata, in
 * one SQLite file (WAL) under the data directory.
 *
 * Every record also lives in memory (one jansson object per kind, in
 * creation order) so reads never touch SQLite: a reader takes the read
 * lock, gets a new reference and lets go.  Records are immutable once
 * stored; a writer builds a new record and puts it.  Writers go through
 * mo_api_store_begin() / mo_api_store_end(), which hold the write lock and
 * one SQLite transaction; an undo log restores memory on rollback, so a
 * state change, the notifications it causes and its events commit or fail
 * together.  That is what makes notifications survive a restart: they are
 * in the outbox in the same transaction as the change they announce.
 */
#include "api_int.h"

#include <pthread.h>
#include <sqlite3.h>
#include <string.h>
#include <time.h>

/* Set while this thread is inside begin/end (it holds the write lock):
 * reads in a transaction then see its own writes without locking again. */
static _Thread_local int my_tx;

typedef struct {
	int kind;
	char *id;
	json_t *old;  /* the record before, or NULL */
} undo_entry;

struct mo_api_store {
	sqlite3 *db;
	pthread_rwlock_t rw;       /* memory */
	pthread_mutex_t wl;        /* writers and every SQLite call */
	json_t *mem[MO_K_COUNT];   /* id -> record */
	int64_t seq;
	undo_entry *undo;
	size_t nundo, capundo;
	int in_tx, tx_failed;
};



static const char schema[] =
	"PRAGMA journal_mode=WAL;"
	"PRAGMA synchronous=NORMAL;"
	"CREATE TABLE IF NOT EXISTS records (kind INTEGER NOT NULL, id TEXT NOT NULL,"
	"  seq INTEGER NOT NULL, body TEXT NOT NULL, PRIMARY KEY (kind, id));"
	"CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
	"CREATE TABLE IF NOT EXISTS outbox (id INTEGER PRIMARY KEY AUTOINCREMENT,"
	"  sub_id TEXT NOT NULL, uri TEXT NOT NULL, body TEXT NOT NULL,"
	"  attempts INTEGER NOT NULL DEFAULT 0, next_ms INTEGER NOT NULL,"
	"  last_error TEXT, created_ms INTEGER NOT NULL);"
	"CREATE INDEX IF NOT EXISTS outbox_next ON outbox (next_ms);"
	"CREATE TABLE IF NOT EXISTS events (owner TEXT NOT NULL, seq INTEGER NOT NULL,"
	"  body TEXT NOT NULL, PRIMARY KEY (owner, seq));"
	"INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', '1');";

static int db_error(mo_api_store *st, const char *what)
{
	return mo_error_set_native(MO_ESTATE, sqlite3_errcode(st->db), "server database: %s: %s", what,
				   sqlite3_errmsg(st->db));
}

static int load_records(mo_api_store *st)
{
	sqlite3_stmt *s = NULL;
	int rc;
	if (sqlite3_prepare_v2(st->db, "SELECT kind, id, seq, body FROM records ORDER BY seq", -1, &s,
			       NULL) != SQLITE_OK)
		return db_error(st, "load");
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		int kind = sqlite3_column_int(s, 0);
		const char *id = (const char *)sqlite3_column_text(s, 1);
		json_error_t je;
		json_t *rec = json_loads((const char *)sqlite3_column_text(s, 3), 0, &je);
		if (sqlite3_column_int64(s, 2) > st->seq)
			st->seq = sqlite3_column_int64(s, 2);
		if (kind < 0 || kind >= MO_K_COUNT || !rec || !id) {
			json_decref(rec);
			continue;
		}
		json_object_set_new(st->mem[kind], id, rec);
	}
	sqlite3_finalize(s);
	return rc == SQLITE_DONE ? 0 : db_error(st, "load");
}

int mo_api_store_open(mo_api_store **out, const char *path)
{
	mo_api_store *st = mo_calloc(1, sizeof(*st));
	char *err = NULL;
	int rc;
	if (!st)
		return mo_error_set(MO_ENOMEM, "out of memory");
	pthread_rwlock_init(&st->rw, NULL);
	pthread_mutex_init(&st->wl, NULL);
	for (int k = 0; k < MO_K_COUNT; k++)
		st->mem[k] = json_object();
	if (sqlite3_open_v2(path, &st->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
			    SQLITE_OPEN_FULLMUTEX, NULL) != SQLITE_OK) {
		rc = mo_error_set(MO_ESTATE, "server database %s: %s", path,
				  st->db ? sqlite3_errmsg(st->db) : "cannot open");
		goto fail;
	}
	sqlite3_busy_timeout(st->db, 5000);
	if (sqlite3_exec(st->db, schema, NULL, NULL, &err) != SQLITE_OK) {
		rc = mo_error_set(MO_ESTATE, "server database %s: %s", path, err ? err : "schema");
		sqlite3_free(err);
		goto fail;
	}
	if ((rc = load_records(st)) < 0)
		goto fail;
	*out = st;
	return 0;
fail:
	mo_api_store_close(st);
	return rc;
}

void mo_api_store_close(mo_api_store *st)
{
	if (!st)
		return;
	for (int k = 0; k < MO_K_COUNT; k++)
		json_decref(st->mem[k]);
	if (st->db)
		sqlite3_close(st->db);
	mo_free(st->undo);
	pthread_rwlock_destroy(&st->rw);
	pthread_mutex_destroy(&st->wl);
	mo_free(st);
}

json_t *mo_api_store_get(mo_api_store *st, int kind, const char *id)
{
	json_t *r;
	if (!id)
		return NULL;
	if (my_tx) /* this thread holds the write lock */
		return json_incref(json_object_get(st->mem[kind], id));
	pthread_rwlock_rdlock(&st->rw);
	r = json_incref(json_object_get(st->mem[kind], id));
	pthread_rwlock_unlock(&st->rw);
	return r;
}

json_t *mo_api_store_all(mo_api_store *st, int kind)
{
	json_t *arr = json_array(), *v;
	const char *k;
	if (!my_tx)
		pthread_rwlock_rdlock(&st->rw);
	json_object_foreach(st->mem[kind], k, v)
		json_array_append(arr, v);
	if (!my_tx)
		pthread_rwlock_unlock(&st->rw);
	return arr;
}

void mo_api_store_begin(mo_api_store *st)
{
	pthread_mutex_lock(&st->wl);
	pthread_rwlock_wrlock(&st->rw);
	st->in_tx = 1;
	my_tx = 1;
	st->tx_failed = 0;
	st->nundo = 0;
	if (sqlite3_exec(st->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK) {
		db_error(st, "begin");
		st->tx_failed = 1;
	}
}

int mo_api_store_end(mo_api_store *st, int ok)
{
	int rc = 0;
	if (ok && !st->tx_failed) {
		if (sqlite3_exec(st->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
			rc = db_error(st, "commit");
			ok = 0;
		}
	} else {
		ok = 0;
	}
	if (!ok) {
		if (!rc)
			rc = st->tx_failed ? MO_ESTATE : MO_ERROR;
		sqlite3_exec(st->db, "ROLLBACK", NULL, NULL, NULL);
		for (size_t i = st->nundo; i-- > 0;) {
			undo_entry *u = &st->undo[i];
			if (u->old)
				json_object_set(st->mem[u->kind], u->id, u->old);
			else
				json_object_del(st->mem[u->kind], u->id);
		}
	}
	for (size_t i = 0; i < st->nundo; i++) {
		mo_free(st->undo[i].id);
		json_decref(st->undo[i].old);
	}
	st->nundo = 0;
	st->in_tx = 0;
	my_tx = 0;
	pthread_rwlock_unlock(&st->rw);
	pthread_mutex_unlock(&st->wl);
	return rc;
}

json_t *mo_api_store_peek(mo_api_store *st, int kind, const char *id)
{
	return id ? json_object_get(st->mem[kind], id) : NULL;
}

static int undo_push(mo_api_store *st, int kind, const char *id)
{
	undo_entry *u;
	if (st->nundo == st->capundo) {
		size_t cap = st->capundo ? st->capundo * 2 : 16;
		undo_entry *nu = mo_realloc(st->undo, cap * sizeof(*nu));
		if (!nu)
			return mo_error_set(MO_ENOMEM, "out of memory");
		st->undo = nu;
		st->capundo = cap;
	}
	u = &st->undo[st->nundo];
	if (!(u->id = mo_strdup(id)))
		return mo_error_set(MO_ENOMEM, "out of memory");
	u->kind = kind;
	u->old = json_incref(json_object_get(st->mem[kind], id));
	st->nundo++;
	return 0;
}

int mo_api_store_put(mo_api_store *st, int kind, const char *id, json_t *rec)
{
	sqlite3_stmt *s = NULL;
	char *text = NULL;
	int rc = 0;
	if (!rec || st->tx_failed) {
		json_decref(rec);
		st->tx_failed = 1;
		return mo_error_set(MO_ENOMEM, "out of memory");
	}
	if ((rc = undo_push(st, kind, id)) < 0)
		goto done;
	if (!(text = json_dumps(rec, JSON_COMPACT))) {
		rc = mo_error_set(MO_ENOMEM, "out of memory");
		goto done;
	}
	if (sqlite3_prepare_v2(st->db,
			       "INSERT INTO records (kind, id, seq, body) VALUES (?, ?, ?, ?) "
			       "ON CONFLICT (kind, id) DO UPDATE SET body = excluded.body",
			       -1, &s, NULL) != SQLITE_OK) {
		rc = db_error(st, "put");
		goto done;
	}
	sqlite3_bind_int(s, 1, kind);
	sqlite3_bind_text(s, 2, id, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 3, ++st->seq);
	sqlite3_bind_text(s, 4, text, -1, SQLITE_STATIC);
	if (sqlite3_step(s) != SQLITE_DONE) {
		rc = db_error(st, "put");
		goto done;
	}
	json_object_set(st->mem[kind], id, rec);
done:
	sqlite3_finalize(s);
	mo_free(text);
	json_decref(rec);
	if (rc < 0)
		st->tx_failed = 1;
	return rc;
}

int mo_api_store_del(mo_api_store *st, int kind, const char *id)
{
	sqlite3_stmt *s = NULL;
	int rc = 0;
	if ((rc = undo_push(st, kind, id)) < 0)
		goto done;
	if (sqlite3_prepare_v2(st->db, "DELETE FROM records WHERE kind = ? AND id = ?", -1, &s, NULL) !=
	    SQLITE_OK) {
		rc = db_error(st, "delete");
		goto done;
	}
	sqlite3_bind_int(s, 1, kind);
	sqlite3_bind_text(s, 2, id, -1, SQLITE_STATIC);
	if (sqlite3_step(s) != SQLITE_DONE) {
		rc = db_error(st, "delete");
		goto done;
	}
	json_object_del(st->mem[kind], id);
done:
	sqlite3_finalize(s);
	if (rc < 0)
		st->tx_failed = 1;
	return rc;
}

int mo_api_store_outbox_add(mo_api_store *st, const char *sub_id, const char *uri, json_t *body)
{
	sqlite3_stmt *s = NULL;
	char *text = json_dumps(body, JSON_COMPACT);
	int rc = 0;
	struct timespec ts;
	int64_t now;
	clock_gettime(CLOCK_REALTIME, &ts);
	now = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
	if (!text) {
		rc = mo_error_set(MO_ENOMEM, "out of memory");
		goto done;
	}
	if (sqlite3_prepare_v2(st->db,
			       "INSERT INTO outbox (sub_id, uri, body, next_ms, created_ms) VALUES (?,?,?,?,?)",
			       -1, &s, NULL) != SQLITE_OK) {
		rc = db_error(st, "outbox");
		goto done;
	}
	sqlite3_bind_text(s, 1, sub_id, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 2, uri, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 3, text, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 4, now);
	sqlite3_bind_int64(s, 5, now);
	if (sqlite3_step(s) != SQLITE_DONE)
		rc = db_error(st, "outbox");
done:
	sqlite3_finalize(s);
	mo_free(text);
	if (rc < 0)
		st->tx_failed = 1;
	return rc;
}

static int event_insert(mo_api_store *st, const char *owner, json_t *ev)
{
	sqlite3_stmt *s = NULL;
	char *text = json_dumps(ev, JSON_COMPACT);
	int rc = 0;
	if (!text)
		return mo_error_set(MO_ENOMEM, "out of memory");
	if (sqlite3_prepare_v2(st->db,
			       "INSERT INTO events (owner, seq, body) VALUES (?1, "
			       "(SELECT COALESCE(MAX(seq), 0) + 1 FROM events WHERE owner = ?1), ?2)",
			       -1, &s, NULL) != SQLITE_OK) {
		rc = db_error(st, "event");
		goto done;
	}
	sqlite3_bind_text(s, 1, owner, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 2, text, -1, SQLITE_STATIC);
	if (sqlite3_step(s) != SQLITE_DONE)
		rc = db_error(st, "event");
done:
	sqlite3_finalize(s);
	mo_free(text);
	return rc;
}

int mo_api_store_event_add(mo_api_store *st, const char *owner, json_t *ev)
{
	int rc;
	if (my_tx) /* the caller holds the write lock inside begin/end */
		return event_insert(st, owner, ev);
	pthread_mutex_lock(&st->wl);
	rc = event_insert(st, owner, ev);
	pthread_mutex_unlock(&st->wl);
	return rc;
}

int mo_api_store_meta_get(mo_api_store *st, const char *key, char **out)
{
	sqlite3_stmt *s = NULL;
	int rc;
	*out = NULL;
	pthread_mutex_lock(&st->wl);
	if (sqlite3_prepare_v2(st->db, "SELECT value FROM meta WHERE key = ?", -1, &s, NULL) != SQLITE_OK) {
		rc = db_error(st, "meta");
		goto done;
	}
	sqlite3_bind_text(s, 1, key, -1, SQLITE_STATIC);
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		*out = mo_strdup((const char *)sqlite3_column_text(s, 0));
		rc = 0;
	} else {
		rc = rc == SQLITE_DONE ? MO_ENOTFOUND : db_error(st, "meta");
	}
done:
	sqlite3_finalize(s);
	pthread_mutex_unlock(&st->wl);
	return rc;
}

int mo_api_store_meta_set(mo_api_store *st, const char *key, const char *value)
{
	sqlite3_stmt *s = NULL;
	int rc = 0;
	pthread_mutex_lock(&st->wl);
	if (sqlite3_prepare_v2(st->db,
			       value ? "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)"
				     : "DELETE FROM meta WHERE key = ?",
			       -1, &s, NULL) != SQLITE_OK) {
		rc = db_error(st, "meta");
		goto done;
	}
	sqlite3_bind_text(s, 1, key, -1, SQLITE_STATIC);
	if (value)
		sqlite3_bind_text(s, 2, value, -1, SQLITE_STATIC);
	if (sqlite3_step(s) != SQLITE_DONE)
		rc = db_error(st, "meta");
done:
	sqlite3_finalize(s);
	pthread_mutex_unlock(&st->wl);
	return rc;
}

json_t *mo_api_store_events(mo_api_store *st, const char *owner, int64_t after, int limit)
{
	sqlite3_stmt *s = NULL;
	json_t *arr = json_array();
	pthread_mutex_lock(&st->wl);
	if (sqlite3_prepare_v2(st->db,
			       "SELECT seq, body FROM events WHERE owner = ? AND seq > ? ORDER BY seq LIMIT ?",
			       -1, &s, NULL) == SQLITE_OK) {
		sqlite3_bind_text(s, 1, owner, -1, SQLITE_STATIC);
		sqlite3_bind_int64(s, 2, after);
		sqlite3_bind_int(s, 3, limit);
		while (sqlite3_step(s) == SQLITE_ROW) {
			json_t *ev = json_loads((const char *)sqlite3_column_text(s, 1), 0, NULL);
			if (!json_is_object(ev)) {
				json_decref(ev);
				continue;
			}
			json_object_set_new(ev, "seq", json_integer(sqlite3_column_int64(s, 0)));
			json_array_append_new(arr, ev);
		}
	}
	sqlite3_finalize(s);
	pthread_mutex_unlock(&st->wl);
	return arr;
}

int mo_api_store_events_del(mo_api_store *st, const char *owner)
{
	sqlite3_stmt *s = NULL;
	int rc = 0;
	pthread_mutex_lock(&st->wl);
	if (sqlite3_prepare_v2(st->db, "DELETE FROM events WHERE owner = ?", -1, &s, NULL) != SQLITE_OK ||
	    (sqlite3_bind_text(s, 1, owner, -1, SQLITE_STATIC), sqlite3_step(s)) != SQLITE_DONE)
		rc = db_error(st, "events");
	sqlite3_finalize(s);
	pthread_mutex_unlock(&st->wl);
	return rc;
}

void mo_api_outbox_row_clear(mo_api_outbox_row *r)
{
	mo_free(r->sub_id);
	mo_free(r->uri);
	mo_free(r->body);
	memset(r, 0, sizeof(*r));
}

int mo_api_store_outbox_due(mo_api_store *st, int64_t now_ms, mo_api_outbox_row *rows, int max, int *n)
{
	sqlite3_stmt *s = NULL;
	int rc = 0;
	*n = 0;
	pthread_mutex_lock(&st->wl);
	if (sqlite3_prepare_v2(st->db,
			       "SELECT id, sub_id, uri, body, attempts FROM outbox AS o WHERE next_ms <= ?1 "
			       "AND NOT EXISTS (SELECT 1 FROM outbox AS p WHERE p.uri = o.uri AND p.id < o.id "
			       "AND p.next_ms > ?1) ORDER BY id LIMIT ?2",
			       -1, &s, NULL) != SQLITE_OK) {
		rc = db_error(st, "outbox");
		goto done;
	}
	sqlite3_bind_int64(s, 1, now_ms);
	sqlite3_bind_int(s, 2, max);
	while (*n < max && sqlite3_step(s) == SQLITE_ROW) {
		mo_api_outbox_row *r = &rows[*n];
		r->id = sqlite3_column_int64(s, 0);
		r->sub_id = mo_strdup((const char *)sqlite3_column_text(s, 1));
		r->uri = mo_strdup((const char *)sqlite3_column_text(s, 2));
		r->body = mo_strdup((const char *)sqlite3_column_text(s, 3));
		r->attempts = sqlite3_column_int(s, 4);
		(*n)++;
	}
done:
	sqlite3_finalize(s);
	pthread_mutex_unlock(&st->wl);
	return rc;
}

static int exec_id(mo_api_store *st, const char *sql, int64_t id, int64_t v, const char *text)
{
	sqlite3_stmt *s = NULL;
	int rc = 0;
	pthread_mutex_lock(&st->wl);
	if (sqlite3_prepare_v2(st->db, sql, -1, &s, NULL) != SQLITE_OK) {
		rc = db_error(st, "outbox");
		goto done;
	}
	sqlite3_bind_int64(s, 1, id);
	if (sqlite3_bind_parameter_count(s) >= 2)
		sqlite3_bind_int64(s, 2, v);
	if (sqlite3_bind_parameter_count(s) >= 3)
		sqlite3_bind_text(s, 3, text, -1, SQLITE_STATIC);
	if (sqlite3_step(s) != SQLITE_DONE)
		rc = db_error(st, "outbox");
done:
	sqlite3_finalize(s);
	pthread_mutex_unlock(&st->wl);
	return rc;
}

int mo_api_store_outbox_done(mo_api_store *st, int64_t id)
{
	return exec_id(st, "DELETE FROM outbox WHERE id = ?1", id, 0, NULL);
}

int mo_api_store_outbox_retry(mo_api_store *st, int64_t id, int64_t next_ms, const char *err)
{
	return exec_id(st, "UPDATE outbox SET attempts = attempts + 1, next_ms = ?2, last_error = ?3 "
			   "WHERE id = ?1", id, next_ms, err ? err : "");
}

static int64_t scalar(mo_api_store *st, const char *sql, int64_t dflt)
{
	sqlite3_stmt *s = NULL;
	int64_t v = dflt;
	pthread_mutex_lock(&st->wl);
	if (sqlite3_prepare_v2(st->db, sql, -1, &s, NULL) == SQLITE_OK && sqlite3_step(s) == SQLITE_ROW &&
	    sqlite3_column_type(s, 0) != SQLITE_NULL)
		v = sqlite3_column_int64(s, 0);
	sqlite3_finalize(s);
	pthread_mutex_unlock(&st->wl);
	return v;
}

int64_t mo_api_store_outbox_next(mo_api_store *st)
{
	return scalar(st, "SELECT MIN(next_ms) FROM outbox", -1);
}

int64_t mo_api_store_outbox_size(mo_api_store *st)
{
	return scalar(st, "SELECT COUNT(*) FROM outbox", 0);
}

/* ---- records ---------------------------------------------------------------- */

json_t *mo_api_rec_new(const char *tenant, json_t *doc)
{
	if (!doc)
		return NULL;
	return json_pack("{s:s,s:o,s:{}}", "tenant", tenant ? tenant : "", "doc", doc, "int");
}

const char *mo_api_rec_tenant(const json_t *rec)
{
	const char *t = json_string_value(json_object_get(rec, "tenant"));
	return t ? t : "";
}

json_t *mo_api_rec_doc(const json_t *rec)
{
	return json_object_get(rec, "doc");
}

json_t *mo_api_rec_int(const json_t *rec)
{
	json_t *i = json_object_get(rec, "int");
	if (!i && json_is_object(rec)) {
		i = json_object();
		json_object_set_new((json_t *)rec, "int", i);
	}
	return i;
}

const char *mo_api_jstr(const json_t *obj, const char *key)
{
	return json_string_value(json_object_get(obj, key));
}

void mo_api_store_run_event(mo_api_store *st, const char *owner, const mo_event *ev)
{
	json_t *j;
	if (!strcmp(ev->type, "start"))
		return;
	j = json_pack("{s:s,s:s*,s:s*,s:s*,s:I,s:I,s:I,s:o}", "type", ev->type, "address", ev->address,
		      "action", ev->action, "message", ev->message, "elapsedMs",
		      (json_int_t)ev->elapsed_ms, "done", (json_int_t)ev->done, "total",
		      (json_int_t)ev->total, "timeStamp", mo_api_timestamp());
	mo_api_store_event_add(st, owner, j);
	json_decref(j);
}

void mo_api_store_run_log(mo_api_store *st, const char *owner, const char *who, const char *level,
			  const char *msg)
{
	json_t *j;
	if (!strcmp(level, "debug"))
		return;
	j = json_pack("{s:s,s:s,s:s,s:s,s:o}", "type", "log", "who", who, "level", level, "message", msg,
		      "timeStamp", mo_api_timestamp());
	mo_api_store_event_add(st, owner, j);
	json_decref(j);
}
