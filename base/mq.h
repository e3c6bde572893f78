/* mq.h - multi-producer, single-consumer message queue between threads.
 *
 * Producers push intrusive items from any thread without locks; the one
 * consumer takes everything at once, in push order. An eventfd tells the
 * consumer that the queue went from empty to non-empty: an event loop reads
 * it through its ring, a plain thread blocks in mq_wait. Items are owned by
 * whoever pushed them until the consumer runs them.
 */
#ifndef RP_MQ_H
#define RP_MQ_H

#include <stdatomic.h>
#include <stdbool.h>

struct mq_item;
/* mq_fn - run by the consumer for each item it takes. */
typedef void (*mq_fn)(struct mq_item *item, void *consumer_ctx);

struct mq_item {
	struct mq_item *next; /* link, owned by the queue while queued */
	mq_fn fn;             /* what the consumer does with the item */
};

struct mq {
	_Atomic(struct mq_item *) head; /* newest first */
	int efd;                        /* eventfd, non-blocking unless mq_init(..., true) */
};

/* mq_init - create the eventfd; blocking selects a blocking read for mq_wait.
 * Returns false (errno set) when no eventfd can be made. */
bool mq_init(struct mq *q, bool blocking);
/* mq_destroy - close the eventfd; the queue must be empty. */
void mq_destroy(struct mq *q);
/* mq_push - queue item with fn (any thread); wakes the consumer when needed. */
void mq_push(struct mq *q, struct mq_item *item, mq_fn fn);
/* mq_take - detach every queued item, oldest first (consumer only). */
struct mq_item *mq_take(struct mq *q);
/* mq_run - take and run every queued item; returns how many ran. */
unsigned mq_run(struct mq *q, void *consumer_ctx);
/* mq_wait - block until a push happens (blocking queues only). */
void mq_wait(struct mq *q);

#endif
