/*
 * drivers.h - the C capabilities handed to Lua modules through `ctx`.
 *
 * Each driver is opened like a Lua library (luaopen style): it pushes one
 * table of functions.  The executor builds ctx from them:
 *   ctx.http   = mo_open_http(L)    request{...}     (drivers/http.c)
 *   ctx.sleep  = from mo_open_sleep  sleep(ms)        (drivers/http.c)
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
/* Stack: +1 (the ssh table: exec, put, get; drivers/ssh.c). */
int mo_open_ssh(lua_State *L);
/* Stack: +1 (the crypto table: sha256, md5, hmac_sha256, base64_encode,
 * base64_decode, hex_encode, uuid).  drivers/crypto.c */
int mo_open_crypto(lua_State *L);
/* Stack: +1 (the time table: now, http_date, iso8601).  drivers/time.c */
int mo_open_time(lua_State *L);

/* The driver table (drivers/registry.c). */
typedef struct {
	const char *field;            /* ctx.<field> */
	int (*open)(lua_State *L);    /* pushes the driver's value; stack +1 */
} mo_driver;

/* Open every driver into L's registry. Stack: 0. */
void mo_drivers_open(lua_State *L);
/* Set every driver as a field of the table on top of L. Stack: 0. */
void mo_drivers_push_ctx(lua_State *L);

#endif
