/* climit.h - per-client limits at the network edge, for every listener
 * (SMTP submission and the bounce MX, the HTTP API, IMAP, POP3).
 *
 * - Open connections per client address and listener kind, counted in one
 *   table shared by every shard (struct climit). The address is counted as
 *   the failure limiter counts it (auth_client_key: IPv4 /32, IPv6 /64).
 *   Unlike that limiter's table, which may forget an address, this one is
 *   exact: an entry lives while a connection holds it (struct
 *   climit_ticket), so its size follows the open connections.
 * - Commands per second per connection: a token bucket with a burst of
 *   twice the rate (struct climit_bucket). A session over it is slowed, not
 *   refused: its next command is read when the bucket allows (as Exim's
 *   smtp_ratelimit_* delays do), so a well-behaved pipelining client loses
 *   nothing and a flood costs one timer.
 * - Output: a session stops taking commands while its unsent output is
 *   over [limits] output_buffer (the conn stops receiving, conn.h).
 * - Slow clients: deadlines for a command line, for request headers and
 *   for message data (climit_data_deadline); the protocols apply them.
 * - Cut-off clients are logged at most CLIMIT_LOG_PER_SEC lines a second
 *   per server (struct climit_log).
 * Settings are struct climit_config ([limits] in the config file).
 */
#ifndef RP_CLIMIT_H
#define RP_CLIMIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

struct conn;
struct climit;

/* The listener kinds that connections are counted per (the implicit-TLS
 * ports count with their protocol's: submissions with submission, ...). */
enum climit_kind {
	CLIMIT_SUBMISSION, /* SMTP submission and submissions */
	CLIMIT_INBOUND,    /* the bounce MX */
	CLIMIT_API,        /* the HTTP API */
	CLIMIT_IMAP,       /* IMAP and IMAPS */
	CLIMIT_POP3,       /* POP3 and POP3S */
	CLIMIT_KINDS,
};

/* Why a client was refused, slowed or cut off (the metrics' reason label). */
enum climit_reason {
	CLIMIT_CONNECTIONS, /* refused: too many connections from its address */
	CLIMIT_RATE,        /* slowed: over commands_per_second (once per connection) */
	CLIMIT_SLOW,        /* cut off: a command line, headers or data too slow */
	CLIMIT_OUTPUT,      /* reading stopped: its unread output passed the bound (once
	                     * per connection) */
	CLIMIT_IDLE,        /* cut off: idle, or not logged in, for too long */
	CLIMIT_REASONS,
};

extern const char *const climit_kind_names[CLIMIT_KINDS];
extern const char *const climit_reason_names[CLIMIT_REASONS];

#define CLIMIT_LOG_PER_SEC 10 /* cut-off lines logged per second and server */

/* A network: exempt from the per-client limits, or allowed to relay
 * ([submission] networks). */
struct climit_net {
	int family;             /* AF_INET or AF_INET6 */
	unsigned char addr[16]; /* network address */
	unsigned prefix;        /* prefix length */
};

/* [limits]: plain data, part of the config (immutable once loaded). */
struct climit_config {
	uint32_t connections_per_client; /* open connections per client address and
	                                  * listener kind; 0 = no limit */
	uint32_t commands_per_second;    /* per connection, burst 2x; 0 = no limit */
	uint64_t command_timeout_ms;     /* a command line complete within this of its
	                                  * first byte (SMTP, IMAP, POP3) */
	uint64_t header_timeout_ms;      /* HTTP: request line and headers, likewise */
	uint64_t data_timeout_ms;        /* SMTP DATA/BDAT and HTTP bodies: this long, */
	uint64_t min_data_rate;          /* plus a second per this many bytes that came
	                                  * (bytes per second; 0 = no extension) */
	uint64_t login_timeout_ms;       /* IMAP, POP3: logged in within this of connecting */
	uint64_t output_buffer;          /* unsent output at which a session stops reading */
	struct climit_net *exempt;       /* clients exempt from connections_per_client
	                                  * and commands_per_second (owned by the config) */
	unsigned nexempt;
};

/* climit_config_defaults - the production defaults (no exempt network). */
void climit_config_defaults(struct climit_config *cc);
/* climit_nets_match - whether sa is inside one of nets[0..n) (a v4-mapped
 * IPv6 address matches both as IPv4 and as IPv6). */
bool climit_nets_match(const struct climit_net *nets, unsigned n, const struct sockaddr *sa);
/* climit_exempt - whether sa is inside one of cc's exempt networks. */
bool climit_exempt(const struct climit_config *cc, const struct sockaddr *sa);
/* climit_data_deadline - when data that began at start_ms and has brought
 * bytes so far must be complete: data_timeout plus a second per
 * min_data_rate bytes. Pure. */
uint64_t climit_data_deadline(const struct climit_config *cc, uint64_t start_ms, uint64_t bytes);

/* ---- open connections per address (every shard) ------------------------ */

/* What one connection holds in the table (zeroed: nothing). */
struct climit_ticket {
	unsigned char key[16]; /* auth_client_key */
	uint8_t family;        /* 0: holds nothing */
	uint8_t kind;          /* enum climit_kind */
};

/* climit_new - an empty table (one per process, shared by every shard). */
struct climit *climit_new(void);
/* climit_free - every ticket must have been returned. NULL is fine. */
void climit_free(struct climit *cl);
/* climit_conn_open - a connection from sa on a listener of kind. false when
 * sa already has cc->connections_per_client open there (and is not exempt):
 * refuse it; nothing is counted then. Otherwise it is counted and t holds
 * it until climit_conn_close. Addresses of other families are not counted. */
bool climit_conn_open(struct climit *cl, const struct climit_config *cc, enum climit_kind kind,
                      const struct sockaddr *sa, struct climit_ticket *t);
/* climit_conn_close - the connection ended: give t back (no-op when it holds
 * nothing; t holds nothing after). */
void climit_conn_close(struct climit *cl, struct climit_ticket *t);
/* climit_conn_count - connections open from sa's address on kind (tests). */
unsigned climit_conn_count(struct climit *cl, enum climit_kind kind, const struct sockaddr *sa);
/* climit_entries - addresses in the table (tests). */
unsigned climit_entries(struct climit *cl);

/* ---- commands per second per connection ------------------------------- */

/* A token bucket; zeroed = full. */
struct climit_bucket {
	uint64_t last_ms; /* when tokens was last brought up to date; 0 = never */
	uint64_t milli;   /* tokens x 1000 */
};

/* climit_bucket_ready - refill b at rate per second (burst 2 x rate) up to
 * now_ms: whether a command may go now. When not, *wait_ms says how long
 * until one may (at least 1). rate 0 = always. Pure. */
bool climit_bucket_ready(struct climit_bucket *b, uint32_t rate, uint64_t now_ms,
                         uint64_t *wait_ms);
/* climit_bucket_take - one command went (after climit_bucket_ready). */
void climit_bucket_take(struct climit_bucket *b, uint32_t rate);

/* ---- one session ------------------------------------------------------ */

/* A session's share of the limits. Zeroed at session start. */
struct climit_session {
	struct climit_ticket ticket; /* its place in the connection table */
	struct climit_bucket bucket; /* its commands */
	bool exempt;                 /* from an exempt network: never slowed */
	uint8_t noted;               /* 1 << reason: what it was counted for already */
};

/* climit_note - true the first time s is noted for reason r (count and log
 * it then), false after. */
bool climit_note(struct climit_session *s, enum climit_reason r);
/* climit_gate - whether session s, reading from c, may start on its next
 * input now: not while c's output is over its bound (conn_out_blocked),
 * nor, when counted (a command that counts against commands_per_second),
 * while its bucket is empty (then c is throttled until it is not). Either
 * way c stops receiving and runs its data callback again once s may go on.
 * A first stop of each kind is returned in *why (to count and log), else
 * *why = CLIMIT_REASONS. A counted command that may go is taken from the
 * bucket. */
bool climit_gate(struct climit_session *s, struct conn *c, const struct climit_config *cc,
                 bool counted, uint64_t now_ms, enum climit_reason *why);

/* ---- logging ---------------------------------------------------------- */

/* A per-server budget of log lines about cut-off clients. Zeroed = fresh. */
struct climit_log {
	uint64_t second;  /* the second (now_ms / 1000) being counted */
	unsigned n;       /* lines logged in it */
	unsigned dropped; /* lines not logged since the last one that was */
};

/* climit_log_ok - whether one more line may be logged at now_ms (at most
 * CLIMIT_LOG_PER_SEC a second). When it may, *dropped says how many were
 * suppressed before it (to mention), and the count starts over. */
bool climit_log_ok(struct climit_log *l, uint64_t now_ms, unsigned *dropped);
/* climit_log_cut - one info line "PROTO PEER: client limit REASON: DETAIL"
 * (with how many were suppressed before it), within l's budget. */
void climit_log_cut(struct climit_log *l, uint64_t now_ms, const char *proto, const char *peer,
                    enum climit_reason r, const char *detail);

#endif
