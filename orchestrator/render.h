/*
 * render.h - presenting a change set: the human diff, the Terraform-style
 * JSON document, the digest that pins a saved plan, and value display with
 * sensitive and unknown values masked.
 */
#ifndef MO_RENDER_H
#define MO_RENDER_H

#include <jansson.h>
#include <stdio.h>

#include "common.h"
#include "planner.h"

typedef struct {
	int color;       /* ANSI colours */
	int show_noop;   /* list unchanged resources too */
} mo_render_opts;

/* Human-readable plan, as `mecorch plan` prints it. */
int mo_render_plan_text(const mo_changeset *cs, const mo_render_opts *o, mo_buf *out);

/* {"format_version", "resource_changes":[{address, module, type, name,
 * change:{actions, before, after, after_unknown, before_sensitive,
 * after_sensitive}, action_reason}], "output_changes":{...}} — sensitive
 * values appear as null with true in the *_sensitive mask.  New reference. */
json_t *mo_render_plan_json(const mo_changeset *cs);

/* SHA-256 (hex) of what the change set would do: addresses, actions and
 * planned values, canonical. out must hold 65 bytes. */
int mo_render_digest(const mo_changeset *cs, char out[65]);

/* A value for display: sensitive markers -> "(sensitive)", unknowns ->
 * "(known after apply)", long values shortened.  Caller frees. */
char *mo_render_value(const json_t *v, size_t max);

/* Outputs {name: {value, sensitive}} as "name = value" lines. */
int mo_render_outputs_text(const json_t *outputs, int show_sensitive, mo_buf *out);

#endif
