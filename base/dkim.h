/* dkim.h - DKIM signing (RFC 6376, ed25519-sha256 from RFC 8463).
 *
 * Keys (RSA of any size or Ed25519), relaxed/relaxed canonicalisation, body
 * hashes and complete DKIM-Signature header fields. Pure and thread-safe: a
 * loaded key is immutable and reference-counted, and every signature uses
 * its own OpenSSL contexts, so any number of threads may sign with one key
 * at once. Signing is slow (RSA-2048: ~0.26 ms of CPU on our 2-core EPYC,
 * Ed25519 ~0.04 ms): never call dkim_sign on an event loop.
 *
 * Messages are CRLF-normalised (msg_normalize_newlines): only CRLF ends a
 * line; a bare CR or LF is an ordinary byte. Never uses l= (a body length
 * would let anyone append to a signed body).
 */
#ifndef RP_DKIM_H
#define RP_DKIM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"

#define DKIM_HASH_LEN 32 /* SHA-256: the body hash given to dkim_sign */

/* A signing algorithm; the key's type decides it. */
enum dkim_alg {
	DKIM_RSA_SHA256,     /* a=rsa-sha256: RSASSA-PKCS1-v1_5 over SHA-256 (RFC 6376) */
	DKIM_ED25519_SHA256, /* a=ed25519-sha256: PureEdDSA over the SHA-256 hash (RFC 8463) */
};

/* A private key for signing: immutable once loaded, shared between threads. */
struct dkim_key;

/* dkim_key_load - read a PEM private key from path (blocking file I/O:
 * start-up and reloads, not a loop thread): RSA (PKCS#8 or
 * traditional "RSA PRIVATE KEY") or Ed25519 (PKCS#8). Refuses EC, RSA-PSS,
 * Ed448 and anything else, encrypted keys (nothing is ever prompted for)
 * and keys that fail a signing self-test. Returns NULL with "path: reason"
 * in err on failure. The caller holds one reference (dkim_key_free). */
struct dkim_key *dkim_key_load(const char *path, char *err, size_t errlen);
/* dkim_key_ref - take one more reference (any thread); returns key. */
struct dkim_key *dkim_key_ref(struct dkim_key *key);
/* dkim_key_free - drop one reference; the last one frees the key. NULL is
 * allowed. No signature with this reference may still be running. */
void dkim_key_free(struct dkim_key *key);
/* dkim_key_alg - the algorithm the key signs with. */
enum dkim_alg dkim_key_alg(const struct dkim_key *key);
/* dkim_key_bits - the key's size: the RSA modulus bits, 256 for Ed25519.
 * Config checks warn about RSA keys below 1024 bits (verifiers such as
 * dkimpy refuse them); the figure means nothing of the kind for Ed25519. */
unsigned dkim_key_bits(const struct dkim_key *key);
/* dkim_key_record - the DNS TXT record to publish at
 * SELECTOR._domainkey.DOMAIN: "v=DKIM1; k=rsa; p=<base64 DER
 * SubjectPublicKeyInfo>" or "v=DKIM1; k=ed25519; p=<base64 of the raw
 * 32-byte key>". Lives as long as the key. */
const char *dkim_key_record(const struct dkim_key *key);
/* dkim_alg_name - "rsa-sha256" or "ed25519-sha256" (static). */
const char *dkim_alg_name(enum dkim_alg alg);

/* dkim_canon_header - append the relaxed canonical form (RFC 6376 3.4.2)
 * of one raw header field (name, colon, value, continuation lines; its
 * final CRLF optional) to out: "name:value\r\n", the name lower-cased,
 * folds removed, WSP runs made one SP, WSP around the colon and at the
 * ends of the value removed. */
void dkim_canon_header(const char *field, size_t len, struct buf *out);
/* dkim_canon_body - append the relaxed canonical form (RFC 6376 3.4.4) of
 * body[0..len) to out: WSP runs made one SP, WSP at line ends and empty
 * lines at the end removed, CRLF added to an unterminated last line. An
 * empty body (or one of only empty lines) canonicalises to nothing: the
 * lone CRLF is simple's rule (3.4.3), not relaxed's. */
void dkim_canon_body(const char *body, size_t len, struct buf *out);
/* dkim_body_hash - SHA-256 of the relaxed canonical body (the bh= tag),
 * streamed without copying the body. Compute it once for every copy of a
 * message that shares the body. */
void dkim_body_hash(const char *body, size_t len, unsigned char out[DKIM_HASH_LEN]);

/* dkim_sign - append a complete DKIM-Signature header field for a message
 * with header section header[0..header_len) and body hash bh (see
 * dkim_body_hash) to out, ending in CRLF and folded (CRLF TAB) so that no
 * line is longer than 78 columns (a tab counted as 8); the caller puts it
 * in front of the message. Tags: v=1; a= (the key's); c=relaxed/relaxed;
 * d=domain; s=selector; t=t (unix seconds); h=; bh=; b=.
 *
 * The header section ends at header_len or at its blank line, whichever
 * comes first (so the whole message may be passed). Signed fields: From,
 * To, Cc, Subject, Date, Message-ID, MIME-Version, Content-Type,
 * Content-Transfer-Encoding, List-Unsubscribe, List-Unsubscribe-Post,
 * Reply-To, In-Reply-To, References: each named in h= once per instance
 * present (taken bottom-up, RFC 6376 5.4.2), and From once more so that a
 * From: added later breaks the signature.
 *
 * Returns false with the reason in err (out unchanged) when domain or
 * selector is not a plain ASCII domain name, the header has no From:
 * field, or OpenSSL fails. Thread-safe. */
bool dkim_sign(const struct dkim_key *key, const char *domain, const char *selector,
               const char *header, size_t header_len, const unsigned char bh[DKIM_HASH_LEN],
               uint64_t t, struct buf *out, char *err, size_t errlen);
/* dkim_sign_message - dkim_sign for a whole message msg[0..len): splits the
 * header section (msg_header_scan) from the body and hashes the body. */
bool dkim_sign_message(const struct dkim_key *key, const char *domain, const char *selector,
                       const char *msg, size_t len, uint64_t t, struct buf *out, char *err,
                       size_t errlen);
/* dkim_sign_data - the raw signature (b= before base64) of canonical data
 * data[0..len), as the key's algorithm defines it: RSA signs SHA-256 of the
 * data; Ed25519 signs the 32-byte SHA-256 of the data with PureEdDSA (RFC
 * 8463 section 3). Appends the signature bytes to sig. Returns false with
 * the reason in err on an OpenSSL failure. Thread-safe. */
bool dkim_sign_data(const struct dkim_key *key, const void *data, size_t len, struct buf *sig,
                    char *err, size_t errlen);

#endif
