/*
 * test_ssh.c - the SSH driver (ctx.ssh.exec / put / get) against two real
 * OpenSSH servers on 127.0.0.1, started here as children with their own
 * host keys and a dedicated test user (shell /bin/sh): command status and
 * streams, large stdin and stdout, timeouts, SFTP put/get with modes, host
 * key checks (pinned fingerprint, known_hosts, unknown and mismatching
 * keys, with a marker file proving nothing ran), key errors, connection
 * reuse (counted in sshd's log) and parallel work on two hosts; and the
 * worker pool underneath (per-key serialisation, completions on the loop).
 *
 * The SSH tests need root (to add the test user and run sshd) and are
 * skipped otherwise.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "common.h"
#include "drivers.h"
#include "loop.h"
#include "pool.h"
#include "runtime.h"
#include "sandbox.h"
#include "ssh.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <lauxlib.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define TEST_USER "mosshunit"
#define SSHD      "/usr/sbin/sshd"

static struct {
	int up;
	char dir[64];
	int port[2];
	pid_t pid[2];
	char fp[2][128];  /* SHA256:... of each server's host key */
	char pub[2][512]; /* "ssh-ed25519 AAAA..." */
	char key[128], badkey[128];
	char *keytext;
	char log[2][128];
} lab;

/* ---- the lab ------------------------------------------------------------ */

static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...)
{
	char cmd[2048];
	va_list ap;
	int st;
	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	st = system(cmd);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* First line of a command's output, trimmed. */
static int sh_line(char *out, size_t outsz, const char *cmd)
{
	FILE *p = popen(cmd, "r");
	int ok;
	if (!p)
		return -1;
	ok = fgets(out, (int)outsz, p) != NULL;
	pclose(p);
	if (!ok)
		return -1;
	out[strcspn(out, "\r\n")] = '\0';
	return 0;
}

/* A port for sshd (which takes it in its configuration): one that binds
 * now, chosen at random below the kernel's ephemeral range, where neither
 * bind(0) nor outgoing connections take ports, so that nothing but a
 * request for that very port can take it before sshd binds it. */
static int free_port(void)
{
	unsigned lo = 32768, base = 10000, span;
	FILE *f = fopen("/proc/sys/net/ipv4/ip_local_port_range", "r");

	if (f) {
		if (fscanf(f, "%u", &lo) != 1)
			lo = 32768;
		fclose(f);
	}
	span = lo > base + 2000 ? lo - base : 0;
	if (!span) { /* no room below the range: any unprivileged port */
		base = 1024;
		span = 65536 - base;
	}
	for (int tries = 0; tries < 500; tries++) {
		struct sockaddr_in a;
		unsigned r = 0;
		int fd = socket(AF_INET, SOCK_STREAM, 0), ok;
		if (fd < 0)
			return -1;
		if (mo_random(&r, sizeof(r)) < 0)
			r = (unsigned)rand();
		memset(&a, 0, sizeof(a));
		a.sin_family = AF_INET;
		a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		a.sin_port = htons((uint16_t)(base + r % span));
		ok = bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
		close(fd);
		if (ok)
			return (int)(base + r % span);
	}
	return -1;
}

/* Does process pid hold a TCP socket listening on port?  (/proc/net/tcp
 * names the listening socket's inode; pid's fds link to "socket:[inode]".)
 * So the server counts as up only when the port is its own, not when
 * another process that took the port first answers on it. */
static int pid_listens(pid_t pid, int port)
{
	char line[512], path[64], link[64], want[64];
	unsigned long inode;
	int found = 0;
	FILE *f = fopen("/proc/net/tcp", "r");

	if (!f)
		return 0;
	while (!found && fgets(line, sizeof(line), f)) {
		unsigned lport, st;
		if (sscanf(line, " %*d: %*x:%x %*x:%*x %x %*x:%*x %*x:%*x %*x %*u %*u %lu", &lport,
			   &st, &inode) != 3 ||
		    (int)lport != port || st != 0x0A)
			continue;
		snprintf(want, sizeof(want), "socket:[%lu]", inode);
		for (int fd = 0; fd < 256 && !found; fd++) {
			ssize_t n;
			snprintf(path, sizeof(path), "/proc/%d/fd/%d", (int)pid, fd);
			n = readlink(path, link, sizeof(link) - 1);
			if (n <= 0)
				continue;
			link[n] = '\0';
			found = strcmp(link, want) == 0;
		}
	}
	fclose(f);
	return found;
}

/* Start server i (sshd -D as a child) on a free port; 0 when it listens. */
static int start_sshd(int i)
{
	char cfg[128];
	FILE *f;

	for (int attempt = 0; attempt < 5; attempt++) {
		int status;
		lab.port[i] = free_port();
		snprintf(cfg, sizeof(cfg), "%s/sshd%d.conf", lab.dir, i);
		if (!(f = fopen(cfg, "w")))
			return -1;
		fprintf(f,
			"Port %d\nListenAddress 127.0.0.1\nHostKey %s/host%d\nPidFile %s/sshd%d.pid\n"
			"AuthorizedKeysFile %s/authorized_keys\nPubkeyAuthentication yes\n"
			"PasswordAuthentication no\nKbdInteractiveAuthentication no\n"
			"PermitRootLogin no\nUsePAM no\nStrictModes no\nMaxStartups 100\n"
			"MaxSessions 100\nSubsystem sftp internal-sftp\nLogLevel VERBOSE\n",
			lab.port[i], lab.dir, i, lab.dir, i, lab.dir);
		fclose(f);
		snprintf(lab.log[i], sizeof(lab.log[i]), "%s/sshd%d.log", lab.dir, i);
		lab.pid[i] = fork();
		if (lab.pid[i] == 0) {
			/* not holding the test runner's pipes, and gone with us even
			 * when a crash skips the teardown */
			int null = open("/dev/null", O_RDWR);
			prctl(PR_SET_PDEATHSIG, SIGTERM);
			if (null >= 0) {
				dup2(null, 0);
				dup2(null, 1);
				dup2(null, 2);
			}
			execl(SSHD, SSHD, "-D", "-f", cfg, "-E", lab.log[i], (char *)NULL);
			_exit(127);
		}
		if (lab.pid[i] < 0)
			return -1;
		/* up to 60 s for sshd to listen: a loaded machine starts it slowly */
		for (int64_t end = mo_now_ms() + 60000; mo_now_ms() < end;) {
			if (pid_listens(lab.pid[i], lab.port[i]))
				return 0;
			if (waitpid(lab.pid[i], &status, WNOHANG) == lab.pid[i])
				break; /* port taken meanwhile, or a bad config: retry */
			usleep(50 * 1000);
		}
		kill(lab.pid[i], SIGTERM);
		waitpid(lab.pid[i], NULL, 0);
		lab.pid[i] = 0;
	}
	return -1;
}

static int group_setup(void **state)
{
	char line[1024];
	(void)state;

	if (getuid() != 0 || access(SSHD, X_OK) != 0) {
		fprintf(stderr, "test_ssh: needs root and %s; skipping\n", SSHD);
		return 0;
	}
	snprintf(lab.dir, sizeof(lab.dir), "/tmp/mo-sshunit-XXXXXX");
	if (!mkdtemp(lab.dir) || chmod(lab.dir, 0755) < 0)
		return -1;
	if (sh("mkdir -p /run/sshd && chmod 755 /run/sshd") ||
	    sh("cd %s && for k in host0 host1 client other; do ssh-keygen -q -t ed25519 -N '' "
	       "-C mecorch-test -f $k || exit 1; done && cp client.pub authorized_keys && "
	       "chmod 644 authorized_keys && mkdir -p home && chmod 755 home",
	       lab.dir))
		return -1;
	/* The account: /bin/sh, no password, but not locked (sshd refuses
	 * locked accounts when UsePAM is off). */
	if (sh("if id -u " TEST_USER
	       " >/dev/null 2>&1; then usermod -d %s/home -s /bin/sh -p '*' " TEST_USER
	       "; else useradd -M -d %s/home -s /bin/sh " TEST_USER " && usermod -p '*' " TEST_USER
	       "; fi && chown " TEST_USER " %s/home",
	       lab.dir, lab.dir, lab.dir))
		return -1;
	for (int i = 0; i < 2; i++) {
		char cmd[256];
		snprintf(cmd, sizeof(cmd), "ssh-keygen -l -E sha256 -f %s/host%d.pub", lab.dir, i);
		if (sh_line(line, sizeof(line), cmd) < 0 ||
		    sscanf(line, "%*d %127s", lab.fp[i]) != 1)
			return -1;
		snprintf(cmd, sizeof(cmd), "cut -d' ' -f1,2 %s/host%d.pub", lab.dir, i);
		if (sh_line(lab.pub[i], sizeof(lab.pub[i]), cmd) < 0)
			return -1;
		if (start_sshd(i) < 0) {
			fprintf(stderr, "test_ssh: cannot start sshd %d\n", i);
			return -1;
		}
	}
	snprintf(lab.key, sizeof(lab.key), "%s/client", lab.dir);
	snprintf(lab.badkey, sizeof(lab.badkey), "%s/other", lab.dir);
	if (mo_file_read(&lab.keytext, NULL, lab.key) < 0)
		return -1;
	lab.up = 1;
	return 0;
}

static int group_teardown(void **state)
{
	char pid[32], path[128];
	(void)state;
	for (int i = 0; i < 2; i++)
		if (lab.pid[i] > 0) {
			kill(lab.pid[i], SIGTERM);
			waitpid(lab.pid[i], NULL, 0);
		}
	/* the command the timeout test left running, by its pid */
	snprintf(path, sizeof(path), "cat %s/sleeper.pid 2>/dev/null", lab.dir);
	if (lab.dir[0] && sh_line(pid, sizeof(pid), path) == 0 && atoi(pid) > 1)
		kill(atoi(pid), SIGKILL);
	if (lab.up)
		sh("userdel " TEST_USER " 2>/dev/null; rm -rf %s", lab.dir);
	mo_free(lab.keytext);
	return 0;
}

static int count_in_file(const char *path, const char *needle)
{
	char *text = NULL;
	int n = 0;
	if (mo_file_read(&text, NULL, path) < 0)
		return -1;
	for (const char *p = text; (p = strstr(p, needle)); p += strlen(needle))
		n++;
	mo_free(text);
	return n;
}

static int accepted(int i)
{
	return count_in_file(lab.log[i], "Accepted publickey for " TEST_USER);
}

/* accepted(i) once it reaches at least want, or after 30 s: sshd's monitor
 * writes "Accepted publickey" after it lets the session go on, so the line
 * may come a moment after the client is in. */
static int accepted_once(int i, int want)
{
	int n = accepted(i);
	for (int64_t end = mo_now_ms() + 30000; n < want && mo_now_ms() < end; n = accepted(i))
		usleep(20 * 1000);
	return n;
}

/* ---- tasks -------------------------------------------------------------- */

typedef struct {
	mo_task *t;
	int woken, nargs;
	int done, rc, nres;
} job;

static void on_wake(mo_task *t, int nargs, void *ud)
{
	job *j = ud;
	(void)t;
	j->woken = 1;
	j->nargs = nargs;
}

static void rt_init(mo_rt *rt)
{
	memset(rt, 0, sizeof(*rt));
	assert_int_equal(mo_loop_new(&rt->loop), 0);
	mo_http_config_defaults(&rt->http);
}

static void rt_fini(mo_rt *rt)
{
	mo_rt_release(rt);
	assert_int_equal(mo_loop_pending(rt->loop), 0);
	mo_loop_free(rt->loop);
}

/* Push P, the lab's parameters for the chunks. */
static void push_params(lua_State *L)
{
	lua_newtable(L);
	lua_pushstring(L, "127.0.0.1");
	lua_setfield(L, -2, "host");
	lua_pushinteger(L, lab.port[0]);
	lua_setfield(L, -2, "port1");
	lua_pushinteger(L, lab.port[1]);
	lua_setfield(L, -2, "port2");
	lua_pushstring(L, TEST_USER);
	lua_setfield(L, -2, "user");
	lua_pushstring(L, lab.key);
	lua_setfield(L, -2, "key_file");
	lua_pushstring(L, lab.badkey);
	lua_setfield(L, -2, "bad_key_file");
	lua_pushstring(L, lab.keytext);
	lua_setfield(L, -2, "key");
	lua_pushstring(L, lab.fp[0]);
	lua_setfield(L, -2, "fp1");
	lua_pushstring(L, lab.fp[1]);
	lua_setfield(L, -2, "fp2");
	lua_pushstring(L, lab.dir);
	lua_setfield(L, -2, "dir");
}

/* Start chunk(ctx, P) as a task in j and run it to its first wait. */
static void job_start(mo_sandbox *sb, const char *chunk, job *j)
{
	lua_State *L = mo_sandbox_L(sb);
	int status = 0;
	memset(j, 0, sizeof(*j));
	assert_int_equal(mo_sandbox_loadbuffer(sb, chunk, strlen(chunk), "test.lua"), 0);
	lua_newtable(L);
	mo_open_ssh(L);
	lua_setfield(L, -2, "ssh");
	push_params(L);
	assert_int_equal(mo_task_new(&j->t, sb, 2, "test task"), 0);
	mo_task_set_wake(j->t, on_wake, j);
	j->rc = mo_task_resume(j->t, 0, &status, &j->nres);
	j->done = j->rc < 0 || status == MO_TASK_DONE;
}

/* Drive the loop until every job is done. */
static void jobs_run(mo_rt *rt, job *jobs, int n)
{
	for (;;) {
		int pending = 0;
		for (int i = 0; i < n; i++)
			pending += !jobs[i].done;
		if (!pending)
			return;
		assert_int_equal(mo_loop_run_once(rt->loop, 1000), 0);
		for (int i = 0; i < n; i++) {
			int status = 0;
			if (jobs[i].done || !jobs[i].woken)
				continue;
			jobs[i].woken = 0;
			jobs[i].rc =
				mo_task_resume(jobs[i].t, jobs[i].nargs, &status, &jobs[i].nres);
			jobs[i].done = jobs[i].rc < 0 || status == MO_TASK_DONE;
		}
	}
}

/* Run one chunk to its end; returns mo_task_resume's code. */
static int run1(mo_rt *rt, mo_sandbox *sb, const char *chunk, job *j)
{
	job_start(sb, chunk, j);
	jobs_run(rt, j, 1);
	return j->rc;
}

#define LAB_OR_SKIP()           \
	do {                    \
		if (!lab.up)    \
			skip(); \
	} while (0)

/* Connection fields for server 1 with the pinned fingerprint. */
#define CONN1                                                                   \
	"host = P.host, port = P.port1, user = P.user, key_file = P.key_file, " \
	"host_key_sha256 = P.fp1"

/* ---- tests -------------------------------------------------------------- */

static void test_ssh_exec(void **state)
{
	mo_rt rt;
	mo_sandbox *sb;
	job j;
	lua_State *th;
	const char *chunk =
		"local ctx, P = ...\n"
		"local r = ctx.ssh.exec{ " CONN1 ", command = 'echo out; echo err >&2; exit 7' }\n"
		"local c = ctx.ssh.exec{ " CONN1 ", command = 'cat; printf :%s $(id -un)',\n"
		"  stdin = 'hello\\0world' }\n"
		"local s = ctx.ssh.exec{ " CONN1 ", command = 'kill -TERM $$' }\n"
		"return r.status, r.stdout, r.stderr, c.status, c.stdout, s.status, s.signal\n";
	(void)state;
	LAB_OR_SKIP();

	rt_init(&rt);
	assert_int_equal(mo_sandbox_new(&sb, NULL, "ssh test", &rt, NULL), 0);
	assert_int_equal(run1(&rt, sb, chunk, &j), 0);
	assert_int_equal(j.nres, 7);
	th = mo_task_thread(j.t);
	assert_int_equal(lua_tointeger(th, -7), 7);
	assert_string_equal(lua_tostring(th, -6), "out\n");
	assert_string_equal(lua_tostring(th, -5), "err\n");
	assert_int_equal(lua_tointeger(th, -4), 0);
	{
		size_t len;
		const char *s = lua_tolstring(th, -3, &len);
		assert_int_equal(len, 11 + 1 + strlen(TEST_USER));
		assert_memory_equal(s, "hello\0world:" TEST_USER, len);
	}
	assert_int_equal(lua_tointeger(th, -2), -1);
	assert_string_equal(lua_tostring(th, -1), "TERM");
	mo_task_free(j.t);
	mo_sandbox_free(sb);
	rt_fini(&rt);
}

/* Megabytes both ways: stdin is fed as the window allows while output is
 * read, so neither side stalls. */
static void test_ssh_exec_large(void **state)
{
	mo_rt rt;
	mo_sandbox *sb;
	job j;
	lua_State *th;
	unsigned char md[32];
	char hex[65];
	unsigned int mdlen;
	size_t n = 3u << 20;
	char *big = mo_malloc(n);
	const char *chunk =
		"local ctx, P, big = ...\n"
		"local h = ctx.ssh.exec{ " CONN1 ", command = 'sha256sum', stdin = big }\n"
		"local e = ctx.ssh.exec{ " CONN1 ", command = 'cat', stdin = big }\n"
		"local o = ctx.ssh.exec{ " CONN1
		", command = \"head -c 2500000 /dev/zero | tr '\\\\0' x\" }\n"
		"return h.stdout:sub(1, 64), e.stdout == big, #o.stdout, o.stdout:sub(-3)\n";
	lua_State *L;
	int status = 0;
	(void)state;
	LAB_OR_SKIP();

	assert_non_null(big);
	for (size_t i = 0; i < n; i++)
		big[i] = (char)(i * 7 + i / 251);
	EVP_Digest(big, n, md, &mdlen, EVP_sha256(), NULL);
	for (int i = 0; i < 32; i++)
		snprintf(hex + 2 * i, 3, "%02x", md[i]);

	rt_init(&rt);
	assert_int_equal(mo_sandbox_new(&sb, NULL, "ssh test", &rt, NULL), 0);
	L = mo_sandbox_L(sb);
	memset(&j, 0, sizeof(j));
	assert_int_equal(mo_sandbox_loadbuffer(sb, chunk, strlen(chunk), "test.lua"), 0);
	lua_newtable(L);
	mo_open_ssh(L);
	lua_setfield(L, -2, "ssh");
	push_params(L);
	lua_pushlstring(L, big, n);
	assert_int_equal(mo_task_new(&j.t, sb, 3, "big"), 0);
	mo_task_set_wake(j.t, on_wake, &j);
	j.rc = mo_task_resume(j.t, 0, &status, &j.nres);
	j.done = j.rc < 0 || status == MO_TASK_DONE;
	jobs_run(&rt, &j, 1);
	assert_int_equal(j.rc, 0);
	th = mo_task_thread(j.t);
	assert_string_equal(lua_tostring(th, -4), hex);
	assert_true(lua_toboolean(th, -3));
	assert_int_equal(lua_tointeger(th, -2), 2500000);
	assert_string_equal(lua_tostring(th, -1), "xxx");
	mo_task_free(j.t);
	mo_sandbox_free(sb);
	rt_fini(&rt);
	mo_free(big);
}

/* The timeout bounds connecting too: the session is opened first by a
 * call without one, so that only the command can run out of time, and the
 * bound is far above a channel's opening on a slow machine. */
static void test_ssh_timeout(void **state)
{
	mo_rt rt;
	mo_sandbox *sb;
	job j;
	char want[256];
	const char *chunk =
		"local ctx, P = ...\n"
		"assert(ctx.ssh.exec{ " CONN1 ", command = 'true' }.status == 0)\n"
		"local ok, err = pcall(ctx.ssh.exec, { " CONN1 ", timeout_ms = 2000,\n"
		"  command = 'echo $$ > ' .. P.dir .. '/sleeper.pid; exec sleep 30' })\n"
		"local r = ctx.ssh.exec{ " CONN1 ", command = 'echo after' }\n"
		"return ok, err, r.stdout\n";
	(void)state;
	LAB_OR_SKIP();

	rt_init(&rt);
	assert_int_equal(mo_sandbox_new(&sb, NULL, "ssh test", &rt, NULL), 0);
	assert_int_equal(run1(&rt, sb, chunk, &j), 0);
	assert_false(lua_toboolean(mo_task_thread(j.t), -3));
	snprintf(want, sizeof(want),
		 "ctx.ssh.exec: " TEST_USER "@127.0.0.1:%d: timed out after 2000 ms "
		 "(command: echo $$ > %s/sleeper.pid; exec sleep 30)",
		 lab.port[0], lab.dir);
	assert_string_equal(lua_tostring(mo_task_thread(j.t), -2), want);
	/* the session was dropped; the next call gets a new one */
	assert_string_equal(lua_tostring(mo_task_thread(j.t), -1), "after\n");
	mo_task_free(j.t);
	mo_sandbox_free(sb);
	rt_fini(&rt);
}

static void test_ssh_put_get(void **state)
{
	mo_rt rt;
	mo_sandbox *sb;
	job j;
	lua_State *th;
	struct stat st;
	char path[128], *text = NULL;
	size_t len;
	struct passwd *pw = getpwnam(TEST_USER);
	const char *chunk =
		"local ctx, P = ...\n"
		"local f = P.dir .. '/home/f.bin'\n"
		"local w = ctx.ssh.put{ " CONN1 ", path = f, content = 'a\\0b\\ncc', mode = 384 }\n"
		"local r = ctx.ssh.get{ " CONN1 ", path = f }\n"
		"local w2 = ctx.ssh.put{ " CONN1 ", path = f .. '2', content = 'first version' }\n"
		"w2 = ctx.ssh.put{ " CONN1 ", path = f .. '2', content = 'short', mode = 416 }\n"
		"local none, msg = ctx.ssh.get{ " CONN1 ", path = f .. '.missing' }\n"
		"local ok, err = pcall(ctx.ssh.put, { " CONN1
		", path = P.dir .. '/home/no/such', content = 'x' })\n"
		"return w.size, w.mode, r.content, r.mode, r.size, w2.size, w2.mode, none, msg, ok, err\n";
	(void)state;
	LAB_OR_SKIP();
	assert_non_null(pw);

	rt_init(&rt);
	assert_int_equal(mo_sandbox_new(&sb, NULL, "ssh test", &rt, NULL), 0);
	assert_int_equal(run1(&rt, sb, chunk, &j), 0);
	th = mo_task_thread(j.t);
	assert_int_equal(j.nres, 11);
	assert_int_equal(lua_tointeger(th, -11), 6);
	assert_int_equal(lua_tointeger(th, -10), 0600);
	assert_memory_equal(lua_tolstring(th, -9, &len), "a\0b\ncc", 6);
	assert_int_equal(len, 6);
	assert_int_equal(lua_tointeger(th, -8), 0600);
	assert_int_equal(lua_tointeger(th, -7), 6);
	assert_int_equal(lua_tointeger(th, -6), 5);    /* truncated, not overlaid */
	assert_int_equal(lua_tointeger(th, -5), 0640); /* an existing file's mode changes too */
	assert_true(lua_isnil(th, -4));
	assert_non_null(strstr(lua_tostring(th, -3), "f.bin.missing: no such file"));
	assert_false(lua_toboolean(th, -2));
	assert_non_null(strstr(lua_tostring(th, -1), "ctx.ssh.put: " TEST_USER "@127.0.0.1:"));
	assert_non_null(strstr(lua_tostring(th, -1),
			       "cannot open for writing: no such file or directory "
			       "(path: "));
	/* what the server's disk holds */
	snprintf(path, sizeof(path), "%s/home/f.bin", lab.dir);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0600);
	assert_int_equal(st.st_uid, pw->pw_uid);
	snprintf(path, sizeof(path), "%s/home/f.bin2", lab.dir);
	assert_int_equal(mo_file_read(&text, &len, path), 0);
	assert_string_equal(text, "short");
	mo_free(text);
	mo_task_free(j.t);
	mo_sandbox_free(sb);
	rt_fini(&rt);
}

/* Pinned fingerprints: the right one connects, a wrong one is refused
 * before authentication (the marker is never created), on a new and on a
 * cached connection alike. */
static void test_ssh_host_key_pin(void **state)
{
	mo_rt rt;
	mo_sandbox *sb;
	job j;
	char marker[128], want[512];
	const char *fresh =
		"local ctx, P = ...\n"
		"return ctx.ssh.exec{ host = P.host, port = P.port1, user = P.user, key_file = P.key_file,\n"
		"  host_key_sha256 = 'SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA',\n"
		"  command = 'touch ' .. P.dir .. '/home/marker' }\n";
	const char *cached =
		"local ctx, P = ...\n"
		"local r = ctx.ssh.exec{ " CONN1 ", command = 'echo ok' }\n"
		"local ok, err = pcall(ctx.ssh.exec, { host = P.host, port = P.port1, user = P.user,\n"
		"  key_file = P.key_file, host_key_sha256 = P.fp2,\n"
		"  command = 'touch ' .. P.dir .. '/home/marker' })\n"
		"return r.stdout, ok, err\n";
	(void)state;
	LAB_OR_SKIP();

	snprintf(marker, sizeof(marker), "%s/home/marker", lab.dir);
	unlink(marker);
	rt_init(&rt);
	assert_int_equal(mo_sandbox_new(&sb, NULL, "ssh test", &rt, NULL), 0);
	assert_int_equal(run1(&rt, sb, fresh, &j), MO_EMODULE);
	snprintf(
		want, sizeof(want),
		"ctx.ssh.exec: " TEST_USER "@127.0.0.1:%d: host key mismatch for "
		"127.0.0.1:%d: expected SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA, the server "
		"presented %s; refusing to connect",
		lab.port[0], lab.port[0], lab.fp[0]);
	assert_non_null(strstr(mo_error_last()->message, want));
	mo_task_free(j.t);

	assert_int_equal(run1(&rt, sb, cached, &j), 0);
	assert_string_equal(lua_tostring(mo_task_thread(j.t), -3), "ok\n");
	assert_false(lua_toboolean(mo_task_thread(j.t), -2));
	snprintf(want, sizeof(want), "expected %s, the server presented %s", lab.fp[1], lab.fp[0]);
	assert_non_null(strstr(lua_tostring(mo_task_thread(j.t), -1), want));
	mo_task_free(j.t);
	assert_int_equal(access(marker, F_OK), -1);
	mo_sandbox_free(sb);
	rt_fini(&rt);
}

static void write_known_hosts(const char *path, int port, const char *pub)
{
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	if (pub)
		fprintf(f, "# test\n[127.0.0.1]:%d %s\n", port, pub);
	fclose(f);
}

/* known_hosts: a recorded key connects; a host it does not know and a key
 * that differs from the recorded one are refused, naming both keys. */
static void test_ssh_known_hosts(void **state)
{
	mo_rt rt;
	mo_sandbox *sb;
	job j;
	char kh[128], marker[128], want[512];
	const char *chunk =
		"local ctx, P, kh = ...\n"
		"return ctx.ssh.exec{ host = P.host, port = P.port1, user = P.user, key_file = P.key_file,\n"
		"  known_hosts = kh, command = 'touch ' .. P.dir .. '/home/marker2; echo ran' }\n";
	(void)state;
	LAB_OR_SKIP();

	snprintf(kh, sizeof(kh), "%s/known_hosts", lab.dir);
	snprintf(marker, sizeof(marker), "%s/home/marker2", lab.dir);
	unlink(marker);
	rt_init(&rt);
	assert_int_equal(mo_sandbox_new(&sb, NULL, "ssh test", &rt, NULL), 0);

	for (int step = 0; step < 3; step++) {
		lua_State *L = mo_sandbox_L(sb);
		int status = 0;
		mo_rt_release(&rt); /* a fresh connection for each step */
		if (step == 0)
			write_known_hosts(kh, lab.port[1],
					  lab.pub[1]); /* knows only the other server */
		else if (step == 1)
			write_known_hosts(kh, lab.port[0], lab.pub[1]); /* the other server's key */
		else
			write_known_hosts(kh, lab.port[0], lab.pub[0]); /* the right key */
		memset(&j, 0, sizeof(j));
		assert_int_equal(mo_sandbox_loadbuffer(sb, chunk, strlen(chunk), "test.lua"), 0);
		lua_newtable(L);
		mo_open_ssh(L);
		lua_setfield(L, -2, "ssh");
		push_params(L);
		lua_pushstring(L, kh);
		assert_int_equal(mo_task_new(&j.t, sb, 3, "kh"), 0);
		mo_task_set_wake(j.t, on_wake, &j);
		j.rc = mo_task_resume(j.t, 0, &status, &j.nres);
		j.done = j.rc < 0 || status == MO_TASK_DONE;
		jobs_run(&rt, &j, 1);
		if (step == 0) {
			assert_int_equal(j.rc, MO_EMODULE);
			snprintf(
				want, sizeof(want),
				"unknown host key for 127.0.0.1:%d: the server "
				"presented %s, which %s does not record (expected: none); refusing to "
				"connect",
				lab.port[0], lab.fp[0], kh);
			assert_non_null(strstr(mo_error_last()->message, want));
		} else if (step == 1) {
			assert_int_equal(j.rc, MO_EMODULE);
			snprintf(want, sizeof(want),
				 "host key mismatch for 127.0.0.1:%d: %s records %s, "
				 "the server presented %s; refusing to connect",
				 lab.port[0], kh, lab.fp[1], lab.fp[0]);
			assert_non_null(strstr(mo_error_last()->message, want));
			assert_int_equal(access(marker, F_OK), -1);
		} else {
			assert_int_equal(j.rc, 0);
			lua_getfield(mo_task_thread(j.t), -1, "stdout");
			assert_string_equal(lua_tostring(mo_task_thread(j.t), -1), "ran\n");
			assert_int_equal(access(marker, F_OK), 0);
		}
		mo_task_free(j.t);
	}
	mo_sandbox_free(sb);
	rt_fini(&rt);
}

/* A key the server does not accept, and text that is no key, fail with a
 * message that names the target and never quotes the key. */
static void test_ssh_bad_key(void **state)
{
	mo_rt rt;
	mo_sandbox *sb;
	job j;
	lua_State *th;
	char *other = NULL, excerpt[24];
	const char *chunk =
		"local ctx, P = ...\n"
		"local ok1, e1 = pcall(ctx.ssh.exec, { host = P.host, port = P.port1, user = P.user,\n"
		"  key_file = P.bad_key_file, host_key_sha256 = P.fp1, command = 'true' })\n"
		"local ok2, e2 = pcall(ctx.ssh.exec, { host = P.host, port = P.port1, user = P.user,\n"
		"  key = 'garbage-that-is-no-key', host_key_sha256 = P.fp1, command = 'true' })\n"
		"local ok3, e3 = pcall(ctx.ssh.exec, { host = P.host, port = P.port1, user = P.user,\n"
		"  key = P.key:sub(1, 200), host_key_sha256 = P.fp1, command = 'true' })\n"
		"local r = ctx.ssh.exec{ host = P.host, port = P.port1, user = P.user, key = P.key,\n"
		"  host_key_sha256 = P.fp1, command = 'echo by-text' }\n"
		"return ok1, e1, ok2, e2, ok3, e3, r.stdout\n";
	(void)state;
	LAB_OR_SKIP();

	rt_init(&rt);
	assert_int_equal(mo_sandbox_new(&sb, NULL, "ssh test", &rt, NULL), 0);
	assert_int_equal(run1(&rt, sb, chunk, &j), 0);
	th = mo_task_thread(j.t);
	assert_false(lua_toboolean(th, -7));
	assert_non_null(strstr(lua_tostring(th, -6), "@127.0.0.1:"));
	assert_non_null(strstr(lua_tostring(th, -6), "authentication failed"));
	assert_non_null(strstr(lua_tostring(th, -6), "(command: true)"));
	assert_false(lua_toboolean(th, -5));
	assert_non_null(strstr(lua_tostring(th, -4), "cannot read the private key given in `key`"));
	assert_null(strstr(lua_tostring(th, -4), "garbage-that"));
	assert_false(lua_toboolean(th, -3));
	/* no part of the key text in the message */
	memcpy(excerpt, lab.keytext + 40, sizeof(excerpt) - 1);
	excerpt[sizeof(excerpt) - 1] = '\0';
	assert_null(strstr(lua_tostring(th, -2), excerpt));
	assert_string_equal(lua_tostring(th, -1), "by-text\n");
	assert_int_equal(mo_file_read(&other, NULL, lab.badkey), 0);
	memcpy(excerpt, other + 40, sizeof(excerpt) - 1);
	assert_null(strstr(lua_tostring(th, -6), excerpt));
	mo_free(other);
	mo_task_free(j.t);
	mo_sandbox_free(sb);
	rt_fini(&rt);
}

/* One session per (host, port, user, key) for the whole run: sequential
 * calls and four tasks at once on the same host add one login. */
static void test_ssh_reuse(void **state)
{
	mo_rt rt;
	mo_sandbox *sb;
	job j[4];
	int before;
	const char *seq = "local ctx, P = ...\n"
			  "local out = {}\n"
			  "for i = 1, 5 do out[i] = ctx.ssh.exec{ " CONN1
			  ", command = 'echo ' .. i }.stdout end\n"
			  "ctx.ssh.put{ " CONN1 ", path = P.dir .. '/home/reuse', content = 'r' }\n"
			  "out[6] = ctx.ssh.get{ " CONN1
			  ", path = P.dir .. '/home/reuse' }.content\n"
			  "return table.concat(out)\n";
	const char *par = "local ctx, P = ...\n"
			  "local a = ctx.ssh.exec{ " CONN1 ", command = 'echo a' }.stdout\n"
			  "local b = ctx.ssh.get{ " CONN1
			  ", path = P.dir .. '/home/reuse' }.content\n"
			  "return a .. b\n";
	(void)state;
	LAB_OR_SKIP();

	before = accepted(0);
	assert_true(before >= 0);
	rt_init(&rt);
	assert_int_equal(mo_sandbox_new(&sb, NULL, "ssh test", &rt, NULL), 0);
	assert_int_equal(run1(&rt, sb, seq, &j[0]), 0);
	assert_string_equal(lua_tostring(mo_task_thread(j[0].t), -1), "1\n2\n3\n4\n5\nr");
	mo_task_free(j[0].t);
	for (int i = 0; i < 4; i++)
		job_start(sb, par, &j[i]);
	jobs_run(&rt, j, 4);
	for (int i = 0; i < 4; i++) {
		assert_int_equal(j[i].rc, 0);
		assert_string_equal(lua_tostring(mo_task_thread(j[i].t), -1), "a\nr");
		mo_task_free(j[i].t);
	}
	assert_int_equal(accepted_once(0, before + 1), before + 1);
	/* a new run connects again */
	mo_rt_release(&rt);
	assert_int_equal(run1(&rt, sb, par, &j[0]), 0);
	mo_task_free(j[0].t);
	assert_int_equal(accepted_once(0, before + 2), before + 2);
	mo_sandbox_free(sb);
	rt_fini(&rt);
}

/* Two hosts at once: each command waits (bounded, 60 s: each needs its own
 * connection first) for the other to have started, which only happens
 * when both run at the same time. */
static void test_ssh_parallel_hosts(void **state)
{
	mo_rt rt;
	mo_sandbox *sb;
	job j[2];
	char chunk[2][1024];
	(void)state;
	LAB_OR_SKIP();

	for (int i = 0; i < 2; i++)
		snprintf(
			chunk[i], sizeof(chunk[i]),
			"local ctx, P = ...\n"
			"local me, other = '%s', '%s'\n"
			"local r = ctx.ssh.exec{ host = P.host, port = P.port%d, user = P.user,\n"
			"  key_file = P.key_file, host_key_sha256 = P.fp%d, command =\n"
			"  'cd ' .. P.dir .. '/home && rm -f ' .. me .. '.started; touch ' .. me .. "
			"'.started; i=0; while [ ! -e ' .. other .. '.started ] && [ $i -lt 600 ]; do sleep 0.1; "
			"i=$((i+1)); done; [ -e ' .. other .. '.started ] && echo met || echo alone' }\n"
			"return r.stdout\n",
			i ? "b" : "a", i ? "a" : "b", i + 1, i + 1);
	sh("rm -f %s/home/a.started %s/home/b.started", lab.dir, lab.dir);
	rt_init(&rt);
	assert_int_equal(mo_sandbox_new(&sb, NULL, "ssh test", &rt, NULL), 0);
	job_start(sb, chunk[0], &j[0]);
	job_start(sb, chunk[1], &j[1]);
	jobs_run(&rt, j, 2);
	for (int i = 0; i < 2; i++) {
		assert_int_equal(j[i].rc, 0);
		assert_string_equal(lua_tostring(mo_task_thread(j[i].t), -1), "met\n");
		mo_task_free(j[i].t);
	}
	mo_sandbox_free(sb);
	rt_fini(&rt);
}

/* Bad calls are Lua errors before anything is sent. */
static void test_ssh_bad_calls(void **state)
{
	mo_rt rt;
	mo_sandbox *sb;
	job j;
	static const struct {
		const char *args, *msg;
	} cases[] = {
		{ "{ host = P.host, user = P.user, key_file = P.key_file, command = 'true', colour = 1 }",
		  "ctx.ssh.exec: unknown field 'colour'" },
		{ "{ host = P.host, user = P.user, command = 'true' }",
		  "ctx.ssh.exec: give exactly one of 'key'" },
		{ "{ host = P.host, user = P.user, key = 'k', key_file = 'f', command = 'true' }",
		  "ctx.ssh.exec: give exactly one of 'key'" },
		{ "{ user = P.user, key_file = P.key_file, command = 'true' }",
		  "ctx.ssh.exec: field 'host' is required" },
		{ "{ host = P.host, user = P.user, key_file = P.key_file, port = 70000, command = 'true' }",
		  "ctx.ssh.exec: field 'port' must be an integer from 1 to 65535" },
		{ "{ host = P.host, user = P.user, key_file = P.key_file, host_key_sha256 = 'abc', "
		  "command = 'true' }",
		  "field 'host_key_sha256' must be a SHA256 fingerprint" },
		{ "{ host = P.host, user = P.user, key = { hash = 'x' }, command = 'true' }",
		  "field 'key' must be a string (a sensitive value read back from state is only a hash" },
	};
	(void)state;
	LAB_OR_SKIP();

	rt_init(&rt);
	assert_int_equal(mo_sandbox_new(&sb, NULL, "ssh test", &rt, NULL), 0);
	for (size_t i = 0; i < MO_ARRAY_SIZE(cases); i++) {
		char chunk[512];
		snprintf(chunk, sizeof(chunk), "local ctx, P = ...\nreturn ctx.ssh.exec(%s)\n",
			 cases[i].args);
		assert_int_equal(run1(&rt, sb, chunk, &j), MO_EMODULE);
		if (!strstr(mo_error_last()->message, cases[i].msg))
			fail_msg("case %zu: %s", i, mo_error_last()->message);
		mo_task_free(j.t);
	}
	/* not inside a task */
	{
		lua_State *L = mo_sandbox_L(sb);
		const char *chunk = "local ssh = ...\nreturn ssh.exec{ host = 'h', user = 'u', "
				    "key_file = 'k', command = 'true' }\n";
		assert_int_equal(mo_sandbox_loadbuffer(sb, chunk, strlen(chunk), "test.lua"), 0);
		mo_open_ssh(L);
		assert_int_not_equal(lua_pcall(L, 1, 1, 0), LUA_OK);
		assert_non_null(
			strstr(lua_tostring(L, -1), "must be called from a resource handler"));
		lua_pop(L, 1);
	}
	mo_sandbox_free(sb);
	rt_fini(&rt);
}

/* A sandbox closed while its task waits: the completion is discarded and
 * nothing leaks (run under valgrind / ASan). */
static void test_ssh_cancel(void **state)
{
	mo_rt rt;
	mo_sandbox *sb;
	job j[2];
	const char *chunk = "local ctx, P = ...\n"
			    "return ctx.ssh.exec{ " CONN1 ", command = 'sleep 0.3; echo late' }\n";
	(void)state;
	LAB_OR_SKIP();

	rt_init(&rt);
	assert_int_equal(mo_sandbox_new(&sb, NULL, "ssh test", &rt, NULL), 0);
	job_start(sb, chunk, &j[0]);
	job_start(sb, chunk, &j[1]);
	assert_false(j[0].done);
	/* one withdrawn explicitly, the other by closing the state */
	mo_ssh_cancel_task(j[0].t);
	mo_task_free(j[0].t);
	mo_task_free(j[1].t);
	mo_sandbox_free(sb);
	/* let the completions arrive: they find nothing to wake */
	for (int i = 0; i < 10; i++)
		assert_int_equal(mo_loop_run_once(rt.loop, 100), 0);
	mo_rt_release(&rt); /* joins the workers; frees what they leave */
	assert_false(j[0].woken);
	assert_false(j[1].woken);
	mo_loop_free(rt.loop);
}

/* ---- the worker pool ---------------------------------------------------- */

#define POOL_KEYS    3
#define POOL_PER_KEY 6

typedef struct {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int running[POOL_KEYS], max_running[POOL_KEYS];
	int order[POOL_KEYS][POOL_PER_KEY], norder[POOL_KEYS];
	int b_started, met;
	int done;
	pthread_t loop_thread;
	int done_elsewhere;
} pool_probe;

typedef struct {
	pool_probe *pp;
	int key, seq;
} pool_item;

static pool_probe probe;
static pool_item items[POOL_KEYS * POOL_PER_KEY + 4];

static void pool_work(void *ud)
{
	pool_item *it = ud;
	pool_probe *pp = it->pp;
	struct timespec ts = { 0, 2 * 1000 * 1000 };

	pthread_mutex_lock(&pp->mu);
	if (it->key >= 0) {
		pp->running[it->key]++;
		if (pp->running[it->key] > pp->max_running[it->key])
			pp->max_running[it->key] = pp->running[it->key];
		pp->order[it->key][pp->norder[it->key]++] = it->seq;
	}
	/* key 1's first job announces itself; key 0's first job waits for it
	 * (bounded, 60 s), which only works when both run at once */
	if (it->key == 1 && it->seq == 0) {
		pp->b_started = 1;
		pthread_cond_broadcast(&pp->cv);
	}
	if (it->key == 0 && it->seq == 0) {
		struct timespec until;
		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_sec += 60;
		while (!pp->b_started && pthread_cond_timedwait(&pp->cv, &pp->mu, &until) == 0)
			;
		pp->met = pp->b_started;
	}
	pthread_mutex_unlock(&pp->mu);
	nanosleep(&ts, NULL);
	pthread_mutex_lock(&pp->mu);
	if (it->key >= 0)
		pp->running[it->key]--;
	pthread_mutex_unlock(&pp->mu);
}

static void pool_done(void *ud)
{
	pool_item *it = ud;
	if (!pthread_equal(pthread_self(), it->pp->loop_thread))
		it->pp->done_elsewhere = 1;
	it->pp->done++;
}

/* Jobs of one key run one at a time in submission order; different keys
 * run at the same time; every done callback runs on the loop thread. */
static void test_ssh_pool_keys(void **state)
{
	mo_loop *loop;
	mo_pool *pool;
	static const char keys[POOL_KEYS] = { 'a', 'b', 'c' };
	int n = 0;
	(void)state;

	memset(&probe, 0, sizeof(probe));
	pthread_mutex_init(&probe.mu, NULL);
	pthread_cond_init(&probe.cv, NULL);
	probe.loop_thread = pthread_self();
	assert_int_equal(mo_loop_new(&loop), 0);
	assert_int_equal(mo_pool_new(&pool, loop, 0), MO_EINVAL);
	assert_int_equal(mo_pool_new(&pool, loop, 4), 0);
	assert_int_equal(mo_pool_size(pool), 4);
	for (int seq = 0; seq < POOL_PER_KEY; seq++)
		for (int k = 0; k < POOL_KEYS; k++) {
			items[n] = (pool_item){ &probe, k, seq };
			assert_int_equal(
				mo_pool_submit(pool, &keys[k], pool_work, pool_done, &items[n]), 0);
			n++;
		}
	for (int i = 0; i < 4; i++) {
		items[n] = (pool_item){ &probe, -1, i };
		assert_int_equal(mo_pool_submit(pool, NULL, pool_work, pool_done, &items[n]), 0);
		n++;
	}
	while (probe.done < n)
		assert_int_equal(mo_loop_run_once(loop, 1000), 0);
	mo_pool_free(pool);
	assert_false(probe.done_elsewhere);
	assert_true(probe.met);
	for (int k = 0; k < POOL_KEYS; k++) {
		assert_int_equal(probe.max_running[k], 1);
		assert_int_equal(probe.norder[k], POOL_PER_KEY);
		for (int seq = 0; seq < POOL_PER_KEY; seq++)
			assert_int_equal(probe.order[k][seq], seq);
	}
	assert_int_equal(mo_loop_pending(loop), 0);
	mo_loop_free(loop);
	pthread_cond_destroy(&probe.cv);
	pthread_mutex_destroy(&probe.mu);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_ssh_pool_keys),   cmocka_unit_test(test_ssh_exec),
		cmocka_unit_test(test_ssh_exec_large),  cmocka_unit_test(test_ssh_timeout),
		cmocka_unit_test(test_ssh_put_get),     cmocka_unit_test(test_ssh_host_key_pin),
		cmocka_unit_test(test_ssh_known_hosts), cmocka_unit_test(test_ssh_bad_key),
		cmocka_unit_test(test_ssh_reuse),       cmocka_unit_test(test_ssh_parallel_hosts),
		cmocka_unit_test(test_ssh_bad_calls),   cmocka_unit_test(test_ssh_cancel),
	};
	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
