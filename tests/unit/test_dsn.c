/* test_dsn.c - delivery status notifications (queue/dsn.c): the message is
 * taken apart as a reader would (RFC 6522 multipart/report, RFC 3464
 * fields): every top-level header, the three parts in order, the
 * per-message and per-recipient fields with well-formed values, several
 * recipients, optional fields present only when known, the original as
 * headers or (RET=FULL) the whole message, and CRLF line ends throughout.
 */
#include <criterion/criterion.h>
#include <regex.h>
#include <stdio.h>
#include <string.h>

#include "base/buf.h"
#include "queue/dsn.h"

#define NOW     1800000000123ull /* Fri, 15 Jan 2027 08:00:00 +0000 */
#define ARRIVAL 1799999000000ull /* 1000.123 s earlier */
#define QID     0x01a21b1e47130000ull

static const char original_full[] = "Received: from client.test by mta.test\r\n"
                                    "From: <sender@origin.test>\r\n"
                                    "To: <a@dest.test>\r\n"
                                    "Subject: the original\r\n"
                                    "Message-ID: <orig.1@origin.test>\r\n"
                                    "\r\n"
                                    "Body line one.\r\n"
                                    "Body line two.\r\n";
/* What sched.c hands over for RET=HDRS: the header section, no blank line. */
static const char original_hdrs[] = "Received: from client.test by mta.test\r\n"
                                    "From: <sender@origin.test>\r\n"
                                    "To: <a@dest.test>\r\n"
                                    "Subject: the original\r\n"
                                    "Message-ID: <orig.1@origin.test>\r\n";

/* ---- a small reader ---------------------------------------------------- */

struct part {
	const char *head; /* header section (CRLF lines, no blank line) */
	size_t head_len;
	const char *body;
	size_t body_len;
};

struct dsn_doc {
	struct buf raw;
	char *text; /* NUL-terminated copy of raw */
	struct part top;
	char boundary[128];
	struct part parts[8];
	unsigned nparts;
};

static bool match(const char *re, const char *s, size_t n)
{
	regex_t rx;
	cr_assert_eq(regcomp(&rx, re, REG_EXTENDED | REG_NOSUB), 0, "bad regex %s", re);
	char tmp[2048];
	cr_assert_lt(n, sizeof(tmp));
	memcpy(tmp, s, n);
	tmp[n] = '\0';
	bool ok = regexec(&rx, tmp, 0, NULL, 0) == 0;
	regfree(&rx);
	return ok;
}

/* split_part - header section and body of [p, p+n). */
static struct part split_part(const char *p, size_t n)
{
	struct part out = { .head = p };
	const char *end = memmem(p, n, "\r\n\r\n", 4);
	cr_assert_not_null(end, "no blank line after the header section: %.*s", (int)n, p);
	out.head_len = (size_t)(end - p) + 2;
	out.body = end + 4;
	out.body_len = n - (size_t)(out.body - p);
	return out;
}

/* field - the value of the only field called name in head (unfolded into
 * out); fails when it is missing or there twice. */
static const char *field(const char *head, size_t len, const char *name, char *out, size_t outlen)
{
	size_t nl = strlen(name);
	unsigned found = 0;
	const char *p = head, *end = head + len;
	out[0] = '\0';
	while (p < end) {
		const char *eol = memmem(p, (size_t)(end - p), "\r\n", 2);
		cr_assert_not_null(eol, "header line without CRLF");
		if ((size_t)(eol - p) > nl && !strncasecmp(p, name, nl) && p[nl] == ':') {
			found++;
			const char *v = p + nl + 1;
			while (v < eol && *v == ' ')
				v++;
			size_t o = (size_t)snprintf(out, outlen, "%.*s", (int)(eol - v), v);
			/* Folded continuation lines. */
			while (eol + 2 < end && (eol[2] == ' ' || eol[2] == '\t')) {
				const char *c = eol + 2;
				eol = memmem(c, (size_t)(end - c), "\r\n", 2);
				cr_assert_not_null(eol);
				while (c < eol && (*c == ' ' || *c == '\t'))
					c++;
				o += (size_t)snprintf(out + o, outlen - o, " %.*s", (int)(eol - c),
				                      c);
			}
		}
		p = eol + 2;
	}
	cr_assert_eq(found, 1, "field %s appears %u times in:\n%.*s", name, found, (int)len, head);
	return out;
}

static bool has_field(const char *head, size_t len, const char *name)
{
	size_t nl = strlen(name);
	const char *p = head, *end = head + len;
	while (p < end) {
		const char *eol = memmem(p, (size_t)(end - p), "\r\n", 2);
		if (!eol)
			break;
		if ((size_t)(eol - p) > nl && !strncasecmp(p, name, nl) && p[nl] == ':')
			return true;
		p = eol + 2;
	}
	return false;
}

static void doc_parse(struct dsn_doc *d, const struct dsn_info *info)
{
	memset(d, 0, sizeof(*d));
	dsn_build(info, &d->raw);
	size_t n = buf_used(&d->raw);
	d->text = strndup(buf_head(&d->raw), n);
	cr_assert_eq(strlen(d->text), n, "no NUL bytes");
	/* CRLF only: every LF has its CR, every CR its LF. */
	for (size_t i = 0; i < n; i++) {
		if (d->text[i] == '\n')
			cr_assert(i > 0 && d->text[i - 1] == '\r', "bare LF at %zu", i);
		if (d->text[i] == '\r')
			cr_assert(i + 1 < n && d->text[i + 1] == '\n', "bare CR at %zu", i);
	}
	cr_assert(n > 2 && !memcmp(d->text + n - 2, "\r\n", 2), "ends with CRLF");
	d->top = split_part(d->text, n);
	char ct[512];
	field(d->top.head, d->top.head_len, "Content-Type", ct, sizeof(ct));
	cr_assert(match("^multipart/report; report-type=delivery-status; boundary=\"[^\"]+\"$", ct,
	                strlen(ct)),
	          "Content-Type: %s", ct);
	const char *b = strstr(ct, "boundary=\"") + 10;
	snprintf(d->boundary, sizeof(d->boundary), "%.*s", (int)(strchr(b, '"') - b), b);
	/* RFC 2046 5.1.1: at most 70 characters from the bcharsnospace set. */
	cr_assert_leq(strlen(d->boundary), 70);
	cr_assert(match("^[0-9A-Za-z'()+_,./:=?-]+$", d->boundary, strlen(d->boundary)),
	          "boundary %s", d->boundary);
	/* Parts: between "CRLF--boundary CRLF" delimiters, closed by "--boundary--". */
	char delim[160], close[160];
	snprintf(delim, sizeof(delim), "\r\n--%s\r\n", d->boundary);
	snprintf(close, sizeof(close), "\r\n--%s--\r\n", d->boundary);
	const char *body = d->top.body - 2; /* the CRLF before the first delimiter */
	const char *end = d->text + n;
	const char *fin = memmem(body, (size_t)(end - body), close, strlen(close));
	cr_assert_not_null(fin, "no closing delimiter");
	cr_assert_eq(fin + strlen(close), end, "nothing after the closing delimiter");
	const char *p = memmem(body, (size_t)(fin - body), delim, strlen(delim));
	cr_assert_not_null(p, "no first part");
	while (p) {
		const char *start = p + strlen(delim);
		const char *next = memmem(start, (size_t)(fin - start), delim, strlen(delim));
		const char *stop = next ? next : fin;
		cr_assert_lt(d->nparts, 8);
		d->parts[d->nparts++] = split_part(start, (size_t)(stop - start));
		p = next;
	}
}

static void doc_free(struct dsn_doc *d)
{
	buf_free(&d->raw);
	free(d->text);
}

/* part_type - the part's Content-Type (without parameters). */
static const char *part_type(const struct part *p, char *out, size_t n)
{
	field(p->head, p->head_len, "Content-Type", out, n);
	char *semi = strchr(out, ';');
	if (semi)
		*semi = '\0';
	return out;
}

/* status_groups - the delivery-status body as blank-line separated groups. */
static unsigned status_groups(const struct part *p, struct part *g, unsigned max)
{
	unsigned n = 0;
	const char *s = p->body, *end = p->body + p->body_len;
	while (s < end && n < max) {
		const char *e = memmem(s, (size_t)(end - s), "\r\n\r\n", 4);
		const char *stop = e ? e + 2 : end;
		if (stop > s) {
			g[n].head = s;
			g[n].head_len = (size_t)(stop - s);
			n++;
		}
		s = e ? e + 4 : end;
	}
	return n;
}

#define DATE_RE                                                                                    \
	"^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), [0-9]{1,2} (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|" \
	"Dec) [0-9]{4} [0-9]{2}:[0-9]{2}:[0-9]{2} [+-][0-9]{4}$"

static void check_date(const char *head, size_t len, const char *name, const char *want)
{
	char v[128];
	field(head, len, name, v, sizeof(v));
	cr_assert(match(DATE_RE, v, strlen(v)), "%s: %s is not an RFC 5322 date", name, v);
	if (want)
		cr_assert_str_eq(v, want, "%s", name);
}

static struct dsn_rcpt rcpt(const char *addr, const char *status, const char *diag, bool smtp,
                            const char *remote, uint64_t last)
{
	return (struct dsn_rcpt){ .addr = addr,
		                  .addr_len = strlen(addr),
		                  .action = "failed",
		                  .status = status,
		                  .diag = diag,
		                  .diag_smtp = smtp,
		                  .remote = remote,
		                  .last_attempt_ms = last };
}

static struct dsn_info info_for(const struct dsn_rcpt *r, unsigned n, bool full)
{
	return (struct dsn_info){ .reporting_mta = "mta.test.example",
		                  .queue_id = QID,
		                  .arrival_ms = ARRIVAL,
		                  .now_ms = NOW,
		                  .sender = "sender@origin.test",
		                  .sender_len = 18,
		                  .rcpts = r,
		                  .nrcpts = n,
		                  .original = full ? original_full : original_hdrs,
		                  .original_len =
		                      full ? sizeof(original_full) - 1 : sizeof(original_hdrs) - 1,
		                  .full = full };
}

/* ---- tests ------------------------------------------------------------- */

Test(dsn, one_recipient_every_field)
{
	struct dsn_rcpt r = rcpt("a@dest.test", "5.1.1", "550 5.1.1 <a@dest.test>: no such user",
	                         true, "127.0.0.1:2526", NOW - 5000);
	struct dsn_info info = info_for(&r, 1, false);
	struct dsn_doc d;
	doc_parse(&d, &info);
	char v[512], t[128];
	const struct part *top = &d.top;

	/* Top-level header section. */
	check_date(top->head, top->head_len, "Date", "Fri, 15 Jan 2027 08:00:00 +0000");
	cr_assert_str_eq(field(top->head, top->head_len, "From", v, sizeof(v)),
	                 "Mail Delivery System <MAILER-DAEMON@mta.test.example>");
	cr_assert_str_eq(field(top->head, top->head_len, "To", v, sizeof(v)),
	                 "<sender@origin.test>");
	cr_assert_str_eq(field(top->head, top->head_len, "Subject", v, sizeof(v)),
	                 "Undelivered Mail Returned to Sender");
	field(top->head, top->head_len, "Message-ID", v, sizeof(v));
	cr_assert(match("^<[^<>@ ]+@mta\\.test\\.example>$", v, strlen(v)), "Message-ID %s", v);
	cr_assert_not_null(strstr(v, "01a21b1e47130000"), "Message-ID names the queue id: %s", v);
	cr_assert_str_eq(field(top->head, top->head_len, "Auto-Submitted", v, sizeof(v)),
	                 "auto-replied", "RFC 3834: never auto-answered");
	cr_assert_str_eq(field(top->head, top->head_len, "MIME-Version", v, sizeof(v)), "1.0");

	/* Three parts, in the order RFC 6522 sets. */
	cr_assert_eq(d.nparts, 3, "%u parts", d.nparts);
	cr_assert_str_eq(part_type(&d.parts[0], t, sizeof(t)), "text/plain");
	cr_assert_str_eq(part_type(&d.parts[1], t, sizeof(t)), "message/delivery-status");
	cr_assert_str_eq(part_type(&d.parts[2], t, sizeof(t)), "text/rfc822-headers");

	/* The human-readable part names the recipient, the host and the reply. */
	char human[1024];
	snprintf(human, sizeof(human), "%.*s", (int)d.parts[0].body_len, d.parts[0].body);
	cr_assert_not_null(strstr(human, "mta.test.example"));
	cr_assert_not_null(
	    strstr(human, "<a@dest.test>: host 127.0.0.1:2526 said: 550 5.1.1 <a@dest.test>: no "
	                  "such user"),
	    "%s", human);

	/* delivery-status: per-message fields, a blank line, per-recipient. */
	struct part g[8];
	unsigned ng = status_groups(&d.parts[1], g, 8);
	cr_assert_eq(ng, 2, "%u groups in:\n%.*s", ng, (int)d.parts[1].body_len, d.parts[1].body);
	cr_assert_str_eq(field(g[0].head, g[0].head_len, "Reporting-MTA", v, sizeof(v)),
	                 "dns; mta.test.example");
	check_date(g[0].head, g[0].head_len, "Arrival-Date", "Fri, 15 Jan 2027 07:43:20 +0000");
	cr_assert_not(has_field(g[0].head, g[0].head_len, "Original-Envelope-Id"),
	              "no ENVID given");
	cr_assert_not(has_field(g[0].head, g[0].head_len, "Final-Recipient"),
	              "recipient fields are in their own group");
	cr_assert_str_eq(field(g[1].head, g[1].head_len, "Final-Recipient", v, sizeof(v)),
	                 "rfc822; a@dest.test");
	cr_assert_not(has_field(g[1].head, g[1].head_len, "Original-Recipient"), "no ORCPT given");
	cr_assert_str_eq(field(g[1].head, g[1].head_len, "Action", v, sizeof(v)), "failed");
	field(g[1].head, g[1].head_len, "Status", v, sizeof(v));
	cr_assert(match("^[245]\\.[0-9]{1,3}\\.[0-9]{1,3}$", v, strlen(v)), "Status %s", v);
	cr_assert_str_eq(v, "5.1.1");
	cr_assert_str_eq(field(g[1].head, g[1].head_len, "Remote-MTA", v, sizeof(v)),
	                 "dns; [127.0.0.1]");
	cr_assert_str_eq(field(g[1].head, g[1].head_len, "Diagnostic-Code", v, sizeof(v)),
	                 "smtp; 550 5.1.1 <a@dest.test>: no such user");
	check_date(g[1].head, g[1].head_len, "Last-Attempt-Date",
	           "Fri, 15 Jan 2027 07:59:55 +0000");

	/* The original's header section, exactly. */
	cr_assert_eq(d.parts[2].body_len, sizeof(original_hdrs) - 1, "%zu bytes: %.*s",
	             d.parts[2].body_len, (int)d.parts[2].body_len, d.parts[2].body);
	cr_assert(!memcmp(d.parts[2].body, original_hdrs, sizeof(original_hdrs) - 1));
	cr_assert_null(strstr(d.text, "Body line one."), "headers only without RET=FULL");
	doc_free(&d);
}

Test(dsn, several_recipients)
{
	struct dsn_rcpt r[3] = {
		rcpt("a@dest.test", "5.1.1", "550 5.1.1 no such user", true, "mx.dest.test:25",
		     NOW),
		rcpt("b@dest.test", "5.0.0", "554 rejected", true, "mx.dest.test:25", NOW - 1000),
		rcpt("c@other.test", "5.1.2", "other.test: no such domain", false, NULL, 0),
	};
	r[1].orcpt = "rfc822;B@Dest.Test";
	r[1].orcpt_len = strlen(r[1].orcpt);
	struct dsn_info info = info_for(r, 3, false);
	info.envid = "env-42";
	info.envid_len = 6;
	struct dsn_doc d;
	doc_parse(&d, &info);
	char v[512];
	struct part g[8];
	unsigned ng = status_groups(&d.parts[1], g, 8);
	cr_assert_eq(ng, 4, "one per-message group and three recipients, got %u", ng);
	cr_assert_str_eq(field(g[0].head, g[0].head_len, "Original-Envelope-Id", v, sizeof(v)),
	                 "env-42");
	static const char *const want_rcpt[] = { "rfc822; a@dest.test", "rfc822; b@dest.test",
		                                 "rfc822; c@other.test" };
	static const char *const want_status[] = { "5.1.1", "5.0.0", "5.1.2" };
	for (unsigned i = 0; i < 3; i++) {
		const struct part *x = &g[i + 1];
		cr_assert_str_eq(field(x->head, x->head_len, "Final-Recipient", v, sizeof(v)),
		                 want_rcpt[i]);
		cr_assert_str_eq(field(x->head, x->head_len, "Action", v, sizeof(v)), "failed");
		cr_assert_str_eq(field(x->head, x->head_len, "Status", v, sizeof(v)),
		                 want_status[i]);
		field(x->head, x->head_len, "Diagnostic-Code", v, sizeof(v));
		cr_assert(match("^(smtp|X-ringpost); .+$", v, strlen(v)), "Diagnostic-Code %s", v);
	}
	cr_assert_str_eq(field(g[2].head, g[2].head_len, "Original-Recipient", v, sizeof(v)),
	                 "rfc822;B@Dest.Test");
	cr_assert_not(has_field(g[1].head, g[1].head_len, "Original-Recipient"));
	/* Without a reply: our own diagnostic type, no Remote-MTA, no attempt date. */
	cr_assert_str_eq(field(g[3].head, g[3].head_len, "Diagnostic-Code", v, sizeof(v)),
	                 "X-ringpost; other.test: no such domain");
	cr_assert_not(has_field(g[3].head, g[3].head_len, "Remote-MTA"));
	cr_assert_not(has_field(g[3].head, g[3].head_len, "Last-Attempt-Date"));
	check_date(g[2].head, g[2].head_len, "Last-Attempt-Date",
	           "Fri, 15 Jan 2027 07:59:59 +0000");
	/* Each recipient in the human-readable part too. */
	char human[2048];
	snprintf(human, sizeof(human), "%.*s", (int)d.parts[0].body_len, d.parts[0].body);
	cr_assert_not_null(strstr(human, "<a@dest.test>: host mx.dest.test:25 said: 550 5.1.1"));
	cr_assert_not_null(strstr(human, "<b@dest.test>: host mx.dest.test:25 said: 554 rejected"));
	cr_assert_not_null(strstr(human, "<c@other.test>: other.test: no such domain"), "%s",
	                   human);
	doc_free(&d);
}

Test(dsn, ret_full_attaches_the_whole_message)
{
	struct dsn_rcpt r = rcpt("a@dest.test", "5.7.1", "554 5.7.1 spam", true, "mx:25", NOW);
	struct dsn_info info = info_for(&r, 1, true);
	struct dsn_doc d;
	doc_parse(&d, &info);
	char t[128];
	cr_assert_eq(d.nparts, 3);
	cr_assert_str_eq(part_type(&d.parts[2], t, sizeof(t)), "message/rfc822");
	cr_assert_eq(d.parts[2].body_len, sizeof(original_full) - 1, "%.*s",
	             (int)d.parts[2].body_len, d.parts[2].body);
	cr_assert(!memcmp(d.parts[2].body, original_full, sizeof(original_full) - 1));
	doc_free(&d);
	/* An original without its last line end still closes cleanly. */
	info.original_len -= 2;
	doc_parse(&d, &info);
	cr_assert_eq(d.parts[2].body_len, sizeof(original_full) - 1);
	doc_free(&d);
}

Test(dsn, control_characters_never_reach_a_field)
{
	/* A hostile reply or address must not start a new header line. */
	struct dsn_rcpt r = rcpt("a\r\nBcc: x@evil.test@dest.test", "5.0.0",
	                         "550 bad\r\nX-Injected: yes\tand\x7f", true, "mx\n:25", NOW);
	struct dsn_info info = info_for(&r, 1, false);
	info.sender = "s\r\nX-Evil: 1@origin.test";
	info.sender_len = strlen(info.sender);
	info.envid = "e\nv";
	info.envid_len = 3;
	struct dsn_doc d;
	doc_parse(&d, &info);
	cr_assert_null(strstr(d.text, "\r\nX-Injected"));
	cr_assert_null(strstr(d.text, "\r\nBcc:"));
	cr_assert_null(strstr(d.text, "\r\nX-Evil"));
	cr_assert_null(strchr(d.text, '\x7f'));
	char v[512];
	struct part g[8];
	cr_assert_eq(status_groups(&d.parts[1], g, 8), 2);
	cr_assert_str_eq(field(g[1].head, g[1].head_len, "Diagnostic-Code", v, sizeof(v)),
	                 "smtp; 550 bad  X-Injected: yes and ");
	cr_assert_str_eq(field(g[0].head, g[0].head_len, "Original-Envelope-Id", v, sizeof(v)),
	                 "e v");
	doc_free(&d);
}

Test(dsn, delayed_notice)
{
	struct dsn_rcpt r = rcpt("a@dest.test", "4.4.1", "connect refused", false, NULL, NOW);
	r.action = "delayed";
	struct dsn_info info = info_for(&r, 1, false);
	struct dsn_doc d;
	doc_parse(&d, &info);
	char v[256];
	cr_assert_str_eq(field(d.top.head, d.top.head_len, "Subject", v, sizeof(v)),
	                 "Delayed Mail (still being retried)");
	struct part g[4];
	cr_assert_eq(status_groups(&d.parts[1], g, 4), 2);
	cr_assert_str_eq(field(g[1].head, g[1].head_len, "Action", v, sizeof(v)), "delayed");
	doc_free(&d);
}

Test(dsn, distinct_messages_get_distinct_boundaries_and_ids)
{
	struct dsn_rcpt r = rcpt("a@dest.test", "5.0.0", "550 no", true, NULL, NOW);
	struct dsn_info a = info_for(&r, 1, false), b = a;
	b.queue_id = QID + 1;
	struct dsn_doc da, db;
	doc_parse(&da, &a);
	doc_parse(&db, &b);
	cr_assert_str_neq(da.boundary, db.boundary);
	char va[256], vb[256];
	field(da.top.head, da.top.head_len, "Message-ID", va, sizeof(va));
	field(db.top.head, db.top.head_len, "Message-ID", vb, sizeof(vb));
	cr_assert_str_neq(va, vb);
	/* The boundary never occurs inside the parts. */
	for (unsigned i = 0; i < da.nparts; i++)
		cr_assert_null(memmem(da.parts[i].body, da.parts[i].body_len, da.boundary,
		                      strlen(da.boundary)));
	doc_free(&da);
	doc_free(&db);
}

Test(dsn, remote_mta_is_a_name_or_an_address_literal_without_port)
{
	static const struct {
		const char *remote, *want;
	} cases[] = {
		{ "mx1.dest.test[192.0.2.7]:25", "dns; mx1.dest.test" },
		{ "192.0.2.7:2525", "dns; [192.0.2.7]" },
		{ "[2001:db8::1]:25", "dns; [2001:db8::1]" },
		{ "[::1]:2526", "dns; [::1]" },
		{ "mx.dest.test[2001:db8::1]:25", "dns; mx.dest.test" },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct dsn_rcpt r =
		    rcpt("a@dest.test", "5.1.1", "550 no", true, cases[i].remote, NOW);
		struct dsn_info info = info_for(&r, 1, false);
		struct dsn_doc d;
		doc_parse(&d, &info);
		struct part g[4];
		cr_assert_eq(status_groups(&d.parts[1], g, 4), 2);
		char v[256];
		cr_assert_str_eq(field(g[1].head, g[1].head_len, "Remote-MTA", v, sizeof(v)),
		                 cases[i].want, "from %s", cases[i].remote);
		doc_free(&d);
	}
}

/* The boundary comes from the CSPRNG: the same input twice (same queue id,
 * same time) gives two boundaries, neither derivable from the queue id or
 * the time; and a returned message that quotes the old scheme's boundary
 * (which an attacker could compute) cannot close a part early. */
Test(dsn, boundary_is_random_not_derived_from_the_id)
{
	char old[64], id[17];
	rp_id_format(QID, id);
	snprintf(old, sizeof(old), "=_rp_dsn_%s_%llx", id, (unsigned long long)(NOW * 2654435761u));
	char text[512];
	snprintf(text, sizeof(text),
	         "Subject: forged\r\n\r\n--%s\r\nContent-Type: message/delivery-status\r\n\r\n"
	         "Final-Recipient: rfc822; victim@x.test\r\nAction: delivered\r\n\r\n--%s--\r\n",
	         old, old);
	struct dsn_rcpt r = rcpt("a@dest.test", "5.0.0", "550 no", true, NULL, NOW);
	struct dsn_info a = info_for(&r, 1, true);
	a.original = text;
	a.original_len = strlen(text);
	struct dsn_doc da, db;
	doc_parse(&da, &a);
	doc_parse(&db, &a);
	cr_assert_str_neq(da.boundary, db.boundary, "the same input gave %s twice", da.boundary);
	cr_assert_str_neq(da.boundary, old);
	cr_assert_null(strstr(da.boundary, id), "the queue id is in %s", da.boundary);
	cr_assert_geq(strlen(da.boundary), 32 + 9, "%s", da.boundary);
	cr_assert_eq(da.nparts, 3, "%u parts: the quoted boundary split the DSN", da.nparts);
	doc_free(&da);
	doc_free(&db);
}
