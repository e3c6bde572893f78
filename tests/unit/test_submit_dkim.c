/* test_submit_dkim.c - which key signs: the From: domain as
 * dkim_from_domain reads it (display names, quoted strings and comments
 * cannot choose the key), and the table lookup (queue/submit_dkim.c). */
#include <criterion/criterion.h>
#include <string.h>

#include "queue/submit_dkim.h"

static const struct {
	const char *from;
	const char *domain; /* NULL: none */
} cases[] = {
	{ "app@origin.test", "origin.test" },
	{ "App <app@Origin.TEST>", "origin.test" },
	{ "\"Help <help@nokey.test>\" <app@origin.test>", "origin.test" },
	{ "\"a@nokey.test\" <app@origin.test>", "origin.test" },
	{ "app@origin.test (App <nobody>)", "origin.test" },
	{ "app@origin.test (ask x@nokey.test)", "origin.test" },
	{ "app@nokey.test (sent via x@origin.test )", "nokey.test" },
	{ "(comment (nested @x.test)) app@origin.test", "origin.test" },
	{ "<\"x@y\"@origin.test>", "origin.test" },
	{ "\"quoted\\\" <x@evil.test>\" <app@origin.test>", "origin.test" },
	{ "a@one.test, b@two.test", "one.test" },
	{ "A <a@one.test>, B <b@two.test>", "one.test" },
	{ "App\r\n <app@origin.test>", "origin.test" },
	{ "undisclosed-recipients:;", NULL },
	{ "no address here", NULL },
	{ "app@", NULL },
	{ "", NULL },
};

Test(submit_dkim, from_domain)
{
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char out[256] = "unchanged";
		bool ok = dkim_from_domain(cases[i].from, strlen(cases[i].from), out, sizeof(out));
		if (cases[i].domain) {
			cr_assert(ok, "From: %s: no domain", cases[i].from);
			cr_assert_str_eq(out, cases[i].domain, "From: %s", cases[i].from);
		} else {
			cr_assert_not(ok, "From: %s: domain %s", cases[i].from, out);
		}
	}
	char small[5];
	cr_assert_not(dkim_from_domain("a@origin.test", 13, small, sizeof(small)),
	              "a domain that does not fit is none");
}

Test(submit_dkim, table_lookup)
{
	cr_assert_eq(dkim_keys_count(NULL), 0);
	struct dkim_keys *t = dkim_keys_new();
	cr_assert_eq(dkim_keys_count(t), 0);
	dkim_keys_add(t, "Origin.Test", "s1", NULL);
	dkim_keys_add(t, "other.test", "s2", NULL);
	cr_assert_eq(dkim_keys_count(t), 2);
	const struct dkim_identity *id = dkim_keys_find(t, "ORIGIN.test", 11);
	cr_assert(id);
	cr_assert_str_eq(id->domain, "origin.test");
	cr_assert_str_eq(id->selector, "s1");
	cr_assert_null(dkim_keys_find(t, "sub.origin.test", 15), "no subdomains");
	cr_assert_null(dkim_keys_find(t, "rigin.test", 10));
	cr_assert_null(dkim_keys_find(t, "origin.tes", 10));
	struct dkim_keys *r = dkim_keys_ref(t);
	dkim_keys_unref(t);
	cr_assert_str_eq(dkim_keys_find(r, "other.test", 10)->selector, "s2", "still held");
	dkim_keys_unref(r);
}
