/*
 * source.h - module sources: from a source string in a plan to a local
 * directory holding the module's module.lua.
 *
 * Source strings:
 *   ./dir, ../dir, /abs/dir            local paths, relative to the plan file
 *   git+file:///srv/repo.git//sub?ref=v1.2.0
 *   git+https://host/repo.git//sub?ref=main
 *   git+ssh://user@host:2222/path/repo.git//sub?ref=<commit>
 *   git://host:9418/repo.git//sub      (with a version constraint instead of ref)
 * A version constraint ("~> 1.2", ">= 1.0, < 2.0", "= 1.2.3", "1.2.3") is
 * resolved against the repository's semver tags (v-prefixed or not); the
 * highest satisfying release wins, pre-releases only when asked exactly.
 *
 * Modes: LOCKED (plan, apply, destroy) uses mecorch.lock and the cache
 * only, never the network; INIT fetches, keeps what the lock pins (refusing
 * a tag that moved) and adds what it lacks; UPGRADE re-resolves every
 * constraint and ref.  The planner only ever calls mo_sources_resolve():
 * new source kinds plug in here, not there.  docs/sources.md describes the
 * lock file, the cache layout and the environment variables.
 *
 * Threads: a mo_sources handle is used by one thread at a time.  Fetches
 * are serialised process-wide (libgit2's TLS trust store is global).
 */
#ifndef MO_SOURCE_H
#define MO_SOURCE_H

#include <stdint.h>

typedef struct mo_sources mo_sources;

enum {
	MO_SOURCES_LOCKED = 0,
	MO_SOURCES_INIT = 1,
	MO_SOURCES_UPGRADE = 2
};

/* Every string field may be NULL; the auth fields then default to the
 * environment variable named beside them (and to the stated fallback).
 * An auth field set to "" turns that setting off. */
typedef struct {
	const char *plan_dir;  /* local paths are relative to this */
	const char *lock_path; /* NULL: <plan_dir>/mecorch.lock */
	const char *cache_dir; /* NULL: $XDG_CACHE_HOME/mecorch or ~/.cache/mecorch */
	int mode;              /* MO_SOURCES_* */

	const char *ssh_key;              /* MECORCH_SSH_KEY, else ~/.ssh/id_ed25519 */
	const char *ssh_key_passphrase;   /* MECORCH_SSH_KEY_PASSPHRASE */
	const char *ssh_known_hosts;      /* MECORCH_SSH_KNOWN_HOSTS, else ~/.ssh/known_hosts */
	const char *ssh_host_fingerprint; /* MECORCH_SSH_HOST_FINGERPRINT, "SHA256:<base64>" */
	const char *git_token;            /* MECORCH_GIT_TOKEN (https password) */
	const char *git_username;         /* MECORCH_GIT_USERNAME, else "x-access-token" */
	const char *git_credentials; /* MECORCH_GIT_CREDENTIALS: https://user:token@host lines */
	const char *ca_bundle;       /* MECORCH_CA_BUNDLE: PEM file or directory */

	/* Untrusted plans (the API's tenant packages): when set, a local
	 * source must resolve (symlinks followed) inside this directory, and
	 * git+file:// / file:// sources are refused, so a plan cannot reach
	 * the server's own files. */
	const char *confine_dir;
} mo_source_opts;

/* Initialise libgit2 once per process.  Safe to call any number of times
 * from any thread (pthread_once).  Every entry point that reaches libgit2
 * (opening a mirror, hashing a tree, the API's package clone) calls it, so a
 * run with only local modules never pays for it (about 15 ms: libgit2 loads
 * the TLS trust store).  libgit2 is never shut down: the process exit
 * releases it. */
int mo_sources_global_init(void);

/* The source string as it may be shown: a git URL without its userinfo
 * password or token (https keeps no userinfo at all, ssh the user name), a
 * local path as given.  A git source that does not parse is shown as
 * "(unparsable git source)", never echoed.  Caller frees (mo_free). */
char *mo_source_display(const char *source);

int mo_sources_open(mo_sources **out, const mo_source_opts *opts);
void mo_sources_free(mo_sources *s);

/* Resolve `source` (with an optional version constraint) to a directory.
 * *dir: absolute path of the module root; *pinned: the exact source as
 * resolved (a local path, or url with the commit), stored in the state so a
 * removed module can still be loaded to destroy its resources; both are the
 * caller's (mo_free).  A pinned string given back as `source` resolves to
 * the same tree, in LOCKED mode too (from the lock or the cache).  Errors
 * name the source; credentials never appear in *pinned nor in errors.
 * In LOCKED mode a git source missing from the lock fails with MO_ESOURCE
 * "module source '<src>' is not in mecorch.lock: run `mecorch init`". */
int mo_sources_resolve(mo_sources *s, const char *source, const char *version, char **dir,
		       char **pinned);

/* INIT / UPGRADE: write the lock file (atomically) if it changed.  The new
 * lock holds exactly the git sources resolved through this handle.  LOCKED:
 * no-op. */
int mo_sources_commit(mo_sources *s);

/*
 * Semantic versions and constraints, as used for tags.
 */
typedef struct {
	uint64_t major, minor, patch;
	char pre[64]; /* pre-release without the '-', "" for a release */
} mo_semver;

/* Parse "1.2.3", "v1.2.3", "1.2.3-rc.1", "1.2.3+build" (build metadata is
 * ignored).  0 or MO_EINVAL (no error detail set: callers try many tags). */
int mo_semver_parse(mo_semver *out, const char *s);
/* <0, 0, >0 by semver precedence. */
int mo_semver_cmp(const mo_semver *a, const mo_semver *b);

typedef struct mo_constraint mo_constraint;
/* Parse comma-separated clauses: "~> 1.2", ">= 1.0, < 2.0", "= 1.2.3",
 * "1.2.3", "!= 1.3.0".  `~> 1.2` means >= 1.2, < 2.0; `~> 1.2.3` means
 * >= 1.2.3, < 1.3.  MO_EINVAL with detail on a bad constraint. */
int mo_constraint_parse(mo_constraint **out, const char *s);
/* 1 if v satisfies every clause.  A pre-release satisfies a constraint only
 * if an "=" clause names it exactly. */
int mo_constraint_match(const mo_constraint *c, const mo_semver *v);
/* The constraint in normal form ("~> 1.2, != 1.3.0"); owned by c. */
const char *mo_constraint_string(const mo_constraint *c);
void mo_constraint_free(mo_constraint *c);

#endif
