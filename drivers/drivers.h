/*
 * drivers.h - the C capabilities handed to Lua modules through `ctx`.
 *
 * Each driver is opened like a Lua library (luaopen style): it pushes one
 * table of functions.  The executor builds ctx from them:
 *   ctx.http   = mo_open_http(L)    request{...}     (drivers/http.c)
 *   ctx.sleep  = from mo_open_time  sleep(ms)        (drivers/http.c)
 *   ctx.json   = mo_open_json(L)    encode / decode  (drivers/json.c)
 *   ctx.log    = from mo_open_log   log(level, ...)  (drivers/log.c)
 * Driver functions that do I/O must run inside a task (sandbox.h) and
 * suspend it; they raise a Lua error when called outside one.
 * A driver knows protocols, never a domain's model.
 */
#ifndef MO_DRIVERS_H
#define MO_DRIVERS_H

#include <lua.h>

/* Stack: +1 (the http table: request). */
int mo_open_http(lua_State *L);
/* Stack: +1 (the sleep function). */
int mo_open_sleep(lua_State *L);
/* Stack: +1 (the json table: encode, decode, null, array). */
int mo_open_json(lua_State *L);
/* Stack: +1 (the log function: log(msg) / log(level, msg)). */
int mo_open_log(lua_State *L);

#endif
