/*
 * redfish.c - the local lab's baseboard management controller: an in-memory
 * DMTF Redfish service exposing N computer systems whose power state and
 * boot source override can be read and driven over HTTP.
 *
 * Schema-faithful for what it implements: the service root, the
 * ComputerSystem collection, ComputerSystem resources (PowerState, Boot with
 * its @Redfish.AllowableValues, the #ComputerSystem.Reset action), PATCH of
 * Boot, ETag / If-Match, HTTP Basic authentication, a session service
 * (X-Auth-Token) and Redfish error bodies built from the Base message
 * registry ({"error":{"code","message","@Message.ExtendedInfo":[...]}}).
 *
 * Power is asynchronous, as on real hardware: a Reset is accepted at once
 * (204) and the system keeps reporting its old PowerState for
 * --power-delay-ms before the new one shows.  Transitions are settled
 * lazily, whenever a request looks at a system, which is indistinguishable
 * from a clock-driven machine for a client.  When a system powers on or
 * restarts, a one-time boot override (BootSourceOverrideEnabled Once) is
 * consumed: it goes back to Disabled, the target is kept (as the schema
 * describes).  Every accepted reset, completed transition, consumed
 * override and Boot change is logged on stdout.
 *
 * With --state-file the machines outlive the process, as hosts outlive a
 * restart of their BMC: every change is written to the file (a temp file
 * renamed over it) and read back at start, due times of transitions in
 * flight included (they are wall-clock times).
 *
 * Faults: --latency-ms (slept in the request's thread), --fail-rate
 * (500 InternalError / 503 ServiceTemporarilyUnavailable before anything is
 * done), --rate-429 (with Retry-After).  The control endpoints under /_
 * (stats, config, state) are never delayed, failed nor authenticated.
 *
 * Concurrency: one thread per connection (libmicrohttpd); one mutex guards
 * configuration, counters, systems and sessions, and JSON answered from
 * them is serialised while it is held.
 *
 * A stand-alone executable: it links libmicrohttpd, jansson and pthread
 * only; labkit.c brings the command line, the HTTP plumbing and the fault
 * injection every lab emulator shares.  See examples/lab/README.md.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "labkit.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define RF_MAX_BODY (64 * 1024)      /* larger request bodies get 413 */
#define RF_MAX_SYSTEMS 1024
#define RF_MAX_SESSIONS 64
#define RF_THREAD_STACK (512 * 1024)
#define RF_REGISTRY "Base.1.16.0"
#define RF_JSON "application/json; charset=utf-8"
#define RF_AUTH 1                    /* lk_route flag: credentials required */

/* The values this service allows, as it advertises them. */
static const char *const reset_types[] = {
	"On", "ForceOff", "GracefulShutdown", "GracefulRestart", "ForceRestart",
	"Nmi", "ForceOn", "PushPowerButton", "PowerCycle",
};
static const char *const boot_enabled_values[] = { "Disabled", "Once", "Continuous" };
static const char *const boot_target_values[] = {
	"None", "Pxe", "Cd", "Usb", "Hdd", "BiosSetup", "Utilities", "Diags",
	"UefiShell", "UefiHttp",
};
static const char *const boot_mode_values[] = { "Legacy", "UEFI" };

/* ComputerSystem properties a client may read but not PATCH. */
static const char *const readonly_props[] = {
	"@odata.id", "@odata.type", "@odata.etag", "Id", "Name", "SystemType",
	"Manufacturer", "Model", "SerialNumber", "UUID", "PowerState", "Status",
	"Actions", "Links", "Description",
};

/* ---- the Base message registry (the messages this service uses) ------- */

typedef enum {
	M_GENERAL, M_INTERNAL, M_UNAVAILABLE, M_NO_SESSION, M_MISSING_URI,
	M_NOT_ALLOWED, M_MALFORMED_JSON, M_EMPTY_JSON, M_PROP_UNKNOWN,
	M_PROP_NOT_WRITABLE, M_PROP_NOT_IN_LIST, M_PROP_TYPE, M_PRECOND_FAILED,
	M_PRECOND_REQUIRED, M_PARAM_MISSING, M_PARAM_NOT_IN_LIST, M_PARAM_TYPE,
	M_PARAM_UNKNOWN, M_TOO_LARGE, M_SESSION_LIMIT,
} rf_msg;

static const struct {
	const char *id, *text, *severity, *resolution;
} messages[] = {
	[M_GENERAL] = { "GeneralError",
		"A general error has occurred.  See Resolution for information on how to resolve "
		"the error, or @Message.ExtendedInfo if Resolution is not provided.",
		"Critical", "None." },
	[M_INTERNAL] = { "InternalError",
		"The request failed due to an internal service error.  The service is still operational.",
		"Critical", "Resubmit the request.  If the problem persists, consider resetting the service." },
	[M_UNAVAILABLE] = { "ServiceTemporarilyUnavailable",
		"The service is temporarily unavailable.  Retry in %1 seconds.",
		"Critical", "Wait for the indicated retry duration and retry the operation." },
	[M_NO_SESSION] = { "NoValidSession",
		"There is no valid session established with the implementation.",
		"Critical", "Establish a session before attempting any operations." },
	[M_MISSING_URI] = { "ResourceMissingAtURI",
		"The resource at the URI '%1' was not found.",
		"Critical", "Place a valid resource at the URI or correct the URI and resubmit the request." },
	[M_NOT_ALLOWED] = { "OperationNotAllowed",
		"The HTTP method is not allowed on this resource.", "Critical", "None." },
	[M_MALFORMED_JSON] = { "MalformedJSON",
		"The request body submitted was malformed JSON and could not be parsed by the "
		"receiving service.",
		"Critical", "Ensure that the request body is valid JSON and resubmit the request." },
	[M_EMPTY_JSON] = { "EmptyJSON",
		"The request body submitted contained an empty JSON object and the service is "
		"unable to process it.",
		"Warning", "Add properties in the JSON object and resubmit the request." },
	[M_PROP_UNKNOWN] = { "PropertyUnknown",
		"The property %1 is not in the list of valid properties for the resource.",
		"Warning", "Remove the unknown property from the request body and resubmit the "
		"request if the operation failed." },
	[M_PROP_NOT_WRITABLE] = { "PropertyNotWritable",
		"The property %1 is a read only property and cannot be assigned a value.",
		"Warning", "Remove the property from the request body and resubmit the request if "
		"the operation failed." },
	[M_PROP_NOT_IN_LIST] = { "PropertyValueNotInList",
		"The value '%1' for the property %2 is not in the list of acceptable values.",
		"Warning", "Choose a value from the enumeration list that the implementation can "
		"support and resubmit the request if the operation failed." },
	[M_PROP_TYPE] = { "PropertyValueTypeError",
		"The value '%1' for the property %2 is of a different type than the property can accept.",
		"Warning", "Correct the value for the property in the request body and resubmit the "
		"request if the operation failed." },
	[M_PRECOND_FAILED] = { "PreconditionFailed",
		"The ETag supplied did not match the ETag required to change this resource.",
		"Critical", "Try the operation again using the appropriate ETag." },
	[M_PRECOND_REQUIRED] = { "PreconditionRequired",
		"A precondition header or annotation is required to change this resource.",
		"Critical", "Try the operation again using an If-Match or If-None-Match header and "
		"appropriate ETag." },
	[M_PARAM_MISSING] = { "ActionParameterMissing",
		"The action %1 requires the parameter %2 to be present in the request body.",
		"Critical", "Supply the action with the required parameter in the request body when "
		"the request is resubmitted." },
	[M_PARAM_NOT_IN_LIST] = { "ActionParameterValueNotInList",
		"The value '%1' for the parameter %2 in the action %3 is not in the list of "
		"acceptable values.",
		"Warning", "Choose a value from the enumeration list that the implementation can "
		"support and resubmit the request if the operation failed." },
	[M_PARAM_TYPE] = { "ActionParameterValueTypeError",
		"The value '%1' for the parameter %2 in the action %3 is of a different type than "
		"the parameter can accept.",
		"Warning", "Correct the value for the parameter in the request body and resubmit the "
		"request if the operation failed." },
	[M_PARAM_UNKNOWN] = { "ActionParameterUnknown",
		"The action %1 was submitted with the invalid parameter %2.",
		"Warning", "Correct the invalid action parameter and resubmit the request if the "
		"operation failed." },
	[M_TOO_LARGE] = { "PayloadTooLarge",
		"The supplied payload exceeds the maximum size supported by the service.",
		"Critical", "Check that the supplied payload is correct and supported by this service." },
	[M_SESSION_LIMIT] = { "SessionLimitExceeded",
		"The session establishment failed due to the number of simultaneous sessions "
		"exceeding the limit of the implementation.",
		"Critical", "Reduce the number of other sessions before trying to establish the "
		"session or increase the limit of simultaneous sessions, if supported." },
};

/* ---- the service's state ---------------------------------------------- */

typedef struct {
	char id[32];
	char uri[96];
	char uuid[40];
	char serial[24];
	bool on;                     /* the PowerState reported now */
	bool pending;                /* a power transition is under way */
	bool pending_on;             /* ... towards On (else Off) */
	bool pending_boot;           /* ... which boots the system (power-on, restart) */
	char pending_type[24];       /* the ResetType that started it */
	int64_t due_ms;              /* ... and when it completes (wall clock) */
	char boot_enabled[16];
	char boot_target[16];
	char boot_mode[8];
	char asset_tag[64];
	uint64_t generation;         /* bumped on every visible change: the ETag */
	uint64_t resets, boots, stale_reads;
} rf_system;

typedef struct {
	char id[20];
	char token[40];
	char user[64];
} rf_session;

typedef struct {
	lk_server lk;                /* lk.lock guards everything below too */
	long power_delay_ms;         /* PUT /_config may change it */
	uint64_t resets, patches, transitions, stale_reads, overrides_consumed;
	uint64_t precondition_failed, auth_failures;

	const char *user, *password; /* Basic credentials, or NULL: no auth */
	bool require_etag;           /* PATCH without If-Match: 428 */
	const char *state_file;      /* --state-file, or NULL */
	char instance[12];           /* random per process: part of every ETag */
	char service_uuid[40];

	rf_system *systems;
	int nsystems;
	rf_session sessions[RF_MAX_SESSIONS];
	int nsessions;
	uint64_t session_seq;
} rf_server;

/* ---- small helpers ---------------------------------------------------- */

static void uuid_from(uint64_t a, uint64_t b, char *out, size_t n)
{
	snprintf(out, n, "%08x-%04x-4%03x-8%03x-%012llx", (unsigned)(a >> 32),
		 (unsigned)(a >> 16) & 0xffff, (unsigned)a & 0xfff, (unsigned)(b >> 48) & 0xfff,
		 (unsigned long long)(b & 0xffffffffffffULL));
}

static bool in_list(const char *v, const char *const *list, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(v, list[i]) == 0)
			return true;
	return false;
}

static json_t *string_array(const char *const *list, size_t n)
{
	json_t *a = json_array();
	for (size_t i = 0; a && i < n; i++)
		json_array_append_new(a, json_string(list[i]));
	return a;
}

/* The JSON text of v for a message argument ("Floppy", 3, true, ...). */
static void arg_text(const json_t *v, char *out, size_t n)
{
	char *t;
	if (json_is_string(v)) {
		snprintf(out, n, "%s", json_string_value(v));
		return;
	}
	t = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
	snprintf(out, n, "%s", t ? t : "?");
	free(t);
}

/* Decode standard base64 (padding optional) into out (NUL-terminated);
 * false when s is not base64 or does not fit. */
static bool base64_decode(const char *s, char *out, size_t cap)
{
	uint32_t acc = 0;
	int bits = 0;
	size_t n = 0;
	for (; *s && *s != '='; s++) {
		const char *p;
		static const char alphabet[] =
			"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
		if (!(p = strchr(alphabet, *s)) || !*s)
			return false;
		acc = (acc << 6) | (uint32_t)(p - alphabet);
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			if (n + 1 >= cap)
				return false;
			out[n++] = (char)((acc >> bits) & 0xff);
		}
	}
	out[n] = '\0';
	return strlen(out) == n; /* no NUL inside */
}


/* ---- replies ---------------------------------------------------------- */

/* Answer status with j (stolen) as the body; serialises j now, so call it
 * while holding the lock that guards what j was built from. */
static void reply_json(lk_reply *r, int status, json_t *j)
{
	lk_reply_json(r, status, j);
	r->content_type = RF_JSON;
}

/* Mark r a Redfish answer (OData-Version). */
static void reply_odata(lk_reply *r)
{
	lk_reply_header(r, "OData-Version", "4.0");
}

/* A Message object of the Base registry; args: the %1, %2, %3
 * substitutions, NULL-terminated. */
static json_t *message_v(rf_msg m, va_list ap)
{
	const char *args[4] = { NULL };
	json_t *margs = json_array();
	char text[1024], id[96];
	size_t n = 0, o = 0;
	for (const char *a; n < LK_ARRAY_SIZE(args) && (a = va_arg(ap, const char *)); n++) {
		args[n] = a;
		json_array_append_new(margs, json_string(a));
	}
	for (const char *p = messages[m].text; *p && o + 1 < sizeof(text); p++) {
		if (p[0] == '%' && p[1] >= '1' && p[1] <= '4' && args[p[1] - '1']) {
			o += (size_t)snprintf(text + o, sizeof(text) - o, "%s", args[p[1] - '1']);
			if (o >= sizeof(text))
				o = sizeof(text) - 1;
			p++;
		} else {
			text[o++] = *p;
		}
	}
	text[o] = '\0';
	snprintf(id, sizeof(id), "%s.%s", RF_REGISTRY, messages[m].id);
	return json_pack("{s:s, s:s, s:s, s:o, s:s, s:s}",
			 "@odata.type", "#Message.v1_1_1.Message",
			 "MessageId", id, "Message", text, "MessageArgs", margs,
			 "MessageSeverity", messages[m].severity,
			 "Resolution", messages[m].resolution);
}

/* Append a message to an @Message.ExtendedInfo array. */
static void info_add(json_t *info, rf_msg m, ...)
{
	va_list ap;
	va_start(ap, m);
	json_array_append_new(info, message_v(m, ap));
	va_end(ap);
}

/* Answer a Redfish error with the messages in info (stolen).  One message:
 * its id and text are the error's code and message; several: GeneralError. */
static void reply_error_info(lk_reply *r, int status, json_t *info)
{
	const char *code = RF_REGISTRY ".GeneralError", *msg = messages[M_GENERAL].text;
	if (json_array_size(info) == 1) {
		code = json_string_value(json_object_get(json_array_get(info, 0), "MessageId"));
		msg = json_string_value(json_object_get(json_array_get(info, 0), "Message"));
	}
	reply_json(r, status, json_pack("{s:{s:s, s:s, s:o}}", "error", "code", code,
					"message", msg, "@Message.ExtendedInfo", info));
	reply_odata(r);
}

/* Answer a Redfish error with one message. */
static void reply_error(lk_reply *r, int status, rf_msg m, ...)
{
	json_t *info = json_array();
	va_list ap;
	va_start(ap, m);
	json_array_append_new(info, message_v(m, ap));
	va_end(ap);
	reply_error_info(r, status, info);
}


/* 401 NoValidSession with a Basic challenge. */
static void reply_unauthorized(lk_reply *r)
{
	reply_error(r, 401, M_NO_SESSION, NULL);
	lk_reply_header(r, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Basic realm=\"Redfish\"");
}

/* The request body as a JSON object (new reference), or NULL with a 400
 * in r. */
static json_t *body_object(const lk_call *c, lk_reply *r)
{
	json_t *j = lk_body_object(c, NULL, NULL);
	if (!j)
		reply_error(r, 400, M_MALFORMED_JSON, NULL);
	return j;
}

/* ---- systems ---------------------------------------------------------- */

static rf_system *find_system(rf_server *s, const char *id)
{
	for (int i = 0; i < s->nsystems; i++)
		if (strcmp(s->systems[i].id, id) == 0)
			return &s->systems[i];
	return NULL;
}

/* ---- --state-file ----------------------------------------------------- */

/* Save every system to --state-file (a temp file renamed over it), so a
 * restarted BMC finds its machines as it left them, transitions in flight
 * included: the hosts do not power off when their BMC restarts.  Caller
 * holds srv->lk.lock. */
static void save_state(rf_server *s)
{
	json_t *root, *arr;
	if (!s->state_file)
		return;
	arr = json_array();
	for (int i = 0; arr && i < s->nsystems; i++) {
		const rf_system *y = &s->systems[i];
		json_array_append_new(arr, json_pack(
			"{s:s, s:s, s:s, s:b, s:b, s:b, s:b, s:s, s:I, s:s, s:s, s:s, s:s, s:I, s:I, s:I}",
			"id", y->id, "uuid", y->uuid, "serial", y->serial, "on", y->on,
			"pending", y->pending, "pending_on", y->pending_on,
			"pending_boot", y->pending_boot, "pending_type", y->pending_type,
			"due_ms", (json_int_t)y->due_ms, "boot_enabled", y->boot_enabled,
			"boot_target", y->boot_target, "boot_mode", y->boot_mode,
			"asset_tag", y->asset_tag, "generation", (json_int_t)y->generation,
			"resets", (json_int_t)y->resets, "boots", (json_int_t)y->boots));
	}
	root = json_pack("{s:i, s:o}", "format", 1, "systems", arr);
	lk_save_json(&s->lk, s->state_file, root);
}

static void copy_field(char *dst, size_t cap, json_t *o, const char *k)
{
	const char *v = json_string_value(json_object_get(o, k));
	if (v)
		snprintf(dst, cap, "%s", v);
}

/* Load --state-file when it exists: systems with the same id take the
 * saved state; -1 (with a message) when the file is not a saved state. */
static int load_state(rf_server *s)
{
	json_error_t err;
	json_t *root, *arr, *o;
	size_t i;
	if (access(s->state_file, F_OK) != 0)
		return 0;
	if (!(root = json_load_file(s->state_file, 0, &err))) {
		fprintf(stderr, "redfish: %s: %s\n", s->state_file, err.text);
		return -1;
	}
	arr = json_object_get(root, "systems");
	if (json_integer_value(json_object_get(root, "format")) != 1 || !json_is_array(arr)) {
		fprintf(stderr, "redfish: %s is not a redfish state file\n", s->state_file);
		json_decref(root);
		return -1;
	}
	json_array_foreach(arr, i, o) {
		const char *id = json_string_value(json_object_get(o, "id"));
		rf_system *y = id ? find_system(s, id) : NULL;
		if (!y)
			continue;
		copy_field(y->uuid, sizeof(y->uuid), o, "uuid");
		copy_field(y->serial, sizeof(y->serial), o, "serial");
		copy_field(y->pending_type, sizeof(y->pending_type), o, "pending_type");
		copy_field(y->boot_enabled, sizeof(y->boot_enabled), o, "boot_enabled");
		copy_field(y->boot_target, sizeof(y->boot_target), o, "boot_target");
		copy_field(y->boot_mode, sizeof(y->boot_mode), o, "boot_mode");
		copy_field(y->asset_tag, sizeof(y->asset_tag), o, "asset_tag");
		y->on = json_is_true(json_object_get(o, "on"));
		y->pending = json_is_true(json_object_get(o, "pending"));
		y->pending_on = json_is_true(json_object_get(o, "pending_on"));
		y->pending_boot = json_is_true(json_object_get(o, "pending_boot"));
		y->due_ms = (int64_t)json_integer_value(json_object_get(o, "due_ms"));
		y->generation = (uint64_t)json_integer_value(json_object_get(o, "generation"));
		y->resets = (uint64_t)json_integer_value(json_object_get(o, "resets"));
		y->boots = (uint64_t)json_integer_value(json_object_get(o, "boots"));
	}
	json_decref(root);
	return 0;
}

/* Complete y's power transition if it is due.  A transition that boots the
 * system consumes a one-time boot override.  Caller holds srv->lk.lock. */
static void settle(rf_server *s, rf_system *y, int64_t now)
{
	if (!y->pending || now < y->due_ms)
		return;
	y->pending = false;
	y->on = y->pending_on;
	y->generation++;
	s->transitions++;
	lk_log(&s->lk, "%s: PowerState %s (%s completed)", y->id, y->on ? "On" : "Off",
	       y->pending_type);
	if (y->on && y->pending_boot) {
		y->boots++;
		if (strcmp(y->boot_enabled, "Once") == 0) {
			snprintf(y->boot_enabled, sizeof(y->boot_enabled), "Disabled");
			s->overrides_consumed++;
			lk_log(&s->lk, "%s: booted from %s; one-time boot override consumed "
			       "(BootSourceOverrideEnabled Disabled)", y->id, y->boot_target);
		} else {
			lk_log(&s->lk, "%s: booted (%s%s)", y->id,
			       strcmp(y->boot_enabled, "Continuous") == 0 ? "override " : "",
			       strcmp(y->boot_enabled, "Continuous") == 0 ? y->boot_target
									  : "default boot order");
		}
	}
	save_state(s);
}

static void settle_all(rf_server *s)
{
	int64_t now = lk_now_ms();
	for (int i = 0; i < s->nsystems; i++)
		settle(s, &s->systems[i], now);
}

static void etag_of(const rf_server *s, const rf_system *y, char *out, size_t n)
{
	snprintf(out, n, "\"%s-%llu\"", s->instance, (unsigned long long)y->generation);
}

/* The ComputerSystem resource.  Caller holds srv->lk.lock. */
static json_t *system_json(const rf_server *s, const rf_system *y)
{
	char target[160], etag[64];
	snprintf(target, sizeof(target), "%s/Actions/ComputerSystem.Reset", y->uri);
	etag_of(s, y, etag, sizeof(etag));
	return json_pack(
		"{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s,"
		" s:{s:s, s:s},"
		" s:{s:s, s:o, s:s, s:o, s:s, s:o},"
		" s:{s:{s:s, s:o}}}",
		"@odata.id", y->uri,
		"@odata.type", "#ComputerSystem.v1_13_0.ComputerSystem",
		"@odata.etag", etag,
		"Id", y->id,
		"Name", "Lab System",
		"SystemType", "Physical",
		"Manufacturer", "mecorch lab",
		"Model", "redfish emulator",
		"SerialNumber", y->serial,
		"UUID", y->uuid,
		"AssetTag", y->asset_tag,
		"PowerState", y->on ? "On" : "Off",
		"Status", "State", "Enabled", "Health", "OK",
		"Boot",
		"BootSourceOverrideEnabled", y->boot_enabled,
		"BootSourceOverrideEnabled@Redfish.AllowableValues",
		string_array(boot_enabled_values, LK_ARRAY_SIZE(boot_enabled_values)),
		"BootSourceOverrideTarget", y->boot_target,
		"BootSourceOverrideTarget@Redfish.AllowableValues",
		string_array(boot_target_values, LK_ARRAY_SIZE(boot_target_values)),
		"BootSourceOverrideMode", y->boot_mode,
		"BootSourceOverrideMode@Redfish.AllowableValues",
		string_array(boot_mode_values, LK_ARRAY_SIZE(boot_mode_values)),
		"Actions", "#ComputerSystem.Reset", "target", target,
		"ResetType@Redfish.AllowableValues",
		string_array(reset_types, LK_ARRAY_SIZE(reset_types)));
}

/* Send y's ETag with r.  Caller holds srv->lk.lock. */
static void reply_etag(lk_reply *r, const rf_server *s, const rf_system *y)
{
	char etag[64];
	etag_of(s, y, etag, sizeof(etag));
	lk_reply_header(r, MHD_HTTP_HEADER_ETAG, "%s", etag);
}

/* Answer y with its ETag.  Caller holds srv->lk.lock. */
static void reply_system(lk_reply *r, int status, const rf_server *s, const rf_system *y)
{
	reply_json(r, status, system_json(s, y));
	reply_odata(r);
	reply_etag(r, s, y);
	lk_reply_header(r, MHD_HTTP_HEADER_ALLOW, "GET, HEAD, PATCH");
}

/* ---- the API ---------------------------------------------------------- */

static void api_versions(lk_call *c, lk_reply *r)
{
	(void)c;
	reply_json(r, 200, json_pack("{s:s}", "v1", "/redfish/v1/"));
	reply_odata(r);
}

static void api_root(lk_call *c, lk_reply *r)
{
	rf_server *s = c->srv;
	reply_json(r, 200, json_pack(
		"{s:s, s:s, s:s, s:s, s:s, s:s, s:{s:s}, s:{s:s}, s:{s:{s:s}}}",
		"@odata.id", "/redfish/v1",
		"@odata.type", "#ServiceRoot.v1_11_0.ServiceRoot",
		"Id", "RootService",
		"Name", "Root Service",
		"RedfishVersion", "1.15.0",
		"UUID", s->service_uuid,
		"Systems", "@odata.id", "/redfish/v1/Systems",
		"SessionService", "@odata.id", "/redfish/v1/SessionService",
		"Links", "Sessions", "@odata.id", "/redfish/v1/SessionService/Sessions"));
	reply_odata(r);
}

static void api_systems(lk_call *c, lk_reply *r)
{
	rf_server *s = c->srv;
	json_t *members = json_array();
	pthread_mutex_lock(&s->lk.lock);
	for (int i = 0; i < s->nsystems; i++)
		json_array_append_new(members, json_pack("{s:s}", "@odata.id", s->systems[i].uri));
	reply_json(r, 200, json_pack("{s:s, s:s, s:s, s:o, s:i}",
				     "@odata.id", "/redfish/v1/Systems",
				     "@odata.type", "#ComputerSystemCollection.ComputerSystemCollection",
				     "Name", "Computer System Collection",
				     "Members", members, "Members@odata.count", s->nsystems));
	pthread_mutex_unlock(&s->lk.lock);
	reply_odata(r);
}

static void api_system_get(lk_call *c, lk_reply *r)
{
	rf_server *s = c->srv;
	rf_system *y;
	pthread_mutex_lock(&s->lk.lock);
	if (!(y = find_system(s, c->param))) {
		reply_error(r, 404, M_MISSING_URI, c->path, NULL);
	} else {
		settle(s, y, lk_now_ms());
		if (y->pending) {
			/* the transition is not visible yet: the old state is reported */
			y->stale_reads++;
			s->stale_reads++;
		}
		reply_system(r, 200, s, y);
	}
	pthread_mutex_unlock(&s->lk.lock);
}

/* Validate one string property of a PATCH: present -> must be a string in
 * list.  name: the property's name as messages quote it. */
static void check_enum(json_t *obj, const char *name, const char *const *list, size_t n,
		       json_t *info)
{
	json_t *v = json_object_get(obj, name);
	char text[128];
	if (!v)
		return;
	arg_text(v, text, sizeof(text));
	if (!json_is_string(v))
		info_add(info, M_PROP_TYPE, text, name, NULL);
	else if (!in_list(json_string_value(v), list, n))
		info_add(info, M_PROP_NOT_IN_LIST, text, name, NULL);
}

/* Does the If-Match header (a list of entity tags, or *) match etag? */
static bool if_match(const char *header, const char *etag)
{
	const char *p = header;
	size_t n = strlen(etag);
	while (*p) {
		const char *e;
		size_t len;
		while (*p == ' ' || *p == ',')
			p++;
		if (!*p)
			break;
		if (*p == '*')
			return true;
		e = strchr(p, ',');
		len = e ? (size_t)(e - p) : strlen(p);
		while (len && p[len - 1] == ' ')
			len--;
		if (len > 2 && strncmp(p, "W/", 2) == 0) { /* weak tags compare by opaque value */
			p += 2;
			len -= 2;
		}
		if (len == n && strncmp(p, etag, n) == 0)
			return true;
		p = e ? e + 1 : p + strlen(p);
	}
	return false;
}

/* PATCH a ComputerSystem: Boot (Enabled, Target, Mode) and AssetTag are
 * writable.  Everything is validated first; any error answers 400 with one
 * message per problem and changes nothing. */
static void api_system_patch(lk_call *c, lk_reply *r)
{
	rf_server *s = c->srv;
	rf_system *y;
	json_t *body, *info = NULL, *boot, *v;
	const char *k, *im;
	char etag[64];
	bool changed = false;

	if (!(body = body_object(c, r)))
		return;
	pthread_mutex_lock(&s->lk.lock);
	if (!(y = find_system(s, c->param))) {
		reply_error(r, 404, M_MISSING_URI, c->path, NULL);
		goto done;
	}
	settle(s, y, lk_now_ms());
	etag_of(s, y, etag, sizeof(etag));
	im = MHD_lookup_connection_value(c->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_IF_MATCH);
	if (!im && s->require_etag) {
		reply_error(r, 428, M_PRECOND_REQUIRED, NULL);
		goto done;
	}
	if (im && !if_match(im, etag)) {
		s->precondition_failed++;
		reply_error(r, 412, M_PRECOND_FAILED, NULL);
		reply_etag(r, s, y);
		goto done;
	}

	info = json_array();
	if (json_object_size(body) == 0)
		info_add(info, M_EMPTY_JSON, NULL);
	json_object_foreach(body, k, v) {
		char text[128];
		if (strcmp(k, "Boot") == 0) {
			const char *bk;
			json_t *bv;
			if (!json_is_object(v)) {
				arg_text(v, text, sizeof(text));
				info_add(info, M_PROP_TYPE, text, "Boot", NULL);
				continue;
			}
			check_enum(v, "BootSourceOverrideEnabled", boot_enabled_values,
				   LK_ARRAY_SIZE(boot_enabled_values), info);
			check_enum(v, "BootSourceOverrideTarget", boot_target_values,
				   LK_ARRAY_SIZE(boot_target_values), info);
			check_enum(v, "BootSourceOverrideMode", boot_mode_values,
				   LK_ARRAY_SIZE(boot_mode_values), info);
			json_object_foreach(v, bk, bv) {
				char path[96];
				snprintf(path, sizeof(path), "Boot/%s", bk);
				if (strcmp(bk, "BootSourceOverrideEnabled") == 0 ||
				    strcmp(bk, "BootSourceOverrideTarget") == 0 ||
				    strcmp(bk, "BootSourceOverrideMode") == 0)
					continue;
				if (strstr(bk, "@Redfish.AllowableValues"))
					info_add(info, M_PROP_NOT_WRITABLE, path, NULL);
				else
					info_add(info, M_PROP_UNKNOWN, path, NULL);
			}
		} else if (strcmp(k, "AssetTag") == 0) {
			arg_text(v, text, sizeof(text));
			if (!json_is_string(v) || strlen(json_string_value(v)) >= sizeof(y->asset_tag))
				info_add(info, M_PROP_TYPE, text, "AssetTag", NULL);
		} else if (in_list(k, readonly_props, LK_ARRAY_SIZE(readonly_props))) {
			info_add(info, M_PROP_NOT_WRITABLE, k, NULL);
		} else if (k[0] != '@') { /* annotations are ignored */
			info_add(info, M_PROP_UNKNOWN, k, NULL);
		}
	}
	if (json_array_size(info) > 0) {
		reply_error_info(r, 400, info);
		info = NULL;
		goto done;
	}

	boot = json_object_get(body, "Boot");
	if ((v = json_object_get(boot, "BootSourceOverrideEnabled")) &&
	    strcmp(json_string_value(v), y->boot_enabled) != 0) {
		snprintf(y->boot_enabled, sizeof(y->boot_enabled), "%s", json_string_value(v));
		changed = true;
	}
	if ((v = json_object_get(boot, "BootSourceOverrideTarget")) &&
	    strcmp(json_string_value(v), y->boot_target) != 0) {
		snprintf(y->boot_target, sizeof(y->boot_target), "%s", json_string_value(v));
		changed = true;
	}
	if ((v = json_object_get(boot, "BootSourceOverrideMode")) &&
	    strcmp(json_string_value(v), y->boot_mode) != 0) {
		snprintf(y->boot_mode, sizeof(y->boot_mode), "%s", json_string_value(v));
		changed = true;
	}
	if ((v = json_object_get(body, "AssetTag")) &&
	    strcmp(json_string_value(v), y->asset_tag) != 0) {
		snprintf(y->asset_tag, sizeof(y->asset_tag), "%s", json_string_value(v));
		changed = true;
	}
	s->patches++;
	if (changed) {
		y->generation++;
		save_state(s);
		lk_log(&s->lk, "%s: PATCH: Boot override %s/%s (mode %s)", y->id, y->boot_enabled,
		       y->boot_target, y->boot_mode);
	}
	reply_system(r, 200, s, y);
done:
	pthread_mutex_unlock(&s->lk.lock);
	json_decref(info);
	json_decref(body);
}

/* POST .../Actions/ComputerSystem.Reset {"ResetType": ...}: accepted at
 * once (204); the PowerState changes after power_delay_ms. */
static void api_system_reset(lk_call *c, lk_reply *r)
{
	static const char action[] = "ComputerSystem.Reset";
	rf_server *s = c->srv;
	rf_system *y;
	json_t *body, *rt;
	const char *k, *type;
	json_t *v;
	char text[128];
	bool base_on, target_on, boots;

	if (!(body = body_object(c, r)))
		return;
	pthread_mutex_lock(&s->lk.lock);
	if (!(y = find_system(s, c->param))) {
		reply_error(r, 404, M_MISSING_URI, c->path, NULL);
		goto done;
	}
	json_object_foreach(body, k, v) {
		if (strcmp(k, "ResetType") != 0) {
			reply_error(r, 400, M_PARAM_UNKNOWN, action, k, NULL);
			goto done;
		}
	}
	if (!(rt = json_object_get(body, "ResetType"))) {
		reply_error(r, 400, M_PARAM_MISSING, action, "ResetType", NULL);
		goto done;
	}
	arg_text(rt, text, sizeof(text));
	if (!json_is_string(rt)) {
		reply_error(r, 400, M_PARAM_TYPE, text, "ResetType", action, NULL);
		goto done;
	}
	type = json_string_value(rt);
	if (!in_list(type, reset_types, LK_ARRAY_SIZE(reset_types))) {
		reply_error(r, 400, M_PARAM_NOT_IN_LIST, text, "ResetType", action, NULL);
		goto done;
	}

	settle(s, y, lk_now_ms());
	s->resets++;
	y->resets++;
	/* Where the system is heading: a reset during a transition acts on the
	 * transition's outcome. */
	base_on = y->pending ? y->pending_on : y->on;
	boots = false;
	if (!strcmp(type, "On") || !strcmp(type, "ForceOn")) {
		target_on = true;
		boots = !base_on;
	} else if (!strcmp(type, "ForceOff") || !strcmp(type, "GracefulShutdown")) {
		target_on = false;
	} else if (!strcmp(type, "PushPowerButton")) {
		target_on = !base_on;
		boots = target_on;
	} else if (!strcmp(type, "Nmi")) {
		target_on = base_on;
	} else { /* GracefulRestart, ForceRestart, PowerCycle: a boot either way */
		target_on = true;
		boots = true;
	}
	if (target_on == base_on && !boots) {
		lk_log(&s->lk, "%s: Reset %s accepted: already %s, nothing to do", y->id, type,
		       base_on ? "On" : "Off");
	} else {
		y->pending = true;
		y->pending_on = target_on;
		y->pending_boot = boots;
		snprintf(y->pending_type, sizeof(y->pending_type), "%s", type);
		y->due_ms = lk_now_ms() + s->power_delay_ms;
		lk_log(&s->lk, "%s: Reset %s accepted: PowerState %s -> %s in %ld ms", y->id, type,
		       y->on ? "On" : "Off", target_on ? "On" : "Off", s->power_delay_ms);
		save_state(s);
		settle(s, y, lk_now_ms()); /* a zero delay completes at once */
	}
	lk_reply_empty(r, 204);
	reply_odata(r);
done:
	pthread_mutex_unlock(&s->lk.lock);
	json_decref(body);
}

/* ---- the session service ---------------------------------------------- */

static json_t *session_json(const rf_session *se)
{
	char uri[96];
	snprintf(uri, sizeof(uri), "/redfish/v1/SessionService/Sessions/%s", se->id);
	return json_pack("{s:s, s:s, s:s, s:s, s:s}", "@odata.id", uri,
			 "@odata.type", "#Session.v1_3_0.Session", "Id", se->id,
			 "Name", "User Session", "UserName", se->user);
}

static void api_session_service(lk_call *c, lk_reply *r)
{
	(void)c;
	reply_json(r, 200, json_pack("{s:s, s:s, s:s, s:s, s:b, s:i, s:{s:s}}",
				     "@odata.id", "/redfish/v1/SessionService",
				     "@odata.type", "#SessionService.v1_1_8.SessionService",
				     "Id", "SessionService", "Name", "Session Service",
				     "ServiceEnabled", 1, "SessionTimeout", 1800,
				     "Sessions", "@odata.id", "/redfish/v1/SessionService/Sessions"));
	reply_odata(r);
}

static void api_sessions(lk_call *c, lk_reply *r)
{
	rf_server *s = c->srv;
	json_t *members = json_array();
	pthread_mutex_lock(&s->lk.lock);
	for (int i = 0; i < s->nsessions; i++) {
		char uri[96];
		snprintf(uri, sizeof(uri), "/redfish/v1/SessionService/Sessions/%s",
			 s->sessions[i].id);
		json_array_append_new(members, json_pack("{s:s}", "@odata.id", uri));
	}
	reply_json(r, 200, json_pack("{s:s, s:s, s:s, s:o, s:i}",
				     "@odata.id", "/redfish/v1/SessionService/Sessions",
				     "@odata.type", "#SessionCollection.SessionCollection",
				     "Name", "Session Collection", "Members", members,
				     "Members@odata.count", s->nsessions));
	pthread_mutex_unlock(&s->lk.lock);
	reply_odata(r);
}

/* POST Sessions {"UserName","Password"}: unauthenticated, like login. */
static void api_session_create(lk_call *c, lk_reply *r)
{
	rf_server *s = c->srv;
	json_t *body;
	const char *user, *pass;
	rf_session *se;

	if (!(body = body_object(c, r)))
		return;
	user = json_string_value(json_object_get(body, "UserName"));
	pass = json_string_value(json_object_get(body, "Password"));
	if (!user || !pass) {
		reply_error(r, 400, M_PARAM_MISSING, "Session", !user ? "UserName" : "Password", NULL);
		goto out;
	}
	pthread_mutex_lock(&s->lk.lock);
	if (s->user && (!lk_secret_equal(user, s->user) || !lk_secret_equal(pass, s->password))) {
		s->auth_failures++;
		reply_unauthorized(r);
	} else if (s->nsessions == RF_MAX_SESSIONS) {
		reply_error(r, 503, M_SESSION_LIMIT, NULL);
	} else {
		se = &s->sessions[s->nsessions++];
		snprintf(se->id, sizeof(se->id), "%llu", (unsigned long long)++s->session_seq);
		snprintf(se->token, sizeof(se->token), "%016llx%016llx",
			 (unsigned long long)lk_random_u64(), (unsigned long long)lk_random_u64());
		snprintf(se->user, sizeof(se->user), "%s", user);
		reply_json(r, 201, session_json(se));
		reply_odata(r);
		lk_reply_header(r, MHD_HTTP_HEADER_LOCATION,
				"/redfish/v1/SessionService/Sessions/%s", se->id);
		lk_reply_header(r, "X-Auth-Token", "%s", se->token);
	}
	pthread_mutex_unlock(&s->lk.lock);
out:
	json_decref(body);
}

static int find_session(const rf_server *s, const char *id)
{
	for (int i = 0; i < s->nsessions; i++)
		if (strcmp(s->sessions[i].id, id) == 0)
			return i;
	return -1;
}

static void api_session_get(lk_call *c, lk_reply *r)
{
	rf_server *s = c->srv;
	int i;
	pthread_mutex_lock(&s->lk.lock);
	if ((i = find_session(s, c->param)) < 0) {
		reply_error(r, 404, M_MISSING_URI, c->path, NULL);
	} else {
		reply_json(r, 200, session_json(&s->sessions[i]));
		reply_odata(r);
	}
	pthread_mutex_unlock(&s->lk.lock);
}

static void api_session_delete(lk_call *c, lk_reply *r)
{
	rf_server *s = c->srv;
	int i;
	pthread_mutex_lock(&s->lk.lock);
	if ((i = find_session(s, c->param)) < 0) {
		reply_error(r, 404, M_MISSING_URI, c->path, NULL);
	} else {
		s->sessions[i] = s->sessions[--s->nsessions];
		lk_reply_empty(r, 204);
		reply_odata(r);
	}
	pthread_mutex_unlock(&s->lk.lock);
}

/* The API route table.  A pattern's "{}" matches one path segment, which
 * the handler finds in c->param.  RF_AUTH: Basic or X-Auth-Token required. */
static const lk_route api_routes[] = {
	{ LK_GET, "/redfish", api_versions, 0 },
	{ LK_GET, "/redfish/v1", api_root, 0 },
	{ LK_GET, "/redfish/v1/Systems", api_systems, RF_AUTH },
	{ LK_GET, "/redfish/v1/Systems/{}", api_system_get, RF_AUTH },
	{ LK_PATCH, "/redfish/v1/Systems/{}", api_system_patch, RF_AUTH },
	{ LK_POST, "/redfish/v1/Systems/{}/Actions/ComputerSystem.Reset", api_system_reset,
	  RF_AUTH },
	{ LK_GET, "/redfish/v1/SessionService", api_session_service, RF_AUTH },
	{ LK_GET, "/redfish/v1/SessionService/Sessions", api_sessions, RF_AUTH },
	{ LK_POST, "/redfish/v1/SessionService/Sessions", api_session_create, 0 },
	{ LK_GET, "/redfish/v1/SessionService/Sessions/{}", api_session_get, RF_AUTH },
	{ LK_DELETE, "/redfish/v1/SessionService/Sessions/{}", api_session_delete, RF_AUTH },
};

/* Is the request authenticated (Basic with --user/--password, or the
 * X-Auth-Token of a live session)?  Caller holds srv->lk.lock. */
static bool authorized(rf_server *s, struct MHD_Connection *conn)
{
	const char *h, *tok;
	char plain[256], *colon;
	bool user_ok, password_ok;
	if (!s->user)
		return true;
	tok = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "X-Auth-Token");
	if (tok) {
		for (int i = 0; i < s->nsessions; i++)
			if (lk_secret_equal(tok, s->sessions[i].token))
				return true;
		return false;
	}
	h = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
	if (!h || strncasecmp(h, "Basic ", 6) != 0)
		return false;
	h += 6;
	while (*h == ' ')
		h++;
	if (!base64_decode(h, plain, sizeof(plain)) || !(colon = strchr(plain, ':')))
		return false;
	*colon = '\0';
	user_ok = lk_secret_equal(plain, s->user);
	password_ok = lk_secret_equal(colon + 1, s->password); /* compared either way */
	return user_ok && password_ok;
}

/* Authenticate c, counting a failure: false with a 401 in r. */
static bool authenticate(rf_server *s, lk_call *c, lk_reply *r)
{
	bool ok;
	pthread_mutex_lock(&s->lk.lock);
	if (!(ok = authorized(s, c->conn)))
		s->auth_failures++;
	pthread_mutex_unlock(&s->lk.lock);
	if (!ok)
		reply_unauthorized(r);
	return ok;
}

static void api_dispatch(lk_call *c, lk_reply *r)
{
	rf_server *s = c->srv;
	char allow[LK_ALLOW_MAX];
	const lk_route *rt = lk_route_find(api_routes, LK_ARRAY_SIZE(api_routes), c, c->path,
					   allow, sizeof(allow));
	if (rt) {
		if (!(rt->flags & RF_AUTH) || authenticate(s, c, r))
			rt->fn(c, r);
		return;
	}
	/* Beyond the service root, credentials come before 404 and 405: an
	 * anonymous client learns nothing about what exists. */
	if (strcmp(c->path, "/redfish") != 0 && strcmp(c->path, "/redfish/v1") != 0 &&
	    !authenticate(s, c, r))
		return;
	if (*allow) {
		reply_error(r, 405, M_NOT_ALLOWED, NULL);
		lk_reply_header(r, MHD_HTTP_HEADER_ALLOW, "%s", allow);
	} else {
		reply_error(r, 404, M_MISSING_URI, c->path, NULL);
	}
}

/* ---- control endpoints: /_stats, /_config, /_state --------------------- */

static json_t *config_json(const rf_server *s)
{
	const lk_faults *f = &s->lk.faults;
	return json_pack("{s:I, s:f, s:f, s:I, s:I, s:b, s:b, s:i}",
			 "latency_ms", (json_int_t)f->latency_ms,
			 "fail_rate", f->fail_rate,
			 "rate_429", f->rate_429,
			 "retry_after", (json_int_t)f->retry_after,
			 "power_delay_ms", (json_int_t)s->power_delay_ms,
			 "auth_required", s->user != NULL,
			 "require_etag", s->require_etag,
			 "systems", s->nsystems);
}

static void ctl_stats(lk_call *c, lk_reply *r)
{
	rf_server *s = c->srv;
	pthread_mutex_lock(&s->lk.lock);
	settle_all(s);
	reply_json(r, 200, json_pack("{s:o, s:o, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:i}",
				     "requests", lk_requests_json(&s->lk, true),
				     "responses", lk_responses_json(&s->lk),
				     "resets", (json_int_t)s->resets,
				     "patches", (json_int_t)s->patches,
				     "transitions", (json_int_t)s->transitions,
				     "stale_reads", (json_int_t)s->stale_reads,
				     "overrides_consumed", (json_int_t)s->overrides_consumed,
				     "precondition_failed", (json_int_t)s->precondition_failed,
				     "auth_failures", (json_int_t)s->auth_failures,
				     "in_flight", (json_int_t)s->lk.in_flight,
				     "max_in_flight", (json_int_t)s->lk.max_in_flight,
				     "sessions", s->nsessions));
	pthread_mutex_unlock(&s->lk.lock);
}

static void ctl_stats_reset(lk_call *c, lk_reply *r)
{
	rf_server *s = c->srv;
	pthread_mutex_lock(&s->lk.lock);
	lk_stats_reset(&s->lk);
	s->resets = s->patches = s->transitions = s->stale_reads = 0;
	s->overrides_consumed = s->precondition_failed = s->auth_failures = 0;
	pthread_mutex_unlock(&s->lk.lock);
	lk_reply_empty(r, 204);
}

static void ctl_config_get(lk_call *c, lk_reply *r)
{
	rf_server *s = c->srv;
	pthread_mutex_lock(&s->lk.lock);
	reply_json(r, 200, config_json(s));
	pthread_mutex_unlock(&s->lk.lock);
}

static void ctl_config_put(lk_call *c, lk_reply *r)
{
	rf_server *s = c->srv;
	lk_faults *f = &s->lk.faults;
	const lk_setting settings[] = {
		{ "latency_ms", 0, 3600000, &f->latency_ms, NULL },
		{ "fail_rate", 0, 1, NULL, &f->fail_rate },
		{ "rate_429", 0, 1, NULL, &f->rate_429 },
		{ "retry_after", 0, 86400, &f->retry_after, NULL },
		{ "power_delay_ms", 0, 3600000, &s->power_delay_ms, NULL },
	};
	json_t *body;
	char why[512];

	if (!(body = lk_body_object(c, NULL, NULL))) {
		lk_reply_problem(r, 400, NULL, "the request body must be a JSON object");
		return;
	}
	pthread_mutex_lock(&s->lk.lock);
	if (lk_settings_apply(body, settings, LK_ARRAY_SIZE(settings), why, sizeof(why)) != 0)
		lk_reply_problem(r, 400, NULL, "%s", why);
	else
		reply_json(r, 200, config_json(s));
	pthread_mutex_unlock(&s->lk.lock);
	json_decref(body);
}

/* Every system as the machine sees it, pending transition included. */
static void ctl_state(lk_call *c, lk_reply *r)
{
	rf_server *s = c->srv;
	json_t *systems = json_object();
	int64_t now;
	pthread_mutex_lock(&s->lk.lock);
	settle_all(s);
	now = lk_now_ms();
	for (int i = 0; i < s->nsystems; i++) {
		rf_system *y = &s->systems[i];
		char etag[64];
		json_t *pending = json_null();
		etag_of(s, y, etag, sizeof(etag));
		if (y->pending)
			pending = json_pack("{s:s, s:s, s:b, s:I}", "PowerState",
					    y->pending_on ? "On" : "Off", "ResetType", y->pending_type,
					    "boots", y->pending_boot,
					    "due_in_ms", (json_int_t)(y->due_ms - now));
		json_object_set_new(systems, y->id, json_pack(
			"{s:s, s:s, s:o, s:{s:s, s:s, s:s}, s:s, s:I, s:I, s:I}",
			"@odata.id", y->uri, "PowerState", y->on ? "On" : "Off",
			"pending", pending,
			"Boot", "BootSourceOverrideEnabled", y->boot_enabled,
			"BootSourceOverrideTarget", y->boot_target,
			"BootSourceOverrideMode", y->boot_mode,
			"etag", etag, "resets", (json_int_t)y->resets, "boots", (json_int_t)y->boots,
			"stale_reads", (json_int_t)y->stale_reads));
	}
	reply_json(r, 200, json_pack("{s:o}", "systems", systems));
	pthread_mutex_unlock(&s->lk.lock);
}

static const lk_route ctl_routes[] = {
	{ LK_GET, "/_stats", ctl_stats, 0 },
	{ LK_POST, "/_stats/reset", ctl_stats_reset, 0 },
	{ LK_GET, "/_config", ctl_config_get, 0 },
	{ LK_PUT, "/_config", ctl_config_put, 0 },
	{ LK_GET, "/_state", ctl_state, 0 },
};

/* ---- request handling ------------------------------------------------- */

/* Every request: a control endpoint, or an API request (counted, delayed,
 * maybe failed, then routed). */
static void handle(lk_call *c, lk_reply *r)
{
	rf_server *s = c->srv;
	long retry_after;
	int fault;

	if (strncmp(c->path, "/_", 2) == 0) {
		if (c->too_large)
			lk_reply_problem(r, 400, NULL, "the request body exceeds %d bytes",
					 RF_MAX_BODY);
		else
			lk_route_dispatch(ctl_routes, LK_ARRAY_SIZE(ctl_routes), c, c->path, r, 0);
		return;
	}
	fault = lk_api_begin(&s->lk, c->method, &retry_after);
	if (fault == 429) {
		char sec[24];
		snprintf(sec, sizeof(sec), "%ld", retry_after);
		reply_error(r, 429, M_UNAVAILABLE, sec, NULL);
		lk_reply_header(r, MHD_HTTP_HEADER_RETRY_AFTER, "%ld", retry_after);
	} else if (fault == 503) {
		reply_error(r, 503, M_UNAVAILABLE, "0", NULL);
	} else if (fault) {
		reply_error(r, 500, M_INTERNAL, NULL);
	} else if (c->too_large) {
		reply_error(r, 413, M_TOO_LARGE, NULL);
	} else {
		api_dispatch(c, r);
	}
	lk_api_end(&s->lk, r->status);
}

/* ---- command line ----------------------------------------------------- */

enum { O_SYSTEMS = LK_OPT_OWN, O_IDS, O_POWER, O_DELAY, O_USER, O_PASSWORD, O_ETAG, O_STATE };

/* What the command line sets beyond lk's options. */
typedef struct {
	rf_server *srv;
	long nsystems;
	bool numeric, on;
} rf_options;

static void usage(FILE *f)
{
	fputs("usage: redfish [options]\n"
	      "An in-memory DMTF Redfish service (a BMC) with N computer systems.\n"
	      "\n"
	      "  --listen HOST:PORT        address to listen on (default 127.0.0.1:0, a free port)\n"
	      "  --port-file FILE          write the bound port to FILE once listening\n"
	      "  --systems N               number of systems (default 1, at most 1024)\n"
	      "  --system-ids STYLE        'embedded' (System.Embedded.1, ...) or 'numeric'\n"
	      "                            (1, 2, ...) (default embedded)\n"
	      "  --power-state STATE       initial PowerState of every system: On or Off\n"
	      "                            (default Off)\n"
	      "  --power-delay-ms N        a power transition completes N ms after the Reset\n"
	      "                            (default 0)\n"
	      "  --user U, --password P    require HTTP Basic auth (or a session) as U:P\n"
	      "  --require-etag            refuse a PATCH without If-Match (428)\n"
	      "  --latency-ms N            delay every API request by N ms (default 0)\n"
	      "  --fail-rate F             answer a fraction F of API requests 500/503 (default 0)\n"
	      "  --rate-429 F              answer a fraction F of API requests 429 (default 0)\n"
	      "  --retry-after S           Retry-After seconds sent with 429 (default 1)\n"
	      "  --seed N                  seed of the fault RNG (default: random)\n"
	      "  --state-file FILE         keep the systems' state in FILE across restarts\n"
	      "  --help                    show this help\n"
	      "\n"
	      "See examples/lab/README.md for the API.\n", f);
}

static bool own_option(void *cls, int opt, const char *arg)
{
	rf_options *o = cls;
	rf_server *s = o->srv;
	switch (opt) {
	case O_SYSTEMS:
		return lk_parse_long(arg, 1, RF_MAX_SYSTEMS, &o->nsystems);
	case O_IDS:
		o->numeric = !strcmp(arg, "numeric");
		return o->numeric || !strcmp(arg, "embedded");
	case O_POWER:
		o->on = !strcmp(arg, "On");
		return o->on || !strcmp(arg, "Off");
	case O_DELAY:
		return lk_parse_long(arg, 0, 3600000, &s->power_delay_ms);
	case O_USER:
		s->user = arg;
		return *arg && !strchr(arg, ':');
	case O_PASSWORD:
		s->password = arg;
		return true;
	case O_ETAG:
		s->require_etag = true;
		return true;
	case O_STATE:
		s->state_file = arg;
		return *arg != '\0';
	default:
		return false;
	}
}

/* The systems: ids per style, every one in the same initial state. */
static int make_systems(rf_server *s, long n, bool numeric, bool on)
{
	if (!(s->systems = calloc((size_t)n, sizeof(*s->systems))))
		return -1;
	s->nsystems = (int)n;
	for (int i = 0; i < s->nsystems; i++) {
		rf_system *y = &s->systems[i];
		if (numeric)
			snprintf(y->id, sizeof(y->id), "%d", i + 1);
		else
			snprintf(y->id, sizeof(y->id), "System.Embedded.%d", i + 1);
		snprintf(y->uri, sizeof(y->uri), "/redfish/v1/Systems/%s", y->id);
		uuid_from(lk_random_u64(), lk_random_u64(), y->uuid, sizeof(y->uuid));
		snprintf(y->serial, sizeof(y->serial), "LAB%06d", i + 1);
		y->on = on;
		snprintf(y->boot_enabled, sizeof(y->boot_enabled), "Disabled");
		snprintf(y->boot_target, sizeof(y->boot_target), "None");
		snprintf(y->boot_mode, sizeof(y->boot_mode), "UEFI");
		y->generation = 1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		LK_OPTIONS_BASE,
		{ "systems", required_argument, NULL, O_SYSTEMS },
		{ "system-ids", required_argument, NULL, O_IDS },
		{ "power-state", required_argument, NULL, O_POWER },
		{ "power-delay-ms", required_argument, NULL, O_DELAY },
		{ "user", required_argument, NULL, O_USER },
		{ "password", required_argument, NULL, O_PASSWORD },
		{ "require-etag", no_argument, NULL, O_ETAG },
		LK_OPTIONS_FAULTS,
		{ "state-file", required_argument, NULL, O_STATE },
		{ NULL, 0, NULL, 0 },
	};
	static rf_server srv;
	rf_options o = { .srv = &srv, .nsystems = 1 };
	char what[32];
	int rc;

	lk_init(&srv.lk, "redfish");
	srv.lk.max_body = RF_MAX_BODY;
	srv.lk.max_connections = 1024;
	srv.lk.thread_stack = RF_THREAD_STACK;
	srv.lk.timeout_s = 120;
	if ((rc = lk_parse_args(&srv.lk, argc, argv, opts, own_option, &o, usage)) >= 0)
		return rc;
	if (!srv.user != !srv.password) {
		fprintf(stderr, "redfish: --user and --password go together\n");
		return 2;
	}
	if (lk_resolve(&srv.lk) != 0)
		return 2;

	rc = 1;
	snprintf(srv.instance, sizeof(srv.instance), "%08llx",
		 (unsigned long long)(lk_random_u64() & 0xffffffffULL));
	uuid_from(lk_random_u64(), lk_random_u64(), srv.service_uuid, sizeof(srv.service_uuid));
	if (make_systems(&srv, o.nsystems, o.numeric, o.on) != 0) {
		fprintf(stderr, "redfish: out of memory\n");
	} else if (!srv.state_file || load_state(&srv) == 0) {
		snprintf(what, sizeof(what), " (%d systems)", srv.nsystems);
		rc = lk_run(&srv.lk, handle, &srv, what);
	}
	lk_free(&srv.lk);
	free(srv.systems);
	return rc;
}
