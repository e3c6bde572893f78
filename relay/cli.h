/* cli.h - the client commands (send, stats, queue): they talk to a running
 * daemon through its HTTP API. */
#ifndef RP_CLI_H
#define RP_CLI_H

#include <stdbool.h>

#include <jansson.h>

struct config;

/* cli_config_path - the -c/--config argument, or "ringpost.conf". */
const char *cli_config_path(int argc, char **argv);
/* cli_load_config - load it or exit 78 with the reason. */
struct config *cli_load_config(int argc, char **argv);

struct buf;
/* cli_request - one HTTP request to the daemon's API (body may be NULL);
 * the status, the body in out (caller frees). Exits 69 when the daemon
 * cannot be reached. */
int cli_request(const struct config *cfg, const char *method, const char *path, const char *body,
                struct buf *out);
/* cli_url_encode - s as a URL path segment or query value (RFC 3986
 * unreserved characters kept, the rest %XX) onto b. */
void cli_url_encode(struct buf *b, const char *s);
/* cli_get_pages - GET path (no query) a page of 1,000 at a time, following "next" as after=; each
 * entry of the array named array goes to fn. Returns 0, or the exit code of a failed request. */
int cli_get_pages(const struct config *cfg, const char *path, const char *array,
                  void (*fn)(json_t *e));
/* cli_fail_status - print the API's error and map the status to an exit code. */
int cli_fail_status(int status, const struct buf *body);

int cli_send(int argc, char **argv);
int cli_stats(int argc, char **argv);
int cli_queue(int argc, char **argv);
/* cli_user - `user add|del NAME`: edit the [auth] users file (cli_user.c). */
int cli_user(int argc, char **argv);
/* cli_suppress - `suppress list|add ADDR [--reason R]|del ADDR` (cli_suppress.c). */
int cli_suppress(int argc, char **argv);
/* cli_warmup - `warmup`: the warm-up counters, a line each (cli_warmup.c). */
int cli_warmup(int argc, char **argv);
/* cli_cluster_stats - `stats --cluster`: every live node's heartbeat read
 * from [cluster] redis, a line each (or JSON) (cli_cluster.c). */
int cli_cluster_stats(const struct config *cfg, bool json);

#endif
