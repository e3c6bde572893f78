/* fuzz_config.c - the INI config file loader (relay/config.c with inih):
 * every section and key, values of each type (sizes, durations, addresses,
 * networks, key lists, domains, retry schedules, TLS policies), [domain]
 * and [dkim] sections, and the warnings (relay/config_check.c) a loaded
 * config gets. config_check_sources (which binds sockets) is left out.
 *
 * Input: the file's text, written to a temporary file (the loader reads a
 * path). Oracles: a config either loads or names the file in its error;
 * a loaded config answers domain and network lookups.
 */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fuzz.h"
#include "relay/config.h"

static char path[200];

static void warn(void *arg, unsigned line, const char *text)
{
	(void)arg;
	(void)line;
	fuzz_check(text != NULL);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	struct fuzz_env *e = fuzz_env_get("");
	snprintf(path, sizeof(path), "%s/fuzz.conf", e->dir);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	FILE *f = fopen(path, "w");
	if (!f)
		abort();
	if (size)
		fwrite(data, 1, size, f);
	fclose(f);
	char err[512] = "";
	struct config *cfg = config_load(path, err, sizeof(err));
	if (!cfg) {
		fuzz_check(!strncmp(err, path, strlen(path)));
		return 0;
	}
	config_warnings(cfg, warn, NULL);
	config_has_tls(cfg);
	config_shards(cfg);
	config_domain(cfg, "example.net");
	config_domain(cfg, "example.test");
	for (unsigned i = 0; i < cfg->ndomains; i++)
		fuzz_check(config_domain(cfg, cfg->domains[i].name) != NULL);
	struct sockaddr_in sin = { .sin_family = AF_INET };
	inet_pton(AF_INET, "192.0.2.1", &sin.sin_addr);
	config_net_allowed(cfg, (struct sockaddr *)&sin);
	struct sockaddr_in6 sin6 = { .sin6_family = AF_INET6 };
	inet_pton(AF_INET6, "2001:db8::1", &sin6.sin6_addr);
	config_net_allowed(cfg, (struct sockaddr *)&sin6);
	config_ehlo_problem(cfg->hostname);
	config_free(cfg);
	return 0;
}
