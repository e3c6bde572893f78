/* imap_fetch.c - FETCH data items: parsing and one message's response
 * (see imap_fetch.h). Sections are cut from the stored message as it is
 * (no decoding); a section that does not exist is empty (as Dovecot says).
 */
#include "imap_fetch.h"

#include <ctype.h>
#include <stdlib.h>
#include <strings.h>

#include "base/msg_header.h"
#include "base/util.h"
#include "queue/spool.h"

/* ---- parsing ------------------------------------------------------------ */

static struct imap_fetch_item *add(struct imap_fetch *f, enum imap_fetch_att att)
{
	if (f->n == f->cap) {
		f->cap = f->cap ? 2 * f->cap : 8;
		f->items = xrealloc(f->items, f->cap * sizeof(*f->items));
	}
	struct imap_fetch_item *it = &f->items[f->n++];
	memset(it, 0, sizeof(*it));
	it->att = (uint8_t)att;
	switch (att) {
	case IMAP_FA_FLAGS:
		f->has_flags = true;
		break;
	case IMAP_FA_UID:
		f->has_uid = true;
		break;
	case IMAP_FA_ENVELOPE:
	case IMAP_FA_RFC822_HEADER:
		f->need_data = true;
		break;
	case IMAP_FA_BODY:
	case IMAP_FA_BODYSTRUCTURE:
		f->need_data = f->need_mime = true;
		break;
	case IMAP_FA_RFC822:
	case IMAP_FA_RFC822_TEXT:
		f->need_data = f->sets_seen = true;
		break;
	case IMAP_FA_SECTION:
		f->need_data = true;
		break;
	case IMAP_FA_INTERNALDATE:
	case IMAP_FA_SIZE:
		break;
	}
	return it;
}

void imap_fetch_add(struct imap_fetch *f, enum imap_fetch_att att)
{
	add(f, att);
}

void imap_fetch_free(struct imap_fetch *f)
{
	for (unsigned i = 0; i < f->n; i++)
		free(f->items[i].fields);
	free(f->items);
	memset(f, 0, sizeof(*f));
}

/* name - letters, digits and dots: an item's name or a section word. */
static bool name(struct imap_parser *ps, struct imap_str *out)
{
	char *s = ps->p;
	while (ps->p < ps->end) {
		char c = *ps->p;
		if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
		      c == '.'))
			break;
		ps->p++;
	}
	out->p = s;
	out->n = (size_t)(ps->p - s);
	return out->n > 0;
}

/* header_list - "(" astring *(SP astring) ")". */
static bool header_list(struct imap_parser *ps, struct imap_fetch_item *it)
{
	unsigned cap = 0;
	if (!imap_p_sp(ps) || !imap_p_char(ps, '('))
		return false;
	do {
		struct imap_str s;
		if (!imap_p_astring(ps, &s))
			return false;
		if (it->nfields == cap) {
			cap = cap ? 2 * cap : 8;
			it->fields = xrealloc(it->fields, cap * sizeof(*it->fields));
		}
		it->fields[it->nfields++] = s;
	} while (imap_p_sp(ps));
	return imap_p_char(ps, ')');
}

/* section_text - what follows the part numbers (or stands alone). */
static bool section_text(struct imap_parser *ps, struct imap_fetch_item *it)
{
	struct imap_str w;
	if (!name(ps, &w))
		return false;
	if (imap_str_is(&w, "HEADER")) {
		it->section = IMAP_SEC_HEADER;
	} else if (imap_str_is(&w, "TEXT")) {
		it->section = IMAP_SEC_TEXT;
	} else if (imap_str_is(&w, "MIME") && it->nparts) {
		it->section = IMAP_SEC_MIME;
	} else if (imap_str_is(&w, "HEADER.FIELDS")) {
		it->section = IMAP_SEC_FIELDS;
		return header_list(ps, it);
	} else if (imap_str_is(&w, "HEADER.FIELDS.NOT")) {
		it->section = IMAP_SEC_FIELDS_NOT;
		return header_list(ps, it);
	} else {
		return false;
	}
	return true;
}

/* section - "[" [section-spec] "]" ["<" number "." nz-number ">"]. */
static bool section(struct imap_parser *ps, struct imap_fetch_item *it)
{
	if (!imap_p_char(ps, '['))
		return false;
	char c = imap_p_peek(ps);
	if (c >= '0' && c <= '9') {
		do {
			uint32_t n;
			c = imap_p_peek(ps);
			if (c < '0' || c > '9')
				break; /* a section word after the dot */
			if (!imap_p_number(ps, &n) || !n || it->nparts == IMAP_PART_DEPTH)
				return false;
			it->part[it->nparts++] = n;
		} while (imap_p_char(ps, '.'));
		if (ps->p[-1] == '.' && !section_text(ps, it))
			return false;
	} else if (c != ']' && !section_text(ps, it)) {
		return false;
	}
	if (!imap_p_char(ps, ']'))
		return false;
	if (imap_p_char(ps, '<')) {
		it->partial = true;
		if (!imap_p_number(ps, &it->start) || !imap_p_char(ps, '.') ||
		    !imap_p_number(ps, &it->count) || !it->count || !imap_p_char(ps, '>'))
			return false;
	}
	return true;
}

static const struct {
	const char *name;
	enum imap_fetch_att att;
} simple[] = {
	{ "FLAGS", IMAP_FA_FLAGS },
	{ "UID", IMAP_FA_UID },
	{ "INTERNALDATE", IMAP_FA_INTERNALDATE },
	{ "RFC822.SIZE", IMAP_FA_SIZE },
	{ "ENVELOPE", IMAP_FA_ENVELOPE },
	{ "BODYSTRUCTURE", IMAP_FA_BODYSTRUCTURE },
	{ "RFC822", IMAP_FA_RFC822 },
	{ "RFC822.HEADER", IMAP_FA_RFC822_HEADER },
	{ "RFC822.TEXT", IMAP_FA_RFC822_TEXT },
};

/* att - one fetch-att. */
static bool att(struct imap_parser *ps, struct imap_fetch *f)
{
	struct imap_str w;
	if (!name(ps, &w))
		return false;
	bool peek = imap_str_is(&w, "BODY.PEEK");
	if (imap_str_is(&w, "BODY") || peek) {
		if (imap_p_peek(ps) != '[') {
			if (peek)
				return false;
			add(f, IMAP_FA_BODY);
			return true;
		}
		struct imap_fetch_item *it = add(f, IMAP_FA_SECTION);
		it->peek = peek;
		if (!section(ps, it))
			return false;
		if (!peek)
			f->sets_seen = true;
		if (it->nparts)
			f->need_mime = true;
		return true;
	}
	for (unsigned i = 0; i < RP_ARRAY_LEN(simple); i++) {
		if (imap_str_is(&w, simple[i].name)) {
			add(f, simple[i].att);
			return true;
		}
	}
	return false;
}

bool imap_fetch_parse(struct imap_parser *ps, struct imap_fetch *f)
{
	memset(f, 0, sizeof(*f));
	bool ok;
	if (imap_p_char(ps, '(')) {
		do {
			ok = att(ps, f);
		} while (ok && imap_p_sp(ps));
		ok = ok && imap_p_char(ps, ')');
	} else {
		char *save = ps->p;
		struct imap_str w;
		static const enum imap_fetch_att fast[] = { IMAP_FA_FLAGS, IMAP_FA_INTERNALDATE,
			                                    IMAP_FA_SIZE, IMAP_FA_ENVELOPE,
			                                    IMAP_FA_BODY };
		unsigned n = 0;
		if (name(ps, &w) && imap_str_is(&w, "FAST"))
			n = 3;
		else if (imap_str_is(&w, "ALL"))
			n = 4;
		else if (imap_str_is(&w, "FULL"))
			n = 5;
		for (unsigned i = 0; i < n; i++)
			add(f, fast[i]);
		if (!n) {
			ps->p = save;
			ok = att(ps, f);
		} else {
			ok = true;
		}
	}
	if (!ok)
		imap_fetch_free(f);
	return ok;
}

/* ---- responses ---------------------------------------------------------- */

void imap_put_flags(struct buf *out, uint8_t flags)
{
	static const struct {
		uint8_t bit;
		const char *name;
	} names[] = { { MBOX_ANSWERED, "\\Answered" },
		      { MBOX_FLAGGED, "\\Flagged" },
		      { MBOX_DELETED, "\\Deleted" },
		      { MBOX_SEEN, "\\Seen" },
		      { MBOX_DRAFT, "\\Draft" } };
	buf_append(out, "(", 1);
	bool first = true;
	for (unsigned i = 0; i < RP_ARRAY_LEN(names); i++) {
		if (!(flags & names[i].bit))
			continue;
		if (!first)
			buf_append(out, " ", 1);
		buf_puts(out, names[i].name);
		first = false;
	}
	buf_append(out, ")", 1);
}

/* put_section_name - "BODY[1.HEADER.FIELDS (A B)]<0>" as asked. */
static void put_section_name(struct buf *out, const struct imap_fetch_item *it)
{
	static const char *const words[] = { "",     "HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT",
		                             "TEXT", "MIME" };
	buf_puts(out, "BODY[");
	for (unsigned i = 0; i < it->nparts; i++)
		buf_printf(out, "%s%u", i ? "." : "", it->part[i]);
	if (it->section != IMAP_SEC_ALL)
		buf_printf(out, "%s%s", it->nparts ? "." : "", words[it->section]);
	if (it->section == IMAP_SEC_FIELDS || it->section == IMAP_SEC_FIELDS_NOT) {
		buf_puts(out, " (");
		for (unsigned i = 0; i < it->nfields; i++) { /* upper-case, as Dovecot says them */
			if (i)
				buf_append(out, " ", 1);
			size_t at = buf_used(out);
			imap_put_astring(out, it->fields[i].p, it->fields[i].n);
			for (char *c = buf_head(out) + at; c < buf_head(out) + buf_used(out); c++)
				*c = (char)toupper((unsigned char)*c);
		}
		buf_append(out, ")", 1);
	}
	buf_append(out, "]", 1);
	if (it->partial)
		buf_printf(out, "<%u>", it->start);
}

/* field_listed - name is one of the item's HEADER.FIELDS names. */
static bool field_listed(const struct imap_fetch_item *it, const char *name, size_t n)
{
	for (unsigned i = 0; i < it->nfields; i++)
		if (it->fields[i].n == n && !strncasecmp(it->fields[i].p, name, n))
			return true;
	return false;
}

/* fields - the header fields the item selects, and the blank line. */
static void fields(const struct imap_fetch_item *it, const char *hdr, size_t len, struct buf *out)
{
	size_t off = 0;
	struct imap_header_field f;
	buf_reset(out);
	while (imap_header_next(hdr, len, &off, &f)) {
		bool listed = field_listed(it, f.name, f.name_len);
		if (listed == (it->section == IMAP_SEC_FIELDS))
			buf_append(out, hdr + f.start, f.end - f.start);
	}
	/* The blank line, unless the message has none (RFC 3501 6.4.5);
	 * HEADER.FIELDS always has it, as Dovecot does. */
	bool blank = len && hdr[len - 1] == '\n' &&
	             (len == 1 || hdr[len - 2] == '\n' ||
	              (hdr[len - 2] == '\r' && (len == 2 || hdr[len - 3] == '\n')));
	if (blank || it->section == IMAP_SEC_FIELDS)
		buf_append(out, "\r\n", 2);
}

/* A message's top entity: header and body without a MIME parse. */
struct ent {
	size_t hdr, hdr_len, body, body_len;
};

static void top(const struct imap_fetch_msg *m, struct ent *e)
{
	struct msg_header_info hi;
	msg_header_scan(m->data, m->len, &hi);
	*e = (struct ent){ 0, hi.end, hi.end, m->len - hi.end };
}

/* section_data - what the item names: *p and *n, or false when there is
 * no such part. */
static bool section_data(const struct imap_fetch_item *it, const struct imap_fetch_msg *m,
                         struct imap_fetch_scratch *sc, const char **p, size_t *n)
{
	struct ent e;
	if (!it->nparts && it->section == IMAP_SEC_ALL) {
		*p = m->data;
		*n = m->len;
		return true;
	}
	if (!it->nparts) {
		top(m, &e);
	} else {
		int i = imap_mime_find(&sc->mime, it->part, it->nparts);
		if (i < 0)
			return false;
		const struct imap_mime_part *pt = &sc->mime.part[i];
		if (it->section == IMAP_SEC_ALL || it->section == IMAP_SEC_MIME) {
			bool mime = it->section == IMAP_SEC_MIME;
			*p = m->data + (mime ? pt->hdr : pt->body);
			*n = mime ? pt->hdr_len : pt->body_len;
			return true;
		}
		if (pt->kind != IMAP_MIME_MESSAGE || pt->child < 0)
			return false; /* HEADER and TEXT belong to messages */
		pt = &sc->mime.part[pt->child];
		e = (struct ent){ pt->hdr, pt->hdr_len, pt->body, pt->body_len };
	}
	switch (it->section) {
	case IMAP_SEC_HEADER:
		*p = m->data + e.hdr;
		*n = e.hdr_len;
		return true;
	case IMAP_SEC_TEXT:
		*p = m->data + e.body;
		*n = e.body_len;
		return true;
	case IMAP_SEC_FIELDS:
	case IMAP_SEC_FIELDS_NOT:
		fields(it, m->data + e.hdr, e.hdr_len, &sc->tmp);
		*p = buf_head(&sc->tmp);
		*n = buf_used(&sc->tmp);
		return true;
	case IMAP_SEC_ALL:
	case IMAP_SEC_MIME:
		break;
	}
	rp_panic("section %d", it->section);
}

/* put_section - the item's name and its data (a literal, or NIL). */
static void put_section(struct buf *out, const struct imap_fetch_item *it,
                        const struct imap_fetch_msg *m, struct imap_fetch_scratch *sc)
{
	static const struct imap_fetch_item whole = { .att = IMAP_FA_SECTION };
	static const struct imap_fetch_item header = { .att = IMAP_FA_SECTION,
		                                       .section = IMAP_SEC_HEADER };
	static const struct imap_fetch_item text = { .att = IMAP_FA_SECTION,
		                                     .section = IMAP_SEC_TEXT };
	const struct imap_fetch_item *s = it;
	switch (it->att) {
	case IMAP_FA_RFC822:
		buf_puts(out, "RFC822 ");
		s = &whole;
		break;
	case IMAP_FA_RFC822_HEADER:
		buf_puts(out, "RFC822.HEADER ");
		s = &header;
		break;
	case IMAP_FA_RFC822_TEXT:
		buf_puts(out, "RFC822.TEXT ");
		s = &text;
		break;
	default:
		put_section_name(out, it);
		buf_append(out, " ", 1);
	}
	const char *p;
	size_t n;
	if (!section_data(s, m, sc, &p, &n)) { /* no such part: empty, as Dovecot says */
		p = "";
		n = 0;
	}
	if (it->partial) {
		size_t start = RP_MIN((size_t)it->start, n);
		p += start;
		n = RP_MIN(n - start, (size_t)it->count);
	}
	imap_put_literal(out, p, n);
}

/* put_item - one item's name and value. */
static void put_item(struct buf *out, const struct imap_fetch_item *it,
                     const struct imap_fetch_msg *m, struct imap_fetch_scratch *sc)
{
	struct ent e;
	switch (it->att) {
	case IMAP_FA_FLAGS:
		buf_puts(out, "FLAGS ");
		imap_put_flags(out, m->flags);
		return;
	case IMAP_FA_UID:
		buf_printf(out, "UID %u", m->uid);
		return;
	case IMAP_FA_INTERNALDATE:
		buf_puts(out, "INTERNALDATE ");
		imap_put_date_time(out, m->date_ms);
		return;
	case IMAP_FA_SIZE:
		buf_printf(out, "RFC822.SIZE %zu", m->len);
		return;
	case IMAP_FA_ENVELOPE:
		top(m, &e);
		buf_puts(out, "ENVELOPE ");
		imap_envelope(out, m->data, e.hdr_len);
		return;
	case IMAP_FA_BODY:
	case IMAP_FA_BODYSTRUCTURE:
		buf_puts(out, it->att == IMAP_FA_BODY ? "BODY " : "BODYSTRUCTURE ");
		imap_bodystructure(out, &sc->mime, 0, it->att == IMAP_FA_BODYSTRUCTURE);
		return;
	case IMAP_FA_SECTION:
	case IMAP_FA_RFC822:
	case IMAP_FA_RFC822_HEADER:
	case IMAP_FA_RFC822_TEXT:
		put_section(out, it, m, sc);
		return;
	}
	rp_panic("fetch item %d", it->att);
}

void imap_fetch_write(struct buf *out, const struct imap_fetch *f, const struct imap_fetch_msg *m,
                      struct imap_fetch_scratch *sc)
{
	if (f->need_mime)
		imap_mime_parse(&sc->mime, m->data, m->len);
	buf_printf(out, "* %u FETCH (", m->seq);
	for (unsigned i = 0; i < f->n; i++) {
		if (i)
			buf_append(out, " ", 1);
		put_item(out, &f->items[i], m, sc);
	}
	if (m->add_flags && !f->has_flags) {
		buf_puts(out, f->n ? " FLAGS " : "FLAGS ");
		imap_put_flags(out, m->flags);
	}
	buf_append(out, ")\r\n", 3);
	if (sc && buf_used(&sc->tmp) > 65536)
		buf_shrink(&sc->tmp, 4096);
}
