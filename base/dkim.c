/* dkim.c - DKIM keys and signatures (see dkim.h).
 *
 * A key is an EVP_PKEY that nobody modifies after dkim_key_load; each
 * signature makes its own EVP_MD_CTX (and so its own EVP_PKEY_CTX), which
 * is what makes concurrent signing with one key safe in OpenSSL 3.
 */
#include "dkim.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <strings.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "base64.h"
#include "msg_header.h"
#include "util.h"

struct dkim_key {
	EVP_PKEY *pkey;    /* never modified after load */
	enum dkim_alg alg; /* from the key's type */
	unsigned bits;     /* RSA modulus size; 256 for Ed25519 */
	size_t sig_max;    /* largest signature, bytes */
	char *record;      /* "v=DKIM1; k=...; p=..." */
	atomic_uint refs;  /* dkim_key_ref / dkim_key_free */
};

/* The fields signed, in h= order (RFC 6376 5.4.1 recommends most of them). */
static const char *const sign_fields[] = {
	"from",
	"to",
	"cc",
	"subject",
	"date",
	"message-id",
	"mime-version",
	"content-type",
	"content-transfer-encoding",
	"list-unsubscribe",
	"list-unsubscribe-post",
	"reply-to",
	"in-reply-to",
	"references",
};

#define DKIM_LINE_MAX 78 /* columns per header line, CRLF excluded */
#define DKIM_TAB_COLS 8  /* a continuation line's leading tab */
#define DKIM_NAME_MAX 253

const char *dkim_alg_name(enum dkim_alg alg)
{
	switch (alg) {
	case DKIM_RSA_SHA256:
		return "rsa-sha256";
	case DKIM_ED25519_SHA256:
		return "ed25519-sha256";
	}
	rp_panic("unknown algorithm %d", (int)alg);
}

/* ssl_reason - the reason of the last OpenSSL error on this thread (or
 * fallback); clears the thread's error queue. */
static const char *ssl_reason(const char *fallback)
{
	unsigned long e = ERR_peek_last_error();
	const char *r = e ? ERR_reason_error_string(e) : NULL;
	ERR_clear_error();
	return r ? r : fallback;
}

/* no_passphrase - the PEM password callback: never prompt, note the ask. */
static int no_passphrase(char *buf, int size, int rwflag, void *arg)
{
	(void)buf;
	(void)size;
	(void)rwflag;
	*(bool *)arg = true;
	return -1;
}

/* key_record - build the public TXT record into key->record. */
static bool key_record(struct dkim_key *key)
{
	struct buf b = { 0 };
	unsigned char raw[32], *der = NULL;
	size_t rawlen = sizeof(raw);
	int n;
	if (key->alg == DKIM_ED25519_SHA256) {
		if (EVP_PKEY_get_raw_public_key(key->pkey, raw, &rawlen) != 1 || rawlen != 32)
			return false;
		buf_puts(&b, "v=DKIM1; k=ed25519; p=");
		base64_encode(&b, raw, rawlen, false);
	} else {
		if ((n = i2d_PUBKEY(key->pkey, &der)) <= 0)
			return false;
		buf_puts(&b, "v=DKIM1; k=rsa; p=");
		base64_encode(&b, der, (size_t)n, false);
		OPENSSL_free(der);
	}
	key->record = xstrdup(buf_cstr(&b));
	buf_free(&b);
	return true;
}

/* key_self_test - sign and verify a fixed text: proves the private key
 * matches its public half and can sign, before any message depends on it. */
static bool key_self_test(const struct dkim_key *key, char *err, size_t errlen)
{
	static const char text[] = "ringpost DKIM key self-test";
	struct buf sig = { 0 };
	unsigned char hash[DKIM_HASH_LEN];
	const void *data = text;
	size_t len = sizeof(text) - 1;
	if (!dkim_sign_data(key, text, len, &sig, err, errlen))
		return false;
	if (key->alg == DKIM_ED25519_SHA256) {
		if (EVP_Digest(text, len, hash, NULL, EVP_sha256(), NULL) != 1)
			rp_panic("SHA-256 is not available");
		data = hash;
		len = sizeof(hash);
	}
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	if (!ctx)
		rp_panic("out of memory");
	const char *md = key->alg == DKIM_RSA_SHA256 ? "SHA256" : NULL;
	bool ok =
	    EVP_DigestVerifyInit_ex(ctx, NULL, md, NULL, NULL, key->pkey, NULL) == 1 &&
	    EVP_DigestVerify(ctx, (unsigned char *)buf_head(&sig), buf_used(&sig), data, len) == 1;
	EVP_MD_CTX_free(ctx);
	buf_free(&sig);
	if (!ok)
		snprintf(err, errlen, "the key fails its signing self-test (%s)",
		         ssl_reason("signature does not verify"));
	return ok;
}

/* key_type - the DKIM algorithm for pkey, or false with why not in err. */
static bool key_type(EVP_PKEY *pkey, enum dkim_alg *alg, char *err, size_t errlen)
{
	if (EVP_PKEY_is_a(pkey, "RSA")) {
		*alg = DKIM_RSA_SHA256;
		return true;
	}
	if (EVP_PKEY_is_a(pkey, "ED25519")) {
		*alg = DKIM_ED25519_SHA256;
		return true;
	}
	if (EVP_PKEY_is_a(pkey, "EC"))
		snprintf(err, errlen,
		         "an EC key: ECDSA is not a DKIM algorithm (use RSA or Ed25519)");
	else if (EVP_PKEY_is_a(pkey, "RSA-PSS"))
		snprintf(err, errlen, "an RSA-PSS key: DKIM's rsa-sha256 needs a plain RSA key");
	else
		snprintf(err, errlen,
		         "unsupported key type %s: DKIM signs with RSA or Ed25519 only",
		         EVP_PKEY_get0_type_name(pkey) ? EVP_PKEY_get0_type_name(pkey) : "unknown");
	return false;
}

#define DKIM_KEY_FILE_MAX (1u << 20) /* far above any PEM key */

/* key_file - the bytes of path (at most DKIM_KEY_FILE_MAX) into b, or false
 * with the reason in err. Blocking: start-up and reloads only. */
static bool key_file(const char *path, struct buf *b, char *err, size_t errlen)
{
	FILE *f = fopen(path, "rb");
	if (!f) {
		snprintf(err, errlen, "%s", strerror(errno));
		return false;
	}
	size_t n;
	buf_reserve(b, 32768); /* one allocation for any real key: nothing to wipe twice */
	do {
		n = fread(buf_reserve(b, 4096), 1, 4096, f);
		buf_commit(b, n);
	} while (n > 0 && buf_used(b) <= DKIM_KEY_FILE_MAX);
	bool bad = ferror(f);
	int e = errno;
	fclose(f);
	if (bad)
		snprintf(err, errlen, "%s", strerror(e));
	else if (buf_used(b) > DKIM_KEY_FILE_MAX)
		snprintf(err, errlen, "too large for a key file");
	else if (!buf_used(b))
		snprintf(err, errlen, "the file is empty");
	return !bad && buf_used(b) && buf_used(b) <= DKIM_KEY_FILE_MAX;
}

/* key_read - the private key in path, or NULL with the reason in err. */
static EVP_PKEY *key_read(const char *path, char *err, size_t errlen)
{
	struct buf b = { 0 };
	EVP_PKEY *pkey = NULL;
	if (!key_file(path, &b, err, errlen))
		goto out;
	if (!memmem(buf_head(&b), buf_used(&b), "PRIVATE KEY-----", 16)) {
		snprintf(err, errlen,
		         "no PEM private key in the file (no \"BEGIN ... PRIVATE KEY\")");
		goto out;
	}
	BIO *bio = BIO_new_mem_buf(buf_head(&b), (int)buf_used(&b));
	if (!bio)
		rp_panic("out of memory");
	bool asked = false;
	ERR_clear_error();
	pkey = PEM_read_bio_PrivateKey(bio, NULL, no_passphrase, &asked);
	BIO_free(bio);
	if (!pkey && asked)
		snprintf(err, errlen, "the key is encrypted (store it without a passphrase)");
	else if (!pkey)
		snprintf(err, errlen, "cannot decode the PEM private key (OpenSSL: %s)",
		         ssl_reason("unknown error"));
	ERR_clear_error();
out:
	if (b.data)
		OPENSSL_cleanse(b.data, b.cap); /* key material */
	buf_free(&b);
	return pkey;
}

struct dkim_key *dkim_key_load(const char *path, char *err, size_t errlen)
{
	char why[200] = "";
	enum dkim_alg alg;
	EVP_PKEY *pkey = key_read(path, why, sizeof(why));
	if (!pkey || !key_type(pkey, &alg, why, sizeof(why))) {
		EVP_PKEY_free(pkey);
		snprintf(err, errlen, "%s: %s", path, why);
		return NULL;
	}
	struct dkim_key *key = xcalloc(1, sizeof(*key));
	key->pkey = pkey;
	key->alg = alg;
	key->bits = (unsigned)EVP_PKEY_get_bits(pkey);
	key->sig_max = (size_t)EVP_PKEY_get_size(pkey);
	atomic_init(&key->refs, 1);
	if (!key_record(key)) {
		snprintf(why, sizeof(why), "cannot export the public key (%s)",
		         ssl_reason("unknown error"));
	} else if (key_self_test(key, why, sizeof(why))) {
		ERR_clear_error();
		return key;
	}
	snprintf(err, errlen, "%s: %s", path, why);
	dkim_key_free(key);
	return NULL;
}

struct dkim_key *dkim_key_ref(struct dkim_key *key)
{
	unsigned old = atomic_fetch_add_explicit(&key->refs, 1, memory_order_relaxed);
	rp_assert(old > 0);
	return key;
}

void dkim_key_free(struct dkim_key *key)
{
	if (!key)
		return;
	unsigned old = atomic_fetch_sub_explicit(&key->refs, 1, memory_order_acq_rel);
	rp_assert(old > 0);
	if (old > 1)
		return;
	EVP_PKEY_free(key->pkey);
	free(key->record);
	free(key);
}

enum dkim_alg dkim_key_alg(const struct dkim_key *key)
{
	return key->alg;
}

unsigned dkim_key_bits(const struct dkim_key *key)
{
	return key->bits;
}

const char *dkim_key_record(const struct dkim_key *key)
{
	return key->record;
}

bool dkim_sign_data(const struct dkim_key *key, const void *data, size_t len, struct buf *sig,
                    char *err, size_t errlen)
{
	unsigned char hash[DKIM_HASH_LEN];
	const char *md = "SHA256";
	if (key->alg == DKIM_ED25519_SHA256) {
		/* RFC 8463 section 3: Ed25519 signs the hash, not the data. */
		if (EVP_Digest(data, len, hash, NULL, EVP_sha256(), NULL) != 1)
			rp_panic("SHA-256 is not available");
		data = hash;
		len = sizeof(hash);
		md = NULL; /* PureEdDSA: no pre-hash of its own */
	}
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	if (!ctx)
		rp_panic("out of memory");
	size_t n = key->sig_max;
	unsigned char *w = (unsigned char *)buf_reserve(sig, n);
	bool ok = EVP_DigestSignInit_ex(ctx, NULL, md, NULL, NULL, key->pkey, NULL) == 1 &&
	          EVP_DigestSign(ctx, w, &n, data, len) == 1;
	EVP_MD_CTX_free(ctx);
	if (!ok) {
		snprintf(err, errlen, "signing failed (%s)", ssl_reason("unknown error"));
		return false;
	}
	rp_assert(n <= key->sig_max);
	buf_commit(sig, n);
	return true;
}

/* ---- The DKIM-Signature header field ---- */

/* name_ok - a plain ASCII domain name or selector: letters, digits, '-',
 * '_' and non-empty labels between dots. Keeps ';', spaces and line ends
 * (header injection) out of d= and s=. */
static bool name_ok(const char *s)
{
	size_t n = strlen(s), label = 0;
	if (!n || n > DKIM_NAME_MAX)
		return false;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c == '.') {
			if (!label)
				return false;
			label = 0;
		} else if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		           (c >= '0' && c <= '9') || c == '-' || c == '_') {
			label++;
		} else {
			return false;
		}
	}
	return label > 0;
}

/* A header field of the message being signed. */
struct dkim_field {
	const char *p;   /* "Name: value" with continuation lines */
	size_t len;      /* through its final CRLF */
	size_t name_len; /* bytes before the colon */
};

/* fields_split - the header fields of header[0..len) (up to its blank
 * line) into *fields (small, or a fresh allocation the caller frees when
 * it differs from small); returns how many. */
static size_t fields_split(const char *header, size_t len, struct dkim_field *small, size_t nsmall,
                           struct dkim_field **fields)
{
	struct msg_header_info hi;
	size_t n = 0, cap = nsmall, off = 0;
	msg_header_scan(header, len, &hi);
	*fields = small;
	while (off < hi.end) {
		const char *nl = memchr(header + off, '\n', hi.end - off);
		size_t next = nl ? (size_t)(nl - header) + 1 : hi.end;
		const char *l = header + off;
		if (l[0] == '\r' || l[0] == '\n')
			break; /* the blank line: msg_header_scan ends just after it */
		if (l[0] == ' ' || l[0] == '\t') {
			rp_assert(n > 0); /* msg_header_scan never starts with a continuation */
			(*fields)[n - 1].len = next - (size_t)((*fields)[n - 1].p - header);
		} else {
			if (n == cap) {
				cap *= 2;
				struct dkim_field *f = xmalloc(cap * sizeof(*f));
				memcpy(f, *fields, n * sizeof(*f));
				if (*fields != small)
					free(*fields);
				*fields = f;
			}
			const char *colon = memchr(l, ':', next - off);
			rp_assert(colon); /* msg_header_scan saw a field name */
			(*fields)[n++] = (struct dkim_field){ l, next - off, (size_t)(colon - l) };
		}
		off = next;
	}
	return n;
}

/* A header being folded: where the current line stands. */
struct fold {
	struct buf *out;
	size_t col; /* columns used on the current line */
};

/* fold_put - append an unbreakable piece, after a space (or nothing, when
 * !space) or on a new line when it would not fit. */
static void fold_put(struct fold *f, const char *s, size_t n, bool space)
{
	if (f->col + space + n > DKIM_LINE_MAX && f->col > DKIM_TAB_COLS) {
		buf_append(f->out, "\r\n\t", 3);
		f->col = DKIM_TAB_COLS;
	} else if (space) {
		buf_append(f->out, " ", 1);
		f->col++;
	}
	buf_append(f->out, s, n);
	f->col += n;
}

/* fold_base64 - append base64 text that may break anywhere (RFC 6376
 * base64string allows FWS between characters). */
static void fold_base64(struct fold *f, const char *s, size_t n)
{
	while (n) {
		if (f->col >= DKIM_LINE_MAX) {
			buf_append(f->out, "\r\n\t", 3);
			f->col = DKIM_TAB_COLS;
		}
		size_t k = RP_MIN(n, DKIM_LINE_MAX - f->col);
		buf_append(f->out, s, k);
		f->col += k;
		s += k;
		n -= k;
	}
}

/* sign_headers - h= into f (folded after colons) and the canonical form of
 * the signed fields into canon; returns how many From: fields there are. */
static size_t sign_headers(const struct dkim_field *fields, size_t nf, struct fold *f,
                           struct buf *canon)
{
	size_t nfrom = 0;
	bool first = true;
	char piece[64];
	for (size_t k = 0; k < RP_ARRAY_LEN(sign_fields); k++) {
		const char *name = sign_fields[k];
		size_t nlen = strlen(name);
		for (size_t i = nf; i-- > 0;) {
			if (fields[i].name_len != nlen || strncasecmp(fields[i].p, name, nlen))
				continue;
			dkim_canon_header(fields[i].p, fields[i].len, canon);
			int pl = snprintf(piece, sizeof(piece), "%s%s:", first ? "h=" : "", name);
			fold_put(f, piece, (size_t)pl, first);
			first = false;
			if (k == 0)
				nfrom++;
		}
	}
	/* From once more: it selects no field now, and one added later. */
	fold_put(f, "from;", 5, false);
	return nfrom;
}

bool dkim_sign(const struct dkim_key *key, const char *domain, const char *selector,
               const char *header, size_t header_len, const unsigned char bh[DKIM_HASH_LEN],
               uint64_t t, struct buf *out, char *err, size_t errlen)
{
	if (!name_ok(domain) || !name_ok(selector)) {
		snprintf(err, errlen, "bad DKIM %s \"%.64s\"",
		         name_ok(domain) ? "selector" : "domain",
		         name_ok(domain) ? selector : domain);
		return false;
	}
	struct dkim_field small[32], *fields;
	size_t nf = fields_split(header, header_len, small, RP_ARRAY_LEN(small), &fields);
	struct buf canon = { 0 }, text = { 0 };
	struct fold f = { .out = &text, .col = 15 };
	char piece[DKIM_NAME_MAX + 32];
	int n;

	buf_puts(&text, "DKIM-Signature:");
	fold_put(&f, "v=1;", 4, true);
	n = snprintf(piece, sizeof(piece), "a=%s;", dkim_alg_name(key->alg));
	fold_put(&f, piece, (size_t)n, true);
	fold_put(&f, "c=relaxed/relaxed;", 18, true);
	n = snprintf(piece, sizeof(piece), "d=%s;", domain);
	fold_put(&f, piece, (size_t)n, true);
	n = snprintf(piece, sizeof(piece), "s=%s;", selector);
	fold_put(&f, piece, (size_t)n, true);
	n = snprintf(piece, sizeof(piece), "t=%llu;", (unsigned long long)t);
	fold_put(&f, piece, (size_t)n, true);
	size_t nfrom = sign_headers(fields, nf, &f, &canon);
	if (fields != small)
		free(fields);
	if (!nfrom) {
		snprintf(err, errlen, "the message has no From: field");
		buf_free(&canon);
		buf_free(&text);
		return false;
	}
	struct buf b64 = { 0 };
	buf_puts(&b64, "bh=");
	base64_encode(&b64, bh, DKIM_HASH_LEN, false);
	buf_puts(&b64, ";");
	fold_put(&f, buf_head(&b64), buf_used(&b64), true);
	fold_put(&f, "b=", 2, true);

	/* What is signed: the signed fields, then this field with b= empty,
	 * canonicalised, without its final CRLF (RFC 6376 3.7). */
	dkim_canon_header(buf_head(&text), buf_used(&text), &canon);
	canon.len -= 2;
	struct buf sig = { 0 };
	bool ok = dkim_sign_data(key, buf_head(&canon), buf_used(&canon), &sig, err, errlen);
	if (ok) {
		buf_reset(&b64);
		base64_encode(&b64, (const unsigned char *)buf_head(&sig), buf_used(&sig), false);
		fold_base64(&f, buf_head(&b64), buf_used(&b64));
		buf_append(&text, "\r\n", 2);
		buf_append(out, buf_head(&text), buf_used(&text));
	}
	buf_free(&sig);
	buf_free(&b64);
	buf_free(&canon);
	buf_free(&text);
	return ok;
}

bool dkim_sign_message(const struct dkim_key *key, const char *domain, const char *selector,
                       const char *msg, size_t len, uint64_t t, struct buf *out, char *err,
                       size_t errlen)
{
	struct msg_header_info hi;
	unsigned char bh[DKIM_HASH_LEN];
	msg_header_scan(msg, len, &hi);
	dkim_body_hash(msg + hi.end, len - hi.end, bh);
	return dkim_sign(key, domain, selector, msg, hi.end, bh, t, out, err, errlen);
}
