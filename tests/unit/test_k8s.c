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

#include <curl/curl.h>
#include <fcntl.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef MO_BINARY_DIR
#define MO_BINARY_DIR "."
#endif

#define TOKEN "unit-token"
#define RO_TOKEN "unit-readonly"

typedef struct {
	pid_t pid;
	unsigned port;
	char dir[64];
	char port_file[96];
	char state_file[96];
	char base[64];
} k8s;

typedef struct {
	long status;
	mo_buf body;
	json_t *json;
} http_resp;

static const char *k8s_path(void)
{
	const char *p = getenv("K8S");
	return p && *p ? p : MO_BINARY_DIR "/k8s";
}

static void sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
	nanosleep(&ts, NULL);
}

/* ---- the child process ------------------------------------------------ */

/* Start k8s on listen ("127.0.0.1:0" or a fixed port) with the extra
 * arguments (NULL-terminated); wait for its port file. */
static void k8s_start(k8s *k, const char *listen, ...)
{
	const char *argv[32];
	int argc = 0, status;
	char *text = NULL;
	size_t len;
	va_list ap;

	unlink(k->port_file);
	argv[argc++] = k8s_path();
	argv[argc++] = "--listen";
	argv[argc++] = listen;
	argv[argc++] = "--port-file";
	argv[argc++] = k->port_file;
	argv[argc++] = "--token";
	argv[argc++] = TOKEN;
	argv[argc++] = "--readonly-token";
	argv[argc++] = RO_TOKEN;
	va_start(ap, listen);
	for (const char *a; (a = va_arg(ap, const char *));)
		argv[argc++] = a;
	va_end(ap);
	argv[argc] = NULL;
	assert_true(argc < (int)MO_ARRAY_SIZE(argv));
	assert_int_equal(access(argv[0], X_OK), 0);

	k->pid = fork();
	assert_true(k->pid >= 0);
	if (k->pid == 0) {
		int fd = open("/dev/null", O_WRONLY);
		if (fd >= 0)
			dup2(fd, STDOUT_FILENO);
		execv(argv[0], (char *const *)argv);
		_exit(127);
	}
	for (int i = 0; i < 1000; i++) { /* up to 10 s */
		if (mo_file_read(&text, &len, k->port_file) == 0)
			break;
		assert_int_equal(waitpid(k->pid, &status, WNOHANG), 0);
		sleep_ms(10);
	}
	assert_non_null(text);
	k->port = (unsigned)strtoul(text, NULL, 10);
	mo_free(text);
	assert_true(k->port > 0 && k->port < 65536);
	snprintf(k->base, sizeof(k->base), "http://127.0.0.1:%u", k->port);
}

static int k8s_setup(void **state)
{
	k8s *k = mo_calloc(1, sizeof(*k));
	if (!k)
		return -1;
	snprintf(k->dir, sizeof(k->dir), "/tmp/mo-k8s-XXXXXX");
	if (!mkdtemp(k->dir)) {
		mo_free(k);
		return -1;
	}
	snprintf(k->port_file, sizeof(k->port_file), "%s/port", k->dir);
	snprintf(k->state_file, sizeof(k->state_file), "%s/state.json", k->dir);
	*state = k;
	return 0;
}

static int k8s_teardown(void **state)
{
	k8s *k = *state;
	int status = 0, rc = 0;
	if (k->pid > 0) {
		pid_t w = 0;
		kill(k->pid, SIGTERM);
		for (int i = 0; i < 1000 && (w = waitpid(k->pid, &status, WNOHANG)) == 0; i++)
			sleep_ms(10);
		if (w == 0) {
			kill(k->pid, SIGKILL);
			waitpid(k->pid, &status, 0);
			fprintf(stderr, "k8s did not stop on SIGTERM\n");
			rc = -1;
		} else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
			fprintf(stderr, "k8s ended with status 0x%x\n", status);
			rc = -1;
		}
	}
	unlink(k->port_file);
	unlink(k->state_file);
	rmdir(k->dir);
	mo_free(k);
	return rc;
}

/* ---- HTTP ------------------------------------------------------------- */

static size_t on_body(char *p, size_t size, size_t n, void *ud)
{
	http_resp *r = ud;
	return mo_buf_put(&r->body, p, size * n) == 0 ? size * n : 0;
}

static void resp_free(http_resp *r)
{
	mo_buf_free(&r->body);
	json_decref(r->json);
	memset(r, 0, sizeof(*r));
}

/* method base+path with body (may be NULL) and the bearer token (NULL: none). */
static void req(const k8s *k, const char *token, const char *method, const char *path,
		const char *body, http_resp *out)
{
	char url[512], auth[128];
	struct curl_slist *hdrs = curl_slist_append(NULL, "Expect:");
	CURL *h = curl_easy_init();
	CURLcode rc;
	assert_non_null(h);
	memset(out, 0, sizeof(*out));
	hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
	if (token) {
		snprintf(auth, sizeof(auth), "Authorization: Bearer %s", token);
		hdrs = curl_slist_append(hdrs, auth);
	}
	snprintf(url, sizeof(url), "%s%s", k->base, path);
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, out);
	curl_easy_setopt(h, CURLOPT_TIMEOUT, 30L);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	if (body)
		curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
	rc = curl_easy_perform(h);
	if (rc != CURLE_OK)
		fail_msg("%s %s: %s", method, path, curl_easy_strerror(rc));
	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &out->status);
	if (out->body.len)
		out->json = json_loadb(out->body.ptr, out->body.len, 0, NULL);
	curl_easy_cleanup(h);
	curl_slist_free_all(hdrs);
}

static void api(const k8s *k, const char *method, const char *path, const char *body,
		http_resp *out)
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
static void assert_status(const http_resp *r, long code, const char *reason)
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

static void create_namespace(const k8s *k, const char *name)
{
	char body[128];
	http_resp r;
	snprintf(body, sizeof(body), "{\"metadata\":{\"name\":\"%s\"}}", name);
	api(k, "POST", "/api/v1/namespaces", body, &r);
	assert_int_equal(r.status, 201);
	resp_free(&r);
}

/* Poll GET path until the string at field equals want (at most ~10 s). */
static void wait_for(const k8s *k, const char *path, const char *field, const char *want)
{
	http_resp r;
	for (int i = 0; i < 200; i++) {
		api(k, "GET", path, NULL, &r);
		if (strcmp(str_at(r.json, field), want) == 0) {
			resp_free(&r);
			return;
		}
		resp_free(&r);
		sleep_ms(50);
	}
	fail_msg("%s: %s never became %s", path, field, want);
}

/* ---- tests ------------------------------------------------------------ */

static void test_k8s_crud_and_metadata(void **state)
{
	k8s *k = *state;
	http_resp r;
	char uid[64], rv1[24];

	k8s_start(k, "127.0.0.1:0", (char *)NULL);
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
	resp_free(&r);

	api(k, "GET", "/api/v1/namespaces/edge/configmaps/cfg", NULL, &r);
	assert_int_equal(r.status, 200);
	assert_string_equal(str_at(r.json, "metadata/uid"), uid);
	assert_string_equal(str_at(r.json, "data/a"), "1");
	resp_free(&r);

	api(k, "GET", "/api/v1/namespaces/edge/configmaps", NULL, &r);
	assert_int_equal(r.status, 200);
	assert_string_equal(str_at(r.json, "kind"), "ConfigMapList");
	assert_int_equal(json_array_size(json_object_get(r.json, "items")), 1);
	assert_string_equal(str_at(r.json, "metadata/resourceVersion"), rv1);
	resp_free(&r);

	api(k, "POST", "/api/v1/namespaces/edge/configmaps", "{\"metadata\":{\"name\":\"cfg\"}}", &r);
	assert_status(&r, 409, "AlreadyExists");
	resp_free(&r);

	api(k, "DELETE", "/api/v1/namespaces/edge/configmaps/cfg", NULL, &r);
	assert_int_equal(r.status, 200);
	assert_string_equal(str_at(r.json, "status"), "Success");
	assert_string_equal(str_at(r.json, "details/uid"), uid);
	resp_free(&r);
	api(k, "GET", "/api/v1/namespaces/edge/configmaps/cfg", NULL, &r);
	assert_status(&r, 404, "NotFound");
	assert_string_equal(str_at(r.json, "details/name"), "cfg");
	resp_free(&r);
	api(k, "GET", "/api/v1/namespaces/nowhere/configmaps", NULL, &r);
	assert_int_equal(r.status, 200); /* a namespace that does not exist lists empty */
	assert_int_equal(json_array_size(json_object_get(r.json, "items")), 0);
	resp_free(&r);
}

static void test_k8s_conflict_on_stale_resource_version(void **state)
{
	k8s *k = *state;
	http_resp r;
	char body[256], rv[24];

	k8s_start(k, "127.0.0.1:0", (char *)NULL);
	api(k, "POST", "/api/v1/namespaces/default/configmaps",
	    "{\"metadata\":{\"name\":\"cfg\"},\"data\":{\"a\":\"1\"}}", &r);
	snprintf(rv, sizeof(rv), "%s", str_at(r.json, "metadata/resourceVersion"));
	resp_free(&r);

	snprintf(body, sizeof(body), "{\"metadata\":{\"name\":\"cfg\",\"resourceVersion\":\"%s\"},"
		 "\"data\":{\"a\":\"2\"}}", rv);
	api(k, "PUT", "/api/v1/namespaces/default/configmaps/cfg", body, &r);
	assert_int_equal(r.status, 200);
	assert_true(strtoull(str_at(r.json, "metadata/resourceVersion"), NULL, 10) >
		    strtoull(rv, NULL, 10));
	resp_free(&r);

	/* The same resourceVersion again is stale now. */
	api(k, "PUT", "/api/v1/namespaces/default/configmaps/cfg", body, &r);
	assert_status(&r, 409, "Conflict");
	resp_free(&r);
	api(k, "GET", "/api/v1/namespaces/default/configmaps/cfg", NULL, &r);
	assert_string_equal(str_at(r.json, "data/a"), "2");
	resp_free(&r);

	api(k, "PUT", "/api/v1/namespaces/default/configmaps/nope",
	    "{\"metadata\":{\"name\":\"nope\"}}", &r);
	assert_status(&r, 404, "NotFound"); /* PUT does not create */
	resp_free(&r);
}

static void test_k8s_validation(void **state)
{
	k8s *k = *state;
	http_resp r;
	char body[600];

	k8s_start(k, "127.0.0.1:0", (char *)NULL);
	api(k, "POST", "/api/v1/namespaces", "{\"metadata\":{\"name\":\"Bad_Name\"}}", &r);
	assert_status(&r, 422, "Invalid");
	assert_string_equal(str_at(json_array_get(json_object_get(json_object_get(r.json, "details"),
								   "causes"), 0), "field"), "metadata.name");
	resp_free(&r);
	api(k, "POST", "/api/v1/namespaces/nope/configmaps", "{\"metadata\":{\"name\":\"x\"}}", &r);
	assert_status(&r, 404, "NotFound");
	resp_free(&r);
	api(k, "POST", "/api/v1/namespaces/default/configmaps", "{\"metadata\":", &r);
	assert_status(&r, 400, "BadRequest");
	resp_free(&r);
	api(k, "POST", "/apis/apps/v1/namespaces/default/deployments",
	    "{\"metadata\":{\"name\":\"d\"},\"spec\":{\"selector\":{\"matchLabels\":{\"a\":\"b\"}},"
	    "\"template\":{\"metadata\":{\"labels\":{\"a\":\"c\"}},\"spec\":{\"containers\":"
	    "[{\"name\":\"c\",\"image\":\"i\"}]}}}}", &r);
	assert_status(&r, 422, "Invalid");
	resp_free(&r);
	api(k, "POST", "/api/v1/namespaces/default/services",
	    "{\"metadata\":{\"name\":\"s\"},\"spec\":{\"ports\":[{\"port\":70000}]}}", &r);
	assert_status(&r, 422, "Invalid");
	resp_free(&r);

	/* Defaults: clusterIP, protocol, targetPort; clusterIP is immutable. */
	api(k, "POST", "/api/v1/namespaces/default/services",
	    "{\"metadata\":{\"name\":\"s\"},\"spec\":{\"ports\":[{\"port\":80}]}}", &r);
	assert_int_equal(r.status, 201);
	assert_string_equal(str_at(r.json, "spec/type"), "ClusterIP");
	assert_true(strncmp(str_at(r.json, "spec/clusterIP"), "10.96.", 6) == 0);
	assert_string_equal(str_at(json_array_get(json_object_get(json_object_get(r.json, "spec"),
								   "ports"), 0), "protocol"), "TCP");
	resp_free(&r);
	snprintf(body, sizeof(body), "{\"metadata\":{\"name\":\"s\"},\"spec\":{\"clusterIP\":\"10.0.0.9\","
		 "\"ports\":[{\"port\":80}]}}");
	api(k, "PUT", "/api/v1/namespaces/default/services/s", body, &r);
	assert_status(&r, 422, "Invalid");
	resp_free(&r);
	api(k, "PATCH", "/api/v1/namespaces/default/services/s", "{}", &r);
	assert_status(&r, 415, "UnsupportedMediaType");
	resp_free(&r);
	api(k, "GET", "/api/v1/pods", NULL, &r);
	assert_status(&r, 404, "NotFound");
	resp_free(&r);
}

static void test_k8s_rollout_and_generation(void **state)
{
	k8s *k = *state;
	http_resp r;
	char body[600], cur[4096];
	const char *path = "/apis/apps/v1/namespaces/default/deployments/web";

	k8s_start(k, "127.0.0.1:0", "--rollout-delay-ms", "100", (char *)NULL);
	snprintf(body, sizeof(body), DEPLOYMENT, 1);
	api(k, "POST", "/apis/apps/v1/namespaces/default/deployments", body, &r);
	assert_int_equal(r.status, 201);
	assert_int_equal(int_at(r.json, "metadata/generation"), 1);
	assert_int_equal(int_at(r.json, "status/updatedReplicas"), 0);
	resp_free(&r);

	/* Available once rolled out. */
	for (int i = 0; i < 200; i++) {
		api(k, "GET", path, NULL, &r);
		if (int_at(r.json, "status/availableReplicas") == 2)
			break;
		resp_free(&r);
		sleep_ms(50);
	}
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
	resp_free(&r);
	api(k, "PUT", path, cur, &r);
	assert_int_equal(r.status, 200);
	assert_int_equal(int_at(r.json, "metadata/generation"), 1);
	resp_free(&r);
	snprintf(body, sizeof(body), DEPLOYMENT, 2);
	api(k, "PUT", path, body, &r);
	assert_int_equal(r.status, 200);
	assert_int_equal(int_at(r.json, "metadata/generation"), 2);
	assert_int_equal(int_at(r.json, "status/updatedReplicas"), 0);
	assert_string_equal(revision(r.json), "2");
	resp_free(&r);
	for (int i = 0; i < 200; i++) {
		api(k, "GET", path, NULL, &r);
		if (int_at(r.json, "status/updatedReplicas") == 2)
			break;
		resp_free(&r);
		sleep_ms(50);
	}
	assert_int_equal(int_at(r.json, "status/observedGeneration"), 2);
	assert_int_equal(int_at(r.json, "status/availableReplicas"), 2);
	resp_free(&r);
}

static void test_k8s_namespace_termination(void **state)
{
	k8s *k = *state;
	http_resp r;

	k8s_start(k, "127.0.0.1:0", "--terminating-ms", "200", (char *)NULL);
	create_namespace(k, "doomed");
	api(k, "POST", "/api/v1/namespaces/doomed/configmaps", "{\"metadata\":{\"name\":\"c\"}}", &r);
	assert_int_equal(r.status, 201);
	resp_free(&r);

	api(k, "DELETE", "/api/v1/namespaces/doomed", NULL, &r);
	assert_int_equal(r.status, 200);
	assert_string_equal(str_at(r.json, "status/phase"), "Terminating");
	assert_true(*str_at(r.json, "metadata/deletionTimestamp"));
	resp_free(&r);
	api(k, "DELETE", "/api/v1/namespaces/doomed", NULL, &r);
	assert_status(&r, 409, "Conflict");
	resp_free(&r);
	api(k, "POST", "/api/v1/namespaces/doomed/configmaps", "{\"metadata\":{\"name\":\"d\"}}", &r);
	assert_status(&r, 403, "Forbidden");
	resp_free(&r);

	wait_for(k, "/api/v1/namespaces/doomed", "reason", "NotFound");
	api(k, "GET", "/api/v1/namespaces/doomed/configmaps/c", NULL, &r);
	assert_status(&r, 404, "NotFound");
	resp_free(&r);
	api(k, "DELETE", "/api/v1/namespaces/default", NULL, &r);
	assert_status(&r, 403, "Forbidden");
	resp_free(&r);
}

static void test_k8s_tokens(void **state)
{
	k8s *k = *state;
	http_resp r;

	k8s_start(k, "127.0.0.1:0", (char *)NULL);
	req(k, NULL, "GET", "/api/v1/namespaces", NULL, &r);
	assert_status(&r, 401, "Unauthorized");
	resp_free(&r);
	req(k, "wrong", "GET", "/api/v1/namespaces", NULL, &r);
	assert_status(&r, 401, "Unauthorized");
	resp_free(&r);
	req(k, RO_TOKEN, "GET", "/api/v1/namespaces", NULL, &r);
	assert_int_equal(r.status, 200);
	resp_free(&r);
	req(k, RO_TOKEN, "POST", "/api/v1/namespaces", "{\"metadata\":{\"name\":\"x\"}}", &r);
	assert_status(&r, 403, "Forbidden");
	resp_free(&r);
	req(k, NULL, "GET", "/version", NULL, &r);
	assert_int_equal(r.status, 200);
	assert_string_equal(str_at(r.json, "major"), "1");
	resp_free(&r);
}

static void test_k8s_fail_rate(void **state)
{
	k8s *k = *state;
	http_resp r;

	k8s_start(k, "127.0.0.1:0", "--fail-rate", "1", "--seed", "3", (char *)NULL);
	for (int i = 0; i < 10; i++) {
		api(k, "POST", "/api/v1/namespaces/default/configmaps", "{\"metadata\":{\"name\":\"c\"}}", &r);
		assert_true(r.status == 500 || r.status == 503);
		resp_free(&r);
	}
	req(k, NULL, "GET", "/_stats", NULL, &r);
	assert_int_equal(int_at(r.json, "total_objects"), 0);
	resp_free(&r);
}

static void test_k8s_state_file(void **state)
{
	k8s *k = *state;
	http_resp r;
	char listen[32], uid[64];
	int status;

	k8s_start(k, "127.0.0.1:0", "--state-file", k->state_file, (char *)NULL);
	create_namespace(k, "kept");
	api(k, "GET", "/api/v1/namespaces/kept", NULL, &r);
	snprintf(uid, sizeof(uid), "%s", str_at(r.json, "metadata/uid"));
	resp_free(&r);

	/* Killed without a chance to save: the file already holds the change. */
	kill(k->pid, SIGKILL);
	waitpid(k->pid, &status, 0);
	snprintf(listen, sizeof(listen), "127.0.0.1:%u", k->port);
	k8s_start(k, listen, "--state-file", k->state_file, (char *)NULL);
	api(k, "GET", "/api/v1/namespaces/kept", NULL, &r);
	assert_int_equal(r.status, 200);
	assert_string_equal(str_at(r.json, "metadata/uid"), uid);
	resp_free(&r);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_k8s_crud_and_metadata, k8s_setup, k8s_teardown),
		cmocka_unit_test_setup_teardown(test_k8s_conflict_on_stale_resource_version, k8s_setup,
						k8s_teardown),
		cmocka_unit_test_setup_teardown(test_k8s_validation, k8s_setup, k8s_teardown),
		cmocka_unit_test_setup_teardown(test_k8s_rollout_and_generation, k8s_setup, k8s_teardown),
		cmocka_unit_test_setup_teardown(test_k8s_namespace_termination, k8s_setup, k8s_teardown),
		cmocka_unit_test_setup_teardown(test_k8s_tokens, k8s_setup, k8s_teardown),
		cmocka_unit_test_setup_teardown(test_k8s_fail_rate, k8s_setup, k8s_teardown),
		cmocka_unit_test_setup_teardown(test_k8s_state_file, k8s_setup, k8s_teardown),
	};
	curl_global_init(CURL_GLOBAL_DEFAULT);
	int rc = cmocka_run_group_tests(tests, NULL, NULL);
	curl_global_cleanup();
	return rc;
}
