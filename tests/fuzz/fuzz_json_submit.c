/* fuzz_json_submit.c - the JSON submission (api/api_submit.c) as POST
 * /v1/messages validates and builds it, without a session or a commit
 * (api_submit_check): the fields and their shapes, addresses, recipients
 * and their vars, headers, attachments (base64), unsubscribe URIs, raw
 * messages, {{vars}} rendered per recipient, MIME building, size limits.
 *
 * Input: the request body. Oracles: a message that is not built says why
 * (rp_assert in api_submit_check); every message built from parts (not
 * raw) has CRLF lines of at most 998 octets, no NUL, and a header section
 * whose fields are "Name: value" lines or their folds, named only from
 * what ringpost writes and what the request's "headers" gave: no CR, LF
 * or field smuggled in through a value (header injection).
 */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "api/api.h"
#include "api/http.h"
#include "fuzz.h"

static char key[] = "fuzz-key-0123456789";
static char *keys[] = { key };

static const struct api_config api_cfg = {
	.keys = keys,
	.nkeys = 1,
	.hostname = "api.fuzz.test",
	.max_message_size = 65536,
	.max_request = 256 * 1024,
	.max_recipients = 20,
	.max_batch = 10,
	.idle_timeout_ms = 60000,
	.max_clients = 10,
};

/* Fields ringpost writes itself in a message built from parts. */
static const char *const ours[] = {
	"Received",
	"Date",
	"Message-ID",
	"From",
	"To",
	"Subject",
	"MIME-Version",
	"Content-Type",
	"Content-Transfer-Encoding",
	"List-Unsubscribe",
	"List-Unsubscribe-Post",
};

struct check {
	json_t *headers; /* the request's "headers" object, or NULL */
	bool raw;        /* a raw message: the caller's own bytes */
};

static bool named(const struct check *c, const char *name, size_t n)
{
	for (size_t i = 0; i < sizeof(ours) / sizeof(ours[0]); i++)
		if (strlen(ours[i]) == n && !strncasecmp(ours[i], name, n))
			return true;
	const char *k;
	json_t *v;
	if (json_is_object(c->headers))
		json_object_foreach(c->headers, k, v)
		{
			if (strlen(k) == n && !strncasecmp(k, name, n))
				return true;
		}
	return false;
}

/* lines - the message's lines and header fields (see the top). */
static void lines(const struct check *c, const char *msg, size_t len)
{
	bool header = true;
	size_t i = 0;
	while (i < len) {
		const char *nl = memchr(msg + i, '\n', len - i);
		fuzz_check(nl && nl > msg + i && nl[-1] == '\r');
		size_t n = (size_t)(nl - (msg + i)) - 1; /* without CRLF */
		const char *l = msg + i;
		fuzz_check(n <= 998);
		fuzz_check(!memchr(l, '\r', n) && !memchr(l, '\0', n));
		if (header && n == 0) {
			header = false;
		} else if (header && l[0] != ' ' && l[0] != '\t') {
			const char *colon = memchr(l, ':', n);
			fuzz_check(colon && colon > l);
			fuzz_check(named(c, l, (size_t)(colon - l)));
		}
		i += n + 2;
	}
}

static void one_message(void *arg, const char *head, size_t hlen, const char *body, size_t blen)
{
	const struct check *c = arg;
	if (c->raw)
		return;
	struct buf whole = { 0 };
	buf_append(&whole, head, hlen);
	buf_append(&whole, body, blen);
	lines(c, buf_head(&whole), buf_used(&whole));
	buf_free(&whole);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_env *e = fuzz_env_get("hostname = api.fuzz.test\n");
	if (size > 256 * 1024)
		return 0; /* over max_request: refused before parsing */
	char *body = fuzz_copy(data, size);
	struct check c = { 0 };
	json_t *doc = json_loadb(body, size, JSON_REJECT_DUPLICATES, NULL);
	if (doc) {
		c.headers = json_object_get(doc, "headers");
		c.raw = json_object_get(doc, "raw") != NULL;
	}
	char err[512];
	api_submit_check(body, size, &api_cfg, e->spool, err, sizeof(err), one_message, &c);
	json_decref(doc);
	free(body);
	return 0;
}
