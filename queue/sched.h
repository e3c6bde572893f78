/* sched.h - the per-shard delivery scheduler.
 *
 * One scheduler per shard owns the destinations hashed to that shard: for
 * each, a FIFO ready queue, counters, connection and rate limits, and a
 * backoff state. Deferred recipients wait in one min-heap keyed by their
 * next attempt. Memory holds the order; the spool holds the truth: every
 * state change is sent to the spool writer, and sched_add rebuilds the
 * queues from the spool at start-up.
 *
 * The relay drives it: sched_kick-ed destinations get sessions; a session
 * pulls jobs with sched_job_next (recipients of one message, loaded from
 * the spool) and reports with sched_job_done; a failure before any job is
 * reported with sched_dest_failed. Decisions come from outcome.h.
 *
 * Single-threaded: everything here runs on the owning shard's loop.
 */
#ifndef RP_SCHED_H
#define RP_SCHED_H

#include <stdbool.h>
#include <stdint.h>

#include "base/buf.h"
#include "outcome.h"
#include "spool.h"
#include "base/stats.h"

struct sched;
struct sched_rcpt;

/* Work per loop iteration is bounded: at most SCHED_TICK_MAX_DUE due
 * recipients leave the retry heap per tick. Destination-level failures and
 * domain purges settle in slices of at most SCHED_SETTLE_MAX units per
 * call, and per tick for all destinations together: a recipient costs one
 * unit, or SCHED_SETTLE_DSN_COST when a purge bounces it with a DSN, so
 * that such a purge goes at SCHED_PURGE_DSN_MAX recipients per tick. */
#define SCHED_TICK_MAX_DUE    50000
#define SCHED_SETTLE_MAX      16384
#define SCHED_PURGE_DSN_MAX   1024
#define SCHED_SETTLE_DSN_COST (SCHED_SETTLE_MAX / SCHED_PURGE_DSN_MAX)
/* A destination no session has reached yet gets at most this many
 * concurrent sessions (connecting ones included) until one reaches its
 * server: 100 parallel connects to a host that turns out to be down or to
 * throttle strangers help nobody. Then max_connections applies. */
#define SCHED_INITIAL_CONNECTIONS 5
struct sched_slice;

struct sched_limits {
	uint32_t max_connections;   /* concurrent sessions to the destination */
	uint32_t max_msgs_per_conn; /* transactions per session */
	uint32_t max_rcpts_per_msg; /* RCPTs per transaction */
	double rate;                /* messages per second, 0 = unlimited */
	bool rate_shared;           /* the rate is shared with other nodes: tokens come
	                             * from ops->need_tokens (sched_tokens_add), not
	                             * from the clock */
	uint64_t connect_timeout_ms;
};

struct sched_dest {
	char *name;                    /* domain, lower-case */
	struct sched_dest *hnext;      /* hash chain */
	struct sched_limits lim;       /* from the config (ops->configure) */
	struct sched_rcpt *ready_head; /* FIFO of ready recipients */
	struct sched_rcpt *ready_tail;
	uint32_t tail_group;   /* recipients in the tail's message group */
	uint64_t nready_jobs;  /* estimate of transactions ready */
	struct stats_counts n; /* counters */
	uint32_t fails;        /* consecutive destination-level failures */
	bool reached;          /* a session has reached its server */
	uint64_t hold_until;   /* unix ms; back-off while in the future */
	char hold_reason[320]; /* why, for deferred recipients */
	bool suspended;        /* administratively held */
	double tokens;         /* rate limit token bucket */
	bool tokens_asked;     /* lim.rate_shared: need_tokens is pending */
	uint64_t tokens_ms;    /* last refill (unix ms) */
	bool kick_queued;      /* on the kick list */
	struct sched_dest *kick_next;
	bool waiting; /* on the wait list (time or slot) */
	struct sched_dest *wait_next;
	bool slot_waiting; /* on the global-slot wait list */
	bool slot_granted; /* a freed shard-wide slot is kept for it */
	struct sched_dest *slot_next;
	struct sched_slice *slice; /* failure or purge settling in slices */
	struct sched_dest *slice_next;
	void *owner; /* the relay's connection pool */
};

/* One recipient of a job, loaded from the spool. */
struct sched_job_rcpt {
	struct sched_rcpt *r;
	const char *addr; /* mailbox */
	size_t addr_len;
	const char *orcpt;
	size_t orcpt_len;
	uint8_t notify;
	uint16_t attempts; /* before this attempt */
};

/* A transaction's worth of work: recipients of one message for one
 * destination. Owned by the session that pulled it until sched_job_done. */
struct sched_job {
	struct sched_dest *dest;
	uint64_t msgid;
	uint32_t msg_flags; /* MSG_F_* */
	uint64_t submit_ms;
	const char *sender; /* reverse path ("" = <>) */
	size_t sender_len;
	const char *envid;
	size_t envid_len;
	struct buf body; /* the message, CRLF lines, not dot-stuffed */
	unsigned nrcpt;
	struct sched_job_rcpt *rcpt;
	unsigned cap;
	struct buf strings;     /* storage behind sender, envid, addresses */
	struct sched_job *next; /* free list */
};

struct sched_ops {
	/* kick - d has work it can start now (called from sched_run). */
	void (*kick)(struct sched_dest *d, void *ctx);
	/* configure - fill d->lim for a new destination (or after a reload). */
	void (*configure)(struct sched_dest *d, void *ctx);
	/* need_tokens - d (lim.rate_shared) has work and no token: ask for
	 * some; sched_tokens_add hands them in (optional; called at most
	 * once per wait, again only after tokens arrived). */
	void (*need_tokens)(struct sched_dest *d, void *ctx);
};

struct sched_config {
	struct retry_policy retry;
	uint32_t max_outbound;         /* sessions of this shard, all destinations */
	const char *hostname;          /* Reporting-MTA of DSNs (must outlive the config) */
	const char *verp_domain;       /* [queue] bounce_domain: each recipient's
	                                * return path is a signed VERP address
	                                * there (verp.h); NULL or "" = off */
	const unsigned char *verp_key; /* the spool's VERP key */
};

/* Facts about an attempt, for the delivery log line. */
struct sched_attempt {
	const char *remote;   /* "host[ip]:port" */
	const char *tls;      /* how the session talked: "TLSv1.3/CIPHER verified=yes",
	                       * "no" (clear text), or NULL (not known) */
	const char *source;   /* the local address it was bound to ([domain]
	                       * source), or NULL (the kernel's choice) */
	const char *ehlo;     /* the EHLO name when [domain] ehlo set it, or NULL */
	uint64_t duration_ms; /* connect (if new) to final reply */
};

/* A recipient to (re)queue: from a submit or the start-up scan. */
struct sched_add {
	uint64_t msgid;
	uint32_t idx;
	const char *domain; /* lower-case */
	uint64_t submit_ms;
	uint64_t next_ms; /* when deferred; 0 = ready now */
	uint16_t attempts;
	bool own_body; /* has its own body variant: a job of its own */
};

/* sched_tokens_add - n tokens for d's shared rate: the answer to
 * need_tokens (given when there are tokens, which may be later: a
 * bucket that is empty answers once it has refilled). d runs again when it
 * has ready work. */
void sched_tokens_add(struct sched *s, struct sched_dest *d, double n);

/* sched_new - a scheduler reading jobs through reader (owned by caller) and
 * writing state changes to sp. cfg is copied (delays are referenced). */
struct sched *sched_new(const struct sched_config *cfg, const struct sched_ops *ops, void *ctx,
                        struct spool *sp, struct spool_reader *reader);
/* sched_free - frees destinations and waiting recipients; no job may be out. */
void sched_free(struct sched *s);
/* sched_set_config - a reloaded config (retry policy, global limit). */
void sched_set_config(struct sched *s, const struct sched_config *cfg);
/* sched_reconfigure - call ops->configure for every destination again. */
void sched_reconfigure(struct sched *s);

/* sched_add - queue one recipient. */
void sched_add(struct sched *s, const struct sched_add *a, uint64_t now_ms);
/* sched_dest_find - the destination called name, or NULL. */
struct sched_dest *sched_dest_find(struct sched *s, const char *name);
/* sched_dest_get - find or create the destination called name. */
struct sched_dest *sched_dest_get(struct sched *s, const char *name);

/* sched_dest_wait - d takes no session and gives no job until until_ms
 * (unix ms), why saying so in its stats: not a failure (no back-off step,
 * no attempt counted); its ready recipients stay queued, and those whose
 * retry comes due meanwhile wait for it too. A warm-up cap: mail waits,
 * never bounces for it. */
void sched_dest_wait(struct sched *s, struct sched_dest *d, uint64_t until_ms, const char *why);
/* sched_dest_may_connect - whether d wants one more session now. When only
 * the shard-wide session limit stands in the way, d queues for a slot. */
bool sched_dest_may_connect(struct sched *s, struct sched_dest *d, uint64_t now_ms);
/* sched_session_opened / _closed - session accounting (limits, stats). */
void sched_session_opened(struct sched *s, struct sched_dest *d);
void sched_session_closed(struct sched *s, struct sched_dest *d);
/* sched_job_next - the next transaction for d, or NULL (empty, held,
 * suspended, rate-limited). */
struct sched_job *sched_job_next(struct sched *s, struct sched_dest *d, uint64_t now_ms);
/* sched_job_done - per-recipient reports (job->nrcpt of them), in order;
 * decides, updates memory and spool, logs, and recycles the job. */
void sched_job_done(struct sched *s, struct sched_job *job, const struct attempt_report *reps,
                    const struct sched_attempt *info, uint64_t now_ms);
/* sched_dest_failed - a destination-level failure with no job in hand
 * (connect refused, greeting refused, DNS): back off and defer d's ready
 * recipients with this report. */
void sched_dest_failed(struct sched *s, struct sched_dest *d, const struct attempt_report *rep,
                       const char *remote, uint64_t now_ms);
/* sched_dest_ok - a session to d worked: reset its failure count. */
void sched_dest_ok(struct sched *s, struct sched_dest *d);

/* sched_dest_retry - deferred recipients of d become ready now and its
 * back-off ends. Returns how many recipients moved. */
uint64_t sched_dest_retry(struct sched *s, struct sched_dest *d, uint64_t now_ms);
/* sched_dest_suspend - hold (on) or release d's mail; nothing is lost. */
void sched_dest_suspend(struct sched *s, struct sched_dest *d, bool on);
/* sched_dest_purge - every waiting recipient of d (and the in-flight ones,
 * whatever their attempt says) becomes final: bounced with a DSN when
 * bounce, dropped silently otherwise. Returns how many: final at once,
 * though a big domain's records follow in slices (sched_tick). */
uint64_t sched_dest_purge(struct sched *s, struct sched_dest *d, bool bounce, uint64_t now_ms);

/* sched_msg_purge - like sched_dest_purge for the recipients of one
 * message that wait for (or are in flight to) d. Returns how many. */
uint64_t sched_msg_purge(struct sched *s, struct sched_dest *d, uint64_t msgid, bool bounce,
                         uint64_t now_ms);

/* sched_tick - settle the next slices of failures and purges, move due
 * retries to ready queues, end expired holds, refill rate buckets; call
 * often (every 10-100 ms). */
void sched_tick(struct sched *s, uint64_t now_ms);
/* sched_kick - ask for ops->kick on d at the next sched_run. */
void sched_kick(struct sched *s, struct sched_dest *d);
/* sched_run - call ops->kick for destinations that got work. */
void sched_run(struct sched *s);
/* sched_pending_kicks - whether sched_run has anything to do. */
bool sched_pending_kicks(const struct sched *s);

/* sched_totals - counters summed over all destinations. */
void sched_totals(const struct sched *s, struct stats_counts *c);
/* sched_stats - add this scheduler's counters, destinations and histograms
 * to out (which the caller zeroed or filled with other parts). */
void sched_stats(const struct sched *s, struct stats_snapshot *out);
/* sched_foreach_dest - visit every destination. */
void sched_foreach_dest(struct sched *s, void (*fn)(struct sched_dest *d, void *arg), void *arg);
/* sched_memory - bytes held for waiting recipients (for the closing note). */
uint64_t sched_memory(const struct sched *s);

#endif
