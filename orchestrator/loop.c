/*
 * loop.c - the executor's event loop: one libcurl multi handle, a timer
 * heap and a queue of callbacks posted from other threads.
 *
 * A pass of mo_loop_run_once() waits in curl_multi_poll() (poll(2) inside,
 * so no FD_SETSIZE limit) for at most the smaller of the caller's bound and
 * the next timer, then lets curl advance every transfer, dispatches the
 * finished ones, runs the timers that are due and finally the posted
 * callbacks.  Thousands of transfers cost one poll set and one pass of
 * curl_multi_perform() per wake-up.
 *
 * Connections are shared through the multi handle: its connection cache
 * lets a finished transfer's connection be reused by the next one to the
 * same host, and its DNS cache is shared by every easy handle added to it,
 * so no CURLSH is needed.  The number of connections per host is not
 * limited here; the executor bounds parallelism itself.
 *
 * Timers live in a binary min-heap ordered by (due time, id).  Cancelling
 * marks the timer, which is dropped when it reaches the top of the heap; an
 * open-addressing table maps live ids to timers so that cancel is O(1).
 *
 * The loop owns CURLOPT_PRIVATE of every easy handle added with
 * mo_loop_add_curl(): it points at the loop's record of the transfer.
 * Only mo_loop_post() and mo_loop_wakeup() may be called from other threads.
 */
#include "loop.h"
#include "common.h"

#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

typedef struct loop_timer {
	int64_t due;
	uint64_t id;
	mo_loop_cb cb;
	void *ud;
	int cancelled;
} loop_timer;

/* One transfer in flight; reached from its easy handle via CURLINFO_PRIVATE. */
typedef struct loop_xfer {
	CURL *easy;
	mo_loop_curl_cb cb;
	void *ud;
	struct loop_xfer *prev, *next;
} loop_xfer;

typedef struct loop_post {
	mo_loop_cb cb;
	void *ud;
	struct loop_post *next;
} loop_post;

struct mo_loop {
	CURLM *multi;

	/* timers: heap of live and cancelled timers, index of live ids */
	loop_timer **heap;
	size_t nheap, capheap;
	loop_timer **ids; /* open addressing, linear probing; NULL = empty */
	size_t capids, nids;
	uint64_t next_id;

	/* transfers */
	loop_xfer *xfers;
	int nxfers;

	/* posted callbacks (FIFO) */
	pthread_mutex_t mu;
	loop_post *post_head, *post_tail;
	atomic_int nposts;
};

/* ---- timer heap --------------------------------------------------------- */

static int timer_before(const loop_timer *a, const loop_timer *b)
{
	return a->due < b->due || (a->due == b->due && a->id < b->id);
}

static void heap_up(mo_loop *loop, size_t i)
{
	loop_timer *t = loop->heap[i];
	while (i > 0) {
		size_t parent = (i - 1) / 2;
		if (!timer_before(t, loop->heap[parent]))
			break;
		loop->heap[i] = loop->heap[parent];
		i = parent;
	}
	loop->heap[i] = t;
}

static void heap_down(mo_loop *loop, size_t i)
{
	loop_timer *t = loop->heap[i];
	size_t n = loop->nheap;
	for (;;) {
		size_t child = 2 * i + 1;
		if (child >= n)
			break;
		if (child + 1 < n && timer_before(loop->heap[child + 1], loop->heap[child]))
			child++;
		if (!timer_before(loop->heap[child], t))
			break;
		loop->heap[i] = loop->heap[child];
		i = child;
	}
	loop->heap[i] = t;
}

static loop_timer *heap_pop(mo_loop *loop)
{
	loop_timer *top = loop->heap[0];
	loop->nheap--;
	if (loop->nheap > 0) {
		loop->heap[0] = loop->heap[loop->nheap];
		heap_down(loop, 0);
	}
	return top;
}

/* ---- live timer index (id -> timer) ------------------------------------- */

static size_t id_slot(uint64_t id, size_t cap)
{
	/* Fibonacci hashing spreads sequential ids; cap is a power of two. */
	return (size_t)((id * 0x9E3779B97F4A7C15ull) >> 17) & (cap - 1);
}

static int ids_grow(mo_loop *loop)
{
	size_t cap = loop->capids ? loop->capids * 2 : 64;
	loop_timer **ids = mo_calloc(cap, sizeof(*ids));
	if (!ids)
		return mo_error_set(MO_ENOMEM, "out of memory");
	for (size_t i = 0; i < loop->capids; i++) {
		loop_timer *t = loop->ids[i];
		if (t) {
			size_t j = id_slot(t->id, cap);
			while (ids[j])
				j = (j + 1) & (cap - 1);
			ids[j] = t;
		}
	}
	mo_free(loop->ids);
	loop->ids = ids;
	loop->capids = cap;
	return 0;
}

/* Caller made room (load factor <= 1/2 after insertion). */
static void ids_put(mo_loop *loop, loop_timer *t)
{
	size_t j = id_slot(t->id, loop->capids);
	while (loop->ids[j])
		j = (j + 1) & (loop->capids - 1);
	loop->ids[j] = t;
	loop->nids++;
}

static size_t ids_find(const mo_loop *loop, uint64_t id)
{
	size_t j;
	if (!loop->capids)
		return SIZE_MAX;
	j = id_slot(id, loop->capids);
	while (loop->ids[j]) {
		if (loop->ids[j]->id == id)
			return j;
		j = (j + 1) & (loop->capids - 1);
	}
	return SIZE_MAX;
}

/* Remove slot j, shifting back later members of its probe run. */
static void ids_del(mo_loop *loop, size_t j)
{
	size_t mask = loop->capids - 1, i = j;
	loop->ids[j] = NULL;
	loop->nids--;
	for (;;) {
		size_t home;
		i = (i + 1) & mask;
		if (!loop->ids[i])
			return;
		home = id_slot(loop->ids[i]->id, loop->capids);
		/* Move ids[i] into the hole j unless its home lies in (j, i]. */
		if (((i - home) & mask) >= ((i - j) & mask)) {
			loop->ids[j] = loop->ids[i];
			loop->ids[i] = NULL;
			j = i;
		}
	}
}

static void ids_remove(mo_loop *loop, uint64_t id)
{
	size_t j = ids_find(loop, id);
	if (j != SIZE_MAX)
		ids_del(loop, j);
}

/* ---- construction ------------------------------------------------------- */

int mo_loop_new(mo_loop **out)
{
	mo_loop *loop = NULL;
	int rc = 0;

	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
		return mo_error_set(MO_ERROR, "curl_global_init failed");
	if (!(loop = mo_calloc(1, sizeof(*loop)))) {
		curl_global_cleanup();
		return mo_error_set(MO_ENOMEM, "out of memory");
	}
	pthread_mutex_init(&loop->mu, NULL);
	atomic_init(&loop->nposts, 0);
	loop->next_id = 1;
	if (!(loop->multi = curl_multi_init())) {
		rc = mo_error_set(MO_ENOMEM, "curl_multi_init failed");
		goto done;
	}
	curl_multi_setopt(loop->multi, CURLMOPT_MAX_HOST_CONNECTIONS, 0L);
	curl_multi_setopt(loop->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, 0L);
	*out = loop;
	loop = NULL;
done:
	mo_loop_free(loop);
	return rc;
}

void mo_loop_free(mo_loop *loop)
{
	loop_post *p;

	if (!loop)
		return;
	while (loop->xfers) {
		loop_xfer *x = loop->xfers;
		loop->xfers = x->next;
		curl_multi_remove_handle(loop->multi, x->easy);
		curl_easy_setopt(x->easy, CURLOPT_PRIVATE, NULL);
		mo_free(x);
	}
	for (size_t i = 0; i < loop->nheap; i++)
		mo_free(loop->heap[i]);
	p = loop->post_head;
	while (p) {
		loop_post *next = p->next;
		mo_free(p);
		p = next;
	}
	if (loop->multi)
		curl_multi_cleanup(loop->multi);
	pthread_mutex_destroy(&loop->mu);
	mo_free(loop->heap);
	mo_free(loop->ids);
	mo_free(loop);
	curl_global_cleanup();
}

/* ---- timers ------------------------------------------------------------- */

int mo_loop_timer(mo_loop *loop, int64_t delay_ms, mo_loop_cb cb, void *ud, uint64_t *id)
{
	loop_timer *t;

	if (loop->nheap == loop->capheap) {
		size_t cap = loop->capheap ? loop->capheap * 2 : 64;
		loop_timer **heap = mo_realloc(loop->heap, cap * sizeof(*heap));
		if (!heap)
			return mo_error_set(MO_ENOMEM, "out of memory");
		loop->heap = heap;
		loop->capheap = cap;
	}
	if (2 * (loop->nids + 1) > loop->capids && ids_grow(loop) < 0)
		return MO_ENOMEM;
	if (!(t = mo_malloc(sizeof(*t))))
		return mo_error_set(MO_ENOMEM, "out of memory");
	t->due = mo_now_ms() + (delay_ms > 0 ? delay_ms : 0);
	t->id = loop->next_id++;
	t->cb = cb;
	t->ud = ud;
	t->cancelled = 0;
	loop->heap[loop->nheap++] = t;
	heap_up(loop, loop->nheap - 1);
	ids_put(loop, t);
	if (id)
		*id = t->id;
	return 0;
}

/* Cancelling an id that already ran or was cancelled is a no-op. */
void mo_loop_timer_cancel(mo_loop *loop, uint64_t id)
{
	size_t j = ids_find(loop, id);
	if (j == SIZE_MAX)
		return;
	loop->ids[j]->cancelled = 1;
	ids_del(loop, j);
}

/* Run the timers due at the start of the pass, in (due, id) order.  Timers
 * armed by these callbacks (ids >= limit) wait for a later pass, so a
 * callback re-arming itself with no delay can't starve the loop; they sort
 * after every timer of this pass anyway, since their due time is at least
 * the pass's "now".  A callback may cancel a timer of the same pass. */
static void run_timers(mo_loop *loop)
{
	int64_t now = mo_now_ms();
	uint64_t limit = loop->next_id;

	while (loop->nheap > 0) {
		loop_timer *t = loop->heap[0];
		if (t->cancelled) {
			mo_free(heap_pop(loop));
			continue;
		}
		if (t->due > now || t->id >= limit)
			break;
		heap_pop(loop);
		ids_remove(loop, t->id);
		t->cb(t->ud);
		mo_free(t);
	}
}

/* ---- transfers ---------------------------------------------------------- */

int mo_loop_add_curl(mo_loop *loop, CURL *easy, mo_loop_curl_cb cb, void *ud)
{
	loop_xfer *x;
	CURLMcode mc;

	if (!(x = mo_calloc(1, sizeof(*x))))
		return mo_error_set(MO_ENOMEM, "out of memory");
	x->easy = easy;
	x->cb = cb;
	x->ud = ud;
	curl_easy_setopt(easy, CURLOPT_PRIVATE, x);
	if ((mc = curl_multi_add_handle(loop->multi, easy)) != CURLM_OK) {
		mo_free(x);
		return mo_error_set_native(MO_EHTTP, (int)mc, "curl_multi_add_handle: %s",
					   curl_multi_strerror(mc));
	}
	x->next = loop->xfers;
	if (x->next)
		x->next->prev = x;
	loop->xfers = x;
	loop->nxfers++;
	return 0;
}

/* Dispatch the finished transfers.  A message is used before the next
 * curl call: info_read's messages don't survive curl_multi_remove_handle().
 * Only this function removes handles, so the queue stays valid while a
 * callback adds new transfers. */
static void run_transfers(mo_loop *loop)
{
	CURLMsg *msg;
	int left;

	while ((msg = curl_multi_info_read(loop->multi, &left))) {
		CURL *easy = msg->easy_handle;
		CURLcode rc = msg->data.result;
		loop_xfer *x = NULL;

		if (msg->msg != CURLMSG_DONE)
			continue;
		curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&x);
		curl_multi_remove_handle(loop->multi, easy);
		if (!x)
			continue;
		if (x->prev)
			x->prev->next = x->next;
		else
			loop->xfers = x->next;
		if (x->next)
			x->next->prev = x->prev;
		loop->nxfers--;
		curl_easy_setopt(easy, CURLOPT_PRIVATE, NULL);
		x->cb(easy, rc, x->ud);
		mo_free(x);
	}
}

void mo_loop_drain(mo_loop *loop, int max_ms)
{
	int64_t deadline = mo_now_ms() + max_ms;
	while (loop && loop->nxfers > 0 && mo_now_ms() < deadline)
		if (mo_loop_run_once(loop, 20) < 0)
			break;
}

/* ---- posted callbacks --------------------------------------------------- */

int mo_loop_post(mo_loop *loop, mo_loop_cb cb, void *ud)
{
	loop_post *p = mo_malloc(sizeof(*p));
	if (!p)
		return mo_error_set(MO_ENOMEM, "out of memory");
	p->cb = cb;
	p->ud = ud;
	p->next = NULL;
	pthread_mutex_lock(&loop->mu);
	if (loop->post_tail)
		loop->post_tail->next = p;
	else
		loop->post_head = p;
	loop->post_tail = p;
	atomic_fetch_add(&loop->nposts, 1);
	pthread_mutex_unlock(&loop->mu);
	curl_multi_wakeup(loop->multi);
	return 0;
}

void mo_loop_wakeup(mo_loop *loop)
{
	/* A write(2) on curl's wake-up socket pair. */
	curl_multi_wakeup(loop->multi);
}

/* Run the callbacks queued before this point; later posts wait for the
 * next pass. */
static void run_posts(mo_loop *loop)
{
	loop_post *p;

	if (atomic_load(&loop->nposts) == 0)
		return;
	pthread_mutex_lock(&loop->mu);
	p = loop->post_head;
	loop->post_head = loop->post_tail = NULL;
	pthread_mutex_unlock(&loop->mu);
	while (p) {
		loop_post *next = p->next;
		atomic_fetch_sub(&loop->nposts, 1);
		p->cb(p->ud);
		mo_free(p);
		p = next;
	}
}

/* ---- the pass ----------------------------------------------------------- */

/* The wait for this pass: the caller's bound (negative: none), shortened
 * to the next live timer and to zero when posts are queued.  curl shortens
 * it further to its own timeouts inside curl_multi_poll(). */
static int pass_wait(mo_loop *loop, int max_wait_ms)
{
	int64_t wait = max_wait_ms < 0 ? INT_MAX : max_wait_ms;

	while (loop->nheap > 0 && loop->heap[0]->cancelled)
		mo_free(heap_pop(loop));
	if (loop->nheap > 0) {
		int64_t until = loop->heap[0]->due - mo_now_ms();
		if (until < wait)
			wait = until < 0 ? 0 : until;
	}
	if (atomic_load(&loop->nposts) > 0)
		wait = 0;
	return (int)wait;
}

int mo_loop_run_once(mo_loop *loop, int max_wait_ms)
{
	CURLMcode mc;
	int running = 0;

	mc = curl_multi_poll(loop->multi, NULL, 0, pass_wait(loop, max_wait_ms), NULL);
	if (mc != CURLM_OK)
		return mo_error_set_native(MO_EIO, (int)mc, "curl_multi_poll: %s",
					   curl_multi_strerror(mc));
	mc = curl_multi_perform(loop->multi, &running);
	if (mc != CURLM_OK)
		return mo_error_set_native(MO_EIO, (int)mc, "curl_multi_perform: %s",
					   curl_multi_strerror(mc));
	run_transfers(loop);
	run_timers(loop);
	run_posts(loop);
	return 0;
}

int mo_loop_pending(const mo_loop *loop)
{
	return loop->nxfers + (int)loop->nids + atomic_load(&((mo_loop *)loop)->nposts);
}
