/* test_fuzz_regressions.c - the bugs the fuzz targets (tests/fuzz) found,
 * each as a unit test that failed on the code before its fix. The inputs
 * that crashed the targets are in tests/fuzz/regressions/NAME/ too, run by
 * `make test` through the targets themselves (clang build).
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "api/api.h"
#include "api/http.h"
#include "api/imap_mime.h"
#include "api/mime.h"
#include "relay/config.h"
#include "support.h"

/* lines_ok - every line of msg ends in CRLF and has at most 998 octets. */
static void lines_ok(const char *msg, size_t n)
{
	size_t i = 0;
	while (i < n) {
		const char *nl = memchr(msg + i, '\n', n - i);
		cr_assert_not_null(nl, "a last line without CRLF");
		cr_assert(nl > msg + i && nl[-1] == '\r', "a bare LF at %zu", (size_t)(nl - msg));
		size_t len = (size_t)(nl - (msg + i)) - 1;
		cr_assert_leq(len, 998, "a line of %zu octets: %.60s...", len, msg + i);
		i += len + 2;
	}
}

/* ---- config: [dns] servers error message (fuzz_config) ------------------ */

/* The message named the bad entry through a pointer into a copy already
 * freed (ASan: heap-use-after-free; without it, the freed bytes). */
Test(fuzz_regressions, config_servers_error_names_the_entry)
{
	char dir[64], path[128], err[512] = "";
	test_tmpdir(dir, sizeof(dir), "fuzzreg");
	snprintf(path, sizeof(path), "%s/r.conf", dir);
	FILE *f = fopen(path, "w");
	cr_assert_not_null(f);
	fprintf(f,
	        "[server]\ndata_dir = %s\n[dns]\nservers = 127.0.0.1:53, not-an-address-at-all\n",
	        dir);
	fclose(f);
	struct config *cfg = config_load(path, err, sizeof(err));
	cr_assert_null(cfg);
	cr_assert(strstr(err, ":4: servers: 'not-an-address-at-all' is not ip:port"), "err: %s",
	          err);
	test_rmdir(dir);
}

/* ---- IMAP ENVELOPE: a NUL byte in an address field (fuzz_imap_mime) ------ */

/* The address-list reader took the NUL for the end of the value without
 * being there: it looped for ever (a shard spinning on one FETCH). */
Test(fuzz_regressions, envelope_nul_in_address_ends, .timeout = 10)
{
	static const char hdr[] = "From: MAILER-DAEMON@re4\0\0\0.example\r\n"
	                          "To: a@b, \0 c@d\r\nCc: g: x@y\0;\r\n\r\n";
	struct buf out = { 0 };
	imap_envelope(&out, hdr, sizeof(hdr) - 1);
	cr_assert_gt(buf_used(&out), 0);
	buf_reset(&out);
	imap_address_list(&out, "\0", 1);
	cr_assert_str_eq(buf_cstr(&out), "NIL");
	buf_free(&out);
}

/* ---- the API's JSON submissions (fuzz_json_submit, fuzz_mime) ----------- */

static char key[] = "k";
static char *keys[] = { key };
static const struct api_config api_cfg = {
	.keys = keys,
	.nkeys = 1,
	.hostname = "api.test",
	.max_message_size = 1 << 20,
	.max_request = 1 << 20,
	.max_recipients = 10,
	.max_batch = 10,
	.idle_timeout_ms = 60000,
	.max_clients = 10,
};

struct built {
	unsigned n;
};

static void each(void *arg, const char *head, size_t hlen, const char *body, size_t blen)
{
	((struct built *)arg)->n++;
	struct buf whole = { 0 };
	buf_append(&whole, head, hlen);
	buf_append(&whole, body, blen);
	lines_ok(buf_head(&whole), buf_used(&whole));
	buf_free(&whole);
}

static int check(const char *json, struct built *b, char *err, size_t errlen)
{
	char dir[64];
	test_tmpdir(dir, sizeof(dir), "fuzzreg");
	struct spool *sp = test_spool_open(dir, 3600000);
	int st = api_submit_check(json, strlen(json), &api_cfg, sp, err, errlen, each, b);
	spool_close(sp);
	test_rmdir(dir);
	return st;
}

/* "raw": null built nothing and said nothing: the request answered 202
 * with an id for a message that was never queued (GET then said 404). */
Test(fuzz_regressions, raw_null_is_refused)
{
	char err[512] = "";
	struct built b = { 0 };
	int st = check("{\"from\":\"a@example.org\",\"to\":\"b@example.net\",\"raw\":null}", &b,
	               err, sizeof(err));
	cr_assert_eq(st, 400, "status %d: %s", st, err);
	cr_assert(strstr(err, "raw must be a string"), "err: %s", err);
	cr_assert_eq(b.n, 0);
}

/* An attachment's file name went into one Content-Type and one
 * Content-Disposition line whatever its length: 1,000 octets and more. */
Test(fuzz_regressions, long_attachment_name_keeps_998)
{
	char json[8192], name[3000] = "", err[512] = "";
	for (int i = 0; i < 300; i++)
		strcat(name, "\\u00e9"); /* 300 x U+00E9: 600 octets, 1,800 as %XX */
	char plain[1200];
	memset(plain, 'n', sizeof(plain) - 1);
	plain[sizeof(plain) - 1] = '\0';
	snprintf(json, sizeof(json),
	         "{\"from\":\"a@example.org\",\"to\":\"b@example.net\",\"text\":\"t\","
	         "\"attachments\":[{\"filename\":\"%s.txt\",\"content\":\"aGk=\"},"
	         "{\"filename\":\"%s\",\"content\":\"aGk=\"}]}",
	         name, plain);
	struct built b = { 0 };
	cr_assert_eq(check(json, &b, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(b.n, 1);
}

/* A display name (From, headers.To) with a run of 1,000 characters no
 * fold can break went out as one line of 1,000 octets and more. */
Test(fuzz_regressions, long_display_name_keeps_998)
{
	char json[8192], run[1100], err[512] = "";
	memset(run, 'x', sizeof(run) - 1);
	run[sizeof(run) - 1] = '\0';
	snprintf(json, sizeof(json),
	         "{\"from\":\"%s <a@example.org>\",\"to\":\"b@example.net\",\"text\":\"t\","
	         "\"headers\":{\"To\":\"list@example.net, \\\"%s\\\" <c@example.net>\"}}",
	         run, run);
	struct built b = { 0 };
	cr_assert_eq(check(json, &b, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(b.n, 1);
}

/* The same through mime_build directly, the From keeping its address. */
Test(fuzz_regressions, mime_long_display_name_keeps_address)
{
	char from[1200], to[1200];
	memset(from, 'n', 1000);
	strcpy(from + 1000, " <a@example.org>");
	memset(to, 'y', 1000);
	strcpy(to + 1000, "@example.net");
	struct mime_message m = { .from = from,
		                  .to = to,
		                  .text = "hi",
		                  .text_len = 2,
		                  .message_id = "1@test",
		                  .date_ms = 1136214245000ull };
	struct buf out = { 0 };
	char err[200];
	cr_assert(mime_build(&m, &out, err, sizeof(err)), "%s", err);
	lines_ok(buf_head(&out), buf_used(&out));
	cr_assert_not_null(memmem(buf_head(&out), buf_used(&out), "<a@example.org>", 15));
	buf_free(&out);
}
