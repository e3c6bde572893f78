/* test_dkim.c - DKIM signing (base/dkim.c, base/dkim_canon.c).
 *
 * Canonicalisation against RFC 6376's own examples, the errata cases and a
 * line-based reference on random bodies; the RFC 8463 Ed25519 example
 * reproduced byte for byte; keys of every kind made at run time with the
 * openssl command line; and signatures checked by an independent verifier,
 * Debian's dkimpy (python3-dkim, run as tests/unit/dkim_verify.py), which
 * gets the public key derived by python3-cryptography, not by our code.
 * Also: tampering fails, concurrent signing with one key gives the same
 * bytes as one thread, and signatures per second are printed.
 */
#include <criterion/criterion.h>
#include <libgen.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/base64.h"
#include "base/buf.h"
#include "base/dkim.h"
#include "base/util.h"
#include "tests/unit/support.h"

#define PYTHON "/usr/bin/python3"

static char tmpdir[64];

static void setup(void)
{
	test_tmpdir(tmpdir, sizeof(tmpdir), "dkim");
}

static void teardown(void)
{
	test_rmdir(tmpdir);
}

TestSuite(dkim_canon);
TestSuite(dkim_key, .init = setup, .fini = teardown, .timeout = 60);
TestSuite(dkim_sign, .init = setup, .fini = teardown, .timeout = 120);

/* ---- helpers ------------------------------------------------------------ */

static void write_file(const char *path, const void *p, size_t n)
{
	FILE *f = fopen(path, "wb");
	cr_assert_not_null(f, "cannot write %s", path);
	cr_assert_eq(fwrite(p, 1, n, f), n);
	cr_assert_eq(fclose(f), 0);
}

/* keys_make - run sh commands in tmpdir (openssl key generation). */
static void keys_make(const char *script)
{
	char path[PATH_MAX], cmd[2 * PATH_MAX];
	snprintf(path, sizeof(path), "%s/keys.sh", tmpdir);
	write_file(path, script, strlen(script));
	snprintf(cmd, sizeof(cmd), "cd '%s' && sh -e keys.sh >openssl.log 2>&1", tmpdir);
	int rc = system(cmd);
	cr_assert_eq(rc, 0, "openssl failed (%d): see %s/openssl.log", rc, tmpdir);
}

static const char gen_rsa1024[] =
    "openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:1024 -out rsa1024.pem\n";
static const char gen_rsa2048[] =
    "openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out rsa2048.pem\n";
static const char gen_ed25519[] = "openssl genpkey -algorithm ED25519 -out ed25519.pem\n";

static struct dkim_key *load(const char *name)
{
	char path[PATH_MAX], err[512] = "";
	snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
	struct dkim_key *k = dkim_key_load(path, err, sizeof(err));
	cr_assert_not_null(k, "dkim_key_load %s: %s", name, err);
	return k;
}

static void b64(const unsigned char *p, size_t n, char *out, size_t outlen)
{
	struct buf b = { 0 };
	base64_encode(&b, p, n, false);
	snprintf(out, outlen, "%s", buf_cstr(&b));
	buf_free(&b);
}

/* ---- canonicalisation --------------------------------------------------- */

struct canon_case {
	const char *in, *want;
};

static const struct canon_case header_cases[] = {
	/* RFC 6376 3.4.5 */
	{ "A: X\r\n", "a:X\r\n" },
	{ "B : Y\t\r\n\tZ  \r\n", "b:Y Z\r\n" },
	/* 3.4.2's example, and the rest of the rules one by one */
	{ "SUBJect: AbC\r\n", "subject:AbC\r\n" },
	{ "Subject:\r\n", "subject:\r\n" },
	{ "Subject: \t \r\n", "subject:\r\n" },
	{ "Subject:x\r\n", "subject:x\r\n" },
	{ "Subject: a\r\n\t \tb\r\n  c\t\r\n", "subject:a b c\r\n" },
	{ "Subject: a  \t b", "subject:a b\r\n" },
	{ "To: a,\r\n b,\r\n\tc\r\n", "to:a, b, c\r\n" },
	{ "X-A\t: v\r\n", "x-a:v\r\n" },
	{ "Subject: \r\n =?UTF-8?B?w6k=?=\r\n", "subject:=?UTF-8?B?w6k=?=\r\n" },
	{ "Subject: caf\xc3\xa9  au  lait\r\n", "subject:caf\xc3\xa9 au lait\r\n" },
	/* colons in the value stay; a bare LF or CR is not a fold */
	{ "Date: Fri, 27 Nov 2026 03:19:25 +0000\r\n", "date:Fri, 27 Nov 2026 03:19:25 +0000\r\n" },
	{ "X: a\nb\rc\r\n", "x:a\nb\rc\r\n" },
};

Test(dkim_canon, header_table)
{
	for (size_t i = 0; i < RP_ARRAY_LEN(header_cases); i++) {
		struct buf out = { 0 };
		dkim_canon_header(header_cases[i].in, strlen(header_cases[i].in), &out);
		cr_assert_str_eq(buf_cstr(&out), header_cases[i].want, "case %zu", i);
		buf_free(&out);
	}
}

static const struct canon_case body_cases[] = {
	/* RFC 6376 3.4.5 */
	{ " C \r\nD \t E\r\n\r\n\r\n", " C\r\nD E\r\n" },
	/* an empty body is empty for relaxed (the lone CRLF is simple's) */
	{ "", "" },
	{ "\r\n", "" },
	{ "\r\n\r\n\r\n", "" },
	{ " \t\r\n  \r\n", "" },
	/* errata 1384 and 1942: whitespace first, then trailing empty lines */
	{ "testing\r\n  \r\n\r\n", "testing\r\n" },
	{ "\r\n\r\n  \r\n", "" },
	/* inner empty and blank lines stay (blank ones become empty) */
	{ "a\r\n\r\n \r\nb\r\n\r\n", "a\r\n\r\n\r\nb\r\n" },
	{ "  lead\r\n", " lead\r\n" },
	{ "a\t\tb  c \t\r\n", "a b c\r\n" },
	/* an unterminated last line gets its CRLF (and loses its trailing WSP) */
	{ "abc", "abc\r\n" },
	{ "abc \t", "abc\r\n" },
	{ "abc\r\n  ", "abc\r\n" },
	{ "a\r\n\r\nb", "a\r\n\r\nb\r\n" },
	/* bare CR and LF are content */
	{ "a\rb\r\n", "a\rb\r\n" },
	{ "a\nb \n\r\n", "a\nb \n\r\n" },
	{ "a\r\r\n", "a\r\r\n" },
	{ "\xc3\xa9t\xc3\xa9  \xe2\x80\x94\r\n", "\xc3\xa9t\xc3\xa9 \xe2\x80\x94\r\n" },
};

Test(dkim_canon, body_table)
{
	for (size_t i = 0; i < RP_ARRAY_LEN(body_cases); i++) {
		struct buf out = { 0 };
		dkim_canon_body(body_cases[i].in, strlen(body_cases[i].in), &out);
		cr_assert_eq(buf_used(&out), strlen(body_cases[i].want), "case %zu: length %zu", i,
		             buf_used(&out));
		cr_assert_eq(memcmp(buf_cstr(&out), body_cases[i].want, buf_used(&out)), 0,
		             "case %zu: %s", i, buf_cstr(&out));
		buf_free(&out);
	}
}

/* ref_canon_body - RFC 6376 3.4.4 read line by line, as a check on the
 * state machine: split at CRLF, reduce each line, drop trailing empties. */
static void ref_canon_body(const char *p, size_t n, struct buf *out)
{
	struct buf lines = { 0 };
	size_t keep = 0, i = 0;
	while (i < n) {
		size_t e = i;
		while (e < n && !(p[e] == '\r' && e + 1 < n && p[e + 1] == '\n'))
			e++;
		struct buf l = { 0 };
		for (size_t j = i; j < e; j++) {
			bool w = p[j] == ' ' || p[j] == '\t';
			if (!w)
				buf_append(&l, p + j, 1);
			else if (j == i || !(p[j - 1] == ' ' || p[j - 1] == '\t'))
				buf_append(&l, " ", 1);
		}
		while (buf_used(&l) && buf_head(&l)[buf_used(&l) - 1] == ' ')
			l.len--;
		buf_append(&lines, buf_head(&l), buf_used(&l));
		buf_append(&lines, "\r\n", 2);
		if (buf_used(&l))
			keep = buf_used(&lines);
		buf_free(&l);
		i = e + 2;
	}
	buf_append(out, buf_head(&lines), keep);
	buf_free(&lines);
}

Test(dkim_canon, random_bodies_match_reference)
{
	static const char alphabet[] = "ab  \t\r\n\r\n";
	unsigned seed = 12345;
	for (int round = 0; round < 20000; round++) {
		char body[64];
		size_t n = (size_t)(rand_r(&seed) % (int)sizeof(body));
		for (size_t i = 0; i < n; i++)
			body[i] = alphabet[rand_r(&seed) % (int)(sizeof(alphabet) - 1)];
		struct buf got = { 0 }, want = { 0 };
		dkim_canon_body(body, n, &got);
		ref_canon_body(body, n, &want);
		cr_assert_eq(buf_used(&got), buf_used(&want), "round %d: length", round);
		cr_assert_eq(memcmp(buf_cstr(&got), buf_cstr(&want), buf_used(&got)), 0, "round %d",
		             round);
		buf_free(&got);
		buf_free(&want);
	}
}

/* The hash streams through a 4 KiB batch: bodies around and across that
 * size hash the same as their canonical form. */
Test(dkim_canon, body_hash_is_sha256_of_canonical_form)
{
	size_t sizes[] = { 0, 1, 4095, 4096, 4097, 8191, 100000 };
	unsigned seed = 7;
	for (size_t s = 0; s < RP_ARRAY_LEN(sizes); s++) {
		char *body = xmalloc(sizes[s] + 1);
		for (size_t i = 0; i < sizes[s]; i++)
			body[i] = "xy \t\r\n"[rand_r(&seed) % 6];
		struct buf canon = { 0 };
		dkim_canon_body(body, sizes[s], &canon);
		unsigned char got[DKIM_HASH_LEN], want[DKIM_HASH_LEN];
		dkim_body_hash(body, sizes[s], got);
		cr_assert_eq(
		    EVP_Digest(buf_head(&canon), buf_used(&canon), want, NULL, EVP_sha256(), NULL),
		    1);
		cr_assert_eq(memcmp(got, want, sizeof(got)), 0, "size %zu", sizes[s]);
		buf_free(&canon);
		free(body);
	}
}

/* The relaxed body hash of RFC 6376's example message, as RFC 8463 A.3
 * gives it, and the hash of the empty body. */
Test(dkim_canon, body_hash_vectors)
{
	static const char body[] =
	    "Hi.\r\n\r\nWe lost the game.  Are you hungry yet?\r\n\r\nJoe.\r\n";
	unsigned char h[DKIM_HASH_LEN];
	char s[64];
	dkim_body_hash(body, strlen(body), h);
	b64(h, sizeof(h), s, sizeof(s));
	cr_assert_str_eq(s, "2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=");
	dkim_body_hash("\r\n\r\n", 4, h);
	b64(h, sizeof(h), s, sizeof(s));
	cr_assert_str_eq(s, "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=");
}

/* ---- keys --------------------------------------------------------------- */

Test(dkim_key, kinds_and_sizes)
{
	keys_make("openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:1024 -out rsa1024.pem\n"
	          "openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:1536 -out rsa1536.pem\n"
	          "openssl pkey -in rsa1024.pem -traditional -out rsa1024-trad.pem\n"
	          "grep -q 'BEGIN RSA PRIVATE KEY' rsa1024-trad.pem\n"
	          "openssl genpkey -algorithm ED25519 -out ed25519.pem\n");
	struct {
		const char *file;
		enum dkim_alg alg;
		unsigned bits;
		const char *record;
	} cases[] = {
		{ "rsa1024.pem", DKIM_RSA_SHA256, 1024,
		  "v=DKIM1; k=rsa; p=MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQ" },
		{ "rsa1024-trad.pem", DKIM_RSA_SHA256, 1024, "v=DKIM1; k=rsa; p=MIGf" },
		{ "rsa1536.pem", DKIM_RSA_SHA256, 1536, "v=DKIM1; k=rsa; p=MIHf" },
		{ "ed25519.pem", DKIM_ED25519_SHA256, 256, "v=DKIM1; k=ed25519; p=" },
	};
	for (size_t i = 0; i < RP_ARRAY_LEN(cases); i++) {
		struct dkim_key *k = load(cases[i].file);
		cr_assert_eq(dkim_key_alg(k), cases[i].alg, "%s", cases[i].file);
		cr_assert_eq(dkim_key_bits(k), cases[i].bits, "%s: %u bits", cases[i].file,
		             dkim_key_bits(k));
		const char *rec = dkim_key_record(k);
		cr_assert(!strncmp(rec, cases[i].record, strlen(cases[i].record)), "%s: %s",
		          cases[i].file, rec);
		if (cases[i].alg == DKIM_ED25519_SHA256)
			cr_assert_eq(strlen(rec), strlen("v=DKIM1; k=ed25519; p=") + 44, "%s", rec);
		/* references: the key lives until the last one goes */
		cr_assert_eq(dkim_key_ref(k), k);
		dkim_key_free(k);
		cr_assert_str_eq(dkim_key_record(k), rec);
		dkim_key_free(k);
	}
	dkim_key_free(NULL);
	cr_assert_str_eq(dkim_alg_name(DKIM_RSA_SHA256), "rsa-sha256");
	cr_assert_str_eq(dkim_alg_name(DKIM_ED25519_SHA256), "ed25519-sha256");
}

Test(dkim_key, bad_keys_say_why)
{
	keys_make("openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out ec.pem\n"
	          "openssl genpkey -algorithm ED448 -out ed448.pem\n"
	          "openssl genpkey -algorithm RSA-PSS -pkeyopt rsa_keygen_bits:1024 -out pss.pem\n"
	          "openssl genpkey -algorithm ED25519 -aes-128-cbc -pass pass:secret -out enc.pem\n"
	          "openssl genpkey -algorithm ED25519 -out ed.pem\n"
	          "openssl pkey -in ed.pem -pubout -out pub.pem\n"
	          "printf 'this is not a key\\n' > garbage.pem\n"
	          ": > empty.pem\n"
	          "sed 's/^M/N/' ed.pem > damaged.pem\n");
	struct {
		const char *file, *why;
	} cases[] = {
		{ "missing.pem", "No such file or directory" },
		{ tmpdir, "Is a directory" },
		{ "garbage.pem", "no PEM private key in the file" },
		{ "empty.pem", "the file is empty" },
		{ "damaged.pem", "cannot decode the PEM private key (OpenSSL: " },
		{ "pub.pem", "no PEM private key in the file" },
		{ "ec.pem", "an EC key: ECDSA is not a DKIM algorithm (use RSA or Ed25519)" },
		{ "ed448.pem", "unsupported key type ED448: DKIM signs with RSA or Ed25519 only" },
		{ "pss.pem", "an RSA-PSS key" },
		{ "enc.pem", "the key is encrypted" },
	};
	for (size_t i = 0; i < RP_ARRAY_LEN(cases); i++) {
		char path[PATH_MAX], err[512] = "", want[PATH_MAX + 100];
		if (cases[i].file[0] == '/')
			snprintf(path, sizeof(path), "%s", cases[i].file);
		else
			snprintf(path, sizeof(path), "%s/%s", tmpdir, cases[i].file);
		cr_assert_null(dkim_key_load(path, err, sizeof(err)), "%s loaded", cases[i].file);
		snprintf(want, sizeof(want), "%s: %s", path, cases[i].why);
		cr_assert(!strncmp(err, want, strlen(want)), "%s: got \"%s\"", cases[i].file, err);
		cr_log_info("%s", err);
	}
}

/* RFC 8463 A.3: the example message signed with ed25519-sha256 and the
 * RFC 8032 7.1 key; Ed25519 is deterministic, so b= must come out exactly.
 * This pins the RFC 8463 rule: sign the SHA-256 of the canonical header
 * data with PureEdDSA, not the data itself. */
Test(dkim_key, rfc8463_ed25519_vector)
{
	static const char pem[] =
	    "-----BEGIN PRIVATE KEY-----\n"
	    "MC4CAQAwBQYDK2VwBCIEIJ1hsZ3v/VpguoRK9JLsLMREScVpezJpGXA7rAMcrn9g\n"
	    "-----END PRIVATE KEY-----\n";
	static const char *const fields[] = {
		"From: Joe SixPack <joe@football.example.com>\r\n",
		"To: Suzie Q <suzie@shopping.example.net>\r\n",
		"Subject: Is dinner ready?\r\n",
		"Date: Fri, 11 Jul 2003 21:00:37 -0700 (PDT)\r\n",
		"Message-ID: <20030712040037.46341.5F8J@football.example.com>\r\n",
		"DKIM-Signature: v=1; a=ed25519-sha256; c=relaxed/relaxed;\r\n"
		" d=football.example.com; i=@football.example.com;\r\n"
		" q=dns/txt; s=brisbane; t=1528637909; h=from : to :\r\n"
		" subject : date : message-id : from : subject : date;\r\n"
		" bh=2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=;\r\n"
		" b=",
	};
	char path[PATH_MAX], sig64[128];
	snprintf(path, sizeof(path), "%s/rfc8032.pem", tmpdir);
	write_file(path, pem, strlen(pem));
	struct dkim_key *k = load("rfc8032.pem");
	cr_assert_str_eq(dkim_key_record(k),
	                 "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=");
	struct buf canon = { 0 }, sig = { 0 };
	for (size_t i = 0; i < RP_ARRAY_LEN(fields); i++)
		dkim_canon_header(fields[i], strlen(fields[i]), &canon);
	canon.len -= 2; /* the signature field is hashed without its CRLF */
	char err[256] = "";
	cr_assert(dkim_sign_data(k, buf_head(&canon), buf_used(&canon), &sig, err, sizeof(err)),
	          "%s", err);
	cr_assert_eq(buf_used(&sig), 64);
	b64((unsigned char *)buf_head(&sig), buf_used(&sig), sig64, sizeof(sig64));
	cr_assert_str_eq(sig64, "/gCrinpcQOoIfuHNQIbq4pgh9kyIK3AQUdt9OdqQehSwhEIug4D11Bus"
	                        "Fa3bT3FY5OsU7ZbnKELq+eXdp1Q1Dw==");
	buf_free(&canon);
	buf_free(&sig);
	dkim_key_free(k);
}

/* ---- signing, checked by dkimpy ----------------------------------------- */

#define DOMAIN   "example.org"
#define SELECTOR "s2026"

/* Messages as they leave ringpost: CRLF lines. */
static const struct {
	const char *name, *text;
} corpus[] = {
	{ "text", "From: Alice Example <alice@example.org>\r\n"
	          "To: Bob <bob@example.net>\r\n"
	          "Subject: Quarterly report\r\n"
	          "Date: Fri, 27 Nov 2026 03:19:25 +0000\r\n"
	          "Message-ID: <1.abc@example.org>\r\n"
	          "X-Mailer: ringpost\r\n"
	          "MIME-Version: 1.0\r\n"
	          "Content-Type: text/plain; charset=us-ascii\r\n"
	          "\r\n"
	          "Hello Bob,\r\n\r\nThe numbers  are\tin.\r\n\r\n-- \r\nAlice\r\n" },
	{ "8bit",
	  "From: alice@example.org\r\n"
	  "To: bob@example.net\r\n"
	  "Subject: 8-bit body\r\n"
	  "MIME-Version: 1.0\r\n"
	  "Content-Type: text/plain; charset=utf-8\r\n"
	  "Content-Transfer-Encoding: 8bit\r\n"
	  "\r\n"
	  "Gr\xc3\xbc\xc3\x9f"
	  "e aus K\xc3\xb6ln \xe2\x80\x94 caf\xc3\xa9, \xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e\r\n"
	  "\xff\xfe raw bytes\x01\x7f\r\n" },
	{ "rfc2047", "From: =?UTF-8?Q?J=C3=BCrgen_M=C3=BCller?= <juergen@example.org>\r\n"
	             "To: =?ISO-8859-1?Q?Andr=E9?= <andre@example.net>\r\n"
	             "Subject: =?UTF-8?B?R3LDvMOfZSBhdXMgS8O2bG4=?=\r\n"
	             " =?UTF-8?B?IOKAlCBjYWbDqQ==?=\r\n"
	             "Date: Fri, 27 Nov 2026 03:19:25 +0000\r\n"
	             "\r\n"
	             "Body.\r\n" },
	{ "utf8_header", "From: J\xc3\xbcrgen <j\xc3\xbcrgen@example.org>\r\n"
	                 "To: bob@example.net\r\n"
	                 "Subject: caf\xc3\xa9  \xe2\x80\x94 na\xc3\xafve\r\n"
	                 "\r\n"
	                 "Body.\r\n" },
	{ "folded", "From: Alice\r\n\t<alice@example.org>\r\n"
	            "To: bob@example.net,\r\n  carol@example.net,\r\n\tdave@example.net\r\n"
	            "Subject: a subject that goes on\r\n\t and on \t\r\n   and on\r\n"
	            "References: <a@example.org>\r\n <b@example.org>\r\n <c@example.org>\r\n"
	            "List-Unsubscribe: <https://example.org/u/123>,\r\n"
	            " <mailto:unsub@example.org?subject=123>\r\n"
	            "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
	            "\r\n"
	            "Folded headers.\r\n" },
	{ "trailing", "From: alice@example.org\r\n"
	              "To: bob@example.net\r\n"
	              "Subject: trailing blank lines\r\n"
	              "\r\n"
	              "  indented   line \t \r\n"
	              "\r\n"
	              "last line  \r\n"
	              "\r\n"
	              " \t\r\n"
	              "\r\n"
	              "\r\n" },
	{ "multi_to", "From: alice@example.org\r\n"
	              "To: one@example.net\r\n"
	              "Cc: cc1@example.net\r\n"
	              "To: two@example.net\r\n"
	              "Subject: three To fields\r\n"
	              "Cc: cc2@example.net\r\n"
	              "To: three@example.net\r\n"
	              "\r\n"
	              "Hi all.\r\n" },
	{ "no_body", "From: alice@example.org\r\n"
	             "To: bob@example.net\r\n"
	             "Subject: nothing to say\r\n"
	             "\r\n" },
	{ "header_only", "From: alice@example.org\r\n"
	                 "To: bob@example.net\r\n"
	                 "Subject: not even a blank line\r\n" },
	{ "html_attachment",
	  "From: Shop <news@example.org>\r\n"
	  "To: customer@example.net\r\n"
	  "Subject: Your receipt\r\n"
	  "Date: Fri, 27 Nov 2026 03:19:25 +0000\r\n"
	  "Message-ID: <r.42@example.org>\r\n"
	  "MIME-Version: 1.0\r\n"
	  "Content-Type: multipart/mixed; boundary=\"b1\"\r\n"
	  "List-Unsubscribe: <https://example.org/u/42>\r\n"
	  "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
	  "\r\n"
	  "--b1\r\n"
	  "Content-Type: text/html; charset=utf-8\r\n"
	  "Content-Transfer-Encoding: quoted-printable\r\n"
	  "\r\n"
	  "<html><body><p style=3D\"color: red\">Thanks!</p>   \r\n"
	  "</body></html>\r\n"
	  "--b1\r\n"
	  "Content-Type: application/pdf; name=\"r.pdf\"\r\n"
	  "Content-Transfer-Encoding: base64\r\n"
	  "Content-Disposition: attachment; filename=\"r.pdf\"\r\n"
	  "\r\n"
	  "JVBERi0xLjQKJcfsj6IKNSAwIG9iago8PC9MZW5ndGggNiAwIFIvRmlsdGVyIC9GbGF0ZURlY29k\r\n"
	  "ZT4+CnN0cmVhbQp4nCvkMlAwUDA1NdUzMVEwtTTVM7GwUDBVSE8tUShJLS5RSMsvUkgsLs0vUcgv\r\n"
	  "--b1--\r\n" },
};

/* A verifier run: one line per file. */
struct verdicts {
	char record[1024]; /* the TXT record dkimpy was given */
	char lines[64][1024];
	size_t n;
};

static void dkimpy_check(void)
{
	int rc = system(PYTHON " -c 'import dkim, cryptography' 2>/dev/null");
	cr_assert_eq(rc, 0, "dkimpy is missing: apt-get install -y python3-dkim python3-nacl");
}

/* verify - run dkim_verify.py with key over files[0..n) (in tmpdir). */
static void verify(const char *key, const char *const *files, size_t n, struct verdicts *v)
{
	char src[PATH_MAX], cmd[16384], line[1024];
	snprintf(src, sizeof(src), "%s", __FILE__);
	int o = snprintf(cmd, sizeof(cmd), "cd '%s' && " PYTHON " '%s/dkim_verify.py' %s %s %s",
	                 tmpdir, dirname(src), key, SELECTOR, DOMAIN);
	for (size_t i = 0; i < n; i++)
		o += snprintf(cmd + o, sizeof(cmd) - (size_t)o, " %s", files[i]);
	cr_assert_lt((size_t)o, sizeof(cmd));
	FILE *p = popen(cmd, "r");
	cr_assert_not_null(p);
	memset(v, 0, sizeof(*v));
	while (fgets(line, sizeof(line), p)) {
		line[strcspn(line, "\n")] = 0;
		if (!strncmp(line, "record: ", 8))
			snprintf(v->record, sizeof(v->record), "%s", line + 8);
		else if (v->n < RP_ARRAY_LEN(v->lines))
			snprintf(v->lines[v->n++], sizeof(v->lines[0]), "%s", line);
	}
	cr_assert_eq(pclose(p), 0, "dkim_verify.py failed");
	cr_assert_eq(v->n, n, "%zu verdicts for %zu files", v->n, n);
}

/* expect - file's verdict is pass (or fail). */
static void expect(const struct verdicts *v, const char *file, bool pass)
{
	size_t fl = strlen(file);
	for (size_t i = 0; i < v->n; i++) {
		const char *l = v->lines[i], *f = strchr(l, ' ') + 1;
		if (strncmp(f, file, fl) || (f[fl] && f[fl] != ':'))
			continue;
		cr_assert_eq(!strncmp(l, "pass ", 5), pass, "%s: want %s, dkimpy says: %s", file,
		             pass ? "pass" : "fail", l);
		return;
	}
	cr_assert_fail("no verdict for %s", file);
}

/* check_field - the form of a DKIM-Signature field: folded lines of at most
 * 78 columns (a tab counted as 8), CRLF TAB continuations, the fixed tags. */
static void check_field(const char *f, size_t n, enum dkim_alg alg, const char *h)
{
	cr_assert(n > 2 && !memcmp(f + n - 2, "\r\n", 2), "ends in CRLF");
	size_t col = 0;
	struct buf unfolded = { 0 };
	for (size_t i = 0; i < n; i++) {
		if (f[i] == '\r') {
			cr_assert_eq(f[i + 1], '\n', "bare CR at %zu", i);
			cr_assert(i + 2 == n || f[i + 2] == '\t', "continuation without TAB at %zu",
			          i);
			i += 2;
			col = 8;
			buf_append(&unfolded, " ", 1); /* the fold stands for a space */
			continue;
		}
		cr_assert_neq(f[i], '\n', "bare LF at %zu", i);
		col++;
		cr_assert_leq(col, 78, "line longer than 78 columns at %zu: %.*s", i, (int)n, f);
		buf_append(&unfolded, f + i, 1);
	}
	char want[256];
	snprintf(want, sizeof(want),
	         "DKIM-Signature: v=1; a=%s; c=relaxed/relaxed; d=" DOMAIN "; s=" SELECTOR "; t=",
	         dkim_alg_name(alg));
	const char *u = buf_cstr(&unfolded);
	cr_assert(!strncmp(u, want, strlen(want)), "%s", u);
	/* h= without the folds after its colons */
	struct buf hs = { 0 };
	const char *hp = strstr(u, " h=");
	cr_assert_not_null(hp);
	for (hp += 3; *hp != ';'; hp++)
		if (*hp != ' ')
			buf_append(&hs, hp, 1);
	cr_assert_str_eq(buf_cstr(&hs), h);
	cr_assert_null(strstr(u, " l="), "never l=");
	cr_assert_not_null(strstr(u, "; bh="));
	cr_assert_not_null(strstr(u, "; b="));
	buf_free(&hs);
	buf_free(&unfolded);
}

/* sign_corpus - sign every corpus message with key into tmpdir/<tag>-<name>.eml
 * and tampered copies; check what dkimpy says of each. */
static void sign_corpus(const char *keyfile, const char *tag)
{
	struct dkim_key *k = load(keyfile);
	char names[64][64];
	const char *files[64];
	size_t nf = 0;
	uint64_t t = (uint64_t)time(NULL);
	for (size_t i = 0; i < RP_ARRAY_LEN(corpus); i++) {
		const char *m = corpus[i].text;
		size_t len = strlen(m);
		struct buf out = { 0 };
		char err[256] = "", path[PATH_MAX];
		cr_assert(dkim_sign_message(k, DOMAIN, SELECTOR, m, len, t, &out, err, sizeof(err)),
		          "%s: %s", corpus[i].name, err);
		size_t siglen = buf_used(&out);
		buf_append(&out, m, len);
		buf_cstr(&out); /* for strstr */
		snprintf(names[nf], sizeof(names[0]), "%s-%s.eml", tag, corpus[i].name);
		snprintf(path, sizeof(path), "%s/%s", tmpdir, names[nf]);
		write_file(path, buf_head(&out), buf_used(&out));
		files[nf] = names[nf];
		nf++;
		/* one byte of the body, and one of the signed Subject/To */
		char *body = strstr(buf_head(&out) + siglen, "\r\n\r\n");
		if (body && body + 4 < buf_head(&out) + buf_used(&out)) {
			body[4] ^= 0x01;
			snprintf(names[nf], sizeof(names[0]), "%s-%s.body.eml", tag,
			         corpus[i].name);
			snprintf(path, sizeof(path), "%s/%s", tmpdir, names[nf]);
			write_file(path, buf_head(&out), buf_used(&out));
			files[nf] = names[nf];
			nf++;
			body[4] ^= 0x01;
		}
		char *to = strstr(buf_head(&out) + siglen, "\nTo:");
		cr_assert_not_null(to);
		to[6] ^= 0x20;
		snprintf(names[nf], sizeof(names[0]), "%s-%s.to.eml", tag, corpus[i].name);
		snprintf(path, sizeof(path), "%s/%s", tmpdir, names[nf]);
		write_file(path, buf_head(&out), buf_used(&out));
		files[nf] = names[nf];
		nf++;
		buf_free(&out);
	}
	struct verdicts v;
	verify(keyfile, files, nf, &v);
	cr_assert_str_eq(v.record, dkim_key_record(k), "our TXT record differs from dkimpy's side");
	for (size_t i = 0; i < nf; i++)
		expect(&v, files[i], !strstr(files[i], ".body.") && !strstr(files[i], ".to."));
	dkim_key_free(k);
}

Test(dkim_sign, corpus_verifies_rsa1024)
{
	dkimpy_check();
	keys_make(gen_rsa1024);
	sign_corpus("rsa1024.pem", "rsa1024");
}

Test(dkim_sign, corpus_verifies_rsa2048)
{
	dkimpy_check();
	keys_make(gen_rsa2048);
	sign_corpus("rsa2048.pem", "rsa2048");
}

Test(dkim_sign, corpus_verifies_ed25519)
{
	dkimpy_check();
	keys_make(gen_ed25519);
	sign_corpus("ed25519.pem", "ed25519");
}

/* sign_file - sign msg with k and write the signed message to tmpdir/name. */
static void sign_file(const struct dkim_key *k, const char *msg, const char *name, uint64_t t)
{
	struct buf out = { 0 };
	char err[256] = "", path[PATH_MAX];
	cr_assert(
	    dkim_sign_message(k, DOMAIN, SELECTOR, msg, strlen(msg), t, &out, err, sizeof(err)),
	    "%s: %s", name, err);
	buf_puts(&out, msg);
	snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
	write_file(path, buf_head(&out), buf_used(&out));
	buf_free(&out);
}

/* edit - a copy of the signed message in tmpdir/from with the first
 * occurrence of old replaced by new, as tmpdir/to. */
static void edit(const char *from, const char *to, const char *old, const char *new)
{
	char path[PATH_MAX];
	snprintf(path, sizeof(path), "%s/%s", tmpdir, from);
	FILE *f = fopen(path, "rb");
	cr_assert_not_null(f);
	char data[8192];
	size_t n = fread(data, 1, sizeof(data) - 1, f);
	fclose(f);
	data[n] = 0;
	char *at = strstr(data, old);
	cr_assert_not_null(at, "%s has no \"%s\"", from, old);
	struct buf b = { 0 };
	buf_append(&b, data, (size_t)(at - data));
	buf_puts(&b, new);
	buf_puts(&b, at + strlen(old));
	snprintf(path, sizeof(path), "%s/%s", tmpdir, to);
	write_file(path, buf_head(&b), buf_used(&b));
	buf_free(&b);
}

/* What relaxed/relaxed forgives and what the signature protects, From's
 * extra h= entry included. */
Test(dkim_sign, tampering)
{
	dkimpy_check();
	keys_make(gen_ed25519);
	struct dkim_key *k = load("ed25519.pem");
	uint64_t t = (uint64_t)time(NULL);
	sign_file(k, corpus[0].text, "orig.eml", t);
	struct {
		const char *name, *old, *new;
		bool pass;
	} cases[] = {
		{ "ws-subject.eml", "Subject: Quarterly report", "Subject:   Quarterly \t report  ",
		  true },
		{ "refold.eml", "Subject: Quarterly report", "Subject: Quarterly\r\n\treport",
		  true },
		{ "case-name.eml", "Subject:", "SUBJECT:", true },
		{ "ws-body.eml", "The numbers  are\tin.", "The numbers are in.   ", true },
		{ "blank-end.eml", "Alice\r\n", "Alice\r\n\r\n\r\n", true },
		{ "unsigned-hdr.eml", "X-Mailer: ringpost", "X-Mailer: something else", true },
		{ "subject-case.eml", "Quarterly", "quarterly", false },
		{ "body-case.eml", "Hello Bob", "Hello bob", false },
		{ "body-line.eml", "Alice\r\n", "Alice\r\nMallory\r\n", false },
		{ "date.eml", "03:19:25", "03:19:26", false },
		{ "from-top.eml", "From: Alice", "From: mallory@evil.example\r\nFrom: Alice",
		  false },
		{ "from-bottom.eml",
		  "X-Mailer:", "From: mallory@evil.example\r\nX-Mailer:", false },
		{ "to-below.eml", "X-Mailer:", "To: mallory@evil.example\r\nX-Mailer:", false },
		/* Fields named in h= only as often as present: one added above
		 * them, or of a kind the message lacks, is not covered (only From
		 * is oversigned). */
		{ "to-above.eml", "From: Alice", "To: mallory@evil.example\r\nFrom: Alice", true },
		{ "cc-added.eml", "X-Mailer:", "Cc: mallory@evil.example\r\nX-Mailer:", true },
		{ "ctype.eml", "us-ascii", "utf-8", false },
		{ "sig-t.eml", "t=17", "t=16", false },
	};
	const char *files[RP_ARRAY_LEN(cases) + 1] = { "orig.eml" };
	for (size_t i = 0; i < RP_ARRAY_LEN(cases); i++) {
		edit("orig.eml", cases[i].name, cases[i].old, cases[i].new);
		files[i + 1] = cases[i].name;
	}
	struct verdicts v;
	verify("ed25519.pem", files, RP_ARRAY_LEN(files), &v);
	expect(&v, "orig.eml", true);
	for (size_t i = 0; i < RP_ARRAY_LEN(cases); i++)
		expect(&v, cases[i].name, cases[i].pass);
	dkim_key_free(k);
}

/* The form of the field, and h= naming each instance once (bottom-up
 * order is the verifier's business) plus From once more. */
Test(dkim_sign, field_form_and_h)
{
	keys_make(gen_rsa2048);
	struct dkim_key *rsa = load("rsa2048.pem");
	const char *want_h[] = {
		"from:to:subject:date:message-id:mime-version:content-type:from",
		"from:to:subject:mime-version:content-type:content-transfer-encoding:from",
		"from:to:subject:date:from",
		"from:to:subject:from",
		"from:to:subject:list-unsubscribe:list-unsubscribe-post:references:from",
		"from:to:subject:from",
		"from:to:to:to:cc:cc:subject:from",
		"from:to:subject:from",
		"from:to:subject:from",
		"from:to:subject:date:message-id:mime-version:content-type:list-unsubscribe:"
		"list-unsubscribe-post:from",
	};
	cr_assert_eq(RP_ARRAY_LEN(want_h), RP_ARRAY_LEN(corpus));
	for (size_t i = 0; i < RP_ARRAY_LEN(corpus); i++) {
		struct buf out = { 0 };
		char err[256];
		const char *m = corpus[i].text;
		cr_assert(dkim_sign_message(rsa, DOMAIN, SELECTOR, m, strlen(m), 1790000000, &out,
		                            err, sizeof(err)));
		check_field(buf_head(&out), buf_used(&out), DKIM_RSA_SHA256, want_h[i]);
		const char *t = strstr(buf_cstr(&out), "t=1790000000;");
		cr_assert(t && (t[-1] == ' ' || t[-1] == '\t'), "t=");
		buf_free(&out);
	}
	dkim_key_free(rsa);
}

/* Forty To: fields and a long domain: h= folds over many lines and every
 * line still fits; dkimpy agrees. */
Test(dkim_sign, long_h_folds)
{
	dkimpy_check();
	keys_make(gen_ed25519);
	struct dkim_key *k = load("ed25519.pem");
	struct buf m = { 0 }, want = { 0 };
	buf_puts(&m, "From: alice@example.org\r\n");
	buf_puts(&want, "from:");
	for (int i = 0; i < 40; i++) {
		buf_printf(&m, "To: r%d@example.net\r\n", i);
		buf_puts(&want, "to:");
	}
	buf_puts(&m, "Subject: many\r\n\r\nbody\r\n");
	buf_puts(&want, "subject:from");
	struct buf out = { 0 };
	char err[256];
	cr_assert(dkim_sign_message(k, DOMAIN, SELECTOR, buf_head(&m), buf_used(&m),
	                            (uint64_t)time(NULL), &out, err, sizeof(err)));
	check_field(buf_head(&out), buf_used(&out), DKIM_ED25519_SHA256, buf_cstr(&want));
	buf_append(&out, buf_head(&m), buf_used(&m));
	char path[PATH_MAX];
	snprintf(path, sizeof(path), "%s/many.eml", tmpdir);
	write_file(path, buf_head(&out), buf_used(&out));
	const char *files[] = { "many.eml" };
	struct verdicts v;
	verify("ed25519.pem", files, 1, &v);
	expect(&v, "many.eml", true);
	buf_free(&m);
	buf_free(&want);
	buf_free(&out);
	dkim_key_free(k);
}

/* A templated batch: the body hash is computed once and every recipient's
 * header section is signed with it; whole-message and header-only calls
 * agree. */
Test(dkim_sign, shared_body_hash)
{
	dkimpy_check();
	keys_make(gen_rsa1024);
	struct dkim_key *k = load("rsa1024.pem");
	static const char body[] = "Dear customer,\r\n\r\n  your   order\tshipped.  \r\n\r\n";
	unsigned char bh[DKIM_HASH_LEN];
	dkim_body_hash(body, strlen(body), bh);
	uint64_t t = (uint64_t)time(NULL);
	char names[5][32];
	const char *files[5];
	for (int i = 0; i < 5; i++) {
		struct buf hdr = { 0 }, out = { 0 }, whole = { 0 };
		char err[256], path[PATH_MAX];
		buf_printf(&hdr,
		           "From: shop@example.org\r\nTo: c%d@example.net\r\n"
		           "Subject: Order %d\r\nList-Unsubscribe: <https://example.org/u/%d>\r\n"
		           "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n\r\n",
		           i, 1000 + i, i);
		cr_assert(dkim_sign(k, DOMAIN, SELECTOR, buf_head(&hdr), buf_used(&hdr), bh, t,
		                    &out, err, sizeof(err)),
		          "%s", err);
		buf_append(&hdr, body, strlen(body));
		/* the whole message as "header" signs the same (RSA is deterministic) */
		cr_assert(dkim_sign(k, DOMAIN, SELECTOR, buf_head(&hdr), buf_used(&hdr), bh, t,
		                    &whole, err, sizeof(err)));
		cr_assert_eq(buf_used(&whole), buf_used(&out));
		cr_assert_eq(memcmp(buf_head(&whole), buf_head(&out), buf_used(&out)), 0);
		buf_append(&out, buf_head(&hdr), buf_used(&hdr));
		snprintf(names[i], sizeof(names[i]), "copy%d.eml", i);
		snprintf(path, sizeof(path), "%s/%s", tmpdir, names[i]);
		write_file(path, buf_head(&out), buf_used(&out));
		files[i] = names[i];
		buf_free(&hdr);
		buf_free(&out);
		buf_free(&whole);
	}
	struct verdicts v;
	verify("rsa1024.pem", files, 5, &v);
	for (int i = 0; i < 5; i++)
		expect(&v, files[i], true);
	dkim_key_free(k);
}

Test(dkim_sign, refusals)
{
	keys_make(gen_ed25519);
	struct dkim_key *k = load("ed25519.pem");
	static const char msg[] = "From: a@example.org\r\nTo: b@example.net\r\n\r\nhi\r\n";
	static const char nofrom[] = "To: b@example.net\r\nSubject: x\r\n\r\nhi\r\n";
	struct {
		const char *domain, *selector, *msg, *why;
	} cases[] = {
		{ "exa mple.org", "s", msg, "bad DKIM domain \"exa mple.org\"" },
		{ "example.org;x=1", "s", msg, "bad DKIM domain" },
		{ "", "s", msg, "bad DKIM domain" },
		{ "example..org", "s", msg, "bad DKIM domain" },
		{ "example.org.", "s", msg, "bad DKIM domain" },
		{ "b\xc3\xbc"
		  "cher.example",
		  "s", msg, "bad DKIM domain" },
		{ "example.org", "s\r\n\tb=", msg, "bad DKIM selector" },
		{ "example.org", "", msg, "bad DKIM selector" },
		{ "example.org", "s", nofrom, "the message has no From: field" },
		{ "example.org", "s", "", "the message has no From: field" },
	};
	for (size_t i = 0; i < RP_ARRAY_LEN(cases); i++) {
		struct buf out = { 0 };
		char err[256] = "";
		buf_puts(&out, "kept");
		cr_assert(!dkim_sign_message(k, cases[i].domain, cases[i].selector, cases[i].msg,
		                             strlen(cases[i].msg), 1, &out, err, sizeof(err)),
		          "case %zu signed", i);
		cr_assert(!strncmp(err, cases[i].why, strlen(cases[i].why)), "case %zu: %s", i,
		          err);
		cr_assert_str_eq(buf_cstr(&out), "kept", "case %zu: out changed", i);
		buf_free(&out);
	}
	/* what is fine: sub-domains, digits, '-', '_' */
	struct buf out = { 0 };
	char err[256] = "";
	cr_assert(dkim_sign_message(k, "mail-2.example.co.uk", "s_2026-01", msg, strlen(msg), 1,
	                            &out, err, sizeof(err)),
	          "%s", err);
	buf_free(&out);
	dkim_key_free(k);
}

/* ---- threads and speed --------------------------------------------------- */

struct signer {
	pthread_t th;
	const struct dkim_key *key;
	const struct buf *want; /* the one-thread signature */
	int rounds;
	int same; /* signatures equal to want */
};

static void *signer_run(void *arg)
{
	struct signer *s = arg;
	const char *m = corpus[0].text;
	for (int i = 0; i < s->rounds; i++) {
		struct buf out = { 0 };
		char err[256];
		if (dkim_sign_message(s->key, DOMAIN, SELECTOR, m, strlen(m), 1790000000, &out, err,
		                      sizeof(err)) &&
		    buf_used(&out) == buf_used(s->want) &&
		    !memcmp(buf_head(&out), buf_head(s->want), buf_used(&out)))
			s->same++;
		buf_free(&out);
	}
	return NULL;
}

/* Both algorithms are deterministic (PKCS#1 v1.5, EdDSA): four threads
 * signing with one shared key must produce the one-thread bytes. */
Test(dkim_sign, one_key_many_threads)
{
	keys_make("openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:1024 -out rsa1024.pem\n"
	          "openssl genpkey -algorithm ED25519 -out ed25519.pem\n");
	const char *files[] = { "rsa1024.pem", "ed25519.pem" };
	for (size_t f = 0; f < RP_ARRAY_LEN(files); f++) {
		struct dkim_key *k = load(files[f]);
		struct buf want = { 0 };
		char err[256];
		const char *m = corpus[0].text;
		cr_assert(dkim_sign_message(k, DOMAIN, SELECTOR, m, strlen(m), 1790000000, &want,
		                            err, sizeof(err)));
		struct signer s[4];
		for (int i = 0; i < 4; i++) {
			s[i] =
			    (struct signer){ .key = dkim_key_ref(k), .want = &want, .rounds = 200 };
			cr_assert_eq(pthread_create(&s[i].th, NULL, signer_run, &s[i]), 0);
		}
		dkim_key_free(k); /* the threads' references keep it */
		for (int i = 0; i < 4; i++) {
			pthread_join(s[i].th, NULL);
			cr_assert_eq(s[i].same, s[i].rounds, "%s: thread %d", files[f], i);
			dkim_key_free((struct dkim_key *)s[i].key);
		}
		buf_free(&want);
	}
}

/* rate - signatures per second over about 0.5 s; with_body adds the body
 * hash of the 2 KB message to each. */
static double rate(const struct dkim_key *k, const char *msg, size_t len, bool with_body)
{
	unsigned char bh[DKIM_HASH_LEN];
	struct buf out = { 0 };
	char err[256];
	dkim_body_hash(msg, len, bh);
	uint64_t start = rp_mono_ns(), n = 0;
	while (rp_mono_ns() - start < 500000000ull || n < 20) {
		buf_reset(&out);
		bool ok = with_body ? dkim_sign_message(k, DOMAIN, SELECTOR, msg, len, 1, &out, err,
		                                        sizeof(err))
		                    : dkim_sign(k, DOMAIN, SELECTOR, msg, len, bh, 1, &out, err,
		                                sizeof(err));
		cr_assert(ok, "%s", err);
		n++;
	}
	buf_free(&out);
	return (double)n * 1e9 / (double)(rp_mono_ns() - start);
}

Test(dkim_sign, signatures_per_second)
{
	keys_make("openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out rsa2048.pem\n"
	          "openssl genpkey -algorithm ED25519 -out ed25519.pem\n");
	struct buf m = { 0 };
	buf_puts(&m, corpus[0].text);
	while (buf_used(&m) < 2048)
		buf_puts(&m,
		         "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do.\r\n");
	const char *files[] = { "rsa2048.pem", "ed25519.pem" };
	for (size_t f = 0; f < RP_ARRAY_LEN(files); f++) {
		struct dkim_key *k = load(files[f]);
		double header_only = rate(k, buf_head(&m), buf_used(&m), false);
		double whole = rate(k, buf_head(&m), buf_used(&m), true);
		fprintf(stderr,
		        "dkim: %s (%s, %u bits), one thread: %.0f signatures/s with a shared body "
		        "hash (%.1f us each), %.0f/s hashing a %zu-byte message each time\n",
		        files[f], dkim_alg_name(dkim_key_alg(k)), dkim_key_bits(k), header_only,
		        1e6 / header_only, whole, buf_used(&m));
		dkim_key_free(k);
	}
	char *big = xmalloc(8u << 20);
	for (size_t i = 0; i < (8u << 20); i++)
		big[i] = "Lorem ipsum dolor sit amet,  consectetur\r\n"[i % 42];
	unsigned char bh[DKIM_HASH_LEN];
	uint64_t start = rp_mono_ns();
	dkim_body_hash(big, 8u << 20, bh);
	fprintf(stderr, "dkim: body hash %.0f MB/s\n",
	        (double)(8u << 20) * 1e3 / (double)(rp_mono_ns() - start));
	free(big);
	buf_free(&m);
}
