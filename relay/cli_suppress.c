/* cli_suppress.c - `ringpost suppress -c FILE list | add ADDRESS [--reason
 * TEXT] | del ADDRESS`: the suppression list through the HTTP API. list
 * pages through the whole list (one line per address: address, since,
 * reason). Exit status: 0; 64 usage; 65 a bad address; 66 (del) not on the
 * list; 69 no daemon; 77 bad key; 78 config.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "base/util.h"
#include "cli.h"
#include "config.h"

/* print_entry - one address as a line: address, since, reason. */
static void print_entry(json_t *e)
{
	printf("%s\t%s\t%s\n", json_string_value(json_object_get(e, "address")),
	       json_string_value(json_object_get(e, "since")),
	       json_string_value(json_object_get(e, "reason")));
}

int cli_suppress(int argc, char **argv)
{
	const char *args[2] = { 0 }, *reason = NULL;
	unsigned nargs = 0;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "-c") || !strcmp(argv[i], "--config"))
			i++;
		else if (!strncmp(argv[i], "--config=", 9))
			continue;
		else if (!strcmp(argv[i], "--reason") && i + 1 < argc)
			reason = argv[++i];
		else if (nargs < 2)
			args[nargs++] = argv[i];
		else
			nargs = 3;
	}
	bool ok = (nargs == 1 && !strcmp(args[0], "list")) ||
	          (nargs == 2 && (!strcmp(args[0], "add") || !strcmp(args[0], "del")));
	if (!ok) {
		fprintf(stderr,
		        "usage: ringpost suppress -c FILE list | add ADDRESS [--reason TEXT] "
		        "| del ADDRESS\n");
		return RP_EX_USAGE;
	}
	struct config *cfg = cli_load_config(argc, argv);
	int rc;
	if (!strcmp(args[0], "list")) {
		rc = cli_get_pages(cfg, "/v1/suppressions", "suppressions", print_entry);
	} else {
		struct buf out = { 0 }, path = { 0 };
		int status;
		if (!strcmp(args[0], "add")) {
			json_t *o = json_pack("{s:s, s:s}", "address", args[1], "reason",
			                      reason ? reason : "added with ringpost suppress");
			char *body = json_dumps(o, JSON_COMPACT);
			status = cli_request(cfg, "POST", "/v1/suppressions", body, &out);
			free(body);
			json_decref(o);
		} else {
			buf_puts(&path, "/v1/suppressions/");
			cli_url_encode(&path, args[1]);
			status = cli_request(cfg, "DELETE", buf_cstr(&path), NULL, &out);
		}
		if (status == 200 || status == 201) {
			printf("%s %s\n", args[1],
			       !strcmp(args[0], "add") ? "is on the suppression list"
			                               : "is off the suppression list");
			rc = RP_EX_OK;
		} else {
			rc = status == 404 ? RP_EX_NOINPUT : cli_fail_status(status, &out);
			if (status == 404)
				fprintf(stderr, "ringpost: %s is not on the suppression list\n",
				        args[1]);
		}
		buf_free(&out);
		buf_free(&path);
	}
	config_free(cfg);
	return rc;
}
