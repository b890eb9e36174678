/*
 * test_graph.c - the dependency graph: lookups, edge de-duplication, the
 * stable topological order, cycle reports, DOT output, graphs of 10,000
 * nodes and recovery from allocation failures.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "graph.h"

#define BIG 10000

static size_t node(mo_graph *g, const char *name)
{
	size_t idx = SIZE_MAX;
	assert_int_equal(mo_graph_add_node(g, name, &idx), 0);
	assert_true(idx < mo_graph_count(g));
	return idx;
}

/* from depends on to; both nodes are added if missing. */
static void edge(mo_graph *g, const char *from, const char *to)
{
	size_t f = node(g, from), t = node(g, to);
	assert_int_equal(mo_graph_add_edge(g, f, t), 0);
}

/* The topological order as names joined by spaces (caller frees), after
 * checking that every node appears once and after all its dependencies. */
static char *topo_str(const mo_graph *g)
{
	size_t n = mo_graph_count(g), *order = calloc(n + 1, sizeof(size_t));
	size_t *rank = calloc(n + 1, sizeof(size_t));
	mo_buf b = MO_BUF_INIT;

	assert_non_null(order);
	assert_non_null(rank);
	assert_int_equal(mo_graph_topo(g, order), 0);
	for (size_t i = 0; i < n; i++)
		rank[i] = SIZE_MAX;
	for (size_t i = 0; i < n; i++) {
		assert_true(order[i] < n);
		assert_true(rank[order[i]] == SIZE_MAX);
		rank[order[i]] = i;
	}
	for (size_t i = 0; i < n; i++) {
		size_t nd;
		const size_t *deps = mo_graph_deps(g, i, &nd);
		for (size_t k = 0; k < nd; k++)
			assert_true(rank[deps[k]] < rank[i]);
	}
	for (size_t i = 0; i < n; i++) {
		assert_int_equal(
			mo_buf_printf(&b, "%s%s", i ? " " : "", mo_graph_name(g, order[i])), 0);
	}
	if (!b.ptr)
		assert_int_equal(mo_buf_puts(&b, ""), 0);
	free(order);
	free(rank);
	return b.ptr;
}

static void assert_topo(const mo_graph *g, const char *expected)
{
	char *got = topo_str(g);
	assert_string_equal(got, expected);
	mo_free(got);
}

/* Run mo_graph_topo expecting a cycle; checks the error and its message. */
static void assert_cycle(const mo_graph *g, const char *message)
{
	size_t *order = calloc(mo_graph_count(g), sizeof(size_t));
	assert_non_null(order);
	mo_error_clear();
	assert_int_equal(mo_graph_topo(g, order), MO_ECYCLE);
	assert_int_equal(mo_error_last()->code, MO_ECYCLE);
	assert_string_equal(mo_error_last()->message, message);
	free(order);
}

static void test_graph_diamond(void **state)
{
	mo_graph *g = NULL;
	(void)state;
	assert_int_equal(mo_graph_new(&g), 0);
	edge(g, "app", "web");
	edge(g, "app", "db");
	edge(g, "web", "net");
	edge(g, "db", "net");
	assert_int_equal(mo_graph_count(g), 4);
	assert_topo(g, "net web db app");
	mo_graph_free(g);
}

static void test_graph_insertion_order(void **state)
{
	mo_graph *g = NULL;
	(void)state;

	/* Independent nodes keep insertion order, not name order. */
	assert_int_equal(mo_graph_new(&g), 0);
	node(g, "c");
	node(g, "a");
	node(g, "b");
	assert_topo(g, "c a b");
	mo_graph_free(g);

	/* A node made ready late still goes before later-inserted ready nodes:
	 * "c" becomes ready once "a" is done, and precedes "d". */
	assert_int_equal(mo_graph_new(&g), 0);
	node(g, "a");
	node(g, "b");
	node(g, "c");
	node(g, "d");
	edge(g, "c", "a");
	assert_topo(g, "a b c d");
	mo_graph_free(g);

	/* Nodes released together follow insertion order, not edge order. */
	assert_int_equal(mo_graph_new(&g), 0);
	node(g, "p");
	node(g, "q");
	node(g, "r");
	edge(g, "q", "r");
	edge(g, "p", "r");
	assert_topo(g, "r p q");
	mo_graph_free(g);

	/* Empty graph: nothing to order, and no output array needed. */
	assert_int_equal(mo_graph_new(&g), 0);
	assert_int_equal(mo_graph_topo(g, NULL), 0);
	mo_graph_free(g);
}

static void test_graph_cycle_two(void **state)
{
	mo_graph *g = NULL;
	(void)state;
	assert_int_equal(mo_graph_new(&g), 0);
	edge(g, "a", "b");
	edge(g, "b", "a");
	assert_cycle(g, "dependency cycle: a -> b -> a");
	mo_graph_free(g);
}

static void test_graph_cycle_three(void **state)
{
	mo_graph *g = NULL;
	(void)state;
	assert_int_equal(mo_graph_new(&g), 0);
	node(g, "ok"); /* not part of the cycle, ordered fine */
	edge(g, "a", "b");
	edge(g, "b", "c");
	edge(g, "c", "a");
	assert_cycle(g, "dependency cycle: a -> b -> c -> a");
	mo_graph_free(g);

	/* The report starts at the cycle's first-inserted member and follows
	 * the edges from there. */
	assert_int_equal(mo_graph_new(&g), 0);
	node(g, "b");
	edge(g, "a", "b");
	edge(g, "b", "c");
	edge(g, "c", "a");
	assert_cycle(g, "dependency cycle: b -> c -> a -> b");
	mo_graph_free(g);
}

static void test_graph_cycle_self(void **state)
{
	mo_graph *g = NULL;
	size_t n, a;
	const size_t *deps;
	(void)state;
	assert_int_equal(mo_graph_new(&g), 0);
	edge(g, "x", "y");
	edge(g, "a", "a");
	a = node(g, "a");
	deps = mo_graph_deps(g, a, &n);
	assert_int_equal(n, 1);
	assert_int_equal(deps[0], a);
	assert_cycle(g, "dependency cycle: a -> a");
	mo_graph_free(g);
}

static void test_graph_cycle_behind_node(void **state)
{
	mo_graph *g = NULL;
	(void)state;
	/* "x" cannot be ordered because it waits on the cycle, but it is not a
	 * member of it: the report names only a and b. */
	assert_int_equal(mo_graph_new(&g), 0);
	edge(g, "x", "w");
	edge(g, "x", "a");
	edge(g, "a", "b");
	edge(g, "b", "a");
	edge(g, "b", "w");
	assert_cycle(g, "dependency cycle: a -> b -> a");
	mo_graph_free(g);
}

static void test_graph_dedup(void **state)
{
	mo_graph *g = NULL;
	size_t a, b, a2, n;
	const size_t *v;
	(void)state;
	assert_int_equal(mo_graph_new(&g), 0);
	a = node(g, "a");
	b = node(g, "b");
	a2 = node(g, "a");
	assert_int_equal(a, a2);
	assert_int_equal(mo_graph_count(g), 2);
	for (int i = 0; i < 3; i++)
		assert_int_equal(mo_graph_add_edge(g, a, b), 0);
	v = mo_graph_deps(g, a, &n);
	assert_int_equal(n, 1);
	assert_int_equal(v[0], b);
	v = mo_graph_rdeps(g, b, &n);
	assert_int_equal(n, 1);
	assert_int_equal(v[0], a);
	mo_graph_rdeps(g, a, &n);
	assert_int_equal(n, 0);
	mo_graph_free(g);
}

static void test_graph_rdeps(void **state)
{
	mo_graph *g = NULL;
	size_t n, db, net;
	const size_t *v;
	(void)state;
	assert_int_equal(mo_graph_new(&g), 0);
	edge(g, "web", "db");
	edge(g, "worker", "db");
	edge(g, "api", "db");
	edge(g, "db", "net");
	db = node(g, "db");
	net = node(g, "net");

	v = mo_graph_rdeps(g, db, &n);
	assert_int_equal(n, 3);
	assert_string_equal(mo_graph_name(g, v[0]), "web");
	assert_string_equal(mo_graph_name(g, v[1]), "worker");
	assert_string_equal(mo_graph_name(g, v[2]), "api");
	v = mo_graph_deps(g, db, &n);
	assert_int_equal(n, 1);
	assert_int_equal(v[0], net);
	v = mo_graph_rdeps(g, net, &n);
	assert_int_equal(n, 1);
	assert_int_equal(v[0], db);

	/* Out of range: empty answers, not a crash. */
	assert_null(mo_graph_rdeps(g, 99, &n));
	assert_int_equal(n, 0);
	assert_null(mo_graph_deps(g, 99, &n));
	assert_int_equal(n, 0);
	mo_graph_free(g);
}

static void test_graph_find_missing(void **state)
{
	mo_graph *g = NULL;
	size_t idx = 77;
	char name[] = "vpc.main";
	(void)state;
	assert_int_equal(mo_graph_new(&g), 0);
	assert_int_equal(mo_graph_find(g, "nothing", &idx), MO_ENOTFOUND); /* empty graph */
	assert_int_equal(mo_graph_add_node(g, name, NULL), 0);
	name[0] = 'X'; /* the graph keeps its own copy */
	assert_int_equal(mo_graph_find(g, "vpc.main", &idx), 0);
	assert_int_equal(idx, 0);
	assert_string_equal(mo_graph_name(g, 0), "vpc.main");

	mo_error_clear();
	idx = 77;
	assert_int_equal(mo_graph_find(g, "Xpc.main", &idx), MO_ENOTFOUND);
	assert_int_equal(mo_error_last()->code, MO_ENOTFOUND);
	assert_non_null(strstr(mo_error_last()->message, "Xpc.main"));
	assert_int_equal(idx, 77);

	assert_null(mo_graph_name(g, 1));
	assert_int_equal(mo_graph_add_edge(g, 0, 1), MO_EINVAL);
	assert_int_equal(mo_graph_add_edge(g, 5, 0), MO_EINVAL);
	mo_graph_free(g);
	mo_graph_free(NULL);
}

static void test_graph_chain_10k(void **state)
{
	mo_graph *g = NULL;
	size_t *order = calloc(BIG, sizeof(size_t));
	char name[32];
	const char *msg;
	(void)state;

	assert_non_null(order);
	assert_int_equal(mo_graph_new(&g), 0);
	for (size_t i = 0; i < BIG; i++) {
		snprintf(name, sizeof(name), "n%zu", i);
		assert_int_equal(node(g, name), i);
	}
	for (size_t i = 0; i + 1 < BIG; i++)
		assert_int_equal(mo_graph_add_edge(g, i, i + 1), 0);
	for (size_t i = 0; i < BIG; i++) {
		size_t idx;
		snprintf(name, sizeof(name), "n%zu", i);
		assert_int_equal(mo_graph_find(g, name, &idx), 0);
		assert_int_equal(idx, i);
	}
	assert_int_equal(mo_graph_topo(g, order), 0);
	for (size_t i = 0; i < BIG; i++)
		assert_int_equal(order[i], BIG - 1 - i);

	/* Closing the chain makes a 10,000-node cycle: found without deep
	 * recursion, its message cut to the error buffer's size. */
	assert_int_equal(mo_graph_add_edge(g, BIG - 1, 0), 0);
	assert_int_equal(mo_graph_topo(g, order), MO_ECYCLE);
	msg = mo_error_last()->message;
	assert_int_equal(strncmp(msg, "dependency cycle: n0 -> n1 -> n2 -> ", 36), 0);
	assert_string_equal(msg + strlen(msg) - 3, "...");
	mo_graph_free(g);
	free(order);
}

static void test_graph_fan_in_10k(void **state)
{
	mo_graph *g = NULL;
	size_t *order = calloc(BIG + 2, sizeof(size_t)), top, sink, n;
	const size_t *v;
	char name[32];
	(void)state;

	assert_non_null(order);
	assert_int_equal(mo_graph_new(&g), 0);
	top = node(g, "top");
	sink = node(g, "sink");
	for (size_t i = 0; i < BIG; i++) {
		size_t leaf;
		snprintf(name, sizeof(name), "leaf%zu", i);
		leaf = node(g, name);
		assert_int_equal(mo_graph_add_edge(g, top, leaf), 0);
		assert_int_equal(mo_graph_add_edge(g, leaf, sink), 0);
	}
	/* Every edge again: all duplicates. */
	for (size_t i = 0; i < BIG; i++) {
		assert_int_equal(mo_graph_add_edge(g, top, i + 2), 0);
		assert_int_equal(mo_graph_add_edge(g, i + 2, sink), 0);
	}
	mo_graph_deps(g, top, &n);
	assert_int_equal(n, BIG);
	v = mo_graph_rdeps(g, sink, &n);
	assert_int_equal(n, BIG);
	assert_int_equal(v[0], 2);
	assert_int_equal(v[BIG - 1], BIG + 1);

	assert_int_equal(mo_graph_topo(g, order), 0);
	assert_int_equal(order[0], sink);
	for (size_t i = 0; i < BIG; i++)
		assert_int_equal(order[i + 1], i + 2);
	assert_int_equal(order[BIG + 1], top);
	mo_graph_free(g);
	free(order);
}

static void test_graph_dot(void **state)
{
	mo_graph *g = NULL;
	mo_buf b = MO_BUF_INIT;
	(void)state;
	assert_int_equal(mo_graph_new(&g), 0);
	edge(g, "app", "db");
	edge(g, "app", "say \"hi\"");
	edge(g, "db", "c:\\dir");
	node(g, "lonely");
	assert_int_equal(mo_buf_puts(&b, "// graph\n"), 0);
	assert_int_equal(mo_graph_to_dot(g, &b), 0);
	assert_string_equal(b.ptr, "// graph\n"
				   "digraph mecorch {\n"
				   "  \"app\";\n"
				   "  \"db\";\n"
				   "  \"say \\\"hi\\\"\";\n"
				   "  \"c:\\\\dir\";\n"
				   "  \"lonely\";\n"
				   "  \"app\" -> \"db\";\n"
				   "  \"app\" -> \"say \\\"hi\\\"\";\n"
				   "  \"db\" -> \"c:\\\\dir\";\n"
				   "}\n");
	mo_buf_free(&b);
	mo_graph_free(g);

	assert_int_equal(mo_graph_new(&g), 0);
	assert_int_equal(mo_graph_to_dot(g, &b), 0);
	assert_string_equal(b.ptr, "digraph mecorch {\n}\n");
	mo_buf_free(&b);
	mo_graph_free(g);
}

static size_t ndeps(const mo_graph *g, size_t i)
{
	size_t n;
	mo_graph_deps(g, i, &n);
	return n;
}

static size_t nrdeps(const mo_graph *g, size_t i)
{
	size_t n;
	mo_graph_rdeps(g, i, &n);
	return n;
}

/*
 * One scripted build of a 40-node graph: enough nodes and edges to grow
 * every table and array several times.  When fail_at > 0 the fail_at-th
 * allocation fails; the failing operation must return MO_ENOMEM and leave
 * the graph unchanged, and repeating it once allocations work again must
 * succeed.  Returns 1 when an allocation failed somewhere in the script.
 * *topo and *dot receive the final order and DOT text (caller frees).
 */
static int alloc_script(long fail_at, char **topo, char **dot)
{
	mo_graph *g = NULL;
	mo_buf b = MO_BUF_INIT;
	size_t *order = calloc(64, sizeof(size_t)), before;
	char name[16];
	int failed = 0, rc;

#define STEP(call, unchanged)                                               \
	do {                                                                \
		rc = (call);                                                \
		if (rc < 0) {                                               \
			assert_int_equal(rc, MO_ENOMEM);                    \
			assert_int_equal(mo_error_last()->code, MO_ENOMEM); \
			assert_false(failed);                               \
			failed = 1;                                         \
			mo_alloc_fail_after(0);                             \
			assert_true(unchanged);                             \
			rc = (call);                                        \
		}                                                           \
		assert_int_equal(rc, 0);                                    \
	} while (0)

	assert_non_null(order);
	assert_int_equal(mo_buf_puts(&b, "// graph\n"), 0);
	mo_alloc_fail_after(fail_at);

	STEP(mo_graph_new(&g), g == NULL);
	for (int i = 0; i < 40; i++) {
		snprintf(name, sizeof(name), "n%d", i);
		before = mo_graph_count(g);
		STEP(mo_graph_add_node(g, name, NULL),
		     mo_graph_count(g) == before && mo_graph_find(g, name, NULL) == MO_ENOTFOUND);
	}
	for (size_t i = 1; i < 40; i++) {
		/* Edges point to lower indices only: the graph stays acyclic.
		 * For i = 1 and 2 the second edge is a duplicate. */
		size_t to[3] = { (i - 1) / 2, 0, i >= 3 ? i - 3 : 0 };
		for (size_t k = 0; k < 3; k++) {
			size_t nd = ndeps(g, i), nr = nrdeps(g, to[k]);
			STEP(mo_graph_add_edge(g, i, to[k]),
			     ndeps(g, i) == nd && nrdeps(g, to[k]) == nr);
		}
	}
	STEP(mo_graph_topo(g, order), 1);
	STEP(mo_graph_to_dot(g, &b), strcmp(b.ptr, "// graph\n") == 0);
	mo_alloc_fail_after(0);
#undef STEP

	*topo = topo_str(g);
	*dot = b.ptr;
	mo_graph_free(g);
	free(order);
	return failed;
}

static void test_graph_alloc_failure(void **state)
{
	char *ref_topo, *ref_dot, *topo, *dot;
	long fail_at;
	(void)state;

	assert_int_equal(alloc_script(0, &ref_topo, &ref_dot), 0);
	for (fail_at = 1;; fail_at++) {
		int failed = alloc_script(fail_at, &topo, &dot);
		assert_string_equal(topo, ref_topo);
		assert_string_equal(dot, ref_dot);
		mo_free(topo);
		mo_free(dot);
		if (!failed)
			break;
	}
	/* Every allocation of the script was made to fail once. */
	assert_true(fail_at > 40);
	mo_free(ref_topo);
	mo_free(ref_dot);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_graph_diamond),
		cmocka_unit_test(test_graph_insertion_order),
		cmocka_unit_test(test_graph_cycle_two),
		cmocka_unit_test(test_graph_cycle_three),
		cmocka_unit_test(test_graph_cycle_self),
		cmocka_unit_test(test_graph_cycle_behind_node),
		cmocka_unit_test(test_graph_dedup),
		cmocka_unit_test(test_graph_rdeps),
		cmocka_unit_test(test_graph_find_missing),
		cmocka_unit_test(test_graph_chain_10k),
		cmocka_unit_test(test_graph_fan_in_10k),
		cmocka_unit_test(test_graph_dot),
		cmocka_unit_test(test_graph_alloc_failure),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
