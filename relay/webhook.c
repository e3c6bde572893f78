/* webhook.c - the webhook poster (see webhook.h).
 *
 * States: IDLE (waiting for events, or backing off: the timer says when to
 * look again), RESOLVING (the URL's host name), CONNECTING (TCP, then TLS)
 * and WAITING (a request sent, its answer not complete). The same timer is
 * the poll, the back-off and the request's deadline, by state.
 *
 * A connection lives in its own object: one that closes is released by the
 * loop after its last completion, while the poster may already be on the
 * next one. A request that fails on a kept-alive connection before any
 * byte of an answer (the server closed it while idle: the usual race) is
 * tried once more at once on a new connection, not after a back-off.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <http_parser.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "webhook.h"
#include "base/conn.h"
#include "base/log.h"
#include "base/util.h"

enum wh_state { WH_IDLE, WH_RESOLVING, WH_CONNECTING, WH_WAITING };

struct wh_conn {
	struct conn conn;
	struct webhook *wh;
	http_parser parser;
	bool ready;     /* connected (and through TLS): requests may go */
	bool reused;    /* carried an earlier request */
	bool got_bytes; /* the current request's answer has begun */
	bool complete;  /* ... and is complete */
	int status;
	bool keep_alive;
};

struct webhook {
	struct loop *loop;
	struct spool *spool;
	struct spool_reader *reader;
	struct dns_resolver *dns;
	struct tls_ctx *tls;
	struct webhook_url url;
	char *secret;
	unsigned batch;
	void (*released)(void *arg);
	void *arg;
	bool url_changed; /* the next request goes on a new connection */

	enum wh_state state;
	bool stopped;
	bool retried; /* this request had its one immediate retry */
	struct wh_conn *cur;
	unsigned nconns; /* not yet released */
	struct loop_timer timer;
	struct loop_defer defer;
	struct sockaddr_storage addr;
	socklen_t addrlen;

	struct buf body, req; /* the batch being posted */
	unsigned batch_n;     /* events in it */
	uint64_t batch_last;  /* its last sequence number */
	uint64_t posted_upto; /* everything up to here was taken */
	uint64_t backoff_ms;  /* the next failure's wait */
	struct stats_webhook st;
};

static void kick(struct webhook *wh);
static void send_request(struct webhook *wh);
static void resolved(void *arg, struct dns_result *res);

/* ---- the URL ----------------------------------------------------------- */

bool webhook_url_parse(const char *url, struct webhook_url *out, char *err, size_t errlen)
{
	memset(out, 0, sizeof(*out));
	const char *p;
	if (!strncasecmp(url, "http://", 7)) {
		p = url + 7;
		out->port = 80;
	} else if (!strncasecmp(url, "https://", 8)) {
		p = url + 8;
		out->port = 443;
		out->tls = true;
	} else {
		snprintf(err, errlen, "url must start with http:// or https://");
		return false;
	}
	for (const char *q = url; *q; q++)
		if ((unsigned char)*q <= ' ' || *q == 0x7f || *q == '#') {
			snprintf(err, errlen,
			         "url must not hold spaces, control characters or '#'");
			return false;
		}
	size_t alen = strcspn(p, "/?");
	if (memchr(p, '@', alen)) {
		snprintf(err, errlen, "url must not hold a user name or password");
		return false;
	}
	if (alen == 0 || alen >= sizeof(out->authority)) {
		snprintf(err, errlen, "url needs a host");
		return false;
	}
	memcpy(out->authority, p, alen);
	const char *host = p, *hend;
	if (*p == '[') {
		hend = memchr(p, ']', alen);
		if (!hend) {
			snprintf(err, errlen, "url: '[' without ']'");
			return false;
		}
		host = p + 1;
	} else {
		hend = memchr(p, ':', alen);
		if (!hend)
			hend = p + alen;
	}
	size_t hlen = (size_t)(hend - host);
	if (!hlen || hlen >= sizeof(out->host)) {
		snprintf(err, errlen, "url needs a host");
		return false;
	}
	memcpy(out->host, host, hlen);
	const char *rest = hend + (*p == '[');
	if (rest < p + alen) {
		uint64_t port;
		char num[8] = { 0 };
		size_t nlen = (size_t)(p + alen - rest - 1);
		if (*rest != ':' || !nlen || nlen >= sizeof(num)) {
			snprintf(err, errlen, "url: bad port");
			return false;
		}
		memcpy(num, rest + 1, nlen);
		if (!rp_parse_u64(num, &port) || port < 1 || port > 65535) {
			snprintf(err, errlen, "url: bad port");
			return false;
		}
		out->port = (uint16_t)port;
	}
	unsigned char tmp[16];
	bool v6 = inet_pton(AF_INET6, out->host, tmp) == 1;
	if (*p == '[' && !v6) {
		snprintf(err, errlen, "url: '%s' is not an IPv6 address", out->host);
		return false;
	}
	for (const char *c = out->host; !v6 && *c; c++)
		if (!(isalnum((unsigned char)*c) || *c == '.' || *c == '-')) {
			snprintf(err, errlen, "url: bad host name '%s'", out->host);
			return false;
		}
	const char *path = p + alen;
	if (*path == '?')
		snprintf(out->path, sizeof(out->path), "/%s", path);
	else
		snprintf(out->path, sizeof(out->path), "%s", *path ? path : "/");
	if (strlen(path) + 1 >= sizeof(out->path)) {
		snprintf(err, errlen, "url: path too long");
		return false;
	}
	return true;
}

/* host_address - the URL's host as an address, when it is one. */
static bool host_address(struct webhook *wh)
{
	wh->addrlen = conn_addr_ip(wh->url.host, wh->url.port, &wh->addr);
	return wh->addrlen > 0;
}

/* ---- outcomes ---------------------------------------------------------- */

static void drop_conn(struct webhook *wh)
{
	if (wh->cur) {
		conn_close(&wh->cur->conn);
		wh->cur = NULL;
	}
}

static void timer_fired(struct loop_timer *t);

RP_PRINTF(2, 3) static void fail(struct webhook *wh, const char *fmt, ...)
{
	if (wh->state == WH_RESOLVING && wh->dns)
		dns_forget_waiter(wh->dns, resolved, wh);
	struct wh_conn *wc = wh->cur;
	bool again = wc && wc->reused && !wc->got_bytes && !wh->retried && !wh->stopped;
	drop_conn(wh);
	wh->state = WH_IDLE;
	if (again) {
		/* A kept-alive connection the server had closed: once more, now. */
		wh->retried = true;
		send_request(wh);
		return;
	}
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(wh->st.last_error, sizeof(wh->st.last_error), fmt, ap);
	va_end(ap);
	wh->st.failures++;
	wh->st.last_error_ms = rp_now_ms();
	wh->backoff_ms = wh->backoff_ms
	                     ? RP_MIN(wh->backoff_ms * 2, (uint64_t)WEBHOOK_BACKOFF_MAX_MS)
	                     : WEBHOOK_BACKOFF_MIN_MS;
	wh->st.retry_at_ms = wh->st.last_error_ms + wh->backoff_ms;
	char e[LOG_VALUE_MAX];
	log_warn("webhook: post failed events=%u error=%s retry_in=%llums", wh->batch_n,
	         log_value(e, sizeof(e), wh->st.last_error, strlen(wh->st.last_error)),
	         (unsigned long long)wh->backoff_ms);
	if (!wh->stopped)
		loop_timer_arm(wh->loop, &wh->timer, wh->backoff_ms, timer_fired);
}

static void finish(struct webhook *wh, struct wh_conn *wc)
{
	loop_timer_disarm(wh->loop, &wh->timer);
	wh->st.last_status = wc->status;
	if (wc->status < 200 || wc->status > 299) {
		fail(wh, "HTTP %d", wc->status);
		return;
	}
	wh->state = WH_IDLE;
	struct spool_req *req = xcalloc(1, sizeof(*req));
	req->type = SPOOL_REQ_EVENTS_DONE;
	req->u.events_done.upto = wh->batch_last;
	spool_request(wh->spool, req); /* freed by the writer */
	wh->posted_upto = wh->batch_last;
	wh->st.posts++;
	wh->st.events_posted += wh->batch_n;
	wh->st.last_success_ms = rp_now_ms();
	wh->st.retry_at_ms = 0;
	wh->backoff_ms = 0;
	log_debug("webhook: posted events=%u status=%d", wh->batch_n, wc->status);
	wc->reused = true;
	if (!wc->keep_alive)
		drop_conn(wh);
	kick(wh);
}

/* ---- the connection ---------------------------------------------------- */

static int on_headers_complete(http_parser *p)
{
	struct wh_conn *wc = p->data;
	wc->status = (int)p->status_code;
	return 0;
}

static int on_message_complete(http_parser *p)
{
	struct wh_conn *wc = p->data;
	wc->complete = true;
	wc->status = (int)p->status_code;
	wc->keep_alive = http_should_keep_alive(p);
	http_parser_pause(p, 1); /* nothing after it is ours */
	return 0;
}

static const http_parser_settings parser_settings = {
	.on_headers_complete = on_headers_complete,
	.on_message_complete = on_message_complete,
};

static void write_request(struct webhook *wh, struct wh_conn *wc)
{
	http_parser_init(&wc->parser, HTTP_RESPONSE);
	wc->parser.data = wc;
	wc->got_bytes = wc->complete = false;
	wc->status = 0;
	conn_write(&wc->conn, buf_head(&wh->req), buf_used(&wh->req));
	conn_flush_soon(&wc->conn);
	wh->state = WH_WAITING;
	loop_timer_arm(wh->loop, &wh->timer, WEBHOOK_REQUEST_MS, timer_fired);
}

static void on_connected(struct conn *c, int err)
{
	struct wh_conn *wc = c->owner;
	struct webhook *wh = wc->wh;
	if (wc != wh->cur)
		return;
	if (err) {
		fail(wh, "connect to %s:%u: %s", wh->url.host, wh->url.port, strerror(-err));
		return;
	}
	if (wh->url.tls) {
		struct tls_client_opts o = { .sni = wh->url.host, .verify_name = wh->url.host };
		conn_tls_client(c, wh->tls, &o); /* a failure calls on_closed now */
		return;
	}
	wc->ready = true;
	write_request(wh, wc);
}

static void on_tls_ready(struct conn *c)
{
	struct wh_conn *wc = c->owner;
	if (wc != wc->wh->cur)
		return;
	wc->ready = true;
	write_request(wc->wh, wc);
}

static void on_data(struct conn *c)
{
	struct wh_conn *wc = c->owner;
	struct webhook *wh = wc->wh;
	if (wc != wh->cur || wh->state != WH_WAITING || wc->complete) {
		buf_consume(&c->in, buf_used(&c->in)); /* nothing asked: dropped */
		return;
	}
	wc->got_bytes = true;
	size_t n =
	    http_parser_execute(&wc->parser, &parser_settings, buf_head(&c->in), buf_used(&c->in));
	enum http_errno e = HTTP_PARSER_ERRNO(&wc->parser);
	buf_consume(&c->in, buf_used(&c->in));
	(void)n;
	if (wc->complete) {
		finish(wh, wc);
	} else if (e != HPE_OK) {
		fail(wh, "bad HTTP answer: %s", http_errno_description(e));
	}
}

static void on_closed(struct conn *c, int err)
{
	struct wh_conn *wc = c->owner;
	struct webhook *wh = wc->wh;
	if (wc != wh->cur)
		return;
	if (wh->state == WH_WAITING && !wc->complete && wc->got_bytes) {
		/* An answer that ends with the connection. */
		http_parser_execute(&wc->parser, &parser_settings, NULL, 0);
		if (wc->complete) {
			wc->keep_alive = false;
			finish(wh, wc);
			return;
		}
	}
	if (wh->state == WH_IDLE) {
		wh->cur = NULL; /* an idle kept-alive connection the server closed */
		return;
	}
	if (err == -EPROTO)
		fail(wh, "TLS with %s: %s", wh->url.host, tls_error_name(conn_tls_error(c)));
	else if (err)
		fail(wh, "connection to %s: %s", wh->url.host, strerror(-err));
	else
		fail(wh, "%s closed the connection without an answer", wh->url.host);
}

static void on_released(struct conn *c)
{
	struct wh_conn *wc = c->owner;
	struct webhook *wh = wc->wh;
	wh->nconns--;
	free(wc);
	if (wh->stopped && !wh->nconns && wh->released)
		wh->released(wh->arg);
}

static const struct conn_ops wh_conn_ops = {
	.connected = on_connected,
	.data = on_data,
	.closed = on_closed,
	.released = on_released,
	.tls_ready = on_tls_ready,
};

static void connect_to(struct webhook *wh)
{
	struct wh_conn *wc = xcalloc(1, sizeof(*wc));
	wc->wh = wh;
	conn_init(&wc->conn, wh->loop, &wh_conn_ops, wc);
	int rc =
	    conn_connect(&wc->conn, (struct sockaddr *)&wh->addr, wh->addrlen, WEBHOOK_CONNECT_MS);
	if (rc < 0) {
		free(wc);
		fail(wh, "connect to %s:%u: %s", wh->url.host, wh->url.port, strerror(-rc));
		return;
	}
	wh->nconns++;
	wh->cur = wc;
	wh->state = WH_CONNECTING;
	loop_timer_arm(wh->loop, &wh->timer, WEBHOOK_CONNECT_MS + 1000, timer_fired);
}

static void resolved(void *arg, struct dns_result *res)
{
	struct webhook *wh = arg;
	if (wh->state != WH_RESOLVING)
		return;
	if (res->status != DNS_OK || !res->nhops) {
		fail(wh, "DNS for %s: %s", wh->url.host,
		     res->error && *res->error ? res->error : dns_status_name(res->status));
		return;
	}
	memcpy(&wh->addr, &res->hops[0].addr, res->hops[0].len);
	wh->addrlen = res->hops[0].len;
	conn_addr_set_port(&wh->addr, wh->url.port);
	connect_to(wh);
}

/* send_request - wh->req on the kept connection, or on a new one. */
static void send_request(struct webhook *wh)
{
	if (wh->url_changed) {
		wh->url_changed = false;
		drop_conn(wh);
	}
	struct wh_conn *wc = wh->cur;
	if (wc && wc->ready && !conn_closing(&wc->conn)) {
		write_request(wh, wc);
		return;
	}
	drop_conn(wh);
	if (host_address(wh)) {
		connect_to(wh);
		return;
	}
	if (!wh->dns) {
		fail(wh, "no resolver for %s", wh->url.host);
		return;
	}
	wh->state = WH_RESOLVING;
	loop_timer_arm(wh->loop, &wh->timer, WEBHOOK_REQUEST_MS, timer_fired);
	dns_resolve_host(wh->dns, wh->url.host, resolved, wh); /* may answer at once */
}

/* ---- the batch --------------------------------------------------------- */

static void build_request(struct webhook *wh)
{
	buf_reset(&wh->req);
	buf_printf(&wh->req,
	           "POST %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: ringpost\r\n"
	           "Content-Type: application/json\r\nContent-Length: %zu\r\n",
	           wh->url.path, wh->url.authority, buf_used(&wh->body));
	if (wh->secret[0]) {
		unsigned char md[EVP_MAX_MD_SIZE];
		unsigned mdlen = 0;
		char hex[2 * EVP_MAX_MD_SIZE + 1];
		HMAC(EVP_sha256(), wh->secret, (int)strlen(wh->secret),
		     (const unsigned char *)buf_head(&wh->body), buf_used(&wh->body), md, &mdlen);
		for (unsigned i = 0; i < mdlen; i++)
			snprintf(hex + 2 * i, 3, "%02x", md[i]);
		buf_printf(&wh->req, "X-Ringpost-Signature: sha256=%s\r\n", hex);
	}
	buf_puts(&wh->req, "\r\n");
	buf_append(&wh->req, buf_head(&wh->body), buf_used(&wh->body));
}

static void kick_run(struct loop_defer *d)
{
	struct webhook *wh = RP_CONTAINER_OF(d, struct webhook, defer);
	if (wh->stopped || wh->state != WH_IDLE || loop_timer_armed(&wh->timer))
		return;
	struct spool_events_info info;
	spool_events_info(wh->spool, &info);
	if (info.last_seq <= wh->posted_upto) {
		loop_timer_arm(wh->loop, &wh->timer, WEBHOOK_POLL_MS, timer_fired);
		return;
	}
	buf_reset(&wh->body);
	buf_puts(&wh->body, "[");
	wh->batch_n = 0;
	if (spool_reader_begin(wh->reader)) {
		wh->batch_n = spool_events_read(wh->reader, wh->posted_upto, wh->batch,
		                                WEBHOOK_BODY_MAX, &wh->body, &wh->batch_last);
		spool_reader_end(wh->reader);
	}
	if (!wh->batch_n) {
		/* Dropped past the bound, or not readable yet: look again later. */
		if (info.last_seq > wh->posted_upto && info.backlog == 0)
			wh->posted_upto = info.last_seq;
		loop_timer_arm(wh->loop, &wh->timer, WEBHOOK_POLL_MS, timer_fired);
		return;
	}
	buf_puts(&wh->body, "]");
	build_request(wh);
	wh->retried = false;
	send_request(wh);
}

static void kick(struct webhook *wh)
{
	if (!wh->stopped)
		loop_defer(wh->loop, &wh->defer, kick_run);
}

static void timer_fired(struct loop_timer *t)
{
	struct webhook *wh = RP_CONTAINER_OF(t, struct webhook, timer);
	switch (wh->state) {
	case WH_IDLE:
		wh->st.retry_at_ms = 0;
		kick(wh);
		return;
	case WH_RESOLVING:
		fail(wh, "DNS for %s: timeout", wh->url.host);
		return;
	case WH_CONNECTING:
		fail(wh, "connect to %s:%u: timeout", wh->url.host, wh->url.port);
		return;
	case WH_WAITING:
		fail(wh, "no answer from %s within %u s", wh->url.host, WEBHOOK_REQUEST_MS / 1000);
		return;
	}
}

/* ---- life -------------------------------------------------------------- */

static void apply_params(struct webhook *wh, const struct webhook_params *p)
{
	char err[200];
	struct webhook_url u;
	if (!webhook_url_parse(p->url, &u, err, sizeof(err)))
		rp_panic("webhook url passed the config check but does not parse: %s", err);
	if (strcmp(u.authority, wh->url.authority) || u.tls != wh->url.tls)
		wh->url_changed = true;
	wh->url = u;
	free(wh->secret);
	wh->secret = xstrdup(p->secret ? p->secret : "");
	wh->batch = p->batch ? p->batch : 100;
	struct tls_ctx *old = wh->tls;
	wh->tls = p->tls_client ? tls_ctx_ref(p->tls_client) : NULL;
	tls_ctx_unref(old);
}

struct webhook *webhook_new(const struct webhook_params *p)
{
	if (!p->url || !p->url[0])
		return NULL;
	struct webhook *wh = xcalloc(1, sizeof(*wh));
	wh->loop = p->loop;
	wh->spool = p->spool;
	wh->reader = p->reader;
	wh->dns = p->dns;
	wh->released = p->released;
	wh->arg = p->arg;
	apply_params(wh, p);
	wh->url_changed = false;
	wh->st.enabled = true;
	kick(wh);
	return wh;
}

void webhook_set_config(struct webhook *wh, const struct webhook_params *p)
{
	if (!wh || !p->url || !p->url[0])
		return;
	apply_params(wh, p);
	if (wh->stopped) { /* the url is back after a reload without it */
		wh->stopped = false;
		wh->st.enabled = true;
		kick(wh);
	}
}

void webhook_stop(struct webhook *wh)
{
	if (!wh || wh->stopped)
		return;
	if (wh->state == WH_RESOLVING && wh->dns)
		dns_forget_waiter(wh->dns, resolved, wh);
	wh->stopped = true;
	wh->st.enabled = false;
	loop_timer_disarm(wh->loop, &wh->timer);
	loop_defer_cancel(wh->loop, &wh->defer);
	drop_conn(wh);
	wh->state = WH_IDLE;
}

bool webhook_busy(const struct webhook *wh)
{
	return wh && wh->nconns;
}

void webhook_free(struct webhook *wh)
{
	if (!wh)
		return;
	buf_free(&wh->body);
	buf_free(&wh->req);
	free(wh->secret);
	tls_ctx_unref(wh->tls);
	free(wh);
}

void webhook_stats(const struct webhook *wh, struct stats_webhook *out)
{
	if (wh)
		*out = wh->st;
	else
		memset(out, 0, sizeof(*out));
}
