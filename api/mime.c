/* mime.c - RFC 5322 / MIME message composition (see mime.h).
 *
 * Structure of what we build:
 *   attachments       multipart/mixed ( body , attachment... )
 *   text and html     multipart/alternative ( text/plain , text/html )
 *   one of them       a single text part
 * Boundaries start with "=_", which quoted-printable and base64 output can
 * never contain; text holding "=_" is therefore never sent 7bit. The rest
 * of a boundary is 96 bits from the kernel's CSPRNG, fresh per message, so
 * nobody can predict it from the message id or an earlier message.
 * Header values never carry CR, LF or NUL (mime_build refuses them); a
 * display name is written as an RFC 5322 phrase (atoms, or one quoted
 * string) or as RFC 2047 words, so it can never hold a second address.
 * Bodies: any lone CR or bare LF is a line end and goes out as CRLF.
 * Inside a multipart the CRLF before a delimiter belongs to the delimiter
 * (RFC 2046 5.1.1), so a part's text comes back exactly, final newline too.
 */
#include "mime.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "base/util.h"

#define HEADER_SOFT 76 /* fold header lines around here */
#define WORD_RAW    45 /* raw bytes per encoded word: 60 base64 chars */

bool mime_header_name_ok(const char *name)
{
	if (!*name || strlen(name) > 76)
		return false;
	for (const char *p = name; *p; p++)
		if ((unsigned char)*p < 33 || (unsigned char)*p > 126 || *p == ':')
			return false;
	return true;
}

bool mime_header_value_ok(const char *value, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (value[i] == '\r' || value[i] == '\n' || value[i] == '\0')
			return false;
	return true;
}

bool mime_header_reserved(const char *name)
{
	static const char *const reserved[] = {
		"From",       "To",           "Subject",      "Date",
		"Message-ID", "MIME-Version", "Content-Type", "Content-Transfer-Encoding",
		"Received",   "Bcc", /* every recipient would see it: blind copies are more "to" */
	};
	for (size_t i = 0; i < RP_ARRAY_LEN(reserved); i++)
		if (!strcasecmp(name, reserved[i]))
			return true;
	return false;
}

static bool is_ascii(const char *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)p[i] >= 0x80)
			return false;
	return true;
}

void mime_qp_encode(struct buf *out, const char *p, size_t n)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t col = 0;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)p[i];
		if (c == '\r' && i + 1 < n && p[i + 1] == '\n')
			continue;             /* the LF writes the line break */
		if (c == '\n' || c == '\r') { /* a lone CR ends a line too */
			buf_append(out, "\r\n", 2);
			col = 0;
			continue;
		}
		bool at_eol = i + 1 == n || p[i + 1] == '\n' || p[i + 1] == '\r';
		bool plain =
		    (c >= 33 && c <= 126 && c != '=') || ((c == ' ' || c == '\t') && !at_eol);
		size_t need = plain ? 1 : 3;
		if (col + need > 75) {
			buf_append(out, "=\r\n", 3);
			col = 0;
		}
		if (plain) {
			char ch = (char)c;
			buf_append(out, &ch, 1);
		} else {
			char enc[3] = { '=', hex[c >> 4], hex[c & 15] };
			buf_append(out, enc, 3);
		}
		col += need;
	}
}

/* utf8_cut - the largest k <= n such that p[0..k) ends on a character boundary. */
static size_t utf8_cut(const char *p, size_t n)
{
	size_t k = n;
	while (k > 0 && ((unsigned char)p[k] & 0xc0) == 0x80)
		k--;
	return k ? k : n;
}

/* encoded_words - append p[0..n) as RFC 2047 B-encoded words, folding
 * between words; col is the current column, updated. */
static void encoded_words(struct buf *out, const char *p, size_t n, size_t *col)
{
	size_t i = 0;
	while (i < n) {
		size_t take = n - i, max = WORD_RAW;
		/* The first word fits the rest of the current line rather than
		 * folding right after "Name: ": that fold leaves a blank which
		 * unstructured fields keep (the Subject would start with a space). */
		if (i == 0 && *col + 12 + 8 <= HEADER_SOFT)
			max = RP_MIN((size_t)WORD_RAW, (HEADER_SOFT - *col - 12) / 4 * 3);
		if (take > max)
			take = utf8_cut(p + i, max);
		size_t wlen = 12 + (take + 2) / 3 * 4;
		if (*col > 1 && *col + wlen + (i > 0) > HEADER_SOFT) {
			buf_append(out, "\r\n ", 3);
			*col = 1;
		} else if (i > 0) {
			buf_append(out, " ", 1);
			(*col)++;
		}
		buf_puts(out, "=?UTF-8?B?");
		base64_encode(out, (const unsigned char *)p + i, take, false);
		buf_puts(out, "?=");
		*col += wlen;
		i += take;
	}
}

/* plain_text - append ASCII text, folding at blanks past the soft limit. */
static void plain_text(struct buf *out, const char *p, size_t n, size_t *col)
{
	size_t i = 0;
	while (i < n) {
		size_t j = i;
		while (j < n && p[j] != ' ')
			j++;
		size_t wl = j - i;
		if (i > 0 && *col + wl > HEADER_SOFT && *col > 1) {
			/* Fold: the blank before this word becomes the fold. */
			buf_append(out, "\r\n", 2);
			*col = 0;
		}
		buf_append(out, p + i - (i > 0), wl + (i > 0));
		*col += wl + (i > 0);
		i = j + (j < n);
	}
}

const char *mime_mailbox_split(const char *s, size_t n, const char **name, size_t *nlen,
                               const char **addr, size_t *alen)
{
	while (n && (*s == ' ' || *s == '\t'))
		s++, n--;
	while (n && (s[n - 1] == ' ' || s[n - 1] == '\t'))
		n--;
	*name = s;
	*nlen = 0;
	*addr = s;
	*alen = n;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c == '\r' || c == '\n')
			return "has a line break";
		if (c < 0x20 || c == 0x7f)
			return "has a control character";
	}
	if (!n || s[n - 1] != '>')
		return NULL; /* a bare address: addr_check judges it */
	/* The angle-addr starts at the first '<' outside a quoted string;
	 * the display name before it must be whole words. */
	bool quoted = false;
	size_t lt = n;
	for (size_t i = 0; i < n && lt == n; i++) {
		char c = s[i];
		if (quoted && c == '\\' && i + 1 < n)
			i++;
		else if (c == '"')
			quoted = !quoted;
		else if (!quoted && c == '<')
			lt = i;
		else if (!quoted && c == '>')
			return "has '>' in its display name (quote the name)";
	}
	if (lt == n)
		return quoted ? "has an unbalanced quote in its display name"
		              : "has '>' without '<'";
	size_t dn = lt;
	while (dn && (s[dn - 1] == ' ' || s[dn - 1] == '\t'))
		dn--;
	*name = s;
	*nlen = dn;
	*addr = s + lt + 1;
	*alen = n - lt - 2;
	return NULL;
}

/* phrase_text - the text a display name means: quoted strings opened and
 * their quoted pairs undone, everything else as written. */
static void phrase_text(struct buf *out, const char *p, size_t n)
{
	bool quoted = false;
	for (size_t i = 0; i < n; i++) {
		if (p[i] == '"') {
			quoted = !quoted;
			continue;
		}
		if (quoted && p[i] == '\\' && i + 1 < n)
			i++;
		buf_append(out, p + i, 1);
	}
}

static bool is_atext(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       (c && strchr("!#$%&'*+-/=?^_`{|}~", c));
}

/* long_run - a run without spaces (where plain_text folds) that no fold
 * could keep within 998 octets (an entry starts before column 80). */
static bool long_run(const char *p, size_t n)
{
	size_t run = 0;
	for (size_t i = 0; i < n; i++) {
		run = p[i] == ' ' ? 0 : run + 1;
		if (run > 900)
			return true;
	}
	return false;
}

/* phrase - write display name text t[0..n) as RFC 5322 words: atoms as
 * they are, other ASCII as one quoted string, non-ASCII as RFC 2047 words
 * (B encoding: no character of the name can end the word early). */
static void phrase(struct buf *out, const char *t, size_t n, size_t *col)
{
	if (!is_ascii(t, n) || long_run(t, n)) {
		encoded_words(out, t, n, col);
		return;
	}
	bool atoms = n > 0 && t[0] != ' ' && t[n - 1] != ' ';
	for (size_t i = 0; i < n && atoms; i++)
		atoms = is_atext((unsigned char)t[i]) || (t[i] == ' ' && t[i + 1] != ' ');
	if (atoms && !strstr(t, "=?")) {
		plain_text(out, t, n, col);
		return;
	}
	struct buf q = { 0 };
	buf_append(&q, "\"", 1);
	for (size_t i = 0; i < n; i++) {
		if (t[i] == '"' || t[i] == '\\')
			buf_append(&q, "\\", 1);
		buf_append(&q, t + i, 1);
	}
	buf_append(&q, "\"", 1);
	if (long_run(buf_head(&q), buf_used(&q))) /* quoting made a run too long to fold */
		encoded_words(out, t, n, col);
	else
		plain_text(out, buf_head(&q), buf_used(&q), col);
	buf_free(&q);
}

/* address_entry - one "Name <addr>" or "addr" of an address list (or a
 * group's "name:;"), the name rewritten as a phrase. */
static void address_entry(struct buf *out, const char *p, size_t n, size_t *col)
{
	const char *name, *addr;
	size_t nl, al;
	if (mime_mailbox_split(p, n, &name, &nl, &addr, &al) || !nl) {
		/* A bare address (or what the validators let through as one). */
		while (n && (*p == ' ' || *p == '\t'))
			p++, n--;
		while (n && (p[n - 1] == ' ' || p[n - 1] == '\t'))
			n--;
		if (long_run(p, n)) /* no usable address: encoded words keep the line limit */
			encoded_words(out, p, n, col);
		else
			plain_text(out, p, n, col);
		return;
	}
	if (long_run(addr, al)) { /* likewise */
		encoded_words(out, p, n, col);
		return;
	}
	struct buf t = { 0 };
	phrase_text(&t, name, nl);
	phrase(out, buf_cstr(&t), buf_used(&t), col);
	buf_free(&t);
	/* Lines holding encoded words stay within 76 (RFC 2047 2): fold
	 * before the address when it would not fit. */
	if (*col + 3 + al > HEADER_SOFT) {
		buf_append(out, "\r\n ", 3);
		*col = 1;
	} else {
		buf_append(out, " ", 1);
		(*col)++;
	}
	buf_append(out, "<", 1);
	plain_text(out, addr, al, col);
	buf_append(out, ">", 1);
	*col += 2;
}

/* needs_words - ASCII that still has to travel as encoded words: text that
 * a receiver would decode as an encoded word ("=?"), or a run without
 * blanks too long to fold within 998 octets. */
static bool needs_words(const char *p, size_t n, size_t col)
{
	size_t run = 0;
	for (size_t i = 0; i < n; i++) {
		if (p[i] == '=' && i + 1 < n && p[i + 1] == '?')
			return true;
		run = p[i] == ' ' ? 0 : run + 1;
		if (col + run + 1 > 998)
			return true;
	}
	return false;
}

void mime_encode_header(struct buf *out, const char *name, const char *value, bool addresses)
{
	size_t col = strlen(name) + 2;
	size_t n = strlen(value);
	buf_printf(out, "%s: ", name);
	if (addresses) {
		/* Split on commas outside quotes and angle brackets. */
		size_t start = 0;
		bool q = false, angle = false, first = true;
		for (size_t i = 0; i <= n; i++) {
			char c = i < n ? value[i] : ',';
			if (c == '"' && (i == 0 || value[i - 1] != '\\'))
				q = !q;
			else if (!q && c == '<')
				angle = true;
			else if (!q && c == '>')
				angle = false;
			else if (!q && !angle && c == ',') {
				if (i > start) {
					if (!first) {
						buf_append(out, ",", 1);
						if (col > 40) {
							buf_append(out, "\r\n ", 3);
							col = 1;
						} else {
							buf_append(out, " ", 1);
							col += 2;
						}
					}
					address_entry(out, value + start, i - start, &col);
					first = false;
				}
				start = i + 1;
			}
		}
	} else if (is_ascii(value, n) && !needs_words(value, n, col)) {
		plain_text(out, value, n, &col);
	} else {
		encoded_words(out, value, n, &col);
	}
	buf_append(out, "\r\n", 2);
}

/* fits_7bit - ASCII, no NUL, lines <= 998 (CRLF, a bare LF and a lone CR
 * each end a line). */
static bool fits_7bit(const char *p, size_t n)
{
	size_t line = 0;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)p[i];
		if (c >= 0x80 || c == 0)
			return false;
		if (c == '=' && i + 1 < n && p[i + 1] == '_')
			return false; /* could fake a boundary; QP writes "=3D_" */
		if (c == '\r' || c == '\n') {
			line = 0;
			continue;
		}
		if (++line > 998)
			return false;
	}
	return true;
}

/* crlf_text - append text with every line end (CRLF, bare LF, lone CR) as
 * CRLF: nothing else may reach the spool (a lone CR before a dot is an SMTP
 * smuggling payload for a lenient next hop). */
static void crlf_text(struct buf *out, const char *p, size_t n)
{
	size_t i = 0;
	while (i < n) {
		size_t e = i;
		while (e < n && p[e] != '\r' && p[e] != '\n')
			e++;
		buf_append(out, p + i, e - i);
		if (e == n)
			break;
		buf_append(out, "\r\n", 2);
		i = e + (p[e] == '\r' && e + 1 < n && p[e + 1] == '\n' ? 2 : 1);
	}
}

static void ensure_crlf(struct buf *out)
{
	size_t n = buf_used(out);
	const char *p = buf_head(out);
	if (n < 2 || p[n - 2] != '\r' || p[n - 1] != '\n')
		buf_append(out, "\r\n", 2);
}

/* text_part - Content-Type/-Transfer-Encoding lines, a blank line, the
 * body; in_multipart: end with the delimiter's own CRLF, not a fix-up. */
static void text_part(struct buf *out, const char *type, const char *p, size_t n, bool in_multipart)
{
	bool seven = fits_7bit(p, n);
	buf_printf(out, "Content-Type: %s; charset=utf-8\r\nContent-Transfer-Encoding: %s\r\n\r\n",
	           type, seven ? "7bit" : "quoted-printable");
	if (seven)
		crlf_text(out, p, n);
	else
		mime_qp_encode(out, p, n);
	if (in_multipart)
		buf_append(out, "\r\n", 2);
	else
		ensure_crlf(out);
}

/* boundary - the k-th boundary of a message whose random part is key:
 * "=_" can never occur in what we encode (see the top), and key is fresh
 * from the CSPRNG for every message. */
static void boundary(char out[48], const char *key, unsigned k)
{
	snprintf(out, 48, "=_rp_%s_%u", key, k);
}

/* boundary_key - 96 random bits as 24 hex digits. */
static void boundary_key(char key[25])
{
	static const char hex[] = "0123456789abcdef";
	unsigned char r[12];
	if (!rp_random_bytes(r, sizeof(r)))
		rp_panic("getrandom failed: no MIME boundary can be made");
	for (size_t i = 0; i < sizeof(r); i++) {
		key[2 * i] = hex[r[i] >> 4];
		key[2 * i + 1] = hex[r[i] & 15];
	}
	key[24] = '\0';
}

/* filename_param - filename="x" for short ASCII, filename*=UTF-8''%xx
 * otherwise; a long one in RFC 2231 sections (filename*0*=, filename*1*=)
 * on folded lines, so that no header line passes 998 octets. */
static void filename_param(struct buf *out, const char *param, const char *name)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t n = strlen(name);
	if (n <= 200 && is_ascii(name, n) && !strpbrk(name, "\"\\")) {
		buf_printf(out, "; %s=\"%s\"", param, name);
		return;
	}
	struct buf enc = { 0 };
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)name[i];
		if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		    strchr("!#$&+-.^_`|~", c)) {
			char ch = (char)c;
			buf_append(&enc, &ch, 1);
		} else {
			char pct[3] = { '%', hex[c >> 4], hex[c & 15] };
			buf_append(&enc, pct, 3);
		}
	}
	const char *e = buf_head(&enc);
	size_t len = buf_used(&enc);
	if (len <= 200) {
		buf_printf(out, "; %s*=UTF-8''%.*s", param, (int)len, e);
	} else {
		size_t i = 0;
		for (unsigned k = 0; i < len; k++) {
			size_t take = RP_MIN((size_t)60, len - i);
			while (take < len - i && (e[i + take - 1] == '%' || e[i + take - 2] == '%'))
				take--; /* never cut a %XX */
			buf_printf(out, ";\r\n\t%s*%u*=%s%.*s", param, k, k ? "" : "UTF-8''",
			           (int)take, e + i);
			i += take;
		}
	}
	buf_free(&enc);
}

static bool content_type_ok(const char *t)
{
	const char *slash = strchr(t, '/');
	if (!slash || slash == t || !slash[1] || strlen(t) > 127)
		return false;
	for (const char *p = t; *p; p++) {
		unsigned char c = (unsigned char)*p;
		if (c <= 32 || c >= 127 || strchr("()<>@,;:\\\"[]?=", c))
			return false;
	}
	return true;
}

/* body - the text/html (alternative) part, or a single text part; nested
 * when it is the first part of a multipart/mixed. */
static void body(struct buf *out, const struct mime_message *m, const char *key, unsigned *k,
                 bool nested)
{
	const char *text = m->text, *html = m->html;
	if (text && html) {
		char b[48];
		boundary(b, key, (*k)++);
		buf_printf(out, "Content-Type: multipart/alternative; boundary=\"%s\"\r\n\r\n", b);
		buf_printf(out, "--%s\r\n", b);
		text_part(out, "text/plain", text, m->text_len, true);
		buf_printf(out, "--%s\r\n", b);
		text_part(out, "text/html", html, m->html_len, true);
		buf_printf(out, "--%s--\r\n", b);
		return;
	}
	if (html)
		text_part(out, "text/html", html, m->html_len, nested);
	else
		text_part(out, "text/plain", text ? text : "", text ? m->text_len : 0, nested);
}

/* mailbox_header - "Name: mailbox" for one mailbox (From): never split at
 * a comma, which a display name may hold. */
static void mailbox_header(struct buf *out, const char *name, const char *value)
{
	size_t col = strlen(name) + 2;
	buf_printf(out, "%s: ", name);
	address_entry(out, value, strlen(value), &col);
	buf_append(out, "\r\n", 2);
}

/* header_values_ok - every header value m gives is one line (no CR, LF or
 * NUL), From one mailbox; else false with the reason in err. */
static bool header_values_ok(const struct mime_message *m, char *err, size_t errlen)
{
	const char *name, *addr, *why;
	size_t nl, al;
	if ((why = mime_mailbox_split(m->from, strlen(m->from), &name, &nl, &addr, &al))) {
		snprintf(err, errlen, "from %s", why);
		return false;
	}
	if (m->to && !mime_header_value_ok(m->to, strlen(m->to))) {
		snprintf(err, errlen, "To has a line break (CR or LF) or a NUL byte");
		return false;
	}
	if (m->subject && !mime_header_value_ok(m->subject, strlen(m->subject))) {
		snprintf(err, errlen, "subject has a line break (CR or LF) or a NUL byte");
		return false;
	}
	for (unsigned i = 0; i < m->nheaders; i++) {
		const struct mime_header *h = &m->headers[i];
		if (!mime_header_name_ok(h->name) ||
		    !mime_header_value_ok(h->value, strlen(h->value))) {
			snprintf(err, errlen,
			         "headers.%.80s has a line break (CR or LF) or a NUL byte",
			         h->name);
			return false;
		}
	}
	return true;
}

bool mime_build(const struct mime_message *m, struct buf *out, char *err, size_t errlen)
{
	char date[64], key[25];
	unsigned k = 0;
	if (!header_values_ok(m, err, errlen))
		return false;
	for (unsigned i = 0; i < m->nattachments; i++) {
		const char *ct = m->attachments[i].content_type;
		if (ct && !content_type_ok(ct)) {
			snprintf(err, errlen, "attachments[%u].content_type is not a MIME type", i);
			return false;
		}
	}
	rp_rfc5322_date(m->date_ms, date, sizeof(date));
	boundary_key(key);
	mailbox_header(out, "From", m->from);
	if (m->to && *m->to)
		mime_encode_header(out, "To", m->to, true);
	if (m->subject)
		mime_encode_header(out, "Subject", m->subject, false);
	buf_printf(out, "Date: %s\r\nMessage-ID: <%s>\r\n", date, m->message_id);
	for (unsigned i = 0; i < m->nheaders; i++)
		mime_encode_header(out, m->headers[i].name, m->headers[i].value, false);
	buf_puts(out, "MIME-Version: 1.0\r\n");
	if (!m->nattachments) {
		body(out, m, key, &k, false);
		return true;
	}
	char b[48];
	boundary(b, key, k++);
	buf_printf(out, "Content-Type: multipart/mixed; boundary=\"%s\"\r\n\r\n", b);
	buf_printf(out, "--%s\r\n", b);
	body(out, m, key, &k, true);
	for (unsigned i = 0; i < m->nattachments; i++) {
		const struct mime_attachment *a = &m->attachments[i];
		const char *fname = a->filename && *a->filename ? a->filename : "attachment";
		buf_printf(out, "--%s\r\nContent-Type: %s", b,
		           a->content_type ? a->content_type : "application/octet-stream");
		filename_param(out, "name", fname);
		buf_puts(out, "\r\nContent-Disposition: attachment");
		filename_param(out, "filename", fname);
		buf_puts(out, "\r\nContent-Transfer-Encoding: base64\r\n\r\n");
		base64_encode(out, a->data, a->len, true);
		buf_append(out, "\r\n", 2);
	}
	buf_printf(out, "--%s--\r\n", b);
	return true;
}
