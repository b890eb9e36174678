/*
 * exec.h - the executor: runs a change set along its graph on one event
 * loop thread, every action a Lua coroutine (task), at most `parallelism`
 * in flight; journals every intent in the state before calling the module
 * and records the result in the same transaction as the resource.
 *
 * Also runs the two read-only passes that precede planning:
 *  - recovery: every intent a crashed run left pending is resolved with the
 *    module's read() (adopt what the crashed create made, forget what was
 *    never created, drop what was deleted, taint what cannot be read);
 *  - refresh: read() every resource in the state and report drift.
 *
 * A failed action fails the actions that depend on it, not its siblings,
 * unless fail_fast.  When rt->interrupted becomes set, nothing new starts;
 * in-flight actions finish and are recorded; the run returns MO_EINTR.
 */
#ifndef MO_EXEC_H
#define MO_EXEC_H

#include <jansson.h>
#include <stdint.h>

#include "planner.h"
#include "runtime.h"
#include "state.h"

/* Events reported while running. */
typedef struct {
	const char *type;     /* "start", "ok", "error", "skip", "log", "drift", "recover" */
	const char *address;
	const char *action;   /* create, update, replace, delete, read, no-op */
	const char *message;  /* error text, skip reason, log line, ... */
	int64_t elapsed_ms;
	size_t done, total, inflight;
} mo_event;

typedef void (*mo_event_fn)(void *ud, const mo_event *ev);

typedef struct {
	int parallelism;       /* default 32 */
	int fail_fast;
	int lease_s;           /* lock lease renewed while running; default 120 */
	const char *run_id;    /* journal run id; NULL: random */
	mo_event_fn on_event;
	void *ud;
} mo_exec_opts;

typedef struct {
	size_t ok, failed, skipped, noop;
	size_t created, updated, replaced, deleted;
	json_t *outputs;       /* plan outputs: name -> {value, sensitive}; values in clear */
	json_t *errors;        /* array of {address, action, message} */
	int64_t elapsed_ms;
	int64_t cpu_us;        /* CPU time of this process during the run */
	int interrupted;
} mo_exec_result;

void mo_exec_opts_defaults(mo_exec_opts *o);
void mo_exec_result_clear(mo_exec_result *r);

/* Apply a change set.  Returns 0 when every action succeeded, MO_EFAILED
 * when some failed (details in res->errors), MO_EINTR when interrupted, or
 * another code for a failure of the run itself (state store). */
int mo_exec_apply(mo_changeset *cs, mo_plan *p, mo_state *st, mo_rt *rt, const mo_exec_opts *o,
		  mo_exec_result *res);

/* Resolve pending intents of crashed runs; *resolved (optional) counts them. */
int mo_exec_recover(mo_state *st, mo_plan *p, mo_sources *src, mo_rt *rt, const mo_exec_opts *o,
		    size_t *resolved);

/* Read every resource of the state.  On success *records receives the
 * refreshed resources (caller's; those read() reported gone are left out)
 * and *drift a JSON array of {address, kind: "changed"|"gone", changes:[...]};
 * with persist, the state is updated to match. */
int mo_exec_refresh(mo_state *st, mo_plan *p, mo_sources *src, mo_rt *rt, const mo_exec_opts *o,
		    int persist, mo_resource ***records, size_t *nrecords, json_t **drift);

/* Adopt an existing object as the plan's resource at address: read() it by
 * id and record it in the state. */
int mo_exec_import(mo_state *st, mo_plan *p, mo_rt *rt, const mo_exec_opts *o, const char *address,
		   const char *id);

#endif
