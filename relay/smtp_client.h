/* smtp_client.h - an outbound SMTP session (RFC 5321 client).
 *
 * Connects to one next hop, reads the greeting, says EHLO (HELO when EHLO is
 * refused), then runs transactions for the jobs its pool hands it: MAIL, all
 * RCPTs and DATA (or BDAT LAST with the content) in one write when the server
 * offers PIPELINING, one command at a time otherwise. It reports what the
 * server said per recipient and never decides retry policy (outcome.h does).
 */
#ifndef RP_SMTP_CLIENT_H
#define RP_SMTP_CLIENT_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "base/conn.h"
#include "queue/sched.h"
#include "smtp_reply.h"

struct shard;
struct delivery_pool;

enum smtp_client_state {
	CS_CONNECT,    /* connecting */
	CS_GREETING,   /* waiting for the 220 */
	CS_EHLO,       /* EHLO sent */
	CS_HELO,       /* HELO sent (EHLO refused) */
	CS_READY,      /* between transactions, asking for work */
	CS_IDLE,       /* parked in the pool */
	CS_MAIL,       /* waiting for the replies to MAIL/RCPT/(DATA|BDAT) */
	CS_CONTENT,    /* content sent, waiting for the final reply */
	CS_RSET,       /* RSET sent alone (no pipelining) */
	CS_QUIT,       /* QUIT sent */
	CS_CLOSED,     /* closing, waiting for the conn to be released */
	CS_NSTATES,
};

struct smtp_client {
	struct conn conn;
	struct shard *shard;
	struct delivery_pool *pool;            /* the destination it connects to */
	struct sched_dest *acct;               /* the domain that opened it (limits, stats) */
	unsigned hop_start, hop_k;             /* which next hop: rotation and index */
	enum smtp_client_state state;
	struct smtp_client *next, *prev;       /* shard's list of clients */
	struct smtp_client *idle_next;         /* pool's idle list */
	struct loop_timer timer;               /* reply timeout / idle timeout */
	struct sockaddr_storage addr;          /* next hop (lives until connected) */
	socklen_t addrlen;
	char remote[80];                       /* "ip:port" for logs */
	struct smtp_caps caps;
	unsigned messages;                     /* transactions done on this session */
	bool need_rset;                        /* a transaction was left open */
	bool working;                          /* got past EHLO: counted as working */
	bool in_idle_list;
	uint64_t job_start_ms;                 /* when the current attempt started */
	uint64_t connect_start_ms;
	/* The transaction in progress. */
	struct sched_job *job;
	unsigned replies_wanted;               /* replies still expected in this phase */
	unsigned reply_index;                  /* which reply comes next: 0 = MAIL,
						* 1..n = RCPT, n+1 = DATA/BDAT */
	unsigned rcpt_ok;                      /* RCPTs accepted */
	bool use_bdat;
	bool rset_pending;                     /* an RSET reply precedes MAIL's */
	bool mail_failed;
	struct attempt_report *reports;        /* one per job recipient */
	unsigned reports_cap;
	bool *rcpt_accepted;
};

/* smtp_client_open - start a session to pool's k-th next hop (rotation
 * start), opened for domain acct; false when there is no such hop or no
 * socket could be made (then nothing was started). */
bool smtp_client_open(struct shard *sh, struct delivery_pool *pool, struct sched_dest *acct,
		      unsigned start, unsigned k);
/* smtp_client_give - hand an idle session a job. */
void smtp_client_give(struct smtp_client *c, struct sched_job *job);
/* smtp_client_quit - close politely (QUIT) if idle, or as soon as the
 * current transaction ends. */
void smtp_client_quit(struct smtp_client *c);
/* smtp_client_abort - close now; a job in hand is reported abandoned. */
void smtp_client_abort(struct smtp_client *c);
/* smtp_client_state_name - for logs. */
const char *smtp_client_state_name(enum smtp_client_state s);

#endif
