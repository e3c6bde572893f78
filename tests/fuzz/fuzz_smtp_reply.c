/* fuzz_smtp_reply.c - SMTP replies as the client reads them
 * (relay/smtp_reply.c): single and multi-line replies one after the other
 * from a stream, enhanced status codes, the one-line summary that goes
 * into logs, DSNs and the spool, and EHLO capabilities.
 *
 * Input: what a remote server sends. Oracles: a reply that parses is
 * "need more" (-2) when cut short anywhere; its code is 200..599; the enhanced code, when there is
 * one, starts with the code's class; the summary is NUL-terminated, fits and holds no control
 * character.
 */
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "relay/smtp_reply.h"

static void summary(const struct smtp_reply *r, size_t outlen)
{
	char *out = malloc(outlen);
	smtp_reply_summary(r, out, outlen);
	size_t n = strnlen(out, outlen);
	fuzz_check(n < outlen);
	for (size_t i = 0; i < n; i++)
		fuzz_check((unsigned char)out[i] >= 0x20 && out[i] != 0x7f);
	free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *p = fuzz_copy(data, size);
	size_t off = 0;
	for (unsigned k = 0; off < size && k < 64; k++) {
		struct smtp_reply r, again;
		long used = smtp_reply_parse(p + off, size - off, &r);
		fuzz_check(used == -1 || used == -2 || (used > 0 && (size_t)used <= size - off));
		if (used <= 0)
			break;
		fuzz_check(r.code >= 200 && r.code <= 599 && r.lines >= 1);
		fuzz_check(r.raw == p + off && r.raw_len == (size_t)used);
		fuzz_check(strnlen(r.enh, sizeof(r.enh)) < sizeof(r.enh));
		if (r.enh[0])
			fuzz_check(r.enh[0] == '0' + r.code / 100 && r.enh[1] == '.');
		/* Cut short anywhere: need more. */
		size_t cut = (size_t)used * 7919 % (size_t)used;
		char *part = fuzz_copy(p + off, cut);
		fuzz_check(smtp_reply_parse(part, cut, &again) == -2);
		free(part);
		summary(&r, 8);
		summary(&r, 512);
		struct smtp_caps caps;
		smtp_caps_parse(&r, &caps);
		off += (size_t)used;
	}
	free(p);
	return 0;
}
