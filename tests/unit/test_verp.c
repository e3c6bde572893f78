/* test_verp.c - signed VERP return paths (queue/verp.c): the exact format
 * (a known answer computed outside ringpost), round trips, case, what is
 * not ours, and forgeries: every changed MAC digit, id or index, and
 * another key.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "queue/verp.h"

static unsigned char key[VERP_KEY_LEN];
static unsigned char other_key[VERP_KEY_LEN];

static void setup(void)
{
	for (int i = 0; i < VERP_KEY_LEN; i++) {
		key[i] = (unsigned char)i;
		other_key[i] = (unsigned char)i;
	}
	other_key[VERP_KEY_LEN - 1] ^= 1; /* one bit apart */
}

TestSuite(verp, .init = setup);

/* decode_k - verp_decode on a C string with key k at domain; msgid and idx
 * start as sentinels so that a result that does not set them shows. */
static enum verp_result decode_k(const unsigned char *k, const char *addr, const char *domain,
                                 uint64_t *msgid, uint32_t *idx)
{
	*msgid = 0xdeadbeefdeadbeefull;
	*idx = 0xdeadbeefu;
	return verp_decode(k, addr, strlen(addr), domain, msgid, idx);
}

/* decode - decode_k with the test key; a failure must leave msgid and idx
 * alone. */
static enum verp_result decode(const char *addr, const char *domain)
{
	uint64_t id;
	uint32_t ix;
	enum verp_result r = decode_k(key, addr, domain, &id, &ix);
	if (r != VERP_OK) {
		cr_assert_eq(id, 0xdeadbeefdeadbeefull, "%s: msgid set on failure", addr);
		cr_assert_eq(ix, 0xdeadbeefu, "%s: idx set on failure", addr);
	}
	return r;
}

/* encode - verp_encode into out, asserting that it fits. */
static size_t encode(uint64_t msgid, uint32_t idx, const char *domain, char *out, size_t outlen)
{
	size_t n = verp_encode(key, msgid, idx, domain, out, outlen);
	cr_assert_gt(n, 0, "encode %016llx/%u failed", (unsigned long long)msgid, idx);
	cr_assert_eq(n, strlen(out));
	return n;
}

/* HMAC-SHA256(key = 00 01 .. 1f, "verp" | be64 id | be32 idx), first 8
 * bytes in hex, computed with Python's hmac module: addresses already out
 * in the world must keep verifying, so the format may not drift. */
static const struct {
	uint64_t msgid;
	uint32_t idx;
	const char *want;
} known[] = {
	{ 0x0123456789abcdefull, 42, "bounce-0123456789abcdef-42-c4bad934c837ba70@b.example" },
	{ 0, 0, "bounce-0000000000000000-0-a1aac64925bb79dc@b.example" },
	{ UINT64_MAX, UINT32_MAX, "bounce-ffffffffffffffff-4294967295-796ac1b314dc0e1a@b.example" },
};

Test(verp, known_answers)
{
	for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++) {
		char out[VERP_ADDR_MAX];
		size_t n = encode(known[i].msgid, known[i].idx, "b.example", out, sizeof(out));
		cr_assert_str_eq(out, known[i].want);
		cr_assert_eq(n, strlen(known[i].want));
	}
}

Test(verp, round_trip)
{
	static const uint64_t ids[] = { 0, 1, 0x0123456789abcdefull, 0x8000000000000000ull,
		                        UINT64_MAX };
	static const uint32_t idxs[] = { 0, 1, 9, 10, 4096, 999999999, 1000000000, UINT32_MAX };
	static const char *const domains[] = { "b.example", "x", "bounces.mail.example.co.uk" };
	for (size_t d = 0; d < sizeof(domains) / sizeof(domains[0]); d++)
		for (size_t i = 0; i < sizeof(ids) / sizeof(ids[0]); i++)
			for (size_t j = 0; j < sizeof(idxs) / sizeof(idxs[0]); j++) {
				char out[VERP_ADDR_MAX];
				encode(ids[i], idxs[j], domains[d], out, sizeof(out));
				uint64_t id;
				uint32_t ix;
				cr_assert_eq(decode_k(key, out, domains[d], &id, &ix), VERP_OK,
				             "%s", out);
				cr_assert_eq(id, ids[i], "%s", out);
				cr_assert_eq(ix, idxs[j], "%s", out);
			}
}

Test(verp, decode_uses_len_not_nul)
{
	char out[VERP_ADDR_MAX + 8];
	size_t n = encode(77, 3, "b.example", out, sizeof(out));
	memcpy(out + n, "junk", 5); /* past len: must not be read as part of it */
	uint64_t id;
	uint32_t ix;
	cr_assert_eq(verp_decode(key, out, n, "b.example", &id, &ix), VERP_OK);
	cr_assert_eq(id, 77);
	cr_assert_eq(ix, 3);
	cr_assert_eq(verp_decode(key, out, n - 1, "b.example", &id, &ix), VERP_NOT_VERP,
	             "one byte short: another domain");
	cr_assert_eq(verp_decode(key, out, 0, "b.example", &id, &ix), VERP_NOT_VERP);
}

Test(verp, any_case)
{
	char out[VERP_ADDR_MAX];
	size_t n = encode(0x00abcdef12345678ull, 12, "Bounce.Example", out, sizeof(out));
	/* The whole address upper-cased: prefix, hex id, MAC, domain. */
	char up[VERP_ADDR_MAX];
	for (size_t i = 0; i <= n; i++)
		up[i] = (out[i] >= 'a' && out[i] <= 'z') ? (char)(out[i] - 'a' + 'A') : out[i];
	cr_assert_str_eq(up + n - 15, "@BOUNCE.EXAMPLE");
	cr_assert_eq(strncmp(up, "BOUNCE-00ABCDEF12345678-12-", 27), 0, "%s", up);
	static const char *const domains[] = { "bounce.example", "BOUNCE.EXAMPLE",
		                               "Bounce.Example" };
	for (size_t d = 0; d < 3; d++) {
		uint64_t id;
		uint32_t ix;
		cr_assert_eq(decode_k(key, out, domains[d], &id, &ix), VERP_OK, "%s", domains[d]);
		cr_assert_eq(decode_k(key, up, domains[d], &id, &ix), VERP_OK, "%s", domains[d]);
		cr_assert_eq(id, 0x00abcdef12345678ull);
		cr_assert_eq(ix, 12);
	}
}

/* The real address for (0x0123456789abcdef, 42) at b.example, in parts. */
#define ID  "0123456789abcdef"
#define MAC "c4bad934c837ba70"
#define DOM "@b.example"

Test(verp, not_ours)
{
	static const char *const cases[] = {
		"",
		"@b.example",
		"postmaster@b.example",
		"bounce@b.example",
		"bounce-@b.example",
		"bounces-" ID "-42-" MAC DOM, /* another prefix */
		"xbounce-" ID "-42-" MAC DOM, /* prefix not at the start */
		"bounce+" ID "-42-" MAC DOM,  /* another separator */
		"bounce-" ID "-42-" MAC,      /* no domain */
		"bounce-" ID "-42-" MAC "@",  /* empty domain */
		"bounce-" ID "-42-" MAC "@c.example",
		"bounce-" ID "-42-" MAC "@b.example.org", /* trailing junk in the domain */
		"bounce-" ID "-42-" MAC "@xb.example",
		"bounce-" ID "-42-" MAC "@b.examplE.",
		"bounce-" ID "-42-" MAC "x" DOM, /* trailing junk in the local part */
		"bounce-" ID "-42-" MAC "-" DOM,
		"bounce-" ID "-42-" MAC "-1" DOM,
		"bounce-" ID "-42-c4bad934c837ba7" DOM, /* MAC one short */
		"bounce-" ID "-42-" DOM,                /* MAC missing */
		"bounce-" ID "-42" DOM,                 /* MAC and its dash missing */
		"bounce-" ID DOM,                       /* index and MAC missing */
		"bounce-" ID "--" MAC DOM,              /* empty index */
		"bounce-" ID "-4a-" MAC DOM,            /* non-digit index */
		"bounce-" ID "-+42-" MAC DOM,
		"bounce-" ID "- 42-" MAC DOM,
		"bounce-" ID "-4294967296-" MAC DOM,    /* index overflows 32 bits */
		"bounce-" ID "-9999999999-" MAC DOM,    /* 10 digits, over UINT32_MAX */
		"bounce-" ID "-00000000042-" MAC DOM,   /* 11 digits */
		"bounce--42-" MAC DOM,                  /* empty id */
		"bounce-0123456789abcde-42-" MAC DOM,   /* 15-digit id */
		"bounce-0123456789abcdef0-42-" MAC DOM, /* 17-digit id */
		"bounce-0123456789abcdeg-42-" MAC DOM,  /* non-hex id */
		"bounce-0x23456789abcdef-42-" MAC DOM,
		"bounce- 123456789abcdef-42-" MAC DOM,
		"bounce-" ID "-42-" MAC "@b.example@b.example",
		"<bounce-" ID "-42-" MAC DOM ">",
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		cr_assert_eq(decode(cases[i], "b.example"), VERP_NOT_VERP, "'%s'", cases[i]);
	uint64_t id;
	uint32_t ix;
	const char *good = "bounce-" ID "-42-" MAC DOM;
	cr_assert_eq(decode(good, "b.example"), VERP_OK, "the base case is valid");
	/* No domain to compare with: nothing is ours. */
	cr_assert_eq(decode(good, ""), VERP_NOT_VERP);
	cr_assert_eq(decode(good, NULL), VERP_NOT_VERP);
	cr_assert_eq(decode_k(key, good, "b.example", &id, &ix), VERP_OK);
	cr_assert_eq(id, 0x0123456789abcdefull);
	cr_assert_eq(ix, 42);
}

Test(verp, every_mac_digit_is_checked)
{
	char out[VERP_ADDR_MAX];
	size_t n = encode(0x0123456789abcdefull, 42, "b.example", out, sizeof(out));
	cr_assert_str_eq(out, "bounce-" ID "-42-" MAC DOM);
	size_t mac_at = n - strlen(DOM) - 16;
	for (size_t i = 0; i < 16; i++) {
		/* Every other hex digit in that place: a forgery. */
		static const char hex[] = "0123456789abcdef";
		for (int h = 0; h < 16; h++) {
			char copy[VERP_ADDR_MAX];
			memcpy(copy, out, n + 1);
			if (copy[mac_at + i] == hex[h])
				continue;
			copy[mac_at + i] = hex[h];
			cr_assert_eq(decode(copy, "b.example"), VERP_BAD_MAC, "'%s'", copy);
		}
		/* Something that is not hex at all is never accepted either
		 * (verp.c calls it a bad MAC: the shape is ours). */
		char copy[VERP_ADDR_MAX];
		memcpy(copy, out, n + 1);
		copy[mac_at + i] = 'g';
		cr_assert_neq(decode(copy, "b.example"), VERP_OK, "'%s'", copy);
	}
}

Test(verp, id_and_index_are_signed)
{
	/* The MAC of (0x0123456789abcdef, 42) with the id or the index
	 * changed around it: forgeries. */
	static const struct {
		uint64_t msgid;
		const char *idx;
		enum verp_result want;
	} cases[] = {
		{ 0x0123456789abcdefull, "42", VERP_OK }, /* the real one */
		{ 0x0123456789abcdeeull, "42", VERP_BAD_MAC },
		{ 0x1123456789abcdefull, "42", VERP_BAD_MAC },
		{ 0x0123456789abcdefull + (1ull << 32), "42", VERP_BAD_MAC },
		{ 0, "42", VERP_BAD_MAC },
		{ 0x0123456789abcdefull, "43", VERP_BAD_MAC }, /* the neighbours */
		{ 0x0123456789abcdefull, "41", VERP_BAD_MAC },
		{ 0x0123456789abcdefull, "0", VERP_BAD_MAC },
		{ 0x0123456789abcdefull, "4", VERP_BAD_MAC },
		{ 0x0123456789abcdefull, "420", VERP_BAD_MAC },
		{ 0x0123456789abcdefull, "4294967295", VERP_BAD_MAC },
	};
	char out[VERP_ADDR_MAX], mac[17];
	size_t n = encode(0x0123456789abcdefull, 42, "b.example", out, sizeof(out));
	memcpy(mac, out + n - strlen(DOM) - 16, 16);
	mac[16] = '\0';
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char addr[VERP_ADDR_MAX];
		snprintf(addr, sizeof(addr), "bounce-%016llx-%s-%s@b.example",
		         (unsigned long long)cases[i].msgid, cases[i].idx, mac);
		cr_assert_eq(decode(addr, "b.example"), cases[i].want, "'%s'", addr);
	}
}

Test(verp, another_key_is_a_bad_mac)
{
	char out[VERP_ADDR_MAX];
	encode(99, 1, "b.example", out, sizeof(out));
	uint64_t id;
	uint32_t ix;
	cr_assert_eq(decode_k(other_key, out, "b.example", &id, &ix), VERP_BAD_MAC);
	cr_assert_eq(id, 0xdeadbeefdeadbeefull, "nothing is set for a forgery");
	char other[VERP_ADDR_MAX];
	cr_assert_gt(verp_encode(other_key, 99, 1, "b.example", other, sizeof(other)), 0);
	cr_assert_str_neq(out, other, "the key changes the MAC");
	cr_assert_eq(decode_k(other_key, other, "b.example", &id, &ix), VERP_OK);
	cr_assert_eq(decode_k(key, other, "b.example", &id, &ix), VERP_BAD_MAC);
}

Test(verp, encode_limits)
{
	const char *want = "bounce-0123456789abcdef-42-" MAC DOM;
	size_t len = strlen(want);
	char out[VERP_ADDR_MAX];
	/* Exactly room for the NUL, and one byte less. */
	memset(out, 'x', sizeof(out));
	cr_assert_eq(verp_encode(key, 0x0123456789abcdefull, 42, "b.example", out, len + 1), len);
	cr_assert_str_eq(out, want);
	cr_assert_eq(verp_encode(key, 0x0123456789abcdefull, 42, "b.example", out, len), 0);
	cr_assert_eq(verp_encode(key, 0x0123456789abcdefull, 42, "b.example", out, 1), 0);
	cr_assert_eq(verp_encode(key, 0x0123456789abcdefull, 42, "b.example", NULL, 0), 0);
	/* No domain: no address. */
	cr_assert_eq(verp_encode(key, 1, 1, "", out, sizeof(out)), 0);
	cr_assert_eq(verp_encode(key, 1, 1, NULL, out, sizeof(out)), 0);
	/* The longest address (the largest id and index) fits VERP_ADDR_MAX
	 * with a domain of 250 bytes. */
	char dom[251];
	memset(dom, 'd', 250);
	dom[250] = '\0';
	size_t n = verp_encode(key, UINT64_MAX, UINT32_MAX, dom, out, sizeof(out));
	cr_assert_eq(n, 7 + 16 + 1 + 10 + 1 + 16 + 1 + 250);
	cr_assert_lt(n, VERP_ADDR_MAX);
}
