/* delivery_route.c - where a domain's mail goes: a static route, a domain
 * literal, or the DNS (MX, implicit MX), and which pool of sessions that is.
 *
 * Promises: a route never leads to one of our own listeners (the mail would
 * loop: it fails with ATTEMPT_LOOP); an expired answer is looked up again
 * before more mail follows it; a temporary DNS failure keeps the last good
 * answer. The answer arrives on the loop (dns/), possibly from the cache
 * inside the call that asked.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>

#include "base/buf.h"
#include "base/conn.h"
#include "base/log.h"
#include "base/util.h"
#include "delivery_impl.h"

/* ours - whether addr:port is one of our own listeners (mail would loop). */
static bool ours(const struct delivery *dl, const struct sockaddr *sa, uint16_t port)
{
	for (unsigned i = 0; i < dl->nours; i++) {
		const struct sockaddr_storage *o = &dl->ours[i];
		if (o->ss_family != sa->sa_family)
			continue;
		if (sa->sa_family == AF_INET) {
			const struct sockaddr_in *a = (const void *)o, *b = (const void *)sa;
			if (ntohs(a->sin_port) == port && a->sin_addr.s_addr == b->sin_addr.s_addr)
				return true;
		} else if (sa->sa_family == AF_INET6) {
			const struct sockaddr_in6 *a = (const void *)o, *b = (const void *)sa;
			if (ntohs(a->sin6_port) == port &&
			    !memcmp(&a->sin6_addr, &b->sin6_addr, sizeof(a->sin6_addr)))
				return true;
		}
	}
	return false;
}

/* hop_get - delivery_hop; by_source: skip hops of a family none of the
 * pool's sources has (false: only our own listeners are skipped). */
static bool hop_get(const struct delivery *dl, const struct delivery_pool *pool, unsigned start,
                    unsigned k, struct sockaddr_storage *ss, socklen_t *len, const char **host,
                    bool by_source)
{
	const struct dns_result *res = pool->hops;
	if (!res || !res->nhops)
		return false;
	unsigned n = res->nhops, g = 1, usable = 0;
	while (g < n && res->hops[g].pref == res->hops[0].pref)
		g++;
	/* The best-preference group starts at a rotating position, so that
	 * sessions spread over equal exchangers; the rest keep their order. */
	for (unsigned j = 0; j < n; j++) {
		unsigned idx = j < g ? (start + j) % g : j;
		const struct dns_hop *h = &res->hops[idx];
		if (ours(dl, &h->addr.sa, pool->port))
			continue;
		if (by_source && !delivery_pool_reaches(pool, h->addr.sa.sa_family))
			continue;
		if (usable++ != k)
			continue;
		memset(ss, 0, sizeof(*ss));
		memcpy(ss, &h->addr, h->len);
		*len = h->len;
		if (host)
			*host = h->host;
		conn_addr_set_port(ss, pool->port);
		return true;
	}
	return false;
}

bool delivery_hop(const struct delivery *dl, const struct delivery_pool *pool, unsigned start,
                  unsigned k, struct sockaddr_storage *ss, socklen_t *len, const char **host)
{
	return hop_get(dl, pool, start, k, ss, len, host, true);
}

bool delivery_hop_any(const struct delivery *dl, const struct delivery_pool *pool,
                      struct sockaddr_storage *ss, socklen_t *len, const char **host)
{
	return hop_get(dl, pool, 0, 0, ss, len, host, false);
}

/* usable_hops - how many of pool's hops are not our own listeners (a
 * source that fits none of them is not a loop: see session_open). */
static unsigned usable_hops(const struct delivery *dl, const struct delivery_pool *pool)
{
	struct sockaddr_storage ss;
	socklen_t len;
	unsigned n = 0;
	while (hop_get(dl, pool, 0, n, &ss, &len, NULL, false))
		n++;
	return n;
}

struct delivery_route *delivery_route_of(struct sched_dest *d)
{
	if (!d->owner) {
		struct delivery_route *rt = xcalloc(1, sizeof(*rt));
		rt->dest = d;
		d->owner = rt;
	}
	return d->owner;
}

static int name_cmp(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* pool_key - the same next hops give the same key: names sorted within each
 * preference (equal preferences come shuffled), the preferences in order
 * and separated by '>'. The order is part of the key: domains that rank the
 * same exchangers differently must not share a pool, or one domain's mail
 * rides the other's sessions to its own backup exchanger. */
static void pool_key(const char *kind, const struct dns_result *res, uint16_t port, char *out,
                     size_t outlen)
{
	const char **names = xcalloc(res->nhops ? res->nhops : 1, sizeof(*names));
	size_t o = (size_t)snprintf(out, outlen, "%s:", kind);
	unsigned i = 0;
	while (i < res->nhops && o < outlen) {
		unsigned j = i, n = 0;
		while (j < res->nhops && res->hops[j].pref == res->hops[i].pref)
			names[n++] = res->hops[j++].host; /* hops come in preference order */
		qsort(names, n, sizeof(names[0]), name_cmp);
		for (unsigned k = 0; k < n && o < outlen; k++) {
			if (k && !strcmp(names[k], names[k - 1]))
				continue;
			o += (size_t)snprintf(out + o, outlen - o, "%s%s",
			                      k   ? ","
			                      : i ? ">"
			                          : "",
			                      names[k]);
		}
		i = j;
	}
	if (o < outlen)
		snprintf(out + o, outlen - o, ":%u", port);
	free(names);
}

/* key_settings - what of cd is part of its destination, appended to key:
 * ";tls=POLICY" unless opportunistic, ";source=A,B" and ";ehlo=NAME" when
 * set (the addresses as inet_ntop writes them, in their order). */
static void key_settings(const struct cfg_domain *cd, struct buf *key)
{
	if (cd->tls != CFG_TLS_OPPORTUNISTIC)
		buf_printf(key, ";tls=%s", config_tls_policy_name(cd->tls));
	for (unsigned i = 0; i < cd->nsources; i++)
		buf_printf(key, "%s%s", i ? "," : ";source=", cd->sources[i].text);
	if (cd->ehlo[0])
		buf_printf(key, ";ehlo=%s", cd->ehlo);
}

/* route_set - rt now leads to res's hops (kind "mx", "route", "literal").
 * The domain's TLS policy, source addresses and EHLO name are part of the
 * destination: a session that carries one domain's mail may carry every
 * member's, so domains that ask for more than opportunistic TLS
 * ("...:25;tls=verify"), or send from other addresses or under another
 * name ("...:25;source=192.0.2.1;ehlo=out.example"), never share
 * sessions. */
static void route_set(struct delivery *dl, struct delivery_route *rt, const char *kind,
                      struct dns_result *res, uint16_t port)
{
	char hops[1024];
	const struct cfg_domain *cd = config_domain(dl->cfg, rt->dest->name);
	pool_key(kind, res, port, hops, sizeof(hops));
	struct buf kb = { 0 };
	buf_puts(&kb, hops);
	key_settings(cd, &kb);
	const char *key = buf_cstr(&kb);
	struct delivery_pool *p = delivery_pool_get(dl, key, res, port, cd);
	if (rt->pool != p) {
		if (rt->pool)
			delivery_pool_leave(rt->pool, rt->dest);
		delivery_pool_join(p, rt->dest);
		if (rt->pool)
			log_info("dest %s: next hops are now %s", rt->dest->name, key);
		rt->pool = p;
	}
	buf_free(&kb);
	if (rt->res != res) {
		dns_result_ref(res);
		dns_result_unref(rt->res);
		rt->res = res;
	}
	rt->expires_ms = res->expires_ms;
}

/* route_fail - no way out: tell the scheduler, as the DNS answer says. */
static void route_fail(struct delivery *dl, struct delivery_route *rt, enum attempt_kind kind,
                       const char *text)
{
	struct attempt_report rep;
	outcome_report_set(&rep, kind, STAGE_CONNECT, 0, text);
	sched_dest_failed(dl->sched, rt->dest, &rep, NULL, rp_now_ms());
	delivery_touch(dl);
}

/* A lookup on its way; freed when the answer comes. */
struct resolve_ctx {
	struct delivery *dl;
	struct delivery_route *rt;
	uint16_t port;
	const char *kind;
};

/* check_loop - a route whose every hop is one of our listeners fails. */
static bool check_loop(struct delivery *dl, struct delivery_route *rt)
{
	if (usable_hops(dl, rt->pool))
		return false;
	char text[300];
	snprintf(text, sizeof(text), "mail for %s loops back to myself", rt->dest->name);
	route_fail(dl, rt, ATTEMPT_LOOP, text);
	return true;
}

enum attempt_kind delivery_dns_kind(enum dns_status st)
{
	switch (st) {
	case DNS_NXDOMAIN:
		return ATTEMPT_DNS_PERM;
	case DNS_NULL_MX:
		return ATTEMPT_NULL_MX;
	case DNS_NO_ADDRESS:
		return ATTEMPT_NO_ROUTE;
	case DNS_OK: /* not a failure; never asked */
	case DNS_TEMPFAIL:
		break;
	} /* no default: a new status must be placed here (-Wswitch) */
	return ATTEMPT_DNS_TEMP;
}

/* route_expires - when to look d's route up again: the answer's expiry, but
 * never sooner than ROUTE_MIN_MS from now. An answer that expired on arrival
 * (TTL 0, dnsmasq's default for its own records; max_ttl or negative_ttl 0)
 * would otherwise be looked up again by the very kick it triggers, and
 * again, without end. */
#define ROUTE_MIN_MS 1000
static uint64_t route_expires(const struct dns_result *res)
{
	uint64_t min = rp_mono_ms() + ROUTE_MIN_MS;
	return res->expires_ms > min ? res->expires_ms : min;
}

/* resolved - the DNS answered for a route. */
static void resolved(void *arg, struct dns_result *res)
{
	struct resolve_ctx *c = arg;
	struct delivery *dl = c->dl;
	struct delivery_route *rt = c->rt;
	rt->resolving = false;
	if (res->status == DNS_OK) {
		route_set(dl, rt, c->kind, res, c->port);
		rt->expires_ms = route_expires(res);
		free(c);
		if (!check_loop(dl, rt))
			sched_kick(dl->sched, rt->dest);
		delivery_touch(dl);
		return;
	}
	free(c);
	rt->expires_ms = route_expires(res);
	if (res->status == DNS_TEMPFAIL && rt->pool) {
		/* Keep using the last good answer while the DNS is unwell; the
		 * kick waited for this answer. */
		log_info("dest %s: %s; keeping the previous next hops", rt->dest->name, res->error);
		sched_kick(dl->sched, rt->dest);
		delivery_touch(dl);
		return;
	}
	if (rt->pool) {
		delivery_pool_leave(rt->pool, rt->dest);
		rt->pool = NULL;
	}
	route_fail(dl, rt, delivery_dns_kind(res->status), res->error);
}

/* fixed_route - a single known address (an IP route or a domain literal). */
static bool fixed_route(struct delivery *dl, struct delivery_route *rt, const char *kind,
                        const struct sockaddr *sa, socklen_t len, const char *name, uint16_t port)
{
	struct dns_result *res = dns_result_new(DNS_OK, 1, strlen(name) + 1);
	strcpy(res->names, name);
	res->hops[0].host = res->names;
	memcpy(&res->hops[0].addr, sa, len);
	res->hops[0].len = len;
	res->nhops = 1;
	res->expires_ms = UINT64_MAX;
	route_set(dl, rt, kind, res, port);
	dns_result_unref(res);
	return !check_loop(dl, rt);
}

/* literal - "[192.0.2.1]" or "[IPv6:2001:db8::1]" as an address. */
static bool literal(const char *name, struct sockaddr_storage *ss, socklen_t *len)
{
	char tmp[64];
	size_t n = strlen(name);
	if (n < 3 || name[0] != '[' || name[n - 1] != ']' || n - 2 >= sizeof(tmp))
		return false;
	memcpy(tmp, name + 1, n - 2);
	tmp[n - 2] = '\0';
	memset(ss, 0, sizeof(*ss));
	struct sockaddr_in *sin = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
	if (!strncasecmp(tmp, "ipv6:", 5) && inet_pton(AF_INET6, tmp + 5, &sin6->sin6_addr) == 1) {
		sin6->sin6_family = AF_INET6;
		*len = sizeof(*sin6);
		return true;
	}
	if (inet_pton(AF_INET, tmp, &sin->sin_addr) == 1) {
		sin->sin_family = AF_INET;
		*len = sizeof(*sin);
		return true;
	}
	return false;
}

bool delivery_route_refresh(struct delivery *dl, struct delivery_route *rt)
{
	struct sched_dest *d = rt->dest;
	const struct cfg_domain *cd = config_domain(dl->cfg, d->name);
	rt->warmup = cd->nwarmup > 0;
	if (cd->route.set && cd->route.sslen)
		return fixed_route(dl, rt, "route", (const struct sockaddr *)&cd->route.ss,
		                   cd->route.sslen, cd->route.host, cd->route.port);
	struct sockaddr_storage ss;
	socklen_t len;
	if (d->name[0] == '[') {
		if (literal(d->name, &ss, &len))
			return fixed_route(dl, rt, "literal", (struct sockaddr *)&ss, len, d->name,
			                   cd->port);
		char text[300];
		snprintf(text, sizeof(text), "bad domain literal %s", d->name);
		route_fail(dl, rt, ATTEMPT_DNS_PERM, text);
		return false;
	}
	if (!dl->dns) {
		route_fail(dl, rt, ATTEMPT_NO_ROUTE, "no resolver");
		return false;
	}
	if (rt->resolving)
		return rt->pool != NULL;
	rt->resolving = true;
	struct resolve_ctx *c = xcalloc(1, sizeof(*c));
	c->dl = dl;
	c->rt = rt;
	if (cd->route.set) {
		c->kind = "route";
		c->port = cd->route.port;
		dns_resolve_host(dl->dns, cd->route.host, resolved, c);
	} else {
		c->kind = "mx";
		c->port = cd->port;
		dns_resolve_mx(dl->dns, d->name, resolved, c);
	}
	/* The answer may have come from the cache already. */
	return rt->pool != NULL && !rt->resolving;
}

void delivery_route_free(struct sched_dest *d, void *arg)
{
	(void)arg;
	struct delivery_route *rt = d->owner;
	if (!rt)
		return;
	dns_result_unref(rt->res);
	free(rt);
	d->owner = NULL;
}
