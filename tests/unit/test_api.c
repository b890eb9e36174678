/*
 * test_api.c - unit tests of the API server's pure parts and of a server
 * started in-process: configuration validation, haversine placement, Range
 * parsing, the package tree digest (against sha256sum), the embedded
 * OpenAPI document, and routing/authentication answers over real HTTP on
 * 127.0.0.1.  The full flow is in tests/integration/test_api.sh.
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

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_api_config_valid),
		cmocka_unit_test(test_api_config_invalid),
		cmocka_unit_test(test_api_haversine),
		cmocka_unit_test(test_api_place),
		cmocka_unit_test(test_api_range),
		cmocka_unit_test(test_api_tree_digest),
		cmocka_unit_test(test_api_openapi_embedded),
		cmocka_unit_test(test_api_server_routes),
		cmocka_unit_test(test_api_filter),
		cmocka_unit_test(test_api_filter_numbers),
		cmocka_unit_test(test_api_selectors),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
