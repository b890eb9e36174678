/*
 * pool.h - a small pool of worker threads for blocking work (SSH sessions,
 * and anything else that has no non-blocking API), whose jobs report back
 * to the event loop.
 *
 * A job is a work function run on a worker thread, then an optional done
 * callback run on the loop thread (posted with mo_loop_post), both given
 * the job's ud.  Jobs submitted with the same non-NULL key never run at the
 * same time and start in submission order; a job whose key is busy is
 * passed over, so other keys keep every worker busy (one connection per
 * key, many connections in parallel).  Jobs with a NULL key are unordered.
 *
 * Workers are started on demand, up to the pool's size.  Everything here
 * is thread-safe except mo_pool_free().
 */
#ifndef MO_POOL_H
#define MO_POOL_H

#include "loop.h"

typedef struct mo_pool mo_pool;

typedef void (*mo_pool_fn)(void *ud);

/* Create a pool of at most nthreads (1..256) workers whose done callbacks
 * go to loop.  *out is the caller's (mo_pool_free). */
int mo_pool_new(mo_pool **out, mo_loop *loop, int nthreads);

/* Queue a job: work(ud) on a worker, then done(ud) (when not NULL) on the
 * loop thread.  key: serialisation key or NULL.  Returns 0, MO_ENOMEM, or
 * MO_ERROR when no worker thread exists and none can be started (then the
 * job is not queued and neither function will be called). */
int mo_pool_submit(mo_pool *p, const void *key, mo_pool_fn work, mo_loop_cb done, void *ud);

/* The pool's size (its maximum number of workers). */
int mo_pool_size(const mo_pool *p);

/* Stop the pool: jobs running now finish (and post their done), jobs not
 * yet started are dropped (neither work nor done is called: their ud stays
 * the submitter's), then the workers are joined and the pool freed.  Done
 * callbacks already posted stay queued on the loop.  Call from the thread
 * that owns the pool, never from a job.  Accepts NULL. */
void mo_pool_free(mo_pool *p);

#endif
