/* test_mq.c - the MPSC queue between threads (base/mq.c): push order, the
 * eventfd doorbell (rung once per empty-to-non-empty), mq_run, mq_wait, and
 * several producer threads at once: FIFO per producer, nothing lost.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#include "base/mq.h"
#include "base/util.h"

struct item {
	struct mq_item link;
	unsigned producer;
	unsigned seq;
};

/* doorbell - read the eventfd without blocking: its counter, or 0. */
static uint64_t doorbell(struct mq *q)
{
	uint64_t v = 0;
	ssize_t n = read(q->efd, &v, sizeof(v));
	if (n < 0) {
		cr_assert_eq(errno, EAGAIN);
		return 0;
	}
	cr_assert_eq(n, (ssize_t)sizeof(v));
	return v;
}

static void noop(struct mq_item *it, void *ctx)
{
	(void)it;
	(void)ctx;
}

Test(mq, push_take_order_and_doorbell)
{
	struct mq q;
	cr_assert(mq_init(&q, false));
	cr_assert_eq(doorbell(&q), 0, "nothing pushed yet");
	cr_assert_null(mq_take(&q));
	struct item it[5];
	for (unsigned i = 0; i < 5; i++) {
		it[i].seq = i;
		mq_push(&q, &it[i].link, noop);
	}
	cr_assert_eq(doorbell(&q), 1, "one ring for the first push only");
	struct mq_item *l = mq_take(&q);
	for (unsigned i = 0; i < 5; i++) {
		cr_assert_not_null(l);
		struct item *x = RP_CONTAINER_OF(l, struct item, link);
		cr_assert_eq(x->seq, i, "oldest first");
		cr_assert_eq(l->fn, noop);
		l = l->next;
	}
	cr_assert_null(l);
	cr_assert_null(mq_take(&q), "take empties the queue");
	/* The next push onto the empty queue rings again. */
	mq_push(&q, &it[0].link, noop);
	cr_assert_eq(doorbell(&q), 1);
	cr_assert_eq(mq_take(&q), &it[0].link);
	mq_destroy(&q);
	cr_assert_eq(q.efd, -1);
}

struct run_ctx {
	unsigned order[8];
	unsigned n;
	struct mq *q;
	struct item *again;
};

static void record(struct mq_item *it, void *ctx)
{
	struct run_ctx *c = ctx;
	struct item *x = RP_CONTAINER_OF(it, struct item, link);
	cr_assert_null(it->next, "the item is unlinked before it runs");
	c->order[c->n++] = x->seq;
	/* An item may queue more work; it runs in the next mq_run. */
	if (c->again) {
		struct item *a = c->again;
		c->again = NULL;
		mq_push(c->q, &a->link, record);
	}
}

Test(mq, run_in_order)
{
	struct mq q;
	cr_assert(mq_init(&q, false));
	struct item it[4];
	struct run_ctx ctx = { .q = &q, .again = &it[3] };
	for (unsigned i = 0; i < 4; i++)
		it[i].seq = i;
	for (unsigned i = 0; i < 3; i++)
		mq_push(&q, &it[i].link, record);
	cr_assert_eq(mq_run(&q, &ctx), 3);
	cr_assert_eq(ctx.n, 3);
	cr_assert_eq(ctx.order[0], 0);
	cr_assert_eq(ctx.order[1], 1);
	cr_assert_eq(ctx.order[2], 2);
	cr_assert_eq(mq_run(&q, &ctx), 1, "the re-pushed item waits for the next run");
	cr_assert_eq(ctx.order[3], 3);
	cr_assert_eq(mq_run(&q, &ctx), 0);
	mq_destroy(&q);
}

struct blocking_ctx {
	struct mq *q;
	struct item it;
};

static void *push_later(void *arg)
{
	struct blocking_ctx *b = arg;
	usleep(20000);
	mq_push(b->q, &b->it.link, noop);
	return NULL;
}

Test(mq, wait_blocks_until_push)
{
	struct mq q;
	cr_assert(mq_init(&q, true));
	struct blocking_ctx b = { .q = &q };
	pthread_t t;
	uint64_t start = rp_mono_ms();
	cr_assert_eq(pthread_create(&t, NULL, push_later, &b), 0);
	mq_wait(&q);
	cr_assert_geq(rp_mono_ms() - start, 10, "returned before the push");
	cr_assert_eq(mq_take(&q), &b.it.link);
	pthread_join(t, NULL);
	mq_destroy(&q);
}

#define PRODUCERS    4
#define PER_PRODUCER 50000

struct producer {
	struct mq *q;
	unsigned id;
	struct item *items;
};

static void *produce(void *arg)
{
	struct producer *p = arg;
	for (unsigned i = 0; i < PER_PRODUCER; i++) {
		p->items[i].producer = p->id;
		p->items[i].seq = i;
		mq_push(p->q, &p->items[i].link, noop);
		if (i % 4096 == 0)
			sched_yield();
	}
	return NULL;
}

Test(mq, many_producers_fifo_nothing_lost, .timeout = 30)
{
	struct mq q;
	cr_assert(mq_init(&q, false));
	struct producer p[PRODUCERS];
	pthread_t t[PRODUCERS];
	unsigned next[PRODUCERS] = { 0 };
	for (unsigned i = 0; i < PRODUCERS; i++) {
		p[i] = (struct producer){ .q = &q, .id = i };
		p[i].items = calloc(PER_PRODUCER, sizeof(struct item));
		cr_assert_not_null(p[i].items);
		cr_assert_eq(pthread_create(&t[i], NULL, produce, &p[i]), 0);
	}
	unsigned total = 0, wakeups = 0;
	while (total < PRODUCERS * PER_PRODUCER) {
		/* Like an event loop: wait for the bell, read it, then take. */
		struct pollfd pfd = { .fd = q.efd, .events = POLLIN };
		int rc = poll(&pfd, 1, 5000);
		cr_assert_eq(rc, 1, "the doorbell must ring while items are missing (%u of %u)",
		             total, PRODUCERS * PER_PRODUCER);
		cr_assert_gt(doorbell(&q), 0);
		wakeups++;
		for (struct mq_item *l = mq_take(&q); l; l = l->next) {
			struct item *x = RP_CONTAINER_OF(l, struct item, link);
			cr_assert_lt(x->producer, PRODUCERS);
			cr_assert_eq(x->seq, next[x->producer], "producer %u: got %u, want %u",
			             x->producer, x->seq, next[x->producer]);
			next[x->producer]++;
			total++;
		}
	}
	for (unsigned i = 0; i < PRODUCERS; i++) {
		pthread_join(t[i], NULL);
		cr_assert_eq(next[i], PER_PRODUCER);
	}
	cr_assert_null(mq_take(&q), "nothing extra");
	cr_assert_gt(wakeups, 0);
	for (unsigned i = 0; i < PRODUCERS; i++)
		free(p[i].items);
	mq_destroy(&q);
}
