/*
 * api_int.h - internals shared by the files of the API server (the C files under api/):
 * the server handle, requests and replies, the route handlers, the
 * document store, the job queue, notifications and the federation client.
 * Not for other subsystems: they use api.h.
 *
 * Threads: libmicrohttpd's pool runs the handlers; a few worker threads run
 * jobs (onboarding, LCM operations, DevOps runs) through mo_run(); one
 * notifier thread delivers the outbox; one federation thread keeps the MEC
 * 040 registration.  All of them share the store, whose records are
 * immutable once stored (copy, change, put), so readers hold a reference
 * without a lock.
 */
#ifndef MO_API_INT_H
#define MO_API_INT_H

#include <jansson.h>
#include <microhttpd.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>

#include "api.h"
#include "exec.h"
#include "common.h"

/* ---- store (store.c) ------------------------------------------------------ */

/* Record kinds.  A record is {"tenant": s, "doc": {API representation},
 * "int": {internal fields}}. */
enum { MO_K_PKG, MO_K_INST, MO_K_OP, MO_K_SUB, MO_K_DEP, MO_K_COUNT };

typedef struct mo_api_store mo_api_store;

int mo_api_store_open(mo_api_store **out, const char *path);
void mo_api_store_close(mo_api_store *st);

/* Readers (also inside begin/end): a new reference to the record, or
 * NULL.  Never modify it. */
json_t *mo_api_store_get(mo_api_store *st, int kind, const char *id);
/* A new array holding references to every record of kind (creation order). */
json_t *mo_api_store_all(mo_api_store *st, int kind);

/* Writers: mo_api_store_begin() takes the write lock and opens a
 * transaction; everything until mo_api_store_end() commits (ok != 0) or
 * rolls back atomically, memory and disk alike. */
void mo_api_store_begin(mo_api_store *st);
int mo_api_store_end(mo_api_store *st, int ok);
/* Inside begin/end: a borrowed view of the current record, or NULL. */
json_t *mo_api_store_peek(mo_api_store *st, int kind, const char *id);
/* Inside begin/end: store rec (the reference is stolen) under id. */
int mo_api_store_put(mo_api_store *st, int kind, const char *id, json_t *rec);
int mo_api_store_del(mo_api_store *st, int kind, const char *id);
/* Inside begin/end: queue a notification for delivery. */
int mo_api_store_outbox_add(mo_api_store *st, const char *sub_id, const char *uri, json_t *body);
/* Inside begin/end: append an event of a run (owner: op or deployment id). */
int mo_api_store_event_add(mo_api_store *st, const char *owner, json_t *ev);
/* Record an engine progress event / a module log line of the run owned by
 * owner (as mo_run's on_event / log callbacks do); "start" events and
 * debug logs are not kept. */
void mo_api_store_run_event(mo_api_store *st, const char *owner, const mo_event *ev);
void mo_api_store_run_log(mo_api_store *st, const char *owner, const char *who, const char *level,
			  const char *msg);

/* Own locking. */
int mo_api_store_meta_get(mo_api_store *st, const char *key, char **out);
int mo_api_store_meta_set(mo_api_store *st, const char *key, const char *value);
/* Events of owner with seq > after, oldest first, at most limit: a new
 * array of {seq, ...event}. */
json_t *mo_api_store_events(mo_api_store *st, const char *owner, int64_t after, int limit);
int mo_api_store_events_del(mo_api_store *st, const char *owner);

typedef struct {
	int64_t id;
	char *sub_id, *uri, *body;
	int attempts;
} mo_api_outbox_row;
/* Up to max rows due at now_ms (wall clock), oldest first; a row waits
 * while an older one for the same URI is backing off (order per URI). */
int mo_api_store_outbox_due(mo_api_store *st, int64_t now_ms, mo_api_outbox_row *rows, int max,
			    int *n);
void mo_api_outbox_row_clear(mo_api_outbox_row *r);
int mo_api_store_outbox_done(mo_api_store *st, int64_t id);
int mo_api_store_outbox_retry(mo_api_store *st, int64_t id, int64_t next_ms, const char *err);
/* Earliest next attempt (wall ms), or -1 when the outbox is empty. */
int64_t mo_api_store_outbox_next(mo_api_store *st);
int64_t mo_api_store_outbox_size(mo_api_store *st);

/* Record helpers. */
json_t *mo_api_rec_new(const char *tenant, json_t *doc_stolen);
const char *mo_api_rec_tenant(const json_t *rec);
json_t *mo_api_rec_doc(const json_t *rec);   /* borrowed */
json_t *mo_api_rec_int(const json_t *rec);   /* borrowed; created when absent */
const char *mo_api_jstr(const json_t *obj, const char *key);

/* ---- requests and replies (server.c) -------------------------------------- */

typedef struct mo_api_req mo_api_req;

typedef struct {
	int status;
	json_t *json;          /* body as JSON (stolen), or NULL */
	char *text;            /* raw body (owned), or NULL */
	size_t text_len;
	const char *ctype;     /* content type of text, or of json when not application/json */
	int fd;                /* >= 0: send this file's range [off, off+len) */
	uint64_t off, len;
	char *location;        /* owned */
	char *allow;           /* 405: the Allow header (owned) */
	char *content_range;   /* owned */
	int www_auth;
} mo_api_reply;

typedef struct mo_api_route mo_api_route;
typedef void (*mo_api_handler)(mo_api *a, mo_api_req *q, mo_api_reply *r);

enum {
	MO_R_PUBLIC = 1 << 0,   /* no authentication */
	MO_R_OPERATOR = 1 << 1, /* operator role only */
	MO_R_JSON = 1 << 2,     /* a JSON object body is required */
	MO_R_ZIP = 1 << 3,      /* an application/zip body, spooled to a file */
	MO_R_OPTJSON = 1 << 4,  /* a JSON body is optional */
	MO_R_METRICS = 1 << 5,  /* public when metrics_public */
};

struct mo_api_route {
	const char *method;
	const char *pattern;    /* "/app_lcm/v1/app_instances/{}/instantiate" */
	mo_api_handler fn;
	unsigned flags;
};

struct mo_api_req {
	struct MHD_Connection *conn;
	const char *method, *url;
	const mo_api_route *route;
	int route_index;
	char *params[2];
	const mo_api_principal *who;
	mo_buf body;
	char *upload_path;     /* MO_R_ZIP: spooled body */
	int upload_fd;
	uint64_t upload_len;
	int too_large;
	int early;             /* a reply was decided before the body */
	mo_api_reply early_reply;
	int64_t t0_us;
	json_t *json;          /* parsed body (MO_R_JSON / MO_R_OPTJSON) */
};

/* Set a problem+json reply (RFC 7807). */
void mo_api_problem(mo_api_reply *r, int status, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
void mo_api_reply_json(mo_api_reply *r, int status, json_t *doc_stolen);
/* A query argument of the request, or NULL. */
const char *mo_api_query(mo_api_req *q, const char *name);
/* As mo_api_query, but "" for an argument given without a value (?all_fields). */
const char *mo_api_query_flag(mo_api_req *q, const char *name);
const char *mo_api_header(mo_api_req *q, const char *name);

/* Field checks: 0, or -1 with a 400 problem in r. */
int mo_api_want_str(mo_api_reply *r, json_t *obj, const char *key, int required, const char **out);
int mo_api_want_obj(mo_api_reply *r, json_t *obj, const char *key, int required, json_t **out);
int mo_api_want_arr(mo_api_reply *r, json_t *obj, const char *key, int required, json_t **out);
int mo_api_want_enum(mo_api_reply *r, json_t *obj, const char *key, int required,
		     const char *const *values, const char **out);

/* ---- ETSI query parameters of collection GETs (query.c) ---------------------- */

/* A resource type as the filter and the attribute selectors see it. */
typedef struct {
	const char *type;                        /* "AppInstanceInfo", for errors */
	const char *const *attributes;           /* its top-level attributes */
	const char *const *required;             /* paths that cannot be excluded */
	const char *const *excluded_default;     /* paths exclude_default removes */
} mo_api_shape;

/* The raw parameters: NULL when absent, "" when given without a value. */
typedef struct {
	const char *filter, *all_fields, *fields, *exclude_fields, *exclude_default;
} mo_api_query_args;

typedef struct mo_api_view mo_api_view;

/* Parse the parameters for shape: 0, or MO_EINVAL with the reason in
 * mo_error_last() (naming the parameter, operator or attribute). */
int mo_api_view_parse(mo_api_view **out, const mo_api_shape *shape, const mo_api_query_args *args);
void mo_api_view_free(mo_api_view *v);
/* doc passes every filter expression. */
int mo_api_view_match(const mo_api_view *v, const json_t *doc);
/* doc without the excluded attributes, copied no more than that takes: a
 * new reference to doc itself when the selectors exclude nothing from it,
 * else a new document that shares every member of doc it does not change
 * (only the objects and arrays along an excluded path are shallow copies).
 * Either way the result and doc share parts: modify neither.  NULL when out
 * of memory. */
json_t *mo_api_view_project(const mo_api_view *v, const json_t *doc);
/* Parse the request's parameters; on a bad one set a 400 problem in r. */
int mo_api_view_from_request(mo_api_view **out, const mo_api_shape *shape, mo_api_req *q, mo_api_reply *r);
/* Reply 200 with the documents of docs (stolen) that pass the request's
 * filter, projected by its selectors, as a JSON array (the reply's text,
 * written as json_dumps would), or 400 for a bad parameter. */
void mo_api_reply_list(mo_api_req *q, mo_api_reply *r, const mo_api_shape *shape, json_t *docs);

extern const mo_api_shape mo_api_shape_pkg, mo_api_shape_inst, mo_api_shape_op;

/* Visible to the caller: operators see everything, others their tenant's. */
int mo_api_visible(const mo_api_req *q, const json_t *rec);

/* ---- the server ----------------------------------------------------------- */

typedef struct mo_api_job mo_api_job;
enum { MO_JOB_ONBOARD = 1, MO_JOB_LCM = 2, MO_JOB_DEVOPS = 3 };

/* A job running on a worker, for cancellation. */
typedef struct {
	int kind;
	char id[64];
	volatile sig_atomic_t interrupted;
	int cancelled;
	int used;
} mo_api_running;

#define MO_API_MAX_WORKERS 16
#define MO_API_ROUTES_MAX 96
#define MO_API_STATUS_SLOTS 24
#define MO_API_LAT_BUCKETS 14

struct mo_api {
	const mo_api_config *cfg;
	mo_api_store *st;
	struct MHD_Daemon *d;
	unsigned port;
	char *base;            /* public base URL, no trailing slash */
	char *openapi;         /* api/openapi.yaml text served at /openapi.yaml */
	size_t openapi_len;
	char *pkg_dir, *inst_dir, *dep_dir, *cache_dir, *tmp_dir;

	/* jobs */
	pthread_mutex_t qlock;
	pthread_cond_t qcond;
	mo_api_job *qhead, *qtail;
	pthread_t workers[MO_API_MAX_WORKERS];
	int nworkers;
	mo_api_running running[MO_API_MAX_WORKERS];
	volatile sig_atomic_t stopping;

	/* notifier */
	pthread_t notifier;
	int notifier_started;
	pthread_mutex_t nlock;
	pthread_cond_t ncond;
	int nwake;

	/* federation */
	pthread_t fed;
	int fed_started;
	pthread_mutex_t flock;
	pthread_cond_t fcond;
	int fwake;
	char *system_id;       /* guarded by flock */
	char *system_name;     /* current name (may differ from the config after a PATCH) */
	int registered, fed_dirty;
	char fed_error[512];

	/* metrics */
	uint64_t req_count[MO_API_ROUTES_MAX + 1][MO_API_STATUS_SLOTS];
	uint64_t lat_bucket[MO_API_LAT_BUCKETS + 1];
	uint64_t lat_sum_us, lat_count;
	uint64_t notify_sent, notify_failed;
	int64_t started_ms;
};

extern const mo_api_route mo_api_routes[];
extern const size_t mo_api_nroutes;

/* A fresh UUID-shaped random id into out[37]. */
void mo_api_uuid(char out[37]);
/* ETSI TimeStamp {seconds, nanoSeconds} of now. */
json_t *mo_api_timestamp(void);
/* "{base}{path}" as {"href": ...}. */
json_t *mo_api_link(const mo_api *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* rm -rf; 0 or MO_EIO. */
int mo_api_rmtree(const char *path);
int mo_api_mkdirs(const char *path);

/* ---- jobs (jobs.c) -------------------------------------------------------- */

int mo_api_jobs_start(mo_api *a);
void mo_api_jobs_stop(mo_api *a);
/* Queue a job (kind, id, action); 0 or MO_ENOMEM. */
int mo_api_job_push(mo_api *a, int kind, const char *id, const char *action);
/* Interrupt the running job with that id: 1 if it was running. */
int mo_api_job_interrupt(mo_api *a, const char *id);
/* Remove a queued job: 1 if it was queued. */
int mo_api_job_unqueue(mo_api *a, const char *id);
/* Requeue what a previous process left in flight. */
int mo_api_jobs_resume(mo_api *a);

/* Run an onboarding job (pkgm.c), an LCM operation (lcm.c), a DevOps run
 * (devops.c).  r: the interrupt flag of this run. */
void mo_api_onboard_run(mo_api *a, const char *pkg_id, mo_api_running *r);
void mo_api_lcm_run(mo_api *a, const char *op_id, mo_api_running *r);
void mo_api_devops_run(mo_api *a, const char *dep_id, const char *action, mo_api_running *r);

/* ---- notifications (notify.c) --------------------------------------------- */

int mo_api_notify_start(mo_api *a);
void mo_api_notify_stop(mo_api *a);
void mo_api_notify_wake(mo_api *a);
/* Inside store begin/end: queue notifications of an event to every matching
 * subscription of the tenant.  api: "pkgm" or "lcm"; what: the event. */
void mo_api_notify_pkg(mo_api *a, const json_t *pkg_rec, const char *ntype);
void mo_api_notify_op(mo_api *a, const json_t *op_rec, const json_t *inst_rec);
void mo_api_notify_inst(mo_api *a, const json_t *inst_rec, const char *state);
void mo_api_notify_inst_id(mo_api *a, const json_t *inst_rec, int created);

/* ---- federation (fed.c) --------------------------------------------------- */

int mo_api_fed_start(mo_api *a);
void mo_api_fed_stop(mo_api *a);

/* ---- placement (lcm.c) ---------------------------------------------------- */

/* The zone for an InstantiateAppRequest: selectedMECHostInfo names it (by
 * hostId string, hostId.zoneId, or hostName = zone id or name), else the
 * zone nearest to locationConstraints.area (GeoJSON Point or Polygon
 * centroid), among zones of locationConstraints.countryCode when given.
 * NULL with *why set when none fits. */
const mo_api_zone *mo_api_place(const mo_api_config *cfg, json_t *req, const char **why);

/* ---- packages (pkgm.c) ---------------------------------------------------- */

/* SHA-256 over the files under dir, as documented ("tree digest"):
 * sha256 of the lines "<sha256 hex>  <path>\n" sorted by path (bytes),
 * every regular file, .git excluded.  out: 65 bytes. */
int mo_api_tree_digest(const char *dir, char out[65]);
int mo_api_file_sha256(const char *path, char out[65]);
/* Parse "bytes=a-b" against size: 1 and the range, 0 when absent or not
 * a single byte range (send everything), -1 when unsatisfiable. */
int mo_api_parse_range(const char *h, uint64_t size, uint64_t *off, uint64_t *len);
/* The plan variables the server offers a package plan, for a zone and an
 * instance (either may be NULL at onboarding: placeholders). */
json_t *mo_api_plan_vars(const mo_api_zone *z, const json_t *inst_rec, const char *opstate);

/* ---- handlers ------------------------------------------------------------- */

void mo_api_h_health(mo_api *a, mo_api_req *q, mo_api_reply *r);
void mo_api_h_metrics(mo_api *a, mo_api_req *q, mo_api_reply *r);
void mo_api_h_openapi(mo_api *a, mo_api_req *q, mo_api_reply *r);

void mo_api_h_pkg_create(mo_api *a, mo_api_req *q, mo_api_reply *r);
void mo_api_h_pkg_list(mo_api *a, mo_api_req *q, mo_api_reply *r);
void mo_api_h_pkg_get(mo_api *a, mo_api_req *q, mo_api_reply *r);
void mo_api_h_pkg_patch(mo_api *a, mo_api_req *q, mo_api_reply *r);
void mo_api_h_pkg_delete(mo_api *a, mo_api_req *q, mo_api_reply *r);
void mo_api_h_pkg_appd(mo_api *a, mo_api_req *q, mo_api_reply *r);
void mo_api_h_pkg_content_get(mo_api *a, mo_api_req *q, mo_api_reply *r);
void mo_api_h_pkg_content_put(mo_api *a, mo_api_req *q, mo_api_reply *r);
void mo_api_h_pkg_appd_by_appdid(mo_api *a, mo_api_req *q, mo_api_reply *r);
void mo_api_h_pkg_content_by_appdid(mo_api *a, mo_api_req *q, mo_api_reply *r);

void mo_api_h_sub_create_pkgm(mo_api *a, mo_api_req *q, mo_api_reply *r);
void mo_api_h_sub_create_lcm(mo_api *a, mo_api_req *q, mo_api_reply *r);
void mo_api_h_sub_list_pkgm(mo_api *a, mo_api_req *q, mo_api_reply *r);
void mo_api_h_sub_list_lcm(mo_api *a, mo_api_req *q, mo_api_reply *r);
void mo_api_h_sub_get(mo_api *a, mo_api_req *q, mo_api_reply *r);
void mo_api_h_sub_delete(mo_api *a, mo_api_req *q, mo_api_reply *r);

void mo_api_h_inst_create(mo_api *a, mo_api_req *q, mo_api_reply *r);
void mo_api_h_inst_list(mo_api *a, mo_api_req *q, mo_api_reply *r);
void mo_api_h_inst_get(mo_api *a, mo_api_req *q, mo_api_reply *r);
void mo_api_h_inst_delete(mo_api *a, mo_api_req *q, mo_api_reply *r);
void mo_api_h_inst_instantiate(mo_api *a, mo_api_req *q, mo_api_reply *r);
void mo_api_h_inst_terminate(mo_api *a, mo_api_req *q, mo_api_reply *r);
void mo_api_h_inst_operate(mo_api *a, mo_api_req *q, mo_api_reply *r);
void mo_api_h_op_list(mo_api *a, mo_api_req *q, mo_api_reply *r);
void mo_api_h_op_get(mo_api *a, mo_api_req *q, mo_api_reply *r);
void mo_api_h_op_cancel(mo_api *a, mo_api_req *q, mo_api_reply *r);
void mo_api_h_op_fail(mo_api *a, mo_api_req *q, mo_api_reply *r);
void mo_api_h_op_retry(mo_api *a, mo_api_req *q, mo_api_reply *r);

void mo_api_h_zones(mo_api *a, mo_api_req *q, mo_api_reply *r);
void mo_api_h_fed_system_get(mo_api *a, mo_api_req *q, mo_api_reply *r);
void mo_api_h_fed_system_patch(mo_api *a, mo_api_req *q, mo_api_reply *r);
void mo_api_h_fed_systems(mo_api *a, mo_api_req *q, mo_api_reply *r);

void mo_api_h_dep_create(mo_api *a, mo_api_req *q, mo_api_reply *r);
void mo_api_h_dep_list(mo_api *a, mo_api_req *q, mo_api_reply *r);
void mo_api_h_dep_get(mo_api *a, mo_api_req *q, mo_api_reply *r);
void mo_api_h_dep_delete(mo_api *a, mo_api_req *q, mo_api_reply *r);
void mo_api_h_dep_plan(mo_api *a, mo_api_req *q, mo_api_reply *r);
void mo_api_h_dep_apply(mo_api *a, mo_api_req *q, mo_api_reply *r);
void mo_api_h_dep_destroy(mo_api *a, mo_api_req *q, mo_api_reply *r);
void mo_api_h_dep_events(mo_api *a, mo_api_req *q, mo_api_reply *r);

/* ---- git sources for packages and deployments (fetch.c) -------------------- */

/* Clone a git source ("git+file:///r.git//sub?ref=v1", "file:///r",
 * "git+https://...") into the new directory dest: the tree of sub at ref
 * (default HEAD), without .git.  *commit (optional, 41 bytes) receives the
 * commit id. */
int mo_api_git_fetch(const char *source, const char *dest, char *commit);
/* url's authority carries a secret: a password (user:pass@), or any
 * userinfo in an http(s) URL (a token@).  The API refuses such sources: it
 * would have to store them and show them back. */
int mo_api_url_has_credentials(const char *url);
/* GET url into the file path (at most max bytes). */
int mo_api_http_fetch(const char *url, const char *path, size_t max);
/* Build a zip of the tree at dir into path. */
int mo_api_zip_tree(const char *dir, const char *path);
/* Extract zip into the new directory dest, refusing unsafe names and more
 * than max bytes in total. */
int mo_api_unzip(const char *zip, const char *dest, uint64_t max);

#endif
