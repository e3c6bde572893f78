/* delivery.c - per-destination connection pools (see delivery.h). */
#include "delivery.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>

#include "queue/log.h"
#include "queue/util.h"
#include "shard.h"
#include "smtp_client.h"

static struct delivery_pool *pool_of(struct sched_dest *d)
{
	if (!d->owner) {
		struct delivery_pool *p = xcalloc(1, sizeof(*p));
		p->dest = d;
		d->owner = p;
	}
	return d->owner;
}

/* next_hop - where mail for d goes: a static route or a domain literal.
 * Returns false with a reason when there is nowhere to go. */
static bool next_hop(struct shard *sh, struct sched_dest *d, struct sockaddr_storage *ss,
		     socklen_t *len, char *why, size_t whylen)
{
	const struct cfg_domain *cd = config_domain(sh->cfg, d->name);
	if (cd->route.set) {
		if (!cd->route.sslen) {
			snprintf(why, whylen, "route %s needs DNS resolution, which is not built yet",
				 cd->route.text);
			return false;
		}
		memcpy(ss, &cd->route.ss, cd->route.sslen);
		*len = cd->route.sslen;
		return true;
	}
	if (d->name[0] == '[') {
		/* A domain literal: the address itself. */
		char tmp[64];
		size_t n = strlen(d->name);
		if (n > 2 && n - 2 < sizeof(tmp)) {
			memcpy(tmp, d->name + 1, n - 2);
			tmp[n - 2] = '\0';
			const char *ip = tmp;
			struct sockaddr_in *sin = (struct sockaddr_in *)ss;
			struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
			memset(ss, 0, sizeof(*ss));
			if (!strncasecmp(ip, "ipv6:", 5) &&
			    inet_pton(AF_INET6, ip + 5, &sin6->sin6_addr) == 1) {
				sin6->sin6_family = AF_INET6;
				sin6->sin6_port = htons(cd->port);
				*len = sizeof(*sin6);
				return true;
			}
			if (inet_pton(AF_INET, ip, &sin->sin_addr) == 1) {
				sin->sin_family = AF_INET;
				sin->sin_port = htons(cd->port);
				*len = sizeof(*sin);
				return true;
			}
		}
		snprintf(why, whylen, "bad domain literal %s", d->name);
		return false;
	}
	snprintf(why, whylen, "no route for %s (MX lookup is not built yet; set a route)", d->name);
	return false;
}

static void pool_kick(struct sched_dest *d, void *ctx)
{
	struct shard *sh = ctx;
	struct delivery_pool *pool = pool_of(d);
	uint64_t now = rp_now_ms();
	if (sh->stopping)
		return;
	/* Work goes to idle sessions first: connection reuse. */
	while (pool->idle) {
		struct sched_job *job = sched_job_next(sh->sched, d, now);
		if (!job)
			break;
		struct smtp_client *c = pool->idle;
		delivery_unidle(pool, c);
		smtp_client_give(c, job);
	}
	/* Then new sessions, as many as there are jobs for, within limits. */
	while (pool->nconnecting < d->nready_jobs && sched_dest_may_connect(sh->sched, d, now)) {
		struct sockaddr_storage ss;
		socklen_t len = 0;
		char why[400];
		struct attempt_report rep;
		if (!next_hop(sh, d, &ss, &len, why, sizeof(why))) {
			outcome_report_set(&rep, ATTEMPT_NO_ROUTE, STAGE_CONNECT, 0, why);
			sched_dest_failed(sh->sched, d, &rep, NULL, now);
			break;
		}
		if (!smtp_client_open(sh, pool, (struct sockaddr *)&ss, len,
				      d->lim.connect_timeout_ms)) {
			snprintf(why, sizeof(why), "cannot create a socket: %s", strerror(errno));
			outcome_report_set(&rep, ATTEMPT_LOCAL, STAGE_CONNECT, 0, why);
			sched_dest_failed(sh->sched, d, &rep, NULL, now);
			break;
		}
		pool->nconnecting++;
		pool->nsessions++;
		sh->stats.out_sessions++;
		sched_session_opened(sh->sched, d);
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
}

const struct sched_ops delivery_sched_ops = {
	.kick = pool_kick,
	.configure = pool_configure,
};

struct sched_job *delivery_next(struct shard *sh, struct delivery_pool *pool)
{
	if (sh->stopping)
		return NULL;
	return sched_job_next(sh->sched, pool->dest, rp_now_ms());
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

void delivery_session_gone(struct shard *sh, struct delivery_pool *pool, bool was_connecting)
{
	if (was_connecting)
		pool->nconnecting--;
	pool->nsessions--;
	sched_session_closed(sh->sched, pool->dest);
	shard_touch(sh);
}

static void free_pool(struct sched_dest *d, void *arg)
{
	(void)arg;
	free(d->owner);
	d->owner = NULL;
}

void delivery_free_pools(struct shard *sh)
{
	sched_foreach_dest(sh->sched, free_pool, NULL);
}
