/*
 * lj.h - values crossing between Lua and the core's opaque JSON (jansson),
 * and deferred references.
 *
 * The core keeps props, inputs and outputs as JSON.  Lua tables convert to
 * arrays when their keys are exactly 1..n (n > 0) and to objects when all
 * keys are strings; an empty table is an object unless marked with
 * ctx.json.array().  JSON arrays come back into Lua marked as arrays, so a
 * value survives the round trip.  JSON null is ctx.json.null.
 *
 * A reference is a value known only after another resource is applied.  In
 * JSON it is one of these marker objects (keys starting with "$" are
 * reserved for them):
 *   {"$ref": "module.web.object.a", "path": ["url"]}   a resource's output
 *   {"$ref": "module.web", "path": ["ids", "a"]}       a module's output
 *   {"$tmpl": ["http://", {"$ref": ...}, ":8080"]}     a string built of parts
 *   {"$unknown": "module.web.object.a.url"}            unresolved at plan time
 * In Lua a reference is a userdata of type "mecorch.ref": indexing it
 * extends its path (h.url, net.ids.a), `..` builds a template, tostring()
 * shows it, arithmetic and comparisons on it are errors explaining why.
 */
#ifndef MO_LJ_H
#define MO_LJ_H

#include <jansson.h>
#include <lua.h>

/* Register the metatables (idempotent).  Stack: 0. */
void mo_lj_init(lua_State *L);

/* Convert the Lua value at idx to JSON.  what names the value in errors
 * ("props", "outputs"); the message names the path ("props.tags[2]: ...").
 * *out is a new reference.  Returns 0 or MO_EINVAL / MO_ENOMEM. */
int mo_lj_to_json(lua_State *L, int idx, const char *what, json_t **out);

/* Push v as a Lua value (reference markers become references).  Stack: +1. */
void mo_lj_push(lua_State *L, const json_t *v);

/* Data keys starting with "$" are reserved for markers: the model
 * conversions above keep a data key "$x" as "$$x" in JSON and give it back
 * as "$x", so no plan, module or API response can forge a reference.  The
 * raw variants convert plain JSON both ways (HTTP bodies, ctx.json): no
 * escaping, no markers. */
int mo_lj_to_json_raw(lua_State *L, int idx, const char *what, json_t **out);
void mo_lj_push_raw(lua_State *L, const json_t *v);
/* Plain JSON from outside (a --var-file) in the model's form: "$x" keys
 * become "$$x".  New reference. */
json_t *mo_lj_escape(const json_t *v);

/* Push a new reference for marker (copied).  Stack: +1. */
void mo_lj_push_ref(lua_State *L, const json_t *marker);
/* The marker of the reference at idx, or NULL (borrowed). */
const json_t *mo_lj_toref(lua_State *L, int idx);

/* Marker helpers. */
json_t *mo_ref_new(const char *addr, json_t *path /* stolen; NULL = [] */);
int mo_ref_is(const json_t *v);      /* {"$ref":...} */
int mo_tmpl_is(const json_t *v);     /* {"$tmpl":[...]} */
int mo_unknown_is(const json_t *v);  /* {"$unknown":...} */
/* 1 when v holds a $ref, $tmpl or $unknown anywhere. */
int mo_json_has_deferred(const json_t *v);
/* Text form "module.web.object.a.url" of a $ref marker (caller's). */
char *mo_ref_text(const json_t *ref);

#endif
