/*
 * fed.c - this MEC system towards its MEC federator over Mfm: the ETSI MEC
 * 040 client (fed_enablement/v1, fed_resources/system_info) and the
 * endpoints operators use to see and change the registration, discover the
 * other members of the federation, and list the zones offered.
 *
 * One thread keeps the registration: at start it POSTs SystemInfo without
 * systemId and keeps the systemId the federator assigns (in the server
 * database, so a restart after a crash finds its entry again instead of
 * registering twice); it PATCHes when the system name changes, checks the
 * entry periodically (a federator that lost it gets a new registration),
 * retries with exponential backoff and jitter while the federator is
 * unreachable, and DELETEs the entry on a clean shutdown.  Bodies are sent
 * and read bare (not wrapped in {"SystemInfo": ...}), as the ETSI
 * conformance tests expect; wrapped answers are accepted too.
 */
#include "api_int.h"

#include <curl/curl.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- HTTP to the federator ------------------------------------------------------------------ */

static size_t collect(char *p, size_t sz, size_t n, void *ud)
{
	mo_buf *b = ud;
	if (b->len + sz * n > (4u << 20))
		return 0;
	return mo_buf_put(b, p, sz * n) == 0 ? sz * n : 0;
}

static size_t header_cb(char *p, size_t sz, size_t n, void *ud)
{
	char **loc = ud;
	size_t len = sz * n;
	if (len > 9 && !strncasecmp(p, "Location:", 9)) {
		const char *v = p + 9;
		size_t vl = len - 9;
		while (vl && (*v == ' ' || *v == '\t')) {
			v++;
			vl--;
		}
		while (vl && (v[vl - 1] == '\r' || v[vl - 1] == '\n' || v[vl - 1] == ' '))
			vl--;
		mo_free(*loc);
		*loc = mo_strndup(v, vl);
	}
	return len;
}

/* method path (relative to federator.url) with an optional JSON body.
 * *status 0 when the federator could not be reached (err says why). */
static int fed_call(mo_api *a, const char *method, const char *path, json_t *body, long timeout_ms, long *status,
		    json_t **resp, char **location, char *err, size_t errn)
{
	CURL *c = curl_easy_init();
	struct curl_slist *h = NULL;
	mo_buf rb = MO_BUF_INIT;
	char *url = mo_sprintf("%s%s", a->cfg->fed_url, path), *text = NULL, *auth = NULL;
	char ebuf[CURL_ERROR_SIZE] = "";
	CURLcode cc;
	*status = 0;
	if (resp)
		*resp = NULL;
	if (!c || !url) {
		snprintf(err, errn, "out of memory");
		curl_easy_cleanup(c);
		mo_free(url);
		return -1;
	}
	h = curl_slist_append(h, "Accept: application/json");
	if (body) {
		text = json_dumps(body, JSON_COMPACT);
		h = curl_slist_append(h, "Content-Type: application/json");
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, text ? text : "{}");
	}
	if (a->cfg->fed_token && (auth = mo_sprintf("Authorization: Bearer %s", a->cfg->fed_token)))
		h = curl_slist_append(h, auth);
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
	curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, timeout_ms);
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, timeout_ms);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &rb);
	curl_easy_setopt(c, CURLOPT_ERRORBUFFER, ebuf);
	if (location) {
		*location = NULL;
		curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, header_cb);
		curl_easy_setopt(c, CURLOPT_HEADERDATA, location);
	}
	cc = curl_easy_perform(c);
	if (cc == CURLE_OK) {
		curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, status);
		if (resp && rb.len)
			*resp = json_loadb(rb.ptr, rb.len, 0, NULL);
	} else {
		snprintf(err, errn, "%s %s: %s", method, url, ebuf[0] ? ebuf : curl_easy_strerror(cc));
	}
	curl_slist_free_all(h);
	curl_easy_cleanup(c);
	mo_buf_free(&rb);
	mo_free(url);
	mo_free(text);
	if (auth) {
		memset(auth, 0, strlen(auth));
		mo_free(auth);
	}
	return cc == CURLE_OK ? 0 : -1;
}

/* A SystemInfo, bare or wrapped as {"SystemInfo": {...}}. */
static json_t *unwrap(json_t *j)
{
	json_t *in = json_object_get(j, "SystemInfo");
	return json_is_object(in) ? in : j;
}

/* ---- the registration thread ---------------------------------------------------------------------- */

static void set_error(mo_api *a, const char *fmt, const char *detail, long status)
{
	pthread_mutex_lock(&a->flock);
	snprintf(a->fed_error, sizeof(a->fed_error), fmt, detail ? detail : "", status);
	pthread_mutex_unlock(&a->flock);
}

static void set_registered(mo_api *a, const char *id)
{
	pthread_mutex_lock(&a->flock);
	mo_free(a->system_id);
	a->system_id = id ? mo_strdup(id) : NULL;
	a->registered = id != NULL;
	if (id)
		a->fed_error[0] = '\0';
	pthread_mutex_unlock(&a->flock);
	mo_api_store_meta_set(a->st, "fed_system_id", id);
}

static char *current_name(mo_api *a)
{
	char *n;
	pthread_mutex_lock(&a->flock);
	n = mo_strdup(a->system_name);
	pthread_mutex_unlock(&a->flock);
	return n;
}

/* Find our entry by name and provider (after a 400 on POST). */
static char *discover_self(mo_api *a, const char *name)
{
	CURL *c = curl_easy_init();
	char *en = c ? curl_easy_escape(c, name, 0) : NULL;
	char *ep = c ? curl_easy_escape(c, a->cfg->system_provider, 0) : NULL;
	char *path = mo_sprintf("/fed_resources/system_info?systemname=%s&systemprovider=%s", en ? en : "", ep ? ep : "");
	char err[256], *id = NULL;
	json_t *resp = NULL;
	long status;
	if (path && fed_call(a, "GET", path, NULL, 5000, &status, &resp, NULL, err, sizeof(err)) == 0 && status == 200 &&
	    json_is_array(resp) && json_array_size(resp) > 0) {
		const char *s = mo_api_jstr(unwrap(json_array_get(resp, 0)), "systemId");
		if (s)
			id = mo_strdup(s);
	}
	json_decref(resp);
	mo_free(path);
	curl_free(en);
	curl_free(ep);
	curl_easy_cleanup(c);
	return id;
}

/* One step: 0 when nothing needs doing until woken, 1 on progress, -1 on
 * failure (back off). */
static int fed_step(mo_api *a, int check)
{
	char err[512], *name = current_name(a), *path = NULL, *id = NULL, *loc = NULL;
	json_t *resp = NULL, *body;
	long status;
	int registered, dirty, rc = 0;
	pthread_mutex_lock(&a->flock);
	registered = a->registered;
	dirty = a->fed_dirty;
	id = a->system_id ? mo_strdup(a->system_id) : NULL;
	pthread_mutex_unlock(&a->flock);
	if (!name)
		return -1;
	if (id && (!registered || check)) {
		/* do we still have an entry? */
		path = mo_sprintf("/fed_resources/system_info/%s", id);
		if (fed_call(a, "GET", path, NULL, 5000, &status, &resp, NULL, err, sizeof(err)) < 0) {
			set_error(a, "%s", err, 0);
			rc = -1;
			goto done;
		}
		if (status == 200) {
			const char *have = mo_api_jstr(unwrap(resp), "systemName");
			pthread_mutex_lock(&a->flock);
			a->registered = 1;
			if (have && strcmp(have, name))
				a->fed_dirty = dirty = 1;
			pthread_mutex_unlock(&a->flock);
			registered = 1;
		} else if (status == 404) {
			set_registered(a, NULL);
			registered = 0;
			mo_free(id);
			id = NULL;
		} else {
			set_error(a, "GET system_info: %sHTTP %ld", "", status);
			rc = -1;
			goto done;
		}
		json_decref(resp);
		resp = NULL;
	}
	if (!registered) {
		body = json_pack("{s:s,s:s}", "systemName", name, "systemProvider", a->cfg->system_provider);
		if (fed_call(a, "POST", "/fed_resources/system_info", body, 5000, &status, &resp, &loc, err,
			     sizeof(err)) < 0) {
			json_decref(body);
			set_error(a, "%s", err, 0);
			rc = -1;
			goto done;
		}
		json_decref(body);
		if (status == 201) {
			const char *sid = mo_api_jstr(unwrap(resp), "systemId");
			const char *slash = loc ? strrchr(loc, '/') : NULL;
			if (!sid && slash && slash[1])
				sid = slash + 1;
			if (!sid) {
				set_error(a, "POST system_info: 201 without a systemId%s", "", 0);
				rc = -1;
				goto done;
			}
			set_registered(a, sid);
			pthread_mutex_lock(&a->flock);
			a->fed_dirty = 0;
			pthread_mutex_unlock(&a->flock);
			rc = 1;
		} else if (status == 400) {
			/* registered already (a previous process); find the entry */
			char *found = discover_self(a, name);
			if (found) {
				set_registered(a, found);
				mo_free(found);
				rc = 1;
			} else {
				set_error(a, "POST system_info: %sHTTP 400", "", 0);
				rc = -1;
			}
		} else {
			set_error(a, "POST system_info: %sHTTP %ld", "", status);
			rc = -1;
		}
		goto done;
	}
	if (dirty && id) {
		mo_free(path);
		path = mo_sprintf("/fed_resources/system_info/%s", id);
		body = json_pack("{s:s}", "systemName", name);
		if (fed_call(a, "PATCH", path, body, 5000, &status, NULL, NULL, err, sizeof(err)) < 0) {
			json_decref(body);
			set_error(a, "%s", err, 0);
			rc = -1;
			goto done;
		}
		json_decref(body);
		if (status == 200 || status == 204) {
			pthread_mutex_lock(&a->flock);
			a->fed_dirty = 0;
			pthread_mutex_unlock(&a->flock);
			rc = 1;
		} else if (status == 404) {
			set_registered(a, NULL);
			rc = 1;
		} else {
			set_error(a, "PATCH system_info: %sHTTP %ld", "", status);
			rc = -1;
		}
	}
done:
	json_decref(resp);
	mo_free(name);
	mo_free(path);
	mo_free(id);
	mo_free(loc);
	return rc;
}

static void fed_wait(mo_api *a, int64_t ms)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += ms / 1000;
	ts.tv_nsec += (ms % 1000) * 1000000L;
	if (ts.tv_nsec >= 1000000000L) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&a->flock);
	if (!a->fwake && !a->stopping)
		pthread_cond_timedwait(&a->fcond, &a->flock, &ts);
	a->fwake = 0;
	pthread_mutex_unlock(&a->flock);
}

static void *fed_main(void *ud)
{
	mo_api *a = ud;
	unsigned seed = (unsigned)mo_now_us();
	int failures = 0;
	int64_t last_check = mo_now_ms();
	while (!a->stopping) {
		int check = mo_now_ms() - last_check >= a->cfg->fed_retry_max_ms;
		int rc = fed_step(a, check);
		if (check)
			last_check = mo_now_ms();
		if (a->stopping)
			break;
		if (rc < 0) {
			int64_t d = (int64_t)a->cfg->fed_retry_base_ms << (failures < 20 ? failures : 20);
			if (d > a->cfg->fed_retry_max_ms)
				d = a->cfg->fed_retry_max_ms;
			d = d / 2 + (int64_t)(rand_r(&seed) % (unsigned)(d / 2 + 1));
			failures++;
			fed_wait(a, d);
		} else if (rc == 0) {
			failures = 0;
			fed_wait(a, a->cfg->fed_retry_max_ms);
		} else {
			failures = 0;
		}
	}
	/* clean shutdown: deregister */
	if (a->registered && a->system_id) {
		char *path = mo_sprintf("/fed_resources/system_info/%s", a->system_id), err[256];
		long status;
		if (path && fed_call(a, "DELETE", path, NULL, 3000, &status, NULL, NULL, err, sizeof(err)) == 0 &&
		    (status == 204 || status == 200 || status == 404))
			set_registered(a, NULL);
		mo_free(path);
	}
	return NULL;
}

int mo_api_fed_start(mo_api *a)
{
	char *id = NULL, *name = NULL;
	mo_api_store_meta_get(a->st, "fed_system_id", &id);
	mo_api_store_meta_get(a->st, "fed_system_name", &name);
	a->system_id = id;
	a->system_name = name ? name : mo_strdup(a->cfg->system_name);
	if (!a->system_name)
		return mo_error_set(MO_ENOMEM, "out of memory");
	if (!a->cfg->fed_url)
		return 0;
	if (pthread_create(&a->fed, NULL, fed_main, a) != 0)
		return mo_error_set(MO_ERROR, "cannot start the federation thread");
	a->fed_started = 1;
	return 0;
}

void mo_api_fed_stop(mo_api *a)
{
	if (!a->fed_started)
		return;
	pthread_mutex_lock(&a->flock);
	a->stopping = 1;
	a->fwake = 1;
	pthread_cond_signal(&a->fcond);
	pthread_mutex_unlock(&a->flock);
	pthread_join(a->fed, NULL);
	a->fed_started = 0;
}

/* ---- handlers ---------------------------------------------------------------------------------- */

void mo_api_h_zones(mo_api *a, mo_api_req *q, mo_api_reply *r)
{
	json_t *arr = json_array();
	(void)q;
	for (size_t i = 0; i < a->cfg->nzones; i++) {
		const mo_api_zone *z = &a->cfg->zones[i];
		json_t *doms = json_array(), *v;
		const char *k;
		json_t *zj = json_pack("{s:s,s:s,s:{s:f,s:f}}", "zoneId", z->id, "name", z->name, "geolocation",
				       "latitude", z->latitude, "longitude", z->longitude);
		json_object_foreach(z->domains, k, v)
			json_array_append_new(doms, json_string(k));
		json_object_set_new(zj, "domains", doms);
		if (z->country)
			json_object_set_new(zj, "countryCode", json_string(z->country));
		json_array_append_new(arr, zj);
	}
	mo_api_reply_json(r, 200, arr);
}

static json_t *system_doc(mo_api *a)
{
	json_t *d;
	pthread_mutex_lock(&a->flock);
	d = json_pack("{s:s,s:s,s:b}", "systemName", a->system_name, "systemProvider", a->cfg->system_provider,
		      "registered", a->registered);
	if (a->system_id)
		json_object_set_new(d, "systemId", json_string(a->system_id));
	if (a->cfg->fed_url)
		json_object_set_new(d, "federator", json_string(a->cfg->fed_url));
	if (a->fed_error[0])
		json_object_set_new(d, "lastError", json_string(a->fed_error));
	pthread_mutex_unlock(&a->flock);
	return d;
}

void mo_api_h_fed_system_get(mo_api *a, mo_api_req *q, mo_api_reply *r)
{
	(void)q;
	mo_api_reply_json(r, 200, system_doc(a));
}

void mo_api_h_fed_system_patch(mo_api *a, mo_api_req *q, mo_api_reply *r)
{
	const char *name;
	if (mo_api_want_str(r, q->json, "systemName", 1, &name) < 0)
		return;
	if (json_object_size(q->json) != 1) {
		mo_api_problem(r, 400, "only 'systemName' can be changed");
		return;
	}
	if (mo_api_store_meta_set(a->st, "fed_system_name", name) < 0) {
		mo_api_problem(r, 500, "%s", mo_error_last()->message);
		return;
	}
	pthread_mutex_lock(&a->flock);
	mo_free(a->system_name);
	a->system_name = mo_strdup(name);
	a->fed_dirty = 1;
	a->fwake = 1;
	pthread_cond_signal(&a->fcond);
	pthread_mutex_unlock(&a->flock);
	mo_api_reply_json(r, 200, system_doc(a));
}

typedef struct {
	CURL *c;
	mo_buf *b;
	int bad;
} qargs;

static enum MHD_Result add_arg(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
	qargs *qa = cls;
	char *ek, *ev;
	(void)kind;
	if (strcmp(key, "systemid") && strcmp(key, "systemname") && strcmp(key, "systemprovider")) {
		qa->bad = 1;
		return MHD_NO;
	}
	ek = curl_easy_escape(qa->c, key, 0);
	ev = curl_easy_escape(qa->c, value ? value : "", 0);
	mo_buf_printf(qa->b, "%s%s=%s", qa->b->len ? "&" : "?", ek ? ek : "", ev ? ev : "");
	curl_free(ek);
	curl_free(ev);
	return MHD_YES;
}

void mo_api_h_fed_systems(mo_api *a, mo_api_req *q, mo_api_reply *r)
{
	mo_buf path = MO_BUF_INIT, qs = MO_BUF_INIT;
	qargs qa = { curl_easy_init(), &qs, 0 };
	json_t *resp = NULL;
	char err[512];
	long status;
	if (!a->cfg->fed_url) {
		mo_api_problem(r, 409, "no federator is configured for this MEC system");
		goto done;
	}
	MHD_get_connection_values(q->conn, MHD_GET_ARGUMENT_KIND, add_arg, &qa);
	if (qa.bad) {
		mo_api_problem(r, 400, "the filters are systemid, systemname and systemprovider");
		goto done;
	}
	mo_buf_printf(&path, "/fed_resources/system_info%s", qs.ptr ? qs.ptr : "");
	if (fed_call(a, "GET", path.ptr, NULL, 5000, &status, &resp, NULL, err, sizeof(err)) < 0) {
		mo_api_problem(r, 503, "the federator is unreachable: %s", err);
		goto done;
	}
	if (status == 200 && json_is_array(resp)) {
		json_t *out = json_array(), *e;
		size_t i;
		json_array_foreach(resp, i, e)
			json_array_append(out, unwrap(e));
		mo_api_reply_json(r, 200, out);
	} else if (status == 404) {
		mo_api_problem(r, 404, "no member of the federation matches");
	} else if (status == 400) {
		mo_api_problem(r, 400, "the federator refused the query: %s",
			       mo_api_jstr(resp, "detail") ? mo_api_jstr(resp, "detail") : "bad request");
	} else {
		mo_api_problem(r, 502, "the federator answered HTTP %ld", status);
	}
done:
	json_decref(resp);
	mo_buf_free(&path);
	mo_buf_free(&qs);
	curl_easy_cleanup(qa.c);
}
