/* test_buf.c - the growable byte buffer (base/buf.c): appends, the read
 * cursor, growth and sliding, reserve/commit, printf in place and past the
 * end, C strings, reset, shrink and free.
 */
#include <criterion/criterion.h>
#include <signal.h>
#include <string.h>

#include "base/buf.h"

static void assert_content(const struct buf *b, const char *want, size_t n)
{
	cr_assert_eq(buf_used(b), n, "%zu bytes, want %zu", buf_used(b), n);
	cr_assert(!n || !memcmp(buf_head(b), want, n), "content differs");
	cr_assert_leq(b->off, b->len);
	cr_assert_leq(b->len, b->cap);
}

Test(buf, zeroed_is_empty)
{
	struct buf b = { 0 };
	cr_assert_eq(buf_used(&b), 0);
	buf_append(&b, "", 0);
	cr_assert_null(b.data, "an empty append allocates nothing");
	buf_reset(&b);
	buf_free(&b);
	buf_free(&b);
	cr_assert_null(b.data);
}

Test(buf, append_and_consume)
{
	struct buf b = { 0 };
	buf_append(&b, "hello", 5);
	buf_puts(&b, ", world");
	assert_content(&b, "hello, world", 12);
	buf_consume(&b, 7);
	assert_content(&b, "world", 5);
	cr_assert_eq(b.off, 7);
	buf_consume(&b, 0);
	assert_content(&b, "world", 5);
	buf_consume(&b, 5);
	cr_assert_eq(b.off, 0, "consuming everything rewinds");
	cr_assert_eq(b.len, 0);
	buf_append(&b, "x", 1);
	assert_content(&b, "x", 1);
	buf_free(&b);
	cr_assert_eq(b.cap, 0);
	cr_assert_eq(b.len, 0);
}

Test(buf, consume_too_much_aborts, .signal = SIGABRT)
{
	struct buf b = { 0 };
	buf_append(&b, "abc", 3);
	buf_consume(&b, 4);
}

Test(buf, growth_keeps_content)
{
	struct buf b = { 0 }, ref = { 0 };
	char chunk[97];
	for (int i = 0; i < 2000; i++) {
		for (size_t k = 0; k < sizeof(chunk); k++)
			chunk[k] = (char)(i * 7 + (int)k);
		size_t n = (size_t)(i % 97) + 1;
		buf_append(&b, chunk, n);
		buf_append(&ref, chunk, n);
		/* Keep the cursor moving so growth has to slide too. */
		if (i % 3 == 0) {
			size_t c = buf_used(&b) / 2;
			buf_consume(&b, c);
			buf_consume(&ref, c);
		}
		assert_content(&b, buf_head(&ref), buf_used(&ref));
	}
	buf_free(&b);
	buf_free(&ref);
}

Test(buf, reserve_slides_before_growing)
{
	struct buf b = { 0 };
	char big[200];
	memset(big, 'a', sizeof(big));
	buf_append(&b, big, sizeof(big));
	size_t cap = b.cap;
	cr_assert_eq(cap, 256);
	buf_consume(&b, 150);
	/* 50 used, 56 free at the end: 100 more fits after sliding. */
	char *w = buf_reserve(&b, 100);
	cr_assert_eq(b.cap, cap, "no growth needed");
	cr_assert_eq(b.off, 0, "unread bytes moved to the front");
	cr_assert_eq(w, b.data + 50);
	memset(w, 'b', 100);
	buf_commit(&b, 100);
	cr_assert_eq(buf_used(&b), 150);
	for (size_t i = 0; i < 150; i++)
		cr_assert_eq(buf_head(&b)[i], i < 50 ? 'a' : 'b', "byte %zu", i);
	/* More than fits: doubles. */
	buf_reserve(&b, 200);
	cr_assert_eq(b.cap, 512);
	cr_assert_eq(buf_used(&b), 150);
	buf_free(&b);
}

Test(buf, reserve_commit)
{
	struct buf b = { 0 };
	char *w = buf_reserve(&b, 10);
	cr_assert_not_null(w);
	cr_assert_geq(b.cap, 10);
	memcpy(w, "0123456789", 10);
	cr_assert_eq(buf_used(&b), 0, "reserve alone counts nothing");
	buf_commit(&b, 4);
	assert_content(&b, "0123", 4);
	w = buf_reserve(&b, 1000000);
	cr_assert_eq(w, b.data + b.len);
	cr_assert_geq(b.cap - b.len, 1000000);
	assert_content(&b, "0123", 4);
	buf_free(&b);
}

Test(buf, printf)
{
	struct buf b = { 0 };
	buf_printf(&b, "%s=%d", "x", 42);
	assert_content(&b, "x=42", 4);
	/* Fits in the room left. */
	buf_printf(&b, ";%05u", 7u);
	assert_content(&b, "x=42;00007", 10);
	/* Longer than the room: grows and formats again. */
	char want[2000];
	memset(want, 'y', sizeof(want));
	buf_printf(&b, "%.*s", (int)sizeof(want), want);
	cr_assert_eq(buf_used(&b), 10 + sizeof(want));
	cr_assert(!memcmp(buf_head(&b) + 10, want, sizeof(want)));
	buf_free(&b);
	/* Exactly the room left: the NUL does not fit, so it grows. */
	buf_puts(&b, "a");
	size_t room = b.cap - b.len;
	cr_assert_lt(room, sizeof(want));
	memset(want, 'z', room);
	buf_printf(&b, "%.*s", (int)room, want);
	cr_assert_eq(buf_used(&b), 1 + room);
	cr_assert(!memcmp(buf_head(&b) + 1, want, room));
	buf_printf(&b, "%s", "");
	cr_assert_eq(buf_used(&b), 1 + room);
	buf_free(&b);
}

Test(buf, printf_after_consume)
{
	struct buf b = { 0 };
	buf_puts(&b, "drop me;");
	buf_consume(&b, 8 - 1);
	buf_printf(&b, "%d-%d", 1, 2);
	assert_content(&b, ";1-2", 4);
	buf_free(&b);
}

Test(buf, cstr)
{
	struct buf b = { 0 };
	cr_assert_str_eq(buf_cstr(&b), "");
	buf_append(&b, "abc", 3);
	buf_consume(&b, 1);
	char *s = buf_cstr(&b);
	cr_assert_str_eq(s, "bc");
	cr_assert_eq(buf_used(&b), 2, "the NUL is not counted");
	buf_append(&b, "d", 1);
	cr_assert_str_eq(buf_cstr(&b), "bcd");
	/* Full to the last byte: the NUL still fits. */
	buf_reset(&b);
	size_t room = b.cap;
	char *w = buf_reserve(&b, room);
	memset(w, 'q', room);
	buf_commit(&b, room);
	s = buf_cstr(&b);
	cr_assert_eq(strlen(s), room);
	buf_free(&b);
}

Test(buf, reset_and_shrink)
{
	struct buf b = { 0 };
	char big[5000];
	memset(big, 'x', sizeof(big));
	buf_append(&b, big, sizeof(big));
	size_t cap = b.cap;
	buf_reset(&b);
	cr_assert_eq(buf_used(&b), 0);
	cr_assert_eq(b.cap, cap, "reset keeps the storage");
	buf_append(&b, big, 100);
	buf_shrink(&b, 1 << 20);
	cr_assert_eq(buf_used(&b), 0);
	cr_assert_eq(b.cap, cap, "shrink keeps storage within keep");
	buf_shrink(&b, 1024);
	cr_assert_eq(b.cap, 0);
	cr_assert_null(b.data);
	buf_append(&b, "again", 5);
	assert_content(&b, "again", 5);
	buf_free(&b);
}

/* Room for nothing in a buffer without storage is still room (not NULL,
 * which buf_try_reserve's callers read as "no memory"), and no pointer
 * arithmetic on NULL (UBSan; found by fuzz_smtp_server through BDAT 0). */
Test(buf, reserve_nothing_without_storage)
{
	struct buf b = { 0 };
	cr_assert_not_null(buf_try_reserve(&b, 0));
	cr_assert_not_null(buf_reserve(&b, 0));
	cr_assert_eq(buf_used(&b), 0);
	buf_free(&b);
}
