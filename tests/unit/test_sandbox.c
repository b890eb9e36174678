/*
 * test_sandbox.c - the Lua sandbox and its tasks: every way out of the
 * sandbox is refused with a clear error and leaves the sandbox usable;
 * instruction budgets and memory caps stop runaway code, even under pcall
 * or inside C calls; errors carry file:line and a traceback; drivers can
 * suspend and wake a task.  Module trees are real files in a temp dir.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "common.h"
#include "runtime.h"
#include "sandbox.h"

#define NAME "module test"

/* ---- helpers ------------------------------------------------------------ */

static mo_sandbox *new_sandbox(const char *root, mo_rt *rt, uint64_t task_instr, size_t task_mem)
{
	mo_sandbox_limits lim;
	mo_sandbox *sb = NULL;

	mo_sandbox_limits_defaults(&lim);
	if (task_instr)
		lim.task_instr = task_instr;
	if (task_mem)
		lim.task_mem = task_mem;
	assert_int_equal(mo_sandbox_new(&sb, root, NAME, rt, &lim), 0);
	assert_non_null(sb);
	return sb;
}

/* Load code and run it as one task.  *out gets the task (caller frees). */
static int run(mo_sandbox *sb, const char *code, mo_task **out, int *status, int *nres)
{
	mo_task *t = NULL;
	int rc;

	*out = NULL;
	if ((rc = mo_sandbox_loadbuffer(sb, code, strlen(code), "=test")) < 0)
		return rc;
	if ((rc = mo_task_new(&t, sb, 0, "test task")) < 0)
		return rc;
	*out = t;
	return mo_task_resume(t, 0, status, nres);
}

/* Run code that must finish; copy tostring(first result) into out. */
static void run_ok(mo_sandbox *sb, const char *code, char *out, size_t outlen)
{
	mo_task *t;
	int status = -1, nres = -1, rc;
	lua_State *L;

	rc = run(sb, code, &t, &status, &nres);
	if (rc < 0)
		fail_msg("%s\n-> %s", code, mo_error_last()->message);
	assert_int_equal(status, MO_TASK_DONE);
	assert_true(nres >= 1);
	L = mo_task_thread(t);
	luaL_tolstring(L, -nres, NULL);
	snprintf(out, outlen, "%s", lua_tostring(L, -1));
	mo_task_free(t);
}

static void expect_ok(mo_sandbox *sb, const char *code, const char *want)
{
	char got[1024];
	run_ok(sb, code, got, sizeof(got));
	assert_string_equal(got, want);
}

/* Run code that must fail with code rc and a message containing needle. */
static void expect_fail(mo_sandbox *sb, const char *code, int want, const char *needle)
{
	mo_task *t = NULL;
	int status = -1, nres = -1, rc;

	rc = run(sb, code, &t, &status, &nres);
	if (rc != want || !strstr(mo_error_last()->message, needle))
		fail_msg("%s\n-> rc %d (want %d): %s (want '%s')", code, rc, want,
			 mo_error_last()->message, needle);
	mo_task_free(t);
}

static void assert_usable(mo_sandbox *sb)
{
	expect_ok(sb, "local t = {} for i = 1, 10 do t[i] = i * i end return table.concat(t, ',')",
		  "1,4,9,16,25,36,49,64,81,100");
}

static void write_file(const char *path, const char *text, size_t len)
{
	FILE *f = fopen(path, "wb");
	assert_non_null(f);
	assert_int_equal(fwrite(text, 1, len, f), len);
	assert_int_equal(fclose(f), 0);
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

/* A temp dir with root/ (the module tree) and outside/ next to it. */
typedef struct {
	char dir[64];
	char root[128];
	char outside[128];
} tree;

static void tree_make(tree *tr)
{
	snprintf(tr->dir, sizeof(tr->dir), "/tmp/mo-sandbox-XXXXXX");
	assert_non_null(mkdtemp(tr->dir));
	snprintf(tr->root, sizeof(tr->root), "%s/root", tr->dir);
	snprintf(tr->outside, sizeof(tr->outside), "%s/outside", tr->dir);
	assert_int_equal(mkdir(tr->root, 0700), 0);
	assert_int_equal(mkdir(tr->outside, 0700), 0);
}

static void tree_put(tree *tr, const char *rel, const char *text)
{
	char path[PATH_MAX * 2];
	snprintf(path, sizeof(path), "%s/%s", tr->root, rel);
	write_file(path, text, strlen(text));
}

static void tree_mkdir(tree *tr, const char *rel)
{
	char path[PATH_MAX * 2];
	snprintf(path, sizeof(path), "%s/%s", tr->root, rel);
	assert_int_equal(mkdir(path, 0700), 0);
}

static void tree_link(tree *tr, const char *rel, const char *target)
{
	char path[PATH_MAX * 2];
	snprintf(path, sizeof(path), "%s/%s", tr->root, rel);
	assert_int_equal(symlink(target, path), 0);
}

static void tree_remove(tree *tr)
{
	assert_int_equal(nftw(tr->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS), 0);
}

static int dump_writer(lua_State *L, const void *p, size_t sz, void *ud)
{
	(void)L;
	return mo_buf_put(ud, p, sz) < 0;
}

/* Precompiled bytecode of `return 99`, made in a separate plain state. */
static void make_bytecode(mo_buf *out)
{
	lua_State *P = luaL_newstate();
	assert_non_null(P);
	assert_int_equal(luaL_loadstring(P, "return 99"), LUA_OK);
	assert_int_equal(lua_dump(P, dump_writer, out, 0), 0);
	lua_close(P);
	assert_true(out->len > 4);
	assert_memory_equal(out->ptr, LUA_SIGNATURE, 4);
}

/* ---- what the globals hold ---------------------------------------------- */

static void test_sandbox_globals(void **state)
{
	mo_sandbox *sb = new_sandbox(NULL, NULL, 0, 0);
	(void)state;

	expect_ok(sb,
		  "return tostring(io) .. tostring(os) .. tostring(debug) .. tostring(package)"
		  " .. tostring(coroutine) .. tostring(dofile) .. tostring(loadfile)"
		  " .. tostring(warn) .. tostring(string.dump) .. tostring((\"\").dump)"
		  " .. tostring(getmetatable(\"\").__index.dump)",
		  "nilnilnilnilnilnilnilnilnilnilnil");
	/* what is there works, including methods on strings */
	expect_ok(sb, "return ('%d-%s'):format(7, ('abc'):upper()) .. math.floor(2.5)"
		      " .. utf8.char(72) .. #table.pack(1, 2, 3) .. tostring(_G == _ENV)",
		  "7-ABC2H3true");
	expect_ok(sb, "return select('#', pcall(error)) .. type(next) .. _VERSION", "2functionLua 5.4");
	expect_ok(sb, "return tostring(getmetatable('').__index == string)", "true");
	assert_usable(sb);
	mo_sandbox_free(sb);
}

static void test_sandbox_io_os_refused(void **state)
{
	mo_sandbox *sb = new_sandbox(NULL, NULL, 0, 0);
	(void)state;

	expect_fail(sb, "return io.open('/etc/passwd')", MO_EMODULE,
		    NAME ": test:1: attempt to index a nil value (global 'io')");
	expect_fail(sb, "return io.popen('id')", MO_EMODULE, "(global 'io')");
	expect_fail(sb, "return os.execute('true')", MO_EMODULE, "attempt to index a nil value (global 'os')");
	expect_fail(sb, "os.exit(3)", MO_EMODULE, "(global 'os')");
	expect_fail(sb, "return debug.getregistry()", MO_EMODULE, "(global 'debug')");
	expect_fail(sb, "return package.loadlib('libc.so.6', 'system')", MO_EMODULE,
		    "(global 'package')");
	expect_fail(sb, "return string.dump(print)", MO_EMODULE, "attempt to call a nil value (field 'dump')");
	expect_fail(sb, "return ('').dump(print)", MO_EMODULE, "attempt to call a nil value (field 'dump')");
	expect_fail(sb, "return dofile('/etc/passwd')", MO_EMODULE, "attempt to call a nil value (global 'dofile')");
	expect_fail(sb, "return loadfile('/etc/passwd')", MO_EMODULE, "(global 'loadfile')");
	assert_usable(sb);
	mo_sandbox_free(sb);
}

static void test_sandbox_load_binary_refused(void **state)
{
	mo_sandbox *sb = new_sandbox(NULL, NULL, 0, 0);
	lua_State *L = mo_sandbox_L(sb);
	mo_buf bc = MO_BUF_INIT;
	char got[1024];
	(void)state;

	make_bytecode(&bc);
	lua_pushlstring(L, bc.ptr, bc.len);
	lua_setglobal(L, "bc");

	expect_ok(sb, "local f, e = load(bc) return tostring(f) .. ' ' .. e",
		  "nil load: binary chunks are not allowed in the sandbox");
	expect_ok(sb, "local f, e = load(bc, 'x', 'b') return tostring(f) .. ' ' .. e",
		  "nil load: only text chunks are allowed in the sandbox");
	/* a reader function cannot sneak it in either */
	run_ok(sb, "local n = 0 local f, e = load(function() n = n + 1 if n == 1 then return bc end end)"
		   " return tostring(f) .. ' ' .. e", got, sizeof(got));
	assert_non_null(strstr(got, "nil "));
	assert_non_null(strstr(got, "attempt to load a binary chunk (mode is 't')"));

	/* nor through the C entry point */
	assert_int_equal(mo_sandbox_loadbuffer(sb, bc.ptr, bc.len, "evil.luac"), MO_EMODULE);
	assert_string_equal(mo_error_last()->message,
			    NAME ": evil.luac: binary chunks are not allowed in the sandbox");
	assert_int_equal(lua_gettop(L), 0);

	/* text still loads, with the sandbox globals as the default env */
	expect_ok(sb, "x_glob = 5 return load('return x_glob')() + load('return y', 'c', 't', { y = 7 })()",
		  "12");
	expect_ok(sb, "local f, e = load('return +') return tostring(f) .. ' ' .. e",
		  "nil [string \"return +\"]:1: unexpected symbol near '+'");
	/* argument errors name the function and the caller's line */
	expect_fail(sb, "\nload({})", MO_EMODULE, NAME ": test:2: bad argument #1 to 'load' (function expected, got table)");
	expect_fail(sb, "setmetatable({}, 1)", MO_EMODULE,
		    NAME ": test:1: bad argument #2 to 'setmetatable' (nil or table expected, got number)");
	expect_fail(sb, "setmetatable(setmetatable({}, { __metatable = 1 }), {})", MO_EMODULE,
		    "test:1: cannot change a protected metatable");
	assert_usable(sb);
	mo_buf_free(&bc);
	mo_sandbox_free(sb);
}

static void test_sandbox_gc_refused(void **state)
{
	mo_sandbox *sb = new_sandbox(NULL, NULL, 0, 0);
	(void)state;

	expect_fail(sb, "collectgarbage('stop')", MO_EMODULE,
		    "collectgarbage('stop') is not allowed in the sandbox");
	expect_fail(sb, "\ncollectgarbage('generational')", MO_EMODULE,
		    NAME ": test:2: collectgarbage('generational') is not allowed in the sandbox");
	expect_ok(sb, "collectgarbage() collectgarbage('step') return math.type(collectgarbage('count'))",
		  "float");
	/* finalizers run with hooks off, outside the budget: refused */
	expect_fail(sb, "setmetatable({}, { __gc = function() while true do end end })", MO_EMODULE,
		    "setmetatable: __gc metamethods are not allowed in the sandbox");
	expect_ok(sb, "local mt = { __index = function(_, k) return k .. '!' end }"
		      " return setmetatable({}, mt).hi", "hi!");
	assert_usable(sb);
	mo_sandbox_free(sb);
}

/* ---- require ------------------------------------------------------------ */

static void test_sandbox_require(void **state)
{
	char secret[PATH_MAX * 2], want[PATH_MAX * 3];
	mo_buf bc = MO_BUF_INIT;
	mo_sandbox *sb;
	tree tr;
	(void)state;

	tree_make(&tr);
	tree_mkdir(&tr, "lib");
	tree_put(&tr, "lib/util.lua",
		 "local name, path = ...\n"
		 "local helper = require('lib.helper')\n"
		 "return { twice = function(x) return helper.add(x, x) end, name = name, path = path }\n");
	tree_put(&tr, "lib/helper.lua", "return { add = function(a, b) return a + b end }\n");
	tree_mkdir(&tr, "pkg");
	tree_put(&tr, "pkg/init.lua", "return 'pkg init'\n");
	tree_put(&tr, "noresult.lua", "loaded_noresult = (loaded_noresult or 0) + 1\n");
	tree_put(&tr, "broken.lua", "local x = \n");
	tree_put(&tr, "loop_a.lua", "return require('loop_b')\n");
	tree_put(&tr, "loop_b.lua", "return require('loop_a')\n");
	tree_put(&tr, "fails.lua", "fails_runs = (fails_runs or 0) + 1\nerror('module failed')\n");
	snprintf(secret, sizeof(secret), "%s/secret.lua", tr.outside);
	write_file(secret, "return 'secret'\n", 16);
	tree_link(&tr, "escape.lua", secret);
	tree_link(&tr, "linkdir", tr.outside);
	tree_link(&tr, "inner_link.lua", "lib/helper.lua");
	make_bytecode(&bc);
	{
		char path[PATH_MAX * 2];
		snprintf(path, sizeof(path), "%s/bin.lua", tr.root);
		write_file(path, bc.ptr, bc.len);
	}

	sb = new_sandbox(tr.root, NULL, 0, 0);
	expect_ok(sb, "local u = require('lib.util') assert(require('lib.util') == u)"
		      " return u.twice(21) .. ',' .. u.name .. ',' .. u.path .. ',' .. require('pkg')",
		  "42,lib.util,lib/util.lua,pkg init");
	/* cached per sandbox: a module without a result runs once, gives true */
	expect_ok(sb, "return tostring(require('noresult')) .. tostring(require('noresult')) .. loaded_noresult",
		  "truetrue1");
	/* a symlink that stays inside the tree is fine */
	expect_ok(sb, "return require('inner_link').add(1, 2)", "3");

	expect_fail(sb, "return require('../x')", MO_EMODULE, "require '../x': outside the module tree");
	expect_fail(sb, "return require('/etc/passwd')", MO_EMODULE,
		    "require '/etc/passwd': outside the module tree");
	expect_fail(sb, "return require('lib..helper')", MO_EMODULE, "outside the module tree");
	expect_fail(sb, "return require('escape')", MO_EMODULE, "require 'escape': outside the module tree");
	expect_fail(sb, "return require('linkdir.secret')", MO_EMODULE,
		    "require 'linkdir.secret': outside the module tree");
	snprintf(want, sizeof(want), "module 'nope.deeper' not found in %s", mo_sandbox_root(sb));
	expect_fail(sb, "return require('nope.deeper')", MO_EMODULE, want);
	expect_fail(sb, "return require('bin')", MO_EMODULE,
		    "require 'bin': bin.lua: binary chunks are not allowed in the sandbox");
	expect_fail(sb, "return require('broken')", MO_EMODULE, "require 'broken': broken.lua:2:");
	expect_fail(sb, "return require('loop_a')", MO_EMODULE,
		    NAME ": loop_b.lua:1: require 'loop_a': circular require (loop_a.lua is still loading)");
	/* a failure caught by the caller is not taken for a loop */
	expect_fail(sb, "pcall(require, 'fails') return require('fails')", MO_EMODULE,
		    NAME ": fails.lua:2: module failed");
	expect_ok(sb, "return fails_runs", "2");
	/* a module that failed is not cached: the next task retries it */
	expect_fail(sb, "return require('fails')", MO_EMODULE, NAME ": fails.lua:2: module failed");
	expect_fail(sb, "return require('fails')", MO_EMODULE, NAME ": fails.lua:2: module failed");
	expect_ok(sb, "return fails_runs", "4");
	/* refusals are ordinary errors: pcall sees them */
	expect_ok(sb, "local ok, e = pcall(require, '../x') return tostring(ok) .. ' ' .. e",
		  "false require '../x': outside the module tree (module names look like 'lib.util')");
	assert_usable(sb);
	mo_sandbox_free(sb);

	/* no tree: require is refused */
	sb = new_sandbox(NULL, NULL, 0, 0);
	expect_fail(sb, "return require('lib.util')", MO_EMODULE,
		    "require 'lib.util': no module tree in this sandbox");
	mo_sandbox_free(sb);

	mo_buf_free(&bc);
	tree_remove(&tr);
}

/* ---- instruction budget ------------------------------------------------- */

static void test_sandbox_budget_infinite_loop(void **state)
{
	mo_sandbox *sb = new_sandbox(NULL, NULL, 2000000, 0);
	mo_task *t;
	int status, nres;
	(void)state;

	assert_int_equal(run(sb, "local n = 0 while true do n = n + 1 end", &t, &status, &nres), MO_ELIMIT);
	assert_string_equal(mo_error_last()->message,
			    NAME ": task 'test task': instruction budget of 2000000 exceeded");
	assert_true(mo_task_instructions(t) > 2000000);
	/* the traceback shows where it was stopped */
	assert_non_null(strstr(mo_task_traceback(t), "test:1:"));
	/* a stopped task stays stopped */
	assert_int_equal(mo_task_resume(t, 0, &status, &nres), MO_EINVAL);
	mo_task_free(t);
	assert_usable(sb);
	mo_sandbox_free(sb);
}

static void test_sandbox_budget_pcall(void **state)
{
	mo_sandbox *sb = new_sandbox(NULL, NULL, 2000000, 0);
	(void)state;

	expect_fail(sb, "while true do pcall(function() while true do end end) end", MO_ELIMIT,
		    "instruction budget of 2000000 exceeded");
	expect_fail(sb, "while true do xpcall(function() while true do end end, function(e) return e end) end",
		    MO_ELIMIT, "instruction budget");
	assert_usable(sb);
	mo_sandbox_free(sb);
}

static void test_sandbox_budget_in_c_call(void **state)
{
	mo_sandbox *sb = new_sandbox(NULL, NULL, 2000000, 0);
	(void)state;

	/* the comparator runs inside table.sort, where no yield is possible */
	expect_fail(sb, "table.sort({ 3, 2, 1 }, function(a, b) while true do end end)", MO_ELIMIT,
		    "instruction budget of 2000000 exceeded");
	/* catching the error inside the C call does not buy more time */
	expect_fail(sb, "table.sort({ 3, 2, 1 }, function(a, b)"
			" while true do pcall(function() while true do end end) end end)",
		    MO_ELIMIT, "instruction budget");
	expect_fail(sb, "while true do pcall(table.sort, { 3, 2, 1 }, function() while true do end end) end",
		    MO_ELIMIT, "instruction budget");
	expect_fail(sb, "return (string.gsub('aaa', 'a', function() while true do end end))", MO_ELIMIT,
		    "instruction budget");
	assert_usable(sb);
	mo_sandbox_free(sb);
}

static void test_sandbox_budget_c_loops(void **state)
{
	mo_sandbox *sb = new_sandbox(NULL, NULL, 2000000, 0);
	(void)state;

	/* library loops that neither run VM code nor allocate are charged */
	expect_ok(sb, "return #string.rep('', 1 << 62) + #string.rep('', 1 << 62, '')", "0");
	expect_fail(sb, "table.move({}, 1, 1 << 62, 2)", MO_ELIMIT, "instruction budget of 2000000 exceeded");
	expect_fail(sb, "local t = setmetatable({}, { __len = function() return 1 << 62 end })"
			" table.insert(t, 1, 'x')", MO_ELIMIT, "instruction budget");
	expect_fail(sb, "local t = setmetatable({}, { __len = function() return 1 << 62 end })"
			" table.remove(t, 1)", MO_ELIMIT, "instruction budget");
	expect_fail(sb, "while true do pcall(table.move, {}, 1, 1 << 62, 2) end", MO_ELIMIT, "instruction budget");
	/* and behave as the library's otherwise */
	expect_ok(sb, "local t = { 1, 2, 3 } table.insert(t, 'e') table.insert(t, 1, 'b')"
		      " local r = table.remove(t, 2) .. table.remove(t) .. tostring(table.remove({}))"
		      " return r .. ':' .. table.concat(t, ',') .. ':' .. ('ab'):rep(3, '-')"
		      " .. ':' .. table.concat(table.move({ 1, 2, 3 }, 1, 3, 2), ',')",
		  "1enil:b,2,3:ab-ab-ab:1,1,2,3");
	expect_fail(sb, "table.insert({}, 5, 'x')", MO_EMODULE,
		    NAME ": test:1: bad argument #2 to 'insert' (position out of bounds)");
	expect_fail(sb, "table.move({}, 1, 2, 1, 7)", MO_EMODULE, "test:1: bad argument #5 to 'move' (table expected, got number)");
	expect_fail(sb, "string.rep('x')", MO_EMODULE, "test:1: bad argument #2 to 'rep' (number expected, got no value)");
	expect_fail(sb, "table.insert({}, 1, 2, 3)", MO_EMODULE, "wrong number of arguments to 'insert'");
	expect_fail(sb, "table.remove({}, 7)", MO_EMODULE, "bad argument #2 to 'remove' (position out of bounds)");
	assert_usable(sb);
	mo_sandbox_free(sb);
}

static void test_sandbox_budget_close(void **state)
{
	mo_sandbox *sb = new_sandbox(NULL, NULL, 2000000, 0);
	(void)state;

	/* pending __close handlers never run past the budget when the task is
	 * freed (expect_fail frees it) */
	expect_fail(sb, "local x <close> = setmetatable({}, { __close = function() while true do end end })\n"
			"while true do end", MO_ELIMIT, "instruction budget");
	expect_fail(sb, "local x <close> = setmetatable({}, { __close = function() while true do end end })\n"
			"error('boom')", MO_EMODULE, NAME ": test:2: boom");
	assert_usable(sb);
	mo_sandbox_free(sb);
}

static void test_sandbox_budget_configurable(void **state)
{
	const char *code = "local s = 0 for i = 1, 100000 do s = s + i end return s";
	mo_sandbox *sb;
	mo_task *t;
	int status, nres;
	(void)state;

	sb = new_sandbox(NULL, NULL, 10000, 0);
	expect_fail(sb, code, MO_ELIMIT, "instruction budget of 10000 exceeded");
	mo_sandbox_free(sb);

	sb = new_sandbox(NULL, NULL, 10000000, 0);
	assert_int_equal(run(sb, code, &t, &status, &nres), 0);
	assert_int_equal(status, MO_TASK_DONE);
	assert_int_equal(nres, 1);
	assert_int_equal(lua_tointeger(mo_task_thread(t), -1), 5000050000LL);
	assert_true(mo_task_instructions(t) > 100000);
	assert_true(mo_task_instructions(t) <= 10000000);
	mo_task_free(t);
	mo_sandbox_free(sb);
}

/* ---- memory caps -------------------------------------------------------- */

static void test_sandbox_memory_bomb(void **state)
{
	mo_sandbox *sb = new_sandbox(NULL, NULL, 0, 0);
	size_t before = mo_sandbox_mem(sb);
	(void)state;

	assert_true(before > 0);
	expect_fail(sb, "local t = {} for i = 1, 1e9 do t[i] = string.rep('x', 1024) .. i end", MO_ELIMIT,
		    NAME ": task 'test task': memory limit of 64 MiB exceeded");
	expect_ok(sb, "collectgarbage() return 1", "1");
	assert_true(mo_sandbox_mem(sb) < before + ((size_t)1 << 20));
	assert_usable(sb);
	mo_sandbox_free(sb);
}

static void test_sandbox_memory_huge_string(void **state)
{
	mo_sandbox *sb = new_sandbox(NULL, NULL, 0, 0);
	(void)state;

	/* past what a Lua string may hold: a plain error */
	expect_fail(sb, "return string.rep('x', 1 << 40)", MO_EMODULE,
		    NAME ": test:1: resulting string too large");
	expect_fail(sb, "return ('x'):rep(1 << 62, 'y')", MO_EMODULE, "resulting string too large");
	/* within it but past the task's cap (and the state's) */
	expect_fail(sb, "return string.rep('x', 1 << 30)", MO_ELIMIT,
		    NAME ": task 'test task': memory limit of 64 MiB exceeded");
	expect_fail(sb, "local s = string.rep('x', 1 << 25) return s .. s .. s", MO_ELIMIT,
		    "memory limit of 64 MiB exceeded");
	/* code can catch it and go on */
	expect_ok(sb, "local ok, e = pcall(string.rep, 'x', 1 << 30) return tostring(ok) .. ' ' .. e",
		  "false not enough memory");
	expect_fail(sb, "local ok, e = pcall(string.rep, 'x', 1 << 30) error(e)", MO_ELIMIT,
		    "memory limit of 64 MiB exceeded");
	assert_usable(sb);
	mo_sandbox_free(sb);
}

static void test_sandbox_memory_configurable(void **state)
{
	mo_sandbox *sb = new_sandbox(NULL, NULL, 0, (size_t)1 << 20);
	size_t before;
	(void)state;

	expect_fail(sb, "local t = {} for i = 1, 1e6 do t[i] = i .. '' end", MO_ELIMIT,
		    "memory limit of 1 MiB exceeded");
	/* the cap is per task: memory a task keeps does not count for the next */
	before = mo_sandbox_mem(sb);
	expect_ok(sb, "keep1 = {} for i = 1, 5000 do keep1[i] = i .. 'a' end return #keep1", "5000");
	expect_ok(sb, "keep2 = {} for i = 1, 5000 do keep2[i] = i .. 'b' end return #keep2", "5000");
	assert_true(mo_sandbox_mem(sb) > before + 200000);
	mo_sandbox_free(sb);
}

/* ---- errors ------------------------------------------------------------- */

static void test_sandbox_error_traceback(void **state)
{
	mo_sandbox *sb;
	mo_task *t;
	int status, nres;
	const char *tb;
	char abs[PATH_MAX * 2];
	tree tr;
	(void)state;

	tree_make(&tr);
	tree_put(&tr, "nested.lua",
		 "local function inner(x)\n"
		 "  error('boom ' .. x)\n"
		 "end\n"
		 "local function outer(x)\n"
		 "  inner(x + 1)\n"
		 "  return 1\n"
		 "end\n"
		 "outer(41)\n");
	tree_put(&tr, "bad.lua", "return {\n  a = 1,\n  b = = 2,\n}\n");
	sb = new_sandbox(tr.root, NULL, 0, 0);

	assert_int_equal(mo_sandbox_loadfile(sb, "nested.lua"), 0);
	assert_int_equal(mo_task_new(&t, sb, 0, "module.x.y create"), 0);
	assert_int_equal(mo_task_resume(t, 0, &status, &nres), MO_EMODULE);
	assert_string_equal(mo_error_last()->message, NAME ": nested.lua:2: boom 42");
	tb = mo_task_traceback(t);
	assert_non_null(strstr(tb, "stack traceback:"));
	assert_non_null(strstr(tb, "nested.lua:2: in upvalue 'inner'"));
	assert_non_null(strstr(tb, "nested.lua:5: in local 'outer'"));
	assert_non_null(strstr(tb, "nested.lua:8: in main chunk"));
	mo_task_free(t);

	/* an absolute path inside the tree reads the same */
	snprintf(abs, sizeof(abs), "%s/nested.lua", tr.root);
	assert_int_equal(mo_sandbox_loadfile(sb, abs), 0);
	assert_int_equal(mo_task_new(&t, sb, 0, "again"), 0);
	assert_int_equal(mo_task_resume(t, 0, &status, &nres), MO_EMODULE);
	assert_string_equal(mo_error_last()->message, NAME ": nested.lua:2: boom 42");
	mo_task_free(t);

	assert_int_equal(mo_sandbox_loadfile(sb, "bad.lua"), MO_EMODULE);
	assert_string_equal(mo_error_last()->message, NAME ": bad.lua:3: unexpected symbol near '='");
	assert_int_equal(mo_sandbox_loadfile(sb, "missing.lua"), MO_ENOTFOUND);
	assert_non_null(strstr(mo_error_last()->message, NAME ": "));
	assert_int_equal(lua_gettop(mo_sandbox_L(sb)), 0);

	assert_usable(sb);
	mo_sandbox_free(sb);
	tree_remove(&tr);
}

static void test_sandbox_error_objects(void **state)
{
	mo_sandbox *sb = new_sandbox(NULL, NULL, 0, 0);
	(void)state;

	expect_fail(sb, "error({ code = 42 })", MO_EMODULE, NAME ": (error object is a table value)");
	expect_fail(sb, "error()", MO_EMODULE, NAME ": (error object is a nil value)");
	expect_fail(sb, "error(true)", MO_EMODULE, NAME ": (error object is a boolean value)");
	expect_fail(sb, "error(42)", MO_EMODULE, NAME ": 42");
	expect_fail(sb, "error(setmetatable({}, { __tostring = function() return 'custom failure' end }))",
		    MO_EMODULE, NAME ": custom failure");
	/* a __tostring that misbehaves cannot hang or break the engine */
	expect_fail(sb, "error(setmetatable({}, { __tostring = function() while true do end end }))",
		    MO_EMODULE, NAME ": (error object is a table value)");
	expect_fail(sb, "error(setmetatable({}, { __tostring = function()"
			" while true do pcall(function() while true do end end) end end }))",
		    MO_EMODULE, NAME ": (error object is a table value)");
	expect_fail(sb, "error(setmetatable({}, { __tostring = function() error('again') end }))",
		    MO_EMODULE, NAME ": (error object is a table value)");
	expect_fail(sb, "error(setmetatable({}, { __tostring = function() return {} end }))",
		    MO_EMODULE, NAME ": (error object is a table value)");
	assert_usable(sb);
	mo_sandbox_free(sb);
}

/* ---- C side: task lookup, drivers, logging ------------------------------ */

static int whoami(lua_State *L)
{
	lua_pushlightuserdata(L, mo_task_from_lua(L));
	lua_pushlightuserdata(L, mo_sandbox_from_lua(L));
	return 2;
}

static void test_sandbox_task_from_lua(void **state)
{
	mo_sandbox *sb = new_sandbox(NULL, NULL, 0, 0);
	lua_State *L = mo_sandbox_L(sb);
	mo_task *t;
	int status, nres;
	int marker;
	(void)state;

	lua_pushcfunction(L, whoami);
	lua_setglobal(L, "whoami");
	assert_null(mo_task_from_lua(L));
	assert_ptr_equal(mo_sandbox_from_lua(L), sb);

	assert_int_equal(run(sb, "local t, s = whoami() return t, s", &t, &status, &nres), 0);
	assert_int_equal(status, MO_TASK_DONE);
	assert_int_equal(nres, 2);
	assert_ptr_equal(lua_touserdata(mo_task_thread(t), -2), t);
	assert_ptr_equal(lua_touserdata(mo_task_thread(t), -1), sb);
	assert_ptr_equal(mo_task_from_lua(mo_task_thread(t)), t);
	assert_ptr_equal(mo_sandbox_from_lua(mo_task_thread(t)), sb);
	assert_ptr_equal(mo_task_sandbox(t), sb);
	assert_string_equal(mo_task_label(t), "test task");
	assert_string_equal(mo_task_traceback(t), "");
	mo_task_set_userdata(t, &marker);
	assert_ptr_equal(mo_task_userdata(t), &marker);
	mo_task_free(t);
	assert_string_equal(mo_sandbox_name(sb), NAME);
	assert_null(mo_sandbox_root(sb));
	assert_null(mo_sandbox_rt(sb));
	mo_sandbox_free(sb);
}

/* A driver-style function: suspend the task and yield to the executor. */
static int wait_driver(lua_State *L)
{
	mo_task *t = mo_task_from_lua(L);
	if (!t)
		return luaL_error(L, "wait: not inside a task");
	mo_task_suspend(t);
	return lua_yield(L, 0);
}

typedef struct {
	mo_task *task;
	int nargs;
	int calls;
} wake_rec;

static void on_wake(mo_task *t, int nargs, void *ud)
{
	wake_rec *r = ud;
	r->task = t;
	r->nargs = nargs;
	r->calls++;
}

static void test_sandbox_suspend_wake(void **state)
{
	mo_sandbox *sb = new_sandbox(NULL, NULL, 0, 0);
	lua_State *L = mo_sandbox_L(sb), *th;
	const char *code = "local a, b = wait()\n"
			   "local c = wait()\n"
			   "return type(a) .. ':' .. a .. ',' .. type(b) .. ':' .. b .. ',' .. c";
	wake_rec rec = { NULL, -1, 0 };
	mo_task *t;
	int status = -1, nres = -1;
	(void)state;

	lua_pushcfunction(L, wait_driver);
	lua_setglobal(L, "wait");
	assert_int_equal(mo_sandbox_loadbuffer(sb, code, strlen(code), "driver.lua"), 0);
	assert_int_equal(mo_task_new(&t, sb, 0, "waiter"), 0);
	mo_task_set_wake(t, on_wake, &rec);
	th = mo_task_thread(t);

	assert_int_equal(mo_task_resume(t, 0, &status, &nres), 0);
	assert_int_equal(status, MO_TASK_WAITING);
	assert_int_equal(nres, 0);
	assert_true(mo_task_is_waiting(t));

	/* the driver's work completes: results onto the thread, then wake */
	lua_pushstring(th, "hello");
	lua_pushinteger(th, 42);
	mo_task_wake(t, 2);
	assert_int_equal(rec.calls, 1);
	assert_int_equal(rec.nargs, 2);
	assert_ptr_equal(rec.task, t);
	assert_false(mo_task_is_waiting(t));

	assert_int_equal(mo_task_resume(t, 2, &status, &nres), 0);
	assert_int_equal(status, MO_TASK_WAITING);
	lua_pushstring(th, "third");
	mo_task_wake(t, 1);
	assert_int_equal(rec.calls, 2);
	assert_int_equal(rec.nargs, 1);

	assert_int_equal(mo_task_resume(t, 1, &status, &nres), 0);
	assert_int_equal(status, MO_TASK_DONE);
	assert_int_equal(nres, 1);
	assert_string_equal(lua_tostring(th, -1), "string:hello,number:42,third");
	mo_task_free(t);

	/* a task freed while it waits is dropped; its <close> handlers run,
	 * under the budget */
	code = "local x <close> = setmetatable({}, { __close = function() closed = true end })\n"
	       "wait()\n";
	assert_int_equal(mo_sandbox_loadbuffer(sb, code, strlen(code), "driver.lua"), 0);
	assert_int_equal(mo_task_new(&t, sb, 0, "abandoned"), 0);
	assert_int_equal(mo_task_resume(t, 0, &status, &nres), 0);
	assert_int_equal(status, MO_TASK_WAITING);
	mo_task_free(t);
	expect_ok(sb, "return closed", "true");
	assert_usable(sb);
	mo_sandbox_free(sb);

	sb = new_sandbox(NULL, NULL, 2000000, 0);
	L = mo_sandbox_L(sb);
	lua_pushcfunction(L, wait_driver);
	lua_setglobal(L, "wait");
	code = "local x <close> = setmetatable({}, { __close = function()"
	       " while true do pcall(function() while true do end end) end end })\n"
	       "wait()\n";
	assert_int_equal(mo_sandbox_loadbuffer(sb, code, strlen(code), "driver.lua"), 0);
	assert_int_equal(mo_task_new(&t, sb, 0, "abandoned"), 0);
	assert_int_equal(mo_task_resume(t, 0, &status, &nres), 0);
	assert_int_equal(status, MO_TASK_WAITING);
	mo_task_free(t);
	assert_usable(sb);
	mo_sandbox_free(sb);
}

static int bad_yield(lua_State *L)
{
	return lua_yield(L, 0);
}

static void test_sandbox_task_args_and_yield(void **state)
{
	mo_sandbox *sb = new_sandbox(NULL, NULL, 0, 0);
	lua_State *L = mo_sandbox_L(sb);
	const char *code = "return function(a, b) return a .. b, select('#', a, b) end";
	mo_task *t;
	int status, nres;
	(void)state;

	/* a task created from a function and two arguments */
	assert_int_equal(run(sb, code, &t, &status, &nres), 0);
	lua_xmove(mo_task_thread(t), L, 1);
	mo_task_free(t);
	lua_pushstring(L, "ab");
	lua_pushstring(L, "cd");
	assert_int_equal(mo_task_new(&t, sb, 2, "with args"), 0);
	assert_int_equal(lua_gettop(L), 0);
	assert_int_equal(mo_task_resume(t, 0, &status, &nres), 0);
	assert_int_equal(nres, 2);
	assert_string_equal(lua_tostring(mo_task_thread(t), -2), "abcd");
	assert_int_equal(lua_tointeger(mo_task_thread(t), -1), 2);
	mo_task_free(t);

	/* not a function: refused, stack cleared */
	lua_pushinteger(L, 1);
	assert_int_equal(mo_task_new(&t, sb, 0, "bad"), MO_EINVAL);
	assert_int_equal(lua_gettop(L), 0);

	/* a yield that no driver asked for */
	lua_pushcfunction(L, bad_yield);
	lua_setglobal(L, "bad_yield");
	expect_fail(sb, "bad_yield()", MO_EMODULE, "task 'test task': yielded outside a driver call");
	assert_usable(sb);
	mo_sandbox_free(sb);
}

typedef struct {
	mo_buf lines;
} log_rec;

static void log_fn(void *ud, const char *who, const char *level, const char *msg)
{
	log_rec *r = ud;
	assert_int_equal(mo_buf_printf(&r->lines, "%s|%s|%s\n", who, level, msg), 0);
}

static void test_sandbox_print(void **state)
{
	log_rec rec = { MO_BUF_INIT };
	mo_rt rt;
	mo_sandbox *sb;
	(void)state;

	memset(&rt, 0, sizeof(rt));
	rt.log = log_fn;
	rt.log_ud = &rec;
	sb = new_sandbox(NULL, &rt, 0, 0);
	assert_ptr_equal(mo_sandbox_rt(sb), &rt);
	expect_ok(sb, "print('hello', 42, nil, true) print() return 1", "1");
	assert_string_equal(rec.lines.ptr, NAME "|info|hello\t42\tnil\ttrue\n" NAME "|info|\n");
	mo_sandbox_free(sb);
	mo_buf_free(&rec.lines);

	/* without a runtime, output is dropped */
	sb = new_sandbox(NULL, NULL, 0, 0);
	expect_ok(sb, "print('nobody listens') return 2", "2");
	mo_sandbox_free(sb);
}

/* ---- construction ------------------------------------------------------- */

static void test_sandbox_new_errors(void **state)
{
	mo_sandbox *sb = NULL;
	(void)state;

	assert_int_equal(mo_sandbox_new(&sb, "/nonexistent/mecorch/tree", NAME, NULL, NULL), MO_ENOTFOUND);
	assert_null(sb);
	assert_non_null(strstr(mo_error_last()->message, "/nonexistent/mecorch/tree"));
}

/* Every allocation failure while creating a sandbox and running a task is
 * reported, never a crash or a leak. */
static void test_sandbox_alloc_failures(void **state)
{
	const char *code = "local t = {} for i = 1, 100 do t[i] = ('v' .. i):rep(3) end return #t";
	int created = 0, ran = 0;
	(void)state;

	for (long n = 1; n < 100000 && !created; n++) {
		mo_sandbox *sb = NULL;
		int rc;
		mo_alloc_fail_after(n);
		rc = mo_sandbox_new(&sb, NULL, NAME, NULL, NULL);
		mo_alloc_fail_after(0);
		if (rc == 0) {
			created = 1;
			mo_sandbox_free(sb);
		} else {
			assert_int_equal(rc, MO_ENOMEM);
		}
	}
	assert_true(created);

	for (long n = 1; n < 100000 && !ran; n++) {
		mo_sandbox *sb = new_sandbox(NULL, NULL, 0, 0);
		mo_task *t = NULL;
		int status = -1, nres = -1, rc;
		mo_alloc_fail_after(n);
		rc = run(sb, code, &t, &status, &nres);
		mo_alloc_fail_after(0);
		if (rc == 0) {
			ran = 1;
			assert_int_equal(status, MO_TASK_DONE);
			assert_int_equal(lua_tointeger(mo_task_thread(t), -1), 100);
		} else {
			assert_true(rc == MO_ENOMEM || rc == MO_EMODULE);
		}
		mo_task_free(t);
		assert_usable(sb);
		mo_sandbox_free(sb);
	}
	assert_true(ran);
}

static void test_sandbox_free_order(void **state)
{
	mo_sandbox *sb = new_sandbox(NULL, NULL, 0, 0);
	mo_task *t;
	int status, nres;
	(void)state;

	/* a task that outlives its sandbox can still be freed */
	assert_int_equal(run(sb, "return 1", &t, &status, &nres), 0);
	mo_sandbox_free(sb);
	assert_null(mo_task_sandbox(t));
	assert_int_equal(mo_task_resume(t, 0, &status, &nres), MO_EINVAL);
	mo_task_free(t);
	mo_task_free(NULL);
	mo_sandbox_free(NULL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_sandbox_globals),
		cmocka_unit_test(test_sandbox_io_os_refused),
		cmocka_unit_test(test_sandbox_load_binary_refused),
		cmocka_unit_test(test_sandbox_gc_refused),
		cmocka_unit_test(test_sandbox_require),
		cmocka_unit_test(test_sandbox_budget_infinite_loop),
		cmocka_unit_test(test_sandbox_budget_pcall),
		cmocka_unit_test(test_sandbox_budget_in_c_call),
		cmocka_unit_test(test_sandbox_budget_c_loops),
		cmocka_unit_test(test_sandbox_budget_close),
		cmocka_unit_test(test_sandbox_budget_configurable),
		cmocka_unit_test(test_sandbox_memory_bomb),
		cmocka_unit_test(test_sandbox_memory_huge_string),
		cmocka_unit_test(test_sandbox_memory_configurable),
		cmocka_unit_test(test_sandbox_error_traceback),
		cmocka_unit_test(test_sandbox_error_objects),
		cmocka_unit_test(test_sandbox_task_from_lua),
		cmocka_unit_test(test_sandbox_suspend_wake),
		cmocka_unit_test(test_sandbox_task_args_and_yield),
		cmocka_unit_test(test_sandbox_print),
		cmocka_unit_test(test_sandbox_new_errors),
		cmocka_unit_test(test_sandbox_alloc_failures),
		cmocka_unit_test(test_sandbox_free_order),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
