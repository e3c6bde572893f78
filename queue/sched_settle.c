/* sched_settle.c - settling recipients: outcomes, destination failures, purges.
 *
 * Applies a decided outcome to a recipient (memory, counters, spool, DSN).
 * A destination-level failure and a domain purge may concern a million
 * recipients: they are settled in slices, the rest in the next ticks.
 */
#include "sched_impl.h"

#include <stdio.h>
#include <stdlib.h>

#include "dsn_emit.h"
#include "base/log.h"
#include "base/util.h"

/* A destination-level report that d's ready recipients still have to be
 * settled with: more of them than one loop iteration should handle. */
struct sched_settle {
	struct attempt_report rep;
	char remote[256];
	bool has_remote;
	bool until_hold;
};

/* A domain purge in progress: the recipients still to settle, and how. */
struct sched_purge {
	struct attempt_report rep;
	struct outcome oc;
	struct sched_rcpt *head, *tail;
};

/* sched_settle - apply one recipient's outcome: memory, counters, spool. */
void sched_settle(struct sched *s, struct sched_dest *d, struct sched_rcpt *r,
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
		sched_update_queue(s, r, SPOOL_DELIVERED, now, 0, resp, remote);
		d->n.delivered++;
		stats_hist_add(&s->delivery, stats_delivery_bounds, STATS_DELIVERY_BUCKETS,
		               (double)(now - RP_MIN(now, (uint64_t)r->submit_s * 1000)) / 1000.0);
		sched_rcpt_free(s, r);
		return;
	case OUTCOME_FAIL:
		sched_update_queue(s, r, SPOOL_BOUNCED, now, 0, resp, remote);
		d->n.bounced++;
		if (!oc->no_dsn)
			dsn_emit_queue(s->dsn, r->msgid, r->idx, rep, oc, remote, now);
		sched_rcpt_free(s, r);
		return;
	case OUTCOME_RETRY:
		if (oc->counts) {
			d->n.deferrals++;
			sched_update_queue(s, r, SPOOL_DEFERRED, now, oc->next_ms, resp, remote);
		}
		if (oc->next_ms <= now)
			sched_make_ready(s, d, r, now);
		else
			sched_defer(s, d, r, oc->next_ms);
		return;
	}
}

/* settle_unlist - d's failure is settled: off the list. */
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
	uint64_t rnd = sched_rnd(s);
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
		struct spool_rcpt rc = { .addr = "?", .addr_len = 1 };
		if (log_enabled(oc.action == OUTCOME_FAIL ? LOG_WARN : LOG_INFO)) {
			if (!reading)
				reading = spool_reader_begin(s->reader);
			if (!reading || !spool_get_rcpt(s->reader, r->msgid, r->idx, &rc))
				rc.addr = "?", rc.addr_len = 1;
		}
		sched_log_attempt(r->msgid, rc.addr, rc.addr_len, d->name, rep, &oc,
		                  r->attempts + (oc.counts ? 1 : 0), remote, 0, submit_ms, now);
		sched_settle(s, d, r, rep, &oc, remote, now);
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

/* sched_settle_failed - settle d's ready recipients with rep, at most
 * SCHED_SETTLE_MAX now. */
void sched_settle_failed(struct sched *s, struct sched_dest *d, const struct attempt_report *rep,
                         const char *remote, uint64_t now, bool until_hold)
{
	settle_ready(s, d, rep, remote, now, until_hold, SCHED_SETTLE_MAX);
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

/* sched_settle_blocks - d settles a failure: no session, no job. */
bool sched_settle_blocks(const struct sched_dest *d)
{
	return d->settle != NULL;
}

/* sched_settle_free - free what d's slices hold (its recipients are the
 * slabs'). */
void sched_settle_free(struct sched_dest *d)
{
	free(d->settle);
	free(d->purge);
	d->settle = NULL;
	d->purge = NULL;
}

/* ---- purges ------------------------------------------------------------ */

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
		sched_settle(s, d, r, &p->rep, &p->oc, NULL, now);
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

/* sched_settle_tick - the next slices of failures and purges. */
void sched_settle_tick(struct sched *s, uint64_t now)
{
	settle_slices(s, now);
	purge_slices(s, now);
}

/* purge_domain - all of d's queued and deferred recipients go onto its
 * purge list at once (O(heap)) and are settled from there in slices: a
 * million of them, each with a DSN to build, must not stall the loop. */
static uint64_t purge_domain(struct sched *s, struct sched_dest *d,
                             const struct attempt_report *rep, const struct outcome *oc,
                             uint64_t now)
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
	uint64_t n = sched_heap_extract(s, d, &head, &tail);
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
                              const struct attempt_report *rep, const struct outcome *oc,
                              uint64_t now)
{
	uint64_t n = 0;
	struct sched_rcpt *r = sched_heap_take(s, d, msgid);
	while (r) {
		struct sched_rcpt *next = r->next;
		r->next = NULL;
		sched_settle(s, d, r, rep, oc, NULL, now);
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
		sched_settle(s, d, r, rep, oc, NULL, now);
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

/* purge_inflight - d's recipients in flight (of msgid, or all when 0) are
 * final now; their attempt's own outcome will be ignored. O(slabs). */
static uint64_t purge_inflight(struct sched *s, struct sched_dest *d, uint64_t msgid,
                               const struct attempt_report *rep, const struct outcome *oc,
                               uint64_t now)
{
	uint64_t n = 0;
	for (struct sched_slab *sl = s->slabs; sl; sl = sl->next)
		for (unsigned i = 0; i < SCHED_SLAB_RCPTS; i++) {
			struct sched_rcpt *f = &sl->r[i];
			if (f->where != R_INFLIGHT || f->dest != d || (f->flags & RF_PURGED) ||
			    (msgid && f->msgid != msgid))
				continue;
			f->flags |= RF_PURGED;
			sched_update_queue(s, f, SPOOL_BOUNCED, now, 0, rep->text, NULL);
			d->n.bounced++;
			if (!oc->no_dsn)
				dsn_emit_queue(s->dsn, f->msgid, f->idx, rep, oc, NULL, now);
			n++;
		}
	return n;
}

/* sched_purge - the recipients of d (of message msgid, or all when 0)
 * become final: bounced with a DSN, or dropped without one. Those in
 * flight are final now; their attempt's own outcome will be ignored. */
uint64_t sched_purge(struct sched *s, struct sched_dest *d, uint64_t msgid, bool bounce,
                     uint64_t now)
{
	struct attempt_report rep;
	struct outcome oc = { .action = OUTCOME_FAIL, .counts = false };
	outcome_report_set(&rep, ATTEMPT_LOCAL, STAGE_OTHER, 0,
	                   bounce ? "purged by the administrator"
	                          : "purged by the administrator (dropped, no DSN)");
	snprintf(oc.status, sizeof(oc.status), "5.0.0");
	oc.no_dsn = !bounce;
	uint64_t n =
	    msgid ? purge_message(s, d, msgid, &rep, &oc, now) : purge_domain(s, d, &rep, &oc, now);
	return n + purge_inflight(s, d, msgid, &rep, &oc, now);
}
