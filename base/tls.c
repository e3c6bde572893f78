/* tls.c - TLS sessions on our buffers (see tls.h).
 *
 * One custom BIO per session is both the read and the write side of the
 * SSL object: reads take ciphertext from the session's input buffer (empty
 * means "retry"), writes append to the buffer the current call gave (the
 * connection's outgoing ciphertext). No socket BIO, no memory BIO copies
 * left lying around: what is buffered is ours and trimmed when idle.
 * OpenSSL's per-thread error queue is cleared before each call, so one
 * session's stale errors never show up as another's.
 */
#include "tls.h"

#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>

#include "util.h"

#define READ_CHUNK 16384 /* plaintext read per SSL_read */

struct tls_ctx {
	SSL_CTX *ssl_ctx;
	bool server;
	_Atomic unsigned refs;
};

struct tls {
	SSL *ssl;
	struct tls_ctx *ctx;
	struct buf cin;       /* ciphertext received, not yet read by OpenSSL */
	struct buf *out;      /* where the BIO writes during the current call */
	struct buf spill;     /* writes outside a call (never expected) */
	SSL_SESSION *session; /* newest resumable session (clients) */
	bool established;
	bool dead;        /* an error ended it: no more calls into OpenSSL */
	bool peer_closed; /* close_notify received: later input is ignored */
	bool shutdown_sent;
	bool want_verify;     /* the owner requires a verified certificate */
	char *name;           /* the name (or address) checked: verify_name or
	                       * check_name (owned), or NULL */
	bool resume_verified; /* the session offered was verified for name */
	char error[160];
};

/* A client session kept for resumption, and what its handshake verified:
 * a resumed handshake carries no certificate, so this is all there is. */
struct tls_session {
	SSL_SESSION *ssl_session;
	char *verified_name; /* the name the full handshake verified, or NULL */
};

static BIO_METHOD *bio_method;
static int ex_index = -1; /* SSL ex_data slot holding the struct tls */
static pthread_once_t init_once = PTHREAD_ONCE_INIT;

/* ---- the BIO ----------------------------------------------------------- */

static int bio_read(BIO *b, char *p, int len)
{
	struct tls *t = BIO_get_data(b);
	BIO_clear_retry_flags(b);
	size_t have = buf_used(&t->cin);
	if (!have) {
		BIO_set_retry_read(b);
		return -1;
	}
	size_t n = RP_MIN(have, (size_t)len);
	memcpy(p, buf_head(&t->cin), n);
	buf_consume(&t->cin, n);
	return (int)n;
}

static int bio_write(BIO *b, const char *p, int len)
{
	struct tls *t = BIO_get_data(b);
	BIO_clear_retry_flags(b);
	buf_append(t->out ? t->out : &t->spill, p, (size_t)len);
	return len;
}

static long bio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
	struct tls *t = BIO_get_data(b);
	(void)num;
	(void)ptr;
	switch (cmd) {
	case BIO_CTRL_FLUSH:
		return 1;
	case BIO_CTRL_PENDING:
		return t ? (long)buf_used(&t->cin) : 0;
	case BIO_CTRL_WPENDING:
		return 0;
	default:
		return 0;
	}
}

static int bio_create(BIO *b)
{
	BIO_set_init(b, 1);
	return 1;
}

static void init_once_fn(void)
{
	bio_method = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "ringpost");
	if (!bio_method || !BIO_meth_set_read(bio_method, bio_read) ||
	    !BIO_meth_set_write(bio_method, bio_write) ||
	    !BIO_meth_set_ctrl(bio_method, bio_ctrl) ||
	    !BIO_meth_set_create(bio_method, bio_create))
		rp_panic("cannot create the TLS BIO method");
	ex_index = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
	if (ex_index < 0)
		rp_panic("cannot allocate an SSL ex_data index");
}

/* ---- errors ------------------------------------------------------------ */

/* openssl_text - the first queued OpenSSL error (or fallback) into out. */
static void openssl_text(char *out, size_t outlen, const char *fallback)
{
	unsigned long e = ERR_peek_error();
	if (!e) {
		snprintf(out, outlen, "%s", fallback);
		return;
	}
	ERR_error_string_n(e, out, outlen);
	ERR_clear_error();
}

const char *tls_error_name(enum tls_error e)
{
	switch (e) {
	case TLS_OK:
		return "ok";
	case TLS_E_PROTOCOL:
		return "protocol";
	case TLS_E_HANDSHAKE:
		return "handshake";
	case TLS_E_VERIFY:
		return "verify";
	case TLS_E_CLOSED:
		return "closed";
	case TLS_E_INTERNAL:
		return "internal";
	}
	return "?";
}

/* fail - classify the failure of an SSL call that returned rc. */
static enum tls_error fail(struct tls *t, int rc, const char *what)
{
	int se = SSL_get_error(t->ssl, rc);
	enum tls_error e = TLS_E_INTERNAL;
	char detail[120];
	if (se == SSL_ERROR_ZERO_RETURN) {
		e = TLS_E_CLOSED;
		snprintf(detail, sizeof(detail), "the peer closed TLS");
	} else if (se == SSL_ERROR_SSL) {
		long vr = SSL_get_verify_result(t->ssl);
		if (!t->established && t->want_verify && vr != X509_V_OK) {
			e = TLS_E_VERIFY;
			snprintf(detail, sizeof(detail), "certificate verification failed: %s",
			         X509_verify_cert_error_string(vr));
			ERR_clear_error();
		} else {
			e = t->established ? TLS_E_PROTOCOL : TLS_E_HANDSHAKE;
			openssl_text(detail, sizeof(detail), "TLS error");
		}
	} else if (se == SSL_ERROR_SYSCALL) {
		e = t->established ? TLS_E_PROTOCOL : TLS_E_HANDSHAKE;
		openssl_text(detail, sizeof(detail), "unexpected end of the TLS stream");
	} else {
		openssl_text(detail, sizeof(detail), "TLS library error");
	}
	snprintf(t->error, sizeof(t->error), "%s: %s", what, detail);
	if (e != TLS_E_CLOSED)
		t->dead = true;
	return e;
}

/* ---- contexts ---------------------------------------------------------- */

static int min_proto(enum tls_version v)
{
	return v == TLS_V1_3 ? TLS1_3_VERSION : TLS1_2_VERSION;
}

/* new_session - a client got a resumable session (TLS 1.3: a ticket after
 * the handshake); keep the newest. Returning 1 takes the reference. */
static int new_session(SSL *ssl, SSL_SESSION *sess)
{
	struct tls *t = SSL_get_ex_data(ssl, ex_index);
	if (!t)
		return 0;
	SSL_SESSION_free(t->session);
	t->session = sess;
	return 1;
}

static struct tls_ctx *ctx_wrap(SSL_CTX *sc, bool server)
{
	struct tls_ctx *c = xcalloc(1, sizeof(*c));
	c->ssl_ctx = sc;
	c->server = server;
	atomic_init(&c->refs, 1);
	return c;
}

/* common_setup - what both roles share. */
static bool common_setup(SSL_CTX *sc, enum tls_version min)
{
	SSL_CTX_set_options(sc, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION |
	                            SSL_OP_IGNORE_UNEXPECTED_EOF);
	SSL_CTX_set_mode(sc, SSL_MODE_RELEASE_BUFFERS);
	/* TLS 1.2: forward-secret ECDHE key exchange with AEAD ciphers only. */
	return SSL_CTX_set_min_proto_version(sc, min_proto(min)) &&
	       SSL_CTX_set_cipher_list(sc, "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!eNULL");
}

struct tls_ctx *tls_ctx_new_server(const struct tls_server_config *cfg, char *err, size_t errlen)
{
	pthread_once(&init_once, init_once_fn);
	ERR_clear_error();
	char why[200];
	SSL_CTX *sc = SSL_CTX_new(TLS_server_method());
	if (!sc || !common_setup(sc, cfg->min_version)) {
		openssl_text(why, sizeof(why), "cannot set up TLS");
		snprintf(err, errlen, "TLS: %s", why);
		SSL_CTX_free(sc);
		return NULL;
	}
	SSL_CTX_set_options(sc, SSL_OP_CIPHER_SERVER_PREFERENCE);
	if (SSL_CTX_use_certificate_chain_file(sc, cfg->cert_file) != 1) {
		openssl_text(why, sizeof(why), "unusable certificate");
		snprintf(err, errlen, "%s: cannot use the certificate: %s", cfg->cert_file, why);
		SSL_CTX_free(sc);
		return NULL;
	}
	if (SSL_CTX_use_PrivateKey_file(sc, cfg->key_file, SSL_FILETYPE_PEM) != 1) {
		openssl_text(why, sizeof(why), "unusable key");
		snprintf(err, errlen, "%s: cannot use the private key: %s", cfg->key_file, why);
		SSL_CTX_free(sc);
		return NULL;
	}
	if (SSL_CTX_check_private_key(sc) != 1) {
		openssl_text(why, sizeof(why), "mismatch");
		snprintf(err, errlen, "%s: the key does not match the certificate %s (%s)",
		         cfg->key_file, cfg->cert_file, why);
		SSL_CTX_free(sc);
		return NULL;
	}
	static const unsigned char sid_ctx[] = "ringpost";
	SSL_CTX_set_session_id_context(sc, sid_ctx, sizeof(sid_ctx) - 1);
	SSL_CTX_set_num_tickets(sc, 1); /* one resumption ticket is enough for MTAs */
	return ctx_wrap(sc, true);
}

/* load_system_cas - the system's CAs as SSL_CTX_set_default_verify_paths
 * finds them (the bundle file and the hashed directory, or SSL_CERT_FILE
 * and SSL_CERT_DIR), without the "store" lookup OpenSSL 3 adds there: that
 * one lists the whole CA directory (getdents) for every issuer it cannot
 * find, i.e. on every handshake with a self-signed or privately issued
 * certificate, which opportunistic SMTP meets all the time (0.26 ms of
 * system time per handshake with Debian's 290 entries). Missing paths are
 * not an error, as there. */
static bool load_system_cas(SSL_CTX *sc)
{
	X509_STORE *st = SSL_CTX_get_cert_store(sc);
	X509_LOOKUP *file = X509_STORE_add_lookup(st, X509_LOOKUP_file());
	X509_LOOKUP *dir = X509_STORE_add_lookup(st, X509_LOOKUP_hash_dir());
	if (!file || !dir)
		return false;
	X509_LOOKUP_load_file(file, NULL, X509_FILETYPE_DEFAULT);
	X509_LOOKUP_add_dir(dir, NULL, X509_FILETYPE_DEFAULT);
	ERR_clear_error();
	return true;
}

struct tls_ctx *tls_ctx_new_client(const struct tls_client_config *cfg, char *err, size_t errlen)
{
	pthread_once(&init_once, init_once_fn);
	ERR_clear_error();
	char why[200];
	SSL_CTX *sc = SSL_CTX_new(TLS_client_method());
	if (!sc || !common_setup(sc, cfg->min_version)) {
		openssl_text(why, sizeof(why), "cannot set up TLS");
		snprintf(err, errlen, "TLS: %s", why);
		SSL_CTX_free(sc);
		return NULL;
	}
	bool ok = cfg->ca_file && cfg->ca_file[0]
	              ? SSL_CTX_load_verify_locations(sc, cfg->ca_file, NULL) == 1
	              : load_system_cas(sc);
	if (!ok) {
		openssl_text(why, sizeof(why), "unreadable");
		snprintf(err, errlen, "%s: cannot load CA certificates: %s",
		         cfg->ca_file && cfg->ca_file[0] ? cfg->ca_file : "the system store", why);
		SSL_CTX_free(sc);
		return NULL;
	}
	/* Sessions are kept by their owners (per destination), not here. */
	SSL_CTX_set_session_cache_mode(sc,
	                               SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
	SSL_CTX_sess_set_new_cb(sc, new_session);
	return ctx_wrap(sc, false);
}

struct tls_ctx *tls_ctx_ref(struct tls_ctx *ctx)
{
	if (ctx)
		atomic_fetch_add(&ctx->refs, 1);
	return ctx;
}

void tls_ctx_unref(struct tls_ctx *ctx)
{
	if (ctx && atomic_fetch_sub(&ctx->refs, 1) == 1) {
		SSL_CTX_free(ctx->ssl_ctx);
		free(ctx);
	}
}

/* ---- sessions ---------------------------------------------------------- */

/* is_ip - an address literal, which SNI must not carry (RFC 6066 3). */
static bool is_ip(const char *s)
{
	unsigned char a[16];
	return inet_pton(AF_INET, s, a) == 1 || inet_pton(AF_INET6, s, a) == 1;
}

struct tls *tls_new(struct tls_ctx *ctx, const struct tls_client_opts *opts)
{
	pthread_once(&init_once, init_once_fn);
	ERR_clear_error();
	struct tls *t = xcalloc(1, sizeof(*t));
	t->ctx = tls_ctx_ref(ctx);
	t->ssl = SSL_new(ctx->ssl_ctx);
	BIO *bio = t->ssl ? BIO_new(bio_method) : NULL;
	if (!bio)
		rp_panic("cannot create a TLS session (out of memory?)");
	BIO_set_data(bio, t);
	SSL_set_bio(t->ssl, bio, bio); /* one BIO, both directions: one reference */
	SSL_set_ex_data(t->ssl, ex_index, t);
	if (ctx->server) {
		SSL_set_accept_state(t->ssl);
		return t;
	}
	SSL_set_connect_state(t->ssl);
	if (opts && opts->sni && opts->sni[0] && !is_ip(opts->sni))
		SSL_set_tlsext_host_name(t->ssl, opts->sni);
	t->want_verify = opts && opts->verify_name && opts->verify_name[0];
	const char *name = t->want_verify ? opts->verify_name : opts ? opts->check_name : NULL;
	if (name && name[0]) {
		/* The name is checked as part of the chain (RFC 6125 rules:
		 * no partial wildcards); the result is reported either way.
		 * An address literal is matched against IP subjectAltNames. */
		X509_VERIFY_PARAM *vp = SSL_get0_param(t->ssl);
		X509_VERIFY_PARAM_set_hostflags(vp, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
		if (is_ip(name))
			X509_VERIFY_PARAM_set1_ip_asc(vp, name);
		else
			SSL_set1_host(t->ssl, name);
		t->name = xstrdup(name);
	}
	SSL_set_verify(t->ssl, t->want_verify ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, NULL);
	/* OpenSSL resumes without looking at a certificate again: when a name
	 * must be verified, offer only a session verified for that name, else
	 * an opportunistic session would pass for a verified one. */
	const struct tls_session *r = opts ? opts->resume : NULL;
	bool r_verified =
	    r && r->verified_name && t->name && !strcasecmp(r->verified_name, t->name);
	if (r && (!t->want_verify || r_verified)) {
		SSL_set_session(t->ssl, r->ssl_session);
		t->resume_verified = r_verified;
	}
	return t;
}

void tls_free(struct tls *t)
{
	if (!t)
		return;
	SSL_set_ex_data(t->ssl, ex_index, NULL);
	SSL_free(t->ssl);
	SSL_SESSION_free(t->session);
	free(t->name);
	tls_ctx_unref(t->ctx);
	buf_free(&t->cin);
	buf_free(&t->spill);
	free(t);
}

/* handshake - one step; TLS_OK while it waits for the peer. */
static enum tls_error handshake(struct tls *t, unsigned *events)
{
	int rc = SSL_do_handshake(t->ssl);
	if (rc == 1) {
		t->established = true;
		*events |= TLS_EV_ESTABLISHED;
		return TLS_OK;
	}
	int se = SSL_get_error(t->ssl, rc);
	if (se == SSL_ERROR_WANT_READ || se == SSL_ERROR_WANT_WRITE)
		return TLS_OK;
	return fail(t, rc, "TLS handshake");
}

enum tls_error tls_start(struct tls *t, struct buf *out)
{
	unsigned ev = 0;
	if (t->dead)
		return TLS_E_INTERNAL;
	ERR_clear_error();
	t->out = out;
	enum tls_error e = handshake(t, &ev);
	t->out = NULL;
	return e;
}

enum tls_error tls_input(struct tls *t, const void *p, size_t n, struct buf *plain, struct buf *out,
                         unsigned *events)
{
	*events = 0;
	if (t->dead)
		return TLS_E_INTERNAL;
	if (t->peer_closed)
		return TLS_OK; /* data after a closure alert is ignored (RFC 8446 6.1) */
	ERR_clear_error();
	buf_append(&t->cin, p, n);
	t->out = out;
	enum tls_error e = TLS_OK;
	if (!t->established)
		e = handshake(t, events);
	while (!e && t->established) {
		char *w = buf_reserve(plain, READ_CHUNK);
		int rc = SSL_read(t->ssl, w, READ_CHUNK);
		if (rc > 0) {
			buf_commit(plain, (size_t)rc);
			continue;
		}
		int se = SSL_get_error(t->ssl, rc);
		if (se == SSL_ERROR_WANT_READ || se == SSL_ERROR_WANT_WRITE)
			break;
		e = fail(t, rc, "TLS read");
		if (e == TLS_E_CLOSED) {
			*events |= TLS_EV_CLOSED;
			t->peer_closed = true;
			e = TLS_OK;
			break;
		}
	}
	t->out = NULL;
	/* Empty, or never to be read (an error or close_notify ended the
	 * input): give the memory back rather than hold what a peer sent. */
	if (!buf_used(&t->cin) || t->dead || t->peer_closed)
		buf_free(&t->cin);
	return e;
}

enum tls_error tls_write(struct tls *t, const void *p, size_t n, struct buf *out)
{
	if (t->dead || !t->established)
		return TLS_E_INTERNAL;
	ERR_clear_error();
	t->out = out;
	enum tls_error e = TLS_OK;
	size_t done = 0;
	while (done < n) {
		int chunk = (int)RP_MIN(n - done, (size_t)1 << 30);
		int rc = SSL_write(t->ssl, (const char *)p + done, chunk);
		if (rc <= 0) {
			e = fail(t, rc, "TLS write");
			break;
		}
		done += (size_t)rc;
	}
	t->out = NULL;
	return e;
}

void tls_shutdown(struct tls *t, struct buf *out)
{
	if (t->dead || !t->established || t->shutdown_sent)
		return;
	ERR_clear_error();
	t->out = out;
	SSL_shutdown(t->ssl);
	t->out = NULL;
	t->shutdown_sent = true;
	ERR_clear_error();
}

void tls_trim(struct tls *t)
{
	if (!buf_used(&t->cin))
		buf_shrink(&t->cin, 0);
	buf_free(&t->spill);
}

/* ---- facts ------------------------------------------------------------- */

bool tls_established(const struct tls *t)
{
	return t->established;
}

const char *tls_version_name(const struct tls *t)
{
	return t->established ? SSL_get_version(t->ssl) : "";
}

const char *tls_cipher_name(const struct tls *t)
{
	const char *c = t->established ? SSL_get_cipher_name(t->ssl) : NULL;
	return c ? c : "";
}

bool tls_verified(const struct tls *t)
{
	if (!t->established || t->ctx->server || !t->name)
		return false;
	if (SSL_session_reused(t->ssl)) /* no certificate, no name checked this time */
		return t->resume_verified && SSL_get_verify_result(t->ssl) == X509_V_OK;
	/* The name is part of the chain's verification (a mismatch is a
	 * verify error), which runs even when it is not required. */
	X509 *peer = SSL_get0_peer_certificate(t->ssl);
	return peer && SSL_get_verify_result(t->ssl) == X509_V_OK;
}

const char *tls_verify_text(const struct tls *t)
{
	if (!t->established)
		return "no handshake";
	if (!SSL_get0_peer_certificate(t->ssl))
		return "no certificate";
	return X509_verify_cert_error_string(SSL_get_verify_result(t->ssl));
}

bool tls_resumed(const struct tls *t)
{
	return t->established && SSL_session_reused(t->ssl);
}

const char *tls_error_text(const struct tls *t)
{
	return t->error;
}

void tls_describe(const struct tls *t, char *out, size_t outlen)
{
	snprintf(out, outlen, "%s/%s", tls_version_name(t), tls_cipher_name(t));
}

struct tls_session *tls_session_take(struct tls *t)
{
	SSL_SESSION *s = t->session;
	t->session = NULL;
	/* A copy, not the connection's own object: OpenSSL marks that one not
	 * resumable when the connection is freed without our close_notify
	 * sent (its rule for sessions of broken connections), which would
	 * spoil the caller's session behind its back whenever the peer closed
	 * first or the socket just ended. A session whose connection failed
	 * is not offered at all. */
	struct tls_session *ts = NULL;
	if (s && !t->dead && SSL_SESSION_is_resumable(s)) {
		ts = xcalloc(1, sizeof(*ts));
		ts->ssl_session = SSL_SESSION_dup(s);
		if (!ts->ssl_session)
			rp_panic("cannot copy a TLS session (out of memory?)");
		if (tls_verified(t))
			ts->verified_name = xstrdup(t->name);
	}
	SSL_SESSION_free(s);
	return ts;
}

void tls_session_free(struct tls_session *s)
{
	if (!s)
		return;
	SSL_SESSION_free(s->ssl_session);
	free(s->verified_name);
	free(s);
}

size_t tls_memory(const struct tls *t)
{
	return sizeof(*t) + t->cin.cap + t->spill.cap;
}
