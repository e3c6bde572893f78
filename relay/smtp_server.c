/* smtp_server.c - the SMTP server and its sessions (see smtp_server.h).
 *
 * Input is processed command by command from the conn's buffer; replies
 * accumulate in the output buffer and go out in one send per batch, which
 * is all PIPELINING needs. At the end of a message the session commits its
 * submission (queue/submit.h) and stops reading commands until the spool
 * answers: only then does "250 ... queued as ID" go out, followed by the
 * replies to anything the client pipelined behind it.
 *
 * A session is freed only when its conn has been released and no spool
 * request is in flight; a client that vanishes during the commit does not
 * lose the message (it is queued; the client may send it again: RFC 5321
 * section 6.1 allows the duplicate).
 */
#include "smtp_server_impl.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "base/addr.h"
#include "base/conn.h"
#include "base/list.h"
#include "base/log.h"
#include "base/msg_header.h"
#include "base/util.h"
#include "smtp_cmd.h"
#include "smtp_data.h"

static void srv_process(struct srv_session *s);
static void srv_free(struct srv_session *s);
static void on_timeout(struct loop_timer *t);
static void srv_arm_timer(struct srv_session *s);

static const char *const state_names[SS_NSTATES] = {
	"greeting", "idle", "mail", "rcpt", "data", "bdat", "commit", "closing", "auth",
};

const struct config *srv_cfg(const struct srv_session *s)
{
	return s->srv->cfg;
}

void srv_set_state(struct srv_session *s, enum srv_state st)
{
	if (s->state == st)
		return;
	log_debug("smtpd %s: %s -> %s", s->peer, state_names[s->state], state_names[st]);
	s->state = st;
}

void srv_reply(struct srv_session *s, const char *text)
{
	conn_line(&s->conn, "%s", text);
}

/* srv_close_with - a last reply, then close once it is sent. */
void srv_close_with(struct srv_session *s, const char *text)
{
	srv_reply(s, text);
	srv_set_state(s, SS_CLOSING);
	conn_close_after_flush(&s->conn);
}

/* srv_count_error - one more bad command; too many of them end the session. */
void srv_count_error(struct srv_session *s)
{
	if (++s->errors >= srv_cfg(s)->max_errors && s->state != SS_CLOSING) {
		log_info("smtpd %s: too many errors", s->peer);
		char buf[300];
		snprintf(buf, sizeof(buf), "421 4.7.0 %s Error: too many errors",
		         srv_cfg(s)->hostname);
		srv_close_with(s, buf);
	}
}

/* srv_error - a 4xx/5xx reply to a bad command. */
void srv_error(struct srv_session *s, const char *text)
{
	srv_reply(s, text);
	srv_count_error(s);
}

void srv_tx_reset(struct srv_session *s)
{
	submission_reset(&s->sub);
	s->data_start_ms = 0;
	s->data_bytes = 0;
	s->utf8 = false;
	s->rejected_rcpts = 0;
	s->ninb = 0;
	s->bdat_used = false;
	s->bdat_last = false;
	s->bdat_error = NULL;
	s->bdat_left = 0;
	s->msg_nomem = false;
	if (s->msg.cap > KEEP_MSG_BYTES)
		buf_shrink(&s->msg, 0);
	else
		buf_reset(&s->msg);
	if (s->state != SS_GREETING && s->state != SS_CLOSING)
		srv_set_state(s, SS_IDLE);
}

/* ---- the message ------------------------------------------------------- */

static void commit_done(struct submission *sub, void *arg);

/* refuse - a message refused at its end: the reply, counted. */
static void refuse(struct srv_session *s, const char *text)
{
	srv_reply(s, text);
	s->srv->rejected++;
	srv_tx_reset(s);
}

/* commit - the content is complete: check it, add the trace fields and
 * hand the submission to the spool. */
void srv_commit(struct srv_session *s, unsigned content_flags)
{
	const struct config *cfg = srv_cfg(s);
	if (s->msg_nomem) {
		refuse(s, "452 4.3.1 Insufficient system storage");
		return;
	}
	if (content_flags & SMTP_DATA_TOO_BIG) {
		refuse(s, "552 5.3.4 Message size exceeds fixed maximum message size");
		return;
	}
	if (content_flags & SMTP_DATA_LONG_LINE) {
		char text[120];
		snprintf(text, sizeof(text),
		         "500 5.5.2 Line too long (RFC 5321 limit is %u octets including CRLF)",
		         cfg->max_line_length);
		refuse(s, text);
		return;
	}
	if (content_flags & SMTP_DATA_NUL) {
		refuse(s, "554 5.6.0 Message contains NUL bytes");
		return;
	}
	struct msg_header_info hi; /* a mail loop (RFC 5321 6.3), DATA or BDAT */
	msg_header_scan(buf_head(&s->msg), buf_used(&s->msg), &hi);
	if (hi.received > MSG_HOPS_MAX) {
		char text[96];
		snprintf(text, sizeof(text),
		         "554 5.4.6 Too many hops: more than %u Received: fields (mail loop?)",
		         MSG_HOPS_MAX);
		refuse(s, text);
		return;
	}
	if (!spool_accepting(s->srv->spool)) {
		refuse(s, "452 4.3.1 Insufficient system storage");
		return;
	}
	struct submission *sub = &s->sub;
	if (content_flags & SMTP_DATA_8BIT)
		sub->flags |= MSG_F_8BIT;
	submission_start(sub, s->srv->spool, s->peer);
	if (!s->srv->inbound)
		submission_submitter(sub, s->user);
	/* RFC 3848 / 6531: ESMTPS, ESMTPA, ESMTPSA, UTF8SMTPSA, ... */
	char with[16], using[160] = "";
	snprintf(with, sizeof(with), "%s%s%s", s->utf8 ? "UTF8SMTP" : (s->esmtp ? "ESMTP" : "SMTP"),
	         s->tls && s->esmtp ? "S" : "", s->user[0] && s->esmtp ? "A" : "");
	if (s->tls)
		snprintf(using, sizeof(using), "using %s with cipher %s",
		         tls_version_name(s->conn.tls), tls_cipher_name(s->conn.tls));
	if (s->srv->inbound) {
		srv_inbound_commit(s, with, s->tls ? using : NULL);
		return;
	}
	struct submit_trace t = {
		.from = s->helo,
		.from_ip = s->peer_ip,
		.tls = s->tls ? using : NULL,
		.by = cfg->hostname,
		.with = with,
		.for_rcpt = true,
	};
	submission_trace(sub, &t);
	submission_complete(sub, buf_head(&s->msg), buf_used(&s->msg), cfg->hostname);
	submission_content(sub, buf_head(&s->msg), buf_used(&s->msg));
	s->commit_inflight = true;
	srv_set_state(s, SS_COMMIT);
	submission_sign(sub, s->srv->signers, s->srv->dkim);
	submission_commit(sub, s->srv->spool, loop_inbox(s->srv->loop), commit_done, s);
}

/* commit_done - the spool answered: the promised reply, then the rest of
 * what the client pipelined. */
static void commit_done(struct submission *sub, void *arg)
{
	struct srv_session *s = arg;
	struct smtpd *srv = s->srv;
	s->commit_inflight = false;
	char id[17];
	rp_id_format(sub->id, id);
	enum spool_status st = submission_status(sub);
	if (st == SPOOL_OK) {
		submission_route(sub, srv->route, srv->route_ctx);
		srv->messages++;
		srv->suppressed += submission_suppressed(sub);
		s->transactions++;
		size_t slen;
		const char *sender = submission_sender_addr(sub, &slen);
		char from[LOG_VALUE_MAX], user[LOG_VALUE_MAX] = "";
		if (s->user[0])
			log_value(user, sizeof(user), s->user, strlen(s->user));
		log_info("smtpd accepted id=%s from=%s nrcpt=%u size=%llu client=%s%s%s%s%s", id,
		         log_addr(from, sizeof(from), sender, slen), sub->nrcpt,
		         (unsigned long long)submission_size(sub), s->peer,
		         s->user[0] ? " user=" : "", user, s->tls ? " tls=" : "",
		         s->tls ? s->tls_desc : "");
		if (!s->released)
			conn_line(&s->conn, "250 2.0.0 Ok: queued as %s", id);
	} else {
		srv->rejected++;
		log_warn("smtpd %s: spool refused message: %s", s->peer,
		         st == SPOOL_EFULL ? "full" : "I/O error");
		if (!s->released)
			srv_reply(s, st == SPOOL_EFULL ? "452 4.3.1 Insufficient system storage"
			                               : "451 4.3.0 Error: queue file write error");
	}
	if (s->released) {
		srv_may_free(s);
		return;
	}
	srv_set_state(s, SS_IDLE);
	srv_tx_reset(s);
	srv_resume(s);
}

void srv_resume(struct srv_session *s)
{
	s->line_start_ms = 0; /* the wait was ours, not the client's */
	if (s->shutdown) {
		char buf[300];
		snprintf(buf, sizeof(buf), "421 4.3.2 %s Service shutting down",
		         srv_cfg(s)->hostname);
		srv_close_with(s, buf);
		return;
	}
	conn_recv_resume(&s->conn);
	srv_process(s);
	conn_recv_poke(&s->conn); /* the input it consumed: read on (conn.h) */
	srv_arm_timer(s);
}

void srv_limit(struct srv_session *s, enum climit_reason r, const char *detail)
{
	s->srv->limits[r]++;
	climit_log_cut(&s->srv->limit_log, loop_now_ms(s->srv->loop),
	               s->srv->inbound ? "bounce-mx" : "smtpd", s->peer, r, detail);
}

bool srv_may_free(struct srv_session *s)
{
	if (!s->released || s->commit_inflight || s->auth_inflight)
		return false;
	srv_free(s);
	return true;
}

/* ---- input ------------------------------------------------------------- */

/* msg_room - room for more bytes of content in s->msg, from an allocator
 * that may fail: a message's size is the client's choice, so running out
 * of memory for it refuses the message (452 4.3.1 at its end, the content
 * read and dropped), never the daemon. False when there is none. */
static bool msg_room(struct srv_session *s, size_t more)
{
	if (s->msg_nomem)
		return false;
	if (buf_try_reserve(&s->msg, more))
		return true;
	log_warn("smtpd %s: no memory for %zu more bytes of a message of %zu: refused with 452",
	         s->peer, more, buf_used(&s->msg));
	s->msg_nomem = true;
	buf_free(&s->msg);
	return false;
}

/* The DATA receiver appends at most two bytes per byte read (a bare LF is
 * stored as CRLF): input is fed in steps whose room is made first. */
#define FEED_STEP (64u * 1024)

static void feed_data(struct srv_session *s)
{
	struct buf *in = &s->conn.in;
	bool done = false;
	while (buf_used(in) && !done) {
		size_t take = RP_MIN(buf_used(in), (size_t)FEED_STEP);
		if (!(s->rx.flags & SMTP_DATA_TOO_BIG) && !msg_room(s, 2 * take + 8))
			s->rx.max_size = 0; /* store nothing more: the end answers 452 */
		size_t n = smtp_data_rx_feed(&s->rx, buf_head(in), take, &s->msg, &done);
		buf_consume(in, n);
		s->data_bytes += n;
		if (!n)
			break;
	}
	if (done)
		srv_commit(s, s->rx.flags);
}

static void feed_bdat(struct srv_session *s)
{
	struct buf *in = &s->conn.in;
	size_t n = (size_t)RP_MIN((uint64_t)buf_used(in), s->bdat_left);
	if (!s->bdat_error && !msg_room(s, n))
		s->bdat_error = "452 4.3.1 Insufficient system storage";
	if (!s->bdat_error) {
		smtp_chunk_check(&s->chunk, buf_head(in), n, srv_cfg(s)->max_line_length);
		buf_append(&s->msg, buf_head(in), n);
	}
	buf_consume(in, n);
	s->data_bytes += n;
	s->bdat_left -= n;
	if (s->bdat_left)
		return;
	if (s->bdat_error) {
		const char *e = s->bdat_error;
		s->bdat_error = NULL;
		/* A failed chunk ends the transaction (RFC 3030 section 4). */
		if (s->bdat_prev == SS_GREETING)
			srv_set_state(s, SS_GREETING);
		else
			srv_tx_reset(s);
		srv_error(s, e);
		return;
	}
	if (!s->bdat_last) {
		srv_set_state(s, SS_RCPT);
		conn_line(&s->conn, "250 2.0.0 Ok: %zu octets received", buf_used(&s->msg));
		return;
	}
	unsigned flags = s->chunk.flags | (s->chunk.last_cr ? SMTP_DATA_BARE_LF : 0);
	if (flags & SMTP_DATA_BARE_LF)
		msg_normalize_newlines(&s->msg, 0);
	srv_commit(s, flags & ~SMTP_DATA_BARE_LF);
}

/* gate - whether the command line p[0..len) may run now (climit_gate).
 * MAIL, RCPT, DATA and BDAT move mail along: they do not count against
 * commands_per_second (what they cost is bounded by the message limits),
 * everything else does (NOOP, HELP, RSET, VRFY, EHLO, AUTH lines...). */
static bool gate(struct srv_session *s, const char *p, size_t len)
{
	bool counted = s->auth_step != AUTH_NONE ||
	               !(len >= 4 && (!strncasecmp(p, "MAIL", 4) || !strncasecmp(p, "RCPT", 4) ||
	                              !strncasecmp(p, "DATA", 4) || !strncasecmp(p, "BDAT", 4)));
	enum climit_reason why;
	if (climit_gate(&s->lim, &s->conn, &srv_cfg(s)->limits, counted, loop_now_ms(s->srv->loop),
	                &why))
		return true;
	if (why == CLIMIT_RATE)
		srv_limit(s, why, "over [limits] commands_per_second: slowed");
	else if (why == CLIMIT_OUTPUT)
		srv_limit(s, why, "replies not read: reading stopped");
	return false;
}

/* line_max - the longest line accepted now: AUTH lines carry credentials
 * and may be longer than a command (RFC 4954 4). */
static size_t line_max(const struct srv_session *s, const char *p, size_t avail)
{
	if (s->auth_step != AUTH_NONE || (avail >= 5 && !strncasecmp(p, "AUTH ", 5)))
		return AUTH_LINE_MAX;
	return CMD_LINE_MAX;
}

static void srv_process(struct srv_session *s)
{
	struct conn *c = &s->conn;
	struct buf *in = &c->in;
	/* A zero-size chunk ("BDAT 0 LAST") is complete with no byte to wait
	 * for: run it on an empty buffer too, or its reply would wait for the
	 * client's next command while the client waits for the reply. */
	while (!conn_closing(c) && (buf_used(in) || (s->state == SS_BDAT && !s->bdat_left))) {
		if (s->state == SS_COMMIT || s->state == SS_CLOSING || s->state == SS_AUTH)
			break;
		if (s->state == SS_DATA || s->state == SS_BDAT) {
			if (!s->data_start_ms)
				s->data_start_ms = loop_now_ms(s->srv->loop);
			if (s->state == SS_DATA)
				feed_data(s);
			else
				feed_bdat(s);
			continue;
		}
		char *p = buf_head(in);
		size_t avail = buf_used(in);
		char *nl = memchr(p, '\n', avail);
		if (s->skip_line) {
			/* Every further line's worth of an endless line counts as
			 * one more error, so junk without a newline still ends in 421. */
			size_t n = nl ? (size_t)(nl - p) + 1 : avail;
			buf_consume(in, n);
			s->skipped += n;
			while (s->skipped >= CMD_LINE_MAX && s->state != SS_CLOSING) {
				s->skipped -= CMD_LINE_MAX;
				srv_count_error(s);
			}
			if (nl) {
				s->skip_line = false;
				s->skipped = 0;
			}
			continue;
		}
		size_t max = line_max(s, p, avail);
		if (!nl) {
			if (avail >= max) {
				s->skip_line = true;
				buf_consume(in, avail);
				srv_error(s, "500 5.5.2 Error: line too long");
			}
			break;
		}
		size_t total = (size_t)(nl - p) + 1;
		size_t len = total - 1;
		if (len && p[len - 1] == '\r')
			len--;
		if (total > max) {
			buf_consume(in, total);
			srv_error(s, "500 5.5.2 Error: line too long");
			continue;
		}
		if (!gate(s, p, len))
			break;
		s->line_start_ms = 0;
		if (s->auth_step != AUTH_NONE)
			srv_auth_response(s, p, len);
		else
			srv_command(s, p, len);
		if (s->starttls_now) {
			/* The input is gone with the switch to TLS: whatever was
			 * pipelined behind STARTTLS is not read. */
			s->starttls_now = false;
			break;
		}
		buf_consume(in, total);
	}
	/* While blocked on the spool or on a password check (and its failure
	 * delay, up to 5 s), do not let a client fill our memory: stop
	 * reading; srv_resume reads again. */
	if ((s->state == SS_COMMIT || s->state == SS_AUTH) && buf_used(in) > PAUSE_INPUT_BYTES)
		conn_recv_pause(c);
}

/* srv_arm_timer - the session's next deadline: silence for idle_timeout
 * between commands; a command line complete within [limits]
 * command_timeout of its first byte (more bytes do not extend it); the
 * transaction's data within data_timeout (plus a second per
 * min_data_rate bytes), and never silent for idle_timeout. */
static void srv_arm_timer(struct srv_session *s)
{
	const struct config *cfg = srv_cfg(s);
	if (conn_closing(&s->conn) || s->state == SS_COMMIT || s->state == SS_AUTH)
		return; /* srv_resume arms it again */
	uint64_t now = loop_now_ms(s->srv->loop), at = now + cfg->idle_timeout_ms;
	bool in_data = s->state == SS_DATA || s->state == SS_BDAT;
	if (in_data && !s->data_start_ms)
		s->data_start_ms = now; /* DATA (or BDAT) said, no byte of it yet */
	if (!in_data && buf_used(&s->conn.in) && !conn_out_blocked(&s->conn)) {
		if (!s->line_start_ms)
			s->line_start_ms = now;
		at = RP_MIN(at, s->line_start_ms + cfg->limits.command_timeout_ms);
	} else {
		s->line_start_ms = 0;
	}
	if (s->data_start_ms)
		at =
		    RP_MIN(at, climit_data_deadline(&cfg->limits, s->data_start_ms, s->data_bytes));
	loop_timer_arm(s->srv->loop, &s->timer, at > now ? at - now : 1, on_timeout);
}

static void on_timeout(struct loop_timer *t)
{
	struct srv_session *s = RP_CONTAINER_OF(t, struct srv_session, timer);
	if (s->state == SS_COMMIT || s->state == SS_CLOSING || s->state == SS_AUTH)
		return;
	const struct config *cfg = srv_cfg(s);
	uint64_t now = loop_now_ms(s->srv->loop);
	char why[120];
	if (conn_out_blocked(&s->conn)) {
		/* It will not read a goodbye either. */
		srv_limit(s, CLIMIT_IDLE, "replies not read for too long: closed");
		srv_set_state(s, SS_CLOSING);
		conn_close(&s->conn);
		return;
	}
	if (s->data_start_ms &&
	    now >= climit_data_deadline(&cfg->limits, s->data_start_ms, s->data_bytes)) {
		snprintf(why, sizeof(why), "message data too slow (%llu bytes in %llus): closed",
		         (unsigned long long)s->data_bytes,
		         (unsigned long long)(now - s->data_start_ms) / 1000);
		srv_limit(s, CLIMIT_SLOW, why);
	} else if (s->line_start_ms && now >= s->line_start_ms + cfg->limits.command_timeout_ms) {
		snprintf(why, sizeof(why), "command line not complete within %llums: closed",
		         (unsigned long long)cfg->limits.command_timeout_ms);
		srv_limit(s, CLIMIT_SLOW, why);
	} else {
		log_info("smtpd %s: timeout in state %s", s->peer, state_names[s->state]);
		s->srv->limits[CLIMIT_IDLE]++;
	}
	char buf[300];
	snprintf(buf, sizeof(buf), "421 4.4.2 %s Error: timeout exceeded", cfg->hostname);
	srv_close_with(s, buf);
}

static void on_data(struct conn *c)
{
	struct srv_session *s = RP_CONTAINER_OF(c, struct srv_session, conn);
	srv_process(s);
	srv_arm_timer(s);
}

static void on_closed(struct conn *c, int err)
{
	struct srv_session *s = RP_CONTAINER_OF(c, struct srv_session, conn);
	if (err == -EPROTO && conn_tls_error(c)) {
		if (!s->tls)
			s->srv->tls_failures++;
		log_info("smtpd %s: %s", s->peer, tls_error_text(c->tls));
		return;
	}
	if (s->state == SS_DATA || s->state == SS_BDAT)
		log_info("smtpd %s: lost connection in %s (%s); message discarded", s->peer,
		         state_names[s->state], err ? strerror(-err) : "eof");
	else
		log_debug("smtpd %s: disconnected in %s", s->peer, state_names[s->state]);
}

static void on_released(struct conn *c)
{
	struct srv_session *s = RP_CONTAINER_OF(c, struct srv_session, conn);
	s->released = true;
	climit_conn_close(s->srv->climit, &s->lim.ticket);
	loop_timer_disarm(s->srv->loop, &s->timer);
	loop_timer_disarm(s->srv->loop, &s->fail_timer);
	srv_may_free(s);
}

static const struct conn_ops srv_conn_ops = {
	.data = on_data,
	.closed = on_closed,
	.released = on_released,
	.tls_ready = srv_tls_ready,
};

static void srv_free(struct srv_session *s)
{
	struct smtpd *srv = s->srv;
	rp_list_del(&s->link);
	srv->nsessions--;
	submission_free(&s->sub);
	buf_free(&s->msg);
	free(s->inb);
	free(s);
	srv->session_gone(srv->arg);
}

/* peer_names - "[ip]:port" for logs, "[ip]" or "[IPv6:ip]" for Received:. */
static void peer_names(struct srv_session *s, int fd, struct sockaddr_storage *ss)
{
	socklen_t len = sizeof(*ss);
	char host[INET6_ADDRSTRLEN] = "unknown";
	unsigned port = 0;
	memset(ss, 0, sizeof(*ss));
	if (getpeername(fd, (struct sockaddr *)ss, &len) == 0) {
		if (ss->ss_family == AF_INET) {
			struct sockaddr_in *sin = (struct sockaddr_in *)ss;
			inet_ntop(AF_INET, &sin->sin_addr, host, sizeof(host));
			port = ntohs(sin->sin_port);
			snprintf(s->peer_ip, sizeof(s->peer_ip), "[%s]", host);
		} else if (ss->ss_family == AF_INET6) {
			struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
			inet_ntop(AF_INET6, &sin6->sin6_addr, host, sizeof(host));
			port = ntohs(sin6->sin6_port);
			snprintf(s->peer_ip, sizeof(s->peer_ip), "[IPv6:%s]", host);
		}
	}
	if (!s->peer_ip[0])
		snprintf(s->peer_ip, sizeof(s->peer_ip), "[unknown]");
	snprintf(s->peer, sizeof(s->peer), "[%s]:%u", host, port);
}

void smtpd_session_start(struct smtpd *srv, int fd, bool implicit_tls)
{
	const struct config *cfg = srv->cfg;
	struct srv_session *s = xcalloc(1, sizeof(*s));
	s->srv = srv;
	conn_init(&s->conn, srv->loop, &srv_conn_ops, s);
	peer_names(s, fd, &s->peer_ss);
	snprintf(s->helo, sizeof(s->helo), "unknown");
	s->relay_ok = config_net_allowed(cfg, (struct sockaddr *)&s->peer_ss);
	s->state = SS_GREETING;
	s->implicit_tls = implicit_tls;
	rp_list_add(&srv->sessions, &s->link);
	srv->nsessions++;
	srv->accepted_sessions++;
	conn_attach(&s->conn, fd);
	log_debug("smtpd %s: connect%s", s->peer, implicit_tls ? " (TLS)" : "");
	const char *refuse = NULL;
	uint64_t left = 0;
	const struct sockaddr *sa = (const struct sockaddr *)&s->peer_ss;
	conn_set_out_max(&s->conn, cfg->limits.output_buffer);
	s->lim.exempt = climit_exempt(&cfg->limits, sa);
	if (srv->nsessions > cfg->max_clients) {
		log_warn("smtpd %s: refused, %u sessions open", s->peer, srv->nsessions - 1);
		refuse = "421 4.7.0 Error: too many connections, try again later";
	} else if (!climit_conn_open(srv->climit, &cfg->limits,
	                             srv->inbound ? CLIMIT_INBOUND : CLIMIT_SUBMISSION, sa,
	                             &s->lim.ticket)) {
		srv_limit(s, CLIMIT_CONNECTIONS, "too many connections from its address: refused");
		refuse = "421 4.7.0 Too many connections from your address, try again later";
	} else if (srv->inbound) {
		refuse = srv_inbound_refuse(s);
	} else if (auth_limiter_blocked(srv->limiter, (const struct sockaddr *)&s->peer_ss,
	                                rp_mono_ms(), &left)) {
		log_info("smtpd %s: refused for %llu more seconds after authentication failures",
		         s->peer, (unsigned long long)(left + 999) / 1000);
		refuse = "421 4.7.0 Error: too many authentication failures, try again later";
	}
	if (refuse) {
		if (implicit_tls) /* no TLS yet to say it through */
			conn_close(&s->conn);
		else
			srv_close_with(s, refuse);
		srv_set_state(s, SS_CLOSING);
		return;
	}
	if (implicit_tls) /* before the greeting: it goes through TLS */
		conn_tls_server(&s->conn, srv->tls);
	conn_line(&s->conn, "220 %s ESMTP ringpost", cfg->hostname);
	srv_arm_timer(s);
}

void smtpd_shutdown_all(struct smtpd *srv)
{
	char buf[300];
	snprintf(buf, sizeof(buf), "421 4.3.2 %s Service shutting down", srv->cfg->hostname);
	struct rp_list *pos, *tmp;
	rp_list_foreach_safe(pos, tmp, &srv->sessions)
	{
		struct srv_session *s = rp_list_entry(pos, struct srv_session, link);
		if (s->released || s->state == SS_CLOSING)
			continue;
		if (s->commit_inflight || s->state == SS_AUTH) {
			s->shutdown = true; /* 421 when the spool or the check answers */
			continue;
		}
		srv_close_with(s, buf);
	}
}

struct smtpd *smtpd_new(const struct smtpd_params *p)
{
	struct smtpd *srv = xcalloc(1, sizeof(*srv));
	srv->loop = p->loop;
	srv->spool = p->spool;
	srv->checker = p->checker;
	srv->limiter = p->limiter;
	srv->signers = p->signers;
	srv->reader = p->reader;
	srv->refused = p->refused;
	srv->flood = p->flood;
	srv->climit = p->climit;
	srv->inbound = p->inbound;
	smtpd_set_config(srv, p->gen);
	srv->route = p->route;
	srv->route_ctx = p->route_ctx;
	srv->session_gone = p->session_gone;
	srv->arg = p->arg;
	rp_list_init(&srv->sessions);
	return srv;
}

void smtpd_free(struct smtpd *srv)
{
	if (!srv)
		return;
	rp_assert(!srv->nsessions);
	free(srv);
}

void smtpd_set_config(struct smtpd *srv, const struct config_ref *gen)
{
	srv->cfg = gen->cfg;
	srv->tls = gen->tls_server;
	srv->users = srv->inbound ? NULL : gen->users; /* no AUTH at the bounce MX */
	srv->dkim = gen->dkim;
}

unsigned smtpd_sessions(const struct smtpd *srv)
{
	return srv->nsessions;
}

void smtpd_fill_stats(const struct smtpd *srv, struct stats_snapshot *part)
{
	part->accepted_smtp += srv->messages;
	part->suppressed += srv->suppressed;
	part->reports += srv->reports;
	part->reports_matched += srv->reports_matched;
	part->rejected += srv->rejected;
	part->smtp_sessions += srv->accepted_sessions;
	part->inbound_connections += srv->nsessions;
	unsigned kind = srv->inbound ? CLIMIT_INBOUND : CLIMIT_SUBMISSION;
	for (unsigned r = 0; r < CLIMIT_REASONS; r++)
		part->client_limits[kind][r] += srv->limits[r];
}
