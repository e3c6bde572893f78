/* cli_warmup.c - `ringpost warmup -c FILE`: where each source address is in
 * its warm-up schedule for each destination domain ([domain] warmup),
 * through GET /v1/warmup, every page. One line each, tab-separated:
 *   SOURCE  DOMAIN  since DATE  day D of N  sent S of CAP today
 * ("warmed up, sent S today" past the last day; SOURCE "*" when no
 * [domain] source is set). Exit status: 0; 64 usage; 69 no daemon; 77 bad
 * key; 78 config.
 */
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "base/buf.h"
#include "base/util.h"
#include "cli.h"
#include "config.h"

/* print_entry - one counter as a line. */
static void print_entry(json_t *e)
{
	const char *src = json_string_value(json_object_get(e, "source"));
	const char *since = json_string_value(json_object_get(e, "since"));
	json_int_t day = json_integer_value(json_object_get(e, "day"));
	json_int_t days = json_integer_value(json_object_get(e, "days"));
	json_int_t sent = json_integer_value(json_object_get(e, "sent"));
	json_t *cap = json_object_get(e, "cap");
	printf("%s\t%s\tsince %.10s\t", src ? src : "*",
	       json_string_value(json_object_get(e, "domain")), since ? since : "?");
	if (json_is_integer(cap))
		printf("day %lld of %lld\tsent %lld of %lld today\n", (long long)day,
		       (long long)days, (long long)sent, (long long)json_integer_value(cap));
	else
		printf("warmed up\tsent %lld today\n", (long long)sent);
}

int cli_warmup(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "-c") || !strcmp(argv[i], "--config"))
			i++;
		else if (strncmp(argv[i], "--config=", 9)) {
			fprintf(stderr, "usage: ringpost warmup -c FILE\n");
			return RP_EX_USAGE;
		}
	}
	struct config *cfg = cli_load_config(argc, argv);
	int rc = cli_get_pages(cfg, "/v1/warmup", "warmup", print_entry);
	config_free(cfg);
	return rc;
}
