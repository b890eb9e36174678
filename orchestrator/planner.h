/*
 * planner.h - desired resources vs the state: the change set.
 *
 * For each desired resource: create (absent), no-op (equal), update
 * (changed, the type has update()), replace (tainted, a replace_on field
 * changed, or no update()).  For each state resource not desired (or
 * deposed, or everything on destroy): delete.  Values known only after
 * apply appear as {"$unknown": "..."} in `after`; such a change is
 * `deferred` and re-checked by the executor once the values are known.
 *
 * The change set owns its graph (node i is change i; an edge i -> j means
 * change i waits for change j) and the module instances it loaded for
 * resources whose module left the plan.
 */
#ifndef MO_PLANNER_H
#define MO_PLANNER_H

#include <jansson.h>

#include "plan.h"
#include "state.h"

enum { MO_ACT_NOOP = 0, MO_ACT_CREATE, MO_ACT_UPDATE, MO_ACT_REPLACE, MO_ACT_DELETE };

const char *mo_action_name(int action);

typedef struct {
	char *address;
	int action;
	mo_desired *want;      /* NULL for delete */
	mo_resource *have;     /* the state's (or refreshed) record; NULL for create */
	json_t *after;         /* planned props, masked, $unknown where not yet known */
	json_t *changed;       /* top-level props that differ (update / replace) */
	char *reason;          /* why replace / delete: "tainted", "replace_on: name", ... */
	mo_instance *inst;     /* where the handlers live */
	const mo_rtype *rtype;
	int deferred;          /* after holds unknown values */
	int half;              /* the destroy half of a delete-first replace (have borrowed) */
	size_t destroy_half;   /* for such a replace: index of its destroy half, else SIZE_MAX */
	int drift;             /* have came from refresh and differs from the state */
} mo_change;

typedef struct {
	mo_change *c;
	size_t n;
	mo_graph *g;
	mo_instance_set extra;  /* instances loaded for removed resources */
	size_t n_create, n_update, n_replace, n_delete, n_noop;
	json_t *outputs;        /* planned plan outputs: name -> {value, sensitive} */
	unsigned char key[32];  /* keyed-hash key of the state */
	mo_plan *plan;          /* the plan it was computed from (borrowed; NULL on destroy
				   without a plan) */
} mo_changeset;

typedef struct {
	int destroy;            /* plan to delete everything in the state */
	mo_rt *rt;              /* for instances loaded for removed resources */
	mo_sources *sources;
	const mo_sandbox_limits *limits;
} mo_planner_opts;

/* Plan p against the state resources (owned by the change set afterwards:
 * the array is taken, the caller must not free it).  p may be NULL only
 * when opts->destroy (every resource's module is then loaded from its
 * recorded source). */
int mo_planner_run(mo_changeset **out, mo_plan *p, mo_resource **state, size_t nstate,
		   const unsigned char key[32], const mo_planner_opts *opts);
void mo_changeset_free(mo_changeset *cs);
mo_change *mo_changeset_find(const mo_changeset *cs, const char *address);

/* Value lookup for resolution: the known value of a resource (its outputs
 * with "id"), or NULL when not known yet.  *partial set to 1 means only
 * "id" is known. */
typedef const json_t *(*mo_lookup_fn)(void *ud, const char *address, int *partial);

/* Resolve references in v.  Unknown values become {"$unknown": text} and
 * set *unknown (optional).  *out is a new reference. */
int mo_resolve(const json_t *v, mo_lookup_fn lookup, void *ud, json_t **out, int *unknown);

/* Mask sensitive values of props or outputs: top-level fields listed in
 * rtype->sensitive and any string containing one of the plan's secrets
 * become {"$sensitive": "hmac-sha256:..."}.  New reference. */
json_t *mo_mask(const json_t *v, const mo_rtype *rtype, const json_t *secrets,
		const unsigned char key[32]);

/* A plan output's value as the state keeps it: a hash when *sensitive, or
 * when the value holds a secret (then *sensitive becomes 1: an output
 * built from a secret is sensitive, declared so or not), else v itself.
 * New reference. */
json_t *mo_mask_output(const json_t *v, int *sensitive, const json_t *secrets, const unsigned char key[32]);
/* v (props or outputs read back from a peer) with every value hashed whose
 * counterpart at the same path of `known` (what the state holds) is a
 * sensitive marker.  A secret that has since changed (a rotated password
 * variable) is no longer among the plan's secrets, so mo_mask alone would
 * keep the old value in clear; where the state kept a hash, the read-back
 * value stays hashed, and hashes still compare for drift.  New reference. */
json_t *mo_mask_like(const json_t *v, const json_t *known, const unsigned char key[32]);
/* A copy of text (caller's) with every occurrence of a secret replaced by
 * "(sensitive)": for error messages and logs. */
char *mo_mask_text(const json_t *secrets, const char *text);

/* Decide the action for a desired resource whose props are now known
 * (after) against what exists (have).  Used by the planner and, for
 * deferred changes, by the executor.  *changed: new array or NULL. */
int mo_decide(const mo_rtype *rt, const mo_resource *have, const json_t *after,
	      json_t **changed, char **reason);

#endif
