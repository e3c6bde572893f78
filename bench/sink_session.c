/* sink_session.c - one SMTP server session of ringpost-sink: ESMTP with
 * PIPELINING, CHUNKING, 8BITMIME, SIZE, SMTPUTF8, ENHANCEDSTATUSCODES, and
 * STARTTLS with --tls-cert (or TLS from the first byte, --tls-implicit).
 *
 * Promises: every command gets a reply with an enhanced code, in order;
 * replies to a pipelined batch leave in one send (conn.h); a message is
 * counted (and, with --save, written byte-exact after un-stuffing or chunk
 * concatenation) before its 250 is queued. Without --save only the first
 * HEAD_KEEP bytes of a message are kept, for the latency header. Delayed
 * replies (--reply-delay, tarpit, --max-rate) are held, in order, until the
 * release time of the batch of input that produced them; input keeps being
 * read. A session is freed when its conn is released; idle sessions give
 * their buffers back (the sweep), so 20,000 idle sessions cost little more
 * than their kernel sockets (TLS sessions keep OpenSSL's state, not its
 * record buffers). STARTTLS (RFC 3207): the 220 leaves in clear text, then
 * TLS begins; commands pipelined behind STARTTLS are discarded, and the
 * session starts over as if just greeted (EHLO again, STARTTLS no longer
 * offered).
 */
#include "sink.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>
#include <sys/uio.h>
#include <unistd.h>

#include "base/log.h"
#include "base/msg_header.h"
#include "base/conn.h"
#include "relay/smtp_cmd.h"
#include "relay/smtp_data.h"

#define CMD_LINE_MAX      4096 /* lenient: RFC 5321 says 512 */
#define HEAD_KEEP         8192 /* message bytes kept without --save */
#define KEEP_MSG_BYTES    (256u << 10)
#define PAUSE_INPUT_BYTES (1u << 20)
#define SWEEP_MS          1000 /* idle this long: buffers are released */
#define DATA_LINE_MAX     1000
#define HOLD_SEGS         4 /* release times kept per session; more are merged */
/* The EHLO reply between the host name and CHUNKING (SIZE takes a %llu). */
#define EHLO_CAPS                                                                                  \
	"250-PIPELINING\r\n250-SIZE %llu\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n"                      \
	"250-ENHANCEDSTATUSCODES\r\n"

/* Bytes of held up to end (from its head) may leave at at_ms. */
struct hold_seg {
	uint64_t at_ms;
	size_t end;
};

enum sk_state {
	SK_GREETING, /* banner sent, no EHLO/HELO yet */
	SK_IDLE,     /* no transaction */
	SK_MAIL,     /* MAIL accepted */
	SK_RCPT,     /* MAIL and at least one RCPT seen */
	SK_DATA,     /* reading DATA content */
	SK_BDAT,     /* reading a BDAT chunk */
	SK_SILENT,   /* the silence fault: read and say nothing, ever */
	SK_CLOSING,  /* a last reply is queued; closing after it */
	SK_STARTTLS, /* STARTTLS's 220 is queued (maybe held): TLS begins once it leaves */
	SK_NSTATES,
};

static const char *const state_names[SK_NSTATES] = {
	"greeting", "idle", "mail", "rcpt", "data", "bdat", "silent", "closing", "starttls",
};

struct sink_sess {
	struct conn conn;
	struct sink_loop *sl;
	struct rp_list link;            /* on the loop's session list */
	struct loop_timer timer;        /* releases held replies */
	struct buf held;                /* replies not sent yet (delays, --max-rate) */
	struct hold_seg seg[HOLD_SEGS]; /* when each part of held may leave */
	uint8_t nseg;                   /* parts of held; 0 = nothing held */
	struct buf msg;                 /* message head, or all of it with --save */
	struct buf env;                 /* --save: "from=<a> to=<b>,<c>" */
	uint32_t *rdom;                 /* domain id of each accepted recipient */
	uint32_t rdom_cap;
	uint32_t dom;              /* domain joined for session counts, or SINK_NO_DOMAIN */
	struct smtp_data_rx rx;    /* DATA un-stuffing */
	uint64_t release_ms;       /* replies written now leave then (0: at once) */
	uint64_t last_active_ms;   /* last input, for the sweep */
	uint64_t msg_size;         /* content bytes of this message so far */
	uint64_t bdat_left;        /* bytes of the current chunk still to come */
	const char *bdat_error;    /* reply to the chunk being skipped, or NULL */
	uint32_t reply_delay_ms;   /* --reply-delay, or the tarpit's */
	uint16_t nrcpt;            /* accepted recipients */
	uint16_t nrcpt_seen;       /* RCPT commands in this transaction */
	uint8_t state;             /* enum sk_state */
	uint8_t bdat_prev;         /* the state before the chunk */
	bool close_after_hold;     /* close once held replies are out */
	bool bdat_used, bdat_last; /* this transaction uses BDAT; the chunk is LAST */
	bool drop;                 /* the drop fault hit this message */
	bool skip_line;            /* discarding an over-long command line */
	bool tls_on;               /* TLS has begun (STARTTLS or --tls-implicit) */
	bool tls_up;               /* its handshake completed */
};

static void process(struct sink_sess *s);

/* set_state - every transition, with a debug line. */
static void set_state(struct sink_sess *s, enum sk_state st)
{
	if (s->state == st)
		return;
	log_debug("sink session %u: %s -> %s", s->conn.io.slot, state_names[s->state],
	          state_names[st]);
	s->state = (uint8_t)st;
}

/* hold_timer - send the held replies that are due; re-arm for the rest. */
static void hold_timer(struct loop_timer *t);

/* out - queue reply bytes: to the conn, or held until release_ms. Release
 * times never go backwards: bytes leave in order. */
static void out(struct sink_sess *s, const char *p, size_t n)
{
	uint64_t now = loop_now_ms(s->sl->loop);
	uint64_t at = s->release_ms;
	if (!s->nseg && at <= now) {
		conn_write(&s->conn, p, n);
		return;
	}
	buf_append(&s->held, p, n);
	size_t end = buf_used(&s->held);
	if (s->nseg && (s->seg[s->nseg - 1].at_ms >= at || s->nseg == HOLD_SEGS)) {
		struct hold_seg *last = &s->seg[s->nseg - 1];
		last->end = end;
		last->at_ms = RP_MAX(last->at_ms, at);
	} else {
		s->seg[s->nseg++] = (struct hold_seg){ .at_ms = at, .end = end };
		if (s->nseg == 1)
			loop_timer_arm(s->sl->loop, &s->timer, at > now ? at - now : 0, hold_timer);
	}
	if (buf_used(&s->held) > PAUSE_INPUT_BYTES)
		conn_recv_pause(&s->conn); /* a client that never reads our replies */
}

/* reply - one reply line with CRLF; 4xx and 5xx are counted by code. */
static void reply(struct sink_sess *s, const char *line, size_t n)
{
	int code = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
	if (code >= 400 && code < SINK_MAX_CODE)
		bench_ctr_add(&s->sl->ctr.rejected[code], 1);
	out(s, line, n);
}

#define R(s, lit) reply((s), lit "\r\n", sizeof(lit "\r\n") - 1)

/* close_with - a last reply, then close once it is sent. */
static void close_with(struct sink_sess *s, const char *line, size_t n)
{
	reply(s, line, n);
	set_state(s, SK_CLOSING);
	if (s->nseg)
		s->close_after_hold = true;
	else
		conn_close_after_flush(&s->conn);
}

#define CLOSE_WITH(s, lit) close_with((s), lit "\r\n", sizeof(lit "\r\n") - 1)

/* tx_reset - forget the transaction (RSET, end of message, failed chunk). */
static void tx_reset(struct sink_sess *s)
{
	s->nrcpt = 0;
	s->nrcpt_seen = 0;
	buf_reset(&s->env);
	if (s->msg.cap > KEEP_MSG_BYTES)
		buf_shrink(&s->msg, 0);
	else
		buf_reset(&s->msg);
	s->msg_size = 0;
	s->bdat_used = false;
	s->bdat_last = false;
	s->bdat_error = NULL;
	s->bdat_left = 0;
	s->drop = false;
	if (s->state != SK_GREETING && s->state != SK_CLOSING)
		set_state(s, SK_IDLE);
}

/* ---- TLS --------------------------------------------------------------- */

/* tls_begin - switch to TLS now: queued replies (STARTTLS's 220) leave in
 * clear text first, unread input is discarded (conn.h), and the session
 * starts over as if just greeted (RFC 3207 section 4.2). */
static void tls_begin(struct sink_sess *s)
{
	conn_tls_server(&s->conn, s->sl->sk->tls);
	s->tls_on = true;
	set_state(s, SK_GREETING);
	tx_reset(s);
}

/* cmd_starttls - 220 now, TLS once it has left (process or hold_timer). */
static void cmd_starttls(struct sink_sess *s, const struct smtp_cmd *c)
{
	if (!s->sl->sk->tls) {
		R(s, "502 5.5.1 Error: command not implemented");
		return;
	}
	if (s->tls_on) {
		R(s, "503 5.5.1 Error: TLS already active");
		return;
	}
	if (c->arg_len) {
		R(s, "501 5.5.4 Syntax: STARTTLS");
		return;
	}
	if (s->state == SK_GREETING) {
		R(s, "503 5.5.1 Error: send EHLO first");
		return;
	}
	if (s->state != SK_IDLE) {
		R(s, "503 5.5.1 Error: MAIL transaction in progress");
		return;
	}
	R(s, "220 2.0.0 Ready to start TLS");
	set_state(s, SK_STARTTLS);
}

/* ---- held replies ------------------------------------------------------ */

/* hold_begin - a batch of input starts: its replies wait the reply delay. */
static void hold_begin(struct sink_sess *s)
{
	s->release_ms = s->reply_delay_ms ? loop_now_ms(s->sl->loop) + s->reply_delay_ms : 0;
}

static void hold_timer(struct loop_timer *t)
{
	struct sink_sess *s = RP_CONTAINER_OF(t, struct sink_sess, timer);
	uint64_t now = loop_now_ms(s->sl->loop);
	size_t due = 0;
	unsigned k = 0;
	while (k < s->nseg && s->seg[k].at_ms <= now)
		due = s->seg[k++].end;
	if (due) {
		conn_write(&s->conn, buf_head(&s->held), due);
		buf_consume(&s->held, due);
	}
	for (unsigned i = k; i < s->nseg; i++) {
		s->seg[i - k] = s->seg[i];
		s->seg[i - k].end -= due;
	}
	s->nseg = (uint8_t)(s->nseg - k);
	if (s->nseg) {
		loop_timer_arm(s->sl->loop, &s->timer, s->seg[0].at_ms - now, hold_timer);
		return;
	}
	if (s->close_after_hold) {
		conn_close_after_flush(&s->conn);
		return;
	}
	if (s->state == SK_STARTTLS)
		tls_begin(s); /* the held 220 is in the conn's output now */
	conn_recv_resume(&s->conn);
}

/* hold_for - --max-rate: this reply and the batch's later ones wait delay_ms. */
static void hold_for(struct sink_sess *s, uint64_t delay_ms)
{
	s->release_ms = RP_MAX(s->release_ms, loop_now_ms(s->sl->loop) + delay_ms);
}

/* ---- the end of a message ---------------------------------------------- */

/* latency_record - end-to-end latency from the sender's header, if present. */
static void latency_record(struct sink_sess *s)
{
	struct msg_header_info hi;
	const char *val;
	size_t len;
	const char *p = buf_head(&s->msg);
	size_t n = buf_used(&s->msg);
	msg_header_scan(p, n, &hi);
	if (!msg_header_get(p, hi.end, s->sl->sk->opt.latency_header, &val, &len))
		return;
	uint64_t sent = 0;
	size_t i = 0;
	for (; i < len && i < 20 && val[i] >= '0' && val[i] <= '9'; i++)
		sent = sent * 10 + (uint64_t)(val[i] - '0');
	if (!i || sent < 946684800000000000ull)
		return; /* not a CLOCK_REALTIME ns value (before 2000) */
	uint64_t now = bench_realtime_ns();
	histo_add(&s->sl->ctr.latency, now > sent ? (now - sent) / 1000 : 0);
}

/* save_message - DIR/<n>.eml: the envelope line, then the content as received.
 * Returns n, or 0 when the file could not be written. */
static uint64_t save_message(struct sink_sess *s)
{
	struct sink *sk = s->sl->sk;
	uint64_t n = atomic_fetch_add(&sk->save_seq, 1) + 1;
	char path[4200];
	snprintf(path, sizeof(path), "%s/%llu.eml", sk->opt.save_dir, (unsigned long long)n);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0) {
		log_warn("sink: cannot create %s: %s", path, strerror(errno));
		return 0;
	}
	struct iovec iov[4] = {
		{ .iov_base = "X-Sink-Envelope: ", .iov_len = 17 },
		{ .iov_base = buf_head(&s->env), .iov_len = buf_used(&s->env) },
		{ .iov_base = "\r\n", .iov_len = 2 },
		{ .iov_base = buf_head(&s->msg), .iov_len = buf_used(&s->msg) },
	};
	size_t total = 0;
	for (unsigned i = 0; i < 4; i++)
		total += iov[i].iov_len;
	ssize_t w = writev(fd, iov, 4);
	if (w < 0 || (size_t)w != total) /* a regular file takes it all or fails */
		log_warn("sink: short write to %s", path);
	close(fd);
	bench_ctr_add(&s->sl->ctr.saved, 1);
	return n;
}

/* account - the message is accepted: counters, per-domain counters, latency. */
static void account(struct sink_sess *s)
{
	struct sink_loop *sl = s->sl;
	struct sink_counters *c = &sl->ctr;
	bench_ctr_add(&c->messages, 1);
	bench_ctr_add(&c->recipients, s->nrcpt);
	bench_ctr_add(&c->bytes, s->msg_size);
	if (s->tls_up)
		bench_ctr_add(&c->tls_messages, 1);
	if (++sl->mark_epoch == 0) {
		memset(sl->dom_mark, 0, SINK_MAX_DOMAINS * sizeof(*sl->dom_mark));
		sl->mark_epoch = 1;
	}
	for (unsigned i = 0; i < s->nrcpt; i++) {
		uint32_t id = s->rdom[i];
		struct sink_dom_ctr *d = &c->dom[id];
		bench_ctr_add(&d->recipients, 1);
		if (sl->dom_mark[id] != sl->mark_epoch) {
			sl->dom_mark[id] = sl->mark_epoch;
			bench_ctr_add(&d->messages, 1);
			bench_ctr_add(&d->bytes, s->msg_size);
		}
	}
	latency_record(s);
}

/* withhold_250 - the drop250 fault: the message arrived whole (and is saved,
 * its number listed in DIR/unacked), then the connection closes without
 * the final reply. The client cannot tell it from a message that never
 * arrived and sends it again: an honest duplicate, at least once. */
static void withhold_250(struct sink_sess *s)
{
	struct sink *sk = s->sl->sk;
	uint64_t saved = sk->opt.save_dir ? save_message(s) : 0;
	if (saved && sk->unacked_fd >= 0) {
		char line[32];
		int n = snprintf(line, sizeof(line), "%llu\n", (unsigned long long)saved);
		/* One short O_APPEND write: lines of several loops never mix. */
		if (write(sk->unacked_fd, line, (size_t)n) != n)
			log_warn("sink: cannot write to the unacked list: %s", strerror(errno));
	}
	bench_ctr_add(&s->sl->ctr.dropped_250, 1);
	set_state(s, SK_CLOSING);
	conn_close(&s->conn);
}

/* finish_message - the content is complete: the final reply. */
static void finish_message(struct sink_sess *s, bool too_big)
{
	struct sink *sk = s->sl->sk;
	if (too_big) {
		R(s, "552 5.3.4 Message size exceeds fixed maximum message size");
		tx_reset(s);
		return;
	}
	if (sink_chance(s->sl, sk->opt.faults.data451)) {
		char line[160];
		reply(s, line, sink_reply_line(451, "data", line, sizeof(line)));
		tx_reset(s);
		return;
	}
	if (sink_chance(s->sl, sk->opt.faults.drop250)) {
		withhold_250(s);
		return;
	}
	account(s);
	uint64_t saved = sk->opt.save_dir ? save_message(s) : 0;
	if (sk->opt.max_rate > 0) {
		uint64_t d = sink_rate_delay_ms(s->sl);
		if (d)
			hold_for(s, d);
	}
	if (saved) {
		char line[80];
		int n = snprintf(line, sizeof(line), "250 2.0.0 Ok: queued as %llu\r\n",
		                 (unsigned long long)saved);
		out(s, line, (size_t)n);
	} else {
		R(s, "250 2.0.0 Ok: queued");
	}
	tx_reset(s);
}

/* ---- commands ---------------------------------------------------------- */

/* parse_number - a decimal without sign; false on anything else. */
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

/* env_add - --save: the envelope line, as "from=<a>" then " to=<b>" ",<c>". */
static void env_add(struct sink_sess *s, const char *pre, const char *a, size_t n)
{
	if (!s->sl->sk->opt.save_dir)
		return;
	buf_puts(&s->env, pre);
	buf_append(&s->env, a, n);
	buf_append(&s->env, ">", 1);
}

/* cmd_helo - EHLO/HELO: reset, then the capabilities (EHLO) or one line (HELO). */
static void cmd_helo(struct sink_sess *s, const struct smtp_cmd *c, bool esmtp)
{
	if (!c->arg_len) {
		if (esmtp)
			R(s, "501 5.5.4 Syntax: EHLO hostname");
		else
			R(s, "501 5.5.4 Syntax: HELO hostname");
		return;
	}
	set_state(s, SK_IDLE);
	tx_reset(s);
	struct sink *sk = s->sl->sk;
	struct buf *e = sk->tls && !s->tls_on ? &sk->ehlo_starttls : &sk->ehlo;
	if (esmtp) {
		out(s, buf_head(e), buf_used(e));
	} else {
		/* The first line of the EHLO reply, as the last line. */
		const char *p = buf_head(e), *nl = memchr(p, '\n', buf_used(e));
		out(s, "250 ", 4);
		out(s, p + 4, (size_t)(nl + 1 - (p + 4)));
	}
}

/* cmd_mail - MAIL FROM: state, syntax and parameters; starts the transaction. */
static void cmd_mail(struct sink_sess *s, const struct smtp_cmd *c)
{
	struct smtp_path p;
	if (s->state == SK_GREETING) {
		R(s, "503 5.5.1 Error: send HELO/EHLO first");
		return;
	}
	if (s->state != SK_IDLE) {
		R(s, "503 5.5.1 Error: nested MAIL command");
		return;
	}
	if (s->sl->sk->opt.tls_required && !s->tls_on) {
		R(s, "530 5.7.0 Must issue a STARTTLS command first");
		return;
	}
	if (!smtp_path_parse(c->arg, c->arg_len, "FROM:", &p)) {
		R(s, "501 5.5.4 Syntax: MAIL FROM:<address>");
		return;
	}
	for (unsigned i = 0; i < p.nparams; i++) {
		const struct smtp_param *pp = &p.params[i];
		uint64_t size;
		if (smtp_param_is(pp, "SIZE")) {
			if (!pp->val || !parse_number(pp->val, pp->val_len, &size)) {
				R(s, "501 5.5.4 Bad SIZE parameter");
				return;
			}
			if (size > SINK_MAX_SIZE) {
				R(s, "552 5.3.4 Message size exceeds fixed maximum message size");
				return;
			}
		} else if (smtp_param_is(pp, "BODY")) {
			if (!pp->val ||
			    (!(pp->val_len == 8 && !strncasecmp(pp->val, "8BITMIME", 8)) &&
			     !(pp->val_len == 4 && !strncasecmp(pp->val, "7BIT", 4)))) {
				R(s, "501 5.5.4 Unsupported BODY parameter");
				return;
			}
		} else if (!(smtp_param_is(pp, "SMTPUTF8") && !pp->val) &&
		           !smtp_param_is(pp, "AUTH")) {
			R(s, "555 5.5.4 Unsupported option");
			return;
		}
	}
	buf_reset(&s->env);
	env_add(s, "from=<", p.addr, p.addr_len);
	set_state(s, SK_MAIL);
	R(s, "250 2.1.0 Ok");
}

/* rcpt_accept - keep the recipient's domain. The session counts for the
 * domain of its current transaction's first recipient (a sender that
 * reuses sessions across domains moves them: per-domain concurrency is of
 * sessions carrying that domain's mail). */
static void rcpt_accept(struct sink_sess *s, const struct smtp_path *p)
{
	const char *at = memrchr(p->addr, '@', p->addr_len);
	const char *d = at ? at + 1 : "";
	size_t dn = at ? (size_t)(p->addr + p->addr_len - d) : 0;
	uint32_t id = sink_domain_id(s->sl, d, dn);
	if (s->nrcpt == s->rdom_cap) {
		s->rdom_cap = s->rdom_cap ? s->rdom_cap * 2 : 4;
		s->rdom = xrealloc(s->rdom, s->rdom_cap * sizeof(*s->rdom));
	}
	s->rdom[s->nrcpt++] = id;
	if (s->nrcpt == 1 && s->dom != id) {
		if (s->dom != SINK_NO_DOMAIN)
			sink_domain_leave(s->sl->sk, s->dom);
		s->dom = id;
		sink_domain_join(s->sl->sk, id);
	}
	env_add(s, s->nrcpt == 1 ? " to=<" : ",<", p->addr, p->addr_len);
}

/* cmd_rcpt - RCPT TO: the script and the faults decide; else accepted. */
static void cmd_rcpt(struct sink_sess *s, const struct smtp_cmd *c)
{
	struct sink *sk = s->sl->sk;
	struct smtp_path p;
	char line[160];
	if (s->state != SK_MAIL && s->state != SK_RCPT) {
		R(s, "503 5.5.1 Error: need MAIL command");
		return;
	}
	if (!smtp_path_parse(c->arg, c->arg_len, "TO:", &p)) {
		R(s, "501 5.5.4 Syntax: RCPT TO:<address>");
		return;
	}
	if (p.nparams) {
		R(s, "555 5.5.4 Unsupported option");
		return;
	}
	if (!p.addr_len) {
		R(s, "501 5.1.3 Bad recipient address syntax");
		return;
	}
	if (s->nrcpt_seen >= SINK_MAX_RCPTS) {
		R(s, "452 4.5.3 Error: too many recipients");
		return;
	}
	s->nrcpt_seen++;
	set_state(s, SK_RCPT);
	int code = 250;
	if (sk->script)
		code = sink_script_code(sk, p.addr, p.addr_len);
	if (code / 100 == 2 && sink_chance(s->sl, sk->opt.faults.rcpt451))
		code = 451;
	if (code / 100 == 2 && sink_chance(s->sl, sk->opt.faults.rcpt550))
		code = 550;
	if (code / 100 != 2) {
		reply(s, line, sink_reply_line(code, "rcpt", line, sizeof(line)));
		return;
	}
	rcpt_accept(s, &p);
	R(s, "250 2.1.5 Ok");
}

/* data_refusal - why DATA/BDAT cannot start now, or NULL. */
static const char *data_refusal(const struct sink_sess *s)
{
	if (s->state == SK_RCPT && !s->nrcpt)
		return "554 5.5.1 Error: no valid recipients\r\n";
	if (s->state == SK_MAIL)
		return "503 5.5.1 Error: need RCPT command\r\n";
	if (s->state != SK_RCPT)
		return "503 5.5.1 Error: need MAIL command\r\n";
	return NULL;
}

/* cmd_data - DATA: 354 and the un-stuffing receiver, or why not. */
static void cmd_data(struct sink_sess *s, const struct smtp_cmd *c)
{
	const char *no = data_refusal(s);
	if (c->arg_len) {
		R(s, "501 5.5.4 Syntax: DATA");
		return;
	}
	if (!no && s->bdat_used)
		no = "503 5.5.1 Error: DATA after BDAT\r\n";
	if (no) {
		reply(s, no, strlen(no));
		return;
	}
	buf_reset(&s->msg);
	s->msg_size = 0;
	smtp_data_rx_init(&s->rx, SINK_MAX_SIZE, DATA_LINE_MAX);
	s->drop = sink_chance(s->sl, s->sl->sk->opt.faults.drop);
	set_state(s, SK_DATA);
	R(s, "354 2.0.0 End data with <CR><LF>.<CR><LF>");
}

/* cmd_bdat - BDAT n [LAST]: a chunk to take or to skip (then refused). */
static void cmd_bdat(struct sink_sess *s, const struct smtp_cmd *c)
{
	const char *sp = memchr(c->arg, ' ', c->arg_len);
	size_t nlen = sp ? (size_t)(sp - c->arg) : c->arg_len;
	uint64_t size;
	bool last = false;
	if (!parse_number(c->arg, nlen, &size) ||
	    (sp &&
	     !((size_t)(c->arg + c->arg_len - sp - 1) == 4 && !strncasecmp(sp + 1, "LAST", 4)))) {
		/* How many bytes follow is unknown: the session cannot go on. */
		CLOSE_WITH(s, "501 5.5.4 Syntax: BDAT size [LAST]");
		return;
	}
	last = sp != NULL;
	s->bdat_left = size;
	s->bdat_last = last;
	s->bdat_prev = s->state;
	s->bdat_error = data_refusal(s);
	if (!s->bdat_error) {
		if (!s->bdat_used) {
			s->bdat_used = true;
			s->msg_size = 0;
			buf_reset(&s->msg);
			s->drop = sink_chance(s->sl, s->sl->sk->opt.faults.drop);
		}
		if (s->drop) {
			bench_ctr_add(&s->sl->ctr.dropped, 1);
			set_state(s, SK_CLOSING);
			conn_close(&s->conn);
			return;
		}
	}
	set_state(s, SK_BDAT);
}

/* handle_command - dispatch one command line. */
static void handle_command(struct sink_sess *s, const char *line, size_t len)
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
		tx_reset(s);
		R(s, "250 2.0.0 Ok");
		return;
	case SMTP_NOOP:
		R(s, "250 2.0.0 Ok");
		return;
	case SMTP_QUIT:
		CLOSE_WITH(s, "221 2.0.0 Bye");
		return;
	case SMTP_VRFY:
		R(s, "252 2.5.0 Cannot VRFY user, but will accept message");
		return;
	case SMTP_HELP:
		R(s, "214 2.0.0 ringpost-sink: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT");
		return;
	case SMTP_STARTTLS:
		cmd_starttls(s, &c);
		return;
	case SMTP_EXPN:
	case SMTP_AUTH:
		R(s, "502 5.5.1 Error: command not implemented");
		return;
	case SMTP_UNKNOWN:
		R(s, "500 5.5.2 Error: command not recognized");
		return;
	}
	rp_panic("unhandled verb %d", (int)c.verb);
}

/* ---- input ------------------------------------------------------------- */

/* feed_data - DATA content through the codec's receiver, up to CRLF.CRLF. */
static void feed_data(struct sink_sess *s)
{
	struct buf *in = &s->conn.in;
	if (s->drop) {
		bench_ctr_add(&s->sl->ctr.dropped, 1);
		set_state(s, SK_CLOSING);
		conn_close(&s->conn);
		return;
	}
	bool done;
	size_t n = smtp_data_rx_feed(&s->rx, buf_head(in), buf_used(in), &s->msg, &done);
	buf_consume(in, n);
	/* Without --save only the head is kept: drop what was just appended
	 * past it (the earlier bytes, the head itself, never move). */
	if (!s->sl->sk->opt.save_dir && buf_used(&s->msg) > HEAD_KEEP)
		s->msg.len = s->msg.off + HEAD_KEEP;
	if (!done)
		return;
	s->msg_size = s->rx.size;
	finish_message(s, s->rx.flags & SMTP_DATA_TOO_BIG);
}

/* feed_bdat - the bytes of the current chunk; its reply when complete. */
static void feed_bdat(struct sink_sess *s)
{
	struct buf *in = &s->conn.in;
	size_t n = (size_t)RP_MIN((uint64_t)buf_used(in), s->bdat_left);
	if (!s->bdat_error) {
		size_t keep = n;
		if (!s->sl->sk->opt.save_dir)
			keep = RP_MIN(n, HEAD_KEEP - RP_MIN(buf_used(&s->msg), HEAD_KEEP));
		else if (s->msg_size + n > SINK_MAX_SIZE)
			keep = 0; /* refused at the end; do not grow for it */
		buf_append(&s->msg, buf_head(in), keep);
		s->msg_size += n;
	}
	buf_consume(in, n);
	s->bdat_left -= n;
	if (s->bdat_left)
		return;
	if (s->bdat_error) {
		/* A failed chunk ends the transaction (RFC 3030 section 4). */
		const char *e = s->bdat_error;
		if (s->bdat_prev == SK_GREETING)
			set_state(s, SK_GREETING);
		else
			tx_reset(s);
		reply(s, e, strlen(e));
		return;
	}
	if (!s->bdat_last) {
		char line[80];
		set_state(s, SK_RCPT);
		int k = snprintf(line, sizeof(line), "250 2.0.0 %llu octets received\r\n",
		                 (unsigned long long)s->msg_size);
		out(s, line, (size_t)k);
		return;
	}
	finish_message(s, s->msg_size > SINK_MAX_SIZE);
}

/* command_line - take one command line from the input; false when none is complete. */
static bool command_line(struct sink_sess *s)
{
	struct buf *in = &s->conn.in;
	char *p = buf_head(in);
	size_t avail = buf_used(in);
	char *nl = memchr(p, '\n', avail);
	if (s->skip_line) {
		buf_consume(in, nl ? (size_t)(nl - p) + 1 : avail);
		s->skip_line = !nl;
		return nl != NULL;
	}
	if (!nl) {
		if (avail >= CMD_LINE_MAX) {
			buf_consume(in, avail);
			s->skip_line = true;
			R(s, "500 5.5.2 Error: line too long");
		}
		return false;
	}
	size_t total = (size_t)(nl - p) + 1, len = total - 1;
	if (len && p[len - 1] == '\r')
		len--;
	if (total > CMD_LINE_MAX)
		R(s, "500 5.5.2 Error: line too long");
	else
		handle_command(s, p, len);
	buf_consume(in, total);
	return true;
}

/* process - run every complete command and content byte in the input; the
 * replies of this batch are held for --reply-delay. */
static void process(struct sink_sess *s)
{
	struct conn *c = &s->conn;
	hold_begin(s);
	while (!conn_closing(c)) {
		if (s->state == SK_DATA) {
			if (!buf_used(&c->in))
				break;
			feed_data(s);
		} else if (s->state == SK_BDAT) {
			/* "BDAT 0 LAST" completes with no byte to wait for. */
			if (!buf_used(&c->in) && s->bdat_left)
				break;
			feed_bdat(s);
		} else if (s->state == SK_CLOSING || s->state == SK_SILENT) {
			buf_consume(&c->in, buf_used(&c->in));
			break;
		} else if (s->state == SK_STARTTLS) {
			/* Input behind STARTTLS is never read as commands. */
			if (s->nseg) {
				buf_consume(&c->in, buf_used(&c->in));
				break; /* the 220 is held: hold_timer switches */
			}
			tls_begin(s);
		} else if (!buf_used(&c->in) || !command_line(s)) {
			break;
		}
	}
}

/* ---- conn callbacks ---------------------------------------------------- */

/* on_data - new input: process it (silent and closing sessions discard it). */
static void on_data(struct conn *c)
{
	struct sink_sess *s = c->owner;
	s->last_active_ms = loop_now_ms(s->sl->loop);
	if (s->state == SK_SILENT || s->state == SK_CLOSING) {
		buf_consume(&c->in, buf_used(&c->in));
		return;
	}
	process(s);
}

/* on_closed - the client went away (a debug line; release follows). */
static void on_closed(struct conn *c, int err)
{
	struct sink_sess *s = c->owner;
	log_debug("sink session %u: peer closed in %s (%s)", c->io.slot, state_names[s->state],
	          err ? strerror(-err) : "eof");
}

/* on_tls_ready - the handshake completed: count it. */
static void on_tls_ready(struct conn *c)
{
	struct sink_sess *s = c->owner;
	struct sink_counters *ctr = &s->sl->ctr;
	s->tls_up = true;
	s->last_active_ms = loop_now_ms(s->sl->loop);
	bench_ctr_add(&ctr->tls_handshakes, 1);
	bench_ctr_add(&ctr->tls_open, 1);
	if (tls_resumed(c->tls))
		bench_ctr_add(&ctr->tls_resumed, 1);
}

/* on_released - unlink, uncount and free the session. */
static void on_released(struct conn *c)
{
	struct sink_sess *s = c->owner;
	struct sink_loop *sl = s->sl;
	if (s->tls_up)
		bench_ctr_add(&sl->ctr.tls_open, (uint64_t)-1);
	else if (s->tls_on)
		bench_ctr_add(&sl->ctr.tls_failed, 1);
	loop_timer_disarm(sl->loop, &s->timer);
	rp_list_del(&s->link);
	sl->nsessions--;
	if (s->dom != SINK_NO_DOMAIN)
		sink_domain_leave(sl->sk, s->dom);
	sink_sessions_add(sl->sk, -1);
	buf_free(&s->held);
	buf_free(&s->msg);
	buf_free(&s->env);
	free(s->rdom);
	free(s);
}

static const struct conn_ops sink_conn_ops = {
	.data = on_data,
	.closed = on_closed,
	.released = on_released,
	.tls_ready = on_tls_ready,
};

/* sink_session_setup - the fixed greeting and EHLO reply. */
void sink_session_setup(struct sink *sk)
{
	const char *h = sk->opt.hostname;
	buf_printf(&sk->greeting, "220 %s ESMTP ringpost-sink\r\n", h);
	buf_printf(&sk->ehlo, "250-%s\r\n" EHLO_CAPS "250 CHUNKING\r\n", h,
	           (unsigned long long)SINK_MAX_SIZE);
	buf_printf(&sk->ehlo_starttls, "250-%s\r\n" EHLO_CAPS "250-STARTTLS\r\n250 CHUNKING\r\n", h,
	           (unsigned long long)SINK_MAX_SIZE);
}

/* sink_session_start - a new session: connection faults, then the greeting. */
void sink_session_start(struct sink_loop *sl, int fd)
{
	struct sink *sk = sl->sk;
	const struct sink_faults *f = &sk->opt.faults;
	struct sink_sess *s = xcalloc(1, sizeof(*s));
	s->sl = sl;
	s->dom = SINK_NO_DOMAIN;
	s->state = SK_GREETING;
	s->last_active_ms = loop_now_ms(sl->loop);
	rp_list_add(&sl->sessions, &s->link);
	sl->nsessions++;
	sink_sessions_add(sk, 1);
	conn_init(&s->conn, sl->loop, &sink_conn_ops, s);
	conn_attach(&s->conn, fd);
	if (sk->opt.tls_implicit) {
		conn_tls_server(&s->conn, sk->tls); /* the greeting waits for the handshake */
		s->tls_on = true;
	}
	if (sink_chance(sl, f->connect421)) {
		char line[160];
		close_with(s, line, sink_reply_line(421, "connect", line, sizeof(line)));
		return;
	}
	if (sink_chance(sl, f->silence)) {
		bench_ctr_add(&sl->ctr.silenced, 1);
		set_state(s, SK_SILENT);
		return;
	}
	s->reply_delay_ms = (uint32_t)sk->opt.reply_delay_ms;
	if (sink_chance(sl, f->tarpit)) {
		bench_ctr_add(&sl->ctr.tarpitted, 1);
		s->reply_delay_ms = (uint32_t)f->tarpit_ms;
	}
	hold_begin(s);
	out(s, buf_head(&sk->greeting), buf_used(&sk->greeting));
}

/* sweep - give idle sessions' buffers back; re-arms itself. */
static void sweep(struct loop_timer *t)
{
	struct sink_loop *sl = RP_CONTAINER_OF(t, struct sink_loop, sweep);
	uint64_t now = loop_now_ms(sl->loop);
	struct rp_list *pos, *tmp;
	rp_list_foreach_safe(pos, tmp, &sl->sessions)
	{
		struct sink_sess *s = rp_list_entry(pos, struct sink_sess, link);
		if (s->nseg || now - s->last_active_ms < SWEEP_MS || conn_closing(&s->conn))
			continue;
		if (s->state != SK_GREETING && s->state != SK_IDLE && s->state != SK_SILENT)
			continue;
		if (buf_used(&s->conn.in) || conn_pending_out(&s->conn))
			continue;
		conn_trim(&s->conn, 0);
		buf_shrink(&s->held, 0);
		buf_shrink(&s->msg, 0);
		buf_shrink(&s->env, 0);
		free(s->rdom);
		s->rdom = NULL;
		s->rdom_cap = 0;
	}
	loop_timer_arm(sl->loop, &sl->sweep, SWEEP_MS, sweep);
}

/* sink_sweep_start - the first sweep in SWEEP_MS. */
void sink_sweep_start(struct sink_loop *sl)
{
	loop_timer_arm(sl->loop, &sl->sweep, SWEEP_MS, sweep);
}
