/* mq.c - lock-free MPSC queue with an eventfd doorbell (see mq.h).
 *
 * A Treiber stack: producers CAS onto head; the consumer swaps head with NULL
 * and reverses the chain. There is no ABA problem because the consumer only
 * ever detaches the whole stack. The doorbell rings only when a push finds
 * the stack empty; every item pushed onto a non-empty stack rides with the
 * item whose push rang, and the consumer always takes after reading the bell.
 */
#include "mq.h"

#include <errno.h>
#include <stdint.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "util.h"

bool mq_init(struct mq *q, bool blocking)
{
	atomic_init(&q->head, NULL);
	q->efd = eventfd(0, EFD_CLOEXEC | (blocking ? 0 : EFD_NONBLOCK));
	return q->efd >= 0;
}

void mq_destroy(struct mq *q)
{
	rp_assert(atomic_load(&q->head) == NULL);
	if (q->efd >= 0)
		close(q->efd);
	q->efd = -1;
}

void mq_push(struct mq *q, struct mq_item *item, mq_fn fn)
{
	struct mq_item *old = atomic_load_explicit(&q->head, memory_order_relaxed);
	item->fn = fn;
	do {
		item->next = old;
	} while (!atomic_compare_exchange_weak_explicit(&q->head, &old, item, memory_order_release,
	                                                memory_order_relaxed));
	if (!old) {
		uint64_t one = 1;
		ssize_t n;
		do {
			n = write(q->efd, &one, sizeof(one));
		} while (n < 0 && errno == EINTR);
		/* EAGAIN means the counter is saturated: the consumer is already due. */
	}
}

struct mq_item *mq_take(struct mq *q)
{
	struct mq_item *list = atomic_exchange_explicit(&q->head, NULL, memory_order_acquire);
	struct mq_item *rev = NULL;
	while (list) {
		struct mq_item *next = list->next;
		list->next = rev;
		rev = list;
		list = next;
	}
	return rev;
}

unsigned mq_run(struct mq *q, void *consumer_ctx)
{
	unsigned n = 0;
	struct mq_item *it = mq_take(q);
	while (it) {
		struct mq_item *next = it->next;
		it->next = NULL;
		it->fn(it, consumer_ctx); /* may free or re-push it */
		it = next;
		n++;
	}
	return n;
}

void mq_wait(struct mq *q)
{
	uint64_t v;
	while (read(q->efd, &v, sizeof(v)) < 0 && errno == EINTR)
		;
}
