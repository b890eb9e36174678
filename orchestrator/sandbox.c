/*
 * sandbox.c - Lua 5.4 states for untrusted code, and the tasks that run in
 * them under an instruction budget and a memory cap.
 *
 * A sandbox owns one lua_State made with lua_newstate() and an allocator
 * whose userdata is the sandbox: every byte goes through mo_realloc/mo_free
 * and is counted against the state's cap, and, while a task is being
 * resumed (sb->current), its net growth is counted against the task's cap.
 * A refused allocation makes Lua raise "not enough memory"; the task
 * remembers that a cap was hit so mo_task_resume() reports MO_ELIMIT.
 *
 * The globals are a fresh table holding only what is safe: base functions
 * (load forced to text mode, setmetatable refusing __gc, collectgarbage
 * limited, print routed to the runtime's logger), and copies of string
 * (without dump), table, math and utf8, plus require() confined to the
 * module tree.  The registry's LUA_RIDX_GLOBALS is replaced by that table,
 * so every chunk loaded in the state sees it as _ENV.
 *
 * A task is a thread anchored in the registry whose extra space points back
 * at its mo_task.  A count hook charges instructions; once the budget is
 * spent it yields the thread (a yield cannot be caught by pcall), or, where
 * yielding is impossible (inside a C call such as table.sort's comparator),
 * raises an error on every instruction until the code is back where it can
 * yield.  Finalizers run with hooks off, which is why tables may not carry
 * __gc here.
 *
 * Library loops that run no VM instructions and allocate nothing
 * (table.move, table.insert / remove over a size claimed by __len) charge
 * their length to the budget up front; string.rep of "" returns at once.
 * Known gap: a pathological pattern match (string.find and friends
 * backtracking) is time inside one C call that no hook sees.
 *
 * Not thread-safe: a sandbox and its tasks belong to one thread.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "sandbox.h"

#include "common.h"
#include "runtime.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lualib.h>

#define HOOK_STEP 1000            /* instructions between two count hooks */
#define GUARD_INSTR 1000000       /* budget of a __tostring run by the engine */
#define MODULES_KEY "mo.sandbox.modules" /* registry: require() cache */

static void task_hook(lua_State *L, lua_Debug *ar);

enum { TASK_NEW, TASK_RUNNING, TASK_SUSPENDED, TASK_DONE, TASK_FAILED };
enum { MEM_OK, MEM_TASK, MEM_STATE };

struct mo_sandbox {
	lua_State *L;
	char *name;
	char *root;             /* realpath of the module tree, or NULL */
	mo_rt *rt;
	mo_sandbox_limits lim;
	size_t mem;             /* bytes held by the state */
	int state_hit;          /* the state cap refused an allocation */
	mo_task *current;       /* task being resumed, or NULL */
	mo_task *tasks;         /* live tasks, so freeing the sandbox can detach them */
};

struct mo_task {
	mo_sandbox *sb;
	lua_State *L;           /* the thread; NULL once the sandbox is gone */
	int ref;                /* registry anchor of L */
	char *label;
	char *traceback;
	int state;              /* TASK_* */
	int first_nargs;        /* arguments moved in by mo_task_new */
	uint64_t instr;
	int budget_hit;
	int mem_hit;            /* MEM_* */
	int64_t mem;            /* net growth while resumed */
	int suspended;          /* a driver called mo_task_suspend in this resume */
	int waiting;            /* suspended and not yet woken */
	mo_task_wake_fn wake;
	void *wake_ud;
	void *ud;
	mo_task *prev, *next;
};

void mo_sandbox_limits_defaults(mo_sandbox_limits *lim)
{
	lim->task_mem = (size_t)64 << 20;
	lim->state_mem = (size_t)1 << 30;
	lim->task_instr = 200000000;
}

/* "64 MiB", "1 GiB", "1500 bytes": how limits read in messages. */
static void fmt_size(char *out, size_t outlen, size_t n)
{
	if (n && n % ((size_t)1 << 30) == 0)
		snprintf(out, outlen, "%zu GiB", n >> 30);
	else if (n && n % ((size_t)1 << 20) == 0)
		snprintf(out, outlen, "%zu MiB", n >> 20);
	else if (n && n % 1024 == 0)
		snprintf(out, outlen, "%zu KiB", n >> 10);
	else
		snprintf(out, outlen, "%zu bytes", n);
}

/* ---- allocator ---------------------------------------------------------- */

/*
 * The state's lua_Alloc.  Growth is refused (NULL, so Lua collects and then
 * raises a memory error) when it would take the state past state_mem or the
 * running task's net growth past task_mem.  Shrinking never fails.
 */
static void *sb_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
	mo_sandbox *sb = ud;
	mo_task *t = sb->current;
	size_t old = ptr ? osize : 0;
	void *np;

	if (nsize == 0) {
		mo_free(ptr);
		sb->mem -= old;
		if (t)
			t->mem -= (int64_t)old;
		return NULL;
	}
	if (nsize > old) {
		size_t grow = nsize - old;
		if (t && (grow > sb->lim.task_mem ||
			  t->mem + (int64_t)grow > (int64_t)sb->lim.task_mem)) {
			t->mem_hit = MEM_TASK;
			return NULL;
		}
		if (grow > sb->lim.state_mem - sb->mem) {
			sb->state_hit = 1;
			if (t)
				t->mem_hit = MEM_STATE;
			return NULL;
		}
	}
	np = mo_realloc(ptr, nsize);
	if (!np) {
		if (nsize <= old)
			np = ptr; /* a failed shrink keeps the larger block */
		else
			return NULL;
	}
	sb->mem = sb->mem - old + nsize;
	if (t)
		t->mem += (int64_t)nsize - (int64_t)old;
	return np;
}

static int sb_panic(lua_State *L)
{
	void *ud = NULL;
	mo_sandbox *sb;
	const char *msg = lua_tostring(L, -1);

	lua_getallocf(L, &ud);
	sb = ud;
	if (!msg)
		msg = "(error object is not a string)";
	fprintf(stderr, "mecorch: unprotected Lua error in %s: %s\n",
		sb && sb->name ? sb->name : "a sandbox", msg);
	if (sb && sb->rt && sb->rt->log)
		sb->rt->log(sb->rt->log_ud, sb->name, "error", msg);
	mo_error_set(MO_EMODULE, "%s: unprotected error: %s",
		     sb && sb->name ? sb->name : "sandbox", msg);
	return 0; /* Lua aborts */
}

/* ---- safe library functions --------------------------------------------- */

/* Refuse text that starts like a precompiled chunk. */
static int is_binary(const char *buf, size_t len)
{
	return len > 0 && buf[0] == LUA_SIGNATURE[0];
}

/*
 * Load text with chunkname and the sandbox globals as _ENV.  Pushes the
 * function, or an error message; returns the lua_load status.  Raises only
 * when out of memory while refusing a binary chunk, so callers outside a
 * protected call check is_binary() first.
 */
static int load_text(lua_State *L, const char *buf, size_t len, const char *chunkname)
{
	int st;

	if (is_binary(buf, len)) {
		lua_pushfstring(L, "%s: binary chunks are not allowed in the sandbox",
				chunkname[0] == '@' || chunkname[0] == '=' ? chunkname + 1 : chunkname);
		return LUA_ERRSYNTAX;
	}
	st = luaL_loadbufferx(L, buf, len, chunkname, "t");
	if (st != LUA_OK)
		return st;
	lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_GLOBALS);
	if (!lua_setupvalue(L, -2, 1))
		lua_pop(L, 1);
	return LUA_OK;
}

/* load(chunk [, chunkname [, mode [, env]]]): text only; env defaults to the
 * sandbox globals.  Upvalue 1: the base library's load, which reports every
 * failure as (fail, message) once its arguments are valid, as here. */
static int sb_load(lua_State *L)
{
	int has_env = !lua_isnone(L, 4);
	const char *mode;
	size_t len;
	const char *s;

	if (!lua_isstring(L, 1))
		luaL_checktype(L, 1, LUA_TFUNCTION);
	luaL_optstring(L, 2, NULL);
	mode = luaL_optstring(L, 3, "bt");
	if (!strchr(mode, 't')) {
		luaL_pushfail(L);
		lua_pushstring(L, "load: only text chunks are allowed in the sandbox");
		return 2;
	}
	if (lua_type(L, 1) == LUA_TSTRING) {
		s = lua_tolstring(L, 1, &len);
		if (is_binary(s, len)) {
			luaL_pushfail(L);
			lua_pushstring(L, "load: binary chunks are not allowed in the sandbox");
			return 2;
		}
	}
	lua_settop(L, 4);
	lua_pushvalue(L, lua_upvalueindex(1));
	lua_pushvalue(L, 1);
	lua_pushvalue(L, 2);
	lua_pushliteral(L, "t");
	if (has_env)
		lua_pushvalue(L, 4);
	else
		lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_GLOBALS);
	lua_call(L, 4, LUA_MULTRET);
	return lua_gettop(L) - 4;
}

/*
 * The functions below replace library functions rather than wrap them: a
 * library function called from C loses the caller's file:line and its own
 * name in the errors it raises.
 */

/* collectgarbage([opt [, arg]]): only "collect", "count" and "step". */
static int sb_collectgarbage(lua_State *L)
{
	const char *opt = luaL_optstring(L, 1, "collect");
	int res;

	if (!strcmp(opt, "collect")) {
		if ((res = lua_gc(L, LUA_GCCOLLECT)) != -1) {
			lua_pushinteger(L, res);
			return 1;
		}
	} else if (!strcmp(opt, "count")) {
		if ((res = lua_gc(L, LUA_GCCOUNT)) != -1) {
			lua_pushnumber(L, (lua_Number)res + (lua_Number)lua_gc(L, LUA_GCCOUNTB) / 1024);
			return 1;
		}
	} else if (!strcmp(opt, "step")) {
		if ((res = lua_gc(L, LUA_GCSTEP, (int)luaL_optinteger(L, 2, 0))) != -1) {
			lua_pushboolean(L, res);
			return 1;
		}
	} else {
		return luaL_error(L, "collectgarbage('%s') is not allowed in the sandbox", opt);
	}
	luaL_pushfail(L); /* -1: the collector is busy (called from a finalizer) */
	return 1;
}

/* setmetatable(t, mt), refusing a metatable with __gc: finalizers run with
 * hooks off and so outside the instruction budget. */
static int sb_setmetatable(lua_State *L)
{
	int t = lua_type(L, 2);

	luaL_checktype(L, 1, LUA_TTABLE);
	luaL_argexpected(L, t == LUA_TNIL || t == LUA_TTABLE, 2, "nil or table");
	if (t == LUA_TTABLE) {
		lua_pushliteral(L, "__gc");
		if (lua_rawget(L, 2) != LUA_TNIL)
			return luaL_error(L, "setmetatable: __gc metamethods are not allowed in the sandbox");
		lua_pop(L, 1);
	}
	if (luaL_getmetafield(L, 1, "__metatable") != LUA_TNIL)
		return luaL_error(L, "cannot change a protected metatable");
	lua_settop(L, 2);
	lua_setmetatable(L, 1);
	return 1;
}

/* print(...): one "info" line to the runtime's logger, or nothing. */
static int sb_print(lua_State *L)
{
	mo_sandbox *sb = mo_sandbox_from_lua(L);
	int n = lua_gettop(L);
	luaL_Buffer b;

	if (!sb->rt || !sb->rt->log)
		return 0;
	luaL_buffinit(L, &b);
	for (int i = 1; i <= n; i++) {
		if (i > 1)
			luaL_addchar(&b, '\t');
		luaL_tolstring(L, i, NULL);
		luaL_addvalue(&b);
	}
	luaL_pushresult(&b);
	sb->rt->log(sb->rt->log_ud, sb->name, "info", lua_tostring(L, -1));
	return 0;
}

/*
 * Charge n units of work done inside a C function to the running task's
 * budget, raising once it is spent.  For library loops that run no VM
 * instructions and allocate nothing, which the count hook cannot see.
 */
static void charge(lua_State *L, uint64_t n)
{
	mo_task *t = mo_task_from_lua(L);

	if (!t || !t->sb)
		return;
	if (n > UINT64_MAX - t->instr)
		n = UINT64_MAX - t->instr;
	t->instr += n;
	if (!t->budget_hit && t->instr > t->sb->lim.task_instr) {
		t->budget_hit = 1;
		lua_sethook(L, task_hook, LUA_MASKCOUNT, 1);
	}
	if (t->budget_hit)
		luaL_error(L, "instruction budget exceeded");
}

/* string.rep(s, n [, sep]), as the library's, except that an empty result
 * is produced at once: the library loops n times to build it, with no
 * instruction or allocation to stop a huge n. */
static int sb_str_rep(lua_State *L)
{
	size_t l, lsep, total;
	const char *s = luaL_checklstring(L, 1, &l);
	lua_Integer n = luaL_checkinteger(L, 2);
	const char *sep = luaL_optlstring(L, 3, "", &lsep);
	luaL_Buffer b;
	char *p;

	if (n <= 0 || l + lsep == 0) {
		lua_pushliteral(L, "");
		return 1;
	}
	if (l + lsep < l || l + lsep > (size_t)INT_MAX / (lua_Unsigned)n)
		return luaL_error(L, "resulting string too large");
	total = (size_t)n * l + (size_t)(n - 1) * lsep;
	p = luaL_buffinitsize(L, &b, total);
	while (n-- > 1) {
		memcpy(p, s, l);
		p += l;
		if (lsep > 0) {
			memcpy(p, sep, lsep);
			p += lsep;
		}
	}
	memcpy(p, s, l);
	luaL_pushresultsize(&b, total);
	return 1;
}

/* table.move(a1, f, e, t [, a2]), as the library's (tables only), with the
 * moves charged: moving nils costs neither instructions nor memory. */
static int sb_tab_move(lua_State *L)
{
	lua_Integer f = luaL_checkinteger(L, 2);
	lua_Integer e = luaL_checkinteger(L, 3);
	lua_Integer t = luaL_checkinteger(L, 4);
	int tt = !lua_isnoneornil(L, 5) ? 5 : 1;

	luaL_checktype(L, 1, LUA_TTABLE);
	luaL_checktype(L, tt, LUA_TTABLE);
	if (e >= f) {
		lua_Integer n;
		luaL_argcheck(L, f > 0 || e < LUA_MAXINTEGER + f, 3, "too many elements to move");
		n = e - f + 1;
		luaL_argcheck(L, t <= LUA_MAXINTEGER - n + 1, 4, "destination wrap around");
		charge(L, (uint64_t)n);
		if (t > e || t <= f || (tt != 1 && !lua_compare(L, 1, tt, LUA_OPEQ))) {
			for (lua_Integer i = 0; i < n; i++) {
				lua_geti(L, 1, f + i);
				lua_seti(L, tt, t + i);
			}
		} else {
			for (lua_Integer i = n - 1; i >= 0; i--) {
				lua_geti(L, 1, f + i);
				lua_seti(L, tt, t + i);
			}
		}
	}
	lua_pushvalue(L, tt);
	return 1;
}

/* table.insert(t, [pos,] v), as the library's, with the shift charged
 * (a __len can claim any size). */
static int sb_tab_insert(lua_State *L)
{
	lua_Integer e, pos;

	luaL_checktype(L, 1, LUA_TTABLE);
	e = luaL_len(L, 1);
	e = (lua_Integer)((lua_Unsigned)e + 1u); /* first empty element */
	switch (lua_gettop(L)) {
	case 2:
		pos = e;
		break;
	case 3:
		pos = luaL_checkinteger(L, 2);
		luaL_argcheck(L, (lua_Unsigned)pos - 1u < (lua_Unsigned)e, 2, "position out of bounds");
		if (e > pos)
			charge(L, (uint64_t)e - (uint64_t)pos);
		for (lua_Integer i = e; i > pos; i--) {
			lua_geti(L, 1, i - 1);
			lua_seti(L, 1, i);
		}
		break;
	default:
		return luaL_error(L, "wrong number of arguments to 'insert'");
	}
	lua_seti(L, 1, pos);
	return 0;
}

/* table.remove(t [, pos]), as the library's, with the shift charged. */
static int sb_tab_remove(lua_State *L)
{
	lua_Integer size, pos;

	luaL_checktype(L, 1, LUA_TTABLE);
	size = luaL_len(L, 1);
	pos = luaL_optinteger(L, 2, size);
	if (pos != size)
		luaL_argcheck(L, (lua_Unsigned)pos - 1u <= (lua_Unsigned)size, 2, "position out of bounds");
	if (pos < size)
		charge(L, (uint64_t)size - (uint64_t)pos);
	lua_geti(L, 1, pos);
	for (; pos < size; pos++) {
		lua_geti(L, 1, pos + 1);
		lua_seti(L, 1, pos);
	}
	lua_pushnil(L);
	lua_seti(L, 1, pos);
	return 1;
}

/* ---- require ------------------------------------------------------------ */

/* ^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$ */
static int valid_module_name(const char *s)
{
	int start = 1;

	if (!*s)
		return 0;
	for (; *s; s++) {
		char c = *s;
		int alpha = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_';
		int digit = c >= '0' && c <= '9';
		if (start) {
			if (!alpha)
				return 0;
			start = 0;
		} else if (c == '.') {
			start = 1;
		} else if (!alpha && !digit) {
			return 0;
		}
	}
	return !start;
}

/* The part of real (a realpath) below root, or NULL when it is outside. */
static const char *under_root(const char *root, const char *real)
{
	size_t n = strlen(root);

	if (n == 1 && root[0] == '/')
		return real[0] == '/' && real[1] ? real + 1 : NULL;
	if (strncmp(real, root, n) || real[n] != '/' || !real[n + 1])
		return NULL;
	return real + n + 1;
}

/* Continuation of require: [1] name, [2] cache, [3] the module's result. */
static int require_finish(lua_State *L, int status, lua_KContext ctx)
{
	(void)status;
	(void)ctx;
	if (lua_isnil(L, 3)) {
		lua_pop(L, 1);
		lua_pushboolean(L, 1);
	}
	lua_pushvalue(L, 3);
	lua_setfield(L, 2, lua_tostring(L, 1));
	return 1;
}

/* Whether the chunk "@rel" is running as a main chunk on L's stack. */
static int chunk_running(lua_State *L, const char *rel)
{
	lua_Debug ar;

	for (int level = 1; lua_getstack(L, level, &ar); level++) {
		if (!lua_getinfo(L, "S", &ar))
			continue;
		if (!strcmp(ar.what, "main") && ar.source[0] == '@' && !strcmp(ar.source + 1, rel))
			return 1;
	}
	return 0;
}

/*
 * require(name): "a.b" is <root>/a/b.lua or <root>/a/b/init.lua, run once
 * per sandbox with (name, path relative to root); its result (true when it
 * returns nothing) is cached.  Names that could leave the tree, files whose
 * realpath lies outside it (symlinks), binary chunks, and a module that
 * requires itself while it loads (directly or not) are refused.
 */
static int sb_require(lua_State *L)
{
	static const char *const forms[] = { "%s/%s.lua", "%s/%s/init.lua" };
	mo_sandbox *sb = mo_sandbox_from_lua(L);
	const char *name = luaL_checkstring(L, 1), *rel, *inside = NULL;
	char path[PATH_MAX], real[PATH_MAX];
	char *buf = NULL;
	size_t len = 0;
	int st;

	lua_settop(L, 1);
	if (!valid_module_name(name))
		return luaL_error(L, "require '%s': outside the module tree "
				  "(module names look like 'lib.util')", name);
	if (!sb->root)
		return luaL_error(L, "require '%s': no module tree in this sandbox", name);
	lua_getfield(L, LUA_REGISTRYINDEX, MODULES_KEY);        /* 2 */
	if (lua_getfield(L, 2, name) != LUA_TNIL)
		return 1;
	lua_pop(L, 1);

	rel = luaL_gsub(L, name, ".", "/");                     /* 3 */
	for (size_t i = 0; i < MO_ARRAY_SIZE(forms) && !inside; i++) {
		int n = snprintf(path, sizeof(path), forms[i], sb->root, rel);
		if (n < 0 || (size_t)n >= sizeof(path))
			return luaL_error(L, "require '%s': name too long", name);
		if (!realpath(path, real)) {
			if (errno == ENOENT || errno == ENOTDIR)
				continue;
			return luaL_error(L, "require '%s': %s: %s", name, path, strerror(errno));
		}
		inside = under_root(sb->root, real);
		if (!inside)
			return luaL_error(L, "require '%s': outside the module tree", name);
	}
	if (!inside)
		return luaL_error(L, "module '%s' not found in %s", name, sb->root);
	if (chunk_running(L, inside))
		return luaL_error(L, "require '%s': circular require (%s is still loading)", name, inside);

	lua_pushfstring(L, "@%s", inside);                      /* 4 */
	if (mo_file_read(&buf, &len, real) < 0)
		return luaL_error(L, "require '%s': %s", name, mo_error_last()->message);
	st = load_text(L, buf, len, lua_tostring(L, 4));        /* 5 */
	mo_free(buf);
	if (st != LUA_OK)
		return luaL_error(L, "require '%s': %s", name, lua_tostring(L, -1));
	lua_replace(L, 3);
	lua_settop(L, 3);
	lua_pushvalue(L, 1);
	lua_pushstring(L, inside);
	lua_callk(L, 2, 1, 0, require_finish);
	return require_finish(L, LUA_OK, 0);
}

/* ---- building the globals ----------------------------------------------- */

static const char *const base_allowed[] = {
	"assert", "error", "getmetatable", "ipairs", "next", "pairs", "pcall",
	"rawequal", "rawget", "rawlen", "rawset", "select", "tonumber",
	"tostring", "type", "xpcall", "_VERSION",
};

/* Stack: +1, a shallow copy of the table at idx without the key `skip`. */
static void copy_table(lua_State *L, int idx, const char *skip)
{
	idx = lua_absindex(L, idx);
	lua_newtable(L);
	lua_pushnil(L);
	while (lua_next(L, idx)) {
		if (skip && lua_type(L, -2) == LUA_TSTRING && !strcmp(lua_tostring(L, -2), skip)) {
			lua_pop(L, 1);
			continue;
		}
		lua_pushvalue(L, -2);
		lua_insert(L, -2);
		lua_rawset(L, -4);
	}
}

/* Stack: 0.  orig[name] becomes upvalue 1 of fn, stored in dest[name]. */
static void wrap_field(lua_State *L, int orig, int dest, const char *name, lua_CFunction fn)
{
	int base = lua_absindex(L, orig), G = lua_absindex(L, dest);

	lua_getfield(L, base, name);
	lua_pushcclosure(L, fn, 1);
	lua_setfield(L, G, name);
}

/* Protected: build the sandbox globals.  [1] the sandbox (light userdata). */
static int setup_p(lua_State *L)
{
	static const struct {
		const char *name;
		lua_CFunction open;
	} libs[] = {
		{ LUA_TABLIBNAME, luaopen_table },
		{ LUA_MATHLIBNAME, luaopen_math },
		{ LUA_UTF8LIBNAME, luaopen_utf8 },
	};
	int base, G, loaded;

	luaL_requiref(L, LUA_GNAME, luaopen_base, 0);
	base = lua_gettop(L);
	lua_newtable(L);
	G = lua_gettop(L);
	lua_newtable(L);
	loaded = lua_gettop(L);

	for (size_t i = 0; i < MO_ARRAY_SIZE(base_allowed); i++) {
		lua_getfield(L, base, base_allowed[i]);
		lua_setfield(L, G, base_allowed[i]);
	}
	wrap_field(L, base, G, "load", sb_load);
	lua_pushcfunction(L, sb_collectgarbage);
	lua_setfield(L, G, "collectgarbage");
	lua_pushcfunction(L, sb_setmetatable);
	lua_setfield(L, G, "setmetatable");
	lua_pushcfunction(L, sb_print);
	lua_setfield(L, G, "print");
	lua_pushcfunction(L, sb_require);
	lua_setfield(L, G, "require");
	lua_pushvalue(L, G);
	lua_setfield(L, G, LUA_GNAME);
	lua_pushvalue(L, G);
	lua_setfield(L, loaded, LUA_GNAME);

	/* string: a copy without dump, which is also what string values index */
	luaL_requiref(L, LUA_STRLIBNAME, luaopen_string, 0);
	copy_table(L, -1, "dump");
	lua_pushcfunction(L, sb_str_rep);
	lua_setfield(L, -2, "rep");
	lua_pushvalue(L, -1);
	lua_setfield(L, G, LUA_STRLIBNAME);
	lua_pushvalue(L, -1);
	lua_setfield(L, loaded, LUA_STRLIBNAME);
	lua_pushliteral(L, "");
	if (lua_getmetatable(L, -1)) {
		lua_pushvalue(L, -3);
		lua_setfield(L, -2, "__index");
		lua_pop(L, 1);
	}
	lua_pop(L, 3);

	for (size_t i = 0; i < MO_ARRAY_SIZE(libs); i++) {
		luaL_requiref(L, libs[i].name, libs[i].open, 0);
		copy_table(L, -1, NULL);
		if (libs[i].open == luaopen_table) {
			lua_pushcfunction(L, sb_tab_move);
			lua_setfield(L, -2, "move");
			lua_pushcfunction(L, sb_tab_insert);
			lua_setfield(L, -2, "insert");
			lua_pushcfunction(L, sb_tab_remove);
			lua_setfield(L, -2, "remove");
		}
		lua_pushvalue(L, -1);
		lua_setfield(L, G, libs[i].name);
		lua_setfield(L, loaded, libs[i].name);
		lua_pop(L, 1);
	}

	/* _LOADED only names functions in tracebacks; make it the sandbox's */
	lua_pushvalue(L, loaded);
	lua_setfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
	lua_newtable(L);
	lua_setfield(L, LUA_REGISTRYINDEX, MODULES_KEY);
	lua_pushvalue(L, G);
	lua_rawseti(L, LUA_REGISTRYINDEX, LUA_RIDX_GLOBALS);
	return 0;
}

/* ---- sandbox ------------------------------------------------------------ */

int mo_sandbox_new(mo_sandbox **out, const char *root, const char *name,
		   mo_rt *rt, const mo_sandbox_limits *lim)
{
	mo_sandbox *sb = NULL;
	char real[PATH_MAX];
	int rc = 0, st;

	if (!name)
		name = "sandbox";
	if (!(sb = mo_calloc(1, sizeof(*sb))))
		return mo_error_set(MO_ENOMEM, "%s: out of memory", name);
	mo_sandbox_limits_defaults(&sb->lim);
	if (lim) {
		if (lim->task_mem)
			sb->lim.task_mem = lim->task_mem;
		if (lim->state_mem)
			sb->lim.state_mem = lim->state_mem;
		if (lim->task_instr)
			sb->lim.task_instr = lim->task_instr;
	}
	sb->rt = rt;
	if (!(sb->name = mo_strdup(name))) {
		rc = mo_error_set(MO_ENOMEM, "%s: out of memory", name);
		goto done;
	}
	if (root) {
		if (!realpath(root, real)) {
			rc = mo_error_set_native(errno == ENOENT ? MO_ENOTFOUND : MO_EIO, errno,
						 "%s: module tree %s: %s", name, root, strerror(errno));
			goto done;
		}
		if (!(sb->root = mo_strdup(real))) {
			rc = mo_error_set(MO_ENOMEM, "%s: out of memory", name);
			goto done;
		}
	}
	if (!(sb->L = lua_newstate(sb_alloc, sb))) {
		rc = mo_error_set(MO_ENOMEM, "%s: cannot create a Lua state", name);
		goto done;
	}
	lua_atpanic(sb->L, sb_panic);
	*(mo_task **)lua_getextraspace(sb->L) = NULL;
	lua_pushcfunction(sb->L, setup_p);
	lua_pushlightuserdata(sb->L, sb);
	st = lua_pcall(sb->L, 1, 0, 0);
	if (st != LUA_OK) {
		rc = mo_error_set(st == LUA_ERRMEM ? MO_ENOMEM : MO_ERROR, "%s: cannot set up the sandbox: %s",
				  name, lua_tostring(sb->L, -1) ? lua_tostring(sb->L, -1) : "error");
		goto done;
	}
	lua_settop(sb->L, 0);
done:
	if (rc < 0) {
		mo_sandbox_free(sb);
		return rc;
	}
	*out = sb;
	return 0;
}

void mo_sandbox_free(mo_sandbox *sb)
{
	if (!sb)
		return;
	/* tasks still alive keep only their C side; their threads die with L */
	for (mo_task *t = sb->tasks; t; t = t->next) {
		t->sb = NULL;
		t->L = NULL;
	}
	if (sb->L)
		lua_close(sb->L);
	mo_free(sb->name);
	mo_free(sb->root);
	mo_free(sb);
}

lua_State *mo_sandbox_L(mo_sandbox *sb)
{
	return sb->L;
}

const char *mo_sandbox_name(const mo_sandbox *sb)
{
	return sb->name;
}

const char *mo_sandbox_root(const mo_sandbox *sb)
{
	return sb->root;
}

mo_rt *mo_sandbox_rt(mo_sandbox *sb)
{
	return sb->rt;
}

mo_sandbox *mo_sandbox_from_lua(lua_State *L)
{
	void *ud = NULL;
	lua_getallocf(L, &ud);
	return ud;
}

size_t mo_sandbox_mem(const mo_sandbox *sb)
{
	return sb->mem;
}

/* Translate a failed load_text() (message on top, popped). */
static int load_failed(mo_sandbox *sb, int st)
{
	const char *msg = lua_tostring(sb->L, -1);
	int rc;

	if (st == LUA_ERRMEM && sb->state_hit) {
		char lim[32];
		fmt_size(lim, sizeof(lim), sb->lim.state_mem);
		rc = mo_error_set(MO_ELIMIT, "%s: state memory limit of %s exceeded", sb->name, lim);
	} else if (st == LUA_ERRMEM) {
		rc = mo_error_set(MO_ENOMEM, "%s: out of memory", sb->name);
	} else {
		rc = mo_error_set(MO_EMODULE, "%s: %s", sb->name, msg ? msg : "load error");
	}
	lua_pop(sb->L, 1);
	return rc;
}

int mo_sandbox_loadbuffer(mo_sandbox *sb, const char *buf, size_t len, const char *chunkname)
{
	char *name = NULL;
	int st;

	if (!lua_checkstack(sb->L, 3))
		return mo_error_set(MO_ENOMEM, "%s: out of memory", sb->name);
	if (!chunkname)
		chunkname = "=(buffer)";
	if (chunkname[0] != '@' && chunkname[0] != '=') {
		if (!(name = mo_sprintf("@%s", chunkname)))
			return mo_error_set(MO_ENOMEM, "%s: out of memory", sb->name);
		chunkname = name;
	}
	if (is_binary(buf, len)) {
		/* refused before Lua sees it: no string is pushed outside a
		 * protected call */
		mo_error_set(MO_EMODULE, "%s: %s: binary chunks are not allowed in the sandbox",
			     sb->name, chunkname + 1);
		mo_free(name);
		return MO_EMODULE;
	}
	sb->state_hit = 0;
	st = load_text(sb->L, buf, len, chunkname);
	mo_free(name);
	return st == LUA_OK ? 0 : load_failed(sb, st);
}

int mo_sandbox_loadfile(mo_sandbox *sb, const char *path)
{
	char *full = NULL, *buf = NULL, real[PATH_MAX];
	const char *rel = NULL;
	size_t len = 0;
	int rc;

	if (path[0] == '/' || !sb->root)
		full = mo_strdup(path);
	else
		full = mo_sprintf("%s/%s", sb->root, path);
	if (!full)
		return mo_error_set(MO_ENOMEM, "%s: out of memory", sb->name);
	if ((rc = mo_file_read(&buf, &len, full)) < 0) {
		mo_error_prefix("%s", sb->name);
		goto done;
	}
	if (sb->root && realpath(full, real))
		rel = under_root(sb->root, real);
	rc = mo_sandbox_loadbuffer(sb, buf, len, rel ? rel : path);
done:
	mo_free(buf);
	mo_free(full);
	return rc;
}

/* ---- tasks -------------------------------------------------------------- */

mo_task *mo_task_from_lua(lua_State *L)
{
	return *(mo_task **)lua_getextraspace(L);
}

/*
 * The count hook of every task thread.  Charges the instructions since the
 * last call; once the budget is spent, yields when it can (uncatchable) and
 * otherwise raises, and from then on fires on every instruction so that no
 * pcall-in-a-loop inside a C call can outlast it.
 */
static void task_hook(lua_State *L, lua_Debug *ar)
{
	mo_task *t = mo_task_from_lua(L);

	(void)ar;
	if (!t || !t->sb)
		return;
	if (!t->budget_hit) {
		t->instr += HOOK_STEP;
		if (t->instr <= t->sb->lim.task_instr)
			return;
		t->budget_hit = 1;
		lua_sethook(L, task_hook, LUA_MASKCOUNT, 1);
	}
	if (lua_isyieldable(L))
		lua_yield(L, 0);
	else
		luaL_error(L, "instruction budget exceeded");
}

/* Protected: [1] the task (light userdata).  Creates and anchors its thread. */
static int task_new_p(lua_State *L)
{
	mo_task *t = lua_touserdata(L, 1);
	lua_State *th = lua_newthread(L);

	lua_pushvalue(L, -1);
	t->ref = luaL_ref(L, LUA_REGISTRYINDEX);
	t->L = th;
	return 0;
}

static void task_unlink(mo_task *t)
{
	if (!t->sb)
		return;
	if (t->prev)
		t->prev->next = t->next;
	else
		t->sb->tasks = t->next;
	if (t->next)
		t->next->prev = t->prev;
	t->prev = t->next = NULL;
}

int mo_task_new(mo_task **out, mo_sandbox *sb, int nargs, const char *label)
{
	lua_State *L = sb->L;
	mo_task *t = NULL;
	int rc = 0, st;

	if (!label)
		label = "task";
	if (nargs < 0 || lua_gettop(L) < nargs + 1)
		return mo_error_set(MO_EINVAL, "%s: task '%s': no function on the stack", sb->name, label);
	if (!lua_isfunction(L, -(nargs + 1))) {
		rc = mo_error_set(MO_EINVAL, "%s: task '%s': a %s value is not a function", sb->name,
				  label, luaL_typename(L, -(nargs + 1)));
		goto done;
	}
	if ((t = mo_calloc(1, sizeof(*t))))
		t->ref = LUA_NOREF;
	if (!t || !(t->label = mo_strdup(label))) {
		rc = mo_error_set(MO_ENOMEM, "%s: out of memory", sb->name);
		goto done;
	}
	t->sb = sb;
	if (!lua_checkstack(L, 2)) {
		rc = mo_error_set(MO_ENOMEM, "%s: out of memory", sb->name);
		goto done;
	}
	lua_pushcfunction(L, task_new_p);
	lua_pushlightuserdata(L, t);
	if ((st = lua_pcall(L, 1, 0, 0)) != LUA_OK) {
		lua_pop(L, 1);
		rc = mo_error_set(MO_ENOMEM, "%s: task '%s': cannot create a thread", sb->name, label);
		goto done;
	}
	if (!lua_checkstack(t->L, nargs + 1)) {
		rc = mo_error_set(MO_ENOMEM, "%s: task '%s': out of memory", sb->name, label);
		goto done;
	}
	*(mo_task **)lua_getextraspace(t->L) = t;
	lua_sethook(t->L, task_hook, LUA_MASKCOUNT, HOOK_STEP);
	lua_xmove(L, t->L, nargs + 1);
	t->first_nargs = nargs;
	t->state = TASK_NEW;
	t->next = sb->tasks;
	if (sb->tasks)
		sb->tasks->prev = t;
	sb->tasks = t;
done:
	if (rc < 0) {
		lua_pop(L, nargs + 1);
		if (t) {
			if (t->ref != LUA_NOREF)
				luaL_unref(L, LUA_REGISTRYINDEX, t->ref);
			mo_free(t->label);
			mo_free(t);
		}
		return rc;
	}
	*out = t;
	return 0;
}

void mo_task_free(mo_task *t)
{
	if (!t)
		return;
	if (t->sb && t->L) {
		lua_State *L = t->sb->L;
		/* Close pending to-be-closed variables, under the same hook and
		 * budget.  Not after the budget ran out: the thread was stopped
		 * inside its hook, where hooks are off, so __close would run
		 * unbounded.  Such a thread is simply left to the collector. */
		if (!t->budget_hit && t->state != TASK_RUNNING)
			lua_resetthread(t->L);
		lua_sethook(t->L, NULL, 0, 0);
		*(mo_task **)lua_getextraspace(t->L) = NULL;
		if (lua_checkstack(L, 2))
			luaL_unref(L, LUA_REGISTRYINDEX, t->ref);
	}
	task_unlink(t);
	mo_free(t->label);
	mo_free(t->traceback);
	mo_free(t);
}

/* Protected: a __tostring run under the engine's guard. */
static int tostring_p(lua_State *L)
{
	luaL_tolstring(L, 1, NULL);
	return 1;
}

/* Count hook on the main thread while the engine runs a sandbox's
 * __tostring: raise, then keep raising on every instruction. */
static void guard_hook(lua_State *L, lua_Debug *ar)
{
	(void)ar;
	lua_sethook(L, guard_hook, LUA_MASKCOUNT, 1);
	luaL_error(L, "__tostring ran too long");
}

/*
 * Protected: [1] the error object, [2] the failed task's thread.
 * Returns the message (__tostring'ed, or "(error object is a T value)") and
 * the thread's traceback.
 */
static int failinfo_p(lua_State *L)
{
	lua_State *th = lua_tothread(L, 2);

	switch (lua_type(L, 1)) {
	case LUA_TSTRING:
	case LUA_TNUMBER:
		lua_pushstring(L, lua_tostring(L, 1));
		break;
	default:
		if (luaL_getmetafield(L, 1, "__tostring") != LUA_TNIL) {
			lua_pop(L, 1);
			lua_pushcfunction(L, tostring_p);
			lua_pushvalue(L, 1);
			lua_sethook(L, guard_hook, LUA_MASKCOUNT, GUARD_INSTR);
			if (lua_pcall(L, 1, 1, 0) == LUA_OK && lua_type(L, -1) == LUA_TSTRING) {
				lua_sethook(L, NULL, 0, 0);
				break;
			}
			lua_sethook(L, NULL, 0, 0);
			lua_pop(L, 1);
		}
		lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
		break;
	}
	luaL_traceback(L, th, NULL, 0);
	return 2;
}

/*
 * Record the traceback of t's thread and, when err_on_thread, take its error
 * object (top of the thread) into *msg (the caller's, mo_free).  Never
 * raises; falls back to plain text when the state is out of memory.
 */
static void task_failinfo(mo_task *t, int err_on_thread, char **msg)
{
	lua_State *L = t->sb->L;
	int top = lua_gettop(L);

	*msg = NULL;
	mo_free(t->traceback);
	t->traceback = NULL;
	if (!lua_checkstack(L, 6)) {
		if (err_on_thread)
			lua_pop(t->L, 1);
		*msg = mo_strdup("(error message lost: out of memory)");
		return;
	}
	lua_pushcfunction(L, failinfo_p);
	if (err_on_thread)
		lua_xmove(t->L, L, 1);
	else
		lua_pushnil(L);
	lua_rawgeti(L, LUA_REGISTRYINDEX, t->ref);
	if (lua_pcall(L, 2, 2, 0) == LUA_OK) {
		*msg = mo_strdup(lua_tostring(L, -2));
		t->traceback = mo_strdup(lua_tostring(L, -1));
	} else {
		*msg = mo_strdup("(error message lost: out of memory)");
	}
	lua_settop(L, top);
}

/* Lua's own memory errors, and the auxiliary library's ("not enough
 * memory" raised as a runtime error), possibly re-raised with a position. */
static int is_memory_error(const char *msg)
{
	static const char tail[] = "not enough memory";
	size_t n = msg ? strlen(msg) : 0;

	return n >= sizeof(tail) - 1 && !strcmp(msg + n - (sizeof(tail) - 1), tail);
}

int mo_task_resume(mo_task *t, int nargs, int *status, int *nres)
{
	mo_sandbox *sb = t->sb;
	mo_task *prev;
	char *msg = NULL;
	char lim[32];
	int st, n = 0, rc = 0;

	if (!sb || !t->L)
		return mo_error_set(MO_EINVAL, "task '%s': its sandbox is gone", t->label);
	if (t->state == TASK_DONE || t->state == TASK_FAILED || t->state == TASK_RUNNING)
		return mo_error_set(MO_EINVAL, "%s: task '%s' cannot be resumed (%s)", sb->name, t->label,
				    t->state == TASK_RUNNING ? "running" : "finished");
	if (t->state == TASK_NEW)
		nargs += t->first_nargs;
	t->suspended = 0;
	t->waiting = 0;
	t->state = TASK_RUNNING;
	prev = sb->current;
	sb->current = t;
	st = lua_resume(t->L, prev ? prev->L : sb->L, nargs, &n);
	sb->current = prev;

	if (st == LUA_OK) {
		t->state = TASK_DONE;
		if (status)
			*status = MO_TASK_DONE;
		if (nres)
			*nres = n;
		return 0;
	}
	if (st == LUA_YIELD && !t->budget_hit && t->suspended) {
		lua_pop(t->L, n);
		t->state = TASK_SUSPENDED;
		if (status)
			*status = MO_TASK_WAITING;
		if (nres)
			*nres = 0;
		return 0;
	}

	t->state = TASK_FAILED;
	if (st == LUA_YIELD) {
		lua_pop(t->L, n);
		task_failinfo(t, 0, &msg);
	} else {
		task_failinfo(t, 1, &msg);
	}
	if (t->budget_hit) {
		rc = mo_error_set(MO_ELIMIT, "%s: task '%s': instruction budget of %" PRIu64 " exceeded",
				  sb->name, t->label, sb->lim.task_instr);
	} else if (t->mem_hit != MEM_OK && st != LUA_YIELD && (st == LUA_ERRMEM || is_memory_error(msg))) {
		fmt_size(lim, sizeof(lim), t->mem_hit == MEM_TASK ? sb->lim.task_mem : sb->lim.state_mem);
		rc = mo_error_set(MO_ELIMIT, "%s: task '%s': %smemory limit of %s exceeded", sb->name,
				  t->label, t->mem_hit == MEM_TASK ? "" : "state ", lim);
	} else if (st == LUA_YIELD) {
		rc = mo_error_set(MO_EMODULE, "%s: task '%s': yielded outside a driver call", sb->name,
				  t->label);
	} else if (st == LUA_ERRMEM) {
		rc = mo_error_set(MO_ENOMEM, "%s: task '%s': out of memory", sb->name, t->label);
	} else {
		rc = mo_error_set(MO_EMODULE, "%s: %s", sb->name, msg ? msg : "(error message lost)");
	}
	mo_free(msg);
	return rc;
}

lua_State *mo_task_thread(mo_task *t)
{
	return t->L;
}

mo_sandbox *mo_task_sandbox(mo_task *t)
{
	return t->sb;
}

const char *mo_task_label(const mo_task *t)
{
	return t->label;
}

const char *mo_task_traceback(const mo_task *t)
{
	return t->traceback ? t->traceback : "";
}

uint64_t mo_task_instructions(const mo_task *t)
{
	return t->instr;
}

void mo_task_set_wake(mo_task *t, mo_task_wake_fn fn, void *ud)
{
	t->wake = fn;
	t->wake_ud = ud;
}

void mo_task_set_userdata(mo_task *t, void *ud)
{
	t->ud = ud;
}

void *mo_task_userdata(const mo_task *t)
{
	return t->ud;
}

void mo_task_suspend(mo_task *t)
{
	t->suspended = 1;
	t->waiting = 1;
}

void mo_task_wake(mo_task *t, int nargs)
{
	t->waiting = 0;
	if (t->wake)
		t->wake(t, nargs, t->wake_ud);
}

int mo_task_is_waiting(const mo_task *t)
{
	return t->waiting;
}
