/* test_conn.c - TCP byte streams on the loop (base/conn.c) over real
 * loopback sockets: a megabyte through attached sockets and a reply, outbound
 * connect and refusal, connect from a chosen source address (and one this
 * machine does not have), graceful and abrupt closes, ops->released exactly
 * once; and the limits: the output bound (a peer that writes a million
 * commands without reading holds the server to a bounded input and output,
 * then gets every reply in order), a throttle, and a discarding close that
 * delivers its answer to a peer still sending (no reset).
 */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "base/util.h"
#include "base/conn.h"
#include "base/loop.h"

struct side {
	struct conn c;
	struct world *w;
	struct buf got; /* everything received */
	int released;   /* ops->released calls */
	int closed;     /* ops->closed calls */
	int closed_err;
	int connected; /* ops->connected calls */
	int connected_err;
};

struct world {
	struct loop *l;
	struct side a, b;
	int listen_fd;
	struct sockaddr_in addr;
	struct sockaddr_in peer; /* where a's connection came from (accept) */
	const char *payload;     /* what a sends to b */
	size_t payload_len;
	int scenario;
	struct loop_timer watchdog, linger;
};

enum { SC_EXCHANGE, SC_CONNECT, SC_REFUSED, SC_ABRUPT };

static void watchdog(struct loop_timer *t)
{
	(void)t;
	cr_assert_fail("the conversation did not finish in time");
}

static void linger_done(struct loop_timer *t)
{
	struct world *w = RP_CONTAINER_OF(t, struct world, linger);
	loop_timer_disarm(w->l, &w->watchdog);
	loop_stop(w->l);
}

static void side_released(struct conn *c)
{
	struct side *s = c->owner;
	struct world *w = s->w;
	s->released++;
	cr_assert_eq(c->fd, -1, "the socket is closed before released");
	cr_assert_eq(c->io.inflight, 0, "nothing in flight at release");
	bool a_done = w->a.released, b_done = w->b.released || w->scenario == SC_REFUSED;
	/* Keep running a little: a second release or a late callback would show. */
	if (a_done && b_done && !loop_timer_armed(&w->linger))
		loop_timer_arm(w->l, &w->linger, 50, linger_done);
}

static void side_closed(struct conn *c, int err)
{
	struct side *s = c->owner;
	s->closed++;
	s->closed_err = err;
	cr_assert(conn_closing(c), "closing once the peer is gone");
}

static void side_data(struct conn *c)
{
	struct side *s = c->owner;
	struct world *w = s->w;
	buf_append(&s->got, buf_head(&c->in), buf_used(&c->in));
	buf_consume(&c->in, buf_used(&c->in));
	if (s == &w->b && buf_used(&s->got) == w->payload_len) {
		/* b has it all: answer and close once the answer is out. */
		if (w->scenario == SC_ABRUPT) {
			conn_close(c);
			return;
		}
		conn_puts(c, "bye\r\n");
		conn_close_after_flush(c);
		conn_write(c, "dropped", 7); /* closing: not sent */
	}
	if (s == &w->a && w->scenario == SC_CONNECT && buf_used(&s->got) == 5)
		conn_close(c); /* a closes first this time */
}

static void side_connected(struct conn *c, int err);

static const struct conn_ops side_ops = {
	.connected = side_connected,
	.data = side_data,
	.closed = side_closed,
	.released = side_released,
};

static void side_connected(struct conn *c, int err)
{
	struct side *s = c->owner;
	struct world *w = s->w;
	s->connected++;
	s->connected_err = err;
	if (err) {
		conn_close(c);
		return;
	}
	socklen_t len = sizeof(w->peer);
	int fd =
	    accept4(w->listen_fd, (struct sockaddr *)&w->peer, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
	cr_assert_geq(fd, 0, "accept: %s", strerror(errno));
	conn_attach(&w->b.c, fd);
	conn_write(c, w->payload, w->payload_len);
}

static void world_init(struct world *w, int scenario)
{
	memset(w, 0, sizeof(*w));
	w->scenario = scenario;
	struct loop_config cfg = {
		.sq_entries = 64, .cq_entries = 256, .buf_count = 8, .buf_size = 4096
	};
	w->l = loop_new(&cfg);
	cr_assert_not_null(w->l, "loop_new: %s", strerror(errno));
	w->a.w = w->b.w = w;
	conn_init(&w->a.c, w->l, &side_ops, &w->a);
	conn_init(&w->b.c, w->l, &side_ops, &w->b);
	w->listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	cr_assert_geq(w->listen_fd, 0);
	w->addr.sin_family = AF_INET;
	w->addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	w->addr.sin_port = 0;
	cr_assert_eq(bind(w->listen_fd, (struct sockaddr *)&w->addr, sizeof(w->addr)), 0);
	socklen_t len = sizeof(w->addr);
	cr_assert_eq(getsockname(w->listen_fd, (struct sockaddr *)&w->addr, &len), 0);
	cr_assert_eq(listen(w->listen_fd, 8), 0);
	loop_timer_arm(w->l, &w->watchdog, 10000, watchdog);
}

static void world_free(struct world *w)
{
	cr_assert_eq(loop_registered(w->l), 0, "every conn released its slot");
	loop_free(w->l);
	close(w->listen_fd);
	buf_free(&w->a.got);
	buf_free(&w->b.got);
}

/* tcp_pair - two connected loopback sockets, made the ordinary way. */
static void tcp_pair(struct world *w, int *a, int *b)
{
	*a = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	cr_assert_geq(*a, 0);
	cr_assert_eq(connect(*a, (struct sockaddr *)&w->addr, sizeof(w->addr)), 0);
	*b = accept4(w->listen_fd, NULL, NULL, SOCK_CLOEXEC);
	cr_assert_geq(*b, 0);
}

static char *pattern(size_t n)
{
	char *p = xmalloc(n);
	for (size_t i = 0; i < n; i++)
		p[i] = (char)(i * 131 + (i >> 9));
	return p;
}

Test(conn, exchange_and_graceful_close, .timeout = 30)
{
	struct world w;
	world_init(&w, SC_EXCHANGE);
	size_t n = 1u << 20;
	char *payload = pattern(n);
	w.payload = payload;
	w.payload_len = n;
	int fa, fb;
	tcp_pair(&w, &fa, &fb);
	conn_attach(&w.a.c, fa);
	conn_attach(&w.b.c, fb);
	cr_assert_eq(loop_registered(w.l), 2);
	/* Written in pieces before the loop runs: one stream comes out. */
	for (size_t off = 0; off < n; off += 100000)
		conn_write(&w.a.c, payload + off, RP_MIN(100000, n - off));
	cr_assert_eq(conn_pending_out(&w.a.c), n);
	loop_run(w.l);

	cr_assert_eq(buf_used(&w.b.got), n, "b got %zu of %zu bytes", buf_used(&w.b.got), n);
	cr_assert(!memcmp(buf_head(&w.b.got), payload, n), "payload corrupted");
	cr_assert_eq(buf_used(&w.a.got), 5);
	cr_assert(!memcmp(buf_head(&w.a.got), "bye\r\n", 5), "nothing after the close is sent");
	cr_assert_eq(w.a.c.bytes_out, n);
	cr_assert_eq(w.b.c.bytes_in, n);
	cr_assert_eq(w.b.c.bytes_out, 5);
	cr_assert_eq(w.a.closed, 1, "a learns that b went away");
	cr_assert_eq(w.a.closed_err, 0, "a clean end of stream");
	cr_assert_eq(w.b.closed, 0, "b closed itself: no closed callback");
	cr_assert_eq(w.a.released, 1);
	cr_assert_eq(w.b.released, 1);
	cr_assert_eq(w.a.connected + w.b.connected, 0);
	world_free(&w);
	free(payload);
}

Test(conn, abrupt_close_drops_output, .timeout = 30)
{
	struct world w;
	world_init(&w, SC_ABRUPT);
	w.payload = "hello\r\n";
	w.payload_len = 7;
	int fa, fb;
	tcp_pair(&w, &fa, &fb);
	conn_attach(&w.a.c, fa);
	conn_attach(&w.b.c, fb);
	conn_puts(&w.a.c, "hello\r\n");
	loop_run(w.l);
	cr_assert_eq(buf_used(&w.b.got), 7);
	cr_assert_eq(buf_used(&w.a.got), 0);
	cr_assert_eq(w.a.closed, 1);
	cr_assert_eq(w.b.closed, 0);
	cr_assert_eq(w.a.released, 1);
	cr_assert_eq(w.b.released, 1);
	world_free(&w);
}

Test(conn, connect_exchange, .timeout = 30)
{
	struct world w;
	world_init(&w, SC_CONNECT);
	w.payload = "ping\r\n";
	w.payload_len = 6;
	cr_assert_eq(conn_connect(&w.a.c, (struct sockaddr *)&w.addr, sizeof(w.addr), 2000), 0);
	loop_run(w.l);
	cr_assert_eq(w.a.connected, 1);
	cr_assert_eq(w.a.connected_err, 0);
	cr_assert_eq(buf_used(&w.b.got), 6);
	cr_assert(!memcmp(buf_head(&w.b.got), "ping\r\n", 6));
	cr_assert_eq(buf_used(&w.a.got), 5);
	cr_assert(!memcmp(buf_head(&w.a.got), "bye\r\n", 5));
	cr_assert_eq(w.a.closed, 0, "a closed first (or at once): no closed callback");
	cr_assert_eq(w.a.released, 1);
	cr_assert_eq(w.b.released, 1);
	world_free(&w);
}

Test(conn, connect_refused, .timeout = 30)
{
	struct world w;
	world_init(&w, SC_REFUSED);
	/* A port nobody listens on: take one and give it back. */
	struct sockaddr_in dead = w.addr;
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	dead.sin_port = 0;
	cr_assert_eq(bind(fd, (struct sockaddr *)&dead, sizeof(dead)), 0);
	socklen_t len = sizeof(dead);
	cr_assert_eq(getsockname(fd, (struct sockaddr *)&dead, &len), 0);
	close(fd);
	cr_assert_eq(conn_connect(&w.a.c, (struct sockaddr *)&dead, sizeof(dead), 2000), 0);
	loop_run(w.l);
	cr_assert_eq(w.a.connected, 1);
	cr_assert_eq(w.a.connected_err, -ECONNREFUSED, "err %d", w.a.connected_err);
	cr_assert_eq(w.a.closed, 0);
	cr_assert_eq(w.a.released, 1);
	cr_assert_eq(w.b.released, 0);
	world_free(&w);
}

/* source_v4 - 127.0.0.N, port 0. */
static struct sockaddr_in source_v4(const char *ip)
{
	struct sockaddr_in src = { .sin_family = AF_INET };
	cr_assert_eq(inet_pton(AF_INET, ip, &src.sin_addr), 1);
	return src;
}

Test(conn, connect_from_source, .timeout = 30)
{
	struct world w;
	world_init(&w, SC_CONNECT);
	w.payload = "ping\r\n";
	w.payload_len = 6;
	struct sockaddr_in src = source_v4("127.0.0.2");
	cr_assert_eq(conn_connect_from(&w.a.c, (struct sockaddr *)&w.addr, sizeof(w.addr),
	                               (struct sockaddr *)&src, sizeof(src), 2000),
	             0);
	loop_run(w.l);
	cr_assert_eq(w.a.connected_err, 0);
	char peer[INET_ADDRSTRLEN];
	inet_ntop(AF_INET, &w.peer.sin_addr, peer, sizeof(peer));
	cr_assert_str_eq(peer, "127.0.0.2", "the server saw %s", peer);
	cr_assert_neq(w.peer.sin_port, 0);
	cr_assert_eq(buf_used(&w.a.got), 5, "the exchange went on as usual");
	world_free(&w);
}

Test(conn, connect_from_foreign_source, .timeout = 30)
{
	struct world w;
	world_init(&w, SC_REFUSED);
	struct sockaddr_in src = source_v4("192.0.2.7"); /* TEST-NET-1: not ours */
	int rc = conn_connect_from(&w.a.c, (struct sockaddr *)&w.addr, sizeof(w.addr),
	                           (struct sockaddr *)&src, sizeof(src), 2000);
	cr_assert_eq(rc, -EADDRNOTAVAIL, "rc %d", rc);
	cr_assert_eq(w.a.c.fd, -1, "no socket left behind");
	cr_assert_eq(w.a.connected, 0, "no callback");
	loop_timer_disarm(w.l, &w.watchdog);
	world_free(&w);
}

Test(conn, bind_source_takes_no_port)
{
	/* IP_BIND_ADDRESS_NO_PORT: the port is chosen at connect() time, so
	 * sockets bound to a source do not each hold an ephemeral port. */
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in src = source_v4("127.0.0.3"), got;
	cr_assert_eq(conn_bind_source(fd, (struct sockaddr *)&src, sizeof(src)), 0);
	socklen_t len = sizeof(got);
	cr_assert_eq(getsockname(fd, (struct sockaddr *)&got, &len), 0);
	cr_assert_eq(got.sin_addr.s_addr, src.sin_addr.s_addr);
	cr_assert_eq(got.sin_port, 0, "bind took port %u", ntohs(got.sin_port));
	close(fd);
	struct sockaddr_in6 six = { .sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT };
	fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
	cr_assert_eq(conn_bind_source(fd, (struct sockaddr *)&six, sizeof(six)), 0, "::1");
	len = sizeof(six);
	cr_assert_eq(getsockname(fd, (struct sockaddr *)&six, &len), 0);
	cr_assert_eq(six.sin6_port, 0, "IPv6: bind took port %u", ntohs(six.sin6_port));
	close(fd);
	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	src = source_v4("192.0.2.7");
	cr_assert_eq(conn_bind_source(fd, (struct sockaddr *)&src, sizeof(src)), -EADDRNOTAVAIL);
	close(fd);
}

Test(conn, peer_name)
{
	struct world w;
	world_init(&w, SC_EXCHANGE);
	int fa, fb;
	tcp_pair(&w, &fa, &fb);
	char name[64], want[64];
	conn_peer_name(fb, name, sizeof(name));
	struct sockaddr_in sa;
	socklen_t len = sizeof(sa);
	cr_assert_eq(getsockname(fa, (struct sockaddr *)&sa, &len), 0);
	snprintf(want, sizeof(want), "127.0.0.1:%u", ntohs(sa.sin_port));
	cr_assert_str_eq(name, want);
	conn_peer_name(w.listen_fd, name, sizeof(name));
	cr_assert_str_eq(name, "unknown", "a listening socket has no peer");
	close(fa);
	close(fb);
	world_free(&w);
}

/* ---- limits: the output bound, throttles, discarding closes ---------------- */

/* A line server on one conn: each line "ping N" gets a 100-byte reply
 * (scenario LS_ECHO), or the first line throttles (LS_THROTTLE), or is
 * refused with a discarding close (LS_DISCARD). Its peer is a plain
 * blocking socket driven by a thread. */
enum { LS_ECHO, LS_THROTTLE, LS_DISCARD };
#define DISCARD_ANSWER (2u << 20)

struct lserver {
	struct conn c;
	struct loop *l;
	int scenario;
	unsigned lines;         /* lines answered */
	size_t max_in, max_out; /* the most input and output held at once */
	uint64_t t_first, t_second;
	bool released;
	struct loop_timer watchdog;
};

static void ls_data(struct conn *c)
{
	struct lserver *s = c->owner;
	struct buf *in = &c->in;
	s->max_in = RP_MAX(s->max_in, buf_used(in));
	char *nl;
	while (!conn_closing(c) && (nl = memchr(buf_head(in), '\n', buf_used(in)))) {
		size_t n = (size_t)(nl - buf_head(in)) + 1;
		if (s->scenario == LS_ECHO) {
			if (conn_out_blocked(c))
				break; /* the conn calls again once the client has read */
			conn_printf(c, "%-98.*s\r\n", (int)(n - 2), buf_head(in));
			s->max_out = RP_MAX(s->max_out, conn_pending_out(c));
		} else if (s->scenario == LS_THROTTLE) {
			if (!s->lines) {
				s->t_first = rp_mono_ms();
				buf_consume(in, n);
				s->lines++;
				conn_throttle(c, 300);
				return;
			}
			s->t_second = rp_mono_ms();
			conn_close(c);
		} else { /* a large answer: it is still in flight when we close */
			char *big = xmalloc(DISCARD_ANSWER);
			memset(big, 'n', DISCARD_ANSWER);
			conn_write(c, big, DISCARD_ANSWER);
			free(big);
			conn_close_discarding(c);
			return;
		}
		buf_consume(in, n);
		s->lines++;
	}
}

static void ls_closed(struct conn *c, int err)
{
	(void)err;
	conn_close(c);
}

static void ls_released(struct conn *c)
{
	struct lserver *s = c->owner;
	s->released = true;
	loop_timer_disarm(s->l, &s->watchdog);
	loop_stop(s->l);
}

static const struct conn_ops ls_ops = {
	.connected = side_connected,
	.data = ls_data,
	.closed = ls_closed,
	.released = ls_released,
};

/* The peer of the echo scenario: a million commands written without
 * reading a byte (until the write blocks for a second), then every reply
 * read and checked, in order. */
struct echo_peer {
	int fd;
	unsigned n;
	size_t sent_blind; /* bytes written before reading anything */
	unsigned got;      /* replies read, in order */
	bool bad;
};

static void *echo_peer_run(void *arg)
{
	struct echo_peer *p = arg;
	size_t len = (size_t)p->n * 13;
	char *all = xmalloc(len + 1);
	for (unsigned i = 0; i < p->n; i++) {
		char one[32];
		snprintf(one, sizeof(one), "ping %06u\r\n", i % 1000000);
		memcpy(all + (size_t)i * 13, one, 13);
	}
	struct timeval tv = { .tv_sec = 1 };
	setsockopt(p->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	size_t off = 0;
	while (off < len) {
		ssize_t k = send(p->fd, all + off, len - off, MSG_NOSIGNAL);
		if (k <= 0)
			break; /* blocked for a second: the server stopped reading */
		off += (size_t)k;
	}
	p->sent_blind = off;
	char buf[65536], line[100];
	size_t have = 0;
	while (p->got < p->n) {
		if (off < len) { /* the rest, now that we read too */
			ssize_t k = send(p->fd, all + off, RP_MIN(len - off, (size_t)65536),
			                 MSG_NOSIGNAL | MSG_DONTWAIT);
			if (k > 0)
				off += (size_t)k;
		}
		ssize_t k = recv(p->fd, buf, sizeof(buf), 0);
		if (k <= 0)
			break;
		for (ssize_t i = 0; i < k; i++) {
			line[have++] = buf[i];
			if (have < 100)
				continue;
			char want[32];
			snprintf(want, sizeof(want), "ping %06u", p->got % 1000000);
			if (memcmp(line, want, 11) || line[98] != '\r' || line[99] != '\n')
				p->bad = true;
			p->got++;
			have = 0;
		}
	}
	free(all);
	shutdown(p->fd, SHUT_WR);
	return NULL;
}

Test(conn, output_bound_stops_reading, .timeout = 30)
{
	struct lserver s;
	struct echo_peer p = { .n = 1000000 };
	pthread_t th;
	int fd;
	/* ls_run attaches the conn and runs the loop; the peer starts first. */
	struct world w;
	world_init(&w, SC_EXCHANGE);
	loop_timer_disarm(w.l, &w.watchdog);
	memset(&s, 0, sizeof(s));
	s.l = w.l;
	s.scenario = LS_ECHO;
	int fb;
	tcp_pair(&w, &fd, &fb);
	p.fd = fd;
	conn_init(&s.c, w.l, &ls_ops, &s);
	conn_set_out_max(&s.c, 64 * 1024);
	conn_attach(&s.c, fb);
	loop_timer_arm(w.l, &s.watchdog, 25000, watchdog);
	cr_assert_eq(pthread_create(&th, NULL, echo_peer_run, &p), 0);
	loop_run(w.l);
	pthread_join(th, NULL);
	close(fd);
	cr_assert(s.released);
	world_free(&w);
	cr_assert_lt(p.sent_blind, (size_t)p.n * 13, "the peer was never held back");
	cr_assert_eq(p.got, p.n, "replies read: %u of %u", p.got, p.n);
	cr_assert(!p.bad, "a reply out of order or damaged");
	cr_assert_eq(s.lines, p.n);
	cr_assert_leq(s.max_out, 64 * 1024 + 100, "output held: %zu", s.max_out);
	/* The first multishot burst (8 ring buffers of 4 KiB here), then at
	 * most CONN_SLOW_IN_MAX and one buffer more. */
	cr_assert_leq(s.max_in, CONN_SLOW_IN_MAX + 8 * 4096, "input held: %zu", s.max_in);
}

Test(conn, throttle_delays_input, .timeout = 30)
{
	struct lserver s;
	int fd;
	struct world w;
	world_init(&w, SC_EXCHANGE);
	loop_timer_disarm(w.l, &w.watchdog);
	memset(&s, 0, sizeof(s));
	s.l = w.l;
	s.scenario = LS_THROTTLE;
	int fb;
	tcp_pair(&w, &fd, &fb);
	conn_init(&s.c, w.l, &ls_ops, &s);
	conn_attach(&s.c, fb);
	loop_timer_arm(w.l, &s.watchdog, 10000, watchdog);
	cr_assert_eq(send(fd, "one\r\ntwo\r\n", 10, 0), 10);
	loop_run(w.l);
	close(fd);
	world_free(&w);
	cr_assert_eq(s.lines, 2);
	cr_assert_neq(s.t_second, 0, "the second line was never taken");
	cr_assert_geq(s.t_second - s.t_first, 290, "taken after %llu ms",
	              (unsigned long long)(s.t_second - s.t_first));
}

/* The peer of the discarding close: a request, then a body it keeps
 * sending from one thread while another reads the answer: all of it, then
 * a clean end of stream (a reset would mean the server closed with input
 * unread, which can destroy an answer still in flight). */
struct discard_peer {
	int fd;
	volatile bool stop;
	struct buf got;
	int end; /* 0: end of stream; -errno; 1: neither within 5 s */
};

static void *discard_writer(void *arg)
{
	struct discard_peer *p = arg;
	char chunk[4096];
	memset(chunk, 'x', sizeof(chunk));
	while (!p->stop)
		if (send(p->fd, chunk, sizeof(chunk), MSG_NOSIGNAL) < 0)
			break;
	return NULL;
}

static void *discard_reader(void *arg)
{
	struct discard_peer *p = arg;
	struct timeval tv = { .tv_sec = 5 };
	setsockopt(p->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	p->end = 1;
	usleep(500000); /* the answer waits in the server's socket meanwhile */
	for (;;) {
		char b[65536];
		ssize_t k = recv(p->fd, b, sizeof(b), 0);
		if (k > 0) {
			buf_append(&p->got, b, (size_t)k);
			continue;
		}
		p->end = k == 0 ? 0 : (errno == EAGAIN ? 1 : -errno);
		break;
	}
	p->stop = true;
	shutdown(p->fd, SHUT_WR); /* wakes the writer; the server sees our end */
	return NULL;
}

Test(conn, close_discarding_keeps_the_reply, .timeout = 30)
{
	struct lserver s;
	struct world w;
	world_init(&w, SC_EXCHANGE);
	loop_timer_disarm(w.l, &w.watchdog);
	memset(&s, 0, sizeof(s));
	s.l = w.l;
	s.scenario = LS_DISCARD;
	int fd, fb;
	tcp_pair(&w, &fd, &fb);
	conn_init(&s.c, w.l, &ls_ops, &s);
	conn_attach(&s.c, fb);
	loop_timer_arm(w.l, &s.watchdog, 20000, watchdog);
	struct discard_peer p = { .fd = fd };
	cr_assert_eq(send(fd, "REQ\r\n", 5, 0), 5);
	pthread_t wr, rd;
	cr_assert_eq(pthread_create(&wr, NULL, discard_writer, &p), 0);
	cr_assert_eq(pthread_create(&rd, NULL, discard_reader, &p), 0);
	loop_run(w.l); /* until the server's conn is released */
	pthread_join(rd, NULL);
	pthread_join(wr, NULL);
	close(fd);
	world_free(&w);
	cr_assert_eq(p.end, 0, "the peer saw %s, not the end of the stream",
	             p.end < 0 ? strerror(-p.end) : "nothing");
	cr_assert_eq(buf_used(&p.got), DISCARD_ANSWER, "answer: %zu bytes", buf_used(&p.got));
	cr_assert_eq(buf_head(&p.got)[DISCARD_ANSWER - 1], 'n');
	buf_free(&p.got);
}

Test(conn, address_literals_and_ports)
{
	struct sockaddr_storage ss;
	socklen_t len = conn_addr_ip("192.0.2.7", 2525, &ss);
	const struct sockaddr_in *sin = (const struct sockaddr_in *)&ss;
	cr_assert_eq(len, sizeof(struct sockaddr_in));
	cr_assert(sin->sin_family == AF_INET && ntohs(sin->sin_port) == 2525);
	cr_assert_eq(ntohl(sin->sin_addr.s_addr), 0xc0000207);
	len = conn_addr_ip("2001:db8::1", 25, &ss);
	const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)&ss;
	cr_assert_eq(len, sizeof(struct sockaddr_in6));
	cr_assert(sin6->sin6_family == AF_INET6 && ntohs(sin6->sin6_port) == 25);
	conn_addr_set_port(&ss, 587);
	cr_assert_eq(ntohs(sin6->sin6_port), 587);
	const char *names[] = { "mx.example.com", "", "[::1]", "192.0.2.7:25", "1.2.3", "::1 " };
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		cr_assert_eq(conn_addr_ip(names[i], 25, &ss), 0, "%s taken as an address",
		             names[i]);
}
