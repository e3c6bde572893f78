/* fuzz_bounce.c - what the bounce MX makes of a message (queue/bounce*.c):
 * RFC 3464 DSNs, RFC 5965 ARF complaints and the bounce texts of Exim,
 * Postfix and qmail, through nested MIME, quoted-printable and base64.
 *
 * Input: the message as received (any bytes). Oracles (bounce.h's
 * promises): every string in the report is NUL-terminated within its
 * field and holds no control character; nrcpt <= BOUNCE_MAX_RCPT; true
 * exactly when kind is not NONE and nrcpt >= 1; the verdict is the worst
 * recipient's kind; the same input gives the same report.
 */
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "queue/bounce.h"

#define CLEAN(s) clean((s), sizeof(s))

static void clean(const char *s, size_t size)
{
	size_t n = strnlen(s, size);
	fuzz_check(n < size);
	for (size_t i = 0; i < n; i++)
		fuzz_check((unsigned char)s[i] >= 0x20 && s[i] != 0x7f);
	fuzz_check(n == 0 || (s[0] != ' ' && s[n - 1] != ' '));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *msg = fuzz_copy(data, size);
	struct bounce_report *r = malloc(sizeof(*r)), *again = malloc(sizeof(*again));
	bool ok = bounce_parse(msg, size, r);
	fuzz_check(r->nrcpt <= BOUNCE_MAX_RCPT);
	fuzz_check(ok == (r->kind != BOUNCE_NONE && r->nrcpt >= 1));
	if (!ok)
		fuzz_check(r->kind == BOUNCE_NONE && r->nrcpt == 0);
	bounce_kind_name(r->kind);
	bounce_format_name(r->format);
	enum bounce_kind worst = BOUNCE_NONE;
	for (unsigned i = 0; i < r->nrcpt; i++) {
		const struct bounce_rcpt *c = &r->rcpt[i];
		fuzz_check(c->kind != BOUNCE_NONE);
		if (c->kind > worst)
			worst = c->kind;
		CLEAN(c->status);
		CLEAN(c->final_rcpt);
		CLEAN(c->original_rcpt);
		CLEAN(c->diag);
		CLEAN(c->remote_mta);
		fuzz_check(c->smtp_code >= 0 && c->smtp_code <= 999);
	}
	if (r->nrcpt && !r->rcpt_dropped)
		fuzz_check(r->kind == worst);
	CLEAN(r->original_message_id);
	CLEAN(r->reporting_mta);
	CLEAN(r->envelope_id);
	CLEAN(r->feedback_type);
	CLEAN(r->arf_original_rcpt);
	CLEAN(r->arf_original_mail_from);
	fuzz_check(bounce_parse(msg, size, again) == ok);
	fuzz_check(!memcmp(r, again, sizeof(*r)));
	free(r);
	free(again);
	free(msg);
	return 0;
}
