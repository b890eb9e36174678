/*
 * time.c - the ctx.time driver: the wall clock and the date formats that
 * cloud protocols sign and send, always in UTC.
 *
 *   now()                    seconds since the epoch, a float (wall clock)
 *   http_date([t])           RFC 1123: "Sun, 06 Nov 1994 08:49:37 GMT"
 *   iso8601([t [, format]])  format "basic" (default): "20130524T000000Z"
 *                            "extended": "2013-05-24T00:00:00Z"
 *                            "date": "20130524"
 *
 * t is seconds since the epoch (a number; the fraction is dropped, rounding
 * towards the past); nil or absent means now.  Years 1 to 9999 only.  Day
 * and month names are fixed English (never the C locale's).  Synchronous,
 * no I/O; invalid arguments raise a Lua error naming the function.
 */
#include "drivers.h"

#include <lauxlib.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

/* 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z */
#define T_MIN (-62135596800.0)
#define T_MAX (253402300799.0)

static double wall_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The broken-down UTC time of argument arg of fn (now when nil/absent). */
static void check_time(lua_State *L, int arg, const char *fn, struct tm *tm)
{
	double t;
	time_t secs;
	if (lua_isnoneornil(L, arg)) {
		t = wall_now();
	} else {
		if (lua_type(L, arg) != LUA_TNUMBER)
			luaL_error(L,
				   "ctx.time.%s: t must be a number of seconds since the epoch, "
				   "got %s",
				   fn, luaL_typename(L, arg));
		t = lua_tonumber(L, arg);
		if (!(t >= T_MIN && t < T_MAX + 1.0))
			luaL_error(L, "ctx.time.%s: t is out of range (years 1 to 9999)", fn);
	}
	secs = (time_t)floor(t);
	if (!gmtime_r(&secs, tm))
		luaL_error(L, "ctx.time.%s: t cannot be converted to a date", fn);
}

/* now().  Stack: 0 in, seconds out. */
static int l_now(lua_State *L)
{
	lua_pushnumber(L, (lua_Number)wall_now());
	return 1;
}

/* http_date([t]).  Stack: 0-1 in, the date out. */
static int l_http_date(lua_State *L)
{
	static const char *const days[] = { "Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat" };
	static const char *const months[] = { "Jan", "Feb", "Mar", "Apr", "May", "Jun",
					      "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" };
	struct tm tm;
	char s[64];
	check_time(L, 1, "http_date", &tm);
	snprintf(s, sizeof(s), "%s, %02d %s %04d %02d:%02d:%02d GMT", days[tm.tm_wday % 7],
		 tm.tm_mday, months[tm.tm_mon % 12], tm.tm_year + 1900, tm.tm_hour, tm.tm_min,
		 tm.tm_sec);
	lua_pushstring(L, s);
	return 1;
}

/* iso8601([t [, format]]).  Stack: 0-2 in, the date out. */
static int l_iso8601(lua_State *L)
{
	struct tm tm;
	char s[64];
	const char *fmt = "basic";
	if (!lua_isnoneornil(L, 2)) {
		if (lua_type(L, 2) != LUA_TSTRING)
			return luaL_error(L,
					  "ctx.time.iso8601: format must be \"basic\", "
					  "\"extended\" or \"date\", got %s",
					  luaL_typename(L, 2));
		fmt = lua_tostring(L, 2);
	}
	check_time(L, 1, "iso8601", &tm);
	if (strcmp(fmt, "basic") == 0)
		snprintf(s, sizeof(s), "%04d%02d%02dT%02d%02d%02dZ", tm.tm_year + 1900,
			 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
	else if (strcmp(fmt, "extended") == 0)
		snprintf(s, sizeof(s), "%04d-%02d-%02dT%02d:%02d:%02dZ", tm.tm_year + 1900,
			 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
	else if (strcmp(fmt, "date") == 0)
		snprintf(s, sizeof(s), "%04d%02d%02d", tm.tm_year + 1900, tm.tm_mon + 1,
			 tm.tm_mday);
	else
		return luaL_error(L,
				  "ctx.time.iso8601: format must be \"basic\", \"extended\" "
				  "or \"date\", got \"%s\"",
				  fmt);
	lua_pushstring(L, s);
	return 1;
}

int mo_open_time(lua_State *L)
{
	static const luaL_Reg fns[] = {
		{ "now", l_now },
		{ "http_date", l_http_date },
		{ "iso8601", l_iso8601 },
		{ NULL, NULL },
	};
	luaL_newlib(L, fns);
	return 1;
}
