/*
 * labcloud.c - the local lab's generic cloud: an in-memory REST API of typed
 * collections that tests, benchmarks and the demo provision against.
 *
 * Objects live in collections (/v1/{collection}) created on first use; each
 * object is a JSON object the client chose plus four server fields: id,
 * created_at, version and, when created with an Idempotency-Key header,
 * idempotency_key.  A repeated POST carrying the same key answers the object
 * made the first time, which is what makes client retries and crash recovery
 * safe.  The API can be made slow (--latency-ms, slept in the handling
 * thread so concurrent requests overlap), flaky (--fail-rate: 500/503
 * before anything is done) or throttled (--rate-429 with Retry-After), all
 * changeable at run time through PUT /_config.  Control endpoints under /_
 * (stats, config, reset) are never delayed, failed nor authenticated.
 *
 * Concurrency: one thread per connection (libmicrohttpd), so a thousand
 * clients sleeping in --latency-ms cost a thousand threads, not a queue.
 * Two mutexes: `lock` guards configuration, counters and the fault RNG;
 * `store_lock` guards the objects, and JSON of stored objects is serialised
 * while it is held.  Stored objects are never modified in place: an update
 * builds a new object and swaps it in.
 *
 * This program is a stand-alone executable: it links libmicrohttpd, jansson
 * and pthread only, not the mecorch core.  See examples/lab/README.md.
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
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define LC_MAX_BODY (1024 * 1024)    /* larger request bodies get 413 */
#define LC_MAX_NAME 64               /* collection name length */
#define LC_MAX_KEY 255               /* Idempotency-Key length */
#define LC_MAX_FILTERS 32            /* query parameters on a list */
#define LC_THREAD_STACK (1024 * 1024)

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

typedef enum {
	LC_GET, LC_HEAD, LC_POST, LC_PUT, LC_PATCH, LC_DELETE, LC_OTHER,
	LC_METHOD_COUNT
} lc_method;

static const char *const method_names[LC_METHOD_COUNT] = {
	"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OTHER",
};

/* Behaviour that PUT /_config can change at run time. */
typedef struct {
	long latency_ms;
	long jitter_ms;
	double fail_rate;
	double rate_429;
	long retry_after;
} lc_config;

typedef struct {
	pthread_mutex_t lock;        /* guards the fields down to store_lock */
	lc_config cfg;
	uint64_t rng;                /* fault and jitter RNG (xorshift64*) */
	uint64_t requests[LC_METHOD_COUNT];
	uint64_t responses[600];
	long in_flight, max_in_flight;

	const char *token;           /* required bearer token, or NULL */
	unsigned max_connections;

	pthread_mutex_t store_lock;  /* guards the fields below */
	json_t *objects;             /* collection -> { id -> object } */
	json_t *keys;                /* collection -> { idempotency key -> id } */
	uint64_t id_base, id_seq;
} lc_server;

/* One request's upload, kept across libmicrohttpd's calls. */
typedef struct {
	char *body;
	size_t len, cap;
	bool too_large;
} lc_upload;

/* What a handler sees of a request. */
typedef struct {
	lc_server *srv;
	struct MHD_Connection *conn;
	lc_method method;
	char coll[LC_MAX_NAME + 1];  /* API routes: the collection */
	const char *id;              /* API item routes: the object id */
	const char *body;
	size_t body_len;
} lc_call;

/* What a handler answers; lc_reply_send() turns it into a response. */
typedef struct {
	int status;
	char *body;                  /* malloc'd JSON text, or NULL */
	const char *content_type;
	char *location;              /* malloc'd, or NULL */
	long retry_after;            /* >= 0: send Retry-After */
	const char *allow;           /* 405: the Allow header */
	bool www_auth;               /* 401: WWW-Authenticate */
} lc_reply;

typedef void (*lc_handler)(lc_call *c, lc_reply *r);

/* Fields the server owns: clients cannot set them (ignored in bodies). */
static const char *const server_fields[] = {
	"id", "created_at", "version", "idempotency_key",
};

/* ---- small helpers ---------------------------------------------------- */

static uint64_t mix64(uint64_t z)
{
	/* splitmix64's finaliser: a bijection, so distinct inputs give
	 * distinct ids. */
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

/* Uniform in [0, 1).  Caller holds srv->lock. */
static double rng_next(lc_server *s)
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

static void sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

/* RFC 3339 UTC time with milliseconds into out (at least 32 bytes). */
static void rfc3339_now(char *out, size_t n)
{
	struct timespec ts;
	struct tm tm;
	char base[24];
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	strftime(base, sizeof(base), "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(out, n, "%s.%03ldZ", base, ts.tv_nsec / 1000000L);
}

static bool valid_collection(const char *s, size_t n)
{
	if (n == 0 || n > LC_MAX_NAME)
		return false;
	for (size_t i = 0; i < n; i++) {
		char ch = s[i];
		if (!((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
		      ch == '_' || ch == '-'))
			return false;
	}
	return true;
}

static bool utf8_valid(const char *s)
{
	json_t *j = json_string(s); /* jansson refuses invalid UTF-8 */
	json_decref(j);
	return j != NULL;
}

static bool is_server_field(const char *k)
{
	for (size_t i = 0; i < ARRAY_SIZE(server_fields); i++)
		if (strcmp(k, server_fields[i]) == 0)
			return true;
	return false;
}

static const char *status_title(int status)
{
	switch (status) {
	case 400: return "Bad Request";
	case 401: return "Unauthorized";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 413: return "Content Too Large";
	case 429: return "Too Many Requests";
	case 500: return "Internal Server Error";
	case 503: return "Service Unavailable";
	default: return "Error";
	}
}

/* ---- replies ---------------------------------------------------------- */

/* Answer status with j (stolen) as the body.  Serialises j now, so call it
 * while holding the lock that guards j. */
static void reply_json(lc_reply *r, int status, json_t *j)
{
	r->status = status;
	r->content_type = "application/json";
	free(r->body);
	r->body = j ? json_dumps(j, JSON_COMPACT) : NULL;
	json_decref(j);
	if (!r->body)
		r->status = 500; /* out of memory: an empty 500 */
}

/* Answer an RFC 7807 problem. */
static void reply_problem(lc_reply *r, int status, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void reply_problem(lc_reply *r, int status, const char *fmt, ...)
{
	char detail[512];
	json_t *p;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(detail, sizeof(detail), fmt, ap);
	va_end(ap);
	p = json_pack("{s:s, s:s, s:i, s:s}", "type", "about:blank",
		      "title", status_title(status), "status", status, "detail", detail);
	if (!p) /* the detail quoted bytes that are not UTF-8 */
		p = json_pack("{s:s, s:s, s:i}", "type", "about:blank",
			      "title", status_title(status), "status", status);
	reply_json(r, status, p);
	r->content_type = "application/problem+json";
}

static void reply_empty(lc_reply *r, int status)
{
	r->status = status;
	free(r->body);
	r->body = NULL;
}

static void reply_location(lc_reply *r, const char *coll, const char *id)
{
	size_t n = strlen(coll) + strlen(id) + 6;
	free(r->location);
	if ((r->location = malloc(n)))
		snprintf(r->location, n, "/v1/%s/%s", coll, id);
}

/* Queue r on conn and release what r holds. */
static enum MHD_Result reply_send(struct MHD_Connection *conn, lc_reply *r)
{
	struct MHD_Response *resp;
	enum MHD_Result ret;
	bool has_body = r->body != NULL;
	char num[32];

	if (has_body) {
		resp = MHD_create_response_from_buffer_with_free_callback(
			strlen(r->body), r->body, free);
		if (resp)
			r->body = NULL; /* the response owns it now */
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
	if (r->allow)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, r->allow);
	if (r->www_auth)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE,
					"Bearer realm=\"labcloud\"");
	ret = MHD_queue_response(conn, (unsigned)r->status, resp);
	MHD_destroy_response(resp);
	free(r->location);
	r->location = NULL;
	return ret;
}

/* ---- request bodies and the store ------------------------------------- */

/* The request body as a JSON object (new reference), or NULL with a 400
 * problem in r. */
static json_t *body_object(const lc_call *c, lc_reply *r)
{
	json_error_t err;
	json_t *j;
	if (c->body_len == 0) {
		reply_problem(r, 400, "the request body must be a JSON object");
		return NULL;
	}
	j = json_loadb(c->body, c->body_len, 0, &err);
	if (!j) {
		reply_problem(r, 400, "invalid JSON at line %d, column %d: %s",
			      err.line, err.column, err.text);
		return NULL;
	}
	if (!json_is_object(j)) {
		json_decref(j);
		reply_problem(r, 400, "the request body must be a JSON object");
		return NULL;
	}
	return j;
}

/* A new object holding body's fields minus the server's. */
static json_t *user_fields(json_t *body)
{
	json_t *out = json_object(), *v;
	const char *k;
	if (!out)
		return NULL;
	json_object_foreach(body, k, v)
		if (!is_server_field(k))
			json_object_set(out, k, v);
	return out;
}

/* RFC 7396 merge patch of target (borrowed, may be NULL) with patch
 * (borrowed); returns a new reference.  Never modifies target: objects on
 * the path are copied, untouched subtrees are shared. */
static json_t *merge_patch(json_t *target, json_t *patch)
{
	json_t *out, *v;
	const char *k;
	if (!json_is_object(patch))
		return json_incref(patch);
	out = json_is_object(target) ? json_copy(target) : json_object();
	if (!out)
		return NULL;
	json_object_foreach(patch, k, v) {
		if (json_is_null(v)) {
			json_object_del(out, k);
		} else {
			json_t *m = merge_patch(json_object_get(target, k), v);
			if (!m || json_object_set_new(out, k, m) != 0) {
				json_decref(out);
				return NULL;
			}
		}
	}
	return out;
}

/* The collection's map of name in top (objects or keys); created when
 * create is set, else NULL when absent.  Caller holds store_lock. */
static json_t *store_map(json_t *top, const char *coll, bool create)
{
	json_t *m = json_object_get(top, coll);
	if (!m && create) {
		m = json_object();
		if (m && json_object_set_new(top, coll, m) != 0)
			m = NULL;
	}
	return m;
}

/* ---- the API: /v1/{collection}[/{id}] ---------------------------------- */

typedef struct {
	const char *key[LC_MAX_FILTERS];
	const char *value[LC_MAX_FILTERS];
	int n;
	bool overflow;
} lc_filters;

static enum MHD_Result collect_filter(void *cls, enum MHD_ValueKind kind,
				      const char *key, const char *value)
{
	lc_filters *f = cls;
	(void)kind;
	if (f->n == LC_MAX_FILTERS) {
		f->overflow = true;
		return MHD_NO;
	}
	f->key[f->n] = key;
	f->value[f->n] = value ? value : "";
	f->n++;
	return MHD_YES;
}

/* Does v equal want, compared as the string a query parameter carries? */
static bool field_matches(const json_t *v, const char *want)
{
	char *end;
	double d;
	switch (json_typeof(v)) {
	case JSON_STRING:
		return strcmp(json_string_value(v), want) == 0;
	case JSON_INTEGER:
	case JSON_REAL:
		d = strtod(want, &end);
		return *want && !*end && d == json_number_value(v);
	case JSON_TRUE:
		return strcmp(want, "true") == 0;
	case JSON_FALSE:
		return strcmp(want, "false") == 0;
	case JSON_NULL:
		return strcmp(want, "null") == 0;
	default:
		return false;
	}
}

static void api_list(lc_call *c, lc_reply *r)
{
	lc_server *s = c->srv;
	lc_filters f = { .n = 0 };
	json_t *items, *coll, *obj;
	const char *id;

	MHD_get_connection_values(c->conn, MHD_GET_ARGUMENT_KIND, collect_filter, &f);
	if (f.overflow) {
		reply_problem(r, 400, "at most %d query parameters", LC_MAX_FILTERS);
		return;
	}
	if (!(items = json_array())) {
		reply_empty(r, 500);
		return;
	}
	pthread_mutex_lock(&s->store_lock);
	coll = store_map(s->objects, c->coll, false);
	json_object_foreach(coll, id, obj) {
		bool ok = true;
		for (int i = 0; ok && i < f.n; i++) {
			json_t *v = json_object_get(obj, f.key[i]);
			ok = v && field_matches(v, f.value[i]);
		}
		if (ok)
			json_array_append(items, obj);
	}
	reply_json(r, 200, json_pack("{s:o, s:I}", "items", items,
				     "count", (json_int_t)json_array_size(items)));
	pthread_mutex_unlock(&s->store_lock);
}

static void api_create(lc_call *c, lc_reply *r)
{
	lc_server *s = c->srv;
	const char *key = MHD_lookup_connection_value(c->conn, MHD_HEADER_KIND,
						      "Idempotency-Key");
	json_t *body, *obj = NULL, *coll, *keys = NULL;
	char id[24], ts[40];

	if (key && (!*key || strlen(key) > LC_MAX_KEY || !utf8_valid(key))) {
		reply_problem(r, 400, "Idempotency-Key must be 1 to %d bytes of UTF-8", LC_MAX_KEY);
		return;
	}
	if (!(body = body_object(c, r)))
		return;
	obj = user_fields(body);
	json_decref(body);
	if (!obj) {
		reply_empty(r, 500);
		return;
	}
	rfc3339_now(ts, sizeof(ts));

	pthread_mutex_lock(&s->store_lock);
	coll = store_map(s->objects, c->coll, true);
	if (key)
		keys = store_map(s->keys, c->coll, true);
	if (!coll || (key && !keys)) {
		reply_empty(r, 500);
		goto done;
	}
	if (key) {
		const char *prev = json_string_value(json_object_get(keys, key));
		json_t *old = prev ? json_object_get(coll, prev) : NULL;
		if (old) {
			reply_json(r, 200, json_incref(old));
			reply_location(r, c->coll, prev);
			goto done;
		}
	}
	snprintf(id, sizeof(id), "obj-%016llx",
		 (unsigned long long)mix64(s->id_base + s->id_seq++));
	if (json_object_set_new(obj, "id", json_string(id)) ||
	    json_object_set_new(obj, "created_at", json_string(ts)) ||
	    json_object_set_new(obj, "version", json_integer(1)) ||
	    (key && json_object_set_new(obj, "idempotency_key", json_string(key))) ||
	    json_object_set(coll, id, obj) ||
	    (key && json_object_set_new(keys, key, json_string(id)))) {
		json_object_del(coll, id);
		reply_empty(r, 500);
		goto done;
	}
	reply_json(r, 201, json_incref(obj));
	reply_location(r, c->coll, id);
done:
	pthread_mutex_unlock(&s->store_lock);
	json_decref(obj);
}

static void api_get(lc_call *c, lc_reply *r)
{
	lc_server *s = c->srv;
	json_t *obj;
	pthread_mutex_lock(&s->store_lock);
	obj = json_object_get(store_map(s->objects, c->coll, false), c->id);
	if (obj)
		reply_json(r, 200, json_incref(obj));
	else
		reply_problem(r, 404, "no object %s in collection %s", c->id, c->coll);
	pthread_mutex_unlock(&s->store_lock);
}

/* PUT (replace the user fields) and PATCH (merge patch): both keep id,
 * created_at and idempotency_key and bump version. */
static void api_write(lc_call *c, lc_reply *r)
{
	lc_server *s = c->srv;
	json_t *body, *coll, *old, *upd = NULL;
	const char *k;
	size_t i;

	if (!(body = body_object(c, r)))
		return;
	for (i = 0; i < ARRAY_SIZE(server_fields); i++)
		json_object_del(body, server_fields[i]);

	pthread_mutex_lock(&s->store_lock);
	coll = store_map(s->objects, c->coll, false);
	if (!(old = json_object_get(coll, c->id))) {
		reply_problem(r, 404, "no object %s in collection %s", c->id, c->coll);
		goto done;
	}
	upd = c->method == LC_PATCH ? merge_patch(old, body) : json_copy(body);
	if (!upd) {
		reply_empty(r, 500);
		goto done;
	}
	for (i = 0; i < ARRAY_SIZE(server_fields); i++) {
		k = server_fields[i];
		if (json_object_get(old, k))
			json_object_set(upd, k, json_object_get(old, k));
	}
	json_object_set_new(upd, "version",
			    json_integer(json_integer_value(json_object_get(old, "version")) + 1));
	if (json_object_set(coll, c->id, upd) != 0) {
		reply_empty(r, 500);
		goto done;
	}
	reply_json(r, 200, json_incref(upd));
done:
	pthread_mutex_unlock(&s->store_lock);
	json_decref(upd);
	json_decref(body);
}

static void api_delete(lc_call *c, lc_reply *r)
{
	lc_server *s = c->srv;
	json_t *coll, *obj, *keys;
	const char *key;

	pthread_mutex_lock(&s->store_lock);
	coll = store_map(s->objects, c->coll, false);
	if (!(obj = json_object_get(coll, c->id))) {
		reply_problem(r, 404, "no object %s in collection %s", c->id, c->coll);
		goto done;
	}
	/* The key goes with the object: a later POST with it creates anew. */
	key = json_string_value(json_object_get(obj, "idempotency_key"));
	keys = store_map(s->keys, c->coll, false);
	if (key && keys) {
		const char *mapped = json_string_value(json_object_get(keys, key));
		if (mapped && strcmp(mapped, c->id) == 0)
			json_object_del(keys, key);
	}
	json_object_del(coll, c->id);
	reply_empty(r, 204);
done:
	pthread_mutex_unlock(&s->store_lock);
}

/* The API route table: (method, collection or item) -> handler. */
static const struct {
	lc_method method;
	bool item;                   /* /v1/{collection}/{id} rather than /v1/{collection} */
	lc_handler fn;
} api_routes[] = {
	{ LC_GET, false, api_list },
	{ LC_HEAD, false, api_list },
	{ LC_POST, false, api_create },
	{ LC_GET, true, api_get },
	{ LC_HEAD, true, api_get },
	{ LC_PUT, true, api_write },
	{ LC_PATCH, true, api_write },
	{ LC_DELETE, true, api_delete },
};

static void api_dispatch(lc_call *c, const char *url, lc_reply *r)
{
	const char *p, *slash;
	char *id = NULL;
	size_t n;
	bool item;

	if (strncmp(url, "/v1/", 4) != 0) {
		reply_problem(r, 404, "no such path: %s", url);
		return;
	}
	p = url + 4;
	slash = strchr(p, '/');
	n = slash ? (size_t)(slash - p) : strlen(p);
	if (!valid_collection(p, n)) {
		if (n == 0)
			reply_problem(r, 404, "no such path: %s", url);
		else
			reply_problem(r, 400, "collection names are 1 to %d of [a-z0-9_-]", LC_MAX_NAME);
		return;
	}
	memcpy(c->coll, p, n);
	c->coll[n] = '\0';
	item = slash && slash[1]; /* "/v1/c/" is the collection */
	if (item) {
		const char *start = slash + 1, *end = strchr(start, '/');
		if (end && end[1]) {
			reply_problem(r, 404, "no such path: %s", url);
			return;
		}
		n = end ? (size_t)(end - start) : strlen(start);
		if (!(id = strndup(start, n))) {
			reply_empty(r, 500);
			return;
		}
		c->id = id;
	}
	for (size_t i = 0; i < ARRAY_SIZE(api_routes); i++) {
		if (api_routes[i].item == item && api_routes[i].method == c->method) {
			api_routes[i].fn(c, r);
			goto done;
		}
	}
	reply_problem(r, 405, "%s is not supported on %s", method_names[c->method],
		      item ? "an object" : "a collection");
	r->allow = item ? "GET, HEAD, PUT, PATCH, DELETE" : "GET, HEAD, POST";
done:
	c->id = NULL;
	free(id);
}

/* ---- control endpoints: /_stats, /_config, /_objects ------------------- */

static json_t *config_json(const lc_server *s)
{
	return json_pack("{s:I, s:I, s:f, s:f, s:I, s:b, s:I}",
			 "latency_ms", (json_int_t)s->cfg.latency_ms,
			 "latency_jitter_ms", (json_int_t)s->cfg.jitter_ms,
			 "fail_rate", s->cfg.fail_rate,
			 "rate_429", s->cfg.rate_429,
			 "retry_after", (json_int_t)s->cfg.retry_after,
			 "token_required", s->token != NULL,
			 "max_connections", (json_int_t)s->max_connections);
}

static void ctl_stats(lc_call *c, lc_reply *r)
{
	lc_server *s = c->srv;
	json_t *st = json_object(), *req = json_object(), *resp = json_object();
	json_t *objs = json_object(), *m;
	const char *name;
	json_int_t total = 0;
	char code[8];

	if (!st || !req || !resp || !objs) {
		json_decref(st), json_decref(req), json_decref(resp), json_decref(objs);
		reply_empty(r, 500);
		return;
	}
	pthread_mutex_lock(&s->lock);
	for (int i = 0; i < LC_METHOD_COUNT; i++)
		json_object_set_new(req, method_names[i], json_integer((json_int_t)s->requests[i]));
	for (int i = 0; i < (int)ARRAY_SIZE(s->responses); i++) {
		if (s->responses[i]) {
			snprintf(code, sizeof(code), "%d", i);
			json_object_set_new(resp, code, json_integer((json_int_t)s->responses[i]));
		}
	}
	json_object_set_new(st, "in_flight", json_integer(s->in_flight));
	json_object_set_new(st, "max_in_flight", json_integer(s->max_in_flight));
	pthread_mutex_unlock(&s->lock);

	pthread_mutex_lock(&s->store_lock);
	json_object_foreach(s->objects, name, m) {
		json_object_set_new(objs, name, json_integer((json_int_t)json_object_size(m)));
		total += (json_int_t)json_object_size(m);
	}
	pthread_mutex_unlock(&s->store_lock);

	json_object_set_new(st, "requests", req);
	json_object_set_new(st, "responses", resp);
	json_object_set_new(st, "objects", objs);
	json_object_set_new(st, "total_objects", json_integer(total));
	reply_json(r, 200, st);
}

static void ctl_stats_reset(lc_call *c, lc_reply *r)
{
	lc_server *s = c->srv;
	pthread_mutex_lock(&s->lock);
	memset(s->requests, 0, sizeof(s->requests));
	memset(s->responses, 0, sizeof(s->responses));
	s->max_in_flight = s->in_flight; /* 0 when idle */
	pthread_mutex_unlock(&s->lock);
	reply_empty(r, 204);
}

static void ctl_config_get(lc_call *c, lc_reply *r)
{
	pthread_mutex_lock(&c->srv->lock);
	reply_json(r, 200, config_json(c->srv));
	pthread_mutex_unlock(&c->srv->lock);
}

/* Read a number field of a config body into *out within [lo, hi]. */
static bool config_number(json_t *body, const char *k, double lo, double hi,
			  bool integer, double *out, lc_reply *r)
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

static void ctl_config_put(lc_call *c, lc_reply *r)
{
	static const char *const known[] = {
		"latency_ms", "latency_jitter_ms", "fail_rate", "rate_429", "retry_after",
	};
	lc_server *s = c->srv;
	json_t *body, *v;
	const char *k;
	double lat, jit, fail, r429, ra;

	if (!(body = body_object(c, r)))
		return;
	json_object_foreach(body, k, v) {
		size_t i;
		for (i = 0; i < ARRAY_SIZE(known); i++)
			if (strcmp(k, known[i]) == 0)
				break;
		if (i == ARRAY_SIZE(known)) {
			reply_problem(r, 400, "unknown setting %s", k);
			goto done;
		}
	}
	pthread_mutex_lock(&s->lock);
	lat = (double)s->cfg.latency_ms;
	jit = (double)s->cfg.jitter_ms;
	fail = s->cfg.fail_rate;
	r429 = s->cfg.rate_429;
	ra = (double)s->cfg.retry_after;
	if (config_number(body, "latency_ms", 0, 3600000, true, &lat, r) &&
	    config_number(body, "latency_jitter_ms", 0, 3600000, true, &jit, r) &&
	    config_number(body, "fail_rate", 0, 1, false, &fail, r) &&
	    config_number(body, "rate_429", 0, 1, false, &r429, r) &&
	    config_number(body, "retry_after", 0, 86400, true, &ra, r)) {
		s->cfg.latency_ms = (long)lat;
		s->cfg.jitter_ms = (long)jit;
		s->cfg.fail_rate = fail;
		s->cfg.rate_429 = r429;
		s->cfg.retry_after = (long)ra;
		reply_json(r, 200, config_json(s));
	}
	pthread_mutex_unlock(&s->lock);
done:
	json_decref(body);
}

static void ctl_objects_delete(lc_call *c, lc_reply *r)
{
	lc_server *s = c->srv;
	json_t *m;
	const char *name;
	json_int_t n = 0;
	pthread_mutex_lock(&s->store_lock);
	json_object_foreach(s->objects, name, m)
		n += (json_int_t)json_object_size(m);
	json_object_clear(s->objects);
	json_object_clear(s->keys);
	pthread_mutex_unlock(&s->store_lock);
	reply_json(r, 200, json_pack("{s:I}", "deleted", n));
}

/* The control route table. */
static const struct {
	lc_method method;
	const char *path;
	lc_handler fn;
} ctl_routes[] = {
	{ LC_GET, "/_stats", ctl_stats },
	{ LC_POST, "/_stats/reset", ctl_stats_reset },
	{ LC_GET, "/_config", ctl_config_get },
	{ LC_PUT, "/_config", ctl_config_put },
	{ LC_DELETE, "/_objects", ctl_objects_delete },
};

static void ctl_dispatch(lc_call *c, const char *url, lc_reply *r)
{
	bool path_known = false;
	for (size_t i = 0; i < ARRAY_SIZE(ctl_routes); i++) {
		if (strcmp(ctl_routes[i].path, url) != 0)
			continue;
		path_known = true;
		if (ctl_routes[i].method == c->method ||
		    (ctl_routes[i].method == LC_GET && c->method == LC_HEAD)) {
			ctl_routes[i].fn(c, r);
			return;
		}
	}
	if (path_known)
		reply_problem(r, 405, "%s is not supported on %s", method_names[c->method], url);
	else
		reply_problem(r, 404, "no such path: %s", url);
}

/* ---- request handling ------------------------------------------------- */

static lc_method method_of(const char *m)
{
	for (int i = 0; i < LC_OTHER; i++)
		if (strcmp(m, method_names[i]) == 0)
			return (lc_method)i;
	return LC_OTHER;
}

static bool authorized(const lc_server *s, struct MHD_Connection *conn)
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
	for (size_t i = 0; i < a; i++) /* no early exit on a mismatch */
		diff |= (unsigned char)(tok[i] ^ s->token[i % (b ? b : 1)]);
	return a == b && diff == 0;
}

/* An API request: counted, delayed, maybe failed, then routed. */
static void handle_api(lc_server *s, lc_call *c, const char *url,
		       const lc_upload *up, lc_reply *r)
{
	long delay;
	int fault = 0;
	long retry_after;

	pthread_mutex_lock(&s->lock);
	s->requests[c->method]++;
	if (++s->in_flight > s->max_in_flight)
		s->max_in_flight = s->in_flight;
	delay = s->cfg.latency_ms;
	if (s->cfg.jitter_ms > 0)
		delay += (long)(rng_next(s) * (double)(s->cfg.jitter_ms + 1));
	if (s->cfg.fail_rate > 0 && rng_next(s) < s->cfg.fail_rate)
		fault = rng_next(s) < 0.5 ? 503 : 500;
	else if (s->cfg.rate_429 > 0 && rng_next(s) < s->cfg.rate_429)
		fault = 429;
	retry_after = s->cfg.retry_after;
	pthread_mutex_unlock(&s->lock);

	if (delay > 0)
		sleep_ms(delay);
	if (fault == 429) {
		reply_problem(r, 429, "injected throttling (rate_429); retry after %ld s", retry_after);
		r->retry_after = retry_after;
	} else if (fault) {
		reply_problem(r, fault, "injected failure (fail_rate); nothing was done");
	} else if (!authorized(s, c->conn)) {
		reply_problem(r, 401, "a valid bearer token is required");
		r->www_auth = true;
	} else if (up->too_large) {
		reply_problem(r, 413, "the request body exceeds %d bytes", LC_MAX_BODY);
	} else {
		api_dispatch(c, url, r);
	}
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn,
				  const char *url, const char *method,
				  const char *version, const char *upload_data,
				  size_t *upload_size, void **req_cls)
{
	lc_server *s = cls;
	lc_upload *up = *req_cls;
	lc_reply r = { .status = 500, .retry_after = -1 };
	lc_call c = { .srv = s, .conn = conn };
	enum MHD_Result ret;
	(void)version;

	if (!up) { /* first call: headers only */
		if (!(up = calloc(1, sizeof(*up))))
			return MHD_NO;
		*req_cls = up;
		return MHD_YES;
	}
	if (*upload_size) { /* a piece of the body */
		size_t n = *upload_size;
		*upload_size = 0;
		if (up->too_large || up->len + n > LC_MAX_BODY) {
			up->too_large = true; /* keep reading, answer 413 at the end */
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
	if (strncmp(url, "/_", 2) == 0) {
		if (up->too_large)
			reply_problem(&r, 413, "the request body exceeds %d bytes", LC_MAX_BODY);
		else
			ctl_dispatch(&c, url, &r);
		return reply_send(conn, &r);
	}

	handle_api(s, &c, url, up, &r);
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
	lc_upload *up = *req_cls;
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
	fputs("usage: labcloud [options]\n"
	      "An in-memory REST API of typed collections for the local lab.\n"
	      "\n"
	      "  --listen HOST:PORT        address to listen on (default 127.0.0.1:0, a free port)\n"
	      "  --port-file FILE          write the bound port to FILE once listening\n"
	      "  --latency-ms N            delay every API request by N ms (default 0)\n"
	      "  --latency-jitter-ms N     add a uniform 0..N ms to the delay (default 0)\n"
	      "  --fail-rate F             answer a fraction F of API requests 500/503 (default 0)\n"
	      "  --rate-429 F              answer a fraction F of API requests 429 (default 0)\n"
	      "  --retry-after S           Retry-After seconds sent with 429 (default 1)\n"
	      "  --seed N                  seed of the fault and jitter RNG (default: random)\n"
	      "  --token T                 require 'Authorization: Bearer T' on the API\n"
	      "  --max-connections N       concurrent connection limit (default 4096)\n"
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

/* Split "HOST:PORT", "[V6]:PORT" or ":PORT" and resolve it (numeric hosts
 * or names).  *res is the caller's (freeaddrinfo). */
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

/* Write "PORT\n" to path atomically (temp file in the same directory,
 * fsync, rename). */
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

/* Let the process hold max_conn sockets plus some slack. */
static void raise_fd_limit(unsigned max_conn)
{
	struct rlimit rl;
	rlim_t want = (rlim_t)max_conn + 64;
	if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur >= want)
		return;
	rl.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max > want ? want : rl.rlim_max;
	setrlimit(RLIMIT_NOFILE, &rl);
}

int main(int argc, char **argv)
{
	enum { O_LISTEN = 1, O_PORT_FILE, O_LATENCY, O_JITTER, O_FAIL, O_429,
	       O_RETRY, O_SEED, O_TOKEN, O_MAXCONN, O_HELP };
	static const struct option opts[] = {
		{ "listen", required_argument, NULL, O_LISTEN },
		{ "port-file", required_argument, NULL, O_PORT_FILE },
		{ "latency-ms", required_argument, NULL, O_LATENCY },
		{ "latency-jitter-ms", required_argument, NULL, O_JITTER },
		{ "fail-rate", required_argument, NULL, O_FAIL },
		{ "rate-429", required_argument, NULL, O_429 },
		{ "retry-after", required_argument, NULL, O_RETRY },
		{ "seed", required_argument, NULL, O_SEED },
		{ "token", required_argument, NULL, O_TOKEN },
		{ "max-connections", required_argument, NULL, O_MAXCONN },
		{ "help", no_argument, NULL, O_HELP },
		{ NULL, 0, NULL, 0 },
	};
	static lc_server srv;
	const char *listen_spec = "127.0.0.1:0", *port_file = NULL;
	struct addrinfo *ai = NULL;
	struct MHD_Daemon *d = NULL;
	const union MHD_DaemonInfo *info;
	char host[NI_MAXHOST];
	unsigned flags, port;
	long v, max_conn = 4096;
	uint64_t seed = random_u64();
	sigset_t sigs;
	int opt, sig, rc = 1;

	srv.cfg.retry_after = 1;
	while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		bool ok = true;
		switch (opt) {
		case O_LISTEN: listen_spec = optarg; break;
		case O_PORT_FILE: port_file = optarg; break;
		case O_LATENCY: ok = parse_long(optarg, 0, 3600000, &srv.cfg.latency_ms); break;
		case O_JITTER: ok = parse_long(optarg, 0, 3600000, &srv.cfg.jitter_ms); break;
		case O_FAIL: ok = parse_rate(optarg, &srv.cfg.fail_rate); break;
		case O_429: ok = parse_rate(optarg, &srv.cfg.rate_429); break;
		case O_RETRY: ok = parse_long(optarg, 0, 86400, &srv.cfg.retry_after); break;
		case O_SEED:
			ok = parse_long(optarg, LONG_MIN, LONG_MAX, &v);
			seed = (uint64_t)v;
			break;
		case O_TOKEN: ok = *optarg != '\0'; srv.token = optarg; break;
		case O_MAXCONN: ok = parse_long(optarg, 1, 1000000, &max_conn); break;
		case O_HELP: usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
		if (!ok) {
			fprintf(stderr, "labcloud: bad value for --%s: %s\n",
				opts[opt - 1].name, optarg);
			return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "labcloud: unexpected argument %s\n", argv[optind]);
		return 2;
	}
	if (resolve_listen(listen_spec, &ai) != 0) {
		fprintf(stderr, "labcloud: cannot use --listen %s (want HOST:PORT)\n", listen_spec);
		return 2;
	}

	srv.max_connections = (unsigned)max_conn;
	srv.rng = mix64(seed) | 1; /* xorshift needs a non-zero state */
	srv.id_base = random_u64();
	json_object_seed(0);       /* before any thread touches jansson */
	srv.objects = json_object();
	srv.keys = json_object();
	if (!srv.objects || !srv.keys) {
		fprintf(stderr, "labcloud: out of memory\n");
		goto done;
	}
	pthread_mutex_init(&srv.lock, NULL);
	pthread_mutex_init(&srv.store_lock, NULL);

	/* Signals are taken by sigwait() below; every thread inherits the mask. */
	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);
	raise_fd_limit(srv.max_connections);

	flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_POLL_INTERNAL_THREAD |
		MHD_USE_ITC | MHD_USE_ERROR_LOG;
	if (ai->ai_family == AF_INET6)
		flags |= MHD_USE_IPv6;
	d = MHD_start_daemon(flags, 0, NULL, NULL, on_request, &srv,
			     MHD_OPTION_SOCK_ADDR, ai->ai_addr,
			     MHD_OPTION_CONNECTION_LIMIT, srv.max_connections,
			     MHD_OPTION_LISTEN_BACKLOG_SIZE, srv.max_connections,
			     MHD_OPTION_THREAD_STACK_SIZE, (size_t)LC_THREAD_STACK,
			     MHD_OPTION_CONNECTION_TIMEOUT, 120u,
			     MHD_OPTION_NOTIFY_COMPLETED, on_completed, &srv,
			     MHD_OPTION_END);
	if (!d) {
		fprintf(stderr, "labcloud: cannot listen on %s\n", listen_spec);
		goto done;
	}
	info = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
	port = info ? info->port : 0;
	if (getnameinfo(ai->ai_addr, ai->ai_addrlen, host, sizeof(host), NULL, 0,
			NI_NUMERICHOST) != 0)
		snprintf(host, sizeof(host), "127.0.0.1");
	if (port_file && write_port_file(port_file, port) != 0) {
		fprintf(stderr, "labcloud: cannot write %s: %s\n", port_file, strerror(errno));
		goto done;
	}
	printf(ai->ai_family == AF_INET6 ? "labcloud listening on http://[%s]:%u\n"
					  : "labcloud listening on http://%s:%u\n", host, port);
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
	json_decref(srv.keys);
	return rc;
}
