/*
 * test_redfish.c - the lab's Redfish BMC emulator, driven over real HTTP.
 *
 * Each test starts the built redfish binary (env REDFISH, else
 * MO_BINARY_DIR/redfish) on a free port of 127.0.0.1 (--listen
 * 127.0.0.1:0 --port-file), talks to it with libcurl, and stops it with
 * SIGTERM at teardown, which must end it with exit status 0.  Checked: the
 * service root and the ComputerSystem schema, Basic auth and sessions,
 * PATCH of Boot (allowable values, read-only and unknown properties,
 * ETag / If-Match / 428), the Reset action (parameters, delayed
 * transitions, consumption of a one-time override), --state-file across a
 * restart, injected failures, and the command line.
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

#define SYS1 "/redfish/v1/Systems/System.Embedded.1"
#define RESET1 SYS1 "/Actions/ComputerSystem.Reset"

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

static const char *redfish_path(void)
{
	const char *p = getenv("REDFISH");
	return p && *p ? p : MO_BINARY_DIR "/redfish";
}

static void sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
	nanosleep(&ts, NULL);
}

/* ---- the child process ------------------------------------------------ */

/* Start redfish with the extra arguments (NULL-terminated) and wait for
 * its port file. */
static void emu_start(emu *e, ...)
{
	const char *argv[40];
	int argc = 0, status;
	char *text = NULL;
	size_t len;
	va_list ap;

	unlink(e->port_file);
	argv[argc++] = redfish_path();
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
		fprintf(stderr, "redfish did not stop on SIGTERM\n");
		rc = -1;
	} else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		fprintf(stderr, "redfish ended with status 0x%x\n", status);
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
	snprintf(e->dir, sizeof(e->dir), "/tmp/mo-redfish-XXXXXX");
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

static const char *boot(const json_t *sys, const char *k)
{
	return jstr(json_object_get(sys, "Boot"), k);
}

/* r is a Redfish error of status whose (first) message is id. */
static void assert_redfish_error(const http_resp *r, long status, const char *id)
{
	json_t *err, *info;
	char want[128];
	assert_int_equal(r->status, status);
	assert_non_null(r->json);
	err = json_object_get(r->json, "error");
	assert_non_null(err);
	assert_non_null(jstr(err, "code"));
	assert_non_null(jstr(err, "message"));
	info = json_object_get(err, "@Message.ExtendedInfo");
	assert_true(json_array_size(info) >= 1);
	snprintf(want, sizeof(want), "Base.1.16.0.%s", id);
	assert_string_equal(jstr(json_array_get(info, 0), "MessageId"), want);
	assert_non_null(jstr(json_array_get(info, 0), "Message"));
	assert_non_null(jstr(json_array_get(info, 0), "Resolution"));
}

/* GET system 1: PowerState (copied into out). */
static void power_of(const emu *e, const char *path, char *out, size_t n)
{
	http_resp r;
	http(e, "GET", path, NULL, &r);
	assert_int_equal(r.status, 200);
	snprintf(out, n, "%s", jstr(r.json, "PowerState"));
	resp_free(&r);
}

static json_int_t stat_of(const emu *e, const char *k)
{
	http_resp r;
	json_int_t v;
	http(e, "GET", "/_stats", NULL, &r);
	assert_int_equal(r.status, 200);
	v = json_integer_value(json_object_get(r.json, k));
	resp_free(&r);
	return v;
}

/* ---- tests ------------------------------------------------------------ */

static void test_redfish_service_root(void **state)
{
	emu *e = *state;
	http_resp r;

	emu_start(e, "--user", "admin", "--password", "pw", NULL);
	http(e, "GET", "/redfish", NULL, &r);
	assert_int_equal(r.status, 200);
	assert_string_equal(jstr(r.json, "v1"), "/redfish/v1/");
	resp_free(&r);

	/* The service root answers without credentials, with or without "/". */
	http(e, "GET", "/redfish/v1/", NULL, &r);
	assert_int_equal(r.status, 200);
	assert_string_equal(r.odata_version, "4.0");
	assert_string_equal(jstr(r.json, "@odata.id"), "/redfish/v1");
	assert_memory_equal(jstr(r.json, "@odata.type"), "#ServiceRoot.", 13);
	assert_string_equal(jstr(json_object_get(r.json, "Systems"), "@odata.id"), "/redfish/v1/Systems");
	assert_non_null(jstr(r.json, "RedfishVersion"));
	resp_free(&r);
	http(e, "GET", "/redfish/v1", NULL, &r);
	assert_int_equal(r.status, 200);
	resp_free(&r);

	http(e, "GET", "/redfish/v1/Nowhere", NULL, &r);
	assert_int_equal(r.status, 401); /* everything else wants credentials first */
	resp_free(&r);
	http_full(e, "GET", "/redfish/v1/Nowhere", NULL, NULL, "admin:pw", &r);
	assert_redfish_error(&r, 404, "ResourceMissingAtURI");
	resp_free(&r);
}

static void test_redfish_systems(void **state)
{
	emu *e = *state;
	http_resp r;
	json_t *members, *act;

	emu_start(e, "--systems", "3", NULL);
	http(e, "GET", "/redfish/v1/Systems", NULL, &r);
	assert_int_equal(r.status, 200);
	assert_string_equal(jstr(r.json, "@odata.type"),
			    "#ComputerSystemCollection.ComputerSystemCollection");
	members = json_object_get(r.json, "Members");
	assert_int_equal(json_array_size(members), 3);
	assert_int_equal(json_integer_value(json_object_get(r.json, "Members@odata.count")), 3);
	assert_string_equal(jstr(json_array_get(members, 2), "@odata.id"),
			    "/redfish/v1/Systems/System.Embedded.3");
	resp_free(&r);

	http(e, "GET", SYS1, NULL, &r);
	assert_int_equal(r.status, 200);
	assert_string_equal(jstr(r.json, "@odata.id"), SYS1);
	assert_memory_equal(jstr(r.json, "@odata.type"), "#ComputerSystem.v1_", 19);
	assert_string_equal(jstr(r.json, "Id"), "System.Embedded.1");
	assert_string_equal(jstr(r.json, "PowerState"), "Off");
	assert_string_equal(boot(r.json, "BootSourceOverrideEnabled"), "Disabled");
	assert_string_equal(boot(r.json, "BootSourceOverrideTarget"), "None");
	assert_true(json_array_size(json_object_get(json_object_get(r.json, "Boot"),
						    "BootSourceOverrideTarget@Redfish.AllowableValues")) > 3);
	act = json_object_get(json_object_get(r.json, "Actions"), "#ComputerSystem.Reset");
	assert_string_equal(jstr(act, "target"), RESET1);
	assert_true(json_array_size(json_object_get(act, "ResetType@Redfish.AllowableValues")) >= 4);
	assert_true(r.etag[0] == '"');
	assert_string_equal(jstr(r.json, "@odata.etag"), r.etag);
	assert_string_equal(r.allow, "GET, HEAD, PATCH");
	resp_free(&r);

	http(e, "DELETE", SYS1, NULL, &r);
	assert_redfish_error(&r, 405, "OperationNotAllowed");
	assert_string_equal(r.allow, "GET, HEAD, PATCH");
	resp_free(&r);
	http(e, "GET", "/redfish/v1/Systems/System.Embedded.4", NULL, &r);
	assert_redfish_error(&r, 404, "ResourceMissingAtURI");
	resp_free(&r);
	assert_int_equal(emu_stop(e), 0);

	emu_start(e, "--systems", "2", "--system-ids", "numeric", "--power-state", "On", NULL);
	http(e, "GET", "/redfish/v1/Systems/2", NULL, &r);
	assert_int_equal(r.status, 200);
	assert_string_equal(jstr(r.json, "PowerState"), "On");
	resp_free(&r);
}

static void test_redfish_auth(void **state)
{
	emu *e = *state;
	const char *tok_hdr[2] = { NULL, NULL };
	char hdr[128], session[256];
	http_resp r;

	emu_start(e, "--user", "admin", "--password", "s3cret", NULL);
	http(e, "GET", "/redfish/v1/Systems", NULL, &r);
	assert_redfish_error(&r, 401, "NoValidSession");
	assert_memory_equal(r.www_auth, "Basic", 5);
	resp_free(&r);
	http_full(e, "GET", "/redfish/v1/Systems", NULL, NULL, "admin:wrong", &r);
	assert_int_equal(r.status, 401);
	resp_free(&r);
	http_full(e, "GET", "/redfish/v1/Systems", NULL, NULL, "admin:s3cret", &r);
	assert_int_equal(r.status, 200);
	resp_free(&r);

	/* Sessions: login without credentials, then X-Auth-Token. */
	http(e, "POST", "/redfish/v1/SessionService/Sessions",
	     "{\"UserName\":\"admin\",\"Password\":\"nope\"}", &r);
	assert_int_equal(r.status, 401);
	resp_free(&r);
	http(e, "POST", "/redfish/v1/SessionService/Sessions",
	     "{\"UserName\":\"admin\",\"Password\":\"s3cret\"}", &r);
	assert_int_equal(r.status, 201);
	assert_true(strlen(r.auth_token) >= 16);
	assert_memory_equal(r.location, "/redfish/v1/SessionService/Sessions/", 36);
	assert_string_equal(jstr(r.json, "UserName"), "admin");
	snprintf(hdr, sizeof(hdr), "X-Auth-Token: %s", r.auth_token);
	snprintf(session, sizeof(session), "%s", r.location);
	resp_free(&r);
	tok_hdr[0] = hdr;
	http_full(e, "GET", SYS1, NULL, tok_hdr, NULL, &r);
	assert_int_equal(r.status, 200);
	resp_free(&r);
	http_full(e, "GET", "/redfish/v1/SessionService/Sessions", NULL, tok_hdr, NULL, &r);
	assert_int_equal(json_integer_value(json_object_get(r.json, "Members@odata.count")), 1);
	resp_free(&r);
	http_full(e, "DELETE", session, NULL, tok_hdr, NULL, &r);
	assert_int_equal(r.status, 204);
	resp_free(&r);
	http_full(e, "GET", SYS1, NULL, tok_hdr, NULL, &r);
	assert_int_equal(r.status, 401); /* the session is gone */
	resp_free(&r);
	assert_true(stat_of(e, "auth_failures") >= 4);
}

static void test_redfish_patch_boot(void **state)
{
	emu *e = *state;
	http_resp r;
	char etag[64], hdr[96];
	const char *im[2] = { hdr, NULL };
	json_t *info;

	emu_start(e, NULL);
	http(e, "GET", SYS1, NULL, &r);
	snprintf(etag, sizeof(etag), "%s", r.etag);
	resp_free(&r);

	/* Every problem reported, nothing changed. */
	http(e, "PATCH", SYS1,
	     "{\"Boot\":{\"BootSourceOverrideTarget\":\"Floppy\",\"BootSourceOverrideEnabled\":3,"
	     "\"Foo\":1},\"PowerState\":\"On\",\"Bar\":2}", &r);
	assert_int_equal(r.status, 400);
	assert_string_equal(jstr(json_object_get(r.json, "error"), "code"), "Base.1.16.0.GeneralError");
	info = json_object_get(json_object_get(r.json, "error"), "@Message.ExtendedInfo");
	assert_int_equal(json_array_size(info), 5);
	resp_free(&r);
	http(e, "PATCH", SYS1, "{\"Boot\":{\"BootSourceOverrideTarget\":\"Floppy\"}}", &r);
	assert_redfish_error(&r, 400, "PropertyValueNotInList");
	assert_non_null(strstr(jstr(json_object_get(r.json, "error"), "message"), "'Floppy'"));
	resp_free(&r);
	http(e, "PATCH", SYS1, "{\"PowerState\":\"On\"}", &r);
	assert_redfish_error(&r, 400, "PropertyNotWritable");
	resp_free(&r);
	http(e, "PATCH", SYS1, "{}", &r);
	assert_redfish_error(&r, 400, "EmptyJSON");
	resp_free(&r);
	http(e, "PATCH", SYS1, "{\"Boot\":", &r);
	assert_redfish_error(&r, 400, "MalformedJSON");
	resp_free(&r);
	http(e, "GET", SYS1, NULL, &r);
	assert_string_equal(r.etag, etag);
	assert_string_equal(boot(r.json, "BootSourceOverrideTarget"), "None");
	resp_free(&r);

	/* A stale If-Match: 412; the current one: 200 and a new ETag. */
	snprintf(hdr, sizeof(hdr), "If-Match: \"stale\"");
	http_full(e, "PATCH", SYS1, "{\"Boot\":{\"BootSourceOverrideTarget\":\"Pxe\"}}", im, NULL, &r);
	assert_redfish_error(&r, 412, "PreconditionFailed");
	resp_free(&r);
	snprintf(hdr, sizeof(hdr), "If-Match: %s", etag);
	http_full(e, "PATCH", SYS1,
		  "{\"Boot\":{\"BootSourceOverrideTarget\":\"Pxe\",\"BootSourceOverrideEnabled\":\"Once\"}}",
		  im, NULL, &r);
	assert_int_equal(r.status, 200);
	assert_string_equal(boot(r.json, "BootSourceOverrideTarget"), "Pxe");
	assert_string_equal(boot(r.json, "BootSourceOverrideEnabled"), "Once");
	assert_string_not_equal(r.etag, etag);
	resp_free(&r);
	http_full(e, "PATCH", SYS1, "{\"Boot\":{\"BootSourceOverrideTarget\":\"Hdd\"}}", im, NULL, &r);
	assert_int_equal(r.status, 412); /* the old ETag no longer matches */
	resp_free(&r);
	snprintf(hdr, sizeof(hdr), "If-Match: *");
	http_full(e, "PATCH", SYS1, "{\"Boot\":{\"BootSourceOverrideMode\":\"Legacy\"}}", im, NULL, &r);
	assert_int_equal(r.status, 200);
	assert_string_equal(boot(r.json, "BootSourceOverrideMode"), "Legacy");
	snprintf(hdr, sizeof(hdr), "If-Match: W/%s", r.etag);
	resp_free(&r);
	http_full(e, "PATCH", SYS1, "{\"AssetTag\":\"rack-7\"}", im, NULL, &r);
	assert_int_equal(r.status, 200);
	assert_string_equal(jstr(r.json, "AssetTag"), "rack-7");
	resp_free(&r);
	assert_int_equal(stat_of(e, "precondition_failed"), 2);
	assert_int_equal(emu_stop(e), 0);

	emu_start(e, "--require-etag", NULL);
	http(e, "PATCH", SYS1, "{\"AssetTag\":\"x\"}", &r);
	assert_redfish_error(&r, 428, "PreconditionRequired");
	resp_free(&r);
}

static void test_redfish_reset(void **state)
{
	emu *e = *state;
	http_resp r;
	char ps[16];

	emu_start(e, NULL);
	http(e, "POST", RESET1, "{\"ResetType\":\"On\"}", &r);
	assert_int_equal(r.status, 204);
	resp_free(&r);
	power_of(e, SYS1, ps, sizeof(ps));
	assert_string_equal(ps, "On");
	http(e, "POST", RESET1, "{\"ResetType\":\"On\"}", &r); /* already On: accepted, no-op */
	assert_int_equal(r.status, 204);
	resp_free(&r);
	http(e, "POST", RESET1, "{\"ResetType\":\"ForceOff\"}", &r);
	assert_int_equal(r.status, 204);
	resp_free(&r);
	power_of(e, SYS1, ps, sizeof(ps));
	assert_string_equal(ps, "Off");
	http(e, "POST", RESET1, "{\"ResetType\":\"PushPowerButton\"}", &r);
	resp_free(&r);
	power_of(e, SYS1, ps, sizeof(ps));
	assert_string_equal(ps, "On");

	http(e, "POST", RESET1, "{\"ResetType\":\"Sideways\"}", &r);
	assert_redfish_error(&r, 400, "ActionParameterValueNotInList");
	resp_free(&r);
	http(e, "POST", RESET1, "{\"ResetType\":7}", &r);
	assert_redfish_error(&r, 400, "ActionParameterValueTypeError");
	resp_free(&r);
	http(e, "POST", RESET1, "{}", &r);
	assert_redfish_error(&r, 400, "ActionParameterMissing");
	resp_free(&r);
	http(e, "POST", RESET1, "{\"ResetType\":\"On\",\"Force\":true}", &r);
	assert_redfish_error(&r, 400, "ActionParameterUnknown");
	resp_free(&r);
	http(e, "GET", RESET1, NULL, &r);
	assert_redfish_error(&r, 405, "OperationNotAllowed");
	assert_string_equal(r.allow, "POST");
	resp_free(&r);
	http(e, "POST", "/redfish/v1/Systems/nope/Actions/ComputerSystem.Reset",
	     "{\"ResetType\":\"On\"}", &r);
	assert_int_equal(r.status, 404);
	resp_free(&r);
	assert_int_equal(stat_of(e, "resets"), 4);
}

/* A transition that is not due yet: the old state is reported. */
static void test_redfish_power_delay(void **state)
{
	emu *e = *state;
	http_resp r;
	json_t *sys1;
	char ps[16], etag[64];

	emu_start(e, "--power-delay-ms", "600000", NULL);
	http(e, "GET", SYS1, NULL, &r);
	snprintf(etag, sizeof(etag), "%s", r.etag);
	resp_free(&r);
	http(e, "POST", RESET1, "{\"ResetType\":\"On\"}", &r);
	assert_int_equal(r.status, 204);
	resp_free(&r);
	http(e, "GET", SYS1, NULL, &r);
	assert_string_equal(jstr(r.json, "PowerState"), "Off");
	assert_string_equal(r.etag, etag); /* nothing visible changed */
	resp_free(&r);
	power_of(e, SYS1, ps, sizeof(ps));
	assert_string_equal(ps, "Off");
	assert_int_equal(stat_of(e, "stale_reads"), 2);
	assert_int_equal(stat_of(e, "transitions"), 0);

	http(e, "GET", "/_state", NULL, &r);
	sys1 = json_object_get(json_object_get(r.json, "systems"), "System.Embedded.1");
	assert_string_equal(jstr(sys1, "PowerState"), "Off");
	assert_string_equal(jstr(json_object_get(sys1, "pending"), "PowerState"), "On");
	assert_string_equal(jstr(json_object_get(sys1, "pending"), "ResetType"), "On");
	resp_free(&r);

	/* A second reset acts on where the system is heading: On is a no-op,
	 * ForceOff cancels the power-on. */
	http(e, "POST", RESET1, "{\"ResetType\":\"On\"}", &r);
	resp_free(&r);
	http(e, "POST", RESET1, "{\"ResetType\":\"ForceOff\"}", &r);
	resp_free(&r);
	http(e, "GET", "/_state", NULL, &r);
	sys1 = json_object_get(json_object_get(r.json, "systems"), "System.Embedded.1");
	assert_string_equal(jstr(json_object_get(sys1, "pending"), "PowerState"), "Off");
	resp_free(&r);
}

static void test_redfish_once_consumed(void **state)
{
	emu *e = *state;
	http_resp r;

	emu_start(e, NULL);
	http(e, "PATCH", SYS1,
	     "{\"Boot\":{\"BootSourceOverrideTarget\":\"Pxe\",\"BootSourceOverrideEnabled\":\"Once\"}}", &r);
	assert_int_equal(r.status, 200);
	resp_free(&r);
	/* Powering off does not boot: the override stays armed. */
	http(e, "POST", RESET1, "{\"ResetType\":\"GracefulShutdown\"}", &r);
	resp_free(&r);
	http(e, "GET", SYS1, NULL, &r);
	assert_string_equal(boot(r.json, "BootSourceOverrideEnabled"), "Once");
	resp_free(&r);
	/* A restart of an Off system powers it on: a boot, which consumes it. */
	http(e, "POST", RESET1, "{\"ResetType\":\"ForceRestart\"}", &r);
	resp_free(&r);
	http(e, "GET", SYS1, NULL, &r);
	assert_string_equal(jstr(r.json, "PowerState"), "On");
	assert_string_equal(boot(r.json, "BootSourceOverrideEnabled"), "Disabled");
	assert_string_equal(boot(r.json, "BootSourceOverrideTarget"), "Pxe"); /* kept */
	resp_free(&r);
	assert_int_equal(stat_of(e, "overrides_consumed"), 1);

	/* Continuous survives boots. */
	http(e, "PATCH", SYS1,
	     "{\"Boot\":{\"BootSourceOverrideTarget\":\"Hdd\",\"BootSourceOverrideEnabled\":\"Continuous\"}}", &r);
	resp_free(&r);
	http(e, "POST", RESET1, "{\"ResetType\":\"GracefulRestart\"}", &r);
	resp_free(&r);
	http(e, "GET", SYS1, NULL, &r);
	assert_string_equal(boot(r.json, "BootSourceOverrideEnabled"), "Continuous");
	resp_free(&r);
	http(e, "GET", "/_state", NULL, &r);
	assert_int_equal(json_integer_value(json_object_get(json_object_get(json_object_get(r.json, "systems"),
		"System.Embedded.1"), "boots")), 2);
	resp_free(&r);
	assert_int_equal(stat_of(e, "overrides_consumed"), 1);
}

static void test_redfish_state_file(void **state)
{
	emu *e = *state;
	http_resp r;
	FILE *f;

	emu_start(e, "--systems", "2", "--state-file", e->state_file, NULL);
	http(e, "PATCH", "/redfish/v1/Systems/System.Embedded.2",
	     "{\"Boot\":{\"BootSourceOverrideTarget\":\"Cd\",\"BootSourceOverrideEnabled\":\"Continuous\"}}", &r);
	assert_int_equal(r.status, 200);
	resp_free(&r);
	http(e, "POST", RESET1, "{\"ResetType\":\"On\"}", &r);
	resp_free(&r);
	assert_int_equal(emu_stop(e), 0);

	emu_start(e, "--systems", "2", "--state-file", e->state_file, NULL);
	http(e, "GET", SYS1, NULL, &r);
	assert_string_equal(jstr(r.json, "PowerState"), "On");
	resp_free(&r);
	http(e, "GET", "/redfish/v1/Systems/System.Embedded.2", NULL, &r);
	assert_string_equal(boot(r.json, "BootSourceOverrideTarget"), "Cd");
	assert_string_equal(boot(r.json, "BootSourceOverrideEnabled"), "Continuous");
	resp_free(&r);
	assert_int_equal(emu_stop(e), 0);

	/* A file that is not a saved state: refused at start. */
	f = fopen(e->state_file, "w");
	assert_non_null(f);
	fputs("{\"format\":99}", f);
	fclose(f);
	{
		int status;
		pid_t pid = fork();
		assert_true(pid >= 0);
		if (pid == 0) {
			int fd = open("/dev/null", O_WRONLY);
			dup2(fd, STDOUT_FILENO);
			dup2(fd, STDERR_FILENO);
			execl(redfish_path(), redfish_path(), "--state-file", e->state_file, (char *)NULL);
			_exit(127);
		}
		assert_int_equal(waitpid(pid, &status, 0), pid);
		assert_true(WIFEXITED(status));
		assert_int_equal(WEXITSTATUS(status), 1);
	}
}

static void test_redfish_faults(void **state)
{
	emu *e = *state;
	http_resp r;
	char ps[16];

	emu_start(e, "--fail-rate", "1", NULL);
	for (int i = 0; i < 6; i++) {
		http(e, "POST", RESET1, "{\"ResetType\":\"On\"}", &r);
		assert_true(r.status == 500 || r.status == 503);
		assert_redfish_error(&r, r.status, r.status == 500 ? "InternalError"
								   : "ServiceTemporarilyUnavailable");
		resp_free(&r);
	}
	/* Nothing was done; the control endpoints are never failed. */
	http(e, "GET", "/_state", NULL, &r);
	assert_int_equal(r.status, 200);
	assert_string_equal(jstr(json_object_get(json_object_get(r.json, "systems"), "System.Embedded.1"),
				 "PowerState"), "Off");
	resp_free(&r);
	http(e, "PUT", "/_config", "{\"fail_rate\":0,\"rate_429\":1,\"retry_after\":3}", &r);
	assert_int_equal(r.status, 200);
	resp_free(&r);
	http(e, "GET", SYS1, NULL, &r);
	assert_int_equal(r.status, 429);
	assert_string_equal(r.retry_after, "3");
	resp_free(&r);
	http(e, "PUT", "/_config", "{\"rate_429\":0,\"bogus\":1}", &r);
	assert_int_equal(r.status, 400); /* refused as a whole */
	resp_free(&r);
	http(e, "PUT", "/_config", "{\"rate_429\":0}", &r);
	resp_free(&r);
	power_of(e, SYS1, ps, sizeof(ps));
	assert_string_equal(ps, "Off");
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
		execl(redfish_path(), redfish_path(), a1, a2, a3, (char *)NULL);
		_exit(127);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	return WEXITSTATUS(status);
}

static void test_redfish_cli(void **state)
{
	(void)state;
	assert_int_equal(run_cli("--help", NULL, NULL), 0);
	assert_int_equal(run_cli("--bogus", NULL, NULL), 2);
	assert_int_equal(run_cli("--systems", "0", NULL), 2);
	assert_int_equal(run_cli("--power-state", "Maybe", NULL), 2);
	assert_int_equal(run_cli("--user", "admin", NULL), 2); /* without --password */
	assert_int_equal(run_cli("--listen", "nowhere", NULL), 2);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_redfish_service_root, emu_setup, emu_teardown),
		cmocka_unit_test_setup_teardown(test_redfish_systems, emu_setup, emu_teardown),
		cmocka_unit_test_setup_teardown(test_redfish_auth, emu_setup, emu_teardown),
		cmocka_unit_test_setup_teardown(test_redfish_patch_boot, emu_setup, emu_teardown),
		cmocka_unit_test_setup_teardown(test_redfish_reset, emu_setup, emu_teardown),
		cmocka_unit_test_setup_teardown(test_redfish_power_delay, emu_setup, emu_teardown),
		cmocka_unit_test_setup_teardown(test_redfish_once_consumed, emu_setup, emu_teardown),
		cmocka_unit_test_setup_teardown(test_redfish_state_file, emu_setup, emu_teardown),
		cmocka_unit_test_setup_teardown(test_redfish_faults, emu_setup, emu_teardown),
		cmocka_unit_test(test_redfish_cli),
	};
	int rc;
	curl_global_init(CURL_GLOBAL_DEFAULT);
	rc = cmocka_run_group_tests(tests, NULL, NULL);
	curl_global_cleanup();
	return rc;
}
