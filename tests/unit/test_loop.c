/* test_loop.c - the io_uring event loop (base/loop.c), run in the test's
 * thread: timers (order, disarm, re-arm, 10 ms resolution, a due timer
 * disarmed by another's callback), deferred calls, and functions pushed
 * through loop_inbox from other threads.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/util.h"
#include "base/loop.h"

static struct loop *new_loop(void)
{
	struct loop_config cfg = {
		.sq_entries = 64, .cq_entries = 256, .buf_count = 16, .buf_size = 4096
	};
	struct loop *l = loop_new(&cfg);
	cr_assert_not_null(l, "loop_new: %s", strerror(errno));
	cr_assert_eq(loop_registered(l), 0);
	return l;
}

struct tctx {
	struct loop *l;
	struct loop_timer t[4];
	struct loop_timer watchdog;
	uint64_t fired_at[4];
	int order[8];
	int nfired;
	int rearm_left;
	uint64_t start;
};

static struct tctx *tc; /* one test per process: this test's context */

static void watchdog(struct loop_timer *t)
{
	(void)t;
	cr_assert_fail("the loop did not finish in time");
}

static void fire(struct loop_timer *t)
{
	int i = (int)(t - tc->t);
	cr_assert(!loop_timer_armed(t), "a firing timer is disarmed");
	tc->fired_at[i] = rp_mono_ms();
	tc->order[tc->nfired++] = i;
	if (i == 2 && tc->rearm_left-- > 0) {
		loop_timer_arm(tc->l, t, 20, fire);
		return;
	}
	if (i == 2) {
		loop_timer_disarm(tc->l, &tc->watchdog);
		loop_stop(tc->l);
	}
}

Test(loop, timers)
{
	struct tctx c = { 0 };
	tc = &c;
	c.l = new_loop();
	c.start = rp_mono_ms();
	c.rearm_left = 2;
	loop_timer_arm(c.l, &c.watchdog, 5000, watchdog);
	loop_timer_arm(c.l, &c.t[0], 60, fire);
	loop_timer_arm(c.l, &c.t[1], 25, fire);
	loop_timer_arm(c.l, &c.t[3], 40, fire);
	loop_timer_arm(c.l, &c.t[2], 100, fire);
	cr_assert(loop_timer_armed(&c.t[3]));
	loop_timer_disarm(c.l, &c.t[3]);
	cr_assert_not(loop_timer_armed(&c.t[3]));
	loop_timer_disarm(c.l, &c.t[3]); /* twice is fine */
	/* Re-arming moves a timer rather than adding a second one. */
	loop_timer_arm(c.l, &c.t[0], 10, fire);
	loop_timer_arm(c.l, &c.t[0], 50, fire);
	loop_run(c.l);
	/* t1 (25), t0 (50), t2 (100), t2 again (120), t2 again (140). */
	cr_assert_eq(c.nfired, 5, "%d timers fired", c.nfired);
	static const int want[5] = { 1, 0, 2, 2, 2 };
	for (int i = 0; i < 5; i++)
		cr_assert_eq(c.order[i], want[i], "fire %d was timer %d", i, c.order[i]);
	cr_assert_geq(c.fired_at[1] - c.start, 25);
	cr_assert_geq(c.fired_at[0] - c.start, 50);
	cr_assert_geq(c.fired_at[2] - c.start, 140);
	cr_assert_lt(c.fired_at[2] - c.start, 2000);
	cr_assert_eq(c.fired_at[3], 0, "a disarmed timer never fires");
	cr_assert_geq(loop_now_ms(c.l), c.fired_at[1] - 1);
	loop_free(c.l);
}

/* Two timers due in the same tick: whichever fires first disarms the
 * other (as a session closing another would), which must then not fire. */
struct sctx {
	struct loop *l;
	struct loop_timer a, b, stop, watchdog;
	int fired;
};

static struct sctx *sc;

static void disarm_other(struct loop_timer *t)
{
	sc->fired++;
	loop_timer_disarm(sc->l, t == &sc->a ? &sc->b : &sc->a);
}

static void stop_now(struct loop_timer *t)
{
	(void)t;
	loop_timer_disarm(sc->l, &sc->watchdog);
	loop_stop(sc->l);
}

Test(loop, a_due_timer_disarmed_by_another_does_not_fire)
{
	struct sctx c = { 0 };
	sc = &c;
	c.l = new_loop();
	loop_timer_arm(c.l, &c.watchdog, 5000, watchdog);
	loop_timer_arm(c.l, &c.a, 20, disarm_other);
	loop_timer_arm(c.l, &c.b, 20, disarm_other);
	loop_timer_arm(c.l, &c.stop, 100, stop_now);
	loop_run(c.l);
	cr_assert_eq(c.fired, 1, "%d of the two timers fired", c.fired);
	cr_assert_not(loop_timer_armed(&c.a) || loop_timer_armed(&c.b));
	loop_free(c.l);
}

struct dctx {
	struct loop *l;
	struct loop_defer a, b;
	struct loop_timer t;
	int runs_a, runs_b;
	int order[4];
	int n;
};

static struct dctx *dc;

static void defer_b(struct loop_defer *d)
{
	(void)d;
	dc->runs_b++;
	dc->order[dc->n++] = 2;
	loop_stop(dc->l);
}

static void defer_a(struct loop_defer *d)
{
	(void)d;
	dc->runs_a++;
	dc->order[dc->n++] = 1;
	/* Queued while running: runs in the same pass. */
	loop_defer(dc->l, &dc->b, defer_b);
}

static void timer_defers(struct loop_timer *t)
{
	(void)t;
	loop_defer(dc->l, &dc->a, defer_a);
	loop_defer(dc->l, &dc->a, defer_a); /* already queued: once */
	loop_defer(dc->l, &dc->b, defer_b);
	loop_defer_cancel(dc->l, &dc->b); /* cancelled: only a's re-queue runs b */
	cr_assert_not(dc->b.queued);
}

Test(loop, deferred_calls)
{
	struct dctx c = { 0 };
	dc = &c;
	c.l = new_loop();
	loop_timer_arm(c.l, &c.t, 10, timer_defers);
	loop_run(c.l);
	cr_assert_eq(c.runs_a, 1);
	cr_assert_eq(c.runs_b, 1);
	cr_assert_eq(c.n, 2);
	cr_assert_eq(c.order[0], 1);
	cr_assert_eq(c.order[1], 2);
	loop_free(c.l);
}

struct ictx {
	struct loop *l;
	pthread_t loop_thread;
	int ran;
	int from_thread_ok;
};

struct inbox_item {
	struct mq_item item;
	struct ictx *c;
};

#define PUSHERS    3
#define PER_PUSHER 200

static void inbox_fn(struct mq_item *item, void *consumer_ctx)
{
	struct inbox_item *it = RP_CONTAINER_OF(item, struct inbox_item, item);
	struct ictx *c = it->c;
	cr_assert_eq(consumer_ctx, c->l, "the consumer context is the loop");
	c->from_thread_ok += pthread_equal(pthread_self(), c->loop_thread) != 0;
	if (++c->ran == PUSHERS * PER_PUSHER)
		loop_stop(c->l);
	free(it);
}

static void *pusher(void *arg)
{
	struct ictx *c = arg;
	usleep(20000); /* let the loop go to sleep first */
	for (int i = 0; i < PER_PUSHER; i++) {
		struct inbox_item *it = xcalloc(1, sizeof(*it));
		it->c = c;
		mq_push(loop_inbox(c->l), &it->item, inbox_fn);
		if (i % 50 == 0)
			usleep(2000);
	}
	return NULL;
}

/* No timer is armed: only the inbox's eventfd can wake the loop. */
Test(loop, inbox_from_other_threads, .timeout = 20)
{
	struct ictx c = { 0 };
	c.l = new_loop();
	c.loop_thread = pthread_self();
	pthread_t t[PUSHERS];
	for (int i = 0; i < PUSHERS; i++)
		cr_assert_eq(pthread_create(&t[i], NULL, pusher, &c), 0);
	loop_run(c.l);
	for (int i = 0; i < PUSHERS; i++)
		pthread_join(t[i], NULL);
	cr_assert_eq(c.ran, PUSHERS * PER_PUSHER);
	cr_assert_eq(c.from_thread_ok, c.ran, "every function ran on the loop's thread");
	cr_assert_eq(loop_registered(c.l), 0);
	loop_free(c.l);
}

struct counted_item {
	struct mq_item item;
	int ran;
};

static void count_run(struct mq_item *item, void *consumer_ctx)
{
	(void)consumer_ctx;
	RP_CONTAINER_OF(item, struct counted_item, item)->ran++;
}

Test(loop, free_runs_what_is_left_in_the_inbox)
{
	struct loop *l = new_loop();
	struct counted_item it = { .ran = 0 };
	mq_push(loop_inbox(l), &it.item, count_run);
	loop_free(l);
	cr_assert_eq(it.ran, 1, "queued functions still run (they may own memory)");
}
