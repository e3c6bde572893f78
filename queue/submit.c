/* submit.c - the one submission path (see submit.h): envelope, prefix
 * headers, the commit, routing after it, and the start-up recovery.
 *
 * Strings are kept as offsets into one growing buffer and turned into
 * pointers only when the records are built (commit, routing), so adding a
 * recipient never leaves a dangling pointer behind.
 */
#include "submit.h"

#include <stdio.h>
#include <stdlib.h>

#include "base/msg_header.h"
#include "base/util.h"

#define KEEP_BYTES    (64u * 1024) /* a reused submission keeps this much */
#define RECOVER_BATCH 4096         /* recipients routed per call at start-up */

void submission_init(struct submission *s)
{
	memset(s, 0, sizeof(*s));
}

void submission_reset(struct submission *s)
{
	buf_shrink(&s->strings, KEEP_BYTES);
	buf_reset(&s->strings);
	buf_shrink(&s->prefix, KEEP_BYTES);
	buf_reset(&s->prefix);
	s->id = 0;
	s->submit_ms = 0;
	s->flags = 0;
	s->sender_off = s->sender_len = 0;
	s->envid_off = s->envid_len = 0;
	s->source_off = s->source_len = 0;
	s->submitter_off = s->submitter_len = 0;
	s->nrcpt = 0;
	memset(s->body, 0, sizeof(s->body));
	s->variants = NULL;
	s->done = NULL;
	s->arg = NULL;
}

void submission_free(struct submission *s)
{
	buf_free(&s->strings);
	buf_free(&s->prefix);
	free(s->rcpts);
	free(s->spool_rcpts);
	free(s->adds);
	memset(s, 0, sizeof(*s));
}

/* keep - copy p[0..n) into the strings; its offset. */
static uint32_t keep(struct submission *s, const char *p, size_t n)
{
	uint32_t off = (uint32_t)buf_used(&s->strings);
	buf_append(&s->strings, p, n);
	return off;
}

void submission_sender(struct submission *s, const char *addr, size_t len, uint32_t flags,
                       const char *envid, size_t envid_len)
{
	s->sender_off = keep(s, addr, len);
	s->sender_len = (uint32_t)len;
	s->envid_off = keep(s, envid, envid_len);
	s->envid_len = (uint32_t)envid_len;
	s->flags |= flags | (len ? 0 : MSG_F_BOUNCE);
}

unsigned submission_add_rcpt(struct submission *s, const char *addr, size_t len, uint8_t notify,
                             const char *orcpt, size_t orcpt_len)
{
	if (s->nrcpt == s->rcap) {
		s->rcap = s->rcap ? s->rcap * 2 : 8;
		s->rcpts = xrealloc(s->rcpts, s->rcap * sizeof(*s->rcpts));
	}
	struct submit_rcpt *r = &s->rcpts[s->nrcpt];
	memset(r, 0, sizeof(*r));
	r->addr_off = keep(s, addr, len);
	r->addr_len = (uint32_t)len;
	r->orcpt_off = keep(s, orcpt, orcpt_len);
	r->orcpt_len = (uint32_t)orcpt_len;
	r->notify = notify;
	/* The domain, lower-cased and NUL-terminated, for routing. */
	char dom[256];
	int dl = submit_domain(addr, len, dom, sizeof(dom));
	rp_assert(dl >= 0); /* the caller checked the address */
	r->domain_off = keep(s, dom, (size_t)dl + 1);
	r->domain_len = (uint32_t)dl;
	return s->nrcpt++;
}

const char *submission_rcpt_addr(const struct submission *s, unsigned i, size_t *len)
{
	rp_assert(i < s->nrcpt);
	*len = s->rcpts[i].addr_len;
	return buf_head(&s->strings) + s->rcpts[i].addr_off;
}

const char *submission_sender_addr(const struct submission *s, size_t *len)
{
	*len = s->sender_len;
	return buf_head(&s->strings) + s->sender_off;
}

void submission_start(struct submission *s, struct spool *sp, const char *source)
{
	s->id = spool_next_id(sp);
	s->submit_ms = rp_now_ms();
	size_t n = strlen(source);
	s->source_off = keep(s, source, n);
	s->source_len = (uint32_t)n;
}

void submission_submitter(struct submission *s, const char *user)
{
	size_t n = strlen(user);
	s->submitter_off = keep(s, user, n);
	s->submitter_len = (uint32_t)n;
}

void submit_received(struct buf *b, const struct submit_trace *t, const char *id, uint64_t date_ms,
                     const char *for_rcpt, size_t for_len)
{
	char date[64];
	rp_rfc5322_date(date_ms, date, sizeof(date));
	buf_printf(b, "Received: from %s (%s)\r\n\t", t->from, t->from_ip);
	if (t->tls)
		buf_printf(b, "(%s)\r\n\t", t->tls);
	buf_printf(b, "by %s (ringpost) with %s id %s", t->by, t->with, id);
	if (for_rcpt && for_len < 200)
		buf_printf(b, "\r\n\tfor <%.*s>", (int)for_len, for_rcpt);
	buf_printf(b, "; %s\r\n", date);
}

void submission_trace(struct submission *s, const struct submit_trace *t)
{
	char id[17];
	rp_id_format(s->id, id);
	bool one = t->for_rcpt && s->nrcpt == 1;
	submit_received(&s->prefix, t, id, s->submit_ms,
	                one ? buf_head(&s->strings) + s->rcpts[0].addr_off : NULL,
	                one ? s->rcpts[0].addr_len : 0);
}

void submission_complete(struct submission *s, const char *content, size_t len,
                         const char *hostname)
{
	struct msg_header_info hi;
	msg_header_scan(content, len, &hi);
	msg_add_missing(&s->prefix, &hi, len > 0, s->id, hostname, s->submit_ms);
}

const struct buf *submission_prefix(const struct submission *s)
{
	return &s->prefix;
}

void submission_content(struct submission *s, const void *p, size_t n)
{
	s->body[1].iov_base = (void *)p;
	s->body[1].iov_len = n;
}

void submission_variants(struct submission *s, const struct iovec *v)
{
	s->variants = v;
}

uint64_t submission_size(const struct submission *s)
{
	if (s->variants) {
		uint64_t n = 0;
		for (unsigned i = 0; i < s->nrcpt; i++)
			n += s->variants[i].iov_len;
		return n;
	}
	return buf_used(&s->prefix) + s->body[1].iov_len;
}

/* committed - the writer's answer, on reply_to's thread. */
static void committed(struct mq_item *item, void *ctx)
{
	struct submission *s = RP_CONTAINER_OF(item, struct submission, req.item);
	(void)ctx;
	s->done(s, s->arg);
}

void submission_commit(struct submission *s, struct spool *sp, struct mq *reply_to,
                       submit_done_fn done, void *arg)
{
	rp_assert(s->id && s->nrcpt);
	if (s->spool_cap < s->nrcpt) {
		s->spool_cap = s->nrcpt;
		s->spool_rcpts = xrealloc(s->spool_rcpts, s->spool_cap * sizeof(*s->spool_rcpts));
	}
	const char *str = buf_head(&s->strings);
	for (unsigned i = 0; i < s->nrcpt; i++) {
		const struct submit_rcpt *r = &s->rcpts[i];
		struct spool_rcpt *o = &s->spool_rcpts[i];
		memset(o, 0, sizeof(*o));
		o->addr = str + r->addr_off;
		o->addr_len = r->addr_len;
		o->orcpt = str + r->orcpt_off;
		o->orcpt_len = r->orcpt_len;
		o->notify = r->notify;
		o->variant = s->variants ? i + 1 : 0;
	}
	s->done = done;
	s->arg = arg;
	memset(&s->req, 0, sizeof(s->req));
	s->req.type = SPOOL_REQ_SUBMIT;
	s->req.reply_to = reply_to;
	s->req.reply_fn = committed;
	struct spool_submit *sub = &s->req.u.submit;
	sub->msg.id = s->id;
	sub->msg.submit_ms = s->submit_ms;
	sub->msg.flags = s->flags | (s->variants ? MSG_F_VARIANTS : 0);
	sub->msg.nrcpt = s->nrcpt;
	sub->msg.sender = str + s->sender_off;
	sub->msg.sender_len = s->sender_len;
	sub->msg.envid = str + s->envid_off;
	sub->msg.envid_len = s->envid_len;
	sub->msg.source = str + s->source_off;
	sub->msg.source_len = s->source_len;
	sub->msg.submitter = str + s->submitter_off;
	sub->msg.submitter_len = s->submitter_len;
	if (s->variants) {
		/* Each recipient's body is whole; the shared one stays empty. */
		memset(s->body, 0, sizeof(s->body));
	} else {
		s->body[0].iov_base = buf_head(&s->prefix);
		s->body[0].iov_len = buf_used(&s->prefix);
	}
	sub->body = s->body;
	sub->nbody = 2;
	sub->variants = s->variants;
	sub->nvariants = s->variants ? s->nrcpt : 0;
	sub->msg.body_len = submission_size(s);
	sub->rcpts = s->spool_rcpts;
	spool_request(sp, &s->req);
}

enum spool_status submission_status(const struct submission *s)
{
	return s->req.status;
}

void submission_route(struct submission *s, submit_route_fn route, void *ctx)
{
	if (s->adds_cap < s->nrcpt) {
		s->adds_cap = s->nrcpt;
		s->adds = xrealloc(s->adds, s->adds_cap * sizeof(*s->adds));
	}
	const char *str = buf_head(&s->strings);
	unsigned n = 0;
	for (unsigned i = 0; i < s->nrcpt; i++) {
		if (submission_rcpt_suppressed(s, i)) /* final already: never tried */
			continue;
		s->adds[n++] = (struct sched_add){
			.msgid = s->id,
			.idx = i,
			.domain = str + s->rcpts[i].domain_off,
			.submit_ms = s->submit_ms,
			.own_body = s->variants != NULL,
		};
	}
	if (n)
		route(ctx, s->adds, n);
}

bool submission_rcpt_suppressed(const struct submission *s, unsigned i)
{
	return i < s->nrcpt && s->spool_rcpts && s->spool_rcpts[i].state == SPOOL_SUPPRESSED;
}

unsigned submission_suppressed(const struct submission *s)
{
	unsigned n = 0;
	for (unsigned i = 0; i < s->nrcpt; i++)
		n += submission_rcpt_suppressed(s, i);
	return n;
}

int submit_domain(const char *addr, size_t len, char *out, size_t outlen)
{
	const char *at = NULL;
	for (size_t i = len; i > 0; i--)
		if (addr[i - 1] == '@') {
			at = addr + i - 1;
			break;
		}
	if (!at)
		return -1;
	size_t n = (size_t)(addr + len - at - 1);
	if (!n || n >= outlen)
		return -1;
	memcpy(out, at + 1, n);
	out[n] = '\0';
	rp_lower(out);
	return (int)n;
}

/* ---- start-up recovery ------------------------------------------------- */

struct recover {
	submit_route_fn route;
	void *ctx;
	struct sched_add adds[RECOVER_BATCH];
	char domains[RECOVER_BATCH][256];
	unsigned n;
	uint64_t total;
};

/* recover_flush - route what has been collected. */
static void recover_flush(struct recover *st)
{
	if (!st->n)
		return;
	st->route(st->ctx, st->adds, st->n);
	st->n = 0;
}

/* recover_one - one recipient that is not final, as the spool has it. */
static void recover_one(const struct spool_msg *m, const struct spool_rcpt *rc, void *arg)
{
	struct recover *st = arg;
	char *d = st->domains[st->n];
	if (submit_domain(rc->addr, rc->addr_len, d, sizeof(st->domains[0])) < 0)
		return;
	st->adds[st->n] = (struct sched_add){
		.msgid = rc->msgid,
		.idx = rc->idx,
		.domain = d,
		.submit_ms = m->submit_ms,
		.next_ms = rc->state == SPOOL_DEFERRED ? rc->next_ms : 0,
		.attempts = rc->attempts,
		.own_body = rc->variant != 0,
	};
	st->total++;
	if (++st->n == RECOVER_BATCH)
		recover_flush(st);
}

uint64_t submit_recover(struct spool *sp, submit_route_fn route, void *ctx)
{
	struct spool_reader *rd = spool_reader_new(sp);
	struct recover *st = xcalloc(1, sizeof(*st));
	st->route = route;
	st->ctx = ctx;
	if (spool_reader_begin(rd)) {
		spool_scan_pending(rd, recover_one, st);
		spool_reader_end(rd);
	}
	recover_flush(st);
	uint64_t total = st->total;
	free(st);
	spool_reader_free(rd);
	return total;
}
