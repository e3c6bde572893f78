/* imap_mime.c - a MIME parse (RFC 2045, 2046) into a tree of entities, and
 * BODYSTRUCTURE / BODY (RFC 3501 7.4.2) and section lookup from it (see
 * imap_mime.h). Sizes are octets of the body as stored (transfer encoding
 * kept); line counts are LFs. A multipart part's body ends before the line
 * end that belongs to the next delimiter (RFC 2046 5.1.1).
 */
#include "imap_mime.h"

#include <stdlib.h>
#include <strings.h>

#include "base/msg_header.h"
#include "base/util.h"
#include "imap_parse.h"

#define BOUNDARY_MAX 200 /* RFC 2046 says 70; be kind */

/* ---- header sections ---------------------------------------------------- */

/* field_name_len - a field name followed by ':' at p, or 0. */
static size_t field_name_len(const char *p, size_t n)
{
	size_t i = 0;
	while (i < n && p[i] != ':') {
		unsigned char c = (unsigned char)p[i];
		if (c < 33 || c > 126)
			return 0;
		i++;
	}
	return i < n ? i : 0;
}

bool imap_header_next(const char *hdr, size_t len, size_t *off, struct imap_header_field *f)
{
	size_t o = *off;
	if (o >= len)
		return false;
	const char *nl = memchr(hdr + o, '\n', len - o);
	size_t next = nl ? (size_t)(nl - hdr) + 1 : len;
	size_t fl = field_name_len(hdr + o, next - o);
	if (!fl)
		return false;
	f->name = hdr + o;
	f->name_len = fl;
	size_t v = o + fl + 1;
	while (v < next && (hdr[v] == ' ' || hdr[v] == '\t'))
		v++;
	size_t e = next;
	while (e < len && (hdr[e] == ' ' || hdr[e] == '\t')) {
		nl = memchr(hdr + e, '\n', len - e);
		e = nl ? (size_t)(nl - hdr) + 1 : len;
	}
	size_t ve = e;
	if (ve > v && hdr[ve - 1] == '\n')
		ve--;
	if (ve > v && hdr[ve - 1] == '\r')
		ve--;
	f->value = hdr + v;
	f->value_len = ve > v ? ve - v : 0;
	f->start = o;
	f->end = e;
	*off = e;
	return true;
}

bool imap_header_find(const char *hdr, size_t len, const char *name, const char **v, size_t *vl)
{
	size_t off = 0, nl = strlen(name);
	struct imap_header_field f;
	while (imap_header_next(hdr, len, &off, &f)) {
		if (f.name_len == nl && !strncasecmp(f.name, name, nl)) {
			*v = f.value;
			*vl = f.value_len;
			return true;
		}
	}
	return false;
}

const char *imap_unfold(struct buf *out, const char *v, size_t n, size_t *outlen)
{
	buf_reset(out);
	for (size_t i = 0; i < n; i++)
		if (v[i] != '\r' && v[i] != '\n')
			buf_append(out, v + i, 1);
	if (!out->data) {
		*outlen = 0;
		return "";
	}
	char *p = buf_head(out);
	size_t len = buf_used(out);
	while (len && (p[len - 1] == ' ' || p[len - 1] == '\t'))
		len--;
	while (len && (*p == ' ' || *p == '\t')) {
		p++;
		len--;
	}
	*outlen = len;
	return p;
}

/* ---- Content-* values (RFC 2045 tokens, quoted strings, comments) ------- */

struct mv {
	const char *p, *e;
};

static bool tspecial(unsigned char c)
{
	return c && strchr("()<>@,;:\\\"/[]?=", c) != NULL;
}

static bool token_char(unsigned char c)
{
	return c > ' ' && c < 0x7f && !tspecial(c);
}

static void mv_skip(struct mv *s)
{
	while (s->p < s->e) {
		char c = *s->p;
		if (c == ' ' || c == '\t' || c == '\r' || c == '\n') {
			s->p++;
		} else if (c == '(') {
			unsigned depth = 0;
			do {
				if (*s->p == '\\' && s->p + 1 < s->e)
					s->p++;
				else if (*s->p == '(')
					depth++;
				else if (*s->p == ')')
					depth--;
				s->p++;
			} while (depth && s->p < s->e);
		} else {
			return;
		}
	}
}

static bool mv_token(struct mv *s, const char **t, size_t *n)
{
	mv_skip(s);
	const char *b = s->p;
	while (s->p < s->e && token_char((unsigned char)*s->p))
		s->p++;
	*t = b;
	*n = (size_t)(s->p - b);
	return *n > 0;
}

/* mv_value - a parameter value: a quoted string (unescaped into tmp when
 * tmp is given, else raw between the quotes), or anything up to ';'. */
static bool mv_value(struct mv *s, struct buf *tmp, const char **v, size_t *n)
{
	mv_skip(s);
	if (s->p < s->e && *s->p == '"') {
		const char *b = ++s->p;
		if (tmp)
			buf_reset(tmp);
		while (s->p < s->e && *s->p != '"') {
			if (*s->p == '\\' && s->p + 1 < s->e)
				s->p++;
			if (tmp && *s->p != '\r' && *s->p != '\n')
				buf_append(tmp, s->p, 1);
			s->p++;
		}
		*v = tmp ? (buf_used(tmp) ? buf_head(tmp) : "") : b;
		*n = tmp ? buf_used(tmp) : (size_t)(s->p - b);
		if (s->p < s->e)
			s->p++;
		return true;
	}
	const char *b = s->p;
	while (s->p < s->e && *s->p != ';' && *s->p != ' ' && *s->p != '\t' && *s->p != '\r' &&
	       *s->p != '\n' && *s->p != '(')
		s->p++;
	*v = b;
	*n = (size_t)(s->p - b);
	return *n > 0;
}

/* mv_param - the next "; name=value"; false when there is none. */
static bool mv_param(struct mv *s, struct buf *tmp, const char **name, size_t *nl, const char **v,
                     size_t *vl)
{
	for (;;) {
		mv_skip(s);
		if (s->p >= s->e)
			return false;
		if (*s->p != ';') { /* junk before the next parameter */
			while (s->p < s->e && *s->p != ';')
				s->p++;
			continue;
		}
		s->p++;
		if (!mv_token(s, name, nl))
			continue;
		mv_skip(s);
		if (s->p >= s->e || *s->p != '=')
			continue;
		s->p++;
		if (mv_value(s, tmp, v, vl))
			return true;
	}
}

/* param_get - a parameter of a Content-Type or -Disposition tail, raw. */
static bool param_get(const char *p, size_t n, const char *name, const char **v, size_t *vl)
{
	struct mv s = { p, p + n };
	const char *pn;
	size_t pnl, len = strlen(name);
	while (mv_param(&s, NULL, &pn, &pnl, v, vl))
		if (pnl == len && !strncasecmp(pn, name, len))
			return true;
	return false;
}

/* ---- parsing ------------------------------------------------------------ */

static bool is(const char *p, size_t n, const char *s)
{
	return strlen(s) == n && !strncasecmp(p, s, n);
}

static uint32_t count_lf(const char *p, size_t n)
{
	uint32_t k = 0;
	const char *e = p + n;
	while (p < e && (p = memchr(p, '\n', (size_t)(e - p))) != NULL) {
		k++;
		p++;
	}
	return k;
}

/* new_part - a fresh entity under parent (-1 for the root); -1 when full. */
static int new_part(struct imap_mime *m, int parent)
{
	if (m->n == IMAP_MIME_PARTS)
		return -1;
	int i = (int)m->n++;
	struct imap_mime_part *p = &m->part[i];
	memset(p, 0, sizeof(*p));
	p->parent = (int16_t)parent;
	p->child = p->next = -1;
	if (parent >= 0) {
		struct imap_mime_part *up = &m->part[parent];
		if (up->child < 0) {
			up->child = (int16_t)i;
		} else {
			int c = up->child;
			while (m->part[c].next >= 0)
				c = m->part[c].next;
			m->part[c].next = (int16_t)i;
		}
		up->nchildren++;
	}
	return i;
}

/* content_type - type and subtype from the entity's Content-Type, or the
 * default (text/plain, message/rfc822 in a digest). */
static void content_type(struct imap_mime *m, struct imap_mime_part *p, bool digest)
{
	const char *v;
	size_t vl;
	const char *hdr = m->msg + p->hdr;
	if (imap_header_find(hdr, p->hdr_len, "Content-Type", &v, &vl)) {
		struct mv s = { v, v + vl };
		const char *t, *st;
		size_t tl, stl;
		if (mv_token(&s, &t, &tl) && (mv_skip(&s), s.p < s.e && *s.p == '/') &&
		    (s.p++, mv_token(&s, &st, &stl))) {
			p->type = t;
			p->type_len = (uint32_t)tl;
			p->subtype = st;
			p->subtype_len = (uint32_t)stl;
			p->params = s.p;
			p->params_len = (size_t)(s.e - s.p);
			return;
		}
	}
	p->defaulted = true;
	p->type = digest ? "message" : "text";
	p->subtype = digest ? "rfc822" : "plain";
	p->type_len = (uint32_t)strlen(p->type);
	p->subtype_len = (uint32_t)strlen(p->subtype);
	p->params = "";
	p->params_len = 0;
}

static void parse_entity(struct imap_mime *m, int i, size_t start, size_t end, unsigned depth,
                         bool digest);

/* delimiter - whether the line [l, le) is "--boundary" ("--" after it when
 * closing; trailing blanks allowed). */
static bool delimiter(const char *l, size_t len, const char *b, size_t bl, bool *closing)
{
	if (len < bl + 2 || l[0] != '-' || l[1] != '-' || memcmp(l + 2, b, bl))
		return false;
	size_t k = bl + 2;
	*closing = len >= k + 2 && l[k] == '-' && l[k + 1] == '-';
	if (*closing)
		k += 2;
	for (; k < len; k++)
		if (l[k] != ' ' && l[k] != '\t' && l[k] != '\r')
			return false;
	return true;
}

/* add_child - entity [s, e) of multipart i. False when no room is left. */
static bool add_child(struct imap_mime *m, int i, size_t s, size_t e, unsigned depth, bool digest)
{
	int c = new_part(m, i);
	if (c < 0)
		return false;
	parse_entity(m, c, s, e, depth + 1, digest);
	return true;
}

/* trim_tail - entities from first on whose body ends at pos end at to
 * instead: the line end before a delimiter is the delimiter's. */
static void trim_tail(struct imap_mime *m, unsigned first, size_t pos, size_t to)
{
	for (unsigned k = first; k < m->n; k++) {
		struct imap_mime_part *p = &m->part[k];
		if (p->body + p->body_len != pos)
			continue;
		if (p->body > to) { /* no body: the header ran up to the delimiter */
			p->hdr_len = to > p->hdr ? to - p->hdr : 0;
			p->body = to;
			p->body_len = 0;
			continue;
		}
		p->body_len = to - p->body;
		if (p->lines)
			p->lines--; /* the line end taken away held one LF */
	}
}

/* multipart - the body parts of entity i between its boundaries. A part
 * ends before the line end that precedes the next delimiter, unless a
 * close delimiter of a multipart inside it ended that line: then the line
 * end is that close delimiter's (as Dovecot counts). */
static void multipart(struct imap_mime *m, int i, unsigned depth)
{
	struct imap_mime_part *p = &m->part[i];
	const char *b;
	size_t bl;
	p->kind = IMAP_MIME_MULTIPART;
	if (!param_get(p->params, p->params_len, "boundary", &b, &bl) || !bl || bl > BOUNDARY_MAX)
		return;
	bool digest = is(p->subtype, p->subtype_len, "digest");
	const char *msg = m->msg;
	size_t pos = p->body, end = p->body + p->body_len, part_start = 0;
	bool in_part = false, closing = false;
	while (pos < end && !closing) {
		const char *nl = memchr(msg + pos, '\n', end - pos);
		size_t le = nl ? (size_t)(nl - msg) : end;
		if (delimiter(msg + pos, le - pos, b, bl, &closing)) {
			if (in_part) {
				size_t ce = pos; /* the line end before "--" is the delimiter's */
				if (ce > part_start && msg[ce - 1] == '\n')
					ce--;
				if (ce > part_start && msg[ce - 1] == '\r')
					ce--;
				unsigned first = m->n;
				if (!add_child(m, i, part_start, pos, depth, digest))
					return;
				if (m->close_end != pos)
					trim_tail(m, first, pos, ce);
			}
			if (closing)
				m->close_end = nl ? le + 1 : end;
			in_part = true;
			part_start = nl ? le + 1 : end;
		}
		pos = nl ? le + 1 : end;
	}
	if (in_part && !closing) /* no close delimiter: the last part runs to the end */
		add_child(m, i, part_start, end, depth, digest);
}

static void parse_entity(struct imap_mime *m, int i, size_t start, size_t end, unsigned depth,
                         bool digest)
{
	struct imap_mime_part *p = &m->part[i];
	struct msg_header_info hi;
	msg_header_scan(m->msg + start, end - start, &hi);
	p->hdr = start;
	p->hdr_len = hi.end;
	p->body = start + hi.end;
	p->body_len = end - p->body;
	content_type(m, p, digest);
	bool text = is(p->type, p->type_len, "text");
	bool message =
	    is(p->type, p->type_len, "message") && is(p->subtype, p->subtype_len, "rfc822");
	if (text || message)
		p->lines = count_lf(m->msg + p->body, p->body_len);
	if (depth >= IMAP_MIME_DEPTH)
		return;
	if (is(p->type, p->type_len, "multipart")) {
		multipart(m, i, depth);
	} else if (message) {
		int c = new_part(m, i);
		if (c < 0)
			return;
		p->kind = IMAP_MIME_MESSAGE;
		m->part[c].is_message = true;
		parse_entity(m, c, p->body, end, depth + 1, false);
	}
}

void imap_mime_parse(struct imap_mime *m, const char *msg, size_t len)
{
	m->msg = msg;
	m->len = len;
	m->n = 0;
	m->close_end = 0;
	int root = new_part(m, -1);
	m->part[root].is_message = true;
	parse_entity(m, root, 0, len, 0, false);
}

int imap_mime_find(const struct imap_mime *m, const uint32_t *path, unsigned n)
{
	/* As Dovecot walks it: a part that is not multipart has only part 1,
	 * itself, and only as the last number unless it is message/rfc822;
	 * a message/rfc822 part followed by more numbers is its message. */
	int p = 0;
	for (unsigned k = 0; k < n; k++) {
		bool last = k + 1 == n;
		if (!path[k])
			return -1;
		if (m->part[p].kind == IMAP_MIME_MULTIPART) {
			p = m->part[p].child;
			for (uint32_t j = 1; p >= 0 && j < path[k]; j++)
				p = m->part[p].next;
			if (p < 0)
				return -1;
		} else if (path[k] != 1 || (!last && m->part[p].kind != IMAP_MIME_MESSAGE)) {
			return -1;
		}
		if (!last && m->part[p].kind == IMAP_MIME_MESSAGE) {
			p = m->part[p].child;
			if (p < 0)
				return -1;
		}
	}
	return p;
}

/* ---- BODYSTRUCTURE ------------------------------------------------------ */

#define EMPTY_BODY "(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 0 0)"
#define EMPTY_BODY_EXT                                                                             \
	"(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 0 0 NIL NIL NIL NIL)"

/* put_params - "(" name value ... ")" of a Content-* tail, or NIL; text
 * without a charset says the default (RFC 2045 5.2), as Dovecot does. */
static void put_params(struct buf *out, const char *p, size_t n, struct buf *tmp, bool text)
{
	struct mv s = { p, p + n };
	const char *name, *v;
	size_t nl, vl;
	bool any = text && !param_get(p, n, "charset", &v, &vl);
	if (any)
		buf_puts(out, "(\"charset\" \"us-ascii\"");
	while (mv_param(&s, tmp, &name, &nl, &v, &vl)) {
		buf_append(out, any ? " " : "(", 1);
		any = true;
		imap_put_string(out, name, nl);
		buf_append(out, " ", 1);
		imap_put_string(out, v, vl);
	}
	buf_puts(out, any ? ")" : "NIL");
}

/* put_field - an nstring: the unfolded value of a field of the entity. */
static void put_field(struct buf *out, const char *hdr, size_t len, const char *name,
                      struct buf *tmp)
{
	const char *v;
	size_t vl, n;
	if (!imap_header_find(hdr, len, name, &v, &vl)) {
		buf_append(out, "NIL", 3);
		return;
	}
	const char *u = imap_unfold(tmp, v, vl, &n);
	imap_put_string(out, u, n);
}

/* put_extension - disposition, language and location (all bodies). */
static void put_extension(struct buf *out, const char *hdr, size_t len, struct buf *tmp)
{
	const char *v;
	size_t vl;
	buf_append(out, " ", 1);
	struct mv s;
	const char *t;
	size_t tl;
	if (imap_header_find(hdr, len, "Content-Disposition", &v, &vl) &&
	    (s = (struct mv){ v, v + vl }, mv_token(&s, &t, &tl))) {
		buf_append(out, "(", 1);
		imap_put_string(out, t, tl);
		buf_append(out, " ", 1);
		put_params(out, s.p, (size_t)(s.e - s.p), tmp, false);
		buf_append(out, ")", 1);
	} else {
		buf_append(out, "NIL", 3);
	}
	buf_append(out, " ", 1);
	unsigned nlang = 0;
	if (imap_header_find(hdr, len, "Content-Language", &v, &vl)) {
		s = (struct mv){ v, v + vl };
		size_t mark = buf_used(out);
		while (s.p < s.e) {
			if (!mv_token(&s, &t, &tl)) {
				s.p++; /* a comma or junk */
				continue;
			}
			buf_append(out, nlang++ ? " " : "(", 1);
			imap_put_string(out, t, tl);
		}
		if (nlang == 1) { /* one tag: a plain string */
			memmove(buf_head(out) + mark, buf_head(out) + mark + 1,
			        buf_used(out) - mark - 1);
			out->len--;
		} else if (nlang) {
			buf_append(out, ")", 1);
		}
	}
	if (!nlang)
		buf_append(out, "NIL", 3);
	buf_append(out, " ", 1);
	put_field(out, hdr, len, "Content-Location", tmp);
}

static void structure(struct buf *out, const struct imap_mime *m, int i, bool ext, struct buf *tmp);

static void multipart_structure(struct buf *out, const struct imap_mime *m, int i, bool ext,
                                struct buf *tmp)
{
	const struct imap_mime_part *p = &m->part[i];
	const char *hdr = m->msg + p->hdr;
	buf_append(out, "(", 1);
	if (p->child < 0)
		buf_puts(out, ext ? EMPTY_BODY_EXT : EMPTY_BODY);
	for (int c = p->child; c >= 0; c = m->part[c].next)
		structure(out, m, c, ext, tmp);
	buf_append(out, " ", 1);
	imap_put_string(out, p->subtype, p->subtype_len);
	if (ext) {
		buf_append(out, " ", 1);
		put_params(out, p->params, p->params_len, tmp, false);
		put_extension(out, hdr, p->hdr_len, tmp);
	}
	buf_append(out, ")", 1);
}

static void structure(struct buf *out, const struct imap_mime *m, int i, bool ext, struct buf *tmp)
{
	const struct imap_mime_part *p = &m->part[i];
	const char *hdr = m->msg + p->hdr;
	if (p->kind == IMAP_MIME_MULTIPART) {
		multipart_structure(out, m, i, ext, tmp);
		return;
	}
	bool text = is(p->type, p->type_len, "text");
	bool opaque =
	    p->kind == IMAP_MIME_LEAF &&
	    (is(p->type, p->type_len, "multipart") ||
	     (is(p->type, p->type_len, "message") && is(p->subtype, p->subtype_len, "rfc822")));
	buf_append(out, "(", 1);
	if (opaque) { /* not looked into (too deep): no structure to show */
		buf_puts(out, "\"application\" \"octet-stream\" NIL");
	} else {
		imap_put_string(out, p->type, p->type_len);
		buf_append(out, " ", 1);
		imap_put_string(out, p->subtype, p->subtype_len);
		buf_append(out, " ", 1);
		put_params(out, p->params, p->params_len, tmp, text);
	}
	buf_append(out, " ", 1);
	put_field(out, hdr, p->hdr_len, "Content-ID", tmp);
	buf_append(out, " ", 1);
	put_field(out, hdr, p->hdr_len, "Content-Description", tmp);
	buf_append(out, " ", 1);
	const char *v, *t;
	size_t vl, tl;
	struct mv s;
	if (imap_header_find(hdr, p->hdr_len, "Content-Transfer-Encoding", &v, &vl) &&
	    (s = (struct mv){ v, v + vl }, mv_token(&s, &t, &tl)))
		imap_put_string(out, t, tl);
	else
		buf_puts(out, "\"7bit\"");
	buf_printf(out, " %zu", p->body_len);
	if (p->kind == IMAP_MIME_MESSAGE) {
		const struct imap_mime_part *c = &m->part[p->child];
		buf_append(out, " ", 1);
		imap_envelope(out, m->msg + c->hdr, c->hdr_len);
		buf_append(out, " ", 1);
		structure(out, m, p->child, ext, tmp);
		buf_printf(out, " %u", p->lines);
	} else if (text && !opaque) {
		buf_printf(out, " %u", p->lines);
	}
	if (ext) {
		buf_append(out, " ", 1);
		put_field(out, hdr, p->hdr_len, "Content-MD5", tmp);
		put_extension(out, hdr, p->hdr_len, tmp);
	}
	buf_append(out, ")", 1);
}

void imap_bodystructure(struct buf *out, const struct imap_mime *m, unsigned i, bool extended)
{
	struct buf tmp = { 0 };
	structure(out, m, (int)i, extended, &tmp);
	buf_free(&tmp);
}
