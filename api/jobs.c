/*
 * jobs.c - the server's worker pool: a FIFO of jobs (onboard a package,
 * carry out an LCM operation, run a DevOps plan/apply/destroy) taken by a
 * few threads, each job one call into pkgm.c, lcm.c or devops.c, each run
 * with its own event loop inside mo_run().
 *
 * The queue itself is not persisted: the store is.  At start,
 * mo_api_jobs_resume() requeues whatever the records say was in flight
 * (an operation STARTING or PROCESSING, a package UPLOADING or PROCESSING,
 * a deployment planning or applying), so a restart resumes them; the
 * engine's journal resolves what a killed run left half done.
 */
#include "api_int.h"

#include <string.h>
#include <time.h>

struct mo_api_job {
	int kind;
	char id[64];
	char action[16];
	int64_t not_before;  /* monotonic ms: resumed work waits for a previous process's requests */
	mo_api_job *next;
};

static void *worker_main(void *ud);

typedef struct {
	mo_api *a;
	int slot;
} worker_arg;


int mo_api_jobs_start(mo_api *a)
{
	int n = a->cfg->workers > 0 ? a->cfg->workers : 1;
	if (n > MO_API_MAX_WORKERS)
		n = MO_API_MAX_WORKERS;
	for (int i = 0; i < n; i++) {
		worker_arg *wa = mo_malloc(sizeof(*wa));
		if (!wa)
			return mo_error_set(MO_ENOMEM, "out of memory");
		wa->a = a;
		wa->slot = i;
		if (pthread_create(&a->workers[i], NULL, worker_main, wa) != 0) {
			mo_free(wa);
			return mo_error_set(MO_ERROR, "cannot start a worker thread");
		}
		a->nworkers = i + 1;
	}
	return 0;
}

void mo_api_jobs_stop(mo_api *a)
{
	mo_api_job *j;
	pthread_mutex_lock(&a->qlock);
	a->stopping = 1;
	for (int i = 0; i < MO_API_MAX_WORKERS; i++)
		if (a->running[i].used)
			a->running[i].interrupted = 1;
	pthread_cond_broadcast(&a->qcond);
	pthread_mutex_unlock(&a->qlock);
	for (int i = 0; i < a->nworkers; i++)
		pthread_join(a->workers[i], NULL);
	a->nworkers = 0;
	while ((j = a->qhead)) {
		a->qhead = j->next;
		mo_free(j);
	}
	a->qtail = NULL;
}

static int job_push(mo_api *a, int kind, const char *id, const char *action, int64_t not_before)
{
	mo_api_job *j = mo_calloc(1, sizeof(*j));
	if (!j)
		return mo_error_set(MO_ENOMEM, "out of memory");
	j->kind = kind;
	j->not_before = not_before;
	snprintf(j->id, sizeof(j->id), "%s", id);
	snprintf(j->action, sizeof(j->action), "%s", action ? action : "");
	pthread_mutex_lock(&a->qlock);
	if (a->qtail)
		a->qtail->next = j;
	else
		a->qhead = j;
	a->qtail = j;
	pthread_cond_signal(&a->qcond);
	pthread_mutex_unlock(&a->qlock);
	return 0;
}

int mo_api_job_push(mo_api *a, int kind, const char *id, const char *action)
{
	return job_push(a, kind, id, action, 0);
}

int mo_api_job_interrupt(mo_api *a, const char *id)
{
	int found = 0;
	pthread_mutex_lock(&a->qlock);
	for (int i = 0; i < MO_API_MAX_WORKERS; i++) {
		if (a->running[i].used && !strcmp(a->running[i].id, id)) {
			a->running[i].cancelled = 1;
			a->running[i].interrupted = 1;
			found = 1;
		}
	}
	pthread_mutex_unlock(&a->qlock);
	return found;
}

int mo_api_job_unqueue(mo_api *a, const char *id)
{
	mo_api_job **pp, *prev = NULL;
	int found = 0;
	pthread_mutex_lock(&a->qlock);
	for (pp = &a->qhead; *pp;) {
		mo_api_job *j = *pp;
		if (!strcmp(j->id, id)) {
			*pp = j->next;
			if (a->qtail == j)
				a->qtail = prev;
			mo_free(j);
			found = 1;
			continue;
		}
		prev = j;
		pp = &j->next;
	}
	pthread_mutex_unlock(&a->qlock);
	return found;
}

static void *worker_main(void *ud)
{
	worker_arg *wa = ud;
	mo_api *a = wa->a;
	int slot = wa->slot;
	mo_free(wa);
	for (;;) {
		mo_api_job *j;
		mo_api_running *r = &a->running[slot];
		pthread_mutex_lock(&a->qlock);
		while (!a->stopping && !a->qhead)
			pthread_cond_wait(&a->qcond, &a->qlock);
		if (a->stopping) {
			pthread_mutex_unlock(&a->qlock);
			break;
		}
		j = a->qhead;
		a->qhead = j->next;
		if (!a->qhead)
			a->qtail = NULL;
		memset(r, 0, sizeof(*r));
		r->used = 1;
		r->kind = j->kind;
		snprintf(r->id, sizeof(r->id), "%s", j->id);
		while (!a->stopping && !r->interrupted && mo_now_ms() < j->not_before) {
			struct timespec ts;
			clock_gettime(CLOCK_REALTIME, &ts);
			ts.tv_nsec += 50 * 1000000L;
			if (ts.tv_nsec >= 1000000000L) {
				ts.tv_sec++;
				ts.tv_nsec -= 1000000000L;
			}
			pthread_cond_timedwait(&a->qcond, &a->qlock, &ts);
		}
		pthread_mutex_unlock(&a->qlock);

		mo_error_clear();
		switch (j->kind) {
		case MO_JOB_ONBOARD: mo_api_onboard_run(a, j->id, r); break;
		case MO_JOB_LCM: mo_api_lcm_run(a, j->id, r); break;
		case MO_JOB_DEVOPS: mo_api_devops_run(a, j->id, j->action, r); break;
		default: break;
		}
		mo_free(j);
		pthread_mutex_lock(&a->qlock);
		r->used = 0;
		pthread_mutex_unlock(&a->qlock);
	}
	return NULL;
}

int mo_api_jobs_resume(mo_api *a)
{
	json_t *all;
	size_t i;
	json_t *rec;
	int rc = 0;
	/* A process killed in the middle of a run may have requests still in
	 * flight at the providers; give them time to land before the engine's
	 * recovery reads back what the interrupted actions made. */
	int64_t nb = mo_now_ms() + a->cfg->resume_delay_ms;
	all = mo_api_store_all(a->st, MO_K_PKG);
	json_array_foreach(all, i, rec) {
		const char *s = mo_api_jstr(mo_api_rec_doc(rec), "onboardingState");
		if (s && (!strcmp(s, "UPLOADING") || !strcmp(s, "PROCESSING")) && rc == 0)
			rc = mo_api_job_push(a, MO_JOB_ONBOARD, mo_api_jstr(mo_api_rec_doc(rec), "id"), NULL);
	}
	json_decref(all);
	all = mo_api_store_all(a->st, MO_K_OP);
	json_array_foreach(all, i, rec) {
		const char *s = mo_api_jstr(mo_api_rec_doc(rec), "operationState");
		if (s && (!strcmp(s, "STARTING") || !strcmp(s, "PROCESSING")) && rc == 0)
			rc = job_push(a, MO_JOB_LCM, mo_api_jstr(mo_api_rec_doc(rec), "id"), NULL,
				      !strcmp(s, "PROCESSING") ? nb : 0);
	}
	json_decref(all);
	all = mo_api_store_all(a->st, MO_K_DEP);
	json_array_foreach(all, i, rec) {
		const char *pending = mo_api_jstr(mo_api_rec_int(rec), "pending");
		if (pending && rc == 0)
			rc = job_push(a, MO_JOB_DEVOPS, mo_api_jstr(mo_api_rec_doc(rec), "id"), pending, nb);
	}
	json_decref(all);
	return rc;
}
