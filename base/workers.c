/* workers.c - a pool of blocking threads fed by message queues (see
 * workers.h). Each thread sleeps in mq_wait on its own queue; stopping is
 * a flag plus one wake-up item per thread. */
#include "workers.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "util.h"

struct worker {
	struct workers *pool;
	pthread_t thread;
	struct mq inbox;
};

struct workers {
	struct worker *w;
	unsigned n;
	_Atomic unsigned next; /* round robin */
	_Atomic bool stopping;
	char name[16];
};

/* wake - the stop's doorbell: an item that is only freed. */
static void wake(struct mq_item *item, void *ctx)
{
	(void)ctx;
	free(item);
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	log_set_thread(w->pool->name);
	for (;;) {
		struct mq_item *list = mq_take(&w->inbox);
		if (!list) {
			if (atomic_load(&w->pool->stopping))
				break;
			mq_wait(&w->inbox);
			continue;
		}
		while (list) {
			struct mq_item *next = list->next; /* fn may free or reuse list */
			list->fn(list, NULL);
			list = next;
		}
	}
	return NULL;
}

struct workers *workers_new(const char *name, unsigned n)
{
	struct workers *p = xcalloc(1, sizeof(*p));
	p->n = n ? n : 1;
	snprintf(p->name, sizeof(p->name), "%s", name);
	p->w = xcalloc(p->n, sizeof(*p->w));
	for (unsigned i = 0; i < p->n; i++) {
		struct worker *w = &p->w[i];
		w->pool = p;
		if (!mq_init(&w->inbox, true))
			rp_panic("eventfd: %s", strerror(errno));
		int rc = pthread_create(&w->thread, NULL, worker_main, w);
		if (rc)
			rp_panic("cannot start a %s thread: %s", name, strerror(rc));
	}
	return p;
}

void workers_free(struct workers *p)
{
	if (!p)
		return;
	atomic_store(&p->stopping, true);
	for (unsigned i = 0; i < p->n; i++)
		mq_push(&p->w[i].inbox, xcalloc(1, sizeof(struct mq_item)), wake);
	for (unsigned i = 0; i < p->n; i++) {
		pthread_join(p->w[i].thread, NULL);
		/* The wake-up may still be queued (the thread saw an empty queue
		 * and the flag first): run what is left, which only frees it. */
		mq_run(&p->w[i].inbox, NULL);
		mq_destroy(&p->w[i].inbox);
	}
	free(p->w);
	free(p);
}

void workers_push(struct workers *p, struct mq_item *item, mq_fn fn)
{
	unsigned i = atomic_fetch_add(&p->next, 1) % p->n;
	mq_push(&p->w[i].inbox, item, fn);
}

unsigned workers_count(const struct workers *p)
{
	return p->n;
}
