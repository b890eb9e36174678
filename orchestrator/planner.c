/*
 * planner.c - compute the change set of a plan against the state, and the
 * action graph the executor walks.  See planner.h.
 */
#include "planner.h"
#include "common.h"
#include "graph.h"
#include "jdiff.h"
#include "lj.h"
#include "secret.h"

#include <string.h>

const char *mo_action_name(int action)
{
	static const char *const names[] = { "no-op", "create", "update", "replace", "delete" };
	return action >= 0 && action < (int)MO_ARRAY_SIZE(names) ? names[action] : "?";
}

/* ---- resolution -------------------------------------------------------- */

static json_t *unknown_of(const json_t *ref)
{
	char *t = mo_ref_text(ref);
	json_t *u = json_pack("{s:s}", "$unknown", t ? t : "?");
	mo_free(t);
	return u;
}

static int resolve_ref(const json_t *ref, mo_lookup_fn lookup, void *ud, json_t **out, int *unknown)
{
	const char *addr = json_string_value(json_object_get(ref, "$ref"));
	json_t *path = json_object_get(ref, "path"), *seg;
	const json_t *cur;
	int partial = 0;
	size_t i;
	cur = lookup(ud, addr, &partial);
	if (!cur || (partial && !(json_array_size(path) == 1 &&
				  json_is_string(json_array_get(path, 0)) &&
				  !strcmp(json_string_value(json_array_get(path, 0)), "id")))) {
		*out = unknown_of(ref);
		if (unknown)
			*unknown = 1;
		return 0;
	}
	json_array_foreach(path, i, seg) {
		const json_t *next = NULL;
		if (json_is_string(seg) && json_is_object(cur))
			next = json_object_get(cur, json_string_value(seg));
		else if (json_is_integer(seg) && json_is_array(cur))
			next = json_array_get(cur, (size_t)json_integer_value(seg));
		if (!next) {
			char *t = mo_ref_text(ref);
			int rc = mo_error_set(MO_EINVAL, "%s: %s has no such output", t ? t : "?", addr);
			mo_free(t);
			return rc;
		}
		cur = next;
	}
	if (mo_secret_is_hash(cur)) {
		char *t = mo_ref_text(ref);
		int rc = mo_error_set(MO_EINVAL, "%s is sensitive and kept only as a keyed hash in the "
				      "state; it can be referenced only in the run that produced it "
				      "(replace %s to produce it again)", t ? t : "?", addr);
		mo_free(t);
		return rc;
	}
	*out = json_deep_copy(cur);
	return 0;
}

int mo_resolve(const json_t *v, mo_lookup_fn lookup, void *ud, json_t **out, int *unknown)
{
	size_t i;
	const char *k;
	json_t *x, *y, *res;
	int rc;
	if (mo_ref_is(v))
		return resolve_ref(v, lookup, ud, out, unknown);
	if (mo_tmpl_is(v)) {
		mo_buf b = MO_BUF_INIT;
		int unk = 0;
		mo_buf_puts(&b, "");
		json_array_foreach(json_object_get(v, "$tmpl"), i, x) {
			if ((rc = mo_resolve(x, lookup, ud, &y, &unk)) < 0) {
				mo_buf_free(&b);
				return rc;
			}
			if (json_is_string(y))
				mo_buf_puts(&b, json_string_value(y));
			else if (json_is_integer(y))
				mo_buf_printf(&b, "%lld", (long long)json_integer_value(y));
			else if (json_is_real(y))
				mo_buf_printf(&b, "%.14g", json_real_value(y));
			else if (!mo_unknown_is(y)) {
				json_decref(y);
				mo_buf_free(&b);
				return mo_error_set(MO_EINVAL, "a template part resolved to a non-scalar value");
			}
			json_decref(y);
		}
		if (unk) {
			*out = json_pack("{s:s}", "$unknown", "string built from values known after apply");
			if (unknown)
				*unknown = 1;
		} else {
			*out = json_string(b.ptr);
		}
		mo_buf_free(&b);
		return 0;
	}
	if (json_is_object(v)) {
		res = json_object();
		json_object_foreach((json_t *)v, k, x) {
			if ((rc = mo_resolve(x, lookup, ud, &y, unknown)) < 0) {
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
			if ((rc = mo_resolve(x, lookup, ud, &y, unknown)) < 0) {
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

/* ---- masking ------------------------------------------------------------ */

static int has_secret(const json_t *secrets, const char *s)
{
	size_t i;
	json_t *x;
	json_array_foreach(secrets, i, x)
		if (strstr(s, json_string_value(x)))
			return 1;
	return 0;
}

static json_t *mask_walk(const json_t *v, const json_t *secrets, const unsigned char key[32])
{
	size_t i;
	const char *k;
	json_t *x, *res;
	if (mo_unknown_is(v) || mo_secret_is_hash(v))
		return json_incref((json_t *)v);
	if (json_is_string(v))
		return has_secret(secrets, json_string_value(v)) ? mo_secret_hash(key, v)
								 : json_incref((json_t *)v);
	if (json_is_object(v)) {
		res = json_object();
		json_object_foreach((json_t *)v, k, x) json_object_set_new(res, k, mask_walk(x, secrets, key));
		return res;
	}
	if (json_is_array(v)) {
		res = json_array();
		json_array_foreach(v, i, x) json_array_append_new(res, mask_walk(x, secrets, key));
		return res;
	}
	return json_incref((json_t *)v);
}

char *mo_mask_text(const json_t *secrets, const char *text)
{
	mo_buf b = MO_BUF_INIT;
	const char *p = text ? text : "";
	if (mo_buf_puts(&b, "") < 0)
		return NULL;
	while (*p) {
		size_t i, best = 0;
		json_t *x;
		json_array_foreach(secrets, i, x) {
			size_t n = json_string_length(x);
			if (n > best && !strncmp(p, json_string_value(x), n))
				best = n;
		}
		if (best) {
			mo_buf_puts(&b, "(sensitive)");
			p += best;
		} else {
			mo_buf_put(&b, p++, 1);
		}
	}
	return b.ptr;
}

json_t *mo_mask_output(const json_t *v, int *sensitive, const json_t *secrets, const unsigned char key[32])
{
	json_t *masked;
	if (*sensitive)
		return mo_secret_hash(key, v);
	masked = mo_mask(v, NULL, secrets, key);
	if (masked && !mo_json_equal(masked, v)) {
		*sensitive = 1;
		json_decref(masked);
		masked = mo_secret_hash(key, v);
	}
	return masked;
}

json_t *mo_mask_like(const json_t *v, const json_t *known, const unsigned char key[32])
{
	json_t *res, *e;
	const char *k;
	size_t i;

	if (!v)
		return NULL;
	if (known && mo_secret_is_hash(known))
		return mo_secret_is_hash(v) || json_is_null(v) ? json_incref((json_t *)v) : mo_secret_hash(key, v);
	if (json_is_object(v) && json_is_object(known)) {
		res = json_object();
		json_object_foreach((json_t *)v, k, e)
			json_object_set_new(res, k, mo_mask_like(e, json_object_get(known, k), key));
		return res;
	}
	if (json_is_array(v) && json_is_array(known)) {
		res = json_array();
		json_array_foreach(v, i, e)
			json_array_append_new(res, mo_mask_like(e, json_array_get(known, i), key));
		return res;
	}
	return json_incref((json_t *)v);
}

json_t *mo_mask(const json_t *v, const mo_rtype *rtype, const json_t *secrets,
		const unsigned char key[32])
{
	json_t *res = mask_walk(v, secrets, key), *f;
	size_t i;
	if (rtype && json_is_object(res)) {
		json_array_foreach(rtype->sensitive, i, f) {
			json_t *cur = json_object_get(res, json_string_value(f));
			if (cur && !json_is_null(cur) && !mo_unknown_is(cur) && !mo_secret_is_hash(cur))
				json_object_set_new(res, json_string_value(f), mo_secret_hash(key, cur));
		}
	}
	return res;
}

/* ---- deciding ----------------------------------------------------------- */

int mo_decide(const mo_rtype *rt, const mo_resource *have, const json_t *after,
	      json_t **changed, char **reason)
{
	json_t *keys, *k;
	size_t i;
	*changed = NULL;
	*reason = NULL;
	if (!have)
		return MO_ACT_CREATE;
	if (have->status == MO_RES_TAINTED) {
		*reason = mo_strdup("tainted by an earlier failure");
		return MO_ACT_REPLACE;
	}
	keys = mo_jdiff_top_keys(have->props, after);
	if (!keys || json_array_size(keys) == 0) {
		json_decref(keys);
		return MO_ACT_NOOP;
	}
	*changed = keys;
	json_array_foreach(keys, i, k) {
		size_t j;
		json_t *r;
		json_array_foreach(rt->replace_on, j, r) {
			if (!strcmp(json_string_value(r), json_string_value(k))) {
				*reason = mo_sprintf("%s changed (replace_on)", json_string_value(k));
				return MO_ACT_REPLACE;
			}
		}
	}
	if (!rt->has_update) {
		*reason = mo_strdup("the resource type has no update()");
		return MO_ACT_REPLACE;
	}
	return MO_ACT_UPDATE;
}

/* ---- the planner -------------------------------------------------------- */

typedef struct {
	mo_changeset *cs;
} plan_lookup;

static const json_t *known_value(void *ud, const char *address, int *partial)
{
	mo_changeset *cs = ud;
	mo_change *c = mo_changeset_find(cs, address);
	if (!c || !c->have)
		return NULL;
	if (c->action == MO_ACT_NOOP)
		return c->have->outputs; /* outputs carry "id" (see with_id) */
	if (c->action == MO_ACT_UPDATE) {
		*partial = 1;
		return c->have->outputs;
	}
	return NULL;
}

/* Make sure outputs carry the id, so references to .id resolve. */
static void with_id(mo_resource *r)
{
	if (!r->outputs || !json_is_object(r->outputs)) {
		json_decref(r->outputs);
		r->outputs = json_object();
	}
	if (r->id && !json_object_get(r->outputs, "id"))
		json_object_set_new(r->outputs, "id", json_string(r->id));
}

mo_change *mo_changeset_find(const mo_changeset *cs, const char *address)
{
	size_t idx;
	if (mo_graph_find(cs->g, address, &idx) < 0 || idx >= cs->n)
		return NULL;
	return &cs->c[idx];
}

/* Add a change for address whose graph node is named node. */
static int add_change_node(mo_changeset *cs, size_t *cap, const char *node, const char *address,
			   mo_change **out)
{
	size_t idx;
	if (cs->n == *cap) {
		size_t ncap = *cap ? *cap * 2 : 64;
		mo_change *n = mo_realloc(cs->c, ncap * sizeof(*n));
		if (!n)
			return mo_error_set(MO_ENOMEM, "out of memory");
		cs->c = n;
		*cap = ncap;
	}
	if (mo_graph_add_node(cs->g, node, &idx) < 0)
		return MO_ENOMEM;
	if (idx != cs->n)
		return mo_error_set(MO_EINVAL, "%s appears twice in the change set", node);
	*out = &cs->c[cs->n++];
	memset(*out, 0, sizeof(**out));
	(*out)->address = mo_strdup(address);
	(*out)->destroy_half = SIZE_MAX;
	return 0;
}

static int add_change(mo_changeset *cs, size_t *cap, const char *address, mo_change **out)
{
	return add_change_node(cs, cap, address, address, out);
}

/* The node that destroys the existing object of change i, or SIZE_MAX. */
static size_t destroy_node(const mo_changeset *cs, size_t i)
{
	const mo_change *c = &cs->c[i];
	if (c->action == MO_ACT_DELETE)
		return i;
	if (c->action == MO_ACT_REPLACE && !c->rtype->create_before_destroy)
		return c->destroy_half != SIZE_MAX ? c->destroy_half : i;
	return SIZE_MAX;
}

static void count(mo_changeset *cs, int action)
{
	switch (action) {
	case MO_ACT_CREATE: cs->n_create++; break;
	case MO_ACT_UPDATE: cs->n_update++; break;
	case MO_ACT_REPLACE: cs->n_replace++; break;
	case MO_ACT_DELETE: cs->n_delete++; break;
	default: cs->n_noop++; break;
	}
}

static int plan_outputs(mo_changeset *cs, mo_plan *p)
{
	const char *k;
	json_t *v, *val;
	int rc;
	cs->outputs = json_object();
	if (!p)
		return 0;
	json_object_foreach(p->outputs, k, v) {
		json_t *masked;
		int sens = json_is_true(json_object_get(v, "sensitive"));
		if ((rc = mo_resolve(json_object_get(v, "value"), known_value, cs, &val, NULL)) < 0)
			return mo_error_prefix("output '%s'", k);
		masked = mo_mask_output(val, &sens, p->secrets, cs->key);
		json_decref(val);
		json_object_set_new(cs->outputs, k, json_pack("{s:o,s:b}", "value", masked, "sensitive", sens));
	}
	return 0;
}

int mo_planner_run(mo_changeset **out, mo_plan *p, mo_resource **state, size_t nstate,
		   const unsigned char key[32], const mo_planner_opts *o)
{
	mo_changeset *cs = mo_calloc(1, sizeof(*cs));
	mo_graph *sg = NULL; /* state addresses -> index */
	size_t cap = 0, *order = NULL, idx;
	int rc = 0;
	char *taken = NULL;
	json_t *empty_secrets = json_array();
	if (!cs) {
		rc = mo_error_set(MO_ENOMEM, "out of memory");
		goto fail;
	}
	memcpy(cs->key, key, 32);
	cs->plan = p;
	if ((rc = mo_graph_new(&cs->g)) < 0 || (rc = mo_graph_new(&sg)) < 0)
		goto fail;
	for (size_t i = 0; i < nstate; i++) {
		with_id(state[i]);
		mo_graph_add_node(sg, state[i]->address, &idx);
	}
	taken = mo_calloc(nstate + 1, 1);
	if (!taken) {
		rc = mo_error_set(MO_ENOMEM, "out of memory");
		goto fail;
	}
	/* desired resources, in dependency order so references resolve */
	if (p && !o->destroy) {
		order = mo_calloc(p->nres + 1, sizeof(*order));
		if (!order) {
			rc = mo_error_set(MO_ENOMEM, "out of memory");
			goto fail;
		}
		if ((rc = mo_graph_topo(p->rgraph, order)) < 0)
			goto fail;
		/* add nodes first in plan order, so lookups during resolution work */
		for (size_t i = 0; i < p->nres; i++) {
			mo_change *c;
			if ((rc = add_change(cs, &cap, p->res[i].address, &c)) < 0)
				goto fail;
			c->want = &p->res[i];
			c->inst = p->res[i].inst;
			c->rtype = p->res[i].rtype;
			if (mo_graph_find(sg, p->res[i].address, &idx) == 0) {
				c->have = state[idx];
				taken[idx] = 1;
				if (state[idx]->status == MO_RES_DEPOSED)
					c->have = NULL, taken[idx] = 0;
			}
			c->action = -1;
		}
		for (size_t oi = 0; oi < p->nres; oi++) {
			mo_change *c = &cs->c[order[oi]];
			json_t *resolved = NULL;
			int unk = 0;
			if ((rc = mo_resolve(c->want->props, known_value, cs, &resolved, &unk)) < 0) {
				mo_error_prefix("%s (%s)", c->address, c->want->where);
				goto fail;
			}
			c->after = mo_mask(resolved, c->rtype, p->secrets, key);
			json_decref(resolved);
			c->deferred = unk;
			c->action = mo_decide(c->rtype, c->have, c->after, &c->changed, &c->reason);
			count(cs, c->action);
		}
	}
	/* state resources not desired: delete */
	for (size_t i = 0; i < nstate; i++) {
		mo_change *c;
		if (taken[i])
			continue;
		if ((rc = add_change(cs, &cap, state[i]->address, &c)) < 0)
			goto fail;
		c->action = MO_ACT_DELETE;
		c->have = state[i];
		c->reason = mo_strdup(state[i]->status == MO_RES_DEPOSED ? "deposed by an earlier replace"
				      : o->destroy ? "destroy requested" : "no longer in the plan");
		if ((rc = mo_instance_for(p, &cs->extra, state[i]->module, state[i]->type,
					  state[i]->source, o->sources, o->rt, o->limits, &c->inst)) < 0) {
			mo_error_prefix("%s", state[i]->address);
			goto fail;
		}
		if (!(c->rtype = mo_instance_type(c->inst, state[i]->type))) {
			rc = mo_error_set(MO_EINVAL, "%s: module %s has no resource type '%s' any more",
					  state[i]->address, c->inst->name, state[i]->type);
			goto fail;
		}
		count(cs, MO_ACT_DELETE);
	}
	/* A delete-first replace is two nodes: its destroy half takes part in
	 * the destroy order (after what depended on the old object is gone),
	 * the replace itself creates afterwards.  Without the split, a replace
	 * whose dependent is replaced too would be a cycle. */
	{
		size_t nmain = cs->n;
		for (size_t i = 0; i < nmain; i++) {
			mo_change *h;
			char *node;
			if (cs->c[i].action != MO_ACT_REPLACE || cs->c[i].rtype->create_before_destroy)
				continue;
			if (!(node = mo_sprintf("%s#destroy", cs->c[i].address))) {
				rc = mo_error_set(MO_ENOMEM, "out of memory");
				goto fail;
			}
			rc = add_change_node(cs, &cap, node, cs->c[i].address, &h);
			mo_free(node);
			if (rc < 0)
				goto fail;
			h->action = MO_ACT_DELETE;
			h->half = 1;
			h->have = cs->c[i].have;
			h->inst = cs->c[i].inst;
			h->rtype = cs->c[i].rtype;
			cs->c[i].destroy_half = cs->n - 1;
		}
	}
	/* edges */
	for (size_t i = 0; i < cs->n; i++) {
		mo_change *c = &cs->c[i];
		json_t *d;
		size_t j;
		if (c->want && !c->half) {
			json_array_foreach(c->want->deps, j, d)
				if (mo_graph_find(cs->g, json_string_value(d), &idx) == 0)
					mo_graph_add_edge(cs->g, i, idx);
		}
		if (c->destroy_half != SIZE_MAX)
			mo_graph_add_edge(cs->g, i, c->destroy_half);
		/* c depended on d when it was created: destroying d waits for
		 * destroying c */
		if (c->have && (c->half || destroy_node(cs, i) == i)) {
			json_array_foreach(c->have->deps, j, d) {
				size_t t;
				if (mo_graph_find(cs->g, json_string_value(d), &idx) < 0)
					continue;
				if ((t = destroy_node(cs, idx)) != SIZE_MAX && t != i)
					mo_graph_add_edge(cs->g, t, i);
			}
		}
	}
	mo_free(order);
	order = mo_calloc(cs->n + 1, sizeof(*order));
	if (!order) {
		rc = mo_error_set(MO_ENOMEM, "out of memory");
		goto fail;
	}
	if ((rc = mo_graph_topo(cs->g, order)) < 0)
		goto fail;
	if ((rc = plan_outputs(cs, o->destroy ? NULL : p)) < 0)
		goto fail;
	/* the change set owns the state records now */
	for (size_t i = 0; i < nstate; i++)
		if (!mo_changeset_find(cs, state[i]->address) ||
		    mo_changeset_find(cs, state[i]->address)->have != state[i])
			mo_resource_free(state[i]);
	mo_free(state);
	mo_free(order);
	mo_free(taken);
	mo_graph_free(sg);
	json_decref(empty_secrets);
	*out = cs;
	return 0;
fail:
	mo_free(order);
	mo_free(taken);
	mo_graph_free(sg);
	json_decref(empty_secrets);
	if (cs) {
		/* give the state records back to the caller untouched */
		for (size_t i = 0; i < cs->n; i++)
			cs->c[i].have = NULL;
		mo_changeset_free(cs);
	}
	return rc;
}

void mo_changeset_free(mo_changeset *cs)
{
	if (!cs)
		return;
	for (size_t i = 0; i < cs->n; i++) {
		mo_change *c = &cs->c[i];
		mo_free(c->address);
		if (!c->half)
			mo_resource_free(c->have);
		json_decref(c->after);
		json_decref(c->changed);
		mo_free(c->reason);
	}
	mo_free(cs->c);
	mo_instance_set_clear(&cs->extra);
	mo_graph_free(cs->g);
	json_decref(cs->outputs);
	mo_free(cs);
}
