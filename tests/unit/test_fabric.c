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

#include <curl/curl.h>
#include <fcntl.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef MO_BINARY_DIR
#define MO_BINARY_DIR "."
#endif

typedef struct {
	pid_t pid;
	unsigned port;
	char dir[64];
	char port_file[96];
	char state_file[96];
	char base[64];
} emu;

typedef struct {
	long status;
	mo_buf body;
	json_t *json;
	char content_type[128];
	char etag[64];
	char allow[128];
	char www_auth[128];
	char retry_after[32];
	char auth_token[64];
	char location[256];
	char odata_version[16];
} http_resp;

static const char *fabric_path(void)
{
	const char *p = getenv("FABRIC");
	return p && *p ? p : MO_BINARY_DIR "/fabric";
}

static void sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
	nanosleep(&ts, NULL);
}

/* ---- the child process ------------------------------------------------ */

/* Start fabric with the extra arguments (NULL-terminated) and wait for
 * its port file. */
static void emu_start(emu *e, ...)
{
	const char *argv[40];
	int argc = 0, status;
	char *text = NULL;
	size_t len;
	va_list ap;

	unlink(e->port_file);
	argv[argc++] = fabric_path();
	argv[argc++] = "--listen";
	argv[argc++] = "127.0.0.1:0";
	argv[argc++] = "--port-file";
	argv[argc++] = e->port_file;
	va_start(ap, e);
	for (const char *a; (a = va_arg(ap, const char *));)
		argv[argc++] = a;
	va_end(ap);
	argv[argc] = NULL;
	assert_true(argc < (int)MO_ARRAY_SIZE(argv));
	assert_int_equal(access(argv[0], X_OK), 0);

	e->pid = fork();
	assert_true(e->pid >= 0);
	if (e->pid == 0) {
		int fd = open("/dev/null", O_WRONLY);
		if (fd >= 0)
			dup2(fd, STDOUT_FILENO);
		execv(argv[0], (char *const *)argv);
		_exit(127);
	}
	for (int i = 0; i < 1000; i++) {
		if (mo_file_read(&text, &len, e->port_file) == 0)
			break;
		assert_int_equal(waitpid(e->pid, &status, WNOHANG), 0);
		sleep_ms(10);
	}
	assert_non_null(text);
	e->port = (unsigned)strtoul(text, NULL, 10);
	mo_free(text);
	assert_true(e->port > 0 && e->port < 65536);
	snprintf(e->base, sizeof(e->base), "http://127.0.0.1:%u", e->port);
}

/* SIGTERM; the exit status must be 0.  Returns 0 or -1. */
static int emu_stop(emu *e)
{
	int status = 0, rc = 0;
	pid_t w = 0;
	if (e->pid <= 0)
		return 0;
	kill(e->pid, SIGTERM);
	for (int i = 0; i < 1000 && (w = waitpid(e->pid, &status, WNOHANG)) == 0; i++)
		sleep_ms(10);
	if (w == 0) {
		kill(e->pid, SIGKILL);
		waitpid(e->pid, &status, 0);
		fprintf(stderr, "fabric did not stop on SIGTERM\n");
		rc = -1;
	} else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		fprintf(stderr, "fabric ended with status 0x%x\n", status);
		rc = -1;
	}
	e->pid = 0;
	return rc;
}

static int emu_setup(void **state)
{
	emu *e = mo_calloc(1, sizeof(*e));
	if (!e)
		return -1;
	snprintf(e->dir, sizeof(e->dir), "/tmp/mo-fabric-XXXXXX");
	if (!mkdtemp(e->dir)) {
		mo_free(e);
		return -1;
	}
	snprintf(e->port_file, sizeof(e->port_file), "%s/port", e->dir);
	snprintf(e->state_file, sizeof(e->state_file), "%s/state.json", e->dir);
	*state = e;
	return 0;
}

static int emu_teardown(void **state)
{
	emu *e = *state;
	int rc = emu_stop(e);
	unlink(e->port_file);
	unlink(e->state_file);
	rmdir(e->dir);
	mo_free(e);
	return rc;
}

/* ---- HTTP ------------------------------------------------------------- */

static size_t on_body(char *p, size_t size, size_t n, void *ud)
{
	http_resp *r = ud;
	return mo_buf_put(&r->body, p, size * n) == 0 ? size * n : 0;
}

static size_t on_header(char *p, size_t size, size_t n, void *ud)
{
	static const struct {
		const char *name;
		size_t off, cap;
	} wanted[] = {
#define H(name, field) { name, offsetof(http_resp, field), sizeof(((http_resp *)0)->field) }
		H("content-type:", content_type), H("etag:", etag), H("allow:", allow),
		H("www-authenticate:", www_auth), H("retry-after:", retry_after),
		H("x-auth-token:", auth_token), H("location:", location),
		H("odata-version:", odata_version),
#undef H
	};
	http_resp *r = ud;
	size_t len = size * n;
	for (size_t i = 0; i < MO_ARRAY_SIZE(wanted); i++) {
		size_t k = strlen(wanted[i].name);
		if (len > k && strncasecmp(p, wanted[i].name, k) == 0) {
			const char *v = p + k;
			size_t vn = len - k;
			char *dst = (char *)r + wanted[i].off;
			while (vn && *v == ' ')
				v++, vn--;
			while (vn && (v[vn - 1] == '\r' || v[vn - 1] == '\n' || v[vn - 1] == ' '))
				vn--;
			if (vn >= wanted[i].cap)
				vn = wanted[i].cap - 1;
			memcpy(dst, v, vn);
			dst[vn] = '\0';
		}
	}
	return len;
}

static void resp_free(http_resp *r)
{
	mo_buf_free(&r->body);
	json_decref(r->json);
	memset(r, 0, sizeof(*r));
}

/* method base+path with an optional body and extra header lines
 * (NULL-terminated, may be NULL); userpwd: "user:password" or NULL. */
static void http_full(const emu *e, const char *method, const char *path, const char *body,
		      const char *const *headers, const char *userpwd, http_resp *out)
{
	char url[512];
	struct curl_slist *hdrs = NULL;
	CURL *h = curl_easy_init();
	CURLcode rc;
	assert_non_null(h);
	memset(out, 0, sizeof(*out));
	hdrs = curl_slist_append(hdrs, "Expect:");
	if (body)
		hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
	for (size_t i = 0; headers && headers[i]; i++)
		hdrs = curl_slist_append(hdrs, headers[i]);
	snprintf(url, sizeof(url), "%s%s", e->base, path);
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, out);
	curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(h, CURLOPT_HEADERDATA, out);
	curl_easy_setopt(h, CURLOPT_TIMEOUT, 30L);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	if (userpwd)
		curl_easy_setopt(h, CURLOPT_USERPWD, userpwd);
	if (body) {
		curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(body));
		curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
	}
	rc = curl_easy_perform(h);
	if (rc != CURLE_OK)
		fail_msg("%s %s: %s", method, path, curl_easy_strerror(rc));
	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &out->status);
	if (out->body.len && strstr(out->content_type, "json"))
		out->json = json_loadb(out->body.ptr, out->body.len, 0, NULL);
	curl_easy_cleanup(h);
	curl_slist_free_all(hdrs);
}

static void http(const emu *e, const char *method, const char *path, const char *body,
		 http_resp *out)
{
	http_full(e, method, path, body, NULL, NULL, out);
}

static const char *jstr(const json_t *o, const char *k)
{
	return json_string_value(json_object_get(o, k));
}

#define CONN_BODY(name, ap, av, zp, zv, bw)                                                  \
	"{\"name\":\"" name "\",\"a_side\":{\"port_id\":\"" ap "\",\"vlan\":" #av "},"       \
	"\"z_side\":{\"port_id\":\"" zp "\",\"vlan\":" #zv "},\"bandwidth_mbps\":" #bw "}"

/* r is a problem+json of status with code. */
static void assert_problem(const http_resp *r, long status, const char *code)
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
static void create(const emu *e, const char *body, char *id, size_t n)
{
	http_resp r;
	http(e, "POST", "/v1/connections", body, &r);
	assert_int_equal(r.status, 201);
	assert_string_equal(jstr(r.json, "state"), "PENDING");
	snprintf(id, n, "%s", jstr(r.json, "id"));
	resp_free(&r);
}

/* GET /v1/connections/{id}: the state ("" when 404) and the bandwidth. */
static void conn_state(const emu *e, const char *id, char *st, size_t n, json_int_t *bw)
{
	char path[128];
	http_resp r;
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
	resp_free(&r);
}

/* A number under /_stats: key, or key.sub. */
static json_int_t stat_of(const emu *e, const char *key, const char *sub)
{
	http_resp r;
	json_t *v;
	json_int_t n;
	http(e, "GET", "/_stats", NULL, &r);
	assert_int_equal(r.status, 200);
	v = json_object_get(r.json, key);
	if (sub)
		v = json_object_get(v, sub);
	n = json_integer_value(v);
	resp_free(&r);
	return n;
}

/* ---- tests ------------------------------------------------------------ */

static void test_fabric_ports(void **state)
{
	emu *e = *state;
	http_resp r;
	json_t *p;

	emu_start(e, "--ports", "3", "--port-speed-mbps", "1000", NULL);
	http(e, "GET", "/v1/ports", NULL, &r);
	assert_int_equal(r.status, 200);
	assert_int_equal(json_integer_value(json_object_get(r.json, "count")), 3);
	p = json_array_get(json_object_get(r.json, "items"), 2);
	assert_string_equal(jstr(p, "id"), "port-3");
	assert_int_equal(json_integer_value(json_object_get(p, "speed_mbps")), 1000);
	assert_non_null(jstr(p, "location"));
	assert_string_equal(jstr(p, "state"), "ACTIVE");
	assert_int_equal(json_array_size(json_object_get(p, "vlans_in_use")), 0);
	resp_free(&r);
	http(e, "GET", "/v1/ports/port-2", NULL, &r);
	assert_int_equal(r.status, 200);
	assert_string_equal(jstr(r.json, "name"), "lab-port-2");
	resp_free(&r);
	http(e, "GET", "/v1/ports/port-9", NULL, &r);
	assert_problem(&r, 404, "NOT_FOUND");
	resp_free(&r);
	http(e, "DELETE", "/v1/ports", NULL, &r);
	assert_problem(&r, 405, "METHOD_NOT_ALLOWED");
	assert_string_equal(r.allow, "GET, HEAD");
	resp_free(&r);
	http(e, "GET", "/v2/things", NULL, &r);
	assert_problem(&r, 404, "NOT_FOUND");
	resp_free(&r);
}

/* With no delays every transition completes at the next request. */
static void test_fabric_lifecycle(void **state)
{
	emu *e = *state;
	http_resp r;
	char id[64], path[128], st[32];
	json_int_t bw = 0;

	emu_start(e, NULL);
	http(e, "POST", "/v1/connections", CONN_BODY("web", "port-1", 100, "port-2", 200, 1000), &r);
	assert_int_equal(r.status, 201);
	assert_string_equal(r.content_type, "application/json");
	assert_string_equal(jstr(r.json, "state"), "PENDING");
	assert_memory_equal(jstr(r.json, "id"), "conn-", 5);
	assert_true(json_is_null(json_object_get(r.json, "failure_reason")));
	snprintf(id, sizeof(id), "%s", jstr(r.json, "id"));
	snprintf(path, sizeof(path), "/v1/connections/%s", id);
	assert_string_equal(r.location, path);
	resp_free(&r);
	conn_state(e, id, st, sizeof(st), &bw);
	assert_string_equal(st, "PROVISIONED");
	assert_int_equal(bw, 1000);

	http(e, "GET", "/v1/ports/port-1", NULL, &r);
	assert_int_equal(json_integer_value(json_array_get(json_object_get(r.json, "vlans_in_use"), 0)), 100);
	resp_free(&r);

	http(e, "PATCH", path, "{\"bandwidth_mbps\":2000}", &r);
	assert_int_equal(r.status, 200);
	assert_string_equal(jstr(r.json, "state"), "PENDING");
	assert_int_equal(json_integer_value(json_object_get(r.json, "bandwidth_mbps")), 2000);
	resp_free(&r);
	conn_state(e, id, st, sizeof(st), &bw);
	assert_string_equal(st, "PROVISIONED");
	assert_int_equal(bw, 2000);
	http(e, "PATCH", path, "{\"name\":\"web-2\"}", &r);
	assert_int_equal(r.status, 200);
	assert_string_equal(jstr(r.json, "name"), "web-2");
	assert_string_equal(jstr(r.json, "state"), "PROVISIONED");
	resp_free(&r);
	http(e, "PATCH", path, "{\"a_side\":{\"port_id\":\"port-3\",\"vlan\":1}}", &r);
	assert_problem(&r, 400, "IMMUTABLE_FIELD");
	resp_free(&r);
	http(e, "PATCH", path, "{\"bandwidth_mbps\":20000}", &r);
	assert_problem(&r, 422, "BANDWIDTH_EXCEEDS_PORT_SPEED");
	resp_free(&r);

	http(e, "DELETE", path, NULL, &r);
	assert_int_equal(r.status, 202);
	assert_string_equal(jstr(r.json, "state"), "DEPROVISIONING");
	resp_free(&r);
	conn_state(e, id, st, sizeof(st), NULL);
	assert_string_equal(st, "");
	http(e, "DELETE", path, NULL, &r);
	assert_problem(&r, 404, "NOT_FOUND");
	resp_free(&r);
	/* The VLAN is free again. */
	create(e, CONN_BODY("web", "port-1", 100, "port-2", 200, 1000), id, sizeof(id));

	assert_int_equal(stat_of(e, "transitions", "PENDING->PROVISIONED"), 3);
	assert_int_equal(stat_of(e, "transitions", "DEPROVISIONING->GONE"), 1);
	assert_int_equal(stat_of(e, "total_connections", NULL), 1);
}

static void test_fabric_idempotency(void **state)
{
	emu *e = *state;
	const char *k1[] = { "Idempotency-Key: intent-1", NULL };
	http_resp r;
	char id[64];

	emu_start(e, "--provision-delay-ms", "600000", NULL);
	http_full(e, "POST", "/v1/connections", CONN_BODY("a", "port-1", 10, "port-2", 20, 100), k1,
		  NULL, &r);
	assert_int_equal(r.status, 201);
	assert_string_equal(jstr(r.json, "idempotency_key"), "intent-1");
	snprintf(id, sizeof(id), "%s", jstr(r.json, "id"));
	resp_free(&r);
	/* The retry answers the first connection; its own VLANs are no conflict. */
	http_full(e, "POST", "/v1/connections", CONN_BODY("a", "port-1", 10, "port-2", 20, 100), k1,
		  NULL, &r);
	assert_int_equal(r.status, 200);
	assert_string_equal(jstr(r.json, "id"), id);
	resp_free(&r);
	/* Without the key the same VLANs conflict. */
	http(e, "POST", "/v1/connections", CONN_BODY("a", "port-1", 10, "port-2", 20, 100), &r);
	assert_problem(&r, 409, "VLAN_IN_USE");
	assert_string_equal(jstr(r.json, "connection_id"), id);
	resp_free(&r);
	http(e, "GET", "/v1/connections?idempotency_key=intent-1", NULL, &r);
	assert_int_equal(json_integer_value(json_object_get(r.json, "count")), 1);
	resp_free(&r);
	http(e, "GET", "/v1/connections?idempotency_key=intent-2", NULL, &r);
	assert_int_equal(json_integer_value(json_object_get(r.json, "count")), 0);
	resp_free(&r);
	assert_int_equal(stat_of(e, "total_connections", NULL), 1);
}

static void test_fabric_validation(void **state)
{
	emu *e = *state;
	http_resp r;
	char id[64];

	emu_start(e, "--ports", "4", NULL);
	http(e, "POST", "/v1/connections", CONN_BODY("x", "port-1", 0, "port-2", 20, 100), &r);
	assert_problem(&r, 400, "INVALID_VLAN");
	resp_free(&r);
	http(e, "POST", "/v1/connections", CONN_BODY("x", "port-1", 10, "port-2", 4095, 100), &r);
	assert_problem(&r, 400, "INVALID_VLAN");
	assert_non_null(strstr(jstr(r.json, "detail"), "1..4094"));
	resp_free(&r);
	http(e, "POST", "/v1/connections", CONN_BODY("x", "port-1", "10", "port-2", 20, 100), &r);
	assert_problem(&r, 400, "INVALID_VLAN");
	resp_free(&r);
	http(e, "POST", "/v1/connections",
	     "{\"a_side\":{\"port_id\":\"port-1\",\"vlan\":1},\"z_side\":{\"port_id\":\"port-2\",\"vlan\":1},"
	     "\"bandwidth_mbps\":1}", &r);
	assert_problem(&r, 400, "INVALID_FIELD"); /* no name */
	resp_free(&r);
	http(e, "POST", "/v1/connections", "{\"name\":\"x\",\"color\":\"red\"}", &r);
	assert_problem(&r, 400, "INVALID_FIELD");
	resp_free(&r);
	http(e, "POST", "/v1/connections", CONN_BODY("x", "port-1", 10, "port-2", 20, 0), &r);
	assert_problem(&r, 400, "INVALID_FIELD");
	resp_free(&r);
	http(e, "POST", "/v1/connections", "[1]", &r);
	assert_problem(&r, 400, "INVALID_BODY");
	resp_free(&r);
	http(e, "POST", "/v1/connections", CONN_BODY("x", "port-1", 10, "port-9", 20, 100), &r);
	assert_problem(&r, 422, "UNKNOWN_PORT");
	resp_free(&r);
	http(e, "POST", "/v1/connections", CONN_BODY("x", "port-1", 10, "port-2", 20, 10001), &r);
	assert_problem(&r, 422, "BANDWIDTH_EXCEEDS_PORT_SPEED");
	resp_free(&r);
	http(e, "POST", "/v1/connections", CONN_BODY("x", "port-1", 10, "port-1", 10, 100), &r);
	assert_problem(&r, 409, "VLAN_IN_USE");
	resp_free(&r);
	/* A hairpin on one port with two VLANs is fine. */
	create(e, CONN_BODY("hairpin", "port-1", 10, "port-1", 11, 100), id, sizeof(id));
	http(e, "POST", "/v1/connections", CONN_BODY("y", "port-3", 30, "port-1", 11, 100), &r);
	assert_problem(&r, 409, "VLAN_IN_USE");
	assert_string_equal(jstr(r.json, "connection_id"), id);
	resp_free(&r);
	assert_int_equal(stat_of(e, "total_connections", NULL), 1);
}

static void test_fabric_pending(void **state)
{
	emu *e = *state;
	http_resp r;
	char id[64], path[128], st[32];

	emu_start(e, "--provision-delay-ms", "600000", "--deprovision-delay-ms", "600000", NULL);
	create(e, CONN_BODY("slow", "port-1", 100, "port-2", 200, 1000), id, sizeof(id));
	snprintf(path, sizeof(path), "/v1/connections/%s", id);
	conn_state(e, id, st, sizeof(st), NULL);
	assert_string_equal(st, "PENDING");
	conn_state(e, id, st, sizeof(st), NULL);
	assert_int_equal(stat_of(e, "served", "PENDING"), 2);
	assert_int_equal(stat_of(e, "connections", "PENDING"), 1);

	http(e, "PATCH", path, "{\"bandwidth_mbps\":2000}", &r);
	assert_problem(&r, 409, "INVALID_STATE");
	resp_free(&r);
	http(e, "PATCH", path, "{\"name\":\"slower\"}", &r);
	assert_int_equal(r.status, 200); /* a name is no provisioning */
	resp_free(&r);

	http(e, "DELETE", path, NULL, &r);
	assert_int_equal(r.status, 202);
	resp_free(&r);
	conn_state(e, id, st, sizeof(st), NULL);
	assert_string_equal(st, "DEPROVISIONING");
	http(e, "DELETE", path, NULL, &r); /* again: still 202 */
	assert_int_equal(r.status, 202);
	resp_free(&r);
	/* The VLANs are held until the connection is gone. */
	http(e, "POST", "/v1/connections", CONN_BODY("next", "port-1", 100, "port-3", 300, 10), &r);
	assert_problem(&r, 409, "VLAN_IN_USE");
	assert_non_null(strstr(jstr(r.json, "detail"), "DEPROVISIONING"));
	resp_free(&r);
	http(e, "PATCH", path, "{\"name\":\"x\"}", &r);
	assert_problem(&r, 409, "INVALID_STATE");
	resp_free(&r);
}

static void test_fabric_failures(void **state)
{
	emu *e = *state;
	http_resp r;
	char id[64], id2[64], path[128], st[32];
	json_int_t bw = 0;

	emu_start(e, "--provision-fail-rate", "1", NULL);
	create(e, CONN_BODY("doomed", "port-1", 100, "port-2", 200, 1000), id, sizeof(id));
	snprintf(path, sizeof(path), "/v1/connections/%s", id);
	http(e, "GET", path, NULL, &r);
	assert_string_equal(jstr(r.json, "state"), "FAILED");
	assert_non_null(strstr(jstr(r.json, "failure_reason"), "provisioning failed"));
	resp_free(&r);
	/* A FAILED connection keeps its VLANs and cannot be changed. */
	http(e, "POST", "/v1/connections", CONN_BODY("other", "port-1", 100, "port-3", 300, 10), &r);
	assert_problem(&r, 409, "VLAN_IN_USE");
	resp_free(&r);
	http(e, "PATCH", path, "{\"bandwidth_mbps\":10}", &r);
	assert_problem(&r, 409, "INVALID_STATE");
	resp_free(&r);
	http(e, "DELETE", path, NULL, &r);
	assert_int_equal(r.status, 202);
	resp_free(&r);
	conn_state(e, id, st, sizeof(st), NULL);
	assert_string_equal(st, "");
	assert_int_equal(stat_of(e, "transitions", "PENDING->FAILED"), 1);

	/* A failed bandwidth change: PROVISIONED with the old bandwidth. */
	http(e, "PUT", "/_config", "{\"provision_fail_rate\":0}", &r);
	resp_free(&r);
	create(e, CONN_BODY("ok", "port-1", 100, "port-2", 200, 1000), id2, sizeof(id2));
	conn_state(e, id2, st, sizeof(st), NULL);
	assert_string_equal(st, "PROVISIONED");
	http(e, "PUT", "/_config", "{\"provision_fail_rate\":1}", &r);
	resp_free(&r);
	snprintf(path, sizeof(path), "/v1/connections/%s", id2);
	http(e, "PATCH", path, "{\"bandwidth_mbps\":3000}", &r);
	assert_int_equal(r.status, 200);
	resp_free(&r);
	http(e, "GET", path, NULL, &r);
	assert_string_equal(jstr(r.json, "state"), "PROVISIONED");
	assert_int_equal(json_integer_value(json_object_get(r.json, "bandwidth_mbps")), 1000);
	assert_non_null(strstr(jstr(r.json, "failure_reason"), "bandwidth change to 3000 Mbps failed"));
	resp_free(&r);
	/* A change that succeeds clears the reason. */
	http(e, "PUT", "/_config", "{\"provision_fail_rate\":0}", &r);
	resp_free(&r);
	http(e, "PATCH", path, "{\"bandwidth_mbps\":3000}", &r);
	resp_free(&r);
	conn_state(e, id2, st, sizeof(st), &bw);
	assert_int_equal(bw, 3000);
	http(e, "GET", path, NULL, &r);
	assert_true(json_is_null(json_object_get(r.json, "failure_reason")));
	resp_free(&r);
}

static void test_fabric_filters(void **state)
{
	emu *e = *state;
	http_resp r;
	char id[64];

	emu_start(e, NULL);
	create(e, CONN_BODY("a", "port-1", 1, "port-2", 1, 10), id, sizeof(id));
	create(e, CONN_BODY("b", "port-1", 2, "port-2", 2, 10), id, sizeof(id));
	create(e, CONN_BODY("b", "port-1", 3, "port-2", 3, 10), id, sizeof(id));
	http(e, "GET", "/v1/connections", NULL, &r);
	assert_int_equal(json_integer_value(json_object_get(r.json, "count")), 3);
	assert_string_equal(jstr(json_array_get(json_object_get(r.json, "items"), 0), "name"), "a");
	resp_free(&r);
	http(e, "GET", "/v1/connections?name=b", NULL, &r);
	assert_int_equal(json_integer_value(json_object_get(r.json, "count")), 2);
	resp_free(&r);
	http(e, "GET", "/v1/connections?name=b&state=PROVISIONED", NULL, &r);
	assert_int_equal(json_integer_value(json_object_get(r.json, "count")), 2);
	resp_free(&r);
	http(e, "GET", "/v1/connections?state=FAILED", NULL, &r);
	assert_int_equal(json_integer_value(json_object_get(r.json, "count")), 0);
	resp_free(&r);
}

static void test_fabric_state_file(void **state)
{
	emu *e = *state;
	http_resp r;
	char id1[64], id2[64], id3[64], st[32];

	emu_start(e, "--state-file", e->state_file, "--provision-delay-ms", "600000", NULL);
	create(e, CONN_BODY("one", "port-1", 100, "port-2", 200, 1000), id1, sizeof(id1));
	create(e, CONN_BODY("two", "port-3", 300, "port-4", 400, 500), id2, sizeof(id2));
	assert_int_equal(emu_stop(e), 0);

	emu_start(e, "--state-file", e->state_file, NULL);
	conn_state(e, id1, st, sizeof(st), NULL);
	assert_string_equal(st, "PENDING"); /* its transition is still due later */
	conn_state(e, id2, st, sizeof(st), NULL);
	assert_string_equal(st, "PENDING");
	http(e, "POST", "/v1/connections", CONN_BODY("x", "port-1", 100, "port-3", 1, 10), &r);
	assert_problem(&r, 409, "VLAN_IN_USE");
	resp_free(&r);
	create(e, CONN_BODY("three", "port-1", 101, "port-3", 301, 10), id3, sizeof(id3));
	assert_string_not_equal(id3, id1);
	assert_string_not_equal(id3, id2);
	assert_int_equal(stat_of(e, "total_connections", NULL), 3);
}

static void test_fabric_token_and_faults(void **state)
{
	emu *e = *state;
	const char *tok[] = { "Authorization: Bearer t0k", NULL };
	const char *bad[] = { "Authorization: Bearer nope", NULL };
	http_resp r;

	emu_start(e, "--token", "t0k", NULL);
	http(e, "GET", "/v1/ports", NULL, &r);
	assert_problem(&r, 401, "UNAUTHORIZED");
	assert_memory_equal(r.www_auth, "Bearer", 6);
	resp_free(&r);
	http_full(e, "GET", "/v1/ports", NULL, bad, NULL, &r);
	assert_int_equal(r.status, 401);
	resp_free(&r);
	http_full(e, "GET", "/v1/ports", NULL, tok, NULL, &r);
	assert_int_equal(r.status, 200);
	resp_free(&r);
	http(e, "GET", "/_stats", NULL, &r); /* control endpoints need no token */
	assert_int_equal(r.status, 200);
	resp_free(&r);
	assert_int_equal(emu_stop(e), 0);

	emu_start(e, "--fail-rate", "1", NULL);
	for (int i = 0; i < 6; i++) {
		http(e, "POST", "/v1/connections", CONN_BODY("x", "port-1", 10, "port-2", 20, 100), &r);
		assert_true(r.status == 500 || r.status == 503);
		assert_problem(&r, r.status, "INJECTED_FAILURE");
		resp_free(&r);
	}
	assert_int_equal(stat_of(e, "total_connections", NULL), 0);
	assert_int_equal(stat_of(e, "requests", "POST"), 6);
	http(e, "PUT", "/_config", "{\"fail_rate\":0,\"rate_429\":1,\"retry_after\":2}", &r);
	assert_int_equal(r.status, 200);
	resp_free(&r);
	http(e, "GET", "/v1/ports", NULL, &r);
	assert_problem(&r, 429, "RATE_LIMITED");
	assert_string_equal(r.retry_after, "2");
	resp_free(&r);
	http(e, "PUT", "/_config", "{\"provision_delay_ms\":-1}", &r);
	assert_problem(&r, 400, "INVALID_FIELD");
	resp_free(&r);
	http(e, "DELETE", "/_connections", NULL, &r);
	assert_int_equal(r.status, 200);
	resp_free(&r);
}

static int run_cli(const char *a1, const char *a2, const char *a3)
{
	int status;
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		int fd = open("/dev/null", O_WRONLY);
		dup2(fd, STDOUT_FILENO);
		dup2(fd, STDERR_FILENO);
		execl(fabric_path(), fabric_path(), a1, a2, a3, (char *)NULL);
		_exit(127);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	return WEXITSTATUS(status);
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
		cmocka_unit_test_setup_teardown(test_fabric_ports, emu_setup, emu_teardown),
		cmocka_unit_test_setup_teardown(test_fabric_lifecycle, emu_setup, emu_teardown),
		cmocka_unit_test_setup_teardown(test_fabric_idempotency, emu_setup, emu_teardown),
		cmocka_unit_test_setup_teardown(test_fabric_validation, emu_setup, emu_teardown),
		cmocka_unit_test_setup_teardown(test_fabric_pending, emu_setup, emu_teardown),
		cmocka_unit_test_setup_teardown(test_fabric_failures, emu_setup, emu_teardown),
		cmocka_unit_test_setup_teardown(test_fabric_filters, emu_setup, emu_teardown),
		cmocka_unit_test_setup_teardown(test_fabric_state_file, emu_setup, emu_teardown),
		cmocka_unit_test_setup_teardown(test_fabric_token_and_faults, emu_setup, emu_teardown),
		cmocka_unit_test(test_fabric_cli),
	};
	int rc;
	curl_global_init(CURL_GLOBAL_DEFAULT);
	rc = cmocka_run_group_tests(tests, NULL, NULL);
	curl_global_cleanup();
	return rc;
}
