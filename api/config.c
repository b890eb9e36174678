/*
 * config.c - the JSON configuration of `mecorch serve`: where to listen,
 * the data directory, this MEC system, its zones and their domains' inputs,
 * the federator, TLS, bearer tokens and limits.  docs/api.md documents every
 * key.  Validation is strict (an unknown key is an error, naming it) so a
 * typo cannot silently turn a feature off.
 */
#include "api_int.h"

#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

static int bad(const char *key, const char *why)
{
	return mo_error_set(MO_EINVAL, "config: %s: %s", key, why);
}

/* Only the listed keys may appear in obj. */
static int known_keys(const json_t *obj, const char *where, const char *const *keys)
{
	const char *k;
	json_t *v;
	json_object_foreach((json_t *)obj, k, v) {
		size_t i;
		for (i = 0; keys[i] && strcmp(keys[i], k); i++)
			;
		if (!keys[i]) {
			char msg[256];
			snprintf(msg, sizeof(msg), "unknown key '%s'", k);
			return bad(where, msg);
		}
	}
	return 0;
}

static int get_str(const json_t *obj, const char *key, const char *where, int required, char **out)
{
	json_t *v = json_object_get(obj, key);
	char w[256];
	snprintf(w, sizeof(w), "%s%s%s", where, *where ? "." : "", key);
	if (!v || json_is_null(v)) {
		if (required)
			return bad(w, "required");
		return 0;
	}
	if (!json_is_string(v) || !json_string_length(v))
		return bad(w, "want a non-empty string");
	mo_free(*out);
	*out = mo_strdup(json_string_value(v));
	return *out ? 0 : mo_error_set(MO_ENOMEM, "out of memory");
}

static int get_int(const json_t *obj, const char *key, const char *where, long long lo, long long hi,
		   long long *out)
{
	json_t *v = json_object_get(obj, key);
	char w[256];
	snprintf(w, sizeof(w), "%s%s%s", where, *where ? "." : "", key);
	if (!v)
		return 0;
	if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi) {
		char msg[128];
		snprintf(msg, sizeof(msg), "want an integer in [%lld, %lld]", lo, hi);
		return bad(w, msg);
	}
	*out = json_integer_value(v);
	return 0;
}

static int get_bool(const json_t *obj, const char *key, const char *where, int *out)
{
	json_t *v = json_object_get(obj, key);
	if (!v)
		return 0;
	if (!json_is_boolean(v)) {
		char w[256];
		snprintf(w, sizeof(w), "%s.%s", where, key);
		return bad(w, "want true or false");
	}
	*out = json_is_true(v);
	return 0;
}

static char *resolve(const char *dir, const char *p)
{
	if (!p)
		return NULL;
	if (p[0] == '/' || !dir)
		return mo_strdup(p);
	return mo_sprintf("%s/%s", dir, p);
}

/* Read the PEM file named by obj.key (relative to dir) into *out. */
static int get_pem(const json_t *obj, const char *key, const char *dir, char **out)
{
	char *name = NULL, *path = NULL, *data = NULL;
	size_t len;
	int rc;
	if ((rc = get_str(obj, key, "tls", 0, &name)) < 0 || !name)
		return rc;
	path = resolve(dir, name);
	rc = mo_file_read(&data, &len, path);
	if (rc < 0)
		mo_error_prefix("config: tls.%s", key);
	else
		*out = data;
	mo_free(name);
	mo_free(path);
	return rc;
}

static int valid_id(const char *s)
{
	if (!*s || strlen(s) > 64)
		return 0;
	for (; *s; s++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
		      *s == '-' || *s == '_' || *s == '.'))
			return 0;
	return 1;
}

static int parse_zones(mo_api_config *c, json_t *zones)
{
	static const char *const zkeys[] = { "id", "name", "geolocation", "countryCode", "domains", NULL };
	size_t i;
	json_t *z;
	int rc;
	if (!json_is_array(zones) || json_array_size(zones) == 0)
		return bad("zones", "want a non-empty array of zones");
	c->zones = mo_calloc(json_array_size(zones), sizeof(*c->zones));
	if (!c->zones)
		return mo_error_set(MO_ENOMEM, "out of memory");
	json_array_foreach(zones, i, z) {
		mo_api_zone *zz = &c->zones[i];
		char where[64];
		json_t *geo, *lat, *lon, *dom;
		snprintf(where, sizeof(where), "zones[%zu]", i);
		c->nzones = i + 1;
		if (!json_is_object(z))
			return bad(where, "want an object");
		if ((rc = known_keys(z, where, zkeys)) < 0 || (rc = get_str(z, "id", where, 1, &zz->id)) < 0 ||
		    (rc = get_str(z, "name", where, 0, &zz->name)) < 0 ||
		    (rc = get_str(z, "countryCode", where, 0, &zz->country)) < 0)
			return rc;
		if (!valid_id(zz->id))
			return bad(where, "id: use 1 to 64 of [A-Za-z0-9._-]");
		for (size_t j = 0; j < i; j++)
			if (!strcmp(c->zones[j].id, zz->id))
				return bad(where, "id: two zones have this id");
		if (!zz->name && !(zz->name = mo_strdup(zz->id)))
			return mo_error_set(MO_ENOMEM, "out of memory");
		geo = json_object_get(z, "geolocation");
		lat = json_object_get(geo, "latitude");
		lon = json_object_get(geo, "longitude");
		if (!json_is_number(lat) || !json_is_number(lon) || json_number_value(lat) < -90 ||
		    json_number_value(lat) > 90 || json_number_value(lon) < -180 ||
		    json_number_value(lon) > 180)
			return bad(where, "geolocation: want {\"latitude\": -90..90, \"longitude\": -180..180}");
		zz->latitude = json_number_value(lat);
		zz->longitude = json_number_value(lon);
		dom = json_object_get(z, "domains");
		if (dom && !json_is_object(dom))
			return bad(where, "domains: want an object of domain name -> inputs");
		zz->domains = dom ? json_deep_copy(dom) : json_object();
	}
	return 0;
}

static int parse_tokens(mo_api_config *c, json_t *toks)
{
	static const char *const tkeys[] = { "token", "tenant", "role", "clientCertCN", NULL };
	size_t i;
	json_t *t;
	int rc;
	if (!toks)
		return 0;
	if (!json_is_array(toks))
		return bad("tokens", "want an array");
	c->principals = mo_calloc(json_array_size(toks) + 1, sizeof(*c->principals));
	if (!c->principals)
		return mo_error_set(MO_ENOMEM, "out of memory");
	json_array_foreach(toks, i, t) {
		mo_api_principal *p = &c->principals[i];
		char where[64], *role = NULL;
		snprintf(where, sizeof(where), "tokens[%zu]", i);
		c->nprincipals = i + 1;
		if (!json_is_object(t))
			return bad(where, "want an object");
		if ((rc = known_keys(t, where, tkeys)) < 0 || (rc = get_str(t, "token", where, 0, &p->token)) < 0 ||
		    (rc = get_str(t, "tenant", where, 1, &p->tenant)) < 0 ||
		    (rc = get_str(t, "clientCertCN", where, 0, &p->cert_cn)) < 0 ||
		    (rc = get_str(t, "role", where, 0, &role)) < 0)
			return rc;
		if (!p->token && !p->cert_cn)
			return bad(where, "give a token, a clientCertCN, or both");
		if (p->token && strlen(p->token) < 8)
			return bad(where, "token: use at least 8 characters");
		if (!role || !strcmp(role, "tenant"))
			p->role = MO_ROLE_TENANT;
		else if (!strcmp(role, "federator"))
			p->role = MO_ROLE_FEDERATOR;
		else if (!strcmp(role, "operator"))
			p->role = MO_ROLE_OPERATOR;
		else {
			mo_free(role);
			return bad(where, "role: want tenant, federator or operator");
		}
		mo_free(role);
		for (size_t j = 0; j < i; j++) {
			if (p->token && c->principals[j].token && !strcmp(p->token, c->principals[j].token))
				return bad(where, "token: two entries have the same token");
			if (p->cert_cn && c->principals[j].cert_cn && !strcmp(p->cert_cn, c->principals[j].cert_cn))
				return bad(where, "clientCertCN: two entries have the same clientCertCN");
		}
	}
	return 0;
}

int mo_api_config_parse(mo_api_config **out, json_t *doc, const char *dir)
{
	static const char *const keys[] = { "listen", "publicUrl", "dataDir", "portFile", "httpThreads",
					    "workers", "runParallelism", "tls", "system", "zones",
					    "federator", "tokens", "limits", "notifications",
					    "metricsPublic", "resumeDelayMs", NULL };
	static const char *const tlskeys[] = { "certFile", "keyFile", "clientCaFile", "requireClientCert", NULL };
	static const char *const syskeys[] = { "systemName", "systemProvider", NULL };
	static const char *const fedkeys[] = { "url", "token", "retryBaseMs", "retryMaxMs", NULL };
	static const char *const limkeys[] = { "maxBodyBytes", "maxPackageBytes", "localPackageSources", NULL };
	static const char *const notkeys[] = { "retryBaseMs", "retryMaxMs", "timeoutMs", NULL };
	mo_api_config *c = mo_calloc(1, sizeof(*c));
	json_t *o;
	char *data = NULL;
	long long v;
	int rc;
	if (!c)
		return mo_error_set(MO_ENOMEM, "out of memory");
	c->http_threads = 4;
	c->workers = 2;
	c->run_parallelism = 32;
	c->max_body = 1 << 20;
	c->max_package = 64 << 20;
	c->fed_retry_base_ms = 500;
	c->fed_retry_max_ms = 30000;
	c->notify_base_ms = 500;
	c->notify_max_ms = 60000;
	c->notify_timeout_ms = 5000;
	c->metrics_public = 1;
	c->resume_delay_ms = 3000;
	c->dir = dir ? mo_strdup(dir) : NULL;
	if (!json_is_object(doc)) {
		rc = bad("(top level)", "want a JSON object");
		goto fail;
	}
	if ((rc = known_keys(doc, "(top level)", keys)) < 0 ||
	    (rc = get_str(doc, "listen", "", 0, &c->listen)) < 0 ||
	    (rc = get_str(doc, "publicUrl", "", 0, &c->public_url)) < 0 ||
	    (rc = get_str(doc, "dataDir", "", 1, &data)) < 0 ||
	    (rc = get_str(doc, "portFile", "", 0, &c->port_file)) < 0)
		goto fail;
	if (!c->listen && !(c->listen = mo_strdup("127.0.0.1:8080"))) {
		rc = mo_error_set(MO_ENOMEM, "out of memory");
		goto fail;
	}
	c->data_dir = resolve(dir, data);
	if (c->port_file) {
		char *pf = resolve(dir, c->port_file);
		mo_free(c->port_file);
		c->port_file = pf;
	}
	v = c->http_threads;
	if ((rc = get_int(doc, "httpThreads", "", 1, 64, &v)) < 0)
		goto fail;
	c->http_threads = (int)v;
	v = c->workers;
	if ((rc = get_int(doc, "workers", "", 1, MO_API_MAX_WORKERS, &v)) < 0)
		goto fail;
	c->workers = (int)v;
	v = c->run_parallelism;
	if ((rc = get_int(doc, "runParallelism", "", 1, 1024, &v)) < 0)
		goto fail;
	c->run_parallelism = (int)v;
	if ((rc = get_bool(doc, "metricsPublic", "", &c->metrics_public)) < 0)
		goto fail;
	v = c->resume_delay_ms;
	if ((rc = get_int(doc, "resumeDelayMs", "", 0, 3600000, &v)) < 0)
		goto fail;
	c->resume_delay_ms = (int)v;

	if ((o = json_object_get(doc, "tls"))) {
		if (!json_is_object(o) || (rc = known_keys(o, "tls", tlskeys)) < 0) {
			rc = json_is_object(o) ? rc : bad("tls", "want an object");
			goto fail;
		}
		if ((rc = get_pem(o, "certFile", dir, &c->tls_cert)) < 0 ||
		    (rc = get_pem(o, "keyFile", dir, &c->tls_key)) < 0 ||
		    (rc = get_pem(o, "clientCaFile", dir, &c->tls_client_ca)) < 0 ||
		    (rc = get_bool(o, "requireClientCert", "tls", &c->require_client_cert)) < 0)
			goto fail;
		if (!c->tls_cert != !c->tls_key) {
			rc = bad("tls", "give both certFile and keyFile");
			goto fail;
		}
		if ((c->tls_client_ca || c->require_client_cert) && !c->tls_cert) {
			rc = bad("tls", "client certificates need certFile and keyFile");
			goto fail;
		}
		if (c->require_client_cert && !c->tls_client_ca) {
			rc = bad("tls", "requireClientCert needs clientCaFile");
			goto fail;
		}
	}
	o = json_object_get(doc, "system");
	if (!json_is_object(o)) {
		rc = bad("system", "required: {\"systemName\": ..., \"systemProvider\": ...}");
		goto fail;
	}
	if ((rc = known_keys(o, "system", syskeys)) < 0 ||
	    (rc = get_str(o, "systemName", "system", 1, &c->system_name)) < 0 ||
	    (rc = get_str(o, "systemProvider", "system", 1, &c->system_provider)) < 0)
		goto fail;
	if ((rc = parse_zones(c, json_object_get(doc, "zones"))) < 0)
		goto fail;
	if ((o = json_object_get(doc, "federator"))) {
		if (!json_is_object(o)) {
			rc = bad("federator", "want an object");
			goto fail;
		}
		if ((rc = known_keys(o, "federator", fedkeys)) < 0 ||
		    (rc = get_str(o, "url", "federator", 1, &c->fed_url)) < 0 ||
		    (rc = get_str(o, "token", "federator", 0, &c->fed_token)) < 0)
			goto fail;
		if (strncmp(c->fed_url, "http://", 7) && strncmp(c->fed_url, "https://", 8)) {
			rc = bad("federator.url", "want an http:// or https:// URL");
			goto fail;
		}
		while (strlen(c->fed_url) > 8 && c->fed_url[strlen(c->fed_url) - 1] == '/')
			c->fed_url[strlen(c->fed_url) - 1] = '\0';
		v = c->fed_retry_base_ms;
		if ((rc = get_int(o, "retryBaseMs", "federator", 10, 600000, &v)) < 0)
			goto fail;
		c->fed_retry_base_ms = (int)v;
		v = c->fed_retry_max_ms;
		if ((rc = get_int(o, "retryMaxMs", "federator", 10, 3600000, &v)) < 0)
			goto fail;
		c->fed_retry_max_ms = (int)v;
	}
	if ((rc = parse_tokens(c, json_object_get(doc, "tokens"))) < 0)
		goto fail;
	if ((o = json_object_get(doc, "limits"))) {
		if (!json_is_object(o) || (rc = known_keys(o, "limits", limkeys)) < 0) {
			rc = json_is_object(o) ? rc : bad("limits", "want an object");
			goto fail;
		}
		v = (long long)c->max_body;
		if ((rc = get_int(o, "maxBodyBytes", "limits", 1024, 1LL << 30, &v)) < 0)
			goto fail;
		c->max_body = (size_t)v;
		v = (long long)c->max_package;
		if ((rc = get_int(o, "maxPackageBytes", "limits", 1024, 1LL << 40, &v)) < 0)
			goto fail;
		c->max_package = (size_t)v;
		if ((rc = get_bool(o, "localPackageSources", "limits", &c->local_package_sources)) < 0)
			goto fail;
	}
	if ((o = json_object_get(doc, "notifications"))) {
		if (!json_is_object(o) || (rc = known_keys(o, "notifications", notkeys)) < 0) {
			rc = json_is_object(o) ? rc : bad("notifications", "want an object");
			goto fail;
		}
		v = c->notify_base_ms;
		if ((rc = get_int(o, "retryBaseMs", "notifications", 10, 600000, &v)) < 0)
			goto fail;
		c->notify_base_ms = (int)v;
		v = c->notify_max_ms;
		if ((rc = get_int(o, "retryMaxMs", "notifications", 10, 86400000, &v)) < 0)
			goto fail;
		c->notify_max_ms = (int)v;
		v = c->notify_timeout_ms;
		if ((rc = get_int(o, "timeoutMs", "notifications", 100, 600000, &v)) < 0)
			goto fail;
		c->notify_timeout_ms = (int)v;
	}
	mo_free(data);
	*out = c;
	return 0;
fail:
	mo_free(data);
	mo_api_config_free(c);
	return rc;
}

int mo_api_config_load(mo_api_config **out, const char *path)
{
	json_error_t je;
	json_t *doc = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
	char real[PATH_MAX], *dir = NULL, *copy;
	int rc;
	if (!doc)
		return mo_error_set(MO_EINVAL, "config %s:%d:%d: %s", path, je.line, je.column, je.text);
	if (!realpath(path, real)) {
		json_decref(doc);
		return mo_error_set(MO_ENOTFOUND, "config %s: %s", path, strerror(errno));
	}
	copy = mo_strdup(real);
	if (copy)
		dir = mo_strdup(dirname(copy));
	mo_free(copy);
	rc = mo_api_config_parse(out, doc, dir);
	if (rc == 0 && !((*out)->path = mo_strdup(real)))
		rc = mo_error_set(MO_ENOMEM, "out of memory");
	if (rc < 0)
		mo_error_prefix("%s", path);
	mo_free(dir);
	json_decref(doc);
	return rc;
}

void mo_api_config_free(mo_api_config *c)
{
	if (!c)
		return;
	mo_free(c->path);
	mo_free(c->dir);
	mo_free(c->listen);
	mo_free(c->public_url);
	mo_free(c->data_dir);
	mo_free(c->port_file);
	mo_free(c->tls_cert);
	if (c->tls_key) {
		memset(c->tls_key, 0, strlen(c->tls_key));
		mo_free(c->tls_key);
	}
	mo_free(c->tls_client_ca);
	mo_free(c->system_name);
	mo_free(c->system_provider);
	for (size_t i = 0; i < c->nzones; i++) {
		mo_free(c->zones[i].id);
		mo_free(c->zones[i].name);
		mo_free(c->zones[i].country);
		json_decref(c->zones[i].domains);
	}
	mo_free(c->zones);
	mo_free(c->fed_url);
	mo_free(c->fed_token);
	for (size_t i = 0; i < c->nprincipals; i++) {
		mo_free(c->principals[i].token);
		mo_free(c->principals[i].tenant);
		mo_free(c->principals[i].cert_cn);
	}
	mo_free(c->principals);
	mo_free(c);
}
