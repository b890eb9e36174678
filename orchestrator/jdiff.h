/*
 * jdiff.h - structural comparison of JSON values (jansson).
 *
 * Numbers compare by value (1 == 1.0).  Object key order never matters;
 * array order does.  Used by the planner to decide create / update /
 * replace / no-op, and by refresh to report drift.
 */
#ifndef MO_JDIFF_H
#define MO_JDIFF_H

#include <jansson.h>
#include <stddef.h>

/* 1 when a and b are structurally equal (NULL equals only NULL). */
int mo_json_equal(const json_t *a, const json_t *b);

typedef struct {
	char *path;       /* "tags.env", "ports[1].host", "" for the root */
	json_t *before;   /* NULL when the path is added */
	json_t *after;    /* NULL when the path is removed */
} mo_jdiff_entry;

/* Leaf-level differences, objects descended key by key (keys sorted),
 * arrays index by index (a length change reports the extra indices).
 * A value that changes kind (object -> string) is one entry at that path.
 * *out is the caller's (mo_jdiff_free); *n may be 0 with *out NULL. */
int mo_jdiff(const json_t *before, const json_t *after, mo_jdiff_entry **out, size_t *n);
void mo_jdiff_free(mo_jdiff_entry *e, size_t n);

/* The top-level keys of two objects whose values differ (added, removed
 * or changed), sorted, as a new JSON array. A non-object on either side
 * yields [""] when they differ. */
json_t *mo_jdiff_top_keys(const json_t *before, const json_t *after);

#endif
