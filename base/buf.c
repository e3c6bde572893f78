/* buf.c - growable byte buffer (see buf.h). */
#include "buf.h"
#include "util.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>

/* reserve - room for n more bytes; soft: NULL instead of aborting when
 * memory is short (the buffer is then unchanged but for a slide). */
static char *reserve(struct buf *b, size_t n, bool soft)
{
	if (b->data && b->cap - b->len >= n)
		return b->data + b->len;
	/* Slide unread bytes to the front before growing. */
	if (b->off && b->cap - buf_used(b) >= n) {
		size_t used = buf_used(b);
		memmove(b->data, b->data + b->off, used);
		b->off = 0;
		b->len = used;
		return b->data + b->len;
	}
	size_t need = buf_used(b) + n;
	size_t cap = b->cap ? b->cap : 256;
	while (cap < need) {
		rp_assert(cap < SIZE_MAX / 2);
		cap *= 2;
	}
	if (b->off) {
		size_t used = buf_used(b);
		memmove(b->data, b->data + b->off, used);
		b->off = 0;
		b->len = used;
	}
	if (!soft) {
		b->data = xrealloc(b->data, cap);
	} else {
		char *p = realloc(b->data, cap);
		if (!p && cap > need) /* the doubling may be what does not fit */
			p = realloc(b->data, cap = need);
		if (!p)
			return NULL;
		b->data = p;
	}
	b->cap = cap;
	return b->data + b->len;
}

char *buf_reserve(struct buf *b, size_t n)
{
	return reserve(b, n, false);
}

char *buf_try_reserve(struct buf *b, size_t n)
{
	return reserve(b, n, true);
}

void buf_append(struct buf *b, const void *p, size_t n)
{
	if (!n)
		return;
	memcpy(buf_reserve(b, n), p, n);
	b->len += n;
}

void buf_puts(struct buf *b, const char *s)
{
	buf_append(b, s, strlen(s));
}

void buf_vprintf(struct buf *b, const char *fmt, va_list ap)
{
	va_list ap2;
	va_copy(ap2, ap);
	size_t room = b->cap - b->len;
	int n = vsnprintf(room ? b->data + b->len : NULL, room, fmt, ap);
	rp_assert(n >= 0);
	if ((size_t)n >= room) {
		char *w = buf_reserve(b, (size_t)n + 1);
		vsnprintf(w, (size_t)n + 1, fmt, ap2);
	}
	va_end(ap2);
	b->len += (size_t)n;
}

void buf_printf(struct buf *b, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	buf_vprintf(b, fmt, ap);
	va_end(ap);
}

void buf_consume(struct buf *b, size_t n)
{
	rp_assert(n <= buf_used(b));
	b->off += n;
	if (b->off == b->len)
		b->off = b->len = 0;
}

void buf_reset(struct buf *b)
{
	b->off = b->len = 0;
}

void buf_shrink(struct buf *b, size_t keep)
{
	b->off = b->len = 0;
	if (b->cap > keep) {
		free(b->data);
		b->data = NULL;
		b->cap = 0;
	}
}

void buf_free(struct buf *b)
{
	free(b->data);
	b->data = NULL;
	b->off = b->len = b->cap = 0;
}

char *buf_cstr(struct buf *b)
{
	buf_reserve(b, 1);
	b->data[b->len] = '\0';
	return buf_head(b);
}

void buf_json_str(struct buf *b, const char *str, size_t n)
{
	static const char hex[] = "0123456789abcdef";
	buf_append(b, "\"", 1);
	size_t run = 0;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)str[i];
		if (c >= 0x80) {
			/* Bytes from a URL, or a message cut at a size limit, need
			 * not be UTF-8; JSON must be: bad bytes become U+FFFD. */
			uint32_t cp;
			size_t k = rp_utf8_len((const unsigned char *)str + i, n - i, &cp);
			if (k) {
				i += k - 1;
				continue;
			}
		} else if (c >= 0x20 && c != '"' && c != '\\') {
			continue;
		}
		buf_append(b, str + run, i - run);
		run = i + 1;
		switch (c) {
		case '"':
			buf_append(b, "\\\"", 2);
			break;
		case '\\':
			buf_append(b, "\\\\", 2);
			break;
		case '\n':
			buf_append(b, "\\n", 2);
			break;
		case '\r':
			buf_append(b, "\\r", 2);
			break;
		case '\t':
			buf_append(b, "\\t", 2);
			break;
		default:
			if (c >= 0x80) {
				buf_append(b, "\\ufffd", 6);
			} else {
				char u[6] = { '\\', 'u', '0', '0', hex[c >> 4], hex[c & 15] };
				buf_append(b, u, 6);
			}
		}
	}
	buf_append(b, str + run, n - run);
	buf_append(b, "\"", 1);
}
