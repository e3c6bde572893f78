/* shard.h - one event-loop thread and everything it owns.
 *
 * A shard owns: its io_uring loop, its listening sockets (SO_REUSEPORT, so
 * the kernel spreads connections), the SMTP server sessions it accepted, the
 * scheduler for the destination domains hashed to it, and the outbound
 * sessions to those domains. Shards talk to each other and to the spool
 * writer only through message queues (mq.h); nothing here is locked.
 *
 * struct relay is the process: the config, the spool and the shards.
 */
#ifndef RP_SHARD_H
#define RP_SHARD_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "api/api.h"
#include "api/imap.h"
#include "api/pop3.h"
#include "config.h"
#include "config_ref.h"
#include "base/loop.h"
#include "queue/sched.h"
#include "queue/spool.h"

struct shard;
struct smtpd;
struct delivery;

enum listener_kind {
	LISTEN_SUBMISSION,  /* SMTP submission, STARTTLS when [tls] is set */
	LISTEN_SUBMISSIONS, /* submission over implicit TLS (RFC 8314) */
	LISTEN_API,         /* the HTTP API (HTTPS with [api] tls) */
	LISTEN_INBOUND,     /* the bounce MX (STARTTLS) */
	LISTEN_IMAP,        /* IMAP for the bounce mailbox (STARTTLS) */
	LISTEN_IMAPS,       /* IMAP over implicit TLS */
	LISTEN_POP3,        /* POP3 for the bounce mailbox (STLS) */
	LISTEN_POP3S,       /* POP3 over implicit TLS */
	LISTEN_KINDS,
};

struct relay {
	struct config_ref *cref; /* current config (main thread's view) */
	struct spool *spool;
	struct shard **shards;
	unsigned nshards;
	int listen_fds[LISTEN_KINDS][256];    /* per kind, per shard; -1 = none */
	struct auth_checker *checker;         /* password checks (every shard's) */
	struct workers *signers;              /* DKIM signatures (every shard's) */
	struct auth_limiter *limiter;         /* failed logins per address (every shard's) */
	struct auth_limiter *inbound_refused; /* bounce MX: refused recipients per address */
	struct auth_limiter *inbound_flood;   /* bounce MX: reports per address */
	struct climit *climit;                /* connections per client address ([limits]);
	                                       * made with the first shard, freed with the last */
	_Atomic bool stopping;
	_Atomic bool running;          /* every shard has its loop (notifications may go) */
	struct sockaddr_storage *ours; /* our listening addresses (loop detection) */
	unsigned nours;
	pthread_mutex_t drain_lock; /* shards report "drained" to main */
	pthread_cond_t drain_cond;
	unsigned drained; /* shards with no session left */
	unsigned opened;  /* shards whose listeners accept (drain_lock) */
};

struct shard {
	struct relay *relay;
	unsigned index;
	pthread_t thread;
	struct loop *loop;
	struct config_ref *cref;  /* this shard's current config */
	const struct config *cfg; /* cref->cfg */
	struct spool_reader *reader;
	struct sched *sched;
	struct loop_timer tick; /* scheduler clock */
	struct loop_defer sched_defer;
	struct loop_timer stop_timer;
	struct loop_timer drain_poll; /* stopping: looks again for what has no callback */
	bool stopping;
	bool drained;               /* stopping and no session left */
	bool started;               /* loop enabled, ready for messages */
	int start_error;            /* errno when the loop could not be enabled */
	pthread_mutex_t start_lock; /* start-up handshake with the main thread */
	pthread_cond_t start_cond;

	struct shard_listener *listeners;
	unsigned nlisteners;

	struct smtpd *smtpd;            /* SMTP submission sessions */
	struct smtpd *inbound;          /* the bounce MX's sessions */
	struct delivery *delivery;      /* outbound sessions, pools and routes */
	struct api_server *api;         /* HTTP API sessions on this shard */
	struct dns_resolver *dns;       /* MX and address lookups */
	struct api_config api_cfg;      /* built from cfg (shard_api.c) */
	struct imap_server *imap;       /* the bounce mailbox over IMAP */
	struct pop3_server *pop3;       /* and over POP3 */
	struct mailbox_config mbox_cfg; /* built from cfg */
	struct webhook *webhook;        /* shard 0 only: posts [webhook] events */
	struct cluster *cluster;        /* [cluster]: limits shared through Redis */
	struct mq_item mbox_item;       /* "the mailbox changed" (at most one queued) */
	_Atomic bool mbox_queued;
};

/* shard_new - allocate a shard and make its loop (io_uring ring and
 * buffer ring) disabled; shard_start runs it. Call it while privileged
 * (before priv_drop): made with CAP_IPC_LOCK, the rings never count
 * against RLIMIT_MEMLOCK. NULL with errno when the kernel refuses the
 * ring (ENOMEM: the locked-memory limit). */
struct shard *shard_new(struct relay *r, unsigned index, struct config_ref *cref);
/* shard_start - start the thread and wait until it has enabled its loop;
 * false (errno set) when the loop cannot be enabled. */
bool shard_start(struct shard *sh);
/* shard_open - start accepting (after the start-up rebuild). Any thread.
 * The shard reports when its listeners are armed (relay.opened). */
void shard_open(struct shard *sh);
/* shard_wait_opened - block until every shard accepts (main thread). */
void shard_wait_opened(struct relay *r);
/* shard_stop - stop accepting and drain sessions. Any thread. The shard
 * reports when it is drained (relay.drained); its loop keeps running, so
 * other shards can still talk to it, until shard_exit. */
void shard_stop(struct shard *sh);
/* shard_wait_drained - block until every shard has drained (main thread). */
void shard_wait_drained(struct relay *r);
/* shard_exit - end a drained shard's loop. Any thread. */
void shard_exit(struct shard *sh);
/* shard_join - wait for the thread and free the shard. */
void shard_join(struct shard *sh);
/* shard_reconfigure - switch to a new config. Any thread. */
void shard_reconfigure(struct shard *sh, struct config_ref *cref);

/* shard_owner - the shard index that owns a destination domain. */
unsigned shard_owner(const struct relay *r, const char *domain);
/* shard_route - queue recipients on their owning shards (from sh's thread,
 * or from the main thread with sh == NULL). Domains are copied. */
void shard_route(struct relay *r, struct shard *sh, const struct sched_add *adds, unsigned n);
/* shard_route_from - shard_route from sh's thread (submit_route_fn). */
void shard_route_from(void *sh, const struct sched_add *adds, unsigned n);
/* shard_recover - start-up: queue every recipient the spool holds
 * (main thread, before the listeners open). Returns how many. */
uint64_t shard_recover(struct relay *r);
/* shard_touch - run the scheduler at the end of this batch (shard thread). */
void shard_touch(struct shard *sh);

/* shard_api_ops - the daemon's side of the HTTP API (shard_api.c). */
extern const struct api_ops shard_api_ops;
/* shard_mbox_changed - the spool's mailbox changed (any thread): every
 * shard's IMAP sessions look again. */
void shard_mbox_changed(void *relay);
/* shard_api_config - the API's settings from a config generation. */
void shard_api_config(const struct config_ref *gen, struct api_config *out);
/* shard_fill_stats - this shard's part of a stats snapshot (its thread). */
void shard_fill_stats(struct shard *sh, struct stats_snapshot *part);

#endif
