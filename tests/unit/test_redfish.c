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

#include "emu.h"

#include <jansson.h>
#include <stdio.h>
#include <string.h>

#ifndef MO_BINARY_DIR
#define MO_BINARY_DIR "."
#endif

#define SYS1 "/redfish/v1/Systems/System.Embedded.1"
#define RESET1 SYS1 "/Actions/ComputerSystem.Reset"

/* Each test gets its own redfish (env REDFISH, else MO_BINARY_DIR/redfish) and
 * starts it itself; e->state_file is a path in its private directory. */
static int redfish_setup(void **state)
{
	*state = emu_new("redfish", MO_BINARY_DIR);
	return *state ? 0 : -1;
}

/* method base+path with an optional body and extra header lines
 * (NULL-terminated, may be NULL); userpwd: "user:password" or NULL. */
static void http_full(const emu_proc *e, const char *method, const char *path, const char *body,
		      const char *const *headers, const char *userpwd, emu_resp *out)
{
	emu_req req = { .method = method, .path = path, .body = body, .headers = headers,
			.userpwd = userpwd };
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

static const char *boot(const json_t *sys, const char *k)
{
	return jstr(json_object_get(sys, "Boot"), k);
}

/* r is a Redfish error of status whose (first) message is id. */
static void assert_redfish_error(const emu_resp *r, long status, const char *id)
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
static void power_of(const emu_proc *e, const char *path, char *out, size_t n)
{
	emu_resp r;
	http(e, "GET", path, NULL, &r);
	assert_int_equal(r.status, 200);
	snprintf(out, n, "%s", jstr(r.json, "PowerState"));
	emu_resp_free(&r);
}

static json_int_t stat_of(const emu_proc *e, const char *k)
{
	emu_resp r;
	json_int_t v;
	http(e, "GET", "/_stats", NULL, &r);
	assert_int_equal(r.status, 200);
	v = json_integer_value(json_object_get(r.json, k));
	emu_resp_free(&r);
	return v;
}

/* ---- tests ------------------------------------------------------------ */

static void test_redfish_service_root(void **state)
{
	emu_proc *e = *state;
	emu_resp r;

	EMU_OK(emu_start(e, "--user", "admin", "--password", "pw", NULL));
	http(e, "GET", "/redfish", NULL, &r);
	assert_int_equal(r.status, 200);
	assert_string_equal(jstr(r.json, "v1"), "/redfish/v1/");
	emu_resp_free(&r);

	/* The service root answers without credentials, with or without "/". */
	http(e, "GET", "/redfish/v1/", NULL, &r);
	assert_int_equal(r.status, 200);
	assert_string_equal(r.odata_version, "4.0");
	assert_string_equal(jstr(r.json, "@odata.id"), "/redfish/v1");
	assert_memory_equal(jstr(r.json, "@odata.type"), "#ServiceRoot.", 13);
	assert_string_equal(jstr(json_object_get(r.json, "Systems"), "@odata.id"), "/redfish/v1/Systems");
	assert_non_null(jstr(r.json, "RedfishVersion"));
	emu_resp_free(&r);
	http(e, "GET", "/redfish/v1", NULL, &r);
	assert_int_equal(r.status, 200);
	emu_resp_free(&r);

	http(e, "GET", "/redfish/v1/Nowhere", NULL, &r);
	assert_int_equal(r.status, 401); /* everything else wants credentials first */
	emu_resp_free(&r);
	http_full(e, "GET", "/redfish/v1/Nowhere", NULL, NULL, "admin:pw", &r);
	assert_redfish_error(&r, 404, "ResourceMissingAtURI");
	emu_resp_free(&r);
}

static void test_redfish_systems(void **state)
{
	emu_proc *e = *state;
	emu_resp r;
	json_t *members, *act;

	EMU_OK(emu_start(e, "--systems", "3", NULL));
	http(e, "GET", "/redfish/v1/Systems", NULL, &r);
	assert_int_equal(r.status, 200);
	assert_string_equal(jstr(r.json, "@odata.type"),
			    "#ComputerSystemCollection.ComputerSystemCollection");
	members = json_object_get(r.json, "Members");
	assert_int_equal(json_array_size(members), 3);
	assert_int_equal(json_integer_value(json_object_get(r.json, "Members@odata.count")), 3);
	assert_string_equal(jstr(json_array_get(members, 2), "@odata.id"),
			    "/redfish/v1/Systems/System.Embedded.3");
	emu_resp_free(&r);

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
	emu_resp_free(&r);

	http(e, "DELETE", SYS1, NULL, &r);
	assert_redfish_error(&r, 405, "OperationNotAllowed");
	assert_string_equal(r.allow, "GET, HEAD, PATCH");
	emu_resp_free(&r);
	http(e, "GET", "/redfish/v1/Systems/System.Embedded.4", NULL, &r);
	assert_redfish_error(&r, 404, "ResourceMissingAtURI");
	emu_resp_free(&r);
	assert_int_equal(emu_stop(e), 0);

	EMU_OK(emu_start(e, "--systems", "2", "--system-ids", "numeric", "--power-state", "On", NULL));
	http(e, "GET", "/redfish/v1/Systems/2", NULL, &r);
	assert_int_equal(r.status, 200);
	assert_string_equal(jstr(r.json, "PowerState"), "On");
	emu_resp_free(&r);
}

static void test_redfish_auth(void **state)
{
	emu_proc *e = *state;
	const char *tok_hdr[2] = { NULL, NULL };
	char hdr[128], session[256];
	emu_resp r;

	EMU_OK(emu_start(e, "--user", "admin", "--password", "s3cret", NULL));
	http(e, "GET", "/redfish/v1/Systems", NULL, &r);
	assert_redfish_error(&r, 401, "NoValidSession");
	assert_memory_equal(r.www_auth, "Basic", 5);
	emu_resp_free(&r);
	http_full(e, "GET", "/redfish/v1/Systems", NULL, NULL, "admin:wrong", &r);
	assert_int_equal(r.status, 401);
	emu_resp_free(&r);
	http_full(e, "GET", "/redfish/v1/Systems", NULL, NULL, "admin:s3cret", &r);
	assert_int_equal(r.status, 200);
	emu_resp_free(&r);

	/* Sessions: login without credentials, then X-Auth-Token. */
	http(e, "POST", "/redfish/v1/SessionService/Sessions",
	     "{\"UserName\":\"admin\",\"Password\":\"nope\"}", &r);
	assert_int_equal(r.status, 401);
	emu_resp_free(&r);
	http(e, "POST", "/redfish/v1/SessionService/Sessions",
	     "{\"UserName\":\"admin\",\"Password\":\"s3cret\"}", &r);
	assert_int_equal(r.status, 201);
	assert_true(strlen(r.auth_token) >= 16);
	assert_memory_equal(r.location, "/redfish/v1/SessionService/Sessions/", 36);
	assert_string_equal(jstr(r.json, "UserName"), "admin");
	snprintf(hdr, sizeof(hdr), "X-Auth-Token: %s", r.auth_token);
	snprintf(session, sizeof(session), "%s", r.location);
	emu_resp_free(&r);
	tok_hdr[0] = hdr;
	http_full(e, "GET", SYS1, NULL, tok_hdr, NULL, &r);
	assert_int_equal(r.status, 200);
	emu_resp_free(&r);
	http_full(e, "GET", "/redfish/v1/SessionService/Sessions", NULL, tok_hdr, NULL, &r);
	assert_int_equal(json_integer_value(json_object_get(r.json, "Members@odata.count")), 1);
	emu_resp_free(&r);
	http_full(e, "DELETE", session, NULL, tok_hdr, NULL, &r);
	assert_int_equal(r.status, 204);
	emu_resp_free(&r);
	http_full(e, "GET", SYS1, NULL, tok_hdr, NULL, &r);
	assert_int_equal(r.status, 401); /* the session is gone */
	emu_resp_free(&r);
	assert_true(stat_of(e, "auth_failures") >= 4);
}

static void test_redfish_patch_boot(void **state)
{
	emu_proc *e = *state;
	emu_resp r;
	char etag[64], hdr[96];
	const char *im[2] = { hdr, NULL };
	json_t *info;

	EMU_OK(emu_start(e, NULL));
	http(e, "GET", SYS1, NULL, &r);
	snprintf(etag, sizeof(etag), "%s", r.etag);
	emu_resp_free(&r);

	/* Every problem reported, nothing changed. */
	http(e, "PATCH", SYS1,
	     "{\"Boot\":{\"BootSourceOverrideTarget\":\"Floppy\",\"BootSourceOverrideEnabled\":3,"
	     "\"Foo\":1},\"PowerState\":\"On\",\"Bar\":2}", &r);
	assert_int_equal(r.status, 400);
	assert_string_equal(jstr(json_object_get(r.json, "error"), "code"), "Base.1.16.0.GeneralError");
	info = json_object_get(json_object_get(r.json, "error"), "@Message.ExtendedInfo");
	assert_int_equal(json_array_size(info), 5);
	emu_resp_free(&r);
	http(e, "PATCH", SYS1, "{\"Boot\":{\"BootSourceOverrideTarget\":\"Floppy\"}}", &r);
	assert_redfish_error(&r, 400, "PropertyValueNotInList");
	assert_non_null(strstr(jstr(json_object_get(r.json, "error"), "message"), "'Floppy'"));
	emu_resp_free(&r);
	http(e, "PATCH", SYS1, "{\"PowerState\":\"On\"}", &r);
	assert_redfish_error(&r, 400, "PropertyNotWritable");
	emu_resp_free(&r);
	http(e, "PATCH", SYS1, "{}", &r);
	assert_redfish_error(&r, 400, "EmptyJSON");
	emu_resp_free(&r);
	http(e, "PATCH", SYS1, "{\"Boot\":", &r);
	assert_redfish_error(&r, 400, "MalformedJSON");
	emu_resp_free(&r);
	http(e, "GET", SYS1, NULL, &r);
	assert_string_equal(r.etag, etag);
	assert_string_equal(boot(r.json, "BootSourceOverrideTarget"), "None");
	emu_resp_free(&r);

	/* A stale If-Match: 412; the current one: 200 and a new ETag. */
	snprintf(hdr, sizeof(hdr), "If-Match: \"stale\"");
	http_full(e, "PATCH", SYS1, "{\"Boot\":{\"BootSourceOverrideTarget\":\"Pxe\"}}", im, NULL, &r);
	assert_redfish_error(&r, 412, "PreconditionFailed");
	emu_resp_free(&r);
	snprintf(hdr, sizeof(hdr), "If-Match: %s", etag);
	http_full(e, "PATCH", SYS1,
		  "{\"Boot\":{\"BootSourceOverrideTarget\":\"Pxe\",\"BootSourceOverrideEnabled\":\"Once\"}}",
		  im, NULL, &r);
	assert_int_equal(r.status, 200);
	assert_string_equal(boot(r.json, "BootSourceOverrideTarget"), "Pxe");
	assert_string_equal(boot(r.json, "BootSourceOverrideEnabled"), "Once");
	assert_string_not_equal(r.etag, etag);
	emu_resp_free(&r);
	http_full(e, "PATCH", SYS1, "{\"Boot\":{\"BootSourceOverrideTarget\":\"Hdd\"}}", im, NULL, &r);
	assert_int_equal(r.status, 412); /* the old ETag no longer matches */
	emu_resp_free(&r);
	snprintf(hdr, sizeof(hdr), "If-Match: *");
	http_full(e, "PATCH", SYS1, "{\"Boot\":{\"BootSourceOverrideMode\":\"Legacy\"}}", im, NULL, &r);
	assert_int_equal(r.status, 200);
	assert_string_equal(boot(r.json, "BootSourceOverrideMode"), "Legacy");
	snprintf(hdr, sizeof(hdr), "If-Match: W/%s", r.etag);
	emu_resp_free(&r);
	http_full(e, "PATCH", SYS1, "{\"AssetTag\":\"rack-7\"}", im, NULL, &r);
	assert_int_equal(r.status, 200);
	assert_string_equal(jstr(r.json, "AssetTag"), "rack-7");
	emu_resp_free(&r);
	assert_int_equal(stat_of(e, "precondition_failed"), 2);
	assert_int_equal(emu_stop(e), 0);

	EMU_OK(emu_start(e, "--require-etag", NULL));
	http(e, "PATCH", SYS1, "{\"AssetTag\":\"x\"}", &r);
	assert_redfish_error(&r, 428, "PreconditionRequired");
	emu_resp_free(&r);
}

static void test_redfish_reset(void **state)
{
	emu_proc *e = *state;
	emu_resp r;
	char ps[16];

	EMU_OK(emu_start(e, NULL));
	http(e, "POST", RESET1, "{\"ResetType\":\"On\"}", &r);
	assert_int_equal(r.status, 204);
	emu_resp_free(&r);
	power_of(e, SYS1, ps, sizeof(ps));
	assert_string_equal(ps, "On");
	http(e, "POST", RESET1, "{\"ResetType\":\"On\"}", &r); /* already On: accepted, no-op */
	assert_int_equal(r.status, 204);
	emu_resp_free(&r);
	http(e, "POST", RESET1, "{\"ResetType\":\"ForceOff\"}", &r);
	assert_int_equal(r.status, 204);
	emu_resp_free(&r);
	power_of(e, SYS1, ps, sizeof(ps));
	assert_string_equal(ps, "Off");
	http(e, "POST", RESET1, "{\"ResetType\":\"PushPowerButton\"}", &r);
	emu_resp_free(&r);
	power_of(e, SYS1, ps, sizeof(ps));
	assert_string_equal(ps, "On");

	http(e, "POST", RESET1, "{\"ResetType\":\"Sideways\"}", &r);
	assert_redfish_error(&r, 400, "ActionParameterValueNotInList");
	emu_resp_free(&r);
	http(e, "POST", RESET1, "{\"ResetType\":7}", &r);
	assert_redfish_error(&r, 400, "ActionParameterValueTypeError");
	emu_resp_free(&r);
	http(e, "POST", RESET1, "{}", &r);
	assert_redfish_error(&r, 400, "ActionParameterMissing");
	emu_resp_free(&r);
	http(e, "POST", RESET1, "{\"ResetType\":\"On\",\"Force\":true}", &r);
	assert_redfish_error(&r, 400, "ActionParameterUnknown");
	emu_resp_free(&r);
	http(e, "GET", RESET1, NULL, &r);
	assert_redfish_error(&r, 405, "OperationNotAllowed");
	assert_string_equal(r.allow, "POST");
	emu_resp_free(&r);
	http(e, "POST", "/redfish/v1/Systems/nope/Actions/ComputerSystem.Reset",
	     "{\"ResetType\":\"On\"}", &r);
	assert_int_equal(r.status, 404);
	emu_resp_free(&r);
	assert_int_equal(stat_of(e, "resets"), 4);
}

/* A transition that is not due yet: the old state is reported. */
static void test_redfish_power_delay(void **state)
{
	emu_proc *e = *state;
	emu_resp r;
	json_t *sys1;
	char ps[16], etag[64];

	EMU_OK(emu_start(e, "--power-delay-ms", "600000", NULL));
	http(e, "GET", SYS1, NULL, &r);
	snprintf(etag, sizeof(etag), "%s", r.etag);
	emu_resp_free(&r);
	http(e, "POST", RESET1, "{\"ResetType\":\"On\"}", &r);
	assert_int_equal(r.status, 204);
	emu_resp_free(&r);
	http(e, "GET", SYS1, NULL, &r);
	assert_string_equal(jstr(r.json, "PowerState"), "Off");
	assert_string_equal(r.etag, etag); /* nothing visible changed */
	emu_resp_free(&r);
	power_of(e, SYS1, ps, sizeof(ps));
	assert_string_equal(ps, "Off");
	assert_int_equal(stat_of(e, "stale_reads"), 2);
	assert_int_equal(stat_of(e, "transitions"), 0);

	http(e, "GET", "/_state", NULL, &r);
	sys1 = json_object_get(json_object_get(r.json, "systems"), "System.Embedded.1");
	assert_string_equal(jstr(sys1, "PowerState"), "Off");
	assert_string_equal(jstr(json_object_get(sys1, "pending"), "PowerState"), "On");
	assert_string_equal(jstr(json_object_get(sys1, "pending"), "ResetType"), "On");
	emu_resp_free(&r);

	/* A second reset acts on where the system is heading: On is a no-op,
	 * ForceOff cancels the power-on. */
	http(e, "POST", RESET1, "{\"ResetType\":\"On\"}", &r);
	emu_resp_free(&r);
	http(e, "POST", RESET1, "{\"ResetType\":\"ForceOff\"}", &r);
	emu_resp_free(&r);
	http(e, "GET", "/_state", NULL, &r);
	sys1 = json_object_get(json_object_get(r.json, "systems"), "System.Embedded.1");
	assert_string_equal(jstr(json_object_get(sys1, "pending"), "PowerState"), "Off");
	emu_resp_free(&r);
}

static void test_redfish_once_consumed(void **state)
{
	emu_proc *e = *state;
	emu_resp r;

	EMU_OK(emu_start(e, NULL));
	http(e, "PATCH", SYS1,
	     "{\"Boot\":{\"BootSourceOverrideTarget\":\"Pxe\",\"BootSourceOverrideEnabled\":\"Once\"}}", &r);
	assert_int_equal(r.status, 200);
	emu_resp_free(&r);
	/* Powering off does not boot: the override stays armed. */
	http(e, "POST", RESET1, "{\"ResetType\":\"GracefulShutdown\"}", &r);
	emu_resp_free(&r);
	http(e, "GET", SYS1, NULL, &r);
	assert_string_equal(boot(r.json, "BootSourceOverrideEnabled"), "Once");
	emu_resp_free(&r);
	/* A restart of an Off system powers it on: a boot, which consumes it. */
	http(e, "POST", RESET1, "{\"ResetType\":\"ForceRestart\"}", &r);
	emu_resp_free(&r);
	http(e, "GET", SYS1, NULL, &r);
	assert_string_equal(jstr(r.json, "PowerState"), "On");
	assert_string_equal(boot(r.json, "BootSourceOverrideEnabled"), "Disabled");
	assert_string_equal(boot(r.json, "BootSourceOverrideTarget"), "Pxe"); /* kept */
	emu_resp_free(&r);
	assert_int_equal(stat_of(e, "overrides_consumed"), 1);

	/* Continuous survives boots. */
	http(e, "PATCH", SYS1,
	     "{\"Boot\":{\"BootSourceOverrideTarget\":\"Hdd\",\"BootSourceOverrideEnabled\":\"Continuous\"}}", &r);
	emu_resp_free(&r);
	http(e, "POST", RESET1, "{\"ResetType\":\"GracefulRestart\"}", &r);
	emu_resp_free(&r);
	http(e, "GET", SYS1, NULL, &r);
	assert_string_equal(boot(r.json, "BootSourceOverrideEnabled"), "Continuous");
	emu_resp_free(&r);
	http(e, "GET", "/_state", NULL, &r);
	assert_int_equal(json_integer_value(json_object_get(json_object_get(json_object_get(r.json, "systems"),
		"System.Embedded.1"), "boots")), 2);
	emu_resp_free(&r);
	assert_int_equal(stat_of(e, "overrides_consumed"), 1);
}

static void test_redfish_state_file(void **state)
{
	emu_proc *e = *state;
	emu_resp r;
	FILE *f;

	EMU_OK(emu_start(e, "--systems", "2", "--state-file", e->state_file, NULL));
	http(e, "PATCH", "/redfish/v1/Systems/System.Embedded.2",
	     "{\"Boot\":{\"BootSourceOverrideTarget\":\"Cd\",\"BootSourceOverrideEnabled\":\"Continuous\"}}", &r);
	assert_int_equal(r.status, 200);
	emu_resp_free(&r);
	http(e, "POST", RESET1, "{\"ResetType\":\"On\"}", &r);
	emu_resp_free(&r);
	assert_int_equal(emu_stop(e), 0);

	EMU_OK(emu_start(e, "--systems", "2", "--state-file", e->state_file, NULL));
	http(e, "GET", SYS1, NULL, &r);
	assert_string_equal(jstr(r.json, "PowerState"), "On");
	emu_resp_free(&r);
	http(e, "GET", "/redfish/v1/Systems/System.Embedded.2", NULL, &r);
	assert_string_equal(boot(r.json, "BootSourceOverrideTarget"), "Cd");
	assert_string_equal(boot(r.json, "BootSourceOverrideEnabled"), "Continuous");
	emu_resp_free(&r);
	assert_int_equal(emu_stop(e), 0);

	/* A file that is not a saved state: refused at start. */
	f = fopen(e->state_file, "w");
	assert_non_null(f);
	fputs("{\"format\":99}", f);
	fclose(f);
	{
		const char *args[] = { "--state-file", e->state_file, NULL };
		assert_int_equal(emu_run(e->bin, args), 1);
	}
}

static void test_redfish_faults(void **state)
{
	emu_proc *e = *state;
	emu_resp r;
	char ps[16];

	EMU_OK(emu_start(e, "--fail-rate", "1", NULL));
	for (int i = 0; i < 6; i++) {
		http(e, "POST", RESET1, "{\"ResetType\":\"On\"}", &r);
		assert_true(r.status == 500 || r.status == 503);
		assert_redfish_error(&r, r.status, r.status == 500 ? "InternalError"
								   : "ServiceTemporarilyUnavailable");
		emu_resp_free(&r);
	}
	/* Nothing was done; the control endpoints are never failed. */
	http(e, "GET", "/_state", NULL, &r);
	assert_int_equal(r.status, 200);
	assert_string_equal(jstr(json_object_get(json_object_get(r.json, "systems"), "System.Embedded.1"),
				 "PowerState"), "Off");
	emu_resp_free(&r);
	http(e, "PUT", "/_config", "{\"fail_rate\":0,\"rate_429\":1,\"retry_after\":3}", &r);
	assert_int_equal(r.status, 200);
	emu_resp_free(&r);
	http(e, "GET", SYS1, NULL, &r);
	assert_int_equal(r.status, 429);
	assert_string_equal(r.retry_after, "3");
	emu_resp_free(&r);
	http(e, "PUT", "/_config", "{\"rate_429\":0,\"bogus\":1}", &r);
	assert_int_equal(r.status, 400); /* refused as a whole */
	emu_resp_free(&r);
	http(e, "PUT", "/_config", "{\"rate_429\":0}", &r);
	emu_resp_free(&r);
	power_of(e, SYS1, ps, sizeof(ps));
	assert_string_equal(ps, "Off");
}

static int run_cli(const char *a1, const char *a2, const char *a3)
{
	const char *args[] = { a1, a2, a3, NULL };
	char bin[512];

	assert_int_equal(emu_locate(bin, sizeof(bin), "redfish", MO_BINARY_DIR), 0);
	return emu_run(bin, args);
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
		cmocka_unit_test_setup_teardown(test_redfish_service_root, redfish_setup, emu_teardown),
		cmocka_unit_test_setup_teardown(test_redfish_systems, redfish_setup, emu_teardown),
		cmocka_unit_test_setup_teardown(test_redfish_auth, redfish_setup, emu_teardown),
		cmocka_unit_test_setup_teardown(test_redfish_patch_boot, redfish_setup, emu_teardown),
		cmocka_unit_test_setup_teardown(test_redfish_reset, redfish_setup, emu_teardown),
		cmocka_unit_test_setup_teardown(test_redfish_power_delay, redfish_setup, emu_teardown),
		cmocka_unit_test_setup_teardown(test_redfish_once_consumed, redfish_setup, emu_teardown),
		cmocka_unit_test_setup_teardown(test_redfish_state_file, redfish_setup, emu_teardown),
		cmocka_unit_test_setup_teardown(test_redfish_faults, redfish_setup, emu_teardown),
		cmocka_unit_test(test_redfish_cli),
	};
	int rc;
	curl_global_init(CURL_GLOBAL_DEFAULT);
	rc = cmocka_run_group_tests(tests, NULL, NULL);
	curl_global_cleanup();
	return rc;
}
