/*
 * source_auth.c - credentials and host-key checks for git fetches: the
 * libgit2 credential and certificate callbacks, a known_hosts reader and a
 * git-credentials-store reader.
 *
 * ssh: one key (MECORCH_SSH_KEY, else ~/.ssh/id_ed25519), offered once; if
 * libgit2 asks again the key was rejected and the fetch stops with
 * "authentication failed for ssh://...: key rejected" instead of retrying
 * until the server hangs up.  The host key must be in known_hosts
 * (MECORCH_SSH_KNOWN_HOSTS, else ~/.ssh/known_hosts: plain or hashed
 * "|1|" host names, "[host]:port" for other ports, @revoked honoured,
 * @cert-authority lines ignored) or match MECORCH_SSH_HOST_FINGERPRINT
 * ("SHA256:<base64>", which then decides alone).  An unknown host is
 * refused: there is no trust on first use.
 *
 * https: user/password from the source url, else the first matching line
 * of the credentials file (MECORCH_GIT_CREDENTIALS, lines as git's store
 * writes them: https://user:token@host[:port][/path]), else
 * MECORCH_GIT_TOKEN with MECORCH_GIT_USERNAME (default "x-access-token").
 * Sent once, only over https, in an Authorization header with the first
 * request (no 401 round trip: libgit2 1.5 mis-parses the response that
 * follows a 401 carrying a body), redirects then not followed; the
 * credential callback only reports a rejection or their absence.  TLS
 * trust is libgit2's, with MECORCH_CA_BUNDLE as the trust store when set
 * (see source_git.c).
 *
 * Secrets are never copied into error messages.
 */
#include "source_int.h"
#include "common.h"

#include <ctype.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

/* Total credential requests per fetch; a second request of one kind means
 * the first answer was rejected, so this only bounds odd servers. */
#define MO_GIT_MAX_CREDENTIAL_CALLS 4

/* ------------------------------------------------------------------ */
/* Options                                                             */

static char *home_file(const char *rel)
{
	const char *h = getenv("HOME");
	if (!h || !*h) {
		struct passwd *pw = getpwuid(getuid());
		h = pw ? pw->pw_dir : NULL;
	}
	return h ? mo_sprintf("%s/%s", h, rel) : NULL;
}

/* *dst from the option, else the environment variable, else ~/fallback.
 * An option given as "" disables the setting (and its fallback). */
static int pick(char **dst, const char *opt, const char *env, const char *fallback)
{
	const char *v = opt ? opt : getenv(env);
	*dst = NULL;
	if (v && *v)
		*dst = mo_strdup(v);
	else if (!opt && fallback)
		*dst = home_file(fallback);
	else
		return 0;
	return *dst ? 0 : MO_ENOMEM;
}

int mo_git_auth_init(mo_git_auth *a, const mo_source_opts *o)
{
	memset(a, 0, sizeof(*a));
	if (pick(&a->ssh_key, o->ssh_key, "MECORCH_SSH_KEY", ".ssh/id_ed25519") < 0 ||
	    pick(&a->ssh_key_passphrase, o->ssh_key_passphrase, "MECORCH_SSH_KEY_PASSPHRASE",
		 NULL) < 0 ||
	    pick(&a->ssh_known_hosts, o->ssh_known_hosts, "MECORCH_SSH_KNOWN_HOSTS",
		 ".ssh/known_hosts") < 0 ||
	    pick(&a->ssh_host_fingerprint, o->ssh_host_fingerprint, "MECORCH_SSH_HOST_FINGERPRINT",
		 NULL) < 0 ||
	    pick(&a->git_token, o->git_token, "MECORCH_GIT_TOKEN", NULL) < 0 ||
	    pick(&a->git_username, o->git_username, "MECORCH_GIT_USERNAME", NULL) < 0 ||
	    pick(&a->git_credentials, o->git_credentials, "MECORCH_GIT_CREDENTIALS", NULL) < 0 ||
	    pick(&a->ca_bundle, o->ca_bundle, "MECORCH_CA_BUNDLE", NULL) < 0) {
		mo_git_auth_free(a);
		return mo_error_set(MO_ENOMEM, "out of memory");
	}
	return 0;
}

static void free_secret(char *s)
{
	if (s) {
		memset(s, 0, strlen(s));
		mo_free(s);
	}
}

void mo_git_auth_free(mo_git_auth *a)
{
	mo_free(a->ssh_key);
	free_secret(a->ssh_key_passphrase);
	mo_free(a->ssh_known_hosts);
	mo_free(a->ssh_host_fingerprint);
	free_secret(a->git_token);
	mo_free(a->git_username);
	mo_free(a->git_credentials);
	mo_free(a->ca_bundle);
	memset(a, 0, sizeof(*a));
}

/* ------------------------------------------------------------------ */
/* base64                                                              */

static const char b64chars[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* Encode without '=' padding, as ssh prints fingerprints. */
static void b64_encode(const unsigned char *in, size_t n, char *out)
{
	size_t i = 0;
	for (; i + 2 < n; i += 3) {
		*out++ = b64chars[in[i] >> 2];
		*out++ = b64chars[((in[i] & 3) << 4) | (in[i + 1] >> 4)];
		*out++ = b64chars[((in[i + 1] & 15) << 2) | (in[i + 2] >> 6)];
		*out++ = b64chars[in[i + 2] & 63];
	}
	if (n - i == 1) {
		*out++ = b64chars[in[i] >> 2];
		*out++ = b64chars[(in[i] & 3) << 4];
	} else if (n - i == 2) {
		*out++ = b64chars[in[i] >> 2];
		*out++ = b64chars[((in[i] & 3) << 4) | (in[i + 1] >> 4)];
		*out++ = b64chars[(in[i + 1] & 15) << 2];
	}
	*out = '\0';
}

/* Decode n chars (padding optional) into out (at least n*3/4 bytes);
 * returns the length or -1. */
static long b64_decode(const char *in, size_t n, unsigned char *out)
{
	unsigned acc = 0;
	int bits = 0;
	long len = 0;
	for (size_t i = 0; i < n; i++) {
		const char *p;
		if (in[i] == '=')
			break;
		if (!(p = strchr(b64chars, in[i])) || !in[i])
			return -1;
		acc = (acc << 6) | (unsigned)(p - b64chars);
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			out[len++] = (unsigned char)(acc >> bits);
		}
	}
	return len;
}

/* ------------------------------------------------------------------ */
/* known_hosts                                                         */

enum {
	KH_UNKNOWN,
	KH_MATCH,
	KH_MISMATCH,
	KH_REVOKED
};

/* OpenSSH's host pattern match: '*' and '?' wildcards, case-insensitive,
 * everything else literal ("[127.0.0.1]:2222" included). */
static int glob_match(const char *pat, const char *s)
{
	for (; *pat; pat++, s++) {
		if (*pat == '*') {
			while (pat[1] == '*')
				pat++;
			if (!pat[1])
				return 1;
			for (; *s; s++)
				if (glob_match(pat + 1, s))
					return 1;
			return 0;
		}
		if (!*s ||
		    (*pat != '?' && tolower((unsigned char)*pat) != tolower((unsigned char)*s)))
			return 0;
	}
	return *s == '\0';
}

/* One known_hosts host pattern against `name`: plain (with wildcards) or
 * hashed "|1|salt|hmac". */
static int host_pattern_matches(const char *pat, size_t n, const char *name)
{
	char buf[512];
	if (n >= sizeof(buf))
		return 0;
	memcpy(buf, pat, n);
	buf[n] = '\0';
	if (!strncmp(buf, "|1|", 3)) {
		unsigned char salt[128], want[128], got[EVP_MAX_MD_SIZE];
		unsigned int glen = 0;
		char *bar = strchr(buf + 3, '|');
		long sl, wl;
		if (!bar)
			return 0;
		sl = b64_decode(buf + 3, (size_t)(bar - buf - 3), salt);
		wl = b64_decode(bar + 1, strlen(bar + 1), want);
		if (sl <= 0 || wl != 20 ||
		    !HMAC(EVP_sha1(), salt, (int)sl, (const unsigned char *)name, strlen(name), got,
			  &glen))
			return 0;
		return glen == 20 && !memcmp(got, want, 20);
	}
	return glob_match(buf, name);
}

static int host_list_matches(const char *list, size_t n, const char *name)
{
	size_t i = 0;
	int matched = 0;
	while (i < n) {
		size_t j = i;
		int neg;
		while (j < n && list[j] != ',')
			j++;
		neg = list[i] == '!';
		if (j > i + (size_t)neg &&
		    host_pattern_matches(list + i + neg, j - i - (size_t)neg, name)) {
			if (neg)
				return 0;
			matched = 1;
		}
		i = j + 1;
	}
	return matched;
}

/* The key type name at the start of an ssh wire-format key blob. */
static size_t blob_type(const unsigned char *k, size_t len, const unsigned char **type)
{
	size_t tl;
	if (len < 4)
		return 0;
	tl = ((size_t)k[0] << 24) | ((size_t)k[1] << 16) | ((size_t)k[2] << 8) | k[3];
	if (tl > len - 4)
		return 0;
	*type = k + 4;
	return tl;
}

static const char *next_field(const char **p, size_t *len)
{
	const char *s = *p, *start;
	while (*s == ' ' || *s == '\t')
		s++;
	start = s;
	while (*s && *s != ' ' && *s != '\t' && *s != '\n' && *s != '\r')
		s++;
	*len = (size_t)(s - start);
	*p = s;
	return *len ? start : NULL;
}

/* Look `name` and `key` up in known_hosts `text` (read before the fetch, so
 * this runs inside the libgit2 callback without allocating). */
static int known_hosts_check(const char *text, const char *name, const unsigned char *key,
			     size_t keylen, int *line_out)
{
	const unsigned char *ktype = NULL;
	size_t ktlen = blob_type(key, keylen, &ktype);
	int lineno = 0, revoked = 0, match = 0, mismatch = 0;
	const char *line = text;

	while (line && *line) {
		const char *p = line, *hosts, *type, *b64, *nl = strchr(line, '\n');
		unsigned char blob[4096];
		size_t hl, tl, bl;
		int is_revoked = 0;
		long blen;

		lineno++;
		line = nl ? nl + 1 : NULL;
		while (*p == ' ' || *p == '\t')
			p++;
		if (!*p || *p == '#' || *p == '\r' || *p == '\n')
			continue;
		if (*p == '@') {
			size_t ml;
			const char *m = next_field(&p, &ml);
			if (ml == 8 && !strncmp(m, "@revoked", 8))
				is_revoked = 1;
			else
				continue; /* @cert-authority: certificates are not supported */
		}
		if (!(hosts = next_field(&p, &hl)) || !(type = next_field(&p, &tl)) ||
		    !(b64 = next_field(&p, &bl)) || bl / 4 * 3 + 3 > sizeof(blob))
			continue;
		if (!host_list_matches(hosts, hl, name))
			continue;
		blen = b64_decode(b64, bl, blob);
		if (blen > 0 && (size_t)blen == keylen && !memcmp(blob, key, keylen)) {
			if (is_revoked)
				revoked = lineno;
			else if (!match)
				match = lineno;
		} else if (!is_revoked && ktlen && tl == ktlen && !memcmp(type, ktype, tl) &&
			   !mismatch) {
			mismatch = lineno;
		}
	}
	if (revoked) {
		*line_out = revoked;
		return KH_REVOKED;
	}
	if (match) {
		*line_out = match;
		return KH_MATCH;
	}
	if (mismatch) {
		*line_out = mismatch;
		return KH_MISMATCH;
	}
	return KH_UNKNOWN;
}

static int refuse_hostkey(mo_git_fetch_ctx *ctx)
{
	ctx->hostkey_refused = 1;
	git_error_set_str(GIT_ERROR_SSH, ctx->detail);
	return GIT_ECERTIFICATE;
}

static int check_hostkey(mo_git_fetch_ctx *ctx, const git_cert_hostkey *hk, const char *host)
{
	const mo_git_auth *a = ctx->auth;
	char fp[64] = "unknown", name[300];
	int line = 0;

	if (ctx->src->port == 22)
		snprintf(name, sizeof(name), "%s", host);
	else
		snprintf(name, sizeof(name), "[%s]:%d", host, ctx->src->port);
	if (hk->type & GIT_CERT_SSH_SHA256)
		b64_encode(hk->hash_sha256, 32, fp);

	if (a->ssh_host_fingerprint) {
		const char *want = a->ssh_host_fingerprint;
		size_t wl;
		if (!strncmp(want, "SHA256:", 7))
			want += 7;
		wl = strlen(want);
		while (wl && want[wl - 1] == '=')
			wl--;
		if ((hk->type & GIT_CERT_SSH_SHA256) && strlen(fp) == wl && !strncmp(fp, want, wl))
			return 0;
		snprintf(ctx->detail, sizeof(ctx->detail),
			 "host key of %s (SHA256:%s) does not match the pinned fingerprint "
			 "MECORCH_SSH_HOST_FINGERPRINT=SHA256:%.*s; refusing to connect to %s",
			 name, fp, (int)(wl < 64 ? wl : 64), want, ctx->src->url);
		return refuse_hostkey(ctx);
	}
	if (!(hk->type & GIT_CERT_SSH_RAW)) {
		snprintf(ctx->detail, sizeof(ctx->detail),
			 "host key of %s is not available to check: refusing to connect to %s",
			 name, ctx->src->url);
		return refuse_hostkey(ctx);
	}
	switch (known_hosts_check(ctx->known_hosts_text, name, (const unsigned char *)hk->hostkey,
				  hk->hostkey_len, &line)) {
	case KH_MATCH:
		return 0;
	case KH_REVOKED:
		snprintf(ctx->detail, sizeof(ctx->detail),
			 "host key of %s (SHA256:%s) is marked @revoked in %s (line %d): refusing "
			 "to connect to %s",
			 name, fp, a->ssh_known_hosts, line, ctx->src->url);
		break;
	case KH_MISMATCH:
		snprintf(ctx->detail, sizeof(ctx->detail),
			 "host key of %s (SHA256:%s) differs from the one in %s (line %d), "
			 "possibly a man-in-the-middle attack: refusing to connect to %s",
			 name, fp, a->ssh_known_hosts, line, ctx->src->url);
		break;
	default:
		snprintf(ctx->detail, sizeof(ctx->detail),
			 "unknown ssh host %s (key SHA256:%s is not in %s): add it to known_hosts "
			 "or set MECORCH_SSH_HOST_FINGERPRINT; refusing to connect to %s",
			 name, fp,
			 a->ssh_known_hosts ? a->ssh_known_hosts : "(no known_hosts file)",
			 ctx->src->url);
	}
	return refuse_hostkey(ctx);
}

int mo_git_certificate_cb(git_cert *cert, int valid, const char *host, void *payload)
{
	mo_git_fetch_ctx *ctx = payload;
	if (cert->cert_type == GIT_CERT_HOSTKEY_LIBSSH2)
		return check_hostkey(ctx, (const git_cert_hostkey *)cert, host);
	if (cert->cert_type == GIT_CERT_X509 && !valid)
		ctx->tls_untrusted = 1;
	return GIT_PASSTHROUGH; /* TLS: libgit2's verdict against the trust store */
}

/* ------------------------------------------------------------------ */
/* Credentials                                                         */

static const char *local_user(void)
{
	struct passwd *pw = getpwuid(getuid());
	const char *u = getenv("USER");
	if (pw && pw->pw_name)
		return pw->pw_name;
	return u && *u ? u : "git";
}

/* The first line of the credentials file whose scheme, host and port match
 * the source (and whose path, if any, prefixes the url's path). */
static int credentials_file_lookup(const char *file, const mo_git_source *src, char **user,
				   char **pass)
{
	char *text = NULL, *line, *save = NULL;
	const char *src_path = strchr(src->url + strlen("https://"), '/');
	size_t len = 0;
	int found = 0;

	if (!file || mo_file_read(&text, &len, file) < 0) {
		mo_error_clear();
		return 0;
	}
	for (line = strtok_r(text, "\n", &save); line && !found;
	     line = strtok_r(NULL, "\n", &save)) {
		char *p = line, *at, *slash, *colon, *hp, *end;
		size_t hlen;
		int port = 443;
		while (isspace((unsigned char)*p))
			p++;
		end = p + strlen(p);
		while (end > p && isspace((unsigned char)end[-1]))
			*--end = '\0';
		if (strncmp(p, "https://", 8))
			continue;
		p += 8;
		slash = strchr(p, '/');
		if (!slash)
			slash = end;
		at = NULL;
		for (char *q = p; q < slash; q++)
			if (*q == '@')
				at = q;
		if (!at)
			continue;
		hp = at + 1;
		hlen = (size_t)(slash - hp);
		colon = hp[0] == '[' ? strstr(hp, "]:") : memchr(hp, ':', hlen);
		if (colon && colon < slash) {
			if (hp[0] == '[')
				colon++;
			port = atoi(colon + 1);
			hlen = (size_t)(colon - hp);
		}
		if (hp[0] == '[' && hlen >= 2 && hp[hlen - 1] == ']') {
			hp++;
			hlen -= 2;
		}
		if (port != src->port || strlen(src->host) != hlen ||
		    strncasecmp(hp, src->host, hlen))
			continue;
		if (*slash == '/' && slash[1] &&
		    (!src_path || strncmp(src_path, slash, strlen(slash))))
			continue;
		colon = memchr(p, ':', (size_t)(at - p));
		if (!colon)
			continue;
		*user = mo_pct_decode(p, (size_t)(colon - p));
		*pass = mo_pct_decode(colon + 1, (size_t)(at - colon - 1));
		if (!*user || !*pass) {
			mo_free(*user);
			free_secret(*pass);
			*user = *pass = NULL;
			continue;
		}
		found = 1;
	}
	memset(text, 0, len);
	mo_free(text);
	return found;
}

static int give_up(mo_git_fetch_ctx *ctx, int rejected, const char *fmt, const char *arg)
{
	if (rejected)
		ctx->auth_rejected = 1;
	else
		ctx->no_credentials = 1;
	snprintf(ctx->detail, sizeof(ctx->detail), fmt, arg);
	git_error_set_str(GIT_ERROR_NET, ctx->detail);
	return GIT_EAUTH;
}

/* The https user and password for src: from the url, else the
 * credentials file, else the token.  0 with both set, MO_ENOTFOUND, or
 * MO_ENOMEM. */
static int https_credentials(const mo_git_source *src, const mo_git_auth *a, char **user,
			     char **pass)
{
	*user = *pass = NULL;
	if (src->url_user) {
		*user = mo_strdup(src->url_user);
		*pass = mo_strdup(src->url_pass ? src->url_pass : a->git_token ? a->git_token : "");
	} else if (!credentials_file_lookup(a->git_credentials, src, user, pass)) {
		if (!a->git_token)
			return MO_ENOTFOUND;
		*user = mo_strdup(a->git_username ? a->git_username : "x-access-token");
		*pass = mo_strdup(a->git_token);
	}
	if (!*user || !*pass) {
		mo_free(*user);
		free_secret(*pass);
		*user = *pass = NULL;
		return MO_ENOMEM;
	}
	return 0;
}

/* "Authorization: Basic ..." for an https source with credentials, else
 * *out = NULL. */
static int https_auth_header(char **out, const mo_git_source *src, const mo_git_auth *a)
{
	char *user = NULL, *pass = NULL, *plain = NULL, *b64 = NULL;
	size_t n;
	int rc;

	*out = NULL;
	if ((rc = https_credentials(src, a, &user, &pass)) < 0)
		return rc == MO_ENOTFOUND ? 0 : mo_error_set(MO_ENOMEM, "out of memory");
	plain = mo_sprintf("%s:%s", user, pass);
	n = plain ? strlen(plain) : 0;
	b64 = plain ? mo_malloc((n + 2) / 3 * 4 + 3) : NULL;
	if (b64) {
		b64_encode((const unsigned char *)plain, n, b64);
		while (strlen(b64) % 4)
			strcat(b64, "=");
		*out = mo_sprintf("Authorization: Basic %s", b64);
	}
	rc = *out ? 0 : mo_error_set(MO_ENOMEM, "out of memory");
	mo_free(user);
	free_secret(pass);
	free_secret(plain);
	free_secret(b64);
	return rc;
}

int mo_git_fetch_ctx_init(mo_git_fetch_ctx *ctx, const mo_git_source *src, const mo_git_auth *a)
{
	int rc = 0;
	memset(ctx, 0, sizeof(*ctx));
	ctx->src = src;
	ctx->auth = a;
	if (src->scheme == MO_GIT_HTTPS) {
		rc = https_auth_header(&ctx->authz, src, a);
	} else if (src->scheme == MO_GIT_SSH) {
		if (a->ssh_known_hosts &&
		    mo_file_read(&ctx->known_hosts_text, NULL, a->ssh_known_hosts) < 0) {
			mo_error_clear(); /* no file: every host is unknown */
			ctx->known_hosts_text = NULL;
		}
		if (a->ssh_key) {
			if (!(ctx->ssh_pubkey = mo_sprintf("%s.pub", a->ssh_key)))
				rc = mo_error_set(MO_ENOMEM, "out of memory");
			else if (access(ctx->ssh_pubkey, R_OK) < 0) {
				mo_free(ctx->ssh_pubkey);
				ctx->ssh_pubkey = NULL; /* libssh2 derives it from the key */
			}
		}
	}
	if (rc < 0)
		mo_git_fetch_ctx_clear(ctx);
	return rc;
}

void mo_git_fetch_ctx_clear(mo_git_fetch_ctx *ctx)
{
	free_secret(ctx->authz);
	mo_free(ctx->known_hosts_text);
	mo_free(ctx->ssh_pubkey);
	ctx->authz = ctx->known_hosts_text = ctx->ssh_pubkey = NULL;
}

int mo_git_credentials_cb(git_credential **out, const char *url, const char *username_from_url,
			  unsigned int allowed_types, void *payload)
{
	mo_git_fetch_ctx *ctx = payload;
	const mo_git_auth *a = ctx->auth;
	(void)url; /* may carry what the server redirected to; we use ours */

	if (++ctx->calls > MO_GIT_MAX_CREDENTIAL_CALLS)
		return give_up(ctx, 1, "%s",
			       "credentials rejected (gave up after repeated requests)");

	if (ctx->src->scheme == MO_GIT_SSH) {
		const char *user = username_from_url && *username_from_url ? username_from_url :
									     local_user();
		if (allowed_types & GIT_CREDENTIAL_SSH_KEY) {
			if (ctx->key_tries++ > 0)
				return give_up(ctx, 1, "key rejected (%s)", a->ssh_key);
			if (!a->ssh_key || access(a->ssh_key, R_OK) < 0)
				return give_up(ctx, 0,
					       "no readable ssh key at %s (set MECORCH_SSH_KEY)",
					       a->ssh_key ? a->ssh_key : "~/.ssh/id_ed25519");
			return git_credential_ssh_key_new(out, user, ctx->ssh_pubkey, a->ssh_key,
							  a->ssh_key_passphrase);
		}
		if (allowed_types & GIT_CREDENTIAL_USERNAME)
			return git_credential_username_new(out, user);
		return give_up(ctx, 0, "%s", "the server offers no public-key authentication");
	}

	if (ctx->src->scheme == MO_GIT_HTTPS &&
	    (allowed_types & GIT_CREDENTIAL_USERPASS_PLAINTEXT)) {
		/* Credentials we have went out with the first request, in
		 * the Authorization header: being asked means they were
		 * refused, or that there are none. */
		if (ctx->authz)
			return give_up(ctx, 1, "%s", "credentials rejected");
		return give_up(ctx, 0, "%s",
			       "no credentials (set MECORCH_GIT_TOKEN or MECORCH_GIT_CREDENTIALS)");
	}
	return give_up(ctx, 0, "%s", "no supported authentication method");
}
