/* buf.h - a growable byte buffer with a read cursor.
 *
 * Bytes live in [data + off, data + len). Appending may move the storage, so
 * never keep a pointer into a buffer across an append (or hand one to the
 * kernel while anyone may append). buf_free releases the storage; a zeroed
 * struct buf is a valid empty buffer.
 */
#ifndef RP_BUF_H
#define RP_BUF_H

#include <stdarg.h>
#include <stddef.h>

#include "util.h"

struct buf {
	char *data; /* storage, NULL until the first append */
	size_t off; /* first unread byte */
	size_t len; /* end of the bytes written */
	size_t cap; /* allocated size of data */
};

/* buf_reserve - make room for n more bytes at the end; returns the write pointer. */
char *buf_reserve(struct buf *b, size_t n);
/* buf_try_reserve - buf_reserve for buffers whose size a client chooses (a
 * message, a request body): NULL when memory is short instead of aborting;
 * the bytes already in b stay. */
char *buf_try_reserve(struct buf *b, size_t n);
/* buf_append - copy n bytes to the end. */
void buf_append(struct buf *b, const void *p, size_t n);
/* buf_puts - append a C string without its NUL. */
void buf_puts(struct buf *b, const char *s);
/* buf_printf - append formatted text. */
RP_PRINTF(2, 3) void buf_printf(struct buf *b, const char *fmt, ...);
RP_PRINTF(2, 0) void buf_vprintf(struct buf *b, const char *fmt, va_list ap);
/* buf_consume - drop n bytes from the front (n <= buf_used). */
void buf_consume(struct buf *b, size_t n);
/* buf_reset - empty the buffer, keep the storage. */
void buf_reset(struct buf *b);
/* buf_shrink - empty the buffer and release storage larger than keep bytes. */
void buf_shrink(struct buf *b, size_t keep);
/* buf_free - release the storage; the buffer is empty and reusable. */
void buf_free(struct buf *b);
/* buf_json_str - append str[0..n) as a JSON string literal: quotes, backslash and
 * control characters escaped, bytes that are not UTF-8 as U+FFFD. */
void buf_json_str(struct buf *b, const char *str, size_t n);
/* buf_cstr - NUL-terminate the unread bytes (not counted) and return them. */
char *buf_cstr(struct buf *b);

static inline size_t buf_used(const struct buf *b)
{
	return b->len - b->off;
}

static inline char *buf_head(const struct buf *b)
{
	/* An empty buf may have no storage yet: NULL + 0 is undefined in C
	 * (clang's UBSan reports it), so say NULL without the arithmetic. */
	return b->data ? b->data + b->off : NULL;
}

/* buf_commit - count n bytes written after buf_reserve. */
static inline void buf_commit(struct buf *b, size_t n)
{
	b->len += n;
}

#endif
