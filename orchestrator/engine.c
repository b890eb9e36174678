/*
 * engine.c - one complete run of the engine; see engine.h.  The CLI and
 * the API server both go through mo_run(), so they share the lock, the
 * journal discipline and the recovery of interrupted runs.
 */
#include "engine.h"
#include "common.h"
#include "loop.h"
#include "plan.h"
#include "render.h"
#include "source.h"
#include "state.h"

#include <curl/curl.h>
#include <pthread.h>
#include <string.h>

static pthread_once_t init_once = PTHREAD_ONCE_INIT;
static int init_rc;

static void init_global(void)
{
	if (curl_global_init(CURL_GLOBAL_ALL) != CURLE_OK) {
		init_rc = mo_error_set(MO_ERROR, "libcurl initialisation failed");
		return;
	}
	json_set_alloc_funcs(mo_malloc, mo_free);
	/* libgit2 is initialised on first use (mo_sources_global_init) */
}

int mo_global_init(void)
{
	pthread_once(&init_once, init_global);
	return init_rc;
}

void mo_run_opts_defaults(mo_run_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->refresh = 1;
	o->parallelism = 32;
	o->lease_s = 120;
	mo_sandbox_limits_defaults(&o->limits);
	mo_http_config_defaults(&o->http);
}

void mo_run_result_clear(mo_run_result *r)
{
	json_decref(r->plan);
	json_decref(r->drift);
	mo_exec_result_clear(&r->exec);
	memset(r, 0, sizeof(*r));
}

typedef struct {
	const mo_run_opts *o;
	mo_rt rt;
	mo_sources *src;
	mo_state *st;
	mo_plan *p;
} run;

static void exec_opts(const run *r, mo_exec_opts *eo)
{
	mo_exec_opts_defaults(eo);
	eo->parallelism = r->o->parallelism > 0 ? r->o->parallelism : 32;
	eo->fail_fast = r->o->fail_fast;
	eo->lease_s = r->o->lease_s > 0 ? r->o->lease_s : 120;
	eo->on_event = r->o->on_event;
	eo->ud = r->o->ud;
}

static int open_all(run *r)
{
	const mo_run_opts *o = r->o;
	mo_source_opts so;
	mo_plan_opts po;
	mo_lock_info holder;
	char *dir = NULL, *slash;
	const char *op = o->operation;
	int rc;
	static const char *const ops[] = { "plan", "apply", "destroy", "refresh" };
	memset(&so, 0, sizeof(so));
	dir = mo_strdup(o->plan_path ? o->plan_path : ".");
	if (!dir)
		return mo_error_set(MO_ENOMEM, "out of memory");
	if ((slash = strrchr(dir, '/')))
		*slash = '\0';
	else
		strcpy(dir, ".");
	so.plan_dir = dir;
	so.lock_path = o->lock_path;
	so.cache_dir = o->cache_dir;
	so.mode = MO_SOURCES_LOCKED;
	rc = mo_sources_open(&r->src, &so);
	mo_free(dir);
	if (rc < 0)
		return rc;
	if ((rc = mo_state_open(&r->st, o->state_path)) < 0)
		return rc;
	memset(&holder, 0, sizeof(holder));
	if (!op)
		op = o->mode >= 0 && o->mode <= MO_RUN_REFRESH ? ops[o->mode] : "run";
	rc = mo_state_lock(r->st, op, o->lease_s > 0 ? o->lease_s : 120, &holder);
	mo_lock_info_clear(&holder);
	if (rc < 0)
		return rc;
	if (!o->plan_path)
		return o->mode == MO_RUN_DESTROY ? 0
			: mo_error_set(MO_EINVAL, "no plan file given");
	memset(&po, 0, sizeof(po));
	po.path = o->plan_path;
	po.vars = o->vars;
	po.rt = &r->rt;
	po.sources = r->src;
	po.limits = &o->limits;
	return mo_plan_load(&r->p, &po);
}

/* Records as a saved plan computed them (see mo_run_opts.prior). */
static int prior_records(run *r, mo_resource ***list, size_t *n)
{
	int rc;
	if ((rc = mo_state_list(r->st, list, n)) < 0)
		return rc;
	for (size_t i = 0; i < *n;) {
		json_t *p = json_object_get(r->o->prior, (*list)[i]->address);
		if (!p && r->o->prior_refreshed) {
			mo_resource_free((*list)[i]);
			memmove(&(*list)[i], &(*list)[i + 1], (*n - i - 1) * sizeof(**list));
			(*n)--;
			continue;
		}
		if (p) {
			json_decref((*list)[i]->props);
			json_decref((*list)[i]->outputs);
			(*list)[i]->props = json_incref(json_object_get(p, "props"));
			(*list)[i]->outputs = json_incref(json_object_get(p, "outputs"));
		}
		i++;
	}
	return 0;
}

int mo_run(const mo_run_opts *o, mo_run_result *res)
{
	run r;
	mo_exec_opts eo;
	mo_changeset *cs = NULL;
	mo_resource **list = NULL;
	size_t n = 0;
	unsigned char key[32];
	long long serial_before;
	int rc;
	memset(&r, 0, sizeof(r));
	memset(res, 0, sizeof(*res));
	r.o = o;
	r.rt.http = o->http;
	if (!r.rt.http.max_retries && !r.rt.http.backoff_base_ms)
		mo_http_config_defaults(&r.rt.http);
	r.rt.log = o->log;
	r.rt.log_ud = o->ud;
	r.rt.interrupted = o->interrupted;
	if ((rc = mo_global_init()) < 0 || (rc = mo_loop_new(&r.rt.loop)) < 0)
		goto done;
	if ((rc = open_all(&r)) < 0)
		goto done;
	if (r.p)
		r.rt.secrets = r.p->secrets;
	if (o->expect_lineage &&
	    (strcmp(o->expect_lineage, mo_state_lineage(r.st)) || o->expect_serial != mo_state_serial(r.st))) {
		rc = mo_error_set(MO_ESTALE, "the state changed since the plan was saved (serial %lld, now "
				  "%lld): make a new plan", o->expect_serial, (long long)mo_state_serial(r.st));
		goto done;
	}
	exec_opts(&r, &eo);
	serial_before = mo_state_serial(r.st);
	if ((rc = mo_exec_recover(r.st, r.p, r.src, &r.rt, &eo, NULL)) < 0) {
		mo_error_prefix("resolving operations left pending by an interrupted run");
		goto done;
	}
	if (o->expect_lineage && mo_state_serial(r.st) != serial_before) {
		rc = mo_error_set(MO_ESTALE, "operations of an interrupted run were resolved, so the state "
				  "changed since the plan was saved: make a new plan");
		goto done;
	}
	if (o->mode == MO_RUN_REFRESH) {
		rc = mo_exec_refresh(r.st, r.p, r.src, &r.rt, &eo, 1, &list, &n, &res->drift);
		goto done;
	}
	if (o->prior)
		rc = prior_records(&r, &list, &n);
	else if (o->refresh && o->mode != MO_RUN_DESTROY)
		rc = mo_exec_refresh(r.st, r.p, r.src, &r.rt, &eo, 0, &list, &n, &res->drift);
	else
		rc = mo_state_list(r.st, &list, &n);
	if (rc < 0)
		goto done;
	{
		mo_planner_opts po;
		memset(&po, 0, sizeof(po));
		po.destroy = o->mode == MO_RUN_DESTROY;
		po.rt = &r.rt;
		po.sources = r.src;
		po.limits = &o->limits;
		if ((rc = mo_state_secret_key(r.st, key)) < 0)
			goto done;
		if ((rc = mo_planner_run(&cs, r.p, list, n, key, &po)) < 0)
			goto done;
	}
	if (o->expect_digest) {
		char digest[65];
		mo_render_digest(cs, digest);
		if (strcmp(digest, o->expect_digest)) {
			rc = mo_error_set(MO_ESTALE, "the plan's inputs (plan file, modules or variables) "
					  "changed since the plan was saved: make a new plan");
			goto done_cs;
		}
	}
	res->plan = mo_render_plan_json(cs);
	res->changes = cs->n_create + cs->n_update + cs->n_replace + cs->n_delete > 0;
	if (o->planned) {
		/* the change set owns the records now; hand it the same view */
		mo_resource **view = mo_calloc(cs->n + 1, sizeof(*view));
		size_t nv = 0;
		if (!view) {
			rc = mo_error_set(MO_ENOMEM, "out of memory");
			goto done_cs;
		}
		for (size_t i = 0; i < cs->n; i++)
			if (cs->c[i].have)
				view[nv++] = cs->c[i].have;
		rc = o->planned(o->ud, r.st, cs, view, nv);
		mo_free(view);
		if (rc != 0) {
			if (rc > 0)
				rc = 0;
			goto done_cs;
		}
	}
	if (o->mode == MO_RUN_APPLY || o->mode == MO_RUN_DESTROY) {
		/* The planned callback may have waited (a confirmation prompt)
		 * longer than the lease: if another writer took the lock over
		 * meanwhile, the plan is stale and nothing may be applied. */
		if (mo_state_holds_lock(r.st) &&
		    (rc = mo_state_lock_renew(r.st, o->lease_s > 0 ? o->lease_s : 120)) < 0) {
			mo_error_prefix("nothing was applied");
			goto done_cs;
		}
		res->applied = 1;
		rc = mo_exec_apply(cs, o->mode == MO_RUN_DESTROY ? NULL : r.p, r.st, &r.rt, &eo, &res->exec);
	}
done_cs:
	list = NULL; /* owned by the change set */
	n = 0;
done:
	if (r.st) {
		snprintf(res->lineage, sizeof(res->lineage), "%s", mo_state_lineage(r.st));
		res->serial = mo_state_serial(r.st);
	}
	mo_changeset_free(cs);
	mo_resource_list_free(list, n);
	mo_plan_free(r.p);
	if (r.st) {
		mo_state_unlock(r.st);
		mo_state_close(r.st);
	}
	mo_sources_free(r.src);
	/* a run that ended early (a lost lock, a state failure) cancelled its
	 * transfers; let them finish aborting so nothing is left behind */
	mo_loop_drain(r.rt.loop, 2000);
	mo_rt_release(&r.rt);
	mo_loop_free(r.rt.loop);
	return rc;
}
