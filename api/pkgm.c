/*
 * pkgm.c - ETSI MEC 010-2 application package management (app_pkgm/v1):
 * package resources, their onboarding, the AppD and the package content.
 *
 * A package is a zip (uploaded with PUT package_content, or fetched from an
 * http(s) appPkgPath) or a git repository (appPkgPath git+file://, file://,
 * git://, git+https://, git+ssh://, with //subdir and ?ref=; the local
 * file:// and git+file:// for operators only, unless the configuration's
 * limits.localPackageSources opens them to every role).  It holds
 * appd.json (the AppD) and plan.lua (the IaC plan that deploys the app into
 * a zone) plus any local modules.  Onboarding (on a worker):
 *   CREATED -> UPLOADING (fetch) -> PROCESSING (verify the checksum, unpack,
 *   read and check the AppD, resolve and pin the plan's module sources,
 *   learn which of the offered variables the plan declares) -> ONBOARDED.
 * A failure returns the package to CREATED with onboardingFailureDetails
 * (the MEC 010-2 v3 convention), so the content can be uploaded again.
 *
 * Checksums: SHA-256 of the zip file for zips; for git packages the "tree
 * digest" (mo_api_tree_digest, documented in docs/api.md), which a client
 * computes with sha256sum over the checked-out files.  A mismatch never
 * shows the digest of a fetched source (only that of an upload).
 */
#include "api_int.h"
#include "engine.h"
#include "loop.h"
#include "plan.h"
#include "source.h"

#include <ctype.h>
#include <dirent.h>
#include <stdarg.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- representation ---------------------------------------------------------------- */

static json_t *pkg_links(mo_api *a, const char *id)
{
	return json_pack("{s:o,s:o,s:o}", "self", mo_api_link(a, "/app_pkgm/v1/app_packages/%s", id), "appD",
			 mo_api_link(a, "/app_pkgm/v1/app_packages/%s/appd", id), "appPkgContent",
			 mo_api_link(a, "/app_pkgm/v1/app_packages/%s/package_content", id));
}

/* A copy of rec with doc fields set from kv pairs (NULL-terminated). */
static json_t *rec_with(const json_t *rec, ...)
{
	json_t *n = json_deep_copy(rec), *doc = mo_api_rec_doc(n);
	va_list ap;
	const char *k;
	va_start(ap, rec);
	while ((k = va_arg(ap, const char *))) {
		json_t *v = va_arg(ap, json_t *);
		if (v)
			json_object_set_new(doc, k, v);
		else
			json_object_del(doc, k);
	}
	va_end(ap);
	return n;
}

static json_t *find_pkg(mo_api *a, mo_api_req *q, mo_api_reply *r)
{
	json_t *rec = mo_api_store_get(a->st, MO_K_PKG, q->params[0]);
	if (!mo_api_visible(q, rec)) {
		json_decref(rec);
		mo_api_problem(r, 404, "no application package %s", q->params[0]);
		return NULL;
	}
	return rec;
}

static json_t *find_pkg_by_appdid(mo_api *a, mo_api_req *q, mo_api_reply *r)
{
	json_t *all = mo_api_store_all(a->st, MO_K_PKG), *rec, *found = NULL;
	size_t i;
	json_array_foreach(all, i, rec) {
		const char *d = mo_api_jstr(mo_api_rec_doc(rec), "appDId");
		const char *s = mo_api_jstr(mo_api_rec_doc(rec), "onboardingState");
		if (d && s && !strcmp(d, q->params[0]) && !strcmp(s, "ONBOARDED") && mo_api_visible(q, rec)) {
			found = json_incref(rec);
			break;
		}
	}
	json_decref(all);
	if (!found)
		mo_api_problem(r, 404, "no onboarded application package with appDId %s", q->params[0]);
	return found;
}

/* ---- handlers ------------------------------------------------------------------------ */

static int valid_hex64(const char *s)
{
	if (strlen(s) != 64)
		return 0;
	for (; *s; s++)
		if (!isxdigit((unsigned char)*s))
			return 0;
	return 1;
}

/* A source on the server's own file system.  A tenant giving one would have
 * the server read (and zip, and serve back) any file or repository it can
 * read, so only operators may, unless limits.localPackageSources says
 * every role may (a lab, a single-tenant system). */
static int local_path(const char *p)
{
	return !strncmp(p, "file://", 7) || !strncmp(p, "git+file://", 11);
}

static int local_allowed(const mo_api *a, int by_operator)
{
	return by_operator || a->cfg->local_package_sources;
}

static int supported_path(const char *p)
{
	static const char *const pre[] = { "git+file://", "git+https://", "git+http://", "git+ssh://", "git://",
					   "file://", "http://", "https://", NULL };
	for (size_t i = 0; pre[i]; i++)
		if (!strncmp(p, pre[i], strlen(pre[i])) && strlen(p) > strlen(pre[i]))
			return 1;
	return 0;
}

void mo_api_h_pkg_create(mo_api *a, mo_api_req *q, mo_api_reply *r)
{
	const char *name, *version, *provider, *path, *alg, *hash;
	json_t *checksum, *udd, *doc, *rec, *all, *o;
	char id[37];
	size_t i;
	int conflict = 0, rc;
	if (mo_api_want_str(r, q->json, "appPkgName", 1, &name) < 0 ||
	    mo_api_want_str(r, q->json, "appPkgVersion", 1, &version) < 0 ||
	    mo_api_want_str(r, q->json, "appProvider", 0, &provider) < 0 ||
	    mo_api_want_str(r, q->json, "appPkgPath", 0, &path) < 0 ||
	    mo_api_want_obj(r, q->json, "checksum", 1, &checksum) < 0 ||
	    mo_api_want_str(r, checksum, "algorithm", 1, &alg) < 0 ||
	    mo_api_want_str(r, checksum, "hash", 1, &hash) < 0 ||
	    mo_api_want_obj(r, q->json, "userDefinedData", 0, &udd) < 0)
		return;
	if (strcasecmp(alg, "SHA-256") && strcasecmp(alg, "SHA256")) {
		mo_api_problem(r, 400, "checksum.algorithm '%s' is not supported: use SHA-256", alg);
		return;
	}
	if (!valid_hex64(hash)) {
		mo_api_problem(r, 400, "checksum.hash must be 64 hexadecimal digits (SHA-256)");
		return;
	}
	if (path && mo_api_url_has_credentials(path)) {
		mo_api_problem(r, 400, "appPkgPath must not carry credentials (user:password@, or token@ in an "
			       "http(s) URL): the server would store them and show them back");
		return;
	}
	if (path && path[0] && !supported_path(path)) {
		mo_api_problem(r, 400, "appPkgPath '%s': use git+file://, file://, git://, git+https://, "
			       "git+ssh://, http:// or https://", path);
		return;
	}
	if (path && local_path(path) && !local_allowed(a, q->who->role == MO_ROLE_OPERATOR)) {
		mo_api_problem(r, 403, "appPkgPath: file:// and git+file:// name the server's own files, which only "
			       "operators may onboard from (unless the server enables limits.localPackageSources); "
			       "use git+https://, git+ssh://, git://, https:// or upload the package with PUT "
			       "package_content");
		return;
	}
	mo_api_uuid(id);
	doc = json_pack("{s:s,s:s,s:s,s:s,s:s,s:s,s:s,s:{s:s,s:s},s:{},s:s,s:s,s:s,s:o}", "id", id, "appPkgName",
			name, "appPkgVersion", version, "appDId", "", "appProvider", provider ? provider : "",
			"appName", name, "appSoftwareVersion", version, "checksum", "algorithm", "SHA-256", "hash",
			hash, "softwareImages", "onboardingState", path && path[0] ? "UPLOADING" : "CREATED",
			"operationalState", "DISABLED", "usageState", "NOT_IN_USE", "_links", pkg_links(a, id));
	if (doc) {
		json_object_set_new(doc, "appDVersion", json_string(""));
		for (char *h = (char *)json_string_value(json_object_get(json_object_get(doc, "checksum"), "hash")); h && *h; h++)
			*h = (char)tolower((unsigned char)*h);
	}
	if (udd && doc)
		json_object_set(doc, "userDefinedData", udd);
	rec = mo_api_rec_new(q->who->tenant, doc);
	if (!rec) {
		mo_api_problem(r, 500, "out of memory");
		return;
	}
	o = mo_api_rec_int(rec);
	if (path && path[0])
		json_object_set_new(o, "path", json_string(path));
	if (q->who->role == MO_ROLE_OPERATOR)
		json_object_set_new(o, "byOperator", json_true());
	mo_api_store_begin(a->st);
	all = mo_api_store_all(a->st, MO_K_PKG);
	json_array_foreach(all, i, o) {
		json_t *d = mo_api_rec_doc(o);
		if (!strcmp(mo_api_rec_tenant(o), q->who->tenant) && !strcmp(mo_api_jstr(d, "appPkgName"), name) &&
		    !strcmp(mo_api_jstr(d, "appPkgVersion"), version))
			conflict = 1;
	}
	json_decref(all);
	if (conflict) {
		mo_api_store_end(a->st, 0);
		json_decref(rec);
		mo_api_problem(r, 409, "package %s version %s exists already", name, version);
		return;
	}
	rc = mo_api_store_put(a->st, MO_K_PKG, id, json_incref(rec));
	rc = mo_api_store_end(a->st, rc == 0);
	if (rc < 0) {
		json_decref(rec);
		mo_api_problem(r, 500, "%s", mo_error_last()->message);
		return;
	}
	if (path && path[0])
		mo_api_job_push(a, MO_JOB_ONBOARD, id, NULL);
	r->location = mo_sprintf("%s/app_pkgm/v1/app_packages/%s", a->base, id);
	mo_api_reply_json(r, 201, json_incref(mo_api_rec_doc(rec)));
	json_decref(rec);
}

/* AppPkgInfo for filter and selectors.  MEC 010-2 leaves the default
 * exclusions of AppPkgInfo unnamed; these are its optional complex
 * attributes (softwareImages is required by the schema, so it stays). */
static const char *const pkg_attributes[] = { "id", "appPkgName", "appPkgVersion", "appDId", "appProvider",
	"appName", "appSoftwareVersion", "appDVersion", "checksum", "softwareImages", "additionalArtifacts",
	"onboardingState", "onboardingFailureDetails", "operationalState", "usageState", "userDefinedData",
	"_links", NULL };
static const char *const pkg_required[] = { "id", "appDId", "appName", "appSoftwareVersion", "appDVersion",
	"checksum", "softwareImages", "onboardingState", "operationalState", "usageState", "_links/self",
	"_links/appD", "_links/appPkgContent", NULL };
static const char *const pkg_excluded[] = { "additionalArtifacts", "userDefinedData", NULL };
const mo_api_shape mo_api_shape_pkg = { "AppPkgInfo", pkg_attributes, pkg_required, pkg_excluded };

void mo_api_h_pkg_list(mo_api *a, mo_api_req *q, mo_api_reply *r)
{
	json_t *all = mo_api_store_all(a->st, MO_K_PKG), *out = json_array(), *rec;
	size_t i;
	json_array_foreach(all, i, rec)
		if (mo_api_visible(q, rec))
			json_array_append(out, mo_api_rec_doc(rec));
	json_decref(all);
	mo_api_reply_list(q, r, &mo_api_shape_pkg, out);
}

void mo_api_h_pkg_get(mo_api *a, mo_api_req *q, mo_api_reply *r)
{
	json_t *rec = find_pkg(a, q, r);
	if (rec)
		mo_api_reply_json(r, 200, json_incref(mo_api_rec_doc(rec)));
	json_decref(rec);
}

void mo_api_h_pkg_patch(mo_api *a, mo_api_req *q, mo_api_reply *r)
{
	static const char *const ops[] = { "ENABLED", "DISABLED", NULL };
	const char *want = NULL, *want2 = NULL;
	json_t *rec, *cur, *n;
	int rc;
	if (mo_api_want_enum(r, q->json, "operationalState", 0, ops, &want) < 0 ||
	    mo_api_want_enum(r, q->json, "operationState", 0, ops, &want2) < 0)
		return;
	if (!want)
		want = want2;
	if (!want) {
		mo_api_problem(r, 400, "'operationalState' (ENABLED or DISABLED) is required");
		return;
	}
	if (!(rec = find_pkg(a, q, r)))
		return;
	json_decref(rec);
	mo_api_store_begin(a->st);
	cur = mo_api_store_peek(a->st, MO_K_PKG, q->params[0]);
	if (!cur) {
		mo_api_store_end(a->st, 0);
		mo_api_problem(r, 404, "no application package %s", q->params[0]);
		return;
	}
	if (strcmp(mo_api_jstr(mo_api_rec_doc(cur), "onboardingState"), "ONBOARDED")) {
		mo_api_store_end(a->st, 0);
		mo_api_problem(r, 409, "package %s is not onboarded (onboardingState %s)", q->params[0],
			       mo_api_jstr(mo_api_rec_doc(cur), "onboardingState"));
		return;
	}
	if (!strcmp(mo_api_jstr(mo_api_rec_doc(cur), "operationalState"), want)) {
		mo_api_store_end(a->st, 0);
		mo_api_problem(r, 409, "package %s is %s already", q->params[0], want);
		return;
	}
	n = rec_with(cur, "operationalState", json_string(want), NULL);
	rc = mo_api_store_put(a->st, MO_K_PKG, q->params[0], json_incref(n));
	if (rc == 0)
		mo_api_notify_pkg(a, n, !strcmp(want, "ENABLED") ? "AppPackageEnabled" : "AppPackageDisabled");
	rc = mo_api_store_end(a->st, rc == 0);
	if (rc < 0)
		mo_api_problem(r, 500, "%s", mo_error_last()->message);
	else
		mo_api_reply_json(r, 200, json_pack("{s:s}", "operationalState", want));
	json_decref(n);
	mo_api_notify_wake(a);
}

void mo_api_h_pkg_delete(mo_api *a, mo_api_req *q, mo_api_reply *r)
{
	json_t *rec = find_pkg(a, q, r), *cur;
	char *dir;
	int rc;
	if (!rec)
		return;
	json_decref(rec);
	mo_api_store_begin(a->st);
	cur = mo_api_store_peek(a->st, MO_K_PKG, q->params[0]);
	if (!cur) {
		mo_api_store_end(a->st, 0);
		mo_api_problem(r, 404, "no application package %s", q->params[0]);
		return;
	}
	{
		json_t *d = mo_api_rec_doc(cur);
		const char *onb = mo_api_jstr(d, "onboardingState");
		if (!strcmp(onb, "UPLOADING") || !strcmp(onb, "PROCESSING")) {
			mo_api_store_end(a->st, 0);
			mo_api_problem(r, 409, "package %s is being onboarded", q->params[0]);
			return;
		}
		if (strcmp(mo_api_jstr(d, "operationalState"), "DISABLED") ||
		    strcmp(mo_api_jstr(d, "usageState"), "NOT_IN_USE")) {
			mo_api_store_end(a->st, 0);
			mo_api_problem(r, 409, "package %s is %s and %s: disable it and delete its application "
				       "instances first", q->params[0], mo_api_jstr(d, "operationalState"),
				       mo_api_jstr(d, "usageState"));
			return;
		}
	}
	if (!strcmp(mo_api_jstr(mo_api_rec_doc(cur), "onboardingState"), "ONBOARDED"))
		mo_api_notify_pkg(a, cur, "AppPackageDeleted");
	rc = mo_api_store_del(a->st, MO_K_PKG, q->params[0]);
	rc = mo_api_store_end(a->st, rc == 0);
	if (rc < 0) {
		mo_api_problem(r, 500, "%s", mo_error_last()->message);
		return;
	}
	if ((dir = mo_sprintf("%s/%s", a->pkg_dir, q->params[0]))) {
		mo_api_rmtree(dir);
		mo_free(dir);
	}
	mo_api_notify_wake(a);
	r->status = 204;
}

static void reply_appd(mo_api *a, json_t *rec, mo_api_reply *r)
{
	json_t *appd = json_object_get(mo_api_rec_int(rec), "appd");
	(void)a;
	if (!appd || strcmp(mo_api_jstr(mo_api_rec_doc(rec), "onboardingState"), "ONBOARDED")) {
		mo_api_problem(r, 409, "package %s is not onboarded: no AppD yet",
			       mo_api_jstr(mo_api_rec_doc(rec), "id"));
		return;
	}
	mo_api_reply_json(r, 200, json_incref(appd));
}

void mo_api_h_pkg_appd(mo_api *a, mo_api_req *q, mo_api_reply *r)
{
	json_t *rec = find_pkg(a, q, r);
	if (rec)
		reply_appd(a, rec, r);
	json_decref(rec);
}

void mo_api_h_pkg_appd_by_appdid(mo_api *a, mo_api_req *q, mo_api_reply *r)
{
	json_t *rec = find_pkg_by_appdid(a, q, r);
	if (rec)
		reply_appd(a, rec, r);
	json_decref(rec);
}

int mo_api_parse_range(const char *h, uint64_t size, uint64_t *off, uint64_t *len)
{
	unsigned long long a1 = 0, b1 = 0;
	const char *p;
	char *end;
	if (!h || strncmp(h, "bytes=", 6) || strchr(h, ','))
		return 0;
	p = h + 6;
	if (*p == '-') {
		b1 = strtoull(p + 1, &end, 10);
		if (end == p + 1 || *end)
			return 0;
		if (b1 == 0 || size == 0)
			return -1;
		if (b1 > size)
			b1 = size;
		*off = size - b1;
		*len = b1;
		return 1;
	}
	a1 = strtoull(p, &end, 10);
	if (end == p || *end != '-')
		return 0;
	p = end + 1;
	if (*p) {
		b1 = strtoull(p, &end, 10);
		if (end == p || *end || b1 < a1)
			return 0;
	} else {
		b1 = size ? size - 1 : 0;
	}
	if (a1 >= size)
		return -1;
	if (b1 >= size)
		b1 = size - 1;
	*off = a1;
	*len = b1 - a1 + 1;
	return 1;
}

static void reply_content(mo_api *a, mo_api_req *q, json_t *rec, mo_api_reply *r)
{
	const char *id = mo_api_jstr(mo_api_rec_doc(rec), "id");
	char *path;
	struct stat sb;
	uint64_t off = 0, len = 0;
	int fd, rg;
	if (strcmp(mo_api_jstr(mo_api_rec_doc(rec), "onboardingState"), "ONBOARDED")) {
		mo_api_problem(r, 409, "package %s is not onboarded", id);
		return;
	}
	if (!(path = mo_sprintf("%s/%s/content.zip", a->pkg_dir, id))) {
		mo_api_problem(r, 500, "out of memory");
		return;
	}
	fd = open(path, O_RDONLY | O_CLOEXEC);
	mo_free(path);
	if (fd < 0 || fstat(fd, &sb) != 0) {
		if (fd >= 0)
			close(fd);
		mo_api_problem(r, 500, "the content of package %s is missing", id);
		return;
	}
	rg = mo_api_parse_range(mo_api_header(q, MHD_HTTP_HEADER_RANGE), (uint64_t)sb.st_size, &off, &len);
	if (rg < 0) {
		close(fd);
		mo_api_problem(r, 416, "the range is outside the %lld bytes of the package", (long long)sb.st_size);
		r->content_range = mo_sprintf("bytes */%lld", (long long)sb.st_size);
		return;
	}
	r->fd = fd;
	r->ctype = "application/zip";
	if (rg == 1) {
		r->status = 206;
		r->off = off;
		r->len = len;
		r->content_range = mo_sprintf("bytes %llu-%llu/%lld", (unsigned long long)off,
					      (unsigned long long)(off + len - 1), (long long)sb.st_size);
	} else {
		r->status = 200;
		r->off = 0;
		r->len = (uint64_t)sb.st_size;
	}
}

void mo_api_h_pkg_content_get(mo_api *a, mo_api_req *q, mo_api_reply *r)
{
	json_t *rec = find_pkg(a, q, r);
	if (rec)
		reply_content(a, q, rec, r);
	json_decref(rec);
}

void mo_api_h_pkg_content_by_appdid(mo_api *a, mo_api_req *q, mo_api_reply *r)
{
	json_t *rec = find_pkg_by_appdid(a, q, r);
	if (rec)
		reply_content(a, q, rec, r);
	json_decref(rec);
}

void mo_api_h_pkg_content_put(mo_api *a, mo_api_req *q, mo_api_reply *r)
{
	json_t *rec = find_pkg(a, q, r), *cur, *n;
	char *dir = NULL, *dst = NULL;
	int rc;
	if (!rec)
		return;
	json_decref(rec);
	if (q->upload_len == 0) {
		mo_api_problem(r, 400, "the package content is empty");
		return;
	}
	mo_api_store_begin(a->st);
	cur = mo_api_store_peek(a->st, MO_K_PKG, q->params[0]);
	if (!cur || strcmp(mo_api_jstr(mo_api_rec_doc(cur), "onboardingState"), "CREATED") ||
	    json_object_get(mo_api_rec_int(cur), "path")) {
		mo_api_store_end(a->st, 0);
		if (!cur)
			mo_api_problem(r, 404, "no application package %s", q->params[0]);
		else
			mo_api_problem(r, 409, "package %s takes no upload: it is %s%s", q->params[0],
				       mo_api_jstr(mo_api_rec_doc(cur), "onboardingState"),
				       json_object_get(mo_api_rec_int(cur), "path") ? " and fetched from appPkgPath" : "");
		return;
	}
	dir = mo_sprintf("%s/%s", a->pkg_dir, q->params[0]);
	dst = mo_sprintf("%s/%s/content.zip", a->pkg_dir, q->params[0]);
	if (!dir || !dst || mo_api_mkdirs(dir) < 0 || rename(q->upload_path, dst) != 0) {
		mo_api_store_end(a->st, 0);
		mo_api_problem(r, 500, "cannot store the upload: %s", strerror(errno));
		goto done;
	}
	n = rec_with(cur, "onboardingState", json_string("UPLOADING"), "onboardingFailureDetails", NULL, NULL);
	json_object_set_new(mo_api_rec_int(n), "kind", json_string("zip"));
	rc = mo_api_store_put(a->st, MO_K_PKG, q->params[0], n);
	rc = mo_api_store_end(a->st, rc == 0);
	if (rc < 0) {
		mo_api_problem(r, 500, "%s", mo_error_last()->message);
		goto done;
	}
	mo_api_job_push(a, MO_JOB_ONBOARD, q->params[0], NULL);
	r->status = 202;
done:
	mo_free(dir);
	mo_free(dst);
}

/* ---- onboarding -------------------------------------------------------------------------- */

json_t *mo_api_plan_vars(const mo_api_zone *z, const json_t *inst_rec, const char *opstate)
{
	json_t *doc = mo_api_rec_doc(inst_rec);
	json_t *v = json_object();
	if (z) {
		json_t *zone = json_pack("{s:s,s:s,s:f,s:f}", "id", z->id, "name", z->name, "latitude", z->latitude,
					 "longitude", z->longitude);
		if (z->country)
			json_object_set_new(zone, "countryCode", json_string(z->country));
		json_object_set_new(v, "zone", zone);
		json_object_set(v, "domains", z->domains);
	}
	json_object_set_new(v, "app_instance_id", json_string(doc ? mo_api_jstr(doc, "id") : "onboarding-check"));
	json_object_set_new(v, "app_instance_name",
			    json_string(doc && mo_api_jstr(doc, "appInstanceName") ? mo_api_jstr(doc, "appInstanceName")
										   : "onboarding-check"));
	json_object_set_new(v, "app_d_id", json_string(doc ? mo_api_jstr(doc, "appDId") : "onboarding-check"));
	json_object_set_new(v, "tenant", json_string(inst_rec ? mo_api_rec_tenant(inst_rec) : "onboarding-check"));
	json_object_set_new(v, "operational_state", json_string(opstate ? opstate : "STARTED"));
	return v;
}

/* Resolve and pin the plan's module sources (writes mecorch.lock beside
 * the plan) and learn which of the offered variables it declares. */
/* confine: the plan's local module sources must stay inside the package
 * and local git repositories are refused (a package of a role that may not
 * name the server's files). */
static int prepare_plan(mo_api *a, const char *root, int confine, json_t **declared)
{
	mo_rt rt;
	mo_sandbox_limits lim;
	json_t *vars = mo_api_plan_vars(&a->cfg->zones[0], NULL, "STARTED");
	char *plan = mo_sprintf("%s/plan.lua", root);
	int rc = 0;
	memset(&rt, 0, sizeof(rt));
	mo_http_config_defaults(&rt.http);
	mo_sandbox_limits_defaults(&lim);
	if (!plan || !vars || (rc = mo_loop_new(&rt.loop)) < 0) {
		rc = rc < 0 ? rc : mo_error_set(MO_ENOMEM, "out of memory");
		goto done;
	}
	for (int tries = 0; tries < 16; tries++) {
		mo_sources *src = NULL;
		mo_plan *p = NULL;
		mo_source_opts so;
		mo_plan_opts po;
		const char *msg, *q1, *q2;
		memset(&so, 0, sizeof(so));
		so.plan_dir = root;
		so.cache_dir = a->cache_dir;
		so.mode = MO_SOURCES_INIT;
		so.confine_dir = confine ? root : NULL;
		memset(&po, 0, sizeof(po));
		po.path = plan;
		po.vars = vars;
		po.rt = &rt;
		po.limits = &lim;
		po.skip_declare = 1;
		if ((rc = mo_sources_open(&src, &so)) < 0)
			goto done;
		po.sources = src;
		rc = mo_plan_load(&p, &po);
		if (rc == 0) {
			*declared = json_array();
			for (size_t i = 0; i < p->nvars; i++)
				if (json_object_get(vars, p->vars[i].name))
					json_array_append_new(*declared, json_string(p->vars[i].name));
			rc = mo_sources_commit(src);
			mo_plan_free(p);
			mo_sources_free(src);
			goto done;
		}
		mo_sources_free(src);
		/* "variable 'X' is given but ... declares no such variable": drop X, retry */
		msg = mo_error_last()->message;
		if ((q1 = strstr(msg, "variable '")) && (q2 = strstr(q1 + 10, "' is given but"))) {
			char name[128];
			snprintf(name, sizeof(name), "%.*s", (int)(q2 - q1 - 10), q1 + 10);
			if (json_object_get(vars, name)) {
				json_object_del(vars, name);
				continue;
			}
		}
		goto done;
	}
	rc = mo_error_set(MO_EINVAL, "the plan's variables could not be matched");
done:
	mo_rt_release(&rt);
	mo_loop_free(rt.loop);
	json_decref(vars);
	mo_free(plan);
	return rc;
}

static const char *const appd_required[] = { "appDId", "appName", "appProvider", "appSoftVersion",
					     "appDVersion", NULL };

/* Where appd.json is: the tree root, or its one top-level directory. */
static char *package_root(const char *tree)
{
	char *p = mo_sprintf("%s/appd.json", tree);
	struct stat sb;
	if (p && stat(p, &sb) == 0) {
		mo_free(p);
		return mo_strdup(tree);
	}
	mo_free(p);
	{
		DIR *d = opendir(tree);
		struct dirent *e;
		char *only = NULL;
		int count = 0;
		if (!d)
			return NULL;
		while ((e = readdir(d))) {
			if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
				continue;
			count++;
			mo_free(only);
			only = mo_sprintf("%s/%s", tree, e->d_name);
		}
		closedir(d);
		if (count == 1 && only) {
			p = mo_sprintf("%s/appd.json", only);
			if (p && stat(p, &sb) == 0) {
				mo_free(p);
				return only;
			}
			mo_free(p);
		}
		mo_free(only);
	}
	return NULL;
}

static void onboard_set(mo_api *a, const char *id, const char *state, json_t *fail, json_t *fields,
			json_t *intfields)
{
	json_t *cur, *n;
	int rc;
	mo_api_store_begin(a->st);
	cur = mo_api_store_peek(a->st, MO_K_PKG, id);
	if (!cur) {
		mo_api_store_end(a->st, 0);
		json_decref(fail);
		json_decref(fields);
		json_decref(intfields);
		return;
	}
	n = rec_with(cur, "onboardingState", json_string(state), "onboardingFailureDetails", fail, NULL);
	if (fields)
		json_object_update(mo_api_rec_doc(n), fields);
	if (intfields)
		json_object_update(mo_api_rec_int(n), intfields);
	rc = mo_api_store_put(a->st, MO_K_PKG, id, json_incref(n));
	if (rc == 0 && !strcmp(state, "ONBOARDED"))
		mo_api_notify_pkg(a, n, "AppPackageOnBoarded");
	mo_api_store_end(a->st, rc == 0);
	json_decref(n);
	json_decref(fields);
	json_decref(intfields);
	mo_api_notify_wake(a);
}

void mo_api_onboard_run(mo_api *a, const char *id, mo_api_running *run)
{
	json_t *rec = mo_api_store_get(a->st, MO_K_PKG, id), *doc, *in, *appd = NULL, *declared = NULL;
	json_error_t je;
	char *dir = NULL, *zip = NULL, *tree = NULL, *root = NULL, *appd_path = NULL, *plan = NULL;
	char digest[65], commit[64] = "";
	const char *path, *kind, *want;
	struct stat sb;
	int rc = 0;
	(void)run;
	if (!rec)
		return;
	doc = mo_api_rec_doc(rec);
	in = mo_api_rec_int(rec);
	path = mo_api_jstr(in, "path");
	kind = mo_api_jstr(in, "kind");
	want = mo_api_jstr(json_object_get(doc, "checksum"), "hash");
	dir = mo_sprintf("%s/%s", a->pkg_dir, id);
	zip = mo_sprintf("%s/%s/content.zip", a->pkg_dir, id);
	tree = mo_sprintf("%s/%s/tree", a->pkg_dir, id);
	if (!dir || !zip || !tree) {
		rc = mo_error_set(MO_ENOMEM, "out of memory");
		goto fail;
	}
	if ((rc = mo_api_mkdirs(dir)) < 0)
		goto fail;
	/* UPLOADING: fetch from appPkgPath (checked again: the configuration
	 * may have changed since the request, before a restart resumed it) */
	if (path && local_path(path) && !local_allowed(a, json_is_true(json_object_get(in, "byOperator")))) {
		rc = mo_error_set(MO_EINVAL, "appPkgPath: file:// and git+file:// sources are for operators "
					    "(limits.localPackageSources is off)");
		goto fail;
	}
	if (path) {
		int is_git = !strncmp(path, "git", 3);
		if (!strncmp(path, "file://", 7)) {
			is_git = !(stat(path + 7, &sb) == 0 && S_ISREG(sb.st_mode));
			if (!is_git) {
				char *data = NULL;
				size_t len;
				if (sb.st_size > (off_t)a->cfg->max_package) {
					rc = mo_error_set(MO_EINVAL, "%s is larger than %zu bytes", path, a->cfg->max_package);
					goto fail;
				}
				if ((rc = mo_file_read(&data, &len, path + 7)) < 0 ||
				    (rc = mo_file_write_atomic(zip, data, len)) < 0) {
					mo_free(data);
					goto fail;
				}
				mo_free(data);
			}
		} else if (!is_git && (rc = mo_api_http_fetch(path, zip, a->cfg->max_package)) < 0) {
			goto fail;
		}
		if (is_git) {
			mo_api_rmtree(tree);
			if ((rc = mo_api_git_fetch(path, tree, commit)) < 0)
				goto fail;
		}
		kind = is_git ? "git" : "zip";
	}
	onboard_set(a, id, "PROCESSING", NULL, NULL, json_pack("{s:s}", "kind", kind ? kind : "zip"));
	/* PROCESSING: verify, unpack, check */
	if (kind && !strcmp(kind, "git")) {
		if ((rc = mo_api_tree_digest(tree, digest)) < 0)
			goto fail;
		if (strcmp(digest, want)) {
			/* the digest seen is not shown: it would tell a client the
			 * hash of whatever the source let the server read */
			rc = mo_error_set(MO_EINVAL, "checksum mismatch: the package tree digest (SHA-256) does not "
					  "match the checksum given (%s)", want);
			goto fail;
		}
		if ((rc = mo_api_zip_tree(tree, zip)) < 0)
			goto fail;
	} else {
		if ((rc = mo_api_file_sha256(zip, digest)) < 0)
			goto fail;
		if (strcmp(digest, want)) {
			/* the digest of an upload is shown (the client sent those
			 * bytes), not that of a fetched file */
			if (path)
				rc = mo_error_set(MO_EINVAL, "checksum mismatch: the package's SHA-256 does not "
						  "match the checksum given (%s)", want);
			else
				rc = mo_error_set(MO_EINVAL, "checksum mismatch: the uploaded package's SHA-256 is "
						  "%s, the checksum given is %s", digest, want);
			goto fail;
		}
		if ((rc = mo_api_unzip(zip, tree, (uint64_t)a->cfg->max_package * 8)) < 0)
			goto fail;
	}
	if (!(root = package_root(tree))) {
		rc = mo_error_set(MO_EINVAL, "the package has no appd.json at its root");
		goto fail;
	}
	appd_path = mo_sprintf("%s/appd.json", root);
	plan = mo_sprintf("%s/plan.lua", root);
	if (!appd_path || !plan) {
		rc = mo_error_set(MO_ENOMEM, "out of memory");
		goto fail;
	}
	if (!(appd = json_load_file(appd_path, JSON_REJECT_DUPLICATES, &je))) {
		rc = mo_error_set(MO_EINVAL, "appd.json:%d:%d: %s", je.line, je.column, je.text);
		goto fail;
	}
	if (!json_is_object(appd)) {
		rc = mo_error_set(MO_EINVAL, "appd.json: want a JSON object (the AppD)");
		goto fail;
	}
	for (size_t i = 0; appd_required[i]; i++)
		if (!json_is_string(json_object_get(appd, appd_required[i])) ||
		    !json_string_length(json_object_get(appd, appd_required[i]))) {
			rc = mo_error_set(MO_EINVAL, "appd.json: '%s' (a non-empty string) is required",
					  appd_required[i]);
			goto fail;
		}
	if (stat(plan, &sb) != 0) {
		rc = mo_error_set(MO_EINVAL, "the package has no plan.lua beside appd.json");
		goto fail;
	}
	{
		/* one onboarded package per appDId and tenant */
		json_t *all = mo_api_store_all(a->st, MO_K_PKG), *o;
		size_t i;
		const char *appdid = mo_api_jstr(appd, "appDId");
		json_array_foreach(all, i, o) {
			json_t *d = mo_api_rec_doc(o);
			if (strcmp(mo_api_jstr(d, "id"), id) && !strcmp(mo_api_rec_tenant(o), mo_api_rec_tenant(rec)) &&
			    !strcmp(mo_api_jstr(d, "appDId"), appdid)) {
				rc = mo_error_set(MO_EINVAL, "appDId %s is onboarded already (package %s)", appdid,
						  mo_api_jstr(d, "id"));
				break;
			}
		}
		json_decref(all);
		if (rc < 0)
			goto fail;
	}
	if ((rc = prepare_plan(a, root, !local_allowed(a, json_is_true(json_object_get(in, "byOperator"))),
			       &declared)) < 0) {
		mo_error_prefix("plan.lua");
		goto fail;
	}
	{
		json_t *fields = json_pack("{s:s,s:s,s:s,s:s,s:s,s:s,s:s}", "appDId", mo_api_jstr(appd, "appDId"),
					   "appProvider", mo_api_jstr(appd, "appProvider"), "appName",
					   mo_api_jstr(appd, "appName"), "appSoftwareVersion",
					   mo_api_jstr(appd, "appSoftVersion"), "appDVersion",
					   mo_api_jstr(appd, "appDVersion"), "operationalState", "ENABLED", "usageState",
					   "NOT_IN_USE");
		json_t *sw = json_object_get(appd, "swImageDescriptor");
		json_t *ints = json_pack("{s:o,s:s,s:o}", "appd", json_incref(appd), "root", root, "vars",
					 json_incref(declared));
		if (sw)
			json_object_set(fields, "softwareImages", sw);
		if (commit[0])
			json_object_set_new(ints, "commit", json_string(commit));
		onboard_set(a, id, "ONBOARDED", NULL, fields, ints);
	}
	goto done;
fail:
	{
		const char *msg = mo_error_last()->message[0] ? mo_error_last()->message : mo_code_name(rc);
		json_t *pd = json_pack("{s:s,s:s,s:i,s:s}", "type", "about:blank", "title", "Onboarding failed",
				       "status", 422, "detail", msg);
		onboard_set(a, id, "CREATED", pd, json_pack("{s:s}", "operationalState", "DISABLED"), NULL);
		/* a failed fetch leaves nothing half-made behind */
		if (tree)
			mo_api_rmtree(tree);
	}
done:
	json_decref(rec);
	json_decref(appd);
	json_decref(declared);
	mo_free(dir);
	mo_free(zip);
	mo_free(tree);
	mo_free(root);
	mo_free(appd_path);
	mo_free(plan);
}
