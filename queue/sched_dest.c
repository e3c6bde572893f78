/* sched_dest.c - destinations: the table, ready queues, limits, back-off.
 *
 * Decides whether a destination may open a session or start a transaction
 * now: its own connection limit, the shard-wide session slots (handed out
 * longest waiter first), the rate token bucket and the failure back-off.
 * A destination that must wait for time sits on the wait list.
 */
#include "sched_impl.h"

#include <stdio.h>
#include <stdlib.h>

#include "base/log.h"
#include "base/util.h"

/* dest_hash - hash of a destination name. */
static uint32_t dest_hash(const char *name)
{
	return (uint32_t)rp_hash64(name, strlen(name));
}

/* htab_grow - double the table (or make the first one) and rehash. */
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

/* sched_dests_init - the first, empty table. */
void sched_dests_init(struct sched *s)
{
	htab_grow(s);
}

/* sched_dests_free - free every destination and the table. */
void sched_dests_free(struct sched *s)
{
	for (uint32_t i = 0; i < s->hsize; i++) {
		struct sched_dest *d = s->htab[i];
		while (d) {
			struct sched_dest *next = d->hnext;
			sched_settle_free(d);
			free(d->name);
			free(d);
			d = next;
		}
	}
	free(s->htab);
	s->htab = NULL;
	s->hsize = s->ndests = 0;
}

/* sched_dest_find - look name up. */
struct sched_dest *sched_dest_find(struct sched *s, const char *name)
{
	if (!s->hsize)
		return NULL;
	for (struct sched_dest *d = s->htab[dest_hash(name) & (s->hsize - 1)]; d; d = d->hnext)
		if (!strcmp(d->name, name))
			return d;
	return NULL;
}

/* sched_dest_get - look name up or create it with the configured limits. */
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

/* ---- ready queues ------------------------------------------------------ */

/* sched_ready_append - r joins the tail of d's ready FIFO; it joins the
 * tail's transaction when it belongs to the same message (and neither has
 * a body of its own), up to max_rcpts_per_msg. */
void sched_ready_append(struct sched *s, struct sched_dest *d, struct sched_rcpt *r)
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
	sched_kick(s, d);
}

/* sched_defer - r waits in the retry heap until due. */
void sched_defer(struct sched *s, struct sched_dest *d, struct sched_rcpt *r, uint64_t due)
{
	r->where = R_DEFERRED;
	r->due_ms = due;
	r->next = NULL;
	sched_heap_push(s, r);
	d->n.deferred++;
}

/* sched_make_ready - r may be tried now: queue it, unless its destination
 * is backing off: then it waits for the hold to end, and its record says
 * so (deferred until then; attempts and last reply unchanged), as the
 * stats do. */
void sched_make_ready(struct sched *s, struct sched_dest *d, struct sched_rcpt *r, uint64_t now)
{
	if (d->hold_until > now && !d->suspended) {
		sched_defer(s, d, r, d->hold_until);
		sched_update_queue(s, r, SPOOL_DEFERRED, now, d->hold_until, "", "")->wait_only =
		    true;
		return;
	}
	sched_ready_append(s, d, r);
}

/* ---- waiting for time: back-off and rate ------------------------------- */

/* wait_add - d waits for its hold to end or its bucket to refill. */
static void wait_add(struct sched *s, struct sched_dest *d)
{
	if (d->waiting)
		return;
	d->waiting = true;
	d->wait_next = s->wait_head;
	s->wait_head = d;
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

/* sched_rate_ok - a token is there (or no rate is set); else d waits.
 * A shared rate's tokens are asked for, not made by the clock. */
bool sched_rate_ok(struct sched *s, struct sched_dest *d, uint64_t now)
{
	if (d->lim.rate <= 0)
		return true;
	if (d->lim.rate_shared) {
		if (d->tokens >= 1)
			return true;
		if (!d->tokens_asked && s->ops.need_tokens) {
			d->tokens_asked = true;
			s->ops.need_tokens(d, s->ctx);
		}
		return false;
	}
	refill(d, now);
	if (d->tokens >= 1)
		return true;
	wait_add(s, d);
	return false;
}

/* sched_wait_wake - wake the waiters whose time has come. */
void sched_wait_wake(struct sched *s, uint64_t now)
{
	struct sched_dest **pp = &s->wait_head;
	while (*pp) {
		struct sched_dest *d = *pp;
		bool wake = !sched_dest_held(d, now);
		if (wake && d->lim.rate > 0 && !d->lim.rate_shared) {
			refill(d, now);
			wake = d->tokens >= 1;
		}
		if (wake) {
			*pp = d->wait_next;
			d->waiting = false;
			d->wait_next = NULL;
			if (d->ready_head)
				sched_kick(s, d);
		} else {
			pp = &d->wait_next;
		}
	}
}

void sched_tokens_add(struct sched *s, struct sched_dest *d, double n)
{
	d->tokens_asked = false;
	d->tokens += n;
	if (d->tokens > 0 && d->ready_head && !d->suspended)
		sched_kick(s, d);
}

/* ---- sessions ---------------------------------------------------------- */

/* sched_slots_grant - free shard-wide slots go to the destinations waiting
 * longest: each is kicked, and its slot is kept for it until that kick has
 * run (sched_run), so that a destination kicked earlier in the same round
 * cannot take it first. */
void sched_slots_grant(struct sched *s)
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
		sched_kick(s, w);
	}
}

/* sched_slot_pass - d's kick has run without using the slot kept for it
 * (no work left, suspended, held): the next waiter gets it, or it would
 * stay unused while others wait. */
void sched_slot_pass(struct sched *s, struct sched_dest *d)
{
	d->slot_granted = false;
	s->slot_grants--;
	sched_slots_grant(s);
}

/* slot_wait - d queues for a shard-wide slot (once). */
static void slot_wait(struct sched *s, struct sched_dest *d)
{
	if (d->slot_waiting)
		return;
	d->slot_waiting = true;
	d->slot_next = NULL;
	if (s->slot_tail)
		s->slot_tail->slot_next = d;
	else
		s->slot_head = d;
	s->slot_tail = d;
}

/* sched_dest_may_connect - every limit on a new session, in order. */
bool sched_dest_may_connect(struct sched *s, struct sched_dest *d, uint64_t now_ms)
{
	if (!d->nready_jobs || d->suspended || sched_dest_held(d, now_ms) || sched_settle_blocks(d))
		return false;
	if (d->n.connections >= d->lim.max_connections)
		return false;
	/* After a destination-level failure one session probes; more follow
	 * once it works (sched_dest_works), not one refused connect per job. */
	if (d->fails && d->n.connections)
		return false;
	if (!d->reached && d->n.connections >= SCHED_INITIAL_CONNECTIONS)
		return false;
	if (!sched_rate_ok(s, d, now_ms))
		return false;
	if (d->slot_granted)
		return true;
	/* Behind the destinations already waiting, even when a slot is free:
	 * that slot is theirs (sched_slots_grant hands it out). */
	if (s->sessions + s->slot_grants >= s->cfg.max_outbound || s->slot_head) {
		slot_wait(s, d);
		sched_slots_grant(s);
		return false;
	}
	return true;
}

/* sched_session_opened - a session to d counts against the limits. */
void sched_session_opened(struct sched *s, struct sched_dest *d)
{
	s->sessions++;
	d->n.connections++;
	if (d->slot_granted) {
		d->slot_granted = false;
		s->slot_grants--;
	}
}

/* sched_session_closed - a session to d ended: its slot is free. */
void sched_session_closed(struct sched *s, struct sched_dest *d)
{
	rp_assert(s->sessions > 0 && d->n.connections > 0);
	s->sessions--;
	d->n.connections--;
	/* A freed shard-wide slot goes to the destination waiting longest. */
	sched_slots_grant(s);
	/* The destination itself may want a replacement session. */
	if (d->nready_jobs)
		sched_kick(s, d);
}

/* ---- failures and back-off --------------------------------------------- */

/* sched_dest_works - a session to d reached the server: d is no longer
 * failing. If it was, only one session was allowed to try, and before the
 * first success only SCHED_INITIAL_CONNECTIONS (sched_dest_may_connect):
 * kick it so that the rest of its ready work gets sessions now. */
void sched_dest_works(struct sched *s, struct sched_dest *d)
{
	bool was_limited = d->fails != 0 || !d->reached;
	d->fails = 0;
	d->reached = true;
	if (was_limited && d->nready_jobs)
		sched_kick(s, d);
}

/* sched_dest_hold - back the destination off (unless it already is) and
 * defer its ready recipients until the hold ends. */
void sched_dest_hold(struct sched *s, struct sched_dest *d, const struct attempt_report *rep,
                     const char *remote, uint64_t now)
{
	if (d->hold_until <= now) {
		if (d->fails < 1000)
			d->fails++;
		/* A receiver that only asked for fewer sessions or less speed
		 * (and none of ours works to carry on): a short pause. */
		bool shaping = outcome_signal_of(rep) != SIGNAL_NONE;
		d->hold_until =
		    now + (shaping ? OUTCOME_SHAPE_RETRY_MS
		                   : outcome_retry_delay(&s->cfg.retry, d->fails, sched_rnd(s)));
		snprintf(d->hold_reason, sizeof(d->hold_reason), "%s", rep->text);
		wait_add(s, d);
		char reply[LOG_VALUE_MAX];
		log_quote(reply, sizeof(reply), rep->text, strlen(rep->text));
		log_info("dest %s backs off for %.1fs after %u failures: reply=%s", d->name,
		         (double)(d->hold_until - now) / 1000.0, d->fails, reply);
	}
	sched_settle_failed(s, d, rep, remote, now, true);
}

void sched_dest_wait(struct sched *s, struct sched_dest *d, uint64_t until_ms, const char *why)
{
	if (d->hold_until >= until_ms)
		return;
	d->hold_until = until_ms;
	snprintf(d->hold_reason, sizeof(d->hold_reason), "%s", why);
	wait_add(s, d);
	log_info("dest %s waits %.0fs: %s", d->name,
	         (double)(until_ms - RP_MIN(until_ms, rp_now_ms())) / 1000.0, why);
}

/* sched_dest_failed - log the failure; a permanent one settles d's ready
 * recipients at once, a temporary one backs d off. */
void sched_dest_failed(struct sched *s, struct sched_dest *d, const struct attempt_report *rep,
                       const char *remote, uint64_t now_ms)
{
	char reply[LOG_VALUE_MAX];
	log_quote(reply, sizeof(reply), rep->text, strlen(rep->text));
	log_info("session dest=%s relay=%s status=%s reply=%s", d->name, remote ? remote : "none",
	         outcome_kind_name(rep->kind), reply);
	struct outcome oc;
	outcome_decide(rep, 0, 0, now_ms, 0, &s->cfg.retry, &oc);
	if (oc.action == OUTCOME_FAIL) {
		/* Permanent for the destination (NXDOMAIN, null MX): every
		 * ready recipient fails with it. */
		sched_settle_failed(s, d, rep, remote, now_ms, false);
		return;
	}
	sched_dest_hold(s, d, rep, remote, now_ms);
}

/* sched_dest_ok - a session to d worked. */
void sched_dest_ok(struct sched *s, struct sched_dest *d)
{
	sched_dest_works(s, d);
}
