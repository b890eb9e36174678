/*
 * json.c - Lua <-> JSON conversion, deferred references, and the ctx.json
 * driver (encode, decode, null, array).  See lj.h for the value model.
 */
#include "lj.h"
#include "common.h"
#include "drivers.h"

#include <lauxlib.h>
#include <math.h>
#include <string.h>

#define REF_MT "mecorch.ref"
#define ARRAY_MT "mecorch.array"
#define MAX_DEPTH 64

/* ---- markers ---------------------------------------------------------- */

json_t *mo_ref_new(const char *addr, json_t *path)
{
	json_t *r = json_object();
	if (!r) {
		json_decref(path);
		return NULL;
	}
	json_object_set_new(r, "$ref", json_string(addr));
	json_object_set_new(r, "path", path ? path : json_array());
	return r;
}

int mo_ref_is(const json_t *v)
{
	return json_is_object(v) && json_is_string(json_object_get(v, "$ref"));
}

int mo_tmpl_is(const json_t *v)
{
	return json_is_object(v) && json_is_array(json_object_get(v, "$tmpl"));
}

int mo_unknown_is(const json_t *v)
{
	return json_is_object(v) && json_object_get(v, "$unknown") != NULL;
}

int mo_json_has_deferred(const json_t *v)
{
	size_t i;
	const char *k;
	json_t *x;
	if (mo_ref_is(v) || mo_tmpl_is(v) || mo_unknown_is(v))
		return 1;
	if (json_is_object(v)) {
		json_object_foreach((json_t *)v, k, x)
			if (mo_json_has_deferred(x))
				return 1;
	} else if (json_is_array(v)) {
		json_array_foreach(v, i, x)
			if (mo_json_has_deferred(x))
				return 1;
	}
	return 0;
}

char *mo_ref_text(const json_t *ref)
{
	mo_buf b = MO_BUF_INIT;
	json_t *path = json_object_get(ref, "path"), *p;
	size_t i;
	mo_buf_puts(&b, json_string_value(json_object_get(ref, "$ref")));
	json_array_foreach(path, i, p) {
		if (json_is_integer(p))
			mo_buf_printf(&b, "[%lld]", (long long)json_integer_value(p));
		else
			mo_buf_printf(&b, ".%s", json_string_value(p));
	}
	return b.ptr;
}

/* ---- references in Lua ------------------------------------------------ */

typedef struct {
	json_t *marker;
} lref;

void mo_lj_push_ref(lua_State *L, const json_t *marker)
{
	lref *r = lua_newuserdatauv(L, sizeof(*r), 0);
	r->marker = NULL;
	luaL_setmetatable(L, REF_MT);
	r->marker = json_deep_copy(marker);
}

const json_t *mo_lj_toref(lua_State *L, int idx)
{
	lref *r = luaL_testudata(L, idx, REF_MT);
	return r ? r->marker : NULL;
}

static int ref_gc(lua_State *L)
{
	lref *r = luaL_checkudata(L, 1, REF_MT);
	json_decref(r->marker);
	r->marker = NULL;
	return 0;
}

static int ref_tostring(lua_State *L)
{
	const json_t *m = mo_lj_toref(L, 1);
	if (mo_ref_is(m)) {
		char *t = mo_ref_text(m);
		lua_pushfstring(L, "${%s}", t ? t : "?");
		mo_free(t);
	} else {
		lua_pushstring(L, "${template}");
	}
	return 1;
}

/* Stack: ref, key -> new ref with key appended to the path. */
static int ref_index(lua_State *L)
{
	const json_t *m = mo_lj_toref(L, 1);
	json_t *n, *path;
	if (!mo_ref_is(m))
		return luaL_error(L, "cannot index a string template reference");
	if (lua_type(L, 2) != LUA_TSTRING && !lua_isinteger(L, 2))
		return luaL_error(L, "a reference can only be indexed by a name or an integer");
	n = json_deep_copy(m);
	path = json_object_get(n, "path");
	if (lua_isinteger(L, 2))
		json_array_append_new(path, json_integer(lua_tointeger(L, 2) - 1));
	else
		json_array_append_new(path, json_string(lua_tostring(L, 2)));
	mo_lj_push_ref(L, n);
	json_decref(n);
	return 1;
}

/* Append the template parts of the value at idx to parts. */
static int tmpl_part(lua_State *L, int idx, json_t *parts)
{
	const json_t *m = mo_lj_toref(L, idx);
	if (m && mo_tmpl_is(m)) {
		json_array_extend(parts, json_object_get(m, "$tmpl"));
	} else if (m) {
		json_array_append_new(parts, json_deep_copy(m));
	} else if (lua_type(L, idx) == LUA_TSTRING) {
		json_array_append_new(parts, json_string(lua_tostring(L, idx)));
	} else if (lua_type(L, idx) == LUA_TNUMBER) {
		lua_pushvalue(L, idx);
		json_array_append_new(parts, json_string(lua_tostring(L, -1)));
		lua_pop(L, 1);
	} else {
		return luaL_error(L, "cannot concatenate a %s value with a reference",
				  luaL_typename(L, idx));
	}
	return 0;
}

static int ref_concat(lua_State *L)
{
	json_t *t = json_object(), *parts = json_array();
	json_object_set_new(t, "$tmpl", parts);
	tmpl_part(L, 1, parts);
	tmpl_part(L, 2, parts);
	mo_lj_push_ref(L, t);
	json_decref(t);
	return 1;
}

static int ref_unknown_op(lua_State *L)
{
	int i = mo_lj_toref(L, 1) ? 1 : 2;
	lua_pushcfunction(L, ref_tostring);
	lua_pushvalue(L, i);
	lua_call(L, 1, 1);
	return luaL_error(L, "%s is known only after apply: pass it whole as a property or "
			  "join it into a string with '..'", lua_tostring(L, -1));
}

static const luaL_Reg ref_meta[] = {
	{ "__gc", ref_gc },
	{ "__tostring", ref_tostring },
	{ "__index", ref_index },
	{ "__concat", ref_concat },
	{ "__add", ref_unknown_op }, { "__sub", ref_unknown_op },
	{ "__mul", ref_unknown_op }, { "__div", ref_unknown_op },
	{ "__mod", ref_unknown_op }, { "__pow", ref_unknown_op },
	{ "__unm", ref_unknown_op }, { "__idiv", ref_unknown_op },
	{ "__lt", ref_unknown_op }, { "__le", ref_unknown_op },
	{ "__len", ref_unknown_op }, { "__call", ref_unknown_op },
	{ NULL, NULL },
};

void mo_lj_init(lua_State *L)
{
	if (luaL_newmetatable(L, REF_MT))
		luaL_setfuncs(L, ref_meta, 0);
	lua_pop(L, 1);
	if (luaL_newmetatable(L, ARRAY_MT)) {
		lua_pushstring(L, "array");
		lua_setfield(L, -2, "__jsontype");
	}
	lua_pop(L, 1);
}

/* ---- Lua -> JSON ------------------------------------------------------ */

static int fail(mo_buf *path, const char *fmt, const char *arg)
{
	char msg[256];
	snprintf(msg, sizeof(msg), fmt, arg);
	return mo_error_set(MO_EINVAL, "%s: %s", path->ptr ? path->ptr : "value", msg);
}

static int to_json(lua_State *L, int idx, mo_buf *path, int depth, int raw, json_t **out);

/* A hashed sensitive value ({"$sensitive": "hmac-sha256:..."}) handed to a
 * handler comes back unchanged: it holds no secret, so it needs no escape. */
static int is_sensitive_marker(const json_t *obj, const char *key, const json_t *v)
{
	return !strcmp(key, "$sensitive") && json_object_size(obj) == 0 && json_is_string(v) &&
	       !strncmp(json_string_value(v), "hmac-sha256:", 12);
}

static int table_is_array(lua_State *L, int idx, lua_Integer *n_out)
{
	lua_Integer n = 0, max = 0;
	int forced = -1;
	if (lua_getmetatable(L, idx)) {
		if (lua_getfield(L, -1, "__jsontype") == LUA_TSTRING)
			forced = strcmp(lua_tostring(L, -1), "array") == 0;
		lua_pop(L, 2);
	}
	lua_pushnil(L);
	while (lua_next(L, idx)) {
		lua_pop(L, 1);
		if (lua_isinteger(L, -1) && lua_tointeger(L, -1) >= 1) {
			n++;
			if (lua_tointeger(L, -1) > max)
				max = lua_tointeger(L, -1);
		} else {
			lua_pop(L, 1);
			*n_out = -1; /* has non-integer keys */
			return forced == 1 ? -2 : 0;
		}
	}
	*n_out = n;
	if (forced >= 0)
		return forced && n == max ? 1 : (forced ? -3 : 0);
	return n > 0 && n == max;
}

static int table_to_json(lua_State *L, int idx, mo_buf *path, int depth, int raw, json_t **out)
{
	size_t mark = path->len;
	lua_Integer n;
	int arr = table_is_array(L, idx, &n), rc = 0;
	json_t *res = NULL, *v;
	if (arr < 0)
		return fail(path, "%s", "table marked as an array has non-sequence keys");
	if (arr) {
		res = json_array();
		for (lua_Integer i = 1; i <= n; i++) {
			lua_geti(L, idx, i);
			mo_buf_printf(path, "[%lld]", (long long)i);
			rc = to_json(L, lua_gettop(L), path, depth + 1, raw, &v);
			lua_pop(L, 1);
			path->len = mark;
			path->ptr[mark] = '\0';
			if (rc < 0)
				goto done;
			json_array_append_new(res, v);
		}
	} else {
		if (n > 0)
			return fail(path, "%s", "table mixes list entries and named fields");
		res = json_object();
		lua_pushnil(L);
		while (lua_next(L, idx)) {
			if (lua_type(L, -2) != LUA_TSTRING) {
				rc = fail(path, "table key of type %s (only string keys become JSON)",
					  luaL_typename(L, -2));
				lua_pop(L, 2);
				goto done;
			}
			mo_buf_printf(path, "%s%s", path->len ? "." : "", lua_tostring(L, -2));
			rc = to_json(L, lua_gettop(L), path, depth + 1, raw, &v);
			path->len = mark;
			path->ptr[mark] = '\0';
			if (rc < 0) {
				lua_pop(L, 2);
				goto done;
			}
			if (!raw && lua_tostring(L, -2)[0] == '$' && !is_sensitive_marker(res, lua_tostring(L, -2), v)) {
				/* "$..." keys are reserved for markers: data keeps its
				 * own as "$$...", so a plan or an API cannot forge one */
				char *esc = mo_sprintf("$%s", lua_tostring(L, -2));
				json_object_set_new(res, esc ? esc : "$", v);
				mo_free(esc);
			} else {
				json_object_set_new(res, lua_tostring(L, -2), v);
			}
			lua_pop(L, 1);
		}
	}
done:
	if (rc < 0) {
		json_decref(res);
		return rc;
	}
	*out = res;
	return 0;
}

static int to_json(lua_State *L, int idx, mo_buf *path, int depth, int raw, json_t **out)
{
	const json_t *m;
	if (depth > MAX_DEPTH)
		return fail(path, "%s", "nested too deeply (a table that contains itself?)");
	switch (lua_type(L, idx)) {
	case LUA_TNIL:
		*out = json_null();
		return 0;
	case LUA_TBOOLEAN:
		*out = json_boolean(lua_toboolean(L, idx));
		return 0;
	case LUA_TNUMBER:
		if (lua_isinteger(L, idx)) {
			*out = json_integer(lua_tointeger(L, idx));
		} else {
			double d = lua_tonumber(L, idx);
			if (!isfinite(d))
				return fail(path, "%s", "NaN or infinity is not JSON-serialisable");
			*out = json_real(d);
		}
		return 0;
	case LUA_TSTRING: {
		size_t len;
		const char *s = lua_tolstring(L, idx, &len);
		*out = json_stringn(s, len);
		if (!*out)
			return fail(path, "%s", "string is not valid UTF-8");
		return 0;
	}
	case LUA_TTABLE:
		return table_to_json(L, idx, path, depth, raw, out);
	case LUA_TLIGHTUSERDATA:
		if (lua_touserdata(L, idx) == NULL) {
			*out = json_null();
			return 0;
		}
		break;
	case LUA_TUSERDATA:
		if ((m = mo_lj_toref(L, idx))) {
			*out = json_deep_copy(m);
			return 0;
		}
		break;
	}
	return fail(path, "a %s value is not JSON-serialisable", luaL_typename(L, idx));
}

static int lj_to_json(lua_State *L, int idx, const char *what, int raw, json_t **out)
{
	mo_buf path = MO_BUF_INIT;
	int rc;
	idx = lua_absindex(L, idx);
	if (mo_buf_puts(&path, what ? what : "") < 0)
		return MO_ENOMEM;
	if (!lua_checkstack(L, MAX_DEPTH * 3 + 10)) {
		mo_buf_free(&path);
		return mo_error_set(MO_ENOMEM, "Lua stack overflow");
	}
	rc = to_json(L, idx, &path, 0, raw, out);
	mo_buf_free(&path);
	return rc;
}

int mo_lj_to_json(lua_State *L, int idx, const char *what, json_t **out)
{
	return lj_to_json(L, idx, what, 0, out);
}

int mo_lj_to_json_raw(lua_State *L, int idx, const char *what, json_t **out)
{
	return lj_to_json(L, idx, what, 1, out);
}

json_t *mo_lj_escape(const json_t *v)
{
	size_t i;
	const char *k;
	json_t *x, *res;
	if (json_is_object(v)) {
		res = json_object();
		json_object_foreach((json_t *)v, k, x) {
			char *esc = k[0] == '$' ? mo_sprintf("$%s", k) : NULL;
			json_object_set_new(res, esc ? esc : k, mo_lj_escape(x));
			mo_free(esc);
		}
		return res;
	}
	if (json_is_array(v)) {
		res = json_array();
		json_array_foreach(v, i, x) json_array_append_new(res, mo_lj_escape(x));
		return res;
	}
	return json_incref((json_t *)v);
}

/* ---- JSON -> Lua ------------------------------------------------------ */

static void push(lua_State *L, const json_t *v, int raw)
{
	size_t i;
	const char *k;
	json_t *x;
	luaL_checkstack(L, 4, "JSON too deeply nested");
	switch (json_typeof(v)) {
	case JSON_OBJECT:
		if (!raw && (mo_ref_is(v) || mo_tmpl_is(v) || mo_unknown_is(v))) {
			mo_lj_push_ref(L, v);
			return;
		}
		lua_createtable(L, 0, (int)json_object_size(v));
		json_object_foreach((json_t *)v, k, x) {
			push(L, x, raw);
			/* data's own "$..." keys are kept as "$$..." (see to_json) */
			lua_setfield(L, -2, !raw && k[0] == '$' && k[1] == '$' ? k + 1 : k);
		}
		return;
	case JSON_ARRAY:
		lua_createtable(L, (int)json_array_size(v), 0);
		json_array_foreach(v, i, x) {
			push(L, x, raw);
			lua_rawseti(L, -2, (lua_Integer)i + 1);
		}
		luaL_setmetatable(L, ARRAY_MT);
		return;
	case JSON_STRING:
		lua_pushlstring(L, json_string_value(v), json_string_length(v));
		return;
	case JSON_INTEGER:
		lua_pushinteger(L, (lua_Integer)json_integer_value(v));
		return;
	case JSON_REAL:
		lua_pushnumber(L, json_real_value(v));
		return;
	case JSON_TRUE:
		lua_pushboolean(L, 1);
		return;
	case JSON_FALSE:
		lua_pushboolean(L, 0);
		return;
	case JSON_NULL:
	default:
		lua_pushlightuserdata(L, NULL);
		return;
	}
}

void mo_lj_push(lua_State *L, const json_t *v)
{
	push(L, v, 0);
}

void mo_lj_push_raw(lua_State *L, const json_t *v)
{
	push(L, v, 1);
}

/* ---- the ctx.json driver ---------------------------------------------- */

/* json.encode(value) -> string */
static int lj_encode(lua_State *L)
{
	json_t *v;
	char *s;
	luaL_checkany(L, 1);
	if (mo_lj_to_json_raw(L, 1, "value", &v) < 0)
		return luaL_error(L, "json.encode: %s", mo_error_last()->message);
	s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY | JSON_SORT_KEYS);
	json_decref(v);
	if (!s)
		return luaL_error(L, "json.encode: out of memory");
	lua_pushstring(L, s);
	free(s);
	return 1;
}

/* json.decode(string) -> value | nil, error */
static int lj_decode(lua_State *L)
{
	size_t len;
	const char *s = luaL_checklstring(L, 1, &len);
	json_error_t err;
	json_t *v = json_loadb(s, len, JSON_DECODE_ANY, &err);
	if (!v) {
		lua_pushnil(L);
		lua_pushfstring(L, "invalid JSON at line %d column %d: %s", err.line, err.column, err.text);
		return 2;
	}
	mo_lj_push_raw(L, v);
	json_decref(v);
	return 1;
}

/* json.array([t]) -> t marked as a JSON array (so {} encodes as []) */
static int lj_array(lua_State *L)
{
	if (lua_isnoneornil(L, 1))
		lua_newtable(L);
	luaL_checktype(L, 1, LUA_TTABLE);
	lua_settop(L, 1);
	luaL_setmetatable(L, ARRAY_MT);
	return 1;
}

int mo_open_json(lua_State *L)
{
	static const luaL_Reg fns[] = {
		{ "encode", lj_encode },
		{ "decode", lj_decode },
		{ "array", lj_array },
		{ NULL, NULL },
	};
	mo_lj_init(L);
	luaL_newlib(L, fns);
	lua_pushlightuserdata(L, NULL);
	lua_setfield(L, -2, "null");
	return 1;
}
