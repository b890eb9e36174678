/*
 * notify.c - subscriptions (app_pkgm/v1 and app_lcm/v1) and the delivery of
 * notifications to their callbackUri.
 *
 * A state change queues its notifications in the outbox table in the same
 * transaction as the change (mo_api_notify_* are called between
 * mo_api_store_begin and _end), so none is lost across a crash or a
 * restart.  One thread delivers the outbox in order, per callback URI: a
 * POST answered 2xx is done; anything else is retried with exponential
 * backoff and jitter (notifications.retryBaseMs up to retryMaxMs), for as
 * long as the subscription exists, and later notifications to the same URI
 * wait behind it.
 */
#include "api_int.h"

#include <curl/curl.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

/* Subscription kinds (the record's int.kind). */
static const struct {
	const char *type;  /* subscriptionType as sent */
	const char *api;   /* "pkgm" or "lcm" */
	const char *kind;
} sub_types[] = {
	{ "AppPackageOnBoarding", "pkgm", "pkg_onboarding" },
	{ "AppPackageOnBoardingSubscription", "pkgm", "pkg_onboarding" },
	{ "AppPacakgeOperationChange", "pkgm", "pkg_change" },
	{ "AppPackageOperationChange", "pkgm", "pkg_change" },
	{ "AppPackageChangeSubscription", "pkgm", "pkg_change" },
	{ "AppPackageDeletion", "pkgm", "pkg_deletion" },
	{ "AppPackageDeletionSubscription", "pkgm", "pkg_deletion" },
	{ "AppLcmOpOccStateChange", "lcm", "op" },
	{ "AppLcmOpOccStateChangeSubscription", "lcm", "op" },
	{ "AppInstanceStateChange", "lcm", "inst_state" },
	{ "AppInstanceStateChangeSubscription", "lcm", "inst_state" },
	{ "AppIdentifierCreationSubscription", "lcm", "inst_create" },
	{ "AppIdentifierDeletionSubscription", "lcm", "inst_delete" },
};

/* ---- validation and filters -------------------------------------------------------------- */

static const char *const op_states[] = { "STARTING", "PROCESSING", "COMPLETED", "FAILED", "FAILED_TEMP", NULL };
static const char *const op_types[] = { "INSTANTIATE", "OPERATE", "TERMINATE", NULL };
static const char *const inst_states[] = { "NOT_INSTANTIATED", "STARTED", "STOPPED", NULL };
static const char *const selectors[] = { "VOID", "APP_IDENTITY", "APP_NAME", "APP_D_ID", "APP_FROM_PROVIDER", NULL };

static int in_list(const char *const *l, const char *s)
{
	for (size_t i = 0; l[i]; i++)
		if (!strcmp(l[i], s))
			return 1;
	return 0;
}

/* A string or an array of strings, each one of allowed.  0 or -1 (400 in r). */
static int check_str_or_arr(mo_api_reply *r, json_t *v, const char *key, const char *const *allowed)
{
	size_t i;
	json_t *e;
	if (!v)
		return 0;
	if (json_is_string(v)) {
		if (allowed && !in_list(allowed, json_string_value(v)))
			goto bad;
		return 0;
	}
	if (!json_is_array(v))
		goto bad;
	json_array_foreach(v, i, e)
		if (!json_is_string(e) || (allowed && !in_list(allowed, json_string_value(e))))
			goto bad;
	return 0;
bad:
	mo_api_problem(r, 400, "'%s' must be %s", key,
		       allowed ? "one of the allowed values, or an array of them" : "a string or an array of strings");
	return -1;
}

static int str_or_arr_has(const json_t *v, const char *s)
{
	size_t i;
	json_t *e;
	if (!v)
		return 1; /* no filter */
	if (!s)
		return 0;
	if (json_is_string(v))
		return !strcmp(json_string_value(v), s);
	json_array_foreach(v, i, e)
		if (json_is_string(e) && !strcmp(json_string_value(e), s))
			return 1;
	return json_array_size(v) == 0;
}

static int check_inst_filter(mo_api_reply *r, json_t *f)
{
	json_t *v;
	const char *sel;
	if (!f)
		return 0;
	if (!json_is_object(f)) {
		mo_api_problem(r, 400, "'appInstanceSubscriptionFilter' must be an object");
		return -1;
	}
	if (mo_api_want_enum(r, f, "appInstSelectorType", 0, selectors, &sel) < 0 ||
	    check_str_or_arr(r, json_object_get(f, "appInstances"), "appInstances", NULL) < 0 ||
	    mo_api_want_arr(r, f, "appsFromProviders", 0, &v) < 0)
		return -1;
	return 0;
}

static int inst_filter_match(const json_t *f, const json_t *inst_doc)
{
	const char *sel = mo_api_jstr(f, "appInstSelectorType");
	json_t *ids = json_object_get(f, "appInstances"), *provs, *p;
	size_t i;
	if (!f || !sel || !strcmp(sel, "VOID"))
		return 1;
	if (!inst_doc)
		return 0;
	if (!strcmp(sel, "APP_IDENTITY"))
		return str_or_arr_has(ids, mo_api_jstr(inst_doc, "id"));
	if (!strcmp(sel, "APP_NAME"))
		return str_or_arr_has(ids, mo_api_jstr(inst_doc, "appInstanceName")) ||
		       str_or_arr_has(ids, mo_api_jstr(inst_doc, "appName"));
	if (!strcmp(sel, "APP_D_ID"))
		return str_or_arr_has(ids, mo_api_jstr(inst_doc, "appDId"));
	provs = json_object_get(f, "appsFromProviders");
	json_array_foreach(provs, i, p) {
		json_t *prod = json_object_get(p, "appProducts"), *ver;
		const char *prov = mo_api_jstr(p, "appProvider");
		if (!prov || strcmp(prov, mo_api_jstr(inst_doc, "appProvider")))
			continue;
		if (!prod)
			return 1;
		if (mo_api_jstr(prod, "appName") && strcmp(mo_api_jstr(prod, "appName"), mo_api_jstr(inst_doc, "appName")))
			continue;
		ver = json_object_get(prod, "versions");
		if (!ver || !mo_api_jstr(ver, "appSoftVersion") ||
		    !strcmp(mo_api_jstr(ver, "appSoftVersion"), mo_api_jstr(inst_doc, "appSoftVersion")))
			return 1;
	}
	return 0;
}

static int pkg_filter_match(const json_t *filters, const json_t *pkg_doc)
{
	static const char *const keys[] = { "appDId", "appProvider", "appName", "appSoftwareVersion", "appDVersion",
					    "appPkgId", NULL };
	size_t i;
	json_t *f;
	if (!json_is_array(filters) || json_array_size(filters) == 0)
		return 1;
	json_array_foreach(filters, i, f) {
		int ok = 1;
		if (json_is_string(f)) {
			if (!strcmp(json_string_value(f), mo_api_jstr(pkg_doc, "appDId")))
				return 1;
			continue;
		}
		for (size_t k = 0; keys[k]; k++) {
			const char *want = mo_api_jstr(f, keys[k]);
			const char *have = mo_api_jstr(pkg_doc, strcmp(keys[k], "appPkgId") ? keys[k] : "id");
			if (want && (!have || strcmp(want, have)))
				ok = 0;
		}
		if (ok)
			return 1;
	}
	return 0;
}

/* ---- subscription handlers ----------------------------------------------------------------- */

static void sub_create(mo_api *a, mo_api_req *q, mo_api_reply *r, const char *api)
{
	const char *type, *uri, *kind = NULL;
	json_t *doc, *rec, *f, *v;
	char id[37];
	int rc;
	if (mo_api_want_str(r, q->json, "subscriptionType", 0, &type) < 0)
		return;
	if (!type && mo_api_want_str(r, q->json, "subsctiptionType", 1, &type) < 0) /* MEC 010-2 v2.1.1 spelling */
		return;
	if (mo_api_want_str(r, q->json, "callbackUri", 1, &uri) < 0)
		return;
	for (size_t i = 0; i < MO_ARRAY_SIZE(sub_types); i++)
		if (!strcmp(sub_types[i].type, type) && !strcmp(sub_types[i].api, api))
			kind = sub_types[i].kind;
	if (!kind) {
		mo_buf b = MO_BUF_INIT;
		for (size_t i = 0; i < MO_ARRAY_SIZE(sub_types); i++)
			if (!strcmp(sub_types[i].api, api))
				mo_buf_printf(&b, "%s%s", b.len ? ", " : "", sub_types[i].type);
		mo_api_problem(r, 400, "subscriptionType '%s' is not one of %s", type, b.ptr ? b.ptr : "");
		mo_buf_free(&b);
		return;
	}
	if ((strncmp(uri, "http://", 7) && strncmp(uri, "https://", 8)) || strlen(uri) < 10 || strchr(uri, ' ')) {
		mo_api_problem(r, 400, "callbackUri must be an http:// or https:// URL");
		return;
	}
	if (!strcmp(kind, "op")) {
		if (mo_api_want_obj(r, q->json, "appLcmOpOccSubscriptionFilter", 0, &f) < 0)
			return;
		if (f && (check_inst_filter(r, json_object_get(f, "appInstanceSubscriptionFilter")) < 0 ||
			  check_str_or_arr(r, json_object_get(f, "operationStates"), "operationStates", op_states) < 0 ||
			  check_str_or_arr(r, json_object_get(f, "operationTypes"), "operationTypes", op_types) < 0))
			return;
	} else if (!strcmp(api, "lcm")) {
		if (check_inst_filter(r, json_object_get(q->json, "appInstanceSubscriptionFilter")) < 0 ||
		    check_str_or_arr(r, json_object_get(q->json, "appInstanceState"), "appInstanceState", inst_states) < 0)
			return;
	} else if (mo_api_want_arr(r, q->json, "appPkgFilter", 0, &v) < 0) {
		return;
	}
	mo_api_uuid(id);
	doc = json_pack("{s:s,s:s,s:s,s:o}", "id", id, "subscriptionType", type, "callbackUri", uri, "_links",
			json_pack("{s:o}", "self", mo_api_link(a, "/%s/v1/subscriptions/%s",
								   !strcmp(api, "pkgm") ? "app_pkgm" : "app_lcm", id)));
	{
		static const char *const copy[] = { "appPkgFilter", "appLcmOpOccSubscriptionFilter",
						    "appInstanceSubscriptionFilter", "appInstanceState", NULL };
		for (size_t i = 0; doc && copy[i]; i++)
			if ((v = json_object_get(q->json, copy[i])))
				json_object_set(doc, copy[i], v);
	}
	rec = mo_api_rec_new(q->who->tenant, doc);
	if (!rec) {
		mo_api_problem(r, 500, "out of memory");
		return;
	}
	json_object_set_new(mo_api_rec_int(rec), "api", json_string(api));
	json_object_set_new(mo_api_rec_int(rec), "kind", json_string(kind));
	json_object_set_new(mo_api_rec_int(rec), "operator", json_boolean(q->who->role == MO_ROLE_OPERATOR));
	mo_api_store_begin(a->st);
	rc = mo_api_store_put(a->st, MO_K_SUB, id, json_incref(rec));
	rc = mo_api_store_end(a->st, rc == 0);
	if (rc < 0) {
		json_decref(rec);
		mo_api_problem(r, 500, "%s", mo_error_last()->message);
		return;
	}
	r->location = mo_sprintf("%s/%s/v1/subscriptions/%s", a->base, !strcmp(api, "pkgm") ? "app_pkgm" : "app_lcm", id);
	mo_api_reply_json(r, 201, json_incref(mo_api_rec_doc(rec)));
	json_decref(rec);
}

void mo_api_h_sub_create_pkgm(mo_api *a, mo_api_req *q, mo_api_reply *r)
{
	sub_create(a, q, r, "pkgm");
}

void mo_api_h_sub_create_lcm(mo_api *a, mo_api_req *q, mo_api_reply *r)
{
	sub_create(a, q, r, "lcm");
}

static void sub_list(mo_api *a, mo_api_req *q, mo_api_reply *r, const char *api)
{
	json_t *all, *subs, *rec;
	/* v3.1.1 names it subscriptiontype; earlier drafts (and this server
	 * before) subscription_type: either, not two different ones */
	const char *want = mo_api_query(q, "subscriptiontype"), *old = mo_api_query(q, "subscription_type");
	size_t i;
	if (want && old && strcmp(want, old)) {
		mo_api_problem(r, 400, "subscriptiontype and subscription_type differ: give one of them");
		return;
	}
	if (!want)
		want = old;
	all = mo_api_store_all(a->st, MO_K_SUB);
	subs = json_array();
	json_array_foreach(all, i, rec) {
		json_t *d = mo_api_rec_doc(rec);
		if (!mo_api_visible(q, rec) || strcmp(mo_api_jstr(mo_api_rec_int(rec), "api"), api))
			continue;
		if (want && strcmp(want, mo_api_jstr(d, "subscriptionType")))
			continue;
		json_array_append_new(subs, json_pack("{s:O,s:O}", "href", json_object_get(json_object_get(
									    json_object_get(d, "_links"), "self"), "href"),
						      "subscriptionType", json_object_get(d, "subscriptionType")));
	}
	json_decref(all);
	mo_api_reply_json(r, 200, json_pack("{s:{s:o,s:o}}", "_links", "self",
					    mo_api_link(a, "/%s/v1/subscriptions", !strcmp(api, "pkgm") ? "app_pkgm" : "app_lcm"),
					    "subscriptions", subs));
}

void mo_api_h_sub_list_pkgm(mo_api *a, mo_api_req *q, mo_api_reply *r)
{
	sub_list(a, q, r, "pkgm");
}

void mo_api_h_sub_list_lcm(mo_api *a, mo_api_req *q, mo_api_reply *r)
{
	sub_list(a, q, r, "lcm");
}

static json_t *find_sub(mo_api *a, mo_api_req *q, mo_api_reply *r)
{
	json_t *rec = mo_api_store_get(a->st, MO_K_SUB, q->params[0]);
	const char *api = !strncmp(q->url, "/app_pkgm/", 10) ? "pkgm" : "lcm";
	if (!mo_api_visible(q, rec) || strcmp(mo_api_jstr(mo_api_rec_int(rec), "api"), api)) {
		json_decref(rec);
		mo_api_problem(r, 404, "no subscription %s", q->params[0]);
		return NULL;
	}
	return rec;
}

void mo_api_h_sub_get(mo_api *a, mo_api_req *q, mo_api_reply *r)
{
	json_t *rec = find_sub(a, q, r);
	if (rec)
		mo_api_reply_json(r, 200, json_incref(mo_api_rec_doc(rec)));
	json_decref(rec);
}

void mo_api_h_sub_delete(mo_api *a, mo_api_req *q, mo_api_reply *r)
{
	json_t *rec = find_sub(a, q, r);
	int rc;
	if (!rec)
		return;
	json_decref(rec);
	mo_api_store_begin(a->st);
	rc = mo_api_store_peek(a->st, MO_K_SUB, q->params[0]) ? mo_api_store_del(a->st, MO_K_SUB, q->params[0]) : 0;
	rc = mo_api_store_end(a->st, rc == 0);
	if (rc < 0) {
		mo_api_problem(r, 500, "%s", mo_error_last()->message);
		return;
	}
	r->status = 204;
}

/* ---- queuing notifications (inside a transaction) ------------------------------------------- */

/* Subscriptions of this kind that may see a resource of tenant. */
static json_t *subs_for(mo_api *a, const char *kind, const char *tenant)
{
	json_t *all = mo_api_store_all(a->st, MO_K_SUB), *out = json_array(), *rec;
	size_t i;
	json_array_foreach(all, i, rec) {
		json_t *in = mo_api_rec_int(rec);
		if (strcmp(mo_api_jstr(in, "kind"), kind))
			continue;
		if (strcmp(mo_api_rec_tenant(rec), tenant) && !json_is_true(json_object_get(in, "operator")))
			continue;
		json_array_append(out, rec);
	}
	json_decref(all);
	return out;
}

static void enqueue(mo_api *a, json_t *sub, json_t *n)
{
	json_t *d = mo_api_rec_doc(sub);
	char id[37];
	mo_api_uuid(id);
	json_object_set_new(n, "id", json_string(id));
	json_object_set_new(n, "subscriptionId", json_string(mo_api_jstr(d, "id")));
	json_object_set_new(n, "timeStamp", mo_api_timestamp());
	if (!json_object_get(n, "_links"))
		json_object_set_new(n, "_links", json_object());
	json_object_set(json_object_get(n, "_links"), "subscription", json_object_get(json_object_get(d, "_links"), "self"));
	mo_api_store_outbox_add(a->st, mo_api_jstr(d, "id"), mo_api_jstr(d, "callbackUri"), n);
	json_decref(n);
}

void mo_api_notify_pkg(mo_api *a, const json_t *pkg, const char *ntype)
{
	const char *kind = !strcmp(ntype, "AppPackageOnBoarded") ? "pkg_onboarding"
			   : !strcmp(ntype, "AppPackageDeleted") ? "pkg_deletion" : "pkg_change";
	json_t *subs = subs_for(a, kind, mo_api_rec_tenant(pkg)), *s, *d = mo_api_rec_doc(pkg);
	size_t i;
	json_array_foreach(subs, i, s) {
		if (!pkg_filter_match(json_object_get(mo_api_rec_doc(s), "appPkgFilter"), d))
			continue;
		enqueue(a, s, json_pack("{s:s,s:s,s:s,s:s}", "notificationType", ntype, "appPkgId", mo_api_jstr(d, "id"),
					"appDId", mo_api_jstr(d, "appDId"), "operationalState",
					mo_api_jstr(d, "operationalState")));
	}
	json_decref(subs);
}

void mo_api_notify_op(mo_api *a, const json_t *op, const json_t *inst)
{
	json_t *subs = subs_for(a, "op", mo_api_rec_tenant(op)), *s, *d = mo_api_rec_doc(op);
	json_t *idoc = inst ? mo_api_rec_doc(inst) : NULL;
	const char *iid = mo_api_jstr(mo_api_rec_int((json_t *)op), "instance");
	size_t i;
	json_array_foreach(subs, i, s) {
		json_t *f = json_object_get(mo_api_rec_doc(s), "appLcmOpOccSubscriptionFilter");
		if (f && (!str_or_arr_has(json_object_get(f, "operationStates"), mo_api_jstr(d, "operationState")) ||
			  !str_or_arr_has(json_object_get(f, "operationTypes"), mo_api_jstr(d, "lcmOperation")) ||
			  !inst_filter_match(json_object_get(f, "appInstanceSubscriptionFilter"), idoc)))
			continue;
		enqueue(a, s, json_pack("{s:s,s:s,s:s,s:s,s:s,s:{s:O,s:O}}", "notificationType",
					"AppLcmOpOccNotification", "operationType", mo_api_jstr(d, "lcmOperation"),
					"operationState", mo_api_jstr(d, "operationState"), "appLcmOpOccId",
					mo_api_jstr(d, "id"), "appInstanceId", iid ? iid : "", "_links", "appInstance",
					json_object_get(json_object_get(d, "_links"), "appInstance"), "appLcmOpOcc",
					json_object_get(json_object_get(d, "_links"), "self")));
	}
	json_decref(subs);
}

void mo_api_notify_inst(mo_api *a, const json_t *inst, const char *state)
{
	json_t *subs = subs_for(a, "inst_state", mo_api_rec_tenant(inst)), *s, *d = mo_api_rec_doc(inst);
	size_t i;
	json_array_foreach(subs, i, s) {
		json_t *sd = mo_api_rec_doc(s);
		if (!str_or_arr_has(json_object_get(sd, "appInstanceState"), state) ||
		    !inst_filter_match(json_object_get(sd, "appInstanceSubscriptionFilter"), d))
			continue;
		enqueue(a, s, json_pack("{s:s,s:s,s:s,s:s,s:s,s:{s:O}}", "notificationType", "AppInstNotification",
					"appInstanceState", state, "appInstanceId", mo_api_jstr(d, "id"), "appDId",
					mo_api_jstr(d, "appDId"), "appPkgId", mo_api_jstr(d, "appPkgId"), "_links",
					"appInstance", json_object_get(json_object_get(d, "_links"), "self")));
	}
	json_decref(subs);
}

void mo_api_notify_inst_id(mo_api *a, const json_t *inst, int created)
{
	json_t *subs = subs_for(a, created ? "inst_create" : "inst_delete", mo_api_rec_tenant(inst)), *s;
	json_t *d = mo_api_rec_doc(inst);
	size_t i;
	json_array_foreach(subs, i, s) {
		if (!inst_filter_match(json_object_get(mo_api_rec_doc(s), "appInstanceSubscriptionFilter"), d))
			continue;
		enqueue(a, s, json_pack("{s:s,s:s,s:{s:O}}", "notificationType",
					created ? "AppInstanceIdentifierCreationNotification"
						: "AppInstanceIdentifierDeletionNotification",
					"appInstanceId", mo_api_jstr(d, "id"), "_links", "appInstance",
					json_object_get(json_object_get(d, "_links"), "self")));
	}
	json_decref(subs);
}

/* ---- delivery ---------------------------------------------------------------------------------- */

static int64_t wall_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void mo_api_notify_wake(mo_api *a)
{
	pthread_mutex_lock(&a->nlock);
	a->nwake = 1;
	pthread_cond_signal(&a->ncond);
	pthread_mutex_unlock(&a->nlock);
}

static size_t discard(char *p, size_t sz, size_t n, void *ud)
{
	(void)p, (void)ud;
	return sz * n;
}

static int deliver(mo_api *a, CURL *c, const mo_api_outbox_row *row, char *err, size_t errn)
{
	struct curl_slist *h = NULL;
	long status = 0;
	CURLcode cc;
	char ebuf[CURL_ERROR_SIZE] = "";
	h = curl_slist_append(h, "Content-Type: application/json");
	h = curl_slist_append(h, "Accept: application/json");
	curl_easy_reset(c);
	curl_easy_setopt(c, CURLOPT_URL, row->uri);
	curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(c, CURLOPT_POSTFIELDS, row->body);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
	curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)a->cfg->notify_timeout_ms);
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, (long)a->cfg->notify_timeout_ms);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, discard);
	curl_easy_setopt(c, CURLOPT_ERRORBUFFER, ebuf);
	cc = curl_easy_perform(c);
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
	curl_slist_free_all(h);
	if (cc != CURLE_OK) {
		snprintf(err, errn, "%s", ebuf[0] ? ebuf : curl_easy_strerror(cc));
		return -1;
	}
	if (status < 200 || status > 299) {
		snprintf(err, errn, "HTTP %ld", status);
		return -1;
	}
	return 0;
}

static void *notifier_main(void *ud)
{
	mo_api *a = ud;
	CURL *c = curl_easy_init();
	unsigned seed = (unsigned)mo_now_us();
	while (c) {
		mo_api_outbox_row rows[32];
		char failed_uris[32][256];
		int n = 0, nfailed = 0;
		int64_t now = wall_ms(), next;
		struct timespec ts;
		pthread_mutex_lock(&a->nlock);
		if (!a->stopping && !a->nwake) {
			next = mo_api_store_outbox_next(a->st);
			int64_t wait_ms = next < 0 ? 1000 : next - now;
			if (wait_ms > 1000)
				wait_ms = 1000;
			if (wait_ms > 0) {
				clock_gettime(CLOCK_REALTIME, &ts);
				ts.tv_sec += wait_ms / 1000;
				ts.tv_nsec += (wait_ms % 1000) * 1000000L;
				if (ts.tv_nsec >= 1000000000L) {
					ts.tv_sec++;
					ts.tv_nsec -= 1000000000L;
				}
				pthread_cond_timedwait(&a->ncond, &a->nlock, &ts);
			}
		}
		a->nwake = 0;
		pthread_mutex_unlock(&a->nlock);
		if (a->stopping)
			break;
		now = wall_ms();
		if (mo_api_store_outbox_due(a->st, now, rows, (int)MO_ARRAY_SIZE(rows), &n) < 0)
			continue;
		for (int i = 0; i < n; i++) {
			char err[256];
			int skip = 0;
			json_t *sub;
			for (int k = 0; k < nfailed; k++)
				if (!strcmp(failed_uris[k], rows[i].uri))
					skip = 1;
			if (skip || a->stopping)
				continue;
			sub = mo_api_store_get(a->st, MO_K_SUB, rows[i].sub_id);
			if (!sub) {
				mo_api_store_outbox_done(a->st, rows[i].id); /* unsubscribed meanwhile */
				continue;
			}
			json_decref(sub);
			if (deliver(a, c, &rows[i], err, sizeof(err)) == 0) {
				mo_api_store_outbox_done(a->st, rows[i].id);
				__atomic_add_fetch(&a->notify_sent, 1, __ATOMIC_RELAXED);
			} else {
				int64_t d = (int64_t)a->cfg->notify_base_ms << (rows[i].attempts < 20 ? rows[i].attempts : 20);
				if (d > a->cfg->notify_max_ms)
					d = a->cfg->notify_max_ms;
				d = d / 2 + (int64_t)(rand_r(&seed) % (unsigned)(d / 2 + 1));
				mo_api_store_outbox_retry(a->st, rows[i].id, wall_ms() + d, err);
				__atomic_add_fetch(&a->notify_failed, 1, __ATOMIC_RELAXED);
				if (nfailed < 32)
					snprintf(failed_uris[nfailed++], sizeof(failed_uris[0]), "%s", rows[i].uri);
			}
		}
		for (int i = 0; i < n; i++)
			mo_api_outbox_row_clear(&rows[i]);
	}
	if (c)
		curl_easy_cleanup(c);
	return NULL;
}

int mo_api_notify_start(mo_api *a)
{
	if (pthread_create(&a->notifier, NULL, notifier_main, a) != 0)
		return mo_error_set(MO_ERROR, "cannot start the notifier thread");
	a->notifier_started = 1;
	return 0;
}

void mo_api_notify_stop(mo_api *a)
{
	if (!a->notifier_started)
		return;
	pthread_mutex_lock(&a->nlock);
	a->stopping = 1;
	a->nwake = 1;
	pthread_cond_signal(&a->ncond);
	pthread_mutex_unlock(&a->nlock);
	pthread_join(a->notifier, NULL);
	a->notifier_started = 0;
}
