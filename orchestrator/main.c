/*
 * main.c - the mecorch command line.  Parses arguments, then calls the core
 * library; every subcommand is one row of the `commands` table below, the
 * single place to see what exists.  Exit codes: docs/cli.md.
 */
#include "api.h"
#include "common.h"
#include "engine.h"
#include "exec.h"
#include "graph.h"
#include "loop.h"
#include "plan.h"
#include "planner.h"
#include "render.h"
#include "runtime.h"
#include "sandbox.h"
#include "secret.h"
#include "source.h"
#include "state.h"

#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Option bits: which flags a command accepts. */
enum {
	F_STATE = 1 << 0,  /* --state */
	F_VARS = 1 << 1,   /* --var, --var-file */
	F_RUN = 1 << 2,    /* --parallelism, --fail-fast, limits, http settings */
	F_JSON = 1 << 3,   /* --json */
	F_PLAN = 1 << 4,   /* --out, --detailed-exitcode, --destroy */
	F_APPROVE = 1 << 5,/* --auto-approve */
	F_REFRESH = 1 << 6,/* --refresh */
	F_SRC = 1 << 7,    /* --lock-file, --cache-dir */
	F_UPGRADE = 1 << 8,/* --upgrade */
	F_LIMITS = 1 << 9, /* --task-memory, --task-instructions */
	F_DETAIL = 1 << 10,/* --detailed-exitcode alone (refresh) */
};

typedef struct cli {
	const char *cmd;
	const char *state_path;
	const char *plan_path;
	const char *out_path;
	const char *lock_path;
	const char *cache_dir;
	json_t *vars;
	int parallelism, fail_fast, json, auto_approve, detailed, destroy, refresh, upgrade;
	int color_out, color_err; /* ANSI colours on stdout, on stderr */
	int lease_s;
	int mode, saved;
	mo_sandbox_limits limits;
	mo_rt rt;
	mo_state *st;
	mo_sources *src;
	mo_plan *p;
	/* The live status line on a terminal (stderr).  out_mu serialises every
	 * write to stderr of the callbacks and of the ticker thread, which
	 * redraws the line while actions run so that "elapsed" keeps moving. */
	int tty;
	int64_t t0, last_status;
	size_t status_len;
	size_t done, total, inflight; /* progress of the last event */
	int progress;                 /* a status line is wanted */
	pthread_mutex_t out_mu;
	pthread_cond_t tick_cv;
	pthread_t ticker;
	int ticker_on, ticker_quit;
	char **args;
	int nargs;
} cli;

static volatile sig_atomic_t interrupted;
static mo_loop *signal_loop;

static void on_sigint(int sig)
{
	static const char msg[] = "\nInterrupt received: finishing the actions in flight "
				  "(press Ctrl-C again to stop at once).\n";
	(void)sig;
	if (interrupted) {
		static const char hard[] = "\nStopped at once; the next run resolves what was in flight.\n";
		if (write(2, hard, sizeof(hard) - 1) < 0) {
		}
		_exit(130);
	}
	interrupted = 1;
	if (write(2, msg, sizeof(msg) - 1) < 0) {
	}
	if (signal_loop)
		mo_loop_wakeup(signal_loop);
}

/* ---- output helpers ----------------------------------------------------- */

/* Erase the status line.  Callers hold out_mu, or no ticker runs. */
static void clear_status(cli *c)
{
	if (c->tty && c->status_len) {
		fprintf(stderr, "\r\033[K");
		c->status_len = 0;
	}
}

/* (Re)draw the status line from the last progress seen; out_mu held. */
static void draw_status(cli *c, int64_t now)
{
	char line[160];
	int n;
	clear_status(c);
	c->last_status = now;
	n = snprintf(line, sizeof(line), "[%zu/%zu] %zu in flight, %.1fs", c->done, c->total, c->inflight,
		     (now - c->t0) / 1000.0);
	c->status_len = n > 0 ? (size_t)n : 1;
	fprintf(stderr, "%s%s%s", c->color_err ? "\033[2m" : "", line, c->color_err ? "\033[0m" : "");
	fflush(stderr);
}

#define TICK_MS 200

/* The ticker thread: every TICK_MS, redraw the status line while progress
 * is wanted, until ticker_quit. */
static void *ticker_main(void *ud)
{
	cli *c = ud;
	struct timespec ts;
	pthread_mutex_lock(&c->out_mu);
	while (!c->ticker_quit) {
		clock_gettime(CLOCK_MONOTONIC, &ts);
		ts.tv_nsec += TICK_MS * 1000000L;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		while (!c->ticker_quit && pthread_cond_timedwait(&c->tick_cv, &c->out_mu, &ts) == 0) {
		}
		if (!c->ticker_quit && c->progress)
			draw_status(c, mo_now_ms());
	}
	pthread_mutex_unlock(&c->out_mu);
	return NULL;
}

/* Start the ticker (stderr is a terminal, progress began); out_mu held.
 * The thread blocks SIGINT and SIGTERM, which stay with the main thread. */
static void ticker_start(cli *c)
{
	sigset_t block, old;
	if (c->ticker_on)
		return;
	sigemptyset(&block);
	sigaddset(&block, SIGINT);
	sigaddset(&block, SIGTERM);
	sigaddset(&block, SIGPIPE);
	pthread_sigmask(SIG_BLOCK, &block, &old);
	c->ticker_quit = 0;
	if (pthread_create(&c->ticker, NULL, ticker_main, c) == 0)
		c->ticker_on = 1;
	pthread_sigmask(SIG_SETMASK, &old, NULL);
}

/* The end of a stretch of progress (the plan is shown, a prompt, the
 * summary, an error): stop the ticker and erase the status line.  Must not
 * be called with out_mu held. */
static void end_progress(cli *c)
{
	pthread_mutex_lock(&c->out_mu);
	c->progress = 0;
	c->ticker_quit = 1;
	pthread_cond_signal(&c->tick_cv);
	pthread_mutex_unlock(&c->out_mu);
	if (c->ticker_on) {
		pthread_join(c->ticker, NULL);
		c->ticker_on = 0;
	}
	pthread_mutex_lock(&c->out_mu);
	clear_status(c);
	fflush(stderr);
	pthread_mutex_unlock(&c->out_mu);
}

static void json_line(json_t *ev)
{
	char *s;
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	json_object_set_new(ev, "ts_ms", json_integer((json_int_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000));
	s = json_dumps(ev, JSON_COMPACT);
	json_decref(ev);
	if (s) {
		printf("%s\n", s);
		fflush(stdout);
		free(s);
	}
}

static int fail(cli *c, int rc)
{
	const mo_error *e = mo_error_last();
	end_progress(c);
	if (c->json)
		json_line(json_pack("{s:s,s:s,s:s,s:i}", "type", "error", "code", mo_code_name(rc), "message",
				    e->message[0] ? e->message : mo_code_name(rc), "exit", mo_code_exit_status(rc)));
	else
		fprintf(stderr, "%serror:%s %s\n", c->color_err ? "\033[31;1m" : "", c->color_err ? "\033[0m" : "",
			e->message[0] ? e->message : mo_code_name(rc));
	return mo_code_exit_status(rc);
}

static void on_log(void *ud, const char *who, const char *level, const char *msg)
{
	cli *c = ud;
	const char *want = getenv("MECORCH_LOG");
	if (!strcmp(level, "debug") && !(want && !strcmp(want, "debug")))
		return;
	pthread_mutex_lock(&c->out_mu);
	if (c->json) {
		json_line(json_pack("{s:s,s:s,s:s,s:s}", "type", "log", "who", who, "level", level, "message", msg));
	} else {
		clear_status(c);
		fprintf(stderr, "%s: %s: %s\n", who, level, msg);
	}
	pthread_mutex_unlock(&c->out_mu);
}

static void on_event(void *ud, const mo_event *ev)
{
	cli *c = ud;
	int64_t now = mo_now_ms();
	int colr = c->color_err;
	pthread_mutex_lock(&c->out_mu);
	if (c->json) {
		json_t *j = json_pack("{s:s,s:s?,s:s?,s:I,s:I,s:I}", "type", ev->type, "address", ev->address,
				      "action", ev->action, "done", (json_int_t)ev->done, "total",
				      (json_int_t)ev->total, "in_flight", (json_int_t)ev->inflight);
		if (ev->message)
			json_object_set_new(j, "message", json_string(ev->message));
		if (!strcmp(ev->type, "ok") || !strcmp(ev->type, "error"))
			json_object_set_new(j, "elapsed_ms", json_integer(ev->elapsed_ms));
		json_line(j);
		pthread_mutex_unlock(&c->out_mu);
		return;
	}
	clear_status(c);
	if (!strcmp(ev->type, "ok"))
		fprintf(stderr, "%s%s%s: %s done in %.2fs\n", colr ? "\033[32m" : "", ev->address,
			colr ? "\033[0m" : "", ev->action, ev->elapsed_ms / 1000.0);
	else if (!strcmp(ev->type, "error"))
		fprintf(stderr, "%s%s: %s failed%s:\n  %s\n", colr ? "\033[31m" : "", ev->address,
			ev->action, colr ? "\033[0m" : "", ev->message);
	else if (!strcmp(ev->type, "skip"))
		fprintf(stderr, "%s: %s\n", ev->address, ev->message);
	else if (!strcmp(ev->type, "drift"))
		fprintf(stderr, "%s: drift detected (%s)\n", ev->address, ev->message);
	else if (!strcmp(ev->type, "recover"))
		fprintf(stderr, "%s: pending operation of an interrupted run resolved (%s)\n", ev->address,
			ev->message);
	else if (!strcmp(ev->type, "start") && !c->tty)
		fprintf(stderr, "%s: %s...\n", ev->address, ev->action);
	if (c->tty) {
		c->done = ev->done;
		c->total = ev->total;
		c->inflight = ev->inflight;
		c->progress = 1;
		ticker_start(c);
		if (now - c->last_status >= 100 || ev->done == ev->total)
			draw_status(c, now);
	}
	pthread_mutex_unlock(&c->out_mu);
}

/* ---- set-up and tear-down --------------------------------------------------- */

static int open_state(cli *c, const char *operation)
{
	int rc;
	mo_lock_info holder;
	memset(&holder, 0, sizeof(holder));
	if ((rc = mo_state_open(&c->st, c->state_path)) < 0)
		return rc;
	if (operation && (rc = mo_state_lock(c->st, operation, c->lease_s, &holder)) < 0) {
		mo_lock_info_clear(&holder);
		return rc;
	}
	mo_lock_info_clear(&holder);
	return 0;
}

/* open_state() for commands that read or edit what a state holds: a state
 * that does not exist is an error (a mistyped --state must not create an
 * empty database and report it). */
static int open_existing_state(cli *c, const char *operation)
{
	if (access(c->state_path, F_OK) != 0)
		return mo_error_set(MO_ENOTFOUND, "no state at %s", c->state_path);
	return open_state(c, operation);
}

static int open_sources(cli *c, int mode)
{
	mo_source_opts so;
	char *dir = NULL, *slash;
	int rc;
	memset(&so, 0, sizeof(so));
	dir = mo_strdup(c->plan_path ? c->plan_path : ".");
	if ((slash = strrchr(dir, '/')))
		*slash = '\0';
	else
		strcpy(dir, ".");
	so.plan_dir = dir;
	so.lock_path = c->lock_path;
	so.cache_dir = c->cache_dir;
	so.mode = mode;
	rc = mo_sources_open(&c->src, &so);
	mo_free(dir);
	return rc;
}

static int load_plan(cli *c, int skip_declare)
{
	mo_plan_opts po;
	memset(&po, 0, sizeof(po));
	po.path = c->plan_path;
	po.vars = c->vars;
	po.rt = &c->rt;
	po.sources = c->src;
	po.limits = &c->limits;
	po.skip_declare = skip_declare;
	return mo_plan_load(&c->p, &po);
}

static void exec_opts(cli *c, mo_exec_opts *o)
{
	mo_exec_opts_defaults(o);
	o->parallelism = c->parallelism;
	o->fail_fast = c->fail_fast;
	o->lease_s = c->lease_s;
	o->on_event = on_event;
	o->ud = c;
}

static void print_plan(cli *c, mo_changeset *cs)
{
	if (c->json) {
		json_t *doc = mo_render_plan_json(cs);
		json_object_set_new(doc, "type", json_string("plan"));
		json_line(doc);
	} else {
		mo_buf b = MO_BUF_INIT;
		mo_render_opts ro = { c->color_out, 0 };
		mo_render_plan_text(cs, &ro, &b);
		fputs(b.ptr ? b.ptr : "", stdout);
		fflush(stdout);
		mo_buf_free(&b);
	}
}

/* ---- saved plans ---------------------------------------------------------- */

static int is_saved_plan(const char *path)
{
	char *data = NULL;
	size_t len;
	int yes = 0;
	if (mo_file_read(&data, &len, path) < 0)
		return 0;
	for (size_t i = 0; i < len; i++) {
		if (data[i] == ' ' || data[i] == '\n' || data[i] == '\t' || data[i] == '\r')
			continue;
		yes = data[i] == '{';
		break;
	}
	mo_free(data);
	return yes;
}

static int write_saved_plan(cli *c, mo_state *st, mo_changeset *cs, mo_resource **list, size_t n)
{
	const mo_plan *p = cs->plan;
	json_t *doc = json_object(), *vars = json_object(), *recs = json_object();
	char digest[65], *s;
	unsigned char key[32];
	int rc;
	mo_state_secret_key(st, key);
	for (size_t i = 0; p && i < p->nvars; i++) {
		json_t *v = json_object_get(p->var_values, p->vars[i].name);
		if (!v)
			continue;
		json_object_set_new(vars, p->vars[i].name,
				    p->vars[i].sensitive ? mo_secret_hash(key, v) : json_incref(v));
	}
	for (size_t i = 0; i < n; i++) {
		json_object_set_new(recs, list[i]->address,
				    json_pack("{s:s?,s:O?,s:O?}", "id", list[i]->id, "props", list[i]->props,
					      "outputs", list[i]->outputs));
	}
	mo_render_digest(cs, digest);
	json_object_set_new(doc, "format", json_string("mecorch-plan"));
	json_object_set_new(doc, "format_version", json_integer(1));
	json_object_set_new(doc, "plan", json_string(p ? p->path : ""));
	json_object_set_new(doc, "lineage", json_string(mo_state_lineage(st)));
	json_object_set_new(doc, "serial", json_integer(mo_state_serial(st)));
	json_object_set_new(doc, "destroy", json_boolean(c->destroy));
	json_object_set_new(doc, "refresh", json_boolean(c->refresh));
	json_object_set_new(doc, "variables", vars);
	json_object_set_new(doc, "prior", recs);
	json_object_set_new(doc, "digest", json_string(digest));
	json_object_set_new(doc, "changes", mo_render_plan_json(cs));
	s = json_dumps(doc, JSON_INDENT(1) | JSON_SORT_KEYS);
	json_decref(doc);
	if (!s)
		return mo_error_set(MO_ENOMEM, "out of memory");
	rc = mo_file_write_atomic(c->out_path, s, strlen(s));
	free(s);
	return rc;
}

/* Load a saved plan: sets plan path, vars, destroy; returns the document. */
static int read_saved_plan(cli *c, const char *path, json_t **out)
{
	json_error_t jerr;
	json_t *doc = json_load_file(path, 0, &jerr), *vars;
	const char *k;
	json_t *v;
	if (!doc)
		return mo_error_set(MO_EINVAL, "%s:%d: not a saved plan: %s", path, jerr.line, jerr.text);
	if (!json_is_string(json_object_get(doc, "format")) || strcmp(json_string_value(json_object_get(doc, "format")), "mecorch-plan") ||
	    json_integer_value(json_object_get(doc, "format_version")) != 1) {
		json_decref(doc);
		return mo_error_set(MO_EINVAL, "%s: not a mecorch saved plan (format mecorch-plan, version 1)",
				    path);
	}
	c->plan_path = json_string_value(json_object_get(doc, "plan"));
	c->destroy = json_is_true(json_object_get(doc, "destroy"));
	vars = json_object_get(doc, "variables");
	json_object_foreach(vars, k, v) {
		if (mo_secret_is_hash(v)) {
			if (!json_object_get(c->vars, k)) {
				char *env = mo_sprintf("MECORCH_VAR_%s", k);
				int have = env && getenv(env);
				mo_free(env);
				if (!have) {
					int rc = mo_error_set(MO_EINVAL, "%s: sensitive variable '%s' is not "
							      "stored in saved plans: pass it again with "
							      "--var or MECORCH_VAR_%s", path, k, k);
					json_decref(doc); /* k lives in doc */
					return rc;
				}
			}
			continue;
		}
		if (json_object_get(c->vars, k)) {
			int rc = mo_error_set(MO_EINVAL, "%s: variable '%s' is fixed by the saved plan; "
					      "make a new plan to change it", path, k);
			json_decref(doc); /* k lives in doc */
			return rc;
		}
		json_object_set(c->vars, k, v);
	}
	*out = doc;
	return 0;
}

static void print_drift(cli *c, json_t *drift)
{
	size_t i;
	json_t *d;
	if (c->json) {
		json_line(json_pack("{s:s,s:O}", "type", "drift", "resources", drift ? drift : json_array()));
		return;
	}
	if (!drift || json_array_size(drift) == 0) {
		printf("No drift: every resource matches what its module reads back.\n");
		return;
	}
	printf("Drift: %zu resource(s) differ from what the state recorded:\n", json_array_size(drift));
	json_array_foreach(drift, i, d) {
		char *ch = mo_render_value(json_object_get(d, "changes"), 200);
		printf("  %s: %s%s%s\n", json_string_value(json_object_get(d, "address")),
		       json_string_value(json_object_get(d, "kind")), ch && strcmp(ch, "null") ? " " : "",
		       ch && strcmp(ch, "null") ? ch : "");
		mo_free(ch);
	}
}

static int confirm(cli *c, const char *what)
{
	char line[64];
	if (c->auto_approve)
		return 0;
	if (!isatty(0))
		return mo_error_set(MO_EINVAL, "%s needs --auto-approve when standard input is not a terminal",
				    what);
	printf("\nDo you want to perform these actions?\n  Only 'yes' will be accepted: ");
	fflush(stdout);
	if (!fgets(line, sizeof(line), stdin) || strcmp(line, "yes\n"))
		return mo_error_set(MO_EINVAL, "%s cancelled", what);
	return 0;
}

/* The message of an error of the summary, without its address: messages
 * of failed actions usually begin with "ADDRESS: " already. */
static const char *without_address(const char *address, const char *message)
{
	size_t n = address ? strlen(address) : 0;
	if (!message)
		return "";
	if (n && !strncmp(message, address, n) && message[n] == ':')
		return message[n + 1] == ' ' ? message + n + 2 : message + n + 1;
	return message;
}

static int print_result(cli *c, mo_exec_result *r, int rc)
{
	end_progress(c);
	if (c->json) {
		json_line(json_pack("{s:s,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:I,s:I,s:b,s:O}", "type", "summary",
				    "created", (int)r->created, "updated", (int)r->updated, "replaced",
				    (int)r->replaced, "deleted", (int)r->deleted, "unchanged", (int)r->noop,
				    "failed", (int)r->failed, "skipped", (int)r->skipped, "elapsed_ms",
				    (json_int_t)r->elapsed_ms, "cpu_us", (json_int_t)r->cpu_us,
				    "interrupted", r->interrupted, "errors", r->errors));
		if (r->outputs && json_object_size(r->outputs)) {
			json_t *o = json_deep_copy(r->outputs), *v;
			const char *k;
			json_object_foreach(o, k, v) if (json_is_true(json_object_get(v, "sensitive")))
				json_object_set_new(v, "value", json_null());
			json_line(json_pack("{s:s,s:o}", "type", "outputs", "outputs", o));
		}
	} else {
		size_t i;
		json_t *e;
		printf("\n%s%s:%s %zu created, %zu updated, %zu replaced, %zu destroyed, %zu failed, "
		       "%zu not applied, in %.2fs.\n",
		       c->color_out ? "\033[1m" : "",
		       c->mode == MO_RUN_DESTROY ? (rc == 0 ? "Destroy complete" : "Destroy incomplete")
						 : (rc == 0 ? "Apply complete" : "Apply incomplete"),
		       c->color_out ? "\033[0m" : "", r->created, r->updated, r->replaced, r->deleted,
		       r->failed, r->skipped, r->elapsed_ms / 1000.0);
		json_array_foreach(r->errors, i, e) {
			const char *tb = json_string_value(json_object_get(e, "traceback"));
			const char *addr = json_string_value(json_object_get(e, "address"));
			fprintf(stderr, "\n%s: %s\n", addr ? addr : "",
				without_address(addr, json_string_value(json_object_get(e, "message"))));
			if (tb)
				fprintf(stderr, "%s\n", tb);
		}
		if (r->outputs && json_object_size(r->outputs)) {
			mo_buf b = MO_BUF_INIT;
			mo_render_outputs_text(r->outputs, 0, &b);
			printf("\nOutputs:\n\n%s", b.ptr ? b.ptr : "");
			mo_buf_free(&b);
		}
	}
	return rc;
}

/* ---- commands --------------------------------------------------------------- */

static int on_planned(void *ud, mo_state *st, mo_changeset *cs, mo_resource **records, size_t n);

/* plan --destroy: show (and save) the destruction, then stop. */
static int on_planned_stop(void *ud, mo_state *st, mo_changeset *cs, mo_resource **records, size_t n)
{
	int rc = on_planned(ud, st, cs, records, n);
	return rc < 0 ? rc : 1;
}

/* The hook between planning and applying: show the plan, save it, confirm. */
static int on_planned(void *ud, mo_state *st, mo_changeset *cs, mo_resource **records, size_t n)
{
	cli *c = ud;
	int pending = cs->n_create + cs->n_update + cs->n_replace + cs->n_delete > 0;
	int rc;
	end_progress(c);
	if (!c->saved)
		print_plan(c, cs);
	if (c->out_path) {
		if ((rc = write_saved_plan(c, st, cs, records, n)) < 0)
			return rc;
		if (!c->json)
			printf("\nSaved the plan to %s. Apply exactly this plan with: mecorch apply %s\n",
			       c->out_path, c->out_path);
	}
	if (c->mode == MO_RUN_PLAN || !pending || c->saved)
		return 0;
	c->t0 = mo_now_ms();
	return confirm(c, c->mode == MO_RUN_DESTROY ? "destroy" : "apply");
}

static void run_opts(cli *c, mo_run_opts *o, int mode)
{
	mo_run_opts_defaults(o);
	o->mode = mode;
	o->plan_path = c->plan_path;
	o->state_path = c->state_path;
	o->vars = c->vars;
	o->lock_path = c->lock_path;
	o->cache_dir = c->cache_dir;
	o->refresh = c->refresh;
	o->parallelism = c->parallelism;
	o->fail_fast = c->fail_fast;
	o->lease_s = c->lease_s;
	o->limits = c->limits;
	o->http = c->rt.http;
	o->on_event = on_event;
	o->log = on_log;
	o->ud = c;
	o->planned = on_planned;
	o->interrupted = &interrupted;
}

/* plan, apply and destroy share this. */
static int run_plan_apply(cli *c, int mode)
{
	mo_run_opts o;
	mo_run_result res;
	json_t *saved = NULL;
	int rc;
	memset(&res, 0, sizeof(res));
	c->mode = mode;
	if (mode == MO_RUN_APPLY && c->plan_path && is_saved_plan(c->plan_path)) {
		if ((rc = read_saved_plan(c, c->plan_path, &saved)) < 0)
			return fail(c, rc);
		c->saved = 1;
		c->refresh = 0;
	}
	run_opts(c, &o, mode);
	if (saved) {
		o.expect_lineage = json_string_value(json_object_get(saved, "lineage"));
		o.expect_serial = json_integer_value(json_object_get(saved, "serial"));
		o.expect_digest = json_string_value(json_object_get(saved, "digest"));
		o.prior = json_object_get(saved, "prior");
		o.prior_refreshed = json_is_true(json_object_get(saved, "refresh"));
		if (c->destroy)
			o.mode = MO_RUN_DESTROY;
	}
	if (mode == MO_RUN_PLAN && c->destroy) {
		/* plan --destroy: compute the destruction, never apply it */
		o.mode = MO_RUN_DESTROY;
		c->mode = MO_RUN_PLAN;
		o.planned = on_planned_stop;
	}
	c->t0 = mo_now_ms();
	rc = mo_run(&o, &res);
	end_progress(c);
	if (res.applied && (rc == 0 || rc == MO_EFAILED || rc == MO_EINTR)) {
		print_result(c, &res.exec, rc);
		if (rc != 0)
			fail(c, rc);
		rc = rc < 0 ? mo_code_exit_status(rc) : 0;
	} else if (rc < 0) {
		rc = fail(c, rc);
	} else if (mode == MO_RUN_PLAN) {
		rc = c->detailed && res.changes ? 2 : 0;
	} else if (!res.changes && !c->json) {
		printf("\nNothing to do.\n");
	}
	mo_run_result_clear(&res);
	json_decref(saved);
	return rc;
}

static int cmd_plan(cli *c) { return run_plan_apply(c, MO_RUN_PLAN); }
static int cmd_apply(cli *c) { return run_plan_apply(c, MO_RUN_APPLY); }
static int cmd_destroy(cli *c) { return run_plan_apply(c, MO_RUN_DESTROY); }

static int cmd_validate(cli *c)
{
	int rc;
	if ((rc = open_sources(c, MO_SOURCES_LOCKED)) < 0 || (rc = load_plan(c, 0)) < 0)
		return fail(c, rc);
	if (c->json)
		json_line(json_pack("{s:s,s:b,s:i,s:i}", "type", "validate", "valid", 1, "modules",
				    (int)c->p->ninsts, "resources", (int)c->p->nres));
	else
		printf("The plan is valid: %zu module instance(s), %zu resource(s), %zu output(s).\n",
		       c->p->ninsts, c->p->nres, json_object_size(c->p->outputs));
	return 0;
}

static int cmd_init(cli *c)
{
	int rc;
	if ((rc = open_sources(c, c->upgrade ? MO_SOURCES_UPGRADE : MO_SOURCES_INIT)) < 0 ||
	    (rc = load_plan(c, 1)) < 0 || (rc = mo_sources_commit(c->src)) < 0)
		return fail(c, rc);
	for (size_t i = 0; i < c->p->ninsts; i++) {
		mo_instance *in = c->p->insts[i];
		if (c->json)
			json_line(json_pack("{s:s,s:s,s:s,s:s?,s:s}", "type", "module", "name", in->name,
					    "source", in->shown, "version", in->version, "pinned", in->pinned));
		else
			printf("module %s: %s%s%s\n  -> %s\n", in->name, in->shown, in->version ? " " : "",
			       in->version ? in->version : "", in->pinned);
	}
	if (!c->json)
		printf("mecorch is initialised: %zu module(s) resolved.\n", c->p->ninsts);
	return 0;
}

static int cmd_refresh(cli *c)
{
	mo_run_opts o;
	mo_run_result res;
	int rc;
	run_opts(c, &o, MO_RUN_REFRESH);
	o.planned = NULL;
	rc = mo_run(&o, &res);
	end_progress(c);
	if (rc < 0) {
		mo_run_result_clear(&res);
		return fail(c, rc);
	}
	print_drift(c, res.drift);
	rc = c->detailed && json_array_size(res.drift) > 0 ? 2 : 0;
	mo_run_result_clear(&res);
	return rc;
}

static void print_resource(cli *c, const mo_resource *r, int full)
{
	if (c->json) {
		json_t *j = json_pack("{s:s,s:s,s:s,s:s?,s:s?,s:s,s:O?,s:O?,s:O?,s:I}", "address", r->address,
				      "module", r->module, "type", r->type, "id", r->id, "source", r->source,
				      "status", r->status == MO_RES_TAINTED ? "tainted"
						: r->status == MO_RES_DEPOSED ? "deposed" : "ok",
				      "props", full ? r->props : NULL, "outputs", full ? r->outputs : NULL,
				      "depends_on", full ? r->deps : NULL, "serial", (json_int_t)r->serial);
		json_line(j);
		return;
	}
	if (!full) {
		printf("%s%s\n", r->address, r->status == MO_RES_TAINTED ? " (tainted)" : "");
		return;
	}
	{
		char *props = mo_render_value(r->props, 0), *outs = mo_render_value(r->outputs, 0);
		char *deps = mo_render_value(r->deps, 0);
		printf("# %s\n  id      = %s\n  module  = %s (%s)\n  type    = %s\n  status  = %s\n"
		       "  props   = %s\n  outputs = %s\n  depends = %s\n\n",
		       r->address, r->id ? r->id : "", r->module, r->source ? r->source : "", r->type,
		       r->status == MO_RES_TAINTED ? "tainted" : r->status == MO_RES_DEPOSED ? "deposed" : "ok",
		       props, outs, deps);
		mo_free(props);
		mo_free(outs);
		mo_free(deps);
	}
}

static int cmd_show(cli *c)
{
	mo_resource **list = NULL;
	size_t n = 0;
	int rc;
	if (c->nargs > 0) {
		json_t *doc;
		json_error_t jerr;
		if (access(c->args[0], F_OK) != 0)
			return fail(c, mo_error_set(MO_ENOTFOUND, "%s: no such file", c->args[0]));
		if (!(doc = json_load_file(c->args[0], 0, &jerr)))
			return fail(c, mo_error_set(MO_EINVAL, "%s: not a saved plan: %s", c->args[0], jerr.text));
		if (c->json) {
			json_t *ch = json_incref(json_object_get(doc, "changes"));
			json_decref(doc);
			json_object_set_new(ch, "type", json_string("plan"));
			json_line(ch);
		} else {
			size_t i;
			json_t *x;
			json_t *ch = json_object_get(doc, "changes");
			printf("Saved plan of %s (state serial %lld):\n",
			       json_string_value(json_object_get(doc, "plan")),
			       (long long)json_integer_value(json_object_get(doc, "serial")));
			json_array_foreach(json_object_get(ch, "resource_changes"), i, x) {
				json_t *acts = json_object_get(json_object_get(x, "change"), "actions");
				char *a = mo_render_value(acts, 40);
				if (strcmp(a, "[\"no-op\"]"))
					printf("  %-20s %s\n", a, json_string_value(json_object_get(x, "address")));
				mo_free(a);
			}
			json_decref(doc);
		}
		return 0;
	}
	if ((rc = open_existing_state(c, NULL)) < 0 || (rc = mo_state_list(c->st, &list, &n)) < 0)
		return fail(c, rc);
	if (!c->json)
		printf("State %s: lineage %s, serial %lld, %zu resource(s).\n\n", c->state_path,
		       mo_state_lineage(c->st), (long long)mo_state_serial(c->st), n);
	for (size_t i = 0; i < n; i++)
		print_resource(c, list[i], 1);
	mo_resource_list_free(list, n);
	return 0;
}

static int cmd_output(cli *c)
{
	json_t *outs = NULL;
	int rc;
	if ((rc = open_existing_state(c, NULL)) < 0 || (rc = mo_state_outputs_get(c->st, &outs)) < 0)
		return fail(c, rc);
	if (c->nargs > 0) {
		json_t *o = json_object_get(outs, c->args[0]);
		char *s;
		if (!o) {
			json_decref(outs);
			return fail(c, mo_error_set(MO_ENOTFOUND, "no output named '%s'", c->args[0]));
		}
		s = json_is_true(json_object_get(o, "sensitive")) ? mo_strdup("(sensitive)")
			: c->json ? json_dumps(json_object_get(o, "value"), JSON_ENCODE_ANY | JSON_COMPACT)
			: json_is_string(json_object_get(o, "value")) ? mo_strdup(json_string_value(json_object_get(o, "value")))
			: mo_render_value(json_object_get(o, "value"), 0);
		printf("%s\n", s ? s : "");
		free(s);
	} else if (c->json) {
		char *s = json_dumps(outs, JSON_INDENT(2) | JSON_SORT_KEYS);
		printf("%s\n", s ? s : "{}");
		free(s);
	} else {
		mo_buf b = MO_BUF_INIT;
		mo_render_outputs_text(outs, 0, &b);
		fputs(b.ptr ? b.ptr : "", stdout);
		mo_buf_free(&b);
	}
	json_decref(outs);
	return 0;
}

static int cmd_state(cli *c)
{
	const char *sub = c->nargs > 0 ? c->args[0] : NULL;
	mo_resource **list = NULL, *r = NULL;
	size_t n = 0;
	int rc;
	if (!sub)
		return fail(c, mo_error_set(MO_EINVAL, "state: name a subcommand: list, show, rm or mv"));
	if (!strcmp(sub, "list")) {
		if ((rc = open_existing_state(c, NULL)) < 0 || (rc = mo_state_list(c->st, &list, &n)) < 0)
			return fail(c, rc);
		for (size_t i = 0; i < n; i++)
			print_resource(c, list[i], 0);
		mo_resource_list_free(list, n);
		return 0;
	}
	if (!strcmp(sub, "show")) {
		if (c->nargs != 2)
			return fail(c, mo_error_set(MO_EINVAL, "usage: mecorch state show ADDRESS"));
		if ((rc = open_existing_state(c, NULL)) < 0 || (rc = mo_state_get(c->st, c->args[1], &r)) < 0)
			return fail(c, rc);
		print_resource(c, r, 1);
		mo_resource_free(r);
		return 0;
	}
	if (!strcmp(sub, "rm")) {
		if (c->nargs < 2)
			return fail(c, mo_error_set(MO_EINVAL, "usage: mecorch state rm ADDRESS..."));
		if ((rc = open_existing_state(c, "state rm")) < 0)
			return fail(c, rc);
		for (int i = 1; i < c->nargs; i++) {
			if ((rc = mo_state_rm(c->st, c->args[i])) < 0)
				return fail(c, rc);
			if (c->json)
				json_line(json_pack("{s:s,s:s}", "type", "state_rm", "address", c->args[i]));
			else
				printf("Removed %s from the state (the object itself is untouched).\n", c->args[i]);
		}
		return 0;
	}
	if (!strcmp(sub, "mv")) {
		if (c->nargs != 3)
			return fail(c, mo_error_set(MO_EINVAL, "usage: mecorch state mv FROM TO"));
		if ((rc = mo_address_parse(c->args[2], NULL, NULL, NULL)) < 0 ||
		    (rc = open_existing_state(c, "state mv")) < 0 ||
		    (rc = mo_state_mv(c->st, c->args[1], c->args[2])) < 0)
			return fail(c, rc);
		if (c->json)
			json_line(json_pack("{s:s,s:s,s:s}", "type", "state_mv", "from", c->args[1], "to", c->args[2]));
		else
			printf("Moved %s to %s.\n", c->args[1], c->args[2]);
		return 0;
	}
	return fail(c, mo_error_set(MO_EINVAL, "state: unknown subcommand '%s' (list, show, rm, mv)", sub));
}

static int cmd_import(cli *c)
{
	mo_exec_opts o;
	int rc;
	if (c->nargs != 2)
		return fail(c, mo_error_set(MO_EINVAL, "usage: mecorch import [PLAN] ADDRESS ID"));
	if ((rc = mo_address_parse(c->args[0], NULL, NULL, NULL)) < 0 ||
	    (rc = open_sources(c, MO_SOURCES_LOCKED)) < 0 || (rc = open_state(c, "import")) < 0 ||
	    (rc = load_plan(c, 0)) < 0)
		return fail(c, rc);
	exec_opts(c, &o);
	if ((rc = mo_exec_import(c->st, c->p, &c->rt, &o, c->args[0], c->args[1])) < 0)
		return fail(c, rc);
	end_progress(c);
	if (c->json) {
		json_line(json_pack("{s:s,s:s,s:s}", "type", "import", "address", c->args[0], "id", c->args[1]));
		return 0;
	}
	printf("Imported %s (id %s). Run `mecorch plan` to see how it differs from the plan.\n",
	       c->args[0], c->args[1]);
	return 0;
}

static int cmd_lock(cli *c)
{
	const char *sub = c->nargs > 0 ? c->args[0] : "list";
	mo_lock_info li;
	int rc;
	memset(&li, 0, sizeof(li));
	if (strcmp(sub, "list") && strcmp(sub, "unlock"))
		return fail(c, mo_error_set(MO_EINVAL, "lock: unknown subcommand '%s' (list, unlock)", sub));
	if ((rc = open_existing_state(c, NULL)) < 0)
		return fail(c, rc);
	if (!strcmp(sub, "list")) {
		rc = mo_state_lock_get(c->st, &li);
		if (rc == MO_ENOTFOUND) {
			if (c->json)
				json_line(json_pack("{s:s,s:n}", "type", "lock", "lock"));
			else
				printf("The state is not locked.\n");
			return 0;
		}
		if (rc < 0)
			return fail(c, rc);
		if (c->json)
			json_line(json_pack("{s:s,s:{s:s,s:s,s:s,s:I,s:s,s:I,s:I}}", "type", "lock", "lock", "id",
					    li.id, "owner", li.owner, "host", li.host, "pid", (json_int_t)li.pid,
					    "operation", li.operation, "created", (json_int_t)li.created,
					    "expires", (json_int_t)li.expires));
		else
			printf("%s  %s (pid %ld) %s, since %lld s, lease expires in %lld s\n", li.id, li.owner,
			       li.pid, li.operation, (long long)(mo_wall_s() - li.created),
			       (long long)(li.expires - mo_wall_s()));
		mo_lock_info_clear(&li);
		return 0;
	}
	if (!strcmp(sub, "unlock")) {
		if (c->nargs != 2)
			return fail(c, mo_error_set(MO_EINVAL, "usage: mecorch lock unlock LOCK_ID"));
		if ((rc = mo_state_lock_force(c->st, c->args[1])) < 0)
			return fail(c, rc);
		if (c->json)
			json_line(json_pack("{s:s,s:s}", "type", "lock_unlock", "id", c->args[1]));
		else
			printf("Lock %s released.\n", c->args[1]);
		return 0;
	}
	return fail(c, mo_error_set(MO_EINVAL, "lock: unknown subcommand '%s' (list, unlock)", sub));
}

static int cmd_graph(cli *c)
{
	mo_buf b = MO_BUF_INIT;
	int rc;
	if ((rc = open_sources(c, MO_SOURCES_LOCKED)) < 0 || (rc = load_plan(c, 0)) < 0 ||
	    (rc = mo_graph_to_dot(c->p->rgraph, &b)) < 0)
		return fail(c, rc);
	fputs(b.ptr ? b.ptr : "", stdout);
	mo_buf_free(&b);
	return 0;
}

static int cmd_version(cli *c)
{
	(void)c;
	printf("mecorch %s\n", MO_VERSION);
	return 0;
}

static int cmd_help(cli *c);

typedef struct {
	const char *name;
	int (*fn)(cli *c);
	unsigned flags;
	int takes_plan;      /* first positional argument is the plan file */
	const char *usage;
	const char *summary;
	const char *help;
} command;

#define RUN_FLAGS (F_STATE | F_VARS | F_RUN | F_JSON | F_SRC | F_LIMITS)

static const command commands[] = {
	{ "init", cmd_init, F_VARS | F_JSON | F_SRC | F_UPGRADE, 1, "init [PLAN] [--upgrade]",
	  "resolve and fetch module sources, write mecorch.lock",
	  "Resolves every module source of the plan (git refs and version constraints),\n"
	  "fetches them into the cache and pins them in mecorch.lock. Later commands use\n"
	  "the lock and the cache only.\n" },
	{ "validate", cmd_validate, F_VARS | F_JSON | F_SRC | F_LIMITS, 1, "validate [PLAN]",
	  "check the plan and its modules without touching anything",
	  "Runs the plan file and every module's declare() in the sandbox (within the\n"
	  "--task-memory and --task-instructions limits), checks inputs, references and\n"
	  "the dependency graph. No state, no I/O.\n" },
	{ "plan", cmd_plan, RUN_FLAGS | F_PLAN | F_REFRESH, 1,
	  "plan [PLAN] [--out FILE] [--json] [--detailed-exitcode] [--destroy]",
	  "show what apply would change",
	  "Resolves pending operations of interrupted runs, reads every resource back\n"
	  "(--refresh=false skips that), and diffs the plan against the state.\n"
	  "With --json the plan is one JSON document (Terraform-style resource_changes\n"
	  "with actions, before, after, after_unknown and sensitive masks).\n" },
	{ "apply", cmd_apply, RUN_FLAGS | F_APPROVE | F_REFRESH, 1, "apply [PLAN | SAVED_PLAN] [--auto-approve]",
	  "make the infrastructure match the plan",
	  "Plans, asks for confirmation (unless --auto-approve), then applies the changes\n"
	  "in parallel along the dependency graph. Given a file saved by `plan --out`,\n"
	  "applies exactly that plan and refuses it if the state changed since.\n" },
	{ "destroy", cmd_destroy, RUN_FLAGS | F_APPROVE, 1, "destroy [PLAN] [--auto-approve]",
	  "delete everything the state records",
	  "Deletes every resource in the state, dependents first.\n" },
	{ "refresh", cmd_refresh, RUN_FLAGS | F_DETAIL, 1, "refresh [PLAN] [--detailed-exitcode]",
	  "read every resource back and report drift",
	  "Calls read() for every resource in the state, reports which differ from the\n"
	  "state (changed or gone) and updates the state to what was read.\n" },
	{ "show", cmd_show, F_STATE | F_JSON, 0, "show [SAVED_PLAN] [--json]",
	  "show the state, or a saved plan", "Without a file, prints every resource in the state.\n" },
	{ "output", cmd_output, F_STATE | F_JSON, 0, "output [NAME] [--json]", "show the plan's outputs",
	  "Prints the outputs recorded by the last apply. Sensitive outputs print as\n"
	  "(sensitive): the state keeps only a keyed hash of them.\n" },
	{ "state", cmd_state, F_STATE | F_JSON, 0, "state list | show ADDRESS | rm ADDRESS... | mv FROM TO",
	  "inspect or edit the state",
	  "rm forgets resources without deleting them; mv renames an address.\n" },
	{ "import", cmd_import, RUN_FLAGS, 1, "import [PLAN] ADDRESS ID",
	  "adopt an existing object as a resource of the plan",
	  "Reads the object with the given id through the module of ADDRESS and records\n"
	  "it in the state.\n" },
	{ "lock", cmd_lock, F_STATE | F_JSON, 0, "lock list | lock unlock LOCK_ID",
	  "show or force-release the state lock",
	  "A lock left by a process that died on this host, or whose lease expired, is\n"
	  "taken over automatically; `lock unlock` forces release in other cases.\n" },
	{ "graph", cmd_graph, F_VARS | F_SRC | F_LIMITS, 1, "graph [PLAN]",
	  "print the resource graph in Graphviz DOT", "Edges point from a resource to what it depends on.\n" },
	{ "serve", NULL, 0, 0, "serve --config FILE [--port-file FILE]",
	  "run the Mfm northbound API server (MEC 010-2, MEC 040)",
	  "See docs/api.md. `mecorch serve --help` lists the server's options.\n" },
	{ "version", cmd_version, 0, 0, "version", "print the version", "" },
	{ "help", cmd_help, 0, 0, "help [COMMAND]", "show help", "" },
};

static const command *find_command(const char *name)
{
	for (size_t i = 0; i < MO_ARRAY_SIZE(commands); i++)
		if (!strcmp(commands[i].name, name))
			return &commands[i];
	return NULL;
}

/* One line of the options help per option; shown for a command when its
 * flags meet the command's (0: every command). */
static const struct {
	unsigned flags;
	const char *text;
} option_help[] = {
	{ F_STATE, "  --state PATH            state database (default ./mecorch.db, or $MECORCH_STATE)\n" },
	{ F_VARS, "  --var NAME=VALUE        set a plan variable (repeatable)\n" },
	{ F_VARS, "  --var-file FILE         JSON object of variable values (repeatable)\n" },
	{ F_PLAN, "  --out FILE              save the plan; `mecorch apply FILE` applies exactly it\n" },
	{ F_PLAN | F_DETAIL, "  --detailed-exitcode     exit 2 when changes (or drift) are pending, 0 when none\n" },
	{ F_PLAN, "  --destroy               plan the destruction of everything in the state\n" },
	{ F_REFRESH, "  --refresh=BOOL          read resources back before planning (default true)\n" },
	{ F_APPROVE, "  --auto-approve          do not ask for confirmation\n" },
	{ F_UPGRADE, "  --upgrade               re-resolve every version constraint\n" },
	{ F_RUN, "  --parallelism N         actions in flight at once (default 32)\n" },
	{ F_RUN, "  --fail-fast             stop starting actions after the first failure\n" },
	{ F_JSON, "  --json                  machine-readable output, one JSON object per line\n" },
	{ 0, "  --no-color              no ANSI colours (also when NO_COLOR is set and not empty)\n" },
	{ F_SRC, "  --lock-file PATH        module lock file (default mecorch.lock beside the plan)\n" },
	{ F_SRC, "  --cache-dir DIR         module cache (default $XDG_CACHE_HOME/mecorch)\n" },
	{ F_LIMITS, "  --task-memory MIB       memory cap per module action (default 64)\n" },
	{ F_LIMITS, "  --task-instructions N   instruction budget per module action (default 200000000)\n" },
	{ F_RUN, "  --retry-max N           retries of transient HTTP failures (default 5)\n" },
	{ F_RUN, "  --retry-base-ms MS      first backoff (default 200, doubling, with jitter)\n" },
	{ F_RUN, "  --http-timeout-ms MS    default timeout of one HTTP request (default 60000)\n" },
	{ F_RUN, "  --ca-bundle FILE        extra CA certificates for HTTPS\n" },
	{ F_RUN, "  --lease-seconds N       state lock lease, renewed while running (default 120)\n" },
	{ 0, "  -h, --help              help for the command\n" },
};

static void usage_command(const command *cmd, FILE *f)
{
	fprintf(f, "usage: mecorch %s\n\n%s: %s.\n\n%s", cmd->usage, cmd->name, cmd->summary, cmd->help);
	fprintf(f, "\nOptions (a long option may also be written with one dash):\n");
	for (size_t i = 0; i < MO_ARRAY_SIZE(option_help); i++)
		if (!option_help[i].flags || (cmd->flags & option_help[i].flags))
			fputs(option_help[i].text, f);
	fprintf(f, "\nExit status: 0 ok, 1 error, 2 changes pending (--detailed-exitcode), 3 invalid\n"
		   "input, 4 not found, 5 state locked, 6 stale saved plan, 7 module error, 8 I/O,\n"
		   "9 state store, 10 module source, 130 interrupted. See docs/cli.md.\n");
}

static void usage(FILE *f)
{
	fprintf(f, "usage: mecorch COMMAND [OPTIONS] [ARGS]\n\n"
		   "mecorch - multi-domain Infrastructure-as-Code orchestrator for edge computing.\n\n"
		   "Commands:\n");
	for (size_t i = 0; i < MO_ARRAY_SIZE(commands); i++)
		fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].summary);
	fprintf(f, "\nRun `mecorch COMMAND --help` for a command's options.\n");
}

static int cmd_help(cli *c)
{
	const command *cmd = c->nargs > 0 ? find_command(c->args[0]) : NULL;
	if (c->nargs > 0 && !cmd) {
		fprintf(stderr, "error: unknown command '%s'\n", c->args[0]);
		return 3;
	}
	if (cmd)
		usage_command(cmd, stdout);
	else
		usage(stdout);
	return 0;
}

enum {
	O_STATE = 256, O_VAR, O_VARFILE, O_PAR, O_FAILFAST, O_JSON, O_NOCOLOR, O_OUT, O_DETAILED,
	O_DESTROY, O_REFRESH, O_APPROVE, O_LOCKFILE, O_CACHE, O_UPGRADE, O_TMEM, O_TINSTR,
	O_RETRY, O_RETRYBASE, O_HTTPTO, O_CA, O_LEASE,
};

static const struct {
	int id;
	unsigned flag;
} option_flags[] = {
	{ O_STATE, F_STATE }, { O_VAR, F_VARS }, { O_VARFILE, F_VARS }, { O_PAR, F_RUN },
	{ O_FAILFAST, F_RUN }, { O_JSON, F_JSON }, { O_OUT, F_PLAN }, { O_DETAILED, F_PLAN | F_DETAIL },
	{ O_DESTROY, F_PLAN }, { O_REFRESH, F_REFRESH }, { O_APPROVE, F_APPROVE }, { O_LOCKFILE, F_SRC },
	{ O_CACHE, F_SRC }, { O_UPGRADE, F_UPGRADE }, { O_TMEM, F_LIMITS }, { O_TINSTR, F_LIMITS },
	{ O_RETRY, F_RUN }, { O_RETRYBASE, F_RUN }, { O_HTTPTO, F_RUN }, { O_CA, F_RUN },
	{ O_LEASE, F_RUN },
};

static const struct option long_options[] = {
	{ "state", required_argument, NULL, O_STATE },
	{ "var", required_argument, NULL, O_VAR },
	{ "var-file", required_argument, NULL, O_VARFILE },
	{ "parallelism", required_argument, NULL, O_PAR },
	{ "fail-fast", no_argument, NULL, O_FAILFAST },
	{ "json", no_argument, NULL, O_JSON },
	{ "no-color", no_argument, NULL, O_NOCOLOR },
	{ "out", required_argument, NULL, O_OUT },
	{ "detailed-exitcode", no_argument, NULL, O_DETAILED },
	{ "destroy", no_argument, NULL, O_DESTROY },
	{ "refresh", required_argument, NULL, O_REFRESH },
	{ "auto-approve", no_argument, NULL, O_APPROVE },
	{ "lock-file", required_argument, NULL, O_LOCKFILE },
	{ "cache-dir", required_argument, NULL, O_CACHE },
	{ "upgrade", no_argument, NULL, O_UPGRADE },
	{ "task-memory", required_argument, NULL, O_TMEM },
	{ "task-instructions", required_argument, NULL, O_TINSTR },
	{ "retry-max", required_argument, NULL, O_RETRY },
	{ "retry-base-ms", required_argument, NULL, O_RETRYBASE },
	{ "http-timeout-ms", required_argument, NULL, O_HTTPTO },
	{ "ca-bundle", required_argument, NULL, O_CA },
	{ "lease-seconds", required_argument, NULL, O_LEASE },
	{ "help", no_argument, NULL, 'h' },
	{ NULL, 0, NULL, 0 },
};

/* The error of an option getopt_long_only() refused ('?'), naming the
 * option as written (an unknown or ambiguous one) or as defined (a missing
 * or unexpected value).  Call right after getopt returned. */
static int option_error(const command *cmd, char **argv)
{
	const char *arg, *name, *eq;
	size_t len, nmatch = 0;
	mo_buf b = MO_BUF_INIT;
	int rc;
	if (optopt >= O_STATE) {
		for (size_t i = 0; long_options[i].name; i++) {
			if (long_options[i].val != optopt)
				continue;
			if (long_options[i].has_arg == required_argument)
				return mo_error_set(MO_EINVAL, "%s: option --%s needs a value (see mecorch %s --help)",
						    cmd->name, long_options[i].name, cmd->name);
			return mo_error_set(MO_EINVAL, "%s: option --%s takes no value (see mecorch %s --help)",
					    cmd->name, long_options[i].name, cmd->name);
		}
	}
	if (optopt > 0 && optopt < 256) /* a short option of a cluster, e.g. the x of -hx */
		return mo_error_set(MO_EINVAL, "%s: unknown option '-%c' (see mecorch %s --help)", cmd->name,
				    optopt, cmd->name);
	/* an unknown or ambiguous long option: getopt stepped past it */
	arg = argv[optind - 1];
	name = arg + strspn(arg, "-");
	len = (eq = strchr(name, '=')) ? (size_t)(eq - name) : strlen(name);
	for (size_t i = 0; len && long_options[i].name; i++) {
		if (strncmp(long_options[i].name, name, len))
			continue;
		mo_buf_printf(&b, "%s--%s", nmatch++ ? ", " : "", long_options[i].name);
	}
	if (nmatch > 1)
		rc = mo_error_set(MO_EINVAL, "%s: option '%.*s' is ambiguous: %s (see mecorch %s --help)",
				  cmd->name, (int)(name - arg + len), arg, b.ptr, cmd->name);
	else
		rc = mo_error_set(MO_EINVAL, "%s: unknown option '%.*s' (see mecorch %s --help)", cmd->name,
				  (int)(name - arg + len), arg, cmd->name);
	mo_buf_free(&b);
	return rc;
}

static int parse_long(const char *opt, const char *s, long lo, long hi, long *out)
{
	char *end;
	long v;
	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || !*s || *end || v < lo || v > hi)
		return mo_error_set(MO_EINVAL, "--%s: '%s' is not a whole number from %ld to %ld", opt, s, lo, hi);
	*out = v;
	return 0;
}

static int add_var(cli *c, const char *kv)
{
	const char *eq = strchr(kv, '=');
	char *name;
	if (!eq || eq == kv)
		return mo_error_set(MO_EINVAL, "--var: '%s' is not NAME=VALUE", kv);
	name = mo_strndup(kv, (size_t)(eq - kv));
	json_object_set_new(c->vars, name, json_string(eq + 1));
	mo_free(name);
	return 0;
}

static int add_var_file(cli *c, const char *path)
{
	json_error_t jerr;
	json_t *v = json_load_file(path, 0, &jerr);
	if (!v)
		return mo_error_set(MO_EINVAL, "--var-file %s:%d:%d: %s", path, jerr.line, jerr.column, jerr.text);
	if (!json_is_object(v)) {
		json_decref(v);
		return mo_error_set(MO_EINVAL, "--var-file %s: must hold a JSON object of NAME: VALUE", path);
	}
	json_object_update(c->vars, v);
	json_decref(v);
	return 0;
}

/* Parse the options of cmd (argv[0] is the command's name).  Long options
 * may be written with one dash (-auto-approve, as Terraform spells them):
 * -h is the only short option, and getopt_long_only() still reads it as
 * one. */
static int parse_args(cli *c, const command *cmd, int argc, char **argv)
{
	int opt, li;
	long v;
	optind = 1;
	opterr = 0;
	while ((li = -1, opt = getopt_long_only(argc, argv, "h", long_options, &li)) != -1) {
		if (opt == 'h') {
			usage_command(cmd, stdout);
			exit(0);
		}
		if (opt == '?' || opt == ':')
			return option_error(cmd, argv);
		if (opt != O_NOCOLOR) {
			unsigned need = 0;
			for (size_t i = 0; i < MO_ARRAY_SIZE(option_flags); i++)
				if (option_flags[i].id == opt)
					need = option_flags[i].flag;
			if (!(cmd->flags & need))
				return mo_error_set(MO_EINVAL, "%s does not take option --%s (see mecorch %s --help)",
						    cmd->name, li >= 0 ? long_options[li].name : "?", cmd->name);
		}
		switch (opt) {
		case O_STATE: c->state_path = optarg; break;
		case O_VAR: if (add_var(c, optarg) < 0) return MO_EINVAL; break;
		case O_VARFILE: if (add_var_file(c, optarg) < 0) return MO_EINVAL; break;
		case O_PAR:
			if (parse_long("parallelism", optarg, 1, 10000, &v) < 0)
				return MO_EINVAL;
			c->parallelism = (int)v;
			break;
		case O_FAILFAST: c->fail_fast = 1; break;
		case O_JSON: c->json = 1; break;
		case O_NOCOLOR: c->color_out = c->color_err = 0; break;
		case O_OUT: c->out_path = optarg; break;
		case O_DETAILED: c->detailed = 1; break;
		case O_DESTROY: c->destroy = 1; break;
		case O_REFRESH:
			if (!strcmp(optarg, "true") || !strcmp(optarg, "1"))
				c->refresh = 1;
			else if (!strcmp(optarg, "false") || !strcmp(optarg, "0"))
				c->refresh = 0;
			else
				return mo_error_set(MO_EINVAL, "--refresh takes true or false, not '%s'", optarg);
			break;
		case O_APPROVE: c->auto_approve = 1; break;
		case O_LOCKFILE: c->lock_path = optarg; break;
		case O_CACHE: c->cache_dir = optarg; break;
		case O_UPGRADE: c->upgrade = 1; break;
		case O_TMEM:
			if (parse_long("task-memory", optarg, 1, 65536, &v) < 0)
				return MO_EINVAL;
			c->limits.task_mem = (size_t)v << 20;
			break;
		case O_TINSTR:
			if (parse_long("task-instructions", optarg, 1000, 2000000000L, &v) < 0)
				return MO_EINVAL;
			c->limits.task_instr = (uint64_t)v;
			break;
		case O_RETRY:
			if (parse_long("retry-max", optarg, 0, 100, &v) < 0)
				return MO_EINVAL;
			c->rt.http.max_retries = (int)v;
			break;
		case O_RETRYBASE:
			if (parse_long("retry-base-ms", optarg, 1, 600000, &v) < 0)
				return MO_EINVAL;
			c->rt.http.backoff_base_ms = (int)v;
			break;
		case O_HTTPTO:
			if (parse_long("http-timeout-ms", optarg, 1, 3600000, &v) < 0)
				return MO_EINVAL;
			c->rt.http.timeout_ms = v;
			break;
		case O_CA: c->rt.http.ca_file = optarg; break;
		case O_LEASE:
			if (parse_long("lease-seconds", optarg, 5, 86400, &v) < 0)
				return MO_EINVAL;
			c->lease_s = (int)v;
			break;
		}
	}
	c->args = argv + optind;
	c->nargs = argc - optind;
	if (cmd->takes_plan) {
		/* the first argument is the plan (for import, only the first of three) */
		if (c->nargs > 0 && (cmd->fn != cmd_import || c->nargs == 3)) {
			if (access(c->args[0], F_OK) != 0)
				return mo_error_set(MO_ENOTFOUND, "%s: no such file", c->args[0]);
			c->plan_path = c->args[0];
			c->args++;
			c->nargs--;
		} else {
			c->plan_path = "plan.lua";
			if (access(c->plan_path, F_OK) != 0)
				return mo_error_set(MO_ENOTFOUND, "%s: no plan file given and ./plan.lua does not exist",
						    cmd->name);
		}
	}
	if (cmd->takes_plan && cmd->fn != cmd_import && c->nargs > 0)
		return mo_error_set(MO_EINVAL, "%s: unexpected argument '%s'", cmd->name, c->args[0]);
	return 0;
}

#ifdef MECORCH_SANITIZE
/* A sanitized build: LeakSanitizer ignores the known leaks inside system
 * libraries (libgit2 1.5's pcre2 match data and libssh2 state), so a leak of
 * this project's own still fails the run. */
const char *__lsan_default_suppressions(void);
const char *__lsan_default_suppressions(void)
{
	return "leak:libpcre2-8.so\n"
	       "leak:libssh2_knownhost_init\n"
	       "leak:libssh2_userauth_list\n"
	       "leak:git_strarray_copy\n"
	       "leak:git_remote_connect_ext\n";
}
#endif

int main(int argc, char **argv)
{
	cli c;
	const command *cmd;
	struct sigaction sa;
	pthread_condattr_t ca;
	const char *no_color = getenv("NO_COLOR");
	int rc;
	memset(&c, 0, sizeof(c));
	pthread_mutex_init(&c.out_mu, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&c.tick_cv, &ca);
	pthread_condattr_destroy(&ca);
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc < 2) {
		usage(stderr);
		return 3;
	}
	if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
		usage(stdout);
		return 0;
	}
	if (!strcmp(argv[1], "--version")) {
		printf("mecorch %s\n", MO_VERSION);
		return 0;
	}
	if (!strcmp(argv[1], "serve")) /* the server parses its own options */
		return mo_serve_main(argc - 1, argv + 1);
	if (!(cmd = find_command(argv[1]))) {
		fprintf(stderr, "error: unknown command '%s'\n\n", argv[1]);
		usage(stderr);
		return 3;
	}
	c.cmd = cmd->name;
	c.state_path = getenv("MECORCH_STATE") ? getenv("MECORCH_STATE") : "mecorch.db";
	c.vars = json_object();
	c.parallelism = 32;
	c.refresh = 1;
	c.lease_s = 120;
	c.tty = isatty(2);
	/* NO_COLOR counts when set and not empty (no-color.org); each stream
	 * gets colours only when it is a terminal */
	no_color = no_color && *no_color ? no_color : NULL;
	c.color_out = isatty(1) && !no_color;
	c.color_err = isatty(2) && !no_color;
	mo_sandbox_limits_defaults(&c.limits);
	mo_http_config_defaults(&c.rt.http);
	if ((rc = parse_args(&c, cmd, argc - 1, argv + 1)) < 0) {
		rc = fail(&c, rc);
		json_decref(c.vars);
		return rc;
	}
	if (c.json)
		c.tty = 0;
	if ((rc = mo_global_init()) < 0 || (rc = mo_loop_new(&c.rt.loop)) < 0) {
		rc = fail(&c, rc);
		json_decref(c.vars);
		return rc;
	}
	c.rt.log = on_log;
	c.rt.log_ud = &c;
	c.rt.interrupted = &interrupted;
	signal_loop = c.rt.loop;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_sigint;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	c.t0 = mo_now_ms();
	rc = cmd->fn(&c);
	end_progress(&c);
	mo_plan_free(c.p);
	if (c.st) {
		mo_state_unlock(c.st);
		mo_state_close(c.st);
	}
	mo_sources_free(c.src);
	signal_loop = NULL;
	mo_rt_release(&c.rt);
	mo_loop_free(c.rt.loop);
	json_decref(c.vars);
	return rc;
}
