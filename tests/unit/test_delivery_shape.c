/* test_delivery_shape.c - a destination's effective concurrency and rate
 * (relay/delivery_shape.c): slow start, the drop on a refusal and the quiet
 * period, sessions from demand, when a connecting session is stalled, the
 * rate cap and its recovery.
 */
#include <criterion/criterion.h>
#include <string.h>

#include "relay/delivery_shape.h"

static struct attempt_report refusal(const char *text)
{
	struct attempt_report rep;
	outcome_report_set(&rep, ATTEMPT_REPLY, STAGE_GREETING, 421, text);
	return rep;
}

Test(shape, slow_start_then_drop_and_hold)
{
	struct delivery_shape sh;
	shape_init(&sh, 100);
	cr_assert_eq(shape_cap(&sh, 100, 0), 100, "no cap before a session has worked");
	shape_ready(&sh, 100, 1, 50);
	cr_assert_eq(shape_cap(&sh, 100, 1), 1 + DELIVERY_SHAPE_INITIAL,
	             "the initial few on the way");
	cr_assert_eq(shape_cap(&sh, 100, 10), 20, "slow start: as many on the way as working");
	cr_assert_eq(shape_cap(&sh, 12, 10), 12, "never past max_connections");
	sh.slow_ms -= 3 * DELIVERY_SHAPE_DOUBLE_MS; /* 300 ms without a refusal */
	cr_assert_eq(shape_cap(&sh, 1000, 10), 10 + 80, "twice as many on the way per 100 ms");
	struct attempt_report rep = refusal("421 4.7.0 Too many concurrent connections");
	shape_refused(&sh, "d.test", 5, &rep);
	cr_assert_eq(shape_cap(&sh, 100, 5), 5, "down to the sessions that work");
	cr_assert(strstr(sh.why, "Too many concurrent"), "%s", sh.why);
	cr_assert_eq(sh.refusals, 1);
	for (int i = 0; i < 10; i++)
		shape_ready(&sh, 100, 5, 50);
	cr_assert_eq(shape_cap(&sh, 100, 5), 5, "no growth in the quiet period");
	sh.quiet_ms = 0;
	for (int i = 0; i < 10; i++)
		shape_ready(&sh, 100, 5, 50);
	cr_assert_eq(shape_cap(&sh, 100, 5), 6, "then 1/concurrency per working session");
	shape_refused(&sh, "d.test", 0, &rep);
	cr_assert_eq(shape_cap(&sh, 100, 0), 1, "never below one");
}

Test(shape, sessions_from_demand)
{
	struct delivery_shape sh;
	shape_init(&sh, 100);
	cr_assert(shape_wants(&sh, 0, 1), "the first session for any work");
	cr_assert_not(shape_wants(&sh, 0, 0));
	cr_assert(shape_wants(&sh, 3, 4), "unmeasured: one session per ready job");
	cr_assert_not(shape_wants(&sh, 4, 4));
	/* A greeting of 300 ms, transactions of 5 ms: a session carries 60
	 * jobs in the time a new one gets ready. */
	shape_ready(&sh, 100, 1, 300);
	cr_assert_not(shape_wants(&sh, 5, 300), "no transaction measured yet: wait a moment");
	sh.slow_ms -= DELIVERY_SHAPE_DOUBLE_MS;
	cr_assert(shape_wants(&sh, 5, 300), "no transaction after a while: slow ones, open");
	shape_done(&sh, 5);
	cr_assert_not(shape_wants(&sh, 5, 300), "5 sessions carry 300 jobs");
	cr_assert(shape_wants(&sh, 4, 300), "4 would be slower than a new one");
	/* Slow transactions, fast set-up: one session per job again. */
	struct delivery_shape fast;
	shape_init(&fast, 100);
	shape_ready(&fast, 100, 1, 10);
	shape_done(&fast, 2000);
	fast.slow_ms = 0;
	cr_assert(shape_wants(&fast, 40, 41));
}

Test(shape, rate_cap_and_recovery)
{
	struct delivery_shape sh;
	shape_init(&sh, 100);
	struct attempt_report rep;
	outcome_report_set(&rep, ATTEMPT_REPLY, STAGE_MAIL, 451, "451 4.7.1 Rate limited");
	cr_assert(shape_rate_signal(&sh, "d.test", 0, &rep));
	cr_assert_float_eq(sh.rate, 7.0, 1e-9, "70%% of the 10/s assumed with nothing measured");
	cr_assert_not(shape_rate_signal(&sh, "d.test", 0, &rep), "at most once a second");
	cr_assert_eq(sh.rate_signals, 2);
	struct delivery_shape capped;
	shape_init(&capped, 100);
	cr_assert(shape_rate_signal(&capped, "d.test", 2.0, &rep));
	cr_assert_float_eq(capped.rate, 1.4, 1e-9, "under the configured rate");
	cr_assert_not(shape_recover(&sh, "d.test", 0), "quiet period first");
	/* Pretend the quiet period and the step have passed. */
	sh.rate_quiet_ms = 0;
	sh.rate_ms = 1;
	cr_assert(shape_recover(&sh, "d.test", 0));
	cr_assert_float_eq(sh.rate, 8.75, 1e-9);
	sh.rate_ms = 1;
	cr_assert(shape_recover(&sh, "d.test", 9.0), "lifted at the configured rate");
	cr_assert_float_eq(sh.rate, 0.0, 1e-9);
}

Test(shape, stalled_after_four_set_ups)
{
	struct delivery_shape sh;
	shape_init(&sh, 100);
	cr_assert_eq(shape_stall_ms(&sh), DELIVERY_SHAPE_STALL_MS, "nothing measured: the floor");
	shape_ready(&sh, 100, 1, 300);
	cr_assert_eq(shape_stall_ms(&sh), DELIVERY_SHAPE_STALL_MS, "4 x 300 ms is under the floor");
	sh.setup_ms = 1500;
	cr_assert_eq(shape_stall_ms(&sh), 6000, "a slow receiver's sessions get four set-ups");
}
