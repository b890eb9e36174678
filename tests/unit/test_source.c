/*
 * test_source.c - module sources against real git servers on 127.0.0.1:
 * git daemon (git://), file:// repositories, OpenSSH sshd (ssh://, root
 * only) and git http-backend behind TLS with a test CA (https://).  The
 * servers and fixture repositories come from tests/integration/lib_gitlab.sh,
 * started by the group setup and stopped by its teardown.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "common.h"
#include "source.h"

#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef MO_SOURCE_DIR
#define MO_SOURCE_DIR "."
#endif

#define TOKEN "tok-5e3b9a71c0d24f86"

static char lab[256];
static int daemon_port, https_port, sshd_port, have_ssh;

/* ------------------------------------------------------------------ */
/* Helpers                                                             */

/* Run a bash snippet with lib_gitlab.sh sourced and LAB set; exit status. */
static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...)
{
	char cmd[4096], script[8192];
	va_list ap;
	pid_t pid;
	int status;
	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	snprintf(script, sizeof(script), ". '%s/tests/integration/lib_gitlab.sh' && LAB='%s' && %s",
		 MO_SOURCE_DIR, lab, cmd);
	fflush(NULL);
	pid = fork();
	if (pid == 0) {
		execl("/bin/bash", "bash", "-c", script, (char *)NULL);
		_exit(127);
	}
	if (pid < 0 || waitpid(pid, &status, 0) < 0)
		return -1;
	return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* First line of a shell command's output. */
static void sh_out(char *out, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void sh_out(char *out, size_t n, const char *fmt, ...)
{
	char cmd[4096];
	va_list ap;
	FILE *p;
	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	out[0] = '\0';
	p = popen(cmd, "r");
	assert_non_null(p);
	if (!fgets(out, (int)n, p))
		out[0] = '\0';
	pclose(p);
	out[strcspn(out, "\r\n")] = '\0';
}

static int read_int_file(const char *name)
{
	char path[PATH_MAX], buf[32] = "";
	FILE *f;
	snprintf(path, sizeof(path), "%s/%s", lab, name);
	if (!(f = fopen(path, "r")))
		return 0;
	if (!fgets(buf, sizeof(buf), f))
		buf[0] = '\0';
	fclose(f);
	return atoi(buf);
}

static char *slurp(const char *path)
{
	char *text = NULL;
	if (mo_file_read(&text, NULL, path) < 0)
		return NULL;
	return text;
}

/* A fresh directory $LAB/t/<name>. */
static const char *fresh_dir(const char *name)
{
	static char bufs[8][PATH_MAX];
	static int next;
	char *b = bufs[next++ % 8];
	snprintf(b, PATH_MAX, "%s/t/%s", lab, name);
	assert_int_equal(sh("rm -rf '%s' && mkdir -p '%s'", b, b), 0);
	return b;
}

/* Options that ignore the environment's credentials. */
static mo_source_opts opts_for(const char *plan_dir, const char *cache, int mode)
{
	mo_source_opts o;
	memset(&o, 0, sizeof(o));
	o.plan_dir = plan_dir;
	o.cache_dir = cache;
	o.mode = mode;
	o.ssh_key = "";
	o.ssh_key_passphrase = "";
	o.ssh_known_hosts = "";
	o.ssh_host_fingerprint = "";
	o.git_token = "";
	o.git_username = "";
	o.git_credentials = "";
	o.ca_bundle = "";
	return o;
}

static mo_sources *open_opts(const mo_source_opts *o)
{
	mo_sources *s = NULL;
	int rc = mo_sources_open(&s, o);
	if (rc)
		print_error("mo_sources_open: %s\n", mo_error_last()->message);
	assert_int_equal(rc, 0);
	return s;
}

static mo_sources *open_mode(const char *plan_dir, const char *cache, int mode)
{
	mo_source_opts o = opts_for(plan_dir, cache, mode);
	return open_opts(&o);
}

/* Resolve or fail the test with the error text. */
static void resolve_ok(mo_sources *s, const char *src, const char *version, char **dir,
		       char **pinned)
{
	int rc = mo_sources_resolve(s, src, version, dir, pinned);
	if (rc)
		print_error("resolve %s [%s]: %s\n", src, version ? version : "",
			    mo_error_last()->message);
	assert_int_equal(rc, 0);
}

/* Resolve expecting failure; returns the error message (static copy). */
static const char *resolve_err(mo_sources *s, const char *src, const char *version)
{
	static char msg[1024];
	char *dir = NULL, *pinned = NULL;
	int rc = mo_sources_resolve(s, src, version, &dir, &pinned);
	if (rc == 0)
		print_error("resolve %s [%s] unexpectedly gave %s\n", src, version ? version : "",
			    dir);
	assert_int_not_equal(rc, 0);
	assert_null(dir);
	snprintf(msg, sizeof(msg), "%s", mo_error_last()->message);
	return msg;
}

static void assert_contains(const char *hay, const char *needle)
{
	if (!strstr(hay, needle))
		print_error("'%s' does not contain '%s'\n", hay, needle);
	assert_non_null(strstr(hay, needle));
}

/* The version string module.lua in dir declares. */
static void assert_version(const char *dir, const char *want)
{
	char path[PATH_MAX], *text, *v, expect[128];
	snprintf(path, sizeof(path), "%s/module.lua", dir);
	text = slurp(path);
	assert_non_null(text);
	snprintf(expect, sizeof(expect), "version = \"%s\"", want);
	v = strstr(text, expect);
	if (!v)
		print_error("%s: %s (wanted %s)\n", path, text, want);
	assert_non_null(v);
	mo_free(text);
}

static void daemon_url(char *buf, size_t n, const char *repo, const char *rest)
{
	snprintf(buf, n, "git://127.0.0.1:%d/%s.git%s", daemon_port, repo, rest);
}

static void rev_parse(char *out, const char *repo, const char *rev)
{
	sh_out(out, 64, "git -C '%s/srv/%s.git' rev-parse '%s'", lab, repo, rev);
	assert_int_equal(strlen(out), 40);
}

/* ------------------------------------------------------------------ */
/* Setup                                                               */

static int group_setup(void **state)
{
	char tmpl[] = "/tmp/mecorch-source-XXXXXX";
	(void)state;
	if (!mkdtemp(tmpl))
		return -1;
	chmod(tmpl, 0755); /* the ssh user reads repositories from here */
	snprintf(lab, sizeof(lab), "%s", tmpl);
	if (sh("gitlab_make_repo \"$LAB\" modules && gitlab_make_repo \"$LAB\" moving && "
	       "gitlab_make_repo \"$LAB\" racing && gitlab_daemon_start \"$LAB\" && "
	       "gitlab_https_start \"$LAB\" %s",
	       TOKEN) != 0)
		return -1;
	daemon_port = read_int_file("daemon.port");
	https_port = read_int_file("https.port");
	if (geteuid() == 0) {
		if (sh("gitlab_sshd_start \"$LAB\"") != 0)
			return -1;
		sshd_port = read_int_file("sshd.port");
		have_ssh = 1;
	}
	return daemon_port && https_port ? 0 : -1;
}

static int group_teardown(void **state)
{
	(void)state;
	sh("gitlab_daemon_stop \"$LAB\"; gitlab_https_stop \"$LAB\"; gitlab_sshd_stop \"$LAB\"");
	if (!getenv("MECORCH_KEEP_LAB"))
		sh("rm -rf \"$LAB\"");
	return 0;
}

/* ------------------------------------------------------------------ */
/* Versions and constraints                                            */

static void test_source_semver(void **state)
{
	mo_semver a, b;
	(void)state;
	assert_int_equal(mo_semver_parse(&a, "v1.2.3"), 0);
	assert_true(a.major == 1 && a.minor == 2 && a.patch == 3 && !a.pre[0]);
	assert_int_equal(mo_semver_parse(&b, "1.2.3+build.7"), 0);
	assert_int_equal(mo_semver_cmp(&a, &b), 0);
	assert_int_equal(mo_semver_parse(&a, "1.2.3-rc.1"), 0);
	assert_string_equal(a.pre, "rc.1");
	assert_true(mo_semver_cmp(&a, &b) < 0);
	assert_int_equal(mo_semver_parse(&b, "1.2.3-rc.10"), 0);
	assert_true(mo_semver_cmp(&a, &b) < 0); /* numeric identifiers */
	assert_int_equal(mo_semver_parse(&b, "1.2.3-rc.a"), 0);
	assert_true(mo_semver_cmp(&a, &b) < 0); /* numeric < alphanumeric */
	assert_int_equal(mo_semver_parse(&b, "1.10.0"), 0);
	assert_int_equal(mo_semver_parse(&a, "1.9.9"), 0);
	assert_true(mo_semver_cmp(&a, &b) < 0);
	assert_int_not_equal(mo_semver_parse(&a, "1.2"), 0);
	assert_int_not_equal(mo_semver_parse(&a, "01.2.3"), 0);
	assert_int_not_equal(mo_semver_parse(&a, "release-1"), 0);
	assert_int_not_equal(mo_semver_parse(&a, "1.2.3-"), 0);
	assert_int_not_equal(mo_semver_parse(&a, "1.2.3.4"), 0);
}

static int matches(const char *constraint, const char *version)
{
	mo_constraint *c = NULL;
	mo_semver v;
	int r;
	assert_int_equal(mo_constraint_parse(&c, constraint), 0);
	assert_int_equal(mo_semver_parse(&v, version), 0);
	r = mo_constraint_match(c, &v);
	mo_constraint_free(c);
	return r;
}

static void test_source_constraint(void **state)
{
	mo_constraint *c = NULL;
	(void)state;
	assert_true(matches("~> 1.2", "1.2.0"));
	assert_true(matches("~> 1.2", "1.9.7"));
	assert_false(matches("~> 1.2", "2.0.0"));
	assert_false(matches("~> 1.2", "1.1.9"));
	assert_true(matches("~> 1.2.3", "1.2.9"));
	assert_false(matches("~> 1.2.3", "1.3.0"));
	assert_false(matches("~> 1.2.3", "1.2.2"));
	assert_true(matches(">= 1.0, < 2.0", "1.99.0"));
	assert_false(matches(">= 1.0, < 2.0", "2.0.0"));
	assert_true(matches("= 1.2.3", "v1.2.3"));
	assert_true(matches("1.2.3", "1.2.3"));
	assert_false(matches("1.2.3", "1.2.4"));
	assert_false(matches("!= 1.2.3", "1.2.3"));
	assert_true(matches("> 1.2, <= 1.4.1", "1.4.1"));
	/* pre-releases only when named exactly */
	assert_false(matches(">= 2.0", "2.1.0-rc1"));
	assert_false(matches("~> 2.1", "2.1.0-rc1"));
	assert_true(matches("= 2.1.0-rc1", "2.1.0-rc1"));
	assert_true(matches("2.1.0-rc1", "2.1.0-rc1"));

	assert_int_equal(mo_constraint_parse(&c, ">=1.0,<2.0"), 0);
	assert_string_equal(mo_constraint_string(c), ">= 1.0, < 2.0");
	mo_constraint_free(c);
	assert_int_equal(mo_constraint_parse(&c, "1.2"), 0);
	assert_string_equal(mo_constraint_string(c), "= 1.2");
	mo_constraint_free(c);
	assert_int_equal(mo_constraint_parse(&c, "~> x"), MO_EINVAL);
	assert_int_equal(mo_constraint_parse(&c, ">= 1.0,"), MO_EINVAL);
	assert_int_equal(mo_constraint_parse(&c, "~> 1.0.0-rc1"), MO_EINVAL);
}

/* ------------------------------------------------------------------ */
/* Local paths                                                         */

static void test_source_local(void **state)
{
	const char *plan = fresh_dir("local");
	mo_sources *s;
	char *dir = NULL, *pinned = NULL, want[PATH_MAX];
	(void)state;
	assert_int_equal(
		sh("mkdir -p '%s/mods/a' '%s/empty' && echo 'return {}' >'%s/mods/a/module.lua'",
		   plan, plan, plan),
		0);
	s = open_mode(plan, NULL, MO_SOURCES_LOCKED);
	resolve_ok(s, "./mods/a", NULL, &dir, &pinned);
	snprintf(want, sizeof(want), "%s/mods/a", plan);
	assert_string_equal(dir, want);
	assert_string_equal(pinned, want);
	mo_free(dir);
	mo_free(pinned);
	assert_contains(resolve_err(s, "./empty", NULL), "no module.lua");
	assert_contains(resolve_err(s, "./missing", NULL), "missing");
	mo_sources_free(s);
}

/* Source strings that are refused before any network access. */
static void test_source_bad_urls(void **state)
{
	const char *plan = fresh_dir("badurls");
	mo_sources *s = open_mode(plan, plan, MO_SOURCES_INIT);
	char url[512];
	const char *msg;
	(void)state;
	assert_contains(resolve_err(s, "git+http://127.0.0.1/x.git", NULL), "unsupported");
	assert_contains(resolve_err(s, "git+https://127.0.0.1", NULL), "no repository path");
	assert_contains(resolve_err(s, "git://127.0.0.1/x.git?depth=1", NULL), "only ref=");
	assert_contains(resolve_err(s, "git://127.0.0.1/x.git//a/../../etc", NULL), "'..'");
	assert_contains(resolve_err(s, "git://127.0.0.1/x.git?ref=v1.0.0", "~> 1.0"), "not both");
	assert_contains(resolve_err(s, "git://127.0.0.1/x.git", "~> banana"),
			"invalid version constraint");
	mo_sources_free(s);

	/* LOCKED, not in the lock: the message names the source without
	 * the credentials it carried. */
	s = open_mode(plan, plan, MO_SOURCES_LOCKED);
	snprintf(url, sizeof(url), "git+https://deploy:%s@127.0.0.1:%d/modules.git//modules/net",
		 TOKEN, https_port);
	msg = resolve_err(s, url, "~> 1.0");
	snprintf(url, sizeof(url),
		 "module source 'git+https://127.0.0.1:%d/modules.git//modules/net' "
		 "is not in mecorch.lock: run `mecorch init`",
		 https_port);
	assert_string_equal(msg, url);
	assert_null(strstr(msg, TOKEN));
	assert_int_equal(mo_error_last()->code, MO_ESOURCE);
	mo_sources_free(s);
}

/* ------------------------------------------------------------------ */
/* Resolution over git://                                              */

static void test_source_constraints(void **state)
{
	static const struct {
		const char *constraint, *version, *ref;
	} cases[] = {
		{ "~> 1.0", "1.1.0", "refs/tags/v1.1.0" },
		{ ">= 1.0, < 2.0", "1.1.0", "refs/tags/v1.1.0" },
		{ "~> 1.0.0", "1.0.5", "refs/tags/1.0.5" }, /* tag without "v" */
		{ "= 1.0.0", "1.0.0", "refs/tags/v1.0.0" }, /* annotated tag */
		{ "1.1.0", "1.1.0", "refs/tags/v1.1.0" },   /* lightweight tag */
		{ ">= 2.0", "2.0.0", "refs/tags/v2.0.0" },  /* rc1 excluded */
		{ "~> 2.0", "2.0.0", "refs/tags/v2.0.0" },
		{ "= 2.1.0-rc1", "2.1.0-rc1", "refs/tags/v2.1.0-rc1" },
		{ "> 1.0.0, != 1.1.0, < 2", "1.0.5", "refs/tags/1.0.5" },
	};
	const char *plan = fresh_dir("constraints");
	char url[256], lockp[PATH_MAX];
	mo_sources *s = open_mode(plan, plan, MO_SOURCES_INIT);
	json_t *lock, *arr;
	(void)state;

	daemon_url(url, sizeof(url), "modules", "");
	for (size_t i = 0; i < MO_ARRAY_SIZE(cases); i++) {
		char *dir = NULL, *pinned = NULL;
		resolve_ok(s, url, cases[i].constraint, &dir, &pinned);
		assert_version(dir, cases[i].version);
		mo_free(dir);
		mo_free(pinned);
	}
	assert_contains(resolve_err(s, url, "~> 3.0"), "no tag of");
	assert_int_equal(mo_sources_commit(s), 0);
	mo_sources_free(s);

	/* The lock records each constraint with the tag it resolved to. */
	snprintf(lockp, sizeof(lockp), "%s/mecorch.lock", plan);
	lock = json_load_file(lockp, 0, NULL);
	assert_non_null(lock);
	arr = json_object_get(lock, "sources");
	assert_int_equal(json_array_size(arr), MO_ARRAY_SIZE(cases));
	for (size_t i = 0; i < MO_ARRAY_SIZE(cases); i++) {
		mo_constraint *c = NULL;
		int found = 0;
		size_t j;
		json_t *e;
		assert_int_equal(mo_constraint_parse(&c, cases[i].constraint), 0);
		json_array_foreach(arr, j, e) {
			if (!strcmp(json_string_value(json_object_get(e, "constraint")),
				    mo_constraint_string(c))) {
				assert_string_equal(json_string_value(json_object_get(e, "ref")),
						    cases[i].ref);
				found = 1;
			}
		}
		assert_true(found);
		mo_constraint_free(c);
	}
	json_decref(lock);
}

static void test_source_refs(void **state)
{
	const char *plan = fresh_dir("refs");
	mo_sources *s = open_mode(plan, plan, MO_SOURCES_INIT);
	char url[512], commit[64], tree[64], *dir = NULL, *pinned = NULL, path[PATH_MAX];
	char link[64];
	struct stat st;
	ssize_t n;
	(void)state;

	daemon_url(url, sizeof(url), "modules", "?ref=v1.0.0"); /* annotated */
	resolve_ok(s, url, NULL, &dir, &pinned);
	assert_version(dir, "1.0.0");
	rev_parse(commit, "modules", "v1.0.0^{commit}");
	daemon_url(url, sizeof(url), "modules", "?ref=");
	assert_contains(pinned, url);
	assert_contains(pinned, commit);
	assert_contains(dir, commit);
	mo_free(dir);
	mo_free(pinned);

	daemon_url(url, sizeof(url), "modules", "?ref=v1.1.0"); /* lightweight */
	resolve_ok(s, url, NULL, &dir, &pinned);
	assert_version(dir, "1.1.0");
	mo_free(dir);
	mo_free(pinned);

	daemon_url(url, sizeof(url), "modules", "?ref=feature"); /* branch */
	resolve_ok(s, url, NULL, &dir, &pinned);
	assert_version(dir, "feature");
	mo_free(dir);
	mo_free(pinned);

	daemon_url(url, sizeof(url), "modules", ""); /* remote HEAD */
	resolve_ok(s, url, NULL, &dir, &pinned);
	assert_version(dir, "2.1.0-rc1");
	mo_free(dir);
	mo_free(pinned);

	rev_parse(commit, "modules", "1.0.5^{commit}"); /* full commit */
	snprintf(url, sizeof(url), "git://127.0.0.1:%d/modules.git?ref=%s", daemon_port, commit);
	resolve_ok(s, url, NULL, &dir, &pinned);
	assert_version(dir, "1.0.5");
	mo_free(dir);
	mo_free(pinned);
	snprintf(url, sizeof(url), "git://127.0.0.1:%d/modules.git?ref=%.10s", daemon_port, commit);
	resolve_ok(s, url, NULL, &dir, &pinned); /* short commit */
	assert_version(dir, "1.0.5");
	assert_contains(pinned, commit);
	mo_free(dir);
	mo_free(pinned);

	/* A subdir module, over file:// this time: nested files, the
	 * executable bit and a relative symlink come through, and the
	 * directory is the tree git names for that subdir. */
	snprintf(url, sizeof(url), "git+file://%s/srv/modules.git//modules/net?ref=v2.0.0", lab);
	resolve_ok(s, url, NULL, &dir, &pinned);
	assert_version(dir, "2.0.0");
	snprintf(path, sizeof(path), "%s/bin/run.sh", dir);
	assert_int_equal(stat(path, &st), 0);
	assert_true(st.st_mode & S_IXUSR);
	snprintf(path, sizeof(path), "%s/util.lua", dir);
	n = readlink(path, link, sizeof(link) - 1);
	assert_true(n > 0);
	link[n] = '\0';
	assert_string_equal(link, "lib/util.lua");
	snprintf(path, sizeof(path), "%s/lib/util.lua", dir);
	assert_int_equal(stat(path, &st), 0);
	mo_free(dir);
	mo_free(pinned);

	daemon_url(url, sizeof(url), "modules", "?ref=no-such-ref");
	assert_contains(resolve_err(s, url, NULL), "not found");
	daemon_url(url, sizeof(url), "modules", "//no/such/dir?ref=v1.0.0");
	assert_contains(resolve_err(s, url, NULL), "no directory 'no/such/dir'");
	daemon_url(url, sizeof(url), "modules", "//modules?ref=v1.0.0");
	assert_contains(resolve_err(s, url, NULL), "no module.lua");
	assert_int_equal(mo_sources_commit(s), 0);
	mo_sources_free(s);

	/* The lock's tree hash is git's own id of that subdir. */
	{
		char lockp[PATH_MAX], *text;
		rev_parse(tree, "modules", "v2.0.0:modules/net");
		snprintf(lockp, sizeof(lockp), "%s/mecorch.lock", plan);
		text = slurp(lockp);
		assert_non_null(text);
		assert_contains(text, tree);
		mo_free(text);
	}
}

static void test_source_lock(void **state)
{
	const char *plan = fresh_dir("lock");
	char cache[PATH_MAX], url_a[256], url_b[256], lockp[PATH_MAX], commit[64], tree[64];
	char *dir_a = NULL, *pin_a = NULL, *dir_b = NULL, *pin_b = NULL, *dir = NULL, *pin = NULL;
	char *text1, *text2, *text3;
	mo_sources *s;
	json_t *lock, *arr, *e;
	(void)state;

	snprintf(cache, sizeof(cache), "%s/cache", plan);
	snprintf(lockp, sizeof(lockp), "%s/mecorch.lock", plan);
	daemon_url(url_a, sizeof(url_a), "modules", "//modules/net");
	daemon_url(url_b, sizeof(url_b), "modules", "?ref=v1.0.0");

	s = open_mode(plan, cache, MO_SOURCES_INIT);
	resolve_ok(s, url_a, "~> 1.0", &dir_a, &pin_a);
	resolve_ok(s, url_b, NULL, &dir_b, &pin_b);
	assert_int_equal(mo_sources_commit(s), 0);
	mo_sources_free(s);

	lock = json_load_file(lockp, 0, NULL);
	assert_non_null(lock);
	assert_int_equal(json_integer_value(json_object_get(lock, "version")), 1);
	arr = json_object_get(lock, "sources");
	assert_int_equal(json_array_size(arr), 2);
	/* sorted by source: "...modules.git//modules/net" < "...modules.git?ref=v1.0.0" */
	e = json_array_get(arr, 0);
	assert_string_equal(json_string_value(json_object_get(e, "source")), url_a);
	assert_string_equal(json_string_value(json_object_get(e, "constraint")), "~> 1.0");
	assert_string_equal(json_string_value(json_object_get(e, "ref")), "refs/tags/v1.1.0");
	assert_string_equal(json_string_value(json_object_get(e, "subdir")), "modules/net");
	rev_parse(commit, "modules", "v1.1.0^{commit}");
	rev_parse(tree, "modules", "v1.1.0:modules/net");
	assert_string_equal(json_string_value(json_object_get(e, "commit")), commit);
	assert_string_equal(json_string_value(json_object_get(e, "tree")), tree);
	e = json_array_get(arr, 1);
	assert_string_equal(json_string_value(json_object_get(e, "source")), url_b);
	assert_true(json_is_null(json_object_get(e, "constraint")));
	assert_string_equal(json_string_value(json_object_get(e, "ref")), "refs/tags/v1.0.0");
	rev_parse(commit, "modules", "v1.0.0^{commit}");
	assert_string_equal(json_string_value(json_object_get(e, "commit")), commit);
	json_decref(lock);

	/* A second init with the lock in place changes nothing, resolving in
	 * another order. */
	text1 = slurp(lockp);
	s = open_mode(plan, cache, MO_SOURCES_INIT);
	resolve_ok(s, url_b, NULL, &dir, &pin);
	mo_free(dir);
	mo_free(pin);
	resolve_ok(s, url_a, "~> 1.0", &dir, &pin);
	assert_string_equal(dir, dir_a);
	mo_free(dir);
	mo_free(pin);
	assert_int_equal(mo_sources_commit(s), 0);
	mo_sources_free(s);
	text2 = slurp(lockp);
	assert_string_equal(text1, text2);

	/* LOCKED reuses it: same trees; the constraint's spelling does not
	 * matter; pinned strings resolve; unknown sources are refused. */
	s = open_mode(plan, cache, MO_SOURCES_LOCKED);
	assert_contains(resolve_err(s, url_a, ">= 1.0, < 2.0"),
			"is not in mecorch.lock: run `mecorch init` (the lock has it for "
			"version '~> 1.0', not '>= 1.0, < 2.0')");
	resolve_ok(s, url_a, "~>1.0", &dir, &pin);
	assert_string_equal(dir, dir_a);
	assert_string_equal(pin, pin_a);
	mo_free(dir);
	mo_free(pin);
	resolve_ok(s, pin_a, NULL, &dir, &pin);
	assert_string_equal(dir, dir_a);
	mo_free(dir);
	mo_free(pin);
	resolve_ok(s, url_b, NULL, &dir, &pin);
	assert_string_equal(dir, dir_b);
	assert_string_equal(pin, pin_b);
	mo_free(dir);
	mo_free(pin);
	assert_int_equal(mo_sources_commit(s), 0);
	mo_sources_free(s);
	text3 = slurp(lockp);
	assert_string_equal(text1, text3);
	mo_free(text1);
	mo_free(text2);
	mo_free(text3);

	/* Init with only one of the two sources drops the other. */
	s = open_mode(plan, cache, MO_SOURCES_INIT);
	resolve_ok(s, url_b, NULL, &dir, &pin);
	mo_free(dir);
	mo_free(pin);
	assert_int_equal(mo_sources_commit(s), 0);
	mo_sources_free(s);
	lock = json_load_file(lockp, 0, NULL);
	assert_int_equal(json_array_size(json_object_get(lock, "sources")), 1);
	json_decref(lock);

	/* ... yet the dropped module's pinned string still resolves offline
	 * (a destroy of a removed module needs it). */
	s = open_mode(plan, cache, MO_SOURCES_LOCKED);
	resolve_ok(s, pin_a, NULL, &dir, &pin);
	assert_string_equal(dir, dir_a);
	mo_free(dir);
	mo_free(pin);
	mo_sources_free(s);

	mo_free(dir_a);
	mo_free(pin_a);
	mo_free(dir_b);
	mo_free(pin_b);
}

static void test_source_moved_tag(void **state)
{
	const char *plan = fresh_dir("moved");
	char url[256], old_commit[64], new_commit[64], *dir = NULL, *pin = NULL;
	const char *msg;
	mo_sources *s;
	(void)state;

	daemon_url(url, sizeof(url), "moving", "?ref=v1.0.0");
	rev_parse(old_commit, "moving", "v1.0.0^{commit}");
	s = open_mode(plan, plan, MO_SOURCES_INIT);
	resolve_ok(s, url, NULL, &dir, &pin);
	mo_free(dir);
	mo_free(pin);
	assert_int_equal(mo_sources_commit(s), 0);
	mo_sources_free(s);

	assert_int_equal(sh("gitlab_move_tag \"$LAB\" moving v1.0.0"), 0);
	rev_parse(new_commit, "moving", "v1.0.0^{commit}");
	assert_string_not_equal(old_commit, new_commit);

	/* init refuses the force-pushed tag */
	s = open_mode(plan, plan, MO_SOURCES_INIT);
	msg = resolve_err(s, url, NULL);
	assert_contains(msg, "tag v1.0.0 of git://127.0.0.1");
	assert_contains(msg, "moved");
	assert_contains(msg, old_commit);
	assert_contains(msg, new_commit);
	assert_int_equal(mo_error_last()->code, MO_ESOURCE);
	mo_sources_free(s);

	/* plan keeps using what the lock pins */
	s = open_mode(plan, plan, MO_SOURCES_LOCKED);
	resolve_ok(s, url, NULL, &dir, &pin);
	assert_version(dir, "1.0.0");
	assert_contains(pin, old_commit);
	mo_free(dir);
	mo_free(pin);
	mo_sources_free(s);

	/* upgrade takes the new commit and rewrites the lock */
	s = open_mode(plan, plan, MO_SOURCES_UPGRADE);
	resolve_ok(s, url, NULL, &dir, &pin);
	assert_version(dir, "moved-v1.0.0");
	assert_contains(pin, new_commit);
	mo_free(dir);
	mo_free(pin);
	assert_int_equal(mo_sources_commit(s), 0);
	mo_sources_free(s);

	s = open_mode(plan, plan, MO_SOURCES_INIT);
	resolve_ok(s, url, NULL, &dir, &pin);
	assert_version(dir, "moved-v1.0.0");
	mo_free(dir);
	mo_free(pin);
	mo_sources_free(s);
}

static void test_source_cache_modified(void **state)
{
	const char *plan = fresh_dir("tamper");
	char url[256], *dir = NULL, *pin = NULL;
	mo_sources *s;
	(void)state;

	daemon_url(url, sizeof(url), "modules", "//modules/net?ref=v1.1.0");
	s = open_mode(plan, plan, MO_SOURCES_INIT);
	resolve_ok(s, url, NULL, &dir, &pin);
	assert_int_equal(mo_sources_commit(s), 0);
	mo_sources_free(s);
	mo_free(pin);

	/* an edited file */
	assert_int_equal(
		sh("chmod u+w '%s/module.lua' && echo '-- edited' >>'%s/module.lua'", dir, dir), 0);
	s = open_mode(plan, plan, MO_SOURCES_LOCKED);
	assert_contains(resolve_err(s, url, NULL), "was modified");
	mo_sources_free(s);
	s = open_mode(plan, plan, MO_SOURCES_INIT); /* init does not paper over it */
	assert_contains(resolve_err(s, url, NULL), "was modified");
	mo_sources_free(s);
	assert_int_equal(sh("sed -i '/-- edited/d' '%s/module.lua'", dir), 0);

	/* an added file */
	assert_int_equal(sh("echo 'return 1' >'%s/extra.lua'", dir), 0);
	s = open_mode(plan, plan, MO_SOURCES_LOCKED);
	assert_contains(resolve_err(s, url, NULL), "was modified");
	mo_sources_free(s);
	assert_int_equal(sh("rm '%s/extra.lua'", dir), 0);

	/* a lost executable bit */
	assert_int_equal(sh("chmod a-x '%s/bin/run.sh'", dir), 0);
	s = open_mode(plan, plan, MO_SOURCES_LOCKED);
	assert_contains(resolve_err(s, url, NULL), "was modified");
	mo_sources_free(s);
	assert_int_equal(sh("chmod 555 '%s/bin/run.sh'", dir), 0);

	/* restored: accepted again */
	s = open_mode(plan, plan, MO_SOURCES_LOCKED);
	{
		char *d2 = NULL;
		resolve_ok(s, url, NULL, &d2, &pin);
		assert_string_equal(d2, dir);
		mo_free(d2);
		mo_free(pin);
	}
	mo_sources_free(s);

	/* a deleted tree is extracted again from the cached mirror, offline */
	assert_int_equal(sh("chmod -R u+w '%s' && rm -rf '%s'", dir, dir), 0);
	s = open_mode(plan, plan, MO_SOURCES_LOCKED);
	{
		char *d2 = NULL;
		resolve_ok(s, url, NULL, &d2, &pin);
		assert_string_equal(d2, dir);
		assert_version(d2, "1.1.0");
		mo_free(d2);
		mo_free(pin);
	}
	mo_sources_free(s);
	mo_free(dir);
}

/* Every allocation failure in open / resolve / commit is reported, never
 * a crash or a leak (the sanitizer build checks the latter). */
static void test_source_oom(void **state)
{
	const char *plan = fresh_dir("oom");
	char url[256], *dir = NULL, *pin = NULL;
	mo_sources *s;
	int pass, mode, n, rc, done;
	(void)state;

	daemon_url(url, sizeof(url), "modules", "//modules/net");
	s = open_mode(plan, plan, MO_SOURCES_INIT);
	resolve_ok(s, url, "~> 1.0", &dir, &pin);
	mo_free(dir);
	mo_free(pin);
	assert_int_equal(mo_sources_commit(s), 0);
	mo_sources_free(s);

	/* LOCKED with the tree cached, LOCKED extracting it from the mirror,
	 * INIT fetching */
	for (pass = 0; pass < 3; pass++) {
		mode = pass < 2 ? MO_SOURCES_LOCKED : MO_SOURCES_INIT;
		for (n = 1, done = 0; !done && n < 2000; n++) {
			mo_source_opts o = opts_for(plan, plan, mode);
			if (pass == 1)
				assert_int_equal(
					sh("chmod -R u+w '%s/trees' 2>/dev/null; rm -rf '%s/trees'",
					   plan, plan),
					0);
			s = NULL;
			dir = pin = NULL;
			mo_alloc_fail_after(n);
			rc = mo_sources_open(&s, &o);
			if (rc == 0) {
				rc = mo_sources_resolve(s, url, "~> 1.0", &dir, &pin);
				if (rc < 0) {
					assert_null(dir);
					assert_null(pin);
				} else {
					rc = mo_sources_commit(s);
				}
			}
			mo_alloc_fail_after(0);
			assert_true(rc <= 0);
			if (rc == 0) {
				assert_version(dir, "1.1.0");
				done = 1;
			}
			mo_free(dir);
			mo_free(pin);
			mo_sources_free(s);
		}
		assert_true(done);
		assert_true(n > 5); /* some allocations did fail */
	}
}

/* Two processes fetching into one empty cache at once. */
static void test_source_concurrent_fetch(void **state)
{
	const char *plan = fresh_dir("race");
	char cache[PATH_MAX], urls[3][256], out[256];
	pid_t kids[2];
	int gate[2];
	mo_sources *s;
	(void)state;

	snprintf(cache, sizeof(cache), "%s/cache", plan);
	daemon_url(urls[0], sizeof(urls[0]), "racing", "//modules/net");
	daemon_url(urls[1], sizeof(urls[1]), "racing", "?ref=feature");
	daemon_url(urls[2], sizeof(urls[2]), "racing", "//modules/net?ref=v1.0.0");
	assert_int_equal(pipe(gate), 0);
	fflush(NULL);
	for (int k = 0; k < 2; k++) {
		kids[k] = fork();
		assert_true(kids[k] >= 0);
		if (kids[k] == 0) {
			char lockp[PATH_MAX], c;
			mo_source_opts o = opts_for(plan, cache, MO_SOURCES_INIT);
			mo_sources *cs = NULL;
			int bad = 0;
			close(gate[1]);
			if (read(gate[0], &c, 1) < 0)
				_exit(3);
			snprintf(lockp, sizeof(lockp), "%s/lock.%d", plan, k);
			o.lock_path = lockp;
			if (mo_sources_open(&cs, &o) < 0)
				_exit(2);
			for (int i = 0; i < 3; i++) {
				char *d = NULL, *p = NULL;
				int j = (i + k) % 3;
				if (mo_sources_resolve(cs, urls[j], j == 0 ? "~> 1.0" : NULL, &d,
						       &p) < 0) {
					fprintf(stderr, "child %d: %s\n", k,
						mo_error_last()->message);
					bad = 1;
				}
				mo_free(d);
				mo_free(p);
			}
			bad |= mo_sources_commit(cs) < 0;
			mo_sources_free(cs);
			_exit(bad);
		}
	}
	close(gate[0]);
	close(gate[1]); /* both start now */
	for (int k = 0; k < 2; k++) {
		int status = 0;
		assert_int_equal(waitpid(kids[k], &status, 0), kids[k]);
		assert_true(WIFEXITED(status));
		assert_int_equal(WEXITSTATUS(status), 0);
	}

	/* Both locks agree, and every tree verifies against them. */
	assert_int_equal(sh("cmp -s '%s/lock.0' '%s/lock.1'", plan, plan), 0);
	for (int k = 0; k < 2; k++) {
		char lockp[PATH_MAX];
		mo_source_opts o = opts_for(plan, cache, MO_SOURCES_LOCKED);
		snprintf(lockp, sizeof(lockp), "%s/lock.%d", plan, k);
		o.lock_path = lockp;
		s = open_opts(&o);
		for (int i = 0; i < 3; i++) {
			char *d = NULL, *p = NULL;
			resolve_ok(s, urls[i], i == 0 ? "~> 1.0" : NULL, &d, &p);
			mo_free(d);
			mo_free(p);
		}
		mo_sources_free(s);
	}
	/* One mirror, intact; no leftovers in the work area. */
	sh_out(out, sizeof(out), "ls -d '%s'/repos/*/ | wc -l", cache);
	assert_string_equal(out, "1");
	assert_int_equal(
		sh("git -C \"$(ls -d '%s'/repos/*/)\" fsck --strict --no-dangling --no-progress",
		   cache),
		0);
	sh_out(out, sizeof(out), "ls -A '%s/tmp' | wc -l", cache);
	assert_string_equal(out, "0");
	sh_out(out, sizeof(out), "ls '%s/trees' | wc -l", cache);
	assert_string_equal(out, "3");
}

/* With the server down: plan works from the cache; a missing cache says
 * to run init; init names the url it cannot reach. */
static void test_source_offline(void **state)
{
	const char *plan = fresh_dir("offline");
	char cache[PATH_MAX], cache2[PATH_MAX], url[256], *dir = NULL, *pin = NULL;
	const char *msg;
	mo_source_opts o;
	mo_sources *s;
	(void)state;

	snprintf(cache, sizeof(cache), "%s/cache", plan);
	snprintf(cache2, sizeof(cache2), "%s/cache-empty", plan);
	daemon_url(url, sizeof(url), "modules", "//modules/net");
	s = open_mode(plan, cache, MO_SOURCES_INIT);
	resolve_ok(s, url, "~> 2.0", &dir, &pin);
	mo_free(dir);
	mo_free(pin);
	assert_int_equal(mo_sources_commit(s), 0);
	mo_sources_free(s);

	assert_int_equal(sh("gitlab_daemon_stop \"$LAB\""), 0);

	s = open_mode(plan, cache, MO_SOURCES_LOCKED);
	resolve_ok(s, url, "~> 2.0", &dir, &pin);
	assert_version(dir, "2.0.0");
	mo_free(dir);
	mo_free(pin);
	mo_sources_free(s);

	o = opts_for(plan, cache2, MO_SOURCES_LOCKED);
	s = open_opts(&o);
	msg = resolve_err(s, url, "~> 2.0");
	assert_contains(msg, "is not in the module cache");
	assert_contains(msg, "run `mecorch init`");
	mo_sources_free(s);

	o.mode = MO_SOURCES_INIT;
	s = open_opts(&o);
	msg = resolve_err(s, url, "~> 2.0");
	daemon_url(url, sizeof(url), "modules", "");
	assert_contains(msg, "cannot fetch ");
	assert_contains(msg, url);
	mo_sources_free(s);

	/* Back on its port; on another one should something have taken it
	 * meanwhile (no later test fetches from the daemon). */
	assert_int_equal(sh("gitlab_daemon_start \"$LAB\" %d || gitlab_daemon_start \"$LAB\"",
			    daemon_port),
			 0);
	daemon_port = read_int_file("daemon.port");
	assert_true(daemon_port > 0);
}

/* ------------------------------------------------------------------ */
/* ssh                                                                 */

static void ssh_url(char *buf, size_t n, const char *rest)
{
	snprintf(buf, n, "git+ssh://mecorchgit@127.0.0.1:%d%s/srv/modules.git%s", sshd_port, lab,
		 rest);
}

static mo_source_opts ssh_opts(const char *plan, const char *key, const char *known_hosts)
{
	static char keyp[PATH_MAX], khp[PATH_MAX];
	mo_source_opts o = opts_for(plan, plan, MO_SOURCES_INIT);
	snprintf(keyp, sizeof(keyp), "%s/ssh/%s", lab, key);
	snprintf(khp, sizeof(khp), "%s/ssh/%s", lab, known_hosts);
	o.ssh_key = keyp;
	o.ssh_known_hosts = khp;
	return o;
}

static void test_source_ssh_known_hosts(void **state)
{
	const char *plan;
	char url[PATH_MAX], *dir = NULL, *pin = NULL;
	mo_source_opts o;
	mo_sources *s;
	(void)state;
	if (!have_ssh)
		skip();
	plan = fresh_dir("ssh-ok");
	ssh_url(url, sizeof(url), "//modules/net");
	o = ssh_opts(plan, "client_ed25519", "known_hosts");
	s = open_opts(&o);
	resolve_ok(s, url, "~> 1.0", &dir, &pin);
	assert_version(dir, "1.1.0");
	mo_free(dir);
	mo_free(pin);
	mo_sources_free(s);

	plan = fresh_dir("ssh-hashed");
	o = ssh_opts(plan, "client_ed25519", "known_hosts_hashed");
	s = open_opts(&o);
	resolve_ok(s, url, "= 1.0.0", &dir, &pin);
	assert_version(dir, "1.0.0");
	mo_free(dir);
	mo_free(pin);
	mo_sources_free(s);
}

static void test_source_ssh_wrong_key(void **state)
{
	const char *plan;
	char url[PATH_MAX], want[PATH_MAX], fp[128], count[32];
	const char *msg;
	mo_source_opts o;
	mo_sources *s;
	(void)state;
	if (!have_ssh)
		skip();
	plan = fresh_dir("ssh-badkey");
	ssh_url(url, sizeof(url), "");
	o = ssh_opts(plan, "other_ed25519", "known_hosts");
	s = open_opts(&o);
	msg = resolve_err(s, url, "~> 1.0");
	snprintf(want, sizeof(want),
		 "authentication failed for ssh://mecorchgit@127.0.0.1:%d%s"
		 "/srv/modules.git: key rejected",
		 sshd_port, lab);
	assert_contains(msg, want);
	mo_sources_free(s);
	/* the server saw that key offered once, not until it hung up (sshd
	 * may write its log line a moment after the client gave up: wait for
	 * it, bounded) */
	sh_out(fp, sizeof(fp),
	       "ssh-keygen -l -E sha256 -f '%s/ssh/other_ed25519.pub' | cut -d' ' -f2", lab);
	sh("for i in $(seq 1 600); do grep -q 'publickey.*%s' \"$LAB/sshd.log\" && break; sleep 0.05; done",
	   fp);
	sh_out(count, sizeof(count), "grep -c 'publickey.*%s' '%s/sshd.log'", fp, lab);
	if (atoi(count) < 1 || atoi(count) > 2)
		print_error("sshd saw the rejected key %s times\n", count);
	assert_true(atoi(count) >= 1 && atoi(count) <= 2);

	/* no key at all */
	plan = fresh_dir("ssh-nokey");
	o = ssh_opts(plan, "missing_ed25519", "known_hosts");
	s = open_opts(&o);
	assert_contains(resolve_err(s, url, "~> 1.0"), "no readable ssh key");
	mo_sources_free(s);
}

static void test_source_ssh_unknown_host(void **state)
{
	const char *plan;
	char url[PATH_MAX];
	const char *msg;
	mo_source_opts o;
	mo_sources *s;
	(void)state;
	if (!have_ssh)
		skip();
	ssh_url(url, sizeof(url), "");

	plan = fresh_dir("ssh-unknown");
	assert_int_equal(sh("echo '# nothing' >'%s/empty_known_hosts'", plan), 0);
	o = ssh_opts(plan, "client_ed25519", "../t/ssh-unknown/empty_known_hosts");
	s = open_opts(&o);
	msg = resolve_err(s, url, "~> 1.0");
	assert_contains(msg, "unknown ssh host [127.0.0.1]:");
	assert_contains(msg, "refusing");
	mo_sources_free(s);

	plan = fresh_dir("ssh-otherkey");
	o = ssh_opts(plan, "client_ed25519", "known_hosts_other");
	s = open_opts(&o);
	msg = resolve_err(s, url, "~> 1.0");
	assert_contains(msg, "differs from the one in");
	mo_sources_free(s);
}

static void test_source_ssh_fingerprint(void **state)
{
	const char *plan;
	char url[PATH_MAX], fp[128], *dir = NULL, *pin = NULL;
	mo_source_opts o;
	mo_sources *s;
	(void)state;
	if (!have_ssh)
		skip();
	ssh_url(url, sizeof(url), "?ref=v2.0.0");
	sh_out(fp, sizeof(fp), "cat '%s/ssh/fingerprint'", lab);
	assert_true(!strncmp(fp, "SHA256:", 7));

	plan = fresh_dir("ssh-pinned");
	o = ssh_opts(plan, "client_ed25519", "no_such_known_hosts");
	o.ssh_host_fingerprint = fp;
	s = open_opts(&o);
	resolve_ok(s, url, NULL, &dir, &pin);
	assert_version(dir, "2.0.0");
	mo_free(dir);
	mo_free(pin);
	mo_sources_free(s);

	/* from the environment, and a wrong pin is refused even though
	 * known_hosts would accept the key */
	plan = fresh_dir("ssh-badpin");
	o = ssh_opts(plan, "client_ed25519", "known_hosts");
	o.ssh_host_fingerprint = NULL;
	setenv("MECORCH_SSH_HOST_FINGERPRINT", "SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU",
	       1);
	s = open_opts(&o);
	unsetenv("MECORCH_SSH_HOST_FINGERPRINT");
	assert_contains(resolve_err(s, url, NULL), "does not match the pinned fingerprint");
	mo_sources_free(s);
}

/* ------------------------------------------------------------------ */
/* https                                                               */

static void https_url(char *buf, size_t n, const char *userinfo, const char *rest)
{
	snprintf(buf, n, "git+https://%s127.0.0.1:%d/modules.git%s", userinfo, https_port, rest);
}

static void assert_file_lacks(const char *path, const char *needle)
{
	char *text = slurp(path);
	assert_non_null(text);
	if (strstr(text, needle))
		print_error("%s contains '%s'\n", path, needle);
	assert_null(strstr(text, needle));
	mo_free(text);
}

const char *__lsan_default_suppressions(void);
const char *__asan_default_options(void);

/* mo_source_display: what messages and `mecorch init` may show. */
static void test_source_display(void **state)
{
	static const struct {
		const char *in, *want;
	} cases[] = {
		{ "../modules/net", "../modules/net" },
		{ "git+https://deploy:s3cr3t@example.org/m.git//net?ref=v1", "git+https://example.org/m.git//net?ref=v1" },
		{ "git+https://tok3n@example.org/m.git", "git+https://example.org/m.git" },
		{ "git+ssh://git:pw@example.org/m.git", "git+ssh://git@example.org/m.git" },
		{ "git+ssh://git@example.org/m.git", "git+ssh://git@example.org/m.git" },
		{ "git+https://a:b@", "(unparsable git source)" },
	};
	(void)state;
	for (size_t i = 0; i < MO_ARRAY_SIZE(cases); i++) {
		char *got = mo_source_display(cases[i].in);
		assert_non_null(got);
		if (strcmp(got, cases[i].want))
			fail_msg("display of %s: got %s, want %s", cases[i].in, got, cases[i].want);
		mo_free(got);
	}
}

/* The CLI shows sources without their credentials: `mecorch init` (text
 * and --json) with a token in the source string. */
static void test_source_https_cli(void **state)
{
	const char *plan = fresh_dir("https-cli");
	char url[512];
	FILE *f;
	(void)state;

	https_url(url, sizeof(url), "deploy:" TOKEN "@", "//modules/net?ref=v1.0.0");
	{
		/* a sanitized mecorch meets libgit2's known leaks too */
		char path[PATH_MAX];
		snprintf(path, sizeof(path), "%s/lsan.supp", plan);
		assert_non_null(f = fopen(path, "w"));
		fputs(__lsan_default_suppressions(), f);
		fclose(f);
		snprintf(path, sizeof(path), "suppressions=%s/lsan.supp", plan);
		setenv("LSAN_OPTIONS", path, 1);
		setenv("ASAN_OPTIONS", __asan_default_options(), 1);
	}
	{
		char path[PATH_MAX];
		snprintf(path, sizeof(path), "%s/main.lua", plan);
		assert_non_null(f = fopen(path, "w"));
		fprintf(f, "module(\"net\", { source = \"%s\", inputs = {} })\n", url);
		fclose(f);
	}
	assert_int_equal(sh("cd '%s' && MECORCH_CA_BUNDLE=\"$LAB/tls/ca.pem\" '%s/mecorch' init --cache-dir '%s/cache' "
			    "main.lua >out.txt 2>&1 || { cat out.txt >&2; exit 1; }",
			    plan, MO_BINARY_DIR, plan),
			 0);
	assert_int_equal(sh("cd '%s' && MECORCH_CA_BUNDLE=\"$LAB/tls/ca.pem\" '%s/mecorch' init --json --upgrade "
			    "--cache-dir '%s/cache' main.lua >out.json 2>&1 || { cat out.json >&2; exit 1; }",
			    plan, MO_BINARY_DIR, plan),
			 0);
	assert_int_equal(sh("grep -q '^module net: git+https://127.0.0.1:%d/modules.git//modules/net?ref=v1.0.0' "
			    "'%s/out.txt'",
			    https_port, plan),
			 0);
	assert_int_equal(sh("grep -q '\"source\": *\"git+https://127.0.0.1:%d/' '%s/out.json'", https_port, plan), 0);
	{
		char path[PATH_MAX];
		snprintf(path, sizeof(path), "%s/out.txt", plan);
		assert_file_lacks(path, TOKEN);
		assert_file_lacks(path, "deploy");
		snprintf(path, sizeof(path), "%s/out.json", plan);
		assert_file_lacks(path, TOKEN);
		snprintf(path, sizeof(path), "%s/mecorch.lock", plan);
		assert_file_lacks(path, TOKEN);
	}
	unsetenv("LSAN_OPTIONS");
	unsetenv("ASAN_OPTIONS");
}

static void test_source_https_token(void **state)
{
	const char *plan = fresh_dir("https-token");
	char url[512], ca[PATH_MAX], lockp[PATH_MAX], creds[PATH_MAX], *dir = NULL, *pin = NULL;
	mo_source_opts o;
	mo_sources *s;
	(void)state;

	snprintf(ca, sizeof(ca), "%s/tls/ca.pem", lab);
	snprintf(lockp, sizeof(lockp), "%s/mecorch.lock", plan);

	/* token from the options (MECORCH_GIT_TOKEN) + the test CA */
	o = opts_for(plan, plan, MO_SOURCES_INIT);
	o.git_token = TOKEN;
	o.ca_bundle = ca;
	s = open_opts(&o);
	https_url(url, sizeof(url), "", "//modules/net");
	resolve_ok(s, url, "~> 1.0", &dir, &pin);
	assert_version(dir, "1.1.0");
	assert_null(strstr(pin, TOKEN));
	mo_free(dir);
	mo_free(pin);

	assert_int_equal(mo_sources_commit(s), 0);
	mo_sources_free(s);
	assert_file_lacks(lockp, TOKEN);

	/* token in the source string itself (no other credentials) */
	o.git_token = "";
	s = open_opts(&o);
	https_url(url, sizeof(url), "deploy:" TOKEN "@", "?ref=v1.0.0");
	assert_int_equal(sh("rm -rf '%s/repos'", plan), 0); /* make it fetch again */
	resolve_ok(s, url, NULL, &dir, &pin);
	assert_version(dir, "1.0.0");
	assert_null(strstr(pin, TOKEN));
	assert_null(strstr(pin, "deploy"));
	mo_free(dir);
	mo_free(pin);
	assert_int_equal(mo_sources_commit(s), 0);
	mo_sources_free(s);
	assert_int_equal(sh("grep -q '^https-user: deploy$' \"$LAB/https.log\""), 0);
	assert_file_lacks(lockp, TOKEN);
	assert_file_lacks(lockp, "deploy");

	/* LOCKED finds the entry whatever credentials the source carries */
	o.mode = MO_SOURCES_LOCKED;
	s = open_opts(&o);
	https_url(url, sizeof(url), "someone:else@", "?ref=v1.0.0");
	resolve_ok(s, url, NULL, &dir, &pin);
	mo_free(dir);
	mo_free(pin);
	mo_sources_free(s);

	/* a git-credentials style file, via the environment */
	plan = fresh_dir("https-credfile");
	snprintf(creds, sizeof(creds), "%s/credentials", plan);
	{
		FILE *f = fopen(creds, "w");
		assert_non_null(f);
		fprintf(f, "https://x:wrong@example.org\nhttps://ci%%40bot:%s@127.0.0.1:%d\n",
			TOKEN, https_port);
		fclose(f);
	}
	o = opts_for(plan, plan, MO_SOURCES_INIT);
	o.git_credentials = NULL;
	o.ca_bundle = NULL;
	setenv("MECORCH_GIT_CREDENTIALS", creds, 1);
	setenv("MECORCH_CA_BUNDLE", ca, 1);
	s = open_opts(&o);
	unsetenv("MECORCH_GIT_CREDENTIALS");
	unsetenv("MECORCH_CA_BUNDLE");
	https_url(url, sizeof(url), "", "?ref=feature");
	resolve_ok(s, url, NULL, &dir, &pin);
	assert_version(dir, "feature");
	mo_free(dir);
	mo_free(pin);
	mo_sources_free(s);
	/* the server saw the user name from the file */
	assert_int_equal(sh("grep -q '^https-user: ci@bot$' \"$LAB/https.log\""), 0);
}

/* The number of 401 answers in $LAB/https.log after its first `skip`
 * lines (the server logs each answer before sending it, so every 401 the
 * client has seen is already there). */
static int https_401s_after(int skip)
{
	char count[32];
	sh_out(count, sizeof(count), "tail -n +%d '%s/https.log' | grep -c '^https: \".*\" 401 '",
	       skip + 1, lab);
	return atoi(count);
}

static int https_log_lines(void)
{
	char lines[32];
	sh_out(lines, sizeof(lines), "wc -l < '%s/https.log'", lab);
	return atoi(lines);
}

static void test_source_https_rejected(void **state)
{
	const char *plan = fresh_dir("https-bad");
	char url[512], ca[PATH_MAX];
	const char *msg;
	mo_source_opts o;
	mo_sources *s;
	int before, n;
	(void)state;

	snprintf(ca, sizeof(ca), "%s/tls/ca.pem", lab);
	https_url(url, sizeof(url), "", "");
	o = opts_for(plan, plan, MO_SOURCES_INIT);
	o.git_token = "not-the-token";
	o.ca_bundle = ca;
	s = open_opts(&o);
	before = https_log_lines();
	msg = resolve_err(s, url, "~> 1.0");
	assert_contains(msg, "authentication failed for https://127.0.0.1:");
	assert_contains(msg, "credentials rejected");
	assert_null(strstr(msg, "not-the-token"));
	mo_sources_free(s);
	/* refused once or twice, not asked again until the server gave up */
	n = https_401s_after(before);
	if (n < 1 || n > 2)
		print_error("the https server answered 401 %d times\n", n);
	assert_true(n >= 1 && n <= 2);

	o.git_token = "";
	s = open_opts(&o);
	before = https_log_lines();
	msg = resolve_err(s, url, "~> 1.0");
	assert_contains(msg, "authentication required for https://127.0.0.1:");
	assert_contains(msg, "MECORCH_GIT_TOKEN");
	mo_sources_free(s);
	n = https_401s_after(before);
	if (n < 1 || n > 2)
		print_error("without credentials, the https server answered 401 %d times\n", n);
	assert_true(n >= 1 && n <= 2);
}

/* Runs after the CA-bundle tests: the system trust store must be back. */
static void test_source_https_system_ca(void **state)
{
	const char *plan = fresh_dir("https-sysca");
	char url[512];
	const char *msg;
	mo_source_opts o;
	mo_sources *s;
	(void)state;

	https_url(url, sizeof(url), "", "");
	o = opts_for(plan, plan, MO_SOURCES_INIT);
	o.git_token = TOKEN;
	s = open_opts(&o);
	msg = resolve_err(s, url, "~> 1.0");
	assert_contains(msg, "TLS certificate of https://127.0.0.1:");
	assert_contains(msg, "is not trusted");
	assert_contains(msg, "MECORCH_CA_BUNDLE");
	assert_null(strstr(msg, TOKEN));
	mo_sources_free(s);
}

/* LeakSanitizer: leaks inside the system libgit2 1.5.1 and libssh2 (pcre2
 * match data of config lookups in git_remote_create_anonymous, the ssh
 * transport's connection data, copied custom headers).  Frames of this
 * project are not listed, so its own leaks are still reported. */
const char *__asan_default_options(void);
const char *__asan_default_options(void)
{
	return "fast_unwind_on_malloc=0"; /* full stacks through libgit2 */
}

const char *__lsan_default_suppressions(void);
const char *__lsan_default_suppressions(void)
{
	return "leak:pcre2_match_8\n"
	       "leak:pcre2_match_data_create_8\n"
	       "leak:libssh2_knownhost_init\n"
	       "leak:libssh2_userauth_list\n"
	       "leak:git_strarray_copy\n"
	       "leak:git_remote_connect_ext\n";
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_source_semver),
		cmocka_unit_test(test_source_constraint),
		cmocka_unit_test(test_source_local),
		cmocka_unit_test(test_source_bad_urls),
		cmocka_unit_test(test_source_constraints),
		cmocka_unit_test(test_source_refs),
		cmocka_unit_test(test_source_lock),
		cmocka_unit_test(test_source_moved_tag),
		cmocka_unit_test(test_source_cache_modified),
		cmocka_unit_test(test_source_oom),
		cmocka_unit_test(test_source_concurrent_fetch),
		cmocka_unit_test(test_source_offline),
		cmocka_unit_test(test_source_ssh_known_hosts),
		cmocka_unit_test(test_source_ssh_wrong_key),
		cmocka_unit_test(test_source_ssh_unknown_host),
		cmocka_unit_test(test_source_ssh_fingerprint),
		cmocka_unit_test(test_source_display),
		cmocka_unit_test(test_source_https_token),
		cmocka_unit_test(test_source_https_cli),
		cmocka_unit_test(test_source_https_rejected),
		cmocka_unit_test(test_source_https_system_ca),
	};
	mo_sources_global_init();
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
