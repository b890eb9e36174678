/*
 * common.c - per-thread error detail, allocation wrappers with a failure
 * injection hook, byte buffers, clocks and file helpers.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static _Thread_local mo_error last_error;
static long alloc_fail_after; /* test hook; not thread-safe by design */

int mo_error_setv(int code, const char *fmt, va_list ap)
{
	last_error.code = code;
	last_error.native = 0;
	vsnprintf(last_error.message, sizeof(last_error.message), fmt, ap);
	return code;
}

int mo_error_set(int code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	mo_error_setv(code, fmt, ap);
	va_end(ap);
	return code;
}

int mo_error_set_native(int code, int native, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	mo_error_setv(code, fmt, ap);
	va_end(ap);
	last_error.native = native;
	return code;
}

int mo_error_prefix(const char *fmt, ...)
{
	char prefix[512], old[sizeof(last_error.message)];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(prefix, sizeof(prefix), fmt, ap);
	va_end(ap);
	memcpy(old, last_error.message, sizeof(old));
	snprintf(last_error.message, sizeof(last_error.message), "%s: %.*s", prefix,
		 (int)(sizeof(last_error.message) - strlen(prefix) - 3), old);
	return last_error.code ? last_error.code : MO_ERROR;
}

const mo_error *mo_error_last(void)
{
	return &last_error;
}

void mo_error_clear(void)
{
	memset(&last_error, 0, sizeof(last_error));
}

static const struct {
	int code;
	const char *name;
	int exit_status;
} code_table[] = {
	{ MO_OK, "ok", 0 },
	{ MO_ERROR, "error", 1 },
	{ MO_ENOMEM, "out of memory", 1 },
	{ MO_EINVAL, "invalid input", 3 },
	{ MO_ENOTFOUND, "not found", 4 },
	{ MO_ELOCKED, "state locked", 5 },
	{ MO_ESTALE, "stale plan", 6 },
	{ MO_EMODULE, "module error", 7 },
	{ MO_EIO, "I/O error", 8 },
	{ MO_ESTATE, "state store error", 9 },
	{ MO_ECYCLE, "dependency cycle", 3 },
	{ MO_EHTTP, "HTTP error", 8 },
	{ MO_ELIMIT, "sandbox limit exceeded", 7 },
	{ MO_EINTR, "interrupted", 130 },
	{ MO_EFAILED, "actions failed", 1 },
	{ MO_ESOURCE, "module source error", 10 },
};

const char *mo_code_name(int code)
{
	for (size_t i = 0; i < MO_ARRAY_SIZE(code_table); i++)
		if (code_table[i].code == code)
			return code_table[i].name;
	return "error";
}

int mo_code_exit_status(int code)
{
	for (size_t i = 0; i < MO_ARRAY_SIZE(code_table); i++)
		if (code_table[i].code == code)
			return code_table[i].exit_status;
	return 1;
}

void mo_alloc_fail_after(long n)
{
	alloc_fail_after = n;
}

static int alloc_should_fail(void)
{
	if (alloc_fail_after <= 0)
		return 0;
	if (alloc_fail_after == 1)
		return 1; /* stays at 1: every later allocation fails too */
	alloc_fail_after--;
	return 0;
}

void *mo_malloc(size_t n)
{
	if (alloc_should_fail())
		return NULL;
	return malloc(n ? n : 1);
}

void *mo_calloc(size_t n, size_t size)
{
	if (alloc_should_fail())
		return NULL;
	return calloc(n ? n : 1, size ? size : 1);
}

void *mo_realloc(void *p, size_t n)
{
	if (alloc_should_fail())
		return NULL;
	return realloc(p, n ? n : 1);
}

void mo_free(void *p)
{
	free(p);
}

char *mo_strndup(const char *s, size_t n)
{
	char *d;
	if (!s)
		return NULL;
	d = mo_malloc(n + 1);
	if (!d)
		return NULL;
	memcpy(d, s, n);
	d[n] = '\0';
	return d;
}

char *mo_strdup(const char *s)
{
	return s ? mo_strndup(s, strlen(s)) : NULL;
}

char *mo_sprintf(const char *fmt, ...)
{
	va_list ap;
	int n;
	char *s;
	va_start(ap, fmt);
	n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0 || !(s = mo_malloc((size_t)n + 1)))
		return NULL;
	va_start(ap, fmt);
	vsnprintf(s, (size_t)n + 1, fmt, ap);
	va_end(ap);
	return s;
}

static int buf_grow(mo_buf *b, size_t extra)
{
	size_t need = b->len + extra + 1, cap;
	char *p;
	if (need <= b->cap)
		return 0;
	cap = b->cap ? b->cap : 64;
	while (cap < need)
		cap *= 2;
	if (!(p = mo_realloc(b->ptr, cap)))
		return mo_error_set(MO_ENOMEM, "out of memory");
	b->ptr = p;
	b->cap = cap;
	return 0;
}

int mo_buf_put(mo_buf *b, const void *data, size_t n)
{
	if (buf_grow(b, n) < 0)
		return MO_ENOMEM;
	if (n)
		memcpy(b->ptr + b->len, data, n);
	b->len += n;
	b->ptr[b->len] = '\0';
	return 0;
}

int mo_buf_puts(mo_buf *b, const char *s)
{
	return mo_buf_put(b, s, strlen(s));
}

int mo_buf_printf(mo_buf *b, const char *fmt, ...)
{
	va_list ap;
	int n;
	va_start(ap, fmt);
	n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0)
		return mo_error_set(MO_ERROR, "bad format");
	if (buf_grow(b, (size_t)n) < 0)
		return MO_ENOMEM;
	va_start(ap, fmt);
	vsnprintf(b->ptr + b->len, (size_t)n + 1, fmt, ap);
	va_end(ap);
	b->len += (size_t)n;
	return 0;
}

void mo_buf_free(mo_buf *b)
{
	mo_free(b->ptr);
	b->ptr = NULL;
	b->len = b->cap = 0;
}

int64_t mo_now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int64_t mo_now_ms(void)
{
	return mo_now_us() / 1000;
}

int64_t mo_wall_s(void)
{
	return (int64_t)time(NULL);
}

int mo_file_read(char **out, size_t *len, const char *path)
{
	mo_buf b = MO_BUF_INIT;
	char chunk[65536];
	ssize_t n;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return mo_error_set_native(errno == ENOENT ? MO_ENOTFOUND : MO_EIO, errno,
					   "%s: %s", path, strerror(errno));
	while ((n = read(fd, chunk, sizeof(chunk))) > 0) {
		if (mo_buf_put(&b, chunk, (size_t)n) < 0) {
			close(fd);
			mo_buf_free(&b);
			return MO_ENOMEM;
		}
	}
	if (n < 0) {
		int e = errno;
		close(fd);
		mo_buf_free(&b);
		return mo_error_set_native(MO_EIO, e, "%s: %s", path, strerror(e));
	}
	close(fd);
	if (!b.ptr && mo_buf_put(&b, "", 0) < 0)
		return MO_ENOMEM;
	*out = b.ptr;
	if (len)
		*len = b.len;
	return 0;
}

int mo_file_write_atomic(const char *path, const void *data, size_t len)
{
	char *tmp = mo_sprintf("%s.tmp.%ld", path, (long)getpid());
	int fd, rc = 0;
	const char *p = data;
	if (!tmp)
		return mo_error_set(MO_ENOMEM, "out of memory");
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0) {
		rc = mo_error_set_native(MO_EIO, errno, "%s: %s", tmp, strerror(errno));
		goto done;
	}
	while (len > 0) {
		ssize_t n = write(fd, p, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			rc = mo_error_set_native(MO_EIO, errno, "%s: %s", tmp, strerror(errno));
			close(fd);
			unlink(tmp);
			goto done;
		}
		p += n;
		len -= (size_t)n;
	}
	if (fsync(fd) < 0 || close(fd) < 0 || rename(tmp, path) < 0) {
		rc = mo_error_set_native(MO_EIO, errno, "%s: %s", path, strerror(errno));
		unlink(tmp);
	}
done:
	mo_free(tmp);
	return rc;
}

int mo_random(void *buf, size_t n)
{
	unsigned char *p = buf;
	while (n > 0) {
		ssize_t got = getrandom(p, n, 0);
		if (got < 0) {
			if (errno == EINTR)
				continue;
			return mo_error_set_native(MO_EIO, errno, "getrandom: %s", strerror(errno));
		}
		p += got;
		n -= (size_t)got;
	}
	return 0;
}

int mo_random_hex(char *out, size_t n)
{
	unsigned char raw[64];
	static const char hex[] = "0123456789abcdef";
	if (n > sizeof(raw))
		n = sizeof(raw);
	if (mo_random(raw, n) < 0)
		return MO_EIO;
	for (size_t i = 0; i < n; i++) {
		out[2 * i] = hex[raw[i] >> 4];
		out[2 * i + 1] = hex[raw[i] & 15];
	}
	out[2 * n] = '\0';
	return 0;
}

int mo_hex_digit(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

char *mo_pct_decode(const char *s, size_t n)
{
	char *out = mo_malloc(n + 1), *o = out;
	if (!out)
		return NULL;
	for (size_t i = 0; i < n; i++) {
		int hi, lo;
		if (s[i] != '%') {
			*o++ = s[i];
			continue;
		}
		if (i + 2 >= n || (hi = mo_hex_digit((unsigned char)s[i + 1])) < 0 ||
		    (lo = mo_hex_digit((unsigned char)s[i + 2])) < 0 || (hi | lo) == 0) {
			mo_free(out);
			return NULL;
		}
		*o++ = (char)(hi * 16 + lo);
		i += 2;
	}
	*o = '\0';
	return out;
}
