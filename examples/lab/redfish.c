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
 * only.  See examples/lab/README.md.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <jansson.h>
#include <limits.h>
#include <microhttpd.h>
#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define RF_MAX_BODY (64 * 1024)      /* larger request bodies get 413 */
#define RF_MAX_SYSTEMS 1024
#define RF_MAX_SESSIONS 64
#define RF_MAX_CONNECTIONS 1024
#define RF_THREAD_STACK (512 * 1024)
#define RF_REGISTRY "Base.1.16.0"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

typedef enum {
	RF_GET, RF_HEAD, RF_POST, RF_PUT, RF_PATCH, RF_DELETE, RF_OTHER,
	RF_METHOD_COUNT
} rf_method;

static const char *const method_names[RF_METHOD_COUNT] = {
	"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OTHER",
};

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

/* Behaviour that PUT /_config can change at run time. */
typedef struct {
	long latency_ms;
	double fail_rate;
	double rate_429;
	long retry_after;
	long power_delay_ms;
} rf_config;

typedef struct {
	pthread_mutex_t lock;        /* guards everything below */
	rf_config cfg;
	uint64_t rng;                /* fault RNG (xorshift64*) */
	uint64_t requests[RF_METHOD_COUNT];
	uint64_t responses[600];
	uint64_t resets, patches, transitions, stale_reads, overrides_consumed;
	uint64_t precondition_failed, auth_failures;
	long in_flight, max_in_flight;

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

/* One request's upload, kept across libmicrohttpd's calls. */
typedef struct {
	char *body;
	size_t len, cap;
	bool too_large;
} rf_upload;

/* What a handler sees of a request. */
typedef struct {
	rf_server *srv;
	struct MHD_Connection *conn;
	rf_method method;
	const char *path;            /* without a trailing slash */
	char param[128];             /* the {} segment of the route, if any */
	const char *body;
	size_t body_len;
} rf_call;

/* What a handler answers; reply_send() turns it into a response. */
typedef struct {
	int status;
	char *body;                  /* malloc'd JSON text, or NULL */
	const char *content_type;
	char *location;              /* malloc'd, or NULL */
	char etag[64];               /* "" or the ETag header */
	char auth_token[40];         /* "" or X-Auth-Token */
	long retry_after;            /* >= 0: send Retry-After */
	char allow[64];              /* "" or the Allow header */
	bool www_auth;               /* 401: WWW-Authenticate */
	bool odata;                  /* a Redfish answer: OData-Version */
} rf_reply;

typedef void (*rf_handler)(rf_call *c, rf_reply *r);

/* ---- small helpers ---------------------------------------------------- */

static uint64_t mix64(uint64_t z)
{
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

/* Uniform in [0, 1).  Caller holds srv->lock. */
static double rng_next(rf_server *s)
{
	uint64_t x = s->rng;
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	s->rng = x;
	return (double)((x * 0x2545f4914f6cdd1dULL) >> 11) / 9007199254740992.0;
}

static uint64_t random_u64(void)
{
	uint64_t v = 0;
	if (getrandom(&v, sizeof(v), 0) != (ssize_t)sizeof(v)) {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		v = ((uint64_t)ts.tv_sec << 32) ^ (uint64_t)ts.tv_nsec ^ (uint64_t)getpid();
	}
	return v;
}

static void uuid_from(uint64_t a, uint64_t b, char *out, size_t n)
{
	snprintf(out, n, "%08x-%04x-4%03x-8%03x-%012llx", (unsigned)(a >> 32),
		 (unsigned)(a >> 16) & 0xffff, (unsigned)a & 0xfff, (unsigned)(b >> 48) & 0xfff,
		 (unsigned long long)(b & 0xffffffffffffULL));
}

/* Wall-clock milliseconds: due times are saved in --state-file. */
static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

/* One event on stdout: "redfish: <text>", flushed, so a test can follow
 * what the machines did. */
static void logf_event(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void logf_event(const char *fmt, ...)
{
	char ts[32];
	struct timespec t;
	struct tm tm;
	va_list ap;
	clock_gettime(CLOCK_REALTIME, &t);
	gmtime_r(&t.tv_sec, &tm);
	strftime(ts, sizeof(ts), "%H:%M:%S", &tm);
	flockfile(stdout);
	printf("%s.%03ld redfish: ", ts, t.tv_nsec / 1000000L);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
	fflush(stdout);
	funlockfile(stdout);
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

/* Compare without an early exit on the first difference. */
static bool secret_equal(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);
	unsigned char diff = la != lb;
	for (size_t i = 0; i < la; i++)
		diff |= (unsigned char)(a[i] ^ b[lb ? i % lb : 0]);
	return diff == 0;
}

/* ---- replies ---------------------------------------------------------- */

/* Answer status with j (stolen) as the body; serialises j now, so call it
 * while holding the lock that guards what j was built from. */
static void reply_json(rf_reply *r, int status, json_t *j)
{
	r->status = status;
	r->content_type = "application/json; charset=utf-8";
	free(r->body);
	r->body = j ? json_dumps(j, JSON_COMPACT) : NULL;
	json_decref(j);
	if (!r->body)
		r->status = 500;
}

static void reply_empty(rf_reply *r, int status)
{
	r->status = status;
	free(r->body);
	r->body = NULL;
}

/* A Message object of the Base registry; args: the %1, %2, %3
 * substitutions, NULL-terminated. */
static json_t *message_v(rf_msg m, va_list ap)
{
	const char *args[4] = { NULL };
	json_t *margs = json_array();
	char text[1024], id[96];
	size_t n = 0, o = 0;
	for (const char *a; n < ARRAY_SIZE(args) && (a = va_arg(ap, const char *)); n++) {
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
static void reply_error_info(rf_reply *r, int status, json_t *info)
{
	const char *code = RF_REGISTRY ".GeneralError", *msg = messages[M_GENERAL].text;
	if (json_array_size(info) == 1) {
		code = json_string_value(json_object_get(json_array_get(info, 0), "MessageId"));
		msg = json_string_value(json_object_get(json_array_get(info, 0), "Message"));
	}
	reply_json(r, status, json_pack("{s:{s:s, s:s, s:o}}", "error", "code", code,
					"message", msg, "@Message.ExtendedInfo", info));
	r->odata = true;
}

/* Answer a Redfish error with one message. */
static void reply_error(rf_reply *r, int status, rf_msg m, ...)
{
	json_t *info = json_array();
	va_list ap;
	va_start(ap, m);
	json_array_append_new(info, message_v(m, ap));
	va_end(ap);
	reply_error_info(r, status, info);
}

/* Answer an RFC 7807 problem (the control endpoints). */
static void reply_problem(rf_reply *r, int status, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void reply_problem(rf_reply *r, int status, const char *fmt, ...)
{
	char detail[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(detail, sizeof(detail), fmt, ap);
	va_end(ap);
	reply_json(r, status, json_pack("{s:s, s:s, s:i, s:s}", "type", "about:blank",
					"title", status == 404 ? "Not Found" : status == 405
					? "Method Not Allowed" : "Bad Request",
					"status", status, "detail", detail));
	r->content_type = "application/problem+json";
}

/* Queue r on conn and release what r holds. */
static enum MHD_Result reply_send(struct MHD_Connection *conn, rf_reply *r)
{
	struct MHD_Response *resp;
	enum MHD_Result ret;
	bool has_body = r->body != NULL;
	char num[32];

	if (has_body) {
		resp = MHD_create_response_from_buffer_with_free_callback(
			strlen(r->body), r->body, free);
		if (resp)
			r->body = NULL;
	} else {
		resp = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
	}
	if (!resp) {
		free(r->body);
		free(r->location);
		return MHD_NO;
	}
	if (has_body && r->content_type)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, r->content_type);
	if (r->odata)
		MHD_add_response_header(resp, "OData-Version", "4.0");
	if (r->location)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_LOCATION, r->location);
	if (r->etag[0])
		MHD_add_response_header(resp, MHD_HTTP_HEADER_ETAG, r->etag);
	if (r->auth_token[0])
		MHD_add_response_header(resp, "X-Auth-Token", r->auth_token);
	if (r->retry_after >= 0) {
		snprintf(num, sizeof(num), "%ld", r->retry_after);
		MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER, num);
	}
	if (r->allow[0])
		MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, r->allow);
	if (r->www_auth)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE,
					"Basic realm=\"Redfish\"");
	ret = MHD_queue_response(conn, (unsigned)r->status, resp);
	MHD_destroy_response(resp);
	free(r->location);
	r->location = NULL;
	return ret;
}

/* The request body as a JSON object (new reference), or NULL with a 400
 * in r. */
static json_t *body_object(const rf_call *c, rf_reply *r)
{
	json_t *j;
	if (c->body_len == 0 || !(j = json_loadb(c->body, c->body_len, 0, NULL))) {
		reply_error(r, 400, M_MALFORMED_JSON, NULL);
		return NULL;
	}
	if (!json_is_object(j)) {
		json_decref(j);
		reply_error(r, 400, M_MALFORMED_JSON, NULL);
		return NULL;
	}
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
 * holds srv->lock. */
static void save_state(rf_server *s)
{
	json_t *root, *arr;
	char tmp[PATH_MAX];
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
	snprintf(tmp, sizeof(tmp), "%s.tmp", s->state_file);
	if (!root || json_dump_file(root, tmp, JSON_COMPACT) != 0 || rename(tmp, s->state_file) != 0)
		fprintf(stderr, "redfish: cannot save %s: %s\n", s->state_file, strerror(errno));
	json_decref(root);
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
 * system consumes a one-time boot override.  Caller holds srv->lock. */
static void settle(rf_server *s, rf_system *y, int64_t now)
{
	if (!y->pending || now < y->due_ms)
		return;
	y->pending = false;
	y->on = y->pending_on;
	y->generation++;
	s->transitions++;
	logf_event("%s: PowerState %s (%s completed)", y->id, y->on ? "On" : "Off",
		   y->pending_type);
	if (y->on && y->pending_boot) {
		y->boots++;
		if (strcmp(y->boot_enabled, "Once") == 0) {
			snprintf(y->boot_enabled, sizeof(y->boot_enabled), "Disabled");
			s->overrides_consumed++;
			logf_event("%s: booted from %s; one-time boot override consumed "
				   "(BootSourceOverrideEnabled Disabled)", y->id, y->boot_target);
		} else {
			logf_event("%s: booted (%s%s)", y->id,
				   strcmp(y->boot_enabled, "Continuous") == 0 ? "override " : "",
				   strcmp(y->boot_enabled, "Continuous") == 0 ? y->boot_target
									       : "default boot order");
		}
	}
	save_state(s);
}

static void settle_all(rf_server *s)
{
	int64_t now = now_ms();
	for (int i = 0; i < s->nsystems; i++)
		settle(s, &s->systems[i], now);
}

static void etag_of(const rf_server *s, const rf_system *y, char *out, size_t n)
{
	snprintf(out, n, "\"%s-%llu\"", s->instance, (unsigned long long)y->generation);
}

/* The ComputerSystem resource.  Caller holds srv->lock. */
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
		string_array(boot_enabled_values, ARRAY_SIZE(boot_enabled_values)),
		"BootSourceOverrideTarget", y->boot_target,
		"BootSourceOverrideTarget@Redfish.AllowableValues",
		string_array(boot_target_values, ARRAY_SIZE(boot_target_values)),
		"BootSourceOverrideMode", y->boot_mode,
		"BootSourceOverrideMode@Redfish.AllowableValues",
		string_array(boot_mode_values, ARRAY_SIZE(boot_mode_values)),
		"Actions", "#ComputerSystem.Reset", "target", target,
		"ResetType@Redfish.AllowableValues", string_array(reset_types, ARRAY_SIZE(reset_types)));
}

/* Answer y with its ETag.  Caller holds srv->lock. */
static void reply_system(rf_reply *r, int status, const rf_server *s, const rf_system *y)
{
	reply_json(r, status, system_json(s, y));
	r->odata = true;
	etag_of(s, y, r->etag, sizeof(r->etag));
	snprintf(r->allow, sizeof(r->allow), "GET, HEAD, PATCH");
}

/* ---- the API ---------------------------------------------------------- */

static void api_versions(rf_call *c, rf_reply *r)
{
	(void)c;
	reply_json(r, 200, json_pack("{s:s}", "v1", "/redfish/v1/"));
	r->odata = true;
}

static void api_root(rf_call *c, rf_reply *r)
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
	r->odata = true;
}

static void api_systems(rf_call *c, rf_reply *r)
{
	rf_server *s = c->srv;
	json_t *members = json_array();
	pthread_mutex_lock(&s->lock);
	for (int i = 0; i < s->nsystems; i++)
		json_array_append_new(members, json_pack("{s:s}", "@odata.id", s->systems[i].uri));
	reply_json(r, 200, json_pack("{s:s, s:s, s:s, s:o, s:i}",
				     "@odata.id", "/redfish/v1/Systems",
				     "@odata.type", "#ComputerSystemCollection.ComputerSystemCollection",
				     "Name", "Computer System Collection",
				     "Members", members, "Members@odata.count", s->nsystems));
	pthread_mutex_unlock(&s->lock);
	r->odata = true;
}

static void api_system_get(rf_call *c, rf_reply *r)
{
	rf_server *s = c->srv;
	rf_system *y;
	pthread_mutex_lock(&s->lock);
	if (!(y = find_system(s, c->param))) {
		reply_error(r, 404, M_MISSING_URI, c->path, NULL);
	} else {
		settle(s, y, now_ms());
		if (y->pending) {
			/* the transition is not visible yet: the old state is reported */
			y->stale_reads++;
			s->stale_reads++;
		}
		reply_system(r, 200, s, y);
	}
	pthread_mutex_unlock(&s->lock);
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
static void api_system_patch(rf_call *c, rf_reply *r)
{
	rf_server *s = c->srv;
	rf_system *y;
	json_t *body, *info = NULL, *boot, *v;
	const char *k, *im;
	char etag[64];
	bool changed = false;

	if (!(body = body_object(c, r)))
		return;
	pthread_mutex_lock(&s->lock);
	if (!(y = find_system(s, c->param))) {
		reply_error(r, 404, M_MISSING_URI, c->path, NULL);
		goto done;
	}
	settle(s, y, now_ms());
	etag_of(s, y, etag, sizeof(etag));
	im = MHD_lookup_connection_value(c->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_IF_MATCH);
	if (!im && s->require_etag) {
		reply_error(r, 428, M_PRECOND_REQUIRED, NULL);
		goto done;
	}
	if (im && !if_match(im, etag)) {
		s->precondition_failed++;
		reply_error(r, 412, M_PRECOND_FAILED, NULL);
		etag_of(s, y, r->etag, sizeof(r->etag));
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
				   ARRAY_SIZE(boot_enabled_values), info);
			check_enum(v, "BootSourceOverrideTarget", boot_target_values,
				   ARRAY_SIZE(boot_target_values), info);
			check_enum(v, "BootSourceOverrideMode", boot_mode_values,
				   ARRAY_SIZE(boot_mode_values), info);
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
		} else if (in_list(k, readonly_props, ARRAY_SIZE(readonly_props))) {
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
		logf_event("%s: PATCH: Boot override %s/%s (mode %s)", y->id, y->boot_enabled,
			   y->boot_target, y->boot_mode);
	}
	reply_system(r, 200, s, y);
done:
	pthread_mutex_unlock(&s->lock);
	json_decref(info);
	json_decref(body);
}

/* POST .../Actions/ComputerSystem.Reset {"ResetType": ...}: accepted at
 * once (204); the PowerState changes after power_delay_ms. */
static void api_system_reset(rf_call *c, rf_reply *r)
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
	pthread_mutex_lock(&s->lock);
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
	if (!in_list(type, reset_types, ARRAY_SIZE(reset_types))) {
		reply_error(r, 400, M_PARAM_NOT_IN_LIST, text, "ResetType", action, NULL);
		goto done;
	}

	settle(s, y, now_ms());
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
		logf_event("%s: Reset %s accepted: already %s, nothing to do", y->id, type,
			   base_on ? "On" : "Off");
	} else {
		y->pending = true;
		y->pending_on = target_on;
		y->pending_boot = boots;
		snprintf(y->pending_type, sizeof(y->pending_type), "%s", type);
		y->due_ms = now_ms() + s->cfg.power_delay_ms;
		logf_event("%s: Reset %s accepted: PowerState %s -> %s in %ld ms", y->id, type,
			   y->on ? "On" : "Off", target_on ? "On" : "Off", s->cfg.power_delay_ms);
		save_state(s);
		settle(s, y, now_ms()); /* a zero delay completes at once */
	}
	reply_empty(r, 204);
	r->odata = true;
done:
	pthread_mutex_unlock(&s->lock);
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

static void api_session_service(rf_call *c, rf_reply *r)
{
	(void)c;
	reply_json(r, 200, json_pack("{s:s, s:s, s:s, s:s, s:b, s:i, s:{s:s}}",
				     "@odata.id", "/redfish/v1/SessionService",
				     "@odata.type", "#SessionService.v1_1_8.SessionService",
				     "Id", "SessionService", "Name", "Session Service",
				     "ServiceEnabled", 1, "SessionTimeout", 1800,
				     "Sessions", "@odata.id", "/redfish/v1/SessionService/Sessions"));
	r->odata = true;
}

static void api_sessions(rf_call *c, rf_reply *r)
{
	rf_server *s = c->srv;
	json_t *members = json_array();
	pthread_mutex_lock(&s->lock);
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
	pthread_mutex_unlock(&s->lock);
	r->odata = true;
}

/* POST Sessions {"UserName","Password"}: unauthenticated, like login. */
static void api_session_create(rf_call *c, rf_reply *r)
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
	pthread_mutex_lock(&s->lock);
	if (s->user && (!secret_equal(user, s->user) || !secret_equal(pass, s->password))) {
		s->auth_failures++;
		reply_error(r, 401, M_NO_SESSION, NULL);
		r->www_auth = true;
	} else if (s->nsessions == RF_MAX_SESSIONS) {
		reply_error(r, 503, M_SESSION_LIMIT, NULL);
	} else {
		se = &s->sessions[s->nsessions++];
		snprintf(se->id, sizeof(se->id), "%llu", (unsigned long long)++s->session_seq);
		snprintf(se->token, sizeof(se->token), "%016llx%016llx",
			 (unsigned long long)random_u64(), (unsigned long long)random_u64());
		snprintf(se->user, sizeof(se->user), "%s", user);
		reply_json(r, 201, session_json(se));
		r->odata = true;
		snprintf(r->auth_token, sizeof(r->auth_token), "%s", se->token);
		if ((r->location = malloc(96)))
			snprintf(r->location, 96, "/redfish/v1/SessionService/Sessions/%s", se->id);
	}
	pthread_mutex_unlock(&s->lock);
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

static void api_session_get(rf_call *c, rf_reply *r)
{
	rf_server *s = c->srv;
	int i;
	pthread_mutex_lock(&s->lock);
	if ((i = find_session(s, c->param)) < 0) {
		reply_error(r, 404, M_MISSING_URI, c->path, NULL);
	} else {
		reply_json(r, 200, session_json(&s->sessions[i]));
		r->odata = true;
	}
	pthread_mutex_unlock(&s->lock);
}

static void api_session_delete(rf_call *c, rf_reply *r)
{
	rf_server *s = c->srv;
	int i;
	pthread_mutex_lock(&s->lock);
	if ((i = find_session(s, c->param)) < 0) {
		reply_error(r, 404, M_MISSING_URI, c->path, NULL);
	} else {
		s->sessions[i] = s->sessions[--s->nsessions];
		reply_empty(r, 204);
		r->odata = true;
	}
	pthread_mutex_unlock(&s->lock);
}

/* The API route table.  A pattern's "{}" matches one path segment, which
 * the handler finds in c->param.  auth: Basic or X-Auth-Token required. */
static const struct {
	rf_method method;
	const char *pattern;
	bool auth;
	rf_handler fn;
} api_routes[] = {
	{ RF_GET, "/redfish", false, api_versions },
	{ RF_GET, "/redfish/v1", false, api_root },
	{ RF_GET, "/redfish/v1/Systems", true, api_systems },
	{ RF_GET, "/redfish/v1/Systems/{}", true, api_system_get },
	{ RF_PATCH, "/redfish/v1/Systems/{}", true, api_system_patch },
	{ RF_POST, "/redfish/v1/Systems/{}/Actions/ComputerSystem.Reset", true, api_system_reset },
	{ RF_GET, "/redfish/v1/SessionService", true, api_session_service },
	{ RF_GET, "/redfish/v1/SessionService/Sessions", true, api_sessions },
	{ RF_POST, "/redfish/v1/SessionService/Sessions", false, api_session_create },
	{ RF_GET, "/redfish/v1/SessionService/Sessions/{}", true, api_session_get },
	{ RF_DELETE, "/redfish/v1/SessionService/Sessions/{}", true, api_session_delete },
};

/* Does path match pattern?  The "{}" segment goes to param. */
static bool route_match(const char *pattern, const char *path, char *param, size_t cap)
{
	while (*pattern && *path) {
		if (pattern[0] == '{' && pattern[1] == '}') {
			size_t n = strcspn(path, "/");
			if (n == 0 || n >= cap)
				return false;
			memcpy(param, path, n);
			param[n] = '\0';
			path += n;
			pattern += 2;
		} else if (*pattern++ != *path++) {
			return false;
		}
	}
	return !*pattern && !*path;
}

/* Is the request authenticated (Basic with --user/--password, or the
 * X-Auth-Token of a live session)?  Caller holds srv->lock. */
static bool authorized(rf_server *s, struct MHD_Connection *conn)
{
	const char *h, *tok;
	char plain[256], *colon;
	if (!s->user)
		return true;
	tok = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "X-Auth-Token");
	if (tok) {
		for (int i = 0; i < s->nsessions; i++)
			if (secret_equal(tok, s->sessions[i].token))
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
	return secret_equal(plain, s->user) & secret_equal(colon + 1, s->password);
}

static void api_dispatch(rf_call *c, rf_reply *r)
{
	rf_server *s = c->srv;
	char allow[64] = "";
	bool ok;
	for (size_t i = 0; i < ARRAY_SIZE(api_routes); i++) {
		if (!route_match(api_routes[i].pattern, c->path, c->param, sizeof(c->param)))
			continue;
		if (api_routes[i].method == c->method ||
		    (api_routes[i].method == RF_GET && c->method == RF_HEAD)) {
			if (api_routes[i].auth) {
				pthread_mutex_lock(&s->lock);
				if (!(ok = authorized(s, c->conn)))
					s->auth_failures++;
				pthread_mutex_unlock(&s->lock);
				if (!ok) {
					reply_error(r, 401, M_NO_SESSION, NULL);
					r->www_auth = true;
					return;
				}
			}
			api_routes[i].fn(c, r);
			return;
		}
		/* the path exists, not with this method: collect Allow */
		snprintf(allow + strlen(allow), sizeof(allow) - strlen(allow), "%s%s%s",
			 *allow ? ", " : "", method_names[api_routes[i].method],
			 api_routes[i].method == RF_GET ? ", HEAD" : "");
	}
	/* Beyond the service root, credentials come before 404 and 405: an
	 * anonymous client learns nothing about what exists. */
	if (strcmp(c->path, "/redfish") != 0 && strcmp(c->path, "/redfish/v1") != 0) {
		pthread_mutex_lock(&s->lock);
		if (!(ok = authorized(s, c->conn)))
			s->auth_failures++;
		pthread_mutex_unlock(&s->lock);
		if (!ok) {
			reply_error(r, 401, M_NO_SESSION, NULL);
			r->www_auth = true;
			return;
		}
	}
	if (*allow) {
		reply_error(r, 405, M_NOT_ALLOWED, NULL);
		snprintf(r->allow, sizeof(r->allow), "%s", allow);
	} else {
		reply_error(r, 404, M_MISSING_URI, c->path, NULL);
	}
}

/* ---- control endpoints: /_stats, /_config, /_state --------------------- */

static json_t *config_json(const rf_server *s)
{
	return json_pack("{s:I, s:f, s:f, s:I, s:I, s:b, s:b, s:i}",
			 "latency_ms", (json_int_t)s->cfg.latency_ms,
			 "fail_rate", s->cfg.fail_rate,
			 "rate_429", s->cfg.rate_429,
			 "retry_after", (json_int_t)s->cfg.retry_after,
			 "power_delay_ms", (json_int_t)s->cfg.power_delay_ms,
			 "auth_required", s->user != NULL,
			 "require_etag", s->require_etag,
			 "systems", s->nsystems);
}

static void ctl_stats(rf_call *c, rf_reply *r)
{
	rf_server *s = c->srv;
	json_t *req = json_object(), *resp = json_object();
	char code[16];
	pthread_mutex_lock(&s->lock);
	settle_all(s);
	for (int i = 0; i < RF_METHOD_COUNT; i++)
		json_object_set_new(req, method_names[i], json_integer((json_int_t)s->requests[i]));
	for (int i = 0; i < (int)ARRAY_SIZE(s->responses); i++) {
		if (s->responses[i]) {
			snprintf(code, sizeof(code), "%d", i);
			json_object_set_new(resp, code, json_integer((json_int_t)s->responses[i]));
		}
	}
	reply_json(r, 200, json_pack("{s:o, s:o, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:i}",
				     "requests", req, "responses", resp,
				     "resets", (json_int_t)s->resets,
				     "patches", (json_int_t)s->patches,
				     "transitions", (json_int_t)s->transitions,
				     "stale_reads", (json_int_t)s->stale_reads,
				     "overrides_consumed", (json_int_t)s->overrides_consumed,
				     "precondition_failed", (json_int_t)s->precondition_failed,
				     "auth_failures", (json_int_t)s->auth_failures,
				     "in_flight", (json_int_t)s->in_flight,
				     "max_in_flight", (json_int_t)s->max_in_flight,
				     "sessions", s->nsessions));
	pthread_mutex_unlock(&s->lock);
}

static void ctl_stats_reset(rf_call *c, rf_reply *r)
{
	rf_server *s = c->srv;
	pthread_mutex_lock(&s->lock);
	memset(s->requests, 0, sizeof(s->requests));
	memset(s->responses, 0, sizeof(s->responses));
	s->resets = s->patches = s->transitions = s->stale_reads = 0;
	s->overrides_consumed = s->precondition_failed = s->auth_failures = 0;
	s->max_in_flight = s->in_flight;
	pthread_mutex_unlock(&s->lock);
	reply_empty(r, 204);
}

static void ctl_config_get(rf_call *c, rf_reply *r)
{
	pthread_mutex_lock(&c->srv->lock);
	reply_json(r, 200, config_json(c->srv));
	pthread_mutex_unlock(&c->srv->lock);
}

/* Read a number field of a config body into *out within [lo, hi]. */
static bool config_number(json_t *body, const char *k, double lo, double hi,
			  bool integer, double *out, rf_reply *r)
{
	json_t *v = json_object_get(body, k);
	double d;
	if (!v)
		return true;
	if (!json_is_number(v) || (integer && !json_is_integer(v))) {
		reply_problem(r, 400, "%s must be %s", k, integer ? "an integer" : "a number");
		return false;
	}
	d = json_number_value(v);
	if (d < lo || d > hi) {
		reply_problem(r, 400, "%s must be within [%g, %g]", k, lo, hi);
		return false;
	}
	*out = d;
	return true;
}

static void ctl_config_put(rf_call *c, rf_reply *r)
{
	static const char *const known[] = {
		"latency_ms", "fail_rate", "rate_429", "retry_after", "power_delay_ms",
	};
	rf_server *s = c->srv;
	json_t *body, *v;
	const char *k;
	double lat, fail, r429, ra, pd;

	if (!(body = json_loadb(c->body ? c->body : "", c->body_len, 0, NULL)) ||
	    !json_is_object(body)) {
		reply_problem(r, 400, "the request body must be a JSON object");
		json_decref(body);
		return;
	}
	json_object_foreach(body, k, v) {
		if (!in_list(k, known, ARRAY_SIZE(known))) {
			reply_problem(r, 400, "unknown setting %s", k);
			goto done;
		}
	}
	pthread_mutex_lock(&s->lock);
	lat = (double)s->cfg.latency_ms;
	fail = s->cfg.fail_rate;
	r429 = s->cfg.rate_429;
	ra = (double)s->cfg.retry_after;
	pd = (double)s->cfg.power_delay_ms;
	if (config_number(body, "latency_ms", 0, 3600000, true, &lat, r) &&
	    config_number(body, "fail_rate", 0, 1, false, &fail, r) &&
	    config_number(body, "rate_429", 0, 1, false, &r429, r) &&
	    config_number(body, "retry_after", 0, 86400, true, &ra, r) &&
	    config_number(body, "power_delay_ms", 0, 3600000, true, &pd, r)) {
		s->cfg.latency_ms = (long)lat;
		s->cfg.fail_rate = fail;
		s->cfg.rate_429 = r429;
		s->cfg.retry_after = (long)ra;
		s->cfg.power_delay_ms = (long)pd;
		reply_json(r, 200, config_json(s));
	}
	pthread_mutex_unlock(&s->lock);
done:
	json_decref(body);
}

/* Every system as the machine sees it, pending transition included. */
static void ctl_state(rf_call *c, rf_reply *r)
{
	rf_server *s = c->srv;
	json_t *systems = json_object();
	int64_t now;
	pthread_mutex_lock(&s->lock);
	settle_all(s);
	now = now_ms();
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
	pthread_mutex_unlock(&s->lock);
}

static const struct {
	rf_method method;
	const char *path;
	rf_handler fn;
} ctl_routes[] = {
	{ RF_GET, "/_stats", ctl_stats },
	{ RF_POST, "/_stats/reset", ctl_stats_reset },
	{ RF_GET, "/_config", ctl_config_get },
	{ RF_PUT, "/_config", ctl_config_put },
	{ RF_GET, "/_state", ctl_state },
};

static void ctl_dispatch(rf_call *c, rf_reply *r)
{
	bool path_known = false;
	for (size_t i = 0; i < ARRAY_SIZE(ctl_routes); i++) {
		if (strcmp(ctl_routes[i].path, c->path) != 0)
			continue;
		path_known = true;
		if (ctl_routes[i].method == c->method ||
		    (ctl_routes[i].method == RF_GET && c->method == RF_HEAD)) {
			ctl_routes[i].fn(c, r);
			return;
		}
	}
	if (path_known)
		reply_problem(r, 405, "%s is not supported on %s", method_names[c->method], c->path);
	else
		reply_problem(r, 404, "no such path: %s", c->path);
}

/* ---- request handling ------------------------------------------------- */

static rf_method method_of(const char *m)
{
	for (int i = 0; i < RF_OTHER; i++)
		if (strcmp(m, method_names[i]) == 0)
			return (rf_method)i;
	return RF_OTHER;
}

/* An API request: counted, delayed, maybe failed, then routed. */
static void handle_api(rf_server *s, rf_call *c, const rf_upload *up, rf_reply *r)
{
	long delay, retry_after;
	int fault = 0;

	pthread_mutex_lock(&s->lock);
	s->requests[c->method]++;
	if (++s->in_flight > s->max_in_flight)
		s->max_in_flight = s->in_flight;
	delay = s->cfg.latency_ms;
	if (s->cfg.fail_rate > 0 && rng_next(s) < s->cfg.fail_rate)
		fault = rng_next(s) < 0.5 ? 503 : 500;
	else if (s->cfg.rate_429 > 0 && rng_next(s) < s->cfg.rate_429)
		fault = 429;
	retry_after = s->cfg.retry_after;
	pthread_mutex_unlock(&s->lock);

	if (delay > 0)
		sleep_ms(delay);
	if (fault == 429) {
		char sec[24];
		snprintf(sec, sizeof(sec), "%ld", retry_after);
		reply_error(r, 429, M_UNAVAILABLE, sec, NULL);
		r->retry_after = retry_after;
	} else if (fault == 503) {
		reply_error(r, 503, M_UNAVAILABLE, "0", NULL);
	} else if (fault) {
		reply_error(r, 500, M_INTERNAL, NULL);
	} else if (up->too_large) {
		reply_error(r, 413, M_TOO_LARGE, NULL);
	} else {
		api_dispatch(c, r);
	}
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn,
				  const char *url, const char *method,
				  const char *version, const char *upload_data,
				  size_t *upload_size, void **req_cls)
{
	rf_server *s = cls;
	rf_upload *up = *req_cls;
	rf_reply r = { .status = 500, .retry_after = -1 };
	rf_call c = { .srv = s, .conn = conn };
	char path[512];
	size_t n;
	enum MHD_Result ret;
	(void)version;

	if (!up) { /* first call: headers only */
		if (!(up = calloc(1, sizeof(*up))))
			return MHD_NO;
		*req_cls = up;
		return MHD_YES;
	}
	if (*upload_size) { /* a piece of the body */
		size_t k = *upload_size;
		*upload_size = 0;
		if (up->too_large || up->len + k > RF_MAX_BODY) {
			up->too_large = true;
			return MHD_YES;
		}
		if (up->len + k > up->cap) {
			size_t cap = up->cap ? up->cap : 4096;
			char *p;
			while (cap < up->len + k)
				cap *= 2;
			if (!(p = realloc(up->body, cap)))
				return MHD_NO;
			up->body = p;
			up->cap = cap;
		}
		memcpy(up->body + up->len, upload_data, k);
		up->len += k;
		return MHD_YES;
	}

	/* "/redfish/v1/" and "/redfish/v1" are the same resource */
	snprintf(path, sizeof(path), "%s", url);
	n = strlen(path);
	while (n > 1 && path[n - 1] == '/')
		path[--n] = '\0';
	c.path = path;
	c.method = method_of(method);
	c.body = up->body;
	c.body_len = up->len;
	if (strncmp(path, "/_", 2) == 0) {
		if (up->too_large)
			reply_problem(&r, 400, "the request body exceeds %d bytes", RF_MAX_BODY);
		else
			ctl_dispatch(&c, &r);
		return reply_send(conn, &r);
	}

	handle_api(s, &c, up, &r);
	ret = reply_send(conn, &r);
	pthread_mutex_lock(&s->lock);
	if (r.status >= 0 && r.status < (int)ARRAY_SIZE(s->responses))
		s->responses[r.status]++;
	s->in_flight--;
	pthread_mutex_unlock(&s->lock);
	return ret;
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **req_cls,
			 enum MHD_RequestTerminationCode toe)
{
	rf_upload *up = *req_cls;
	(void)cls, (void)conn, (void)toe;
	if (up) {
		free(up->body);
		free(up);
		*req_cls = NULL;
	}
}

/* ---- command line ----------------------------------------------------- */

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

static bool parse_long(const char *s, long lo, long hi, long *out)
{
	char *end;
	long v;
	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || end == s || *end || v < lo || v > hi)
		return false;
	*out = v;
	return true;
}

static bool parse_rate(const char *s, double *out)
{
	char *end;
	double v;
	errno = 0;
	v = strtod(s, &end);
	if (errno || end == s || *end || !(v >= 0.0 && v <= 1.0))
		return false;
	*out = v;
	return true;
}

/* Split "HOST:PORT", "[V6]:PORT" or ":PORT" and resolve it.  *res is the
 * caller's (freeaddrinfo). */
static int resolve_listen(const char *spec, struct addrinfo **res)
{
	char host[256];
	const char *port, *h = spec, *colon;
	size_t hn;
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
				  .ai_flags = AI_PASSIVE | AI_NUMERICSERV };
	if (spec[0] == '[') {
		const char *close = strchr(spec, ']');
		if (!close || close[1] != ':')
			return -1;
		h = spec + 1;
		hn = (size_t)(close - h);
		port = close + 2;
	} else {
		if (!(colon = strrchr(spec, ':')))
			return -1;
		hn = (size_t)(colon - spec);
		port = colon + 1;
	}
	if (hn >= sizeof(host) || !*port)
		return -1;
	memcpy(host, h, hn);
	host[hn] = '\0';
	return getaddrinfo(hn ? host : "127.0.0.1", port, &hints, res) == 0 ? 0 : -1;
}

/* Write "PORT\n" to path atomically (temp file, fsync, rename). */
static int write_port_file(const char *path, unsigned port)
{
	char tmp[PATH_MAX], text[16];
	int fd, n, rc = -1;
	if (snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof(tmp))
		return -1;
	n = snprintf(text, sizeof(text), "%u\n", port);
	if ((fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644)) < 0)
		return -1;
	if (write(fd, text, (size_t)n) == n && fsync(fd) == 0)
		rc = 0;
	if (close(fd) != 0)
		rc = -1;
	if (rc == 0 && rename(tmp, path) != 0)
		rc = -1;
	if (rc != 0)
		unlink(tmp);
	return rc;
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
		uuid_from(random_u64(), random_u64(), y->uuid, sizeof(y->uuid));
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
	enum { O_LISTEN = 1, O_PORT_FILE, O_SYSTEMS, O_IDS, O_POWER, O_DELAY, O_USER,
	       O_PASSWORD, O_ETAG, O_LATENCY, O_FAIL, O_429, O_RETRY, O_SEED, O_STATE, O_HELP };
	static const struct option opts[] = {
		{ "listen", required_argument, NULL, O_LISTEN },
		{ "port-file", required_argument, NULL, O_PORT_FILE },
		{ "systems", required_argument, NULL, O_SYSTEMS },
		{ "system-ids", required_argument, NULL, O_IDS },
		{ "power-state", required_argument, NULL, O_POWER },
		{ "power-delay-ms", required_argument, NULL, O_DELAY },
		{ "user", required_argument, NULL, O_USER },
		{ "password", required_argument, NULL, O_PASSWORD },
		{ "require-etag", no_argument, NULL, O_ETAG },
		{ "latency-ms", required_argument, NULL, O_LATENCY },
		{ "fail-rate", required_argument, NULL, O_FAIL },
		{ "rate-429", required_argument, NULL, O_429 },
		{ "retry-after", required_argument, NULL, O_RETRY },
		{ "seed", required_argument, NULL, O_SEED },
		{ "state-file", required_argument, NULL, O_STATE },
		{ "help", no_argument, NULL, O_HELP },
		{ NULL, 0, NULL, 0 },
	};
	static rf_server srv;
	const char *listen_spec = "127.0.0.1:0", *port_file = NULL;
	struct addrinfo *ai = NULL;
	struct MHD_Daemon *d = NULL;
	const union MHD_DaemonInfo *info;
	char host[NI_MAXHOST];
	unsigned flags, port;
	long v, nsystems = 1;
	bool numeric = false, on = false;
	uint64_t seed = random_u64();
	sigset_t sigs;
	int opt, sig, rc = 1;

	srv.cfg.retry_after = 1;
	while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		bool ok = true;
		switch (opt) {
		case O_LISTEN: listen_spec = optarg; break;
		case O_PORT_FILE: port_file = optarg; break;
		case O_SYSTEMS: ok = parse_long(optarg, 1, RF_MAX_SYSTEMS, &nsystems); break;
		case O_IDS:
			ok = !strcmp(optarg, "embedded") || !strcmp(optarg, "numeric");
			numeric = !strcmp(optarg, "numeric");
			break;
		case O_POWER:
			ok = !strcmp(optarg, "On") || !strcmp(optarg, "Off");
			on = !strcmp(optarg, "On");
			break;
		case O_DELAY: ok = parse_long(optarg, 0, 3600000, &srv.cfg.power_delay_ms); break;
		case O_USER: ok = *optarg && !strchr(optarg, ':'); srv.user = optarg; break;
		case O_PASSWORD: srv.password = optarg; break;
		case O_ETAG: srv.require_etag = true; break;
		case O_LATENCY: ok = parse_long(optarg, 0, 3600000, &srv.cfg.latency_ms); break;
		case O_FAIL: ok = parse_rate(optarg, &srv.cfg.fail_rate); break;
		case O_429: ok = parse_rate(optarg, &srv.cfg.rate_429); break;
		case O_RETRY: ok = parse_long(optarg, 0, 86400, &srv.cfg.retry_after); break;
		case O_SEED:
			ok = parse_long(optarg, LONG_MIN, LONG_MAX, &v);
			seed = (uint64_t)v;
			break;
		case O_STATE: ok = *optarg != '\0'; srv.state_file = optarg; break;
		case O_HELP: usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
		if (!ok) {
			fprintf(stderr, "redfish: bad value for --%s: %s\n", opts[opt - 1].name, optarg);
			return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "redfish: unexpected argument %s\n", argv[optind]);
		return 2;
	}
	if (!srv.user != !srv.password) {
		fprintf(stderr, "redfish: --user and --password go together\n");
		return 2;
	}
	if (resolve_listen(listen_spec, &ai) != 0) {
		fprintf(stderr, "redfish: cannot use --listen %s (want HOST:PORT)\n", listen_spec);
		return 2;
	}

	srv.rng = mix64(seed) | 1;
	snprintf(srv.instance, sizeof(srv.instance), "%08llx",
		 (unsigned long long)(random_u64() & 0xffffffffULL));
	uuid_from(random_u64(), random_u64(), srv.service_uuid, sizeof(srv.service_uuid));
	json_object_seed(0); /* before any thread touches jansson */
	if (make_systems(&srv, nsystems, numeric, on) != 0) {
		fprintf(stderr, "redfish: out of memory\n");
		goto done;
	}
	if (srv.state_file && load_state(&srv) != 0)
		goto done;
	pthread_mutex_init(&srv.lock, NULL);

	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);

	flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_POLL_INTERNAL_THREAD |
		MHD_USE_ITC | MHD_USE_ERROR_LOG;
	if (ai->ai_family == AF_INET6)
		flags |= MHD_USE_IPv6;
	d = MHD_start_daemon(flags, 0, NULL, NULL, on_request, &srv,
			     MHD_OPTION_SOCK_ADDR, ai->ai_addr,
			     MHD_OPTION_CONNECTION_LIMIT, (unsigned)RF_MAX_CONNECTIONS,
			     MHD_OPTION_THREAD_STACK_SIZE, (size_t)RF_THREAD_STACK,
			     MHD_OPTION_CONNECTION_TIMEOUT, 120u,
			     MHD_OPTION_NOTIFY_COMPLETED, on_completed, &srv,
			     MHD_OPTION_END);
	if (!d) {
		fprintf(stderr, "redfish: cannot listen on %s\n", listen_spec);
		goto done;
	}
	info = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
	port = info ? info->port : 0;
	if (getnameinfo(ai->ai_addr, ai->ai_addrlen, host, sizeof(host), NULL, 0,
			NI_NUMERICHOST) != 0)
		snprintf(host, sizeof(host), "127.0.0.1");
	if (port_file && write_port_file(port_file, port) != 0) {
		fprintf(stderr, "redfish: cannot write %s: %s\n", port_file, strerror(errno));
		goto done;
	}
	printf(ai->ai_family == AF_INET6 ? "redfish listening on http://[%s]:%u (%d systems)\n"
					  : "redfish listening on http://%s:%u (%d systems)\n",
	       host, port, srv.nsystems);
	fflush(stdout);

	do {
		if (sigwait(&sigs, &sig) != 0)
			goto done;
	} while (sig != SIGINT && sig != SIGTERM);
	rc = 0;
done:
	if (d)
		MHD_stop_daemon(d);
	if (ai)
		freeaddrinfo(ai);
	free(srv.systems);
	return rc;
}
