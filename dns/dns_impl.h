/* dns_impl.h - what dns_cache.c and dns_resolver.c share; not a public API. */
#ifndef RP_DNS_IMPL_H
#define RP_DNS_IMPL_H

#include <ares.h>

#include "base/list.h"
#include "base/loop.h"
#include "dns.h"

struct dns_waiter {
	dns_cb cb;
	void *arg;
	struct dns_waiter *next;
};

/* A cache entry: an answer, or a lookup in flight with its waiters. */
struct dns_entry {
	char *key; /* "m:" domain (MX) or "a:" host (addresses) */
	uint32_t hash;
	struct dns_entry *hnext;    /* hash chain */
	struct rp_list lru;         /* on r->lru, most recent first */
	struct dns_result *res;     /* NULL while the lookup runs */
	struct dns_waiter *waiters; /* callbacks waiting for res */
	bool pending;
};

/* A c-ares socket polled through the ring. */
struct dns_sock {
	struct loop_io io;
	struct dns_resolver *r;
	int fd;
	bool want_r, want_w; /* what c-ares asked for */
	bool polling;        /* a poll request is in flight */
	bool dead;           /* c-ares closed it: free when nothing is in flight */
	bool busy;           /* sock_cqe is running on it: it frees, not sock_state */
	struct rp_list link; /* on r->socks or r->dead */
};

struct host_query;
struct mx_query;

/* Lookups sent to the DNS server at once, per resolver (shard). More wait
 * in a queue: thousands of queries in one burst overflow the socket
 * buffers at both ends (UDP drops them silently), and every lost one
 * costs a [dns] timeout and then negative_ttl. Measured with dnsmasq on
 * loopback (bench/dns-load, 2 shards): 512 lost hundreds of answers, 32
 * and 128 none and equally fast (dnsmasq is the limit). 64 answers fit a
 * default 208 KiB receive buffer many times over, at our end and at a
 * server that serves a few shards; at 50 ms a lookup it still allows
 * 1,280 new domains a second per shard. */
#define DNS_MAX_INFLIGHT 64
/* SO_RCVBUF asked for the resolver's sockets (the kernel caps it at
 * net.core.rmem_max): answers that arrive while the loop is busy wait. */
#define DNS_RCVBUF (1 << 20)

struct dns_resolver {
	struct loop *loop;
	struct dns_config cfg;
	char *servers;
	ares_channel ch;
	struct rp_list socks; /* sockets c-ares has open */
	struct rp_list dead;  /* closed by c-ares, completions outstanding */
	struct loop_timer timer;
	uint64_t rnd;
	bool destroying;
	/* lookups waiting for a slot (FIFO); address lookups go first: they
	 * finish MX lookups already under way */
	unsigned inflight; /* sent, callback not yet called */
	bool pumping;      /* pump() is running (no recursion) */
	struct host_query *hq_head, *hq_tail;
	struct mx_query *mq_head, *mq_tail;
	/* cache */
	struct dns_entry **htab;
	uint32_t hsize, nentries;
	struct rp_list lru; /* every entry, most recently used first */
	struct dns_stats st;
};

/* Cache (dns_cache.c). */
void dns_cache_init(struct dns_resolver *r);
void dns_cache_free(struct dns_resolver *r);
/* dns_cache_get - the entry for key; a fresh pending one when absent or
 * expired (*start is then true: the caller starts the lookup). */
struct dns_entry *dns_cache_get(struct dns_resolver *r, const char *key, bool *start);
/* dns_cache_wait - answer from e now (cached) or when it completes. */
void dns_cache_wait(struct dns_resolver *r, struct dns_entry *e, dns_cb cb, void *arg);
/* dns_cache_complete - publish res (the cache takes the caller's reference)
 * and call every waiter. */
void dns_cache_complete(struct dns_resolver *r, struct dns_entry *e, struct dns_result *res);
/* dns_result_failed - a failure result with a formatted reason. */
struct dns_result *dns_result_failed(enum dns_status st, uint64_t ttl_ms, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
