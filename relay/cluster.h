/* cluster.h - per-destination limits shared by several nodes through Redis
 * ([cluster] redis, node, lease).
 *
 * One struct cluster per shard, on its loop, with its own Redis connection
 * (redis.h). What it shares:
 * - sessions: a destination's max_connections slots are leases in a Redis
 *   sorted set (rp:conn:POOLKEY, member NODE/SHARD#i, score = expiry).
 *   A pool holds a count of leases; it may open that many sessions without
 *   asking again. One Lua call sets a holder's count (granted up to what
 *   the others leave free), and the same call renews them: per pool per
 *   tick, never per message or per session.
 * - rates: a token bucket per domain (rp:rate:DOMAIN, refilled at the
 *   domain's rate by Redis's clock, holding a tenth of a second's worth as
 *   the local one does); a domain with work and no token takes a small
 *   batch (rate / 20, at least one).
 * - nodes: each shard's heartbeat keeps its node in rp:nodes (score =
 *   expiry), learns the node count and writes its numbers to the hash
 *   rp:node:NODE (field: the shard) for `ringpost stats --cluster`.
 * When Redis cannot be reached, each pool keeps within max_connections /
 * nodes and each domain within rate / nodes (the last known node count),
 * and shared mode resumes when it answers again. A node that dies stops
 * renewing: its leases and heartbeat expire after [cluster] lease.
 */
#ifndef RP_CLUSTER_H
#define RP_CLUSTER_H

#include <stdbool.h>
#include <stdint.h>

#include "base/buf.h"
#include "base/list.h"
#include "base/loop.h"
#include "base/stats.h"
#include "dns/dns.h"
#include "queue/sched.h"

struct cluster;

/* One pool's leases (embedded in the pool, which outlives the cluster). */
struct cluster_lease {
	struct rp_list link; /* on the cluster's list once asked for */
	bool linked;
	bool asking;       /* a call is on its way */
	const char *key;   /* the pool's key (its memory) */
	unsigned max;      /* the destination's max_connections */
	unsigned held;     /* slots this shard holds */
	unsigned used;     /* sessions open */
	unsigned peak;     /* most wanted since the last renewal */
	unsigned everyone; /* leases of the whole cluster at the last answer */
	uint64_t short_ms; /* got less than asked: no new ask before (mono ms) */
};

struct cluster_params {
	struct loop *loop;
	struct dns_resolver *dns;
	const char *redis; /* host:port */
	const char *node;  /* this node's name */
	unsigned shard;
	uint64_t lease_ms;
	/* changed - shared or fallback mode began, or leases were granted:
	 * limits are to be looked at again (reconfigure and kick). */
	void (*changed)(void *arg, bool mode);
	/* give_tokens - the answer to cluster_need_tokens. */
	void (*give_tokens)(void *arg, struct sched_dest *d, double n);
	/* node_json - this shard's numbers for the node's heartbeat (a JSON
	 * object appended to out), or NULL. */
	void (*node_json)(void *arg, struct buf *out);
	void *arg;
};

/* cluster_new - connect and start the heartbeat; NULL without [cluster]. */
struct cluster *cluster_new(const struct cluster_params *p);
/* cluster_stop - release the leases this shard holds (best effort), close. */
void cluster_stop(struct cluster *c);
/* cluster_busy - the Redis connection has not been released yet. */
bool cluster_busy(const struct cluster *c);
void cluster_free(struct cluster *c);

/* cluster_shared - Redis answers: limits are the cluster's. */
bool cluster_shared(const struct cluster *c);
/* cluster_nodes - the last known number of live nodes (at least 1). */
unsigned cluster_nodes(const struct cluster *c);

/* cluster_conn_limit - how many sessions a pool may have open now: its
 * leases in shared mode (asking for more, up to max, when open + demand
 * passes them; the answer comes through changed), max / nodes otherwise. */
unsigned cluster_conn_limit(struct cluster *c, struct cluster_lease *l, const char *key,
                            unsigned max, unsigned open, unsigned demand);
/* cluster_lease_used - the pool's open sessions changed (one closed). */
void cluster_lease_used(struct cluster_lease *l, unsigned open);
/* cluster_need_tokens - d (lim.rate_shared) wants tokens: give_tokens
 * answers when the shared bucket has some (or 0 when the mode changed). */
void cluster_need_tokens(struct cluster *c, struct sched_dest *d);
/* cluster_fill_stats - mode, nodes and Redis numbers into out. */
void cluster_fill_stats(const struct cluster *c, struct stats_cluster *out);

#endif
