/*
 * graph.h - a directed acyclic graph of named nodes, used for resources,
 * module instances and actions.
 *
 * An edge from -> to means "from depends on to": to must complete first.
 * Names are copied.  Lookups are O(1) (hash), ordering is O(E + V log V)
 * and stable: among ready nodes, insertion order wins.  Not thread-safe.
 */
#ifndef MO_GRAPH_H
#define MO_GRAPH_H

#include <stddef.h>
#include "common.h"

typedef struct mo_graph mo_graph;

int mo_graph_new(mo_graph **out);
void mo_graph_free(mo_graph *g);

/* Add a node, or find the existing one of that name; *idx receives its
 * index (indices are dense, 0..count-1, in insertion order). */
int mo_graph_add_node(mo_graph *g, const char *name, size_t *idx);
/* MO_ENOTFOUND when no node has that name. */
int mo_graph_find(const mo_graph *g, const char *name, size_t *idx);
/* from depends on to.  Duplicate edges are ignored; a self-edge is a cycle. */
int mo_graph_add_edge(mo_graph *g, size_t from, size_t to);

size_t mo_graph_count(const mo_graph *g);
const char *mo_graph_name(const mo_graph *g, size_t idx);
/* What idx depends on / what depends on idx.  Valid until the next add. */
const size_t *mo_graph_deps(const mo_graph *g, size_t idx, size_t *n);
const size_t *mo_graph_rdeps(const mo_graph *g, size_t idx, size_t *n);

/* Fill order[0..count-1] with every node, dependencies first.  On a cycle
 * returns MO_ECYCLE with a message naming one cycle: "a -> b -> a". */
int mo_graph_topo(const mo_graph *g, size_t *order);

/* Graphviz DOT text of the graph; edges point from dependent to dependency. */
int mo_graph_to_dot(const mo_graph *g, mo_buf *out);

#endif
