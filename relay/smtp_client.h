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

struct smtp_client_params {
	struct loop *loop;           /* the loop the session runs on */
	const struct sockaddr *addr; /* the next hop (copied) */
	socklen_t addrlen;
	const char *helo;                  /* EHLO/HELO name (copied) */
	const char *name;                  /* for log lines, e.g. the domain; must
	                                    * outlive the session */
	uint64_t connect_timeout_ms;       /* TCP connect deadline */
	uint64_t idle_ms;                  /* an idle session quits after this; 0 = 5 s */
	unsigned max_transactions;         /* then QUIT; 0 = no limit */
	const struct smtp_client_ops *ops; /* every callback is required */
	void *arg;                         /* passed to the callbacks */
};

/* smtp_client_open - start a session. NULL with errno when no socket could
 * be made; nothing was started then and no callback will run. */
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
/* smtp_client_idle - parked, waiting for smtp_client_give. */
bool smtp_client_idle(const struct smtp_client *c);

#endif
