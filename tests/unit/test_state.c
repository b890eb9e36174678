/*
 * test_state.c - the state store against real SQLite files under /tmp (and
 * ":memory:"): resources, serial, journal recovery after a killed process,
 * outputs, schema migrations, the writer lock between handles and
 * processes, the secret key, and out-of-memory paths.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <openssl/sha.h>
#include <sqlite3.h>

#include "common.h"
#include "secret.h"
#include "state.h"

/* Per-test temp directory holding state.db. */
typedef struct {
	char dir[64];
	char path[128];
} fixture;

static int setup(void **ts)
{
	fixture *f = calloc(1, sizeof(*f));
	assert_non_null(f);
	snprintf(f->dir, sizeof(f->dir), "/tmp/mo-state-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	snprintf(f->path, sizeof(f->path), "%s/state.db", f->dir);
	*ts = f;
	return 0;
}

static int teardown(void **ts)
{
	fixture *f = *ts;
	static const char *const suffixes[] = { "", "-wal", "-shm", "-journal" };
	char p[160];
	for (size_t i = 0; i < MO_ARRAY_SIZE(suffixes); i++) {
		snprintf(p, sizeof(p), "%s%s", f->path, suffixes[i]);
		unlink(p);
	}
	rmdir(f->dir);
	free(f);
	unsetenv("MECORCH_STATE_KEY");
	mo_alloc_fail_after(0);
	return 0;
}

static json_t *js(const char *text)
{
	json_error_t e;
	json_t *v = json_loads(text, JSON_DECODE_ANY, &e);
	if (!v)
		fail_msg("bad JSON in test: %s: %s", text, e.text);
	return v;
}

/* A resource owned by the caller (mo_resource_free). */
static mo_resource *mkres(const char *address, const char *id, const char *props, const char *deps)
{
	mo_resource *r = mo_calloc(1, sizeof(*r));
	assert_non_null(r);
	r->address = mo_strdup(address);
	r->module = mo_strdup("net");
	r->type = mo_strdup("vpc");
	r->id = id ? mo_strdup(id) : NULL;
	r->source = mo_strdup("./modules/net");
	r->props = js(props ? props : "{}");
	r->outputs = js("{\"arn\":\"arn:x\"}");
	r->deps = js(deps ? deps : "[]");
	return r;
}

static void put(mo_state *st, const char *address, const char *id, const char *props,
		const char *deps)
{
	mo_resource *r = mkres(address, id, props, deps);
	assert_int_equal(mo_state_put(st, r), 0);
	mo_resource_free(r);
}

static mo_state *open_ok(const char *path)
{
	mo_state *st = NULL;
	int rc = mo_state_open(&st, path);
	if (rc != 0)
		fail_msg("mo_state_open(%s): %d %s", path, rc, mo_error_last()->message);
	return st;
}

/* Run SQL on the file through a separate raw SQLite connection. */
static void raw_sql(const char *path, const char *sql)
{
	sqlite3 *db = NULL;
	char *err = NULL;
	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	sqlite3_busy_timeout(db, 5000);
	if (sqlite3_exec(db, sql, NULL, NULL, &err) != SQLITE_OK)
		fail_msg("raw SQL failed: %s: %s", sql, err);
	sqlite3_close(db);
}

/* First column of the first row of a query on the file, as text (caller frees). */
static char *raw_query(const char *path, const char *sql)
{
	sqlite3 *db = NULL;
	sqlite3_stmt *s = NULL;
	char *out = NULL;
	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &s, NULL), SQLITE_OK);
	if (sqlite3_step(s) == SQLITE_ROW && sqlite3_column_text(s, 0))
		out = strdup((const char *)sqlite3_column_text(s, 0));
	sqlite3_finalize(s);
	sqlite3_close(db);
	return out;
}

static void assert_error_contains(const char *needle)
{
	const char *msg = mo_error_last()->message;
	if (!strstr(msg, needle))
		fail_msg("error message \"%s\" lacks \"%s\"", msg, needle);
}

/* ---- open, lineage, serial --------------------------------------------------- */

static void test_state_open_create(void **ts)
{
	fixture *f = *ts;
	mo_state *st = open_ok(f->path);
	char lineage[64];
	struct stat sb;

	assert_int_equal(mo_state_schema_version(st), mo_state_schema_latest());
	assert_true(mo_state_schema_latest() >= 2);
	assert_int_equal(strlen(mo_state_lineage(st)), 36);
	assert_int_equal(mo_state_lineage(st)[14], '4'); /* version 4 UUID */
	snprintf(lineage, sizeof(lineage), "%s", mo_state_lineage(st));
	assert_int_equal(mo_state_serial(st), 0);
	mo_state_close(st);

	/* the file holds the hash key: owner only */
	assert_int_equal(stat(f->path, &sb), 0);
	assert_int_equal(sb.st_mode & 0777, 0600);

	/* lineage is created once */
	st = open_ok(f->path);
	assert_string_equal(mo_state_lineage(st), lineage);
	mo_state_close(st);

	/* a store elsewhere has its own lineage */
	st = open_ok(":memory:");
	assert_string_not_equal(mo_state_lineage(st), lineage);
	mo_state_close(st);

	/* journal mode is WAL on files */
	char *mode = raw_query(f->path, "PRAGMA journal_mode");
	assert_string_equal(mode, "wal");
	free(mode);
}

static void test_state_open_errors(void **ts)
{
	fixture *f = *ts;
	mo_state *st = NULL;
	char p[200];

	assert_int_equal(mo_state_open(&st, NULL), MO_EINVAL);
	snprintf(p, sizeof(p), "%s/no/such/dir/state.db", f->dir);
	assert_int_equal(mo_state_open(&st, p), MO_EIO);
	assert_null(st);

	/* not a database at all */
	FILE *fp = fopen(f->path, "w");
	assert_non_null(fp);
	fputs("this is not an SQLite file, it is a text file of some length......\n", fp);
	fclose(fp);
	assert_int_equal(mo_state_open(&st, f->path), MO_ESTATE);
	assert_error_contains(f->path);
	assert_int_not_equal(mo_error_last()->native, 0);
	assert_null(st);
	unlink(f->path);

	/* someone else's database: refused, not extended */
	raw_sql(f->path, "CREATE TABLE customers (name TEXT)");
	assert_int_equal(mo_state_open(&st, f->path), MO_ESTATE);
	assert_error_contains("not a mecorch state");
	char *n = raw_query(f->path, "SELECT count(*) FROM sqlite_master");
	assert_string_equal(n, "1");
	free(n);
}

static void test_state_serial(void **ts)
{
	fixture *f = *ts;
	mo_state *st = open_ok(f->path);
	mo_resource *r;
	json_t *outs;

	put(st, "module.net.vpc.main", "vpc-1", "{\"cidr\":\"10.0.0.0/16\"}", NULL);
	assert_int_equal(mo_state_serial(st), 1);
	assert_int_equal(mo_state_get(st, "module.net.vpc.main", &r), 0);
	assert_int_equal(r->serial, 1);
	mo_resource_free(r);

	/* an identical rewrite (a no-op refresh) changes nothing */
	put(st, "module.net.vpc.main", "vpc-1", "{\"cidr\":\"10.0.0.0/16\"}", NULL);
	assert_int_equal(mo_state_serial(st), 1);

	put(st, "module.net.vpc.main", "vpc-1", "{\"cidr\":\"10.1.0.0/16\"}", NULL);
	assert_int_equal(mo_state_serial(st), 2);
	put(st, "module.net.vpc.other", "vpc-2", NULL, NULL);
	assert_int_equal(mo_state_serial(st), 3);
	assert_int_equal(mo_state_get(st, "module.net.vpc.other", &r), 0);
	assert_int_equal(r->serial, 3);
	mo_resource_free(r);
	assert_int_equal(mo_state_get(st, "module.net.vpc.main", &r), 0);
	assert_int_equal(r->serial, 2);
	mo_resource_free(r);

	assert_int_equal(mo_state_rm(st, "module.net.vpc.other"), 0);
	assert_int_equal(mo_state_serial(st), 4);

	outs = js("{\"vpc_id\":{\"value\":\"vpc-1\",\"sensitive\":false}}");
	assert_int_equal(mo_state_outputs_set(st, outs), 0);
	assert_int_equal(mo_state_serial(st), 5);
	assert_int_equal(mo_state_outputs_set(st, outs), 0);
	assert_int_equal(mo_state_serial(st), 5);
	json_decref(outs);

	assert_int_equal(mo_state_set_status(st, "module.net.vpc.main", MO_RES_TAINTED), 0);
	assert_int_equal(mo_state_serial(st), 6);
	assert_int_equal(mo_state_set_status(st, "module.net.vpc.main", MO_RES_TAINTED), 0);
	assert_int_equal(mo_state_serial(st), 6);
	mo_state_close(st);

	/* the serial is in the file */
	st = open_ok(f->path);
	assert_int_equal(mo_state_serial(st), 6);
	mo_state_close(st);
}

/* ---- resources ------------------------------------------------------------------ */

static void test_state_resources(void **ts)
{
	fixture *f = *ts;
	mo_state *st = open_ok(f->path);
	mo_resource **list = NULL, *r = NULL, *copy = NULL;
	size_t n = 0;
	char *text;

	put(st, "module.net.vpc.b", "vpc-b", "{\"z\":1,\"a\":{\"y\":true,\"b\":null}}",
	    "[\"module.net.vpc.a\"]");
	put(st, "module.net.vpc.a", "vpc-a", NULL, NULL);
	put(st, "module.app.vm.c", NULL, "{\"size\":2}",
	    "[\"module.net.vpc.b\",\"module.net.vpc.a\"]");

	assert_int_equal(mo_state_list(st, &list, &n), 0);
	assert_int_equal(n, 3);
	assert_string_equal(list[0]->address, "module.app.vm.c");
	assert_string_equal(list[1]->address, "module.net.vpc.a");
	assert_string_equal(list[2]->address, "module.net.vpc.b");
	assert_null(list[0]->id);
	mo_resource_list_free(list, n);

	assert_int_equal(mo_state_get(st, "module.net.vpc.b", &r), 0);
	assert_string_equal(r->module, "net");
	assert_string_equal(r->type, "vpc");
	assert_string_equal(r->id, "vpc-b");
	assert_string_equal(r->source, "./modules/net");
	assert_int_equal(r->status, MO_RES_OK);
	json_t *want = js("{\"a\":{\"b\":null,\"y\":true},\"z\":1}");
	assert_true(json_equal(r->props, want));
	json_decref(want);
	want = js("{\"arn\":\"arn:x\"}");
	assert_true(json_equal(r->outputs, want));
	json_decref(want);
	want = js("[\"module.net.vpc.a\"]");
	assert_true(json_equal(r->deps, want));
	json_decref(want);

	assert_int_equal(mo_resource_dup(&copy, r), 0);
	assert_ptr_not_equal(copy->props, r->props);
	assert_true(json_equal(copy->props, r->props));
	assert_string_equal(copy->address, r->address);
	mo_resource_free(copy);
	mo_resource_free(r);
	r = NULL;

	/* stored canonically: compact, keys sorted at every level */
	text = raw_query(f->path, "SELECT props FROM resources WHERE address = 'module.net.vpc.b'");
	assert_string_equal(text, "{\"a\":{\"b\":null,\"y\":true},\"z\":1}");
	free(text);

	/* a resource stored with no props/outputs/deps reads back as {} {} [] */
	r = mkres("module.net.vpc.bare", NULL, NULL, NULL);
	json_decref(r->props);
	json_decref(r->outputs);
	json_decref(r->deps);
	r->props = r->outputs = r->deps = NULL;
	assert_int_equal(mo_state_put(st, r), 0);
	mo_resource_free(r);
	assert_int_equal(mo_state_get(st, "module.net.vpc.bare", &r), 0);
	assert_true(json_is_object(r->props) && json_object_size(r->props) == 0);
	assert_true(json_is_object(r->outputs) && json_object_size(r->outputs) == 0);
	assert_true(json_is_array(r->deps) && json_array_size(r->deps) == 0);
	mo_resource_free(r);
	assert_int_equal(mo_state_rm(st, "module.net.vpc.bare"), 0);

	/* invalid resources are refused */
	r = mkres("module.net.vpc.bad", NULL, NULL, NULL);
	json_decref(r->props);
	r->props = js("[1]");
	assert_int_equal(mo_state_put(st, r), MO_EINVAL);
	mo_free(r->address);
	r->address = NULL;
	assert_int_equal(mo_state_put(st, r), MO_EINVAL);
	mo_resource_free(r);

	/* get / rm of absent addresses */
	r = NULL;
	assert_int_equal(mo_state_get(st, "module.net.vpc.nope", &r), MO_ENOTFOUND);
	assert_null(r);
	assert_int_equal(mo_state_rm(st, "module.net.vpc.nope"), MO_ENOTFOUND);

	/* mv: rename, and deps that named the old address follow it */
	assert_int_equal(mo_state_mv(st, "module.net.vpc.a", "module.core.vpc.a"), 0);
	assert_int_equal(mo_state_get(st, "module.net.vpc.a", &r), MO_ENOTFOUND);
	assert_int_equal(mo_state_get(st, "module.core.vpc.a", &r), 0);
	assert_string_equal(r->id, "vpc-a");
	mo_resource_free(r);
	assert_int_equal(mo_state_get(st, "module.app.vm.c", &r), 0);
	want = js("[\"module.net.vpc.b\",\"module.core.vpc.a\"]");
	assert_true(json_equal(r->deps, want));
	json_decref(want);
	mo_resource_free(r);

	/* mv onto an existing address fails and changes nothing */
	int64_t serial = mo_state_serial(st);
	assert_int_equal(mo_state_mv(st, "module.net.vpc.b", "module.app.vm.c"), MO_EINVAL);
	assert_int_equal(mo_state_mv(st, "module.net.vpc.gone", "module.net.vpc.x"), MO_ENOTFOUND);
	assert_int_equal(mo_state_serial(st), serial);
	assert_int_equal(mo_state_get(st, "module.net.vpc.b", &r), 0);
	assert_string_equal(r->id, "vpc-b");
	mo_resource_free(r);
	assert_int_equal(mo_state_get(st, "module.app.vm.c", &r), 0);
	assert_null(r->id);
	mo_resource_free(r);

	assert_int_equal(mo_state_rm(st, "module.net.vpc.b"), 0);
	assert_int_equal(mo_state_list(st, &list, &n), 0);
	assert_int_equal(n, 2);
	mo_resource_list_free(list, n);

	assert_int_equal(mo_state_set_status(st, "module.core.vpc.a", 7), MO_EINVAL);
	assert_int_equal(mo_state_set_status(st, "module.net.vpc.nope", MO_RES_TAINTED),
			 MO_ENOTFOUND);
	mo_state_close(st);
}

static void test_state_memory(void **ts)
{
	mo_state *st = open_ok(":memory:");
	mo_resource *r = NULL;
	mo_lock_info li;
	(void)ts;

	put(st, "module.m.t.a", "id-a", "{\"k\":\"v\"}", NULL);
	assert_int_equal(mo_state_get(st, "module.m.t.a", &r), 0);
	assert_string_equal(r->id, "id-a");
	mo_resource_free(r);
	assert_int_equal(mo_state_serial(st), 1);
	assert_int_equal(mo_state_lock(st, "plan", 60, NULL), 0);
	assert_int_equal(mo_state_lock_get(st, &li), 0);
	assert_string_equal(li.operation, "plan");
	mo_lock_info_clear(&li);
	assert_int_equal(mo_state_unlock(st), 0);
	assert_int_equal(mo_state_lock_get(st, &li), MO_ENOTFOUND);
	mo_state_close(st);
}

static void test_state_depose(void **ts)
{
	fixture *f = *ts;
	mo_state *st = open_ok(f->path);
	mo_resource *r = NULL;
	char *dep = NULL;

	put(st, "module.net.vpc.main", "vpc-old", NULL, NULL);
	int64_t serial = mo_state_serial(st);
	assert_int_equal(mo_state_depose(st, "module.net.vpc.main", &dep), 0);
	assert_string_equal(dep, "module.net.vpc.main~deposed-1");
	assert_int_equal(mo_state_serial(st), serial + 1);
	assert_int_equal(mo_state_get(st, "module.net.vpc.main", &r), MO_ENOTFOUND);
	assert_int_equal(mo_state_get(st, dep, &r), 0);
	assert_int_equal(r->status, MO_RES_DEPOSED);
	assert_string_equal(r->id, "vpc-old");
	mo_resource_free(r);
	mo_free(dep);
	dep = NULL;

	/* the replacement is created, then deposed in turn: next free number */
	put(st, "module.net.vpc.main", "vpc-new", NULL, NULL);
	assert_int_equal(mo_state_depose(st, "module.net.vpc.main", &dep), 0);
	assert_string_equal(dep, "module.net.vpc.main~deposed-2");
	mo_free(dep);

	/* once -1 is destroyed its number is free again */
	assert_int_equal(mo_state_rm(st, "module.net.vpc.main~deposed-1"), 0);
	put(st, "module.net.vpc.main", "vpc-newer", NULL, NULL);
	assert_int_equal(mo_state_depose(st, "module.net.vpc.main", NULL), 0);
	assert_int_equal(mo_state_get(st, "module.net.vpc.main~deposed-1", &r), 0);
	assert_string_equal(r->id, "vpc-newer");
	mo_resource_free(r);

	assert_int_equal(mo_state_depose(st, "module.net.vpc.main", NULL), MO_ENOTFOUND);
	assert_int_equal(mo_state_depose(st, "module.net.vpc.main~deposed-2", NULL), MO_EINVAL);
	mo_state_close(st);
}

/* ---- the journal -------------------------------------------------------------------- */

static void test_state_journal_crash(void **ts)
{
	fixture *f = *ts;
	mo_state *st;
	mo_op **ops = NULL;
	mo_resource *r = NULL;
	size_t n = 0;
	int64_t op_id = 0;
	int fds[2], wstatus;
	pid_t pid;

	assert_int_equal(pipe(fds), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		/* the run: journal the intent, then die before finishing it */
		mo_state *cst = NULL;
		mo_resource *want = mkres("module.net.vpc.main", NULL, "{\"cidr\":\"10.0.0.0/16\"}",
					  "[\"module.net.igw.gw\"]");
		int64_t id = 0;
		if (mo_state_open(&cst, f->path) < 0 ||
		    mo_state_op_begin(cst, "run-1", MO_OP_CREATE, "tok-abc", want, &id) < 0)
			_exit(1);
		if (write(fds[1], &id, sizeof(id)) != (ssize_t)sizeof(id))
			_exit(2);
		raise(SIGKILL);
		_exit(3);
	}
	close(fds[1]);
	assert_int_equal(read(fds[0], &op_id, sizeof(op_id)), (ssize_t)sizeof(op_id));
	close(fds[0]);
	assert_int_equal(waitpid(pid, &wstatus, 0), pid);
	assert_true(WIFSIGNALED(wstatus));
	assert_int_equal(WTERMSIG(wstatus), SIGKILL);
	assert_true(op_id > 0);

	/* the next run finds the intent with everything it needs */
	st = open_ok(f->path);
	assert_int_equal(mo_state_op_pending(st, &ops, &n), 0);
	assert_int_equal(n, 1);
	assert_int_equal(ops[0]->id, op_id);
	assert_string_equal(ops[0]->run_id, "run-1");
	assert_int_equal(ops[0]->kind, MO_OP_CREATE);
	assert_string_equal(ops[0]->token, "tok-abc");
	assert_string_equal(ops[0]->status, "pending");
	assert_null(ops[0]->error);
	assert_true(ops[0]->started > 0);
	assert_string_equal(ops[0]->res->address, "module.net.vpc.main");
	assert_string_equal(ops[0]->res->module, "net");
	assert_string_equal(ops[0]->res->type, "vpc");
	assert_string_equal(ops[0]->res->source, "./modules/net");
	assert_null(ops[0]->res->id);
	json_t *want = js("{\"cidr\":\"10.0.0.0/16\"}");
	assert_true(json_equal(ops[0]->res->props, want));
	json_decref(want);
	want = js("[\"module.net.igw.gw\"]");
	assert_true(json_equal(ops[0]->res->deps, want));
	json_decref(want);
	assert_int_equal(mo_state_get(st, "module.net.vpc.main", &r), MO_ENOTFOUND);

	/* recovery found the remote object by its token: adopt it */
	mo_resource *found = NULL;
	assert_int_equal(mo_resource_dup(&found, ops[0]->res), 0);
	found->id = mo_strdup("vpc-0f3e");
	int64_t serial = mo_state_serial(st);
	assert_int_equal(mo_state_op_finish(st, op_id, "adopted", NULL, found, NULL, NULL), 0);
	mo_resource_free(found);
	mo_op_list_free(ops, n);
	assert_int_equal(mo_state_serial(st), serial + 1);

	assert_int_equal(mo_state_get(st, "module.net.vpc.main", &r), 0);
	assert_string_equal(r->id, "vpc-0f3e");
	mo_resource_free(r);
	assert_int_equal(mo_state_op_pending(st, &ops, &n), 0);
	assert_int_equal(n, 0);
	mo_op_list_free(ops, n);

	assert_int_equal(mo_state_op_recent(st, 10, &ops, &n), 0);
	assert_int_equal(n, 1);
	assert_string_equal(ops[0]->status, "adopted");
	mo_op_list_free(ops, n);

	/* an intent is finished once; unknown ids are reported */
	assert_int_equal(mo_state_op_finish(st, op_id, "done", NULL, NULL, NULL, NULL), MO_EINVAL);
	assert_int_equal(mo_state_op_finish(st, op_id + 100, "done", NULL, NULL, NULL, NULL),
			 MO_ENOTFOUND);
	mo_state_close(st);
}

static void test_state_journal_finish(void **ts)
{
	fixture *f = *ts;
	mo_state *st = open_ok(f->path);
	mo_resource *r = NULL;
	mo_op **ops = NULL;
	size_t n = 0;
	int64_t id1, id2, id3, serial;

	put(st, "module.net.vpc.a", "vpc-a", NULL, NULL);
	put(st, "module.net.vpc.b", "vpc-b", NULL, NULL);

	/* delete: the resource goes in the same transaction as the outcome */
	r = mkres("module.net.vpc.a", "vpc-a", NULL, NULL);
	assert_int_equal(mo_state_op_begin(st, "run-2", MO_OP_DELETE, "tok-1", r, &id1), 0);
	mo_resource_free(r);
	serial = mo_state_serial(st);
	assert_int_equal(mo_state_op_finish(st, id1, "done", NULL, NULL, "module.net.vpc.a", NULL),
			 0);
	assert_int_equal(mo_state_get(st, "module.net.vpc.a", &r), MO_ENOTFOUND);
	assert_int_equal(mo_state_serial(st), serial + 1);

	/* a failed update that may have half-applied taints the resource */
	r = mkres("module.net.vpc.b", "vpc-b", "{\"cidr\":\"x\"}", NULL);
	assert_int_equal(mo_state_op_begin(st, "run-2", MO_OP_UPDATE, "tok-2", r, &id2), 0);
	mo_resource_free(r);
	assert_int_equal(mo_state_op_finish(st, id2, "tainted", "HTTP 500 from the API", NULL, NULL,
					    "module.net.vpc.b"),
			 0);
	assert_int_equal(mo_state_get(st, "module.net.vpc.b", &r), 0);
	assert_int_equal(r->status, MO_RES_TAINTED);
	assert_int_equal(r->serial, serial + 2);
	mo_resource_free(r);
	assert_int_equal(mo_state_serial(st), serial + 2);

	/* bad calls change nothing: the intent stays pending */
	r = mkres("module.net.vpc.c", NULL, NULL, NULL);
	assert_int_equal(mo_state_op_begin(st, "run-2", 9, "tok-3", r, &id3), MO_EINVAL);
	assert_int_equal(mo_state_op_begin(st, "run-2", MO_OP_CREATE, "tok-3", r, &id3), 0);
	assert_int_equal(mo_state_op_finish(st, id3, "pending", NULL, NULL, NULL, NULL), MO_EINVAL);
	assert_int_equal(mo_state_op_finish(st, id3, NULL, NULL, NULL, NULL, NULL), MO_EINVAL);
	assert_int_equal(mo_state_op_finish(st, id3, "done", NULL, r, "module.net.vpc.b", NULL),
			 MO_EINVAL);
	assert_int_equal(mo_state_op_pending(st, &ops, &n), 0);
	assert_int_equal(n, 1);
	assert_int_equal(ops[0]->id, id3);
	mo_op_list_free(ops, n);

	/* a failed create records the error and no resource */
	assert_int_equal(mo_state_op_finish(st, id3, "failed", "quota exceeded", NULL, NULL, NULL),
			 0);
	mo_resource_free(r);
	assert_int_equal(mo_state_get(st, "module.net.vpc.c", &r), MO_ENOTFOUND);
	assert_int_equal(mo_state_serial(st), serial + 2);

	/* newest first, limited */
	assert_int_equal(mo_state_op_recent(st, 2, &ops, &n), 0);
	assert_int_equal(n, 2);
	assert_int_equal(ops[0]->id, id3);
	assert_string_equal(ops[0]->status, "failed");
	assert_string_equal(ops[0]->error, "quota exceeded");
	assert_int_equal(ops[1]->id, id2);
	assert_string_equal(ops[1]->error, "HTTP 500 from the API");
	assert_int_equal(ops[1]->kind, MO_OP_UPDATE);
	assert_string_equal(ops[1]->res->id, "vpc-b");
	mo_op_list_free(ops, n);
	assert_int_equal(mo_state_op_recent(st, 0, &ops, &n), 0);
	assert_int_equal(n, 3);
	assert_int_equal(ops[2]->id, id1);
	mo_op_list_free(ops, n);
	mo_state_close(st);
}

/* ---- outputs and events ------------------------------------------------------------------ */

/* A create that recovery found absent hands its token to the next create. */
static void test_state_unused_token(void **ts)
{
	fixture *f = *ts;
	mo_state *st = open_ok(f->path);
	mo_resource *r = mkres("module.net.vpc.c", NULL, NULL, NULL);
	char *tok = NULL;
	int64_t id;

	assert_int_equal(mo_state_op_unused_token(st, "module.net.vpc.c", &tok), 0);
	assert_null(tok);
	assert_int_equal(mo_state_op_begin(st, "run-1", MO_OP_CREATE, "tok-a", r, &id), 0);
	/* still pending: not reusable yet */
	assert_int_equal(mo_state_op_unused_token(st, "module.net.vpc.c", &tok), 0);
	assert_null(tok);
	assert_int_equal(mo_state_op_finish(st, id, "absent", NULL, NULL, NULL, NULL), 0);
	assert_int_equal(mo_state_op_unused_token(st, "module.net.vpc.c", &tok), 0);
	assert_string_equal(tok, "tok-a");
	mo_free(tok);
	tok = NULL;
	/* once a create with it is done, it is used up */
	assert_int_equal(mo_state_op_begin(st, "run-2", MO_OP_CREATE, "tok-a", r, &id), 0);
	assert_int_equal(mo_state_op_finish(st, id, "done", NULL, r, NULL, NULL), 0);
	assert_int_equal(mo_state_op_unused_token(st, "module.net.vpc.c", &tok), 0);
	assert_null(tok);
	/* other addresses are not affected */
	assert_int_equal(mo_state_op_unused_token(st, "module.net.vpc.d", &tok), 0);
	assert_null(tok);
	mo_resource_free(r);
	mo_state_close(st);
}

static void test_state_outputs(void **ts)
{
	fixture *f = *ts;
	mo_state *st = open_ok(f->path);
	unsigned char key[32];
	json_t *outs, *got = NULL, *pw, *h;

	assert_int_equal(mo_state_outputs_get(st, &got), 0);
	assert_int_equal(json_object_size(got), 0);
	json_decref(got);

	assert_int_equal(mo_state_secret_key(st, key), 0);
	pw = js("\"s3cr3t-db-password\"");
	h = mo_secret_hash(key, pw);
	outs = json_pack("{s:{s:s,s:b},s:{s:O,s:b},s:{s:[i,i]}}", "endpoint", "value",
			 "https://10.0.0.1", "sensitive", 0, "db_password", "value", h, "sensitive",
			 1, "ports", "value", 80, 443);
	assert_non_null(outs);
	assert_int_equal(mo_state_outputs_set(st, outs), 0);
	mo_state_close(st);

	st = open_ok(f->path);
	assert_int_equal(mo_state_outputs_get(st, &got), 0);
	json_t *want = json_pack("{s:{s:s,s:b},s:{s:O,s:b},s:{s:[i,i],s:b}}", "endpoint", "value",
				 "https://10.0.0.1", "sensitive", 0, "db_password", "value", h,
				 "sensitive", 1, "ports", "value", 80, 443, "sensitive", 0);
	assert_true(json_equal(got, want));
	json_decref(want);
	json_decref(got);
	json_decref(outs);

	/* set replaces the whole set */
	outs = js("{\"endpoint\":{\"value\":\"https://10.0.0.2\"}}");
	assert_int_equal(mo_state_outputs_set(st, outs), 0);
	json_decref(outs);
	assert_int_equal(mo_state_outputs_get(st, &got), 0);
	assert_int_equal(json_object_size(got), 1);
	assert_string_equal(
		json_string_value(json_object_get(json_object_get(got, "endpoint"), "value")),
		"https://10.0.0.2");
	json_decref(got);

	/* a sensitive value in clear is refused; bad shapes too */
	outs = json_pack("{s:{s:O,s:b}}", "db_password", "value", pw, "sensitive", 1);
	assert_int_equal(mo_state_outputs_set(st, outs), MO_EINVAL);
	json_decref(outs);
	outs = js("{\"x\":42}");
	assert_int_equal(mo_state_outputs_set(st, outs), MO_EINVAL);
	json_decref(outs);
	outs = js("[1]");
	assert_int_equal(mo_state_outputs_set(st, outs), MO_EINVAL);
	json_decref(outs);

	/* NULL clears */
	assert_int_equal(mo_state_outputs_set(st, NULL), 0);
	assert_int_equal(mo_state_outputs_get(st, &got), 0);
	assert_int_equal(json_object_size(got), 0);
	json_decref(got);
	json_decref(pw);
	json_decref(h);
	mo_state_close(st);
}

static void test_state_events(void **ts)
{
	fixture *f = *ts;
	mo_state *st = open_ok(f->path);
	char *v;

	assert_int_equal(mo_state_event_add(st, "run-1", "{\"event\":\"apply_start\"}"), 0);
	assert_int_equal(mo_state_event_add(st, "run-1", "{\"event\":\"resource_done\",\"n\":1}"),
			 0);
	assert_int_equal(mo_state_event_add(st, "run-1", "{not json"), MO_EINVAL);
	mo_state_close(st);
	v = raw_query(f->path, "SELECT count(*) FROM events WHERE run_id = 'run-1' AND ts > 0");
	assert_string_equal(v, "2");
	free(v);
	v = raw_query(f->path, "SELECT json FROM events ORDER BY id DESC LIMIT 1");
	assert_string_equal(v, "{\"event\":\"resource_done\",\"n\":1}");
	free(v);
}

/* ---- schema migrations ---------------------------------------------------------------------- */

/* Frozen copy of migration step 1 (state.c: migrations[0]), as a version-1
 * binary created it. */
static const char schema_v1[] = "CREATE TABLE meta ("
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
				");";

static void test_state_migrate_v1(void **ts)
{
	fixture *f = *ts;
	mo_state *st;
	mo_resource *r = NULL;
	mo_op **ops = NULL;
	json_t *outs = NULL;
	size_t n = 0;
	char *v;

	raw_sql(f->path, schema_v1);
	raw_sql(f->path,
		"INSERT INTO meta VALUES ('lineage', '0b7e3f55-1c2d-4e5f-8a9b-0c1d2e3f4a5b'),"
		" ('serial', 7),"
		" ('secret_key', '000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f');"
		"INSERT INTO resources VALUES ('module.net.vpc.main', 'net', 'vpc', 'vpc-1',"
		" './net', '{\"cidr\":\"10.0.0.0/16\"}', '{\"arn\":\"a\"}', '[]', 0, 7);"
		"INSERT INTO operations (run_id, kind, token, status, address, module, type,"
		" source, props, res_id, deps, started) VALUES ('run-0', 2, 'tok-0', 'pending',"
		" 'module.net.vpc.main', 'net', 'vpc', './net', '{\"cidr\":\"10.1.0.0/16\"}',"
		" 'vpc-1', '[]', 1700000000);"
		"INSERT INTO outputs VALUES ('vpc', '\"vpc-1\"', 0);"
		"PRAGMA user_version = 1;");
	v = raw_query(f->path, "SELECT count(*) FROM sqlite_master WHERE name = 'events'");
	assert_string_equal(v, "0");
	free(v);

	st = open_ok(f->path);
	assert_int_equal(mo_state_schema_version(st), mo_state_schema_latest());
	assert_string_equal(mo_state_lineage(st), "0b7e3f55-1c2d-4e5f-8a9b-0c1d2e3f4a5b");
	assert_int_equal(mo_state_serial(st), 7);
	assert_int_equal(mo_state_get(st, "module.net.vpc.main", &r), 0);
	assert_string_equal(r->id, "vpc-1");
	assert_int_equal(r->serial, 7);
	mo_resource_free(r);
	assert_int_equal(mo_state_op_pending(st, &ops, &n), 0);
	assert_int_equal(n, 1);
	assert_string_equal(ops[0]->token, "tok-0");
	assert_string_equal(ops[0]->res->id, "vpc-1");
	mo_op_list_free(ops, n);
	assert_int_equal(mo_state_outputs_get(st, &outs), 0);
	assert_string_equal(
		json_string_value(json_object_get(json_object_get(outs, "vpc"), "value")), "vpc-1");
	json_decref(outs);

	unsigned char key[32];
	assert_int_equal(mo_state_secret_key(st, key), 0);
	for (int i = 0; i < 32; i++)
		assert_int_equal(key[i], i);

	/* version 2 is in place: the event log and the journal index */
	assert_int_equal(mo_state_event_add(st, "run-1", "{\"event\":\"migrated\"}"), 0);
	mo_state_close(st);
	v = raw_query(f->path, "PRAGMA user_version");
	assert_int_equal(atoi(v), mo_state_schema_latest());
	free(v);
	v = raw_query(f->path, "SELECT count(*) FROM sqlite_master"
			       " WHERE type = 'index' AND name = 'operations_status'");
	assert_string_equal(v, "1");
	free(v);

	/* reopening a migrated file is a no-op */
	st = open_ok(f->path);
	assert_int_equal(mo_state_serial(st), 7);
	mo_state_close(st);
}

static void test_state_newer_schema_refused(void **ts)
{
	fixture *f = *ts;
	mo_state *st = open_ok(f->path);
	char sql[64];

	put(st, "module.m.t.a", "id-a", NULL, NULL);
	mo_state_close(st);
	snprintf(sql, sizeof(sql), "PRAGMA user_version = %d", mo_state_schema_latest() + 1);
	raw_sql(f->path, sql);

	st = NULL;
	assert_int_equal(mo_state_open(&st, f->path), MO_ESTATE);
	assert_null(st);
	assert_error_contains("newer");
	assert_error_contains(f->path);
	assert_error_contains("upgrade mecorch");
}

/* ---- the writer lock ------------------------------------------------------------------------ */

static void test_state_lock_conflict(void **ts)
{
	fixture *f = *ts;
	mo_state *a = open_ok(f->path), *b = open_ok(f->path);
	mo_lock_info held, li;
	char pidstr[32];

	assert_int_equal(mo_state_lock(a, "apply", 600, NULL), 0);
	assert_int_equal(mo_state_lock_get(a, &held), 0);
	assert_int_equal(held.pid, (long)getpid());
	assert_string_equal(held.operation, "apply");
	assert_non_null(strchr(held.owner, '@'));
	assert_non_null(strstr(held.owner, held.host));
	assert_true(held.expires >= held.created + 600);

	assert_int_equal(mo_state_lock(b, "destroy", 600, &li), MO_ELOCKED);
	assert_string_equal(li.id, held.id);
	assert_string_equal(li.owner, held.owner);
	assert_int_equal(li.pid, (long)getpid());
	mo_lock_info_clear(&li);
	assert_error_contains(held.owner);
	snprintf(pidstr, sizeof(pidstr), "(pid %ld)", (long)getpid());
	assert_error_contains(pidstr);
	assert_error_contains("running apply since");
	assert_error_contains(" UTC");
	assert_error_contains(held.id);
	assert_error_contains("mecorch lock unlock");

	/* a non-holder's unlock does not release it */
	assert_int_equal(mo_state_unlock(b), 0);
	assert_int_equal(mo_state_lock_get(b, &li), 0);
	assert_string_equal(li.id, held.id);
	mo_lock_info_clear(&li);
	assert_int_equal(mo_state_lock_renew(b, 60), MO_EINVAL);

	/* locking again while holding refreshes the same lock */
	assert_int_equal(mo_state_lock(a, "refresh", 600, NULL), 0);
	assert_int_equal(mo_state_lock_get(b, &li), 0);
	assert_string_equal(li.id, held.id);
	assert_string_equal(li.operation, "refresh");
	mo_lock_info_clear(&li);

	/* the holder renews and releases */
	assert_int_equal(mo_state_lock_renew(a, 1200), 0);
	assert_int_equal(mo_state_lock_get(b, &li), 0);
	assert_true(li.expires >= held.created + 1200);
	mo_lock_info_clear(&li);
	assert_int_equal(mo_state_unlock(a), 0);
	assert_int_equal(mo_state_lock_get(a, &li), MO_ENOTFOUND);

	assert_int_equal(mo_state_lock(b, "destroy", 600, NULL), 0);
	assert_int_equal(mo_state_lock(a, "apply", 600, NULL), MO_ELOCKED);
	/* closing the holder releases the lock */
	mo_state_close(b);
	assert_int_equal(mo_state_lock(a, "apply", 600, NULL), 0);
	mo_lock_info_clear(&held);
	mo_state_close(a);

	/* bad arguments */
	a = open_ok(f->path);
	assert_int_equal(mo_state_lock(a, "apply", 0, NULL), MO_EINVAL);
	assert_int_equal(mo_state_lock(a, NULL, 10, NULL), MO_EINVAL);
	mo_state_close(a);
}

static void test_state_lock_dead_pid(void **ts)
{
	fixture *f = *ts;
	mo_state *st;
	mo_lock_info li;
	int wstatus;
	pid_t pid;

	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		/* takes the lock and vanishes without unlocking, as after kill -9 */
		mo_state *cst = NULL;
		if (mo_state_open(&cst, f->path) < 0 || mo_state_lock(cst, "apply", 3600, NULL) < 0)
			_exit(1);
		_exit(0);
	}
	assert_int_equal(waitpid(pid, &wstatus, 0), pid);
	assert_true(WIFEXITED(wstatus));
	assert_int_equal(WEXITSTATUS(wstatus), 0);

	st = open_ok(f->path);
	assert_int_equal(mo_state_lock_get(st, &li), 0);
	assert_int_equal(li.pid, (long)pid);
	assert_true(li.expires > mo_wall_s() + 60); /* lease still running */
	char *dead_id = mo_strdup(li.id);
	mo_lock_info_clear(&li);

	assert_int_equal(mo_state_lock(st, "apply", 600, NULL), 0);
	assert_int_equal(mo_state_lock_get(st, &li), 0);
	assert_int_equal(li.pid, (long)getpid());
	assert_string_not_equal(li.id, dead_id);
	mo_lock_info_clear(&li);
	mo_free(dead_id);
	mo_state_close(st);
}

static void test_state_lock_expired(void **ts)
{
	fixture *f = *ts;
	mo_state *a = open_ok(f->path), *b = open_ok(f->path);
	mo_lock_info li;
	char *a_id;

	assert_int_equal(mo_state_lock(a, "apply", 600, NULL), 0);
	assert_int_equal(mo_state_lock(b, "apply", 600, NULL), MO_ELOCKED);
	assert_int_equal(mo_state_lock_get(a, &li), 0);
	a_id = mo_strdup(li.id);
	mo_lock_info_clear(&li);

	/* a's lease ran out (a hung, or its renewals stopped) */
	raw_sql(f->path, "UPDATE locks SET expires = created - 1");
	assert_int_equal(mo_state_lock(b, "apply", 600, NULL), 0);
	assert_int_equal(mo_state_lock_get(b, &li), 0);
	assert_string_not_equal(li.id, a_id);
	char *b_id = mo_strdup(li.id);
	mo_lock_info_clear(&li);

	/* a still believes it holds the lock: its unlock leaves b's alone */
	assert_int_equal(mo_state_unlock(a), 0);
	assert_int_equal(mo_state_lock_get(a, &li), 0);
	assert_string_equal(li.id, b_id);
	mo_lock_info_clear(&li);

	/* the same when a is closed while holding a stale id */
	raw_sql(f->path, "UPDATE locks SET expires = created - 1");
	assert_int_equal(mo_state_lock(a, "apply", 600, NULL), 0);
	raw_sql(f->path, "UPDATE locks SET expires = created - 1");
	assert_int_equal(mo_state_lock(b, "apply", 600, NULL), 0);
	assert_int_equal(mo_state_lock_get(b, &li), 0);
	mo_free(b_id);
	b_id = mo_strdup(li.id);
	mo_lock_info_clear(&li);
	mo_state_close(a);
	assert_int_equal(mo_state_lock_get(b, &li), 0);
	assert_string_equal(li.id, b_id);
	mo_lock_info_clear(&li);

	mo_free(a_id);
	mo_free(b_id);
	mo_state_close(b);
}

static void test_state_lock_force(void **ts)
{
	fixture *f = *ts;
	mo_state *a = open_ok(f->path), *b = open_ok(f->path);
	mo_lock_info li;

	assert_int_equal(mo_state_lock(a, "apply", 600, NULL), 0);
	assert_int_equal(mo_state_lock_get(b, &li), 0);
	assert_int_equal(mo_state_lock_force(b, "0000000000000000"), MO_ENOTFOUND);
	assert_int_equal(mo_state_lock_force(b, li.id), 0);
	assert_int_equal(mo_state_lock_force(b, li.id), MO_ENOTFOUND);
	mo_lock_info_clear(&li);
	assert_int_equal(mo_state_lock_get(b, &li), MO_ENOTFOUND);

	/* the old holder finds out when it renews */
	assert_int_equal(mo_state_lock_renew(a, 600), MO_ELOCKED);
	assert_error_contains("no longer held");
	assert_int_equal(mo_state_lock(b, "apply", 600, NULL), 0);
	assert_int_equal(mo_state_lock(a, "apply", 600, NULL), MO_ELOCKED);
	mo_state_close(a);
	mo_state_close(b);
}

/* A handle whose lock was forced away writes nothing more, whatever the
 * write, until it takes the lock again; the new holder writes freely. */
static void test_state_lock_lost_writes(void **ts)
{
	fixture *f = *ts;
	mo_state *a = open_ok(f->path), *b = open_ok(f->path);
	mo_resource *r = mkres("m.t.x", "id-x", "{\"v\":1}", NULL);
	json_t *outs = json_pack("{s:{s:i,s:b}}", "o", "value", 1, "sensitive", 0);
	mo_lock_info li;
	int64_t op = 0;

	assert_int_equal(mo_state_lock(a, "apply", 600, NULL), 0);
	assert_true(mo_state_holds_lock(a));
	put(a, "m.t.a", "id-a", "{}", NULL);
	assert_int_equal(mo_state_lock_get(b, &li), 0);
	assert_int_equal(mo_state_lock_force(b, li.id), 0);
	mo_lock_info_clear(&li);
	assert_int_equal(mo_state_lock(b, "apply", 600, NULL), 0);

	assert_int_equal(mo_state_put(a, r), MO_ELOCKED);
	assert_error_contains("no longer held");
	assert_false(mo_state_holds_lock(a));
	assert_int_equal(mo_state_rm(a, "m.t.a"), MO_ELOCKED);
	assert_int_equal(mo_state_outputs_set(a, outs), MO_ELOCKED);
	assert_int_equal(mo_state_op_begin(a, "run-a", MO_OP_CREATE, "tok", r, &op), MO_ELOCKED);
	assert_int_equal(mo_state_batch_begin(a), MO_ELOCKED);

	/* nothing of a's reached the state; b writes */
	put(b, "m.t.b", "id-b", "{}", NULL);
	assert_int_equal(mo_state_op_begin(b, "run-b", MO_OP_CREATE, "tok", r, &op), 0);
	{
		mo_resource **list = NULL;
		size_t n = 0;
		assert_int_equal(mo_state_list(b, &list, &n), 0);
		assert_int_equal(n, 2); /* m.t.a (before the takeover) and m.t.b */
		mo_resource_list_free(list, n);
	}
	mo_state_unlock(b);
	/* a takes the lock again: it writes again */
	assert_int_equal(mo_state_lock(a, "apply", 600, NULL), 0);
	put(a, "m.t.c", "id-c", "{}", NULL);
	json_decref(outs);
	mo_resource_free(r);
	mo_state_close(a);
	mo_state_close(b);
}

/* ---- sensitive values ---------------------------------------------------------------------- */

static void test_state_secret_key(void **ts)
{
	fixture *f = *ts;
	static const char pass[] = "correct horse battery staple";
	unsigned char k1[32], k2[32], k3[32], want[32];
	mo_state *st = open_ok(f->path), *other = open_ok(":memory:");

	unsetenv("MECORCH_STATE_KEY");
	assert_int_equal(mo_state_secret_key(st, k1), 0);
	assert_int_equal(mo_state_secret_key(other, k3), 0);
	assert_memory_not_equal(k1, k3, 32);
	mo_state_close(other);
	mo_state_close(st);

	st = open_ok(f->path);
	assert_int_equal(mo_state_secret_key(st, k2), 0);
	assert_memory_equal(k1, k2, 32);

	setenv("MECORCH_STATE_KEY", pass, 1);
	assert_int_equal(mo_state_secret_key(st, k2), 0);
	SHA256((const unsigned char *)pass, strlen(pass), want);
	assert_memory_equal(k2, want, 32);
	assert_memory_not_equal(k1, k2, 32);

	/* empty counts as unset */
	setenv("MECORCH_STATE_KEY", "", 1);
	assert_int_equal(mo_state_secret_key(st, k2), 0);
	assert_memory_equal(k1, k2, 32);
	unsetenv("MECORCH_STATE_KEY");
	mo_state_close(st);
}

/* Whether needle occurs in the bytes of the file (a missing file holds nothing). */
static int file_contains(const char *path, const char *needle)
{
	char *data = NULL;
	size_t len = 0;
	int found;
	if (mo_file_read(&data, &len, path) == MO_ENOTFOUND)
		return 0;
	assert_non_null(data);
	found = memmem(data, len, needle, strlen(needle)) != NULL;
	mo_free(data);
	return found;
}

static void test_state_secret_not_stored(void **ts)
{
	fixture *f = *ts;
	static const char clear[] = "Xq7-very-secret-db-password-Zr9";
	mo_state *st = open_ok(f->path);
	unsigned char key[32];
	json_t *secret, *h, *outs;
	mo_resource *r;
	char wal[160];

	assert_int_equal(mo_state_secret_key(st, key), 0);
	secret = json_string(clear);
	h = mo_secret_hash(key, secret);
	assert_non_null(h);

	r = mkres("module.db.instance.main", "db-1234", NULL, NULL);
	assert_int_equal(json_object_set(r->props, "password", h), 0);
	assert_int_equal(json_object_set_new(r->props, "engine", json_string("postgres")), 0);
	assert_int_equal(mo_state_put(st, r), 0);
	int64_t op = 0;
	assert_int_equal(mo_state_op_begin(st, "run-s", MO_OP_UPDATE, "tok-s", r, &op), 0);
	assert_int_equal(mo_state_op_finish(st, op, "done", NULL, r, NULL, NULL), 0);
	mo_resource_free(r);
	outs = json_pack("{s:{s:O,s:b}}", "db_password", "value", h, "sensitive", 1);
	assert_int_equal(mo_state_outputs_set(st, outs), 0);
	json_decref(outs);

	/* the marker reads back and still matches a fresh hash of the value */
	assert_int_equal(mo_state_get(st, "module.db.instance.main", &r), 0);
	assert_true(json_equal(json_object_get(r->props, "password"), h));
	mo_resource_free(r);
	mo_state_close(st);

	snprintf(wal, sizeof(wal), "%s-wal", f->path);
	/* the file does hold the data around it, and the marker ... */
	assert_true(file_contains(f->path, "postgres") || file_contains(wal, "postgres"));
	assert_true(file_contains(f->path, json_string_value(json_object_get(h, "$sensitive"))) ||
		    file_contains(wal, json_string_value(json_object_get(h, "$sensitive"))));
	/* ... but never the clear text */
	assert_false(file_contains(f->path, clear));
	assert_false(file_contains(wal, clear));
	json_decref(secret);
	json_decref(h);
}

/* ---- out of memory ------------------------------------------------------------------------- */

static void test_state_alloc_failure(void **ts)
{
	fixture *f = *ts;
	mo_state *st = open_ok(f->path);
	static mo_resource *sentinel[1];
	mo_resource **list, *r;
	mo_op **ops;
	mo_lock_info li;
	size_t n;
	long i;
	int rc;
	char addr[64];

	for (int k = 0; k < 20; k++) {
		snprintf(addr, sizeof(addr), "module.m.t.r%02d", k);
		put(st, addr, "some-id", "{\"k\":[1,2,3]}", "[\"module.m.t.r00\"]");
	}
	r = mkres("module.m.t.r05", "some-id", NULL, NULL);
	assert_int_equal(mo_state_op_begin(st, "run-a", MO_OP_UPDATE, "tok", r, NULL), 0);
	assert_int_equal(mo_state_op_begin(st, "run-a", MO_OP_DELETE, "tok2", r, NULL), 0);
	mo_resource_free(r);
	assert_int_equal(mo_state_lock(st, "apply", 60, NULL), 0);

	for (i = 1;; i++) {
		list = sentinel; /* must stay untouched on failure */
		n = 12345;
		mo_alloc_fail_after(i);
		rc = mo_state_list(st, &list, &n);
		mo_alloc_fail_after(0);
		if (rc == 0)
			break;
		assert_int_equal(rc, MO_ENOMEM);
		assert_ptr_equal(list, sentinel);
		assert_int_equal(n, 12345);
	}
	assert_true(i > 20); /* every resource's allocations were failed in turn */
	assert_int_equal(n, 20);
	mo_resource_list_free(list, n);

	for (i = 1;; i++) {
		r = NULL;
		mo_alloc_fail_after(i);
		rc = mo_state_get(st, "module.m.t.r07", &r);
		mo_alloc_fail_after(0);
		if (rc == 0)
			break;
		assert_int_equal(rc, MO_ENOMEM);
		assert_null(r);
	}
	assert_true(i > 1);
	assert_string_equal(r->address, "module.m.t.r07");
	mo_resource_free(r);

	for (i = 1;; i++) {
		ops = NULL;
		mo_alloc_fail_after(i);
		rc = mo_state_op_pending(st, &ops, &n);
		mo_alloc_fail_after(0);
		if (rc == 0)
			break;
		assert_int_equal(rc, MO_ENOMEM);
		assert_null(ops);
	}
	assert_true(i > 2);
	assert_int_equal(n, 2);
	mo_op_list_free(ops, n);

	for (i = 1;; i++) {
		mo_alloc_fail_after(i);
		rc = mo_state_lock_get(st, &li);
		mo_alloc_fail_after(0);
		if (rc == 0)
			break;
		assert_int_equal(rc, MO_ENOMEM);
		assert_null(li.id);
		assert_null(li.owner);
	}
	assert_true(i > 1);
	assert_string_equal(li.operation, "apply");
	mo_lock_info_clear(&li);

	/* copying */
	assert_int_equal(mo_state_get(st, "module.m.t.r03", &r), 0);
	for (i = 1;; i++) {
		mo_resource *copy = NULL;
		mo_alloc_fail_after(i);
		rc = mo_resource_dup(&copy, r);
		mo_alloc_fail_after(0);
		if (rc == 0) {
			mo_resource_free(copy);
			break;
		}
		assert_int_equal(rc, MO_ENOMEM);
		assert_null(copy);
	}
	assert_true(i > 1);
	mo_resource_free(r);
	mo_state_close(st);

	/* opening: the handle's own allocations */
	for (i = 1;; i++) {
		st = NULL;
		mo_alloc_fail_after(i);
		rc = mo_state_open(&st, f->path);
		mo_alloc_fail_after(0);
		if (rc == 0)
			break;
		assert_int_equal(rc, MO_ENOMEM);
		assert_null(st);
	}
	assert_true(i > 1);
	assert_int_equal(mo_state_serial(st), 20);
	mo_state_close(st);
}

int main(void)
{
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
	const struct CMUnitTest tests[] = {
		T(test_state_open_create),   T(test_state_open_errors),
		T(test_state_serial),        T(test_state_resources),
		T(test_state_memory),        T(test_state_depose),
		T(test_state_journal_crash), T(test_state_journal_finish),
		T(test_state_outputs),       T(test_state_events),
		T(test_state_migrate_v1),    T(test_state_newer_schema_refused),
		T(test_state_lock_conflict), T(test_state_lock_dead_pid),
		T(test_state_lock_expired),  T(test_state_lock_force),
		T(test_state_lock_lost_writes),
		T(test_state_secret_key),    T(test_state_secret_not_stored),
		T(test_state_alloc_failure), T(test_state_unused_token),
	};
#undef T
	return cmocka_run_group_tests(tests, NULL, NULL);
}
