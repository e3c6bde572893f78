/* test_template.c - {{name}} substitution (api/template.c): a table of
 * templates against one set of variables, blanks inside the braces, names
 * the lookup does not know left exactly as written, malformed braces, HTML
 * escaping of values (never of the template), template_has_vars, and the
 * output bound: a template bomb stops at the bound, never rendered first.
 */
#include <criterion/criterion.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/template.h"

struct var {
	const char *name, *value;
};

static const struct var vars[] = {
	{ "name", "Ann" },
	{ "first_name", "Bo" },
	{ "order-id", "A-17" },
	{ "user.city", "K\xc3\xb6ln" },
	{ "x", "X" },
	{ "empty", "" },
	{ "html", "<b>\"Tom\" & 'Jerry'</b>" },
	{ "braces", "{{name}}" },
	{ "N0", "zero" },
};

static unsigned lookups;

static const char *lookup(void *ctx, const char *name, size_t len, size_t *vlen)
{
	(void)ctx;
	lookups++;
	for (size_t i = 0; i < sizeof(vars) / sizeof(vars[0]); i++)
		if (strlen(vars[i].name) == len && !memcmp(vars[i].name, name, len)) {
			*vlen = strlen(vars[i].value);
			return vars[i].value;
		}
	return NULL;
}

static char *render(const char *s, bool html)
{
	struct buf b = { 0 };
	template_render(&b, s, strlen(s), lookup, NULL, html ? TEMPLATE_HTML : TEMPLATE_RAW,
	                SIZE_MAX);
	char *out = strdup(buf_cstr(&b));
	buf_free(&b);
	return out;
}

struct tcase {
	const char *in, *out;
	bool has_vars; /* template_has_vars: a well-formed placeholder, known or not */
};

static const struct tcase plain_cases[] = {
	{ "", "", false },
	{ "no placeholders", "no placeholders", false },
	{ "{{name}}", "Ann", true },
	{ "Hello {{name}}!", "Hello Ann!", true },
	{ "{{name}}{{name}}", "AnnAnn", true },
	{ "{{name}} and {{first_name}}", "Ann and Bo", true },
	{ "id {{order-id}} in {{user.city}}", "id A-17 in K\xc3\xb6ln", true },
	{ "{{N0}}", "zero", true },
	/* Blanks inside the braces. */
	{ "{{ name }}", "Ann", true },
	{ "{{name }}", "Ann", true },
	{ "{{   name}}", "Ann", true },
	{ "a{{  x  }}b", "aXb", true },
	/* A blank inside the name is not a name. */
	{ "{{first name}}", "{{first name}}", false },
	/* Tabs are not blanks here. */
	{ "{{\tname}}", "{{\tname}}", false },
	/* Unknown names stay exactly as written, blanks included. */
	{ "{{nobody}}", "{{nobody}}", true },
	{ "Hi {{ nobody }}, {{name}}", "Hi {{ nobody }}, Ann", true },
	{ "{{Name}}", "{{Name}}", true }, /* names are case-sensitive */
	/* Empty value. */
	{ "[{{empty}}]", "[]", true },
	/* Malformed braces stay as they are. */
	{ "{{}}", "{{}}", false },
	{ "{{ }}", "{{ }}", false },
	{ "{name}", "{name}", false },
	{ "{{name}", "{{name}", false },
	{ "{{name", "{{name", false },
	{ "name}}", "name}}", false },
	{ "{{", "{{", false },
	{ "{", "{", false },
	{ "}}", "}}", false },
	{ "{{na!me}}", "{{na!me}}", false },
	{ "{{name}x}}", "{{name}x}}", false },
	/* Extra braces around a placeholder. */
	{ "{{{name}}}", "{Ann}", true },
	{ "{{{{name}}}}", "{{Ann}}", true },
	{ "{{ {{name}} }}", "{{ Ann }}", true },
	/* A value is not rendered again. */
	{ "{{braces}}", "{{name}}", true },
	/* Braces at the very end after a placeholder. */
	{ "{{x}}{", "X{", true },
	{ "{{x}}{{", "X{{", true },
	/* Non-ASCII around placeholders. */
	{ "\xc3\xa9{{x}}\xc3\xa9", "\xc3\xa9X\xc3\xa9", true },
};

Test(template, table_plain)
{
	for (size_t i = 0; i < sizeof(plain_cases) / sizeof(plain_cases[0]); i++) {
		const struct tcase *c = &plain_cases[i];
		char *got = render(c->in, false);
		cr_assert_str_eq(got, c->out, "case %zu '%s': got '%s', want '%s'", i, c->in, got,
		                 c->out);
		free(got);
		cr_assert_eq(template_has_vars(c->in, strlen(c->in)), c->has_vars,
		             "case %zu '%s': has_vars", i, c->in);
	}
}

static const struct tcase html_cases[] = {
	/* Values are escaped... */
	{ "<p>{{html}}</p>", "<p>&lt;b&gt;&quot;Tom&quot; &amp; &#39;Jerry&#39;&lt;/b&gt;</p>",
	  true },
	{ "<a title=\"{{html}}\">",
	  "<a title=\"&lt;b&gt;&quot;Tom&quot; &amp; &#39;Jerry&#39;&lt;/b&gt;\">", true },
	/* ...the template itself is not, nor unknown placeholders. */
	{ "<b>{{name}} & co</b>", "<b>Ann & co</b>", true },
	{ "<i>{{nobody}}</i>", "<i>{{nobody}}</i>", true },
	/* Non-ASCII values pass through. */
	{ "{{user.city}}", "K\xc3\xb6ln", true },
	{ "{{braces}}", "{{name}}", true },
};

Test(template, table_html_escaping)
{
	for (size_t i = 0; i < sizeof(html_cases) / sizeof(html_cases[0]); i++) {
		const struct tcase *c = &html_cases[i];
		char *got = render(c->in, true);
		cr_assert_str_eq(got, c->out, "case %zu '%s': got '%s'", i, c->in, got);
		free(got);
	}
	/* Without escaping the same value goes in raw. */
	char *got = render("{{html}}", false);
	cr_assert_str_eq(got, "<b>\"Tom\" & 'Jerry'</b>");
	free(got);
}

Test(template, length_bounded)
{
	/* Only s[0..n) counts: a placeholder cut by n is text. */
	const char *s = "{{name}}{{name}}";
	for (size_t n = 0; n <= strlen(s); n++) {
		struct buf b = { 0 };
		cr_assert(template_render(&b, s, n, lookup, NULL, TEMPLATE_RAW, SIZE_MAX));
		const char *want = n < 8 ? NULL : n < 16 ? "Ann" : "AnnAnn";
		char expect[32];
		if (!want)
			snprintf(expect, sizeof(expect), "%.*s", (int)n, s);
		else if (n < 16)
			snprintf(expect, sizeof(expect), "Ann%.*s", (int)(n - 8), s + 8);
		else
			snprintf(expect, sizeof(expect), "%s", want);
		cr_assert_eq(buf_used(&b), strlen(expect), "n=%zu: '%.*s' want '%s'", n,
		             (int)buf_used(&b), buf_used(&b) ? buf_head(&b) : "", expect);
		cr_assert(!buf_used(&b) || !memcmp(buf_head(&b), expect, buf_used(&b)), "n=%zu", n);
		cr_assert_eq(template_has_vars(s, n), n >= 8, "n=%zu: has_vars", n);
		buf_free(&b);
	}
}

Test(template, appends_and_handles_nul)
{
	struct buf b = { 0 };
	buf_puts(&b, "pre:");
	static const char s[] = "a\0{{x}}\0b";
	cr_assert(template_render(&b, s, sizeof(s) - 1, lookup, NULL, TEMPLATE_RAW, SIZE_MAX));
	cr_assert_eq(buf_used(&b), 4 + 5);
	cr_assert(!memcmp(buf_head(&b), "pre:a\0X\0b", 9));
	buf_free(&b);
}

Test(template, long_input_and_many_placeholders)
{
	/* 10,000 placeholders, all replaced; lookups only for real ones. */
	struct buf in = { 0 }, want = { 0 }, out = { 0 };
	for (int i = 0; i < 10000; i++) {
		buf_puts(&in, i % 2 ? "{{ x }}-" : "{{nobody}}-");
		buf_puts(&want, i % 2 ? "X-" : "{{nobody}}-");
	}
	lookups = 0;
	cr_assert(template_render(&out, buf_head(&in), buf_used(&in), lookup, NULL, TEMPLATE_HTML,
	                          SIZE_MAX));
	cr_assert_eq(lookups, 10000);
	cr_assert_eq(buf_used(&out), buf_used(&want));
	cr_assert(!memcmp(buf_head(&out), buf_head(&want), buf_used(&out)));
	buf_free(&in);
	buf_free(&want);
	buf_free(&out);
}

Test(template, url_escaping)
{
	struct buf b = { 0 };
	static const char s[] = "https://x.test/u?c={{user.city}}&o={{order-id}}&h={{html}}&"
	                        "e={{empty}}&n={{nobody}}";
	cr_assert(template_render(&b, s, sizeof(s) - 1, lookup, NULL, TEMPLATE_URL, SIZE_MAX));
	cr_assert_str_eq(buf_cstr(&b),
	                 "https://x.test/u?c=K%C3%B6ln&o=A-17&"
	                 "h=%3Cb%3E%22Tom%22%20%26%20%27Jerry%27%3C%2Fb%3E&e=&n={{nobody}}",
	                 "values percent-encoded (UTF-8 bytes too), the template's own "
	                 "characters kept");
	buf_free(&b);
}

/* ---- the output bound ---------------------------------------------------- */

static const char *bomb_value;
static size_t bomb_len;
static unsigned bomb_lookups;

static const char *bomb_lookup(void *ctx, const char *name, size_t len, size_t *vlen)
{
	(void)ctx;
	(void)name;
	(void)len;
	bomb_lookups++;
	*vlen = bomb_len;
	return bomb_value;
}

/* Every output size around the bound, in every escaping: true exactly when
 * the whole rendering fits, never more than max bytes written. */
Test(template, bounded_exactly)
{
	static const char *const tpls[] = { "ab{{v}}cd{{v}}", "{{v}}", "x{y}{{nobody}}z{{v}}" };
	bomb_value = "<a&b c>";
	bomb_len = strlen(bomb_value);
	for (size_t t = 0; t < sizeof(tpls) / sizeof(tpls[0]); t++) {
		for (int esc = TEMPLATE_RAW; esc <= TEMPLATE_URL; esc++) {
			struct buf full = { 0 };
			cr_assert(template_render(&full, tpls[t], strlen(tpls[t]), bomb_lookup,
			                          NULL, (enum template_escape)esc, SIZE_MAX));
			size_t need = buf_used(&full);
			for (size_t max = 0; max <= need + 2; max++) {
				struct buf b = { 0 };
				buf_puts(&b, "pre");
				bool ok = template_render(&b, tpls[t], strlen(tpls[t]), bomb_lookup,
				                          NULL, (enum template_escape)esc, max);
				cr_assert_eq(ok, max >= need, "tpl %zu esc %d max %zu: %d", t, esc,
				             max, ok);
				cr_assert_leq(buf_used(&b) - 3, max, "tpl %zu esc %d max %zu", t,
				              esc, max);
				if (ok)
					cr_assert(!memcmp(buf_head(&b) + 3, buf_head(&full), need));
				buf_free(&b);
			}
			buf_free(&full);
		}
	}
}

/* The bomb of the issue: {{x}} 20,000 times with a 100 KB value (2 GB in
 * full) against a 1 MB bound stops after about ten values. */
Test(template, bomb_stops_at_the_bound)
{
	size_t vn = 100 * 1024;
	char *v = malloc(vn);
	memset(v, 'a', vn);
	bomb_value = v;
	bomb_len = vn;
	struct buf tpl = { 0 };
	for (int i = 0; i < 20000; i++)
		buf_puts(&tpl, "{{x}}");
	for (int esc = TEMPLATE_RAW; esc <= TEMPLATE_URL; esc++) {
		struct buf b = { 0 };
		bomb_lookups = 0;
		cr_assert_not(template_render(&b, buf_head(&tpl), buf_used(&tpl), bomb_lookup, NULL,
		                              (enum template_escape)esc, 1u << 20));
		cr_assert_leq(buf_used(&b), 1u << 20);
		cr_assert_leq(bomb_lookups, 11, "%u values looked up", bomb_lookups);
		buf_free(&b);
	}
	buf_free(&tpl);
	free(v);
}
