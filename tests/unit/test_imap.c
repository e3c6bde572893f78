/* test_imap.c - the IMAP codec and what FETCH and SEARCH say (api/imap_*.c):
 * command framing with literals (synchronising, LITERAL+, limits, bytes
 * arriving one at a time), tokens (atoms, quoted strings, literals),
 * sequence sets, dates; FETCH item parsing; BODYSTRUCTURE, BODY and
 * ENVELOPE of sample messages (a plain one, multipart/alternative with an
 * attachment, message/rfc822 inside, a malformed one, a DSN) as Dovecot
 * 2.3 says them (checked by hand, message by message: where we differ, the
 * test says why); sections; address lists; SEARCH criteria.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/imap_fetch.h"
#include "api/imap_mime.h"
#include "api/imap_parse.h"
#include "api/imap_search.h"
#include "queue/spool.h"

/* crlf - s with every LF made CRLF (allocated). */
static char *crlf(const char *s, size_t *n)
{
	size_t len = strlen(s), k = 0;
	char *out = malloc(2 * len + 1);
	for (size_t i = 0; i < len; i++) {
		if (s[i] == '\n')
			out[k++] = '\r';
		out[k++] = s[i];
	}
	out[k] = '\0';
	*n = k;
	return out;
}

/* ---- framing ------------------------------------------------------------ */

/* frame - scan all of s at once: the status and len. */
static enum imap_frame_status frame(const char *s, size_t *len)
{
	struct imap_frame f;
	imap_frame_reset(&f);
	enum imap_frame_status st = imap_frame_scan(&f, s, strlen(s));
	while (st == IMAP_FRAME_CONTINUE)
		st = imap_frame_scan(&f, s, strlen(s));
	*len = f.len;
	return st;
}

Test(imap_frame, whole_commands)
{
	static const struct {
		const char *in;
		enum imap_frame_status st;
		size_t len;
	} cases[] = {
		{ "a NOOP\r\n", IMAP_FRAME_DONE, 8 },
		{ "a NOOP\n", IMAP_FRAME_DONE, 7 },
		{ "a NOOP\r\nb NOOP\r\n", IMAP_FRAME_DONE, 8 },
		{ "a NOOP", IMAP_FRAME_MORE, 0 },
		{ "a LOGIN {5}\r\nalice {3}\r\npw1\r\n", IMAP_FRAME_DONE, 29 },
		{ "a LOGIN {5+}\r\nalice {3+}\r\npw1\r\n", IMAP_FRAME_DONE, 31 },
		{ "a LOGIN {5}\r\nali", IMAP_FRAME_MORE, 0 },
		{ "a X {0}\r\n\r\n", IMAP_FRAME_DONE, 11 },
		{ "a X {2}\r\n\r\n\r\n", IMAP_FRAME_DONE, 13 }, /* a literal of CRLF */
		{ "a X {}\r\n", IMAP_FRAME_DONE, 8 }, /* not a literal: a parse error later */
		{ "a X {5x}\r\n", IMAP_FRAME_DONE, 10 },
		{ "a X {65537}\r\n", IMAP_FRAME_BIG_LITERAL, 13 },
		{ "a X {99999999999999999999}\r\n", IMAP_FRAME_BIG_LITERAL, 28 },
		{ "a X {65536+}\r\n", IMAP_FRAME_MORE, 0 },
	};
	for (unsigned i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		size_t len = 0;
		enum imap_frame_status st = frame(cases[i].in, &len);
		cr_expect_eq(st, cases[i].st, "%s: status %d, want %d", cases[i].in, st,
		             cases[i].st);
		if (st == cases[i].st && cases[i].len)
			cr_expect_eq(len, cases[i].len, "%s: len %zu, want %zu", cases[i].in, len,
			             cases[i].len);
	}
}

Test(imap_frame, continuation_only_for_synchronising)
{
	const char *s = "a LOGIN {5}\r\nalice {3+}\r\npw1\r\n";
	struct imap_frame f;
	imap_frame_reset(&f);
	cr_assert_eq(imap_frame_scan(&f, s, 13), IMAP_FRAME_CONTINUE);
	cr_assert_eq(imap_frame_scan(&f, s, 13), IMAP_FRAME_MORE, "asked once only");
	cr_assert_eq(imap_frame_scan(&f, s, 20), IMAP_FRAME_MORE);
	cr_assert_eq(imap_frame_scan(&f, s, strlen(s)), IMAP_FRAME_DONE, "no + for {3+}");
	cr_assert_eq(f.len, strlen(s));
}

Test(imap_frame, byte_by_byte)
{
	const char *s = "t1 LOGIN {5}\r\nal\nce {3+}\r\np\r1\r\n";
	struct imap_frame f;
	imap_frame_reset(&f);
	unsigned conts = 0;
	enum imap_frame_status st = IMAP_FRAME_MORE;
	size_t n;
	for (n = 1; n <= strlen(s); n++) {
		st = imap_frame_scan(&f, s, n);
		if (st == IMAP_FRAME_CONTINUE) {
			conts++;
			st = imap_frame_scan(&f, s, n);
		}
		if (st != IMAP_FRAME_MORE)
			break;
	}
	cr_assert_eq(st, IMAP_FRAME_DONE);
	cr_assert_eq(f.len, strlen(s), "a LF inside a literal does not end the command");
	cr_assert_eq(conts, 1);
}

Test(imap_frame, limits)
{
	char *line = malloc(IMAP_LINE_MAX + 16);
	memset(line, 'x', IMAP_LINE_MAX + 8);
	line[IMAP_LINE_MAX + 8] = '\0';
	size_t len;
	cr_assert_eq(frame(line, &len), IMAP_FRAME_LONG_LINE, "no line end yet");
	cr_assert_eq(len, 0);
	strcpy(line + IMAP_LINE_MAX + 1, "\r\n");
	cr_assert_eq(frame(line, &len), IMAP_FRAME_LONG_LINE);
	cr_assert_eq(len, IMAP_LINE_MAX + 3, "through its LF");
	memset(line, 'x', IMAP_LINE_MAX - 2);
	strcpy(line + IMAP_LINE_MAX - 2, "\r\n");
	cr_assert_eq(frame(line, &len), IMAP_FRAME_DONE, "8 KiB is allowed");
	free(line);
	/* Many literals add up: the whole command is limited too. */
	struct buf b = { 0 };
	buf_puts(&b, "a X");
	struct imap_frame f;
	imap_frame_reset(&f);
	enum imap_frame_status st = IMAP_FRAME_MORE;
	for (int i = 0; i < 10 && st != IMAP_FRAME_TOO_BIG; i++) {
		buf_puts(&b, " {60000+}\r\n");
		st = imap_frame_scan(&f, buf_head(&b), buf_used(&b));
		memset(buf_reserve(&b, 60000), 'y', 60000);
		buf_commit(&b, 60000);
	}
	cr_assert_eq(st, IMAP_FRAME_TOO_BIG);
	buf_free(&b);
}

Test(imap_frame, tag_of_a_broken_command)
{
	const char *tag;
	size_t n;
	cr_assert(imap_frame_tag("a17 LOGIN {99999999}", 20, &tag, &n));
	cr_assert_eq(n, 3);
	cr_assert(!imap_frame_tag("+ x", 3, &tag, &n));
	cr_assert(!imap_frame_tag("nospace", 7, &tag, &n));
}

/* ---- tokens ------------------------------------------------------------- */

static struct imap_parser parser(char *s)
{
	struct imap_parser ps;
	imap_parser_init(&ps, s, strlen(s));
	return ps;
}

Test(imap_tokens, strings)
{
	static const struct {
		const char *in;
		bool ok;
		const char *value;
		size_t len;
	} cases[] = {
		{ "atom\r\n", true, "atom", 4 },
		{ "\"quoted string\"\r\n", true, "quoted string", 13 },
		{ "\"esc \\\" \\\\ x\"\r\n", true, "esc \" \\ x", 9 },
		{ "\"\"\r\n", true, "", 0 },
		{ "{5}\r\nab\r\nc\r\n", true, "ab\r\nc", 5 },
		{ "{3+}\r\nx y\r\n", true, "x y", 3 },
		{ "{0}\r\n\r\n", true, "", 0 },
		{ "\"unterminated\r\n", false, NULL, 0 },
		{ "\"bad \\x escape\"\r\n", false, NULL, 0 },
		{ "\"8-bit \xc3\xa9\"\r\n", false, NULL, 0 },
		{ "{9}\r\nshort\r\n", false, NULL, 0 },
		{ "{x}\r\n", false, NULL, 0 },
		{ "(paren\r\n", false, NULL, 0 },
		{ "\r\n", false, NULL, 0 },
	};
	for (unsigned i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *s = strdup(cases[i].in);
		struct imap_parser ps = parser(s);
		struct imap_str v;
		bool ok = imap_p_astring(&ps, &v);
		cr_expect_eq(ok, cases[i].ok, "case %u %s", i, cases[i].in);
		if (ok && cases[i].ok) {
			cr_expect_eq(v.n, cases[i].len, "case %u length %zu", i, v.n);
			cr_expect(!memcmp(v.p, cases[i].value, v.n), "case %u value", i);
			cr_expect(imap_p_eol(&ps), "case %u: all consumed", i);
		}
		free(s);
	}
}

Test(imap_tokens, tags_atoms_numbers)
{
	char s1[] = "a.1 UID fetch\r\n";
	struct imap_parser ps = parser(s1);
	struct imap_str t;
	cr_assert(imap_p_tag(&ps, &t) && t.n == 3 && imap_p_sp(&ps));
	cr_assert(imap_p_atom(&ps, &t) && imap_str_is(&t, "uid"));
	char s2[] = "+tag\r\n";
	ps = parser(s2);
	cr_assert(!imap_p_tag(&ps, &t), "+ is no tag character");
	char s3[] = "4294967295 4294967296\r\n";
	ps = parser(s3);
	uint32_t v;
	cr_assert(imap_p_number(&ps, &v) && v == UINT32_MAX && imap_p_sp(&ps));
	cr_assert(!imap_p_number(&ps, &v), "past 32 bits");
	char s4[] = "INBOX* \"%x\"\r\n";
	ps = parser(s4);
	cr_assert(imap_p_list_mailbox(&ps, &t) && t.n == 6 && imap_p_sp(&ps));
	cr_assert(imap_p_list_mailbox(&ps, &t) && t.n == 2);
}

Test(imap_tokens, dates)
{
	static const struct {
		const char *in;
		bool ok;
		int64_t days;
	} cases[] = {
		{ "1-Jan-1970", true, 0 },      { "\"2-jan-1970\"", true, 1 },
		{ "29-Feb-2000", true, 11016 }, { "07-Dec-2026", true, 20794 },
		{ "1-Foo-2000", false, 0 },     { "1-Jan-99", false, 0 },
		{ "123-Jan-2000", false, 0 },   { "0-Jan-2000", false, 0 },
		{ "\"1-Jan-2000", false, 0 },
	};
	for (unsigned i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char s[64];
		snprintf(s, sizeof(s), "%s\r\n", cases[i].in);
		struct imap_parser ps = parser(s);
		int64_t d = -1;
		bool ok = imap_p_date(&ps, &d) && imap_p_eol(&ps);
		cr_expect_eq(ok, cases[i].ok, "%s", cases[i].in);
		if (ok)
			cr_expect_eq(d, cases[i].days, "%s: %lld days", cases[i].in, (long long)d);
	}
}

Test(imap_tokens, writers)
{
	struct buf b = { 0 };
	imap_put_string(&b, "a \"b\" \\", 7);
	imap_put_string(&b, "x\r\ny", 4);
	imap_put_string(&b, "\xc3\xa9", 2);
	imap_put_nstring(&b, NULL, 0);
	imap_put_astring(&b, "INBOX", 5);
	imap_put_astring(&b, "nil", 3);
	imap_put_date_time(&b, 1796641408021ull);
	cr_assert_str_eq(buf_cstr(&b),
	                 "\"a \\\"b\\\" \\\\\"{4}\r\nx\r\ny{2}\r\n\xc3\xa9NILINBOX\"nil\""
	                 "\" 7-Dec-2026 11:03:28 +0000\"");
	buf_free(&b);
}

/* ---- sequence sets ------------------------------------------------------ */

Test(imap_seqset, parse_and_resolve)
{
	static const struct {
		const char *in;
		uint32_t star;
		const char *want; /* resolved ranges, "lo-hi lo-hi"; NULL = syntax error */
	} cases[] = {
		{ "1", 10, "1-1" },
		{ "1:3,5,7:*", 10, "1-3 5-5 7-10" },
		{ "*:4", 10, "4-10" },
		{ "3:1", 10, "1-3" },
		{ "5,1:2,2:4,9", 10, "1-5 9-9" },
		{ "4,5,6", 10, "4-6" },
		{ "*", 7, "7-7" },
		{ "1:*", 0, "0-1" },
		{ "4294967295", 1, "4294967295-4294967295" },
		{ "0", 10, NULL },
		{ "1:0", 10, NULL },
		{ "1:", 10, NULL },
		{ ",1", 10, NULL },
		{ "1,,2", 10, NULL },
		{ "a", 10, NULL },
		{ "-1", 10, NULL },
		{ "4294967296", 10, NULL },
	};
	for (unsigned i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char s[64];
		snprintf(s, sizeof(s), "%s\r\n", cases[i].in);
		struct imap_parser ps = parser(s);
		struct imap_seqset set;
		bool ok = imap_p_seqset(&ps, &set) && imap_p_eol(&ps);
		cr_expect_eq(ok, cases[i].want != NULL, "%s", cases[i].in);
		if (!ok) {
			imap_seqset_free(&set);
			continue;
		}
		imap_seqset_resolve(&set, cases[i].star);
		char got[128] = "";
		for (unsigned k = 0; k < set.n; k++)
			snprintf(got + strlen(got), sizeof(got) - strlen(got), "%s%u-%u",
			         k ? " " : "", set.r[k].lo, set.r[k].hi);
		cr_expect_str_eq(got, cases[i].want, "%s", cases[i].in);
		imap_seqset_free(&set);
	}
}

Test(imap_seqset, membership)
{
	char s[] = "2:4,8,10:12\r\n";
	struct imap_parser ps = parser(s);
	struct imap_seqset set;
	cr_assert(imap_p_seqset(&ps, &set));
	imap_seqset_resolve(&set, 100);
	for (uint32_t v = 0; v < 15; v++)
		cr_expect_eq(imap_seqset_has(&set, v),
		             (v >= 2 && v <= 4) || v == 8 || (v >= 10 && v <= 12), "%u", v);
	imap_seqset_free(&set);
}

/* ---- FETCH items -------------------------------------------------------- */

Test(imap_fetch, item_syntax)
{
	static const struct {
		const char *in;
		int n; /* items; -1 = syntax error */
	} cases[] = {
		{ "ALL", 4 },
		{ "FAST", 3 },
		{ "FULL", 5 },
		{ "FLAGS", 1 },
		{ "(FLAGS UID RFC822.SIZE INTERNALDATE ENVELOPE BODYSTRUCTURE BODY)", 7 },
		{ "(RFC822 RFC822.HEADER RFC822.TEXT)", 3 },
		{ "BODY[]", 1 },
		{ "BODY.PEEK[HEADER.FIELDS (From \"Subject\" {2}\r\nTo)]<0.100>", 1 },
		{ "(BODY[1.2.MIME] BODY[3.HEADER] BODY[3.TEXT] BODY[2] BODY[TEXT]<5.5>)", 5 },
		{ "BODY.PEEK[HEADER.FIELDS.NOT (X-A)]", 1 },
		{ "BODY.PEEK", -1 },
		{ "BODY[MIME]", -1 },
		{ "BODY[0]", -1 },
		{ "BODY[1.]", -1 },
		{ "BODY[HEADER.FIELDS ()]", -1 },
		{ "BODY[HEADER.FIELDS]", -1 },
		{ "BODY[]<1>", -1 },
		{ "BODY[]<1.0>", -1 },
		{ "BODY[", -1 },
		{ "(FLAGS", -1 },
		{ "()", -1 },
		{ "(FLAGS  UID)", -1 },
		{ "NOPE", -1 },
		{ "ALL FLAGS", -1 },
	};
	for (unsigned i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char s[200];
		snprintf(s, sizeof(s), "%s\r\n", cases[i].in);
		struct imap_parser ps = parser(s);
		struct imap_fetch f;
		bool ok = imap_fetch_parse(&ps, &f) && imap_p_eol(&ps);
		cr_expect_eq(ok, cases[i].n >= 0, "%s", cases[i].in);
		if (ok)
			cr_expect_eq((int)f.n, cases[i].n, "%s: %u items", cases[i].in, f.n);
		imap_fetch_free(&f);
	}
}

/* fetch - "* 1 FETCH (...)" for items on msg (LF made CRLF). */
static char *fetch(const char *msg, const char *items, uint8_t flags)
{
	size_t n;
	char *data = crlf(msg, &n);
	char s[300];
	snprintf(s, sizeof(s), "%s\r\n", items);
	struct imap_parser ps = parser(s);
	struct imap_fetch f;
	cr_assert(imap_fetch_parse(&ps, &f), "%s", items);
	struct imap_fetch_scratch *sc = calloc(1, sizeof(*sc));
	struct buf out = { 0 };
	struct imap_fetch_msg m = {
		.seq = 1, .uid = 7, .flags = flags, .date_ms = 0, .data = data, .len = n
	};
	imap_fetch_write(&out, &f, &m, sc);
	imap_fetch_free(&f);
	buf_free(&sc->tmp);
	free(sc);
	free(data);
	char *r = strdup(buf_cstr(&out));
	buf_free(&out);
	return r;
}

/* ---- BODYSTRUCTURE, BODY, ENVELOPE ------------------------------------- */

static const char msg_plain[] = "From: Alice <alice@example.org>\n"
                                "To: bob@example.com\n"
                                "Subject: plain\n"
                                "Date: Tue, 1 Dec 2026 10:00:00 +0100\n"
                                "Message-ID: <p1@example.org>\n"
                                "\n"
                                "Hello Bob.\n"
                                "Two lines.\n";

static const char msg_alternative_attachment[] =
    "From: \"Alice \\\"A\\\" Smith\" <alice@example.org>\n"
    "To: Bob <bob@example.com>, carol@example.com (Carol C)\n"
    "Cc: undisclosed-recipients:;\n"
    "Subject: =?utf-8?q?caf=C3=A9?= report\n"
    "Date: Tue, 1 Dec 2026 10:00:00 +0100\n"
    "Message-ID: <p2@example.org>\n"
    "In-Reply-To: <p1@example.org>\n"
    "MIME-Version: 1.0\n"
    "Content-Type: multipart/mixed; boundary=\"outer\"\n"
    "\n"
    "preamble text\n"
    "--outer\n"
    "Content-Type: multipart/alternative; boundary=inner\n"
    "\n"
    "--inner\n"
    "Content-Type: text/plain; charset=utf-8\n"
    "Content-Transfer-Encoding: quoted-printable\n"
    "\n"
    "caf=C3=A9\n"
    "--inner\n"
    "Content-Type: text/html; charset=\"utf-8\"\n"
    "Content-Transfer-Encoding: 7bit\n"
    "\n"
    "<p>cafe</p>\n"
    "--inner--\n"
    "\n"
    "--outer\n"
    "Content-Type: application/pdf; name=\"r.pdf\"\n"
    "Content-Disposition: attachment; filename=\"r.pdf\"; size=12\n"
    "Content-Transfer-Encoding: base64\n"
    "Content-ID: <att1@example.org>\n"
    "Content-Description: the report\n"
    "Content-Language: en, de\n"
    "Content-Location: http://example.org/r.pdf\n"
    "Content-MD5: Q2hlY2sgSW50ZWdyaXR5IQ==\n"
    "\n"
    "JVBERi0xLjQKJcOkw7zDtsOf\n"
    "ZW5kc3RyZWFt\n"
    "--outer--\n"
    "epilogue\n";

static const char msg_rfc822_inside[] =
    "From: postmaster@example.net\n"
    "To: \"Group\": a@example.com, b@example.com;, c@example.com\n"
    "Subject: forwarded\n"
    "Date: 1 Dec 2026 10:00:00 GMT\n"
    "MIME-Version: 1.0\n"
    "Content-Type: multipart/mixed; boundary=\"b1\"\n"
    "\n"
    "--b1\n"
    "Content-Type: text/plain\n"
    "\n"
    "See attached.\n"
    "--b1\n"
    "Content-Type: message/rfc822\n"
    "Content-Description: forwarded message\n"
    "\n"
    "From: Dave <dave@example.net>\n"
    "To: eve@example.com\n"
    "Subject: inner\n"
    "Message-ID: <inner@example.net>\n"
    "MIME-Version: 1.0\n"
    "Content-Type: multipart/alternative; boundary=\"b2\"\n"
    "\n"
    "--b2\n"
    "Content-Type: text/plain; charset=us-ascii\n"
    "\n"
    "inner text\n"
    "--b2\n"
    "Content-Type: text/html\n"
    "\n"
    "<b>inner</b>\n"
    "--b2--\n"
    "--b1--\n";

static const char msg_malformed[] =
    "From: <@route1,@route2:joe@example.org>, \"no domain\", (only comment), broken@\n"
    "To: \"Umlaut User\" <u@example.org>\n"
    "Reply-To:\n"
    "Sender: sender@example.org\n"
    "Subject: malformed\n"
    "Content-Type: multipart/mixed; boundary=\"never-closed\"\n"
    "\n"
    "--never-closed\n"
    "Content-Type: text\n"
    "Content-Transfer-Encoding: BASE64\n"
    "\n"
    "aGVsbG8=\n"
    "--never-closed\n"
    "Content-Type: multipart/related\n"
    "\n"
    "no boundary here\n";

static const char msg_dsn[] = "Return-Path: <>\n"
                              "Date: Mon, 7 Dec 2026 11:03:28 +0000\n"
                              "From: Mail Delivery System <MAILER-DAEMON@mta.test.example>\n"
                              "To: <s@origin.test>\n"
                              "Subject: Undelivered Mail Returned to Sender\n"
                              "Message-ID: <dsn.1@mta.test.example>\n"
                              "Auto-Submitted: auto-replied\n"
                              "MIME-Version: 1.0\n"
                              "Content-Type: multipart/report; report-type=delivery-status;\n"
                              "\tboundary=\"=_rp_dsn_1\"\n"
                              "\n"
                              "This is a MIME-encapsulated message.\n"
                              "\n"
                              "--=_rp_dsn_1\n"
                              "Content-Type: text/plain; charset=utf-8\n"
                              "Content-Transfer-Encoding: 8bit\n"
                              "\n"
                              "I'm sorry to have to inform you that your message could not\n"
                              "be delivered to one or more recipients.\n"
                              "\n"
                              "--=_rp_dsn_1\n"
                              "Content-Type: message/delivery-status\n"
                              "\n"
                              "Reporting-MTA: dns; mta.test.example\n"
                              "Arrival-Date: Mon, 7 Dec 2026 11:03:28 +0000\n"
                              "\n"
                              "Final-Recipient: rfc822; u1@hard.test\n"
                              "Action: failed\n"
                              "Status: 5.1.1\n"
                              "Diagnostic-Code: smtp; 550 5.1.1 No such user\n"
                              "\n"
                              "--=_rp_dsn_1\n"
                              "Content-Type: message/rfc822\n"
                              "\n"
                              "From: s@origin.test\n"
                              "To: u1@hard.test\n"
                              "Subject: hello\n"
                              "Message-ID: <orig@mta.test.example>\n"
                              "MIME-Version: 1.0\n"
                              "Content-Type: text/plain; charset=utf-8\n"
                              "\n"
                              "the original\n"
                              "--=_rp_dsn_1--\n";

/* Each sample's BODYSTRUCTURE, BODY and ENVELOPE as Dovecot 2.3.19 gives
 * them, except: Dovecot sends strings with quotes in them as literals (we
 * escape them: the same string), and for "Content-Type: text" (no subtype)
 * says "text" "" where we take RFC 2045's default text/plain. */
static const struct sample {
	const char *name;
	const char *msg;
	const char *bodystructure, *body, *envelope;
} samples[] = {
	{
	    "plain",
	    msg_plain,
	    "(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 24 2 NIL NIL NIL NIL)",
	    "(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 24 2)",
	    "(\"Tue, 1 Dec 2026 10:00:00 +0100\" \"plain\" ((\"Alice\" NIL \"alice\" "
	    "\"example.org\")) ((\"Alice\" NIL \"alice\" \"example.org\")) ((\"Alice\" NIL "
	    "\"alice\" \"example.org\")) ((NIL NIL \"bob\" \"example.com\")) NIL NIL NIL "
	    "\"<p1@example.org>\")",
	},
	{
	    "alternative_attachment",
	    msg_alternative_attachment,
	    "(((\"text\" \"plain\" (\"charset\" \"utf-8\") NIL NIL \"quoted-printable\" 9 0 NIL "
	    "NIL NIL NIL)(\"text\" \"html\" (\"charset\" \"utf-8\") NIL NIL \"7bit\" 11 0 NIL NIL "
	    "NIL NIL) \"alternative\" (\"boundary\" \"inner\") NIL NIL NIL)(\"application\" "
	    "\"pdf\" (\"name\" \"r.pdf\") \"<att1@example.org>\" \"the report\" \"base64\" 38 "
	    "\"Q2hlY2sgSW50ZWdyaXR5IQ==\" (\"attachment\" (\"filename\" \"r.pdf\" \"size\" "
	    "\"12\")) (\"en\" \"de\") \"http://example.org/r.pdf\") \"mixed\" (\"boundary\" "
	    "\"outer\") NIL NIL NIL)",
	    "(((\"text\" \"plain\" (\"charset\" \"utf-8\") NIL NIL \"quoted-printable\" 9 "
	    "0)(\"text\" \"html\" (\"charset\" \"utf-8\") NIL NIL \"7bit\" 11 0) "
	    "\"alternative\")(\"application\" \"pdf\" (\"name\" \"r.pdf\") \"<att1@example.org>\" "
	    "\"the report\" \"base64\" 38) \"mixed\")",
	    "(\"Tue, 1 Dec 2026 10:00:00 +0100\" \"=?utf-8?q?caf=C3=A9?= report\" ((\"Alice "
	    "\\\"A\\\" Smith\" NIL \"alice\" \"example.org\")) ((\"Alice \\\"A\\\" Smith\" NIL "
	    "\"alice\" \"example.org\")) ((\"Alice \\\"A\\\" Smith\" NIL \"alice\" "
	    "\"example.org\")) ((\"Bob\" NIL \"bob\" \"example.com\")(\"Carol C\" NIL \"carol\" "
	    "\"example.com\")) ((NIL NIL \"undisclosed-recipients\" NIL)(NIL NIL NIL NIL)) NIL "
	    "\"<p1@example.org>\" \"<p2@example.org>\")",
	},
	{
	    "rfc822_inside",
	    msg_rfc822_inside,
	    "((\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 13 0 NIL NIL NIL "
	    "NIL)(\"message\" \"rfc822\" NIL NIL \"forwarded message\" \"7bit\" 293 (NIL \"inner\" "
	    "((\"Dave\" NIL \"dave\" \"example.net\")) ((\"Dave\" NIL \"dave\" \"example.net\")) "
	    "((\"Dave\" NIL \"dave\" \"example.net\")) ((NIL NIL \"eve\" \"example.com\")) NIL NIL "
	    "NIL \"<inner@example.net>\") ((\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL "
	    "\"7bit\" 10 0 NIL NIL NIL NIL)(\"text\" \"html\" (\"charset\" \"us-ascii\") NIL NIL "
	    "\"7bit\" 12 0 NIL NIL NIL NIL) \"alternative\" (\"boundary\" \"b2\") NIL NIL NIL) 16 "
	    "NIL NIL NIL NIL) \"mixed\" (\"boundary\" \"b1\") NIL NIL NIL)",
	    "((\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 13 0)(\"message\" "
	    "\"rfc822\" NIL NIL \"forwarded message\" \"7bit\" 293 (NIL \"inner\" ((\"Dave\" NIL "
	    "\"dave\" \"example.net\")) ((\"Dave\" NIL \"dave\" \"example.net\")) ((\"Dave\" NIL "
	    "\"dave\" \"example.net\")) ((NIL NIL \"eve\" \"example.com\")) NIL NIL NIL "
	    "\"<inner@example.net>\") ((\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL "
	    "\"7bit\" 10 0)(\"text\" \"html\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 12 0) "
	    "\"alternative\") 16) \"mixed\")",
	    "(\"1 Dec 2026 10:00:00 GMT\" \"forwarded\" ((NIL NIL \"postmaster\" \"example.net\")) "
	    "((NIL NIL \"postmaster\" \"example.net\")) ((NIL NIL \"postmaster\" \"example.net\")) "
	    "((NIL NIL \"Group\" NIL)(NIL NIL \"a\" \"example.com\")(NIL NIL \"b\" "
	    "\"example.com\")(NIL NIL NIL NIL)(NIL NIL \"c\" \"example.com\")) NIL NIL NIL NIL)",
	},
	{
	    "malformed",
	    msg_malformed,
	    "((\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"BASE64\" 8 0 NIL NIL NIL "
	    "NIL)((\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 0 0 NIL NIL NIL "
	    "NIL) \"related\" NIL NIL NIL NIL) \"mixed\" (\"boundary\" \"never-closed\") NIL NIL "
	    "NIL)",
	    "((\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"BASE64\" 8 0)((\"text\" "
	    "\"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 0 0) \"related\") \"mixed\")",
	    "(NIL \"malformed\" ((NIL \"@route1,@route2\" \"joe\" \"example.org\")(\"no domain\" "
	    "NIL \"MISSING_MAILBOX\" \"MISSING_DOMAIN\")(NIL NIL \"broken\" \"MISSING_DOMAIN\")) "
	    "((NIL NIL \"sender\" \"example.org\")) ((NIL \"@route1,@route2\" \"joe\" "
	    "\"example.org\")(\"no domain\" NIL \"MISSING_MAILBOX\" \"MISSING_DOMAIN\")(NIL NIL "
	    "\"broken\" \"MISSING_DOMAIN\")) ((\"Umlaut User\" NIL \"u\" \"example.org\")) NIL NIL "
	    "NIL NIL)",
	},
	{
	    "dsn",
	    msg_dsn,
	    "((\"text\" \"plain\" (\"charset\" \"utf-8\") NIL NIL \"8bit\" 102 2 NIL NIL NIL "
	    "NIL)(\"message\" \"delivery-status\" NIL NIL NIL \"7bit\" 203 NIL NIL NIL "
	    "NIL)(\"message\" \"rfc822\" NIL NIL NIL \"7bit\" 166 (NIL \"hello\" ((NIL NIL \"s\" "
	    "\"origin.test\")) ((NIL NIL \"s\" \"origin.test\")) ((NIL NIL \"s\" \"origin.test\")) "
	    "((NIL NIL \"u1\" \"hard.test\")) NIL NIL NIL \"<orig@mta.test.example>\") (\"text\" "
	    "\"plain\" (\"charset\" \"utf-8\") NIL NIL \"7bit\" 12 0 NIL NIL NIL NIL) 7 NIL NIL "
	    "NIL NIL) \"report\" (\"report-type\" \"delivery-status\" \"boundary\" \"=_rp_dsn_1\") "
	    "NIL NIL NIL)",
	    "((\"text\" \"plain\" (\"charset\" \"utf-8\") NIL NIL \"8bit\" 102 2)(\"message\" "
	    "\"delivery-status\" NIL NIL NIL \"7bit\" 203)(\"message\" \"rfc822\" NIL NIL NIL "
	    "\"7bit\" 166 (NIL \"hello\" ((NIL NIL \"s\" \"origin.test\")) ((NIL NIL \"s\" "
	    "\"origin.test\")) ((NIL NIL \"s\" \"origin.test\")) ((NIL NIL \"u1\" \"hard.test\")) "
	    "NIL NIL NIL \"<orig@mta.test.example>\") (\"text\" \"plain\" (\"charset\" \"utf-8\") "
	    "NIL NIL \"7bit\" 12 0) 7) \"report\")",
	    "(\"Mon, 7 Dec 2026 11:03:28 +0000\" \"Undelivered Mail Returned to Sender\" ((\"Mail "
	    "Delivery System\" NIL \"MAILER-DAEMON\" \"mta.test.example\")) ((\"Mail Delivery "
	    "System\" NIL \"MAILER-DAEMON\" \"mta.test.example\")) ((\"Mail Delivery System\" NIL "
	    "\"MAILER-DAEMON\" \"mta.test.example\")) ((NIL NIL \"s\" \"origin.test\")) NIL NIL "
	    "NIL \"<dsn.1@mta.test.example>\")",
	},
};

Test(imap_mime, samples)
{
	for (unsigned i = 0; i < sizeof(samples) / sizeof(samples[0]); i++) {
		const struct sample *s = &samples[i];
		static const char *const items[] = { "BODYSTRUCTURE", "BODY", "ENVELOPE" };
		const char *want[] = { s->bodystructure, s->body, s->envelope };
		for (unsigned k = 0; k < 3; k++) {
			char *got = fetch(s->msg, items[k], 0);
			char *exp = malloc(strlen(want[k]) + 64);
			sprintf(exp, "* 1 FETCH (%s %s)\r\n", items[k], want[k]);
			cr_expect_str_eq(got, exp, "%s %s", s->name, items[k]);
			free(exp);
			free(got);
		}
	}
}

Test(imap_mime, sections)
{
	static const struct {
		const char *msg, *items, *want;
	} cases[] = {
		{ msg_dsn, "BODY.PEEK[3.1]", "* 1 FETCH (BODY[3.1] {12}\r\nthe original)\r\n" },
		{ msg_dsn, "BODY.PEEK[3.HEADER.FIELDS (subject to)]",
		  "* 1 FETCH (BODY[3.HEADER.FIELDS (SUBJECT TO)] {36}\r\nTo: u1@hard.test\r\n"
		  "Subject: hello\r\n\r\n)\r\n" },
		{ msg_dsn, "BODY.PEEK[2.MIME]",
		  "* 1 FETCH (BODY[2.MIME] {41}\r\nContent-Type: "
		  "message/delivery-status\r\n\r\n)\r\n" },
		{ msg_dsn, "BODY.PEEK[1]<4.10>", "* 1 FETCH (BODY[1]<4> {10}\r\nsorry to h)\r\n" },
		{ msg_dsn, "BODY.PEEK[1]<4000.10>", "* 1 FETCH (BODY[1]<4000> {0}\r\n)\r\n" },
		{ msg_dsn, "BODY.PEEK[4]", "* 1 FETCH (BODY[4] {0}\r\n)\r\n" },
		{ msg_dsn, "BODY.PEEK[1.HEADER]", "* 1 FETCH (BODY[1.HEADER] {0}\r\n)\r\n" },
		{ msg_rfc822_inside, "BODY.PEEK[2.2]",
		  "* 1 FETCH (BODY[2.2] {12}\r\n<b>inner</b>)\r\n" },
		{ msg_rfc822_inside, "BODY.PEEK[2.TEXT]<0.4>",
		  "* 1 FETCH (BODY[2.TEXT]<0> {4}\r\n--b2)\r\n" },
		{ msg_rfc822_inside, "BODY.PEEK[1.1]", /* a leaf's part 1: itself */
		  "* 1 FETCH (BODY[1.1] {13}\r\nSee attached.)\r\n" },
		{ msg_plain, "BODY.PEEK[1]",
		  "* 1 FETCH (BODY[1] {24}\r\nHello Bob.\r\nTwo lines.\r\n)\r\n" },
		{ msg_plain, "BODY.PEEK[1.1]", "* 1 FETCH (BODY[1.1] {0}\r\n)\r\n" },
		{ msg_plain,
		  "(RFC822.SIZE UID BODY.PEEK[HEADER.FIELDS.NOT (To From Date Message-ID)])",
		  "* 1 FETCH (RFC822.SIZE 164 UID 7 BODY[HEADER.FIELDS.NOT (TO FROM DATE "
		  "MESSAGE-ID)] "
		  "{18}\r\nSubject: plain\r\n\r\n)\r\n" },
		{ msg_plain, "(FLAGS INTERNALDATE)",
		  "* 1 FETCH (FLAGS (\\Deleted \\Seen) INTERNALDATE \" 1-Jan-1970 00:00:00 "
		  "+0000\")\r\n" },
		{ msg_plain, "RFC822.TEXT",
		  "* 1 FETCH (RFC822.TEXT {24}\r\nHello Bob.\r\nTwo lines.\r\n)\r\n" },
		{ "Subject: x\n", "(BODY.PEEK[TEXT] BODY.PEEK[HEADER.FIELDS.NOT (A)])",
		  "* 1 FETCH (BODY[TEXT] {0}\r\n BODY[HEADER.FIELDS.NOT (A)] {12}\r\nSubject: "
		  "x\r\n)\r\n" },
	};
	for (unsigned i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *got = fetch(cases[i].msg, cases[i].items, MBOX_SEEN | MBOX_DELETED);
		cr_expect_str_eq(got, cases[i].want, "case %u: %s: %s", i, cases[i].items, got);
		free(got);
	}
}

Test(imap_mime, nesting_and_parts_are_capped)
{
	/* 40 nested multiparts: parsed to the depth cap, never past the table. */
	struct buf b = { 0 };
	buf_puts(&b, "Subject: deep\n");
	for (int i = 0; i < 40; i++)
		buf_printf(&b, "Content-Type: multipart/mixed; boundary=b%d\n\n--b%d\n", i, i);
	buf_puts(&b, "Content-Type: text/plain\n\ndeep\n");
	char *got = fetch(buf_cstr(&b), "BODYSTRUCTURE", 0);
	cr_assert(strstr(got, "\"application\" \"octet-stream\""), "the rest is opaque: %.200s",
	          got);
	free(got);
	buf_reset(&b);
	buf_puts(&b, "Content-Type: multipart/mixed; boundary=x\n\n");
	for (int i = 0; i < 600; i++)
		buf_puts(&b, "--x\n\npart\n");
	buf_puts(&b, "--x--\n");
	struct imap_mime *m = malloc(sizeof(*m));
	size_t n;
	char *data = crlf(buf_cstr(&b), &n);
	imap_mime_parse(m, data, n);
	cr_assert_eq(m->n, IMAP_MIME_PARTS);
	cr_assert_eq(m->part[0].nchildren, IMAP_MIME_PARTS - 1);
	free(m);
	free(data);
	buf_free(&b);
}

/* ---- address lists ------------------------------------------------------ */

Test(imap_envelope, address_lists)
{
	static const struct {
		const char *in, *want;
	} cases[] = {
		{ "a@b.c", "((NIL NIL \"a\" \"b.c\"))" },
		{ "", "NIL" },
		{ "  (just a comment) ", "NIL" },
		{ "\"Last, First\" <f@x.org>", "((\"Last, First\" NIL \"f\" \"x.org\"))" },
		{ "John  Q.  Public <jqp@x.org>", "((\"John Q. Public\" NIL \"jqp\" \"x.org\"))" },
		{ "<@a.org,@b.org:u@c.org>", "((NIL \"@a.org,@b.org\" \"u\" \"c.org\"))" },
		{ "u@x.org (U Name)", "((\"U Name\" NIL \"u\" \"x.org\"))" },
		{ "team: a@x.org, B <b@y.org>;, c@z.org",
		  "((NIL NIL \"team\" NIL)(NIL NIL \"a\" \"x.org\")(\"B\" NIL \"b\" \"y.org\")"
		  "(NIL NIL NIL NIL)(NIL NIL \"c\" \"z.org\"))" },
		{ "undisclosed-recipients:;",
		  "((NIL NIL \"undisclosed-recipients\" NIL)(NIL NIL NIL NIL))" },
		{ "open-group: a@x.org",
		  "((NIL NIL \"open-group\" NIL)(NIL NIL \"a\" \"x.org\")(NIL NIL NIL NIL))" },
		{ "user", "((NIL NIL \"user\" \"MISSING_DOMAIN\"))" },
		{ "=?utf-8?q?J=C3=B6rg?= <j@x.org>",
		  "((\"=?utf-8?q?J=C3=B6rg?=\" NIL \"j\" \"x.org\"))" },
		{ "\xc3\x89lise <e@x.org>", "(({6}\r\n\xc3\x89lise NIL \"e\" \"x.org\"))" },
		{ "a@[10.0.0.1], ,, b@x.org",
		  "((NIL NIL \"a\" \"[10.0.0.1]\")(NIL NIL \"b\" \"x.org\"))" },
		{ "<>", "NIL" },
		{ "\"unterminated <u@x.org>",
		  "((\"unterminated <u@x.org>\" NIL \"MISSING_MAILBOX\" \"MISSING_DOMAIN\"))" },
		{ "a@b.c>>>, d@e.f", "((NIL NIL \"a\" \"b.c\")(NIL NIL \"d\" \"e.f\"))" },
	};
	for (unsigned i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct buf b = { 0 };
		imap_address_list(&b, cases[i].in, strlen(cases[i].in));
		cr_expect_str_eq(buf_cstr(&b), cases[i].want, "%s: %s", cases[i].in, buf_cstr(&b));
		buf_free(&b);
	}
}

Test(imap_envelope, defaults_and_empty_fields)
{
	struct buf b = { 0 };
	const char *hdr = "From: a@x.org\r\nReply-To:\r\nSubject:\r\n\r\n";
	imap_envelope(&b, hdr, strlen(hdr));
	cr_assert_str_eq(buf_cstr(&b),
	                 "(NIL \"\" ((NIL NIL \"a\" \"x.org\")) ((NIL NIL \"a\" \"x.org\")) "
	                 "((NIL NIL \"a\" \"x.org\")) NIL NIL NIL NIL NIL)");
	buf_free(&b);
}

/* ---- SEARCH ------------------------------------------------------------- */

Test(imap_search, syntax)
{
	static const struct {
		const char *in;
		enum imap_search_status st;
	} cases[] = {
		{ "ALL", IMAP_SEARCH_OK },
		{ "CHARSET UTF-8 SUBJECT x", IMAP_SEARCH_OK },
		{ "CHARSET \"us-ascii\" ALL", IMAP_SEARCH_OK },
		{ "CHARSET KOI8-R ALL", IMAP_SEARCH_BADCHARSET },
		{ "UNSEEN FROM \"mailer\" SINCE 1-Dec-2026 BEFORE \"8-Dec-2026\"", IMAP_SEARCH_OK },
		{ "OR SEEN (FLAGGED DELETED) NOT 2:4", IMAP_SEARCH_OK },
		{ "UID 1:* LARGER 100 SMALLER 5000 ON 7-Dec-2026", IMAP_SEARCH_OK },
		{ "HEADER X-Test {3}\r\nabc TEXT x BODY y TO z CC w BCC v", IMAP_SEARCH_OK },
		{ "KEYWORD $Junk UNKEYWORD foo NEW OLD RECENT ANSWERED UNANSWERED DRAFT UNDRAFT",
		  IMAP_SEARCH_OK },
		{ "SENTBEFORE 1-Jan-2030 SENTON 1-Jan-2020 SENTSINCE 1-Jan-2000", IMAP_SEARCH_OK },
		{ "", IMAP_SEARCH_BAD },
		{ "BOGUS", IMAP_SEARCH_BAD },
		{ "FROM", IMAP_SEARCH_BAD },
		{ "OR SEEN", IMAP_SEARCH_BAD },
		{ "NOT", IMAP_SEARCH_BAD },
		{ "(SEEN", IMAP_SEARCH_BAD },
		{ "SEEN)", IMAP_SEARCH_BAD },
		{ "SINCE 32-Jan-2000", IMAP_SEARCH_BAD },
		{ "LARGER x", IMAP_SEARCH_BAD },
		{ "UID 0", IMAP_SEARCH_BAD },
		{ "SEEN  UNSEEN", IMAP_SEARCH_BAD },
		{ "NOT NOT NOT NOT NOT NOT NOT NOT NOT NOT NOT NOT NOT NOT NOT NOT NOT NOT NOT NOT "
		  "NOT "
		  "NOT NOT NOT NOT NOT NOT NOT NOT NOT NOT NOT NOT NOT SEEN",
		  IMAP_SEARCH_BAD },
	};
	for (unsigned i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char s[400];
		snprintf(s, sizeof(s), "%s\r\n", cases[i].in);
		struct imap_parser ps = parser(s);
		struct imap_search q;
		enum imap_search_status st = imap_search_parse(&ps, &q);
		cr_expect_eq(st, cases[i].st, "%s: %d", cases[i].in, st);
		imap_search_free(&q);
	}
}

Test(imap_search, matching)
{
	size_t n;
	char *data = crlf(msg_dsn, &n);
	/* 2026-12-07 11:03:28 UTC; seq 3, UID 12, \Seen \Flagged. */
	struct imap_search_msg m = { .seq = 3,
		                     .uid = 12,
		                     .flags = MBOX_SEEN | MBOX_FLAGGED,
		                     .date_ms = 1796641408021ull,
		                     .data = data,
		                     .len = n };
	static const struct {
		const char *in;
		bool match;
	} cases[] = {
		{ "ALL", true },
		{ "SEEN", true },
		{ "UNSEEN", false },
		{ "FLAGGED SEEN UNDELETED UNANSWERED UNDRAFT", true },
		{ "DELETED", false },
		{ "NOT DELETED", true },
		{ "OR DELETED ANSWERED", false },
		{ "OR DELETED FLAGGED", true },
		{ "FROM MAILER-daemon", true },
		{ "FROM \"mail delivery\"", true },
		{ "FROM nobody", false },
		{ "TO s@origin.test", true },
		{ "SUBJECT \"returned to\"", true },
		{ "SUBJECT hello", false }, /* the inner message's subject is no header of ours */
		{ "CC x", false },
		{ "HEADER Auto-Submitted auto-replied", true },
		{ "HEADER X-Missing \"\"", false },
		{ "HEADER Message-ID \"\"", true },
		{ "BODY \"no such user\"", true },
		{ "BODY Undelivered", false },
		{ "TEXT Undelivered", true },
		{ "SINCE 7-Dec-2026", true },
		{ "SINCE 8-Dec-2026", false },
		{ "BEFORE 7-Dec-2026", false },
		{ "BEFORE 8-Dec-2026", true },
		{ "ON 7-Dec-2026", true },
		{ "SENTON 7-Dec-2026 SENTSINCE 1-Dec-2026 SENTBEFORE 8-Dec-2026", true },
		{ "LARGER 1000", true },
		{ "SMALLER 1000", false },
		{ "3", true },
		{ "1:2,4:*", false },
		{ "*", false }, /* the last is 5 */
		{ "UID 10:12", true },
		{ "UID *", false },
		{ "(SEEN (FLAGGED (FROM mailer)))", true },
		{ "NEW", false },
		{ "OLD", true },
		{ "KEYWORD x", false },
		{ "UNKEYWORD x", true },
	};
	for (unsigned i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char s[200];
		snprintf(s, sizeof(s), "%s\r\n", cases[i].in);
		struct imap_parser ps = parser(s);
		struct imap_search q;
		cr_assert_eq(imap_search_parse(&ps, &q), IMAP_SEARCH_OK, "%s", cases[i].in);
		imap_search_resolve(&q, 5, 20);
		cr_expect_eq(imap_search_match(&q, &m), cases[i].match, "%s", cases[i].in);
		imap_search_free(&q);
	}
	free(data);
}

Test(imap_search, sent_dates)
{
	static const struct {
		const char *in;
		bool ok;
		int64_t days;
	} cases[] = {
		{ "Mon, 7 Dec 2026 11:03:28 +0000", true, 20794 },
		{ "7 Dec 2026 23:59 -1200", true, 20794 },
		{ " Thu, 01 Jan 1970 00:00:00 GMT", true, 0 },
		{ "1 Jan 99 00:00 GMT", true, 10592 },
		{ "yesterday", false, 0 },
		{ "", false, 0 },
	};
	for (unsigned i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int64_t d = -1;
		bool ok = imap_sent_days(cases[i].in, strlen(cases[i].in), &d);
		cr_expect_eq(ok, cases[i].ok, "%s", cases[i].in);
		if (ok)
			cr_expect_eq(d, cases[i].days, "%s: %lld", cases[i].in, (long long)d);
	}
}
