/* sched_update.c - the scheduler's spool updates, one request per iteration.
 *
 * State changes are collected while an iteration runs and reach the spool
 * writer as one SPOOL_REQ_UPDATE in sched_run: a batch of completions
 * costs one writer round trip. The DSNs go first (see sched_update_flush).
 */
#include "sched_impl.h"

#include <stdlib.h>

#include "dsn_emit.h"
#include "base/util.h"

/* A spool update waiting for the end of the iteration; strings are
 * offsets into sched.upd.strings until the request is built. */
struct sched_update {
	struct spool_update u;
	size_t resp_off, remote_off;
};

/* sched_update_queue - note one recipient's new state. */
struct spool_update *sched_update_queue(struct sched *s, const struct sched_rcpt *r, uint8_t state,
                                        uint64_t now, uint64_t next_ms, const char *resp,
                                        const char *remote)
{
	struct sched_updates *b = &s->upd;
	if (b->n == b->cap) {
		b->cap = b->cap ? b->cap * 2 : 256;
		b->v = xrealloc(b->v, b->cap * sizeof(*b->v));
	}
	struct sched_update *p = &b->v[b->n++];
	memset(p, 0, sizeof(*p));
	p->u.msgid = r->msgid;
	p->u.idx = r->idx;
	p->u.state = state;
	p->u.attempts = r->attempts;
	p->u.next_ms = next_ms;
	p->u.last_ms = now;
	p->u.response_len = resp ? strlen(resp) : 0;
	p->resp_off = buf_used(&b->strings);
	buf_append(&b->strings, resp, p->u.response_len);
	p->u.remote_len = remote ? strlen(remote) : 0;
	p->remote_off = buf_used(&b->strings);
	buf_append(&b->strings, remote, p->u.remote_len);
	return &p->u;
}

/* sched_update_flush - DSNs first, then one request with every update.
 * The order matters: a message's body is deleted when its last recipient
 * becomes final, and its DSN quotes the body. */
void sched_update_flush(struct sched *s)
{
	struct sched_updates *b = &s->upd;
	dsn_emit_flush(s->dsn, s->cfg.hostname);
	if (!b->n)
		return;
	size_t strings = buf_used(&b->strings);
	size_t size = sizeof(struct spool_req) + b->n * sizeof(struct spool_update) + strings;
	struct spool_req *req = xcalloc(1, size);
	struct spool_update *v = (struct spool_update *)(req + 1);
	char *str = (char *)(v + b->n);
	memcpy(str, buf_head(&b->strings), strings);
	for (unsigned i = 0; i < b->n; i++) {
		v[i] = b->v[i].u;
		v[i].response = str + b->v[i].resp_off;
		v[i].remote = str + b->v[i].remote_off;
	}
	req->type = SPOOL_REQ_UPDATE;
	req->reply_to = NULL; /* the writer frees it */
	req->u.update.v = v;
	req->u.update.n = b->n;
	spool_request(s->sp, req);
	b->n = 0;
	buf_reset(&b->strings);
}

/* sched_update_pending - updates or DSNs wait for the flush. */
bool sched_update_pending(const struct sched *s)
{
	return s->upd.n != 0 || dsn_emit_pending(s->dsn);
}

/* sched_update_free - free the batch's memory (nothing may be pending). */
void sched_update_free(struct sched *s)
{
	rp_assert(!s->upd.n);
	free(s->upd.v);
	buf_free(&s->upd.strings);
}
