/* smtp_server_impl.h - what the SMTP server's files share (smtp_server.c:
 * sessions, input, content and the commit; smtp_server_cmd.c: the
 * commands; smtp_server_auth.c: STARTTLS and AUTH). Private to them.
 */
#ifndef RP_SMTP_SERVER_IMPL_H
#define RP_SMTP_SERVER_IMPL_H

#include "base/auth.h"
#include "base/climit.h"
#include "base/conn.h"
#include "smtp_cmd.h"
#include "smtp_data.h"
#include "smtp_server.h"

#define CMD_LINE_MAX      512 /* RFC 5321 4.5.3.1.4, CRLF included */
#define PAUSE_INPUT_BYTES (4u << 20)
#define KEEP_MSG_BYTES    (256u * 1024)
#define AUTH_LINE_MAX     4096 /* AUTH lines carry base64 credentials (RFC 4954 4) */

enum srv_state {
	SS_GREETING, /* banner sent, no EHLO/HELO yet */
	SS_IDLE,     /* EHLO/HELO done, no transaction */
	SS_MAIL,     /* MAIL accepted */
	SS_RCPT,     /* at least one RCPT accepted */
	SS_DATA,     /* reading DATA content */
	SS_BDAT,     /* reading a BDAT chunk */
	SS_COMMIT,   /* waiting for the spool */
	SS_CLOSING,  /* closing after a final reply */
	SS_AUTH,     /* waiting for a password check (or its failure delay) */
	SS_NSTATES,
};

/* A recipient the bounce MX accepted. */
struct inbound_rcpt {
	uint64_t msgid; /* the recipient a VERP address names */
	uint32_t idx;
	bool verp; /* false: postmaster@ or abuse@ */
};

struct smtpd {
	struct loop *loop;
	bool inbound; /* the bounce MX, not submission */
	struct spool *spool;
	const struct config *cfg;
	struct tls_ctx *tls;             /* the generation's server context, NULL = no TLS */
	struct auth_users *users;        /* the generation's users, NULL = no AUTH */
	struct auth_checker *checker;    /* password checks off the loop */
	struct auth_limiter *limiter;    /* failed logins per address */
	struct workers *signers;         /* DKIM signing threads */
	struct dkim_keys *dkim;          /* the generation's keys, or NULL */
	struct spool_reader *reader;     /* bounce MX: the loop's spool reader */
	struct auth_limiter *refused;    /* bounce MX: refused recipients per address */
	struct auth_limiter *flood;      /* bounce MX: reports per address */
	struct climit *climit;           /* connections per client address (all shards) */
	struct climit_log limit_log;     /* budget of cut-off log lines */
	uint64_t limits[CLIMIT_REASONS]; /* clients refused, slowed or cut off */
	submit_route_fn route;
	void *route_ctx;
	void (*session_gone)(void *arg);
	void *arg;
	struct rp_list sessions; /* every session, for shutdown */
	unsigned nsessions;
	uint64_t accepted_sessions; /* since start */
	uint64_t messages;          /* messages accepted */
	uint64_t rejected;          /* transactions refused at the end */
	uint64_t suppressed;        /* recipients on the suppression list at submission */
	uint64_t reports;           /* bounce MX: reports stored */
	uint64_t reports_matched;   /* ... that named one of our recipients */
	uint64_t tls_sessions;      /* sessions that completed a TLS handshake */
	uint64_t tls_failures;      /* handshakes that failed */
	uint64_t auth_ok, auth_failed;
};

/* Where an AUTH dialogue is (RFC 4954). */
enum srv_auth_step {
	AUTH_NONE,       /* no AUTH in progress: lines are commands */
	AUTH_PLAIN,      /* 334 sent, the PLAIN response comes */
	AUTH_LOGIN_USER, /* 334 "Username:" sent */
	AUTH_LOGIN_PASS, /* 334 "Password:" sent */
};

struct srv_session {
	struct conn conn;
	struct smtpd *srv;
	struct rp_list link; /* on srv->sessions */
	enum srv_state state;
	struct loop_timer timer;      /* idle timeout */
	struct loop_timer fail_timer; /* the delayed 535 of a failed AUTH */
	char peer[64];                /* "[ip]:port" */
	char peer_ip[56];             /* for Received: "[ip]" or "[IPv6:..]" */
	char helo[128];
	bool esmtp;
	bool relay_ok;        /* inside [submission] networks */
	bool skip_line;       /* discarding an over-long command line */
	size_t skipped;       /* bytes of it discarded so far */
	bool commit_inflight; /* req is with the spool writer */
	bool released;        /* the conn is gone */
	bool shutdown;        /* say 421 after the commit */
	bool implicit_tls;    /* accepted on the submissions (TLS) port */
	bool tls;             /* TLS is up */
	bool starttls_now;    /* STARTTLS switched: the rest of this input is gone */
	bool auth_inflight;   /* auth_req is with the checker */
	enum srv_auth_step auth_step;
	const char *auth_mech;              /* "PLAIN" or "LOGIN" while in progress */
	char login_user[AUTH_NAME_MAX + 1]; /* AUTH LOGIN's user while its password comes */
	char user[AUTH_NAME_MAX + 1];       /* the authenticated user, "" = none */
	char tls_desc[80];                  /* "TLSv1.3/TLS_AES_256_GCM_SHA384" */
	struct sockaddr_storage peer_ss;    /* the client, for the failure limit */
	struct inbound_rcpt *inb;           /* bounce MX: the accepted recipients */
	unsigned ninb, inb_cap;
	unsigned errors;
	unsigned transactions;
	struct climit_session lim; /* [limits]: its connection, its command rate */
	uint64_t line_start_ms;    /* a command line began coming (0: none waits) */
	uint64_t data_start_ms;    /* the transaction's DATA or first BDAT (0: none) */
	uint64_t data_bytes;       /* of its content so far */

	/* The transaction. */
	struct submission sub; /* envelope, recipients, the commit */
	bool utf8;             /* MAIL ... SMTPUTF8 */
	unsigned rejected_rcpts;
	struct buf msg; /* content (normalised) */
	struct smtp_data_rx rx;
	bool bdat_used;
	bool bdat_last;
	enum srv_state bdat_prev; /* state before the chunk */
	const char *bdat_error;   /* reply for the chunk being skipped */
	bool msg_nomem;           /* no memory for the content: read on, store none, 452 */
	uint64_t bdat_left;
	struct smtp_chunk_state chunk;
};

/* srv_cfg - the config the session runs under (the server's current one). */
const struct config *srv_cfg(const struct srv_session *s);
/* srv_set_state - move to st (logged at debug). */
void srv_set_state(struct srv_session *s, enum srv_state st);
/* srv_reply - one reply line (CRLF added). */
void srv_reply(struct srv_session *s, const char *text);
/* srv_close_with - a last reply, then close once it is sent. */
void srv_close_with(struct srv_session *s, const char *text);
/* srv_count_error - one more bad command; too many of them end the session. */
void srv_count_error(struct srv_session *s);
/* srv_error - a 4xx/5xx reply to a bad command (counted). */
void srv_error(struct srv_session *s, const char *text);
/* srv_tx_reset - forget the transaction (RSET, after a message, EHLO). */
void srv_tx_reset(struct srv_session *s);
/* srv_command - run one command line (without its CRLF). */
void srv_command(struct srv_session *s, const char *line, size_t len);
/* srv_commit - the content is complete (flags SMTP_DATA_*): check it and
 * hand the message to the spool; the reply comes when it is durable. */
void srv_commit(struct srv_session *s, unsigned content_flags);
/* srv_limit - count a client limit that struck s and log it (within the
 * server's log budget). */
void srv_limit(struct srv_session *s, enum climit_reason r, const char *detail);
/* srv_resume - go on with the input after a wait (commit, AUTH check). */
void srv_resume(struct srv_session *s);
/* srv_may_free - the session is gone and nothing is in flight: free it
 * (true), or it waits for what is (false). */
bool srv_may_free(struct srv_session *s);

/* ---- smtp_server_inbound.c --------------------------------------------- */

/* srv_inbound_rcpt - RCPT at the bounce MX: true when addr is one it takes
 * (then the caller records it and says 250); false after a 550 reply. */
bool srv_inbound_rcpt(struct srv_session *s, const char *addr, size_t len);
/* srv_inbound_refuse - the reply that turns a new bounce MX client away
 * (too many refused recipients or reports from its address lately), or
 * NULL to let it in. */
const char *srv_inbound_refuse(struct srv_session *s);
/* srv_inbound_commit - a report is complete: read it, store it with what
 * it says; the reply comes when that is durable. with and using are the
 * Received: protocol and TLS words (using may be NULL). */
void srv_inbound_commit(struct srv_session *s, const char *with, const char *using);

/* ---- smtp_server_auth.c ------------------------------------------------ */

/* srv_ehlo_extensions - the STARTTLS and AUTH lines EHLO offers now. */
void srv_ehlo_extensions(struct srv_session *s, struct buf *out);
/* srv_cmd_starttls - STARTTLS (RFC 3207). */
void srv_cmd_starttls(struct srv_session *s, const struct smtp_cmd *c);
/* srv_cmd_auth - AUTH PLAIN / LOGIN (RFC 4954, 4616). */
void srv_cmd_auth(struct srv_session *s, const struct smtp_cmd *c);
/* srv_auth_response - a line of an AUTH dialogue (auth_step != AUTH_NONE). */
void srv_auth_response(struct srv_session *s, const char *line, size_t len);
/* srv_tls_ready - the handshake completed (conn ops->tls_ready). */
void srv_tls_ready(struct conn *c);

#endif
