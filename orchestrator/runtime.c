/*
 * runtime.c - defaults of the settings a run hands to the drivers
 * (runtime.h).
 */
#include "runtime.h"

#include <string.h>

void mo_http_config_defaults(mo_http_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->max_retries = 5;
	cfg->backoff_base_ms = 200;
	cfg->backoff_max_ms = 10000;
	cfg->connect_timeout_ms = 10000;
	cfg->timeout_ms = 60000;
	cfg->ca_file = NULL;
}
