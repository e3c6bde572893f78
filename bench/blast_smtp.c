/* blast_smtp.c - the "smtp" mode of ringpost-blast: one session's SMTP
 * client, one transaction at a time.
 *
 * With PIPELINING and CHUNKING offered (and not refused by the options) a
 * transaction is one write: [RSET] MAIL, every RCPT, "BDAT n LAST" and the
 * content; without CHUNKING, DATA then the dot-stuffed content after 354;
 * without PIPELINING, one command per round trip. The outcome of a
 * transaction is the first reply that decided it: MAIL's if refused, else
 * the first RCPT refusal if no recipient was taken, else the final reply.
 *
 * With --starttls: EHLO, STARTTLS, the handshake once its 220 is consumed,
 * EHLO again (a server that does not offer STARTTLS ends the run); with
 * --handshakes the session is ready as soon as the handshake completes.
 * With --tls the whole session is in TLS (the run begins it at connect).
 */
#include "blast.h"

#include <stdio.h>

#include "base/log.h"
#include "relay/smtp_data.h"
#include "relay/smtp_reply.h"

#define EHLO_NAME "blast.bench.test"

enum sm_phase {
	SM_GREETING, /* waiting for 220 */
	SM_EHLO,     /* EHLO sent */
	SM_HELO,     /* EHLO refused, HELO sent */
	SM_READY,    /* between transactions */
	SM_TX,       /* [RSET] MAIL, RCPTs, DATA or BDAT replies due */
	SM_CONTENT,  /* DATA content sent, the final reply due */
	SM_STARTTLS, /* STARTTLS sent, its 220 due */
	SM_TLS,      /* the TLS handshake runs */
	SM_NPHASES,
};

static const char *const phase_names[SM_NPHASES] = {
	"greeting", "ehlo", "helo", "ready", "tx", "content", "starttls", "tls",
};

struct smtp_st {
	uint8_t phase;     /* enum sm_phase */
	bool pipelining;   /* offered and allowed */
	bool chunking;     /* offered and allowed */
	bool size;         /* SIZE offered: MAIL carries SIZE= */
	bool need_rset;    /* the last transaction failed half-way */
	bool rset_pending; /* a RSET reply comes before MAIL's */
	bool mail_failed;
	bool tls_begin;   /* STARTTLS's 220 arrived: TLS begins once it is consumed */
	bool tls;         /* STARTTLS done: the EHLO that follows needs no STARTTLS */
	unsigned step;    /* replies of this transaction: 0 MAIL, 1..R RCPT, R+1 DATA/BDAT */
	unsigned rcpt_ok; /* recipients accepted */
	int mail_code;    /* MAIL's refusal */
	int rcpt_code;    /* the first RCPT refusal */
};

/* set_phase - every transition, with a debug line. */
static void set_phase(struct blast_sess *s, struct smtp_st *st, enum sm_phase ph)
{
	if (st->phase != ph)
		log_debug("blast smtp %u: %s -> %s", s->conn.io.slot, phase_names[st->phase],
		          phase_names[ph]);
	st->phase = (uint8_t)ph;
}

/* put - append n bytes to the conn's output. */
static void put(struct buf *out, const char *p, size_t n)
{
	buf_append(out, p, n);
}

/* write_mail - MAIL FROM with SIZE= when offered. */
static void write_mail(struct blast_sess *s, struct smtp_st *st)
{
	const struct blast_opts *o = blast_opts_of(s);
	struct buf *out = conn_outbuf(&s->conn);
	put(out, "MAIL FROM:<", 11);
	buf_puts(out, o->from);
	if (st->size) {
		char *w = buf_reserve(out, 32);
		memcpy(w, "> SIZE=", 7);
		unsigned n = bench_utoa(w + 7, s->job.size);
		buf_commit(out, 7 + n);
		put(out, "\r\n", 2);
	} else {
		put(out, ">\r\n", 3);
	}
}

/* write_rcpt - RCPT TO for recipient j of the job. */
static void write_rcpt(struct blast_sess *s, unsigned j)
{
	struct buf *out = conn_outbuf(&s->conn);
	char *w = buf_reserve(out, 320);
	memcpy(w, "RCPT TO:<", 9);
	size_t n = blast_msg_rcpt(s->job.seq, j, w + 9);
	memcpy(w + 9 + n, ">\r\n", 3);
	buf_commit(out, 12 + n);
}

/* write_data_cmd - "BDAT n LAST" and the content, or "DATA". */
static void write_data_cmd(struct blast_sess *s, struct smtp_st *st)
{
	struct buf *out = conn_outbuf(&s->conn);
	if (!st->chunking) {
		put(out, "DATA\r\n", 6);
		return;
	}
	char *w = buf_reserve(out, 40);
	memcpy(w, "BDAT ", 5);
	unsigned n = bench_utoa(w + 5, s->job.size);
	memcpy(w + 5 + n, " LAST\r\n", 7);
	buf_commit(out, 12 + n);
	blast_msg_write(&s->job, out);
}

/* write_content - DATA's content, dot-stuffed, with the final dot. */
static void write_content(struct blast_sess *s)
{
	struct buf *scratch = blast_scratch(s);
	buf_reset(scratch);
	blast_msg_write(&s->job, scratch);
	smtp_dot_stuff(buf_head(scratch), buf_used(scratch), conn_outbuf(&s->conn));
}

/* smtp_start - connected: wait for the greeting. */
static void smtp_start(struct blast_sess *s)
{
	struct smtp_st *st = blast_sess_state(s);
	set_phase(s, st, SM_GREETING);
}

/* smtp_send - write the transaction: all of it when pipelining, else MAIL (or RSET). */
static void smtp_send(struct blast_sess *s)
{
	struct smtp_st *st = blast_sess_state(s);
	const struct blast_opts *o = blast_opts_of(s);
	struct buf *out = conn_outbuf(&s->conn);
	st->step = 0;
	st->rcpt_ok = 0;
	st->mail_failed = false;
	st->mail_code = 0;
	st->rcpt_code = 0;
	st->rset_pending = st->need_rset;
	if (st->need_rset)
		put(out, "RSET\r\n", 6);
	st->need_rset = false;
	if (st->pipelining) {
		write_mail(s, st);
		for (unsigned j = 0; j < o->rcpts; j++)
			write_rcpt(s, j);
		write_data_cmd(s, st);
	} else if (!st->rset_pending) {
		write_mail(s, st);
	}
	conn_flush_soon(&s->conn);
	set_phase(s, st, SM_TX);
}

/* smtp_quit - QUIT; the server closes after its 221 (RFC 5321 4.1.1.10),
 * and that EOF releases the session without a cancel (see sess_abort). */
static void smtp_quit(struct blast_sess *s)
{
	conn_puts(&s->conn, "QUIT\r\n");
}

/* outcome - the transaction is over; code is its final reply. */
static void outcome(struct blast_sess *s, struct smtp_st *st, int code)
{
	int result = code;
	if (st->mail_failed)
		result = st->mail_code;
	else if (!st->rcpt_ok)
		result = st->rcpt_code ? st->rcpt_code : code;
	if (result / 100 != 2)
		st->need_rset = true;
	set_phase(s, st, SM_READY);
	blast_sess_done(s, result);
}

/* fail_code - the session ends on an unexpected reply (e.g. 421). */
static void fail_code(struct blast_sess *s, int code)
{
	char key[8];
	snprintf(key, sizeof(key), "%03d", code);
	blast_sess_fail(s, key);
}

/* on_tx_reply - one reply of the MAIL/RCPT/DATA|BDAT sequence. */
static void on_tx_reply(struct blast_sess *s, struct smtp_st *st, int code)
{
	const struct blast_opts *o = blast_opts_of(s);
	bool ok = code / 100 == 2;
	if (st->rset_pending) {
		st->rset_pending = false;
		if (!st->pipelining) {
			write_mail(s, st);
			conn_flush_soon(&s->conn);
		}
		return;
	}
	unsigned k = st->step++;
	if (k == 0) {
		if (!ok) {
			st->mail_failed = true;
			st->mail_code = code;
			if (!st->pipelining)
				outcome(s, st, code);
			return;
		}
		if (!st->pipelining) {
			write_rcpt(s, 0);
			conn_flush_soon(&s->conn);
		}
		return;
	}
	if (k <= o->rcpts) {
		if (ok)
			st->rcpt_ok++;
		else if (!st->rcpt_code)
			st->rcpt_code = code;
		if (st->pipelining)
			return;
		if (k < o->rcpts)
			write_rcpt(s, k);
		else if (!st->rcpt_ok)
			outcome(s, st, code);
		else
			write_data_cmd(s, st);
		conn_flush_soon(&s->conn);
		return;
	}
	if (st->chunking || code != 354) {
		outcome(s, st, code);
		return;
	}
	/* 354: the content; with nobody to receive it, an empty message. */
	if (st->mail_failed || !st->rcpt_ok)
		conn_puts(&s->conn, ".\r\n");
	else
		write_content(s);
	conn_flush_soon(&s->conn);
	set_phase(s, st, SM_CONTENT);
}

/* on_ehlo_ok - EHLO (or HELO) accepted: STARTTLS first if wanted, else
 * the session is ready with what the server offers. */
static void on_ehlo_ok(struct blast_sess *s, struct smtp_st *st, const struct smtp_reply *r)
{
	const struct blast_opts *o = blast_opts_of(s);
	struct smtp_caps caps = { 0 };
	if (st->phase == SM_EHLO)
		smtp_caps_parse(r, &caps);
	if (o->starttls && !st->tls) {
		if (!(caps.flags & SMTP_CAP_STARTTLS)) {
			blast_run_fatal(s, "no-starttls",
			                "the server does not offer STARTTLS (--starttls)");
			return;
		}
		conn_puts(&s->conn, "STARTTLS\r\n");
		set_phase(s, st, SM_STARTTLS);
		return;
	}
	st->pipelining = o->pipelining && (caps.flags & SMTP_CAP_PIPELINING);
	st->chunking = o->chunking && (caps.flags & SMTP_CAP_CHUNKING);
	st->size = caps.flags & SMTP_CAP_SIZE;
	set_phase(s, st, SM_READY);
	blast_sess_ready(s);
}

/* smtp_tls_ready - the handshake completed: EHLO again (RFC 3207), or with
 * --handshakes that was all. With --tls the greeting is still to come. */
static void smtp_tls_ready(struct blast_sess *s)
{
	struct smtp_st *st = blast_sess_state(s);
	if (st->phase != SM_TLS)
		return;
	if (blast_opts_of(s)->handshake_loop) {
		set_phase(s, st, SM_READY);
		blast_sess_ready(s);
		return;
	}
	conn_puts(&s->conn, "EHLO " EHLO_NAME "\r\n");
	set_phase(s, st, SM_EHLO);
	blast_sess_wait(s);
}

/* on_reply - one complete reply in the current phase. */
static void on_reply(struct blast_sess *s, struct smtp_st *st, const struct smtp_reply *r)
{
	int code = r->code;
	bool ok = code / 100 == 2;
	if (code == 421 && st->phase != SM_READY) {
		fail_code(s, code);
		return;
	}
	switch (st->phase) {
	case SM_GREETING:
		if (!ok) {
			fail_code(s, code);
			return;
		}
		conn_puts(&s->conn, "EHLO " EHLO_NAME "\r\n");
		set_phase(s, st, SM_EHLO);
		return;
	case SM_EHLO:
	case SM_HELO:
		if (ok) {
			on_ehlo_ok(s, st, r);
			return;
		}
		if (st->phase == SM_EHLO && code / 100 == 5) {
			conn_puts(&s->conn, "HELO " EHLO_NAME "\r\n");
			set_phase(s, st, SM_HELO);
			return;
		}
		fail_code(s, code);
		return;
	case SM_TX:
		on_tx_reply(s, st, code);
		return;
	case SM_CONTENT:
		outcome(s, st, code);
		return;
	case SM_READY:
		/* Unsolicited (a 421 before an idle close): leave. */
		blast_sess_fail(s, "lost");
		return;
	case SM_STARTTLS:
		if (code != 220) {
			fail_code(s, code);
			return;
		}
		st->tls_begin = true; /* smtp_data, once this reply is consumed */
		set_phase(s, st, SM_TLS);
		return;
	case SM_TLS:
		blast_sess_fail(s, "protocol"); /* clear text while TLS begins */
		return;
	case SM_NPHASES:
		break;
	}
	rp_panic("reply in phase %u", st->phase);
}

/* smtp_data - parse every complete reply and act on it. */
static void smtp_data(struct blast_sess *s)
{
	struct smtp_st *st = blast_sess_state(s);
	struct buf *in = &s->conn.in;
	while (buf_used(in) && !conn_closing(&s->conn)) {
		struct smtp_reply r;
		long n = smtp_reply_parse(buf_head(in), buf_used(in), &r);
		if (n == -2)
			break;
		if (n < 0) {
			blast_sess_fail(s, "protocol");
			return;
		}
		on_reply(s, st, &r);
		buf_consume(in, (size_t)n);
		if (st->tls_begin) {
			/* Anything after the 220 is dropped: it did not come through TLS. */
			st->tls_begin = false;
			st->tls = true;
			blast_sess_tls_start(s);
			break;
		}
	}
	/* More replies are due: the clock restarts at each one. */
	if (!conn_closing(&s->conn) && st->phase != SM_READY)
		blast_sess_wait(s);
}

const struct blast_mode blast_mode_smtp = {
	.name = "smtp",
	.state_size = sizeof(struct smtp_st),
	.format = BLAST_MSG_MIME,
	.batches = false,
	.pipelines = false, /* PIPELINING is within a transaction; one at a time */
	.start = smtp_start,
	.send = smtp_send,
	.data = smtp_data,
	.quit = smtp_quit,
	.tls_ready = smtp_tls_ready,
};
