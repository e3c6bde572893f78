/* bounce_mime.c - the MIME structure of an incoming report (see bounce_impl.h).
 *
 * One walk over the message: header fields (folded, bare LF, "Name :"
 * tolerated), Content-Type with its boundary and report-type, multipart
 * bodies split on their delimiter lines, message/rfc822 entered when it is
 * not a report's returned original. The result is a flat list of the
 * leaves that matter. Caps: BOUNCE_MAX_DEPTH levels, BOUNCE_MAX_PARTS
 * entities, BOUNCE_HEADER_MAX header bytes per entity; each level scans
 * only its own range once, so the whole walk reads the message at most
 * BOUNCE_MAX_DEPTH + 1 times. Recursion is at most BOUNCE_MAX_DEPTH deep.
 * Damage is tolerated: a missing boundary is guessed from the first "--"
 * line, a multipart without delimiters is read as text, an unclosed one
 * ends where its range ends.
 *
 * Decoding is done here rather than with base64_decode (base/base64.h),
 * which appends to a growing struct buf and rejects a whole part for one
 * stray character: this one writes into the caller's fixed buffer, stops
 * when it is full, and ignores characters outside the alphabet as RFC
 * 2045 6.8 asks.
 */
#include "bounce_impl.h"

#include <stdint.h>
#include <string.h>

#include "base/util.h"

static inline unsigned char lc(unsigned char c)
{
	return c >= 'A' && c <= 'Z' ? (unsigned char)(c + 32) : c;
}

static inline bool is_blank(char c)
{
	return c == ' ' || c == '\t';
}

bool bspan_is(struct bspan s, const char *name)
{
	size_t n = strlen(name);
	if (s.n != n)
		return false;
	for (size_t i = 0; i < n; i++)
		if (lc((unsigned char)s.p[i]) != lc((unsigned char)name[i]))
			return false;
	return true;
}

struct bspan btrim(struct bspan s)
{
	while (s.n && (is_blank(s.p[0]) || s.p[0] == '\r' || s.p[0] == '\n')) {
		s.p++;
		s.n--;
	}
	while (s.n && (is_blank(s.p[s.n - 1]) || s.p[s.n - 1] == '\r' || s.p[s.n - 1] == '\n'))
		s.n--;
	return s;
}

const char *bci_find(const char *p, size_t n, const char *needle)
{
	size_t m = strlen(needle);
	if (m > n)
		return NULL;
	unsigned char f = (unsigned char)needle[0];
	unsigned char fu = f >= 'a' && f <= 'z' ? (unsigned char)(f - 32) : f;
	for (size_t i = 0; i + m <= n; i++) {
		unsigned char c = (unsigned char)p[i];
		if (c != f && c != fu)
			continue;
		size_t k = 1;
		while (k < m && lc((unsigned char)p[i + k]) == (unsigned char)needle[k])
			k++;
		if (k == m)
			return p + i;
	}
	return NULL;
}

const char *bci_any(const char *p, size_t n, const char *const *needles)
{
	const char *best = NULL;
	for (; *needles; needles++) {
		/* Only a match that starts before the best so far matters. */
		size_t lim = best ? RP_MIN(n, (size_t)(best - p) + strlen(*needles)) : n;
		const char *at = bci_find(p, lim, *needles);
		if (at && (!best || at < best))
			best = at;
	}
	return best;
}

bool bline_next(const char *p, size_t n, size_t *off, struct bspan *line)
{
	if (*off >= n)
		return false;
	const char *s = p + *off;
	const char *nl = memchr(s, '\n', n - *off);
	size_t len = nl ? (size_t)(nl - s) : n - *off;
	*off += nl ? len + 1 : len;
	if (len && s[len - 1] == '\r')
		len--;
	line->p = s;
	line->n = len;
	return true;
}

/* blank_line_len - the length (line end included) of a line of blanks at
 * s[0..n), or 0 when the line has something else. */
static size_t blank_line_len(const char *s, size_t n)
{
	size_t i = 0;
	while (i < n && (is_blank(s[i]) || s[i] == '\r'))
		i++;
	if (i < n && s[i] == '\n')
		return i + 1;
	return i == n && n ? n : 0;
}

enum bfield_res bfield_next(const char *p, size_t n, size_t *off, struct bfield *f)
{
	size_t o = *off;
	if (o >= n)
		return BF_END;
	const char *s = p + o;
	size_t rest = n - o, i = 0;
	size_t bl = blank_line_len(s, rest);
	if (bl) {
		*off = o + bl;
		return BF_BLANK;
	}
	while (i < rest && s[i] != ':' && (unsigned char)s[i] > 32 && (unsigned char)s[i] < 127)
		i++;
	size_t name_len = i;
	while (i < rest && is_blank(s[i]))
		i++;
	if (!name_len || i >= rest || s[i] != ':')
		return BF_JUNK;
	i++;
	while (i < rest && is_blank(s[i]))
		i++;
	size_t v = i, e = rest, next = rest;
	for (size_t j = v; j < rest;) {
		const char *nl = memchr(s + j, '\n', rest - j);
		if (!nl)
			break;
		j = (size_t)(nl - s) + 1;
		/* A folded line starts with a blank and has more than blanks. */
		if (j < rest && is_blank(s[j]) && !blank_line_len(s + j, rest - j))
			continue;
		e = j - 1;
		next = j;
		break;
	}
	while (e > v && (s[e - 1] == '\r' || s[e - 1] == '\n'))
		e--;
	f->name = (struct bspan){ s, name_len };
	f->value = (struct bspan){ s + v, e - v };
	*off = o + next;
	return BF_FIELD;
}

/* ---- Content-Type ------------------------------------------------------ */

#define BOUNDARY_MAX 200 /* RFC 2046 says 70; longer ones are read as missing */

struct bctype {
	char type[64];                   /* "multipart/report", lower case; "" if none */
	char boundary[BOUNDARY_MAX + 1]; /* "" if none (or too long) */
	char report_type[32];            /* lower case */
};

static bool tspecial(unsigned char c)
{
	return c <= 32 || c >= 127 || strchr("()<>@,;:\\\"/[]?=", c);
}

/* skip_cfws - past blanks, line ends and (nested) comments. */
static size_t skip_cfws(const char *v, size_t n, size_t i)
{
	int depth = 0;
	while (i < n) {
		char c = v[i];
		if (depth && c == '\\' && i + 1 < n)
			i++;
		else if (c == '(')
			depth++;
		else if (c == ')' && depth)
			depth--;
		else if (!depth && !is_blank(c) && c != '\r' && c != '\n')
			break;
		i++;
	}
	return i;
}

/* param_value - a token or quoted string at v[i..n) into out (lower case
 * when fold); returns the index past it. A value that does not fit
 * leaves out "". */
static size_t param_value(const char *v, size_t n, size_t i, char *out, size_t size, bool fold)
{
	size_t o = 0;
	bool fits = true;
	if (i < n && v[i] == '"') {
		for (i++; i < n && v[i] != '"'; i++) {
			if (v[i] == '\\' && i + 1 < n)
				i++;
			if (v[i] == '\r' || v[i] == '\n')
				continue;
			if (o + 1 < size)
				out[o++] = fold ? (char)lc((unsigned char)v[i]) : v[i];
			else
				fits = false;
		}
		i += i < n;
	} else {
		for (; i < n && !tspecial((unsigned char)v[i]); i++) {
			if (o + 1 < size)
				out[o++] = fold ? (char)lc((unsigned char)v[i]) : v[i];
			else
				fits = false;
		}
	}
	out[fits ? o : 0] = '\0';
	return i;
}

static void ctype_parse(struct bspan val, struct bctype *ct)
{
	const char *v = val.p;
	size_t n = val.n, i = skip_cfws(v, n, 0), o = 0;
	memset(ct, 0, sizeof(*ct));
	while (i < n && (!tspecial((unsigned char)v[i]) || v[i] == '/')) {
		if (o + 1 < sizeof(ct->type))
			ct->type[o++] = (char)lc((unsigned char)v[i]);
		i++;
	}
	ct->type[o] = '\0';
	if (!strchr(ct->type, '/'))
		ct->type[0] = '\0'; /* RFC 2045 5.2: as if there were none */
	while (i < n) {
		/* Next parameter: past the ';' (skipping whatever damage precedes it). */
		while (i < n && v[i] != ';') {
			if (v[i] == '"') {
				char junk[2];
				i = param_value(v, n, i, junk, sizeof(junk), false);
				continue;
			}
			i++;
		}
		i = skip_cfws(v, n, i + 1);
		size_t name = i;
		while (i < n && !tspecial((unsigned char)v[i]))
			i++;
		struct bspan nm = { v + name, i - name };
		i = skip_cfws(v, n, i);
		if (i >= n || v[i] != '=')
			continue;
		i = skip_cfws(v, n, i + 1);
		if (bspan_is(nm, "boundary"))
			i = param_value(v, n, i, ct->boundary, sizeof(ct->boundary), false);
		else if (bspan_is(nm, "report-type"))
			i = param_value(v, n, i, ct->report_type, sizeof(ct->report_type), true);
	}
}

/* ---- the top-level header ---------------------------------------------- */

static const char *const daemon_from[] = {
	"mailer-daemon", "mailer_daemon",      "postmaster",        "mail delivery",
	"maildelivery",  "mail administrator", "microsoftexchange", NULL,
};

static const char *const bounce_subjects[] = {
	"undeliver",     "delivery status notification", "delivery failure",    "failure notice",
	"returned mail", "mail delivery failed",         "delivery has failed", "non-delivery",
	"not delivered", "could not be delivered",       "delivery failed",     "delivery delayed",
	"delayed mail",  "delivery notification",        "mail system error",   NULL,
};

static const char *const autoreply_subjects[] = {
	"auto:",         "automatic reply",   "autoreply", "auto-reply", "auto reply",
	"out of office", "out of the office", "vacation",  NULL,
};

/* subject_starts - the subject starts with one of prefixes. */
static bool subject_starts(struct bspan s, const char *const *prefixes)
{
	for (; *prefixes; prefixes++)
		if (rp_strcaseprefix(s.p, s.n, *prefixes))
			return true;
	return false;
}

static void top_field(const struct bfield *f, struct btop *top)
{
	struct bspan v = btrim(f->value);
	if (bspan_is(f->name, "From")) {
		top->from_daemon = bci_any(v.p, v.n, daemon_from) != NULL;
	} else if (bspan_is(f->name, "Subject")) {
		top->subject_bounce = bci_any(v.p, v.n, bounce_subjects) != NULL;
		if (subject_starts(v, autoreply_subjects))
			top->auto_reply = top->subject_auto = true;
	} else if (bspan_is(f->name, "Auto-Submitted")) {
		if (v.n && !rp_strcaseprefix(v.p, v.n, "no"))
			top->auto_reply = true;
	} else if (bspan_is(f->name, "X-Autoreply") || bspan_is(f->name, "X-Autorespond") ||
	           bspan_is(f->name, "X-Autoresponse")) {
		top->auto_reply = true;
	} else if (bspan_is(f->name, "Precedence")) {
		if (v.n == 10 && rp_strcaseprefix(v.p, v.n, "auto_reply"))
			top->auto_reply = true;
	} else if (bspan_is(f->name, "X-Failed-Recipients")) {
		if (!top->failed.n)
			top->failed = v;
	} else if (bspan_is(f->name, "In-Reply-To")) {
		if (!top->in_reply_to.n)
			top->in_reply_to = v;
	}
}

/* ---- the walk ---------------------------------------------------------- */

enum {
	F_IN_REPORT = 1, /* the parent is multipart/report */
	F_RETURNED = 2,  /* inside a report's returned original */
	F_ATTACHED = 4,  /* inside an attached (forwarded) message */
	F_DIGEST = 8,    /* the parent is multipart/digest: default message/rfc822 */
};

struct bentity {
	struct bctype ct;
	enum bcte cte;
	size_t body; /* offset of the body */
	bool cut;    /* the header section did not end within BOUNCE_HEADER_MAX */
};

static void entity_headers(const char *p, size_t n, struct btop *top, struct bentity *e)
{
	size_t lim = RP_MIN(n, (size_t)BOUNCE_HEADER_MAX), off = 0;
	struct bspan ctype = { "", 0 };
	struct bfield f;
	e->cte = CTE_IDENTITY;
	e->body = n;
	e->cut = false;
	for (;;) {
		enum bfield_res r = bfield_next(p, lim, &off, &f);
		if (r != BF_FIELD) {
			if (r != BF_END)
				e->body = off;
			e->cut = r == BF_END && lim < n;
			break;
		}
		if (bspan_is(f.name, "Content-Type") && !ctype.n) {
			ctype = f.value;
		} else if (bspan_is(f.name, "Content-Transfer-Encoding")) {
			struct bspan v = btrim(f.value);
			if (bspan_is(v, "base64"))
				e->cte = CTE_BASE64;
			else if (bspan_is(v, "quoted-printable"))
				e->cte = CTE_QP;
		} else if (top) {
			top_field(&f, top);
		}
	}
	ctype_parse(ctype, &e->ct);
}

/* leaf_type - the part type for a (lower-case) media type; false when
 * the parser has no use for it. */
static bool leaf_type(const char *type, bool digest, enum bpart_type *t)
{
	static const struct {
		const char *name;
		enum bpart_type t;
	} types[] = {
		{ "text/plain", BP_TEXT },
		{ "message/delivery-status", BP_DSN },
		{ "message/global-delivery-status", BP_DSN },
		{ "message/feedback-report", BP_ARF },
		{ "text/rfc822-headers", BP_HEADERS },
		{ "message/global-headers", BP_HEADERS },
		{ "message/rfc822", BP_MESSAGE },
		{ "message/global", BP_MESSAGE },
	};
	if (!type[0]) {
		*t = digest ? BP_MESSAGE : BP_TEXT;
		return true;
	}
	for (size_t i = 0; i < RP_ARRAY_LEN(types); i++) {
		if (!strcmp(type, types[i].name)) {
			*t = types[i].t;
			return true;
		}
	}
	return false;
}

static struct bpart *add_leaf(struct bmime *m, enum bpart_type t, enum bcte cte, const char *p,
                              size_t n, unsigned flags)
{
	if (m->nparts >= BOUNCE_MAX_PARTS) {
		m->limited = true;
		return NULL;
	}
	struct bpart *pt = &m->parts[m->nparts++];
	pt->type = t;
	pt->cte = cte;
	pt->body = (struct bspan){ p, n };
	pt->returned =
	    (flags & F_RETURNED) || t == BP_HEADERS || ((flags & F_IN_REPORT) && t == BP_MESSAGE);
	pt->attached = (flags & F_ATTACHED) != 0;
	return pt;
}

/* delimiter - 1 when line is "--boundary", 2 when "--boundary--" (blanks
 * may follow), else 0. */
static int delimiter(struct bspan line, const char *b, size_t bl)
{
	if (line.n < bl + 2 || line.p[0] != '-' || line.p[1] != '-' || memcmp(line.p + 2, b, bl))
		return 0;
	size_t i = bl + 2;
	int kind = 1;
	if (i + 2 <= line.n && line.p[i] == '-' && line.p[i + 1] == '-') {
		kind = 2;
		i += 2;
	}
	for (; i < line.n; i++)
		if (!is_blank(line.p[i]))
			return 0;
	return kind;
}

/* boundary_guess - the boundary of the first "--token" line of p[0..n)
 * into out; its length, or 0. */
static size_t boundary_guess(const char *p, size_t n, char *out, size_t size)
{
	size_t off = 0;
	struct bspan line;
	while (bline_next(p, n, &off, &line)) {
		line = btrim(line);
		if (line.n < 3 || line.p[0] != '-' || line.p[1] != '-')
			continue;
		if (line.n - 2 >= size || memchr(line.p, ' ', line.n) ||
		    memchr(line.p, '\t', line.n))
			continue;
		memcpy(out, line.p + 2, line.n - 2);
		out[line.n - 2] = '\0';
		return line.n - 2;
	}
	return 0;
}

static void walk_entity(struct bmime *m, const char *p, size_t n, unsigned depth, unsigned flags);

/* walk_multipart - the body parts of a multipart body p[0..n). */
static void walk_multipart(struct bmime *m, const char *p, size_t n, const char *boundary,
                           unsigned depth, unsigned flags)
{
	char guess[BOUNDARY_MAX + 1];
	size_t bl = strlen(boundary);
	if (!bl) {
		bl = boundary_guess(p, n, guess, sizeof(guess));
		boundary = guess;
	}
	size_t off = 0, start = SIZE_MAX;
	bool seen = false;
	struct bspan line;
	while (bl) {
		size_t ls = off;
		if (!bline_next(p, n, &off, &line))
			break;
		int d = delimiter(line, boundary, bl);
		if (!d)
			continue;
		seen = true;
		if (m->visited >= BOUNCE_MAX_PARTS) { /* stop reading at once */
			m->limited = true;
			return;
		}
		if (start != SIZE_MAX) {
			size_t end = ls; /* the line end before a delimiter is part of it */
			if (end > start && p[end - 1] == '\n')
				end--;
			if (end > start && p[end - 1] == '\r')
				end--;
			walk_entity(m, p + start, end - start, depth, flags);
		}
		start = d == 1 ? off : SIZE_MAX;
		if (d == 2)
			break;
	}
	if (start != SIZE_MAX) /* never closed: the part runs to the end */
		walk_entity(m, p + start, n - start, depth, flags);
	if (!seen) /* no structure at all: still worth reading as text */
		add_leaf(m, BP_TEXT, CTE_IDENTITY, p, n, flags);
}

static void walk_entity(struct bmime *m, const char *p, size_t n, unsigned depth, unsigned flags)
{
	if (m->visited >= BOUNCE_MAX_PARTS) {
		m->limited = true;
		return;
	}
	m->visited++;
	struct bentity e;
	entity_headers(p, n, depth == 0 ? &m->top : NULL, &e);
	if (e.cut)
		m->limited = true; /* and the body is empty: no telling where it starts */
	const char *body = p + e.body;
	size_t bn = n - e.body;
	unsigned keep = flags & (F_RETURNED | F_ATTACHED);
	if (!strncmp(e.ct.type, "multipart/", 10)) {
		if (depth + 1 > BOUNCE_MAX_DEPTH) {
			m->limited = true;
			return;
		}
		if (!strcmp(e.ct.type, "multipart/report"))
			keep |= F_IN_REPORT;
		else if (!strcmp(e.ct.type, "multipart/digest"))
			keep |= F_DIGEST;
		walk_multipart(m, body, bn, e.ct.boundary, depth + 1, keep);
		return;
	}
	enum bpart_type t;
	if (!leaf_type(e.ct.type, flags & F_DIGEST, &t))
		return;
	const struct bpart *pt = add_leaf(m, t, e.cte, body, bn, flags);
	/* A message that is not a returned original may carry a report
	 * (a forwarded bounce): read it too. Encoded ones (RFC 2046 5.2.1
	 * forbids them) are only a leaf. */
	if (pt && t == BP_MESSAGE && !pt->returned && e.cte == CTE_IDENTITY) {
		if (depth + 1 > BOUNCE_MAX_DEPTH)
			m->limited = true;
		else
			walk_entity(m, body, bn, depth + 1, keep | F_ATTACHED);
	}
}

void bmime_walk(const char *msg, size_t len, struct bmime *m)
{
	memset(m, 0, sizeof(*m));
	walk_entity(m, msg ? msg : "", msg ? len : 0, 0, 0);
}

/* ---- content transfer encodings ---------------------------------------- */

static int b64_value(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+' || c == '-')
		return 62;
	if (c == '/' || c == '_')
		return 63;
	return -1;
}

/* b64_decode - RFC 2045 6.8: characters outside the alphabet are ignored;
 * '=' ends a quantum (decoding goes on after it, for producers that
 * concatenate encoded pieces). Stops when out is full. */
static size_t b64_decode(const char *p, size_t n, char *out, size_t cap, bool *cut)
{
	uint32_t acc = 0;
	int bits = 0;
	size_t o = 0;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)p[i];
		if (c == '=') {
			acc = 0;
			bits = 0;
			continue;
		}
		int v = b64_value(c);
		if (v < 0)
			continue;
		acc = ((acc << 6) | (uint32_t)v) & 0xffffff;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			if (o == cap) {
				*cut = true;
				return o;
			}
			out[o++] = (char)((acc >> bits) & 0xff);
		}
	}
	return o;
}

static int hex_value(unsigned char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	c = lc(c);
	return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* qp_decode - RFC 2045 6.7: "=XX" is a byte, "=" at a line end (blanks
 * may follow it) a soft line break; a malformed "=" stays as it is. */
static size_t qp_decode(const char *p, size_t n, char *out, size_t cap, bool *cut)
{
	size_t o = 0;
	for (size_t i = 0; i < n; i++) {
		char c = p[i];
		if (c == '=') {
			int hi = i + 1 < n ? hex_value((unsigned char)p[i + 1]) : -1;
			int lo = i + 2 < n ? hex_value((unsigned char)p[i + 2]) : -1;
			if (hi >= 0 && lo >= 0) {
				c = (char)(hi << 4 | lo);
				i += 2;
			} else {
				size_t j = i + 1;
				while (j < n && is_blank(p[j]))
					j++;
				if (j < n && p[j] == '\r')
					j++;
				if (j >= n || p[j] == '\n') {
					i = j;
					continue;
				}
			}
		}
		if (o == cap) {
			*cut = true;
			return o;
		}
		out[o++] = c;
	}
	return o;
}

struct bspan bpart_content(const struct bpart *pt, char *buf, size_t cap, size_t max, bool *limited)
{
	struct bspan s = pt->body;
	switch (pt->cte) {
	case CTE_IDENTITY:
		if (s.n > max) {
			s.n = max;
			*limited = true;
		}
		return s;
	case CTE_BASE64:
		return (struct bspan){ buf, b64_decode(s.p, s.n, buf, cap, limited) };
	case CTE_QP:
		return (struct bspan){ buf, qp_decode(s.p, s.n, buf, cap, limited) };
	}
	return (struct bspan){ "", 0 };
}
