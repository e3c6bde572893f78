/* test_tls.c - TLS sessions (base/tls.c) and conns in TLS mode (base/conn.c).
 *
 * First pure sessions, no sockets: ciphertext is pumped between two ends
 * through buffers, in whole flights or in small pieces (partial records).
 * An end is one of ours (struct tls) or a peer configured by hand with the
 * OpenSSL API (to offer TLS 1.2 only, or ask for a renegotiation, which our
 * API never does). Then conns over loopback on a real loop: implicit TLS,
 * STARTTLS, and TLS failures. Certificates are made at run time with the
 * openssl command line in each test's own directory.
 */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/conn.h"
#include "base/loop.h"
#include "base/tls.h"
#include "base/util.h"
#include "tests/unit/support.h"

#define MB (1u << 20)

/* ---- fixture: certificates in a private directory ----------------------- */

static char tmpdir[64];
static struct test_certs certs;

static void setup(void)
{
	test_tmpdir(tmpdir, sizeof(tmpdir), "tls");
	test_certs_make(&certs, tmpdir);
}

static void teardown(void)
{
	test_rmdir(tmpdir);
}

TestSuite(tls, .init = setup, .fini = teardown, .timeout = 60);
TestSuite(tls_conn, .init = setup, .fini = teardown, .timeout = 60);

static struct tls_ctx *server_ctx(const char *cert, const char *key, enum tls_version min)
{
	char err[256] = "";
	struct tls_server_config cfg = { .cert_file = cert, .key_file = key, .min_version = min };
	struct tls_ctx *ctx = tls_ctx_new_server(&cfg, err, sizeof(err));
	cr_assert_not_null(ctx, "tls_ctx_new_server: %s", err);
	return ctx;
}

static struct tls_ctx *client_ctx(const char *ca, enum tls_version min)
{
	char err[256] = "";
	struct tls_client_config cfg = { .ca_file = ca, .min_version = min };
	struct tls_ctx *ctx = tls_ctx_new_client(&cfg, err, sizeof(err));
	cr_assert_not_null(ctx, "tls_ctx_new_client: %s", err);
	return ctx;
}

/* pattern - n bytes that differ from offset to offset (the caller frees). */
static char *pattern(size_t n, unsigned seed)
{
	char *p = xmalloc(n);
	for (size_t i = 0; i < n; i++)
		p[i] = (char)(i * 131 + (i >> 9) + seed);
	return p;
}

/* noise - deterministic pseudo-random bytes (xorshift). */
static void noise(void *p, size_t n, uint32_t seed)
{
	uint32_t x = seed | 1;
	for (size_t i = 0; i < n; i++) {
		x ^= x << 13;
		x ^= x >> 17;
		x ^= x << 5;
		((unsigned char *)p)[i] = (unsigned char)x;
	}
}

/* ---- ends: ours or configured by hand ------------------------------------ */

struct end {
	struct tls *t;        /* one of ours, or NULL */
	SSL *ssl;             /* a peer configured by hand, or NULL */
	struct buf wire;      /* ciphertext this end produced, not yet delivered */
	struct buf plain;     /* plaintext it received */
	int established;      /* TLS_EV_ESTABLISHED seen (raw: handshake done) */
	int closed;           /* TLS_EV_CLOSED seen (raw: close_notify read) */
	enum tls_error err;   /* ours: the first error */
	bool failed;          /* raw: the first OpenSSL failure */
	unsigned long reason; /* raw: ERR_GET_REASON of that failure */
};

static void end_ours(struct end *e, struct tls_ctx *ctx, const struct tls_client_opts *opts)
{
	memset(e, 0, sizeof(*e));
	e->t = tls_new(ctx, opts);
}

/* raw_ctx - an OpenSSL context as another implementation might set it up:
 * max_version 0 means no limit, ciphers NULL the defaults. */
static SSL_CTX *raw_ctx(bool server, int max_version, const char *ciphers)
{
	SSL_CTX *sc = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
	cr_assert_not_null(sc);
	if (max_version)
		cr_assert(SSL_CTX_set_max_proto_version(sc, max_version));
	if (ciphers)
		cr_assert(SSL_CTX_set_cipher_list(sc, ciphers));
	if (server) {
		cr_assert_eq(SSL_CTX_use_certificate_chain_file(sc, certs.ec_cert), 1);
		cr_assert_eq(SSL_CTX_use_PrivateKey_file(sc, certs.ec_key, SSL_FILETYPE_PEM), 1);
	}
	return sc;
}

static void end_raw(struct end *e, SSL_CTX *sc, bool server)
{
	memset(e, 0, sizeof(*e));
	e->ssl = SSL_new(sc);
	cr_assert_not_null(e->ssl);
	BIO *rb = BIO_new(BIO_s_mem()), *wb = BIO_new(BIO_s_mem());
	BIO_set_mem_eof_return(rb, -1);
	SSL_set_bio(e->ssl, rb, wb);
	if (server)
		SSL_set_accept_state(e->ssl);
	else
		SSL_set_connect_state(e->ssl);
}

static void end_free(struct end *e)
{
	tls_free(e->t);
	SSL_free(e->ssl);
	buf_free(&e->wire);
	buf_free(&e->plain);
}

static void raw_fail(struct end *e)
{
	if (!e->failed)
		e->reason = ERR_GET_REASON(ERR_peek_error());
	e->failed = true;
	ERR_clear_error();
}

/* raw_drain - what the hand-made peer wrote goes on the wire. */
static void raw_drain(struct end *e)
{
	char tmp[16384];
	int n;
	while ((n = BIO_read(SSL_get_wbio(e->ssl), tmp, sizeof(tmp))) > 0)
		buf_append(&e->wire, tmp, (size_t)n);
}

/* raw_step - drive the hand-made peer as far as its input allows. */
static void raw_step(struct end *e)
{
	ERR_clear_error();
	if (!e->failed && !e->established) {
		int rc = SSL_do_handshake(e->ssl);
		if (rc == 1)
			e->established = 1;
		else if (SSL_get_error(e->ssl, rc) != SSL_ERROR_WANT_READ)
			raw_fail(e);
	}
	while (!e->failed && e->established && !e->closed) {
		char tmp[16384];
		int rc = SSL_read(e->ssl, tmp, sizeof(tmp));
		if (rc > 0) {
			buf_append(&e->plain, tmp, (size_t)rc);
			continue;
		}
		int se = SSL_get_error(e->ssl, rc);
		if (se == SSL_ERROR_ZERO_RETURN)
			e->closed++;
		else if (se != SSL_ERROR_WANT_READ)
			raw_fail(e);
		break;
	}
	raw_drain(e);
}

/* end_input - n bytes of ciphertext arrive at e (dropped once e failed). */
static void end_input(struct end *e, const char *p, size_t n)
{
	if (e->ssl) {
		if (e->failed)
			return;
		cr_assert_eq(BIO_write(SSL_get_rbio(e->ssl), p, (int)n), (int)n);
		raw_step(e);
		return;
	}
	if (e->err)
		return;
	unsigned ev = 0;
	enum tls_error r = tls_input(e->t, p, n, &e->plain, &e->wire, &ev);
	if (ev & TLS_EV_ESTABLISHED)
		e->established++;
	if (ev & TLS_EV_CLOSED)
		e->closed++;
	cr_assert(!(ev & TLS_EV_ESTABLISHED) || tls_established(e->t));
	e->err = r;
}

/* deliver - from's wire into to, chunk bytes per call (0: all at once). */
static void deliver(struct end *from, struct end *to, size_t chunk)
{
	while (buf_used(&from->wire)) {
		size_t n = buf_used(&from->wire);
		if (chunk && n > chunk)
			n = chunk;
		end_input(to, buf_head(&from->wire), n);
		buf_consume(&from->wire, n);
	}
}

/* pump - until neither end has anything more to say. */
static void pump(struct end *a, struct end *b, size_t chunk)
{
	for (int round = 0; buf_used(&a->wire) || buf_used(&b->wire); round++) {
		cr_assert_lt(round, 1000, "the ends keep talking");
		deliver(a, b, chunk);
		deliver(b, a, chunk);
	}
}

/* start - the client's first flight. */
static void start(struct end *client)
{
	if (client->ssl) {
		raw_step(client);
		return;
	}
	cr_assert_eq(tls_start(client->t, &client->wire), TLS_OK);
	cr_assert_gt(buf_used(&client->wire), 0, "a ClientHello");
}

/* connect_pair - handshake between server s and client c. */
static void connect_pair(struct end *s, struct end *c, size_t chunk)
{
	start(c);
	pump(s, c, chunk);
}

/* send_plain - n bytes from one of ours, pumped to the other end. */
static void send_plain(struct end *from, struct end *to, const void *p, size_t n)
{
	if (from->ssl) {
		cr_assert_eq(SSL_write(from->ssl, p, (int)n), (int)n);
		raw_drain(from);
	} else {
		cr_assert_eq(tls_write(from->t, p, n, &from->wire), TLS_OK, "%s",
		             tls_error_text(from->t));
	}
	pump(from, to, 0);
}

static void assert_established(struct end *s, struct end *c)
{
	cr_assert_eq(s->err, TLS_OK, "server: %s", s->t ? tls_error_text(s->t) : "");
	cr_assert_eq(c->err, TLS_OK, "client: %s", c->t ? tls_error_text(c->t) : "");
	cr_assert(!s->failed && !c->failed, "a hand-made end failed (reason %lu %lu)", s->reason,
	          c->reason);
	cr_assert_eq(s->established, 1, "server: TLS_EV_ESTABLISHED once");
	cr_assert_eq(c->established, 1, "client: TLS_EV_ESTABLISHED once");
}

/* ---- 1. handshake and data ------------------------------------------------ */

/* One handshake per certificate kind and delivery size (1 byte at a time
 * splits every record and handshake message). */
Test(tls, handshake_each_certificate_and_delivery)
{
	static const struct {
		const char *name;
		size_t chunk;
	} deliveries[] = {
		{ "whole flights", 0 }, { "1 byte", 1 }, { "7 bytes", 7 }, { "1000 bytes", 1000 }
	};
	const char *pairs[][2] = { { certs.ec_cert, certs.ec_key },
		                   { certs.rsa_cert, certs.rsa_key } };
	struct tls_ctx *cc = client_ctx(certs.ca, TLS_V1_2);
	for (size_t k = 0; k < 2; k++) {
		struct tls_ctx *sc = server_ctx(pairs[k][0], pairs[k][1], TLS_V1_2);
		for (size_t d = 0; d < sizeof(deliveries) / sizeof(deliveries[0]); d++) {
			struct end s, c;
			struct tls_client_opts o = { .sni = "mx.test", .verify_name = "mx.test" };
			end_ours(&s, sc, NULL);
			end_ours(&c, cc, &o);
			cr_assert(!tls_established(c.t));
			cr_assert_str_eq(tls_version_name(c.t), "");
			cr_assert_str_eq(tls_cipher_name(c.t), "");
			cr_assert_eq(tls_write(c.t, "x", 1, &c.wire), TLS_E_INTERNAL,
			             "no writes before the handshake");
			cr_assert_eq(buf_used(&c.wire), 0);
			connect_pair(&s, &c, deliveries[d].chunk);
			assert_established(&s, &c);
			cr_assert(tls_established(s.t) && tls_established(c.t));
			cr_assert_str_eq(tls_version_name(c.t), "TLSv1.3", "%s",
			                 deliveries[d].name);
			cr_assert_str_eq(tls_version_name(s.t), "TLSv1.3");
			cr_assert_str_eq(tls_cipher_name(c.t), tls_cipher_name(s.t));
			cr_assert_neq(tls_cipher_name(c.t)[0], '\0');
			char desc[128], want[128];
			tls_describe(c.t, desc, sizeof(desc));
			snprintf(want, sizeof(want), "TLSv1.3/%s", tls_cipher_name(c.t));
			cr_assert_str_eq(desc, want);
			cr_assert(tls_verified(c.t), "%s", tls_verify_text(c.t));
			cr_assert(!tls_verified(s.t), "servers ask for no certificate");
			cr_assert(!tls_resumed(c.t));
			cr_assert_str_eq(tls_error_text(c.t), "");
			cr_assert_str_eq(tls_error_text(s.t), "");
			end_free(&s);
			end_free(&c);
		}
		tls_ctx_unref(sc);
	}
	tls_ctx_unref(cc);
}

/* A megabyte and many small writes both ways, in whole flights and in
 * pieces smaller than a record; then close_notify each way. */
Test(tls, data_both_ways_and_shutdown)
{
	struct tls_ctx *sc = server_ctx(certs.ec_cert, certs.ec_key, TLS_V1_2);
	struct tls_ctx *cc = client_ctx(certs.ca, TLS_V1_2);
	struct end s, c;
	end_ours(&s, sc, NULL);
	end_ours(&c, cc, NULL);
	connect_pair(&s, &c, 0);
	assert_established(&s, &c);

	char *blob = pattern(MB, 1);
	struct end *dirs[2][2] = { { &c, &s }, { &s, &c } };
	for (int d = 0; d < 2; d++) {
		struct end *from = dirs[d][0], *to = dirs[d][1];
		cr_assert_eq(tls_write(from->t, blob, MB, &from->wire), TLS_OK);
		cr_assert_gt(buf_used(&from->wire), MB, "records add their overhead");
		pump(from, to, 3000); /* not a multiple of anything */
		cr_assert_eq(buf_used(&to->plain), MB);
		cr_assert(!memcmp(buf_head(&to->plain), blob, MB), "the megabyte arrives intact");
		buf_reset(&to->plain);

		/* 5000 small writes of 1..64 bytes, delivered in one go. */
		struct buf want = { 0 };
		for (size_t i = 0; i < 5000; i++) {
			size_t n = 1 + i % 64;
			cr_assert_eq(tls_write(from->t, blob + i, n, &from->wire), TLS_OK);
			buf_append(&want, blob + i, n);
		}
		pump(from, to, 0);
		cr_assert_eq(buf_used(&to->plain), buf_used(&want));
		cr_assert(!memcmp(buf_head(&to->plain), buf_head(&want), buf_used(&want)));
		buf_free(&want);
		buf_reset(&to->plain);
	}
	cr_assert_eq(s.established + c.established, 2, "no second TLS_EV_ESTABLISHED");
	/* Idle: our buffers are given back (OpenSSL's are released by
	 * SSL_MODE_RELEASE_BUFFERS, which tls_memory cannot see). */
	tls_trim(s.t);
	tls_trim(c.t);
	cr_assert_lt(tls_memory(s.t), 4096, "%zu", tls_memory(s.t));
	cr_assert_lt(tls_memory(c.t), 4096, "%zu", tls_memory(c.t));

	/* The client ends TLS: the server sees TLS_EV_CLOSED once, answers
	 * with its own close_notify, which the client sees. */
	tls_shutdown(c.t, &c.wire);
	cr_assert_gt(buf_used(&c.wire), 0, "a close_notify");
	size_t once = buf_used(&c.wire);
	tls_shutdown(c.t, &c.wire);
	cr_assert_eq(buf_used(&c.wire), once, "close_notify is sent once");
	pump(&c, &s, 0);
	cr_assert_eq(s.closed, 1, "the server sees close_notify");
	cr_assert_eq(s.err, TLS_OK, "close_notify is no error: %s", tls_error_text(s.t));
	cr_assert_eq(c.closed, 0);
	tls_shutdown(s.t, &s.wire);
	pump(&s, &c, 0);
	cr_assert_eq(c.closed, 1, "the client sees the answer");
	cr_assert_eq(c.err, TLS_OK);
	cr_assert_eq(buf_used(&s.plain) + buf_used(&c.plain), 0, "no plaintext from the closes");
	free(blob);
	end_free(&s);
	end_free(&c);
	tls_ctx_unref(sc);
	tls_ctx_unref(cc);
}

/* A context outlives the code that made it while sessions hold it. */
Test(tls, context_references)
{
	struct tls_ctx *sc = server_ctx(certs.ec_cert, certs.ec_key, TLS_V1_2);
	struct tls_ctx *cc = client_ctx(certs.ca, TLS_V1_2);
	struct end s, c;
	end_ours(&s, sc, NULL);
	end_ours(&c, cc, NULL);
	cr_assert_eq(tls_ctx_ref(sc), sc);
	tls_ctx_unref(sc);
	tls_ctx_unref(sc); /* the session's reference remains */
	tls_ctx_unref(cc);
	tls_ctx_unref(NULL);
	cr_assert_null(tls_ctx_ref(NULL));
	connect_pair(&s, &c, 0);
	assert_established(&s, &c);
	end_free(&s);
	end_free(&c);
	tls_free(NULL);
}

/* Unusable files make a context fail with the file named. */
Test(tls, context_errors)
{
	char err[256] = "";
	struct tls_server_config scfg = { .cert_file = certs.ec_cert, .key_file = certs.rsa_key };
	cr_assert_null(tls_ctx_new_server(&scfg, err, sizeof(err)));
	cr_assert(strstr(err, certs.rsa_key) && strstr(err, "does not match"), "%s", err);
	scfg.cert_file = "/nonexistent/cert.pem";
	cr_assert_null(tls_ctx_new_server(&scfg, err, sizeof(err)));
	cr_assert(strstr(err, "/nonexistent/cert.pem"), "%s", err);
	scfg.cert_file = certs.ec_cert;
	scfg.key_file = certs.ca; /* a certificate is no key */
	cr_assert_null(tls_ctx_new_server(&scfg, err, sizeof(err)));
	cr_assert(strstr(err, certs.ca), "%s", err);
	struct tls_client_config ccfg = { .ca_file = "/nonexistent/ca.pem" };
	cr_assert_null(tls_ctx_new_client(&ccfg, err, sizeof(err)));
	cr_assert(strstr(err, "/nonexistent/ca.pem"), "%s", err);
	ccfg.ca_file = "";
	struct tls_ctx *sys = tls_ctx_new_client(&ccfg, err, sizeof(err));
	cr_assert_not_null(sys, "the system store: %s", err);
	tls_ctx_unref(sys);
}

/* ---- 2. verification ------------------------------------------------------- */

struct verify_case {
	const char *name;
	int cert;                /* index into the certificate pairs */
	const char *ca;          /* 0: the CA; 1: the self-signed certificate */
	const char *verify_name; /* NULL: opportunistic */
	enum tls_error want;     /* for the client */
	bool verified;
	const char *text; /* in the error (or tls_verify_text when no error) */
};

Test(tls, verification)
{
	enum { EC, SELF, WRONG };
	const char *pairs[][2] = { { certs.ec_cert, certs.ec_key },
		                   { certs.self_cert, certs.self_key },
		                   { certs.wrong_cert, certs.wrong_key } };
	const struct verify_case cases[] = {
		{ "CA-signed, name asked", EC, certs.ca, "mx.test", TLS_OK, true, "ok" },
		{ "CA-signed, name in capitals", EC, certs.ca, "MX.Test", TLS_OK, true, "ok" },
		{ "self-signed, name asked", SELF, certs.ca, "mx.test", TLS_E_VERIFY, false,
		  "self-signed" },
		{ "certificate for another name", WRONG, certs.ca, "mx.test", TLS_E_VERIFY, false,
		  "hostname mismatch" },
		{ "a name the certificate lacks", EC, certs.ca, "mx.other", TLS_E_VERIFY, false,
		  "hostname mismatch" },
		{ "a partial wildcard asked", EC, certs.ca, "mx.test.evil", TLS_E_VERIFY, false,
		  "hostname mismatch" },
		{ "unknown CA", EC, certs.self_cert, "mx.test", TLS_E_VERIFY, false,
		  "certificate verification failed" },
		{ "self-signed, opportunistic", SELF, certs.ca, NULL, TLS_OK, false,
		  "self-signed" },
		{ "another name, opportunistic", WRONG, certs.ca, NULL, TLS_OK, false, "ok" },
		{ "CA-signed, opportunistic", EC, certs.ca, NULL, TLS_OK, false, "ok" },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct verify_case *vc = &cases[i];
		struct tls_ctx *sc = server_ctx(pairs[vc->cert][0], pairs[vc->cert][1], TLS_V1_2);
		struct tls_ctx *cc = client_ctx(vc->ca, TLS_V1_2);
		struct tls_client_opts o = { .sni = "mx.test", .verify_name = vc->verify_name };
		struct end s, c;
		end_ours(&s, sc, NULL);
		end_ours(&c, cc, &o);
		connect_pair(&s, &c, 0);
		cr_assert_eq(c.err, vc->want, "%s: client %s: %s", vc->name, tls_error_name(c.err),
		             tls_error_text(c.t));
		if (vc->want) {
			cr_assert_eq(c.established, 0, "%s", vc->name);
			cr_assert(strstr(tls_error_text(c.t), vc->text), "%s: %s", vc->name,
			          tls_error_text(c.t));
			cr_assert(!tls_verified(c.t));
			/* The client's alert ends the server's handshake too. */
			cr_assert_eq(s.err, TLS_E_HANDSHAKE, "%s: server %s", vc->name,
			             tls_error_name(s.err));
			cr_assert(strstr(tls_error_text(s.t), "alert"), "%s: %s", vc->name,
			          tls_error_text(s.t));
			cr_assert_eq(tls_write(c.t, "x", 1, &c.wire), TLS_E_INTERNAL);
		} else {
			assert_established(&s, &c);
			cr_assert_eq(tls_verified(c.t), vc->verified, "%s", vc->name);
			cr_assert(strstr(tls_verify_text(c.t), vc->text), "%s: %s", vc->name,
			          tls_verify_text(c.t));
		}
		end_free(&s);
		end_free(&c);
		tls_ctx_unref(sc);
		tls_ctx_unref(cc);
	}
}

/* An IP literal is never sent as SNI (RFC 6066 3), and nothing breaks. */
Test(tls, sni_ip_literal)
{
	struct tls_ctx *sc = server_ctx(certs.ec_cert, certs.ec_key, TLS_V1_2);
	struct tls_ctx *cc = client_ctx(certs.ca, TLS_V1_2);
	SSL_CTX *raw = raw_ctx(true, 0, NULL);
	const char *snis[] = { "192.0.2.1", "2001:db8::1", "mx.test", NULL };
	for (size_t i = 0; i < sizeof(snis) / sizeof(snis[0]); i++) {
		struct tls_client_opts o = { .sni = snis[i] };
		struct end s, c;
		end_raw(&s, raw, true);
		end_ours(&c, cc, &o);
		connect_pair(&s, &c, 0);
		assert_established(&s, &c);
		const char *got = SSL_get_servername(s.ssl, TLSEXT_NAMETYPE_host_name);
		if (i == 2)
			cr_assert_str_eq(got, "mx.test");
		else
			cr_assert_null(got, "%s sent as SNI", snis[i] ? snis[i] : "NULL");
		end_free(&s);
		end_free(&c);
	}
	SSL_CTX_free(raw);
	tls_ctx_unref(sc);
	tls_ctx_unref(cc);
}

/* ---- 3. versions and ciphers ---------------------------------------------- */

Test(tls, version_floor)
{
	/* Our server at TLS 1.3 and a client that stops at 1.2. */
	struct tls_ctx *sc13 = server_ctx(certs.ec_cert, certs.ec_key, TLS_V1_3);
	SSL_CTX *raw12 = raw_ctx(false, TLS1_2_VERSION, NULL);
	struct end s, c;
	end_ours(&s, sc13, NULL);
	end_raw(&c, raw12, false);
	connect_pair(&s, &c, 0);
	cr_assert_eq(s.err, TLS_E_HANDSHAKE, "server: %s", tls_error_name(s.err));
	cr_assert(strstr(tls_error_text(s.t), "unsupported protocol"), "%s", tls_error_text(s.t));
	cr_assert_eq(s.established, 0);
	cr_assert(c.failed, "the client hears of it (an alert)");
	cr_assert_eq(c.reason, SSL_R_TLSV1_ALERT_PROTOCOL_VERSION);
	end_free(&s);
	end_free(&c);
	SSL_CTX_free(raw12);

	/* Our client at TLS 1.3 and a server that stops at 1.2. */
	struct tls_ctx *cc13 = client_ctx(certs.ca, TLS_V1_3);
	SSL_CTX *raws12 = raw_ctx(true, TLS1_2_VERSION, NULL);
	end_raw(&s, raws12, true);
	end_ours(&c, cc13, NULL);
	connect_pair(&s, &c, 0);
	cr_assert(s.failed);
	cr_assert_eq(c.err, TLS_E_HANDSHAKE, "client: %s", tls_error_name(c.err));
	cr_assert(strstr(tls_error_text(c.t), "protocol version"), "%s", tls_error_text(c.t));
	end_free(&s);
	end_free(&c);

	/* Our TLS 1.2 floor meets a 1.2 server: TLS 1.2 with ECDHE. */
	struct tls_ctx *cc12 = client_ctx(certs.ca, TLS_V1_2);
	struct tls_client_opts o = { .sni = "mx.test", .verify_name = "mx.test" };
	end_raw(&s, raws12, true);
	end_ours(&c, cc12, &o);
	connect_pair(&s, &c, 0);
	assert_established(&s, &c);
	cr_assert_str_eq(tls_version_name(c.t), "TLSv1.2");
	cr_assert(strstr(tls_cipher_name(c.t), "ECDHE"), "%s", tls_cipher_name(c.t));
	cr_assert(tls_verified(c.t), "%s", tls_verify_text(c.t));
	send_plain(&s, &c, "hello", 5);
	send_plain(&c, &s, "world", 5);
	cr_assert_eq(buf_used(&c.plain), 5);
	cr_assert_eq(buf_used(&s.plain), 5);
	end_free(&s);
	end_free(&c);
	SSL_CTX_free(raws12);
	tls_ctx_unref(sc13);
	tls_ctx_unref(cc13);
	tls_ctx_unref(cc12);
}

/* Our server offers ECDHE key exchange only, and serves TLS 1.2 clients. */
Test(tls, server_tls12_ciphers)
{
	const char *pairs[][2] = { { certs.ec_cert, certs.ec_key },
		                   { certs.rsa_cert, certs.rsa_key } };
	for (size_t k = 0; k < 2; k++) {
		struct tls_ctx *sc = server_ctx(pairs[k][0], pairs[k][1], TLS_V1_2);
		SSL_CTX *ok = raw_ctx(false, TLS1_2_VERSION, NULL);
		SSL_CTX *static_rsa =
		    raw_ctx(false, TLS1_2_VERSION, "AES128-GCM-SHA256:AES256-SHA");
		struct end s, c;
		end_ours(&s, sc, NULL);
		end_raw(&c, ok, false);
		connect_pair(&s, &c, 0);
		assert_established(&s, &c);
		cr_assert_str_eq(tls_version_name(s.t), "TLSv1.2");
		cr_assert(strstr(tls_cipher_name(s.t), k ? "ECDHE-RSA-" : "ECDHE-ECDSA-"), "%s",
		          tls_cipher_name(s.t));
		send_plain(&c, &s, "ping", 4);
		send_plain(&s, &c, "pong", 4);
		cr_assert_eq(buf_used(&s.plain), 4);
		cr_assert_eq(buf_used(&c.plain), 4);
		end_free(&s);
		end_free(&c);

		end_ours(&s, sc, NULL);
		end_raw(&c, static_rsa, false);
		connect_pair(&s, &c, 0);
		cr_assert_eq(s.err, TLS_E_HANDSHAKE, "no ECDHE offered: refused");
		cr_assert(strstr(tls_error_text(s.t), "no shared cipher"), "%s",
		          tls_error_text(s.t));
		end_free(&s);
		end_free(&c);
		SSL_CTX_free(ok);
		SSL_CTX_free(static_rsa);
		tls_ctx_unref(sc);
	}
}

/* ---- 4. garbage ---------------------------------------------------------- */

enum garbage_kind {
	G_NOISE,       /* random bytes */
	G_HTTP,        /* an HTTP request */
	G_SMTP,        /* a clear-text SMTP command */
	G_TRUNCATED,   /* half a ClientHello, then a whole one */
	G_ALERT,       /* a fatal alert before anything */
	G_HUGE_HELLO,  /* a handshake header claiming 16 MB */
	G_BIG_HELLO,   /* 128 KB of zeros claiming to be a ClientHello */
	G_EMPTY_FLOOD, /* a megabyte of empty handshake records */
	G_NOISE_FLOOD, /* a megabyte of random bytes */
};

struct garbage_case {
	const char *name;
	enum garbage_kind kind;
	size_t chunk;     /* bytes per tls_input (0: all in one call) */
	const char *text; /* expected in the error text, or NULL */
	bool alert;       /* the server answers with an alert (else it just stops) */
};

/* garbage_make - the bytes of one case (hello: a genuine ClientHello). */
static void garbage_make(struct buf *g, enum garbage_kind kind, const struct buf *hello)
{
	static const unsigned char alert[] = { 0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28 };
	static const unsigned char huge[] = {
		0x16, 0x03, 0x01, 0x00, 0x04, 0x01, 0xff, 0xff, 0xff
	};
	switch (kind) {
	case G_NOISE:
		noise(buf_reserve(g, 4096), 4096, 7);
		buf_commit(g, 4096);
		break;
	case G_HTTP:
		buf_puts(g, "GET / HTTP/1.1\r\nHost: mx.test\r\nUser-Agent: test\r\n\r\n");
		break;
	case G_SMTP:
		buf_puts(g, "EHLO client.test\r\n");
		break;
	case G_TRUNCATED:
		buf_append(g, buf_head(hello), buf_used(hello) / 2);
		buf_append(g, buf_head(hello), buf_used(hello));
		break;
	case G_ALERT:
		buf_append(g, alert, sizeof(alert));
		break;
	case G_HUGE_HELLO:
		buf_append(g, huge, sizeof(huge));
		break;
	case G_BIG_HELLO: {
		/* A ClientHello of 131000 bytes (under OpenSSL's limit) in
		 * records of 16 KB: the server gathers it, then rejects it. */
		size_t body = 131000, left = body + 4;
		unsigned char hs[4] = { 0x01, (unsigned char)(body >> 16),
			                (unsigned char)(body >> 8), (unsigned char)body };
		bool first = true;
		while (left) {
			size_t n = RP_MIN(left, (size_t)16384);
			unsigned char rec[5] = { 0x16, 0x03, 0x01, (unsigned char)(n >> 8),
				                 (unsigned char)n };
			buf_append(g, rec, 5);
			char *w = buf_reserve(g, n);
			memset(w, 0, n);
			if (first)
				memcpy(w, hs, 4);
			buf_commit(g, n);
			first = false;
			left -= n;
		}
		break;
	}
	case G_EMPTY_FLOOD: {
		static const unsigned char empty[] = { 0x16, 0x03, 0x01, 0x00, 0x00 };
		while (buf_used(g) < MB)
			buf_append(g, empty, sizeof(empty));
		break;
	}
	case G_NOISE_FLOOD:
		noise(buf_reserve(g, MB), MB, 11);
		buf_commit(g, MB);
		break;
	}
}

/* Garbage into a server session: a clean error, no crash, little memory
 * held afterwards, and a dead session stays dead. */
Test(tls, garbage_into_a_server)
{
	const struct garbage_case cases[] = {
		{ "random bytes", G_NOISE, 0, "wrong version number", false },
		{ "random bytes, 1 at a time", G_NOISE, 1, "wrong version number", false },
		{ "an HTTP request", G_HTTP, 0, "http request", false },
		{ "an SMTP command", G_SMTP, 0, "wrong version number", false },
		{ "half a ClientHello, then a whole one", G_TRUNCATED, 0, NULL, true },
		{ "half a ClientHello, then a whole one, in pieces", G_TRUNCATED, 50, NULL, true },
		{ "an alert before any handshake", G_ALERT, 0, "unexpected message", true },
		{ "a 16 MB handshake message", G_HUGE_HELLO, 0, "excessive message size", true },
		{ "a 128 KB ClientHello of zeros", G_BIG_HELLO, 0, NULL, true },
		{ "a 128 KB ClientHello of zeros, in 4 KB reads", G_BIG_HELLO, 4096, NULL, true },
		{ "1 MB of empty records", G_EMPTY_FLOOD, 0, "record too small", true },
		{ "1 MB of empty records, in 4 KB reads", G_EMPTY_FLOOD, 4096, "record too small",
		  true },
		{ "1 MB of random bytes", G_NOISE_FLOOD, 0, "wrong version number", false },
		{ "1 MB of random bytes, in 16 KB reads", G_NOISE_FLOOD, 16384,
		  "wrong version number", false },
	};
	struct tls_ctx *sc = server_ctx(certs.ec_cert, certs.ec_key, TLS_V1_2);
	struct tls_ctx *cc = client_ctx(certs.ca, TLS_V1_2);
	struct end hello_end;
	end_ours(&hello_end, cc, NULL);
	start(&hello_end);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct garbage_case *gc = &cases[i];
		struct buf g = { 0 };
		garbage_make(&g, gc->kind, &hello_end.wire);
		struct end s;
		end_ours(&s, sc, NULL);
		size_t off = 0, calls = 0;
		while (off < buf_used(&g) && !s.err) {
			size_t n = buf_used(&g) - off;
			if (gc->chunk && n > gc->chunk)
				n = gc->chunk;
			end_input(&s, buf_head(&g) + off, n);
			off += n;
			calls++;
		}
		cr_assert(s.err == TLS_E_HANDSHAKE || s.err == TLS_E_PROTOCOL,
		          "%s: %s after %zu of %zu bytes", gc->name, tls_error_name(s.err), off,
		          buf_used(&g));
		cr_assert_eq(s.established, 0, "%s", gc->name);
		cr_assert_eq(buf_used(&s.plain), 0, "%s: no plaintext", gc->name);
		if (gc->alert)
			cr_assert(buf_used(&s.wire) == 7 && buf_head(&s.wire)[0] == 0x15,
			          "%s: an alert record (%zu bytes)", gc->name, buf_used(&s.wire));
		else
			cr_assert_eq(buf_used(&s.wire), 0, "%s", gc->name);
		cr_assert_neq(tls_error_text(s.t)[0], '\0', "%s: an error text", gc->name);
		if (gc->text)
			cr_assert(strstr(tls_error_text(s.t), gc->text), "%s: %s", gc->name,
			          tls_error_text(s.t));
		cr_assert_lt(tls_memory(s.t), 16384, "%s: a dead session holds %zu bytes", gc->name,
		             tls_memory(s.t));
		/* Dead: more input, writes and shutdown do nothing. */
		unsigned ev = 1234;
		size_t wire = buf_used(&s.wire);
		cr_assert_neq(tls_input(s.t, buf_head(&g), buf_used(&g), &s.plain, &s.wire, &ev),
		              TLS_OK, "%s", gc->name);
		cr_assert_eq(ev, 0);
		cr_assert_eq(tls_write(s.t, "x", 1, &s.wire), TLS_E_INTERNAL);
		tls_shutdown(s.t, &s.wire);
		cr_assert_eq(buf_used(&s.wire), wire, "%s: nothing more to send", gc->name);
		cr_assert_lt(tls_memory(s.t), 16384, "%s: %zu bytes after more input", gc->name,
		             tls_memory(s.t));
		end_free(&s);
		buf_free(&g);
	}
	end_free(&hello_end);
	tls_ctx_unref(sc);
	tls_ctx_unref(cc);
}

/* Half a ClientHello is not an error: the server waits for the rest. */
Test(tls, truncated_hello_waits)
{
	struct tls_ctx *sc = server_ctx(certs.ec_cert, certs.ec_key, TLS_V1_2);
	struct tls_ctx *cc = client_ctx(certs.ca, TLS_V1_2);
	struct end s, c;
	end_ours(&s, sc, NULL);
	end_ours(&c, cc, NULL);
	start(&c);
	size_t half = buf_used(&c.wire) / 2;
	end_input(&s, buf_head(&c.wire), half);
	buf_consume(&c.wire, half);
	cr_assert_eq(s.err, TLS_OK);
	cr_assert_eq(buf_used(&s.wire), 0, "nothing to say yet");
	cr_assert(!tls_established(s.t));
	pump(&c, &s, 0); /* the rest */
	assert_established(&s, &c);
	end_free(&s);
	end_free(&c);
	tls_ctx_unref(sc);
	tls_ctx_unref(cc);
}

/* Garbage once established is a protocol error, both directions: random
 * bytes, and a genuine record from another session. */
Test(tls, garbage_after_the_handshake)
{
	struct tls_ctx *sc = server_ctx(certs.ec_cert, certs.ec_key, TLS_V1_2);
	struct tls_ctx *cc = client_ctx(certs.ca, TLS_V1_2);
	for (int mode = 0; mode < 4; mode++) {
		struct end s, c, s2, c2;
		end_ours(&s, sc, NULL);
		end_ours(&c, cc, NULL);
		connect_pair(&s, &c, 0);
		assert_established(&s, &c);
		struct end *victim = mode & 1 ? &c : &s;
		struct buf g = { 0 };
		if (mode < 2) {
			noise(buf_reserve(&g, 300), 300, 3);
			buf_commit(&g, 300);
			/* An application data record header, so that the
			 * record layer gets as far as decrypting. */
			memcpy(buf_head(&g), "\x17\x03\x03\x01\x27", 5);
		} else {
			end_ours(&s2, sc, NULL);
			end_ours(&c2, cc, NULL);
			connect_pair(&s2, &c2, 0);
			struct end *other = mode & 1 ? &s2 : &c2;
			cr_assert_eq(tls_write(other->t, "stolen", 6, &g), TLS_OK);
			end_free(&s2);
			end_free(&c2);
		}
		end_input(victim, buf_head(&g), buf_used(&g));
		cr_assert_eq(victim->err, TLS_E_PROTOCOL, "mode %d: %s", mode,
		             tls_error_name(victim->err));
		cr_assert(strstr(tls_error_text(victim->t), "TLS read"), "%s",
		          tls_error_text(victim->t));
		cr_assert_eq(buf_used(&victim->plain), 0, "mode %d: nothing decrypted", mode);
		cr_assert_lt(tls_memory(victim->t), 16384);
		buf_free(&g);
		end_free(&s);
		end_free(&c);
	}
	tls_ctx_unref(sc);
	tls_ctx_unref(cc);
}

/* After close_notify the peer has nothing more to say: what follows is not
 * read and not kept. */
Test(tls, input_after_close_notify)
{
	struct tls_ctx *sc = server_ctx(certs.ec_cert, certs.ec_key, TLS_V1_2);
	struct tls_ctx *cc = client_ctx(certs.ca, TLS_V1_2);
	struct end s, c;
	end_ours(&s, sc, NULL);
	end_ours(&c, cc, NULL);
	connect_pair(&s, &c, 0);
	assert_established(&s, &c);
	cr_assert_eq(tls_write(c.t, "last", 4, &c.wire), TLS_OK);
	tls_shutdown(c.t, &c.wire);
	pump(&c, &s, 0);
	cr_assert_eq(s.closed, 1);
	cr_assert_eq(buf_used(&s.plain), 4, "data before close_notify is delivered");
	char *more = pattern(MB, 5);
	unsigned ev = 0;
	for (size_t off = 0; off < MB; off += 65536)
		tls_input(s.t, more + off, 65536, &s.plain, &s.wire, &ev);
	cr_assert_eq(buf_used(&s.plain), 4, "nothing after close_notify");
	cr_assert_lt(tls_memory(s.t), 16384, "%zu bytes kept after close_notify", tls_memory(s.t));
	free(more);
	end_free(&s);
	end_free(&c);
	tls_ctx_unref(sc);
	tls_ctx_unref(cc);
}

/* ---- 5. resumption -------------------------------------------------------- */

/* first_session - a full handshake, some data, and the session it left. */
static struct tls_session *first_session(struct end *s, struct end *c, struct tls_ctx *sc,
                                         struct tls_ctx *cc, const struct tls_client_opts *o)
{
	end_ours(s, sc, NULL);
	end_ours(c, cc, o);
	connect_pair(s, c, 0);
	assert_established(s, c);
	cr_assert(!tls_resumed(c->t) && !tls_resumed(s->t));
	send_plain(s, c, "220 hello\r\n", 11);
	send_plain(c, s, "QUIT\r\n", 6);
	struct tls_session *sess = tls_session_take(c->t);
	cr_assert_not_null(sess, "a resumable session (a TLS 1.3 ticket)");
	cr_assert_null(tls_session_take(c->t), "taken");
	cr_assert_null(tls_session_take(s->t), "servers keep none");
	return sess;
}

Test(tls, resumption_tls13)
{
	struct tls_ctx *sc = server_ctx(certs.ec_cert, certs.ec_key, TLS_V1_2);
	struct tls_ctx *cc = client_ctx(certs.ca, TLS_V1_2);
	struct tls_client_opts o = { .sni = "mx.test" };
	struct end s, c;
	struct tls_session *sess = first_session(&s, &c, sc, cc, &o);
	end_free(&s);
	end_free(&c);

	o.resume = sess;
	end_ours(&s, sc, NULL);
	end_ours(&c, cc, &o);
	connect_pair(&s, &c, 0);
	assert_established(&s, &c);
	cr_assert(tls_resumed(c.t), "the client resumed");
	cr_assert(tls_resumed(s.t), "the server resumed");
	send_plain(&s, &c, "220 again\r\n", 11);
	cr_assert_eq(buf_used(&c.plain), 11);
	struct tls_session *next = tls_session_take(c.t);
	cr_assert_not_null(next, "a fresh ticket after a resumption");
	end_free(&s);
	end_free(&c);

	/* Another server context (other ticket keys): a full handshake; the
	 * same session still resumes with the context that issued it. */
	struct tls_ctx *sc2 = server_ctx(certs.ec_cert, certs.ec_key, TLS_V1_2);
	struct tls_ctx *ctxs[] = { sc2, sc };
	o.resume = next;
	for (int i = 0; i < 2; i++) {
		end_ours(&s, ctxs[i], NULL);
		end_ours(&c, cc, &o);
		connect_pair(&s, &c, 0);
		assert_established(&s, &c);
		cr_assert_eq(tls_resumed(c.t), i == 1, "%d", i);
		cr_assert_eq(tls_resumed(s.t), i == 1, "%d", i);
		end_free(&s);
		end_free(&c);
	}

	tls_session_free(sess); /* the sessions live on their own */
	tls_session_free(next);
	tls_session_free(NULL);
	tls_ctx_unref(sc);
	tls_ctx_unref(sc2);
	tls_ctx_unref(cc);
}

/* TLS 1.2 (session ticket in the handshake) against a 1.2-only server. */
Test(tls, resumption_tls12)
{
	SSL_CTX *raw = raw_ctx(true, TLS1_2_VERSION, NULL);
	struct tls_ctx *cc = client_ctx(certs.ca, TLS_V1_2);
	struct tls_client_opts o = { .sni = "mx.test" };
	struct end s, c;
	end_raw(&s, raw, true);
	end_ours(&c, cc, &o);
	connect_pair(&s, &c, 0);
	assert_established(&s, &c);
	cr_assert_str_eq(tls_version_name(c.t), "TLSv1.2");
	struct tls_session *sess = tls_session_take(c.t);
	cr_assert_not_null(sess);
	end_free(&s);
	end_free(&c);

	o.resume = sess;
	end_raw(&s, raw, true);
	end_ours(&c, cc, &o);
	connect_pair(&s, &c, 0);
	assert_established(&s, &c);
	cr_assert(tls_resumed(c.t));
	cr_assert(SSL_session_reused(s.ssl));
	end_free(&s);
	end_free(&c);
	tls_session_free(sess);
	SSL_CTX_free(raw);
	tls_ctx_unref(cc);
}

/* A session resumed under verification keeps what the first handshake
 * verified; a session from an unverified handshake never passes for a
 * verified one. */
Test(tls, resumption_and_verification)
{
	struct tls_ctx *cc = client_ctx(certs.ca, TLS_V1_2);
	struct tls_ctx *good = server_ctx(certs.ec_cert, certs.ec_key, TLS_V1_2);
	struct tls_ctx *self = server_ctx(certs.self_cert, certs.self_key, TLS_V1_2);
	struct tls_client_opts o = { .sni = "mx.test", .verify_name = "mx.test" };
	struct end s, c;

	/* Verified, then resumed with the same name: still verified. */
	struct tls_session *sess = first_session(&s, &c, good, cc, &o);
	cr_assert(tls_verified(c.t));
	end_free(&s);
	end_free(&c);
	o.resume = sess;
	end_ours(&s, good, NULL);
	end_ours(&c, cc, &o);
	connect_pair(&s, &c, 0);
	assert_established(&s, &c);
	cr_assert(tls_resumed(c.t));
	cr_assert(tls_verified(c.t), "a resumed verified session: %s", tls_verify_text(c.t));
	cr_assert_str_eq(tls_verify_text(c.t), "ok");
	/* TLS 1.3 sessions are used once (OpenSSL retires them): the fresh
	 * ticket of a resumed connection carries the verification on. */
	struct tls_session *next = tls_session_take(c.t);
	cr_assert_not_null(next);
	end_free(&s);
	end_free(&c);
	tls_session_free(sess);
	o.resume = NULL;

	/* The name in other capitals resumes, verified; no name asked resumes,
	 * unverified; another name is not resumed and its full handshake
	 * fails. */
	const struct {
		const char *name;
		bool resumed, verified;
		enum tls_error err;
	} again[] = { { "MX.TEST", true, true, TLS_OK },
		      { NULL, true, false, TLS_OK },
		      { "other.test", false, false, TLS_E_VERIFY } };
	for (size_t i = 0; i < sizeof(again) / sizeof(again[0]); i++) {
		if (i) {
			sess = first_session(&s, &c, good, cc, &o);
			end_free(&s);
			end_free(&c);
		} else {
			sess = next;
		}
		struct tls_client_opts o2 = { .verify_name = again[i].name, .resume = sess };
		end_ours(&s, good, NULL);
		end_ours(&c, cc, &o2);
		connect_pair(&s, &c, 0);
		cr_assert_eq(c.err, again[i].err, "%zu: %s", i, tls_error_text(c.t));
		cr_assert_eq(tls_resumed(c.t), again[i].resumed, "%zu", i);
		cr_assert_eq(tls_verified(c.t), again[i].verified, "%zu", i);
		end_free(&s);
		end_free(&c);
		tls_session_free(sess);
	}

	/* Unverified (self-signed, opportunistic), then resumed with a name
	 * required: the certificate must be checked, and fails. */
	struct tls_client_opts opp = { .sni = "mx.test" };
	sess = first_session(&s, &c, self, cc, &opp);
	cr_assert(!tls_verified(c.t));
	end_free(&s);
	end_free(&c);
	o.resume = sess;
	end_ours(&s, self, NULL);
	end_ours(&c, cc, &o);
	connect_pair(&s, &c, 0);
	cr_assert(c.err == TLS_E_VERIFY || (c.err == TLS_OK && !tls_verified(c.t)),
	          "an unverified session resumed as verified: %s %s", tls_error_name(c.err),
	          tls_verify_text(c.t));
	cr_assert_eq(c.err, TLS_E_VERIFY, "verification is enforced, not skipped by resumption");
	end_free(&s);
	end_free(&c);
	tls_session_free(sess);

	tls_ctx_unref(good);
	tls_ctx_unref(self);
	tls_ctx_unref(cc);
}

/* ---- 6. renegotiation ---------------------------------------------------- */

/* Our sessions hide their SSL*, so the side that asks for a renegotiation
 * is a hand-made TLS 1.2 peer; ours must refuse in both roles. */
Test(tls, renegotiation_refused)
{
	/* A client asks our server. */
	struct tls_ctx *sc = server_ctx(certs.ec_cert, certs.ec_key, TLS_V1_2);
	SSL_CTX *rawc = raw_ctx(false, TLS1_2_VERSION, NULL);
	struct end s, c;
	end_ours(&s, sc, NULL);
	end_raw(&c, rawc, false);
	connect_pair(&s, &c, 0);
	assert_established(&s, &c);
	cr_assert_eq(SSL_renegotiate(c.ssl), 1, "the hand-made client may renegotiate");
	ERR_clear_error();
	cr_assert_leq(SSL_do_handshake(c.ssl), 0);
	raw_drain(&c);
	cr_assert_gt(buf_used(&c.wire), 0, "a second ClientHello");
	deliver(&c, &s, 0);
	cr_assert_eq(s.err, TLS_OK, "the server refuses politely: %s", tls_error_text(s.t));
	cr_assert_eq(s.established, 1, "no second handshake");
	cr_assert_gt(buf_used(&s.wire), 0);
	cr_assert_eq((unsigned char)buf_head(&s.wire)[0], 0x15, "an alert, not a ServerHello");
	pump(&s, &c, 0);
	cr_assert(c.failed, "the client's renegotiation failed");
	cr_assert_eq(c.reason, SSL_R_NO_RENEGOTIATION, "reason %lu", c.reason);
	end_free(&s);
	end_free(&c);
	SSL_CTX_free(rawc);

	/* A server asks our client (HelloRequest). */
	SSL_CTX *raws = raw_ctx(true, TLS1_2_VERSION, NULL);
	struct tls_ctx *cc = client_ctx(certs.ca, TLS_V1_2);
	end_raw(&s, raws, true);
	end_ours(&c, cc, NULL);
	connect_pair(&s, &c, 0);
	assert_established(&s, &c);
	cr_assert_eq(SSL_renegotiate(s.ssl), 1);
	ERR_clear_error();
	SSL_do_handshake(s.ssl);
	raw_drain(&s);
	cr_assert_gt(buf_used(&s.wire), 0, "a HelloRequest");
	deliver(&s, &c, 0);
	cr_assert_eq(c.err, TLS_OK, "%s", tls_error_text(c.t));
	cr_assert_eq(c.established, 1, "no second handshake");
	cr_assert_eq((unsigned char)buf_head(&c.wire)[0], 0x15, "an alert, not a ClientHello");
	end_free(&s);
	end_free(&c);
	SSL_CTX_free(raws);
	tls_ctx_unref(sc);
	tls_ctx_unref(cc);
}

/* ---- post-handshake messages --------------------------------------------- */

/* A TLS 1.3 KeyUpdate asking for ours: the answer is written while reading
 * (it must reach the wire though the owner wrote nothing), both roles. */
Test(tls, key_update_answered)
{
	struct tls_ctx *sc = server_ctx(certs.ec_cert, certs.ec_key, TLS_V1_2);
	struct tls_ctx *cc = client_ctx(certs.ca, TLS_V1_2);
	SSL_CTX *raws = raw_ctx(true, 0, NULL), *rawc = raw_ctx(false, 0, NULL);
	for (int ours_is_client = 0; ours_is_client < 2; ours_is_client++) {
		struct end s, c;
		if (ours_is_client) {
			end_raw(&s, raws, true);
			end_ours(&c, cc, NULL);
		} else {
			end_ours(&s, sc, NULL);
			end_raw(&c, rawc, false);
		}
		connect_pair(&s, &c, 0);
		assert_established(&s, &c);
		struct end *raw = ours_is_client ? &s : &c, *ours = ours_is_client ? &c : &s;
		cr_assert_eq(SSL_key_update(raw->ssl, SSL_KEY_UPDATE_REQUESTED), 1);
		send_plain(raw, ours, "after the update", 16);
		cr_assert_eq(ours->err, TLS_OK, "%s", tls_error_text(ours->t));
		cr_assert_eq(buf_used(&ours->plain), 16);
		cr_assert(!raw->failed);
		cr_assert_eq(SSL_get_key_update_type(raw->ssl), SSL_KEY_UPDATE_NONE);
		send_plain(ours, raw, "and back", 8);
		cr_assert(!raw->failed, "the raw end reads the updated keys (reason %lu)",
		          raw->reason);
		cr_assert_eq(buf_used(&raw->plain), 8);
		cr_assert_eq(ours->established, 1, "a KeyUpdate is no new handshake");
		end_free(&s);
		end_free(&c);
	}
	SSL_CTX_free(raws);
	SSL_CTX_free(rawc);
	tls_ctx_unref(sc);
	tls_ctx_unref(cc);
}

/* ---- 7-9. conns over loopback ---------------------------------------------- */

enum scenario {
	SC_IMPLICIT,      /* 7: implicit TLS, a megabyte each way, close_notify */
	SC_STARTTLS,      /* 8: clear text, STARTTLS, pipelined bytes dropped */
	SC_GARBAGE,       /* 9: the client sends garbage to a TLS server */
	SC_GARBAGE_ALERT, /* 9: garbage the server answers with an alert, and more */
	SC_VERIFY,        /* 9: the client refuses the server's certificate */
};

struct side {
	struct conn c;
	struct world *w;
	struct buf clear; /* received before TLS */
	struct buf got;   /* plaintext received under TLS */
	int released, closed, closed_err, connected, tls_ready;
	enum tls_error closed_tls; /* conn_tls_error when closed ran */
	char closed_text[200];     /* tls_error_text when closed ran */
};

struct world {
	struct loop *l;
	struct side a, b; /* a: the server side (attached); b: the client (connects) */
	int listen_fd;
	struct sockaddr_in addr;
	enum scenario scenario;
	struct tls_ctx *server_ctx, *client_ctx;
	struct tls_client_opts opts;
	char *payload_a, *payload_b; /* what a and b send under TLS */
	size_t payload_len;
	struct buf a_saw; /* SC_STARTTLS: c->in when a read STARTTLS */
	struct loop_timer watchdog, linger;
};

static void watchdog(struct loop_timer *t)
{
	(void)t;
	cr_assert_fail("the conversation did not finish in time");
}

static void linger_done(struct loop_timer *t)
{
	struct world *w = RP_CONTAINER_OF(t, struct world, linger);
	loop_timer_disarm(w->l, &w->watchdog);
	loop_stop(w->l);
}

static void side_released(struct conn *c)
{
	struct side *s = c->owner;
	struct world *w = s->w;
	s->released++;
	cr_assert_eq(c->fd, -1, "the socket is closed before released");
	cr_assert_eq(c->io.inflight, 0, "nothing in flight at release");
	cr_assert_null(c->tls, "the session is freed");
	/* Keep running a little: a second release or a late callback would show. */
	if (w->a.released && w->b.released && !loop_timer_armed(&w->linger))
		loop_timer_arm(w->l, &w->linger, 50, linger_done);
}

static void side_closed(struct conn *c, int err)
{
	struct side *s = c->owner;
	s->closed++;
	s->closed_err = err;
	s->closed_tls = conn_tls_error(c);
	snprintf(s->closed_text, sizeof(s->closed_text), "%s",
	         c->tls ? tls_error_text(c->tls) : "(clear text)");
	cr_assert(conn_closing(c), "closing once the peer is gone");
}

static void side_tls_ready(struct conn *c)
{
	struct side *s = c->owner;
	struct world *w = s->w;
	s->tls_ready++;
	cr_assert(tls_established(c->tls));
	cr_assert_str_eq(tls_version_name(c->tls), "TLSv1.3");
	if (s == &w->a && w->scenario == SC_IMPLICIT)
		conn_write(c, w->payload_a, w->payload_len);
	if (s == &w->b && w->scenario == SC_STARTTLS)
		conn_puts(c, "EHLO after\r\n");
}

/* server_data - a's side: STARTTLS in clear text, then plaintext under TLS. */
static void server_data(struct side *s, struct conn *c)
{
	struct world *w = s->w;
	if (!c->tls) {
		rp_assert(w->scenario == SC_STARTTLS);
		buf_append(&s->clear, buf_head(&c->in), buf_used(&c->in));
		if (buf_used(&c->in) < 10)
			return;
		cr_assert(!memcmp(buf_head(&c->in), "STARTTLS\r\n", 10));
		buf_append(&w->a_saw, buf_head(&c->in), buf_used(&c->in));
		buf_consume(&c->in, 10);
		conn_puts(c, "220 go\r\n");
		conn_tls_server(c, w->server_ctx);
		cr_assert_eq(buf_used(&c->in), 0, "pipelined bytes are dropped");
		return;
	}
	buf_append(&s->got, buf_head(&c->in), buf_used(&c->in));
	buf_consume(&c->in, buf_used(&c->in));
	if (w->scenario == SC_IMPLICIT && buf_used(&s->got) == w->payload_len)
		conn_close_after_flush(c); /* after a's megabyte, a close_notify */
	if (w->scenario == SC_STARTTLS && buf_used(&s->got) >= 12) {
		conn_puts(c, "250 ok\r\n");
		conn_close_after_flush(c);
	}
}

static void side_data(struct conn *c)
{
	struct side *s = c->owner;
	struct world *w = s->w;
	if (s == &w->a) {
		server_data(s, c);
		return;
	}
	if (c->tls) {
		buf_append(&s->got, buf_head(&c->in), buf_used(&c->in));
	} else {
		buf_append(&s->clear, buf_head(&c->in), buf_used(&c->in));
		if (w->scenario == SC_STARTTLS && buf_used(&s->clear) >= 8) {
			buf_consume(&c->in, buf_used(&c->in));
			conn_tls_client(c, w->client_ctx, &w->opts);
			return;
		}
	}
	buf_consume(&c->in, buf_used(&c->in));
}

static void side_connected(struct conn *c, int err);

static const struct conn_ops side_ops = {
	.connected = side_connected,
	.data = side_data,
	.closed = side_closed,
	.released = side_released,
	.tls_ready = side_tls_ready,
};

static void side_connected(struct conn *c, int err)
{
	struct side *s = c->owner;
	struct world *w = s->w;
	s->connected++;
	cr_assert_eq(err, 0, "connect: %s", strerror(-err));
	int fd = accept4(w->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
	cr_assert_geq(fd, 0, "accept: %s", strerror(errno));
	conn_attach(&w->a.c, fd);
	switch (w->scenario) {
	case SC_IMPLICIT:
	case SC_VERIFY:
		conn_tls_server(&w->a.c, w->server_ctx);
		conn_tls_client(c, w->client_ctx, &w->opts);
		cr_assert_eq(conn_pending_out(c), buf_used(&c->raw), "the ClientHello");
		/* Written before the handshake is done: waits for it. */
		if (w->scenario == SC_IMPLICIT)
			conn_write(c, w->payload_b, w->payload_len);
		break;
	case SC_STARTTLS:
		/* The command and an injected one in one write (CVE-2011-0411). */
		conn_puts(c, "STARTTLS\r\nMAIL FROM:<injected@evil.test>\r\n");
		break;
	case SC_GARBAGE:
	case SC_GARBAGE_ALERT:
		conn_tls_server(&w->a.c, w->server_ctx);
		/* More than one receive buffer: several completions. With an
		 * alert: a handshake header claiming 16 MB first. */
		if (w->scenario == SC_GARBAGE_ALERT)
			conn_write(c, "\x16\x03\x01\x00\x04\x01\xff\xff\xff", 9);
		noise(buf_reserve(conn_outbuf(c), 65536), 65536, 9);
		buf_commit(conn_outbuf(c), 65536);
		conn_flush_soon(c);
		break;
	}
}

static void world_init(struct world *w, enum scenario sc)
{
	memset(w, 0, sizeof(*w));
	w->scenario = sc;
	struct loop_config cfg = {
		.sq_entries = 64, .cq_entries = 256, .buf_count = 8, .buf_size = 4096
	};
	w->l = loop_new(&cfg);
	cr_assert_not_null(w->l, "loop_new: %s", strerror(errno));
	w->a.w = w->b.w = w;
	conn_init(&w->a.c, w->l, &side_ops, &w->a);
	conn_init(&w->b.c, w->l, &side_ops, &w->b);
	w->listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	cr_assert_geq(w->listen_fd, 0);
	w->addr.sin_family = AF_INET;
	w->addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	cr_assert_eq(bind(w->listen_fd, (struct sockaddr *)&w->addr, sizeof(w->addr)), 0);
	socklen_t len = sizeof(w->addr);
	cr_assert_eq(getsockname(w->listen_fd, (struct sockaddr *)&w->addr, &len), 0);
	cr_assert_eq(listen(w->listen_fd, 8), 0);
	w->server_ctx = server_ctx(sc == SC_VERIFY ? certs.self_cert : certs.ec_cert,
	                           sc == SC_VERIFY ? certs.self_key : certs.ec_key, TLS_V1_2);
	w->client_ctx = client_ctx(certs.ca, TLS_V1_2);
	w->opts.sni = "mx.test";
	w->opts.verify_name = "mx.test";
	loop_timer_arm(w->l, &w->watchdog, 20000, watchdog);
}

static void world_run(struct world *w)
{
	cr_assert_eq(conn_connect(&w->b.c, (struct sockaddr *)&w->addr, sizeof(w->addr), 5000), 0);
	loop_run(w->l);
	cr_assert_eq(w->a.released, 1, "a released once");
	cr_assert_eq(w->b.released, 1, "b released once");
	cr_assert_eq(w->b.connected, 1);
}

static void world_free(struct world *w)
{
	cr_assert_eq(loop_registered(w->l), 0, "every conn released its slot");
	loop_free(w->l);
	close(w->listen_fd);
	tls_ctx_unref(w->server_ctx);
	tls_ctx_unref(w->client_ctx);
	struct side *sides[] = { &w->a, &w->b };
	for (int i = 0; i < 2; i++) {
		buf_free(&sides[i]->clear);
		buf_free(&sides[i]->got);
	}
	buf_free(&w->a_saw);
	free(w->payload_a);
	free(w->payload_b);
}

/* 7: implicit TLS, a megabyte each way, close_notify on a graceful close. */
Test(tls_conn, implicit_tls_megabyte_each_way)
{
	struct world w;
	world_init(&w, SC_IMPLICIT);
	w.payload_len = MB;
	w.payload_a = pattern(MB, 1);
	w.payload_b = pattern(MB, 2);
	world_run(&w);
	cr_assert_eq(w.a.tls_ready, 1);
	cr_assert_eq(w.b.tls_ready, 1);
	cr_assert_eq(buf_used(&w.a.got), MB, "a got %zu", buf_used(&w.a.got));
	cr_assert(!memcmp(buf_head(&w.a.got), w.payload_b, MB), "b's megabyte intact");
	cr_assert_eq(buf_used(&w.b.got), MB, "b got %zu", buf_used(&w.b.got));
	cr_assert(!memcmp(buf_head(&w.b.got), w.payload_a, MB), "a's megabyte intact");
	cr_assert_eq(buf_used(&w.a.clear) + buf_used(&w.b.clear), 0, "no clear text");
	cr_assert_gt(w.a.c.bytes_out, MB, "ciphertext on the wire");
	cr_assert_eq(w.a.c.bytes_out, w.b.c.bytes_in, "everything a sent arrived");
	cr_assert_eq(w.b.c.bytes_out, w.a.c.bytes_in);
	cr_assert_eq(w.a.closed, 0, "a closed itself");
	cr_assert_eq(w.b.closed, 1, "b learns that a ended");
	cr_assert_eq(w.b.closed_err, 0, "a clean end");
	cr_assert_eq(w.b.closed_tls, TLS_OK);
	cr_assert(strstr(w.b.closed_text, "closed TLS"),
	          "b read a close_notify, not just a FIN: %s", w.b.closed_text);
	cr_assert_eq(conn_tls_error(&w.a.c), TLS_OK);
	world_free(&w);
}

/* 8: STARTTLS: the 220 in clear text before TLS, and the command pipelined
 * behind STARTTLS dropped, not read as if it came through TLS. */
Test(tls_conn, starttls_drops_pipelined_input)
{
	struct world w;
	world_init(&w, SC_STARTTLS);
	world_run(&w);
	cr_assert(strstr(buf_cstr(&w.a_saw), "injected"),
	          "the injected command arrived with STARTTLS (else this test proves nothing): %s",
	          buf_cstr(&w.a_saw));
	cr_assert_eq(buf_used(&w.b.clear), 8);
	cr_assert(!memcmp(buf_head(&w.b.clear), "220 go\r\n", 8), "the 220 came in clear text");
	cr_assert_eq(buf_used(&w.a.got), 12, "a got: %s", buf_cstr(&w.a.got));
	cr_assert(!memcmp(buf_head(&w.a.got), "EHLO after\r\n", 12), "only what came through TLS");
	cr_assert_eq(buf_used(&w.b.got), 8);
	cr_assert(!memcmp(buf_head(&w.b.got), "250 ok\r\n", 8));
	cr_assert_eq(w.a.tls_ready, 1);
	cr_assert_eq(w.b.tls_ready, 1);
	cr_assert_eq(w.a.closed, 0);
	cr_assert_eq(w.b.closed, 1);
	cr_assert_eq(w.b.closed_err, 0);
	world_free(&w);
}

/* 9: garbage at an implicit-TLS server: -EPROTO once, the TLS error kept
 * (not replaced by what later completions of the same garbage say), the
 * alert (when OpenSSL has one to say) sent before the conn closes. */
Test(tls_conn, garbage_fails_the_server)
{
	for (int alert = 0; alert < 2; alert++) {
		struct world w;
		world_init(&w, alert ? SC_GARBAGE_ALERT : SC_GARBAGE);
		world_run(&w);
		cr_assert_eq(w.a.closed, 1, "a is told once");
		cr_assert_eq(w.a.closed_err, -EPROTO);
		cr_assert_eq(w.a.closed_tls, TLS_E_HANDSHAKE, "%s", tls_error_name(w.a.closed_tls));
		cr_assert(strstr(w.a.closed_text,
		                 alert ? "excessive message size" : "wrong version number"),
		          "%s", w.a.closed_text);
		cr_assert_eq(conn_tls_error(&w.a.c), TLS_E_HANDSHAKE,
		             "the first failure is kept: %s",
		             tls_error_name(conn_tls_error(&w.a.c)));
		cr_assert_eq(w.a.tls_ready, 0);
		cr_assert_eq(buf_used(&w.a.got), 0, "no plaintext from garbage");
		if (alert)
			cr_assert(buf_used(&w.b.clear) == 7 && buf_head(&w.b.clear)[0] == 0x15,
			          "the alert reached b (%zu bytes)", buf_used(&w.b.clear));
		else
			cr_assert_eq(buf_used(&w.b.clear), 0);
		cr_assert_eq(w.b.closed, 1, "b sees the server go");
		cr_assert_eq(conn_tls_error(&w.b.c), TLS_OK, "b speaks clear text");
		world_free(&w);
	}
}

/* 9: a certificate the client refuses: the client fails with TLS_E_VERIFY,
 * its alert reaches the server, which fails too. */
Test(tls_conn, verify_failure_on_both_conns)
{
	struct world w;
	world_init(&w, SC_VERIFY);
	world_run(&w);
	cr_assert_eq(w.b.closed, 1);
	cr_assert_eq(w.b.closed_err, -EPROTO);
	cr_assert_eq(conn_tls_error(&w.b.c), TLS_E_VERIFY, "%s",
	             tls_error_name(conn_tls_error(&w.b.c)));
	cr_assert(strstr(w.b.closed_text, "self-signed"), "%s", w.b.closed_text);
	cr_assert_eq(w.a.closed, 1);
	cr_assert_eq(w.a.closed_err, -EPROTO);
	cr_assert_eq(conn_tls_error(&w.a.c), TLS_E_HANDSHAKE, "%s",
	             tls_error_name(conn_tls_error(&w.a.c)));
	cr_assert(strstr(w.a.closed_text, "alert"), "the client's alert arrived: %s",
	          w.a.closed_text);
	cr_assert_eq(w.a.tls_ready + w.b.tls_ready, 0);
	world_free(&w);
}
