/* smtp_server.h - the SMTP server on one loop (the submission listener).
 *
 * One struct smtpd per shard; one session per accepted connection. It
 * speaks ESMTP with PIPELINING, SIZE, 8BITMIME, ENHANCEDSTATUSCODES,
 * SMTPUTF8, DSN and CHUNKING, enforces the [submission] limits, hands each
 * message to the one submission path (queue/submit.h) and answers the end
 * of a message only once the spool says it is durable; then the message's
 * recipients go to their schedulers through the route callback.
 */
#ifndef RP_SMTP_SERVER_H
#define RP_SMTP_SERVER_H

#include "base/loop.h"
#include "base/stats.h"
#include "base/auth.h"
#include "config_ref.h"
#include "queue/spool.h"
#include "queue/submit.h"

struct smtpd;

/* The bounce MX's limits per client address (IPv4 /32, IPv6 /64), over a
 * minute, shared by every shard; past them the address gets 421 4.7.0 for
 * a minute, doubling on repeat (as failed logins do, base/auth.h). */
#define INBOUND_MAX_REFUSED                                                                        \
	30 /* recipients refused (relay attempts,                                                  \
	    * forged VERP signatures): probing */
#define INBOUND_MAX_REPORTS                                                                        \
	3000 /* reports stored from clients outside                                                \
	      * [submission] networks: a flood */

struct smtpd_params {
	struct loop *loop;            /* the loop sessions run on */
	struct spool *spool;          /* where messages are committed */
	const struct config_ref *gen; /* [server] hostname, [submission] limits and
	                               * networks, [auth], the TLS context and the
	                               * users (replace with smtpd_set_config) */
	struct auth_checker *checker; /* password checks off the loop */
	struct auth_limiter *limiter; /* failed logins per address (all shards) */
	struct workers *signers;      /* DKIM signing threads (all shards) */
	bool inbound;                 /* the bounce MX ([listen] inbound): mail for
	                               * [queue] bounce_domain only, no AUTH, no relay */
	struct spool_reader *reader;  /* bounce MX: the loop's spool reader */
	struct auth_limiter *refused; /* bounce MX: refused recipients per address */
	struct auth_limiter *flood;   /* bounce MX: reports per address (clients
	                               * outside [submission] networks) */
	struct climit *climit;        /* connections per client address (all shards) */
	submit_route_fn route;        /* queue a committed message's recipients */
	void *route_ctx;
	void (*session_gone)(void *arg); /* a session was freed (shutdown waits) */
	void *arg;
};

/* smtpd_new - a server with no session yet. */
struct smtpd *smtpd_new(const struct smtpd_params *p);
/* smtpd_free - every session must be gone (smtpd_sessions() == 0). */
void smtpd_free(struct smtpd *srv);
/* smtpd_set_config - a reloaded generation (the old one may be freed after:
 * sessions hold their own references to what they still use). */
void smtpd_set_config(struct smtpd *srv, const struct config_ref *gen);
/* smtpd_session_start - take over an accepted socket; implicit_tls: the
 * submissions port, TLS from the first byte (RFC 8314). */
void smtpd_session_start(struct smtpd *srv, int fd, bool implicit_tls);
/* smtpd_shutdown_all - tell every session that the service is going away
 * (421) and close them; sessions waiting for the spool finish first. */
void smtpd_shutdown_all(struct smtpd *srv);
/* smtpd_sessions - sessions not yet freed. */
unsigned smtpd_sessions(const struct smtpd *srv);
/* smtpd_fill_stats - this server's counters into a stats part. */
void smtpd_fill_stats(const struct smtpd *srv, struct stats_snapshot *part);

#endif
