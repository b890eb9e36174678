/*
 * k8s.c - the local lab's Kubernetes API server: an in-memory emulator of the
 * published REST API's behaviour for Namespaces, Services, ConfigMaps and
 * Deployments, for the edge-cloud/kubernetes module and its tests.
 *
 * Paths (JSON only):
 *   /api/v1/namespaces[/{name}]
 *   /api/v1/namespaces/{ns}/services[/{name}]
 *   /api/v1/namespaces/{ns}/configmaps[/{name}]
 *   /apis/apps/v1/namespaces/{ns}/deployments[/{name}[/status]]
 * with list (GET, ?labelSelector=k=v,k2,k3!=v), get, create (POST), replace
 * (PUT of the whole object) and delete.  What it keeps of the real API:
 * metadata.uid, a cluster-wide monotonic resourceVersion (a PUT naming a
 * stale one is 409 Conflict), creationTimestamp, generation (bumped when the
 * spec changes), server-side defaults (Service clusterIP and port defaults,
 * Deployment strategy, pod template defaults, the revision annotation),
 * validation (422 Invalid with causes), errors as Status objects
 * {"kind":"Status","status":"Failure","reason":"NotFound","code":404,...},
 * Deployments that become Available --rollout-delay-ms after each spec
 * change (status.replicas / updatedReplicas / readyReplicas /
 * availableReplicas / observedGeneration / conditions), and namespaces that
 * stay Terminating for --terminating-ms after a delete (creating in them is
 * 403; deleting them again is 409) before they and their objects are gone.
 * A Deployment annotated lab.mecorch.io/rollout-fail: "true" never becomes
 * available: its Progressing condition turns False (ProgressDeadlineExceeded).
 *
 * Time-driven changes (rollouts, namespace purges) are applied lazily, at the
 * start of each request, so what a client observes is the same as if a
 * controller had run at the deadline.  With --state-file the store is
 * rewritten (temp file, rename) after every change and loaded at start, so
 * a server killed and restarted keeps its objects, as an etcd-backed one.
 *
 * Bearer tokens: --token T is required on the API (401 without it);
 * --readonly-token R may only read (403 on writes).  Faults: --latency-ms,
 * --fail-rate (500/503 before anything is done), changeable at run time
 * through PUT /_config.  Control endpoints (never delayed, failed nor
 * authenticated): GET /_stats, GET|PUT /_config, DELETE /_objects.  /version
 * and /healthz answer without a token, as on a real server.
 *
 * Concurrency: one thread per connection (libmicrohttpd); one mutex guards
 * the store and the counters.  A stand-alone executable: libmicrohttpd,
 * jansson and pthread only.  See examples/lab/README.md.
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

#define K8_MAX_BODY (3 * 1024 * 1024) /* the real API's default limit */
#define K8_MAX_SEGS 10
#define K8_THREAD_STACK (1024 * 1024)
#define ROLLOUT_FAIL_ANNOTATION "lab.mecorch.io/rollout-fail"
#define REVISION_ANNOTATION "deployment.kubernetes.io/revision"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

typedef enum { K8_GET, K8_POST, K8_PUT, K8_PATCH, K8_DELETE, K8_OTHER, K8_METHOD_COUNT } k8_method;

static const char *const method_names[K8_METHOD_COUNT] = {
	"GET", "POST", "PUT", "PATCH", "DELETE", "OTHER",
};

/* The kinds served.  resource is the path segment and the store prefix. */
typedef struct {
	const char *resource;
	const char *kind;
	const char *api_version;
	const char *group;           /* "" for the core group */
	bool namespaced;
	bool dns_label;              /* names are DNS-1123 labels (else subdomains) */
	bool has_generation;
} k8_kind;

static const k8_kind kinds[] = {
	{ "namespaces", "Namespace", "v1", "", false, true, false },
	{ "services", "Service", "v1", "", true, true, true },
	{ "configmaps", "ConfigMap", "v1", "", true, false, false },
	{ "deployments", "Deployment", "apps/v1", "apps", true, false, true },
};

typedef struct {
	long latency_ms;
	double fail_rate;
	long rollout_delay_ms;
	long terminating_ms;
} k8_config;

typedef struct {
	pthread_mutex_t lock;        /* guards everything below */
	k8_config cfg;
	uint64_t rng;
	uint64_t requests[K8_METHOD_COUNT];
	uint64_t responses[600];
	const char *token;
	const char *readonly_token;

	json_t *objects;             /* "resource/ns/name" -> object */
	json_t *rollouts;            /* "deployments/ns/name" -> due time (ms, monotonic) */
	json_t *purges;              /* namespace name -> due time */
	uint64_t rv;                 /* the last resourceVersion handed out */
	uint32_t next_ip;            /* Service clusterIP allocator */
	uint32_t next_node_port;

	const char *state_file;      /* --state-file, or NULL: memory only */
	uint64_t saved_rv;           /* the resourceVersion last saved */
} k8_server;

typedef struct {
	char *body;
	size_t len, cap;
	bool too_large;
} k8_upload;

/* A parsed API path. */
typedef struct {
	const k8_kind *kind;
	char ns[254];                /* namespaced kinds */
	char name[254];              /* item routes; "" for the collection */
	bool status;                 /* the /status subresource */
} k8_path;

typedef struct {
	k8_server *srv;
	struct MHD_Connection *conn;
	k8_method method;
	const char *body;
	size_t body_len;
	bool readonly;               /* authenticated with --readonly-token */
} k8_call;

typedef struct {
	int status;
	char *body;
	bool www_auth;
} k8_reply;

/* ---- small helpers ---------------------------------------------------- */

static uint64_t mix64(uint64_t z)
{
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

/* Uniform in [0, 1).  Caller holds srv->lock. */
static double rng_next(k8_server *s)
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

static int64_t mono_ms(void)
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

/* RFC 3339 UTC, seconds precision, as Kubernetes writes timestamps. */
static void rfc3339_now(char *out, size_t n)
{
	time_t t = time(NULL);
	struct tm tm;
	gmtime_r(&t, &tm);
	strftime(out, n, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static void new_uid(char *out, size_t n)
{
	uint64_t a = random_u64(), b = random_u64();
	snprintf(out, n, "%08x-%04x-4%03x-%04x-%012llx", (unsigned)(a >> 32),
		 (unsigned)(a >> 16) & 0xffff, (unsigned)a & 0xfff,
		 (unsigned)((b >> 48) & 0x3fff) | 0x8000, (unsigned long long)(b & 0xffffffffffffULL));
}

/* Next resourceVersion as a string.  Caller holds the lock. */
static json_t *next_rv(k8_server *s)
{
	char buf[24];
	snprintf(buf, sizeof(buf), "%llu", (unsigned long long)++s->rv);
	return json_string(buf);
}

static bool dns_label(const char *s)
{
	size_t n = strlen(s);
	if (n == 0 || n > 63)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		bool alnum = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
		if (!alnum && !(c == '-' && i > 0 && i < n - 1))
			return false;
	}
	return true;
}

static bool dns_subdomain(const char *s)
{
	size_t n = strlen(s);
	const char *p = s;
	if (n == 0 || n > 253)
		return false;
	while (*p) {
		const char *dot = strchr(p, '.');
		size_t len = dot ? (size_t)(dot - p) : strlen(p);
		char part[64];
		if (len == 0 || len > 63)
			return false;
		memcpy(part, p, len);
		part[len] = '\0';
		if (!dns_label(part))
			return false;
		p += len;
		if (*p == '.')
			p++;
		if (dot && !*p)
			return false;
	}
	return true;
}

static void store_key(char *out, size_t n, const k8_kind *k, const char *ns, const char *name)
{
	snprintf(out, n, "%s/%s/%s", k->resource, k->namespaced ? ns : "", name);
}

/* ---- replies: Status objects ------------------------------------------ */

static void reply_json(k8_reply *r, int status, json_t *j)
{
	free(r->body);
	r->status = status;
	r->body = j ? json_dumps(j, JSON_COMPACT) : NULL;
	json_decref(j);
	if (!r->body)
		r->status = 500;
}

static const char *reason_of(int code)
{
	switch (code) {
	case 400: return "BadRequest";
	case 401: return "Unauthorized";
	case 403: return "Forbidden";
	case 404: return "NotFound";
	case 405: return "MethodNotAllowed";
	case 409: return "Conflict";
	case 413: return "RequestEntityTooLarge";
	case 415: return "UnsupportedMediaType";
	case 422: return "Invalid";
	case 503: return "ServiceUnavailable";
	default: return "InternalError";
	}
}

/* A Status failure.  reason NULL: the code's usual reason.  details may be
 * NULL (stolen otherwise). */
static void reply_status(k8_reply *r, int code, const char *reason, json_t *details,
			 const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static void reply_status(k8_reply *r, int code, const char *reason, json_t *details,
			 const char *fmt, ...)
{
	char msg[600];
	va_list ap;
	json_t *st;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	st = json_pack("{s:s, s:s, s:{}, s:s, s:s, s:s, s:i}", "kind", "Status", "apiVersion", "v1",
		       "metadata", "status", "Failure", "message", msg, "reason",
		       reason ? reason : reason_of(code), "code", code);
	if (!st) /* a message that is not UTF-8 */
		st = json_pack("{s:s, s:s, s:{}, s:s, s:s, s:i}", "kind", "Status", "apiVersion", "v1",
			       "metadata", "status", "Failure", "reason",
			       reason ? reason : reason_of(code), "code", code);
	if (st && details)
		json_object_set_new(st, "details", details);
	else
		json_decref(details);
	reply_json(r, code, st);
}

static json_t *details_of(const k8_kind *k, const char *name)
{
	json_t *d = json_pack("{s:s}", "kind", k->resource);
	if (d && name && *name)
		json_object_set_new(d, "name", json_string(name));
	if (d && *k->group)
		json_object_set_new(d, "group", json_string(k->group));
	return d;
}

static void reply_not_found(k8_reply *r, const k8_kind *k, const char *name)
{
	reply_status(r, 404, NULL, details_of(k, name), "%s \"%s\" not found", k->resource, name);
}

/* 422 Invalid with one cause. */
static void reply_invalid(k8_reply *r, const k8_kind *k, const char *name, const char *field,
			  const char *cause_reason, const char *fmt, ...)
	__attribute__((format(printf, 6, 7)));
static void reply_invalid(k8_reply *r, const k8_kind *k, const char *name, const char *field,
			  const char *cause_reason, const char *fmt, ...)
{
	char what[400];
	json_t *d = details_of(k, name && *name ? name : NULL);
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	if (d)
		json_object_set_new(d, "causes", json_pack("[{s:s, s:s, s:s}]", "reason", cause_reason,
							   "message", what, "field", field));
	reply_status(r, 422, NULL, d, "%s \"%s\" is invalid: %s: %s", k->kind,
		     name && *name ? name : "", field, what);
}

static enum MHD_Result reply_send(struct MHD_Connection *conn, k8_reply *r)
{
	struct MHD_Response *resp;
	enum MHD_Result ret;
	if (r->body) {
		resp = MHD_create_response_from_buffer_with_free_callback(strlen(r->body), r->body,
									  free);
		if (resp)
			r->body = NULL;
	} else {
		resp = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
	}
	if (!resp) {
		free(r->body);
		return MHD_NO;
	}
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
	if (r->www_auth)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE,
					"Bearer realm=\"kubernetes\"");
	ret = MHD_queue_response(conn, (unsigned)r->status, resp);
	MHD_destroy_response(resp);
	return ret;
}

/* ---- the controllers (lazy) -------------------------------------------- */

static json_t *condition(const char *type, const char *status, const char *reason,
			 const char *message)
{
	char ts[40];
	rfc3339_now(ts, sizeof(ts));
	return json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "type", type, "status", status,
			 "lastUpdateTime", ts, "lastTransitionTime", ts, "reason", reason,
			 "message", message);
}

static bool rollout_fails(json_t *dep)
{
	const char *v = json_string_value(json_object_get(
		json_object_get(json_object_get(dep, "metadata"), "annotations"), ROLLOUT_FAIL_ANNOTATION));
	return v && strcmp(v, "true") == 0;
}

/* The status of a Deployment whose rollout of the current generation has
 * begun (done == false) or finished.  prev: the status before (borrowed, may
 * be NULL). */
static json_t *deployment_status(json_t *dep, json_t *prev, bool done)
{
	json_t *meta = json_object_get(dep, "metadata");
	json_int_t gen = json_integer_value(json_object_get(meta, "generation"));
	json_int_t want = json_integer_value(json_object_get(json_object_get(dep, "spec"), "replicas"));
	const char *name = json_string_value(json_object_get(meta, "name"));
	json_int_t avail_before = json_integer_value(json_object_get(prev, "availableReplicas"));
	json_t *st = json_object(), *conds = json_array();
	char msg[400];

	if (!st || !conds) {
		json_decref(st);
		json_decref(conds);
		return NULL;
	}
	if (done && rollout_fails(dep)) {
		json_object_set_new(st, "observedGeneration", json_integer(gen));
		json_object_set_new(st, "replicas", json_integer(want));
		json_object_set_new(st, "updatedReplicas", json_integer(want));
		json_object_set_new(st, "unavailableReplicas", json_integer(want));
		snprintf(msg, sizeof(msg), "Deployment does not have minimum availability.");
		json_array_append_new(conds, condition("Available", want == 0 ? "True" : "False",
						       "MinimumReplicasUnavailable", msg));
		snprintf(msg, sizeof(msg), "ReplicaSet \"%s-lab\" has timed out progressing.", name);
		json_array_append_new(conds, condition("Progressing", "False",
						       "ProgressDeadlineExceeded", msg));
	} else if (done) {
		json_object_set_new(st, "observedGeneration", json_integer(gen));
		json_object_set_new(st, "replicas", json_integer(want));
		json_object_set_new(st, "updatedReplicas", json_integer(want));
		if (want > 0) {
			json_object_set_new(st, "readyReplicas", json_integer(want));
			json_object_set_new(st, "availableReplicas", json_integer(want));
		}
		json_array_append_new(conds, condition("Available", "True", "MinimumReplicasAvailable",
						       "Deployment has minimum availability."));
		snprintf(msg, sizeof(msg), "ReplicaSet \"%s-lab\" has successfully progressed.", name);
		json_array_append_new(conds, condition("Progressing", "True", "NewReplicaSetAvailable",
						       msg));
	} else {
		/* Rolling: the old pods keep serving, none of the new ones is ready. */
		json_object_set_new(st, "observedGeneration", json_integer(gen));
		json_object_set_new(st, "replicas", json_integer(avail_before));
		json_object_set_new(st, "updatedReplicas", json_integer(0));
		if (avail_before > 0) {
			json_object_set_new(st, "readyReplicas", json_integer(avail_before));
			json_object_set_new(st, "availableReplicas", json_integer(avail_before));
		}
		if (want - avail_before > 0)
			json_object_set_new(st, "unavailableReplicas", json_integer(want - avail_before));
		json_array_append_new(conds, condition("Available",
						       avail_before >= want && avail_before > 0 ? "True" : "False",
						       avail_before >= want && avail_before > 0
							       ? "MinimumReplicasAvailable"
							       : "MinimumReplicasUnavailable",
						       "Deployment rollout in progress."));
		snprintf(msg, sizeof(msg), "ReplicaSet \"%s-lab\" is progressing.", name);
		json_array_append_new(conds, condition("Progressing", "True",
						       prev ? "ReplicaSetUpdated" : "NewReplicaSetCreated", msg));
	}
	json_object_set_new(st, "conditions", conds);
	return st;
}

/* Apply what the controllers would have done by now.  Caller holds the lock. */
static void sweep(k8_server *s)
{
	int64_t now = mono_ms();
	const char *key;
	json_t *due, *tmp;

	json_object_foreach_safe(s->rollouts, tmp, key, due) {
		json_t *dep;
		if (json_integer_value(due) > now)
			continue;
		dep = json_object_get(s->objects, key);
		if (dep) {
			json_t *upd = json_copy(dep);
			json_t *st = upd ? deployment_status(upd, json_object_get(dep, "status"), true) : NULL;
			if (upd && st) {
				json_t *meta = json_copy(json_object_get(upd, "metadata"));
				json_object_set_new(upd, "status", st);
				json_object_set_new(meta, "resourceVersion", next_rv(s));
				json_object_set_new(upd, "metadata", meta);
				json_object_set(s->objects, key, upd);
			} else {
				json_decref(st);
			}
			json_decref(upd);
		}
		json_object_del(s->rollouts, key);
	}

	json_object_foreach_safe(s->purges, tmp, key, due) {
		char prefix[300];
		const char *okey;
		json_t *obj, *tmp2;
		if (json_integer_value(due) > now)
			continue;
		for (size_t i = 0; i < ARRAY_SIZE(kinds); i++) {
			if (!kinds[i].namespaced)
				continue;
			snprintf(prefix, sizeof(prefix), "%s/%s/", kinds[i].resource, key);
			json_object_foreach_safe(s->objects, tmp2, okey, obj) {
				if (strncmp(okey, prefix, strlen(prefix)) == 0) {
					json_object_del(s->rollouts, okey);
					json_object_del(s->objects, okey);
				}
			}
		}
		snprintf(prefix, sizeof(prefix), "namespaces//%s", key);
		json_object_del(s->objects, prefix);
		json_object_del(s->purges, key);
		s->rv++;
	}
}

/* ---- persistence (--state-file) ----------------------------------------- */

/* {"due key": remaining ms} of a deadline map, for saving. */
static json_t *remaining_of(json_t *deadlines, int64_t now)
{
	json_t *out = json_object(), *v;
	const char *k;
	json_object_foreach(deadlines, k, v) {
		int64_t left = json_integer_value(v) - now;
		json_object_set_new(out, k, json_integer(left > 0 ? left : 0));
	}
	return out;
}

/* Write the store to --state-file when it changed since the last save
 * (temp file, then rename: a crash leaves the old or the new file).
 * Caller holds the lock.  A failure is reported on stderr, not to clients. */
static void save_state(k8_server *s)
{
	char tmp[PATH_MAX];
	int64_t now = mono_ms();
	json_t *st;
	if (!s->state_file || s->rv == s->saved_rv)
		return;
	st = json_pack("{s:I, s:I, s:I, s:O, s:o, s:o}", "resource_version", (json_int_t)s->rv,
		       "next_ip", (json_int_t)s->next_ip, "next_node_port", (json_int_t)s->next_node_port,
		       "objects", s->objects, "rollouts", remaining_of(s->rollouts, now),
		       "purges", remaining_of(s->purges, now));
	snprintf(tmp, sizeof(tmp), "%s.tmp", s->state_file);
	if (!st || json_dump_file(st, tmp, JSON_COMPACT) != 0 || rename(tmp, s->state_file) != 0)
		fprintf(stderr, "k8s: cannot save %s: %s\n", s->state_file, strerror(errno));
	else
		s->saved_rv = s->rv;
	json_decref(st);
}

/* Load --state-file if it exists: 1 loaded, 0 no file, -1 unreadable. */
static int load_state(k8_server *s)
{
	json_error_t err;
	json_t *st, *v;
	const char *k;
	int64_t now = mono_ms();
	if (access(s->state_file, F_OK) != 0)
		return 0;
	if (!(st = json_load_file(s->state_file, 0, &err)) ||
	    !json_is_object(json_object_get(st, "objects"))) {
		fprintf(stderr, "k8s: cannot load %s: %s\n", s->state_file, st ? "no objects" : err.text);
		json_decref(st);
		return -1;
	}
	json_object_update(s->objects, json_object_get(st, "objects"));
	json_object_foreach(json_object_get(st, "rollouts"), k, v)
		json_object_set_new(s->rollouts, k, json_integer(now + json_integer_value(v)));
	json_object_foreach(json_object_get(st, "purges"), k, v)
		json_object_set_new(s->purges, k, json_integer(now + json_integer_value(v)));
	s->rv = s->saved_rv = (uint64_t)json_integer_value(json_object_get(st, "resource_version"));
	s->next_ip = (uint32_t)json_integer_value(json_object_get(st, "next_ip"));
	s->next_node_port = (uint32_t)json_integer_value(json_object_get(st, "next_node_port"));
	json_decref(st);
	return 1;
}

/* ---- request bodies ---------------------------------------------------- */

static json_t *body_object(const k8_call *c, const k8_kind *k, k8_reply *r)
{
	json_error_t err;
	json_t *j;
	if (c->body_len == 0) {
		reply_status(r, 400, NULL, NULL, "the body of the request was empty");
		return NULL;
	}
	j = json_loadb(c->body, c->body_len, 0, &err);
	if (!j) {
		reply_status(r, 400, NULL, NULL, "the body of the request could not be decoded: "
			     "line %d, column %d: %s", err.line, err.column, err.text);
		return NULL;
	}
	if (!json_is_object(j)) {
		json_decref(j);
		reply_status(r, 400, NULL, NULL, "the body of the request was not a %s object",
			     k->kind);
		return NULL;
	}
	return j;
}

/* A map[string]string field (labels, annotations, data, selectors). */
static bool string_map_ok(json_t *m)
{
	const char *k;
	json_t *v;
	if (!m || json_is_null(m))
		return true;
	if (!json_is_object(m))
		return false;
	json_object_foreach(m, k, v)
		if (!json_is_string(v))
			return false;
	return true;
}

/* Does selector (matchLabels-like map) select labels? */
static bool labels_match(json_t *selector, json_t *labels)
{
	const char *k;
	json_t *v;
	json_object_foreach(selector, k, v) {
		json_t *l = json_object_get(labels, k);
		if (!json_is_string(l) || strcmp(json_string_value(l), json_string_value(v)) != 0)
			return false;
	}
	return true;
}

/* Check the parts of an incoming object every kind shares and the
 * kind-specific rules; fill defaults.  name: the object's name.  old: the
 * stored object on a replace (borrowed), NULL on create.  false with the
 * reply set. */
static bool validate_and_default(k8_server *s, const k8_kind *k, json_t *obj, json_t *old,
				 const char *name, k8_reply *r)
{
	json_t *meta = json_object_get(obj, "metadata");
	json_t *spec = json_object_get(obj, "spec");

	if (!string_map_ok(json_object_get(meta, "labels")) ||
	    !string_map_ok(json_object_get(meta, "annotations"))) {
		reply_status(r, 400, NULL, NULL, "%s in version \"%s\" cannot be handled as a %s: "
			     "labels and annotations must map strings to strings", k->kind,
			     k->api_version, k->kind);
		return false;
	}

	if (strcmp(k->resource, "namespaces") == 0) {
		json_t *nspec = json_is_object(spec) ? json_incref(spec) : json_object();
		if (!json_object_get(nspec, "finalizers"))
			json_object_set_new(nspec, "finalizers", json_pack("[s]", "kubernetes"));
		json_object_set_new(obj, "spec", nspec);
		json_object_set_new(obj, "status", old ? json_incref(json_object_get(old, "status"))
						       : json_pack("{s:s}", "phase", "Active"));
		return true;
	}

	if (strcmp(k->resource, "configmaps") == 0) {
		json_t *old_immutable = old ? json_object_get(old, "immutable") : NULL;
		if (!string_map_ok(json_object_get(obj, "data"))) {
			reply_status(r, 400, NULL, NULL, "ConfigMap in version \"v1\" cannot be handled as "
				     "a ConfigMap: data values must be strings");
			return false;
		}
		if (json_is_true(old_immutable)) {
			if (!json_equal(json_object_get(old, "data") ? json_object_get(old, "data") : json_null(),
					json_object_get(obj, "data") ? json_object_get(obj, "data") : json_null())) {
				reply_invalid(r, k, name, "data", "FieldValueForbidden",
					      "Forbidden: field is immutable when `immutable` is set");
				return false;
			}
			if (!json_is_true(json_object_get(obj, "immutable"))) {
				reply_invalid(r, k, name, "immutable", "FieldValueForbidden",
					      "Forbidden: field is immutable when `immutable` is set");
				return false;
			}
		}
		return true;
	}

	if (!json_is_object(spec)) {
		reply_invalid(r, k, name, "spec", "FieldValueRequired", "Required value");
		return false;
	}

	if (strcmp(k->resource, "services") == 0) {
		json_t *ports = json_object_get(spec, "ports"), *p;
		const char *type = json_string_value(json_object_get(spec, "type"));
		const char *cip = json_string_value(json_object_get(spec, "clusterIP"));
		const char *old_cip = old ? json_string_value(json_object_get(
			json_object_get(old, "spec"), "clusterIP")) : NULL;
		size_t i;
		char ipbuf[32];

		if (!type)
			type = "ClusterIP";
		if (strcmp(type, "ClusterIP") != 0 && strcmp(type, "NodePort") != 0 &&
		    strcmp(type, "LoadBalancer") != 0 && strcmp(type, "ExternalName") != 0) {
			reply_invalid(r, k, name, "spec.type", "FieldValueNotSupported",
				      "Unsupported value: \"%s\": supported values: \"ClusterIP\", "
				      "\"ExternalName\", \"LoadBalancer\", \"NodePort\"", type);
			return false;
		}
		json_object_set_new(spec, "type", json_string(type));
		type = json_string_value(json_object_get(spec, "type")); /* the old string is freed */
		if (!string_map_ok(json_object_get(spec, "selector"))) {
			reply_status(r, 400, NULL, NULL, "Service in version \"v1\" cannot be handled as a "
				     "Service: spec.selector must map strings to strings");
			return false;
		}
		if (strcmp(type, "ExternalName") != 0 &&
		    (!json_is_array(ports) || json_array_size(ports) == 0) &&
		    !(cip && strcmp(cip, "None") == 0)) {
			reply_invalid(r, k, name, "spec.ports", "FieldValueRequired", "Required value");
			return false;
		}
		json_array_foreach(ports, i, p) {
			json_t *port = json_object_get(p, "port");
			const char *proto = json_string_value(json_object_get(p, "protocol"));
			char field[64];
			if (!json_is_object(p)) {
				snprintf(field, sizeof(field), "spec.ports[%zu]", i);
				reply_invalid(r, k, name, field, "FieldValueInvalid", "must be an object");
				return false;
			}
			if (!json_is_integer(port) || json_integer_value(port) < 1 ||
			    json_integer_value(port) > 65535) {
				snprintf(field, sizeof(field), "spec.ports[%zu].port", i);
				reply_invalid(r, k, name, field, "FieldValueInvalid",
					      "Invalid value: must be between 1 and 65535, inclusive");
				return false;
			}
			if (json_array_size(ports) > 1 && !json_is_string(json_object_get(p, "name"))) {
				snprintf(field, sizeof(field), "spec.ports[%zu].name", i);
				reply_invalid(r, k, name, field, "FieldValueRequired", "Required value");
				return false;
			}
			if (!proto)
				json_object_set_new(p, "protocol", json_string("TCP"));
			else if (strcmp(proto, "TCP") && strcmp(proto, "UDP") && strcmp(proto, "SCTP")) {
				snprintf(field, sizeof(field), "spec.ports[%zu].protocol", i);
				reply_invalid(r, k, name, field, "FieldValueNotSupported",
					      "Unsupported value: \"%s\"", proto);
				return false;
			}
			if (!json_object_get(p, "targetPort"))
				json_object_set(p, "targetPort", port);
			if ((strcmp(type, "NodePort") == 0 || strcmp(type, "LoadBalancer") == 0) &&
			    !json_object_get(p, "nodePort")) {
				json_t *oldp = old ? json_array_get(json_object_get(json_object_get(old, "spec"),
										   "ports"), i) : NULL;
				json_t *onp = json_object_get(oldp, "nodePort");
				json_object_set_new(p, "nodePort", onp ? json_incref(onp)
						    : json_integer(30000 + (s->next_node_port++ % 2768)));
			}
		}
		if (old_cip && cip && *cip && strcmp(cip, old_cip) != 0) {
			reply_invalid(r, k, name, "spec.clusterIP", "FieldValueInvalid",
				      "Invalid value: \"%s\": field is immutable", cip);
			return false;
		}
		if (strcmp(type, "ExternalName") != 0 && (!cip || !*cip)) {
			if (old_cip) {
				json_object_set_new(spec, "clusterIP", json_string(old_cip));
			} else {
				uint32_t n = s->next_ip++;
				snprintf(ipbuf, sizeof(ipbuf), "10.96.%u.%u", (n / 250) % 256, n % 250 + 2);
				json_object_set_new(spec, "clusterIP", json_string(ipbuf));
			}
		}
		cip = json_string_value(json_object_get(spec, "clusterIP"));
		if (cip && !json_object_get(spec, "clusterIPs"))
			json_object_set_new(spec, "clusterIPs", json_pack("[s]", cip));
		if (!json_object_get(spec, "sessionAffinity"))
			json_object_set_new(spec, "sessionAffinity", json_string("None"));
		if (!json_object_get(spec, "ipFamilies") && cip && strcmp(cip, "None") != 0)
			json_object_set_new(spec, "ipFamilies", json_pack("[s]", "IPv4"));
		if (!json_object_get(spec, "internalTrafficPolicy"))
			json_object_set_new(spec, "internalTrafficPolicy", json_string("Cluster"));
		json_object_set_new(obj, "status", json_pack("{s:{}}", "loadBalancer"));
		return true;
	}

	/* deployments */
	{
		json_t *sel = json_object_get(json_object_get(spec, "selector"), "matchLabels");
		json_t *tmpl = json_object_get(spec, "template");
		json_t *tlabels = json_object_get(json_object_get(tmpl, "metadata"), "labels");
		json_t *pspec = json_object_get(tmpl, "spec");
		json_t *containers = json_object_get(pspec, "containers"), *c;
		json_t *replicas = json_object_get(spec, "replicas");
		size_t i;

		if (replicas && (!json_is_integer(replicas) || json_integer_value(replicas) < 0)) {
			reply_invalid(r, k, name, "spec.replicas", "FieldValueInvalid",
				      "Invalid value: must be greater than or equal to 0");
			return false;
		}
		if (!replicas)
			json_object_set_new(spec, "replicas", json_integer(1));
		if (!json_is_object(sel) || json_object_size(sel) == 0 || !string_map_ok(sel)) {
			reply_invalid(r, k, name, "spec.selector", "FieldValueRequired", "Required value");
			return false;
		}
		if (old && !json_equal(sel, json_object_get(json_object_get(json_object_get(old, "spec"),
									      "selector"), "matchLabels"))) {
			reply_invalid(r, k, name, "spec.selector", "FieldValueInvalid",
				      "Invalid value: field is immutable");
			return false;
		}
		if (!json_is_object(tlabels) || !string_map_ok(tlabels) || !labels_match(sel, tlabels)) {
			reply_invalid(r, k, name, "spec.template.metadata.labels", "FieldValueInvalid",
				      "Invalid value: `selector` does not match template `labels`");
			return false;
		}
		if (!json_is_array(containers) || json_array_size(containers) == 0) {
			reply_invalid(r, k, name, "spec.template.spec.containers", "FieldValueRequired",
				      "Required value");
			return false;
		}
		json_array_foreach(containers, i, c) {
			char field[80];
			const char *image = json_string_value(json_object_get(c, "image"));
			if (!json_is_string(json_object_get(c, "name")) ||
			    !dns_label(json_string_value(json_object_get(c, "name")))) {
				snprintf(field, sizeof(field), "spec.template.spec.containers[%zu].name", i);
				reply_invalid(r, k, name, field, "FieldValueRequired",
					      "Required value: a DNS-1123 label");
				return false;
			}
			if (!image || !*image) {
				snprintf(field, sizeof(field), "spec.template.spec.containers[%zu].image", i);
				reply_invalid(r, k, name, field, "FieldValueRequired", "Required value");
				return false;
			}
			if (!json_object_get(c, "imagePullPolicy")) {
				const char *colon = strrchr(image, ':');
				bool latest = !colon || strchr(colon, '/') || strcmp(colon, ":latest") == 0;
				json_object_set_new(c, "imagePullPolicy",
						    json_string(latest ? "Always" : "IfNotPresent"));
			}
			if (!json_object_get(c, "terminationMessagePath"))
				json_object_set_new(c, "terminationMessagePath",
						    json_string("/dev/termination-log"));
			if (!json_object_get(c, "terminationMessagePolicy"))
				json_object_set_new(c, "terminationMessagePolicy", json_string("File"));
			if (!json_object_get(c, "resources"))
				json_object_set_new(c, "resources", json_object());
			{
				json_t *cports = json_object_get(c, "ports"), *cp;
				size_t j;
				json_array_foreach(cports, j, cp)
					if (json_is_object(cp) && !json_object_get(cp, "protocol"))
						json_object_set_new(cp, "protocol", json_string("TCP"));
			}
		}
		if (!json_object_get(pspec, "restartPolicy"))
			json_object_set_new(pspec, "restartPolicy", json_string("Always"));
		if (!json_object_get(pspec, "dnsPolicy"))
			json_object_set_new(pspec, "dnsPolicy", json_string("ClusterFirst"));
		if (!json_object_get(pspec, "schedulerName"))
			json_object_set_new(pspec, "schedulerName", json_string("default-scheduler"));
		if (!json_object_get(pspec, "terminationGracePeriodSeconds"))
			json_object_set_new(pspec, "terminationGracePeriodSeconds", json_integer(30));
		if (!json_object_get(pspec, "securityContext"))
			json_object_set_new(pspec, "securityContext", json_object());
		if (!json_object_get(spec, "strategy"))
			json_object_set_new(spec, "strategy",
					    json_pack("{s:s, s:{s:s, s:s}}", "type", "RollingUpdate",
						      "rollingUpdate", "maxUnavailable", "25%",
						      "maxSurge", "25%"));
		if (!json_object_get(spec, "revisionHistoryLimit"))
			json_object_set_new(spec, "revisionHistoryLimit", json_integer(10));
		if (!json_object_get(spec, "progressDeadlineSeconds"))
			json_object_set_new(spec, "progressDeadlineSeconds", json_integer(600));
		return true;
	}
}

/* ---- handlers ---------------------------------------------------------- */

/* The namespace ns: 0 when it exists and is Active, else the reply is set
 * (404, or 403 when terminating and creating).  Caller holds the lock. */
static int check_namespace(k8_server *s, const k8_kind *k, const char *ns, const char *name,
			   bool creating, k8_reply *r)
{
	char key[300];
	json_t *nso;
	snprintf(key, sizeof(key), "namespaces//%s", ns);
	nso = json_object_get(s->objects, key);
	if (!nso) {
		reply_status(r, 404, NULL, details_of(&kinds[0], ns), "namespaces \"%s\" not found", ns);
		return -1;
	}
	if (creating && json_object_get(s->purges, ns)) {
		reply_status(r, 403, NULL, details_of(k, name),
			     "%s \"%s\" is forbidden: unable to create new content in namespace %s "
			     "because it is being terminated", k->resource, name, ns);
		return -1;
	}
	return 0;
}

/* labelSelector: "k=v,k==v,k!=v,k,!k" (equality-based only). */
static bool selector_matches(const char *sel, json_t *labels)
{
	char buf[1024], *save = NULL, *term;
	if (!sel || !*sel)
		return true;
	snprintf(buf, sizeof(buf), "%s", sel);
	for (term = strtok_r(buf, ",", &save); term; term = strtok_r(NULL, ",", &save)) {
		char *ne = strstr(term, "!="), *eq = strchr(term, '=');
		json_t *v;
		while (*term == ' ')
			term++;
		if (ne) {
			*ne = '\0';
			v = json_object_get(labels, term);
			if (v && strcmp(json_string_value(v), ne + 2) == 0)
				return false;
		} else if (eq) {
			const char *want = eq[1] == '=' ? eq + 2 : eq + 1;
			*eq = '\0';
			v = json_object_get(labels, term);
			if (!v || strcmp(json_string_value(v), want) != 0)
				return false;
		} else if (term[0] == '!') {
			if (json_object_get(labels, term + 1))
				return false;
		} else if (!json_object_get(labels, term)) {
			return false;
		}
	}
	return true;
}

static int cmp_names(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static void h_list(k8_call *c, const k8_path *p, k8_reply *r)
{
	k8_server *s = c->srv;
	const char *sel = MHD_lookup_connection_value(c->conn, MHD_GET_ARGUMENT_KIND, "labelSelector");
	char prefix[300], listkind[64], rv[24];
	const char **keys = NULL, *key;
	json_t *obj, *items;
	size_t n = 0, cap = 0;

	/* A namespace that does not exist lists empty, as on a real server. */
	snprintf(prefix, sizeof(prefix), "%s/%s/", p->kind->resource, p->kind->namespaced ? p->ns : "");
	json_object_foreach(s->objects, key, obj) {
		if (strncmp(key, prefix, strlen(prefix)) != 0)
			continue;
		if (!selector_matches(sel, json_object_get(json_object_get(obj, "metadata"), "labels")))
			continue;
		if (n == cap) {
			const char **nk = realloc(keys, (cap = cap ? cap * 2 : 32) * sizeof(*nk));
			if (!nk) {
				free(keys);
				reply_status(r, 500, NULL, NULL, "out of memory");
				return;
			}
			keys = nk;
		}
		keys[n++] = key;
	}
	if (n)
		qsort(keys, n, sizeof(*keys), cmp_names);
	items = json_array();
	for (size_t i = 0; i < n; i++) {
		json_t *item = json_copy(json_object_get(s->objects, keys[i]));
		json_object_del(item, "kind"); /* list items carry neither, as on a real server */
		json_object_del(item, "apiVersion");
		json_array_append_new(items, item);
	}
	free(keys);
	snprintf(listkind, sizeof(listkind), "%sList", p->kind->kind);
	snprintf(rv, sizeof(rv), "%llu", (unsigned long long)s->rv);
	reply_json(r, 200, json_pack("{s:s, s:s, s:{s:s}, s:o}", "kind", listkind, "apiVersion",
				     p->kind->api_version, "metadata", "resourceVersion", rv,
				     "items", items));
}

static void h_get(k8_call *c, const k8_path *p, k8_reply *r)
{
	char key[600];
	json_t *obj;
	store_key(key, sizeof(key), p->kind, p->ns, p->name);
	obj = json_object_get(c->srv->objects, key);
	if (!obj) {
		reply_not_found(r, p->kind, p->name);
		return;
	}
	reply_json(r, 200, json_incref(obj));
}

/* Check kind, apiVersion, metadata.name and metadata.namespace of body
 * against the request.  *name: the object's name. */
static bool check_identity(const k8_path *p, json_t *body, const char **name, k8_reply *r)
{
	json_t *meta = json_object_get(body, "metadata");
	const char *kind = json_string_value(json_object_get(body, "kind"));
	const char *av = json_string_value(json_object_get(body, "apiVersion"));
	const char *ns;

	if ((kind && strcmp(kind, p->kind->kind) != 0) || (av && strcmp(av, p->kind->api_version) != 0)) {
		reply_status(r, 400, NULL, NULL, "the API version in the data (%s) does not match the "
			     "expected API version (%s) or the kind (%s) is not %s", av ? av : "",
			     p->kind->api_version, kind ? kind : "", p->kind->kind);
		return false;
	}
	if (meta && !json_is_object(meta)) {
		reply_status(r, 400, NULL, NULL, "metadata must be an object");
		return false;
	}
	*name = json_string_value(json_object_get(meta, "name"));
	if (!*name || !**name) {
		reply_invalid(r, p->kind, "", "metadata.name", "FieldValueRequired",
			      "Required value: name or generateName is required");
		return false;
	}
	if (p->name[0] && strcmp(*name, p->name) != 0) {
		reply_status(r, 400, NULL, NULL, "the name of the object (%s) does not match the name "
			     "on the URL (%s)", *name, p->name);
		return false;
	}
	if (!(p->kind->dns_label ? dns_label(*name) : dns_subdomain(*name))) {
		reply_invalid(r, p->kind, *name, "metadata.name", "FieldValueInvalid",
			      "Invalid value: \"%s\": a lowercase RFC 1123 %s must consist of lower case "
			      "alphanumeric characters, '-'%s", *name,
			      p->kind->dns_label ? "label" : "subdomain",
			      p->kind->dns_label ? "" : " or '.'");
		return false;
	}
	ns = json_string_value(json_object_get(meta, "namespace"));
	if (p->kind->namespaced && ns && *ns && strcmp(ns, p->ns) != 0) {
		reply_status(r, 400, NULL, NULL, "the namespace of the provided object does not match "
			     "the namespace sent on the request");
		return false;
	}
	return true;
}

static void h_create(k8_call *c, const k8_path *p, k8_reply *r)
{
	k8_server *s = c->srv;
	json_t *body = body_object(c, p->kind, r), *meta, *newmeta;
	const char *name;
	char key[600], ts[40], uid[48];

	if (!body)
		return;
	if (!check_identity(p, body, &name, r))
		goto done;
	if (p->kind->namespaced && check_namespace(s, p->kind, p->ns, name, true, r) != 0)
		goto done;
	store_key(key, sizeof(key), p->kind, p->ns, name);
	if (json_object_get(s->objects, key)) {
		reply_status(r, 409, "AlreadyExists", details_of(p->kind, name),
			     "%s \"%s\" already exists", p->kind->resource, name);
		goto done;
	}
	if (!validate_and_default(s, p->kind, body, NULL, name, r))
		goto done;

	meta = json_object_get(body, "metadata");
	newmeta = json_object();
	json_object_set_new(newmeta, "name", json_string(name));
	if (p->kind->namespaced)
		json_object_set_new(newmeta, "namespace", json_string(p->ns));
	new_uid(uid, sizeof(uid));
	json_object_set_new(newmeta, "uid", json_string(uid));
	json_object_set_new(newmeta, "resourceVersion", next_rv(s));
	if (p->kind->has_generation)
		json_object_set_new(newmeta, "generation", json_integer(1));
	rfc3339_now(ts, sizeof(ts));
	json_object_set_new(newmeta, "creationTimestamp", json_string(ts));
	if (json_object_size(json_object_get(meta, "labels")))
		json_object_set(newmeta, "labels", json_object_get(meta, "labels"));
	if (json_object_size(json_object_get(meta, "annotations")))
		json_object_set(newmeta, "annotations", json_object_get(meta, "annotations"));
	if (strcmp(p->kind->resource, "namespaces") == 0) {
		json_t *l = json_object_get(newmeta, "labels");
		if (!l)
			json_object_set_new(newmeta, "labels", l = json_object());
		json_object_set_new(l, "kubernetes.io/metadata.name", json_string(name));
	}
	if (strcmp(p->kind->resource, "deployments") == 0) {
		json_t *a = json_object_get(newmeta, "annotations");
		if (!a)
			json_object_set_new(newmeta, "annotations", a = json_object());
		json_object_set_new(a, REVISION_ANNOTATION, json_string("1"));
	}
	json_object_set_new(body, "metadata", newmeta);
	json_object_set_new(body, "kind", json_string(p->kind->kind));
	json_object_set_new(body, "apiVersion", json_string(p->kind->api_version));
	if (strcmp(p->kind->resource, "deployments") == 0) {
		json_object_set_new(body, "status", deployment_status(body, NULL, false));
		json_object_set_new(s->rollouts, key, json_integer(mono_ms() + s->cfg.rollout_delay_ms));
	}
	json_object_set(s->objects, key, body);
	reply_json(r, 201, json_incref(body));
done:
	json_decref(body);
}

/* PUT: replace the whole object (or its status, on /status). */
static void h_replace(k8_call *c, const k8_path *p, k8_reply *r)
{
	k8_server *s = c->srv;
	json_t *body = body_object(c, p->kind, r), *old, *meta, *oldmeta, *newmeta, *upd = NULL;
	const char *name, *rv;
	char key[600];
	bool spec_changed;

	if (!body)
		return;
	if (!check_identity(p, body, &name, r))
		goto done;
	store_key(key, sizeof(key), p->kind, p->ns, name);
	if (!(old = json_object_get(s->objects, key))) {
		reply_not_found(r, p->kind, name);
		goto done;
	}
	meta = json_object_get(body, "metadata");
	oldmeta = json_object_get(old, "metadata");
	rv = json_string_value(json_object_get(meta, "resourceVersion"));
	if (rv && strcmp(rv, json_string_value(json_object_get(oldmeta, "resourceVersion"))) != 0) {
		reply_status(r, 409, "Conflict", details_of(p->kind, name),
			     "Operation cannot be fulfilled on %s%s%s \"%s\": the object has been "
			     "modified; please apply your changes to the latest version and try again",
			     p->kind->resource, *p->kind->group ? "." : "", p->kind->group, name);
		goto done;
	}
	{
		const char *uid = json_string_value(json_object_get(meta, "uid"));
		if (uid && *uid && strcmp(uid, json_string_value(json_object_get(oldmeta, "uid"))) != 0) {
			reply_status(r, 409, "Conflict", details_of(p->kind, name),
				     "Precondition failed: UID in precondition: %s, UID in object meta: %s",
				     uid, json_string_value(json_object_get(oldmeta, "uid")));
			goto done;
		}
	}

	if (p->status) {
		/* Only the status changes; the rest is the stored object. */
		upd = json_copy(old);
		json_object_set(upd, "status", json_object_get(body, "status") ? json_object_get(body, "status")
									       : json_object());
		newmeta = json_copy(oldmeta);
	} else {
		if (!validate_and_default(s, p->kind, body, old, name, r))
			goto done;
		upd = json_copy(body);
		newmeta = json_copy(oldmeta);
		json_object_del(newmeta, "labels");
		json_object_del(newmeta, "annotations");
		if (json_object_size(json_object_get(meta, "labels")))
			json_object_set(newmeta, "labels", json_object_get(meta, "labels"));
		if (json_object_size(json_object_get(meta, "annotations")))
			json_object_set(newmeta, "annotations", json_object_get(meta, "annotations"));
		if (strcmp(p->kind->resource, "namespaces") == 0) {
			json_t *l = json_object_get(newmeta, "labels");
			if (!l)
				json_object_set_new(newmeta, "labels", l = json_object());
			json_object_set_new(l, "kubernetes.io/metadata.name", json_string(name));
		}
		spec_changed = !json_equal(json_object_get(old, "spec") ? json_object_get(old, "spec") : json_null(),
					   json_object_get(upd, "spec") ? json_object_get(upd, "spec") : json_null());
		if (p->kind->has_generation)
			json_object_set_new(newmeta, "generation", json_integer(
				json_integer_value(json_object_get(oldmeta, "generation")) + (spec_changed ? 1 : 0)));
		if (strcmp(p->kind->resource, "deployments") == 0) {
			/* The revision annotation belongs to the controller: kept,
			 * and bumped when the pod template changes. */
			json_t *a = json_object_get(newmeta, "annotations");
			const char *rev = json_string_value(json_object_get(
				json_object_get(oldmeta, "annotations"), REVISION_ANNOTATION));
			bool tmpl_changed = !json_equal(
				json_object_get(json_object_get(old, "spec"), "template"),
				json_object_get(json_object_get(upd, "spec"), "template"));
			char num[24];
			if (!a)
				json_object_set_new(newmeta, "annotations", a = json_object());
			snprintf(num, sizeof(num), "%ld", (rev ? atol(rev) : 1) + (tmpl_changed ? 1 : 0));
			json_object_set_new(a, REVISION_ANNOTATION, json_string(num));
			json_object_set(upd, "metadata", newmeta);
			if (spec_changed || rollout_fails(upd) != rollout_fails(old)) {
				json_object_set_new(upd, "status", deployment_status(upd, json_object_get(old, "status"),
										     false));
				json_object_set_new(s->rollouts, key,
						    json_integer(mono_ms() + s->cfg.rollout_delay_ms));
			} else {
				json_object_set(upd, "status", json_object_get(old, "status"));
			}
		} else if (strcmp(p->kind->resource, "namespaces") != 0 &&
			   strcmp(p->kind->resource, "services") != 0) {
			json_object_del(upd, "status");
		}
	}
	json_object_set_new(newmeta, "resourceVersion", next_rv(s));
	json_object_set_new(upd, "metadata", newmeta);
	json_object_set_new(upd, "kind", json_string(p->kind->kind));
	json_object_set_new(upd, "apiVersion", json_string(p->kind->api_version));
	json_object_set(s->objects, key, upd);
	reply_json(r, 200, json_incref(upd));
done:
	json_decref(upd);
	json_decref(body);
}

static void h_delete(k8_call *c, const k8_path *p, k8_reply *r)
{
	k8_server *s = c->srv;
	char key[600], ts[40];
	json_t *obj, *opts = NULL, *pre;

	store_key(key, sizeof(key), p->kind, p->ns, p->name);
	if (!(obj = json_object_get(s->objects, key))) {
		reply_not_found(r, p->kind, p->name);
		return;
	}
	if (c->body_len) { /* DeleteOptions: preconditions */
		opts = json_loadb(c->body, c->body_len, 0, NULL);
		pre = json_object_get(opts, "preconditions");
		if (pre) {
			json_t *meta = json_object_get(obj, "metadata");
			const char *uid = json_string_value(json_object_get(pre, "uid"));
			const char *rv = json_string_value(json_object_get(pre, "resourceVersion"));
			if ((uid && strcmp(uid, json_string_value(json_object_get(meta, "uid"))) != 0) ||
			    (rv && strcmp(rv, json_string_value(json_object_get(meta, "resourceVersion"))) != 0)) {
				reply_status(r, 409, "Conflict", details_of(p->kind, p->name),
					     "Operation cannot be fulfilled on %s \"%s\": precondition failed",
					     p->kind->resource, p->name);
				json_decref(opts);
				return;
			}
		}
		json_decref(opts);
	}
	if (strcmp(p->kind->resource, "namespaces") == 0) {
		json_t *upd, *meta;
		if (strcmp(p->name, "default") == 0 || strcmp(p->name, "kube-system") == 0) {
			reply_status(r, 403, NULL, details_of(p->kind, p->name),
				     "namespaces \"%s\" is forbidden: this namespace may not be deleted",
				     p->name);
			return;
		}
		if (json_object_get(s->purges, p->name)) {
			reply_status(r, 409, "Conflict", details_of(p->kind, p->name),
				     "Operation cannot be fulfilled on namespaces \"%s\": The system is "
				     "ensuring all content is removed from this namespace.  Upon completion, "
				     "this namespace will automatically be purged by the system.", p->name);
			return;
		}
		upd = json_copy(obj);
		meta = json_copy(json_object_get(obj, "metadata"));
		rfc3339_now(ts, sizeof(ts));
		json_object_set_new(meta, "deletionTimestamp", json_string(ts));
		json_object_set_new(meta, "resourceVersion", next_rv(s));
		json_object_set_new(upd, "metadata", meta);
		json_object_set_new(upd, "status", json_pack("{s:s}", "phase", "Terminating"));
		json_object_set(s->objects, key, upd);
		json_object_set_new(s->purges, p->name, json_integer(mono_ms() + s->cfg.terminating_ms));
		reply_json(r, 200, upd);
		return;
	}
	{
		json_t *d = details_of(p->kind, p->name);
		json_object_set(d, "uid", json_object_get(json_object_get(obj, "metadata"), "uid"));
		json_object_del(s->rollouts, key);
		json_object_del(s->objects, key);
		s->rv++;
		reply_json(r, 200, json_pack("{s:s, s:s, s:{}, s:s, s:o}", "kind", "Status",
					     "apiVersion", "v1", "metadata", "status", "Success",
					     "details", d));
	}
}

/* ---- routing ------------------------------------------------------------ */

static const k8_kind *kind_of(const char *resource, bool apps)
{
	for (size_t i = 0; i < ARRAY_SIZE(kinds); i++)
		if (strcmp(kinds[i].resource, resource) == 0 && (*kinds[i].group != '\0') == apps)
			return &kinds[i];
	return NULL;
}

/* Parse url into p: 0, or -1 (unknown path). */
static int parse_path(const char *url, k8_path *p)
{
	char buf[1024], *segs[K8_MAX_SEGS], *save = NULL, *tok;
	int n = 0, i;
	bool apps;

	memset(p, 0, sizeof(*p));
	if (strlen(url) >= sizeof(buf))
		return -1;
	strcpy(buf, url);
	for (tok = strtok_r(buf, "/", &save); tok; tok = strtok_r(NULL, "/", &save)) {
		if (n == K8_MAX_SEGS)
			return -1;
		segs[n++] = tok;
	}
	if (n >= 2 && strcmp(segs[0], "api") == 0 && strcmp(segs[1], "v1") == 0) {
		apps = false;
		i = 2;
	} else if (n >= 3 && strcmp(segs[0], "apis") == 0 && strcmp(segs[1], "apps") == 0 &&
		   strcmp(segs[2], "v1") == 0) {
		apps = true;
		i = 3;
	} else {
		return -1;
	}
	if (n - i < 1 || strcmp(segs[i], "namespaces") != 0)
		return -1;
	if (n - i <= 2 && !apps) { /* namespaces[/{name}] */
		p->kind = &kinds[0];
		if (n - i == 2)
			snprintf(p->name, sizeof(p->name), "%s", segs[i + 1]);
		return 0;
	}
	if (n - i < 3 || n - i > 5)
		return -1;
	if (!(p->kind = kind_of(segs[i + 2], apps)) || !p->kind->namespaced)
		return -1;
	snprintf(p->ns, sizeof(p->ns), "%s", segs[i + 1]);
	if (n - i >= 4)
		snprintf(p->name, sizeof(p->name), "%s", segs[i + 3]);
	if (n - i == 5) {
		if (strcmp(segs[i + 4], "status") != 0 || strcmp(p->kind->resource, "deployments") != 0)
			return -1;
		p->status = true;
	}
	return 0;
}

static void api_dispatch(k8_call *c, const char *url, k8_reply *r)
{
	k8_path p;
	if (parse_path(url, &p) != 0) {
		reply_status(r, 404, NULL, NULL, "the server could not find the requested resource");
		return;
	}
	if (c->readonly && c->method != K8_GET) {
		const char *verb = c->method == K8_POST ? "create"
				   : c->method == K8_DELETE ? "delete" : "update";
		reply_status(r, 403, NULL, details_of(p.kind, p.name[0] ? p.name : NULL),
			     "%s \"%s\" is forbidden: User \"lab-readonly\" cannot %s resource \"%s\" "
			     "in API group \"%s\"", p.kind->resource, p.name, verb, p.kind->resource,
			     p.kind->group);
		return;
	}
	pthread_mutex_lock(&c->srv->lock);
	sweep(c->srv);
	if (!p.name[0]) {
		if (c->method == K8_GET)
			h_list(c, &p, r);
		else if (c->method == K8_POST)
			h_create(c, &p, r);
		else
			reply_status(r, 405, NULL, NULL, "the server does not allow this method on the "
				     "requested resource");
	} else {
		if (c->method == K8_GET)
			h_get(c, &p, r);
		else if (c->method == K8_PUT)
			h_replace(c, &p, r);
		else if (c->method == K8_DELETE && !p.status)
			h_delete(c, &p, r);
		else
			reply_status(r, 405, NULL, NULL, "the server does not allow this method on the "
				     "requested resource");
	}
	save_state(c->srv);
	pthread_mutex_unlock(&c->srv->lock);
}

/* ---- control endpoints ------------------------------------------------ */

static json_t *config_json(const k8_server *s)
{
	return json_pack("{s:I, s:f, s:I, s:I, s:b, s:b}",
			 "latency_ms", (json_int_t)s->cfg.latency_ms,
			 "fail_rate", s->cfg.fail_rate,
			 "rollout_delay_ms", (json_int_t)s->cfg.rollout_delay_ms,
			 "terminating_ms", (json_int_t)s->cfg.terminating_ms,
			 "token_required", s->token != NULL,
			 "readonly_token", s->readonly_token != NULL);
}

static bool builtin_namespace(const char *key)
{
	return strcmp(key, "namespaces//default") == 0 || strcmp(key, "namespaces//kube-system") == 0;
}

static void ctl_stats(k8_call *c, k8_reply *r)
{
	k8_server *s = c->srv;
	json_t *st = json_object(), *req = json_object(), *resp = json_object(), *objs = json_object();
	const char *key;
	json_t *obj;
	json_int_t total = 0;
	char code[16], rv[24];

	pthread_mutex_lock(&s->lock);
	sweep(s);
	save_state(s);
	for (int i = 0; i < K8_METHOD_COUNT; i++)
		json_object_set_new(req, method_names[i], json_integer((json_int_t)s->requests[i]));
	for (int i = 0; i < (int)ARRAY_SIZE(s->responses); i++) {
		if (s->responses[i]) {
			snprintf(code, sizeof(code), "%d", i);
			json_object_set_new(resp, code, json_integer((json_int_t)s->responses[i]));
		}
	}
	for (size_t i = 0; i < ARRAY_SIZE(kinds); i++)
		json_object_set_new(objs, kinds[i].resource, json_integer(0));
	json_object_foreach(s->objects, key, obj) {
		const char *slash = strchr(key, '/');
		char res[32];
		size_t n = (size_t)(slash - key);
		if (!slash || n >= sizeof(res) || builtin_namespace(key))
			continue;
		memcpy(res, key, n);
		res[n] = '\0';
		json_object_set_new(objs, res, json_integer(json_integer_value(json_object_get(objs, res)) + 1));
		total++;
	}
	snprintf(rv, sizeof(rv), "%llu", (unsigned long long)s->rv);
	json_object_set_new(st, "resource_version", json_string(rv));
	json_object_set_new(st, "terminating", json_integer((json_int_t)json_object_size(s->purges)));
	json_object_set_new(st, "rolling_out", json_integer((json_int_t)json_object_size(s->rollouts)));
	pthread_mutex_unlock(&s->lock);
	json_object_set_new(st, "requests", req);
	json_object_set_new(st, "responses", resp);
	json_object_set_new(st, "objects", objs);
	json_object_set_new(st, "total_objects", json_integer(total));
	reply_json(r, 200, st);
}

static bool config_number(json_t *body, const char *k, double lo, double hi, bool integer,
			  double *out, k8_reply *r)
{
	json_t *v = json_object_get(body, k);
	double d;
	if (!v)
		return true;
	if (!json_is_number(v) || (integer && !json_is_integer(v))) {
		reply_status(r, 400, NULL, NULL, "%s must be %s", k, integer ? "an integer" : "a number");
		return false;
	}
	d = json_number_value(v);
	if (d < lo || d > hi) {
		reply_status(r, 400, NULL, NULL, "%s must be within [%g, %g]", k, lo, hi);
		return false;
	}
	*out = d;
	return true;
}

static void ctl_config(k8_call *c, k8_reply *r)
{
	static const char *const known[] = {
		"latency_ms", "fail_rate", "rollout_delay_ms", "terminating_ms",
	};
	k8_server *s = c->srv;
	json_t *body, *v;
	const char *k;
	double lat, fail, roll, term;

	if (c->method == K8_GET) {
		pthread_mutex_lock(&s->lock);
		reply_json(r, 200, config_json(s));
		pthread_mutex_unlock(&s->lock);
		return;
	}
	if (!(body = json_loadb(c->body ? c->body : "", c->body_len, 0, NULL)) || !json_is_object(body)) {
		json_decref(body);
		reply_status(r, 400, NULL, NULL, "the body must be a JSON object");
		return;
	}
	json_object_foreach(body, k, v) {
		size_t i;
		for (i = 0; i < ARRAY_SIZE(known); i++)
			if (strcmp(k, known[i]) == 0)
				break;
		if (i == ARRAY_SIZE(known)) {
			reply_status(r, 400, NULL, NULL, "unknown setting %s", k);
			json_decref(body);
			return;
		}
	}
	pthread_mutex_lock(&s->lock);
	lat = (double)s->cfg.latency_ms;
	fail = s->cfg.fail_rate;
	roll = (double)s->cfg.rollout_delay_ms;
	term = (double)s->cfg.terminating_ms;
	if (config_number(body, "latency_ms", 0, 3600000, true, &lat, r) &&
	    config_number(body, "fail_rate", 0, 1, false, &fail, r) &&
	    config_number(body, "rollout_delay_ms", 0, 3600000, true, &roll, r) &&
	    config_number(body, "terminating_ms", 0, 3600000, true, &term, r)) {
		s->cfg.latency_ms = (long)lat;
		s->cfg.fail_rate = fail;
		s->cfg.rollout_delay_ms = (long)roll;
		s->cfg.terminating_ms = (long)term;
		reply_json(r, 200, config_json(s));
	}
	pthread_mutex_unlock(&s->lock);
	json_decref(body);
}

/* Remove every object but the built-in namespaces. */
static void ctl_objects_delete(k8_call *c, k8_reply *r)
{
	k8_server *s = c->srv;
	const char *key;
	json_t *obj, *tmp;
	json_int_t n = 0;
	pthread_mutex_lock(&s->lock);
	json_object_foreach_safe(s->objects, tmp, key, obj) {
		if (builtin_namespace(key))
			continue;
		json_object_del(s->objects, key);
		n++;
	}
	json_object_clear(s->rollouts);
	json_object_clear(s->purges);
	s->rv++;
	save_state(s);
	pthread_mutex_unlock(&s->lock);
	reply_json(r, 200, json_pack("{s:I}", "deleted", n));
}

/* Paths answered without a token and without faults. */
static bool ctl_dispatch(k8_call *c, const char *url, k8_reply *r)
{
	if (strcmp(url, "/_stats") == 0 && c->method == K8_GET)
		ctl_stats(c, r);
	else if (strcmp(url, "/_config") == 0 && (c->method == K8_GET || c->method == K8_PUT))
		ctl_config(c, r);
	else if (strcmp(url, "/_objects") == 0 && c->method == K8_DELETE)
		ctl_objects_delete(c, r);
	else if (strcmp(url, "/version") == 0 && c->method == K8_GET)
		reply_json(r, 200, json_pack("{s:s, s:s, s:s, s:s}", "major", "1", "minor", "29",
					     "gitVersion", "v1.29.0-mecorch-lab", "platform",
					     "linux/amd64"));
	else if ((strcmp(url, "/healthz") == 0 || strcmp(url, "/readyz") == 0) && c->method == K8_GET) {
		free(r->body);
		r->body = strdup("ok");
		r->status = 200;
	} else
		return false;
	return true;
}

/* ---- request handling ------------------------------------------------- */

static k8_method method_of(const char *m)
{
	for (int i = 0; i < K8_OTHER; i++)
		if (strcmp(m, method_names[i]) == 0)
			return (k8_method)i;
	return K8_OTHER;
}

static bool token_equal(const char *got, const char *want)
{
	size_t a = strlen(got), b = strlen(want);
	unsigned char diff = 0;
	for (size_t i = 0; i < a; i++)
		diff |= (unsigned char)(got[i] ^ want[i % (b ? b : 1)]);
	return a == b && diff == 0;
}

/* 1: full access, 2: read-only, 0: refused. */
static int authenticate(const k8_server *s, struct MHD_Connection *conn)
{
	const char *h, *tok;
	if (!s->token && !s->readonly_token)
		return 1;
	h = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
	if (!h || strncasecmp(h, "Bearer ", 7) != 0)
		return 0;
	for (tok = h + 7; *tok == ' '; tok++)
		;
	if (s->token && token_equal(tok, s->token))
		return 1;
	if (s->readonly_token && token_equal(tok, s->readonly_token))
		return 2;
	return 0;
}

static void handle_api(k8_server *s, k8_call *c, const char *url, const k8_upload *up,
		       k8_reply *r)
{
	long delay;
	int fault = 0, auth;

	pthread_mutex_lock(&s->lock);
	s->requests[c->method]++;
	delay = s->cfg.latency_ms;
	if (s->cfg.fail_rate > 0 && rng_next(s) < s->cfg.fail_rate)
		fault = rng_next(s) < 0.5 ? 503 : 500;
	pthread_mutex_unlock(&s->lock);

	if (delay > 0)
		sleep_ms(delay);
	if (fault) {
		reply_status(r, fault, NULL, NULL, "injected failure (fail_rate); nothing was done");
		return;
	}
	auth = authenticate(s, c->conn);
	if (auth == 0) {
		reply_status(r, 401, NULL, NULL, "Unauthorized");
		r->www_auth = true;
		return;
	}
	c->readonly = auth == 2;
	if (up->too_large) {
		reply_status(r, 413, NULL, NULL, "the request body exceeds %d bytes", K8_MAX_BODY);
		return;
	}
	if (c->method == K8_PATCH) {
		reply_status(r, 415, NULL, NULL, "PATCH is not supported by this emulator; "
			     "replace the object with PUT");
		return;
	}
	api_dispatch(c, url, r);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
				  const char *method, const char *version,
				  const char *upload_data, size_t *upload_size, void **req_cls)
{
	k8_server *s = cls;
	k8_upload *up = *req_cls;
	k8_reply r = { .status = 500 };
	k8_call c = { .srv = s, .conn = conn };
	enum MHD_Result ret;
	(void)version;

	if (!up) {
		if (!(up = calloc(1, sizeof(*up))))
			return MHD_NO;
		*req_cls = up;
		return MHD_YES;
	}
	if (*upload_size) {
		size_t n = *upload_size;
		*upload_size = 0;
		if (up->too_large || up->len + n > K8_MAX_BODY) {
			up->too_large = true;
			return MHD_YES;
		}
		if (up->len + n > up->cap) {
			size_t cap = up->cap ? up->cap : 4096;
			char *p;
			while (cap < up->len + n)
				cap *= 2;
			if (!(p = realloc(up->body, cap)))
				return MHD_NO;
			up->body = p;
			up->cap = cap;
		}
		memcpy(up->body + up->len, upload_data, n);
		up->len += n;
		return MHD_YES;
	}

	c.method = method_of(method);
	c.body = up->body;
	c.body_len = up->len;
	if (ctl_dispatch(&c, url, &r))
		return reply_send(conn, &r);

	handle_api(s, &c, url, up, &r);
	pthread_mutex_lock(&s->lock);
	if (r.status >= 0 && r.status < (int)ARRAY_SIZE(s->responses))
		s->responses[r.status]++;
	pthread_mutex_unlock(&s->lock);
	ret = reply_send(conn, &r);
	return ret;
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **req_cls,
			 enum MHD_RequestTerminationCode toe)
{
	k8_upload *up = *req_cls;
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
	fputs("usage: k8s [options]\n"
	      "An in-memory Kubernetes API server for Namespaces, Services, ConfigMaps and\n"
	      "Deployments, for the local lab.\n"
	      "\n"
	      "  --listen HOST:PORT        address to listen on (default 127.0.0.1:0, a free port)\n"
	      "  --port-file FILE          write the bound port to FILE once listening\n"
	      "  --token T                 require 'Authorization: Bearer T' on the API (else 401)\n"
	      "  --readonly-token T        a token that may only read (writes get 403)\n"
	      "  --rollout-delay-ms N      a Deployment is Available N ms after a spec change\n"
	      "                            (default 1000)\n"
	      "  --terminating-ms N        a deleted namespace stays Terminating N ms (default 500)\n"
	      "  --latency-ms N            delay every API request by N ms (default 0)\n"
	      "  --fail-rate F             answer a fraction F of API requests 500/503 (default 0)\n"
	      "  --seed N                  seed of the fault RNG (default: random)\n"
	      "  --state-file FILE         keep the objects in FILE (loaded at start, rewritten\n"
	      "                            after every change), so a restart keeps them\n"
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

/* The namespaces every cluster starts with. */
static void add_builtin_namespaces(k8_server *s)
{
	static const char *const names[] = { "default", "kube-system" };
	char key[64], ts[40], uid[48];
	rfc3339_now(ts, sizeof(ts));
	for (size_t i = 0; i < ARRAY_SIZE(names); i++) {
		json_t *ns;
		new_uid(uid, sizeof(uid));
		ns = json_pack("{s:s, s:s, s:{s:s, s:s, s:o, s:s, s:{s:s}}, s:{s:[s]}, s:{s:s}}",
			       "kind", "Namespace", "apiVersion", "v1",
			       "metadata", "name", names[i], "uid", uid, "resourceVersion", next_rv(s),
			       "creationTimestamp", ts, "labels", "kubernetes.io/metadata.name", names[i],
			       "spec", "finalizers", "kubernetes", "status", "phase", "Active");
		snprintf(key, sizeof(key), "namespaces//%s", names[i]);
		json_object_set_new(s->objects, key, ns);
	}
}

int main(int argc, char **argv)
{
	enum { O_LISTEN = 1, O_PORT_FILE, O_TOKEN, O_RO_TOKEN, O_ROLLOUT, O_TERMINATING,
	       O_LATENCY, O_FAIL, O_SEED, O_STATE, O_HELP };
	static const struct option opts[] = {
		{ "listen", required_argument, NULL, O_LISTEN },
		{ "port-file", required_argument, NULL, O_PORT_FILE },
		{ "token", required_argument, NULL, O_TOKEN },
		{ "readonly-token", required_argument, NULL, O_RO_TOKEN },
		{ "rollout-delay-ms", required_argument, NULL, O_ROLLOUT },
		{ "terminating-ms", required_argument, NULL, O_TERMINATING },
		{ "latency-ms", required_argument, NULL, O_LATENCY },
		{ "fail-rate", required_argument, NULL, O_FAIL },
		{ "seed", required_argument, NULL, O_SEED },
		{ "state-file", required_argument, NULL, O_STATE },
		{ "help", no_argument, NULL, O_HELP },
		{ NULL, 0, NULL, 0 },
	};
	static k8_server srv;
	const char *listen_spec = "127.0.0.1:0", *port_file = NULL;
	struct addrinfo *ai = NULL;
	struct MHD_Daemon *d = NULL;
	const union MHD_DaemonInfo *info;
	char host[NI_MAXHOST];
	unsigned flags, port;
	long v;
	uint64_t seed = random_u64();
	sigset_t sigs;
	int opt, sig, rc = 1;

	srv.cfg.rollout_delay_ms = 1000;
	srv.cfg.terminating_ms = 500;
	while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		bool ok = true;
		switch (opt) {
		case O_LISTEN: listen_spec = optarg; break;
		case O_PORT_FILE: port_file = optarg; break;
		case O_TOKEN: ok = *optarg != '\0'; srv.token = optarg; break;
		case O_RO_TOKEN: ok = *optarg != '\0'; srv.readonly_token = optarg; break;
		case O_ROLLOUT: ok = parse_long(optarg, 0, 3600000, &srv.cfg.rollout_delay_ms); break;
		case O_TERMINATING: ok = parse_long(optarg, 0, 3600000, &srv.cfg.terminating_ms); break;
		case O_LATENCY: ok = parse_long(optarg, 0, 3600000, &srv.cfg.latency_ms); break;
		case O_FAIL: ok = parse_rate(optarg, &srv.cfg.fail_rate); break;
		case O_SEED:
			ok = parse_long(optarg, LONG_MIN, LONG_MAX, &v);
			seed = (uint64_t)v;
			break;
		case O_STATE: ok = *optarg != '\0'; srv.state_file = optarg; break;
		case O_HELP: usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
		if (!ok) {
			fprintf(stderr, "k8s: bad value for --%s: %s\n", opts[opt - 1].name, optarg);
			return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "k8s: unexpected argument %s\n", argv[optind]);
		return 2;
	}
	if (resolve_listen(listen_spec, &ai) != 0) {
		fprintf(stderr, "k8s: cannot use --listen %s (want HOST:PORT)\n", listen_spec);
		return 2;
	}

	srv.rng = mix64(seed) | 1;
	srv.next_ip = (uint32_t)(random_u64() % 1000);
	srv.next_node_port = (uint32_t)(random_u64() % 2768);
	json_object_seed(0);
	srv.objects = json_object();
	srv.rollouts = json_object();
	srv.purges = json_object();
	if (!srv.objects || !srv.rollouts || !srv.purges) {
		fprintf(stderr, "k8s: out of memory\n");
		goto done;
	}
	pthread_mutex_init(&srv.lock, NULL);
	switch (srv.state_file ? load_state(&srv) : 0) {
	case 1:
		break;
	case 0:
		add_builtin_namespaces(&srv);
		save_state(&srv);
		break;
	default:
		goto done;
	}

	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);

	flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_POLL_INTERNAL_THREAD | MHD_USE_ITC |
		MHD_USE_ERROR_LOG;
	if (ai->ai_family == AF_INET6)
		flags |= MHD_USE_IPv6;
	d = MHD_start_daemon(flags, 0, NULL, NULL, on_request, &srv,
			     MHD_OPTION_SOCK_ADDR, ai->ai_addr,
			     MHD_OPTION_CONNECTION_LIMIT, 1024u,
			     MHD_OPTION_THREAD_STACK_SIZE, (size_t)K8_THREAD_STACK,
			     MHD_OPTION_CONNECTION_TIMEOUT, 120u,
			     MHD_OPTION_NOTIFY_COMPLETED, on_completed, &srv,
			     MHD_OPTION_END);
	if (!d) {
		fprintf(stderr, "k8s: cannot listen on %s\n", listen_spec);
		goto done;
	}
	info = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
	port = info ? info->port : 0;
	if (getnameinfo(ai->ai_addr, ai->ai_addrlen, host, sizeof(host), NULL, 0, NI_NUMERICHOST) != 0)
		snprintf(host, sizeof(host), "127.0.0.1");
	if (port_file && write_port_file(port_file, port) != 0) {
		fprintf(stderr, "k8s: cannot write %s: %s\n", port_file, strerror(errno));
		goto done;
	}
	printf(ai->ai_family == AF_INET6 ? "k8s listening on http://[%s]:%u\n"
					  : "k8s listening on http://%s:%u\n", host, port);
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
	json_decref(srv.objects);
	json_decref(srv.rollouts);
	json_decref(srv.purges);
	return rc;
}
