/* test_log.c - log field values (base/log.c): client-supplied strings are
 * written so that they can never end their own key=value field or forge
 * another: plain when harmless, else quoted with escapes; cut to fit with
 * quotes kept balanced; and a real log line read back field by field.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/log.h"

struct value_case {
	const char *in;
	size_t n;          /* 0 = strlen(in) */
	const char *value; /* log_value */
	const char *addr;  /* log_addr */
};

static const struct value_case cases[] = {
	{ "a@x.test", 0, "a@x.test", "<a@x.test>" },
	{ "", 0, "\"\"", "<>" },
	{ "\"a key=value\"@x", 0, "\"\\\"a key=value\\\"@x\"", "\"<\\\"a key=value\\\"@x>\"" },
	{ "a=b@x", 0, "\"a=b@x\"", "\"<a=b@x>\"" },
	{ "a b", 0, "\"a b\"", "\"<a b>\"" },
	{ "back\\slash", 0, "\"back\\\\slash\"", "\"<back\\\\slash>\"" },
	{ "line\r\nstatus=delivered", 0, "\"line\\r\\nstatus=delivered\"",
	  "\"<line\\r\\nstatus=delivered>\"" },
	{ "tab\there", 0, "\"tab\\there\"", "\"<tab\\there>\"" },
	{ "nul\0x", 5, "\"nul\\x00x\"", "\"<nul\\x00x>\"" },
	{ "esc\x1b[31m", 0, "\"esc\\x1b[31m\"", "\"<esc\\x1b[31m>\"" },
	{ "del\x7f", 0, "\"del\\x7f\"", "\"<del\\x7f>\"" },
	/* Well-formed UTF-8 stays readable (quoted); malformed bytes, C1
	 * controls, separators and bidi overrides are escaped. */
	{ "d\xc3\xa9j\xc3\xa0@x.test", 0, "\"d\xc3\xa9j\xc3\xa0@x.test\"",
	  "\"<d\xc3\xa9j\xc3\xa0@x.test>\"" },
	{ "bad\xc3(", 0, "\"bad\\xc3(\"", "\"<bad\\xc3(>\"" },
	{ "c1\xc2\x85", 0, "\"c1\\xc2\\x85\"", "\"<c1\\xc2\\x85>\"" },
	{ "ls\xe2\x80\xa8", 0, "\"ls\\xe2\\x80\\xa8\"", "\"<ls\\xe2\\x80\\xa8>\"" },
	{ "rlo\xe2\x80\xae", 0, "\"rlo\\xe2\\x80\\xae\"", "\"<rlo\\xe2\\x80\\xae>\"" },
	{ "<x@y>", 0, "<x@y>", "<<x@y>>" },
};

Test(log, values_and_addresses)
{
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct value_case *c = &cases[i];
		size_t n = c->n ? c->n : strlen(c->in);
		char out[LOG_VALUE_MAX];
		cr_assert_str_eq(log_value(out, sizeof(out), c->in, n), c->value, "case %zu", i);
		cr_assert_str_eq(log_addr(out, sizeof(out), c->in, n), c->addr, "case %zu", i);
	}
}

Test(log, quote_always_quotes)
{
	char out[64];
	log_quote(out, sizeof(out), "250 2.0.0 Ok", 12);
	cr_assert_str_eq(out, "\"250 2.0.0 Ok\"");
	log_quote(out, sizeof(out), "plain", 5);
	cr_assert_str_eq(out, "\"plain\"");
	log_quote(out, sizeof(out), "say \"hi\"", 8);
	cr_assert_str_eq(out, "\"say \\\"hi\\\"\"");
}

/* Cut to every size: NUL-terminated within outlen, quotes balanced, an
 * escape never split, "..." marking the cut. */
Test(log, cut_to_fit)
{
	const char *in = "\"a key=value\"@x\r\n\xc3\xa9\x01 status=delivered reply=\"250 Ok\"";
	size_t n = strlen(in);
	char full[LOG_VALUE_MAX];
	log_addr(full, sizeof(full), in, n);
	for (size_t len = 8; len <= strlen(full) + 2; len++) {
		char *out = malloc(len);
		memset(out, '#', len);
		log_addr(out, len, in, n);
		size_t ol = strlen(out);
		cr_assert_lt(ol, len, "size %zu: '%s'", len, out);
		cr_assert_eq(out[0], '"', "size %zu: '%s'", len, out);
		cr_assert_eq(out[ol - 1], '"', "size %zu: '%s'", len, out);
		cr_assert_eq(out[ol - 2], '>', "size %zu: '%s'", len, out);
		if (ol < strlen(full))
			cr_assert_not_null(strstr(out, "...>\""), "size %zu: '%s'", len, out);
		else
			cr_assert_str_eq(out, full, "size %zu", len);
		/* Between the quotes: no bare quote, every backslash escapes. */
		for (size_t i = 1; i + 1 < ol; i++) {
			cr_assert_neq(out[i], '"', "size %zu: bare quote in '%s'", len, out);
			if (out[i] == '\\') {
				cr_assert(i + 2 < ol, "size %zu: cut escape in '%s'", len, out);
				if (out[i + 1] == 'x')
					i += 3;
				else
					i++;
			}
		}
		free(out);
	}
}

/* fields - split a log line's text after the prefix into key=value pairs
 * the way a logfmt reader does; returns how many, values unescaped. */
static unsigned fields(const char *s, char keys[][32], char vals[][256], unsigned max)
{
	unsigned n = 0;
	while (*s && n < max) {
		while (*s == ' ')
			s++;
		const char *eq = strchr(s, '=');
		const char *sp = strchr(s, ' ');
		if (!eq || (sp && sp < eq)) { /* a bare word */
			s = sp ? sp : s + strlen(s);
			continue;
		}
		snprintf(keys[n], 32, "%.*s", (int)(eq - s), s);
		s = eq + 1;
		size_t o = 0;
		if (*s == '"') {
			s++;
			while (*s && *s != '"') {
				char c = *s++;
				if (c == '\\' && *s) {
					c = *s++;
					if (c == 'n')
						c = '\n';
					else if (c == 'r')
						c = '\r';
					else if (c == 'x') {
						unsigned v;
						sscanf(s, "%2x", &v);
						c = (char)v;
						s += 2;
					}
				}
				if (o + 1 < 256)
					vals[n][o++] = c;
			}
			if (*s == '"')
				s++;
		} else {
			while (*s && *s != ' ')
				if (o + 1 < 256)
					vals[n][o++] = *s++;
				else
					s++;
		}
		vals[n][o] = '\0';
		n++;
	}
	return n;
}

/* A forged field in an address or a reply stays inside its own field of a
 * real log line (written by log_msg to a file and read back). */
Test(log, forged_fields_stay_inside)
{
	char path[] = "/tmp/rp_test_log_XXXXXX";
	int fd = mkstemp(path);
	cr_assert_geq(fd, 0);
	close(fd);
	cr_assert(log_open(path));
	const char *rcpt = "\"a status=delivered dsn=2.0.0\"@x.test";
	const char *reply = "550 5.1.1 no\r\n id=forged status=delivered";
	char a[LOG_VALUE_MAX], r[LOG_VALUE_MAX];
	log_info("delivery id=0011 rcpt=%s status=bounced reply=%s",
	         log_addr(a, sizeof(a), rcpt, strlen(rcpt)),
	         log_value(r, sizeof(r), reply, strlen(reply)));
	log_flush();
	log_open("stderr");
	FILE *f = fopen(path, "r");
	cr_assert_not_null(f);
	char line[4096];
	cr_assert_not_null(fgets(line, sizeof(line), f));
	cr_assert_null(fgets(line + strlen(line), (int)(sizeof(line) - strlen(line)), f),
	               "the log line was split: %s", line);
	fclose(f);
	unlink(path);
	line[strcspn(line, "\n")] = '\0';
	char *body = strstr(line, "delivery ");
	cr_assert_not_null(body, "%s", line);
	char keys[16][32], vals[16][256];
	unsigned n = fields(body + 9, keys, vals, 16);
	cr_assert_eq(n, 4, "fields of '%s'", body);
	cr_assert_str_eq(keys[0], "id");
	cr_assert_str_eq(vals[0], "0011");
	cr_assert_str_eq(keys[1], "rcpt");
	char want[128];
	snprintf(want, sizeof(want), "<%s>", rcpt);
	cr_assert_str_eq(vals[1], want);
	cr_assert_str_eq(keys[2], "status");
	cr_assert_str_eq(vals[2], "bounced");
	cr_assert_str_eq(keys[3], "reply");
	cr_assert_str_eq(vals[3], reply);
}
