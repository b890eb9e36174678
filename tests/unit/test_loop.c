/*
 * test_loop.c - the event loop: timer order and cancellation, callbacks
 * posted from another thread waking a blocked pass, and many concurrent
 * curl transfers against a real libmicrohttpd server on 127.0.0.1.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "common.h"
#include "loop.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define NCONCURRENT 200

/* ---- server: /ok, and /barrier which answers only once NCONCURRENT
 * requests are waiting in it at the same time ----------------------------- */

static struct {
	struct MHD_Daemon *d;
	int port;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int arrived;
	int connections;   /* TCP connections accepted */
} srv;

static void on_connection(void *cls, struct MHD_Connection *c, void **socket_ctx,
			  enum MHD_ConnectionNotificationCode code)
{
	(void)cls, (void)c, (void)socket_ctx;
	if (code == MHD_CONNECTION_NOTIFY_STARTED) {
		pthread_mutex_lock(&srv.mu);
		srv.connections++;
		pthread_mutex_unlock(&srv.mu);
	}
}

static enum MHD_Result handler(void *cls, struct MHD_Connection *c, const char *url,
			       const char *method, const char *version, const char *data,
			       size_t *data_size, void **con_cls)
{
	static int marker;
	struct MHD_Response *resp;
	enum MHD_Result ret;
	char body[64];
	int status = 200;
	(void)cls, (void)method, (void)version, (void)data, (void)data_size;

	if (!*con_cls) {
		*con_cls = &marker;
		return MHD_YES;
	}
	if (strcmp(url, "/barrier") == 0) {
		struct timespec until;
		int n;
		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_sec += 60;
		pthread_mutex_lock(&srv.mu);
		n = ++srv.arrived;
		pthread_cond_broadcast(&srv.cv);
		while (srv.arrived < NCONCURRENT)
			if (pthread_cond_timedwait(&srv.cv, &srv.mu, &until) != 0)
				break;
		if (srv.arrived < NCONCURRENT)
			status = 503; /* the client did not run them concurrently */
		pthread_mutex_unlock(&srv.mu);
		snprintf(body, sizeof(body), "%d", n);
	} else {
		snprintf(body, sizeof(body), "ok");
	}
	resp = MHD_create_response_from_buffer(strlen(body), body, MHD_RESPMEM_MUST_COPY);
	ret = MHD_queue_response(c, (unsigned)status, resp);
	MHD_destroy_response(resp);
	return ret;
}

static int group_setup(void **state)
{
	struct sockaddr_in sin;
	(void)state;
	pthread_mutex_init(&srv.mu, NULL);
	pthread_cond_init(&srv.cv, NULL);
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	srv.d = MHD_start_daemon(MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD |
					 MHD_USE_POLL,
				 0, NULL, NULL, handler, NULL, MHD_OPTION_SOCK_ADDR, &sin,
				 MHD_OPTION_CONNECTION_LIMIT, (unsigned)(4 * NCONCURRENT),
				 MHD_OPTION_NOTIFY_CONNECTION, on_connection, NULL,
				 MHD_OPTION_LISTEN_BACKLOG_SIZE, (unsigned)(2 * NCONCURRENT),
				 MHD_OPTION_END);
	if (!srv.d)
		return -1;
	srv.port = MHD_get_daemon_info(srv.d, MHD_DAEMON_INFO_BIND_PORT)->port;
	return 0;
}

static int group_teardown(void **state)
{
	(void)state;
	MHD_stop_daemon(srv.d);
	return 0;
}

/* ---- timers ------------------------------------------------------------- */

typedef struct {
	int order[64];
	int n;
	mo_loop *loop;
	uint64_t cancel_me;
	int rearm;
} trace;

typedef struct {
	trace *tr;
	int tag;
} tagged;

static void record(void *ud)
{
	tagged *t = ud;
	t->tr->order[t->tr->n++] = t->tag;
}

static void drain(mo_loop *loop)
{
	while (mo_loop_pending(loop) > 0)
		assert_int_equal(mo_loop_run_once(loop, 1000), 0);
}

/* The delays are STEP ms apart: a timer's due time counts from its own
 * arming, so the order holds as long as arming all five takes less than
 * STEP, which a preempted thread on a loaded machine easily exceeds at 10. */
static void test_loop_timer_order(void **state)
{
	enum { STEP = 400 };
	mo_loop *loop;
	trace tr = { 0 };
	tagged a = { &tr, 30 }, b = { &tr, 10 }, c = { &tr, 20 }, d = { &tr, 0 }, e = { &tr, 11 };
	(void)state;

	assert_int_equal(mo_loop_new(&loop), 0);
	assert_int_equal(mo_loop_timer(loop, 3 * STEP, record, &a, NULL), 0);
	assert_int_equal(mo_loop_timer(loop, STEP, record, &b, NULL), 0);
	assert_int_equal(mo_loop_timer(loop, 2 * STEP, record, &c, NULL), 0);
	assert_int_equal(mo_loop_timer(loop, 0, record, &d, NULL), 0);
	/* same delay as b, armed later: runs after it */
	assert_int_equal(mo_loop_timer(loop, STEP, record, &e, NULL), 0);
	assert_int_equal(mo_loop_pending(loop), 5);
	drain(loop);
	assert_int_equal(tr.n, 5);
	assert_int_equal(tr.order[0], 0);
	assert_int_equal(tr.order[1], 10);
	assert_int_equal(tr.order[2], 11);
	assert_int_equal(tr.order[3], 20);
	assert_int_equal(tr.order[4], 30);
	mo_loop_free(loop);
}

/* Many timers with random delays, a third cancelled: every live one runs
 * once, in due order; no cancelled one runs. */
typedef struct {
	int64_t lo, hi;  /* bounds of its due time, measured around arming */
	uint64_t id;
	int cancelled, ran;
	int *seq, *nseq, self;
} heap_item;

static void heap_ran(void *ud)
{
	heap_item *it = ud;
	it->ran++;
	it->seq[(*it->nseq)++] = it->self;
}

static void test_loop_timer_heap(void **state)
{
	enum { N = 3000 };
	mo_loop *loop;
	heap_item *items = calloc(N, sizeof(*items));
	int *seq = calloc(N, sizeof(*seq)), nseq = 0;
	unsigned seed = 12345;
	(void)state;

	assert_int_equal(mo_loop_new(&loop), 0);
	for (int i = 0; i < N; i++) {
		int64_t delay = (int64_t)(rand_r(&seed) % 120);
		items[i].seq = seq;
		items[i].nseq = &nseq;
		items[i].self = i;
		items[i].lo = mo_now_ms() + delay;
		assert_int_equal(mo_loop_timer(loop, delay, heap_ran, &items[i], &items[i].id), 0);
		items[i].hi = mo_now_ms() + delay;
	}
	for (int i = 0; i < N; i += 3) {
		mo_loop_timer_cancel(loop, items[i].id);
		items[i].cancelled = 1;
	}
	mo_loop_timer_cancel(loop, items[0].id); /* twice: harmless */
	assert_int_equal(mo_loop_pending(loop), N - (N + 2) / 3);
	drain(loop);
	for (int i = 0; i < N; i++)
		assert_int_equal(items[i].ran, items[i].cancelled ? 0 : 1);
	assert_int_equal(nseq, N - (N + 2) / 3);
	for (int k = 1; k < nseq; k++) {
		heap_item *p = &items[seq[k - 1]], *q = &items[seq[k]];
		/* p ran first, so p's due time can't be after q's */
		assert_false(p->lo > q->hi);
	}
	/* cancelling a timer that already ran is a no-op */
	mo_loop_timer_cancel(loop, items[1].id);
	assert_int_equal(mo_loop_pending(loop), 0);
	mo_loop_free(loop);
	free(items);
	free(seq);
}

static void cancel_other(void *ud)
{
	trace *tr = ud;
	tr->order[tr->n++] = 1;
	mo_loop_timer_cancel(tr->loop, tr->cancel_me);
}

static void rearm(void *ud)
{
	tagged *t = ud;
	t->tr->order[t->tr->n++] = t->tag;
	if (t->tr->rearm-- > 0)
		assert_int_equal(mo_loop_timer(t->tr->loop, 0, rearm, t, NULL), 0);
}

static void test_loop_timer_cancel(void **state)
{
	mo_loop *loop;
	trace tr = { 0 };
	tagged a = { &tr, 7 }, b = { &tr, 8 }, c = { &tr, 9 };
	uint64_t ida, idb, idc;
	(void)state;

	assert_int_equal(mo_loop_new(&loop), 0);
	tr.loop = loop;
	assert_int_equal(mo_loop_timer(loop, 5, record, &a, &ida), 0);
	assert_int_equal(mo_loop_timer(loop, 5, record, &b, &idb), 0);
	assert_int_equal(mo_loop_timer(loop, 5, record, &c, &idc), 0);
	assert_true(ida != idb && idb != idc);
	mo_loop_timer_cancel(loop, idb);
	assert_int_equal(mo_loop_pending(loop), 2);
	drain(loop);
	assert_int_equal(tr.n, 2);
	assert_int_equal(tr.order[0], 7);
	assert_int_equal(tr.order[1], 9);

	/* A callback cancels a timer due in the same pass. */
	tr.n = 0;
	assert_int_equal(mo_loop_timer(loop, 0, cancel_other, &tr, NULL), 0);
	assert_int_equal(mo_loop_timer(loop, 0, record, &a, &tr.cancel_me), 0);
	assert_int_equal(mo_loop_run_once(loop, 1000), 0);
	assert_int_equal(tr.n, 1);
	assert_int_equal(mo_loop_pending(loop), 0);

	/* A zero-delay timer armed by a callback waits for the next pass. */
	tr.n = 0;
	tr.rearm = 3;
	assert_int_equal(mo_loop_timer(loop, 0, rearm, &c, NULL), 0);
	assert_int_equal(mo_loop_run_once(loop, 1000), 0);
	assert_int_equal(tr.n, 1);
	assert_int_equal(mo_loop_pending(loop), 1);
	drain(loop);
	assert_int_equal(tr.n, 4);

	/* Freeing the loop drops armed timers. */
	assert_int_equal(mo_loop_timer(loop, 100000, record, &a, NULL), 0);
	mo_loop_free(loop);
}

/* ---- posts and wake-ups from other threads ------------------------------ */

typedef struct {
	mo_loop *loop;
	int ran;
	int wake_only;
} poster;

static void posted(void *ud)
{
	poster *p = ud;
	p->ran++;
}

static void *post_thread(void *ud)
{
	poster *p = ud;
	usleep(100 * 1000); /* let the main thread block first */
	if (p->wake_only)
		mo_loop_wakeup(p->loop);
	else
		assert_int_equal(mo_loop_post(p->loop, posted, p), 0);
	return NULL;
}

static void test_loop_post_thread(void **state)
{
	mo_loop *loop;
	poster p = { 0 };
	pthread_t th;
	(void)state;

	assert_int_equal(mo_loop_new(&loop), 0);
	p.loop = loop;
	/* The pass has no bound and nothing else to wait for: only the post
	 * can end it (the alarm fails the test if it does not). */
	alarm(60);
	pthread_create(&th, NULL, post_thread, &p);
	assert_int_equal(mo_loop_run_once(loop, -1), 0);
	pthread_join(th, NULL);
	assert_int_equal(p.ran, 1);
	assert_int_equal(mo_loop_pending(loop), 0);

	/* mo_loop_wakeup() alone ends a blocked pass. */
	p.wake_only = 1;
	pthread_create(&th, NULL, post_thread, &p);
	assert_int_equal(mo_loop_run_once(loop, -1), 0);
	pthread_join(th, NULL);
	assert_int_equal(p.ran, 1);

	/* Posts queued before a pass make it not wait. */
	assert_int_equal(mo_loop_post(loop, posted, &p), 0);
	assert_int_equal(mo_loop_post(loop, posted, &p), 0);
	assert_int_equal(mo_loop_pending(loop), 2);
	assert_int_equal(mo_loop_run_once(loop, -1), 0);
	assert_int_equal(p.ran, 3);
	alarm(0);

	/* Freeing the loop drops queued posts. */
	assert_int_equal(mo_loop_post(loop, posted, &p), 0);
	mo_loop_free(loop);
	assert_int_equal(p.ran, 3);
}

/* ---- transfers ---------------------------------------------------------- */

typedef struct {
	CURL *easy;
	mo_buf body;
	CURLcode rc;
	long status;
	int done;
	int *ndone;
} xfer;

static size_t on_body(char *data, size_t size, size_t n, void *ud)
{
	xfer *x = ud;
	mo_buf_put(&x->body, data, size * n);
	return size * n;
}

static void on_xfer(CURL *easy, CURLcode rc, void *ud)
{
	xfer *x = ud;
	x->rc = rc;
	curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &x->status);
	x->done++;
	(*x->ndone)++;
}

static void xfer_start(mo_loop *loop, xfer *x, const char *path, int *ndone)
{
	char url[128];
	snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", srv.port, path);
	if (!x->easy)
		x->easy = curl_easy_init();
	x->body.len = 0;
	x->done = 0;
	x->ndone = ndone;
	curl_easy_setopt(x->easy, CURLOPT_URL, url);
	curl_easy_setopt(x->easy, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(x->easy, CURLOPT_WRITEDATA, x);
	curl_easy_setopt(x->easy, CURLOPT_TIMEOUT_MS, 120000L);
	assert_int_equal(mo_loop_add_curl(loop, x->easy, on_xfer, x), 0);
}

static void test_loop_concurrent_transfers(void **state)
{
	mo_loop *loop;
	xfer *xs = calloc(NCONCURRENT, sizeof(*xs));
	int ndone = 0;
	int seen[NCONCURRENT + 1] = { 0 };
	(void)state;

	assert_int_equal(mo_loop_new(&loop), 0);
	srv.arrived = 0;
	for (int i = 0; i < NCONCURRENT; i++)
		xfer_start(loop, &xs[i], "/barrier", &ndone);
	assert_int_equal(mo_loop_pending(loop), NCONCURRENT);
	while (ndone < NCONCURRENT)
		assert_int_equal(mo_loop_run_once(loop, 1000), 0);
	assert_int_equal(mo_loop_pending(loop), 0);
	/* Every request got through the barrier: all were in flight at once. */
	for (int i = 0; i < NCONCURRENT; i++) {
		int n;
		assert_int_equal(xs[i].rc, CURLE_OK);
		assert_int_equal(xs[i].status, 200);
		assert_int_equal(xs[i].done, 1);
		n = atoi(xs[i].body.ptr);
		assert_true(n >= 1 && n <= NCONCURRENT);
		seen[n]++;
	}
	for (int n = 1; n <= NCONCURRENT; n++)
		assert_int_equal(seen[n], 1);

	/* The same handles run again on the now warm connections. */
	ndone = 0;
	for (int i = 0; i < NCONCURRENT; i++)
		xfer_start(loop, &xs[i], "/ok", &ndone);
	while (ndone < NCONCURRENT)
		assert_int_equal(mo_loop_run_once(loop, 1000), 0);
	for (int i = 0; i < NCONCURRENT; i++) {
		assert_int_equal(xs[i].status, 200);
		assert_string_equal(xs[i].body.ptr, "ok");
	}
	mo_loop_free(loop);
	for (int i = 0; i < NCONCURRENT; i++) {
		curl_easy_cleanup(xs[i].easy);
		mo_buf_free(&xs[i].body);
	}
	free(xs);
}

static void test_loop_connection_reuse(void **state)
{
	mo_loop *loop;
	xfer xs[20];
	int ndone = 0, before;
	(void)state;

	memset(xs, 0, sizeof(xs));
	assert_int_equal(mo_loop_new(&loop), 0);
	pthread_mutex_lock(&srv.mu);
	before = srv.connections;
	pthread_mutex_unlock(&srv.mu);
	/* One after the other, each on its own easy handle: the multi
	 * handle's connection cache serves them all from one connection. */
	for (int i = 0; i < 20; i++) {
		xfer_start(loop, &xs[i], "/ok", &ndone);
		while (ndone < i + 1)
			assert_int_equal(mo_loop_run_once(loop, 1000), 0);
		assert_int_equal(xs[i].status, 200);
	}
	pthread_mutex_lock(&srv.mu);
	assert_int_equal(srv.connections - before, 1);
	pthread_mutex_unlock(&srv.mu);

	/* Freeing the loop with a transfer in flight removes it without a
	 * callback; the easy handle stays the caller's. */
	xfer_start(loop, &xs[0], "/ok", &ndone);
	assert_int_equal(mo_loop_pending(loop), 1);
	mo_loop_free(loop);
	assert_int_equal(ndone, 20);
	for (int i = 0; i < 20; i++) {
		curl_easy_cleanup(xs[i].easy);
		mo_buf_free(&xs[i].body);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_loop_timer_order),
		cmocka_unit_test(test_loop_timer_heap),
		cmocka_unit_test(test_loop_timer_cancel),
		cmocka_unit_test(test_loop_post_thread),
		cmocka_unit_test(test_loop_concurrent_transfers),
		cmocka_unit_test(test_loop_connection_reuse),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
