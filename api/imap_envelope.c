/* imap_envelope.c - ENVELOPE (RFC 3501 7.4.2) from a header section:
 * RFC 5322 address lists parsed into IMAP address structures (name, adl,
 * mailbox, host), groups as a start marker (NIL NIL "name" NIL) and an end
 * marker (NIL NIL NIL NIL); display names unquoted, RFC 2047 words left
 * encoded; a missing domain is "MISSING_DOMAIN" (NIL would mean a group).
 * The parser is lenient: junk is skipped, never an error.
 */
#include <stdlib.h>
#include <strings.h>

#include "base/util.h"
#include "imap_mime.h"
#include "imap_parse.h"

#define MISSING_DOMAIN "MISSING_DOMAIN"

/* A header value being read. */
struct ap {
	const char *p, *e;
	const char *comment; /* the last comment skipped (its inside) */
	size_t comment_len;
};

/* Scratch for one address. */
struct addr_tmp {
	struct buf name;  /* display name: words unquoted, one space between */
	struct buf local; /* local part: words as written, no blanks */
	struct buf route; /* "@a,@b" */
	struct buf host;
	unsigned nwords;
	bool quoted;   /* a word was a quoted string */
	bool any;      /* an address was written to the list */
	bool in_group; /* between "name:" and ";" */
};

static bool atext(unsigned char c)
{
	if (c >= 0x80)
		return true; /* RFC 6532 UTF-8 */
	if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
		return true;
	return c && strchr("!#$%&'*+-/=?^_`{|}~.", c) != NULL;
}

/* skip_cfws - blanks, line ends and (nested) comments; remembers the last
 * comment's inside for "addr (Name)". */
static void skip_cfws(struct ap *a)
{
	while (a->p < a->e) {
		unsigned char c = (unsigned char)*a->p;
		if (c == ' ' || c == '\t' || c == '\r' || c == '\n') {
			a->p++;
			continue;
		}
		if (c != '(')
			return;
		unsigned depth = 0;
		const char *s = a->p + 1;
		do {
			if (*a->p == '\\' && a->p + 1 < a->e)
				a->p++;
			else if (*a->p == '(')
				depth++;
			else if (*a->p == ')')
				depth--;
			a->p++;
		} while (depth && a->p < a->e);
		a->comment = s;
		a->comment_len = (size_t)(a->p - s) - (depth ? 0 : 1);
	}
}

/* word - an atom (dots allowed) or a quoted string: appended to name
 * (unquoted, a space before all but the first) and to local (unquoted, no
 * space: a local part "a b"@x is the mailbox a b, as Dovecot says it). */
static bool word(struct ap *a, struct addr_tmp *t)
{
	const char *s = a->p;
	if (a->p < a->e && *a->p == '"') {
		if (t->nwords++)
			buf_append(&t->name, " ", 1);
		a->p++;
		while (a->p < a->e && *a->p != '"') {
			if (*a->p == '\\' && a->p + 1 < a->e)
				a->p++;
			if (*a->p != '\r' && *a->p != '\n') {
				buf_append(&t->name, a->p, 1);
				buf_append(&t->local, a->p, 1);
			}
			a->p++;
		}
		if (a->p < a->e)
			a->p++;
		t->quoted = true;
		return true;
	}
	while (a->p < a->e && atext((unsigned char)*a->p))
		a->p++;
	if (a->p == s)
		return false;
	if (t->nwords++)
		buf_append(&t->name, " ", 1);
	buf_append(&t->name, s, (size_t)(a->p - s));
	buf_append(&t->local, s, (size_t)(a->p - s));
	return true;
}

/* domain - dot-atoms or a domain literal, blanks and comments dropped. */
static void domain(struct ap *a, struct buf *out)
{
	for (;;) {
		skip_cfws(a);
		if (a->p >= a->e)
			return;
		const char *s = a->p;
		if (*a->p == '[') {
			while (a->p < a->e && *a->p != ']')
				a->p++;
			if (a->p < a->e)
				a->p++;
		} else {
			while (a->p < a->e && atext((unsigned char)*a->p))
				a->p++;
		}
		if (a->p == s)
			return;
		buf_append(out, s, (size_t)(a->p - s));
	}
}

static void put_buf(struct buf *out, const struct buf *b)
{
	if (buf_used(b))
		imap_put_string(out, buf_head(b), buf_used(b));
	else
		buf_append(out, "NIL", 3);
}

/* emit - one address structure. */
static void emit(struct buf *out, struct addr_tmp *t, const struct buf *name)
{
	buf_append(out, t->any ? "(" : "((", t->any ? 1 : 2);
	t->any = true;
	put_buf(out, name);
	buf_append(out, " ", 1);
	put_buf(out, &t->route);
	buf_append(out, " ", 1);
	imap_put_string(out, buf_head(&t->local), buf_used(&t->local));
	buf_append(out, " ", 1);
	if (buf_used(&t->host))
		imap_put_string(out, buf_head(&t->host), buf_used(&t->host));
	else
		buf_puts(out, "\"" MISSING_DOMAIN "\"");
	buf_append(out, ")", 1);
}

/* group_mark - a group's start (name) or end (NULL) marker. */
static void group_mark(struct buf *out, struct addr_tmp *t, const struct buf *name)
{
	buf_append(out, t->any ? "(" : "((", t->any ? 1 : 2);
	t->any = true;
	buf_puts(out, "NIL NIL ");
	if (name)
		put_buf(out, name);
	else
		buf_append(out, "NIL", 3);
	buf_puts(out, " NIL)");
}

/* angle - "<" [route ":"] addr-spec ">" after a display name. */
static void angle(struct ap *a, struct buf *out, struct addr_tmp *t)
{
	struct buf name = t->name;
	t->name = (struct buf){ 0 };
	buf_reset(&t->local);
	t->nwords = 0;
	a->p++;
	skip_cfws(a);
	if (a->p < a->e && *a->p == '@') { /* obs-route: "@a,@b:" */
		while (a->p < a->e && *a->p != ':' && *a->p != '>') {
			if (*a->p != ' ' && *a->p != '\t' && *a->p != '\r' && *a->p != '\n')
				buf_append(&t->route, a->p, 1);
			a->p++;
		}
		if (a->p < a->e && *a->p == ':')
			a->p++;
	}
	for (;;) {
		skip_cfws(a);
		if (!word(a, t))
			break;
	}
	skip_cfws(a);
	if (a->p < a->e && *a->p == '@') {
		a->p++;
		domain(a, &t->host);
	}
	while (a->p < a->e && *a->p != '>' && *a->p != ',' && *a->p != ';')
		a->p++;
	if (a->p < a->e && *a->p == '>')
		a->p++;
	if (buf_used(&t->local) || buf_used(&t->host))
		emit(out, t, &name);
	buf_free(&name);
}

/* one - a mailbox, a group's start, or junk to skip; false at the end of
 * the list (or of the group being read). */
static bool one(struct ap *a, struct buf *out, struct addr_tmp *t)
{
	skip_cfws(a);
	if (a->p >= a->e)
		return false;
	if (*a->p == ',') {
		a->p++;
		return true;
	}
	if (*a->p == ';') {
		a->p++;
		if (!t->in_group)
			return true;
		t->in_group = false;
		group_mark(out, t, NULL);
		return true;
	}
	buf_reset(&t->name);
	buf_reset(&t->local);
	buf_reset(&t->route);
	buf_reset(&t->host);
	t->nwords = 0;
	t->quoted = false;
	for (;;) {
		skip_cfws(a);
		if (!word(a, t))
			break;
	}
	char c = a->p < a->e ? *a->p : 0;
	if (c == ':' && !t->in_group) {
		a->p++;
		group_mark(out, t, &t->name);
		t->in_group = true;
	} else if (c == '<') {
		angle(a, out, t);
	} else if (c == '@') {
		a->p++;
		a->comment = NULL;
		domain(a, &t->host);
		skip_cfws(a);
		buf_reset(&t->name); /* "addr (Name)": the comment names it */
		if (a->comment)
			buf_append(&t->name, a->comment, a->comment_len);
		emit(out, t, &t->name);
	} else if (t->nwords == 1 && !t->quoted) {
		emit(out, t, &(struct buf){ 0 }); /* a bare local part */
	} else if (t->nwords) { /* a name without an address (as Dovecot says it) */
		buf_reset(&t->local);
		buf_puts(&t->local, "MISSING_MAILBOX");
		emit(out, t, &t->name);
	} else if (a->p < a->e && c != ',' && c != ';') {
		a->p++; /* junk (a NUL byte too: c is 0 for it as at the end) */
	}
	return true;
}

void imap_address_list(struct buf *out, const char *v, size_t n)
{
	struct ap a = { .p = v, .e = v + n };
	struct addr_tmp t = { 0 };
	while (one(&a, out, &t))
		;
	if (t.in_group)
		group_mark(out, &t, NULL);
	if (t.any)
		buf_append(out, ")", 1);
	else
		buf_append(out, "NIL", 3);
	buf_free(&t.name);
	buf_free(&t.local);
	buf_free(&t.route);
	buf_free(&t.host);
}

/* has_address - the value holds more than blanks and comments. */
static bool has_address(const char *v, size_t n)
{
	struct ap a = { .p = v, .e = v + n };
	skip_cfws(&a);
	return a.p < a.e;
}

/* put_field - an nstring: the unfolded value of the first field called name. */
static void put_field(struct buf *out, const char *hdr, size_t len, const char *name,
                      struct buf *tmp)
{
	const char *v;
	size_t vl;
	if (!imap_header_find(hdr, len, name, &v, &vl)) {
		buf_append(out, "NIL", 3);
		return;
	}
	size_t n;
	const char *u = imap_unfold(tmp, v, vl, &n);
	imap_put_string(out, u, n);
}

/* put_addresses - an address list field; fallback (From) when absent or empty. */
static void put_addresses(struct buf *out, const char *hdr, size_t len, const char *name,
                          const char *fallback)
{
	const char *v;
	size_t vl;
	if ((!imap_header_find(hdr, len, name, &v, &vl) || !has_address(v, vl)) &&
	    (!fallback || !imap_header_find(hdr, len, fallback, &v, &vl))) {
		buf_append(out, "NIL", 3);
		return;
	}
	imap_address_list(out, v, vl);
}

void imap_envelope(struct buf *out, const char *hdr, size_t len)
{
	struct buf tmp = { 0 };
	buf_append(out, "(", 1);
	put_field(out, hdr, len, "Date", &tmp);
	buf_append(out, " ", 1);
	put_field(out, hdr, len, "Subject", &tmp);
	static const char *const addrs[6][2] = { { "From", NULL },       { "Sender", "From" },
		                                 { "Reply-To", "From" }, { "To", NULL },
		                                 { "Cc", NULL },         { "Bcc", NULL } };
	for (unsigned i = 0; i < 6; i++) {
		buf_append(out, " ", 1);
		put_addresses(out, hdr, len, addrs[i][0], addrs[i][1]);
	}
	buf_append(out, " ", 1);
	put_field(out, hdr, len, "In-Reply-To", &tmp);
	buf_append(out, " ", 1);
	put_field(out, hdr, len, "Message-ID", &tmp);
	buf_append(out, ")", 1);
	buf_free(&tmp);
}
