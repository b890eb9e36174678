/*
 * emu.c - a lab emulator as a child process of a unit test, and HTTP to
 * it over libcurl (see emu.h for the contract).
 *
 * The child is found, forked and exec'd with a port file in a private
 * temporary directory; the helper polls for that file (and for an early
 * exit of the child) rather than sleeping a fixed time.  Requests are one
 * easy handle each, so a test may also drive several at once in its own
 * multi handle (emu_prepare / emu_complete).
 */
#include "emu.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define EMU_MAX_ARGS 48
/* Bounds of the waits for a child to listen and to stop: generous, for a
 * sanitized build on a slow, loaded machine. */
#define EMU_START_MS 60000
#define EMU_STOP_MS  30000

void emu_sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
	nanosleep(&ts, NULL);
}

int emu_locate(char *out, size_t n, const char *name, const char *dir)
{
	char env[64];
	const char *p;
	size_t i;

	for (i = 0; name[i] && i + 1 < sizeof(env); i++)
		env[i] = (char)toupper((unsigned char)name[i]);
	env[i] = '\0';
	p = getenv(env);
	if ((size_t)(p && *p ? snprintf(out, n, "%s", p) : snprintf(out, n, "%s/%s", dir, name)) >= n)
		return mo_error_set(MO_EINVAL, "path of %s too long", name);
	return 0;
}

emu_proc *emu_new(const char *name, const char *dir)
{
	emu_proc *p = mo_calloc(1, sizeof(*p));

	if (!p) {
		mo_error_set(MO_ENOMEM, "out of memory");
		return NULL;
	}
	if (emu_locate(p->bin, sizeof(p->bin), name, dir) < 0)
		goto fail;
	snprintf(p->dir, sizeof(p->dir), "/tmp/mo-%.32s-XXXXXX", name);
	if (!mkdtemp(p->dir)) {
		mo_error_set(MO_EIO, "mkdtemp %s: %s", p->dir, strerror(errno));
		goto fail;
	}
	snprintf(p->port_file, sizeof(p->port_file), "%s/port", p->dir);
	snprintf(p->state_file, sizeof(p->state_file), "%s/state.json", p->dir);
	return p;
fail:
	mo_free(p);
	return NULL;
}

int emu_free(emu_proc *p)
{
	int rc;
	if (!p)
		return 0;
	rc = emu_stop(p);
	unlink(p->port_file);
	unlink(p->state_file);
	rmdir(p->dir);
	mo_free(p);
	return rc;
}

int emu_teardown(void **state)
{
	return emu_free(*state);
}

/* Fork and exec argv[0]; stdout (and stderr when quiet_err) on /dev/null. */
static pid_t emu_spawn(const char *const *argv, int quiet_err)
{
	pid_t pid = fork();
	if (pid == 0) {
		int fd = open("/dev/null", O_WRONLY);
		if (fd >= 0) {
			dup2(fd, STDOUT_FILENO);
			if (quiet_err)
				dup2(fd, STDERR_FILENO);
		}
		execv(argv[0], (char *const *)argv);
		_exit(127);
	}
	return pid;
}

int emu_startv(emu_proc *p, const char *listen, const char *const *args)
{
	const char *argv[EMU_MAX_ARGS];
	int argc = 0, status;
	char *text = NULL;
	size_t len;
	unsigned long port;

	if (p->pid > 0)
		return mo_error_set(MO_EINVAL, "%s already runs", p->bin);
	unlink(p->port_file);
	argv[argc++] = p->bin;
	argv[argc++] = "--listen";
	argv[argc++] = listen ? listen : "127.0.0.1:0";
	argv[argc++] = "--port-file";
	argv[argc++] = p->port_file;
	for (size_t i = 0; p->always && p->always[i]; i++)
		if (argc < EMU_MAX_ARGS - 1)
			argv[argc++] = p->always[i];
	for (size_t i = 0; args && args[i]; i++)
		if (argc < EMU_MAX_ARGS - 1)
			argv[argc++] = args[i];
	argv[argc] = NULL;
	if (argc >= EMU_MAX_ARGS - 1)
		return mo_error_set(MO_EINVAL, "too many arguments for %s", p->bin);
	if (access(p->bin, X_OK) != 0)
		return mo_error_set(MO_ENOTFOUND, "%s: %s", p->bin, strerror(errno));

	p->pid = emu_spawn(argv, 0);
	if (p->pid < 0) {
		p->pid = 0;
		return mo_error_set(MO_ERROR, "fork: %s", strerror(errno));
	}
	for (int64_t end = mo_now_ms() + EMU_START_MS; mo_now_ms() < end;) {
		if (mo_file_read(&text, &len, p->port_file) == 0)
			break;
		if (waitpid(p->pid, &status, WNOHANG) != 0) {
			p->pid = 0;
			return mo_error_set(MO_ERROR, "%s exited before listening (status 0x%x)",
					    p->bin, status);
		}
		emu_sleep_ms(10);
	}
	port = text ? strtoul(text, NULL, 10) : 0;
	mo_free(text);
	if (port == 0 || port >= 65536) {
		emu_kill(p);
		return mo_error_set(MO_ERROR, "%s wrote no port to %s", p->bin, p->port_file);
	}
	p->port = (unsigned)port;
	snprintf(p->base, sizeof(p->base), "http://127.0.0.1:%u", p->port);
	return 0;
}

int emu_start(emu_proc *p, ...)
{
	const char *args[EMU_MAX_ARGS];
	size_t n = 0;
	va_list ap;

	va_start(ap, p);
	for (const char *a; (a = va_arg(ap, const char *));)
		if (n < EMU_MAX_ARGS - 1)
			args[n++] = a;
	va_end(ap);
	args[n] = NULL;
	return emu_startv(p, NULL, args);
}

int emu_stop(emu_proc *p)
{
	int status = 0;
	pid_t w = 0;

	if (p->pid <= 0)
		return 0;
	kill(p->pid, SIGTERM);
	for (int64_t end = mo_now_ms() + EMU_STOP_MS;
	     (w = waitpid(p->pid, &status, WNOHANG)) == 0 && mo_now_ms() < end;)
		emu_sleep_ms(10);
	if (w == 0) {
		emu_kill(p);
		fprintf(stderr, "%s did not stop on SIGTERM\n", p->bin);
		return mo_error_set(MO_ERROR, "%s did not stop on SIGTERM", p->bin);
	}
	p->pid = 0;
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		fprintf(stderr, "%s ended with status 0x%x\n", p->bin, status);
		return mo_error_set(MO_ERROR, "%s ended with status 0x%x", p->bin, status);
	}
	return 0;
}

void emu_kill(emu_proc *p)
{
	int status;
	if (p->pid <= 0)
		return;
	kill(p->pid, SIGKILL);
	waitpid(p->pid, &status, 0);
	p->pid = 0;
}

int emu_run(const char *bin, const char *const *args)
{
	const char *argv[EMU_MAX_ARGS];
	int argc = 0, status;
	pid_t pid;

	argv[argc++] = bin;
	for (size_t i = 0; args && args[i] && argc < EMU_MAX_ARGS - 1; i++)
		argv[argc++] = args[i];
	argv[argc] = NULL;
	pid = emu_spawn(argv, 1);
	if (pid < 0 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status))
		return -1;
	return WEXITSTATUS(status);
}

/* ---- HTTP ------------------------------------------------------------- */

static size_t emu_on_body(char *ptr, size_t size, size_t n, void *ud)
{
	emu_resp *r = ud;
	return mo_buf_put(&r->body, ptr, size * n) == 0 ? size * n : 0;
}

static size_t emu_on_header(char *ptr, size_t size, size_t n, void *ud)
{
	static const struct {
		const char *name;
		size_t off, cap;
	} wanted[] = {
#define H(name, field) { name, offsetof(emu_resp, field), sizeof(((emu_resp *)0)->field) }
		H("content-type:", content_type), H("etag:", etag), H("allow:", allow),
		H("www-authenticate:", www_auth), H("retry-after:", retry_after),
		H("x-auth-token:", auth_token), H("location:", location),
		H("odata-version:", odata_version),
#undef H
	};
	emu_resp *r = ud;
	size_t len = size * n;

	for (size_t i = 0; i < MO_ARRAY_SIZE(wanted); i++) {
		size_t k = strlen(wanted[i].name);
		if (len > k && strncasecmp(ptr, wanted[i].name, k) == 0) {
			const char *v = ptr + k;
			size_t vn = len - k;
			char *dst = (char *)r + wanted[i].off;
			while (vn && *v == ' ')
				v++, vn--;
			while (vn && (v[vn - 1] == '\r' || v[vn - 1] == '\n' || v[vn - 1] == ' '))
				vn--;
			if (vn >= wanted[i].cap)
				vn = wanted[i].cap - 1;
			memcpy(dst, v, vn);
			dst[vn] = '\0';
		}
	}
	return len;
}

CURL *emu_prepare(const emu_proc *p, const emu_req *req, emu_resp *out)
{
	char url[512], auth[256];
	CURL *h;

	memset(out, 0, sizeof(*out));
	if (snprintf(url, sizeof(url), "%s%s", p->base, req->path) >= (int)sizeof(url)) {
		mo_error_set(MO_EINVAL, "URL too long");
		return NULL;
	}
	h = curl_easy_init();
	if (!h) {
		mo_error_set(MO_ENOMEM, "curl_easy_init failed");
		return NULL;
	}
	out->hdrs_ = curl_slist_append(NULL, "Expect:");
	if (req->body || req->always_json)
		out->hdrs_ = curl_slist_append(out->hdrs_, "Content-Type: application/json");
	if (req->bearer) {
		snprintf(auth, sizeof(auth), "Authorization: Bearer %s", req->bearer);
		out->hdrs_ = curl_slist_append(out->hdrs_, auth);
	}
	for (size_t i = 0; req->headers && req->headers[i]; i++)
		out->hdrs_ = curl_slist_append(out->hdrs_, req->headers[i]);
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, req->method ? req->method : "GET");
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, out->hdrs_);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, emu_on_body);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, out);
	curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, emu_on_header);
	curl_easy_setopt(h, CURLOPT_HEADERDATA, out);
	curl_easy_setopt(h, CURLOPT_TIMEOUT, 30L);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	if (req->userpwd)
		curl_easy_setopt(h, CURLOPT_USERPWD, req->userpwd);
	if (req->body) {
		size_t n = req->body_len ? req->body_len : strlen(req->body);
		curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)n);
		curl_easy_setopt(h, CURLOPT_POSTFIELDS, req->body);
	}
	return h;
}

void emu_complete(CURL *h, emu_resp *out)
{
	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &out->status);
	if (out->body.len && strstr(out->content_type, "json"))
		out->json = json_loadb(out->body.ptr, out->body.len, 0, NULL);
	curl_easy_cleanup(h);
	curl_slist_free_all(out->hdrs_);
	out->hdrs_ = NULL;
}

int emu_send(const emu_proc *p, const emu_req *req, emu_resp *out)
{
	CURL *h = emu_prepare(p, req, out);
	CURLcode cc;

	if (!h)
		return mo_error_last()->code;
	cc = curl_easy_perform(h);
	emu_complete(h, out);
	if (cc != CURLE_OK)
		return mo_error_set_native(MO_EHTTP, (int)cc, "%s %s: %s",
					   req->method ? req->method : "GET", req->path,
					   curl_easy_strerror(cc));
	return 0;
}

int emu_http(const emu_proc *p, const char *method, const char *path, const char *body,
	     emu_resp *out)
{
	emu_req req = { .method = method, .path = path, .body = body };
	return emu_send(p, &req, out);
}

void emu_resp_free(emu_resp *r)
{
	mo_buf_free(&r->body);
	json_decref(r->json);
	curl_slist_free_all(r->hdrs_);
	memset(r, 0, sizeof(*r));
}
