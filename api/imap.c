/* imap.c - the bounce mailbox over IMAP4rev1 (RFC 3501; see imap.h):
 * sessions, their input, replies, and long commands in slices.
 *
 * Input: commands are framed with their literals (imap_parse.c): a
 * synchronising literal gets "+ Ready" once the line announcing it is in,
 * a non-synchronising one (LITERAL+) does not; lines are at most 8 KiB and
 * literals 64 KiB. Commands run one at a time, in order: while one waits
 * (a password check, the spool writer, its own output), nothing further is
 * read. Limits: a line too long gets BAD and is skipped; a literal too big
 * gets NO [TOOBIG] when synchronising (the client never sends it) or BYE
 * when not; 20 BAD responses, or 1 MiB of input piled up behind a busy
 * command, end the session with BYE.
 *
 * [limits] (base/climit.h): connections per client address (BYE at the
 * greeting), commands per second per connection (slowed), a command
 * complete within command_timeout of its first byte and a login within
 * login_timeout of connecting (BYE), no command read while the unread
 * responses pass output_buffer.
 *
 * Long commands (FETCH, SEARCH, a STORE's answers) run in slices of about
 * 2 ms, each in its own read transaction, and pause while more than 4 MiB
 * of output waits for the client: one client never holds the loop, nor
 * grows its buffers without bound.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>

#include "base/log.h"
#include "base/util.h"
#include "imap_impl.h"

#define IDLE_KEEP_BYTES 4096 /* buffer memory an idle session keeps */
#define PAUSE_POLL_MS   10   /* how often a paused long command looks again */

static const char *const state_names[] = { "notauth", "auth", "selected", "logout" };
static const char *const wait_names[] = { "none", "auth-line", "check", "spool", "job", "idle" };

static void process(struct imap_session *s);
static void session_may_free(struct imap_session *s);
static void arm_timer(struct imap_session *s);

/* ---- output ------------------------------------------------------------- */

struct buf *imap_out(struct imap_session *s)
{
	return conn_outbuf(&s->conn);
}

void imap_flush(struct imap_session *s)
{
	conn_flush_soon(&s->conn);
}

void imap_untagged(struct imap_session *s, const char *fmt, ...)
{
	struct buf *out = imap_out(s);
	va_list ap;
	buf_append(out, "* ", 2);
	va_start(ap, fmt);
	buf_vprintf(out, fmt, ap);
	va_end(ap);
	buf_append(out, "\r\n", 2);
	imap_flush(s);
}

/* tagged - "tag " (or "* " without a tag) and the text. */
RP_PRINTF(2, 0) static void tagged(struct imap_session *s, const char *fmt, va_list ap)
{
	struct buf *out = imap_out(s);
	if (s->tag.n) {
		buf_append(out, s->tag.p, s->tag.n);
		buf_append(out, " ", 1);
	} else {
		buf_append(out, "* ", 2);
	}
	buf_vprintf(out, fmt, ap);
	buf_append(out, "\r\n", 2);
	imap_flush(s);
}

/* command_end - the command is answered: forget it, read on. */
static void command_end(struct imap_session *s)
{
	if (s->job) {
		imap_job_free(s->job);
		s->job = NULL;
	}
	s->tag.n = 0;
	buf_shrink(&s->cmd, IDLE_KEEP_BYTES);
	if (s->wait != IW_NONE)
		imap_set_wait(s, IW_NONE);
}

void imap_done(struct imap_session *s, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	tagged(s, fmt, ap);
	va_end(ap);
	command_end(s);
	imap_resume(s);
}

void imap_bye(struct imap_session *s, const char *text)
{
	if (conn_closing(&s->conn))
		return;
	imap_untagged(s, "BYE %s", text);
	imap_set_state(s, IMAP_LOGOUT);
	conn_close_after_flush(&s->conn);
}

void imap_bad(struct imap_session *s, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	struct buf *out = imap_out(s);
	if (s->tag.n) {
		buf_append(out, s->tag.p, s->tag.n);
		buf_append(out, " BAD ", 5);
	} else {
		buf_append(out, "* BAD ", 6);
	}
	buf_vprintf(out, fmt, ap);
	buf_append(out, "\r\n", 2);
	va_end(ap);
	imap_flush(s);
	command_end(s);
	if (++s->bad >= IMAP_BAD_MAX) {
		log_info("imap %s: too many bad commands", s->peer);
		imap_bye(s, "Too many invalid commands");
		return;
	}
	imap_resume(s);
}

/* ---- states ------------------------------------------------------------- */

void imap_set_state(struct imap_session *s, enum imap_state st)
{
	rp_assert((unsigned)st < RP_ARRAY_LEN(state_names));
	if (s->state != st)
		log_debug("imap %s: state %s -> %s", s->peer, state_names[s->state],
		          state_names[st]);
	s->state = st;
}

void imap_set_wait(struct imap_session *s, enum imap_wait w)
{
	rp_assert((unsigned)w < RP_ARRAY_LEN(wait_names));
	if (s->wait != w)
		log_debug("imap %s: wait %s -> %s", s->peer, wait_names[s->wait], wait_names[w]);
	s->wait = w;
}

/* ---- long commands ------------------------------------------------------ */

static void job_slice(struct imap_session *s);

static void job_defer(struct loop_defer *d)
{
	job_slice(RP_CONTAINER_OF(d, struct imap_session, slice));
}

static void job_timer(struct loop_timer *t)
{
	job_slice(RP_CONTAINER_OF(t, struct imap_session, delay));
}

/* job_slice - one slice; the next one soon, or once the client has read. */
static void job_slice(struct imap_session *s)
{
	if (s->wait != IW_JOB || conn_closing(&s->conn))
		return;
	struct loop *l = s->srv->p.loop;
	if (conn_pending_out(&s->conn) > IMAP_OUT_HIGH) {
		loop_timer_arm(l, &s->delay, PAUSE_POLL_MS, job_timer);
		return;
	}
	if (!spool_reader_begin(s->srv->p.reader)) {
		imap_done(s, "NO [UNAVAILABLE] The mailbox cannot be read now");
		return;
	}
	bool finished = imap_job_step(s, rp_mono_ns() + IMAP_SLICE_NS);
	spool_reader_end(s->srv->p.reader);
	if (finished) {
		imap_job_finish(s);
		return;
	}
	if (conn_pending_out(&s->conn) > IMAP_OUT_HIGH)
		loop_timer_arm(l, &s->delay, PAUSE_POLL_MS, job_timer);
	else
		loop_defer_next(l, &s->slice, job_defer);
}

void imap_job_start(struct imap_session *s)
{
	imap_set_wait(s, IW_JOB);
	job_slice(s);
}

/* ---- input -------------------------------------------------------------- */

/* command_run - parse the tag and name of the command in s->cmd and run it. */
static void command_run(struct imap_session *s);

/* take_line - a whole line for IDLE or AUTHENTICATE (CRLF stripped):
 * false when it has not all come yet. */
static bool take_line(struct imap_session *s)
{
	struct buf *in = &s->conn.in;
	char *p = buf_head(in);
	size_t avail = buf_used(in);
	char *nl = memchr(p, '\n', avail);
	if (!nl) {
		if (avail > IMAP_LINE_MAX) {
			buf_consume(in, avail);
			s->skip_line = true;
			imap_bad(s, "Line too long");
		}
		return false;
	}
	size_t total = (size_t)(nl - p) + 1, len = total - 1;
	if (len && p[len - 1] == '\r')
		len--;
	if (len > IMAP_LINE_MAX) {
		buf_consume(in, total);
		imap_bad(s, "Line too long");
		return true;
	}
	/* Copied: the handlers may write output, never input, but a BYE may
	 * close the conn and its buffers with it. */
	char line[IMAP_LINE_MAX + 1];
	memcpy(line, p, len);
	line[len] = '\0';
	buf_consume(in, total);
	if (s->wait == IW_IDLE)
		imap_idle_line(s, line, len);
	else
		imap_auth_line(s, line, len);
	return true;
}

/* skip - the rest of a line too long. */
static void skip(struct imap_session *s)
{
	struct buf *in = &s->conn.in;
	char *nl = memchr(buf_head(in), '\n', buf_used(in));
	size_t n = nl ? (size_t)(nl - buf_head(in)) + 1 : buf_used(in);
	buf_consume(in, n);
	if (nl)
		s->skip_line = false;
}

/* frame_error - a command that cannot be taken whole. */
static void frame_error(struct imap_session *s, enum imap_frame_status st)
{
	struct buf *in = &s->conn.in;
	const char *tag;
	size_t tlen;
	if (imap_frame_tag(buf_head(in), buf_used(in), &tag, &tlen)) {
		buf_reset(&s->cmd);
		buf_append(&s->cmd, tag, tlen);
		s->tag.p = buf_head(&s->cmd);
		s->tag.n = tlen;
	}
	size_t len = s->frame.len;
	bool sync = s->frame.sync;
	imap_frame_reset(&s->frame);
	switch (st) {
	case IMAP_FRAME_LONG_LINE:
		if (len) {
			buf_consume(in, len);
		} else {
			buf_consume(in, buf_used(in));
			s->skip_line = true;
		}
		imap_bad(s, "Command line too long (8 KiB at most)");
		return;
	case IMAP_FRAME_BIG_LITERAL:
		buf_consume(in, len);
		if (sync) { /* the client waits for "+" and never sends it */
			imap_done(s, "NO [TOOBIG] Literal too big (64 KiB at most)");
			return;
		}
		log_info("imap %s: non-synchronising literal too big", s->peer);
		imap_bye(s, "Literal too big (64 KiB at most)");
		return;
	case IMAP_FRAME_TOO_BIG:
		log_info("imap %s: command too big", s->peer);
		imap_bye(s, "Command too big");
		return;
	case IMAP_FRAME_MORE:
	case IMAP_FRAME_DONE:
	case IMAP_FRAME_CONTINUE:
		break;
	}
	rp_panic("frame status %d", (int)st);
}

/* next_command - frame the command at the front of the input and run it;
 * false when it has not all come yet. */
static bool next_command(struct imap_session *s)
{
	struct buf *in = &s->conn.in;
	enum imap_frame_status st = imap_frame_scan(&s->frame, buf_head(in), buf_used(in));
	switch (st) {
	case IMAP_FRAME_MORE:
		return false;
	case IMAP_FRAME_CONTINUE:
		buf_puts(imap_out(s), "+ Ready for literal data\r\n");
		imap_flush(s);
		return true;
	case IMAP_FRAME_DONE:
		buf_reset(&s->cmd);
		buf_append(&s->cmd, buf_head(in), s->frame.len);
		buf_consume(in, s->frame.len);
		imap_frame_reset(&s->frame);
		s->line_start_ms = 0;
		command_run(s);
		return true;
	case IMAP_FRAME_LONG_LINE:
	case IMAP_FRAME_BIG_LITERAL:
	case IMAP_FRAME_TOO_BIG:
		frame_error(s, st);
		return true;
	}
	rp_panic("frame status %d", (int)st);
}

/* limit - count a client limit that struck s and log it (within budget). */
static void limit(struct imap_session *s, enum climit_reason r, const char *detail)
{
	s->srv->limits[r]++;
	climit_log_cut(&s->srv->limit_log, loop_now_ms(s->srv->p.loop), "imap", s->peer, r, detail);
}

/* gate - whether the input may be taken now (climit_gate); counted: a new
 * command begins (one per command, its literals included). */
static bool gate(struct imap_session *s, bool counted)
{
	enum climit_reason why;
	if (climit_gate(&s->lim, &s->conn, imap_cfg(s)->limits, counted,
	                loop_now_ms(s->srv->p.loop), &why))
		return true;
	if (why == CLIMIT_RATE)
		limit(s, why, "over [limits] commands_per_second: slowed");
	else if (why == CLIMIT_OUTPUT)
		limit(s, why, "responses not read: reading stopped");
	return false;
}

static void process(struct imap_session *s)
{
	struct buf *in = &s->conn.in;
	bool gated = false; /* the conn stopped reading for the limits */
	if (s->processing)
		return;
	s->processing = true;
	while (!conn_closing(&s->conn) && !s->stop_reading && buf_used(in)) {
		if (s->skip_line) {
			skip(s);
			continue;
		}
		if (s->wait == IW_IDLE || s->wait == IW_AUTH_LINE) {
			if (!(gated = !gate(s, false)) && take_line(s)) {
				s->line_start_ms = 0;
				continue;
			}
			break;
		}
		if (s->wait != IW_NONE || (gated = !gate(s, s->frame.pos == 0)) || !next_command(s))
			break;
	}
	s->stop_reading = false;
	s->processing = false;
	if (conn_closing(&s->conn))
		return;
	arm_timer(s);
	conn_recv_poke(&s->conn); /* input was consumed: read on (conn.h) */
	if (!gated && buf_used(in) > IMAP_PIPELINE_MAX) {
		log_info("imap %s: %zu bytes of input waiting; closing", s->peer, buf_used(in));
		buf_consume(in, buf_used(in));
		imap_bye(s, "Too much pipelined input");
		return;
	}
	if (!buf_used(in) && (s->wait == IW_NONE || s->wait == IW_IDLE))
		conn_trim(&s->conn, IDLE_KEEP_BYTES);
}

void imap_resume(struct imap_session *s)
{
	if (!s->processing && !conn_closing(&s->conn))
		process(s);
}

/* ---- commands ----------------------------------------------------------- */

typedef void (*imap_cmd_fn)(struct imap_session *s, struct imap_parser *ps);

enum {
	ANY = 0xf,
	NOTAUTH = 1u << IMAP_NOTAUTH,
	AUTHED = 1u << IMAP_AUTH | 1u << IMAP_SELECTED,
	SELECTED = 1u << IMAP_SELECTED,
};

static void cmd_noop(struct imap_session *s, struct imap_parser *ps)
{
	if (!imap_p_eol(ps)) {
		imap_bad(s, "NOOP takes no arguments");
		return;
	}
	imap_done_sync(s, true, "OK NOOP completed");
}

static void cmd_logout(struct imap_session *s, struct imap_parser *ps)
{
	if (!imap_p_eol(ps)) {
		imap_bad(s, "LOGOUT takes no arguments");
		return;
	}
	imap_untagged(s, "BYE Logging out");
	imap_set_state(s, IMAP_LOGOUT);
	struct buf *out = imap_out(s);
	buf_append(out, s->tag.p, s->tag.n);
	buf_puts(out, " OK LOGOUT completed\r\n");
	command_end(s);
	conn_close_after_flush(&s->conn);
}

static const struct {
	const char *name;
	imap_cmd_fn fn;
	unsigned states; /* 1 << enum imap_state where it is allowed */
} commands[] = {
	{ "CAPABILITY", imap_cmd_capability, ANY },
	{ "NOOP", cmd_noop, ANY },
	{ "LOGOUT", cmd_logout, ANY },
	{ "STARTTLS", imap_cmd_starttls, NOTAUTH },
	{ "LOGIN", imap_cmd_login, NOTAUTH },
	{ "AUTHENTICATE", imap_cmd_authenticate, NOTAUTH },
	{ "SELECT", imap_cmd_select, AUTHED },
	{ "EXAMINE", imap_cmd_examine, AUTHED },
	{ "LIST", imap_cmd_list, AUTHED },
	{ "LSUB", imap_cmd_lsub, AUTHED },
	{ "STATUS", imap_cmd_status, AUTHED },
	{ "IDLE", imap_cmd_idle, AUTHED },
	{ "SUBSCRIBE", imap_cmd_subscribe, AUTHED },
	{ "UNSUBSCRIBE", imap_cmd_subscribe, AUTHED },
	{ "CREATE", imap_cmd_refused, AUTHED },
	{ "DELETE", imap_cmd_refused, AUTHED },
	{ "RENAME", imap_cmd_refused, AUTHED },
	{ "APPEND", imap_cmd_refused, AUTHED },
	{ "CHECK", imap_cmd_check, SELECTED },
	{ "CLOSE", imap_cmd_close, SELECTED },
	{ "UNSELECT", imap_cmd_unselect, SELECTED },
	{ "EXPUNGE", imap_cmd_expunge, SELECTED },
	{ "FETCH", imap_cmd_fetch, SELECTED },
	{ "STORE", imap_cmd_store, SELECTED },
	{ "SEARCH", imap_cmd_search, SELECTED },
	{ "COPY", imap_cmd_refused, SELECTED },
	{ "UID", imap_cmd_uid, SELECTED },
};

static void command_run(struct imap_session *s)
{
	struct imap_parser ps;
	struct imap_str name;
	imap_parser_init(&ps, buf_head(&s->cmd), buf_used(&s->cmd));
	s->tag.n = 0;
	if (imap_p_eol(&ps)) { /* an empty line: nothing to answer */
		command_end(s);
		return;
	}
	if (!imap_p_tag(&ps, &s->tag) || !imap_p_sp(&ps)) {
		s->tag.n = 0;
		imap_bad(s, "Missing or invalid tag");
		return;
	}
	if (!imap_p_atom(&ps, &name)) {
		imap_bad(s, "Missing command");
		return;
	}
	for (unsigned i = 0; i < RP_ARRAY_LEN(commands); i++) {
		if (!imap_str_is(&name, commands[i].name))
			continue;
		if (!(commands[i].states & (1u << s->state))) {
			imap_bad(s, "%s",
			         s->state == IMAP_NOTAUTH ? "Log in first"
			         : s->state == IMAP_AUTH  ? "No mailbox selected"
			                                  : "Already logged in");
			return;
		}
		if (log_enabled(LOG_DEBUG)) {
			char tag[LOG_VALUE_MAX];
			log_debug(
			    "imap %s: tag=%s command=%s", s->peer,
			    log_value(tag, sizeof(tag), s->tag.p, RP_MIN(s->tag.n, (size_t)64)),
			    commands[i].name);
		}
		if (!imap_p_eol(&ps) && !imap_p_sp(&ps)) {
			imap_bad(s, "Syntax error after the command name");
			return;
		}
		commands[i].fn(s, &ps);
		return;
	}
	imap_bad(s, "Unknown command");
}

/* ---- connections -------------------------------------------------------- */

static void on_timeout(struct loop_timer *t)
{
	struct imap_session *s = RP_CONTAINER_OF(t, struct imap_session, timer);
	const struct climit_config *lc = imap_cfg(s)->limits;
	uint64_t now = loop_now_ms(s->srv->p.loop);
	if ((s->wait == IW_JOB && conn_pending_out(&s->conn) > IMAP_OUT_HIGH) ||
	    conn_out_blocked(&s->conn)) {
		/* A client that stopped reading: it will not read a BYE. */
		char detail[120];
		snprintf(detail, sizeof(detail), "responses not read (%zu bytes waiting): closed",
		         conn_pending_out(&s->conn));
		limit(s, CLIMIT_IDLE, detail);
		conn_close(&s->conn);
		return;
	}
	if (s->wait == IW_CHECK || s->wait == IW_SPOOL || s->wait == IW_JOB) {
		/* Busy, not idle: look again later. */
		loop_timer_arm(s->srv->p.loop, &s->timer, imap_cfg(s)->idle_timeout_ms, on_timeout);
		return;
	}
	if (s->line_start_ms && now >= s->line_start_ms + lc->command_timeout_ms) {
		limit(s, CLIMIT_SLOW, "command not complete in time: BYE");
		imap_bye(s, "Command not complete in time");
		return;
	}
	if (s->state == IMAP_NOTAUTH && now >= s->start_ms + lc->login_timeout_ms) {
		limit(s, CLIMIT_IDLE, "not logged in in time: BYE");
		imap_bye(s, "Not logged in in time");
		return;
	}
	log_info("imap %s: autologout after %llus idle", s->peer,
	         (unsigned long long)(imap_cfg(s)->idle_timeout_ms / 1000));
	s->srv->limits[CLIMIT_IDLE]++;
	imap_bye(s, "Autologout; idle for too long");
}

/* arm_timer - the session's next deadline: the autologout (idle_timeout
 * after the last activity); before a login, login_timeout after
 * connecting; a command complete within command_timeout of its first byte
 * (more bytes do not extend it). */
static void arm_timer(struct imap_session *s)
{
	const struct climit_config *lc = imap_cfg(s)->limits;
	uint64_t now = loop_now_ms(s->srv->p.loop), at = now + imap_cfg(s)->idle_timeout_ms;
	if (s->state == IMAP_NOTAUTH)
		at = RP_MIN(at, s->start_ms + lc->login_timeout_ms);
	bool reading = s->wait == IW_NONE || s->wait == IW_IDLE || s->wait == IW_AUTH_LINE;
	if (reading && buf_used(&s->conn.in) && !conn_out_blocked(&s->conn)) {
		if (!s->line_start_ms)
			s->line_start_ms = now;
		at = RP_MIN(at, s->line_start_ms + lc->command_timeout_ms);
	} else {
		s->line_start_ms = 0;
	}
	loop_timer_arm(s->srv->p.loop, &s->timer, at > now ? at - now : 1, on_timeout);
}

static void on_data(struct conn *c)
{
	struct imap_session *s = RP_CONTAINER_OF(c, struct imap_session, conn);
	process(s);
}

static void on_closed(struct conn *c, int err)
{
	struct imap_session *s = RP_CONTAINER_OF(c, struct imap_session, conn);
	if (err == -EPROTO && conn_tls_error(c)) {
		log_info("imap %s: %s", s->peer, tls_error_text(c->tls));
		return;
	}
	log_debug("imap %s: disconnected in %s", s->peer, state_names[s->state]);
}

static void session_free(struct imap_session *s)
{
	struct imap_server *srv = s->srv;
	rp_list_del(&s->link);
	srv->nsessions--;
	if (s->job)
		imap_job_free(s->job);
	imap_view_free(&s->view);
	buf_free(&s->cmd);
	free(s->user);
	free(s);
	srv->p.session_gone(srv->p.arg);
}

static void session_may_free(struct imap_session *s)
{
	if (s->released && !s->inflight)
		session_free(s);
}

bool imap_request_done(struct imap_session *s)
{
	rp_assert(s->inflight > 0);
	s->inflight--;
	if (s->released) {
		session_may_free(s);
		return false;
	}
	return true;
}

static void on_released(struct conn *c)
{
	struct imap_session *s = RP_CONTAINER_OF(c, struct imap_session, conn);
	struct loop *l = s->srv->p.loop;
	s->released = true;
	climit_conn_close(s->srv->p.climit, &s->lim.ticket);
	loop_timer_disarm(l, &s->timer);
	loop_timer_disarm(l, &s->delay);
	loop_defer_cancel(l, &s->slice);
	session_may_free(s);
}

static const struct conn_ops imap_conn_ops = {
	.data = on_data,
	.closed = on_closed,
	.released = on_released,
	.tls_ready = imap_tls_ready,
};

/* peer_of - the client's address, for the limiter and the log. */
static void peer_of(struct imap_session *s, int fd)
{
	socklen_t len = sizeof(s->peer_ss);
	if (getpeername(fd, (struct sockaddr *)&s->peer_ss, &len))
		memset(&s->peer_ss, 0, sizeof(s->peer_ss));
	conn_peer_name(fd, s->peer, sizeof(s->peer));
}

void imap_session_start(struct imap_server *srv, int fd, bool implicit_tls)
{
	const struct mailbox_config *cfg = srv->p.cfg;
	struct imap_session *s = xcalloc(1, sizeof(*s));
	s->srv = srv;
	s->implicit_tls = implicit_tls;
	s->tls = implicit_tls; /* nothing is read before the handshake */
	conn_init(&s->conn, srv->p.loop, &imap_conn_ops, s);
	peer_of(s, fd);
	rp_list_add(&srv->sessions, &s->link);
	srv->nsessions++;
	conn_attach(&s->conn, fd);
	conn_set_out_max(&s->conn, cfg->limits->output_buffer);
	s->start_ms = loop_now_ms(srv->p.loop);
	s->lim.exempt = climit_exempt(cfg->limits, (const struct sockaddr *)&s->peer_ss);
	log_debug("imap %s: connect%s", s->peer, implicit_tls ? " (TLS)" : "");
	const char *refuse = NULL;
	uint64_t left = 0;
	if (srv->nsessions > cfg->max_clients || srv->shutting_down) {
		log_warn("imap %s: refused, %u sessions open", s->peer, srv->nsessions - 1);
		refuse = "Too many connections, try again later";
	} else if (!climit_conn_open(srv->p.climit, cfg->limits, CLIMIT_IMAP,
	                             (const struct sockaddr *)&s->peer_ss, &s->lim.ticket)) {
		limit(s, CLIMIT_CONNECTIONS, "too many connections from its address: BYE");
		refuse = "Too many connections from your address, try again later";
	} else if (auth_limiter_blocked(srv->p.limiter, (const struct sockaddr *)&s->peer_ss,
	                                rp_mono_ms(), &left)) {
		log_info("imap %s: refused for %llu more seconds after authentication failures",
		         s->peer, (unsigned long long)(left + 999) / 1000);
		refuse = "Too many authentication failures, try again later";
	} else if (implicit_tls && !cfg->tls) {
		refuse = "No TLS here";
	}
	if (refuse) {
		if (implicit_tls) /* no TLS yet to say it through */
			conn_close(&s->conn);
		else
			imap_bye(s, refuse);
		s->state = IMAP_LOGOUT;
		return;
	}
	if (implicit_tls) /* before the greeting: it goes through TLS */
		conn_tls_server(&s->conn, cfg->tls);
	struct buf *out = imap_out(s);
	buf_puts(out, "* OK [");
	imap_capability(s, out);
	buf_printf(out, "] %s ringpost IMAP4rev1 ready\r\n", cfg->hostname);
	imap_flush(s);
	arm_timer(s);
}

/* ---- server ------------------------------------------------------------- */

struct imap_server *imap_server_new(const struct mailbox_params *p)
{
	struct imap_server *srv = xcalloc(1, sizeof(*srv));
	srv->p = *p;
	rp_list_init(&srv->sessions);
	return srv;
}

void imap_server_free(struct imap_server *srv)
{
	if (!srv)
		return;
	rp_assert(!srv->nsessions);
	imap_snap_free(srv);
	free(srv);
}

void imap_server_set_config(struct imap_server *srv, const struct mailbox_config *cfg)
{
	srv->p.cfg = cfg;
}

void imap_shutdown_all(struct imap_server *srv)
{
	srv->shutting_down = true;
	struct rp_list *pos, *tmp;
	rp_list_foreach_safe(pos, tmp, &srv->sessions)
	{
		struct imap_session *s = rp_list_entry(pos, struct imap_session, link);
		if (s->released)
			continue;
		imap_bye(s, "Server shutting down");
	}
}

void imap_fill_stats(const struct imap_server *srv, struct stats_snapshot *part)
{
	for (unsigned r = 0; r < CLIMIT_REASONS; r++)
		part->client_limits[CLIMIT_IMAP][r] += srv->limits[r];
}

unsigned imap_sessions(const struct imap_server *srv)
{
	return srv->nsessions;
}

void imap_mailbox_changed(struct imap_server *srv)
{
	struct rp_list *pos, *tmp;
	rp_list_foreach_safe(pos, tmp, &srv->sessions)
	{
		struct imap_session *s = rp_list_entry(pos, struct imap_session, link);
		if (s->wait == IW_IDLE && s->state == IMAP_SELECTED && !conn_closing(&s->conn))
			imap_sync(s, true);
	}
}
