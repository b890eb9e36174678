/*
 * log.c - the ctx.log driver: log(msg) or log(level, msg), routed to the
 * runtime's logger with the task's label as the speaker.
 */
#include "drivers.h"
#include "common.h"
#include "planner.h"
#include "runtime.h"
#include "sandbox.h"

#include <lauxlib.h>
#include <string.h>

static int l_log(lua_State *L)
{
	const char *level = "info", *msg;
	mo_sandbox *sb = mo_sandbox_from_lua(L);
	mo_task *t = mo_task_from_lua(L);
	mo_rt *rt = sb ? mo_sandbox_rt(sb) : NULL;
	if (lua_gettop(L) >= 2) {
		level = luaL_checkstring(L, 1);
		if (strcmp(level, "debug") && strcmp(level, "info") && strcmp(level, "warn") &&
		    strcmp(level, "error"))
			return luaL_error(L, "ctx.log: level must be debug, info, warn or error");
		msg = luaL_tolstring(L, 2, NULL);
	} else {
		msg = luaL_tolstring(L, 1, NULL);
	}
	if (rt && rt->log) {
		/* a module may log a secret it was given: never let it out */
		char *masked = rt->secrets ? mo_mask_text(rt->secrets, msg) : NULL;
		rt->log(rt->log_ud, t ? mo_task_label(t) : (sb ? mo_sandbox_name(sb) : "?"), level,
			masked ? masked : msg);
		mo_free(masked);
	}
	return 0;
}

int mo_open_log(lua_State *L)
{
	lua_pushcfunction(L, l_log);
	return 1;
}
