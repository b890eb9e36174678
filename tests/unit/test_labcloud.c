/*
 * test_labcloud.c - the lab emulator, driven over real HTTP.
 *
 * Each test starts the built labcloud binary (env LABCLOUD, else
 * MO_BINARY_DIR/labcloud) on a free port of 127.0.0.1 (--listen
 * 127.0.0.1:0 --port-file), talks to it with libcurl, and stops it with
 * SIGTERM at teardown, which must end it with exit status 0.
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
	char base[64];              /* "http://127.0.0.1:PORT" */
} lab;

typedef struct {
	long status;
	mo_buf body;
	json_t *json;               /* the body decoded, when it is JSON */
	char content_type[128];
	char location[256];
	char retry_after[32];
	char allow[128];
	char www_auth[128];
} http_resp;

static const char *labcloud_path(void)
{
	const char *p = getenv("LABCLOUD");
	return p && *p ? p : MO_BINARY_DIR "/labcloud";
}

static void sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
	nanosleep(&ts, NULL);
}

/* ---- the child process ------------------------------------------------ */

/* Start labcloud with the extra arguments (NULL-terminated) and wait for
 * its port file. */
static void lab_start(lab *l, ...)
{
	const char *argv[32];
	int argc = 0, status;
	char *text = NULL;
	size_t len;
	va_list ap;

	argv[argc++] = labcloud_path();
	argv[argc++] = "--listen";
	argv[argc++] = "127.0.0.1:0";
	argv[argc++] = "--port-file";
	argv[argc++] = l->port_file;
	va_start(ap, l);
	for (const char *a; (a = va_arg(ap, const char *));)
		argv[argc++] = a;
	va_end(ap);
	argv[argc] = NULL;
	assert_true(argc < (int)MO_ARRAY_SIZE(argv));
	assert_int_equal(access(argv[0], X_OK), 0);

	l->pid = fork();
	assert_true(l->pid >= 0);
	if (l->pid == 0) {
		int fd = open("/dev/null", O_WRONLY);
		if (fd >= 0)
			dup2(fd, STDOUT_FILENO);
		execv(argv[0], (char *const *)argv);
		_exit(127);
	}
	for (int i = 0; i < 1000; i++) { /* up to 10 s */
		if (mo_file_read(&text, &len, l->port_file) == 0)
			break;
		assert_int_equal(waitpid(l->pid, &status, WNOHANG), 0); /* still running */
		sleep_ms(10);
	}
	assert_non_null(text);
	l->port = (unsigned)strtoul(text, NULL, 10);
	mo_free(text);
	assert_true(l->port > 0 && l->port < 65536);
	snprintf(l->base, sizeof(l->base), "http://127.0.0.1:%u", l->port);
}

static int lab_setup(void **state)
{
	lab *l = mo_calloc(1, sizeof(*l));
	if (!l)
		return -1;
	snprintf(l->dir, sizeof(l->dir), "/tmp/mo-labcloud-XXXXXX");
	if (!mkdtemp(l->dir)) {
		mo_free(l);
		return -1;
	}
	snprintf(l->port_file, sizeof(l->port_file), "%s/port", l->dir);
	*state = l;
	return 0;
}

/* SIGTERM must stop labcloud cleanly: exit status 0 within 10 s. */
static int lab_teardown(void **state)
{
	lab *l = *state;
	int status = 0, rc = 0;
	if (l->pid > 0) {
		pid_t w = 0;
		kill(l->pid, SIGTERM);
		for (int i = 0; i < 1000 && (w = waitpid(l->pid, &status, WNOHANG)) == 0; i++)
			sleep_ms(10);
		if (w == 0) {
			kill(l->pid, SIGKILL);
			waitpid(l->pid, &status, 0);
			fprintf(stderr, "labcloud did not stop on SIGTERM\n");
			rc = -1;
		} else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
			fprintf(stderr, "labcloud ended with status 0x%x\n", status);
			rc = -1;
		}
	}
	unlink(l->port_file);
	rmdir(l->dir);
	mo_free(l);
	return rc;
}

/* ---- HTTP ------------------------------------------------------------- */

static size_t on_body(char *p, size_t size, size_t n, void *ud)
{
	http_resp *r = ud;
	return mo_buf_put(&r->body, p, size * n) == 0 ? size * n : 0;
}

static void copy_header_value(char *dst, size_t cap, const char *v, size_t n)
{
	while (n && (v[n - 1] == '\r' || v[n - 1] == '\n' || v[n - 1] == ' '))
		n--;
	if (n >= cap)
		n = cap - 1;
	memcpy(dst, v, n);
	dst[n] = '\0';
}

static size_t on_header(char *p, size_t size, size_t n, void *ud)
{
	static const struct {
		const char *name;
		size_t off, cap;
	} wanted[] = {
		{ "content-type:", offsetof(http_resp, content_type), sizeof(((http_resp *)0)->content_type) },
		{ "location:", offsetof(http_resp, location), sizeof(((http_resp *)0)->location) },
		{ "retry-after:", offsetof(http_resp, retry_after), sizeof(((http_resp *)0)->retry_after) },
		{ "allow:", offsetof(http_resp, allow), sizeof(((http_resp *)0)->allow) },
		{ "www-authenticate:", offsetof(http_resp, www_auth), sizeof(((http_resp *)0)->www_auth) },
	};
	http_resp *r = ud;
	size_t len = size * n;
	for (size_t i = 0; i < MO_ARRAY_SIZE(wanted); i++) {
		size_t k = strlen(wanted[i].name);
		if (len > k && strncasecmp(p, wanted[i].name, k) == 0) {
			const char *v = p + k;
			size_t vn = len - k;
			while (vn && *v == ' ')
				v++, vn--;
			copy_header_value((char *)r + wanted[i].off, wanted[i].cap, v, vn);
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

/* An easy handle for method base+path with an optional body and extra
 * header lines (NULL-terminated array, may be NULL).  *hdrs is the
 * caller's (curl_slist_free_all). */
static CURL *make_request(const lab *l, const char *method, const char *path,
			  const char *body, size_t body_len, const char *const *headers,
			  http_resp *out, struct curl_slist **hdrs)
{
	char url[512];
	CURL *h = curl_easy_init();
	assert_non_null(h);
	memset(out, 0, sizeof(*out));
	*hdrs = curl_slist_append(NULL, "Expect:");
	if (body)
		*hdrs = curl_slist_append(*hdrs, "Content-Type: application/json");
	for (size_t i = 0; headers && headers[i]; i++)
		*hdrs = curl_slist_append(*hdrs, headers[i]);
	snprintf(url, sizeof(url), "%s%s", l->base, path);
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, *hdrs);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, out);
	curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(h, CURLOPT_HEADERDATA, out);
	curl_easy_setopt(h, CURLOPT_TIMEOUT, 30L);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	if (body) {
		curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
		curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
	}
	return h;
}

/* Record the status and decode a JSON body. */
static void finish_request(CURL *h, http_resp *out)
{
	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &out->status);
	if (out->body.len && strstr(out->content_type, "json"))
		out->json = json_loadb(out->body.ptr, out->body.len, 0, NULL);
}

static void http_full(const lab *l, const char *method, const char *path,
		      const char *body, size_t body_len, const char *const *headers,
		      http_resp *out)
{
	struct curl_slist *hdrs;
	CURL *h = make_request(l, method, path, body, body_len, headers, out, &hdrs);
	CURLcode rc = curl_easy_perform(h);
	if (rc != CURLE_OK)
		fail_msg("%s %s: %s", method, path, curl_easy_strerror(rc));
	finish_request(h, out);
	curl_easy_cleanup(h);
	curl_slist_free_all(hdrs);
}

static void http(const lab *l, const char *method, const char *path, const char *body,
		 http_resp *out)
{
	http_full(l, method, path, body, body ? strlen(body) : 0, NULL, out);
}

static const char *jstr(const json_t *o, const char *k)
{
	return json_string_value(json_object_get(o, k));
}

static json_int_t jint(const json_t *o, const char *k)
{
	return json_integer_value(json_object_get(o, k));
}

/* The RFC 7807 body r must carry for status. */
static void assert_problem(const http_resp *r, long status)
{
	assert_int_equal(r->status, status);
	assert_string_equal(r->content_type, "application/problem+json");
	assert_non_null(r->json);
	assert_non_null(jstr(r->json, "type"));
	assert_non_null(jstr(r->json, "title"));
	assert_non_null(jstr(r->json, "detail"));
	assert_int_equal(jint(r->json, "status"), status);
}

/* GET /_stats (a new reference). */
static json_t *stats(const lab *l)
{
	http_resp r;
	json_t *j;
	http(l, "GET", "/_stats", NULL, &r);
	assert_int_equal(r.status, 200);
	assert_non_null(r.json);
	j = json_incref(r.json);
	resp_free(&r);
	return j;
}

/* ---- tests ------------------------------------------------------------ */

static void test_labcloud_crud(void **state)
{
	lab *l = *state;
	http_resp r;
	char path[128], id[64], created[64], loc[256];

	lab_start(l, NULL);
	/* Client-set id and version are ignored. */
	http(l, "POST", "/v1/widgets", "{\"name\":\"a\",\"size\":3,\"id\":\"mine\",\"version\":9}", &r);
	assert_int_equal(r.status, 201);
	assert_string_equal(r.content_type, "application/json");
	assert_non_null(r.json);
	snprintf(id, sizeof(id), "%s", jstr(r.json, "id"));
	assert_int_equal(strlen(id), 20);
	assert_memory_equal(id, "obj-", 4);
	assert_int_equal(jint(r.json, "version"), 1);
	assert_int_equal(jint(r.json, "size"), 3);
	assert_string_equal(jstr(r.json, "name"), "a");
	assert_non_null(jstr(r.json, "created_at"));
	assert_int_equal(strlen(jstr(r.json, "created_at")), 24); /* 2024-01-02T03:04:05.678Z */
	assert_null(json_object_get(r.json, "idempotency_key"));
	snprintf(created, sizeof(created), "%s", jstr(r.json, "created_at"));
	snprintf(path, sizeof(path), "/v1/widgets/%s", id);
	snprintf(loc, sizeof(loc), "%s", r.location);
	assert_string_equal(loc, path);
	resp_free(&r);

	http(l, "GET", path, NULL, &r);
	assert_int_equal(r.status, 200);
	assert_string_equal(jstr(r.json, "id"), id);
	assert_int_equal(jint(r.json, "size"), 3);
	resp_free(&r);

	/* PUT replaces the user fields and keeps the server's. */
	http(l, "PUT", path, "{\"name\":\"a\",\"color\":\"red\",\"created_at\":\"x\"}", &r);
	assert_int_equal(r.status, 200);
	assert_string_equal(jstr(r.json, "id"), id);
	assert_string_equal(jstr(r.json, "created_at"), created);
	assert_int_equal(jint(r.json, "version"), 2);
	assert_string_equal(jstr(r.json, "color"), "red");
	assert_null(json_object_get(r.json, "size"));
	resp_free(&r);

	http(l, "GET", "/v1/widgets", NULL, &r);
	assert_int_equal(r.status, 200);
	assert_int_equal(jint(r.json, "count"), 1);
	assert_int_equal(json_array_size(json_object_get(r.json, "items")), 1);
	assert_string_equal(jstr(json_array_get(json_object_get(r.json, "items"), 0), "color"), "red");
	resp_free(&r);

	http(l, "DELETE", path, NULL, &r);
	assert_int_equal(r.status, 204);
	assert_int_equal(r.body.len, 0);
	resp_free(&r);

	http(l, "GET", path, NULL, &r);
	assert_problem(&r, 404);
	resp_free(&r);
	http(l, "GET", "/v1/widgets", NULL, &r);
	assert_int_equal(jint(r.json, "count"), 0);
	resp_free(&r);
}

static void test_labcloud_not_found(void **state)
{
	lab *l = *state;
	http_resp r;

	lab_start(l, NULL);
	http(l, "GET", "/v1/nothing", NULL, &r);
	assert_int_equal(r.status, 200);
	assert_int_equal(jint(r.json, "count"), 0);
	assert_int_equal(json_array_size(json_object_get(r.json, "items")), 0);
	resp_free(&r);

	http(l, "GET", "/v1/nothing/obj-0000000000000000", NULL, &r);
	assert_problem(&r, 404);
	resp_free(&r);
	http(l, "DELETE", "/v1/nothing/obj-0000000000000000", NULL, &r);
	assert_problem(&r, 404);
	resp_free(&r);
	http(l, "PUT", "/v1/nothing/obj-0000000000000000", "{}", &r);
	assert_problem(&r, 404);
	resp_free(&r);
	http(l, "PATCH", "/v1/nothing/obj-0000000000000000", "{}", &r);
	assert_problem(&r, 404);
	resp_free(&r);
	http(l, "GET", "/nowhere", NULL, &r);
	assert_problem(&r, 404);
	resp_free(&r);
	http(l, "GET", "/v1/a/b/c", NULL, &r);
	assert_problem(&r, 404);
	resp_free(&r);

	http(l, "DELETE", "/v1/things", NULL, &r);
	assert_problem(&r, 405);
	assert_string_equal(r.allow, "GET, HEAD, POST");
	resp_free(&r);
	http(l, "POST", "/v1/things/obj-1", "{}", &r);
	assert_problem(&r, 405);
	resp_free(&r);
	http(l, "GET", "/v1/Bad%20Name", NULL, &r);
	assert_problem(&r, 400);
	resp_free(&r);
}

static void test_labcloud_idempotency_key(void **state)
{
	lab *l = *state;
	const char *k1[] = { "Idempotency-Key: intent-1", NULL };
	const char *k2[] = { "Idempotency-Key: intent-2", NULL };
	const char *body = "{\"name\":\"x\"}";
	http_resp r;
	char id[64];

	lab_start(l, NULL);
	http_full(l, "POST", "/v1/vms", body, strlen(body), k1, &r);
	assert_int_equal(r.status, 201);
	snprintf(id, sizeof(id), "%s", jstr(r.json, "id"));
	assert_string_equal(jstr(r.json, "idempotency_key"), "intent-1");
	resp_free(&r);

	/* The retry answers the first object and creates nothing. */
	http_full(l, "POST", "/v1/vms", body, strlen(body), k1, &r);
	assert_int_equal(r.status, 200);
	assert_string_equal(jstr(r.json, "id"), id);
	assert_int_equal(jint(r.json, "version"), 1);
	resp_free(&r);
	http(l, "GET", "/v1/vms", NULL, &r);
	assert_int_equal(jint(r.json, "count"), 1);
	resp_free(&r);

	/* Another key, or the same key in another collection, creates. */
	http_full(l, "POST", "/v1/vms", body, strlen(body), k2, &r);
	assert_int_equal(r.status, 201);
	assert_string_not_equal(jstr(r.json, "id"), id);
	resp_free(&r);
	http_full(l, "POST", "/v1/disks", body, strlen(body), k1, &r);
	assert_int_equal(r.status, 201);
	assert_string_not_equal(jstr(r.json, "id"), id);
	resp_free(&r);

	/* Crash recovery finds the object by its key. */
	http(l, "GET", "/v1/vms?idempotency_key=intent-1", NULL, &r);
	assert_int_equal(r.status, 200);
	assert_int_equal(jint(r.json, "count"), 1);
	assert_string_equal(jstr(json_array_get(json_object_get(r.json, "items"), 0), "id"), id);
	resp_free(&r);
}

static void test_labcloud_filter(void **state)
{
	lab *l = *state;
	http_resp r;

	lab_start(l, NULL);
	http(l, "POST", "/v1/nets", "{\"name\":\"a\",\"size\":1,\"up\":true}", &r);
	assert_int_equal(r.status, 201);
	resp_free(&r);
	http(l, "POST", "/v1/nets", "{\"name\":\"b\",\"size\":1,\"up\":false}", &r);
	assert_int_equal(r.status, 201);
	resp_free(&r);
	http(l, "POST", "/v1/nets", "{\"name\":\"a\",\"size\":2}", &r);
	assert_int_equal(r.status, 201);
	resp_free(&r);

	http(l, "GET", "/v1/nets?name=a", NULL, &r);
	assert_int_equal(jint(r.json, "count"), 2);
	resp_free(&r);
	http(l, "GET", "/v1/nets?name=a&size=1", NULL, &r);
	assert_int_equal(jint(r.json, "count"), 1);
	assert_true(json_is_true(json_object_get(json_array_get(json_object_get(r.json, "items"), 0), "up")));
	resp_free(&r);
	http(l, "GET", "/v1/nets?up=false", NULL, &r);
	assert_int_equal(jint(r.json, "count"), 1);
	assert_string_equal(jstr(json_array_get(json_object_get(r.json, "items"), 0), "name"), "b");
	resp_free(&r);
	http(l, "GET", "/v1/nets?version=1", NULL, &r);
	assert_int_equal(jint(r.json, "count"), 3);
	resp_free(&r);
	http(l, "GET", "/v1/nets?name=zzz", NULL, &r);
	assert_int_equal(jint(r.json, "count"), 0);
	resp_free(&r);
	http(l, "GET", "/v1/nets?missing=1", NULL, &r);
	assert_int_equal(jint(r.json, "count"), 0);
	resp_free(&r);
}

static void test_labcloud_merge_patch(void **state)
{
	lab *l = *state;
	http_resp r;
	char path[128], id[64];
	json_t *tags;

	lab_start(l, NULL);
	http(l, "POST", "/v1/apps",
	     "{\"name\":\"m\",\"tags\":{\"a\":\"1\",\"b\":\"2\"},\"keep\":true,\"list\":[1,2]}", &r);
	assert_int_equal(r.status, 201);
	snprintf(id, sizeof(id), "%s", jstr(r.json, "id"));
	resp_free(&r);
	snprintf(path, sizeof(path), "/v1/apps/%s", id);

	http(l, "PATCH", path,
	     "{\"tags\":{\"a\":null,\"c\":\"3\"},\"keep\":null,\"list\":[3],\"new\":{\"x\":null,\"y\":1},"
	     "\"id\":\"hijack\",\"version\":77}", &r);
	assert_int_equal(r.status, 200);
	assert_string_equal(jstr(r.json, "id"), id);
	assert_int_equal(jint(r.json, "version"), 2);
	assert_string_equal(jstr(r.json, "name"), "m");
	assert_null(json_object_get(r.json, "keep"));
	tags = json_object_get(r.json, "tags");
	assert_int_equal(json_object_size(tags), 2);
	assert_string_equal(jstr(tags, "b"), "2");
	assert_string_equal(jstr(tags, "c"), "3");
	assert_int_equal(json_array_size(json_object_get(r.json, "list")), 1);
	assert_int_equal(json_object_size(json_object_get(r.json, "new")), 1);
	assert_int_equal(jint(json_object_get(r.json, "new"), "y"), 1);
	resp_free(&r);

	/* The patch is stored, not only answered. */
	http(l, "GET", path, NULL, &r);
	assert_int_equal(jint(r.json, "version"), 2);
	assert_string_equal(jstr(json_object_get(r.json, "tags"), "c"), "3");
	assert_null(json_object_get(r.json, "keep"));
	resp_free(&r);

	http(l, "PATCH", path, "[1]", &r);
	assert_problem(&r, 400);
	resp_free(&r);
}

static void test_labcloud_bad_body(void **state)
{
	lab *l = *state;
	http_resp r;
	size_t big = 1024 * 1024 + 16;
	char *body = mo_malloc(big);
	json_t *st;

	assert_non_null(body);
	lab_start(l, NULL);
	http(l, "POST", "/v1/widgets", "{\"name\": ", &r);
	assert_problem(&r, 400);
	assert_non_null(strstr(jstr(r.json, "detail"), "invalid JSON"));
	resp_free(&r);
	http(l, "POST", "/v1/widgets", "[1,2]", &r);
	assert_problem(&r, 400);
	resp_free(&r);
	http(l, "POST", "/v1/widgets", "\"text\"", &r);
	assert_problem(&r, 400);
	resp_free(&r);
	http(l, "POST", "/v1/widgets", NULL, &r);
	assert_problem(&r, 400);
	resp_free(&r);

	/* A body over 1 MiB: a valid JSON object, refused for its size. */
	memset(body, ' ', big);
	memcpy(body, "{\"pad\":\"", 8);
	memset(body + 8, 'x', big - 10);
	memcpy(body + big - 2, "\"}", 2);
	http_full(l, "POST", "/v1/widgets", body, big, NULL, &r);
	assert_problem(&r, 413);
	resp_free(&r);
	mo_free(body);

	st = stats(l);
	assert_int_equal(jint(st, "total_objects"), 0);
	json_decref(st);
}

static void test_labcloud_stats(void **state)
{
	lab *l = *state;
	http_resp r;
	json_t *st;

	lab_start(l, NULL);
	http(l, "POST", "/v1/a", "{}", &r);
	resp_free(&r);
	http(l, "POST", "/v1/a", "{}", &r);
	resp_free(&r);
	http(l, "POST", "/v1/b", "{}", &r);
	resp_free(&r);
	http(l, "POST", "/_stats/reset", NULL, &r);
	assert_int_equal(r.status, 204);
	resp_free(&r);

	http(l, "GET", "/v1/a", NULL, &r);
	resp_free(&r);
	http(l, "GET", "/v1/b", NULL, &r);
	resp_free(&r);
	http(l, "DELETE", "/v1/b/obj-missing", NULL, &r);
	resp_free(&r);
	http(l, "POST", "/v1/b", "{}", &r);
	resp_free(&r);

	st = stats(l);
	assert_int_equal(jint(json_object_get(st, "requests"), "GET"), 2);
	assert_int_equal(jint(json_object_get(st, "requests"), "POST"), 1);
	assert_int_equal(jint(json_object_get(st, "requests"), "DELETE"), 1);
	assert_int_equal(jint(json_object_get(st, "requests"), "PUT"), 0);
	assert_int_equal(jint(json_object_get(st, "responses"), "200"), 2);
	assert_int_equal(jint(json_object_get(st, "responses"), "201"), 1);
	assert_int_equal(jint(json_object_get(st, "responses"), "404"), 1);
	assert_int_equal(jint(json_object_get(st, "objects"), "a"), 2);
	assert_int_equal(jint(json_object_get(st, "objects"), "b"), 2);
	assert_int_equal(jint(st, "total_objects"), 4);
	assert_int_equal(jint(st, "in_flight"), 0);
	assert_int_equal(jint(st, "max_in_flight"), 1);
	json_decref(st);

	/* DELETE /_objects empties the store; counters are not API requests. */
	http(l, "DELETE", "/_objects", NULL, &r);
	assert_int_equal(r.status, 200);
	assert_int_equal(jint(r.json, "deleted"), 4);
	resp_free(&r);
	st = stats(l);
	assert_int_equal(jint(st, "total_objects"), 0);
	assert_int_equal(jint(json_object_get(st, "requests"), "GET"), 2);
	json_decref(st);
	http(l, "GET", "/v1/a", NULL, &r);
	assert_int_equal(jint(r.json, "count"), 0);
	resp_free(&r);
}

/* 20 parallel requests held 500 ms each are all in flight at once.  (At
 * 100 ms a server under valgrind was seen to reach only 19: the margin keeps
 * this test about behaviour, not about the speed of the machine.) */
static void test_labcloud_max_in_flight(void **state)
{
	enum { N = 20 };
	lab *l = *state;
	CURLM *multi = curl_multi_init();
	CURL *h[N];
	http_resp resp[N], r;
	struct curl_slist *hdrs[N];
	int running = 0, ok = 0;
	json_t *st;

	assert_non_null(multi);
	lab_start(l, "--latency-ms", "500", NULL);
	http(l, "POST", "/_stats/reset", NULL, &r);
	resp_free(&r);
	for (int i = 0; i < N; i++) {
		h[i] = make_request(l, "GET", "/v1/parallel", NULL, 0, NULL, &resp[i], &hdrs[i]);
		curl_multi_add_handle(multi, h[i]);
	}
	do {
		assert_int_equal(curl_multi_perform(multi, &running), CURLM_OK);
		if (running)
			assert_int_equal(curl_multi_poll(multi, NULL, 0, 1000, NULL), CURLM_OK);
	} while (running);
	for (CURLMsg *m; (m = curl_multi_info_read(multi, &running));)
		if (m->msg == CURLMSG_DONE && m->data.result == CURLE_OK)
			ok++;
	assert_int_equal(ok, N);
	for (int i = 0; i < N; i++) {
		finish_request(h[i], &resp[i]);
		assert_int_equal(resp[i].status, 200);
		curl_multi_remove_handle(multi, h[i]);
		curl_easy_cleanup(h[i]);
		curl_slist_free_all(hdrs[i]);
		resp_free(&resp[i]);
	}
	curl_multi_cleanup(multi);

	st = stats(l);
	assert_int_equal(jint(st, "max_in_flight"), N);
	assert_int_equal(jint(st, "in_flight"), 0);
	assert_int_equal(jint(json_object_get(st, "requests"), "GET"), N);
	assert_int_equal(jint(json_object_get(st, "responses"), "200"), N);
	json_decref(st);
}

static void test_labcloud_fail_rate(void **state)
{
	lab *l = *state;
	http_resp r;
	int n500 = 0, n503 = 0;
	json_t *st;

	lab_start(l, "--fail-rate", "1.0", "--seed", "7", NULL);
	for (int i = 0; i < 40; i++) {
		http(l, "POST", "/v1/flaky", "{\"name\":\"x\"}", &r);
		assert_true(r.status == 500 || r.status == 503);
		assert_problem(&r, r.status);
		n500 += r.status == 500;
		n503 += r.status == 503;
		resp_free(&r);
	}
	assert_true(n500 > 0 && n503 > 0);
	st = stats(l);
	assert_int_equal(jint(st, "total_objects"), 0);
	assert_int_equal(jint(json_object_get(st, "requests"), "POST"), 40);
	json_decref(st);

	/* Healed at run time. */
	http(l, "PUT", "/_config", "{\"fail_rate\":0}", &r);
	assert_int_equal(r.status, 200);
	assert_true(json_number_value(json_object_get(r.json, "fail_rate")) == 0.0);
	resp_free(&r);
	http(l, "POST", "/v1/flaky", "{\"name\":\"x\"}", &r);
	assert_int_equal(r.status, 201);
	resp_free(&r);
	st = stats(l);
	assert_int_equal(jint(st, "total_objects"), 1);
	json_decref(st);
}

static void test_labcloud_rate_429(void **state)
{
	lab *l = *state;
	http_resp r;
	json_t *st;

	lab_start(l, "--rate-429", "1", "--retry-after", "3", NULL);
	http(l, "POST", "/v1/busy", "{}", &r);
	assert_problem(&r, 429);
	assert_string_equal(r.retry_after, "3");
	resp_free(&r);
	http(l, "GET", "/v1/busy", NULL, &r);
	assert_problem(&r, 429);
	resp_free(&r);
	st = stats(l);
	assert_int_equal(jint(st, "total_objects"), 0);
	assert_int_equal(jint(json_object_get(st, "responses"), "429"), 2);
	json_decref(st);

	http(l, "PUT", "/_config", "{\"rate_429\":0,\"retry_after\":5}", &r);
	assert_int_equal(r.status, 200);
	assert_int_equal(jint(r.json, "retry_after"), 5);
	resp_free(&r);
	http(l, "POST", "/v1/busy", "{}", &r);
	assert_int_equal(r.status, 201);
	resp_free(&r);
}

static void test_labcloud_token(void **state)
{
	lab *l = *state;
	const char *good[] = { "Authorization: Bearer s3cret", NULL };
	const char *bad[] = { "Authorization: Bearer s3crex", NULL };
	const char *basic[] = { "Authorization: Basic czNjcmV0", NULL };
	http_resp r;
	json_t *st;

	lab_start(l, "--token", "s3cret", NULL);
	http(l, "POST", "/v1/secure", "{}", &r);
	assert_problem(&r, 401);
	assert_non_null(strstr(r.www_auth, "Bearer"));
	resp_free(&r);
	http_full(l, "POST", "/v1/secure", "{}", 2, bad, &r);
	assert_problem(&r, 401);
	resp_free(&r);
	http_full(l, "GET", "/v1/secure", NULL, 0, basic, &r);
	assert_problem(&r, 401);
	resp_free(&r);
	http_full(l, "POST", "/v1/secure", "{}", 2, good, &r);
	assert_int_equal(r.status, 201);
	resp_free(&r);
	http_full(l, "GET", "/v1/secure", NULL, 0, good, &r);
	assert_int_equal(r.status, 200);
	assert_int_equal(jint(r.json, "count"), 1);
	resp_free(&r);

	/* The control endpoints stay open. */
	st = stats(l);
	assert_int_equal(jint(st, "total_objects"), 1);
	assert_int_equal(jint(json_object_get(st, "responses"), "401"), 3);
	json_decref(st);
}

static void test_labcloud_config(void **state)
{
	lab *l = *state;
	http_resp r;

	lab_start(l, "--latency-ms", "5", "--latency-jitter-ms", "2", NULL);
	http(l, "GET", "/_config", NULL, &r);
	assert_int_equal(r.status, 200);
	assert_int_equal(jint(r.json, "latency_ms"), 5);
	assert_int_equal(jint(r.json, "latency_jitter_ms"), 2);
	assert_int_equal(jint(r.json, "retry_after"), 1);
	assert_true(json_is_false(json_object_get(r.json, "token_required")));
	resp_free(&r);

	http(l, "PUT", "/_config", "{\"fail_rate\":2}", &r);
	assert_problem(&r, 400);
	resp_free(&r);
	http(l, "PUT", "/_config", "{\"latency_ms\":-1}", &r);
	assert_problem(&r, 400);
	resp_free(&r);
	http(l, "PUT", "/_config", "{\"speed\":1}", &r);
	assert_problem(&r, 400);
	resp_free(&r);
	http(l, "PUT", "/_config", "{\"latency_ms\":0,\"rate_429\":0.25}", &r);
	assert_int_equal(r.status, 200);
	resp_free(&r);
	http(l, "GET", "/_config", NULL, &r);
	assert_int_equal(jint(r.json, "latency_ms"), 0);
	assert_int_equal(jint(r.json, "latency_jitter_ms"), 2);
	assert_true(json_number_value(json_object_get(r.json, "rate_429")) == 0.25);
	resp_free(&r);
	http(l, "DELETE", "/_config", NULL, &r);
	assert_problem(&r, 405);
	resp_free(&r);
}

/* --help exits 0; a bad flag value exits 2. */
static void test_labcloud_cli(void **state)
{
	static const char *const cases[][3] = {
		{ "--help", NULL, "0" },
		{ "--fail-rate", "1.5", "2" },
		{ "--listen", "nocolon", "2" },
		{ "--bogus", NULL, "2" },
	};
	(void)state;
	for (size_t i = 0; i < MO_ARRAY_SIZE(cases); i++) {
		const char *argv[] = { labcloud_path(), cases[i][0], cases[i][1], NULL };
		int status;
		pid_t pid = fork();
		assert_true(pid >= 0);
		if (pid == 0) {
			int fd = open("/dev/null", O_WRONLY);
			if (fd >= 0) {
				dup2(fd, STDOUT_FILENO);
				dup2(fd, STDERR_FILENO);
			}
			execv(argv[0], (char *const *)argv);
			_exit(127);
		}
		assert_int_equal(waitpid(pid, &status, 0), pid);
		assert_true(WIFEXITED(status));
		assert_int_equal(WEXITSTATUS(status), atoi(cases[i][2]));
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_labcloud_crud, lab_setup, lab_teardown),
		cmocka_unit_test_setup_teardown(test_labcloud_not_found, lab_setup, lab_teardown),
		cmocka_unit_test_setup_teardown(test_labcloud_idempotency_key, lab_setup, lab_teardown),
		cmocka_unit_test_setup_teardown(test_labcloud_filter, lab_setup, lab_teardown),
		cmocka_unit_test_setup_teardown(test_labcloud_merge_patch, lab_setup, lab_teardown),
		cmocka_unit_test_setup_teardown(test_labcloud_bad_body, lab_setup, lab_teardown),
		cmocka_unit_test_setup_teardown(test_labcloud_stats, lab_setup, lab_teardown),
		cmocka_unit_test_setup_teardown(test_labcloud_max_in_flight, lab_setup, lab_teardown),
		cmocka_unit_test_setup_teardown(test_labcloud_fail_rate, lab_setup, lab_teardown),
		cmocka_unit_test_setup_teardown(test_labcloud_rate_429, lab_setup, lab_teardown),
		cmocka_unit_test_setup_teardown(test_labcloud_token, lab_setup, lab_teardown),
		cmocka_unit_test_setup_teardown(test_labcloud_config, lab_setup, lab_teardown),
		cmocka_unit_test(test_labcloud_cli),
	};
	int rc;
	curl_global_init(CURL_GLOBAL_DEFAULT);
	rc = cmocka_run_group_tests_name("labcloud", tests, NULL, NULL);
	curl_global_cleanup();
	return rc;
}
