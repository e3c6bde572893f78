/* smtp_server_auth.c - STARTTLS (RFC 3207) and AUTH PLAIN/LOGIN (RFC 4954,
 * RFC 4616) for the SMTP server.
 *
 * STARTTLS: the 220 goes out in clear text, then the conn switches to TLS;
 * whatever the client pipelined behind STARTTLS is dropped with the rest
 * of the input buffer (the CVE-2011-0411 class), and the session starts
 * over at EHLO. AUTH: with [auth] require_tls it is neither offered nor
 * accepted before TLS (538 5.7.11). The password is checked on the auth
 * threads (base/auth.h): the session waits in SS_AUTH, reading nothing,
 * until the answer comes. A wrong password is answered 535 5.7.8 after a
 * delay that grows with the address's recent failures; at [auth]
 * max_failures in a minute the client gets 421 4.7.0 and the address is
 * refused for a back-off period. Credentials are never logged.
 */
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>

#include "base/base64.h"
#include "base/log.h"
#include "base/util.h"
#include "smtp_server_impl.h"

#define FAIL_DELAY_MS     1000 /* per recent failure, before the 535 */
#define FAIL_DELAY_MAX_MS 5000

/* A check in flight: the request and whose it is. */
struct srv_auth {
	struct auth_req req;
	struct srv_session *s;
	const char *mech;
};

/* auth_allowed - AUTH may be offered and used now. */
static bool auth_allowed(const struct srv_session *s)
{
	return s->srv->users && (s->tls || !srv_cfg(s)->auth_require_tls);
}

void srv_ehlo_extensions(struct srv_session *s, struct buf *out)
{
	if (s->srv->tls && !s->tls)
		buf_puts(out, "250-STARTTLS\r\n");
	if (auth_allowed(s) && !s->user[0])
		buf_puts(out, "250-AUTH PLAIN LOGIN\r\n");
}

/* ---- STARTTLS ---------------------------------------------------------- */

void srv_cmd_starttls(struct srv_session *s, const struct smtp_cmd *c)
{
	if (c->arg_len) {
		srv_error(s, "501 5.5.4 Syntax: STARTTLS");
		return;
	}
	if (!s->srv->tls) {
		srv_error(s, "502 5.5.1 Error: command not implemented");
		return;
	}
	if (s->tls) {
		srv_error(s, "503 5.5.1 Error: TLS already active");
		return;
	}
	if (s->state != SS_GREETING && s->state != SS_IDLE) {
		srv_error(s, "503 5.5.1 Error: MAIL transaction in progress");
		return;
	}
	srv_reply(s, "220 2.0.0 Ready to start TLS");
	conn_tls_server(&s->conn, s->srv->tls);
	s->starttls_now = true;
	/* RFC 3207 4.2: forget everything learned before TLS. */
	s->esmtp = false;
	snprintf(s->helo, sizeof(s->helo), "unknown");
	s->user[0] = '\0';
	srv_tx_reset(s);
	srv_set_state(s, SS_GREETING);
}

void srv_tls_ready(struct conn *c)
{
	struct srv_session *s = RP_CONTAINER_OF(c, struct srv_session, conn);
	s->tls = true;
	s->srv->tls_sessions++;
	tls_describe(c->tls, s->tls_desc, sizeof(s->tls_desc));
	log_debug("smtpd %s: TLS %s%s", s->peer, s->tls_desc, s->implicit_tls ? " (implicit)" : "");
}

/* ---- AUTH -------------------------------------------------------------- */

/* auth_end - the dialogue is over (answered or aborted). */
static void auth_end(struct srv_session *s)
{
	s->auth_step = AUTH_NONE;
	s->login_user[0] = '\0';
}

/* fail_reply - the delayed 535; then commands again. */
static void fail_reply(struct loop_timer *t)
{
	struct srv_session *s = RP_CONTAINER_OF(t, struct srv_session, fail_timer);
	srv_reply(s, "535 5.7.8 Error: authentication failed");
	srv_set_state(s, SS_IDLE);
	srv_resume(s);
}

/* failed - a wrong name or password (or undecodable credentials): counted
 * per address; slowed, and refused past the limit. */
static void failed(struct srv_session *s, const char *mech, const char *user)
{
	struct smtpd *srv = s->srv;
	bool blocked;
	char quoted[AUTH_NAME_MAX * 2 + 8];
	srv->auth_failed++;
	unsigned n = auth_limiter_fail(srv->limiter, (const struct sockaddr *)&s->peer_ss,
	                               rp_mono_ms(), &blocked);
	log_quote(quoted, sizeof(quoted), user, strlen(user));
	log_warn("smtpd %s: authentication failed method=%s user=%s failures=%u", s->peer, mech,
	         quoted, n);
	auth_end(s);
	if (blocked) {
		char text[300];
		log_warn(
		    "smtpd %s: too many authentication failures; refusing the address for a while",
		    s->peer);
		snprintf(text, sizeof(text), "421 4.7.0 %s Error: too many authentication failures",
		         srv_cfg(s)->hostname);
		srv_close_with(s, text);
		return;
	}
	srv_set_state(s, SS_AUTH);
	/* Its own timer: input arriving meanwhile re-arms the idle one. */
	uint64_t delay = RP_MIN((uint64_t)n * FAIL_DELAY_MS, (uint64_t)FAIL_DELAY_MAX_MS);
	loop_timer_arm(srv->loop, &s->fail_timer, delay, fail_reply);
}

/* auth_done - the checker's answer, on the session's loop. */
static void auth_done(struct mq_item *item, void *ctx)
{
	struct srv_auth *a = RP_CONTAINER_OF(item, struct srv_auth, req.item);
	struct srv_session *s = a->s;
	(void)ctx;
	char user[AUTH_NAME_MAX + 1];
	snprintf(user, sizeof(user), "%s", a->req.user);
	bool ok = a->req.ok;
	const char *mech = a->mech;
	OPENSSL_cleanse(&a->req, sizeof(a->req));
	free(a);
	s->auth_inflight = false;
	if (s->released) {
		srv_may_free(s);
		return;
	}
	if (!ok) {
		failed(s, mech, user);
		return;
	}
	s->srv->auth_ok++;
	snprintf(s->user, sizeof(s->user), "%s", user);
	char quoted[AUTH_NAME_MAX * 2 + 8];
	log_quote(quoted, sizeof(quoted), user, strlen(user));
	log_info("smtpd %s: authenticated method=%s user=%s%s%s", s->peer, mech, quoted,
	         s->tls ? " tls=" : "", s->tls ? s->tls_desc : "");
	auth_end(s);
	srv_reply(s, "235 2.7.0 Authentication successful");
	srv_set_state(s, SS_IDLE);
	srv_resume(s);
}

/* check - credentials decoded: the hash runs on the auth threads. A NUL
 * in the name or the password fails: RFC 4616 allows none, and crypt(3)
 * would stop at it, so "password NUL anything" would pass for "password". */
static void check(struct srv_session *s, const char *mech, const char *user, size_t ulen,
                  const char *pass, size_t plen)
{
	if (!ulen || ulen > AUTH_NAME_MAX || plen > AUTH_PASS_MAX || memchr(user, '\0', ulen) ||
	    memchr(pass, '\0', plen)) {
		char shown[AUTH_NAME_MAX + 1];
		snprintf(shown, sizeof(shown), "%.*s", (int)RP_MIN(ulen, (size_t)AUTH_NAME_MAX),
		         user);
		failed(s, mech, shown);
		return;
	}
	struct srv_auth *a = xcalloc(1, sizeof(*a));
	a->s = s;
	a->mech = mech;
	s->auth_inflight = true;
	s->auth_step = AUTH_NONE;
	srv_set_state(s, SS_AUTH);
	auth_check(s->srv->checker, &a->req, s->srv->users, user, ulen, pass, plen,
	           loop_inbox(s->srv->loop), auth_done);
}

/* decode - a base64 response into out; false (and a 501) when it is not. */
static bool decode(struct srv_session *s, const char *p, size_t n, struct buf *out)
{
	if (base64_decode(p, n, out) && buf_used(out) <= 2 * AUTH_NAME_MAX + AUTH_PASS_MAX + 2)
		return true;
	auth_wipe(out);
	auth_end(s);
	srv_error(s, "501 5.5.2 Error: cannot decode the response");
	return false;
}

/* plain - a PLAIN response (RFC 4616) checked. */
static void plain(struct srv_session *s, const char *p, size_t n)
{
	struct buf b = { 0 };
	struct auth_plain a;
	switch (auth_plain_decode(p, n, &b, &a)) {
	case AUTH_PLAIN_BAD_B64:
		auth_end(s);
		srv_error(s, "501 5.5.2 Error: cannot decode the response");
		break;
	case AUTH_PLAIN_MALFORMED:
		auth_end(s);
		srv_error(s, "501 5.5.2 Error: malformed PLAIN response");
		break;
	case AUTH_PLAIN_PROXY: {
		char u[AUTH_NAME_MAX + 1];
		snprintf(u, sizeof(u), "%.*s", (int)RP_MIN(a.clen, (size_t)AUTH_NAME_MAX), a.cid);
		failed(s, "PLAIN", u);
		break;
	}
	case AUTH_PLAIN_OK:
		check(s, "PLAIN", a.cid, a.clen, a.pw, a.plen);
		break;
	}
	auth_wipe(&b);
}

/* login_user - AUTH LOGIN's user name; the password is asked for next. */
static void login_user(struct srv_session *s, const char *p, size_t n)
{
	struct buf b = { 0 };
	if (!decode(s, p, n, &b))
		return;
	/* A name check() must refuse (a NUL, too long) would be cut here to
	 * one it takes: keep none instead, and it fails after the password,
	 * like any wrong name. */
	size_t len = buf_used(&b);
	if (len > AUTH_NAME_MAX || memchr(buf_head(&b), '\0', len))
		len = 0;
	snprintf(s->login_user, sizeof(s->login_user), "%.*s", (int)len, buf_head(&b));
	auth_wipe(&b);
	s->auth_step = AUTH_LOGIN_PASS;
	srv_reply(s, "334 UGFzc3dvcmQ6"); /* "Password:" */
}

/* login_pass - AUTH LOGIN's password. */
static void login_pass(struct srv_session *s, const char *p, size_t n)
{
	struct buf b = { 0 };
	if (!decode(s, p, n, &b))
		return;
	char user[AUTH_NAME_MAX + 1];
	snprintf(user, sizeof(user), "%s", s->login_user);
	check(s, "LOGIN", user, strlen(user), buf_head(&b), buf_used(&b));
	auth_wipe(&b);
}

void srv_cmd_auth(struct srv_session *s, const struct smtp_cmd *c)
{
	if (!s->srv->users) {
		srv_error(s, "502 5.5.1 Error: authentication not enabled");
		return;
	}
	if (s->state == SS_GREETING || !s->esmtp) {
		srv_error(s, "503 5.5.1 Error: send EHLO first");
		return;
	}
	if (s->user[0]) {
		srv_error(s, "503 5.5.1 Error: already authenticated");
		return;
	}
	if (s->state != SS_IDLE) {
		srv_error(s, "503 5.5.1 Error: MAIL transaction in progress");
		return;
	}
	if (!auth_allowed(s)) {
		srv_error(s,
		          "538 5.7.11 Encryption required for requested authentication mechanism");
		return;
	}
	const char *sp = memchr(c->arg, ' ', c->arg_len);
	size_t mlen = sp ? (size_t)(sp - c->arg) : c->arg_len;
	const char *ir = sp ? sp + 1 : NULL; /* the initial response */
	size_t irlen = sp ? c->arg_len - mlen - 1 : 0;
	if (mlen == 5 && !strncasecmp(c->arg, "PLAIN", 5)) {
		if (ir) {
			plain(s, ir, irlen);
			return;
		}
		s->auth_step = AUTH_PLAIN;
		srv_reply(s, "334 ");
		return;
	}
	if (mlen == 5 && !strncasecmp(c->arg, "LOGIN", 5)) {
		if (ir) {
			login_user(s, ir, irlen);
			return;
		}
		s->auth_step = AUTH_LOGIN_USER;
		srv_reply(s, "334 VXNlcm5hbWU6"); /* "Username:" */
		return;
	}
	srv_error(s, mlen ? "504 5.5.4 Error: unsupported authentication mechanism"
	                  : "501 5.5.4 Syntax: AUTH mechanism [initial-response]");
}

void srv_auth_response(struct srv_session *s, const char *line, size_t len)
{
	if (len == 1 && line[0] == '*') {
		auth_end(s);
		srv_error(s, "501 5.7.0 Authentication aborted");
		return;
	}
	switch (s->auth_step) {
	case AUTH_PLAIN:
		plain(s, line, len);
		return;
	case AUTH_LOGIN_USER:
		login_user(s, line, len);
		return;
	case AUTH_LOGIN_PASS:
		login_pass(s, line, len);
		return;
	case AUTH_NONE:
		break;
	}
	rp_panic("AUTH response in step %d", (int)s->auth_step);
}
