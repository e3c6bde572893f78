/* imap_impl.h - what the IMAP server's files share (private to them):
 * imap.c (sessions, input, replies, long commands in slices), imap_auth.c
 * (CAPABILITY, STARTTLS, LOGIN, AUTHENTICATE), imap_mbox.c (the mailbox as
 * sessions see it: SELECT, EXAMINE, LIST, STATUS, updates, IDLE, CLOSE,
 * EXPUNGE), imap_msgs.c (FETCH, STORE, SEARCH, UID).
 *
 * A session's life: RFC 3501's states (enum imap_state) and, inside them,
 * what the session waits for (enum imap_wait). A command is read whole
 * (literals included) into s->cmd and parsed in place; its tag stays valid
 * until it is answered. While the session waits for a password check, the
 * spool writer or its own output, it reads no further command; input that
 * piles up meanwhile past IMAP_PIPELINE_MAX ends the session.
 */
#ifndef RP_IMAP_IMPL_H
#define RP_IMAP_IMPL_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "base/conn.h"
#include "base/list.h"
#include "imap.h"
#include "imap_fetch.h"
#include "imap_parse.h"
#include "imap_search.h"

#define IMAP_PIPELINE_MAX (1u << 20) /* unread input while busy: then BYE */
#define IMAP_BAD_MAX      20         /* BAD responses in a session: then BYE */
#define IMAP_OUT_HIGH     (4u << 20) /* queued output that pauses a long command */
#define IMAP_SLICE_NS     2000000    /* a long command's slice of loop time */

/* The mailbox as read at one generation: immutable once built, shared by
 * the server (its current one) and the views that are exactly it. */
struct imap_snap {
	unsigned refs;  /* the server's while current, and each sharing view's */
	uint64_t gen;   /* spool_mbox_generation when read */
	uint32_t *uids; /* increasing */
	uint8_t *flags; /* MBOX_* of each */
	uint32_t n, cap;
	uint32_t uidvalidity, uidnext;
};

struct imap_server {
	struct mailbox_params p;
	struct rp_list sessions;
	unsigned nsessions;
	bool shutting_down;
	struct imap_snap *snap; /* the current snapshot (NULL before the first) */
	/* The last update computed for a view that was exactly a snapshot:
	 * every other view that is diff_from becomes diff_to with these bytes
	 * (the IDLE sessions woken by one change cost one comparison). */
	struct imap_snap *diff_from, *diff_to;
	bool diff_gone; /* it announces expunges (only for who may hear them) */
	struct buf diff;
	struct climit_log limit_log;     /* budget of cut-off log lines */
	uint64_t limits[CLIMIT_REASONS]; /* clients refused, slowed or cut off */
};

enum imap_state {
	IMAP_NOTAUTH,  /* greeted, not logged in */
	IMAP_AUTH,     /* logged in, no mailbox selected */
	IMAP_SELECTED, /* INBOX selected (or examined) */
	IMAP_LOGOUT,   /* saying goodbye */
};

enum imap_wait {
	IW_NONE,      /* reading commands */
	IW_AUTH_LINE, /* AUTHENTICATE sent "+": the client's response line comes */
	IW_CHECK,     /* a password check, or the delay after a failed one */
	IW_SPOOL,     /* a flag change or expunge with the spool writer */
	IW_JOB,       /* a long command running in slices */
	IW_IDLE,      /* IDLE: updates go out until "DONE" */
};

/* The session's idea of the mailbox: sequence number i + 1 is uids[i].
 * Most of the time it is exactly a snapshot, shared (uids and flags point
 * into it, read-only): an idle session costs no copy of the mailbox. It
 * gets arrays of its own only while it must differ: an expunge it may not
 * announce yet, or flags it has told the client before the snapshot
 * caught up (imap_view_set_flags). */
struct imap_view {
	struct imap_snap *shared; /* uids and flags are this snapshot's, or NULL */
	uint32_t *uids;
	uint8_t *flags;    /* MBOX_* as last told to the client; VIEW_GONE marks an
	                    * expunge not yet announced */
	uint32_t n, cap;   /* cap: of the arrays of its own */
	uint32_t uid_last; /* the highest UID ever in the view: newer is new mail */
	uint64_t gen;      /* the snapshot generation last compared with */
	bool readonly;     /* EXAMINE */
	bool gone;         /* some entry is VIEW_GONE */
};

#define VIEW_GONE 0x80u

enum imap_job_kind {
	JOB_FETCH,
	JOB_STORE, /* the FETCH responses after a STORE */
	JOB_SEARCH,
};

/* A FETCH, STORE or SEARCH over a set of messages, run in slices. */
struct imap_job {
	enum imap_job_kind kind;
	bool uid;               /* a UID command: UIDs in the answers */
	bool set_uid;           /* the set holds UIDs (else sequence numbers) */
	bool silent;            /* STORE .SILENT */
	bool expunge_ok;        /* EXPUNGE may be announced at the end */
	struct imap_seqset set; /* resolved */
	unsigned ri;            /* cursor: the range, */
	uint32_t idx;           /* and the next view index in it */
	bool started;           /* idx set for range ri */
	struct imap_fetch fetch;
	struct imap_search search;
	struct imap_fetch_scratch *sc; /* FETCH scratch (allocated) */
	uint8_t store_set, store_clear;
};

struct imap_session {
	struct conn conn;
	struct imap_server *srv;
	struct rp_list link;
	struct loop_timer timer; /* autologout */
	struct loop_timer delay; /* a failed login's answer; a paused long command */
	struct loop_defer slice; /* the next slice of a long command */
	enum imap_state state;
	enum imap_wait wait;
	struct imap_frame frame; /* the command being framed in conn.in */
	struct buf cmd;          /* the command being run, parsed in place */
	struct imap_str tag;     /* its tag (in cmd); n == 0 when none */
	struct imap_view view;
	struct imap_job *job; /* IW_JOB */
	struct sockaddr_storage peer_ss;
	struct climit_session lim; /* [limits]: its connection, its command rate */
	uint64_t start_ms;         /* connected (login_timeout) */
	uint64_t line_start_ms;    /* a command began coming (0: none waits) */
	char peer[64];
	char *user;        /* logged in as (allocated), NULL before */
	unsigned bad;      /* BAD responses so far */
	unsigned inflight; /* checks and spool requests that point here */
	bool tls, implicit_tls;
	bool released;     /* the conn is gone: free when nothing is in flight */
	bool processing;   /* inside the input loop */
	bool stop_reading; /* STARTTLS: what was read is gone */
	bool skip_line;    /* discarding the rest of a line too long */
};

/* ---- imap.c ------------------------------------------------------------- */

/* imap_cfg - the server's current settings. */
static inline const struct mailbox_config *imap_cfg(const struct imap_session *s)
{
	return s->srv->p.cfg;
}

/* imap_out - the output buffer (call imap_flush after writing). */
struct buf *imap_out(struct imap_session *s);
/* imap_flush - send what was written at the end of this batch. */
void imap_flush(struct imap_session *s);
/* imap_untagged - "* text" CRLF. */
RP_PRINTF(2, 3) void imap_untagged(struct imap_session *s, const char *fmt, ...);
/* imap_done - the tagged response "tag text" (e.g. "OK ..."): the command
 * is over; the next one is read. */
RP_PRINTF(2, 3) void imap_done(struct imap_session *s, const char *fmt, ...);
/* imap_bad - a tagged BAD, counted: too many end the session. */
RP_PRINTF(2, 3) void imap_bad(struct imap_session *s, const char *fmt, ...);
/* imap_bye - "* BYE text" and close once it is sent. */
void imap_bye(struct imap_session *s, const char *text);
/* imap_set_state / imap_set_wait - transitions (logged at debug). */
void imap_set_state(struct imap_session *s, enum imap_state st);
void imap_set_wait(struct imap_session *s, enum imap_wait w);
/* imap_resume - after a wait: read the next commands. */
void imap_resume(struct imap_session *s);
/* imap_job_start - run s->job in slices (IW_JOB) until imap_job_step says
 * it is finished. */
void imap_job_start(struct imap_session *s);
/* imap_request_done - a check or spool request that pointed at s is back:
 * false when the session is gone (then it may have been freed). */
bool imap_request_done(struct imap_session *s);

/* ---- imap_auth.c -------------------------------------------------------- */

/* imap_capability - the capability list for the session's state. */
void imap_capability(struct imap_session *s, struct buf *out);
void imap_cmd_capability(struct imap_session *s, struct imap_parser *ps);
void imap_cmd_starttls(struct imap_session *s, struct imap_parser *ps);
void imap_cmd_login(struct imap_session *s, struct imap_parser *ps);
void imap_cmd_authenticate(struct imap_session *s, struct imap_parser *ps);
/* imap_auth_line - the response line to AUTHENTICATE's "+". */
void imap_auth_line(struct imap_session *s, char *line, size_t len);
/* imap_tls_ready - the conn's TLS handshake finished. */
void imap_tls_ready(struct conn *c);

/* ---- imap_mbox.c -------------------------------------------------------- */

/* imap_snap_get - the mailbox now (rebuilt if stale); NULL when the spool
 * cannot be read. Not inside a read transaction of the shard's reader. */
const struct imap_snap *imap_snap_get(struct imap_server *srv);
/* imap_snap_free - drop the server's reference to its snapshot. */
void imap_snap_free(struct imap_server *srv);
/* imap_view_set_flags - the client was told entry idx has flags (a copy of
 * its own when the view was shared and they differ). */
void imap_view_set_flags(struct imap_view *v, uint32_t idx, uint8_t flags);
/* imap_sync - tell the client what changed since it last heard (new
 * messages, flags; expunges only when expunge_ok, RFC 3501 7.4.1). */
void imap_sync(struct imap_session *s, bool expunge_ok);
/* imap_done_sync - imap_sync when a mailbox is selected, then imap_done. */
RP_PRINTF(3, 4) void imap_done_sync(struct imap_session *s, bool expunge_ok, const char *fmt, ...);
/* imap_view_free - forget the selected mailbox. */
void imap_view_free(struct imap_view *v);
/* imap_idle_line - a line during IDLE ("DONE" ends it). */
void imap_idle_line(struct imap_session *s, const char *line, size_t len);
/* imap_expunge_uids - expunge these UIDs (owned: freed here) with the spool
 * writer; then announce and answer (EXPUNGE), or deselect and answer
 * (close: CLOSE, silently). */
void imap_expunge_uids(struct imap_session *s, uint32_t *uids, unsigned n, bool close);
/* imap_deleted_uids - UIDs of view messages with \Deleted now (in set when
 * given); allocated, *n of them. */
uint32_t *imap_deleted_uids(struct imap_session *s, const struct imap_seqset *set, unsigned *n);
void imap_cmd_select(struct imap_session *s, struct imap_parser *ps);
void imap_cmd_examine(struct imap_session *s, struct imap_parser *ps);
void imap_cmd_list(struct imap_session *s, struct imap_parser *ps);
void imap_cmd_lsub(struct imap_session *s, struct imap_parser *ps);
void imap_cmd_status(struct imap_session *s, struct imap_parser *ps);
void imap_cmd_idle(struct imap_session *s, struct imap_parser *ps);
void imap_cmd_check(struct imap_session *s, struct imap_parser *ps);
void imap_cmd_close(struct imap_session *s, struct imap_parser *ps);
void imap_cmd_unselect(struct imap_session *s, struct imap_parser *ps);
void imap_cmd_expunge(struct imap_session *s, struct imap_parser *ps);
void imap_cmd_subscribe(struct imap_session *s, struct imap_parser *ps);
void imap_cmd_refused(struct imap_session *s, struct imap_parser *ps);

/* ---- imap_msgs.c -------------------------------------------------------- */

void imap_cmd_fetch(struct imap_session *s, struct imap_parser *ps);
void imap_cmd_store(struct imap_session *s, struct imap_parser *ps);
void imap_cmd_search(struct imap_session *s, struct imap_parser *ps);
void imap_cmd_uid(struct imap_session *s, struct imap_parser *ps);
/* imap_job_step - one slice of s->job inside a read transaction: true when
 * every message is done (then imap_job_finish answers, outside it). */
bool imap_job_step(struct imap_session *s, uint64_t deadline_ns);
/* imap_job_finish - the tagged answer of a finished job. */
void imap_job_finish(struct imap_session *s);
/* imap_job_free - release a job. */
void imap_job_free(struct imap_job *j);
/* imap_spool_write - hand the writer a flag change (MBOX_STORE) or an
 * expunge of uids (owned: freed when the reply comes); then runs on the
 * session's loop with the result, unless the session is gone. */
void imap_spool_write(struct imap_session *s, enum spool_req_type type, uint32_t *uids, unsigned n,
                      uint8_t set, uint8_t clear,
                      void (*then)(struct imap_session *s, enum spool_status st));

#endif
