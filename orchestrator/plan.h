/*
 * plan.h - loading a deployment plan: the plan file (sandboxed Lua), its
 * variables, module instances and outputs; each module's source, code and
 * declare(); the desired resources with their dependencies.
 *
 * A plan file calls, in its sandbox:
 *   local region = variable("region", { type = "string", default = "lab-1" })
 *   local net = module("net", { source = "../iac-modules/lab/generic",
 *                               inputs = { endpoint = ep, objects = {...} } })
 *   local app = module("app", { source = "...", inputs = { id = net.ids.a },
 *                               depends_on = { net } })
 *   output("app_url", app.url, { sensitive = false, description = "..." })
 * `net.ids.a` is a deferred reference to a module output; modules are
 * declared in dependency order and the reference is replaced by the output's
 * value, which may itself reference a resource ("known after apply").
 *
 * Everything returned by mo_plan_load is owned by the mo_plan.
 */
#ifndef MO_PLAN_H
#define MO_PLAN_H

#include <jansson.h>
#include <stddef.h>

#include "sandbox.h"
#include "source.h"

typedef struct mo_graph mo_graph;

typedef struct {
	char *name;
	char *type;        /* string, number, integer, boolean, list, map, any */
	char *description;
	char *where;       /* plan.lua:12 */
	json_t *def;       /* default, or NULL (required) */
	int sensitive;
} mo_var_def;

/* A resource type of a module: which handlers it has and its policies. */
typedef struct {
	char *name;
	int has_update;
	int create_before_destroy;
	json_t *replace_on; /* array of top-level prop names */
	json_t *sensitive;  /* array of prop / output names */
} mo_rtype;

/* A module instance: one use of a module in the plan. */
typedef struct mo_instance {
	char *name;
	char *source, *version, *where;
	char *shown;          /* source without credentials, for messages */
	char *dir, *pinned;   /* resolved source */
	json_t *inputs_raw;   /* as written, with module references */
	json_t *inputs;       /* after substitution and defaults */
	json_t *depends;      /* array of module names */
	mo_sandbox *sb;
	int modref;           /* registry ref of the module table */
	char *mod_name, *mod_version;
	mo_rtype *types;
	size_t ntypes;
	json_t *input_spec;   /* name -> {type, default?, sensitive} */
	json_t *outputs;      /* module outputs (may hold resource references) */
	int declared;
} mo_instance;

/* A desired resource. */
typedef struct {
	char *address;     /* module.<inst>.<type>.<name> */
	char *name;
	char *where;       /* module file:line of m.resource() */
	json_t *props;     /* may hold $ref / $tmpl markers; sensitive values in clear */
	json_t *deps;      /* array of addresses (explicit + references) */
	mo_instance *inst;
	const mo_rtype *rtype;
} mo_desired;

typedef struct mo_plan {
	char *path, *dir;
	mo_var_def *vars;
	size_t nvars;
	json_t *var_values;      /* name -> value */
	mo_instance **insts;     /* in dependency order after load */
	size_t ninsts;
	mo_desired *res;
	size_t nres, capres;
	json_t *outputs;         /* name -> {value, sensitive, description} */
	json_t *secrets;         /* array of sensitive string values to mask */
	mo_graph *rgraph;        /* resources: node i == res[i] */
	mo_sandbox *sb;
	mo_rt *rt;
	mo_sources *sources;
	mo_sandbox_limits limits;
	int lenient;             /* skip_declare: variables without a value are unknown */
} mo_plan;

typedef struct {
	const char *path;         /* the plan file */
	json_t *vars;             /* name -> value (JSON) or string from --var; may be NULL */
	mo_rt *rt;                /* handed to module sandboxes */
	mo_sources *sources;      /* resolves module sources */
	const mo_sandbox_limits *limits;
	int skip_declare;         /* only run the plan file and resolve sources (init);
				     variables without a value are then unknown */
} mo_plan_opts;

int mo_plan_load(mo_plan **out, const mo_plan_opts *opts);
void mo_plan_free(mo_plan *p);

/* Load a module by directory into a new instance (for resources whose
 * module instance left the plan).  *out is the caller's (mo_instance_free). */
int mo_instance_load(mo_instance **out, const char *name, const char *dir, const char *pinned,
		     mo_rt *rt, const mo_sandbox_limits *limits);
void mo_instance_free(mo_instance *in);
const mo_rtype *mo_instance_type(const mo_instance *in, const char *type);
/* Push the handler `fn` (create/read/update/delete) of a type; 0 or MO_EINVAL. */
int mo_instance_push_handler(mo_instance *in, const char *type, const char *fn);

/* Instances loaded on demand for resources whose module instance left the
 * plan (destroy, recovery, refresh); owns them. */
typedef struct {
	mo_instance **v;
	size_t n;
} mo_instance_set;
void mo_instance_set_clear(mo_instance_set *set);

/* The instance that runs the handlers of a resource recorded with
 * (module, type, source): the plan's instance of that name when it has
 * the type, else one loaded from the recorded source into *extra. */
int mo_instance_for(mo_plan *p, mo_instance_set *extra, const char *module, const char *type,
		    const char *source, mo_sources *src, mo_rt *rt, const mo_sandbox_limits *lim,
		    mo_instance **out);

/* The desired resource at address, or NULL. */
mo_desired *mo_plan_find(const mo_plan *p, const char *address);

/* Split "module.<inst>.<type>.<name>"; pieces are the caller's. */
int mo_address_parse(const char *address, char **inst, char **type, char **name);


#endif
