/* bounce.c - reading what arrives at the bounce MX (see bounce.h).
 *
 * bounce_parse walks the MIME structure once (bounce_mime.c), then
 * believes, in this order: a feedback report (ARF), a delivery-status
 * part (RFC 3464), the human-readable text (bounce_text.c). The original
 * message's Message-ID comes from a returned part, an inline copy, or
 * In-Reply-To. This file also owns the output strings: every string in
 * struct bounce_report is written by bout_text, or is a status code that
 * benh_scan has checked.
 */
#include "bounce.h"

#include <stdint.h>
#include <string.h>

#include "base/util.h"
#include "bounce_impl.h"

/* ---- output strings ---------------------------------------------------- */

void bout_text(char *dst, size_t size, const char *p, size_t n)
{
	size_t o = 0;
	bool gap = false;
	if (!size)
		return;
	for (size_t i = 0; i < n;) {
		unsigned char c = (unsigned char)p[i];
		if (c == ' ' || c == '\t' || c == '\r' || c == '\n') {
			gap = o > 0;
			i++;
			continue;
		}
		if (c < 32 || c == 127) {
			i++;
			continue;
		}
		size_t cl = 1;
		bool bad = false;
		if (c >= 0x80) {
			uint32_t cp;
			cl = rp_utf8_len((const unsigned char *)p + i, n - i, &cp);
			bad = !cl;
			cl = cl ? cl : 1;
		}
		size_t need = (gap ? 1 : 0) + (bad ? 1 : cl);
		if (o + need >= size)
			break;
		if (gap)
			dst[o++] = ' ';
		gap = false;
		if (bad)
			dst[o++] = '?';
		else
			memcpy(dst + o, p + i, cl);
		o += bad ? 0 : cl;
		i += cl;
	}
	dst[o] = '\0';
}

/* strip_type - past a leading "type;" (addr-type, diagnostic-type,
 * mta-name-type: an atom), if there is one. */
static struct bspan strip_type(struct bspan v)
{
	v = btrim(v);
	for (size_t i = 0; i < v.n && i < 64; i++) {
		char c = v.p[i];
		if (c == ';')
			return i ? btrim((struct bspan){ v.p + i + 1, v.n - i - 1 }) : v;
		bool atom = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		            (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.';
		if (!atom)
			break;
	}
	return v;
}

void bout_addr(char *dst, size_t size, const char *p, size_t n)
{
	struct bspan v = strip_type((struct bspan){ p, n });
	const char *lt = memchr(v.p, '<', v.n);
	if (lt) {
		size_t rest = v.n - (size_t)(lt - v.p) - 1;
		const char *gt = memchr(lt + 1, '>', rest);
		v = (struct bspan){ lt + 1, gt ? (size_t)(gt - lt - 1) : rest };
	}
	v = btrim(v);
	/* Up to the first blank or comma outside a quoted local part. */
	bool quoted = false;
	for (size_t i = 0; i < v.n; i++) {
		char c = v.p[i];
		if (c == '"')
			quoted = !quoted;
		else if (!quoted &&
		         (c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == ',' || c == '('))
			v.n = i;
	}
	bout_text(dst, size, v.p, v.n);
}

/* bout_msgid - "<id@host>" -> "id@host". */
static void bout_msgid(char *dst, size_t size, struct bspan v)
{
	v = btrim(v);
	const char *lt = memchr(v.p, '<', v.n);
	if (lt) {
		size_t rest = v.n - (size_t)(lt - v.p) - 1;
		const char *gt = memchr(lt + 1, '>', rest);
		v = (struct bspan){ lt + 1, gt ? (size_t)(gt - lt - 1) : rest };
	}
	bout_text(dst, size, v.p, v.n);
}

size_t benh_scan(const char *p, size_t n, bool strict)
{
	if (n < 5 || (p[0] != '2' && p[0] != '4' && p[0] != '5') || p[1] != '.')
		return 0;
	size_t i = 2;
	for (int part = 0; part < 2; part++) {
		size_t s = i;
		while (i < n && i - s < 4 && p[i] >= '0' && p[i] <= '9')
			i++;
		if (i == s || i - s > 3)
			return 0;
		if (part == 0) {
			if (strict && (i - s != 1 || p[s] > '7'))
				return 0;
			if (i >= n || p[i] != '.')
				return 0;
			i++;
		}
	}
	if (i + 1 < n && p[i] == '.' && p[i + 1] >= '0' && p[i + 1] <= '9')
		return 0; /* "5.1.1.4": a version or an address, not a status */
	return i;
}

/* reply_prefix - the reply code at the start of s ("550 ", "550-", "550:"):
 * its value, or 0. */
static int reply_prefix(const char *s, size_t n)
{
	if (n < 3 || s[0] < '2' || s[0] > '5' || s[1] < '0' || s[1] > '9' || s[2] < '0' ||
	    s[2] > '9')
		return 0;
	if (n > 3 && s[3] != ' ' && s[3] != '-' && s[3] != ':')
		return 0;
	return (s[0] - '0') * 100 + (s[1] - '0') * 10 + (s[2] - '0');
}

/* dedup_continuations - in s (a multi-line reply joined by spaces: "550-5.1.1
 * a 550-5.1.1 b 550 5.1.1 c"), drop the repeated "550-5.1.1 " prefixes
 * and make the first "550 5.1.1 ". In place, linear. */
static void dedup_continuations(char *s)
{
	size_t n = strlen(s);
	if (!reply_prefix(s, n) || n < 4 || s[3] != '-')
		return;
	s[3] = ' ';
	size_t el = benh_scan(s + 4, n - 4, false);
	if (el && (s[4] != s[0] || (4 + el < n && s[4 + el] != ' ')))
		el = 0;
	size_t w = 0;
	for (size_t r = 0; r < n;) {
		/* A repeat: " CCC-" or " CCC " followed by the same enh (if any). */
		if (r > 4 && s[r - 1] == ' ' && r + 4 <= n && !memcmp(s + r, s, 3) &&
		    (s[r + 3] == '-' || s[r + 3] == ' ') &&
		    (!el || (r + 4 + el <= n && !memcmp(s + r + 4, s + 4, el) &&
		             (r + 4 + el == n || s[r + 4 + el] == ' ')))) {
			r += 4 + (el ? el : 0);
			while (r < n && s[r] == ' ')
				r++;
			continue;
		}
		s[w++] = s[r++];
	}
	while (w && s[w - 1] == ' ')
		w--;
	s[w] = '\0';
}

void bout_diag(char *dst, size_t size, const char *p, size_t n, int *code)
{
	char tmp[1024];
	bout_text(tmp, sizeof(tmp), p, n);
	dedup_continuations(tmp);
	*code = reply_prefix(tmp, strlen(tmp));
	bout_text(dst, size, tmp, strlen(tmp));
}

/* bout_dsn_diag - a Diagnostic-Code value: the type dropped, then as bout_diag. */
static void bout_dsn_diag(char *dst, size_t size, struct bspan v, int *code)
{
	v = strip_type(v);
	bout_diag(dst, size, v.p, v.n, code);
}

/* ---- recipients -------------------------------------------------------- */

static enum bounce_kind kind_of_class(char c)
{
	return c == '5'   ? BOUNCE_FAILED
	       : c == '4' ? BOUNCE_DELAYED
	       : c == '2' ? BOUNCE_DELIVERED
	                  : BOUNCE_NONE;
}

/* brcpt_finish - fill a recipient's missing status (from its reply, else
 * its kind) and its missing kind (from the status class). */
static void brcpt_finish(struct bounce_rcpt *r)
{
	if (!r->status[0] && r->smtp_code) {
		/* "550 5.1.1 ..." -> 5.1.1; "550 ..." -> 5.0.0 */
		size_t n = strlen(r->diag);
		size_t el = n > 4 ? benh_scan(r->diag + 4, n - 4, false) : 0;
		if (el && el < sizeof(r->status) && r->diag[4] == r->diag[0] &&
		    (4 + el == n || r->diag[4 + el] == ' ')) {
			memcpy(r->status, r->diag + 4, el);
			r->status[el] = '\0';
		} else if (r->smtp_code >= 200 && r->smtp_code < 600 && r->smtp_code / 100 != 3) {
			r->status[0] = (char)('0' + r->smtp_code / 100);
			memcpy(r->status + 1, ".0.0", 5);
		}
	}
	if (!r->status[0]) {
		static const char *const by_kind[] = {
			[BOUNCE_FAILED] = "5.0.0",
			[BOUNCE_DELAYED] = "4.0.0",
			[BOUNCE_DELIVERED] = "2.0.0",
		};
		if ((unsigned)r->kind < RP_ARRAY_LEN(by_kind) && by_kind[r->kind])
			memcpy(r->status, by_kind[r->kind], strlen(by_kind[r->kind]) + 1);
	}
	if (r->kind == BOUNCE_NONE)
		r->kind = kind_of_class(r->status[0]);
}

/* breport_commit - add r (finished) to the report; beyond BOUNCE_MAX_RCPT
 * it is only counted. Its kind joins the verdict either way. */
static void breport_commit(struct bounce_report *out, const struct bounce_rcpt *r)
{
	if (r->kind == BOUNCE_NONE)
		return;
	if (r->kind > out->kind)
		out->kind = r->kind;
	if (out->nrcpt < BOUNCE_MAX_RCPT)
		out->rcpt[out->nrcpt++] = *r;
	else
		out->rcpt_dropped++;
}

void brcpt_commit(struct bounce_report *out, struct bounce_rcpt *r)
{
	brcpt_finish(r);
	breport_commit(out, r);
}

/* ---- RFC 3464 delivery-status ------------------------------------------ */

struct dsn_state {
	struct bounce_rcpt r;
	bool any;     /* a per-recipient field was seen */
	bool has_fr;  /* Final-Recipient seen */
	bool has_act; /* Action seen */
};

static enum bounce_kind action_kind(struct bspan v)
{
	static const struct {
		const char *name;
		enum bounce_kind kind;
	} actions[] = {
		{ "failed", BOUNCE_FAILED },       { "delayed", BOUNCE_DELAYED },
		{ "delivered", BOUNCE_DELIVERED }, { "relayed", BOUNCE_DELIVERED },
		{ "expanded", BOUNCE_DELIVERED },
	};
	v = btrim(v);
	size_t i = 0;
	while (i < v.n && v.p[i] != ' ' && v.p[i] != '\t' && v.p[i] != '(' && v.p[i] != '\r' &&
	       v.p[i] != '\n')
		i++;
	v.n = i;
	for (size_t k = 0; k < RP_ARRAY_LEN(actions); k++)
		if (bspan_is(v, actions[k].name))
			return actions[k].kind;
	return BOUNCE_NONE;
}

static void dsn_flush(struct dsn_state *st, struct bounce_report *out)
{
	/* Final-Recipient is required; without it the original is the best name. */
	if (!st->r.final_rcpt[0])
		memcpy(st->r.final_rcpt, st->r.original_rcpt, sizeof(st->r.final_rcpt));
	if (st->any)
		brcpt_commit(out, &st->r);
	memset(st, 0, sizeof(*st));
}

static void dsn_field(const struct bfield *f, struct dsn_state *st, struct bounce_report *out)
{
	struct bounce_rcpt *r = &st->r;
	struct bspan v = f->value;
	if (bspan_is(f->name, "Reporting-MTA")) {
		v = strip_type(v);
		if (!out->reporting_mta[0])
			bout_text(out->reporting_mta, sizeof(out->reporting_mta), v.p, v.n);
		return;
	}
	if (bspan_is(f->name, "Original-Envelope-Id")) {
		if (!out->envelope_id[0])
			bout_text(out->envelope_id, sizeof(out->envelope_id), v.p, v.n);
		return;
	}
	bool fr = bspan_is(f->name, "Final-Recipient"), act = bspan_is(f->name, "Action");
	/* A second Final-Recipient or Action with no blank line between:
	 * a damaged report that still means a second recipient. */
	if ((fr && st->has_fr) || (act && st->has_act))
		dsn_flush(st, out);
	if (fr) {
		bout_addr(r->final_rcpt, sizeof(r->final_rcpt), v.p, v.n);
		st->has_fr = st->any = true;
	} else if (act) {
		r->kind = action_kind(v);
		st->has_act = st->any = true;
	} else if (bspan_is(f->name, "Original-Recipient")) {
		bout_addr(r->original_rcpt, sizeof(r->original_rcpt), v.p, v.n);
		st->any = true;
	} else if (bspan_is(f->name, "Status")) {
		v = btrim(v);
		size_t el = benh_scan(v.p, v.n, false);
		if (el && el < sizeof(r->status) &&
		    (el == v.n || v.p[el] == ' ' || v.p[el] == '\t' || v.p[el] == '(')) {
			memcpy(r->status, v.p, el);
			r->status[el] = '\0';
		}
		st->any = true;
	} else if (bspan_is(f->name, "Diagnostic-Code")) {
		bout_dsn_diag(r->diag, sizeof(r->diag), v, &r->smtp_code);
		st->any = true;
	} else if (bspan_is(f->name, "Remote-MTA")) {
		v = strip_type(v);
		bout_text(r->remote_mta, sizeof(r->remote_mta), v.p, v.n);
		st->any = true;
	}
}

/* dsn_parse - the per-message and per-recipient groups of a
 * message/delivery-status body. */
static void dsn_parse(struct bspan s, struct bounce_report *out)
{
	struct dsn_state st;
	struct bfield f;
	struct bspan line;
	size_t off = 0;
	memset(&st, 0, sizeof(st));
	for (;;) {
		enum bfield_res res = bfield_next(s.p, s.n, &off, &f);
		if (res == BF_END)
			break;
		if (res == BF_BLANK)
			dsn_flush(&st, out);
		else if (res == BF_JUNK)
			bline_next(s.p, s.n, &off, &line);
		else
			dsn_field(&f, &st, out);
	}
	dsn_flush(&st, out);
}

/* ---- RFC 5965 feedback reports ----------------------------------------- */

/* arf_parse - a message/feedback-report body. True when it is a
 * complaint: abuse, fraud, virus, other, or no type at all (RFC 6650 3:
 * treat unknown types as complaints); not-spam and auth-failure (RFC
 * 6591, DMARC failure reports) are not. */
static bool arf_parse(struct bspan s, struct bounce_report *out, char *removal, size_t rsize)
{
	struct bfield f;
	struct bspan line;
	size_t off = 0;
	for (;;) {
		enum bfield_res res = bfield_next(s.p, s.n, &off, &f);
		if (res == BF_END)
			break;
		if (res == BF_JUNK)
			bline_next(s.p, s.n, &off, &line);
		if (res != BF_FIELD)
			continue;
		struct bspan v = f.value;
		if (bspan_is(f.name, "Feedback-Type") && !out->feedback_type[0]) {
			/* a token: bout_addr stops at the first blank */
			bout_addr(out->feedback_type, sizeof(out->feedback_type), v.p, v.n);
			rp_lower(out->feedback_type);
		} else if (bspan_is(f.name, "Original-Rcpt-To") && !out->arf_original_rcpt[0]) {
			bout_addr(out->arf_original_rcpt, sizeof(out->arf_original_rcpt), v.p, v.n);
		} else if (bspan_is(f.name, "Removal-Recipient") && !removal[0]) {
			bout_addr(removal, rsize, v.p, v.n);
		} else if (bspan_is(f.name, "Original-Mail-From") &&
		           !out->arf_original_mail_from[0]) {
			bout_addr(out->arf_original_mail_from, sizeof(out->arf_original_mail_from),
			          v.p, v.n);
		}
	}
	if (!out->arf_original_rcpt[0])
		memcpy(out->arf_original_rcpt, removal, strlen(removal) + 1);
	return strcmp(out->feedback_type, "not-spam") && strcmp(out->feedback_type, "auth-failure");
}

/* ---- the original message ---------------------------------------------- */

/* original_fields - Message-ID (and, when want_to, a To: holding exactly
 * one address) from a returned header section. */
static void original_fields(struct bspan h, struct bounce_report *out, char *to, size_t tsize)
{
	struct bfield f;
	size_t off = 0, lim = RP_MIN(h.n, (size_t)BOUNCE_HEADER_MAX);
	while (bfield_next(h.p, lim, &off, &f) == BF_FIELD) {
		if (bspan_is(f.name, "Message-ID") && !out->original_message_id[0]) {
			bout_msgid(out->original_message_id, sizeof(out->original_message_id),
			           f.value);
		} else if (to && bspan_is(f.name, "To") && !to[0]) {
			const char *at = memchr(f.value.p, '@', f.value.n);
			size_t rest = at ? f.value.n - (size_t)(at - f.value.p) - 1 : 0;
			if (at && !memchr(at + 1, '@', rest))
				bout_addr(to, tsize, f.value.p, f.value.n);
		}
	}
}

/* returned_part - the part holding the original: a returned one beside
 * the report (inside the attached message when the report is forwarded),
 * else an attached message (a bounce that is no report attaches it). */
static const struct bpart *returned_part(const struct bmime *m, bool attached)
{
	for (unsigned i = 0; i < m->nparts; i++)
		if (m->parts[i].returned && m->parts[i].attached == attached)
			return &m->parts[i];
	for (unsigned i = 0; i < m->nparts; i++)
		if (m->parts[i].type == BP_MESSAGE && !m->parts[i].returned &&
		    !m->parts[i].attached)
			return &m->parts[i];
	return NULL;
}

/* ---- the order of belief ----------------------------------------------- */

#define TEXT_PARTS 4 /* text/plain parts read for a bounce's text */

struct bctx {
	struct bmime m;
	char buf[BOUNCE_TEXT_MAX]; /* one decoded part at a time */
	bool limited;
};

/* first_part - the first part of type t, outside attached messages
 * first, then inside them (a forwarded report). */
static const struct bpart *first_part(const struct bmime *m, enum bpart_type t)
{
	for (int attached = 0; attached < 2; attached++)
		for (unsigned i = 0; i < m->nparts; i++)
			if (m->parts[i].type == t && !m->parts[i].returned &&
			    m->parts[i].attached == (attached == 1))
				return &m->parts[i];
	return NULL;
}

static struct bspan content(struct bctx *c, const struct bpart *pt, size_t max)
{
	return bpart_content(pt, c->buf, sizeof(c->buf), max, &c->limited);
}

static void read_arf(struct bctx *c, const struct bpart *pt, struct bounce_report *out)
{
	char removal[256] = "", to[256] = "";
	bool complaint = arf_parse(content(c, pt, SIZE_MAX), out, removal, sizeof(removal));
	out->format = BOUNCE_FMT_ARF;
	const struct bpart *orig = returned_part(&c->m, pt->attached);
	if (orig) {
		struct bspan h = content(c, orig, BOUNCE_HEADER_MAX);
		original_fields(h, out, to, sizeof(to));
	}
	if (!out->arf_original_rcpt[0])
		memcpy(out->arf_original_rcpt, to, strlen(to) + 1);
	if (!complaint)
		return;
	struct bounce_rcpt r;
	memset(&r, 0, sizeof(r));
	r.kind = BOUNCE_COMPLAINT;
	memcpy(r.final_rcpt, out->arf_original_rcpt, sizeof(r.final_rcpt));
	breport_commit(out, &r);
}

/* read_texts - recipients from the first text/plain parts outside the
 * original (at most TEXT_PARTS of them) when nothing else gave any, and
 * the Message-ID of an inline copy of the original when inline_id. */
static void read_texts(struct bctx *c, bool inline_id, struct bounce_report *out)
{
	unsigned tried = 0;
	for (unsigned i = 0; i < c->m.nparts && tried < TEXT_PARTS; i++) {
		const struct bpart *pt = &c->m.parts[i];
		if (pt->type != BP_TEXT || pt->returned || pt->attached)
			continue;
		bool had = out->nrcpt > 0;
		if (had && !inline_id)
			return;
		tried++;
		struct bspan t = content(c, pt, BOUNCE_TEXT_MAX), id;
		if (!had && !btext_parse(t, &c->m.top, out))
			continue;
		if (inline_id && btext_inline_msgid(t, &id)) {
			bout_msgid(out->original_message_id, sizeof(out->original_message_id), id);
			return;
		}
		if (!had)
			return;
	}
}

bool bounce_parse(const char *msg, size_t len, struct bounce_report *out)
{
	struct bctx c;
	memset(out, 0, sizeof(*out));
	c.limited = false;
	bmime_walk(msg, len, &c.m);
	out->auto_reply = c.m.top.auto_reply;
	const struct bpart *arf = first_part(&c.m, BP_ARF), *dsn = first_part(&c.m, BP_DSN);
	if (arf) {
		read_arf(&c, arf, out);
	} else {
		if (dsn) {
			dsn_parse(content(&c, dsn, SIZE_MAX), out);
			if (out->nrcpt)
				out->format = BOUNCE_FMT_DSN;
		}
		const struct bpart *orig = returned_part(&c.m, dsn && out->nrcpt && dsn->attached);
		read_texts(&c, !orig, out);
		if (out->nrcpt && orig)
			original_fields(content(&c, orig, BOUNCE_HEADER_MAX), out, NULL, 0);
	}
	if (out->nrcpt && !out->original_message_id[0] && c.m.top.in_reply_to.n)
		bout_msgid(out->original_message_id, sizeof(out->original_message_id),
		           c.m.top.in_reply_to);
	out->limited = c.m.limited || c.limited;
	if (!out->nrcpt) {
		out->kind = BOUNCE_NONE;
		if (out->format != BOUNCE_FMT_ARF)
			out->format = BOUNCE_FMT_NONE;
		return false;
	}
	return true;
}

const char *bounce_kind_name(enum bounce_kind k)
{
	static const char *const names[] = {
		[BOUNCE_NONE] = "none",           [BOUNCE_DELIVERED] = "delivered",
		[BOUNCE_DELAYED] = "delayed",     [BOUNCE_FAILED] = "failed",
		[BOUNCE_COMPLAINT] = "complaint",
	};
	return (unsigned)k < RP_ARRAY_LEN(names) ? names[k] : "unknown";
}

const char *bounce_format_name(enum bounce_format f)
{
	static const char *const names[] = {
		[BOUNCE_FMT_NONE] = "none",
		[BOUNCE_FMT_DSN] = "dsn",
		[BOUNCE_FMT_ARF] = "arf",
		[BOUNCE_FMT_EXIM] = "exim",
		[BOUNCE_FMT_POSTFIX] = "postfix",
		[BOUNCE_FMT_QMAIL] = "qmail",
		[BOUNCE_FMT_TEXT_REPLY] = "text-reply",
		[BOUNCE_FMT_TEXT_STATUS] = "text-status",
	};
	return (unsigned)f < RP_ARRAY_LEN(names) ? names[f] : "unknown";
}
