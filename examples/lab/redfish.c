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
	int64_t due_ms;              /* ... and when it completes (monotonic) */
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

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
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
		y->pending_boot = boots || (y->pending && y->pending_boot && target_on);
		snprintf(y->pending_type, sizeof(y->pending_type), "%s", type);
		y->due_ms = now_ms() + s->cfg.power_delay_ms;
		logf_event("%s: Reset %s accepted: PowerState %s -> %s in %ld ms", y->id, type,
			   y->on ? "On" : "Off", target_on ? "On" : "Off", s->cfg.power_delay_ms);
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
	if (*allow) {
		reply_error(r, 405, M_NOT_ALLOWED, NULL);
		snprintf(r->allow, sizeof(r->allow), "%s", allow);
	} else {
		reply_error(r, 404, M_MISSING_URI, c->path, NULL);
	}
}
