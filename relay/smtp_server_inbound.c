/* smtp_server_inbound.c - the bounce MX: the SMTP server in inbound mode
 * ([listen] inbound).
 *
 * It accepts mail only for addresses at [queue] bounce_domain: signed VERP
 * return paths (queue/verp.h) and postmaster@ / abuse@ that domain; 550
 * 5.7.1 for anything else (never an open relay, whatever [submission]
 * networks says; a VERP address with a wrong signature is refused too).
 * What arrives is read (queue/bounce.h): a failure reported for one of our
 * recipients makes it bounced with the remote's status and text, a
 * complaint makes it complained, and a hard bounce (outcome_hard_bounce)
 * or a complaint puts the address on the suppression list. The message is
 * kept in the bounce mailbox either way (flagged when it names none of our
 * recipients). All of it is one durable spool commit, answered 250 only
 * after it. A report sent to postmaster@ or abuse@ (an ARF complaint, a
 * DSN forwarded by hand) is matched through the VERP address its returned
 * copy carries.
 */
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>

#include "base/addr.h"
#include "base/log.h"
#include "base/util.h"
#include "queue/bounce.h"
#include "queue/outcome.h"
#include "queue/verp.h"
#include "smtp_server_impl.h"

#define MATCH_MAX 16 /* recipients one report may name */

/* A report on its way to the spool. */
struct inbound_commit {
	struct spool_req req;
	struct srv_session *s;
	struct buf data;                    /* the mailbox copy: trace fields + message */
	struct bounce_report rep;           /* what it says (about 20 KiB: not on a stack) */
	struct spool_event ev[MATCH_MAX];   /* what it does to our recipients */
	char addr[MATCH_MAX][ADDR_MAX + 1]; /* each match's address ("" = gone) */
	char text[MATCH_MAX][720];          /* the suppression reason; the response is
	                                     * its end ("hard bounce: " + the remote's) */
	unsigned nmatch;
};

/* local_is - the local part of addr (up to '@') is word, any case. */
static bool local_is(const char *addr, size_t len, const char *word)
{
	size_t n = strlen(word);
	return len > n && addr[n] == '@' && !strncasecmp(addr, word, n);
}

/* at_domain - addr's domain is domain, any case. */
static bool at_domain(const char *addr, size_t len, const char *domain)
{
	const char *at = memchr(addr, '@', len);
	size_t dl = strlen(domain);
	return at && (size_t)(addr + len - at - 1) == dl && !strncasecmp(at + 1, domain, dl);
}

const char *srv_inbound_refuse(struct srv_session *s)
{
	const struct sockaddr *sa = (const struct sockaddr *)&s->peer_ss;
	uint64_t left = 0, now = rp_mono_ms();
	const char *why = NULL;
	if (auth_limiter_blocked(s->srv->refused, sa, now, &left))
		why = "too many refused recipients";
	else if (auth_limiter_blocked(s->srv->flood, sa, now, &left))
		why = "too many reports";
	if (!why)
		return NULL;
	log_info("bounce-mx %s: refused for %llu more seconds: %s", s->peer,
	         (unsigned long long)(left + 999) / 1000, why);
	return "421 4.7.0 Error: too many messages or refused recipients from your address, try "
	       "again later";
}

bool srv_inbound_rcpt(struct srv_session *s, const char *addr, size_t len)
{
	const char *domain = srv_cfg(s)->bounce_domain;
	uint64_t msgid = 0;
	uint32_t idx = 0;
	enum verp_result v =
	    domain[0] ? verp_decode(spool_verp_key(s->srv->spool), addr, len, domain, &msgid, &idx)
	              : VERP_NOT_VERP;
	bool special = v == VERP_NOT_VERP && domain[0] && at_domain(addr, len, domain) &&
	               (local_is(addr, len, "postmaster") || local_is(addr, len, "abuse"));
	if (v != VERP_OK && !special) {
		if (v == VERP_BAD_MAC) {
			char q[400];
			log_quote(q, sizeof(q), addr, len);
			log_warn("bounce-mx %s: refused a forged VERP address rcpt=%s", s->peer, q);
		}
		bool blocked = false;
		auth_limiter_fail(s->srv->refused, (const struct sockaddr *)&s->peer_ss,
		                  rp_mono_ms(), &blocked);
		if (blocked) {
			log_warn("bounce-mx %s: too many refused recipients: blocked", s->peer);
			srv_close_with(
			    s, "421 4.7.0 Error: too many refused recipients, try again later");
		} else {
			srv_reply(s, v == VERP_BAD_MAC
			                 ? "550 5.7.1 Error: not a valid bounce address"
			                 : "550 5.7.1 Error: relay access denied (this "
			                   "host takes bounces only)");
		}
		return false;
	}
	if (s->ninb == s->inb_cap) {
		s->inb_cap = s->inb_cap ? s->inb_cap * 2 : 4;
		s->inb = xrealloc(s->inb, s->inb_cap * sizeof(*s->inb));
	}
	s->inb[s->ninb++] =
	    (struct inbound_rcpt){ .msgid = msgid, .idx = idx, .verp = v == VERP_OK };
	return true;
}

/* add_match - one of our recipients is named (once). */
static void add_match(struct inbound_commit *ic, uint64_t msgid, uint32_t idx)
{
	for (unsigned i = 0; i < ic->nmatch; i++)
		if (ic->ev[i].msgid == msgid && ic->ev[i].idx == idx)
			return;
	if (ic->nmatch < MATCH_MAX) {
		ic->ev[ic->nmatch].msgid = msgid;
		ic->ev[ic->nmatch].idx = idx;
		ic->nmatch++;
	}
}

/* scan_verp - VERP addresses of ours anywhere in the message (the returned
 * copy's Return-Path, an ARF report's original headers). */
static void scan_verp(struct inbound_commit *ic, const char *p, size_t n, const char *domain,
                      const unsigned char *key)
{
	static const char tag[] = "bounce-";
	size_t dl = strlen(domain);
	for (size_t i = 0; i + sizeof(tag) - 1 < n && ic->nmatch < MATCH_MAX; i++) {
		if (p[i] != 'b' && p[i] != 'B')
			continue;
		if (strncasecmp(p + i, tag, sizeof(tag) - 1))
			continue;
		/* The local part is 7 + 16 + 1 + 1..10 + 1 + 16 bytes; then @domain. */
		size_t end = i;
		while (end < n && end - i < VERP_ADDR_MAX && p[end] != '>' && p[end] != ' ' &&
		       p[end] != '\r' && p[end] != '\n' && p[end] != ';' && p[end] != '"')
			end++;
		uint64_t msgid;
		uint32_t idx;
		if (end - i > dl + 1 &&
		    verp_decode(key, p + i, end - i, domain, &msgid, &idx) == VERP_OK)
			add_match(ic, msgid, idx);
		i = end;
	}
}

/* worst_rcpt - the report's entry for a failure (or the first one). */
static const struct bounce_rcpt *worst_rcpt(const struct bounce_report *r)
{
	for (unsigned i = 0; i < r->nrcpt; i++)
		if (r->rcpt[i].kind == r->kind)
			return &r->rcpt[i];
	return r->nrcpt ? &r->rcpt[0] : NULL;
}

/* lookup_addrs - each matched recipient's address, from its record ("" when
 * the record is gone: then the report changes nothing for it). */
static void lookup_addrs(struct inbound_commit *ic, struct spool_reader *reader)
{
	bool open = reader && spool_reader_begin(reader);
	for (unsigned i = 0; i < ic->nmatch; i++) {
		struct spool_rcpt rc;
		ic->addr[i][0] = '\0';
		if (open && spool_get_rcpt(reader, ic->ev[i].msgid, ic->ev[i].idx, &rc) &&
		    rc.addr_len < sizeof(ic->addr[i])) {
			memcpy(ic->addr[i], rc.addr, rc.addr_len);
			ic->addr[i][rc.addr_len] = '\0';
		}
	}
	if (open)
		spool_reader_end(reader);
}

/* entry_for - the report's entry about our recipient addr: the one naming
 * it (Final- or Original-Recipient); else, when the report concerns this
 * recipient alone, its verdict; else none (a report naming others says
 * nothing about this one). */
static const struct bounce_rcpt *entry_for(const struct bounce_report *r, const char *addr,
                                           unsigned nmatch)
{
	for (unsigned i = 0; i < r->nrcpt; i++)
		if (!strcasecmp(r->rcpt[i].final_rcpt, addr) ||
		    !strcasecmp(r->rcpt[i].original_rcpt, addr))
			return &r->rcpt[i];
	return nmatch == 1 ? worst_rcpt(r) : NULL;
}

/* events - what the report does to each matched recipient. */
static void events(struct inbound_commit *ic)
{
	const struct bounce_report *r = &ic->rep;
	unsigned n = 0;
	for (unsigned i = 0; i < ic->nmatch; i++) {
		if (!ic->addr[i][0])
			continue; /* the record is gone: nothing to change */
		const struct bounce_rcpt *br = entry_for(r, ic->addr[i], ic->nmatch);
		struct spool_event *e = &ic->ev[n];
		*e = (struct spool_event){ .msgid = ic->ev[i].msgid, .idx = ic->ev[i].idx };
		static const char hard[] = "hard bounce: ";
		char *why = ic->text[n], *resp = why;
		if (br && br->kind == BOUNCE_FAILED) {
			e->state = SPOOL_BOUNCED;
			/* "550 5.1.1 text" as the remote said it, else "5.1.1 text". */
			bool is_reply = br->diag[0] >= '2' && br->diag[0] <= '5' &&
			                br->diag[1] >= '0' && br->diag[1] <= '9' &&
			                br->diag[2] >= '0' && br->diag[2] <= '9';
			snprintf(why, sizeof(ic->text[0]), "%s%s%s%s%s%s%s", hard,
			         is_reply ? "" : br->status, is_reply || !br->diag[0] ? "" : " ",
			         br->diag, br->remote_mta[0] ? " (reported by " : "",
			         br->remote_mta, br->remote_mta[0] ? ")" : "");
			e->suppress = outcome_hard_bounce(br->status, br->diag);
			resp = why + sizeof(hard) - 1;
		} else if (br && br->kind == BOUNCE_COMPLAINT) {
			e->state = SPOOL_COMPLAINED;
			snprintf(why, sizeof(ic->text[0]), "complaint: %s",
			         r->feedback_type[0] ? r->feedback_type : "abuse");
			e->suppress = true;
		} else {
			continue; /* delayed, delivered, not a report: the mailbox only */
		}
		e->response = resp;
		e->response_len = strlen(resp);
		e->reason = why;
		n++;
	}
	ic->req.events = ic->ev;
	ic->req.nevents = n;
}

/* inbound_done - the spool answered: 250 only now. */
static void inbound_done(struct mq_item *item, void *ctx)
{
	struct inbound_commit *ic = RP_CONTAINER_OF(item, struct inbound_commit, req.item);
	struct srv_session *s = ic->s;
	struct smtpd *srv = s->srv;
	(void)ctx;
	s->commit_inflight = false;
	bool ok = ic->req.status == SPOOL_OK;
	if (ok) {
		srv->reports++;
		bool blocked = false;
		if (!s->relay_ok)
			auth_limiter_fail(srv->flood, (const struct sockaddr *)&s->peer_ss,
			                  rp_mono_ms(), &blocked);
		if (blocked)
			log_warn("bounce-mx %s: more than %u reports in a minute: blocked", s->peer,
			         INBOUND_MAX_REPORTS);
		srv->reports_matched += ic->nmatch > 0;
		const struct bounce_rcpt *br = worst_rcpt(&ic->rep);
		log_info("bounce-mx accepted uid=%u kind=%s format=%s matched=%u applied=%u "
		         "status=%s client=%s",
		         ic->req.u.mbox.uid, bounce_kind_name(ic->rep.kind),
		         bounce_format_name(ic->rep.format), ic->nmatch, ic->req.nevents,
		         br && br->status[0] ? br->status : "-", s->peer);
		for (unsigned i = 0; i < ic->req.nevents; i++) {
			const struct spool_event *e = &ic->ev[i];
			char id[17];
			rp_id_format(e->msgid, id);
			log_info("bounce-mx id=%s.%u state=%s found=%s suppress=%s", id, e->idx,
			         spool_state_name(e->state), e->found ? "yes" : "no",
			         e->suppress ? "yes" : "no");
		}
	} else {
		srv->rejected++;
		log_warn("bounce-mx %s: the spool refused a report: %s", s->peer,
		         ic->req.status == SPOOL_EFULL ? "full" : "I/O error");
	}
	if (!s->released) {
		if (ok)
			conn_line(&s->conn, "250 2.0.0 Ok: received as mailbox message %u",
			          ic->req.u.mbox.uid);
		else
			srv_reply(s, ic->req.status == SPOOL_EFULL
			                 ? "452 4.3.1 Insufficient system storage"
			                 : "451 4.3.0 Error: queue file write error");
	}
	buf_free(&ic->data);
	free(ic);
	if (s->released) {
		srv_may_free(s);
		return;
	}
	srv_set_state(s, SS_IDLE);
	srv_tx_reset(s);
	srv_resume(s);
}

void srv_inbound_commit(struct srv_session *s, const char *with, const char *using)
{
	const struct config *cfg = srv_cfg(s);
	struct inbound_commit *ic = xcalloc(1, sizeof(*ic));
	ic->s = s;
	const char *msg = buf_head(&s->msg);
	size_t len = buf_used(&s->msg);
	bounce_parse(msg, len, &ic->rep);
	for (unsigned i = 0; i < s->ninb; i++)
		if (s->inb[i].verp)
			add_match(ic, s->inb[i].msgid, s->inb[i].idx);
	if (!ic->nmatch && cfg->bounce_domain[0])
		scan_verp(ic, msg, len, cfg->bounce_domain, spool_verp_key(s->srv->spool));
	lookup_addrs(ic, s->srv->reader);
	events(ic);
	/* The copy: who sent it (its null sender, usually), how it came. */
	size_t slen;
	const char *sender = submission_sender_addr(&s->sub, &slen);
	buf_printf(&ic->data, "Return-Path: <%.*s>\r\n", (int)slen, sender);
	struct submit_trace t = { .from = s->helo,
		                  .from_ip = s->peer_ip,
		                  .tls = using,
		                  .by = cfg->hostname,
		                  .with = with };
	char id[24];
	snprintf(id, sizeof(id), "bmx%llu", (unsigned long long)rp_now_ms());
	size_t r0;
	const char *rcpt0 = s->sub.nrcpt ? submission_rcpt_addr(&s->sub, 0, &r0) : NULL;
	submit_received(&ic->data, &t, id, rp_now_ms(), rcpt0, rcpt0 ? r0 : 0);
	buf_append(&ic->data, msg, len);
	ic->req.type = SPOOL_REQ_INBOUND;
	ic->req.reply_to = loop_inbox(s->srv->loop);
	ic->req.reply_fn = inbound_done;
	ic->req.u.mbox.data = buf_head(&ic->data);
	ic->req.u.mbox.len = buf_used(&ic->data);
	ic->req.u.mbox.date_ms = rp_now_ms();
	ic->req.u.mbox.flags = ic->nmatch ? 0 : MBOX_FLAGGED; /* unmatched: look at it */
	ic->req.u.mbox.durable = true;
	s->commit_inflight = true;
	srv_set_state(s, SS_COMMIT);
	spool_request(s->srv->spool, &ic->req);
}
