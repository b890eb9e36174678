/*
 * fetch.c - bringing package and plan sources into the data directory:
 * git repositories (libgit2: git+file://, file://, git://, git+https://,
 * git+ssh://, with //subdir and ?ref=), HTTP(S) downloads (libcurl), zip
 * archives (libzip) in both directions, and the digests that check them
 * (OpenSSL SHA-256).
 *
 * Everything here is blocking and runs on worker threads.  Zip extraction
 * refuses absolute names, "..", backslashes and archives that expand past a
 * limit, so an uploaded package cannot write outside its directory.
 */
#include "api_int.h"
#include "source.h"

#include <curl/curl.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <git2.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zip.h>

/* ---- digests ---------------------------------------------------------------- */

static void hex32(const unsigned char *md, char out[65])
{
	static const char hx[] = "0123456789abcdef";
	for (int i = 0; i < 32; i++) {
		out[2 * i] = hx[md[i] >> 4];
		out[2 * i + 1] = hx[md[i] & 15];
	}
	out[64] = '\0';
}

int mo_api_file_sha256(const char *path, char out[65])
{
	unsigned char buf[65536], md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	int fd = open(path, O_RDONLY | O_CLOEXEC), rc = 0;
	ssize_t n;
	if (fd < 0 || !ctx) {
		rc = mo_error_set(MO_EIO, "%s: %s", path, strerror(errno));
		goto done;
	}
	EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
	while ((n = read(fd, buf, sizeof(buf))) > 0)
		EVP_DigestUpdate(ctx, buf, (size_t)n);
	if (n < 0) {
		rc = mo_error_set(MO_EIO, "%s: %s", path, strerror(errno));
		goto done;
	}
	EVP_DigestFinal_ex(ctx, md, &mdlen);
	hex32(md, out);
done:
	if (fd >= 0)
		close(fd);
	EVP_MD_CTX_free(ctx);
	return rc;
}

typedef struct {
	char **v;
	size_t n, cap;
} strlist;

static void strlist_free(strlist *l)
{
	for (size_t i = 0; i < l->n; i++)
		mo_free(l->v[i]);
	mo_free(l->v);
	memset(l, 0, sizeof(*l));
}

static int strlist_add(strlist *l, char *s)
{
	if (!s)
		return mo_error_set(MO_ENOMEM, "out of memory");
	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 32;
		char **nv = mo_realloc(l->v, cap * sizeof(*nv));
		if (!nv) {
			mo_free(s);
			return mo_error_set(MO_ENOMEM, "out of memory");
		}
		l->v = nv;
		l->cap = cap;
	}
	l->v[l->n++] = s;
	return 0;
}

static int cmp_str(const void *x, const void *y)
{
	return strcmp(*(char *const *)x, *(char *const *)y);
}

/* Every regular file under root/rel, as paths relative to root; skips .git. */
static int walk(const char *root, const char *rel, strlist *files, strlist *dirs, int depth)
{
	char *path = rel[0] ? mo_sprintf("%s/%s", root, rel) : mo_strdup(root);
	DIR *d;
	struct dirent *e;
	int rc = 0;
	if (!path)
		return mo_error_set(MO_ENOMEM, "out of memory");
	if (depth > 32) {
		mo_free(path);
		return mo_error_set(MO_EINVAL, "%s: directories nested too deep", root);
	}
	if (!(d = opendir(path))) {
		rc = mo_error_set(MO_EIO, "%s: %s", path, strerror(errno));
		mo_free(path);
		return rc;
	}
	while (rc == 0 && (e = readdir(d))) {
		char *r, *full;
		struct stat sb;
		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..") || !strcmp(e->d_name, ".git"))
			continue;
		r = rel[0] ? mo_sprintf("%s/%s", rel, e->d_name) : mo_strdup(e->d_name);
		full = mo_sprintf("%s/%s", path, e->d_name);
		if (!r || !full) {
			mo_free(r);
			mo_free(full);
			rc = mo_error_set(MO_ENOMEM, "out of memory");
			break;
		}
		if (lstat(full, &sb) != 0) {
			rc = mo_error_set(MO_EIO, "%s: %s", full, strerror(errno));
			mo_free(r);
		} else if (S_ISDIR(sb.st_mode)) {
			if (dirs && (rc = strlist_add(dirs, mo_strdup(r))) < 0) {
				mo_free(r);
			} else {
				rc = walk(root, r, files, dirs, depth + 1);
				mo_free(r);
			}
		} else if (S_ISREG(sb.st_mode)) {
			rc = strlist_add(files, r);
		} else {
			mo_free(r); /* symlinks and others are not part of a package */
		}
		mo_free(full);
	}
	closedir(d);
	mo_free(path);
	return rc;
}

int mo_api_tree_digest(const char *dir, char out[65])
{
	strlist files = { 0 };
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	int rc;
	if (!ctx)
		return mo_error_set(MO_ENOMEM, "out of memory");
	if ((rc = walk(dir, "", &files, NULL, 0)) < 0)
		goto done;
	qsort(files.v, files.n, sizeof(*files.v), cmp_str);
	EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
	for (size_t i = 0; i < files.n; i++) {
		char h[65], *full = mo_sprintf("%s/%s", dir, files.v[i]);
		if (!full) {
			rc = mo_error_set(MO_ENOMEM, "out of memory");
			goto done;
		}
		rc = mo_api_file_sha256(full, h);
		mo_free(full);
		if (rc < 0)
			goto done;
		EVP_DigestUpdate(ctx, h, 64);
		EVP_DigestUpdate(ctx, "  ", 2);
		EVP_DigestUpdate(ctx, files.v[i], strlen(files.v[i]));
		EVP_DigestUpdate(ctx, "\n", 1);
	}
	EVP_DigestFinal_ex(ctx, md, &mdlen);
	hex32(md, out);
done:
	EVP_MD_CTX_free(ctx);
	strlist_free(&files);
	return rc;
}

/* ---- git ---------------------------------------------------------------------- */

static int git_err(const char *what, const char *src)
{
	const git_error *e = git_error_last();
	return mo_error_set(MO_ESOURCE, "%s %s: %s", what, src, e && e->message ? e->message : "failed");
}

/* Split "git+URL//sub?ref=R" (the git+ prefix optional) into url, sub, ref. */
static int split_source(const char *source, char **url, char **sub, char **ref)
{
	const char *s = source, *q, *scheme_end, *dbl;
	char *base;
	*url = *sub = *ref = NULL;
	if (!strncmp(s, "git+", 4))
		s += 4;
	if (!(scheme_end = strstr(s, "://")))
		return mo_error_set(MO_EINVAL, "'%s' is not a URL", source);
	q = strchr(s, '?');
	base = q ? mo_strndup(s, (size_t)(q - s)) : mo_strdup(s);
	if (!base)
		return mo_error_set(MO_ENOMEM, "out of memory");
	if (q) {
		if (strncmp(q, "?ref=", 5) || !q[5] || strchr(q + 5, '&')) {
			mo_free(base);
			return mo_error_set(MO_EINVAL, "'%s': the only query accepted is ?ref=<branch, tag or commit>",
					    source);
		}
		*ref = mo_strdup(q + 5);
	}
	scheme_end = base + (strstr(base, "://") - base) + 3;
	dbl = strstr(scheme_end + 1, "//");
	if (dbl) {
		*sub = mo_strdup(dbl + 2);
		base[dbl - base] = '\0';
	} else {
		*sub = mo_strdup("");
	}
	*url = base;
	if (!*sub || (q && !*ref))
		return mo_error_set(MO_ENOMEM, "out of memory");
	if (strstr(*sub, "..") || (*sub)[0] == '/')
		return mo_error_set(MO_EINVAL, "'%s': the subdirectory must stay inside the repository", source);
	while (strlen(*sub) && (*sub)[strlen(*sub) - 1] == '/')
		(*sub)[strlen(*sub) - 1] = '\0';
	return 0;
}

static int checkout_ref(git_repository *repo, const char *ref, const char *src)
{
	static const char *const forms[] = { "refs/remotes/origin/%s", "refs/tags/%s", "%s" };
	git_object *obj = NULL, *commit = NULL;
	git_checkout_options co;
	int rc = 0;
	git_checkout_options_init(&co, GIT_CHECKOUT_OPTIONS_VERSION);
	for (size_t i = 0; i < MO_ARRAY_SIZE(forms) && !obj; i++) {
		char spec[512];
		snprintf(spec, sizeof(spec), forms[i], ref);
		if (git_revparse_single(&obj, repo, spec) != 0)
			obj = NULL;
	}
	if (!obj)
		return mo_error_set(MO_ESOURCE, "%s: no branch, tag or commit named '%s'", src, ref);
	if (git_object_peel(&commit, obj, GIT_OBJECT_COMMIT) != 0) {
		rc = git_err("cannot check out", src);
		goto done;
	}
	co.checkout_strategy = GIT_CHECKOUT_FORCE;
	if (git_checkout_tree(repo, commit, &co) != 0 ||
	    git_repository_set_head_detached(repo, git_object_id(commit)) != 0)
		rc = git_err("cannot check out", src);
done:
	git_object_free(commit);
	git_object_free(obj);
	return rc;
}

int mo_api_url_has_credentials(const char *url)
{
	const char *p = strstr(url, "://"), *end, *at;
	int http;

	if (!p)
		return 0;
	http = strstr(url, "http") && strstr(url, "http") < p;
	p += 3;
	end = p + strcspn(p, "/?#");
	at = memchr(p, '@', (size_t)(end - p));
	if (!at)
		return 0;
	return http || memchr(p, ':', (size_t)(at - p)) != NULL;
}

/* Remove every symbolic link (and device, fifo, socket) below dir, .git
 * aside: a package is regular files and directories, as a zip upload is
 * (mo_api_unzip), so nothing in it can name a file outside it. */
static int drop_links(const char *dir, int depth)
{
	DIR *d;
	struct dirent *e;
	int rc = 0;

	if (depth > 64)
		return mo_error_set(MO_ESOURCE, "%s: directories nested too deep", dir);
	if (!(d = opendir(dir)))
		return mo_error_set(MO_EIO, "%s: %s", dir, strerror(errno));
	while (rc == 0 && (e = readdir(d))) {
		struct stat sb;
		char *p;
		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..") || (depth == 0 && !strcmp(e->d_name, ".git")))
			continue;
		if (!(p = mo_sprintf("%s/%s", dir, e->d_name))) {
			rc = mo_error_set(MO_ENOMEM, "out of memory");
			break;
		}
		if (lstat(p, &sb) != 0)
			rc = mo_error_set(MO_EIO, "%s: %s", p, strerror(errno));
		else if (S_ISDIR(sb.st_mode))
			rc = drop_links(p, depth + 1);
		else if (!S_ISREG(sb.st_mode) && unlink(p) != 0)
			rc = mo_error_set(MO_EIO, "unlink %s: %s", p, strerror(errno));
		mo_free(p);
	}
	closedir(d);
	return rc;
}

int mo_api_git_fetch(const char *source, const char *dest, char *commit)
{
	char *url = NULL, *sub = NULL, *ref = NULL, *tmp = NULL, *from = NULL;
	git_repository *repo = NULL;
	git_clone_options opts;
	git_oid head;
	struct stat sb;
	int rc;

	if ((rc = mo_sources_global_init()) < 0)
		return rc;
	git_clone_options_init(&opts, GIT_CLONE_OPTIONS_VERSION);
	if ((rc = split_source(source, &url, &sub, &ref)) < 0)
		goto done;
	if (!(tmp = mo_sprintf("%s.clone", dest))) {
		rc = mo_error_set(MO_ENOMEM, "out of memory");
		goto done;
	}
	mo_api_rmtree(tmp);
	mo_api_rmtree(dest);
	opts.checkout_opts.checkout_strategy = GIT_CHECKOUT_FORCE;
	if (git_clone(&repo, url, tmp, &opts) != 0) {
		rc = git_err("cannot clone", url);
		goto done;
	}
	if (ref && (rc = checkout_ref(repo, ref, url)) < 0)
		goto done;
	if (git_reference_name_to_id(&head, repo, "HEAD") != 0) {
		rc = git_err("no HEAD in", url);
		goto done;
	}
	if (commit)
		git_oid_tostr(commit, GIT_OID_HEXSZ + 1, &head);
	git_repository_free(repo);
	repo = NULL;
	from = sub[0] ? mo_sprintf("%s/%s", tmp, sub) : mo_strdup(tmp);
	if (!from) {
		rc = mo_error_set(MO_ENOMEM, "out of memory");
		goto done;
	}
	if ((rc = drop_links(tmp, 0)) < 0)
		goto done;
	if (lstat(from, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
		rc = mo_error_set(MO_ESOURCE, "%s: no directory '%s' in the repository", url, sub);
		goto done;
	}
	if (rename(from, dest) != 0) {
		rc = mo_error_set(MO_EIO, "rename %s: %s", from, strerror(errno));
		goto done;
	}
	if (!sub[0]) {
		char *g = mo_sprintf("%s/.git", dest);
		rc = g ? mo_api_rmtree(g) : mo_error_set(MO_ENOMEM, "out of memory");
		mo_free(g);
	}
done:
	git_repository_free(repo);
	if (tmp)
		mo_api_rmtree(tmp);
	mo_free(tmp);
	mo_free(from);
	mo_free(url);
	mo_free(sub);
	mo_free(ref);
	return rc;
}

/* ---- HTTP ------------------------------------------------------------------------ */

typedef struct {
	FILE *f;
	size_t got, max;
	int too_big;
} dl;

static size_t dl_write(char *p, size_t sz, size_t n, void *ud)
{
	dl *d = ud;
	size_t len = sz * n;
	if (d->got + len > d->max) {
		d->too_big = 1;
		return 0;
	}
	d->got += len;
	return fwrite(p, 1, len, d->f);
}

int mo_api_http_fetch(const char *url, const char *path, size_t max)
{
	CURL *c = curl_easy_init();
	dl d = { NULL, 0, max, 0 };
	CURLcode cc;
	long status = 0;
	int rc = 0;
	char err[CURL_ERROR_SIZE] = "";
	if (!c)
		return mo_error_set(MO_ENOMEM, "out of memory");
	if (!(d.f = fopen(path, "wb"))) {
		curl_easy_cleanup(c);
		return mo_error_set(MO_EIO, "%s: %s", path, strerror(errno));
	}
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 1L);
	curl_easy_setopt(c, CURLOPT_MAXREDIRS, 5L);
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, 10000L);
	curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 300000L);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, dl_write);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &d);
	curl_easy_setopt(c, CURLOPT_ERRORBUFFER, err);
	curl_easy_setopt(c, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)max);
	cc = curl_easy_perform(c);
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
	if (d.too_big || cc == CURLE_FILESIZE_EXCEEDED)
		rc = mo_error_set(MO_EINVAL, "%s: the package is larger than %zu bytes", url, max);
	else if (cc != CURLE_OK)
		rc = mo_error_set_native(MO_EHTTP, (int)cc, "%s: %s", url, err[0] ? err : curl_easy_strerror(cc));
	else if (status >= 400)
		rc = mo_error_set(MO_EHTTP, "%s: HTTP %ld", url, status);
	if (fclose(d.f) != 0 && rc == 0)
		rc = mo_error_set(MO_EIO, "%s: %s", path, strerror(errno));
	curl_easy_cleanup(c);
	return rc;
}

/* ---- zip ----------------------------------------------------------------------------- */

int mo_api_zip_tree(const char *dir, const char *path)
{
	strlist files = { 0 }, dirs = { 0 };
	zip_t *z = NULL;
	int zerr = 0, rc;
	if ((rc = walk(dir, "", &files, &dirs, 0)) < 0)
		goto done;
	qsort(files.v, files.n, sizeof(*files.v), cmp_str);
	qsort(dirs.v, dirs.n, sizeof(*dirs.v), cmp_str);
	unlink(path);
	if (!(z = zip_open(path, ZIP_CREATE | ZIP_TRUNCATE, &zerr))) {
		rc = mo_error_set(MO_EIO, "%s: cannot create the zip (libzip error %d)", path, zerr);
		goto done;
	}
	for (size_t i = 0; i < dirs.n; i++)
		if (zip_dir_add(z, dirs.v[i], ZIP_FL_ENC_UTF_8) < 0) {
			rc = mo_error_set(MO_EIO, "%s: %s", path, zip_strerror(z));
			goto done;
		}
	for (size_t i = 0; i < files.n; i++) {
		char *full = mo_sprintf("%s/%s", dir, files.v[i]);
		zip_source_t *s = full ? zip_source_file(z, full, 0, -1) : NULL;
		mo_free(full);
		if (!s || zip_file_add(z, files.v[i], s, ZIP_FL_ENC_UTF_8 | ZIP_FL_OVERWRITE) < 0) {
			if (s)
				zip_source_free(s);
			rc = mo_error_set(MO_EIO, "%s: %s", path, zip_strerror(z));
			goto done;
		}
	}
	if (zip_close(z) < 0) {
		rc = mo_error_set(MO_EIO, "%s: %s", path, zip_strerror(z));
		goto done;
	}
	z = NULL;
done:
	if (z)
		zip_discard(z);
	strlist_free(&files);
	strlist_free(&dirs);
	return rc;
}

static int safe_name(const char *n)
{
	const char *p = n;
	if (!*n || n[0] == '/' || strchr(n, '\\') || strlen(n) > 1024)
		return 0;
	while (*p) {
		size_t len = strcspn(p, "/");
		if ((len == 2 && !strncmp(p, "..", 2)) || (len == 1 && p[0] == '.'))
			return 0;
		if (len == 0 && p[1] != '\0' && p != n)
			return 0; /* "a//b" */
		p += len;
		if (*p == '/')
			p++;
	}
	return 1;
}

static int mkparents(const char *dest, const char *name)
{
	char *full = mo_sprintf("%s/%s", dest, name), *slash;
	int rc = 0;
	if (!full)
		return mo_error_set(MO_ENOMEM, "out of memory");
	if ((slash = strrchr(full, '/')) && slash > full + strlen(dest)) {
		*slash = '\0';
		rc = mo_api_mkdirs(full);
	}
	mo_free(full);
	return rc;
}

int mo_api_unzip(const char *zpath, const char *dest, uint64_t max)
{
	zip_t *z;
	int zerr = 0, rc = 0;
	zip_int64_t n;
	uint64_t total = 0;
	char buf[65536];
	if (!(z = zip_open(zpath, ZIP_RDONLY | ZIP_CHECKCONS, &zerr)))
		return mo_error_set(MO_EINVAL, "the package is not a valid zip archive (libzip error %d)", zerr);
	mo_api_rmtree(dest);
	if ((rc = mo_api_mkdirs(dest)) < 0)
		goto done;
	n = zip_get_num_entries(z, 0);
	for (zip_int64_t i = 0; i < n && rc == 0; i++) {
		zip_stat_t zs;
		zip_file_t *f;
		char *full;
		int fd;
		zip_int64_t got;
		if (zip_stat_index(z, (zip_uint64_t)i, 0, &zs) != 0 || !(zs.valid & ZIP_STAT_NAME)) {
			rc = mo_error_set(MO_EINVAL, "zip entry %lld is unreadable", (long long)i);
			break;
		}
		if (!safe_name(zs.name)) {
			rc = mo_error_set(MO_EINVAL, "zip entry '%s': unsafe name (absolute, '..' or '\\')", zs.name);
			break;
		}
		total += zs.size;
		if (total > max) {
			rc = mo_error_set(MO_EINVAL, "the package expands to more than %llu bytes",
					  (unsigned long long)max);
			break;
		}
		if (zs.name[strlen(zs.name) - 1] == '/') {
			char *d = mo_sprintf("%s/%s", dest, zs.name);
			rc = d ? mo_api_mkdirs(d) : mo_error_set(MO_ENOMEM, "out of memory");
			mo_free(d);
			continue;
		}
		if ((rc = mkparents(dest, zs.name)) < 0)
			break;
		if (!(full = mo_sprintf("%s/%s", dest, zs.name))) {
			rc = mo_error_set(MO_ENOMEM, "out of memory");
			break;
		}
		fd = open(full, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
		if (fd < 0) {
			rc = mo_error_set(MO_EINVAL, "zip entry '%s': %s", zs.name, strerror(errno));
			mo_free(full);
			break;
		}
		if (!(f = zip_fopen_index(z, (zip_uint64_t)i, 0))) {
			rc = mo_error_set(MO_EINVAL, "zip entry '%s': %s", zs.name, zip_strerror(z));
		} else {
			while ((got = zip_fread(f, buf, sizeof(buf))) > 0)
				if (write(fd, buf, (size_t)got) != got) {
					rc = mo_error_set(MO_EIO, "%s: %s", full, strerror(errno));
					break;
				}
			if (got < 0 && rc == 0)
				rc = mo_error_set(MO_EINVAL, "zip entry '%s': %s", zs.name, zip_file_strerror(f));
			zip_fclose(f);
		}
		close(fd);
		mo_free(full);
	}
done:
	zip_discard(z);
	return rc;
}
