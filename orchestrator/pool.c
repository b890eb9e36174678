/*
 * pool.c - worker threads for blocking jobs, reporting back to the loop
 * (pool.h).
 *
 * One mutex guards the queue (a FIFO list), the set of keys running now
 * (one slot per worker) and the counters.  A worker takes the first queued
 * job whose key is free, so a busy key holds back only its own jobs.  When
 * a keyed job ends, every waiting worker is woken: one of them may now take
 * a job of that key.  A job's done callback is posted to the loop after its
 * work returns and after its key is released, so the next job of the same
 * key may already run while done executes on the loop thread.
 */
#include "pool.h"
#include "common.h"

#include <pthread.h>
#include <string.h>
#include <time.h>

#define POOL_MAX_THREADS 256

typedef struct pool_job {
	const void *key;
	mo_pool_fn work;
	mo_loop_cb done;
	void *ud;
	struct pool_job *next;
} pool_job;

struct mo_pool {
	mo_loop *loop;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	pool_job *head, *tail;
	pthread_t *threads;
	const void **running; /* key of the job each worker runs (NULL: none or unkeyed) */
	int size;             /* maximum number of workers */
	int nthreads;         /* workers started */
	int idle;             /* workers waiting for a job */
	int queued;           /* jobs in the queue */
	int stopping;
};

/* The first queued job that may start now, unlinked; NULL if none.  Caller
 * holds p->mu. */
static pool_job *take_job(mo_pool *p)
{
	pool_job *prev = NULL;
	for (pool_job *j = p->head; j; prev = j, j = j->next) {
		int busy = 0;
		if (j->key)
			for (int i = 0; i < p->nthreads && !busy; i++)
				busy = p->running[i] == j->key;
		if (busy)
			continue;
		if (prev)
			prev->next = j->next;
		else
			p->head = j->next;
		if (p->tail == j)
			p->tail = prev;
		j->next = NULL;
		p->queued--;
		return j;
	}
	return NULL;
}

/* Post done(ud) to the loop; an allocation failure is retried (the task
 * waiting for it would otherwise never wake) unless the pool is stopping. */
static void post_done(mo_pool *p, pool_job *j)
{
	struct timespec ts = { 0, 10 * 1000 * 1000 };
	while (mo_loop_post(p->loop, j->done, j->ud) < 0) {
		int stopping;
		pthread_mutex_lock(&p->mu);
		stopping = p->stopping;
		pthread_mutex_unlock(&p->mu);
		if (stopping)
			return;
		nanosleep(&ts, NULL);
	}
}

typedef struct {
	mo_pool *p;
	int slot;
} worker_arg;

static void *worker_main(void *arg)
{
	mo_pool *p = ((worker_arg *)arg)->p;
	int slot = ((worker_arg *)arg)->slot;
	pool_job *j;

	mo_free(arg);
	pthread_mutex_lock(&p->mu);
	for (;;) {
		j = NULL;
		while (!p->stopping && !(j = take_job(p))) {
			p->idle++;
			pthread_cond_wait(&p->cv, &p->mu);
			p->idle--;
		}
		if (!j)
			break;
		p->running[slot] = j->key;
		pthread_mutex_unlock(&p->mu);

		j->work(j->ud);

		pthread_mutex_lock(&p->mu);
		p->running[slot] = NULL;
		if (j->key)
			pthread_cond_broadcast(&p->cv);
		pthread_mutex_unlock(&p->mu);
		if (j->done)
			post_done(p, j);
		mo_free(j);
		pthread_mutex_lock(&p->mu);
	}
	pthread_mutex_unlock(&p->mu);
	return NULL;
}

int mo_pool_new(mo_pool **out, mo_loop *loop, int nthreads)
{
	mo_pool *p;

	*out = NULL;
	if (!loop || nthreads < 1 || nthreads > POOL_MAX_THREADS)
		return mo_error_set(MO_EINVAL, "thread pool: size must be 1 to %d, not %d",
				    POOL_MAX_THREADS, nthreads);
	if (!(p = mo_calloc(1, sizeof(*p))))
		return mo_error_set(MO_ENOMEM, "out of memory");
	p->threads = mo_calloc((size_t)nthreads, sizeof(*p->threads));
	p->running = mo_calloc((size_t)nthreads, sizeof(*p->running));
	if (!p->threads || !p->running) {
		mo_free(p->threads);
		mo_free(p->running);
		mo_free(p);
		return mo_error_set(MO_ENOMEM, "out of memory");
	}
	p->loop = loop;
	p->size = nthreads;
	pthread_mutex_init(&p->mu, NULL);
	pthread_cond_init(&p->cv, NULL);
	*out = p;
	return 0;
}

int mo_pool_size(const mo_pool *p)
{
	return p->size;
}

int mo_pool_submit(mo_pool *p, const void *key, mo_pool_fn work, mo_loop_cb done, void *ud)
{
	pool_job *j = mo_calloc(1, sizeof(*j));
	int rc = 0;

	if (!j)
		return mo_error_set(MO_ENOMEM, "out of memory");
	j->key = key;
	j->work = work;
	j->done = done;
	j->ud = ud;
	pthread_mutex_lock(&p->mu);
	if (p->stopping) {
		pthread_mutex_unlock(&p->mu);
		mo_free(j);
		return mo_error_set(MO_ERROR, "thread pool: stopped");
	}
	/* Another worker when the queue (this job included) outnumbers the
	 * idle workers -- an idle worker already signalled may not have taken
	 * its job yet -- and the pool may grow.  Failing to start one is fine
	 * as long as some worker exists to run the job eventually. */
	if (p->queued + 1 > p->idle && p->nthreads < p->size) {
		worker_arg *a = mo_malloc(sizeof(*a));
		if (a) {
			a->p = p;
			a->slot = p->nthreads;
			if (pthread_create(&p->threads[p->nthreads], NULL, worker_main, a) == 0)
				p->nthreads++;
			else
				mo_free(a);
		}
		if (p->nthreads == 0) {
			rc = mo_error_set(MO_ERROR, "thread pool: cannot start a worker thread");
			goto done;
		}
	}
	if (p->tail)
		p->tail->next = j;
	else
		p->head = j;
	p->tail = j;
	p->queued++;
	j = NULL;
	pthread_cond_signal(&p->cv);
done:
	pthread_mutex_unlock(&p->mu);
	mo_free(j);
	return rc;
}

void mo_pool_free(mo_pool *p)
{
	pool_job *j;

	if (!p)
		return;
	pthread_mutex_lock(&p->mu);
	p->stopping = 1;
	pthread_cond_broadcast(&p->cv);
	pthread_mutex_unlock(&p->mu);
	for (int i = 0; i < p->nthreads; i++)
		pthread_join(p->threads[i], NULL);
	while ((j = p->head)) {
		p->head = j->next;
		mo_free(j);
	}
	pthread_cond_destroy(&p->cv);
	pthread_mutex_destroy(&p->mu);
	mo_free(p->threads);
	mo_free(p->running);
	mo_free(p);
}
