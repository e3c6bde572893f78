/* sched.c - per-shard delivery scheduler: life cycle, ticks, kicks, reports (see sched.h).
 *
 * The parts: sched_dest.c (destinations, limits, back-off), sched_heap.c
 * (retry heap), sched_job.c (jobs), sched_settle.c (outcomes, failures and
 * purges in slices), sched_update.c (spool updates); dsn_emit.c builds
 * DSNs. The invariants they share are in sched_impl.h.
 */
#include "sched_impl.h"

#include <stdio.h>
#include <stdlib.h>

#include "dsn_emit.h"
#include "base/util.h"

/* sched_rnd - xorshift64*. */
uint64_t sched_rnd(struct sched *s)
{
	uint64_t x = s->rnd;
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	s->rnd = x;
	return x * 2685821657736338717ull;
}

/* ---- recipients -------------------------------------------------------- */

/* sched_rcpt_alloc - a record from the free list, a new slab when empty. */
struct sched_rcpt *sched_rcpt_alloc(struct sched *s)
{
	if (!s->free_rcpts) {
		struct sched_slab *sl = xmalloc(sizeof(*sl));
		sl->next = s->slabs;
		s->slabs = sl;
		s->nslabs++;
		for (int i = SCHED_SLAB_RCPTS - 1; i >= 0; i--) {
			sl->r[i].where = R_FREE;
			sl->r[i].next = s->free_rcpts;
			s->free_rcpts = &sl->r[i];
		}
	}
	struct sched_rcpt *r = s->free_rcpts;
	s->free_rcpts = r->next;
	memset(r, 0, sizeof(*r));
	r->heap_pos = SCHED_HEAP_NONE;
	s->live_rcpts++;
	return r;
}

/* sched_rcpt_free - back to the free list (slabs are kept). */
void sched_rcpt_free(struct sched *s, struct sched_rcpt *r)
{
	rp_assert(r->where != R_FREE && r->heap_pos == SCHED_HEAP_NONE);
	r->where = R_FREE;
	r->next = s->free_rcpts;
	s->free_rcpts = r;
	s->live_rcpts--;
}

/* sched_add - a new or rebuilt recipient: ready now or deferred. */
void sched_add(struct sched *s, const struct sched_add *a, uint64_t now_ms)
{
	struct sched_dest *d = sched_dest_get(s, a->domain);
	struct sched_rcpt *r = sched_rcpt_alloc(s);
	r->msgid = a->msgid;
	r->idx = a->idx;
	r->dest = d;
	r->attempts = a->attempts;
	r->submit_s = (uint32_t)(a->submit_ms / 1000);
	r->flags = a->own_body ? RF_OWN_BODY : 0;
	if (a->next_ms > now_ms)
		sched_defer(s, d, r, a->next_ms);
	else
		sched_make_ready(s, d, r, now_ms);
}

/* ---- time and kicks ---------------------------------------------------- */

/* sched_tick - settle the next slices, release due retries (bounded per
 * tick), wake destinations whose hold ended or whose bucket refilled. */
void sched_tick(struct sched *s, uint64_t now_ms)
{
	sched_settle_tick(s, now_ms);
	sched_heap_move_due(s, now_ms, SCHED_TICK_MAX_DUE);
	sched_wait_wake(s, now_ms);
}

/* sched_kick - d joins the kick list (once). */
void sched_kick(struct sched *s, struct sched_dest *d)
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

/* sched_pending_kicks - kicks, updates or DSNs wait for sched_run. */
bool sched_pending_kicks(const struct sched *s)
{
	return s->kick_head != NULL || sched_update_pending(s);
}

/* sched_run - flush the iteration's DSNs and updates, then kick the
 * destinations that got work, in the order they got it. */
void sched_run(struct sched *s)
{
	sched_update_flush(s);
	struct sched_dest *d = s->kick_head, *last = s->kick_tail;
	s->kick_head = s->kick_tail = NULL;
	while (d) {
		struct sched_dest *next = d == last ? NULL : d->kick_next;
		d->kick_queued = false;
		d->kick_next = NULL;
		s->ops.kick(d, s->ctx);
		if (d->slot_granted)
			sched_slot_pass(s, d);
		d = next;
	}
	/* The kicks may have failed recipients (a loop, a message too big for
	 * an idle session): their DSNs need the bodies that their final state
	 * deletes, so they go first here too (sched_update_flush). */
	sched_update_flush(s);
}

/* ---- administration ---------------------------------------------------- */

/* sched_dest_retry - d's deferred recipients are due now: they go to the
 * front of the heap, in message order, and leave it like any due
 * recipient, at most SCHED_TICK_MAX_DUE per loop iteration (a million of
 * them must not stall the loop). */
uint64_t sched_dest_retry(struct sched *s, struct sched_dest *d, uint64_t now_ms)
{
	d->hold_until = 0;
	d->fails = 0;
	uint64_t n = sched_heap_due_now(s, d, now_ms);
	if (n)
		sched_heap_move_due(s, now_ms, SCHED_TICK_MAX_DUE);
	if (d->ready_head)
		sched_kick(s, d);
	return n;
}

/* sched_dest_suspend - hold or release d. */
void sched_dest_suspend(struct sched *s, struct sched_dest *d, bool on)
{
	d->suspended = on;
	if (!on && d->ready_head)
		sched_kick(s, d);
}

/* sched_dest_purge - all of d's waiting and in-flight recipients. */
uint64_t sched_dest_purge(struct sched *s, struct sched_dest *d, bool bounce, uint64_t now_ms)
{
	return sched_purge(s, d, 0, bounce, now_ms);
}

/* sched_msg_purge - msgid's waiting and in-flight recipients of d. */
uint64_t sched_msg_purge(struct sched *s, struct sched_dest *d, uint64_t msgid, bool bounce,
                         uint64_t now_ms)
{
	return sched_purge(s, d, msgid, bounce, now_ms);
}

/* ---- life cycle -------------------------------------------------------- */

/* sched_new - an empty scheduler. */
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
	sched_dests_init(s);
	return s;
}

/* sched_set_config - take a reloaded config. */
void sched_set_config(struct sched *s, const struct sched_config *cfg)
{
	s->cfg = *cfg;
	sched_slots_grant(s); /* a larger max_outbound frees slots for the waiters */
}

/* sched_reconfigure - new limits for every destination; kick those with work. */
void sched_reconfigure(struct sched *s)
{
	for (uint32_t i = 0; i < s->hsize; i++)
		for (struct sched_dest *d = s->htab[i]; d; d = d->hnext) {
			s->ops.configure(d, s->ctx);
			if (d->ready_head)
				sched_kick(s, d);
		}
}

/* sched_free - send what is pending, then free everything. */
void sched_free(struct sched *s)
{
	if (!s)
		return;
	sched_update_flush(s);
	sched_dests_free(s);
	free(s->heap);
	while (s->slabs) {
		struct sched_slab *next = s->slabs->next;
		free(s->slabs);
		s->slabs = next;
	}
	sched_jobs_free(s);
	sched_update_free(s);
	dsn_emit_free(s->dsn);
	free(s);
}

/* ---- reports ----------------------------------------------------------- */

/* sched_totals - sum the destinations' counters. */
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

/* sched_foreach_dest - fn for every destination, in table order. */
void sched_foreach_dest(struct sched *s, void (*fn)(struct sched_dest *d, void *arg), void *arg)
{
	for (uint32_t i = 0; i < s->hsize; i++)
		for (struct sched_dest *d = s->htab[i]; d; d = d->hnext)
			fn(d, arg);
}

/* sched_stats - totals, one entry per destination, the histograms. */
void sched_stats(const struct sched *s, struct stats_snapshot *out)
{
	unsigned n = 0;
	struct stats_domain *dom =
	    xrealloc(out->domains, (out->ndomains + s->ndests + 1) * sizeof(*dom));
	out->domains = dom;
	uint64_t now = rp_now_ms();
	for (uint32_t i = 0; i < s->hsize; i++)
		for (struct sched_dest *d = s->htab[i]; d; d = d->hnext) {
			stats_counts_add(&out->total, &d->n);
			struct stats_domain *e = &dom[out->ndomains + n++];
			memset(e, 0, sizeof(*e)); /* the relay may leave fields unset */
			snprintf(e->name, sizeof(e->name), "%s", d->name);
			e->n = d->n;
			e->suspended = d->suspended;
			e->hold_until_ms = d->hold_until > now ? d->hold_until : 0;
			if (e->hold_until_ms)
				snprintf(e->hold_reason, sizeof(e->hold_reason), "%.199s",
				         d->hold_reason);
			e->max_connections = d->lim.max_connections;
			e->max_msgs_per_conn = d->lim.max_msgs_per_conn;
			e->max_rcpts_per_msg = d->lim.max_rcpts_per_msg;
			e->rate = d->lim.rate;
		}
	out->ndomains += n;
	stats_hist_merge(&out->delivery, &s->delivery);
	stats_hist_merge(&out->txn, &s->txn);
}

/* sched_memory - slabs, heap, table and destinations. */
uint64_t sched_memory(const struct sched *s)
{
	return s->nslabs * sizeof(struct sched_slab) + (uint64_t)s->heap_cap * sizeof(*s->heap) +
	       (uint64_t)s->hsize * sizeof(*s->htab) +
	       (uint64_t)s->ndests * sizeof(struct sched_dest);
}
