/* test_addr.c - mail address syntax (base/addr.c): dot-strings and quoted
 * local parts, domains and address literals, length limits, SMTPUTF8 and
 * UTF-8 validation, and where the domain's '@' is.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "base/addr.h"

struct addr_case {
	const char *s;
	bool utf8;
	enum addr_error want;
	size_t at; /* offset of the '@' when ADDR_OK */
};

static const struct addr_case cases[] = {
	{ "a@b.c", false, ADDR_OK, 1 },
	{ "first.last@example.com", false, ADDR_OK, 10 },
	{ "a+tag@x.io", false, ADDR_OK, 5 },
	{ "!#$%&'*+-/=?^_`{|}~@x.example", false, ADDR_OK, 19 },
	{ "x@localhost", false, ADDR_OK, 1 },
	{ "a@xn--bcher-kva.example", false, ADDR_OK, 1 },
	{ "a@a-b.c-d.example", false, ADDR_OK, 1 },
	{ "1@2.3", false, ADDR_OK, 1 },
	{ "\"john doe\"@x.example", false, ADDR_OK, 10 },
	{ "\"a@b\"@c.example", false, ADDR_OK, 5 },
	{ "\"\"@x.example", false, ADDR_OK, 2 },
	{ "\"a\\\"b\"@x.example", false, ADDR_OK, 6 },
	{ "\"a\\\\\"@x.example", false, ADDR_OK, 5 },
	{ "user@[192.0.2.1]", false, ADDR_OK, 4 },
	{ "user@[IPv6:2001:db8::1]", false, ADDR_OK, 4 },
	{ "user@[ipv6:::1]", false, ADDR_OK, 4 },
	{ "", false, ADDR_EMPTY, 0 },
	{ "abc", false, ADDR_NO_AT, 0 },
	{ "abc.example.com", false, ADDR_NO_AT, 0 },
	{ "@x.example", false, ADDR_BAD_LOCAL, 0 },
	{ ".a@x.example", false, ADDR_BAD_LOCAL, 0 },
	{ "a.@x.example", false, ADDR_BAD_LOCAL, 0 },
	{ "a..b@x.example", false, ADDR_BAD_LOCAL, 0 },
	{ "a b@x.example", false, ADDR_BAD_LOCAL, 0 },
	{ "a@b@x.example", false, ADDR_BAD_LOCAL, 0 },
	{ "a(b)@x.example", false, ADDR_BAD_LOCAL, 0 },
	{ "\"a\"b\"@x.example", false, ADDR_BAD_LOCAL, 0 },
	{ "\"abc@x.example", false, ADDR_BAD_LOCAL, 0 },
	{ "\"a\\\"@x.example", false, ADDR_BAD_LOCAL, 0 },
	{ "\"a\tb\"@x.example", false, ADDR_BAD_LOCAL, 0 },
	{ "a@", false, ADDR_BAD_DOMAIN, 0 },
	{ "a@-x.example", false, ADDR_BAD_DOMAIN, 0 },
	{ "a@x-.example", false, ADDR_BAD_DOMAIN, 0 },
	{ "a@x.-example", false, ADDR_BAD_DOMAIN, 0 },
	{ "a@x..example", false, ADDR_BAD_DOMAIN, 0 },
	{ "a@.x.example", false, ADDR_BAD_DOMAIN, 0 },
	{ "a@x.example.", false, ADDR_BAD_DOMAIN, 0 },
	{ "a@x_y.example", false, ADDR_BAD_DOMAIN, 0 },
	{ "a@x y.example", false, ADDR_BAD_DOMAIN, 0 },
	{ "a@[1.2.3]", false, ADDR_BAD_DOMAIN, 0 },
	{ "a@[1.2.3.256]", false, ADDR_BAD_DOMAIN, 0 },
	{ "a@[IPv6:zz::1]", false, ADDR_BAD_DOMAIN, 0 },
	{ "a@[2001:db8::1]", false, ADDR_BAD_DOMAIN, 0 },
	{ "a@[1.2.3.4", false, ADDR_BAD_DOMAIN, 0 },
	{ "a@[]", false, ADDR_BAD_DOMAIN, 0 },
	/* Non-ASCII needs SMTPUTF8 and valid UTF-8. */
	{ "j\xc3\xb6rg@x.example", false, ADDR_NEEDS_UTF8, 0 },
	{ "j\xc3\xb6rg@x.example", true, ADDR_OK, 5 },
	{ "a@b\xc3\xbc"
	  "cher.example",
	  false, ADDR_NEEDS_UTF8, 0 },
	{ "a@b\xc3\xbc"
	  "cher.example",
	  true, ADDR_OK, 1 },
	{ "\xf0\x9f\x98\x80@x.example", true, ADDR_OK, 4 },
	{ "\"\xc3\xa9 x\"@x.example", true, ADDR_OK, 6 },
	{ "\xc3@x.example", true, ADDR_BAD_UTF8, 0 },
	{ "\xc0\xaf@x.example", true, ADDR_BAD_UTF8, 0 },
	{ "\xe0\x80\xaf@x.example", true, ADDR_BAD_UTF8, 0 },
	{ "\xed\xa0\x80@x.example", true, ADDR_BAD_UTF8, 0 },
	{ "\xf4\x90\x80\x80@x.example", true, ADDR_BAD_UTF8, 0 },
	{ "\xf5\x80\x80\x80@x.example", true, ADDR_BAD_UTF8, 0 },
	{ "\x80@x.example", true, ADDR_BAD_UTF8, 0 },
	{ "a@x.example\xc3", true, ADDR_BAD_UTF8, 0 },
};

Test(addr, check_table)
{
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct addr_case *c = &cases[i];
		size_t at = 9999;
		enum addr_error e = addr_check(c->s, strlen(c->s), c->utf8, &at);
		cr_assert_eq(e, c->want, "case %zu '%s': %d (%s), want %d (%s)", i, c->s, (int)e,
		             addr_error_str(e), (int)c->want, addr_error_str(c->want));
		if (e == ADDR_OK) {
			cr_assert_eq(at, c->at, "case %zu '%s': at %zu, want %zu", i, c->s, at,
			             c->at);
			cr_assert_eq(c->s[at], '@');
		} else {
			cr_assert_eq(at, 9999, "case %zu: at is only set on success", i);
		}
	}
	cr_assert_eq(addr_check("a@b.c", 5, false, NULL), ADDR_OK, "at may be NULL");
}

static char *repeat(char *out, char c, size_t n)
{
	memset(out, c, n);
	out[n] = '\0';
	return out;
}

Test(addr, length_limits)
{
	char local[80], label[80], s[600];
	/* Local part: 64 octets. */
	snprintf(s, sizeof(s), "%s@x.example", repeat(local, 'l', 64));
	cr_assert_eq(addr_check(s, strlen(s), false, NULL), ADDR_OK);
	snprintf(s, sizeof(s), "%s@x.example", repeat(local, 'l', 65));
	cr_assert_eq(addr_check(s, strlen(s), false, NULL), ADDR_TOO_LONG);
	/* Labels: 63 octets. */
	snprintf(s, sizeof(s), "a@%s.example", repeat(label, 'd', 63));
	cr_assert_eq(addr_check(s, strlen(s), false, NULL), ADDR_OK);
	snprintf(s, sizeof(s), "a@%s.example", repeat(label, 'd', 64));
	cr_assert_eq(addr_check(s, strlen(s), false, NULL), ADDR_BAD_DOMAIN);
	/* Whole address: 254 octets. */
	repeat(label, 'd', 63);
	int n = snprintf(s, sizeof(s), "%s@%s.%s.%s.", repeat(local, 'l', 60), label, label, label);
	size_t fill = 254 - (size_t)n;
	memset(s + n, 'e', fill);
	s[n + (int)fill] = '\0';
	cr_assert_eq(strlen(s), 254);
	cr_assert_eq(addr_check(s, 254, false, NULL), ADDR_OK);
	s[254] = 'e';
	s[255] = '\0';
	cr_assert_eq(addr_check(s, 255, false, NULL), ADDR_TOO_LONG);
	/* Domain: 255 octets (checked on its own). */
	char dom[300];
	n = snprintf(dom, sizeof(dom), "%s.%s.%s.", label, label, label);
	memset(dom + n, 'f', 255 - (size_t)n);
	dom[255] = '\0';
	cr_assert_eq(addr_domain_check(dom, 255, false), ADDR_OK);
	dom[255] = 'f';
	cr_assert_eq(addr_domain_check(dom, 256, false), ADDR_TOO_LONG);
}

Test(addr, domain_check)
{
	static const struct {
		const char *d;
		bool utf8;
		enum addr_error want;
	} d[] = {
		{ "example.com", false, ADDR_OK },
		{ "EXAMPLE.COM", false, ADDR_OK },
		{ "a", false, ADDR_OK },
		{ "[127.0.0.1]", false, ADDR_OK },
		{ "[IPv6:::1]", false, ADDR_OK },
		{ "", false, ADDR_BAD_DOMAIN },
		{ "a..b", false, ADDR_BAD_DOMAIN },
		{ "-a.b", false, ADDR_BAD_DOMAIN },
		{ "a.b-", false, ADDR_BAD_DOMAIN },
		{ "b\xc3\xbc"
		  "cher.de",
		  false, ADDR_NEEDS_UTF8 },
		{ "b\xc3\xbc"
		  "cher.de",
		  true, ADDR_OK },
		{ "b\xfc"
		  "cher.de",
		  true, ADDR_BAD_UTF8 },
	};
	for (size_t i = 0; i < sizeof(d) / sizeof(d[0]); i++)
		cr_assert_eq(addr_domain_check(d[i].d, strlen(d[i].d), d[i].utf8), d[i].want,
		             "case %zu '%s'", i, d[i].d);
}

Test(addr, utf8_and_ascii)
{
	static const struct {
		const char *s;
		bool valid;
	} u[] = {
		{ "", true },
		{ "plain", true },
		{ "\xc3\xa9", true },
		{ "\xe2\x82\xac", true },
		{ "\xf0\x9f\x98\x80", true },
		{ "\xf4\x8f\xbf\xbf", true },
		{ "\xef\xbf\xbf", true },
		{ "\xc3", false },
		{ "\xe2\x82", false },
		{ "\xf0\x9f\x98", false },
		{ "\xc3\x28", false },
		{ "\xc1\xbf", false },
		{ "\xe0\x9f\xbf", false },
		{ "\xf0\x8f\xbf\xbf", false },
		{ "\xed\xbf\xbf", false },
		{ "\xf4\x90\x80\x80", false },
		{ "\xff", false },
		{ "\xbf", false },
	};
	for (size_t i = 0; i < sizeof(u) / sizeof(u[0]); i++)
		cr_assert_eq(addr_utf8_valid(u[i].s, strlen(u[i].s)), u[i].valid, "case %zu", i);
	cr_assert(addr_is_ascii("abc~\x7f", 5));
	cr_assert_not(addr_is_ascii("ab\x80", 3));
	cr_assert(addr_is_ascii("ab\x80", 2), "only n bytes count");
}

Test(addr, error_strings)
{
	const char *seen[ADDR_BAD_UTF8 + 1];
	for (int e = ADDR_OK; e <= ADDR_BAD_UTF8; e++) {
		seen[e] = addr_error_str((enum addr_error)e);
		cr_assert_not_null(seen[e]);
		cr_assert_gt(strlen(seen[e]), 1);
		for (int k = 0; k < e; k++)
			cr_assert_str_neq(seen[e], seen[k], "errors %d and %d read the same", e, k);
	}
}
