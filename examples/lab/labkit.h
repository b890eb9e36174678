/*
 * labkit.h - what the local lab's API emulators (labcloud, redfish, fabric,
 * k8s, federator) share: the command line every one of them accepts, the
 * HTTP plumbing on libmicrohttpd (listening, the port file, request bodies,
 * replies, clean shutdown on SIGINT/SIGTERM), injected latency and failures,
 * the request counters behind /_stats and the settings behind PUT /_config.
 * An emulator keeps only its own API: routes, resources, state machine.
 *
 * The shape of an emulator:
 *
 *     static xx_server srv;                   (embeds an lk_server named lk)
 *     lk_init(&srv.lk, "xx");                 (then set max_body & co.)
 *     if ((rc = lk_parse_args(&srv.lk, argc, argv, opts, own_option, &srv,
 *                             usage)) >= 0)
 *             return rc;
 *     if (lk_resolve(&srv.lk) != 0)
 *             return 2;
 *     ... build the emulator's state ...
 *     rc = lk_run(&srv.lk, handle, &srv, NULL);
 *     lk_free(&srv.lk);
 *
 * lk_run() calls handle(c, r) once per request, with the whole body read;
 * whatever handle() leaves in r is sent.  Control endpoints and API routes,
 * fault injection and authentication are the handler's to order, with the
 * helpers below; labkit imposes no URL layout.
 *
 * Concurrency: libmicrohttpd runs handlers on many threads at once (one per
 * connection, or a small pool).  lk_server.lock guards the fault settings,
 * the fault RNG and the counters; an emulator may guard its own state with
 * the same lock.  Each function says whether it takes the lock or expects
 * the caller to hold it.
 *
 * Stand-alone: labkit links libmicrohttpd, jansson and pthread only, not the
 * mecorch core, and allocates with malloc (the emulators are programs, not
 * library code under allocation tests).
 */
#ifndef LABKIT_H
#define LABKIT_H

#include <getopt.h>
#include <jansson.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define LK_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

#define LK_STATUS_MAX 600            /* statuses counted: 0..599 */
#define LK_PATH_MAX 512              /* lk_call.path, longer URLs are cut */
#define LK_PARAM_MAX 128             /* a route's "{}" segment, with its NUL */
#define LK_ALLOW_MAX 64              /* an Allow list built by lk_route_find */
#define LK_REPLY_HEADERS 6           /* headers one reply may carry */
#define LK_HEADER_MAX 256            /* a header value, with its NUL */

#define LK_JSON "application/json"
#define LK_PROBLEM_JSON "application/problem+json"

/* ---- methods ----------------------------------------------------------- */

typedef enum {
	LK_GET, LK_HEAD, LK_POST, LK_PUT, LK_PATCH, LK_DELETE, LK_OTHER,
	LK_METHOD_COUNT
} lk_method;

/* "GET", "HEAD", ..., "OTHER", indexed by lk_method. */
extern const char *const lk_method_names[LK_METHOD_COUNT];

/* The lk_method of an HTTP method name; LK_OTHER for any other. */
lk_method lk_method_of(const char *name);

/* ---- requests and replies ---------------------------------------------- */

/* One request, as a handler sees it. */
typedef struct {
	void *srv;                   /* lk_run()'s cls: the emulator's server */
	struct MHD_Connection *conn; /* for headers and query arguments */
	const char *url;             /* as received */
	char path[LK_PATH_MAX];      /* url without trailing slashes ("/" stays) */
	const char *method_name;     /* as received */
	lk_method method;
	const char *body;            /* the request body (not NUL-terminated) */
	size_t body_len;
	bool too_large;              /* the body exceeded max_body: body holds
				      * only its beginning */
	char param[LK_PARAM_MAX];    /* lk_route_find(): the "{}" segment */
} lk_call;

/* What a handler answers.  Starts as an empty 500. */
typedef struct {
	int status;
	char *body;                  /* malloc'd, or NULL: no body */
	const char *content_type;    /* static; sent with a body only */
	int nheaders;
	struct {
		const char *name;    /* static */
		char value[LK_HEADER_MAX];
	} headers[LK_REPLY_HEADERS];
} lk_reply;

typedef void (*lk_handler)(lk_call *c, lk_reply *r);

/* Answer status with j (stolen, may be NULL) serialised compactly as
 * application/json.  Serialises now, so call it under the lock guarding
 * what j shares.  No JSON text (j NULL, out of memory): an empty 500. */
void lk_reply_json(lk_reply *r, int status, json_t *j);

/* Answer status with no body. */
void lk_reply_empty(lk_reply *r, int status);

/* Add the header name (a static string) with a printf-formatted value, or
 * replace the value of a header of that name already added.  Headers are
 * sent in the order they were first added, after Content-Type; values
 * longer than LK_HEADER_MAX - 1 are cut; beyond LK_REPLY_HEADERS headers,
 * further ones are dropped. */
void lk_reply_header(lk_reply *r, const char *name, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* An RFC 7807 problem object {"type","title","status"[,"code"],"detail"}:
 * title NULL is lk_status_title(status); code NULL leaves the member out.
 * When the detail is not valid UTF-8 the object has no detail.  A new
 * reference, or NULL (out of memory). */
json_t *lk_problem_v(int status, const char *title, const char *code, const char *fmt,
		     va_list ap) __attribute__((format(printf, 4, 0)));

/* Answer an RFC 7807 problem (lk_problem_v) as application/problem+json. */
void lk_reply_problem(lk_reply *r, int status, const char *code, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

/* The reason phrase the lab uses as a problem's title; "Error" when none. */
const char *lk_status_title(int status);

/* The request body as a JSON object (new reference), or NULL after a 400
 * problem in r ("the request body must be a JSON object" when empty or not
 * an object, "invalid JSON at line L, column C: TEXT"), with code as its
 * "code" member (may be NULL).  r NULL: no answer, the caller gives its own. */
json_t *lk_body_object(const lk_call *c, lk_reply *r, const char *code);

/* ---- the server -------------------------------------------------------- */

/* Injected behaviour: the command line sets it, PUT /_config may change it.
 * Guarded by lk_server.lock. */
typedef struct {
	long latency_ms;             /* every API request sleeps this long ... */
	long jitter_ms;              /* ... plus a uniform 0..jitter_ms */
	double fail_rate;            /* fraction answered 500 or 503 */
	double rate_429;             /* fraction answered 429 */
	long retry_after;            /* the Retry-After of a 429, seconds */
} lk_faults;

typedef struct lk_server {
	/* Set by the emulator after lk_init() (0: libmicrohttpd's default). */
	const char *name;            /* "labcloud": messages, the listening line */
	size_t max_body;             /* a longer request body sets too_large */
	unsigned max_connections;    /* concurrent connections (--max-connections) */
	unsigned backlog;            /* listen(2) backlog */
	size_t thread_stack;         /* stack of a connection's thread */
	unsigned timeout_s;          /* an idle connection is closed after it */
	unsigned thread_pool;        /* > 0: that many threads serve every
				      * connection, instead of one thread each */

	/* The shared options, as lk_parse_args() left them. */
	const char *listen;          /* --listen, default 127.0.0.1:0 */
	const char *port_file;       /* --port-file, or NULL */
	const char *token;           /* --token, or NULL */
	uint64_t seed;               /* --seed, default random */

	/* Run time.  lock guards what follows (and what the emulator adds). */
	pthread_mutex_t lock;
	lk_faults faults;
	uint64_t rng;                /* xorshift64* state, never 0 */
	uint64_t requests[LK_METHOD_COUNT];  /* API requests, by method */
	uint64_t responses[LK_STATUS_MAX];   /* API answers, by status */
	long in_flight, max_in_flight;

	/* Private. */
	struct addrinfo *ai;         /* lk_resolve()'s; lk_free() releases it */
	lk_handler handle;           /* lk_run()'s */
	void *srv;
} lk_server;

/* Defaults for everything, the mutex initialised, jansson's hash seed set
 * (before any thread or object exists).  name must outlive lk. */
void lk_init(lk_server *lk, const char *name);

/* Release what lk_resolve() allocated (harmless when nothing was). */
void lk_free(lk_server *lk);

/* ---- the command line -------------------------------------------------- */

/* Values of struct option.val of the shared options; an emulator's own
 * options use values from LK_OPT_OWN up.  Each takes an argument except
 * --help. */
enum {
	LK_OPT_LISTEN = 0x100,       /* --listen HOST:PORT */
	LK_OPT_PORT_FILE,            /* --port-file FILE */
	LK_OPT_LATENCY,              /* --latency-ms N (0..3600000) */
	LK_OPT_JITTER,               /* --latency-jitter-ms N (0..3600000) */
	LK_OPT_FAIL_RATE,            /* --fail-rate F (0..1) */
	LK_OPT_RATE_429,             /* --rate-429 F (0..1) */
	LK_OPT_RETRY_AFTER,          /* --retry-after S (0..86400) */
	LK_OPT_SEED,                 /* --seed N (any long) */
	LK_OPT_TOKEN,                /* --token T (not empty) */
	LK_OPT_MAX_CONNECTIONS,      /* --max-connections N (1..1000000) */
	LK_OPT_HELP,                 /* --help */
	LK_OPT_OWN = 0x200
};

/* struct option entries of the shared options, for an emulator's table. */
#define LK_OPTIONS_BASE \
	{ "listen", required_argument, NULL, LK_OPT_LISTEN }, \
	{ "port-file", required_argument, NULL, LK_OPT_PORT_FILE }, \
	{ "help", no_argument, NULL, LK_OPT_HELP }
#define LK_OPTION_LATENCY { "latency-ms", required_argument, NULL, LK_OPT_LATENCY }
#define LK_OPTION_JITTER { "latency-jitter-ms", required_argument, NULL, LK_OPT_JITTER }
#define LK_OPTION_FAIL_RATE { "fail-rate", required_argument, NULL, LK_OPT_FAIL_RATE }
#define LK_OPTION_RATE_429 { "rate-429", required_argument, NULL, LK_OPT_RATE_429 }
#define LK_OPTION_RETRY_AFTER { "retry-after", required_argument, NULL, LK_OPT_RETRY_AFTER }
#define LK_OPTION_SEED { "seed", required_argument, NULL, LK_OPT_SEED }
#define LK_OPTION_TOKEN { "token", required_argument, NULL, LK_OPT_TOKEN }
#define LK_OPTION_MAX_CONNECTIONS \
	{ "max-connections", required_argument, NULL, LK_OPT_MAX_CONNECTIONS }
/* The four fault options and --seed, in one go. */
#define LK_OPTIONS_FAULTS \
	LK_OPTION_LATENCY, LK_OPTION_FAIL_RATE, LK_OPTION_RATE_429, \
	LK_OPTION_RETRY_AFTER, LK_OPTION_SEED

/* An emulator's own option: false when arg is not a valid value. */
typedef bool (*lk_option_fn)(void *cls, int opt, const char *arg);

/* Parse argv with getopt_long over opts (terminated by a zero entry):
 * shared options fill lk, the others go to own(cls, val, optarg).  --help
 * prints usage(stdout).  Returns -1 to go on, or the status main() should
 * exit with: 0 after --help; 2 after an unknown option (usage on stderr),
 * a bad value ("NAME: bad value for --OPT: ARG") or a stray argument.
 * Going on, lk->rng is seeded from lk->seed. */
int lk_parse_args(lk_server *lk, int argc, char **argv, const struct option *opts,
		  lk_option_fn own, void *cls, void (*usage)(FILE *f));

/* A decimal long within [lo, hi] / a number within [0, 1]: false otherwise,
 * *out untouched. */
bool lk_parse_long(const char *s, long lo, long hi, long *out);
bool lk_parse_rate(const char *s, double *out);

/* Resolve lk->listen ("HOST:PORT", "[V6]:PORT" or ":PORT", for 127.0.0.1).
 * 0, or -1 after "NAME: cannot use --listen X (want HOST:PORT)" on stderr. */
int lk_resolve(lk_server *lk);

/* ---- routing ----------------------------------------------------------- */

/* One route.  A "{}" in pattern matches one non-empty path segment (shorter
 * than LK_PARAM_MAX), which the handler finds in c->param.  flags: the
 * emulator's own (redfish: authentication required). */
typedef struct {
	lk_method method;
	const char *pattern;
	lk_handler fn;
	int flags;
} lk_route;

/* The route of routes[0..n) for (c->method, path), GET routes answering
 * HEAD too; NULL when none.  allow (cap bytes) then lists the methods the
 * routes matching path take, "GET, HEAD, PATCH", or is "" when no route
 * matches path: 405 and 404. */
const lk_route *lk_route_find(const lk_route *routes, size_t n, lk_call *c, const char *path,
			      char *allow, size_t cap);

/* Flags of the lab's problem answers (lk_route_dispatch, lk_api_guard). */
#define LK_ALLOW 1                   /* a 405 carries the Allow header */
#define LK_CODES 2                   /* problems carry a "code" member */

/* Run the route of (c->method, path), or answer the lab's problem: 405 "M
 * is not supported on PATH" (code METHOD_NOT_ALLOWED) when another method
 * has the path, else 404 "no such path: PATH" (code NOT_FOUND). */
void lk_route_dispatch(const lk_route *routes, size_t n, lk_call *c, const char *path,
		       lk_reply *r, int flags);

/* ---- faults, counters, settings ---------------------------------------- */

/* An API request begins: counted by method and in flight, then delayed by
 * the latency (and jitter), outside the lock.  Returns the injected fault:
 * 0, 500 or 503 (fail_rate), or 429 (rate_429) with *retry_after set.
 * Takes lk->lock. */
int lk_api_begin(lk_server *lk, lk_method m, long *retry_after);

/* ...and ends: its status counted, no longer in flight.  Takes lk->lock. */
void lk_api_end(lk_server *lk, int status);

/* The front door of an API request in the lab's problem+json dialect:
 * lk_api_begin(), then the injected fault (429 "injected throttling" with
 * Retry-After, 500/503 "injected failure"), a missing or wrong bearer token
 * when lk->token is set (401 with WWW-Authenticate: Bearer realm="NAME") or
 * a too large body (413) answered in r, with code members (RATE_LIMITED,
 * INJECTED_FAILURE, UNAUTHORIZED, BODY_TOO_LARGE) when flags has LK_CODES.
 * true when the request got through and is the caller's to route; either
 * way the caller ends it with lk_api_end(). */
bool lk_api_guard(lk_server *lk, lk_call *c, lk_reply *r, int flags);

/* {"GET": n, "HEAD": n, ...} (HEAD left out unless head) and
 * {"200": n, ...} (statuses seen), for /_stats: new references.  Caller
 * holds lk->lock. */
json_t *lk_requests_json(const lk_server *lk, bool head);
json_t *lk_responses_json(const lk_server *lk);

/* Zero the request and response counters; max_in_flight restarts at the
 * requests in flight.  Caller holds lk->lock. */
void lk_stats_reset(lk_server *lk);

/* A setting PUT /_config may change: a JSON number within [lo, hi] stored
 * into *l (it must then be an integer) or into *d. */
typedef struct {
	const char *name;
	double lo, hi;
	long *l;
	double *d;
} lk_setting;

/* Apply body (an object) to the settings set[0..n): every member must name
 * one, with a valid value, or nothing changes.  0, or -1 with why ("unknown
 * setting K", "K must be an integer", "K must be within [LO, HI]").
 * Caller holds the lock guarding the targets. */
int lk_settings_apply(json_t *body, const lk_setting *set, size_t n, char *why, size_t cap);

/* Uniform in [0, 1) from the xorshift64* state *rng (caller holds the lock
 * guarding it). */
double lk_rng_next(uint64_t *rng);

/* ---- helpers ----------------------------------------------------------- */

/* splitmix64's finaliser: a bijection of 64-bit values. */
uint64_t lk_mix64(uint64_t z);
/* 64 bits from getrandom(2) (or the clock and pid if it fails). */
uint64_t lk_random_u64(void);
/* Milliseconds of the wall clock (survives a restart) / a monotonic one. */
int64_t lk_now_ms(void);
int64_t lk_mono_ms(void);
/* The current UTC time in RFC 3339, "2024-05-01T12:00:00.123Z" with millis,
 * "2024-05-01T12:00:00Z" without; n >= 32. */
void lk_rfc3339_now(char *out, size_t n, bool millis);
/* Is s valid UTF-8? */
bool lk_utf8_valid(const char *s);
/* a == b, in a time that does not reveal where they differ. */
bool lk_secret_equal(const char *a, const char *b);
/* The token of an "Authorization: Bearer TOKEN" header (spaces after
 * "Bearer " skipped), or NULL. */
const char *lk_bearer(struct MHD_Connection *conn);

/* One event on stdout, "HH:MM:SS.mmm NAME: text", flushed at once so a test
 * can follow what the emulator did.  Safe from any thread. */
void lk_log(const lk_server *lk, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Write root (stolen, may be NULL: a failure) to path as compact JSON,
 * through a temp file renamed over it: a crash leaves the old or the new
 * file.  0, or -1 after "NAME: cannot save PATH: ERROR" on stderr. */
int lk_save_json(const lk_server *lk, const char *path, json_t *root);

/* ---- running ----------------------------------------------------------- */

/* Serve until SIGINT or SIGTERM: SIGPIPE ignored, the open-file limit
 * raised to hold max_connections, the daemon started on lk_resolve()'s
 * address, the bound port written to --port-file (a temp file, fsync,
 * rename), "NAME listening on http://HOST:PORT" + suffix (may be NULL)
 * printed and flushed; handle(c, r) runs for every request, with c->srv =
 * srv.  Returns 0 after the signal, 1 when the server could not start (the
 * reason on stderr).  The daemon is stopped on return. */
int lk_run(lk_server *lk, lk_handler handle, void *srv, const char *suffix);

#endif
