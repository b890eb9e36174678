/*
 * devops.c - DevOps endpoints (/mecorch/v1/deployments, operators only):
 * a deployment is a plan file in a git repository plus its variables.
 *   POST deployments            fetch the source, resolve and pin its module
 *                               sources, plan: state PLANNING -> PLANNED,
 *                               with the plan as JSON (the same document as
 *                               `mecorch plan --json`) for review
 *   POST deployments/{id}/plan  fetch and plan again
 *   POST .../apply              apply exactly the reviewed plan: refused
 *                               (FAILED, "stale") if the source, the
 *                               variables or the infrastructure changed
 *   POST .../destroy            destroy everything the deployment created
 *   GET  .../events             the run's progress events and module logs
 * Each deployment has its own state database, <dataDir>/deployments/<id>/
 * state.db, and runs through mo_run() on the worker pool like LCM
 * operations do.
 */
#include "api_int.h"
#include "engine.h"
#include "loop.h"
#include "plan.h"
#include "render.h"
#include "source.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static json_t *dep_links(mo_api *a, const char *id)
{
	return json_pack("{s:o,s:o,s:o,s:o,s:o}", "self", mo_api_link(a, "/mecorch/v1/deployments/%s", id), "plan",
			 mo_api_link(a, "/mecorch/v1/deployments/%s/plan", id), "apply",
			 mo_api_link(a, "/mecorch/v1/deployments/%s/apply", id), "destroy",
			 mo_api_link(a, "/mecorch/v1/deployments/%s/destroy", id), "events",
			 mo_api_link(a, "/mecorch/v1/deployments/%s/events", id));
}

static int safe_rel(const char *p)
{
	return p[0] && p[0] != '/' && !strstr(p, "..");
}

void mo_api_h_dep_create(mo_api *a, mo_api_req *q, mo_api_reply *r)
{
	const char *name, *source, *plan;
	json_t *vars, *doc, *rec;
	char id[37];
	int rc;
	if (mo_api_want_str(r, q->json, "name", 0, &name) < 0 || mo_api_want_str(r, q->json, "source", 1, &source) < 0 ||
	    mo_api_want_str(r, q->json, "planFile", 0, &plan) < 0 || mo_api_want_obj(r, q->json, "variables", 0, &vars) < 0)
		return;
	if (mo_api_url_has_credentials(source)) {
		mo_api_problem(r, 400, "'source' must not carry credentials (user:password@, or token@ in an "
			       "http(s) URL): the server would store them and show them back");
		return;
	}
	if (strncmp(source, "git+", 4) && strncmp(source, "git://", 6) && strncmp(source, "file://", 7)) {
		mo_api_problem(r, 400, "'source' must be a git source: git+file://, git+https://, git+ssh://, git:// or "
			       "file://, with //subdir and ?ref= as in plans");
		return;
	}
	if (!plan)
		plan = "main.lua";
	if (!safe_rel(plan)) {
		mo_api_problem(r, 400, "'planFile' must be a path inside the source");
		return;
	}
	mo_api_uuid(id);
	doc = json_pack("{s:s,s:s,s:s,s:s,s:O,s:s,s:o,s:o}", "id", id, "name", name ? name : id, "source", source,
			"planFile", plan, "variables", vars ? vars : json_object(), "state", "PLANNING", "createdAt",
			mo_api_timestamp(), "_links", dep_links(a, id));
	if (!vars && doc)
		json_decref(json_object_get(doc, "variables")); /* the placeholder json_object() above */
	rec = mo_api_rec_new(q->who->tenant, doc);
	if (!rec) {
		mo_api_problem(r, 500, "out of memory");
		return;
	}
	json_object_set_new(mo_api_rec_int(rec), "pending", json_string("plan"));
	mo_api_store_begin(a->st);
	rc = mo_api_store_put(a->st, MO_K_DEP, id, json_incref(rec));
	rc = mo_api_store_end(a->st, rc == 0);
	if (rc < 0) {
		json_decref(rec);
		mo_api_problem(r, 500, "%s", mo_error_last()->message);
		return;
	}
	mo_api_job_push(a, MO_JOB_DEVOPS, id, "plan");
	r->location = mo_sprintf("%s/mecorch/v1/deployments/%s", a->base, id);
	mo_api_reply_json(r, 201, json_incref(mo_api_rec_doc(rec)));
	json_decref(rec);
}

void mo_api_h_dep_list(mo_api *a, mo_api_req *q, mo_api_reply *r)
{
	json_t *all = mo_api_store_all(a->st, MO_K_DEP), *out = json_array(), *rec;
	size_t i;
	json_array_foreach(all, i, rec) {
		json_t *d;
		if (!mo_api_visible(q, rec))
			continue;
		d = json_copy(mo_api_rec_doc(rec));
		json_object_del(d, "plan"); /* the list stays small: GET one for its plan */
		json_array_append_new(out, d);
	}
	json_decref(all);
	mo_api_reply_json(r, 200, out);
}

static json_t *find_dep(mo_api *a, mo_api_req *q, mo_api_reply *r)
{
	json_t *rec = mo_api_store_get(a->st, MO_K_DEP, q->params[0]);
	if (!mo_api_visible(q, rec)) {
		json_decref(rec);
		mo_api_problem(r, 404, "no deployment %s", q->params[0]);
		return NULL;
	}
	return rec;
}

void mo_api_h_dep_get(mo_api *a, mo_api_req *q, mo_api_reply *r)
{
	json_t *rec = find_dep(a, q, r);
	if (rec)
		mo_api_reply_json(r, 200, json_incref(mo_api_rec_doc(rec)));
	json_decref(rec);
}

void mo_api_h_dep_events(mo_api *a, mo_api_req *q, mo_api_reply *r)
{
	json_t *rec = find_dep(a, q, r);
	const char *after = mo_api_query(q, "after"), *limit = mo_api_query(q, "limit");
	long long af = after ? strtoll(after, NULL, 10) : 0, li = limit ? strtoll(limit, NULL, 10) : 1000;
	if (!rec)
		return;
	json_decref(rec);
	if (af < 0 || li < 1 || li > 10000) {
		mo_api_problem(r, 400, "'after' must be >= 0 and 'limit' within 1..10000");
		return;
	}
	mo_api_reply_json(r, 200, mo_api_store_events(a->st, q->params[0], af, (int)li));
}

/* Move a deployment to a pending action (inside one transaction). */
static void dep_action(mo_api *a, mo_api_req *q, mo_api_reply *r, const char *action, const char *state)
{
	json_t *rec = find_dep(a, q, r), *cur, *n;
	int rc;
	if (!rec)
		return;
	json_decref(rec);
	mo_api_store_begin(a->st);
	cur = mo_api_store_peek(a->st, MO_K_DEP, q->params[0]);
	if (!cur) {
		mo_api_store_end(a->st, 0);
		mo_api_problem(r, 404, "no deployment %s", q->params[0]);
		return;
	}
	if (mo_api_jstr(mo_api_rec_int(cur), "pending")) {
		mo_api_store_end(a->st, 0);
		mo_api_problem(r, 409, "deployment %s is %s: wait for it to finish", q->params[0],
			       mo_api_jstr(mo_api_rec_doc(cur), "state"));
		return;
	}
	if (!strcmp(action, "apply") && strcmp(mo_api_jstr(mo_api_rec_doc(cur), "state"), "PLANNED")) {
		mo_api_store_end(a->st, 0);
		mo_api_problem(r, 409, "deployment %s is %s: apply takes a reviewed plan (POST .../plan first)",
			       q->params[0], mo_api_jstr(mo_api_rec_doc(cur), "state"));
		return;
	}
	n = json_deep_copy(cur);
	json_object_set_new(mo_api_rec_doc(n), "state", json_string(state));
	json_object_del(mo_api_rec_doc(n), "error");
	if (!strcmp(action, "plan") && json_is_object(json_object_get(q->json, "variables")))
		json_object_set(mo_api_rec_doc(n), "variables", json_object_get(q->json, "variables"));
	json_object_set_new(mo_api_rec_int(n), "pending", json_string(action));
	rc = mo_api_store_put(a->st, MO_K_DEP, q->params[0], n);
	rc = mo_api_store_end(a->st, rc == 0);
	if (rc < 0) {
		mo_api_problem(r, 500, "%s", mo_error_last()->message);
		return;
	}
	mo_api_job_push(a, MO_JOB_DEVOPS, q->params[0], action);
	r->status = 202;
	r->location = mo_sprintf("%s/mecorch/v1/deployments/%s", a->base, q->params[0]);
}

void mo_api_h_dep_plan(mo_api *a, mo_api_req *q, mo_api_reply *r)
{
	json_t *v = json_object_get(q->json, "variables");
	if (v && !json_is_object(v)) {
		mo_api_problem(r, 400, "'variables' must be an object");
		return;
	}
	dep_action(a, q, r, "plan", "PLANNING");
}

void mo_api_h_dep_apply(mo_api *a, mo_api_req *q, mo_api_reply *r)
{
	dep_action(a, q, r, "apply", "APPLYING");
}

void mo_api_h_dep_destroy(mo_api *a, mo_api_req *q, mo_api_reply *r)
{
	dep_action(a, q, r, "destroy", "DESTROYING");
}

void mo_api_h_dep_delete(mo_api *a, mo_api_req *q, mo_api_reply *r)
{
	json_t *rec = find_dep(a, q, r), *cur;
	char *dir;
	int rc;
	if (!rec)
		return;
	json_decref(rec);
	mo_api_store_begin(a->st);
	cur = mo_api_store_peek(a->st, MO_K_DEP, q->params[0]);
	if (!cur) {
		mo_api_store_end(a->st, 0);
		mo_api_problem(r, 404, "no deployment %s", q->params[0]);
		return;
	}
	if (mo_api_jstr(mo_api_rec_int(cur), "pending") ||
	    json_integer_value(json_object_get(mo_api_rec_int(cur), "resources")) > 0) {
		mo_api_store_end(a->st, 0);
		mo_api_problem(r, 409, "deployment %s is %s and holds %lld resource(s): destroy it first", q->params[0],
			       mo_api_jstr(mo_api_rec_doc(cur), "state"),
			       (long long)json_integer_value(json_object_get(mo_api_rec_int(cur), "resources")));
		return;
	}
	rc = mo_api_store_del(a->st, MO_K_DEP, q->params[0]);
	rc = mo_api_store_end(a->st, rc == 0);
	if (rc < 0) {
		mo_api_problem(r, 500, "%s", mo_error_last()->message);
		return;
	}
	mo_api_store_events_del(a->st, q->params[0]);
	if ((dir = mo_sprintf("%s/%s", a->dep_dir, q->params[0]))) {
		mo_api_rmtree(dir);
		mo_free(dir);
	}
	r->status = 204;
}

/* ---- runs ------------------------------------------------------------------------------------ */

typedef struct {
	mo_api *a;
	const char *id;
	char digest[65];
} dep_ctx;

static void on_event(void *ud, const mo_event *ev)
{
	dep_ctx *c = ud;
	mo_api_store_run_event(c->a->st, c->id, ev);
}

static void on_log(void *ud, const char *who, const char *level, const char *msg)
{
	dep_ctx *c = ud;
	mo_api_store_run_log(c->a->st, c->id, who, level, msg);
}

static int on_planned(void *ud, mo_state *st, mo_changeset *cs, mo_resource **records, size_t n)
{
	dep_ctx *c = ud;
	(void)st, (void)records, (void)n;
	return mo_render_digest(cs, c->digest);
}

/* Resolve and pin the module sources of the plan (mecorch init). */
static int init_sources(mo_api *a, const char *plan, json_t *vars)
{
	mo_rt rt;
	mo_sandbox_limits lim;
	mo_sources *src = NULL;
	mo_plan *p = NULL;
	mo_source_opts so;
	mo_plan_opts po;
	char *dir = mo_strdup(plan), *slash;
	int rc;
	memset(&rt, 0, sizeof(rt));
	mo_http_config_defaults(&rt.http);
	mo_sandbox_limits_defaults(&lim);
	if (!dir)
		return mo_error_set(MO_ENOMEM, "out of memory");
	if ((slash = strrchr(dir, '/')))
		*slash = '\0';
	if ((rc = mo_loop_new(&rt.loop)) < 0)
		goto done;
	memset(&so, 0, sizeof(so));
	so.plan_dir = dir;
	so.cache_dir = a->cache_dir;
	so.mode = MO_SOURCES_INIT;
	if ((rc = mo_sources_open(&src, &so)) < 0)
		goto done;
	memset(&po, 0, sizeof(po));
	po.path = plan;
	po.vars = vars;
	po.rt = &rt;
	po.sources = src;
	po.limits = &lim;
	po.skip_declare = 1;
	if ((rc = mo_plan_load(&p, &po)) == 0)
		rc = mo_sources_commit(src);
done:
	mo_plan_free(p);
	mo_sources_free(src);
	mo_rt_release(&rt);
	mo_loop_free(rt.loop);
	mo_free(dir);
	return rc;
}

static long long count_resources(const char *path)
{
	mo_state *st = NULL;
	mo_resource **list = NULL;
	size_t n = 0;
	if (mo_state_open(&st, path) < 0)
		return 0;
	if (mo_state_list(st, &list, &n) < 0)
		n = 0;
	mo_resource_list_free(list, n);
	mo_state_close(st);
	return (long long)n;
}

void mo_api_devops_run(mo_api *a, const char *id, const char *action, mo_api_running *run)
{
	json_t *rec = mo_api_store_get(a->st, MO_K_DEP, id), *doc, *fields = json_object(), *ints = json_object();
	dep_ctx ctx;
	mo_run_opts o;
	mo_run_result res;
	char *dir = NULL, *src = NULL, *plan = NULL, *state = NULL, commit[64] = "";
	const char *final = NULL;
	int rc = 0, have_plan;
	memset(&res, 0, sizeof(res));
	memset(&ctx, 0, sizeof(ctx));
	ctx.a = a;
	ctx.id = id;
	if (!rec)
		goto out;
	doc = mo_api_rec_doc(rec);
	dir = mo_sprintf("%s/%s", a->dep_dir, id);
	src = mo_sprintf("%s/%s/src", a->dep_dir, id);
	plan = mo_sprintf("%s/%s/src/%s", a->dep_dir, id, mo_api_jstr(doc, "planFile"));
	state = mo_sprintf("%s/%s/state.db", a->dep_dir, id);
	if (!dir || !src || !plan || !state) {
		rc = mo_error_set(MO_ENOMEM, "out of memory");
		goto finish;
	}
	if ((rc = mo_api_mkdirs(dir)) < 0)
		goto finish;
	{
		json_t *ev = json_pack("{s:s,s:s,s:o}", "type", "run", "message", action, "timeStamp", mo_api_timestamp());
		mo_api_store_event_add(a->st, id, ev);
		json_decref(ev);
	}
	if (!strcmp(action, "plan")) {
		if ((rc = mo_api_git_fetch(mo_api_jstr(doc, "source"), src, commit)) < 0 ||
		    (rc = init_sources(a, plan, json_object_get(doc, "variables"))) < 0)
			goto finish;
		json_object_set_new(fields, "sourceCommit", json_string(commit));
	}
	have_plan = access(plan, R_OK) == 0;
	mo_run_opts_defaults(&o);
	o.mode = !strcmp(action, "plan") ? MO_RUN_PLAN : !strcmp(action, "apply") ? MO_RUN_APPLY : MO_RUN_DESTROY;
	o.plan_path = have_plan ? plan : NULL;
	o.state_path = state;
	o.vars = json_object_get(doc, "variables");
	o.cache_dir = a->cache_dir;
	o.parallelism = a->cfg->run_parallelism;
	o.on_event = on_event;
	o.log = on_log;
	o.ud = &ctx;
	o.planned = on_planned;
	o.interrupted = &run->interrupted;
	if (o.mode == MO_RUN_APPLY)
		o.expect_digest = mo_api_jstr(mo_api_rec_int(rec), "digest");
	rc = mo_run(&o, &res);
	if (rc == 0 && o.mode == MO_RUN_PLAN) {
		json_t *summary = json_object_get(res.plan, "summary");
		json_object_set(fields, "plan", res.plan ? res.plan : json_null());
		if (summary)
			json_object_set(fields, "summary", summary);
		json_object_set_new(ints, "digest", json_string(ctx.digest));
		final = "PLANNED";
	} else if (rc == 0 || (rc == MO_EFAILED && res.applied)) {
		json_t *outs = json_object(), *v;
		const char *k;
		json_object_foreach(res.exec.outputs, k, v)
			if (!json_is_true(json_object_get(v, "sensitive")))
				json_object_set(outs, k, json_object_get(v, "value"));
		json_object_set_new(fields, "outputs", outs);
		json_object_set_new(fields, "result",
				    json_pack("{s:I,s:I,s:I,s:I,s:I,s:I,s:O?}", "created", (json_int_t)res.exec.created,
					      "updated", (json_int_t)res.exec.updated, "replaced",
					      (json_int_t)res.exec.replaced, "deleted", (json_int_t)res.exec.deleted,
					      "failed", (json_int_t)res.exec.failed, "elapsedMs",
					      (json_int_t)res.exec.elapsed_ms, "errors", res.exec.errors));
		if (rc == 0)
			final = o.mode == MO_RUN_APPLY ? "APPLIED" : "DESTROYED";
	}
finish:
	if (rc == MO_EINTR && a->stopping && !run->cancelled)
		goto out; /* resumed at the next start */
	if (!final) {
		const char *msg = mo_error_last()->message[0] ? mo_error_last()->message : mo_code_name(rc);
		json_object_set_new(fields, "error",
				    json_pack("{s:s,s:s,s:i,s:s}", "type", "about:blank", "title",
					      rc == MO_ESTALE ? "Stale plan" : "Run failed", "status",
					      rc == MO_ESTALE ? 409 : 500, "detail", msg));
		final = "FAILED";
	}
	json_object_set_new(fields, "state", json_string(final));
	json_object_set_new(fields, "updatedAt", mo_api_timestamp());
	json_object_set_new(ints, "resources", json_integer(state ? count_resources(state) : 0));
	mo_api_store_begin(a->st);
	{
		json_t *cur = mo_api_store_peek(a->st, MO_K_DEP, id), *n;
		if (cur) {
			n = json_deep_copy(cur);
			json_object_update(mo_api_rec_doc(n), fields);
			json_object_update(mo_api_rec_int(n), ints);
			json_object_del(mo_api_rec_int(n), "pending");
			if (strcmp(final, "PLANNED"))
				json_object_del(mo_api_rec_int(n), "digest");
			mo_api_store_put(a->st, MO_K_DEP, id, n);
		}
		mo_api_store_end(a->st, cur != NULL);
	}
out:
	mo_run_result_clear(&res);
	json_decref(rec);
	json_decref(fields);
	json_decref(ints);
	mo_free(dir);
	mo_free(src);
	mo_free(plan);
	mo_free(state);
}
