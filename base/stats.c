/* stats.c - counters and histograms (see stats.h). */
#include "stats.h"

#include <stdlib.h>
#include <string.h>

#include "util.h"

const double stats_delivery_bounds[STATS_DELIVERY_BUCKETS] = {
	0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5, 30, 60, 300, 1800, 3600, 14400, 86400,
};

const double stats_txn_bounds[STATS_TXN_BUCKETS] = {
	0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5, 30,
};

void stats_hist_add(struct stats_hist *h, const double *bounds, unsigned nbounds, double v)
{
	unsigned i = 0;
	while (i < nbounds && v > bounds[i])
		i++;
	h->bucket[i]++;
	h->count++;
	h->sum += v;
}

void stats_hist_merge(struct stats_hist *into, const struct stats_hist *from)
{
	for (size_t i = 0; i < RP_ARRAY_LEN(into->bucket); i++)
		into->bucket[i] += from->bucket[i];
	into->count += from->count;
	into->sum += from->sum;
}

void stats_counts_add(struct stats_counts *a, const struct stats_counts *b)
{
	a->queued += b->queued;
	a->deferred += b->deferred;
	a->in_flight += b->in_flight;
	a->delivered += b->delivered;
	a->bounced += b->bounced;
	a->deferrals += b->deferrals;
	a->connections += b->connections;
}

void stats_merge(struct stats_snapshot *total, const struct stats_snapshot *part)
{
	stats_counts_add(&total->total, &part->total);
	if (part->ndomains) {
		total->domains = xrealloc(total->domains, (total->ndomains + part->ndomains) *
		                                              sizeof(*total->domains));
		memcpy(total->domains + total->ndomains, part->domains,
		       part->ndomains * sizeof(*part->domains));
		total->ndomains += part->ndomains;
	}
	if (part->ndests) {
		total->dests =
		    xrealloc(total->dests, (total->ndests + part->ndests) * sizeof(*total->dests));
		memcpy(total->dests + total->ndests, part->dests,
		       part->ndests * sizeof(*part->dests));
		total->ndests += part->ndests;
	}
	total->accepted_smtp += part->accepted_smtp;
	total->accepted_api += part->accepted_api;
	total->suppressed += part->suppressed;
	total->warmup_waits += part->warmup_waits;
	total->reports += part->reports;
	total->reports_matched += part->reports_matched;
	total->rejected += part->rejected;
	total->smtp_sessions += part->smtp_sessions;
	total->inbound_connections += part->inbound_connections;
	for (unsigned k = 0; k < CLIMIT_KINDS; k++)
		for (unsigned r = 0; r < CLIMIT_REASONS; r++)
			total->client_limits[k][r] += part->client_limits[k][r];
	if (part->loop_max_busy_us > total->loop_max_busy_us)
		total->loop_max_busy_us = part->loop_max_busy_us;
	total->dns_lookups += part->dns_lookups;
	total->dns_queries += part->dns_queries;
	total->dns_hits += part->dns_hits;
	total->dns_shared += part->dns_shared;
	total->dns_entries += part->dns_entries;
	total->dns_memory += part->dns_memory;
	if (part->cluster.enabled) {
		struct stats_cluster *c = &total->cluster;
		const struct stats_cluster *p = &part->cluster;
		if (!c->enabled) {
			*c = *p;
		} else {
			c->shared = c->shared && p->shared;
			c->nodes = RP_MAX(c->nodes, p->nodes);
			c->fallbacks += p->fallbacks;
			c->commands += p->commands;
			c->errors += p->errors;
			if (!c->last_error[0])
				memcpy(c->last_error, p->last_error, sizeof(c->last_error));
		}
	}
	if (part->webhook.enabled)
		total->webhook = part->webhook; /* one poster, on shard 0 */
	stats_hist_merge(&total->delivery, &part->delivery);
	stats_hist_merge(&total->txn, &part->txn);
}

void stats_free(struct stats_snapshot *s)
{
	free(s->domains);
	free(s->dests);
	memset(s, 0, sizeof(*s));
}
