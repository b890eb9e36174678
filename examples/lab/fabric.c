/*
 * fabric.c - the local lab's interconnect provider: an in-memory REST API
 * in the shape of Equinix Fabric or Megaport, with pre-provisioned ports
 * and virtual connections (an A side and a Z side, each a port and a VLAN,
 * and a bandwidth) that are provisioned asynchronously.
 *
 * A connection is created PENDING and becomes PROVISIONED after
 * --provision-delay-ms, or FAILED (with a failure_reason) for a fraction
 * --provision-fail-rate of them.  A bandwidth change puts it back to
 * PENDING; it then becomes PROVISIONED with the new bandwidth, or, when the
 * change fails, PROVISIONED with the old one and a failure_reason.  DELETE
 * moves it to DEPROVISIONING and it is gone --deprovision-delay-ms later.
 * The outcome of every transition is drawn when it starts; transitions are
 * settled lazily, at every request, which a client cannot tell from a
 * clock.  Each one is logged on stdout and counted in /_stats, as is the
 * state every GET of a connection answered.
 *
 * With --state-file the connections outlive the process: every change is
 * written to the file (a temp file renamed over it) and read back at start,
 * transitions in flight included (due times are wall-clock times), so a
 * provider killed and restarted resumes where it stopped.
 *
 * Validation follows the providers: a VLAN is 1..4094 (400), a (port, VLAN)
 * pair belongs to one live connection (409), a connection's bandwidth may
 * not exceed the speed of either port (422).  POST honours Idempotency-Key:
 * a repeated key answers the connection created with it (200).  Errors are
 * RFC 7807 problem+json with a machine-readable "code" member.
 *
 * Faults: --latency-ms, --fail-rate (500/503 before anything is done),
 * --rate-429 (with Retry-After), all changeable through PUT /_config.  The
 * control endpoints under /_ are never delayed, failed nor authenticated.
 *
 * Concurrency: one thread per connection (libmicrohttpd); one mutex guards
 * configuration, counters, ports and connections.
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

#define FB_MAX_BODY (64 * 1024)      /* larger request bodies get 413 */
#define FB_MAX_PORTS 4096
#define FB_MAX_NAME 255
#define FB_MAX_KEY 255
#define FB_MAX_CONNECTIONS 1024      /* HTTP connections, not fabric ones */
#define FB_THREAD_STACK (512 * 1024)

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

typedef enum {
	FB_GET, FB_HEAD, FB_POST, FB_PUT, FB_PATCH, FB_DELETE, FB_OTHER,
	FB_METHOD_COUNT
} fb_method;

static const char *const method_names[FB_METHOD_COUNT] = {
	"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OTHER",
};

typedef enum { ST_PENDING, ST_PROVISIONED, ST_FAILED, ST_DEPROVISIONING, ST_GONE, ST_COUNT } fb_state;

static const char *const state_names[ST_COUNT] = {
	"PENDING", "PROVISIONED", "FAILED", "DEPROVISIONING", "GONE",
};

/* Locations the ports are spread over, in turn. */
static const char *const metros[] = { "AM1", "FR5", "LD8", "NY5" };

typedef struct {
	char id[24];
	char name[32];
	const char *location;
	long speed_mbps;
} fb_port;

typedef struct {
	char port_id[24];
	long vlan;
} fb_side;

typedef struct {
	char id[24];
	char name[FB_MAX_NAME + 1];
	fb_side a, z;
	long bandwidth_mbps;
	long prev_bandwidth_mbps;    /* a bandwidth change in flight: the old value */
	fb_state state;
	bool modifying;              /* PENDING because of a bandwidth change */
	bool will_fail;              /* the drawn outcome of the transition */
	int64_t due_ms;              /* when the transition completes (wall clock) */
	char failure_reason[256];
	char created_at[40], updated_at[40];
	char key[FB_MAX_KEY + 1];    /* Idempotency-Key, or "" */
	uint64_t version;
} fb_conn;

/* Behaviour that PUT /_config can change at run time. */
typedef struct {
	long latency_ms;
	double fail_rate;
	double rate_429;
	long retry_after;
	long provision_delay_ms;
	long deprovision_delay_ms;
	double provision_fail_rate;
} fb_config;

typedef struct {
	pthread_mutex_t lock;        /* guards everything below */
	fb_config cfg;
	uint64_t rng;
	uint64_t requests[FB_METHOD_COUNT];
	uint64_t responses[600];
	uint64_t transitions[ST_COUNT][ST_COUNT];
	uint64_t served[ST_COUNT];   /* GETs of one connection, by the state answered */
	long in_flight, max_in_flight;
	const char *token;
	const char *state_file;      /* --state-file, or NULL */

	fb_port *ports;
	int nports;
	fb_conn *conns;              /* live connections, in creation order */
	size_t nconns, cap;
	uint64_t id_base, id_seq;
} fb_server;

typedef struct {
	char *body;
	size_t len, cap;
	bool too_large;
} fb_upload;

typedef struct {
	fb_server *srv;
	struct MHD_Connection *conn;
	fb_method method;
	const char *path;
	char param[64];              /* the {} segment of the route */
	const char *body;
	size_t body_len;
} fb_call;

typedef struct {
	int status;
	char *body;
	const char *content_type;
	char *location;
	long retry_after;
	char allow[64];
	bool www_auth;
} fb_reply;

typedef void (*fb_handler)(fb_call *c, fb_reply *r);

/* ---- small helpers ---------------------------------------------------- */

static uint64_t mix64(uint64_t z)
{
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

/* Uniform in [0, 1).  Caller holds srv->lock. */
static double rng_next(fb_server *s)
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

static void rfc3339_now(char *out, size_t n)
{
	struct timespec ts;
	struct tm tm;
	char base[24];
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	strftime(base, sizeof(base), "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(out, n, "%s.%03dZ", base, (int)(ts.tv_nsec / 1000000L) % 1000);
}

/* One event on stdout, flushed, so a test can follow what happened. */
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
	printf("%s.%03ld fabric: ", ts, t.tv_nsec / 1000000L);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
	fflush(stdout);
	funlockfile(stdout);
}

static bool utf8_valid(const char *s)
{
	json_t *j = json_string(s);
	json_decref(j);
	return j != NULL;
}

static const char *status_title(int status)
{
	switch (status) {
	case 400: return "Bad Request";
	case 401: return "Unauthorized";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 409: return "Conflict";
	case 413: return "Content Too Large";
	case 422: return "Unprocessable Content";
	case 429: return "Too Many Requests";
	case 500: return "Internal Server Error";
	case 503: return "Service Unavailable";
	default: return "Error";
	}
}

/* ---- replies ---------------------------------------------------------- */

static void reply_json(fb_reply *r, int status, json_t *j)
{
	r->status = status;
	r->content_type = "application/json";
	free(r->body);
	r->body = j ? json_dumps(j, JSON_COMPACT) : NULL;
	json_decref(j);
	if (!r->body)
		r->status = 500;
}

/* An RFC 7807 problem; code: a stable machine-readable error code;
 * conn_id: the connection the problem is about (a "connection_id" member),
 * or NULL. */
static void reply_problem_v(fb_reply *r, int status, const char *code, const char *conn_id,
			    const char *fmt, va_list ap)
{
	char detail[512];
	json_t *p;
	vsnprintf(detail, sizeof(detail), fmt, ap);
	p = json_pack("{s:s, s:s, s:i, s:s, s:s}", "type", "about:blank",
		      "title", status_title(status), "status", status, "code", code,
		      "detail", detail);
	if (!p)
		p = json_pack("{s:s, s:s, s:i, s:s}", "type", "about:blank",
			      "title", status_title(status), "status", status, "code", code);
	if (p && conn_id)
		json_object_set_new(p, "connection_id", json_string(conn_id));
	reply_json(r, status, p);
	r->content_type = "application/problem+json";
}

static void reply_problem(fb_reply *r, int status, const char *code, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static void reply_problem(fb_reply *r, int status, const char *code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	reply_problem_v(r, status, code, NULL, fmt, ap);
	va_end(ap);
}

/* 409 VLAN_IN_USE naming the connection that holds the VLAN. */
static void reply_vlan_in_use(fb_reply *r, const char *conn_id, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void reply_vlan_in_use(fb_reply *r, const char *conn_id, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	reply_problem_v(r, 409, "VLAN_IN_USE", conn_id, fmt, ap);
	va_end(ap);
}

static void reply_empty(fb_reply *r, int status)
{
	r->status = status;
	free(r->body);
	r->body = NULL;
}

static enum MHD_Result reply_send(struct MHD_Connection *conn, fb_reply *r)
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
	if (r->location)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_LOCATION, r->location);
	if (r->retry_after >= 0) {
		snprintf(num, sizeof(num), "%ld", r->retry_after);
		MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER, num);
	}
	if (r->allow[0])
		MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, r->allow);
	if (r->www_auth)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE,
					"Bearer realm=\"fabric\"");
	ret = MHD_queue_response(conn, (unsigned)r->status, resp);
	MHD_destroy_response(resp);
	free(r->location);
	r->location = NULL;
	return ret;
}

static json_t *body_object(const fb_call *c, fb_reply *r)
{
	json_error_t err;
	json_t *j;
	if (c->body_len == 0) {
		reply_problem(r, 400, "INVALID_BODY", "the request body must be a JSON object");
		return NULL;
	}
	if (!(j = json_loadb(c->body, c->body_len, 0, &err))) {
		reply_problem(r, 400, "INVALID_BODY", "invalid JSON at line %d, column %d: %s",
			      err.line, err.column, err.text);
		return NULL;
	}
	if (!json_is_object(j)) {
		json_decref(j);
		reply_problem(r, 400, "INVALID_BODY", "the request body must be a JSON object");
		return NULL;
	}
	return j;
}

/* ---- ports and connections -------------------------------------------- */

static fb_port *find_port(fb_server *s, const char *id)
{
	for (int i = 0; i < s->nports; i++)
		if (strcmp(s->ports[i].id, id) == 0)
			return &s->ports[i];
	return NULL;
}

static fb_conn *find_conn(fb_server *s, const char *id)
{
	for (size_t i = 0; i < s->nconns; i++)
		if (strcmp(s->conns[i].id, id) == 0)
			return &s->conns[i];
	return NULL;
}

/* The live connection holding (port, vlan), other than except, or NULL. */
static fb_conn *vlan_holder(fb_server *s, const char *port, long vlan, const fb_conn *except)
{
	for (size_t i = 0; i < s->nconns; i++) {
		fb_conn *k = &s->conns[i];
		if (k == except)
			continue;
		if ((strcmp(k->a.port_id, port) == 0 && k->a.vlan == vlan) ||
		    (strcmp(k->z.port_id, port) == 0 && k->z.vlan == vlan))
			return k;
	}
	return NULL;
}

static void set_state(fb_server *s, fb_conn *k, fb_state to)
{
	bool why = k->failure_reason[0] && (to == ST_FAILED || to == ST_PROVISIONED);
	s->transitions[k->state][to]++;
	logf_event("%s (%s): %s -> %s%s%s", k->id, k->name, state_names[k->state],
		   state_names[to], why ? ": " : "", why ? k->failure_reason : "");
	k->state = to;
	k->version++;
	rfc3339_now(k->updated_at, sizeof(k->updated_at));
}

static void save_state(fb_server *s);

/* Complete every transition that is due; remove deprovisioned
 * connections; save the state when anything changed.  Caller holds
 * srv->lock. */
static void settle_all(fb_server *s)
{
	int64_t now = now_ms();
	size_t i = 0;
	bool changed = false;
	while (i < s->nconns) {
		fb_conn *k = &s->conns[i];
		if ((k->state == ST_PENDING || k->state == ST_DEPROVISIONING) && now >= k->due_ms)
			changed = true;
		if (k->state == ST_PENDING && now >= k->due_ms) {
			if (!k->will_fail) {
				if (k->modifying)
					k->failure_reason[0] = '\0';
				set_state(s, k, ST_PROVISIONED);
			} else if (k->modifying) {
				snprintf(k->failure_reason, sizeof(k->failure_reason),
					 "bandwidth change to %ld Mbps failed: no capacity between %s and "
					 "%s (injected by provision_fail_rate); %ld Mbps kept",
					 k->bandwidth_mbps, k->a.port_id, k->z.port_id,
					 k->prev_bandwidth_mbps);
				k->bandwidth_mbps = k->prev_bandwidth_mbps;
				set_state(s, k, ST_PROVISIONED);
			} else {
				snprintf(k->failure_reason, sizeof(k->failure_reason),
					 "provisioning failed: no capacity between %s vlan %ld and %s "
					 "vlan %ld (injected by provision_fail_rate)",
					 k->a.port_id, k->a.vlan, k->z.port_id, k->z.vlan);
				set_state(s, k, ST_FAILED);
			}
			k->modifying = false;
		} else if (k->state == ST_DEPROVISIONING && now >= k->due_ms) {
			set_state(s, k, ST_GONE);
			memmove(k, k + 1, (s->nconns - i - 1) * sizeof(*k));
			s->nconns--;
			continue;
		}
		i++;
	}
	if (changed)
		save_state(s);
}

static json_t *conn_json(const fb_conn *k)
{
	json_t *j = json_pack("{s:s, s:s, s:{s:s, s:I}, s:{s:s, s:I}, s:I, s:s, s:s, s:s, s:I}",
			      "id", k->id, "name", k->name,
			      "a_side", "port_id", k->a.port_id, "vlan", (json_int_t)k->a.vlan,
			      "z_side", "port_id", k->z.port_id, "vlan", (json_int_t)k->z.vlan,
			      "bandwidth_mbps", (json_int_t)k->bandwidth_mbps,
			      "state", state_names[k->state],
			      "created_at", k->created_at, "updated_at", k->updated_at,
			      "version", (json_int_t)k->version);
	if (j) {
		json_object_set_new(j, "failure_reason", k->failure_reason[0]
				    ? json_string(k->failure_reason) : json_null());
		if (k->key[0])
			json_object_set_new(j, "idempotency_key", json_string(k->key));
	}
	return j;
}

/* ---- --state-file ----------------------------------------------------- */

/* Save the connections to --state-file (a temp file renamed over it), so a
 * restarted fabric resumes where it stopped, transitions in flight
 * included.  Caller holds srv->lock. */
static void save_state(fb_server *s)
{
	json_t *root, *arr;
	char tmp[PATH_MAX];
	if (!s->state_file)
		return;
	arr = json_array();
	for (size_t i = 0; arr && i < s->nconns; i++) {
		const fb_conn *k = &s->conns[i];
		json_array_append_new(arr, json_pack(
			"{s:s, s:s, s:s, s:I, s:s, s:I, s:I, s:I, s:s, s:b, s:b, s:I,"
			" s:s, s:s, s:s, s:s, s:I}",
			"id", k->id, "name", k->name,
			"a_port", k->a.port_id, "a_vlan", (json_int_t)k->a.vlan,
			"z_port", k->z.port_id, "z_vlan", (json_int_t)k->z.vlan,
			"bandwidth_mbps", (json_int_t)k->bandwidth_mbps,
			"prev_bandwidth_mbps", (json_int_t)k->prev_bandwidth_mbps,
			"state", state_names[k->state], "modifying", k->modifying,
			"will_fail", k->will_fail, "due_ms", (json_int_t)k->due_ms,
			"failure_reason", k->failure_reason, "created_at", k->created_at,
			"updated_at", k->updated_at, "key", k->key, "version", (json_int_t)k->version));
	}
	root = json_pack("{s:i, s:I, s:I, s:o}", "format", 1, "id_base", (json_int_t)s->id_base,
			 "id_seq", (json_int_t)s->id_seq, "connections", arr);
	snprintf(tmp, sizeof(tmp), "%s.tmp", s->state_file);
	if (!root || json_dump_file(root, tmp, JSON_COMPACT) != 0 || rename(tmp, s->state_file) != 0)
		fprintf(stderr, "fabric: cannot save %s: %s\n", s->state_file, strerror(errno));
	json_decref(root);
}

static void copy_field(char *dst, size_t cap, json_t *o, const char *k)
{
	const char *v = json_string_value(json_object_get(o, k));
	snprintf(dst, cap, "%s", v ? v : "");
}

/* Load --state-file when it exists; -1 (with a message) when it is not a
 * state this program saved. */
static int load_state(fb_server *s)
{
	json_error_t err;
	json_t *root, *arr, *o;
	size_t i;
	if (access(s->state_file, F_OK) != 0)
		return 0;
	if (!(root = json_load_file(s->state_file, 0, &err))) {
		fprintf(stderr, "fabric: %s: %s\n", s->state_file, err.text);
		return -1;
	}
	arr = json_object_get(root, "connections");
	if (json_integer_value(json_object_get(root, "format")) != 1 || !json_is_array(arr) ||
	    !(s->conns = calloc(json_array_size(arr) + 1, sizeof(*s->conns)))) {
		fprintf(stderr, "fabric: %s is not a fabric state file\n", s->state_file);
		json_decref(root);
		return -1;
	}
	s->cap = json_array_size(arr) + 1;
	s->id_base = (uint64_t)json_integer_value(json_object_get(root, "id_base"));
	s->id_seq = (uint64_t)json_integer_value(json_object_get(root, "id_seq"));
	json_array_foreach(arr, i, o) {
		fb_conn *k = &s->conns[s->nconns++];
		const char *st = json_string_value(json_object_get(o, "state"));
		copy_field(k->id, sizeof(k->id), o, "id");
		copy_field(k->name, sizeof(k->name), o, "name");
		copy_field(k->a.port_id, sizeof(k->a.port_id), o, "a_port");
		copy_field(k->z.port_id, sizeof(k->z.port_id), o, "z_port");
		copy_field(k->failure_reason, sizeof(k->failure_reason), o, "failure_reason");
		copy_field(k->created_at, sizeof(k->created_at), o, "created_at");
		copy_field(k->updated_at, sizeof(k->updated_at), o, "updated_at");
		copy_field(k->key, sizeof(k->key), o, "key");
		k->a.vlan = (long)json_integer_value(json_object_get(o, "a_vlan"));
		k->z.vlan = (long)json_integer_value(json_object_get(o, "z_vlan"));
		k->bandwidth_mbps = (long)json_integer_value(json_object_get(o, "bandwidth_mbps"));
		k->prev_bandwidth_mbps = (long)json_integer_value(json_object_get(o, "prev_bandwidth_mbps"));
		k->modifying = json_is_true(json_object_get(o, "modifying"));
		k->will_fail = json_is_true(json_object_get(o, "will_fail"));
		k->due_ms = (int64_t)json_integer_value(json_object_get(o, "due_ms"));
		k->version = (uint64_t)json_integer_value(json_object_get(o, "version"));
		k->state = ST_GONE;
		for (int j = 0; st && j < ST_GONE; j++)
			if (strcmp(st, state_names[j]) == 0)
				k->state = (fb_state)j;
		if (!k->id[0] || k->state == ST_GONE) {
			fprintf(stderr, "fabric: %s: connection %zu is malformed\n", s->state_file, i);
			json_decref(root);
			return -1;
		}
	}
	json_decref(root);
	return 0;
}

static json_t *port_json(const fb_server *s, const fb_port *p)
{
	json_t *vlans = json_array();
	for (size_t i = 0; i < s->nconns; i++) {
		const fb_conn *k = &s->conns[i];
		if (strcmp(k->a.port_id, p->id) == 0)
			json_array_append_new(vlans, json_integer(k->a.vlan));
		if (strcmp(k->z.port_id, p->id) == 0 &&
		    !(strcmp(k->a.port_id, p->id) == 0 && k->a.vlan == k->z.vlan))
			json_array_append_new(vlans, json_integer(k->z.vlan));
	}
	return json_pack("{s:s, s:s, s:s, s:I, s:s, s:o}", "id", p->id, "name", p->name,
			 "location", p->location, "speed_mbps", (json_int_t)p->speed_mbps,
			 "state", "ACTIVE", "vlans_in_use", vlans);
}

/* ---- the API ---------------------------------------------------------- */

static void api_ports(fb_call *c, fb_reply *r)
{
	fb_server *s = c->srv;
	json_t *items = json_array();
	pthread_mutex_lock(&s->lock);
	settle_all(s);
	for (int i = 0; i < s->nports; i++)
		json_array_append_new(items, port_json(s, &s->ports[i]));
	reply_json(r, 200, json_pack("{s:o, s:i}", "items", items, "count", s->nports));
	pthread_mutex_unlock(&s->lock);
}

static void api_port_get(fb_call *c, fb_reply *r)
{
	fb_server *s = c->srv;
	fb_port *p;
	pthread_mutex_lock(&s->lock);
	settle_all(s);
	if ((p = find_port(s, c->param)))
		reply_json(r, 200, port_json(s, p));
	else
		reply_problem(r, 404, "NOT_FOUND", "no port %s", c->param);
	pthread_mutex_unlock(&s->lock);
}

/* Connections, optionally filtered by ?name=, ?idempotency_key=, ?state=. */
static void api_conns(fb_call *c, fb_reply *r)
{
	fb_server *s = c->srv;
	const char *name = MHD_lookup_connection_value(c->conn, MHD_GET_ARGUMENT_KIND, "name");
	const char *key = MHD_lookup_connection_value(c->conn, MHD_GET_ARGUMENT_KIND,
						      "idempotency_key");
	const char *state = MHD_lookup_connection_value(c->conn, MHD_GET_ARGUMENT_KIND, "state");
	json_t *items = json_array();
	pthread_mutex_lock(&s->lock);
	settle_all(s);
	for (size_t i = 0; i < s->nconns; i++) {
		const fb_conn *k = &s->conns[i];
		if ((name && strcmp(name, k->name) != 0) || (key && strcmp(key, k->key) != 0) ||
		    (state && strcmp(state, state_names[k->state]) != 0))
			continue;
		json_array_append_new(items, conn_json(k));
	}
	reply_json(r, 200, json_pack("{s:o, s:I}", "items", items,
				     "count", (json_int_t)json_array_size(items)));
	pthread_mutex_unlock(&s->lock);
}

/* Parse one side ({"port_id": string, "vlan": integer}) of a POST body;
 * false with a problem in r. */
static bool parse_side(json_t *body, const char *name, fb_side *out, fb_reply *r)
{
	json_t *side = json_object_get(body, name), *port, *vlan, *v;
	const char *k;
	if (!json_is_object(side)) {
		reply_problem(r, 400, "INVALID_FIELD", "%s must be an object {port_id, vlan}", name);
		return false;
	}
	json_object_foreach(side, k, v) {
		if (strcmp(k, "port_id") != 0 && strcmp(k, "vlan") != 0) {
			reply_problem(r, 400, "INVALID_FIELD", "%s.%s: unknown field", name, k);
			return false;
		}
	}
	port = json_object_get(side, "port_id");
	vlan = json_object_get(side, "vlan");
	if (!json_is_string(port) || json_string_length(port) == 0 ||
	    json_string_length(port) >= sizeof(out->port_id)) {
		reply_problem(r, 400, "INVALID_FIELD", "%s.port_id must be a port id", name);
		return false;
	}
	if (!json_is_integer(vlan)) {
		reply_problem(r, 400, "INVALID_VLAN", "%s.vlan must be an integer 1..4094", name);
		return false;
	}
	if (json_integer_value(vlan) < 1 || json_integer_value(vlan) > 4094) {
		reply_problem(r, 400, "INVALID_VLAN", "%s.vlan %lld is out of range: VLANs are 1..4094",
			      name, (long long)json_integer_value(vlan));
		return false;
	}
	snprintf(out->port_id, sizeof(out->port_id), "%s", json_string_value(port));
	out->vlan = (long)json_integer_value(vlan);
	return true;
}

/* Check bandwidth against both ports' speeds; false with a 422 in r. */
static bool check_bandwidth(fb_server *s, const fb_side *a, const fb_side *z, long bw,
			    fb_reply *r)
{
	const fb_side *sides[2] = { a, z };
	for (int i = 0; i < 2; i++) {
		fb_port *p = find_port(s, sides[i]->port_id);
		if (p && bw > p->speed_mbps) {
			reply_problem(r, 422, "BANDWIDTH_EXCEEDS_PORT_SPEED",
				      "bandwidth_mbps %ld exceeds the speed of %s port %s (%ld Mbps)",
				      bw, i == 0 ? "a_side" : "z_side", p->id, p->speed_mbps);
			return false;
		}
	}
	return true;
}

static bool parse_bandwidth(json_t *v, long *out, fb_reply *r)
{
	if (!json_is_integer(v) || json_integer_value(v) < 1 ||
	    json_integer_value(v) > 100000000) {
		reply_problem(r, 400, "INVALID_FIELD", "bandwidth_mbps must be a positive integer");
		return false;
	}
	*out = (long)json_integer_value(v);
	return true;
}

static void api_conn_create(fb_call *c, fb_reply *r)
{
	fb_server *s = c->srv;
	const char *key = MHD_lookup_connection_value(c->conn, MHD_HEADER_KIND, "Idempotency-Key");
	json_t *body, *name, *v;
	const char *k;
	fb_conn n, *held;
	const fb_side *sides[2];

	if (key && (!*key || strlen(key) > FB_MAX_KEY || !utf8_valid(key))) {
		reply_problem(r, 400, "INVALID_IDEMPOTENCY_KEY",
			      "Idempotency-Key must be 1 to %d bytes of UTF-8", FB_MAX_KEY);
		return;
	}
	if (!(body = body_object(c, r)))
		return;
	memset(&n, 0, sizeof(n));
	pthread_mutex_lock(&s->lock);
	settle_all(s);
	/* A repeated key answers the first connection, before any validation:
	 * the retry of a create must not meet its own VLANs. */
	if (key) {
		for (size_t i = 0; i < s->nconns; i++) {
			if (strcmp(s->conns[i].key, key) == 0) {
				reply_json(r, 200, conn_json(&s->conns[i]));
				goto done;
			}
		}
	}
	json_object_foreach(body, k, v) {
		if (strcmp(k, "name") && strcmp(k, "a_side") && strcmp(k, "z_side") &&
		    strcmp(k, "bandwidth_mbps")) {
			reply_problem(r, 400, "INVALID_FIELD", "unknown field %s", k);
			goto done;
		}
	}
	name = json_object_get(body, "name");
	if (!json_is_string(name) || json_string_length(name) == 0 ||
	    json_string_length(name) > FB_MAX_NAME) {
		reply_problem(r, 400, "INVALID_FIELD", "name must be a string of 1 to %d bytes",
			      FB_MAX_NAME);
		goto done;
	}
	if (!parse_side(body, "a_side", &n.a, r) || !parse_side(body, "z_side", &n.z, r) ||
	    !parse_bandwidth(json_object_get(body, "bandwidth_mbps"), &n.bandwidth_mbps, r))
		goto done;
	sides[0] = &n.a;
	sides[1] = &n.z;
	for (int i = 0; i < 2; i++) {
		if (!find_port(s, sides[i]->port_id)) {
			reply_problem(r, 422, "UNKNOWN_PORT", "%s.port_id: no port %s",
				      i ? "z_side" : "a_side", sides[i]->port_id);
			goto done;
		}
		if ((held = vlan_holder(s, sides[i]->port_id, sides[i]->vlan, NULL))) {
			reply_vlan_in_use(r, held->id,
					  "vlan %ld on port %s is already used by connection %s (%s, %s)",
					  sides[i]->vlan, sides[i]->port_id, held->id, held->name,
					  state_names[held->state]);
			goto done;
		}
	}
	if (strcmp(n.a.port_id, n.z.port_id) == 0 && n.a.vlan == n.z.vlan) {
		reply_problem(r, 409, "VLAN_IN_USE",
			      "a_side and z_side are the same vlan %ld on port %s", n.a.vlan,
			      n.a.port_id);
		goto done;
	}
	if (!check_bandwidth(s, &n.a, &n.z, n.bandwidth_mbps, r))
		goto done;
	if (s->nconns == s->cap) {
		size_t cap = s->cap ? s->cap * 2 : 64;
		fb_conn *p = realloc(s->conns, cap * sizeof(*p));
		if (!p) {
			reply_empty(r, 500);
			goto done;
		}
		s->conns = p;
		s->cap = cap;
	}
	snprintf(n.id, sizeof(n.id), "conn-%016llx",
		 (unsigned long long)mix64(s->id_base + s->id_seq++));
	snprintf(n.name, sizeof(n.name), "%s", json_string_value(name));
	snprintf(n.key, sizeof(n.key), "%s", key ? key : "");
	n.state = ST_PENDING;
	n.will_fail = s->cfg.provision_fail_rate > 0 && rng_next(s) < s->cfg.provision_fail_rate;
	n.due_ms = now_ms() + s->cfg.provision_delay_ms;
	n.version = 1;
	rfc3339_now(n.created_at, sizeof(n.created_at));
	snprintf(n.updated_at, sizeof(n.updated_at), "%s", n.created_at);
	s->conns[s->nconns++] = n;
	save_state(s);
	logf_event("%s (%s): created PENDING: %s vlan %ld <-> %s vlan %ld, %ld Mbps", n.id, n.name,
		   n.a.port_id, n.a.vlan, n.z.port_id, n.z.vlan, n.bandwidth_mbps);
	reply_json(r, 201, conn_json(&n));
	if ((r->location = malloc(64)))
		snprintf(r->location, 64, "/v1/connections/%s", n.id);
	settle_all(s); /* a zero delay completes at once (after the 201 body was built) */
done:
	pthread_mutex_unlock(&s->lock);
	json_decref(body);
}

static void api_conn_get(fb_call *c, fb_reply *r)
{
	fb_server *s = c->srv;
	fb_conn *k;
	pthread_mutex_lock(&s->lock);
	settle_all(s);
	if ((k = find_conn(s, c->param))) {
		s->served[k->state]++;
		reply_json(r, 200, conn_json(k));
	} else {
		reply_problem(r, 404, "NOT_FOUND", "no connection %s", c->param);
	}
	pthread_mutex_unlock(&s->lock);
}

/* PATCH {"bandwidth_mbps"?, "name"?}: a name changes at once; a bandwidth
 * change needs a PROVISIONED connection and re-provisions it. */
static void api_conn_patch(fb_call *c, fb_reply *r)
{
	fb_server *s = c->srv;
	json_t *body, *v, *bw_v, *name_v;
	const char *k;
	fb_conn *conn;
	long bw = 0;

	if (!(body = body_object(c, r)))
		return;
	pthread_mutex_lock(&s->lock);
	settle_all(s);
	if (!(conn = find_conn(s, c->param))) {
		reply_problem(r, 404, "NOT_FOUND", "no connection %s", c->param);
		goto done;
	}
	json_object_foreach(body, k, v) {
		if (!strcmp(k, "a_side") || !strcmp(k, "z_side")) {
			reply_problem(r, 400, "IMMUTABLE_FIELD",
				      "%s cannot be changed: create a new connection", k);
			goto done;
		}
		if (strcmp(k, "bandwidth_mbps") && strcmp(k, "name")) {
			reply_problem(r, 400, "INVALID_FIELD", "%s cannot be changed", k);
			goto done;
		}
	}
	name_v = json_object_get(body, "name");
	bw_v = json_object_get(body, "bandwidth_mbps");
	if (name_v && (!json_is_string(name_v) || json_string_length(name_v) == 0 ||
		       json_string_length(name_v) > FB_MAX_NAME)) {
		reply_problem(r, 400, "INVALID_FIELD", "name must be a string of 1 to %d bytes",
			      FB_MAX_NAME);
		goto done;
	}
	if (bw_v && !parse_bandwidth(bw_v, &bw, r))
		goto done;
	if (conn->state == ST_DEPROVISIONING || conn->state == ST_FAILED ||
	    (bw_v && bw != conn->bandwidth_mbps && conn->state != ST_PROVISIONED)) {
		reply_problem(r, 409, "INVALID_STATE",
			      "connection %s is %s: it can be changed when PROVISIONED", conn->id,
			      state_names[conn->state]);
		goto done;
	}
	if (bw_v && !check_bandwidth(s, &conn->a, &conn->z, bw, r))
		goto done;
	if (name_v && strcmp(json_string_value(name_v), conn->name) != 0) {
		snprintf(conn->name, sizeof(conn->name), "%s", json_string_value(name_v));
		conn->version++;
		rfc3339_now(conn->updated_at, sizeof(conn->updated_at));
		logf_event("%s: renamed %s", conn->id, conn->name);
	}
	if (bw_v && bw != conn->bandwidth_mbps) {
		conn->prev_bandwidth_mbps = conn->bandwidth_mbps;
		conn->bandwidth_mbps = bw;
		conn->modifying = true;
		conn->will_fail = s->cfg.provision_fail_rate > 0 &&
				  rng_next(s) < s->cfg.provision_fail_rate;
		conn->due_ms = now_ms() + s->cfg.provision_delay_ms;
		logf_event("%s (%s): bandwidth %ld -> %ld Mbps requested", conn->id, conn->name,
			   conn->prev_bandwidth_mbps, bw);
		set_state(s, conn, ST_PENDING);
	}
	save_state(s);
	reply_json(r, 200, conn_json(conn));
	settle_all(s);
done:
	pthread_mutex_unlock(&s->lock);
	json_decref(body);
}

/* DELETE: 202 with the connection DEPROVISIONING; gone after the delay. */
static void api_conn_delete(fb_call *c, fb_reply *r)
{
	fb_server *s = c->srv;
	fb_conn *k;
	pthread_mutex_lock(&s->lock);
	settle_all(s);
	if (!(k = find_conn(s, c->param))) {
		reply_problem(r, 404, "NOT_FOUND", "no connection %s", c->param);
	} else {
		if (k->state != ST_DEPROVISIONING) {
			k->modifying = false;
			k->due_ms = now_ms() + s->cfg.deprovision_delay_ms;
			set_state(s, k, ST_DEPROVISIONING);
			save_state(s);
		}
		reply_json(r, 202, conn_json(k));
		settle_all(s);
	}
	pthread_mutex_unlock(&s->lock);
}

static const struct {
	fb_method method;
	const char *pattern;
	fb_handler fn;
} api_routes[] = {
	{ FB_GET, "/v1/ports", api_ports },
	{ FB_GET, "/v1/ports/{}", api_port_get },
	{ FB_GET, "/v1/connections", api_conns },
	{ FB_POST, "/v1/connections", api_conn_create },
	{ FB_GET, "/v1/connections/{}", api_conn_get },
	{ FB_PATCH, "/v1/connections/{}", api_conn_patch },
	{ FB_DELETE, "/v1/connections/{}", api_conn_delete },
};

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

static void api_dispatch(fb_call *c, fb_reply *r)
{
	char allow[64] = "";
	for (size_t i = 0; i < ARRAY_SIZE(api_routes); i++) {
		if (!route_match(api_routes[i].pattern, c->path, c->param, sizeof(c->param)))
			continue;
		if (api_routes[i].method == c->method ||
		    (api_routes[i].method == FB_GET && c->method == FB_HEAD)) {
			api_routes[i].fn(c, r);
			return;
		}
		snprintf(allow + strlen(allow), sizeof(allow) - strlen(allow), "%s%s%s",
			 *allow ? ", " : "", method_names[api_routes[i].method],
			 api_routes[i].method == FB_GET ? ", HEAD" : "");
	}
	if (*allow) {
		reply_problem(r, 405, "METHOD_NOT_ALLOWED", "%s is not supported on %s",
			      method_names[c->method], c->path);
		snprintf(r->allow, sizeof(r->allow), "%s", allow);
	} else {
		reply_problem(r, 404, "NOT_FOUND", "no such path: %s", c->path);
	}
}

/* ---- control endpoints ------------------------------------------------ */

static json_t *config_json(const fb_server *s)
{
	return json_pack("{s:I, s:f, s:f, s:I, s:I, s:I, s:f, s:b, s:i}",
			 "latency_ms", (json_int_t)s->cfg.latency_ms,
			 "fail_rate", s->cfg.fail_rate,
			 "rate_429", s->cfg.rate_429,
			 "retry_after", (json_int_t)s->cfg.retry_after,
			 "provision_delay_ms", (json_int_t)s->cfg.provision_delay_ms,
			 "deprovision_delay_ms", (json_int_t)s->cfg.deprovision_delay_ms,
			 "provision_fail_rate", s->cfg.provision_fail_rate,
			 "token_required", s->token != NULL,
			 "ports", s->nports);
}

static void ctl_stats(fb_call *c, fb_reply *r)
{
	fb_server *s = c->srv;
	json_t *req = json_object(), *resp = json_object(), *by_state = json_object();
	json_t *trans = json_object(), *served = json_object();
	char code[16], name[48];
	pthread_mutex_lock(&s->lock);
	settle_all(s);
	for (int i = 0; i < FB_METHOD_COUNT; i++)
		json_object_set_new(req, method_names[i], json_integer((json_int_t)s->requests[i]));
	for (int i = 0; i < (int)ARRAY_SIZE(s->responses); i++) {
		if (s->responses[i]) {
			snprintf(code, sizeof(code), "%d", i);
			json_object_set_new(resp, code, json_integer((json_int_t)s->responses[i]));
		}
	}
	for (int i = 0; i < ST_GONE; i++) {
		json_int_t n = 0;
		for (size_t j = 0; j < s->nconns; j++)
			n += s->conns[j].state == (fb_state)i;
		json_object_set_new(by_state, state_names[i], json_integer(n));
		json_object_set_new(served, state_names[i], json_integer((json_int_t)s->served[i]));
	}
	for (int i = 0; i < ST_COUNT; i++) {
		for (int j = 0; j < ST_COUNT; j++) {
			if (!s->transitions[i][j])
				continue;
			snprintf(name, sizeof(name), "%s->%s", state_names[i], state_names[j]);
			json_object_set_new(trans, name, json_integer((json_int_t)s->transitions[i][j]));
		}
	}
	reply_json(r, 200, json_pack("{s:o, s:o, s:o, s:I, s:o, s:o, s:I, s:I}",
				     "requests", req, "responses", resp, "connections", by_state,
				     "total_connections", (json_int_t)s->nconns,
				     "transitions", trans, "served", served,
				     "in_flight", (json_int_t)s->in_flight,
				     "max_in_flight", (json_int_t)s->max_in_flight));
	pthread_mutex_unlock(&s->lock);
}

static void ctl_stats_reset(fb_call *c, fb_reply *r)
{
	fb_server *s = c->srv;
	pthread_mutex_lock(&s->lock);
	memset(s->requests, 0, sizeof(s->requests));
	memset(s->responses, 0, sizeof(s->responses));
	memset(s->transitions, 0, sizeof(s->transitions));
	memset(s->served, 0, sizeof(s->served));
	s->max_in_flight = s->in_flight;
	pthread_mutex_unlock(&s->lock);
	reply_empty(r, 204);
}

static void ctl_config_get(fb_call *c, fb_reply *r)
{
	pthread_mutex_lock(&c->srv->lock);
	reply_json(r, 200, config_json(c->srv));
	pthread_mutex_unlock(&c->srv->lock);
}

static bool config_number(json_t *body, const char *k, double lo, double hi,
			  bool integer, double *out, fb_reply *r)
{
	json_t *v = json_object_get(body, k);
	double d;
	if (!v)
		return true;
	if (!json_is_number(v) || (integer && !json_is_integer(v))) {
		reply_problem(r, 400, "INVALID_FIELD", "%s must be %s", k,
			      integer ? "an integer" : "a number");
		return false;
	}
	d = json_number_value(v);
	if (d < lo || d > hi) {
		reply_problem(r, 400, "INVALID_FIELD", "%s must be within [%g, %g]", k, lo, hi);
		return false;
	}
	*out = d;
	return true;
}

static void ctl_config_put(fb_call *c, fb_reply *r)
{
	static const char *const known[] = {
		"latency_ms", "fail_rate", "rate_429", "retry_after", "provision_delay_ms",
		"deprovision_delay_ms", "provision_fail_rate",
	};
	fb_server *s = c->srv;
	json_t *body, *v;
	const char *k;
	double lat, fail, r429, ra, pd, dd, pf;

	if (!(body = body_object(c, r)))
		return;
	json_object_foreach(body, k, v) {
		size_t i;
		for (i = 0; i < ARRAY_SIZE(known); i++)
			if (strcmp(k, known[i]) == 0)
				break;
		if (i == ARRAY_SIZE(known)) {
			reply_problem(r, 400, "INVALID_FIELD", "unknown setting %s", k);
			goto done;
		}
	}
	pthread_mutex_lock(&s->lock);
	lat = (double)s->cfg.latency_ms;
	fail = s->cfg.fail_rate;
	r429 = s->cfg.rate_429;
	ra = (double)s->cfg.retry_after;
	pd = (double)s->cfg.provision_delay_ms;
	dd = (double)s->cfg.deprovision_delay_ms;
	pf = s->cfg.provision_fail_rate;
	if (config_number(body, "latency_ms", 0, 3600000, true, &lat, r) &&
	    config_number(body, "fail_rate", 0, 1, false, &fail, r) &&
	    config_number(body, "rate_429", 0, 1, false, &r429, r) &&
	    config_number(body, "retry_after", 0, 86400, true, &ra, r) &&
	    config_number(body, "provision_delay_ms", 0, 3600000, true, &pd, r) &&
	    config_number(body, "deprovision_delay_ms", 0, 3600000, true, &dd, r) &&
	    config_number(body, "provision_fail_rate", 0, 1, false, &pf, r)) {
		s->cfg.latency_ms = (long)lat;
		s->cfg.fail_rate = fail;
		s->cfg.rate_429 = r429;
		s->cfg.retry_after = (long)ra;
		s->cfg.provision_delay_ms = (long)pd;
		s->cfg.deprovision_delay_ms = (long)dd;
		s->cfg.provision_fail_rate = pf;
		reply_json(r, 200, config_json(s));
	}
	pthread_mutex_unlock(&s->lock);
done:
	json_decref(body);
}

static void ctl_conns_delete(fb_call *c, fb_reply *r)
{
	fb_server *s = c->srv;
	json_int_t n;
	pthread_mutex_lock(&s->lock);
	n = (json_int_t)s->nconns;
	s->nconns = 0;
	save_state(s);
	pthread_mutex_unlock(&s->lock);
	reply_json(r, 200, json_pack("{s:I}", "deleted", n));
}

static const struct {
	fb_method method;
	const char *path;
	fb_handler fn;
} ctl_routes[] = {
	{ FB_GET, "/_stats", ctl_stats },
	{ FB_POST, "/_stats/reset", ctl_stats_reset },
	{ FB_GET, "/_config", ctl_config_get },
	{ FB_PUT, "/_config", ctl_config_put },
	{ FB_DELETE, "/_connections", ctl_conns_delete },
};

static void ctl_dispatch(fb_call *c, fb_reply *r)
{
	bool path_known = false;
	for (size_t i = 0; i < ARRAY_SIZE(ctl_routes); i++) {
		if (strcmp(ctl_routes[i].path, c->path) != 0)
			continue;
		path_known = true;
		if (ctl_routes[i].method == c->method ||
		    (ctl_routes[i].method == FB_GET && c->method == FB_HEAD)) {
			ctl_routes[i].fn(c, r);
			return;
		}
	}
	if (path_known)
		reply_problem(r, 405, "METHOD_NOT_ALLOWED", "%s is not supported on %s",
			      method_names[c->method], c->path);
	else
		reply_problem(r, 404, "NOT_FOUND", "no such path: %s", c->path);
}

/* ---- request handling ------------------------------------------------- */

static fb_method method_of(const char *m)
{
	for (int i = 0; i < FB_OTHER; i++)
		if (strcmp(m, method_names[i]) == 0)
			return (fb_method)i;
	return FB_OTHER;
}

static bool authorized(const fb_server *s, struct MHD_Connection *conn)
{
	const char *h, *tok;
	size_t a, b;
	unsigned char diff = 0;
	if (!s->token)
		return true;
	h = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
	if (!h || strncasecmp(h, "Bearer ", 7) != 0)
		return false;
	tok = h + 7;
	while (*tok == ' ')
		tok++;
	a = strlen(tok);
	b = strlen(s->token);
	for (size_t i = 0; i < a; i++)
		diff |= (unsigned char)(tok[i] ^ s->token[i % (b ? b : 1)]);
	return a == b && diff == 0;
}

static void handle_api(fb_server *s, fb_call *c, const fb_upload *up, fb_reply *r)
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
		reply_problem(r, 429, "RATE_LIMITED",
			      "injected throttling (rate_429); retry after %ld s", retry_after);
		r->retry_after = retry_after;
	} else if (fault) {
		reply_problem(r, fault, "INJECTED_FAILURE", "injected failure (fail_rate); nothing was done");
	} else if (!authorized(s, c->conn)) {
		reply_problem(r, 401, "UNAUTHORIZED", "a valid bearer token is required");
		r->www_auth = true;
	} else if (up->too_large) {
		reply_problem(r, 413, "BODY_TOO_LARGE", "the request body exceeds %d bytes", FB_MAX_BODY);
	} else {
		api_dispatch(c, r);
	}
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn,
				  const char *url, const char *method,
				  const char *version, const char *upload_data,
				  size_t *upload_size, void **req_cls)
{
	fb_server *s = cls;
	fb_upload *up = *req_cls;
	fb_reply r = { .status = 500, .retry_after = -1 };
	fb_call c = { .srv = s, .conn = conn };
	char path[512];
	size_t n;
	enum MHD_Result ret;
	(void)version;

	if (!up) {
		if (!(up = calloc(1, sizeof(*up))))
			return MHD_NO;
		*req_cls = up;
		return MHD_YES;
	}
	if (*upload_size) {
		size_t k = *upload_size;
		*upload_size = 0;
		if (up->too_large || up->len + k > FB_MAX_BODY) {
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
			reply_problem(&r, 413, "BODY_TOO_LARGE", "the request body exceeds %d bytes",
				      FB_MAX_BODY);
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
	fb_upload *up = *req_cls;
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
	fputs("usage: fabric [options]\n"
	      "An in-memory interconnect provider API: ports and asynchronously\n"
	      "provisioned virtual connections.\n"
	      "\n"
	      "  --listen HOST:PORT          address to listen on (default 127.0.0.1:0, a free port)\n"
	      "  --port-file FILE            write the bound port to FILE once listening\n"
	      "  --ports N                   pre-provisioned ports port-1..port-N (default 4)\n"
	      "  --port-speed-mbps N         speed of every port (default 10000)\n"
	      "  --provision-delay-ms N      PENDING lasts N ms (default 0)\n"
	      "  --deprovision-delay-ms N    DEPROVISIONING lasts N ms (default 0)\n"
	      "  --provision-fail-rate F     a fraction F of provisionings fail (default 0)\n"
	      "  --latency-ms N              delay every API request by N ms (default 0)\n"
	      "  --fail-rate F               answer a fraction F of API requests 500/503 (default 0)\n"
	      "  --rate-429 F                answer a fraction F of API requests 429 (default 0)\n"
	      "  --retry-after S             Retry-After seconds sent with 429 (default 1)\n"
	      "  --seed N                    seed of the fault RNG (default: random)\n"
	      "  --token T                   require 'Authorization: Bearer T' on the API\n"
	      "  --state-file FILE           keep the connections in FILE across restarts\n"
	      "  --help                      show this help\n"
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

int main(int argc, char **argv)
{
	enum { O_LISTEN = 1, O_PORT_FILE, O_PORTS, O_SPEED, O_PDELAY, O_DDELAY, O_PFAIL,
	       O_LATENCY, O_FAIL, O_429, O_RETRY, O_SEED, O_TOKEN, O_STATE, O_HELP };
	static const struct option opts[] = {
		{ "listen", required_argument, NULL, O_LISTEN },
		{ "port-file", required_argument, NULL, O_PORT_FILE },
		{ "ports", required_argument, NULL, O_PORTS },
		{ "port-speed-mbps", required_argument, NULL, O_SPEED },
		{ "provision-delay-ms", required_argument, NULL, O_PDELAY },
		{ "deprovision-delay-ms", required_argument, NULL, O_DDELAY },
		{ "provision-fail-rate", required_argument, NULL, O_PFAIL },
		{ "latency-ms", required_argument, NULL, O_LATENCY },
		{ "fail-rate", required_argument, NULL, O_FAIL },
		{ "rate-429", required_argument, NULL, O_429 },
		{ "retry-after", required_argument, NULL, O_RETRY },
		{ "seed", required_argument, NULL, O_SEED },
		{ "token", required_argument, NULL, O_TOKEN },
		{ "state-file", required_argument, NULL, O_STATE },
		{ "help", no_argument, NULL, O_HELP },
		{ NULL, 0, NULL, 0 },
	};
	static fb_server srv;
	const char *listen_spec = "127.0.0.1:0", *port_file = NULL;
	struct addrinfo *ai = NULL;
	struct MHD_Daemon *d = NULL;
	const union MHD_DaemonInfo *info;
	char host[NI_MAXHOST];
	unsigned flags, port;
	long v, nports = 4, speed = 10000;
	uint64_t seed = random_u64();
	sigset_t sigs;
	int opt, sig, rc = 1;

	srv.cfg.retry_after = 1;
	while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		bool ok = true;
		switch (opt) {
		case O_LISTEN: listen_spec = optarg; break;
		case O_PORT_FILE: port_file = optarg; break;
		case O_PORTS: ok = parse_long(optarg, 1, FB_MAX_PORTS, &nports); break;
		case O_SPEED: ok = parse_long(optarg, 1, 100000000, &speed); break;
		case O_PDELAY: ok = parse_long(optarg, 0, 3600000, &srv.cfg.provision_delay_ms); break;
		case O_DDELAY: ok = parse_long(optarg, 0, 3600000, &srv.cfg.deprovision_delay_ms); break;
		case O_PFAIL: ok = parse_rate(optarg, &srv.cfg.provision_fail_rate); break;
		case O_LATENCY: ok = parse_long(optarg, 0, 3600000, &srv.cfg.latency_ms); break;
		case O_FAIL: ok = parse_rate(optarg, &srv.cfg.fail_rate); break;
		case O_429: ok = parse_rate(optarg, &srv.cfg.rate_429); break;
		case O_RETRY: ok = parse_long(optarg, 0, 86400, &srv.cfg.retry_after); break;
		case O_SEED:
			ok = parse_long(optarg, LONG_MIN, LONG_MAX, &v);
			seed = (uint64_t)v;
			break;
		case O_TOKEN: ok = *optarg != '\0'; srv.token = optarg; break;
		case O_STATE: ok = *optarg != '\0'; srv.state_file = optarg; break;
		case O_HELP: usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
		if (!ok) {
			fprintf(stderr, "fabric: bad value for --%s: %s\n", opts[opt - 1].name, optarg);
			return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "fabric: unexpected argument %s\n", argv[optind]);
		return 2;
	}
	if (resolve_listen(listen_spec, &ai) != 0) {
		fprintf(stderr, "fabric: cannot use --listen %s (want HOST:PORT)\n", listen_spec);
		return 2;
	}

	srv.rng = mix64(seed) | 1;
	srv.id_base = random_u64();
	json_object_seed(0);
	if (srv.state_file && load_state(&srv) != 0)
		goto done;
	if (!(srv.ports = calloc((size_t)nports, sizeof(*srv.ports)))) {
		fprintf(stderr, "fabric: out of memory\n");
		goto done;
	}
	srv.nports = (int)nports;
	for (int i = 0; i < srv.nports; i++) {
		fb_port *p = &srv.ports[i];
		snprintf(p->id, sizeof(p->id), "port-%d", i + 1);
		snprintf(p->name, sizeof(p->name), "lab-port-%d", i + 1);
		p->location = metros[i % ARRAY_SIZE(metros)];
		p->speed_mbps = speed;
	}
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
			     MHD_OPTION_CONNECTION_LIMIT, (unsigned)FB_MAX_CONNECTIONS,
			     MHD_OPTION_THREAD_STACK_SIZE, (size_t)FB_THREAD_STACK,
			     MHD_OPTION_CONNECTION_TIMEOUT, 120u,
			     MHD_OPTION_NOTIFY_COMPLETED, on_completed, &srv,
			     MHD_OPTION_END);
	if (!d) {
		fprintf(stderr, "fabric: cannot listen on %s\n", listen_spec);
		goto done;
	}
	info = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
	port = info ? info->port : 0;
	if (getnameinfo(ai->ai_addr, ai->ai_addrlen, host, sizeof(host), NULL, 0,
			NI_NUMERICHOST) != 0)
		snprintf(host, sizeof(host), "127.0.0.1");
	if (port_file && write_port_file(port_file, port) != 0) {
		fprintf(stderr, "fabric: cannot write %s: %s\n", port_file, strerror(errno));
		goto done;
	}
	printf(ai->ai_family == AF_INET6 ? "fabric listening on http://[%s]:%u (%d ports)\n"
					  : "fabric listening on http://%s:%u (%d ports)\n",
	       host, port, srv.nports);
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
	free(srv.ports);
	free(srv.conns);
	return rc;
}
