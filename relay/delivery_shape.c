/* delivery_shape.c - how many sessions a destination gets, and how fast its
 * mail goes, from what it does (see delivery_shape.h).
 *
 * Concurrency: until a session has worked, the scheduler's initial limit
 * per domain (SCHED_INITIAL_CONNECTIONS) holds; then, in slow start, a
 * pool may have as many sessions on their way as it has working ones (at
 * least DELIVERY_SHAPE_INITIAL), that number doubling every
 * DELIVERY_SHAPE_DOUBLE_MS, until the receiver first refuses a session
 * for having too many. Then it drops to the sessions that work, holds still
 * for DELIVERY_SHAPE_QUIET_MS, and grows by 1 / concurrency per working
 * session after that (Postfix's destination concurrency feedback).
 * max_connections stays the bound.
 *
 * Demand: a new session is opened only when the ready work would keep the
 * sessions there (open and connecting) busy for longer than a new one
 * takes to get ready: ready jobs > sessions x (set-up time / transaction
 * time), both measured (EWMA). A slow greeting therefore means few
 * sessions that each carry many messages, not one empty session per job.
 *
 * Rate: a rate signal (outcome_signal_of) caps the destination at 70% of
 * what it was getting (or of its cap), at most once a second; after
 * DELIVERY_SHAPE_QUIET_MS without one the cap rises by a quarter every
 * 10 s and is lifted above the configured rate (or 10,000/s).
 */
#include <stdio.h>
#include <string.h>

#include "delivery_shape.h"
#include "base/log.h"
#include "base/util.h"

#define EWMA_NEW     0.3
#define RATE_STEP_MS 1000  /* at most one rate cut a second */
#define RATE_RISE_MS 10000 /* recovery: a step this often */
#define RATE_LIFT    10000.0

void shape_init(struct delivery_shape *sh, unsigned max)
{
	memset(sh, 0, sizeof(*sh));
	sh->conc = RP_MIN((double)DELIVERY_SHAPE_INITIAL, (double)(max ? max : 1));
	sh->slow_start = true;
}

unsigned shape_cap(const struct delivery_shape *sh, unsigned max, unsigned working)
{
	if (!sh->started)
		return max ? max : 1; /* the scheduler's initial limit per domain holds */
	if (sh->slow_start) {
		/* Slow start: as many sessions on their way as are working (at
		 * least a few), and twice that for every 100 ms without a
		 * refusal: a receiver that refuses at once costs a handful of
		 * connections, one whose set-up takes seconds is not held back
		 * for rounds of it. */
		uint64_t t = (rp_mono_ms() - sh->slow_ms) / DELIVERY_SHAPE_DOUBLE_MS;
		uint64_t fly = (uint64_t)RP_MAX(working, (unsigned)DELIVERY_SHAPE_INITIAL)
		               << RP_MIN(t, (uint64_t)20);
		return (unsigned)RP_MIN((uint64_t)working + fly, (uint64_t)(max ? max : 1));
	}
	unsigned c = (unsigned)sh->conc; /* conc >= 0: truncation is floor */
	if (c < 1)
		c = 1;
	return RP_MIN(c, max ? max : 1);
}

bool shape_wants(const struct delivery_shape *sh, unsigned have, uint64_t ready)
{
	if (!have)
		return ready > 0;
	/* A session works but no transaction has ended yet: how much a
	 * session carries is unknown. A fast receiver's first transaction
	 * ends within DELIVERY_SHAPE_DOUBLE_MS (and kicks the pool); past
	 * that, transactions are slow and more sessions pay. */
	if (sh->started && sh->txn_ms <= 0 && rp_mono_ms() - sh->slow_ms < DELIVERY_SHAPE_DOUBLE_MS)
		return false;
	double per = 1.0;
	if (sh->txn_ms > 0 && sh->setup_ms > 0)
		per = RP_MAX(1.0, sh->setup_ms / sh->txn_ms);
	return (double)ready > (double)have * per;
}

uint64_t shape_stall_ms(const struct delivery_shape *sh)
{
	return RP_MAX((uint64_t)DELIVERY_SHAPE_STALL_MS, (uint64_t)(4.0 * sh->setup_ms));
}

static double ewma(double old, double v)
{
	return old > 0 ? old + EWMA_NEW * (v - old) : v;
}

void shape_ready(struct delivery_shape *sh, unsigned max, unsigned open, uint64_t setup_ms)
{
	sh->setup_ms = ewma(sh->setup_ms, (double)RP_MAX(setup_ms, (uint64_t)1));
	if (!sh->started) {
		/* The first session that works: the pool starts from what it
		 * has open (each domain's first sessions) or the initial few. */
		sh->started = true;
		sh->slow_ms = rp_mono_ms();
		sh->conc = RP_MAX(sh->conc, (double)open);
	}
	if (sh->slow_start) {
		sh->conc = RP_MIN(RP_MAX(sh->conc, (double)open), (double)(max ? max : 1));
		return;
	}
	if (rp_mono_ms() < sh->quiet_ms)
		return;
	sh->conc = RP_MIN(sh->conc + 1.0 / RP_MAX(sh->conc, 1.0), (double)(max ? max : 1));
}

void shape_done(struct delivery_shape *sh, uint64_t duration_ms)
{
	sh->txn_ms = ewma(sh->txn_ms, (double)RP_MAX(duration_ms, (uint64_t)1));
	uint64_t now = rp_mono_ms();
	if (now - sh->win_ms >= 1000) {
		if (sh->win_ms)
			sh->done_rate = (double)sh->win_n * 1000.0 / (double)(now - sh->win_ms);
		sh->win_ms = now;
		sh->win_n = 0;
	}
	sh->win_n++;
}

static void say(struct delivery_shape *sh, const char *dest, const char *what, double from,
                double to, const struct attempt_report *rep)
{
	snprintf(sh->why, sizeof(sh->why), "%s %.1f -> %.1f: %.100s", what, from, to, rep->text);
	sh->why_ms = rp_now_ms();
	char reply[LOG_VALUE_MAX];
	log_quote(reply, sizeof(reply), rep->text, strlen(rep->text));
	log_info("shaping dest=%s %s=%.1f->%.1f reply=%s", dest, what, from, to, reply);
}

void shape_refused(struct delivery_shape *sh, const char *dest, unsigned working,
                   const struct attempt_report *rep)
{
	double to = RP_MAX(1.0, (double)working);
	bool first = sh->slow_start;
	sh->refusals++;
	sh->slow_start = false;
	sh->quiet_ms = rp_mono_ms() + DELIVERY_SHAPE_QUIET_MS;
	if (to < sh->conc || first) {
		say(sh, dest, "concurrency", sh->conc, to, rep);
		sh->conc = to;
	}
}

bool shape_rate_signal(struct delivery_shape *sh, const char *dest, double configured,
                       const struct attempt_report *rep)
{
	uint64_t now = rp_mono_ms();
	sh->rate_signals++;
	sh->rate_quiet_ms = now + DELIVERY_SHAPE_QUIET_MS;
	if (sh->rate_ms && now - sh->rate_ms < RATE_STEP_MS)
		return false;
	double base = sh->rate > 0 ? sh->rate : sh->done_rate > 0 ? sh->done_rate : 10.0;
	if (configured > 0 && base > configured)
		base = configured;
	double to = RP_MAX(0.5, base * 0.7);
	say(sh, dest, "rate", sh->rate, to, rep);
	sh->rate = to;
	sh->rate_ms = now;
	return true;
}

bool shape_recover(struct delivery_shape *sh, const char *dest, double configured)
{
	uint64_t now = rp_mono_ms();
	if (sh->rate <= 0 || now < sh->rate_quiet_ms || now - sh->rate_ms < RATE_RISE_MS)
		return false;
	double to = sh->rate * 1.25;
	sh->rate_ms = now;
	if ((configured > 0 && to >= configured) || to >= RATE_LIFT) {
		log_info("shaping dest=%s rate cap lifted (was %.1f/s)", dest, sh->rate);
		snprintf(sh->why, sizeof(sh->why), "rate cap lifted after a quiet period");
		sh->why_ms = rp_now_ms();
		sh->rate = 0;
		return true;
	}
	log_info("shaping dest=%s rate=%.1f->%.1f (quiet)", dest, sh->rate, to);
	sh->rate = to;
	return true;
}
