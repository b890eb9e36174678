/*
 * test_k8s.c - the lab's Kubernetes API emulator (examples/lab/k8s.c),
 * driven over real HTTP.
 *
 * Each test starts the built k8s binary (env K8S, else MO_BINARY_DIR/k8s)
 * on a free port of 127.0.0.1 (--listen 127.0.0.1:0 --port-file) with a
 * token, talks to it with libcurl, and stops it with SIGTERM at teardown,
 * which must end it with exit status 0.  Rollouts and namespace
 * termination are waited for by polling with a bound, never timed.
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

#define TOKEN "unit-token"
#define RO_TOKEN "unit-readonly"

/* Each test gets its own k8s (env K8S, else MO_BINARY_DIR/k8s), started by
 * the test itself, always with both tokens. */
static int k8s_setup(void **state)
{
	static const char *const tokens[] = { "--token", TOKEN, "--readonly-token", RO_TOKEN, NULL };
	emu_proc *k = emu_new("k8s", MO_BINARY_DIR);
	if (!k)
		return -1;
	k->always = tokens;
	*state = k;
	return 0;
}

/* method base+path with body (may be NULL) and the bearer token (NULL: none). */
static void req(const emu_proc *k, const char *token, const char *method, const char *path,
		const char *body, emu_resp *out)
{
	emu_req rq = { .method = method, .path = path, .body = body, .bearer = token,
		       .always_json = 1 };
	EMU_OK(emu_send(k, &rq, out));
}

static void api(const emu_proc *k, const char *method, const char *path, const char *body,
		emu_resp *out)
{
	req(k, TOKEN, method, path, body, out);
}

/* A string at a /-separated path of j ("metadata/name"), or "". */
static const char *str_at(json_t *j, const char *path)
{
	char buf[256], *save = NULL;
	snprintf(buf, sizeof(buf), "%s", path);
	for (char *t = strtok_r(buf, "/", &save); t && j; t = strtok_r(NULL, "/", &save))
		j = json_object_get(j, t);
	return json_is_string(j) ? json_string_value(j) : "";
}

static json_int_t int_at(json_t *j, const char *path)
{
	char buf[256], *save = NULL;
	snprintf(buf, sizeof(buf), "%s", path);
	for (char *t = strtok_r(buf, "/", &save); t && j; t = strtok_r(NULL, "/", &save))
		j = json_object_get(j, t);
	return json_is_integer(j) ? json_integer_value(j) : -1;
}

/* A Deployment's revision annotation (its key holds a '/'), or "". */
static const char *revision(json_t *dep)
{
	json_t *v = json_object_get(json_object_get(json_object_get(dep, "metadata"), "annotations"),
				    "deployment.kubernetes.io/revision");
	return json_is_string(v) ? json_string_value(v) : "";
}

/* The answer is a Status failure with code and reason. */
static void assert_status(const emu_resp *r, long code, const char *reason)
{
	assert_int_equal(r->status, code);
	assert_non_null(r->json);
	assert_string_equal(str_at(r->json, "kind"), "Status");
	assert_string_equal(str_at(r->json, "status"), "Failure");
	assert_string_equal(str_at(r->json, "reason"), reason);
	assert_int_equal(int_at(r->json, "code"), code);
}

static const char *DEPLOYMENT =
	"{\"metadata\":{\"name\":\"web\"},\"spec\":{\"replicas\":2,"
	"\"selector\":{\"matchLabels\":{\"app\":\"web\"}},"
	"\"template\":{\"metadata\":{\"labels\":{\"app\":\"web\"}},"
	"\"spec\":{\"containers\":[{\"name\":\"web\",\"image\":\"web:%d\"}]}}}}";

static void create_namespace(const emu_proc *k, const char *name)
{
	char body[128];
	emu_resp r;
	snprintf(body, sizeof(body), "{\"metadata\":{\"name\":\"%s\"}}", name);
	api(k, "POST", "/api/v1/namespaces", body, &r);
	assert_int_equal(r.status, 201);
	emu_resp_free(&r);
}

/* How long a poll waits for a rollout or a termination: far more than the
 * emulator's delays, for a slow (sanitized, loaded) machine. */
#define POLL_MS 30000

/* GET path into *r until the integer at field equals want, or POLL_MS have
 * passed; *r holds the last answer either way (the caller's to free). */
static void poll_int(const emu_proc *k, const char *path, const char *field, json_int_t want,
		     emu_resp *r)
{
	int64_t end = mo_now_ms() + POLL_MS;
	for (;;) {
		api(k, "GET", path, NULL, r);
		if (int_at(r->json, field) == want || mo_now_ms() >= end)
			return;
		emu_resp_free(r);
		emu_sleep_ms(50);
	}
}

/* Poll GET path until the string at field equals want (at most POLL_MS). */
static void wait_for(const emu_proc *k, const char *path, const char *field, const char *want)
{
	emu_resp r;
	for (int64_t end = mo_now_ms() + POLL_MS;;) {
		api(k, "GET", path, NULL, &r);
		if (strcmp(str_at(r.json, field), want) == 0) {
			emu_resp_free(&r);
			return;
		}
		emu_resp_free(&r);
		if (mo_now_ms() >= end)
			break;
		emu_sleep_ms(50);
	}
	fail_msg("%s: %s never became %s", path, field, want);
}

/* ---- tests ------------------------------------------------------------ */

static void test_k8s_crud_and_metadata(void **state)
{
	emu_proc *k = *state;
	emu_resp r;
	char uid[64], rv1[24];

	EMU_OK(emu_start(k, NULL));
	create_namespace(k, "edge");
	api(k, "POST", "/api/v1/namespaces/edge/configmaps",
	    "{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"metadata\":{\"name\":\"cfg\"},"
	    "\"data\":{\"a\":\"1\"}}", &r);
	assert_int_equal(r.status, 201);
	assert_string_equal(str_at(r.json, "metadata/namespace"), "edge");
	assert_int_equal(strlen(str_at(r.json, "metadata/uid")), 36);
	assert_true(strlen(str_at(r.json, "metadata/creationTimestamp")) == 20);
	snprintf(uid, sizeof(uid), "%s", str_at(r.json, "metadata/uid"));
	snprintf(rv1, sizeof(rv1), "%s", str_at(r.json, "metadata/resourceVersion"));
	emu_resp_free(&r);

	api(k, "GET", "/api/v1/namespaces/edge/configmaps/cfg", NULL, &r);
	assert_int_equal(r.status, 200);
	assert_string_equal(str_at(r.json, "metadata/uid"), uid);
	assert_string_equal(str_at(r.json, "data/a"), "1");
	emu_resp_free(&r);

	api(k, "GET", "/api/v1/namespaces/edge/configmaps", NULL, &r);
	assert_int_equal(r.status, 200);
	assert_string_equal(str_at(r.json, "kind"), "ConfigMapList");
	assert_int_equal(json_array_size(json_object_get(r.json, "items")), 1);
	assert_string_equal(str_at(r.json, "metadata/resourceVersion"), rv1);
	emu_resp_free(&r);

	api(k, "POST", "/api/v1/namespaces/edge/configmaps", "{\"metadata\":{\"name\":\"cfg\"}}", &r);
	assert_status(&r, 409, "AlreadyExists");
	emu_resp_free(&r);

	api(k, "DELETE", "/api/v1/namespaces/edge/configmaps/cfg", NULL, &r);
	assert_int_equal(r.status, 200);
	assert_string_equal(str_at(r.json, "status"), "Success");
	assert_string_equal(str_at(r.json, "details/uid"), uid);
	emu_resp_free(&r);
	api(k, "GET", "/api/v1/namespaces/edge/configmaps/cfg", NULL, &r);
	assert_status(&r, 404, "NotFound");
	assert_string_equal(str_at(r.json, "details/name"), "cfg");
	emu_resp_free(&r);
	api(k, "GET", "/api/v1/namespaces/nowhere/configmaps", NULL, &r);
	assert_int_equal(r.status, 200); /* a namespace that does not exist lists empty */
	assert_int_equal(json_array_size(json_object_get(r.json, "items")), 0);
	emu_resp_free(&r);
}

static void test_k8s_conflict_on_stale_resource_version(void **state)
{
	emu_proc *k = *state;
	emu_resp r;
	char body[256], rv[24];

	EMU_OK(emu_start(k, NULL));
	api(k, "POST", "/api/v1/namespaces/default/configmaps",
	    "{\"metadata\":{\"name\":\"cfg\"},\"data\":{\"a\":\"1\"}}", &r);
	snprintf(rv, sizeof(rv), "%s", str_at(r.json, "metadata/resourceVersion"));
	emu_resp_free(&r);

	snprintf(body, sizeof(body), "{\"metadata\":{\"name\":\"cfg\",\"resourceVersion\":\"%s\"},"
		 "\"data\":{\"a\":\"2\"}}", rv);
	api(k, "PUT", "/api/v1/namespaces/default/configmaps/cfg", body, &r);
	assert_int_equal(r.status, 200);
	assert_true(strtoull(str_at(r.json, "metadata/resourceVersion"), NULL, 10) >
		    strtoull(rv, NULL, 10));
	emu_resp_free(&r);

	/* The same resourceVersion again is stale now. */
	api(k, "PUT", "/api/v1/namespaces/default/configmaps/cfg", body, &r);
	assert_status(&r, 409, "Conflict");
	emu_resp_free(&r);
	api(k, "GET", "/api/v1/namespaces/default/configmaps/cfg", NULL, &r);
	assert_string_equal(str_at(r.json, "data/a"), "2");
	emu_resp_free(&r);

	api(k, "PUT", "/api/v1/namespaces/default/configmaps/nope",
	    "{\"metadata\":{\"name\":\"nope\"}}", &r);
	assert_status(&r, 404, "NotFound"); /* PUT does not create */
	emu_resp_free(&r);
}

static void test_k8s_validation(void **state)
{
	emu_proc *k = *state;
	emu_resp r;
	char body[600];

	EMU_OK(emu_start(k, NULL));
	api(k, "POST", "/api/v1/namespaces", "{\"metadata\":{\"name\":\"Bad_Name\"}}", &r);
	assert_status(&r, 422, "Invalid");
	assert_string_equal(str_at(json_array_get(json_object_get(json_object_get(r.json, "details"),
								   "causes"), 0), "field"), "metadata.name");
	emu_resp_free(&r);
	api(k, "POST", "/api/v1/namespaces/nope/configmaps", "{\"metadata\":{\"name\":\"x\"}}", &r);
	assert_status(&r, 404, "NotFound");
	emu_resp_free(&r);
	api(k, "POST", "/api/v1/namespaces/default/configmaps", "{\"metadata\":", &r);
	assert_status(&r, 400, "BadRequest");
	emu_resp_free(&r);
	api(k, "POST", "/apis/apps/v1/namespaces/default/deployments",
	    "{\"metadata\":{\"name\":\"d\"},\"spec\":{\"selector\":{\"matchLabels\":{\"a\":\"b\"}},"
	    "\"template\":{\"metadata\":{\"labels\":{\"a\":\"c\"}},\"spec\":{\"containers\":"
	    "[{\"name\":\"c\",\"image\":\"i\"}]}}}}", &r);
	assert_status(&r, 422, "Invalid");
	emu_resp_free(&r);
	api(k, "POST", "/api/v1/namespaces/default/services",
	    "{\"metadata\":{\"name\":\"s\"},\"spec\":{\"ports\":[{\"port\":70000}]}}", &r);
	assert_status(&r, 422, "Invalid");
	emu_resp_free(&r);

	/* Defaults: clusterIP, protocol, targetPort; clusterIP is immutable. */
	api(k, "POST", "/api/v1/namespaces/default/services",
	    "{\"metadata\":{\"name\":\"s\"},\"spec\":{\"ports\":[{\"port\":80}]}}", &r);
	assert_int_equal(r.status, 201);
	assert_string_equal(str_at(r.json, "spec/type"), "ClusterIP");
	assert_true(strncmp(str_at(r.json, "spec/clusterIP"), "10.96.", 6) == 0);
	assert_string_equal(str_at(json_array_get(json_object_get(json_object_get(r.json, "spec"),
								   "ports"), 0), "protocol"), "TCP");
	emu_resp_free(&r);
	snprintf(body, sizeof(body), "{\"metadata\":{\"name\":\"s\"},\"spec\":{\"clusterIP\":\"10.0.0.9\","
		 "\"ports\":[{\"port\":80}]}}");
	api(k, "PUT", "/api/v1/namespaces/default/services/s", body, &r);
	assert_status(&r, 422, "Invalid");
	emu_resp_free(&r);
	api(k, "PATCH", "/api/v1/namespaces/default/services/s", "{}", &r);
	assert_status(&r, 415, "UnsupportedMediaType");
	emu_resp_free(&r);
	api(k, "GET", "/api/v1/pods", NULL, &r);
	assert_status(&r, 404, "NotFound");
	emu_resp_free(&r);
}

static void test_k8s_rollout_and_generation(void **state)
{
	emu_proc *k = *state;
	emu_resp r;
	char body[600], cur[4096];
	const char *path = "/apis/apps/v1/namespaces/default/deployments/web";

	EMU_OK(emu_start(k, "--rollout-delay-ms", "100", NULL));
	snprintf(body, sizeof(body), DEPLOYMENT, 1);
	api(k, "POST", "/apis/apps/v1/namespaces/default/deployments", body, &r);
	assert_int_equal(r.status, 201);
	assert_int_equal(int_at(r.json, "metadata/generation"), 1);
	assert_int_equal(int_at(r.json, "status/updatedReplicas"), 0);
	emu_resp_free(&r);

	/* Available once rolled out. */
	poll_int(k, path, "status/availableReplicas", 2, &r);
	assert_int_equal(int_at(r.json, "status/availableReplicas"), 2);
	assert_int_equal(int_at(r.json, "status/observedGeneration"), 1);
	{
		json_t *conds = json_object_get(json_object_get(r.json, "status"), "conditions"), *c;
		size_t i;
		int available = 0;
		json_array_foreach(conds, i, c)
			if (!strcmp(str_at(c, "type"), "Available") && !strcmp(str_at(c, "status"), "True"))
				available = 1;
		assert_true(available);
	}
	assert_string_equal(revision(r.json), "1");

	/* The same spec again: generation unchanged; a new image: +1. */
	snprintf(cur, sizeof(cur), "%s", r.body.ptr);
	emu_resp_free(&r);
	api(k, "PUT", path, cur, &r);
	assert_int_equal(r.status, 200);
	assert_int_equal(int_at(r.json, "metadata/generation"), 1);
	emu_resp_free(&r);
	snprintf(body, sizeof(body), DEPLOYMENT, 2);
	api(k, "PUT", path, body, &r);
	assert_int_equal(r.status, 200);
	assert_int_equal(int_at(r.json, "metadata/generation"), 2);
	assert_int_equal(int_at(r.json, "status/updatedReplicas"), 0);
	assert_string_equal(revision(r.json), "2");
	emu_resp_free(&r);
	poll_int(k, path, "status/updatedReplicas", 2, &r);
	assert_int_equal(int_at(r.json, "status/observedGeneration"), 2);
	assert_int_equal(int_at(r.json, "status/availableReplicas"), 2);
	emu_resp_free(&r);
}

static void test_k8s_namespace_termination(void **state)
{
	emu_proc *k = *state;
	emu_resp r;

	/* Terminating for 3 s: the three requests right after the delete must
	 * all see it terminating, however slow the machine (at 200 ms a loaded
	 * machine was seen to answer the second DELETE with 404, not 409). */
	EMU_OK(emu_start(k, "--terminating-ms", "3000", NULL));
	create_namespace(k, "doomed");
	api(k, "POST", "/api/v1/namespaces/doomed/configmaps", "{\"metadata\":{\"name\":\"c\"}}", &r);
	assert_int_equal(r.status, 201);
	emu_resp_free(&r);

	api(k, "DELETE", "/api/v1/namespaces/doomed", NULL, &r);
	assert_int_equal(r.status, 200);
	assert_string_equal(str_at(r.json, "status/phase"), "Terminating");
	assert_true(*str_at(r.json, "metadata/deletionTimestamp"));
	emu_resp_free(&r);
	api(k, "DELETE", "/api/v1/namespaces/doomed", NULL, &r);
	assert_status(&r, 409, "Conflict");
	emu_resp_free(&r);
	api(k, "POST", "/api/v1/namespaces/doomed/configmaps", "{\"metadata\":{\"name\":\"d\"}}", &r);
	assert_status(&r, 403, "Forbidden");
	emu_resp_free(&r);

	wait_for(k, "/api/v1/namespaces/doomed", "reason", "NotFound");
	api(k, "GET", "/api/v1/namespaces/doomed/configmaps/c", NULL, &r);
	assert_status(&r, 404, "NotFound");
	emu_resp_free(&r);
	api(k, "DELETE", "/api/v1/namespaces/default", NULL, &r);
	assert_status(&r, 403, "Forbidden");
	emu_resp_free(&r);
}

static void test_k8s_tokens(void **state)
{
	emu_proc *k = *state;
	emu_resp r;

	EMU_OK(emu_start(k, NULL));
	req(k, NULL, "GET", "/api/v1/namespaces", NULL, &r);
	assert_status(&r, 401, "Unauthorized");
	emu_resp_free(&r);
	req(k, "wrong", "GET", "/api/v1/namespaces", NULL, &r);
	assert_status(&r, 401, "Unauthorized");
	emu_resp_free(&r);
	req(k, RO_TOKEN, "GET", "/api/v1/namespaces", NULL, &r);
	assert_int_equal(r.status, 200);
	emu_resp_free(&r);
	req(k, RO_TOKEN, "POST", "/api/v1/namespaces", "{\"metadata\":{\"name\":\"x\"}}", &r);
	assert_status(&r, 403, "Forbidden");
	emu_resp_free(&r);
	req(k, NULL, "GET", "/version", NULL, &r);
	assert_int_equal(r.status, 200);
	assert_string_equal(str_at(r.json, "major"), "1");
	emu_resp_free(&r);
}

static void test_k8s_fail_rate(void **state)
{
	emu_proc *k = *state;
	emu_resp r;

	EMU_OK(emu_start(k, "--fail-rate", "1", "--seed", "3", NULL));
	for (int i = 0; i < 10; i++) {
		api(k, "POST", "/api/v1/namespaces/default/configmaps", "{\"metadata\":{\"name\":\"c\"}}", &r);
		assert_true(r.status == 500 || r.status == 503);
		emu_resp_free(&r);
	}
	req(k, NULL, "GET", "/_stats", NULL, &r);
	assert_int_equal(int_at(r.json, "total_objects"), 0);
	emu_resp_free(&r);
}

static void test_k8s_state_file(void **state)
{
	emu_proc *k = *state;
	emu_resp r;
	char listen[32], uid[64];
	const char *args[] = { "--state-file", k->state_file, NULL };

	EMU_OK(emu_startv(k, NULL, args));
	create_namespace(k, "kept");
	api(k, "GET", "/api/v1/namespaces/kept", NULL, &r);
	snprintf(uid, sizeof(uid), "%s", str_at(r.json, "metadata/uid"));
	emu_resp_free(&r);

	/* Killed without a chance to save: the file already holds the change. */
	emu_kill(k);
	snprintf(listen, sizeof(listen), "127.0.0.1:%u", k->port);
	EMU_OK(emu_startv(k, listen, args));
	api(k, "GET", "/api/v1/namespaces/kept", NULL, &r);
	assert_int_equal(r.status, 200);
	assert_string_equal(str_at(r.json, "metadata/uid"), uid);
	emu_resp_free(&r);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_k8s_crud_and_metadata, k8s_setup, emu_teardown),
		cmocka_unit_test_setup_teardown(test_k8s_conflict_on_stale_resource_version, k8s_setup,
						emu_teardown),
		cmocka_unit_test_setup_teardown(test_k8s_validation, k8s_setup, emu_teardown),
		cmocka_unit_test_setup_teardown(test_k8s_rollout_and_generation, k8s_setup, emu_teardown),
		cmocka_unit_test_setup_teardown(test_k8s_namespace_termination, k8s_setup, emu_teardown),
		cmocka_unit_test_setup_teardown(test_k8s_tokens, k8s_setup, emu_teardown),
		cmocka_unit_test_setup_teardown(test_k8s_fail_rate, k8s_setup, emu_teardown),
		cmocka_unit_test_setup_teardown(test_k8s_state_file, k8s_setup, emu_teardown),
	};
	curl_global_init(CURL_GLOBAL_DEFAULT);
	int rc = cmocka_run_group_tests(tests, NULL, NULL);
	curl_global_cleanup();
	return rc;
}
