/* test_smtp_reply.c - SMTP reply parsing (relay/smtp_reply.c): single and
 * multi-line replies, "need more" at every split point, bad input and limits,
 * enhanced status codes, the one-line summary and EHLO capabilities.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "relay/smtp_reply.h"

struct good_case {
	const char *in;
	size_t reply_len; /* bytes of the first reply; 0 = all of in */
	int code;
	unsigned lines;
	const char *enh;
};

static const struct good_case good[] = {
	{ "250 OK\r\n", 0, 250, 1, "" },
	{ "250\r\n", 0, 250, 1, "" },
	{ "220 bare lf\n", 0, 220, 1, "" },
	{ "550 5.1.1 User unknown\r\n", 0, 550, 1, "5.1.1" },
	{ "451 4.3.0\r\n", 0, 451, 1, "4.3.0" },
	{ "250 2.0.0 Ok: queued as 0123\r\n", 0, 250, 1, "2.0.0" },
	{ "554 5.123.999 three digits\r\n", 0, 554, 1, "5.123.999" },
	{ "250-mx.example Hello\r\n250-PIPELINING\r\n250 SIZE 1000\r\n", 0, 250, 3, "" },
	{ "550-5.7.1 first\r\n550-5.7.1 second\r\n550 5.7.1 third\r\n", 0, 550, 3, "5.7.1" },
	{ "250-\r\n250 last\r\n", 0, 250, 2, "" },
	{ "250-a\n250-b\r\n250 c\n", 0, 250, 3, "" },
	/* Bytes after the reply belong to the next one. */
	{ "250 OK\r\n354 go ahead\r\n", 8, 250, 1, "" },
	{ "221 bye\r\nGARBAGE", 9, 221, 1, "" },
	/* Enhanced codes that are not valid give "". */
	{ "550 4.1.1 class differs\r\n", 0, 550, 1, "" },
	{ "550 5.1 two parts\r\n", 0, 550, 1, "" },
	{ "550 5.1.1.1 four parts\r\n", 0, 550, 1, "" },
	{ "550 5.1234.1 long part\r\n", 0, 550, 1, "" },
	{ "550 5.1.1x glued\r\n", 0, 550, 1, "" },
	{ "550 55.1.1 two-digit class\r\n", 0, 550, 1, "" },
	{ "550 5..1 empty part\r\n", 0, 550, 1, "" },
	{ "550 5.1. empty detail\r\n", 0, 550, 1, "" },
	{ "250-2.0.0\r\n250 done\r\n", 0, 250, 2, "2.0.0" },
};

Test(smtp_reply, good_replies)
{
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		const struct good_case *g = &good[i];
		size_t n = strlen(g->in), want = g->reply_len ? g->reply_len : n;
		struct smtp_reply r;
		long rc = smtp_reply_parse(g->in, n, &r);
		cr_assert_eq(rc, (long)want, "case %zu (%s): consumed %ld, want %zu", i, g->in, rc,
		             want);
		cr_assert_eq(r.code, g->code, "case %zu: code %d", i, r.code);
		cr_assert_eq(r.lines, g->lines, "case %zu: lines %u", i, r.lines);
		cr_assert_str_eq(r.enh, g->enh, "case %zu: enh '%s', want '%s'", i, r.enh, g->enh);
		cr_assert_eq(r.raw, g->in, "case %zu: raw must point into the input", i);
		cr_assert_eq(r.raw_len, want, "case %zu: raw_len %zu", i, r.raw_len);
	}
}

Test(smtp_reply, need_more_at_every_split)
{
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		const struct good_case *g = &good[i];
		size_t want = g->reply_len ? g->reply_len : strlen(g->in);
		for (size_t k = 0; k < want; k++) {
			struct smtp_reply r;
			long rc = smtp_reply_parse(g->in, k, &r);
			cr_assert_eq(rc, -2, "case %zu (%s) cut at %zu: got %ld, want -2", i, g->in,
			             k, rc);
		}
	}
}

static const char *const bad[] = {
	"abc ok\r\n",
	"25x ok\r\n",
	"2 ok\r\n",
	"25\r\n",
	"\r\n",
	" 250 ok\r\n",
	"250xok\r\n",
	"250_ok\r\n",
	"650 out of range\r\n",
	"050 out of range\r\n",
	"150 preliminary replies do not exist in SMTP\r\n",
	"250-a\r\n251 b\r\n",
	"250-a\r\n550 b\r\n",
	"250-a\r\n25\r\n",
	"250-a\r\n250xb\r\n",
	"250-a\r\nnot a reply\r\n",
};

Test(smtp_reply, bad_replies)
{
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct smtp_reply r;
		long rc = smtp_reply_parse(bad[i], strlen(bad[i]), &r);
		cr_assert_eq(rc, -1, "case %zu (%s): got %ld, want -1", i, bad[i], rc);
	}
}

/* line - "250 " + fill bytes up to len characters (CR LF not counted) + eol. */
static size_t make_line(char *out, const char *prefix, size_t len, const char *eol)
{
	size_t p = strlen(prefix);
	memcpy(out, prefix, p);
	memset(out + p, 'a', len - p);
	strcpy(out + len, eol);
	return len + strlen(eol);
}

Test(smtp_reply, line_length_limit)
{
	static char buf[3 * SMTP_REPLY_LINE_MAX];
	struct smtp_reply r;
	/* The limit counts the line without its LF (a CR included). */
	size_t n = make_line(buf, "250 ", SMTP_REPLY_LINE_MAX - 1, "\r\n");
	cr_assert_eq(smtp_reply_parse(buf, n, &r), (long)n);
	n = make_line(buf, "250 ", SMTP_REPLY_LINE_MAX, "\r\n");
	cr_assert_eq(smtp_reply_parse(buf, n, &r), -1);
	n = make_line(buf, "250 ", SMTP_REPLY_LINE_MAX, "\n");
	cr_assert_eq(smtp_reply_parse(buf, n, &r), (long)n);
	/* An over-long line is refused before its end arrives. */
	n = make_line(buf, "250 ", SMTP_REPLY_LINE_MAX + 1, "");
	cr_assert_eq(smtp_reply_parse(buf, n, &r), -1);
	n = make_line(buf, "250 ", SMTP_REPLY_LINE_MAX, "");
	cr_assert_eq(smtp_reply_parse(buf, n, &r), -2);
	/* Same for a continuation line. */
	size_t off = make_line(buf, "250-", 10, "\r\n");
	n = off + make_line(buf + off, "250 ", SMTP_REPLY_LINE_MAX + 1, "\r\n");
	cr_assert_eq(smtp_reply_parse(buf, n, &r), -1);
}

Test(smtp_reply, line_count_limit)
{
	static char buf[(SMTP_REPLY_MAX_LINES + 2) * 8];
	struct smtp_reply r;
	size_t n = 0;
	for (unsigned i = 0; i < SMTP_REPLY_MAX_LINES - 1; i++)
		n += (size_t)sprintf(buf + n, "250-x\r\n");
	size_t keep = n;
	n += (size_t)sprintf(buf + n, "250 x\r\n");
	cr_assert_eq(smtp_reply_parse(buf, n, &r), (long)n, "exactly the maximum is fine");
	cr_assert_eq(r.lines, SMTP_REPLY_MAX_LINES);
	n = keep + (size_t)sprintf(buf + keep, "250-x\r\n250 x\r\n");
	cr_assert_eq(smtp_reply_parse(buf, n, &r), -1, "one line too many");
}

struct summary_case {
	const char *in;
	size_t outlen;
	const char *want;
};

static const struct summary_case summaries[] = {
	{ "250 OK\r\n", 64, "250 OK" },
	{ "250\r\n", 64, "250" },
	{ "550 5.1.1 <a@b>: User unknown\r\n", 64, "550 5.1.1 <a@b>: User unknown" },
	{ "550-5.1.1 first\r\n550 5.1.1 second\r\n", 64, "550 5.1.1 first 5.1.1 second" },
	{ "421-a\r\n421-b\r\n421 c\r\n", 64, "421 a b c" },
	{ "554 bad\x01te\x7fxt\ttab\r\n", 64, "554 badtexttab" },
	{ "250 trailing   \r\n", 64, "250 trailing" },
	{ "550 abcdefghijklmnop\r\n", 8, "550 abc" },
	{ "550-abc\r\n550 defghijk\r\n", 12, "550 abc def" },
	{ "250-\r\n250 after an empty line\r\n", 64, "250 after an empty line" },
	{ "250-first \r\n250-\r\n250 last\r\n", 64, "250 first last" },
};

Test(smtp_reply, summary)
{
	for (size_t i = 0; i < sizeof(summaries) / sizeof(summaries[0]); i++) {
		const struct summary_case *c = &summaries[i];
		struct smtp_reply r;
		char out[128];
		memset(out, 'Z', sizeof(out));
		cr_assert_gt(smtp_reply_parse(c->in, strlen(c->in), &r), 0, "case %zu", i);
		smtp_reply_summary(&r, out, c->outlen);
		cr_assert_str_eq(out, c->want, "case %zu: '%s', want '%s'", i, out, c->want);
		cr_assert_eq(out[c->outlen], 'Z', "case %zu wrote past outlen", i);
	}
}

static struct smtp_caps caps_of(const char *ehlo)
{
	struct smtp_reply r;
	struct smtp_caps caps;
	long rc = smtp_reply_parse(ehlo, strlen(ehlo), &r);
	cr_assert_eq(rc, (long)strlen(ehlo), "EHLO reply must parse: %s", ehlo);
	memset(&caps, 0xff, sizeof(caps));
	smtp_caps_parse(&r, &caps);
	return caps;
}

Test(smtp_reply, caps_all)
{
	struct smtp_caps c = caps_of("250-mx.example.com Hello there\r\n"
	                             "250-PIPELINING\r\n"
	                             "250-SIZE 35882577\r\n"
	                             "250-8BITMIME\r\n"
	                             "250-CHUNKING\r\n"
	                             "250-SMTPUTF8\r\n"
	                             "250-STARTTLS\r\n"
	                             "250-ENHANCEDSTATUSCODES\r\n"
	                             "250-DSN\r\n"
	                             "250 AUTH PLAIN LOGIN\r\n");
	unsigned all = SMTP_CAP_PIPELINING | SMTP_CAP_SIZE | SMTP_CAP_8BITMIME | SMTP_CAP_CHUNKING |
	               SMTP_CAP_SMTPUTF8 | SMTP_CAP_STARTTLS | SMTP_CAP_ENHANCEDSTATUSCODES |
	               SMTP_CAP_DSN | SMTP_CAP_AUTH;
	cr_assert_eq(c.flags, all, "flags %#x, want %#x", c.flags, all);
	cr_assert_eq(c.size_max, 35882577u);
}

struct caps_case {
	const char *ehlo;
	unsigned flags;
	uint64_t size_max;
};

static const struct caps_case caps_cases[] = {
	/* The greeting line is not a capability. */
	{ "250 PIPELINING\r\n", 0, 0 },
	{ "250-x\r\n250 pipelining\r\n", SMTP_CAP_PIPELINING, 0 },
	{ "250-x\r\n250-ChUnKiNg\r\n250 SmtpUtf8\r\n", SMTP_CAP_CHUNKING | SMTP_CAP_SMTPUTF8, 0 },
	{ "250-x\r\n250-starttls\r\n250 8bitmime\r\n", SMTP_CAP_STARTTLS | SMTP_CAP_8BITMIME, 0 },
	{ "250-x\r\n250 SIZE\r\n", SMTP_CAP_SIZE, 0 },
	{ "250-x\r\n250 size 0\r\n", SMTP_CAP_SIZE, 0 },
	{ "250-x\r\n250 SIZE 1000000000000000000\r\n", SMTP_CAP_SIZE, 1000000000000000000ull },
	{ "250-x\r\n250 SIZE 52428800\n", SMTP_CAP_SIZE, 52428800 },
	/* Only whole keywords count. */
	{ "250-x\r\n250-PIPELININGX\r\n250-XSIZE 10\r\n250 X-CHUNKING\r\n", 0, 0 },
	{ "250-x\r\n250-AUTH=LOGIN\r\n250 DSN extra words\r\n", SMTP_CAP_AUTH | SMTP_CAP_DSN, 0 },
	{ "250-x\r\n250-\r\n250\r\n", 0, 0 },
};

Test(smtp_reply, caps_cases)
{
	for (size_t i = 0; i < sizeof(caps_cases) / sizeof(caps_cases[0]); i++) {
		struct smtp_caps c = caps_of(caps_cases[i].ehlo);
		cr_assert_eq(c.flags, caps_cases[i].flags, "case %zu: flags %#x, want %#x", i,
		             c.flags, caps_cases[i].flags);
		cr_assert_eq(c.size_max, caps_cases[i].size_max, "case %zu: size %llu", i,
		             (unsigned long long)c.size_max);
	}
}
