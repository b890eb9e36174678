/*
 * source.c - module source resolution: local paths, and git sources pinned
 * in mecorch.lock and served from the content-addressed cache.
 *
 * LOCKED (plan, apply, destroy): a git source is looked up in the lock by
 * (source without credentials, constraint in normal form); its tree comes
 * from <cache>/trees, or is extracted from the cached mirror, and is
 * re-hashed against the lock's tree id before use (once per handle).  No
 * network.  A pinned string (…?ref=<40-hex commit>) missing from the lock
 * still resolves from any lock entry or cached mirror holding that commit,
 * since the commit id fixes the tree.
 *
 * INIT: every source is fetched once per url per handle; a source the lock
 * already pins keeps its commit, and a pinned tag that now points elsewhere
 * is refused.  UPGRADE: constraints and refs are resolved afresh.  Either
 * way mo_sources_commit() writes the lock with the sources resolved here.
 *
 * Lock file (JSON, keys sorted, entries sorted by source then constraint,
 * written by temp file + rename): {"version": 1, "sources": [{"source",
 * "constraint", "url", "subdir", "ref", "commit", "tree"}, ...]}.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* nftw */
#endif
#include "source_int.h"
#include "common.h"

#include <errno.h>
#include <ftw.h>
#include <jansson.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MO_LOCK_VERSION 1

struct mo_sources {
	char *plan_dir;
	char *confine;  /* realpath of mo_source_opts.confine_dir, or NULL */
	char *lock_path;
	char *cache_dir; /* absolute */
	int mode;
	mo_git_auth auth;
	int have_lock;      /* the lock file existed at open */
	mo_lock_entry *old; /* the lock as read */
	size_t nold;
	mo_lock_entry *cur; /* resolved through this handle (INIT, UPGRADE) */
	size_t ncur, capcur;
	char **fetched; /* urls fetched through this handle */
	size_t nfetched;
	char **verified; /* tree dirs whose hash was checked */
	size_t nverified;
};

/* ------------------------------------------------------------------ */
/* Process-wide initialisation                                         */

static pthread_once_t global_once = PTHREAD_ONCE_INIT;
static int global_rc;

static void global_init_once(void)
{
	global_rc = git_libgit2_init();
}

int mo_sources_global_init(void)
{
	pthread_once(&global_once, global_init_once);
	if (global_rc < 0)
		return mo_error_set_native(MO_ERROR, global_rc, "cannot initialise libgit2");
	return 0;
}

/* ------------------------------------------------------------------ */
/* Lock entries                                                        */

static void entry_clear(mo_lock_entry *e)
{
	mo_free(e->source);
	mo_free(e->constraint);
	mo_free(e->url);
	mo_free(e->subdir);
	mo_free(e->ref);
	memset(e, 0, sizeof(*e));
}

static int entry_copy(mo_lock_entry *dst, const mo_lock_entry *src)
{
	memset(dst, 0, sizeof(*dst));
	dst->source = mo_strdup(src->source);
	dst->constraint = src->constraint ? mo_strdup(src->constraint) : NULL;
	dst->url = mo_strdup(src->url);
	dst->subdir = mo_strdup(src->subdir);
	dst->ref = mo_strdup(src->ref);
	memcpy(dst->commit, src->commit, sizeof(dst->commit));
	memcpy(dst->tree, src->tree, sizeof(dst->tree));
	if (!dst->source || (src->constraint && !dst->constraint) || !dst->url || !dst->subdir ||
	    !dst->ref) {
		entry_clear(dst);
		return mo_error_set(MO_ENOMEM, "out of memory");
	}
	return 0;
}

static int str_eq(const char *a, const char *b)
{
	return a == b || (a && b && !strcmp(a, b));
}

static const mo_lock_entry *entry_find(const mo_lock_entry *v, size_t n, const char *source,
				       const char *constraint)
{
	for (size_t i = 0; i < n; i++)
		if (!strcmp(v[i].source, source) && str_eq(v[i].constraint, constraint))
			return &v[i];
	return NULL;
}

static int entry_cmp(const void *pa, const void *pb)
{
	const mo_lock_entry *a = pa, *b = pb;
	int c = strcmp(a->source, b->source);
	if (c)
		return c;
	if (!a->constraint || !b->constraint)
		return a->constraint ? 1 : b->constraint ? -1 : 0;
	return strcmp(a->constraint, b->constraint);
}

/* Append e to s->cur, taking its strings; a duplicate is dropped. */
static int cur_put(mo_sources *s, mo_lock_entry *e)
{
	if (entry_find(s->cur, s->ncur, e->source, e->constraint)) {
		entry_clear(e);
		return 0;
	}
	if (s->ncur == s->capcur) {
		size_t ncap = s->capcur ? s->capcur * 2 : 8;
		mo_lock_entry *nv = mo_realloc(s->cur, ncap * sizeof(*nv));
		if (!nv)
			return mo_error_set(MO_ENOMEM, "out of memory");
		s->cur = nv;
		s->capcur = ncap;
	}
	s->cur[s->ncur++] = *e;
	memset(e, 0, sizeof(*e));
	return 0;
}

static int strv_has(char **v, size_t n, const char *x)
{
	for (size_t i = 0; i < n; i++)
		if (!strcmp(v[i], x))
			return 1;
	return 0;
}

static int strv_add(char ***v, size_t *n, const char *x)
{
	char **nv = mo_realloc(*v, (*n + 1) * sizeof(*nv));
	if (!nv)
		return mo_error_set(MO_ENOMEM, "out of memory");
	*v = nv;
	if (!(nv[*n] = mo_strdup(x)))
		return mo_error_set(MO_ENOMEM, "out of memory");
	(*n)++;
	return 0;
}

static void strv_free(char **v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		mo_free(v[i]);
	mo_free(v);
}

/* ------------------------------------------------------------------ */
/* The lock file                                                       */

static int json_str(json_t *o, const char *key, char **out, int optional)
{
	json_t *v = json_object_get(o, key);
	*out = NULL;
	if (!v || json_is_null(v))
		return optional ? 0 : MO_EINVAL;
	if (!json_is_string(v))
		return MO_EINVAL;
	return (*out = mo_strdup(json_string_value(v))) ? 0 : MO_ENOMEM;
}

static int lock_load(mo_sources *s)
{
	char *text = NULL;
	json_t *root = NULL, *arr, *o;
	json_error_t jerr;
	size_t i;
	int rc;

	if ((rc = mo_file_read(&text, NULL, s->lock_path)) < 0) {
		if (rc == MO_ENOTFOUND) {
			mo_error_clear();
			return 0;
		}
		return rc;
	}
	s->have_lock = 1;
	if (!(root = json_loads(text, 0, &jerr))) {
		rc = mo_error_set(MO_ESOURCE, "%s: invalid JSON at line %d: %s", s->lock_path,
				  jerr.line, jerr.text);
		goto done;
	}
	if (json_integer_value(json_object_get(root, "version")) != MO_LOCK_VERSION ||
	    !json_is_array(arr = json_object_get(root, "sources"))) {
		rc = mo_error_set(MO_ESOURCE, "%s: not a version %d mecorch.lock", s->lock_path,
				  MO_LOCK_VERSION);
		goto done;
	}
	if (json_array_size(arr) && !(s->old = mo_calloc(json_array_size(arr), sizeof(*s->old)))) {
		rc = mo_error_set(MO_ENOMEM, "out of memory");
		goto done;
	}
	json_array_foreach(arr, i, o) {
		mo_lock_entry *e = &s->old[s->nold++];
		char *commit = NULL, *tree = NULL;
		rc = 0;
		if (json_str(o, "source", &e->source, 0) < 0 ||
		    json_str(o, "constraint", &e->constraint, 1) < 0 ||
		    json_str(o, "url", &e->url, 0) < 0 ||
		    json_str(o, "subdir", &e->subdir, 0) < 0 ||
		    json_str(o, "ref", &e->ref, 0) < 0 || json_str(o, "commit", &commit, 0) < 0 ||
		    json_str(o, "tree", &tree, 0) < 0 || !mo_git_is_full_sha(commit) ||
		    !mo_git_is_full_sha(tree))
			rc = mo_error_set(MO_ESOURCE, "%s: entry %zu is malformed", s->lock_path,
					  i + 1);
		if (rc == 0) {
			memcpy(e->commit, commit, sizeof(e->commit));
			memcpy(e->tree, tree, sizeof(e->tree));
		}
		mo_free(commit);
		mo_free(tree);
		if (rc < 0)
			goto done;
	}
done:
	json_decref(root);
	mo_free(text);
	return rc;
}

static json_t *entry_json(const mo_lock_entry *e)
{
	return json_pack("{s:s, s:s?, s:s, s:s, s:s, s:s, s:s}", "source", e->source, "constraint",
			 e->constraint, "url", e->url, "subdir", e->subdir, "ref", e->ref, "commit",
			 e->commit, "tree", e->tree);
}

int mo_sources_commit(mo_sources *s)
{
	json_t *root = NULL, *arr = NULL;
	char *text = NULL, *old = NULL, *out = NULL;
	size_t oldlen = 0;
	int rc = 0;

	if (s->mode == MO_SOURCES_LOCKED || (s->ncur == 0 && !s->have_lock))
		return 0;
	qsort(s->cur, s->ncur, sizeof(*s->cur), entry_cmp);
	if (!(arr = json_array()) ||
	    !(root = json_pack("{s:i, s:o}", "version", MO_LOCK_VERSION, "sources", arr))) {
		json_decref(arr);
		rc = mo_error_set(MO_ENOMEM, "out of memory");
		goto done;
	}
	for (size_t i = 0; i < s->ncur; i++) {
		if (json_array_append_new(arr, entry_json(&s->cur[i])) < 0) {
			rc = mo_error_set(MO_ENOMEM, "out of memory");
			goto done;
		}
	}
	if (!(text = json_dumps(root, JSON_INDENT(2) | JSON_SORT_KEYS)) ||
	    !(out = mo_sprintf("%s\n", text))) {
		rc = mo_error_set(MO_ENOMEM, "out of memory");
		goto done;
	}
	if (mo_file_read(&old, &oldlen, s->lock_path) == 0 && oldlen == strlen(out) &&
	    !memcmp(old, out, oldlen))
		goto done; /* unchanged: leave the file (and its mtime) alone */
	mo_error_clear();
	if ((rc = mo_file_write_atomic(s->lock_path, out, strlen(out))) < 0) {
		mo_error_prefix("cannot write the lock file");
	} else {
		s->have_lock = 1;
		/* the lock holds no secret and is meant to be committed */
		if (chmod(s->lock_path, 0644) < 0) {
		}
	}
done:
	free(text); /* jansson's allocator */
	mo_free(out);
	mo_free(old);
	json_decref(root);
	return rc;
}

/* ------------------------------------------------------------------ */
/* Handle                                                              */

static char *default_cache_dir(void)
{
	const char *x = getenv("XDG_CACHE_HOME"), *h = getenv("HOME");
	if (x && x[0] == '/')
		return mo_sprintf("%s/mecorch", x);
	if (h && *h)
		return mo_sprintf("%s/.cache/mecorch", h);
	return mo_strdup("/tmp/mecorch-cache");
}

static char *absolute(char *path)
{
	char cwd[PATH_MAX], *abs;
	if (!path || path[0] == '/')
		return path;
	if (!getcwd(cwd, sizeof(cwd))) {
		mo_free(path);
		return NULL;
	}
	abs = mo_sprintf("%s/%s", cwd, path);
	mo_free(path);
	return abs;
}

char *mo_source_display(const char *source)
{
	mo_git_source *src = NULL;
	char *shown;

	if (!source)
		return NULL;
	if (!mo_git_is_source(source))
		return mo_strdup(source);
	if (mo_git_source_parse(&src, source) < 0)
		return mo_strdup("(unparsable git source)");
	shown = mo_strdup(src->key);
	mo_git_source_free(src);
	return shown;
}

int mo_sources_open(mo_sources **out, const mo_source_opts *opts)
{
	mo_sources *s = NULL;
	int rc;

	if (!(s = mo_calloc(1, sizeof(*s))))
		return mo_error_set(MO_ENOMEM, "out of memory");
	s->mode = opts->mode;
	if (opts->confine_dir) {
		char real[PATH_MAX];
		if (!realpath(opts->confine_dir, real)) {
			mo_free(s);
			return mo_error_set(MO_ESOURCE, "%s: %s", opts->confine_dir, strerror(errno));
		}
		if (!(s->confine = mo_strdup(real))) {
			mo_free(s);
			return mo_error_set(MO_ENOMEM, "out of memory");
		}
	}
	s->plan_dir = mo_strdup(opts->plan_dir ? opts->plan_dir : ".");
	s->lock_path = opts->lock_path ?
			       mo_strdup(opts->lock_path) :
			       mo_sprintf("%s/mecorch.lock", s->plan_dir ? s->plan_dir : ".");
	s->cache_dir = absolute(opts->cache_dir ? mo_strdup(opts->cache_dir) : default_cache_dir());
	if (!s->plan_dir || !s->lock_path || !s->cache_dir) {
		rc = mo_error_set(MO_ENOMEM, "out of memory");
		goto fail;
	}
	if (s->mode < MO_SOURCES_LOCKED || s->mode > MO_SOURCES_UPGRADE) {
		rc = mo_error_set(MO_EINVAL, "unknown module source mode %d", s->mode);
		goto fail;
	}
	if ((rc = mo_git_auth_init(&s->auth, opts)) < 0 || (rc = lock_load(s)) < 0)
		goto fail;
	*out = s;
	return 0;
fail:
	mo_sources_free(s);
	return rc;
}

void mo_sources_free(mo_sources *s)
{
	if (!s)
		return;
	for (size_t i = 0; i < s->nold; i++)
		entry_clear(&s->old[i]);
	for (size_t i = 0; i < s->ncur; i++)
		entry_clear(&s->cur[i]);
	mo_free(s->old);
	mo_free(s->cur);
	strv_free(s->fetched, s->nfetched);
	strv_free(s->verified, s->nverified);
	mo_free(s->confine);
	mo_git_auth_free(&s->auth);
	mo_free(s->plan_dir);
	mo_free(s->lock_path);
	mo_free(s->cache_dir);
	mo_free(s);
}

/* ------------------------------------------------------------------ */
/* Trees in the cache                                                  */

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	remove(path);
	return 0;
}

static void rm_rf(const char *path)
{
	nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static int verify_tree(mo_sources *s, const char *path, const char *want)
{
	char got[GIT_OID_HEXSZ + 1];
	int rc;
	if (strv_has(s->verified, s->nverified, path))
		return 0;
	if ((rc = mo_git_hash_dir(path, got)) < 0)
		return rc;
	if (strcmp(got, want))
		return mo_error_set(
			MO_ESOURCE,
			"cached module tree %s was modified (its content "
			"hashes to %s, mecorch.lock pins tree %s): delete that directory "
			"and run `mecorch init`",
			path, got, want);
	return strv_add(&s->verified, &s->nverified, path);
}

/* The tree of e (commit + subdir) as a verified directory in the cache:
 * extracted from the mirror when missing (no network).  `m` is the mirror
 * if the caller holds it open, else NULL. */
static int ensure_tree(mo_sources *s, const mo_git_source *src, const mo_lock_entry *e,
		       mo_git_mirror *m, char **out)
{
	char subhash[65], rnd[17], tree[GIT_OID_HEXSZ + 1];
	char *path = NULL, *trees = NULL, *tmpdir = NULL, *tmp = NULL;
	mo_git_mirror *own = NULL;
	struct stat st;
	int rc = 0;

	mo_sha256_hex(src->subdir, subhash);
	subhash[16] = '\0';
	path = mo_sprintf("%s/trees/%s-%s", s->cache_dir, e->commit, subhash);
	trees = mo_sprintf("%s/trees", s->cache_dir);
	if (!path || !trees) {
		rc = mo_error_set(MO_ENOMEM, "out of memory");
		goto done;
	}
	if (lstat(path, &st) == 0) {
		rc = verify_tree(s, path, e->tree);
		goto done;
	}

	if (!m) {
		rc = mo_git_mirror_open(&own, s->cache_dir, src, 0, 0);
		if (rc == MO_ENOTFOUND || (rc == 0 && !mo_git_mirror_has_commit(own, e->commit))) {
			rc = mo_error_set(MO_ESOURCE,
					  "commit %s of %s is not in the module cache "
					  "(%s): run `mecorch init`",
					  e->commit, e->url, s->cache_dir);
			goto done;
		}
		if (rc < 0)
			goto done;
		m = own;
	}
	if ((rc = mo_git_mirror_subtree(m, src, e->commit, tree)) < 0)
		goto done;
	if (strcmp(tree, e->tree)) {
		rc = mo_error_set(
			MO_ESOURCE,
			"mecorch.lock pins tree %s but commit %s has tree %s "
			"for '%s': the lock file was edited; run `mecorch init --upgrade`",
			e->tree, e->commit, tree, src->subdir);
		goto done;
	}
	if (mo_random_hex(rnd, 8) < 0) {
		rc = MO_EIO;
		goto done;
	}
	tmpdir = mo_sprintf("%s/tmp", s->cache_dir);
	tmp = mo_sprintf("%s/tmp/tree-%s", s->cache_dir, rnd);
	if (!tmp || !tmpdir) {
		rc = mo_error_set(MO_ENOMEM, "out of memory");
		goto done;
	}
	if ((rc = mo_git_mkdir_p(trees)) < 0 || (rc = mo_git_mkdir_p(tmpdir)) < 0)
		goto done;
	if ((rc = mo_git_mirror_extract(m, src, e->commit, tmp)) < 0 ||
	    (rc = mo_git_hash_dir(tmp, tree)) < 0) {
		rm_rf(tmp);
		goto done;
	}
	if (strcmp(tree, e->tree)) {
		/* The files on disk do not hash like git's tree: a filesystem
		 * that loses modes or names.  Refuse rather than lock in a
		 * tree that can never verify. */
		rm_rf(tmp);
		rc = mo_error_set(MO_ESOURCE,
				  "extracted tree %s hashes to %s, not %s: the cache "
				  "filesystem does not keep file names or modes",
				  tmp, tree, e->tree);
		goto done;
	}
	if (rename(tmp, path) < 0) {
		int err = errno;
		rm_rf(tmp);
		if (err != EEXIST && err != ENOTEMPTY) {
			rc = mo_error_set_native(MO_EIO, err, "%s: %s", path, strerror(err));
			goto done;
		}
		/* Another process put the same tree in place first. */
		rc = verify_tree(s, path, e->tree);
		goto done;
	}
	rc = strv_add(&s->verified, &s->nverified, path);
done:
	mo_git_mirror_close(own);
	if (rc == 0) {
		*out = path;
		path = NULL;
	}
	mo_free(path);
	mo_free(trees);
	mo_free(tmpdir);
	mo_free(tmp);
	return rc;
}

/* ------------------------------------------------------------------ */
/* Resolution                                                          */

static int fill_entry(mo_lock_entry *e, const mo_git_source *src, const char *constraint)
{
	mo_free(e->source);
	mo_free(e->constraint);
	mo_free(e->url);
	mo_free(e->subdir);
	e->source = mo_strdup(src->key);
	e->constraint = constraint ? mo_strdup(constraint) : NULL;
	e->url = mo_strdup(src->url);
	e->subdir = mo_strdup(src->subdir);
	if (!e->source || (constraint && !e->constraint) || !e->url || !e->subdir || !e->ref)
		return mo_error_set(MO_ENOMEM, "out of memory");
	return 0;
}

/* LOCKED: the entry for src from the lock, or for a pinned commit from
 * whatever already knows that commit. */
static int locked_entry(mo_sources *s, const mo_git_source *src, const char *constraint,
			mo_lock_entry *out, int *named)
{
	const mo_lock_entry *hit = entry_find(s->old, s->nold, src->key, constraint);
	mo_git_mirror *m = NULL;
	int rc;

	if (hit)
		return entry_copy(out, hit);
	if (mo_git_is_full_sha(src->ref) && !constraint) {
		for (size_t i = 0; i < s->nold; i++) {
			const mo_lock_entry *e = &s->old[i];
			if (!strcmp(e->url, src->url) && !strcmp(e->subdir, src->subdir) &&
			    !strcmp(e->commit, src->ref)) {
				if ((rc = entry_copy(out, e)) < 0)
					return rc;
				mo_free(out->ref);
				out->ref = mo_strdup(src->ref);
				return fill_entry(out, src, NULL);
			}
		}
		if (mo_git_mirror_open(&m, s->cache_dir, src, 0, 0) == 0 &&
		    mo_git_mirror_has_commit(m, src->ref)) {
			memcpy(out->commit, src->ref, sizeof(out->commit));
			rc = mo_git_mirror_subtree(m, src, src->ref, out->tree);
			mo_git_mirror_close(m);
			if (rc < 0)
				return rc;
			out->ref = mo_strdup(src->ref);
			return fill_entry(out, src, NULL);
		}
		mo_git_mirror_close(m);
	}
	*named = 1;
	for (size_t i = 0; i < s->nold; i++) {
		if (!strcmp(s->old[i].source, src->key))
			return mo_error_set(MO_ESOURCE,
					    "module source '%s' is not in mecorch.lock: "
					    "run `mecorch init` (the lock has it for version '%s', "
					    "not '%s')",
					    src->key,
					    s->old[i].constraint ? s->old[i].constraint : "(none)",
					    constraint ? constraint : "(none)");
	}
	return mo_error_set(MO_ESOURCE,
			    "module source '%s' is not in mecorch.lock: run "
			    "`mecorch init`",
			    src->key);
}

/* INIT / UPGRADE: fetch (once per url) and resolve, keeping what the lock
 * pins in INIT mode.  *mp receives the mirror, still locked. */
static int network_entry(mo_sources *s, const mo_git_source *src, const mo_constraint *c,
			 mo_lock_entry *out, mo_git_mirror **mp)
{
	const char *constraint = c ? mo_constraint_string(c) : NULL;
	const mo_lock_entry *old = NULL, *done_here;
	mo_git_mirror *m = NULL;
	char hex[GIT_OID_HEXSZ + 1];
	int rc, need_fetch;

	if ((done_here = entry_find(s->cur, s->ncur, src->key, constraint)))
		return entry_copy(out, done_here);
	if (s->mode == MO_SOURCES_INIT)
		old = entry_find(s->old, s->nold, src->key, constraint);
	if ((rc = mo_git_mirror_open(&m, s->cache_dir, src, 1, 1)) < 0)
		return rc;

	need_fetch = !strv_has(s->fetched, s->nfetched, src->url);
	if (need_fetch && mo_git_is_full_sha(old ? old->ref : src->ref) &&
	    mo_git_mirror_has_commit(m, old ? old->commit : src->ref))
		need_fetch = 0; /* a commit cannot move */
	if (need_fetch) {
		if ((rc = mo_git_mirror_fetch(m, src, &s->auth)) < 0 ||
		    (rc = strv_add(&s->fetched, &s->nfetched, src->url)) < 0)
			goto done;
	}

	if (!old) {
		if ((rc = mo_git_mirror_resolve(m, src, c, out)) < 0)
			goto done;
		rc = fill_entry(out, src, constraint);
		goto done;
	}

	if (!strncmp(old->ref, "refs/tags/", 10)) {
		rc = mo_git_mirror_ref_commit(m, old->ref, hex);
		if (rc == MO_ENOTFOUND) {
			rc = mo_error_set(MO_ESOURCE,
					  "tag %s pinned by mecorch.lock (commit %s) no "
					  "longer exists in %s: run `mecorch init --upgrade` to "
					  "re-resolve",
					  old->ref + 10, old->commit, src->url);
			goto done;
		}
		if (strcmp(hex, old->commit)) {
			rc = mo_error_set(MO_ESOURCE,
					  "tag %s of %s moved: mecorch.lock pins commit %s "
					  "but the tag now points to %s; refusing a force-pushed "
					  "tag (if the change is intended, run `mecorch init "
					  "--upgrade`)",
					  old->ref + 10, src->url, old->commit, hex);
			goto done;
		}
	}
	if (!mo_git_mirror_has_commit(m, old->commit)) {
		rc = mo_error_set(MO_ESOURCE,
				  "commit %s pinned by mecorch.lock is no longer "
				  "available from %s: run `mecorch init --upgrade`",
				  old->commit, src->url);
		goto done;
	}
	rc = entry_copy(out, old);
done:
	if (rc < 0) {
		mo_git_mirror_close(m);
		m = NULL;
	}
	*mp = m;
	return rc;
}

/* Keep the current error message under another code. */
static int recode(int code)
{
	const mo_error *e = mo_error_last();
	char msg[sizeof(e->message)];
	int native = e->native;
	memcpy(msg, e->message, sizeof(msg));
	return mo_error_set_native(code, native, "%s", msg);
}

static int resolve_git(mo_sources *s, const char *source, const char *version, char **dir,
		       char **pinned)
{
	mo_git_source *src = NULL;
	mo_constraint *c = NULL;
	mo_git_mirror *m = NULL;
	mo_lock_entry e;
	char *tdir = NULL, *pin = NULL, *mod = NULL;
	struct stat st;
	int rc, named = 0;

	memset(&e, 0, sizeof(e));
	if ((rc = mo_git_source_parse(&src, source)) < 0)
		return rc;
	if (s->confine && src->scheme == MO_GIT_FILE) {
		rc = mo_error_set(MO_ESOURCE, "module source '%s': a local repository is not allowed here "
				  "(only sources inside the package, or remote git URLs)",
				  src->key);
		goto done;
	}
	if (version && *version) {
		if (src->ref) {
			rc = mo_error_set(MO_ESOURCE, "give either ?ref= or a version constraint, "
						      "not both");
			goto done;
		}
		if ((rc = mo_constraint_parse(&c, version)) < 0) {
			if (rc != MO_ENOMEM)
				rc = recode(MO_ESOURCE);
			goto done;
		}
	}

	if (s->mode == MO_SOURCES_LOCKED)
		rc = locked_entry(s, src, c ? mo_constraint_string(c) : NULL, &e, &named);
	else
		rc = network_entry(s, src, c, &e, &m);
	if (rc < 0)
		goto done;
	if ((rc = ensure_tree(s, src, &e, m, &tdir)) < 0)
		goto done;
	mo_git_mirror_close(m);
	m = NULL;
	if (!(mod = mo_sprintf("%s/module.lua", tdir))) {
		rc = mo_error_set(MO_ENOMEM, "out of memory");
		goto done;
	}
	if (stat(mod, &st) < 0) {
		rc = mo_error_set(MO_ESOURCE, "no module.lua in '%s' at commit %s",
				  src->subdir[0] ? src->subdir : "/", e.commit);
		goto done;
	}
	if (!(pin = mo_git_pinned(src, e.commit))) {
		rc = mo_error_set(MO_ENOMEM, "out of memory");
		goto done;
	}
	if (s->mode != MO_SOURCES_LOCKED && (rc = cur_put(s, &e)) < 0)
		goto done;
	*dir = tdir;
	*pinned = pin;
	tdir = pin = NULL;
done:
	if (rc < 0 && !named && src)
		mo_error_prefix("module source '%s'", src->key);
	mo_git_mirror_close(m);
	entry_clear(&e);
	mo_constraint_free(c);
	mo_git_source_free(src);
	mo_free(tdir);
	mo_free(pin);
	mo_free(mod);
	return rc;
}

int mo_sources_resolve(mo_sources *s, const char *source, const char *version, char **dir,
		       char **pinned)
{
	char *joined, real[PATH_MAX], *mod;
	struct stat st;

	if (!source || !*source)
		return mo_error_set(MO_ESOURCE, "empty module source");
	if (mo_git_is_source(source))
		return resolve_git(s, source, version, dir, pinned);

	joined = source[0] == '/' ? mo_strdup(source) : mo_sprintf("%s/%s", s->plan_dir, source);
	if (!joined)
		return mo_error_set(MO_ENOMEM, "out of memory");
	if (!realpath(joined, real)) {
		int e = errno;
		mo_free(joined);
		if (s->confine) /* say nothing of what exists outside */
			return mo_error_set(MO_ESOURCE, "source '%s': no such module in the package", source);
		return mo_error_set(MO_ESOURCE, "source '%s': %s", source, strerror(e));
	}
	mo_free(joined);
	if (s->confine) {
		size_t n = strlen(s->confine);
		if (strncmp(real, s->confine, n) || (real[n] != '/' && real[n] != '\0'))
			return mo_error_set(MO_ESOURCE, "source '%s': outside the package (only modules "
					    "inside it, or remote git URLs, are allowed here)",
					    source);
	}
	mod = mo_sprintf("%s/module.lua", real);
	if (!mod)
		return mo_error_set(MO_ENOMEM, "out of memory");
	if (stat(mod, &st) < 0) {
		mo_free(mod);
		return mo_error_set(MO_ESOURCE, "source '%s': no module.lua in %s", source, real);
	}
	mo_free(mod);
	*dir = mo_strdup(real);
	*pinned = mo_strdup(real);
	if (!*dir || !*pinned) {
		mo_free(*dir);
		mo_free(*pinned);
		*dir = *pinned = NULL;
		return mo_error_set(MO_ENOMEM, "out of memory");
	}
	return 0;
}
