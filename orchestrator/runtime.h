/*
 * runtime.h - what one run of the engine hands to the drivers: the event
 * loop, HTTP retry and timeout settings, logging, and the interrupt flag.
 *
 * A mo_rt is owned by the caller of the executor (the CLI, the API server or
 * a test) and outlives every sandbox and task that points at it.  Only the
 * loop thread touches it, except `interrupted`, which a signal handler sets.
 */
#ifndef MO_RUNTIME_H
#define MO_RUNTIME_H

#include <signal.h>
#include <stdint.h>

typedef struct mo_loop mo_loop;

typedef struct {
	int max_retries;         /* transient failures retried this many times (default 5) */
	int backoff_base_ms;     /* first backoff; doubles each try, with full jitter (default 200) */
	int backoff_max_ms;      /* cap for one backoff and for Retry-After (default 10000) */
	long connect_timeout_ms; /* default 10000 */
	long timeout_ms;         /* whole request, unless the call sets timeout_ms (default 60000) */
	const char *ca_file;     /* extra CA bundle, or NULL */
} mo_http_config;

typedef void (*mo_log_fn)(void *ud, const char *who, const char *level, const char *msg);

typedef struct mo_rt {
	mo_loop *loop;
	mo_http_config http;
	mo_log_fn log;           /* may be NULL: logs are dropped */
	void *log_ud;
	volatile sig_atomic_t *interrupted; /* may be NULL */
	/* Driver state that lives for a run (drivers/ssh.c: worker threads and
	 * the connection cache), created lazily by the driver; whoever owns the
	 * mo_rt calls mo_rt_release() when the run is over. */
	void *ssh;
	void (*ssh_free)(void *ssh);
	/* Set by the executor while its journal batch is uncommitted: a driver
	 * that would start I/O at once (on another thread) must post the start
	 * to the loop instead (mo_loop_post), so no request leaves before its
	 * intent is durable.  libcurl transfers start in the loop anyway. */
	int defer_io;
	/* The plan's sensitive strings (a JSON array, borrowed), masked out of
	 * module logs; NULL when none. */
	const void *secrets;
} mo_rt;

/* Release driver state held by rt (accepts rt == NULL). */
static inline void mo_rt_release(mo_rt *rt)
{
	if (rt && rt->ssh && rt->ssh_free)
		rt->ssh_free(rt->ssh);
	if (rt) {
		rt->ssh = NULL;
		rt->ssh_free = NULL;
	}
}

/* Fill *cfg with the documented defaults. */
void mo_http_config_defaults(mo_http_config *cfg);

#endif
