/*
 * common.h - error convention, allocation wrappers and small helpers shared
 * by every subsystem of the mecorch core.
 *
 * Return convention (as libgit2): functions return int, 0 on success or a
 * negative MO_E* code.  The detail of the last error is kept per thread and
 * read with mo_error_last().  Adapters translate a library's native codes
 * (curl, SQLite, libgit2, libssh) once, storing the native code in
 * mo_error.native.
 *
 * Every allocation goes through mo_malloc & co. so tests can fail the Nth
 * allocation (mo_alloc_fail_after) and so Lua's allocator can account memory.
 */
#ifndef MO_COMMON_H
#define MO_COMMON_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#define MO_VERSION "0.1.0"

typedef enum {
	MO_OK = 0,
	MO_ERROR = -1,       /* generic failure */
	MO_ENOMEM = -2,      /* out of memory */
	MO_EINVAL = -3,      /* bad input: flag, plan, module return value */
	MO_ENOTFOUND = -4,   /* no such resource, file, lock */
	MO_ELOCKED = -5,     /* state lock held by someone else */
	MO_ESTALE = -6,      /* saved plan no longer matches the state */
	MO_EMODULE = -7,     /* a Lua module raised an error */
	MO_EIO = -8,         /* file or network I/O */
	MO_ESTATE = -9,      /* state store (SQLite) failure */
	MO_ECYCLE = -10,     /* dependency cycle */
	MO_EHTTP = -11,      /* HTTP transport failure after retries */
	MO_ELIMIT = -12,     /* sandbox instruction budget or memory cap */
	MO_EINTR = -13,      /* interrupted (Ctrl-C) */
	MO_EFAILED = -14,    /* some actions failed (apply summary) */
	MO_ESOURCE = -15,    /* module source could not be resolved */
} mo_code;

typedef struct {
	int code;            /* mo_code */
	int native;          /* library code (CURLcode, SQLite rc, ...) or 0 */
	char message[1024];
} mo_error;

/* Set the thread's last error; returns code so callers can
 * `return mo_error_set(MO_EINVAL, "...")`. */
int mo_error_set(int code, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
int mo_error_setv(int code, const char *fmt, va_list ap);
/* As mo_error_set, recording a library's native code too. */
int mo_error_set_native(int code, int native, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* Prefix the current message with "prefix: " (adds context as an error
 * travels up); returns the current code. */
int mo_error_prefix(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
const mo_error *mo_error_last(void);
void mo_error_clear(void);
/* Human name of a code ("locked", "module error", ...). */
const char *mo_code_name(int code);
/* CLI exit status for a code; documented in docs/cli.md. */
int mo_code_exit_status(int code);

/* Allocation wrappers.  mo_free accepts NULL. */
void *mo_malloc(size_t n);
void *mo_calloc(size_t n, size_t size);
void *mo_realloc(void *p, size_t n);
void mo_free(void *p);
char *mo_strdup(const char *s);
char *mo_strndup(const char *s, size_t n);
char *mo_sprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Test hook: make the Nth following allocation (1-based) and every one
 * after it fail; 0 disables. */
void mo_alloc_fail_after(long n);

/* A growable byte buffer, always NUL-terminated. */
typedef struct {
	char *ptr;
	size_t len, cap;
} mo_buf;
/* clang-format off */
#define MO_BUF_INIT { NULL, 0, 0 }
/* clang-format on */
int mo_buf_put(mo_buf *b, const void *data, size_t n);
int mo_buf_puts(mo_buf *b, const char *s);
int mo_buf_printf(mo_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void mo_buf_free(mo_buf *b);

/* Monotonic clock in milliseconds / microseconds. */
int64_t mo_now_ms(void);
int64_t mo_now_us(void);
/* Wall clock, seconds since the epoch. */
int64_t mo_wall_s(void);

/* Read a whole file; *out is the caller's (mo_free). */
int mo_file_read(char **out, size_t *len, const char *path);
/* Write a file atomically (temp file + fsync + rename). */
int mo_file_write_atomic(const char *path, const void *data, size_t len);

/* Random bytes from the OS; hex-encoded random id of 2*n chars into out
 * (out must hold 2*n+1). */
int mo_random(void *buf, size_t n);
int mo_random_hex(char *out, size_t n);

/* The value of hexadecimal digit c, or -1. */
int mo_hex_digit(int c);
/* %XX-decode n bytes of s into a new string (mo_free); NULL on a bad or
 * %00 escape, or out of memory. */
char *mo_pct_decode(const char *s, size_t n);

#define MO_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

#endif
