/* delivery.h - outbound delivery: connection pools per destination.
 *
 * The glue between a shard's scheduler and its SMTP client sessions. For
 * each destination it keeps a pool: sessions connecting, busy and idle. The
 * scheduler's kick hands jobs to idle sessions and opens new ones within the
 * destination's limits; a session that finishes a job asks for the next one
 * (connection reuse) or idles, and closes after a short idle time.
 * Destination addresses come from static routes (and, later, DNS).
 */
#ifndef RP_DELIVERY_H
#define RP_DELIVERY_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "queue/sched.h"

struct shard;
struct smtp_client;

/* A destination's connection pool (sched_dest->owner). */
struct delivery_pool {
	struct sched_dest *dest;
	struct smtp_client *idle;     /* idle sessions, most recent first */
	unsigned nidle;
	unsigned nconnecting;         /* sessions that have not pulled a job yet */
	unsigned nworking;            /* sessions past EHLO: the destination works */
	unsigned nsessions;
};

/* delivery_sched_ops - the scheduler callbacks for a shard. */
extern const struct sched_ops delivery_sched_ops;

/* delivery_next - a session of pool is ready for work: returns a job, or
 * NULL (the session should idle or quit). */
struct sched_job *delivery_next(struct shard *sh, struct delivery_pool *pool);
/* delivery_idle - a session has no job: park it in the pool's idle list. */
void delivery_idle(struct shard *sh, struct delivery_pool *pool, struct smtp_client *c);
/* delivery_unidle - take c out of the idle list (closing or given work). */
void delivery_unidle(struct delivery_pool *pool, struct smtp_client *c);
/* delivery_session_gone - a session ended (after its last completion);
 * was_connecting when it never got as far as asking for work. */
void delivery_session_gone(struct shard *sh, struct delivery_pool *pool, bool was_connecting);
/* delivery_free_pools - free every pool of sh (shutdown, no sessions left). */
void delivery_free_pools(struct shard *sh);

#endif
