/* dns_resolver.c - c-ares on the shard's io_uring: sockets, timeouts, and
 * the MX and address lookups behind dns_resolve_mx / dns_resolve_host.
 *
 * c-ares tells us which sockets it wants watched (sock-state callback); we
 * keep one poll request per socket in the ring, cancel it when c-ares
 * changes its mind (a pending poll keeps a socket alive), and call
 * ares_process_fd when it fires. Timeouts come from ares_timeout and run on
 * the loop's timer wheel.
 *
 * An MX lookup is one MX query and then one cached address lookup per
 * exchanger ("a:" entries are shared with every domain using the same
 * exchanger); the answer is assembled when the last address lookup is in.
 *
 * At most DNS_MAX_INFLIGHT lookups are out at a time; the rest wait in two
 * FIFO queues (address lookups before MX lookups, since they complete MX
 * lookups already under way) and go out as answers come back.
 */
#include <arpa/nameser.h>
#include <errno.h>
#include <liburing.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dns_impl.h"
#include "base/log.h"
#include "base/util.h"

#define MAX_HOPS 32 /* addresses kept per answer */

const char *dns_status_name(enum dns_status s)
{
	static const char *const names[] = { "ok", "nxdomain", "null-mx", "no-address",
		                             "tempfail" };
	return (unsigned)s < RP_ARRAY_LEN(names) ? names[s] : "?";
}

static uint64_t ttl_ms(const struct dns_resolver *r, unsigned ttl_s)
{
	uint64_t ms = (uint64_t)ttl_s * 1000;
	return ms < r->cfg.max_ttl_ms ? ms : r->cfg.max_ttl_ms;
}

/* ---- sockets and time -------------------------------------------------- */

static void arm_timer(struct dns_resolver *r);

static void poll_arm(struct dns_sock *s)
{
	struct io_uring_sqe *sqe = loop_sqe(s->r->loop, &s->io, LOOP_OP_POLL);
	unsigned mask = (s->want_r ? POLLIN : 0) | (s->want_w ? POLLOUT : 0);
	io_uring_prep_poll_add(sqe, s->fd, mask);
	loop_tag(s->r->loop, sqe, &s->io, LOOP_OP_POLL);
	s->polling = true;
}

static void poll_cancel(struct dns_sock *s)
{
	struct io_uring_sqe *sqe = loop_sqe(s->r->loop, &s->io, LOOP_OP_CANCEL);
	io_uring_prep_poll_remove(sqe, loop_user_data(s->r->loop, &s->io, LOOP_OP_POLL));
	loop_tag(s->r->loop, sqe, &s->io, LOOP_OP_CANCEL);
}

static void sock_free(struct dns_sock *s)
{
	if (s->io.slot)
		loop_io_release(s->r->loop, &s->io);
	rp_list_del(&s->link);
	free(s);
}

static void sock_cqe(struct loop_io *io, const struct loop_cqe *c)
{
	struct dns_sock *s = RP_CONTAINER_OF(io, struct dns_sock, io);
	struct dns_resolver *r = s->r;
	if (c->op == LOOP_OP_POLL)
		s->polling = false;
	if (s->dead) {
		if (!s->io.inflight)
			sock_free(s);
		return;
	}
	if (c->op == LOOP_OP_POLL && c->res != -ECANCELED) {
		int ev = c->res < 0 ? POLLERR : c->res;
		ares_socket_t rfd = (ev & (POLLIN | POLLERR | POLLHUP)) ? s->fd : ARES_SOCKET_BAD;
		ares_socket_t wfd = (ev & (POLLOUT | POLLERR)) ? s->fd : ARES_SOCKET_BAD;
		/* c-ares may close s from in here (sock-state callback): busy
		 * keeps it allocated until we are done with it below. */
		s->busy = true;
		ares_process_fd(r->ch, rfd, wfd);
		s->busy = false;
		arm_timer(r);
	}
	if (!s->dead && !s->polling && !s->io.inflight && (s->want_r || s->want_w))
		poll_arm(s);
	else if (s->dead && !s->io.inflight)
		sock_free(s);
}

static void sock_state(void *data, ares_socket_t fd, int readable, int writable)
{
	struct dns_resolver *r = data;
	struct dns_sock *s = NULL;
	struct rp_list *pos, *tmp;
	rp_list_foreach_safe(pos, tmp, &r->socks)
	{
		struct dns_sock *x = rp_list_entry(pos, struct dns_sock, link);
		if (x->fd == fd) {
			s = x;
			break;
		}
	}
	if (!readable && !writable) {
		if (!s)
			return;
		rp_list_del(&s->link); /* c-ares closes fd right after this */
		rp_list_add(&r->dead, &s->link);
		s->dead = true;
		s->want_r = s->want_w = false;
		if (s->polling)
			poll_cancel(s);
		if (!s->io.inflight && !s->busy)
			sock_free(s);
		return;
	}
	if (!s) {
		s = xcalloc(1, sizeof(*s));
		s->r = r;
		s->fd = fd;
		rp_list_add(&r->socks, &s->link);
		loop_io_register(r->loop, &s->io, sock_cqe);
	}
	s->want_r = readable;
	s->want_w = writable;
	if (s->polling)
		poll_cancel(s); /* re-armed with the new mask when its CQE arrives */
	else if (!r->destroying)
		poll_arm(s);
}

static void on_timer(struct loop_timer *t)
{
	struct dns_resolver *r = RP_CONTAINER_OF(t, struct dns_resolver, timer);
	ares_process_fd(r->ch, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
	arm_timer(r);
}

static void arm_timer(struct dns_resolver *r)
{
	struct timeval tvbuf, *tv = ares_timeout(r->ch, NULL, &tvbuf);
	if (!tv) {
		loop_timer_disarm(r->loop, &r->timer);
		return;
	}
	uint64_t ms = (uint64_t)tv->tv_sec * 1000 + (uint64_t)tv->tv_usec / 1000;
	loop_timer_arm(r->loop, &r->timer, ms ? ms : 1, on_timer);
}

/* ---- address lookups ("a:" entries) ------------------------------------ */

static void pump(struct dns_resolver *r);

struct host_query {
	struct dns_resolver *r;
	struct dns_entry *e;
	char *host;
	struct host_query *next; /* the resolver's queue, until sent */
};

static void host_done(void *arg, int status, int timeouts, struct ares_addrinfo *ai)
{
	struct host_query *q = arg;
	struct dns_resolver *r = q->r;
	(void)timeouts;
	struct dns_result *res;
	if (status == ARES_EDESTRUCTION || r->destroying) {
		ares_freeaddrinfo(ai);
		free(q->host);
		free(q);
		return;
	}
	r->inflight--;
	if (status == ARES_SUCCESS && ai && ai->nodes) {
		unsigned n = 0, ttl = UINT32_MAX;
		for (struct ares_addrinfo_node *nd = ai->nodes; nd && n < MAX_HOPS;
		     nd = nd->ai_next)
			if (nd->ai_family == AF_INET || nd->ai_family == AF_INET6)
				n++;
		res = dns_result_new(DNS_OK, n, strlen(q->host) + 1);
		strcpy(res->names, q->host);
		for (struct ares_addrinfo_node *nd = ai->nodes; nd && res->nhops < n;
		     nd = nd->ai_next) {
			if (nd->ai_family != AF_INET && nd->ai_family != AF_INET6)
				continue;
			struct dns_hop *h = &res->hops[res->nhops++];
			h->host = res->names;
			h->len = (socklen_t)RP_MIN((size_t)nd->ai_addrlen, sizeof(h->addr));
			memcpy(&h->addr, nd->ai_addr, h->len);
			if ((unsigned)nd->ai_ttl < ttl)
				ttl = nd->ai_ttl < 0 ? 0 : (unsigned)nd->ai_ttl;
		}
		res->expires_ms = rp_mono_ms() + ttl_ms(r, ttl);
		if (!res->nhops) {
			dns_result_unref(res);
			res = dns_result_failed(DNS_NO_ADDRESS, r->cfg.negative_ttl_ms,
			                        "%s has no IPv4 or IPv6 address", q->host);
		}
	} else if (status == ARES_ENOTFOUND || status == ARES_ENODATA || status == ARES_SUCCESS) {
		res = dns_result_failed(
		    DNS_NO_ADDRESS, r->cfg.negative_ttl_ms, "%s has no address (%s)", q->host,
		    status == ARES_ENOTFOUND ? "no such host" : "no A or AAAA record");
	} else {
		res = dns_result_failed(DNS_TEMPFAIL, r->cfg.negative_ttl_ms,
		                        "address lookup for %s failed: %s", q->host,
		                        ares_strerror(status));
	}
	ares_freeaddrinfo(ai);
	struct dns_entry *e = q->e;
	free(q->host);
	free(q);
	dns_cache_complete(r, e, res);
	pump(r);
}

static void send_host(struct dns_resolver *r, struct host_query *q)
{
	struct ares_addrinfo_hints hints;
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_flags = ARES_AI_NOSORT;
	r->inflight++;
	r->st.queries++;
	ares_getaddrinfo(r->ch, q->host, NULL, &hints, host_done, q); /* may answer at once */
}

static void start_host(struct dns_resolver *r, struct dns_entry *e, const char *host)
{
	struct host_query *q = xcalloc(1, sizeof(*q));
	q->r = r;
	q->e = e;
	q->host = xstrdup(host);
	if (r->hq_tail)
		r->hq_tail->next = q;
	else
		r->hq_head = q;
	r->hq_tail = q;
	pump(r);
}

/* lookup - the cache entry for prefix:name, answering cb now or later;
 * true when the caller must start the query (key then holds the name). */
static struct dns_entry *lookup(struct dns_resolver *r, const char *prefix, const char *name,
                                dns_cb cb, void *arg, char key[300], bool *start)
{
	/* The DNS knows internationalised names by their A-labels; a name
	 * that does not convert is looked up as it is (and fails there). */
	char ascii[256];
	if (dns_to_ascii(name, ascii, sizeof(ascii)))
		name = ascii;
	snprintf(key, 300, "%s%s", prefix, name);
	rp_lower(key);
	r->st.lookups++;
	struct dns_entry *e = dns_cache_get(r, key, start);
	if (!*start && e->pending)
		r->st.shared++;
	dns_cache_wait(r, e, cb, arg);
	return e;
}

void dns_resolve_host(struct dns_resolver *r, const char *host, dns_cb cb, void *arg)
{
	char key[300];
	bool start;
	struct dns_entry *e = lookup(r, "a:", host, cb, arg, key, &start);
	if (start)
		start_host(r, e, key + 2);
}

/* ---- MX lookups ("m:" entries) ----------------------------------------- */

struct mx_query;

struct mx_host {
	struct mx_query *q;
	unsigned index;
};

struct mx_query {
	struct dns_resolver *r;
	struct dns_entry *e;
	char *domain;
	struct dns_mx *mx;
	unsigned nmx;
	unsigned pending;
	unsigned ttl;                /* the MX answer's TTL, seconds */
	struct dns_result **hostres; /* per exchanger */
	struct mx_host *hosts;
	struct mx_query *next; /* the resolver's queue, until sent */
};

static void mx_free(struct mx_query *q)
{
	for (unsigned i = 0; i < q->nmx; i++) {
		free(q->mx[i].host);
		if (q->hostres)
			dns_result_unref(q->hostres[i]);
	}
	free(q->mx);
	free(q->hostres);
	free(q->hosts);
	free(q->domain);
	free(q);
}

/* mx_assemble - every exchanger's addresses, in MX order. */
static void mx_assemble(struct mx_query *q)
{
	struct dns_resolver *r = q->r;
	unsigned n = 0;
	size_t names = 0;
	bool temp = false;
	uint64_t expires = rp_mono_ms() + ttl_ms(r, q->ttl);
	const char *why = NULL;
	for (unsigned i = 0; i < q->nmx; i++) {
		struct dns_result *h = q->hostres[i];
		if (h->status == DNS_OK) {
			n += h->nhops;
			names += strlen(q->mx[i].host) + 1;
			if (h->expires_ms < expires)
				expires = h->expires_ms;
		} else {
			temp |= h->status == DNS_TEMPFAIL;
			why = h->error;
		}
	}
	if (n > MAX_HOPS)
		n = MAX_HOPS;
	struct dns_result *res;
	if (!n) {
		res =
		    dns_result_failed(temp ? DNS_TEMPFAIL : DNS_NO_ADDRESS, r->cfg.negative_ttl_ms,
		                      "no usable exchanger for %s: %s", q->domain, why ? why : "?");
	} else {
		res = dns_result_new(DNS_OK, n, names);
		char *w = res->names;
		for (unsigned i = 0; i < q->nmx && res->nhops < n; i++) {
			struct dns_result *h = q->hostres[i];
			if (h->status != DNS_OK)
				continue;
			strcpy(w, q->mx[i].host);
			for (unsigned k = 0; k < h->nhops && res->nhops < n; k++) {
				struct dns_hop *hop = &res->hops[res->nhops++];
				*hop = h->hops[k];
				hop->host = w;
				hop->pref = q->mx[i].pref;
			}
			w += strlen(w) + 1;
		}
		res->expires_ms = expires;
	}
	struct dns_entry *e = q->e;
	mx_free(q);
	dns_cache_complete(r, e, res);
}

static void mx_host_done(void *arg, struct dns_result *res)
{
	struct mx_host *h = arg;
	struct mx_query *q = h->q;
	dns_result_ref(res);
	q->hostres[h->index] = res;
	if (--q->pending == 0)
		mx_assemble(q);
}

static void mx_done(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
	struct mx_query *q = arg;
	struct dns_resolver *r = q->r;
	(void)timeouts;
	if (status == ARES_EDESTRUCTION || r->destroying) {
		mx_free(q);
		return;
	}
	r->inflight--;
	struct dns_result *res = NULL;
	if (status == ARES_SUCCESS) {
		struct ares_mx_reply *mx = NULL;
		int prc = ares_parse_mx_reply(abuf, alen, &mx);
		if (prc == ARES_SUCCESS) {
			unsigned n = 0;
			for (struct ares_mx_reply *m = mx; m; m = m->next)
				n++;
			q->mx = xcalloc(n ? n : 1, sizeof(*q->mx));
			for (struct ares_mx_reply *m = mx; m; m = m->next) {
				q->mx[q->nmx].host = xstrdup(m->host);
				q->mx[q->nmx].pref = m->priority;
				q->nmx++;
			}
			ares_free_data(mx);
			if (!dns_answer_min_ttl(abuf, alen, &q->ttl))
				q->ttl = 0;
		} else if (prc == ARES_ENODATA) {
			status = ARES_ENODATA; /* an answer without MX records */
		} else {
			res = dns_result_failed(DNS_TEMPFAIL, r->cfg.negative_ttl_ms,
			                        "malformed MX answer for %s: %s", q->domain,
			                        ares_strerror(prc));
		}
	}
	if (!res && status == ARES_SUCCESS && dns_mx_is_null(q->mx, q->nmx))
		res = dns_result_failed(DNS_NULL_MX, r->cfg.negative_ttl_ms,
		                        "%s does not accept mail (null MX, RFC 7505)", q->domain);
	else if (!res && status == ARES_ENODATA) {
		/* No MX: the domain itself is the exchanger (RFC 5321 5.1). */
		q->mx = xcalloc(1, sizeof(*q->mx));
		q->mx[0].host = xstrdup(q->domain);
		q->nmx = 1;
		q->ttl = UINT32_MAX;
	} else if (!res && status == ARES_ENOTFOUND)
		res = dns_result_failed(DNS_NXDOMAIN, r->cfg.negative_ttl_ms,
		                        "%s does not exist (NXDOMAIN)", q->domain);
	else if (!res && status != ARES_SUCCESS)
		res = dns_result_failed(DNS_TEMPFAIL, r->cfg.negative_ttl_ms,
		                        "MX lookup for %s failed: %s", q->domain,
		                        ares_strerror(status));
	if (res) {
		struct dns_entry *e = q->e;
		mx_free(q);
		dns_cache_complete(r, e, res);
		pump(r);
		return;
	}
	/* Order, then look every exchanger up (answers may come at once,
	 * from the cache, so count them all in before asking). */
	dns_mx_order(q->mx, q->nmx, r->rnd++ * 0x9e3779b97f4a7c15ull);
	q->hostres = xcalloc(q->nmx, sizeof(*q->hostres));
	q->hosts = xcalloc(q->nmx, sizeof(*q->hosts));
	q->pending = q->nmx + 1;
	for (unsigned i = 0; i < q->nmx; i++) {
		q->hosts[i].q = q;
		q->hosts[i].index = i;
		if (!q->mx[i].host[0] || !strcmp(q->mx[i].host, ".")) {
			/* "." beside other MX records (or not at preference
			 * 0) is no exchanger: looking it up would query the
			 * root. The other exchangers still count. */
			struct dns_result *none = dns_result_failed(
			    DNS_NO_ADDRESS, r->cfg.negative_ttl_ms,
			    "\".\" is not an exchanger (null MX among other MX records)");
			mx_host_done(&q->hosts[i], none);
			dns_result_unref(none);
			continue;
		}
		dns_resolve_host(r, q->mx[i].host, mx_host_done, &q->hosts[i]);
	}
	if (--q->pending == 0)
		mx_assemble(q);
	pump(r);
}

void dns_resolve_mx(struct dns_resolver *r, const char *domain, dns_cb cb, void *arg)
{
	char key[300];
	bool start;
	struct dns_entry *e = lookup(r, "m:", domain, cb, arg, key, &start);
	if (!start)
		return;
	struct mx_query *q = xcalloc(1, sizeof(*q));
	q->r = r;
	q->e = e;
	q->domain = xstrdup(key + 2);
	if (r->mq_tail)
		r->mq_tail->next = q;
	else
		r->mq_head = q;
	r->mq_tail = q;
	pump(r);
}

/* pump - send queued lookups while fewer than DNS_MAX_INFLIGHT are out,
 * address lookups first. Callbacks may run inside ares_query (and call
 * pump again): the outer call does the work. */
static void pump(struct dns_resolver *r)
{
	if (r->pumping || r->destroying)
		return;
	r->pumping = true;
	bool sent = false;
	while (r->inflight < DNS_MAX_INFLIGHT) {
		if (r->hq_head) {
			struct host_query *q = r->hq_head;
			r->hq_head = q->next;
			if (!r->hq_head)
				r->hq_tail = NULL;
			send_host(r, q);
		} else if (r->mq_head) {
			struct mx_query *q = r->mq_head;
			r->mq_head = q->next;
			if (!r->mq_head)
				r->mq_tail = NULL;
			r->inflight++;
			r->st.queries++;
			ares_query(r->ch, q->domain, ns_c_in, ns_t_mx, mx_done, q);
		} else {
			break;
		}
		sent = true;
	}
	r->pumping = false;
	if (sent)
		arm_timer(r);
}

/* ---- life cycle -------------------------------------------------------- */

struct dns_resolver *dns_new(struct loop *loop, const struct dns_config *cfg, char *err,
                             size_t errlen)
{
	static bool lib_ready;
	if (!lib_ready) {
		int rc = ares_library_init(ARES_LIB_INIT_ALL);
		if (rc) {
			snprintf(err, errlen, "c-ares: %s", ares_strerror(rc));
			return NULL;
		}
		lib_ready = true;
	}
	struct dns_resolver *r = xcalloc(1, sizeof(*r));
	rp_list_init(&r->socks);
	rp_list_init(&r->dead);
	r->loop = loop;
	r->cfg = *cfg;
	r->servers = xstrdup(cfg->servers ? cfg->servers : "");
	r->cfg.servers = r->servers;
	r->rnd = rp_mono_ns() | 1;
	struct ares_options o;
	memset(&o, 0, sizeof(o));
	o.sock_state_cb = sock_state;
	o.sock_state_cb_data = r;
	o.timeout = (int)(cfg->timeout_ms ? cfg->timeout_ms : 2000);
	o.tries = (int)(cfg->tries ? cfg->tries : 2);
	o.lookups = (char *)"b"; /* DNS only: mail routing never reads /etc/hosts */
	o.socket_receive_buffer_size = DNS_RCVBUF;
	/* No search domains (resolv.conf search/domain, LOCALDOMAIN): MX targets
	 * are fully qualified, and a missing mx.example.com must not turn into
	 * mx.example.com.corp.example, somebody else's host. */
	o.domains = NULL;
	o.ndomains = 0;
	int rc = ares_init_options(&r->ch, &o,
	                           ARES_OPT_SOCK_STATE_CB | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES |
	                               ARES_OPT_LOOKUPS | ARES_OPT_DOMAINS | ARES_OPT_SOCK_RCVBUF);
	if (rc) {
		snprintf(err, errlen, "c-ares: %s", ares_strerror(rc));
		free(r->servers);
		free(r);
		return NULL;
	}
	if (*r->servers) {
		rc = ares_set_servers_ports_csv(r->ch, r->servers);
		if (rc) {
			snprintf(err, errlen, "[dns] servers '%s': %s", r->servers,
			         ares_strerror(rc));
			ares_destroy(r->ch);
			free(r->servers);
			free(r);
			return NULL;
		}
	}
	dns_cache_init(r);
	return r;
}

void dns_free(struct dns_resolver *r)
{
	if (!r)
		return;
	r->destroying = true;
	ares_destroy(r->ch); /* pending queries end with ARES_EDESTRUCTION */
	loop_timer_disarm(r->loop, &r->timer);
	while (r->hq_head) { /* never sent */
		struct host_query *q = r->hq_head;
		r->hq_head = q->next;
		free(q->host);
		free(q);
	}
	while (r->mq_head) {
		struct mx_query *q = r->mq_head;
		r->mq_head = q->next;
		mx_free(q);
	}
	/* The loop no longer runs: sockets still in flight are simply freed
	 * with it (no completion can reach them any more). */
	struct rp_list *lists[] = { &r->socks, &r->dead };
	for (size_t i = 0; i < RP_ARRAY_LEN(lists); i++) {
		struct rp_list *pos, *tmp;
		rp_list_foreach_safe(pos, tmp, lists[i])
		{
			struct dns_sock *s = rp_list_entry(pos, struct dns_sock, link);
			rp_list_del(&s->link);
			free(s);
		}
	}
	dns_cache_free(r);
	free(r->servers);
	free(r);
}
