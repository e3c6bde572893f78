/* delivery.c - routes per domain and connection pools per destination
 * (see delivery.h).
 *
 * Invariants:
 * - A route belongs to one domain (sched_dest->owner); a pool is shared by
 *   the domains whose routes lead to the same next hops (its key).
 * - pool->nsessions never passes pool->max_connections, the smallest
 *   max_connections of its domains: the domains behind the same next hops
 *   share one limit (a provider hosting many domains sees one sender), and
 *   every domain's own limit holds.
 * - A session is accounted to the domain that opened it (sched
 *   session_opened/closed), whichever domain's jobs it carries later: a
 *   ready session takes the next job of the pool's domains round-robin
 *   (a big domain does not starve the small ones behind the same hops).
 *   Each domain opens sessions for its own ready jobs (route->nconnecting),
 *   so one member's connecting sessions do not keep the others from
 *   opening theirs.
 */
#include "delivery.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>

#include "base/log.h"
#include "base/util.h"
#include "shard.h"
#include "smtp_client.h"

/* ---- pools ------------------------------------------------------------- */

static uint32_t pool_hash(const char *key)
{
	return (uint32_t)rp_hash64(key, strlen(key));
}

static void pool_limits(struct delivery_pool *p)
{
	uint32_t max = UINT32_MAX;
	for (unsigned i = 0; i < p->nmembers; i++)
		if (p->members[i]->lim.max_connections < max)
			max = p->members[i]->lim.max_connections;
	p->max_connections = max == UINT32_MAX ? 1 : max;
}

static struct delivery_pool *pool_get(struct shard *sh, const char *key, struct dns_result *hops,
				      uint16_t port)
{
	if (!sh->pool_tab_size) {
		sh->pool_tab_size = 256;
		sh->pool_tab = xcalloc(sh->pool_tab_size, sizeof(*sh->pool_tab));
	}
	uint32_t h = pool_hash(key) & (sh->pool_tab_size - 1);
	struct delivery_pool *p;
	for (p = sh->pool_tab[h]; p; p = p->hnext)
		if (!strcmp(p->key, key))
			break;
	if (!p) {
		p = xcalloc(1, sizeof(*p));
		p->key = xstrdup(key);
		p->hnext = sh->pool_tab[h];
		sh->pool_tab[h] = p;
		sh->npools++;
	}
	if (p->hops != hops) {
		dns_result_ref(hops);
		dns_result_unref(p->hops);
		p->hops = hops; /* a fresher answer for the same hosts */
	}
	p->port = port;
	p->used_ms = rp_mono_ms();
	return p;
}

static void pool_join(struct delivery_pool *p, struct sched_dest *d)
{
	if (p->nmembers == p->members_cap) {
		p->members_cap = p->members_cap ? p->members_cap * 2 : 4;
		p->members = xrealloc(p->members, p->members_cap * sizeof(*p->members));
	}
	p->members[p->nmembers++] = d;
	pool_limits(p);
}

/* The active ring: the pool's domains that may have work. A domain joins
 * when the scheduler kicks it with ready jobs and leaves when it gives no
 * job (empty, held, suspended, rate-limited, expired answer); the
 * scheduler kicks it again when that changes. Sessions pull from the ring
 * round-robin, so a pool of 10,000 mostly idle domains costs no scan. */
static void active_add(struct delivery_pool *p, struct delivery_route *rt)
{
	if (rt->active)
		return;
	rt->active = true;
	struct delivery_route *h = p->active;
	if (!h) {
		rt->active_next = rt->active_prev = rt;
		p->active = rt;
		return;
	}
	rt->active_next = h; /* at the tail: its turn comes last */
	rt->active_prev = h->active_prev;
	h->active_prev->active_next = rt;
	h->active_prev = rt;
}

static void active_del(struct delivery_pool *p, struct delivery_route *rt)
{
	if (!rt->active)
		return;
	rt->active = false;
	if (rt->active_next == rt) {
		p->active = NULL;
	} else {
		rt->active_prev->active_next = rt->active_next;
		rt->active_next->active_prev = rt->active_prev;
		if (p->active == rt)
			p->active = rt->active_next;
	}
	rt->active_next = rt->active_prev = NULL;
}

static void pool_leave(struct delivery_pool *p, struct sched_dest *d)
{
	if (d->owner)
		active_del(p, d->owner);
	for (unsigned i = 0; i < p->nmembers; i++)
		if (p->members[i] == d) {
			p->members[i] = p->members[--p->nmembers];
			break;
		}
	pool_limits(p);
}

/* ours - whether addr:port is one of our own listeners (mail would loop). */
static bool ours(const struct shard *sh, const struct sockaddr *sa, uint16_t port)
{
	const struct relay *r = sh->relay;
	for (unsigned i = 0; i < r->nours; i++) {
		const struct sockaddr_storage *o = &r->ours[i];
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

bool delivery_hop(struct shard *sh, struct delivery_pool *pool, unsigned start, unsigned k,
		  struct sockaddr_storage *ss, socklen_t *len)
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
		if (ours(sh, &h->addr.sa, pool->port))
			continue;
		if (usable++ != k)
			continue;
		memset(ss, 0, sizeof(*ss));
		memcpy(ss, &h->addr, h->len);
		*len = h->len;
		if (ss->ss_family == AF_INET)
			((struct sockaddr_in *)ss)->sin_port = htons(pool->port);
		else
			((struct sockaddr_in6 *)ss)->sin6_port = htons(pool->port);
		return true;
	}
	return false;
}

static unsigned usable_hops(struct shard *sh, struct delivery_pool *pool)
{
	struct sockaddr_storage ss;
	socklen_t len;
	unsigned n = 0;
	while (delivery_hop(sh, pool, 0, n, &ss, &len))
		n++;
	return n;
}

/* ---- routes ------------------------------------------------------------ */

static struct delivery_route *route_of(struct shard *sh, struct sched_dest *d)
{
	(void)sh;
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
	const char *names[res->nhops ? res->nhops : 1];
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
			o += (size_t)snprintf(out + o, outlen - o, "%s%s", k ? "," : i ? ">" : "",
					      names[k]);
		}
		i = j;
	}
	if (o < outlen)
		snprintf(out + o, outlen - o, ":%u", port);
}

static void route_set(struct shard *sh, struct delivery_route *rt, const char *kind,
		      struct dns_result *res, uint16_t port)
{
	char key[1024];
	pool_key(kind, res, port, key, sizeof(key));
	struct delivery_pool *p = pool_get(sh, key, res, port);
	if (rt->pool != p) {
		if (rt->pool)
			pool_leave(rt->pool, rt->dest);
		pool_join(p, rt->dest);
		if (rt->pool)
			log_info("dest %s: next hops are now %s", rt->dest->name, key);
		rt->pool = p;
	}
	if (rt->res != res) {
		dns_result_ref(res);
		dns_result_unref(rt->res);
		rt->res = res;
	}
	rt->expires_ms = res->expires_ms;
}

/* route_fail - no way out: tell the scheduler, as the DNS answer says. */
static void route_fail(struct shard *sh, struct delivery_route *rt, enum attempt_kind kind,
		       const char *text)
{
	struct attempt_report rep;
	snprintf(rt->why, sizeof(rt->why), "%s", text);
	outcome_report_set(&rep, kind, STAGE_CONNECT, 0, text);
	sched_dest_failed(sh->sched, rt->dest, &rep, NULL, rp_now_ms());
	shard_touch(sh);
}

struct resolve_ctx {
	struct shard *sh;
	struct delivery_route *rt;
	uint16_t port;
	const char *kind;
};

/* check_loop - a route whose every hop is one of our listeners. */
static bool check_loop(struct shard *sh, struct delivery_route *rt)
{
	if (usable_hops(sh, rt->pool))
		return false;
	char text[300];
	snprintf(text, sizeof(text), "mail for %s loops back to myself", rt->dest->name);
	route_fail(sh, rt, ATTEMPT_LOOP, text);
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

static void resolved(void *arg, struct dns_result *res)
{
	struct resolve_ctx *c = arg;
	struct shard *sh = c->sh;
	struct delivery_route *rt = c->rt;
	rt->resolving = false;
	if (res->status == DNS_OK) {
		route_set(sh, rt, c->kind, res, c->port);
		rt->expires_ms = route_expires(res);
		free(c);
		if (!check_loop(sh, rt))
			sched_kick(sh->sched, rt->dest);
		shard_touch(sh);
		return;
	}
	free(c);
	rt->expires_ms = route_expires(res);
	if (res->status == DNS_TEMPFAIL && rt->pool) {
		/* Keep using the last good answer while the DNS is unwell; the
		 * kick waited for this answer. */
		log_info("dest %s: %s; keeping the previous next hops", rt->dest->name, res->error);
		sched_kick(sh->sched, rt->dest);
		shard_touch(sh);
		return;
	}
	if (rt->pool) {
		pool_leave(rt->pool, rt->dest);
		rt->pool = NULL;
	}
	route_fail(sh, rt, delivery_dns_kind(res->status), res->error);
}

/* fixed_route - a single known address (an IP route or a domain literal). */
static bool fixed_route(struct shard *sh, struct delivery_route *rt, const char *kind,
			const struct sockaddr *sa, socklen_t len, const char *name, uint16_t port)
{
	struct dns_result *res = dns_result_new(DNS_OK, 1, strlen(name) + 1);
	strcpy(res->names, name);
	res->hops[0].host = res->names;
	memcpy(&res->hops[0].addr, sa, len);
	res->hops[0].len = len;
	res->nhops = 1;
	res->expires_ms = UINT64_MAX;
	route_set(sh, rt, kind, res, port);
	dns_result_unref(res);
	return !check_loop(sh, rt);
}

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

/* route_refresh - find (or find again) where d's mail goes. Returns true
 * when a usable route is in place now; false while it is being looked up
 * or when there is none (the scheduler has been told). */
static bool route_refresh(struct shard *sh, struct delivery_route *rt)
{
	struct sched_dest *d = rt->dest;
	const struct cfg_domain *cd = config_domain(sh->cfg, d->name);
	if (cd->route.set && cd->route.sslen)
		return fixed_route(sh, rt, "route", (const struct sockaddr *)&cd->route.ss,
				   cd->route.sslen, cd->route.host, cd->route.port);
	struct sockaddr_storage ss;
	socklen_t len;
	if (d->name[0] == '[') {
		if (literal(d->name, &ss, &len))
			return fixed_route(sh, rt, "literal", (struct sockaddr *)&ss, len, d->name,
					   cd->port);
		char text[300];
		snprintf(text, sizeof(text), "bad domain literal %s", d->name);
		route_fail(sh, rt, ATTEMPT_DNS_PERM, text);
		return false;
	}
	if (!sh->dns) {
		route_fail(sh, rt, ATTEMPT_NO_ROUTE, "no resolver");
		return false;
	}
	if (rt->resolving)
		return rt->pool != NULL;
	rt->resolving = true;
	struct resolve_ctx *c = xcalloc(1, sizeof(*c));
	c->sh = sh;
	c->rt = rt;
	if (cd->route.set) {
		c->kind = "route";
		c->port = cd->route.port;
		dns_resolve_host(sh->dns, cd->route.host, resolved, c);
	} else {
		c->kind = "mx";
		c->port = cd->port;
		dns_resolve_mx(sh->dns, d->name, resolved, c);
	}
	/* The answer may have come from the cache already. */
	return rt->pool != NULL && !rt->resolving;
}

/* ---- the scheduler's side ---------------------------------------------- */

static void pool_kick(struct sched_dest *d, void *ctx)
{
	struct shard *sh = ctx;
	struct delivery_route *rt = route_of(sh, d);
	uint64_t now = rp_now_ms();
	if (sh->stopping)
		return;
	if (!rt->pool || rp_mono_ms() >= rt->expires_ms) {
		route_refresh(sh, rt);
		/* Not even an expired route while the new answer is on its way:
		 * mail after the TTL goes where the DNS says now. */
		if (!rt->pool || rt->resolving)
			return; /* the answer kicks again */
	}
	struct delivery_pool *pool = rt->pool;
	pool->used_ms = rp_mono_ms();
	if (d->nready_jobs)
		active_add(pool, rt);
	/* Work goes to idle sessions first: connection reuse. */
	while (pool->idle) {
		struct sched_job *job = sched_job_next(sh->sched, d, now);
		if (!job)
			break;
		struct smtp_client *c = pool->idle;
		delivery_unidle(pool, c);
		smtp_client_give(c, job);
	}
	/* Then new sessions, as many as d has jobs for, within limits. */
	while (rt->nconnecting < d->nready_jobs && pool->nsessions < pool->max_connections &&
	       sched_dest_may_connect(sh->sched, d, now)) {
		unsigned start = pool->rr_hop++;
		if (!smtp_client_open(sh, pool, d, start, 0)) {
			char why[300];
			struct attempt_report rep;
			snprintf(why, sizeof(why), "cannot open a session: %s", strerror(errno));
			outcome_report_set(&rep, ATTEMPT_LOCAL, STAGE_CONNECT, 0, why);
			sched_dest_failed(sh->sched, d, &rep, NULL, now);
			break;
		}
	}
	shard_touch(sh);
}

static void pool_configure(struct sched_dest *d, void *ctx)
{
	struct shard *sh = ctx;
	const struct cfg_domain *cd = config_domain(sh->cfg, d->name);
	d->lim.max_connections = cd->max_connections;
	d->lim.max_msgs_per_conn = cd->max_messages_per_connection;
	d->lim.max_rcpts_per_msg = cd->max_recipients_per_message;
	d->lim.rate = cd->rate;
	d->lim.connect_timeout_ms = cd->connect_timeout_ms;
	struct delivery_route *rt = d->owner;
	if (rt) {
		rt->expires_ms = 0; /* a reload may change the route: look again */
		if (rt->pool)
			pool_limits(rt->pool);
	}
}

const struct sched_ops delivery_sched_ops = {
	.kick = pool_kick,
	.configure = pool_configure,
};

/* ---- sessions ---------------------------------------------------------- */

struct sched_job *delivery_next(struct shard *sh, struct delivery_pool *pool)
{
	if (sh->stopping)
		return NULL;
	uint64_t now = rp_now_ms(), mono = rp_mono_ms();
	struct delivery_route *rt;
	while ((rt = pool->active)) {
		if (mono >= rt->expires_ms) {
			/* Its answer has expired: its kick looks it up again
			 * before it sends more mail anywhere. */
			active_del(pool, rt);
			sched_kick(sh->sched, rt->dest);
			continue;
		}
		struct sched_job *job = sched_job_next(sh->sched, rt->dest, now);
		if (!job) {
			active_del(pool, rt);
			continue;
		}
		pool->active = rt->active_next; /* round-robin */
		return job;
	}
	return NULL;
}

void delivery_session_opened(struct shard *sh, struct smtp_client *c)
{
	c->pool->nsessions++;
	route_of(sh, c->acct)->nconnecting++;
	sched_session_opened(sh->sched, c->acct);
}

void delivery_session_ready(struct shard *sh, struct smtp_client *c)
{
	struct delivery_route *rt = route_of(sh, c->acct);
	rp_assert(rt->nconnecting > 0);
	rt->nconnecting--;
	c->pool->nworking++;
	sched_dest_ok(sh->sched, c->acct);
}

void delivery_idle(struct shard *sh, struct delivery_pool *pool, struct smtp_client *c)
{
	(void)sh;
	rp_assert(!c->in_idle_list);
	c->idle_next = pool->idle;
	pool->idle = c;
	pool->nidle++;
	c->in_idle_list = true;
}

void delivery_unidle(struct delivery_pool *pool, struct smtp_client *c)
{
	if (!c->in_idle_list)
		return;
	for (struct smtp_client **pp = &pool->idle; *pp; pp = &(*pp)->idle_next) {
		if (*pp == c) {
			*pp = c->idle_next;
			break;
		}
	}
	c->idle_next = NULL;
	c->in_idle_list = false;
	pool->nidle--;
}

bool delivery_failed(struct shard *sh, struct smtp_client *c, const struct attempt_report *rep)
{
	struct delivery_pool *pool = c->pool;
	uint64_t now = rp_now_ms();
	/* RFC 5321 5.1: on a connection failure or a refusal at the greeting,
	 * try the next exchanger before deferring. */
	struct sockaddr_storage ss;
	socklen_t len;
	if (!sh->stopping && delivery_hop(sh, pool, c->hop_start, c->hop_k + 1, &ss, &len)) {
		log_info("smtp %s %s: %s; trying the next exchanger", c->acct->name, c->remote,
			 rep->text);
		if (smtp_client_open(sh, pool, c->acct, c->hop_start, c->hop_k + 1))
			return true;
	}
	/* One refused connection while other sessions work is not a dead
	 * destination (a server limiting concurrency): just log it. */
	if (pool->nworking > 0 && rep->kind != ATTEMPT_REPLY) {
		log_info("smtp %s %s: session failed while others work: %s", c->acct->name, c->remote,
			 rep->text);
		return false;
	}
	/* The next hops failed: every domain behind them backs off. */
	for (unsigned i = 0; i < pool->nmembers; i++)
		sched_dest_failed(sh->sched, pool->members[i], rep, c->remote, now);
	shard_touch(sh);
	return false;
}

void delivery_session_gone(struct shard *sh, struct smtp_client *c, bool was_connecting)
{
	struct delivery_pool *pool = c->pool;
	if (was_connecting) {
		struct delivery_route *rt = route_of(sh, c->acct);
		rp_assert(rt->nconnecting > 0);
		rt->nconnecting--;
	}
	pool->nsessions--;
	pool->used_ms = rp_mono_ms();
	sched_session_closed(sh->sched, c->acct);
	/* A freed slot in the pool may let another member with work open a
	 * session. */
	struct delivery_route *rt = pool->active;
	if (rt) {
		do {
			sched_kick(sh->sched, rt->dest);
			rt = rt->active_next;
		} while (rt != pool->active);
	}
	shard_touch(sh);
}

static void free_route(struct sched_dest *d, void *arg)
{
	(void)arg;
	struct delivery_route *rt = d->owner;
	if (!rt)
		return;
	dns_result_unref(rt->res);
	free(rt);
	d->owner = NULL;
}

void delivery_free(struct shard *sh)
{
	sched_foreach_dest(sh->sched, free_route, NULL);
	for (uint32_t i = 0; i < sh->pool_tab_size; i++) {
		struct delivery_pool *p = sh->pool_tab[i];
		while (p) {
			struct delivery_pool *next = p->hnext;
			dns_result_unref(p->hops);
			free(p->members);
			free(p->key);
			free(p);
			p = next;
		}
	}
	free(sh->pool_tab);
	sh->pool_tab = NULL;
	sh->pool_tab_size = 0;
	sh->npools = 0;
}

unsigned delivery_pools(struct shard *sh, void (*fn)(const struct delivery_pool *p, void *arg),
			void *arg)
{
	unsigned n = 0;
	for (uint32_t i = 0; i < sh->pool_tab_size; i++)
		for (struct delivery_pool *p = sh->pool_tab[i]; p; p = p->hnext) {
			fn(p, arg);
			n++;
		}
	return n;
}
