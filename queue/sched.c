/* sched.c - per-shard delivery scheduler (see sched.h).
 *
 * Invariants:
 * - A waiting recipient is in exactly one place: its destination's ready
 *   FIFO (R_READY), the retry heap (R_DEFERRED) or a job (R_INFLIGHT); the
 *   destination's counters match.
 * - Spool updates are collected during an iteration and sent as one request
 *   in sched_run, so a batch of completions costs one writer round trip.
 */
#include "sched.h"

#include <stdio.h>
#include <stdlib.h>

#include "dsn_emit.h"
#include "base/log.h"
#include "base/util.h"

enum { R_FREE = 0, R_READY, R_DEFERRED, R_INFLIGHT };
enum { RF_OWN_BODY = 1u << 0, RF_PURGED = 1u << 1 };

#define HEAP_NONE UINT32_MAX
#define SLAB_RCPTS 1024
#define FREE_JOBS_MAX 64
#define JOB_KEEP_BYTES (64u * 1024)

struct sched_rcpt {
	uint64_t msgid;
	uint64_t due_ms;          /* next attempt, unix ms (R_DEFERRED) */
	struct sched_dest *dest;
	struct sched_rcpt *next;  /* ready FIFO or free list */
	uint32_t idx;
	uint32_t heap_pos;        /* index in the heap, HEAP_NONE elsewhere */
	uint32_t submit_s;        /* unix seconds of submission (max_age) */
	uint16_t attempts;
	uint8_t where;            /* R_* */
	uint8_t flags;            /* RF_* */
};

struct slab {
	struct slab *next;
	struct sched_rcpt r[SLAB_RCPTS];
};

/* A spool update waiting for the end of the iteration; strings are
 * offsets into sched.upd_strings until the request is built. */
struct pending_update {
	struct spool_update u;
	size_t resp_off, remote_off;
};

struct sched {
	struct sched_config cfg;
	struct sched_ops ops;
	void *ctx;
	struct spool *sp;
	struct spool_reader *reader;

	struct sched_dest **htab; /* destinations by name */
	uint32_t hsize, ndests;

	struct sched_rcpt **heap; /* retry heap, earliest first */
	uint32_t heap_len, heap_cap;

	struct slab *slabs;
	struct sched_rcpt *free_rcpts;
	uint64_t nslabs, live_rcpts;

	struct sched_dest *kick_head, *kick_tail;
	struct sched_dest *wait_head;               /* held or rate-limited */
	struct sched_dest *slot_head, *slot_tail;   /* waiting for a shard-wide slot */
	struct sched_dest *settle_head;             /* with ready recipients to settle */
	struct sched_dest *purge_head;              /* with a domain purge going on */
	uint32_t sessions;
	uint32_t slot_grants;                       /* free slots kept for a waiter */

	struct sched_job *free_jobs;
	unsigned nfree_jobs;

	struct pending_update *upd;
	unsigned nupd, upd_cap;
	struct buf upd_strings;

	uint64_t rnd; /* xorshift state for jitter */
	struct dsn_emit *dsn;       /* DSNs to build at the end of the iteration */
	struct stats_hist delivery; /* submit to delivered, seconds */
	struct stats_hist txn;      /* transaction time, seconds */
};

static uint64_t rnd_next(struct sched *s)
{
	uint64_t x = s->rnd;
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	s->rnd = x;
	return x * 2685821657736338717ull;
}

/* ---- recipients -------------------------------------------------------- */

static struct sched_rcpt *rcpt_alloc(struct sched *s)
{
	if (!s->free_rcpts) {
		struct slab *sl = xmalloc(sizeof(*sl));
		sl->next = s->slabs;
		s->slabs = sl;
		s->nslabs++;
		for (int i = SLAB_RCPTS - 1; i >= 0; i--) {
			sl->r[i].where = R_FREE;
			sl->r[i].next = s->free_rcpts;
			s->free_rcpts = &sl->r[i];
		}
	}
	struct sched_rcpt *r = s->free_rcpts;
	s->free_rcpts = r->next;
	memset(r, 0, sizeof(*r));
	r->heap_pos = HEAP_NONE;
	s->live_rcpts++;
	return r;
}

static void rcpt_free(struct sched *s, struct sched_rcpt *r)
{
	rp_assert(r->where != R_FREE && r->heap_pos == HEAP_NONE);
	r->where = R_FREE;
	r->next = s->free_rcpts;
	s->free_rcpts = r;
	s->live_rcpts--;
}

/* ---- retry heap -------------------------------------------------------- */

static bool heap_less(const struct sched_rcpt *a, const struct sched_rcpt *b)
{
	if (a->due_ms != b->due_ms)
		return a->due_ms < b->due_ms;
	if (a->msgid != b->msgid)
		return a->msgid < b->msgid;
	return a->idx < b->idx;
}

static void heap_set(struct sched *s, uint32_t i, struct sched_rcpt *r)
{
	s->heap[i] = r;
	r->heap_pos = i;
}

static void heap_up(struct sched *s, uint32_t i)
{
	struct sched_rcpt *r = s->heap[i];
	while (i > 0) {
		uint32_t p = (i - 1) / 2;
		if (!heap_less(r, s->heap[p]))
			break;
		heap_set(s, i, s->heap[p]);
		i = p;
	}
	heap_set(s, i, r);
}

static void heap_down(struct sched *s, uint32_t i)
{
	struct sched_rcpt *r = s->heap[i];
	for (;;) {
		uint32_t c = 2 * i + 1;
		if (c >= s->heap_len)
			break;
		if (c + 1 < s->heap_len && heap_less(s->heap[c + 1], s->heap[c]))
			c++;
		if (!heap_less(s->heap[c], r))
			break;
		heap_set(s, i, s->heap[c]);
		i = c;
	}
	heap_set(s, i, r);
}

static void heap_push(struct sched *s, struct sched_rcpt *r)
{
	if (s->heap_len == s->heap_cap) {
		s->heap_cap = s->heap_cap ? s->heap_cap * 2 : 1024;
		s->heap = xrealloc(s->heap, s->heap_cap * sizeof(*s->heap));
	}
	s->heap[s->heap_len] = r;
	r->heap_pos = s->heap_len++;
	heap_up(s, r->heap_pos);
}

static void heap_remove(struct sched *s, struct sched_rcpt *r)
{
	uint32_t i = r->heap_pos;
	rp_assert(i < s->heap_len && s->heap[i] == r);
	r->heap_pos = HEAP_NONE;
	s->heap_len--;
	if (i == s->heap_len)
		return;
	heap_set(s, i, s->heap[s->heap_len]);
	heap_up(s, i);
	heap_down(s, s->heap[i]->heap_pos);
}

/* ---- destinations ------------------------------------------------------ */

static uint32_t dest_hash(const char *name)
{
	return (uint32_t)rp_hash64(name, strlen(name));
}

static void htab_grow(struct sched *s)
{
	uint32_t nsize = s->hsize ? s->hsize * 2 : 64;
	struct sched_dest **nt = xcalloc(nsize, sizeof(*nt));
	for (uint32_t i = 0; i < s->hsize; i++) {
		struct sched_dest *d = s->htab[i];
		while (d) {
			struct sched_dest *next = d->hnext;
			uint32_t h = dest_hash(d->name) & (nsize - 1);
			d->hnext = nt[h];
			nt[h] = d;
			d = next;
		}
	}
	free(s->htab);
	s->htab = nt;
	s->hsize = nsize;
}

struct sched_dest *sched_dest_find(struct sched *s, const char *name)
{
	if (!s->hsize)
		return NULL;
	for (struct sched_dest *d = s->htab[dest_hash(name) & (s->hsize - 1)]; d; d = d->hnext)
		if (!strcmp(d->name, name))
			return d;
	return NULL;
}

struct sched_dest *sched_dest_get(struct sched *s, const char *name)
{
	struct sched_dest *d = sched_dest_find(s, name);
	if (d)
		return d;
	if (s->ndests + 1 > s->hsize / 2)
		htab_grow(s);
	d = xcalloc(1, sizeof(*d));
	d->name = xstrdup(name);
	d->lim.max_connections = 100;
	d->lim.max_msgs_per_conn = 1000;
	d->lim.max_rcpts_per_msg = 100;
	d->lim.connect_timeout_ms = 30000;
	s->ops.configure(d, s->ctx);
	d->tokens = 1;
	uint32_t h = dest_hash(name) & (s->hsize - 1);
	d->hnext = s->htab[h];
	s->htab[h] = d;
	s->ndests++;
	return d;
}

static void kick(struct sched *s, struct sched_dest *d)
{
	if (d->kick_queued)
		return;
	d->kick_queued = true;
	d->kick_next = NULL;
	if (s->kick_tail)
		s->kick_tail->kick_next = d;
	else
		s->kick_head = d;
	s->kick_tail = d;
}

static void wait_add(struct sched *s, struct sched_dest *d)
{
	if (d->waiting)
		return;
	d->waiting = true;
	d->wait_next = s->wait_head;
	s->wait_head = d;
}

/* ---- spool updates ----------------------------------------------------- */

static void update_queue(struct sched *s, const struct sched_rcpt *r, uint8_t state,
			 uint64_t now_ms, uint64_t next_ms, const char *resp, const char *remote)
{
	if (s->nupd == s->upd_cap) {
		s->upd_cap = s->upd_cap ? s->upd_cap * 2 : 256;
		s->upd = xrealloc(s->upd, s->upd_cap * sizeof(*s->upd));
	}
	struct pending_update *p = &s->upd[s->nupd++];
	memset(p, 0, sizeof(*p));
	p->u.msgid = r->msgid;
	p->u.idx = r->idx;
	p->u.state = state;
	p->u.attempts = r->attempts;
	p->u.next_ms = next_ms;
	p->u.last_ms = now_ms;
	p->u.response_len = resp ? strlen(resp) : 0;
	p->resp_off = buf_used(&s->upd_strings);
	buf_append(&s->upd_strings, resp, p->u.response_len);
	p->u.remote_len = remote ? strlen(remote) : 0;
	p->remote_off = buf_used(&s->upd_strings);
	buf_append(&s->upd_strings, remote, p->u.remote_len);
}

static void update_flush(struct sched *s)
{
	if (!s->nupd)
		return;
	size_t strings = buf_used(&s->upd_strings);
	size_t size = sizeof(struct spool_req) + s->nupd * sizeof(struct spool_update) + strings;
	struct spool_req *req = xcalloc(1, size);
	struct spool_update *v = (struct spool_update *)(req + 1);
	char *str = (char *)(v + s->nupd);
	memcpy(str, buf_head(&s->upd_strings), strings);
	for (unsigned i = 0; i < s->nupd; i++) {
		v[i] = s->upd[i].u;
		v[i].response = str + s->upd[i].resp_off;
		v[i].remote = str + s->upd[i].remote_off;
	}
	req->type = SPOOL_REQ_UPDATE;
	req->reply_to = NULL; /* the writer frees it */
	req->u.update.v = v;
	req->u.update.n = s->nupd;
	spool_request(s->sp, req);
	s->nupd = 0;
	buf_reset(&s->upd_strings);
}

/* ---- queues ------------------------------------------------------------ */

static void ready_append(struct sched *s, struct sched_dest *d, struct sched_rcpt *r)
{
	struct sched_rcpt *tail = d->ready_tail;
	r->where = R_READY;
	r->next = NULL;
	if (tail)
		tail->next = r;
	else
		d->ready_head = r;
	d->ready_tail = r;
	if (tail && tail->msgid == r->msgid && !(r->flags & RF_OWN_BODY) &&
	    !(tail->flags & RF_OWN_BODY) && d->tail_group < d->lim.max_rcpts_per_msg) {
		d->tail_group++;
	} else {
		d->tail_group = 1;
		d->nready_jobs++;
	}
	d->n.queued++;
	kick(s, d);
}

static void defer_to(struct sched *s, struct sched_dest *d, struct sched_rcpt *r, uint64_t due)
{
	r->where = R_DEFERRED;
	r->due_ms = due;
	r->next = NULL;
	heap_push(s, r);
	d->n.deferred++;
}

/* make_ready - r may be tried now: queue it, unless its destination is
 * backing off: then it waits for the hold to end, and its record says so
 * (deferred until then; attempts and last reply unchanged), as the stats
 * do. */
static void make_ready(struct sched *s, struct sched_dest *d, struct sched_rcpt *r, uint64_t now)
{
	if (d->hold_until > now && !d->suspended) {
		defer_to(s, d, r, d->hold_until);
		update_queue(s, r, SPOOL_DEFERRED, now, d->hold_until, "", "");
		s->upd[s->nupd - 1].u.wait_only = true;
		return;
	}
	ready_append(s, d, r);
}

void sched_add(struct sched *s, const struct sched_add *a, uint64_t now_ms)
{
	struct sched_dest *d = sched_dest_get(s, a->domain);
	struct sched_rcpt *r = rcpt_alloc(s);
	r->msgid = a->msgid;
	r->idx = a->idx;
	r->dest = d;
	r->attempts = a->attempts;
	r->submit_s = (uint32_t)(a->submit_ms / 1000);
	r->flags = a->own_body ? RF_OWN_BODY : 0;
	if (a->next_ms > now_ms)
		defer_to(s, d, r, a->next_ms);
	else
		make_ready(s, d, r, now_ms);
}

/* ---- sessions and jobs ------------------------------------------------- */

static bool held(const struct sched_dest *d, uint64_t now)
{
	return d->hold_until > now;
}

/* refill - the token bucket holds at most a tenth of a second's worth (at
 * least one message), so the rate holds over any window longer than that:
 * a bucket of a whole second would let an idle destination take twice its
 * rate in the first second. */
static void refill(struct sched_dest *d, uint64_t now)
{
	double cap = d->lim.rate / 10.0 > 1 ? d->lim.rate / 10.0 : 1;
	if (d->tokens_ms && now > d->tokens_ms)
		d->tokens += (double)(now - d->tokens_ms) * d->lim.rate / 1000.0;
	if (d->tokens > cap)
		d->tokens = cap;
	d->tokens_ms = now;
}

/* slots_grant - free shard-wide slots go to the destinations waiting
 * longest: each is kicked, and its slot is kept for it until that kick has
 * run (sched_run), so that a destination kicked earlier in the same round
 * cannot take it first. */
static void slots_grant(struct sched *s)
{
	while (s->slot_head && s->sessions + s->slot_grants < s->cfg.max_outbound) {
		struct sched_dest *w = s->slot_head;
		s->slot_head = w->slot_next;
		if (!s->slot_head)
			s->slot_tail = NULL;
		w->slot_waiting = false;
		w->slot_next = NULL;
		if (!w->slot_granted) {
			w->slot_granted = true;
			s->slot_grants++;
		}
		kick(s, w);
	}
}

/* slot_pass - d's kick has run without using the slot kept for it (no work
 * left, suspended, held): the next waiter gets it, or it would stay unused
 * while others wait. */
static void slot_pass(struct sched *s, struct sched_dest *d)
{
	d->slot_granted = false;
	s->slot_grants--;
	slots_grant(s);
}

/* dest_works - a session to d reached the server: d is no longer failing.
 * If it was, only one session was allowed to try, and before the first
 * success only SCHED_INITIAL_CONNECTIONS (sched_dest_may_connect): kick it
 * so that the rest of its ready work gets sessions now. */
static void dest_works(struct sched *s, struct sched_dest *d)
{
	bool was_limited = d->fails != 0 || !d->reached;
	d->fails = 0;
	d->reached = true;
	if (was_limited && d->nready_jobs)
		kick(s, d);
}

bool sched_dest_may_connect(struct sched *s, struct sched_dest *d, uint64_t now_ms)
{
	if (!d->nready_jobs || d->suspended || held(d, now_ms) || d->settle)
		return false;
	if (d->n.connections >= d->lim.max_connections)
		return false;
	/* After a destination-level failure one session probes; more follow
	 * once it works (dest_works), not one refused connect per job. */
	if (d->fails && d->n.connections)
		return false;
	if (!d->reached && d->n.connections >= SCHED_INITIAL_CONNECTIONS)
		return false;
	if (d->lim.rate > 0) {
		refill(d, now_ms);
		if (d->tokens < 1) {
			wait_add(s, d);
			return false;
		}
	}
	if (d->slot_granted)
		return true;
	/* Behind the destinations already waiting, even when a slot is free:
	 * that slot is theirs (slots_grant hands it out). */
	if (s->sessions + s->slot_grants >= s->cfg.max_outbound || s->slot_head) {
		if (!d->slot_waiting) {
			d->slot_waiting = true;
			d->slot_next = NULL;
			if (s->slot_tail)
				s->slot_tail->slot_next = d;
			else
				s->slot_head = d;
			s->slot_tail = d;
		}
		slots_grant(s);
		return false;
	}
	return true;
}

void sched_session_opened(struct sched *s, struct sched_dest *d)
{
	s->sessions++;
	d->n.connections++;
	if (d->slot_granted) {
		d->slot_granted = false;
		s->slot_grants--;
	}
}

void sched_session_closed(struct sched *s, struct sched_dest *d)
{
	rp_assert(s->sessions > 0 && d->n.connections > 0);
	s->sessions--;
	d->n.connections--;
	/* A freed shard-wide slot goes to the destination waiting longest. */
	slots_grant(s);
	/* The destination itself may want a replacement session. */
	if (d->nready_jobs)
		kick(s, d);
}

static struct sched_job *job_alloc(struct sched *s)
{
	struct sched_job *j = s->free_jobs;
	if (j) {
		s->free_jobs = j->next;
		s->nfree_jobs--;
		j->next = NULL;
		return j;
	}
	return xcalloc(1, sizeof(*j));
}

static void job_recycle(struct sched *s, struct sched_job *j)
{
	if (s->nfree_jobs >= FREE_JOBS_MAX) {
		buf_free(&j->body);
		buf_free(&j->strings);
		free(j->rcpt);
		free(j);
		return;
	}
	buf_shrink(&j->body, JOB_KEEP_BYTES);
	buf_shrink(&j->strings, JOB_KEEP_BYTES);
	j->nrcpt = 0;
	j->dest = NULL;
	j->next = s->free_jobs;
	s->free_jobs = j;
	s->nfree_jobs++;
}

/* job_load - read the envelope, recipients and body of the job's message.
 * Recipients that vanished (purged, expired) are dropped from the job. */
static bool job_load(struct sched *s, struct sched_job *j)
{
	struct spool_msg m;
	struct spool_rcpt rc;
	size_t sender_off, envid_off;
	size_t addr_off[j->nrcpt], orcpt_off[j->nrcpt];
	uint32_t variant = 0;
	bool ok = false;

	if (!spool_reader_begin(s->reader))
		return false;
	if (!spool_get_msg(s->reader, j->msgid, &m)) {
		/* Purged or expired: nothing left to deliver. */
		for (unsigned i = 0; i < j->nrcpt; i++) {
			j->rcpt[i].r->flags |= RF_PURGED;
			j->rcpt[i].r = NULL;
		}
		j->nrcpt = 0;
		ok = true;
		goto out;
	}
	j->msg_flags = m.flags;
	j->submit_ms = m.submit_ms;
	buf_reset(&j->strings);
	sender_off = buf_used(&j->strings);
	buf_append(&j->strings, m.sender, m.sender_len);
	j->sender_len = m.sender_len;
	envid_off = buf_used(&j->strings);
	buf_append(&j->strings, m.envid, m.envid_len);
	j->envid_len = m.envid_len;
	unsigned keep = 0;
	for (unsigned i = 0; i < j->nrcpt; i++) {
		struct sched_rcpt *r = j->rcpt[i].r;
		if (!spool_get_rcpt(s->reader, j->msgid, r->idx, &rc) || SPOOL_STATE_FINAL(rc.state)) {
			r->flags |= RF_PURGED;
			j->rcpt[i].r = NULL;
			continue;
		}
		variant = rc.variant;
		addr_off[keep] = buf_used(&j->strings);
		buf_append(&j->strings, rc.addr, rc.addr_len);
		orcpt_off[keep] = buf_used(&j->strings);
		buf_append(&j->strings, rc.orcpt, rc.orcpt_len);
		j->rcpt[keep] = j->rcpt[i];
		j->rcpt[keep].addr_len = rc.addr_len;
		j->rcpt[keep].orcpt_len = rc.orcpt_len;
		j->rcpt[keep].notify = rc.notify;
		j->rcpt[keep].attempts = r->attempts;
		keep++;
	}
	/* Dropped recipients still count as in flight until freed below. */
	for (unsigned i = keep; i < j->nrcpt; i++)
		j->rcpt[i].r = NULL;
	buf_reset(&j->body);
	if (keep && spool_get_body(s->reader, j->msgid, variant, &j->body)) {
		ok = true;
		const char *base = buf_head(&j->strings);
		j->sender = base + sender_off;
		j->envid = base + envid_off;
		for (unsigned i = 0; i < keep; i++) {
			j->rcpt[i].addr = base + addr_off[i];
			j->rcpt[i].orcpt = base + orcpt_off[i];
		}
	}
	j->nrcpt = keep;
out:
	spool_reader_end(s->reader);
	return ok;
}

struct sched_job *sched_job_next(struct sched *s, struct sched_dest *d, uint64_t now_ms)
{
	while (d->ready_head) {
		if (d->suspended || held(d, now_ms) || d->settle)
			return NULL;
		if (d->lim.rate > 0) {
			refill(d, now_ms);
			if (d->tokens < 1) {
				wait_add(s, d);
				return NULL;
			}
		}
		/* Take the head's message group. */
		struct sched_job *j = job_alloc(s);
		struct sched_rcpt *r0 = d->ready_head;
		unsigned max = d->lim.max_rcpts_per_msg ? d->lim.max_rcpts_per_msg : 1;
		if (r0->flags & RF_OWN_BODY)
			max = 1;
		if (j->cap < max) {
			j->cap = max;
			j->rcpt = xrealloc(j->rcpt, max * sizeof(*j->rcpt));
		}
		j->dest = d;
		j->msgid = r0->msgid;
		j->nrcpt = 0;
		struct sched_rcpt *r = r0;
		while (r && j->nrcpt < max && r->msgid == r0->msgid &&
		       !(j->nrcpt && (r->flags & RF_OWN_BODY))) {
			struct sched_rcpt *next = r->next;
			r->where = R_INFLIGHT;
			r->next = NULL;
			memset(&j->rcpt[j->nrcpt], 0, sizeof(j->rcpt[0]));
			j->rcpt[j->nrcpt++].r = r;
			r = next;
		}
		d->ready_head = r;
		if (!r) {
			d->ready_tail = NULL;
			d->tail_group = 0;
		}
		d->n.queued -= j->nrcpt;
		d->n.in_flight += j->nrcpt;
		if (d->nready_jobs)
			d->nready_jobs--;
		if (!d->ready_head)
			d->nready_jobs = 0;
		else if (!d->nready_jobs)
			d->nready_jobs = 1;

		/* Keep the in-flight pointers to free the ones job_load drops. */
		struct sched_rcpt *taken[j->nrcpt];
		unsigned ntaken = j->nrcpt;
		for (unsigned i = 0; i < ntaken; i++)
			taken[i] = j->rcpt[i].r;
		bool ok = job_load(s, j);
		for (unsigned i = 0; i < ntaken; i++) {
			if (taken[i]->flags & RF_PURGED) {
				d->n.in_flight--;
				rcpt_free(s, taken[i]);
			}
		}
		if (!ok && j->nrcpt) {
			/* A spool read failure: put them back, try later. */
			for (unsigned i = 0; i < j->nrcpt; i++) {
				struct sched_rcpt *rr = j->rcpt[i].r;
				d->n.in_flight--;
				defer_to(s, d, rr, now_ms + 60000);
			}
			log_error("sched: cannot load message %016llx; retrying in a minute",
				  (unsigned long long)j->msgid);
			j->nrcpt = 0;
		}
		if (!j->nrcpt) {
			job_recycle(s, j);
			continue;
		}
		if (d->lim.rate > 0)
			d->tokens -= 1;
		return j;
	}
	return NULL;
}

static void log_attempt(uint64_t msgid, const char *addr, size_t addr_len, const char *dest,
			const struct attempt_report *rep, const struct outcome *oc, unsigned attempts,
			const char *remote, uint64_t duration_ms, uint64_t submit_ms, uint64_t now_ms)
{
	char id[17], reply[400];
	if (!log_enabled(oc->action == OUTCOME_FAIL ? LOG_WARN : LOG_INFO))
		return;
	rp_id_format(msgid, id);
	log_quote(reply, sizeof(reply), rep->text, strlen(rep->text));
	/* A bounce is worth a line even at log_level = warn. */
	log_msg(oc->action == OUTCOME_FAIL ? LOG_WARN : LOG_INFO,
		"delivery id=%s rcpt=<%.*s> dest=%s relay=%s status=%s dsn=%s attempts=%u "
		 "delay=%.3f duration=%.3f reply=%s",
		 id, (int)addr_len, addr, dest, remote ? remote : "none",
		 outcome_action_name(oc->action), oc->status, attempts,
		 (double)(now_ms > submit_ms ? now_ms - submit_ms : 0) / 1000.0,
		 (double)duration_ms / 1000.0, reply);
}

/* settle - apply one recipient's outcome: memory, counters, spool. */
static void settle(struct sched *s, struct sched_dest *d, struct sched_rcpt *r,
		   const struct attempt_report *rep, const struct outcome *oc, const char *remote,
		   uint64_t now)
{
	if (oc->counts && r->attempts < UINT16_MAX)
		r->attempts++;
	char resp[sizeof(rep->text) + 64];
	if (rep->kind == ATTEMPT_REPLY || !oc->status[0])
		snprintf(resp, sizeof(resp), "%s", rep->text);
	else
		snprintf(resp, sizeof(resp), "%s %s", oc->status, rep->text);
	switch (oc->action) {
	case OUTCOME_DELIVERED:
		update_queue(s, r, SPOOL_DELIVERED, now, 0, resp, remote);
		d->n.delivered++;
		stats_hist_add(&s->delivery, stats_delivery_bounds, STATS_DELIVERY_BUCKETS,
			       (double)(now - RP_MIN(now, (uint64_t)r->submit_s * 1000)) / 1000.0);
		rcpt_free(s, r);
		return;
	case OUTCOME_FAIL:
		update_queue(s, r, SPOOL_BOUNCED, now, 0, resp, remote);
		d->n.bounced++;
		if (!oc->no_dsn)
			dsn_emit_queue(s->dsn, r->msgid, r->idx, rep, oc, remote, now);
		rcpt_free(s, r);
		return;
	case OUTCOME_RETRY:
		if (oc->counts) {
			d->n.deferrals++;
			update_queue(s, r, SPOOL_DEFERRED, now, oc->next_ms, resp, remote);
		}
		if (oc->next_ms <= now)
			make_ready(s, d, r, now);
		else
			defer_to(s, d, r, oc->next_ms);
		return;
	}
}

/* A destination-level report that d's ready recipients still have to be
 * settled with: more of them than one loop iteration should handle. */
struct sched_settle {
	struct attempt_report rep;
	char remote[256];
	bool has_remote;
	bool until_hold;
};

static void settle_unlist(struct sched *s, struct sched_dest *d)
{
	struct sched_dest **pp = &s->settle_head;
	while (*pp != d)
		pp = &(*pp)->settle_next;
	*pp = d->settle_next;
	d->settle_next = NULL;
	free(d->settle);
	d->settle = NULL;
}

/* settle_ready - d's ready recipients share one destination-level report
 * (connect refused, NXDOMAIN, ...): decide, log and settle each, at most
 * max of them. The rest wait for sched_tick (settle_slices), which goes on
 * with the same report; d takes no new session until then. Returns how
 * many were settled. The addresses come from the spool, for the log. */
static unsigned settle_ready(struct sched *s, struct sched_dest *d,
			     const struct attempt_report *rep, const char *remote, uint64_t now,
			     bool until_hold, unsigned max)
{
	bool reading = false;
	/* One jitter for all: recipients that were tried as often retry
	 * together, a message's in one transaction. */
	uint64_t rnd = rnd_next(s);
	unsigned n = 0, groups = 0;
	uint64_t last_msg = 0;
	while (d->ready_head && n < max) {
		struct sched_rcpt *r = d->ready_head;
		d->ready_head = r->next;
		r->next = NULL;
		d->n.queued--;
		n++;
		if (!groups || r->msgid != last_msg || (r->flags & RF_OWN_BODY))
			groups++;
		last_msg = r->msgid;
		struct outcome oc;
		uint64_t submit_ms = (uint64_t)r->submit_s * 1000;
		outcome_decide(rep, r->attempts, now > submit_ms ? now - submit_ms : 0, now, rnd,
			       &s->cfg.retry, &oc);
		if (until_hold && oc.action == OUTCOME_RETRY && oc.next_ms < d->hold_until)
			oc.next_ms = d->hold_until;
		struct spool_rcpt rc = {.addr = "?", .addr_len = 1};
		if (log_enabled(oc.action == OUTCOME_FAIL ? LOG_WARN : LOG_INFO)) {
			if (!reading)
				reading = spool_reader_begin(s->reader);
			if (!reading || !spool_get_rcpt(s->reader, r->msgid, r->idx, &rc))
				rc.addr = "?", rc.addr_len = 1;
		}
		log_attempt(r->msgid, rc.addr, rc.addr_len, d->name, rep, &oc,
			    r->attempts + (oc.counts ? 1 : 0), remote, 0, submit_ms, now);
		settle(s, d, r, rep, &oc, remote, now);
	}
	if (reading)
		spool_reader_end(s->reader);
	if (!d->ready_head) {
		d->ready_tail = NULL;
		d->tail_group = 0;
		d->nready_jobs = 0;
		if (d->settle)
			settle_unlist(s, d);
		return n;
	}
	d->nready_jobs = d->nready_jobs > groups ? d->nready_jobs - groups : 1;
	if (!d->settle) {
		d->settle = xcalloc(1, sizeof(*d->settle));
		d->settle_next = s->settle_head;
		s->settle_head = d;
	}
	if (rep != &d->settle->rep) /* a newer report applies to the rest */
		d->settle->rep = *rep;
	d->settle->has_remote = remote != NULL;
	if (remote && remote != d->settle->remote)
		snprintf(d->settle->remote, sizeof(d->settle->remote), "%s", remote);
	d->settle->until_hold = until_hold;
	return n;
}

/* settle_slices - go on settling, SCHED_SETTLE_MAX recipients per tick. */
static void settle_slices(struct sched *s, uint64_t now)
{
	unsigned budget = SCHED_SETTLE_MAX;
	struct sched_dest *d = s->settle_head;
	while (d && budget) {
		struct sched_dest *next = d->settle_next;
		struct sched_settle *st = d->settle;
		budget -= settle_ready(s, d, &st->rep, st->has_remote ? st->remote : NULL, now,
				       st->until_hold, budget);
		d = next;
	}
}

/* dest_hold - back the destination off and defer its ready recipients. */
static void dest_hold(struct sched *s, struct sched_dest *d, const struct attempt_report *rep,
		      const char *remote, uint64_t now)
{
	if (d->hold_until <= now) {
		if (d->fails < 1000)
			d->fails++;
		d->hold_until = now + outcome_retry_delay(&s->cfg.retry, d->fails, rnd_next(s));
		snprintf(d->hold_reason, sizeof(d->hold_reason), "%s", rep->text);
		wait_add(s, d);
		log_info("dest %s backs off for %.1fs after %u failures: %s", d->name,
			 (double)(d->hold_until - now) / 1000.0, d->fails, rep->text);
	}
	settle_ready(s, d, rep, remote, now, true, SCHED_SETTLE_MAX);
}

void sched_job_done(struct sched *s, struct sched_job *j, const struct attempt_report *reps,
		    const struct sched_attempt *info, uint64_t now_ms)
{
	struct sched_dest *d = j->dest;
	const struct attempt_report *backoff = NULL;
	bool reached = false;
	const char *remote = info ? info->remote : NULL;
	if (info)
		stats_hist_add(&s->txn, stats_txn_bounds, STATS_TXN_BUCKETS,
			       (double)info->duration_ms / 1000.0);
	/* One jitter per transaction: its recipients (one message) come due
	 * together and are retried in one transaction again, not one each. */
	uint64_t rnd = rnd_next(s);
	for (unsigned i = 0; i < j->nrcpt; i++) {
		struct sched_rcpt *r = j->rcpt[i].r;
		rp_assert(r->where == R_INFLIGHT);
		d->n.in_flight--;
		if (r->flags & RF_PURGED) {
			rcpt_free(s, r);
			continue;
		}
		struct outcome oc;
		uint64_t age = now_ms > j->submit_ms ? now_ms - j->submit_ms : 0;
		outcome_decide(&reps[i], r->attempts, age, now_ms, rnd, &s->cfg.retry, &oc);
		log_attempt(j->msgid, j->rcpt[i].addr, j->rcpt[i].addr_len, d->name, &reps[i], &oc,
			    r->attempts + (oc.counts ? 1 : 0), remote, info ? info->duration_ms : 0,
			    j->submit_ms, now_ms);
		if (oc.dest_backoff && !backoff)
			backoff = &reps[i];
		if (reps[i].kind == ATTEMPT_REPLY && reps[i].stage != STAGE_GREETING)
			reached = true;
		settle(s, d, r, &reps[i], &oc, remote, now_ms);
	}
	if (backoff)
		dest_hold(s, d, backoff, remote, now_ms);
	else if (reached)
		dest_works(s, d);
	job_recycle(s, j);
}

void sched_dest_failed(struct sched *s, struct sched_dest *d, const struct attempt_report *rep,
		       const char *remote, uint64_t now_ms)
{
	char reply[400];
	log_quote(reply, sizeof(reply), rep->text, strlen(rep->text));
	log_info("session dest=%s relay=%s status=%s reply=%s", d->name, remote ? remote : "none",
		 outcome_kind_name(rep->kind), reply);
	struct outcome oc;
	outcome_decide(rep, 0, 0, now_ms, 0, &s->cfg.retry, &oc);
	if (oc.action == OUTCOME_FAIL) {
		/* Permanent for the destination (NXDOMAIN, null MX): every
		 * ready recipient fails with it. */
		settle_ready(s, d, rep, remote, now_ms, false, SCHED_SETTLE_MAX);
		return;
	}
	dest_hold(s, d, rep, remote, now_ms);
}

void sched_dest_ok(struct sched *s, struct sched_dest *d)
{
	dest_works(s, d);
}

/* ---- administration ---------------------------------------------------- */

static int heap_order(const void *a, const void *b)
{
	const struct sched_rcpt *x = *(struct sched_rcpt *const *)a;
	const struct sched_rcpt *y = *(struct sched_rcpt *const *)b;
	return heap_less(x, y) ? -1 : heap_less(y, x);
}

/* move_due - at most max recipients whose time has come leave the heap,
 * earliest first. */
static void move_due(struct sched *s, uint64_t now_ms, unsigned max)
{
	unsigned moved = 0;
	while (s->heap_len && s->heap[0]->due_ms <= now_ms && moved < max) {
		struct sched_rcpt *r = s->heap[0];
		heap_remove(s, r);
		r->dest->n.deferred--;
		make_ready(s, r->dest, r, now_ms);
		moved++;
	}
}

/* take_deferred - remove d's recipients (of message msgid, or all when 0)
 * from the retry heap into a list, in the order they were due (a message's
 * recipients stay together). They are found first and removed after: a
 * removal sifts the heap's last element into the hole, possibly up to an
 * index a scan has already passed. */
static struct sched_rcpt *take_deferred(struct sched *s, struct sched_dest *d, uint64_t msgid)
{
	uint32_t n = 0;
	for (uint32_t i = 0; i < s->heap_len; i++) {
		const struct sched_rcpt *r = s->heap[i];
		n += r->dest == d && (!msgid || r->msgid == msgid);
	}
	if (!n)
		return NULL;
	struct sched_rcpt **found = xmalloc(n * sizeof(*found));
	uint32_t k = 0;
	for (uint32_t i = 0; i < s->heap_len; i++) {
		struct sched_rcpt *r = s->heap[i];
		if (r->dest == d && (!msgid || r->msgid == msgid))
			found[k++] = r;
	}
	qsort(found, n, sizeof(*found), heap_order);
	struct sched_rcpt *list = NULL;
	for (uint32_t i = n; i-- > 0;) {
		heap_remove(s, found[i]);
		d->n.deferred--;
		found[i]->next = list;
		list = found[i];
	}
	free(found);
	return list;
}

/* sched_dest_retry - d's deferred recipients are due now: they go to the
 * front of the heap, in message order, and leave it like any
 * due recipient, at most SCHED_TICK_MAX_DUE per loop iteration (a million of
 * them must not stall the loop). */
uint64_t sched_dest_retry(struct sched *s, struct sched_dest *d, uint64_t now_ms)
{
	uint64_t n = 0;
	d->hold_until = 0;
	d->fails = 0;
	for (uint32_t i = 0; i < s->heap_len; i++) {
		struct sched_rcpt *r = s->heap[i];
		if (r->dest != d)
			continue;
		if (r->due_ms > now_ms)
			r->due_ms = now_ms; /* then in message order (heap_less) */
		n++;
	}
	if (n) {
		for (uint32_t i = s->heap_len / 2; i-- > 0;)
			heap_down(s, i);
		move_due(s, now_ms, SCHED_TICK_MAX_DUE);
	}
	if (d->ready_head)
		kick(s, d);
	return n;
}

void sched_dest_suspend(struct sched *s, struct sched_dest *d, bool on)
{
	d->suspended = on;
	if (!on && d->ready_head)
		kick(s, d);
}

/* A domain purge in progress: the recipients still to settle, and how. */
struct sched_purge {
	struct attempt_report rep;
	struct outcome oc;
	struct sched_rcpt *head, *tail;
};

/* heap_extract - every recipient of d leaves the heap onto the list
 * head/tail, in one pass over the heap and one re-heapify: O(heap), where
 * removing each would cost a sift per recipient. */
static uint64_t heap_extract(struct sched *s, struct sched_dest *d, struct sched_rcpt **head,
			     struct sched_rcpt **tail)
{
	uint32_t k = 0;
	uint64_t n = 0;
	for (uint32_t i = 0; i < s->heap_len; i++) {
		struct sched_rcpt *r = s->heap[i];
		if (r->dest != d) {
			heap_set(s, k++, r);
			continue;
		}
		r->heap_pos = HEAP_NONE;
		r->next = NULL;
		if (*tail)
			(*tail)->next = r;
		else
			*head = r;
		*tail = r;
		n++;
	}
	if (n) {
		s->heap_len = k;
		for (uint32_t i = k / 2; i-- > 0;)
			heap_down(s, i);
	}
	return n;
}

/* purge_some - settle at most max of d's purged recipients; the purge ends
 * when none is left. */
static void purge_some(struct sched *s, struct sched_dest *d, unsigned max, uint64_t now)
{
	struct sched_purge *p = d->purge;
	unsigned n = 0;
	while (p->head && n < max) {
		struct sched_rcpt *r = p->head;
		p->head = r->next;
		r->next = NULL;
		d->n.queued--;
		n++;
		settle(s, d, r, &p->rep, &p->oc, NULL, now);
	}
	if (p->head)
		return;
	struct sched_dest **pp = &s->purge_head;
	while (*pp != d)
		pp = &(*pp)->purge_next;
	*pp = d->purge_next;
	d->purge_next = NULL;
	free(p);
	d->purge = NULL;
}

/* purge_slices - go on with the domain purges, one slice each per tick. */
static void purge_slices(struct sched *s, uint64_t now)
{
	struct sched_dest *d = s->purge_head;
	while (d) {
		struct sched_dest *next = d->purge_next;
		purge_some(s, d, d->purge->oc.no_dsn ? SCHED_SETTLE_MAX : SCHED_PURGE_DSN_MAX, now);
		d = next;
	}
}

/* purge_domain - all of d's queued and deferred recipients go onto its
 * purge list at once (O(heap)) and are settled from there in slices: a
 * million of them, each with a DSN to build, must not stall the loop. */
static uint64_t purge_domain(struct sched *s, struct sched_dest *d, const struct attempt_report *rep,
			     const struct outcome *oc, uint64_t now)
{
	struct sched_purge *p = d->purge;
	if (!p) {
		p = d->purge = xcalloc(1, sizeof(*p));
		d->purge_next = s->purge_head;
		s->purge_head = d;
	}
	/* The latest purge decides (bounce or drop) for every one waiting. */
	p->rep = *rep;
	p->oc = *oc;
	struct sched_rcpt *head = NULL, *tail = NULL;
	uint64_t n = heap_extract(s, d, &head, &tail);
	d->n.deferred -= n;
	d->n.queued += n;
	for (struct sched_rcpt *r = head; r; r = r->next)
		r->where = R_READY;
	for (struct sched_rcpt *r = d->ready_head; r; r = r->next)
		n++;
	if (d->ready_head) { /* the ready FIFO moves over whole */
		if (tail)
			tail->next = d->ready_head;
		else
			head = d->ready_head;
		tail = d->ready_tail;
		d->ready_head = d->ready_tail = NULL;
		d->tail_group = 0;
		d->nready_jobs = 0;
	}
	if (head) {
		if (p->tail)
			p->tail->next = head;
		else
			p->head = head;
		p->tail = tail;
	}
	purge_some(s, d, oc->no_dsn ? SCHED_SETTLE_MAX : SCHED_PURGE_DSN_MAX, now);
	return n;
}

/* purge_message - msgid's recipients of d, deferred or ready, become final
 * at once (one message: a bounded number). */
static uint64_t purge_message(struct sched *s, struct sched_dest *d, uint64_t msgid,
			      const struct attempt_report *rep, const struct outcome *oc, uint64_t now)
{
	uint64_t n = 0;
	struct sched_rcpt *r = take_deferred(s, d, msgid);
	while (r) {
		struct sched_rcpt *next = r->next;
		r->next = NULL;
		settle(s, d, r, rep, oc, NULL, now);
		n++;
		r = next;
	}
	/* The ready FIFO: unlink the matching ones, keep the order of the rest. */
	struct sched_rcpt *keep_head = NULL, *keep_tail = NULL;
	while (d->ready_head) {
		r = d->ready_head;
		d->ready_head = r->next;
		r->next = NULL;
		if (r->msgid != msgid) {
			if (keep_tail)
				keep_tail->next = r;
			else
				keep_head = r;
			keep_tail = r;
			continue;
		}
		d->n.queued--;
		settle(s, d, r, rep, oc, NULL, now);
		n++;
	}
	d->ready_head = keep_head;
	d->ready_tail = keep_tail;
	if (!keep_head) {
		d->tail_group = 0;
		d->nready_jobs = 0;
	} else if (!d->nready_jobs) {
		d->nready_jobs = 1;
	}
	return n;
}

/* purge - the recipients of d (of message msgid, or all when 0) become
 * final: bounced with a DSN, or dropped without one. Those in flight are
 * final now; their attempt's own outcome will be ignored. */
static uint64_t purge(struct sched *s, struct sched_dest *d, uint64_t msgid, bool bounce,
		      uint64_t now_ms)
{
	struct attempt_report rep;
	struct outcome oc = {.action = OUTCOME_FAIL, .counts = false};
	outcome_report_set(&rep, ATTEMPT_LOCAL, STAGE_OTHER, 0,
			   bounce ? "purged by the administrator" : "purged by the administrator (dropped, no DSN)");
	snprintf(oc.status, sizeof(oc.status), "5.0.0");
	oc.no_dsn = !bounce;
	uint64_t n = msgid ? purge_message(s, d, msgid, &rep, &oc, now_ms)
			   : purge_domain(s, d, &rep, &oc, now_ms);
	for (struct slab *sl = s->slabs; sl; sl = sl->next)
		for (unsigned i = 0; i < SLAB_RCPTS; i++) {
			struct sched_rcpt *f = &sl->r[i];
			if (f->where != R_INFLIGHT || f->dest != d || (f->flags & RF_PURGED) ||
			    (msgid && f->msgid != msgid))
				continue;
			f->flags |= RF_PURGED;
			update_queue(s, f, SPOOL_BOUNCED, now_ms, 0, rep.text, NULL);
			d->n.bounced++;
			if (bounce)
				dsn_emit_queue(s->dsn, f->msgid, f->idx, &rep, &oc, NULL, now_ms);
			n++;
		}
	return n;
}

uint64_t sched_dest_purge(struct sched *s, struct sched_dest *d, bool bounce, uint64_t now_ms)
{
	return purge(s, d, 0, bounce, now_ms);
}

uint64_t sched_msg_purge(struct sched *s, struct sched_dest *d, uint64_t msgid, bool bounce,
			 uint64_t now_ms)
{
	return purge(s, d, msgid, bounce, now_ms);
}

/* ---- time -------------------------------------------------------------- */

void sched_tick(struct sched *s, uint64_t now_ms)
{
	settle_slices(s, now_ms);
	purge_slices(s, now_ms);
	move_due(s, now_ms, SCHED_TICK_MAX_DUE);
	struct sched_dest **pp = &s->wait_head;
	while (*pp) {
		struct sched_dest *d = *pp;
		bool wake = !held(d, now_ms);
		if (wake && d->lim.rate > 0) {
			refill(d, now_ms);
			wake = d->tokens >= 1;
		}
		if (wake) {
			*pp = d->wait_next;
			d->waiting = false;
			d->wait_next = NULL;
			if (d->ready_head)
				kick(s, d);
		} else {
			pp = &d->wait_next;
		}
	}
}

void sched_kick(struct sched *s, struct sched_dest *d)
{
	kick(s, d);
}

bool sched_pending_kicks(const struct sched *s)
{
	return s->kick_head != NULL || s->nupd != 0 || dsn_emit_pending(s->dsn);
}

void sched_run(struct sched *s)
{
	dsn_emit_flush(s->dsn, s->cfg.hostname); /* before the updates: the bodies must still be there */
	update_flush(s);
	struct sched_dest *d = s->kick_head, *last = s->kick_tail;
	s->kick_head = s->kick_tail = NULL;
	while (d) {
		struct sched_dest *next = d == last ? NULL : d->kick_next;
		d->kick_queued = false;
		d->kick_next = NULL;
		s->ops.kick(d, s->ctx);
		if (d->slot_granted)
			slot_pass(s, d);
		d = next;
	}
	/* The kicks may have failed recipients (a loop, a message too big for
	 * an idle session): their DSNs need the bodies that their final state
	 * deletes, so they go first here too. */
	dsn_emit_flush(s->dsn, s->cfg.hostname);
	update_flush(s);
}

/* ---- life cycle and reporting ------------------------------------------ */

struct sched *sched_new(const struct sched_config *cfg, const struct sched_ops *ops, void *ctx,
			struct spool *sp, struct spool_reader *reader)
{
	struct sched *s = xcalloc(1, sizeof(*s));
	s->cfg = *cfg;
	s->ops = *ops;
	s->ctx = ctx;
	s->sp = sp;
	s->reader = reader;
	s->dsn = dsn_emit_new(sp, reader);
	s->rnd = rp_mono_ns() ^ (uintptr_t)s ^ 0x9e3779b97f4a7c15ull;
	if (!s->rnd)
		s->rnd = 1;
	htab_grow(s);
	return s;
}

void sched_set_config(struct sched *s, const struct sched_config *cfg)
{
	s->cfg = *cfg;
	slots_grant(s); /* a larger max_outbound frees slots for the waiters */
}

void sched_reconfigure(struct sched *s)
{
	for (uint32_t i = 0; i < s->hsize; i++)
		for (struct sched_dest *d = s->htab[i]; d; d = d->hnext) {
			s->ops.configure(d, s->ctx);
			if (d->ready_head)
				kick(s, d);
		}
}

void sched_free(struct sched *s)
{
	if (!s)
		return;
	dsn_emit_flush(s->dsn, s->cfg.hostname);
	update_flush(s);
	for (uint32_t i = 0; i < s->hsize; i++) {
		struct sched_dest *d = s->htab[i];
		while (d) {
			struct sched_dest *next = d->hnext;
			free(d->settle);
			free(d->purge);
			free(d->name);
			free(d);
			d = next;
		}
	}
	free(s->htab);
	free(s->heap);
	while (s->slabs) {
		struct slab *next = s->slabs->next;
		free(s->slabs);
		s->slabs = next;
	}
	while (s->free_jobs) {
		struct sched_job *j = s->free_jobs;
		s->free_jobs = j->next;
		buf_free(&j->body);
		buf_free(&j->strings);
		free(j->rcpt);
		free(j);
	}
	free(s->upd);
	dsn_emit_free(s->dsn);
	buf_free(&s->upd_strings);
	free(s);
}

void sched_totals(const struct sched *s, struct stats_counts *c)
{
	memset(c, 0, sizeof(*c));
	for (uint32_t i = 0; i < s->hsize; i++)
		for (struct sched_dest *d = s->htab[i]; d; d = d->hnext) {
			c->queued += d->n.queued;
			c->deferred += d->n.deferred;
			c->in_flight += d->n.in_flight;
			c->delivered += d->n.delivered;
			c->bounced += d->n.bounced;
			c->deferrals += d->n.deferrals;
			c->connections += d->n.connections;
		}
}

void sched_foreach_dest(struct sched *s, void (*fn)(struct sched_dest *d, void *arg), void *arg)
{
	for (uint32_t i = 0; i < s->hsize; i++)
		for (struct sched_dest *d = s->htab[i]; d; d = d->hnext)
			fn(d, arg);
}

void sched_stats(const struct sched *s, struct stats_snapshot *out)
{
	unsigned n = 0;
	struct stats_domain *dom = xrealloc(out->domains,
					   (out->ndomains + s->ndests + 1) * sizeof(*dom));
	out->domains = dom;
	uint64_t now = rp_now_ms();
	for (uint32_t i = 0; i < s->hsize; i++)
		for (struct sched_dest *d = s->htab[i]; d; d = d->hnext) {
			stats_counts_add(&out->total, &d->n);
			struct stats_domain *e = &dom[out->ndomains + n++];
			snprintf(e->name, sizeof(e->name), "%s", d->name);
			e->n = d->n;
			e->suspended = d->suspended;
			e->hold_until_ms = d->hold_until > now ? d->hold_until : 0;
			e->max_connections = d->lim.max_connections;
			e->max_msgs_per_conn = d->lim.max_msgs_per_conn;
			e->max_rcpts_per_msg = d->lim.max_rcpts_per_msg;
			e->rate = d->lim.rate;
		}
	out->ndomains += n;
	stats_hist_merge(&out->delivery, &s->delivery);
	stats_hist_merge(&out->txn, &s->txn);
}

uint64_t sched_memory(const struct sched *s)
{
	return s->nslabs * sizeof(struct slab) + (uint64_t)s->heap_cap * sizeof(*s->heap) +
	       (uint64_t)s->hsize * sizeof(*s->htab) + (uint64_t)s->ndests * sizeof(struct sched_dest);
}
