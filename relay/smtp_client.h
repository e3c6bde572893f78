/* smtp_client.h - the outbound SMTP engine (RFC 5321 client).
 *
 * An opaque session to one next hop: it connects, reads the greeting, says
 * EHLO (HELO when EHLO is refused), then runs the transactions its owner
 * hands it: MAIL, every RCPT and DATA (or BDAT LAST with the content) in one
 * write when the server offers PIPELINING, one command at a time otherwise.
 * It reports what happened (per recipient for a transaction, once for a
 * session that failed before it had one) and decides nothing: retry policy
 * is queue/outcome.c's, pools and limits are the owner's (relay/delivery.c).
 *
 * STARTTLS (RFC 3207) per the params' policy: after EHLO, when the server
 * offers it, the session says STARTTLS, drops whatever the server sent
 * after its 220, runs the handshake (verifying the certificate against
 * tls_name under SMTP_TLS_VERIFY), says EHLO again and forgets what the
 * server offered in clear text. A policy that needs TLS and cannot have it
 * ends the session through ops->failed with ATTEMPT_TLS_FAIL; so does a
 * failed handshake under any policy (the owner may retry in clear text).
 *
 * Life cycle: smtp_client_open starts it; ops->ready asks for work after EHLO
 * and after each transaction (NULL parks it idle until smtp_client_give or
 * its idle time ends); ops->closing says it takes no more work; ops->done
 * says it is released (nothing in flight) and is the last callback: the
 * engine frees the session when done returns.
 */
#ifndef RP_SMTP_CLIENT_H
#define RP_SMTP_CLIENT_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "base/loop.h"
#include "base/tls.h"
#include "queue/outcome.h"
#include "queue/sched.h"

struct smtp_client;

struct smtp_client_ops {
	/* ready - the session is through EHLO (first: the first time) and has
	 * no transaction: return the next job, or NULL to park it idle. */
	struct sched_job *(*ready)(struct smtp_client *c, void *arg, bool first);
	/* outcome - a transaction ended: reps[i] is what became of
	 * job->rcpt[i]; the job goes back to the owner with it. duration_ms
	 * runs from the first command of the transaction to its last reply. */
	void (*outcome)(struct smtp_client *c, void *arg, struct sched_job *job,
	                const struct attempt_report *reps, uint64_t duration_ms);
	/* failed - the session failed before it had a job (connect, greeting,
	 * EHLO/HELO). Closing and done follow. */
	void (*failed)(struct smtp_client *c, void *arg, const struct attempt_report *rep);
	/* closing - the session takes no more work (QUIT sent, connection lost
	 * or closed); called once, before done. */
	void (*closing)(struct smtp_client *c, void *arg);
	/* done - nothing is in flight any more; the session is freed when this
	 * returns. Called exactly once for every session that was opened. */
	void (*done)(struct smtp_client *c, void *arg);
};

/* Outbound TLS (the order of config.h's enum cfg_tls_policy). */
enum smtp_tls_policy {
	SMTP_TLS_OPPORTUNISTIC = 0, /* STARTTLS when offered, clear text otherwise */
	SMTP_TLS_REQUIRED,          /* no TLS: fail (ATTEMPT_TLS_FAIL) */
	SMTP_TLS_VERIFY,            /* required + a certificate valid for tls_name */
	SMTP_TLS_OFF,               /* never STARTTLS */
};

struct smtp_client_params {
	struct loop *loop;           /* the loop the session runs on */
	const struct sockaddr *addr; /* the next hop (copied) */
	socklen_t addrlen;
	const struct sockaddr *source; /* the local address to connect from (port
	                                * 0, addr's family; copied), or NULL: the
	                                * kernel's choice */
	socklen_t sourcelen;
	const char *helo;            /* EHLO/HELO name (copied) */
	const char *name;            /* for log lines, e.g. the domain; must
	                              * outlive the session */
	uint64_t connect_timeout_ms; /* TCP connect deadline */
	uint64_t idle_ms;            /* an idle session quits after this; 0 = 5 s */
	unsigned max_transactions;   /* then QUIT; 0 = no limit */
	struct tls_ctx *tls_ctx;     /* client context (the session takes a
	                              * reference); NULL: no STARTTLS */
	enum smtp_tls_policy tls_policy;
	const char *tls_name;              /* SNI and the name the certificate must
	                                    * carry (the exchanger's host name);
	                                    * NULL or an address: no SNI (copied) */
	struct tls_session *tls_resume;    /* a session to resume, or NULL; taken
	                                    * over when the open succeeds */
	const struct smtp_client_ops *ops; /* every callback is required */
	void *arg;                         /* passed to the callbacks */
};

/* smtp_client_open - start a session. NULL with errno when no socket could
 * be made or the source not bound (EADDRNOTAVAIL: not an address of this
 * machine); nothing was started then and no callback will run. */
struct smtp_client *smtp_client_open(const struct smtp_client_params *p);
/* smtp_client_give - hand an idle session a job (owned by the session until
 * ops->outcome hands it back). */
void smtp_client_give(struct smtp_client *c, struct sched_job *job);
/* smtp_client_quit - take no more work: an idle session says QUIT now, a
 * busy one after its transaction, one that has not reached its server
 * closes at once. May be called from ops->ready and ops->outcome: a job
 * that ready returns in the same call still runs, then QUIT. */
void smtp_client_quit(struct smtp_client *c);
/* smtp_client_abort - close now; a job in hand is reported abandoned. */
void smtp_client_abort(struct smtp_client *c);
/* smtp_client_remote - "ip:port" of the next hop, for logs and records. */
const char *smtp_client_remote(const struct smtp_client *c);
/* smtp_client_source - the local address the session was bound to
 * ("127.0.0.2", "::1"), or NULL when params.source was NULL. Lives as long
 * as the session. */
const char *smtp_client_source(const struct smtp_client *c);
/* smtp_client_helo - the name the session says in EHLO/HELO. */
const char *smtp_client_helo(const struct smtp_client *c);
/* smtp_client_idle - parked, waiting for smtp_client_give. */
bool smtp_client_idle(const struct smtp_client *c);

/* smtp_client_tls - what the session's transactions travel over, for logs
 * and records: "TLSv1.3/TLS_AES_256_GCM_SHA384 verified=yes" or "no" (clear
 * text). Lives as long as the session. */
const char *smtp_client_tls(const struct smtp_client *c);
/* smtp_client_tls_active - the session is through its TLS handshake. */
bool smtp_client_tls_active(const struct smtp_client *c);
/* smtp_client_tls_verified - the certificate verified for tls_name. */
bool smtp_client_tls_verified(const struct smtp_client *c);
/* smtp_client_tls_resumed - the handshake resumed params.tls_resume. */
bool smtp_client_tls_resumed(const struct smtp_client *c);
/* smtp_client_tls_handshake_failed - a TLS handshake was tried and failed
 * (its failure went to ops->failed as ATTEMPT_TLS_FAIL). */
bool smtp_client_tls_handshake_failed(const struct smtp_client *c);
/* smtp_client_tls_session_take - the newest resumable TLS session the
 * server gave, or NULL; the caller owns it (tls_session_free). TLS 1.3
 * tickets come after the handshake: ask after EHLO (ops->ready) or at
 * ops->closing, when the session keeps one it got for this moment. */
struct tls_session *smtp_client_tls_session_take(struct smtp_client *c);

#endif
