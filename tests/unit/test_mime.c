/* test_mime.c - MIME composition (api/mime.c): base64 both ways over known
 * vectors, random data and broken input; quoted-printable line length and a
 * round trip through a decoder written here; header encoding (ASCII folding,
 * RFC 2047 words that never split a UTF-8 sequence, address lists with
 * non-ASCII display names); and the structure mime_build gives text, html,
 * both, and attachments.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/mime.h"

/* ---- helpers ------------------------------------------------------------ */

/* rnd - a small deterministic generator (xorshift64*), so failures repeat. */
static uint64_t rnd_state = 0x9e3779b97f4a7c15ull;

static uint64_t rnd(void)
{
	rnd_state ^= rnd_state >> 12;
	rnd_state ^= rnd_state << 25;
	rnd_state ^= rnd_state >> 27;
	return rnd_state * 2685821657736338717ull;
}

static void rnd_bytes(unsigned char *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (unsigned char)rnd();
}

static char *str_of(struct buf *b)
{
	return buf_cstr(b);
}

/* max_line - the longest line of p (CRLF not counted); fails on a bare CR
 * or LF, and on a last line without CRLF when crlf_end. */
static size_t max_line(const char *p, size_t n, bool crlf_end)
{
	size_t longest = 0, cur = 0;
	for (size_t i = 0; i < n; i++) {
		if (p[i] == '\r') {
			cr_assert(i + 1 < n && p[i + 1] == '\n', "bare CR at %zu", i);
			longest = cur > longest ? cur : longest;
			cur = 0;
			i++;
			continue;
		}
		cr_assert_neq(p[i], '\n', "bare LF at %zu", i);
		cur++;
	}
	if (crlf_end)
		cr_assert(n >= 2 && p[n - 2] == '\r' && p[n - 1] == '\n', "does not end in CRLF");
	return cur > longest ? cur : longest;
}

/* b64_decode_str - decode a NUL-terminated string with base64_decode. */
static bool b64_decode_str(const char *s, struct buf *out)
{
	return base64_decode(s, strlen(s), out);
}

/* qp_decode - RFC 2045 6.7 decoding: "=XX", soft breaks "=CRLF", and
 * CRLF hard breaks kept as CRLF. Fails the test on malformed input. */
static void qp_decode(const char *p, size_t n, struct buf *out)
{
	for (size_t i = 0; i < n; i++) {
		if (p[i] != '=') {
			buf_append(out, p + i, 1);
			continue;
		}
		cr_assert(i + 2 < n || (i + 2 == n && p[i + 1] == '\r'), "'=' at the end (%zu)", i);
		if (p[i + 1] == '\r') {
			cr_assert_eq(p[i + 2], '\n', "'=CR' without LF at %zu", i);
			i += 2;
			continue;
		}
		char hx[3] = { p[i + 1], p[i + 2], 0 };
		cr_assert(strchr("0123456789ABCDEF", hx[0]) && strchr("0123456789ABCDEF", hx[1]),
		          "bad escape '=%s' at %zu", hx, i);
		char c = (char)strtol(hx, NULL, 16);
		buf_append(out, &c, 1);
		i += 2;
	}
}

/* crlf_normalize - what the encoder promises to preserve: every line end
 * (CRLF, a bare LF, a lone CR) becomes CRLF. */
static void crlf_normalize(const char *p, size_t n, struct buf *out)
{
	for (size_t i = 0; i < n; i++) {
		if (p[i] == '\r' && i + 1 < n && p[i + 1] == '\n')
			continue;
		if (p[i] == '\n' || p[i] == '\r')
			buf_append(out, "\r\n", 2);
		else
			buf_append(out, p + i, 1);
	}
}

/* unfold - remove the CRLF of every fold (CRLF followed by a blank). */
static void unfold(const char *p, size_t n, struct buf *out)
{
	for (size_t i = 0; i < n; i++) {
		if (p[i] == '\r' && i + 2 < n && p[i + 1] == '\n' &&
		    (p[i + 2] == ' ' || p[i + 2] == '\t')) {
			i++;
			continue;
		}
		buf_append(out, p + i, 1);
	}
}

/* utf8_complete - p[0..n) is whole, valid UTF-8 sequences. */
static bool utf8_complete(const unsigned char *p, size_t n)
{
	size_t i = 0;
	while (i < n) {
		unsigned c = p[i], k;
		if (c < 0x80)
			k = 0;
		else if ((c & 0xe0) == 0xc0)
			k = 1;
		else if ((c & 0xf0) == 0xe0)
			k = 2;
		else if ((c & 0xf8) == 0xf0)
			k = 3;
		else
			return false;
		if (i + k >= n + (k == 0))
			return false;
		for (unsigned j = 1; j <= k; j++)
			if ((p[i + j] & 0xc0) != 0x80)
				return false;
		i += k + 1;
	}
	return true;
}

/* rfc2047_decode - the unfolded value of a header with its encoded words
 * decoded (blanks between two adjacent words dropped, RFC 2047 6.2). Checks
 * every word: at most 75 characters, UTF-8 B encoding, whole characters. */
static void rfc2047_decode(const char *v, struct buf *out, unsigned *nwords)
{
	static const char pre[] = "=?UTF-8?B?";
	bool last_word = false;
	size_t pending_blank_start = 0, pending_blank_len = 0;
	const char *p = v;
	*nwords = 0;
	while (*p) {
		if (!strncmp(p, pre, sizeof(pre) - 1)) {
			const char *end = strstr(p + sizeof(pre) - 1, "?=");
			cr_assert_not_null(end, "unterminated encoded word in '%s'", v);
			size_t wl = (size_t)(end + 2 - p);
			cr_assert_leq(wl, 75, "encoded word of %zu characters: %.*s", wl, (int)wl,
			              p);
			struct buf raw = { 0 };
			const char *b = p + sizeof(pre) - 1;
			cr_assert(base64_decode(b, (size_t)(end - b), &raw), "bad base64 in word");
			cr_assert(
			    utf8_complete((const unsigned char *)buf_head(&raw), buf_used(&raw)),
			    "encoded word %u splits a UTF-8 sequence: %.*s", *nwords, (int)wl, p);
			buf_append(out, buf_head(&raw), buf_used(&raw));
			buf_free(&raw);
			(*nwords)++;
			last_word = true;
			pending_blank_len = 0;
			p = end + 2;
			continue;
		}
		if (*p == ' ' || *p == '\t') {
			/* Blanks after a word are dropped only if another word follows. */
			const char *q = p;
			while (*q == ' ' || *q == '\t')
				q++;
			if (last_word && !strncmp(q, pre, sizeof(pre) - 1)) {
				p = q;
				continue;
			}
			(void)pending_blank_start;
			buf_append(out, p, (size_t)(q - p));
			last_word = false;
			p = q;
			continue;
		}
		buf_append(out, p, 1);
		last_word = false;
		p++;
	}
	(void)pending_blank_len;
}

/* header_value - encode one header and return its unfolded, decoded value
 * (after "Name: "); checks line lengths on the way. */
static char *header_roundtrip(const char *name, const char *value, bool addresses, unsigned *nwords,
                              size_t line_max)
{
	struct buf h = { 0 }, u = { 0 }, d = { 0 };
	mime_encode_header(&h, name, value, addresses);
	size_t longest = max_line(buf_head(&h), buf_used(&h), true);
	cr_assert_leq(longest, line_max, "%s: a line of %zu characters:\n%s", name, longest,
	              str_of(&h));
	/* Exactly one header line: every line after the first is a fold. */
	const char *s = str_of(&h);
	for (const char *nl = strstr(s, "\r\n"); nl && nl[2]; nl = strstr(nl + 2, "\r\n"))
		cr_assert(nl[2] == ' ' || nl[2] == '\t', "a continuation line without a blank:\n%s",
		          s);
	unfold(buf_head(&h), buf_used(&h), &u);
	char *line = str_of(&u);
	size_t nl = strlen(name);
	cr_assert(!strncmp(line, name, nl) && line[nl] == ':' && line[nl + 1] == ' ',
	          "header starts with '%s: ': %s", name, line);
	size_t ll = strlen(line);
	cr_assert(ll >= 2 && !strcmp(line + ll - 2, "\r\n"));
	line[ll - 2] = '\0';
	unsigned nw = 0;
	rfc2047_decode(line + nl + 2, &d, &nw);
	if (nwords)
		*nwords = nw;
	char *out = strdup(str_of(&d));
	buf_free(&h);
	buf_free(&u);
	buf_free(&d);
	return out;
}

/* ---- base64 ------------------------------------------------------------- */

struct b64_vector {
	const char *raw, *enc;
};

static const struct b64_vector b64_vectors[] = {
	{ "", "" },
	{ "f", "Zg==" },
	{ "fo", "Zm8=" },
	{ "foo", "Zm9v" },
	{ "foob", "Zm9vYg==" },
	{ "fooba", "Zm9vYmE=" },
	{ "foobar", "Zm9vYmFy" },
	{ "\xff\xfe\xfd", "//79" },
	{ "\xfb\xff", "+/8=" },
};

Test(mime, base64_rfc4648_vectors)
{
	for (size_t i = 0; i < sizeof(b64_vectors) / sizeof(b64_vectors[0]); i++) {
		const struct b64_vector *v = &b64_vectors[i];
		struct buf e = { 0 }, d = { 0 };
		base64_encode(&e, (const unsigned char *)v->raw, strlen(v->raw), true);
		cr_assert_eq(buf_used(&e), strlen(v->enc), "vector %zu: length", i);
		cr_assert(!memcmp(buf_head(&e), v->enc, buf_used(&e)), "vector %zu: '%s' want '%s'",
		          i, str_of(&e), v->enc);
		cr_assert(b64_decode_str(v->enc, &d), "vector %zu: decode", i);
		cr_assert_eq(buf_used(&d), strlen(v->raw), "vector %zu: decoded length", i);
		cr_assert(!memcmp(buf_head(&d), v->raw, buf_used(&d)), "vector %zu: decoded bytes",
		          i);
		buf_free(&e);
		buf_free(&d);
	}
}

static void b64_roundtrip(size_t n, bool lines)
{
	unsigned char *data = malloc(n + 1);
	rnd_bytes(data, n);
	struct buf e = { 0 }, d = { 0 };
	base64_encode(&e, data, n, lines);
	const char *s = buf_head(&e);
	size_t len = buf_used(&e);
	if (lines) {
		/* Lines of exactly 76 characters but the last; no CRLF at the end. */
		size_t col = 0, payload = 0;
		for (size_t i = 0; i < len; i++) {
			if (s[i] == '\r') {
				cr_assert_eq(s[i + 1], '\n');
				cr_assert_eq(col, 76, "n=%zu: a line of %zu before the last", n,
				             col);
				cr_assert_lt(i + 2, len, "n=%zu: CRLF at the end", n);
				col = 0;
				i++;
				continue;
			}
			col++;
			payload++;
		}
		cr_assert_leq(col, 76);
		cr_assert_eq(payload, (n + 2) / 3 * 4, "n=%zu: %zu characters", n, payload);
	} else {
		cr_assert_eq(len, (n + 2) / 3 * 4, "n=%zu: unwrapped length %zu", n, len);
		cr_assert_null(memchr(s, '\r', len));
	}
	cr_assert(base64_decode(s, len, &d), "n=%zu: decode failed", n);
	cr_assert_eq(buf_used(&d), n, "n=%zu: decoded %zu bytes", n, buf_used(&d));
	cr_assert(!memcmp(buf_head(&d), data, n), "n=%zu: bytes differ", n);
	buf_free(&e);
	buf_free(&d);
	free(data);
}

Test(mime, base64_random_round_trips)
{
	for (size_t n = 0; n <= 400; n++) {
		b64_roundtrip(n, true);
		b64_roundtrip(n, false);
	}
	/* Line-boundary sizes: 57 bytes fill a 76-character line. */
	static const size_t edges[] = {
		56, 57, 58, 113, 114, 115, 171, 5700, 5701, 65536, 1000003
	};
	for (size_t i = 0; i < sizeof(edges) / sizeof(edges[0]); i++) {
		b64_roundtrip(edges[i], true);
		b64_roundtrip(edges[i], false);
	}
}

Test(mime, base64_decode_leniency)
{
	/* Whitespace anywhere, padding optional, URL-safe alphabet accepted. */
	static const struct b64_vector ok[] = {
		{ "foobar", "Zm9v\r\nYmFy" },
		{ "foobar", " Zm 9v\tYm Fy \n" },
		{ "f", "Zg" },
		{ "fo", "Zm8" },
		{ "f", "Zg=" },
		{ "\xfb\xff", "-_8" },
		{ "", "  \r\n " },
	};
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		struct buf d = { 0 };
		cr_assert(b64_decode_str(ok[i].enc, &d), "case %zu '%s' refused", i, ok[i].enc);
		cr_assert_eq(buf_used(&d), strlen(ok[i].raw), "case %zu: length", i);
		cr_assert(!memcmp(buf_head(&d), ok[i].raw, buf_used(&d)), "case %zu: bytes", i);
		buf_free(&d);
	}
}

Test(mime, base64_decode_errors)
{
	static const char *const bad[] = {
		"Zm9v!", /* not in the alphabet */
		"Zm9v*mFy",    "Zm9v.",    "Zm9vYmFy\x01",
		"Zm\xc3\xa9v", "Zm9v\0Ym", "Zg==Zg==", /* data after padding */
		"=Zg",         "Zm=9v",    "Z",        /* a lone character: 6 bits make no byte */
		"Zm9vY",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct buf d = { 0 };
		buf_puts(&d, "keep");
		/* Explicit lengths: one case carries a NUL. */
		size_t n = i == 5 ? 7 : strlen(bad[i]);
		cr_assert_not(base64_decode(bad[i], n, &d), "case %zu '%s' accepted", i, bad[i]);
		cr_assert_eq(buf_used(&d), 4, "case %zu: output changed on failure", i);
		cr_assert(!memcmp(buf_head(&d), "keep", 4));
		buf_free(&d);
	}
}

Test(mime, base64_appends)
{
	struct buf b = { 0 };
	buf_puts(&b, "x:");
	base64_encode(&b, (const unsigned char *)"foo", 3, true);
	cr_assert(b64_decode_str("YmFy", &b));
	cr_assert_str_eq(str_of(&b), "x:Zm9vbar");
	buf_free(&b);
}

/* ---- quoted-printable --------------------------------------------------- */

/* qp_check - encode, check every line (<= 76, legal characters, no blank
 * before a line end), decode and compare with the CRLF-normalized input. */
static void qp_check(const char *p, size_t n, const char *what)
{
	struct buf e = { 0 }, d = { 0 }, want = { 0 };
	mime_qp_encode(&e, p, n);
	const char *s = buf_head(&e);
	size_t len = buf_used(&e);
	size_t longest = max_line(s, len, false);
	cr_assert_leq(longest, 76, "%s: a line of %zu characters", what, longest);
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c == '\r') {
			cr_assert(i == 0 || (s[i - 1] != ' ' && s[i - 1] != '\t'),
			          "%s: a blank before a line end at %zu", what, i);
			continue;
		}
		cr_assert(c == '\n' || c == ' ' || c == '\t' || (c >= 33 && c <= 126),
		          "%s: raw byte 0x%02x in the output", what, c);
	}
	cr_assert(len == 0 || (s[len - 1] != ' ' && s[len - 1] != '\t'), "%s: ends in a blank",
	          what);
	qp_decode(s, len, &d);
	crlf_normalize(p, n, &want);
	cr_assert_eq(buf_used(&d), buf_used(&want), "%s: decoded %zu bytes, want %zu", what,
	             buf_used(&d), buf_used(&want));
	cr_assert(!buf_used(&d) || !memcmp(buf_head(&d), buf_head(&want), buf_used(&d)),
	          "%s: decoded bytes differ", what);
	buf_free(&e);
	buf_free(&d);
	buf_free(&want);
}

Test(mime, qp_table)
{
	static const struct {
		const char *in, *out;
	} cases[] = {
		{ "", "" },
		{ "hello", "hello" },
		{ "a=b", "a=3Db" },
		{ "caf\xc3\xa9", "caf=C3=A9" },
		{ "trailing ", "trailing=20" },
		{ "tab\t", "tab=09" },
		{ "line \nnext", "line=20\r\nnext" },
		{ "line\r\nnext", "line\r\nnext" },
		{ "lone\rcr", "lone\r\ncr" }, /* a lone CR is a line end */
		{ "a\r.\rb", "a\r\n.\r\nb" },
		{ "nul\0x", "nul=00x" },
		{ "a b\tc", "a b\tc" },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct buf e = { 0 };
		size_t n = i == 10 ? 5 : strlen(cases[i].in);
		mime_qp_encode(&e, cases[i].in, n);
		cr_assert_str_eq(str_of(&e), cases[i].out, "case %zu", i);
		buf_free(&e);
	}
}

Test(mime, qp_line_lengths_and_round_trip)
{
	char name[64];
	/* Long runs around the 76 limit, with every kind of character at the
	 * fold point. */
	static const char fill[] = { 'a', ' ', '=', '\xe9', '\t', '.' };
	for (size_t f = 0; f < sizeof(fill); f++) {
		for (size_t n = 70; n <= 240; n++) {
			char *p = malloc(n + 2);
			memset(p, 'x', n);
			for (size_t i = 0; i < n; i += 1 + (i % 7))
				p[i] = fill[f];
			snprintf(name, sizeof(name), "fill %zu length %zu", f, n);
			qp_check(p, n, name);
			p[n] = '\n';
			qp_check(p, n + 1, name);
			free(p);
		}
	}
	/* Random bytes, and random text-like input with line breaks. */
	static const char alphabet[] = "ab =\t\r\n.\xc3\xa9\x00\xff-";
	for (int round = 0; round < 400; round++) {
		size_t n = rnd() % 600;
		char *p = malloc(n + 1);
		if (round % 2)
			rnd_bytes((unsigned char *)p, n);
		else
			for (size_t i = 0; i < n; i++)
				p[i] = alphabet[rnd() % (sizeof(alphabet) - 1)];
		snprintf(name, sizeof(name), "random round %d (%zu bytes)", round, n);
		qp_check(p, n, name);
		free(p);
	}
	/* One line of 10,000 characters. */
	char *big = malloc(10000);
	memset(big, 'z', 10000);
	qp_check(big, 10000, "one long line");
	free(big);
}

/* ---- header encoding ---------------------------------------------------- */

Test(mime, header_ascii_short)
{
	struct buf h = { 0 };
	mime_encode_header(&h, "Subject", "Hello world", false);
	cr_assert_str_eq(str_of(&h), "Subject: Hello world\r\n");
	buf_free(&h);
}

Test(mime, header_ascii_folding)
{
	/* Words of many lengths: the folded header unfolds to the original and
	 * no line passes 78 characters (RFC 5322 2.1.1). */
	for (int round = 0; round < 200; round++) {
		char value[900];
		size_t n = 0, words = 1 + rnd() % 60;
		for (size_t w = 0; w < words && n < 800; w++) {
			if (w)
				value[n++] = ' ';
			size_t wl = 1 + rnd() % 20;
			for (size_t i = 0; i < wl; i++)
				value[n++] = (char)('a' + rnd() % 26);
		}
		value[n] = '\0';
		char *got = header_roundtrip("Subject", value, false, NULL, 78);
		cr_assert_str_eq(got, value, "round %d: '%s'", round, value);
		free(got);
	}
}

Test(mime, header_ascii_long_word_stays_within_998)
{
	/* No blank to fold at: the line must still fit RFC 5322's 998 limit,
	 * and the value must come back unchanged. */
	char value[3001];
	memset(value, 'w', 3000);
	value[3000] = '\0';
	char *got = header_roundtrip("Subject", value, false, NULL, 998);
	cr_assert_str_eq(got, value);
	free(got);
}

Test(mime, header_ascii_lookalike_encoded_word)
{
	/* Plain text that looks like an encoded word would be decoded by the
	 * receiver: it must travel so that it decodes to itself. */
	static const char v[] = "price =?UTF-8?B?w6k=?= today";
	char *got = header_roundtrip("Subject", v, false, NULL, 78);
	cr_assert_str_eq(got, v);
	free(got);
}

Test(mime, header_rfc2047_words)
{
	/* Characters of 1 to 4 bytes at every offset relative to the word size. */
	static const char *const chars[] = { "a", "\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80",
		                             " " };
	for (size_t c = 0; c < 5; c++) {
		for (size_t lead = 0; lead < 8; lead++) {
			char value[1200];
			size_t n = 0;
			for (size_t i = 0; i < lead; i++)
				value[n++] = 'x';
			/* Mostly one character size per value, the others mixed in
			 * at shifting positions. */
			for (size_t j = 0; n < 300; j++) {
				const char *ch = chars[j % 7 == 6 ? (c + j) % 5 : (c % 3) + 1];
				memcpy(value + n, ch, strlen(ch));
				n += strlen(ch);
			}
			value[n] = '\0';
			unsigned nw = 0;
			char *got = header_roundtrip("Subject", value, false, &nw, 76);
			cr_assert_str_eq(got, value, "char %zu lead %zu", c, lead);
			cr_assert_geq(nw, 2, "char %zu lead %zu: %u words", c, lead, nw);
			free(got);
		}
	}
	/* A short non-ASCII value is one word. */
	unsigned nw = 0;
	char *got = header_roundtrip("Subject",
	                             "Gr\xc3\xbc\xc3\x9f"
	                             "e",
	                             false, &nw, 76);
	cr_assert_str_eq(got, "Gr\xc3\xbc\xc3\x9f"
	                      "e");
	cr_assert_eq(nw, 1);
	free(got);
}

Test(mime, header_random_utf8)
{
	static const char *const pieces[] = {
		"a",        "Z", " ",  "\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80",
		"\xd0\x96", "-", "=?", "?="
	};
	for (int round = 0; round < 300; round++) {
		char value[2000];
		size_t n = 0, k = 1 + rnd() % 150;
		for (size_t i = 0; i < k; i++) {
			const char *p = pieces[rnd() % (sizeof(pieces) / sizeof(pieces[0]))];
			memcpy(value + n, p, strlen(p));
			n += strlen(p);
		}
		/* Trailing blanks are not content (RFC 5322 unfolding drops them). */
		if (value[n - 1] == ' ')
			value[n++] = 'Z';
		value[n] = '\0';
		char *got = header_roundtrip("X-Note", value, false, NULL, 998);
		cr_assert_str_eq(got, value, "round %d: '%s'", round, value);
		free(got);
	}
}

Test(mime, header_address_list)
{
	struct {
		const char *in;
		const char *want;     /* decoded, unfolded */
		const char *plain[4]; /* must appear literally, unencoded */
	} cases[] = {
		{ "a@example.test", "a@example.test", { "a@example.test" } },
		{ "Ann <a@example.test>", "Ann <a@example.test>", { "Ann <a@example.test>" } },
		{ "J\xc3\xb6rg M\xc3\xbcller <j@example.test>, b@example.test",
		  "J\xc3\xb6rg M\xc3\xbcller <j@example.test>, b@example.test",
		  { "<j@example.test>", "b@example.test" } },
		{ "\"M\xc3\xbcller, J\xc3\xb6rg\" <j@example.test>, \"Doe, Ann\" <a@example.test>",
		  "M\xc3\xbcller, J\xc3\xb6rg <j@example.test>, \"Doe, Ann\" <a@example.test>",
		  { "<j@example.test>", "\"Doe, Ann\" <a@example.test>" } },
		{ "\xe5\xb1\xb1\xe7\x94\xb0 \xe5\xa4\xaa\xe9\x83\x8e <yamada@example.test>",
		  "\xe5\xb1\xb1\xe7\x94\xb0 \xe5\xa4\xaa\xe9\x83\x8e <yamada@example.test>",
		  { "<yamada@example.test>" } },
		/* Internationalized addresses stay as they are (SMTPUTF8). */
		{ "d\xc3\xa9j\xc3\xa0@example.test",
		  "d\xc3\xa9j\xc3\xa0@example.test",
		  { "d\xc3\xa9j\xc3\xa0@example.test" } },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct buf h = { 0 };
		mime_encode_header(&h, "To", cases[i].in, true);
		const char *s = str_of(&h);
		for (size_t k = 0; k < 4 && cases[i].plain[k]; k++)
			cr_assert_not_null(strstr(s, cases[i].plain[k]),
			                   "case %zu: '%s' not plain in %s", i, cases[i].plain[k],
			                   s);
		buf_free(&h);
		char *got = header_roundtrip("To", cases[i].in, true, NULL, 78);
		cr_assert_str_eq(got, cases[i].want, "case %zu", i);
		free(got);
	}
	/* A long list folds between entries and keeps every address. */
	char list[4000] = "";
	for (int i = 0; i < 40; i++) {
		char one[80];
		snprintf(one, sizeof(one), "%sN\xc3\xa4me %d <user%d@example.test>", i ? ", " : "",
		         i, i);
		strcat(list, one);
	}
	char *got = header_roundtrip("To", list, true, NULL, 78);
	cr_assert_str_eq(got, list);
	free(got);
}

Test(mime, header_validators)
{
	cr_assert(mime_header_name_ok("X-Campaign"));
	cr_assert_not(mime_header_name_ok(""));
	cr_assert_not(mime_header_name_ok("Bad Name"));
	cr_assert_not(mime_header_name_ok("Colon:"));
	cr_assert_not(mime_header_name_ok("Caf\xc3\xa9"));
	cr_assert(mime_header_value_ok("fine value", 10));
	cr_assert_not(mime_header_value_ok("a\r\nBcc: x", 9));
	cr_assert_not(mime_header_value_ok("a\nb", 3));
	cr_assert_not(mime_header_value_ok("a\0b", 3));
	cr_assert(mime_header_reserved("from"));
	cr_assert(mime_header_reserved("MESSAGE-ID"));
	cr_assert(mime_header_reserved("Content-Transfer-Encoding"));
	cr_assert_not(mime_header_reserved("Reply-To"));
	cr_assert_not(mime_header_reserved("X-From"));
}

/* ---- mime_build --------------------------------------------------------- */

struct part {
	char *head; /* header section, unfolded, CRLF lines */
	char *body; /* up to (not including) the CRLF before the next boundary */
};

/* header_get - the value of name in an unfolded header section (static). */
static const char *header_get(const char *head, const char *name)
{
	static char val[2048];
	size_t nl = strlen(name);
	for (const char *l = head; l && *l;) {
		const char *e = strstr(l, "\r\n");
		if (!e)
			break;
		if (!strncasecmp(l, name, nl) && l[nl] == ':') {
			const char *v = l + nl + 1;
			while (*v == ' ')
				v++;
			snprintf(val, sizeof(val), "%.*s", (int)(e - v), v);
			return val;
		}
		l = e + 2;
	}
	return NULL;
}

/* split_entity - header and body of a MIME entity (the blank line between). */
static struct part split_entity(const char *p, size_t n)
{
	struct part pt;
	const char *sep = NULL;
	for (size_t i = 0; i + 3 < n; i++)
		if (!memcmp(p + i, "\r\n\r\n", 4)) {
			sep = p + i;
			break;
		}
	cr_assert_not_null(sep, "no blank line after the header section");
	struct buf u = { 0 };
	unfold(p, (size_t)(sep - p) + 2, &u);
	pt.head = strdup(str_of(&u));
	buf_free(&u);
	/* The built message is not NUL-terminated: copy exactly its bytes. */
	size_t bl = n - (size_t)(sep + 4 - p);
	pt.body = malloc(bl + 1);
	cr_assert_not_null(pt.body);
	memcpy(pt.body, sep + 4, bl);
	pt.body[bl] = '\0';
	return pt;
}

/* boundary_of - the boundary parameter of a multipart Content-Type. */
static char *boundary_of(const char *ctype)
{
	const char *b = strstr(ctype, "boundary=\"");
	cr_assert_not_null(b, "no boundary in '%s'", ctype);
	b += 10;
	const char *e = strchr(b, '"');
	cr_assert_not_null(e);
	return strndup(b, (size_t)(e - b));
}

/* split_multipart - the parts of a multipart body; checks the preamble is
 * empty and the close delimiter comes last (nothing but CRLF after it; not
 * even that when nested, since that CRLF belongs to the outer delimiter). */
static unsigned split_multipart(const char *body, const char *boundary, struct part *parts,
                                unsigned max)
{
	char delim[128];
	snprintf(delim, sizeof(delim), "--%s", boundary);
	size_t dl = strlen(delim);
	cr_assert(!strncmp(body, delim, dl) && !strncmp(body + dl, "\r\n", 2),
	          "the body does not start with the boundary: %.80s", body);
	unsigned n = 0;
	const char *p = body + dl + 2;
	for (;;) {
		char find[140];
		snprintf(find, sizeof(find), "\r\n%s", delim);
		const char *next = strstr(p, find);
		cr_assert_not_null(next, "part %u is not closed", n);
		cr_assert_lt(n, max);
		parts[n++] = split_entity(p, (size_t)(next - p));
		const char *after = next + 2 + dl;
		if (!strncmp(after, "--", 2)) {
			cr_assert(!strcmp(after + 2, "\r\n") || !after[2],
			          "data after the close delimiter: %.60s", after + 2);
			return n;
		}
		cr_assert(!strncmp(after, "\r\n", 2));
		p = after + 2;
	}
}

static void free_parts(struct part *p, unsigned n)
{
	for (unsigned i = 0; i < n; i++) {
		free(p[i].head);
		free(p[i].body);
	}
}

/* decoded_body - a part's body decoded per its Content-Transfer-Encoding. */
static char *decoded_body(const struct part *p, size_t *len)
{
	const char *cte = header_get(p->head, "Content-Transfer-Encoding");
	cr_assert_not_null(cte, "a part without Content-Transfer-Encoding");
	struct buf d = { 0 };
	if (!strcmp(cte, "base64"))
		cr_assert(base64_decode(p->body, strlen(p->body), &d));
	else if (!strcmp(cte, "quoted-printable"))
		qp_decode(p->body, strlen(p->body), &d);
	else {
		cr_assert_str_eq(cte, "7bit");
		buf_puts(&d, p->body);
	}
	*len = buf_used(&d);
	char *out = malloc(*len + 1);
	memcpy(out, buf_head(&d), *len);
	out[*len] = '\0';
	buf_free(&d);
	return out;
}

static struct buf build(const struct mime_message *m)
{
	struct buf out = { 0 };
	char err[200] = "";
	cr_assert(mime_build(m, &out, err, sizeof(err)), "mime_build: %s", err);
	size_t longest = max_line(buf_head(&out), buf_used(&out), true);
	cr_assert_leq(longest, 998, "a line of %zu characters", longest);
	for (size_t i = 0; i < buf_used(&out); i++)
		cr_assert_neq(buf_head(&out)[i], '\0', "NUL at %zu", i);
	return out;
}

static struct mime_message base_message(void)
{
	return (struct mime_message){
		.from = "Sender <sender@example.test>",
		.to = "rcpt@example.test",
		.subject = "Subject line",
		.message_id = "0123456789abcdef@mta.test",
		.date_ms = 1700000000000ull,
	};
}

static void check_top_headers(const struct part *top)
{
	cr_assert_str_eq(header_get(top->head, "From"), "Sender <sender@example.test>");
	cr_assert_str_eq(header_get(top->head, "To"), "rcpt@example.test");
	cr_assert_str_eq(header_get(top->head, "Subject"), "Subject line");
	cr_assert_str_eq(header_get(top->head, "Message-ID"), "<0123456789abcdef@mta.test>");
	cr_assert_str_eq(header_get(top->head, "Date"), "Tue, 14 Nov 2023 22:13:20 +0000");
	cr_assert_str_eq(header_get(top->head, "MIME-Version"), "1.0");
}

Test(mime, build_text_only)
{
	struct mime_message m = base_message();
	m.text = "Hello.\nSecond line.\n";
	m.text_len = strlen(m.text);
	struct buf out = build(&m);
	struct part top = split_entity(buf_head(&out), buf_used(&out));
	check_top_headers(&top);
	cr_assert_str_eq(header_get(top.head, "Content-Type"), "text/plain; charset=utf-8");
	cr_assert_str_eq(header_get(top.head, "Content-Transfer-Encoding"), "7bit");
	cr_assert_str_eq(top.body, "Hello.\r\nSecond line.\r\n");
	free_parts(&top, 1);
	buf_free(&out);
}

Test(mime, build_text_8bit_is_quoted_printable)
{
	struct mime_message m = base_message();
	m.text = "Gr\xc3\xbc\xc3\x9f"
	         "e aus K\xc3\xb6ln\nzweite Zeile";
	m.text_len = strlen(m.text);
	m.subject = "Gr\xc3\xbc\xc3\x9f"
	            "e";
	struct buf out = build(&m);
	struct part top = split_entity(buf_head(&out), buf_used(&out));
	cr_assert_str_eq(header_get(top.head, "Content-Transfer-Encoding"), "quoted-printable");
	cr_assert_str_eq(header_get(top.head, "Subject"), "=?UTF-8?B?R3LDvMOfZQ==?=");
	size_t len;
	char *text = decoded_body(&top, &len);
	cr_assert_str_eq(text, "Gr\xc3\xbc\xc3\x9f"
	                       "e aus K\xc3\xb6ln\r\nzweite Zeile\r\n");
	free(text);
	free_parts(&top, 1);
	buf_free(&out);
}

Test(mime, build_html_only)
{
	struct mime_message m = base_message();
	m.html = "<p>Hi</p>";
	m.html_len = strlen(m.html);
	struct buf out = build(&m);
	struct part top = split_entity(buf_head(&out), buf_used(&out));
	cr_assert_str_eq(header_get(top.head, "Content-Type"), "text/html; charset=utf-8");
	cr_assert_str_eq(top.body, "<p>Hi</p>\r\n");
	free_parts(&top, 1);
	buf_free(&out);
}

Test(mime, build_text_and_html)
{
	struct mime_message m = base_message();
	m.text = "plain \xe2\x82\xac";
	m.text_len = strlen(m.text);
	m.html = "<b>bold</b>";
	m.html_len = strlen(m.html);
	struct buf out = build(&m);
	struct part top = split_entity(buf_head(&out), buf_used(&out));
	check_top_headers(&top);
	const char *ct = header_get(top.head, "Content-Type");
	cr_assert(!strncmp(ct, "multipart/alternative;", 22), "got %s", ct);
	char *b = boundary_of(ct);
	struct part parts[4];
	unsigned n = split_multipart(top.body, b, parts, 4);
	cr_assert_eq(n, 2);
	cr_assert_str_eq(header_get(parts[0].head, "Content-Type"), "text/plain; charset=utf-8");
	cr_assert_str_eq(header_get(parts[1].head, "Content-Type"), "text/html; charset=utf-8");
	size_t len;
	char *t = decoded_body(&parts[0], &len);
	/* The CRLF before a delimiter is the delimiter's: the text is exact. */
	cr_assert_str_eq(t, "plain \xe2\x82\xac");
	free(t);
	t = decoded_body(&parts[1], &len);
	cr_assert_str_eq(t, "<b>bold</b>");
	free(t);
	free_parts(parts, n);
	free(b);
	free_parts(&top, 1);
	buf_free(&out);
}

Test(mime, build_no_body_is_empty_text)
{
	struct mime_message m = base_message();
	struct buf out = build(&m);
	struct part top = split_entity(buf_head(&out), buf_used(&out));
	cr_assert_str_eq(header_get(top.head, "Content-Type"), "text/plain; charset=utf-8");
	free_parts(&top, 1);
	buf_free(&out);
}

Test(mime, build_attachments)
{
	unsigned char bin[3000];
	rnd_bytes(bin, sizeof(bin));
	struct mime_attachment att[] = {
		{ "report.pdf", "application/pdf", bin, sizeof(bin) },
		{ "r\xc3\xa9sum\xc3\xa9 \"final\".txt", "text/plain", (const unsigned char *)"cv",
		  2 },
		{ NULL, NULL, (const unsigned char *)"", 0 },
	};
	struct mime_message m = base_message();
	m.text = "see attached";
	m.text_len = strlen(m.text);
	m.html = "<p>see attached</p>";
	m.html_len = strlen(m.html);
	m.attachments = att;
	m.nattachments = 3;
	struct buf out = build(&m);
	struct part top = split_entity(buf_head(&out), buf_used(&out));
	check_top_headers(&top);
	const char *ct = header_get(top.head, "Content-Type");
	cr_assert(!strncmp(ct, "multipart/mixed;", 16), "got %s", ct);
	char *b = boundary_of(ct);
	struct part parts[8];
	unsigned n = split_multipart(top.body, b, parts, 8);
	cr_assert_eq(n, 4, "body + 3 attachments, got %u parts", n);
	/* The body: an alternative with its own boundary. */
	const char *bct = header_get(parts[0].head, "Content-Type");
	cr_assert(!strncmp(bct, "multipart/alternative;", 22), "got %s", bct);
	char *ib = boundary_of(bct);
	cr_assert_str_neq(ib, b, "nested parts need distinct boundaries");
	struct part alt[4];
	unsigned na = split_multipart(parts[0].body, ib, alt, 4);
	cr_assert_eq(na, 2);
	free_parts(alt, na);
	free(ib);
	/* Attachment 0: bytes come back exactly. */
	cr_assert_str_eq(header_get(parts[1].head, "Content-Type"),
	                 "application/pdf; name=\"report.pdf\"");
	cr_assert_str_eq(header_get(parts[1].head, "Content-Disposition"),
	                 "attachment; filename=\"report.pdf\"");
	size_t len;
	char *d = decoded_body(&parts[1], &len);
	cr_assert_eq(len, sizeof(bin));
	cr_assert(!memcmp(d, bin, len));
	free(d);
	/* Attachment 1: a non-ASCII name (and quotes) per RFC 2231. */
	cr_assert_str_eq(header_get(parts[2].head, "Content-Disposition"),
	                 "attachment; filename*=UTF-8''r%C3%A9sum%C3%A9%20%22final%22.txt");
	d = decoded_body(&parts[2], &len);
	cr_assert_eq(len, 2);
	cr_assert(!memcmp(d, "cv", 2));
	free(d);
	/* Attachment 2: defaults. */
	cr_assert_str_eq(header_get(parts[3].head, "Content-Type"),
	                 "application/octet-stream; name=\"attachment\"");
	d = decoded_body(&parts[3], &len);
	cr_assert_eq(len, 0);
	free(d);
	free_parts(parts, n);
	free(b);
	free_parts(&top, 1);
	buf_free(&out);
}

Test(mime, build_attachment_with_text_only)
{
	struct mime_attachment att = { "a.bin", NULL, (const unsigned char *)"\x00\x01\x02", 3 };
	struct mime_message m = base_message();
	m.text = "t";
	m.text_len = 1;
	m.attachments = &att;
	m.nattachments = 1;
	struct buf out = build(&m);
	struct part top = split_entity(buf_head(&out), buf_used(&out));
	char *b = boundary_of(header_get(top.head, "Content-Type"));
	struct part parts[4];
	unsigned n = split_multipart(top.body, b, parts, 4);
	cr_assert_eq(n, 2);
	cr_assert_str_eq(header_get(parts[0].head, "Content-Type"), "text/plain; charset=utf-8");
	size_t len;
	char *d = decoded_body(&parts[1], &len);
	cr_assert_eq(len, 3);
	cr_assert(!memcmp(d, "\x00\x01\x02", 3));
	free(d);
	free_parts(parts, n);
	free(b);
	free_parts(&top, 1);
	buf_free(&out);
}

Test(mime, build_body_cannot_fake_a_boundary)
{
	/* Text that contains a boundary ringpost made (the last message's,
	 * the best an attacker can know): the structure must not change, and
	 * the new message's boundary is a new one. */
	struct mime_message m = base_message();
	struct buf probe = { 0 };
	m.text = "x";
	m.text_len = 1;
	m.html = "y";
	m.html_len = 1;
	char err[100];
	cr_assert(mime_build(&m, &probe, err, sizeof(err)));
	struct part top = split_entity(buf_head(&probe), buf_used(&probe));
	char *b = boundary_of(header_get(top.head, "Content-Type"));
	free_parts(&top, 1);
	buf_free(&probe);
	char text[256];
	snprintf(text, sizeof(text),
	         "before\r\n--%s\r\nContent-Type: text/html\r\n\r\nevil\r\n--%s--\r\n", b, b);
	m.text = text;
	m.text_len = strlen(text);
	struct buf out = build(&m);
	top = split_entity(buf_head(&out), buf_used(&out));
	char *nb = boundary_of(header_get(top.head, "Content-Type"));
	cr_assert_str_neq(nb, b, "the boundary %s came again", b);
	struct part parts[6];
	unsigned n = split_multipart(top.body, nb, parts, 6);
	free(nb);
	cr_assert_eq(n, 2, "the text made %u parts", n);
	size_t len;
	char *t = decoded_body(&parts[0], &len);
	cr_assert_str_eq(t, text);
	free(t);
	free_parts(parts, n);
	free(b);
	free_parts(&top, 1);
	buf_free(&out);
}

Test(mime, build_extra_headers_and_long_lines)
{
	struct mime_header hv[] = {
		{ "X-Campaign", "spring \xe2\x9c\xbf sale" },
		{ "Reply-To", "help@example.test" },
	};
	struct mime_message m = base_message();
	char text[5000];
	memset(text, 'q', sizeof(text) - 1);
	text[sizeof(text) - 1] = '\0';
	m.text = text;
	m.text_len = strlen(text);
	m.headers = hv;
	m.nheaders = 2;
	struct buf out = build(&m); /* checks lines <= 998 */
	struct part top = split_entity(buf_head(&out), buf_used(&out));
	cr_assert_str_eq(header_get(top.head, "Reply-To"), "help@example.test");
	struct buf d = { 0 };
	unsigned nw;
	rfc2047_decode(header_get(top.head, "X-Campaign"), &d, &nw);
	cr_assert_str_eq(str_of(&d), "spring \xe2\x9c\xbf sale");
	buf_free(&d);
	/* A 5000-character line cannot be 7bit. */
	cr_assert_str_eq(header_get(top.head, "Content-Transfer-Encoding"), "quoted-printable");
	size_t len;
	char *t = decoded_body(&top, &len);
	cr_assert_eq(len, 5001);
	free(t);
	free_parts(&top, 1);
	buf_free(&out);
}

Test(mime, build_refuses_bad_content_type)
{
	static const char *const bad[] = { "text",         "/plain",
		                           "text/",        "text/plain; charset=x",
		                           "te xt/plain",  "text/pl\"ain",
		                           "a/b\r\nBcc: x" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct mime_attachment att = { "a", bad[i], (const unsigned char *)"x", 1 };
		struct mime_message m = base_message();
		m.attachments = &att;
		m.nattachments = 1;
		struct buf out = { 0 };
		char err[200] = "";
		cr_assert_not(mime_build(&m, &out, err, sizeof(err)), "case %zu accepted", i);
		cr_assert_not_null(strstr(err, "attachments[0].content_type"), "case %zu: '%s'", i,
		                   err);
		buf_free(&out);
	}
}

/* ---- hostile input -------------------------------------------------------- */

/* Boundaries come from the CSPRNG: the same input twice gives different
 * boundaries, none holds the message id, and each is long enough. */
Test(mime, boundaries_are_random)
{
	char *seen[8];
	for (int k = 0; k < 8; k++) {
		struct mime_message m = base_message();
		m.text = "t";
		m.text_len = 1;
		m.html = "h";
		m.html_len = 1;
		struct buf out = build(&m);
		struct part top = split_entity(buf_head(&out), buf_used(&out));
		seen[k] = boundary_of(header_get(top.head, "Content-Type"));
		cr_assert_geq(strlen(seen[k]), 24, "short boundary %s", seen[k]);
		cr_assert_null(strstr(seen[k], "0123456789abcdef"), "%s", seen[k]);
		cr_assert_eq(strncmp(seen[k], "=_", 2), 0, "%s", seen[k]);
		for (int j = 0; j < k; j++)
			cr_assert_str_neq(seen[j], seen[k], "boundary %s repeated", seen[k]);
		free_parts(&top, 1);
		buf_free(&out);
	}
	for (int k = 0; k < 8; k++)
		free(seen[k]);
}

/* CR, LF or NUL in any header value is refused by mime_build itself,
 * whatever the caller checked. */
Test(mime, build_refuses_line_breaks_in_headers)
{
	static const char *const bad[] = { "hi\r\nBcc: victim@evil.test", "hi\nX: y", "hi\rX: y" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char err[200] = "";
		struct buf out = { 0 };
		struct mime_message m = base_message();
		m.subject = bad[i];
		cr_assert_not(mime_build(&m, &out, err, sizeof(err)), "subject %zu", i);
		cr_assert_not_null(strstr(err, "subject"), "%s", err);
		m = base_message();
		m.to = bad[i];
		cr_assert_not(mime_build(&m, &out, err, sizeof(err)), "to %zu", i);
		m = base_message();
		char from[80];
		snprintf(from, sizeof(from), "%s <a@x.test>", bad[i]);
		m.from = from;
		cr_assert_not(mime_build(&m, &out, err, sizeof(err)), "from %zu", i);
		cr_assert_not_null(strstr(err, "from"), "%s", err);
		m = base_message();
		struct mime_header h = { .name = "X-Campaign", .value = bad[i] };
		m.headers = &h;
		m.nheaders = 1;
		cr_assert_not(mime_build(&m, &out, err, sizeof(err)), "headers %zu", i);
		cr_assert_not_null(strstr(err, "X-Campaign"), "%s", err);
		buf_free(&out);
	}
}

Test(mime, mailbox_split)
{
	static const struct {
		const char *in, *name, *addr;
		bool ok;
	} cases[] = {
		{ "a@x.test", "", "a@x.test", true },
		{ "  Ann <a@x.test>  ", "Ann", "a@x.test", true },
		{ "\"Doe, Ann\" <a@x.test>", "\"Doe, Ann\"", "a@x.test", true },
		{ "\"Help <a@x>\" <b@y.test>", "\"Help <a@x>\"", "b@y.test", true },
		{ "\"q\\\"uote\" <b@y.test>", "\"q\\\"uote\"", "b@y.test", true },
		{ "<b@y.test>", "", "b@y.test", true },
		/* A second angle-addr is part of the address (addr_check refuses it). */
		{ "Help <a@x> <b@y.test>", "Help", "a@x> <b@y.test", true },
		{ "\"Help <a@x> <b@y.test>", NULL, NULL, false },
		{ "He\"lp <b@y.test>", NULL, NULL, false },
		{ "Help> <b@y.test>", NULL, NULL, false },
		{ "Evil\r\nBcc: v@x <b@y.test>", NULL, NULL, false },
		{ "Evil\x01 <b@y.test>", NULL, NULL, false },
		{ "Name <a@x.test", "", "Name <a@x.test", true },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const char *name, *addr;
		size_t nl, al;
		const char *why =
		    mime_mailbox_split(cases[i].in, strlen(cases[i].in), &name, &nl, &addr, &al);
		cr_assert_eq(!why, cases[i].ok, "case %zu: %s", i, why ? why : "ok");
		if (!cases[i].ok)
			continue;
		cr_assert_eq(nl, strlen(cases[i].name), "case %zu: name '%.*s'", i, (int)nl, name);
		cr_assert(!memcmp(name, cases[i].name, nl), "case %zu", i);
		cr_assert_eq(al, strlen(cases[i].addr), "case %zu: addr '%.*s'", i, (int)al, addr);
		cr_assert(!memcmp(addr, cases[i].addr, al), "case %zu", i);
	}
}

/* Display names go out as RFC 5322 phrases: atoms plain, anything else
 * one quoted string (so ", <, >, @ cannot make a second mailbox), non-ASCII
 * as encoded words. */
Test(mime, from_display_name_is_a_phrase)
{
	static const struct {
		const char *in, *out;
	} cases[] = {
		{ "Sender <s@x.test>", "Sender <s@x.test>" },
		{ "\"Sender\" <s@x.test>", "Sender <s@x.test>" },
		{ "a@evil.test, Name <s@x.test>", "\"a@evil.test, Name\" <s@x.test>" },
		{ "\"Help <a@x.test>\" <s@x.test>", "\"Help <a@x.test>\" <s@x.test>" },
		{ "\"q\\\"uote\\\\\" <s@x.test>", "\"q\\\"uote\\\\\" <s@x.test>" },
		{ "Dr. Who <s@x.test>", "\"Dr. Who\" <s@x.test>" },
		{ "=?utf-8?q?x?= <s@x.test>", "\"=?utf-8?q?x?=\" <s@x.test>" },
		{ "s@x.test", "s@x.test" },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct mime_message m = base_message();
		m.from = cases[i].in;
		struct buf out = build(&m);
		struct part top = split_entity(buf_head(&out), buf_used(&out));
		cr_assert_str_eq(header_get(top.head, "From"), cases[i].out, "case %zu", i);
		free_parts(&top, 1);
		buf_free(&out);
	}
	/* Non-ASCII: encoded words, the address plain after them. */
	struct mime_message m = base_message();
	m.from = "\"M\xc3\xbcller, J\xc3\xb6rg\" <j@x.test>";
	struct buf out = build(&m);
	struct part top = split_entity(buf_head(&out), buf_used(&out));
	const char *f = header_get(top.head, "From");
	cr_assert(!strncmp(f, "=?UTF-8?B?", 10), "%s", f);
	cr_assert_not_null(strstr(f, "?= <j@x.test>"), "%s", f);
	cr_assert_null(strchr(f, ','), "a comma outside the encoded word: %s", f);
	free_parts(&top, 1);
	buf_free(&out);
}

/* Bodies: every lone CR and bare LF goes out as CRLF, 7bit or QP; the
 * smuggling payloads "\r.\r" and "\n.\n" become lines holding a dot. */
Test(mime, bodies_have_only_crlf)
{
	static const char *const texts[] = { "a\r.\rb", "a\n.\nb", "x\r\n.\r\ny",
		                             "caf\xc3\xa9\r.\r", "sp \rx" };
	for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
		struct mime_message m = base_message();
		m.text = texts[i];
		m.text_len = strlen(texts[i]);
		m.html = texts[i];
		m.html_len = strlen(texts[i]);
		struct buf out = build(&m); /* max_line fails on a bare CR or LF */
		struct part top = split_entity(buf_head(&out), buf_used(&out));
		char *b = boundary_of(header_get(top.head, "Content-Type"));
		struct part parts[4];
		unsigned n = split_multipart(top.body, b, parts, 4);
		cr_assert_eq(n, 2);
		size_t len;
		char *t = decoded_body(&parts[0], &len);
		struct buf want = { 0 };
		crlf_normalize(texts[i], strlen(texts[i]), &want);
		cr_assert_str_eq(t, str_of(&want), "case %zu", i);
		free(t);
		buf_free(&want);
		free_parts(parts, n);
		free(b);
		free_parts(&top, 1);
		buf_free(&out);
	}
}
