/*
 * emu.h - run a lab emulator binary as a child of a unit test and talk to
 * it over HTTP.
 *
 * The lab emulators (labcloud, redfish, fabric, k8s) share one command
 * line contract: `--listen HOST:PORT --port-file FILE` makes them bind
 * (port 0: a free port), write the bound port number to FILE once they
 * listen, and exit with status 0 on SIGTERM.  An emu_proc owns one such
 * child and a private temporary directory holding its port file and a
 * state file path the test may pass with --state-file.
 *
 * Functions return 0 or a negative MO_E* code with the detail in
 * mo_error_last(); they never abort the test, so the caller asserts
 * (EMU_OK).  No
 * global state: the caller calls curl_global_init() once in main().
 */
#ifndef MO_TEST_EMU_H
#define MO_TEST_EMU_H

#include "common.h"

#include <curl/curl.h>
#include <jansson.h>
#include <sys/types.h>

typedef struct emu_proc {
	char bin[512];              /* the emulator binary */
	const char *const *always;  /* NULL-terminated arguments added to every
				       start (after --port-file), or NULL */
	pid_t pid;                  /* the running child, or 0 */
	unsigned port;              /* the port read at the last start (kept after a stop) */
	char dir[64];               /* the private temporary directory */
	char port_file[96];         /* dir/port */
	char state_file[96];        /* dir/state.json (never created by the helper) */
	char base[64];              /* "http://127.0.0.1:PORT" */
} emu_proc;

/* An answer.  The header values are the last of each name, trimmed;
 * json is the body decoded when the Content-Type mentions json and the
 * body parses, else NULL. */
typedef struct emu_resp {
	long status;
	mo_buf body;
	json_t *json;
	char content_type[128];
	char etag[64];
	char allow[128];
	char www_auth[128];         /* WWW-Authenticate */
	char retry_after[32];
	char auth_token[64];        /* X-Auth-Token */
	char location[256];
	char odata_version[16];     /* OData-Version */
	struct curl_slist *hdrs_;   /* request headers, private */
} emu_resp;

/* A request.  Zero fields take the defaults. */
typedef struct emu_req {
	const char *method;         /* NULL: "GET" */
	const char *path;           /* appended to the base URL */
	const char *body;           /* NULL: no body */
	size_t body_len;            /* 0: strlen(body) */
	const char *const *headers; /* NULL-terminated extra header lines, or NULL */
	const char *userpwd;        /* HTTP Basic "user:password", or NULL */
	const char *bearer;         /* sent as "Authorization: Bearer <bearer>", or NULL */
	int always_json;            /* send "Content-Type: application/json" even without a body */
} emu_req;

/* Path of emulator name into out: the environment variable named as name
 * in upper case (LABCLOUD, K8S, ...) when set and not empty, else
 * dir "/" name.  dir is the build directory (the test's MO_BINARY_DIR). */
int emu_locate(char *out, size_t n, const char *name, const char *dir);

/* A new emu_proc for emulator name found by emu_locate(name, dir), with
 * its temporary directory /tmp/mo-<name>-XXXXXX made; nothing is started.
 * NULL on failure (detail in mo_error_last()). */
emu_proc *emu_new(const char *name, const char *dir);

/* Stop the child if it runs (emu_stop), remove the port and state files
 * and the directory, free p.  Returns emu_stop's result; p may be NULL. */
int emu_free(emu_proc *p);

/* A cmocka teardown for a test whose state is an emu_proc: emu_free, so
 * the test fails unless the child stops cleanly on SIGTERM (exit 0). */
int emu_teardown(void **state);

/* Start the emulator: bin --listen LISTEN --port-file FILE [always...]
 * [args...] with stdout on /dev/null, and wait up to 60 s for the port
 * file.  listen NULL means "127.0.0.1:0"; args is NULL-terminated or NULL.
 * Fails (MO_ERROR) when the binary is missing, the child exits first or
 * the file does not come; a child that did start is then killed and reaped. */
int emu_startv(emu_proc *p, const char *listen, const char *const *args);
/* emu_startv on 127.0.0.1:0 with the NULL-terminated arguments after p. */
int emu_start(emu_proc *p, ...) __attribute__((sentinel));

/* SIGTERM and reap within 30 s (else SIGKILL).  0 when the child exited
 * with status 0 or none runs, MO_ERROR otherwise (reason on stderr too). */
int emu_stop(emu_proc *p);
/* SIGKILL and reap, giving the child no chance to clean up. */
void emu_kill(emu_proc *p);

/* Run bin with the NULL-terminated arguments (argv[1..]), stdout and
 * stderr on /dev/null; the exit status, or -1 when it did not exit. */
int emu_run(const char *bin, const char *const *args);

/* A ready easy handle for req against p (for use in a multi handle);
 * out is reset and collects the answer.  NULL on failure.  Finish with
 * emu_complete(). */
CURL *emu_prepare(const emu_proc *p, const emu_req *req, emu_resp *out);
/* After the transfer: record the status, decode JSON, clean up h (which
 * must no longer be in a multi handle) and the request headers. */
void emu_complete(CURL *h, emu_resp *out);

/* Perform req synchronously (30 s timeout); MO_EHTTP on a transport
 * failure.  out is the caller's (emu_resp_free) either way. */
int emu_send(const emu_proc *p, const emu_req *req, emu_resp *out);
/* emu_send of method path with an optional JSON body. */
int emu_http(const emu_proc *p, const char *method, const char *path, const char *body,
	     emu_resp *out);
void emu_resp_free(emu_resp *r);

void emu_sleep_ms(long ms);

/* In a cmocka test (cmocka.h included before the use): fail the test with
 * the error's detail unless expr, an emu_* call, returns 0. */
#define EMU_OK(expr)                                                                    \
	do {                                                                            \
		if ((expr) != 0)                                                        \
			fail_msg("%s: %s", #expr, mo_error_last()->message);            \
	} while (0)

#endif
