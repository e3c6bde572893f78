/* api.h - the HTTP API as the daemon sees it.
 *
 * One api_server per shard, on the shard's loop. It serves HTTP/1.1 on the
 * sockets the shard accepts from [listen] api, writes submissions to the
 * spool through the same group commit as SMTP, reads message status from the
 * spool, and asks the daemon (through struct api_ops) for what it cannot
 * know alone: where recipients go after a commit, and the counters of every
 * shard. api/ reaches relay/ only through the loop interface (loop.h,
 * conn.h) and these callbacks.
 */
#ifndef RP_API_H
#define RP_API_H

#include <stdbool.h>
#include <stdint.h>

#include "queue/sched.h"
#include "queue/spool.h"
#include "base/stats.h"
#include "base/loop.h"
#include "base/tls.h"

struct api_server;
struct api_session;

/* What a key may do ([api] keys SCOPE), as bits: each route needs one
 * (http.c's route table), a key holds some. Same values as relay's
 * CFG_API_* (checked where the daemon fills struct api_config). */
enum api_scope {
	API_SCOPE_SUBMIT = 1u << 0, /* POST /v1/messages, /v1/messages/batch */
	API_SCOPE_READ = 1u << 1,   /* status, stats, metrics, queue and mailbox lists */
	API_SCOPE_ADMIN = 1u << 2,  /* queue actions, suppression changes, purges */
};

/* What the API needs from the config (the daemon builds it; immutable). */
struct api_config {
	char **keys;                /* bearer tokens */
	char **key_names;           /* per key: its name in logs and errors (never the token) */
	const unsigned *key_scopes; /* per key: API_SCOPE_* bits */
	unsigned nkeys;
	const char *hostname;               /* Message-ID right-hand side */
	uint64_t max_message_size;          /* one message, as built */
	uint64_t max_request;               /* one HTTP request body */
	uint32_t max_recipients;            /* per message */
	uint32_t max_batch;                 /* messages per batch request */
	uint64_t idle_timeout_ms;           /* keep-alive idle time */
	uint32_t max_clients;               /* concurrent HTTP sessions per shard */
	struct tls_ctx *tls;                /* HTTPS with this context; NULL = plain HTTP */
	struct dkim_keys *dkim;             /* sign submissions with these ([dkim]), or NULL */
	struct workers *signers;            /* on these threads */
	const struct climit_config *limits; /* [limits] */
};

/* A request for every shard's counters; the daemon fills snap and calls
 * done on the asking loop when all parts are in. */
struct api_stats_req {
	struct stats_snapshot snap;
	void (*done)(struct api_stats_req *req);
	void *arg;
};

/* Queue administration, answered like stats (issue: scheduler admin). */
enum api_admin_op {
	API_ADMIN_RETRY,     /* retry a domain now */
	API_ADMIN_SUSPEND,   /* hold a domain's mail */
	API_ADMIN_RESUME,    /* release it */
	API_ADMIN_PURGE,     /* remove a domain's queued mail */
	API_ADMIN_PURGE_MSG, /* remove one message's recipients for a domain */
};

struct api_admin_req {
	enum api_admin_op op;
	char domain[256];
	bool bounce;       /* purge: bounce (DSN) instead of dropping */
	uint64_t msgid;    /* API_ADMIN_PURGE_MSG: the message */
	uint64_t affected; /* recipients affected (filled by the daemon) */
	bool found;        /* the domain was known */
	void (*done)(struct api_admin_req *req);
	void *arg;
};

struct api_ops {
	/* route - a committed message's recipients go to their schedulers. */
	void (*route)(void *ctx, const struct sched_add *adds, unsigned n);
	/* stats - gather counters from every shard. */
	void (*stats)(void *ctx, struct api_stats_req *req);
	/* admin - apply an administrative operation on the owning shard. */
	void (*admin)(void *ctx, struct api_admin_req *req);
	/* warmup_schedule - domain's [domain] warmup caps in *caps (valid
	 * until the config changes, on this thread), their number returned
	 * (0: none). NULL: GET /v1/warmup answers without caps. */
	unsigned (*warmup_schedule)(void *ctx, const char *domain, const uint32_t **caps);
};

/* api_server_new - an API server on loop. spool and reader are the
 * shard's; cfg must outlive it (replace with api_server_set_config). */
struct api_server *api_server_new(struct loop *loop, struct spool *spool,
                                  struct spool_reader *reader, const struct api_config *cfg,
                                  const struct api_ops *ops, void *ctx);
/* api_server_free - every session must be gone. */
void api_server_free(struct api_server *srv);
/* api_server_set_config - a reloaded config (old one may be freed after). */
void api_server_set_config(struct api_server *srv, const struct api_config *cfg);
/* api_session_start - serve an accepted socket. */
void api_session_start(struct api_server *srv, int fd);
/* api_shutdown_all - close idle sessions; busy ones close after answering. */
void api_shutdown_all(struct api_server *srv);
/* api_sessions - open sessions (shutdown waits for 0). */
unsigned api_sessions(const struct api_server *srv);
/* api_fill_stats - this server's counters into a snapshot part. */
void api_fill_stats(const struct api_server *srv, struct stats_snapshot *part);
/* api_route_scope - the API_SCOPE_* bit a request needs ("GET",
 * "/v1/stats"): 0 for a route open to all (/healthz), API_SCOPE_ADMIN for
 * one that does not exist. For clients choosing among their keys. */
unsigned api_route_scope(const char *method, const char *path);
/* api_scope_name - "submit", "read" or "admin" for a route's scope bit
 * or a key's bits (anything with API_SCOPE_ADMIN is "admin"). */
const char *api_scope_name(unsigned scopes);
/* api_set_climit - the table counting connections per client address
 * (shared by every listener and shard); before the first session. */
void api_set_climit(struct api_server *srv, struct climit *cl);
/* api_set_session_gone - called after a session is freed (shutdown). */
void api_set_session_gone(struct api_server *srv, void (*fn)(void *ctx));

#endif
