/* delivery.h - outbound delivery: routes per domain, connection pools per
 * destination, and the SMTP client sessions they own.
 *
 * One struct delivery per shard, the glue between the shard's scheduler and
 * its SMTP client engines (smtp_client.h). Each domain (sched_dest) gets a
 * route: a static route, a domain literal, or a DNS answer (MX, implicit MX)
 * from dns/. Domains whose routes lead to the same next hops share one pool
 * (one set of sessions and one connection limit), as the many domains a
 * large provider hosts do; stats show both the domain and the destination
 * view. The scheduler's kick hands jobs to idle sessions of the pool and
 * opens new sessions within the limits; a session that finishes a job takes
 * the next from any domain of its pool. A session that cannot connect, or is
 * refused at the greeting, tries the next exchanger before the destination
 * is deferred. Single-threaded: everything runs on the shard's loop.
 */
#ifndef RP_DELIVERY_H
#define RP_DELIVERY_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "base/loop.h"
#include "base/stats.h"
#include "base/tls.h"
#include "config.h"
#include "dns/dns.h"
#include "queue/sched.h"

struct delivery;

struct delivery_params {
	struct loop *loop;                   /* the shard's loop */
	struct dns_resolver *dns;            /* NULL: only static routes and literals */
	const struct config *cfg;            /* domain settings and the EHLO name
	                                      * (replace with delivery_set_config) */
	struct cluster *cluster;             /* [cluster] limits, or NULL (not owned) */
	struct spool *spool;                 /* warm-up counters ([domain] warmup) */
	struct tls_ctx *tls_client;          /* outbound STARTTLS (a reference is
	                                      * taken); NULL: never STARTTLS */
	const struct sockaddr_storage *ours; /* our listeners' addresses: mail routed
	                                      * there would loop (must outlive delivery) */
	unsigned nours;
	void (*touch)(void *arg);        /* run the scheduler at the end of this batch */
	void (*session_gone)(void *arg); /* a session was freed (shutdown waits) */
	void *arg;                       /* for touch and session_gone */
};

/* delivery_new - the delivery side of a shard; attach its scheduler (made
 * with delivery_sched_ops and this delivery as ctx) with delivery_attach. */
struct delivery *delivery_new(const struct delivery_params *p);
/* delivery_attach - the scheduler whose destinations this delivery serves. */
void delivery_attach(struct delivery *dl, struct sched *sched);
/* delivery_free - free routes and pools; no session may be left
 * (delivery_sessions() == 0). Call before the scheduler is freed. */
void delivery_free(struct delivery *dl);
/* delivery_set_config - a reloaded config (the old one may be freed after)
 * and its generation's client TLS context (new sessions use it; running
 * ones keep theirs); follow with sched_reconfigure so that every domain
 * takes it. */
void delivery_set_config(struct delivery *dl, const struct config *cfg, struct tls_ctx *tls_client);

/* delivery_cluster_changed - the cluster's mode changed (mode: limits
 * configured again) or leases were granted: kick the pools with work. */
void delivery_cluster_changed(struct delivery *dl, bool mode);

/* delivery_sched_ops - the scheduler callbacks (ctx: struct delivery). */
extern const struct sched_ops delivery_sched_ops;

/* delivery_stop - open no more sessions; idle ones say QUIT, busy ones
 * after their transaction, connecting ones close. */
void delivery_stop(struct delivery *dl);
/* delivery_abort - close every session now (the stop deadline); jobs in
 * hand are reported abandoned. */
void delivery_abort(struct delivery *dl);
/* delivery_sessions - sessions not yet freed. */
unsigned delivery_sessions(const struct delivery *dl);

/* delivery_fill_stats - the destination view (pools) into a stats part. */
void delivery_fill_stats(const struct delivery *dl, struct stats_snapshot *part);
/* delivery_fill_domain_tls - the TLS fields of part->domains[first..] (the
 * entries the scheduler just added): their destination's policy and
 * counters. */
void delivery_fill_domain_tls(const struct delivery *dl, struct stats_snapshot *part,
                              unsigned first);

/* delivery_dns_kind - what a failed DNS answer (st is not DNS_OK) reports to
 * the scheduler: NXDOMAIN and null MX fail, the rest are temporary. */
enum attempt_kind delivery_dns_kind(enum dns_status st);

#endif
