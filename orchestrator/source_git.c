/*
 * source_git.c - git module sources with libgit2: source strings taken
 * apart, bare mirrors in the cache, refs and constraints resolved to
 * commits, trees extracted and hashed.
 *
 * Cache layout (under the cache dir):
 *   repos/<sha256(url)>/       bare mirror: every branch and tag of the url
 *   repos/<sha256(url)>.lock   flock()ed while the mirror is used: exclusive
 *                              for a fetch, shared for reading
 *   trees/<commit>-<h>/        the tree of one subdir at one commit, h being
 *                              the first 16 hex digits of sha256(subdir)
 *   tmp/                       work area; trees and new mirrors are built
 *                              there and renamed into place atomically
 *
 * Tree verification: mo_git_hash_dir() recomputes the git tree id of an
 * extracted directory (git_odb_hashfile per blob, tree objects serialised
 * and hashed in memory, nothing written), so a LOCKED resolve needs neither
 * the mirror nor the network; it costs one read of the module's files.
 *
 * Fetches are serialised process-wide by one mutex, because libgit2's TLS
 * trust store (GIT_OPT_SET_SSL_CERT_LOCATIONS) is global.
 */
#include "source_int.h"
#include "common.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

/* ------------------------------------------------------------------ */
/* Source strings                                                      */

static const struct {
	const char *prefix;    /* in the source string */
	const char *transport; /* given to libgit2 */
	int scheme;
	int port;
} schemes[] = {
	{ "git+file://", "file://", MO_GIT_FILE, 0 },
	{ "git+https://", "https://", MO_GIT_HTTPS, 443 },
	{ "git+ssh://", "ssh://", MO_GIT_SSH, 22 },
	{ "git://", "git://", MO_GIT_DAEMON, 9418 },
};

int mo_git_is_source(const char *source)
{
	return !strncmp(source, "git", 3) && strstr(source, "://") != NULL;
}

int mo_git_is_full_sha(const char *s)
{
	if (!s || strlen(s) != GIT_OID_HEXSZ)
		return 0;
	for (const char *p = s; *p; p++)
		if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
			return 0;
	return 1;
}

/* Normalise a subdir: drop empty and "." components, refuse "..". */
static int normalise_subdir(char **out, const char *s, size_t n)
{
	mo_buf b = MO_BUF_INIT;
	size_t i = 0;
	while (i < n) {
		size_t j = i;
		while (j < n && s[j] != '/')
			j++;
		if (j - i == 2 && !strncmp(s + i, "..", 2)) {
			mo_buf_free(&b);
			return MO_EINVAL;
		}
		if (j > i && !(j - i == 1 && s[i] == '.')) {
			if ((b.len && mo_buf_put(&b, "/", 1) < 0) ||
			    mo_buf_put(&b, s + i, j - i) < 0) {
				mo_buf_free(&b);
				return MO_ENOMEM;
			}
		}
		i = j + 1;
	}
	if (!b.ptr && mo_buf_put(&b, "", 0) < 0)
		return MO_ENOMEM;
	*out = b.ptr;
	return 0;
}

void mo_git_source_free(mo_git_source *src)
{
	if (!src)
		return;
	mo_free(src->key);
	mo_free(src->base);
	mo_free(src->url);
	mo_free(src->subdir);
	mo_free(src->ref);
	mo_free(src->host);
	mo_free(src->url_user);
	if (src->url_pass) {
		memset(src->url_pass, 0, strlen(src->url_pass));
		mo_free(src->url_pass);
	}
	mo_free(src);
}

/* Split "host", "host:port", "[v6]:port" into src->host and src->port. */
static int parse_hostport(mo_git_source *src, const char *hp, size_t n, int defport)
{
	const char *colon = NULL;
	size_t hlen = n;
	const char *h = hp;
	src->port = defport;
	if (n && hp[0] == '[') {
		const char *close = memchr(hp, ']', n);
		if (!close)
			return MO_EINVAL;
		h = hp + 1;
		hlen = (size_t)(close - h);
		if ((size_t)(close + 1 - hp) < n) {
			if (close[1] != ':')
				return MO_EINVAL;
			colon = close + 1;
		}
	} else {
		colon = memchr(hp, ':', n);
		if (colon)
			hlen = (size_t)(colon - hp);
	}
	if (colon) {
		long port = 0;
		const char *p = colon + 1;
		if (p == hp + n)
			return MO_EINVAL;
		for (; p < hp + n; p++) {
			if (*p < '0' || *p > '9')
				return MO_EINVAL;
			port = port * 10 + (*p - '0');
			if (port > 65535)
				return MO_EINVAL;
		}
		if (port == 0)
			return MO_EINVAL;
		src->port = (int)port;
	}
	if (hlen == 0)
		return MO_EINVAL;
	src->host = mo_strndup(h, hlen);
	return src->host ? 0 : MO_ENOMEM;
}

int mo_git_source_parse(mo_git_source **out, const char *source)
{
	mo_git_source *src = NULL;
	const char *rest = NULL, *query, *end, *slash, *at, *path, *sub;
	const char *transport = NULL, *prefix = NULL;
	char *auth_clean = NULL, *ref_raw = NULL;
	size_t authlen, pathlen;
	int rc = 0, defport = 0;

	if (!(src = mo_calloc(1, sizeof(*src))))
		return mo_error_set(MO_ENOMEM, "out of memory");
	for (size_t i = 0; i < MO_ARRAY_SIZE(schemes); i++) {
		size_t n = strlen(schemes[i].prefix);
		if (!strncmp(source, schemes[i].prefix, n)) {
			rest = source + n;
			prefix = schemes[i].prefix;
			transport = schemes[i].transport;
			src->scheme = schemes[i].scheme;
			defport = schemes[i].port;
			break;
		}
	}
	if (!rest) {
		/* Never echo the string: it may carry a password. */
		rc = mo_error_set(MO_ESOURCE,
				  "module source: unsupported git url scheme "
				  "(use git+file://, git+https://, git+ssh:// or git://)");
		goto done;
	}

	end = rest + strlen(rest);
	query = strchr(rest, '?');
	if (query)
		end = query;
	slash = memchr(rest, '/', (size_t)(end - rest));
	if (!slash) {
		rc = mo_error_set(MO_ESOURCE, "module source: git url has no repository path");
		goto done;
	}
	authlen = (size_t)(slash - rest);
	path = slash;
	sub = NULL;
	for (const char *p = path + 1; p + 1 < end; p++) {
		if (p[0] == '/' && p[1] == '/') {
			sub = p;
			break;
		}
	}
	pathlen = (size_t)((sub ? sub : end) - path);
	if (pathlen <= 1) {
		rc = mo_error_set(MO_ESOURCE, "module source: git url has no repository path");
		goto done;
	}

	/* Authority: [user[:password]@]host[:port] */
	at = NULL;
	for (const char *p = rest; p < slash; p++)
		if (*p == '@')
			at = p;
	if (src->scheme == MO_GIT_FILE) {
		if (at || (authlen && !(authlen == 9 && !strncmp(rest, "localhost", 9)))) {
			rc = mo_error_set(MO_ESOURCE,
					  "module source: git+file:// urls take no host");
			goto done;
		}
		auth_clean = mo_strdup("");
	} else {
		const char *hp = at ? at + 1 : rest;
		size_t hplen = (size_t)(slash - hp);
		if (parse_hostport(src, hp, hplen, defport) < 0) {
			rc = mo_error_set(MO_ESOURCE, "module source: bad host or port in git url");
			goto done;
		}
		if (at) {
			const char *colon = memchr(rest, ':', (size_t)(at - rest));
			size_t ulen = colon ? (size_t)(colon - rest) : (size_t)(at - rest);
			src->url_user = mo_pct_decode(rest, ulen);
			if (colon)
				src->url_pass =
					mo_pct_decode(colon + 1, (size_t)(at - colon - 1));
			if (!src->url_user || (colon && !src->url_pass)) {
				rc = mo_error_set(MO_ESOURCE,
						  "module source: bad userinfo in git url");
				goto done;
			}
			if (src->scheme == MO_GIT_SSH) {
				/* The user name is kept (it is not a secret); any
				 * password is dropped: ssh uses keys only. */
				auth_clean =
					mo_sprintf("%.*s@%.*s", (int)ulen, rest, (int)hplen, hp);
			} else if (src->scheme == MO_GIT_HTTPS) {
				auth_clean = mo_strndup(hp, hplen);
			} else {
				rc = mo_error_set(MO_ESOURCE,
						  "module source: git:// urls take no user");
				goto done;
			}
		} else {
			auth_clean = mo_strndup(rest, authlen);
		}
	}
	if (!auth_clean) {
		rc = mo_error_set(MO_ENOMEM, "out of memory");
		goto done;
	}

	src->subdir = NULL;
	if (sub) {
		rc = normalise_subdir(&src->subdir, sub + 2, (size_t)(end - sub - 2));
		if (rc == MO_EINVAL) {
			rc = mo_error_set(MO_ESOURCE,
					  "module source: subdirectory may not contain '..'");
			goto done;
		}
	} else {
		rc = normalise_subdir(&src->subdir, "", 0);
	}
	if (rc < 0) {
		rc = mo_error_set(MO_ENOMEM, "out of memory");
		goto done;
	}

	if (query) {
		const char *q = query + 1;
		while (*q) {
			const char *amp = strchr(q, '&');
			size_t n = amp ? (size_t)(amp - q) : strlen(q);
			if (n > 4 && !strncmp(q, "ref=", 4) && !ref_raw) {
				ref_raw = mo_strndup(q + 4, n - 4);
				src->ref = mo_pct_decode(q + 4, n - 4);
				if (!ref_raw || !src->ref) {
					rc = mo_error_set(MO_ESOURCE,
							  "module source: bad ?ref= in git url");
					goto done;
				}
			} else {
				rc = mo_error_set(MO_ESOURCE,
						  "module source: unsupported git url parameter "
						  "'%.*s' (only ref= is known)",
						  (int)(n < 64 ? n : 64), q);
				goto done;
			}
			q += n + (amp != NULL);
		}
	}

	src->url = mo_sprintf("%s%s%.*s", transport, auth_clean, (int)pathlen, path);
	src->base = mo_sprintf("%s%s%.*s%s%s", prefix, auth_clean, (int)pathlen, path,
			       src->subdir[0] ? "//" : "", src->subdir);
	if (src->url && src->base)
		src->key = ref_raw ? mo_sprintf("%s?ref=%s", src->base, ref_raw) :
				     mo_strdup(src->base);
	if (!src->url || !src->base || !src->key) {
		rc = mo_error_set(MO_ENOMEM, "out of memory");
		goto done;
	}
	*out = src;
	src = NULL;
done:
	mo_free(auth_clean);
	mo_free(ref_raw);
	mo_git_source_free(src);
	return rc;
}

char *mo_git_pinned(const mo_git_source *src, const char *commit)
{
	return mo_sprintf("%s?ref=%s", src->base, commit);
}

/* ------------------------------------------------------------------ */
/* Small helpers                                                       */

void mo_sha256_hex(const char *s, char out[65])
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int len = 0;
	static const char hex[] = "0123456789abcdef";
	EVP_Digest(s, strlen(s), md, &len, EVP_sha256(), NULL);
	for (unsigned int i = 0; i < 32; i++) {
		out[2 * i] = hex[md[i] >> 4];
		out[2 * i + 1] = hex[md[i] & 15];
	}
	out[64] = '\0';
}

int mo_git_mkdir_p(const char *path)
{
	char buf[PATH_MAX];
	size_t n = strlen(path);
	if (n >= sizeof(buf))
		return mo_error_set(MO_EIO, "%s: path too long", path);
	memcpy(buf, path, n + 1);
	for (char *p = buf + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(buf, 0755) < 0 && errno != EEXIST)
			return mo_error_set_native(MO_EIO, errno, "%s: %s", buf, strerror(errno));
		*p = '/';
	}
	if (mkdir(buf, 0755) < 0 && errno != EEXIST)
		return mo_error_set_native(MO_EIO, errno, "%s: %s", buf, strerror(errno));
	return 0;
}

/* libgit2's last error message, for error details. */
static const char *git_msg(void)
{
	const git_error *e = git_error_last();
	return e && e->message ? e->message : "unknown libgit2 error";
}

/* ------------------------------------------------------------------ */
/* Mirrors                                                             */

struct mo_git_mirror {
	git_repository *repo;
	int lock_fd;
	char *path;
};

void mo_git_mirror_close(mo_git_mirror *m)
{
	if (!m)
		return;
	git_repository_free(m->repo);
	if (m->lock_fd >= 0)
		close(m->lock_fd); /* releases the flock */
	mo_free(m->path);
	mo_free(m);
}

/* Create an empty bare repository at `path` through a temporary directory
 * and a rename, so a crash never leaves a half-made mirror in place.
 * Caller holds the mirror's lock. */
static int mirror_create(const char *cache_dir, const char *path)
{
	char rnd[17], *tmp = NULL, *tmpdir = NULL;
	git_repository *repo = NULL;
	int rc = 0;
	if (mo_random_hex(rnd, 8) < 0)
		return MO_EIO;
	tmpdir = mo_sprintf("%s/tmp", cache_dir);
	tmp = mo_sprintf("%s/tmp/repo-%s", cache_dir, rnd);
	if (!tmp || !tmpdir) {
		rc = mo_error_set(MO_ENOMEM, "out of memory");
		goto done;
	}
	if ((rc = mo_git_mkdir_p(tmpdir)) < 0)
		goto done;
	if (git_repository_init(&repo, tmp, 1) < 0) {
		rc = mo_error_set(MO_EIO, "cannot create git mirror in %s: %s", tmp, git_msg());
		goto done;
	}
	git_repository_free(repo);
	if (rename(tmp, path) < 0) {
		rc = mo_error_set_native(MO_EIO, errno, "cannot create git mirror %s: %s", path,
					 strerror(errno));
		goto done;
	}
done:
	mo_free(tmp);
	mo_free(tmpdir);
	return rc;
}

int mo_git_mirror_open(mo_git_mirror **out, const char *cache_dir, const mo_git_source *src,
		       int create, int exclusive)
{
	mo_git_mirror *m = NULL;
	char hash[65], *repos = NULL, *lockp = NULL;
	struct stat st;
	int rc = 0;

	if ((rc = mo_sources_global_init()) < 0)
		return rc;
	if (!(m = mo_calloc(1, sizeof(*m))))
		return mo_error_set(MO_ENOMEM, "out of memory");
	m->lock_fd = -1;
	mo_sha256_hex(src->url, hash);
	repos = mo_sprintf("%s/repos", cache_dir);
	m->path = mo_sprintf("%s/repos/%s", cache_dir, hash);
	lockp = mo_sprintf("%s/repos/%s.lock", cache_dir, hash);
	if (!repos || !m->path || !lockp) {
		rc = mo_error_set(MO_ENOMEM, "out of memory");
		goto done;
	}
	if (!create && stat(m->path, &st) < 0) {
		rc = mo_error_set(MO_ENOTFOUND, "no mirror of %s in the cache", src->url);
		goto done;
	}
	if ((rc = mo_git_mkdir_p(repos)) < 0)
		goto done;
	m->lock_fd = open(lockp, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	if (m->lock_fd < 0) {
		rc = mo_error_set_native(MO_EIO, errno, "%s: %s", lockp, strerror(errno));
		goto done;
	}
	while (flock(m->lock_fd, exclusive ? LOCK_EX : LOCK_SH) < 0) {
		if (errno != EINTR) {
			rc = mo_error_set_native(MO_EIO, errno, "flock %s: %s", lockp,
						 strerror(errno));
			goto done;
		}
	}
	if (stat(m->path, &st) < 0) {
		if (!create) {
			rc = mo_error_set(MO_ENOTFOUND, "no mirror of %s in the cache", src->url);
			goto done;
		}
		if ((rc = mirror_create(cache_dir, m->path)) < 0)
			goto done;
	}
	if (git_repository_open_bare(&m->repo, m->path) < 0) {
		rc = mo_error_set(MO_ESOURCE,
				  "cannot open git mirror %s: %s (delete it and run "
				  "`mecorch init`)",
				  m->path, git_msg());
		goto done;
	}
	*out = m;
	m = NULL;
done:
	mo_free(repos);
	mo_free(lockp);
	mo_git_mirror_close(m);
	return rc;
}

/* The TLS trust store libgit2 uses is process-wide: remember what we set
 * so that a fetch without a CA bundle after one with a bundle goes back to
 * the system store.  Guarded by fetch_lock. */
static pthread_mutex_t fetch_lock = PTHREAD_MUTEX_INITIALIZER;
static char trust_current[PATH_MAX]; /* "" = libgit2's built-in default */

static const char *system_ca_bundle(void)
{
	static const char *const candidates[] = {
		"/etc/ssl/certs/ca-certificates.crt", /* Debian, Ubuntu, Alpine */
		"/etc/pki/tls/certs/ca-bundle.crt",   /* Fedora, RHEL */
		"/etc/ssl/ca-bundle.pem",             /* openSUSE */
		"/etc/ssl/cert.pem",                  /* BSDs, macOS */
	};
	const char *env = getenv("SSL_CERT_FILE");
	struct stat st;
	if (env && *env && stat(env, &st) == 0)
		return env;
	for (size_t i = 0; i < MO_ARRAY_SIZE(candidates); i++)
		if (stat(candidates[i], &st) == 0)
			return candidates[i];
	return NULL;
}

static int set_trust(const char *bundle)
{
	const char *want = bundle;
	struct stat st;
	int is_dir;
	if (!want) {
		if (!trust_current[0])
			return 0; /* never changed: libgit2's default stands */
		want = system_ca_bundle();
		if (!want)
			return 0;
	}
	if (!strcmp(trust_current, want))
		return 0;
	if (stat(want, &st) < 0)
		return mo_error_set_native(MO_ESOURCE, errno, "CA bundle %s: %s", want,
					   strerror(errno));
	is_dir = S_ISDIR(st.st_mode);
	if (git_libgit2_opts(GIT_OPT_SET_SSL_CERT_LOCATIONS, is_dir ? NULL : want,
			     is_dir ? want : NULL) < 0)
		return mo_error_set(MO_ESOURCE, "cannot load CA bundle %s: %s", want, git_msg());
	snprintf(trust_current, sizeof(trust_current), "%s", want);
	return 0;
}

static int fetch_error(const mo_git_fetch_ctx *ctx, const mo_git_source *src, int gerr)
{
	if (ctx->hostkey_refused)
		return mo_error_set_native(MO_ESOURCE, gerr, "%s", ctx->detail);
	if (ctx->auth_rejected)
		return mo_error_set_native(MO_ESOURCE, gerr, "authentication failed for %s: %s",
					   src->url, ctx->detail);
	if (ctx->no_credentials)
		return mo_error_set_native(MO_ESOURCE, gerr, "authentication required for %s: %s",
					   src->url, ctx->detail);
	if (src->scheme == MO_GIT_HTTPS && (gerr == GIT_ECERTIFICATE || ctx->tls_untrusted))
		return mo_error_set_native(MO_ESOURCE, gerr,
					   "TLS certificate of %s is not trusted (%s): set "
					   "MECORCH_CA_BUNDLE to the CA that signed it",
					   src->url, git_msg());
	return mo_error_set_native(MO_ESOURCE, gerr, "cannot fetch %s: %s", src->url, git_msg());
}

int mo_git_mirror_fetch(mo_git_mirror *m, const mo_git_source *src, const mo_git_auth *auth)
{
	static char *specs[] = { "+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*" };
	git_strarray refspecs = { specs, MO_ARRAY_SIZE(specs) };
	git_fetch_options fo;
	git_remote *remote = NULL;
	git_reference *head = NULL;
	git_buf branch = { 0 };
	mo_git_fetch_ctx ctx;
	int rc = 0, gerr;

	if ((rc = mo_git_fetch_ctx_init(&ctx, src, auth)) < 0)
		return rc;
	git_fetch_options_init(&fo, GIT_FETCH_OPTIONS_VERSION);
	fo.callbacks.credentials = mo_git_credentials_cb;
	fo.callbacks.certificate_check = mo_git_certificate_cb;
	fo.callbacks.payload = &ctx;
	fo.prune = GIT_FETCH_PRUNE;
	fo.download_tags = GIT_REMOTE_DOWNLOAD_TAGS_NONE;
	fo.update_fetchhead = 0;
	fo.proxy_opts.type = GIT_PROXY_AUTO;
	if (ctx.authz) {
		fo.custom_headers.strings = &ctx.authz;
		fo.custom_headers.count = 1;
		fo.follow_redirects = GIT_REMOTE_REDIRECT_NONE; /* keep them on this host */
	}

	pthread_mutex_lock(&fetch_lock);
	if (src->scheme == MO_GIT_HTTPS && (rc = set_trust(auth->ca_bundle)) < 0)
		goto done;
	if (git_remote_create_anonymous(&remote, m->repo, src->url) < 0) {
		rc = mo_error_set(MO_ESOURCE, "bad git url %s: %s", src->url, git_msg());
		goto done;
	}
	if ((gerr = git_remote_fetch(remote, &refspecs, &fo, NULL)) < 0) {
		rc = fetch_error(&ctx, src, gerr);
		goto done;
	}
	/* Remember the remote's default branch as the mirror's HEAD, for
	 * sources that name no ref. */
	if (git_remote_default_branch(&branch, remote) == 0 && branch.ptr)
		git_reference_symbolic_create(&head, m->repo, "HEAD", branch.ptr, 1, NULL);
done:
	pthread_mutex_unlock(&fetch_lock);
	git_reference_free(head);
	git_buf_dispose(&branch);
	git_remote_free(remote);
	mo_git_fetch_ctx_clear(&ctx);
	return rc;
}

int mo_git_mirror_has_commit(mo_git_mirror *m, const char *hex)
{
	git_oid oid;
	git_commit *c = NULL;
	if (git_oid_fromstr(&oid, hex) < 0 || git_commit_lookup(&c, m->repo, &oid) < 0)
		return 0;
	git_commit_free(c);
	return 1;
}

/* ------------------------------------------------------------------ */
/* Resolution                                                          */

static int peel_ref(git_repository *repo, const char *name, git_oid *out)
{
	git_reference *r = NULL;
	git_object *o = NULL;
	int rc = MO_ENOTFOUND;
	if (git_reference_lookup(&r, repo, name) == 0 &&
	    git_reference_peel(&o, r, GIT_OBJECT_COMMIT) == 0) {
		git_oid_cpy(out, git_object_id(o));
		rc = 0;
	}
	git_object_free(o);
	git_reference_free(r);
	return rc;
}

int mo_git_mirror_ref_commit(mo_git_mirror *m, const char *refname, char hex[GIT_OID_HEXSZ + 1])
{
	git_oid oid;
	if (peel_ref(m->repo, refname, &oid) < 0)
		return MO_ENOTFOUND;
	git_oid_tostr(hex, GIT_OID_HEXSZ + 1, &oid);
	return 0;
}

static int is_hex(const char *s, size_t min, size_t max)
{
	size_t n = strlen(s);
	if (n < min || n > max)
		return 0;
	for (; *s; s++)
		if (!isxdigit((unsigned char)*s))
			return 0;
	return 1;
}

static int resolve_head(git_repository *repo, const mo_git_source *src, git_oid *oid, char **ref)
{
	git_reference *h = NULL;
	const char *target;
	int rc = 0;
	if (git_reference_lookup(&h, repo, "HEAD") < 0) {
		rc = MO_ENOTFOUND;
		goto done;
	}
	target = git_reference_type(h) == GIT_REFERENCE_SYMBOLIC ?
			 git_reference_symbolic_target(h) :
			 "HEAD";
	if (peel_ref(repo, target, oid) < 0) {
		rc = MO_ENOTFOUND;
		goto done;
	}
	if (!(*ref = mo_strdup(target)))
		rc = mo_error_set(MO_ENOMEM, "out of memory");
done:
	if (rc == MO_ENOTFOUND)
		rc = mo_error_set(MO_ESOURCE, "%s has no default branch: give ?ref= or a version",
				  src->url);
	git_reference_free(h);
	return rc;
}

static int resolve_ref(git_repository *repo, const mo_git_source *src, git_oid *oid, char **ref)
{
	const char *r = src->ref;
	char name[512];
	git_object *o = NULL;
	git_oid prefix;

	if (mo_git_is_full_sha(r)) {
		git_oid_fromstr(&prefix, r);
		if (git_object_lookup(&o, repo, &prefix, GIT_OBJECT_COMMIT) < 0)
			return mo_error_set(MO_ESOURCE, "commit %s not found in %s", r, src->url);
		git_oid_cpy(oid, git_object_id(o));
		git_object_free(o);
		return (*ref = mo_strdup(r)) ? 0 : mo_error_set(MO_ENOMEM, "out of memory");
	}
	if (!strcmp(r, "HEAD"))
		return resolve_head(repo, src, oid, ref);
	if (!strncmp(r, "refs/", 5)) {
		if (peel_ref(repo, r, oid) == 0)
			return (*ref = mo_strdup(r)) ? 0 : mo_error_set(MO_ENOMEM, "out of memory");
	} else {
		static const char *const fmts[] = { "refs/tags/%s", "refs/heads/%s" };
		for (size_t i = 0; i < MO_ARRAY_SIZE(fmts); i++) {
			if ((size_t)snprintf(name, sizeof(name), fmts[i], r) >= sizeof(name))
				break;
			if (peel_ref(repo, name, oid) == 0)
				return (*ref = mo_strdup(name)) ?
					       0 :
					       mo_error_set(MO_ENOMEM, "out of memory");
		}
	}
	if (is_hex(r, 4, GIT_OID_HEXSZ - 1)) {
		char hex[GIT_OID_HEXSZ + 1];
		git_oid_fromstrn(&prefix, r, strlen(r));
		if (git_object_lookup_prefix(&o, repo, &prefix, strlen(r), GIT_OBJECT_COMMIT) ==
		    0) {
			git_oid_cpy(oid, git_object_id(o));
			git_object_free(o);
			git_oid_tostr(hex, sizeof(hex), oid);
			return (*ref = mo_strdup(hex)) ? 0 :
							 mo_error_set(MO_ENOMEM, "out of memory");
		}
	}
	return mo_error_set(MO_ESOURCE, "ref '%s' not found in %s (no such tag, branch or commit)",
			    r, src->url);
}

static int resolve_constraint(git_repository *repo, const mo_git_source *src,
			      const mo_constraint *c, git_oid *oid, char **ref)
{
	git_reference_iterator *it = NULL;
	git_reference *r = NULL;
	mo_semver best, v;
	char *best_name = NULL;
	mo_buf seen = MO_BUF_INIT;
	int nseen = 0, rc = 0;

	if (git_reference_iterator_glob_new(&it, repo, "refs/tags/*") < 0)
		return mo_error_set(MO_ESOURCE, "cannot list tags of %s: %s", src->url, git_msg());
	while (git_reference_next(&r, it) == 0) {
		const char *full = git_reference_name(r), *name = full + strlen("refs/tags/");
		git_object *o = NULL;
		int better;
		if (mo_semver_parse(&v, name) == 0) {
			if (nseen < 12 &&
			    mo_buf_printf(&seen, "%s%s", nseen ? ", " : "", name) == 0)
				nseen++;
			if (mo_constraint_match(c, &v) &&
			    git_reference_peel(&o, r, GIT_OBJECT_COMMIT) == 0) {
				better = !best_name || mo_semver_cmp(&v, &best) > 0 ||
					 (mo_semver_cmp(&v, &best) == 0 &&
					  strcmp(full, best_name) < 0);
				if (better) {
					char *dup = mo_strdup(full);
					if (!dup) {
						git_object_free(o);
						git_reference_free(r);
						rc = mo_error_set(MO_ENOMEM, "out of memory");
						goto done;
					}
					mo_free(best_name);
					best_name = dup;
					best = v;
					git_oid_cpy(oid, git_object_id(o));
				}
				git_object_free(o);
			}
		}
		git_reference_free(r);
		r = NULL;
	}
	if (!best_name) {
		rc = mo_error_set(MO_ESOURCE,
				  "no tag of %s satisfies version '%s' (version tags: %s)",
				  src->url, mo_constraint_string(c), nseen ? seen.ptr : "none");
		goto done;
	}
	*ref = best_name;
	best_name = NULL;
done:
	mo_free(best_name);
	mo_buf_free(&seen);
	git_reference_iterator_free(it);
	return rc;
}

/* Tree of subdir in the commit `oid` (the caller frees *out). */
static int lookup_subtree(git_repository *repo, const mo_git_source *src, const git_oid *oid,
			  git_tree **out)
{
	git_commit *commit = NULL;
	git_tree *root = NULL;
	git_tree_entry *entry = NULL;
	char hex[GIT_OID_HEXSZ + 1];
	int rc = 0;

	git_oid_tostr(hex, sizeof(hex), oid);
	if (git_commit_lookup(&commit, repo, oid) < 0 || git_commit_tree(&root, commit) < 0) {
		rc = mo_error_set(MO_ESOURCE, "commit %s of %s is not in the mirror: %s", hex,
				  src->url, git_msg());
		goto done;
	}
	if (!src->subdir[0]) {
		*out = root;
		root = NULL;
		goto done;
	}
	if (git_tree_entry_bypath(&entry, root, src->subdir) < 0 ||
	    git_tree_entry_type(entry) != GIT_OBJECT_TREE) {
		rc = mo_error_set(MO_ESOURCE, "%s has no directory '%s' at commit %s", src->url,
				  src->subdir, hex);
		goto done;
	}
	if (git_tree_lookup(out, repo, git_tree_entry_id(entry)) < 0)
		rc = mo_error_set(MO_ESOURCE, "cannot read tree '%s' of %s: %s", src->subdir,
				  src->url, git_msg());
done:
	git_tree_entry_free(entry);
	git_tree_free(root);
	git_commit_free(commit);
	return rc;
}

int mo_git_mirror_subtree(mo_git_mirror *m, const mo_git_source *src, const char *commit,
			  char tree_hex[GIT_OID_HEXSZ + 1])
{
	git_oid oid;
	git_tree *t = NULL;
	int rc;
	if (git_oid_fromstr(&oid, commit) < 0)
		return mo_error_set(MO_ESOURCE, "bad commit id '%s'", commit);
	if ((rc = lookup_subtree(m->repo, src, &oid, &t)) < 0)
		return rc;
	git_oid_tostr(tree_hex, GIT_OID_HEXSZ + 1, git_tree_id(t));
	git_tree_free(t);
	return 0;
}

int mo_git_mirror_resolve(mo_git_mirror *m, const mo_git_source *src, const mo_constraint *c,
			  mo_lock_entry *e)
{
	git_oid oid;
	char *ref = NULL;
	int rc;
	if (src->ref)
		rc = resolve_ref(m->repo, src, &oid, &ref);
	else if (c)
		rc = resolve_constraint(m->repo, src, c, &oid, &ref);
	else
		rc = resolve_head(m->repo, src, &oid, &ref);
	if (rc < 0)
		return rc;
	git_oid_tostr(e->commit, sizeof(e->commit), &oid);
	if ((rc = mo_git_mirror_subtree(m, src, e->commit, e->tree)) < 0) {
		mo_free(ref);
		return rc;
	}
	mo_free(e->ref);
	e->ref = ref;
	return 0;
}

/* ------------------------------------------------------------------ */
/* Extraction                                                          */

/* A symlink target must stay inside the extracted tree: no absolute
 * target, no ".." climbing above the root.  `depth` is how many
 * directories below the root the link sits. */
static int link_stays_inside(const char *target, size_t len, int depth)
{
	size_t i = 0;
	if (len == 0 || target[0] == '/')
		return 0;
	while (i < len) {
		size_t j = i;
		while (j < len && target[j] != '/')
			j++;
		if (j - i == 2 && target[i] == '.' && target[i + 1] == '.') {
			if (--depth < 0)
				return 0;
		} else if (j > i && !(j - i == 1 && target[i] == '.')) {
			depth++;
		}
		i = j + 1;
	}
	return 1;
}

static int write_file(const char *path, const void *data, size_t len, mode_t mode)
{
	const char *p = data;
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0)
		return mo_error_set_native(MO_EIO, errno, "%s: %s", path, strerror(errno));
	while (len > 0) {
		ssize_t n = write(fd, p, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			close(fd);
			return mo_error_set_native(MO_EIO, errno, "%s: %s", path, strerror(errno));
		}
		p += n;
		len -= (size_t)n;
	}
	if (fchmod(fd, mode) < 0 || close(fd) < 0)
		return mo_error_set_native(MO_EIO, errno, "%s: %s", path, strerror(errno));
	return 0;
}

static int extract_tree(git_repository *repo, const git_tree *tree, const char *dir, int depth)
{
	size_t n = git_tree_entrycount(tree);
	int rc = 0;
	for (size_t i = 0; i < n && rc == 0; i++) {
		const git_tree_entry *e = git_tree_entry_byindex(tree, i);
		const char *name = git_tree_entry_name(e);
		git_filemode_t mode = git_tree_entry_filemode(e);
		git_blob *blob = NULL;
		git_tree *sub = NULL;
		char *path;

		if (!strcmp(name, ".") || !strcmp(name, "..") || strchr(name, '/') ||
		    !strcasecmp(name, ".git"))
			return mo_error_set(MO_ESOURCE, "refusing tree entry '%s'", name);
		if (!(path = mo_sprintf("%s/%s", dir, name)))
			return mo_error_set(MO_ENOMEM, "out of memory");
		switch (mode) {
		case GIT_FILEMODE_TREE:
			if (mkdir(path, 0755) < 0)
				rc = mo_error_set_native(MO_EIO, errno, "%s: %s", path,
							 strerror(errno));
			else if (git_tree_lookup(&sub, repo, git_tree_entry_id(e)) < 0)
				rc = mo_error_set(MO_ESOURCE, "cannot read tree %s: %s", name,
						  git_msg());
			else
				rc = extract_tree(repo, sub, path, depth + 1);
			break;
		case GIT_FILEMODE_BLOB:
		case GIT_FILEMODE_BLOB_EXECUTABLE:
			if (git_blob_lookup(&blob, repo, git_tree_entry_id(e)) < 0)
				rc = mo_error_set(MO_ESOURCE, "cannot read %s: %s", name,
						  git_msg());
			else
				rc = write_file(path, git_blob_rawcontent(blob),
						(size_t)git_blob_rawsize(blob),
						mode == GIT_FILEMODE_BLOB ? 0444 : 0555);
			break;
		case GIT_FILEMODE_LINK: {
			char *target;
			size_t tlen;
			if (git_blob_lookup(&blob, repo, git_tree_entry_id(e)) < 0) {
				rc = mo_error_set(MO_ESOURCE, "cannot read %s: %s", name,
						  git_msg());
				break;
			}
			tlen = (size_t)git_blob_rawsize(blob);
			if (memchr(git_blob_rawcontent(blob), '\0', tlen) ||
			    !link_stays_inside(git_blob_rawcontent(blob), tlen, depth)) {
				rc = mo_error_set(MO_ESOURCE,
						  "symlink '%s' points outside the module", name);
				break;
			}
			if (!(target = mo_strndup(git_blob_rawcontent(blob), tlen))) {
				rc = mo_error_set(MO_ENOMEM, "out of memory");
				break;
			}
			if (symlink(target, path) < 0)
				rc = mo_error_set_native(MO_EIO, errno, "%s: %s", path,
							 strerror(errno));
			mo_free(target);
			break;
		}
		case GIT_FILEMODE_COMMIT:
			rc = mo_error_set(MO_ESOURCE,
					  "'%s' is a git submodule: submodules are not "
					  "supported in module sources",
					  name);
			break;
		default:
			rc = mo_error_set(MO_ESOURCE, "unsupported tree entry '%s' (mode %o)", name,
					  (unsigned)mode);
		}
		git_blob_free(blob);
		git_tree_free(sub);
		mo_free(path);
	}
	return rc;
}

int mo_git_mirror_extract(mo_git_mirror *m, const mo_git_source *src, const char *commit,
			  const char *dir)
{
	git_oid oid;
	git_tree *t = NULL;
	int rc;
	if (git_oid_fromstr(&oid, commit) < 0)
		return mo_error_set(MO_ESOURCE, "bad commit id '%s'", commit);
	if ((rc = lookup_subtree(m->repo, src, &oid, &t)) < 0)
		return rc;
	if (mkdir(dir, 0755) < 0)
		rc = mo_error_set_native(MO_EIO, errno, "%s: %s", dir, strerror(errno));
	else
		rc = extract_tree(m->repo, t, dir, 0);
	git_tree_free(t);
	return rc;
}

/* ------------------------------------------------------------------ */
/* Hashing a directory as a git tree                                   */

typedef struct {
	char *name;
	size_t len;
	unsigned mode; /* git file mode */
	git_oid oid;
} hash_entry;

/* git's order: byte-wise, a directory compared as if its name ended in '/'. */
static int hash_entry_cmp(const void *pa, const void *pb)
{
	const hash_entry *a = pa, *b = pb;
	size_t n = a->len < b->len ? a->len : b->len;
	int c = memcmp(a->name, b->name, n);
	unsigned char ca, cb;
	if (c)
		return c;
	ca = a->len > n ? (unsigned char)a->name[n] : a->mode == 040000 ? '/' : 0;
	cb = b->len > n ? (unsigned char)b->name[n] : b->mode == 040000 ? '/' : 0;
	return (int)ca - (int)cb;
}

static int hash_dir_oid(const char *dir, git_oid *out)
{
	DIR *d = NULL;
	struct dirent *de;
	hash_entry *ents = NULL;
	size_t n = 0, cap = 0;
	mo_buf tree = MO_BUF_INIT;
	char *path = NULL;
	int rc = 0;

	if (!(d = opendir(dir)))
		return mo_error_set_native(errno == ENOENT ? MO_ENOTFOUND : MO_EIO, errno, "%s: %s",
					   dir, strerror(errno));
	while ((de = readdir(d))) {
		struct stat st;
		hash_entry *e;
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (n == cap) {
			size_t ncap = cap ? cap * 2 : 16;
			hash_entry *ne = mo_realloc(ents, ncap * sizeof(*ne));
			if (!ne) {
				rc = mo_error_set(MO_ENOMEM, "out of memory");
				goto done;
			}
			ents = ne;
			cap = ncap;
		}
		e = &ents[n];
		memset(e, 0, sizeof(*e));
		mo_free(path);
		if (!(path = mo_sprintf("%s/%s", dir, de->d_name)) ||
		    !(e->name = mo_strdup(de->d_name))) {
			rc = mo_error_set(MO_ENOMEM, "out of memory");
			goto done;
		}
		n++;
		e->len = strlen(e->name);
		if (lstat(path, &st) < 0) {
			rc = mo_error_set_native(MO_EIO, errno, "%s: %s", path, strerror(errno));
			goto done;
		}
		if (S_ISREG(st.st_mode)) {
			e->mode = (st.st_mode & S_IXUSR) ? 0100755 : 0100644;
			if (git_odb_hashfile(&e->oid, path, GIT_OBJECT_BLOB) < 0) {
				rc = mo_error_set(MO_EIO, "cannot hash %s: %s", path, git_msg());
				goto done;
			}
		} else if (S_ISLNK(st.st_mode)) {
			char target[PATH_MAX];
			ssize_t tl = readlink(path, target, sizeof(target));
			if (tl < 0) {
				rc = mo_error_set_native(MO_EIO, errno, "%s: %s", path,
							 strerror(errno));
				goto done;
			}
			e->mode = 0120000;
			git_odb_hash(&e->oid, target, (size_t)tl, GIT_OBJECT_BLOB);
		} else if (S_ISDIR(st.st_mode)) {
			e->mode = 040000;
			if ((rc = hash_dir_oid(path, &e->oid)) < 0)
				goto done;
		} else {
			/* A fifo or device can't come from git: make the hash
			 * differ rather than fail, so the caller reports a
			 * modified tree. */
			e->mode = 0100644;
			memset(&e->oid, 0, sizeof(e->oid));
		}
	}
	qsort(ents, n, sizeof(*ents), hash_entry_cmp);
	for (size_t i = 0; i < n; i++) {
		if (mo_buf_printf(&tree, "%o %s", ents[i].mode, ents[i].name) < 0 ||
		    mo_buf_put(&tree, "", 1) < 0 ||
		    mo_buf_put(&tree, ents[i].oid.id, GIT_OID_RAWSZ) < 0) {
			rc = mo_error_set(MO_ENOMEM, "out of memory");
			goto done;
		}
	}
	if (git_odb_hash(out, tree.ptr ? tree.ptr : "", tree.len, GIT_OBJECT_TREE) < 0)
		rc = mo_error_set(MO_ERROR, "cannot hash tree %s: %s", dir, git_msg());
done:
	for (size_t i = 0; i < n; i++)
		mo_free(ents[i].name);
	mo_free(ents);
	mo_free(path);
	mo_buf_free(&tree);
	closedir(d);
	return rc;
}

int mo_git_hash_dir(const char *dir, char tree_hex[GIT_OID_HEXSZ + 1])
{
	git_oid oid;
	int rc;

	if ((rc = mo_sources_global_init()) < 0)
		return rc;
	rc = hash_dir_oid(dir, &oid);
	if (rc == 0)
		git_oid_tostr(tree_hex, GIT_OID_HEXSZ + 1, &oid);
	return rc;
}
