/* pop3_impl.h - what the POP3 server's files share (pop3.c: the server,
 * sessions, input, timers and the state machine; pop3_auth.c: CAPA,
 * STLS, USER/PASS, AUTH PLAIN, the maildrop lock and the snapshot taken
 * at login; pop3_cmd.c: the TRANSACTION commands, multi-line replies and
 * the UPDATE state). Private to them.
 */
#ifndef RP_POP3_IMPL_H
#define RP_POP3_IMPL_H

#include <sys/socket.h>

#include "base/auth.h"
#include "base/conn.h"
#include "base/list.h"
#include "pop3.h"
#include "pop3_proto.h"

#define POP3_LINE_MAX      255          /* RFC 2449 4: a command line, CRLF included */
#define POP3_AUTH_LINE_MAX 2048         /* AUTH PLAIN and its response (RFC 5034 4) */
#define POP3_MAX_ERRORS    10           /* bad commands before the session is closed */
#define POP3_OUT_HIGH      (256u << 10) /* stop producing output above this */
#define POP3_OUT_LOW       (64u << 10)  /* ... and go on below this */
#define POP3_PAUSE_INPUT   (64u << 10)  /* unread input kept while busy */
#define POP3_DRAIN_POLL_MS 10           /* how often a blocked writer looks again */
#define POP3_KEEP_BUF      4096         /* buffer memory an idle session keeps */
#define POP3_LINGER_MS     10000        /* a last reply the client does not read: give up */

/* The states of RFC 1939, and the waits between them. */
enum pop3_state {
	P3_AUTHORIZATION, /* greeting sent: CAPA, STLS, USER/PASS, AUTH, QUIT */
	P3_AUTH_WAIT,     /* a password check (or its failure delay): reads nothing */
	P3_LOADING,       /* logged in, taking the maildrop snapshot: reads nothing */
	P3_TRANSACTION,   /* the maildrop is ours */
	P3_UPDATE,        /* QUIT: the deletions are with the spool writer */
	P3_CLOSING,       /* a last reply, then the close */
	P3_NSTATES,
};

/* A multi-line reply produced in slices (output flow control). */
enum pop3_xfer_kind {
	P3_XFER_NONE,
	P3_XFER_LIST, /* LIST without argument: idx is the next message */
	P3_XFER_UIDL, /* UIDL without argument */
	P3_XFER_MSG,  /* RETR or TOP of msgs[idx] */
};

/* One message of the snapshot taken at login. */
struct pop3_msg {
	uint64_t size; /* octets as sent (pop3_msg_size) */
	uint32_t uid;  /* its UID in the store */
	bool deleted;  /* DELE in this session */
	bool seen;     /* MBOX_SEEN when the snapshot was taken (or RETR since) */
};

struct pop3_server {
	struct mailbox_params p;
	struct rp_list sessions; /* every session, for shutdown */
	unsigned nsessions;
	struct climit_log limit_log;     /* budget of cut-off log lines */
	uint64_t limits[CLIMIT_REASONS]; /* clients refused, slowed or cut off */
};

struct pop3_session {
	struct conn conn;
	struct pop3_server *srv;
	struct rp_list link; /* on srv->sessions */
	enum pop3_state state;
	struct loop_timer idle;       /* the autologout timer (RFC 1939 3) */
	struct loop_timer fail_timer; /* the delayed -ERR of a failed login */
	struct loop_timer drain;      /* output over POP3_OUT_HIGH: look again soon */
	struct loop_timer linger;     /* closing: the last reply's deadline */
	struct loop_defer load;       /* the next slice of the snapshot */
	char peer[64];                /* "[ip]:port" */
	struct sockaddr_storage peer_ss;
	struct climit_session lim;    /* [limits]: its connection, its command rate */
	uint64_t start_ms;            /* connected (login_timeout) */
	uint64_t line_start_ms;       /* a command line began coming (0: none waits) */
	char user[AUTH_NAME_MAX + 1]; /* USER's name, then the logged-in user */
	const char *mech;             /* how the user logged in: "USER" or "PLAIN" */
	char tls_desc[80];
	bool have_user;      /* USER was accepted; PASS may follow */
	bool implicit_tls;   /* accepted on pop3s */
	bool tls;            /* the handshake completed */
	bool stls_now;       /* STLS switched: the rest of this input is gone */
	bool sasl_plain;     /* AUTH PLAIN sent "+ ": the next line is the response */
	bool skip_line;      /* discarding an over-long line */
	bool auth_inflight;  /* an auth_req is with the checker */
	bool spool_inflight; /* the QUIT's expunge or sync is with the writer */
	bool locked;         /* this session holds the maildrop */
	bool released;       /* the conn is gone */
	bool shutdown;       /* say goodbye once the current wait ends */
	unsigned errors;     /* bad commands so far */
	size_t skipped;      /* bytes of an over-long line discarded so far */

	/* The maildrop (LOADING, TRANSACTION, UPDATE). */
	struct pop3_msg *msgs;
	uint32_t nmsgs, cap;
	uint32_t uidvalidity;
	uint32_t load_from; /* LOADING: the next UID to read */

	/* The multi-line reply in progress. */
	enum pop3_xfer_kind xfer;
	uint32_t xfer_idx;
	struct pop3_emit emit; /* P3_XFER_MSG */
};

/* ---- pop3.c ------------------------------------------------------------- */

/* pop3_cfg - the settings the session runs under (the server's current ones). */
const struct mailbox_config *pop3_cfg(const struct pop3_session *s);
/* pop3_set_state - move to st (logged at debug). */
void pop3_set_state(struct pop3_session *s, enum pop3_state st);
/* pop3_reply - one reply line (CRLF added). */
RP_PRINTF(2, 3) void pop3_reply(struct pop3_session *s, const char *fmt, ...);
/* pop3_error - an -ERR to a bad command (counted: too many close the session). */
RP_PRINTF(2, 3) void pop3_error(struct pop3_session *s, const char *fmt, ...);
/* pop3_close_with - a last line, then close once it is sent (or, when
 * the client does not read it, after POP3_LINGER_MS). */
void pop3_close_with(struct pop3_session *s, const char *text);
/* pop3_resume - go on with the input after a wait. */
void pop3_resume(struct pop3_session *s);
/* pop3_busy - whether commands must wait (a wait state, a reply in slices,
 * too much output queued). */
bool pop3_busy(const struct pop3_session *s);
/* pop3_drain_later - look at the output again in a moment (POP3_DRAIN_POLL_MS). */
void pop3_drain_later(struct pop3_session *s);
/* pop3_user_quoted - the logged-in user as a quoted log value ("alice"). */
#define POP3_QUOTED_MAX (AUTH_NAME_MAX * 2 + 8)
void pop3_user_quoted(const struct pop3_session *s, char out[POP3_QUOTED_MAX]);
/* pop3_may_free - the conn is gone and nothing is in flight: free the
 * session (true), or it waits for what is (false). */
bool pop3_may_free(struct pop3_session *s);

/* ---- pop3_auth.c -------------------------------------------------------- */

/* pop3_cmd_capa - CAPA (RFC 2449), in any state. */
void pop3_cmd_capa(struct pop3_session *s);
/* pop3_auth_command - USER, PASS, APOP, AUTH, STLS in AUTHORIZATION. */
void pop3_auth_command(struct pop3_session *s, const struct pop3_cmd *c);
/* pop3_sasl_response - the line after "+ " of AUTH PLAIN. */
void pop3_sasl_response(struct pop3_session *s, const char *line, size_t len);
/* pop3_tls_ready - the handshake completed (conn ops->tls_ready). */
void pop3_tls_ready(struct conn *c);
/* pop3_unlock - give the maildrop back (no-op when not held). */
void pop3_unlock(struct pop3_session *s);
/* pop3_login_stop - shutdown during a failure delay: end it. */
void pop3_login_stop(struct pop3_session *s);

/* ---- pop3_cmd.c --------------------------------------------------------- */

/* pop3_transaction_command - a command in TRANSACTION. */
void pop3_transaction_command(struct pop3_session *s, const struct pop3_cmd *c);
/* pop3_xfer_fill - produce more of the reply in progress (if any) while
 * the output is below POP3_OUT_HIGH. */
void pop3_xfer_fill(struct pop3_session *s);
/* pop3_enter_transaction - the snapshot is complete: say so. */
void pop3_enter_transaction(struct pop3_session *s);

#endif
