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
 * Two mutexes: `lk.lock` guards configuration, counters and the fault RNG;
 * `store_lock` guards the objects, and JSON of stored objects is serialised
 * while it is held.  Stored objects are never modified in place: an update
 * builds a new object and swaps it in.
 *
 * This program is a stand-alone executable: it links libmicrohttpd, jansson
 * and pthread only, not the mecorch core; labkit.c brings the command line,
 * the HTTP plumbing and the fault injection every lab emulator shares.  See
 * examples/lab/README.md.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "labkit.h"

#include <stdlib.h>
#include <string.h>

#define LC_MAX_BODY (1024 * 1024)    /* larger request bodies get 413 */
#define LC_MAX_NAME 64               /* collection name length */
#define LC_MAX_KEY 255               /* Idempotency-Key length */
#define LC_MAX_FILTERS 32            /* query parameters on a list */
#define LC_THREAD_STACK (1024 * 1024)

typedef struct {
	lk_server lk;                /* lk.lock guards its counters and faults */

	pthread_mutex_t store_lock;  /* guards the fields below */
	json_t *objects;             /* collection -> { id -> object } */
	json_t *keys;                /* collection -> { idempotency key -> id } */
	uint64_t id_base, id_seq;
} lc_server;

/* What an API route names: /v1/{coll}[/{id}]. */
typedef struct {
	char coll[LC_MAX_NAME + 1];
	const char *id;              /* item routes: the object id, else NULL */
} lc_item;

typedef void (*lc_handler)(lk_call *c, const lc_item *it, lk_reply *r);

/* Fields the server owns: clients cannot set them (ignored in bodies). */
static const char *const server_fields[] = {
	"id", "created_at", "version", "idempotency_key",
};

/* ---- small helpers ---------------------------------------------------- */

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

static bool is_server_field(const char *k)
{
	for (size_t i = 0; i < LK_ARRAY_SIZE(server_fields); i++)
		if (strcmp(k, server_fields[i]) == 0)
			return true;
	return false;
}

static void reply_location(lk_reply *r, const char *coll, const char *id)
{
	lk_reply_header(r, MHD_HTTP_HEADER_LOCATION, "/v1/%s/%s", coll, id);
}

/* ---- the store --------------------------------------------------------- */

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

static void api_list(lk_call *c, const lc_item *it, lk_reply *r)
{
	lc_server *s = c->srv;
	lc_filters f = { .n = 0 };
	json_t *items, *coll, *obj;
	const char *id;

	MHD_get_connection_values(c->conn, MHD_GET_ARGUMENT_KIND, collect_filter, &f);
	if (f.overflow) {
		lk_reply_problem(r, 400, NULL, "at most %d query parameters", LC_MAX_FILTERS);
		return;
	}
	if (!(items = json_array())) {
		lk_reply_empty(r, 500);
		return;
	}
	pthread_mutex_lock(&s->store_lock);
	coll = store_map(s->objects, it->coll, false);
	json_object_foreach(coll, id, obj) {
		bool ok = true;
		for (int i = 0; ok && i < f.n; i++) {
			json_t *v = json_object_get(obj, f.key[i]);
			ok = v && field_matches(v, f.value[i]);
		}
		if (ok)
			json_array_append(items, obj);
	}
	lk_reply_json(r, 200, json_pack("{s:o, s:I}", "items", items,
					"count", (json_int_t)json_array_size(items)));
	pthread_mutex_unlock(&s->store_lock);
}

static void api_create(lk_call *c, const lc_item *it, lk_reply *r)
{
	lc_server *s = c->srv;
	const char *key = MHD_lookup_connection_value(c->conn, MHD_HEADER_KIND,
						      "Idempotency-Key");
	json_t *body, *obj = NULL, *coll, *keys = NULL;
	char id[24], ts[40];

	if (key && (!*key || strlen(key) > LC_MAX_KEY || !lk_utf8_valid(key))) {
		lk_reply_problem(r, 400, NULL, "Idempotency-Key must be 1 to %d bytes of UTF-8",
				 LC_MAX_KEY);
		return;
	}
	if (!(body = lk_body_object(c, r, NULL)))
		return;
	obj = user_fields(body);
	json_decref(body);
	if (!obj) {
		lk_reply_empty(r, 500);
		return;
	}
	lk_rfc3339_now(ts, sizeof(ts), true);

	pthread_mutex_lock(&s->store_lock);
	coll = store_map(s->objects, it->coll, true);
	if (key)
		keys = store_map(s->keys, it->coll, true);
	if (!coll || (key && !keys)) {
		lk_reply_empty(r, 500);
		goto done;
	}
	if (key) {
		const char *prev = json_string_value(json_object_get(keys, key));
		json_t *old = prev ? json_object_get(coll, prev) : NULL;
		if (old) {
			lk_reply_json(r, 200, json_incref(old));
			reply_location(r, it->coll, prev);
			goto done;
		}
	}
	snprintf(id, sizeof(id), "obj-%016llx",
		 (unsigned long long)lk_mix64(s->id_base + s->id_seq++));
	if (json_object_set_new(obj, "id", json_string(id)) ||
	    json_object_set_new(obj, "created_at", json_string(ts)) ||
	    json_object_set_new(obj, "version", json_integer(1)) ||
	    (key && json_object_set_new(obj, "idempotency_key", json_string(key))) ||
	    json_object_set(coll, id, obj) ||
	    (key && json_object_set_new(keys, key, json_string(id)))) {
		json_object_del(coll, id);
		lk_reply_empty(r, 500);
		goto done;
	}
	lk_reply_json(r, 201, json_incref(obj));
	reply_location(r, it->coll, id);
done:
	json_decref(obj); /* under the lock: obj is shared once stored */
	pthread_mutex_unlock(&s->store_lock);
}

static void api_get(lk_call *c, const lc_item *it, lk_reply *r)
{
	lc_server *s = c->srv;
	json_t *obj;
	pthread_mutex_lock(&s->store_lock);
	obj = json_object_get(store_map(s->objects, it->coll, false), it->id);
	if (obj)
		lk_reply_json(r, 200, json_incref(obj));
	else
		lk_reply_problem(r, 404, NULL, "no object %s in collection %s", it->id, it->coll);
	pthread_mutex_unlock(&s->store_lock);
}

/* PUT (replace the user fields) and PATCH (merge patch): both keep id,
 * created_at and idempotency_key and bump version. */
static void api_write(lk_call *c, const lc_item *it, lk_reply *r)
{
	lc_server *s = c->srv;
	json_t *body, *coll, *old, *upd = NULL;
	const char *k;
	size_t i;

	if (!(body = lk_body_object(c, r, NULL)))
		return;
	for (i = 0; i < LK_ARRAY_SIZE(server_fields); i++)
		json_object_del(body, server_fields[i]);

	pthread_mutex_lock(&s->store_lock);
	coll = store_map(s->objects, it->coll, false);
	if (!(old = json_object_get(coll, it->id))) {
		lk_reply_problem(r, 404, NULL, "no object %s in collection %s", it->id, it->coll);
		goto done;
	}
	upd = c->method == LK_PATCH ? merge_patch(old, body) : json_copy(body);
	if (!upd) {
		lk_reply_empty(r, 500);
		goto done;
	}
	for (i = 0; i < LK_ARRAY_SIZE(server_fields); i++) {
		k = server_fields[i];
		if (json_object_get(old, k))
			json_object_set(upd, k, json_object_get(old, k));
	}
	json_object_set_new(upd, "version",
			    json_integer(json_integer_value(json_object_get(old, "version")) + 1));
	if (json_object_set(coll, it->id, upd) != 0) {
		lk_reply_empty(r, 500);
		goto done;
	}
	lk_reply_json(r, 200, json_incref(upd));
done:
	json_decref(upd); /* under the lock: upd is shared once stored */
	pthread_mutex_unlock(&s->store_lock);
	json_decref(body);
}

static void api_delete(lk_call *c, const lc_item *it, lk_reply *r)
{
	lc_server *s = c->srv;
	json_t *coll, *obj, *keys;
	const char *key;

	pthread_mutex_lock(&s->store_lock);
	coll = store_map(s->objects, it->coll, false);
	if (!(obj = json_object_get(coll, it->id))) {
		lk_reply_problem(r, 404, NULL, "no object %s in collection %s", it->id, it->coll);
		goto done;
	}
	/* The key goes with the object: a later POST with it creates anew. */
	key = json_string_value(json_object_get(obj, "idempotency_key"));
	keys = store_map(s->keys, it->coll, false);
	if (key && keys) {
		const char *mapped = json_string_value(json_object_get(keys, key));
		if (mapped && strcmp(mapped, it->id) == 0)
			json_object_del(keys, key);
	}
	json_object_del(coll, it->id);
	lk_reply_empty(r, 204);
done:
	pthread_mutex_unlock(&s->store_lock);
}

/* The API route table: (method, collection or item) -> handler. */
static const struct {
	lk_method method;
	bool item;                   /* /v1/{collection}/{id} rather than /v1/{collection} */
	lc_handler fn;
} api_routes[] = {
	{ LK_GET, false, api_list },
	{ LK_HEAD, false, api_list },
	{ LK_POST, false, api_create },
	{ LK_GET, true, api_get },
	{ LK_HEAD, true, api_get },
	{ LK_PUT, true, api_write },
	{ LK_PATCH, true, api_write },
	{ LK_DELETE, true, api_delete },
};

static void api_dispatch(lk_call *c, lk_reply *r)
{
	const char *url = c->url, *p, *slash;
	lc_item it = { .id = NULL };
	char *id = NULL;
	size_t n;
	bool item;

	if (strncmp(url, "/v1/", 4) != 0) {
		lk_reply_problem(r, 404, NULL, "no such path: %s", url);
		return;
	}
	p = url + 4;
	slash = strchr(p, '/');
	n = slash ? (size_t)(slash - p) : strlen(p);
	if (!valid_collection(p, n)) {
		if (n == 0)
			lk_reply_problem(r, 404, NULL, "no such path: %s", url);
		else
			lk_reply_problem(r, 400, NULL, "collection names are 1 to %d of [a-z0-9_-]",
					 LC_MAX_NAME);
		return;
	}
	memcpy(it.coll, p, n);
	it.coll[n] = '\0';
	item = slash && slash[1]; /* "/v1/c/" is the collection */
	if (item) {
		const char *start = slash + 1, *end = strchr(start, '/');
		if (end && end[1]) {
			lk_reply_problem(r, 404, NULL, "no such path: %s", url);
			return;
		}
		n = end ? (size_t)(end - start) : strlen(start);
		if (!(id = strndup(start, n))) {
			lk_reply_empty(r, 500);
			return;
		}
		it.id = id;
	}
	for (size_t i = 0; i < LK_ARRAY_SIZE(api_routes); i++) {
		if (api_routes[i].item == item && api_routes[i].method == c->method) {
			api_routes[i].fn(c, &it, r);
			goto done;
		}
	}
	lk_reply_problem(r, 405, NULL, "%s is not supported on %s", lk_method_names[c->method],
			 item ? "an object" : "a collection");
	lk_reply_header(r, MHD_HTTP_HEADER_ALLOW, "%s",
			item ? "GET, HEAD, PUT, PATCH, DELETE" : "GET, HEAD, POST");
done:
	free(id);
}

/* ---- control endpoints: /_stats, /_config, /_objects ------------------- */

static json_t *config_json(const lc_server *s)
{
	const lk_faults *f = &s->lk.faults;
	return json_pack("{s:I, s:I, s:f, s:f, s:I, s:b, s:I}",
			 "latency_ms", (json_int_t)f->latency_ms,
			 "latency_jitter_ms", (json_int_t)f->jitter_ms,
			 "fail_rate", f->fail_rate,
			 "rate_429", f->rate_429,
			 "retry_after", (json_int_t)f->retry_after,
			 "token_required", s->lk.token != NULL,
			 "max_connections", (json_int_t)s->lk.max_connections);
}

static void ctl_stats(lk_call *c, lk_reply *r)
{
	lc_server *s = c->srv;
	json_t *st = json_object(), *objs = json_object(), *req, *resp, *m;
	const char *name;
	json_int_t total = 0;

	if (!st || !objs) {
		json_decref(st), json_decref(objs);
		lk_reply_empty(r, 500);
		return;
	}
	pthread_mutex_lock(&s->lk.lock);
	req = lk_requests_json(&s->lk, true);
	resp = lk_responses_json(&s->lk);
	json_object_set_new(st, "in_flight", json_integer(s->lk.in_flight));
	json_object_set_new(st, "max_in_flight", json_integer(s->lk.max_in_flight));
	pthread_mutex_unlock(&s->lk.lock);

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
	lk_reply_json(r, 200, st);
}

static void ctl_stats_reset(lk_call *c, lk_reply *r)
{
	lc_server *s = c->srv;
	pthread_mutex_lock(&s->lk.lock);
	lk_stats_reset(&s->lk);
	pthread_mutex_unlock(&s->lk.lock);
	lk_reply_empty(r, 204);
}

static void ctl_config_get(lk_call *c, lk_reply *r)
{
	lc_server *s = c->srv;
	pthread_mutex_lock(&s->lk.lock);
	lk_reply_json(r, 200, config_json(s));
	pthread_mutex_unlock(&s->lk.lock);
}

static void ctl_config_put(lk_call *c, lk_reply *r)
{
	lc_server *s = c->srv;
	lk_faults *f = &s->lk.faults;
	const lk_setting settings[] = {
		{ "latency_ms", 0, 3600000, &f->latency_ms, NULL },
		{ "latency_jitter_ms", 0, 3600000, &f->jitter_ms, NULL },
		{ "fail_rate", 0, 1, NULL, &f->fail_rate },
		{ "rate_429", 0, 1, NULL, &f->rate_429 },
		{ "retry_after", 0, 86400, &f->retry_after, NULL },
	};
	json_t *body;
	char why[512];

	if (!(body = lk_body_object(c, r, NULL)))
		return;
	pthread_mutex_lock(&s->lk.lock);
	if (lk_settings_apply(body, settings, LK_ARRAY_SIZE(settings), why, sizeof(why)) != 0)
		lk_reply_problem(r, 400, NULL, "%s", why);
	else
		lk_reply_json(r, 200, config_json(s));
	pthread_mutex_unlock(&s->lk.lock);
	json_decref(body);
}

static void ctl_objects_delete(lk_call *c, lk_reply *r)
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
	lk_reply_json(r, 200, json_pack("{s:I}", "deleted", n));
}

/* The control route table. */
static const lk_route ctl_routes[] = {
	{ LK_GET, "/_stats", ctl_stats, 0 },
	{ LK_POST, "/_stats/reset", ctl_stats_reset, 0 },
	{ LK_GET, "/_config", ctl_config_get, 0 },
	{ LK_PUT, "/_config", ctl_config_put, 0 },
	{ LK_DELETE, "/_objects", ctl_objects_delete, 0 },
};

/* ---- request handling ------------------------------------------------- */

/* Every request: a control endpoint, or an API request (counted, delayed,
 * maybe failed, then routed). */
static void handle(lk_call *c, lk_reply *r)
{
	lc_server *s = c->srv;
	if (strncmp(c->url, "/_", 2) == 0) {
		if (c->too_large)
			lk_reply_problem(r, 413, NULL, "the request body exceeds %d bytes",
					 LC_MAX_BODY);
		else
			lk_route_dispatch(ctl_routes, LK_ARRAY_SIZE(ctl_routes), c, c->url, r, 0);
		return;
	}
	if (lk_api_guard(&s->lk, c, r, 0))
		api_dispatch(c, r);
	lk_api_end(&s->lk, r->status);
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

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		LK_OPTIONS_BASE, LK_OPTIONS_FAULTS, LK_OPTION_JITTER, LK_OPTION_TOKEN,
		LK_OPTION_MAX_CONNECTIONS, { NULL, 0, NULL, 0 },
	};
	static lc_server srv;
	int rc;

	lk_init(&srv.lk, "labcloud");
	srv.lk.max_body = LC_MAX_BODY;
	srv.lk.max_connections = 4096;
	srv.lk.thread_stack = LC_THREAD_STACK;
	srv.lk.timeout_s = 120;
	if ((rc = lk_parse_args(&srv.lk, argc, argv, opts, NULL, NULL, usage)) >= 0)
		return rc;
	if (lk_resolve(&srv.lk) != 0)
		return 2;
	srv.lk.backlog = srv.lk.max_connections;

	rc = 1;
	srv.id_base = lk_random_u64();
	srv.objects = json_object();
	srv.keys = json_object();
	pthread_mutex_init(&srv.store_lock, NULL);
	if (!srv.objects || !srv.keys)
		fprintf(stderr, "labcloud: out of memory\n");
	else
		rc = lk_run(&srv.lk, handle, &srv, NULL);
	lk_free(&srv.lk);
	json_decref(srv.objects);
	json_decref(srv.keys);
	return rc;
}
