/* delivery.c - connection pools per destination and the SMTP client
 * sessions in them (see delivery.h); routes are in delivery_route.c.
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
 * - Every session is on dl->sessions from smtp_client_open until its
 *   engine's done callback; only then is its delivery_session freed.
 * - TLS: a pool's domains share its TLS policy (part of its key). Its kept
 *   sessions for resumption are keyed by (exchanger name, address, port),
 *   at most DELIVERY_TLS_KEEP, taken by the session that resumes one (a
 *   TLS 1.3 ticket is for one use) and refilled from every session's
 *   newest ticket; they go with the pool or with a new client context.
 *   Under opportunistic TLS a failed handshake is tried again once, in
 *   clear text, on a new session to the same hop.
 * - Source addresses and the EHLO name ([domain] source, ehlo) are part of
 *   the pool's key too: a session bound to one domain's addresses and
 *   greeting with its name never carries another domain's mail. A new
 *   session takes the pool's next source of its hop's family (round
 *   robin); hops of a family no source has are skipped, and with none
 *   left the attempt fails as a local problem (deferred, never bounced).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "base/log.h"
#include "base/util.h"
#include "delivery_impl.h"

#define STALL_SCAN_MS 500 /* stall_scan's period while sessions connect */

static bool session_open(struct delivery *dl, struct delivery_pool *pool, struct sched_dest *acct,
                         unsigned start, unsigned k, bool clear_text, char *why, size_t whylen);
static bool pool_room(struct delivery *dl, struct delivery_pool *pool, struct sched_dest *d);
static void rate_configure(struct delivery *dl, struct sched_dest *d, const struct cfg_domain *cd);
static void pool_rates(struct delivery *dl, struct delivery_pool *pool);
static void pool_kick_members(struct delivery *dl, struct delivery_pool *pool);
static uint64_t pool_ready(struct delivery_pool *pool);
static bool rate_covered(const struct delivery_pool *pool, const struct sched_dest *d);
static void rekick(struct loop_timer *t);
static void stall_scan(struct loop_timer *t);
static void unstall(struct delivery_session *ds);
static uint32_t warm_left(struct delivery *dl, const struct delivery_source *src,
                          struct sched_dest *d);
static void warm_take(struct delivery *dl, const struct delivery_source *src, struct sched_dest *d);
static uint64_t warm_total(struct delivery *dl, struct delivery_pool *pool, struct sched_dest *d);
static bool warm_hold(struct delivery *dl, struct delivery_pool *pool, struct sched_dest *d);
static bool over_cluster_share(struct delivery *dl, struct delivery_pool *pool);
static void trim_idle(struct delivery *dl, struct delivery_pool *pool);

void delivery_touch(struct delivery *dl)
{
	dl->touch(dl->arg);
}

/* ---- pools ------------------------------------------------------------- */

static uint32_t pool_hash(const char *key)
{
	return (uint32_t)rp_hash64(key, strlen(key));
}

void delivery_pool_limits(struct delivery_pool *p)
{
	uint32_t max = UINT32_MAX;
	for (unsigned i = 0; i < p->nmembers; i++)
		if (p->members[i]->lim.max_connections < max)
			max = p->members[i]->lim.max_connections;
	p->max_connections = max == UINT32_MAX ? 1 : max;
}

/* pool_sources - a new pool's copy of cd's source addresses and EHLO name. */
static void pool_sources(struct delivery_pool *p, const struct cfg_domain *cd)
{
	p->nsources = cd->nsources;
	p->sources = p->nsources ? xcalloc(p->nsources, sizeof(*p->sources)) : NULL;
	for (unsigned i = 0; i < p->nsources; i++)
		p->sources[i].a = cd->sources[i];
	p->ehlo = cd->ehlo[0] ? xstrdup(cd->ehlo) : NULL;
}

bool delivery_pool_reaches(const struct delivery_pool *pool, int family)
{
	if (!pool->nsources)
		return true;
	for (unsigned i = 0; i < pool->nsources; i++)
		if (pool->sources[i].a.ss.ss_family == family)
			return true;
	return false;
}

/* source_pick - the pool's next source of this family (round robin) that
 * acct's warm-up lets send today, or NULL when it has none. */
static struct delivery_source *source_pick(struct delivery *dl, struct delivery_pool *p, int family,
                                           struct sched_dest *acct)
{
	for (unsigned i = 0; i < p->nsources; i++) {
		unsigned idx = (p->rr_source + i) % p->nsources;
		if (p->sources[idx].a.ss.ss_family == family &&
		    warm_left(dl, &p->sources[idx], acct)) {
			p->rr_source = (idx + 1) % p->nsources;
			return &p->sources[idx];
		}
	}
	return NULL;
}

struct delivery_pool *delivery_pool_get(struct delivery *dl, const char *key,
                                        struct dns_result *hops, uint16_t port,
                                        const struct cfg_domain *cd)
{
	if (!dl->pool_tab_size) {
		dl->pool_tab_size = 256;
		dl->pool_tab = xcalloc(dl->pool_tab_size, sizeof(*dl->pool_tab));
	}
	uint32_t h = pool_hash(key) & (dl->pool_tab_size - 1);
	struct delivery_pool *p;
	for (p = dl->pool_tab[h]; p; p = p->hnext)
		if (!strcmp(p->key, key))
			break;
	if (!p) {
		p = xcalloc(1, sizeof(*p));
		p->key = xstrdup(key);
		p->tls_policy = cd->tls;
		shape_init(&p->shape, cd->max_connections);
		pool_sources(p, cd);
		rp_list_init(&p->active);
		rp_list_init(&p->idle);
		rp_list_init(&p->idle_new);
		p->hnext = dl->pool_tab[h];
		dl->pool_tab[h] = p;
		dl->npools++;
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

void delivery_pool_join(struct delivery_pool *p, struct sched_dest *d)
{
	if (p->nmembers == p->members_cap) {
		p->members_cap = p->members_cap ? p->members_cap * 2 : 4;
		p->members = xrealloc(p->members, p->members_cap * sizeof(*p->members));
	}
	p->members[p->nmembers++] = d;
	delivery_pool_limits(p);
}

/* The active ring: the pool's domains that may have work. A domain joins
 * when the scheduler kicks it with ready jobs and leaves when it gives no
 * job (empty, held, suspended, rate-limited, expired answer); the
 * scheduler kicks it again when that changes. Sessions pull from the ring
 * round-robin, so a pool of 10,000 mostly idle domains costs no scan. */
static void active_add(struct delivery_pool *p, struct delivery_route *rt)
{
	if (!rp_list_linked(&rt->active_link))
		rp_list_add_tail(&p->active, &rt->active_link); /* its turn comes last */
}

void delivery_pool_leave(struct delivery_pool *p, struct sched_dest *d)
{
	struct delivery_route *rt = d->owner;
	if (rt)
		rp_list_del(&rt->active_link);
	for (unsigned i = 0; i < p->nmembers; i++)
		if (p->members[i] == d) {
			p->members[i] = p->members[--p->nmembers];
			break;
		}
	delivery_pool_limits(p);
}

/* pool_next - a session of pool is ready for work: a job from any of the
 * pool's domains (round-robin), or NULL. */
static struct sched_job *pool_next(struct delivery *dl, struct delivery_session *ds)
{
	struct delivery_pool *pool = ds->pool;
	if (dl->stopping)
		return NULL;
	uint64_t now = rp_now_ms(), mono = rp_mono_ms();
	struct rp_list *pos, *tmp;
	rp_list_foreach_safe(pos, tmp, &pool->active)
	{
		struct delivery_route *rt = rp_list_entry(pos, struct delivery_route, active_link);
		if (mono >= rt->expires_ms) {
			/* Its answer has expired: its kick looks it up again
			 * before it sends more mail anywhere. */
			rp_list_del(&rt->active_link);
			sched_kick(dl->sched, rt->dest);
			continue;
		}
		/* Not from a source that has sent today's warm-up cap there:
		 * its kick opens a session from another (and lets this one go
		 * once idle); with none left the domain waits. */
		uint32_t left = warm_left(dl, ds->src, rt->dest);
		if (!left) {
			if (warm_hold(dl, pool, rt->dest))
				rp_list_del(&rt->active_link);
			else
				sched_kick(dl->sched, rt->dest);
			continue;
		}
		struct sched_job *job = sched_job_next(dl->sched, rt->dest, now);
		if (!job) {
			rp_list_del(&rt->active_link);
			continue;
		}
		if (left != WARMUP_NO_CAP)
			warm_take(dl, ds->src, rt->dest);
		rp_list_move_tail(&pool->active, &rt->active_link); /* round-robin */
		return job;
	}
	return NULL;
}

/* ---- warm-up ([domain] warmup) ----------------------------------------- */

/* warm_left - messages d's warm-up lets src (NULL: no [domain] source)
 * send today; WARMUP_NO_CAP when none applies. */
static uint32_t warm_left(struct delivery *dl, const struct delivery_source *src,
                          struct sched_dest *d)
{
	if (!delivery_route_of(d)->warmup || !dl->warmup)
		return WARMUP_NO_CAP;
	return warmup_left(dl->warmup, config_domain(dl->cfg, d->name), src ? src->a.text : "",
	                   d->name, rp_now_ms());
}

static void warm_take(struct delivery *dl, const struct delivery_source *src, struct sched_dest *d)
{
	warmup_take(dl->warmup, config_domain(dl->cfg, d->name), src ? src->a.text : "", d->name,
	            rp_now_ms());
}

/* warm_total - what every source of pool may still send d today, summed
 * (UINT64_MAX: no cap). */
static uint64_t warm_total(struct delivery *dl, struct delivery_pool *pool, struct sched_dest *d)
{
	uint64_t sum = 0;
	for (unsigned i = 0; i < RP_MAX(pool->nsources, 1u); i++) {
		uint32_t left = warm_left(dl, pool->nsources ? &pool->sources[i] : NULL, d);
		if (left == WARMUP_NO_CAP)
			return UINT64_MAX;
		sum += left;
	}
	return sum;
}

/* warm_hold - d has work but every source of pool has sent today's
 * warm-up cap to it: d waits for the next UTC day (its mail stays queued,
 * never bounced for it). True when it waits. */
static bool warm_hold(struct delivery *dl, struct delivery_pool *pool, struct sched_dest *d)
{
	if (!delivery_route_of(d)->warmup || !d->nready_jobs || warm_total(dl, pool, d))
		return false;
	char why[200];
	snprintf(why, sizeof(why),
	         "warm-up: today's cap reached from %s; the rest waits for the next UTC day",
	         pool->nsources > 1 ? "every source address" : "the source address");
	sched_dest_wait(dl->sched, d, warmup_day_end_ms(rp_now_ms()), why);
	dl->warmup_waits++;
	return true;
}

/* ---- kept TLS sessions (resumption) ------------------------------------ */

/* kept_match - e is for this hop. */
static bool kept_match(const struct delivery_tls_kept *e, const char *host,
                       const struct sockaddr_storage *addr, socklen_t len)
{
	return e->len == len && !memcmp(&e->addr, addr, len) && !strcmp(e->host, host);
}

/* kept_drop - forget entry i (its session freed when free_it). */
static void kept_drop(struct delivery_pool *p, unsigned i, bool free_it)
{
	if (free_it)
		tls_session_free(p->tls_kept[i].s);
	free(p->tls_kept[i].host);
	p->tls_kept[i] = p->tls_kept[--p->ntls_kept];
}

/* kept_take - the newest session kept for this hop (the caller owns it), or NULL. */
static struct tls_session *kept_take(struct delivery_pool *p, const char *host,
                                     const struct sockaddr_storage *addr, socklen_t len)
{
	int best = -1;
	for (unsigned i = 0; i < p->ntls_kept; i++)
		if (kept_match(&p->tls_kept[i], host, addr, len) &&
		    (best < 0 || p->tls_kept[i].at_ms > p->tls_kept[best].at_ms))
			best = (int)i;
	if (best < 0)
		return NULL;
	struct tls_session *s = p->tls_kept[best].s;
	kept_drop(p, (unsigned)best, false);
	return s;
}

/* kept_put - keep s (taken over) for ds's hop; the oldest goes when full. */
static void kept_put(struct delivery_pool *p, const struct delivery_session *ds,
                     struct tls_session *s)
{
	if (!s)
		return;
	if (p->ntls_kept == DELIVERY_TLS_KEEP) {
		unsigned oldest = 0;
		for (unsigned i = 1; i < p->ntls_kept; i++)
			if (p->tls_kept[i].at_ms < p->tls_kept[oldest].at_ms)
				oldest = i;
		kept_drop(p, oldest, true);
	}
	struct delivery_tls_kept *e = &p->tls_kept[p->ntls_kept++];
	e->host = xstrdup(ds->hop_host);
	e->addr = ds->hop_addr;
	e->len = ds->hop_len;
	e->s = s;
	e->at_ms = rp_mono_ms();
}

/* kept_flush - forget every kept session of p. */
static void kept_flush(struct delivery_pool *p)
{
	while (p->ntls_kept)
		kept_drop(p, p->ntls_kept - 1, true);
}

/* ---- idle sessions ----------------------------------------------------- */

/* idle_add - ds waits for work: a session that has carried nothing yet
 * apart, to be given work first (a session that ends without a message
 * counts against the sender at the receiver); the others most recent
 * first, so that a surplus idles out. */
static void idle_add(struct delivery_pool *pool, struct delivery_session *ds)
{
	rp_list_add(ds->ntxn ? &pool->idle : &pool->idle_new, &ds->idle_link);
	pool->nidle++;
}

/* idle_first - the idle session to give work to next, or NULL. */
static struct rp_list *idle_first(struct delivery_pool *pool)
{
	struct rp_list *first = rp_list_first(&pool->idle_new);
	return first ? first : rp_list_first(&pool->idle);
}

static void idle_del(struct delivery_pool *pool, struct delivery_session *ds)
{
	if (!rp_list_linked(&ds->idle_link))
		return;
	rp_list_del(&ds->idle_link);
	pool->nidle--;
}

/* ---- the scheduler's side ---------------------------------------------- */

/* pool_kick - d has work it can start: idle sessions first, then new ones
 * within the limits. */
static void pool_kick(struct sched_dest *d, void *ctx)
{
	struct delivery *dl = ctx;
	struct delivery_route *rt = delivery_route_of(d);
	uint64_t now = rp_now_ms();
	if (dl->stopping)
		return;
	if (!rt->pool || rp_mono_ms() >= rt->expires_ms) {
		delivery_route_refresh(dl, rt);
		/* Not even an expired route while the new answer is on its way:
		 * mail after the TTL goes where the DNS says now. */
		if (!rt->pool || rt->resolving)
			return; /* the answer kicks again */
	}
	struct delivery_pool *pool = rt->pool;
	pool->used_ms = rp_mono_ms();
	if (warm_hold(dl, pool, d))
		return;
	if (d->nready_jobs)
		active_add(pool, rt);
	/* Work goes to idle sessions first: connection reuse; but not beyond
	 * the pool's share of a cluster's slots. An idle session from a
	 * source that has sent today's warm-up cap to d goes (a new one from
	 * another source may carry the work). */
	struct rp_list *first;
	trim_idle(dl, pool);
	while ((first = idle_first(pool))) {
		struct delivery_session *ds =
		    rp_list_entry(first, struct delivery_session, idle_link);
		uint32_t left = warm_left(dl, ds->src, d);
		if (!left) {
			idle_del(pool, ds);
			smtp_client_quit(ds->c);
			continue;
		}
		struct sched_job *job = sched_job_next(dl->sched, d, now);
		if (!job)
			break;
		if (left != WARMUP_NO_CAP)
			warm_take(dl, ds->src, d);
		idle_del(pool, ds);
		smtp_client_give(ds->c, job);
	}
	/* Then new sessions, as many as d has jobs for, within limits. */
	if (shape_recover(&pool->shape, pool->key, config_domain(dl->cfg, d->name)->rate))
		pool_rates(dl, pool);
	/* Slow start lets more sessions on their way as time passes without a
	 * refusal: a pool it holds back looks again soon. */
	if (pool->shape.slow_start && pool->shape.started &&
	    rt->nconnecting - rt->nstalled < d->nready_jobs &&
	    pool->nsessions < pool->max_connections && !loop_timer_armed(&dl->rekick) &&
	    (!pool_room(dl, pool, d) || pool->shape.txn_ms <= 0))
		loop_timer_arm(dl->loop, &dl->rekick, DELIVERY_SHAPE_DOUBLE_MS, rekick);
	/* The pool's ready work is counted once per kick, not per session
	 * opened: a pool may serve thousands of domains. Stalled sessions
	 * (stall_scan) are not on their way: they count only against
	 * max_connections. */
	uint64_t ready = pool_ready(pool);
	uint64_t want = RP_MIN(d->nready_jobs, warm_total(dl, pool, d));
	while (rt->nconnecting - rt->nstalled < want && pool_room(dl, pool, d) &&
	       shape_wants(&pool->shape, pool->nsessions - pool->nstalled, ready) &&
	       !rate_covered(pool, d) && sched_dest_may_connect(dl->sched, d, now)) {
		unsigned start = pool->rr_hop++;
		char why[300];
		if (!session_open(dl, pool, d, start, 0, false, why, sizeof(why))) {
			struct attempt_report rep;
			outcome_report_set(&rep, ATTEMPT_LOCAL, STAGE_CONNECT, 0, why);
			sched_dest_failed(dl->sched, d, &rep, NULL, now);
			break;
		}
	}
	delivery_touch(dl);
}

/* rekick - pools in slow start run again (their cap grew with time). */
static void rekick(struct loop_timer *t)
{
	struct delivery *dl = RP_CONTAINER_OF(t, struct delivery, rekick);
	for (uint32_t i = 0; i < dl->pool_tab_size; i++)
		for (struct delivery_pool *p = dl->pool_tab[i]; p; p = p->hnext)
			if (p->shape.slow_start && p->shape.started)
				pool_kick_members(dl, p);
	delivery_touch(dl);
}

/* pool_ready - the ready jobs of every member with work (the pool's
 * sessions carry any member's mail). */
static uint64_t pool_ready(struct delivery_pool *pool)
{
	uint64_t n = 0;
	struct rp_list *pos, *tmp;
	rp_list_foreach_safe(pos, tmp, &pool->active)
	{
		n += rp_list_entry(pos, struct delivery_route, active_link)->dest->nready_jobs;
	}
	return n;
}

/* rate_covered - d's rate (configured or learned) is carried by the
 * sessions open already: at rate r and t seconds a transaction, r x t + 1
 * sessions keep up; more would wait for tokens, empty. */
static bool rate_covered(const struct delivery_pool *pool, const struct sched_dest *d)
{
	if (d->lim.rate <= 0 || pool->shape.txn_ms <= 0)
		return false;
	double need = d->lim.rate * pool->shape.txn_ms / 1000.0 + 1.0;
	return (double)(pool->nsessions - pool->nstalled) >= need;
}

/* pool_kick_members - every member of pool with ready work runs again
 * (a slot came free, or the pool may have more sessions now). */
static void pool_kick_members(struct delivery *dl, struct delivery_pool *pool)
{
	struct rp_list *pos, *tmp;
	rp_list_foreach_safe(pos, tmp, &pool->active)
	{
		struct delivery_route *rt = rp_list_entry(pos, struct delivery_route, active_link);
		sched_kick(dl->sched, rt->dest);
	}
}

/* pool_room - whether pool may have one more session: under
 * max_connections, its sessions on their way (stalled ones aside) under
 * what the receiver tolerates (shape_cap), and with [cluster] under this
 * shard's leases (asking for more when d's work needs them) or its share
 * while Redis is away. */
static bool pool_room(struct delivery *dl, struct delivery_pool *pool, struct sched_dest *d)
{
	if (pool->nsessions >= pool->max_connections ||
	    pool->nsessions - pool->nstalled >=
	        shape_cap(&pool->shape, pool->max_connections, pool->nworking))
		return false;
	if (!dl->cluster)
		return true;
	unsigned demand = (unsigned)RP_MIN(d->nready_jobs, (uint64_t)pool->max_connections);
	return pool->nsessions < cluster_conn_limit(dl->cluster, &pool->lease, pool->key,
	                                            pool->max_connections, pool->nsessions, demand);
}

/* rate_configure - d's rate: the config's, or with [cluster] the shared
 * bucket's (tokens asked for), or its share while Redis is away. */
static void rate_configure(struct delivery *dl, struct sched_dest *d, const struct cfg_domain *cd)
{
	d->lim.rate = cd->rate;
	d->lim.rate_shared = false;
	if (dl->cluster && cd->rate > 0) {
		if (cluster_shared(dl->cluster))
			d->lim.rate_shared = true;
		else
			d->lim.rate = cd->rate / cluster_nodes(dl->cluster);
	}
	/* A receiver that said "too fast": its cap, under the others. */
	struct delivery_route *rt = d->owner;
	double cap = rt && rt->pool ? rt->pool->shape.rate : 0;
	if (cap > 0 && !d->lim.rate_shared)
		d->lim.rate = d->lim.rate > 0 ? RP_MIN(d->lim.rate, cap) : cap;
}

/* pool_rates - the pool's rate cap changed: its domains' rates again. */
static void pool_rates(struct delivery *dl, struct delivery_pool *pool)
{
	for (unsigned i = 0; i < pool->nmembers; i++) {
		struct sched_dest *m = pool->members[i];
		rate_configure(dl, m, config_domain(dl->cfg, m->name));
	}
}

static void rate_reconfigure(struct sched_dest *d, void *ctx)
{
	struct delivery *dl = ctx;
	rate_configure(dl, d, config_domain(dl->cfg, d->name));
}

/* trim_idle - idle sessions beyond the pool's share of a cluster's slots
 * say QUIT (busy ones go after their transaction: on_ready). */
static void trim_idle(struct delivery *dl, struct delivery_pool *pool)
{
	struct rp_list *first;
	while (over_cluster_share(dl, pool) && (first = idle_first(pool))) {
		struct delivery_session *ds =
		    rp_list_entry(first, struct delivery_session, idle_link);
		idle_del(pool, ds);
		smtp_client_quit(ds->c);
	}
}

void delivery_cluster_changed(struct delivery *dl, bool mode)
{
	if (mode)
		sched_foreach_dest(dl->sched, rate_reconfigure, dl); /* shared or local */
	for (uint32_t i = 0; i < dl->pool_tab_size; i++)
		for (struct delivery_pool *p = dl->pool_tab[i]; p; p = p->hnext) {
			if (mode)
				trim_idle(dl, p);
			pool_kick_members(dl, p);
		}
	delivery_touch(dl);
}

/* need_tokens - a shared rate's domain wants tokens (sched_ops). */
static void need_tokens(struct sched_dest *d, void *ctx)
{
	struct delivery *dl = ctx;
	cluster_need_tokens(dl->cluster, d);
}

/* pool_configure - d's limits from the config (new domain or reload). */
static void pool_configure(struct sched_dest *d, void *ctx)
{
	struct delivery *dl = ctx;
	const struct cfg_domain *cd = config_domain(dl->cfg, d->name);
	d->lim.max_connections = cd->max_connections;
	d->lim.max_msgs_per_conn = cd->max_messages_per_connection;
	/* VERP names one recipient per return path: one per transaction. */
	d->lim.max_rcpts_per_msg = dl->cfg->bounce_domain[0] ? 1 : cd->max_recipients_per_message;
	rate_configure(dl, d, cd);
	d->lim.connect_timeout_ms = cd->connect_timeout_ms;
	struct delivery_route *rt = d->owner;
	if (rt) {
		rt->expires_ms = 0; /* a reload may change the route: look again */
		if (rt->pool)
			delivery_pool_limits(rt->pool);
	}
}

const struct sched_ops delivery_sched_ops = {
	.kick = pool_kick,
	.configure = pool_configure,
	.need_tokens = need_tokens,
};

/* ---- the engine's callbacks -------------------------------------------- */

/* reply_field - rep's text quoted for a reply= log field (the remote's
 * words: they must not forge fields). Returns out. */
static const char *reply_field(char out[LOG_VALUE_MAX], const struct attempt_report *rep)
{
	log_quote(out, LOG_VALUE_MAX, rep->text, strlen(rep->text));
	return out;
}

/* over_cluster_share - with [cluster], pool has more sessions than it may
 * have now (its share shrank: Redis went away, or leases were lost): a
 * session that finishes its transaction goes instead of taking the next. */
static bool over_cluster_share(struct delivery *dl, struct delivery_pool *pool)
{
	if (!dl->cluster || dl->stopping)
		return false;
	return pool->nworking > cluster_conn_limit(dl->cluster, &pool->lease, pool->key,
	                                           pool->max_connections, pool->nsessions, 0);
}

/* on_ready - through EHLO (the first time: the destination works) and
 * asking for work; NULL parks the session. */
static struct sched_job *on_ready(struct smtp_client *c, void *arg, bool first)
{
	struct delivery_session *ds = arg;
	struct delivery *dl = ds->dl;
	if (first) {
		struct delivery_route *rt = delivery_route_of(ds->acct);
		rp_assert(rt->nconnecting > 0);
		rt->nconnecting--;
		unstall(ds);
		ds->working = true;
		ds->pool->nworking++;
		unsigned cap =
		    shape_cap(&ds->pool->shape, ds->pool->max_connections, ds->pool->nworking - 1);
		shape_ready(&ds->pool->shape, ds->pool->max_connections, ds->pool->nsessions,
		            rp_mono_ms() - ds->opened_ms);
		if (shape_cap(&ds->pool->shape, ds->pool->max_connections, ds->pool->nworking) >
		    cap)
			pool_kick_members(dl, ds->pool); /* room for one more */
		ds->pool->sessions_ok++;
		if (smtp_client_tls_active(c)) {
			ds->pool->tls_sessions++;
			ds->pool->tls_resumed += smtp_client_tls_resumed(c);
		}
		sched_dest_ok(dl->sched, ds->acct);
	}
	/* A TLS 1.3 ticket comes after the handshake: by now, usually. */
	kept_put(ds->pool, ds, smtp_client_tls_session_take(c));
	if (over_cluster_share(dl, ds->pool)) {
		smtp_client_quit(c); /* the cluster's share shrank (Redis went away) */
		return NULL;
	}
	struct sched_job *job = pool_next(dl, ds);
	if (!job && !dl->stopping)
		idle_add(ds->pool, ds);
	return job;
}

/* on_outcome - a transaction ended: the scheduler decides. */
static void on_outcome(struct smtp_client *c, void *arg, struct sched_job *job,
                       const struct attempt_report *reps, uint64_t duration_ms)
{
	struct delivery_session *ds = arg;
	struct sched_attempt info = { .remote = smtp_client_remote(c),
		                      .tls = smtp_client_tls(c),
		                      .source = smtp_client_source(c),
		                      .ehlo = ds->pool->ehlo ? smtp_client_helo(c) : NULL,
		                      .duration_ms = duration_ms };
	struct delivery_pool *pool = ds->pool;
	ds->ntxn++;
	bool first = pool->shape.txn_ms <= 0;
	shape_done(&pool->shape, duration_ms);
	if (first)
		pool_kick_members(ds->dl, pool); /* now shape_wants can tell */
	/* The receiver's words about how we connect (outcome_signal_of). */
	bool rates = false, refused = false;
	for (unsigned i = 0; i < job->nrcpt; i++) {
		enum outcome_signal sig = outcome_signal_of(&reps[i]);
		if (sig == SIGNAL_CONCURRENCY && !refused) {
			refused = true; /* this session is one too many */
			shape_refused(&pool->shape, pool->key,
			              pool->nworking ? pool->nworking - 1 : 0, &reps[i]);
		} else if (sig == SIGNAL_RATE && !rates) {
			rates = shape_rate_signal(&pool->shape, pool->key,
			                          config_domain(ds->dl->cfg, job->dest->name)->rate,
			                          &reps[i]);
		}
	}
	sched_job_done(ds->dl->sched, job, reps, &info, rp_now_ms());
	if (rates)
		pool_rates(ds->dl, pool);
	if (refused)
		smtp_client_quit(c);
	delivery_touch(ds->dl);
}

/* on_failed - a session failed before it had a job (connect, greeting,
 * EHLO): try the next hop, or back every domain of the pool off. */
static void on_failed(struct smtp_client *c, void *arg, const struct attempt_report *rep)
{
	struct delivery_session *ds = arg;
	struct delivery *dl = ds->dl;
	struct delivery_pool *pool = ds->pool;
	uint64_t now = rp_now_ms();
	const char *remote = smtp_client_remote(c);
	char why[300], reply[LOG_VALUE_MAX];
	if (smtp_client_tls_handshake_failed(c)) {
		pool->tls_failures++;
		/* Opportunistic TLS: clear text is allowed, and a server whose
		 * TLS is broken should still get its mail (once per session). */
		if (!dl->stopping && pool->tls_policy == CFG_TLS_OPPORTUNISTIC && !ds->clear_text) {
			log_info("smtp %s %s: trying again in clear text: reply=%s", ds->acct->name,
			         remote, reply_field(reply, rep));
			if (session_open(dl, pool, ds->acct, ds->hop_start, ds->hop_k, true, why,
			                 sizeof(why)))
				return;
		}
	}
	/* RFC 5321 5.1: on a connection failure or a refusal at the greeting,
	 * try the next exchanger before deferring. */
	struct sockaddr_storage ss;
	socklen_t len;
	if (!dl->stopping &&
	    delivery_hop(dl, pool, ds->hop_start, ds->hop_k + 1, &ss, &len, NULL)) {
		log_info("smtp %s %s: trying the next exchanger: reply=%s", ds->acct->name, remote,
		         reply_field(reply, rep));
		if (session_open(dl, pool, ds->acct, ds->hop_start, ds->hop_k + 1, false, why,
		                 sizeof(why)))
			return;
	}
	/* A receiver that limits concurrency: fewer sessions, the work goes
	 * on with those that work (no back-off). */
	if (pool->nworking > 0 && outcome_signal_of(rep) == SIGNAL_CONCURRENCY) {
		shape_refused(&pool->shape, pool->key, pool->nworking, rep);
		return;
	}
	/* One refused connection while other sessions work is not a dead
	 * destination (a server limiting concurrency): just log it. */
	if (pool->nworking > 0 && rep->kind != ATTEMPT_REPLY) {
		log_info("smtp %s %s: session failed while others work: reply=%s", ds->acct->name,
		         remote, reply_field(reply, rep));
		return;
	}
	/* The next hops failed: every domain behind them backs off. */
	for (unsigned i = 0; i < pool->nmembers; i++)
		sched_dest_failed(dl->sched, pool->members[i], rep, remote, now);
	delivery_touch(dl);
}

/* on_closing - the session takes no more work. */
static void on_closing(struct smtp_client *c, void *arg)
{
	struct delivery_session *ds = arg;
	ds->closing = true;
	idle_del(ds->pool, ds);
	kept_put(ds->pool, ds, smtp_client_tls_session_take(c));
}

/* on_done - the session is gone: free its slot, let waiting domains in. */
static void on_done(struct smtp_client *c, void *arg)
{
	struct delivery_session *ds = arg;
	struct delivery *dl = ds->dl;
	struct delivery_pool *pool = ds->pool;
	(void)c;
	idle_del(pool, ds);
	if (ds->working && !ds->ntxn)
		pool->shape.empty++;
	if (ds->working) {
		pool->nworking--;
	} else {
		struct delivery_route *rt = delivery_route_of(ds->acct);
		rp_assert(rt->nconnecting > 0);
		rt->nconnecting--;
		unstall(ds);
	}
	pool->nsessions--;
	if (dl->cluster)
		cluster_lease_used(&pool->lease, pool->nsessions);
	if (ds->src)
		ds->src->open--;
	pool->used_ms = rp_mono_ms();
	sched_session_closed(dl->sched, ds->acct);
	rp_list_del(&ds->link);
	dl->nsessions--;
	free(ds->hop_host);
	free(ds);
	/* A freed slot in the pool may let another member with work open a
	 * session. */
	pool_kick_members(dl, pool);
	delivery_touch(dl);
	dl->session_gone(dl->arg);
}

static const struct smtp_client_ops session_ops = {
	.ready = on_ready,
	.outcome = on_outcome,
	.failed = on_failed,
	.closing = on_closing,
	.done = on_done,
};

/* tls_policy_of - the engine's name for a [domain] tls policy. */
static enum smtp_tls_policy tls_policy_of(unsigned policy)
{
	switch ((enum cfg_tls_policy)policy) {
	case CFG_TLS_OPPORTUNISTIC:
		return SMTP_TLS_OPPORTUNISTIC;
	case CFG_TLS_REQUIRED:
		return SMTP_TLS_REQUIRED;
	case CFG_TLS_VERIFY:
		return SMTP_TLS_VERIFY;
	case CFG_TLS_OFF:
		return SMTP_TLS_OFF;
	}
	rp_panic("unknown TLS policy %u", policy);
}

/* no_hop_text - why session_open found no k-th hop, into why: the pool's
 * sources fit no exchanger's address family (a configuration problem,
 * logged), or there is no such hop. */
static void no_hop_text(const struct delivery *dl, const struct delivery_pool *pool,
                        const struct sched_dest *acct, char *why, size_t n)
{
	struct sockaddr_storage ss;
	socklen_t len;
	const char *host;
	if (!pool->nsources || !delivery_hop_any(dl, pool, &ss, &len, &host)) {
		snprintf(why, n, "cannot open a session: %s", strerror(EHOSTUNREACH));
		return;
	}
	char list[200] = "";
	size_t o = 0;
	for (unsigned i = 0; i < pool->nsources && o < sizeof(list); i++)
		o += (size_t)snprintf(list + o, sizeof(list) - o, "%s%s", i ? ", " : "",
		                      pool->sources[i].a.text);
	snprintf(why, n, "no source address for IPv%c exchangers (%s): [domain] source has only %s",
	         ss.ss_family == AF_INET6 ? '6' : '4', host, list);
	log_warn("dest %s: %s (a configuration problem: mail waits)", acct->name, why);
}

/* client_open - start ds's engine with p from the pool's next source of
 * the hop's family (round robin), if it has sources. A source that cannot
 * be bound (an address taken off the machine since start-up) is logged
 * and the next one of that family tried; false and the reason in why when
 * none works, or no socket could be made. */
static bool client_open(struct delivery_pool *pool, struct delivery_session *ds,
                        struct smtp_client_params *p, char *why, size_t whylen)
{
	int family = ds->hop_addr.ss_family;
	unsigned tries = 0;
	for (unsigned i = 0; i < pool->nsources; i++)
		tries += pool->sources[i].a.ss.ss_family == family;
	/* delivery_hop gives only hops that one of the sources can reach. */
	rp_assert(!pool->nsources || tries);
	for (unsigned i = 0; i < (tries ? tries : 1); i++) {
		ds->src = pool->nsources ? source_pick(ds->dl, pool, family, ds->acct) : NULL;
		if (pool->nsources && !ds->src) {
			snprintf(why, whylen, "no source address may send to %s today (warm-up)",
			         ds->acct->name);
			return false;
		}
		p->source = ds->src ? (const struct sockaddr *)&ds->src->a.ss : NULL;
		p->sourcelen = ds->src ? ds->src->a.len : 0;
		ds->c = smtp_client_open(p);
		if (ds->c)
			return true;
		int err = errno;
		if (!ds->src) {
			snprintf(why, whylen, "cannot open a session: %s", strerror(err));
			return false;
		}
		snprintf(why, whylen, "cannot open a session from %s: %s", ds->src->a.text,
		         strerror(err));
		log_warn("dest %s: %s", ds->acct->name, why);
	}
	return false;
}

/* session_open - a session to pool's k-th usable hop (rotation start),
 * opened for domain acct, without STARTTLS when clear_text, from the
 * pool's next source address of the hop's family (if it has sources);
 * false and the reason in why when there is no such hop or no socket
 * could be made or bound. */
static bool session_open(struct delivery *dl, struct delivery_pool *pool, struct sched_dest *acct,
                         unsigned start, unsigned k, bool clear_text, char *why, size_t whylen)
{
	struct delivery_session *ds = xcalloc(1, sizeof(*ds));
	const char *host;
	if (!delivery_hop(dl, pool, start, k, &ds->hop_addr, &ds->hop_len, &host)) {
		free(ds);
		no_hop_text(dl, pool, acct, why, whylen);
		return false;
	}
	ds->dl = dl;
	ds->pool = pool;
	ds->acct = acct;
	ds->opened_ms = rp_mono_ms();
	ds->hop_start = start;
	ds->hop_k = k;
	ds->clear_text = clear_text;
	/* A domain literal's "[192.0.2.1]" names no host: no SNI, and verify
	 * checks the address. */
	ds->hop_host = xstrdup(host && host[0] != '[' ? host : "");
	struct smtp_client_params p = {
		.loop = dl->loop,
		.addr = (const struct sockaddr *)&ds->hop_addr,
		.addrlen = ds->hop_len,
		.helo = pool->ehlo ? pool->ehlo : dl->cfg->hostname,
		.name = acct->name,
		.connect_timeout_ms = acct->lim.connect_timeout_ms,
		.idle_ms = config_domain(dl->cfg, acct->name)->idle_ms,
		.max_transactions = acct->lim.max_msgs_per_conn,
		.tls_ctx = dl->tls_client,
		.tls_policy = clear_text ? SMTP_TLS_OFF : tls_policy_of(pool->tls_policy),
		.tls_name = ds->hop_host,
		.ops = &session_ops,
		.arg = ds,
	};
	if (!clear_text)
		p.tls_resume = kept_take(pool, ds->hop_host, &ds->hop_addr, ds->hop_len);
	if (!client_open(pool, ds, &p, why, whylen)) {
		tls_session_free(p.tls_resume);
		free(ds->hop_host);
		free(ds);
		return false;
	}
	if (ds->src) {
		ds->src->sessions++;
		ds->src->open++;
	}
	rp_list_add(&dl->sessions, &ds->link);
	dl->nsessions++;
	pool->nsessions++;
	delivery_route_of(acct)->nconnecting++;
	sched_session_opened(dl->sched, acct);
	if (!loop_timer_armed(&dl->stall))
		loop_timer_arm(dl->loop, &dl->stall, STALL_SCAN_MS, stall_scan);
	return true;
}

/* ---- stalled sessions -------------------------------------------------- */

/* stall_scan - a session still connecting long after sessions to its
 * destination usually get through EHLO (shape_stall_ms: a silent greeting
 * holds it for the 5-minute greeting timeout) no longer counts as on its
 * way: its destination's ready work may open another. Runs while any
 * session is connecting. */
static void stall_scan(struct loop_timer *t)
{
	struct delivery *dl = RP_CONTAINER_OF(t, struct delivery, stall);
	uint64_t now = rp_mono_ms();
	bool connecting = false;
	struct rp_list *pos, *tmp;
	rp_list_foreach_safe(pos, tmp, &dl->sessions)
	{
		struct delivery_session *ds = rp_list_entry(pos, struct delivery_session, link);
		if (ds->working || ds->stalled)
			continue;
		if (now - ds->opened_ms < shape_stall_ms(&ds->pool->shape)) {
			connecting = true;
			continue;
		}
		ds->stalled = true;
		ds->pool->nstalled++;
		delivery_route_of(ds->acct)->nstalled++;
		pool_kick_members(dl, ds->pool);
	}
	if (connecting && !dl->stopping)
		loop_timer_arm(dl->loop, &dl->stall, STALL_SCAN_MS, stall_scan);
	delivery_touch(dl);
}

/* unstall - ds got through EHLO or is gone: no longer stalled. */
static void unstall(struct delivery_session *ds)
{
	if (!ds->stalled)
		return;
	ds->stalled = false;
	ds->pool->nstalled--;
	delivery_route_of(ds->acct)->nstalled--;
}

/* ---- life cycle -------------------------------------------------------- */

struct delivery *delivery_new(const struct delivery_params *p)
{
	struct delivery *dl = xcalloc(1, sizeof(*dl));
	dl->loop = p->loop;
	dl->dns = p->dns;
	dl->cluster = p->cluster;
	dl->cfg = p->cfg;
	dl->tls_client = tls_ctx_ref(p->tls_client);
	dl->ours = p->ours;
	dl->nours = p->nours;
	dl->touch = p->touch;
	dl->session_gone = p->session_gone;
	dl->arg = p->arg;
	if (p->spool)
		dl->warmup = warmup_new(p->spool, p->loop);
	rp_list_init(&dl->sessions);
	return dl;
}

void delivery_attach(struct delivery *dl, struct sched *sched)
{
	dl->sched = sched;
}

void delivery_set_config(struct delivery *dl, const struct config *cfg, struct tls_ctx *tls_client)
{
	dl->cfg = cfg;
	if (tls_client == dl->tls_client)
		return;
	/* New CAs may not trust what a kept session was verified with. */
	tls_ctx_unref(dl->tls_client);
	dl->tls_client = tls_ctx_ref(tls_client);
	for (uint32_t i = 0; i < dl->pool_tab_size; i++)
		for (struct delivery_pool *p = dl->pool_tab[i]; p; p = p->hnext)
			kept_flush(p);
}

void delivery_stop(struct delivery *dl)
{
	dl->stopping = true;
	loop_timer_disarm(dl->loop, &dl->rekick);
	loop_timer_disarm(dl->loop, &dl->stall);
	struct rp_list *pos, *tmp;
	rp_list_foreach_safe(pos, tmp, &dl->sessions)
	{
		smtp_client_quit(rp_list_entry(pos, struct delivery_session, link)->c);
	}
}

void delivery_abort(struct delivery *dl)
{
	struct rp_list *pos, *tmp;
	rp_list_foreach_safe(pos, tmp, &dl->sessions)
	{
		smtp_client_abort(rp_list_entry(pos, struct delivery_session, link)->c);
	}
}

unsigned delivery_sessions(const struct delivery *dl)
{
	return dl->nsessions;
}

void delivery_free(struct delivery *dl)
{
	if (!dl)
		return;
	rp_assert(!dl->nsessions);
	loop_timer_disarm(dl->loop, &dl->rekick);
	loop_timer_disarm(dl->loop, &dl->stall);
	if (dl->sched)
		sched_foreach_dest(dl->sched, delivery_route_free, NULL);
	for (uint32_t i = 0; i < dl->pool_tab_size; i++) {
		struct delivery_pool *p = dl->pool_tab[i];
		while (p) {
			struct delivery_pool *next = p->hnext;
			kept_flush(p);
			dns_result_unref(p->hops);
			free(p->sources);
			free(p->ehlo);
			free(p->members);
			free(p->key);
			free(p);
			p = next;
		}
	}
	free(dl->pool_tab);
	warmup_free(dl->warmup); /* what changed goes to the spool */
	tls_ctx_unref(dl->tls_client);
	free(dl);
}

/* ---- stats ------------------------------------------------------------- */

void delivery_fill_stats(const struct delivery *dl, struct stats_snapshot *part)
{
	part->warmup_waits += dl->warmup_waits;
	for (uint32_t i = 0; i < dl->pool_tab_size; i++)
		for (const struct delivery_pool *p = dl->pool_tab[i]; p; p = p->hnext) {
			if (!p->nmembers && !p->nsessions)
				continue;
			part->dests =
			    xrealloc(part->dests, (part->ndests + 1) * sizeof(*part->dests));
			struct stats_dest *d = &part->dests[part->ndests++];
			memset(d, 0, sizeof(*d));
			snprintf(d->key, sizeof(d->key), "%s", p->key);
			size_t o = 0;
			for (unsigned k = 0; k < p->nmembers && o < sizeof(d->domains) - 1; k++)
				o += (size_t)snprintf(d->domains + o, sizeof(d->domains) - o,
				                      "%s%s", k ? "," : "", p->members[k]->name);
			d->ndomains = p->nmembers;
			d->connections = p->nsessions;
			d->max_connections = p->max_connections;
			d->tls_sessions = p->tls_sessions;
			d->tls_resumed = p->tls_resumed;
			d->tls_failures = p->tls_failures;
			d->eff_concurrency = shape_cap(&p->shape, p->max_connections, p->nworking);
			d->eff_rate = p->shape.rate;
			d->refused_sessions = p->shape.refusals;
			d->rate_signals = p->shape.rate_signals;
			d->empty_sessions = p->shape.empty;
			snprintf(d->shape_why, sizeof(d->shape_why), "%s", p->shape.why);
			d->shape_ms = p->shape.why_ms;
			d->cluster = dl->cluster != NULL;
			d->cluster_share = p->lease.held;
			d->cluster_sessions = p->lease.everyone;
			snprintf(d->ehlo, sizeof(d->ehlo), "%s",
			         p->ehlo ? p->ehlo : dl->cfg->hostname);
			d->nsources = RP_MIN(p->nsources, STATS_DEST_SOURCES);
			for (unsigned k = 0; k < d->nsources; k++) {
				struct stats_source *ss = &d->sources[k];
				snprintf(ss->addr, sizeof(ss->addr), "%s", p->sources[k].a.text);
				ss->sessions = p->sources[k].sessions;
				ss->connections = p->sources[k].open;
			}
		}
}

void delivery_fill_domain_tls(const struct delivery *dl, struct stats_snapshot *part,
                              unsigned first)
{
	for (unsigned i = first; i < part->ndomains; i++) {
		struct stats_domain *e = &part->domains[i];
		struct sched_dest *d = dl->sched ? sched_dest_find(dl->sched, e->name) : NULL;
		const struct delivery_route *rt = d ? d->owner : NULL;
		const struct delivery_pool *p = rt ? rt->pool : NULL;
		if (!p)
			continue;
		snprintf(e->tls_policy, sizeof(e->tls_policy), "%s",
		         config_tls_policy_name(p->tls_policy));
		e->sessions = p->sessions_ok;
		e->tls_sessions = p->tls_sessions;
		e->tls_failures = p->tls_failures;
	}
}
