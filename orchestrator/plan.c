/*
 * plan.c - load a plan: run the plan file in a sandbox, resolve and load
 * every module instance, substitute module-output references, run each
 * module's declare(), and build the resource graph.
 *
 * Module code is untrusted: everything it returns is validated here, and
 * every error names the plan or module file and line.
 */
#include "plan.h"
#include "common.h"
#include "drivers.h"
#include "graph.h"
#include "lj.h"

#include <errno.h>
#include <lauxlib.h>
#include <libgen.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

static const char *const var_types[] = { "string", "number", "integer", "boolean", "bool",
					 "list", "map", "object", "any", NULL };

/* ---- small helpers ---------------------------------------------------- */

static char *where_of(lua_State *L, int level)
{
	lua_Debug ar;
	if (lua_getstack(L, level, &ar) && lua_getinfo(L, "Sl", &ar) && ar.currentline > 0)
		return mo_sprintf("%s:%d", ar.short_src, ar.currentline);
	return mo_strdup("?");
}

static int valid_ident(const char *s)
{
	if (!s || !*s || !((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || *s == '_'))
		return 0;
	for (; *s; s++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
		      *s == '_' || *s == '-'))
			return 0;
	return 1;
}

static int valid_res_name(const char *s)
{
	size_t n = 0;
	if (!s || !*s)
		return 0;
	for (; *s; s++, n++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
		      strchr("_.:@/+-", *s)))
			return 0;
	return n <= 200;
}

int mo_address_parse(const char *address, char **inst, char **type, char **name)
{
	const char *a, *b, *c;
	if (strncmp(address, "module.", 7) || !(a = strchr(address + 7, '.')) ||
	    !(b = strchr(a + 1, '.')) || b[1] == '\0')
		return mo_error_set(MO_EINVAL, "'%s' is not a resource address "
				    "(expected module.<instance>.<type>.<name>)", address);
	c = address + 7;
	if (inst)
		*inst = mo_strndup(c, (size_t)(a - c));
	if (type)
		*type = mo_strndup(a + 1, (size_t)(b - a - 1));
	if (name)
		*name = mo_strdup(b + 1);
	return 0;
}

/* Does this $ref address name a module ("module.X") rather than a resource? */
static int ref_is_module(const char *addr)
{
	return !strncmp(addr, "module.", 7) && !strchr(addr + 7, '.');
}

static int type_matches(const char *type, const json_t *v)
{
	if (mo_json_has_deferred(v) && (mo_ref_is(v) || mo_tmpl_is(v) || mo_unknown_is(v)))
		return 1; /* known after apply: checked by the module at apply time */
	if (!strcmp(type, "any"))
		return 1;
	if (!strcmp(type, "string"))
		return json_is_string(v);
	if (!strcmp(type, "number"))
		return json_is_number(v);
	if (!strcmp(type, "integer"))
		return json_is_integer(v);
	if (!strcmp(type, "boolean") || !strcmp(type, "bool"))
		return json_is_boolean(v);
	if (!strcmp(type, "list"))
		return json_is_array(v) || (json_is_object(v) && json_object_size(v) == 0);
	if (!strcmp(type, "map") || !strcmp(type, "object"))
		return json_is_object(v);
	return 0;
}

/* "a string", "an integer", "any value" */
static const char *with_article(const char *type)
{
	static const struct {
		const char *type, *phrase;
	} phrases[] = {
		{ "string", "a string" }, { "number", "a number" }, { "integer", "an integer" },
		{ "boolean", "a boolean" }, { "bool", "a boolean" }, { "list", "a list" },
		{ "map", "a map" }, { "object", "an object" }, { "any", "any value" },
		{ "null", "null" },
	};
	for (size_t i = 0; i < MO_ARRAY_SIZE(phrases); i++)
		if (!strcmp(phrases[i].type, type))
			return phrases[i].phrase;
	return type;
}

static const char *json_kind(const json_t *v)
{
	switch (json_typeof(v)) {
	case JSON_OBJECT: return "map";
	case JSON_ARRAY: return "list";
	case JSON_STRING: return "string";
	case JSON_INTEGER: return "integer";
	case JSON_REAL: return "number";
	case JSON_TRUE: case JSON_FALSE: return "boolean";
	default: return "null";
	}
}

/* Convert a --var string to the declared type. *out is a new reference. */
static int var_from_string(const mo_var_def *d, const char *s, json_t **out)
{
	json_error_t jerr;
	char *end;
	if (!strcmp(d->type, "string")) {
		*out = json_string(s);
	} else if (!strcmp(d->type, "integer")) {
		long long v = strtoll(s, &end, 10);
		if (!*s || *end)
			return mo_error_set(MO_EINVAL, "variable '%s': '%s' is not an integer", d->name, s);
		*out = json_integer(v);
	} else if (!strcmp(d->type, "number")) {
		double v = strtod(s, &end);
		if (!*s || *end)
			return mo_error_set(MO_EINVAL, "variable '%s': '%s' is not a number", d->name, s);
		*out = v == (double)(long long)v ? json_integer((long long)v) : json_real(v);
	} else if (!strcmp(d->type, "boolean") || !strcmp(d->type, "bool")) {
		if (!strcmp(s, "true") || !strcmp(s, "1"))
			*out = json_true();
		else if (!strcmp(s, "false") || !strcmp(s, "0"))
			*out = json_false();
		else
			return mo_error_set(MO_EINVAL, "variable '%s': '%s' is not true or false", d->name, s);
	} else {
		*out = json_loads(s, JSON_DECODE_ANY, &jerr);
		if (!*out) {
			if (!strcmp(d->type, "any")) {
				*out = json_string(s);
				return 0;
			}
			return mo_error_set(MO_EINVAL, "variable '%s': value is not valid JSON for a %s: %s",
					    d->name, d->type, jerr.text);
		}
	}
	return 0;
}

/* ---- plan file builtins ----------------------------------------------- */

static mo_plan *plan_of(lua_State *L)
{
	return lua_touserdata(L, lua_upvalueindex(1));
}

static void add_secret(mo_plan *p, const json_t *v)
{
	size_t i;
	const char *k;
	json_t *x;
	if (json_is_string(v) && json_string_length(v) >= 4)
		json_array_append_new(p->secrets, json_string(json_string_value(v)));
	else if (json_is_object(v))
		json_object_foreach((json_t *)v, k, x) add_secret(p, x);
	else if (json_is_array(v))
		json_array_foreach(v, i, x) add_secret(p, x);
}

/* variable(name, spec) -> value.  Stack: 2 args -> 1 result. */
static int l_variable(lua_State *L)
{
	mo_plan *p = plan_of(L);
	const char *name = luaL_checkstring(L, 1);
	mo_var_def *d, *nv;
	json_t *given = NULL, *val = NULL;
	char *envname;
	const char *env;
	int i;
	if (!valid_ident(name))
		return luaL_error(L, "variable name '%s' must be an identifier", name);
	for (size_t k = 0; k < p->nvars; k++)
		if (!strcmp(p->vars[k].name, name))
			return luaL_error(L, "variable '%s' is declared twice (first at %s)", name,
					  p->vars[k].where);
	if (!lua_isnoneornil(L, 2))
		luaL_checktype(L, 2, LUA_TTABLE);
	nv = mo_realloc(p->vars, (p->nvars + 1) * sizeof(*p->vars));
	if (!nv)
		return luaL_error(L, "out of memory");
	p->vars = nv;
	d = &p->vars[p->nvars++];
	memset(d, 0, sizeof(*d));
	d->name = mo_strdup(name);
	d->where = where_of(L, 1);
	d->type = mo_strdup("string");
	if (lua_istable(L, 2)) {
		if (lua_getfield(L, 2, "type") != LUA_TNIL) {
			const char *t = lua_tostring(L, -1);
			for (i = 0; var_types[i] && (!t || strcmp(var_types[i], t)); i++)
				;
			if (!var_types[i])
				return luaL_error(L, "variable '%s': unknown type '%s' (use string, number, "
						  "integer, boolean, list, map or any)", name, t ? t : "?");
			mo_free(d->type);
			d->type = mo_strdup(t);
		}
		lua_pop(L, 1);
		if (lua_getfield(L, 2, "description") == LUA_TSTRING)
			d->description = mo_strdup(lua_tostring(L, -1));
		lua_pop(L, 1);
		lua_getfield(L, 2, "sensitive");
		d->sensitive = lua_toboolean(L, -1);
		lua_pop(L, 1);
		if (lua_getfield(L, 2, "default") != LUA_TNIL) {
			if (mo_lj_to_json(L, -1, "default", &d->def) < 0)
				return luaL_error(L, "variable '%s': %s", name, mo_error_last()->message);
			if (!type_matches(d->type, d->def))
				return luaL_error(L, "variable '%s': default is %s, not %s", name,
						  with_article(json_kind(d->def)), with_article(d->type));
		}
		lua_pop(L, 1);
	}
	/* value: --var / --var-file, then MECORCH_VAR_<name>, then the default */
	given = json_object_get(p->var_values, name);
	if (given && json_is_string(given) && strcmp(d->type, "string") && strcmp(d->type, "any")) {
		if (var_from_string(d, json_string_value(given), &val) < 0)
			return luaL_error(L, "%s", mo_error_last()->message);
	} else if (given) {
		val = json_incref(given);
	} else if ((envname = mo_sprintf("MECORCH_VAR_%s", name)) && (env = getenv(envname))) {
		mo_free(envname);
		if (var_from_string(d, env, &val) < 0)
			return luaL_error(L, "%s (from MECORCH_VAR_%s)", mo_error_last()->message, name);
	} else {
		mo_free(envname);
		if (!d->def && p->lenient) {
			/* init needs only the sources: a value not given is unknown */
			json_t *u = json_pack("{s:s}", "$unknown", "a variable without a value");
			mo_lj_push_ref(L, u);
			json_decref(u);
			return 1;
		}
		if (!d->def)
			return luaL_error(L, "variable '%s' has no value: pass --var %s=VALUE, a "
					  "--var-file, or set MECORCH_VAR_%s", name, name, name);
		val = json_incref(d->def);
	}
	if (val != d->def) {
		/* values from outside are data: their "$" keys cannot be markers */
		json_t *esc = mo_lj_escape(val);
		json_decref(val);
		val = esc;
	}
	if (!type_matches(d->type, val)) {
		const char *kind = json_kind(val);
		json_decref(val);
		return luaL_error(L, "variable '%s' must be %s, got %s", name, with_article(d->type),
				  with_article(kind));
	}
	json_object_set(p->var_values, name, val);
	if (d->sensitive)
		add_secret(p, val);
	mo_lj_push(L, val);
	json_decref(val);
	return 1;
}

static mo_instance *find_inst(const mo_plan *p, const char *name)
{
	for (size_t i = 0; i < p->ninsts; i++)
		if (!strcmp(p->insts[i]->name, name))
			return p->insts[i];
	return NULL;
}

/* Collect the module names referenced in v into names (a JSON object used
 * as a set). */
static void module_refs(const json_t *v, json_t *names)
{
	size_t i;
	const char *k;
	json_t *x;
	if (mo_ref_is(v)) {
		const char *a = json_string_value(json_object_get(v, "$ref"));
		if (ref_is_module(a))
			json_object_set_new(names, a + 7, json_true());
		return;
	}
	if (json_is_object(v))
		json_object_foreach((json_t *)v, k, x) module_refs(x, names);
	else if (json_is_array(v))
		json_array_foreach(v, i, x) module_refs(x, names);
}

/* module(name, {source=, version=, inputs=, depends_on=}) -> module reference */
static int l_module(lua_State *L)
{
	mo_plan *p = plan_of(L);
	const char *name = luaL_checkstring(L, 1);
	mo_instance *in, **ni;
	json_t *ref;
	luaL_checktype(L, 2, LUA_TTABLE);
	if (!valid_ident(name))
		return luaL_error(L, "module instance name '%s' must be an identifier", name);
	if ((in = find_inst(p, name)))
		return luaL_error(L, "module '%s' is declared twice (first at %s)", name, in->where);
	ni = mo_realloc(p->insts, (p->ninsts + 1) * sizeof(*p->insts));
	if (!ni || !(in = mo_calloc(1, sizeof(*in))))
		return luaL_error(L, "out of memory");
	p->insts = ni;
	p->insts[p->ninsts++] = in;
	in->modref = LUA_NOREF;
	in->name = mo_strdup(name);
	in->where = where_of(L, 1);
	if (lua_getfield(L, 2, "source") != LUA_TSTRING)
		return luaL_error(L, "module '%s': 'source' must be a string (a path or git URL)", name);
	in->source = mo_strdup(lua_tostring(L, -1));
	in->shown = mo_source_display(in->source);
	lua_pop(L, 1);
	if (lua_getfield(L, 2, "version") != LUA_TNIL) {
		if (!lua_isstring(L, -1))
			return luaL_error(L, "module '%s': 'version' must be a string like \"~> 1.2\"", name);
		in->version = mo_strdup(lua_tostring(L, -1));
	}
	lua_pop(L, 1);
	lua_getfield(L, 2, "inputs");
	if (!lua_isnil(L, -1) && !lua_istable(L, -1))
		return luaL_error(L, "module '%s': 'inputs' must be a table", name);
	if (lua_isnil(L, -1))
		in->inputs_raw = json_object();
	else if (mo_lj_to_json(L, -1, "inputs", &in->inputs_raw) < 0)
		return luaL_error(L, "module '%s': %s", name, mo_error_last()->message);
	if (!json_is_object(in->inputs_raw))
		return luaL_error(L, "module '%s': 'inputs' must be a table of named values", name);
	lua_pop(L, 1);
	in->depends = json_array();
	if (lua_getfield(L, 2, "depends_on") != LUA_TNIL) {
		if (!lua_istable(L, -1))
			return luaL_error(L, "module '%s': 'depends_on' must be a list of modules", name);
		for (lua_Integer i = 1; lua_geti(L, -1, i) != LUA_TNIL; i++) {
			const json_t *m = mo_lj_toref(L, -1);
			const char *a = m && mo_ref_is(m) ? json_string_value(json_object_get(m, "$ref")) : NULL;
			if (!a || !ref_is_module(a) || json_array_size(json_object_get(m, "path")))
				return luaL_error(L, "module '%s': depends_on[%d] is not a module", name, (int)i);
			json_array_append_new(in->depends, json_string(a + 7));
			lua_pop(L, 1);
		}
		lua_pop(L, 1);
	}
	lua_pop(L, 1);
	for (lua_pushnil(L); lua_next(L, 2); lua_pop(L, 1)) {
		const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "?";
		if (strcmp(k, "source") && strcmp(k, "version") && strcmp(k, "inputs") &&
		    strcmp(k, "depends_on"))
			return luaL_error(L, "module '%s': unknown field '%s' (use source, version, "
					  "inputs, depends_on)", name, k);
	}
	{
		char *addr = mo_sprintf("module.%s", name);
		ref = mo_ref_new(addr, NULL);
		mo_free(addr);
	}
	mo_lj_push_ref(L, ref);
	json_decref(ref);
	return 1;
}

/* output(name, value[, {sensitive=, description=}]) */
static int l_output(lua_State *L)
{
	mo_plan *p = plan_of(L);
	const char *name = luaL_checkstring(L, 1);
	json_t *v, *o;
	int sensitive = 0;
	luaL_checkany(L, 2);
	if (json_object_get(p->outputs, name))
		return luaL_error(L, "output '%s' is declared twice", name);
	if (mo_lj_to_json(L, 2, "output", &v) < 0)
		return luaL_error(L, "output '%s': %s", name, mo_error_last()->message);
	o = json_object();
	json_object_set_new(o, "value", v);
	if (lua_istable(L, 3)) {
		lua_getfield(L, 3, "sensitive");
		sensitive = lua_toboolean(L, -1);
		lua_pop(L, 1);
		if (lua_getfield(L, 3, "description") == LUA_TSTRING)
			json_object_set_new(o, "description", json_string(lua_tostring(L, -1)));
		lua_pop(L, 1);
	}
	json_object_set_new(o, "sensitive", json_boolean(sensitive));
	json_object_set_new(p->outputs, name, o);
	return 0;
}

/* Run the function on top of sb's main stack (with nargs args) as a task
 * that must not wait for I/O; leaves nret results on the main stack. */
static int run_pure(mo_sandbox *sb, int nargs, int nret, const char *label, int traceback)
{
	lua_State *L = mo_sandbox_L(sb), *T;
	mo_task *t = NULL;
	int status, nres, rc;
	if ((rc = mo_task_new(&t, sb, nargs, label)) < 0)
		return rc;
	rc = mo_task_resume(t, 0, &status, &nres);
	if (rc < 0) {
		const char *tb = mo_task_traceback(t);
		if (traceback && tb && *tb) {
			char *msg = mo_sprintf("%s\n%s", mo_error_last()->message, tb);
			if (msg) {
				mo_error_set(rc, "%s", msg);
				mo_free(msg);
			}
		}
		goto done;
	}
	if (status != MO_TASK_DONE) {
		rc = mo_error_set(MO_EMODULE, "%s: %s may not wait for I/O", mo_sandbox_name(sb), label);
		goto done;
	}
	T = mo_task_thread(t);
	if (nres < nret) {
		lua_settop(T, lua_gettop(T) + nret - nres);
		nres = nret;
	}
	lua_xmove(T, L, nres);
	if (nres > nret)
		lua_pop(L, nres - nret);
done:
	mo_task_free(t);
	return rc;
}

/* ---- modules ----------------------------------------------------------- */

static void rtypes_free(mo_rtype *t, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		mo_free(t[i].name);
		json_decref(t[i].replace_on);
		json_decref(t[i].sensitive);
	}
	mo_free(t);
}

void mo_instance_free(mo_instance *in)
{
	if (!in)
		return;
	mo_free(in->name);
	mo_free(in->source);
	mo_free(in->shown);
	mo_free(in->version);
	mo_free(in->where);
	mo_free(in->dir);
	mo_free(in->pinned);
	mo_free(in->mod_name);
	mo_free(in->mod_version);
	json_decref(in->inputs_raw);
	json_decref(in->inputs);
	json_decref(in->depends);
	json_decref(in->input_spec);
	json_decref(in->outputs);
	rtypes_free(in->types, in->ntypes);
	mo_sandbox_free(in->sb);
	mo_free(in);
}

const mo_rtype *mo_instance_type(const mo_instance *in, const char *type)
{
	for (size_t i = 0; i < in->ntypes; i++)
		if (!strcmp(in->types[i].name, type))
			return &in->types[i];
	return NULL;
}

int mo_instance_push_handler(mo_instance *in, const char *type, const char *fn)
{
	lua_State *L = mo_sandbox_L(in->sb);
	lua_rawgeti(L, LUA_REGISTRYINDEX, in->modref);
	lua_getfield(L, -1, "resources");
	lua_getfield(L, -1, type);
	if (!lua_istable(L, -1)) {
		lua_pop(L, 3);
		return mo_error_set(MO_EINVAL, "module %s has no resource type '%s'", in->name, type);
	}
	lua_getfield(L, -1, fn);
	lua_replace(L, -4);
	lua_pop(L, 2);
	if (!lua_isfunction(L, -1)) {
		lua_pop(L, 1);
		return mo_error_set(MO_EINVAL, "module %s: resource type '%s' has no %s()", in->name, type, fn);
	}
	return 0;
}

/* Read a list of strings from field `key` of the table at idx into a JSON array. */
static int string_list(lua_State *L, int idx, const char *key, const char *ctx, json_t **out)
{
	json_t *a = json_array();
	if (lua_getfield(L, idx, key) != LUA_TNIL) {
		if (!lua_istable(L, -1)) {
			json_decref(a);
			lua_pop(L, 1);
			return mo_error_set(MO_EINVAL, "%s.%s must be a list of strings", ctx, key);
		}
		for (lua_Integer i = 1; lua_geti(L, -1, i) != LUA_TNIL; i++) {
			if (lua_type(L, -1) != LUA_TSTRING) {
				json_decref(a);
				lua_pop(L, 2);
				return mo_error_set(MO_EINVAL, "%s.%s[%d] must be a string", ctx, key, (int)i);
			}
			json_array_append_new(a, json_string(lua_tostring(L, -1)));
			lua_pop(L, 1);
		}
		lua_pop(L, 1);
	}
	lua_pop(L, 1);
	*out = a;
	return 0;
}

/* Validate the module table on top of the main stack and record its shape. */
static int module_validate(mo_instance *in, lua_State *L)
{
	int t = lua_gettop(L), rc = 0;
	char ctx[256];
	const char *file = "module.lua";
	if (!lua_istable(L, t))
		return mo_error_set(MO_EINVAL, "module %s (%s): %s must return a table, got %s",
				    in->name, in->shown ? in->shown : in->dir, file, luaL_typename(L, t));
	if (lua_getfield(L, t, "name") == LUA_TSTRING)
		in->mod_name = mo_strdup(lua_tostring(L, -1));
	lua_pop(L, 1);
	if (lua_getfield(L, t, "version") == LUA_TSTRING)
		in->mod_version = mo_strdup(lua_tostring(L, -1));
	lua_pop(L, 1);
	if (lua_getfield(L, t, "declare") != LUA_TFUNCTION) {
		lua_pop(L, 1);
		return mo_error_set(MO_EINVAL, "module %s: %s: 'declare' must be a function", in->name, file);
	}
	lua_pop(L, 1);
	/* inputs spec */
	in->input_spec = json_object();
	if (lua_getfield(L, t, "inputs") != LUA_TNIL) {
		if (!lua_istable(L, -1)) {
			lua_pop(L, 1);
			return mo_error_set(MO_EINVAL, "module %s: %s: 'inputs' must be a table", in->name, file);
		}
		for (lua_pushnil(L); lua_next(L, -2); lua_pop(L, 1)) {
			json_t *spec = json_object();
			const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
			const char *ty = NULL;
			int i, optional = 0;
			if (!k) {
				json_decref(spec);
				lua_pop(L, 3);
				return mo_error_set(MO_EINVAL, "module %s: inputs keys must be names", in->name);
			}
			if (lua_type(L, -1) == LUA_TSTRING) {
				ty = lua_tostring(L, -1);
			} else if (lua_istable(L, -1)) {
				if (lua_getfield(L, -1, "type") == LUA_TSTRING)
					ty = lua_tostring(L, -1);
				lua_pop(L, 1);
				lua_getfield(L, -1, "sensitive");
				json_object_set_new(spec, "sensitive", json_boolean(lua_toboolean(L, -1)));
				lua_pop(L, 1);
				if (lua_getfield(L, -1, "default") != LUA_TNIL) {
					json_t *def;
					if (mo_lj_to_json(L, -1, "default", &def) < 0) {
						json_decref(spec);
						lua_pop(L, 4);
						return mo_error_prefix("module %s: input '%s'", in->name, k);
					}
					json_object_set_new(spec, "default", def);
					optional = 1;
				}
				lua_pop(L, 1);
			}
			if (!ty)
				ty = "any";
			{
				char tb[32];
				size_t n = strlen(ty);
				snprintf(tb, sizeof(tb), "%s", ty);
				if (n > 0 && n < sizeof(tb) && tb[n - 1] == '?') {
					tb[n - 1] = '\0';
					optional = 1;
				}
				for (i = 0; var_types[i] && strcmp(var_types[i], tb); i++)
					;
				if (!var_types[i]) {
					json_decref(spec);
					lua_pop(L, 3);
					return mo_error_set(MO_EINVAL, "module %s: input '%s' has unknown type '%s'",
							    in->name, k, ty);
				}
				json_object_set_new(spec, "type", json_string(tb));
			}
			json_object_set_new(spec, "optional", json_boolean(optional));
			json_object_set_new(in->input_spec, k, spec);
		}
	}
	lua_pop(L, 1);
	/* resource types */
	if (lua_getfield(L, t, "resources") != LUA_TTABLE) {
		lua_pop(L, 1);
		return mo_error_set(MO_EINVAL, "module %s: %s: 'resources' must be a table of resource types",
				    in->name, file);
	}
	for (lua_pushnil(L); lua_next(L, -2); lua_pop(L, 1)) {
		mo_rtype *nt, *rt;
		static const char *const need[] = { "create", "read", "delete" };
		if (lua_type(L, -2) != LUA_TSTRING || !valid_ident(lua_tostring(L, -2)) || !lua_istable(L, -1)) {
			lua_pop(L, 3);
			return mo_error_set(MO_EINVAL, "module %s: resources must map type names to tables",
					    in->name);
		}
		nt = mo_realloc(in->types, (in->ntypes + 1) * sizeof(*nt));
		if (!nt) {
			lua_pop(L, 3);
			return mo_error_set(MO_ENOMEM, "out of memory");
		}
		in->types = nt;
		rt = &in->types[in->ntypes++];
		memset(rt, 0, sizeof(*rt));
		rt->name = mo_strdup(lua_tostring(L, -2));
		snprintf(ctx, sizeof(ctx), "module %s: resources.%s", in->name, rt->name);
		for (size_t i = 0; i < MO_ARRAY_SIZE(need); i++) {
			if (lua_getfield(L, -1, need[i]) != LUA_TFUNCTION) {
				lua_pop(L, 4);
				return mo_error_set(MO_EINVAL, "%s.%s must be a function", ctx, need[i]);
			}
			lua_pop(L, 1);
		}
		rt->has_update = lua_getfield(L, -1, "update") == LUA_TFUNCTION;
		lua_pop(L, 1);
		lua_getfield(L, -1, "create_before_destroy");
		rt->create_before_destroy = lua_toboolean(L, -1);
		lua_pop(L, 1);
		if ((rc = string_list(L, lua_gettop(L), "replace_on", ctx, &rt->replace_on)) < 0 ||
		    (rc = string_list(L, lua_gettop(L), "sensitive", ctx, &rt->sensitive)) < 0) {
			lua_pop(L, 3);
			return rc;
		}
	}
	lua_pop(L, 1);
	if (in->ntypes == 0)
		return mo_error_set(MO_EINVAL, "module %s: %s declares no resource types", in->name, file);
	return 0;
}

static int instance_load_code(mo_instance *in, mo_rt *rt, const mo_sandbox_limits *limits)
{
	char *label = NULL;
	lua_State *L;
	int rc;
	label = mo_sprintf("module %s", in->name);
	if ((rc = mo_sandbox_new(&in->sb, in->dir, label, rt, limits)) < 0)
		goto done;
	L = mo_sandbox_L(in->sb);
	mo_drivers_open(L);
	if ((rc = mo_sandbox_loadfile(in->sb, "module.lua")) < 0)
		goto done;
	if ((rc = run_pure(in->sb, 0, 1, "loading module.lua", 1)) < 0)
		goto done;
	if ((rc = module_validate(in, L)) < 0) {
		lua_settop(L, 0);
		if (in->where)
			mo_error_prefix("%s (source %s)", in->where, in->shown);
		goto done;
	}
	in->modref = luaL_ref(L, LUA_REGISTRYINDEX);
done:
	mo_free(label);
	return rc;
}

int mo_instance_load(mo_instance **out, const char *name, const char *dir, const char *pinned,
		     mo_rt *rt, const mo_sandbox_limits *limits)
{
	mo_instance *in = mo_calloc(1, sizeof(*in));
	int rc;
	if (!in)
		return mo_error_set(MO_ENOMEM, "out of memory");
	in->modref = LUA_NOREF;
	in->name = mo_strdup(name);
	in->dir = mo_strdup(dir);
	in->pinned = mo_strdup(pinned);
	in->source = mo_strdup(pinned);
	in->shown = mo_source_display(pinned);
	if ((rc = instance_load_code(in, rt, limits)) < 0) {
		mo_instance_free(in);
		return rc;
	}
	*out = in;
	return 0;
}

void mo_instance_set_clear(mo_instance_set *set)
{
	for (size_t i = 0; i < set->n; i++)
		mo_instance_free(set->v[i]);
	mo_free(set->v);
	set->v = NULL;
	set->n = 0;
}

int mo_instance_for(mo_plan *p, mo_instance_set *extra, const char *module, const char *type,
		    const char *source, mo_sources *src, mo_rt *rt, const mo_sandbox_limits *lim,
		    mo_instance **out)
{
	char *dir = NULL, *pinned = NULL;
	mo_instance *in, **n;
	int rc;
	for (size_t i = 0; p && i < p->ninsts; i++)
		if (!strcmp(p->insts[i]->name, module) && p->insts[i]->sb &&
		    mo_instance_type(p->insts[i], type)) {
			*out = p->insts[i];
			return 0;
		}
	for (size_t i = 0; i < extra->n; i++)
		if (!strcmp(extra->v[i]->name, module) && !strcmp(extra->v[i]->pinned, source)) {
			*out = extra->v[i];
			return 0;
		}
	if (!src)
		return mo_error_set(MO_ESOURCE, "no source resolver to load module %s from %s", module, source);
	if ((rc = mo_sources_resolve(src, source, NULL, &dir, &pinned)) < 0)
		return mo_error_prefix("loading module %s from %s", module, source);
	rc = mo_instance_load(&in, module, dir, source, rt, lim ? lim : (p ? &p->limits : NULL));
	mo_free(dir);
	mo_free(pinned);
	if (rc < 0)
		return rc;
	if (!(n = mo_realloc(extra->v, (extra->n + 1) * sizeof(*n)))) {
		mo_instance_free(in);
		return mo_error_set(MO_ENOMEM, "out of memory");
	}
	extra->v = n;
	extra->v[extra->n++] = in;
	*out = in;
	return 0;
}

/* ---- substitution of module references -------------------------------- */

/* Replace module references in v by the referenced module's output value.
 * *out is a new reference. */
static int subst(const mo_plan *p, const json_t *v, const char *ctx, json_t **out)
{
	size_t i;
	const char *k;
	json_t *x, *res, *y;
	int rc;
	if (mo_ref_is(v)) {
		const char *a = json_string_value(json_object_get(v, "$ref"));
		json_t *path = json_object_get(v, "path"), *cur;
		mo_instance *in;
		size_t n = json_array_size(path);
		if (!ref_is_module(a)) {
			*out = json_deep_copy(v);
			return 0;
		}
		if (!(in = find_inst(p, a + 7)) || !in->declared)
			return mo_error_set(MO_EINVAL, "%s: module '%s' is not declared", ctx, a + 7);
		if (n == 0)
			return mo_error_set(MO_EINVAL, "%s: a whole module (%s) cannot be used as a value; "
					    "name one of its outputs", ctx, a);
		cur = in->outputs;
		for (i = 0; i < n; i++) {
			json_t *seg = json_array_get(path, i);
			if (mo_ref_is(cur)) { /* descend into a resource reference */
				json_t *r = json_deep_copy(cur);
				json_t *rp = json_object_get(r, "path");
				for (; i < n; i++)
					json_array_append(rp, json_array_get(path, i));
				*out = r;
				return 0;
			}
			if (json_is_string(seg) && json_is_object(cur))
				cur = json_object_get(cur, json_string_value(seg));
			else if (json_is_integer(seg) && json_is_array(cur))
				cur = json_array_get(cur, (size_t)json_integer_value(seg));
			else
				cur = NULL;
			if (!cur) {
				char *t = mo_ref_text(v);
				rc = mo_error_set(MO_EINVAL, "%s: %s: module '%s' has no such output%s",
						  ctx, t, in->name, i == 0 ? "" : " field");
				mo_free(t);
				return rc;
			}
		}
		*out = json_deep_copy(cur);
		return 0;
	}
	if (mo_tmpl_is(v)) {
		json_t *parts = json_array(), *flat;
		json_array_foreach(json_object_get(v, "$tmpl"), i, x) {
			if ((rc = subst(p, x, ctx, &y)) < 0) {
				json_decref(parts);
				return rc;
			}
			if (mo_tmpl_is(y))
				json_array_extend(parts, json_object_get(y, "$tmpl"));
			else if (json_is_string(y) || mo_ref_is(y))
				json_array_append(parts, y);
			else if (json_is_integer(y))
				json_array_append_new(parts, json_sprintf("%lld", (long long)json_integer_value(y)));
			else if (json_is_real(y))
				json_array_append_new(parts, json_sprintf("%.14g", json_real_value(y)));
			else {
				json_decref(y);
				json_decref(parts);
				return mo_error_set(MO_EINVAL, "%s: a %s cannot be joined into a string", ctx,
						    json_kind(y));
			}
			json_decref(y);
		}
		/* fully known templates collapse to a string */
		{
			int known = 1;
			mo_buf b = MO_BUF_INIT;
			json_array_foreach(parts, i, x) if (!json_is_string(x)) known = 0;
			if (known) {
				mo_buf_puts(&b, "");
				json_array_foreach(parts, i, x) mo_buf_puts(&b, json_string_value(x));
				*out = json_string(b.ptr);
				mo_buf_free(&b);
				json_decref(parts);
				return 0;
			}
		}
		flat = json_object();
		json_object_set_new(flat, "$tmpl", parts);
		*out = flat;
		return 0;
	}
	if (json_is_object(v)) {
		res = json_object();
		json_object_foreach((json_t *)v, k, x) {
			if ((rc = subst(p, x, ctx, &y)) < 0) {
				json_decref(res);
				return rc;
			}
			json_object_set_new(res, k, y);
		}
		*out = res;
		return 0;
	}
	if (json_is_array(v)) {
		res = json_array();
		json_array_foreach(v, i, x) {
			if ((rc = subst(p, x, ctx, &y)) < 0) {
				json_decref(res);
				return rc;
			}
			json_array_append_new(res, y);
		}
		*out = res;
		return 0;
	}
	*out = json_incref((json_t *)v);
	return 0;
}

/* ---- declare ----------------------------------------------------------- */

typedef struct {
	mo_plan *p;
	mo_instance *in;
	json_t *outputs;
} declare_ctx;

static int add_desired(mo_plan *p, mo_desired **out)
{
	if (p->nres == p->capres) {
		size_t cap = p->capres ? p->capres * 2 : 64;
		mo_desired *n = mo_realloc(p->res, cap * sizeof(*n));
		if (!n)
			return mo_error_set(MO_ENOMEM, "out of memory");
		p->res = n;
		p->capres = cap;
	}
	*out = &p->res[p->nres++];
	memset(*out, 0, sizeof(**out));
	return 0;
}

/* m.resource(type, name, props[, {depends_on = {...}}]) -> handle */
static int l_resource(lua_State *L)
{
	declare_ctx *dc = lua_touserdata(L, lua_upvalueindex(1));
	const char *type = luaL_checkstring(L, 1), *name = luaL_checkstring(L, 2);
	const mo_rtype *rt = mo_instance_type(dc->in, type);
	mo_desired *d = NULL;
	char *addr;
	size_t idx;
	json_t *ref;
	if (!rt)
		return luaL_error(L, "m.resource: module has no resource type '%s'", type);
	if (!valid_res_name(name))
		return luaL_error(L, "m.resource: invalid resource name '%s' (letters, digits and _.:@/+- "
				  "only, at most 200)", name);
	luaL_checktype(L, 3, LUA_TTABLE);
	addr = mo_sprintf("module.%s.%s.%s", dc->in->name, type, name);
	if (!addr)
		return luaL_error(L, "out of memory");
	if (mo_graph_find(dc->p->rgraph, addr, &idx) == 0) {
		lua_pushfstring(L, "m.resource: %s is declared twice (first at %s)", addr,
				dc->p->res[idx].where);
		mo_free(addr);
		return lua_error(L);
	}
	if (add_desired(dc->p, &d) < 0 || mo_graph_add_node(dc->p->rgraph, addr, &idx) < 0) {
		mo_free(addr);
		return luaL_error(L, "out of memory");
	}
	d->address = addr;
	d->name = mo_strdup(name);
	d->where = where_of(L, 1);
	d->inst = dc->in;
	d->rtype = rt;
	d->deps = json_array();
	if (mo_lj_to_json(L, 3, "props", &d->props) < 0)
		return luaL_error(L, "m.resource %s: %s", addr, mo_error_last()->message);
	if (lua_istable(L, 4)) {
		if (lua_getfield(L, 4, "depends_on") == LUA_TTABLE) {
			for (lua_Integer i = 1; lua_geti(L, -1, i) != LUA_TNIL; i++) {
				const json_t *m = mo_lj_toref(L, -1);
				if (!m || !mo_ref_is(m) || json_array_size(json_object_get(m, "path")))
					return luaL_error(L, "m.resource %s: depends_on[%d] is not a resource handle",
							  addr, (int)i);
				json_array_append_new(d->deps, json_string(json_string_value(json_object_get(m, "$ref"))));
				lua_pop(L, 1);
			}
			lua_pop(L, 1);
		}
		lua_pop(L, 1);
	}
	ref = mo_ref_new(addr, NULL);
	mo_lj_push_ref(L, ref);
	json_decref(ref);
	return 1;
}

/* m.output(name, value) */
static int l_moutput(lua_State *L)
{
	declare_ctx *dc = lua_touserdata(L, lua_upvalueindex(1));
	const char *name = luaL_checkstring(L, 1);
	json_t *v;
	luaL_checkany(L, 2);
	if (json_object_get(dc->outputs, name))
		return luaL_error(L, "m.output: output '%s' is set twice", name);
	if (mo_lj_to_json(L, 2, "output", &v) < 0)
		return luaL_error(L, "m.output '%s': %s", name, mo_error_last()->message);
	json_object_set_new(dc->outputs, name, v);
	return 0;
}

/* Validate inputs against the module's spec, applying defaults. */
static int check_inputs(mo_plan *p, mo_instance *in)
{
	const char *k;
	json_t *v, *spec;
	json_object_foreach(in->inputs, k, v) {
		spec = json_object_get(in->input_spec, k);
		if (!spec) {
			mo_buf b = MO_BUF_INIT;
			const char *k2;
			json_t *s2;
			mo_buf_puts(&b, "");
			json_object_foreach(in->input_spec, k2, s2) mo_buf_printf(&b, "%s%s", b.len ? ", " : "", k2);
			mo_error_set(MO_EINVAL, "%s: module '%s' has no input '%s' (its inputs: %s)",
				     in->where, in->name, k, b.len ? b.ptr : "none");
			mo_buf_free(&b);
			return MO_EINVAL;
		}
		if (!type_matches(json_string_value(json_object_get(spec, "type")), v))
			return mo_error_set(MO_EINVAL, "%s: module '%s' input '%s' must be %s, got %s",
					    in->where, in->name, k,
					    with_article(json_string_value(json_object_get(spec, "type"))),
					    with_article(json_kind(v)));
		if (json_is_true(json_object_get(spec, "sensitive")))
			add_secret(p, v);
	}
	json_object_foreach(in->input_spec, k, spec) {
		if (json_object_get(in->inputs, k))
			continue;
		if (json_object_get(spec, "default"))
			json_object_set(in->inputs, k, json_object_get(spec, "default"));
		else if (!json_is_true(json_object_get(spec, "optional")))
			return mo_error_set(MO_EINVAL, "%s: module '%s' needs input '%s' (%s)", in->where,
					    in->name, k, with_article(json_string_value(json_object_get(spec, "type"))));
	}
	return 0;
}

static int declare_instance(mo_plan *p, mo_instance *in)
{
	lua_State *L = mo_sandbox_L(in->sb);
	declare_ctx dc = { p, in, json_object() };
	char ctxs[300];
	int rc;
	snprintf(ctxs, sizeof(ctxs), "%s: module '%s' inputs", in->where, in->name);
	if ((rc = subst(p, in->inputs_raw, ctxs, &in->inputs)) < 0)
		goto done;
	if ((rc = check_inputs(p, in)) < 0)
		goto done;
	lua_rawgeti(L, LUA_REGISTRYINDEX, in->modref);
	lua_getfield(L, -1, "declare");
	lua_remove(L, -2);
	mo_lj_push(L, in->inputs);
	lua_createtable(L, 0, 2);
	lua_pushlightuserdata(L, &dc);
	lua_pushcclosure(L, l_resource, 1);
	lua_setfield(L, -2, "resource");
	lua_pushlightuserdata(L, &dc);
	lua_pushcclosure(L, l_moutput, 1);
	lua_setfield(L, -2, "output");
	rc = run_pure(in->sb, 2, 0, "declare()", 1);
	if (rc < 0)
		goto done;
	in->outputs = json_incref(dc.outputs);
	in->declared = 1;
done:
	json_decref(dc.outputs);
	return rc;
}

/* Add dependency edges of resource i: explicit, references, module depends_on. */
static void collect_refs(const json_t *v, json_t *set)
{
	size_t i;
	const char *k;
	json_t *x;
	if (mo_ref_is(v)) {
		const char *a = json_string_value(json_object_get(v, "$ref"));
		if (!ref_is_module(a))
			json_object_set_new(set, a, json_true());
		return;
	}
	if (mo_tmpl_is(v)) {
		json_array_foreach(json_object_get(v, "$tmpl"), i, x) collect_refs(x, set);
		return;
	}
	if (json_is_object(v))
		json_object_foreach((json_t *)v, k, x) collect_refs(x, set);
	else if (json_is_array(v))
		json_array_foreach(v, i, x) collect_refs(x, set);
}

static int build_edges(mo_plan *p)
{
	for (size_t i = 0; i < p->nres; i++) {
		mo_desired *d = &p->res[i];
		json_t *set = json_object(), *x, *dm;
		const char *a;
		size_t j, idx;
		collect_refs(d->props, set);
		json_array_foreach(d->deps, j, x) json_object_set_new(set, json_string_value(x), json_true());
		/* module-level depends_on: every resource of the named modules */
		json_array_foreach(d->inst->depends, j, dm) {
			for (size_t r = 0; r < p->nres; r++)
				if (!strcmp(p->res[r].inst->name, json_string_value(dm)))
					json_object_set_new(set, p->res[r].address, json_true());
		}
		json_array_clear(d->deps);
		json_object_foreach(set, a, x) {
			if (mo_graph_find(p->rgraph, a, &idx) < 0) {
				json_decref(set);
				return mo_error_set(MO_EINVAL, "%s: %s refers to %s, which is not declared",
						    d->where, d->address, a);
			}
			if (idx == i) {
				json_decref(set);
				return mo_error_set(MO_ECYCLE, "%s: %s refers to itself", d->where, d->address);
			}
			mo_graph_add_edge(p->rgraph, i, idx);
			json_array_append_new(d->deps, json_string(a));
		}
		json_decref(set);
	}
	return 0;
}

/* ---- load --------------------------------------------------------------- */

static int order_instances(mo_plan *p)
{
	mo_graph *g = NULL;
	size_t *order = NULL, idx;
	mo_instance **sorted = NULL;
	int rc;
	if ((rc = mo_graph_new(&g)) < 0)
		return rc;
	for (size_t i = 0; i < p->ninsts; i++)
		mo_graph_add_node(g, p->insts[i]->name, &idx);
	for (size_t i = 0; i < p->ninsts; i++) {
		json_t *names = json_object(), *x;
		const char *k;
		size_t j;
		module_refs(p->insts[i]->inputs_raw, names);
		json_array_foreach(p->insts[i]->depends, j, x) json_object_set_new(names, json_string_value(x), json_true());
		json_object_foreach(names, k, x) {
			if (mo_graph_find(g, k, &idx) < 0) {
				rc = mo_error_set(MO_EINVAL, "%s: module '%s' refers to module '%s', which is not "
						  "declared", p->insts[i]->where, p->insts[i]->name, k);
				json_decref(names);
				goto done;
			}
			mo_graph_add_edge(g, i, idx);
		}
		json_decref(names);
	}
	order = mo_calloc(p->ninsts + 1, sizeof(*order));
	sorted = mo_calloc(p->ninsts + 1, sizeof(*sorted));
	if (!order || !sorted) {
		rc = mo_error_set(MO_ENOMEM, "out of memory");
		goto done;
	}
	if ((rc = mo_graph_topo(g, order)) < 0) {
		mo_error_prefix("%s: modules", p->path);
		goto done;
	}
	for (size_t i = 0; i < p->ninsts; i++)
		sorted[i] = p->insts[order[i]];
	if (p->ninsts) /* a plan without modules has no array */
		memcpy(p->insts, sorted, p->ninsts * sizeof(*sorted));
done:
	mo_free(order);
	mo_free(sorted);
	mo_graph_free(g);
	return rc;
}

int mo_plan_load(mo_plan **out, const mo_plan_opts *o)
{
	mo_plan *p = mo_calloc(1, sizeof(*p));
	char real[PATH_MAX], *tmp = NULL;
	lua_State *L;
	int rc = 0;
	const char *k;
	json_t *v;
	if (!p)
		return mo_error_set(MO_ENOMEM, "out of memory");
	if (o->limits)
		p->limits = *o->limits;
	else
		mo_sandbox_limits_defaults(&p->limits);
	p->rt = o->rt;
	p->sources = o->sources;
	p->lenient = o->skip_declare;
	p->var_values = json_object();
	p->outputs = json_object();
	p->secrets = json_array();
	if ((rc = mo_graph_new(&p->rgraph)) < 0)
		goto fail;
	if (!realpath(o->path, real)) {
		rc = mo_error_set(MO_ENOTFOUND, "plan %s: %s", o->path, strerror(errno));
		goto fail;
	}
	p->path = mo_strdup(real);
	tmp = mo_strdup(real);
	p->dir = mo_strdup(dirname(tmp));
	mo_free(tmp);
	if (o->vars)
		json_object_update(p->var_values, o->vars);

	/* 1. the plan file */
	if ((rc = mo_sandbox_new(&p->sb, p->dir, "plan", NULL, &p->limits)) < 0)
		goto fail;
	L = mo_sandbox_L(p->sb);
	mo_open_json(L);
	lua_setglobal(L, "json");
	lua_pushglobaltable(L);
	lua_pushlightuserdata(L, p);
	lua_pushcclosure(L, l_variable, 1);
	lua_setfield(L, -2, "variable");
	lua_pushlightuserdata(L, p);
	lua_pushcclosure(L, l_module, 1);
	lua_setfield(L, -2, "module");
	lua_pushlightuserdata(L, p);
	lua_pushcclosure(L, l_output, 1);
	lua_setfield(L, -2, "output");
	lua_pop(L, 1);
	/* the plan file is the user's input: its errors are invalid input,
	 * reported at their file:line without a traceback */
	if ((rc = mo_sandbox_loadfile(p->sb, p->path)) < 0 ||
	    (rc = run_pure(p->sb, 0, 0, "plan", 0)) < 0) {
		if (rc == MO_EMODULE) {
			char msg[sizeof(mo_error_last()->message)];
			snprintf(msg, sizeof(msg), "%s", mo_error_last()->message);
			rc = mo_error_set(MO_EINVAL, "%s", msg);
		}
		goto fail;
	}
	/* every --var must name a declared variable */
	json_object_foreach(o->vars, k, v) {
		size_t i;
		for (i = 0; i < p->nvars && strcmp(p->vars[i].name, k); i++)
			;
		if (i == p->nvars) {
			rc = mo_error_set(MO_EINVAL, "variable '%s' is given but %s declares no such variable",
					  k, p->path);
			goto fail;
		}
	}
	if ((rc = order_instances(p)) < 0)
		goto fail;

	/* 2. sources and module code */
	for (size_t i = 0; i < p->ninsts; i++) {
		mo_instance *in = p->insts[i];
		if (!p->sources) {
			rc = mo_error_set(MO_ESOURCE, "no module source resolver");
			goto fail;
		}
		if ((rc = mo_sources_resolve(p->sources, in->source, in->version, &in->dir, &in->pinned)) < 0) {
			mo_error_prefix("%s: module '%s'", in->where, in->name);
			goto fail;
		}
		if (o->skip_declare)
			continue;
		if ((rc = instance_load_code(in, p->rt, &p->limits)) < 0)
			goto fail;
	}
	if (o->skip_declare)
		goto ok;

	/* 3. declare in dependency order, then edges */
	for (size_t i = 0; i < p->ninsts; i++)
		if ((rc = declare_instance(p, p->insts[i])) < 0)
			goto fail;
	if ((rc = build_edges(p)) < 0)
		goto fail;
	{
		size_t *order = mo_calloc(p->nres + 1, sizeof(*order));
		if (!order) {
			rc = mo_error_set(MO_ENOMEM, "out of memory");
			goto fail;
		}
		rc = mo_graph_topo(p->rgraph, order);
		mo_free(order);
		if (rc < 0)
			goto fail;
	}
	/* 4. plan outputs: substitute module references */
	json_object_foreach(p->outputs, k, v) {
		json_t *val;
		char ctxs[256];
		snprintf(ctxs, sizeof(ctxs), "output '%s'", k);
		if ((rc = subst(p, json_object_get(v, "value"), ctxs, &val)) < 0)
			goto fail;
		json_object_set_new(v, "value", val);
	}
ok:
	*out = p;
	return 0;
fail:
	mo_plan_free(p);
	return rc;
}

void mo_plan_free(mo_plan *p)
{
	if (!p)
		return;
	for (size_t i = 0; i < p->nvars; i++) {
		mo_free(p->vars[i].name);
		mo_free(p->vars[i].type);
		mo_free(p->vars[i].description);
		mo_free(p->vars[i].where);
		json_decref(p->vars[i].def);
	}
	mo_free(p->vars);
	for (size_t i = 0; i < p->nres; i++) {
		mo_free(p->res[i].address);
		mo_free(p->res[i].name);
		mo_free(p->res[i].where);
		json_decref(p->res[i].props);
		json_decref(p->res[i].deps);
	}
	mo_free(p->res);
	for (size_t i = 0; i < p->ninsts; i++)
		mo_instance_free(p->insts[i]);
	mo_free(p->insts);
	json_decref(p->var_values);
	json_decref(p->outputs);
	json_decref(p->secrets);
	mo_graph_free(p->rgraph);
	mo_sandbox_free(p->sb);
	mo_free(p->path);
	mo_free(p->dir);
	mo_free(p);
}

mo_desired *mo_plan_find(const mo_plan *p, const char *address)
{
	size_t idx;
	if (mo_graph_find(p->rgraph, address, &idx) < 0)
		return NULL;
	return &p->res[idx];
}
