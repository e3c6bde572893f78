/* conn.h - a TCP byte stream on the event loop (both directions), in clear
 * text or TLS.
 *
 * A conn owns one socket. Received bytes are appended to c->in and the
 * owner's data callback consumes what it can. Writes are appended to an
 * output buffer and sent once per batch of completions (one send carries
 * every reply a pipelined batch produced); a short send is resubmitted.
 *
 * TLS (tls.h) sits between the socket and those buffers: conn_tls_server
 * and conn_tls_client switch a conn to TLS from the first byte (implicit
 * TLS) or mid-stream (STARTTLS); c->in and c->out then carry plaintext and
 * the owner's code does not change. A TLS failure closes the conn and is
 * reported through ops->closed with -EPROTO (conn_tls_error says which).
 *
 * Life cycle: conn_init + conn_attach (accepted socket) or conn_connect.
 * The conn closes when the owner calls conn_close / conn_close_after_flush,
 * or when the peer goes away (then ops->closed runs first, once). Either way
 * ops->released runs exactly once, after the last completion has arrived;
 * only then may the owner free the memory holding the conn. A close after
 * flush waits at most CONN_FLUSH_WAIT_MS for a peer that does not read.
 *
 * Receiving stops while the owner paused it (conn_recv_pause), while the
 * unsent output is over the owner's bound (conn_set_out_max: a client that
 * sends commands and never reads their replies cannot grow our buffers;
 * receiving resumes once the output has drained to a quarter of the bound)
 * and while the owner throttles the conn (conn_throttle). When the output
 * drains or a throttle ends and unconsumed input waits, ops->data runs
 * again, so the owner's input loop goes on where it stopped. A conn that
 * was once stopped so is in the slow lane for good: it receives one ring
 * buffer at a time, and nothing while CONN_SLOW_IN_MAX bytes of input wait
 * unconsumed (a multishot receive would move everything the client has
 * queued in the kernel into c->in as soon as it is re-armed).
 */
#ifndef RP_CONN_H
#define RP_CONN_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "buf.h"
#include "loop.h"
#include "tls.h"

struct conn;

struct conn_ops {
	/* connected - outbound connect finished: err 0, or -errno (-ETIMEDOUT).
	 * Not called when the owner closes the conn while it connects. NULL
	 * for conns that are only ever accepted (conn_connect needs it). */
	void (*connected)(struct conn *c, int err);
	/* data - new bytes in c->in; consume with buf_consume. */
	void (*data)(struct conn *c);
	/* closed - the peer closed (err 0) or the socket failed (-errno); the
	 * conn is now closing and further writes are dropped. */
	void (*closed)(struct conn *c, int err);
	/* released - nothing is in flight any more; the owner may free c. */
	void (*released)(struct conn *c);
	/* tls_ready - the TLS handshake completed (optional); data follows. */
	void (*tls_ready)(struct conn *c);
};

enum {
	CONN_F_CONNECTING = 1u << 0,    /* connect submitted, not completed */
	CONN_F_RECV = 1u << 1,          /* a multishot recv is armed */
	CONN_F_SENDING = 1u << 2,       /* a send is in flight (c->sending is the kernel's) */
	CONN_F_CLOSING = 1u << 3,       /* closing: cancel submitted or pending */
	CONN_F_CLOSE_DRAINED = 1u << 4, /* close once the output is sent */
	CONN_F_PAUSED = 1u << 5,        /* the owner paused receiving */
	CONN_F_EOF = 1u << 6,           /* the peer half-closed */
	CONN_F_RELEASED = 1u << 7,      /* released has run */
	CONN_F_TLS_HANDSHAKE = 1u << 8, /* TLS is on and its handshake is not done */
	CONN_F_OUT_FULL = 1u << 9,      /* output over out_max: not receiving until it drains */
	CONN_F_THROTTLED = 1u << 10,    /* the owner throttled: not receiving until timer */
	CONN_F_RECV_CANCEL = 1u << 11,  /* a cancel of the recv is on its way */
	CONN_F_DISCARD = 1u << 12,      /* closing: input is dropped, read until EOF */
	CONN_F_SLOW = 1u << 13,         /* was throttled or output-bound: single recvs, and
	                                 * none while CONN_SLOW_IN_MAX bytes wait */
};

#define CONN_FLUSH_WAIT_MS 10000 /* a close after flush gives up on the peer after this */
#define CONN_DISCARD_MS    5000  /* conn_close_discarding reads (and drops) this long */
#define CONN_SLOW_IN_MAX   65536 /* unconsumed input that stops a slow-lane conn's reading */

struct conn {
	struct loop_io io;          /* tag slot and in-flight count */
	struct loop *loop;          /* the loop this conn lives on */
	int fd;                     /* socket, -1 once closed */
	uint32_t flags;             /* CONN_F_* */
	const struct conn_ops *ops; /* owner callbacks */
	void *owner;                /* owner's object */
	struct buf in;              /* received, not yet consumed */
	struct buf out;             /* written by the owner, not yet sent */
	struct buf sending;         /* handed to the kernel; untouchable while SENDING */
	struct tls *tls;            /* NULL in clear text */
	struct buf raw;             /* bytes for the wire not yet handed to the kernel:
	                             * ciphertext, or clear text queued before TLS began */
	enum tls_error tls_err;     /* why TLS failed (conn closed with -EPROTO) */
	struct loop_defer flush;    /* sends once per batch */
	int err;                    /* first socket error seen, -errno */
	uint64_t bytes_in, bytes_out;
	size_t out_max;          /* unsent output that stops receiving; 0 = no bound */
	struct loop_timer timer; /* a throttle's end; the bound on a close after flush */
};

/* conn_init - prepare c for owner with ops; no socket yet. */
void conn_init(struct conn *c, struct loop *l, const struct conn_ops *ops, void *owner);
/* conn_attach - take over an accepted socket and start receiving. */
void conn_attach(struct conn *c, int fd);
/* conn_addr_ip - host as an IPv4 or IPv6 address literal with port into
 * *out (zeroed first); its length, 0 when host is not one. */
socklen_t conn_addr_ip(const char *host, uint16_t port, struct sockaddr_storage *out);
/* conn_addr_set_port - the port of an AF_INET or AF_INET6 address. */
void conn_addr_set_port(struct sockaddr_storage *ss, uint16_t port);
/* conn_connect - connect to addr with a deadline; ops->connected reports.
 * addr must stay valid until ops->connected has run.
 * Returns 0, or -errno when no socket could be made (nothing is in flight
 * then and the owner may free c at once). */
int conn_connect(struct conn *c, const struct sockaddr *addr, socklen_t len, uint64_t timeout_ms);
/* conn_connect_from - conn_connect from the local address src (port 0; the
 * family of addr), or from the kernel's choice when src is NULL. -errno
 * also when src cannot be bound (-EADDRNOTAVAIL: not an address of ours). */
int conn_connect_from(struct conn *c, const struct sockaddr *addr, socklen_t len,
                      const struct sockaddr *src, socklen_t srclen, uint64_t timeout_ms);
/* conn_bind_source - bind the unconnected socket fd to the local address
 * src as an outbound source: IP_BIND_ADDRESS_NO_PORT, so that the port is
 * only taken at connect() (bound sockets do not use up ephemeral ports).
 * 0 or -errno. */
int conn_bind_source(int fd, const struct sockaddr *src, socklen_t len);
/* conn_write - queue n bytes for sending (dropped when closing). */
void conn_write(struct conn *c, const void *p, size_t n);
/* conn_puts - queue a C string. */
void conn_puts(struct conn *c, const char *s);
/* conn_printf - queue formatted text. */
RP_PRINTF(2, 3) void conn_printf(struct conn *c, const char *fmt, ...);
/* conn_line - queue formatted text and a CRLF (one protocol line). */
RP_PRINTF(2, 3) void conn_line(struct conn *c, const char *fmt, ...);
/* conn_outbuf - the output buffer for writers that format in place; call
 * conn_flush_soon after appending. */
struct buf *conn_outbuf(struct conn *c);
/* conn_flush_soon - send queued output at the end of this batch. */
void conn_flush_soon(struct conn *c);
/* conn_pending_out - bytes queued or in flight. */
size_t conn_pending_out(const struct conn *c);
/* conn_recv_pause - stop receiving (bytes stay in the socket). */
void conn_recv_pause(struct conn *c);
/* conn_recv_resume - receive again after conn_recv_pause. */
void conn_recv_resume(struct conn *c);
/* conn_recv_poke - the owner consumed input outside ops->data (after a
 * wait of its own): receive again unless something stops it (a conn in
 * the slow lane stops receiving while CONN_SLOW_IN_MAX bytes wait). */
void conn_recv_poke(struct conn *c);
/* conn_set_out_max - stop receiving while more than n bytes of output are
 * unsent (and resume below n / 4); 0 = no bound (the default). */
void conn_set_out_max(struct conn *c, size_t n);
/* conn_out_blocked - the output passed the bound and has not drained yet:
 * the owner should take no more input (ops->data runs when it may). */
static inline bool conn_out_blocked(const struct conn *c)
{
	return c->flags & CONN_F_OUT_FULL;
}
/* conn_throttle - stop receiving for ms; then receive again and, when
 * unconsumed input waits, run ops->data. A later call replaces the wait. */
void conn_throttle(struct conn *c, uint64_t ms);
/* conn_close - close now: cancel everything, drop unsent output. */
void conn_close(struct conn *c);
/* conn_close_after_flush - close once queued output has been sent (or
 * CONN_FLUSH_WAIT_MS have passed without that). */
void conn_close_after_flush(struct conn *c);
/* conn_close_discarding - the same for a peer that may still be sending
 * (a request body we refused): its input is dropped from now on, and once
 * the output is sent the conn half-closes and reads (and drops) until the
 * peer closes or CONN_DISCARD_MS pass. Closing at once with unread input
 * would reset the connection and could destroy the reply in flight. */
void conn_close_discarding(struct conn *c);
/* conn_trim - release buffer memory beyond keep bytes (idle sessions). */
void conn_trim(struct conn *c, size_t keep);
/* conn_closing - true once closing has begun. */
static inline bool conn_closing(const struct conn *c)
{
	return c->flags & (CONN_F_CLOSING | CONN_F_CLOSE_DRAINED);
}

/* conn_tls_server - from now on speak TLS as the server (implicit TLS right
 * after conn_attach, or STARTTLS once its 220 is queued: what c->out holds
 * still goes out in clear text first). Unconsumed input is discarded: a
 * client's commands pipelined behind STARTTLS must not be read as if they
 * came through TLS (the CVE-2011-0411 class). Called from the data
 * callback, the caller must not consume from c->in afterwards (it is
 * empty): consume the STARTTLS line first, or stop reading. */
void conn_tls_server(struct conn *c, struct tls_ctx *ctx);
/* conn_tls_client - the same as the client: sends the ClientHello. */
void conn_tls_client(struct conn *c, struct tls_ctx *ctx, const struct tls_client_opts *opts);
/* conn_tls_error - why TLS failed (TLS_OK when it did not). */
static inline enum tls_error conn_tls_error(const struct conn *c)
{
	return c->tls_err;
}

/* conn_peer_name - "1.2.3.4:25" or "[::1]:25" of fd's peer into out. */
void conn_peer_name(int fd, char *out, size_t outlen);

#endif
