/*
 * api.h - the Mfm northbound server (`mecorch serve`): ETSI MEC 010-2
 * application package management (app_pkgm/v1) and lifecycle management
 * (app_lcm/v1), the MEC 040 registration of this MEC system with a
 * federator, zones, DevOps plan/apply endpoints, subscriptions with
 * notifications delivered from a persistent outbox, /health and /metrics.
 *
 * The server is a library: mo_serve_main() is the CLI's entry point; tests
 * start and stop servers in-process with mo_api_start() / mo_api_stop().
 * Every instantiate, operate, terminate and DevOps run goes through
 * mo_run() (engine.h) on a small pool of worker threads, each against a
 * state database of its own under the data directory, so `mecorch state
 * list --state <db>` inspects what the API deployed.  docs/api.md is the
 * reference; api/openapi.yaml describes every route.
 */
#ifndef MO_API_H
#define MO_API_H

#include <jansson.h>
#include <stddef.h>

/* `mecorch serve --config FILE [--port-file FILE]`: runs until SIGINT or
 * SIGTERM.  Returns the process exit status (0 after a clean shutdown,
 * 2 for bad usage or configuration, 1 when the server could not start). */
int mo_serve_main(int argc, char **argv);

/* Roles a bearer token (or a client certificate) can carry. */
enum {
	MO_ROLE_TENANT = 1,    /* app_pkgm, app_lcm, zones: its own resources */
	MO_ROLE_FEDERATOR = 2, /* as a tenant; a MEC federator driving Mfm */
	MO_ROLE_OPERATOR = 3,  /* everything, plus DevOps and federation admin */
};

typedef struct {
	char *token;           /* bearer token (secret), or NULL (certificate only) */
	char *tenant;          /* the name resources are owned by */
	int role;              /* MO_ROLE_* */
	char *cert_cn;         /* client certificate subject CN mapped to it, or NULL */
} mo_api_principal;

typedef struct {
	char *id, *name;
	char *country;         /* ISO 3166 alpha-2, or NULL */
	double latitude, longitude;
	json_t *domains;       /* domain name -> the inputs package plans receive */
} mo_api_zone;

typedef struct {
	char *path, *dir;      /* the config file and the directory paths resolve from */
	char *listen;          /* "HOST:PORT"; port 0 picks a free port */
	char *public_url;      /* base of Location and _links, or NULL: from listen */
	char *data_dir;
	char *port_file;       /* write the bound port here once listening, or NULL */
	int http_threads;      /* libmicrohttpd thread pool size */
	int workers;           /* engine runs in parallel */
	int run_parallelism;   /* actions in flight within one run */
	char *tls_cert, *tls_key;      /* PEM text (not paths) when TLS is on */
	char *tls_client_ca;           /* PEM text: verify client certificates */
	int require_client_cert;
	char *system_name, *system_provider;
	mo_api_zone *zones;
	size_t nzones;
	char *fed_url;         /* federator base URL ending in /fed_enablement/v1, or NULL */
	char *fed_token;
	int fed_retry_base_ms, fed_retry_max_ms;
	mo_api_principal *principals;
	size_t nprincipals;
	size_t max_body;       /* JSON request bodies */
	size_t max_package;    /* package uploads and downloads */
	int local_package_sources; /* limits.localPackageSources: any role may use file:// sources */
	int notify_base_ms, notify_max_ms, notify_timeout_ms;
	int metrics_public;    /* /metrics without a token */
	int resume_delay_ms;   /* wait before resuming runs a killed process left in flight */
} mo_api_config;

/* Load and validate the JSON config at path (docs/api.md, "Configuration").
 * Relative paths in it resolve from the file's directory; certificate and
 * key files are read now.  *out is the caller's (mo_api_config_free).
 * MO_EINVAL with a message naming the offending key. */
int mo_api_config_load(mo_api_config **out, const char *path);
/* The same from a parsed document; dir resolves relative paths. */
int mo_api_config_parse(mo_api_config **out, json_t *doc, const char *dir);
void mo_api_config_free(mo_api_config *c);

typedef struct mo_api mo_api;

/* Start a server for cfg (borrowed: it must outlive the server): open the
 * data directory and its database, resume the work a previous process left
 * in flight, listen, start the worker, notifier and federation threads.
 * Call mo_global_init() first. */
int mo_api_start(mo_api **out, const mo_api_config *cfg);
/* The port it listens on. */
unsigned mo_api_port(const mo_api *a);
/* Stop cleanly: stop listening, let runs in flight stop at a safe point
 * (their operations stay PROCESSING and resume at the next start),
 * deregister from the federator, stop the threads.  Accepts NULL. */
void mo_api_stop(mo_api *a);

/* Great-circle distance in km between two WGS84 points (haversine). */
double mo_api_haversine_km(double lat1, double lon1, double lat2, double lon2);

#endif
