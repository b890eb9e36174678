/*
 * federator.c - the local lab's MEC federator (MEF): the server side of
 * ETSI MEC 040 fed_enablement/v1 fed_resources/system_info, which a MEC
 * orchestrator uses over Mfm to register its MEC system and discover the
 * other members of the federation, plus a notification receiver that
 * records what is POSTed to it (tests point MEC 010-2 subscriptions here).
 *
 * MEC 040 behaviour, as the ETSI conformance tests check it:
 *   POST   /fed_enablement/v1/fed_resources/system_info     SystemInfo without
 *          systemId -> 201 + Location + SystemInfo with a new systemId; a
 *          systemId in the body, a missing name/provider or a system already
 *          registered (same name and provider) -> 400
 *   GET    .../system_info[?systemid=&systemname=&systemprovider=]  (each
 *          repeatable or comma-separated) -> 200 SystemInfo[], 404 when a
 *          filter matches nothing
 *   GET    .../system_info/{id}     -> 200 or 404
 *   PATCH  .../system_info/{id}     SystemInfoUpdate (systemName and/or
 *          endpoint) -> 200 SystemInfo; empty update -> 400; unknown -> 404
 *   DELETE .../system_info/{id}     -> 204 or 404
 * Bodies are accepted bare or wrapped ({"SystemInfo": {...}}) and sent bare.
 * Errors are application/problem+json.  --token requires a bearer token on
 * the MEC 040 API.
 *
 * Receiver and control endpoints (never authenticated):
 *   POST /notify/{anything}         record the JSON body; answer 204, or the
 *                                   status set by PUT /_config
 *                                   {"notifyStatus": 503, "notifyFailures": N}
 *                                   (the next N notifications get it)
 *   GET  /_notifications            {"items":[{"path","body","receivedAt"}],"count"}
 *   DELETE /_notifications          forget them
 *   GET  /_stats                    {"requests": {...}, "systems": N}
 *
 * Stand-alone (libmicrohttpd, jansson, pthread), like labcloud.c; labkit.c
 * brings the command line and the HTTP plumbing every lab emulator shares.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "labkit.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>

#define MAX_BODY (1024 * 1024)
#define BASE "/fed_enablement/v1/fed_resources/system_info"

typedef struct {
	lk_server lk;           /* lk.lock guards everything below too */
	json_t *systems;        /* systemId -> SystemInfo (+ endpoint) */
	json_t *notifications;  /* array */
	const char *token;
	int notify_status, notify_failures;
} fed_server;

static void problem(lk_reply *r, int status, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void problem(lk_reply *r, int status, const char *fmt, ...)
{
	const char *title = status == 400 ? "Bad Request" : status == 401 ? "Unauthorized"
			    : status == 404 ? "Not Found" : status == 405 ? "Method Not Allowed"
			    : status == 413 ? "Payload Too Large" : "Error";
	va_list ap;
	json_t *p;
	va_start(ap, fmt);
	p = lk_problem_v(status, title, NULL, fmt, ap);
	va_end(ap);
	lk_reply_json(r, status, p);
	r->content_type = LK_PROBLEM_JSON;
}

static void new_id(char out[37])
{
	unsigned char b[16];
	static const char hx[] = "0123456789abcdef";
	int j = 0;
	if (getrandom(b, sizeof(b), 0) != (ssize_t)sizeof(b))
		memset(b, 7, sizeof(b));
	b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);
	b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
	for (int i = 0; i < 16; i++) {
		if (i == 4 || i == 6 || i == 8 || i == 10)
			out[j++] = '-';
		out[j++] = hx[b[i] >> 4];
		out[j++] = hx[b[i] & 15];
	}
	out[j] = '\0';
}

static json_t *body_object(const lk_call *c, lk_reply *r)
{
	json_error_t je;
	json_t *j, *in;
	if (!c->body_len) {
		problem(r, 400, "a JSON body is required");
		return NULL;
	}
	if (!(j = json_loadb(c->body, c->body_len, 0, &je))) {
		problem(r, 400, "malformed JSON: %s", je.text);
		return NULL;
	}
	if (!json_is_object(j)) {
		json_decref(j);
		problem(r, 400, "the body must be a JSON object");
		return NULL;
	}
	in = json_object_get(j, "SystemInfo");
	if (!in)
		in = json_object_get(j, "SystemInfoUpdate");
	if (json_is_object(in)) {
		json_incref(in);
		json_decref(j);
		return in;
	}
	return j;
}

/* The public view of a stored system (bare SystemInfo). */
static json_t *info_of(json_t *sys)
{
	return json_pack("{s:O,s:O,s:O}", "systemId", json_object_get(sys, "systemId"), "systemName",
			 json_object_get(sys, "systemName"), "systemProvider", json_object_get(sys, "systemProvider"));
}

typedef struct {
	json_t *ids, *names, *providers; /* arrays of accepted values, or NULL */
	int bad;
} filters;

static void add_values(json_t **arr, const char *v)
{
	char *copy = strdup(v ? v : ""), *save = NULL, *tok;
	if (!*arr)
		*arr = json_array();
	for (tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save))
		json_array_append_new(*arr, json_string(tok));
	free(copy);
}

static enum MHD_Result collect_filter(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
	filters *f = cls;
	(void)kind;
	if (!strcmp(key, "systemid"))
		add_values(&f->ids, value);
	else if (!strcmp(key, "systemname"))
		add_values(&f->names, value);
	else if (!strcmp(key, "systemprovider"))
		add_values(&f->providers, value);
	else
		f->bad = 1;
	return MHD_YES;
}

static int in_arr(json_t *arr, json_t *v)
{
	size_t i;
	json_t *e;
	if (!arr)
		return 1;
	json_array_foreach(arr, i, e)
		if (json_equal(e, v))
			return 1;
	return 0;
}

static void handle_fed(fed_server *s, lk_call *c, lk_reply *r)
{
	const char *url = c->url, *id = NULL;
	lk_method m = c->method;
	json_t *b, *sys;
	if (s->token) {
		const char *h = MHD_lookup_connection_value(c->conn, MHD_HEADER_KIND,
							    MHD_HTTP_HEADER_AUTHORIZATION);
		if (!h || strncasecmp(h, "Bearer ", 7) || strcmp(h + 7, s->token)) {
			problem(r, 401, "a valid bearer token is required");
			return;
		}
	}
	if (!strcmp(url, BASE)) {
		id = NULL;
	} else if (!strncmp(url, BASE "/", strlen(BASE) + 1) && url[strlen(BASE) + 1] &&
		   !strchr(url + strlen(BASE) + 1, '/')) {
		id = url + strlen(BASE) + 1;
	} else {
		problem(r, 404, "no resource at %s", url);
		return;
	}
	pthread_mutex_lock(&s->lk.lock);
	if (!id && m == LK_POST) {
		const char *name, *prov;
		const char *k;
		json_t *v;
		int dup = 0;
		char nid[37];
		if (!(b = body_object(c, r)))
			goto out;
		name = json_string_value(json_object_get(b, "systemName"));
		prov = json_string_value(json_object_get(b, "systemProvider"));
		if (json_object_get(b, "systemId")) {
			problem(r, 400, "systemId must be absent: the federator assigns it");
		} else if (!name || !*name || !prov || !*prov) {
			problem(r, 400, "systemName and systemProvider (strings) are required");
		} else {
			json_object_foreach(s->systems, k, v)
				if (!strcmp(json_string_value(json_object_get(v, "systemName")), name) &&
				    !strcmp(json_string_value(json_object_get(v, "systemProvider")), prov))
					dup = 1;
			if (dup) {
				problem(r, 400, "the MEC system %s of %s is registered already", name, prov);
			} else {
				new_id(nid);
				sys = json_pack("{s:s,s:s,s:s}", "systemId", nid, "systemName", name, "systemProvider", prov);
				json_object_set_new(s->systems, nid, sys);
				lk_reply_header(r, MHD_HTTP_HEADER_LOCATION, "%s/%s", BASE, nid);
				lk_reply_json(r, 201, info_of(sys));
			}
		}
		json_decref(b);
	} else if (!id && m == LK_GET) {
		filters f = { NULL, NULL, NULL, 0 };
		json_t *out = json_array(), *v;
		const char *k;
		MHD_get_connection_values(c->conn, MHD_GET_ARGUMENT_KIND, collect_filter, &f);
		if (f.bad) {
			json_decref(out);
			problem(r, 400, "the filters are systemid, systemname and systemprovider");
		} else {
			json_object_foreach(s->systems, k, v)
				if (in_arr(f.ids, json_object_get(v, "systemId")) &&
				    in_arr(f.names, json_object_get(v, "systemName")) &&
				    in_arr(f.providers, json_object_get(v, "systemProvider")))
					json_array_append_new(out, info_of(v));
			if ((f.ids || f.names || f.providers) && json_array_size(out) == 0) {
				json_decref(out);
				problem(r, 404, "no MEC system matches");
			} else {
				lk_reply_json(r, 200, out);
			}
		}
		json_decref(f.ids);
		json_decref(f.names);
		json_decref(f.providers);
	} else if (id && !(sys = json_object_get(s->systems, id))) {
		if (m == LK_GET || m == LK_PATCH || m == LK_DELETE)
			problem(r, 404, "no MEC system %s", id);
		else
			problem(r, 405, "%s is not allowed here", c->method_name);
	} else if (id && m == LK_GET) {
		lk_reply_json(r, 200, info_of(sys));
	} else if (id && m == LK_PATCH) {
		json_t *name, *ep;
		if (!(b = body_object(c, r)))
			goto out;
		name = json_object_get(b, "systemName");
		ep = json_object_get(b, "endpoint");
		if ((!name && !ep) || (name && (!json_is_string(name) || !json_string_length(name))) ||
		    (ep && !json_is_object(ep))) {
			problem(r, 400, "give systemName (a non-empty string) and/or endpoint (an EndPointInfo)");
		} else {
			if (name)
				json_object_set(sys, "systemName", name);
			if (ep)
				json_object_set(sys, "endpoint", ep);
			lk_reply_json(r, 200, info_of(sys));
		}
		json_decref(b);
	} else if (id && m == LK_DELETE) {
		json_object_del(s->systems, id);
		lk_reply_empty(r, 204);
	} else {
		problem(r, 405, "%s is not allowed here", c->method_name);
	}
out:
	pthread_mutex_unlock(&s->lk.lock);
}

static void handle_other(fed_server *s, lk_call *c, lk_reply *r)
{
	const char *url = c->url;
	lk_method m = c->method;
	pthread_mutex_lock(&s->lk.lock);
	if (!strncmp(url, "/notify/", 8) && m == LK_POST) {
		json_t *b = c->body_len ? json_loadb(c->body, c->body_len, 0, NULL) : NULL;
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		if (s->notify_failures > 0) {
			s->notify_failures--;
			json_decref(b);
			problem(r, s->notify_status, "failing on purpose (%d more)", s->notify_failures);
		} else {
			json_array_append_new(s->notifications,
					      json_pack("{s:s,s:o,s:f}", "path", url, "body", b ? b : json_null(),
							"receivedAt", ts.tv_sec + ts.tv_nsec / 1e9));
			lk_reply_empty(r, 204);
		}
	} else if (!strcmp(url, "/_notifications") && m == LK_GET) {
		lk_reply_json(r, 200, json_pack("{s:O,s:I}", "items", s->notifications, "count",
						(json_int_t)json_array_size(s->notifications)));
	} else if (!strcmp(url, "/_notifications") && m == LK_DELETE) {
		json_array_clear(s->notifications);
		lk_reply_empty(r, 204);
	} else if (!strcmp(url, "/_config") && m == LK_PUT) {
		json_t *b = c->body_len ? json_loadb(c->body, c->body_len, 0, NULL) : NULL;
		json_t *st = json_object_get(b, "notifyStatus"), *n = json_object_get(b, "notifyFailures");
		if (!json_is_object(b) || (st && (!json_is_integer(st) || json_integer_value(st) < 200 ||
						  json_integer_value(st) > 599)) ||
		    (n && (!json_is_integer(n) || json_integer_value(n) < 0))) {
			problem(r, 400, "want {\"notifyStatus\": 200..599, \"notifyFailures\": N}");
		} else {
			if (st)
				s->notify_status = (int)json_integer_value(st);
			if (n)
				s->notify_failures = (int)json_integer_value(n);
			lk_reply_json(r, 200, json_pack("{s:i,s:i}", "notifyStatus", s->notify_status, "notifyFailures",
							s->notify_failures));
		}
		json_decref(b);
	} else if (!strcmp(url, "/_stats") && m == LK_GET) {
		const uint64_t *n = s->lk.requests;
		lk_reply_json(r, 200, json_pack("{s:{s:I,s:I,s:I,s:I},s:I}", "requests",
						"GET", (json_int_t)n[LK_GET],
						"POST", (json_int_t)n[LK_POST],
						"PATCH", (json_int_t)n[LK_PATCH],
						"DELETE", (json_int_t)n[LK_DELETE],
						"systems",
						(json_int_t)json_object_size(s->systems)));
	} else {
		problem(r, 404, "no resource at %s", url);
	}
	pthread_mutex_unlock(&s->lk.lock);
}

/* Every request is counted by method; a too large body is refused
 * wherever it goes. */
static void handle(lk_call *c, lk_reply *r)
{
	fed_server *s = c->srv;
	pthread_mutex_lock(&s->lk.lock);
	s->lk.requests[c->method]++;
	pthread_mutex_unlock(&s->lk.lock);
	if (c->too_large)
		problem(r, 413, "the body exceeds %d bytes", MAX_BODY);
	else if (!strncmp(c->url, "/fed_enablement/", 16))
		handle_fed(s, c, r);
	else
		handle_other(s, c, r);
}

static void usage(FILE *f)
{
	fputs("usage: federator [options]\n"
	      "A MEC 040 federator (fed_enablement/v1 system_info) and notification receiver for the lab.\n"
	      "\n"
	      "  --listen HOST:PORT   address to listen on (default 127.0.0.1:0, a free port)\n"
	      "  --port-file FILE     write the bound port to FILE once listening\n"
	      "  --token T            require 'Authorization: Bearer T' on fed_enablement/v1\n"
	      "  --help               this help\n", f);
}


enum { O_TOKEN = LK_OPT_OWN };

static bool own_option(void *cls, int opt, const char *arg)
{
	fed_server *s = cls;
	if (opt != O_TOKEN)
		return false;
	s->token = arg;
	return true;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		LK_OPTIONS_BASE,
		{ "token", required_argument, NULL, O_TOKEN },
		{ NULL, 0, NULL, 0 },
	};
	static fed_server srv;
	int rc;

	lk_init(&srv.lk, "federator");
	srv.lk.max_body = MAX_BODY;
	srv.lk.thread_pool = 2;
	if ((rc = lk_parse_args(&srv.lk, argc, argv, opts, own_option, &srv, usage)) >= 0)
		return rc;
	if (lk_resolve(&srv.lk) != 0)
		return 2;
	srv.systems = json_object();
	srv.notifications = json_array();
	srv.notify_status = 503;
	rc = lk_run(&srv.lk, handle, &srv, NULL);
	lk_free(&srv.lk);
	json_decref(srv.systems);
	json_decref(srv.notifications);
	return rc;
}
