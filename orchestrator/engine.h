/*
 * engine.h - one complete run of the engine (plan, apply, destroy,
 * refresh) as the CLI and the API server both perform it: open the module
 * sources and the state, take the lock, load the plan, resolve pending
 * intents, refresh, plan, then (after an optional hook) apply.
 *
 * A run owns its event loop and runtime, so runs on different threads are
 * independent; call mo_global_init() once per process before the first.
 */
#ifndef MO_ENGINE_H
#define MO_ENGINE_H

#include <jansson.h>
#include <signal.h>

#include "exec.h"
#include "planner.h"
#include "runtime.h"
#include "sandbox.h"
#include "state.h"

enum { MO_RUN_PLAN = 0, MO_RUN_APPLY = 1, MO_RUN_DESTROY = 2, MO_RUN_REFRESH = 3 };

/* Called once the change set is known (plan, apply, destroy): records are
 * the prior records it was computed from (borrowed).  Return 0 to go on,
 * 1 to stop without applying (not an error), or a negative MO_E* code. */
typedef int (*mo_planned_fn)(void *ud, mo_state *st, mo_changeset *cs, mo_resource **records,
			     size_t n);

typedef struct {
	int mode;                  /* MO_RUN_* */
	const char *plan_path;     /* NULL only for a destroy driven by the state alone */
	const char *state_path;
	json_t *vars;              /* name -> value or string; may be NULL */
	const char *lock_path;     /* module lock file; NULL: beside the plan */
	const char *cache_dir;     /* module cache; NULL: default */
	const char *operation;     /* lock operation name; NULL: from mode */
	int refresh;               /* read resources back before planning */
	int parallelism, fail_fast, lease_s;
	mo_sandbox_limits limits;  /* zero: defaults */
	mo_http_config http;       /* zero: defaults */
	mo_event_fn on_event;      /* progress events (may be NULL) */
	mo_log_fn log;             /* module logs (may be NULL) */
	void *ud;
	mo_planned_fn planned;     /* may be NULL */
	volatile sig_atomic_t *interrupted;
	/* applying a saved plan: refuse unless the state and plan still match */
	const char *expect_lineage;
	long long expect_serial;   /* used when expect_lineage is set */
	const char *expect_digest;
	json_t *prior;             /* address -> {id, props, outputs}: records as planned */
	int prior_refreshed;       /* records absent from prior were gone at plan time */
} mo_run_opts;

typedef struct {
	json_t *plan;              /* the plan document (render.h), when planned */
	json_t *drift;             /* refresh: array of {address, kind, changes} */
	mo_exec_result exec;       /* apply / destroy */
	int changes;               /* the change set had something to do */
	int applied;               /* apply ran */
	char lineage[64];
	long long serial;          /* state serial at the end */
} mo_run_result;

void mo_run_opts_defaults(mo_run_opts *o);
void mo_run_result_clear(mo_run_result *r);

/* Perform the run.  0, or the failing code (MO_EFAILED when actions failed,
 * with details in r->exec.errors). */
int mo_run(const mo_run_opts *o, mo_run_result *r);

/* Process-wide library initialisation (libcurl, jansson allocators,
 * libgit2): once, before any thread starts a run. */
int mo_global_init(void);

#endif
