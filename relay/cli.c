/* cli.c - client commands over the HTTP API (see cli.h). */
#include "cli.h"

#include <stdio.h>

#include "config.h"
#include "queue/util.h"

static int needs_api(const char *what)
{
	fprintf(stderr, "ringpost: '%s' talks to the HTTP API, which is not built yet\n", what);
	return RP_EX_UNAVAILABLE;
}

int cli_send(int argc, char **argv)
{
	config_free(cli_load_config(argc, argv));
	return needs_api("send");
}

int cli_stats(int argc, char **argv)
{
	config_free(cli_load_config(argc, argv));
	return needs_api("stats");
}

int cli_queue(int argc, char **argv)
{
	config_free(cli_load_config(argc, argv));
	return needs_api("queue");
}
