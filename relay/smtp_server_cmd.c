/* smtp_server_cmd.c - the SMTP server's commands: EHLO/HELO, MAIL, RCPT,
 * DATA, BDAT and the small ones, with the [submission] limits and the
 * reply codes of RFC 5321, 3030, 3461, 1870 and 6531. STARTTLS and AUTH
 * are in smtp_server_auth.c.
 */
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>

#include "base/addr.h"
#include "base/log.h"
#include "base/util.h"
#include "smtp_server_impl.h"

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
		srv_error(s, esmtp ? "501 5.5.4 Syntax: EHLO hostname"
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
	srv_set_state(s, SS_IDLE);
	srv_tx_reset(s);
	const struct config *cfg = srv_cfg(s);
	if (!esmtp) {
		conn_line(&s->conn, "250 %s", cfg->hostname);
		return;
	}
	struct buf *out = conn_outbuf(&s->conn);
	buf_printf(out,
	           "250-%s\r\n250-PIPELINING\r\n250-SIZE %llu\r\n250-8BITMIME\r\n"
	           "250-ENHANCEDSTATUSCODES\r\n250-SMTPUTF8\r\n250-DSN\r\n",
	           cfg->hostname, (unsigned long long)cfg->max_message_size);
	srv_ehlo_extensions(s, out);
	buf_puts(out, "250 CHUNKING\r\n");
	conn_flush_soon(&s->conn);
}

static void cmd_mail(struct srv_session *s, const struct smtp_cmd *c)
{
	const struct config *cfg = srv_cfg(s);
	struct smtp_path p;
	if (s->state == SS_GREETING) {
		srv_error(s, "503 5.5.1 Error: send HELO/EHLO first");
		return;
	}
	if (s->state != SS_IDLE) {
		srv_error(s, "503 5.5.1 Error: nested MAIL command");
		return;
	}
	if (!smtp_path_parse(c->arg, c->arg_len, "FROM:", &p)) {
		srv_error(s, "501 5.5.4 Syntax: MAIL FROM:<address>");
		return;
	}
	if (!s->relay_ok && !s->user[0] && !s->srv->inbound) {
		srv_error(s, "530 5.7.0 Authentication required");
		return;
	}
	const char *busy = s->srv->inbound ? srv_inbound_refuse(s) : NULL;
	if (busy) { /* a flood within one session: its next report waits */
		srv_close_with(s, busy);
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
				srv_error(s, "501 5.5.4 Bad SIZE parameter");
				return;
			}
			if (size > cfg->max_message_size) {
				srv_error(
				    s, "552 5.3.4 Message size exceeds fixed maximum message size");
				return;
			}
		} else if (smtp_param_is(pp, "BODY")) {
			if (pp->val && pp->val_len == 8 && !strncasecmp(pp->val, "8BITMIME", 8)) {
				flags |= MSG_F_8BIT;
			} else if (!(pp->val && pp->val_len == 4 &&
			             !strncasecmp(pp->val, "7BIT", 4))) {
				srv_error(s, "501 5.5.4 Unsupported BODY parameter");
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
				srv_error(s, "501 5.5.4 Bad RET parameter (FULL or HDRS)");
				return;
			}
		} else if (smtp_param_is(pp, "ENVID") && pp->val) {
			if (smtp_xtext_decode(pp->val, pp->val_len, envid, sizeof(envid)) < 0) {
				srv_error(s, "501 5.5.4 Bad ENVID parameter (xtext, at most 100 "
				             "characters)");
				return;
			}
		} else {
			conn_line(&s->conn, "555 5.5.4 Unsupported option: %.*s",
			          (int)RP_MIN(pp->key_len, 64), pp->key);
			srv_count_error(s);
			return;
		}
	}
	if (p.addr_len) {
		enum addr_error e = addr_check(p.addr, p.addr_len, utf8, NULL);
		if (e == ADDR_NEEDS_UTF8) {
			srv_error(s, "553 5.6.7 Non-ASCII sender address needs SMTPUTF8");
			return;
		}
		if (e != ADDR_OK) {
			conn_line(&s->conn, "501 5.1.7 Bad sender address syntax (%s)",
			          addr_error_str(e));
			srv_count_error(s);
			return;
		}
	}
	if (!spool_accepting(s->srv->spool)) {
		srv_reply(s, "452 4.3.1 Insufficient system storage");
		return;
	}
	submission_reset(&s->sub);
	submission_sender(&s->sub, p.addr, p.addr_len, flags, envid, strlen(envid));
	s->utf8 = utf8;
	srv_set_state(s, SS_MAIL);
	srv_reply(s, "250 2.1.0 Ok");
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
	const struct config *cfg = srv_cfg(s);
	struct smtp_path p;
	if (s->state != SS_MAIL && s->state != SS_RCPT) {
		srv_error(s, "503 5.5.1 Error: need MAIL command");
		return;
	}
	if (!smtp_path_parse(c->arg, c->arg_len, "TO:", &p)) {
		srv_error(s, "501 5.5.4 Syntax: RCPT TO:<address>");
		return;
	}
	if (s->sub.nrcpt >= cfg->max_recipients) {
		s->rejected_rcpts++;
		srv_reply(s, "452 4.5.3 Error: too many recipients");
		return;
	}
	uint8_t notify = 0;
	char orcpt[300] = "";
	for (unsigned i = 0; i < p.nparams; i++) {
		const struct smtp_param *pp = &p.params[i];
		if (smtp_param_is(pp, "NOTIFY") && pp->val) {
			if (!parse_notify(pp->val, pp->val_len, &notify)) {
				s->rejected_rcpts++;
				srv_error(s, "501 5.5.4 Bad NOTIFY parameter (NEVER, or "
				             "SUCCESS,FAILURE,DELAY)");
				return;
			}
		} else if (smtp_param_is(pp, "ORCPT") && pp->val) {
			/* RFC 3461 4.2, checked: it is passed on to next hops. */
			if (smtp_orcpt_parse(pp->val, pp->val_len, orcpt, sizeof(orcpt)) < 0) {
				s->rejected_rcpts++;
				srv_error(s, "501 5.5.4 Bad ORCPT parameter (addr-type;xtext)");
				return;
			}
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
		srv_error(s, "553 5.6.7 Non-ASCII recipient address needs SMTPUTF8");
		return;
	}
	if (e != ADDR_OK) {
		s->rejected_rcpts++;
		conn_line(&s->conn, "501 5.1.3 Bad recipient address syntax (%s)",
		          addr_error_str(e));
		srv_count_error(s);
		return;
	}
	if (s->srv->inbound && !srv_inbound_rcpt(s, p.addr, p.addr_len)) {
		s->rejected_rcpts++;
		srv_count_error(s);
		return;
	}
	submission_add_rcpt(&s->sub, p.addr, p.addr_len, notify, orcpt, strlen(orcpt));
	srv_set_state(s, SS_RCPT);
	srv_reply(s, "250 2.1.5 Ok");
}

static void cmd_data(struct srv_session *s, const struct smtp_cmd *c)
{
	if (c->arg_len) {
		srv_error(s, "501 5.5.4 Syntax: DATA");
		return;
	}
	if (s->state == SS_MAIL && s->rejected_rcpts) {
		srv_error(s, "554 5.5.1 Error: no valid recipients");
		return;
	}
	if (s->state != SS_RCPT) {
		srv_error(s, s->state == SS_MAIL ? "503 5.5.1 Error: need RCPT command"
		                                 : "503 5.5.1 Error: need MAIL command");
		return;
	}
	if (s->bdat_used) {
		srv_error(s, "503 5.5.1 Error: DATA after BDAT");
		return;
	}
	buf_reset(&s->msg);
	smtp_data_rx_init(&s->rx, srv_cfg(s)->max_message_size, srv_cfg(s)->max_line_length);
	srv_set_state(s, SS_DATA);
	srv_reply(s, "354 End data with <CR><LF>.<CR><LF>");
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
		srv_close_with(s, "501 5.5.4 Syntax: BDAT size [LAST]");
		return;
	}
	if (sp) {
		const char *kw = sp + 1;
		if ((size_t)(end - kw) == 4 && !strncasecmp(kw, "LAST", 4)) {
			last = true;
		} else {
			srv_close_with(s, "501 5.5.4 Syntax: BDAT size [LAST]");
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
		if (buf_used(&s->msg) + size > srv_cfg(s)->max_message_size)
			s->bdat_error = "552 5.3.4 Message size exceeds fixed maximum message size";
	} else if (s->state == SS_MAIL && s->rejected_rcpts) {
		s->bdat_error = "554 5.5.1 Error: no valid recipients";
	} else {
		s->bdat_error = s->state == SS_MAIL ? "503 5.5.1 Error: need RCPT command"
		                                    : "503 5.5.1 Error: need MAIL command";
	}
	srv_set_state(s, SS_BDAT);
}

void srv_command(struct srv_session *s, const char *line, size_t len)
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
			srv_error(s, "501 5.5.4 Syntax: RSET");
			return;
		}
		srv_tx_reset(s);
		srv_reply(s, "250 2.0.0 Ok");
		return;
	case SMTP_NOOP:
		srv_reply(s, "250 2.0.0 Ok");
		return;
	case SMTP_QUIT:
		srv_close_with(s, "221 2.0.0 Bye");
		return;
	case SMTP_VRFY:
		srv_reply(
		    s, "252 2.5.0 Cannot VRFY user, but will accept message and attempt delivery");
		return;
	case SMTP_EXPN:
		srv_error(s, "502 5.5.1 Error: EXPN not available");
		return;
	case SMTP_HELP:
		srv_reply(s, "214 2.0.0 ringpost: see RFC 5321 (EHLO HELO MAIL RCPT DATA BDAT RSET "
		             "NOOP QUIT VRFY HELP)");
		return;
	case SMTP_STARTTLS:
		srv_cmd_starttls(s, &c);
		return;
	case SMTP_AUTH:
		srv_cmd_auth(s, &c);
		return;
	case SMTP_UNKNOWN:
		srv_error(s, "500 5.5.2 Error: command not recognized");
		return;
	}
	rp_panic("unhandled verb %d", (int)c.verb);
}
