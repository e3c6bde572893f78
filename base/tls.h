/* tls.h - TLS sessions over ringpost's own byte streams (OpenSSL 3).
 *
 * A struct tls turns ciphertext received from a socket into plaintext and
 * plaintext to send into ciphertext, through custom BIOs on our buffers: it
 * never touches the socket, so io_uring keeps doing all I/O (conn.h drives
 * it). Contexts (struct tls_ctx) are built once per config generation and
 * shared read-only by every thread (reference-counted: a session keeps its
 * context alive, so a reload swaps contexts under running sessions); a
 * session belongs to the thread of its connection.
 *
 * Promises: renegotiation is refused; a server prefers its own cipher
 * order and offers ECDHE key exchange only; idle sessions give their record
 * buffers back (SSL_MODE_RELEASE_BUFFERS); every failure is one enum value
 * and a line of text.
 */
#ifndef RP_TLS_H
#define RP_TLS_H

#include <stdbool.h>
#include <stddef.h>

#include "buf.h"

struct tls_ctx;
struct tls;
struct tls_session; /* a resumable client session, and the name it was verified for */

enum tls_version {
	TLS_V1_2 = 0,
	TLS_V1_3,
};

/* What went wrong, for the owner's decision and logs. */
enum tls_error {
	TLS_OK = 0,
	TLS_E_PROTOCOL,  /* after the handshake the peer broke TLS: a bad record, an alert */
	TLS_E_HANDSHAKE, /* the handshake failed: garbage instead of TLS, no common
	                  * version or cipher, a certificate refused */
	TLS_E_VERIFY,    /* the server's certificate did not verify (chain or name) */
	TLS_E_CLOSED,    /* the peer ended TLS (close_notify) */
	TLS_E_INTERNAL,  /* anything else (out of memory, library error) */
};

/* Events tls_input reports (bits). */
enum {
	TLS_EV_ESTABLISHED = 1u << 0, /* the handshake completed in this call */
	TLS_EV_CLOSED = 1u << 1,      /* the peer sent close_notify */
};

struct tls_server_config {
	const char *cert_file; /* PEM chain */
	const char *key_file;  /* PEM private key (RSA, ECDSA or Ed25519) */
	enum tls_version min_version;
};

struct tls_client_config {
	const char *ca_file; /* CAs to verify servers with; NULL or "" = the system store */
	enum tls_version min_version;
};

/* What a client session needs to know beyond its context. */
struct tls_client_opts {
	const char *sni;                  /* server name sent (NULL or an IP: none) */
	const char *verify_name;          /* verify the chain and this name (RFC 6125);
	                                   * NULL: do not require verification */
	const char *check_name;           /* without verify_name: check the chain and
	                                   * this name but go on either way
	                                   * (tls_verified tells); NULL: none */
	const struct tls_session *resume; /* a session to resume, or NULL; with
	                                   * verify_name, only one verified for
	                                   * that name is offered (a resumption
	                                   * shows no certificate) */
};

/* tls_ctx_new_server - a server context with our certificate. NULL and a
 * reason ("file: what") in err when the certificate or key cannot be used. */
struct tls_ctx *tls_ctx_new_server(const struct tls_server_config *cfg, char *err, size_t errlen);
/* tls_ctx_new_client - a client context. NULL and a reason on error. */
struct tls_ctx *tls_ctx_new_client(const struct tls_client_config *cfg, char *err, size_t errlen);
/* tls_ctx_ref / tls_ctx_unref - share a context; the last unref frees it. NULL is fine. */
struct tls_ctx *tls_ctx_ref(struct tls_ctx *ctx);
void tls_ctx_unref(struct tls_ctx *ctx);

/* tls_new - a session in ctx's role; opts only for clients (may be NULL).
 * Never NULL (allocation failures abort). */
struct tls *tls_new(struct tls_ctx *ctx, const struct tls_client_opts *opts);
/* tls_free - NULL is fine. */
void tls_free(struct tls *t);

/* tls_start - a client's first flight (ClientHello) into out. Servers wait
 * for input. Returns TLS_OK or an error. */
enum tls_error tls_start(struct tls *t, struct buf *out);
/* tls_input - n bytes of ciphertext from the peer: drives the handshake,
 * then decrypts. Plaintext is appended to plain, whatever must be sent
 * (handshake, alerts) to out; *events gets TLS_EV_* bits. After an error
 * the session is dead (out may hold an alert worth sending); after
 * TLS_EV_CLOSED further input is ignored (RFC 8446 6.1). */
enum tls_error tls_input(struct tls *t, const void *p, size_t n, struct buf *plain, struct buf *out,
                         unsigned *events);
/* tls_write - encrypt n bytes of plaintext into out; only once established. */
enum tls_error tls_write(struct tls *t, const void *p, size_t n, struct buf *out);
/* tls_shutdown - our close_notify into out (once; quiet after an error). */
void tls_shutdown(struct tls *t, struct buf *out);
/* tls_trim - give buffer memory back while the session is idle. */
void tls_trim(struct tls *t);

/* tls_established - the handshake has completed. */
bool tls_established(const struct tls *t);
/* tls_version_name - "TLSv1.3" (or "" before the handshake). */
const char *tls_version_name(const struct tls *t);
/* tls_cipher_name - "TLS_AES_256_GCM_SHA384" (or ""). */
const char *tls_cipher_name(const struct tls *t);
/* tls_verified - the peer's certificate chain and name verified (clients
 * that gave verify_name or check_name; always false on servers, which ask
 * for none). A resumed session counts when the one it resumed was verified
 * for the same name. */
bool tls_verified(const struct tls *t);
/* tls_verify_text - why the certificate did not verify ("ok" when it did). */
const char *tls_verify_text(const struct tls *t);
/* tls_resumed - the handshake resumed an earlier session. */
bool tls_resumed(const struct tls *t);
/* tls_error_text - the last error, one line ("" when none). */
const char *tls_error_text(const struct tls *t);
/* tls_error_name - "protocol", "handshake", ... for logs. */
const char *tls_error_name(enum tls_error e);
/* tls_describe - "TLSv1.3/TLS_AES_256_GCM_SHA384" into out (for logs). */
void tls_describe(const struct tls *t, char *out, size_t outlen);

/* tls_session_take - the newest resumable session this client got (TLS 1.3
 * tickets arrive after the handshake), or NULL (none, or TLS failed); the
 * caller owns it, and it outlives t. A TLS 1.3 session resumes once:
 * replace it with the fresh one each connection gives. */
struct tls_session *tls_session_take(struct tls *t);
/* tls_session_free - NULL is fine. */
void tls_session_free(struct tls_session *s);

/* tls_memory - bytes a session holds now, roughly (for stats and tests). */
size_t tls_memory(const struct tls *t);

#endif
