/* delivery_shape.h - a destination's effective concurrency and rate, as its
 * receiver tolerates them (delivery_shape.c). One per pool, on the shard's
 * thread; pure bookkeeping (the pool acts on it).
 */
#ifndef RP_DELIVERY_SHAPE_H
#define RP_DELIVERY_SHAPE_H

#include <stdbool.h>
#include <stdint.h>

#include "queue/outcome.h"

#define DELIVERY_SHAPE_INITIAL   5     /* sessions before any has worked */
#define DELIVERY_SHAPE_QUIET_MS  30000 /* after a refusal: no growth, no recovery */
#define DELIVERY_SHAPE_DOUBLE_MS 100   /* slow start: sessions on their way double this often */
#define DELIVERY_SHAPE_STALL_MS  2000  /* a session connecting longer (at least) is stalled */

struct delivery_shape {
	double conc;            /* sessions worth having now (1 .. max_connections) */
	bool started;           /* a session has worked: conc applies */
	bool slow_start;        /* no refusal yet (shape_cap) */
	uint64_t slow_ms;       /* mono: when slow start began (the first session worked) */
	uint64_t quiet_ms;      /* mono: no growth before this */
	double rate;            /* messages per second cap from rate signals, 0 = none */
	uint64_t rate_ms;       /* mono: its last change */
	uint64_t rate_quiet_ms; /* mono: no recovery before this */
	double txn_ms;          /* a transaction, first command to last reply (EWMA) */
	double setup_ms;        /* a session, connect to ready after EHLO (EWMA) */
	uint64_t win_ms;        /* transactions counted since (mono) */
	unsigned win_n;
	double done_rate;  /* transactions per second, last full window */
	uint64_t refusals; /* sessions refused for concurrency */
	uint64_t rate_signals;
	uint64_t empty;  /* sessions that ended without a transaction */
	char why[160];   /* the last change and the reply behind it */
	uint64_t why_ms; /* unix ms */
};

/* shape_init - a new pool's state under max_connections max. */
void shape_init(struct delivery_shape *sh, unsigned max);
/* shape_cap - sessions the pool may have now (1 .. max), working of them
 * through EHLO. */
unsigned shape_cap(const struct delivery_shape *sh, unsigned max, unsigned working);
/* shape_wants - whether a new session pays off: have sessions (open and
 * connecting) and ready jobs. */
bool shape_wants(const struct delivery_shape *sh, unsigned have, uint64_t ready);
/* shape_stall_ms - how long a session may take to get through EHLO before
 * it no longer counts as on its way (a silent or tarpitting server holds
 * it for the greeting timeout): four times the usual set-up, at least
 * DELIVERY_SHAPE_STALL_MS. */
uint64_t shape_stall_ms(const struct delivery_shape *sh);
/* shape_ready - a session got through EHLO after setup_ms, open sessions
 * being open: grow. */
void shape_ready(struct delivery_shape *sh, unsigned max, unsigned open, uint64_t setup_ms);
/* shape_done - a transaction ended after duration_ms. */
void shape_done(struct delivery_shape *sh, uint64_t duration_ms);
/* shape_refused - a session was refused for concurrency while working
 * sessions were open: the concurrency drops to them (at least 1). */
void shape_refused(struct delivery_shape *sh, const char *dest, unsigned working,
                   const struct attempt_report *rep);
/* shape_rate_signal - the receiver said "too fast": cap the rate (under
 * configured, 0 = none). True when the cap changed. */
bool shape_rate_signal(struct delivery_shape *sh, const char *dest, double configured,
                       const struct attempt_report *rep);
/* shape_recover - after a quiet period, raise (or lift) the rate cap.
 * True when it changed. */
bool shape_recover(struct delivery_shape *sh, const char *dest, double configured);

#endif
