/* fuzz_addr.c - the small parsers of untrusted names and encodings:
 * addresses (base/addr.c: addr-spec, quoted local parts, IP literals,
 * UTF-8 for SMTPUTF8), domains to A-labels (dns/dns_idna.c, Punycode),
 * signed VERP return paths (queue/verp.c), base64 (base/base64.c), the
 * log quoting of client-supplied values (base/log.c), recipient domains
 * (queue/submit.c) and host:port addresses (relay/config.c).
 *
 * Input: a selector byte, then the bytes. Oracles: a valid address has
 * its '@' where said and a valid domain after it; an ASCII address is
 * valid with or without SMTPUTF8; A-labels are ASCII and lower-case and
 * convert to themselves; VERP addresses we make (at a valid domain)
 * decode to what was encoded and any change in their MAC is refused;
 * base64 decodes what it encodes; a logged value (log_value, log_addr,
 * log_quote) fits, is printable, and cannot end its key=value field early
 * or forge another.
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "base/addr.h"
#include "base/base64.h"
#include "base/log.h"
#include "dns/dns.h"
#include "fuzz.h"
#include "queue/submit.h"
#include "queue/verp.h"
#include "relay/config.h"

static const unsigned char key[VERP_KEY_LEN] = "fuzz-verp-key-0123456789abcdef!";

static void address(const char *s, size_t n)
{
	size_t at = 0;
	enum addr_error e = addr_check(s, n, true, &at);
	addr_error_str(e);
	bool ascii = addr_is_ascii(s, n);
	if (ascii)
		fuzz_check(addr_check(s, n, false, NULL) == e);
	if (e == ADDR_OK) {
		fuzz_check(at < n && s[at] == '@');
		fuzz_check(addr_domain_check(s + at + 1, n - at - 1, true) == ADDR_OK);
		fuzz_check(addr_utf8_valid(s, n));
		char dom[256];
		submit_domain(s, n, dom, sizeof(dom));
	}
}

static void idna(const char *s, size_t n)
{
	char *name = fuzz_dup(s, n), out[300], again[300];
	if (dns_to_ascii(name, out, sizeof(out))) {
		size_t len = strlen(out);
		for (size_t i = 0; i < len; i++)
			fuzz_check((unsigned char)out[i] < 0x80 && !isupper((unsigned char)out[i]));
		fuzz_check(dns_to_ascii(out, again, sizeof(again)) && !strcmp(out, again));
	}
	char small[8];
	dns_to_ascii(name, small, sizeof(small));
	free(name);
}

static void verp(const char *s, size_t n, uint64_t id, uint32_t idx)
{
	char *domain = fuzz_dup(s, strnlen(s, n));
	char addr[VERP_ADDR_MAX + 1];
	uint64_t got_id;
	uint32_t got_idx;
	verp_decode(key, s, n, domain, &got_id, &got_idx);
	/* Our bounce domain is a valid domain name (the config checks it). */
	bool valid = addr_domain_check(domain, strlen(domain), false) == ADDR_OK;
	size_t len = verp_encode(key, id, idx, domain, addr, sizeof(addr));
	if (len && valid) {
		fuzz_check(len == strlen(addr));
		fuzz_check(verp_decode(key, addr, len, domain, &got_id, &got_idx) == VERP_OK);
		fuzz_check(got_id == id && got_idx == idx);
		char *at = strrchr(addr, '@');
		fuzz_check(at && at - addr > 16);
		at[-1] = at[-1] == '0' ? '1' : '0'; /* the MAC's last digit */
		fuzz_check(verp_decode(key, addr, len, domain, &got_id, &got_idx) == VERP_BAD_MAC);
	}
	free(domain);
}

static void base64(const char *s, size_t n)
{
	struct buf d = { 0 }, e = { 0 }, back = { 0 };
	base64_decode(s, n, &d);
	base64_encode(&e, (const unsigned char *)s, n, n & 1);
	fuzz_check(base64_decode(buf_head(&e), buf_used(&e), &back));
	fuzz_check(buf_used(&back) == n && (!n || !memcmp(buf_head(&back), s, n)));
	buf_free(&d);
	buf_free(&e);
	buf_free(&back);
}

/* printable - a NUL-terminated field value within outlen, without
 * control bytes (UTF-8 may show as it is when quoted); unquoted, it holds nothing that could end
 * the field or start another (blank, '"', '=', '\'); quoted, its quotes balance. */
static void printable(const char *out, size_t outlen)
{
	size_t len = strnlen(out, outlen);
	fuzz_check(len < outlen);
	for (size_t i = 0; i < len; i++) /* UTF-8 is shown as it is, quoted */
		fuzz_check((unsigned char)out[i] >= 0x20 && out[i] != 0x7f);
	if (len && out[0] == '"') {
		bool open = false;
		for (size_t i = 0; i < len; i++) {
			if (out[i] == '\\')
				i++;
			else if (out[i] == '"')
				open = !open;
		}
		fuzz_check(!open && out[len - 1] == '"');
	} else {
		for (size_t i = 0; i < len; i++)
			fuzz_check((unsigned char)out[i] < 0x7f && !strchr(" \"=\\", out[i]));
	}
}

static void quote(const char *s, size_t n)
{
	for (size_t outlen = 8; outlen <= LOG_VALUE_MAX; outlen = outlen * 3 + 1) {
		char *out = malloc(outlen);
		log_value(out, outlen, s, n);
		printable(out, outlen);
		log_addr(out, outlen, s, n);
		printable(out, outlen);
		log_quote(out, outlen, s, n);
		printable(out, outlen);
		fuzz_check(out[0] == '"');
		free(out);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_in in = { data, size };
	uint8_t which = fuzz_u8(&in);
	uint64_t id = fuzz_u32(&in);
	id = id << 32 | fuzz_u32(&in);
	uint32_t idx = fuzz_u32(&in);
	char *s = fuzz_copy(in.p, in.n);
	size_t n = in.n;
	switch (which % 6) {
	case 0:
		address(s, n);
		break;
	case 1:
		idna(s, n);
		break;
	case 2:
		verp(s, n, id, idx);
		break;
	case 3:
		base64(s, n);
		break;
	case 4:
		quote(s, n);
		break;
	case 5: {
		char *z = fuzz_dup(s, n);
		struct cfg_addr a;
		config_parse_addr(z, &a);
		config_ehlo_problem(z);
		free(z);
		break;
	}
	}
	free(s);
	return 0;
}
