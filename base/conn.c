/* conn.c - TCP byte stream over the event loop (see conn.h).
 *
 * Invariants:
 * - At most one send is in flight; it owns c->sending until its completion.
 * - The fd is closed, and ops->released called, only when io.inflight is 0
 *   and the conn is closing: no completion can then refer to it.
 * - In clear text c->out is handed to the kernel as it is (swapped with
 *   c->sending); with TLS it is encrypted into c->raw, which is handed over
 *   instead. Plaintext written during a TLS handshake waits in c->out.
 * - A multishot recv is armed exactly when recv_wanted() holds (or its
 *   cancel is on the way): whatever stops receiving cancels it, whatever
 *   ends the stop re-arms it through recv_maybe_arm.
 * - c->timer serves one purpose at a time: a throttle while the conn is
 *   open, the flush or discard deadline once it is closing.
 */
#include "conn.h"

#include <arpa/inet.h>
#include <errno.h>
#include <liburing.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <unistd.h>

#include "log.h"

static void conn_cqe(struct loop_io *io, const struct loop_cqe *cqe);
static void begin_close(struct conn *c);
static void send_submit(struct conn *c);
static void peer_gone(struct conn *c, int err);
static void conn_flush_now(struct loop_defer *d);
static void conn_maybe_release(struct conn *c);
static void conn_release_now(struct loop_defer *d);
static void cancel_op(struct conn *c, unsigned op);

void conn_init(struct conn *c, struct loop *l, const struct conn_ops *ops, void *owner)
{
	memset(c, 0, sizeof(*c));
	c->loop = l;
	c->fd = -1;
	c->ops = ops;
	c->owner = owner;
}

/* recv_arm - a multishot recv; in the slow lane a single one (one ring
 * buffer), armed again only after the owner has seen its bytes. */
static void recv_arm(struct conn *c)
{
	struct io_uring_sqe *sqe = loop_sqe(c->loop, &c->io, LOOP_OP_RECV);
	if (c->flags & CONN_F_SLOW)
		io_uring_prep_recv(sqe, c->fd, NULL, 0, 0);
	else
		io_uring_prep_recv_multishot(sqe, c->fd, NULL, 0, 0);
	loop_tag(c->loop, sqe, &c->io, LOOP_OP_RECV);
	sqe->flags |= IOSQE_BUFFER_SELECT;
	sqe->buf_group = loop_buf_group(c->loop);
	c->flags |= CONN_F_RECV;
}

/* recv_wanted - nothing stops receiving. (A conn closing after a flush
 * still receives: the owner may ignore it, discarding drops it.) */
static bool recv_wanted(const struct conn *c)
{
	if ((c->flags & CONN_F_SLOW) && buf_used(&c->in) >= CONN_SLOW_IN_MAX &&
	    !(c->flags & CONN_F_DISCARD))
		return false; /* the owner has enough to chew on */
	return c->fd >= 0 && !(c->flags & (CONN_F_PAUSED | CONN_F_OUT_FULL | CONN_F_THROTTLED |
	                                   CONN_F_EOF | CONN_F_CLOSING | CONN_F_CONNECTING));
}

/* recv_maybe_arm - arm the recv when it is wanted and none is armed. */
static void recv_maybe_arm(struct conn *c)
{
	if (!(c->flags & CONN_F_RECV) && recv_wanted(c))
		recv_arm(c);
}

/* recv_stop - cancel the armed recv (once); its last completion re-arms
 * it if it is wanted again by then. */
static void recv_stop(struct conn *c)
{
	if ((c->flags & CONN_F_RECV) && !(c->flags & CONN_F_RECV_CANCEL)) {
		cancel_op(c, LOOP_OP_RECV);
		c->flags |= CONN_F_RECV_CANCEL;
	}
}

static void set_nodelay(int fd)
{
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

void conn_attach(struct conn *c, int fd)
{
	rp_assert(c->fd < 0);
	c->fd = fd;
	set_nodelay(fd);
	loop_io_register(c->loop, &c->io, conn_cqe);
	recv_arm(c);
}

int conn_bind_source(int fd, const struct sockaddr *src, socklen_t len)
{
	/* Without this, bind() picks the port at once and every bound socket
	 * holds one of the ~28,000 ephemeral ports whatever it connects to;
	 * with it the port is chosen at connect() time, per 4-tuple. */
	int one = 1;
	setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
	return bind(fd, src, len) < 0 ? -errno : 0;
}

socklen_t conn_addr_ip(const char *host, uint16_t port, struct sockaddr_storage *out)
{
	struct sockaddr_in *sin = (struct sockaddr_in *)out;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)out;
	socklen_t len;
	memset(out, 0, sizeof(*out));
	if (inet_pton(AF_INET, host, &sin->sin_addr) == 1) {
		sin->sin_family = AF_INET;
		len = sizeof(*sin);
	} else if (inet_pton(AF_INET6, host, &sin6->sin6_addr) == 1) {
		sin6->sin6_family = AF_INET6;
		len = sizeof(*sin6);
	} else {
		return 0;
	}
	conn_addr_set_port(out, port);
	return len;
}

void conn_addr_set_port(struct sockaddr_storage *ss, uint16_t port)
{
	if (ss->ss_family == AF_INET)
		((struct sockaddr_in *)ss)->sin_port = htons(port);
	else if (ss->ss_family == AF_INET6)
		((struct sockaddr_in6 *)ss)->sin6_port = htons(port);
}

int conn_connect(struct conn *c, const struct sockaddr *addr, socklen_t len, uint64_t timeout_ms)
{
	return conn_connect_from(c, addr, len, NULL, 0, timeout_ms);
}

int conn_connect_from(struct conn *c, const struct sockaddr *addr, socklen_t len,
                      const struct sockaddr *src, socklen_t srclen, uint64_t timeout_ms)
{
	rp_assert(c->fd < 0);
	rp_assert(c->ops->connected);
	rp_assert(!src || src->sa_family == addr->sa_family);
	int fd = socket(addr->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (src) {
		int rc = conn_bind_source(fd, src, srclen);
		if (rc < 0) {
			close(fd);
			return rc;
		}
	}
	set_nodelay(fd);
	c->fd = fd;
	loop_io_register(c->loop, &c->io, conn_cqe);

	/* The connect and its deadline are linked: whichever ends first
	 * cancels the other, and both complete. The address must live until
	 * the connect is submitted; io_uring copies it at submission. */
	struct io_uring_sqe *sqe = loop_sqe(c->loop, &c->io, LOOP_OP_CONNECT);
	io_uring_prep_connect(sqe, fd, addr, len);
	loop_tag(c->loop, sqe, &c->io, LOOP_OP_CONNECT);
	sqe->flags |= IOSQE_IO_LINK;
	struct __kernel_timespec ts = { .tv_sec = (long long)(timeout_ms / 1000),
		                        .tv_nsec = (long long)(timeout_ms % 1000) * 1000000 };
	sqe = loop_sqe(c->loop, &c->io, LOOP_OP_LINK_TIMEOUT);
	io_uring_prep_link_timeout(sqe, &ts, 0);
	loop_tag(c->loop, sqe, &c->io, LOOP_OP_LINK_TIMEOUT);
	c->flags |= CONN_F_CONNECTING;
	/* The kernel copies the timespec when it prepares the request, which
	 * happens during submission: submit before ts goes out of scope. */
	loop_submit(c->loop);
	return 0;
}

void conn_write(struct conn *c, const void *p, size_t n)
{
	if (conn_closing(c) || c->fd < 0)
		return;
	buf_append(&c->out, p, n);
	conn_flush_soon(c);
}

void conn_puts(struct conn *c, const char *s)
{
	conn_write(c, s, strlen(s));
}

/* vwrite - queue formatted text, and a CRLF when line is true. */
RP_PRINTF(3, 0) static void vwrite(struct conn *c, bool line, const char *fmt, va_list ap)
{
	if (conn_closing(c) || c->fd < 0)
		return;
	buf_vprintf(&c->out, fmt, ap);
	if (line)
		buf_append(&c->out, "\r\n", 2);
	conn_flush_soon(c);
}

void conn_printf(struct conn *c, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vwrite(c, false, fmt, ap);
	va_end(ap);
}

void conn_line(struct conn *c, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vwrite(c, true, fmt, ap);
	va_end(ap);
}

struct buf *conn_outbuf(struct conn *c)
{
	return &c->out;
}

void conn_flush_soon(struct conn *c)
{
	if (!(c->flags & CONN_F_SENDING) && (buf_used(&c->out) || buf_used(&c->raw)))
		loop_defer(c->loop, &c->flush, conn_flush_now);
	/* Not during a TLS handshake: that needs the peer's bytes to get the
	 * output moving at all (and nothing but a greeting is written then). */
	if (c->out_max && !(c->flags & (CONN_F_OUT_FULL | CONN_F_TLS_HANDSHAKE)) &&
	    conn_pending_out(c) > c->out_max) {
		c->flags |= CONN_F_OUT_FULL | CONN_F_SLOW;
		recv_stop(c);
	}
}

void conn_set_out_max(struct conn *c, size_t n)
{
	c->out_max = n;
}

/* out_drained - after a send: the output is back under a quarter of the
 * bound, so receive again and let the owner go on with what waits. */
static void out_drained(struct conn *c)
{
	if (!(c->flags & CONN_F_OUT_FULL) || conn_closing(c) ||
	    conn_pending_out(c) > c->out_max / 4)
		return;
	c->flags &= ~CONN_F_OUT_FULL;
	if (buf_used(&c->in))
		c->ops->data(c);
	recv_maybe_arm(c);
}

static void throttle_end(struct loop_timer *t)
{
	struct conn *c = RP_CONTAINER_OF(t, struct conn, timer);
	c->flags &= ~CONN_F_THROTTLED;
	if (conn_closing(c))
		return;
	if (buf_used(&c->in))
		c->ops->data(c);
	recv_maybe_arm(c);
}

void conn_throttle(struct conn *c, uint64_t ms)
{
	if (conn_closing(c) || c->fd < 0)
		return;
	c->flags |= CONN_F_THROTTLED | CONN_F_SLOW;
	recv_stop(c);
	loop_timer_arm(c->loop, &c->timer, ms ? ms : 1, throttle_end);
}

size_t conn_pending_out(const struct conn *c)
{
	return buf_used(&c->out) + buf_used(&c->sending) + buf_used(&c->raw);
}

/* ---- TLS --------------------------------------------------------------- */

/* tls_failed - TLS broke (or the peer broke it): an alert OpenSSL queued
 * goes out if nothing else is in flight, then the conn closes; the owner
 * hears of it through ops->closed(-EPROTO) unless it was closing anyway. */
static void tls_failed(struct conn *c, enum tls_error e)
{
	if ((c->flags & CONN_F_CLOSING) || c->tls_err)
		return; /* closing already; the first failure is the one reported */
	c->tls_err = e;
	if (!c->err)
		c->err = -EPROTO;
	log_debug("conn %d: %s", c->fd, tls_error_text(c->tls));
	bool notify = !(c->flags & CONN_F_CLOSE_DRAINED);
	buf_reset(&c->out);
	if (buf_used(&c->raw) && !(c->flags & CONN_F_SENDING)) {
		c->flags |= CONN_F_CLOSE_DRAINED; /* the alert, then the end */
		struct buf tmp = c->sending;
		c->sending = c->raw;
		c->raw = tmp;
		buf_reset(&c->raw);
		send_submit(c);
	} else {
		begin_close(c);
	}
	if (notify && c->ops->closed)
		c->ops->closed(c, -EPROTO);
}

/* tls_encrypt_out - plaintext in c->out into c->raw (not while the
 * handshake runs). False when TLS failed (the conn is closing). */
static bool tls_encrypt_out(struct conn *c)
{
	if ((c->flags & CONN_F_TLS_HANDSHAKE) || !buf_used(&c->out))
		return true;
	enum tls_error e = tls_write(c->tls, buf_head(&c->out), buf_used(&c->out), &c->raw);
	buf_reset(&c->out);
	if (e) {
		tls_failed(c, e);
		return false;
	}
	return true;
}

/* tls_begin - switch to TLS: queued clear text goes out first, unconsumed
 * input is dropped. */
static void tls_begin(struct conn *c, struct tls *t)
{
	rp_assert(!c->tls && c->fd >= 0);
	buf_append(&c->raw, buf_head(&c->out), buf_used(&c->out));
	buf_reset(&c->out);
	buf_reset(&c->in);
	c->tls = t;
	c->flags |= CONN_F_TLS_HANDSHAKE;
}

void conn_tls_server(struct conn *c, struct tls_ctx *ctx)
{
	tls_begin(c, tls_new(ctx, NULL));
	conn_flush_soon(c);
}

void conn_tls_client(struct conn *c, struct tls_ctx *ctx, const struct tls_client_opts *opts)
{
	tls_begin(c, tls_new(ctx, opts));
	enum tls_error e = tls_start(c->tls, &c->raw);
	if (e) {
		tls_failed(c, e);
		return;
	}
	conn_flush_soon(c);
}

/* tls_input_bytes - ciphertext from the socket: handshake events, then the
 * plaintext to the owner. */
static void tls_input_bytes(struct conn *c, const char *p, size_t n)
{
	/* The session failed and its alert is on the way out: what the peer
	 * sent after the bad record is noise for a dead session. */
	if (c->tls_err)
		return;
	size_t before = buf_used(&c->in);
	unsigned ev = 0;
	enum tls_error e = tls_input(c->tls, p, n, &c->in, &c->raw, &ev);
	if (e) {
		tls_failed(c, e);
		return;
	}
	if (buf_used(&c->raw))
		conn_flush_soon(c);
	if (ev & TLS_EV_ESTABLISHED) {
		c->flags &= ~CONN_F_TLS_HANDSHAKE;
		conn_flush_soon(c); /* plaintext that waited for the handshake */
		if (c->ops->tls_ready)
			c->ops->tls_ready(c);
		if (conn_closing(c))
			return;
	}
	if (buf_used(&c->in) > before)
		c->ops->data(c);
	if ((ev & TLS_EV_CLOSED) && !conn_closing(c)) {
		c->flags |= CONN_F_EOF;
		peer_gone(c, 0);
	}
}

static void send_submit(struct conn *c)
{
	struct io_uring_sqe *sqe = loop_sqe(c->loop, &c->io, LOOP_OP_SEND);
	io_uring_prep_send(sqe, c->fd, buf_head(&c->sending), buf_used(&c->sending), MSG_NOSIGNAL);
	loop_tag(c->loop, sqe, &c->io, LOOP_OP_SEND);
	c->flags |= CONN_F_SENDING;
}

static void conn_flush_now(struct loop_defer *d)
{
	struct conn *c = RP_CONTAINER_OF(d, struct conn, flush);
	if ((c->flags & (CONN_F_SENDING | CONN_F_CLOSING)) || c->fd < 0)
		return;
	struct buf *ready = &c->out;
	if (c->tls) {
		if (!tls_encrypt_out(c))
			return;
		ready = &c->raw;
	}
	if (!buf_used(ready))
		return;
	/* Swap: the filled buffer goes to the kernel, the drained one is refilled. */
	struct buf tmp = c->sending;
	c->sending = *ready;
	*ready = tmp;
	buf_reset(ready);
	send_submit(c);
}

/* cancel_op - ask the kernel to cancel this conn's pending request op. */
static void cancel_op(struct conn *c, unsigned op)
{
	struct io_uring_sqe *sqe = loop_sqe(c->loop, &c->io, LOOP_OP_CANCEL);
	io_uring_prep_cancel64(sqe, loop_user_data(c->loop, &c->io, op), 0);
	loop_tag(c->loop, sqe, &c->io, LOOP_OP_CANCEL);
}

void conn_recv_pause(struct conn *c)
{
	if ((c->flags & CONN_F_PAUSED) || conn_closing(c))
		return;
	c->flags |= CONN_F_PAUSED;
	recv_stop(c);
}

void conn_recv_resume(struct conn *c)
{
	c->flags &= ~CONN_F_PAUSED;
	conn_recv_poke(c);
}

void conn_recv_poke(struct conn *c)
{
	if (!conn_closing(c))
		recv_maybe_arm(c);
}

/* begin_close - cancel everything in flight; release once it has drained. */
static void begin_close(struct conn *c)
{
	if (c->flags & CONN_F_CLOSING)
		return;
	c->flags |= CONN_F_CLOSING;
	c->flags &= ~CONN_F_CLOSE_DRAINED;
	loop_defer_cancel(c->loop, &c->flush);
	loop_timer_disarm(c->loop, &c->timer);
	/* Cancel each pending request by its tag: the kernel finds a tag in
	 * a hash, while a cancel by fd walks every pending request of the
	 * ring (quadratic when thousands of sessions close at once). */
	if (c->fd >= 0) {
		recv_stop(c);
		if (c->flags & CONN_F_SENDING)
			cancel_op(c, LOOP_OP_SEND);
		if (c->flags & CONN_F_CONNECTING)
			cancel_op(c, LOOP_OP_CONNECT); /* its linked timeout goes with it */
	}
	conn_maybe_release(c);
}

void conn_close(struct conn *c)
{
	begin_close(c);
}

static void close_wait_over(struct loop_timer *t)
{
	struct conn *c = RP_CONTAINER_OF(t, struct conn, timer);
	begin_close(c);
}

/* discard_start - the reply is out: half-close and read what the peer
 * still sends, dropping it, until it closes or CONN_DISCARD_MS pass. */
static void discard_start(struct conn *c)
{
	if (c->fd >= 0)
		shutdown(c->fd, SHUT_WR);
	c->flags &= ~(CONN_F_PAUSED | CONN_F_OUT_FULL | CONN_F_THROTTLED);
	recv_maybe_arm(c);
	loop_timer_arm(c->loop, &c->timer, CONN_DISCARD_MS, close_wait_over);
}

void conn_close_discarding(struct conn *c)
{
	if (conn_closing(c))
		return;
	c->flags |= CONN_F_DISCARD;
	buf_reset(&c->in);
	conn_close_after_flush(c);
}

void conn_close_after_flush(struct conn *c)
{
	if (conn_closing(c))
		return;
	c->flags &= ~CONN_F_THROTTLED;
	loop_timer_disarm(c->loop, &c->timer);
	if (c->tls) {
		if (c->flags & CONN_F_TLS_HANDSHAKE) {
			buf_reset(&c->out); /* no session to send it through */
		} else {
			if (!tls_encrypt_out(c))
				return;
			tls_shutdown(c->tls, &c->raw); /* close_notify */
		}
	}
	if (!conn_pending_out(c)) {
		if (c->flags & CONN_F_DISCARD) {
			c->flags |= CONN_F_CLOSE_DRAINED;
			discard_start(c);
		} else {
			begin_close(c);
		}
		return;
	}
	c->flags |= CONN_F_CLOSE_DRAINED;
	conn_flush_soon(c);
	/* A peer that reads nothing would hold the close for ever: the send
	 * carrying the last reply never completes. */
	loop_timer_arm(c->loop, &c->timer, CONN_FLUSH_WAIT_MS, close_wait_over);
}

/* peer_gone - the socket is finished from the peer's side. */
static void peer_gone(struct conn *c, int err)
{
	if (c->flags & CONN_F_CLOSING)
		return;
	if (!c->err)
		c->err = err;
	bool graceful = c->flags & CONN_F_CLOSE_DRAINED;
	begin_close(c);
	if (!graceful && c->ops->closed)
		c->ops->closed(c, err);
}

/* conn_maybe_release - once closing and idle, release after this batch.
 * Never synchronously: the caller may be inside an owner callback that
 * still uses the object. */
static void conn_maybe_release(struct conn *c)
{
	if (!(c->flags & CONN_F_CLOSING) || c->io.inflight || (c->flags & CONN_F_RELEASED))
		return;
	loop_defer(c->loop, &c->flush, conn_release_now);
}

static void conn_release_now(struct loop_defer *d)
{
	struct conn *c = RP_CONTAINER_OF(d, struct conn, flush);
	if (c->io.inflight || (c->flags & CONN_F_RELEASED))
		return; /* a late request was submitted; its completion re-checks */
	if (c->fd >= 0) {
		close(c->fd);
		c->fd = -1;
	}
	if (c->io.slot)
		loop_io_release(c->loop, &c->io);
	buf_free(&c->in);
	buf_free(&c->out);
	buf_free(&c->sending);
	buf_free(&c->raw);
	loop_timer_disarm(c->loop, &c->timer);
	tls_free(c->tls);
	c->tls = NULL;
	c->flags |= CONN_F_RELEASED;
	c->ops->released(c);
}

void conn_trim(struct conn *c, size_t keep)
{
	if (!buf_used(&c->in))
		buf_shrink(&c->in, keep);
	if (!buf_used(&c->out))
		buf_shrink(&c->out, keep);
	if (!(c->flags & CONN_F_SENDING))
		buf_shrink(&c->sending, keep);
	if (!buf_used(&c->raw))
		buf_shrink(&c->raw, keep);
	if (c->tls)
		tls_trim(c->tls);
}

static void on_recv(struct conn *c, const struct loop_cqe *cqe)
{
	bool more = cqe->flags & IORING_CQE_F_MORE;
	if (!more)
		c->flags &= ~(CONN_F_RECV | CONN_F_RECV_CANCEL);
	if (c->flags & CONN_F_CLOSING)
		return;
	if (cqe->res > 0) {
		c->bytes_in += (size_t)cqe->res;
		if (!(c->flags & CONN_F_DISCARD)) {
			if (c->tls) {
				tls_input_bytes(c, cqe->data, (size_t)cqe->res);
			} else {
				buf_append(&c->in, cqe->data, (size_t)cqe->res);
				c->ops->data(c);
			}
		}
		/* The buffer ring ran dry, the kernel ended the multishot, or a
		 * single recv completed: any completion without F_MORE on a
		 * live conn means re-arm (once the owner has seen the bytes). */
		recv_maybe_arm(c);
		return;
	}
	if (cqe->res == 0) {
		c->flags |= CONN_F_EOF;
		peer_gone(c, 0);
		return;
	}
	switch (-cqe->res) {
	case ENOBUFS:
	case ECANCELED:
	case EINTR:
	case EAGAIN:
		recv_maybe_arm(c);
		return;
	default:
		peer_gone(c, cqe->res);
	}
}

static void on_send(struct conn *c, const struct loop_cqe *cqe)
{
	c->flags &= ~CONN_F_SENDING;
	if (c->flags & CONN_F_CLOSING)
		return;
	if (cqe->res < 0) {
		if (cqe->res == -EINTR || cqe->res == -EAGAIN) {
			send_submit(c);
			return;
		}
		peer_gone(c, cqe->res);
		return;
	}
	buf_consume(&c->sending, (size_t)cqe->res);
	c->bytes_out += (size_t)cqe->res;
	if (buf_used(&c->sending)) {
		send_submit(c); /* short send: the rest, same buffer */
		return;
	}
	if (buf_used(&c->out) || buf_used(&c->raw))
		conn_flush_now(&c->flush);
	out_drained(c);
	if ((c->flags & (CONN_F_SENDING | CONN_F_CLOSING)) || buf_used(&c->raw))
		return;
	if (c->flags & CONN_F_CLOSE_DRAINED) {
		if (c->flags & CONN_F_DISCARD) {
			discard_start(c);
			return;
		}
		shutdown(c->fd, SHUT_WR);
		begin_close(c);
	}
}

static void on_connect(struct conn *c, const struct loop_cqe *cqe)
{
	if (!(c->flags & CONN_F_CONNECTING))
		return;
	c->flags &= ~CONN_F_CONNECTING;
	if (c->flags & CONN_F_CLOSING)
		return;
	int err = cqe->res;
	if (err == -ECANCELED)
		err = -ETIMEDOUT; /* the linked timeout fired */
	if (err == 0)
		recv_arm(c);
	else if (!c->err)
		c->err = err;
	c->ops->connected(c, err);
}

static void conn_cqe(struct loop_io *io, const struct loop_cqe *cqe)
{
	struct conn *c = RP_CONTAINER_OF(io, struct conn, io);
	switch (cqe->op) {
	case LOOP_OP_RECV:
		on_recv(c, cqe);
		break;
	case LOOP_OP_SEND:
		on_send(c, cqe);
		break;
	case LOOP_OP_CONNECT:
		on_connect(c, cqe);
		break;
	case LOOP_OP_LINK_TIMEOUT:
	case LOOP_OP_CANCEL:
		break;
	default:
		rp_panic("unexpected op %u", cqe->op);
	}
	conn_maybe_release(c);
}

void conn_peer_name(int fd, char *out, size_t outlen)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	char host[INET6_ADDRSTRLEN] = "?";
	unsigned port = 0;
	if (getpeername(fd, (struct sockaddr *)&ss, &len) == 0) {
		if (ss.ss_family == AF_INET) {
			struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
			inet_ntop(AF_INET, &sin->sin_addr, host, sizeof(host));
			port = ntohs(sin->sin_port);
			snprintf(out, outlen, "%s:%u", host, port);
			return;
		}
		if (ss.ss_family == AF_INET6) {
			struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
			inet_ntop(AF_INET6, &sin6->sin6_addr, host, sizeof(host));
			port = ntohs(sin6->sin6_port);
			snprintf(out, outlen, "[%s]:%u", host, port);
			return;
		}
	}
	snprintf(out, outlen, "unknown");
}
