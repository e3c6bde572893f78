/* smtp_data.c - DATA un-stuffing, dot-stuffing and BDAT checks (see smtp_data.h). */
#include "smtp_data.h"

#include <string.h>

void smtp_data_rx_init(struct smtp_data_rx *rx, uint64_t max_size, unsigned max_line)
{
	memset(rx, 0, sizeof(*rx));
	rx->max_size = max_size;
	rx->max_line = max_line;
	rx->line_start = true;
	rx->prev_crlf = true;
}

static void emit(struct smtp_data_rx *rx, struct buf *msg, const char *p, size_t n)
{
	rx->size += n;
	if (rx->size > rx->max_size) {
		rx->flags |= SMTP_DATA_TOO_BIG;
		return;
	}
	buf_append(msg, p, n);
}

/* end_line - the current line ended; crlf tells whether with a real CRLF. */
static void end_line(struct smtp_data_rx *rx, struct buf *msg, bool crlf)
{
	if (rx->dot_first && rx->line_len == 1)
		emit(rx, msg, ".", 1); /* a lone "." that is not the terminator */
	emit(rx, msg, "\r\n", 2);
	/* The transparency dot does not count (RFC 5321 4.5.3.1.6). */
	unsigned len = rx->dot_first && rx->line_len > 1 ? rx->line_len - 1 : rx->line_len;
	if (len + 2 > rx->max_line)
		rx->flags |= SMTP_DATA_LONG_LINE;
	if (!crlf)
		rx->flags |= SMTP_DATA_BARE_LF;
	rx->prev_crlf = crlf;
	rx->line_start = true;
	rx->dot_first = false;
	rx->line_len = 0;
}

#define BYTES_1  0x0101010101010101ull
#define BYTES_80 0x8080808080808080ull

/* has_zero_byte - non-zero when one of w's bytes is 0 (exact for the
 * any-byte question this is asked). */
static inline uint64_t has_zero_byte(uint64_t w)
{
	return (w - BYTES_1) & ~w & BYTES_80;
}

size_t smtp_data_rx_feed(struct smtp_data_rx *rx, const char *p, size_t n, struct buf *msg,
                         bool *done)
{
	size_t i = 0;
	*done = false;
	while (i < n) {
		unsigned char c = (unsigned char)p[i];
		if (rx->cr_pending) {
			rx->cr_pending = false;
			if (c == '\n') {
				i++;
				if (rx->dot_first && rx->line_len == 1 && rx->prev_crlf) {
					*done = true;
					return i;
				}
				end_line(rx, msg, true);
				continue;
			}
			/* A lone CR ends a line but never the message: it is
			 * stored as CRLF, so the next hop cannot read "\r.\r"
			 * as an end of data (RFC 5321 2.3.8, SMTP smuggling).
			 * The byte after it starts the next line. */
			end_line(rx, msg, false);
			continue;
		}
		if (rx->line_start) {
			rx->line_start = false;
			rx->line_len = 0;
			if (c == '.') {
				rx->dot_first = true;
				rx->line_len = 1;
				i++;
				continue;
			}
		}
		if (c == '\r') {
			rx->cr_pending = true;
			i++;
			continue;
		}
		if (c == '\n') {
			i++;
			end_line(rx, msg, false);
			continue;
		}
		size_t j = i;
		/* Eight bytes at a time while none is CR, LF, NUL or 8-bit
		 * (the common case: plain text between line ends). */
		while (j + 8 <= n) {
			uint64_t w;
			memcpy(&w, p + j, sizeof(w));
			if (has_zero_byte(w) | has_zero_byte(w ^ (BYTES_1 * '\r')) |
			    has_zero_byte(w ^ (BYTES_1 * '\n')) | (w & BYTES_80))
				break;
			j += 8;
		}
		while (j < n && p[j] != '\r' && p[j] != '\n') {
			unsigned char b = (unsigned char)p[j];
			if (b >= 0x80)
				rx->flags |= SMTP_DATA_8BIT;
			else if (b == 0)
				rx->flags |= SMTP_DATA_NUL;
			j++;
		}
		emit(rx, msg, p + i, j - i);
		rx->line_len += (unsigned)RP_MIN(j - i, (size_t)UINT32_MAX / 2);
		i = j;
	}
	return i;
}

void smtp_chunk_init(struct smtp_chunk_state *st)
{
	st->line_len = 0;
	st->last_cr = false;
	st->flags = 0;
}

void smtp_chunk_check(struct smtp_chunk_state *st, const char *p, size_t n, unsigned max_line)
{
	/* Line by line with memchr (SIMD in glibc) instead of byte by byte:
	 * this runs over every BDAT byte ringpost receives. */
	unsigned len = st->line_len;
	bool cr = st->last_cr;
	unsigned char any = 0;
	size_t i = 0;
	while (i < n) {
		const char *nl = memchr(p + i, '\n', n - i);
		size_t end = nl ? (size_t)(nl - p) : n;
		size_t seg = end - i;
		if (seg) {
			/* A CR carried from before that a non-LF follows, or a CR
			 * anywhere but last in the segment, is a lone CR. */
			if (cr || memchr(p + i, '\r', seg - 1))
				st->flags |= SMTP_DATA_BARE_LF;
			if (memchr(p + i, '\0', seg))
				st->flags |= SMTP_DATA_NUL;
			for (size_t k = i; k < end; k++)
				any |= (unsigned char)p[k];
			cr = p[end - 1] == '\r';
			len += (unsigned)RP_MIN(seg, (size_t)UINT32_MAX / 2);
		}
		if (!nl) {
			i = end;
			break;
		}
		if (!cr)
			st->flags |= SMTP_DATA_BARE_LF;
		/* len counts the CR when there was one; the LF makes the CRLF. */
		if (len + (cr ? 1u : 2u) > max_line)
			st->flags |= SMTP_DATA_LONG_LINE;
		len = 0;
		cr = false;
		i = end + 1;
	}
	if (any & 0x80)
		st->flags |= SMTP_DATA_8BIT;
	if (len > max_line)
		st->flags |= SMTP_DATA_LONG_LINE;
	st->line_len = len;
	st->last_cr = cr;
}

/* line_end - where the line starting at p[i] ends (its first CR or LF,
 * or n), and in *next where the next line starts (after a CRLF, a lone CR
 * or a bare LF: each is one line end). */
static size_t line_end(const char *p, size_t n, size_t i, size_t *next)
{
	const char *nl = memchr(p + i, '\n', n - i);
	size_t lim = nl ? (size_t)(nl - p) : n;
	const char *cr = memchr(p + i, '\r', lim - i);
	size_t e = cr ? (size_t)(cr - p) : lim;
	if (e == n)
		*next = n;
	else
		*next = e + (p[e] == '\r' && e + 1 < n && p[e + 1] == '\n' ? 2 : 1);
	return e;
}

void smtp_dot_stuff(const char *p, size_t n, struct buf *out)
{
	size_t i = 0, next;
	/* Reserve once for the common case: few lines start with a dot. */
	buf_reserve(out, n + n / 64 + 8);
	while (i < n) {
		if (p[i] == '.')
			buf_append(out, ".", 1);
		size_t e = line_end(p, n, i, &next);
		buf_append(out, p + i, e - i);
		if (e < n)
			buf_append(out, "\r\n", 2);
		i = next;
	}
	if (n && p[n - 1] != '\n' && p[n - 1] != '\r')
		buf_append(out, "\r\n", 2);
	buf_append(out, ".\r\n", 3);
}

bool smtp_crlf_only(const char *p, size_t n)
{
	const char *end = p + n;
	for (const char *nl = memchr(p, '\n', n); nl;
	     nl = memchr(nl + 1, '\n', (size_t)(end - nl - 1)))
		if (nl == p || nl[-1] != '\r')
			return false;
	for (const char *cr = memchr(p, '\r', n); cr;
	     cr = memchr(cr + 1, '\r', (size_t)(end - cr - 1)))
		if (cr + 1 == end || cr[1] != '\n')
			return false;
	return true;
}

void smtp_crlf_canon(const char *p, size_t n, struct buf *out)
{
	size_t i = 0, next;
	buf_reserve(out, n + n / 64 + 8);
	while (i < n) {
		size_t e = line_end(p, n, i, &next);
		buf_append(out, p + i, e - i);
		if (e < n)
			buf_append(out, "\r\n", 2);
		i = next;
	}
}
