/* imap_search.c - SEARCH criteria: parsing and matching (see imap_search.h). */
#include "imap_search.h"

#include <ctype.h>
#include <stdlib.h>
#include <strings.h>

#include "base/msg_header.h"
#include "base/util.h"
#include "imap_mime.h"
#include "queue/spool.h"

enum key {
	K_AND, /* children, all of them (the top level and parentheses) */
	K_OR,
	K_NOT,
	K_ALL,
	K_NONE,   /* KEYWORD, NEW, RECENT */
	K_FLAG,   /* num: the MBOX_* bit that must be set */
	K_UNFLAG, /* num: the bit that must be clear */
	K_HEADER, /* field contains str */
	K_BODY,
	K_TEXT,
	K_BEFORE,
	K_ON,
	K_SINCE,
	K_SENTBEFORE,
	K_SENTON,
	K_SENTSINCE,
	K_LARGER,
	K_SMALLER,
	K_SET, /* set (uid: of UIDs) */
};

/* ---- parsing ------------------------------------------------------------ */

static int node(struct imap_search *q, enum key k)
{
	if (q->n == q->cap) {
		q->cap = q->cap ? 2 * q->cap : 16;
		q->nodes = xrealloc(q->nodes, q->cap * sizeof(*q->nodes));
	}
	struct imap_search_node *n = &q->nodes[q->n];
	memset(n, 0, sizeof(*n));
	n->key = (uint8_t)k;
	n->child = n->next = -1;
	return (int)q->n++;
}

static int key(struct imap_parser *ps, struct imap_search *q, unsigned depth);

/* link - add child c to node p's operands. */
static void link_child(struct imap_search *q, int p, int c)
{
	if (q->nodes[p].child < 0) {
		q->nodes[p].child = c;
		return;
	}
	int i = q->nodes[p].child;
	while (q->nodes[i].next >= 0)
		i = q->nodes[i].next;
	q->nodes[i].next = c;
}

/* keys - key *(SP key) into AND node p, up to the end or ")". */
static bool keys(struct imap_parser *ps, struct imap_search *q, int p, unsigned depth)
{
	do {
		int c = key(ps, q, depth);
		if (c < 0)
			return false;
		link_child(q, p, c);
	} while (imap_p_sp(ps));
	return true;
}

static const struct {
	const char *name;
	enum key k;
	uint8_t flag;
} flag_keys[] = {
	{ "ALL", K_ALL, 0 },
	{ "OLD", K_ALL, 0 },
	{ "NEW", K_NONE, 0 },
	{ "RECENT", K_NONE, 0 },
	{ "ANSWERED", K_FLAG, MBOX_ANSWERED },
	{ "DELETED", K_FLAG, MBOX_DELETED },
	{ "DRAFT", K_FLAG, MBOX_DRAFT },
	{ "FLAGGED", K_FLAG, MBOX_FLAGGED },
	{ "SEEN", K_FLAG, MBOX_SEEN },
	{ "UNANSWERED", K_UNFLAG, MBOX_ANSWERED },
	{ "UNDELETED", K_UNFLAG, MBOX_DELETED },
	{ "UNDRAFT", K_UNFLAG, MBOX_DRAFT },
	{ "UNFLAGGED", K_UNFLAG, MBOX_FLAGGED },
	{ "UNSEEN", K_UNFLAG, MBOX_SEEN },
};

static const struct {
	const char *name;
	enum key k;
	const char *field; /* the header field, K_HEADER */
} arg_keys[] = {
	{ "FROM", K_HEADER, "From" },
	{ "TO", K_HEADER, "To" },
	{ "CC", K_HEADER, "Cc" },
	{ "BCC", K_HEADER, "Bcc" },
	{ "SUBJECT", K_HEADER, "Subject" },
	{ "BODY", K_BODY, NULL },
	{ "TEXT", K_TEXT, NULL },
	{ "BEFORE", K_BEFORE, NULL },
	{ "ON", K_ON, NULL },
	{ "SINCE", K_SINCE, NULL },
	{ "SENTBEFORE", K_SENTBEFORE, NULL },
	{ "SENTON", K_SENTON, NULL },
	{ "SENTSINCE", K_SENTSINCE, NULL },
	{ "LARGER", K_LARGER, NULL },
	{ "SMALLER", K_SMALLER, NULL },
};

/* arg_key - a key with one argument (after its name and SP). */
static int arg_key(struct imap_parser *ps, struct imap_search *q, enum key k, const char *field)
{
	int i = node(q, k);
	struct imap_search_node *n = &q->nodes[i];
	switch (k) {
	case K_HEADER:
		n->field.p = (char *)field;
		n->field.n = strlen(field);
		q->need_data = true;
		return imap_p_astring(ps, &n->str) ? i : -1;
	case K_BODY:
	case K_TEXT:
		q->need_data = true;
		return imap_p_astring(ps, &n->str) ? i : -1;
	case K_SENTBEFORE:
	case K_SENTON:
	case K_SENTSINCE:
		q->need_data = true;
		return imap_p_date(ps, &n->days) ? i : -1;
	case K_BEFORE:
	case K_ON:
	case K_SINCE:
		return imap_p_date(ps, &n->days) ? i : -1;
	case K_LARGER:
	case K_SMALLER:
		return imap_p_number(ps, &n->num) ? i : -1;
	default:
		break;
	}
	rp_panic("search key %d", k);
}

/* word_key - a key that starts with a word. */
static int word_key(struct imap_parser *ps, struct imap_search *q, const struct imap_str *w,
                    unsigned depth)
{
	for (unsigned i = 0; i < RP_ARRAY_LEN(flag_keys); i++) {
		if (imap_str_is(w, flag_keys[i].name)) {
			int n = node(q, flag_keys[i].k);
			q->nodes[n].num = flag_keys[i].flag;
			return n;
		}
	}
	if (!imap_p_sp(ps))
		return -1;
	for (unsigned i = 0; i < RP_ARRAY_LEN(arg_keys); i++)
		if (imap_str_is(w, arg_keys[i].name))
			return arg_key(ps, q, arg_keys[i].k, arg_keys[i].field);
	struct imap_str s;
	if (imap_str_is(w, "KEYWORD") || imap_str_is(w, "UNKEYWORD"))
		return imap_p_atom(ps, &s) ? node(q, imap_str_is(w, "KEYWORD") ? K_NONE : K_ALL)
		                           : -1;
	if (imap_str_is(w, "HEADER")) {
		int n = node(q, K_HEADER);
		q->need_data = true;
		if (!imap_p_astring(ps, &q->nodes[n].field) || !imap_p_sp(ps) ||
		    !imap_p_astring(ps, &q->nodes[n].str))
			return -1;
		return n;
	}
	if (imap_str_is(w, "UID")) {
		int n = node(q, K_SET);
		q->nodes[n].uid = true;
		return imap_p_seqset(ps, &q->nodes[n].set) ? n : -1;
	}
	if (imap_str_is(w, "NOT")) {
		int n = node(q, K_NOT), c = key(ps, q, depth + 1);
		if (c < 0)
			return -1;
		q->nodes[n].child = c;
		return n;
	}
	if (imap_str_is(w, "OR")) {
		int n = node(q, K_OR), a = key(ps, q, depth + 1);
		if (a < 0 || !imap_p_sp(ps))
			return -1;
		int b = key(ps, q, depth + 1);
		if (b < 0)
			return -1;
		q->nodes[n].child = a;
		q->nodes[a].next = b;
		return n;
	}
	return -1;
}

static int key(struct imap_parser *ps, struct imap_search *q, unsigned depth)
{
	if (depth > IMAP_SEARCH_DEPTH)
		return -1;
	char c = imap_p_peek(ps);
	if (c == '(') {
		ps->p++;
		int n = node(q, K_AND);
		if (!keys(ps, q, n, depth + 1) || !imap_p_char(ps, ')'))
			return -1;
		return n;
	}
	if ((c >= '0' && c <= '9') || c == '*') {
		int n = node(q, K_SET);
		return imap_p_seqset(ps, &q->nodes[n].set) ? n : -1;
	}
	struct imap_str w;
	if (!imap_p_atom(ps, &w))
		return -1;
	return word_key(ps, q, &w, depth);
}

enum imap_search_status imap_search_parse(struct imap_parser *ps, struct imap_search *q)
{
	memset(q, 0, sizeof(*q));
	char *save = ps->p;
	struct imap_str w, cs;
	if (imap_p_atom(ps, &w) && imap_str_is(&w, "CHARSET")) {
		if (!imap_p_sp(ps) || !imap_p_astring(ps, &cs) || !imap_p_sp(ps))
			return IMAP_SEARCH_BAD;
		if (!imap_str_is(&cs, "US-ASCII") && !imap_str_is(&cs, "UTF-8"))
			return IMAP_SEARCH_BADCHARSET;
	} else {
		ps->p = save;
	}
	q->root = node(q, K_AND);
	if (!keys(ps, q, q->root, 0) || !imap_p_eol(ps)) {
		imap_search_free(q);
		return IMAP_SEARCH_BAD;
	}
	return IMAP_SEARCH_OK;
}

void imap_search_resolve(struct imap_search *q, uint32_t last_seq, uint32_t last_uid)
{
	for (unsigned i = 0; i < q->n; i++)
		if (q->nodes[i].key == K_SET)
			imap_seqset_resolve(&q->nodes[i].set,
			                    q->nodes[i].uid ? last_uid : last_seq);
}

void imap_search_free(struct imap_search *q)
{
	for (unsigned i = 0; i < q->n; i++)
		imap_seqset_free(&q->nodes[i].set);
	free(q->nodes);
	memset(q, 0, sizeof(*q));
}

/* ---- matching ----------------------------------------------------------- */

/* ci_eq - n bytes equal, ASCII case-insensitive (NULs included). */
static bool ci_eq(const char *a, const char *b, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (tolower((unsigned char)a[i]) != tolower((unsigned char)b[i]))
			return false;
	return true;
}

/* contains - needle in hay, ASCII case-insensitive; "" is everywhere. */
static bool contains(const char *hay, size_t n, const char *needle, size_t m)
{
	if (!m)
		return true;
	if (m > n)
		return false;
	unsigned char lo = (unsigned char)tolower((unsigned char)needle[0]);
	unsigned char up = (unsigned char)toupper((unsigned char)needle[0]);
	for (size_t i = 0; i + m <= n; i++) {
		unsigned char c = (unsigned char)hay[i];
		if ((c == lo || c == up) && ci_eq(hay + i + 1, needle + 1, m - 1))
			return true;
	}
	return false;
}

bool imap_sent_days(const char *v, size_t n, int64_t *days)
{
	const char *p = v, *e = v + n;
	while (p < e && (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n'))
		p++;
	const char *comma = memchr(p, ',', (size_t)(e - p));
	if (comma && comma - p <= 10)
		p = comma + 1;
	while (p < e && (*p == ' ' || *p == '\t'))
		p++;
	unsigned d = 0, y = 0, k = 0;
	while (p < e && *p >= '0' && *p <= '9' && k++ < 2)
		d = d * 10 + (unsigned)(*p++ - '0');
	while (p < e && (*p == ' ' || *p == '\t' || *p == '-'))
		p++;
	unsigned m = e - p >= 3 ? imap_month(p, 3) : 0;
	p += m ? 3 : 0;
	while (p < e && (*p == ' ' || *p == '\t' || *p == '-'))
		p++;
	k = 0;
	while (p < e && *p >= '0' && *p <= '9' && k++ < 4)
		y = y * 10 + (unsigned)(*p++ - '0');
	if (!d || d > 31 || !m || k < 2)
		return false;
	if (k == 2) /* RFC 5322 4.3 obsolete two-digit years */
		y += y < 50 ? 2000 : 1900;
	*days = imap_days_from_civil(y, m, d);
	return true;
}

/* header_has - some field called name contains s (HEADER "name" "" tests
 * that the field is there). */
static bool header_has(const struct imap_search_msg *m, size_t hdr_len, const struct imap_str *name,
                       const struct imap_str *s)
{
	size_t off = 0;
	struct imap_header_field f;
	while (imap_header_next(m->data, hdr_len, &off, &f)) {
		if (f.name_len == name->n && !strncasecmp(f.name, name->p, name->n) &&
		    contains(f.value, f.value_len, s->p, s->n))
			return true;
	}
	return false;
}

/* sent - the message's Date: day; false when it has none. */
static bool sent(const struct imap_search_msg *m, size_t hdr_len, int64_t *days)
{
	const char *v;
	size_t vl;
	return imap_header_find(m->data, hdr_len, "Date", &v, &vl) && imap_sent_days(v, vl, days);
}

static bool match(const struct imap_search *q, int i, const struct imap_search_msg *m,
                  size_t hdr_len)
{
	const struct imap_search_node *n = &q->nodes[i];
	int64_t day = (int64_t)(m->date_ms / 86400000), sday;
	switch ((enum key)n->key) {
	case K_AND:
		for (int c = n->child; c >= 0; c = q->nodes[c].next)
			if (!match(q, c, m, hdr_len))
				return false;
		return true;
	case K_OR:
		return match(q, n->child, m, hdr_len) ||
		       match(q, q->nodes[n->child].next, m, hdr_len);
	case K_NOT:
		return !match(q, n->child, m, hdr_len);
	case K_ALL:
		return true;
	case K_NONE:
		return false;
	case K_FLAG:
		return (m->flags & n->num) != 0;
	case K_UNFLAG:
		return (m->flags & n->num) == 0;
	case K_HEADER:
		return m->data && header_has(m, hdr_len, &n->field, &n->str);
	case K_BODY:
		return m->data && contains(m->data + hdr_len, m->len - hdr_len, n->str.p, n->str.n);
	case K_TEXT:
		return m->data && contains(m->data, m->len, n->str.p, n->str.n);
	case K_BEFORE:
		return day < n->days;
	case K_ON:
		return day == n->days;
	case K_SINCE:
		return day >= n->days;
	case K_SENTBEFORE:
		return sent(m, hdr_len, &sday) && sday < n->days;
	case K_SENTON:
		return sent(m, hdr_len, &sday) && sday == n->days;
	case K_SENTSINCE:
		return sent(m, hdr_len, &sday) && sday >= n->days;
	case K_LARGER:
		return m->len > n->num;
	case K_SMALLER:
		return m->len < n->num;
	case K_SET:
		return imap_seqset_has(&n->set, n->uid ? m->uid : m->seq);
	}
	rp_panic("search key %d", n->key);
}

bool imap_search_match(const struct imap_search *q, const struct imap_search_msg *m)
{
	size_t hdr_len = 0;
	if (q->need_data && m->data) {
		struct msg_header_info hi;
		msg_header_scan(m->data, m->len, &hi);
		hdr_len = hi.end;
	}
	return match(q, q->root, m, hdr_len);
}
