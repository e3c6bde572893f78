/* test_tls_cas.c - base/tls client contexts without ca_file trust the
 * system's CAs (SSL_CERT_FILE here): a server whose chain ends at one of
 * them verifies, a self-signed one does not. A server and a client talk
 * through buffers.
 */
#include <criterion/criterion.h>
#include <stdlib.h>

#include "base/buf.h"
#include "base/tls.h"
#include "support.h"

static char dir[64];
static struct test_certs certs;

static void setup(void)
{
	test_tmpdir(dir, sizeof(dir), "tls_cas");
	test_certs_make(&certs, dir);
	setenv("SSL_CERT_FILE", certs.ca, 1); /* the "system" bundle: our CA */
	setenv("SSL_CERT_DIR", dir, 1);       /* no hashed names in it */
}

static void teardown(void)
{
	test_rmdir(dir);
}

TestSuite(tls_cas, .init = setup, .fini = teardown, .timeout = 60);

/* handshake - a client without ca_file verifying "mx.test" against a
 * server with cert/key, through buffers; returns the client's error. */
static enum tls_error handshake(const char *cert, const char *key, bool *verified)
{
	char err[256];
	struct tls_server_config scfg = { .cert_file = cert, .key_file = key };
	struct tls_client_config ccfg = { .ca_file = NULL };
	struct tls_ctx *sc = tls_ctx_new_server(&scfg, err, sizeof(err));
	cr_assert_not_null(sc, "%s", err);
	struct tls_ctx *cc = tls_ctx_new_client(&ccfg, err, sizeof(err));
	cr_assert_not_null(cc, "%s", err);
	struct tls_client_opts o = { .verify_name = "mx.test" };
	struct tls *cl = tls_new(cc, &o), *sv = tls_new(sc, NULL);
	struct buf c_out = { 0 }, s_out = { 0 }, plain = { 0 };
	enum tls_error ce = tls_start(cl, &c_out);
	for (int round = 0; round < 10 && !ce && (buf_used(&c_out) || buf_used(&s_out)); round++) {
		unsigned ev;
		struct buf c2s = c_out, s2c = s_out;
		c_out = (struct buf){ 0 };
		s_out = (struct buf){ 0 };
		if (buf_used(&c2s))
			tls_input(sv, buf_head(&c2s), buf_used(&c2s), &plain, &s_out, &ev);
		if (buf_used(&s2c))
			ce = tls_input(cl, buf_head(&s2c), buf_used(&s2c), &plain, &c_out, &ev);
		buf_free(&c2s);
		buf_free(&s2c);
	}
	*verified = !ce && tls_verified(cl);
	tls_free(cl);
	tls_free(sv);
	buf_free(&c_out);
	buf_free(&s_out);
	buf_free(&plain);
	tls_ctx_unref(cc);
	tls_ctx_unref(sc);
	return ce;
}

Test(tls_cas, system_bundle_verifies)
{
	bool verified = false;
	enum tls_error e = handshake(certs.ec_cert, certs.ec_key, &verified);
	cr_assert_eq(e, TLS_OK, "%s", tls_error_name(e));
	cr_assert(verified, "not verified with the system CAs");
}

Test(tls_cas, self_signed_refused)
{
	bool verified = true;
	enum tls_error e = handshake(certs.self_cert, certs.self_key, &verified);
	cr_assert_eq(e, TLS_E_VERIFY, "%s", tls_error_name(e));
	cr_assert_not(verified);
}
