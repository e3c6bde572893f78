/* config.h - the ringpost.conf INI file (INTERFACE.md), parsed with inih.
 *
 * config_load returns a complete, validated, immutable configuration or an
 * error naming the file, the line and the reason. A loaded config is shared
 * read-only between threads; a reload builds a new one and swaps pointers.
 */
#ifndef RP_CONFIG_H
#define RP_CONFIG_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "base/climit.h"
#include "base/log.h"

/* A socket address given as host:port ("127.0.0.1:25", "[::1]:25"). */
struct cfg_addr {
	bool set;       /* the key was given */
	char text[300]; /* as written */
	char host[256]; /* host part without brackets */
	uint16_t port;
	struct sockaddr_storage ss; /* resolved when host is an IP literal */
	socklen_t sslen;            /* 0 when host is a name */
};

/* A local address to send from ([domain] source). */
struct cfg_source {
	struct sockaddr_storage ss;  /* port 0 */
	socklen_t len;               /* of ss's family */
	char text[INET6_ADDRSTRLEN]; /* as inet_ntop writes it: "192.0.2.1", "::1" */
};

/* Outbound TLS per destination ([domain] tls). */
enum cfg_tls_policy {
	CFG_TLS_OPPORTUNISTIC = 0, /* STARTTLS when offered, clear text otherwise */
	CFG_TLS_REQUIRED,          /* defer (4.7.5) without TLS */
	CFG_TLS_VERIFY,            /* required + a certificate valid for the exchanger */
	CFG_TLS_OFF,               /* never STARTTLS */
};

/* [tls] min_version. */
enum cfg_tls_version {
	CFG_TLS_V1_2 = 0,
	CFG_TLS_V1_3,
};

/* [server] log_format. */
enum cfg_log_format {
	CFG_LOG_TEXT = 0,
	CFG_LOG_JSON,
};

/* Delivery settings of one destination domain ([domain NAME] merged over
 * [domain *]). */
#define CFG_WARMUP_MAX 90 /* days a [domain] warmup schedule may have */

struct cfg_domain {
	char *name;               /* lower-case domain, or "*" */
	unsigned line;            /* where the section started */
	uint32_t max_connections; /* concurrent sessions */
	uint32_t max_messages_per_connection;
	uint32_t max_recipients_per_message;
	double rate; /* messages per second, 0 = unlimited */
	uint64_t connect_timeout_ms;
	uint64_t idle_ms;           /* an outbound session with no work quits after this */
	uint16_t port;              /* SMTP port of exchangers found by DNS */
	struct cfg_addr route;      /* static next hop */
	unsigned tls;               /* enum cfg_tls_policy */
	char *source;               /* local addresses to send from, as written ("" = any) */
	struct cfg_source *sources; /* source parsed, in its order */
	unsigned nsources;
	char *ehlo;                      /* EHLO name ("" = [server] hostname) */
	uint32_t warmup[CFG_WARMUP_MAX]; /* messages a day per source address, the
	                                  * schedule's k-th day (warmup.c) */
	unsigned nwarmup;                /* days in it; 0 = no warm-up */
	unsigned source_line, ehlo_line; /* where source and ehlo were set (0: never) */
	unsigned set;                    /* keys given in this section (CFG_D_*) */
};

/* A [dkim DOMAIN] section. */
struct cfg_dkim {
	char *domain;   /* From: domain signed, lower-case */
	unsigned line;  /* where the section started */
	char *selector; /* s= */
	char *key;      /* private key file (PEM) */
};

#define CFG_MAX_KEYS 128 /* rows in config.c's key table, at most */

/* [api] keys scopes as bits: a route needs one bit, a key holds some.
 * "submit" and "read" are one bit each, "admin" (and a bare TOKEN) all. */
enum cfg_api_scope {
	CFG_API_SUBMIT = 1u << 0, /* POST /v1/messages and /v1/messages/batch */
	CFG_API_READ = 1u << 1,   /* what only looks: status, stats, metrics, lists */
	CFG_API_ADMIN = 1u << 2,  /* what changes the queue, the suppressions, messages */
};
#define CFG_API_ALL     (CFG_API_SUBMIT | CFG_API_READ | CFG_API_ADMIN)
#define CFG_API_MIN_KEY 16 /* characters a key needs when the API is not on loopback */

struct config {
	char *path;

	/* [server] */
	char *hostname;  /* EHLO name, Received: by, Reporting-MTA */
	char *data_dir;  /* spool directory */
	unsigned shards; /* 0 = one per core */
	char *log_path;  /* "" = stderr */
	enum log_level log_level;
	uint32_t max_outbound; /* outbound sessions per shard, all domains */
	char *user;            /* started as root: drop to this user ("" = stay) */
	unsigned user_line;    /* where user was set (0: never) */
	unsigned log_format;   /* enum cfg_log_format */

	/* [listen] */
	struct cfg_addr listen_submission, listen_api, listen_inbound, listen_imap, listen_pop3;
	struct cfg_addr listen_submissions, listen_imaps, listen_pop3s; /* implicit TLS */

	/* [tls] */
	char *tls_cert;           /* PEM chain ("" = no TLS) */
	char *tls_key;            /* PEM private key */
	unsigned tls_min_version; /* enum cfg_tls_version */
	char *tls_ca_file;        /* CAs for verifying next hops ("" = system store) */

	/* [auth] */
	char *auth_users;           /* users file: name:crypt(3) hash a line ("" = none) */
	bool auth_require_tls;      /* AUTH, LOGIN, USER/PASS only over TLS */
	uint32_t auth_max_failures; /* bad passwords per client address per minute */

	/* [mailbox] */
	char *mailbox_users;           /* who may read the bounce mailbox ("" = all) */
	uint32_t mailbox_max_messages; /* oldest expunged beyond this */
	uint64_t mailbox_max_age_ms;

	/* [submission] */
	struct climit_net *networks; /* [submission] networks */
	unsigned nnetworks;
	uint64_t max_message_size; /* bytes, announced in SIZE */
	uint32_t max_recipients;   /* RCPTs per message */
	uint32_t max_errors;       /* bad commands before 421 */
	uint64_t idle_timeout_ms;  /* server-side command timeout */
	uint32_t max_line_length;  /* text line limit, CRLF included */
	uint32_t max_clients;      /* concurrent submission sessions per shard */

	/* [api] */
	char **api_keys;          /* bearer tokens, in the order written */
	char **api_key_names;     /* per key: NAME, or "#N" for a bare TOKEN (N: its place) */
	unsigned *api_key_scopes; /* per key: CFG_API_* bits (a bare TOKEN: CFG_API_ALL) */
	unsigned napi_keys;
	unsigned api_keys_line;       /* where keys was set (0: never) */
	bool api_tls;                 /* HTTPS with the [tls] certificate */
	uint64_t api_max_request;     /* HTTP request body limit */
	uint32_t api_max_batch;       /* messages per batch request */
	uint64_t api_idle_timeout_ms; /* keep-alive idle time */
	uint32_t api_max_clients;     /* concurrent HTTP sessions per shard */

	/* [limits]: per-client limits on every listener */
	struct climit_config limits;

	/* [dns] */
	char *dns_servers;            /* "" = /etc/resolv.conf */
	uint64_t dns_max_ttl_ms;      /* answers are cached at most this long */
	uint64_t dns_negative_ttl_ms; /* failures are cached this long */
	uint32_t dns_cache_size;      /* cache entries per shard */
	uint64_t dns_timeout_ms;      /* per try */
	uint32_t dns_tries;

	/* [queue] */
	uint64_t *retry_ms; /* delays between attempts; the last repeats */
	unsigned nretry;
	uint64_t max_age_ms;   /* then the recipient bounces */
	char *bounce_domain;   /* VERP return-path domain, "" = off */
	uint64_t max_size;     /* spool size limit (LMDB map size) */
	uint64_t min_free;     /* refuse new mail below this much free disk */
	uint64_t keep_done_ms; /* how long finished messages' status is kept */
	bool suppress;         /* hard bounces and complaints suppress later mail */

	/* [webhook] */
	char *webhook_url, *webhook_events, *webhook_secret;
	uint32_t webhook_event_mask; /* SPOOL_EV_BIT()s of webhook_events */
	uint32_t webhook_batch;
	uint32_t webhook_max_backlog;

	/* [cluster] */
	char *cluster_redis, *cluster_node;
	uint64_t cluster_lease_ms;

	/* [dkim DOMAIN] */
	struct cfg_dkim *dkim;
	unsigned ndkim;

	/* [domain *] and [domain NAME] */
	struct cfg_domain defaults;
	struct cfg_domain *domains;
	unsigned ndomains;

	bool given[CFG_MAX_KEYS]; /* which rows of the key table the file set */
};

/* config_load - parse and validate path. On error returns NULL and writes
 * "path:line: reason" (or "path: reason") into err. Caller frees with
 * config_free. */
struct config *config_load(const char *path, char *err, size_t errlen);
/* config_free - release a config (NULL is fine). */
void config_free(struct config *cfg);
/* config_domain - the settings for a domain (lower-case): its own section
 * merged over [domain *], or the defaults. Lives as long as cfg. */
const struct cfg_domain *config_domain(const struct config *cfg, const char *domain);
/* config_net_allowed - whether a peer address is inside [submission] networks. */
bool config_net_allowed(const struct config *cfg, const struct sockaddr *sa);
/* config_parse_addr - "host:port" / "[v6]:port" into a; false on bad syntax. */
bool config_parse_addr(const char *s, struct cfg_addr *a);
/* config_log_pending - one warning per configured key whose feature is not
 * built yet (INTERFACE.md: every listed key is accepted from the start),
 * and for settings that do nothing useful together (a bounce MX without a
 * bounce domain). */
void config_log_pending(const struct config *cfg);
/* config_warn_fn - one warning for config_warnings: the line of cfg->path
 * it is about (0: none) and what, e.g. "[domain a.example] ehlo 'mail' has
 * no dot: ...". */
typedef void (*config_warn_fn)(void *arg, unsigned line, const char *text);
/* config_warnings - call warn once for each setting that works but is
 * probably a mistake: an ehlo that is not a fully qualified domain name, a
 * static route no source address can reach. Returns how many.
 * config_ref_new collects them (check-config prints them, serve logs
 * them at start-up and on reload). */
unsigned config_warnings(const struct config *cfg, config_warn_fn warn, void *arg);
/* config_parse_sources - d->source (checked when it was set) into
 * d->sources (config_check.c). */
void config_parse_sources(struct cfg_domain *d);
/* config_ehlo_problem - why name is a poor EHLO name (not a fully qualified
 * domain name: no dot, bad syntax, an address), or NULL when it is fine.
 * Pure; the text is static. */
const char *config_ehlo_problem(const char *name);
/* config_check_sources - bind() a socket once to each distinct [domain]
 * source address (conn_bind_source: no port is taken), so that an address
 * this machine does not have stops start-up (and a reload, and
 * check-config) instead of deferring mail later. false and "FILE:LINE:
 * reason" in err for the first that cannot be bound. */
bool config_check_sources(const struct config *cfg, char *err, size_t errlen);
/* config_addr_loopback - a is a loopback address (127.0.0.0/8, ::1,
 * ::ffff:127.0.0.0/104); a wildcard or a name is not. */
bool config_addr_loopback(const struct cfg_addr *a);
/* config_api_scope_name - "submit", "read" or "admin" for a key's scope
 * bits (anything with CFG_API_ADMIN is "admin"). Static text. */
const char *config_api_scope_name(unsigned scopes);
/* config_shards - the effective shard count (resolves 0 to the core count). */
unsigned config_shards(const struct config *cfg);
/* config_has_tls - [tls] names a certificate and a key. */
bool config_has_tls(const struct config *cfg);
/* config_tls_policy_name - "opportunistic", "required", "verify", "off". */
const char *config_tls_policy_name(unsigned policy);

/* config_check_tls - [tls] is whole, and present wherever TLS is needed
 * (config_check.c; config_load calls it). False with a reason in err. */
bool config_check_tls(const struct config *c, char *err, size_t errlen);
/* config_check_keys - no short API key on an API beyond loopback. */
bool config_check_keys(const struct config *c, char *err, size_t errlen);

#endif
