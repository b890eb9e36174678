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
 * jansson and pthread only; labkit.c brings the command line, the HTTP
 * plumbing and the fault injection every lab emulator shares.  See
 * examples/lab/README.md.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "labkit.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define K8_MAX_BODY (3 * 1024 * 1024) /* the real API's default limit */
#define K8_MAX_SEGS 10
#define K8_THREAD_STACK (1024 * 1024)
#define ROLLOUT_FAIL_ANNOTATION "lab.mecorch.io/rollout-fail"
#define REVISION_ANNOTATION "deployment.kubernetes.io/revision"

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


/* The controllers' timing, which PUT /_config can change at run time. */
typedef struct {
	long rollout_delay_ms;
	long terminating_ms;
} k8_config;

typedef struct {
	lk_server lk;                /* lk.lock guards everything below too */
	k8_config cfg;
	const char *readonly_token;  /* --readonly-token (--token is lk.token) */

	json_t *objects;             /* "resource/ns/name" -> object */
	json_t *rollouts;            /* "deployments/ns/name" -> due time (ms, monotonic) */
	json_t *purges;              /* namespace name -> due time */
	uint64_t rv;                 /* the last resourceVersion handed out */
	uint32_t next_ip;            /* Service clusterIP allocator */
	uint32_t next_node_port;

	const char *state_file;      /* --state-file, or NULL: memory only */
	uint64_t saved_rv;           /* the resourceVersion last saved */
} k8_server;

/* A parsed API path. */
typedef struct {
	const k8_kind *kind;
	char ns[254];                /* namespaced kinds */
	char name[254];              /* item routes; "" for the collection */
	bool status;                 /* the /status subresource */
} k8_path;


/* ---- small helpers ---------------------------------------------------- */


static void new_uid(char *out, size_t n)
{
	uint64_t a = lk_random_u64(), b = lk_random_u64();
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
static void reply_status(lk_reply *r, int code, const char *reason, json_t *details,
			 const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static void reply_status(lk_reply *r, int code, const char *reason, json_t *details,
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
	lk_reply_json(r, code, st);
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

static void reply_not_found(lk_reply *r, const k8_kind *k, const char *name)
{
	reply_status(r, 404, NULL, details_of(k, name), "%s \"%s\" not found", k->resource, name);
}

/* 422 Invalid with one cause. */
static void reply_invalid(lk_reply *r, const k8_kind *k, const char *name, const char *field,
			  const char *cause_reason, const char *fmt, ...)
	__attribute__((format(printf, 6, 7)));
static void reply_invalid(lk_reply *r, const k8_kind *k, const char *name, const char *field,
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

/* ---- the controllers (lazy) -------------------------------------------- */

static json_t *condition(const char *type, const char *status, const char *reason,
			 const char *message)
{
	char ts[40];
	lk_rfc3339_now(ts, sizeof(ts), false);
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
	int64_t now = lk_mono_ms();
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
		for (size_t i = 0; i < LK_ARRAY_SIZE(kinds); i++) {
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
	int64_t now = lk_mono_ms();
	json_t *st;
	if (!s->state_file || s->rv == s->saved_rv)
		return;
	st = json_pack("{s:I, s:I, s:I, s:O, s:o, s:o}", "resource_version", (json_int_t)s->rv,
		       "next_ip", (json_int_t)s->next_ip, "next_node_port", (json_int_t)s->next_node_port,
		       "objects", s->objects, "rollouts", remaining_of(s->rollouts, now),
		       "purges", remaining_of(s->purges, now));
	if (lk_save_json(&s->lk, s->state_file, st) == 0)
		s->saved_rv = s->rv;
}

/* Load --state-file if it exists: 1 loaded, 0 no file, -1 unreadable. */
static int load_state(k8_server *s)
{
	json_error_t err;
	json_t *st, *v;
	const char *k;
	int64_t now = lk_mono_ms();
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

static json_t *body_object(const lk_call *c, const k8_kind *k, lk_reply *r)
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
				 const char *name, lk_reply *r)
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
			   bool creating, lk_reply *r)
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

static void h_list(lk_call *c, const k8_path *p, lk_reply *r)
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
	lk_reply_json(r, 200, json_pack("{s:s, s:s, s:{s:s}, s:o}", "kind", listkind, "apiVersion",
					p->kind->api_version, "metadata", "resourceVersion", rv,
					"items", items));
}

static void h_get(lk_call *c, const k8_path *p, lk_reply *r)
{
	k8_server *s = c->srv;
	char key[600];
	json_t *obj;
	store_key(key, sizeof(key), p->kind, p->ns, p->name);
	obj = json_object_get(s->objects, key);
	if (!obj) {
		reply_not_found(r, p->kind, p->name);
		return;
	}
	lk_reply_json(r, 200, json_incref(obj));
}

/* Check kind, apiVersion, metadata.name and metadata.namespace of body
 * against the request.  *name: the object's name. */
static bool check_identity(const k8_path *p, json_t *body, const char **name, lk_reply *r)
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

static void h_create(lk_call *c, const k8_path *p, lk_reply *r)
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
	lk_rfc3339_now(ts, sizeof(ts), false);
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
		json_object_set_new(s->rollouts, key,
				    json_integer(lk_mono_ms() + s->cfg.rollout_delay_ms));
	}
	json_object_set(s->objects, key, body);
	lk_reply_json(r, 201, json_incref(body));
done:
	json_decref(body);
}

/* PUT: replace the whole object (or its status, on /status). */
static void h_replace(lk_call *c, const k8_path *p, lk_reply *r)
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
						    json_integer(lk_mono_ms() + s->cfg.rollout_delay_ms));
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
	lk_reply_json(r, 200, json_incref(upd));
done:
	json_decref(upd);
	json_decref(body);
}

static void h_delete(lk_call *c, const k8_path *p, lk_reply *r)
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
		lk_rfc3339_now(ts, sizeof(ts), false);
		json_object_set_new(meta, "deletionTimestamp", json_string(ts));
		json_object_set_new(meta, "resourceVersion", next_rv(s));
		json_object_set_new(upd, "metadata", meta);
		json_object_set_new(upd, "status", json_pack("{s:s}", "phase", "Terminating"));
		json_object_set(s->objects, key, upd);
		json_object_set_new(s->purges, p->name,
				    json_integer(lk_mono_ms() + s->cfg.terminating_ms));
		lk_reply_json(r, 200, upd);
		return;
	}
	{
		json_t *d = details_of(p->kind, p->name);
		json_object_set(d, "uid", json_object_get(json_object_get(obj, "metadata"), "uid"));
		json_object_del(s->rollouts, key);
		json_object_del(s->objects, key);
		s->rv++;
		lk_reply_json(r, 200, json_pack("{s:s, s:s, s:{}, s:s, s:o}", "kind", "Status",
						"apiVersion", "v1", "metadata", "status", "Success",
						"details", d));
	}
}

/* ---- routing ------------------------------------------------------------ */

static const k8_kind *kind_of(const char *resource, bool apps)
{
	for (size_t i = 0; i < LK_ARRAY_SIZE(kinds); i++)
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

static void api_dispatch(lk_call *c, bool readonly, lk_reply *r)
{
	k8_server *s = c->srv;
	k8_path p;
	if (parse_path(c->url, &p) != 0) {
		reply_status(r, 404, NULL, NULL, "the server could not find the requested resource");
		return;
	}
	if (readonly && c->method != LK_GET) {
		const char *verb = c->method == LK_POST ? "create"
				   : c->method == LK_DELETE ? "delete" : "update";
		reply_status(r, 403, NULL, details_of(p.kind, p.name[0] ? p.name : NULL),
			     "%s \"%s\" is forbidden: User \"lab-readonly\" cannot %s resource \"%s\" "
			     "in API group \"%s\"", p.kind->resource, p.name, verb, p.kind->resource,
			     p.kind->group);
		return;
	}
	pthread_mutex_lock(&s->lk.lock);
	sweep(s);
	if (!p.name[0]) {
		if (c->method == LK_GET)
			h_list(c, &p, r);
		else if (c->method == LK_POST)
			h_create(c, &p, r);
		else
			reply_status(r, 405, NULL, NULL, "the server does not allow this method on the "
				     "requested resource");
	} else {
		if (c->method == LK_GET)
			h_get(c, &p, r);
		else if (c->method == LK_PUT)
			h_replace(c, &p, r);
		else if (c->method == LK_DELETE && !p.status)
			h_delete(c, &p, r);
		else
			reply_status(r, 405, NULL, NULL, "the server does not allow this method on the "
				     "requested resource");
	}
	save_state(s);
	pthread_mutex_unlock(&s->lk.lock);
}

/* ---- control endpoints ------------------------------------------------ */

static json_t *config_json(const k8_server *s)
{
	return json_pack("{s:I, s:f, s:I, s:I, s:b, s:b}",
			 "latency_ms", (json_int_t)s->lk.faults.latency_ms,
			 "fail_rate", s->lk.faults.fail_rate,
			 "rollout_delay_ms", (json_int_t)s->cfg.rollout_delay_ms,
			 "terminating_ms", (json_int_t)s->cfg.terminating_ms,
			 "token_required", s->lk.token != NULL,
			 "readonly_token", s->readonly_token != NULL);
}

static bool builtin_namespace(const char *key)
{
	return strcmp(key, "namespaces//default") == 0 || strcmp(key, "namespaces//kube-system") == 0;
}

static void ctl_stats(lk_call *c, lk_reply *r)
{
	k8_server *s = c->srv;
	json_t *st = json_object(), *req, *resp, *objs = json_object();
	const char *key;
	json_t *obj;
	json_int_t total = 0;
	char rv[24];

	pthread_mutex_lock(&s->lk.lock);
	sweep(s);
	save_state(s);
	req = lk_requests_json(&s->lk, false); /* HEAD is OTHER here */
	resp = lk_responses_json(&s->lk);
	for (size_t i = 0; i < LK_ARRAY_SIZE(kinds); i++)
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
	pthread_mutex_unlock(&s->lk.lock);
	json_object_set_new(st, "requests", req);
	json_object_set_new(st, "responses", resp);
	json_object_set_new(st, "objects", objs);
	json_object_set_new(st, "total_objects", json_integer(total));
	lk_reply_json(r, 200, st);
}

static void ctl_config(lk_call *c, lk_reply *r)
{
	k8_server *s = c->srv;
	const lk_setting settings[] = {
		{ "latency_ms", 0, 3600000, &s->lk.faults.latency_ms, NULL },
		{ "fail_rate", 0, 1, NULL, &s->lk.faults.fail_rate },
		{ "rollout_delay_ms", 0, 3600000, &s->cfg.rollout_delay_ms, NULL },
		{ "terminating_ms", 0, 3600000, &s->cfg.terminating_ms, NULL },
	};
	json_t *body;
	char why[512];

	if (c->method == LK_GET) {
		pthread_mutex_lock(&s->lk.lock);
		lk_reply_json(r, 200, config_json(s));
		pthread_mutex_unlock(&s->lk.lock);
		return;
	}
	if (!(body = lk_body_object(c, NULL, NULL))) {
		reply_status(r, 400, NULL, NULL, "the body must be a JSON object");
		return;
	}
	pthread_mutex_lock(&s->lk.lock);
	if (lk_settings_apply(body, settings, LK_ARRAY_SIZE(settings), why, sizeof(why)) != 0)
		reply_status(r, 400, NULL, NULL, "%s", why);
	else
		lk_reply_json(r, 200, config_json(s));
	pthread_mutex_unlock(&s->lk.lock);
	json_decref(body);
}

/* Remove every object but the built-in namespaces. */
static void ctl_objects_delete(lk_call *c, lk_reply *r)
{
	k8_server *s = c->srv;
	const char *key;
	json_t *obj, *tmp;
	json_int_t n = 0;
	pthread_mutex_lock(&s->lk.lock);
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
	pthread_mutex_unlock(&s->lk.lock);
	lk_reply_json(r, 200, json_pack("{s:I}", "deleted", n));
}

/* Paths answered without a token and without faults. */
static bool ctl_dispatch(lk_call *c, const char *url, lk_reply *r)
{
	if (strcmp(url, "/_stats") == 0 && c->method == LK_GET)
		ctl_stats(c, r);
	else if (strcmp(url, "/_config") == 0 && (c->method == LK_GET || c->method == LK_PUT))
		ctl_config(c, r);
	else if (strcmp(url, "/_objects") == 0 && c->method == LK_DELETE)
		ctl_objects_delete(c, r);
	else if (strcmp(url, "/version") == 0 && c->method == LK_GET)
		lk_reply_json(r, 200, json_pack("{s:s, s:s, s:s, s:s}", "major", "1", "minor", "29",
						"gitVersion", "v1.29.0-mecorch-lab", "platform",
						"linux/amd64"));
	else if ((strcmp(url, "/healthz") == 0 || strcmp(url, "/readyz") == 0) &&
		 c->method == LK_GET) {
		lk_reply_empty(r, 200);
		r->body = strdup("ok");
		r->content_type = LK_JSON;
	} else
		return false;
	return true;
}

/* ---- request handling ------------------------------------------------- */

/* 1: full access, 2: read-only, 0: refused. */
static int authenticate(const k8_server *s, struct MHD_Connection *conn)
{
	const char *tok;
	if (!s->lk.token && !s->readonly_token)
		return 1;
	if (!(tok = lk_bearer(conn)))
		return 0;
	if (s->lk.token && lk_secret_equal(tok, s->lk.token))
		return 1;
	if (s->readonly_token && lk_secret_equal(tok, s->readonly_token))
		return 2;
	return 0;
}

/* An API request: counted, delayed, maybe failed, authenticated, then
 * routed. */
static void handle_api(k8_server *s, lk_call *c, lk_reply *r)
{
	int fault = lk_api_begin(&s->lk, c->method, NULL), auth;

	if (fault) {
		reply_status(r, fault, NULL, NULL, "injected failure (fail_rate); nothing was done");
		return;
	}
	auth = authenticate(s, c->conn);
	if (auth == 0) {
		reply_status(r, 401, NULL, NULL, "Unauthorized");
		lk_reply_header(r, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer realm=\"kubernetes\"");
		return;
	}
	if (c->too_large) {
		reply_status(r, 413, NULL, NULL, "the request body exceeds %d bytes", K8_MAX_BODY);
		return;
	}
	if (c->method == LK_PATCH) {
		reply_status(r, 415, NULL, NULL, "PATCH is not supported by this emulator; "
			     "replace the object with PUT");
		return;
	}
	api_dispatch(c, auth == 2, r);
}

/* Every request: a control endpoint or an API request.  Every answer is
 * application/json, an empty one too. */
static void handle(lk_call *c, lk_reply *r)
{
	k8_server *s = c->srv;
	if (c->method == LK_HEAD) /* not served: counted and refused as any other */
		c->method = LK_OTHER;
	if (!ctl_dispatch(c, c->url, r)) {
		handle_api(s, c, r);
		lk_api_end(&s->lk, r->status);
	}
	if (!r->body)
		lk_reply_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, LK_JSON);
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


/* The namespaces every cluster starts with. */
static void add_builtin_namespaces(k8_server *s)
{
	static const char *const names[] = { "default", "kube-system" };
	char key[64], ts[40], uid[48];
	lk_rfc3339_now(ts, sizeof(ts), false);
	for (size_t i = 0; i < LK_ARRAY_SIZE(names); i++) {
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

enum { O_RO_TOKEN = LK_OPT_OWN, O_ROLLOUT, O_TERMINATING, O_STATE };

static bool own_option(void *cls, int opt, const char *arg)
{
	k8_server *s = cls;
	switch (opt) {
	case O_RO_TOKEN:
		s->readonly_token = arg;
		return *arg != '\0';
	case O_ROLLOUT: return lk_parse_long(arg, 0, 3600000, &s->cfg.rollout_delay_ms);
	case O_TERMINATING: return lk_parse_long(arg, 0, 3600000, &s->cfg.terminating_ms);
	case O_STATE:
		s->state_file = arg;
		return *arg != '\0';
	default: return false;
	}
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		LK_OPTIONS_BASE,
		LK_OPTION_TOKEN,
		{ "readonly-token", required_argument, NULL, O_RO_TOKEN },
		{ "rollout-delay-ms", required_argument, NULL, O_ROLLOUT },
		{ "terminating-ms", required_argument, NULL, O_TERMINATING },
		LK_OPTION_LATENCY,
		LK_OPTION_FAIL_RATE,
		LK_OPTION_SEED,
		{ "state-file", required_argument, NULL, O_STATE },
		{ NULL, 0, NULL, 0 },
	};
	static k8_server srv;
	int rc;

	lk_init(&srv.lk, "k8s");
	srv.lk.max_body = K8_MAX_BODY;
	srv.lk.max_connections = 1024;
	srv.lk.thread_stack = K8_THREAD_STACK;
	srv.lk.timeout_s = 120;
	srv.cfg.rollout_delay_ms = 1000;
	srv.cfg.terminating_ms = 500;
	if ((rc = lk_parse_args(&srv.lk, argc, argv, opts, own_option, &srv, usage)) >= 0)
		return rc;
	if (lk_resolve(&srv.lk) != 0)
		return 2;

	rc = 1;
	srv.next_ip = (uint32_t)(lk_random_u64() % 1000);
	srv.next_node_port = (uint32_t)(lk_random_u64() % 2768);
	srv.objects = json_object();
	srv.rollouts = json_object();
	srv.purges = json_object();
	if (!srv.objects || !srv.rollouts || !srv.purges) {
		fprintf(stderr, "k8s: out of memory\n");
		goto done;
	}
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
	rc = lk_run(&srv.lk, handle, &srv, NULL);
done:
	lk_free(&srv.lk);
	json_decref(srv.objects);
	json_decref(srv.rollouts);
	json_decref(srv.purges);
	return rc;
}
