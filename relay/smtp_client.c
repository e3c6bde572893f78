/* smtp_client.c - the outbound SMTP engine's state machine (see smtp_client.h).
 *
 * States and what moves them (one reply at a time, in order):
 *   CONNECT  -connected->  GREETING  -2xx->  EHLO  -2xx->  READY
 *                                            EHLO  -5xx->  HELO -2xx-> READY
 *   EHLO  -2xx, STARTTLS offered and wanted->  STARTTLS  -220->  TLS
 *   TLS  -handshake done->  EHLO (again, capabilities forgotten)
 *   STARTTLS  -refused->  READY (opportunistic) or QUIT (TLS required)
 *   READY    -job->  MAIL (MAIL, RCPT..., DATA|BDAT LAST pipelined, or one
 *                    at a time without PIPELINING)
 *   MAIL     -354->  CONTENT (DATA: content sent)  -reply->  READY
 *   MAIL     -BDAT reply-> READY
 *   READY    -no job->  IDLE  -job->  MAIL ;  IDLE -timeout-> QUIT
 *   QUIT     -reply, close or T_QUIT_MS->  CLOSED
 * A failure before a job is in hand goes to ops->failed (the destination's
 * problem); a failure with a job is reported for each of its recipients.
 * TLS failures before a job (STARTTLS missing or refused where TLS is
 * required, a failed handshake anywhere) are ATTEMPT_TLS_FAIL: the policy
 * in queue/outcome.c defers them (4.7.5), never bounces.
 */
#include "smtp_client.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>

#include "base/conn.h"
#include "base/log.h"
#include "base/util.h"
#include "smtp_cmd.h"
#include "smtp_data.h"
#include "smtp_reply.h"

/* RFC 5321 section 4.5.3.2 timeouts. */
#define T_GREETING_MS   (300 * 1000)
#define T_EHLO_MS       (300 * 1000)
#define T_MAIL_MS       (300 * 1000)
#define T_DATA_MS       (120 * 1000)
#define T_CONTENT_MS    (600 * 1000)
#define T_RSET_MS       (60 * 1000)
#define T_QUIT_MS       (10 * 1000) /* wait this long for the reply to QUIT */
#define IDLE_MS         5000        /* keep an idle session this long for more work */
#define IDLE_KEEP_BYTES 0           /* an idle session keeps no buffer memory */

enum smtp_client_state {
	CS_CONNECT,  /* connecting */
	CS_GREETING, /* waiting for the 220 */
	CS_EHLO,     /* EHLO sent */
	CS_HELO,     /* HELO sent (EHLO refused) */
	CS_STARTTLS, /* STARTTLS sent */
	CS_TLS,      /* TLS handshake running */
	CS_READY,    /* between transactions, asking for work */
	CS_IDLE,     /* parked, waiting for smtp_client_give */
	CS_MAIL,     /* waiting for the replies to MAIL/RCPT/(DATA|BDAT) */
	CS_CONTENT,  /* content sent, waiting for the final reply */
	CS_RSET,     /* RSET sent alone (no pipelining) */
	CS_QUIT,     /* QUIT sent */
	CS_CLOSED,   /* closing, waiting for the conn to be released */
	CS_NSTATES,
};

static const char *const state_names[CS_NSTATES] = {
	"connect", "greeting", "ehlo",    "helo", "starttls", "tls",    "ready",
	"idle",    "mail",     "content", "rset", "quit",     "closed",
};

struct smtp_client {
	struct conn conn;
	struct loop *loop;
	const struct smtp_client_ops *ops;
	void *arg;        /* the owner's, for the callbacks */
	const char *name; /* for logs (the owner's string) */
	char *helo;       /* EHLO/HELO name */
	enum smtp_client_state state;
	struct loop_timer timer;      /* reply timeout / idle timeout */
	struct sockaddr_storage addr; /* next hop (lives until connected) */
	socklen_t addrlen;
	char remote[80];               /* "ip:port" for logs */
	char source[INET6_ADDRSTRLEN]; /* bound local address, "" = kernel's choice */
	struct smtp_caps caps;
	uint64_t idle_ms;          /* idle time before QUIT */
	unsigned max_transactions; /* then QUIT; 0 = no limit */
	unsigned messages;         /* transactions done on this session */
	bool need_rset;            /* a transaction was left open */
	bool working;              /* got past EHLO once */
	bool quit_asked;           /* smtp_client_quit: no more work */
	bool closing_told;         /* ops->closing has run */
	/* The transaction in progress. */
	struct sched_job *job;
	uint64_t job_start_ms; /* when the current attempt started */
	unsigned reply_index;  /* which reply comes next: 0 = MAIL,
	                        * 1..n = RCPT, n+1 = DATA/BDAT */
	unsigned rcpt_ok;      /* RCPTs accepted */
	bool job_sent;         /* its commands went out (counts in messages) */
	bool use_bdat;
	bool rset_pending; /* an RSET reply precedes MAIL's */
	bool mail_failed;
	struct attempt_report *reports; /* one per job recipient */
	unsigned reports_cap;
	bool *rcpt_accepted;
	/* TLS (STARTTLS). */
	struct tls_ctx *tls_ctx; /* a reference; NULL: no STARTTLS */
	enum smtp_tls_policy tls_policy;
	char *tls_name;                 /* SNI and the name to verify, or NULL */
	struct tls_session *tls_resume; /* offered at the handshake, then freed */
	struct tls_session *tls_kept;   /* taken at closing for the owner */
	bool tls_on;                    /* the handshake is done */
	bool tls_verified, tls_resumed;
	bool tls_failed;   /* a handshake was tried and failed */
	bool input_gone;   /* STARTTLS's 220 dropped the input behind it */
	char tls_text[96]; /* "no" or "TLSv1.3/CIPHER verified=yes" */
};

static void client_ready(struct smtp_client *c);
static void client_timeout(struct loop_timer *t);

/* set_state - move to st (logged) and (re)arm or disarm the timeout. */
static void set_state(struct smtp_client *c, enum smtp_client_state st, uint64_t timeout_ms)
{
	if (c->state != st)
		log_debug("smtp %s %s: %s -> %s", c->name, c->remote, state_names[c->state],
		          state_names[st]);
	c->state = st;
	if (timeout_ms)
		loop_timer_arm(c->loop, &c->timer, timeout_ms, client_timeout);
	else
		loop_timer_disarm(c->loop, &c->timer);
}

/* tell_closing - ops->closing, once. A resumable TLS session is kept for
 * the owner first: the conn frees its TLS state when it is released. */
static void tell_closing(struct smtp_client *c)
{
	if (c->closing_told)
		return;
	c->closing_told = true;
	if (c->tls_on && c->conn.tls && !c->tls_kept)
		c->tls_kept = tls_session_take(c->conn.tls);
	c->ops->closing(c, c->arg);
}

/* close_now - stop talking; the conn's release ends the session. */
static void close_now(struct smtp_client *c)
{
	if (c->state == CS_CLOSED)
		return;
	tell_closing(c);
	set_state(c, CS_CLOSED, 0);
	conn_close(&c->conn);
}

/* quit - say QUIT and close once the server has answered it (RFC 5321
 * 4.1.1.10), or at T_QUIT_MS. Until then the session keeps its slot: a
 * replacement session must not reach the server while it still holds this
 * one, or the server would see more than max_connections of ours. Once
 * only: an owner's callback may already have ended the session. */
static void quit(struct smtp_client *c)
{
	if (c->state == CS_QUIT || c->state == CS_CLOSED)
		return;
	tell_closing(c);
	conn_line(&c->conn, "QUIT");
	set_state(c, CS_QUIT, T_QUIT_MS);
}

/* ---- reporting --------------------------------------------------------- */

/* dest_failure - a failure before any job: the destination's problem. */
static void dest_failure(struct smtp_client *c, enum attempt_kind kind, enum attempt_stage stage,
                         int code, const char *text)
{
	struct attempt_report rep;
	outcome_report_set(&rep, kind, stage, code, text);
	c->ops->failed(c, c->arg, &rep);
}

/* finish_job - hand the job and its reports back to the owner. */
static void finish_job(struct smtp_client *c)
{
	struct sched_job *job = c->job;
	uint64_t now = rp_now_ms();
	c->job = NULL;
	if (c->job_sent) /* a job refused locally used no transaction */
		c->messages++;
	c->ops->outcome(c, c->arg, job, c->reports,
	                now > c->job_start_ms ? now - c->job_start_ms : 0);
}

/* fail_job - every recipient of the job gets the same report. */
static void fail_job(struct smtp_client *c, enum attempt_kind kind, enum attempt_stage stage,
                     int code, const char *text)
{
	if (!c->job)
		return;
	for (unsigned i = 0; i < c->job->nrcpt; i++)
		outcome_report_set(&c->reports[i], kind, stage, code, text);
	finish_job(c);
}

/* stage_now - which command the next reply answers. */
static enum attempt_stage stage_now(const struct smtp_client *c)
{
	switch (c->state) {
	case CS_CONNECT:
		return STAGE_CONNECT;
	case CS_GREETING:
		return STAGE_GREETING;
	case CS_EHLO:
	case CS_HELO:
	case CS_STARTTLS:
	case CS_TLS:
		return STAGE_EHLO;
	case CS_MAIL:
		if (c->reply_index == 0)
			return STAGE_MAIL;
		if (c->job && c->reply_index <= c->job->nrcpt)
			return STAGE_RCPT;
		/* BDAT LAST went out with the content: its reply is the
		 * final one, as on_mail_phase_reply reports it. */
		return c->use_bdat ? STAGE_CONTENT : STAGE_DATA;
	case CS_CONTENT:
		return STAGE_CONTENT;
	default:
		return STAGE_OTHER;
	}
}

/* stage_text - Postfix-style words for where a session broke. */
static const char *stage_text(enum attempt_stage st)
{
	switch (st) {
	case STAGE_CONNECT:
		return "while connecting";
	case STAGE_GREETING:
		return "while receiving the initial server greeting";
	case STAGE_EHLO:
		return "while performing the EHLO handshake";
	case STAGE_MAIL:
		return "while sending MAIL FROM";
	case STAGE_RCPT:
		return "while sending RCPT TO";
	case STAGE_DATA:
		return "while sending DATA command";
	case STAGE_CONTENT:
		return "while sending end of data -- message may be sent more than once";
	case STAGE_OTHER:
		break;
	}
	return "";
}

/* session_broken - timeout or lost connection: report and close. */
static void session_broken(struct smtp_client *c, enum attempt_kind kind, const char *what)
{
	char text[300];
	enum attempt_stage st = stage_now(c);
	snprintf(text, sizeof(text), "%s with %s %s", what, c->remote, stage_text(st));
	if (c->job)
		fail_job(c, kind, st, 0, text);
	else if (c->state == CS_GREETING || c->state == CS_EHLO || c->state == CS_HELO ||
	         c->state == CS_STARTTLS)
		dest_failure(c, kind, st, 0, text);
	else if (c->state != CS_IDLE && c->state != CS_QUIT && c->state != CS_READY)
		log_info("smtp %s %s: %s", c->name, c->remote, text);
	close_now(c);
}

/* ---- transactions ------------------------------------------------------ */

static void send_mail(struct smtp_client *c)
{
	const struct sched_job *j = c->job;
	struct buf *out = conn_outbuf(&c->conn);
	buf_printf(out, "MAIL FROM:<%.*s>", (int)j->sender_len, j->sender);
	if (c->caps.flags & SMTP_CAP_SIZE)
		buf_printf(out, " SIZE=%zu", buf_used(&j->body));
	if ((j->msg_flags & MSG_F_8BIT) && (c->caps.flags & SMTP_CAP_8BITMIME))
		buf_puts(out, " BODY=8BITMIME");
	if (j->msg_flags & MSG_F_SMTPUTF8)
		buf_puts(out, " SMTPUTF8");
	if (c->caps.flags & SMTP_CAP_DSN) {
		char x[320];
		if (j->msg_flags & MSG_F_RET_FULL)
			buf_puts(out, " RET=FULL");
		else if (j->msg_flags & MSG_F_RET_HDRS)
			buf_puts(out, " RET=HDRS");
		if (j->envid_len && smtp_xtext_encode(j->envid, j->envid_len, x, sizeof(x)) > 0)
			buf_printf(out, " ENVID=%s", x);
	}
	buf_puts(out, "\r\n");
	conn_flush_soon(&c->conn);
}

static void send_rcpt(struct smtp_client *c, unsigned i)
{
	const struct sched_job_rcpt *r = &c->job->rcpt[i];
	struct buf *out = conn_outbuf(&c->conn);
	buf_printf(out, "RCPT TO:<%.*s>", (int)r->addr_len, r->addr);
	if (c->caps.flags & SMTP_CAP_DSN) {
		static const char *const names[] = { "NEVER", "SUCCESS", "FAILURE", "DELAY" };
		if (r->notify) {
			buf_puts(out, " NOTIFY=");
			bool first = true;
			for (unsigned b = 0; b < 4; b++)
				if (r->notify & (1u << b)) {
					buf_printf(out, "%s%s", first ? "" : ",", names[b]);
					first = false;
				}
		}
		/* Only a well-formed ORCPT goes out (RFC 3461 4.2): the type an
		 * atom, the address printable, the value within 500 octets. */
		char x[SMTP_ORCPT_MAX + 1];
		if (r->orcpt_len && smtp_orcpt_encode(r->orcpt, r->orcpt_len, x, sizeof(x)) > 0)
			buf_printf(out, " ORCPT=%s", x);
	}
	buf_puts(out, "\r\n");
	conn_flush_soon(&c->conn);
}

/* send_data_cmd - DATA, or BDAT with the whole content as its LAST chunk. */
static void send_data_cmd(struct smtp_client *c)
{
	if (c->use_bdat) {
		struct buf *out = conn_outbuf(&c->conn);
		const char *p = buf_head(&c->job->body);
		size_t n = buf_used(&c->job->body);
		/* BDAT goes as it is: only CRLF line ends may go (a stored
		 * message has no other; this holds whatever the spool gives). */
		struct buf canon = { 0 };
		if (!smtp_crlf_only(p, n)) {
			smtp_crlf_canon(p, n, &canon);
			p = buf_head(&canon);
			n = buf_used(&canon);
		}
		buf_printf(out, "BDAT %zu LAST\r\n", n);
		buf_append(out, p, n);
		buf_free(&canon);
		conn_flush_soon(&c->conn);
	} else {
		conn_line(&c->conn, "DATA");
	}
}

/* start_transaction - send job's commands; false when it was refused
 * locally (too big, needs SMTPUTF8) and is already reported. */
static bool start_transaction(struct smtp_client *c, struct sched_job *job)
{
	char text[300];
	c->job = job;
	c->job_start_ms = rp_now_ms();
	c->job_sent = false;
	if (c->reports_cap < job->nrcpt) {
		c->reports_cap = job->nrcpt;
		c->reports = xrealloc(c->reports, c->reports_cap * sizeof(*c->reports));
		c->rcpt_accepted = xrealloc(c->rcpt_accepted, c->reports_cap * sizeof(bool));
	}
	for (unsigned i = 0; i < job->nrcpt; i++) {
		outcome_report_set(&c->reports[i], ATTEMPT_LOST, STAGE_OTHER, 0, "no reply");
		c->rcpt_accepted[i] = false;
	}
	/* Refuse locally what the server announced it would refuse. */
	size_t size = buf_used(&job->body);
	if (c->caps.size_max && size > c->caps.size_max) {
		snprintf(text, sizeof(text), "message size %zu exceeds the size limit %llu of %s",
		         size, (unsigned long long)c->caps.size_max, c->remote);
		fail_job(c, ATTEMPT_TOO_BIG, STAGE_MAIL, 0, text);
		return false;
	}
	if ((job->msg_flags & MSG_F_SMTPUTF8) && !(c->caps.flags & SMTP_CAP_SMTPUTF8)) {
		snprintf(text, sizeof(text), "SMTPUTF8 is required, but was not offered by %s",
		         c->remote);
		fail_job(c, ATTEMPT_NEEDS_UTF8, STAGE_MAIL, 0, text);
		return false;
	}
	c->job_sent = true;
	c->use_bdat = c->caps.flags & SMTP_CAP_CHUNKING;
	c->reply_index = 0;
	c->rcpt_ok = 0;
	c->mail_failed = false;
	c->rset_pending = false;
	bool pipelining = c->caps.flags & SMTP_CAP_PIPELINING;
	if (pipelining) {
		/* A completed transaction leaves the server clean (RFC 5321
		 * 4.1.1.4); RSET rides in front only after one was abandoned. */
		if (c->need_rset) {
			conn_line(&c->conn, "RSET");
			c->rset_pending = true;
		}
		send_mail(c);
		for (unsigned i = 0; i < job->nrcpt; i++)
			send_rcpt(c, i);
		send_data_cmd(c);
	} else if (c->need_rset) {
		conn_line(&c->conn, "RSET");
		set_state(c, CS_RSET, T_RSET_MS);
		return true;
	} else {
		send_mail(c);
	}
	c->need_rset = false;
	set_state(c, CS_MAIL, T_MAIL_MS);
	return true;
}

/* after_transaction - the job is settled; reuse the session or leave. */
static void after_transaction(struct smtp_client *c)
{
	if ((c->max_transactions && c->messages >= c->max_transactions) || c->quit_asked) {
		quit(c);
		return;
	}
	client_ready(c);
}

static void on_mail_phase_reply(struct smtp_client *c, const struct smtp_reply *r,
                                const char *summary)
{
	struct sched_job *j = c->job;
	bool pipelining = c->caps.flags & SMTP_CAP_PIPELINING;
	int cls = r->code / 100;
	if (r->code == 421) {
		/* The server is closing: whoever was not already refused gets
		 * the 421, and the rest of the pipeline will never be answered. */
		enum attempt_stage st = c->rset_pending ? STAGE_MAIL : stage_now(c);
		for (unsigned i = 0; i < j->nrcpt; i++)
			if (c->rcpt_accepted[i] || c->reports[i].kind != ATTEMPT_REPLY)
				outcome_report_set(&c->reports[i], ATTEMPT_REPLY, st, r->code,
				                   summary);
		finish_job(c);
		close_now(c);
		return;
	}
	if (c->rset_pending) {
		c->rset_pending = false;
		return;
	}
	unsigned k = c->reply_index++;
	if (k == 0) {
		/* MAIL FROM */
		if (cls != 2) {
			c->mail_failed = true;
			for (unsigned i = 0; i < j->nrcpt; i++)
				outcome_report_set(&c->reports[i], ATTEMPT_REPLY, STAGE_MAIL,
				                   r->code, summary);
			c->need_rset = true;
			if (!pipelining) {
				finish_job(c);
				after_transaction(c);
			}
			return;
		}
		if (!pipelining)
			send_rcpt(c, 0);
		set_state(c, CS_MAIL, T_MAIL_MS);
		return;
	}
	if (k <= j->nrcpt) {
		/* RCPT TO number k-1 */
		unsigned i = k - 1;
		if (!c->mail_failed) {
			if (cls == 2) {
				c->rcpt_accepted[i] = true;
				c->rcpt_ok++;
			} else {
				outcome_report_set(&c->reports[i], ATTEMPT_REPLY, STAGE_RCPT,
				                   r->code, summary);
				c->reports[i].after_accept = c->rcpt_ok > 0;
			}
		}
		if (!pipelining) {
			if (i + 1 < j->nrcpt) {
				send_rcpt(c, i + 1);
			} else if (c->rcpt_ok == 0) {
				c->need_rset = true;
				finish_job(c);
				after_transaction(c);
				return;
			} else {
				send_data_cmd(c);
				set_state(c, CS_MAIL, c->use_bdat ? T_CONTENT_MS : T_DATA_MS);
				return;
			}
		}
		set_state(c, CS_MAIL, T_MAIL_MS);
		return;
	}
	/* DATA (354 expected) or BDAT LAST (the final reply). */
	if (c->use_bdat) {
		for (unsigned i = 0; i < j->nrcpt; i++)
			if (c->rcpt_accepted[i])
				outcome_report_set(&c->reports[i], ATTEMPT_REPLY, STAGE_CONTENT,
				                   r->code, summary);
		if (c->mail_failed || !c->rcpt_ok || cls != 2)
			c->need_rset = true;
		finish_job(c);
		after_transaction(c);
		return;
	}
	if (r->code == 354) {
		if (!c->rcpt_ok) {
			/* The server wants content nobody will get: end it empty. */
			buf_puts(conn_outbuf(&c->conn), ".\r\n");
			conn_flush_soon(&c->conn);
			c->need_rset = true;
		} else {
			smtp_dot_stuff(buf_head(&j->body), buf_used(&j->body),
			               conn_outbuf(&c->conn));
			conn_flush_soon(&c->conn);
		}
		set_state(c, CS_CONTENT, T_CONTENT_MS);
		return;
	}
	for (unsigned i = 0; i < j->nrcpt; i++)
		if (c->rcpt_accepted[i])
			outcome_report_set(&c->reports[i], ATTEMPT_REPLY, STAGE_DATA, r->code,
			                   summary);
	c->need_rset = true;
	finish_job(c);
	after_transaction(c);
}

static void on_content_reply(struct smtp_client *c, const struct smtp_reply *r, const char *summary)
{
	struct sched_job *j = c->job;
	for (unsigned i = 0; i < j->nrcpt; i++)
		if (c->rcpt_accepted[i])
			outcome_report_set(&c->reports[i], ATTEMPT_REPLY, STAGE_CONTENT, r->code,
			                   summary);
	finish_job(c);
	if (r->code == 421)
		close_now(c);
	else
		after_transaction(c);
}

/* ---- STARTTLS (RFC 3207) ---------------------------------------------- */

/* tls_needed - the policy does not allow clear text. */
static bool tls_needed(const struct smtp_client *c)
{
	return c->tls_policy == SMTP_TLS_REQUIRED || c->tls_policy == SMTP_TLS_VERIFY;
}

/* tls_fail - TLS could not be had where it was needed: report, then QUIT
 * (the conversation is still clear and sane) or close (it is not). */
static void tls_fail(struct smtp_client *c, int code, const char *text, bool say_quit)
{
	dest_failure(c, ATTEMPT_TLS_FAIL, STAGE_EHLO, code, text);
	if (say_quit)
		quit(c);
	else
		close_now(c);
}

/* after_ehlo - the server said what it offers: STARTTLS when the policy
 * wants it and it is offered, a TLS failure when the policy needs TLS and
 * it cannot be had, the transactions otherwise. */
static void after_ehlo(struct smtp_client *c)
{
	char text[300];
	bool offered = c->caps.flags & SMTP_CAP_STARTTLS;
	if (!c->tls_on && offered && c->tls_ctx && c->tls_policy != SMTP_TLS_OFF) {
		conn_line(&c->conn, "STARTTLS");
		set_state(c, CS_STARTTLS, T_EHLO_MS);
		return;
	}
	if (!c->tls_on && tls_needed(c)) {
		snprintf(text, sizeof(text), "TLS is required, but %s %s",
		         offered ? "no TLS client context is configured for"
		                 : "STARTTLS was not offered by",
		         c->remote);
		tls_fail(c, 0, text, true);
		return;
	}
	client_ready(c);
}

/* start_tls - the server said 220 to STARTTLS: from here on TLS. What it
 * sent after the 220 is dropped (conn_tls_client): it came in clear text
 * and could have been injected. */
static void start_tls(struct smtp_client *c)
{
	struct tls_client_opts o = { .sni = c->tls_name, .resume = c->tls_resume };
	if (c->tls_policy == SMTP_TLS_VERIFY)
		o.verify_name = c->tls_name;
	else
		o.check_name = c->tls_name; /* reported as verified=yes|no */
	c->input_gone = true;
	set_state(c, CS_TLS, T_EHLO_MS);
	conn_tls_client(&c->conn, c->tls_ctx, &o); /* a failure calls on_closed now */
	tls_session_free(c->tls_resume);           /* SSL_set_session took its own */
	c->tls_resume = NULL;
}

/* starttls_refused - a non-2xx reply to STARTTLS. */
static void starttls_refused(struct smtp_client *c, const struct smtp_reply *r, const char *summary)
{
	char text[480];
	if (r->code == 421) { /* the server is leaving: as a refused EHLO */
		dest_failure(c, ATTEMPT_REPLY, STAGE_EHLO, r->code, summary);
		quit(c);
		return;
	}
	if (tls_needed(c)) {
		snprintf(text, sizeof(text), "TLS is required, but %s refused STARTTLS: %s",
		         c->remote, summary);
		tls_fail(c, r->code, text, true);
		return;
	}
	log_info("smtp %s %s: STARTTLS refused; going on in clear text: reply=%s", c->name,
	         c->remote, log_value(text, sizeof(text), summary, strlen(summary)));
	client_ready(c);
}

/* tls_handshake_failed - the handshake broke (err from the conn: -EPROTO
 * with the TLS error, another -errno, 0 for a close) or timed out (NULL
 * why). Opportunistic owners may try again in clear text. */
static void tls_handshake_failed(struct smtp_client *c, int err, const char *why)
{
	char text[300];
	if (!why && err == -EPROTO && c->conn.tls && tls_error_text(c->conn.tls)[0]) {
		why = tls_error_text(c->conn.tls);
		if (!strncmp(why, "TLS handshake: ", 15))
			why += 15;
	} else if (!why) {
		why = err ? strerror(-err) : "the server closed the connection";
	}
	snprintf(text, sizeof(text), "TLS handshake with %s failed: %s", c->remote, why);
	c->tls_failed = true;
	tls_fail(c, 0, text, false);
}

/* on_tls_ready - the handshake is done: note what it gave, say EHLO again
 * and forget what the server offered in clear text (RFC 3207 4.2). */
static void on_tls_ready(struct conn *conn)
{
	struct smtp_client *c = RP_CONTAINER_OF(conn, struct smtp_client, conn);
	char desc[64];
	if (c->state != CS_TLS)
		return;
	const struct tls *t = conn->tls;
	c->tls_on = true;
	c->tls_verified = tls_verified(t);
	c->tls_resumed = tls_resumed(t);
	tls_describe(t, desc, sizeof(desc));
	snprintf(c->tls_text, sizeof(c->tls_text), "%s verified=%s", desc,
	         c->tls_verified ? "yes" : "no");
	log_debug("smtp %s %s: TLS %s%s (certificate: %s)", c->name, c->remote, c->tls_text,
	          c->tls_resumed ? " resumed" : "", tls_verify_text(t));
	if (c->tls_policy == SMTP_TLS_VERIFY && !c->tls_verified) {
		/* The handshake verifies under this policy; never go on unverified. */
		tls_handshake_failed(c, 0, tls_verify_text(t));
		return;
	}
	memset(&c->caps, 0, sizeof(c->caps));
	conn_line(&c->conn, "EHLO %s", c->helo);
	set_state(c, CS_EHLO, T_EHLO_MS);
}

/* ---- session ----------------------------------------------------------- */

/* client_ready - between transactions: run the owner's next job, or park
 * (or leave, when asked to). Jobs refused locally are reported and the
 * next one is asked for at once. */
static void client_ready(struct smtp_client *c)
{
	bool first = !c->working;
	c->working = true;
	set_state(c, CS_READY, 0);
	struct sched_job *job;
	while (!c->quit_asked && (job = c->ops->ready(c, c->arg, first))) {
		first = false;
		if (start_transaction(c, job))
			return;
	}
	if (c->quit_asked) {
		quit(c);
		return;
	}
	set_state(c, CS_IDLE, c->idle_ms);
	conn_trim(&c->conn, IDLE_KEEP_BYTES);
}

void smtp_client_give(struct smtp_client *c, struct sched_job *job)
{
	rp_assert(c->state == CS_IDLE && !c->job);
	set_state(c, CS_READY, 0);
	if (!start_transaction(c, job))
		client_ready(c);
}

/* handle_reply - one complete reply, in the state that expects it. */
static void handle_reply(struct smtp_client *c, const struct smtp_reply *r)
{
	char summary[320];
	smtp_reply_summary(r, summary, sizeof(summary));
	log_debug("smtp %s %s: <- %s", c->name, c->remote, summary);
	int cls = r->code / 100;
	switch (c->state) {
	case CS_GREETING:
		if (cls == 2) {
			conn_line(&c->conn, "EHLO %s", c->helo);
			set_state(c, CS_EHLO, T_EHLO_MS);
		} else {
			dest_failure(c, ATTEMPT_REPLY, STAGE_GREETING, r->code, summary);
			quit(c);
		}
		return;
	case CS_EHLO:
		if (cls == 2) {
			smtp_caps_parse(r, &c->caps);
			after_ehlo(c);
		} else if (cls == 5) {
			conn_line(&c->conn, "HELO %s", c->helo);
			set_state(c, CS_HELO, T_EHLO_MS);
		} else {
			dest_failure(c, ATTEMPT_REPLY, STAGE_EHLO, r->code, summary);
			quit(c);
		}
		return;
	case CS_HELO:
		if (cls == 2) {
			memset(&c->caps, 0, sizeof(c->caps));
			after_ehlo(c); /* no STARTTLS without EHLO */
		} else {
			dest_failure(c, ATTEMPT_REPLY, STAGE_EHLO, r->code, summary);
			quit(c);
		}
		return;
	case CS_STARTTLS:
		if (cls == 2)
			start_tls(c);
		else
			starttls_refused(c, r, summary);
		return;
	case CS_MAIL:
		on_mail_phase_reply(c, r, summary);
		return;
	case CS_CONTENT:
		on_content_reply(c, r, summary);
		return;
	case CS_RSET:
		if (r->code == 421) {
			close_now(c);
			return;
		}
		c->need_rset = false;
		send_mail(c);
		set_state(c, CS_MAIL, T_MAIL_MS);
		return;
	case CS_IDLE:
	case CS_READY:
		/* Unsolicited: typically 421 before the server drops an idle
		 * session. Nothing is in flight; just leave. */
		log_debug("smtp %s %s: unsolicited reply while idle: %s", c->name, c->remote,
		          summary);
		close_now(c);
		return;
	case CS_QUIT:
		/* The reply to QUIT: the server lets us go (with TLS, after
		 * our close_notify). */
		tell_closing(c);
		set_state(c, CS_CLOSED, T_QUIT_MS); /* a send that never ends, too */
		conn_close_after_flush(&c->conn);
		return;
	case CS_CLOSED:
		return;
	case CS_TLS: /* the input was dropped at the switch: nothing comes here */
	case CS_CONNECT:
	case CS_NSTATES:
		break;
	}
	rp_panic("reply in state %s", state_names[c->state]);
}

/* on_data - parse every complete reply in the input. A 220 to STARTTLS
 * drops the input behind it (conn_tls_client): nothing more is read from
 * this batch, the reply itself included. */
static void on_data(struct conn *conn)
{
	struct smtp_client *c = RP_CONTAINER_OF(conn, struct smtp_client, conn);
	struct buf *in = &conn->in;
	while (buf_used(in) && c->state != CS_CLOSED && c->state != CS_TLS) {
		struct smtp_reply r;
		long n = smtp_reply_parse(buf_head(in), buf_used(in), &r);
		if (n == -2)
			break;
		if (n < 0) {
			session_broken(c, ATTEMPT_LOST, "malformed reply");
			return;
		}
		c->input_gone = false;
		handle_reply(c, &r);
		if (c->input_gone)
			return;
		buf_consume(in, (size_t)n);
	}
}

/* client_timeout - an idle session leaves; a waiting one is broken. */
static void client_timeout(struct loop_timer *t)
{
	struct smtp_client *c = RP_CONTAINER_OF(t, struct smtp_client, timer);
	if (c->state == CS_IDLE) {
		quit(c);
		return;
	}
	if (c->state == CS_CLOSED) { /* our close_notify after QUIT did not go out */
		conn_close(&c->conn);
		return;
	}
	if (c->state == CS_TLS) {
		tls_handshake_failed(c, 0, "timed out");
		return;
	}
	session_broken(c, ATTEMPT_TIMEOUT, "conversation timed out");
}

static void on_connected(struct conn *conn, int err)
{
	struct smtp_client *c = RP_CONTAINER_OF(conn, struct smtp_client, conn);
	if (c->state == CS_CLOSED)
		return;
	if (err) {
		char text[300];
		snprintf(text, sizeof(text), "connect to %s%s%s: %s", c->remote,
		         c->source[0] ? " from " : "", c->source, strerror(-err));
		dest_failure(c, ATTEMPT_CONNECT_FAIL, STAGE_CONNECT, 0, text);
		close_now(c);
		return;
	}
	set_state(c, CS_GREETING, T_GREETING_MS);
}

static void on_closed(struct conn *conn, int err)
{
	struct smtp_client *c = RP_CONTAINER_OF(conn, struct smtp_client, conn);
	if (c->state == CS_QUIT || c->state == CS_CLOSED)
		return;
	if (c->state == CS_TLS) {
		tls_handshake_failed(c, err, NULL);
		return;
	}
	if (err == -EPROTO && conn_tls_error(conn) != TLS_OK && conn->tls) {
		char what[200];
		snprintf(what, sizeof(what), "TLS failure (%s)", tls_error_text(conn->tls));
		session_broken(c, ATTEMPT_LOST, what);
		return;
	}
	session_broken(c, ATTEMPT_LOST, "lost connection");
}

/* on_released - the last completion is in: tell the owner, then free. */
static void on_released(struct conn *conn)
{
	struct smtp_client *c = RP_CONTAINER_OF(conn, struct smtp_client, conn);
	if (c->job) /* cannot happen: every path reports first; be safe */
		fail_job(c, ATTEMPT_LOST, STAGE_OTHER, 0, "session ended");
	loop_timer_disarm(c->loop, &c->timer);
	tell_closing(c);
	c->ops->done(c, c->arg);
	free(c->reports);
	free(c->rcpt_accepted);
	free(c->helo);
	free(c->tls_name);
	tls_session_free(c->tls_resume);
	tls_session_free(c->tls_kept);
	tls_ctx_unref(c->tls_ctx);
	free(c);
}

static const struct conn_ops client_conn_ops = {
	.connected = on_connected,
	.data = on_data,
	.closed = on_closed,
	.released = on_released,
	.tls_ready = on_tls_ready,
};

/* format_host - "1.2.3.4" or "::1". */
static void format_host(const struct sockaddr *sa, char *out, size_t n)
{
	const void *a = sa->sa_family == AF_INET
	                    ? (const void *)&((const struct sockaddr_in *)sa)->sin_addr
	                    : (const void *)&((const struct sockaddr_in6 *)sa)->sin6_addr;
	if (!inet_ntop(sa->sa_family, a, out, (socklen_t)n))
		snprintf(out, n, "?");
}

/* format_remote - "1.2.3.4:25" or "[::1]:25". */
static void format_remote(const struct sockaddr *sa, char *out, size_t n)
{
	char host[INET6_ADDRSTRLEN] = "?";
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *sin = (const struct sockaddr_in *)sa;
		inet_ntop(AF_INET, &sin->sin_addr, host, sizeof(host));
		snprintf(out, n, "%s:%u", host, ntohs(sin->sin_port));
	} else {
		const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)sa;
		inet_ntop(AF_INET6, &sin6->sin6_addr, host, sizeof(host));
		snprintf(out, n, "[%s]:%u", host, ntohs(sin6->sin6_port));
	}
}

/* tls_setup - the TLS part of the params. Under verify, a hop without a
 * name (an address route or literal) must show a certificate for its
 * address. */
static void tls_setup(struct smtp_client *c, const struct smtp_client_params *p)
{
	c->tls_ctx = tls_ctx_ref(p->tls_ctx);
	c->tls_policy = p->tls_policy;
	c->tls_resume = p->tls_resume;
	snprintf(c->tls_text, sizeof(c->tls_text), "no");
	if (p->tls_name && p->tls_name[0]) {
		c->tls_name = xstrdup(p->tls_name);
	} else if (c->tls_policy == SMTP_TLS_VERIFY) {
		char host[INET6_ADDRSTRLEN] = "";
		format_host((const struct sockaddr *)&c->addr, host, sizeof(host));
		c->tls_name = xstrdup(host);
	}
}

struct smtp_client *smtp_client_open(const struct smtp_client_params *p)
{
	rp_assert(p->addrlen <= sizeof(struct sockaddr_storage));
	struct smtp_client *c = xcalloc(1, sizeof(*c));
	c->loop = p->loop;
	c->ops = p->ops;
	c->arg = p->arg;
	c->name = p->name;
	c->idle_ms = p->idle_ms ? p->idle_ms : IDLE_MS;
	c->max_transactions = p->max_transactions;
	memcpy(&c->addr, p->addr, p->addrlen);
	c->addrlen = p->addrlen;
	c->state = CS_CONNECT;
	format_remote((struct sockaddr *)&c->addr, c->remote, sizeof(c->remote));
	if (p->source)
		format_host(p->source, c->source, sizeof(c->source));
	conn_init(&c->conn, c->loop, &client_conn_ops, c);
	int rc = conn_connect_from(&c->conn, (struct sockaddr *)&c->addr, c->addrlen, p->source,
	                           p->sourcelen, p->connect_timeout_ms);
	if (rc < 0) {
		free(c);
		errno = -rc;
		return NULL;
	}
	c->helo = xstrdup(p->helo);
	tls_setup(c, p);
	log_debug("smtp %s: connecting to %s", c->name, c->remote);
	return c;
}

void smtp_client_quit(struct smtp_client *c)
{
	c->quit_asked = true;
	switch (c->state) {
	case CS_IDLE:
		quit(c);
		return;
	case CS_READY:
		/* Called from ops->ready or ops->outcome inside client_ready:
		 * it sees quit_asked when the callback returns, and a job
		 * handed over in the same call still runs first. */
		return;
	case CS_CONNECT:
	case CS_GREETING:
	case CS_EHLO:
	case CS_HELO:
	case CS_STARTTLS:
	case CS_TLS:
		close_now(c);
		return;
	case CS_MAIL:
	case CS_CONTENT:
	case CS_RSET:
		return; /* busy: after_transaction sees quit_asked */
	case CS_QUIT:
	case CS_CLOSED:
		return;
	case CS_NSTATES:
		break;
	}
	rp_panic("quit in state %d", (int)c->state);
}

void smtp_client_abort(struct smtp_client *c)
{
	if (c->job)
		fail_job(c, ATTEMPT_ABANDONED, stage_now(c), 0, "delivery abandoned at shutdown");
	close_now(c);
}

const char *smtp_client_remote(const struct smtp_client *c)
{
	return c->remote;
}

const char *smtp_client_source(const struct smtp_client *c)
{
	return c->source[0] ? c->source : NULL;
}

const char *smtp_client_helo(const struct smtp_client *c)
{
	return c->helo;
}

bool smtp_client_idle(const struct smtp_client *c)
{
	return c->state == CS_IDLE;
}

const char *smtp_client_tls(const struct smtp_client *c)
{
	return c->tls_text;
}

bool smtp_client_tls_active(const struct smtp_client *c)
{
	return c->tls_on;
}

bool smtp_client_tls_verified(const struct smtp_client *c)
{
	return c->tls_verified;
}

bool smtp_client_tls_resumed(const struct smtp_client *c)
{
	return c->tls_resumed;
}

bool smtp_client_tls_handshake_failed(const struct smtp_client *c)
{
	return c->tls_failed;
}

struct tls_session *smtp_client_tls_session_take(struct smtp_client *c)
{
	struct tls_session *s = c->tls_kept;
	c->tls_kept = NULL;
	if (!s && c->tls_on && c->conn.tls)
		s = tls_session_take(c->conn.tls);
	return s;
}
