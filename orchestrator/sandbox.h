/*
 * sandbox.h - Lua 5.4 states for untrusted module and plan code, and the
 * tasks (coroutines) that run in them.
 *
 * A sandbox is one lua_State whose globals hold only safe libraries: base
 * (without dofile, loadfile, and with load() forced to text mode), string
 * (without dump), table, math, utf8.  No io, os, debug, package, coroutine.
 * `require(name)` resolves "a.b" to <root>/a/b.lua and refuses anything that
 * leaves the root (.., absolute paths, symlinks pointing outside).
 *
 * Every piece of module code runs as a task: a coroutine with its own
 * instruction budget and memory cap.  The budget is enforced by a count
 * hook that, once exhausted, yields the coroutine out from under any pcall;
 * the memory cap by the state's allocator, which charges growth to the task
 * that is running.  Errors carry the sandbox name, file:line and a
 * traceback.
 *
 * Drivers (ctx.http, ctx.sleep, ...) suspend the running task with
 * mo_task_suspend() + lua_yield(); when their work completes they push the
 * results onto the task's thread and call mo_task_wake(), which hands the
 * task back to the executor through the wake callback.
 *
 * Not thread-safe: a sandbox and its tasks belong to the loop thread.
 */
#ifndef MO_SANDBOX_H
#define MO_SANDBOX_H

#include <lua.h>
#include <stddef.h>
#include <stdint.h>

typedef struct mo_rt mo_rt;
typedef struct mo_sandbox mo_sandbox;
typedef struct mo_task mo_task;

typedef struct {
	size_t task_mem;        /* bytes a task may grow the state by; default 64 MiB */
	size_t state_mem;       /* bytes the whole state may hold; default 1 GiB */
	uint64_t task_instr;    /* VM instructions per task; default 200,000,000 */
} mo_sandbox_limits;

void mo_sandbox_limits_defaults(mo_sandbox_limits *lim);

/* Create a sandbox.  root: the directory require() is confined to (NULL:
 * require is refused).  name: used in every error ("module lab/generic").
 * rt: the runtime the drivers use; may be NULL for code that does no I/O.
 * lim: NULL for defaults.  *out is the caller's (mo_sandbox_free). */
int mo_sandbox_new(mo_sandbox **out, const char *root, const char *name,
		   mo_rt *rt, const mo_sandbox_limits *lim);
void mo_sandbox_free(mo_sandbox *sb);

lua_State *mo_sandbox_L(mo_sandbox *sb);
const char *mo_sandbox_name(const mo_sandbox *sb);
const char *mo_sandbox_root(const mo_sandbox *sb);
mo_rt *mo_sandbox_rt(mo_sandbox *sb);
/* The sandbox that owns L (any thread of its state). */
mo_sandbox *mo_sandbox_from_lua(lua_State *L);
/* Bytes currently allocated by the state. */
size_t mo_sandbox_mem(const mo_sandbox *sb);

/* Load a text chunk from path (absolute, or relative to root) with the
 * sandbox's globals as its _ENV; pushes the function on the main stack.
 * chunkname for messages is the path relative to root. */
int mo_sandbox_loadfile(mo_sandbox *sb, const char *path);
/* As above from memory. */
int mo_sandbox_loadbuffer(mo_sandbox *sb, const char *buf, size_t len, const char *chunkname);

/* Task states returned by mo_task_resume through *status. */
enum { MO_TASK_DONE = 0, MO_TASK_WAITING = 1 };

typedef void (*mo_task_wake_fn)(mo_task *t, int nargs, void *ud);

/* Create a task from the function and nargs arguments on top of the
 * sandbox's main stack (all popped, on failure too).  label names it in errors
 * ("module.web.object.a create").  The task is the caller's (mo_task_free). */
int mo_task_new(mo_task **out, mo_sandbox *sb, int nargs, const char *label);
/* Never from inside the task's own C functions. */
void mo_task_free(mo_task *t);

/* Run the task until it finishes, waits for a driver, or fails.
 * nargs: values already pushed on the task's thread (0 on the first
 * resume; a driver's results after a wake).  On MO_TASK_DONE *nres results
 * are on top of the task's thread.  Returns 0, or MO_EMODULE (a Lua error,
 * message "name: file:line: msg" with a traceback in mo_task_traceback()),
 * or MO_ELIMIT (instruction budget or memory cap), MO_ENOMEM (a real
 * allocation failure, not a cap), MO_EINVAL (the task already finished or
 * its sandbox is gone). */
int mo_task_resume(mo_task *t, int nargs, int *status, int *nres);

lua_State *mo_task_thread(mo_task *t);
mo_sandbox *mo_task_sandbox(mo_task *t);
const char *mo_task_label(const mo_task *t);
/* The traceback of the last failure, or "". */
const char *mo_task_traceback(const mo_task *t);
uint64_t mo_task_instructions(const mo_task *t);

void mo_task_set_wake(mo_task *t, mo_task_wake_fn fn, void *ud);
void mo_task_set_userdata(mo_task *t, void *ud);
void *mo_task_userdata(const mo_task *t);

/* The task L is running as, or NULL (L is not a task's thread). */
mo_task *mo_task_from_lua(lua_State *L);

/* Driver side.  Call mo_task_suspend(t) before `return lua_yield(L, 0)`;
 * later push nargs results on mo_task_thread(t) and call mo_task_wake(). */
void mo_task_suspend(mo_task *t);
void mo_task_wake(mo_task *t, int nargs);
int mo_task_is_waiting(const mo_task *t);

#endif
