/*
 * render.c - human and JSON presentations of a change set, and its digest.
 */
#include "render.h"
#include "jdiff.h"
#include "lj.h"
#include "secret.h"

#include <openssl/sha.h>
#include <stdlib.h>
#include <string.h>

#define C_GREEN "\033[32m"
#define C_YELLOW "\033[33m"
#define C_RED "\033[31m"
#define C_BOLD "\033[1m"
#define C_RESET "\033[0m"

/* Copy v for display: sensitive -> "(sensitive)", unknown -> "(known after apply)". */
static json_t *display_copy(const json_t *v)
{
	size_t i;
	const char *k;
	json_t *x, *res;
	if (mo_secret_is_hash(v))
		return json_string("(sensitive)");
	if (mo_unknown_is(v))
		return json_string("(known after apply)");
	if (json_is_object(v)) {
		res = json_object();
		json_object_foreach((json_t *)v, k, x) json_object_set_new(res, k, display_copy(x));
		return res;
	}
	if (json_is_array(v)) {
		res = json_array();
		json_array_foreach(v, i, x) json_array_append_new(res, display_copy(x));
		return res;
	}
	return json_incref((json_t *)v);
}

char *mo_render_value(const json_t *v, size_t max)
{
	json_t *d;
	char *s, *r;
	if (!v)
		return mo_strdup("null");
	if (mo_secret_is_hash(v))
		return mo_strdup("(sensitive)");
	if (mo_unknown_is(v))
		return mo_strdup("(known after apply)");
	d = display_copy(v);
	s = json_dumps(d, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
	json_decref(d);
	if (!s)
		return NULL;
	if (max > 4 && strlen(s) > max) {
		r = mo_sprintf("%.*s...", (int)(max - 3), s);
	} else {
		r = mo_strdup(s);
	}
	free(s);
	return r;
}

static const char *symbol(int action)
{
	switch (action) {
	case MO_ACT_CREATE: return "+";
	case MO_ACT_UPDATE: return "~";
	case MO_ACT_REPLACE: return "-/+";
	case MO_ACT_DELETE: return "-";
	default: return " ";
	}
}

static const char *colour(int action)
{
	switch (action) {
	case MO_ACT_CREATE: return C_GREEN;
	case MO_ACT_UPDATE: return C_YELLOW;
	default: return C_RED;
	}
}

static const char *verb(int action)
{
	switch (action) {
	case MO_ACT_CREATE: return "will be created";
	case MO_ACT_UPDATE: return "will be updated in place";
	case MO_ACT_REPLACE: return "must be replaced";
	case MO_ACT_DELETE: return "will be destroyed";
	default: return "is unchanged";
	}
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static void put_fields(mo_buf *out, const char *sign, const json_t *obj)
{
	const char *k;
	json_t *v;
	size_t w = 0;
	const char **keys;
	size_t n = json_object_size(obj), i = 0;
	if (!json_is_object(obj))
		return;
	keys = mo_calloc(n + 1, sizeof(*keys));
	if (!keys)
		return;
	json_object_foreach((json_t *)obj, k, v) {
		keys[i++] = k;
		if (strlen(k) > w)
			w = strlen(k);
	}
	qsort(keys, n, sizeof(*keys), cmp_str);
	for (i = 0; i < n; i++) {
		char *s = mo_render_value(json_object_get(obj, keys[i]), 100);
		mo_buf_printf(out, "      %s %-*s = %s\n", sign, (int)w, keys[i], s ? s : "?");
		mo_free(s);
	}
	mo_free(keys);
}

int mo_render_plan_text(const mo_changeset *cs, const mo_render_opts *o, mo_buf *out)
{
	size_t shown = 0;
	for (size_t i = 0; i < cs->n; i++) {
		const mo_change *c = &cs->c[i];
		if (c->half || (c->action == MO_ACT_NOOP && !o->show_noop))
			continue;
		if (!shown++)
			mo_buf_puts(out, "mecorch will perform the following actions:\n\n");
		mo_buf_printf(out, "  # %s %s%s%s%s\n", c->address, verb(c->action), c->reason ? " (" : "",
			      c->reason ? c->reason : "", c->reason ? ")" : "");
		mo_buf_printf(out, "%s%3s %s%s\n", o->color ? colour(c->action) : "", symbol(c->action),
			      c->address, o->color ? C_RESET : "");
		if (c->action == MO_ACT_CREATE) {
			put_fields(out, "+", c->after);
		} else if (c->action == MO_ACT_DELETE) {
			put_fields(out, "-", c->have ? c->have->props : NULL);
		} else if (c->action == MO_ACT_UPDATE || c->action == MO_ACT_REPLACE) {
			mo_jdiff_entry *e = NULL;
			size_t n = 0;
			if (c->have && mo_jdiff(c->have->props, c->after, &e, &n) == 0) {
				for (size_t k = 0; k < n; k++) {
					char *b = mo_render_value(e[k].before, 60), *a = mo_render_value(e[k].after, 60);
					if (!e[k].before)
						mo_buf_printf(out, "      + %s = %s\n", e[k].path, a);
					else if (!e[k].after)
						mo_buf_printf(out, "      - %s = %s\n", e[k].path, b);
					else
						mo_buf_printf(out, "      ~ %s = %s -> %s\n", e[k].path, b, a);
					mo_free(a);
					mo_free(b);
				}
				mo_jdiff_free(e, n);
			}
		}
		mo_buf_puts(out, "\n");
	}
	if (!shown)
		mo_buf_puts(out, "No changes. The infrastructure matches the plan.\n");
	else
		mo_buf_printf(out, "%sPlan:%s %zu to add, %zu to change, %zu to replace, %zu to destroy.\n",
			      o->color ? C_BOLD : "", o->color ? C_RESET : "", cs->n_create, cs->n_update,
			      cs->n_replace, cs->n_delete);
	return 0;
}

/* Split a masked value into (value with sensitive/unknown nulled, unknown
 * mask, sensitive mask).  Masks mirror the structure, false -> omitted. */
static void split_value(const json_t *v, json_t **val, json_t **unknown, json_t **sensitive)
{
	size_t i;
	const char *k;
	json_t *x;
	if (mo_unknown_is(v)) {
		*val = json_null();
		*unknown = json_true();
		*sensitive = json_false();
		return;
	}
	if (mo_secret_is_hash(v)) {
		*val = json_null();
		*unknown = json_false();
		*sensitive = json_true();
		return;
	}
	if (json_is_object(v) || json_is_array(v)) {
		int obj = json_is_object(v);
		json_t *cv = obj ? json_object() : json_array();
		json_t *cu = obj ? json_object() : json_array();
		json_t *cs = obj ? json_object() : json_array();
		json_t *a, *b, *c;
		if (obj) {
			json_object_foreach((json_t *)v, k, x) {
				split_value(x, &a, &b, &c);
				json_object_set_new(cv, k, a);
				if (json_is_false(b))
					json_decref(b);
				else
					json_object_set_new(cu, k, b);
				if (json_is_false(c))
					json_decref(c);
				else
					json_object_set_new(cs, k, c);
			}
		} else {
			json_array_foreach(v, i, x) {
				split_value(x, &a, &b, &c);
				json_array_append_new(cv, a);
				json_array_append_new(cu, b);
				json_array_append_new(cs, c);
			}
		}
		*val = cv;
		*unknown = cu;
		*sensitive = cs;
		return;
	}
	*val = json_incref((json_t *)v);
	*unknown = json_false();
	*sensitive = json_false();
}

static json_t *actions_of(const mo_change *c)
{
	switch (c->action) {
	case MO_ACT_CREATE: return json_pack("[s]", "create");
	case MO_ACT_UPDATE: return json_pack("[s]", "update");
	case MO_ACT_DELETE: return json_pack("[s]", "delete");
	case MO_ACT_REPLACE:
		return c->rtype && c->rtype->create_before_destroy ? json_pack("[s,s]", "create", "delete")
								   : json_pack("[s,s]", "delete", "create");
	default: return json_pack("[s]", "no-op");
	}
}

json_t *mo_render_plan_json(const mo_changeset *cs)
{
	json_t *doc = json_object(), *rc = json_array(), *oc = json_object(), *x;
	const char *k;
	for (size_t i = 0; i < cs->n; i++) {
		const mo_change *c = &cs->c[i];
		json_t *ch, *bv, *bu, *bs, *av, *au, *as, *rcv;
		char *inst = NULL, *type = NULL, *name = NULL;
		if (c->half)
			continue;
		ch = json_object();
		mo_address_parse(c->address, &inst, &type, &name);
		json_object_set_new(ch, "actions", actions_of(c));
		if (c->have) {
			split_value(c->have->props, &bv, &bu, &bs);
			json_decref(bu);
		} else {
			bv = json_null();
			bs = json_false();
		}
		if (c->action != MO_ACT_DELETE && c->after) {
			split_value(c->after, &av, &au, &as);
		} else {
			av = json_null();
			au = json_false();
			as = json_false();
		}
		json_object_set_new(ch, "before", bv);
		json_object_set_new(ch, "after", av);
		json_object_set_new(ch, "after_unknown", au);
		json_object_set_new(ch, "before_sensitive", bs);
		json_object_set_new(ch, "after_sensitive", as);
		if (c->changed)
			json_object_set(ch, "changed", c->changed);
		rcv = json_pack("{s:s,s:s?,s:s?,s:s?,s:o}", "address", c->address, "module", inst, "type",
				type, "name", name, "change", ch);
		if (c->reason)
			json_object_set_new(rcv, "action_reason", json_string(c->reason));
		if (c->deferred)
			json_object_set_new(rcv, "deferred", json_true());
		json_array_append_new(rc, rcv);
		mo_free(inst);
		mo_free(type);
		mo_free(name);
	}
	json_object_foreach(cs->outputs, k, x) {
		json_t *v, *u, *s;
		int sens = json_is_true(json_object_get(x, "sensitive"));
		split_value(json_object_get(x, "value"), &v, &u, &s);
		json_object_set_new(oc, k, json_pack("{s:o,s:o,s:b}", "after", sens ? json_null() : v,
						     "after_unknown", u, "sensitive", sens));
		if (sens)
			json_decref(v);
		json_decref(s);
	}
	json_object_set_new(doc, "format_version", json_string("1.0"));
	json_object_set_new(doc, "mecorch_version", json_string(MO_VERSION));
	json_object_set_new(doc, "resource_changes", rc);
	json_object_set_new(doc, "output_changes", oc);
	json_object_set_new(doc, "summary",
			    json_pack("{s:i,s:i,s:i,s:i,s:i}", "add", (int)cs->n_create, "change",
				      (int)cs->n_update, "replace", (int)cs->n_replace, "destroy",
				      (int)cs->n_delete, "unchanged", (int)cs->n_noop));
	return doc;
}

int mo_render_digest(const mo_changeset *cs, char out[65])
{
	json_t *arr = json_array();
	char *s;
	unsigned char md[SHA256_DIGEST_LENGTH];
	static const char hex[] = "0123456789abcdef";
	for (size_t i = 0; i < cs->n; i++) {
		const mo_change *c = &cs->c[i];
		if (c->half)
			continue;
		json_array_append_new(arr, json_pack("{s:s,s:s,s:O?,s:s?}", "address", c->address, "action",
						     mo_action_name(c->action), "after", c->after, "id",
						     c->have ? c->have->id : NULL));
	}
	/* the planned plan outputs are part of what a saved plan promises */
	json_array_append(arr, cs->outputs ? cs->outputs : json_null());
	s = json_dumps(arr, JSON_COMPACT | JSON_SORT_KEYS);
	json_decref(arr);
	if (!s)
		return mo_error_set(MO_ENOMEM, "out of memory");
	SHA256((const unsigned char *)s, strlen(s), md);
	free(s);
	for (int i = 0; i < SHA256_DIGEST_LENGTH; i++) {
		out[2 * i] = hex[md[i] >> 4];
		out[2 * i + 1] = hex[md[i] & 15];
	}
	out[64] = '\0';
	return 0;
}

int mo_render_outputs_text(const json_t *outputs, int show_sensitive, mo_buf *out)
{
	const char *k;
	json_t *v;
	json_object_foreach((json_t *)outputs, k, v) {
		int sens = json_is_true(json_object_get(v, "sensitive"));
		char *s = sens && !show_sensitive ? mo_strdup("(sensitive)")
						  : mo_render_value(json_object_get(v, "value"), 0);
		mo_buf_printf(out, "%s = %s\n", k, s ? s : "?");
		mo_free(s);
	}
	return 0;
}
