/* cluster.c - shared per-destination limits through Redis (see cluster.h).
 *
 * Modes: SHARED while Redis answers, FALLBACK after a failure (a command
 * that fails, or the connection going down) until the next heartbeat
 * succeeds. A shard starts with no leases and opens no session until its
 * first connection attempt has ended (a restarted node's recovered queue
 * must not count as "Redis is down"); if Redis cannot be reached then,
 * it falls back to max_connections / 1 until a heartbeat has told it the
 * node count.
 *
 * The renewal tick (every lease / 3) kicks the pools with work (busy
 * sessions take their next jobs without a kick, so a pool's demand would
 * otherwise go unseen) and sends one call per pool that holds or wants
 * leases: the count is set to the most sessions the pool had or wanted
 * since the last tick, so leases that went unused for a tick go back to
 * the others.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster.h"
#include "base/log.h"
#include "base/util.h"
#include "redis.h"

#define CLUSTER_TICK_MIN_MS 200
#define TOKEN_RETRY_MIN_MS  10
#define LEASE_SHORT_MS      250 /* a pool that got less than it asked for asks again after this */

/* LEASE: KEYS[1] the pool's set; ARGV owner, want, max, lease ms. Sets the
 * owner's leases to min(want, what the others leave), renewed; returns
 * {granted, everyone's}. The owner's members are owner#0..owner#n-1, all
 * with the same expiry, so they come and go together. */
static const char lease_lua[] =
    "local t = redis.call('TIME') "
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) "
    "local k, o = KEYS[1], ARGV[1] "
    "local want, max, lease = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]) "
    "redis.call('ZREMRANGEBYSCORE', k, '-inf', now) "
    "local mine = 0 "
    "while redis.call('ZSCORE', k, o .. '#' .. mine) do mine = mine + 1 end "
    "local others = redis.call('ZCARD', k) - mine "
    "local grant = math.max(0, math.min(want, max - others)) "
    "for i = 0, grant - 1 do redis.call('ZADD', k, now + lease, o .. '#' .. i) end "
    "for i = grant, mine - 1 do redis.call('ZREM', k, o .. '#' .. i) end "
    "if grant > 0 or others > 0 then redis.call('PEXPIRE', k, lease * 2) end "
    "return {grant, others + grant}";

/* TAKE: KEYS[1] the domain's bucket; ARGV rate (per second), n. Returns
 * {tokens granted, ms until the next token when none}. */
static const char take_lua[] =
    "local t = redis.call('TIME') "
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) "
    "local rate, n = tonumber(ARGV[1]), tonumber(ARGV[2]) "
    "local cap = math.max(1, rate / 10) "
    "local b = redis.call('HMGET', KEYS[1], 'tokens', 'ts') "
    "local tokens, ts = tonumber(b[1]) or cap, tonumber(b[2]) or now "
    "if now > ts then tokens = math.min(cap, tokens + (now - ts) * rate / 1000) end "
    "local got = math.min(n, math.floor(tokens)) "
    "tokens = tokens - got "
    "redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', now) "
    "redis.call('PEXPIRE', KEYS[1], 60000) "
    "local wait = 0 "
    "if got == 0 then wait = math.ceil((1 - tokens) * 1000 / rate) end "
    "return {got, wait}";

/* BEAT: KEYS[1] rp:nodes, KEYS[2] rp:node:NODE; ARGV node, lease ms, this
 * shard's numbers, the shard. Returns the live node count. */
static const char beat_lua[] =
    "local t = redis.call('TIME') "
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) "
    "redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now) "
    "redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1]) "
    "redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]) * 4) "
    "if ARGV[3] ~= '' then redis.call('HSET', KEYS[2], ARGV[4], ARGV[3]) "
    "redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[2])) end "
    "return redis.call('ZCARD', KEYS[1])";

/* A domain waiting for tokens. */
struct token_wait {
	struct loop_timer timer; /* the bucket's refill, when it was empty */
	struct rp_list link;
	struct cluster *c;
	struct sched_dest *d;
	bool asking;
};

struct cluster {
	struct cluster_params p;
	char *node, *owner; /* "NODE", "NODE/SHARD" */
	struct redis *redis;
	bool shared;
	bool started; /* the first connection attempt has ended (up or not) */
	bool stopped;
	unsigned nodes; /* last known, >= 1 */
	struct rp_list leases;
	struct rp_list waits; /* struct token_wait */
	struct loop_timer tick;
	bool beating;
	uint64_t fallbacks;
	char last_error[160];
};

static void mode(struct cluster *c, bool shared, const char *why)
{
	if (c->shared == shared)
		return;
	c->shared = shared;
	if (shared) {
		log_info("cluster: Redis answers again: limits are shared by %u nodes", c->nodes);
	} else {
		c->fallbacks++;
		snprintf(c->last_error, sizeof(c->last_error), "%s", why ? why : "unreachable");
		char e[LOG_VALUE_MAX];
		log_warn(
		    "cluster: Redis unreachable (%s): each pool keeps within max_connections / "
		    "%u and each domain within rate / %u until it answers",
		    log_value(e, sizeof(e), c->last_error, strlen(c->last_error)), c->nodes,
		    c->nodes);
		/* Leases left in Redis expire; none are held from here on. */
		struct rp_list *pos, *tmp;
		rp_list_foreach_safe(pos, tmp, &c->leases)
		{
			struct cluster_lease *l = rp_list_entry(pos, struct cluster_lease, link);
			l->held = 0;
		}
	}
	c->p.changed(c->p.arg, true);
}

/* failed - a command's error: the mode falls back (Redis said no, or is
 * not there). */
static void failed(struct cluster *c, const redisReply *r, const char *err)
{
	if (c->stopped)
		return;
	char why[160];
	if (r && r->type == REDIS_REPLY_ERROR)
		snprintf(why, sizeof(why), "%.*s", (int)RP_MIN(r->len, (size_t)150), r->str);
	else
		snprintf(why, sizeof(why), "%s", err ? err : "unexpected reply");
	mode(c, false, why);
}

/* two_ints - a reply {a, b} of integers. */
static bool two_ints(const redisReply *r, long long *a, long long *b)
{
	if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
	    r->element[0]->type != REDIS_REPLY_INTEGER ||
	    r->element[1]->type != REDIS_REPLY_INTEGER)
		return false;
	*a = r->element[0]->integer;
	*b = r->element[1]->integer;
	return true;
}

/* ---- leases ------------------------------------------------------------ */

static void lease_ask(struct cluster *c, struct cluster_lease *l, unsigned want);

/* The answer carries its lease and cluster. */
struct lease_call {
	struct cluster *c;
	struct cluster_lease *l;
	unsigned want;
};

static void lease_done(void *arg, const redisReply *r, const char *err)
{
	struct lease_call *lc = arg;
	struct cluster *c = lc->c;
	struct cluster_lease *l = lc->l;
	unsigned want = lc->want;
	free(lc);
	l->asking = false;
	long long grant, all;
	if (err || !two_ints(r, &grant, &all)) {
		failed(c, r, err);
		return;
	}
	if (c->stopped || !c->shared)
		return;
	unsigned before = l->held;
	l->held = (unsigned)grant;
	l->everyone = (unsigned)all;
	/* Short of it: the others hold the rest. Asking again at every kick
	 * would be a call per message; the next ask waits a little (the
	 * renewal tick asks in any case). */
	l->short_ms = l->held < want ? rp_mono_ms() + LEASE_SHORT_MS : 0;
	if (l->held > before)
		c->p.changed(c->p.arg, false);
}

static void lease_ask(struct cluster *c, struct cluster_lease *l, unsigned want)
{
	if (l->asking || c->stopped)
		return;
	if (!l->linked) {
		rp_list_add_tail(&c->leases, &l->link);
		l->linked = true;
	}
	l->asking = true;
	struct lease_call *lc = xmalloc(sizeof(*lc));
	lc->c = c;
	lc->l = l;
	lc->want = want;
	redis_commandf(c->redis, lease_done, lc, "EVAL %s 1 rp:conn:%s %s %u %u %llu", lease_lua,
	               l->key, c->owner, want, l->max, (unsigned long long)c->p.lease_ms);
}

unsigned cluster_conn_limit(struct cluster *c, struct cluster_lease *l, const char *key,
                            unsigned max, unsigned open, unsigned demand)
{
	l->key = key;
	l->max = max;
	l->used = open;
	if (!c->started)
		return 0; /* a moment: Redis first (cluster_start_kick follows) */
	if (!c->shared) {
		unsigned share = max / c->nodes;
		return share ? share : 1;
	}
	unsigned want = RP_MIN(max, open + demand);
	if (want > l->peak)
		l->peak = want;
	if (want > l->held && (!l->short_ms || rp_mono_ms() >= l->short_ms))
		lease_ask(c, l, want);
	return RP_MIN(l->held, max);
}

void cluster_lease_used(struct cluster_lease *l, unsigned open)
{
	l->used = open;
}

/* ---- rates ------------------------------------------------------------- */

static void token_ask(struct token_wait *w);

static void token_timer(struct loop_timer *t)
{
	token_ask(RP_CONTAINER_OF(t, struct token_wait, timer));
}

static void token_finish(struct token_wait *w, double n)
{
	struct cluster *c = w->c;
	struct sched_dest *d = w->d;
	rp_list_del(&w->link);
	loop_timer_disarm(c->p.loop, &w->timer);
	free(w);
	c->p.give_tokens(c->p.arg, d, n);
}

static void token_done(void *arg, const redisReply *r, const char *err)
{
	struct token_wait *w = arg;
	struct cluster *c = w->c;
	w->asking = false;
	long long got, wait_ms;
	if (c->stopped) {
		free(w); /* cluster_stop took it off the list */
		return;
	}
	if (err || !two_ints(r, &got, &wait_ms)) {
		token_finish(w, 0); /* before the mode change reconfigures d */
		failed(c, r, err);
		return;
	}
	if (got > 0) {
		token_finish(w, (double)got);
		return;
	}
	loop_timer_arm(c->p.loop, &w->timer,
	               (uint64_t)RP_MAX(wait_ms, (long long)TOKEN_RETRY_MIN_MS), token_timer);
}

static void token_ask(struct token_wait *w)
{
	struct cluster *c = w->c;
	if (!c->shared) {
		token_finish(w, 0);
		return;
	}
	double rate = w->d->lim.rate;
	unsigned n = (unsigned)(rate / 20);
	w->asking = true;
	redis_commandf(c->redis, token_done, w, "EVAL %s 1 rp:rate:%s %.6f %u", take_lua,
	               w->d->name, rate, n ? n : 1);
}

void cluster_need_tokens(struct cluster *c, struct sched_dest *d)
{
	struct token_wait *w = xcalloc(1, sizeof(*w));
	w->c = c;
	w->d = d;
	rp_list_add_tail(&c->waits, &w->link);
	if (c->started)
		token_ask(w); /* else when the first connection attempt ends */
}

/* ---- heartbeat and renewal -------------------------------------------- */

static void tick(struct loop_timer *t);

static void beat_done(void *arg, const redisReply *r, const char *err)
{
	struct cluster *c = arg;
	c->beating = false;
	if (c->stopped)
		return;
	if (err || !r || r->type != REDIS_REPLY_INTEGER) {
		failed(c, r, err);
		return;
	}
	unsigned n = r->integer > 0 ? (unsigned)r->integer : 1;
	if (n != c->nodes)
		log_info("cluster: %u nodes (this one %s)", n, c->node);
	bool again = n != c->nodes && !c->shared;
	c->nodes = n;
	mode(c, true, NULL);
	if (again)
		c->p.changed(c->p.arg, true);
}

static void beat(struct cluster *c)
{
	if (c->beating)
		return;
	c->beating = true;
	struct buf json = { 0 };
	if (c->p.node_json)
		c->p.node_json(c->p.arg, &json);
	buf_append(&json, "", 1);
	redis_commandf(c->redis, beat_done, c, "EVAL %s 2 rp:nodes rp:node:%s %s %llu %s %u",
	               beat_lua, c->node, c->node, (unsigned long long)c->p.lease_ms,
	               buf_head(&json), c->p.shard);
	buf_free(&json);
}

static uint64_t tick_ms(const struct cluster *c)
{
	return RP_MAX(c->p.lease_ms / 3, (uint64_t)CLUSTER_TICK_MIN_MS);
}

static void tick(struct loop_timer *t)
{
	struct cluster *c = RP_CONTAINER_OF(t, struct cluster, tick);
	beat(c);
	if (c->shared) {
		/* Pools whose sessions take job after job are not kicked and so
		 * say nothing of their demand: kick them, and those that could
		 * use more sessions ask (now, or at the next renewal). */
		c->p.changed(c->p.arg, false);
		struct rp_list *pos, *tmp;
		rp_list_foreach_safe(pos, tmp, &c->leases)
		{
			struct cluster_lease *l = rp_list_entry(pos, struct cluster_lease, link);
			unsigned want = RP_MAX(l->used, l->peak);
			l->peak = l->used;
			if (!want && !l->held) {
				rp_list_del(&l->link);
				l->linked = false;
				continue;
			}
			lease_ask(c, l, want);
		}
	}
	loop_timer_arm(c->p.loop, &c->tick, tick_ms(c), tick);
}

static void redis_state(void *arg, bool up, const char *err)
{
	struct cluster *c = arg;
	if (!c->started) {
		/* Until now nothing was sent: a node must not fall back to
		 * max_connections / 1 only because its connection was not up
		 * yet when its recovered queue was first kicked. */
		c->started = true;
		if (!up)
			mode(c, false, err);
		struct rp_list *pos, *tmp;
		rp_list_foreach_safe(pos, tmp, &c->waits)
		{
			struct token_wait *w = rp_list_entry(pos, struct token_wait, link);
			if (!w->asking)
				token_ask(w);
		}
		c->p.changed(c->p.arg, true);
	}
	if (up)
		beat(c); /* shared again once it answers */
	else
		mode(c, false, err);
}

/* ---- life -------------------------------------------------------------- */

struct cluster *cluster_new(const struct cluster_params *p)
{
	if (!p->redis || !p->redis[0])
		return NULL;
	struct cluster *c = xcalloc(1, sizeof(*c));
	c->p = *p;
	c->node = xstrdup(p->node);
	struct buf o = { 0 };
	buf_printf(&o, "%s/%u", p->node, p->shard);
	c->owner = buf_cstr(&o);
	c->nodes = 1;
	c->shared = true;
	rp_list_init(&c->leases);
	rp_list_init(&c->waits);
	/* host:port, checked by the config ([v6]:port for IPv6). */
	char host[256];
	uint16_t port = 6379;
	const char *h = p->redis, *colon = strrchr(h, ':');
	size_t hl = colon ? (size_t)(colon - h) : strlen(h);
	if (colon)
		port = (uint16_t)strtoul(colon + 1, NULL, 10);
	if (hl >= 2 && h[0] == '[' && h[hl - 1] == ']') {
		h++;
		hl -= 2;
	}
	snprintf(host, sizeof(host), "%.*s", (int)RP_MIN(hl, sizeof(host) - 1), h);
	struct redis_params rp = { .loop = p->loop,
		                   .dns = p->dns,
		                   .host = host,
		                   .port = port,
		                   .timeout_ms = RP_MAX(p->lease_ms / 3, (uint64_t)1000),
		                   .state = redis_state,
		                   .arg = c };
	c->redis = redis_new(&rp);
	loop_timer_arm(p->loop, &c->tick, tick_ms(c), tick);
	return c;
}

void cluster_stop(struct cluster *c)
{
	if (!c || c->stopped)
		return;
	/* Give the leases back at once (not waiting for them to expire). */
	struct rp_list *pos, *tmp;
	rp_list_foreach_safe(pos, tmp, &c->leases)
	{
		struct cluster_lease *l = rp_list_entry(pos, struct cluster_lease, link);
		if (l->held && redis_up(c->redis) && !l->asking) {
			l->asking = true;
			struct lease_call *lc = xmalloc(sizeof(*lc));
			lc->c = c;
			lc->l = l;
			lc->want = 0;
			redis_commandf(c->redis, lease_done, lc,
			               "EVAL %s 1 rp:conn:%s %s 0 %u %llu", lease_lua, l->key,
			               c->owner, l->max, (unsigned long long)c->p.lease_ms);
		}
	}
	c->stopped = true;
	loop_timer_disarm(c->p.loop, &c->tick);
	while (!rp_list_empty(&c->waits)) {
		struct token_wait *w =
		    rp_list_entry(rp_list_first(&c->waits), struct token_wait, link);
		rp_list_del(&w->link);
		loop_timer_disarm(c->p.loop, &w->timer);
		if (!w->asking)
			free(w); /* else freed by its answer ("stopped", below) */
	}
	redis_stop(c->redis);
}

bool cluster_busy(const struct cluster *c)
{
	return c && redis_busy(c->redis);
}

void cluster_free(struct cluster *c)
{
	if (!c)
		return;
	redis_free(c->redis);
	free(c->node);
	free(c->owner);
	free(c);
}

bool cluster_shared(const struct cluster *c)
{
	return c && c->shared;
}

unsigned cluster_nodes(const struct cluster *c)
{
	return c ? c->nodes : 1;
}

void cluster_fill_stats(const struct cluster *c, struct stats_cluster *out)
{
	if (!c)
		return;
	out->enabled = true;
	out->shared = c->shared;
	out->nodes = c->nodes;
	out->fallbacks += c->fallbacks;
	snprintf(out->node, sizeof(out->node), "%s", c->node);
	if (c->last_error[0])
		snprintf(out->last_error, sizeof(out->last_error), "%s", c->last_error);
	struct redis_stats rs;
	redis_get_stats(c->redis, &rs);
	out->commands += rs.commands;
	out->errors += rs.errors;
}
