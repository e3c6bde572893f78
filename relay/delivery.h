/* delivery.h - outbound delivery: routes per domain, connection pools per
 * destination.
 *
 * The glue between a shard's scheduler and its SMTP client sessions. Each
 * domain (sched_dest) gets a route: a static route, a domain literal, or a
 * DNS answer (MX, implicit MX) from dns/. Domains whose routes lead to the
 * same next hops share one pool (one set of sessions and one connection
 * limit), as the many domains a large provider hosts do; stats show both
 * the domain and the destination view. The scheduler's kick hands jobs to
 * idle sessions of the pool and opens new sessions within the limits; a
 * session that finishes a job takes the next from any domain of its pool.
 * A session that cannot connect, or is refused at the greeting, tries the
 * next exchanger before the destination is deferred.
 */
#ifndef RP_DELIVERY_H
#define RP_DELIVERY_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "dns/dns.h"
#include "queue/sched.h"

struct shard;
struct smtp_client;

/* A destination: a set of next hops and the sessions to it. */
struct delivery_pool {
	char *key;                   /* "mx:a.example,b.example>c.example:25", ... */
	struct delivery_pool *hnext; /* shard's pool table */
	struct dns_result *hops;     /* where to connect (ref); refreshed with the DNS */
	uint16_t port;
	struct sched_dest **members; /* domains routed here */
	unsigned nmembers, members_cap;
	struct delivery_route *active; /* members with ready work, a ring: the
				      * next job comes from the head */
	unsigned rr_hop;             /* spreads sessions over equal-preference hops */
	struct smtp_client *idle;    /* idle sessions, most recent first */
	unsigned nidle;
	unsigned nworking;           /* sessions past EHLO: the destination works */
	unsigned nsessions;
	uint32_t max_connections;    /* the smallest of the members' limits */
	uint64_t used_ms;            /* last time it had members or sessions */
};

/* A domain's way out (sched_dest->owner). */
struct delivery_route {
	struct sched_dest *dest;
	struct delivery_pool *pool;  /* NULL until resolved */
	struct dns_result *res;      /* its current answer (ref) */
	uint64_t expires_ms;         /* monotonic: resolve again after */
	unsigned nconnecting;        /* sessions it opened that have no job yet */
	struct delivery_route *active_next, *active_prev; /* pool->active ring */
	bool active;
	bool resolving;
	char why[200];               /* why there is no route, for logs */
};

/* delivery_dns_kind - what a failed DNS answer (st is not DNS_OK) reports to
 * the scheduler: NXDOMAIN and null MX fail, the rest are temporary. */
enum attempt_kind delivery_dns_kind(enum dns_status st);

/* delivery_sched_ops - the scheduler callbacks for a shard. */
extern const struct sched_ops delivery_sched_ops;

/* delivery_next - a session of pool is ready for work: a job from any of
 * the pool's domains (round-robin), or NULL. */
struct sched_job *delivery_next(struct shard *sh, struct delivery_pool *pool);
/* delivery_session_opened / _ready - c was opened for its domain; c got
 * past EHLO (it no longer counts as connecting). */
void delivery_session_opened(struct shard *sh, struct smtp_client *c);
void delivery_session_ready(struct shard *sh, struct smtp_client *c);
/* delivery_idle - a session has no job: park it in the pool's idle list. */
void delivery_idle(struct shard *sh, struct delivery_pool *pool, struct smtp_client *c);
/* delivery_unidle - take c out of the idle list (closing or given work). */
void delivery_unidle(struct delivery_pool *pool, struct smtp_client *c);
/* delivery_hop - the address of the k-th hop to try for a session that
 * started at rotation start; false when there are no more. */
bool delivery_hop(struct shard *sh, struct delivery_pool *pool, unsigned start, unsigned k,
		  struct sockaddr_storage *ss, socklen_t *len);
/* delivery_failed - a session failed before it had a job (connect, greeting,
 * EHLO): try the next hop (true: a new session was opened), or back every
 * domain of the pool off (false). */
bool delivery_failed(struct shard *sh, struct smtp_client *c, const struct attempt_report *rep);
/* delivery_session_gone - a session ended (after its last completion). */
void delivery_session_gone(struct shard *sh, struct smtp_client *c, bool was_connecting);
/* delivery_free - free routes and pools of sh (shutdown, no sessions left). */
void delivery_free(struct shard *sh);
/* delivery_stats_json - the destination view for /v1/stats (pools). */
unsigned delivery_pools(struct shard *sh, void (*fn)(const struct delivery_pool *p, void *arg),
			void *arg);

#endif
