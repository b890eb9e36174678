/*
 * graph.c - the dependency graph of named nodes: O(1) lookup by name,
 * duplicate-free edges, a stable topological order, cycle reporting and
 * Graphviz output.
 *
 * Nodes live in one array in insertion order, so a node's index is its
 * position.  Names are found through an open-addressing table (FNV-1a,
 * linear probing, power-of-two size, load at most 1/2) whose slots hold
 * index + 1, 0 marking an empty slot.  Each node keeps two growable arrays
 * in edge insertion order: deps (what it depends on) and rdeps (what
 * depends on it).
 *
 * Duplicate edges are caught by a second open-addressing table keyed by the
 * (from, to) pair, so mo_graph_add_edge is O(1) expected whatever the degree
 * of its nodes: a node with 10,000 dependencies costs 10,000 probes, not the
 * 50 million comparisons a scan of its deps would.  The deps and rdeps
 * arrays therefore never hold a duplicate and need no later clean-up.
 *
 * Every mutation first reserves all the memory it needs and only then
 * changes the graph, so an allocation failure (MO_ENOMEM) leaves the graph
 * exactly as it was.
 */
#include "graph.h"

#include <assert.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

typedef struct {
	char *name;
	uint64_t hash; /* fnv1a(name), kept for rehashing and quick compares */
	size_t *deps;  /* what this node depends on */
	size_t ndeps, deps_cap;
	size_t *rdeps; /* what depends on this node */
	size_t nrdeps, rdeps_cap;
} graph_node;

typedef struct {
	size_t from1; /* from + 1; 0 marks an empty slot */
	size_t to;
} graph_edge;

struct mo_graph {
	graph_node *nodes;
	size_t count, cap;
	size_t *names;    /* node index + 1, 0 when empty; names_cap slots */
	size_t names_cap; /* 0 or a power of two */
	graph_edge *edges;
	size_t nedges, edges_cap; /* edges_cap: 0 or a power of two */
};

#define TABLE_MIN 16

static uint64_t fnv1a(const char *s)
{
	uint64_t h = 14695981039346656037ULL;
	for (; *s; s++) {
		h ^= (unsigned char)*s;
		h *= 1099511628211ULL;
	}
	return h;
}

/* splitmix64's finaliser over the pair: indices are small and dense, so they
 * need mixing before masking. */
static uint64_t edge_hash(size_t from, size_t to)
{
	uint64_t h = (uint64_t)from * 0x9E3779B97F4A7C15ULL ^ (uint64_t)to;
	h ^= h >> 30;
	h *= 0xBF58476D1CE4E5B9ULL;
	h ^= h >> 27;
	h *= 0x94D049BB133111EBULL;
	h ^= h >> 31;
	return h;
}

/* Make room for need elements of size elem in *p (capacity *cap), doubling.
 * On failure *p and *cap are unchanged. */
static int reserve(void **p, size_t *cap, size_t need, size_t elem)
{
	size_t ncap;
	void *np;
	if (need <= *cap)
		return 0;
	ncap = *cap ? *cap : 4;
	while (ncap < need) {
		if (ncap > SIZE_MAX / 2)
			return mo_error_set(MO_ENOMEM, "graph: out of memory");
		ncap *= 2;
	}
	if (ncap > SIZE_MAX / elem || !(np = mo_realloc(*p, ncap * elem)))
		return mo_error_set(MO_ENOMEM, "graph: out of memory");
	*p = np;
	*cap = ncap;
	return 0;
}

/* The size of a table holding n entries at load at most 1/2, or 0 on
 * overflow. */
static size_t table_size(size_t n)
{
	size_t cap = TABLE_MIN;
	while (cap / 2 < n) {
		if (cap > SIZE_MAX / 2)
			return 0;
		cap *= 2;
	}
	return cap;
}

/* The slot holding name, or the empty slot where it would go.  The table
 * must exist (names_cap > 0). */
static size_t name_slot(const mo_graph *g, const char *name, uint64_t h)
{
	size_t mask = g->names_cap - 1, i = (size_t)h & mask;
	while (g->names[i]) {
		const graph_node *n = &g->nodes[g->names[i] - 1];
		if (n->hash == h && strcmp(n->name, name) == 0)
			break;
		i = (i + 1) & mask;
	}
	return i;
}

/* Grow the name table so it can hold n names. */
static int names_reserve(mo_graph *g, size_t n)
{
	size_t cap = table_size(n), *t;
	if (cap <= g->names_cap)
		return 0;
	if (!cap || cap > SIZE_MAX / sizeof(*t) || !(t = mo_calloc(cap, sizeof(*t))))
		return mo_error_set(MO_ENOMEM, "graph: out of memory");
	for (size_t i = 0; i < g->count; i++) {
		size_t s = (size_t)g->nodes[i].hash & (cap - 1);
		while (t[s])
			s = (s + 1) & (cap - 1);
		t[s] = i + 1;
	}
	mo_free(g->names);
	g->names = t;
	g->names_cap = cap;
	return 0;
}

/* The slot holding edge from -> to, or the empty slot where it would go.
 * The table must exist (edges_cap > 0). */
static size_t edge_slot(const mo_graph *g, size_t from, size_t to)
{
	size_t mask = g->edges_cap - 1, i = (size_t)edge_hash(from, to) & mask;
	while (g->edges[i].from1 && (g->edges[i].from1 != from + 1 || g->edges[i].to != to))
		i = (i + 1) & mask;
	return i;
}

/* Grow the edge table so it can hold n edges. */
static int edges_reserve(mo_graph *g, size_t n)
{
	size_t cap = table_size(n), old_cap = g->edges_cap;
	graph_edge *t, *old = g->edges;
	if (cap <= old_cap)
		return 0;
	if (!cap || cap > SIZE_MAX / sizeof(*t) || !(t = mo_calloc(cap, sizeof(*t))))
		return mo_error_set(MO_ENOMEM, "graph: out of memory");
	g->edges = t;
	g->edges_cap = cap;
	for (size_t i = 0; i < old_cap; i++)
		if (old[i].from1)
			g->edges[edge_slot(g, old[i].from1 - 1, old[i].to)] = old[i];
	mo_free(old);
	return 0;
}

int mo_graph_new(mo_graph **out)
{
	mo_graph *g;
	if (!out)
		return mo_error_set(MO_EINVAL, "graph: no output pointer");
	if (!(g = mo_calloc(1, sizeof(*g))))
		return mo_error_set(MO_ENOMEM, "graph: out of memory");
	*out = g;
	return 0;
}

void mo_graph_free(mo_graph *g)
{
	if (!g)
		return;
	for (size_t i = 0; i < g->count; i++) {
		mo_free(g->nodes[i].name);
		mo_free(g->nodes[i].deps);
		mo_free(g->nodes[i].rdeps);
	}
	mo_free(g->nodes);
	mo_free(g->names);
	mo_free(g->edges);
	mo_free(g);
}

int mo_graph_add_node(mo_graph *g, const char *name, size_t *idx)
{
	uint64_t h;
	size_t slot;
	char *copy;
	graph_node *n;

	if (!g || !name)
		return mo_error_set(MO_EINVAL, "graph: no node name");
	h = fnv1a(name);
	if (g->names_cap) {
		slot = name_slot(g, name, h);
		if (g->names[slot]) {
			if (idx)
				*idx = g->names[slot] - 1;
			return 0;
		}
	}
	if (names_reserve(g, g->count + 1) < 0 ||
	    reserve((void **)&g->nodes, &g->cap, g->count + 1, sizeof(*g->nodes)) < 0)
		return MO_ENOMEM;
	if (!(copy = mo_strdup(name)))
		return mo_error_set(MO_ENOMEM, "graph: out of memory");

	slot = name_slot(g, name, h);
	n = &g->nodes[g->count];
	memset(n, 0, sizeof(*n));
	n->name = copy;
	n->hash = h;
	g->names[slot] = ++g->count;
	if (idx)
		*idx = g->count - 1;
	return 0;
}

int mo_graph_find(const mo_graph *g, const char *name, size_t *idx)
{
	size_t slot;
	if (!g || !name)
		return mo_error_set(MO_EINVAL, "graph: no node name");
	if (g->names_cap) {
		slot = name_slot(g, name, fnv1a(name));
		if (g->names[slot]) {
			if (idx)
				*idx = g->names[slot] - 1;
			return 0;
		}
	}
	return mo_error_set(MO_ENOTFOUND, "graph: no node named '%s'", name);
}

int mo_graph_add_edge(mo_graph *g, size_t from, size_t to)
{
	graph_node *f, *t;
	size_t slot;

	if (!g || from >= g->count || to >= g->count)
		return mo_error_set(MO_EINVAL, "graph: edge %zu -> %zu names no node", from, to);
	if (g->edges_cap && g->edges[edge_slot(g, from, to)].from1)
		return 0; /* already there */

	f = &g->nodes[from];
	t = &g->nodes[to];
	if (edges_reserve(g, g->nedges + 1) < 0 ||
	    reserve((void **)&f->deps, &f->deps_cap, f->ndeps + 1, sizeof(size_t)) < 0 ||
	    reserve((void **)&t->rdeps, &t->rdeps_cap, t->nrdeps + 1, sizeof(size_t)) < 0)
		return MO_ENOMEM;

	slot = edge_slot(g, from, to);
	g->edges[slot].from1 = from + 1;
	g->edges[slot].to = to;
	g->nedges++;
	f->deps[f->ndeps++] = to;
	t->rdeps[t->nrdeps++] = from;
	return 0;
}

size_t mo_graph_count(const mo_graph *g)
{
	return g ? g->count : 0;
}

const char *mo_graph_name(const mo_graph *g, size_t idx)
{
	return g && idx < g->count ? g->nodes[idx].name : NULL;
}

const size_t *mo_graph_deps(const mo_graph *g, size_t idx, size_t *n)
{
	if (!g || idx >= g->count) {
		if (n)
			*n = 0;
		return NULL;
	}
	if (n)
		*n = g->nodes[idx].ndeps;
	return g->nodes[idx].deps;
}

const size_t *mo_graph_rdeps(const mo_graph *g, size_t idx, size_t *n)
{
	if (!g || idx >= g->count) {
		if (n)
			*n = 0;
		return NULL;
	}
	if (n)
		*n = g->nodes[idx].nrdeps;
	return g->nodes[idx].rdeps;
}

/* A binary min-heap of node indices. */
static void heap_push(size_t *heap, size_t *n, size_t v)
{
	size_t i = (*n)++;
	while (i > 0) {
		size_t parent = (i - 1) / 2;
		if (heap[parent] <= v)
			break;
		heap[i] = heap[parent];
		i = parent;
	}
	heap[i] = v;
}

static size_t heap_pop(size_t *heap, size_t *n)
{
	size_t top = heap[0], last = heap[--(*n)], i = 0;
	for (;;) {
		size_t c = 2 * i + 1;
		if (c >= *n)
			break;
		if (c + 1 < *n && heap[c + 1] < heap[c])
			c++;
		if (last <= heap[c])
			break;
		heap[i] = heap[c];
		i = c;
	}
	if (*n)
		heap[i] = last;
	return top;
}

/* Append s to the fixed-size message buffer msg (size cap, current length
 * *len), marking a truncation with "...". */
static void msg_append(char *msg, size_t cap, size_t *len, const char *s)
{
	size_t n = strlen(s);
	if (*len + n < cap) {
		memcpy(msg + *len, s, n + 1);
		*len += n;
		return;
	}
	if (cap >= 4 && *len < cap) {
		snprintf(msg + *len, cap - *len, "%s", s);
		memcpy(msg + cap - 4, "...", 4);
		*len = cap - 1;
	}
}

/*
 * Report one cycle among the nodes Kahn's algorithm could not order (those
 * with left[i] > 0).  Each such node waits on at least one dependency that
 * is itself unordered, so following "first unordered dependency" from any of
 * them must come back to a node already on the walk; the loop from there is
 * a cycle.  The walk is iterative (no recursion, whatever the graph's size)
 * and O(V + E).  path and pos are scratch arrays of count entries.  The cycle
 * is named starting from its lowest-index member so the message is stable.
 * Returns MO_ECYCLE.
 */
static int report_cycle(const mo_graph *g, const size_t *left, size_t *path, size_t *pos)
{
	char msg[sizeof(((mo_error *)0)->message)];
	size_t len = 0, steps = 0, u = 0, first, ncycle, lo;

	for (size_t i = 0; i < g->count; i++)
		pos[i] = SIZE_MAX;
	while (u < g->count && left[u] == 0)
		u++;
	assert(u < g->count);
	while (pos[u] == SIZE_MAX) {
		const graph_node *n = &g->nodes[u];
		size_t next = SIZE_MAX;
		pos[u] = steps;
		path[steps++] = u;
		for (size_t k = 0; k < n->ndeps; k++) {
			if (left[n->deps[k]] > 0) {
				next = n->deps[k];
				break;
			}
		}
		assert(next != SIZE_MAX);
		u = next;
	}

	first = pos[u];
	ncycle = steps - first;
	lo = 0;
	for (size_t k = 1; k < ncycle; k++)
		if (path[first + k] < path[first + lo])
			lo = k;

	msg[0] = '\0';
	msg_append(msg, sizeof(msg), &len, "dependency cycle: ");
	for (size_t k = 0; k <= ncycle; k++) {
		if (k)
			msg_append(msg, sizeof(msg), &len, " -> ");
		msg_append(msg, sizeof(msg), &len, g->nodes[path[first + (lo + k) % ncycle]].name);
	}
	return mo_error_set(MO_ECYCLE, "%s", msg);
}

/*
 * Kahn's algorithm with a min-heap of ready nodes: at every step the ready
 * node inserted first is emitted next, so the order is the same on every
 * run and follows declaration order wherever dependencies allow.  Cost is
 * O(E + V log V).  On a cycle the contents of order are unspecified.
 */
int mo_graph_topo(const mo_graph *g, size_t *order)
{
	size_t *scratch, *left, *heap, *pos, nheap = 0, done = 0;
	int rc = 0;

	if (!g)
		return mo_error_set(MO_EINVAL, "graph: no graph");
	if (!g->count)
		return 0;
	if (!order)
		return mo_error_set(MO_EINVAL, "graph: no output array");
	if (g->count > SIZE_MAX / (3 * sizeof(size_t)) ||
	    !(scratch = mo_malloc(3 * g->count * sizeof(size_t))))
		return mo_error_set(MO_ENOMEM, "graph: out of memory");
	left = scratch;
	heap = scratch + g->count;
	pos = scratch + 2 * g->count;

	for (size_t i = 0; i < g->count; i++) {
		left[i] = g->nodes[i].ndeps;
		if (!left[i])
			heap_push(heap, &nheap, i);
	}
	while (nheap) {
		size_t u = heap_pop(heap, &nheap);
		const graph_node *n = &g->nodes[u];
		order[done++] = u;
		for (size_t k = 0; k < n->nrdeps; k++)
			if (--left[n->rdeps[k]] == 0)
				heap_push(heap, &nheap, n->rdeps[k]);
	}
	if (done < g->count)
		rc = report_cycle(g, left, heap, pos);
	mo_free(scratch);
	return rc;
}

/* The DOT escape of c inside a quoted string, or NULL when c stands as is. */
static const char *dot_escape(char c)
{
	switch (c) {
	case '"':
		return "\\\"";
	case '\\':
		return "\\\\";
	case '\n':
		return "\\n";
	default:
		return NULL;
	}
}

/* Append name as a DOT quoted string. */
static int dot_quote(mo_buf *out, const char *name)
{
	const char *run = name, *p;
	if (mo_buf_put(out, "\"", 1) < 0)
		return MO_ENOMEM;
	for (p = name; *p; p++) {
		const char *esc = dot_escape(*p);
		if (!esc)
			continue;
		if (mo_buf_put(out, run, (size_t)(p - run)) < 0 || mo_buf_puts(out, esc) < 0)
			return MO_ENOMEM;
		run = p + 1;
	}
	if (mo_buf_put(out, run, (size_t)(p - run)) < 0 || mo_buf_put(out, "\"", 1) < 0)
		return MO_ENOMEM;
	return 0;
}

/*
 * Appends to out: every node in index order (so isolated nodes show), then
 * every edge, node by node in index order and each node's deps in the order
 * they were added.  On failure out is restored to its previous length.
 */
int mo_graph_to_dot(const mo_graph *g, mo_buf *out)
{
	size_t mark;
	int rc = 0;

	if (!g || !out)
		return mo_error_set(MO_EINVAL, "graph: no graph or buffer");
	mark = out->len;
	if ((rc = mo_buf_puts(out, "digraph mecorch {\n")) < 0)
		goto done;
	for (size_t i = 0; i < g->count; i++) {
		if ((rc = mo_buf_puts(out, "  ")) < 0 ||
		    (rc = dot_quote(out, g->nodes[i].name)) < 0 ||
		    (rc = mo_buf_puts(out, ";\n")) < 0)
			goto done;
	}
	for (size_t i = 0; i < g->count; i++) {
		const graph_node *n = &g->nodes[i];
		for (size_t k = 0; k < n->ndeps; k++) {
			if ((rc = mo_buf_puts(out, "  ")) < 0 ||
			    (rc = dot_quote(out, n->name)) < 0 ||
			    (rc = mo_buf_puts(out, " -> ")) < 0 ||
			    (rc = dot_quote(out, g->nodes[n->deps[k]].name)) < 0 ||
			    (rc = mo_buf_puts(out, ";\n")) < 0)
				goto done;
		}
	}
	rc = mo_buf_puts(out, "}\n");
done:
	if (rc < 0 && out->ptr) {
		out->len = mark;
		out->ptr[mark] = '\0';
	}
	return rc;
}
