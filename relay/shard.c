/* shard.c - shard threads: loop, listeners, scheduler clock, routing.
 *
 * Cross-thread traffic arrives as mq items on the shard's loop inbox:
 * recipients to queue (shard_route), "open", "stop" and "reconfigure".
 */
#include "shard.h"

#include <errno.h>
#include <liburing.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "base/log.h"
#include "base/util.h"
#include "delivery.h"
#include "queue/submit.h"
#include "smtp_server.h"
#include "cluster.h"
#include "webhook.h"

#define SCHED_TICK_MS 20
#define STOP_GRACE_MS 10000
#define ROUTE_BATCH   1024

struct shard_listener {
	struct loop_io io;
	struct shard *shard;
	enum listener_kind kind;
	int fd;
	bool armed;
	bool closing;
	struct loop_timer retry; /* re-arm after EMFILE */
};

/* ---- listeners --------------------------------------------------------- */

static void listener_arm(struct shard_listener *li);

static void listener_retry(struct loop_timer *t)
{
	struct shard_listener *li = RP_CONTAINER_OF(t, struct shard_listener, retry);
	if (!li->closing)
		listener_arm(li);
}

static void listener_cqe(struct loop_io *io, const struct loop_cqe *c)
{
	struct shard_listener *li = RP_CONTAINER_OF(io, struct shard_listener, io);
	struct shard *sh = li->shard;
	if (!(c->flags & IORING_CQE_F_MORE))
		li->armed = false;
	if (c->op == LOOP_OP_CANCEL)
		goto out;
	if (c->res >= 0) {
		if (li->closing || sh->stopping) {
			close(c->res);
		} else {
			switch (li->kind) {
			case LISTEN_SUBMISSION:
				smtpd_session_start(sh->smtpd, c->res, false);
				break;
			case LISTEN_SUBMISSIONS:
				smtpd_session_start(sh->smtpd, c->res, true);
				break;
			case LISTEN_API:
				api_session_start(sh->api, c->res);
				break;
			case LISTEN_INBOUND:
				smtpd_session_start(sh->inbound, c->res, false);
				break;
			case LISTEN_IMAP:
			case LISTEN_IMAPS:
				imap_session_start(sh->imap, c->res, li->kind == LISTEN_IMAPS);
				break;
			case LISTEN_POP3:
			case LISTEN_POP3S:
				pop3_session_start(sh->pop3, c->res, li->kind == LISTEN_POP3S);
				break;
			case LISTEN_KINDS:
				close(c->res);
				break;
			}
		}
	} else if (c->res != -ECANCELED) {
		log_warn("accept: %s", strerror(-c->res));
	}
	/* Any completion without F_MORE on a live listener means re-arm; after
	 * fd exhaustion, wait a little rather than spin. */
	if (!li->armed && !li->closing) {
		if (c->res == -EMFILE || c->res == -ENFILE || c->res == -ENOBUFS ||
		    c->res == -ENOMEM)
			loop_timer_arm(sh->loop, &li->retry, 100, listener_retry);
		else
			listener_arm(li);
	}
out:
	if (li->closing && !li->io.inflight) {
		loop_io_release(sh->loop, &li->io);
		close(li->fd);
		li->fd = -1;
	}
}

static void listener_arm(struct shard_listener *li)
{
	struct shard *sh = li->shard;
	struct io_uring_sqe *sqe = loop_sqe(sh->loop, &li->io, LOOP_OP_ACCEPT);
	io_uring_prep_multishot_accept(sqe, li->fd, NULL, NULL, SOCK_CLOEXEC);
	loop_tag(sh->loop, sqe, &li->io, LOOP_OP_ACCEPT);
	li->armed = true;
}

static void listeners_close(struct shard *sh)
{
	for (unsigned i = 0; i < sh->nlisteners; i++) {
		struct shard_listener *li = &sh->listeners[i];
		if (li->closing || li->fd < 0)
			continue;
		li->closing = true;
		loop_timer_disarm(sh->loop, &li->retry);
		if (li->io.inflight) {
			struct io_uring_sqe *sqe = loop_sqe(sh->loop, &li->io, LOOP_OP_CANCEL);
			io_uring_prep_cancel_fd(sqe, li->fd, IORING_ASYNC_CANCEL_ALL);
			loop_tag(sh->loop, sqe, &li->io, LOOP_OP_CANCEL);
		} else {
			loop_io_release(sh->loop, &li->io);
			close(li->fd);
			li->fd = -1;
		}
	}
}

/* ---- scheduler glue ---------------------------------------------------- */

static void sched_defer_run(struct loop_defer *d)
{
	struct shard *sh = RP_CONTAINER_OF(d, struct shard, sched_defer);
	sched_run(sh->sched);
}

void shard_touch(struct shard *sh)
{
	loop_defer(sh->loop, &sh->sched_defer, sched_defer_run);
}

static void tick(struct loop_timer *t)
{
	struct shard *sh = RP_CONTAINER_OF(t, struct shard, tick);
	sched_tick(sh->sched, rp_now_ms());
	if (sched_pending_kicks(sh->sched))
		shard_touch(sh);
	if (!sh->stopping)
		loop_timer_arm(sh->loop, &sh->tick, SCHED_TICK_MS, tick);
}

static void sched_config_of(const struct shard *sh, struct sched_config *sc)
{
	const struct config *cfg = sh->cfg;
	memset(sc, 0, sizeof(*sc));
	sc->verp_domain = cfg->bounce_domain;
	sc->verp_key = spool_verp_key(sh->relay->spool);
	sc->retry.delays_ms = cfg->retry_ms;
	sc->retry.ndelays = cfg->nretry;
	sc->retry.max_age_ms = cfg->max_age_ms;
	sc->retry.jitter_pct = 10;
	sc->max_outbound = cfg->max_outbound;
	sc->hostname = cfg->hostname;
}

/* mbox_config_of - the mailbox protocols' settings from a generation. */
static void mbox_config_of(const struct config_ref *gen, struct mailbox_config *mc)
{
	const struct config *cfg = gen->cfg;
	mc->hostname = cfg->hostname;
	mc->tls = gen->tls_server;
	mc->users = gen->users;
	mc->allowed = cfg->mailbox_users;
	mc->require_tls = cfg->auth_require_tls;
	mc->idle_timeout_ms = 30 * 60 * 1000; /* RFC 3501 5.4: at least 30 minutes */
	mc->max_clients = cfg->max_clients;
	mc->limits = &cfg->limits;
}

/* mbox_changed_run - on the shard: IDLE sessions look again. */
static void mbox_changed_run(struct mq_item *item, void *ctx)
{
	struct shard *sh = RP_CONTAINER_OF(item, struct shard, mbox_item);
	(void)ctx;
	atomic_store(&sh->mbox_queued, false);
	if (sh->imap)
		imap_mailbox_changed(sh->imap);
	if (sh->pop3)
		pop3_mailbox_changed(sh->pop3);
}

void shard_mbox_changed(void *arg)
{
	struct relay *r = arg;
	/* Under the lock main takes to end the loops: no push reaches a shard
	 * that is going away. */
	pthread_mutex_lock(&r->drain_lock);
	for (unsigned i = 0; atomic_load(&r->running) && i < r->nshards; i++) {
		struct shard *sh = r->shards[i];
		if (!atomic_exchange(&sh->mbox_queued, true))
			mq_push(loop_inbox(sh->loop), &sh->mbox_item, mbox_changed_run);
	}
	pthread_mutex_unlock(&r->drain_lock);
}

/* ---- routing ----------------------------------------------------------- */

unsigned shard_owner(const struct relay *r, const char *domain)
{
	return (unsigned)(rp_hash64(domain, strlen(domain)) % r->nshards);
}

struct route_batch {
	struct mq_item item;
	struct shard *target;
	unsigned n;
	struct buf domains;      /* adds[i].domain holds an offset into this */
	struct sched_add adds[]; /* room for what the batch may get, ROUTE_BATCH at most */
};

static void route_batch_run(struct mq_item *item, void *ctx)
{
	struct route_batch *b = RP_CONTAINER_OF(item, struct route_batch, item);
	struct shard *sh = b->target;
	(void)ctx;
	const char *base = buf_cstr(&b->domains);
	uint64_t now = rp_now_ms();
	for (unsigned i = 0; i < b->n; i++) {
		struct sched_add a = b->adds[i];
		a.domain = base + (uintptr_t)a.domain;
		sched_add(sh->sched, &a, now);
	}
	shard_touch(sh);
	buf_free(&b->domains);
	free(b);
}

static void route_flush(struct route_batch **slot)
{
	struct route_batch *b = *slot;
	if (!b)
		return;
	mq_push(loop_inbox(b->target->loop), &b->item, route_batch_run);
	*slot = NULL;
}

void shard_route(struct relay *r, struct shard *sh, const struct sched_add *adds, unsigned n)
{
	struct route_batch *batches[256] = { 0 }; /* [server] shards is at most 256 */
	rp_assert(r->nshards <= RP_ARRAY_LEN(batches));
	uint64_t now = rp_now_ms();
	for (unsigned i = 0; i < n; i++) {
		unsigned owner = shard_owner(r, adds[i].domain);
		if (sh && owner == sh->index) {
			sched_add(sh->sched, &adds[i], now);
			continue;
		}
		struct route_batch *b = batches[owner];
		if (b && b->n == ROUTE_BATCH) {
			route_flush(&batches[owner]);
			b = NULL;
		}
		if (!b) {
			/* Sized for what is left: one message's recipients
			 * need a few entries, not ROUTE_BATCH of them. */
			unsigned room = RP_MIN(n - i, (unsigned)ROUTE_BATCH);
			b = xmalloc(sizeof(*b) + room * sizeof(b->adds[0]));
			b->target = r->shards[owner];
			b->n = 0;
			b->domains = (struct buf){ 0 };
			batches[owner] = b;
		}
		struct sched_add *a = &b->adds[b->n++];
		*a = adds[i];
		a->domain = (const char *)(uintptr_t)buf_used(&b->domains);
		buf_append(&b->domains, adds[i].domain, strlen(adds[i].domain) + 1);
	}
	for (unsigned i = 0; i < r->nshards; i++)
		route_flush(&batches[i]);
	if (sh)
		shard_touch(sh);
}

void shard_route_from(void *arg, const struct sched_add *adds, unsigned n)
{
	struct shard *sh = arg;
	shard_route(sh->relay, sh, adds, n);
}

/* recover_route - start-up batches, from the main thread. */
static void recover_route(void *arg, const struct sched_add *adds, unsigned n)
{
	struct relay *r = arg;
	shard_route(r, NULL, adds, n);
}

uint64_t shard_recover(struct relay *r)
{
	return submit_recover(r->spool, recover_route, r);
}

/* ---- control messages -------------------------------------------------- */

struct shard_msg {
	struct mq_item item;
	struct shard *sh;
	struct config_ref *cref;
};

/* shard_send - run fn on sh's loop (any thread). */
static void shard_send(struct shard *sh, mq_fn fn, struct config_ref *cref)
{
	struct shard_msg *m = xcalloc(1, sizeof(*m));
	m->sh = sh;
	m->cref = cref;
	mq_push(loop_inbox(sh->loop), &m->item, fn);
}

/* shard_msg_take - the shard a message is for; frees the message. */
static struct shard *shard_msg_take(struct mq_item *item, struct config_ref **cref)
{
	struct shard_msg *m = RP_CONTAINER_OF(item, struct shard_msg, item);
	struct shard *sh = m->sh;
	if (cref)
		*cref = m->cref;
	free(m);
	return sh;
}

static void open_run(struct mq_item *item, void *ctx)
{
	struct shard *sh = shard_msg_take(item, NULL);
	(void)ctx;
	if (!sh->stopping)
		for (unsigned i = 0; i < sh->nlisteners; i++)
			if (!sh->listeners[i].armed && sh->listeners[i].fd >= 0)
				listener_arm(&sh->listeners[i]);
	struct relay *r = sh->relay; /* counted even when stopping: main never waits forever */
	pthread_mutex_lock(&r->drain_lock);
	r->opened++;
	pthread_cond_broadcast(&r->drain_cond);
	pthread_mutex_unlock(&r->drain_lock);
}

void shard_open(struct shard *sh)
{
	shard_send(sh, open_run, NULL);
}

void shard_wait_opened(struct relay *r)
{
	pthread_mutex_lock(&r->drain_lock);
	while (r->opened < r->nshards)
		pthread_cond_wait(&r->drain_cond, &r->drain_lock);
	pthread_mutex_unlock(&r->drain_lock);
}

static void stop_check(struct shard *sh);

static void drain_poll(struct loop_timer *t)
{
	stop_check(RP_CONTAINER_OF(t, struct shard, drain_poll));
}

/* stop_check - tell main once a stopping shard has no session left. */
static void stop_check(struct shard *sh)
{
	if (sh->stopping && !sh->drained && cluster_busy(sh->cluster)) {
		/* The Redis connection reports no release: look again soon. */
		loop_timer_arm(sh->loop, &sh->drain_poll, 20, drain_poll);
		return;
	}
	if (!sh->stopping || sh->drained || smtpd_sessions(sh->smtpd) ||
	    smtpd_sessions(sh->inbound) || delivery_sessions(sh->delivery) ||
	    api_sessions(sh->api) || imap_sessions(sh->imap) || pop3_sessions(sh->pop3) ||
	    webhook_busy(sh->webhook))
		return;
	sh->drained = true;
	loop_timer_disarm(sh->loop, &sh->stop_timer);
	sched_run(sh->sched); /* hand the last state changes to the writer */
	struct relay *r = sh->relay;
	pthread_mutex_lock(&r->drain_lock);
	r->drained++;
	pthread_cond_broadcast(&r->drain_cond);
	pthread_mutex_unlock(&r->drain_lock);
}

void shard_wait_drained(struct relay *r)
{
	pthread_mutex_lock(&r->drain_lock);
	while (r->drained < r->nshards)
		pthread_cond_wait(&r->drain_cond, &r->drain_lock);
	pthread_mutex_unlock(&r->drain_lock);
}

static void exit_run(struct mq_item *item, void *ctx)
{
	struct shard *sh = shard_msg_take(item, NULL);
	(void)ctx;
	loop_timer_disarm(sh->loop, &sh->tick);
	loop_timer_disarm(sh->loop, &sh->stop_timer);
	loop_timer_disarm(sh->loop, &sh->drain_poll);
	loop_stop(sh->loop);
}

void shard_exit(struct shard *sh)
{
	shard_send(sh, exit_run, NULL);
}

/* The delivery's callbacks (void * for struct shard). */
static void shard_touch_cb(void *arg)
{
	shard_touch(arg);
}

static void shard_session_gone_cb(void *arg)
{
	stop_check(arg);
}

static void api_session_gone(void *ctx)
{
	stop_check(ctx);
}

static void stop_deadline(struct loop_timer *t);

static void stop_run(struct mq_item *item, void *ctx)
{
	struct shard *sh = shard_msg_take(item, NULL);
	(void)ctx;
	if (sh->stopping)
		return;
	sh->stopping = true;
	log_info("stopping (%u inbound, %u outbound sessions)", smtpd_sessions(sh->smtpd),
	         delivery_sessions(sh->delivery));
	listeners_close(sh);
	smtpd_shutdown_all(sh->smtpd);
	smtpd_shutdown_all(sh->inbound);
	api_shutdown_all(sh->api);
	imap_shutdown_all(sh->imap);
	pop3_shutdown_all(sh->pop3);
	delivery_stop(sh->delivery);
	webhook_stop(sh->webhook); /* what it has not posted stays in the spool */
	cluster_stop(sh->cluster); /* its leases expire if they were not given back */
	sched_run(sh->sched);      /* flush state updates */
	loop_timer_arm(sh->loop, &sh->stop_timer, STOP_GRACE_MS, stop_deadline);
	stop_check(sh);
}

static void stop_deadline(struct loop_timer *t)
{
	struct shard *sh = RP_CONTAINER_OF(t, struct shard, stop_timer);
	log_warn("abandoning %u outbound sessions at the stop deadline",
	         delivery_sessions(sh->delivery));
	delivery_abort(sh->delivery);
}

void shard_stop(struct shard *sh)
{
	shard_send(sh, stop_run, NULL);
}

/* webhook_params_of - the poster's settings from the shard's config. */
static void webhook_params_of(struct shard *sh, struct webhook_params *p)
{
	*p = (struct webhook_params){ .loop = sh->loop,
		                      .spool = sh->relay->spool,
		                      .reader = sh->reader,
		                      .dns = sh->dns,
		                      .tls_client = sh->cref->tls_client,
		                      .url = sh->cfg->webhook_url,
		                      .secret = sh->cfg->webhook_secret,
		                      .batch = sh->cfg->webhook_batch,
		                      .released = shard_session_gone_cb,
		                      .arg = sh };
}

/* webhook_reconfigure - shard 0: start, change or stop the poster, and
 * tell the spool which events to record. */
static void webhook_reconfigure(struct shard *sh)
{
	if (sh->index != 0 || sh->stopping)
		return;
	const struct config *c = sh->cfg;
	spool_set_events(sh->relay->spool, c->webhook_url[0] ? c->webhook_event_mask : 0,
	                 c->webhook_max_backlog);
	struct webhook_params p;
	webhook_params_of(sh, &p);
	if (!c->webhook_url[0] && sh->webhook) {
		webhook_stop(sh->webhook); /* freed with the shard */
	} else if (c->webhook_url[0] && sh->webhook) {
		webhook_set_config(sh->webhook, &p);
	} else if (c->webhook_url[0]) {
		sh->webhook = webhook_new(&p);
	}
}

static void reconfigure_run(struct mq_item *item, void *ctx)
{
	struct config_ref *cref;
	struct shard *sh = shard_msg_take(item, &cref);
	(void)ctx;
	struct config_ref *old = sh->cref;
	sh->cref = cref;
	sh->cfg = cref->cfg;
	struct sched_config sc;
	sched_config_of(sh, &sc);
	sched_set_config(sh->sched, &sc);
	delivery_set_config(sh->delivery, sh->cfg, sh->cref->tls_client);
	smtpd_set_config(sh->smtpd, sh->cref);
	smtpd_set_config(sh->inbound, sh->cref);
	sched_reconfigure(sh->sched);
	shard_api_config(sh->cref, &sh->api_cfg);
	sh->api_cfg.signers = sh->relay->signers;
	api_server_set_config(sh->api, &sh->api_cfg);
	mbox_config_of(sh->cref, &sh->mbox_cfg);
	imap_server_set_config(sh->imap, &sh->mbox_cfg);
	pop3_server_set_config(sh->pop3, &sh->mbox_cfg);
	webhook_reconfigure(sh);
	shard_touch(sh);
	config_ref_put(old);
}

void shard_reconfigure(struct shard *sh, struct config_ref *cref)
{
	config_ref_get(cref);
	shard_send(sh, reconfigure_run, cref);
}

/* ---- [cluster] ---------------------------------------------------------- */

/* cluster_node_name - [cluster] node, or the host name. */
static const char *cluster_node_name(const struct config *cfg)
{
	return cfg->cluster_node[0] ? cfg->cluster_node : cfg->hostname;
}

static void cluster_changed(void *arg, bool mode)
{
	struct shard *sh = arg;
	if (sh->delivery)
		delivery_cluster_changed(sh->delivery, mode);
}

static void cluster_give_tokens(void *arg, struct sched_dest *d, double n)
{
	struct shard *sh = arg;
	sched_tokens_add(sh->sched, d, n);
	shard_touch(sh);
}

/* cluster_node_json - this shard's numbers for the node's heartbeat
 * (`ringpost stats --cluster` adds the shards up). */
static void cluster_node_json(void *arg, struct buf *out)
{
	struct shard *sh = arg;
	struct stats_snapshot part = { 0 };
	if (sh->sched)
		sched_stats(sh->sched, &part);
	const struct stats_counts *n = &part.total;
	buf_printf(out,
	           "{\"queued\":%llu,\"deferred\":%llu,\"in_flight\":%llu,\"delivered\":%llu,"
	           "\"bounced\":%llu,\"connections\":%llu,\"time\":%llu}",
	           (unsigned long long)n->queued, (unsigned long long)n->deferred,
	           (unsigned long long)n->in_flight, (unsigned long long)n->delivered,
	           (unsigned long long)n->bounced, (unsigned long long)n->connections,
	           (unsigned long long)rp_now_ms());
	stats_free(&part);
}

/* ---- the thread -------------------------------------------------------- */

/* services_new - what the shard runs, wired together: the spool reader,
 * DNS, delivery and its scheduler, the SMTP server, the HTTP API, IMAP and
 * POP3 (the shard's thread, its loop made). */
static void services_new(struct shard *sh)
{
	sh->reader = spool_reader_new(sh->relay->spool);
	struct dns_config dc = {
		.servers = sh->cfg->dns_servers,
		.max_ttl_ms = sh->cfg->dns_max_ttl_ms,
		.negative_ttl_ms = sh->cfg->dns_negative_ttl_ms,
		.cache_size = sh->cfg->dns_cache_size,
		.timeout_ms = (unsigned)sh->cfg->dns_timeout_ms,
		.tries = sh->cfg->dns_tries,
	};
	char err[300];
	sh->dns = dns_new(sh->loop, &dc, err, sizeof(err));
	if (!sh->dns)
		log_error("DNS resolver unavailable (mail without a static route waits): %s", err);
	struct cluster_params cp = { .loop = sh->loop,
		                     .dns = sh->dns,
		                     .redis = sh->cfg->cluster_redis,
		                     .node = cluster_node_name(sh->cfg),
		                     .shard = sh->index,
		                     .lease_ms = sh->cfg->cluster_lease_ms,
		                     .changed = cluster_changed,
		                     .give_tokens = cluster_give_tokens,
		                     .node_json = cluster_node_json,
		                     .arg = sh };
	sh->cluster = cluster_new(&cp);
	struct delivery_params dp = {
		.loop = sh->loop,
		.dns = sh->dns,
		.cluster = sh->cluster,
		.spool = sh->relay->spool,
		.cfg = sh->cfg,
		.tls_client = sh->cref->tls_client,
		.ours = sh->relay->ours,
		.nours = sh->relay->nours,
		.touch = shard_touch_cb,
		.session_gone = shard_session_gone_cb,
		.arg = sh,
	};
	sh->delivery = delivery_new(&dp);
	struct sched_config sc;
	sched_config_of(sh, &sc);
	sh->sched = sched_new(&sc, &delivery_sched_ops, sh->delivery, sh->relay->spool, sh->reader);
	delivery_attach(sh->delivery, sh->sched);
	struct smtpd_params sp = {
		.loop = sh->loop,
		.spool = sh->relay->spool,
		.gen = sh->cref,
		.checker = sh->relay->checker,
		.limiter = sh->relay->limiter,
		.climit = sh->relay->climit,
		.signers = sh->relay->signers,
		.route = shard_route_from,
		.route_ctx = sh,
		.session_gone = shard_session_gone_cb,
		.arg = sh,
	};
	sh->smtpd = smtpd_new(&sp);
	sp.inbound = true;
	sp.reader = sh->reader;
	sp.refused = sh->relay->inbound_refused;
	sp.flood = sh->relay->inbound_flood;
	sh->inbound = smtpd_new(&sp);
	shard_api_config(sh->cref, &sh->api_cfg);
	sh->api_cfg.signers = sh->relay->signers;
	sh->api = api_server_new(sh->loop, sh->relay->spool, sh->reader, &sh->api_cfg,
	                         &shard_api_ops, sh);
	api_set_session_gone(sh->api, api_session_gone);
	api_set_climit(sh->api, sh->relay->climit);
	mbox_config_of(sh->cref, &sh->mbox_cfg);
	struct mailbox_params mp = { .loop = sh->loop,
		                     .spool = sh->relay->spool,
		                     .reader = sh->reader,
		                     .checker = sh->relay->checker,
		                     .limiter = sh->relay->limiter,
		                     .climit = sh->relay->climit,
		                     .cfg = &sh->mbox_cfg,
		                     .session_gone = shard_session_gone_cb,
		                     .arg = sh };
	sh->imap = imap_server_new(&mp);
	sh->pop3 = pop3_server_new(&mp);
	if (sh->index == 0) {
		struct webhook_params wp;
		webhook_params_of(sh, &wp);
		sh->webhook = webhook_new(&wp);
	}
}

/* services_free - the same, once nothing is in flight. */
static void services_free(struct shard *sh)
{
	sched_run(sh->sched);
	webhook_free(sh->webhook);
	sh->webhook = NULL;
	cluster_free(sh->cluster);
	sh->cluster = NULL;
	dns_free(sh->dns); /* pending lookups are dropped, not answered */
	sh->dns = NULL;
	delivery_free(sh->delivery);
	sh->delivery = NULL;
	smtpd_free(sh->smtpd);
	sh->smtpd = NULL;
	smtpd_free(sh->inbound);
	sh->inbound = NULL;
	api_server_free(sh->api);
	imap_server_free(sh->imap);
	sh->imap = NULL;
	pop3_server_free(sh->pop3);
	sh->pop3 = NULL;
	sh->api = NULL;
	sched_free(sh->sched);
	sh->sched = NULL;
	spool_reader_free(sh->reader);
	sh->reader = NULL;
}

static void *shard_main(void *arg)
{
	struct shard *sh = arg;
	char name[16];
	snprintf(name, sizeof(name), "shard%u", sh->index);
	log_set_thread(name);
	/* The loop was made disabled by shard_new; this thread becomes its
	 * ring's single issuer. */
	bool enabled = loop_enable(sh->loop);
	pthread_mutex_lock(&sh->start_lock);
	if (!enabled)
		sh->start_error = errno ? errno : EINVAL;
	sh->started = true;
	pthread_cond_signal(&sh->start_cond);
	pthread_mutex_unlock(&sh->start_lock);
	if (!enabled)
		return NULL;

	services_new(sh);

	sh->nlisteners = 0;
	sh->listeners = xcalloc(LISTEN_KINDS, sizeof(*sh->listeners));
	for (unsigned k = 0; k < LISTEN_KINDS; k++) {
		int fd = sh->relay->listen_fds[k][sh->index];
		if (fd < 0)
			continue;
		struct shard_listener *li = &sh->listeners[sh->nlisteners++];
		li->shard = sh;
		li->kind = (enum listener_kind)k;
		li->fd = fd;
		loop_io_register(sh->loop, &li->io, listener_cqe);
	}
	loop_timer_arm(sh->loop, &sh->tick, SCHED_TICK_MS, tick);
	log_debug("shard %u: running (ring flags 0x%x)", sh->index, loop_setup_flags(sh->loop));

	loop_run(sh->loop);
	/* Anything pushed after the exit message still runs with the
	 * scheduler alive (nothing should be; this is the safety net). */
	mq_run(loop_inbox(sh->loop), sh->loop);

	/* Everything has drained: no session, no request in flight. */
	for (unsigned i = 0; i < sh->nlisteners; i++)
		if (sh->listeners[i].fd >= 0) {
			if (sh->listeners[i].io.slot && !sh->listeners[i].io.inflight)
				loop_io_release(sh->loop, &sh->listeners[i].io);
			close(sh->listeners[i].fd);
			sh->listeners[i].fd = -1;
		}
	services_free(sh);
	log_flush();
	return NULL;
}

struct shard *shard_new(struct relay *r, unsigned index, struct config_ref *cref)
{
	struct loop_config lc = { .sq_entries = 4096,
		                  .cq_entries = 65536,
		                  .buf_count = 1024,
		                  .buf_size = 16384,
		                  .disabled = true };
	struct loop *l = loop_new(&lc);
	if (!l)
		return NULL;
	struct shard *sh = xcalloc(1, sizeof(*sh));
	sh->loop = l;
	sh->relay = r;
	sh->index = index;
	if (!r->climit) /* the shards' shared table: made with the first, freed with the last */
		r->climit = climit_new();
	sh->cref = cref;
	config_ref_get(cref);
	sh->cfg = cref->cfg;
	pthread_mutex_init(&sh->start_lock, NULL);
	pthread_cond_init(&sh->start_cond, NULL);
	return sh;
}

bool shard_start(struct shard *sh)
{
	int rc = pthread_create(&sh->thread, NULL, shard_main, sh);
	if (rc) {
		errno = rc;
		return false;
	}
	pthread_mutex_lock(&sh->start_lock);
	while (!sh->started)
		pthread_cond_wait(&sh->start_cond, &sh->start_lock);
	pthread_mutex_unlock(&sh->start_lock);
	if (sh->start_error) {
		pthread_join(sh->thread, NULL);
		errno = sh->start_error;
		return false;
	}
	return true;
}

void shard_join(struct shard *sh)
{
	pthread_join(sh->thread, NULL);
	loop_free(sh->loop);
	if (sh->index + 1 == sh->relay->nshards) { /* the last: every session is gone */
		climit_free(sh->relay->climit);
		sh->relay->climit = NULL;
	}
	free(sh->listeners);
	config_ref_put(sh->cref);
	pthread_mutex_destroy(&sh->start_lock);
	pthread_cond_destroy(&sh->start_cond);
	free(sh);
}
