/*
 * exec.c - the executor.  One loop thread; each action is a job that moves
 * through phases, and a phase that calls a module handler runs it as a
 * task (coroutine).  A task waiting on a driver costs a coroutine, not a
 * thread: parallelism bounds the jobs in flight.
 *
 * Journal discipline (see state.h): an intent is committed before the
 * handler runs; success records the outcome and the resource in one
 * transaction.  A handler that fails leaves its intent pending, exactly as
 * a crash would: the next run's recovery asks the module what really
 * happened, so a half-done create is never lost.
 */
#include "exec.h"
#include "common.h"
#include "drivers.h"
#include "graph.h"
#include "http.h"
#include "jdiff.h"
#include "lj.h"
#include "loop.h"
#include "secret.h"

#include <lauxlib.h>
#include <string.h>
#include <sys/resource.h>

enum { J_PENDING, J_READY, J_RUNNING, J_OK, J_FAILED, J_SKIPPED };

enum {
	P_INIT,
	P_DEPOSE,
	P_CREATE,
	P_UPDATE,
	P_DELETE,
	P_DELETE_DEPOSED,
	P_READ,     /* refresh */
	P_RECOVER,  /* resolve a pending intent */
	P_FINISH,
};

typedef enum { K_APPLY, K_REFRESH, K_RECOVER } run_kind;

typedef struct job {
	size_t idx;
	int status, phase, action;
	size_t waiting;          /* dependencies not finished yet */
	mo_task *task;
	int64_t t0;
	int64_t op_id;
	char token[33];
	json_t *clear, *masked;  /* resolved props */
	mo_instance *inst;
	const mo_rtype *rtype;
	const char *type;
	const char *address;
	mo_change *c;            /* apply */
	mo_resource *rec;        /* refresh / recover: the record read */
	mo_resource *fresh;      /* refresh: what read() returned (NULL: gone) */
	mo_op *op;               /* recover */
	char *deposed;
	char where[160];         /* handler definition, for messages */
	char label[300];
} job;

typedef struct {
	job *j;
	int nargs;
} wake_item;

typedef struct {
	run_kind kind;
	mo_rt *rt;
	mo_state *st;
	mo_plan *p;
	mo_changeset *cs;
	const mo_exec_opts *o;
	mo_exec_result *res;
	mo_graph *g;             /* apply: cs->g; others: NULL (no edges) */
	job *jobs;
	size_t n;
	size_t *ready, rhead, rtail;
	wake_item *wakes;
	size_t nwakes, capwakes;
	size_t inflight, done;
	json_t *results;         /* address -> outputs with id, in clear */
	const json_t *secrets;
	unsigned char key[32];
	char run_id[33];
	int stop;                /* fail-fast or fatal */
	int fatal;               /* state store failure: code */
	uint64_t lease_timer;
	/* refresh */
	json_t *drift;
	int persist;
	int import;              /* refresh of a resource not yet in the state */
	int batching;            /* a journal batch is open (batch_open) */
} exec;

void mo_exec_opts_defaults(mo_exec_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->parallelism = 32;
	o->lease_s = 120;
}

void mo_exec_result_clear(mo_exec_result *r)
{
	json_decref(r->outputs);
	json_decref(r->errors);
	memset(r, 0, sizeof(*r));
}

static int64_t cpu_now_us(void)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	return (int64_t)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000 + ru.ru_utime.tv_usec +
	       ru.ru_stime.tv_usec;
}

static void emit(exec *x, const char *type, const job *j, const char *message, int64_t elapsed)
{
	mo_event ev;
	if (!x->o->on_event)
		return;
	memset(&ev, 0, sizeof(ev));
	ev.type = type;
	ev.address = j ? j->address : NULL;
	ev.action = j ? (x->kind == K_REFRESH ? "read" : x->kind == K_RECOVER ? "recover"
						: mo_action_name(j->action)) : NULL;
	ev.message = message;
	ev.elapsed_ms = elapsed;
	ev.done = x->done;
	ev.total = x->n;
	ev.inflight = x->inflight;
	x->o->on_event(x->o->ud, &ev);
}

/* ---- value lookup for resolution ---------------------------------------- */

static const json_t *result_value(void *ud, const char *address, int *partial)
{
	exec *x = ud;
	(void)partial;
	return json_object_get(x->results, address);
}

/* ---- handlers ----------------------------------------------------------- */

static void on_wake(mo_task *t, int nargs, void *ud)
{
	exec *x = ud;
	job *j = mo_task_userdata(t);
	if (x->nwakes == x->capwakes) {
		size_t cap = x->capwakes ? x->capwakes * 2 : 64;
		wake_item *n = mo_realloc(x->wakes, cap * sizeof(*n));
		if (!n) {
			x->fatal = mo_error_set(MO_ENOMEM, "out of memory");
			return;
		}
		x->wakes = n;
		x->capwakes = cap;
	}
	x->wakes[x->nwakes].j = j;
	x->wakes[x->nwakes].nargs = nargs;
	x->nwakes++;
}

/* Push ctx for job j onto L.  Stack: +1. */
static void push_ctx(exec *x, job *j, lua_State *L, int with_intent)
{
	lua_createtable(L, 0, 12);
	mo_drivers_push_ctx(L);
	lua_pushlightuserdata(L, NULL);
	lua_setfield(L, -2, "null");
	lua_pushstring(L, j->address);
	lua_setfield(L, -2, "address");
	lua_pushstring(L, j->inst->name);
	lua_setfield(L, -2, "module");
	lua_pushstring(L, j->type);
	lua_setfield(L, -2, "type");
	lua_pushstring(L, x->run_id);
	lua_setfield(L, -2, "run_id");
	if (with_intent && j->token[0]) {
		lua_pushstring(L, j->token);
		lua_setfield(L, -2, "intent");
	}
}

/* Start handler fn of the job's type with ctx and the given arguments
 * (JSON values; a NULL pointer pushes nil; id pushed as a string). */
static int start_handler(exec *x, job *j, const char *fn, const char *id, int pass_id,
			 const json_t *a1, const json_t *a2, int with_intent)
{
	lua_State *L = mo_sandbox_L(j->inst->sb);
	lua_Debug ar;
	int nargs = 1, rc;
	if ((rc = mo_instance_push_handler(j->inst, j->type, fn)) < 0)
		return rc;
	lua_pushvalue(L, -1);
	if (lua_getinfo(L, ">S", &ar))
		snprintf(j->where, sizeof(j->where), "%s:%d", ar.short_src, ar.linedefined);
	push_ctx(x, j, L, with_intent);
	if (pass_id) {
		if (id)
			lua_pushstring(L, id);
		else
			lua_pushnil(L);
		nargs++;
	}
	if (a1) {
		mo_lj_push(L, a1);
		nargs++;
	}
	if (a2) {
		mo_lj_push(L, a2);
		nargs++;
	}
	snprintf(j->label, sizeof(j->label), "%s %s()", j->address, fn);
	if ((rc = mo_task_new(&j->task, j->inst->sb, nargs, j->label)) < 0)
		return rc;
	mo_task_set_wake(j->task, on_wake, x);
	mo_task_set_userdata(j->task, j);
	return 0;
}

static int bad_return(job *j, const char *fn, const char *what)
{
	return mo_error_set(MO_EMODULE, "%s: %s() of module %s (%s, defined at %s) %s", j->address, fn,
			    j->inst->name, j->inst->mod_name ? j->inst->mod_name : j->inst->shown,
			    j->where, what);
}

/* The id returned at stack index idx of T: a non-empty string. */
static int take_id(job *j, lua_State *T, int idx, const char *fn, int allow_nil, char **out)
{
	*out = NULL;
	if (allow_nil && lua_isnoneornil(T, idx))
		return 0;
	if (lua_type(T, idx) != LUA_TSTRING || lua_rawlen(T, idx) == 0) {
		char what[128];
		snprintf(what, sizeof(what), "returned an invalid id: expected a non-empty string, got %s",
			 lua_type(T, idx) == LUA_TSTRING ? "an empty string" : luaL_typename(T, idx));
		return bad_return(j, fn, what);
	}
	*out = mo_strdup(lua_tostring(T, idx));
	return 0;
}

/* Outputs at idx: nil or a table, converted to a JSON object. */
static int take_outputs(job *j, lua_State *T, int idx, const char *fn, json_t **out)
{
	json_t *v;
	*out = NULL;
	if (lua_isnoneornil(T, idx)) {
		*out = json_object();
		return 0;
	}
	if (!lua_istable(T, idx))
		return bad_return(j, fn, "returned outputs that are not a table");
	if (mo_lj_to_json(T, idx, "outputs", &v) < 0) {
		char what[700];
		snprintf(what, sizeof(what), "returned outputs that are not JSON-serialisable: %.600s",
			 mo_error_last()->message);
		return bad_return(j, fn, what);
	}
	if (!json_is_object(v)) {
		json_decref(v);
		return bad_return(j, fn, "returned outputs that are a list, not a table of named values");
	}
	if (mo_json_has_deferred(v)) {
		json_decref(v);
		return bad_return(j, fn, "returned a reference among its outputs");
	}
	*out = v;
	return 0;
}

static mo_resource *record_for(job *j, const char *address, const char *id, json_t *props,
			       json_t *outputs)
{
	mo_resource *r = mo_calloc(1, sizeof(*r));
	if (!r)
		return NULL;
	r->address = mo_strdup(address);
	r->module = mo_strdup(j->inst->name);
	r->type = mo_strdup(j->type);
	r->id = mo_strdup(id);
	r->source = mo_strdup(j->inst->pinned ? j->inst->pinned : j->inst->dir);
	r->props = json_incref(props);
	r->outputs = json_incref(outputs);
	r->deps = j->c && j->c->want ? json_incref(j->c->want->deps)
				     : (j->c && j->c->have ? json_incref(j->c->have->deps) : json_array());
	r->status = MO_RES_OK;
	return r;
}

/* Props for a handler that acts on an existing object (delete, read):
 * what the state recorded, with the values it keeps only as keyed hashes
 * filled in from the plan's current values where the plan still declares
 * the resource (a token, say, is needed to reach the object).  New ref. */
static json_t *props_for_existing(const exec *x, const json_t *stored, const json_t *declared)
{
	const char *k;
	json_t *v, *res = json_deep_copy(stored);
	if (!json_is_object(res))
		return res;
	json_object_foreach(res, k, v) {
		json_t *d = json_is_object(declared) ? json_object_get(declared, k) : NULL, *s;
		size_t i;
		if (!mo_secret_is_hash(v))
			continue;
		if (d && !mo_json_has_deferred(d)) {
			json_object_set(res, k, d);
			continue;
		}
		/* no longer declared: the plan's sensitive value with that keyed hash */
		json_array_foreach(x->secrets, i, s) {
			json_t *h = mo_secret_hash(x->key, s);
			int same = h && mo_json_equal(h, v);
			json_decref(h);
			if (same) {
				json_object_set(res, k, s);
				break;
			}
		}
	}
	return res;
}

/* ---- phases of apply ----------------------------------------------------- */

static int journal(exec *x, job *j, int kind, const char *address, const char *id, json_t *props)
{
	mo_resource *r = record_for(j, address, id, props, NULL);
	int rc;
	if (!r)
		return mo_error_set(MO_ENOMEM, "out of memory");
	if (kind == MO_OP_CREATE) {
		char *reuse = NULL;
		if ((rc = mo_state_op_unused_token(x->st, address, &reuse)) < 0) {
			mo_resource_free(r);
			x->fatal = rc;
			return rc;
		}
		if (reuse)
			snprintf(j->token, sizeof(j->token), "%s", reuse);
		else if (mo_random_hex(j->token, 16) < 0) {
			mo_resource_free(r);
			return MO_EIO;
		}
		mo_free(reuse);
	}
	rc = mo_state_op_begin(x->st, x->run_id, kind, kind == MO_OP_CREATE ? j->token : NULL, r,
			       &j->op_id);
	mo_resource_free(r);
	if (rc < 0)
		x->fatal = rc;
	return rc;
}

static int phase_begin(exec *x, job *j)
{
	mo_change *c = j->c;
	int rc;
	switch (j->phase) {
	case P_INIT: {
		int unk = 0;
		j->action = c->action;
		if (c->want) {
			if ((rc = mo_resolve(c->want->props, result_value, x, &j->clear, &unk)) < 0)
				return mo_error_prefix("%s", j->address);
			if (unk)
				return mo_error_set(MO_EINVAL, "%s: some properties are still unknown after "
						    "their dependencies were applied", j->address);
			j->masked = mo_mask(j->clear, j->rtype, x->secrets, x->key);
			/* a deferred change is decided again now that its values are
			 * known, unless its old object is already gone (split replace) */
			if (c->deferred && c->destroy_half == SIZE_MAX) {
				json_t *changed = NULL;
				char *reason = NULL;
				j->action = mo_decide(j->rtype, c->have, j->masked, &changed, &reason);
				json_decref(changed);
				mo_free(reason);
			}
		}
		switch (j->action) {
		case MO_ACT_CREATE: j->phase = P_CREATE; break;
		case MO_ACT_UPDATE: j->phase = P_UPDATE; break;
		case MO_ACT_DELETE: j->phase = P_DELETE; break;
		case MO_ACT_REPLACE:
			/* a split replace's destroy half has already run */
			j->phase = j->rtype->create_before_destroy ? P_DEPOSE
				   : c->destroy_half != SIZE_MAX ? P_CREATE : P_DELETE;
			break;
		default:
			if (c->have)
				json_object_set(x->results, j->address, c->have->outputs);
			j->phase = P_FINISH;
		}
		if (j->action != MO_ACT_NOOP)
			emit(x, "start", j, NULL, 0);
		return 0;
	}
	case P_DEPOSE:
		if ((rc = mo_state_depose(x->st, j->address, &j->deposed)) < 0) {
			x->fatal = rc;
			return rc;
		}
		j->phase = P_CREATE;
		return 0;
	case P_CREATE:
		if ((rc = journal(x, j, MO_OP_CREATE, j->address, NULL, j->masked)) < 0)
			return rc;
		return start_handler(x, j, "create", NULL, 0, j->clear, NULL, 1);
	case P_UPDATE:
		if ((rc = journal(x, j, MO_OP_UPDATE, j->address, c->have->id, j->masked)) < 0)
			return rc;
		return start_handler(x, j, "update", c->have->id, 1, c->have->props, j->clear, 0);
	case P_DELETE:
	case P_DELETE_DEPOSED: {
		const char *addr = j->phase == P_DELETE ? j->address : j->deposed;
		json_t *props;
		if ((rc = journal(x, j, MO_OP_DELETE, addr, c->have->id, c->have->props)) < 0)
			return rc;
		{
			/* still declared (a replace, or a destroy run with the plan)? */
			const mo_desired *d = c->want ? c->want
				: x->cs && x->cs->plan ? mo_plan_find(x->cs->plan, j->address) : NULL;
			props = props_for_existing(x, c->have->props, d ? d->props : NULL);
		}
		rc = start_handler(x, j, "delete", c->have->id, 1, props, NULL, 0);
		json_decref(props);
		return rc;
	}
	case P_FINISH:
		j->status = J_OK;
		return 0;
	}
	return mo_error_set(MO_ERROR, "%s: bad phase", j->address);
}

/* A handler of job j finished: T holds nres results. */
static int phase_result(exec *x, job *j, lua_State *T, int nres)
{
	mo_change *c = j->c;
	json_t *outputs = NULL, *clear_out, *masked_out;
	mo_resource *r = NULL;
	char *id = NULL;
	int rc = 0, base = lua_gettop(T) - nres + 1;
	switch (j->phase) {
	case P_CREATE:
		if ((rc = take_id(j, T, base, "create", 0, &id)) < 0 ||
		    (rc = take_outputs(j, T, base + 1, "create", &outputs)) < 0)
			break;
		goto record;
	case P_UPDATE:
		if ((rc = take_outputs(j, T, base, "update", &outputs)) < 0)
			break;
		if (json_object_size(outputs) == 0 && lua_isnoneornil(T, base))
			json_object_update(outputs, c->have->outputs);
		id = mo_strdup(c->have->id);
record:
		clear_out = json_deep_copy(outputs);
		json_object_set_new(clear_out, "id", json_string(id));
		masked_out = mo_mask(clear_out, j->rtype, x->secrets, x->key);
		r = record_for(j, j->address, id, j->masked, masked_out);
		json_decref(masked_out);
		rc = r ? mo_state_op_finish(x->st, j->op_id, "done", NULL, r, NULL, NULL)
		       : mo_error_set(MO_ENOMEM, "out of memory");
		if (rc < 0) {
			x->fatal = rc;
			json_decref(clear_out);
			break;
		}
		json_object_set_new(x->results, j->address, clear_out);
		j->phase = j->phase == P_CREATE && j->deposed ? P_DELETE_DEPOSED : P_FINISH;
		break;
	case P_DELETE:
	case P_DELETE_DEPOSED:
		rc = mo_state_op_finish(x->st, j->op_id, "done", NULL, NULL,
					j->phase == P_DELETE ? j->address : j->deposed, NULL);
		if (rc < 0) {
			x->fatal = rc;
			break;
		}
		j->phase = j->phase == P_DELETE && j->action == MO_ACT_REPLACE ? P_CREATE : P_FINISH;
		break;
	default:
		rc = mo_error_set(MO_ERROR, "%s: unexpected handler result", j->address);
	}
	lua_settop(T, base - 1);
	mo_resource_free(r);
	json_decref(outputs);
	mo_free(id);
	return rc;
}

/* ---- phases of refresh and recovery --------------------------------------- */

static int read_begin(exec *x, job *j)
{
	const mo_resource *known = x->kind == K_REFRESH ? j->rec : j->op->res;
	mo_desired *d = x->p ? mo_plan_find(x->p, known->address) : NULL;
	json_t *props;
	int rc;
	if (x->kind == K_RECOVER && d && !mo_json_has_deferred(d->props))
		/* the plan's current props: a recorded value that was wrong (a
		 * host key, an endpoint) must not block every later run */
		props = json_deep_copy(d->props);
	else
		props = props_for_existing(x, known->props, d ? d->props : NULL);
	if (x->kind == K_REFRESH) {
		rc = start_handler(x, j, "read", j->rec->id, 1, props, NULL, 0);
	} else {
		/* recover: a crashed create is found through its token */
		snprintf(j->token, sizeof(j->token), "%s", j->op->token ? j->op->token : "");
		rc = start_handler(x, j, "read", j->op->kind == MO_OP_CREATE ? NULL : j->op->res->id, 1,
				   props, NULL, 1);
	}
	json_decref(props);
	return rc;
}

static int read_result(exec *x, job *j, lua_State *T, int nres)
{
	int base = lua_gettop(T) - nres + 1, rc = 0, gone;
	json_t *props = NULL, *outputs = NULL, *mprops = NULL, *mout = NULL;
	char *id = NULL;
	mo_resource *r = NULL;
	const mo_resource *known = x->kind == K_REFRESH ? j->rec : j->op->res;
	gone = lua_isnoneornil(T, base);
	if (!gone) {
		if (!lua_istable(T, base)) {
			rc = bad_return(j, "read", "returned properties that are not a table (or nil when gone)");
			goto done;
		}
		if (mo_lj_to_json(T, base, "props", &props) < 0) {
			rc = bad_return(j, "read", mo_error_last()->message);
			goto done;
		}
		if ((rc = take_outputs(j, T, base + 1, "read", &outputs)) < 0)
			goto done;
		if ((rc = take_id(j, T, base + 2, "read", 1, &id)) < 0)
			goto done;
		if (!id && known->id)
			id = mo_strdup(known->id);
		if (!id) {
			rc = bad_return(j, "read", "found the object of a crashed create() but returned no id "
					"(third return value)");
			goto done;
		}
		json_object_set_new(outputs, "id", json_string(id));
		{
			/* the plan's secrets, and whatever the state holds as a
			 * hash (a secret since rotated is not in x->secrets) */
			json_t *m1 = mo_mask(props, j->rtype, x->secrets, x->key);
			json_t *m2 = mo_mask(outputs, j->rtype, x->secrets, x->key);
			mprops = mo_mask_like(m1, known->props, x->key);
			mout = mo_mask_like(m2, known->outputs, x->key);
			json_decref(m1);
			json_decref(m2);
		}
		r = record_for(j, known->address, id, mprops, mout);
		if (!r) {
			rc = mo_error_set(MO_ENOMEM, "out of memory");
			goto done;
		}
		json_decref(r->deps);
		r->deps = json_incref(known->deps ? known->deps : json_array());
		if (known->status == MO_RES_DEPOSED || strstr(known->address, "~deposed-"))
			r->status = MO_RES_DEPOSED;
	}
	if (x->kind == K_REFRESH) {
		json_t *d = NULL;
		if (gone) {
			d = json_pack("{s:s,s:s}", "address", known->address, "kind", "gone");
		} else if (!mo_json_equal(known->props, mprops)) {
			d = json_pack("{s:s,s:s,s:o}", "address", known->address, "kind", "changed",
				      "changes", mo_jdiff_top_keys(known->props, mprops));
		}
		if (d) {
			json_array_append_new(x->drift, d);
			emit(x, "drift", j, gone ? "gone" : "changed", 0);
		}
		if (x->persist) {
			if (gone && x->import)
				rc = mo_error_set(MO_ENOTFOUND, "%s: read() found no object with id %s",
						  known->address, known->id);
			else if (gone)
				rc = mo_state_rm(x->st, known->address);
			else if (d || x->import)
				rc = mo_state_put(x->st, r);
			if (rc < 0) {
				x->fatal = rc;
				goto done;
			}
		}
		if (!gone) {
			r->status = j->rec->status;
			j->fresh = r;
			r = NULL;
		}
	} else {
		/* recovery of a pending intent */
		const char *status, *said;
		if (j->op->kind == MO_OP_DELETE) {
			/* a delete that did not happen leaves the object recorded */
			status = gone ? "done" : "failed";
			said = gone ? "the object is gone" : "the object still exists and stays recorded";
			rc = mo_state_op_finish(x->st, j->op->id, status, gone ? NULL : "the object still exists",
						NULL, gone ? known->address : NULL, NULL);
		} else if (gone) {
			/* a create that never happened, or an updated object that vanished */
			status = "absent";
			said = j->op->kind == MO_OP_CREATE ? "the interrupted create made nothing"
							   : "the object is gone";
			rc = mo_state_op_finish(x->st, j->op->id, status, NULL, NULL,
						j->op->kind == MO_OP_UPDATE ? known->address : NULL, NULL);
		} else {
			status = "adopted";
			said = j->op->kind == MO_OP_CREATE ? "adopted what the interrupted create made"
							   : "adopted the object as it is now";
			rc = mo_state_op_finish(x->st, j->op->id, status, NULL, r, NULL, NULL);
		}
		if (rc < 0)
			x->fatal = rc;
		else
			emit(x, "recover", j, said, 0);
	}
	j->phase = P_FINISH;
done:
	lua_settop(T, base - 1);
	json_decref(props);
	json_decref(outputs);
	json_decref(mprops);
	json_decref(mout);
	mo_free(id);
	mo_resource_free(r);
	return rc;
}

/* ---- scheduling ------------------------------------------------------------ */

static void push_ready(exec *x, size_t i)
{
	x->jobs[i].status = J_READY;
	x->ready[x->rtail++ % (x->n + 1)] = i;
}

static void job_failed(exec *x, job *j, const char *raw, const char *traceback)
{
	/* a module's error text may quote a secret it was given */
	char *msg = mo_mask_text(x->secrets, raw), *tb = mo_mask_text(x->secrets, traceback);
	json_t *e = json_pack("{s:s,s:s,s:s}", "address", j->address, "action",
			      x->kind == K_REFRESH ? "read" : mo_action_name(j->action), "message",
			      msg ? msg : raw);
	if (tb && *tb)
		json_object_set_new(e, "traceback", json_string(tb));
	mo_free(tb);
	json_array_append_new(x->res->errors, e);
	j->status = J_FAILED;
	x->res->failed++;
	if (x->o->fail_fast)
		x->stop = 1;
	emit(x, "error", j, msg ? msg : raw, (mo_now_us() - j->t0) / 1000);
	mo_free(msg);
}

/* Mark everything that (transitively) depends on job i as skipped. */
static void skip_dependents(exec *x, size_t i)
{
	size_t *stack, top = 0;
	if (!x->g)
		return;
	stack = mo_malloc((x->n + 1) * sizeof(*stack));
	if (!stack) {
		x->fatal = mo_error_set(MO_ENOMEM, "out of memory");
		return;
	}
	stack[top++] = i;
	while (top) {
		size_t cur = stack[--top], nr;
		const size_t *rd = mo_graph_rdeps(x->g, cur, &nr);
		for (size_t k = 0; k < nr; k++) {
			job *d = &x->jobs[rd[k]];
			char msg[600];
			if (d->status != J_PENDING && d->status != J_READY)
				continue;
			d->status = J_SKIPPED;
			x->done++;
			x->res->skipped++;
			snprintf(msg, sizeof(msg), "not applied: %s failed", x->jobs[i].address);
			emit(x, "skip", d, msg, 0);
			stack[top++] = rd[k];
		}
	}
	mo_free(stack);
}

static void job_done(exec *x, job *j)
{
	size_t nr;
	const size_t *rd;
	int64_t elapsed = (mo_now_us() - j->t0) / 1000;
	x->inflight--;
	x->done++;
	if (j->status == J_OK) {
		x->res->ok++;
		/* the destroy half of a replace is counted with the replace */
		switch (j->c && j->c->half ? -1 : j->action) {
		case -1: break;
		case MO_ACT_CREATE: x->res->created++; break;
		case MO_ACT_UPDATE: x->res->updated++; break;
		case MO_ACT_REPLACE: x->res->replaced++; break;
		case MO_ACT_DELETE: x->res->deleted++; break;
		default: x->res->noop++;
		}
		if (x->kind == K_APPLY && j->action != MO_ACT_NOOP)
			emit(x, "ok", j, NULL, elapsed);
		if (x->g) {
			rd = mo_graph_rdeps(x->g, j->idx, &nr);
			for (size_t k = 0; k < nr; k++) {
				job *d = &x->jobs[rd[k]];
				if (d->status == J_PENDING && --d->waiting == 0)
					push_ready(x, rd[k]);
			}
		}
	} else {
		skip_dependents(x, j->idx);
	}
}

/* Run job j until it waits for a driver or ends.  nargs: values a driver
 * pushed for a waiting task. */
static void job_run(exec *x, job *j, int nargs)
{
	int rc, status, nres;
	for (;;) {
		if (x->fatal) {
			if (j->status == J_RUNNING)
				job_failed(x, j, mo_error_last()->message, NULL);
			break;
		}
		if (j->task) {
			rc = mo_task_resume(j->task, nargs, &status, &nres);
			nargs = 0;
			if (rc == 0 && status == MO_TASK_WAITING)
				return;
			if (rc == 0) {
				lua_State *T = mo_task_thread(j->task);
				rc = j->phase == P_READ || j->phase == P_RECOVER ? read_result(x, j, T, nres)
										   : phase_result(x, j, T, nres);
			} else if (x->kind == K_RECOVER && j->op->kind != MO_OP_CREATE) {
				/* read() cannot tell what an interrupted update or delete
				 * did: an update taints the resource (the next plan
				 * replaces it), a delete leaves it recorded */
				int upd = j->op->kind == MO_OP_UPDATE;
				char *msg = mo_sprintf("%s: %s", j->label, mo_error_last()->message);
				rc = mo_state_op_finish(x->st, j->op->id, upd ? "tainted" : "failed", msg, NULL,
							NULL, upd ? j->op->res->address : NULL);
				if (rc < 0)
					x->fatal = rc;
				else
					emit(x, "recover", j, upd ? "could not read it back: tainted, it will be replaced"
								  : "could not read it back: it stays recorded", 0);
				mo_free(msg);
				j->phase = P_FINISH;
				rc = 0;
			} else {
				char *msg = mo_sprintf("%s: %s", j->label, mo_error_last()->message);
				job_failed(x, j, msg ? msg : "error", mo_task_traceback(j->task));
				mo_free(msg);
			}
			mo_task_free(j->task);
			j->task = NULL;
			if (j->status == J_FAILED)
				break;
			if (rc < 0) {
				job_failed(x, j, mo_error_last()->message, NULL);
				break;
			}
			continue;
		}
		if (j->phase == P_READ || j->phase == P_RECOVER) {
			rc = read_begin(x, j);
		} else {
			if (j->phase == P_FINISH) {
				j->status = J_OK;
				break;
			}
			rc = phase_begin(x, j);
		}
		if (rc < 0) {
			job_failed(x, j, mo_error_last()->message, NULL);
			break;
		}
		if (j->status == J_OK)
			break;
	}
	job_done(x, j);
}

static void renew_lease(void *ud)
{
	exec *x = ud;
	int rc;
	x->lease_timer = 0;
	if ((rc = mo_state_lock_renew(x->st, x->o->lease_s)) < 0) {
		x->fatal = rc; /* MO_ELOCKED when the lock was lost: exit 5 */
		return;
	}
	mo_loop_timer(x->rt->loop, (int64_t)x->o->lease_s * 1000 / 3, renew_lease, x, &x->lease_timer);
}

/* Group commit of one loop turn's journal writes (state.h): opened before
 * jobs start or resume, committed before the loop runs again, so every
 * intent is durable before its request leaves. */
static void batch_open(exec *x)
{
	int rc;
	if (x->fatal || x->batching)
		return;
	if ((rc = mo_state_batch_begin(x->st)) < 0) {
		x->fatal = rc;
		return;
	}
	x->batching = 1;
	x->rt->defer_io = 1;
}

static void batch_close(exec *x)
{
	int rc;
	if (!x->batching)
		return;
	x->batching = 0;
	x->rt->defer_io = 0;
	if ((rc = mo_state_batch_commit(x->st)) < 0)
		x->fatal = rc;
}

static int run_jobs(exec *x)
{
	int64_t t0 = mo_now_us(), c0 = cpu_now_us();
	int rc = 0;
	x->ready = mo_calloc(x->n + 1, sizeof(*x->ready));
	if (!x->ready)
		return mo_error_set(MO_ENOMEM, "out of memory");
	for (size_t i = 0; i < x->n; i++) {
		size_t nd = 0;
		if (x->g)
			mo_graph_deps(x->g, i, &nd);
		x->jobs[i].waiting = nd;
		if (nd == 0)
			push_ready(x, i);
	}
	if (x->o->lease_s > 0 && mo_state_holds_lock(x->st))
		mo_loop_timer(x->rt->loop, (int64_t)x->o->lease_s * 1000 / 3, renew_lease, x, &x->lease_timer);
	while (x->done < x->n) {
		int interrupted = x->rt->interrupted && *x->rt->interrupted;
		if (interrupted)
			x->res->interrupted = 1;
		/* one journal batch per turn: what the drivers finished, then
		 * what can start now; committed before the loop sends anything */
		batch_open(x);
		/* job_run never wakes a task synchronously: drivers wake from loop
		 * callbacks only, so the list is stable while it is drained */
		for (size_t w = 0; w < x->nwakes; w++)
			job_run(x, x->wakes[w].j, x->wakes[w].nargs);
		x->nwakes = 0;
		while (!x->stop && !x->fatal && !interrupted && x->rhead != x->rtail &&
		       x->inflight < (size_t)x->o->parallelism) {
			job *j = &x->jobs[x->ready[x->rhead++ % (x->n + 1)]];
			if (j->status != J_READY)
				continue;
			j->status = J_RUNNING;
			j->t0 = mo_now_us();
			x->inflight++;
			job_run(x, j, 0);
		}
		batch_close(x);
		if (x->fatal)
			break; /* nothing queued in this turn may leave: its intent is not durable */
		if (x->done >= x->n ||
		    (x->inflight == 0 && (x->stop || interrupted || x->rhead == x->rtail)))
			break;
		if ((rc = mo_loop_run_once(x->rt->loop, 200)) < 0)
			x->fatal = rc;
	}
	if (x->lease_timer)
		mo_loop_timer_cancel(x->rt->loop, x->lease_timer);
	/* whatever never started counts as skipped */
	for (size_t i = 0; i < x->n; i++)
		if (x->jobs[i].status == J_PENDING || x->jobs[i].status == J_READY) {
			x->jobs[i].status = J_SKIPPED;
			x->res->skipped++;
		}
	x->res->elapsed_ms = (mo_now_us() - t0) / 1000;
	x->res->cpu_us = cpu_now_us() - c0;
	if (x->fatal)
		return x->fatal;
	if (x->res->interrupted)
		return mo_error_set(MO_EINTR, "interrupted: %zu action(s) finished, %zu not started",
				    x->res->ok + x->res->failed, x->res->skipped);
	if (x->res->failed)
		return mo_error_set(MO_EFAILED, "%zu action(s) failed", x->res->failed);
	return 0;
}

static void exec_free(exec *x)
{
	for (size_t i = 0; i < x->n; i++) {
		job *j = &x->jobs[i];
		if (j->task)
			mo_http_cancel_task(j->task); /* stop a transfer or sleep it still waits on */
		mo_task_free(j->task);
		json_decref(j->clear);
		json_decref(j->masked);
		mo_free(j->deposed);
		mo_resource_free(j->rec);
		mo_resource_free(j->fresh);
	}
	mo_free(x->jobs);
	mo_free(x->ready);
	mo_free(x->wakes);
	json_decref(x->results);
	json_decref(x->drift);
}

static int exec_init(exec *x, run_kind kind, mo_state *st, mo_plan *p, mo_rt *rt,
		     const mo_exec_opts *o, mo_exec_result *res, size_t n)
{
	memset(x, 0, sizeof(*x));
	x->kind = kind;
	x->st = st;
	x->p = p;
	x->rt = rt;
	x->o = o;
	x->res = res;
	x->n = n;
	x->results = json_object();
	x->secrets = p ? p->secrets : NULL;
	if (!res->errors)
		res->errors = json_array();
	if (o->run_id)
		snprintf(x->run_id, sizeof(x->run_id), "%s", o->run_id);
	else
		mo_random_hex(x->run_id, 16);
	if (mo_state_secret_key(st, x->key) < 0)
		return MO_ESTATE;
	x->jobs = mo_calloc(n + 1, sizeof(*x->jobs));
	if (!x->jobs)
		return mo_error_set(MO_ENOMEM, "out of memory");
	for (size_t i = 0; i < n; i++)
		x->jobs[i].idx = i;
	return 0;
}

int mo_exec_apply(mo_changeset *cs, mo_plan *p, mo_state *st, mo_rt *rt, const mo_exec_opts *o,
		  mo_exec_result *res)
{
	exec x;
	int rc;
	const char *k;
	json_t *v;
	if ((rc = exec_init(&x, K_APPLY, st, p, rt, o, res, cs->n)) < 0)
		goto done;
	x.cs = cs;
	x.g = cs->g;
	if (!p && cs->plan)
		x.secrets = cs->plan->secrets; /* a destroy still masks the plan's secrets */
	for (size_t i = 0; i < cs->n; i++) {
		job *j = &x.jobs[i];
		mo_change *c = &cs->c[i];
		j->c = c;
		j->action = c->action; /* what a skip event reports if it never starts */
		j->address = c->address;
		j->inst = c->inst;
		j->rtype = c->rtype;
		j->type = c->rtype->name;
		j->phase = P_INIT;
	}
	rc = run_jobs(&x);
	/* plan outputs, from what is known now */
	res->outputs = json_object();
	if (!p && rc == 0) {
		/* a destroy leaves no outputs behind */
		json_t *none = json_object();
		rc = mo_state_outputs_set(st, none);
		json_decref(none);
	}
	if (p && (rc == 0 || rc == MO_EFAILED || rc == MO_EINTR)) {
		json_t *stored = json_object();
		int orc = 0;
		/* resources left untouched keep their recorded outputs */
		for (size_t i = 0; i < cs->n; i++)
			if (!json_object_get(x.results, cs->c[i].address) && cs->c[i].have &&
			    cs->c[i].action != MO_ACT_DELETE && x.jobs[i].status != J_FAILED)
				json_object_set(x.results, cs->c[i].address, cs->c[i].have->outputs);
		json_object_foreach(p->outputs, k, v) {
			json_t *val = NULL;
			int sens = json_is_true(json_object_get(v, "sensitive"));
			if (mo_resolve(json_object_get(v, "value"), result_value, &x, &val, NULL) < 0) {
				json_decref(val);
				val = json_pack("{s:s}", "$unknown", mo_error_last()->message);
			}
			{
				json_t *masked = mo_mask_output(val, &sens, x.secrets, x.key);
				json_object_set_new(res->outputs, k,
						    json_pack("{s:O,s:b}", "value", val, "sensitive", sens));
				json_object_set_new(stored, k, json_pack("{s:o,s:b}", "value", masked, "sensitive", sens));
			}
			json_decref(val);
		}
		if (rc == 0)
			orc = mo_state_outputs_set(st, stored);
		json_decref(stored);
		if (orc < 0)
			rc = orc;
	}
done:
	exec_free(&x);
	return rc;
}

int mo_exec_recover(mo_state *st, mo_plan *p, mo_sources *src, mo_rt *rt, const mo_exec_opts *o,
		    size_t *resolved)
{
	mo_op **ops = NULL;
	size_t nops = 0;
	mo_instance_set extra = { NULL, 0 };
	mo_exec_result res;
	exec x;
	int rc;
	memset(&res, 0, sizeof(res));
	memset(&x, 0, sizeof(x));
	if (resolved)
		*resolved = 0;
	if ((rc = mo_state_op_pending(st, &ops, &nops)) < 0 || nops == 0)
		goto done;
	if ((rc = exec_init(&x, K_RECOVER, st, p, rt, o, &res, nops)) < 0)
		goto done;
	for (size_t i = 0; i < nops; i++) {
		job *j = &x.jobs[i];
		j->op = ops[i];
		j->address = ops[i]->res->address;
		j->type = ops[i]->res->type;
		j->phase = P_RECOVER;
		if ((rc = mo_instance_for(p, &extra, ops[i]->res->module, ops[i]->res->type,
					  ops[i]->res->source, src, rt, p ? &p->limits : NULL, &j->inst)) < 0) {
			mo_error_prefix("recovering %s", j->address);
			goto done;
		}
		j->rtype = mo_instance_type(j->inst, j->type);
	}
	rc = run_jobs(&x);
	if (resolved)
		*resolved = res.ok;
	if (rc == MO_EFAILED) {
		json_t *e = json_array_get(res.errors, 0);
		rc = mo_error_set(MO_EMODULE, "could not resolve %zu pending operation(s) of an earlier "
				  "run; first: %s", res.failed,
				  json_string_value(json_object_get(e, "message")));
	}
done:
	exec_free(&x);
	mo_exec_result_clear(&res);
	mo_op_list_free(ops, nops);
	mo_instance_set_clear(&extra);
	return rc;
}

int mo_exec_refresh(mo_state *st, mo_plan *p, mo_sources *src, mo_rt *rt, const mo_exec_opts *o,
		    int persist, mo_resource ***records, size_t *nrecords, json_t **drift)
{
	mo_resource **list = NULL, **outl = NULL;
	size_t n = 0, nout = 0;
	mo_instance_set extra = { NULL, 0 };
	mo_exec_result res;
	exec x;
	int rc;
	memset(&res, 0, sizeof(res));
	memset(&x, 0, sizeof(x));
	if ((rc = mo_state_list(st, &list, &n)) < 0)
		return rc;
	if ((rc = exec_init(&x, K_REFRESH, st, p, rt, o, &res, n)) < 0)
		goto done;
	x.drift = json_array();
	x.persist = persist;
	for (size_t i = 0; i < n; i++) {
		job *j = &x.jobs[i];
		j->rec = list[i];
		list[i] = NULL;
		j->address = j->rec->address;
		j->type = j->rec->type;
		j->phase = P_READ;
		if ((rc = mo_instance_for(p, &extra, j->rec->module, j->rec->type, j->rec->source, src, rt,
					  p ? &p->limits : NULL, &j->inst)) < 0) {
			mo_error_prefix("refreshing %s", j->address);
			goto done;
		}
		j->rtype = mo_instance_type(j->inst, j->type);
	}
	if ((rc = run_jobs(&x)) < 0) {
		if (rc == MO_EFAILED) {
			json_t *e = json_array_get(res.errors, 0);
			rc = mo_error_set(MO_EMODULE, "refresh: %zu read(s) failed; first: %s", res.failed,
					  json_string_value(json_object_get(e, "message")));
		}
		goto done;
	}
	outl = mo_calloc(n + 1, sizeof(*outl));
	if (!outl) {
		rc = mo_error_set(MO_ENOMEM, "out of memory");
		goto done;
	}
	for (size_t i = 0; i < n; i++)
		if (x.jobs[i].fresh) {
			outl[nout++] = x.jobs[i].fresh;
			x.jobs[i].fresh = NULL;
		}
	*records = outl;
	*nrecords = nout;
	outl = NULL;
	if (drift)
		*drift = json_incref(x.drift);
done:
	mo_free(outl);
	exec_free(&x);
	mo_exec_result_clear(&res);
	mo_resource_list_free(list, n);
	mo_instance_set_clear(&extra);
	return rc;
}

int mo_exec_import(mo_state *st, mo_plan *p, mo_rt *rt, const mo_exec_opts *o, const char *address,
		   const char *id)
{
	mo_desired *d = p ? mo_plan_find(p, address) : NULL;
	mo_exec_result res;
	mo_resource *have = NULL;
	json_t *props = NULL;
	exec x;
	int rc, unk = 0;
	memset(&res, 0, sizeof(res));
	memset(&x, 0, sizeof(x));
	if (!d)
		return mo_error_set(MO_ENOTFOUND, "%s is not declared by the plan: import needs the plan "
				    "to declare the resource first", address);
	if (mo_state_get(st, address, &have) == 0) {
		mo_resource_free(have);
		return mo_error_set(MO_EINVAL, "%s is already in the state", address);
	}
	if ((rc = exec_init(&x, K_REFRESH, st, p, rt, o, &res, 1)) < 0)
		goto done;
	x.drift = json_array();
	x.persist = 1;
	x.import = 1;
	if ((rc = mo_resolve(d->props, result_value, &x, &props, &unk)) < 0)
		goto done;
	x.jobs[0].rec = mo_calloc(1, sizeof(mo_resource));
	if (!x.jobs[0].rec) {
		rc = mo_error_set(MO_ENOMEM, "out of memory");
		goto done;
	}
	x.jobs[0].rec->address = mo_strdup(address);
	x.jobs[0].rec->module = mo_strdup(d->inst->name);
	x.jobs[0].rec->type = mo_strdup(d->rtype->name);
	x.jobs[0].rec->id = mo_strdup(id);
	x.jobs[0].rec->source = mo_strdup(d->inst->pinned);
	x.jobs[0].rec->props = mo_mask(props, d->rtype, p->secrets, x.key);
	x.jobs[0].rec->deps = json_incref(d->deps);
	x.jobs[0].address = address;
	x.jobs[0].type = d->rtype->name;
	x.jobs[0].inst = d->inst;
	x.jobs[0].rtype = d->rtype;
	x.jobs[0].phase = P_READ;
	rc = run_jobs(&x);
	if (rc == MO_EFAILED) {
		json_t *e = json_array_get(res.errors, 0);
		rc = mo_error_set(MO_EMODULE, "import %s: %s", address,
				  json_string_value(json_object_get(e, "message")));
	}
done:
	json_decref(props);
	exec_free(&x);
	mo_exec_result_clear(&res);
	return rc;
}
