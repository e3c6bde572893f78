/* pop3.c - the bounce mailbox over POP3 (see pop3.h): the server, its
 * sessions, their input and timers, and the state machine of RFC 1939.
 *
 * Input is read command by command from the conn's buffer; replies go out
 * in one send per batch, which is all PIPELINING (RFC 2449) needs. While
 * a session waits (a password check, the snapshot, the QUIT's commit) or
 * a multi-line reply is being produced, it reads no command: those
 * pipelined behind wait in the buffer (and the socket, past
 * POP3_PAUSE_INPUT). Output is produced in slices of at most
 * POP3_OUT_HIGH queued bytes, so a large message or a client that does
 * not read costs a bounded amount of memory.
 *
 * [limits] (base/climit.h): connections per client address (-ERR
 * [SYS/TEMP] at the greeting), commands per second per connection
 * (slowed), a command line complete within command_timeout of its first
 * byte and a login within login_timeout of connecting, no command read
 * while the unread replies pass output_buffer.
 *
 * A session is freed only when its conn has been released and no
 * password check or spool request is in flight.
 */
#include "pop3_impl.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "base/util.h"

static void session_process(struct pop3_session *s);

static const char *const state_names[P3_NSTATES] = {
	"authorization", "auth-wait", "loading", "transaction", "update", "closing",
};

const struct mailbox_config *pop3_cfg(const struct pop3_session *s)
{
	return s->srv->p.cfg;
}

void pop3_set_state(struct pop3_session *s, enum pop3_state st)
{
	rp_assert((unsigned)st < P3_NSTATES);
	if (s->state != st)
		log_debug("pop3 %s: %s -> %s", s->peer, state_names[s->state], state_names[st]);
	s->state = st;
}

void pop3_reply(struct pop3_session *s, const char *fmt, ...)
{
	if (s->released || conn_closing(&s->conn))
		return;
	struct buf *out = conn_outbuf(&s->conn);
	va_list ap;
	va_start(ap, fmt);
	buf_vprintf(out, fmt, ap);
	va_end(ap);
	buf_append(out, "\r\n", 2);
	conn_flush_soon(&s->conn);
}

static void on_linger(struct loop_timer *t)
{
	struct pop3_session *s = RP_CONTAINER_OF(t, struct pop3_session, linger);
	log_info("pop3 %s: the client does not read its last reply: closing", s->peer);
	conn_close(&s->conn);
}

void pop3_close_with(struct pop3_session *s, const char *text)
{
	pop3_reply(s, "%s", text);
	pop3_set_state(s, P3_CLOSING);
	conn_close_after_flush(&s->conn);
	/* A client that reads nothing would hold the close (and a shutdown)
	 * for ever: the send that carries the reply never completes. */
	if (!s->released)
		loop_timer_arm(s->srv->p.loop, &s->linger, POP3_LINGER_MS, on_linger);
}

void pop3_error(struct pop3_session *s, const char *fmt, ...)
{
	char text[300];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	if (++s->errors >= POP3_MAX_ERRORS) {
		log_info("pop3 %s: too many bad commands", s->peer);
		pop3_reply(s, "%s", text);
		pop3_close_with(s, "-ERR too many bad commands, closing");
		return;
	}
	pop3_reply(s, "%s", text);
}

bool pop3_busy(const struct pop3_session *s)
{
	if (s->state != P3_AUTHORIZATION && s->state != P3_TRANSACTION)
		return true;
	return s->xfer != P3_XFER_NONE || conn_pending_out(&s->conn) > POP3_OUT_HIGH;
}

/* ---- timers ------------------------------------------------------------- */

void pop3_user_quoted(const struct pop3_session *s, char out[POP3_QUOTED_MAX])
{
	log_quote(out, POP3_QUOTED_MAX, s->user, strlen(s->user));
}

/* limit - count a client limit that struck s and log it (within budget). */
static void limit(struct pop3_session *s, enum climit_reason r, const char *detail)
{
	s->srv->limits[r]++;
	climit_log_cut(&s->srv->limit_log, loop_now_ms(s->srv->p.loop), "pop3", s->peer, r, detail);
}

static void on_idle(struct loop_timer *t)
{
	struct pop3_session *s = RP_CONTAINER_OF(t, struct pop3_session, idle);
	const struct climit_config *lc = pop3_cfg(s)->limits;
	uint64_t now = loop_now_ms(s->srv->p.loop);
	if (s->state == P3_AUTH_WAIT || s->state == P3_LOADING || s->state == P3_UPDATE ||
	    s->state == P3_CLOSING)
		return; /* they end on their own */
	if (s->xfer != P3_XFER_NONE || conn_pending_out(&s->conn) > POP3_OUT_LOW) {
		/* Mid-reply no line can follow; and a client that left this much
		 * unread will not read a goodbye. */
		limit(s, CLIMIT_IDLE, "replies not read for too long: closed");
		conn_close(&s->conn);
		pop3_set_state(s, P3_CLOSING);
		return;
	}
	if (s->line_start_ms && now >= s->line_start_ms + lc->command_timeout_ms) {
		limit(s, CLIMIT_SLOW, "command line not complete in time: closed");
		pop3_close_with(s, "-ERR command line not complete in time");
		return;
	}
	if (s->state == P3_AUTHORIZATION && now >= s->start_ms + lc->login_timeout_ms) {
		limit(s, CLIMIT_IDLE, "not logged in in time: closed");
		pop3_close_with(s, "-ERR [SYS/TEMP] not logged in in time");
		return;
	}
	log_info("pop3 %s: autologout in state %s", s->peer, state_names[s->state]);
	s->srv->limits[CLIMIT_IDLE]++;
	/* RFC 1939 3: the autologout does not enter UPDATE. */
	pop3_close_with(s, "-ERR autologout: idle for too long");
}

/* idle_arm - the session's next deadline: the autologout (idle_timeout
 * after the last activity); in AUTHORIZATION, login_timeout after
 * connecting; a command line complete within command_timeout of its first
 * byte (more bytes do not extend it). */
static void idle_arm(struct pop3_session *s)
{
	const struct climit_config *lc = pop3_cfg(s)->limits;
	uint64_t now = loop_now_ms(s->srv->p.loop), at = now + pop3_cfg(s)->idle_timeout_ms;
	if (s->state == P3_AUTHORIZATION)
		at = RP_MIN(at, s->start_ms + lc->login_timeout_ms);
	if (buf_used(&s->conn.in) && !pop3_busy(s) && !conn_out_blocked(&s->conn)) {
		if (!s->line_start_ms)
			s->line_start_ms = now;
		at = RP_MIN(at, s->line_start_ms + lc->command_timeout_ms);
	} else {
		s->line_start_ms = 0;
	}
	loop_timer_arm(s->srv->p.loop, &s->idle, at > now ? at - now : 1, on_idle);
}

/* gate - whether the next command may run now (climit_gate). */
static bool gate(struct pop3_session *s)
{
	enum climit_reason why;
	if (climit_gate(&s->lim, &s->conn, pop3_cfg(s)->limits, true, loop_now_ms(s->srv->p.loop),
	                &why))
		return true;
	if (why == CLIMIT_RATE)
		limit(s, why, "over [limits] commands_per_second: slowed");
	else if (why == CLIMIT_OUTPUT)
		limit(s, why, "replies not read: reading stopped");
	return false;
}

static void on_drain(struct loop_timer *t)
{
	struct pop3_session *s = RP_CONTAINER_OF(t, struct pop3_session, drain);
	if (s->released || conn_closing(&s->conn))
		return;
	if (conn_pending_out(&s->conn) > POP3_OUT_LOW) {
		pop3_drain_later(s);
		return;
	}
	if (s->xfer != P3_XFER_NONE) {
		idle_arm(s); /* the client is reading: it is not idle */
		pop3_xfer_fill(s);
		if (s->xfer != P3_XFER_NONE) {
			pop3_drain_later(s);
			return;
		}
	}
	pop3_resume(s);
}

void pop3_drain_later(struct pop3_session *s)
{
	if (!loop_timer_armed(&s->drain))
		loop_timer_arm(s->srv->p.loop, &s->drain, POP3_DRAIN_POLL_MS, on_drain);
}

/* ---- input -------------------------------------------------------------- */

/* line_max - the longest line accepted now: AUTH PLAIN carries base64
 * credentials past the 255 octets of a command (RFC 5034 4). */
static size_t line_max(const struct pop3_session *s, const char *p, size_t avail)
{
	if (s->sasl_plain || (avail >= 5 && rp_strcaseprefix(p, avail, "AUTH ")))
		return POP3_AUTH_LINE_MAX;
	return POP3_LINE_MAX;
}

/* command - one command line (without its CRLF), in the session's state. */
static void command(struct pop3_session *s, const char *line, size_t len)
{
	struct pop3_cmd c;
	if (s->sasl_plain) {
		pop3_sasl_response(s, line, len);
		return;
	}
	pop3_cmd_parse(line, len, &c);
	log_debug("pop3 %s: command %s in %s", s->peer, c.name, state_names[s->state]);
	switch (c.id) {
	case POP3_CMD_UNKNOWN:
		pop3_error(s, "-ERR unknown command");
		return;
	case POP3_CMD_CAPA:
		pop3_cmd_capa(s);
		return;
	case POP3_CMD_QUIT:
		if (s->state == P3_AUTHORIZATION) {
			pop3_close_with(s, "+OK ringpost POP3 server signing off");
			return;
		}
		break;
	default:
		break;
	}
	if (s->state == P3_AUTHORIZATION)
		pop3_auth_command(s, &c);
	else if (s->state == P3_TRANSACTION)
		pop3_transaction_command(s, &c);
	else
		rp_panic("command in state %s", state_names[s->state]);
}

/* skip_long - discard the rest of an over-long line; every further
 * line's worth counts as one more bad command, so junk without a newline
 * still ends in a close. False when the line goes on. */
static bool skip_long(struct pop3_session *s, struct buf *in)
{
	char *p = buf_head(in), *nl = memchr(p, '\n', buf_used(in));
	size_t n = nl ? (size_t)(nl - p) + 1 : buf_used(in);
	buf_consume(in, n);
	s->skipped += n;
	while (s->skipped >= POP3_LINE_MAX && s->state != P3_CLOSING) {
		s->skipped -= POP3_LINE_MAX;
		pop3_error(s, "-ERR line too long");
	}
	if (!nl)
		return false;
	s->skip_line = false;
	s->skipped = 0;
	return true;
}

static void session_process(struct pop3_session *s)
{
	struct conn *c = &s->conn;
	struct buf *in = &c->in;
	while (!conn_closing(c) && buf_used(in) && !pop3_busy(s)) {
		if (s->skip_line) {
			if (!skip_long(s, in))
				break;
			continue;
		}
		char *p = buf_head(in);
		size_t avail = buf_used(in);
		char *nl = memchr(p, '\n', avail);
		size_t max = line_max(s, p, avail);
		if (!nl) {
			if (avail >= max) {
				s->skip_line = true;
				s->sasl_plain = false;
				skip_long(s, in);
			}
			break;
		}
		size_t total = (size_t)(nl - p) + 1;
		size_t len = total - 1;
		if (len && p[len - 1] == '\r')
			len--;
		if (total > max) {
			buf_consume(in, total);
			s->sasl_plain = false;
			pop3_error(s, "-ERR line too long");
			continue;
		}
		if (!gate(s))
			break;
		s->line_start_ms = 0;
		command(s, p, len);
		if (s->stls_now) {
			/* The input went with the switch to TLS: whatever was
			 * pipelined behind STLS is not read (RFC 2595 4). */
			s->stls_now = false;
			break;
		}
		buf_consume(in, total);
	}
	if (conn_closing(c) || s->released)
		return;
	if (pop3_busy(s)) {
		if (buf_used(in) > POP3_PAUSE_INPUT)
			conn_recv_pause(c);
		if (s->xfer != P3_XFER_NONE || conn_pending_out(c) > POP3_OUT_HIGH)
			pop3_drain_later(s);
	} else if (!conn_pending_out(c)) {
		conn_trim(c, POP3_KEEP_BUF);
	}
}

void pop3_resume(struct pop3_session *s)
{
	if (s->released || conn_closing(&s->conn))
		return;
	idle_arm(s);
	if (s->shutdown) {
		pop3_close_with(s, "-ERR [SYS/TEMP] ringpost is shutting down");
		return;
	}
	conn_recv_resume(&s->conn);
	session_process(s);
	conn_recv_poke(&s->conn); /* the input it consumed: read on (conn.h) */
	if (!pop3_busy(s) && !conn_closing(&s->conn))
		idle_arm(s); /* again: a command line may have begun */
}

/* ---- the conn's callbacks ------------------------------------------------- */

static void on_data(struct conn *c)
{
	struct pop3_session *s = c->owner;
	if (!pop3_busy(s))
		idle_arm(s);
	session_process(s);
	if (!pop3_busy(s) && !conn_closing(c) && !s->released)
		idle_arm(s); /* again: a command line may have begun */
}

static void on_closed(struct conn *c, int err)
{
	struct pop3_session *s = c->owner;
	if (err == -EPROTO && conn_tls_error(c)) {
		log_info("pop3 %s: %s", s->peer, tls_error_text(c->tls));
		return;
	}
	if (s->state == P3_TRANSACTION) {
		char user[POP3_QUOTED_MAX];
		pop3_user_quoted(s, user);
		log_info("pop3 %s: user=%s left without QUIT: nothing deleted", s->peer, user);
	} else {
		log_debug("pop3 %s: disconnected in %s (%s)", s->peer, state_names[s->state],
		          err ? strerror(-err) : "eof");
	}
}

static void session_free(struct pop3_session *s)
{
	struct pop3_server *srv = s->srv;
	pop3_unlock(s);
	rp_list_del(&s->link);
	srv->nsessions--;
	free(s->msgs);
	free(s);
	srv->p.session_gone(srv->p.arg);
}

bool pop3_may_free(struct pop3_session *s)
{
	if (!s->released || s->auth_inflight || s->spool_inflight)
		return false;
	session_free(s);
	return true;
}

static void on_released(struct conn *c)
{
	struct pop3_session *s = c->owner;
	struct loop *l = s->srv->p.loop;
	s->released = true;
	climit_conn_close(s->srv->p.climit, &s->lim.ticket);
	loop_timer_disarm(l, &s->idle);
	loop_timer_disarm(l, &s->fail_timer);
	loop_timer_disarm(l, &s->drain);
	loop_timer_disarm(l, &s->linger);
	loop_defer_cancel(l, &s->load);
	/* The maildrop is free as soon as the session is: a check or a
	 * commit still in flight needs the memory, not the lock. */
	if (s->state != P3_UPDATE)
		pop3_unlock(s);
	pop3_may_free(s);
}

static const struct conn_ops session_ops = {
	.data = on_data,
	.closed = on_closed,
	.released = on_released,
	.tls_ready = pop3_tls_ready,
};

/* ---- the server ------------------------------------------------------------- */

struct pop3_server *pop3_server_new(const struct mailbox_params *p)
{
	struct pop3_server *srv = xcalloc(1, sizeof(*srv));
	srv->p = *p;
	rp_list_init(&srv->sessions);
	return srv;
}

void pop3_server_free(struct pop3_server *srv)
{
	if (!srv)
		return;
	rp_assert(!srv->nsessions);
	free(srv);
}

void pop3_server_set_config(struct pop3_server *srv, const struct mailbox_config *cfg)
{
	srv->p.cfg = cfg;
}

/* peer_name - "[ip]:port" of the client for logs, its address for the limiter. */
static void peer_name(struct pop3_session *s, int fd)
{
	socklen_t len = sizeof(s->peer_ss);
	char host[INET6_ADDRSTRLEN] = "unknown";
	unsigned port = 0;
	if (getpeername(fd, (struct sockaddr *)&s->peer_ss, &len) == 0) {
		if (s->peer_ss.ss_family == AF_INET) {
			struct sockaddr_in *sin = (struct sockaddr_in *)&s->peer_ss;
			inet_ntop(AF_INET, &sin->sin_addr, host, sizeof(host));
			port = ntohs(sin->sin_port);
		} else if (s->peer_ss.ss_family == AF_INET6) {
			struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&s->peer_ss;
			inet_ntop(AF_INET6, &sin6->sin6_addr, host, sizeof(host));
			port = ntohs(sin6->sin6_port);
		}
	}
	snprintf(s->peer, sizeof(s->peer), "[%s]:%u", host, port);
}

/* refusal - why a new session is turned away at once, or NULL. */
static const char *refusal(struct pop3_session *s)
{
	struct pop3_server *srv = s->srv;
	const struct mailbox_config *cfg = srv->p.cfg;
	uint64_t left = 0;
	if (s->implicit_tls && !cfg->tls) {
		log_warn("pop3 %s: refused: pop3s without a [tls] certificate", s->peer);
		return "-ERR [SYS/PERM] TLS is not configured";
	}
	if (srv->nsessions > cfg->max_clients) {
		log_warn("pop3 %s: refused, %u sessions open", s->peer, srv->nsessions - 1);
		return "-ERR [SYS/TEMP] too many connections, try again later";
	}
	if (!climit_conn_open(srv->p.climit, cfg->limits, CLIMIT_POP3,
	                      (const struct sockaddr *)&s->peer_ss, &s->lim.ticket)) {
		limit(s, CLIMIT_CONNECTIONS, "too many connections from its address: refused");
		return "-ERR [SYS/TEMP] too many connections from your address, try again later";
	}
	if (auth_limiter_blocked(srv->p.limiter, (const struct sockaddr *)&s->peer_ss, rp_mono_ms(),
	                         &left)) {
		log_info("pop3 %s: refused for %llu more seconds after authentication failures",
		         s->peer, (unsigned long long)(left + 999) / 1000);
		return "-ERR [SYS/TEMP] too many authentication failures, try again later";
	}
	return NULL;
}

void pop3_session_start(struct pop3_server *srv, int fd, bool implicit_tls)
{
	const struct mailbox_config *cfg = srv->p.cfg;
	struct pop3_session *s = xcalloc(1, sizeof(*s));
	s->srv = srv;
	s->implicit_tls = implicit_tls;
	s->state = P3_AUTHORIZATION;
	conn_init(&s->conn, srv->p.loop, &session_ops, s);
	peer_name(s, fd);
	rp_list_add(&srv->sessions, &s->link);
	srv->nsessions++;
	conn_attach(&s->conn, fd);
	conn_set_out_max(&s->conn, cfg->limits->output_buffer);
	s->start_ms = loop_now_ms(srv->p.loop);
	s->lim.exempt = climit_exempt(cfg->limits, (const struct sockaddr *)&s->peer_ss);
	log_debug("pop3 %s: connect%s", s->peer, implicit_tls ? " (TLS)" : "");
	const char *refuse = refusal(s);
	if (refuse) {
		if (implicit_tls) { /* no TLS yet to say it through */
			pop3_set_state(s, P3_CLOSING);
			conn_close(&s->conn);
		} else {
			pop3_close_with(s, refuse);
		}
		return;
	}
	if (implicit_tls) /* before the greeting: it goes through TLS */
		conn_tls_server(&s->conn, cfg->tls);
	pop3_reply(s, "+OK %s POP3 ringpost ready", cfg->hostname);
	idle_arm(s);
}

/* goodbye - shutdown for one session, now or when its wait ends. */
static void goodbye(struct pop3_session *s)
{
	if (s->released || s->state == P3_CLOSING)
		return;
	if (s->auth_inflight || s->spool_inflight) {
		s->shutdown = true; /* said when the check or the commit answers */
		return;
	}
	loop_defer_cancel(s->srv->p.loop, &s->load);
	pop3_login_stop(s);
	if (s->xfer != P3_XFER_NONE || conn_pending_out(&s->conn) > POP3_OUT_LOW) {
		pop3_set_state(s, P3_CLOSING);
		conn_close(&s->conn); /* mid-reply: no line can follow */
		return;
	}
	pop3_close_with(s, "-ERR [SYS/TEMP] ringpost is shutting down");
}

void pop3_shutdown_all(struct pop3_server *srv)
{
	struct rp_list *pos, *tmp;
	rp_list_foreach_safe(pos, tmp, &srv->sessions)
	{
		goodbye(rp_list_entry(pos, struct pop3_session, link));
	}
}

void pop3_fill_stats(const struct pop3_server *srv, struct stats_snapshot *part)
{
	for (unsigned r = 0; r < CLIMIT_REASONS; r++)
		part->client_limits[CLIMIT_POP3][r] += srv->limits[r];
}

unsigned pop3_sessions(const struct pop3_server *srv)
{
	return srv->nsessions;
}

void pop3_mailbox_changed(struct pop3_server *srv)
{
	/* A POP3 session works on the snapshot taken at login (RFC 1939 has
	 * no way to announce new mail): nothing to do. */
	(void)srv;
}
