/* dns_impl.h - what dns_cache.c and dns_resolver.c share; not a public API. */
#ifndef RP_DNS_IMPL_H
#define RP_DNS_IMPL_H

#include <ares.h>

#include "dns.h"
#include "relay/loop.h"

struct dns_waiter {
	dns_cb cb;
	void *arg;
	struct dns_waiter *next;
};

/* A cache entry: an answer, or a lookup in flight with its waiters. */
struct dns_entry {
	char *key;                   /* "m:" domain (MX) or "a:" host (addresses) */
	uint32_t hash;
	struct dns_entry *hnext;     /* hash chain */
	struct dns_entry *lru_prev, *lru_next; /* most recent at the head */
	struct dns_result *res;      /* NULL while the lookup runs */
	struct dns_waiter *waiters;  /* callbacks waiting for res */
	bool pending;
};

/* A c-ares socket polled through the ring. */
struct dns_sock {
	struct loop_io io;
	struct dns_resolver *r;
	int fd;
	bool want_r, want_w;  /* what c-ares asked for */
	bool polling;         /* a poll request is in flight */
	bool dead;            /* c-ares closed it: free when nothing is in flight */
	bool busy;            /* sock_cqe is running on it: it frees, not sock_state */
	struct dns_sock *next;   /* socks or dead list */
	struct dns_sock **pprev;
};

struct dns_resolver {
	struct loop *loop;
	struct dns_config cfg;
	char *servers;
	ares_channel ch;
	struct dns_sock *socks;      /* sockets c-ares has open */
	struct dns_sock *dead;       /* closed by c-ares, completions outstanding */
	struct loop_timer timer;
	uint64_t rnd;
	bool destroying;
	/* cache */
	struct dns_entry **htab;
	uint32_t hsize, nentries;
	struct dns_entry *lru_head, *lru_tail;
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
