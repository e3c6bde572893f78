/* shard_api.c - the daemon's side of the HTTP API: routing committed
 * recipients, gathering counters from every shard, and running queue
 * administration on the shard that owns a domain.
 *
 * Cross-shard work is message passing only: each shard fills its own part
 * of a request on its own thread and sends the part home; the asking shard
 * merges when the last part is in.
 */
#include <stdio.h>
#include <stdlib.h>

#include "base/log.h"
#include "base/util.h"
#include "delivery.h"
#include "shard.h"
#include "smtp_server.h"
#include "cluster.h"
#include "webhook.h"

void shard_api_config(const struct config_ref *gen, struct api_config *out)
{
	const struct config *cfg = gen->cfg;
	out->tls = cfg->api_tls ? gen->tls_server : NULL;
	_Static_assert((unsigned)API_SCOPE_SUBMIT == (unsigned)CFG_API_SUBMIT &&
	                   (unsigned)API_SCOPE_READ == (unsigned)CFG_API_READ &&
	                   (unsigned)API_SCOPE_ADMIN == (unsigned)CFG_API_ADMIN,
	               "API and config key scopes differ");
	out->keys = cfg->api_keys;
	out->key_names = cfg->api_key_names;
	out->key_scopes = cfg->api_key_scopes;
	out->nkeys = cfg->napi_keys;
	out->hostname = cfg->hostname;
	out->max_message_size = cfg->max_message_size;
	out->max_request = cfg->api_max_request;
	out->max_recipients = cfg->max_recipients;
	out->max_batch = cfg->api_max_batch;
	out->idle_timeout_ms = cfg->api_idle_timeout_ms;
	out->max_clients = cfg->api_max_clients;
	out->dkim = gen->dkim;
	out->limits = &cfg->limits;
}

void shard_fill_stats(struct shard *sh, struct stats_snapshot *part)
{
	delivery_fill_stats(sh->delivery, part);
	unsigned first = part->ndomains;
	sched_stats(sh->sched, part);
	delivery_fill_domain_tls(sh->delivery, part, first);
	api_fill_stats(sh->api, part);
	smtpd_fill_stats(sh->smtpd, part);
	smtpd_fill_stats(sh->inbound, part);
	imap_fill_stats(sh->imap, part);
	pop3_fill_stats(sh->pop3, part);
	part->loop_max_busy_us = loop_max_busy_us(sh->loop);
	webhook_stats(sh->webhook, &part->webhook);
	cluster_fill_stats(sh->cluster, &part->cluster);
	if (sh->dns) {
		struct dns_stats ds;
		dns_get_stats(sh->dns, &ds);
		part->dns_lookups += ds.lookups;
		part->dns_queries += ds.queries;
		part->dns_hits += ds.hits;
		part->dns_shared += ds.shared;
		part->dns_entries += ds.entries;
		part->dns_memory += ds.memory;
	}
}

/* ---- stats fan-out ----------------------------------------------------- */

struct fanout;

struct fanout_part {
	struct mq_item item;
	struct fanout *f;
	unsigned index;
};

struct fanout {
	struct api_stats_req *req;
	struct shard *origin;
	unsigned pending;
	struct stats_snapshot *parts; /* one per shard, written by that shard only */
	struct fanout_part *items;
};

static void part_home(struct mq_item *item, void *ctx)
{
	struct fanout_part *p = RP_CONTAINER_OF(item, struct fanout_part, item);
	struct fanout *f = p->f;
	(void)ctx;
	if (--f->pending)
		return;
	unsigned n = f->origin->relay->nshards;
	for (unsigned i = 0; i < n; i++) {
		stats_merge(&f->req->snap, &f->parts[i]);
		stats_free(&f->parts[i]);
	}
	struct api_stats_req *req = f->req;
	free(f->parts);
	free(f->items);
	free(f);
	req->done(req);
}

static void part_fill(struct mq_item *item, void *ctx)
{
	struct fanout_part *p = RP_CONTAINER_OF(item, struct fanout_part, item);
	struct fanout *f = p->f;
	struct shard *sh = f->origin->relay->shards[p->index];
	(void)ctx;
	shard_fill_stats(sh, &f->parts[p->index]);
	mq_push(loop_inbox(f->origin->loop), &p->item, part_home);
}

static void api_stats_gather(void *ctx, struct api_stats_req *req)
{
	struct shard *sh = ctx;
	unsigned n = sh->relay->nshards;
	struct fanout *f = xcalloc(1, sizeof(*f));
	f->req = req;
	f->origin = sh;
	f->pending = n;
	f->parts = xcalloc(n, sizeof(*f->parts));
	f->items = xcalloc(n, sizeof(*f->items));
	for (unsigned i = 0; i < n; i++) {
		f->items[i].f = f;
		f->items[i].index = i;
		mq_push(loop_inbox(sh->relay->shards[i]->loop), &f->items[i].item, part_fill);
	}
}

/* ---- administration ---------------------------------------------------- */

struct admin_msg {
	struct mq_item item;
	struct api_admin_req *req;
	struct shard *origin;
	struct shard *owner;
};

static void admin_home(struct mq_item *item, void *ctx)
{
	struct admin_msg *m = RP_CONTAINER_OF(item, struct admin_msg, item);
	struct api_admin_req *req = m->req;
	(void)ctx;
	free(m);
	req->done(req);
}

static void admin_run(struct mq_item *item, void *ctx)
{
	struct admin_msg *m = RP_CONTAINER_OF(item, struct admin_msg, item);
	struct api_admin_req *req = m->req;
	struct shard *sh = m->owner;
	uint64_t now = rp_now_ms();
	(void)ctx;
	struct sched_dest *d = req->op == API_ADMIN_SUSPEND
	                           ? sched_dest_get(sh->sched, req->domain)
	                           : sched_dest_find(sh->sched, req->domain);
	req->found = d != NULL;
	if (d) {
		switch (req->op) {
		case API_ADMIN_RETRY:
			req->affected = sched_dest_retry(sh->sched, d, now);
			break;
		case API_ADMIN_SUSPEND:
			sched_dest_suspend(sh->sched, d, true);
			req->affected = d->n.queued + d->n.deferred;
			break;
		case API_ADMIN_RESUME:
			sched_dest_suspend(sh->sched, d, false);
			req->affected = d->n.queued + d->n.deferred;
			break;
		case API_ADMIN_PURGE:
			req->affected = sched_dest_purge(sh->sched, d, req->bounce, now);
			break;
		case API_ADMIN_PURGE_MSG:
			req->affected = sched_msg_purge(sh->sched, d, req->msgid, req->bounce, now);
			break;
		}
		static const char *const names[] = { "retry", "suspend", "resume", "purge",
			                             "purge" };
		char id[17] = "";
		if (req->op == API_ADMIN_PURGE_MSG)
			rp_id_format(req->msgid, id);
		log_info("admin %s dest=%s%s%s recipients=%llu", names[req->op], req->domain,
		         *id ? " id=" : "", id, (unsigned long long)req->affected);
		shard_touch(sh);
	}
	mq_push(loop_inbox(m->origin->loop), &m->item, admin_home);
}

static void api_admin(void *ctx, struct api_admin_req *req)
{
	struct shard *sh = ctx;
	struct admin_msg *m = xcalloc(1, sizeof(*m));
	m->req = req;
	m->origin = sh;
	m->owner = sh->relay->shards[shard_owner(sh->relay, req->domain)];
	mq_push(loop_inbox(m->owner->loop), &m->item, admin_run);
}

static unsigned api_warmup_schedule(void *ctx, const char *domain, const uint32_t **caps)
{
	struct shard *sh = ctx;
	const struct cfg_domain *cd = config_domain(sh->cfg, domain);
	*caps = cd->warmup;
	return cd->nwarmup;
}

const struct api_ops shard_api_ops = {
	.route = shard_route_from,
	.stats = api_stats_gather,
	.admin = api_admin,
	.warmup_schedule = api_warmup_schedule,
};
