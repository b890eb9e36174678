/*
 * query.c - the ETSI query parameters of the collection GETs: attribute-based
 * filtering (GS MEC 009 clause 6.19, after NFV-SOL 013) and the attribute
 * selectors all_fields, fields, exclude_fields and exclude_default (clause
 * 6.18).
 *
 *   filter = expr *( ";" expr )            every expr must hold
 *   expr   = "(" op "," path 1*( "," value ) ")"
 *   path   = name *( "/" name )            e.g. instantiatedAppState/operationalState
 *   value  = chars without , ) ' | "'" chars with '' for a quote "'"
 *
 *   eq neq         one value
 *   gt gte lt lte  one value; numbers compare as numbers, strings bytewise
 *   in nin         one or more values
 *   cont ncont     one or more values; substring of a string attribute
 *
 * A path that crosses an array looks at every element.  A positive operator
 * (eq, in, gt, gte, lt, lte, cont) holds when some attribute value at the
 * path satisfies it; neq, nin and ncont hold when no value satisfies eq, in
 * or cont, so they hold for an absent attribute.  The first name of a path
 * must be an attribute of the resource type: a misspelt filter is a 400, not
 * an empty list.
 *
 * Selectors: no selector means exclude_default; exclude_default removes the
 * type's default-excluded complex attributes; fields=a,b does the same but
 * keeps those it names; exclude_fields=a,b removes exactly those; all_fields
 * removes nothing.  all_fields and exclude_fields combine with no other
 * selector, fields combines with exclude_default only.  An attribute the
 * schema requires cannot be excluded.
 *
 * Everything here is pure: mo_api_view_parse takes the parameter strings and
 * reports a bad one through mo_error_set, so the unit tests drive it without
 * a server; mo_api_reply_list glues it to a request.
 *
 * Cost: these lists are the server's hottest reads.  Projection copies only
 * the containers along an excluded path and shares the rest with the store
 * (whose documents never change), and the list is written as JSON text here
 * by a writer that produces json_dumps' bytes without its loop check.
 */
#include "api_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum op { OP_EQ, OP_NEQ, OP_IN, OP_NIN, OP_GT, OP_GTE, OP_LT, OP_LTE, OP_CONT, OP_NCONT };

static const struct {
	const char *name;
	enum op op;
	int many;       /* takes one or more values (else exactly one) */
	int negated;    /* holds when the positive counterpart holds for no value */
} ops[] = {
	{ "eq", OP_EQ, 0, 0 },   { "neq", OP_NEQ, 0, 1 },   { "in", OP_IN, 1, 0 },
	{ "nin", OP_NIN, 1, 1 }, { "gt", OP_GT, 0, 0 },     { "gte", OP_GTE, 0, 0 },
	{ "lt", OP_LT, 0, 0 },   { "lte", OP_LTE, 0, 0 },   { "cont", OP_CONT, 1, 0 },
	{ "ncont", OP_NCONT, 1, 1 },
};

typedef struct {
	enum op op;
	int negated;
	char **path;    /* NULL-terminated names */
	char **values;  /* NULL-terminated */
} cond;

struct mo_api_view {
	cond *conds;
	size_t nconds;
	char **exclude; /* NULL-terminated paths, as given ("_links/terminate") */
	char ***xpaths; /* the same split at "/": NULL-terminated name vectors */
};

static void strv_free(char **v)
{
	if (!v)
		return;
	for (char **p = v; *p; p++)
		mo_free(*p);
	mo_free(v);
}

static int strv_push(char ***v, size_t *n, char *s)
{
	char **nv = mo_realloc(*v, (*n + 2) * sizeof(char *));
	if (!nv) {
		mo_free(s);
		return MO_ENOMEM;
	}
	nv[(*n)++] = s;
	nv[*n] = NULL;
	*v = nv;
	return 0;
}

static int strv_has(const char *const *v, const char *s)
{
	for (; v && *v; v++)
		if (!strcmp(*v, s))
			return 1;
	return 0;
}

void mo_api_view_free(mo_api_view *v)
{
	if (!v)
		return;
	for (size_t i = 0; i < v->nconds; i++) {
		strv_free(v->conds[i].path);
		strv_free(v->conds[i].values);
	}
	mo_free(v->conds);
	strv_free(v->exclude);
	for (char ***x = v->xpaths; x && *x; x++)
		strv_free(*x);
	mo_free(v->xpaths);
	mo_free(v);
}

/* Split an attribute path at "/" into a NULL-terminated vector, checking its
 * first name against the type's attributes. */
static int split_path(const mo_api_shape *shape, const char *what, const char *s, size_t len, char ***out)
{
	char **v = NULL;
	size_t n = 0;
	const char *p = s, *end = s + len;
	int rc;

	*out = NULL;
	if (len == 0)
		return mo_error_set(MO_EINVAL, "%s: empty attribute name", what);
	while (p <= end) {
		const char *slash = memchr(p, '/', (size_t)(end - p));
		const char *stop = slash ? slash : end;
		if (stop == p) {
			strv_free(v);
			return mo_error_set(MO_EINVAL, "%s: empty name in attribute path '%.*s'", what, (int)len, s);
		}
		if ((rc = strv_push(&v, &n, mo_strndup(p, (size_t)(stop - p)))) < 0) {
			strv_free(v);
			return rc;
		}
		p = stop + 1;
	}
	if (!strv_has(shape->attributes, v[0])) {
		rc = mo_error_set(MO_EINVAL, "%s: %s has no attribute '%s'", what, shape->type, v[0]);
		strv_free(v);
		return rc;
	}
	*out = v;
	return 0;
}

/* Parse one value at *pp (quoted or bare); leave *pp at the ',' or ')' after it. */
static int parse_value(const char **pp, const char *expr_start, char **out)
{
	const char *p = *pp;
	mo_buf b = MO_BUF_INIT;

	*out = NULL;
	if (*p == '\'') {
		for (p++;; p++) {
			if (!*p) {
				mo_buf_free(&b);
				return mo_error_set(MO_EINVAL, "filter: unterminated quoted value in '%s'", expr_start);
			}
			if (*p == '\'') {
				if (p[1] != '\'')
					break;
				p++;
			}
			if (mo_buf_put(&b, p, 1) < 0)
				goto oom;
		}
		p++;
		if (*p != ',' && *p != ')') {
			mo_buf_free(&b);
			return mo_error_set(MO_EINVAL, "filter: text after a quoted value in '%s'", expr_start);
		}
	} else {
		size_t n = strcspn(p, ",)'");
		if (p[n] == '\'') {
			mo_buf_free(&b);
			return mo_error_set(MO_EINVAL,
					    "filter: a value containing ' must be quoted ('it''s') in '%s'", expr_start);
		}
		if (n && mo_buf_put(&b, p, n) < 0)
			goto oom;
		p += n;
	}
	*out = b.ptr ? b.ptr : mo_strdup("");
	*pp = p;
	return *out ? 0 : MO_ENOMEM;
oom:
	mo_buf_free(&b);
	return MO_ENOMEM;
}

static int parse_filter(mo_api_view *v, const mo_api_shape *shape, const char *f)
{
	const char *p = f;
	int rc;

	if (!*f)
		return mo_error_set(MO_EINVAL, "filter: empty");
	for (;;) {
		const char *start = p, *comma;
		cond c = { 0 };
		size_t nv = 0, i;
		cond *nc;

		if (*p != '(')
			return mo_error_set(MO_EINVAL, "filter: expected '(' at offset %zu of '%s'", (size_t)(p - f), f);
		p++;
		comma = strchr(p, ',');
		if (!comma)
			return mo_error_set(MO_EINVAL, "filter: expected (op,attribute,value) in '%s'", start);
		for (i = 0; i < MO_ARRAY_SIZE(ops); i++)
			if (strlen(ops[i].name) == (size_t)(comma - p) && !memcmp(ops[i].name, p, (size_t)(comma - p)))
				break;
		if (i == MO_ARRAY_SIZE(ops))
			return mo_error_set(MO_EINVAL,
					    "filter: unknown operator '%.*s' (eq, neq, in, nin, gt, gte, lt, lte, "
					    "cont, ncont) in '%s'",
					    (int)(comma - p), p, start);
		c.op = ops[i].op;
		c.negated = ops[i].negated;
		p = comma + 1;
		comma = p + strcspn(p, ",)");
		if ((rc = split_path(shape, "filter", p, (size_t)(comma - p), &c.path)) < 0)
			return rc;
		p = comma;
		while (*p == ',') {
			char *val;
			p++;
			if ((rc = parse_value(&p, start, &val)) < 0 || (rc = strv_push(&c.values, &nv, val)) < 0)
				goto bad;
		}
		if (*p != ')') {
			rc = mo_error_set(MO_EINVAL, "filter: missing ')' in '%s'", start);
			goto bad;
		}
		p++;
		if (nv == 0 || (nv > 1 && !ops[i].many)) {
			rc = mo_error_set(MO_EINVAL, "filter: '%s' takes %s in '%.*s'", ops[i].name,
					  ops[i].many ? "one or more values" : "exactly one value", (int)(p - start),
					  start);
			goto bad;
		}
		if (!(nc = mo_realloc(v->conds, (v->nconds + 1) * sizeof(cond)))) {
			rc = MO_ENOMEM;
			goto bad;
		}
		v->conds = nc;
		v->conds[v->nconds++] = c;
		if (!*p)
			return 0;
		if (*p != ';')
			return mo_error_set(MO_EINVAL, "filter: expected ';' between expressions at offset %zu of '%s'",
					    (size_t)(p - f), f);
		p++;
		continue;
	bad:
		strv_free(c.path);
		strv_free(c.values);
		return rc;
	}
}

/* Parse a comma-separated attribute list of a selector. */
static int parse_list(const mo_api_shape *shape, const char *what, const char *s, char ***out, size_t *n)
{
	const char *p = s;
	int rc;

	if (!s || !*s)
		return mo_error_set(MO_EINVAL, "%s: give one or more attribute names, separated by ','", what);
	for (;;) {
		size_t len = strcspn(p, ",");
		char **path;
		if ((rc = split_path(shape, what, p, len, &path)) < 0)
			return rc;
		strv_free(path);
		if ((rc = strv_push(out, n, mo_strndup(p, len))) < 0)
			return rc;
		if (!p[len])
			return 0;
		p += len + 1;
	}
}

/* Path a is b or an ancestor of b ("_links" of "_links/self"). */
static int path_covers(const char *a, const char *b)
{
	size_t n = strlen(a);
	return !strncmp(a, b, n) && (b[n] == '\0' || b[n] == '/');
}

int mo_api_view_parse(mo_api_view **out, const mo_api_shape *shape, const mo_api_query_args *args)
{
	mo_api_view *v;
	char **fields = NULL;
	size_t nf = 0, nx = 0;
	int rc = 0;

	*out = NULL;
	if (!(v = mo_calloc(1, sizeof(*v))))
		return MO_ENOMEM;
	if (args->all_fields && (args->fields || args->exclude_fields || args->exclude_default))
		rc = mo_error_set(MO_EINVAL, "all_fields cannot be combined with fields, exclude_fields or "
					     "exclude_default");
	else if (args->exclude_fields && (args->fields || args->exclude_default))
		rc = mo_error_set(MO_EINVAL, "exclude_fields cannot be combined with fields or exclude_default");
	else if (args->exclude_default && *args->exclude_default)
		rc = mo_error_set(MO_EINVAL, "exclude_default takes no value");
	else if (args->all_fields && *args->all_fields)
		rc = mo_error_set(MO_EINVAL, "all_fields takes no value");
	if (rc < 0)
		goto done;
	if (args->filter && (rc = parse_filter(v, shape, args->filter)) < 0)
		goto done;

	if (args->exclude_fields) {
		if ((rc = parse_list(shape, "exclude_fields", args->exclude_fields, &v->exclude, &nx)) < 0)
			goto done;
		for (char **x = v->exclude; *x; x++)
			for (const char *const *r = shape->required; r && *r; r++)
				if (path_covers(*x, *r) || path_covers(*r, *x)) {
					/* the required attribute, what holds it, or a part of it */
					rc = mo_error_set(MO_EINVAL, "exclude_fields: %s requires '%s'; it cannot be "
								     "excluded",
							  shape->type, *r);
					goto done;
				}
	} else if (!args->all_fields) {
		/* exclude_default, fields, or no selector: the default exclusions,
		 * less what fields names (or is inside of what it names) */
		if (args->fields && (rc = parse_list(shape, "fields", args->fields, &fields, &nf)) < 0)
			goto done;
		for (const char *const *d = shape->excluded_default; d && *d; d++) {
			int keep = 0;
			for (char **f = fields; f && *f && !keep; f++)
				keep = path_covers(*f, *d) || path_covers(*d, *f);
			if (!keep && (rc = strv_push(&v->exclude, &nx, mo_strdup(*d))) < 0)
				goto done;
		}
	}
	/* split once here, not for every document projected */
	if (nx) {
		if (!(v->xpaths = mo_calloc(nx + 1, sizeof(char **)))) {
			rc = MO_ENOMEM;
			goto done;
		}
		for (size_t i = 0; i < nx; i++) {
			char **names = NULL;
			size_t nn = 0;
			const char *p = v->exclude[i];
			for (;;) {
				size_t len = strcspn(p, "/");
				if ((rc = strv_push(&names, &nn, mo_strndup(p, len))) < 0) {
					strv_free(names);
					goto done;
				}
				if (!p[len])
					break;
				p += len + 1;
			}
			v->xpaths[i] = names;
		}
	}
done:
	strv_free(fields);
	if (rc < 0) {
		mo_api_view_free(v);
		return rc;
	}
	*out = v;
	return 0;
}

/* ---- matching --------------------------------------------------------------------------------- */

/* The positive form of c holds for one scalar attribute value a. */
static int holds_one(const cond *c, const json_t *a)
{
	char num[64];
	const char *s;
	int is_num = json_is_number(a);

	if (json_is_string(a))
		s = json_string_value(a);
	else if (json_is_boolean(a))
		s = json_is_true(a) ? "true" : "false";
	else if (is_num)
		s = NULL;
	else
		return 0; /* null, object, array: nothing to compare */

	for (char **pv = c->values; *pv; pv++) {
		const char *val = *pv;
		int cmp;
		if (is_num) {
			char *end;
			double x = strtod(val, &end), y = json_number_value(a);
			if (end == val || *end)
				continue; /* not a number: cannot equal a number */
			cmp = y < x ? -1 : y > x;
			if (c->op == OP_CONT || c->op == OP_NCONT) {
				snprintf(num, sizeof(num), "%.17g", y);
				if (strstr(num, val))
					return 1;
				continue;
			}
		} else {
			if (c->op == OP_CONT || c->op == OP_NCONT) {
				if (strstr(s, val))
					return 1;
				continue;
			}
			cmp = strcmp(s, val);
		}
		switch (c->op) {
		case OP_EQ: case OP_NEQ: case OP_IN: case OP_NIN:
			if (cmp == 0)
				return 1;
			break;
		case OP_GT:  if (cmp > 0) return 1; break;
		case OP_GTE: if (cmp >= 0) return 1; break;
		case OP_LT:  if (cmp < 0) return 1; break;
		case OP_LTE: if (cmp <= 0) return 1; break;
		default: break;
		}
	}
	return 0;
}

/* Some value at path (from node) satisfies the positive form of c. */
static int holds_at(const cond *c, const json_t *node, char **path)
{
	size_t i;
	const json_t *e;

	if (json_is_array(node)) {
		json_array_foreach(node, i, e)
			if (holds_at(c, e, path))
				return 1;
		return 0;
	}
	if (!*path)
		return holds_one(c, node);
	if (!json_is_object(node) || !(e = json_object_get(node, *path)))
		return 0;
	return holds_at(c, e, path + 1);
}

int mo_api_view_match(const mo_api_view *v, const json_t *doc)
{
	for (size_t i = 0; i < v->nconds; i++) {
		int h = holds_at(&v->conds[i], doc, v->conds[i].path);
		if (v->conds[i].negated ? h : !h)
			return 0;
	}
	return 1;
}

/* ---- projection ------------------------------------------------------------------------------- */

/* Exclusion path x applies below a node reached along route: x has more
 * than depth names and agrees with route on the first depth of them. */
static int applies(char **x, char **route, size_t depth)
{
	for (size_t k = 0; k < depth; k++)
		if (!x[k] || strcmp(x[k], route[k]))
			return 0;
	return x[depth] != NULL;
}

/* node without what the exclusion paths that apply at depth (along route)
 * remove from it: a new reference to node itself when they remove nothing
 * there, else a new container (a shallow copy) holding node's unchanged
 * members themselves and a pruned copy of each member a path goes through.
 * An array is pruned element by element at the same depth, so a path that
 * crosses one reaches every element.  NULL when out of memory. */
static json_t *prune(json_t *node, char ***paths, char **route, size_t depth)
{
	json_t *out = NULL, *e, *ne;
	size_t i;

	if (json_is_array(node)) {
		json_array_foreach(node, i, e) {
			if (!(ne = prune(e, paths, route, depth)))
				goto oom;
			if (ne != e && !out) {
				if (!(out = json_array())) {
					json_decref(ne);
					goto oom;
				}
				for (size_t k = 0; k < i; k++)
					json_array_append(out, json_array_get(node, k));
			}
			if (out)
				json_array_append_new(out, ne);
			else
				json_decref(ne);
		}
		return out ? out : json_incref(node);
	}
	if (!json_is_object(node))
		return json_incref(node);
	for (char ***p = paths; *p; p++) {
		char **x = *p, ***q;
		const char *name;
		json_t *child;
		int whole = 0;

		if (!applies(x, route, depth))
			continue;
		name = x[depth];
		/* the first path through this name handles every path through it */
		for (q = paths; q < p && !(applies(*q, route, depth) && !strcmp((*q)[depth], name)); q++)
			;
		if (q < p || !(child = json_object_get(node, name)))
			continue;
		for (q = p; *q && !whole; q++)
			whole = applies(*q, route, depth) && !strcmp((*q)[depth], name) && !(*q)[depth + 1];
		if (whole) {
			if (!out && !(out = json_copy(node)))
				return NULL;
			json_object_del(out, name);
			continue;
		}
		if (!(ne = prune(child, paths, x, depth + 1)))
			goto oom;
		if (ne == child) {
			json_decref(ne);
			continue;
		}
		if (!out && !(out = json_copy(node))) {
			json_decref(ne);
			return NULL;
		}
		json_object_set_new(out, name, ne);
	}
	return out ? out : json_incref(node);
oom:
	json_decref(out);
	return NULL;
}

json_t *mo_api_view_project(const mo_api_view *v, const json_t *doc)
{
	if (!v->xpaths)
		return json_incref((json_t *)doc);
	return prune((json_t *)doc, v->xpaths, NULL, 0);
}

/* ---- glue ------------------------------------------------------------------------------------- */

int mo_api_view_from_request(mo_api_view **out, const mo_api_shape *shape, mo_api_req *q, mo_api_reply *r)
{
	mo_api_query_args args;
	int rc;

	/* a parameter given without a value reads as "" (present), an absent one as NULL */
	args.filter = mo_api_query_flag(q, "filter");
	args.fields = mo_api_query_flag(q, "fields");
	args.exclude_fields = mo_api_query_flag(q, "exclude_fields");
	args.all_fields = mo_api_query_flag(q, "all_fields");
	args.exclude_default = mo_api_query_flag(q, "exclude_default");
	if ((rc = mo_api_view_parse(out, shape, &args)) == MO_ENOMEM)
		mo_api_problem(r, 500, "out of memory");
	else if (rc < 0)
		mo_api_problem(r, 400, "%s", mo_error_last()->message);
	return rc;
}

/* Append the n bytes at s to b as a JSON string, escaped as jansson
 * escapes it: ", \ and the control characters; UTF-8 as is. */
static int write_str(mo_buf *b, const char *s, size_t n)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t i, start = 0;
	int rc = mo_buf_put(b, "\"", 1);

	for (i = 0; rc == 0 && i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		const char *esc = NULL;
		if (c >= 0x20 && c != '"' && c != '\\')
			continue;
		switch (c) {
		case '"': esc = "\\\""; break;
		case '\\': esc = "\\\\"; break;
		case '\b': esc = "\\b"; break;
		case '\f': esc = "\\f"; break;
		case '\n': esc = "\\n"; break;
		case '\r': esc = "\\r"; break;
		case '\t': esc = "\\t"; break;
		default: break;
		}
		if ((rc = mo_buf_put(b, s + start, i - start)) < 0)
			break;
		if (esc) {
			rc = mo_buf_put(b, esc, 2);
		} else {
			char u[6] = { '\\', 'u', '0', '0', hex[c >> 4], hex[c & 15] };
			rc = mo_buf_put(b, u, sizeof(u));
		}
		start = i + 1;
	}
	if (rc == 0)
		rc = mo_buf_put(b, s + start, n - start);
	return rc ? rc : mo_buf_put(b, "\"", 1);
}

/* Append j to b as json_dumps(j, JSON_COMPACT) writes it (members in their
 * order, integers in full, reals through jansson itself), several times
 * faster: json_dumps checks every object and array for a reference loop
 * through a table keyed by its address, and the documents of the store are
 * trees.  0 or MO_ENOMEM. */
static int write_json(mo_buf *b, const json_t *j)
{
	const char *k;
	json_t *v;
	size_t i, klen;
	int rc = 0;
	char tmp[32];

	switch (json_typeof(j)) {
	case JSON_OBJECT:
		rc = mo_buf_put(b, "{", 1);
		i = 0;
		json_object_keylen_foreach((json_t *)j, k, klen, v) {
			if (rc == 0 && i++)
				rc = mo_buf_put(b, ",", 1);
			if (rc == 0)
				rc = write_str(b, k, klen);
			if (rc == 0)
				rc = mo_buf_put(b, ":", 1);
			if (rc == 0)
				rc = write_json(b, v);
		}
		return rc ? rc : mo_buf_put(b, "}", 1);
	case JSON_ARRAY:
		rc = mo_buf_put(b, "[", 1);
		json_array_foreach(j, i, v) {
			if (rc == 0 && i)
				rc = mo_buf_put(b, ",", 1);
			if (rc == 0)
				rc = write_json(b, v);
		}
		return rc ? rc : mo_buf_put(b, "]", 1);
	case JSON_STRING:
		return write_str(b, json_string_value(j), json_string_length(j));
	case JSON_INTEGER:
		return mo_buf_put(b, tmp, (size_t)snprintf(tmp, sizeof(tmp), "%" JSON_INTEGER_FORMAT,
							    json_integer_value(j)));
	case JSON_TRUE:
		return mo_buf_put(b, "true", 4);
	case JSON_FALSE:
		return mo_buf_put(b, "false", 5);
	case JSON_NULL:
		return mo_buf_put(b, "null", 4);
	default: {
		/* a real: jansson's own formatting (precision, ".0") */
		char *text = json_dumps(j, JSON_ENCODE_ANY | JSON_COMPACT);
		rc = text ? mo_buf_puts(b, text) : MO_ENOMEM;
		mo_free(text); /* jansson allocates with mo_malloc (engine.c) */
		return rc;
	}
	}
}

void mo_api_reply_list(mo_api_req *q, mo_api_reply *r, const mo_api_shape *shape, json_t *docs)
{
	mo_api_view *v;
	mo_buf b = MO_BUF_INIT;
	json_t *doc;
	size_t i, n = 0;
	int rc;

	if (mo_api_view_from_request(&v, shape, q, r) < 0) {
		json_decref(docs);
		return;
	}
	/* written here rather than handed to the server as a document: the
	 * hottest reads are these lists (docs/benchmarks.md) */
	rc = mo_buf_put(&b, "[", 1);
	json_array_foreach(docs, i, doc) {
		json_t *p;
		if (rc < 0)
			break;
		if (!mo_api_view_match(v, doc))
			continue;
		if (!(p = mo_api_view_project(v, doc))) {
			rc = MO_ENOMEM;
			break;
		}
		if (n++)
			rc = mo_buf_put(&b, ",", 1);
		if (rc == 0)
			rc = write_json(&b, p);
		json_decref(p);
	}
	if (rc == 0)
		rc = mo_buf_put(&b, "]", 1);
	json_decref(docs);
	mo_api_view_free(v);
	if (rc < 0) {
		mo_buf_free(&b);
		mo_api_problem(r, 500, "out of memory");
		return;
	}
	json_decref(r->json);
	mo_free(r->text);
	r->json = NULL;
	r->text = b.ptr;
	r->text_len = b.len;
	r->ctype = "application/json";
	r->status = 200;
}
