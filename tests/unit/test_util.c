/* test_util.c - shared helpers (base/util.c): duration, size and number
 * parsing with their overflow edges, message id formatting and parsing,
 * RFC 5322 dates, hashing, byte order and string helpers.
 */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"

struct num_case {
	const char *in;
	bool ok;
	uint64_t v;
};

static const struct num_case durations[] = {
	{ "30s", true, 30000 },
	{ "5m", true, 300000 },
	{ "2h", true, 7200000 },
	{ "3d", true, 259200000 },
	{ "250ms", true, 250 },
	{ "10", true, 10000 },
	{ "0", true, 0 },
	{ "0ms", true, 0 },
	{ " 5m", true, 300000 },
	{ "5 m", true, 300000 },
	{ "213503982334d", true, 213503982334ull * 86400000 },
	{ "18446744073709551ms", true, 18446744073709551ull },
	{ "", false, 0 },
	{ "s", false, 0 },
	{ "m5", false, 0 },
	{ "5x", false, 0 },
	{ "5mm", false, 0 },
	{ "5M", false, 0 },
	{ "5S", false, 0 },
	{ "-5s", false, 0 },
	{ "+5s", false, 0 },
	{ "5.5s", false, 0 },
	{ "1e3", false, 0 },
	{ "5s ", false, 0 },
	{ "5s5", false, 0 },
	{ "213503982335d", false, 0 },
	{ "18446744073709551616ms", false, 0 },
	{ "99999999999999999999999", false, 0 },
};

Test(util, parse_duration)
{
	for (size_t i = 0; i < sizeof(durations) / sizeof(durations[0]); i++) {
		const struct num_case *c = &durations[i];
		uint64_t v = 12345;
		bool ok = rp_parse_duration_ms(c->in, &v);
		cr_assert_eq(ok, c->ok, "'%s': %d, want %d", c->in, ok, c->ok);
		if (ok)
			cr_assert_eq(v, c->v, "'%s': %llu, want %llu", c->in, (unsigned long long)v,
			             (unsigned long long)c->v);
		else
			cr_assert_eq(v, 12345, "'%s': a failed parse leaves the output alone",
			             c->in);
	}
}

static const struct num_case sizes[] = {
	{ "100", true, 100 },
	{ "100b", true, 100 },
	{ "100B", true, 100 },
	{ "512k", true, 512ull << 10 },
	{ "512K", true, 512ull << 10 },
	{ "2KiB", true, 2048 },
	{ "2kb", true, 2048 },
	{ "10M", true, 10ull << 20 },
	{ "3mb", true, 3ull << 20 },
	{ "1G", true, 1ull << 30 },
	{ "1gib", true, 1ull << 30 },
	{ "1t", true, 1ull << 40 },
	{ "0", true, 0 },
	{ "16777215t", true, 16777215ull << 40 },
	{ "16777216t", false, 0 },
	{ "18446744073709551615", true, UINT64_MAX },
	{ "18446744073709551616", false, 0 },
	{ "18014398509481984k", false, 0 },
	{ "", false, 0 },
	{ "M", false, 0 },
	{ "1.5M", false, 0 },
	{ "10X", false, 0 },
	{ "10MM", false, 0 },
	{ "-1", false, 0 },
	{ "1 0M", false, 0 },
};

Test(util, parse_size)
{
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		const struct num_case *c = &sizes[i];
		uint64_t v = 0;
		bool ok = rp_parse_size(c->in, &v);
		cr_assert_eq(ok, c->ok, "'%s': %d, want %d", c->in, ok, c->ok);
		if (ok)
			cr_assert_eq(v, c->v, "'%s': %llu, want %llu", c->in, (unsigned long long)v,
			             (unsigned long long)c->v);
	}
}

static const struct num_case u64s[] = {
	{ "0", true, 0 },
	{ "7", true, 7 },
	{ "007", true, 7 },
	{ "4294967296", true, 4294967296ull },
	{ "18446744073709551609", true, 18446744073709551609ull },
	{ "18446744073709551610", true, 18446744073709551610ull },
	{ "18446744073709551615", true, UINT64_MAX },
	{ "18446744073709551616", false, 0 },
	{ "18446744073709551620", false, 0 },
	{ "99999999999999999999", false, 0 },
	{ "184467440737095516150", false, 0 },
	{ "", false, 0 },
	{ "1a", false, 0 },
	{ "+1", false, 0 },
	{ "-1", false, 0 },
	{ " 1", false, 0 },
	{ "1 ", false, 0 },
	{ "0x10", false, 0 },
};

Test(util, parse_u64)
{
	for (size_t i = 0; i < sizeof(u64s) / sizeof(u64s[0]); i++) {
		const struct num_case *c = &u64s[i];
		uint64_t v = 0;
		bool ok = rp_parse_u64(c->in, &v);
		cr_assert_eq(ok, c->ok, "'%s': %d, want %d", c->in, ok, c->ok);
		if (ok)
			cr_assert_eq(v, c->v, "'%s': %llu", c->in, (unsigned long long)v);
	}
}

Test(util, id_format_and_parse)
{
	static const struct {
		uint64_t id;
		const char *hex;
	} ids[] = {
		{ 0, "0000000000000000" },
		{ 1, "0000000000000001" },
		{ 0x0123456789abcdefull, "0123456789abcdef" },
		{ UINT64_MAX, "ffffffffffffffff" },
		{ 0x18f3a2b4c5d60001ull, "18f3a2b4c5d60001" },
	};
	for (size_t i = 0; i < sizeof(ids) / sizeof(ids[0]); i++) {
		char out[17];
		memset(out, 'X', sizeof(out));
		rp_id_format(ids[i].id, out);
		cr_assert_str_eq(out, ids[i].hex);
		uint64_t back = 42;
		cr_assert(rp_id_parse(out, 16, &back));
		cr_assert_eq(back, ids[i].id);
	}
	uint64_t v = 7;
	cr_assert(rp_id_parse("0123456789ABCDEF", 16, &v), "upper case is accepted");
	cr_assert_eq(v, 0x0123456789abcdefull);
	static const char *const bad[] = {
		"",
		"123",
		"012345678901234",
		"01234567890123456",
		"0123456789abcdeg",
		" 123456789abcdef",
		"0123456789abcde ",
		"-123456789abcdef",
		"0x23456789abcdef",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		v = 7;
		cr_assert_not(rp_id_parse(bad[i], strlen(bad[i]), &v), "'%s'", bad[i]);
		cr_assert_eq(v, 7);
	}
	/* Only n bytes count. */
	cr_assert(rp_id_parse("0000000000000010trailing", 16, &v));
	cr_assert_eq(v, 16);
}

Test(util, id_round_trip_random)
{
	uint64_t x = 88172645463325252ull;
	for (int i = 0; i < 10000; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		char out[17];
		uint64_t back;
		rp_id_format(x, out);
		cr_assert_eq(strlen(out), 16);
		cr_assert(rp_id_parse(out, 16, &back));
		cr_assert_eq(back, x);
	}
}

Test(util, rfc5322_date)
{
	static const struct {
		uint64_t ms;
		const char *want;
	} dates[] = {
		{ 0, "Thu, 1 Jan 1970 00:00:00 +0000" },
		{ 999, "Thu, 1 Jan 1970 00:00:00 +0000" },
		{ 1795749565123ull, "Fri, 27 Nov 2026 03:19:25 +0000" },
		{ 1709251199000ull, "Thu, 29 Feb 2024 23:59:59 +0000" },
		{ 1709251200000ull, "Fri, 1 Mar 2024 00:00:00 +0000" },
		{ 946684800000ull, "Sat, 1 Jan 2000 00:00:00 +0000" },
		{ 4102444799000ull, "Thu, 31 Dec 2099 23:59:59 +0000" },
	};
	for (size_t i = 0; i < sizeof(dates) / sizeof(dates[0]); i++) {
		char out[40];
		rp_rfc5322_date(dates[i].ms, out, sizeof(out));
		cr_assert_str_eq(out, dates[i].want);
	}
	/* Truncated to fit, always terminated. */
	char small[10];
	rp_rfc5322_date(0, small, sizeof(small));
	cr_assert_str_eq(small, "Thu, 1 Ja");
}

Test(util, hash64_is_fnv1a)
{
	cr_assert_eq(rp_hash64("", 0), 0xcbf29ce484222325ull);
	cr_assert_eq(rp_hash64("a", 1), 0xaf63dc4c8601ec8cull);
	cr_assert_eq(rp_hash64("example.com", 11), 0x576846634e2714c6ull);
	cr_assert_neq(rp_hash64("example.com", 11), rp_hash64("example.org", 11));
}

Test(util, byte_order)
{
	unsigned char b[8];
	rp_put_be64(b, 0x0102030405060708ull);
	static const unsigned char want64[8] = { 1, 2, 3, 4, 5, 6, 7, 8 };
	cr_assert_arr_eq(b, want64, 8);
	cr_assert_eq(rp_get_be64(b), 0x0102030405060708ull);
	rp_put_be64(b, UINT64_MAX);
	cr_assert_eq(rp_get_be64(b), UINT64_MAX);
	rp_put_be32(b, 0xa1b2c3d4u);
	static const unsigned char want32[4] = { 0xa1, 0xb2, 0xc3, 0xd4 };
	cr_assert_arr_eq(b, want32, 4);
	cr_assert_eq(rp_get_be32(b), 0xa1b2c3d4u);
	/* Big-endian keys sort like the numbers. */
	unsigned char k1[8], k2[8];
	rp_put_be64(k1, 255);
	rp_put_be64(k2, 256);
	cr_assert_lt(memcmp(k1, k2, 8), 0);
}

Test(util, strings)
{
	char s[] = "MiXeD Case 123 ÄÖ";
	cr_assert_eq(rp_lower(s), s);
	cr_assert_str_eq(s, "mixed case 123 ÄÖ", "only ASCII is lowered");
	cr_assert(rp_strcaseprefix("Content-Type: x", 15, "content-type:"));
	cr_assert(rp_strcaseprefix("abc", 3, "ABC"));
	cr_assert(rp_strcaseprefix("abc", 3, ""));
	cr_assert_not(rp_strcaseprefix("abc", 2, "abc"), "len bounds the subject");
	cr_assert_not(rp_strcaseprefix("abd", 3, "abc"));
	char *d = xstrndup("abcdef", 3);
	cr_assert_str_eq(d, "abc");
	free(d);
	d = xstrdup("copy");
	cr_assert_str_eq(d, "copy");
	free(d);
	d = xmemdup("a\0b", 3);
	cr_assert_eq(memcmp(d, "a\0b", 3), 0);
	free(d);
	int *z = xcalloc(16, sizeof(int));
	for (int i = 0; i < 16; i++)
		cr_assert_eq(z[i], 0);
	free(z);
}

Test(util, utf8_sequences)
{
	static const struct {
		const char *s;
		size_t len;
		uint32_t cp;
	} good[] = {
		{ "A", 1, 'A' },
		{ "\xc3\xbc", 2, 0xfc },
		{ "\xe2\x82\xac", 3, 0x20ac },
		{ "\xf0\x9f\x93\xa7", 4, 0x1f4e7 },
		{ "\xf4\x8f\xbf\xbf", 4, 0x10ffff },
	};
	for (size_t i = 0; i < RP_ARRAY_LEN(good); i++) {
		uint32_t cp = 0;
		size_t n = strlen(good[i].s);
		cr_assert_eq(rp_utf8_len((const unsigned char *)good[i].s, n, &cp), good[i].len,
		             "good %zu", i);
		cr_assert_eq(cp, good[i].cp, "good %zu", i);
		/* Cut short, it is not a sequence. */
		if (n > 1)
			cr_assert_eq(rp_utf8_len((const unsigned char *)good[i].s, n - 1, &cp), 0);
	}
	static const char *const bad[] = {
		"\x80",             /* a continuation byte first */
		"\xc0\xaf",         /* overlong '/' */
		"\xe0\x80\xaf",     /* overlong, three bytes */
		"\xed\xa0\x80",     /* a surrogate */
		"\xf4\x90\x80\x80", /* past U+10FFFF */
		"\xc3\x28",         /* no continuation */
		"\xff",
	};
	for (size_t i = 0; i < RP_ARRAY_LEN(bad); i++) {
		uint32_t cp = 0;
		cr_assert_eq(rp_utf8_len((const unsigned char *)bad[i], strlen(bad[i]), &cp), 0,
		             "bad %zu", i);
	}
	uint32_t cp;
	cr_assert_eq(rp_utf8_len((const unsigned char *)"", 0, &cp), 0);
}

Test(util, clocks)
{
	uint64_t a = rp_mono_ns(), b = rp_mono_ns();
	cr_assert_geq(b, a);
	uint64_t now = rp_now_ms();
	cr_assert_gt(now, 1700000000000ull, "wall clock in unix ms");
	cr_assert_lt(now, 4102444800000ull);
	cr_assert_leq(rp_mono_ms(), rp_mono_ns() / 1000000);
}

Test(util, assert_aborts, .signal = SIGABRT)
{
	rp_assert(1 + 1 == 3);
}
