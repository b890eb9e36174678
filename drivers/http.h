/*
 * http.h - the HTTP driver: a C request engine on the executor's event loop
 * and the Lua binding ctx.http.request / ctx.sleep (drivers.h).
 *
 * A request is submitted to the runtime's loop and completes through a
 * callback on the loop thread; nothing blocks.  The engine copies what it
 * needs from the request, so the caller's structure may go away as soon as
 * mo_http_submit() returns.
 *
 * Retries.  Transient failures are retried up to rt->http.max_retries times
 * with exponential backoff and full jitter: the wait before retry n
 * (n = 0, 1, ...) is random(0, min(backoff_max_ms, backoff_base_ms * 2^n)),
 * armed as a loop timer.
 *   - always retried: connection failures (could not resolve / connect,
 *     send / receive errors, empty reply) and status 429;
 *   - retried when the method is idempotent: timeouts and 5xx.  GET, HEAD,
 *     PUT, DELETE and OPTIONS are; POST and PATCH only when the request says
 *     so (idempotent = 1) or carries an Idempotency-Key header.
 * A Retry-After header (delta-seconds or HTTP-date) on a 429 or 503 replaces
 * the jittered wait, capped at backoff_max_ms.  A status listed in the
 * request's expect set is never retried.  Once *rt->interrupted is set no
 * new attempt starts: the last result is reported.
 *
 * Secrets (tokens, passwords, AWS keys) are never logged or put in error
 * messages; user:password@ in a URL is masked in messages.
 *
 * Cancellation.  mo_http_start() returns a handle that mo_http_abort() uses
 * to withdraw a request: its callback is then never called.  For the Lua
 * binding the executor should call mo_http_cancel_task() before freeing a
 * task that may be waiting in ctx.http.request or ctx.sleep (an aborted
 * run): that stops the transfer or timer at once.  Without it the wait runs
 * to its end and its result is dropped, because a completion first checks
 * that the task is still the one its thread belongs to (the binding keeps
 * the thread alive; mo_task_free() clears the thread's task pointer).
 * Closing a sandbox's lua_State withdraws every request and sleep of its
 * tasks (a finalizer guards each one).  Either way a completion never
 * touches a freed task or state.
 */
#ifndef MO_HTTP_H
#define MO_HTTP_H

#include <stddef.h>
#include <stdint.h>

typedef struct mo_rt mo_rt;
typedef struct mo_task mo_task;

typedef enum {
	MO_HTTP_AUTH_NONE = 0,
	MO_HTTP_AUTH_BEARER,    /* Authorization: Bearer <token> */
	MO_HTTP_AUTH_BASIC,     /* user, password */
	MO_HTTP_AUTH_AWS_SIGV4, /* access_key, secret_key, region, service, session_token */
} mo_http_auth_type;

typedef struct {
	mo_http_auth_type type;
	const char *token;
	const char *user, *password;
	const char *access_key, *secret_key;
	const char *region, *service;
	const char *session_token; /* optional: sent as x-amz-security-token */
} mo_http_auth;

typedef struct {
	const char *name;
	const char *value;
} mo_http_header;

typedef struct {
	const char *method;             /* "GET" when NULL; upper case */
	const char *url;
	const mo_http_header *headers;  /* nheaders entries; CR/LF are refused */
	size_t nheaders;
	const void *body;               /* NULL: no body */
	size_t body_len;
	long timeout_ms;                /* whole request; 0: rt->http.timeout_ms */
	mo_http_auth auth;
	const char *unix_socket;        /* connect to this socket instead of host:port */
	int idempotent;                 /* POST / PATCH may be retried on timeout / 5xx */
	const int *expect;              /* accepted statuses (nexpect); none: any */
	size_t nexpect;
} mo_http_request;

/*
 * The outcome handed to the callback.  Everything it points to belongs to
 * the engine and is valid only during the callback.
 *
 * code is 0 when a response was received whose status is in the expect set
 * (or no set was given); otherwise MO_EHTTP and error says why:
 *   transport failure: "GET http://h/x: Couldn't connect to server (...)
 *     after 6 attempts" (status 0, curl_code set);
 *   unexpected status: "POST http://h/v1/x: expected 200/201, got 500:
 *     <first 200 bytes of the body>" (status and body set).
 */
typedef struct {
	int code;
	int status;                     /* 0 when no response was received */
	int curl_code;                  /* CURLcode of the last attempt */
	const char *error;              /* NULL when code == 0 */
	const mo_http_header *headers;  /* names lower case, in arrival order */
	size_t nheaders;
	const char *body;               /* NUL-terminated; body_len excludes the NUL */
	size_t body_len;
	int attempts;                   /* transfers made, >= 1 */
	int64_t elapsed_ms;             /* from submit to completion */
} mo_http_response;

typedef void (*mo_http_done_cb)(const mo_http_response *res, void *ud);

typedef struct mo_http_call mo_http_call;

/* Start a request on rt->loop; cb(res, ud) runs on the loop thread when it
 * has completed, after any retries.  Returns 0, or MO_EINVAL (bad request:
 * no URL, header with CR/LF, incomplete auth) / MO_ENOMEM, in which case
 * cb is never called.  Call on the loop thread. */
int mo_http_submit(mo_rt *rt, const mo_http_request *req, mo_http_done_cb cb, void *ud);

/* As mo_http_submit(), also giving a handle to the request in *out; the
 * handle is valid until cb is called or mo_http_abort() returns. */
int mo_http_start(mo_http_call **out, mo_rt *rt, const mo_http_request *req,
		  mo_http_done_cb cb, void *ud);

/* Withdraw a request: cb will not be called.  A request waiting for a
 * retry is freed at once; a transfer in flight is stopped on the loop's
 * next pass (curl's progress callback refuses to go on) and freed then.
 * Accepts NULL. */
void mo_http_abort(mo_http_call *call);

/* Withdraw the ctx.http.request or ctx.sleep the task is waiting in, if
 * any, so the task can be freed.  The task stays suspended; nothing is
 * pushed onto its thread.  Call on the loop thread before mo_task_free(). */
void mo_http_cancel_task(mo_task *t);

#endif
