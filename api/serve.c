/*
 * serve.c - `mecorch serve`: the command-line front of the API server.
 * Parses the arguments, loads the configuration, starts the server (api.h)
 * and waits for SIGINT or SIGTERM, which stop it cleanly: runs in flight
 * stop at a safe point and resume at the next start, the MEC 040
 * registration is withdrawn.
 */
#include "api_int.h"
#include "engine.h"

#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

static void usage(FILE *f)
{
	fputs("usage: mecorch serve --config FILE [--port-file FILE]\n"
	      "\n"
	      "serve: run the Mfm northbound API server: ETSI MEC 010-2 application package\n"
	      "and lifecycle management, MEC 040 registration with a federator, zones, DevOps\n"
	      "plan/apply endpoints, notifications, /health and /metrics.\n"
	      "\n"
	      "  --config FILE      the server configuration (JSON; see docs/api.md)\n"
	      "  --port-file FILE   write the bound port to FILE once listening (overrides portFile)\n"
	      "  -h, --help         this help\n"
	      "\n"
	      "SIGINT or SIGTERM stops the server cleanly. Exit status: 0 after a clean stop,\n"
	      "1 when the server could not start, 2 for bad usage or configuration.\n", f);
}

int mo_serve_main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "port-file", required_argument, NULL, 'p' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *config = NULL, *port_file = NULL;
	mo_api_config *cfg = NULL;
	mo_api *a = NULL;
	sigset_t sigs;
	int opt, sig, rc;
	optind = 1;
	while ((opt = getopt_long(argc, argv, "c:p:h", opts, NULL)) != -1) {
		switch (opt) {
		case 'c': config = optarg; break;
		case 'p': port_file = optarg; break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "error: unexpected argument '%s'\n", argv[optind]);
		usage(stderr);
		return 2;
	}
	if (!config) {
		fprintf(stderr, "error: --config FILE is required\n");
		usage(stderr);
		return 2;
	}
	if (mo_global_init() < 0) {
		fprintf(stderr, "error: %s\n", mo_error_last()->message);
		return 1;
	}
	if (mo_api_config_load(&cfg, config) < 0) {
		fprintf(stderr, "error: %s\n", mo_error_last()->message);
		return 2;
	}
	if (port_file) {
		mo_free(cfg->port_file);
		cfg->port_file = mo_strdup(port_file);
	}
	/* every thread inherits the mask; this one takes the signals */
	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);
	if (mo_api_start(&a, cfg) < 0) {
		fprintf(stderr, "error: %s\n", mo_error_last()->message);
		mo_api_config_free(cfg);
		return 1;
	}
	printf("mecorch serve: listening on %s (data in %s, %zu zone(s))\n", a->base, cfg->data_dir, cfg->nzones);
	fflush(stdout);
	do {
		if (sigwait(&sigs, &sig) != 0)
			break;
	} while (sig != SIGINT && sig != SIGTERM);
	printf("mecorch serve: stopping\n");
	fflush(stdout);
	mo_api_stop(a);
	mo_api_config_free(cfg);
	rc = 0;
	return rc;
}
