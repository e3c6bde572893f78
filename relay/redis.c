/* redis.c - the Redis client (see redis.h).
 *
 * States: DOWN (no connection; the timer is the back-off before the next
 * attempt), RESOLVING (the host name), CONNECTING, UP (commands go out;
 * the timer is the deadline of the oldest command's reply) and STOPPED.
 * One timer serves all of them, by state.
 *
 * A connection lives in its own object with its own reply reader: one that
 * closes is released by the loop after its last completion, while the
 * client may already be on the next one.
 *
 * Two rings of small records hold the callbacks: `pending`, the commands
 * sent and awaiting replies in order (bounded by REDIS_PENDING_MAX), and
 * `failing`, commands refused without a reply whose callbacks run at the
 * end of the batch (never inside redis_command). Each entry point (a
 * completion, the timer, the resolver, the deferred call, redis_stop)
 * counts itself in `depth`: a redis_free asked for from a callback below
 * one of them takes effect when the outermost returns.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "redis.h"
#include "base/conn.h"
#include "base/log.h"
#include "base/util.h"

enum redis_state { R_DOWN, R_RESOLVING, R_CONNECTING, R_UP, R_STOPPED };

static const char *const state_names[] = {
	[R_DOWN] = "down", [R_RESOLVING] = "resolving", [R_CONNECTING] = "connecting",
	[R_UP] = "up",     [R_STOPPED] = "stopped",
};

/* One command's callback. */
struct redis_pend {
	redis_cb cb;
	void *arg;
	uint64_t sent_ms; /* pending: when written (loop time) */
	const char *err;  /* failing: why (a constant string) */
};

/* A FIFO of records that grows by doubling (cap a power of two). */
struct redis_ring {
	struct redis_pend *v;
	uint32_t cap, head, n;
};

struct redis_conn {
	struct conn conn;
	struct redis *r;
	redisReader *reader; /* this connection's replies */
};

struct redis {
	struct loop *loop;
	struct dns_resolver *dns;
	char *host;
	uint16_t port;
	uint64_t timeout_ms;
	void (*state_cb)(void *arg, bool up, const char *err);
	void *arg;

	enum redis_state state;
	struct redis_conn *cur; /* the connection in use (NULL when DOWN) */
	unsigned nconns;        /* not yet released */
	struct loop_timer timer;
	struct loop_defer start;   /* redis_new's first attempt */
	struct loop_defer defer;   /* delivers `failing` */
	bool in_failing;           /* failing_run is delivering */
	bool reported_down;        /* the down state was reported (not again per retry) */
	bool ever_up;              /* for the reconnects count */
	unsigned depth;            /* entry points on the stack */
	bool free_asked;           /* redis_free from below an entry point */
	uint64_t backoff_ms;       /* the last wait (0 after a success) */
	struct redis_ring pending; /* sent, replies awaited, in order */
	struct redis_ring failing; /* refused, callbacks at the end of the batch */
	struct sockaddr_storage addr;
	socklen_t addrlen;
	struct redis_stats st;
};

static void timer_fired(struct loop_timer *t);
static void resolved(void *arg, struct dns_result *res);
static void really_free(struct redis *r);

/* ---- the rings --------------------------------------------------------- */

static void ring_push(struct redis_ring *q, redis_cb cb, void *arg, uint64_t sent_ms,
                      const char *err)
{
	if (q->n == q->cap) {
		uint32_t cap = q->cap ? q->cap * 2 : 64;
		struct redis_pend *v = xcalloc(cap, sizeof(*v));
		for (uint32_t i = 0; i < q->n; i++)
			v[i] = q->v[(q->head + i) & (q->cap - 1)];
		free(q->v);
		q->v = v;
		q->cap = cap;
		q->head = 0;
	}
	q->v[(q->head + q->n) & (q->cap - 1)] =
	    (struct redis_pend){ .cb = cb, .arg = arg, .sent_ms = sent_ms, .err = err };
	q->n++;
}

static struct redis_pend ring_pop(struct redis_ring *q)
{
	rp_assert(q->n);
	struct redis_pend p = q->v[q->head];
	q->head = (q->head + 1) & (q->cap - 1);
	q->n--;
	return p;
}

/* ---- entry points and callbacks ---------------------------------------- */

static void enter(struct redis *r)
{
	r->depth++;
}

/* leave - the end of an entry point: r may be gone afterwards. */
static void leave(struct redis *r)
{
	if (!--r->depth && r->free_asked)
		really_free(r);
}

static void note_error(struct redis *r, const char *what, size_t n)
{
	r->st.errors++;
	snprintf(r->st.last_error, sizeof(r->st.last_error), "%.*s", (int)n, what);
}

/* fail_ring - every record of q gets err (or its own when err is NULL).
 * Callbacks cannot add to `pending` while it is failed (not UP then). */
static void fail_ring(struct redis *r, struct redis_ring *q, const char *err)
{
	while (q->n) {
		struct redis_pend p = ring_pop(q);
		const char *e = err ? err : p.err;
		note_error(r, e, strlen(e));
		p.cb(p.arg, NULL, e);
	}
}

/* failing_run - the deferred failures of this batch; those that their
 * callbacks cause wait for the next iteration (a callback that retries at
 * once would otherwise keep this pass going forever). */
static void failing_run(struct loop_defer *d)
{
	struct redis *r = RP_CONTAINER_OF(d, struct redis, defer);
	enter(r);
	r->in_failing = true;
	for (uint32_t n = r->failing.n; n && r->failing.n; n--) {
		struct redis_pend p = ring_pop(&r->failing);
		note_error(r, p.err, strlen(p.err));
		p.cb(p.arg, NULL, p.err);
	}
	r->in_failing = false;
	if (r->failing.n)
		loop_defer_next(r->loop, &r->defer, failing_run);
	leave(r);
}

/* refuse - cb fails with err at the end of the batch. */
static void refuse(struct redis *r, redis_cb cb, void *arg, const char *err)
{
	ring_push(&r->failing, cb, arg, 0, err);
	if (r->in_failing)
		loop_defer_next(r->loop, &r->defer, failing_run);
	else
		loop_defer(r->loop, &r->defer, failing_run);
}

/* ---- states ------------------------------------------------------------ */

static void set_state(struct redis *r, enum redis_state s)
{
	log_debug("redis: %s -> %s", state_names[r->state], state_names[s]);
	r->state = s;
}

uint64_t redis_backoff_next(uint64_t cur_ms)
{
	if (!cur_ms)
		return REDIS_BACKOFF_MIN_MS;
	return RP_MIN(cur_ms * 2, (uint64_t)REDIS_BACKOFF_MAX_MS);
}

static void drop_conn(struct redis *r)
{
	if (r->cur) {
		conn_close(&r->cur->conn);
		r->cur = NULL;
	}
}

/* lose - the connection (or the attempt) failed: close it, report once,
 * fail what waits for a reply (with cb_err, or "connection lost: why"),
 * and try again after the back-off. */
RP_PRINTF(3, 4) static void lose(struct redis *r, const char *cb_err, const char *fmt, ...)
{
	char why[128], lost[160], e[LOG_VALUE_MAX];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	if (r->state == R_RESOLVING && r->dns)
		dns_forget_waiter(r->dns, resolved, r);
	bool report = r->state == R_UP || !r->reported_down;
	drop_conn(r);
	set_state(r, R_DOWN);
	r->backoff_ms = redis_backoff_next(r->backoff_ms);
	loop_timer_arm(r->loop, &r->timer, r->backoff_ms, timer_fired);
	snprintf(r->st.last_error, sizeof(r->st.last_error), "%s", why);
	log_value(e, sizeof(e), why, strlen(why));
	if (report) {
		r->reported_down = true;
		log_warn("redis: down server=%s:%u error=%s retry_in=%llums", r->host, r->port, e,
		         (unsigned long long)r->backoff_ms);
		if (r->state_cb)
			r->state_cb(r->arg, false, why);
	} else {
		log_debug("redis: still down server=%s:%u error=%s retry_in=%llums", r->host,
		          r->port, e, (unsigned long long)r->backoff_ms);
	}
	snprintf(lost, sizeof(lost), "connection lost: %s", why);
	fail_ring(r, &r->pending, cb_err ? cb_err : lost);
}

/* arm_deadline - the timer for the oldest reply awaited (UP only). */
static void arm_deadline(struct redis *r)
{
	if (!r->pending.n) {
		loop_timer_disarm(r->loop, &r->timer);
		return;
	}
	uint64_t due = r->pending.v[r->pending.head].sent_ms + r->timeout_ms;
	uint64_t now = loop_now_ms(r->loop);
	loop_timer_arm(r->loop, &r->timer, due > now ? due - now : 0, timer_fired);
}

/* ---- the connection ---------------------------------------------------- */

static void on_connected(struct conn *c, int err)
{
	struct redis_conn *rc = c->owner;
	struct redis *r = rc->r;
	if (rc != r->cur)
		return;
	enter(r);
	if (err) {
		lose(r, NULL, "connect to %s:%u: %s", r->host, r->port, strerror(-err));
	} else {
		loop_timer_disarm(r->loop, &r->timer);
		set_state(r, R_UP);
		r->backoff_ms = 0;
		r->reported_down = false;
		if (r->ever_up)
			r->st.reconnects++;
		r->ever_up = true;
		log_info("redis: up server=%s:%u", r->host, r->port);
		if (r->state_cb)
			r->state_cb(r->arg, true, NULL);
	}
	leave(r);
}

/* replies - hand each complete reply in the reader to the oldest command;
 * stops when a callback stopped the client. */
static void replies(struct redis *r, struct redis_conn *rc)
{
	while (rc == r->cur) {
		void *obj = NULL;
		if (redisReaderGetReply(rc->reader, &obj) != REDIS_OK) {
			lose(r, NULL, "protocol error: %s", rc->reader->errstr);
			return;
		}
		if (!obj)
			break;
		if (!r->pending.n) {
			freeReplyObject(obj);
			lose(r, NULL, "a reply to no command");
			return;
		}
		const redisReply *reply = obj;
		struct redis_pend p = ring_pop(&r->pending);
		if (reply->type == REDIS_REPLY_ERROR)
			note_error(r, reply->str, reply->len);
		p.cb(p.arg, reply, NULL);
		freeReplyObject(obj);
	}
	if (rc == r->cur)
		arm_deadline(r);
}

static void on_data(struct conn *c)
{
	struct redis_conn *rc = c->owner;
	struct redis *r = rc->r;
	if (rc != r->cur || r->state != R_UP) {
		buf_consume(&c->in, buf_used(&c->in)); /* nothing asked: dropped */
		return;
	}
	enter(r);
	if (redisReaderFeed(rc->reader, buf_head(&c->in), buf_used(&c->in)) != REDIS_OK)
		lose(r, NULL, "reader: %s", rc->reader->errstr);
	else
		replies(r, rc);
	buf_consume(&c->in, buf_used(&c->in));
	leave(r);
}

static void on_closed(struct conn *c, int err)
{
	struct redis_conn *rc = c->owner;
	struct redis *r = rc->r;
	if (rc != r->cur)
		return;
	enter(r);
	if (err)
		lose(r, NULL, "%s", strerror(-err));
	else
		lose(r, NULL, "closed by the server");
	leave(r);
}

static void on_released(struct conn *c)
{
	struct redis_conn *rc = c->owner;
	rc->r->nconns--;
	redisReaderFree(rc->reader);
	free(rc);
}

static const struct conn_ops redis_conn_ops = {
	.connected = on_connected,
	.data = on_data,
	.closed = on_closed,
	.released = on_released,
};

static void connect_to(struct redis *r)
{
	struct redis_conn *rc = xcalloc(1, sizeof(*rc));
	rc->r = r;
	rc->reader = redisReaderCreate();
	if (!rc->reader)
		rp_panic("out of memory");
	conn_init(&rc->conn, r->loop, &redis_conn_ops, rc);
	int rv = conn_connect(&rc->conn, (struct sockaddr *)&r->addr, r->addrlen, r->timeout_ms);
	if (rv < 0) {
		redisReaderFree(rc->reader);
		free(rc);
		lose(r, NULL, "connect to %s:%u: %s", r->host, r->port, strerror(-rv));
		return;
	}
	r->nconns++;
	r->cur = rc;
	set_state(r, R_CONNECTING);
	/* conn_connect has its own deadline; this one only guards it. */
	loop_timer_arm(r->loop, &r->timer, r->timeout_ms + 1000, timer_fired);
}

static void resolved(void *arg, struct dns_result *res)
{
	struct redis *r = arg;
	if (r->state != R_RESOLVING)
		return;
	enter(r);
	if (res->status != DNS_OK || !res->nhops) {
		lose(r, NULL, "DNS for %s: %s", r->host,
		     res->error && *res->error ? res->error : dns_status_name(res->status));
	} else {
		memcpy(&r->addr, &res->hops[0].addr, res->hops[0].len);
		r->addrlen = res->hops[0].len;
		conn_addr_set_port(&r->addr, r->port);
		connect_to(r);
	}
	leave(r);
}

/* host_address - the host as an address, when it is one. */
static bool host_address(struct redis *r)
{
	r->addrlen = conn_addr_ip(r->host, r->port, &r->addr);
	return r->addrlen > 0;
}

/* attempt - connect to the address, or resolve the name first. */
static void attempt(struct redis *r)
{
	if (host_address(r)) {
		connect_to(r);
		return;
	}
	if (!r->dns) {
		lose(r, NULL, "no resolver for %s", r->host);
		return;
	}
	set_state(r, R_RESOLVING);
	loop_timer_arm(r->loop, &r->timer, r->timeout_ms, timer_fired);
	dns_resolve_host(r->dns, r->host, resolved, r); /* may answer at once */
}

static void timer_fired(struct loop_timer *t)
{
	struct redis *r = RP_CONTAINER_OF(t, struct redis, timer);
	enter(r);
	switch (r->state) {
	case R_DOWN:
		attempt(r);
		break;
	case R_RESOLVING:
		lose(r, NULL, "DNS for %s: timeout", r->host);
		break;
	case R_CONNECTING:
		lose(r, NULL, "connect to %s:%u: timeout", r->host, r->port);
		break;
	case R_UP:
		if (r->pending.n &&
		    r->pending.v[r->pending.head].sent_ms + r->timeout_ms <= loop_now_ms(r->loop))
			lose(r, "timeout", "no reply within %llu ms",
			     (unsigned long long)r->timeout_ms);
		else
			arm_deadline(r);
		break;
	case R_STOPPED:
		rp_panic("timer fired after redis_stop");
	}
	leave(r);
}

static void start_run(struct loop_defer *d)
{
	struct redis *r = RP_CONTAINER_OF(d, struct redis, start);
	enter(r);
	if (r->state == R_DOWN && !loop_timer_armed(&r->timer))
		attempt(r);
	leave(r);
}

/* ---- commands ---------------------------------------------------------- */

/* admit - may a command go now? Refuses it (deferred) when not. */
static bool admit(struct redis *r, redis_cb cb, void *arg)
{
	if (r->state == R_UP && r->pending.n < REDIS_PENDING_MAX)
		return true;
	refuse(r, cb, arg,
	       r->state == R_STOPPED ? "stopped"
	       : r->state == R_UP    ? "too many pending"
	                             : "not connected");
	return false;
}

/* sent - the command is in the connection's output: await its reply. */
static void sent(struct redis *r, redis_cb cb, void *arg)
{
	r->st.commands++;
	ring_push(&r->pending, cb, arg, loop_now_ms(r->loop), NULL);
	conn_flush_soon(&r->cur->conn);
	if (!loop_timer_armed(&r->timer))
		loop_timer_arm(r->loop, &r->timer, r->timeout_ms, timer_fired);
}

void redis_command(struct redis *r, redis_cb cb, void *arg, int argc, const char **argv,
                   const size_t *argvlen)
{
	if (argc < 1) {
		refuse(r, cb, arg, "bad command");
		return;
	}
	if (!admit(r, cb, arg))
		return;
	/* RESP (an array of bulk strings) written straight into the output:
	 * no allocation per command. */
	struct buf *out = conn_outbuf(&r->cur->conn);
	buf_printf(out, "*%d\r\n", argc);
	for (int i = 0; i < argc; i++) {
		size_t n = argvlen ? argvlen[i] : strlen(argv[i]);
		buf_printf(out, "$%zu\r\n", n);
		buf_append(out, argv[i], n);
		buf_append(out, "\r\n", 2);
	}
	sent(r, cb, arg);
}

void redis_commandf(struct redis *r, redis_cb cb, void *arg, const char *fmt, ...)
{
	if (!admit(r, cb, arg))
		return;
	char *cmd = NULL;
	va_list ap;
	va_start(ap, fmt);
	int n = redisvFormatCommand(&cmd, fmt, ap);
	va_end(ap);
	if (n <= 0) {
		refuse(r, cb, arg, "bad command");
		return;
	}
	conn_write(&r->cur->conn, cmd, (size_t)n);
	redisFreeCommand(cmd);
	sent(r, cb, arg);
}

/* ---- life -------------------------------------------------------------- */

struct redis *redis_new(const struct redis_params *p)
{
	struct redis *r = xcalloc(1, sizeof(*r));
	r->loop = p->loop;
	r->dns = p->dns;
	/* "[::1]": the brackets of a URL-style address are not the address. */
	size_t hlen = strlen(p->host);
	if (hlen >= 2 && p->host[0] == '[' && p->host[hlen - 1] == ']')
		r->host = xstrndup(p->host + 1, hlen - 2);
	else
		r->host = xstrdup(p->host);
	r->port = p->port;
	r->timeout_ms = p->timeout_ms ? p->timeout_ms : 1000;
	r->state_cb = p->state;
	r->arg = p->arg;
	r->state = R_DOWN;
	loop_defer(r->loop, &r->start, start_run);
	return r;
}

bool redis_up(const struct redis *r)
{
	return r && r->state == R_UP;
}

void redis_stop(struct redis *r)
{
	if (!r || r->state == R_STOPPED)
		return;
	enter(r);
	if (r->state == R_RESOLVING && r->dns)
		dns_forget_waiter(r->dns, resolved, r);
	loop_timer_disarm(r->loop, &r->timer);
	loop_defer_cancel(r->loop, &r->start);
	drop_conn(r);
	set_state(r, R_STOPPED);
	fail_ring(r, &r->pending, "stopped");
	/* Those refused earlier keep their reason; later ones wait for the batch. */
	for (uint32_t n = r->failing.n; n && r->failing.n; n--) {
		struct redis_pend p = ring_pop(&r->failing);
		note_error(r, p.err, strlen(p.err));
		p.cb(p.arg, NULL, p.err);
	}
	leave(r);
}

bool redis_busy(const struct redis *r)
{
	return r && r->nconns;
}

static void really_free(struct redis *r)
{
	r->depth++; /* callbacks below must not free it again */
	fail_ring(r, &r->failing, "stopped");
	loop_defer_cancel(r->loop, &r->defer);
	loop_defer_cancel(r->loop, &r->start);
	loop_timer_disarm(r->loop, &r->timer);
	free(r->pending.v);
	free(r->failing.v);
	free(r->host);
	free(r);
}

void redis_free(struct redis *r)
{
	if (!r)
		return;
	if (r->state != R_STOPPED || r->nconns)
		rp_panic("redis_free before redis_stop, or with a connection left");
	if (r->depth)
		r->free_asked = true;
	else
		really_free(r);
}

void redis_get_stats(const struct redis *r, struct redis_stats *out)
{
	if (r)
		*out = r->st;
	else
		memset(out, 0, sizeof(*out));
}
