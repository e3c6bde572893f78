/* dsn_emit.c - DSNs for failed recipients (see dsn_emit.h).
 *
 * Failed recipients are collected during an iteration and reported one
 * DSN per message at the flush; never for a bounce, a null sender,
 * NOTIFY=NEVER or NOTIFY without FAILURE.
 */
#include "dsn_emit.h"

#include <stdio.h>
#include <stdlib.h>

#include "dsn.h"
#include "base/log.h"
#include "base/msg_header.h"
#include "base/util.h"

#define DSN_FULL_MAX (10u << 20) /* RET=FULL beyond this returns headers only */

/* A failed recipient whose DSN is built at the flush. */
struct pending_dsn {
	uint64_t msgid;
	uint32_t idx;
	bool smtp; /* diag is an SMTP reply */
	char status[16];
	char diag[400];
	char remote[80];
	uint64_t last_ms;
};

struct dsn_emit {
	struct spool *sp;
	struct spool_reader *reader;
	struct pending_dsn *v; /* queued since the last flush */
	unsigned n, cap;
};

/* The recipients of one DSN: fields point into strings once it is read. */
struct dsn_rcpts {
	struct dsn_rcpt *r;
	unsigned n;
	uint32_t variant;   /* body variant of the recipients (the last one's) */
	struct buf strings; /* addresses copied out of the read transaction */
	size_t *addr_off, *orcpt_off;
};

/* dsn_emit_new - an emitter on sp and reader. */
struct dsn_emit *dsn_emit_new(struct spool *sp, struct spool_reader *reader)
{
	struct dsn_emit *e = xcalloc(1, sizeof(*e));
	e->sp = sp;
	e->reader = reader;
	return e;
}

/* dsn_emit_free - free e and whatever is still queued. */
void dsn_emit_free(struct dsn_emit *e)
{
	if (!e)
		return;
	free(e->v);
	free(e);
}

/* dsn_emit_queue - note a failed recipient; its DSN is built at the flush. */
void dsn_emit_queue(struct dsn_emit *e, uint64_t msgid, uint32_t idx,
                    const struct attempt_report *rep, const struct outcome *oc, const char *remote,
                    uint64_t now_ms)
{
	if (e->n == e->cap) {
		e->cap = e->cap ? e->cap * 2 : 64;
		e->v = xrealloc(e->v, e->cap * sizeof(*e->v));
	}
	struct pending_dsn *p = &e->v[e->n++];
	memset(p, 0, sizeof(*p));
	p->msgid = msgid;
	p->idx = idx;
	p->smtp = rep->kind == ATTEMPT_REPLY;
	p->last_ms = now_ms;
	snprintf(p->status, sizeof(p->status), "%s", oc->status);
	if (!strcmp(oc->status, "4.4.7")) { /* our words around the last reply */
		snprintf(p->diag, sizeof(p->diag), "delivery time expired; last error: %s",
		         rep->text);
		p->smtp = false;
	} else {
		snprintf(p->diag, sizeof(p->diag), "%s", rep->text);
	}
	/* The relay alone: a record's remote may go on with the session's
	 * TLS ("... tls=no"), which is not an MTA name (Remote-MTA). */
	if (remote)
		snprintf(p->remote, sizeof(p->remote), "%.*s", (int)strcspn(remote, " "), remote);
}

/* dsn_rcpts_read - the recipients of p[0..n) (one message) that asked for
 * a failure DSN, read in the open read transaction into out. */
static void dsn_rcpts_read(struct dsn_emit *e, const struct pending_dsn *p, unsigned n,
                           struct dsn_rcpts *out)
{
	struct spool_rcpt rc;
	for (unsigned i = 0; i < n; i++) {
		if (!spool_get_rcpt(e->reader, p[i].msgid, p[i].idx, &rc))
			continue;
		if (rc.notify & NOTIFY_NEVER || (rc.notify && !(rc.notify & NOTIFY_FAILURE)))
			continue;
		struct dsn_rcpt *r = &out->r[out->n];
		out->variant = rc.variant;
		memset(r, 0, sizeof(*r));
		out->addr_off[out->n] = buf_used(&out->strings);
		buf_append(&out->strings, rc.addr, rc.addr_len);
		r->addr_len = rc.addr_len;
		out->orcpt_off[out->n] = buf_used(&out->strings);
		buf_append(&out->strings, rc.orcpt, rc.orcpt_len);
		r->orcpt_len = rc.orcpt_len;
		r->action = "failed";
		r->status = p[i].status;
		r->diag = p[i].diag;
		r->diag_smtp = p[i].smtp;
		r->remote = p[i].remote[0] ? p[i].remote : NULL;
		r->last_attempt_ms = p[i].last_ms;
		out->n++;
	}
	for (unsigned i = 0; i < out->n; i++) {
		out->r[i].addr = buf_head(&out->strings) + out->addr_off[i];
		out->r[i].orcpt =
		    out->r[i].orcpt_len ? buf_head(&out->strings) + out->orcpt_off[i] : NULL;
	}
}

/* dsn_store - hand the DSN in out to the writer for the bounce mailbox. */
static void dsn_store(struct dsn_emit *e, const struct buf *out, uint64_t date_ms)
{
	/* One allocation: the request, then the message. */
	struct spool_req *req = xcalloc(1, sizeof(*req) + buf_used(out));
	memcpy(req + 1, buf_head(out), buf_used(out));
	req->type = SPOOL_REQ_MBOX_PUT;
	req->u.mbox.data = (const char *)(req + 1);
	req->u.mbox.len = buf_used(out);
	req->u.mbox.date_ms = date_ms;
	spool_request(e->sp, req);
}

/* dsn_one - build and store the DSN for p[0..n) (one message). Runs before
 * the iteration's state updates reach the writer, so the body (deleted
 * when the last recipient becomes final) is still there. */
static void dsn_one(struct dsn_emit *e, const struct pending_dsn *p, unsigned n,
                    const char *reporting_mta)
{
	struct spool_msg m;
	if (!spool_reader_begin(e->reader))
		return;
	if (!spool_get_msg(e->reader, p[0].msgid, &m) || (m.flags & MSG_F_BOUNCE) ||
	    !m.sender_len) {
		spool_reader_end(e->reader); /* never bounce a bounce */
		return;
	}
	/* One DSN may name every recipient of a message (up to 100,000):
	 * its records live on the heap, never on the thread's stack. */
	struct dsn_rcpt *r = xcalloc(n, sizeof(*r));
	size_t *offs = xcalloc(2 * (size_t)n, sizeof(*offs));
	struct dsn_rcpts rs = { .r = r, .addr_off = offs, .orcpt_off = offs + n };
	dsn_rcpts_read(e, p, n, &rs);
	if (!rs.n) {
		spool_reader_end(e->reader);
		buf_free(&rs.strings);
		free(r);
		free(offs);
		return;
	}
	struct buf body = { 0 };
	bool full = (m.flags & MSG_F_RET_FULL) && m.body_len <= DSN_FULL_MAX;
	spool_get_body(e->reader, m.id, rs.variant, &body);
	struct dsn_info info = {
		.reporting_mta = reporting_mta ? reporting_mta : "localhost",
		.queue_id = m.id,
		.envid = m.envid,
		.envid_len = m.envid_len,
		.arrival_ms = m.submit_ms,
		.now_ms = rp_now_ms(),
		.sender = m.sender,
		.sender_len = m.sender_len,
		.rcpts = r,
		.nrcpts = rs.n,
		.original = buf_head(&body),
		.original_len = buf_used(&body),
		.full = full,
	};
	if (!full) {
		struct msg_header_info hi;
		msg_header_scan(buf_head(&body), buf_used(&body), &hi);
		size_t end = hi.end;
		if (hi.blank_line) /* the header section without its blank line */
			end -= end >= 2 && buf_head(&body)[end - 2] == '\r' ? 2 : 1;
		info.original_len = end;
	}
	/* The bounce mailbox is the DSN's final delivery: it records the
	 * DSN's null envelope sender (RFC 3464 section 2) the way a final
	 * delivery does, as Return-Path (RFC 5321 4.4). */
	struct buf out = { 0 };
	buf_puts(&out, "Return-Path: <>\r\n");
	dsn_build(&info, &out);
	spool_reader_end(e->reader);
	dsn_store(e, &out, info.now_ms);
	char id[17], to[LOG_VALUE_MAX];
	rp_id_format(m.id, id);
	log_info("dsn id=%s to=%s recipients=%u status=%s", id,
	         log_addr(to, sizeof(to), m.sender, m.sender_len), rs.n, r[0].status);
	buf_free(&out);
	buf_free(&body);
	buf_free(&rs.strings);
	free(r);
	free(offs);
}

/* dsn_cmp - order pending DSNs by message, then recipient. */
static int dsn_cmp(const void *a, const void *b)
{
	const struct pending_dsn *x = a, *y = b;
	if (x->msgid != y->msgid)
		return x->msgid < y->msgid ? -1 : 1;
	return x->idx < y->idx ? -1 : x->idx > y->idx;
}

/* dsn_emit_flush - one DSN per message queued since the last flush. */
void dsn_emit_flush(struct dsn_emit *e, const char *reporting_mta)
{
	if (!e->n)
		return;
	qsort(e->v, e->n, sizeof(*e->v), dsn_cmp);
	unsigned i = 0;
	while (i < e->n) {
		unsigned j = i + 1;
		while (j < e->n && e->v[j].msgid == e->v[i].msgid)
			j++;
		dsn_one(e, e->v + i, j - i, reporting_mta);
		i = j;
	}
	e->n = 0;
}

/* dsn_emit_pending - whether DSNs wait for the flush. */
bool dsn_emit_pending(const struct dsn_emit *e)
{
	return e->n != 0;
}
