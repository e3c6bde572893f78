/* stats.h - counters and histograms that every stage contributes to.
 *
 * Plain data: each shard fills its own struct stats_snapshot on its own
 * thread (scheduler counts, histograms, session counters); the stats request
 * merges the shards' parts on the asking thread. Formatting (JSON,
 * Prometheus) lives in api/.
 */
#ifndef RP_STATS_H
#define RP_STATS_H

#include <stdbool.h>
#include <stdint.h>

#include "climit.h"

/* Upper bounds (seconds) of histogram buckets; one more bucket is +Inf. */
#define STATS_DELIVERY_BUCKETS 16 /* submit to delivered */
#define STATS_TXN_BUCKETS      12 /* one SMTP transaction */
extern const double stats_delivery_bounds[STATS_DELIVERY_BUCKETS];
extern const double stats_txn_bounds[STATS_TXN_BUCKETS];

struct stats_hist {
	uint64_t bucket[STATS_DELIVERY_BUCKETS + 1]; /* counts per bucket (not cumulative) */
	uint64_t count;
	double sum;
};

struct stats_counts {
	uint64_t queued;      /* ready, waiting for a session */
	uint64_t deferred;    /* waiting for a retry time */
	uint64_t in_flight;   /* handed to a session */
	uint64_t delivered;   /* since start */
	uint64_t bounced;     /* since start */
	uint64_t deferrals;   /* deferral events since start */
	uint64_t connections; /* open outbound sessions */
};

struct stats_domain {
	char name[256];
	struct stats_counts n;
	bool suspended;
	uint64_t hold_until_ms; /* backing off until (unix ms), 0 = not */
	char hold_reason[200];  /* why (the reply, or a warm-up cap), when it is */
	uint32_t max_connections, max_msgs_per_conn, max_rcpts_per_msg; /* limits in force */
	double rate; /* messages per second, 0 = unlimited */
	/* TLS of its destination (the pool its route leads to; relay fills): */
	char tls_policy[16];   /* [domain] tls in force, "" = no route yet */
	uint64_t sessions;     /* the destination's sessions through EHLO, since start */
	uint64_t tls_sessions; /* of which through a TLS handshake */
	uint64_t tls_failures; /* the destination's failed TLS handshakes */
};

#define STATS_DEST_SOURCES 8 /* source addresses counted per destination, at most */

/* One of a destination's source addresses ([domain] source). */
struct stats_source {
	char addr[46];        /* "192.0.2.1", "2001:db8::1" (INET6_ADDRSTRLEN) */
	uint64_t sessions;    /* sessions opened from it, since start */
	uint64_t connections; /* open now */
};

/* A destination: a set of next hops shared by one or more domains. */
struct stats_dest {
	char key[256];     /* "mx:a.example>b.example:25", "route:host:port" */
	char domains[256]; /* the first domains routed there, comma-separated */
	unsigned ndomains;
	uint64_t connections; /* open sessions */
	uint32_t max_connections;
	uint64_t tls_sessions;     /* sessions through a TLS handshake, since start */
	uint64_t tls_resumed;      /* of which resumed an earlier session */
	uint64_t tls_failures;     /* failed TLS handshakes (verification too), since start */
	uint32_t eff_concurrency;  /* sessions the receiver tolerates now (shaping) */
	double eff_rate;           /* messages per second it tolerates, 0 = no cap */
	uint64_t refused_sessions; /* sessions refused for concurrency, since start */
	uint64_t rate_signals;     /* "too fast" replies, since start */
	uint64_t empty_sessions;   /* sessions that ended without a transaction */
	char shape_why[160];       /* the last adaptation and its reply, or "" */
	uint64_t shape_ms;         /* when (unix ms), 0 = none */
	bool cluster;              /* [cluster]: the two below mean something */
	uint32_t cluster_share;    /* session slots this node holds (leases) */
	uint32_t cluster_sessions; /* slots held by every node, at the last answer */
	char ehlo[256];            /* the name its sessions say in EHLO */
	struct stats_source sources[STATS_DEST_SOURCES]; /* [domain] source, in order:
	                                                  * the first ones (the key
	                                                  * has them all) */
	unsigned nsources;                               /* 0: the kernel chooses */
};

/* The webhook poster (shard 0's); the backlog is the spool's. */
struct stats_webhook {
	bool enabled;
	uint64_t posts;           /* requests answered 2xx */
	uint64_t events_posted;   /* events in them */
	uint64_t failures;        /* requests that failed (refused, timeout, not 2xx) */
	int last_status;          /* HTTP status of the last answer, 0 = none yet */
	uint64_t last_success_ms; /* unix ms of the last 2xx, 0 = never */
	uint64_t last_error_ms;   /* unix ms of the last failure, 0 = never */
	char last_error[200];     /* what it was, "" = none */
	uint64_t retry_at_ms;     /* backing off until (unix ms), 0 = not */
};

/* [cluster]: this node's view (each shard's Redis numbers summed). */
struct stats_cluster {
	bool enabled;
	bool shared;        /* Redis answers: the limits are the cluster's */
	unsigned nodes;     /* live nodes, last known */
	uint64_t fallbacks; /* times a shard fell back to local limits */
	uint64_t commands;  /* Redis commands sent */
	uint64_t errors;    /* of which failed */
	char node[64];
	char last_error[160];
};

struct stats_snapshot {
	struct stats_counts total;
	struct stats_domain *domains; /* malloc'ed, ndomains entries */
	unsigned ndomains;
	struct stats_dest *dests; /* malloc'ed, ndests entries */
	unsigned ndests;
	uint64_t accepted_smtp;       /* messages accepted over SMTP since start */
	uint64_t accepted_api;        /* messages accepted over HTTP since start */
	uint64_t suppressed;          /* recipients suppressed at submission since start */
	uint64_t warmup_waits;        /* domains held for a day by a warm-up cap, since start */
	uint64_t reports;             /* bounces and complaints received (bounce MX) */
	uint64_t reports_matched;     /* of which matched one of our recipients (VERP) */
	uint64_t rejected;            /* submissions refused (4xx/5xx at the end) */
	uint64_t smtp_sessions;       /* inbound sessions since start */
	uint64_t inbound_connections; /* open inbound sessions (SMTP + HTTP) */
	uint64_t loop_max_busy_us;    /* worst loop iteration since the last stats call */
	uint64_t client_limits[CLIMIT_KINDS][CLIMIT_REASONS]; /* clients refused, slowed
	                                                       * or cut off, since start */
	uint64_t dns_lookups, dns_queries, dns_hits, dns_shared, dns_entries, dns_memory;
	struct stats_hist delivery; /* seconds from submit to delivered */
	struct stats_hist txn;      /* seconds per SMTP transaction */
	struct stats_webhook webhook;
	struct stats_cluster cluster;
};

/* stats_hist_add - count v (seconds) in h, whose bounds are given. */
void stats_hist_add(struct stats_hist *h, const double *bounds, unsigned nbounds, double v);
/* stats_hist_merge - add from into into. */
void stats_hist_merge(struct stats_hist *into, const struct stats_hist *from);
/* stats_counts_add - add b into a. */
void stats_counts_add(struct stats_counts *a, const struct stats_counts *b);
/* stats_merge - add part into total; per-domain entries are appended (each
 * domain lives on one shard, so there is nothing to combine). */
void stats_merge(struct stats_snapshot *total, const struct stats_snapshot *part);
/* stats_free - release domains; the snapshot is empty after. */
void stats_free(struct stats_snapshot *s);

#endif
