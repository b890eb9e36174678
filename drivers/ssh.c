/*
 * ssh.c - the SSH driver (ssh.h): command execution and SFTP file transfer
 * with libssh, on the runtime's worker pool, and its Lua binding ctx.ssh.
 *
 * Threads.  Lua-facing code runs on the loop thread: it validates the call,
 * copies what the work needs into an ssh_op, finds or adds the connection
 * entry in the run's cache and submits the op to the pool keyed by that
 * entry, so one libssh session is only ever used by one worker at a time
 * while other sessions run in parallel.  The worker connects when the
 * entry has no session yet (checking the host key before authenticating),
 * does the work and leaves the result in the op; the pool then posts
 * op_done() to the loop thread, which pushes the result on the task's
 * thread and wakes the task.  The continuation returns the result or
 * raises the error in the module's code.  Fields of a connection entry
 * other than its identity are touched by workers only (under its key);
 * the cache list and the op list by the loop thread only.
 *
 * Lifetime.  Each waiting call is guarded, as in the HTTP binding, by an
 * anchor userdata in the registry keyed by the task's thread; its
 * finalizer marks the op cancelled, so closing the sandbox (or
 * mo_ssh_cancel_task()) makes the completion a no-op that only frees the
 * op.  The run state (rt->ssh) owns the pool, the cache and every op not
 * yet completed; mo_rt_release() joins the workers and frees all of it.
 */
#include "ssh.h"
#include "common.h"
#include "drivers.h"
#include "loop.h"
#include "pool.h"
#include "runtime.h"
#include "sandbox.h"

#include <errno.h>
#include <fcntl.h>
#include <lauxlib.h>
#include <libssh/callbacks.h>
#include <libssh/libssh.h>
#include <libssh/sftp.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define SSH_DEFAULT_TIMEOUT_MS 300000L
#define SSH_MAX_TIMEOUT_MS     (24L * 3600 * 1000)
#define SSH_DEFAULT_THREADS    8
#define SSH_MAX_THREADS        64
#define SSH_MAX_OUTPUT         (64u << 20) /* bytes of stdout, stderr or a file read back */
#define SSH_CHUNK              32768
#define CMD_EXCERPT            160 /* bytes of a command quoted in an error */

/* ======================================================================
 * Run state: connection cache and ops
 * ====================================================================== */

typedef struct ssh_conn {
	/* identity; set at creation, read-only afterwards */
	char *host;
	int port;
	char *user;
	unsigned char keyid[32]; /* SHA-256 of the key text or key file name */
	/* the worker holding this entry's pool key only */
	ssh_session s;
	sftp_session sftp;
	char server_fp[128]; /* "SHA256:..." of the key the server presented */
	struct ssh_conn *next;
} ssh_conn;

typedef struct ssh_state ssh_state;

enum {
	OP_EXEC,
	OP_PUT,
	OP_GET
};
static const char *const op_names[] = { "exec", "put", "get" };

typedef struct ssh_op {
	int kind;
	ssh_conn *conn;
	/* the request (owned copies; key_text is wiped when freed) */
	char *key_text, *key_file;
	char *pin, *known_hosts;
	char *command;
	char *input; /* exec: stdin; put: content */
	size_t input_len;
	int has_input;
	char *path;
	int mode;
	long timeout_ms;
	/* the result, written by the worker */
	int failed;    /* raise `error` in the module */
	int not_found; /* get: no such file (returned, not raised) */
	char *error;
	int connected; /* this op opened the session */
	int status;
	char signal[32];
	mo_buf out, err; /* exec: stdout, stderr; get: the content */
	unsigned long rmode;
	uint64_t rsize;
	/* loop thread */
	ssh_state *st;
	mo_rt *rt;
	mo_task *task;
	lua_State *thread, *main;
	struct ssh_anchor *anchor;
	int cancelled;
	struct ssh_op *prev, *next;
} ssh_op;

struct ssh_state {
	mo_pool *pool;
	ssh_conn *conns;
	ssh_op *ops; /* submitted, completion not yet delivered */
};

typedef struct ssh_anchor {
	ssh_op *op;
} ssh_anchor;

static pthread_once_t lib_once = PTHREAD_ONCE_INIT;
static int lib_rc;

static void lib_init(void)
{
	lib_rc = ssh_init();
}

static void conn_close(ssh_conn *c)
{
	if (c->sftp) {
		sftp_free(c->sftp);
		c->sftp = NULL;
	}
	if (c->s) {
		ssh_disconnect(c->s);
		ssh_free(c->s);
		c->s = NULL;
	}
	c->server_fp[0] = '\0';
}

static void wipe_free(char *s)
{
	if (s) {
		OPENSSL_cleanse(s, strlen(s));
		mo_free(s);
	}
}

static void op_free(ssh_op *op)
{
	if (!op)
		return;
	wipe_free(op->key_text);
	mo_free(op->key_file);
	mo_free(op->pin);
	mo_free(op->known_hosts);
	mo_free(op->command);
	if (op->input) {
		OPENSSL_cleanse(op->input, op->input_len);
		mo_free(op->input);
	}
	mo_free(op->path);
	mo_free(op->error);
	mo_buf_free(&op->out);
	mo_buf_free(&op->err);
	mo_free(op);
}

/* mo_rt.ssh_free: join the workers, then free what they leave. */
static void state_free(void *ud)
{
	ssh_state *st = ud;
	ssh_op *op, *next_op;
	ssh_conn *c, *next_c;

	if (!st)
		return;
	mo_pool_free(st->pool);
	for (op = st->ops; op; op = next_op) {
		next_op = op->next;
		if (op->anchor)
			op->anchor->op = NULL;
		op_free(op);
	}
	for (c = st->conns; c; c = next_c) {
		next_c = c->next;
		conn_close(c);
		mo_free(c->host);
		mo_free(c->user);
		mo_free(c);
	}
	mo_free(st);
}

/* The run's SSH state, created on first use.  Sets mo_error on failure. */
static int state_get(ssh_state **out, mo_rt *rt)
{
	ssh_state *st;
	const char *env = getenv("MECORCH_SSH_THREADS");
	long n = SSH_DEFAULT_THREADS;
	int rc;

	if (rt->ssh) {
		*out = rt->ssh;
		return 0;
	}
	pthread_once(&lib_once, lib_init);
	if (lib_rc != SSH_OK)
		return mo_error_set(MO_ERROR, "cannot initialise libssh");
	if (env && *env) {
		char *end;
		n = strtol(env, &end, 10);
		if (*end || n < 1 || n > SSH_MAX_THREADS)
			return mo_error_set(MO_EINVAL,
					    "MECORCH_SSH_THREADS must be 1 to %d, not '%s'",
					    SSH_MAX_THREADS, env);
	}
	if (!(st = mo_calloc(1, sizeof(*st))))
		return mo_error_set(MO_ENOMEM, "out of memory");
	if ((rc = mo_pool_new(&st->pool, rt->loop, (int)n)) < 0) {
		mo_free(st);
		return rc;
	}
	rt->ssh = st;
	rt->ssh_free = state_free;
	*out = st;
	return 0;
}

static void key_identity(unsigned char out[32], const char *key_text, const char *key_file)
{
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	unsigned int n = 0;
	memset(out, 0, 32);
	if (!md)
		return;
	if (EVP_DigestInit_ex(md, EVP_sha256(), NULL)) {
		EVP_DigestUpdate(md, key_text ? "text\n" : "file\n", 5);
		if (key_text)
			EVP_DigestUpdate(md, key_text, strlen(key_text));
		else
			EVP_DigestUpdate(md, key_file, strlen(key_file));
		EVP_DigestFinal_ex(md, out, &n);
	}
	EVP_MD_CTX_free(md);
}

/* The cache entry for op's (host, port, user, key), added if missing.
 * Loop thread. */
static int conn_find(ssh_conn **out, ssh_state *st, const char *host, int port, const char *user,
		     const unsigned char keyid[32])
{
	ssh_conn *c;
	for (c = st->conns; c; c = c->next)
		if (c->port == port && strcmp(c->host, host) == 0 && strcmp(c->user, user) == 0 &&
		    memcmp(c->keyid, keyid, 32) == 0) {
			*out = c;
			return 0;
		}
	if (!(c = mo_calloc(1, sizeof(*c))) || !(c->host = mo_strdup(host)) ||
	    !(c->user = mo_strdup(user))) {
		if (c) {
			mo_free(c->host);
			mo_free(c);
		}
		return mo_error_set(MO_ENOMEM, "out of memory");
	}
	c->port = port;
	memcpy(c->keyid, keyid, 32);
	c->next = st->conns;
	st->conns = c;
	*out = c;
	return 0;
}

/* ======================================================================
 * Worker side
 * ====================================================================== */

/* Record the failure of op: "user@host:port: <msg>[ (command: ...)]". */
static void op_fail(ssh_op *op, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void op_fail(ssh_op *op, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;
	ssh_conn *c = op->conn;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	mo_free(op->error);
	op->failed = 1;
	if (op->kind == OP_EXEC) {
		/* the first line, at most CMD_EXCERPT bytes */
		size_t n = strcspn(op->command, "\n");
		int more = op->command[n] != '\0' || n > CMD_EXCERPT;
		op->error = mo_sprintf("ctx.ssh.exec: %s@%s:%d: %s (command: %.*s%s)", c->user,
				       c->host, c->port, msg,
				       (int)(n > CMD_EXCERPT ? CMD_EXCERPT : n), op->command,
				       more ? "..." : "");
	} else {
		op->error = mo_sprintf("ctx.ssh.%s: %s@%s:%d: %s (path: %s)", op_names[op->kind],
				       c->user, c->host, c->port, msg, op->path);
	}
}

static int64_t remaining_ms(int64_t deadline)
{
	int64_t r = deadline - mo_now_ms();
	return r > 0 ? r : 0;
}

/* Bound libssh's blocking calls by what is left of the op's time. */
static void session_timeout(ssh_session s, int64_t deadline)
{
	int64_t ms = remaining_ms(deadline);
	long sec, usec;
	if (ms < 1)
		ms = 1;
	sec = (long)(ms / 1000);
	usec = (long)(ms % 1000) * 1000;
	ssh_options_set(s, SSH_OPTIONS_TIMEOUT, &sec);
	ssh_options_set(s, SSH_OPTIONS_TIMEOUT_USEC, &usec);
}

/* "SHA256:<base64 without padding>" of a public key into out. */
static int key_fingerprint(char *out, size_t outsz, ssh_key key)
{
	unsigned char *hash = NULL;
	size_t hlen = 0;
	char *fp;
	if (ssh_get_publickey_hash(key, SSH_PUBLICKEY_HASH_SHA256, &hash, &hlen) < 0)
		return -1;
	fp = ssh_get_fingerprint_hash(SSH_PUBLICKEY_HASH_SHA256, hash, hlen);
	ssh_clean_pubkey_hash(&hash);
	if (!fp)
		return -1;
	snprintf(out, outsz, "%s", fp);
	ssh_string_free_char(fp);
	return 0;
}

/* Compare a pinned fingerprint with the server's: the "SHA256:" prefix and
 * base64 padding are optional in the pin; base64 is case-sensitive. */
static int pin_matches(const char *pin, const char *server_fp)
{
	size_t n;
	if (strncmp(pin, "SHA256:", 7) == 0)
		pin += 7;
	if (strncmp(server_fp, "SHA256:", 7) == 0)
		server_fp += 7;
	n = strlen(pin);
	while (n > 0 && pin[n - 1] == '=')
		n--;
	return strlen(server_fp) == n && strncmp(pin, server_fp, n) == 0;
}

/* The fingerprints known_hosts records for the host (same key type as the
 * server's key when type is not SSH_KEYTYPE_UNKNOWN), comma-separated. */
static void recorded_fingerprints(char *out, size_t outsz, const char *file, const ssh_conn *c,
				  enum ssh_keytypes_e type)
{
	FILE *f;
	char name[300], line[8192];
	size_t len = 0;

	out[0] = '\0';
	if (!file || !(f = fopen(file, "r")))
		return;
	if (c->port == 22)
		snprintf(name, sizeof(name), "%s", c->host);
	else
		snprintf(name, sizeof(name), "[%s]:%d", c->host, c->port);
	while (fgets(line, sizeof(line), f)) {
		struct ssh_knownhosts_entry *e = NULL;
		char fp[128];
		line[strcspn(line, "\r\n")] = '\0';
		if (ssh_known_hosts_parse_line(name, line, &e) != SSH_OK || !e)
			continue;
		if (e->publickey &&
		    (type == SSH_KEYTYPE_UNKNOWN || ssh_key_type(e->publickey) == type) &&
		    key_fingerprint(fp, sizeof(fp), e->publickey) == 0 &&
		    len + strlen(fp) + 3 < outsz)
			len += (size_t)snprintf(out + len, outsz - len, "%s%s", len ? ", " : "",
						fp);
		ssh_knownhosts_entry_free(e);
	}
	fclose(f);
}

/* Check the session's server key against op's pin or known_hosts.  Runs
 * after every connect and before every use of a cached session (another
 * call may expect another key).  0, or -1 with op failed. */
static int verify_host(ssh_op *op, ssh_conn *c)
{
	const char *where;
	char recorded[1024];
	ssh_key key = NULL;
	enum ssh_keytypes_e type = SSH_KEYTYPE_UNKNOWN;

	if (op->pin) {
		if (pin_matches(op->pin, c->server_fp))
			return 0;
		op_fail(op,
			"host key mismatch for %s:%d: expected %s, the server presented %s; "
			"refusing to connect",
			c->host, c->port, op->pin, c->server_fp);
		return -1;
	}
	/* NULL restores libssh's default files */
	ssh_options_set(c->s, SSH_OPTIONS_KNOWNHOSTS, op->known_hosts);
	ssh_options_set(c->s, SSH_OPTIONS_GLOBAL_KNOWNHOSTS, op->known_hosts ? "/dev/null" : NULL);
	where = op->known_hosts ? op->known_hosts : "~/.ssh/known_hosts";
	if (ssh_get_server_publickey(c->s, &key) == SSH_OK) {
		type = ssh_key_type(key);
		ssh_key_free(key);
	}
	switch (ssh_session_is_known_server(c->s)) {
	case SSH_KNOWN_HOSTS_OK:
		return 0;
	case SSH_KNOWN_HOSTS_CHANGED:
		recorded_fingerprints(recorded, sizeof(recorded), op->known_hosts, c, type);
		op_fail(op,
			"host key mismatch for %s:%d: %s records %s, the server presented %s; "
			"refusing to connect",
			c->host, c->port, where, *recorded ? recorded : "another key",
			c->server_fp);
		return -1;
	case SSH_KNOWN_HOSTS_OTHER:
		recorded_fingerprints(recorded, sizeof(recorded), op->known_hosts, c,
				      SSH_KEYTYPE_UNKNOWN);
		op_fail(op,
			"host key mismatch for %s:%d: %s records only keys of another type (%s), "
			"the server presented %s; refusing to connect",
			c->host, c->port, where, *recorded ? recorded : "unreadable", c->server_fp);
		return -1;
	case SSH_KNOWN_HOSTS_UNKNOWN:
	case SSH_KNOWN_HOSTS_NOT_FOUND:
		op_fail(op,
			"unknown host key for %s:%d: the server presented %s, which %s does not "
			"record (expected: none); refusing to connect: pin it with host_key_sha256 or "
			"add it to known_hosts",
			c->host, c->port, c->server_fp, where);
		return -1;
	case SSH_KNOWN_HOSTS_ERROR:
	default:
		op_fail(op,
			"cannot check the host key of %s:%d (server presented %s) against %s: %s",
			c->host, c->port, c->server_fp, where, ssh_get_error(c->s));
		return -1;
	}
}

/* Open, verify and authenticate c's session for op.  0, or -1 with op
 * failed and c left without a session. */
static int conn_open(ssh_op *op, ssh_conn *c, int64_t deadline)
{
	ssh_key priv = NULL, srv = NULL;
	bool no = false;
	int one = 1, rc;

	/* The key first: a bad key fails without touching the network. */
	if (op->key_text)
		rc = ssh_pki_import_privkey_base64(op->key_text, NULL, NULL, NULL, &priv);
	else
		rc = ssh_pki_import_privkey_file(op->key_file, NULL, NULL, NULL, &priv);
	if (rc != SSH_OK) {
		if (op->key_text)
			op_fail(op,
				"cannot read the private key given in `key` (not an unencrypted "
				"PEM or OpenSSH private key)");
		else
			op_fail(op,
				"cannot read the private key file %s (missing, unreadable, "
				"encrypted or not a private key)",
				op->key_file);
		return -1;
	}
	if (!(c->s = ssh_new())) {
		op_fail(op, "out of memory");
		goto fail;
	}
	ssh_options_set(c->s, SSH_OPTIONS_PROCESS_CONFIG, &no);
	ssh_options_set(c->s, SSH_OPTIONS_HOST, c->host);
	ssh_options_set(c->s, SSH_OPTIONS_PORT, &c->port);
	ssh_options_set(c->s, SSH_OPTIONS_USER, c->user);
	ssh_options_set(c->s, SSH_OPTIONS_NODELAY, &one);
	if (op->pin || op->known_hosts) {
		/* Only the given check counts; known_hosts also orders the host
		 * key algorithms, so keep the default files out of it. */
		ssh_options_set(c->s, SSH_OPTIONS_KNOWNHOSTS,
				op->known_hosts ? op->known_hosts : "/dev/null");
		ssh_options_set(c->s, SSH_OPTIONS_GLOBAL_KNOWNHOSTS, "/dev/null");
	}
	session_timeout(c->s, deadline);
	if (ssh_connect(c->s) != SSH_OK) {
		op_fail(op, "cannot connect: %s", ssh_get_error(c->s));
		goto fail;
	}
	if (ssh_get_server_publickey(c->s, &srv) != SSH_OK ||
	    key_fingerprint(c->server_fp, sizeof(c->server_fp), srv) < 0) {
		op_fail(op, "cannot read the server's host key: %s", ssh_get_error(c->s));
		goto fail;
	}
	if (verify_host(op, c) < 0)
		goto fail;
	session_timeout(c->s, deadline);
	rc = ssh_userauth_publickey(c->s, NULL, priv);
	if (rc != SSH_AUTH_SUCCESS) {
		if (rc == SSH_AUTH_ERROR)
			op_fail(op, "authentication failed: %s", ssh_get_error(c->s));
		else
			op_fail(op,
				"authentication failed: the server refused the key for user %s "
				"(publickey)",
				c->user);
		goto fail;
	}
	ssh_key_free(priv);
	ssh_key_free(srv);
	op->connected = 1;
	return 0;
fail:
	ssh_key_free(priv);
	ssh_key_free(srv);
	conn_close(c);
	return -1;
}

static void on_exit_signal(ssh_session s, ssh_channel ch, const char *sig, int core,
			   const char *errmsg, const char *lang, void *ud)
{
	ssh_op *op = ud;
	(void)s, (void)ch, (void)core, (void)errmsg, (void)lang;
	snprintf(op->signal, sizeof(op->signal), "%s", sig ? sig : "?");
}

/* Append what the channel holds for one stream.  Returns bytes read, 0
 * when nothing is buffered, -1 on error (op failed). */
static int drain(ssh_op *op, ssh_channel ch, int is_stderr, mo_buf *b)
{
	char buf[SSH_CHUNK];
	int total = 0, n;
	while ((n = ssh_channel_read_nonblocking(ch, buf, sizeof(buf), is_stderr)) > 0) {
		if (b->len + (size_t)n > SSH_MAX_OUTPUT) {
			op_fail(op, "the command's %s exceeds %u MiB",
				is_stderr ? "stderr" : "stdout", SSH_MAX_OUTPUT >> 20);
			return -1;
		}
		if (mo_buf_put(b, buf, (size_t)n) < 0) {
			op_fail(op, "out of memory");
			return -1;
		}
		total += n;
	}
	if (n == SSH_ERROR) {
		op_fail(op, "reading the command's output: %s",
			ssh_get_error(ssh_channel_get_session(ch)));
		return -1;
	}
	return total;
}

/*
 * Run op->command.  *retry is set when the failure happened before the
 * command could start and a fresh session may succeed.  *broken is set
 * when the session must not be reused.  0 or -1 (op failed).
 */
static int do_exec(ssh_op *op, ssh_conn *c, int64_t deadline, int *retry, int *broken)
{
	struct ssh_channel_callbacks_struct cb;
	ssh_channel ch = ssh_channel_new(c->s);
	size_t sent = 0;
	int eof_sent = 0, rc = -1;

	if (!ch) {
		*retry = *broken = 1;
		op_fail(op, "cannot open a channel: %s", ssh_get_error(c->s));
		return -1;
	}
	memset(&cb, 0, sizeof(cb));
	ssh_callbacks_init(&cb);
	cb.userdata = op;
	cb.channel_exit_signal_function = on_exit_signal;
	ssh_set_channel_callbacks(ch, &cb);
	session_timeout(c->s, deadline);
	if (ssh_channel_open_session(ch) != SSH_OK) {
		*retry = *broken = 1;
		op_fail(op, "cannot open a session channel: %s", ssh_get_error(c->s));
		goto done;
	}
	if (ssh_channel_request_exec(ch, op->command) != SSH_OK) {
		*broken = !ssh_is_connected(c->s);
		op_fail(op, "the server refused to run the command: %s", ssh_get_error(c->s));
		goto done;
	}
	for (;;) {
		int got_out, got_err;
		int64_t left;
		/* stdin, as far as the window allows, so that a command that
		 * writes while it reads never deadlocks with us */
		while (op->has_input && sent < op->input_len) {
			uint32_t w = ssh_channel_window_size(ch);
			size_t n = op->input_len - sent;
			int wr;
			if (w == 0)
				break;
			if (n > w)
				n = w;
			if (n > SSH_CHUNK)
				n = SSH_CHUNK;
			wr = ssh_channel_write(ch, op->input + sent, (uint32_t)n);
			if (wr == SSH_ERROR) {
				*broken = !ssh_is_connected(c->s);
				if (*broken) {
					op_fail(op, "writing stdin: %s", ssh_get_error(c->s));
					goto done;
				}
				/* the command closed its stdin: drop the rest */
				sent = op->input_len;
				break;
			}
			sent += (size_t)wr;
		}
		if (!eof_sent && (!op->has_input || sent == op->input_len)) {
			ssh_channel_send_eof(ch);
			eof_sent = 1;
		}
		if ((got_out = drain(op, ch, 0, &op->out)) < 0 ||
		    (got_err = drain(op, ch, 1, &op->err)) < 0) {
			*broken = 1;
			goto done;
		}
		if (ssh_channel_is_eof(ch) || !ssh_channel_is_open(ch)) {
			if (drain(op, ch, 0, &op->out) < 0 || drain(op, ch, 1, &op->err) < 0) {
				*broken = 1;
				goto done;
			}
			break;
		}
		if (got_out || got_err)
			continue;
		if ((left = remaining_ms(deadline)) <= 0) {
			ssh_channel_request_send_signal(ch, "KILL");
			*broken = 1;
			op_fail(op, "timed out after %ld ms", op->timeout_ms);
			goto done;
		}
		/* wait for output (stderr is picked up on the next turn) */
		if (ssh_channel_poll_timeout(ch, (int)(left < 100 ? left : 100), 0) == SSH_ERROR) {
			*broken = 1;
			op_fail(op, "connection lost while the command ran: %s",
				ssh_get_error(c->s));
			goto done;
		}
	}
	session_timeout(c->s, deadline);
	op->status = ssh_channel_get_exit_status(ch);
	if (op->status < 0 && !op->signal[0] && remaining_ms(deadline) <= 0) {
		*broken = 1;
		op_fail(op, "timed out after %ld ms", op->timeout_ms);
		goto done;
	}
	if (op->status < 0)
		op->status = -1;
	rc = 0;
done:
	if (*broken) {
		ssh_channel_free(ch);
	} else {
		ssh_channel_close(ch);
		ssh_channel_free(ch);
	}
	return rc;
}

static const char *sftp_errstr(int code)
{
	switch (code) {
	case SSH_FX_EOF:
		return "end of file";
	case SSH_FX_NO_SUCH_FILE:
		return "no such file or directory";
	case SSH_FX_PERMISSION_DENIED:
		return "permission denied";
	case SSH_FX_FAILURE:
		return "failure";
	case SSH_FX_BAD_MESSAGE:
		return "bad message";
	case SSH_FX_NO_CONNECTION:
		return "no connection";
	case SSH_FX_CONNECTION_LOST:
		return "connection lost";
	case SSH_FX_OP_UNSUPPORTED:
		return "operation unsupported";
	case SSH_FX_INVALID_HANDLE:
		return "invalid handle";
	case SSH_FX_NO_SUCH_PATH:
		return "no such path";
	case SSH_FX_FILE_ALREADY_EXISTS:
		return "file already exists";
	case SSH_FX_WRITE_PROTECT:
		return "write protected";
	case SSH_FX_NO_MEDIA:
		return "no media";
	default:
		return "unknown SFTP error";
	}
}

/* The session's SFTP channel, opened on first use.  *retry / *broken as in
 * do_exec(). */
static int sftp_ready(ssh_op *op, ssh_conn *c, int *retry, int *broken)
{
	if (c->sftp)
		return 0;
	if (!(c->sftp = sftp_new(c->s))) {
		*retry = *broken = 1;
		op_fail(op, "cannot open an SFTP channel: %s", ssh_get_error(c->s));
		return -1;
	}
	if (sftp_init(c->sftp) != SSH_OK) {
		*retry = *broken = 1;
		op_fail(op, "the server refused the SFTP subsystem: %s", ssh_get_error(c->s));
		sftp_free(c->sftp);
		c->sftp = NULL;
		return -1;
	}
	return 0;
}

/* After a failed SFTP call: the error text, and whether the session is
 * still good. */
static const char *sftp_failure(ssh_conn *c, int *broken)
{
	int code = sftp_get_error(c->sftp);
	if (code == SSH_FX_OK || code == SSH_FX_NO_CONNECTION || code == SSH_FX_CONNECTION_LOST ||
	    !ssh_is_connected(c->s)) {
		*broken = 1;
		return ssh_get_error(c->s);
	}
	return sftp_errstr(code);
}

static int do_put(ssh_op *op, ssh_conn *c, int64_t deadline, int *retry, int *broken)
{
	sftp_file f;
	sftp_attributes a;
	size_t off = 0;

	session_timeout(c->s, deadline);
	if (sftp_ready(op, c, retry, broken) < 0)
		return -1;
	f = sftp_open(c->sftp, op->path, O_WRONLY | O_CREAT | O_TRUNC, (mode_t)op->mode);
	if (!f) {
		const char *why = sftp_failure(c, broken);
		*retry = *broken;
		op_fail(op, "cannot open for writing: %s", why);
		return -1;
	}
	while (off < op->input_len) {
		size_t n = op->input_len - off;
		ssize_t w;
		if (n > SSH_CHUNK)
			n = SSH_CHUNK;
		if (remaining_ms(deadline) <= 0) {
			sftp_close(f);
			*broken = 1;
			op_fail(op, "timed out after %ld ms", op->timeout_ms);
			return -1;
		}
		if ((w = sftp_write(f, op->input + off, n)) < 0) {
			const char *why = sftp_failure(c, broken);
			sftp_close(f);
			op_fail(op, "write failed: %s", why);
			return -1;
		}
		off += (size_t)w;
	}
	if (sftp_close(f) != SSH_OK) {
		op_fail(op, "closing the file failed: %s", sftp_failure(c, broken));
		return -1;
	}
	/* open() applies the mode only to a new file, minus the umask */
	if (sftp_chmod(c->sftp, op->path, (mode_t)op->mode) < 0) {
		op_fail(op, "chmod %04o failed: %s", (unsigned)op->mode, sftp_failure(c, broken));
		return -1;
	}
	if (!(a = sftp_stat(c->sftp, op->path))) {
		op_fail(op, "cannot stat the written file: %s", sftp_failure(c, broken));
		return -1;
	}
	op->rmode = a->permissions & 07777;
	op->rsize = a->size;
	sftp_attributes_free(a);
	return 0;
}

static int do_get(ssh_op *op, ssh_conn *c, int64_t deadline, int *retry, int *broken)
{
	sftp_file f;
	sftp_attributes a;
	char buf[SSH_CHUNK];
	ssize_t n;

	session_timeout(c->s, deadline);
	if (sftp_ready(op, c, retry, broken) < 0)
		return -1;
	if (!(a = sftp_stat(c->sftp, op->path))) {
		const char *why = sftp_failure(c, broken);
		*retry = *broken;
		if (!*broken && sftp_get_error(c->sftp) == SSH_FX_NO_SUCH_FILE) {
			op->not_found = 1;
			op->error = mo_sprintf("%s@%s:%d: %s: no such file", c->user, c->host,
					       c->port, op->path);
			return 0;
		}
		op_fail(op, "cannot stat: %s", why);
		return -1;
	}
	op->rmode = a->permissions & 07777;
	if (a->type == SSH_FILEXFER_TYPE_DIRECTORY) {
		sftp_attributes_free(a);
		op_fail(op, "is a directory");
		return -1;
	}
	sftp_attributes_free(a);
	if (!(f = sftp_open(c->sftp, op->path, O_RDONLY, 0))) {
		op_fail(op, "cannot open for reading: %s", sftp_failure(c, broken));
		return -1;
	}
	while ((n = sftp_read(f, buf, sizeof(buf))) > 0) {
		if (op->out.len + (size_t)n > SSH_MAX_OUTPUT) {
			sftp_close(f);
			op_fail(op, "the file exceeds %u MiB", SSH_MAX_OUTPUT >> 20);
			return -1;
		}
		if (mo_buf_put(&op->out, buf, (size_t)n) < 0) {
			sftp_close(f);
			op_fail(op, "out of memory");
			return -1;
		}
		if (remaining_ms(deadline) <= 0) {
			sftp_close(f);
			*broken = 1;
			op_fail(op, "timed out after %ld ms", op->timeout_ms);
			return -1;
		}
	}
	if (n < 0) {
		const char *why = sftp_failure(c, broken);
		sftp_close(f);
		op_fail(op, "read failed: %s", why);
		return -1;
	}
	sftp_close(f);
	op->rsize = op->out.len;
	return 0;
}

/* The pool job: connect if needed, check the host key, run the op.  A
 * cached session that fails before anything ran is replaced once. */
static void op_work(void *ud)
{
	ssh_op *op = ud;
	ssh_conn *c = op->conn;
	int64_t deadline = mo_now_ms() + op->timeout_ms;

	for (int attempt = 0; attempt < 2; attempt++) {
		int fresh = 0, retry = 0, broken = 0, rc;
		if (!c->s) {
			if (conn_open(op, c, deadline) < 0)
				return;
			fresh = 1;
		} else if (verify_host(op, c) < 0) {
			return;
		}
		switch (op->kind) {
		case OP_EXEC:
			rc = do_exec(op, c, deadline, &retry, &broken);
			break;
		case OP_PUT:
			rc = do_put(op, c, deadline, &retry, &broken);
			break;
		default:
			rc = do_get(op, c, deadline, &retry, &broken);
			break;
		}
		if (broken)
			conn_close(c);
		if (rc == 0 || fresh || !retry || remaining_ms(deadline) <= 0)
			return;
		/* a stale cached session: start over on a new one */
		mo_free(op->error);
		op->error = NULL;
		op->failed = 0;
		op->out.len = op->err.len = 0;
	}
}

/* ======================================================================
 * Lua binding
 * ====================================================================== */

#define ANCHOR_MT "mecorch.ssh.wait"
static const char pending_key; /* registry[&pending_key] = { [thread] = anchor } */

static int anchor_gc(lua_State *L)
{
	ssh_anchor *a = luaL_checkudata(L, 1, ANCHOR_MT);
	if (a->op) {
		a->op->cancelled = 1;
		a->op->anchor = NULL;
	}
	a->op = NULL;
	return 0;
}

static void ensure_registry(lua_State *L)
{
	if (luaL_newmetatable(L, ANCHOR_MT)) {
		lua_pushcfunction(L, anchor_gc);
		lua_setfield(L, -2, "__gc");
		lua_pushliteral(L, "locked");
		lua_setfield(L, -2, "__metatable");
	}
	lua_pop(L, 1);
	if (lua_rawgetp(L, LUA_REGISTRYINDEX, &pending_key) != LUA_TTABLE) {
		lua_pop(L, 1);
		lua_newtable(L);
		lua_rawsetp(L, LUA_REGISTRYINDEX, &pending_key);
	} else {
		lua_pop(L, 1);
	}
}

/* Detach op from its anchor and the registry (no allocation).  Loop thread. */
static void op_detach(ssh_op *op)
{
	lua_State *main = op->main;
	if (op->anchor)
		op->anchor->op = NULL;
	op->anchor = NULL;
	if (lua_checkstack(main, 2)) {
		if (lua_rawgetp(main, LUA_REGISTRYINDEX, &pending_key) == LUA_TTABLE) {
			lua_pushnil(main);
			lua_rawsetp(main, -2, op->thread);
		}
		lua_pop(main, 1);
	}
}

static void op_unlink(ssh_op *op)
{
	if (op->prev)
		op->prev->next = op->next;
	else if (op->st->ops == op)
		op->st->ops = op->next;
	if (op->next)
		op->next->prev = op->prev;
	op->prev = op->next = NULL;
}

void mo_ssh_cancel_task(mo_task *t)
{
	lua_State *main, *thread;
	mo_sandbox *sb;

	if (!t || !(sb = mo_task_sandbox(t)) || !(thread = mo_task_thread(t)))
		return;
	main = mo_sandbox_L(sb);
	if (!lua_checkstack(main, 2))
		return;
	if (lua_rawgetp(main, LUA_REGISTRYINDEX, &pending_key) == LUA_TTABLE) {
		if (lua_rawgetp(main, -1, thread) == LUA_TUSERDATA) {
			ssh_anchor *a = lua_touserdata(main, -1);
			if (a->op) {
				a->op->cancelled = 1;
				a->op->anchor = NULL;
			}
			a->op = NULL;
			lua_pushnil(main);
			lua_rawsetp(main, -3, thread);
		}
		lua_pop(main, 1);
	}
	lua_pop(main, 1);
}

/* lua_pcall'd on the main thread: push (result, nil), (nil, message) for a
 * missing file, or (false, message) for an error, and move both onto the
 * task's thread. */
static int push_result(lua_State *L)
{
	ssh_op *op = lua_touserdata(L, 1);

	if (op->failed) {
		lua_pushboolean(L, 0);
		lua_pushstring(L, op->error ? op->error : "ctx.ssh: out of memory");
	} else if (op->not_found) {
		lua_pushnil(L);
		lua_pushstring(L, op->error ? op->error : "no such file");
	} else {
		lua_createtable(L, 0, 4);
		switch (op->kind) {
		case OP_EXEC:
			lua_pushinteger(L, op->status);
			lua_setfield(L, -2, "status");
			lua_pushlstring(L, op->out.ptr ? op->out.ptr : "", op->out.len);
			lua_setfield(L, -2, "stdout");
			lua_pushlstring(L, op->err.ptr ? op->err.ptr : "", op->err.len);
			lua_setfield(L, -2, "stderr");
			if (op->signal[0]) {
				lua_pushstring(L, op->signal);
				lua_setfield(L, -2, "signal");
			}
			break;
		case OP_GET:
			lua_pushlstring(L, op->out.ptr ? op->out.ptr : "", op->out.len);
			lua_setfield(L, -2, "content");
			/* fall through */
		default:
			lua_pushinteger(L, (lua_Integer)op->rmode);
			lua_setfield(L, -2, "mode");
			lua_pushinteger(L, (lua_Integer)op->rsize);
			lua_setfield(L, -2, "size");
			break;
		}
		lua_pushnil(L);
	}
	if (!lua_checkstack(op->thread, 2))
		return luaL_error(L, "out of memory");
	lua_xmove(L, op->thread, 2);
	return 0;
}

/* The pool's done callback, on the loop thread. */
static void op_done(void *ud)
{
	ssh_op *op = ud;
	mo_task *t = op->task;
	lua_State *main = op->main;
	int nargs = 0;

	op_unlink(op);
	if (op->cancelled) {
		op_free(op);
		return;
	}
	op_detach(op);
	if (op->connected && op->rt->log) {
		char msg[512];
		snprintf(msg, sizeof(msg), "connected to %s@%s:%d, host key %s", op->conn->user,
			 op->conn->host, op->conn->port,
			 op->conn->server_fp[0] ? op->conn->server_fp : "?");
		op->rt->log(op->rt->log_ud, "ssh", "debug", msg);
	}
	if (lua_checkstack(main, 3)) {
		lua_pushcfunction(main, push_result);
		lua_pushlightuserdata(main, op);
		if (lua_pcall(main, 1, 0, 0) == LUA_OK)
			nargs = 2;
		else
			lua_pop(main, 1);
	}
	op_free(op);
	mo_task_wake(t, nargs);
}

/* Continuation: two values on top (see push_result). */
static int call_k(lua_State *L, int status, lua_KContext base)
{
	(void)status;
	if (lua_gettop(L) < (int)base + 2)
		return luaL_error(L, "ctx.ssh: no result (out of memory)");
	if (lua_type(L, -2) == LUA_TBOOLEAN)
		return lua_error(L); /* the message on top */
	if (lua_type(L, -2) == LUA_TNIL)
		return 2;
	lua_pop(L, 1);
	return 1;
}

/* ---- argument parsing --------------------------------------------------- */

typedef struct {
	const char *fn; /* "ctx.ssh.exec" */
	const char *host, *user, *key, *key_file, *pin, *known_hosts;
	const char *command, *input, *path;
	size_t input_len;
	int has_input;
	int port, mode;
	long timeout_ms;
} ssh_req;

static const char *const common_fields[] = { "host",        "port",       "user",
					     "key",         "key_file",   "host_key_sha256",
					     "known_hosts", "timeout_ms", NULL };
static const char *const exec_fields[] = { "command", "stdin", NULL };
static const char *const put_fields[] = { "path", "content", "mode", NULL };
static const char *const get_fields[] = { "path", NULL };

static int in_list(const char *const *l, const char *s)
{
	for (; *l; l++)
		if (strcmp(*l, s) == 0)
			return 1;
	return 0;
}

/* t[k] of the argument table (index 1), raw; the value stays referenced by
 * the table, so a returned string is valid until the call returns. */
static const char *str_field(lua_State *L, const ssh_req *r, const char *k, int required,
			     size_t *len)
{
	const char *s = NULL;
	lua_pushstring(L, k);
	switch (lua_rawget(L, 1)) {
	case LUA_TNIL:
		if (required)
			luaL_error(L, "%s: field '%s' is required", r->fn, k);
		break;
	case LUA_TSTRING:
		s = lua_tolstring(L, -1, len);
		break;
	case LUA_TTABLE:
		luaL_error(L,
			   "%s: field '%s' must be a string (a sensitive value read back from "
			   "state is only a hash: keep it set in the plan)",
			   r->fn, k);
		break;
	default:
		luaL_error(L, "%s: field '%s' must be a string", r->fn, k);
	}
	lua_pop(L, 1);
	return s;
}

static lua_Integer int_field(lua_State *L, const ssh_req *r, const char *k, lua_Integer def,
			     lua_Integer lo, lua_Integer hi)
{
	lua_Integer v = def;
	lua_pushstring(L, k);
	if (lua_rawget(L, 1) != LUA_TNIL) {
		int isnum = 0;
		v = lua_tointegerx(L, -1, &isnum);
		if (!isnum || v < lo || v > hi)
			luaL_error(L, "%s: field '%s' must be an integer from %I to %I", r->fn, k,
				   lo, hi);
	}
	lua_pop(L, 1);
	return v;
}

static void parse_req(lua_State *L, int kind, ssh_req *r)
{
	const char *const *extra = kind == OP_EXEC ? exec_fields :
				   kind == OP_PUT  ? put_fields :
						     get_fields;
	memset(r, 0, sizeof(*r));
	r->fn = kind == OP_EXEC ? "ctx.ssh.exec" : kind == OP_PUT ? "ctx.ssh.put" : "ctx.ssh.get";
	if (lua_type(L, 1) != LUA_TTABLE)
		luaL_error(L, "%s: expected a table argument", r->fn);
	lua_settop(L, 1);
	lua_pushnil(L);
	while (lua_next(L, 1)) {
		const char *k;
		lua_pop(L, 1);
		if (lua_type(L, -1) != LUA_TSTRING)
			luaL_error(L, "%s: field names must be strings", r->fn);
		k = lua_tostring(L, -1);
		if (!in_list(common_fields, k) && !in_list(extra, k))
			luaL_error(L, "%s: unknown field '%s'", r->fn, k);
	}
	r->host = str_field(L, r, "host", 1, NULL);
	if (!*r->host || strpbrk(r->host, " \t\r\n@"))
		luaL_error(L, "%s: field 'host' must be a host name or address", r->fn);
	r->user = str_field(L, r, "user", 1, NULL);
	if (!*r->user || strpbrk(r->user, " \t\r\n@:"))
		luaL_error(L, "%s: field 'user' must be a user name", r->fn);
	r->port = (int)int_field(L, r, "port", 22, 1, 65535);
	r->key = str_field(L, r, "key", 0, NULL);
	r->key_file = str_field(L, r, "key_file", 0, NULL);
	if (!r->key == !r->key_file)
		luaL_error(L,
			   "%s: give exactly one of 'key' (the private key's text) and 'key_file'",
			   r->fn);
	if ((r->key && !*r->key) || (r->key_file && !*r->key_file))
		luaL_error(L, "%s: field '%s' must not be empty", r->fn,
			   r->key ? "key" : "key_file");
	r->pin = str_field(L, r, "host_key_sha256", 0, NULL);
	r->known_hosts = str_field(L, r, "known_hosts", 0, NULL);
	if (r->pin && r->known_hosts)
		luaL_error(L, "%s: fields 'host_key_sha256' and 'known_hosts' are exclusive",
			   r->fn);
	if (r->pin) {
		const char *b = strncmp(r->pin, "SHA256:", 7) == 0 ? r->pin + 7 : r->pin;
		if (strlen(b) < 40 ||
		    strspn(b, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
			      "0123456789+/=") != strlen(b))
			luaL_error(L,
				   "%s: field 'host_key_sha256' must be a SHA256 fingerprint as "
				   "ssh-keygen -l prints it (SHA256:<base64>)",
				   r->fn);
	}
	if (r->known_hosts && !*r->known_hosts)
		luaL_error(L, "%s: field 'known_hosts' must not be empty", r->fn);
	r->timeout_ms =
		(long)int_field(L, r, "timeout_ms", SSH_DEFAULT_TIMEOUT_MS, 1, SSH_MAX_TIMEOUT_MS);
	switch (kind) {
	case OP_EXEC:
		r->command = str_field(L, r, "command", 1, NULL);
		if (!*r->command)
			luaL_error(L, "%s: field 'command' must not be empty", r->fn);
		r->input = str_field(L, r, "stdin", 0, &r->input_len);
		r->has_input = r->input != NULL;
		break;
	case OP_PUT:
		r->input = str_field(L, r, "content", 1, &r->input_len);
		r->has_input = 1;
		r->mode = (int)int_field(L, r, "mode", 0644, 0, 07777);
		/* fall through */
	default:
		r->path = str_field(L, r, "path", 1, NULL);
		if (!*r->path)
			luaL_error(L, "%s: field 'path' must not be empty", r->fn);
	}
}

/* The task L runs as; raises when L is not a task's own thread. */
static mo_task *current_task(lua_State *L, const char *fn, mo_rt **rt)
{
	mo_task *t = mo_task_from_lua(L);
	mo_sandbox *sb;
	if (!t || mo_task_thread(t) != L)
		luaL_error(L, "%s must be called from a resource handler", fn);
	sb = mo_task_sandbox(t);
	*rt = sb ? mo_sandbox_rt(sb) : NULL;
	if (!*rt || !(*rt)->loop)
		luaL_error(L, "%s: no runtime (this sandbox does no I/O)", fn);
	return t;
}

static char *dup_opt(const char *s, int *oom)
{
	char *d;
	if (!s)
		return NULL;
	if (!(d = mo_strdup(s)))
		*oom = 1;
	return d;
}

/* Build the op from r (owned copies); NULL when out of memory. */
static ssh_op *op_from_req(int kind, const ssh_req *r)
{
	ssh_op *op = mo_calloc(1, sizeof(*op));
	int oom = 0;
	if (!op)
		return NULL;
	op->kind = kind;
	op->key_text = dup_opt(r->key, &oom);
	op->key_file = dup_opt(r->key_file, &oom);
	op->pin = dup_opt(r->pin, &oom);
	op->known_hosts = dup_opt(r->known_hosts, &oom);
	op->command = dup_opt(r->command, &oom);
	op->path = dup_opt(r->path, &oom);
	op->mode = r->mode;
	op->timeout_ms = r->timeout_ms;
	op->has_input = r->has_input;
	if (r->has_input) {
		op->input_len = r->input_len;
		if (!(op->input = mo_malloc(r->input_len + 1)))
			oom = 1;
		else
			memcpy(op->input, r->input, r->input_len);
	}
	if (oom) {
		op_free(op);
		return NULL;
	}
	return op;
}

/* Loop thread, posted while the executor's journal batch was open: start
 * the op now that its intent is durable (or drop it if it was cancelled). */
static void op_submit_later(void *ud)
{
	ssh_op *op = ud;
	if (op->cancelled)
		op_done(op);
	else if (mo_pool_submit(op->st->pool, op->conn, op_work, op_done, op) < 0) {
		op->failed = 1;
		op->error = mo_strdup(mo_error_last()->message);
		op_done(op);
	}
}

/* exec / put / get.  Stack: the request table in; the result (or nil and
 * a message, for get) out, or a Lua error.  Yields. */
static int l_call(lua_State *L, int kind)
{
	ssh_req r;
	mo_rt *rt;
	mo_task *t;
	ssh_state *st = NULL;
	ssh_conn *c = NULL;
	ssh_op *op;
	ssh_anchor *a;
	unsigned char keyid[32];
	int base;

	parse_req(L, kind, &r);
	t = current_task(L, r.fn, &rt);
	if (state_get(&st, rt) < 0)
		return luaL_error(L, "%s: %s", r.fn, mo_error_last()->message);
	key_identity(keyid, r.key, r.key_file);
	if (conn_find(&c, st, r.host, r.port, r.user, keyid) < 0)
		return luaL_error(L, "%s: %s", r.fn, mo_error_last()->message);

	/* the anchor before the op, so a Lua error can't leak the op */
	ensure_registry(L);
	lua_rawgetp(L, LUA_REGISTRYINDEX, &pending_key);
	a = lua_newuserdatauv(L, sizeof(*a), 0);
	a->op = NULL;
	luaL_setmetatable(L, ANCHOR_MT);
	lua_rawsetp(L, -2, L);
	lua_pop(L, 1);
	if (!(op = op_from_req(kind, &r)))
		return luaL_error(L, "%s: out of memory", r.fn);
	op->conn = c;
	op->st = st;
	op->rt = rt;
	op->task = t;
	op->thread = L;
	op->main = mo_sandbox_L(mo_task_sandbox(t));
	if (rt->defer_io ? mo_loop_post(rt->loop, op_submit_later, op) < 0
			 : mo_pool_submit(st->pool, c, op_work, op_done, op) < 0) {
		op_free(op);
		return luaL_error(L, "%s: %s", r.fn, mo_error_last()->message);
	}
	op->anchor = a;
	a->op = op;
	op->next = st->ops;
	if (st->ops)
		st->ops->prev = op;
	st->ops = op;
	lua_settop(L, 1);
	base = lua_gettop(L);
	mo_task_suspend(t);
	return lua_yieldk(L, 0, (lua_KContext)base, call_k);
}

static int l_exec(lua_State *L)
{
	return l_call(L, OP_EXEC);
}

static int l_put(lua_State *L)
{
	return l_call(L, OP_PUT);
}

static int l_get(lua_State *L)
{
	return l_call(L, OP_GET);
}

int mo_open_ssh(lua_State *L)
{
	static const luaL_Reg fns[] = {
		{ "exec", l_exec },
		{ "put", l_put },
		{ "get", l_get },
		{ NULL, NULL },
	};
	ensure_registry(L);
	luaL_newlib(L, fns);
	return 1;
}
