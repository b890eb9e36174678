/*
 * test_api.c - unit tests of the API server's pure parts and of a server
 * started in-process: configuration validation, haversine placement, Range
 * parsing, the package tree digest (against sha256sum), the embedded
 * OpenAPI document, and routing/authentication answers over real HTTP on
 * 127.0.0.1, the filter, and the attribute selectors' projection (never
 * modifying its input, and equal to deleting the excluded paths from a
 * deep copy).  The full flow is in tests/integration/test_api.sh.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "api_int.h"
#include "engine.h"

extern const char mo_api_openapi_yaml[];
extern const size_t mo_api_openapi_yaml_len;

static json_t *base_config(const char *dir)
{
	return json_pack("{s:s,s:s,s:{s:s,s:s},s:[{s:s,s:s,s:{s:f,s:f},s:{s:{s:s}}},"
			 "{s:s,s:{s:f,s:f}}],s:[{s:s,s:s},{s:s,s:s,s:s}]}",
			 "listen", "127.0.0.1:0", "dataDir", dir, "system", "systemName", "t", "systemProvider", "p",
			 "zones", "id", "zone-paris", "countryCode", "FR", "geolocation", "latitude", 48.8566,
			 "longitude", 2.3522, "domains", "edge", "endpoint", "http://127.0.0.1:1", "id",
			 "zone-berlin", "geolocation", "latitude", 52.52, "longitude", 13.405, "tokens", "token",
			 "tenant-token-1", "tenant", "a", "token", "operator-token-1", "tenant", "ops", "role",
			 "operator");
}

static void test_api_config_valid(void **state)
{
	json_t *doc = base_config("data");
	mo_api_config *c = NULL;
	(void)state;
	assert_int_equal(mo_api_config_parse(&c, doc, "/srv"), 0);
	assert_string_equal(c->data_dir, "/srv/data");
	assert_int_equal(c->nzones, 2);
	assert_string_equal(c->zones[1].name, "zone-berlin"); /* name defaults to the id */
	assert_int_equal(c->nprincipals, 2);
	assert_int_equal(c->principals[1].role, MO_ROLE_OPERATOR);
	assert_int_equal(c->principals[0].role, MO_ROLE_TENANT);
	assert_int_equal(c->workers, 2);
	mo_api_config_free(c);
	json_decref(doc);
}

static void expect_bad(json_t *doc, const char *needle)
{
	mo_api_config *c = NULL;
	assert_int_equal(mo_api_config_parse(&c, doc, "/srv"), MO_EINVAL);
	assert_null(c);
	if (!strstr(mo_error_last()->message, needle))
		fail_msg("error '%s' does not mention '%s'", mo_error_last()->message, needle);
	json_decref(doc);
}

static void test_api_config_invalid(void **state)
{
	json_t *d;
	(void)state;
	d = base_config("x");
	json_object_set_new(d, "lisen", json_string("x"));
	expect_bad(d, "unknown key 'lisen'");
	d = base_config("x");
	json_object_del(d, "dataDir");
	expect_bad(d, "dataDir: required");
	d = base_config("x");
	json_object_set_new(d, "zones", json_array());
	expect_bad(d, "zones");
	d = base_config("x");
	json_object_set_new(json_object_get(json_array_get(json_object_get(d, "zones"), 0), "geolocation"),
			    "latitude", json_real(95));
	expect_bad(d, "geolocation");
	d = base_config("x");
	json_object_set_new(json_array_get(json_object_get(d, "zones"), 1), "id", json_string("zone-paris"));
	expect_bad(d, "two zones");
	d = base_config("x");
	json_object_set_new(json_array_get(json_object_get(d, "tokens"), 0), "role", json_string("root"));
	expect_bad(d, "role");
	d = base_config("x");
	json_object_set_new(json_array_get(json_object_get(d, "tokens"), 0), "token", json_string("short"));
	expect_bad(d, "at least 8");
	d = base_config("x");
	json_object_set_new(d, "workers", json_integer(0));
	expect_bad(d, "workers");
	d = base_config("x");
	json_object_set_new(d, "federator", json_pack("{s:s}", "url", "ftp://x"));
	expect_bad(d, "federator.url");
	d = base_config("x");
	json_object_set_new(d, "tls", json_pack("{s:b}", "requireClientCert", 1));
	expect_bad(d, "tls");
}

/* limits.localPackageSources: off by default, a boolean, and a wrong type
 * is refused naming the key. */
static void test_api_config_local_package_sources(void **state)
{
	static const char *const bad_values[] = { "\"yes\"", "1", "0", "null", "[true]", "{}" };
	json_t *d;
	mo_api_config *c = NULL;
	(void)state;
	d = base_config("x");
	assert_int_equal(mo_api_config_parse(&c, d, "/srv"), 0);
	assert_int_equal(c->local_package_sources, 0);
	mo_api_config_free(c);
	c = NULL;
	json_object_set_new(d, "limits", json_pack("{s:b}", "localPackageSources", 1));
	assert_int_equal(mo_api_config_parse(&c, d, "/srv"), 0);
	assert_int_equal(c->local_package_sources, 1);
	mo_api_config_free(c);
	c = NULL;
	json_object_set_new(d, "limits", json_pack("{s:b,s:i}", "localPackageSources", 0, "maxBodyBytes", 4096));
	assert_int_equal(mo_api_config_parse(&c, d, "/srv"), 0);
	assert_int_equal(c->local_package_sources, 0);
	assert_int_equal(c->max_body, 4096);
	mo_api_config_free(c);
	json_decref(d);
	for (size_t i = 0; i < sizeof(bad_values) / sizeof(bad_values[0]); i++) {
		json_t *v = json_loads(bad_values[i], JSON_DECODE_ANY, NULL);
		assert_non_null(v);
		d = base_config("x");
		json_object_set_new(d, "limits", json_pack("{s:o}", "localPackageSources", v));
		expect_bad(d, "limits.localPackageSources");
		if (!strstr(mo_error_last()->message, "true or false"))
			fail_msg("%s: error '%s' does not say what is wanted", bad_values[i], mo_error_last()->message);
	}
	/* a misspelt key of limits is an unknown key, not a silent default */
	d = base_config("x");
	json_object_set_new(d, "limits", json_pack("{s:b}", "localPackageSource", 1));
	expect_bad(d, "localPackageSource");
}

static void test_api_haversine(void **state)
{
	double d;
	(void)state;
	d = mo_api_haversine_km(48.8566, 2.3522, 52.52, 13.405); /* Paris - Berlin, about 878 km */
	assert_true(d > 870 && d < 885);
	assert_true(mo_api_haversine_km(10, 20, 10, 20) < 1e-9);
	d = mo_api_haversine_km(0, 0, 0, 180); /* half the equator */
	assert_true(d > 20000 && d < 20040);
}

static void test_api_place(void **state)
{
	json_t *doc = base_config("x"), *req;
	mo_api_config *c = NULL;
	const mo_api_zone *z;
	const char *why;
	(void)state;
	assert_int_equal(mo_api_config_parse(&c, doc, "/"), 0);
	req = json_loads("{\"selectedMECHostInfo\":[{\"hostId\":\"zone-berlin\"}]}", 0, NULL);
	z = mo_api_place(c, req, &why);
	assert_non_null(z);
	assert_string_equal(z->id, "zone-berlin");
	json_decref(req);
	req = json_loads("{\"selectedMECHostInfo\":[{\"hostId\":{\"zoneId\":\"zone-paris\"}}]}", 0, NULL);
	assert_string_equal(mo_api_place(c, req, &why)->id, "zone-paris");
	json_decref(req);
	req = json_loads("{\"selectedMECHostInfo\":[{\"hostId\":{},\"hostName\":\"zone-berlin\"}]}", 0, NULL);
	assert_string_equal(mo_api_place(c, req, &why)->id, "zone-berlin");
	json_decref(req);
	req = json_loads("{\"selectedMECHostInfo\":[{\"hostId\":\"nowhere\"}]}", 0, NULL);
	assert_null(mo_api_place(c, req, &why));
	assert_non_null(why);
	json_decref(req);
	/* nearest to a point near Potsdam: Berlin */
	req = json_loads("{\"locationConstraints\":{\"area\":{\"type\":\"Point\",\"coordinates\":[13.06,52.39]}}}", 0, NULL);
	assert_string_equal(mo_api_place(c, req, &why)->id, "zone-berlin");
	json_decref(req);
	/* a polygon around Lyon: its centroid is nearer Paris */
	req = json_loads("{\"locationConstraints\":{\"area\":{\"type\":\"Polygon\",\"coordinates\":"
			 "[[[4.7,45.7],[4.9,45.7],[4.9,45.8],[4.7,45.8],[4.7,45.7]]]}}}", 0, NULL);
	assert_string_equal(mo_api_place(c, req, &why)->id, "zone-paris");
	json_decref(req);
	/* the country filter wins over distance; a country without zones fails */
	req = json_loads("{\"locationConstraints\":{\"countryCode\":\"FR\",\"area\":{\"type\":\"Point\","
			 "\"coordinates\":[13.4,52.5]}}}", 0, NULL);
	assert_string_equal(mo_api_place(c, req, &why)->id, "zone-paris");
	json_decref(req);
	req = json_loads("{\"locationConstraints\":{\"countryCode\":\"JP\"}}", 0, NULL);
	assert_null(mo_api_place(c, req, &why));
	json_decref(req);
	req = json_loads("{\"locationConstraints\":{\"area\":{\"type\":\"Point\",\"coordinates\":[\"x\"]}}}", 0, NULL);
	assert_null(mo_api_place(c, req, &why));
	json_decref(req);
	mo_api_config_free(c);
	json_decref(doc);
}

static void test_api_range(void **state)
{
	uint64_t off = 0, len = 0;
	(void)state;
	assert_int_equal(mo_api_parse_range(NULL, 100, &off, &len), 0);
	assert_int_equal(mo_api_parse_range("bytes=0-9", 100, &off, &len), 1);
	assert_true(off == 0 && len == 10);
	assert_int_equal(mo_api_parse_range("bytes=90-", 100, &off, &len), 1);
	assert_true(off == 90 && len == 10);
	assert_int_equal(mo_api_parse_range("bytes=-5", 100, &off, &len), 1);
	assert_true(off == 95 && len == 5);
	assert_int_equal(mo_api_parse_range("bytes=50-500", 100, &off, &len), 1);
	assert_true(off == 50 && len == 50);
	assert_int_equal(mo_api_parse_range("bytes=100-", 100, &off, &len), -1);
	assert_int_equal(mo_api_parse_range("bytes=-0", 100, &off, &len), -1);
	assert_int_equal(mo_api_parse_range("bytes=0-1,5-6", 100, &off, &len), 0); /* multi-range: whole */
	assert_int_equal(mo_api_parse_range("items=0-1", 100, &off, &len), 0);
	assert_int_equal(mo_api_parse_range("bytes=9-2", 100, &off, &len), 0);
}

static void write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

static void test_api_tree_digest(void **state)
{
	char dir[] = "/tmp/mo-api-digest-XXXXXX", p[512], got[65], want[65] = "", cmd[1024];
	FILE *f;
	(void)state;
	assert_non_null(mkdtemp(dir));
	snprintf(p, sizeof(p), "%s/sub", dir);
	mkdir(p, 0755);
	snprintf(p, sizeof(p), "%s/.git", dir);
	mkdir(p, 0755);
	snprintf(p, sizeof(p), "%s/appd.json", dir);
	write_file(p, "{\"appDId\":\"x\"}\n");
	snprintf(p, sizeof(p), "%s/sub/b.lua", dir);
	write_file(p, "return 1\n");
	snprintf(p, sizeof(p), "%s/Z.txt", dir);
	write_file(p, "upper case sorts first\n");
	snprintf(p, sizeof(p), "%s/.git/HEAD", dir);
	write_file(p, "ignored\n");
	assert_int_equal(mo_api_tree_digest(dir, got), 0);
	/* the shell recipe of docs/api.md */
	snprintf(cmd, sizeof(cmd),
		 "cd %s && find . -type f ! -path './.git/*' -printf '%%P\\n' | LC_ALL=C sort | "
		 "while IFS= read -r f; do printf '%%s  %%s\\n' \"$(sha256sum <\"$f\" | cut -d' ' -f1)\" \"$f\"; done | "
		 "sha256sum | cut -c1-64", dir);
	f = popen(cmd, "r");
	assert_non_null(f);
	assert_non_null(fgets(want, sizeof(want), f));
	pclose(f);
	assert_string_equal(got, want);
	mo_api_rmtree(dir);
}

static void test_api_openapi_embedded(void **state)
{
	char *data = NULL;
	size_t len = 0;
	(void)state;
	assert_int_equal(mo_file_read(&data, &len, MO_SOURCE_DIR "/api/openapi.yaml"), 0);
	if (len != mo_api_openapi_yaml_len || memcmp(data, mo_api_openapi_yaml, len))
		fail_msg("api/openapi_doc.c is stale: run api/embed-openapi.sh");
	mo_free(data);
}

/* ---- a server in-process ---------------------------------------------------------------- */

static size_t sink(char *p, size_t sz, size_t n, void *ud)
{
	mo_buf *b = ud;
	mo_buf_put(b, p, sz * n);
	return sz * n;
}

static long http(const char *method, const char *url, const char *token, const char *body, const char *ctype,
		 mo_buf *out, char *allow, size_t allown)
{
	CURL *c = curl_easy_init();
	struct curl_slist *h = NULL;
	long status = 0;
	char auth[256];
	struct curl_header *hd;
	if (token) {
		snprintf(auth, sizeof(auth), "Authorization: Bearer %s", token);
		h = curl_slist_append(h, auth);
	}
	if (ctype) {
		char ct[128];
		snprintf(ct, sizeof(ct), "Content-Type: %s", ctype);
		h = curl_slist_append(h, ct);
	}
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
	if (body)
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, sink);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, out);
	assert_int_equal(curl_easy_perform(c), CURLE_OK);
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
	if (allow && curl_easy_header(c, "Allow", 0, CURLH_HEADER, -1, &hd) == CURLHE_OK)
		snprintf(allow, allown, "%s", hd->value);
	curl_slist_free_all(h);
	curl_easy_cleanup(c);
	return status;
}

static void test_api_server_routes(void **state)
{
	char dir[] = "/tmp/mo-api-server-XXXXXX", url[256], allow[128] = "";
	json_t *doc;
	mo_api_config *c = NULL;
	mo_api *a = NULL;
	mo_buf b = MO_BUF_INIT;
	json_t *j;
	(void)state;
	assert_int_equal(mo_global_init(), 0);
	assert_non_null(mkdtemp(dir));
	doc = base_config(dir);
	assert_int_equal(mo_api_config_parse(&c, doc, NULL), 0);
	assert_int_equal(mo_api_start(&a, c), 0);
	assert_true(mo_api_port(a) > 0);

	snprintf(url, sizeof(url), "http://127.0.0.1:%u/health", mo_api_port(a));
	assert_int_equal(http("GET", url, NULL, NULL, NULL, &b, NULL, 0), 200);
	j = json_loads(b.ptr, 0, NULL);
	assert_string_equal(json_string_value(json_object_get(j, "status")), "ok");
	json_decref(j);

	snprintf(url, sizeof(url), "http://127.0.0.1:%u/app_lcm/v1/app_instances", mo_api_port(a));
	b.len = 0;
	assert_int_equal(http("GET", url, NULL, NULL, NULL, &b, NULL, 0), 401);
	assert_int_equal(http("GET", url, "wrong-token-123", NULL, NULL, &b, NULL, 0), 401);
	b.len = 0;
	assert_int_equal(http("GET", url, "tenant-token-1", NULL, NULL, &b, NULL, 0), 200);
	assert_memory_equal(b.ptr, "[]", 2);
	assert_int_equal(http("DELETE", url, "tenant-token-1", NULL, NULL, &b, allow, sizeof(allow)), 405);
	assert_string_equal(allow, "POST, GET");
	assert_int_equal(http("POST", url, "tenant-token-1", "{\"appDId\":", "application/json", &b, NULL, 0), 400);
	assert_int_equal(http("POST", url, "tenant-token-1", "{\"appDId\":\"x\"}", "text/plain", &b, NULL, 0), 415);
	assert_int_equal(http("POST", url, "tenant-token-1", "{\"appDId\":\"x\"}", "application/json", &b, NULL, 0),
			 404);
	snprintf(url, sizeof(url), "http://127.0.0.1:%u/mecorch/v1/deployments", mo_api_port(a));
	assert_int_equal(http("GET", url, "tenant-token-1", NULL, NULL, &b, NULL, 0), 403);
	assert_int_equal(http("GET", url, "operator-token-1", NULL, NULL, &b, NULL, 0), 200);
	snprintf(url, sizeof(url), "http://127.0.0.1:%u/nothing", mo_api_port(a));
	assert_int_equal(http("GET", url, "tenant-token-1", NULL, NULL, &b, NULL, 0), 404);
	snprintf(url, sizeof(url), "http://127.0.0.1:%u/openapi.yaml", mo_api_port(a));
	b.len = 0;
	assert_int_equal(http("GET", url, NULL, NULL, NULL, &b, NULL, 0), 200);
	assert_int_equal(b.len, mo_api_openapi_yaml_len);

	mo_api_stop(a);
	mo_api_config_free(c);
	json_decref(doc);
	mo_buf_free(&b);
	mo_api_rmtree(dir);
}

/* ---- ETSI filter and attribute selectors (query.c) ---- */

static json_t *sample_instances(void)
{
	return json_loads(
		"[{\"id\":\"i1\",\"appName\":\"loc\",\"appDId\":\"d1\",\"appProvider\":\"acme\","
		"\"instantiationState\":\"INSTANTIATED\",\"instantiatedAppState\":{\"operationalState\":\"STARTED\"},"
		"\"vimConnectionInfo\":[{\"id\":\"v1\",\"vimType\":\"lab\"}],"
		"\"_links\":{\"self\":{\"href\":\"/i1\"},\"terminate\":{\"href\":\"/i1/t\"}}},"
		" {\"id\":\"i2\",\"appName\":\"it's,odd)\",\"appDId\":\"d2\",\"appProvider\":\"acme\","
		"\"instantiationState\":\"NOT_INSTANTIATED\","
		"\"_links\":{\"self\":{\"href\":\"/i2\"},\"instantiate\":{\"href\":\"/i2/i\"}}},"
		" {\"id\":\"i3\",\"appName\":\"cam\",\"appDId\":\"d3\",\"appProvider\":\"other\","
		"\"instantiationState\":\"INSTANTIATED\",\"instantiatedAppState\":{\"operationalState\":\"STOPPED\"},"
		"\"appInstanceDescription\":\"camera feed\",\"vimConnectionInfo\":[{\"id\":\"v2\",\"vimType\":\"k8s\"},"
		"{\"id\":\"v3\",\"vimType\":\"lab\"}],\"_links\":{\"self\":{\"href\":\"/i3\"}}}]",
		0, NULL);
}

/* The ids of the sample instances that pass filter f, joined by ','; NULL
 * when the filter does not parse. */
static char *filtered(const char *f)
{
	mo_api_query_args args = { .filter = f };
	mo_api_view *v;
	json_t *all = sample_instances(), *doc;
	mo_buf b = MO_BUF_INIT;
	size_t i;

	assert_non_null(all);
	if (mo_api_view_parse(&v, &mo_api_shape_inst, &args) < 0) {
		json_decref(all);
		return NULL;
	}
	mo_buf_puts(&b, "");
	json_array_foreach(all, i, doc)
		if (mo_api_view_match(v, doc))
			mo_buf_printf(&b, "%s%s", b.len ? "," : "", json_string_value(json_object_get(doc, "id")));
	mo_api_view_free(v);
	json_decref(all);
	return b.ptr;
}

static void check_filter(const char *f, const char *want)
{
	char *got = filtered(f);
	if (!got)
		fail_msg("filter %s: %s", f, mo_error_last()->message);
	if (strcmp(got, want))
		fail_msg("filter %s: got '%s', want '%s'", f, got, want);
	mo_free(got);
}

static void check_filter_bad(const char *f, const char *msg)
{
	char *got = filtered(f);
	if (got)
		fail_msg("filter %s: accepted (matched '%s')", f, got);
	if (!strstr(mo_error_last()->message, msg))
		fail_msg("filter %s: error '%s' lacks '%s'", f, mo_error_last()->message, msg);
}

static void test_api_filter(void **state)
{
	(void)state;
	check_filter("(eq,appName,loc)", "i1");
	check_filter("(neq,appName,loc)", "i2,i3");
	check_filter("(eq,instantiatedAppState/operationalState,STARTED)", "i1");
	/* absent attribute: positive fails, negative holds */
	check_filter("(neq,instantiatedAppState/operationalState,STARTED)", "i2,i3");
	check_filter("(in,appDId,d1,d3,nope)", "i1,i3");
	check_filter("(nin,appDId,d1,d3)", "i2");
	/* a path through an array looks at every element */
	check_filter("(eq,vimConnectionInfo/vimType,lab)", "i1,i3");
	check_filter("(eq,vimConnectionInfo/vimType,k8s)", "i3");
	check_filter("(neq,vimConnectionInfo/vimType,k8s)", "i1,i2");
	check_filter("(cont,appInstanceDescription,camera)", "i3");
	check_filter("(ncont,appName,c)", "i2");
	check_filter("(ncont,appName,c,x,t)", "");
	check_filter("(gt,id,i1)", "i2,i3");
	check_filter("(lte,id,i2)", "i1,i2");
	/* expressions joined by ';' must all hold */
	check_filter("(eq,appProvider,acme);(eq,instantiationState,INSTANTIATED)", "i1");
	check_filter("(eq,appProvider,acme);(eq,appProvider,other)", "");
	/* a quoted value may hold , ) and a doubled quote */
	check_filter("(eq,appName,'it''s,odd)')", "i2");
	check_filter("(eq,_links/instantiate/href,/i2/i)", "i2");

	check_filter_bad("(eq,appNmae,loc)", "AppInstanceInfo has no attribute 'appNmae'");
	check_filter_bad("(like,appName,loc)", "unknown operator 'like'");
	check_filter_bad("(eq,appName,a,b)", "'eq' takes exactly one value");
	check_filter_bad("(in,appName)", "'in' takes one or more values");
	check_filter_bad("(eq,appName,loc", "missing ')'");
	check_filter_bad("eq,appName,loc", "expected '('");
	check_filter_bad("(eq,appName,loc)(eq,id,i1)", "expected ';'");
	check_filter_bad("(eq,appName,'loc)", "unterminated quoted value");
	check_filter_bad("(eq,appName,it's)", "must be quoted");
	check_filter_bad("(eq,_links//self,x)", "empty name");
	check_filter_bad("", "filter: empty");
}

static void test_api_filter_numbers(void **state)
{
	static const char *const attrs[] = { "n", "flag", "s", NULL };
	static const mo_api_shape shape = { "T", attrs, NULL, NULL };
	mo_api_query_args args = { 0 };
	mo_api_view *v;
	json_t *doc = json_pack("{s:i,s:b,s:s}", "n", 10, "flag", 1, "s", "9");

	/* numbers compare as numbers (10 > 9), strings bytewise ("9" > "10") */
	args.filter = "(gt,n,9)";
	assert_int_equal(mo_api_view_parse(&v, &shape, &args), 0);
	assert_true(mo_api_view_match(v, doc));
	mo_api_view_free(v);
	args.filter = "(gt,s,10)";
	assert_int_equal(mo_api_view_parse(&v, &shape, &args), 0);
	assert_true(mo_api_view_match(v, doc));
	mo_api_view_free(v);
	args.filter = "(lt,n,9.5)";
	assert_int_equal(mo_api_view_parse(&v, &shape, &args), 0);
	assert_false(mo_api_view_match(v, doc));
	mo_api_view_free(v);
	args.filter = "(eq,n,ten)"; /* not a number: equals no number */
	assert_int_equal(mo_api_view_parse(&v, &shape, &args), 0);
	assert_false(mo_api_view_match(v, doc));
	mo_api_view_free(v);
	args.filter = "(eq,flag,true)";
	assert_int_equal(mo_api_view_parse(&v, &shape, &args), 0);
	assert_true(mo_api_view_match(v, doc));
	mo_api_view_free(v);
	json_decref(doc);
}

/* The instance doc of id projected by the selectors, as compact JSON keys. */
static char *projected(const char *id, mo_api_query_args args)
{
	mo_api_view *v;
	json_t *all = sample_instances(), *doc, *out;
	char *s = NULL;
	size_t i;

	if (mo_api_view_parse(&v, &mo_api_shape_inst, &args) < 0) {
		json_decref(all);
		return NULL;
	}
	json_array_foreach(all, i, doc)
		if (!strcmp(json_string_value(json_object_get(doc, "id")), id)) {
			out = mo_api_view_project(v, doc);
			s = json_dumps(out, JSON_SORT_KEYS | JSON_COMPACT);
			json_decref(out);
		}
	mo_api_view_free(v);
	json_decref(all);
	return s;
}

static void test_api_selectors(void **state)
{
	mo_api_query_args a = { 0 };
	char *s;

	(void)state;
	/* no selector: exclude_default, which drops vimConnectionInfo and the
	 * task links but keeps _links.self */
	s = projected("i1", a);
	assert_non_null(s);
	assert_null(strstr(s, "vimConnectionInfo"));
	assert_null(strstr(s, "terminate"));
	assert_non_null(strstr(s, "\"_links\":{\"self\":{\"href\":\"/i1\"}}"));
	assert_non_null(strstr(s, "\"operationalState\":\"STARTED\""));
	free(s);
	a.exclude_default = "";
	s = projected("i1", a);
	assert_null(strstr(s, "vimConnectionInfo"));
	free(s);
	/* fields brings named complex attributes back */
	a.fields = "vimConnectionInfo";
	s = projected("i1", a);
	assert_non_null(strstr(s, "\"vimConnectionInfo\":[{\"id\":\"v1\""));
	assert_null(strstr(s, "terminate"));
	free(s);
	a.exclude_default = NULL;
	a.fields = "_links";
	s = projected("i1", a);
	assert_non_null(strstr(s, "\"terminate\":{\"href\":\"/i1/t\"}"));
	assert_null(strstr(s, "vimConnectionInfo"));
	free(s);
	a.fields = NULL;
	/* all_fields: the whole document */
	a.all_fields = "";
	s = projected("i3", a);
	assert_non_null(strstr(s, "\"vimType\":\"k8s\""));
	free(s);
	a.all_fields = NULL;
	/* exclude_fields: exactly those, inside arrays too */
	a.exclude_fields = "vimConnectionInfo/vimType,appInstanceDescription";
	s = projected("i3", a);
	assert_non_null(strstr(s, "\"vimConnectionInfo\":[{\"id\":\"v2\"},{\"id\":\"v3\"}]"));
	assert_null(strstr(s, "camera"));
	assert_non_null(strstr(s, "instantiatedAppState"));
	free(s);

	/* refused: required attributes, unknown ones, bad combinations */
	a.exclude_fields = "appName";
	assert_null(projected("i1", a));
	assert_non_null(strstr(mo_error_last()->message, "AppInstanceInfo requires 'appName'"));
	a.exclude_fields = "_links";
	assert_null(projected("i1", a));
	assert_non_null(strstr(mo_error_last()->message, "requires '_links/self'"));
	a.exclude_fields = "_links/self/href";
	assert_null(projected("i1", a));
	assert_non_null(strstr(mo_error_last()->message, "requires '_links/self'"));
	a.exclude_fields = "bogus";
	assert_null(projected("i1", a));
	assert_non_null(strstr(mo_error_last()->message, "exclude_fields: AppInstanceInfo has no attribute 'bogus'"));
	a.exclude_fields = "";
	assert_null(projected("i1", a));
	assert_non_null(strstr(mo_error_last()->message, "one or more attribute names"));
	a.exclude_fields = "appInstanceDescription";
	a.all_fields = "";
	assert_null(projected("i1", a));
	assert_non_null(strstr(mo_error_last()->message, "all_fields cannot be combined"));
	a.all_fields = NULL;
	a.exclude_default = "";
	assert_null(projected("i1", a));
	assert_non_null(strstr(mo_error_last()->message, "exclude_fields cannot be combined"));
	a.exclude_fields = NULL;
	a.exclude_default = "yes";
	assert_null(projected("i1", a));
	assert_non_null(strstr(mo_error_last()->message, "exclude_default takes no value"));
}

/* ---- projection: pure, and equal to deleting from a deep copy ---- */

/* Reference projection: delete the path names[] from node, crossing every
 * array element by element (as the filter does); node is modified. */
static void ref_delete(json_t *node, char **names)
{
	size_t i;
	json_t *e;
	if (json_is_array(node)) {
		json_array_foreach(node, i, e)
			ref_delete(e, names);
		return;
	}
	if (!json_is_object(node))
		return;
	if (!names[1])
		json_object_del(node, names[0]);
	else if ((e = json_object_get(node, names[0])))
		ref_delete(e, names + 1);
}

/* Split a comma-separated list of '/'-separated paths; *n paths, each a
 * NULL-terminated vector in one allocation. */
static char ***split_paths(const char *list, size_t *n)
{
	char ***v = NULL;
	const char *p = list;
	*n = 0;
	while (p && *p) {
		size_t len = strcspn(p, ","), names = 1, k = 0;
		char *copy, **vec;
		for (size_t i = 0; i < len; i++)
			names += p[i] == '/';
		vec = mo_malloc((names + 1) * sizeof(char *) + len + 1);
		assert_non_null(vec);
		copy = (char *)(vec + names + 1);
		memcpy(copy, p, len);
		copy[len] = '\0';
		vec[k++] = copy;
		for (char *c = copy; *c; c++)
			if (*c == '/') {
				*c = '\0';
				vec[k++] = c + 1;
			}
		vec[k] = NULL;
		v = mo_realloc(v, (*n + 1) * sizeof(char **));
		assert_non_null(v);
		v[(*n)++] = vec;
		p += len;
		if (*p == ',')
			p++;
	}
	return v;
}

/* Path a is b or an ancestor of b, as docs/api.md reads fields=. */
static int covers(const char *a, const char *b)
{
	size_t n = strlen(a);
	return !strncmp(a, b, n) && (b[n] == '\0' || b[n] == '/');
}

/* What the selectors of args remove, as a comma-separated list, by the
 * rules of docs/api.md ("Filtering and attribute selectors"). */
static char *expected_exclusions(const mo_api_shape *shape, const mo_api_query_args *args)
{
	mo_buf b = MO_BUF_INIT;
	mo_buf_puts(&b, "");
	if (args->exclude_fields) {
		mo_buf_puts(&b, args->exclude_fields);
	} else if (!args->all_fields) {
		for (const char *const *d = shape->excluded_default; d && *d; d++) {
			int keep = 0;
			const char *f = args->fields;
			while (f && *f && !keep) {
				size_t len = strcspn(f, ",");
				char one[256];
				snprintf(one, sizeof(one), "%.*s", (int)len, f);
				keep = covers(one, *d) || covers(*d, one);
				f += len + (f[len] == ',');
			}
			if (!keep)
				mo_buf_printf(&b, "%s%s", b.len ? "," : "", *d);
		}
	}
	return b.ptr;
}

/* Project doc with args through mo_api_view_project and through the
 * reference: doc is unchanged (deep-equal to a copy taken before), the
 * result equals the reference, and a projection that removes nothing is
 * doc itself. */
static void check_projection(const mo_api_shape *shape, mo_api_query_args args, json_t *doc)
{
	mo_api_view *v = NULL;
	json_t *before = json_deep_copy(doc), *want = json_deep_copy(doc), *got;
	char *xs = expected_exclusions(shape, &args), ***paths;
	size_t n;
	char *gs, *ws, *ds;

	assert_non_null(before);
	assert_non_null(want);
	if (mo_api_view_parse(&v, shape, &args) < 0)
		fail_msg("fields=%s exclude_fields=%s: %s", args.fields ? args.fields : "-",
			 args.exclude_fields ? args.exclude_fields : "-", mo_error_last()->message);
	paths = split_paths(xs, &n);
	for (size_t i = 0; i < n; i++) {
		ref_delete(want, paths[i]);
		mo_free(paths[i]);
	}
	mo_free(paths);
	got = mo_api_view_project(v, doc);
	assert_non_null(got);
	gs = json_dumps(got, JSON_SORT_KEYS | JSON_COMPACT);
	ws = json_dumps(want, JSON_SORT_KEYS | JSON_COMPACT);
	ds = json_dumps(doc, JSON_SORT_KEYS | JSON_COMPACT);
	if (!json_equal(doc, before))
		fail_msg("excluding '%s' modified the input: now %s", xs, ds);
	if (!json_equal(got, want))
		fail_msg("excluding '%s' from %s:\n  got  %s\n  want %s", xs, ds, gs, ws);
	if (json_equal(want, doc) && got != doc)
		fail_msg("excluding '%s' removes nothing from %s, yet the result is a copy", xs, ds);
	free(gs);
	free(ws);
	free(ds);
	json_decref(got);
	/* nor does releasing the result touch doc */
	if (!json_equal(doc, before))
		fail_msg("releasing the projection excluding '%s' modified the input", xs);
	mo_api_view_free(v);
	json_decref(before);
	json_decref(want);
	mo_free(xs);
}

/* Every selector combination the parser accepts, with field lists that
 * reach into nested objects and arrays. */
static void check_all_selectors(const mo_api_shape *shape, json_t *docs, const char *const *fields,
				const char *const *excludes)
{
	size_t i;
	json_t *doc;
	json_array_foreach(docs, i, doc) {
		mo_api_query_args a = { 0 };
		check_projection(shape, a, doc);              /* none: exclude_default */
		a.exclude_default = "";
		check_projection(shape, a, doc);
		for (const char *const *f = fields; *f; f++) {
			mo_api_query_args b = { 0 };
			b.fields = *f;
			check_projection(shape, b, doc);
			b.exclude_default = "";
			check_projection(shape, b, doc);
		}
		for (const char *const *x = excludes; *x; x++) {
			mo_api_query_args b = { 0 };
			b.exclude_fields = *x;
			check_projection(shape, b, doc);
		}
		a.exclude_default = NULL;
		a.all_fields = "";
		check_projection(shape, a, doc);
	}
}

static void test_api_view_project_pure(void **state)
{
	/* a made-up type whose exclusions nest: paths through objects, through
	 * arrays (of objects, scalars and arrays), overlapping paths */
	static const char *const attrs[] = { "id", "a", "b", "c", "arr", "_links", "nothing_here", NULL };
	static const char *const required[] = { "id", "_links/self", NULL };
	static const char *const excluded[] = { "a/x", "arr/y", "b", "_links/t", "arr/z/w", NULL };
	static const mo_api_shape shape = { "T", attrs, required, excluded };
	static const char *const fields[] = { "a", "a/x", "a/x/deep", "arr,b", "arr/y", "_links", "c", NULL };
	static const char *const excludes[] = { "a/x/deep,arr/y,c", "a,a/x", "a/x,a", "arr/z/w", "arr,b/q",
						"b/r,b", "_links/t,_links/u", "arr/y,arr/y/y", "nothing_here", NULL };
	static const char *const inst_fields[] = { "vimConnectionInfo", "_links", "_links/terminate", NULL };
	static const char *const inst_excludes[] = { "vimConnectionInfo/vimType,appInstanceDescription",
						     "_links/terminate,_links/instantiate", "instantiatedAppState",
						     "instantiatedAppState/operationalState,vimConnectionInfo", NULL };
	static const char *const pkg_fields[] = { "userDefinedData", "additionalArtifacts,userDefinedData", NULL };
	static const char *const pkg_excludes[] = { "userDefinedData/team,appProvider",
						    "additionalArtifacts/artifactPath", "onboardingFailureDetails",
						    NULL };
	static const char *const op_fields[] = { "operationParams", NULL };
	static const char *const op_excludes[] = { "operationParams/selectedMECHostInfo/hostId", "error",
						   "_links/retry", NULL };
	json_t *docs;
	(void)state;

	docs = json_loads(
		"[{\"id\":\"1\",\"a\":{\"x\":{\"deep\":1,\"keep\":2},\"y\":3},\"b\":{\"q\":1,\"r\":[1,2]},\"c\":\"s\","
		" \"arr\":[{\"y\":1,\"z\":[{\"w\":1,\"v\":2},[{\"w\":3,\"u\":4}],7]},{\"y\":[1,{\"y\":2}],\"k\":0},5,"
		"        [{\"y\":9,\"k\":1},[{\"y\":10}]],null],"
		" \"_links\":{\"self\":{\"href\":\"/1\"},\"t\":{\"href\":\"/t\"},\"u\":{\"href\":\"/u\"}}},"
		" {\"id\":\"2\",\"a\":5,\"arr\":\"not an array\",\"b\":null,\"_links\":{\"self\":{\"href\":\"/2\"}}},"
		" {\"id\":\"3\",\"a\":{},\"arr\":[],\"_links\":{\"self\":{\"href\":\"/3\"}}},"
		" {\"id\":\"4\",\"a\":{\"x\":[{\"deep\":[1]},{\"deep\":{\"deep\":1}}]},\"arr\":[[[{\"y\":1,\"z\":{\"w\":2}}]]],"
		"  \"_links\":{\"self\":{\"href\":\"/4\"},\"t\":null}},"
		" {\"id\":\"5\",\"c\":[{\"c\":1}],\"_links\":{\"self\":{\"href\":\"/5\"}}}]",
		0, NULL);
	assert_non_null(docs);
	check_all_selectors(&shape, docs, fields, excludes);
	json_decref(docs);

	docs = sample_instances();
	assert_non_null(docs);
	check_all_selectors(&mo_api_shape_inst, docs, inst_fields, inst_excludes);
	json_decref(docs);

	docs = json_loads(
		"[{\"id\":\"p1\",\"appPkgName\":\"edge\",\"appDId\":\"d\",\"checksum\":{\"algorithm\":\"SHA-256\",\"hash\":\"00\"},"
		"  \"softwareImages\":[{\"name\":\"img\",\"version\":\"1\"}],\"additionalArtifacts\":[{\"artifactPath\":\"a\","
		"  \"checksum\":{\"hash\":\"11\"}}],\"userDefinedData\":{\"team\":\"edge\",\"tags\":[\"x\"]},"
		"  \"onboardingState\":\"CREATED\",\"onboardingFailureDetails\":{\"status\":422,\"detail\":\"bad\"},"
		"  \"_links\":{\"self\":{\"href\":\"/p1\"},\"appD\":{\"href\":\"/p1/appd\"},\"appPkgContent\":{\"href\":\"/p1/c\"}}},"
		" {\"id\":\"p2\",\"softwareImages\":{},\"_links\":{\"self\":{\"href\":\"/p2\"}}}]",
		0, NULL);
	assert_non_null(docs);
	check_all_selectors(&mo_api_shape_pkg, docs, pkg_fields, pkg_excludes);
	json_decref(docs);

	docs = json_loads(
		"[{\"id\":\"o1\",\"operationState\":\"FAILED_TEMP\",\"lcmOperation\":\"INSTANTIATE\","
		"  \"operationParams\":{\"selectedMECHostInfo\":[{\"hostId\":\"zone-a\"},{\"hostId\":{\"zoneId\":\"z\"},\"hostName\":\"n\"}]},"
		"  \"error\":{\"status\":500,\"detail\":\"x\"},"
		"  \"_links\":{\"self\":{\"href\":\"/o1\"},\"appInstance\":{\"href\":\"/i\"},\"retry\":{\"href\":\"/o1/r\"}}},"
		" {\"id\":\"o2\",\"operationState\":\"COMPLETED\",\"_links\":{\"self\":{\"href\":\"/o2\"},\"appInstance\":{\"href\":\"/i\"}}}]",
		0, NULL);
	assert_non_null(docs);
	check_all_selectors(&mo_api_shape_op, docs, op_fields, op_excludes);
	json_decref(docs);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_api_config_valid),
		cmocka_unit_test(test_api_config_invalid),
		cmocka_unit_test(test_api_config_local_package_sources),
		cmocka_unit_test(test_api_haversine),
		cmocka_unit_test(test_api_place),
		cmocka_unit_test(test_api_range),
		cmocka_unit_test(test_api_tree_digest),
		cmocka_unit_test(test_api_openapi_embedded),
		cmocka_unit_test(test_api_server_routes),
		cmocka_unit_test(test_api_filter),
		cmocka_unit_test(test_api_filter_numbers),
		cmocka_unit_test(test_api_selectors),
		cmocka_unit_test(test_api_view_project_pure),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
