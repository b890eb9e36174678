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
 * Stand-alone (libmicrohttpd, jansson, pthread), like labcloud.c.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <microhttpd.h>
#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_BODY (1024 * 1024)
#define BASE "/fed_enablement/v1/fed_resources/system_info"

typedef struct {
	pthread_mutex_t lock;
	json_t *systems;        /* systemId -> SystemInfo (+ endpoint) */
	json_t *notifications;  /* array */
	const char *token;
	int notify_status, notify_failures;
	unsigned long requests[8];
} fed_server;

typedef struct {
	char *body;
	size_t len;
	int too_large;
} upload;

typedef struct {
	int status;
	char *body;
	const char *ctype;
	char *location;
} reply;

static void reply_json(reply *r, int status, json_t *j)
{
	r->status = status;
	r->body = j ? json_dumps(j, JSON_COMPACT) : NULL;
	r->ctype = "application/json";
	json_decref(j);
}

static void problem(reply *r, int status, const char *fmt, ...)
{
	char detail[512];
	va_list ap;
	const char *title = status == 400 ? "Bad Request" : status == 401 ? "Unauthorized"
			    : status == 404 ? "Not Found" : status == 405 ? "Method Not Allowed"
			    : status == 413 ? "Payload Too Large" : "Error";
	va_start(ap, fmt);
	vsnprintf(detail, sizeof(detail), fmt, ap);
	va_end(ap);
	reply_json(r, status, json_pack("{s:s,s:s,s:i,s:s}", "type", "about:blank", "title", title, "status",
					status, "detail", detail));
	r->ctype = "application/problem+json";
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

static json_t *body_object(const upload *up, reply *r)
{
	json_error_t je;
	json_t *j, *in;
	if (!up->len) {
		problem(r, 400, "a JSON body is required");
		return NULL;
	}
	if (!(j = json_loadb(up->body, up->len, 0, &je))) {
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

static void handle_fed(fed_server *s, struct MHD_Connection *conn, const char *method, const char *url,
		       const upload *up, reply *r)
{
	const char *id = NULL;
	json_t *b, *sys;
	if (s->token) {
		const char *h = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
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
	pthread_mutex_lock(&s->lock);
	if (!id && !strcmp(method, "POST")) {
		const char *name, *prov;
		const char *k;
		json_t *v;
		int dup = 0;
		char nid[37];
		if (!(b = body_object(up, r)))
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
				r->location = NULL;
				if (asprintf(&r->location, "%s/%s", BASE, nid) < 0)
					r->location = NULL;
				reply_json(r, 201, info_of(sys));
			}
		}
		json_decref(b);
	} else if (!id && !strcmp(method, "GET")) {
		filters f = { NULL, NULL, NULL, 0 };
		json_t *out = json_array(), *v;
		const char *k;
		MHD_get_connection_values(conn, MHD_GET_ARGUMENT_KIND, collect_filter, &f);
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
				reply_json(r, 200, out);
			}
		}
		json_decref(f.ids);
		json_decref(f.names);
		json_decref(f.providers);
	} else if (id && !(sys = json_object_get(s->systems, id))) {
		if (!strcmp(method, "GET") || !strcmp(method, "PATCH") || !strcmp(method, "DELETE"))
			problem(r, 404, "no MEC system %s", id);
		else
			problem(r, 405, "%s is not allowed here", method);
	} else if (id && !strcmp(method, "GET")) {
		reply_json(r, 200, info_of(sys));
	} else if (id && !strcmp(method, "PATCH")) {
		json_t *name, *ep;
		if (!(b = body_object(up, r)))
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
			reply_json(r, 200, info_of(sys));
		}
		json_decref(b);
	} else if (id && !strcmp(method, "DELETE")) {
		json_object_del(s->systems, id);
		r->status = 204;
	} else {
		problem(r, 405, "%s is not allowed here", method);
	}
out:
	pthread_mutex_unlock(&s->lock);
}

static void handle_other(fed_server *s, const char *method, const char *url, const upload *up, reply *r)
{
	pthread_mutex_lock(&s->lock);
	if (!strncmp(url, "/notify/", 8) && !strcmp(method, "POST")) {
		json_t *b = up->len ? json_loadb(up->body, up->len, 0, NULL) : NULL;
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
			r->status = 204;
		}
	} else if (!strcmp(url, "/_notifications") && !strcmp(method, "GET")) {
		reply_json(r, 200, json_pack("{s:O,s:I}", "items", s->notifications, "count",
					     (json_int_t)json_array_size(s->notifications)));
	} else if (!strcmp(url, "/_notifications") && !strcmp(method, "DELETE")) {
		json_array_clear(s->notifications);
		r->status = 204;
	} else if (!strcmp(url, "/_config") && !strcmp(method, "PUT")) {
		json_t *b = up->len ? json_loadb(up->body, up->len, 0, NULL) : NULL;
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
			reply_json(r, 200, json_pack("{s:i,s:i}", "notifyStatus", s->notify_status, "notifyFailures",
						     s->notify_failures));
		}
		json_decref(b);
	} else if (!strcmp(url, "/_stats") && !strcmp(method, "GET")) {
		reply_json(r, 200, json_pack("{s:{s:I,s:I,s:I,s:I},s:I}", "requests", "GET", (json_int_t)s->requests[0],
					     "POST", (json_int_t)s->requests[1], "PATCH", (json_int_t)s->requests[2],
					     "DELETE", (json_int_t)s->requests[3], "systems",
					     (json_int_t)json_object_size(s->systems)));
	} else {
		problem(r, 404, "no resource at %s", url);
	}
	pthread_mutex_unlock(&s->lock);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
				  const char *version, const char *data, size_t *size, void **req_cls)
{
	fed_server *s = cls;
	upload *up = *req_cls;
	reply r = { 500, NULL, NULL, NULL };
	struct MHD_Response *resp;
	enum MHD_Result ret;
	(void)version;
	if (!up) {
		if (!(up = calloc(1, sizeof(*up))))
			return MHD_NO;
		*req_cls = up;
		return MHD_YES;
	}
	if (*size) {
		if (!up->too_large && up->len + *size <= MAX_BODY) {
			char *p = realloc(up->body, up->len + *size + 1);
			if (!p)
				return MHD_NO;
			up->body = p;
			memcpy(up->body + up->len, data, *size);
			up->len += *size;
		} else {
			up->too_large = 1;
		}
		*size = 0;
		return MHD_YES;
	}
	pthread_mutex_lock(&s->lock);
	s->requests[!strcmp(method, "GET") ? 0 : !strcmp(method, "POST") ? 1 : !strcmp(method, "PATCH") ? 2
		    : !strcmp(method, "DELETE") ? 3 : 4]++;
	pthread_mutex_unlock(&s->lock);
	if (up->too_large)
		problem(&r, 413, "the body exceeds %d bytes", MAX_BODY);
	else if (!strncmp(url, "/fed_enablement/", 16))
		handle_fed(s, conn, method, url, up, &r);
	else
		handle_other(s, method, url, up, &r);
	resp = MHD_create_response_from_buffer(r.body ? strlen(r.body) : 0, r.body ? r.body : (void *)"",
					       r.body ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
	if (!resp) {
		free(r.body);
		free(r.location);
		return MHD_NO;
	}
	if (r.body && r.ctype)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, r.ctype);
	if (r.location)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_LOCATION, r.location);
	ret = MHD_queue_response(conn, (unsigned)r.status, resp);
	MHD_destroy_response(resp);
	free(r.location);
	return ret;
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **req_cls, enum MHD_RequestTerminationCode toe)
{
	upload *up = *req_cls;
	(void)cls, (void)conn, (void)toe;
	if (up) {
		free(up->body);
		free(up);
		*req_cls = NULL;
	}
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

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "listen", required_argument, NULL, 'l' },
		{ "port-file", required_argument, NULL, 'p' },
		{ "token", required_argument, NULL, 't' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	static fed_server srv;
	const char *listen_spec = "127.0.0.1:0", *port_file = NULL;
	char host[256];
	const char *colon;
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV };
	struct addrinfo *ai = NULL;
	struct MHD_Daemon *d;
	const union MHD_DaemonInfo *info;
	sigset_t sigs;
	int opt, sig;
	while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (opt) {
		case 'l': listen_spec = optarg; break;
		case 'p': port_file = optarg; break;
		case 't': srv.token = optarg; break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	colon = strrchr(listen_spec, ':');
	if (!colon || (size_t)(colon - listen_spec) >= sizeof(host)) {
		fprintf(stderr, "federator: bad --listen %s\n", listen_spec);
		return 2;
	}
	snprintf(host, sizeof(host), "%.*s", (int)(colon - listen_spec), listen_spec);
	if (getaddrinfo(host[0] ? host : "127.0.0.1", colon + 1, &hints, &ai) != 0) {
		fprintf(stderr, "federator: cannot resolve %s\n", listen_spec);
		return 2;
	}
	pthread_mutex_init(&srv.lock, NULL);
	json_object_seed(0);
	srv.systems = json_object();
	srv.notifications = json_array();
	srv.notify_status = 503;
	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);
	d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_ERROR_LOG |
			     (ai->ai_family == AF_INET6 ? MHD_USE_IPv6 : 0),
			     0, NULL, NULL, on_request, &srv, MHD_OPTION_SOCK_ADDR, ai->ai_addr,
			     MHD_OPTION_NOTIFY_COMPLETED, on_completed, &srv, MHD_OPTION_THREAD_POOL_SIZE, 2u,
			     MHD_OPTION_END);
	freeaddrinfo(ai);
	if (!d) {
		fprintf(stderr, "federator: cannot listen on %s\n", listen_spec);
		return 1;
	}
	info = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
	if (port_file) {
		char tmp[4096];
		FILE *f;
		snprintf(tmp, sizeof(tmp), "%s.tmp", port_file);
		if (!(f = fopen(tmp, "w")) || fprintf(f, "%u\n", info ? info->port : 0) < 0 || fclose(f) != 0 ||
		    rename(tmp, port_file) != 0) {
			fprintf(stderr, "federator: cannot write %s: %s\n", port_file, strerror(errno));
			MHD_stop_daemon(d);
			return 1;
		}
	}
	printf("federator listening on http://%s:%u\n", host[0] ? host : "127.0.0.1", info ? info->port : 0);
	fflush(stdout);
	do {
		if (sigwait(&sigs, &sig) != 0)
			break;
	} while (sig != SIGINT && sig != SIGTERM);
	MHD_stop_daemon(d);
	json_decref(srv.systems);
	json_decref(srv.notifications);
	return 0;
}
