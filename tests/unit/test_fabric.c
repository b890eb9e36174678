/*
 * test_fabric.c - the lab's interconnect provider emulator, driven over
 * real HTTP.
 *
 * Each test starts the built fabric binary (env FABRIC, else
 * MO_BINARY_DIR/fabric) on a free port of 127.0.0.1 (--listen 127.0.0.1:0
 * --port-file), talks to it with libcurl, and stops it with SIGTERM at
 * teardown, which must end it with exit status 0.  Checked: ports, the
 * life of a connection (PENDING, PROVISIONED, a bandwidth change,
 * DEPROVISIONING, gone), Idempotency-Key, validation (400 / 409 / 422 as
 * problem+json), changes refused while PENDING, injected provisioning
 * failures (FAILED, a failed change keeping the old bandwidth), list
 * filters, --state-file across a restart, bearer tokens, injected
 * 5xx / 429, /_stats, and the command line.
 */
#include "common.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "emu.h"

#include <jansson.h>
#include <stdio.h>
#include <string.h>

#ifndef MO_BINARY_DIR
#define MO_BINARY_DIR "."
#endif

/* Each test gets its own fabric (env FABRIC, else MO_BINARY_DIR/fabric) and
 * starts it itself; e->state_file is a path in its private directory. */
static int fabric_setup(void **state)
{
	*state = emu_new("fabric", MO_BINARY_DIR);
	return *state ? 0 : -1;
}

/* method base+path with an optional body and extra header lines
 * (NULL-terminated). */
static void http_hdrs(const emu_proc *e, const char *method, const char *path, const char *body,
		      const char *const *headers, emu_resp *out)
{
	emu_req req = { .method = method, .path = path, .body = body, .headers = headers };
	EMU_OK(emu_send(e, &req, out));
}

static void http(const emu_proc *e, const char *method, const char *path, const char *body,
		 emu_resp *out)
{
	EMU_OK(emu_http(e, method, path, body, out));
}

static const char *jstr(const json_t *o, const char *k)
{
	return json_string_value(json_object_get(o, k));
}

#define CONN_BODY(name, ap, av, zp, zv, bw)                                                  \
	"{\"name\":\"" name "\",\"a_side\":{\"port_id\":\"" ap "\",\"vlan\":" #av "},"       \
	"\"z_side\":{\"port_id\":\"" zp "\",\"vlan\":" #zv "},\"bandwidth_mbps\":" #bw "}"

/* r is a problem+json of status with code. */
static void assert_problem(const emu_resp *r, long status, const char *code)
{
	assert_int_equal(r->status, status);
	assert_string_equal(r->content_type, "application/problem+json");
	assert_non_null(r->json);
	assert_int_equal(json_integer_value(json_object_get(r->json, "status")), status);
	assert_non_null(jstr(r->json, "title"));
	assert_non_null(jstr(r->json, "detail"));
	assert_string_equal(jstr(r->json, "code"), code);
}

/* POST a connection that must be created; its id into id. */
static void create(const emu_proc *e, const char *body, char *id, size_t n)
{
	emu_resp r;
	http(e, "POST", "/v1/connections", body, &r);
	assert_int_equal(r.status, 201);
	assert_string_equal(jstr(r.json, "state"), "PENDING");
	snprintf(id, n, "%s", jstr(r.json, "id"));
	emu_resp_free(&r);
}

/* GET /v1/connections/{id}: the state ("" when 404) and the bandwidth. */
static void conn_state(const emu_proc *e, const char *id, char *st, size_t n, json_int_t *bw)
{
	char path[128];
	emu_resp r;
	snprintf(path, sizeof(path), "/v1/connections/%s", id);
	http(e, "GET", path, NULL, &r);
	st[0] = '\0';
	if (r.status == 200) {
		snprintf(st, n, "%s", jstr(r.json, "state"));
		if (bw)
			*bw = json_integer_value(json_object_get(r.json, "bandwidth_mbps"));
	} else {
		assert_problem(&r, 404, "NOT_FOUND");
	}
	emu_resp_free(&r);
}

/* A number under /_stats: key, or key.sub. */
static json_int_t stat_of(const emu_proc *e, const char *key, const char *sub)
{
	emu_resp r;
	json_t *v;
	json_int_t n;
	http(e, "GET", "/_stats", NULL, &r);
	assert_int_equal(r.status, 200);
	v = json_object_get(r.json, key);
	if (sub)
		v = json_object_get(v, sub);
	n = json_integer_value(v);
	emu_resp_free(&r);
	return n;
}

/* ---- tests ------------------------------------------------------------ */

static void test_fabric_ports(void **state)
{
	emu_proc *e = *state;
	emu_resp r;
	json_t *p;

	EMU_OK(emu_start(e, "--ports", "3", "--port-speed-mbps", "1000", NULL));
	http(e, "GET", "/v1/ports", NULL, &r);
	assert_int_equal(r.status, 200);
	assert_int_equal(json_integer_value(json_object_get(r.json, "count")), 3);
	p = json_array_get(json_object_get(r.json, "items"), 2);
	assert_string_equal(jstr(p, "id"), "port-3");
	assert_int_equal(json_integer_value(json_object_get(p, "speed_mbps")), 1000);
	assert_non_null(jstr(p, "location"));
	assert_string_equal(jstr(p, "state"), "ACTIVE");
	assert_int_equal(json_array_size(json_object_get(p, "vlans_in_use")), 0);
	emu_resp_free(&r);
	http(e, "GET", "/v1/ports/port-2", NULL, &r);
	assert_int_equal(r.status, 200);
	assert_string_equal(jstr(r.json, "name"), "lab-port-2");
	emu_resp_free(&r);
	http(e, "GET", "/v1/ports/port-9", NULL, &r);
	assert_problem(&r, 404, "NOT_FOUND");
	emu_resp_free(&r);
	http(e, "DELETE", "/v1/ports", NULL, &r);
	assert_problem(&r, 405, "METHOD_NOT_ALLOWED");
	assert_string_equal(r.allow, "GET, HEAD");
	emu_resp_free(&r);
	http(e, "GET", "/v2/things", NULL, &r);
	assert_problem(&r, 404, "NOT_FOUND");
	emu_resp_free(&r);
}

/* With no delays every transition completes at the next request. */
static void test_fabric_lifecycle(void **state)
{
	emu_proc *e = *state;
	emu_resp r;
	char id[64], path[128], st[32];
	json_int_t bw = 0;

	EMU_OK(emu_start(e, NULL));
	http(e, "POST", "/v1/connections", CONN_BODY("web", "port-1", 100, "port-2", 200, 1000), &r);
	assert_int_equal(r.status, 201);
	assert_string_equal(r.content_type, "application/json");
	assert_string_equal(jstr(r.json, "state"), "PENDING");
	assert_memory_equal(jstr(r.json, "id"), "conn-", 5);
	assert_true(json_is_null(json_object_get(r.json, "failure_reason")));
	snprintf(id, sizeof(id), "%s", jstr(r.json, "id"));
	snprintf(path, sizeof(path), "/v1/connections/%s", id);
	assert_string_equal(r.location, path);
	emu_resp_free(&r);
	conn_state(e, id, st, sizeof(st), &bw);
	assert_string_equal(st, "PROVISIONED");
	assert_int_equal(bw, 1000);

	http(e, "GET", "/v1/ports/port-1", NULL, &r);
	assert_int_equal(json_integer_value(json_array_get(json_object_get(r.json, "vlans_in_use"), 0)), 100);
	emu_resp_free(&r);

	http(e, "PATCH", path, "{\"bandwidth_mbps\":2000}", &r);
	assert_int_equal(r.status, 200);
	assert_string_equal(jstr(r.json, "state"), "PENDING");
	assert_int_equal(json_integer_value(json_object_get(r.json, "bandwidth_mbps")), 2000);
	emu_resp_free(&r);
	conn_state(e, id, st, sizeof(st), &bw);
	assert_string_equal(st, "PROVISIONED");
	assert_int_equal(bw, 2000);
	http(e, "PATCH", path, "{\"name\":\"web-2\"}", &r);
	assert_int_equal(r.status, 200);
	assert_string_equal(jstr(r.json, "name"), "web-2");
	assert_string_equal(jstr(r.json, "state"), "PROVISIONED");
	emu_resp_free(&r);
	http(e, "PATCH", path, "{\"a_side\":{\"port_id\":\"port-3\",\"vlan\":1}}", &r);
	assert_problem(&r, 400, "IMMUTABLE_FIELD");
	emu_resp_free(&r);
	http(e, "PATCH", path, "{\"bandwidth_mbps\":20000}", &r);
	assert_problem(&r, 422, "BANDWIDTH_EXCEEDS_PORT_SPEED");
	emu_resp_free(&r);

	http(e, "DELETE", path, NULL, &r);
	assert_int_equal(r.status, 202);
	assert_string_equal(jstr(r.json, "state"), "DEPROVISIONING");
	emu_resp_free(&r);
	conn_state(e, id, st, sizeof(st), NULL);
	assert_string_equal(st, "");
	http(e, "DELETE", path, NULL, &r);
	assert_problem(&r, 404, "NOT_FOUND");
	emu_resp_free(&r);
	/* The VLAN is free again. */
	create(e, CONN_BODY("web", "port-1", 100, "port-2", 200, 1000), id, sizeof(id));

	assert_int_equal(stat_of(e, "transitions", "PENDING->PROVISIONED"), 3);
	assert_int_equal(stat_of(e, "transitions", "DEPROVISIONING->GONE"), 1);
	assert_int_equal(stat_of(e, "total_connections", NULL), 1);
}

static void test_fabric_idempotency(void **state)
{
	emu_proc *e = *state;
	const char *k1[] = { "Idempotency-Key: intent-1", NULL };
	emu_resp r;
	char id[64];

	EMU_OK(emu_start(e, "--provision-delay-ms", "600000", NULL));
	http_hdrs(e, "POST", "/v1/connections", CONN_BODY("a", "port-1", 10, "port-2", 20, 100), k1,
		  &r);
	assert_int_equal(r.status, 201);
	assert_string_equal(jstr(r.json, "idempotency_key"), "intent-1");
	snprintf(id, sizeof(id), "%s", jstr(r.json, "id"));
	emu_resp_free(&r);
	/* The retry answers the first connection; its own VLANs are no conflict. */
	http_hdrs(e, "POST", "/v1/connections", CONN_BODY("a", "port-1", 10, "port-2", 20, 100), k1,
		  &r);
	assert_int_equal(r.status, 200);
	assert_string_equal(jstr(r.json, "id"), id);
	emu_resp_free(&r);
	/* Without the key the same VLANs conflict. */
	http(e, "POST", "/v1/connections", CONN_BODY("a", "port-1", 10, "port-2", 20, 100), &r);
	assert_problem(&r, 409, "VLAN_IN_USE");
	assert_string_equal(jstr(r.json, "connection_id"), id);
	emu_resp_free(&r);
	http(e, "GET", "/v1/connections?idempotency_key=intent-1", NULL, &r);
	assert_int_equal(json_integer_value(json_object_get(r.json, "count")), 1);
	emu_resp_free(&r);
	http(e, "GET", "/v1/connections?idempotency_key=intent-2", NULL, &r);
	assert_int_equal(json_integer_value(json_object_get(r.json, "count")), 0);
	emu_resp_free(&r);
	assert_int_equal(stat_of(e, "total_connections", NULL), 1);
}

static void test_fabric_validation(void **state)
{
	emu_proc *e = *state;
	emu_resp r;
	char id[64];

	EMU_OK(emu_start(e, "--ports", "4", NULL));
	http(e, "POST", "/v1/connections", CONN_BODY("x", "port-1", 0, "port-2", 20, 100), &r);
	assert_problem(&r, 400, "INVALID_VLAN");
	emu_resp_free(&r);
	http(e, "POST", "/v1/connections", CONN_BODY("x", "port-1", 10, "port-2", 4095, 100), &r);
	assert_problem(&r, 400, "INVALID_VLAN");
	assert_non_null(strstr(jstr(r.json, "detail"), "1..4094"));
	emu_resp_free(&r);
	http(e, "POST", "/v1/connections", CONN_BODY("x", "port-1", "10", "port-2", 20, 100), &r);
	assert_problem(&r, 400, "INVALID_VLAN");
	emu_resp_free(&r);
	http(e, "POST", "/v1/connections",
	     "{\"a_side\":{\"port_id\":\"port-1\",\"vlan\":1},\"z_side\":{\"port_id\":\"port-2\",\"vlan\":1},"
	     "\"bandwidth_mbps\":1}", &r);
	assert_problem(&r, 400, "INVALID_FIELD"); /* no name */
	emu_resp_free(&r);
	http(e, "POST", "/v1/connections", "{\"name\":\"x\",\"color\":\"red\"}", &r);
	assert_problem(&r, 400, "INVALID_FIELD");
	emu_resp_free(&r);
	http(e, "POST", "/v1/connections", CONN_BODY("x", "port-1", 10, "port-2", 20, 0), &r);
	assert_problem(&r, 400, "INVALID_FIELD");
	emu_resp_free(&r);
	http(e, "POST", "/v1/connections", "[1]", &r);
	assert_problem(&r, 400, "INVALID_BODY");
	emu_resp_free(&r);
	http(e, "POST", "/v1/connections", CONN_BODY("x", "port-1", 10, "port-9", 20, 100), &r);
	assert_problem(&r, 422, "UNKNOWN_PORT");
	emu_resp_free(&r);
	http(e, "POST", "/v1/connections", CONN_BODY("x", "port-1", 10, "port-2", 20, 10001), &r);
	assert_problem(&r, 422, "BANDWIDTH_EXCEEDS_PORT_SPEED");
	emu_resp_free(&r);
	http(e, "POST", "/v1/connections", CONN_BODY("x", "port-1", 10, "port-1", 10, 100), &r);
	assert_problem(&r, 409, "VLAN_IN_USE");
	emu_resp_free(&r);
	/* A hairpin on one port with two VLANs is fine. */
	create(e, CONN_BODY("hairpin", "port-1", 10, "port-1", 11, 100), id, sizeof(id));
	http(e, "POST", "/v1/connections", CONN_BODY("y", "port-3", 30, "port-1", 11, 100), &r);
	assert_problem(&r, 409, "VLAN_IN_USE");
	assert_string_equal(jstr(r.json, "connection_id"), id);
	emu_resp_free(&r);
	assert_int_equal(stat_of(e, "total_connections", NULL), 1);
}

static void test_fabric_pending(void **state)
{
	emu_proc *e = *state;
	emu_resp r;
	char id[64], path[128], st[32];

	EMU_OK(emu_start(e, "--provision-delay-ms", "600000", "--deprovision-delay-ms", "600000", NULL));
	create(e, CONN_BODY("slow", "port-1", 100, "port-2", 200, 1000), id, sizeof(id));
	snprintf(path, sizeof(path), "/v1/connections/%s", id);
	conn_state(e, id, st, sizeof(st), NULL);
	assert_string_equal(st, "PENDING");
	conn_state(e, id, st, sizeof(st), NULL);
	assert_int_equal(stat_of(e, "served", "PENDING"), 2);
	assert_int_equal(stat_of(e, "connections", "PENDING"), 1);

	http(e, "PATCH", path, "{\"bandwidth_mbps\":2000}", &r);
	assert_problem(&r, 409, "INVALID_STATE");
	emu_resp_free(&r);
	http(e, "PATCH", path, "{\"name\":\"slower\"}", &r);
	assert_int_equal(r.status, 200); /* a name is no provisioning */
	emu_resp_free(&r);

	http(e, "DELETE", path, NULL, &r);
	assert_int_equal(r.status, 202);
	emu_resp_free(&r);
	conn_state(e, id, st, sizeof(st), NULL);
	assert_string_equal(st, "DEPROVISIONING");
	http(e, "DELETE", path, NULL, &r); /* again: still 202 */
	assert_int_equal(r.status, 202);
	emu_resp_free(&r);
	/* The VLANs are held until the connection is gone. */
	http(e, "POST", "/v1/connections", CONN_BODY("next", "port-1", 100, "port-3", 300, 10), &r);
	assert_problem(&r, 409, "VLAN_IN_USE");
	assert_non_null(strstr(jstr(r.json, "detail"), "DEPROVISIONING"));
	emu_resp_free(&r);
	http(e, "PATCH", path, "{\"name\":\"x\"}", &r);
	assert_problem(&r, 409, "INVALID_STATE");
	emu_resp_free(&r);
}

static void test_fabric_failures(void **state)
{
	emu_proc *e = *state;
	emu_resp r;
	char id[64], id2[64], path[128], st[32];
	json_int_t bw = 0;

	EMU_OK(emu_start(e, "--provision-fail-rate", "1", NULL));
	create(e, CONN_BODY("doomed", "port-1", 100, "port-2", 200, 1000), id, sizeof(id));
	snprintf(path, sizeof(path), "/v1/connections/%s", id);
	http(e, "GET", path, NULL, &r);
	assert_string_equal(jstr(r.json, "state"), "FAILED");
	assert_non_null(strstr(jstr(r.json, "failure_reason"), "provisioning failed"));
	emu_resp_free(&r);
	/* A FAILED connection keeps its VLANs and cannot be changed. */
	http(e, "POST", "/v1/connections", CONN_BODY("other", "port-1", 100, "port-3", 300, 10), &r);
	assert_problem(&r, 409, "VLAN_IN_USE");
	emu_resp_free(&r);
	http(e, "PATCH", path, "{\"bandwidth_mbps\":10}", &r);
	assert_problem(&r, 409, "INVALID_STATE");
	emu_resp_free(&r);
	http(e, "DELETE", path, NULL, &r);
	assert_int_equal(r.status, 202);
	emu_resp_free(&r);
	conn_state(e, id, st, sizeof(st), NULL);
	assert_string_equal(st, "");
	assert_int_equal(stat_of(e, "transitions", "PENDING->FAILED"), 1);

	/* A failed bandwidth change: PROVISIONED with the old bandwidth. */
	http(e, "PUT", "/_config", "{\"provision_fail_rate\":0}", &r);
	emu_resp_free(&r);
	create(e, CONN_BODY("ok", "port-1", 100, "port-2", 200, 1000), id2, sizeof(id2));
	conn_state(e, id2, st, sizeof(st), NULL);
	assert_string_equal(st, "PROVISIONED");
	http(e, "PUT", "/_config", "{\"provision_fail_rate\":1}", &r);
	emu_resp_free(&r);
	snprintf(path, sizeof(path), "/v1/connections/%s", id2);
	http(e, "PATCH", path, "{\"bandwidth_mbps\":3000}", &r);
	assert_int_equal(r.status, 200);
	emu_resp_free(&r);
	http(e, "GET", path, NULL, &r);
	assert_string_equal(jstr(r.json, "state"), "PROVISIONED");
	assert_int_equal(json_integer_value(json_object_get(r.json, "bandwidth_mbps")), 1000);
	assert_non_null(strstr(jstr(r.json, "failure_reason"), "bandwidth change to 3000 Mbps failed"));
	emu_resp_free(&r);
	/* A change that succeeds clears the reason. */
	http(e, "PUT", "/_config", "{\"provision_fail_rate\":0}", &r);
	emu_resp_free(&r);
	http(e, "PATCH", path, "{\"bandwidth_mbps\":3000}", &r);
	emu_resp_free(&r);
	conn_state(e, id2, st, sizeof(st), &bw);
	assert_int_equal(bw, 3000);
	http(e, "GET", path, NULL, &r);
	assert_true(json_is_null(json_object_get(r.json, "failure_reason")));
	emu_resp_free(&r);
}

static void test_fabric_filters(void **state)
{
	emu_proc *e = *state;
	emu_resp r;
	char id[64];

	EMU_OK(emu_start(e, NULL));
	create(e, CONN_BODY("a", "port-1", 1, "port-2", 1, 10), id, sizeof(id));
	create(e, CONN_BODY("b", "port-1", 2, "port-2", 2, 10), id, sizeof(id));
	create(e, CONN_BODY("b", "port-1", 3, "port-2", 3, 10), id, sizeof(id));
	http(e, "GET", "/v1/connections", NULL, &r);
	assert_int_equal(json_integer_value(json_object_get(r.json, "count")), 3);
	assert_string_equal(jstr(json_array_get(json_object_get(r.json, "items"), 0), "name"), "a");
	emu_resp_free(&r);
	http(e, "GET", "/v1/connections?name=b", NULL, &r);
	assert_int_equal(json_integer_value(json_object_get(r.json, "count")), 2);
	emu_resp_free(&r);
	http(e, "GET", "/v1/connections?name=b&state=PROVISIONED", NULL, &r);
	assert_int_equal(json_integer_value(json_object_get(r.json, "count")), 2);
	emu_resp_free(&r);
	http(e, "GET", "/v1/connections?state=FAILED", NULL, &r);
	assert_int_equal(json_integer_value(json_object_get(r.json, "count")), 0);
	emu_resp_free(&r);
}

static void test_fabric_state_file(void **state)
{
	emu_proc *e = *state;
	emu_resp r;
	char id1[64], id2[64], id3[64], st[32];

	EMU_OK(emu_start(e, "--state-file", e->state_file, "--provision-delay-ms", "600000", NULL));
	create(e, CONN_BODY("one", "port-1", 100, "port-2", 200, 1000), id1, sizeof(id1));
	create(e, CONN_BODY("two", "port-3", 300, "port-4", 400, 500), id2, sizeof(id2));
	assert_int_equal(emu_stop(e), 0);

	EMU_OK(emu_start(e, "--state-file", e->state_file, NULL));
	conn_state(e, id1, st, sizeof(st), NULL);
	assert_string_equal(st, "PENDING"); /* its transition is still due later */
	conn_state(e, id2, st, sizeof(st), NULL);
	assert_string_equal(st, "PENDING");
	http(e, "POST", "/v1/connections", CONN_BODY("x", "port-1", 100, "port-3", 1, 10), &r);
	assert_problem(&r, 409, "VLAN_IN_USE");
	emu_resp_free(&r);
	create(e, CONN_BODY("three", "port-1", 101, "port-3", 301, 10), id3, sizeof(id3));
	assert_string_not_equal(id3, id1);
	assert_string_not_equal(id3, id2);
	assert_int_equal(stat_of(e, "total_connections", NULL), 3);
}

static void test_fabric_token_and_faults(void **state)
{
	emu_proc *e = *state;
	const char *tok[] = { "Authorization: Bearer t0k", NULL };
	const char *bad[] = { "Authorization: Bearer nope", NULL };
	emu_resp r;

	EMU_OK(emu_start(e, "--token", "t0k", NULL));
	http(e, "GET", "/v1/ports", NULL, &r);
	assert_problem(&r, 401, "UNAUTHORIZED");
	assert_memory_equal(r.www_auth, "Bearer", 6);
	emu_resp_free(&r);
	http_hdrs(e, "GET", "/v1/ports", NULL, bad, &r);
	assert_int_equal(r.status, 401);
	emu_resp_free(&r);
	http_hdrs(e, "GET", "/v1/ports", NULL, tok, &r);
	assert_int_equal(r.status, 200);
	emu_resp_free(&r);
	http(e, "GET", "/_stats", NULL, &r); /* control endpoints need no token */
	assert_int_equal(r.status, 200);
	emu_resp_free(&r);
	assert_int_equal(emu_stop(e), 0);

	EMU_OK(emu_start(e, "--fail-rate", "1", NULL));
	for (int i = 0; i < 6; i++) {
		http(e, "POST", "/v1/connections", CONN_BODY("x", "port-1", 10, "port-2", 20, 100), &r);
		assert_true(r.status == 500 || r.status == 503);
		assert_problem(&r, r.status, "INJECTED_FAILURE");
		emu_resp_free(&r);
	}
	assert_int_equal(stat_of(e, "total_connections", NULL), 0);
	assert_int_equal(stat_of(e, "requests", "POST"), 6);
	http(e, "PUT", "/_config", "{\"fail_rate\":0,\"rate_429\":1,\"retry_after\":2}", &r);
	assert_int_equal(r.status, 200);
	emu_resp_free(&r);
	http(e, "GET", "/v1/ports", NULL, &r);
	assert_problem(&r, 429, "RATE_LIMITED");
	assert_string_equal(r.retry_after, "2");
	emu_resp_free(&r);
	http(e, "PUT", "/_config", "{\"provision_delay_ms\":-1}", &r);
	assert_problem(&r, 400, "INVALID_FIELD");
	emu_resp_free(&r);
	http(e, "DELETE", "/_connections", NULL, &r);
	assert_int_equal(r.status, 200);
	emu_resp_free(&r);
}

static int run_cli(const char *a1, const char *a2, const char *a3)
{
	const char *args[] = { a1, a2, a3, NULL };
	char bin[512];

	assert_int_equal(emu_locate(bin, sizeof(bin), "fabric", MO_BINARY_DIR), 0);
	return emu_run(bin, args);
}

static void test_fabric_cli(void **state)
{
	(void)state;
	assert_int_equal(run_cli("--help", NULL, NULL), 0);
	assert_int_equal(run_cli("--bogus", NULL, NULL), 2);
	assert_int_equal(run_cli("--ports", "0", NULL), 2);
	assert_int_equal(run_cli("--provision-fail-rate", "2", NULL), 2);
	assert_int_equal(run_cli("--token", "", NULL), 2);
	assert_int_equal(run_cli("extra", NULL, NULL), 2);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_fabric_ports, fabric_setup, emu_teardown),
		cmocka_unit_test_setup_teardown(test_fabric_lifecycle, fabric_setup, emu_teardown),
		cmocka_unit_test_setup_teardown(test_fabric_idempotency, fabric_setup, emu_teardown),
		cmocka_unit_test_setup_teardown(test_fabric_validation, fabric_setup, emu_teardown),
		cmocka_unit_test_setup_teardown(test_fabric_pending, fabric_setup, emu_teardown),
		cmocka_unit_test_setup_teardown(test_fabric_failures, fabric_setup, emu_teardown),
		cmocka_unit_test_setup_teardown(test_fabric_filters, fabric_setup, emu_teardown),
		cmocka_unit_test_setup_teardown(test_fabric_state_file, fabric_setup, emu_teardown),
		cmocka_unit_test_setup_teardown(test_fabric_token_and_faults, fabric_setup, emu_teardown),
		cmocka_unit_test(test_fabric_cli),
	};
	int rc;
	curl_global_init(CURL_GLOBAL_DEFAULT);
	rc = cmocka_run_group_tests(tests, NULL, NULL);
	curl_global_cleanup();
	return rc;
}
