/*
 * test_plan.c - the plan loader against the plans and modules under
 * tests/unit/fixtures: variables (types, defaults, --var strings,
 * MECORCH_VAR_x), module outputs feeding inputs, depends_on, templates,
 * plan outputs, and every error a plan or module can make, each checked for
 * naming the file and line, the module or the resource at fault.
 *
 * No network: module sources are local paths, the modules do no I/O.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "graph.h"
#include "jdiff.h"
#include "lj.h"
#include "plan.h"
#include "planner.h"

#define FIXTURES MO_SOURCE_DIR "/tests/unit/fixtures"

typedef struct {
	mo_sources *src;
	mo_plan *p;
} fixture;

static int setup(void **ts)
{
	fixture *f = calloc(1, sizeof(*f));
	mo_source_opts so;
	assert_non_null(f);
	memset(&so, 0, sizeof(so));
	so.plan_dir = FIXTURES "/plans";
	so.cache_dir = "/tmp/mo-test-plan-cache-unused";
	so.mode = MO_SOURCES_LOCKED;
	if (mo_sources_open(&f->src, &so) < 0)
		fail_msg("mo_sources_open: %s", mo_error_last()->message);
	*ts = f;
	return 0;
}

static int teardown(void **ts)
{
	fixture *f = *ts;
	mo_plan_free(f->p);
	mo_sources_free(f->src);
	free(f);
	unsetenv("MECORCH_VAR_req");
	unsetenv("MECORCH_VAR_i");
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

static void assert_json(const json_t *v, const char *want)
{
	json_t *w = js(want);
	if (!mo_json_equal(v, w)) {
		char *got = v ? json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY) : NULL;
		fail_msg("JSON differs:\n  got  %s\n  want %s", got ? got : "(null)", want);
	}
	json_decref(w);
}

static void assert_contains(const char *s, const char *part)
{
	if (!s || !strstr(s, part))
		fail_msg("'%s' does not contain '%s'", s ? s : "(null)", part);
}

/* Load plans/<name> with vars (JSON text or NULL); returns the code and
 * leaves the plan in f->p on success. */
/* 1 when the text quotes one of the plan's sensitive values: the masking
 * of errors and logs (mo_mask_text) replaces it. */
static int is_secret(const mo_plan *p, const char *text)
{
	char *m = mo_mask_text(p->secrets, text);
	int yes = m && strcmp(m, text) != 0;
	mo_free(m);
	return yes;
}

static int try_load(fixture *f, const char *name, const char *vars)
{
	mo_plan_opts po;
	char path[PATH_MAX];
	json_t *v = vars ? js(vars) : NULL;
	int rc;
	memset(&po, 0, sizeof(po));
	snprintf(path, sizeof(path), "%s/plans/%s", FIXTURES, name);
	po.path = path;
	po.vars = v;
	po.sources = f->src;
	mo_plan_free(f->p);
	f->p = NULL;
	rc = mo_plan_load(&f->p, &po);
	json_decref(v);
	if (rc < 0)
		assert_null(f->p);
	return rc;
}

static void load(fixture *f, const char *name, const char *vars)
{
	if (try_load(f, name, vars) < 0)
		fail_msg("mo_plan_load(%s): %s", name, mo_error_last()->message);
}

/* Load and expect failure with code; returns the message. */
static const char *load_fails(fixture *f, const char *name, const char *vars, int code)
{
	int rc = try_load(f, name, vars);
	if (rc != code)
		fail_msg("mo_plan_load(%s): got %d (%s), want %d", name, rc,
			 rc < 0 ? mo_error_last()->message : "ok", code);
	return mo_error_last()->message;
}

static const mo_var_def *var(fixture *f, const char *name)
{
	for (size_t i = 0; i < f->p->nvars; i++)
		if (!strcmp(f->p->vars[i].name, name))
			return &f->p->vars[i];
	fail_msg("no variable %s", name);
	return NULL;
}

static mo_instance *inst(fixture *f, const char *name)
{
	for (size_t i = 0; i < f->p->ninsts; i++)
		if (!strcmp(f->p->insts[i]->name, name))
			return f->p->insts[i];
	fail_msg("no module instance %s", name);
	return NULL;
}

static mo_desired *res(fixture *f, const char *address)
{
	mo_desired *d = mo_plan_find(f->p, address);
	if (!d)
		fail_msg("no desired resource %s", address);
	return d;
}

/* 1 when resource `from` depends on `to` in the plan's resource graph. */
static int depends(fixture *f, const char *from, const char *to)
{
	size_t a, b, n;
	const size_t *d;
	assert_int_equal(mo_graph_find(f->p->rgraph, from, &a), 0);
	assert_int_equal(mo_graph_find(f->p->rgraph, to, &b), 0);
	d = mo_graph_deps(f->p->rgraph, a, &n);
	for (size_t i = 0; i < n; i++)
		if (d[i] == b)
			return 1;
	return 0;
}

static const json_t *output_value(fixture *f, const char *name)
{
	json_t *o = json_object_get(f->p->outputs, name);
	if (!o)
		fail_msg("no plan output %s", name);
	return json_object_get(o, "value");
}

/* ---- variables ----------------------------------------------------------- */

static void test_plan_variables_defaults(void **ts)
{
	fixture *f = *ts;
	const mo_var_def *d;
	load(f, "vars.lua", "{\"req\": \"r\"}");
	assert_int_equal(f->p->nvars, 7);
	assert_json(f->p->var_values, "{\"s\": \"hello\", \"n\": 1.5, \"i\": 3, \"b\": true,"
				      " \"l\": [\"x\", \"y\"], \"m\": {\"k\": \"v\"}, \"req\": \"r\"}");
	assert_json(output_value(f, "all"), "{\"s\": \"hello\", \"n\": 1.5, \"i\": 3, \"b\": true,"
					    " \"l\": [\"x\", \"y\"], \"m\": {\"k\": \"v\"}, \"req\": \"r\"}");
	d = var(f, "s");
	assert_string_equal(d->type, "string");
	assert_string_equal(d->description, "a string");
	assert_string_equal(d->where, "vars.lua:2");
	assert_json(d->def, "\"hello\"");
	d = var(f, "l");
	assert_string_equal(d->type, "list");
	assert_json(d->def, "[\"x\", \"y\"]");
	d = var(f, "req");
	assert_null(d->def);
	assert_string_equal(d->where, "vars.lua:8");
	assert_int_equal(f->p->ninsts, 0);
	assert_int_equal(f->p->nres, 0);
}

/* --var values arrive as strings and are converted to the declared type. */
static void test_plan_variables_from_strings(void **ts)
{
	fixture *f = *ts;
	load(f, "vars.lua", "{\"s\": \"42\", \"n\": \"2.5\", \"i\": \"-7\", \"b\": \"false\","
			    " \"l\": \"[1, \\\"two\\\"]\", \"m\": \"{\\\"k\\\": {\\\"deep\\\": 1}}\", \"req\": \"r\"}");
	assert_json(f->p->var_values, "{\"s\": \"42\", \"n\": 2.5, \"i\": -7, \"b\": false,"
				      " \"l\": [1, \"two\"], \"m\": {\"k\": {\"deep\": 1}}, \"req\": \"r\"}");
	assert_true(json_is_integer(json_object_get(f->p->var_values, "i")));
	assert_true(json_is_string(json_object_get(f->p->var_values, "s")));
	/* a whole number is fine for a number; 1 and 0 for a boolean */
	load(f, "vars.lua", "{\"n\": \"4\", \"b\": \"1\", \"req\": \"r\"}");
	assert_json(json_object_get(f->p->var_values, "n"), "4");
	assert_json(json_object_get(f->p->var_values, "b"), "true");
	/* JSON values (from --var-file) are taken as they are */
	load(f, "vars.lua", "{\"l\": [true], \"i\": 12, \"req\": \"r\"}");
	assert_json(json_object_get(f->p->var_values, "l"), "[true]");
	assert_json(json_object_get(f->p->var_values, "i"), "12");
}

static void test_plan_variables_bad_values(void **ts)
{
	fixture *f = *ts;
	const char *m;
	m = load_fails(f, "vars.lua", "{\"i\": \"7x\", \"req\": \"r\"}", MO_EINVAL);
	assert_contains(m, "vars.lua:4");
	assert_contains(m, "variable 'i'");
	assert_contains(m, "'7x' is not an integer");
	m = load_fails(f, "vars.lua", "{\"n\": \"fast\", \"req\": \"r\"}", MO_EINVAL);
	assert_contains(m, "vars.lua:3");
	assert_contains(m, "'fast' is not a number");
	m = load_fails(f, "vars.lua", "{\"b\": \"maybe\", \"req\": \"r\"}", MO_EINVAL);
	assert_contains(m, "vars.lua:5");
	assert_contains(m, "variable 'b'");
	m = load_fails(f, "vars.lua", "{\"l\": \"[1,\", \"req\": \"r\"}", MO_EINVAL);
	assert_contains(m, "vars.lua:6");
	assert_contains(m, "variable 'l'");
	assert_contains(m, "not valid JSON");
	/* valid JSON of the wrong kind */
	m = load_fails(f, "vars.lua", "{\"m\": \"[1]\", \"req\": \"r\"}", MO_EINVAL);
	assert_contains(m, "vars.lua:7");
	assert_contains(m, "variable 'm' must be a map, got a list");
	m = load_fails(f, "vars.lua", "{\"i\": 2.5, \"req\": \"r\"}", MO_EINVAL);
	assert_contains(m, "variable 'i' must be an integer");
	m = load_fails(f, "badvar_default.lua", NULL, MO_EINVAL);
	assert_contains(m, "badvar_default.lua:2");
	assert_contains(m, "variable 'n'");
	assert_contains(m, "default");
}

static void test_plan_variables_undeclared(void **ts)
{
	fixture *f = *ts;
	const char *m = load_fails(f, "vars.lua", "{\"req\": \"r\", \"colour\": \"red\"}", MO_EINVAL);
	assert_contains(m, "'colour'");
	assert_contains(m, "vars.lua");
}

static void test_plan_variables_required(void **ts)
{
	fixture *f = *ts;
	const char *m = load_fails(f, "vars.lua", NULL, MO_EINVAL);
	assert_contains(m, "vars.lua:8");
	assert_contains(m, "variable 'req' has no value");
	assert_contains(m, "MECORCH_VAR_req");
}

static void test_plan_variables_env(void **ts)
{
	fixture *f = *ts;
	const char *m;
	setenv("MECORCH_VAR_req", "from-env", 1);
	setenv("MECORCH_VAR_i", "11", 1);
	load(f, "vars.lua", NULL);
	assert_json(json_object_get(f->p->var_values, "req"), "\"from-env\"");
	assert_json(json_object_get(f->p->var_values, "i"), "11");
	/* --var wins over the environment */
	load(f, "vars.lua", "{\"i\": \"5\"}");
	assert_json(json_object_get(f->p->var_values, "i"), "5");
	setenv("MECORCH_VAR_i", "eleven", 1);
	m = load_fails(f, "vars.lua", NULL, MO_EINVAL);
	assert_contains(m, "vars.lua:4");
	assert_contains(m, "MECORCH_VAR_i");
	assert_contains(m, "'eleven' is not an integer");
}

/* ---- modules and references --------------------------------------------- */

static void test_plan_module_chain(void **ts)
{
	fixture *f = *ts;
	mo_instance *a, *b, *c;
	load(f, "chain.lua", NULL);
	assert_int_equal(f->p->ninsts, 3);
	assert_string_equal(f->p->insts[0]->name, "a");
	assert_string_equal(f->p->insts[1]->name, "b");
	assert_string_equal(f->p->insts[2]->name, "c");
	a = inst(f, "a");
	b = inst(f, "b");
	c = inst(f, "c");
	assert_string_equal(a->mod_name, "test/chain");
	assert_string_equal(a->mod_version, "0.1.0");
	assert_string_equal(a->where, "chain.lua:4");
	assert_true(a->declared && b->declared && c->declared);
	assert_non_null(a->dir);
	assert_non_null(strstr(a->dir, "fixtures/modules/chain"));
	assert_int_equal(a->ntypes, 1);
	assert_non_null(mo_instance_type(a, "step"));
	assert_null(mo_instance_type(a, "nope"));

	/* a known output (a string built by the module) flows on as a value */
	assert_json(b->inputs, "{\"value\": {\"$ref\": \"module.a.step.s\", \"path\": [\"id\"]},"
			       " \"label\": \"a+\"}");
	/* a.nested.ids.s is a resource reference; b.echo.inner passes it on */
	assert_json(c->inputs, "{\"value\": {\"$ref\": \"module.a.step.s\", \"path\": [\"id\"]},"
			       " \"label\": \"a++\"}");
	assert_json(b->inputs_raw, "{\"value\": {\"$ref\": \"module.a\", \"path\": [\"nested\", \"ids\", \"s\"]},"
				   " \"label\": {\"$ref\": \"module.a\", \"path\": [\"label\"]}}");
	assert_json(c->depends, "[\"a\"]");

	assert_int_equal(f->p->nres, 3);
	assert_json(res(f, "module.a.step.s")->props, "{\"value\": \"start\", \"label\": \"a\"}");
	assert_json(res(f, "module.b.step.s")->props,
		    "{\"value\": {\"$ref\": \"module.a.step.s\", \"path\": [\"id\"]}, \"label\": \"a+\"}");
	assert_json(res(f, "module.c.step.s")->props,
		    "{\"value\": {\"$ref\": \"module.a.step.s\", \"path\": [\"id\"]}, \"label\": \"a++\"}");
	assert_string_equal(res(f, "module.c.step.s")->where, "module.lua:22");
	assert_string_equal(res(f, "module.c.step.s")->name, "s");
	assert_ptr_equal(res(f, "module.c.step.s")->inst, c);
	assert_json(res(f, "module.a.step.s")->deps, "[]");
	assert_json(res(f, "module.b.step.s")->deps, "[\"module.a.step.s\"]");
	assert_true(depends(f, "module.b.step.s", "module.a.step.s"));
	assert_true(depends(f, "module.c.step.s", "module.a.step.s"));
	assert_false(depends(f, "module.c.step.s", "module.b.step.s"));
	assert_false(depends(f, "module.a.step.s", "module.b.step.s"));
}

/* `..` on references builds templates, in plans and in modules alike. */
static void test_plan_templates(void **ts)
{
	fixture *f = *ts;
	load(f, "chain.lua", NULL);
	/* built in the module: "http://" .. h.host .. ":" .. 80 */
	assert_json(output_value(f, "a_url"),
		    "{\"$tmpl\": [\"http://\", {\"$ref\": \"module.a.step.s\", \"path\": [\"host\"]}, \":80\"]}");
	/* built in the plan from module outputs: a known part joins the string */
	assert_json(output_value(f, "joined"),
		    "{\"$tmpl\": [\"id=\", {\"$ref\": \"module.b.step.s\", \"path\": [\"id\"]},"
		    " \";label=\", \"a+++\"]}");
	assert_json(json_object_get(inst(f, "a")->outputs, "url"),
		    "{\"$tmpl\": [\"http://\", {\"$ref\": \"module.a.step.s\", \"path\": [\"host\"]}, \":80\"]}");
}

static void test_plan_outputs(void **ts)
{
	fixture *f = *ts;
	load(f, "chain.lua", NULL);
	assert_int_equal(json_object_size(f->p->outputs), 4);
	assert_json(json_object_get(f->p->outputs, "c_label"),
		    "{\"value\": \"a+++\", \"sensitive\": false, \"description\": \"label after three steps\"}");
	assert_json(output_value(f, "b_id"), "{\"$ref\": \"module.b.step.s\", \"path\": [\"id\"]}");

	load(f, "secrets.lua", "{\"password\": \"pa55word-x\"}");
	assert_json(json_object_get(json_object_get(f->p->outputs, "dsn"), "sensitive"), "true");
	assert_json(json_object_get(json_object_get(f->p->outputs, "plain"), "sensitive"), "false");
	assert_true(is_secret(f->p, "pa55word-x"));
	assert_true(is_secret(f->p, "postgres://app:pa55word-x@db"));
	assert_false(is_secret(f->p, "visible"));
	assert_true(var(f, "password")->sensitive);
}

static void test_plan_depends_on(void **ts)
{
	fixture *f = *ts;
	load(f, "depends.lua", NULL);
	assert_int_equal(f->p->nres, 4);
	assert_json(inst(f, "z")->depends, "[\"x\", \"y\"]");
	/* module depends_on: every resource of x and y */
	assert_true(depends(f, "module.z.step.s", "module.x.step.s"));
	assert_true(depends(f, "module.z.step.s", "module.y.item.a"));
	assert_true(depends(f, "module.z.step.s", "module.y.item.b"));
	assert_int_equal(json_array_size(res(f, "module.z.step.s")->deps), 3);
	/* resource depends_on */
	assert_json(res(f, "module.y.item.b")->deps, "[\"module.y.item.a\"]");
	assert_json(res(f, "module.y.item.a")->deps, "[]");
	assert_json(res(f, "module.x.step.s")->deps, "[]");
	/* modules come in dependency order */
	assert_string_equal(f->p->insts[2]->name, "z");
}

static void test_plan_skip_declare(void **ts)
{
	fixture *f = *ts;
	mo_plan_opts po;
	memset(&po, 0, sizeof(po));
	po.path = FIXTURES "/plans/chain.lua";
	po.sources = f->src;
	po.skip_declare = 1;
	assert_int_equal(mo_plan_load(&f->p, &po), 0);
	assert_int_equal(f->p->ninsts, 3);
	assert_int_equal(f->p->nres, 0);
	assert_non_null(f->p->insts[0]->dir);
	assert_non_null(f->p->insts[0]->pinned);
	assert_false(f->p->insts[0]->declared);
}

static void test_plan_address_parse(void **ts)
{
	char *i = NULL, *t = NULL, *n = NULL;
	(void)ts;
	assert_int_equal(mo_address_parse("module.net.vpc.main.v2", &i, &t, &n), 0);
	assert_string_equal(i, "net");
	assert_string_equal(t, "vpc");
	assert_string_equal(n, "main.v2");
	mo_free(i);
	mo_free(t);
	mo_free(n);
	assert_int_equal(mo_address_parse("module.net.vpc", NULL, NULL, NULL), MO_EINVAL);
	assert_contains(mo_error_last()->message, "module.net.vpc");
	assert_int_equal(mo_address_parse("net.vpc.a", NULL, NULL, NULL), MO_EINVAL);
}

/* ---- errors -------------------------------------------------------------- */

/*
 * References cannot be forged: a "$ref" object built from data (here with
 * json.decode in the plan) stays plain data.  Since a handle can only name
 * a module or resource declared earlier, plans cannot express a cycle at
 * all; the graph's cycle detection is tested in test_graph.c.
 */
static void test_plan_forged_module_reference(void **ts)
{
	fixture *f = *ts;
	const char *m = load_fails(f, "module_cycle.lua", NULL, MO_EINVAL);
	assert_contains(m, "module_cycle.lua");
	assert_contains(m, "must be a string, got a map");
	m = load_fails(f, "undeclared_module.lua", NULL, MO_EINVAL);
	assert_contains(m, "undeclared_module.lua:3");
	assert_contains(m, "module 'a'");
	assert_contains(m, "must be a string, got a map");
}

static void test_plan_forged_resource_reference(void **ts)
{
	fixture *f = *ts;
	static const struct {
		const char *plan, *forged_at;
	} cases[] = {
		{ "resource_cycle.lua", "module.p.step.s" },
		{ "self_ref.lua", "module.solo.step.s" },
	};
	for (size_t i = 0; i < MO_ARRAY_SIZE(cases); i++) {
		mo_desired *d;
		char *text;
		int rc = try_load(f, cases[i].plan, NULL);
		if (rc != 0)
			fail_msg("%s: %s", cases[i].plan, mo_error_last()->message);
		assert_non_null(d = mo_plan_find(f->p, cases[i].forged_at));
		text = json_dumps(d->props, JSON_COMPACT);
		assert_non_null(text);
		/* the data keeps its key, escaped, and makes no edge */
		if (!strstr(text, "\"$$ref\""))
			fail_msg("%s: the forged key is not kept as data: %s", cases[i].plan, text);
		free(text);
		assert_int_equal(json_array_size(d->deps), 0);
		mo_plan_free(f->p);
		f->p = NULL;
	}
}

static void test_plan_duplicate_module(void **ts)
{
	fixture *f = *ts;
	const char *m = load_fails(f, "dup_module.lua", NULL, MO_EINVAL);
	assert_contains(m, "dup_module.lua:3");
	assert_contains(m, "module 'a' is declared twice");
	assert_contains(m, "first at dup_module.lua:2");
}

static void test_plan_duplicate_resource(void **ts)
{
	fixture *f = *ts;
	const char *m = load_fails(f, "bad_module.lua", "{\"dir\": \"dupres\"}", MO_EMODULE);
	assert_contains(m, "module broken");
	assert_contains(m, "module.broken.thing.a is declared twice");
	assert_contains(m, "first at module.lua:12");
	assert_contains(m, "module.lua:13");
}

static void test_plan_unknown_input(void **ts)
{
	fixture *f = *ts;
	const char *m = load_fails(f, "unknown_input.lua", NULL, MO_EINVAL);
	assert_contains(m, "unknown_input.lua:2");
	assert_contains(m, "module 'a' has no input 'colour'");
	assert_contains(m, "its inputs: "); /* in Lua table order */
	assert_contains(strstr(m, "its inputs: "), "label");
	assert_contains(strstr(m, "its inputs: "), "value");
}

static void test_plan_missing_input(void **ts)
{
	fixture *f = *ts;
	const char *m = load_fails(f, "missing_input.lua", NULL, MO_EINVAL);
	assert_contains(m, "missing_input.lua:2");
	assert_contains(m, "module 'a' needs input 'value'");
}

static void test_plan_input_type(void **ts)
{
	fixture *f = *ts;
	const char *m = load_fails(f, "input_type.lua", NULL, MO_EINVAL);
	assert_contains(m, "input_type.lua:2");
	assert_contains(m, "module 'a' input 'items' must be a map, got a string");
}

static void test_plan_module_not_table(void **ts)
{
	fixture *f = *ts;
	const char *m = load_fails(f, "bad_module.lua", "{\"dir\": \"nontable\"}", MO_EINVAL);
	assert_contains(m, "module broken");
	assert_contains(m, "module.lua must return a table, got number");
}

static void test_plan_module_missing_handler(void **ts)
{
	fixture *f = *ts;
	const char *m = load_fails(f, "bad_module.lua", "{\"dir\": \"nohandler\"}", MO_EINVAL);
	assert_contains(m, "module broken");
	assert_contains(m, "resources.thing.read must be a function");
}

static void test_plan_module_bad_replace_on(void **ts)
{
	fixture *f = *ts;
	const char *m = load_fails(f, "bad_module.lua", "{\"dir\": \"badreplace\"}", MO_EINVAL);
	assert_contains(m, "module broken");
	assert_contains(m, "resources.thing.replace_on must be a list of strings");
}

static void test_plan_module_missing_source(void **ts)
{
	fixture *f = *ts;
	const char *m = load_fails(f, "bad_module.lua", "{\"dir\": \"nosuch\"}", MO_ESOURCE);
	assert_contains(m, "bad_module.lua:3");
	assert_contains(m, "module 'broken'");
	assert_contains(m, "nosuch");
}

static void test_plan_declare_error(void **ts)
{
	fixture *f = *ts;
	const char *m = load_fails(f, "bad_module.lua", "{\"dir\": \"declerr\"}", MO_EMODULE);
	assert_contains(m, "module broken");
	assert_contains(m, "module.lua:11: no zone given for the things");
}

static void test_plan_props_not_json(void **ts)
{
	fixture *f = *ts;
	const char *m = load_fails(f, "bad_module.lua", "{\"dir\": \"badprops\"}", MO_EMODULE);
	assert_contains(m, "module.lua:12");
	assert_contains(m, "module.broken.thing.a");
	assert_contains(m, "props.hook");
}

/* Arithmetic on a value known only after apply explains itself. */
static void test_plan_reference_arithmetic(void **ts)
{
	fixture *f = *ts;
	const char *m = load_fails(f, "arith_plan.lua", NULL, MO_EINVAL);
	assert_contains(m, "arith_plan.lua:4");
	assert_contains(m, "module.a.nested.ids.s");
	assert_contains(m, "known only after apply");
	m = load_fails(f, "bad_module.lua", "{\"dir\": \"arith\"}", MO_EMODULE);
	assert_contains(m, "module broken");
	assert_contains(m, "module.lua:13");
	assert_contains(m, "module.broken.thing.a.id");
	assert_contains(m, "known only after apply");
}

static void test_plan_missing_file(void **ts)
{
	fixture *f = *ts;
	const char *m = load_fails(f, "no-such-plan.lua", NULL, MO_ENOTFOUND);
	assert_contains(m, "no-such-plan.lua");
}

int main(void)
{
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
	const struct CMUnitTest tests[] = {
		T(test_plan_variables_defaults),
		T(test_plan_variables_from_strings),
		T(test_plan_variables_bad_values),
		T(test_plan_variables_undeclared),
		T(test_plan_variables_required),
		T(test_plan_variables_env),
		T(test_plan_module_chain),
		T(test_plan_templates),
		T(test_plan_outputs),
		T(test_plan_depends_on),
		T(test_plan_skip_declare),
		T(test_plan_address_parse),
		T(test_plan_forged_module_reference),
		T(test_plan_forged_resource_reference),
		T(test_plan_duplicate_module),
		T(test_plan_duplicate_resource),
		T(test_plan_unknown_input),
		T(test_plan_missing_input),
		T(test_plan_input_type),
		T(test_plan_module_not_table),
		T(test_plan_module_missing_handler),
		T(test_plan_module_bad_replace_on),
		T(test_plan_module_missing_source),
		T(test_plan_declare_error),
		T(test_plan_props_not_json),
		T(test_plan_reference_arithmetic),
		T(test_plan_missing_file),
	};
	return cmocka_run_group_tests_name("plan", tests, NULL, NULL);
}
