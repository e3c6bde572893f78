/* test_msg_header.c - RFC 5322 header scanning (base/msg_header.c): where
 * the header section ends, which fields it has, folded values, bare LF, and
 * field lookup that never looks past the header.
 */
#include <criterion/criterion.h>
#include <string.h>

#include "base/msg_header.h"

struct scan_case {
	const char *msg;
	size_t end;
	bool blank_line, has_date, has_message_id, has_from;
	unsigned fields;
};

static const struct scan_case scans[] = {
	{ "From: a\r\nTo: b\r\nSubject: hi\r\n\r\nbody\r\n", 31, true, false, false, true, 3 },
	{ "Date: Fri, 27 Nov 2026 03:19:25 +0000\r\nmessage-id: <x@y>\r\n\r\n", 60, true, true,
	  true, false, 2 },
	{ "FROM: a\r\nDATE: b\r\nMESSAGE-ID: c\r\n\r\n", 35, true, true, true, true, 3 },
	{ "Subject: a\r\n b\r\n\tc\r\n\r\nbody", 22, true, false, false, false, 1 },
	{ "From: a\nTo: b\n\nbody\n", 15, true, false, false, true, 2 },
	{ "From: a\r\nTo: b\r\n", 16, false, false, false, true, 2 },
	{ "From: a\r\nTo: b", 14, false, false, false, true, 2 },
	{ "From: a\r\nnot a header\r\n\r\n", 9, false, false, false, true, 1 },
	{ "From: a\r\nBad Name: x\r\n", 9, false, false, false, true, 1 },
	{ "From: a\r\n: no name\r\n", 9, false, false, false, true, 1 },
	{ " folded first\r\nFrom: a\r\n\r\n", 0, false, false, false, false, 0 },
	{ "\r\nbody", 2, true, false, false, false, 0 },
	{ "\nbody", 1, true, false, false, false, 0 },
	{ "", 0, false, false, false, false, 0 },
	{ "X-Empty:\r\nFrom:x\r\n\r\n", 20, true, false, false, true, 2 },
	{ "Dates: x\r\nFrom-Not: y\r\nMessage-IDs: z\r\n\r\n", 41, true, false, false, false, 3 },
	/* A header-looking line in the body is body. */
	{ "To: a\r\n\r\nFrom: b\r\n", 9, true, false, false, false, 1 },
};

Test(msg_header, scan_table)
{
	for (size_t i = 0; i < sizeof(scans) / sizeof(scans[0]); i++) {
		const struct scan_case *c = &scans[i];
		struct msg_header_info info;
		memset(&info, 0xff, sizeof(info));
		msg_header_scan(c->msg, strlen(c->msg), &info);
		cr_assert_eq(info.end, c->end, "case %zu: end %zu, want %zu", i, info.end, c->end);
		cr_assert_eq(info.blank_line, c->blank_line, "case %zu: blank_line", i);
		cr_assert_eq(info.has_date, c->has_date, "case %zu: has_date", i);
		cr_assert_eq(info.has_message_id, c->has_message_id, "case %zu: has_message_id", i);
		cr_assert_eq(info.has_from, c->has_from, "case %zu: has_from", i);
		cr_assert_eq(info.fields, c->fields, "case %zu: fields %u, want %u", i, info.fields,
		             c->fields);
	}
}

static bool get(const char *msg, const char *name, const char *want)
{
	struct msg_header_info info;
	const char *val = NULL;
	size_t len = 0;
	msg_header_scan(msg, strlen(msg), &info);
	bool found = msg_header_get(msg, info.end, name, &val, &len);
	if (!want) {
		cr_assert_not(found, "%s must not be found", name);
		return found;
	}
	cr_assert(found, "%s must be found", name);
	cr_assert(val >= msg && val + len <= msg + info.end, "%s: value outside the header", name);
	cr_assert_eq(len, strlen(want), "%s: '%.*s', want '%s'", name, (int)len, val, want);
	cr_assert(!memcmp(val, want, len), "%s: '%.*s', want '%s'", name, (int)len, val, want);
	return found;
}

Test(msg_header, get)
{
	static const char msg[] = "From: Alice <a@example.com>\r\n"
	                          "Subject:   spaced\r\n"
	                          "X-Folded: one\r\n"
	                          "  two\r\n"
	                          "\tthree\r\n"
	                          "X-Empty:\r\n"
	                          "X-Blank:   \r\n"
	                          "NoSpace:x\r\n"
	                          "To: first\r\n"
	                          "to: second\r\n"
	                          "X-Last: bare lf\n"
	                          "\r\n"
	                          "Body-Field: not a header\r\n";
	get(msg, "From", "Alice <a@example.com>");
	get(msg, "from", "Alice <a@example.com>");
	get(msg, "SUBJECT", "spaced");
	get(msg, "X-Folded", "one\r\n  two\r\n\tthree");
	get(msg, "X-Empty", "");
	get(msg, "X-Blank", "");
	get(msg, "NoSpace", "x");
	get(msg, "To", "first");
	get(msg, "X-Last", "bare lf");
	get(msg, "Body-Field", NULL);
	get(msg, "Missing", NULL);
	get(msg, "Fro", NULL);
	get(msg, "From:", NULL);
}

Test(msg_header, get_stops_at_hdr_end)
{
	static const char msg[] = "A: 1\r\nB: 2\r\n";
	const char *val;
	size_t len;
	cr_assert(msg_header_get(msg, 6, "A", &val, &len));
	cr_assert_eq(len, 1);
	cr_assert_not(msg_header_get(msg, 6, "B", &val, &len), "B is past hdr_end");
	/* A field cut by hdr_end has no line end to drop. */
	cr_assert(msg_header_get(msg, 4, "A", &val, &len));
	cr_assert_eq(len, 1);
	cr_assert_eq(*val, '1');
	cr_assert_not(msg_header_get(msg, 0, "A", &val, &len));
}

/* Received: fields are counted in the header section only (a hop count
 * for loop detection, RFC 5321 6.3): not in the body, not a lookalike. */
Test(msg_header, received_counted_in_the_header_only)
{
	struct buf m = { 0 };
	for (int i = 0; i < 51; i++)
		buf_printf(&m, "%s: from h%d by x; Thu, 1 Jan 2026 00:00:00 +0000\r\n",
		           i % 2 ? "received" : "Received", i);
	buf_puts(&m, "X-Received: no\r\nReceived-SPF: pass\r\nSubject: loop\r\n\r\n");
	for (int i = 0; i < 100; i++)
		buf_puts(&m, "Received: in the body\r\n");
	struct msg_header_info hi;
	msg_header_scan(buf_head(&m), buf_used(&m), &hi);
	cr_assert_eq(hi.received, 51);
	cr_assert(hi.received > MSG_HOPS_MAX);
	cr_assert_eq(hi.fields, 54);
	buf_free(&m);
}
