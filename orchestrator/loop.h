/*
 * loop.h - the executor's single-threaded event loop: libcurl multi
 * transfers, timers, and callbacks posted from other threads (the SSH and
 * git thread pool).
 *
 * Everything but mo_loop_post() and mo_loop_wakeup() must be called on the
 * loop thread.  Callbacks run on the loop thread from mo_loop_run_once().
 */
#ifndef MO_LOOP_H
#define MO_LOOP_H

#include <curl/curl.h>
#include <stdint.h>

typedef struct mo_loop mo_loop;

typedef void (*mo_loop_cb)(void *ud);
/* Called when a transfer finishes; the easy handle is already removed from
 * the multi handle and belongs to the callback again. */
typedef void (*mo_loop_curl_cb)(CURL *easy, CURLcode rc, void *ud);

int mo_loop_new(mo_loop **out);
/* Frees the loop; pending timers and posts are dropped, in-flight easy
 * handles are removed (their callbacks are not called). Accepts NULL. */
void mo_loop_free(mo_loop *loop);

/* Run cb(ud) once, delay_ms from now.  *id (optional) names the timer. */
int mo_loop_timer(mo_loop *loop, int64_t delay_ms, mo_loop_cb cb, void *ud, uint64_t *id);
void mo_loop_timer_cancel(mo_loop *loop, uint64_t id);

/* Start a transfer; cb runs when it completes.  The loop owns the easy
 * handle's CURLOPT_PRIVATE while the transfer runs. */
int mo_loop_add_curl(mo_loop *loop, CURL *easy, mo_loop_curl_cb cb, void *ud);

/* Thread-safe: run cb(ud) on the loop thread soon. */
int mo_loop_post(mo_loop *loop, mo_loop_cb cb, void *ud);
/* Thread-safe, async-signal-safe enough for a SIGINT handler: make a
 * blocked mo_loop_run_once() return early. */
void mo_loop_wakeup(mo_loop *loop);

/* Wait up to max_wait_ms for I/O, a due timer or a post, then dispatch
 * every ready callback.  Returns 0 or a negative MO_E* code. */
int mo_loop_run_once(mo_loop *loop, int max_wait_ms);

/* Run the loop until no transfer is in flight, for at most max_ms: lets
 * aborted transfers (mo_http_abort) reach their done callback, which frees
 * them, before the loop is freed. */
void mo_loop_drain(mo_loop *loop, int max_ms);

/* Transfers in flight + timers armed + posts queued. */
int mo_loop_pending(const mo_loop *loop);

#endif
