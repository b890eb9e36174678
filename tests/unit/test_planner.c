/*
 * test_planner.c - the planner: desired resources (plans loaded from
 * tests/unit/fixtures) against state records written to a real in-memory
 * state store.  Covers the actions (create, no-op, update, replace, delete,
 * destroy order), values known only after apply, the counts, mo_decide,
 * mo_resolve and mo_mask directly, and the rendered plan JSON and digest
 * (Terraform's shape, no secret in clear).
 *
 * No network: the fixture modules do no I/O and declare() is all that runs.
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
#include "render.h"
#include "secret.h"
#include "state.h"

#define FIXTURES MO_SOURCE_DIR "/tests/unit/fixtures"
#define KV_DIR FIXTURES "/modules/kv"

typedef struct {
	mo_sources *src;
	mo_state *st;
	unsigned char key[32];
	mo_plan *p;
	mo_changeset *cs;
} fixture;

static int setup(void **ts)
{
	fixture *f = calloc(1, sizeof(*f));
	mo_source_opts so;
	assert_non_null(f);
	memset(&so, 0, sizeof(so));
	so.plan_dir = FIXTURES "/plans";
	so.cache_dir = "/tmp/mo-test-planner-cache-unused";
	so.mode = MO_SOURCES_LOCKED;
	if (mo_sources_open(&f->src, &so) < 0)
		fail_msg("mo_sources_open: %s", mo_error_last()->message);
	if (mo_state_open(&f->st, ":memory:") < 0)
		fail_msg("mo_state_open: %s", mo_error_last()->message);
	assert_int_equal(mo_state_secret_key(f->st, f->key), 0);
	*ts = f;
	return 0;
}

static int teardown(void **ts)
{
	fixture *f = *ts;
	mo_changeset_free(f->cs);
	mo_plan_free(f->p);
	mo_state_close(f->st);
	mo_sources_free(f->src);
	free(f);
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

/* Assert that v equals the JSON text want (structurally). */
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

/* Load plans/<name> with vars (JSON text or NULL) into f->p. */
static void load(fixture *f, const char *name, const char *vars)
{
	mo_plan_opts po;
	char path[PATH_MAX];
	json_t *v = vars ? js(vars) : NULL;
	memset(&po, 0, sizeof(po));
	snprintf(path, sizeof(path), "%s/plans/%s", FIXTURES, name);
	po.path = path;
	po.vars = v;
	po.sources = f->src;
	mo_plan_free(f->p);
	f->p = NULL;
	if (mo_plan_load(&f->p, &po) < 0)
		fail_msg("mo_plan_load(%s): %s", name, mo_error_last()->message);
	json_decref(v);
}

/* Record a resource of the kv fixture module in the state. */
static void put_status(fixture *f, const char *address, const char *id, const char *props,
		       const char *outputs, const char *deps, int status)
{
	mo_resource r;
	char *inst = NULL, *type = NULL, *addr = mo_strdup(address), *tilde;
	if ((tilde = strchr(addr, '~')))
		*tilde = '\0';
	assert_int_equal(mo_address_parse(addr, &inst, &type, NULL), 0);
	memset(&r, 0, sizeof(r));
	r.address = (char *)address;
	r.module = inst;
	r.type = type;
	r.id = (char *)id;
	r.source = (char *)KV_DIR;
	r.props = js(props);
	r.outputs = js(outputs ? outputs : "{}");
	r.deps = js(deps ? deps : "[]");
	r.status = status;
	if (mo_state_put(f->st, &r) < 0)
		fail_msg("mo_state_put(%s): %s", address, mo_error_last()->message);
	json_decref(r.props);
	json_decref(r.outputs);
	json_decref(r.deps);
	mo_free(inst);
	mo_free(type);
	mo_free(addr);
}

static void put(fixture *f, const char *address, const char *id, const char *props,
		const char *outputs, const char *deps)
{
	put_status(f, address, id, props, outputs, deps, MO_RES_OK);
}

/* Plan f->p (may be NULL) against everything in the state. */
static int run_planner(fixture *f, int destroy)
{
	mo_resource **recs = NULL;
	size_t n = 0;
	mo_planner_opts o;
	int rc;
	memset(&o, 0, sizeof(o));
	o.destroy = destroy;
	o.sources = f->src;
	assert_int_equal(mo_state_list(f->st, &recs, &n), 0);
	mo_changeset_free(f->cs);
	f->cs = NULL;
	rc = mo_planner_run(&f->cs, f->p, recs, n, f->key, &o);
	if (rc < 0)
		mo_resource_list_free(recs, n); /* still the caller's on failure */
	return rc;
}

static void plan_ok(fixture *f, int destroy)
{
	if (run_planner(f, destroy) < 0)
		fail_msg("mo_planner_run: %s", mo_error_last()->message);
}

static mo_change *change(fixture *f, const char *address)
{
	mo_change *c = mo_changeset_find(f->cs, address);
	if (!c)
		fail_msg("no change for %s", address);
	return c;
}

static size_t node(fixture *f, const char *address)
{
	size_t idx;
	if (mo_graph_find(f->cs->g, address, &idx) < 0)
		fail_msg("no graph node %s", address);
	return idx;
}

/* 1 when change `from` waits for change `to` in the action graph. */
static int waits_for(fixture *f, const char *from, const char *to)
{
	size_t n, t = node(f, to);
	const size_t *d = mo_graph_deps(f->cs->g, node(f, from), &n);
	for (size_t i = 0; i < n; i++)
		if (d[i] == t)
			return 1;
	return 0;
}

/* Position of address in a topological order of the action graph. */
static size_t topo_pos(fixture *f, const char *address)
{
	size_t n = mo_graph_count(f->cs->g), *order = calloc(n, sizeof(*order)), pos = SIZE_MAX;
	size_t idx = node(f, address);
	assert_non_null(order);
	assert_int_equal(mo_graph_topo(f->cs->g, order), 0);
	for (size_t i = 0; i < n; i++)
		if (order[i] == idx)
			pos = i;
	free(order);
	return pos;
}

#define A "module.kv.item.a"
#define B "module.kv.item.b"
#define C "module.kv.item.c"
#define D "module.kv.item.d"

/* ---- actions ------------------------------------------------------------- */

static void test_planner_create(void **ts)
{
	fixture *f = *ts;
	mo_change *a, *b;
	load(f, "kv.lua", "{\"items\": {\"a\": {\"name\": \"a\", \"size\": 1},"
			  " \"b\": {\"name\": \"b\", \"tags\": {\"env\": \"lab\"}}}}");
	plan_ok(f, 0);
	assert_int_equal(f->cs->n, 2);
	a = change(f, A);
	b = change(f, B);
	assert_int_equal(a->action, MO_ACT_CREATE);
	assert_int_equal(b->action, MO_ACT_CREATE);
	assert_null(a->have);
	assert_ptr_equal(a->want, mo_plan_find(f->p, A));
	assert_string_equal(a->rtype->name, "item");
	assert_string_equal(a->inst->name, "kv");
	assert_json(a->after, "{\"name\": \"a\", \"size\": 1}");
	assert_json(b->after, "{\"name\": \"b\", \"tags\": {\"env\": \"lab\"}}");
	assert_int_equal(a->deferred, 0);
	assert_null(a->changed);
	assert_null(a->reason);
	assert_int_equal(f->cs->n_create, 2);
	assert_int_equal(f->cs->n_noop + f->cs->n_update + f->cs->n_replace + f->cs->n_delete, 0);
	assert_string_equal(mo_action_name(a->action), "create");
}

static void test_planner_noop(void **ts)
{
	fixture *f = *ts;
	mo_change *a;
	put(f, A, "id-a", "{\"name\": \"a\", \"size\": 1}", "{\"url\": \"kv://a\"}", NULL);
	put(f, B, "id-b", "{\"name\": \"b\", \"size\": 2.0}", NULL, NULL);
	/* 2 and 2.0 are the same number */
	load(f, "kv.lua", "{\"items\": {\"a\": {\"name\": \"a\", \"size\": 1},"
			  " \"b\": {\"name\": \"b\", \"size\": 2}}}");
	plan_ok(f, 0);
	a = change(f, A);
	assert_int_equal(a->action, MO_ACT_NOOP);
	assert_int_equal(change(f, B)->action, MO_ACT_NOOP);
	assert_non_null(a->have);
	assert_string_equal(a->have->id, "id-a");
	assert_null(a->changed);
	assert_int_equal(f->cs->n_noop, 2);
	assert_int_equal(f->cs->n_create + f->cs->n_update + f->cs->n_replace + f->cs->n_delete, 0);
}

static void test_planner_update(void **ts)
{
	fixture *f = *ts;
	mo_change *a;
	put(f, A, "id-a", "{\"name\": \"a\", \"size\": 1, \"zone\": \"z1\", \"old\": true}", NULL, NULL);
	load(f, "kv.lua", "{\"items\": {\"a\": {\"name\": \"a\", \"size\": 2, \"zone\": \"z1\"}}}");
	plan_ok(f, 0);
	a = change(f, A);
	assert_int_equal(a->action, MO_ACT_UPDATE);
	assert_json(a->changed, "[\"old\", \"size\"]");
	assert_null(a->reason);
	assert_json(a->after, "{\"name\": \"a\", \"size\": 2, \"zone\": \"z1\"}");
	assert_json(a->have->props, "{\"name\": \"a\", \"size\": 1, \"zone\": \"z1\", \"old\": true}");
	assert_int_equal(f->cs->n_update, 1);
}

static void test_planner_replace_on(void **ts)
{
	fixture *f = *ts;
	mo_change *a;
	put(f, A, "id-a", "{\"name\": \"a\", \"size\": 1, \"zone\": \"z1\"}", NULL, NULL);
	load(f, "kv.lua", "{\"items\": {\"a\": {\"name\": \"a\", \"size\": 2, \"zone\": \"z2\"}}}");
	plan_ok(f, 0);
	a = change(f, A);
	assert_int_equal(a->action, MO_ACT_REPLACE);
	assert_contains(a->reason, "zone");
	assert_json(a->changed, "[\"size\", \"zone\"]");
	assert_int_equal(f->cs->n_replace, 1);
	assert_int_equal(f->cs->n_update, 0);
}

static void test_planner_replace_tainted(void **ts)
{
	fixture *f = *ts;
	mo_change *a;
	put_status(f, A, "id-a", "{\"name\": \"a\"}", NULL, NULL, MO_RES_TAINTED);
	load(f, "kv.lua", "{\"items\": {\"a\": {\"name\": \"a\"}}}");
	plan_ok(f, 0);
	a = change(f, A);
	assert_int_equal(a->action, MO_ACT_REPLACE);
	assert_contains(a->reason, "tainted");
	assert_int_equal(f->cs->n_replace, 1);
}

static void test_planner_replace_without_update(void **ts)
{
	fixture *f = *ts;
	mo_change *c;
	put(f, "module.kv.frozen.x", "id-x", "{\"name\": \"x\", \"size\": 1}", NULL, NULL);
	put(f, "module.kv.frozen.y", "id-y", "{\"name\": \"y\"}", NULL, NULL);
	load(f, "kv.lua", "{\"frozen\": {\"x\": {\"name\": \"x\", \"size\": 2}, \"y\": {\"name\": \"y\"}}}");
	plan_ok(f, 0);
	c = change(f, "module.kv.frozen.x");
	assert_int_equal(c->rtype->has_update, 0);
	assert_int_equal(c->action, MO_ACT_REPLACE);
	assert_contains(c->reason, "no update()");
	assert_json(c->changed, "[\"size\"]");
	/* unchanged: no-op, even without update() */
	assert_int_equal(change(f, "module.kv.frozen.y")->action, MO_ACT_NOOP);
}

static void test_planner_delete(void **ts)
{
	fixture *f = *ts;
	mo_change *c, *dep;
	put(f, A, "id-a", "{\"name\": \"a\"}", NULL, NULL);
	put(f, C, "id-c", "{\"name\": \"c\"}", NULL, NULL);
	put_status(f, A "~deposed-1", "id-a-old", "{\"name\": \"a\", \"zone\": \"old\"}", NULL, NULL,
		   MO_RES_DEPOSED);
	load(f, "kv.lua", "{\"items\": {\"a\": {\"name\": \"a\"}}}");
	plan_ok(f, 0);
	assert_int_equal(f->cs->n, 3);
	assert_int_equal(change(f, A)->action, MO_ACT_NOOP);
	c = change(f, C);
	assert_int_equal(c->action, MO_ACT_DELETE);
	assert_null(c->want);
	assert_string_equal(c->have->id, "id-c");
	assert_contains(c->reason, "no longer in the plan");
	assert_non_null(c->inst);
	assert_string_equal(c->rtype->name, "item");
	dep = change(f, A "~deposed-1");
	assert_int_equal(dep->action, MO_ACT_DELETE);
	assert_string_equal(dep->have->id, "id-a-old");
	assert_contains(dep->reason, "deposed");
	assert_int_equal(f->cs->n_delete, 2);
	assert_int_equal(f->cs->n_noop, 1);
	/* the plan's own instance runs the handlers: nothing loaded on the side */
	assert_int_equal(f->cs->extra.n, 0);
	assert_ptr_equal(c->inst, f->p->insts[0]);
}

/* A resource of a module instance the plan no longer has is deleted with
 * the module loaded from the source recorded in the state. */
static void test_planner_delete_removed_module(void **ts)
{
	fixture *f = *ts;
	mo_change *c;
	put(f, "module.old.item.z", "id-z", "{\"name\": \"z\"}", NULL, NULL);
	load(f, "kv.lua", NULL);
	plan_ok(f, 0);
	c = change(f, "module.old.item.z");
	assert_int_equal(c->action, MO_ACT_DELETE);
	assert_int_equal(f->cs->extra.n, 1);
	assert_ptr_equal(c->inst, f->cs->extra.v[0]);
	assert_string_equal(c->inst->name, "old");
	assert_string_equal(c->rtype->name, "item");
}

static void test_planner_delete_unknown_type(void **ts)
{
	fixture *f = *ts;
	put(f, "module.kv.gone.z", "id-z", "{\"name\": \"z\"}", NULL, NULL);
	load(f, "kv.lua", NULL);
	assert_int_equal(run_planner(f, 0), MO_EINVAL);
	assert_contains(mo_error_last()->message, "module.kv.gone.z");
	assert_contains(mo_error_last()->message, "'gone'");
}

/* Destroy: everything is deleted, and deleting a waits for deleting what
 * depended on a (recorded in the state's deps). */
static void check_destroy_order(fixture *f)
{
	assert_int_equal(f->cs->n, 4);
	assert_int_equal(f->cs->n_delete, 4);
	for (size_t i = 0; i < f->cs->n; i++) {
		assert_int_equal(f->cs->c[i].action, MO_ACT_DELETE);
		assert_contains(f->cs->c[i].reason, "destroy");
	}
	assert_true(waits_for(f, A, B));
	assert_true(waits_for(f, A, D));
	assert_true(waits_for(f, B, C));
	assert_false(waits_for(f, B, A));
	assert_false(waits_for(f, C, B));
	assert_false(waits_for(f, A, C)); /* only through b */
	assert_true(topo_pos(f, C) < topo_pos(f, B));
	assert_true(topo_pos(f, B) < topo_pos(f, A));
	assert_true(topo_pos(f, D) < topo_pos(f, A));
	assert_null(json_object_get(f->cs->outputs, "ids"));
}

static void put_destroy_state(fixture *f)
{
	put(f, A, "id-a", "{\"name\": \"a\"}", NULL, NULL);
	put(f, B, "id-b", "{\"name\": \"b\", \"parent\": \"id-a\"}", NULL, "[\"" A "\"]");
	put(f, C, "id-c", "{\"name\": \"c\", \"parent\": \"id-b\"}", NULL, "[\"" B "\"]");
	put(f, D, "id-d", "{\"name\": \"d\", \"parent\": \"id-a\"}", NULL, "[\"" A "\"]");
}

static void test_planner_destroy_order(void **ts)
{
	fixture *f = *ts;
	put_destroy_state(f);
	load(f, "kv.lua", "{\"items\": {\"a\": {\"name\": \"a\"}}}");
	plan_ok(f, 1);
	check_destroy_order(f);
	assert_int_equal(f->cs->extra.n, 0);
}

/* Destroy without a plan: every module comes from its recorded source. */
static void test_planner_destroy_without_plan(void **ts)
{
	fixture *f = *ts;
	put_destroy_state(f);
	plan_ok(f, 1);
	check_destroy_order(f);
	assert_int_equal(f->cs->extra.n, 1); /* one instance "kv" for all four */
	assert_ptr_equal(change(f, A)->inst, change(f, C)->inst);
	assert_int_equal(json_object_size(f->cs->outputs), 0);
}

/* A replaced resource (not create_before_destroy) waits for the deletion
 * of a removed resource that depended on it. */
static void test_planner_replace_waits_for_dependent_delete(void **ts)
{
	fixture *f = *ts;
	put(f, A, "id-a", "{\"name\": \"a\", \"zone\": \"z1\"}", NULL, NULL);
	put(f, B, "id-b", "{\"name\": \"b\", \"parent\": \"id-a\"}", NULL, "[\"" A "\"]");
	load(f, "kv.lua", "{\"items\": {\"a\": {\"name\": \"a\", \"zone\": \"z2\"}}}");
	plan_ok(f, 0);
	assert_int_equal(change(f, A)->action, MO_ACT_REPLACE);
	assert_int_equal(change(f, B)->action, MO_ACT_DELETE);
	/* the delete-first replace is split: its destroy half waits for B's
	 * deletion, and the replace (its create) waits for the half */
	assert_int_equal(change(f, A)->destroy_half, node(f, A "#destroy"));
	assert_true(f->cs->c[node(f, A "#destroy")].half);
	assert_true(waits_for(f, A "#destroy", B));
	assert_true(waits_for(f, A, A "#destroy"));
	assert_false(waits_for(f, B, A));
	assert_false(waits_for(f, B, A "#destroy"));
}

/* Both a resource and its dependent replaced delete-first: no cycle; the
 * dependent's old object goes first, then the resource's, then the
 * resource is created before its dependent. */
static void test_planner_replace_chain_no_cycle(void **ts)
{
	fixture *f = *ts;
	put(f, A, "id-a", "{\"name\": \"a\", \"zone\": \"z1\"}", NULL, NULL);
	put(f, B, "id-b", "{\"name\": \"b\", \"zone\": \"z1\"}", NULL, "[\"" A "\"]");
	load(f, "kv.lua", "{\"items\": {\"a\": {\"name\": \"a\", \"zone\": \"z2\"},"
			  " \"b\": {\"name\": \"b\", \"zone\": \"z2\"}}, \"deps\": {\"b\": [\"a\"]}}");
	plan_ok(f, 0);
	assert_int_equal(change(f, A)->action, MO_ACT_REPLACE);
	assert_int_equal(change(f, B)->action, MO_ACT_REPLACE);
	assert_true(topo_pos(f, B "#destroy") < topo_pos(f, A "#destroy"));
	assert_true(topo_pos(f, A "#destroy") < topo_pos(f, A));
	assert_true(topo_pos(f, A) < topo_pos(f, B));
	assert_int_equal(f->cs->n_replace, 2);
}

/* ---- values known only after apply -------------------------------------- */

static const char *links_vars =
	"{\"items\": {\"a\": {\"name\": \"a\", \"zone\": \"z1\"}, \"b\": {\"name\": \"b\"}},"
	" \"links\": {\"b\": {\"parent\": \"a\", \"parent_url\": \"a.url\"}}}";

static void test_planner_unknown_when_created(void **ts)
{
	fixture *f = *ts;
	mo_change *a, *b;
	load(f, "kv.lua", links_vars);
	plan_ok(f, 0);
	a = change(f, A);
	b = change(f, B);
	assert_int_equal(a->action, MO_ACT_CREATE);
	assert_int_equal(a->deferred, 0);
	assert_int_equal(b->action, MO_ACT_CREATE);
	assert_int_equal(b->deferred, 1);
	assert_json(b->after, "{\"name\": \"b\", \"parent\": {\"$unknown\": \"module.kv.item.a.id\"},"
			      " \"parent_url\": {\"$unknown\": \"module.kv.item.a.url\"}}");
	assert_true(mo_json_has_deferred(b->after));
	/* the desired props still hold the references */
	assert_true(mo_ref_is(json_object_get(b->want->props, "parent")));
	assert_true(waits_for(f, B, A));
	assert_false(waits_for(f, A, B));
	/* plan outputs: ids known only after apply, count known */
	assert_true(mo_unknown_is(json_object_get(
		json_object_get(json_object_get(f->cs->outputs, "ids"), "value"), "a")));
	assert_json(json_object_get(json_object_get(f->cs->outputs, "count"), "value"), "2");
}

static void test_planner_reference_to_noop(void **ts)
{
	fixture *f = *ts;
	mo_change *b;
	put(f, A, "id-a", "{\"name\": \"a\", \"zone\": \"z1\"}", "{\"url\": \"kv://a\"}", NULL);
	load(f, "kv.lua", links_vars);
	plan_ok(f, 0);
	assert_int_equal(change(f, A)->action, MO_ACT_NOOP);
	b = change(f, B);
	assert_int_equal(b->action, MO_ACT_CREATE);
	assert_int_equal(b->deferred, 0);
	assert_json(b->after, "{\"name\": \"b\", \"parent\": \"id-a\", \"parent_url\": \"kv://a\"}");
	assert_json(json_object_get(f->cs->outputs, "ids"),
		    "{\"value\": {\"a\": \"id-a\", \"b\": {\"$unknown\": \"module.kv.item.b.id\"}},"
		    " \"sensitive\": false}");

	/* b recorded with exactly those values: no-op too */
	put(f, B, "id-b", "{\"name\": \"b\", \"parent\": \"id-a\", \"parent_url\": \"kv://a\"}", NULL,
	    "[\"" A "\"]");
	plan_ok(f, 0);
	assert_int_equal(change(f, B)->action, MO_ACT_NOOP);
	assert_int_equal(f->cs->n_noop, 2);
	assert_json(json_object_get(json_object_get(f->cs->outputs, "ids"), "value"),
		    "{\"a\": \"id-a\", \"b\": \"id-b\"}");
}

/* An update keeps the id but may change every other output. */
static void test_planner_reference_to_update(void **ts)
{
	fixture *f = *ts;
	mo_change *b;
	put(f, A, "id-a", "{\"name\": \"a\", \"zone\": \"z1\", \"size\": 1}", "{\"url\": \"kv://a\"}",
	    NULL);
	put(f, B, "id-b", "{\"name\": \"b\", \"parent\": \"id-a\", \"parent_url\": \"kv://a\"}", NULL,
	    "[\"" A "\"]");
	load(f, "kv.lua", links_vars);
	plan_ok(f, 0);
	assert_int_equal(change(f, A)->action, MO_ACT_UPDATE);
	b = change(f, B);
	assert_json(b->after, "{\"name\": \"b\", \"parent\": \"id-a\","
			      " \"parent_url\": {\"$unknown\": \"module.kv.item.a.url\"}}");
	assert_int_equal(b->deferred, 1);
	assert_int_equal(b->action, MO_ACT_UPDATE);
	assert_json(b->changed, "[\"parent_url\"]");
	assert_true(waits_for(f, B, A));
}

/* A replacement gets a new id: even .id is unknown. */
static void test_planner_reference_to_replace(void **ts)
{
	fixture *f = *ts;
	mo_change *b;
	put(f, A, "id-a", "{\"name\": \"a\", \"zone\": \"z0\"}", "{\"url\": \"kv://a\"}", NULL);
	load(f, "kv.lua", links_vars);
	plan_ok(f, 0);
	assert_int_equal(change(f, A)->action, MO_ACT_REPLACE);
	b = change(f, B);
	assert_int_equal(b->deferred, 1);
	assert_true(mo_unknown_is(json_object_get(b->after, "parent")));
	assert_true(mo_unknown_is(json_object_get(b->after, "parent_url")));
}

static void test_planner_counts(void **ts)
{
	fixture *f = *ts;
	put(f, A, "id-a", "{\"name\": \"a\"}", NULL, NULL);                     /* no-op */
	put(f, B, "id-b", "{\"name\": \"b\", \"size\": 1}", NULL, NULL);        /* update */
	put(f, C, "id-c", "{\"name\": \"c\", \"zone\": \"z1\"}", NULL, NULL);   /* replace */
	put(f, "module.kv.item.old", "id-o", "{\"name\": \"old\"}", NULL, NULL); /* delete */
	load(f, "kv.lua", "{\"items\": {\"a\": {\"name\": \"a\"}, \"b\": {\"name\": \"b\", \"size\": 2},"
			  " \"c\": {\"name\": \"c\", \"zone\": \"z2\"}, \"e\": {\"name\": \"e\"}},"
			  " \"frozen\": {\"f\": {\"name\": \"f\"}}}");
	plan_ok(f, 0);
	/* six changes, plus the destroy half of the delete-first replace */
	assert_int_equal(f->cs->n, 7);
	assert_int_equal(f->cs->n_create, 2);
	assert_int_equal(f->cs->n_update, 1);
	assert_int_equal(f->cs->n_replace, 1);
	assert_int_equal(f->cs->n_delete, 1);
	assert_int_equal(f->cs->n_noop, 1);
	assert_int_equal(change(f, "module.kv.item.e")->action, MO_ACT_CREATE);
	assert_int_equal(change(f, "module.kv.frozen.f")->action, MO_ACT_CREATE);
}

/* ---- mo_decide ----------------------------------------------------------- */

static void test_planner_decide(void **ts)
{
	mo_rtype rt;
	mo_resource have;
	json_t *after, *changed = NULL;
	char *reason = NULL;
	(void)ts;
	memset(&rt, 0, sizeof(rt));
	rt.name = "thing";
	rt.has_update = 1;
	rt.replace_on = js("[\"region\"]");
	rt.sensitive = js("[]");
	memset(&have, 0, sizeof(have));
	have.address = "module.m.thing.a";
	have.id = "i-1";
	have.props = js("{\"region\": \"r1\", \"size\": 1, \"tags\": {\"a\": 1}}");

	after = js("{\"region\": \"r1\", \"size\": 1.0, \"tags\": {\"a\": 1}}");
	assert_int_equal(mo_decide(&rt, NULL, after, &changed, &reason), MO_ACT_CREATE);
	assert_null(changed);
	assert_null(reason);
	assert_int_equal(mo_decide(&rt, &have, after, &changed, &reason), MO_ACT_NOOP);
	assert_null(changed);
	assert_null(reason);
	json_decref(after);

	after = js("{\"region\": \"r1\", \"size\": 1, \"tags\": {\"a\": 2}}");
	assert_int_equal(mo_decide(&rt, &have, after, &changed, &reason), MO_ACT_UPDATE);
	assert_json(changed, "[\"tags\"]");
	assert_null(reason);
	json_decref(changed);
	json_decref(after);

	/* a removed prop is a change too */
	after = js("{\"region\": \"r1\", \"tags\": {\"a\": 1}}");
	assert_int_equal(mo_decide(&rt, &have, after, &changed, &reason), MO_ACT_UPDATE);
	assert_json(changed, "[\"size\"]");
	json_decref(changed);
	json_decref(after);

	after = js("{\"region\": \"r2\", \"size\": 2, \"tags\": {\"a\": 1}}");
	assert_int_equal(mo_decide(&rt, &have, after, &changed, &reason), MO_ACT_REPLACE);
	assert_json(changed, "[\"region\", \"size\"]");
	assert_contains(reason, "region");
	json_decref(changed);
	mo_free(reason);
	json_decref(after);

	/* unknown after apply counts as changed */
	after = js("{\"region\": \"r1\", \"size\": {\"$unknown\": \"module.m.thing.b.size\"},"
		   " \"tags\": {\"a\": 1}}");
	assert_int_equal(mo_decide(&rt, &have, after, &changed, &reason), MO_ACT_UPDATE);
	assert_json(changed, "[\"size\"]");
	json_decref(changed);

	rt.has_update = 0;
	assert_int_equal(mo_decide(&rt, &have, after, &changed, &reason), MO_ACT_REPLACE);
	assert_contains(reason, "no update()");
	json_decref(changed);
	mo_free(reason);
	json_decref(after);

	/* tainted: replaced even when nothing changed */
	rt.has_update = 1;
	have.status = MO_RES_TAINTED;
	after = js("{\"region\": \"r1\", \"size\": 1, \"tags\": {\"a\": 1}}");
	assert_int_equal(mo_decide(&rt, &have, after, &changed, &reason), MO_ACT_REPLACE);
	assert_contains(reason, "tainted");
	mo_free(reason);
	json_decref(changed);
	json_decref(after);

	json_decref(have.props);
	json_decref(rt.replace_on);
	json_decref(rt.sensitive);
}

/* ---- mo_resolve ---------------------------------------------------------- */

/* Lookup over a JSON object address -> value; addresses under "partial"
 * are known only by id. */
static const json_t *lookup_table(void *ud, const char *address, int *partial)
{
	json_t *t = ud, *v;
	if ((v = json_object_get(json_object_get(t, "partial"), address))) {
		*partial = 1;
		return v;
	}
	return json_object_get(json_object_get(t, "known"), address);
}

static json_t *resolve_ok(json_t *table, const char *text, int *unknown)
{
	json_t *v = js(text), *out = NULL;
	if (mo_resolve(v, lookup_table, table, &out, unknown) < 0)
		fail_msg("mo_resolve(%s): %s", text, mo_error_last()->message);
	json_decref(v);
	return out;
}

static void test_planner_resolve_templates(void **ts)
{
	json_t *table = js("{\"known\": {\"module.n.vm.a\": {\"id\": \"i-1\", \"host\": \"h1\","
			   " \"port\": 8080, \"ratio\": 0.5, \"disks\": [{\"dev\": \"sda\"}]}},"
			   " \"partial\": {\"module.n.vm.u\": {\"id\": \"i-9\", \"host\": \"old\"}}}");
	json_t *out;
	int unk = 0;
	(void)ts;

	out = resolve_ok(table, "{\"$tmpl\": [\"http://\", {\"$ref\": \"module.n.vm.a\", \"path\": [\"host\"]},"
				" \":\", {\"$ref\": \"module.n.vm.a\", \"path\": [\"port\"]}, \"/\","
				" {\"$ref\": \"module.n.vm.a\", \"path\": [\"id\"]}, \"?r=\","
				" {\"$ref\": \"module.n.vm.a\", \"path\": [\"ratio\"]}]}", &unk);
	assert_json(out, "\"http://h1:8080/i-1?r=0.5\"");
	assert_int_equal(unk, 0);
	json_decref(out);

	/* references nested in objects and arrays, array indices in paths */
	out = resolve_ok(table, "{\"list\": [{\"$ref\": \"module.n.vm.a\", \"path\": [\"disks\", 0, \"dev\"]},"
				" \"x\", 3], \"whole\": {\"$ref\": \"module.n.vm.a\", \"path\": [\"disks\"]}}",
			 &unk);
	assert_json(out, "{\"list\": [\"sda\", \"x\", 3], \"whole\": [{\"dev\": \"sda\"}]}");
	assert_int_equal(unk, 0);
	json_decref(out);

	/* an unknown address: the whole template is unknown */
	out = resolve_ok(table, "{\"$tmpl\": [\"id=\", {\"$ref\": \"module.n.vm.b\", \"path\": [\"id\"]}]}", &unk);
	assert_true(mo_unknown_is(out));
	assert_int_equal(unk, 1);
	json_decref(out);

	unk = 0;
	out = resolve_ok(table, "{\"a\": {\"$ref\": \"module.n.vm.b\", \"path\": [\"disks\", 0]}}", &unk);
	assert_json(out, "{\"a\": {\"$unknown\": \"module.n.vm.b.disks[0]\"}}");
	assert_int_equal(unk, 1);
	json_decref(out);

	/* partially known: only the id */
	unk = 0;
	out = resolve_ok(table, "{\"id\": {\"$ref\": \"module.n.vm.u\", \"path\": [\"id\"]},"
				" \"host\": {\"$ref\": \"module.n.vm.u\", \"path\": [\"host\"]}}", &unk);
	assert_json(out, "{\"id\": \"i-9\", \"host\": {\"$unknown\": \"module.n.vm.u.host\"}}");
	assert_int_equal(unk, 1);
	json_decref(out);

	/* plain values pass through; unknown stays 0 */
	unk = 0;
	out = resolve_ok(table, "{\"a\": [1, true, null, \"s\"]}", &unk);
	assert_json(out, "{\"a\": [1, true, null, \"s\"]}");
	assert_int_equal(unk, 0);
	json_decref(out);
	json_decref(table);
}

static void test_planner_resolve_errors(void **ts)
{
	json_t *table = js("{\"known\": {\"module.n.vm.a\": {\"id\": \"i-1\", \"host\": \"h1\","
			   " \"secret\": {\"$sensitive\": \"hmac-sha256:00ff\"}, \"obj\": {\"k\": 1}}}}");
	json_t *v, *out = NULL;
	(void)ts;

	v = js("{\"x\": {\"$ref\": \"module.n.vm.a\", \"path\": [\"nic\", \"ip\"]}}");
	assert_int_equal(mo_resolve(v, lookup_table, table, &out, NULL), MO_EINVAL);
	assert_null(out);
	assert_contains(mo_error_last()->message, "module.n.vm.a.nic.ip");
	assert_contains(mo_error_last()->message, "no such output");
	json_decref(v);

	v = js("{\"$ref\": \"module.n.vm.a\", \"path\": [\"secret\"]}");
	assert_int_equal(mo_resolve(v, lookup_table, table, &out, NULL), MO_EINVAL);
	assert_contains(mo_error_last()->message, "module.n.vm.a.secret");
	assert_contains(mo_error_last()->message, "sensitive");
	json_decref(v);

	v = js("{\"$tmpl\": [\"x\", {\"$ref\": \"module.n.vm.a\", \"path\": [\"obj\"]}]}");
	assert_int_equal(mo_resolve(v, lookup_table, table, &out, NULL), MO_EINVAL);
	assert_contains(mo_error_last()->message, "template");
	json_decref(v);
	json_decref(table);
}

/* A missing output path during planning names the resource that refers to it. */
static void test_planner_missing_output_in_plan(void **ts)
{
	fixture *f = *ts;
	put(f, A, "id-a", "{\"name\": \"a\"}", "{\"url\": \"kv://a\"}", NULL);
	load(f, "kv.lua", "{\"items\": {\"a\": {\"name\": \"a\"}, \"b\": {\"name\": \"b\"}},"
			  " \"links\": {\"b\": {\"ip\": \"a.ip\"}}}");
	assert_int_equal(run_planner(f, 0), MO_EINVAL);
	assert_contains(mo_error_last()->message, "module.kv.item.a.ip");
	assert_contains(mo_error_last()->message, B);
	assert_contains(mo_error_last()->message, "module.lua:");
}

/* A plan output naming an output the resource does not have: the error
 * names the output, and the state records are still the caller's. */
static void test_planner_missing_output_in_plan_output(void **ts)
{
	fixture *f = *ts;
	put(f, "module.a.step.s", "step-1", "{\"label\": \"a\", \"value\": \"start\"}", "{\"port\": 1}",
	    NULL);
	load(f, "chain.lua", NULL);
	assert_int_equal(run_planner(f, 0), MO_EINVAL);
	assert_contains(mo_error_last()->message, "output 'a_url'");
	assert_contains(mo_error_last()->message, "module.a.step.s.host");
}

/* ---- mo_mask ------------------------------------------------------------- */

static void test_planner_mask(void **ts)
{
	fixture *f = *ts;
	mo_rtype rt;
	json_t *secrets = js("[\"s3cret-token\"]");
	json_t *v = js("{\"password\": \"pw-1\", \"note\": \"use s3cret-token now\","
		       " \"nested\": {\"list\": [\"a\", \"s3cret-token\"]}, \"plain\": \"ok\", \"n\": 5,"
		       " \"later\": {\"$unknown\": \"module.x.t.a.id\"}}");
	json_t *m, *m2, *h, *pw = json_string("pw-1");
	char *dump;
	unsigned char other[32];
	memset(&rt, 0, sizeof(rt));
	rt.name = "thing";
	rt.sensitive = js("[\"password\", \"absent\"]");
	rt.replace_on = js("[]");

	m = mo_mask(v, &rt, secrets, f->key);
	assert_non_null(m);
	h = mo_secret_hash(f->key, pw);
	assert_true(mo_json_equal(json_object_get(m, "password"), h));
	json_decref(h);
	assert_true(mo_secret_is_hash(json_object_get(m, "note")));
	assert_true(mo_secret_is_hash(json_array_get(json_object_get(json_object_get(m, "nested"), "list"), 1)));
	assert_json(json_array_get(json_object_get(json_object_get(m, "nested"), "list"), 0), "\"a\"");
	assert_json(json_object_get(m, "plain"), "\"ok\"");
	assert_json(json_object_get(m, "n"), "5");
	assert_json(json_object_get(m, "later"), "{\"$unknown\": \"module.x.t.a.id\"}");
	assert_null(json_object_get(m, "absent"));
	dump = json_dumps(m, JSON_COMPACT);
	assert_null(strstr(dump, "s3cret-token"));
	assert_null(strstr(dump, "pw-1"));
	free(dump);
	/* the input is left alone */
	assert_json(json_object_get(v, "password"), "\"pw-1\"");

	/* masking is idempotent, deterministic, and keyed */
	m2 = mo_mask(m, &rt, secrets, f->key);
	assert_true(mo_json_equal(m, m2));
	json_decref(m2);
	m2 = mo_mask(v, &rt, secrets, f->key);
	assert_true(mo_json_equal(m, m2));
	json_decref(m2);
	memset(other, 7, sizeof(other));
	m2 = mo_mask(v, &rt, secrets, other);
	assert_false(mo_json_equal(json_object_get(m, "password"), json_object_get(m2, "password")));
	json_decref(m2);

	/* without a type only the secrets are masked */
	m2 = mo_mask(v, NULL, secrets, f->key);
	assert_json(json_object_get(m2, "password"), "\"pw-1\"");
	assert_true(mo_secret_is_hash(json_object_get(m2, "note")));
	json_decref(m2);

	json_decref(m);
	json_decref(v);
	json_decref(pw);
	json_decref(secrets);
	json_decref(rt.sensitive);
	json_decref(rt.replace_on);
}

/* Error messages and logs lose every secret they quote. */
static void test_planner_mask_text(void **ts)
{
	json_t *secrets = json_pack("[s,s]", "hunter2-pass", "hunter2");
	char *m = mo_mask_text(secrets, "401 for token hunter2-pass at hunter2: retry hunter2x");
	(void)ts;
	assert_string_equal(m, "401 for token (sensitive) at (sensitive): retry (sensitive)x");
	mo_free(m);
	m = mo_mask_text(NULL, "nothing to hide");
	assert_string_equal(m, "nothing to hide");
	mo_free(m);
	json_decref(secrets);
}

/* ---- rendering ----------------------------------------------------------- */

#define SECRET "hunter2-correct-horse"

static json_t *rc_of(json_t *doc, const char *address)
{
	size_t i;
	json_t *x;
	json_array_foreach(json_object_get(doc, "resource_changes"), i, x)
		if (!strcmp(json_string_value(json_object_get(x, "address")), address))
			return x;
	fail_msg("no resource_changes entry for %s", address);
	return NULL;
}

/* Fails (after freeing doc) when the secret appears in clear in doc;
 * otherwise leaves doc to the caller. */
static void assert_no_secret(json_t *doc)
{
	static char shown[4096];
	char *s = json_dumps(doc, JSON_COMPACT);
	assert_non_null(s);
	if (strstr(s, SECRET)) {
		snprintf(shown, sizeof(shown), "%s", s);
		free(s);
		json_decref(doc);
		fail_msg("secret in clear in the plan JSON: %s", shown);
	}
	free(s);
}

static void test_planner_plan_json_create(void **ts)
{
	fixture *f = *ts;
	json_t *doc, *rc, *ch;
	load(f, "secrets.lua", "{\"password\": \"" SECRET "\"}");
	plan_ok(f, 0);
	doc = mo_render_plan_json(f->cs);
	assert_no_secret(doc);
	assert_json(json_object_get(doc, "format_version"), "\"1.0\"");
	rc = rc_of(doc, "module.kv.item.db");
	assert_json(json_object_get(rc, "module"), "\"kv\"");
	assert_json(json_object_get(rc, "type"), "\"item\"");
	assert_json(json_object_get(rc, "name"), "\"db\"");
	ch = json_object_get(rc, "change");
	assert_json(json_object_get(ch, "actions"), "[\"create\"]");
	assert_json(json_object_get(ch, "before"), "null");
	assert_json(json_object_get(ch, "after"),
		    "{\"name\": \"db\", \"password\": null, \"dsn\": null, \"plain\": \"visible\"}");
	assert_json(json_object_get(ch, "after_sensitive"), "{\"password\": true, \"dsn\": true}");
	assert_json(json_object_get(ch, "after_unknown"), "{}");
	assert_json(json_object_get(json_object_get(doc, "output_changes"), "dsn"),
		    "{\"after\": null, \"after_unknown\": false, \"sensitive\": true}");
	assert_json(json_object_get(json_object_get(doc, "output_changes"), "plain"),
		    "{\"after\": \"visible\", \"after_unknown\": false, \"sensitive\": false}");
	assert_json(json_object_get(doc, "summary"),
		    "{\"add\": 1, \"change\": 0, \"replace\": 0, \"destroy\": 0, \"unchanged\": 0}");
	json_decref(doc);
}

static void test_planner_plan_json_update_replace_delete(void **ts)
{
	fixture *f = *ts;
	json_t *doc, *ch, *pwh, *pw = json_string(SECRET);
	char *hs;
	pwh = mo_secret_hash(f->key, pw);
	hs = json_dumps(pwh, JSON_COMPACT);
	/* db: same password (as its hash), plain changed -> update */
	{
		char props[512];
		snprintf(props, sizeof(props), "{\"name\": \"db\", \"password\": %s, \"dsn\": %s, \"plain\": \"old\"}",
			 hs, hs);
		put(f, "module.kv.item.db", "id-db", props, NULL, NULL);
	}
	put(f, "module.kv.item.gone", "id-g", "{\"name\": \"gone\", \"n\": 1}", NULL, NULL);
	load(f, "secrets.lua", "{\"password\": \"" SECRET "\"}");
	plan_ok(f, 0);
	doc = mo_render_plan_json(f->cs);
	assert_no_secret(doc);
	ch = json_object_get(rc_of(doc, "module.kv.item.db"), "change");
	assert_json(json_object_get(ch, "actions"), "[\"update\"]");
	assert_json(json_object_get(ch, "before"),
		    "{\"name\": \"db\", \"password\": null, \"dsn\": null, \"plain\": \"old\"}");
	assert_json(json_object_get(ch, "before_sensitive"), "{\"password\": true, \"dsn\": true}");
	assert_json(json_object_get(ch, "after"),
		    "{\"name\": \"db\", \"password\": null, \"dsn\": null, \"plain\": \"visible\"}");
	ch = json_object_get(rc_of(doc, "module.kv.item.gone"), "change");
	assert_json(json_object_get(ch, "actions"), "[\"delete\"]");
	assert_json(json_object_get(ch, "before"), "{\"name\": \"gone\", \"n\": 1}");
	assert_json(json_object_get(ch, "after"), "null");
	assert_json(json_object_get(rc_of(doc, "module.kv.item.gone"), "action_reason"),
		    "\"no longer in the plan\"");
	json_decref(doc);

	/* a new zone forces a replace: delete then create (not create_before_destroy) */
	load(f, "kv.lua", "{\"items\": {\"db\": {\"name\": \"db\", \"zone\": \"z2\"}}}");
	mo_state_rm(f->st, "module.kv.item.gone");
	put(f, "module.kv.item.db", "id-db", "{\"name\": \"db\", \"zone\": \"z1\"}", NULL, NULL);
	plan_ok(f, 0);
	doc = mo_render_plan_json(f->cs);
	ch = json_object_get(rc_of(doc, "module.kv.item.db"), "change");
	assert_json(json_object_get(ch, "actions"), "[\"delete\", \"create\"]");
	assert_json(json_object_get(ch, "before"), "{\"name\": \"db\", \"zone\": \"z1\"}");
	assert_json(json_object_get(ch, "after"), "{\"name\": \"db\", \"zone\": \"z2\"}");
	assert_contains(json_string_value(json_object_get(rc_of(doc, "module.kv.item.db"), "action_reason")),
			"zone");
	json_decref(doc);

	/* nothing changed: no-op */
	put(f, "module.kv.item.db", "id-db", "{\"name\": \"db\", \"zone\": \"z2\"}", NULL, NULL);
	plan_ok(f, 0);
	doc = mo_render_plan_json(f->cs);
	assert_json(json_object_get(json_object_get(rc_of(doc, "module.kv.item.db"), "change"), "actions"),
		    "[\"no-op\"]");
	json_decref(doc);
	free(hs);
	json_decref(pwh);
	json_decref(pw);
}

static void test_planner_plan_json_unknown(void **ts)
{
	fixture *f = *ts;
	json_t *doc, *rc, *ch;
	load(f, "kv.lua", links_vars);
	plan_ok(f, 0);
	doc = mo_render_plan_json(f->cs);
	rc = rc_of(doc, B);
	ch = json_object_get(rc, "change");
	assert_json(json_object_get(ch, "after"), "{\"name\": \"b\", \"parent\": null, \"parent_url\": null}");
	assert_json(json_object_get(ch, "after_unknown"), "{\"parent\": true, \"parent_url\": true}");
	assert_json(json_object_get(ch, "after_sensitive"), "{}");
	assert_json(json_object_get(rc, "deferred"), "true");
	assert_null(json_object_get(rc_of(doc, A), "deferred"));
	assert_json(json_object_get(json_object_get(doc, "output_changes"), "ids"),
		    "{\"after\": {\"a\": null, \"b\": null}, \"after_unknown\": {\"a\": true, \"b\": true},"
		    " \"sensitive\": false}");
	json_decref(doc);
}

/* A plan output that is not marked sensitive but carries a sensitive
 * variable must not show the value in clear either. */
static void test_planner_plan_json_output_secret(void **ts)
{
	fixture *f = *ts;
	json_t *doc;
	load(f, "leak.lua", "{\"password\": \"" SECRET "\"}");
	plan_ok(f, 0);
	doc = mo_render_plan_json(f->cs);
	assert_no_secret(doc);
	json_decref(doc);
}

static void test_planner_plan_text(void **ts)
{
	fixture *f = *ts;
	mo_render_opts ro = { 0, 0 };
	mo_buf b = MO_BUF_INIT;
	load(f, "secrets.lua", "{\"password\": \"" SECRET "\"}");
	plan_ok(f, 0);
	assert_int_equal(mo_render_plan_text(f->cs, &ro, &b), 0);
	assert_contains(b.ptr, "module.kv.item.db will be created");
	assert_contains(b.ptr, "(sensitive)");
	assert_contains(b.ptr, "1 to add, 0 to change, 0 to replace, 0 to destroy");
	assert_null(strstr(b.ptr, SECRET));
	mo_buf_free(&b);
}

static void digest_of(fixture *f, const char *vars, char out[65])
{
	load(f, "kv.lua", vars);
	plan_ok(f, 0);
	assert_int_equal(mo_render_digest(f->cs, out), 0);
	assert_int_equal(strlen(out), 64);
}

static void test_planner_digest(void **ts)
{
	fixture *f = *ts;
	char d1[65], d2[65], d3[65], d4[65];
	digest_of(f, "{\"items\": {\"a\": {\"name\": \"a\", \"size\": 1}}}", d1);
	digest_of(f, "{\"items\": {\"a\": {\"name\": \"a\", \"size\": 1}}}", d2);
	assert_string_equal(d1, d2);
	digest_of(f, "{\"items\": {\"a\": {\"name\": \"a\", \"size\": 2}}}", d3);
	assert_string_not_equal(d1, d3);
	/* same desired values, another action (update instead of create) */
	put(f, A, "id-a", "{\"name\": \"a\", \"size\": 1}", NULL, NULL);
	digest_of(f, "{\"items\": {\"a\": {\"name\": \"a\", \"size\": 2}}}", d4);
	assert_string_not_equal(d3, d4);
}

int main(void)
{
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
	const struct CMUnitTest tests[] = {
		T(test_planner_create),
		T(test_planner_noop),
		T(test_planner_update),
		T(test_planner_replace_on),
		T(test_planner_replace_tainted),
		T(test_planner_replace_without_update),
		T(test_planner_delete),
		T(test_planner_delete_removed_module),
		T(test_planner_delete_unknown_type),
		T(test_planner_destroy_order),
		T(test_planner_destroy_without_plan),
		T(test_planner_replace_waits_for_dependent_delete),
		T(test_planner_replace_chain_no_cycle),
		T(test_planner_mask_text),
		T(test_planner_unknown_when_created),
		T(test_planner_reference_to_noop),
		T(test_planner_reference_to_update),
		T(test_planner_reference_to_replace),
		T(test_planner_counts),
		T(test_planner_decide),
		T(test_planner_resolve_templates),
		T(test_planner_resolve_errors),
		T(test_planner_missing_output_in_plan),
		T(test_planner_missing_output_in_plan_output),
		T(test_planner_mask),
		T(test_planner_plan_json_create),
		T(test_planner_plan_json_update_replace_delete),
		T(test_planner_plan_json_unknown),
		T(test_planner_plan_json_output_secret),
		T(test_planner_plan_text),
		T(test_planner_digest),
	};
	return cmocka_run_group_tests_name("planner", tests, NULL, NULL);
}
