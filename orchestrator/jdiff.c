/*
 * jdiff.c - structural equality and leaf-level differences of JSON values.
 *
 * Equality differs from jansson's json_equal() in one way that matters to
 * the planner: numbers compare by value, so the integer 1 equals the real
 * 1.0 (a module may return either for the same property).  The comparison
 * is exact: an integer equals a real only when the real is integral and
 * converts to that very integer, so 2^53 + 1 does not equal 2^53.0.
 *
 * Differences are reported with a path per entry, written the way a user
 * would address the value: object keys joined with ".", array indices as
 * "[i]", and keys that are not simple identifiers quoted as ["a.b"].
 * A simple identifier is [A-Za-z_][A-Za-z0-9_-]* (dashes are common in
 * resource properties and cannot be confused with the path syntax).
 * Entries come in traversal order, object keys sorted bytewise, so a diff
 * is the same on every run.
 */
#include "jdiff.h"
#include "common.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

_Static_assert(sizeof(json_int_t) == 8, "json_int_t is expected to be 64 bits");

/* Exact comparison of an integer and a real. */
static int int_equals_real(json_int_t i, double d)
{
	/* The range check excludes NaN and values json_int_t cannot hold, so
	 * the conversion below is defined; converting back tells whether d
	 * had a fractional part. */
	if (!(d >= -0x1p63 && d < 0x1p63))
		return 0;
	if ((double)(json_int_t)d != d)
		return 0;
	return (json_int_t)d == i;
}

static int number_equal(const json_t *a, const json_t *b)
{
	if (json_is_integer(a) && json_is_integer(b))
		return json_integer_value(a) == json_integer_value(b);
	if (json_is_real(a) && json_is_real(b))
		return json_real_value(a) == json_real_value(b);
	if (json_is_integer(a))
		return int_equals_real(json_integer_value(a), json_real_value(b));
	return int_equals_real(json_integer_value(b), json_real_value(a));
}

int mo_json_equal(const json_t *a, const json_t *b)
{
	const char *key;
	json_t *v;
	size_t n;

	if (a == b)
		return 1;
	if (!a || !b)
		return 0;
	if (json_is_number(a) && json_is_number(b))
		return number_equal(a, b);
	if (json_typeof(a) != json_typeof(b))
		return 0;
	switch (json_typeof(a)) {
	case JSON_OBJECT:
		if (json_object_size(a) != json_object_size(b))
			return 0;
		/* jansson's iterators take a non-const object; nothing is
		 * modified here or in key_union(). */
		json_object_foreach((json_t *)a, key, v) {
			if (!mo_json_equal(v, json_object_get(b, key)))
				return 0;
		}
		return 1;
	case JSON_ARRAY:
		if (json_array_size(a) != json_array_size(b))
			return 0;
		for (size_t i = 0; i < json_array_size(a); i++)
			if (!mo_json_equal(json_array_get(a, i), json_array_get(b, i)))
				return 0;
		return 1;
	case JSON_STRING:
		n = json_string_length(a);
		return n == json_string_length(b) &&
		       memcmp(json_string_value(a), json_string_value(b), n) == 0;
	default:
		return 1; /* true, false, null: the type is the value */
	}
}

static int cmp_keys(const void *x, const void *y)
{
	return strcmp(*(const char *const *)x, *(const char *const *)y);
}

/* The sorted union of the keys of objects a and b (either may be NULL) in
 * *out (caller frees with mo_free; NULL when there are none).  The strings
 * belong to the objects. */
static int key_union(const json_t *a, const json_t *b, const char ***out, size_t *n)
{
	size_t na = json_object_size(a), nb = json_object_size(b), k = 0, w;
	const char **keys, *key;
	json_t *v;

	*out = NULL;
	*n = 0;
	if (!na && !nb)
		return 0;
	if (!(keys = mo_malloc((na + nb) * sizeof(*keys))))
		return mo_error_set(MO_ENOMEM, "jdiff: out of memory");
	if (a)
		json_object_foreach((json_t *)a, key, v)
			keys[k++] = key;
	if (b)
		json_object_foreach((json_t *)b, key, v)
			keys[k++] = key;
	qsort(keys, k, sizeof(*keys), cmp_keys);
	w = 0;
	for (size_t r = 0; r < k; r++)
		if (!w || strcmp(keys[w - 1], keys[r]) != 0)
			keys[w++] = keys[r];
	*out = keys;
	*n = w;
	return 0;
}

typedef struct {
	mo_jdiff_entry *v;
	size_t n, cap;
	mo_buf path; /* the path of the value being compared */
} jdiff_ctx;

static int is_identifier(const char *s)
{
	if (!((*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z') || *s == '_'))
		return 0;
	for (s++; *s; s++)
		if (!((*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z') ||
		      (*s >= '0' && *s <= '9') || *s == '_' || *s == '-'))
			return 0;
	return 1;
}

/* Append an object key to path: ".key", or "key" at the root, or ["key"]
 * with '"', '\\' and control characters escaped as in JSON. */
static int path_push_key(mo_buf *path, const char *key)
{
	if (is_identifier(key)) {
		if (path->len && mo_buf_put(path, ".", 1) < 0)
			return MO_ENOMEM;
		return mo_buf_puts(path, key);
	}
	if (mo_buf_put(path, "[\"", 2) < 0)
		return MO_ENOMEM;
	for (const unsigned char *p = (const unsigned char *)key; *p; p++) {
		int rc;
		if (*p == '"' || *p == '\\')
			rc = mo_buf_printf(path, "\\%c", *p);
		else if (*p == '\n')
			rc = mo_buf_puts(path, "\\n");
		else if (*p == '\t')
			rc = mo_buf_puts(path, "\\t");
		else if (*p < 0x20)
			rc = mo_buf_printf(path, "\\u%04x", *p);
		else
			rc = mo_buf_put(path, p, 1);
		if (rc < 0)
			return MO_ENOMEM;
	}
	return mo_buf_put(path, "\"]", 2);
}

static void path_pop(mo_buf *path, size_t mark)
{
	path->len = mark;
	if (path->ptr)
		path->ptr[mark] = '\0';
}

static int add_entry(jdiff_ctx *c, const json_t *before, const json_t *after)
{
	mo_jdiff_entry *e;
	char *path;

	if (c->n == c->cap) {
		size_t cap = c->cap ? 2 * c->cap : 8;
		mo_jdiff_entry *v;
		if (cap > SIZE_MAX / sizeof(*v) || !(v = mo_realloc(c->v, cap * sizeof(*v))))
			return mo_error_set(MO_ENOMEM, "jdiff: out of memory");
		c->v = v;
		c->cap = cap;
	}
	if (!(path = mo_strndup(c->path.ptr ? c->path.ptr : "", c->path.len)))
		return mo_error_set(MO_ENOMEM, "jdiff: out of memory");
	e = &c->v[c->n++];
	e->path = path;
	/* jansson's reference counting needs a non-const pointer. */
	e->before = before ? json_incref((json_t *)before) : NULL;
	e->after = after ? json_incref((json_t *)after) : NULL;
	return 0;
}

static int diff_value(jdiff_ctx *c, const json_t *a, const json_t *b);

static int diff_object(jdiff_ctx *c, const json_t *a, const json_t *b)
{
	const char **keys;
	size_t nkeys, mark = c->path.len;
	int rc;

	if ((rc = key_union(a, b, &keys, &nkeys)) < 0)
		return rc;
	for (size_t i = 0; i < nkeys && rc == 0; i++) {
		if ((rc = path_push_key(&c->path, keys[i])) < 0)
			break;
		rc = diff_value(c, json_object_get(a, keys[i]), json_object_get(b, keys[i]));
		path_pop(&c->path, mark);
	}
	mo_free(keys);
	return rc;
}

static int diff_array(jdiff_ctx *c, const json_t *a, const json_t *b)
{
	size_t na = json_array_size(a), nb = json_array_size(b), mark = c->path.len;
	int rc = 0;

	for (size_t i = 0; i < (na > nb ? na : nb) && rc == 0; i++) {
		if ((rc = mo_buf_printf(&c->path, "[%zu]", i)) < 0)
			break;
		rc = diff_value(c, json_array_get(a, i), json_array_get(b, i));
		path_pop(&c->path, mark);
	}
	return rc;
}

/* Containers of the same kind are descended; anything else that differs
 * (a scalar change, a kind change, an addition or a removal) is one entry
 * at the current path. */
static int diff_value(jdiff_ctx *c, const json_t *a, const json_t *b)
{
	if (json_is_object(a) && json_is_object(b))
		return diff_object(c, a, b);
	if (json_is_array(a) && json_is_array(b))
		return diff_array(c, a, b);
	if (mo_json_equal(a, b))
		return 0;
	return add_entry(c, a, b);
}

int mo_jdiff(const json_t *before, const json_t *after, mo_jdiff_entry **out, size_t *n)
{
	jdiff_ctx c = { NULL, 0, 0, MO_BUF_INIT };
	int rc;

	if (!out || !n)
		return mo_error_set(MO_EINVAL, "jdiff: no output pointer");
	rc = diff_value(&c, before, after);
	mo_buf_free(&c.path);
	if (rc < 0) {
		mo_jdiff_free(c.v, c.n);
		return rc;
	}
	*out = c.v;
	*n = c.n;
	return 0;
}

void mo_jdiff_free(mo_jdiff_entry *e, size_t n)
{
	if (!e)
		return;
	for (size_t i = 0; i < n; i++) {
		mo_free(e[i].path);
		json_decref(e[i].before);
		json_decref(e[i].after);
	}
	mo_free(e);
}

/* Returns NULL on allocation failure, with the error set. */
json_t *mo_jdiff_top_keys(const json_t *before, const json_t *after)
{
	json_t *arr = json_array();
	const char **keys = NULL;
	size_t nkeys;

	if (!arr)
		goto oom;
	if (!json_is_object(before) || !json_is_object(after)) {
		if (!mo_json_equal(before, after) &&
		    json_array_append_new(arr, json_string("")) < 0)
			goto oom;
		return arr;
	}
	if (key_union(before, after, &keys, &nkeys) < 0)
		goto oom;
	for (size_t i = 0; i < nkeys; i++) {
		if (mo_json_equal(json_object_get(before, keys[i]),
				  json_object_get(after, keys[i])))
			continue;
		/* Keys are already valid UTF-8: they come from JSON objects. */
		if (json_array_append_new(arr, json_string_nocheck(keys[i])) < 0)
			goto oom;
	}
	mo_free(keys);
	return arr;
oom:
	mo_free(keys);
	json_decref(arr);
	mo_error_set(MO_ENOMEM, "jdiff: out of memory");
	return NULL;
}
