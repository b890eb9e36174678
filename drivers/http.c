/*
 * http.c - the HTTP driver: a retrying request engine on the executor's
 * event loop (http.h) and its Lua binding, ctx.http.request and ctx.sleep
 * (drivers.h).
 *
 * Engine.  A mo_http_call owns one curl easy handle for its whole life; each
 * attempt adds it to the loop's multi handle, so connections and DNS
 * answers are reused across attempts and calls.  Backoff waits are loop
 * timers.  The request is copied at submit time; strings given to
 * curl_easy_setopt() are copied by curl, the body is kept by the call.
 *
 * Binding.  request{...} validates its table (without metamethods), submits,
 * suspends the running task and yields with a continuation.  Completion
 * runs on the loop thread outside any Lua call: the response table (or an
 * error message) is built on the state's main thread inside lua_pcall, so
 * an allocation failure can't escape unprotected, then moved onto the task's
 * thread, and the task is woken with that one value.  The continuation
 * returns the table or raises the message as a Lua error in the module's
 * code.
 *
 * Each waiting request or sleep is guarded by an "anchor" userdata kept in
 * the registry (keyed by the task's thread) whose finalizer withdraws it:
 * closing the state therefore cancels everything its tasks wait for, and
 * mo_http_cancel_task() does the same for one task.
 */
#include "http.h"
#include "lj.h"
#include "common.h"
#include "drivers.h"
#include "loop.h"
#include "runtime.h"
#include "sandbox.h"

#include <ctype.h>
#include <curl/curl.h>
#include <jansson.h>
#include <lauxlib.h>
#include <math.h>
#include <openssl/evp.h>
#include <string.h>
#include <time.h>

#define BODY_EXCERPT 200   /* bytes of a body quoted in an error */
#define MAX_EXPECT 32      /* statuses in one expect set */

/* ======================================================================
 * Engine
 * ====================================================================== */

struct mo_http_call {
	mo_rt *rt;
	CURL *easy;
	struct curl_slist *hdrs;
	char *method;
	char *url_shown;       /* URL with user:password masked */
	char *unix_url;        /* http+unix:// rewritten to http://localhost/... */
	char *unix_path;       /* its socket path, %-decoded */
	char *body;            /* owned copy; NULL when there is none */
	size_t body_len;
	int *expect;
	size_t nexpect;
	int idempotent;        /* timeouts and 5xx may be retried */
	mo_http_done_cb cb;
	void *ud;

	int attempts;
	int64_t start_ms;
	int aborted;           /* withdrawn while in flight: free on completion */
	int timer_armed;
	uint64_t timer;
	int64_t retry_at;      /* end of the current backoff */

	/* the last attempt */
	CURLcode rc;
	long status;
	mo_buf resp;
	mo_http_header *rh;
	size_t nrh, caprh;
	int rh_oom;
	char errbuf[CURL_ERROR_SIZE];
};

static void call_reset_response(mo_http_call *c)
{
	for (size_t i = 0; i < c->nrh; i++) {
		mo_free((char *)c->rh[i].name);
		mo_free((char *)c->rh[i].value);
	}
	c->nrh = 0;
	c->rh_oom = 0;
	c->resp.len = 0;
	if (c->resp.ptr)
		c->resp.ptr[0] = '\0';
	c->status = 0;
	c->rc = CURLE_OK;
	c->errbuf[0] = '\0';
}

static void call_free(mo_http_call *c)
{
	if (!c)
		return;
	call_reset_response(c);
	if (c->easy)
		curl_easy_cleanup(c->easy);
	curl_slist_free_all(c->hdrs);
	mo_free(c->rh);
	mo_buf_free(&c->resp);
	mo_free(c->method);
	mo_free(c->url_shown);
	mo_free(c->unix_url);
	mo_free(c->unix_path);
	mo_free(c->body);
	mo_free(c->expect);
	mo_free(c);
}

static void rt_log(mo_rt *rt, const char *level, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void rt_log(mo_rt *rt, const char *level, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;
	if (!rt->log)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	rt->log(rt->log_ud, "http", level, msg);
}

/* Mask the user:password part of a URL (as "***"); caller frees. */
static char *mask_url(const char *url)
{
	const char *auth = strstr(url, "://"), *end, *at = NULL;
	if (!auth)
		return mo_strdup(url);
	auth += 3;
	end = auth + strcspn(auth, "/?#");
	for (const char *p = auth; p < end; p++)
		if (*p == '@')
			at = p;
	if (!at)
		return mo_strdup(url);
	return mo_sprintf("%.*s***%s", (int)(auth - url), url, at);
}

static int ci_equal(const char *a, const char *b)
{
	return strcasecmp(a, b) == 0;
}

static int is_token_char(int ch)
{
	return isalnum(ch) || (ch && strchr("!#$%&'*+-.^_`|~", ch));
}

static int sha256_hex(char out[65], const void *data, size_t len)
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	static const char hex[] = "0123456789abcdef";
	if (!EVP_Digest(data ? data : "", len, md, &mdlen, EVP_sha256(), NULL) || mdlen != 32)
		return mo_error_set(MO_ERROR, "SHA-256 failed");
	for (unsigned int i = 0; i < mdlen; i++) {
		out[2 * i] = hex[md[i] >> 4];
		out[2 * i + 1] = hex[md[i] & 15];
	}
	out[64] = '\0';
	return 0;
}

/* ---- SigV4 query canonicalization ---- */

typedef struct {
	char *name, *value; /* canonical encoding */
} qparam;

static int hexval(int ch)
{
	if (ch >= '0' && ch <= '9')
		return ch - '0';
	ch = tolower(ch);
	return ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : -1;
}

/* Percent-decode s[0..n) and re-encode it the SigV4 way: A-Z a-z 0-9 - _ . ~
 * as they are, every other byte as %XX (upper case). */
static char *aws_encode(const char *s, size_t n)
{
	static const char hex[] = "0123456789ABCDEF";
	char *out = mo_malloc(3 * n + 1), *o = out;
	if (!out)
		return NULL;
	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)s[i];
		if (ch == '%' && i + 2 < n &&
		    hexval(s[i + 1]) >= 0 && hexval(s[i + 2]) >= 0) {
			ch = (unsigned char)(hexval(s[i + 1]) * 16 + hexval(s[i + 2]));
			i += 2;
		}
		if (isalnum(ch) || ch == '-' || ch == '_' || ch == '.' || ch == '~') {
			*o++ = (char)ch;
		} else {
			*o++ = '%';
			*o++ = hex[ch >> 4];
			*o++ = hex[ch & 15];
		}
	}
	*o = '\0';
	return out;
}

static int qparam_cmp(const void *a, const void *b)
{
	const qparam *x = a, *y = b;
	int c = strcmp(x->name, y->name);
	return c ? c : strcmp(x->value, y->value);
}

/*
 * libcurl before 8.x signs the query string exactly as it appears in the
 * URL, while AWS signs it sorted by name with names and values encoded
 * canonically.  Rewriting the URL's query into that canonical form makes
 * both agree (parameter order carries no meaning for AWS APIs).  '+' is
 * taken literally (RFC 3986), not as a space.  The fragment is dropped.
 * *out is the caller's.
 */
static int sigv4_url(char **out, const char *url)
{
	const char *q = strchr(url, '?'), *end, *p;
	size_t n = 0, cap = 0;
	qparam *ps = NULL;
	mo_buf b = MO_BUF_INIT;
	int rc = 0;

	*out = NULL;
	if (!q || (strchr(url, '#') && strchr(url, '#') < q))
		return (*out = mo_strdup(url)) ? 0 : mo_error_set(MO_ENOMEM, "out of memory");
	end = q + 1 + strcspn(q + 1, "#");
	for (p = q + 1; p < end;) {
		const char *amp = memchr(p, '&', (size_t)(end - p)), *eq;
		size_t len = (size_t)((amp ? amp : end) - p);
		if (len > 0) {
			if (n == cap) {
				size_t ncap = cap ? cap * 2 : 8;
				qparam *np = mo_realloc(ps, ncap * sizeof(*np));
				if (!np) {
					rc = mo_error_set(MO_ENOMEM, "out of memory");
					goto done;
				}
				ps = np;
				cap = ncap;
			}
			eq = memchr(p, '=', len);
			ps[n].name = aws_encode(p, eq ? (size_t)(eq - p) : len);
			ps[n].value = eq ? aws_encode(eq + 1, len - (size_t)(eq + 1 - p)) : mo_strdup("");
			n++;
			if (!ps[n - 1].name || !ps[n - 1].value) {
				rc = mo_error_set(MO_ENOMEM, "out of memory");
				goto done;
			}
		}
		p += len + (amp ? 1 : 0);
	}
	qsort(ps, n, sizeof(*ps), qparam_cmp);
	if (mo_buf_put(&b, url, (size_t)(q - url)) < 0) {
		rc = MO_ENOMEM;
		goto done;
	}
	for (size_t i = 0; i < n; i++)
		if (mo_buf_printf(&b, "%c%s=%s", i ? '&' : '?', ps[i].name, ps[i].value) < 0) {
			rc = MO_ENOMEM;
			goto done;
		}
	*out = b.ptr;
	b.ptr = NULL;
done:
	for (size_t i = 0; i < n; i++) {
		mo_free(ps[i].name);
		mo_free(ps[i].value);
	}
	mo_free(ps);
	mo_buf_free(&b);
	return rc;
}

static int add_header(mo_http_call *c, const char *name, const char *value)
{
	struct curl_slist *l;
	/* "Name;" sends an empty header, "Name:" would remove it. */
	char *line = *value ? mo_sprintf("%s: %s", name, value) : mo_sprintf("%s;", name);
	if (!line)
		return mo_error_set(MO_ENOMEM, "out of memory");
	l = curl_slist_append(c->hdrs, line);
	mo_free(line);
	if (!l)
		return mo_error_set(MO_ENOMEM, "out of memory");
	c->hdrs = l;
	return 0;
}

/* Remove a header curl would add by itself ("Name:"). */
static int suppress_header(mo_http_call *c, const char *name)
{
	char line[64];
	struct curl_slist *l;
	snprintf(line, sizeof(line), "%s:", name);
	if (!(l = curl_slist_append(c->hdrs, line)))
		return mo_error_set(MO_ENOMEM, "out of memory");
	c->hdrs = l;
	return 0;
}

static size_t on_body(char *data, size_t size, size_t n, void *ud)
{
	mo_http_call *c = ud;
	if (mo_buf_put(&c->resp, data, size * n) < 0)
		return 0; /* CURLE_WRITE_ERROR */
	return size * n;
}

/* One header line; a status line starts a new header block (interim 1xx
 * responses, redirects), so only the final response's headers remain. */
static size_t on_header(char *data, size_t size, size_t n, void *ud)
{
	mo_http_call *c = ud;
	size_t len = size * n, nlen;
	const char *colon, *v, *end = data + len;
	char *name, *value;

	if (len >= 5 && memcmp(data, "HTTP/", 5) == 0) {
		for (size_t i = 0; i < c->nrh; i++) {
			mo_free((char *)c->rh[i].name);
			mo_free((char *)c->rh[i].value);
		}
		c->nrh = 0;
		return len;
	}
	while (end > data && (end[-1] == '\r' || end[-1] == '\n'))
		end--;
	if (end == data || !(colon = memchr(data, ':', (size_t)(end - data))))
		return len;
	nlen = (size_t)(colon - data);
	v = colon + 1;
	while (v < end && (*v == ' ' || *v == '\t'))
		v++;
	while (end > v && (end[-1] == ' ' || end[-1] == '\t'))
		end--;
	if (c->nrh == c->caprh) {
		size_t cap = c->caprh ? c->caprh * 2 : 16;
		mo_http_header *rh = mo_realloc(c->rh, cap * sizeof(*rh));
		if (!rh) {
			c->rh_oom = 1;
			return 0;
		}
		c->rh = rh;
		c->caprh = cap;
	}
	name = mo_strndup(data, nlen);
	value = mo_strndup(v, (size_t)(end - v));
	if (!name || !value) {
		mo_free(name);
		mo_free(value);
		c->rh_oom = 1;
		return 0;
	}
	for (char *p = name; *p; p++)
		*p = (char)tolower((unsigned char)*p);
	c->rh[c->nrh].name = name;
	c->rh[c->nrh].value = value;
	c->nrh++;
	return len;
}

/* Progress callback: a non-zero return makes curl stop the transfer. */
static int on_progress(void *ud, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un)
{
	mo_http_call *c = ud;
	(void)dt, (void)dn, (void)ut, (void)un;
	return c->aborted;
}

static const char *find_header(const mo_http_call *c, const char *name)
{
	for (size_t i = 0; i < c->nrh; i++)
		if (strcmp(c->rh[i].name, name) == 0)
			return c->rh[i].value;
	return NULL;
}

static int status_expected(const mo_http_call *c, long status)
{
	for (size_t i = 0; i < c->nexpect; i++)
		if (c->expect[i] == status)
			return 1;
	return 0;
}

/* Retry-After in ms (delta-seconds or an HTTP-date), or -1. */
static int64_t retry_after_ms(const mo_http_call *c)
{
	const char *v = find_header(c, "retry-after");
	const char *p;
	if (!v || !*v)
		return -1;
	for (p = v; *p >= '0' && *p <= '9'; p++)
		;
	if (!*p) {
		long long s = strtoll(v, NULL, 10);
		return s > 86400 ? 86400 * 1000LL : s * 1000LL;
	} else {
		time_t when = curl_getdate(v, NULL);
		int64_t d;
		if (when == (time_t)-1)
			return -1;
		d = ((int64_t)when - mo_wall_s()) * 1000;
		return d < 0 ? 0 : d;
	}
}

/* Full jitter: random(0, min(max, base * 2^n)). */
static int64_t backoff_ms(const mo_http_config *cfg, int n)
{
	int64_t cap = cfg->backoff_base_ms > 0 ? cfg->backoff_base_ms : 0;
	uint64_t r = 0;
	for (int i = 0; i < n && cap < cfg->backoff_max_ms; i++)
		cap *= 2;
	if (cap > cfg->backoff_max_ms)
		cap = cfg->backoff_max_ms;
	if (cap <= 0)
		return 0;
	if (mo_random(&r, sizeof(r)) < 0)
		return cap / 2;
	return (int64_t)(r % (uint64_t)(cap + 1));
}

static int is_connection_failure(CURLcode rc)
{
	switch (rc) {
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_COULDNT_RESOLVE_PROXY:
	case CURLE_COULDNT_CONNECT:
	case CURLE_SEND_ERROR:
	case CURLE_RECV_ERROR:
	case CURLE_GOT_NOTHING:
		return 1;
	default:
		return 0;
	}
}

static void on_transfer_done(CURL *easy, CURLcode rc, void *ud);

/* Start (or restart) a transfer. */
static int start_attempt(mo_http_call *c)
{
	call_reset_response(c);
	c->attempts++;
	return mo_loop_add_curl(c->rt->loop, c->easy, on_transfer_done, c);
}

static void finish(mo_http_call *c, int add_rc);

#define BACKOFF_SLICE_MS 250 /* a backoff wakes the loop at least this often */

/* Arm the next slice of the backoff ending at c->retry_at. */
static int arm_backoff(mo_http_call *c);

static void on_backoff_done(void *ud)
{
	mo_http_call *c = ud;
	c->timer_armed = 0;
	if (mo_now_ms() < c->retry_at) {
		if (arm_backoff(c) < 0)
			finish(c, MO_ENOMEM);
		return;
	}
	if (start_attempt(c) < 0)
		finish(c, MO_ENOMEM);
}

static int arm_backoff(mo_http_call *c)
{
	int64_t left = c->retry_at - mo_now_ms();
	int rc;
	if (left > BACKOFF_SLICE_MS)
		left = BACKOFF_SLICE_MS;
	if ((rc = mo_loop_timer(c->rt->loop, left, on_backoff_done, c, &c->timer)) < 0)
		return rc;
	c->timer_armed = 1;
	return 0;
}

/* Whether the outcome of the last attempt is worth another one. */
static int should_retry(const mo_http_call *c)
{
	if (c->rc != CURLE_OK) {
		if (is_connection_failure(c->rc))
			return 1;
		return c->rc == CURLE_OPERATION_TIMEDOUT && c->idempotent;
	}
	if (status_expected(c, c->status))
		return 0;
	if (c->status == 429)
		return 1;
	return c->status >= 500 && c->status <= 599 && c->idempotent;
}

static void on_transfer_done(CURL *easy, CURLcode rc, void *ud)
{
	mo_http_call *c = ud;
	int64_t delay, ra;
	int max_retries = c->rt->http.max_retries > 0 ? c->rt->http.max_retries : 0;

	if (c->aborted) {
		call_free(c);
		return;
	}
	c->rc = rc;
	if (c->rh_oom && rc == CURLE_OK)
		c->rc = CURLE_OUT_OF_MEMORY;
	if (c->rc == CURLE_OK)
		curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &c->status);
	/* an interrupt starts nothing new, but an action in flight finishes:
	 * its retries go on (a second Ctrl-C stops the process at once) */
	if (!should_retry(c) || c->attempts > max_retries) {
		finish(c, 0);
		return;
	}
	delay = backoff_ms(&c->rt->http, c->attempts - 1);
	if (c->rc == CURLE_OK && (c->status == 429 || c->status == 503) &&
	    (ra = retry_after_ms(c)) >= 0)
		delay = ra < c->rt->http.backoff_max_ms ? ra : c->rt->http.backoff_max_ms;
	if (c->rc != CURLE_OK)
		rt_log(c->rt, "warn", "%s %s: %s; retry %d of %d in %lld ms", c->method,
		       c->url_shown, c->errbuf[0] ? c->errbuf : curl_easy_strerror(c->rc),
		       c->attempts, max_retries, (long long)delay);
	else
		rt_log(c->rt, "warn", "%s %s: status %ld; retry %d of %d in %lld ms", c->method,
		       c->url_shown, c->status, c->attempts, max_retries, (long long)delay);
	c->retry_at = mo_now_ms() + delay;
	if (arm_backoff(c) < 0)
		finish(c, 0);
}

/* Build the response of the last attempt, hand it to the callback, free
 * the call.  add_rc: an engine failure that prevented another attempt. */
static void finish(mo_http_call *c, int add_rc)
{
	mo_http_response res;
	mo_buf err = MO_BUF_INIT;
	int failed = 0;

	memset(&res, 0, sizeof(res));
	res.status = c->rc == CURLE_OK ? (int)c->status : 0;
	res.curl_code = (int)c->rc;
	res.headers = c->rh;
	res.nheaders = c->nrh;
	res.body = c->resp.ptr ? c->resp.ptr : "";
	res.body_len = c->resp.len;
	res.attempts = c->attempts;
	res.elapsed_ms = mo_now_ms() - c->start_ms;

	if (add_rc < 0) {
		failed = 1;
		mo_buf_printf(&err, "%s %s: %s", c->method, c->url_shown, mo_error_last()->message);
	} else if (c->rc != CURLE_OK) {
		failed = 1;
		mo_buf_printf(&err, "%s %s: %s", c->method, c->url_shown,
			      c->errbuf[0] ? c->errbuf : curl_easy_strerror(c->rc));
		if (c->errbuf[0] && c->rc != CURLE_OPERATION_TIMEDOUT)
			mo_buf_printf(&err, " (%s)", curl_easy_strerror(c->rc));
		if (c->attempts > 1)
			mo_buf_printf(&err, " after %d attempts", c->attempts);
	} else if (c->nexpect > 0 && !status_expected(c, c->status)) {
		failed = 1;
		mo_buf_printf(&err, "%s %s: expected ", c->method, c->url_shown);
		for (size_t i = 0; i < c->nexpect; i++)
			mo_buf_printf(&err, "%s%d", i ? "/" : "", c->expect[i]);
		mo_buf_printf(&err, ", got %ld", c->status);
		if (c->resp.len > 0) {
			size_t n = c->resp.len < BODY_EXCERPT ? c->resp.len : BODY_EXCERPT;
			mo_buf_puts(&err, ": ");
			for (size_t i = 0; i < n; i++) {
				unsigned char ch = (unsigned char)c->resp.ptr[i];
				char s = (ch < 0x20 || ch == 0x7f) ? ' ' : (char)ch;
				mo_buf_put(&err, &s, 1);
			}
		}
	}
	if (failed) {
		res.code = MO_EHTTP;
		res.error = err.ptr ? err.ptr : "HTTP request failed (out of memory)";
	}
	c->cb(&res, c->ud);
	mo_buf_free(&err);
	call_free(c);
}

static int method_is_idempotent(const char *m)
{
	static const char *const safe[] = { "GET", "HEAD", "PUT", "DELETE", "OPTIONS" };
	for (size_t i = 0; i < MO_ARRAY_SIZE(safe); i++)
		if (strcmp(m, safe[i]) == 0)
			return 1;
	return 0;
}

static int has_crlf(const char *s)
{
	return strpbrk(s, "\r\n") != NULL;
}

/* http+unix://<socket path, %-encoded>/<path>: the convention of
 * requests-unixsocket and others for a local daemon's socket, e.g.
 * http+unix://%2Frun%2Fpodman%2Fpodman.sock/v1.41/info.  Sets c->unix_path
 * and c->unix_url (http://localhost/<path>). */
static int unix_url(mo_http_call *c, const char *url)
{
	const char *host = url + strlen("http+unix://");
	size_t n = strcspn(host, "/?#");

	if (n == 0)
		return mo_error_set(MO_EINVAL, "%s: no socket path; write it %%-encoded, as in "
				    "http+unix://%%2Frun%%2Fdaemon.sock/path", c->url_shown);
	if (!(c->unix_path = mo_pct_decode(host, n)))
		return mo_error_set(MO_EINVAL, "%s: bad %%-escape in the socket path", c->url_shown);
	if (c->unix_path[0] != '/')
		return mo_error_set(MO_EINVAL, "%s: the socket path must be absolute (%%2F...)", c->url_shown);
	if (!(c->unix_url = mo_sprintf("http://localhost%s%s", host[n] == '/' ? "" : "/", host + n)))
		return mo_error_set(MO_ENOMEM, "out of memory");
	return 0;
}

/* Check the request and copy what the call keeps. */
static int call_prepare(mo_http_call *c, const mo_http_request *req)
{
	const char *m = req->method ? req->method : "GET";
	const mo_http_auth *a = &req->auth;
	int has_ctype = 0, has_expect = 0, has_idem_key = 0, has_sha = 0, rc;
	int body_method = 0;
	long timeout;
	CURL *e;

	if (!req->url || !*req->url)
		return mo_error_set(MO_EINVAL, "HTTP request without a URL");
	if (!*m || strlen(m) > 32)
		return mo_error_set(MO_EINVAL, "bad HTTP method");
	for (const char *p = m; *p; p++)
		if (!is_token_char((unsigned char)*p))
			return mo_error_set(MO_EINVAL, "bad HTTP method");
	if (has_crlf(req->url))
		return mo_error_set(MO_EINVAL, "URL contains CR or LF");
	if (!(c->method = mo_strdup(m)) || !(c->url_shown = mask_url(req->url)))
		return mo_error_set(MO_ENOMEM, "out of memory");
	for (char *p = c->method; *p; p++)
		*p = (char)toupper((unsigned char)*p);
	if (!strncmp(req->url, "http+unix://", 12)) {
		if (req->unix_socket)
			return mo_error_set(MO_EINVAL, "%s %s: give the socket in the URL (http+unix://) or "
					    "as unix_socket, not both",
					    c->method, c->url_shown);
		if ((rc = unix_url(c, req->url)) < 0)
			return rc;
	}

	for (size_t i = 0; i < req->nheaders; i++) {
		const mo_http_header *h = &req->headers[i];
		if (!h->name || !*h->name || !h->value)
			return mo_error_set(MO_EINVAL, "%s %s: header without a name or value",
					    c->method, c->url_shown);
		for (const char *p = h->name; *p; p++)
			if (!is_token_char((unsigned char)*p))
				return mo_error_set(MO_EINVAL, "%s %s: bad header name '%s'",
						    c->method, c->url_shown, h->name);
		if (has_crlf(h->value))
			return mo_error_set(MO_EINVAL, "%s %s: header '%s' contains CR or LF",
					    c->method, c->url_shown, h->name);
		has_ctype |= ci_equal(h->name, "Content-Type");
		has_expect |= ci_equal(h->name, "Expect");
		has_idem_key |= ci_equal(h->name, "Idempotency-Key");
		has_sha |= ci_equal(h->name, "x-amz-content-sha256");
		if ((rc = add_header(c, h->name, h->value)) < 0)
			return rc;
	}

	c->idempotent = method_is_idempotent(c->method) || req->idempotent || has_idem_key;
	if (req->nexpect > 0) {
		if (!(c->expect = mo_malloc(req->nexpect * sizeof(*c->expect))))
			return mo_error_set(MO_ENOMEM, "out of memory");
		memcpy(c->expect, req->expect, req->nexpect * sizeof(*c->expect));
		c->nexpect = req->nexpect;
	}
	if (req->body) {
		if (!(c->body = mo_malloc(req->body_len + 1)))
			return mo_error_set(MO_ENOMEM, "out of memory");
		memcpy(c->body, req->body, req->body_len);
		c->body[req->body_len] = '\0';
		c->body_len = req->body_len;
	}

	if (!(e = c->easy = curl_easy_init()))
		return mo_error_set(MO_ENOMEM, "curl_easy_init failed");
	if (a->type == MO_HTTP_AUTH_AWS_SIGV4) {
		char *u;
		if ((rc = sigv4_url(&u, c->unix_url ? c->unix_url : req->url)) < 0)
			return rc;
		curl_easy_setopt(e, CURLOPT_URL, u);
		mo_free(u);
	} else {
		curl_easy_setopt(e, CURLOPT_URL, c->unix_url ? c->unix_url : req->url);
	}
#if LIBCURL_VERSION_NUM >= 0x075500
	curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
#else
	curl_easy_setopt(e, CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_ERRORBUFFER, c->errbuf);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, c);
	curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(e, CURLOPT_HEADERDATA, c);
	curl_easy_setopt(e, CURLOPT_XFERINFOFUNCTION, on_progress);
	curl_easy_setopt(e, CURLOPT_XFERINFODATA, c);
	curl_easy_setopt(e, CURLOPT_NOPROGRESS, 0L);
	timeout = req->timeout_ms > 0 ? req->timeout_ms : c->rt->http.timeout_ms;
	if (timeout > 0)
		curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, timeout);
	if (c->rt->http.connect_timeout_ms > 0)
		curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, c->rt->http.connect_timeout_ms);
	if (c->rt->http.ca_file)
		curl_easy_setopt(e, CURLOPT_CAINFO, c->rt->http.ca_file);
	if ((c->unix_path || req->unix_socket) &&
	    curl_easy_setopt(e, CURLOPT_UNIX_SOCKET_PATH, c->unix_path ? c->unix_path : req->unix_socket))
		return mo_error_set(MO_EINVAL, "unix sockets are not supported by this libcurl");

	/* Method and body.  POST, PUT and PATCH always send a body (possibly
	 * empty, so Content-Length: 0 goes out). */
	if (strcmp(c->method, "HEAD") == 0) {
		curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
	} else if (strcmp(c->method, "GET") == 0 && !c->body) {
		curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
	} else {
		body_method = c->body || strcmp(c->method, "POST") == 0 ||
			strcmp(c->method, "PUT") == 0 || strcmp(c->method, "PATCH") == 0;
		if (body_method) {
			curl_easy_setopt(e, CURLOPT_POSTFIELDS, c->body ? c->body : "");
			curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)c->body_len);
		}
		if (strcmp(c->method, "POST") != 0)
			curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, c->method);
	}
	/* No form-urlencoded guess, no 100-continue round trip.  Not with
	 * SigV4: curl would sign the removed headers as empty ones. */
	if (a->type != MO_HTTP_AUTH_AWS_SIGV4) {
		if (body_method && !has_ctype && (rc = suppress_header(c, "Content-Type")) < 0)
			return rc;
		if (!has_expect && (rc = suppress_header(c, "Expect")) < 0)
			return rc;
	}

	switch (a->type) {
	case MO_HTTP_AUTH_NONE:
		break;
	case MO_HTTP_AUTH_BEARER: {
		char *v;
		if (!a->token || has_crlf(a->token))
			return mo_error_set(MO_EINVAL, "%s %s: bearer auth needs a token",
					    c->method, c->url_shown);
		if (!(v = mo_sprintf("Bearer %s", a->token)))
			return mo_error_set(MO_ENOMEM, "out of memory");
		rc = add_header(c, "Authorization", v);
		memset(v, 0, strlen(v));
		mo_free(v);
		if (rc < 0)
			return rc;
		break;
	}
	case MO_HTTP_AUTH_BASIC:
		if (!a->user || !a->password)
			return mo_error_set(MO_EINVAL, "%s %s: basic auth needs user and password",
					    c->method, c->url_shown);
		curl_easy_setopt(e, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
		curl_easy_setopt(e, CURLOPT_USERNAME, a->user);
		curl_easy_setopt(e, CURLOPT_PASSWORD, a->password);
		break;
	case MO_HTTP_AUTH_AWS_SIGV4: {
#if LIBCURL_VERSION_NUM >= 0x074B00
		char sigv4[256], sha[65];
		if (!a->access_key || !a->secret_key || !a->region || !a->service ||
		    !*a->region || !*a->service || strchr(a->region, ':') ||
		    strchr(a->service, ':'))
			return mo_error_set(MO_EINVAL, "%s %s: aws_sigv4 auth needs access_key, "
					    "secret_key, region and service", c->method, c->url_shown);
		if ((size_t)snprintf(sigv4, sizeof(sigv4), "aws:amz:%s:%s", a->region,
				     a->service) >= sizeof(sigv4))
			return mo_error_set(MO_EINVAL, "%s %s: aws_sigv4 region or service too long",
					    c->method, c->url_shown);
		if (curl_easy_setopt(e, CURLOPT_AWS_SIGV4, sigv4) != CURLE_OK)
			return mo_error_set(MO_EINVAL, "%s %s: libcurl refused aws_sigv4",
					    c->method, c->url_shown);
		curl_easy_setopt(e, CURLOPT_USERNAME, a->access_key);
		curl_easy_setopt(e, CURLOPT_PASSWORD, a->secret_key);
		/* curl 7.88 signs the body's hash but does not send it; S3 wants it. */
		if (!has_sha) {
			if ((rc = sha256_hex(sha, c->body, c->body_len)) < 0 ||
			    (rc = add_header(c, "x-amz-content-sha256", sha)) < 0)
				return rc;
		}
		if (a->session_token) {
			if (has_crlf(a->session_token))
				return mo_error_set(MO_EINVAL, "%s %s: bad session token",
						    c->method, c->url_shown);
			if ((rc = add_header(c, "x-amz-security-token", a->session_token)) < 0)
				return rc;
		}
		break;
#else
		return mo_error_set(MO_EINVAL, "%s %s: aws_sigv4 needs libcurl >= 7.75",
				    c->method, c->url_shown);
#endif
	}
	default:
		return mo_error_set(MO_EINVAL, "%s %s: unknown auth type", c->method, c->url_shown);
	}
	curl_easy_setopt(e, CURLOPT_HTTPHEADER, c->hdrs);
	return 0;
}

int mo_http_start(mo_http_call **out, mo_rt *rt, const mo_http_request *req,
		  mo_http_done_cb cb, void *ud)
{
	mo_http_call *c;
	int rc;

	if (!(c = mo_calloc(1, sizeof(*c))))
		return mo_error_set(MO_ENOMEM, "out of memory");
	c->rt = rt;
	c->cb = cb;
	c->ud = ud;
	c->start_ms = mo_now_ms();
	if ((rc = call_prepare(c, req)) < 0 || (rc = start_attempt(c)) < 0) {
		call_free(c);
		return rc;
	}
	if (out)
		*out = c;
	return 0;
}

int mo_http_submit(mo_rt *rt, const mo_http_request *req, mo_http_done_cb cb, void *ud)
{
	return mo_http_start(NULL, rt, req, cb, ud);
}

static void nudge(void *ud)
{
	(void)ud;
}

void mo_http_abort(mo_http_call *c)
{
	if (!c)
		return;
	if (c->timer_armed) {
		mo_loop_timer_cancel(c->rt->loop, c->timer);
		call_free(c);
		return;
	}
	/* In flight: on_progress stops the transfer the next time curl runs
	 * it and on_transfer_done frees the call.  An immediate timer makes the
	 * loop's next pass run curl now, not when the peer next sends data. */
	c->aborted = 1;
	mo_loop_timer(c->rt->loop, 0, nudge, NULL, NULL);
}

/* ======================================================================
 * Lua <-> JSON: the shared model of lj.h
 * ====================================================================== */

/* Encode the value at idx; pushes the text.  Raises on bad values. */
static void json_encode_value(lua_State *L, int idx)
{
	json_t *v;
	char *text;
	if (mo_lj_to_json_raw(L, idx, "json", &v) < 0)
		luaL_error(L, "ctx.http.request: field %s", mo_error_last()->message);
	if (mo_json_has_deferred(v)) {
		json_decref(v);
		luaL_error(L, "ctx.http.request: field json holds a reference");
	}
	text = json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
	json_decref(v);
	if (!text)
		luaL_error(L, "ctx.http.request: out of memory");
	lua_pushstring(L, text);
	free(text);
}

/* Push a decoded JSON value (null is ctx.json.null; arrays keep their
 * array mark).  May raise (memory): call under lua_pcall. */
static void json_push(lua_State *L, const json_t *v)
{
	mo_lj_push_raw(L, v);
}

/* ======================================================================
 * Lua binding
 * ====================================================================== */

#define ANCHOR_MT "mecorch.http.wait"
static const char pending_key; /* registry[&pending_key] = { [thread] = anchor } */

enum { OP_HTTP, OP_SLEEP };

/* What a suspended task waits for. */
typedef struct lua_op {
	int kind;
	mo_rt *rt;
	mo_task *task;
	lua_State *thread;
	lua_State *main;
	mo_http_call *call;    /* OP_HTTP */
	uint64_t timer;        /* OP_SLEEP */
	struct op_anchor *anchor;
} lua_op;

typedef struct op_anchor {
	lua_op *op;
} op_anchor;

/* Stop whatever op waits for and free it; its task is left alone. */
static void op_withdraw(lua_op *op)
{
	if (op->kind == OP_HTTP)
		mo_http_abort(op->call);
	else
		mo_loop_timer_cancel(op->rt->loop, op->timer);
	if (op->anchor)
		op->anchor->op = NULL;
	mo_free(op);
}

static int anchor_gc(lua_State *L)
{
	op_anchor *a = luaL_checkudata(L, 1, ANCHOR_MT);
	if (a->op)
		op_withdraw(a->op);
	a->op = NULL;
	return 0;
}

static void ensure_registry(lua_State *L)
{
	if (luaL_newmetatable(L, ANCHOR_MT)) {
		lua_pushcfunction(L, anchor_gc);
		lua_setfield(L, -2, "__gc");
		lua_pushliteral(L, "locked");
		lua_setfield(L, -2, "__metatable");
	}
	lua_pop(L, 1);
	if (lua_rawgetp(L, LUA_REGISTRYINDEX, &pending_key) != LUA_TTABLE) {
		lua_pop(L, 1);
		lua_newtable(L);
		lua_rawsetp(L, LUA_REGISTRYINDEX, &pending_key);
	} else {
		lua_pop(L, 1);
	}
}

/* The task L runs as; raises when L is not a task's own thread. */
static mo_task *current_task(lua_State *L, const char *fn, mo_rt **rt)
{
	mo_task *t = mo_task_from_lua(L);
	mo_sandbox *sb;
	if (!t || mo_task_thread(t) != L)
		luaL_error(L, "%s must be called from a resource handler", fn);
	sb = mo_task_sandbox(t);
	*rt = sb ? mo_sandbox_rt(sb) : NULL;
	if (!*rt || !(*rt)->loop)
		luaL_error(L, "%s: no runtime (this sandbox does no I/O)", fn);
	return t;
}

/* Create the anchor for a wait of the running task and its op.  Stack:
 * unchanged.  Raises before anything needs undoing. */
static lua_op *op_new(lua_State *L, int kind, mo_task *t, mo_rt *rt)
{
	op_anchor *a;
	lua_op *op;

	ensure_registry(L);
	lua_rawgetp(L, LUA_REGISTRYINDEX, &pending_key);
	a = lua_newuserdatauv(L, sizeof(*a), 1);
	a->op = NULL;
	luaL_setmetatable(L, ANCHOR_MT);
	lua_pushthread(L); /* keeps the thread alive, see task_alive() */
	lua_setiuservalue(L, -2, 1);
	lua_rawsetp(L, -2, L);
	lua_pop(L, 1);
	if (!(op = mo_calloc(1, sizeof(*op)))) {
		luaL_error(L, "out of memory");
		return NULL;
	}
	op->kind = kind;
	op->rt = rt;
	op->task = t;
	op->thread = L;
	op->main = mo_sandbox_L(mo_task_sandbox(t));
	op->anchor = a;
	a->op = op;
	return op;
}

/* Whether op's task still exists.  The anchor keeps the thread alive and
 * mo_task_free() clears the thread's task pointer, so a task freed without
 * mo_http_cancel_task() is detected here instead of being woken. */
static int task_alive(const lua_op *op)
{
	return mo_task_from_lua(op->thread) == op->task;
}

/* Detach op from its anchor and the registry (no allocation: the entry
 * exists) and free it.  Returns the task to wake. */
static mo_task *op_finish(lua_op *op)
{
	mo_task *t = op->task;
	lua_State *main = op->main;
	if (op->anchor)
		op->anchor->op = NULL;
	if (lua_checkstack(main, 2)) {
		if (lua_rawgetp(main, LUA_REGISTRYINDEX, &pending_key) == LUA_TTABLE) {
			lua_pushnil(main);
			lua_rawsetp(main, -2, op->thread);
		}
		lua_pop(main, 1);
	}
	mo_free(op);
	return t;
}

void mo_http_cancel_task(mo_task *t)
{
	lua_State *main, *thread;
	mo_sandbox *sb;

	if (!t || !(sb = mo_task_sandbox(t)) || !(thread = mo_task_thread(t)))
		return;
	main = mo_sandbox_L(sb);
	if (!lua_checkstack(main, 2))
		return;
	if (lua_rawgetp(main, LUA_REGISTRYINDEX, &pending_key) == LUA_TTABLE) {
		if (lua_rawgetp(main, -1, thread) == LUA_TUSERDATA) {
			op_anchor *a = lua_touserdata(main, -1);
			if (a->op)
				op_withdraw(a->op);
			a->op = NULL;
			lua_pushnil(main);
			lua_rawsetp(main, -3, thread);
		}
		lua_pop(main, 1);
	}
	lua_pop(main, 1);
}

/* ---- ctx.http.request --------------------------------------------------- */

static const char *const request_fields[] = {
	"method", "url", "headers", "json", "body", "timeout_ms", "auth",
	"unix_socket", "expect", "idempotent", NULL
};

/* Raw t[k] of the request table at index 1, pushed. */
static int field(lua_State *L, const char *k)
{
	lua_pushstring(L, k);
	return lua_rawget(L, 1);
}

static const char *opt_string(lua_State *L, int tidx, const char *k, const char *path)
{
	const char *s;
	lua_pushstring(L, k);
	switch (lua_rawget(L, tidx)) {
	case LUA_TNIL:
		lua_pop(L, 1);
		return NULL;
	case LUA_TSTRING:
		/* The table still references the string, and no Lua code runs
		 * before the request is submitted, so the pointer stays valid. */
		s = lua_tostring(L, -1);
		lua_pop(L, 1);
		return s;
	default:
		luaL_error(L, "ctx.http.request: field '%s' must be a string", path);
		return NULL;
	}
}

static void parse_auth(lua_State *L, mo_http_auth *a)
{
	int aidx;
	const char *type;
	if (field(L, "auth") == LUA_TNIL) {
		lua_pop(L, 1);
		return;
	}
	if (!lua_istable(L, -1))
		luaL_error(L, "ctx.http.request: field 'auth' must be a table");
	aidx = lua_gettop(L);
	type = opt_string(L, aidx, "type", "auth.type");
	if (!type)
		luaL_error(L, "ctx.http.request: field 'auth.type' must be a string");
	if (strcmp(type, "bearer") == 0) {
		a->type = MO_HTTP_AUTH_BEARER;
		if (!(a->token = opt_string(L, aidx, "token", "auth.token")))
			luaL_error(L, "ctx.http.request: field 'auth.token' must be a string");
	} else if (strcmp(type, "basic") == 0) {
		a->type = MO_HTTP_AUTH_BASIC;
		if (!(a->user = opt_string(L, aidx, "user", "auth.user")))
			luaL_error(L, "ctx.http.request: field 'auth.user' must be a string");
		if (!(a->password = opt_string(L, aidx, "password", "auth.password")))
			luaL_error(L, "ctx.http.request: field 'auth.password' must be a string");
	} else if (strcmp(type, "aws_sigv4") == 0) {
		static const char *const req[] = { "access_key", "secret_key", "region", "service" };
		const char **dst[] = { &a->access_key, &a->secret_key, &a->region, &a->service };
		char path[32];
		a->type = MO_HTTP_AUTH_AWS_SIGV4;
		for (size_t i = 0; i < MO_ARRAY_SIZE(req); i++) {
			snprintf(path, sizeof(path), "auth.%s", req[i]);
			if (!(*dst[i] = opt_string(L, aidx, req[i], path)))
				luaL_error(L, "ctx.http.request: field '%s' must be a string", path);
		}
		a->session_token = opt_string(L, aidx, "session_token", "auth.session_token");
	} else {
		luaL_error(L, "ctx.http.request: field 'auth.type' must be \"bearer\", \"basic\" "
			   "or \"aws_sigv4\"");
	}
	lua_pop(L, 1);
}

/* Fill *req from the table at index 1.  Scratch arrays are userdata left on
 * the stack, so a Lua error frees them. */
static void parse_request(lua_State *L, mo_http_request *req)
{
	const char *s;
	int type, has_ctype = 0;

	memset(req, 0, sizeof(*req));
	if (lua_type(L, 1) != LUA_TTABLE)
		luaL_error(L, "ctx.http.request: expected a table argument");
	lua_pushnil(L);
	while (lua_next(L, 1)) {
		size_t i;
		lua_pop(L, 1);
		if (lua_type(L, -1) != LUA_TSTRING)
			luaL_error(L, "ctx.http.request: field names must be strings");
		s = lua_tostring(L, -1);
		for (i = 0; request_fields[i] && strcmp(request_fields[i], s) != 0; i++)
			;
		if (!request_fields[i])
			luaL_error(L, "ctx.http.request: unknown field '%s'", s);
	}

	req->method = opt_string(L, 1, "method", "method");
	if (!(req->url = opt_string(L, 1, "url", "url")))
		luaL_error(L, "ctx.http.request: field 'url' must be a string");
	if (!*req->url)
		luaL_error(L, "ctx.http.request: field 'url' must not be empty");
	req->unix_socket = opt_string(L, 1, "unix_socket", "unix_socket");

	type = field(L, "timeout_ms");
	if (type != LUA_TNIL) {
		lua_Number ms = lua_tonumber(L, -1);
		if (type != LUA_TNUMBER || !(ms >= 1 && ms <= 86400000.0))
			luaL_error(L, "ctx.http.request: field 'timeout_ms' must be a number of "
				   "milliseconds from 1 to 86400000");
		req->timeout_ms = (long)ms;
	}
	lua_pop(L, 1);

	type = field(L, "idempotent");
	if (type != LUA_TNIL && type != LUA_TBOOLEAN)
		luaL_error(L, "ctx.http.request: field 'idempotent' must be a boolean");
	req->idempotent = lua_toboolean(L, -1);
	lua_pop(L, 1);

	/* headers: { [name] = value } -> scratch array */
	type = field(L, "headers");
	if (type != LUA_TNIL) {
		int hidx = lua_gettop(L);
		size_t n = 0, i = 0;
		mo_http_header *h;
		if (type != LUA_TTABLE)
			luaL_error(L, "ctx.http.request: field 'headers' must be a table");
		lua_pushnil(L);
		while (lua_next(L, hidx)) {
			lua_pop(L, 1);
			n++;
		}
		h = lua_newuserdatauv(L, (n + 1) * sizeof(*h), 0);
		lua_insert(L, hidx); /* keep the scratch below the table */
		hidx++;
		lua_pushnil(L);
		while (lua_next(L, hidx)) {
			if (lua_type(L, -2) != LUA_TSTRING)
				luaL_error(L, "ctx.http.request: field 'headers' must have string keys");
			if (lua_type(L, -1) != LUA_TSTRING)
				luaL_error(L, "ctx.http.request: field 'headers.%s' must be a string",
					   lua_tostring(L, -2));
			h[i].name = lua_tostring(L, -2);
			h[i].value = lua_tostring(L, -1);
			if (strcasecmp(h[i].name, "Content-Type") == 0)
				has_ctype = 1;
			i++;
			lua_pop(L, 1);
		}
		req->headers = h;
		req->nheaders = i;
	}
	lua_pop(L, 1);

	/* expect: { 200, 201 } */
	type = field(L, "expect");
	if (type != LUA_TNIL) {
		size_t n;
		int *ex;
		if (type != LUA_TTABLE)
			luaL_error(L, "ctx.http.request: field 'expect' must be a list of status codes");
		n = lua_rawlen(L, -1);
		if (n == 0 || n > MAX_EXPECT)
			luaL_error(L, "ctx.http.request: field 'expect' must list 1 to %d status codes",
				   MAX_EXPECT);
		ex = lua_newuserdatauv(L, n * sizeof(*ex), 0);
		lua_insert(L, -2);
		for (size_t i = 0; i < n; i++) {
			lua_Integer st;
			lua_rawgeti(L, -1, (lua_Integer)i + 1);
			st = lua_isinteger(L, -1) ? lua_tointeger(L, -1) : 0;
			if (st < 100 || st > 599)
				luaL_error(L, "ctx.http.request: field 'expect[%d]' must be an HTTP status",
					   (int)i + 1);
			ex[i] = (int)st;
			lua_pop(L, 1);
		}
		req->expect = ex;
		req->nexpect = n;
	}
	lua_pop(L, 1);

	/* body or json; the encoded text stays on the stack */
	type = field(L, "body");
	if (type != LUA_TNIL) {
		size_t len;
		if (type != LUA_TSTRING)
			luaL_error(L, "ctx.http.request: field 'body' must be a string");
		req->body = lua_tolstring(L, -1, &len);
		req->body_len = len;
		lua_pop(L, 1);
		if (field(L, "json") != LUA_TNIL)
			luaL_error(L, "ctx.http.request: fields 'body' and 'json' are exclusive");
		lua_pop(L, 1);
	} else {
		lua_pop(L, 1);
		type = field(L, "json");
		if (type != LUA_TNIL) {
			size_t len;
			if (type != LUA_TTABLE)
				luaL_error(L, "ctx.http.request: field 'json' must be a table");
			json_encode_value(L, -1);
			lua_remove(L, -2);
			req->body = lua_tolstring(L, -1, &len);
			req->body_len = len;
			if (!has_ctype) {
				/* Append Content-Type to the headers (new scratch). */
				mo_http_header *h = lua_newuserdatauv(L, (req->nheaders + 1) * sizeof(*h), 0);
				if (req->nheaders)
					memcpy(h, req->headers, req->nheaders * sizeof(*h));
				h[req->nheaders].name = "Content-Type";
				h[req->nheaders].value = "application/json";
				req->headers = h;
				req->nheaders++;
			}
		} else {
			lua_pop(L, 1);
		}
	}
	parse_auth(L, &req->auth);
}

typedef struct {
	const mo_http_response *res;
	lua_State *thread;
	json_t *json;
} push_ctx;

/* lua_pcall'd on the main thread: build the response table or the error
 * message and move it onto the task's thread. */
static int push_result(lua_State *L)
{
	push_ctx *p = lua_touserdata(L, 1);
	const mo_http_response *res = p->res;

	if (res->code != 0) {
		lua_pushstring(L, res->error);
	} else {
		json_error_t jerr;
		lua_createtable(L, 0, 6);
		lua_pushinteger(L, res->status);
		lua_setfield(L, -2, "status");
		lua_createtable(L, 0, (int)res->nheaders);
		for (size_t i = 0; i < res->nheaders; i++) {
			const char *name = res->headers[i].name;
			if (lua_getfield(L, -1, name) == LUA_TSTRING) {
				/* repeated header: join as HTTP does */
				lua_pushfstring(L, "%s, %s", lua_tostring(L, -1), res->headers[i].value);
				lua_remove(L, -2);
			} else {
				lua_pop(L, 1);
				lua_pushstring(L, res->headers[i].value);
			}
			lua_setfield(L, -2, name);
		}
		lua_setfield(L, -2, "headers");
		lua_pushlstring(L, res->body, res->body_len);
		lua_setfield(L, -2, "body");
		if (res->body_len > 0)
			p->json = json_loadb(res->body, res->body_len, JSON_DECODE_ANY, &jerr);
		if (p->json) {
			json_push(L, p->json);
			lua_setfield(L, -2, "json");
		}
		lua_pushinteger(L, res->attempts);
		lua_setfield(L, -2, "attempts");
		lua_pushinteger(L, (lua_Integer)res->elapsed_ms);
		lua_setfield(L, -2, "elapsed_ms");
	}
	if (!lua_checkstack(p->thread, 1))
		return luaL_error(L, "out of memory");
	lua_xmove(L, p->thread, 1);
	return 0;
}

static void on_request_done(const mo_http_response *res, void *ud)
{
	lua_op *op = ud;
	lua_State *main = op->main;
	push_ctx p = { res, op->thread, NULL };
	mo_task *t;
	int nargs = 0;

	op->call = NULL; /* freed by the engine after this returns */
	if (!task_alive(op)) {
		op_finish(op);
		return;
	}
	if (lua_checkstack(main, 3)) {
		lua_pushcfunction(main, push_result);
		lua_pushlightuserdata(main, &p);
		if (lua_pcall(main, 1, 0, 0) == LUA_OK)
			nargs = 1;
		else
			lua_pop(main, 1);
	}
	json_decref(p.json);
	t = op_finish(op);
	mo_task_wake(t, nargs);
}

/* Continuation: the one value on top is the response table, or the error
 * message to raise here, in the module's code. */
static int request_k(lua_State *L, int status, lua_KContext base)
{
	(void)status;
	if (lua_gettop(L) <= (int)base)
		return luaL_error(L, "ctx.http.request: no response (out of memory)");
	if (lua_type(L, -1) == LUA_TSTRING) /* with the caller's file:line */
		return luaL_error(L, "%s", lua_tostring(L, -1));
	return 1;
}

/* request{...}.  Stack: the request table in, the response table out (or a
 * Lua error).  Yields. */
static int l_request(lua_State *L)
{
	mo_http_request req;
	mo_rt *rt;
	mo_task *t = current_task(L, "ctx.http.request", &rt);
	lua_op *op;
	int base;

	lua_settop(L, 1);
	parse_request(L, &req);
	op = op_new(L, OP_HTTP, t, rt);
	if (mo_http_start(&op->call, rt, &req, on_request_done, op) < 0) {
		op_finish(op);
		return luaL_error(L, "ctx.http.request: %s", mo_error_last()->message);
	}
	lua_settop(L, 1); /* the scratch and strings are copied now */
	base = lua_gettop(L);
	mo_task_suspend(t);
	return lua_yieldk(L, 0, (lua_KContext)base, request_k);
}

int mo_open_http(lua_State *L)
{
	static const luaL_Reg fns[] = {
		{ "request", l_request },
		{ NULL, NULL },
	};
	ensure_registry(L);
	luaL_newlib(L, fns);
	return 1;
}

/* ---- ctx.sleep ---------------------------------------------------------- */

static void on_sleep_done(void *ud)
{
	lua_op *op = ud;
	int alive = task_alive(op);
	mo_task *t = op_finish(op);
	if (alive)
		mo_task_wake(t, 0);
}

/* sleep(ms).  Stack: ms in, nothing out.  Yields. */
static int l_sleep(lua_State *L)
{
	mo_rt *rt;
	mo_task *t;
	lua_op *op;
	lua_Number ms;

	if (lua_type(L, 1) != LUA_TNUMBER || !((ms = lua_tonumber(L, 1)) >= 0))
		return luaL_error(L, "ctx.sleep: ms must be a non-negative number");
	if (ms > 86400000.0)
		return luaL_error(L, "ctx.sleep: ms must be at most one day");
	t = current_task(L, "ctx.sleep", &rt);
	op = op_new(L, OP_SLEEP, t, rt);
	if (mo_loop_timer(rt->loop, (int64_t)ms, on_sleep_done, op, &op->timer) < 0) {
		op_finish(op);
		return luaL_error(L, "ctx.sleep: %s", mo_error_last()->message);
	}
	mo_task_suspend(t);
	return lua_yield(L, 0);
}

int mo_open_sleep(lua_State *L)
{
	ensure_registry(L);
	lua_pushcfunction(L, l_sleep);
	return 1;
}
