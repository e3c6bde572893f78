/* test_smtp_cmd.c - SMTP command parsing (relay/smtp_cmd.c): verbs and
 * arguments, MAIL/RCPT paths with parameters, quoted local parts and source
 * routes, and RFC 3461 xtext encoding and decoding.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "relay/smtp_cmd.h"

struct cmd_case {
	const char *line;
	enum smtp_verb verb;
	const char *arg;
};

static const struct cmd_case cmds[] = {
	{ "EHLO client.example", SMTP_EHLO, "client.example" },
	{ "ehlo client.example", SMTP_EHLO, "client.example" },
	{ "HeLo x", SMTP_HELO, "x" },
	{ "MAIL FROM:<a@b.example> SIZE=10", SMTP_MAIL, "FROM:<a@b.example> SIZE=10" },
	{ "mail FROM:<>", SMTP_MAIL, "FROM:<>" },
	{ "RCPT TO:<c@d.example>  \t ", SMTP_RCPT, "TO:<c@d.example>" },
	{ "DATA", SMTP_DATA, "" },
	{ "data   ", SMTP_DATA, "" },
	{ "BDAT 100 LAST", SMTP_BDAT, "100 LAST" },
	{ "RSET", SMTP_RSET, "" },
	{ "NOOP anything", SMTP_NOOP, "anything" },
	{ "QUIT", SMTP_QUIT, "" },
	{ "VRFY postmaster", SMTP_VRFY, "postmaster" },
	{ "EXPN list", SMTP_EXPN, "list" },
	{ "HELP", SMTP_HELP, "" },
	{ "StartTLS", SMTP_STARTTLS, "" },
	{ "AUTH PLAIN AGJvYgBzZWNyZXQ=", SMTP_AUTH, "PLAIN AGJvYgBzZWNyZXQ=" },
	/* The argument starts right after the verb's one space. */
	{ "HELO  two spaces", SMTP_HELO, " two spaces" },
	{ "XYZZY magic", SMTP_UNKNOWN, "magic" },
	{ "MAILFROM:<a@b>", SMTP_UNKNOWN, "" },
	{ "MAI", SMTP_UNKNOWN, "" },
	{ "QUITX", SMTP_UNKNOWN, "" },
	{ "", SMTP_UNKNOWN, "" },
	{ " QUIT", SMTP_UNKNOWN, "QUIT" },
};

Test(smtp_cmd, parse_table)
{
	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
		const struct cmd_case *c = &cmds[i];
		struct smtp_cmd cmd;
		memset(&cmd, 0xaa, sizeof(cmd));
		smtp_cmd_parse(c->line, strlen(c->line), &cmd);
		cr_assert_eq(cmd.verb, c->verb, "case %zu '%s': verb %d, want %d", i, c->line,
		             (int)cmd.verb, (int)c->verb);
		cr_assert_eq(cmd.arg_len, strlen(c->arg), "case %zu '%s': arg '%.*s', want '%s'", i,
		             c->line, (int)cmd.arg_len, cmd.arg, c->arg);
		cr_assert(!memcmp(cmd.arg, c->arg, cmd.arg_len), "case %zu '%s': arg '%.*s'", i,
		          c->line, (int)cmd.arg_len, cmd.arg);
		cr_assert(cmd.arg >= c->line && cmd.arg <= c->line + strlen(c->line),
		          "case %zu: arg must point into the line", i);
	}
}

Test(smtp_cmd, parse_respects_length)
{
	/* The line need not be NUL-terminated: only len bytes count. */
	const char line[] = "QUIT now please";
	struct smtp_cmd cmd;
	smtp_cmd_parse(line, 4, &cmd);
	cr_assert_eq(cmd.verb, SMTP_QUIT);
	cr_assert_eq(cmd.arg_len, 0);
	smtp_cmd_parse(line, 8, &cmd);
	cr_assert_eq(cmd.verb, SMTP_QUIT);
	cr_assert_eq(cmd.arg_len, 3);
	cr_assert(!memcmp(cmd.arg, "now", 3));
}

Test(smtp_cmd, verb_names)
{
	cr_assert_str_eq(smtp_verb_name(SMTP_MAIL), "MAIL");
	cr_assert_str_eq(smtp_verb_name(SMTP_STARTTLS), "STARTTLS");
	cr_assert_str_eq(smtp_verb_name(SMTP_BDAT), "BDAT");
	cr_assert_str_eq(smtp_verb_name(SMTP_UNKNOWN), "UNKNOWN");
	/* Every verb's name parses back to the verb. */
	for (int v = SMTP_EHLO; v <= SMTP_AUTH; v++) {
		const char *name = smtp_verb_name((enum smtp_verb)v);
		struct smtp_cmd cmd;
		smtp_cmd_parse(name, strlen(name), &cmd);
		cr_assert_eq(cmd.verb, (enum smtp_verb)v, "verb %d (%s)", v, name);
	}
}

#define MAXP 4

struct path_case {
	const char *arg;
	const char *keyword;
	bool ok;
	const char *addr;
	unsigned nparams;
	const char *params[MAXP][2]; /* key, value (NULL = no "=value") */
};

static const struct path_case paths[] = {
	{ "FROM:<a@b.example>", "FROM:", true, "a@b.example", 0, { { 0 } } },
	{ "from:<a@b.example>", "FROM:", true, "a@b.example", 0, { { 0 } } },
	{ "FROM: <a@b.example>", "FROM:", true, "a@b.example", 0, { { 0 } } },
	{ "FROM:   <a@b.example>", "FROM:", true, "a@b.example", 0, { { 0 } } },
	{ "FROM:<>", "FROM:", true, "", 0, { { 0 } } },
	{ "FROM:<> SIZE=100", "FROM:", true, "", 1, { { "SIZE", "100" } } },
	{ "FROM:<a@b> SIZE=1000 BODY=8BITMIME SMTPUTF8",
	  "FROM:",
	  true,
	  "a@b",
	  3,
	  { { "SIZE", "1000" }, { "BODY", "8BITMIME" }, { "SMTPUTF8", NULL } } },
	{ "FROM:<a@b>   RET=HDRS   ENVID=QQ314159  ",
	  "FROM:",
	  true,
	  "a@b",
	  2,
	  { { "RET", "HDRS" }, { "ENVID", "QQ314159" } } },
	{ "FROM:<a@b> SIZE=", "FROM:", true, "a@b", 1, { { "SIZE", "" } } },
	{ "TO:<c@d> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;c+40d",
	  "TO:",
	  true,
	  "c@d",
	  2,
	  { { "NOTIFY", "SUCCESS,FAILURE" }, { "ORCPT", "rfc822;c+40d" } } },
	{ "TO:<c@d> X-Custom-1=v", "TO:", true, "c@d", 1, { { "X-Custom-1", "v" } } },
	/* Quoted local parts may hold '>', blanks and escaped quotes. */
	{ "TO:<\"john doe\"@x.example>", "TO:", true, "\"john doe\"@x.example", 0, { { 0 } } },
	{ "TO:<\"a>b\"@x.example>", "TO:", true, "\"a>b\"@x.example", 0, { { 0 } } },
	{ "TO:<\"a\\\"> b\"@x.example> SIZE=1",
	  "TO:",
	  true,
	  "\"a\\\"> b\"@x.example",
	  1,
	  { { "SIZE", "1" } } },
	{ "TO:<\"<x>\"@x.example>", "TO:", true, "\"<x>\"@x.example", 0, { { 0 } } },
	/* Source routes are dropped. */
	{ "TO:<@a.example,@b.example:x@y.example>", "TO:", true, "x@y.example", 0, { { 0 } } },
	{ "TO:<@a.example:x@y.example>", "TO:", true, "x@y.example", 0, { { 0 } } },
	/* Brackets may be left out when the address has no blanks. */
	{ "TO:a@b.example", "TO:", true, "a@b.example", 0, { { 0 } } },
	{ "TO: a@b.example SIZE=5", "TO:", true, "a@b.example", 1, { { "SIZE", "5" } } },
	/* Bad syntax. */
	{ "TO:<a@b.example", "TO:", false, NULL, 0, { { 0 } } },
	{ "TO:<a b@c.example>", "TO:", false, NULL, 0, { { 0 } } },
	{ "TO:<a<b@c.example>", "TO:", false, NULL, 0, { { 0 } } },
	{ "TO:<a@b.example>x", "TO:", false, NULL, 0, { { 0 } } },
	{ "TO:<\"unterminated@b.example>", "TO:", false, NULL, 0, { { 0 } } },
	{ "TO:<@a.example,@b.example>", "TO:", false, NULL, 0, { { 0 } } },
	{ "TO:", "TO:", false, NULL, 0, { { 0 } } },
	{ "TO:   ", "TO:", false, NULL, 0, { { 0 } } },
	{ "TO", "TO:", false, NULL, 0, { { 0 } } },
	{ "", "TO:", false, NULL, 0, { { 0 } } },
	{ "FROM:<a@b.example>", "TO:", false, NULL, 0, { { 0 } } },
	{ "TO <a@b.example>", "TO:", false, NULL, 0, { { 0 } } },
	{ "TO:<a@b> =x", "TO:", false, NULL, 0, { { 0 } } },
	{ "TO:<a@b> -X=1", "TO:", false, NULL, 0, { { 0 } } },
	{ "TO:<a@b> X_Y=1", "TO:", false, NULL, 0, { { 0 } } },
	{ "TO:<a@b> SIZE\x01=1", "TO:", false, NULL, 0, { { 0 } } },
};

Test(smtp_cmd, path_table)
{
	for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
		const struct path_case *c = &paths[i];
		struct smtp_path p;
		bool ok = smtp_path_parse(c->arg, strlen(c->arg), c->keyword, &p);
		cr_assert_eq(ok, c->ok, "case %zu '%s': %d, want %d", i, c->arg, ok, c->ok);
		if (!ok)
			continue;
		cr_assert_eq(p.addr_len, strlen(c->addr), "case %zu '%s': addr '%.*s', want '%s'",
		             i, c->arg, (int)p.addr_len, p.addr, c->addr);
		cr_assert(!memcmp(p.addr, c->addr, p.addr_len), "case %zu: addr '%.*s'", i,
		          (int)p.addr_len, p.addr);
		cr_assert_eq(p.nparams, c->nparams, "case %zu '%s': %u params, want %u", i, c->arg,
		             p.nparams, c->nparams);
		for (unsigned k = 0; k < p.nparams; k++) {
			const struct smtp_param *pp = &p.params[k];
			const char *key = c->params[k][0], *val = c->params[k][1];
			cr_assert_eq(pp->key_len, strlen(key), "case %zu param %u key '%.*s'", i, k,
			             (int)pp->key_len, pp->key);
			cr_assert(!memcmp(pp->key, key, pp->key_len), "case %zu param %u", i, k);
			cr_assert(smtp_param_is(pp, key), "case %zu param %u", i, k);
			if (!val) {
				cr_assert_null(pp->val, "case %zu param %u has a value", i, k);
				cr_assert_eq(pp->val_len, 0);
			} else {
				cr_assert_not_null(pp->val, "case %zu param %u lacks a value", i,
				                   k);
				cr_assert_eq(pp->val_len, strlen(val),
				             "case %zu param %u val '%.*s'", i, k, (int)pp->val_len,
				             pp->val);
				cr_assert(!memcmp(pp->val, val, pp->val_len), "case %zu param %u",
				          i, k);
			}
		}
	}
}

Test(smtp_cmd, param_limit)
{
	char arg[512];
	int n = snprintf(arg, sizeof(arg), "FROM:<a@b>");
	for (int i = 0; i < SMTP_MAX_PARAMS; i++)
		n += snprintf(arg + n, sizeof(arg) - (size_t)n, " P%d=%d", i, i);
	struct smtp_path p;
	cr_assert(smtp_path_parse(arg, (size_t)n, "FROM:", &p), "%d params are allowed",
	          SMTP_MAX_PARAMS);
	cr_assert_eq(p.nparams, SMTP_MAX_PARAMS);
	cr_assert(smtp_param_is(&p.params[SMTP_MAX_PARAMS - 1], "p15"));
	n += snprintf(arg + n, sizeof(arg) - (size_t)n, " ONE=MORE");
	cr_assert_not(smtp_path_parse(arg, (size_t)n, "FROM:", &p));
}

Test(smtp_cmd, param_is)
{
	struct smtp_param p = { .key = "SIZE=10", .key_len = 4, .val = "10", .val_len = 2 };
	cr_assert(smtp_param_is(&p, "SIZE"));
	cr_assert(smtp_param_is(&p, "size"));
	cr_assert(smtp_param_is(&p, "SiZe"));
	cr_assert_not(smtp_param_is(&p, "SIZ"));
	cr_assert_not(smtp_param_is(&p, "SIZE="));
	cr_assert_not(smtp_param_is(&p, "BODY"));
}

struct xtext_case {
	const char *enc;
	const char *dec;
	size_t dec_len;
};

static const struct xtext_case xtexts[] = {
	{ "", "", 0 },
	{ "abc", "abc", 3 },
	{ "rfc822;a+2Bb@c", "rfc822;a+b@c", 12 },
	{ "+2B+3D+20", "+= ", 3 },
	{ "a+00b", "a\0b", 3 },
	{ "+7E+FF", "~\xff", 2 },
};

Test(smtp_cmd, xtext_decode_table)
{
	for (size_t i = 0; i < sizeof(xtexts) / sizeof(xtexts[0]); i++) {
		char out[64];
		long n = smtp_xtext_decode(xtexts[i].enc, strlen(xtexts[i].enc), out, sizeof(out));
		cr_assert_eq(n, (long)xtexts[i].dec_len, "case %zu: %ld", i, n);
		cr_assert(!memcmp(out, xtexts[i].dec, (size_t)n), "case %zu", i);
		cr_assert_eq(out[n], '\0', "case %zu: not NUL-terminated", i);
	}
}

Test(smtp_cmd, xtext_decode_errors)
{
	static const char *const bad[] = {
		"+",    "+2",  "a+2", "+2b",  "+g0",  "+G0",
		"+ 20", "a=b", "a b", "\x80", "\x7f", "tab\t",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char out[64];
		cr_assert_eq(smtp_xtext_decode(bad[i], strlen(bad[i]), out, sizeof(out)), -1,
		             "case %zu '%s' must fail", i, bad[i]);
	}
	/* Output space: n bytes need n + 1 for the NUL. */
	char out[8];
	cr_assert_eq(smtp_xtext_decode("abcd", 4, out, 5), 4);
	cr_assert_eq(smtp_xtext_decode("abcd", 4, out, 4), -1);
	cr_assert_eq(smtp_xtext_decode("+41+42", 6, out, 3), 2);
	cr_assert_eq(smtp_xtext_decode("+41+42", 6, out, 2), -1);
}

Test(smtp_cmd, xtext_encode)
{
	char out[64];
	cr_assert_eq(smtp_xtext_encode("a+b=c d", 7, out, sizeof(out)), 13);
	cr_assert_str_eq(out, "a+2Bb+3Dc+20d");
	cr_assert_eq(smtp_xtext_encode("", 0, out, sizeof(out)), 0);
	cr_assert_str_eq(out, "");
	cr_assert_eq(smtp_xtext_encode("\x01\xfe", 2, out, sizeof(out)), 6);
	cr_assert_str_eq(out, "+01+FE");
	/* Too small: the NUL must fit as well. */
	cr_assert_eq(smtp_xtext_encode("abc", 3, out, 4), 3);
	cr_assert_eq(smtp_xtext_encode("abc", 3, out, 3), -1);
	cr_assert_eq(smtp_xtext_encode("+", 1, out, 4), 3);
	cr_assert_eq(smtp_xtext_encode("+", 1, out, 3), -1);
	cr_assert_eq(smtp_xtext_encode("", 0, out, 0), -1);
}

Test(smtp_cmd, xtext_round_trip_every_byte)
{
	char raw[256], enc[3 * 256 + 1], dec[257];
	for (int i = 0; i < 256; i++)
		raw[i] = (char)i;
	long en = smtp_xtext_encode(raw, sizeof(raw), enc, sizeof(enc));
	cr_assert_gt(en, 256);
	cr_assert_eq(strlen(enc), (size_t)en);
	/* Encoded text is printable ASCII without '=' or blanks. */
	for (long i = 0; i < en; i++)
		cr_assert(enc[i] > 32 && enc[i] < 127 && enc[i] != '=', "byte %ld: %#x", i,
		          (unsigned char)enc[i]);
	long dn = smtp_xtext_decode(enc, (size_t)en, dec, sizeof(dec));
	cr_assert_eq(dn, 256);
	cr_assert(!memcmp(dec, raw, 256));
}

Test(smtp_cmd, xtext_round_trip_strings)
{
	static const char *const strs[] = {
		"rfc822;user@example.com", "a+b", "=", "x y z", "ünïcödé", "++==", "",
	};
	for (size_t i = 0; i < sizeof(strs) / sizeof(strs[0]); i++) {
		char enc[128], dec[64];
		long en = smtp_xtext_encode(strs[i], strlen(strs[i]), enc, sizeof(enc));
		cr_assert_geq(en, (long)strlen(strs[i]), "case %zu", i);
		long dn = smtp_xtext_decode(enc, (size_t)en, dec, sizeof(dec));
		cr_assert_eq(dn, (long)strlen(strs[i]), "case %zu", i);
		cr_assert_str_eq(dec, strs[i], "case %zu", i);
	}
}

/* ---- ORCPT (RFC 3461 4.2) -------------------------------------------------- */

Test(smtp_cmd, orcpt_parse)
{
	static const struct {
		const char *in, *out; /* out NULL: refused */
	} cases[] = {
		{ "rfc822;a@x.test", "rfc822;a@x.test" },
		{ "RFC822;a+2Bb@x.test", "RFC822;a+b@x.test" },
		{ "utf-8;a@x.test", "utf-8;a@x.test" },
		{ "rfc822;Ann+20Smith+20+3Ca@x.test+3E", "rfc822;Ann Smith <a@x.test>" },
		/* addr-type: an atom, nothing else goes through to a next hop. */
		{ "rfc822 x;a@x.test", NULL },
		{ "rfc<822>;a@x.test", NULL },
		{ "rfc822,NOTIFY;a@x.test", NULL },
		{ "rfc\"822;a@x.test", NULL },
		{ "rf\xc3\xa9;a@x.test", NULL },
		{ ";a@x.test", NULL },
		{ "abcdefghijklmnopqrstuvwxyzabcdefg;a@x.test", NULL }, /* 33 octets */
		{ "rfc822", NULL },
		/* xtext: well-formed, decoding to printable US-ASCII. */
		{ "rfc822;", NULL },
		{ "rfc822;a+0D+0AMAIL@x.test", NULL },
		{ "rfc822;a+00b", NULL },
		{ "rfc822;a+7Fb", NULL },
		{ "rfc822;a+FEb", NULL },
		{ "rfc822;a+4", NULL },
		{ "rfc822;a+4g", NULL },
		{ "rfc822;a=b", NULL },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char out[300];
		long n = smtp_orcpt_parse(cases[i].in, strlen(cases[i].in), out, sizeof(out));
		if (!cases[i].out) {
			cr_assert_eq(n, -1, "case %zu '%s' accepted as '%s'", i, cases[i].in, out);
			continue;
		}
		cr_assert_eq(n, (long)strlen(cases[i].out), "case %zu: %ld", i, n);
		cr_assert_str_eq(out, cases[i].out, "case %zu", i);
	}
	/* Length: a value of 500 octets is fine, 501 is not. */
	char v[520];
	memcpy(v, "rfc822;", 7);
	memset(v + 7, 'a', sizeof(v) - 7);
	char out[600];
	cr_assert_eq(smtp_orcpt_parse(v, 500, out, sizeof(out)), 500);
	cr_assert_eq(smtp_orcpt_parse(v, 501, out, sizeof(out)), -1);
	cr_assert_eq(smtp_orcpt_parse(v, 500, out, 300), -1, "no room: refused, not cut");
}

/* What goes out: a stored value re-encoded, or nothing when a stored value
 * is not well-formed (records written before the checks). */
Test(smtp_cmd, orcpt_encode)
{
	char out[SMTP_ORCPT_MAX + 1];
	const char *ok = "rfc822;Ann Smith+<a@x.test>";
	cr_assert_gt(smtp_orcpt_encode(ok, strlen(ok), out, sizeof(out)), 0);
	cr_assert_str_eq(out, "rfc822;Ann+20Smith+2B<a@x.test>");
	char back[300];
	cr_assert_eq(smtp_orcpt_parse(out, strlen(out), back, sizeof(back)), (long)strlen(ok));
	cr_assert_str_eq(back, ok);
	static const char *const bad[] = {
		"rfc822 NOTIFY=NEVER;a@x",
		"x\r\nRCPT TO:<v@evil>;a@x",
		"rfc822;a\r\nb",
		"nosemicolon",
		";a@x",
		"rfc822;",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		cr_assert_eq(smtp_orcpt_encode(bad[i], strlen(bad[i]), out, sizeof(out)), -1,
		             "bad %zu went out as '%s'", i, out);
	cr_assert_eq(smtp_orcpt_encode(NULL, 0, out, sizeof(out)), -1);
	/* An address that only fits 500 octets before encoding is dropped. */
	char big[300];
	memcpy(big, "rfc822;", 7);
	memset(big + 7, '+', sizeof(big) - 7);
	cr_assert_eq(smtp_orcpt_encode(big, sizeof(big), out, sizeof(out)), -1);
}
