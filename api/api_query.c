/* api_query.c - GET /v1/messages/{id}, /v1/stats, /metrics, /healthz and the
 * queue administration endpoints.
 *
 * Message status is read from the spool (one short read transaction).
 * Counters come from every shard through api_ops.stats, so /v1/stats and
 * /metrics are built from the same snapshot and always agree.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "http.h"
#include <ctype.h>

#include "base/addr.h"
#include "base/log.h"
#include "base/msg_header.h"
#include "base/util.h"
#include "queue/submit_dkim.h"

#define METRIC_DOMAINS 20 /* per-domain series kept; the rest are "other" */

/* ---- message status ---------------------------------------------------- */

/* open_message - parse the id in arg[0..idlen), begin a read transaction
 * and find the message. On false the answer (404, 503) has been given and
 * no transaction is open; on true the caller ends it. */
static bool open_message(struct api_session *s, const char *arg, size_t idlen, uint64_t *id,
                         struct spool_msg *m)
{
	struct api_server *srv = s->srv;
	if (!rp_id_parse(arg, idlen, id)) {
		http_error(s, 404, "not_found", "no message '%.64s' (ids are 16 hex digits)", arg);
		return false;
	}
	if (!spool_reader_begin(srv->reader)) {
		http_error(s, 503, "unavailable", "the spool cannot be read right now");
		return false;
	}
	if (!spool_get_msg(srv->reader, *id, m)) {
		spool_reader_end(srv->reader);
		http_error(s, 404, "not_found", "no message %.16s", arg);
		return false;
	}
	return true;
}

struct status_ctx {
	struct buf *b;
	const char *id;
	long only; /* a single recipient index, or -1 */
	unsigned n;
};

static bool status_rcpt(const struct spool_rcpt *rc, void *arg)
{
	struct status_ctx *c = arg;
	if (c->only >= 0 && rc->idx != (uint32_t)c->only)
		return true;
	struct buf *b = c->b;
	buf_puts(b, c->n++ ? ",{\"email\":" : "{\"email\":");
	http_json_str(b, rc->addr, rc->addr_len);
	buf_printf(b,
	           ",\"id\":\"%s.%u\",\"state\":\"%s\",\"attempts\":%u,\"last_response\":", c->id,
	           rc->idx, spool_state_name(rc->state), rc->attempts);
	if (rc->response_len)
		http_json_str(b, rc->response, rc->response_len);
	else
		buf_puts(b, "null");
	buf_puts(b, ",\"next_attempt\":");
	api_iso_time(b, rc->state == SPOOL_DEFERRED ? rc->next_ms : 0);
	buf_puts(b, ",\"last_attempt\":");
	api_iso_time(b, rc->last_ms);
	buf_puts(b, ",\"remote\":");
	if (rc->remote_len)
		http_json_str(b, rc->remote, rc->remote_len);
	else
		buf_puts(b, "null");
	buf_puts(b, "}");
	return true;
}

void api_message_status(struct api_session *s, const char *arg)
{
	uint64_t id;
	long only = -1;
	const char *dot = strchr(arg, '.');
	size_t idlen = dot ? (size_t)(dot - arg) : strlen(arg);
	if (dot) {
		char *end;
		only = strtol(dot + 1, &end, 10);
		if (end == dot + 1 || *end || only < 0)
			idlen = 0;
	}
	struct api_server *srv = s->srv;
	struct spool_msg m;
	if (!open_message(s, arg, idlen, &id, &m))
		return;
	char ids[17];
	rp_id_format(id, ids);
	struct buf b = { 0 };
	buf_printf(&b, "{\"id\":\"%s\",\"from\":", ids);
	http_json_str(&b, m.sender, m.sender_len);
	buf_puts(&b, ",\"submitter\":");
	if (m.submitter_len)
		http_json_str(&b, m.submitter, m.submitter_len);
	else
		buf_puts(&b, "null");
	buf_puts(&b, ",\"submitted\":");
	api_iso_time(&b, m.submit_ms);
	buf_printf(&b, ",\"size\":%llu,\"recipients\":[", (unsigned long long)m.body_len);
	struct status_ctx c = { .b = &b, .id = ids, .only = only };
	spool_foreach_rcpt(srv->reader, id, status_rcpt, &c);
	spool_reader_end(srv->reader);
	buf_puts(&b, "]}");
	if (only >= 0 && !c.n) {
		buf_free(&b);
		http_error(s, 404, "not_found", "message %s has no recipient %ld", ids, only);
		return;
	}
	http_respond_json(s, 200, &b);
}

/* ---- purging one message ---------------------------------------------- */

struct purge_job {
	struct api_session *s;
	uint64_t id;
	bool bounce;
	unsigned pending;
	uint64_t affected;
	struct api_admin_req *reqs;
};

struct domain_set {
	char (*names)[256];
	unsigned n, cap;
};

static bool collect_domain(const struct spool_rcpt *rc, void *arg)
{
	struct domain_set *ds = arg;
	if (SPOOL_STATE_FINAL(rc->state))
		return true;
	const char *at = memrchr(rc->addr, '@', rc->addr_len);
	if (!at)
		return true;
	char d[256];
	size_t n = RP_MIN((size_t)(rc->addr + rc->addr_len - at - 1), sizeof(d) - 1);
	memcpy(d, at + 1, n);
	d[n] = '\0';
	rp_lower(d);
	for (unsigned i = 0; i < ds->n; i++)
		if (!strcmp(ds->names[i], d))
			return true;
	if (ds->n == ds->cap) {
		ds->cap = ds->cap ? ds->cap * 2 : 4;
		ds->names = xrealloc(ds->names, ds->cap * sizeof(*ds->names));
	}
	memcpy(ds->names[ds->n++], d, n + 1);
	return true;
}

static void purge_answer(struct api_session *s, uint64_t id, bool bounce, uint64_t affected)
{
	char ids[17];
	rp_id_format(id, ids);
	struct buf b = { 0 };
	buf_printf(&b, "{\"id\":\"%s\",\"action\":\"purge\",\"mode\":\"%s\",\"recipients\":%llu}",
	           ids, bounce ? "bounce" : "drop", (unsigned long long)affected);
	http_respond_json(s, 200, &b);
}

static void purge_part_done(struct api_admin_req *req)
{
	struct purge_job *j = req->arg;
	j->affected += req->affected;
	if (--j->pending)
		return;
	struct api_session *s = j->s;
	if (!s->released)
		purge_answer(s, j->id, j->bounce, j->affected);
	free(j->reqs);
	free(j);
	http_end_async(s);
}

void api_message_purge(struct api_session *s, const char *arg)
{
	uint64_t id;
	struct api_server *srv = s->srv;
	struct spool_msg m;
	if (!open_message(s, arg, strlen(arg), &id, &m))
		return;
	struct domain_set ds = { 0 };
	spool_foreach_rcpt(srv->reader, id, collect_domain, &ds);
	spool_reader_end(srv->reader);
	char mode[16];
	bool bounce = http_query_param(s, "mode", mode, sizeof(mode)) && !strcmp(mode, "bounce");
	if (!ds.n) {
		purge_answer(s, id, bounce, 0);
		return;
	}
	struct purge_job *j = xcalloc(1, sizeof(*j));
	j->s = s;
	j->id = id;
	j->bounce = bounce;
	j->pending = ds.n;
	j->reqs = xcalloc(ds.n, sizeof(*j->reqs));
	http_begin_async(s);
	for (unsigned i = 0; i < ds.n; i++) {
		struct api_admin_req *r = &j->reqs[i];
		r->op = API_ADMIN_PURGE_MSG;
		memcpy(r->domain, ds.names[i], sizeof(r->domain));
		r->msgid = id;
		r->bounce = bounce;
		r->done = purge_part_done;
		r->arg = j;
		srv->ops->admin(srv->ctx, r);
	}
	free(ds.names);
}

/* ---- stats and metrics ------------------------------------------------- */

struct stats_job {
	struct api_stats_req req;
	struct api_session *s;
	void (*answer)(struct api_session *s, struct stats_snapshot *snap);
};

static void stats_done(struct api_stats_req *req)
{
	struct stats_job *j = RP_CONTAINER_OF(req, struct stats_job, req);
	if (!j->s->released)
		j->answer(j->s, &req->snap);
	stats_free(&req->snap);
	struct api_session *s = j->s;
	free(j);
	http_end_async(s);
}

static void gather(struct api_session *s,
                   void (*answer)(struct api_session *s, struct stats_snapshot *snap))
{
	struct stats_job *j = xcalloc(1, sizeof(*j));
	j->s = s;
	j->answer = answer;
	j->req.done = stats_done;
	http_begin_async(s);
	s->srv->ops->stats(s->srv->ctx, &j->req);
}

static int domain_cmp(const void *a, const void *b)
{
	return strcmp(((const struct stats_domain *)a)->name,
	              ((const struct stats_domain *)b)->name);
}

static void counts_json(struct buf *b, const struct stats_counts *n)
{
	buf_printf(b,
	           "\"queued\":%llu,\"deferred\":%llu,\"in_flight\":%llu,\"delivered\":%llu,"
	           "\"bounced\":%llu,\"connections\":%llu",
	           (unsigned long long)n->queued, (unsigned long long)n->deferred,
	           (unsigned long long)n->in_flight, (unsigned long long)n->delivered,
	           (unsigned long long)n->bounced, (unsigned long long)n->connections);
}

static void domains_json(struct buf *b, struct stats_snapshot *snap)
{
	if (snap->ndomains) /* domains is NULL then, and qsort's base must not be */
		qsort(snap->domains, snap->ndomains, sizeof(*snap->domains), domain_cmp);
	buf_puts(b, "[");
	for (unsigned i = 0; i < snap->ndomains; i++) {
		const struct stats_domain *d = &snap->domains[i];
		buf_puts(b, i ? ",{\"domain\":" : "{\"domain\":");
		http_json_str(b, d->name, strlen(d->name));
		buf_puts(b, ",");
		counts_json(b, &d->n);
		buf_printf(b,
		           ",\"suspended\":%s,\"backoff_until\":", d->suspended ? "true" : "false");
		api_iso_time(b, d->hold_until_ms);
		buf_puts(b, ",\"backoff_reason\":");
		if (d->hold_until_ms)
			http_json_str(b, d->hold_reason, strlen(d->hold_reason));
		else
			buf_puts(b, "null");
		buf_printf(b,
		           ",\"limits\":{\"max_connections\":%u,\"max_messages_per_connection\":%u,"
		           "\"max_recipients_per_message\":%u,\"rate\":%g}",
		           d->max_connections, d->max_msgs_per_conn, d->max_rcpts_per_msg, d->rate);
		/* Its destination's TLS: null until the domain has a route. */
		if (d->tls_policy[0])
			buf_printf(
			    b,
			    ",\"tls\":{\"policy\":\"%s\",\"sessions\":%llu,\"tls_sessions\":%llu,"
			    "\"handshake_failures\":%llu}}",
			    d->tls_policy, (unsigned long long)d->sessions,
			    (unsigned long long)d->tls_sessions,
			    (unsigned long long)d->tls_failures);
		else
			buf_puts(b, ",\"tls\":null}");
	}
	buf_puts(b, "]");
}

static int dest_cmp(const void *a, const void *b)
{
	return strcmp(((const struct stats_dest *)a)->key, ((const struct stats_dest *)b)->key);
}

/* dest_source_json - ,"ehlo":NAME,"source":[{"address","sessions",
 * "connections"}...] of a destination ([] when the kernel chooses). */
static void dest_source_json(struct buf *b, const struct stats_dest *d)
{
	buf_puts(b, ",\"ehlo\":");
	http_json_str(b, d->ehlo, strlen(d->ehlo));
	buf_puts(b, ",\"source\":[");
	for (unsigned k = 0; k < d->nsources; k++) {
		const struct stats_source *src = &d->sources[k];
		buf_puts(b, k ? ",{\"address\":" : "{\"address\":");
		http_json_str(b, src->addr, strlen(src->addr));
		buf_printf(b, ",\"sessions\":%llu,\"connections\":%llu}",
		           (unsigned long long)src->sessions, (unsigned long long)src->connections);
	}
	buf_puts(b, "]");
}

/* client_limits_json - ,"client_limits":{"submission":{"connections":N,
 * ...},...}: clients refused, slowed or cut off by [limits], by listener. */
static void client_limits_json(struct buf *b, const struct stats_snapshot *snap)
{
	buf_puts(b, ",\"client_limits\":{");
	for (unsigned k = 0; k < CLIMIT_KINDS; k++) {
		buf_printf(b, "%s\"%s\":{", k ? "," : "", climit_kind_names[k]);
		for (unsigned r = 0; r < CLIMIT_REASONS; r++)
			buf_printf(b, "%s\"%s\":%llu", r ? "," : "", climit_reason_names[r],
			           (unsigned long long)snap->client_limits[k][r]);
		buf_puts(b, "}");
	}
	buf_puts(b, "}");
}

/* shape_json - ,"effective":{...}: the concurrency and rate the receiver
 * tolerates now (traffic shaping), the last change and why. */
static void shape_json(struct buf *b, const struct stats_dest *d)
{
	buf_printf(b, ",\"effective\":{\"concurrency\":%u,\"rate\":", d->eff_concurrency);
	if (d->eff_rate > 0)
		buf_printf(b, "%.2f", d->eff_rate);
	else
		buf_puts(b, "null");
	buf_printf(b,
	           ",\"refused_sessions\":%llu,\"rate_signals\":%llu,\"empty_sessions\":%llu,"
	           "\"reason\":",
	           (unsigned long long)d->refused_sessions, (unsigned long long)d->rate_signals,
	           (unsigned long long)d->empty_sessions);
	http_json_str_or_null(b, d->shape_why);
	buf_puts(b, ",\"changed\":");
	api_iso_time(b, d->shape_ms);
	buf_puts(b, "}");
}

/* cluster_json - ,"cluster":{...}: shared or fallback, nodes, Redis
 * numbers (null without [cluster]). */
static void cluster_json(struct buf *b, const struct stats_cluster *c)
{
	if (!c->enabled) {
		buf_puts(b, ",\"cluster\":null");
		return;
	}
	buf_puts(b, ",\"cluster\":{\"node\":");
	http_json_str(b, c->node, strlen(c->node));
	buf_printf(b,
	           ",\"mode\":\"%s\",\"nodes\":%u,\"fallbacks\":%llu,\"redis_commands\":%llu,"
	           "\"redis_errors\":%llu,\"last_error\":",
	           c->shared ? "shared" : "fallback", c->nodes, (unsigned long long)c->fallbacks,
	           (unsigned long long)c->commands, (unsigned long long)c->errors);
	http_json_str_or_null(b, c->last_error);
	buf_puts(b, "}");
}

/* webhook_json - ,"webhook":{...}: the poster's numbers and the spool's
 * backlog of events (null when no [webhook] url is set). */
static void webhook_json(struct buf *b, const struct spool *sp, const struct stats_webhook *w)
{
	if (!w->enabled) {
		buf_puts(b, ",\"webhook\":null");
		return;
	}
	struct spool_events_info ei;
	spool_events_info(sp, &ei);
	buf_printf(b,
	           ",\"webhook\":{\"backlog\":%llu,\"dropped\":%llu,\"recorded\":%llu,"
	           "\"posted\":%llu,\"posts\":%llu,\"failures\":%llu,\"last_status\":%d,"
	           "\"last_success\":",
	           (unsigned long long)ei.backlog, (unsigned long long)ei.dropped,
	           (unsigned long long)ei.recorded, (unsigned long long)w->events_posted,
	           (unsigned long long)w->posts, (unsigned long long)w->failures, w->last_status);
	api_iso_time(b, w->last_success_ms);
	buf_puts(b, ",\"last_error\":");
	http_json_str_or_null(b, w->last_error);
	buf_puts(b, ",\"last_error_time\":");
	api_iso_time(b, w->last_error_ms);
	buf_puts(b, ",\"retry_at\":");
	api_iso_time(b, w->retry_at_ms);
	buf_puts(b, "}");
}

static void answer_stats(struct api_session *s, struct stats_snapshot *snap)
{
	struct spool_usage u;
	spool_usage(s->srv->spool, &u);
	struct buf b = { 0 };
	buf_puts(&b, "{");
	counts_json(&b, &snap->total);
	buf_printf(
	    &b,
	    ",\"accepted\":{\"smtp\":%llu,\"api\":%llu},\"rejected\":%llu,\"suppressed\":%llu,"
	    "\"reports\":{\"received\":%llu,\"matched\":%llu},"
	    "\"inbound_connections\":%llu,\"spool\":{\"used_bytes\":%llu,\"file_bytes\":%llu,"
	    "\"limit_bytes\":%llu,\"disk_free_bytes\":%llu,\"accepting\":%s,\"commits\":%llu,"
	    "\"syncs\":%llu}",
	    (unsigned long long)snap->accepted_smtp, (unsigned long long)snap->accepted_api,
	    (unsigned long long)snap->rejected, (unsigned long long)snap->suppressed,
	    (unsigned long long)snap->reports, (unsigned long long)snap->reports_matched,
	    (unsigned long long)snap->inbound_connections, (unsigned long long)u.used,
	    (unsigned long long)u.file_size, (unsigned long long)u.map_size,
	    (unsigned long long)u.disk_free, spool_accepting(s->srv->spool) ? "true" : "false",
	    (unsigned long long)u.commits, (unsigned long long)u.syncs);
	client_limits_json(&b, snap);
	webhook_json(&b, s->srv->spool, &snap->webhook);
	cluster_json(&b, &snap->cluster);
	buf_printf(&b,
	           ",\"loop_max_busy_ms\":%.3f,\"dns\":{\"lookups\":%llu,\"queries\":%llu,"
	           "\"cache_hits\":%llu,\"shared\":%llu,\"cache_entries\":%llu,"
	           "\"cache_bytes\":%llu}",
	           (double)snap->loop_max_busy_us / 1000.0, (unsigned long long)snap->dns_lookups,
	           (unsigned long long)snap->dns_queries, (unsigned long long)snap->dns_hits,
	           (unsigned long long)snap->dns_shared, (unsigned long long)snap->dns_entries,
	           (unsigned long long)snap->dns_memory);
	buf_printf(&b,
	           ",\"dkim\":{\"signed\":%llu,\"no_key\":%llu,\"failed\":%llu,"
	           "\"sign_cpu_seconds\":%.3f},\"domains\":",
	           (unsigned long long)atomic_load(&dkim_counters.signed_msgs),
	           (unsigned long long)atomic_load(&dkim_counters.unsigned_no_key),
	           (unsigned long long)atomic_load(&dkim_counters.failed),
	           (double)atomic_load(&dkim_counters.sign_us) / 1e6);
	domains_json(&b, snap);
	/* Each shard has its own pool for a destination: show one per key. */
	if (snap->ndests) /* qsort's base must not be NULL, even for none */
		qsort(snap->dests, snap->ndests, sizeof(*snap->dests), dest_cmp);
	unsigned nd = 0;
	for (unsigned i = 0; i < snap->ndests; i++) {
		struct stats_dest *d = &snap->dests[i];
		if (nd && !strcmp(snap->dests[nd - 1].key, d->key)) {
			struct stats_dest *m = &snap->dests[nd - 1];
			m->connections += d->connections;
			m->ndomains += d->ndomains;
			m->tls_sessions += d->tls_sessions;
			m->tls_resumed += d->tls_resumed;
			m->tls_failures += d->tls_failures;
			/* Shaping: each shard's pool adapts on its own; show the
			 * sum of what they allow and the latest reason. */
			m->eff_concurrency += d->eff_concurrency;
			m->eff_rate += d->eff_rate;
			m->refused_sessions += d->refused_sessions;
			m->rate_signals += d->rate_signals;
			m->empty_sessions += d->empty_sessions;
			if (d->shape_ms > m->shape_ms) {
				m->shape_ms = d->shape_ms;
				memcpy(m->shape_why, d->shape_why, sizeof(m->shape_why));
			}
			m->cluster_share += d->cluster_share; /* this node's: every shard's */
			m->cluster_sessions = RP_MAX(m->cluster_sessions, d->cluster_sessions);
			/* The same key: the same sources, in the same order. */
			for (unsigned k = 0; k < m->nsources && k < d->nsources; k++) {
				m->sources[k].sessions += d->sources[k].sessions;
				m->sources[k].connections += d->sources[k].connections;
			}
			size_t o = strlen(m->domains), n = strlen(d->domains);
			if (n && o + 1 + n < sizeof(m->domains)) {
				if (o)
					m->domains[o++] = ',';
				memcpy(m->domains + o, d->domains, n + 1);
			}
			continue;
		}
		snap->dests[nd++] = *d;
	}
	snap->ndests = nd;
	buf_puts(&b, ",\"destinations\":[");
	for (unsigned i = 0; i < snap->ndests; i++) {
		const struct stats_dest *d = &snap->dests[i];
		buf_puts(&b, i ? ",{\"destination\":" : "{\"destination\":");
		http_json_str(&b, d->key, strlen(d->key));
		buf_puts(&b, ",\"domains\":[");
		const char *p = d->domains;
		for (unsigned k = 0; *p; k++) {
			size_t n = strcspn(p, ",");
			buf_puts(&b, k ? "," : "");
			http_json_str(&b, p, n);
			p += n + (p[n] == ',');
		}
		buf_printf(
		    &b,
		    "],\"domain_count\":%u,\"connections\":%llu,\"max_connections\":%u,"
		    "\"tls\":{\"sessions\":%llu,\"resumed\":%llu,\"handshake_failures\":%llu}",
		    d->ndomains, (unsigned long long)d->connections, d->max_connections,
		    (unsigned long long)d->tls_sessions, (unsigned long long)d->tls_resumed,
		    (unsigned long long)d->tls_failures);
		dest_source_json(&b, d);
		shape_json(&b, d);
		if (d->cluster)
			buf_printf(&b, ",\"cluster\":{\"sessions\":%u,\"share\":%u}",
			           d->cluster_sessions, d->cluster_share);
		buf_puts(&b, "}");
	}
	buf_puts(&b, "]}");
	http_respond_json(s, 200, &b);
}

void api_stats(struct api_session *s, const char *arg)
{
	(void)arg;
	gather(s, answer_stats);
}

void api_queue_list(struct api_session *s, const char *arg)
{
	(void)arg;
	gather(s, answer_stats);
}

/* prom_label - a label value with \, " and newline escaped. */
static void prom_label(struct buf *b, const char *v)
{
	for (; *v; v++) {
		if (*v == '\\' || *v == '"')
			buf_printf(b, "\\%c", *v);
		else if (*v == '\n')
			buf_puts(b, "\\n");
		else
			buf_append(b, v, 1);
	}
}

static void prom_head(struct buf *b, const char *name, const char *type, const char *help)
{
	buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void prom_hist(struct buf *b, const char *name, const char *help, const struct stats_hist *h,
                      const double *bounds, unsigned nb)
{
	prom_head(b, name, "histogram", help);
	uint64_t cum = 0;
	for (unsigned i = 0; i < nb; i++) {
		cum += h->bucket[i];
		buf_printf(b, "%s_bucket{le=\"%g\"} %llu\n", name, bounds[i],
		           (unsigned long long)cum);
	}
	cum += h->bucket[nb];
	buf_printf(b, "%s_bucket{le=\"+Inf\"} %llu\n%s_sum %.6f\n%s_count %llu\n", name,
	           (unsigned long long)cum, name, h->sum, name, (unsigned long long)h->count);
}

static int domain_volume_cmp(const void *a, const void *b)
{
	const struct stats_domain *x = a, *y = b;
	uint64_t vx = x->n.delivered + x->n.bounced + x->n.deferrals + x->n.queued + x->n.deferred;
	uint64_t vy = y->n.delivered + y->n.bounced + y->n.deferrals + y->n.queued + y->n.deferred;
	if (vx != vy)
		return vx > vy ? -1 : 1;
	return strcmp(x->name, y->name);
}

/* per_domain - one counter for the busiest domains and "other" for the rest
 * (bounded cardinality). */
static void per_domain(struct buf *b, const char *name, const char *type, const char *help,
                       const struct stats_snapshot *snap, size_t field)
{
	uint64_t other = 0;
	prom_head(b, name, type, help);
	for (unsigned i = 0; i < snap->ndomains; i++) {
		uint64_t v = *(const uint64_t *)((const char *)&snap->domains[i].n + field);
		if (i >= METRIC_DOMAINS) {
			other += v;
			continue;
		}
		buf_printf(b, "%s{domain=\"", name);
		prom_label(b, snap->domains[i].name);
		buf_printf(b, "\"} %llu\n", (unsigned long long)v);
	}
	if (snap->ndomains > METRIC_DOMAINS)
		buf_printf(b, "%s{domain=\"other\"} %llu\n", name, (unsigned long long)other);
}

/* shape_metrics - traffic shaping's adaptations, all destinations. */
static void shape_metrics(struct buf *b, const struct stats_snapshot *snap)
{
	uint64_t refused = 0, rate = 0, empty = 0;
	for (unsigned i = 0; i < snap->ndests; i++) {
		refused += snap->dests[i].refused_sessions;
		rate += snap->dests[i].rate_signals;
		empty += snap->dests[i].empty_sessions;
	}
	prom_head(b, "ringpost_shaping_signals_total", "counter",
	          "Receiver refusals that lowered a destination's concurrency or rate.");
	buf_printf(b,
	           "ringpost_shaping_signals_total{kind=\"concurrency\"} %llu\n"
	           "ringpost_shaping_signals_total{kind=\"rate\"} %llu\n",
	           (unsigned long long)refused, (unsigned long long)rate);
	prom_head(b, "ringpost_empty_sessions_total", "counter",
	          "Outbound sessions that ended without carrying a message.");
	buf_printf(b, "ringpost_empty_sessions_total %llu\n", (unsigned long long)empty);
	prom_head(b, "ringpost_warmup_waits_total", "counter",
	          "Times a domain's mail waited for the next day: every source had sent its "
	          "warm-up cap.");
	buf_printf(b, "ringpost_warmup_waits_total %llu\n", (unsigned long long)snap->warmup_waits);
}

/* webhook_metrics - the poster's series (none without a [webhook] url). */
static void webhook_metrics(struct buf *b, const struct spool *sp, const struct stats_webhook *w)
{
	if (!w->enabled)
		return;
	struct spool_events_info ei;
	spool_events_info(sp, &ei);
	prom_head(b, "ringpost_webhook_backlog_events", "gauge",
	          "Events kept in the spool, not yet taken by the webhook endpoint.");
	buf_printf(b, "ringpost_webhook_backlog_events %llu\n", (unsigned long long)ei.backlog);
	prom_head(b, "ringpost_webhook_events_total", "counter",
	          "Webhook events: recorded, posted (answered 2xx), dropped (over "
	          "max_backlog).");
	buf_printf(b,
	           "ringpost_webhook_events_total{result=\"recorded\"} %llu\n"
	           "ringpost_webhook_events_total{result=\"posted\"} %llu\n"
	           "ringpost_webhook_events_total{result=\"dropped\"} %llu\n",
	           (unsigned long long)ei.recorded, (unsigned long long)w->events_posted,
	           (unsigned long long)ei.dropped);
	prom_head(b, "ringpost_webhook_requests_total", "counter", "Webhook requests, by result.");
	buf_printf(b,
	           "ringpost_webhook_requests_total{result=\"ok\"} %llu\n"
	           "ringpost_webhook_requests_total{result=\"failed\"} %llu\n",
	           (unsigned long long)w->posts, (unsigned long long)w->failures);
	prom_head(b, "ringpost_webhook_last_success_timestamp_seconds", "gauge",
	          "Unix time of the last request answered 2xx (0 = never).");
	buf_printf(b, "ringpost_webhook_last_success_timestamp_seconds %.3f\n",
	           (double)w->last_success_ms / 1000.0);
}

static void answer_metrics(struct api_session *s, struct stats_snapshot *snap)
{
	struct spool_usage u;
	spool_usage(s->srv->spool, &u);
	if (snap->ndomains) /* as in domains_json */
		qsort(snap->domains, snap->ndomains, sizeof(*snap->domains), domain_volume_cmp);
	struct buf b = { 0 };
	const struct stats_counts *t = &snap->total;
	prom_head(&b, "ringpost_messages_accepted_total", "counter",
	          "Messages accepted for delivery (durable).");
	buf_printf(&b, "ringpost_messages_accepted_total{source=\"smtp\"} %llu\n",
	           (unsigned long long)snap->accepted_smtp);
	buf_printf(&b, "ringpost_messages_accepted_total{source=\"api\"} %llu\n",
	           (unsigned long long)snap->accepted_api);
	prom_head(&b, "ringpost_recipients_suppressed_total", "counter",
	          "Recipients on the suppression list at submission (never tried).");
	buf_printf(&b, "ringpost_recipients_suppressed_total %llu\n",
	           (unsigned long long)snap->suppressed);
	prom_head(&b, "ringpost_reports_received_total", "counter",
	          "Bounces and complaints received at the bounce MX.");
	buf_printf(&b, "ringpost_reports_received_total{matched=\"yes\"} %llu\n",
	           (unsigned long long)snap->reports_matched);
	buf_printf(&b, "ringpost_reports_received_total{matched=\"no\"} %llu\n",
	           (unsigned long long)(snap->reports - snap->reports_matched));
	prom_head(&b, "ringpost_dkim_signatures_total", "counter",
	          "Messages (or personalised copies) by DKIM outcome.");
	buf_printf(&b, "ringpost_dkim_signatures_total{result=\"signed\"} %llu\n",
	           (unsigned long long)atomic_load(&dkim_counters.signed_msgs));
	buf_printf(&b, "ringpost_dkim_signatures_total{result=\"no_key\"} %llu\n",
	           (unsigned long long)atomic_load(&dkim_counters.unsigned_no_key));
	buf_printf(&b, "ringpost_dkim_signatures_total{result=\"failed\"} %llu\n",
	           (unsigned long long)atomic_load(&dkim_counters.failed));
	prom_head(&b, "ringpost_dkim_sign_cpu_seconds_total", "counter",
	          "CPU time the signing threads spent signing.");
	buf_printf(&b, "ringpost_dkim_sign_cpu_seconds_total %.6f\n",
	           (double)atomic_load(&dkim_counters.sign_us) / 1e6);
	prom_head(&b, "ringpost_messages_rejected_total", "counter",
	          "Submissions refused at the end of the transaction.");
	buf_printf(&b, "ringpost_messages_rejected_total %llu\n",
	           (unsigned long long)snap->rejected);
	per_domain(&b, "ringpost_recipients_delivered_total", "counter",
	           "Recipients delivered, by destination domain.", snap,
	           offsetof(struct stats_counts, delivered));
	per_domain(&b, "ringpost_recipients_deferred_total", "counter",
	           "Deferrals (temporary failures), by destination domain.", snap,
	           offsetof(struct stats_counts, deferrals));
	per_domain(&b, "ringpost_recipients_bounced_total", "counter",
	           "Recipients bounced, by destination domain.", snap,
	           offsetof(struct stats_counts, bounced));
	prom_head(&b, "ringpost_queue_recipients", "gauge", "Recipients in the queue, by state.");
	buf_printf(&b,
	           "ringpost_queue_recipients{state=\"queued\"} %llu\n"
	           "ringpost_queue_recipients{state=\"deferred\"} %llu\n"
	           "ringpost_queue_recipients{state=\"in_flight\"} %llu\n",
	           (unsigned long long)t->queued, (unsigned long long)t->deferred,
	           (unsigned long long)t->in_flight);
	prom_head(&b, "ringpost_connections", "gauge", "Open connections, by direction.");
	buf_printf(&b,
	           "ringpost_connections{direction=\"outbound\"} %llu\n"
	           "ringpost_connections{direction=\"inbound\"} %llu\n",
	           (unsigned long long)t->connections,
	           (unsigned long long)snap->inbound_connections);
	prom_head(&b, "ringpost_client_limit_total", "counter",
	          "Clients refused, slowed or cut off by [limits], by listener and reason.");
	for (unsigned k = 0; k < CLIMIT_KINDS; k++)
		for (unsigned r = 0; r < CLIMIT_REASONS; r++)
			buf_printf(
			    &b, "ringpost_client_limit_total{listener=\"%s\",reason=\"%s\"} %llu\n",
			    climit_kind_names[k], climit_reason_names[r],
			    (unsigned long long)snap->client_limits[k][r]);
	prom_head(&b, "ringpost_spool_bytes", "gauge", "Spool size in bytes.");
	buf_printf(&b,
	           "ringpost_spool_bytes{kind=\"used\"} %llu\n"
	           "ringpost_spool_bytes{kind=\"file\"} %llu\n"
	           "ringpost_spool_bytes{kind=\"limit\"} %llu\n",
	           (unsigned long long)u.used, (unsigned long long)u.file_size,
	           (unsigned long long)u.map_size);
	prom_head(&b, "ringpost_dns_queries_total", "counter", "DNS queries sent.");
	buf_printf(&b, "ringpost_dns_queries_total %llu\n", (unsigned long long)snap->dns_queries);
	prom_head(&b, "ringpost_dns_lookups_total", "counter",
	          "Route lookups, by how they were answered.");
	buf_printf(
	    &b,
	    "ringpost_dns_lookups_total{result=\"cache\"} %llu\n"
	    "ringpost_dns_lookups_total{result=\"shared\"} %llu\n"
	    "ringpost_dns_lookups_total{result=\"query\"} %llu\n",
	    (unsigned long long)snap->dns_hits, (unsigned long long)snap->dns_shared,
	    (unsigned long long)(snap->dns_lookups -
	                         RP_MIN(snap->dns_lookups, snap->dns_hits + snap->dns_shared)));
	prom_head(&b, "ringpost_dns_cache_entries", "gauge", "Entries in the DNS caches.");
	buf_printf(&b, "ringpost_dns_cache_entries %llu\n", (unsigned long long)snap->dns_entries);
	webhook_metrics(&b, s->srv->spool, &snap->webhook);
	shape_metrics(&b, snap);
	prom_hist(&b, "ringpost_delivery_latency_seconds",
	          "Seconds from submission to delivery, per recipient.", &snap->delivery,
	          stats_delivery_bounds, STATS_DELIVERY_BUCKETS);
	prom_hist(&b, "ringpost_smtp_transaction_seconds", "Seconds per outbound SMTP transaction.",
	          &snap->txn, stats_txn_bounds, STATS_TXN_BUCKETS);
	http_respond(s, 200, "text/plain; version=0.0.4; charset=utf-8", buf_head(&b), buf_used(&b),
	             NULL);
	buf_free(&b);
}

void api_metrics(struct api_session *s, const char *arg)
{
	(void)arg;
	gather(s, answer_metrics);
}

void api_healthz(struct api_session *s, const char *arg)
{
	(void)arg;
	if (s->srv->shutting_down) {
		http_error(s, 503, "unavailable", "shutting down");
		return;
	}
	if (!spool_accepting(s->srv->spool)) {
		http_error(s, 503, "unavailable", "the spool is full");
		return;
	}
	static const char ok[] = "{\"status\":\"ok\"}\n";
	http_respond(s, 200, "application/json", ok, sizeof(ok) - 1, NULL);
}

/* ---- administration ---------------------------------------------------- */

struct admin_job {
	struct api_admin_req req;
	struct api_session *s;
};

static void admin_done(struct api_admin_req *req)
{
	struct admin_job *j = RP_CONTAINER_OF(req, struct admin_job, req);
	struct api_session *s = j->s;
	if (!s->released) {
		if (!req->found && req->op != API_ADMIN_SUSPEND) {
			http_error(s, 404, "not_found", "no queue for domain %s", req->domain);
		} else {
			struct buf b = { 0 };
			static const char *const names[] = { "retry", "suspend", "resume", "purge",
				                             "purge" };
			buf_puts(&b, "{\"domain\":");
			http_json_str(&b, req->domain, strlen(req->domain));
			buf_printf(&b, ",\"action\":\"%s\",\"recipients\":%llu}", names[req->op],
			           (unsigned long long)req->affected);
			http_respond_json(s, 200, &b);
		}
	}
	free(j);
	http_end_async(s);
}

void api_queue_admin(struct api_session *s, const char *arg)
{
	/* arg: "DOMAIN/ACTION" */
	static const struct {
		const char *name;
		enum api_admin_op op;
	} actions[] = { { "retry", API_ADMIN_RETRY },
		        { "suspend", API_ADMIN_SUSPEND },
		        { "resume", API_ADMIN_RESUME },
		        { "purge", API_ADMIN_PURGE } };
	const char *slash = strrchr(arg, '/');
	if (!slash || slash == arg || (size_t)(slash - arg) >= 256) {
		http_error(s, 404, "not_found",
		           "use POST /v1/queue/DOMAIN/retry|suspend|resume|purge");
		return;
	}
	int op = -1;
	for (size_t i = 0; i < RP_ARRAY_LEN(actions); i++)
		if (!strcmp(slash + 1, actions[i].name))
			op = (int)actions[i].op;
	if (op < 0) {
		http_error(s, 404, "not_found", "unknown action '%.32s'", slash + 1);
		return;
	}
	if (!s->srv->ops->admin) {
		http_error(s, 503, "unavailable", "queue administration is not available");
		return;
	}
	char domain[256];
	size_t dl = 0;
	for (const char *p = arg; p < slash && dl + 1 < sizeof(domain); p++) {
		if (*p == '%' && slash - p >= 3 && isxdigit((unsigned char)p[1]) &&
		    isxdigit((unsigned char)p[2])) {
			char hx[3] = { p[1], p[2], 0 };
			domain[dl++] = (char)strtol(hx, NULL, 16);
			p += 2;
		} else {
			domain[dl++] = *p;
		}
	}
	domain[dl] = '\0';
	if (addr_domain_check(domain, dl, true) != ADDR_OK) {
		http_error(s, 400, "bad_field", "'%.64s' is not a domain name", domain);
		return;
	}
	struct admin_job *j = xcalloc(1, sizeof(*j));
	j->s = s;
	j->req.op = (enum api_admin_op)op;
	memcpy(j->req.domain, domain, dl + 1);
	rp_lower(j->req.domain);
	char mode[16];
	j->req.bounce = http_query_param(s, "mode", mode, sizeof(mode)) && !strcmp(mode, "bounce");
	j->req.done = admin_done;
	http_begin_async(s);
	s->srv->ops->admin(s->srv->ctx, &j->req);
}

/* ---- the bounce mailbox ------------------------------------------------ */

struct bounce_list {
	struct buf *b;
	unsigned n;
	unsigned skip; /* the first messages left out (?limit=) */
};

static bool bounce_count(const struct spool_mbox_entry *e, void *arg)
{
	(void)e;
	++*(unsigned *)arg;
	return true;
}

static bool bounce_item(const struct spool_mbox_entry *e, void *arg)
{
	struct bounce_list *l = arg;
	if (l->skip) {
		l->skip--;
		return true;
	}
	struct msg_header_info hi;
	const char *subj = NULL;
	size_t sl = 0;
	msg_header_scan(e->data, e->len, &hi);
	msg_header_get(e->data, hi.end, "Subject", &subj, &sl);
	buf_printf(l->b, "%s{\"uid\":%u,\"date\":", l->n++ ? "," : "", e->uid);
	api_iso_time(l->b, e->date_ms);
	buf_printf(l->b, ",\"size\":%zu,\"seen\":%s,\"flagged\":%s,\"subject\":", e->len,
	           e->flags & MBOX_SEEN ? "true" : "false",
	           e->flags & MBOX_FLAGGED ? "true" : "false");
	http_json_str(l->b, subj ? subj : "", sl);
	buf_puts(l->b, "}");
	return true;
}

void api_bounce_list(struct api_session *s, const char *arg)
{
	(void)arg;
	struct api_server *srv = s->srv;
	unsigned limit = 0; /* all */
	if (!http_query_limit(s, 100000, &limit))
		return;
	if (!spool_reader_begin(srv->reader)) {
		http_error(s, 503, "unavailable", "the spool cannot be read right now");
		return;
	}
	uint32_t uidvalidity, uidnext;
	spool_mbox_ids(srv->reader, &uidvalidity, &uidnext);
	struct buf b = { 0 };
	buf_printf(&b, "{\"uidvalidity\":%u,\"uidnext\":%u,\"messages\":[", uidvalidity, uidnext);
	struct bounce_list l = { .b = &b };
	if (limit) { /* the newest: count first (no parsing), then skip the rest */
		unsigned total = 0;
		spool_mbox_foreach(srv->reader, 1, bounce_count, &total);
		l.skip = total > limit ? total - (unsigned)limit : 0;
	}
	spool_mbox_foreach(srv->reader, 1, bounce_item, &l);
	spool_reader_end(srv->reader);
	buf_puts(&b, "]}");
	http_respond_json(s, 200, &b);
}

void api_bounce_get(struct api_session *s, const char *arg)
{
	char *end;
	unsigned long uid = strtoul(arg, &end, 10);
	if (!*arg || *end || !uid || uid > UINT32_MAX) {
		http_error(s, 404, "not_found", "no bounce '%.32s' (UIDs are numbers)", arg);
		return;
	}
	struct api_server *srv = s->srv;
	struct spool_mbox_entry e;
	if (!spool_reader_begin(srv->reader)) {
		http_error(s, 503, "unavailable", "the spool cannot be read right now");
		return;
	}
	if (!spool_mbox_get(srv->reader, (uint32_t)uid, &e)) {
		spool_reader_end(srv->reader);
		http_error(s, 404, "not_found", "no bounce with UID %lu", uid);
		return;
	}
	/* The message lives in LMDB memory only until the transaction ends. */
	http_respond(s, 200, "message/rfc822", e.data, e.len, NULL);
	spool_reader_end(srv->reader);
}
