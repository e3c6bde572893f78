/* sched_settle.c - settling recipients: outcomes, destination failures, purges.
 *
 * Applies a decided outcome to a recipient (memory, counters, spool, DSN).
 * A destination-level failure or a domain purge may concern a million
 * recipients: both go through the destination's slice, SCHED_SETTLE_MAX
 * units per call and per tick for all destinations together (sched.h).
 */
#include "sched_impl.h"

#include <stdio.h>
#include <stdlib.h>

#include "dsn_emit.h"
#include "base/log.h"
#include "base/util.h"

/* A destination's recipients still to settle, a slice per call or tick.
 * Two kinds of work, kept apart:
 * - a domain purge: the recipients it took (its list, R_PURGING, counted
 *   as queued), final as the latest purge says: bounced or dropped;
 * - a destination-level failure: d's ready FIFO itself, each recipient
 *   decided with the failure's report (retry or bounce); meanwhile d
 *   takes no session and gives no job.
 * A failure never reaches the purge's list, so it never turns a purged
 * recipient into a retry; mail queued after a purge is not part of it. */
struct sched_slice {
	struct sched_rcpt *purge_head, *purge_tail; /* the purge's, in order */
	struct attempt_report purge_rep;            /* the latest purge's */
	struct outcome purge_oc;
	bool failing;                   /* d's ready FIFO settles with fail_rep */
	bool until_hold;                /* no retry before d's back-off ends */
	bool has_remote;                /* the failure named a relay */
	struct attempt_report fail_rep; /* the latest failure's */
	char remote[256];
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
		/* A dead address (5.1.1 user unknown, 5.1.2 no such domain, ...)
		 * goes on the suppression list in the same spool commit. */
		sched_update_queue(s, r, SPOOL_BOUNCED, now, 0, resp, remote)->suppress =
		    outcome_hard_bounce(oc->status, rep->text);
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

/* ---- slices ------------------------------------------------------------ */

/* slice_get - d's slice; a new one joins the tail of the list. */
static struct sched_slice *slice_get(struct sched *s, struct sched_dest *d)
{
	if (d->slice)
		return d->slice;
	d->slice = xcalloc(1, sizeof(*d->slice));
	d->slice_next = NULL;
	if (s->slice_tail)
		s->slice_tail->slice_next = d;
	else
		s->slice_head = d;
	s->slice_tail = d;
	s->nslices++;
	return d->slice;
}

/* slice_unlink - d leaves the list (a walk: few destinations are on it). */
static void slice_unlink(struct sched *s, struct sched_dest *d)
{
	struct sched_dest **pp = &s->slice_head, *prev = NULL;
	while (*pp != d) {
		prev = *pp;
		pp = &(*pp)->slice_next;
	}
	*pp = d->slice_next;
	if (s->slice_tail == d)
		s->slice_tail = prev;
	d->slice_next = NULL;
	s->nslices--;
}

/* slice_end - free d's slice when neither kind of work is left. */
static void slice_end(struct sched *s, struct sched_dest *d)
{
	struct sched_slice *sl = d->slice;
	if (!sl || sl->failing || sl->purge_head)
		return;
	slice_unlink(s, d);
	free(sl);
	d->slice = NULL;
}

/* settle_failed_some - d's ready recipients share one destination-level
 * report (connect refused, NXDOMAIN, ...): decide, log and settle each, at
 * most max of them (a unit each). Returns how many. The addresses come
 * from the spool, for the log. */
static unsigned settle_failed_some(struct sched *s, struct sched_dest *d,
                                   const struct attempt_report *rep, const char *remote,
                                   bool until_hold, unsigned max, uint64_t now)
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
		struct sched_attempt at = { .remote = remote };
		sched_log_attempt(r->msgid, rc.addr, rc.addr_len, d->name, rep, &oc,
		                  r->attempts + (oc.counts ? 1 : 0), &at, submit_ms, now);
		sched_settle(s, d, r, rep, &oc, remote, now);
	}
	if (reading)
		spool_reader_end(s->reader);
	if (!d->ready_head) {
		d->ready_tail = NULL;
		d->tail_group = 0;
		d->nready_jobs = 0;
	} else {
		d->nready_jobs = d->nready_jobs > groups ? d->nready_jobs - groups : 1;
	}
	return n;
}

/* settle_purged_some - settle the purge's recipients as the latest purge
 * says, within budget units. Returns the units used. */
static unsigned settle_purged_some(struct sched *s, struct sched_dest *d, unsigned budget,
                                   uint64_t now)
{
	struct sched_slice *sl = d->slice;
	unsigned cost = sl->purge_oc.no_dsn ? 1 : SCHED_SETTLE_DSN_COST;
	unsigned used = 0;
	while (sl->purge_head && used + cost <= budget) {
		struct sched_rcpt *r = sl->purge_head;
		sl->purge_head = r->next;
		r->next = NULL;
		d->n.queued--;
		used += cost;
		sched_settle(s, d, r, &sl->purge_rep, &sl->purge_oc, NULL, now);
	}
	if (!sl->purge_head)
		sl->purge_tail = NULL;
	return used;
}

/* sched_settle_failed - d's ready recipients settle with rep: a first
 * slice now, the rest in the next ticks with the same report (or a newer
 * one: the latest failure applies to the rest). */
void sched_settle_failed(struct sched *s, struct sched_dest *d, const struct attempt_report *rep,
                         const char *remote, uint64_t now, bool until_hold)
{
	settle_failed_some(s, d, rep, remote, until_hold, SCHED_SETTLE_MAX, now);
	if (!d->ready_head) {
		if (d->slice) {
			d->slice->failing = false;
			slice_end(s, d);
		}
		return;
	}
	struct sched_slice *sl = slice_get(s, d);
	sl->failing = true;
	sl->fail_rep = *rep;
	sl->has_remote = remote != NULL;
	snprintf(sl->remote, sizeof(sl->remote), "%s", remote ? remote : "");
	sl->until_hold = until_hold;
}

/* slice_run - the next slice of d's work within budget units: the failure
 * first (d takes no session until it is settled), then the purge. Returns
 * the units used; the slice ends when nothing is left. */
static unsigned slice_run(struct sched *s, struct sched_dest *d, unsigned budget, uint64_t now)
{
	struct sched_slice *sl = d->slice;
	unsigned used = 0;
	if (sl->failing) {
		used = settle_failed_some(s, d, &sl->fail_rep, sl->has_remote ? sl->remote : NULL,
		                          sl->until_hold, budget, now);
		if (!d->ready_head)
			sl->failing = false;
	}
	used += settle_purged_some(s, d, budget - used, now);
	slice_end(s, d);
	return used;
}

/* sched_settle_tick - SCHED_SETTLE_MAX units per tick over all slices,
 * round robin: a destination that still has work after its turn goes
 * behind the others, so one huge purge does not hold up a small failure. */
void sched_settle_tick(struct sched *s, uint64_t now)
{
	unsigned budget = SCHED_SETTLE_MAX;
	for (uint32_t turns = s->nslices; turns && budget && s->slice_head; turns--) {
		struct sched_dest *d = s->slice_head;
		budget -= slice_run(s, d, budget, now);
		if (d->slice && s->slice_tail != d) { /* to the back */
			slice_unlink(s, d);
			d->slice_next = NULL;
			s->slice_tail->slice_next = d;
			s->slice_tail = d;
			s->nslices++;
		}
	}
}

/* sched_settle_blocks - d settles a failure: no session, no job. */
bool sched_settle_blocks(const struct sched_dest *d)
{
	return d->slice && d->slice->failing;
}

/* sched_settle_free - free d's slice (its recipients are the slabs'). */
void sched_settle_free(struct sched_dest *d)
{
	free(d->slice);
	d->slice = NULL;
}

/* ---- purges ------------------------------------------------------------ */

/* purge_domain - all of d's queued and deferred recipients go onto its
 * slice's purge list at once (O(heap)) and are settled from there, a
 * first slice now and the rest in the next ticks: a million of them, each
 * with a DSN to build, must not stall the loop. */
static uint64_t purge_domain(struct sched *s, struct sched_dest *d,
                             const struct attempt_report *rep, const struct outcome *oc,
                             uint64_t now)
{
	struct sched_slice *sl = slice_get(s, d);
	/* The latest purge decides (bounce or drop) for every one waiting. */
	sl->purge_rep = *rep;
	sl->purge_oc = *oc;
	struct sched_rcpt *head = NULL, *tail = NULL;
	uint64_t n = sched_heap_extract(s, d, &head, &tail);
	d->n.deferred -= n;
	d->n.queued += n;
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
	n = 0;
	for (struct sched_rcpt *r = head; r; r = r->next) {
		r->where = R_PURGING;
		n++;
	}
	if (head) {
		if (sl->purge_tail)
			sl->purge_tail->next = head;
		else
			sl->purge_head = head;
		sl->purge_tail = tail;
	}
	settle_purged_some(s, d, SCHED_SETTLE_MAX, now);
	slice_end(s, d);
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
