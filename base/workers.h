/* workers.h - a small pool of threads for work that must stay off the
 * event loops (password hashes, DKIM signatures).
 *
 * Items are pushed round robin onto the threads' own message queues (mq.h)
 * and run there by their mq_fn, in push order per thread; an item answers
 * its asker itself (usually by pushing a reply onto the asker's inbox).
 * workers_free runs everything queued so far, then stops the threads.
 */
#ifndef RP_WORKERS_H
#define RP_WORKERS_H

#include "mq.h"

struct workers;

/* workers_new - start n threads (at least one), named name in the log. */
struct workers *workers_new(const char *name, unsigned n);
/* workers_free - finish the queued items, stop and join the threads. */
void workers_free(struct workers *w);
/* workers_push - run fn(item, NULL) on one of the threads (any thread). */
void workers_push(struct workers *w, struct mq_item *item, mq_fn fn);
/* workers_count - how many threads there are. */
unsigned workers_count(const struct workers *w);

#endif
