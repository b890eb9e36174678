/*
 * source_int.h - internals shared by source.c (modes, lock file, cache),
 * source_git.c (libgit2: URLs, mirrors, refs, trees) and source_auth.c
 * (credentials, host keys).  Not for other subsystems: they use source.h.
 */
#ifndef MO_SOURCE_INT_H
#define MO_SOURCE_INT_H

#include "source.h"

#include <git2.h>

enum {
	MO_GIT_FILE,
	MO_GIT_HTTPS,
	MO_GIT_SSH,
	MO_GIT_DAEMON
};

/* A git source string taken apart.  `url` is what libgit2 is given and
 * what errors, the lock and the cache key show: it never holds a password,
 * and for https no userinfo at all (url_user/url_pass keep those). */
typedef struct {
	int scheme;     /* MO_GIT_* */
	char *key;      /* the source string without credentials */
	char *base;     /* key without its ?ref= part */
	char *url;      /* transport url without credentials */
	char *subdir;   /* "" for the repository root */
	char *ref;      /* ?ref= value, or NULL */
	char *host;     /* NULL for file:// */
	int port;       /* explicit or the scheme's default */
	char *url_user; /* https userinfo from the source string */
	char *url_pass; /* (secret) */
} mo_git_source;

/* One lock entry: how a (source, constraint) pair was resolved. */
typedef struct {
	char *source;     /* mo_git_source.key */
	char *constraint; /* normal form, or NULL */
	char *url;
	char *subdir;
	char *ref; /* refs/tags/x, refs/heads/x or the commit */
	char commit[GIT_OID_HEXSZ + 1];
	char tree[GIT_OID_HEXSZ + 1]; /* tree of subdir in commit */
} mo_lock_entry;

/* Credentials and host-key policy, resolved from mo_source_opts and the
 * environment at mo_sources_open(). */
typedef struct {
	char *ssh_key, *ssh_key_passphrase, *ssh_known_hosts, *ssh_host_fingerprint;
	char *git_token, *git_username, *git_credentials, *ca_bundle;
} mo_git_auth;

/* The state of one fetch as seen by the libgit2 callbacks: what they
 * offered and why they gave up, so the fetch error can say it plainly. */
typedef struct {
	const mo_git_source *src;
	const mo_git_auth *auth;
	int calls; /* credential callback invocations */
	int key_tries;
	int auth_rejected;  /* credentials were offered and refused */
	int no_credentials; /* nothing to offer */
	int hostkey_refused;
	int tls_untrusted;
	char detail[512];       /* message for the above (no secrets) */
	char *authz;            /* https: "Authorization: Basic ..." (secret) */
	char *known_hosts_text; /* ssh: the known_hosts file */
	char *ssh_pubkey;       /* ssh: <key>.pub if readable */
} mo_git_fetch_ctx;

/* source_git.c */
int mo_git_source_parse(mo_git_source **out, const char *source);
void mo_git_source_free(mo_git_source *src);
int mo_git_is_source(const char *source);
int mo_git_is_full_sha(const char *s);
/* "git+<url>[//subdir]?ref=<commit>" */
char *mo_git_pinned(const mo_git_source *src, const char *commit);

typedef struct mo_git_mirror mo_git_mirror;
/* Open (creating it if `create`) the bare mirror of src->url under
 * <cache>/repos, holding flock() on its lock file: exclusive when
 * `exclusive`, else shared.  MO_ENOTFOUND if it does not exist and
 * !create. */
int mo_git_mirror_open(mo_git_mirror **out, const char *cache_dir, const mo_git_source *src,
		       int create, int exclusive);
void mo_git_mirror_close(mo_git_mirror *m);
/* Fetch every branch and tag (forced, pruned) and record the remote HEAD.
 * The mirror must be open exclusive. */
int mo_git_mirror_fetch(mo_git_mirror *m, const mo_git_source *src, const mo_git_auth *auth);
int mo_git_mirror_has_commit(mo_git_mirror *m, const char *hex);
/* Resolve src->ref, or the constraint, or HEAD, to a commit: fills
 * e->ref, e->commit and e->tree (of src->subdir). */
int mo_git_mirror_resolve(mo_git_mirror *m, const mo_git_source *src, const mo_constraint *c,
			  mo_lock_entry *e);
/* Commit of refs/tags/<name> (peeled) into hex; MO_ENOTFOUND if absent. */
int mo_git_mirror_ref_commit(mo_git_mirror *m, const char *refname, char hex[GIT_OID_HEXSZ + 1]);
/* Tree of `subdir` in `commit` into tree_hex. */
int mo_git_mirror_subtree(mo_git_mirror *m, const mo_git_source *src, const char *commit,
			  char tree_hex[GIT_OID_HEXSZ + 1]);
/* Write the tree of subdir at commit into the new directory `dir`. */
int mo_git_mirror_extract(mo_git_mirror *m, const mo_git_source *src, const char *commit,
			  const char *dir);

/* The git tree id the files under dir would have: blobs hashed with
 * git_odb_hashfile, tree objects built and hashed in memory.  Cost is one
 * read of every file; nothing is written. */
int mo_git_hash_dir(const char *dir, char tree_hex[GIT_OID_HEXSZ + 1]);
/* mkdir -p, mode 0755. */
int mo_git_mkdir_p(const char *path);
/* Hex SHA-256 of a string (2*32+1 bytes out). */
void mo_sha256_hex(const char *s, char out[65]);

/* source_auth.c */
int mo_git_auth_init(mo_git_auth *a, const mo_source_opts *opts);
void mo_git_auth_free(mo_git_auth *a);
int mo_git_credentials_cb(git_credential **out, const char *url, const char *username_from_url,
			  unsigned int allowed_types, void *payload);
/* Prepare everything the callbacks need (the https Authorization header,
 * the known_hosts text, the public key path), so that they allocate
 * nothing themselves; _clear wipes and frees it. */
int mo_git_fetch_ctx_init(mo_git_fetch_ctx *ctx, const mo_git_source *src, const mo_git_auth *a);
void mo_git_fetch_ctx_clear(mo_git_fetch_ctx *ctx);
int mo_git_certificate_cb(git_cert *cert, int valid, const char *host, void *payload);

#endif
