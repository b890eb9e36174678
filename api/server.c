/*
 * server.c - the HTTP side of `mecorch serve`: the route table, the
 * libmicrohttpd daemon (epoll with a thread pool, TLS through GnuTLS when a
 * certificate is configured, optional client certificates), request bodies,
 * authentication (bearer tokens and certificate CNs mapped to tenants and
 * roles), RFC 7807 problem replies, metrics, /health and /openapi.yaml,
 * and the server's start and stop.
 *
 * A request goes: route lookup (404 / 405 with Allow), authentication (401
 * / 403), size and media checks (413 / 415) before the body is read, body
 * collection (JSON in memory, package uploads spooled to a file), JSON
 * parsing (400), then the handler.  Handlers only touch the store and the
 * job queue, so they never block on a plan run.
 */
#include "api_int.h"
#include "engine.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <math.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

extern const char mo_api_openapi_yaml[];
extern const size_t mo_api_openapi_yaml_len;

/* The route table: the single place to see what the server serves. */
const mo_api_route mo_api_routes[] = {
	{ "GET", "/health", mo_api_h_health, MO_R_PUBLIC },
	{ "GET", "/metrics", mo_api_h_metrics, MO_R_METRICS | MO_R_OPERATOR },
	{ "GET", "/openapi.yaml", mo_api_h_openapi, MO_R_PUBLIC },

	/* ETSI MEC 010-2 app_pkgm/v1 */
	{ "POST", "/app_pkgm/v1/app_packages", mo_api_h_pkg_create, MO_R_JSON },
	{ "GET", "/app_pkgm/v1/app_packages", mo_api_h_pkg_list, 0 },
	{ "GET", "/app_pkgm/v1/app_packages/{appPkgId}", mo_api_h_pkg_get, 0 },
	{ "PATCH", "/app_pkgm/v1/app_packages/{appPkgId}", mo_api_h_pkg_patch, MO_R_JSON },
	{ "DELETE", "/app_pkgm/v1/app_packages/{appPkgId}", mo_api_h_pkg_delete, 0 },
	{ "GET", "/app_pkgm/v1/app_packages/{appPkgId}/appd", mo_api_h_pkg_appd, 0 },
	{ "GET", "/app_pkgm/v1/app_packages/{appPkgId}/package_content", mo_api_h_pkg_content_get, 0 },
	{ "PUT", "/app_pkgm/v1/app_packages/{appPkgId}/package_content", mo_api_h_pkg_content_put, MO_R_ZIP },
	{ "GET", "/app_pkgm/v1/onboarded_app_packages/{appDId}/appd", mo_api_h_pkg_appd_by_appdid, 0 },
	{ "GET", "/app_pkgm/v1/onboarded_app_packages/{appDId}/package_content",
	  mo_api_h_pkg_content_by_appdid, 0 },
	{ "POST", "/app_pkgm/v1/subscriptions", mo_api_h_sub_create_pkgm, MO_R_JSON },
	{ "GET", "/app_pkgm/v1/subscriptions", mo_api_h_sub_list_pkgm, 0 },
	{ "GET", "/app_pkgm/v1/subscriptions/{subscriptionId}", mo_api_h_sub_get, 0 },
	{ "DELETE", "/app_pkgm/v1/subscriptions/{subscriptionId}", mo_api_h_sub_delete, 0 },

	/* ETSI MEC 010-2 app_lcm/v1 */
	{ "POST", "/app_lcm/v1/app_instances", mo_api_h_inst_create, MO_R_JSON },
	{ "GET", "/app_lcm/v1/app_instances", mo_api_h_inst_list, 0 },
	{ "GET", "/app_lcm/v1/app_instances/{appInstanceId}", mo_api_h_inst_get, 0 },
	{ "DELETE", "/app_lcm/v1/app_instances/{appInstanceId}", mo_api_h_inst_delete, 0 },
	{ "POST", "/app_lcm/v1/app_instances/{appInstanceId}/instantiate", mo_api_h_inst_instantiate, MO_R_JSON },
	{ "POST", "/app_lcm/v1/app_instances/{appInstanceId}/terminate", mo_api_h_inst_terminate, MO_R_JSON },
	{ "POST", "/app_lcm/v1/app_instances/{appInstanceId}/operate", mo_api_h_inst_operate, MO_R_JSON },
	{ "GET", "/app_lcm/v1/app_lcm_op_occs", mo_api_h_op_list, 0 },
	{ "GET", "/app_lcm/v1/app_lcm_op_occs/{appLcmOpOccId}", mo_api_h_op_get, 0 },
	{ "POST", "/app_lcm/v1/app_lcm_op_occs/{appLcmOpOccId}/cancel", mo_api_h_op_cancel, MO_R_OPTJSON },
	{ "POST", "/app_lcm/v1/app_lcm_op_occs/{appLcmOpOccId}/fail", mo_api_h_op_fail, MO_R_OPTJSON },
	{ "POST", "/app_lcm/v1/app_lcm_op_occs/{appLcmOpOccId}/retry", mo_api_h_op_retry, MO_R_OPTJSON },
	{ "POST", "/app_lcm/v1/subscriptions", mo_api_h_sub_create_lcm, MO_R_JSON },
	{ "GET", "/app_lcm/v1/subscriptions", mo_api_h_sub_list_lcm, 0 },
	{ "GET", "/app_lcm/v1/subscriptions/{subscriptionId}", mo_api_h_sub_get, 0 },
	{ "DELETE", "/app_lcm/v1/subscriptions/{subscriptionId}", mo_api_h_sub_delete, 0 },

	/* this MEC system: zones and the federation (MEC 040 client) */
	{ "GET", "/mecorch/v1/zones", mo_api_h_zones, 0 },
	{ "GET", "/mecorch/v1/federation/system", mo_api_h_fed_system_get, MO_R_OPERATOR },
	{ "PATCH", "/mecorch/v1/federation/system", mo_api_h_fed_system_patch, MO_R_OPERATOR | MO_R_JSON },
	{ "GET", "/mecorch/v1/federation/systems", mo_api_h_fed_systems, MO_R_OPERATOR },

	/* DevOps: plans from git, reviewed, then applied or destroyed */
	{ "POST", "/mecorch/v1/deployments", mo_api_h_dep_create, MO_R_OPERATOR | MO_R_JSON },
	{ "GET", "/mecorch/v1/deployments", mo_api_h_dep_list, MO_R_OPERATOR },
	{ "GET", "/mecorch/v1/deployments/{deploymentId}", mo_api_h_dep_get, MO_R_OPERATOR },
	{ "DELETE", "/mecorch/v1/deployments/{deploymentId}", mo_api_h_dep_delete, MO_R_OPERATOR },
	{ "POST", "/mecorch/v1/deployments/{deploymentId}/plan", mo_api_h_dep_plan, MO_R_OPERATOR | MO_R_OPTJSON },
	{ "POST", "/mecorch/v1/deployments/{deploymentId}/apply", mo_api_h_dep_apply, MO_R_OPERATOR | MO_R_OPTJSON },
	{ "POST", "/mecorch/v1/deployments/{deploymentId}/destroy", mo_api_h_dep_destroy,
	  MO_R_OPERATOR | MO_R_OPTJSON },
	{ "GET", "/mecorch/v1/deployments/{deploymentId}/events", mo_api_h_dep_events, MO_R_OPERATOR },
};
const size_t mo_api_nroutes = MO_ARRAY_SIZE(mo_api_routes);

/* ---- small helpers ---------------------------------------------------------- */

void mo_api_uuid(char out[37])
{
	unsigned char b[16];
	static const char hex[] = "0123456789abcdef";
	int j = 0;
	if (mo_random(b, sizeof(b)) < 0) {
		int64_t t = mo_now_us();
		memcpy(b, &t, sizeof(t));
		memcpy(b + 8, &t, sizeof(t));
	}
	b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);
	b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
	for (int i = 0; i < 16; i++) {
		if (i == 4 || i == 6 || i == 8 || i == 10)
			out[j++] = '-';
		out[j++] = hex[b[i] >> 4];
		out[j++] = hex[b[i] & 15];
	}
	out[j] = '\0';
}

json_t *mo_api_timestamp(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return json_pack("{s:I,s:I}", "seconds", (json_int_t)ts.tv_sec, "nanoSeconds", (json_int_t)ts.tv_nsec);
}

json_t *mo_api_link(const mo_api *a, const char *fmt, ...)
{
	char path[1024];
	va_list ap;
	json_t *l;
	char *href;
	va_start(ap, fmt);
	vsnprintf(path, sizeof(path), fmt, ap);
	va_end(ap);
	href = mo_sprintf("%s%s", a->base, path);
	l = json_pack("{s:s}", "href", href ? href : path);
	mo_free(href);
	return l;
}

int mo_api_rmtree(const char *path)
{
	DIR *d;
	struct dirent *e;
	struct stat top;
	int rc = 0;
	/* a link is removed, never followed: what it names is not ours */
	if (lstat(path, &top) == 0 && !S_ISDIR(top.st_mode))
		return unlink(path) == 0 ? 0 : mo_error_set(MO_EIO, "unlink %s: %s", path, strerror(errno));
	if (!(d = opendir(path))) {
		if (errno == ENOENT)
			return 0;
		if (errno == ENOTDIR)
			return unlink(path) == 0 ? 0 : mo_error_set(MO_EIO, "unlink %s: %s", path, strerror(errno));
		return mo_error_set(MO_EIO, "%s: %s", path, strerror(errno));
	}
	while ((e = readdir(d))) {
		char *p;
		struct stat sb;
		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		if (!(p = mo_sprintf("%s/%s", path, e->d_name))) {
			rc = mo_error_set(MO_ENOMEM, "out of memory");
			break;
		}
		if (lstat(p, &sb) == 0 && S_ISDIR(sb.st_mode))
			rc = mo_api_rmtree(p);
		else if (unlink(p) != 0)
			rc = mo_error_set(MO_EIO, "unlink %s: %s", p, strerror(errno));
		mo_free(p);
		if (rc < 0)
			break;
	}
	closedir(d);
	if (rc == 0 && rmdir(path) != 0)
		rc = mo_error_set(MO_EIO, "rmdir %s: %s", path, strerror(errno));
	return rc;
}

int mo_api_mkdirs(const char *path)
{
	char *p = mo_strdup(path);
	int rc = 0;
	if (!p)
		return mo_error_set(MO_ENOMEM, "out of memory");
	for (char *s = p + 1; ; s++) {
		if (*s == '/' || *s == '\0') {
			char c = *s;
			*s = '\0';
			if (mkdir(p, 0750) != 0 && errno != EEXIST) {
				rc = mo_error_set(MO_EIO, "mkdir %s: %s", p, strerror(errno));
				break;
			}
			*s = c;
			if (!c)
				break;
		}
	}
	mo_free(p);
	return rc;
}

/* ---- replies ------------------------------------------------------------------ */

static const char *status_title(int status)
{
	switch (status) {
	case 400: return "Bad Request";
	case 401: return "Unauthorized";
	case 403: return "Forbidden";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 406: return "Not Acceptable";
	case 409: return "Conflict";
	case 413: return "Payload Too Large";
	case 415: return "Unsupported Media Type";
	case 416: return "Range Not Satisfiable";
	case 422: return "Unprocessable Entity";
	case 500: return "Internal Server Error";
	case 502: return "Bad Gateway";
	case 503: return "Service Unavailable";
	case 504: return "Gateway Timeout";
	default: return "Error";
	}
}

void mo_api_reply_json(mo_api_reply *r, int status, json_t *doc)
{
	json_decref(r->json);
	r->status = doc ? status : 500;
	r->json = doc;
	r->ctype = NULL;
}

void mo_api_problem(mo_api_reply *r, int status, const char *fmt, ...)
{
	char detail[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(detail, sizeof(detail), fmt, ap);
	va_end(ap);
	json_decref(r->json);
	r->json = json_pack("{s:s,s:s,s:i,s:s}", "type", "about:blank", "title", status_title(status),
			    "status", status, "detail", detail);
	if (!r->json) /* detail not UTF-8 */
		r->json = json_pack("{s:s,s:s,s:i}", "type", "about:blank", "title", status_title(status),
				    "status", status);
	r->status = status;
	r->ctype = "application/problem+json";
}

static void reply_clear(mo_api_reply *r)
{
	json_decref(r->json);
	mo_free(r->text);
	mo_free(r->location);
	mo_free(r->content_range);
	mo_free(r->allow);
	if (r->fd >= 0)
		close(r->fd);
	memset(r, 0, sizeof(*r));
	r->fd = -1;
}

const char *mo_api_query(mo_api_req *q, const char *name)
{
	return MHD_lookup_connection_value(q->conn, MHD_GET_ARGUMENT_KIND, name);
}

const char *mo_api_query_flag(mo_api_req *q, const char *name)
{
	const char *value = NULL;
	size_t len = 0;

	if (MHD_lookup_connection_value_n(q->conn, MHD_GET_ARGUMENT_KIND, name, strlen(name), &value, &len) != MHD_YES)
		return NULL;
	return value ? value : "";
}

const char *mo_api_header(mo_api_req *q, const char *name)
{
	return MHD_lookup_connection_value(q->conn, MHD_HEADER_KIND, name);
}

int mo_api_want_str(mo_api_reply *r, json_t *obj, const char *key, int required, const char **out)
{
	json_t *v = json_object_get(obj, key);
	*out = NULL;
	if (!v || json_is_null(v)) {
		if (required) {
			mo_api_problem(r, 400, "'%s' is required", key);
			return -1;
		}
		return 0;
	}
	if (!json_is_string(v)) {
		mo_api_problem(r, 400, "'%s' must be a string", key);
		return -1;
	}
	if (required && !json_string_length(v)) {
		mo_api_problem(r, 400, "'%s' must not be empty", key);
		return -1;
	}
	*out = json_string_value(v);
	return 0;
}

int mo_api_want_obj(mo_api_reply *r, json_t *obj, const char *key, int required, json_t **out)
{
	json_t *v = json_object_get(obj, key);
	*out = NULL;
	if (!v || json_is_null(v)) {
		if (required) {
			mo_api_problem(r, 400, "'%s' is required", key);
			return -1;
		}
		return 0;
	}
	if (!json_is_object(v)) {
		mo_api_problem(r, 400, "'%s' must be an object", key);
		return -1;
	}
	*out = v;
	return 0;
}

int mo_api_want_arr(mo_api_reply *r, json_t *obj, const char *key, int required, json_t **out)
{
	json_t *v = json_object_get(obj, key);
	*out = NULL;
	if (!v || json_is_null(v)) {
		if (required) {
			mo_api_problem(r, 400, "'%s' is required", key);
			return -1;
		}
		return 0;
	}
	if (!json_is_array(v)) {
		mo_api_problem(r, 400, "'%s' must be an array", key);
		return -1;
	}
	*out = v;
	return 0;
}

int mo_api_want_enum(mo_api_reply *r, json_t *obj, const char *key, int required,
		     const char *const *values, const char **out)
{
	mo_buf b = MO_BUF_INIT;
	if (mo_api_want_str(r, obj, key, required, out) < 0)
		return -1;
	if (!*out)
		return 0;
	for (size_t i = 0; values[i]; i++)
		if (!strcmp(values[i], *out))
			return 0;
	for (size_t i = 0; values[i]; i++)
		mo_buf_printf(&b, "%s%s", i ? ", " : "", values[i]);
	mo_api_problem(r, 400, "'%s' must be one of %s", key, b.ptr ? b.ptr : "");
	mo_buf_free(&b);
	return -1;
}

int mo_api_visible(const mo_api_req *q, const json_t *rec)
{
	if (!rec)
		return 0;
	if (q->who && q->who->role == MO_ROLE_OPERATOR)
		return 1;
	return q->who && !strcmp(mo_api_rec_tenant(rec), q->who->tenant);
}

/* ---- metrics --------------------------------------------------------------------- */

static const int status_slots[MO_API_STATUS_SLOTS - 1] = {
	200, 201, 202, 204, 206, 400, 401, 403, 404, 405, 406, 409,
	412, 413, 415, 416, 422, 429, 500, 502, 503, 504, 304,
};
static const double lat_bounds[MO_API_LAT_BUCKETS] = {
	0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
};

static int status_slot(int status)
{
	for (int i = 0; i < MO_API_STATUS_SLOTS - 1; i++)
		if (status_slots[i] == status)
			return i;
	return MO_API_STATUS_SLOTS - 1;
}

static void count_request(mo_api *a, int route, int status, int64_t us)
{
	double s = us / 1e6;
	int b;
	if (route < 0 || route >= (int)mo_api_nroutes)
		route = (int)mo_api_nroutes;
	__atomic_add_fetch(&a->req_count[route][status_slot(status)], 1, __ATOMIC_RELAXED);
	for (b = 0; b < MO_API_LAT_BUCKETS && s > lat_bounds[b]; b++)
		;
	__atomic_add_fetch(&a->lat_bucket[b], 1, __ATOMIC_RELAXED);
	__atomic_add_fetch(&a->lat_sum_us, (uint64_t)us, __ATOMIC_RELAXED);
	__atomic_add_fetch(&a->lat_count, 1, __ATOMIC_RELAXED);
}

static void count_by(json_t *recs, const char *field, const char *sub, json_t *counts)
{
	size_t i;
	json_t *rec;
	json_array_foreach(recs, i, rec) {
		json_t *doc = mo_api_rec_doc(rec);
		const char *v = sub ? mo_api_jstr(json_object_get(doc, sub), field) : mo_api_jstr(doc, field);
		if (!v)
			continue;
		json_object_set_new(counts, v, json_integer(json_integer_value(json_object_get(counts, v)) + 1));
	}
}

static void gauge_family(mo_buf *b, const char *name, const char *help, const char *label,
			 const char *const *values, json_t *counts)
{
	mo_buf_printf(b, "# HELP %s %s\n# TYPE %s gauge\n", name, help, name);
	for (size_t i = 0; values[i]; i++)
		mo_buf_printf(b, "%s{%s=\"%s\"} %lld\n", name, label, values[i],
			      (long long)json_integer_value(json_object_get(counts, values[i])));
}

void mo_api_h_metrics(mo_api *a, mo_api_req *q, mo_api_reply *r)
{
	static const char *const opstates[] = { "STARTING", "PROCESSING", "COMPLETED", "FAILED_TEMP", "FAILED", NULL };
	static const char *const onb[] = { "CREATED", "UPLOADING", "PROCESSING", "ONBOARDED", NULL };
	static const char *const inst[] = { "NOT_INSTANTIATED", "INSTANTIATED", NULL };
	mo_buf b = MO_BUF_INIT;
	uint64_t cum = 0;
	json_t *ops = mo_api_store_all(a->st, MO_K_OP), *pkgs = mo_api_store_all(a->st, MO_K_PKG);
	json_t *insts = mo_api_store_all(a->st, MO_K_INST), *deps = mo_api_store_all(a->st, MO_K_DEP);
	json_t *c1 = json_object(), *c2 = json_object(), *c3 = json_object(), *rec;
	long long resources = 0;
	size_t i;
	(void)q;
	mo_buf_puts(&b, "# HELP mecorch_api_requests_total API requests by route and status.\n"
			"# TYPE mecorch_api_requests_total counter\n");
	for (size_t rt = 0; rt <= mo_api_nroutes; rt++) {
		for (int s = 0; s < MO_API_STATUS_SLOTS; s++) {
			uint64_t n = __atomic_load_n(&a->req_count[rt][s], __ATOMIC_RELAXED);
			char st[8];
			if (!n)
				continue;
			if (s == MO_API_STATUS_SLOTS - 1)
				snprintf(st, sizeof(st), "other");
			else
				snprintf(st, sizeof(st), "%d", status_slots[s]);
			if (rt == mo_api_nroutes)
				mo_buf_printf(&b, "mecorch_api_requests_total{method=\"\",route=\"unmatched\",status=\"%s\"} %llu\n",
					      st, (unsigned long long)n);
			else
				mo_buf_printf(&b, "mecorch_api_requests_total{method=\"%s\",route=\"%s\",status=\"%s\"} %llu\n",
					      mo_api_routes[rt].method, mo_api_routes[rt].pattern, st,
					      (unsigned long long)n);
		}
	}
	mo_buf_puts(&b, "# HELP mecorch_api_request_duration_seconds Time from request received to reply queued.\n"
			"# TYPE mecorch_api_request_duration_seconds histogram\n");
	for (int k = 0; k <= MO_API_LAT_BUCKETS; k++) {
		cum += __atomic_load_n(&a->lat_bucket[k], __ATOMIC_RELAXED);
		if (k < MO_API_LAT_BUCKETS)
			mo_buf_printf(&b, "mecorch_api_request_duration_seconds_bucket{le=\"%g\"} %llu\n",
				      lat_bounds[k], (unsigned long long)cum);
		else
			mo_buf_printf(&b, "mecorch_api_request_duration_seconds_bucket{le=\"+Inf\"} %llu\n",
				      (unsigned long long)cum);
	}
	mo_buf_printf(&b, "mecorch_api_request_duration_seconds_sum %.6f\nmecorch_api_request_duration_seconds_count %llu\n",
		      __atomic_load_n(&a->lat_sum_us, __ATOMIC_RELAXED) / 1e6,
		      (unsigned long long)__atomic_load_n(&a->lat_count, __ATOMIC_RELAXED));
	count_by(ops, "operationState", NULL, c1);
	gauge_family(&b, "mecorch_lcm_operations", "Application LCM operation occurrences by state.",
		     "operation_state", opstates, c1);
	count_by(pkgs, "onboardingState", NULL, c2);
	gauge_family(&b, "mecorch_app_packages", "Application packages by onboarding state.",
		     "onboarding_state", onb, c2);
	count_by(insts, "instantiationState", NULL, c3);
	gauge_family(&b, "mecorch_app_instances", "Application instances by instantiation state.",
		     "instantiation_state", inst, c3);
	json_array_foreach(insts, i, rec)
		resources += json_integer_value(json_object_get(mo_api_rec_int(rec), "resources"));
	json_array_foreach(deps, i, rec)
		resources += json_integer_value(json_object_get(mo_api_rec_int(rec), "resources"));
	mo_buf_printf(&b, "# HELP mecorch_resources_under_management Resources recorded in the state of every "
			  "application instance and deployment.\n# TYPE mecorch_resources_under_management gauge\n"
			  "mecorch_resources_under_management %lld\n", resources);
	mo_buf_printf(&b, "# HELP mecorch_notifications_pending Notifications waiting in the outbox.\n"
			  "# TYPE mecorch_notifications_pending gauge\nmecorch_notifications_pending %lld\n",
		      (long long)mo_api_store_outbox_size(a->st));
	mo_buf_printf(&b, "# HELP mecorch_notifications_delivered_total Notifications delivered.\n"
			  "# TYPE mecorch_notifications_delivered_total counter\n"
			  "mecorch_notifications_delivered_total %llu\n",
		      (unsigned long long)__atomic_load_n(&a->notify_sent, __ATOMIC_RELAXED));
	mo_buf_printf(&b, "# HELP mecorch_notification_failures_total Failed notification delivery attempts.\n"
			  "# TYPE mecorch_notification_failures_total counter\n"
			  "mecorch_notification_failures_total %llu\n",
		      (unsigned long long)__atomic_load_n(&a->notify_failed, __ATOMIC_RELAXED));
	pthread_mutex_lock(&a->flock);
	mo_buf_printf(&b, "# HELP mecorch_federation_registered 1 while this MEC system is registered with the federator.\n"
			  "# TYPE mecorch_federation_registered gauge\nmecorch_federation_registered %d\n",
		      a->registered);
	pthread_mutex_unlock(&a->flock);
	json_decref(ops);
	json_decref(pkgs);
	json_decref(insts);
	json_decref(deps);
	json_decref(c1);
	json_decref(c2);
	json_decref(c3);
	r->status = 200;
	r->text = b.ptr;
	r->text_len = b.len;
	r->ctype = "text/plain; version=0.0.4; charset=utf-8";
}

void mo_api_h_health(mo_api *a, mo_api_req *q, mo_api_reply *r)
{
	int reg;
	(void)q;
	pthread_mutex_lock(&a->flock);
	reg = a->registered;
	pthread_mutex_unlock(&a->flock);
	mo_api_reply_json(r, 200, json_pack("{s:s,s:s,s:I,s:{s:b,s:b}}", "status", "ok", "version", MO_VERSION,
					    "uptimeSeconds", (json_int_t)((mo_now_ms() - a->started_ms) / 1000),
					    "federation", "configured", a->cfg->fed_url != NULL, "registered",
					    reg));
}

void mo_api_h_openapi(mo_api *a, mo_api_req *q, mo_api_reply *r)
{
	(void)q;
	r->status = 200;
	r->text = mo_strndup(a->openapi, a->openapi_len);
	r->text_len = a->openapi_len;
	r->ctype = "application/yaml";
}

/* ---- routing and authentication ---------------------------------------------------- */

/* Match url against pattern; fills params.  1 on a match. */
static int match(const char *pat, const char *url, char **params)
{
	int np = 0;
	while (*pat && *url) {
		if (*pat == '{') {
			const char *end = strchr(url, '/');
			size_t n = end ? (size_t)(end - url) : strlen(url);
			if (n == 0 || n > 256)
				return 0;
			if (params && np < 2) {
				mo_free(params[np]);
				params[np] = mo_strndup(url, n);
			}
			np++;
			url += n;
			pat = strchr(pat, '}') + 1;
			continue;
		}
		if (*pat != *url)
			return 0;
		pat++;
		url++;
	}
	return *pat == '\0' && *url == '\0';
}

static const mo_api_principal *principal_for_token(const mo_api_config *c, const char *tok)
{
	const mo_api_principal *found = NULL;
	size_t tl = strlen(tok);
	for (size_t i = 0; i < c->nprincipals; i++) {
		const char *t = c->principals[i].token;
		size_t l;
		unsigned char diff = 0;
		if (!t)
			continue;
		l = strlen(t);
		for (size_t k = 0; k < l; k++)
			diff |= (unsigned char)(t[k] ^ (k < tl ? tok[k] : 0));
		if (!diff && l == tl)
			found = &c->principals[i];
	}
	return found;
}

/* Whether the peer of conn presented a client certificate that verifies
 * against tls.clientCaFile (chain, validity dates, and an extendedKeyUsage
 * that allows TLS client authentication, when the certificate has one: a
 * server certificate of the same CA is not a client certificate).  1 with
 * its subject CN in cn ("" when it has none or it does not fit); 0 when no
 * certificate was presented, -1 when the one presented does not verify. */
static int client_cert_verified(struct MHD_Connection *conn, char *cn, size_t n)
{
	const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_GNUTLS_SESSION);
	gnutls_typed_vdata_st purpose = { GNUTLS_DT_KEY_PURPOSE_OID, (unsigned char *)GNUTLS_KP_TLS_WWW_CLIENT, 0 };
	gnutls_session_t s;
	const gnutls_datum_t *certs;
	unsigned int ncerts = 0, status = 1;
	gnutls_x509_crt_t crt;
	size_t sz = n;
	cn[0] = '\0';
	if (!ci || !ci->tls_session)
		return 0;
	s = (gnutls_session_t)ci->tls_session;
	certs = gnutls_certificate_get_peers(s, &ncerts);
	if (!certs || ncerts == 0)
		return 0;
	if (gnutls_certificate_verify_peers(s, &purpose, 1, &status) != GNUTLS_E_SUCCESS || status != 0)
		return -1;
	if (gnutls_x509_crt_init(&crt) != GNUTLS_E_SUCCESS)
		return 1;
	if (gnutls_x509_crt_import(crt, &certs[0], GNUTLS_X509_FMT_DER) != GNUTLS_E_SUCCESS ||
	    gnutls_x509_crt_get_dn_by_oid(crt, GNUTLS_OID_X520_COMMON_NAME, 0, 0, cn, &sz) != GNUTLS_E_SUCCESS)
		cn[0] = '\0';
	gnutls_x509_crt_deinit(crt);
	return 1;
}

/* 0 with q->who set, or -1 with a 401 / 403 in r. */
static int authenticate(mo_api *a, mo_api_req *q, mo_api_reply *r)
{
	const mo_api_config *c = a->cfg;
	const char *h = mo_api_header(q, MHD_HTTP_HEADER_AUTHORIZATION);
	const mo_api_principal *by_cert = NULL;
	unsigned flags = q->route->flags;
	if (c->tls_client_ca) {
		char cn[256];
		int v = client_cert_verified(q->conn, cn, sizeof(cn));
		if (v > 0) {
			for (size_t i = 0; cn[0] && i < c->nprincipals; i++)
				if (c->principals[i].cert_cn && !strcmp(c->principals[i].cert_cn, cn))
					by_cert = &c->principals[i];
		} else if (c->require_client_cert && !(flags & MO_R_PUBLIC)) {
			mo_api_problem(r, 401, v < 0 ? "the client certificate was refused: it is not issued by the "
				       "configured client CA, is outside its validity period, or is not for client "
				       "authentication" : "a client certificate is required");
			return -1;
		}
	}
	if ((flags & MO_R_PUBLIC) || ((flags & MO_R_METRICS) && c->metrics_public))
		return 0;
	if (h && !strncasecmp(h, "Bearer ", 7)) {
		const char *tok = h + 7;
		while (*tok == ' ')
			tok++;
		q->who = principal_for_token(c, tok);
		if (!q->who) {
			mo_api_problem(r, 401, "the bearer token is not valid");
			r->www_auth = 1;
			return -1;
		}
		if (by_cert && by_cert != q->who) {
			mo_api_problem(r, 403, "the bearer token and the client certificate name different principals");
			return -1;
		}
	} else if (by_cert) {
		q->who = by_cert;
	} else {
		mo_api_problem(r, 401, h ? "only bearer tokens are accepted" : "authentication required: send "
			       "'Authorization: Bearer <token>'");
		r->www_auth = 1;
		return -1;
	}
	if ((flags & MO_R_OPERATOR) && q->who->role != MO_ROLE_OPERATOR) {
		mo_api_problem(r, 403, "this endpoint is for operators; tenant '%s' may not use it", q->who->tenant);
		return -1;
	}
	return 0;
}

static int is_json_type(const char *ct)
{
	size_t n;
	if (!ct)
		return 0;
	n = strcspn(ct, ";");
	while (n > 0 && ct[n - 1] == ' ')
		n--;
	return (n == 16 && !strncasecmp(ct, "application/json", 16)) ||
	       (n > 5 && !strncasecmp(ct + n - 5, "+json", 5) && !strncasecmp(ct, "application/", 12));
}

static int is_zip_type(const char *ct)
{
	size_t n;
	if (!ct)
		return 0;
	n = strcspn(ct, "; ");
	return (n == 15 && !strncasecmp(ct, "application/zip", 15)) ||
	       (n == 24 && !strncasecmp(ct, "application/octet-stream", 24));
}

/* ---- the libmicrohttpd callbacks --------------------------------------------------- */

static enum MHD_Result send_reply(mo_api *a, mo_api_req *q, mo_api_reply *r)
{
	struct MHD_Response *resp = NULL;
	enum MHD_Result ret;
	char *text = NULL;
	size_t len = 0;
	const char *ctype = r->ctype;
	if (r->status == 0)
		mo_api_problem(r, 500, "the handler produced no reply");
	if (r->fd >= 0) {
		resp = MHD_create_response_from_fd_at_offset64(r->len, r->fd, r->off);
		if (resp)
			r->fd = -1; /* the response owns it */
	} else {
		if (r->json) {
			text = json_dumps(r->json, JSON_COMPACT);
			len = text ? strlen(text) : 0;
			if (!ctype)
				ctype = "application/json";
		} else if (r->text) {
			text = r->text;
			len = r->text_len;
			r->text = NULL;
		}
		resp = MHD_create_response_from_buffer(len, text ? text : (void *)"",
						       text ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
		if (!resp)
			mo_free(text);
	}
	if (!resp)
		return MHD_NO;
	if (ctype && (r->json || r->text_len || len || r->len))
		MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
	if (r->location)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_LOCATION, r->location);
	if (r->allow)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, r->allow);
	if (r->content_range)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_RANGE, r->content_range);
	if (r->www_auth)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer realm=\"mecorch\"");
	if (q->route && strstr(q->route->pattern, "package_content"))
		MHD_add_response_header(resp, MHD_HTTP_HEADER_ACCEPT_RANGES, "bytes");
	ret = MHD_queue_response(q->conn, (unsigned)r->status, resp);
	MHD_destroy_response(resp);
	count_request(a, q->route_index, r->status, mo_now_us() - q->t0_us);
	return ret;
}

/* Decide what can be decided from the headers alone: route, auth, size, media. */
static int early_checks(mo_api *a, mo_api_req *q, mo_api_reply *r)
{
	const char *cl = mo_api_header(q, MHD_HTTP_HEADER_CONTENT_LENGTH);
	const char *ct = mo_api_header(q, MHD_HTTP_HEADER_CONTENT_TYPE);
	unsigned long long len = cl ? strtoull(cl, NULL, 10) : 0;
	int path_known = 0;
	q->route_index = -1;
	for (size_t i = 0; i < mo_api_nroutes; i++) {
		if (!match(mo_api_routes[i].pattern, q->url, NULL))
			continue;
		path_known = 1;
		if (!strcmp(mo_api_routes[i].method, q->method) ||
		    (!strcmp(q->method, "HEAD") && !strcmp(mo_api_routes[i].method, "GET"))) {
			q->route = &mo_api_routes[i];
			q->route_index = (int)i;
			match(q->route->pattern, q->url, q->params);
			break;
		}
	}
	if (!q->route) {
		if (path_known) {
			/* Allow: every method of the routes with this path */
			mo_buf b = MO_BUF_INIT;
			for (size_t i = 0; i < mo_api_nroutes; i++)
				if (match(mo_api_routes[i].pattern, q->url, NULL))
					mo_buf_printf(&b, "%s%s", b.len ? ", " : "", mo_api_routes[i].method);
			mo_api_problem(r, 405, "%s is not allowed on %s", q->method, q->url);
			r->allow = b.ptr;
		} else {
			mo_api_problem(r, 404, "no resource at %s", q->url);
		}
		return -1;
	}
	if (authenticate(a, q, r) < 0)
		return -1;
	if (q->route->flags & MO_R_ZIP) {
		if (len > a->cfg->max_package) {
			mo_api_problem(r, 413, "the package is larger than %zu bytes", a->cfg->max_package);
			return -1;
		}
		if (!is_zip_type(ct)) {
			mo_api_problem(r, 415, "package content must be sent as application/zip");
			return -1;
		}
		q->upload_path = mo_sprintf("%s/upload-XXXXXX", a->tmp_dir);
		if (!q->upload_path || (q->upload_fd = mkstemp(q->upload_path)) < 0) {
			mo_api_problem(r, 500, "cannot spool the upload: %s", strerror(errno));
			return -1;
		}
	} else if (len > a->cfg->max_body) {
		mo_api_problem(r, 413, "the request body is larger than %zu bytes", a->cfg->max_body);
		return -1;
	} else if (len > 0 && !(q->route->flags & (MO_R_JSON | MO_R_OPTJSON)) && strcmp(q->method, "GET")) {
		mo_api_problem(r, 415, "this request takes no body");
		return -1;
	} else if (len > 0 && (q->route->flags & (MO_R_JSON | MO_R_OPTJSON)) && !is_json_type(ct)) {
		mo_api_problem(r, 415, "send the body as application/json (got %s)", ct ? ct : "no Content-Type");
		return -1;
	}
	return 0;
}

static int parse_body(mo_api *a, mo_api_req *q, mo_api_reply *r)
{
	json_error_t je;
	unsigned flags = q->route->flags;
	(void)a;
	if (!(flags & (MO_R_JSON | MO_R_OPTJSON)))
		return 0;
	if (q->body.len == 0) {
		if (flags & MO_R_JSON) {
			mo_api_problem(r, 400, "a JSON object body is required");
			return -1;
		}
		return 0;
	}
	if (!is_json_type(mo_api_header(q, MHD_HTTP_HEADER_CONTENT_TYPE))) {
		mo_api_problem(r, 415, "send the body as application/json");
		return -1;
	}
	q->json = json_loadb(q->body.ptr, q->body.len, JSON_REJECT_DUPLICATES, &je);
	if (!q->json) {
		mo_api_problem(r, 400, "malformed JSON at line %d, column %d: %s", je.line, je.column, je.text);
		return -1;
	}
	if (!json_is_object(q->json)) {
		mo_api_problem(r, 400, "the body must be a JSON object");
		return -1;
	}
	return 0;
}

static void req_free(mo_api_req *q)
{
	if (!q)
		return;
	mo_free(q->params[0]);
	mo_free(q->params[1]);
	mo_buf_free(&q->body);
	if (q->upload_fd >= 0)
		close(q->upload_fd);
	if (q->upload_path) {
		unlink(q->upload_path);
		mo_free(q->upload_path);
	}
	reply_clear(&q->early_reply);
	json_decref(q->json);
	mo_free(q);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
				  const char *version, const char *upload_data, size_t *upload_size,
				  void **req_cls)
{
	mo_api *a = cls;
	mo_api_req *q = *req_cls;
	mo_api_reply r;
	enum MHD_Result ret;
	(void)version;
	if (!q) {
		if (!(q = mo_calloc(1, sizeof(*q))))
			return MHD_NO;
		q->conn = conn;
		q->method = method;
		q->url = url;
		q->upload_fd = -1;
		q->early_reply.fd = -1;
		q->t0_us = mo_now_us();
		*req_cls = q;
		if (early_checks(a, q, &q->early_reply) < 0) {
			const char *cl = mo_api_header(q, MHD_HTTP_HEADER_CONTENT_LENGTH);
			if (!cl || !strcmp(cl, "0") || q->early_reply.status == 413 ||
			    q->early_reply.status == 401 || q->early_reply.status == 403)
				return send_reply(a, q, &q->early_reply);
			q->early = 1; /* read (and drop) a small body, then answer */
		}
		return MHD_YES;
	}
	if (*upload_size) {
		size_t n = *upload_size;
		*upload_size = 0;
		if (q->early || q->too_large)
			return MHD_YES;
		if (q->upload_fd >= 0) {
			if (q->upload_len + n > a->cfg->max_package) {
				q->too_large = 1;
				return MHD_YES;
			}
			for (size_t off = 0; off < n;) {
				ssize_t w = write(q->upload_fd, upload_data + off, n - off);
				if (w < 0) {
					if (errno == EINTR)
						continue;
					return MHD_NO;
				}
				off += (size_t)w;
			}
			q->upload_len += n;
			return MHD_YES;
		}
		if (q->body.len + n > a->cfg->max_body) {
			q->too_large = 1;
			return MHD_YES;
		}
		if (mo_buf_put(&q->body, upload_data, n) < 0)
			return MHD_NO;
		return MHD_YES;
	}
	if (q->early)
		return send_reply(a, q, &q->early_reply);
	memset(&r, 0, sizeof(r));
	r.fd = -1;
	if (q->too_large)
		mo_api_problem(&r, 413, "the request body is larger than %zu bytes",
			       q->upload_fd >= 0 ? a->cfg->max_package : a->cfg->max_body);
	else if (parse_body(a, q, &r) == 0)
		q->route->fn(a, q, &r);
	ret = send_reply(a, q, &r);
	reply_clear(&r);
	return ret;
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **req_cls,
			 enum MHD_RequestTerminationCode toe)
{
	(void)cls, (void)conn, (void)toe;
	req_free(*req_cls);
	*req_cls = NULL;
}

/* ---- start and stop ------------------------------------------------------------------ */

static int resolve_listen(const char *spec, struct addrinfo **res)
{
	char host[256];
	const char *port, *h = spec, *colon;
	size_t hn;
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
				  .ai_flags = AI_PASSIVE | AI_NUMERICSERV };
	if (spec[0] == '[') {
		const char *close = strchr(spec, ']');
		if (!close || close[1] != ':')
			return -1;
		h = spec + 1;
		hn = (size_t)(close - h);
		port = close + 2;
	} else {
		if (!(colon = strrchr(spec, ':')))
			return -1;
		hn = (size_t)(colon - spec);
		port = colon + 1;
	}
	if (hn >= sizeof(host) || !*port)
		return -1;
	memcpy(host, h, hn);
	host[hn] = '\0';
	return getaddrinfo(hn ? host : "0.0.0.0", port, &hints, res) == 0 ? 0 : -1;
}

static int write_port_file(const char *path, unsigned port)
{
	char text[16];
	snprintf(text, sizeof(text), "%u\n", port);
	return mo_file_write_atomic(path, text, strlen(text));
}

unsigned mo_api_port(const mo_api *a)
{
	return a->port;
}

static int start_daemon(mo_api *a)
{
	const mo_api_config *c = a->cfg;
	struct addrinfo *ai = NULL;
	unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_ERROR_LOG;
	const union MHD_DaemonInfo *info;
	struct MHD_OptionItem opts[16];
	int n = 0;
	char host[NI_MAXHOST];
	if (resolve_listen(c->listen, &ai) != 0)
		return mo_error_set(MO_EINVAL, "config: listen: cannot use '%s' (want HOST:PORT)", c->listen);
	if (ai->ai_family == AF_INET6)
		flags |= MHD_USE_IPv6;
	if (c->tls_cert)
		flags |= MHD_USE_TLS;
	opts[n++] = (struct MHD_OptionItem){ MHD_OPTION_SOCK_ADDR, 0, ai->ai_addr };
	opts[n++] = (struct MHD_OptionItem){ MHD_OPTION_THREAD_POOL_SIZE, c->http_threads, NULL };
	opts[n++] = (struct MHD_OptionItem){ MHD_OPTION_CONNECTION_LIMIT, 4096, NULL };
	opts[n++] = (struct MHD_OptionItem){ MHD_OPTION_CONNECTION_TIMEOUT, 60, NULL };
	opts[n++] = (struct MHD_OptionItem){ MHD_OPTION_LISTEN_BACKLOG_SIZE, 1024, NULL };
	opts[n++] = (struct MHD_OptionItem){ MHD_OPTION_NOTIFY_COMPLETED, (intptr_t)on_completed, a };
	if (c->tls_cert) {
		opts[n++] = (struct MHD_OptionItem){ MHD_OPTION_HTTPS_MEM_CERT, 0, c->tls_cert };
		opts[n++] = (struct MHD_OptionItem){ MHD_OPTION_HTTPS_MEM_KEY, 0, c->tls_key };
		if (c->tls_client_ca)
			opts[n++] = (struct MHD_OptionItem){ MHD_OPTION_HTTPS_MEM_TRUST, 0, c->tls_client_ca };
	}
	opts[n++] = (struct MHD_OptionItem){ MHD_OPTION_END, 0, NULL };
	a->d = MHD_start_daemon(flags, 0, NULL, NULL, on_request, a, MHD_OPTION_ARRAY, opts, MHD_OPTION_END);
	if (!a->d) {
		freeaddrinfo(ai);
		return mo_error_set(MO_EIO, "cannot listen on %s%s", c->listen,
				    c->tls_cert ? " (or the TLS certificate and key were refused)" : "");
	}
	info = MHD_get_daemon_info(a->d, MHD_DAEMON_INFO_BIND_PORT);
	a->port = info ? info->port : 0;
	if (getnameinfo(ai->ai_addr, ai->ai_addrlen, host, sizeof(host), NULL, 0, NI_NUMERICHOST) != 0)
		snprintf(host, sizeof(host), "127.0.0.1");
	if (!strcmp(host, "0.0.0.0"))
		snprintf(host, sizeof(host), "127.0.0.1");
	if (c->public_url) {
		a->base = mo_strdup(c->public_url);
		while (a->base && strlen(a->base) > 1 && a->base[strlen(a->base) - 1] == '/')
			a->base[strlen(a->base) - 1] = '\0';
	} else {
		a->base = mo_sprintf(ai->ai_family == AF_INET6 ? "%s://[%s]:%u" : "%s://%s:%u",
				     c->tls_cert ? "https" : "http", host, a->port);
	}
	freeaddrinfo(ai);
	if (!a->base)
		return mo_error_set(MO_ENOMEM, "out of memory");
	return 0;
}

/* In every "href" under v that starts with from + "/", replace from with
 * to.  1 when one changed. */
static int rebase_hrefs(json_t *v, const char *from, size_t fl, const char *to)
{
	const char *k;
	json_t *e;
	size_t i;
	int changed = 0;
	if (json_is_object(v)) {
		json_object_foreach(v, k, e) {
			const char *h = json_string_value(e);
			if (h && !strcmp(k, "href") && !strncmp(h, from, fl) && h[fl] == '/') {
				char *n = mo_sprintf("%s%s", to, h + fl);
				if (n && json_string_set(e, n) == 0)
					changed = 1;
				mo_free(n);
			} else {
				changed |= rebase_hrefs(e, from, fl, to);
			}
		}
	} else if (json_is_array(v)) {
		json_array_foreach(v, i, e)
			changed |= rebase_hrefs(e, from, fl, to);
	}
	return changed;
}

/*
 * The records keep their _links as absolute URLs made with the base of the
 * server that wrote them.  When the base changed since the last start (TLS
 * turned on or off, another port, another publicUrl), rewrite them to this
 * server's base, so that resources and the notifications built from them
 * name a URL that answers.  The base is remembered in the store's metadata.
 */
static int rebase_links(mo_api *a)
{
	char *old = NULL;
	int rc = mo_api_store_meta_get(a->st, "base_url", &old);
	if (rc < 0 && rc != MO_ENOTFOUND)
		return rc;
	rc = 0;
	if (old && strcmp(old, a->base)) {
		size_t fl = strlen(old);
		mo_api_store_begin(a->st);
		for (int k = 0; k < MO_K_COUNT && rc >= 0; k++) {
			json_t *all = mo_api_store_all(a->st, k), *rec;
			size_t i;
			json_array_foreach(all, i, rec) {
				json_t *n = json_deep_copy(rec);
				const char *id = mo_api_jstr(mo_api_rec_doc(rec), "id");
				if (!n || !id) {
					json_decref(n);
					continue;
				}
				if (!rebase_hrefs(n, old, fl, a->base)) {
					json_decref(n);
					continue;
				}
				if ((rc = mo_api_store_put(a->st, k, id, n)) < 0)
					break;
			}
			json_decref(all);
		}
		rc = mo_api_store_end(a->st, rc >= 0);
	}
	if (rc >= 0 && (!old || strcmp(old, a->base)))
		rc = mo_api_store_meta_set(a->st, "base_url", a->base);
	mo_free(old);
	return rc < 0 ? mo_error_prefix("rewriting the links of %s", a->base) : 0;
}

int mo_api_start(mo_api **out, const mo_api_config *cfg)
{
	mo_api *a = mo_calloc(1, sizeof(*a));
	char *db = NULL;
	int rc;
	if (!a)
		return mo_error_set(MO_ENOMEM, "out of memory");
	a->cfg = cfg;
	a->started_ms = mo_now_ms();
	pthread_mutex_init(&a->qlock, NULL);
	pthread_cond_init(&a->qcond, NULL);
	pthread_mutex_init(&a->nlock, NULL);
	pthread_cond_init(&a->ncond, NULL);
	pthread_mutex_init(&a->flock, NULL);
	pthread_cond_init(&a->fcond, NULL);
	a->openapi = (char *)mo_api_openapi_yaml;
	a->openapi_len = mo_api_openapi_yaml_len;
	json_object_seed(0);
	a->pkg_dir = mo_sprintf("%s/packages", cfg->data_dir);
	a->inst_dir = mo_sprintf("%s/instances", cfg->data_dir);
	a->dep_dir = mo_sprintf("%s/deployments", cfg->data_dir);
	a->cache_dir = mo_sprintf("%s/cache", cfg->data_dir);
	a->tmp_dir = mo_sprintf("%s/tmp", cfg->data_dir);
	db = mo_sprintf("%s/server.db", cfg->data_dir);
	if (!a->pkg_dir || !a->inst_dir || !a->dep_dir || !a->cache_dir || !a->tmp_dir || !db) {
		rc = mo_error_set(MO_ENOMEM, "out of memory");
		goto fail;
	}
	if ((rc = mo_api_mkdirs(cfg->data_dir)) < 0 || (rc = mo_api_mkdirs(a->pkg_dir)) < 0 ||
	    (rc = mo_api_mkdirs(a->inst_dir)) < 0 || (rc = mo_api_mkdirs(a->dep_dir)) < 0 ||
	    (rc = mo_api_mkdirs(a->cache_dir)) < 0 || (rc = mo_api_rmtree(a->tmp_dir)) < 0 ||
	    (rc = mo_api_mkdirs(a->tmp_dir)) < 0)
		goto fail;
	if ((rc = mo_api_store_open(&a->st, db)) < 0)
		goto fail;
	if ((rc = start_daemon(a)) < 0 || (rc = rebase_links(a)) < 0)
		goto fail;
	if ((rc = mo_api_jobs_start(a)) < 0 || (rc = mo_api_jobs_resume(a)) < 0 ||
	    (rc = mo_api_notify_start(a)) < 0 || (rc = mo_api_fed_start(a)) < 0)
		goto fail;
	if (cfg->port_file && write_port_file(cfg->port_file, a->port) < 0) {
		rc = mo_error_prefix("port file %s", cfg->port_file);
		goto fail;
	}
	mo_free(db);
	*out = a;
	return 0;
fail:
	mo_free(db);
	mo_api_stop(a);
	return rc;
}

void mo_api_stop(mo_api *a)
{
	if (!a)
		return;
	a->stopping = 1;
	if (a->d)
		MHD_stop_daemon(a->d);
	mo_api_jobs_stop(a);
	mo_api_fed_stop(a);
	mo_api_notify_stop(a);
	mo_api_store_close(a->st);
	mo_free(a->base);
	mo_free(a->pkg_dir);
	mo_free(a->inst_dir);
	mo_free(a->dep_dir);
	mo_free(a->cache_dir);
	if (a->tmp_dir)
		mo_api_rmtree(a->tmp_dir);
	mo_free(a->tmp_dir);
	mo_free(a->system_id);
	mo_free(a->system_name);
	pthread_mutex_destroy(&a->qlock);
	pthread_cond_destroy(&a->qcond);
	pthread_mutex_destroy(&a->nlock);
	pthread_cond_destroy(&a->ncond);
	pthread_mutex_destroy(&a->flock);
	pthread_cond_destroy(&a->fcond);
	mo_free(a);
}
