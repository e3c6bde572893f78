/* sched_impl.h - the scheduler's insides, shared by queue/sched*.c only.
 *
 * Not an API: struct sched, the recipient record, and the functions one
 * part of the scheduler offers the others. The public API is sched.h.
 *
 * Invariants (every part keeps them):
 * - A waiting recipient is in exactly one place: its destination's ready
 *   FIFO (R_READY), the retry heap (R_DEFERRED), a job (R_INFLIGHT) or the
 *   purge list of its destination's slice (R_PURGING, counted as queued);
 *   the destination's counters match.
 * - Spool updates are collected during an iteration and sent as one request
 *   in sched_run, after the iteration's DSNs are built.
 */
#ifndef RP_SCHED_IMPL_H
#define RP_SCHED_IMPL_H

#include "sched.h"

struct dsn_emit;

/* Where a recipient is (struct sched_rcpt.where). */
enum { R_FREE = 0, R_READY, R_DEFERRED, R_INFLIGHT, R_PURGING };
/* Recipient flags: RF_OWN_BODY: a job of its own (its own body variant);
 * RF_PURGED: final already (purged, or gone from the spool): the outcome
 * of the attempt in flight is ignored and the record freed. */
enum { RF_OWN_BODY = 1u << 0, RF_PURGED = 1u << 1 };

#define SCHED_HEAP_NONE  UINT32_MAX /* heap_pos of a recipient not in the heap */
#define SCHED_SLAB_RCPTS 1024       /* recipients per allocation */

struct sched_rcpt {
	uint64_t msgid;
	uint64_t due_ms; /* next attempt, unix ms (R_DEFERRED) */
	struct sched_dest *dest;
	struct sched_rcpt *next; /* ready FIFO, a purge list or the free list */
	uint32_t idx;
	uint32_t heap_pos; /* index in the heap, SCHED_HEAP_NONE elsewhere */
	uint32_t submit_s; /* unix seconds of submission (max_age) */
	uint16_t attempts;
	uint8_t where; /* R_* */
	uint8_t flags; /* RF_* */
};

struct sched_slab {
	struct sched_slab *next;
	struct sched_rcpt r[SCHED_SLAB_RCPTS];
};

/* The spool updates of one iteration (sched_update.c). */
struct sched_updates {
	struct sched_update *v; /* pending, strings as offsets into strings */
	unsigned n, cap;
	struct buf strings;
};

struct sched {
	struct sched_config cfg;
	struct sched_ops ops;
	void *ctx;
	struct spool *sp;
	struct spool_reader *reader;
	uint64_t rnd; /* xorshift state for jitter */

	struct sched_dest **htab; /* destinations by name */
	uint32_t hsize, ndests;

	struct sched_rcpt **heap; /* retry heap, earliest first */
	uint32_t heap_len, heap_cap;

	struct sched_slab *slabs;
	struct sched_rcpt *free_rcpts;
	uint64_t nslabs, live_rcpts;

	struct sched_dest *kick_head, *kick_tail;
	struct sched_dest *wait_head;               /* held or rate-limited */
	struct sched_dest *slot_head, *slot_tail;   /* waiting for a shard-wide slot */
	struct sched_dest *slice_head, *slice_tail; /* with recipients to settle in slices */
	uint32_t nslices;
	uint32_t sessions;
	uint32_t slot_grants; /* free slots kept for a waiter */

	struct sched_job *free_jobs;
	unsigned nfree_jobs;

	struct sched_updates upd;
	struct dsn_emit *dsn;       /* DSNs to build at the end of the iteration */
	struct stats_hist delivery; /* submit to delivered, seconds */
	struct stats_hist txn;      /* transaction time, seconds */
};

/* ---- sched.c: recipients, kicks, randomness ---------------------------- */

/* sched_rnd - the next pseudo-random value (jitter). */
uint64_t sched_rnd(struct sched *s);
/* sched_rcpt_alloc - a zeroed recipient record, not in the heap. */
struct sched_rcpt *sched_rcpt_alloc(struct sched *s);
/* sched_rcpt_free - give r back; it must be out of every queue. */
void sched_rcpt_free(struct sched *s, struct sched_rcpt *r);

/* ---- sched_dest.c: destinations, queues, limits ------------------------ */

/* sched_dest_held - whether d is backing off at now. */
static inline bool sched_dest_held(const struct sched_dest *d, uint64_t now)
{
	return d->hold_until > now;
}
/* sched_dests_init - the empty destination table. */
void sched_dests_init(struct sched *s);
/* sched_dests_free - free every destination and the table. */
void sched_dests_free(struct sched *s);
/* sched_ready_append - r joins d's ready FIFO (and d is kicked). */
void sched_ready_append(struct sched *s, struct sched_dest *d, struct sched_rcpt *r);
/* sched_defer - r waits in the retry heap until due. */
void sched_defer(struct sched *s, struct sched_dest *d, struct sched_rcpt *r, uint64_t due);
/* sched_make_ready - r may be tried now: ready, or deferred behind d's
 * back-off (and its record says so). */
void sched_make_ready(struct sched *s, struct sched_dest *d, struct sched_rcpt *r, uint64_t now);
/* sched_rate_ok - whether d's rate allows a transaction now; if not, d
 * waits on the wait list. */
bool sched_rate_ok(struct sched *s, struct sched_dest *d, uint64_t now);
/* sched_wait_wake - destinations whose hold ended or whose bucket refilled
 * leave the wait list, kicked when they have ready work. */
void sched_wait_wake(struct sched *s, uint64_t now);
/* sched_slots_grant - hand free shard-wide slots to the longest waiters. */
void sched_slots_grant(struct sched *s);
/* sched_slot_pass - d's kick ran without using the slot kept for it. */
void sched_slot_pass(struct sched *s, struct sched_dest *d);
/* sched_dest_works - a session to d reached its server. */
void sched_dest_works(struct sched *s, struct sched_dest *d);
/* sched_dest_hold - back d off after a destination-level failure and
 * settle its ready recipients with rep. */
void sched_dest_hold(struct sched *s, struct sched_dest *d, const struct attempt_report *rep,
                     const char *remote, uint64_t now);

/* ---- sched_heap.c: the retry heap -------------------------------------- */

/* sched_heap_push - r (R_DEFERRED, due_ms set) joins the heap. */
void sched_heap_push(struct sched *s, struct sched_rcpt *r);
/* sched_heap_remove - r leaves the heap. */
void sched_heap_remove(struct sched *s, struct sched_rcpt *r);
/* sched_heap_move_due - at most max due recipients become ready, earliest
 * first. */
void sched_heap_move_due(struct sched *s, uint64_t now, unsigned max);
/* sched_heap_due_now - d's recipients come due at now (re-keyed, in
 * message order); returns how many. */
uint64_t sched_heap_due_now(struct sched *s, struct sched_dest *d, uint64_t now);
/* sched_heap_take - d's recipients (of msgid, or all when 0) leave the
 * heap as a list in due order; d->n.deferred follows. */
struct sched_rcpt *sched_heap_take(struct sched *s, struct sched_dest *d, uint64_t msgid);
/* sched_heap_extract - all of d's recipients leave the heap onto the list
 * head/tail in one pass (heap order); returns how many. Counters are the
 * caller's. */
uint64_t sched_heap_extract(struct sched *s, struct sched_dest *d, struct sched_rcpt **head,
                            struct sched_rcpt **tail);

/* ---- sched_job.c: jobs ------------------------------------------------- */

/* sched_jobs_free - free the recycled jobs. */
void sched_jobs_free(struct sched *s);
/* sched_log_attempt - the delivery log line of one recipient's outcome; at
 * says where and how it was tried (NULL or NULL fields: not known). */
void sched_log_attempt(uint64_t msgid, const char *addr, size_t addr_len, const char *dest,
                       const struct attempt_report *rep, const struct outcome *oc,
                       unsigned attempts, const struct sched_attempt *at, uint64_t submit_ms,
                       uint64_t now_ms);

/* ---- sched_settle.c: outcomes, failures, purges ------------------------ */

/* sched_settle - apply one recipient's outcome: memory, counters, spool,
 * DSN. r is out of every queue; it is freed or queued again. */
void sched_settle(struct sched *s, struct sched_dest *d, struct sched_rcpt *r,
                  const struct attempt_report *rep, const struct outcome *oc, const char *remote,
                  uint64_t now);
/* sched_settle_failed - settle d's ready recipients with one
 * destination-level report: SCHED_SETTLE_MAX now, the rest in the next
 * ticks (d takes no session meanwhile); until_hold: no retry before d's
 * back-off ends. */
void sched_settle_failed(struct sched *s, struct sched_dest *d, const struct attempt_report *rep,
                         const char *remote, uint64_t now, bool until_hold);
/* sched_settle_tick - the next slices of failures and purges, within one
 * budget of SCHED_SETTLE_MAX units for all destinations. */
void sched_settle_tick(struct sched *s, uint64_t now);
/* sched_settle_blocks - whether d settles a failure (no session, no job). */
bool sched_settle_blocks(const struct sched_dest *d);
/* sched_settle_free - free d's settling state (sched_free). */
void sched_settle_free(struct sched_dest *d);
/* sched_purge - d's recipients (of msgid, or all when 0) become final:
 * bounced with a DSN, or dropped. Returns how many; a domain purge settles
 * a first slice now and the rest in the next ticks. */
uint64_t sched_purge(struct sched *s, struct sched_dest *d, uint64_t msgid, bool bounce,
                     uint64_t now);

/* ---- sched_update.c: spool updates ------------------------------------- */

/* sched_update_queue - note r's new state for the end of the iteration;
 * returns the update (valid until the next call) for extra fields. */
struct spool_update *sched_update_queue(struct sched *s, const struct sched_rcpt *r, uint8_t state,
                                        uint64_t now, uint64_t next_ms, const char *resp,
                                        const char *remote);
/* sched_update_flush - build the iteration's DSNs, then send its updates
 * to the writer in one request. */
void sched_update_flush(struct sched *s);
/* sched_update_pending - whether sched_update_flush has anything to do. */
bool sched_update_pending(const struct sched *s);
/* sched_update_free - free the batch (after a flush). */
void sched_update_free(struct sched *s);

#endif
