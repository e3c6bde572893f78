/* test_smtp_data.c - message content on the wire (relay/smtp_data.c): the
 * DATA receiver (un-stuffing, CRLF.CRLF only, SMTP smuggling, splits at every
 * byte, limits and flags), dot-stuffing round trips and the BDAT checks.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "relay/smtp_data.h"
#include "base/msg_header.h"

#define S(x) x, sizeof(x) - 1

/* same - memcmp that accepts the NULL data of an empty buffer. */
static bool same(const void *a, const void *b, size_t n)
{
	return !n || !memcmp(a, b, n);
}

struct rx_result {
	struct buf msg;
	size_t consumed;
	bool done;
	unsigned flags;
	uint64_t size;
};

/* feed_split - feed in[0..n) in pieces cut at the offsets in cuts (ascending,
 * ncuts of them); stops after the piece that completes DATA. */
static void feed_split(const char *in, size_t n, const size_t *cuts, size_t ncuts,
                       uint64_t max_size, unsigned max_line, struct rx_result *res)
{
	struct smtp_data_rx rx;
	memset(res, 0, sizeof(*res));
	smtp_data_rx_init(&rx, max_size, max_line);
	size_t start = 0;
	for (size_t c = 0; c <= ncuts && !res->done; c++) {
		size_t end = c < ncuts ? cuts[c] : n;
		bool done = true;
		size_t used = smtp_data_rx_feed(&rx, in + start, end - start, &res->msg, &done);
		cr_assert_leq(used, end - start);
		if (!done)
			cr_assert_eq(used, end - start, "without the end, every byte is consumed");
		res->consumed += used;
		res->done = done;
		start = end;
	}
	res->flags = rx.flags;
	res->size = rx.size;
}

static void feed_whole(const char *in, size_t n, uint64_t max_size, unsigned max_line,
                       struct rx_result *res)
{
	feed_split(in, n, NULL, 0, max_size, max_line, res);
}

static void assert_same(const struct rx_result *a, const struct rx_result *b, const char *what,
                        size_t at)
{
	cr_assert_eq(a->done, b->done, "%s %zu: done differs", what, at);
	cr_assert_eq(a->consumed, b->consumed, "%s %zu: consumed %zu vs %zu", what, at, a->consumed,
	             b->consumed);
	cr_assert_eq(a->flags, b->flags, "%s %zu: flags %#x vs %#x", what, at, a->flags, b->flags);
	cr_assert_eq(buf_used(&a->msg), buf_used(&b->msg), "%s %zu: output length %zu vs %zu", what,
	             at, buf_used(&a->msg), buf_used(&b->msg));
	cr_assert(same(buf_head(&a->msg), buf_head(&b->msg), buf_used(&a->msg)),
	          "%s %zu: output differs", what, at);
}

struct rx_case {
	const char *in;
	size_t in_len;
	const char *out;
	size_t out_len;
	bool done;
	size_t consumed; /* when done */
	unsigned flags;
};

/* clang-format off */
#define RX(in, out, done, consumed, flags) {S(in), S(out), done, consumed, flags}
/* clang-format on */

static const struct rx_case rx_cases[] = {
	RX("hello\r\n.\r\n", "hello\r\n", true, 10, 0),
	RX(".\r\n", "", true, 3, 0),
	RX("a\r\nb\r\n\r\n.\r\n", "a\r\nb\r\n\r\n", true, 11, 0),
	/* Un-stuffing: the first dot of a line goes. */
	RX("..dot\r\n.\r\n", ".dot\r\n", true, 10, 0),
	RX("a\r\n..\r\n.\r\n", "a\r\n.\r\n", true, 10, 0),
	RX("a\r\n.x\r\n.\r\n", "a\r\nx\r\n", true, 10, 0),
	RX("...\r\n.\r\n", "..\r\n", true, 8, 0),
	RX("a.\r\n.b.\r\n.\r\n", "a.\r\nb.\r\n", true, 12, 0),
	/* Bytes after the end are the next command. */
	RX("a\r\n.\r\nQUIT\r\n", "a\r\n", true, 6, 0),
	RX(".\r\nMAIL FROM:<>\r\n", "", true, 3, 0),
	/* SMTP smuggling: only CRLF . CRLF ends the data. */
	RX("a\n.\nb\r\n.\r\n", "a\r\n.\r\nb\r\n", true, 10, SMTP_DATA_BARE_LF),
	RX("a\r.\rb\r\n.\r\n", "a\r\n.\r\nb\r\n", true, 10, SMTP_DATA_BARE_LF),
	RX("a\n.\r\nb\r\n.\r\n", "a\r\n.\r\nb\r\n", true, 11, SMTP_DATA_BARE_LF),
	RX("a\r\n.\nb\r\n.\r\n", "a\r\n.\r\nb\r\n", true, 11, SMTP_DATA_BARE_LF),
	RX("a\r\n.\rb\r\n.\r\n", "a\r\n.\r\nb\r\n", true, 11, SMTP_DATA_BARE_LF),
	RX("\n.\r\nx\r\n.\r\n", "\r\n.\r\nx\r\n", true, 10, SMTP_DATA_BARE_LF),
	RX("a\r\n.\r\r\n.\r\n", "a\r\n.\r\n\r\n", true, 10, SMTP_DATA_BARE_LF),
	RX("a\n.\n", "a\r\n.\r\n", false, 0, SMTP_DATA_BARE_LF),
	RX("a\r.\r", "a\r\n", false, 0, SMTP_DATA_BARE_LF),
	RX("a\n.\r\n", "a\r\n.\r\n", false, 0, SMTP_DATA_BARE_LF),
	RX("a\r\n.\n", "a\r\n.\r\n", false, 0, SMTP_DATA_BARE_LF),
	RX("a\r\n.\n\r\n", "a\r\n.\r\n\r\n", false, 0, SMTP_DATA_BARE_LF),
	/* Bare LF and lone CR are stored as CRLF. */
	RX("one\ntwo\r\n.\r\n", "one\r\ntwo\r\n", true, 12, SMTP_DATA_BARE_LF),
	RX("a\rb\r\n.\r\n", "a\r\nb\r\n", true, 8, SMTP_DATA_BARE_LF),
	RX("\r\r\n.\r\n", "\r\n\r\n", true, 6, SMTP_DATA_BARE_LF),
	RX("a\r\r\r\n.\r\n", "a\r\n\r\n\r\n", true, 8, SMTP_DATA_BARE_LF),
	/* Flags. */
	RX("caf\xc3\xa9\r\n.\r\n", "caf\xc3\xa9\r\n", true, 10, SMTP_DATA_8BIT),
	RX("a\0b\r\n.\r\n", "a\0b\r\n", true, 8, SMTP_DATA_NUL),
	RX("\x80\0\n.\r\n", "\x80\0\r\n.\r\n", false, 0,
	   SMTP_DATA_8BIT | SMTP_DATA_NUL | SMTP_DATA_BARE_LF),
	/* Not finished yet. */
	RX("", "", false, 0, 0),
	RX("abc", "abc", false, 0, 0),
	RX("abc\r\n.", "abc\r\n", false, 0, 0),
	RX("abc\r\n.\r", "abc\r\n", false, 0, 0),
};

static void check_case(size_t i, const struct rx_case *c, const struct rx_result *r)
{
	cr_assert_eq(r->done, c->done, "case %zu: done %d, want %d", i, r->done, c->done);
	size_t want_consumed = c->done ? c->consumed : c->in_len;
	cr_assert_eq(r->consumed, want_consumed, "case %zu: consumed %zu, want %zu", i, r->consumed,
	             want_consumed);
	cr_assert_eq(r->flags, c->flags, "case %zu: flags %#x, want %#x", i, r->flags, c->flags);
	cr_assert_eq(buf_used(&r->msg), c->out_len, "case %zu: %zu bytes out, want %zu", i,
	             buf_used(&r->msg), c->out_len);
	cr_assert(same(buf_head(&r->msg), c->out, c->out_len), "case %zu: output differs", i);
	cr_assert_eq(r->size, c->out_len, "case %zu: size counts stored bytes", i);
}

Test(smtp_data, rx_table)
{
	for (size_t i = 0; i < sizeof(rx_cases) / sizeof(rx_cases[0]); i++) {
		struct rx_result r;
		feed_whole(rx_cases[i].in, rx_cases[i].in_len, 1 << 20, 1000, &r);
		check_case(i, &rx_cases[i], &r);
		buf_free(&r.msg);
	}
}

Test(smtp_data, rx_every_split_gives_the_same)
{
	for (size_t i = 0; i < sizeof(rx_cases) / sizeof(rx_cases[0]); i++) {
		const struct rx_case *c = &rx_cases[i];
		struct rx_result whole;
		feed_whole(c->in, c->in_len, 1 << 20, 1000, &whole);
		/* One cut at every offset. */
		for (size_t k = 0; k <= c->in_len; k++) {
			struct rx_result r;
			feed_split(c->in, c->in_len, &k, 1, 1 << 20, 1000, &r);
			check_case(i, c, &r);
			assert_same(&whole, &r, "cut", k);
			buf_free(&r.msg);
		}
		/* One byte at a time. */
		size_t cuts[64];
		cr_assert_leq(c->in_len, 64);
		for (size_t k = 0; k < c->in_len; k++)
			cuts[k] = k + 1;
		struct rx_result r;
		feed_split(c->in, c->in_len, cuts, c->in_len, 1 << 20, 1000, &r);
		assert_same(&whole, &r, "bytewise case", i);
		buf_free(&r.msg);
		buf_free(&whole.msg);
	}
}

/* A larger message with every tricky construct, cut at every pair of offsets
 * in a window around the terminator and the smuggling attempts. */
Test(smtp_data, rx_two_cuts)
{
	static const char in[] = "Subject: x\r\n\r\n..stuffed\r\na\n.\nb\r.\rc\n.\r\nd\r\n.\ne\r\n"
	                         "\r\n..\r\n.\r\nNEXT";
	size_t n = sizeof(in) - 1;
	struct rx_result whole;
	feed_whole(in, n, 1 << 20, 1000, &whole);
	cr_assert(whole.done);
	cr_assert_eq(whole.consumed, n - 4);
	static const char want[] = "Subject: x\r\n\r\n.stuffed\r\na\r\n.\r\nb\r\n.\r\nc\r\n.\r\n"
	                           "d\r\n.\r\ne\r\n\r\n.\r\n";
	cr_assert_eq(buf_used(&whole.msg), sizeof(want) - 1);
	cr_assert(!memcmp(buf_head(&whole.msg), want, sizeof(want) - 1));
	for (size_t a = 0; a <= n; a++) {
		for (size_t b = a; b <= n; b++) {
			size_t cuts[2] = { a, b };
			struct rx_result r;
			feed_split(in, n, cuts, 2, 1 << 20, 1000, &r);
			assert_same(&whole, &r, "cuts at", a * 1000 + b);
			buf_free(&r.msg);
		}
	}
	buf_free(&whole.msg);
}

/* A NUL, an 8-bit byte, a CR or an LF at every place in a long line: the
 * eight-bytes-at-a-time scan must see each one wherever it falls. */
Test(smtp_data, rx_special_byte_at_every_offset)
{
	static const struct {
		char c;
		unsigned flags;
	} cases[] = {
		{ '\0', SMTP_DATA_NUL },
		{ '\x80', SMTP_DATA_8BIT },
		{ '\xff', SMTP_DATA_8BIT },
		{ '\n', SMTP_DATA_BARE_LF },
	};
	for (size_t k = 0; k < RP_ARRAY_LEN(cases); k++) {
		for (size_t at = 0; at < 40; at++) {
			char in[64];
			memset(in, 'a', 40);
			in[at] = cases[k].c;
			memcpy(in + 40, "\r\n.\r\n", 5);
			struct rx_result r;
			feed_whole(in, 45, 1000, 1000, &r);
			cr_assert(r.done, "case %zu at %zu", k, at);
			cr_assert_eq(r.flags & cases[k].flags, cases[k].flags,
			             "case %zu at %zu: flags %x", k, at, r.flags);
			/* The stored content: the line (LF stored as CRLF). */
			size_t extra = cases[k].c == '\n' ? 1 : 0;
			cr_assert_eq(buf_used(&r.msg), 42 + extra, "case %zu at %zu", k, at);
			cr_assert_eq(memcmp(buf_head(&r.msg), in, at), 0, "case %zu at %zu", k, at);
			buf_free(&r.msg);
		}
	}
}

Test(smtp_data, rx_size_limit)
{
	static const char in[] = "0123456789\r\n0123456789\r\n.\r\n";
	struct rx_result r;
	/* Exactly the limit is fine. */
	feed_whole(in, sizeof(in) - 1, 24, 1000, &r);
	cr_assert(r.done);
	cr_assert_eq(r.flags & SMTP_DATA_TOO_BIG, 0);
	cr_assert_eq(buf_used(&r.msg), 24);
	buf_free(&r.msg);
	/* One byte less: too big, but the end is still found and content is dropped. */
	feed_whole(in, sizeof(in) - 1, 23, 1000, &r);
	cr_assert(r.done);
	cr_assert_eq(r.consumed, sizeof(in) - 1);
	cr_assert(r.flags & SMTP_DATA_TOO_BIG);
	cr_assert_leq(buf_used(&r.msg), 23);
	cr_assert_eq(r.size, 24, "size counts every content byte seen");
	buf_free(&r.msg);
	/* Byte by byte, the stored content never passes the limit either. */
	size_t cuts[sizeof(in)];
	for (size_t k = 0; k < sizeof(in) - 1; k++)
		cuts[k] = k + 1;
	feed_split(in, sizeof(in) - 1, cuts, sizeof(in) - 1, 15, 1000, &r);
	cr_assert(r.done);
	cr_assert(r.flags & SMTP_DATA_TOO_BIG);
	cr_assert_leq(buf_used(&r.msg), 15);
	buf_free(&r.msg);
}

Test(smtp_data, rx_line_limit)
{
	struct rx_result r;
	/* max_line counts the CRLF: 8 characters + CRLF = 10. */
	feed_whole(S("12345678\r\n.\r\n"), 1 << 20, 10, &r);
	cr_assert(r.done);
	cr_assert_eq(r.flags, 0);
	buf_free(&r.msg);
	feed_whole(S("123456789\r\n.\r\n"), 1 << 20, 10, &r);
	cr_assert(r.done);
	cr_assert_eq(r.flags, SMTP_DATA_LONG_LINE);
	cr_assert_eq(buf_used(&r.msg), 11, "a long line is still stored");
	buf_free(&r.msg);
	/* The transparency dot does not count (RFC 5321 4.5.3.1.6)... */
	feed_whole(S("..2345678\r\n.\r\n"), 1 << 20, 10, &r);
	cr_assert_eq(r.flags, 0);
	buf_free(&r.msg);
	/* ...but the characters after it do. */
	feed_whole(S("..23456789\r\n.\r\n"), 1 << 20, 10, &r);
	cr_assert_eq(r.flags, SMTP_DATA_LONG_LINE);
	buf_free(&r.msg);
	/* A bare LF line is measured as stored (with CRLF). */
	feed_whole(S("12345678\n.\r\n"), 1 << 20, 10, &r);
	cr_assert_eq(r.flags, SMTP_DATA_BARE_LF);
	buf_free(&r.msg);
	feed_whole(S("123456789\nx\r\n.\r\n"), 1 << 20, 10, &r);
	cr_assert_eq(r.flags, SMTP_DATA_BARE_LF | SMTP_DATA_LONG_LINE);
	buf_free(&r.msg);
	/* The same long line split across feeds. */
	size_t cuts[] = { 3, 6, 9 };
	feed_split(S("123456789\r\n.\r\n"), cuts, 3, 1 << 20, 10, &r);
	cr_assert_eq(r.flags, SMTP_DATA_LONG_LINE);
	buf_free(&r.msg);
}

/* ---- dot-stuffing ------------------------------------------------------ */

static void stuff_and_receive(const char *body, size_t n, struct buf *wire, struct rx_result *r)
{
	memset(wire, 0, sizeof(*wire));
	smtp_dot_stuff(body, n, wire);
	feed_whole(buf_head(wire), buf_used(wire), UINT64_MAX, 1u << 30, r);
	cr_assert(r->done, "stuffed output must end the data");
	cr_assert_eq(r->consumed, buf_used(wire), "the terminator is the last thing sent");
}

struct stuff_case {
	const char *body;
	size_t len;
	const char *wire;
	size_t wire_len;
};

/* clang-format off */
#define ST(b, w) {S(b), S(w)}
/* clang-format on */

static const struct stuff_case stuff_cases[] = {
	ST("", ".\r\n"),
	ST("a\r\n", "a\r\n.\r\n"),
	ST(".\r\n", "..\r\n.\r\n"),
	ST("..\r\n", "...\r\n.\r\n"),
	ST(".a\r\nb\r\n.c\r\n", "..a\r\nb\r\n..c\r\n.\r\n"),
	ST("x\r\n.\r\nafter\r\n", "x\r\n..\r\nafter\r\n.\r\n"),
	ST("a.b\r\n", "a.b\r\n.\r\n"),
	ST("no final crlf", "no final crlf\r\n.\r\n"),
	ST("x\r\n.", "x\r\n..\r\n.\r\n"),
	ST("ends with cr\r", "ends with cr\r\n.\r\n"),
	ST(".", "..\r\n.\r\n"),
	/* A lone CR or bare LF is a line end: CRLF goes out, and a dot after
	 * it is stuffed (the SMTP smuggling payloads never reach the wire). */
	ST("a\r.\rb\r\n", "a\r\n..\r\nb\r\n.\r\n"),
	ST("a\n.\nb\r\n", "a\r\n..\r\nb\r\n.\r\n"),
	ST("a\r\n.\nMAIL FROM:<x>\n", "a\r\n..\r\nMAIL FROM:<x>\r\n.\r\n"),
	ST("a\n.\r\n", "a\r\n..\r\n.\r\n"),
	ST("a\r\r\n.", "a\r\n\r\n..\r\n.\r\n"),
	ST("\r.\r", "\r\n..\r\n.\r\n"),
	ST("\n", "\r\n.\r\n"),
};

Test(smtp_data, dot_stuff_table)
{
	for (size_t i = 0; i < sizeof(stuff_cases) / sizeof(stuff_cases[0]); i++) {
		const struct stuff_case *c = &stuff_cases[i];
		struct buf out = { 0 };
		buf_append(&out, "KEEP", 4); /* appends, never overwrites */
		smtp_dot_stuff(c->body, c->len, &out);
		cr_assert_eq(buf_used(&out), 4 + c->wire_len, "case %zu: %zu bytes", i,
		             buf_used(&out));
		cr_assert(!memcmp(buf_head(&out), "KEEP", 4));
		cr_assert(!memcmp(buf_head(&out) + 4, c->wire, c->wire_len), "case %zu: '%.*s'", i,
		          (int)buf_used(&out) - 4, buf_head(&out) + 4);
		buf_free(&out);
	}
}

Test(smtp_data, dot_stuff_round_trip_table)
{
	for (size_t i = 0; i < sizeof(stuff_cases) / sizeof(stuff_cases[0]); i++) {
		const struct stuff_case *c = &stuff_cases[i];
		struct buf wire;
		struct rx_result r;
		stuff_and_receive(c->body, c->len, &wire, &r);
		/* What comes back is the body with every line end CRLF and its
		 * final line end completed. */
		struct buf canon = { 0 };
		smtp_crlf_canon(c->body, c->len, &canon);
		char want[64];
		size_t wn = buf_used(&canon);
		memcpy(want, buf_head(&canon), wn);
		buf_free(&canon);
		if (wn && !(wn >= 2 && want[wn - 2] == '\r' && want[wn - 1] == '\n')) {
			want[wn++] = '\r';
			want[wn++] = '\n';
		}
		cr_assert_eq(buf_used(&r.msg), wn, "case %zu: %zu bytes back, want %zu", i,
		             buf_used(&r.msg), wn);
		cr_assert(same(buf_head(&r.msg), want, wn), "case %zu", i);
		cr_assert_eq(r.flags, 0, "case %zu: flags %#x", i, r.flags);
		buf_free(&wire);
		buf_free(&r.msg);
	}
}

static uint64_t xorshift(uint64_t *s)
{
	uint64_t x = *s;
	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	return *s = x;
}

Test(smtp_data, dot_stuff_round_trip_random)
{
	/* Normalised bodies (CRLF lines) built from dots, letters and 8-bit
	 * bytes come back byte for byte. */
	static const char alphabet[] = { '.', '.', '.', 'a', 'Z', ' ', 'q', '\xe9' };
	uint64_t seed = 0x2545f4914f6cdd1dull;
	for (int iter = 0; iter < 500; iter++) {
		struct buf body = { 0 };
		unsigned lines = (unsigned)(xorshift(&seed) % 12);
		for (unsigned l = 0; l < lines; l++) {
			unsigned len = (unsigned)(xorshift(&seed) % 6);
			for (unsigned k = 0; k < len; k++) {
				char ch = alphabet[xorshift(&seed) % sizeof(alphabet)];
				/* Keep it normalised: no CR at a line's end. */
				if (ch == '\r' && k == len - 1)
					ch = 'b';
				buf_append(&body, &ch, 1);
			}
			buf_append(&body, "\r\n", 2);
		}
		struct buf wire;
		struct rx_result r;
		stuff_and_receive(buf_head(&body), buf_used(&body), &wire, &r);
		cr_assert_eq(buf_used(&r.msg), buf_used(&body), "iteration %d", iter);
		cr_assert(same(buf_head(&r.msg), buf_head(&body), buf_used(&body)), "iteration %d",
		          iter);
		cr_assert_eq(r.flags & ~(unsigned)SMTP_DATA_8BIT, 0, "iteration %d", iter);
		/* And the stuffed wire form holds no early terminator. */
		for (size_t k = 0; k + 5 < buf_used(&wire); k++)
			cr_assert(memcmp(buf_head(&wire) + k, "\r\n.\r\n", 5), "early end at %zu",
			          k);
		buf_free(&wire);
		buf_free(&r.msg);
		buf_free(&body);
	}
}

/* Any bytes at all: the stuffed output has only CRLF line ends, no line
 * "." before the terminator, and no "<CR>.<CR>" or "<LF>.<LF>" anywhere. */
Test(smtp_data, dot_stuff_output_is_canonical)
{
	static const char alphabet[] = { '.', '.', '\r', '\n', '\r', 'a', ' ', '\0' };
	uint64_t seed = 0x9e3779b97f4a7c15ull;
	for (int iter = 0; iter < 3000; iter++) {
		char body[40];
		size_t n = (size_t)(xorshift(&seed) % sizeof(body));
		for (size_t k = 0; k < n; k++)
			body[k] = alphabet[xorshift(&seed) % sizeof(alphabet)];
		struct buf w = { 0 };
		smtp_dot_stuff(body, n, &w);
		const char *p = buf_head(&w);
		size_t wn = buf_used(&w);
		cr_assert(smtp_crlf_only(p, wn), "iteration %d: a bare CR or LF went out", iter);
		cr_assert(wn >= 3 && !memcmp(p + wn - 3, ".\r\n", 3));
		cr_assert(wn == 3 || !memcmp(p + wn - 5, "\r\n.\r\n", 5), "iteration %d", iter);
		for (size_t k = 0; k + 3 <= wn; k++) {
			cr_assert(memcmp(p + k, "\r.\r", 3) || (k + 3 < wn && p[k + 3] == '\n'),
			          "iteration %d: <CR>.<CR> at %zu", iter, k);
			cr_assert(memcmp(p + k, "\n.\n", 3), "iteration %d: <LF>.<LF> at %zu", iter,
			          k);
		}
		/* The only "CRLF . CRLF" is the terminator. */
		for (size_t k = 0; k + 5 < wn; k++)
			cr_assert(memcmp(p + k, "\r\n.\r\n", 5), "iteration %d: early end at %zu",
			          iter, k);
		cr_assert(wn < 3 || p[0] != '.' || wn == 3 || p[1] == '.', "iteration %d", iter);
		buf_free(&w);
	}
}

Test(smtp_data, crlf_only_and_canon)
{
	cr_assert(smtp_crlf_only("", 0));
	cr_assert(smtp_crlf_only("a\r\nb\r\n", 6));
	cr_assert(smtp_crlf_only("ab", 2));
	cr_assert_not(smtp_crlf_only("a\nb", 3));
	cr_assert_not(smtp_crlf_only("\n", 1));
	cr_assert_not(smtp_crlf_only("a\rb", 3));
	cr_assert_not(smtp_crlf_only("a\r", 2));
	cr_assert_not(smtp_crlf_only("a\r\r\n", 4));
	struct buf b = { 0 };
	smtp_crlf_canon("a\rb\nc\r\nd\r", 9, &b);
	cr_assert_eq(buf_used(&b), 12);
	cr_assert(!memcmp(buf_head(&b), "a\r\nb\r\nc\r\nd\r\n", 12));
	buf_free(&b);
}

/* ---- BDAT checks ------------------------------------------------------- */

struct chunk_case {
	const char *in;
	size_t len;
	unsigned max_line;
	unsigned flags;
};

/* clang-format off */
#define CK(in, max, flags) {S(in), max, flags}
/* clang-format on */

static const struct chunk_case chunk_cases[] = {
	CK("abc\r\n", 1000, 0),
	CK("abc\r\nd", 1000, 0),
	CK("abc\n", 1000, SMTP_DATA_BARE_LF),
	/* A CR not followed by LF is a lone CR, normalised like a bare LF. */
	CK("abc\r\r\n", 1000, SMTP_DATA_BARE_LF),
	CK("a\rb\r\n", 1000, SMTP_DATA_BARE_LF),
	CK("\xff\r\n", 1000, SMTP_DATA_8BIT),
	CK("\0\r\n", 1000, SMTP_DATA_NUL),
	/* max_line counts the line end: CRLF as sent, or CRLF a bare LF becomes. */
	CK("abc\r\n", 5, 0),
	CK("abcd\r\n", 5, SMTP_DATA_LONG_LINE),
	CK("abc\n", 5, SMTP_DATA_BARE_LF),
	CK("abcd\n", 5, SMTP_DATA_BARE_LF | SMTP_DATA_LONG_LINE),
	CK("abcde", 5, 0),
	CK("abcdef", 5, SMTP_DATA_LONG_LINE),
	CK("ab\r\ncd\r\nefghij\r\nk\r\n", 6, SMTP_DATA_LONG_LINE),
};

Test(smtp_data, chunk_check_table)
{
	for (size_t i = 0; i < sizeof(chunk_cases) / sizeof(chunk_cases[0]); i++) {
		const struct chunk_case *c = &chunk_cases[i];
		struct smtp_chunk_state st;
		smtp_chunk_init(&st);
		smtp_chunk_check(&st, c->in, c->len, c->max_line);
		cr_assert_eq(st.flags, c->flags, "case %zu: flags %#x, want %#x", i, st.flags,
		             c->flags);
		/* Any split into two chunks gives the same verdict. */
		for (size_t k = 0; k <= c->len; k++) {
			struct smtp_chunk_state s2;
			smtp_chunk_init(&s2);
			smtp_chunk_check(&s2, c->in, k, c->max_line);
			smtp_chunk_check(&s2, c->in + k, c->len - k, c->max_line);
			cr_assert_eq(s2.flags, c->flags, "case %zu cut %zu: flags %#x, want %#x", i,
			             k, s2.flags, c->flags);
		}
	}
}

Test(smtp_data, chunk_check_cr_across_chunks)
{
	struct smtp_chunk_state st;
	smtp_chunk_init(&st);
	smtp_chunk_check(&st, "abc\r", 4, 1000);
	cr_assert(st.last_cr);
	smtp_chunk_check(&st, "\ndef", 4, 1000);
	cr_assert_eq(st.flags, 0, "CR then LF in the next chunk is a CRLF");
	cr_assert_eq(st.line_len, 3);
	smtp_chunk_init(&st);
	cr_assert_eq(st.flags, 0);
	cr_assert_eq(st.line_len, 0);
	cr_assert_not(st.last_cr);
}

struct norm_case {
	const char *pre;  /* already in the buffer, not rewritten */
	const char *in;   /* appended, then normalised */
	const char *want; /* the whole buffer after */
};

static const struct norm_case norm_cases[] = {
	{ "", "", "" },
	{ "", "a\r\nb\r\n", "a\r\nb\r\n" },
	{ "", "a\nb\r\nc\n", "a\r\nb\r\nc\r\n" },
	{ "", "\n", "\r\n" },
	{ "", "\n\n\n", "\r\n\r\n\r\n" },
	{ "", "\r\r\n\n", "\r\n\r\n\r\n" },
	{ "", "a\rb", "a\r\nb" },
	{ "", "a\r", "a\r\n" },
	{ "x\n", "y\n", "x\ny\r\n" },
	{ "ab\r", "\nc\n", "ab\r\nc\r\n" },
	{ "ab", "\nc", "ab\r\nc" },
};

Test(smtp_data, normalize_newlines)
{
	for (size_t i = 0; i < sizeof(norm_cases) / sizeof(norm_cases[0]); i++) {
		const struct norm_case *c = &norm_cases[i];
		struct buf b = { 0 };
		/* Leave consumed bytes in front: offsets are relative to the head. */
		buf_append(&b, "JUNK", 4);
		buf_puts(&b, c->pre);
		size_t from = buf_used(&b) - 4;
		buf_puts(&b, c->in);
		buf_consume(&b, 4);
		msg_normalize_newlines(&b, from);
		cr_assert_eq(buf_used(&b), strlen(c->want), "case %zu: '%.*s'", i,
		             (int)buf_used(&b), buf_head(&b));
		cr_assert(!memcmp(buf_head(&b), c->want, strlen(c->want)), "case %zu: '%.*s'", i,
		          (int)buf_used(&b), buf_head(&b));
		buf_free(&b);
	}
}

Test(smtp_data, normalize_large)
{
	/* Many bare LFs in a buffer that has to grow. */
	struct buf b = { 0 }, want = { 0 };
	for (int i = 0; i < 5000; i++) {
		buf_printf(&b, "line %d\n", i);
		buf_printf(&want, "line %d\r\n", i);
	}
	msg_normalize_newlines(&b, 0);
	cr_assert_eq(buf_used(&b), buf_used(&want));
	cr_assert(!memcmp(buf_head(&b), buf_head(&want), buf_used(&b)));
	buf_free(&b);
	buf_free(&want);
}
