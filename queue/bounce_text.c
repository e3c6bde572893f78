/* bounce_text.c - what a bounce's human-readable text says (see bounce_impl.h).
 *
 * The text is read only up to the first line that introduces a copy of
 * the original ("------ This is a copy of the message", "--- Below this
 * line is a copy of the message", "Original message headers:"): what the
 * original said is never the report. Then, in order:
 *   Exim      "...address(es) failed:" then "  addr" lines with indented
 *             details ("    host mx [ip]", "    550 5.1.1 ...");
 *   Postfix   "This is the mail system at host" then "<addr>: text" with
 *             indented continuation lines ("host mx[ip] said: 550 ...
 *             (in reply to RCPT TO command)");
 *   qmail     "Hi. This is the qmail-send program" then "<addr>:" blocks
 *             ("Remote host said: 550 ...", "(#5.1.2)");
 *   a quoted SMTP reply: "550 5.1.1 ..." or "550-5.1.1 ..." continued, at a
 *             line start or after ':' or a quote ("said: 550", "returned
 *             '550"); without an enhanced code the line must read like a
 *             reply ("550 Requested action not taken: mailbox
 *             unavailable", not "550 people came");
 *   an RFC 3463 status: "Status: 5.2.2", or "... 5.1.1 ..." anywhere.
 * The last two need a sign of a failed delivery: a failure phrase in the
 * text, or a MAILER-DAEMON sender or a bounce subject; and are not tried
 * on an out-of-office reply ("Automatic reply: ...") from anyone else. Work is linear in
 * the text: phrase searches are over fixed lists, and at most REPLY_TRIES
 * reply candidates are examined.
 */
#include <stdint.h>
#include <string.h>

#include "base/util.h"
#include "bounce_impl.h"

#define REPLY_TRIES 256 /* candidate reply codes examined in one text */
#define JOIN_MAX    1024

static inline bool is_blank(char c)
{
	return c == ' ' || c == '\t';
}

static inline bool is_digit(char c)
{
	return c >= '0' && c <= '9';
}

static inline bool is_alnum(char c)
{
	return is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static inline bool lc_is(char c, char lower)
{
	return c == lower || c == lower - 32;
}

static struct bspan span_from(const char *a, const char *b)
{
	return (struct bspan){ a, (size_t)(b - a) };
}

/* indent - columns of leading blanks (a tab counts 8). */
static size_t indent(struct bspan line)
{
	size_t col = 0;
	for (size_t i = 0; i < line.n && is_blank(line.p[i]); i++)
		col += line.p[i] == '\t' ? 8 : 1;
	return col;
}

static bool all_blank(struct bspan line)
{
	return btrim(line).n == 0;
}

/* ---- phrase lists ------------------------------------------------------- */

/* Lines that introduce a copy of the original message. */
static const char *const cut_markers[] = {
	"this is a copy of the message",
	"below this line is a copy of the message",
	"original message follows",
	"original message headers",
	"-----original message-----",
	"copy of the original message",
	NULL,
};

/* The text is about a delivery that failed or is late. */
static const char *const failure_phrases[] = {
	"could not be delivered",
	"couldn't be delivered",
	"could not deliver",
	"wasn't delivered",
	"was not delivered",
	"not been delivered",
	"delivery failed",
	"delivery has failed",
	"delivery failure",
	"delivery to the following recipient",
	"failed permanently",
	"permanent error",
	"permanent failure",
	"permanent fatal error",
	"undeliverable",
	"undelivered",
	"address not found",
	"returned to sender",
	"user unknown",
	"unknown user",
	"does not exist",
	"no such user",
	"mailbox unavailable",
	"recipient not found",
	"unable to deliver",
	"delivery incomplete",
	"delivery delayed",
	"temporary failure",
	"delivery status notification",
	NULL,
};

/* The sender gave up (a 4xx in such a text is still a failure). */
static const char *const final_phrases[] = {
	"failed permanently",
	"permanent error",
	"permanent failure",
	"gave up",
	"giving up",
	"will not be retried",
	"message not delivered",
	"address(es) failed",
	"has been returned",
	NULL,
};

/* The sender goes on trying. */
static const char *const delay_phrases[] = {
	"this is a warning only",
	"will be retried",
	"will be tried again",
	"will continue",
	"has not yet been delivered",
	"not been delivered yet",
	"could not be delivered yet",
	"no action is required",
	"still trying",
	"delivery delayed",
	NULL,
};

/* Words that make "550 ..." without an enhanced code read like a reply. */
static const char *const reply_words[] = {
	"mailbox",
	"user",
	"recipient",
	"address",
	"unknown",
	"reject",
	"denied",
	"unavailabl",
	"not found",
	"exist",
	"no such",
	"refused",
	"block",
	"invalid",
	"relay",
	"spam",
	"policy",
	"quota",
	"full",
	"disabled",
	"try again",
	"temporar",
	"service",
	"access",
	"later",
	"limit",
	"too many",
	"storage",
	"requested action",
	"not accepted",
	"allowed",
	"unrouteable",
	"error",
	"failed",
	NULL,
};

/* ---- addresses ---------------------------------------------------------- */

static bool local_char(unsigned char c)
{
	return is_alnum((char)c) || c >= 0x80 || (c && strchr(".!#$%&*+-/=?^_`{|}~", c));
}

static bool domain_char(unsigned char c)
{
	return is_alnum((char)c) || c == '.' || c == '-' || c >= 0x80;
}

/* next_addr - the next address-like token ("local@domain.tld") in
 * p[*off..n); moves *off past it. Linear: a local part never runs back
 * over an '@'. Help addresses (postmaster, mailer-daemon) are skipped. */
static bool next_addr(const char *p, size_t n, size_t *off, struct bspan *addr)
{
	while (*off < n) {
		const char *at = memchr(p + *off, '@', n - *off);
		if (!at)
			break;
		size_t a = (size_t)(at - p), l = a, r = a + 1;
		while (l > *off && local_char((unsigned char)p[l - 1]))
			l--;
		while (l < a && (p[l] == '.' || p[l] == '\''))
			l++;
		while (r < n && domain_char((unsigned char)p[r]))
			r++;
		while (r > a + 1 && (p[r - 1] == '.' || p[r - 1] == '-'))
			r--;
		*off = r > a + 1 ? r : a + 1;
		const char *dot = memchr(at + 1, '.', r - a - 1);
		if (l == a || !dot || dot == at + 1)
			continue;
		struct bspan local = { p + l, a - l };
		if (bspan_is(local, "postmaster") || bspan_is(local, "mailer-daemon"))
			continue;
		*addr = (struct bspan){ p + l, r - l };
		return true;
	}
	*off = n;
	return false;
}

static bool first_addr(struct bspan s, struct bspan *addr)
{
	size_t off = 0;
	return next_addr(s.p, s.n, &off, addr);
}

/* An address cursor: the last address before a position that only moves
 * forward, so that naming many replies reads the text once. */
struct addr_cursor {
	size_t off;        /* scanned up to here */
	struct bspan last; /* the last address seen */
	bool found;
};

/* last_addr_before - the last address in p that ends before p + end
 * (end never less than at the previous call with c). */
static bool last_addr_before(const char *p, size_t end, struct addr_cursor *c, struct bspan *addr)
{
	struct bspan a;
	while (c->off < end && next_addr(p, end, &c->off, &a)) {
		c->last = a;
		c->found = true;
	}
	if (c->found)
		*addr = c->last;
	return c->found;
}

/* ---- SMTP replies quoted in text ---------------------------------------- */

struct breply {
	struct bspan span; /* from the code to the end of its last line */
};

/* reply_context - the code at line.p[i] stands where a reply would: alone
 * at the line start (after blanks), or after ':', ';', a quote, '(',
 * '<', '>' or '['. */
static bool reply_context(struct bspan line, size_t i)
{
	size_t k = i;
	while (k > 0 && is_blank(line.p[k - 1]))
		k--;
	return k == 0 || (line.p[k - 1] && strchr(":;'\"(<>[", line.p[k - 1]));
}

/* code_at - s[0..n) starts with a 4xx/5xx code and ' ' or '-' (or, when
 * colon, ": " as Yahoo writes "554: delivery error: ..."). */
static bool code_at(const char *s, size_t n, bool colon)
{
	if (n < 4 || (s[0] != '4' && s[0] != '5') || s[1] < '0' || s[1] > '5' || !is_digit(s[2]))
		return false;
	return s[3] == ' ' || s[3] == '-' || (colon && s[3] == ':' && n > 4 && s[4] == ' ');
}

/* reply_more - the line continues a multi-line reply with code c: its
 * separator ('-' or ' '), or 0. Leading blanks and "<<<" are skipped. */
static char reply_more(struct bspan line, const char *c)
{
	size_t i = 0;
	while (i < line.n && (is_blank(line.p[i]) || line.p[i] == '<' || line.p[i] == '>'))
		i++;
	if (!code_at(line.p + i, line.n - i, false) || memcmp(line.p + i, c, 3))
		return 0;
	return line.p[i + 3];
}

/* reply_extend - take in the continuation lines of a reply whose first
 * line (at code c, ending at line_end) had separator sep. */
static void reply_extend(const char *p, size_t n, size_t *off, const char *c, char sep,
                         struct breply *r, struct bspan line)
{
	const char *end = line.p + line.n;
	while (sep == '-') {
		size_t o = *off;
		if (!bline_next(p, n, &o, &line) || !(sep = reply_more(line, c)))
			break;
		end = line.p + line.n;
		*off = o;
	}
	r->span = span_from(c, end);
}

/* reply_strong - the reply at c (in a line ending at e) has an enhanced
 * code of its class, or reads like a reply. */
static bool reply_strong(const char *c, const char *e)
{
	const char *rest = c + 4;
	size_t rn = (size_t)(e - rest);
	size_t el = benh_scan(rest, rn, false);
	if (el && rest[0] == c[0] && (el == rn || !is_alnum(rest[el])))
		return true;
	return bci_any(rest, RP_MIN(rn, 160), reply_words) != NULL;
}

/* unwrap - without the closing quote or bracket of what the reply at
 * line.p[i] is quoted in: "returned '550 ... lookup'", "(reason: 550 ...
 * unknown)", "<mx #5.1.1 smtp;550 5.1.1 User unknown>". Looks at most
 * 64 bytes back. */
static struct bspan unwrap(struct bspan line, size_t i, struct bspan s)
{
	static const char pairs[][2] = { { '(', ')' }, { '<', '>' }, { '[', ']' } };
	char q = i ? line.p[i - 1] : 0;
	if ((q == '\'' || q == '"') && s.n > 4 && s.p[s.n - 1] == q)
		return btrim((struct bspan){ s.p, s.n - 1 });
	for (size_t k = 0; k < RP_ARRAY_LEN(pairs) && s.n > 4; k++) {
		char open = pairs[k][0], close = pairs[k][1];
		if (s.p[s.n - 1] != close)
			continue;
		int before = 0, inside = 0;
		for (size_t j = i > 64 ? i - 64 : 0; j < i; j++)
			before += line.p[j] == open ? 1 : line.p[j] == close ? -1 : 0;
		for (size_t j = 0; j < s.n; j++)
			inside += s.p[j] == open ? 1 : s.p[j] == close ? -1 : 0;
		if (before > 0 && inside < 0)
			return btrim((struct bspan){ s.p, s.n - 1 });
	}
	return s;
}

/* find_reply - the first reply in p[*off..n); moves *off past it. */
static bool find_reply(const char *p, size_t n, size_t *off, unsigned *tries, struct breply *r)
{
	struct bspan line;
	while (bline_next(p, n, off, &line)) {
		for (size_t i = 0; i + 4 <= line.n; i++) {
			const char *c = line.p + i;
			if (!code_at(c, line.n - i, true) || (i && is_alnum(c[-1])) ||
			    !reply_context(line, i))
				continue;
			if (++*tries > REPLY_TRIES)
				return false;
			if (!reply_strong(c, line.p + line.n))
				continue;
			reply_extend(p, n, off, c, c[3], r, line);
			r->span = unwrap(line, i, btrim(r->span));
			return true;
		}
	}
	return false;
}

/* ---- recipients from text ----------------------------------------------- */

struct btext {
	struct bspan t; /* the text up to the copy of the original */
	const struct btop *top;
	bool failure; /* a failure phrase */
	bool final;   /* the sender gave up */
	bool delay;   /* the sender goes on trying */
	struct bounce_report *out;
};

/* strip_in_reply - Postfix's " (in reply to RCPT TO command)" tail. */
static struct bspan strip_in_reply(struct bspan s)
{
	const char *at = bci_find(s.p, s.n, "(in reply to ");
	if (at)
		s.n = (size_t)(at - s.p);
	return btrim(s);
}

/* emit - one recipient: kind (NONE: from the reply class), address,
 * diagnostic (a reply is recognised at its start), status when the text
 * gave one, remote host. */
static void emit(struct btext *x, enum bounce_kind kind, struct bspan addr, struct bspan diag,
                 const char *status, size_t status_len, struct bspan remote)
{
	struct bounce_rcpt r;
	memset(&r, 0, sizeof(r));
	r.kind = kind;
	if (addr.n)
		bout_addr(r.final_rcpt, sizeof(r.final_rcpt), addr.p, addr.n);
	diag = strip_in_reply(diag);
	bout_diag(r.diag, sizeof(r.diag), diag.p, diag.n, &r.smtp_code);
	if (status && status_len < sizeof(r.status)) {
		memcpy(r.status, status, status_len);
		r.status[status_len] = '\0';
	}
	if (remote.n)
		bout_text(r.remote_mta, sizeof(r.remote_mta), remote.p, remote.n);
	/* A 4xx in a text that says it gave up is still a failure. */
	if (r.kind == BOUNCE_NONE && r.smtp_code / 100 == 4 && x->final && !x->delay)
		r.kind = BOUNCE_FAILED;
	brcpt_commit(x->out, &r);
}

/* engine_kind - FAILED, or DELAYED when the text says it goes on trying. */
static enum bounce_kind engine_kind(const struct btext *x)
{
	return x->delay ? BOUNCE_DELAYED : BOUNCE_FAILED;
}

/* host_after - the exchanger's name in s: "host mx.example[192.0.2.1]",
 * "host mx.example [192.0.2.1]", "connect to mx.example[192.0.2.1]:25";
 * an empty span when there is none. */
static struct bspan host_after(struct bspan s)
{
	static const char *const intro[] = { "host ", "connect to ", NULL };
	const char *end = s.p + s.n;
	for (const char *from = s.p; from < end;) {
		const char *h = bci_any(from, (size_t)(end - from), intro);
		if (!h)
			break;
		const char *b = h + (lc_is(*h, 'h') ? 5 : 11), *e = b;
		from = b;
		if (h > s.p && is_alnum(h[-1]))
			continue;
		while (e < end && (is_alnum(*e) || *e == '.' || *e == '-' || *e == '_'))
			e++;
		const char *k = e < end && *e == ' ' ? e + 1 : e;
		if (e > b && k < end && *k == '[')
			return span_from(b, e);
	}
	return (struct bspan){ "", 0 };
}

/* status_in - the first RFC 3463 code in s that stands alone (strict
 * syntax); its start in *at. */
static size_t status_in(struct bspan s, const char **at)
{
	for (size_t i = 0; i + 5 <= s.n; i++) {
		char c = s.p[i];
		if ((c != '4' && c != '5') || s.p[i + 1] != '.')
			continue;
		if (i && (is_alnum(s.p[i - 1]) || (s.p[i - 1] && strchr(".-/_", s.p[i - 1]))))
			continue;
		size_t el = benh_scan(s.p + i, s.n - i, true);
		if (el && (i + el == s.n || !is_alnum(s.p[i + el]))) {
			*at = s.p + i;
			return el;
		}
	}
	return 0;
}

/* ---- Exim --------------------------------------------------------------- */

/* exim_block - one "  addr" line and its detail lines. */
static void exim_block(struct btext *x, enum bounce_kind kind, struct bspan head,
                       struct bspan details)
{
	struct bspan addr = { "", 0 }, diag = details, remote = host_after(details);
	if (!first_addr(head, &addr))
		first_addr(details, &addr);
	if (details.p == head.p)
		diag = (struct bspan){ "", 0 }; /* an address and no details */
	size_t off = 0;
	unsigned tries = 0;
	struct breply rep;
	if (find_reply(details.p, details.n, &off, &tries, &rep))
		diag = rep.span;
	emit(x, kind, addr, diag, NULL, 0, remote);
}

static bool exim_parse(struct btext *x)
{
	struct bspan t = x->t;
	if (!bci_find(t.p, t.n, "created automatically by mail delivery software"))
		return false;
	enum bounce_kind kind = BOUNCE_FAILED;
	const char *list = bci_find(t.p, t.n, "address(es) failed:");
	if (!list) {
		static const char *const delayed[] = { "not yet been delivered is:",
			                               "not yet been delivered are:", NULL };
		list = bci_any(t.p, t.n, delayed);
		kind = BOUNCE_DELAYED;
	}
	if (!list)
		return false;
	size_t off = (size_t)(list - t.p), before = x->out->nrcpt + x->out->rcpt_dropped;
	struct bspan line, head = { NULL, 0 };
	const char *d0 = NULL, *d1 = NULL; /* the current block's details */
	bline_next(t.p, t.n, &off, &line); /* the marker's own line */
	while (bline_next(t.p, t.n, &off, &line)) {
		if (all_blank(line))
			continue;
		size_t col = indent(line);
		if (col == 0)
			break; /* the list is over */
		if (col < 4 || !head.p) {
			if (head.p)
				exim_block(x, kind, head, d0 ? span_from(d0, d1) : head);
			head = line;
			d0 = d1 = NULL;
			continue;
		}
		d0 = d0 ? d0 : line.p;
		d1 = line.p + line.n;
	}
	if (head.p)
		exim_block(x, kind, head, d0 ? span_from(d0, d1) : head);
	return x->out->nrcpt + x->out->rcpt_dropped > before;
}

/* ---- Postfix ------------------------------------------------------------ */

/* join_block - first (the rest of a line), then the indented lines after
 * it (moving *off past them), joined by single spaces into buf. */
static struct bspan join_block(struct bspan t, size_t *off, struct bspan first, char *buf,
                               size_t size)
{
	size_t o = 0;
	struct bspan line = first;
	for (bool more = true; more;) {
		struct bspan s = btrim(line);
		if (o && o < size)
			buf[o++] = ' ';
		size_t k = RP_MIN(s.n, size - o);
		memcpy(buf + o, s.p, k);
		o += k;
		size_t next = *off;
		more = bline_next(t.p, t.n, &next, &line) && indent(line) > 0 && !all_blank(line);
		if (more)
			*off = next;
	}
	return (struct bspan){ buf, o };
}

/* postfix_block - "<addr>: text" (or "<addr> (expanded from <x>): text"). */
static void postfix_block(struct btext *x, struct bspan addr, struct bspan text)
{
	struct bspan remote = { "", 0 }, diag = text;
	const char *said = bci_find(text.p, text.n, " said: ");
	if (rp_strcaseprefix(text.p, text.n, "host ")) {
		remote = host_after(text);
		if (said)
			diag = span_from(said + 7, text.p + text.n);
	}
	emit(x, engine_kind(x), addr, diag, NULL, 0, remote);
}

static bool postfix_parse(struct btext *x)
{
	struct bspan t = x->t, line;
	if (!bci_find(t.p, t.n, "this is the mail system at host"))
		return false;
	size_t off = 0, before = x->out->nrcpt + x->out->rcpt_dropped;
	char buf[JOIN_MAX];
	while (bline_next(t.p, t.n, &off, &line)) {
		if (!line.n || line.p[0] != '<')
			continue;
		const char *gt = memchr(line.p, '>', line.n);
		const char *colon = gt ? memchr(gt, ':', line.n - (size_t)(gt - line.p)) : NULL;
		if (!colon || (colon != gt + 1 && !bci_find(gt, (size_t)(colon - gt), "(expanded")))
			continue;
		struct bspan addr = span_from(line.p + 1, gt);
		struct bspan rest = span_from(colon + 1, line.p + line.n);
		struct bspan text = join_block(t, &off, rest, buf, sizeof(buf));
		postfix_block(x, addr, text);
	}
	return x->out->nrcpt + x->out->rcpt_dropped > before;
}

/* ---- qmail -------------------------------------------------------------- */

static void qmail_block(struct btext *x, struct bspan addr, struct bspan block)
{
	struct bspan diag = btrim(block), remote = { "", 0 };
	const char *status = NULL;
	size_t sl = 0, off = 0;
	unsigned tries = 0;
	struct breply rep;
	if (find_reply(block.p, block.n, &off, &tries, &rep)) {
		diag = rep.span;
	} else {
		const char *hash = bci_find(block.p, block.n, "(#");
		if (hash)
			sl = status_in(span_from(hash + 2, block.p + block.n), &status);
	}
	const char *g = bci_find(block.p, block.n, "giving up on ");
	if (g) {
		const char *b = g + 13, *e = b, *end = block.p + block.n;
		while (e < end && !is_blank(*e) && *e != '\r' && *e != '\n')
			e++;
		while (e > b && e[-1] == '.')
			e--;
		remote = span_from(b, e);
	}
	emit(x, BOUNCE_FAILED, addr, diag, status, sl, remote);
}

static bool qmail_parse(struct btext *x)
{
	struct bspan t = x->t, line;
	if (!bci_find(t.p, t.n, "this is the qmail-send program"))
		return false;
	size_t off = 0, before = x->out->nrcpt + x->out->rcpt_dropped;
	while (bline_next(t.p, t.n, &off, &line)) {
		struct bspan s = btrim(line);
		if (!line.n || line.p[0] != '<' || s.n < 4 || s.p[s.n - 1] != ':' ||
		    s.p[s.n - 2] != '>')
			continue;
		struct bspan addr = { s.p + 1, s.n - 3 };
		const char *b = t.p + off, *e = b;
		while (bline_next(t.p, t.n, &off, &line) && !all_blank(line))
			e = line.p + line.n;
		qmail_block(x, addr, span_from(b, e));
	}
	return x->out->nrcpt + x->out->rcpt_dropped > before;
}

/* ---- anything else ------------------------------------------------------ */

static bool already_named(const struct bounce_report *out, struct bspan addr)
{
	char a[256];
	bout_addr(a, sizeof(a), addr.p, addr.n);
	for (unsigned i = 0; i < out->nrcpt; i++)
		if (bspan_is((struct bspan){ a, strlen(a) }, out->rcpt[i].final_rcpt))
			return true;
	return false;
}

/* replies_parse - every quoted reply, each with the address it names,
 * else X-Failed-Recipients (first one only), else the nearest address
 * before it. Replies naming an address already seen (a transcript quotes
 * the same reply twice) or none at all after the first are skipped. */
static bool replies_parse(struct btext *x)
{
	struct bspan t = x->t;
	bool hint = x->failure || x->top->from_daemon || x->top->subject_bounce;
	size_t off = 0;
	unsigned tries = 0;
	struct breply rep;
	struct addr_cursor cur = { 0 };
	if (!hint)
		return false;
	while (find_reply(t.p, t.n, &off, &tries, &rep)) {
		struct bspan addr = { "", 0 };
		bool named = first_addr(rep.span, &addr) ||
		             (!x->out->nrcpt && first_addr(x->top->failed, &addr)) ||
		             last_addr_before(t.p, (size_t)(rep.span.p - t.p), &cur, &addr);
		if (x->out->nrcpt && (!named || already_named(x->out, addr)))
			continue;
		emit(x, BOUNCE_NONE, addr, rep.span, NULL, 0, (struct bspan){ "", 0 });
	}
	if (x->out->nrcpt)
		x->out->format = BOUNCE_FMT_TEXT_REPLY;
	return x->out->nrcpt > 0;
}

/* status_parse - "Status: 5.2.2" (a label first), else the first code. */
static bool status_parse(struct btext *x)
{
	struct bspan t = x->t;
	const char *at = NULL;
	size_t el = 0;
	for (const char *lab = t.p; (lab = bci_find(lab, (size_t)(t.p + t.n - lab), "status:"));) {
		const char *v = lab + 7, *end = t.p + t.n;
		while (v < end && is_blank(*v))
			v++;
		el = status_in(span_from(v, RP_MIN(v + 16, end)), &at);
		if (el && at == v)
			break;
		el = 0;
		lab = v;
	}
	bool labelled = el != 0;
	if (!el)
		el = status_in(t, &at);
	if (!el || !(x->failure || (labelled && (x->top->from_daemon || x->top->subject_bounce))))
		return false;
	struct bspan addr = { "", 0 };
	struct addr_cursor cur = { 0 };
	if (!first_addr(x->top->failed, &addr) &&
	    !last_addr_before(t.p, (size_t)(at - t.p), &cur, &addr))
		first_addr(span_from(at, t.p + t.n), &addr);
	/* The diagnostic: the line the code is on. */
	const char *b = at, *e = at, *end = t.p + t.n;
	while (b > t.p && b[-1] != '\n')
		b--;
	while (e < end && *e != '\n')
		e++;
	enum bounce_kind kind =
	    at[0] == '5' || (x->final && !x->delay) ? BOUNCE_FAILED : BOUNCE_DELAYED;
	emit(x, kind, addr, span_from(b, e), at, el, (struct bspan){ "", 0 });
	x->out->format = BOUNCE_FMT_TEXT_STATUS;
	return true;
}

/* cut_at - where the copy of the original starts in t (its line), or t.n. */
static size_t cut_at(struct bspan t)
{
	const char *m = bci_any(t.p, t.n, cut_markers);
	if (!m)
		return t.n;
	while (m > t.p && m[-1] != '\n')
		m--;
	return (size_t)(m - t.p);
}

bool btext_parse(struct bspan text, const struct btop *top, struct bounce_report *out)
{
	/* An out-of-office reply may quote anything; only an MTA's own layout
	 * (or a daemon sender) makes it a bounce. */
	bool weak_ok = !top->subject_auto || top->from_daemon;
	struct btext x = { .top = top, .out = out };
	x.t = (struct bspan){ text.p, cut_at(text) };
	x.failure = bci_any(x.t.p, x.t.n, failure_phrases) != NULL;
	x.final = bci_any(x.t.p, x.t.n, final_phrases) != NULL;
	x.delay = bci_any(x.t.p, x.t.n, delay_phrases) != NULL;
	static const struct {
		bool (*parse)(struct btext *x);
		enum bounce_format format;
	} engines[] = {
		{ exim_parse, BOUNCE_FMT_EXIM },
		{ postfix_parse, BOUNCE_FMT_POSTFIX },
		{ qmail_parse, BOUNCE_FMT_QMAIL },
	};
	for (size_t i = 0; i < RP_ARRAY_LEN(engines); i++) {
		if (engines[i].parse(&x)) {
			out->format = engines[i].format;
			return true;
		}
	}
	return weak_ok && (replies_parse(&x) || status_parse(&x));
}

bool btext_inline_msgid(struct bspan text, struct bspan *msgid)
{
	size_t off = cut_at(text);
	struct bspan line;
	struct bfield f;
	if (off == text.n)
		return false;
	bline_next(text.p, text.n, &off, &line); /* the marker */
	while (off < text.n) {                   /* blank lines before the copy */
		size_t o = off;
		if (!bline_next(text.p, text.n, &o, &line) || !all_blank(line))
			break;
		off = o;
	}
	size_t lim = RP_MIN(text.n, off + BOUNCE_HEADER_MAX);
	while (bfield_next(text.p, lim, &off, &f) == BF_FIELD) {
		if (bspan_is(f.name, "Message-ID")) {
			*msgid = f.value;
			return true;
		}
	}
	return false;
}
