/*
 * test_http.c - the HTTP driver against a real libmicrohttpd server on
 * 127.0.0.1 (and on a unix socket): retries and backoff, Retry-After,
 * idempotency rules, timeouts, auth headers, AWS SigV4 signatures checked
 * by recomputing them here, and the Lua binding (ctx.http.request,
 * ctx.sleep) run as sandbox tasks.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "common.h"
#include "drivers.h"
#include "http.h"
#include "loop.h"
#include "runtime.h"
#include "sandbox.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <lauxlib.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

/* ---- the scripted server ------------------------------------------------ */

#define MAX_RECS 1024
#define MAX_HDRS 48

typedef struct {
	char method[16];
	char path[256];
	char *body;
	size_t body_len;
	int64_t t_ms;
	int nh;
	char *hn[MAX_HDRS], *hv[MAX_HDRS];
} rec;

typedef struct {
	struct MHD_Daemon *d;
	int port;
	pthread_mutex_t mu;
	rec recs[MAX_RECS];
	int nrecs;
} server;

static server srv;      /* TCP, 127.0.0.1 */
static server usrv;     /* unix socket */
static char sock_dir[32], sock_path[64];

typedef struct {
	mo_buf body;
} upload;

static enum MHD_Result collect_header(void *cls, enum MHD_ValueKind kind, const char *k, const char *v)
{
	rec *r = cls;
	(void)kind;
	if (r->nh < MAX_HDRS) {
		r->hn[r->nh] = strdup(k);
		r->hv[r->nh] = strdup(v ? v : "");
		r->nh++;
	}
	return MHD_YES;
}

static const char *rec_header(const rec *r, const char *name)
{
	for (int i = 0; i < r->nh; i++)
		if (strcasecmp(r->hn[i], name) == 0)
			return r->hv[i];
	return NULL;
}

/* Requests so far for path, this one included. */
static int hits_locked(server *s, const char *path)
{
	int n = 0;
	for (int i = 0; i < s->nrecs; i++)
		if (strcmp(s->recs[i].path, path) == 0)
			n++;
	return n;
}

static enum MHD_Result reply(struct MHD_Connection *c, int status, const char *ctype,
			     const char *body, size_t len, const char *h1, const char *v1)
{
	struct MHD_Response *resp = MHD_create_response_from_buffer(len, (void *)body,
								    MHD_RESPMEM_MUST_COPY);
	enum MHD_Result ret;
	if (ctype)
		MHD_add_response_header(resp, "Content-Type", ctype);
	if (h1)
		MHD_add_response_header(resp, h1, v1);
	ret = MHD_queue_response(c, (unsigned)status, resp);
	MHD_destroy_response(resp);
	return ret;
}

static enum MHD_Result handler(void *cls, struct MHD_Connection *c, const char *url,
			       const char *method, const char *version, const char *data,
			       size_t *data_size, void **con_cls)
{
	server *s = cls;
	upload *up = *con_cls;
	rec *r;
	int hits, n;
	char key[128];
	(void)version;

	if (!up) {
		up = calloc(1, sizeof(*up));
		*con_cls = up;
		return MHD_YES;
	}
	if (*data_size) {
		mo_buf_put(&up->body, data, *data_size);
		*data_size = 0;
		return MHD_YES;
	}

	pthread_mutex_lock(&s->mu);
	assert_true(s->nrecs < MAX_RECS);
	r = &s->recs[s->nrecs++];
	memset(r, 0, sizeof(*r));
	snprintf(r->method, sizeof(r->method), "%s", method);
	snprintf(r->path, sizeof(r->path), "%s", url);
	r->body = up->body.ptr ? strndup(up->body.ptr, up->body.len) : strdup("");
	r->body_len = up->body.len;
	r->t_ms = mo_now_ms();
	MHD_get_connection_values(c, MHD_HEADER_KIND, collect_header, r);
	hits = hits_locked(s, url);
	pthread_mutex_unlock(&s->mu);

	if (strcmp(url, "/ok") == 0 || strcmp(url, "/unix/ok") == 0) {
		const char *b = "{\"hello\":\"world\",\"list\":[1,2,3]}";
		return reply(c, 200, "application/json", b, strlen(b), "X-Custom-Thing", "Value");
	}
	if (sscanf(url, "/flaky/%d/%127s", &n, key) == 2) {
		if (hits <= n)
			return reply(c, 503, "text/plain", "unavailable", 11, NULL, NULL);
		return reply(c, 200, "text/plain", "ok", 2, NULL, NULL);
	}
	if (strncmp(url, "/ratelimit/", 11) == 0) {
		if (hits == 1)
			return reply(c, 429, "text/plain", "slow down", 9, "Retry-After", "1");
		return reply(c, 200, "text/plain", "ok", 2, NULL, NULL);
	}
	if (strncmp(url, "/ratedate/", 10) == 0) {
		if (hits == 1) {
			char date[64];
			time_t when = time(NULL) + 2;
			struct tm tm;
			gmtime_r(&when, &tm);
			strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S GMT", &tm);
			return reply(c, 503, "text/plain", "later", 5, "Retry-After", date);
		}
		return reply(c, 200, "text/plain", "ok", 2, NULL, NULL);
	}
	if (strncmp(url, "/fail500/", 9) == 0)
		return reply(c, 500, "text/plain", "boom", 4, NULL, NULL);
	if (sscanf(url, "/drop/%d/%127s", &n, key) == 2) {
		if (hits <= n)
			return MHD_NO; /* close without a response */
		return reply(c, 200, "text/plain", "ok", 2, NULL, NULL);
	}
	if (sscanf(url, "/slow/%d", &n) == 1) {
		usleep((useconds_t)n * 1000);
		return reply(c, 200, "text/plain", "slow", 4, NULL, NULL);
	}
	if (strcmp(url, "/echo") == 0)
		return reply(c, 200, rec_header(r, "Content-Type") ? rec_header(r, "Content-Type")
								  : "application/octet-stream",
			     r->body, r->body_len, NULL, NULL);
	if (sscanf(url, "/status/%d", &n) == 1) {
		char b[32];
		snprintf(b, sizeof(b), "status %d", n);
		return reply(c, n, "text/plain", b, strlen(b), NULL, NULL);
	}
	return reply(c, 404, "text/plain", "no such path", 12, NULL, NULL);
}

static void completed(void *cls, struct MHD_Connection *c, void **con_cls,
		      enum MHD_RequestTerminationCode toe)
{
	upload *up = *con_cls;
	(void)cls, (void)c, (void)toe;
	if (up) {
		mo_buf_free(&up->body);
		free(up);
	}
	*con_cls = NULL;
}

static void server_reset(server *s)
{
	for (int i = 0; i < s->nrecs; i++) {
		rec *r = &s->recs[i];
		free(r->body);
		for (int j = 0; j < r->nh; j++) {
			free(r->hn[j]);
			free(r->hv[j]);
		}
	}
	s->nrecs = 0;
}

/* The last request the server saw for path, or NULL. */
static rec *server_last(server *s, const char *path)
{
	rec *found = NULL;
	pthread_mutex_lock(&s->mu);
	for (int i = 0; i < s->nrecs; i++)
		if (strcmp(s->recs[i].path, path) == 0)
			found = &s->recs[i];
	pthread_mutex_unlock(&s->mu);
	return found;
}

static int server_hits(server *s, const char *path)
{
	int n;
	pthread_mutex_lock(&s->mu);
	n = hits_locked(s, path);
	pthread_mutex_unlock(&s->mu);
	return n;
}

static int group_setup(void **state)
{
	struct sockaddr_in sin;
	struct sockaddr_un sun;
	const union MHD_DaemonInfo *info;
	int fd;
	(void)state;

	pthread_mutex_init(&srv.mu, NULL);
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_port = 0;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	srv.d = MHD_start_daemon(MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD |
					 MHD_USE_POLL,
				 0, NULL, NULL, handler, &srv, MHD_OPTION_SOCK_ADDR, &sin,
				 MHD_OPTION_NOTIFY_COMPLETED, completed, NULL, MHD_OPTION_END);
	if (!srv.d)
		return -1;
	info = MHD_get_daemon_info(srv.d, MHD_DAEMON_INFO_BIND_PORT);
	srv.port = info->port;

	/* The same handler on a unix socket bound here. */
	pthread_mutex_init(&usrv.mu, NULL);
	snprintf(sock_dir, sizeof(sock_dir), "/tmp/mo_http_XXXXXX");
	if (!mkdtemp(sock_dir))
		return -1;
	snprintf(sock_path, sizeof(sock_path), "%s/api.sock", sock_dir);
	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", sock_path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || bind(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0 || listen(fd, 64) < 0)
		return -1;
	usrv.d = MHD_start_daemon(MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD |
					  MHD_USE_POLL,
				  0, NULL, NULL, handler, &usrv, MHD_OPTION_LISTEN_SOCKET, fd,
				  MHD_OPTION_NOTIFY_COMPLETED, completed, NULL, MHD_OPTION_END);
	return usrv.d ? 0 : -1;
}

static int group_teardown(void **state)
{
	(void)state;
	MHD_stop_daemon(srv.d);
	MHD_stop_daemon(usrv.d);
	server_reset(&srv);
	server_reset(&usrv);
	unlink(sock_path);
	rmdir(sock_dir);
	return 0;
}

/* ---- client helpers ----------------------------------------------------- */

typedef struct {
	int done;
	int code, status, curl_code, attempts;
	int64_t elapsed_ms;
	char error[2048];
	char *body;
	size_t body_len;
	char *hdrs; /* "name=value\n"... */
} result;

static void on_done(const mo_http_response *res, void *ud)
{
	result *r = ud;
	mo_buf h = MO_BUF_INIT;
	r->done = 1;
	r->code = res->code;
	r->status = res->status;
	r->curl_code = res->curl_code;
	r->attempts = res->attempts;
	r->elapsed_ms = res->elapsed_ms;
	snprintf(r->error, sizeof(r->error), "%s", res->error ? res->error : "");
	r->body = mo_strndup(res->body, res->body_len);
	r->body_len = res->body_len;
	for (size_t i = 0; i < res->nheaders; i++)
		mo_buf_printf(&h, "%s=%s\n", res->headers[i].name, res->headers[i].value);
	r->hdrs = h.ptr ? h.ptr : mo_strdup("");
}

static void result_free(result *r)
{
	mo_free(r->body);
	mo_free(r->hdrs);
}

/* The engine's log: retries are logged when their backoff is armed. */
static int nretry_logs;
static char last_log[1024];

static void on_log(void *ud, const char *who, const char *level, const char *msg)
{
	(void)ud;
	if (strcmp(who, "http") == 0 && strstr(msg, "; retry "))
		nretry_logs++;
	snprintf(last_log, sizeof(last_log), "%s %s: %s", who, level, msg);
}

static void rt_init(mo_rt *rt)
{
	memset(rt, 0, sizeof(*rt));
	assert_int_equal(mo_loop_new(&rt->loop), 0);
	mo_http_config_defaults(&rt->http);
	rt->http.backoff_base_ms = 10;
	rt->http.backoff_max_ms = 5000;
	rt->http.max_retries = 5;
	rt->log = on_log;
}

static void rt_fini(mo_rt *rt)
{
	assert_int_equal(mo_loop_pending(rt->loop), 0);
	mo_loop_free(rt->loop);
}

static void drive(mo_rt *rt, const int *flag)
{
	while (!*flag)
		assert_int_equal(mo_loop_run_once(rt->loop, 1000), 0);
}

static void run(mo_rt *rt, const mo_http_request *req, result *out)
{
	memset(out, 0, sizeof(*out));
	assert_int_equal(mo_http_submit(rt, req, on_done, out), 0);
	drive(rt, &out->done);
}

static char *url(const char *path)
{
	static char buf[8][256];
	static int i;
	char *b = buf[i++ % 8];
	snprintf(b, 256, "http://127.0.0.1:%d%s", srv.port, path);
	return b;
}

/* ---- C engine ----------------------------------------------------------- */

static void test_http_get_json(void **state)
{
	mo_rt rt;
	result r;
	mo_http_header h[] = { { "X-A", "b" }, { "X-Empty", "" } };
	mo_http_request req = { .url = url("/ok"), .headers = h, .nheaders = 2 };
	rec *seen;
	(void)state;

	rt_init(&rt);
	run(&rt, &req, &r);
	assert_int_equal(r.code, 0);
	assert_int_equal(r.status, 200);
	assert_int_equal(r.attempts, 1);
	assert_string_equal(r.body, "{\"hello\":\"world\",\"list\":[1,2,3]}");
	assert_non_null(strstr(r.hdrs, "x-custom-thing=Value\n"));
	assert_non_null(strstr(r.hdrs, "content-type=application/json\n"));
	seen = server_last(&srv, "/ok");
	assert_non_null(seen);
	assert_string_equal(seen->method, "GET");
	assert_string_equal(rec_header(seen, "X-A"), "b");
	assert_string_equal(rec_header(seen, "X-Empty"), "");
	assert_null(rec_header(seen, "Expect"));
	result_free(&r);
	rt_fini(&rt);
}

static void test_http_retry_503(void **state)
{
	mo_rt rt;
	result r;
	mo_http_request req = { .url = url("/flaky/3/a") };
	(void)state;

	rt_init(&rt);
	run(&rt, &req, &r);
	assert_int_equal(r.code, 0);
	assert_int_equal(r.status, 200);
	assert_int_equal(r.attempts, 4);
	assert_int_equal(server_hits(&srv, "/flaky/3/a"), 4);
	assert_string_equal(r.body, "ok");
	result_free(&r);

	/* More failures than retries: the last 503 is reported. */
	rt.http.max_retries = 2;
	req.url = url("/flaky/10/b");
	run(&rt, &req, &r);
	assert_int_equal(r.code, 0);
	assert_int_equal(r.status, 503);
	assert_int_equal(r.attempts, 3);
	assert_int_equal(server_hits(&srv, "/flaky/10/b"), 3);
	result_free(&r);

	/* With an expect set the unexpected 503 is an error quoting the body. */
	{
		int ex[] = { 200 };
		req.url = url("/flaky/10/c");
		req.expect = ex;
		req.nexpect = 1;
		run(&rt, &req, &r);
		assert_int_equal(r.code, MO_EHTTP);
		assert_int_equal(r.status, 503);
		assert_non_null(strstr(r.error, "expected 200, got 503: unavailable"));
		result_free(&r);
	}
	rt_fini(&rt);
}

static void test_http_retry_after(void **state)
{
	mo_rt rt;
	result r;
	mo_http_request req = { .url = url("/ratelimit/a"), .method = "POST", .body = "x", .body_len = 1 };
	rec *first, *second;
	(void)state;

	rt_init(&rt);
	/* 429 is retried even for a POST, after the Retry-After delay (the
	 * jittered backoff alone would wait at most 10 ms). */
	run(&rt, &req, &r);
	assert_int_equal(r.status, 200);
	assert_int_equal(r.attempts, 2);
	pthread_mutex_lock(&srv.mu);
	first = second = NULL;
	for (int i = 0; i < srv.nrecs; i++)
		if (strcmp(srv.recs[i].path, "/ratelimit/a") == 0) {
			if (!first)
				first = &srv.recs[i];
			else
				second = &srv.recs[i];
		}
	pthread_mutex_unlock(&srv.mu);
	assert_non_null(second);
	assert_true(second->t_ms - first->t_ms >= 1000);
	result_free(&r);

	/* Retry-After as an HTTP-date two seconds ahead on a 503. */
	req.url = url("/ratedate/a");
	req.method = "GET";
	req.body = NULL;
	run(&rt, &req, &r);
	assert_int_equal(r.status, 200);
	assert_int_equal(r.attempts, 2);
	pthread_mutex_lock(&srv.mu);
	first = second = NULL;
	for (int i = 0; i < srv.nrecs; i++)
		if (strcmp(srv.recs[i].path, "/ratedate/a") == 0) {
			if (!first)
				first = &srv.recs[i];
			else
				second = &srv.recs[i];
		}
	pthread_mutex_unlock(&srv.mu);
	assert_non_null(second);
	assert_true(second->t_ms - first->t_ms >= 900);
	result_free(&r);
	rt_fini(&rt);
}

static void test_http_post_idempotency(void **state)
{
	mo_rt rt;
	result r;
	mo_http_header key[] = { { "Idempotency-Key", "k-1" } };
	mo_http_request req = { .method = "POST", .url = url("/fail500/a"), .body = "{}", .body_len = 2 };
	(void)state;

	rt_init(&rt);
	rt.http.max_retries = 2;
	run(&rt, &req, &r);
	assert_int_equal(r.status, 500);
	assert_int_equal(r.attempts, 1);
	assert_int_equal(server_hits(&srv, "/fail500/a"), 1);
	result_free(&r);

	req.url = url("/fail500/b");
	req.headers = key;
	req.nheaders = 1;
	run(&rt, &req, &r);
	assert_int_equal(r.status, 500);
	assert_int_equal(r.attempts, 3);
	assert_int_equal(server_hits(&srv, "/fail500/b"), 3);
	assert_string_equal(rec_header(server_last(&srv, "/fail500/b"), "Idempotency-Key"), "k-1");
	result_free(&r);

	req.url = url("/fail500/c");
	req.headers = NULL;
	req.nheaders = 0;
	req.idempotent = 1;
	run(&rt, &req, &r);
	assert_int_equal(r.attempts, 3);
	assert_int_equal(server_hits(&srv, "/fail500/c"), 3);
	result_free(&r);

	/* PUT is idempotent by nature. */
	req.method = "PUT";
	req.url = url("/fail500/d");
	req.idempotent = 0;
	run(&rt, &req, &r);
	assert_int_equal(r.attempts, 3);
	result_free(&r);

	/* The expect message names method, URL, statuses and the body. */
	{
		int ex[] = { 200, 201 };
		char want[256];
		req.method = "POST";
		req.url = url("/fail500/e");
		req.expect = ex;
		req.nexpect = 2;
		run(&rt, &req, &r);
		snprintf(want, sizeof(want), "POST http://127.0.0.1:%d/fail500/e: expected 200/201, got 500: boom",
			 srv.port);
		assert_string_equal(r.error, want);
		assert_int_equal(r.code, MO_EHTTP);
		assert_int_equal(r.attempts, 1);
		result_free(&r);
	}
	rt_fini(&rt);
}

static void test_http_dropped_connection(void **state)
{
	mo_rt rt;
	result r;
	mo_http_request req = { .method = "POST", .url = url("/drop/1/a"), .body = "x", .body_len = 1 };
	(void)state;

	/* An empty reply is a connection failure: retried even for POST. */
	rt_init(&rt);
	run(&rt, &req, &r);
	assert_int_equal(r.code, 0);
	assert_int_equal(r.status, 200);
	assert_int_equal(r.attempts, 2);
	assert_int_equal(server_hits(&srv, "/drop/1/a"), 2);
	result_free(&r);
	rt_fini(&rt);
}

/* A port of 127.0.0.1 that refuses connections: bound by *fd but never
 * listening.  The caller keeps *fd open while it connects (then closes
 * it): so no other process can start listening there, and no connect()
 * can pick the port as its own source port and connect to itself. */
static int closed_port(int *fd)
{
	struct sockaddr_in sin;
	socklen_t len = sizeof(sin);
	*fd = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(*fd >= 0);
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(*fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	assert_int_equal(getsockname(*fd, (struct sockaddr *)&sin, &len), 0);
	return ntohs(sin.sin_port);
}

static void test_http_connection_refused(void **state)
{
	mo_rt rt;
	result r;
	char u[128], want[160];
	mo_http_request req = { .method = "POST", .url = u };
	int fd, port = closed_port(&fd);
	(void)state;

	snprintf(u, sizeof(u), "http://user:secret@127.0.0.1:%d/x", port);
	rt_init(&rt);
	rt.http.max_retries = 3;
	run(&rt, &req, &r);
	assert_int_equal(r.code, MO_EHTTP);
	assert_int_equal(r.status, 0);
	assert_int_equal(r.curl_code, CURLE_COULDNT_CONNECT);
	assert_int_equal(r.attempts, 4);
	snprintf(want, sizeof(want), "POST http://***@127.0.0.1:%d/x: ", port);
	assert_non_null(strstr(r.error, want));
	assert_non_null(strstr(r.error, "after 4 attempts"));
	assert_null(strstr(r.error, "secret"));
	assert_non_null(strstr(last_log, "http warn: POST http://***@127.0.0.1:"));
	assert_null(strstr(last_log, "secret"));
	result_free(&r);
	close(fd);

	/* An interrupt (Ctrl-C) starts nothing new, but the actions in flight
	 * finish and are recorded: a request in flight keeps its retries. */
	{
		static volatile sig_atomic_t intr;
		result r2;
		intr = 1;
		rt.interrupted = &intr;
		mo_http_request flaky = { .url = url("/flaky/2/intr") };
		memset(&r2, 0, sizeof(r2));
		run(&rt, &flaky, &r2);
		assert_int_equal(r2.attempts, 3);
		assert_int_equal(r2.status, 200);
		assert_int_equal(server_hits(&srv, "/flaky/2/intr"), 3);
		result_free(&r2);
		rt.interrupted = NULL;
	}
	rt_fini(&rt);
}

static void test_http_timeout(void **state)
{
	mo_rt rt;
	result r;
	mo_http_request req = { .method = "POST", .url = url("/slow/1200"), .timeout_ms = 200 };
	(void)state;

	rt_init(&rt);
	rt.http.max_retries = 1;
	run(&rt, &req, &r);
	assert_int_equal(r.code, MO_EHTTP);
	assert_int_equal(r.curl_code, CURLE_OPERATION_TIMEDOUT);
	assert_int_equal(r.attempts, 1);
	assert_non_null(strstr(r.error, "POST http://127.0.0.1:"));
	assert_non_null(strstr(r.error, "imed out"));
	result_free(&r);

	/* A GET that times out is retried. */
	req.method = "GET";
	run(&rt, &req, &r);
	assert_int_equal(r.curl_code, CURLE_OPERATION_TIMEDOUT);
	assert_int_equal(r.attempts, 2);
	result_free(&r);
	rt_fini(&rt);
}

static void test_http_auth_headers(void **state)
{
	mo_rt rt;
	result r;
	mo_http_request req = { .url = url("/status/204") };
	(void)state;

	rt_init(&rt);
	req.auth.type = MO_HTTP_AUTH_BEARER;
	req.auth.token = "tok-123";
	run(&rt, &req, &r);
	assert_int_equal(r.status, 204);
	assert_string_equal(rec_header(server_last(&srv, "/status/204"), "Authorization"),
			    "Bearer tok-123");
	result_free(&r);

	req.auth.type = MO_HTTP_AUTH_BASIC;
	req.auth.user = "alice";
	req.auth.password = "s3cr:t";
	run(&rt, &req, &r);
	/* base64("alice:s3cr:t") */
	assert_string_equal(rec_header(server_last(&srv, "/status/204"), "Authorization"),
			    "Basic YWxpY2U6czNjcjp0");
	result_free(&r);

	/* Bad requests are refused up front. */
	{
		mo_http_header bad[] = { { "X-Bad", "a\r\nInjected: 1" } };
		mo_http_request b = { .url = url("/ok"), .headers = bad, .nheaders = 1 };
		assert_int_equal(mo_http_submit(&rt, &b, on_done, &r), MO_EINVAL);
		b.headers = NULL;
		b.nheaders = 0;
		b.url = NULL;
		assert_int_equal(mo_http_submit(&rt, &b, on_done, &r), MO_EINVAL);
		b.url = url("/ok");
		b.auth.type = MO_HTTP_AUTH_AWS_SIGV4;
		assert_int_equal(mo_http_submit(&rt, &b, on_done, &r), MO_EINVAL);
	}
	rt_fini(&rt);
}

/* ---- SigV4, recomputed per the AWS specification ------------------------ */

static void hex(char *out, const unsigned char *d, size_t n)
{
	for (size_t i = 0; i < n; i++)
		sprintf(out + 2 * i, "%02x", d[i]);
}

static void sha256hex(char out[65], const void *d, size_t n)
{
	unsigned char md[32];
	unsigned int len = 0;
	EVP_Digest(d, n, md, &len, EVP_sha256(), NULL);
	hex(out, md, 32);
}

static void hmac(unsigned char out[32], const void *key, size_t klen, const char *msg)
{
	unsigned int len = 32;
	HMAC(EVP_sha256(), key, (int)klen, (const unsigned char *)msg, strlen(msg), out, &len);
}

/* Check the Authorization header of r against a signature computed here
 * from the request as received. */
static void check_sigv4(const rec *r, const char *uri, const char *query, const char *access,
			const char *secret, const char *region, const char *service)
{
	const char *auth = rec_header(r, "Authorization");
	const char *amzdate = rec_header(r, "x-amz-date");
	char cred[256], signed_hdrs[512], sig[128], scope[128], date[9];
	char canon[8192], sts[1024], hash[65], want[65];
	unsigned char k1[32], k2[32], k3[32], k4[32], s[32];
	char kdate[128], *save = NULL, *name, list[512];
	int n;

	assert_non_null(auth);
	assert_non_null(amzdate);
	n = sscanf(auth, "AWS4-HMAC-SHA256 Credential=%255[^,], SignedHeaders=%511[^,], Signature=%127s",
		   cred, signed_hdrs, sig);
	assert_int_equal(n, 3);
	memcpy(date, amzdate, 8);
	date[8] = '\0';
	snprintf(scope, sizeof(scope), "%s/%s/%s/aws4_request", date, region, service);
	{
		char want_cred[300];
		snprintf(want_cred, sizeof(want_cred), "%s/%s", access, scope);
		assert_string_equal(cred, want_cred);
	}
	/* host and x-amz-date must be signed; so must the body hash header. */
	assert_non_null(strstr(signed_hdrs, "host"));
	assert_non_null(strstr(signed_hdrs, "x-amz-date"));

	n = snprintf(canon, sizeof(canon), "%s\n%s\n%s\n", r->method, uri, query);
	snprintf(list, sizeof(list), "%s", signed_hdrs);
	for (name = strtok_r(list, ";", &save); name; name = strtok_r(NULL, ";", &save)) {
		const char *v = rec_header(r, name);
		if (!v)
			fail_msg("signed header '%s' not received (%s)", name, auth);
		n += snprintf(canon + n, sizeof(canon) - (size_t)n, "%s:%s\n", name, v);
	}
	sha256hex(hash, r->body, r->body_len);
	n += snprintf(canon + n, sizeof(canon) - (size_t)n, "\n%s\n%s", signed_hdrs, hash);

	sha256hex(want, canon, (size_t)n);
	snprintf(sts, sizeof(sts), "AWS4-HMAC-SHA256\n%s\n%s\n%s", amzdate, scope, want);
	snprintf(kdate, sizeof(kdate), "AWS4%s", secret);
	hmac(k1, kdate, strlen(kdate), date);
	hmac(k2, k1, 32, region);
	hmac(k3, k2, 32, service);
	hmac(k4, k3, 32, "aws4_request");
	hmac(s, k4, 32, sts);
	hex(want, s, 32);
	assert_string_equal(sig, want);
}

static void test_http_sigv4(void **state)
{
	mo_rt rt;
	result r;
	const char *body = "{\"Bucket\":\"b1\",\"Key\":\"hello.txt\"}";
	char hash[65];
	mo_http_header h[] = { { "Content-Type", "application/json" } };
	mo_http_request req = { .url = url("/bucket/key.txt") };
	rec *seen;
	(void)state;

	req.auth.type = MO_HTTP_AUTH_AWS_SIGV4;
	req.auth.access_key = "AKIDEXAMPLE";
	req.auth.secret_key = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
	req.auth.region = "us-east-1";
	req.auth.service = "s3";
	rt_init(&rt);

	/* GET with no body */
	run(&rt, &req, &r);
	assert_int_equal(r.status, 404);
	seen = server_last(&srv, "/bucket/key.txt");
	sha256hex(hash, "", 0);
	assert_string_equal(rec_header(seen, "x-amz-content-sha256"), hash);
	check_sigv4(seen, "/bucket/key.txt", "", "AKIDEXAMPLE",
		    "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "us-east-1", "s3");
	result_free(&r);

	/* POST with a body, a content type and a session token */
	req.method = "POST";
	req.url = url("/echo");
	req.body = body;
	req.body_len = strlen(body);
	req.headers = h;
	req.nheaders = 1;
	req.auth.region = "eu-west-3";
	req.auth.service = "dynamodb";
	req.auth.session_token = "FQoGZXIvYXdzEXAMPLE";
	run(&rt, &req, &r);
	assert_int_equal(r.status, 200);
	assert_string_equal(r.body, body);
	seen = server_last(&srv, "/echo");
	sha256hex(hash, body, strlen(body));
	assert_string_equal(rec_header(seen, "x-amz-content-sha256"), hash);
	assert_string_equal(rec_header(seen, "x-amz-security-token"), "FQoGZXIvYXdzEXAMPLE");
	check_sigv4(seen, "/echo", "", "AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
		    "eu-west-3", "dynamodb");
	result_free(&r);

	/* A body without a content type. */
	req.headers = NULL;
	req.nheaders = 0;
	req.auth.session_token = NULL;
	run(&rt, &req, &r);
	assert_int_equal(r.status, 200);
	seen = server_last(&srv, "/echo");
	assert_string_equal(rec_header(seen, "x-amz-content-sha256"), hash);
	assert_null(rec_header(seen, "x-amz-security-token"));
	check_sigv4(seen, "/echo", "", "AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
		    "eu-west-3", "dynamodb");
	result_free(&r);

	/* A query string is signed in canonical (sorted) order. */
	req.method = "GET";
	req.body = NULL;
	req.body_len = 0;
	req.headers = NULL;
	req.nheaders = 0;
	req.auth.region = "us-east-1";
	req.auth.service = "s3";
	req.url = url("/bucket?prefix=a%2Fb&list-type=2");
	run(&rt, &req, &r);
	seen = server_last(&srv, "/bucket");
	check_sigv4(seen, "/bucket", "list-type=2&prefix=a%2Fb", "AKIDEXAMPLE",
		    "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "us-east-1", "s3");
	result_free(&r);

	/* ... and encoded canonically, a bare name having an empty value. */
	req.url = url("/bucket2?versions&prefix=a/b c&max-keys=5&delimiter=%2f");
	run(&rt, &req, &r);
	seen = server_last(&srv, "/bucket2");
	check_sigv4(seen, "/bucket2", "delimiter=%2F&max-keys=5&prefix=a%2Fb%20c&versions=",
		    "AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "us-east-1", "s3");
	result_free(&r);
	rt_fini(&rt);
}

static void test_http_unix_socket(void **state)
{
	mo_rt rt;
	result r;
	mo_http_request req = { .url = "http://localhost/unix/ok", .unix_socket = sock_path };
	(void)state;

	rt_init(&rt);
	run(&rt, &req, &r);
	assert_int_equal(r.code, 0);
	assert_int_equal(r.status, 200);
	assert_string_equal(r.body, "{\"hello\":\"world\",\"list\":[1,2,3]}");
	assert_int_equal(server_hits(&usrv, "/unix/ok"), 1);
	assert_string_equal(rec_header(server_last(&usrv, "/unix/ok"), "Host"), "localhost");
	result_free(&r);

	/* the same socket named in the URL: http+unix://<%-encoded path>/... */
	{
		char u[600], enc[400], *q = enc;
		for (const char *p = sock_path; *p && q < enc + sizeof(enc) - 4; p++) {
			if (*p == '/')
				q += sprintf(q, "%%2F");
			else
				*q++ = *p;
		}
		*q = '\0';
		snprintf(u, sizeof(u), "http+unix://%s/unix/ok?via=url", enc);
		req.url = u;
		req.unix_socket = NULL;
		run(&rt, &req, &r);
		assert_int_equal(r.code, 0);
		assert_int_equal(r.status, 200);
		assert_int_equal(server_hits(&usrv, "/unix/ok"), 2);
		result_free(&r);

		/* both forms at once, no path, a relative path, a bad escape:
		 * refused before anything is sent */
		{
			static const struct {
				const char *url, *want;
				int with_socket;
			} bad[] = {
				{ NULL, "not both", 1 },
				{ "http+unix:///v1/info", "no socket path", 0 },
				{ "http+unix://run%2Fd.sock/v1/info", "must be absolute", 0 },
				{ "http+unix://%2Frun%2/v1/info", "bad %-escape", 0 },
			};
			for (size_t i = 0; i < MO_ARRAY_SIZE(bad); i++) {
				if (bad[i].url)
					req.url = bad[i].url;
				req.unix_socket = bad[i].with_socket ? sock_path : NULL;
				memset(&r, 0, sizeof(r));
				assert_true(mo_http_submit(&rt, &req, on_done, &r) < 0);
				if (!strstr(mo_error_last()->message, bad[i].want))
					fail_msg("%s: '%s' lacks '%s'", req.url, mo_error_last()->message, bad[i].want);
			}
			assert_int_equal(server_hits(&usrv, "/unix/ok"), 2);
		}
	}
	rt_fini(&rt);
}

static void test_http_abort(void **state)
{
	mo_rt rt;
	result r;
	mo_http_call *call = NULL;
	mo_http_request req = { .url = url("/flaky/100/abort") };
	(void)state;

	rt_init(&rt);
	rt.http.backoff_base_ms = 60000;
	rt.http.backoff_max_ms = 60000;
	memset(&r, 0, sizeof(r));
	/* Waiting for a retry: withdrawn at once. */
	assert_int_equal(mo_http_start(&call, &rt, &req, on_done, &r), 0);
	nretry_logs = 0;
	while (nretry_logs < 1)
		assert_int_equal(mo_loop_run_once(rt.loop, 100), 0);
	assert_int_equal(mo_loop_pending(rt.loop), 1);
	mo_http_abort(call);
	assert_int_equal(mo_loop_pending(rt.loop), 0);

	/* In flight: the transfer is stopped, the callback never runs (the
	 * answer comes 3 s after the request: far later than one pass). */
	req.url = url("/slow/3000");
	assert_int_equal(mo_http_start(&call, &rt, &req, on_done, &r), 0);
	assert_int_equal(mo_loop_run_once(rt.loop, 50), 0);
	mo_http_abort(call);
	while (mo_loop_pending(rt.loop) > 0)
		assert_int_equal(mo_loop_run_once(rt.loop, 100), 0);
	assert_int_equal(r.done, 0);
	rt_fini(&rt);
}

/* Fail the Nth allocation from submit on, for every N until the request
 * gets through: each run either refuses the submit cleanly or completes
 * (possibly with an error); nothing leaks or crashes. */
static void test_http_alloc_failures(void **state)
{
	mo_rt rt;
	mo_http_header h[] = { { "X-A", "b" }, { "X-B", "c" } };
	int ex[] = { 200 };
	mo_http_request req = { .url = url("/ok"), .headers = h, .nheaders = 2,
				.expect = ex, .nexpect = 1 };
	int succeeded = 0, refused = 0, failed = 0;
	(void)state;

	req.auth.type = MO_HTTP_AUTH_BEARER;
	req.auth.token = "t";
	rt_init(&rt);
	for (long n = 1; n <= 200 && !succeeded; n++) {
		result r;
		int rc;
		memset(&r, 0, sizeof(r));
		mo_alloc_fail_after(n);
		rc = mo_http_submit(&rt, &req, on_done, &r);
		if (rc < 0) {
			mo_alloc_fail_after(0);
			assert_int_equal(rc, MO_ENOMEM);
			refused++;
			continue;
		}
		drive(&rt, &r.done);
		mo_alloc_fail_after(0);
		if (r.code == 0 && r.body && strcmp(r.body, "{\"hello\":\"world\",\"list\":[1,2,3]}") == 0)
			succeeded = 1;
		else
			failed++;
		result_free(&r);
	}
	assert_true(succeeded);
	assert_true(refused > 0);
	assert_true(failed > 0);
	rt_fini(&rt);
}

/* ---- the Lua binding ---------------------------------------------------- */

typedef struct {
	int woken;
	int nargs;
} waker;

static void on_wake(mo_task *t, int nargs, void *ud)
{
	waker *w = ud;
	(void)t;
	w->woken = 1;
	w->nargs = nargs;
}

/* Push ctx = { http = ..., sleep = ... }. */
static void push_ctx(lua_State *L)
{
	lua_newtable(L);
	mo_open_http(L);
	lua_setfield(L, -2, "http");
	mo_open_sleep(L);
	lua_setfield(L, -2, "sleep");
}

/* Run chunk(ctx, base_url) as a task until done; returns mo_task_resume's
 * code; *t is left for the caller to inspect and free. */
static int run_task(mo_rt *rt, mo_sandbox *sb, const char *chunk, mo_task **t, int *nres)
{
	lua_State *L = mo_sandbox_L(sb);
	waker w = { 0, 0 };
	int status = 0, rc, nargs = 0;
	char base[64];

	assert_int_equal(mo_sandbox_loadbuffer(sb, chunk, strlen(chunk), "test.lua"), 0);
	push_ctx(L);
	snprintf(base, sizeof(base), "http://127.0.0.1:%d", srv.port);
	lua_pushstring(L, base);
	assert_int_equal(mo_task_new(t, sb, 2, "test task"), 0);
	mo_task_set_wake(*t, on_wake, &w);
	for (;;) {
		rc = mo_task_resume(*t, nargs, &status, nres);
		if (rc < 0 || status == MO_TASK_DONE)
			return rc;
		w.woken = 0;
		drive(rt, &w.woken);
		nargs = w.nargs;
	}
}

static void test_http_lua_request(void **state)
{
	mo_rt rt;
	mo_sandbox *sb;
	mo_task *t;
	lua_State *th;
	int nres = 0;
	const char *chunk =
		"local ctx, base = ...\n"
		"local r = ctx.http.request{ url = base .. '/ok', headers = { ['X-A'] = 'b' } }\n"
		"local e = ctx.http.request{ method = 'POST', url = base .. '/echo', expect = { 200 },\n"
		"  json = { name = 'web', ports = { 80, 443 }, tags = {}, on = true, ratio = 0.5 } }\n"
		"return r.status, r.json.hello, r.json.list[3], r.headers['x-custom-thing'],\n"
		"  r.attempts, type(r.elapsed_ms), e.json.name, e.json.ports[2], e.json.on, e.json.ratio,\n"
		"  e.body, e.headers['content-type']\n";
	(void)state;

	rt_init(&rt);
	assert_int_equal(mo_sandbox_new(&sb, NULL, "lua test", &rt, NULL), 0);
	assert_int_equal(run_task(&rt, sb, chunk, &t, &nres), 0);
	assert_int_equal(nres, 12);
	th = mo_task_thread(t);
	assert_int_equal(lua_tointeger(th, -12), 200);
	assert_string_equal(lua_tostring(th, -11), "world");
	assert_int_equal(lua_tointeger(th, -10), 3);
	assert_string_equal(lua_tostring(th, -9), "Value");
	assert_int_equal(lua_tointeger(th, -8), 1);
	assert_string_equal(lua_tostring(th, -7), "number");
	assert_string_equal(lua_tostring(th, -6), "web");
	assert_int_equal(lua_tointeger(th, -5), 443);
	assert_true(lua_toboolean(th, -4));
	assert_true(lua_tonumber(th, -3) == 0.5);
	assert_string_equal(lua_tostring(th, -2),
			    "{\"name\":\"web\",\"on\":true,\"ports\":[80,443],\"ratio\":0.5,\"tags\":{}}");
	assert_string_equal(lua_tostring(th, -1), "application/json");
	assert_string_equal(rec_header(server_last(&srv, "/ok"), "X-A"), "b");
	mo_task_free(t);
	mo_sandbox_free(sb);
	rt_fini(&rt);
}

static void test_http_lua_errors(void **state)
{
	mo_rt rt;
	mo_sandbox *sb;
	mo_task *t;
	int nres = 0;
	char want[256];
	const char *expect_chunk =
		"local ctx, base = ...\n"
		"ctx.http.request{ method = 'POST', url = base .. '/fail500/lua', expect = { 200, 201 } }\n";
	const char *pcall_chunk =
		"local ctx, base = ...\n"
		"local ok, err = pcall(ctx.http.request, { url = base .. '/status/404', expect = { 200 } })\n"
		"local r = ctx.http.request{ url = base .. '/status/404' }\n"
		"return ok, err, r.status, r.json\n";
	(void)state;

	rt_init(&rt);
	assert_int_equal(mo_sandbox_new(&sb, NULL, "lua test", &rt, NULL), 0);

	/* An unexpected status is a Lua error in the module's code. */
	assert_int_equal(run_task(&rt, sb, expect_chunk, &t, &nres), MO_EMODULE);
	snprintf(want, sizeof(want),
		 "test.lua:2: POST http://127.0.0.1:%d/fail500/lua: expected 200/201, got 500: boom",
		 srv.port);
	assert_non_null(strstr(mo_error_last()->message, want));
	mo_task_free(t);

	/* ... which pcall catches; without expect any status is returned. */
	assert_int_equal(run_task(&rt, sb, pcall_chunk, &t, &nres), 0);
	assert_int_equal(nres, 4);
	assert_false(lua_toboolean(mo_task_thread(t), -4));
	assert_non_null(strstr(lua_tostring(mo_task_thread(t), -3), "expected 200, got 404: status 404"));
	assert_int_equal(lua_tointeger(mo_task_thread(t), -2), 404);
	assert_true(lua_isnil(mo_task_thread(t), -1));
	mo_task_free(t);

	/* Field validation names the field. */
	{
		static const struct {
			const char *code, *msg;
		} cases[] = {
			{ "ctx.http.request{ method = 5, url = 'http://x/' }",
			  "ctx.http.request: field 'method' must be a string" },
			{ "ctx.http.request{ }", "ctx.http.request: field 'url' must be a string" },
			{ "ctx.http.request{ url = 'http://x/', header = {} }",
			  "ctx.http.request: unknown field 'header'" },
			{ "ctx.http.request{ url = 'http://x/', json = { f = print } }",
			  "field json.f: a function value is not JSON-serialisable" },
			{ "ctx.http.request{ url = 'http://x/', json = { a = { [true] = 1 } } }",
			  "field json.a: table key of type boolean" },
			{ "ctx.http.request{ url = 'http://x/', json = { n = 0/0 } }",
			  "field json.n: NaN or infinity is not JSON-serialisable" },
			{ "ctx.http.request{ url = 'http://x/', auth = { type = 'basic', user = 'u' } }",
			  "field 'auth.password' must be a string" },
			{ "ctx.http.request{ url = 'http://x/', expect = { 'ok' } }",
			  "field 'expect[1]' must be an HTTP status" },
			{ "ctx.http.request{ url = 'http://x/', body = 'a', json = {} }",
			  "fields 'body' and 'json' are exclusive" },
			{ "ctx.http.request{ url = 'http://x/', headers = { A = 1 } }",
			  "field 'headers.A' must be a string" },
			{ "ctx.http.request{ url = 'http://x/', timeout_ms = 0 }",
			  "field 'timeout_ms' must be a number of milliseconds" },
			{ "ctx.http.request{ url = 'http://x/', method = 'GE T' }",
			  "ctx.http.request: bad HTTP method" },
			{ "ctx.http.request{ url = 'http://x/', auth = { type = 'digest' } }",
			  "field 'auth.type' must be \"bearer\", \"basic\" or \"aws_sigv4\"" },
			{ "ctx.http.request('http://x/')", "ctx.http.request: expected a table argument" },
			{ "ctx.sleep(-1)", "test.lua:2: ctx.sleep: ms must be a non-negative number" },
		};
		for (size_t i = 0; i < MO_ARRAY_SIZE(cases); i++) {
			char code[512];
			snprintf(code, sizeof(code), "local ctx = ...\n%s\n", cases[i].code);
			assert_int_equal(run_task(&rt, sb, code, &t, &nres), MO_EMODULE);
			if (!strstr(mo_error_last()->message, cases[i].msg))
				fail_msg("case %zu: got '%s'", i, mo_error_last()->message);
			mo_task_free(t);
		}
	}

	/* Transport failure: the message names the URL. */
	{
		char code[256];
		int fd, port = closed_port(&fd);
		rt.http.max_retries = 1;
		snprintf(code, sizeof(code),
			 "local ctx = ...\nctx.http.request{ url = 'http://127.0.0.1:%d/nothing' }\n", port);
		assert_int_equal(run_task(&rt, sb, code, &t, &nres), MO_EMODULE);
		snprintf(want, sizeof(want), "GET http://127.0.0.1:%d/nothing: ", port);
		assert_non_null(strstr(mo_error_last()->message, want));
		assert_non_null(strstr(mo_error_last()->message, "after 2 attempts"));
		mo_task_free(t);
		close(fd);
	}

	/* Outside a task. */
	{
		lua_State *L = mo_sandbox_L(sb);
		const char *code = "local ctx = ... return ctx.http.request{ url = 'http://x/' }";
		assert_int_equal(mo_sandbox_loadbuffer(sb, code, strlen(code), "main.lua"), 0);
		push_ctx(L);
		assert_int_not_equal(lua_pcall(L, 1, 1, 0), LUA_OK);
		assert_non_null(strstr(lua_tostring(L, -1),
				       "ctx.http.request must be called from a resource handler"));
		lua_pop(L, 1);
	}
	mo_sandbox_free(sb);
	rt_fini(&rt);
}

static void test_http_lua_sleep(void **state)
{
	mo_rt rt;
	mo_sandbox *sb;
	mo_task *t;
	int nres = 0;
	const char *chunk =
		"local ctx = ...\n"
		"local n = select('#', ctx.sleep(30))\n"
		"ctx.sleep(0)\n"
		"return n, 'after'\n";
	(void)state;

	rt_init(&rt);
	assert_int_equal(mo_sandbox_new(&sb, NULL, "lua test", &rt, NULL), 0);
	assert_int_equal(run_task(&rt, sb, chunk, &t, &nres), 0);
	assert_int_equal(nres, 2);
	assert_int_equal(lua_tointeger(mo_task_thread(t), -2), 0);
	assert_string_equal(lua_tostring(mo_task_thread(t), -1), "after");
	mo_task_free(t);
	mo_sandbox_free(sb);
	rt_fini(&rt);
}

/* A task freed while it waits (an aborted run), and a sandbox closed while
 * its task waits: nothing of theirs is touched afterwards. */
static void test_http_lua_cancel(void **state)
{
	mo_rt rt;
	mo_sandbox *sb;
	mo_task *t;
	waker w = { 0, 0 };
	int status = -1, nres = 0;
	char code[256];
	(void)state;

	rt_init(&rt);
	assert_int_equal(mo_sandbox_new(&sb, NULL, "lua test", &rt, NULL), 0);
	snprintf(code, sizeof(code),
		 "local ctx = ...\nctx.http.request{ url = 'http://127.0.0.1:%d/slow/300' }\n",
		 srv.port);
	assert_int_equal(mo_sandbox_loadbuffer(sb, code, strlen(code), "c.lua"), 0);
	push_ctx(mo_sandbox_L(sb));
	assert_int_equal(mo_task_new(&t, sb, 1, "cancel"), 0);
	mo_task_set_wake(t, on_wake, &w);
	assert_int_equal(mo_task_resume(t, 0, &status, &nres), 0);
	assert_int_equal(status, MO_TASK_WAITING);
	mo_http_cancel_task(t);
	mo_task_free(t);
	while (mo_loop_pending(rt.loop) > 0)
		assert_int_equal(mo_loop_run_once(rt.loop, 100), 0);
	assert_int_equal(w.woken, 0);

	/* A task freed while waiting, without mo_http_cancel_task(): the
	 * result is dropped when it arrives, the task is not woken. */
	{
		const char *s = "local ctx = ...\nctx.sleep(20)\n";
		assert_int_equal(mo_sandbox_loadbuffer(sb, s, strlen(s), "s.lua"), 0);
		push_ctx(mo_sandbox_L(sb));
		assert_int_equal(mo_task_new(&t, sb, 1, "forgotten sleep"), 0);
		mo_task_set_wake(t, on_wake, &w);
		assert_int_equal(mo_task_resume(t, 0, &status, &nres), 0);
		assert_int_equal(status, MO_TASK_WAITING);
		mo_task_free(t);
		assert_int_equal(mo_sandbox_loadbuffer(sb, code, strlen(code), "c.lua"), 0);
		push_ctx(mo_sandbox_L(sb));
		assert_int_equal(mo_task_new(&t, sb, 1, "forgotten request"), 0);
		mo_task_set_wake(t, on_wake, &w);
		assert_int_equal(mo_task_resume(t, 0, &status, &nres), 0);
		assert_int_equal(status, MO_TASK_WAITING);
		mo_task_free(t);
		lua_gc(mo_sandbox_L(sb), LUA_GCCOLLECT);
		while (mo_loop_pending(rt.loop) > 0) {
			assert_int_equal(mo_loop_run_once(rt.loop, 100), 0);
			lua_gc(mo_sandbox_L(sb), LUA_GCCOLLECT);
		}
		assert_int_equal(w.woken, 0);
	}

	/* Sleep and request waits withdrawn by closing the sandbox. */
	{
		const char *s = "local ctx = ...\nctx.sleep(60000)\n";
		mo_task *t2;
		assert_int_equal(mo_sandbox_loadbuffer(sb, s, strlen(s), "s.lua"), 0);
		push_ctx(mo_sandbox_L(sb));
		assert_int_equal(mo_task_new(&t2, sb, 1, "sleeper"), 0);
		mo_task_set_wake(t2, on_wake, &w);
		assert_int_equal(mo_task_resume(t2, 0, &status, &nres), 0);
		assert_int_equal(status, MO_TASK_WAITING);
		assert_int_equal(mo_loop_pending(rt.loop), 1);

		assert_int_equal(mo_sandbox_loadbuffer(sb, code, strlen(code), "c.lua"), 0);
		push_ctx(mo_sandbox_L(sb));
		assert_int_equal(mo_task_new(&t, sb, 1, "cancel2"), 0);
		mo_task_set_wake(t, on_wake, &w);
		assert_int_equal(mo_task_resume(t, 0, &status, &nres), 0);
		assert_int_equal(status, MO_TASK_WAITING);
		assert_int_equal(mo_loop_pending(rt.loop), 2);

		/* Closing the state withdraws both: the drain below ends once
		 * the stopped transfer is reaped, and nothing wakes the tasks. */
		mo_sandbox_free(sb);
		mo_task_free(t);
		mo_task_free(t2);
	}
	while (mo_loop_pending(rt.loop) > 0)
		assert_int_equal(mo_loop_run_once(rt.loop, 100), 0);
	assert_int_equal(w.woken, 0);
	rt_fini(&rt);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_http_get_json),
		cmocka_unit_test(test_http_retry_503),
		cmocka_unit_test(test_http_retry_after),
		cmocka_unit_test(test_http_post_idempotency),
		cmocka_unit_test(test_http_dropped_connection),
		cmocka_unit_test(test_http_connection_refused),
		cmocka_unit_test(test_http_timeout),
		cmocka_unit_test(test_http_auth_headers),
		cmocka_unit_test(test_http_sigv4),
		cmocka_unit_test(test_http_unix_socket),
		cmocka_unit_test(test_http_abort),
		cmocka_unit_test(test_http_alloc_failures),
		cmocka_unit_test(test_http_lua_request),
		cmocka_unit_test(test_http_lua_errors),
		cmocka_unit_test(test_http_lua_sleep),
		cmocka_unit_test(test_http_lua_cancel),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
