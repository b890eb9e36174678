/*
 * registry.c - the table of drivers handed to modules as ctx fields.
 *
 * Adding a driver is one row here: the ctx field it appears as, and the
 * luaopen-style function that pushes it.  Each module sandbox opens every
 * driver once (mo_drivers_open); each action's ctx gets the fields
 * (mo_drivers_push_ctx).
 */
#include "drivers.h"
#include "common.h"

#include <lauxlib.h>

static const mo_driver drivers[] = {
	{ "http", mo_open_http },   /* drivers/http.c: request */
	{ "sleep", mo_open_sleep }, /* drivers/http.c: sleep(ms) */
	{ "json", mo_open_json },   /* drivers/json.c: encode, decode, null, array */
	{ "log", mo_open_log },     /* drivers/log.c: log(level, msg) */
	{ "ssh", mo_open_ssh },     /* drivers/ssh.c: exec, put, get */
	{ "crypto", mo_open_crypto }, /* drivers/crypto.c: sha256, hmac_sha256, base64, uuid */
	{ "time", mo_open_time },   /* drivers/time.c: now, http_date, iso8601 */
};

/* Open every driver into the registry of L ("mecorch.drv.<field>"). */
void mo_drivers_open(lua_State *L)
{
	for (size_t i = 0; i < MO_ARRAY_SIZE(drivers); i++) {
		lua_pushfstring(L, "mecorch.drv.%s", drivers[i].field);
		drivers[i].open(L);
		lua_rawset(L, LUA_REGISTRYINDEX);
	}
}

/* Set every driver as a field of the table on top of L. */
void mo_drivers_push_ctx(lua_State *L)
{
	for (size_t i = 0; i < MO_ARRAY_SIZE(drivers); i++) {
		lua_pushfstring(L, "mecorch.drv.%s", drivers[i].field);
		lua_rawget(L, LUA_REGISTRYINDEX);
		lua_setfield(L, -2, drivers[i].field);
	}
}
