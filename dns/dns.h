/* dns.h - resolving where a domain's mail goes, without blocking the loop.
 *
 * One resolver per shard: a c-ares channel whose sockets are polled through
 * the shard's io_uring and whose timeouts run on the loop's timer. MX
 * selection follows RFC 5321 section 5.1: exchangers by preference, equal
 * preferences shuffled, each exchanger's A and AAAA addresses; no MX means
 * the domain itself (implicit MX); a null MX (RFC 7505) means no mail at
 * all. Answers are cached for their TTL (capped), failures for a short
 * negative TTL, in a bounded LRU; lookups in flight are shared, so a
 * thousand messages to one new domain cause one query. At most
 * DNS_MAX_INFLIGHT (64) lookups are sent at once per resolver; more wait
 * their turn, so a burst of new domains never floods the server.
 *
 * dns/ reaches relay/ only through loop.h.
 */
#ifndef RP_DNS_H
#define RP_DNS_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

struct loop;
struct dns_resolver;

enum dns_status {
	DNS_OK,         /* at least one address */
	DNS_NXDOMAIN,   /* the domain does not exist: permanent (5.1.2) */
	DNS_NULL_MX,    /* RFC 7505: the domain accepts no mail (5.1.10) */
	DNS_NO_ADDRESS, /* exchangers without any address: temporary */
	DNS_TEMPFAIL,   /* SERVFAIL, timeout, refused: try later */
};

/* One address to try, in order. */
struct dns_hop {
	const char *host; /* the exchanger (or the domain itself for implicit MX) */
	uint16_t pref;    /* MX preference (0 for implicit MX and host lookups) */
	union {
		struct sockaddr sa;
		struct sockaddr_in sin;
		struct sockaddr_in6 sin6;
	} addr; /* port 0: the caller sets the port */
	socklen_t len;
};

/* An immutable, reference-counted answer. */
struct dns_result {
	unsigned refs;
	enum dns_status status;
	const char *error;   /* what went wrong ("" when OK), stored after the names */
	uint64_t expires_ms; /* monotonic time when it stops being valid */
	unsigned nhops;
	struct dns_hop *hops; /* preference order; equal preferences shuffled */
	char *names;          /* storage behind hops[].host */
};

struct dns_config {
	const char *servers;      /* "host:port,host:port" or "" for /etc/resolv.conf */
	uint64_t max_ttl_ms;      /* positive answers are kept at most this long */
	uint64_t negative_ttl_ms; /* failures are kept this long */
	unsigned cache_size;      /* entries kept at most (LRU beyond) */
	unsigned timeout_ms;      /* per try */
	unsigned tries;
};

struct dns_stats {
	uint64_t queries;   /* lookups sent: MX queries, address lookups (A and AAAA) */
	uint64_t lookups;   /* dns_resolve_* calls */
	uint64_t hits;      /* answered from the cache */
	uint64_t shared;    /* joined a lookup already in flight */
	uint64_t entries;   /* cache entries now */
	uint64_t evictions; /* entries dropped by the LRU */
	uint64_t memory;    /* bytes held by the cache (entries, keys, answers) */
};

/* dns_cb - the answer for a lookup. res is borrowed for the call; take a
 * reference (dns_result_ref) to keep it. Called from the loop, possibly
 * before dns_resolve_* returns (cache hit). */
typedef void (*dns_cb)(void *arg, struct dns_result *res);

/* dns_new - a resolver on loop (the loop's thread). NULL with a reason. */
struct dns_resolver *dns_new(struct loop *loop, const struct dns_config *cfg, char *err,
                             size_t errlen);
/* dns_free - tear down: pending callbacks are dropped (not called). Only
 * after the loop has stopped running. */
void dns_free(struct dns_resolver *r);
/* dns_resolve_mx - where mail for domain goes (MX, implicit MX, null MX). */
void dns_resolve_mx(struct dns_resolver *r, const char *domain, dns_cb cb, void *arg);
/* dns_resolve_host - the addresses of a host name (routes with names). */
void dns_resolve_host(struct dns_resolver *r, const char *host, dns_cb cb, void *arg);
/* dns_forget_waiter - drop a pending callback (its owner is going away). */
void dns_forget_waiter(struct dns_resolver *r, dns_cb cb, void *arg);
/* dns_result_new - an answer with room for n hops and names bytes of host
 * names (refs = 1); for routes that need no lookup. */
struct dns_result *dns_result_new(enum dns_status st, unsigned n, size_t names);
/* dns_result_ref / dns_result_unref - keep or release an answer. */
void dns_result_ref(struct dns_result *res);
void dns_result_unref(struct dns_result *res);
/* dns_get_stats - counters for stats and the closing note. */
void dns_get_stats(const struct dns_resolver *r, struct dns_stats *out);
/* dns_status_name - "ok", "nxdomain", ... */
const char *dns_status_name(enum dns_status s);

/* ---- pure helpers (dns_mx.c), exposed for tests ------------------------ */

struct dns_mx {
	char *host; /* exchanger name, "" for a null MX */
	uint16_t pref;
};

/* dns_mx_order - sort by preference; shuffle each run of equal preferences
 * with rnd (a seed). */
void dns_mx_order(struct dns_mx *mx, unsigned n, uint64_t rnd);
/* dns_mx_is_null - RFC 7505: a single MX of preference 0 and host ".". */
bool dns_mx_is_null(const struct dns_mx *mx, unsigned n);
/* dns_to_ascii - name with every label that has non-ASCII characters
 * (UTF-8) in its A-label form, "xn--" + Punycode (RFC 5890, RFC 3492),
 * lower-cased; ASCII labels are only lower-cased. False when name is not
 * valid UTF-8, a label is too long, or out (outlen bytes) is too small. */
bool dns_to_ascii(const char *name, char *out, size_t outlen);
/* dns_answer_min_ttl - the smallest TTL of the answer records in a raw DNS
 * reply; false when there is none or the reply does not parse. */
bool dns_answer_min_ttl(const unsigned char *abuf, int alen, unsigned *ttl);

#endif
