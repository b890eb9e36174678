/*
 * labkit.c - the infrastructure the local lab's API emulators share (see
 * labkit.h for the contracts).
 *
 * A request's life: libmicrohttpd calls on_request() once with the headers
 * (an lk_upload is attached to the request), once per piece of the body
 * (appended up to max_body, beyond which the request is only marked
 * too_large, so that the client can still be answered), and once at the end,
 * when the emulator's handler runs and its lk_reply is queued.
 * on_completed() frees the upload, whatever became of the connection.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "labkit.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* One request's body, kept across libmicrohttpd's calls. */
typedef struct {
	char *body;
	size_t len, cap;
	bool too_large;
} lk_upload;

const char *const lk_method_names[LK_METHOD_COUNT] = {
	"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OTHER",
};

lk_method lk_method_of(const char *name)
{
	for (int i = 0; i < LK_OTHER; i++)
		if (strcmp(name, lk_method_names[i]) == 0)
			return (lk_method)i;
	return LK_OTHER;
}

/* ---- helpers ----------------------------------------------------------- */

uint64_t lk_mix64(uint64_t z)
{
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

double lk_rng_next(uint64_t *rng)
{
	uint64_t x = *rng;
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*rng = x;
	return (double)((x * 0x2545f4914f6cdd1dULL) >> 11) / 9007199254740992.0;
}

uint64_t lk_random_u64(void)
{
	uint64_t v = 0;
	if (getrandom(&v, sizeof(v), 0) != (ssize_t)sizeof(v)) {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		v = ((uint64_t)ts.tv_sec << 32) ^ (uint64_t)ts.tv_nsec ^ (uint64_t)getpid();
	}
	return v;
}

static int64_t clock_ms(clockid_t id)
{
	struct timespec ts;
	clock_gettime(id, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t lk_now_ms(void)
{
	return clock_ms(CLOCK_REALTIME);
}

int64_t lk_mono_ms(void)
{
	return clock_ms(CLOCK_MONOTONIC);
}

static void sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

void lk_rfc3339_now(char *out, size_t n, bool millis)
{
	struct timespec ts;
	struct tm tm;
	char base[24];
	if (!millis) {
		time_t t = time(NULL);
		gmtime_r(&t, &tm);
		strftime(out, n, "%Y-%m-%dT%H:%M:%SZ", &tm);
		return;
	}
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	strftime(base, sizeof(base), "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(out, n, "%s.%03ldZ", base, ts.tv_nsec / 1000000L);
}

bool lk_utf8_valid(const char *s)
{
	json_t *j = json_string(s); /* jansson refuses invalid UTF-8 */
	json_decref(j);
	return j != NULL;
}

bool lk_secret_equal(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);
	unsigned char diff = 0;
	for (size_t i = 0; i < la; i++) /* no early exit on a mismatch */
		diff |= (unsigned char)(a[i] ^ b[lb ? i % lb : 0]);
	return la == lb && diff == 0;
}

const char *lk_bearer(struct MHD_Connection *conn)
{
	const char *h = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
						    MHD_HTTP_HEADER_AUTHORIZATION);
	if (!h || strncasecmp(h, "Bearer ", 7) != 0)
		return NULL;
	for (h += 7; *h == ' '; h++)
		;
	return h;
}

void lk_log(const lk_server *lk, const char *fmt, ...)
{
	char ts[32];
	struct timespec t;
	struct tm tm;
	va_list ap;
	clock_gettime(CLOCK_REALTIME, &t);
	gmtime_r(&t.tv_sec, &tm);
	strftime(ts, sizeof(ts), "%H:%M:%S", &tm);
	flockfile(stdout);
	printf("%s.%03ld %s: ", ts, t.tv_nsec / 1000000L, lk->name);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
	fflush(stdout);
	funlockfile(stdout);
}

int lk_save_json(const lk_server *lk, const char *path, json_t *root)
{
	char tmp[PATH_MAX];
	int rc = 0;
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	if (!root || json_dump_file(root, tmp, JSON_COMPACT) != 0 || rename(tmp, path) != 0) {
		fprintf(stderr, "%s: cannot save %s: %s\n", lk->name, path, strerror(errno));
		rc = -1;
	}
	json_decref(root);
	return rc;
}

/* ---- replies ----------------------------------------------------------- */

void lk_reply_json(lk_reply *r, int status, json_t *j)
{
	r->status = status;
	r->content_type = LK_JSON;
	free(r->body);
	r->body = j ? json_dumps(j, JSON_COMPACT) : NULL;
	json_decref(j);
	if (!r->body)
		r->status = 500; /* out of memory: an empty 500 */
}

void lk_reply_empty(lk_reply *r, int status)
{
	r->status = status;
	free(r->body);
	r->body = NULL;
}

void lk_reply_header(lk_reply *r, const char *name, const char *fmt, ...)
{
	va_list ap;
	int i;
	for (i = 0; i < r->nheaders; i++)
		if (strcasecmp(r->headers[i].name, name) == 0)
			break;
	if (i == r->nheaders) {
		if (i == LK_REPLY_HEADERS)
			return;
		r->headers[i].name = name;
		r->nheaders++;
	}
	va_start(ap, fmt);
	vsnprintf(r->headers[i].value, sizeof(r->headers[i].value), fmt, ap);
	va_end(ap);
}

const char *lk_status_title(int status)
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

json_t *lk_problem_v(int status, const char *title, const char *code, const char *fmt,
		     va_list ap)
{
	char detail[512];
	json_t *p;
	vsnprintf(detail, sizeof(detail), fmt, ap);
	p = json_pack("{s:s, s:s, s:i}", "type", "about:blank",
		      "title", title ? title : lk_status_title(status), "status", status);
	if (p && code)
		json_object_set_new(p, "code", json_string(code));
	if (p) /* json_string() refuses a detail quoting bytes that are not UTF-8 */
		json_object_set_new(p, "detail", json_string(detail));
	return p;
}

void lk_reply_problem(lk_reply *r, int status, const char *code, const char *fmt, ...)
{
	va_list ap;
	json_t *p;
	va_start(ap, fmt);
	p = lk_problem_v(status, NULL, code, fmt, ap);
	va_end(ap);
	lk_reply_json(r, status, p);
	r->content_type = LK_PROBLEM_JSON;
}

json_t *lk_body_object(const lk_call *c, lk_reply *r, const char *code)
{
	json_error_t err;
	json_t *j = NULL;
	if (c->body_len > 0 && !(j = json_loadb(c->body, c->body_len, 0, &err))) {
		if (r)
			lk_reply_problem(r, 400, code, "invalid JSON at line %d, column %d: %s",
					 err.line, err.column, err.text);
		return NULL;
	}
	if (!json_is_object(j)) {
		json_decref(j);
		if (r)
			lk_reply_problem(r, 400, code, "the request body must be a JSON object");
		return NULL;
	}
	return j;
}

/* Queue r on conn and release what r holds. */
static enum MHD_Result reply_send(struct MHD_Connection *conn, lk_reply *r)
{
	struct MHD_Response *resp;
	enum MHD_Result ret;
	bool has_body = r->body != NULL;

	if (has_body) {
		resp = MHD_create_response_from_buffer_with_free_callback(strlen(r->body),
									  r->body, free);
		if (resp)
			r->body = NULL; /* the response owns it now */
	} else {
		resp = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
	}
	if (!resp) {
		free(r->body);
		r->body = NULL;
		return MHD_NO;
	}
	if (has_body && r->content_type)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, r->content_type);
	for (int i = 0; i < r->nheaders; i++)
		MHD_add_response_header(resp, r->headers[i].name, r->headers[i].value);
	ret = MHD_queue_response(conn, (unsigned)r->status, resp);
	MHD_destroy_response(resp);
	return ret;
}

/* ---- routing ----------------------------------------------------------- */

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

const lk_route *lk_route_find(const lk_route *routes, size_t n, lk_call *c, const char *path,
			      char *allow, size_t cap)
{
	allow[0] = '\0';
	for (size_t i = 0; i < n; i++) {
		size_t len;
		if (!route_match(routes[i].pattern, path, c->param, sizeof(c->param)))
			continue;
		if (routes[i].method == c->method ||
		    (routes[i].method == LK_GET && c->method == LK_HEAD))
			return &routes[i];
		/* the path exists, not with this method: collect Allow */
		len = strlen(allow);
		snprintf(allow + len, cap - len, "%s%s%s", len ? ", " : "",
			 lk_method_names[routes[i].method],
			 routes[i].method == LK_GET ? ", HEAD" : "");
	}
	return NULL;
}

void lk_route_dispatch(const lk_route *routes, size_t n, lk_call *c, const char *path,
		       lk_reply *r, int flags)
{
	char allow[LK_ALLOW_MAX];
	const lk_route *rt = lk_route_find(routes, n, c, path, allow, sizeof(allow));
	bool codes = flags & LK_CODES;
	if (rt) {
		rt->fn(c, r);
	} else if (*allow) {
		lk_reply_problem(r, 405, codes ? "METHOD_NOT_ALLOWED" : NULL,
				 "%s is not supported on %s", lk_method_names[c->method], path);
		if (flags & LK_ALLOW)
			lk_reply_header(r, MHD_HTTP_HEADER_ALLOW, "%s", allow);
	} else {
		lk_reply_problem(r, 404, codes ? "NOT_FOUND" : NULL, "no such path: %s", path);
	}
}

/* ---- faults, counters, settings ---------------------------------------- */

int lk_api_begin(lk_server *lk, lk_method m, long *retry_after)
{
	const lk_faults *f = &lk->faults;
	long delay;
	int fault = 0;

	pthread_mutex_lock(&lk->lock);
	lk->requests[m]++;
	if (++lk->in_flight > lk->max_in_flight)
		lk->max_in_flight = lk->in_flight;
	/* The draws come in a fixed order, so that a --seed replays. */
	delay = f->latency_ms;
	if (f->jitter_ms > 0)
		delay += (long)(lk_rng_next(&lk->rng) * (double)(f->jitter_ms + 1));
	if (f->fail_rate > 0 && lk_rng_next(&lk->rng) < f->fail_rate)
		fault = lk_rng_next(&lk->rng) < 0.5 ? 503 : 500;
	else if (f->rate_429 > 0 && lk_rng_next(&lk->rng) < f->rate_429)
		fault = 429;
	if (retry_after)
		*retry_after = f->retry_after;
	pthread_mutex_unlock(&lk->lock);

	if (delay > 0)
		sleep_ms(delay);
	return fault;
}

void lk_api_end(lk_server *lk, int status)
{
	pthread_mutex_lock(&lk->lock);
	if (status >= 0 && status < LK_STATUS_MAX)
		lk->responses[status]++;
	lk->in_flight--;
	pthread_mutex_unlock(&lk->lock);
}

bool lk_api_guard(lk_server *lk, lk_call *c, lk_reply *r, int flags)
{
	bool codes = flags & LK_CODES;
	const char *token;
	long retry_after;
	int fault = lk_api_begin(lk, c->method, &retry_after);

	if (fault == 429) {
		lk_reply_problem(r, 429, codes ? "RATE_LIMITED" : NULL,
				 "injected throttling (rate_429); retry after %ld s", retry_after);
		lk_reply_header(r, MHD_HTTP_HEADER_RETRY_AFTER, "%ld", retry_after);
	} else if (fault) {
		lk_reply_problem(r, fault, codes ? "INJECTED_FAILURE" : NULL,
				 "injected failure (fail_rate); nothing was done");
	} else if (lk->token && (!(token = lk_bearer(c->conn)) ||
				 !lk_secret_equal(token, lk->token))) {
		lk_reply_problem(r, 401, codes ? "UNAUTHORIZED" : NULL,
				 "a valid bearer token is required");
		lk_reply_header(r, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer realm=\"%s\"",
				lk->name);
	} else if (c->too_large) {
		lk_reply_problem(r, 413, codes ? "BODY_TOO_LARGE" : NULL,
				 "the request body exceeds %zu bytes", lk->max_body);
	} else {
		return true;
	}
	return false;
}

json_t *lk_requests_json(const lk_server *lk, bool head)
{
	json_t *o = json_object();
	for (int i = 0; o && i < LK_METHOD_COUNT; i++)
		if (head || i != LK_HEAD)
			json_object_set_new(o, lk_method_names[i],
					    json_integer((json_int_t)lk->requests[i]));
	return o;
}

json_t *lk_responses_json(const lk_server *lk)
{
	json_t *o = json_object();
	char code[16];
	for (int i = 0; o && i < LK_STATUS_MAX; i++) {
		if (lk->responses[i]) {
			snprintf(code, sizeof(code), "%d", i);
			json_object_set_new(o, code, json_integer((json_int_t)lk->responses[i]));
		}
	}
	return o;
}

void lk_stats_reset(lk_server *lk)
{
	memset(lk->requests, 0, sizeof(lk->requests));
	memset(lk->responses, 0, sizeof(lk->responses));
	lk->max_in_flight = lk->in_flight; /* 0 when idle */
}

int lk_settings_apply(json_t *body, const lk_setting *set, size_t n, char *why, size_t cap)
{
	const char *k;
	json_t *v;
	size_t i;

	json_object_foreach(body, k, v) {
		for (i = 0; i < n && strcmp(k, set[i].name) != 0; i++)
			;
		if (i == n) {
			snprintf(why, cap, "unknown setting %s", k);
			return -1;
		}
	}
	for (i = 0; i < n; i++) { /* all valid before any changes */
		bool integer = set[i].l != NULL;
		double d;
		if (!(v = json_object_get(body, set[i].name)))
			continue;
		if (!json_is_number(v) || (integer && !json_is_integer(v))) {
			snprintf(why, cap, "%s must be %s", set[i].name,
				 integer ? "an integer" : "a number");
			return -1;
		}
		d = json_number_value(v);
		if (d < set[i].lo || d > set[i].hi) {
			snprintf(why, cap, "%s must be within [%g, %g]", set[i].name, set[i].lo,
				 set[i].hi);
			return -1;
		}
	}
	for (i = 0; i < n; i++) {
		if (!(v = json_object_get(body, set[i].name)))
			continue;
		if (set[i].l)
			*set[i].l = (long)json_number_value(v);
		else
			*set[i].d = json_number_value(v);
	}
	return 0;
}

/* ---- the command line -------------------------------------------------- */

void lk_init(lk_server *lk, const char *name)
{
	memset(lk, 0, sizeof(*lk));
	lk->name = name;
	lk->listen = "127.0.0.1:0";
	lk->seed = lk_random_u64();
	lk->faults.retry_after = 1;
	lk->rng = lk_mix64(lk->seed) | 1;
	pthread_mutex_init(&lk->lock, NULL);
	json_object_seed(0); /* before any thread touches jansson */
}

void lk_free(lk_server *lk)
{
	if (lk->ai)
		freeaddrinfo(lk->ai);
	lk->ai = NULL;
}

bool lk_parse_long(const char *s, long lo, long hi, long *out)
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

bool lk_parse_rate(const char *s, double *out)
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

static const char *option_name(const struct option *opts, int val)
{
	for (; opts->name; opts++)
		if (opts->val == val)
			return opts->name;
	return "?";
}

int lk_parse_args(lk_server *lk, int argc, char **argv, const struct option *opts,
		  lk_option_fn own, void *cls, void (*usage)(FILE *f))
{
	lk_faults *f = &lk->faults;
	long v;
	int opt;

	while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		bool ok = true;
		switch (opt) {
		case LK_OPT_LISTEN: lk->listen = optarg; break;
		case LK_OPT_PORT_FILE: lk->port_file = optarg; break;
		case LK_OPT_LATENCY: ok = lk_parse_long(optarg, 0, 3600000, &f->latency_ms); break;
		case LK_OPT_JITTER: ok = lk_parse_long(optarg, 0, 3600000, &f->jitter_ms); break;
		case LK_OPT_FAIL_RATE: ok = lk_parse_rate(optarg, &f->fail_rate); break;
		case LK_OPT_RATE_429: ok = lk_parse_rate(optarg, &f->rate_429); break;
		case LK_OPT_RETRY_AFTER:
			ok = lk_parse_long(optarg, 0, 86400, &f->retry_after);
			break;
		case LK_OPT_SEED:
			if ((ok = lk_parse_long(optarg, LONG_MIN, LONG_MAX, &v)))
				lk->seed = (uint64_t)v;
			break;
		case LK_OPT_TOKEN: ok = *optarg != '\0'; lk->token = optarg; break;
		case LK_OPT_MAX_CONNECTIONS:
			if ((ok = lk_parse_long(optarg, 1, 1000000, &v)))
				lk->max_connections = (unsigned)v;
			break;
		case LK_OPT_HELP: usage(stdout); return 0;
		default:
			if (opt < LK_OPT_OWN || !own) { /* getopt's '?': it said why */
				usage(stderr);
				return 2;
			}
			ok = own(cls, opt, optarg);
		}
		if (!ok) {
			fprintf(stderr, "%s: bad value for --%s: %s\n", lk->name,
				option_name(opts, opt), optarg);
			return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "%s: unexpected argument %s\n", lk->name, argv[optind]);
		return 2;
	}
	lk->rng = lk_mix64(lk->seed) | 1; /* xorshift needs a non-zero state */
	return -1;
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

int lk_resolve(lk_server *lk)
{
	lk_free(lk);
	if (resolve_listen(lk->listen, &lk->ai) != 0) {
		lk->ai = NULL;
		fprintf(stderr, "%s: cannot use --listen %s (want HOST:PORT)\n", lk->name,
			lk->listen);
		return -1;
	}
	return 0;
}

/* ---- running ----------------------------------------------------------- */

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
				  const char *method, const char *version,
				  const char *upload_data, size_t *upload_size, void **req_cls)
{
	lk_server *lk = cls;
	lk_upload *up = *req_cls;
	lk_call c;
	lk_reply r;
	size_t n;
	(void)version;

	if (!up) { /* first call: headers only */
		if (!(up = calloc(1, sizeof(*up))))
			return MHD_NO;
		*req_cls = up;
		return MHD_YES;
	}
	if (*upload_size) { /* a piece of the body */
		n = *upload_size;
		*upload_size = 0;
		if (up->too_large || up->len + n > lk->max_body) {
			up->too_large = true; /* keep reading, answer at the end */
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

	memset(&c, 0, sizeof(c));
	c.srv = lk->srv;
	c.conn = conn;
	c.url = url;
	snprintf(c.path, sizeof(c.path), "%s", url);
	n = strlen(c.path);
	while (n > 1 && c.path[n - 1] == '/') /* "/a/b/" and "/a/b" are the same */
		c.path[--n] = '\0';
	c.method_name = method;
	c.method = lk_method_of(method);
	c.body = up->body;
	c.body_len = up->len;
	c.too_large = up->too_large;
	memset(&r, 0, sizeof(r));
	r.status = 500;
	lk->handle(&c, &r);
	return reply_send(conn, &r);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **req_cls,
			 enum MHD_RequestTerminationCode toe)
{
	lk_upload *up = *req_cls;
	(void)cls, (void)conn, (void)toe;
	if (up) {
		free(up->body);
		free(up);
		*req_cls = NULL;
	}
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

/* A libmicrohttpd option of one integer value, for MHD_OPTION_ARRAY. */
static struct MHD_OptionItem option(enum MHD_OPTION o, size_t value)
{
	return (struct MHD_OptionItem){ o, (intptr_t)value, NULL };
}

int lk_run(lk_server *lk, lk_handler handle, void *srv, const char *suffix)
{
	struct MHD_OptionItem opts[6];
	struct MHD_Daemon *d = NULL;
	const union MHD_DaemonInfo *info;
	char host[NI_MAXHOST];
	unsigned flags, port;
	sigset_t sigs;
	int n = 0, sig, rc = 1;

	lk->handle = handle;
	lk->srv = srv;

	/* Signals are taken by sigwait() below; every thread inherits the mask. */
	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);
	if (lk->max_connections)
		raise_fd_limit(lk->max_connections);

	if (lk->thread_pool) {
		flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_ERROR_LOG;
		opts[n++] = option(MHD_OPTION_THREAD_POOL_SIZE, lk->thread_pool);
	} else {
		flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_POLL_INTERNAL_THREAD |
			MHD_USE_ITC | MHD_USE_ERROR_LOG;
	}
	if (lk->ai->ai_family == AF_INET6)
		flags |= MHD_USE_IPv6;
	if (lk->max_connections)
		opts[n++] = option(MHD_OPTION_CONNECTION_LIMIT, lk->max_connections);
	if (lk->backlog)
		opts[n++] = option(MHD_OPTION_LISTEN_BACKLOG_SIZE, lk->backlog);
	if (lk->thread_stack)
		opts[n++] = option(MHD_OPTION_THREAD_STACK_SIZE, lk->thread_stack);
	if (lk->timeout_s)
		opts[n++] = option(MHD_OPTION_CONNECTION_TIMEOUT, lk->timeout_s);
	opts[n] = option(MHD_OPTION_END, 0);

	d = MHD_start_daemon(flags, 0, NULL, NULL, on_request, lk,
			     MHD_OPTION_SOCK_ADDR, lk->ai->ai_addr,
			     MHD_OPTION_NOTIFY_COMPLETED, on_completed, lk,
			     MHD_OPTION_ARRAY, opts,
			     MHD_OPTION_END);
	if (!d) {
		fprintf(stderr, "%s: cannot listen on %s\n", lk->name, lk->listen);
		goto done;
	}
	info = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
	port = info ? info->port : 0;
	if (getnameinfo(lk->ai->ai_addr, lk->ai->ai_addrlen, host, sizeof(host), NULL, 0,
			NI_NUMERICHOST) != 0)
		snprintf(host, sizeof(host), "127.0.0.1");
	if (lk->port_file && write_port_file(lk->port_file, port) != 0) {
		fprintf(stderr, "%s: cannot write %s: %s\n", lk->name, lk->port_file,
			strerror(errno));
		goto done;
	}
	printf(lk->ai->ai_family == AF_INET6 ? "%s listening on http://[%s]:%u%s\n"
					      : "%s listening on http://%s:%u%s\n",
	       lk->name, host, port, suffix ? suffix : "");
	fflush(stdout);

	do {
		if (sigwait(&sigs, &sig) != 0)
			goto done;
	} while (sig != SIGINT && sig != SIGTERM);
	rc = 0;
done:
	if (d)
		MHD_stop_daemon(d);
	return rc;
}
