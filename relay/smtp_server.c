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
#include "smtp_server.h"

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

#define CMD_LINE_MAX      512 /* RFC 5321 4.5.3.1.4, CRLF included */
#define PAUSE_INPUT_BYTES (4u << 20)
#define KEEP_MSG_BYTES    (256u * 1024)

enum srv_state {
	SS_GREETING, /* banner sent, no EHLO/HELO yet */
	SS_IDLE,     /* EHLO/HELO done, no transaction */
	SS_MAIL,     /* MAIL accepted */
	SS_RCPT,     /* at least one RCPT accepted */
	SS_DATA,     /* reading DATA content */
	SS_BDAT,     /* reading a BDAT chunk */
	SS_COMMIT,   /* waiting for the spool */
	SS_CLOSING,  /* closing after a final reply */
	SS_NSTATES,
};

static const char *const state_names[SS_NSTATES] = {
	"greeting", "idle", "mail", "rcpt", "data", "bdat", "commit", "closing",
};

struct smtpd {
	struct loop *loop;
	struct spool *spool;
	const struct config *cfg;
	submit_route_fn route;
	void *route_ctx;
	void (*session_gone)(void *arg);
	void *arg;
	struct rp_list sessions; /* every session, for shutdown */
	unsigned nsessions;
	uint64_t accepted_sessions; /* since start */
	uint64_t messages;          /* messages accepted */
	uint64_t rejected;          /* transactions refused at the end */
};

struct srv_session {
	struct conn conn;
	struct smtpd *srv;
	struct rp_list link; /* on srv->sessions */
	enum srv_state state;
	struct loop_timer timer; /* idle timeout */
	char peer[64];           /* "[ip]:port" */
	char peer_ip[56];        /* for Received: "[ip]" or "[IPv6:..]" */
	char helo[128];
	bool esmtp;
	bool relay_ok;        /* inside [submission] networks */
	bool skip_line;       /* discarding an over-long command line */
	size_t skipped;       /* bytes of it discarded so far */
	bool commit_inflight; /* req is with the spool writer */
	bool released;        /* the conn is gone */
	bool shutdown;        /* say 421 after the commit */
	unsigned errors;
	unsigned transactions;

	/* The transaction. */
	struct submission sub; /* envelope, recipients, the commit */
	bool utf8;             /* MAIL ... SMTPUTF8 */
	unsigned rejected_rcpts;
	struct buf msg; /* content (normalised) */
	struct smtp_data_rx rx;
	bool bdat_used;
	bool bdat_last;
	enum srv_state bdat_prev; /* state before the chunk */
	const char *bdat_error;   /* reply for the chunk being skipped */
	uint64_t bdat_left;
	struct smtp_chunk_state chunk;
};

static void srv_process(struct srv_session *s);
static void srv_free(struct srv_session *s);
static void on_timeout(struct loop_timer *t);

static const struct config *cfg_of(const struct srv_session *s)
{
	return s->srv->cfg;
}

static void set_state(struct srv_session *s, enum srv_state st)
{
	if (s->state == st)
		return;
	log_debug("smtpd %s: %s -> %s", s->peer, state_names[s->state], state_names[st]);
	s->state = st;
}

static void reply(struct srv_session *s, const char *text)
{
	conn_line(&s->conn, "%s", text);
}

/* close_with - a last reply, then close once it is sent. */
static void close_with(struct srv_session *s, const char *text)
{
	reply(s, text);
	set_state(s, SS_CLOSING);
	conn_close_after_flush(&s->conn);
}

/* count_error - one more bad command; too many of them end the session. */
static void count_error(struct srv_session *s)
{
	if (++s->errors >= cfg_of(s)->max_errors && s->state != SS_CLOSING) {
		log_info("smtpd %s: too many errors", s->peer);
		char buf[300];
		snprintf(buf, sizeof(buf), "421 4.7.0 %s Error: too many errors",
		         cfg_of(s)->hostname);
		close_with(s, buf);
	}
}

/* error - a 4xx/5xx reply to a bad command. */
static void error(struct srv_session *s, const char *text)
{
	reply(s, text);
	count_error(s);
}

static void tx_reset(struct srv_session *s)
{
	submission_reset(&s->sub);
	s->utf8 = false;
	s->rejected_rcpts = 0;
	s->bdat_used = false;
	s->bdat_last = false;
	s->bdat_error = NULL;
	s->bdat_left = 0;
	if (s->msg.cap > KEEP_MSG_BYTES)
		buf_shrink(&s->msg, 0);
	else
		buf_reset(&s->msg);
	if (s->state != SS_GREETING && s->state != SS_CLOSING)
		set_state(s, SS_IDLE);
}

/* ---- commands ---------------------------------------------------------- */

static bool parse_number(const char *p, size_t n, uint64_t *v)
{
	uint64_t r = 0;
	if (!n || n > 19)
		return false;
	for (size_t i = 0; i < n; i++) {
		if (p[i] < '0' || p[i] > '9')
			return false;
		r = r * 10 + (uint64_t)(p[i] - '0');
	}
	*v = r;
	return true;
}

static void cmd_helo(struct srv_session *s, const struct smtp_cmd *c, bool esmtp)
{
	if (!c->arg_len) {
		error(s, esmtp ? "501 5.5.4 Syntax: EHLO hostname"
		               : "501 5.5.4 Syntax: HELO hostname");
		return;
	}
	/* Keep a printable copy for Received:. */
	size_t n = 0;
	for (size_t i = 0; i < c->arg_len && n + 1 < sizeof(s->helo); i++) {
		unsigned char ch = (unsigned char)c->arg[i];
		if (ch == ' ')
			break;
		s->helo[n++] = (ch > 32 && ch < 127 && ch != '(' && ch != ')') ? (char)ch : '?';
	}
	s->helo[n] = '\0';
	s->esmtp = esmtp;
	set_state(s, SS_IDLE);
	tx_reset(s);
	const struct config *cfg = cfg_of(s);
	if (!esmtp) {
		conn_line(&s->conn, "250 %s", cfg->hostname);
		return;
	}
	conn_line(&s->conn,
	          "250-%s\r\n250-PIPELINING\r\n250-SIZE %llu\r\n250-8BITMIME\r\n"
	          "250-ENHANCEDSTATUSCODES\r\n250-SMTPUTF8\r\n250-DSN\r\n250 CHUNKING",
	          cfg->hostname, (unsigned long long)cfg->max_message_size);
}

static void cmd_mail(struct srv_session *s, const struct smtp_cmd *c)
{
	const struct config *cfg = cfg_of(s);
	struct smtp_path p;
	if (s->state == SS_GREETING) {
		error(s, "503 5.5.1 Error: send HELO/EHLO first");
		return;
	}
	if (s->state != SS_IDLE) {
		error(s, "503 5.5.1 Error: nested MAIL command");
		return;
	}
	if (!smtp_path_parse(c->arg, c->arg_len, "FROM:", &p)) {
		error(s, "501 5.5.4 Syntax: MAIL FROM:<address>");
		return;
	}
	if (!s->relay_ok) {
		error(s, "530 5.7.0 Authentication required");
		return;
	}
	uint32_t flags = 0;
	bool utf8 = false;
	char envid[101] = "";
	for (unsigned i = 0; i < p.nparams; i++) {
		const struct smtp_param *pp = &p.params[i];
		uint64_t size;
		if (smtp_param_is(pp, "SIZE")) {
			if (!pp->val || !parse_number(pp->val, pp->val_len, &size)) {
				error(s, "501 5.5.4 Bad SIZE parameter");
				return;
			}
			if (size > cfg->max_message_size) {
				error(s,
				      "552 5.3.4 Message size exceeds fixed maximum message size");
				return;
			}
		} else if (smtp_param_is(pp, "BODY")) {
			if (pp->val && pp->val_len == 8 && !strncasecmp(pp->val, "8BITMIME", 8)) {
				flags |= MSG_F_8BIT;
			} else if (!(pp->val && pp->val_len == 4 &&
			             !strncasecmp(pp->val, "7BIT", 4))) {
				error(s, "501 5.5.4 Unsupported BODY parameter");
				return;
			}
		} else if (smtp_param_is(pp, "SMTPUTF8") && !pp->val) {
			utf8 = true;
			flags |= MSG_F_SMTPUTF8;
		} else if (smtp_param_is(pp, "AUTH")) {
			/* RFC 4954 AUTH=<>: informational, ignored. */
		} else if (smtp_param_is(pp, "RET") && pp->val) {
			if (pp->val_len == 4 && !strncasecmp(pp->val, "FULL", 4)) {
				flags |= MSG_F_RET_FULL;
			} else if (pp->val_len == 4 && !strncasecmp(pp->val, "HDRS", 4)) {
				flags |= MSG_F_RET_HDRS;
			} else {
				error(s, "501 5.5.4 Bad RET parameter (FULL or HDRS)");
				return;
			}
		} else if (smtp_param_is(pp, "ENVID") && pp->val) {
			if (smtp_xtext_decode(pp->val, pp->val_len, envid, sizeof(envid)) < 0) {
				error(s, "501 5.5.4 Bad ENVID parameter (xtext, at most 100 "
				         "characters)");
				return;
			}
		} else {
			conn_line(&s->conn, "555 5.5.4 Unsupported option: %.*s",
			          (int)RP_MIN(pp->key_len, 64), pp->key);
			count_error(s);
			return;
		}
	}
	if (p.addr_len) {
		enum addr_error e = addr_check(p.addr, p.addr_len, utf8, NULL);
		if (e == ADDR_NEEDS_UTF8) {
			error(s, "553 5.6.7 Non-ASCII sender address needs SMTPUTF8");
			return;
		}
		if (e != ADDR_OK) {
			conn_line(&s->conn, "501 5.1.7 Bad sender address syntax (%s)",
			          addr_error_str(e));
			count_error(s);
			return;
		}
	}
	if (!spool_accepting(s->srv->spool)) {
		reply(s, "452 4.3.1 Insufficient system storage");
		return;
	}
	submission_reset(&s->sub);
	submission_sender(&s->sub, p.addr, p.addr_len, flags, envid, strlen(envid));
	s->utf8 = utf8;
	set_state(s, SS_MAIL);
	reply(s, "250 2.1.0 Ok");
}

/* parse_notify - RFC 3461 NOTIFY: NEVER alone, or a list of SUCCESS,
 * FAILURE, DELAY. */
static bool parse_notify(const char *v, size_t n, uint8_t *out)
{
	static const struct {
		const char *kw;
		uint8_t bit;
	} kws[] = { { "NEVER", NOTIFY_NEVER },
		    { "SUCCESS", NOTIFY_SUCCESS },
		    { "FAILURE", NOTIFY_FAILURE },
		    { "DELAY", NOTIFY_DELAY } };
	uint8_t bits = 0;
	size_t i = 0;
	while (i < n) {
		size_t j = i;
		while (j < n && v[j] != ',')
			j++;
		bool ok = false;
		for (size_t k = 0; k < RP_ARRAY_LEN(kws); k++)
			if (strlen(kws[k].kw) == j - i && !strncasecmp(v + i, kws[k].kw, j - i)) {
				bits |= kws[k].bit;
				ok = true;
			}
		if (!ok)
			return false;
		i = j + 1;
	}
	if (!bits || ((bits & NOTIFY_NEVER) && bits != NOTIFY_NEVER))
		return false;
	*out = bits;
	return true;
}

static void cmd_rcpt(struct srv_session *s, const struct smtp_cmd *c)
{
	const struct config *cfg = cfg_of(s);
	struct smtp_path p;
	if (s->state != SS_MAIL && s->state != SS_RCPT) {
		error(s, "503 5.5.1 Error: need MAIL command");
		return;
	}
	if (!smtp_path_parse(c->arg, c->arg_len, "TO:", &p)) {
		error(s, "501 5.5.4 Syntax: RCPT TO:<address>");
		return;
	}
	if (s->sub.nrcpt >= cfg->max_recipients) {
		s->rejected_rcpts++;
		reply(s, "452 4.5.3 Error: too many recipients");
		return;
	}
	uint8_t notify = 0;
	char orcpt[300] = "";
	for (unsigned i = 0; i < p.nparams; i++) {
		const struct smtp_param *pp = &p.params[i];
		if (smtp_param_is(pp, "NOTIFY") && pp->val) {
			if (!parse_notify(pp->val, pp->val_len, &notify)) {
				s->rejected_rcpts++;
				error(s, "501 5.5.4 Bad NOTIFY parameter (NEVER, or "
				         "SUCCESS,FAILURE,DELAY)");
				return;
			}
		} else if (smtp_param_is(pp, "ORCPT") && pp->val) {
			const char *semi = memchr(pp->val, ';', pp->val_len);
			size_t tl = semi ? (size_t)(semi - pp->val) : 0;
			if (!semi || !tl || tl > 32 ||
			    smtp_xtext_decode(semi + 1, pp->val_len - tl - 1, orcpt + tl + 1,
			                      sizeof(orcpt) - tl - 1) < 0) {
				s->rejected_rcpts++;
				error(s, "501 5.5.4 Bad ORCPT parameter (addr-type;xtext)");
				return;
			}
			memcpy(orcpt, pp->val, tl);
			orcpt[tl] = ';';
		} else {
			conn_line(&s->conn, "555 5.5.4 Unsupported option: %.*s",
			          (int)RP_MIN(pp->key_len, 64), pp->key);
			s->rejected_rcpts++;
			return;
		}
	}

	enum addr_error e = p.addr_len ? addr_check(p.addr, p.addr_len, s->utf8, NULL) : ADDR_EMPTY;
	if (e == ADDR_NEEDS_UTF8) {
		s->rejected_rcpts++;
		error(s, "553 5.6.7 Non-ASCII recipient address needs SMTPUTF8");
		return;
	}
	if (e != ADDR_OK) {
		s->rejected_rcpts++;
		conn_line(&s->conn, "501 5.1.3 Bad recipient address syntax (%s)",
		          addr_error_str(e));
		count_error(s);
		return;
	}
	submission_add_rcpt(&s->sub, p.addr, p.addr_len, notify, orcpt, strlen(orcpt));
	set_state(s, SS_RCPT);
	reply(s, "250 2.1.5 Ok");
}

static void cmd_data(struct srv_session *s, const struct smtp_cmd *c)
{
	if (c->arg_len) {
		error(s, "501 5.5.4 Syntax: DATA");
		return;
	}
	if (s->state == SS_MAIL && s->rejected_rcpts) {
		error(s, "554 5.5.1 Error: no valid recipients");
		return;
	}
	if (s->state != SS_RCPT) {
		error(s, s->state == SS_MAIL ? "503 5.5.1 Error: need RCPT command"
		                             : "503 5.5.1 Error: need MAIL command");
		return;
	}
	if (s->bdat_used) {
		error(s, "503 5.5.1 Error: DATA after BDAT");
		return;
	}
	buf_reset(&s->msg);
	smtp_data_rx_init(&s->rx, cfg_of(s)->max_message_size, cfg_of(s)->max_line_length);
	set_state(s, SS_DATA);
	reply(s, "354 End data with <CR><LF>.<CR><LF>");
}

static void cmd_bdat(struct srv_session *s, const struct smtp_cmd *c)
{
	const char *a = c->arg, *end = c->arg + c->arg_len;
	const char *sp = memchr(a, ' ', c->arg_len);
	size_t nlen = sp ? (size_t)(sp - a) : c->arg_len;
	uint64_t size;
	bool last = false;
	if (!parse_number(a, nlen, &size)) {
		/* We cannot know how many bytes follow: the session is lost. */
		close_with(s, "501 5.5.4 Syntax: BDAT size [LAST]");
		return;
	}
	if (sp) {
		const char *kw = sp + 1;
		if ((size_t)(end - kw) == 4 && !strncasecmp(kw, "LAST", 4)) {
			last = true;
		} else {
			close_with(s, "501 5.5.4 Syntax: BDAT size [LAST]");
			return;
		}
	}
	s->bdat_prev = s->state;
	s->bdat_left = size;
	s->bdat_last = last;
	s->bdat_error = NULL;
	if (s->state == SS_RCPT) {
		if (!s->bdat_used) {
			s->bdat_used = true;
			buf_reset(&s->msg);
			smtp_chunk_init(&s->chunk);
		}
		if (buf_used(&s->msg) + size > cfg_of(s)->max_message_size)
			s->bdat_error = "552 5.3.4 Message size exceeds fixed maximum message size";
	} else if (s->state == SS_MAIL && s->rejected_rcpts) {
		s->bdat_error = "554 5.5.1 Error: no valid recipients";
	} else {
		s->bdat_error = s->state == SS_MAIL ? "503 5.5.1 Error: need RCPT command"
		                                    : "503 5.5.1 Error: need MAIL command";
	}
	set_state(s, SS_BDAT);
}

static void handle_command(struct srv_session *s, const char *line, size_t len)
{
	struct smtp_cmd c;
	smtp_cmd_parse(line, len, &c);
	switch (c.verb) {
	case SMTP_EHLO:
		cmd_helo(s, &c, true);
		return;
	case SMTP_HELO:
		cmd_helo(s, &c, false);
		return;
	case SMTP_MAIL:
		cmd_mail(s, &c);
		return;
	case SMTP_RCPT:
		cmd_rcpt(s, &c);
		return;
	case SMTP_DATA:
		cmd_data(s, &c);
		return;
	case SMTP_BDAT:
		cmd_bdat(s, &c);
		return;
	case SMTP_RSET:
		if (c.arg_len) {
			error(s, "501 5.5.4 Syntax: RSET");
			return;
		}
		tx_reset(s);
		reply(s, "250 2.0.0 Ok");
		return;
	case SMTP_NOOP:
		reply(s, "250 2.0.0 Ok");
		return;
	case SMTP_QUIT:
		close_with(s, "221 2.0.0 Bye");
		return;
	case SMTP_VRFY:
		reply(s,
		      "252 2.5.0 Cannot VRFY user, but will accept message and attempt delivery");
		return;
	case SMTP_EXPN:
		error(s, "502 5.5.1 Error: EXPN not available");
		return;
	case SMTP_HELP:
		reply(s, "214 2.0.0 ringpost: see RFC 5321 (EHLO HELO MAIL RCPT DATA BDAT RSET "
		         "NOOP QUIT VRFY HELP)");
		return;
	case SMTP_STARTTLS:
		error(s, "502 5.5.1 Error: STARTTLS not available");
		return;
	case SMTP_AUTH:
		error(s, "502 5.5.1 Error: AUTH not available");
		return;
	case SMTP_UNKNOWN:
		error(s, "500 5.5.2 Error: command not recognized");
		return;
	}
	rp_panic("unhandled verb %d", (int)c.verb);
}

/* ---- the message ------------------------------------------------------- */

static void commit_done(struct submission *sub, void *arg);

/* refuse - a message refused at its end: the reply, counted. */
static void refuse(struct srv_session *s, const char *text)
{
	reply(s, text);
	s->srv->rejected++;
	tx_reset(s);
}

/* commit - the content is complete: check it, add the trace fields and
 * hand the submission to the spool. */
static void commit(struct srv_session *s, unsigned content_flags)
{
	const struct config *cfg = cfg_of(s);
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
	if (!spool_accepting(s->srv->spool)) {
		refuse(s, "452 4.3.1 Insufficient system storage");
		return;
	}
	struct submission *sub = &s->sub;
	if (content_flags & SMTP_DATA_8BIT)
		sub->flags |= MSG_F_8BIT;
	submission_start(sub, s->srv->spool, s->peer);
	struct submit_trace t = {
		.from = s->helo,
		.from_ip = s->peer_ip,
		.by = cfg->hostname,
		.with = s->utf8 ? "UTF8SMTP" : (s->esmtp ? "ESMTP" : "SMTP"),
		.for_rcpt = true,
	};
	submission_trace(sub, &t);
	submission_complete(sub, buf_head(&s->msg), buf_used(&s->msg), cfg->hostname);
	submission_content(sub, buf_head(&s->msg), buf_used(&s->msg));
	s->commit_inflight = true;
	set_state(s, SS_COMMIT);
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
		s->transactions++;
		size_t slen;
		const char *sender = submission_sender_addr(sub, &slen);
		log_info("smtpd accepted id=%s from=<%.*s> nrcpt=%u size=%llu client=%s", id,
		         (int)slen, sender, sub->nrcpt, (unsigned long long)submission_size(sub),
		         s->peer);
		if (!s->released)
			conn_line(&s->conn, "250 2.0.0 Ok: queued as %s", id);
	} else {
		srv->rejected++;
		log_warn("smtpd %s: spool refused message: %s", s->peer,
		         st == SPOOL_EFULL ? "full" : "I/O error");
		if (!s->released)
			reply(s, st == SPOOL_EFULL ? "452 4.3.1 Insufficient system storage"
			                           : "451 4.3.0 Error: queue file write error");
	}
	if (s->released) {
		srv_free(s);
		return;
	}
	set_state(s, SS_IDLE);
	tx_reset(s);
	loop_timer_arm(srv->loop, &s->timer, cfg_of(s)->idle_timeout_ms, on_timeout);
	if (s->shutdown) {
		char buf[300];
		snprintf(buf, sizeof(buf), "421 4.3.2 %s Service shutting down",
		         cfg_of(s)->hostname);
		close_with(s, buf);
		return;
	}
	conn_recv_resume(&s->conn);
	srv_process(s);
}

/* ---- input ------------------------------------------------------------- */

static void feed_data(struct srv_session *s)
{
	struct buf *in = &s->conn.in;
	bool done;
	size_t n = smtp_data_rx_feed(&s->rx, buf_head(in), buf_used(in), &s->msg, &done);
	buf_consume(in, n);
	if (done)
		commit(s, s->rx.flags);
}

static void feed_bdat(struct srv_session *s)
{
	struct buf *in = &s->conn.in;
	size_t n = (size_t)RP_MIN((uint64_t)buf_used(in), s->bdat_left);
	if (!s->bdat_error) {
		smtp_chunk_check(&s->chunk, buf_head(in), n, cfg_of(s)->max_line_length);
		buf_append(&s->msg, buf_head(in), n);
	}
	buf_consume(in, n);
	s->bdat_left -= n;
	if (s->bdat_left)
		return;
	if (s->bdat_error) {
		const char *e = s->bdat_error;
		s->bdat_error = NULL;
		/* A failed chunk ends the transaction (RFC 3030 section 4). */
		if (s->bdat_prev == SS_GREETING)
			set_state(s, SS_GREETING);
		else
			tx_reset(s);
		error(s, e);
		return;
	}
	if (!s->bdat_last) {
		set_state(s, SS_RCPT);
		conn_line(&s->conn, "250 2.0.0 Ok: %zu octets received", buf_used(&s->msg));
		return;
	}
	unsigned flags = s->chunk.flags | (s->chunk.last_cr ? SMTP_DATA_BARE_LF : 0);
	if (flags & SMTP_DATA_BARE_LF)
		msg_normalize_newlines(&s->msg, 0);
	commit(s, flags & ~SMTP_DATA_BARE_LF);
}

static void srv_process(struct srv_session *s)
{
	struct conn *c = &s->conn;
	struct buf *in = &c->in;
	/* A zero-size chunk ("BDAT 0 LAST") is complete with no byte to wait
	 * for: run it on an empty buffer too, or its reply would wait for the
	 * client's next command while the client waits for the reply. */
	while (!conn_closing(c) && (buf_used(in) || (s->state == SS_BDAT && !s->bdat_left))) {
		if (s->state == SS_COMMIT || s->state == SS_CLOSING)
			break;
		if (s->state == SS_DATA) {
			feed_data(s);
			continue;
		}
		if (s->state == SS_BDAT) {
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
				count_error(s);
			}
			if (nl) {
				s->skip_line = false;
				s->skipped = 0;
			}
			continue;
		}
		if (!nl) {
			if (avail >= CMD_LINE_MAX) {
				s->skip_line = true;
				buf_consume(in, avail);
				error(s, "500 5.5.2 Error: line too long");
			}
			break;
		}
		size_t total = (size_t)(nl - p) + 1;
		size_t len = total - 1;
		if (len && p[len - 1] == '\r')
			len--;
		if (total > CMD_LINE_MAX) {
			buf_consume(in, total);
			error(s, "500 5.5.2 Error: line too long");
			continue;
		}
		handle_command(s, p, len);
		buf_consume(in, total);
	}
	/* While blocked on the spool, do not let a client fill our memory. */
	if (s->state == SS_COMMIT && buf_used(in) > PAUSE_INPUT_BYTES)
		conn_recv_pause(c);
}

static void on_timeout(struct loop_timer *t)
{
	struct srv_session *s = RP_CONTAINER_OF(t, struct srv_session, timer);
	if (s->state == SS_COMMIT || s->state == SS_CLOSING)
		return;
	log_info("smtpd %s: timeout in state %s", s->peer, state_names[s->state]);
	char buf[300];
	snprintf(buf, sizeof(buf), "421 4.4.2 %s Error: timeout exceeded", cfg_of(s)->hostname);
	close_with(s, buf);
}

static void on_data(struct conn *c)
{
	struct srv_session *s = RP_CONTAINER_OF(c, struct srv_session, conn);
	loop_timer_arm(s->srv->loop, &s->timer, cfg_of(s)->idle_timeout_ms, on_timeout);
	srv_process(s);
}

static void on_closed(struct conn *c, int err)
{
	struct srv_session *s = RP_CONTAINER_OF(c, struct srv_session, conn);
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
	loop_timer_disarm(s->srv->loop, &s->timer);
	if (!s->commit_inflight)
		srv_free(s);
}

static void on_connected(struct conn *c, int err)
{
	(void)c;
	(void)err;
	rp_panic("server sessions never connect");
}

static const struct conn_ops srv_conn_ops = {
	.connected = on_connected,
	.data = on_data,
	.closed = on_closed,
	.released = on_released,
};

static void srv_free(struct srv_session *s)
{
	struct smtpd *srv = s->srv;
	rp_list_del(&s->link);
	srv->nsessions--;
	submission_free(&s->sub);
	buf_free(&s->msg);
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

void smtpd_session_start(struct smtpd *srv, int fd)
{
	const struct config *cfg = srv->cfg;
	struct srv_session *s = xcalloc(1, sizeof(*s));
	struct sockaddr_storage ss;
	s->srv = srv;
	conn_init(&s->conn, srv->loop, &srv_conn_ops, s);
	peer_names(s, fd, &ss);
	snprintf(s->helo, sizeof(s->helo), "unknown");
	s->relay_ok = config_net_allowed(cfg, (struct sockaddr *)&ss);
	s->state = SS_GREETING;
	rp_list_add(&srv->sessions, &s->link);
	srv->nsessions++;
	srv->accepted_sessions++;
	conn_attach(&s->conn, fd);
	log_debug("smtpd %s: connect", s->peer);
	if (srv->nsessions > cfg->max_clients) {
		log_warn("smtpd %s: refused, %u sessions open", s->peer, srv->nsessions - 1);
		close_with(s, "421 4.7.0 Error: too many connections, try again later");
		return;
	}
	conn_line(&s->conn, "220 %s ESMTP ringpost", cfg->hostname);
	loop_timer_arm(srv->loop, &s->timer, cfg->idle_timeout_ms, on_timeout);
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
		if (s->commit_inflight) {
			s->shutdown = true;
			continue;
		}
		close_with(s, buf);
	}
}

struct smtpd *smtpd_new(const struct smtpd_params *p)
{
	struct smtpd *srv = xcalloc(1, sizeof(*srv));
	srv->loop = p->loop;
	srv->spool = p->spool;
	srv->cfg = p->cfg;
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

void smtpd_set_config(struct smtpd *srv, const struct config *cfg)
{
	srv->cfg = cfg;
}

unsigned smtpd_sessions(const struct smtpd *srv)
{
	return srv->nsessions;
}

void smtpd_fill_stats(const struct smtpd *srv, struct stats_snapshot *part)
{
	part->accepted_smtp += srv->messages;
	part->rejected += srv->rejected;
	part->smtp_sessions += srv->accepted_sessions;
	part->inbound_connections += srv->nsessions;
}
