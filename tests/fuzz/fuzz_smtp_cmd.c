/* fuzz_smtp_cmd.c - the SMTP command codec (relay/smtp_cmd.c) as the
 * server uses it, one line at a time: the verb and its argument, MAIL
 * FROM/RCPT TO paths with their parameters, parameter values decoded into
 * buffers of the server's sizes (ENVID 100, ORCPT "type;" + xtext 300),
 * the address check (base/addr.c), and AUTH initial responses (base64, the
 * PLAIN split of RFC 4616). Fast and pure; fuzz_smtp_server drives the
 * whole session.
 *
 * Input: command lines separated by LF (a CR before it is dropped, as the
 * server does). Oracles: every pointer the parser returns lies inside the
 * line; xtext encode(decode(x)) decodes back to the same bytes.
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/addr.h"
#include "base/auth.h"
#include "base/base64.h"
#include "fuzz.h"
#include "relay/smtp_cmd.h"

static void inside(const char *line, size_t len, const char *p, size_t n)
{
	fuzz_check(n == 0 || (p >= line && p + n <= line + len));
}

/* xtext - decode into an out of outlen bytes; encode and decode again. */
static void xtext(const char *v, size_t n, size_t outlen)
{
	char *out = malloc(outlen);
	long d = smtp_xtext_decode(v, n, out, outlen);
	if (d >= 0) {
		fuzz_check((size_t)d < outlen && out[d] == '\0');
		size_t el = (size_t)d * 3 + 1;
		char *enc = malloc(el), *back = malloc((size_t)d + 1);
		long e = smtp_xtext_encode(out, (size_t)d, enc, el);
		fuzz_check(e >= 0);
		long b = smtp_xtext_decode(enc, (size_t)e, back, (size_t)d + 1);
		fuzz_check(b == d && !memcmp(back, out, (size_t)d));
		free(enc);
		free(back);
	}
	free(out);
}

static void address(const struct smtp_path *p, bool utf8)
{
	size_t at = 0;
	enum addr_error e = addr_check(p->addr, p->addr_len, utf8, &at);
	addr_error_str(e);
	if (e == ADDR_OK) {
		fuzz_check(at < p->addr_len && p->addr[at] == '@');
		fuzz_check(addr_domain_check(p->addr + at + 1, p->addr_len - at - 1, utf8) ==
		           ADDR_OK);
	}
}

static void params(const char *line, size_t len, const struct smtp_path *p)
{
	bool utf8 = false;
	fuzz_check(p->nparams <= SMTP_MAX_PARAMS);
	for (unsigned i = 0; i < p->nparams; i++) {
		const struct smtp_param *pp = &p->params[i];
		inside(line, len, pp->key, pp->key_len);
		fuzz_check(pp->key_len > 0);
		if (pp->val)
			inside(line, len, pp->val, pp->val_len);
		if (smtp_param_is(pp, "SMTPUTF8"))
			utf8 = true;
		if (!pp->val)
			continue;
		if (smtp_param_is(pp, "ENVID")) {
			xtext(pp->val, pp->val_len, 101);
		} else if (smtp_param_is(pp, "ORCPT")) {
			const char *semi = memchr(pp->val, ';', pp->val_len);
			size_t tl = semi ? (size_t)(semi - pp->val) : 0;
			if (semi && tl && tl <= 32)
				xtext(semi + 1, pp->val_len - tl - 1, 300 - tl - 1);
		} else {
			xtext(pp->val, pp->val_len, 64);
		}
	}
	if (p->addr_len)
		address(p, utf8);
}

/* auth - "MECH [initial-response]": the response decoded as the server
 * does, and a PLAIN one split into authzid, authcid and password. */
static void auth(const char *arg, size_t n)
{
	const char *sp = memchr(arg, ' ', n);
	if (!sp)
		return;
	struct buf b = { 0 };
	const char *ir = sp + 1;
	size_t irlen = n - (size_t)(ir - arg);
	if (base64_decode(ir, irlen, &b) && buf_used(&b) <= 2 * AUTH_NAME_MAX + 1024 + 2) {
		const char *d = buf_head(&b), *end = d + buf_used(&b);
		const char *n1 = d ? memchr(d, '\0', (size_t)(end - d)) : NULL;
		const char *n2 = n1 ? memchr(n1 + 1, '\0', (size_t)(end - n1 - 1)) : NULL;
		if (n2)
			fuzz_check(n1 < n2 && n2 < end + 1);
		/* Round trip: what we decode, we encode back to the same bytes. */
		struct buf e = { 0 }, back = { 0 };
		base64_encode(&e, (const unsigned char *)buf_head(&b), buf_used(&b), false);
		fuzz_check(base64_decode(buf_head(&e), buf_used(&e), &back));
		fuzz_check(buf_used(&back) == buf_used(&b) &&
		           (!buf_used(&b) || !memcmp(buf_head(&back), buf_head(&b), buf_used(&b))));
		buf_free(&e);
		buf_free(&back);
	}
	buf_free(&b);
}

static void one_line(const char *line, size_t len)
{
	struct smtp_cmd c;
	struct smtp_path p;
	smtp_cmd_parse(line, len, &c);
	smtp_verb_name(c.verb);
	inside(line, len, c.arg, c.arg_len);
	switch (c.verb) {
	case SMTP_MAIL:
		if (smtp_path_parse(c.arg, c.arg_len, "FROM:", &p))
			params(line, len, &p);
		break;
	case SMTP_RCPT:
		if (smtp_path_parse(c.arg, c.arg_len, "TO:", &p))
			params(line, len, &p);
		break;
	case SMTP_AUTH:
		auth(c.arg, c.arg_len);
		break;
	default:
		/* Any line as a path too: the parser must hold on any bytes. */
		if (smtp_path_parse(line, len, "", &p))
			params(line, len, &p);
		break;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_in in = { data, size };
	const uint8_t *p;
	size_t n;
	while (fuzz_field(&in, "\n", &p, &n)) {
		if (n && p[n - 1] == '\r')
			n--;
		if (n > 4096)
			continue; /* the server refuses longer lines before parsing */
		char *line = fuzz_copy(p, n);
		one_line(line, n);
		free(line);
	}
	return 0;
}
