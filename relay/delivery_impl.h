/* delivery_impl.h - what delivery.c (pools and sessions) and
 * delivery_route.c (where a domain's mail goes) share. Private to them.
 */
#ifndef RP_DELIVERY_IMPL_H
#define RP_DELIVERY_IMPL_H

#include "base/list.h"
#include "cluster.h"
#include "delivery.h"
#include "delivery_shape.h"
#include "smtp_client.h"
#include "warmup.h"

struct delivery_session;

struct delivery {
	struct loop *loop;
	struct sched *sched;
	struct dns_resolver *dns;
	const struct config *cfg;
	struct tls_ctx *tls_client;          /* a reference: new sessions' STARTTLS */
	const struct sockaddr_storage *ours; /* our listeners (loop detection) */
	unsigned nours;
	void (*touch)(void *arg);
	void (*session_gone)(void *arg);
	void *arg;
	bool stopping;                   /* delivery_stop: no new sessions */
	struct delivery_pool **pool_tab; /* destinations by next-hop key */
	uint32_t pool_tab_size, npools;
	struct rp_list sessions; /* every session, for stop and abort */
	unsigned nsessions;
	struct cluster *cluster;  /* [cluster]: limits shared through Redis, or NULL */
	struct loop_timer rekick; /* slow start: pools held back by time look again */
	struct loop_timer stall;  /* connecting sessions that take too long (stall_scan) */
	struct warmup *warmup;    /* [domain] warmup counters (warmup.c) */
	uint64_t warmup_waits;    /* times a domain waited for the next day's cap */
};

#define DELIVERY_TLS_KEEP 4 /* resumable TLS sessions kept per pool */

/* A resumable TLS session to one hop: resumed only by a session to the same
 * exchanger name, address and port (the name is what was verified). */
struct delivery_tls_kept {
	char *host;                   /* the exchanger's name ("" for none) */
	struct sockaddr_storage addr; /* address and port */
	socklen_t len;
	struct tls_session *s;
	uint64_t at_ms; /* when it was kept (the oldest goes first) */
};

/* A local address a pool's sessions are bound to ([domain] source). */
struct delivery_source {
	struct cfg_source a; /* a copy: the pool outlives config generations */
	uint64_t sessions;   /* sessions opened from it, since the pool was made */
	unsigned open;       /* of which not yet gone */
};

/* A destination: a set of next hops, how to talk to them, and the sessions
 * to them. */
struct delivery_pool {
	char *key;                   /* "mx:a.example,b.example>c.example:25", ... */
	struct delivery_pool *hnext; /* pool table chain */
	struct dns_result *hops;     /* where to connect (ref); refreshed with the DNS */
	uint16_t port;
	struct sched_dest **members; /* domains routed here */
	unsigned nmembers, members_cap;
	struct rp_list active;   /* routes of members with ready work, in
	                          * turn: the next job comes from the first */
	unsigned rr_hop;         /* spreads sessions over equal-preference hops */
	struct rp_list idle;     /* idle sessions, most recent first */
	struct rp_list idle_new; /* idle sessions that have carried nothing yet */
	unsigned nidle;
	unsigned nworking; /* sessions past EHLO: the destination works */
	unsigned nsessions;
	unsigned nstalled;               /* of which connecting for too long: not counted as
	                                  * on their way (stall_scan) */
	uint32_t max_connections;        /* the smallest of the members' limits */
	uint64_t used_ms;                /* last time it had members or sessions */
	unsigned tls_policy;             /* enum cfg_tls_policy: part of the key */
	struct delivery_source *sources; /* [domain] source, in order (part of
	                                  * the key); none: the kernel chooses */
	unsigned nsources;
	unsigned rr_source; /* where the round robin over sources goes on */
	char *ehlo;         /* [domain] ehlo (part of the key), or NULL:
	                     * [server] hostname */
	struct delivery_tls_kept tls_kept[DELIVERY_TLS_KEEP];
	unsigned ntls_kept;
	uint64_t sessions_ok;        /* sessions through EHLO, since start */
	uint64_t tls_sessions;       /* sessions through a TLS handshake, since start */
	uint64_t tls_resumed;        /* of which resumed a kept session */
	uint64_t tls_failures;       /* TLS handshakes that failed (verification too) */
	struct cluster_lease lease;  /* [cluster]: this shard's share of the slots */
	struct delivery_shape shape; /* what the receiver tolerates (delivery_shape.c) */
};

/* A domain's way out (sched_dest->owner). */
struct delivery_route {
	struct sched_dest *dest;
	struct delivery_pool *pool; /* NULL until resolved */
	struct dns_result *res;     /* its current answer (ref) */
	uint64_t expires_ms;        /* monotonic: resolve again after */
	unsigned nconnecting;       /* sessions it opened that have no job yet */
	unsigned nstalled;          /* of which stalled (stall_scan) */
	bool warmup;                /* its [domain] has a warm-up schedule (as of
	                             * the last refresh: warm_left checks the config) */
	struct rp_list active_link; /* on pool->active while it may have work */
	bool resolving;
};

/* One SMTP client engine and what delivery knows about it. */
struct delivery_session {
	struct smtp_client *c;
	struct delivery *dl;
	struct delivery_pool *pool;       /* the destination it connects to */
	struct sched_dest *acct;          /* the domain that opened it (limits, stats) */
	unsigned hop_start, hop_k;        /* which next hop: rotation and index */
	char *hop_host;                   /* the hop's name (TLS name, resumption key) */
	struct sockaddr_storage hop_addr; /* the hop's address and port */
	socklen_t hop_len;
	struct delivery_source *src; /* the pool's source it is bound to, or NULL */
	bool clear_text;             /* the opportunistic retry without STARTTLS */
	bool working;                /* got past EHLO: counted as working */
	bool stalled;                /* still connecting long after it should be ready */
	uint64_t opened_ms;          /* mono: when it began connecting */
	unsigned ntxn;               /* transactions it carried */
	bool closing;                /* takes no more work */
	struct rp_list link;         /* on dl->sessions */
	struct rp_list idle_link;    /* on pool->idle while parked */
};

/* ---- delivery_route.c -------------------------------------------------- */

/* delivery_route_of - d's route, made on first use. */
struct delivery_route *delivery_route_of(struct sched_dest *d);
/* delivery_route_refresh - find (or find again) where d's mail goes; true
 * when a usable route is in place now, false while it is being looked up or
 * when there is none (the scheduler has been told). */
bool delivery_route_refresh(struct delivery *dl, struct delivery_route *rt);
/* delivery_route_free - a route and its answer (sched_foreach_dest). */
void delivery_route_free(struct sched_dest *d, void *arg);
/* delivery_hop - the address of the k-th usable hop to try for a session
 * that started at rotation start, and (host not NULL) its name, which lives
 * as long as pool->hops; false when there are no more. Usable: not one of
 * our listeners, and of a family one of pool's sources has (when it has
 * sources). */
bool delivery_hop(const struct delivery *dl, const struct delivery_pool *pool, unsigned start,
                  unsigned k, struct sockaddr_storage *ss, socklen_t *len, const char **host);

/* delivery_hop_any - the first hop of pool that is not one of our
 * listeners, whichever its family, and its name (as delivery_hop's); to
 * say why delivery_hop found none. */
bool delivery_hop_any(const struct delivery *dl, const struct delivery_pool *pool,
                      struct sockaddr_storage *ss, socklen_t *len, const char **host);

/* ---- delivery.c -------------------------------------------------------- */

/* delivery_pool_get - the pool for key (made when new), with hops; a new
 * pool takes the TLS policy, source addresses and EHLO name of cd (the
 * domain's settings that are part of key). */
struct delivery_pool *delivery_pool_get(struct delivery *dl, const char *key,
                                        struct dns_result *hops, uint16_t port,
                                        const struct cfg_domain *cd);
/* delivery_pool_reaches - pool has no sources, or one of this family. */
bool delivery_pool_reaches(const struct delivery_pool *pool, int family);
/* delivery_pool_join / _leave - d is routed to p / no longer. */
void delivery_pool_join(struct delivery_pool *p, struct sched_dest *d);
void delivery_pool_leave(struct delivery_pool *p, struct sched_dest *d);
/* delivery_pool_limits - recompute p's limit from its members. */
void delivery_pool_limits(struct delivery_pool *p);
/* delivery_touch - run the scheduler at the end of this batch. */
void delivery_touch(struct delivery *dl);

#endif
