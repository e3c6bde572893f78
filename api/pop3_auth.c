/* pop3_auth.c - the AUTHORIZATION state: CAPA (RFC 2449), STLS (RFC
 * 2595), USER/PASS (RFC 1939) and AUTH PLAIN (RFC 5034, RFC 4616); the
 * maildrop lock and the snapshot taken at login.
 *
 * Logins are checked against [auth] users on the auth threads
 * (base/auth.h): the session waits in P3_AUTH_WAIT, reading nothing,
 * until the answer comes; then [mailbox] users decides whether that user
 * may read the mailbox. With [auth] require_tls no credential is taken
 * before TLS (USER, PASS and AUTH get -ERR [AUTH], and CAPA offers
 * neither USER nor SASL until then, as RFC 2595 section 4 allows). A
 * wrong password is counted per client address (the limiter every
 * protocol shares), answered -ERR [AUTH] after a delay that grows with
 * the address's recent failures, and past [auth] max_failures the
 * session is closed. Passwords are never logged.
 *
 * The maildrop lock (RFC 1939 section 8: exclusive access): one POP3
 * session in the whole process holds the bounce mailbox from login to
 * the end of its UPDATE; a second login gets -ERR [IN-USE] (RFC 2449
 * section 8.1.2) and may try again. IMAP sessions do not take it: the
 * store copes with concurrent changes (a message expunged elsewhere is
 * reported missing by RETR, skipped by the final expunge).
 */
#include <openssl/crypto.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>

#include "base/base64.h"
#include "base/log.h"
#include "base/util.h"
#include "mailbox.h"
#include "pop3_impl.h"

#define FAIL_DELAY_MS     1000 /* per recent failure, before the -ERR */
#define FAIL_DELAY_MAX_MS 5000
#define LOAD_SLICE_MSGS   2000       /* snapshot: messages per read transaction */
#define LOAD_SLICE_BYTES  (8u << 20) /* ... and bytes measured per slice */

/* The one maildrop, shared by every shard's POP3 sessions. */
static atomic_bool maildrop_locked;

/* A password check in flight, and whose it is. */
struct pop3_auth {
	struct auth_req req;
	struct pop3_session *s;
	const char *mech;
};

static void load_slice(struct pop3_session *s);

/* login_allowed - credentials may be offered and taken now. */
static bool login_allowed(const struct pop3_session *s)
{
	const struct mailbox_config *cfg = pop3_cfg(s);
	return cfg->users && (s->tls || !cfg->require_tls);
}

void pop3_cmd_capa(struct pop3_session *s)
{
	const struct mailbox_config *cfg = pop3_cfg(s);
	bool auth = s->state == P3_AUTHORIZATION;
	pop3_reply(s, "+OK Capability list follows");
	pop3_reply(s, "TOP");
	pop3_reply(s, "UIDL");
	pop3_reply(s, "RESP-CODES");
	pop3_reply(s, "AUTH-RESP-CODE");
	pop3_reply(s, "PIPELINING");
	if (auth && login_allowed(s)) {
		pop3_reply(s, "USER");
		pop3_reply(s, "SASL PLAIN");
	}
	if (auth && cfg->tls && !s->tls && !s->implicit_tls)
		pop3_reply(s, "STLS");
	pop3_reply(s, "IMPLEMENTATION ringpost");
	pop3_reply(s, ".");
}

/* ---- STLS --------------------------------------------------------------- */

static void cmd_stls(struct pop3_session *s, const struct pop3_cmd *c)
{
	struct tls_ctx *tls = pop3_cfg(s)->tls;
	if (c->arg_len) {
		pop3_error(s, "-ERR syntax: STLS");
		return;
	}
	if (!tls) {
		pop3_error(s, "-ERR STLS is not available");
		return;
	}
	if (s->tls || s->implicit_tls) {
		pop3_error(s, "-ERR TLS is already active");
		return;
	}
	pop3_reply(s, "+OK Begin TLS negotiation");
	conn_tls_server(&s->conn, tls);
	s->stls_now = true;
	/* RFC 2595 4: forget what was said before TLS. */
	s->have_user = false;
	s->user[0] = '\0';
}

void pop3_tls_ready(struct conn *c)
{
	struct pop3_session *s = c->owner;
	s->tls = true;
	tls_describe(c->tls, s->tls_desc, sizeof(s->tls_desc));
	log_debug("pop3 %s: TLS %s%s", s->peer, s->tls_desc, s->implicit_tls ? " (implicit)" : "");
}

/* ---- the lock ------------------------------------------------------------ */

static bool lock_try(struct pop3_session *s)
{
	bool expected = false;
	if (!atomic_compare_exchange_strong(&maildrop_locked, &expected, true))
		return false;
	s->locked = true;
	return true;
}

void pop3_unlock(struct pop3_session *s)
{
	if (!s->locked)
		return;
	s->locked = false;
	atomic_store(&maildrop_locked, false);
}

/* ---- failures ------------------------------------------------------------- */

/* fail_reply - the delayed -ERR; then commands again. */
static void fail_reply(struct loop_timer *t)
{
	struct pop3_session *s = RP_CONTAINER_OF(t, struct pop3_session, fail_timer);
	pop3_reply(s, "-ERR [AUTH] invalid user name or password");
	pop3_set_state(s, P3_AUTHORIZATION);
	pop3_resume(s);
}

void pop3_login_stop(struct pop3_session *s)
{
	loop_timer_disarm(s->srv->p.loop, &s->fail_timer);
}

/* failed - a wrong name or password (or unusable credentials): counted
 * per address; slowed, and the session closed past the limit. */
static void failed(struct pop3_session *s, const char *mech, const char *user, size_t ulen)
{
	struct pop3_server *srv = s->srv;
	bool blocked;
	char quoted[AUTH_NAME_MAX * 2 + 8];
	unsigned n = auth_limiter_fail(srv->p.limiter, (const struct sockaddr *)&s->peer_ss,
	                               rp_mono_ms(), &blocked);
	log_quote(quoted, sizeof(quoted), user, RP_MIN(ulen, (size_t)AUTH_NAME_MAX));
	log_warn("pop3 %s: authentication failed method=%s user=%s failures=%u", s->peer, mech,
	         quoted, n);
	if (blocked) {
		log_warn("pop3 %s: too many authentication failures; refusing the address for a "
		         "while",
		         s->peer);
		pop3_close_with(s, "-ERR [AUTH] authentication failed; too many failures, try "
		                   "again later");
		return;
	}
	pop3_set_state(s, P3_AUTH_WAIT);
	/* Its own timer: input arriving meanwhile re-arms the idle one. */
	uint64_t delay = RP_MIN((uint64_t)n * FAIL_DELAY_MS, (uint64_t)FAIL_DELAY_MAX_MS);
	loop_timer_arm(srv->p.loop, &s->fail_timer, delay, fail_reply);
}

/* ---- the login --------------------------------------------------------------- */

/* refuse_login - the password was right but the mailbox stays closed. */
static void refuse_login(struct pop3_session *s, const char *text)
{
	pop3_reply(s, "%s", text);
	pop3_set_state(s, P3_AUTHORIZATION);
	pop3_resume(s);
}

/* logged_in - the password is right: [mailbox] users, the lock, then the
 * snapshot. */
static void logged_in(struct pop3_session *s, const char *user, const char *mech)
{
	char quoted[AUTH_NAME_MAX * 2 + 8];
	log_quote(quoted, sizeof(quoted), user, strlen(user));
	if (!mailbox_user_allowed(pop3_cfg(s), user)) {
		log_warn("pop3 %s: user=%s may not read the mailbox ([mailbox] users)", s->peer,
		         quoted);
		refuse_login(s, "-ERR [AUTH] this user may not read the bounce mailbox");
		return;
	}
	if (!lock_try(s)) {
		log_info("pop3 %s: user=%s: the mailbox is in use by another POP3 session", s->peer,
		         quoted);
		refuse_login(s, "-ERR [IN-USE] the mailbox is in use by another POP3 session, try "
		                "again later");
		return;
	}
	snprintf(s->user, sizeof(s->user), "%s", user);
	s->mech = mech;
	s->load_from = 0;
	s->nmsgs = 0;
	pop3_set_state(s, P3_LOADING);
	load_slice(s);
}

/* auth_done - the checker's answer, on the session's loop. */
static void auth_done(struct mq_item *item, void *ctx)
{
	struct pop3_auth *a = RP_CONTAINER_OF(item, struct pop3_auth, req.item);
	struct pop3_session *s = a->s;
	(void)ctx;
	char user[AUTH_NAME_MAX + 1];
	snprintf(user, sizeof(user), "%s", a->req.user);
	bool ok = a->req.ok;
	const char *mech = a->mech;
	OPENSSL_cleanse(&a->req, sizeof(a->req));
	free(a);
	s->auth_inflight = false;
	if (s->released) {
		pop3_may_free(s);
		return;
	}
	if (s->shutdown) {
		pop3_resume(s); /* says goodbye */
		return;
	}
	if (!ok) {
		failed(s, mech, user, strlen(user));
		return;
	}
	logged_in(s, user, mech);
}

/* check - credentials in hand: the hash runs on the auth threads. A NUL
 * in the name or the password fails: crypt(3) would stop at it, so
 * "password NUL anything" would pass for "password". */
static void check(struct pop3_session *s, const char *mech, const char *user, size_t ulen,
                  const char *pass, size_t plen)
{
	struct pop3_server *srv = s->srv;
	uint64_t left;
	if (auth_limiter_blocked(srv->p.limiter, (const struct sockaddr *)&s->peer_ss, rp_mono_ms(),
	                         &left)) {
		pop3_close_with(s, "-ERR [AUTH] too many authentication failures, try again later");
		return;
	}
	if (!ulen || ulen > AUTH_NAME_MAX || plen > AUTH_PASS_MAX || memchr(user, '\0', ulen) ||
	    memchr(pass, '\0', plen) || !pop3_cfg(s)->users) {
		failed(s, mech, user, ulen);
		return;
	}
	struct pop3_auth *a = xcalloc(1, sizeof(*a));
	a->s = s;
	a->mech = mech;
	s->auth_inflight = true;
	pop3_set_state(s, P3_AUTH_WAIT);
	auth_check(srv->p.checker, &a->req, pop3_cfg(s)->users, user, ulen, pass, plen,
	           loop_inbox(srv->p.loop), auth_done);
}

/* credentials_refused - USER, PASS or AUTH where no login can happen now. */
static bool credentials_refused(struct pop3_session *s)
{
	if (login_allowed(s))
		return false;
	if (!pop3_cfg(s)->users)
		pop3_error(s, "-ERR [AUTH] no user may log in here");
	else if (pop3_cfg(s)->tls)
		pop3_error(s, "-ERR [AUTH] plain-text login refused: send STLS first");
	else
		pop3_error(s, "-ERR [AUTH] plain-text login refused: use TLS");
	return true;
}

static void cmd_user(struct pop3_session *s, const struct pop3_cmd *c)
{
	if (credentials_refused(s))
		return;
	if (!c->arg_len) {
		pop3_error(s, "-ERR syntax: USER name");
		return;
	}
	/* A name check() must refuse (a NUL, too long) would be cut here to
	 * one it takes: keep none instead, and it fails after PASS. */
	size_t len = c->arg_len;
	if (len > AUTH_NAME_MAX || memchr(c->arg, '\0', len))
		len = 0;
	snprintf(s->user, sizeof(s->user), "%.*s", (int)len, c->arg);
	s->have_user = true;
	pop3_reply(s, "+OK send PASS");
}

static void cmd_pass(struct pop3_session *s, const struct pop3_cmd *c)
{
	if (credentials_refused(s))
		return;
	if (!s->have_user) {
		pop3_error(s, "-ERR send USER first");
		return;
	}
	s->have_user = false;
	char user[AUTH_NAME_MAX + 1];
	snprintf(user, sizeof(user), "%s", s->user);
	s->user[0] = '\0';
	check(s, "USER", user, strlen(user), c->arg, c->arg_len);
}

/* ---- AUTH PLAIN ----------------------------------------------------------------- */

/* plain - a PLAIN response (RFC 4616) checked. */
static void plain(struct pop3_session *s, const char *p, size_t n)
{
	struct buf b = { 0 };
	struct auth_plain a;
	switch (auth_plain_decode(p, n, &b, &a)) {
	case AUTH_PLAIN_BAD_B64:
		pop3_error(s, "-ERR cannot decode the AUTH response");
		break;
	case AUTH_PLAIN_MALFORMED:
		pop3_error(s, "-ERR malformed PLAIN response");
		break;
	case AUTH_PLAIN_PROXY:
		failed(s, "PLAIN", a.cid, a.clen);
		break;
	case AUTH_PLAIN_OK:
		check(s, "PLAIN", a.cid, a.clen, a.pw, a.plen);
		break;
	}
	auth_wipe(&b);
}

static void cmd_auth(struct pop3_session *s, const struct pop3_cmd *c)
{
	if (!c->arg_len) { /* the list of mechanisms (as RFC 1734 servers do) */
		pop3_reply(s, "+OK");
		if (login_allowed(s))
			pop3_reply(s, "PLAIN");
		pop3_reply(s, ".");
		return;
	}
	const char *sp = memchr(c->arg, ' ', c->arg_len);
	size_t mlen = sp ? (size_t)(sp - c->arg) : c->arg_len;
	if (mlen != 5 || strncasecmp(c->arg, "PLAIN", 5)) {
		pop3_error(s, "-ERR unsupported authentication mechanism");
		return;
	}
	if (credentials_refused(s))
		return;
	s->have_user = false;
	if (sp) {
		plain(s, sp + 1, c->arg_len - mlen - 1);
		return;
	}
	s->sasl_plain = true;
	pop3_reply(s, "+ ");
}

void pop3_sasl_response(struct pop3_session *s, const char *line, size_t len)
{
	s->sasl_plain = false;
	if (len == 1 && line[0] == '*') {
		pop3_reply(s, "-ERR authentication cancelled");
		return;
	}
	plain(s, line, len);
}

void pop3_auth_command(struct pop3_session *s, const struct pop3_cmd *c)
{
	switch (c->id) {
	case POP3_CMD_USER:
		cmd_user(s, c);
		return;
	case POP3_CMD_PASS:
		cmd_pass(s, c);
		return;
	case POP3_CMD_AUTH:
		cmd_auth(s, c);
		return;
	case POP3_CMD_STLS:
		cmd_stls(s, c);
		return;
	case POP3_CMD_APOP:
		pop3_error(s, "-ERR APOP is not supported");
		return;
	case POP3_CMD_STAT:
	case POP3_CMD_LIST:
	case POP3_CMD_UIDL:
	case POP3_CMD_RETR:
	case POP3_CMD_TOP:
	case POP3_CMD_DELE:
	case POP3_CMD_RSET:
	case POP3_CMD_NOOP:
		pop3_error(s, "-ERR not logged in: %s is for the TRANSACTION state", c->name);
		return;
	case POP3_CMD_UNKNOWN:
	case POP3_CMD_CAPA:
	case POP3_CMD_QUIT:
	case POP3_CMD_COUNT:
		break;
	}
	rp_panic("command %s reached the AUTHORIZATION dispatch", c->name);
}

/* ---- the snapshot ----------------------------------------------------------------- */

struct load_ctx {
	struct pop3_session *s;
	unsigned n;     /* messages this slice */
	uint64_t bytes; /* message bytes measured this slice */
	bool more;      /* stopped at the slice's limit, not at the end */
};

static bool load_one(const struct spool_mbox_entry *e, void *arg)
{
	struct load_ctx *x = arg;
	struct pop3_session *s = x->s;
	if (s->nmsgs == s->cap) {
		s->cap = s->cap ? s->cap * 2 : 16;
		s->msgs = xrealloc(s->msgs, s->cap * sizeof(*s->msgs));
	}
	s->msgs[s->nmsgs++] = (struct pop3_msg){
		.uid = e->uid,
		.size = pop3_msg_size(e->data, e->len),
		.seen = e->flags & MBOX_SEEN,
	};
	if (e->uid == UINT32_MAX || s->nmsgs == UINT32_MAX)
		return false; /* the last UID there can be */
	s->load_from = e->uid + 1;
	x->n++;
	x->bytes += e->len;
	x->more = x->n >= LOAD_SLICE_MSGS || x->bytes >= LOAD_SLICE_BYTES;
	return !x->more;
}

static void load_run(struct loop_defer *d)
{
	load_slice(RP_CONTAINER_OF(d, struct pop3_session, load));
}

/* load_slice - the next part of the snapshot, in its own short read
 * transaction; a large mailbox is read in slices with I/O in between. */
static void load_slice(struct pop3_session *s)
{
	struct spool_reader *r = s->srv->p.reader;
	if (s->shutdown) {
		pop3_resume(s);
		return;
	}
	if (!spool_reader_begin(r)) {
		log_error("pop3 %s: the spool cannot be read", s->peer);
		pop3_unlock(s);
		refuse_login(s, "-ERR [SYS/TEMP] the mailbox cannot be read right now");
		return;
	}
	if (!s->load_from) {
		uint32_t uidnext;
		spool_mbox_ids(r, &s->uidvalidity, &uidnext);
		s->load_from = 1;
	}
	struct load_ctx x = { .s = s };
	spool_mbox_foreach(r, s->load_from, load_one, &x);
	spool_reader_end(r);
	if (x.more) {
		loop_defer_next(s->srv->p.loop, &s->load, load_run);
		return;
	}
	pop3_enter_transaction(s);
}
