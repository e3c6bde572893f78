/* imap_parse.c - the IMAP4rev1 codec: framing, tokens, sequence sets,
 * dates, string writers (see imap_parse.h). */
#include "imap_parse.h"

#include <stdio.h>
#include <stdlib.h>
#include <strings.h>
#include <time.h>

#include "base/util.h"

/* ---- character classes (RFC 3501 section 9) ----------------------------- */

/* atom_char - ATOM-CHAR: a CHAR that is not an atom-special. */
static bool atom_char(unsigned char c)
{
	if (c <= 0x1f || c >= 0x7f)
		return false;
	switch (c) {
	case '(':
	case ')':
	case '{':
	case ' ':
	case '%':
	case '*':
	case '"':
	case '\\':
	case ']':
		return false;
	}
	return true;
}

/* astring_char - ASTRING-CHAR: ATOM-CHAR or resp-specials. */
static bool astring_char(unsigned char c)
{
	return atom_char(c) || c == ']';
}

/* list_char - list-char: ATOM-CHAR, list-wildcards or resp-specials. */
static bool list_char(unsigned char c)
{
	return astring_char(c) || c == '%' || c == '*';
}

/* ---- framing ------------------------------------------------------------ */

void imap_frame_reset(struct imap_frame *f)
{
	memset(f, 0, sizeof(*f));
}

/* literal_suffix - whether line [s, e) (CR stripped) ends in "{n}" or
 * "{n+}"; its size and form. Sizes past 32 bits read as UINT32_MAX. */
static bool literal_suffix(const char *p, size_t s, size_t e, uint32_t *size, bool *sync)
{
	if (e - s < 3 || p[e - 1] != '}')
		return false;
	size_t i = e - 1;
	*sync = true;
	if (p[i - 1] == '+') {
		*sync = false;
		i--;
	}
	size_t digits_end = i;
	while (i > s && p[i - 1] >= '0' && p[i - 1] <= '9')
		i--;
	if (i == digits_end || i == s || p[i - 1] != '{')
		return false;
	uint64_t v = 0;
	for (size_t k = i; k < digits_end; k++) {
		v = v * 10 + (uint64_t)(p[k] - '0');
		if (v > UINT32_MAX) {
			v = UINT32_MAX;
			break;
		}
	}
	*size = (uint32_t)v;
	return true;
}

enum imap_frame_status imap_frame_scan(struct imap_frame *f, const char *p, size_t n)
{
	for (;;) {
		if (f->lit_end) {
			if (n < f->lit_end)
				return IMAP_FRAME_MORE;
			f->pos = f->line_start = f->lit_end;
			f->lit_end = 0;
		}
		const char *nl = memchr(p + f->pos, '\n', n - f->pos);
		if (!nl) {
			f->pos = n;
			if (n - f->line_start > IMAP_LINE_MAX) {
				f->len = 0;
				return IMAP_FRAME_LONG_LINE;
			}
			return IMAP_FRAME_MORE;
		}
		size_t end = (size_t)(nl - p);
		if (end - f->line_start > IMAP_LINE_MAX) {
			f->len = end + 1;
			return IMAP_FRAME_LONG_LINE;
		}
		size_t le = end;
		if (le > f->line_start && p[le - 1] == '\r')
			le--;
		uint32_t size;
		bool sync;
		if (!literal_suffix(p, f->line_start, le, &size, &sync)) {
			f->len = end + 1;
			return IMAP_FRAME_DONE;
		}
		f->literal = size;
		f->sync = sync;
		if (size > IMAP_LITERAL_MAX) {
			f->len = end + 1;
			return IMAP_FRAME_BIG_LITERAL;
		}
		if (end + 1 + (size_t)size > IMAP_COMMAND_MAX)
			return IMAP_FRAME_TOO_BIG;
		f->pos = end + 1;
		f->lit_end = end + 1 + size;
		if (size == 0) { /* nothing to wait for: go on with the next line */
			f->line_start = f->pos;
			f->lit_end = 0;
			if (sync)
				return IMAP_FRAME_CONTINUE;
			continue;
		}
		if (sync)
			return IMAP_FRAME_CONTINUE;
	}
}

bool imap_frame_tag(const char *p, size_t n, const char **tag, size_t *len)
{
	size_t i = 0;
	while (i < n && astring_char((unsigned char)p[i]) && p[i] != '+')
		i++;
	if (!i || i > 64 || i >= n || p[i] != ' ')
		return false;
	*tag = p;
	*len = i;
	return true;
}

/* ---- tokens ------------------------------------------------------------- */

void imap_parser_init(struct imap_parser *ps, char *cmd, size_t n)
{
	if (n && cmd[n - 1] == '\n')
		n--;
	if (n && cmd[n - 1] == '\r')
		n--;
	ps->p = cmd;
	ps->end = cmd + n;
}

bool imap_p_eol(const struct imap_parser *ps)
{
	return ps->p >= ps->end;
}

char imap_p_peek(const struct imap_parser *ps)
{
	return ps->p < ps->end ? *ps->p : 0;
}

bool imap_p_char(struct imap_parser *ps, char c)
{
	if (ps->p < ps->end && *ps->p == c) {
		ps->p++;
		return true;
	}
	return false;
}

bool imap_p_sp(struct imap_parser *ps)
{
	return imap_p_char(ps, ' ');
}

/* run - one or more bytes of a class. */
static bool run(struct imap_parser *ps, bool (*cls)(unsigned char), struct imap_str *out)
{
	char *s = ps->p;
	while (ps->p < ps->end && cls((unsigned char)*ps->p))
		ps->p++;
	out->p = s;
	out->n = (size_t)(ps->p - s);
	return out->n > 0;
}

static bool tag_char(unsigned char c)
{
	return astring_char(c) && c != '+';
}

bool imap_p_tag(struct imap_parser *ps, struct imap_str *out)
{
	return run(ps, tag_char, out);
}

bool imap_p_atom(struct imap_parser *ps, struct imap_str *out)
{
	return run(ps, atom_char, out);
}

/* quoted - DQUOTE *QUOTED-CHAR DQUOTE, unescaped in place. */
static bool quoted(struct imap_parser *ps, struct imap_str *out)
{
	char *r = ps->p + 1, *w = r;
	while (r < ps->end && *r != '"') {
		unsigned char c = (unsigned char)*r;
		if (c == '\\') {
			if (r + 1 >= ps->end || (r[1] != '"' && r[1] != '\\'))
				return false;
			r++;
			c = (unsigned char)*r;
		} else if (c == '\r' || c == '\n' || c == 0 || c >= 0x80) {
			return false; /* TEXT-CHAR is 7-bit, no CR or LF */
		}
		*w++ = (char)c;
		r++;
	}
	if (r >= ps->end)
		return false;
	out->p = ps->p + 1;
	out->n = (size_t)(w - out->p);
	ps->p = r + 1;
	return true;
}

/* literal - "{" number ["+"] "}" CRLF and that many bytes. */
static bool literal(struct imap_parser *ps, struct imap_str *out)
{
	char *q = ps->p + 1;
	uint64_t v = 0;
	char *digits = q;
	while (q < ps->end && *q >= '0' && *q <= '9' && v <= UINT32_MAX)
		v = v * 10 + (uint64_t)(*q++ - '0');
	if (q == digits || v > UINT32_MAX)
		return false;
	if (q < ps->end && *q == '+')
		q++;
	if (q >= ps->end || *q++ != '}')
		return false;
	if (q < ps->end && *q == '\r')
		q++;
	if (q >= ps->end || *q++ != '\n')
		return false;
	if ((uint64_t)(ps->end - q) < v)
		return false;
	out->p = q;
	out->n = (size_t)v;
	ps->p = q + v;
	return true;
}

bool imap_p_string(struct imap_parser *ps, struct imap_str *out)
{
	if (ps->p >= ps->end)
		return false;
	if (*ps->p == '"')
		return quoted(ps, out);
	if (*ps->p == '{')
		return literal(ps, out);
	return false;
}

bool imap_p_astring(struct imap_parser *ps, struct imap_str *out)
{
	char c = imap_p_peek(ps);
	if (c == '"' || c == '{')
		return imap_p_string(ps, out);
	return run(ps, astring_char, out);
}

bool imap_p_list_mailbox(struct imap_parser *ps, struct imap_str *out)
{
	char c = imap_p_peek(ps);
	if (c == '"' || c == '{')
		return imap_p_string(ps, out);
	return run(ps, list_char, out);
}

bool imap_p_number(struct imap_parser *ps, uint32_t *out)
{
	uint64_t v = 0;
	char *s = ps->p;
	while (ps->p < ps->end && *ps->p >= '0' && *ps->p <= '9') {
		v = v * 10 + (uint64_t)(*ps->p++ - '0');
		if (v > UINT32_MAX)
			return false;
	}
	*out = (uint32_t)v;
	return ps->p > s;
}

unsigned imap_month(const char *p, size_t n)
{
	static const char names[] = "janfebmaraprmayjunjulaugsepoctnovdec";
	if (n != 3)
		return 0;
	for (unsigned i = 0; i < 12; i++)
		if (!strncasecmp(p, names + 3 * i, 3))
			return i + 1;
	return 0;
}

int64_t imap_days_from_civil(int64_t y, unsigned m, unsigned d)
{
	/* Howard Hinnant's algorithm: exact for the proleptic Gregorian calendar. */
	y -= m <= 2;
	int64_t era = (y >= 0 ? y : y - 399) / 400;
	unsigned yoe = (unsigned)(y - era * 400);
	unsigned doy = (153 * (m + (m > 2 ? (unsigned)-3 : 9)) + 2) / 5 + d - 1;
	unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + (int64_t)doe - 719468;
}

bool imap_p_date(struct imap_parser *ps, int64_t *days)
{
	bool q = imap_p_char(ps, '"');
	uint32_t d, y;
	char *s = ps->p;
	if (!imap_p_number(ps, &d) || ps->p - s > 2 || d < 1 || d > 31 || !imap_p_char(ps, '-'))
		return false;
	if (ps->end - ps->p < 4)
		return false;
	unsigned m = imap_month(ps->p, 3);
	ps->p += 3;
	if (!m || !imap_p_char(ps, '-'))
		return false;
	s = ps->p;
	if (!imap_p_number(ps, &y) || ps->p - s != 4)
		return false;
	if (q && !imap_p_char(ps, '"'))
		return false;
	*days = imap_days_from_civil(y, m, d);
	return true;
}

bool imap_str_is(const struct imap_str *t, const char *s)
{
	return strlen(s) == t->n && !strncasecmp(t->p, s, t->n);
}

/* ---- sequence sets ------------------------------------------------------ */

/* seq_number - nz-number or "*". */
static bool seq_number(struct imap_parser *ps, uint32_t *v, bool *star)
{
	if (imap_p_char(ps, '*')) {
		*v = IMAP_STAR;
		*star = true;
		return true;
	}
	return imap_p_number(ps, v) && *v != 0;
}

bool imap_p_seqset(struct imap_parser *ps, struct imap_seqset *set)
{
	unsigned cap = 1;
	for (const char *q = ps->p; q < ps->end && *q != ' ' && *q != ')'; q++)
		cap += *q == ',';
	memset(set, 0, sizeof(*set));
	set->r = xcalloc(cap, sizeof(*set->r));
	do {
		uint32_t lo, hi;
		if (set->n == cap || !seq_number(ps, &lo, &set->star))
			goto bad;
		hi = lo;
		if (imap_p_char(ps, ':') && !seq_number(ps, &hi, &set->star))
			goto bad;
		set->r[set->n].lo = lo;
		set->r[set->n].hi = hi;
		set->n++;
	} while (imap_p_char(ps, ','));
	return true;
bad:
	imap_seqset_free(set);
	return false;
}

static int range_cmp(const void *a, const void *b)
{
	const struct imap_range *x = a, *y = b;
	return x->lo < y->lo ? -1 : x->lo > y->lo;
}

void imap_seqset_resolve(struct imap_seqset *set, uint32_t star)
{
	for (unsigned i = 0; i < set->n; i++) {
		struct imap_range *r = &set->r[i];
		if (r->lo == IMAP_STAR)
			r->lo = star;
		if (r->hi == IMAP_STAR)
			r->hi = star;
		if (r->lo > r->hi) {
			uint32_t t = r->lo;
			r->lo = r->hi;
			r->hi = t;
		}
	}
	if (set->n < 2)
		return;
	qsort(set->r, set->n, sizeof(*set->r), range_cmp);
	unsigned w = 0;
	for (unsigned i = 1; i < set->n; i++) {
		struct imap_range *last = &set->r[w];
		if (set->r[i].lo <= last->hi || set->r[i].lo - last->hi == 1) {
			if (set->r[i].hi > last->hi)
				last->hi = set->r[i].hi;
		} else {
			set->r[++w] = set->r[i];
		}
	}
	set->n = w + 1;
}

bool imap_seqset_has(const struct imap_seqset *set, uint32_t v)
{
	unsigned lo = 0, hi = set->n;
	while (lo < hi) {
		unsigned mid = lo + (hi - lo) / 2;
		if (v < set->r[mid].lo)
			hi = mid;
		else if (v > set->r[mid].hi)
			lo = mid + 1;
		else
			return true;
	}
	return false;
}

void imap_seqset_free(struct imap_seqset *set)
{
	free(set->r);
	memset(set, 0, sizeof(*set));
}

/* ---- writers ------------------------------------------------------------ */

#define QUOTED_MAX 1024 /* longer strings go out as literals */

void imap_put_literal(struct buf *b, const char *p, size_t n)
{
	buf_printf(b, "{%zu}\r\n", n);
	buf_append(b, p, n);
}

void imap_put_string(struct buf *b, const char *p, size_t n)
{
	bool ok = n <= QUOTED_MAX;
	for (size_t i = 0; ok && i < n; i++) {
		unsigned char c = (unsigned char)p[i];
		ok = c && c < 0x80 && c != '\r' && c != '\n';
	}
	if (!ok) {
		imap_put_literal(b, p, n);
		return;
	}
	char *w = buf_reserve(b, 2 * n + 2), *start = w;
	*w++ = '"';
	for (size_t i = 0; i < n; i++) {
		if (p[i] == '"' || p[i] == '\\')
			*w++ = '\\';
		*w++ = p[i];
	}
	*w++ = '"';
	buf_commit(b, (size_t)(w - start));
}

void imap_put_nstring(struct buf *b, const char *p, size_t n)
{
	if (!p)
		buf_append(b, "NIL", 3);
	else
		imap_put_string(b, p, n);
}

void imap_put_astring(struct buf *b, const char *p, size_t n)
{
	bool atom = n > 0 && n <= QUOTED_MAX && !(n == 3 && !strncasecmp(p, "NIL", 3));
	for (size_t i = 0; atom && i < n; i++)
		atom = astring_char((unsigned char)p[i]);
	if (atom)
		buf_append(b, p, n);
	else
		imap_put_string(b, p, n);
}

void imap_put_date_time(struct buf *b, uint64_t unix_ms)
{
	static const char mon[12][4] = { "Jan", "Feb", "Mar", "Apr", "May", "Jun",
		                         "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" };
	time_t t = (time_t)(unix_ms / 1000);
	struct tm tm;
	gmtime_r(&t, &tm);
	buf_printf(b, "\"%2d-%s-%04d %02d:%02d:%02d +0000\"", tm.tm_mday, mon[tm.tm_mon],
	           tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
}
