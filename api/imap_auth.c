/* imap_auth.c - CAPABILITY, STARTTLS, LOGIN and AUTHENTICATE PLAIN (RFC
 * 3501 6.1-6.2, RFC 4959 SASL-IR, RFC 4616) for the IMAP server.
 *
 * STARTTLS: the tagged OK goes out in clear text, then the conn switches
 * to TLS and whatever the client pipelined behind the command is dropped
 * (the CVE-2011-0411 class). With [auth] require_tls, CAPABILITY says
 * LOGINDISABLED before TLS, and LOGIN and AUTHENTICATE get NO
 * [PRIVACYREQUIRED]. Passwords are checked on the auth threads
 * (base/auth.h); the session reads nothing until the answer. A wrong one
 * is answered NO [AUTHENTICATIONFAILED] after a delay that grows with the
 * address's recent failures; at [auth] max_failures the client gets BYE
 * and the address is refused for a while. A user with the right password
 * whom [mailbox] users does not name gets NO [AUTHORIZATIONFAILED].
 * Credentials are never logged, and wiped from our buffers once used.
 */
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>

#include "base/base64.h"
#include "base/log.h"
#include "base/util.h"
#include "imap_impl.h"

#define FAIL_DELAY_MS     1000 /* per recent failure, before the NO */
#define FAIL_DELAY_MAX_MS 5000

/* A check in flight: the request and whose it is. */
struct imap_auth {
	struct auth_req req;
	struct imap_session *s;
	const char *mech;
};

/* login_disabled - no password may be sent now (RFC 3501 LOGINDISABLED). */
static bool login_disabled(const struct imap_session *s)
{
	return !s->tls && imap_cfg(s)->require_tls;
}

void imap_capability(struct imap_session *s, struct buf *out)
{
	buf_puts(out, "CAPABILITY IMAP4rev1 LITERAL+ SASL-IR IDLE UIDPLUS UNSELECT");
	if (s->state != IMAP_NOTAUTH)
		return;
	if (imap_cfg(s)->tls && !s->tls)
		buf_puts(out, " STARTTLS");
	buf_puts(out, login_disabled(s) ? " LOGINDISABLED" : " AUTH=PLAIN");
}

void imap_cmd_capability(struct imap_session *s, struct imap_parser *ps)
{
	if (!imap_p_eol(ps)) {
		imap_bad(s, "CAPABILITY takes no arguments");
		return;
	}
	struct buf *out = imap_out(s);
	buf_puts(out, "* ");
	imap_capability(s, out);
	buf_puts(out, "\r\n");
	imap_done(s, "OK CAPABILITY completed");
}

/* ---- STARTTLS ----------------------------------------------------------- */

void imap_cmd_starttls(struct imap_session *s, struct imap_parser *ps)
{
	if (!imap_p_eol(ps)) {
		imap_bad(s, "STARTTLS takes no arguments");
		return;
	}
	if (s->tls) {
		imap_bad(s, "TLS is already active");
		return;
	}
	struct tls_ctx *ctx = imap_cfg(s)->tls;
	if (!ctx) {
		imap_done(s, "NO STARTTLS is not available");
		return;
	}
	imap_done(s, "OK Begin TLS negotiation now");
	conn_tls_server(&s->conn, ctx); /* drops the input read so far */
	imap_frame_reset(&s->frame);
	s->stop_reading = true;
}

void imap_tls_ready(struct conn *c)
{
	struct imap_session *s = RP_CONTAINER_OF(c, struct imap_session, conn);
	char desc[128];
	s->tls = true;
	tls_describe(c->tls, desc, sizeof(desc));
	log_debug("imap %s: TLS %s%s", s->peer, desc, s->implicit_tls ? " (implicit)" : "");
}

/* ---- checks ------------------------------------------------------------- */

/* fail_reply - the delayed NO; then commands again. */
static void fail_reply(struct loop_timer *t)
{
	struct imap_session *s = RP_CONTAINER_OF(t, struct imap_session, delay);
	imap_done(s, "NO [AUTHENTICATIONFAILED] Authentication failed");
}

/* failed - a wrong name or password (or undecodable credentials): counted
 * per address; slowed, and refused past the limit. */
static void failed(struct imap_session *s, const char *mech, const char *user)
{
	bool blocked;
	char quoted[AUTH_NAME_MAX * 2 + 8];
	unsigned n = auth_limiter_fail(s->srv->p.limiter, (const struct sockaddr *)&s->peer_ss,
	                               rp_mono_ms(), &blocked);
	log_quote(quoted, sizeof(quoted), user, strlen(user));
	log_warn("imap %s: authentication failed method=%s user=%s failures=%u", s->peer, mech,
	         quoted, n);
	if (blocked) {
		log_warn("imap %s: too many authentication failures; refusing the address for a "
		         "while",
		         s->peer);
		imap_bye(s, "Too many authentication failures");
		return;
	}
	imap_set_wait(s, IW_CHECK);
	uint64_t delay = RP_MIN((uint64_t)n * FAIL_DELAY_MS, (uint64_t)FAIL_DELAY_MAX_MS);
	loop_timer_arm(s->srv->p.loop, &s->delay, delay, fail_reply);
}

/* logged_in - the password was right. */
static void logged_in(struct imap_session *s, const char *mech, const char *user)
{
	char quoted[AUTH_NAME_MAX * 2 + 8];
	log_quote(quoted, sizeof(quoted), user, strlen(user));
	if (!mailbox_user_allowed(imap_cfg(s), user)) {
		log_warn("imap %s: user=%s is not in [mailbox] users", s->peer, quoted);
		imap_done(s, "NO [AUTHORIZATIONFAILED] Not allowed to read this mailbox");
		return;
	}
	s->user = xstrdup(user);
	imap_set_state(s, IMAP_AUTH);
	log_info("imap %s: logged in method=%s user=%s%s", s->peer, mech, quoted,
	         s->tls ? " tls=yes" : "");
	struct buf cap = { 0 };
	imap_capability(s, &cap);
	imap_done(s, "OK [%s] Logged in", buf_cstr(&cap));
	buf_free(&cap);
}

/* auth_done - the checker's answer, on the session's loop. */
static void auth_done(struct mq_item *item, void *ctx)
{
	struct imap_auth *a = RP_CONTAINER_OF(item, struct imap_auth, req.item);
	struct imap_session *s = a->s;
	(void)ctx;
	char user[AUTH_NAME_MAX + 1];
	snprintf(user, sizeof(user), "%s", a->req.user);
	bool ok = a->req.ok;
	const char *mech = a->mech;
	OPENSSL_cleanse(&a->req, sizeof(a->req));
	free(a);
	if (!imap_request_done(s) || conn_closing(&s->conn))
		return;
	if (ok)
		logged_in(s, mech, user);
	else
		failed(s, mech, user);
}

/* check - credentials decoded: the hash runs on the auth threads. A NUL
 * in the name or the password fails (crypt(3) would stop at it). */
static void check(struct imap_session *s, const char *mech, const char *user, size_t ulen,
                  const char *pass, size_t plen)
{
	if (!imap_cfg(s)->users) {
		imap_done(s, "NO [UNAVAILABLE] No users are configured");
		return;
	}
	if (!ulen || ulen > AUTH_NAME_MAX || plen > AUTH_PASS_MAX || memchr(user, '\0', ulen) ||
	    memchr(pass, '\0', plen)) {
		char shown[AUTH_NAME_MAX + 1];
		size_t n = RP_MIN(ulen, (size_t)AUTH_NAME_MAX);
		const char *nul = memchr(user, '\0', n);
		snprintf(shown, sizeof(shown), "%.*s", (int)(nul ? (size_t)(nul - user) : n), user);
		failed(s, mech, shown);
		return;
	}
	struct imap_auth *a = xcalloc(1, sizeof(*a));
	a->s = s;
	a->mech = mech;
	s->inflight++;
	imap_set_wait(s, IW_CHECK);
	auth_check(s->srv->p.checker, &a->req, imap_cfg(s)->users, user, ulen, pass, plen,
	           loop_inbox(s->srv->p.loop), auth_done);
}

/* ---- LOGIN -------------------------------------------------------------- */

void imap_cmd_login(struct imap_session *s, struct imap_parser *ps)
{
	struct imap_str user, pass;
	if (!imap_p_astring(ps, &user) || !imap_p_sp(ps) || !imap_p_astring(ps, &pass) ||
	    !imap_p_eol(ps)) {
		/* Whatever it held after the tag may be a password. */
		char *rest = s->tag.p + s->tag.n;
		OPENSSL_cleanse(rest, (size_t)(buf_head(&s->cmd) + buf_used(&s->cmd) - rest));
		imap_bad(s, "Syntax: LOGIN user password");
		return;
	}
	if (login_disabled(s)) {
		OPENSSL_cleanse(pass.p, pass.n);
		imap_done(s, "NO [PRIVACYREQUIRED] LOGIN is disabled until STARTTLS");
		return;
	}
	check(s, "LOGIN", user.p, user.n, pass.p, pass.n);
	OPENSSL_cleanse(pass.p, pass.n);
}

/* ---- AUTHENTICATE PLAIN ------------------------------------------------- */

/* plain - a PLAIN response (RFC 4616) checked. */
static void plain(struct imap_session *s, const char *p, size_t n)
{
	struct buf b = { 0 };
	struct auth_plain a;
	switch (auth_plain_decode(p, n, &b, &a)) {
	case AUTH_PLAIN_BAD_B64:
		imap_bad(s, "Invalid base64 in the PLAIN response");
		break;
	case AUTH_PLAIN_MALFORMED:
		imap_bad(s, "Malformed PLAIN response");
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

void imap_cmd_authenticate(struct imap_session *s, struct imap_parser *ps)
{
	struct imap_str mech, ir = { 0 };
	if (!imap_p_atom(ps, &mech) || (imap_p_sp(ps) && !imap_p_atom(ps, &ir)) ||
	    !imap_p_eol(ps)) {
		imap_bad(s, "Syntax: AUTHENTICATE mechanism [initial-response]");
		return;
	}
	if (!imap_str_is(&mech, "PLAIN")) {
		imap_done(s, "NO Unsupported authentication mechanism");
		return;
	}
	if (login_disabled(s)) {
		imap_done(s, "NO [PRIVACYREQUIRED] Authentication is disabled until STARTTLS");
		return;
	}
	if (ir.p) { /* SASL-IR (RFC 4959) */
		plain(s, ir.p, ir.n);
		OPENSSL_cleanse(ir.p, ir.n);
		return;
	}
	buf_puts(imap_out(s), "+ \r\n");
	imap_flush(s);
	imap_set_wait(s, IW_AUTH_LINE);
}

void imap_auth_line(struct imap_session *s, char *line, size_t len)
{
	if (len == 1 && line[0] == '*')
		imap_bad(s, "AUTHENTICATE cancelled");
	else
		plain(s, line, len);
	OPENSSL_cleanse(line, len);
}
