/* spool.h - the durable message queue in LMDB.
 *
 * Databases (one environment under data_dir):
 *   meta    "version", ...                      -> small values
 *   msg     be64 id                             -> envelope (struct spool_msg)
 *   body    be64 id | be32 variant | be32 chunk -> message bytes
 *   rcpt    be64 id | be32 index                -> recipient (struct spool_rcpt)
 *   expire  be64 unix ms | be64 id              -> "" (finished messages to forget)
 *   mbox, mbox_meta                             -> the bounce mailbox (mbox.h)
 *   suppress lower-case address                 -> the suppression list
 *   events  be64 sequence                       -> one delivery event, a JSON object
 *
 * One writer thread owns every write transaction. Requests from any thread
 * are batched into one transaction (group commit); a batch holding a submit
 * is synced to disk before any request of it is answered, so "done" for a
 * submit means durable. Readers (one per shard) use short MVCC read
 * transactions and never block the writer.
 *
 * Message ids are 64-bit, unique and increasing (unix ms << 16 | sequence),
 * formatted as 16 hex digits (rp_id_format).
 */
#ifndef RP_SPOOL_H
#define RP_SPOOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "base/buf.h"
#include "base/mq.h"

struct spool;
struct spool_reader;

/* Recipient states, as the API reports them. */
enum spool_state {
	SPOOL_QUEUED = 0,     /* waiting for its first attempt (or in flight) */
	SPOOL_DEFERRED = 1,   /* tried, will be tried again */
	SPOOL_DELIVERED = 2,  /* final: accepted by the next hop */
	SPOOL_BOUNCED = 3,    /* final: failed, DSN generated */
	SPOOL_SUPPRESSED = 4, /* final: on the suppression list, never tried */
	SPOOL_COMPLAINED = 5, /* final: delivered, then the recipient complained */
};
#define SPOOL_STATE_FINAL(s) ((s) >= SPOOL_DELIVERED)
const char *spool_state_name(unsigned state);

/* Envelope flags. */
enum {
	MSG_F_SMTPUTF8 = 1u << 0, /* needs SMTPUTF8 downstream */
	MSG_F_8BIT = 1u << 1,     /* BODY=8BITMIME */
	MSG_F_RET_HDRS = 1u << 2, /* DSN RET=HDRS */
	MSG_F_RET_FULL = 1u << 3, /* DSN RET=FULL */
	MSG_F_BOUNCE = 1u << 4,   /* null sender: never bounce this */
	MSG_F_VARIANTS = 1u << 5, /* recipients have their own bodies */
	MSG_F_DONE = 1u << 6,     /* every recipient is final; body deleted */
};

/* DSN NOTIFY bits (RFC 3461); 0 means "not given" (FAILURE by default). */
enum {
	NOTIFY_NEVER = 1u << 0,
	NOTIFY_SUCCESS = 1u << 1,
	NOTIFY_FAILURE = 1u << 2,
	NOTIFY_DELAY = 1u << 3,
};

/* A message envelope. Decoded views point into LMDB memory and live until
 * the read transaction ends; for submits they point into the caller's
 * memory. */
struct spool_msg {
	uint64_t id;
	uint64_t submit_ms; /* unix ms when accepted */
	uint64_t done_ms;   /* when the last recipient became final, or 0 */
	uint64_t body_len;  /* bytes of the (shared) body */
	uint32_t flags;     /* MSG_F_* */
	uint32_t nrcpt;     /* recipients */
	uint32_t pending;   /* recipients not final yet */
	const char *sender; /* reverse path, "" for <> */
	size_t sender_len;
	const char *envid; /* DSN ENVID, decoded */
	size_t envid_len;
	const char *source; /* how it arrived, e.g. "smtp [127.0.0.1] helo=x" */
	size_t source_len;
	const char *submitter; /* the authenticated user (at most 255 bytes), or "" */
	size_t submitter_len;
};

/* A recipient record. */
struct spool_rcpt {
	uint64_t msgid;
	uint32_t idx;      /* index within the message */
	uint32_t variant;  /* body variant, 0 = shared body */
	uint8_t state;     /* enum spool_state */
	uint8_t notify;    /* NOTIFY_* */
	uint16_t attempts; /* delivery attempts so far */
	uint64_t next_ms;  /* unix ms of the next attempt (deferred) */
	uint64_t last_ms;  /* unix ms of the last attempt, 0 = never */
	const char *addr;  /* mailbox */
	size_t addr_len;
	const char *orcpt; /* DSN ORCPT "rfc822;addr", decoded */
	size_t orcpt_len;
	const char *response; /* last reply or failure text */
	size_t response_len;
	const char *remote; /* remote MTA of the last attempt */
	size_t remote_len;
};

/* ---- records (pure, in spool_record.c) --------------------------------- */

size_t spool_msg_size(const struct spool_msg *m);
void spool_msg_encode(const struct spool_msg *m, void *out);
bool spool_msg_decode(const void *p, size_t n, struct spool_msg *m);
size_t spool_rcpt_size(const struct spool_rcpt *r);
void spool_rcpt_encode(const struct spool_rcpt *r, void *out);
bool spool_rcpt_decode(const void *p, size_t n, struct spool_rcpt *r);

/* ---- environment ------------------------------------------------------- */

/* Delivery events for webhooks: recorded in the transaction that makes the
 * change they report (so a crash loses neither or both), read in sequence
 * order by the poster, deleted once posted. */
enum spool_ev_type {
	SPOOL_EV_ACCEPTED,   /* a recipient was taken (submission, durable) */
	SPOOL_EV_DELIVERED,  /* the next hop accepted it */
	SPOOL_EV_DEFERRED,   /* an attempt failed temporarily */
	SPOOL_EV_BOUNCED,    /* failed for good (or a bounce report came back) */
	SPOOL_EV_SUPPRESSED, /* on the suppression list at submission: never tried */
	SPOOL_EV_COMPLAINED, /* the recipient complained (a feedback report) */
	SPOOL_EV_TYPES,
};
#define SPOOL_EV_BIT(t)   (1u << (t))
#define SPOOL_EV_DEFAULTS (((1u << SPOOL_EV_TYPES) - 1) & ~SPOOL_EV_BIT(SPOOL_EV_ACCEPTED))
/* spool_ev_name - "delivered", ... */
const char *spool_ev_name(unsigned type);
/* spool_ev_mask_parse - "delivered, bounced" into SPOOL_EV_BIT()s; "" is
 * SPOOL_EV_DEFAULTS. False with the offending word in err. */
bool spool_ev_mask_parse(const char *list, uint32_t *mask, char *err, size_t errlen);

struct spool_options {
	const char *dir;            /* created if missing */
	uint64_t max_size;          /* LMDB map size: the spool's size limit */
	uint64_t min_free;          /* refuse submissions below this much free disk */
	uint64_t keep_done_ms;      /* keep finished messages' status this long */
	bool suppress;              /* recipients on the suppression list become
	                             * SPOOL_SUPPRESSED at submission */
	uint32_t mbox_max_messages; /* the bounce mailbox keeps the newest this many */
	uint64_t mbox_max_age_ms;   /* ... and none older than this (0 = no limit) */
	uint32_t events;            /* SPOOL_EV_BIT()s to record; 0 = none (no webhook) */
	uint64_t events_max;        /* backlog bound: past it the oldest events go */
	/* mbox_changed - messages were added to or removed from the mailbox, or
	 * their flags changed (the writer's thread, after the commit). */
	void (*mbox_changed)(void *arg);
	void *mbox_arg;
};

/* spool_open - open (or create) the spool and start its writer thread.
 * Returns NULL and a reason in err. */
struct spool *spool_open(const struct spool_options *o, char *err, size_t errlen);
/* spool_close - stop the writer after it has answered every request, close. */
void spool_close(struct spool *sp);
/* spool_next_id - a fresh message id (any thread). */
uint64_t spool_next_id(struct spool *sp);
/* spool_accepting - false while the disk or the spool is (nearly) full. */
bool spool_accepting(const struct spool *sp);

struct spool_usage {
	uint64_t map_size;  /* the limit */
	uint64_t used;      /* live pages (all databases) * page size */
	uint64_t extent;    /* highest page ever used * page size (file extent) */
	uint64_t file_size; /* data.mdb size on disk */
	uint64_t disk_free; /* free bytes for unprivileged users */
	uint64_t commits;   /* write transactions so far */
	uint64_t syncs;     /* syncs so far */
	uint64_t evicted;   /* finished messages forgotten early to make room */
};
/* spool_usage - numbers for stats (any thread; refreshed by the writer). */
void spool_usage(const struct spool *sp, struct spool_usage *u);

/* ---- writes (group commit on the writer thread) ------------------------ */

enum spool_req_type {
	SPOOL_REQ_SUBMIT,       /* store a new message with its recipients (durable) */
	SPOOL_REQ_UPDATE,       /* change recipients' state after attempts */
	SPOOL_REQ_SYNC,         /* answer once everything before it is durable */
	SPOOL_REQ_MBOX_PUT,     /* append a message to the bounce mailbox */
	SPOOL_REQ_MBOX_STORE,   /* change the flags of mailbox messages */
	SPOOL_REQ_MBOX_EXPUNGE, /* remove mailbox messages */
	SPOOL_REQ_SUPPRESS,     /* add an address to, or remove it from, the suppression list */
	SPOOL_REQ_INBOUND,      /* a bounce or complaint that arrived: the mailbox, the
	                         * recipients it names, the suppression list (durable) */
	SPOOL_REQ_EVENTS_DONE,  /* events up to a sequence number were posted: delete them */
	SPOOL_REQ_WARMUP,       /* warm-up counters ([domain] warmup): store them */
};

#define SPOOL_WARMUP_KEY_MAX 320 /* "SOURCE DOMAIN", plus one */

/* A warm-up counter: what one source address sent one domain. */
struct spool_warmup {
	char key[SPOOL_WARMUP_KEY_MAX]; /* "SOURCE DOMAIN"; SOURCE "*" = no
	                                 * [domain] source (the kernel's choice) */
	uint32_t first_day;             /* UTC day number of its first message */
	uint32_t day;                   /* the day count is for */
	uint32_t count;                 /* messages taken on day */
};

/* What an arriving report says about one of our recipients. */
struct spool_event {
	uint64_t msgid; /* the recipient it names (from the VERP address), 0 = none */
	uint32_t idx;
	uint8_t state;        /* SPOOL_BOUNCED or SPOOL_COMPLAINED */
	const char *response; /* the remote's status and text (copied) */
	size_t response_len;
	bool suppress;      /* add the recipient's address to the suppression list
	                     * (only ever the record's own: a report's words name
	                     * no address, lest one recipient suppress another) */
	const char *reason; /* why, for the suppression list */
	bool found;         /* set by the writer: the recipient record was there */
};

enum spool_status {
	SPOOL_OK = 0,
	SPOOL_EFULL, /* disk or spool full: 452 4.3.1 / HTTP 503 */
	SPOOL_EIO,   /* anything else: 451 4.3.0 */
};

struct spool_submit {
	struct spool_msg msg;     /* id from spool_next_id; nrcpt, body_len set */
	struct spool_rcpt *rcpts; /* msg.nrcpt records: addr, orcpt, notify, variant */
	const struct iovec *body; /* the shared body, in pieces */
	unsigned nbody;
	const struct iovec *variants; /* bodies 1..nvariants (variant i at [i-1]) */
	unsigned nvariants;
};

struct spool_update {
	uint64_t msgid;
	uint32_t idx;
	uint8_t state; /* new state */
	uint16_t attempts;
	uint64_t next_ms;
	uint64_t last_ms;
	const char *response; /* copied by the writer */
	size_t response_len;
	const char *remote;
	size_t remote_len;
	bool wait_only; /* no attempt was made: only state and next_ms
	                 * change (waiting behind a back-off) */
	bool suppress;  /* BOUNCED for a dead address (outcome_hard_bounce):
	                 * add it to the suppression list, the response as
	                 * the reason (with [queue] suppress) */
};

struct spool_req {
	struct mq_item item; /* queue link; owned by the spool while queued */
	enum spool_req_type type;
	enum spool_status status; /* result, set before the reply */
	struct mq *reply_to;      /* the answer is pushed here with reply_fn; NULL =
	                           * no answer: the writer free()s the request */
	mq_fn reply_fn;
	union {
		struct spool_submit submit;
		struct {
			struct spool_update *v;
			unsigned n;
		} update;
		struct {
			const char *data; /* the message, CRLF lines */
			size_t len;
			uint64_t date_ms; /* internal date */
			uint32_t uid;     /* set by the writer */
			uint8_t flags;    /* MBOX_* it starts with */
			bool durable;     /* sync before answering */
		} mbox;                   /* MBOX_PUT, and the mailbox part of INBOUND */
		struct {
			const uint32_t *uids; /* the messages (missing ones are skipped) */
			unsigned n;
			uint8_t set, clear; /* flags |= set, then &= ~clear */
		} store;
		struct {
			const uint32_t *uids;
			unsigned n;
			unsigned removed; /* set by the writer */
		} expunge;
		struct {
			const char *addr; /* any case: stored lower-case */
			size_t addr_len;
			bool add; /* add (or update) / remove */
			const char *reason;
			size_t reason_len;
			bool existed; /* set by the writer: it was on the list */
		} suppress;
		struct {
			uint64_t upto; /* the last sequence number posted */
		} events_done;
		struct {
			const struct spool_warmup *v; /* stored as they are */
			unsigned n;
		} warmup;
	} u;
	/* INBOUND only (beside u.mbox): the events it applies. */
	struct spool_event *events;
	unsigned nevents;
};

/* spool_request - hand a request to the writer (any thread). The caller's
 * memory referenced by the request must stay valid until the reply. */
void spool_request(struct spool *sp, struct spool_req *req);

/* ---- reads (any thread, one reader per thread) ------------------------- */

/* spool_reader_new - a reusable read handle. */
struct spool_reader *spool_reader_new(struct spool *sp);
void spool_reader_free(struct spool_reader *r);
/* spool_reader_begin - start a short read transaction; false on error. */
bool spool_reader_begin(struct spool_reader *r);
/* spool_reader_end - end it; decoded views become invalid. */
void spool_reader_end(struct spool_reader *r);
/* spool_get_msg - the envelope of id; false when absent. */
bool spool_get_msg(struct spool_reader *r, uint64_t id, struct spool_msg *m);
/* spool_get_rcpt - one recipient; false when absent. */
bool spool_get_rcpt(struct spool_reader *r, uint64_t id, uint32_t idx, struct spool_rcpt *rc);
/* spool_get_body - append body variant of id to out; false when absent. */
bool spool_get_body(struct spool_reader *r, uint64_t id, uint32_t variant, struct buf *out);
/* spool_foreach_rcpt - call fn for each recipient of id, in index order;
 * stops early when fn returns false. Returns the number visited. */
unsigned spool_foreach_rcpt(struct spool_reader *r, uint64_t id,
                            bool (*fn)(const struct spool_rcpt *rc, void *arg), void *arg);
/* spool_scan_pending - call fn for every recipient that is not final, with
 * its message's envelope (start-up rebuild). Returns the number visited. */
uint64_t spool_scan_pending(struct spool_reader *r,
                            void (*fn)(const struct spool_msg *m, const struct spool_rcpt *rc,
                                       void *arg),
                            void *arg);

/* spool_events_read - events after sequence number `after`, oldest first:
 * at most max of them and about max_bytes, appended to out as JSON objects
 * separated by commas; *last gets the last one's sequence number. Needs
 * spool_reader_begin. Returns how many. */
unsigned spool_events_read(struct spool_reader *r, uint64_t after, unsigned max, size_t max_bytes,
                           struct buf *out, uint64_t *last);

struct spool_events_info {
	uint64_t last_seq; /* the newest committed event's sequence number */
	uint64_t backlog;  /* events kept, not yet posted */
	uint64_t dropped;  /* events dropped past events_max since start */
	uint64_t recorded; /* events recorded since start */
};
/* spool_events_info - the numbers above (any thread, no transaction). */
void spool_events_info(const struct spool *sp, struct spool_events_info *out);
/* spool_set_events - change the events recorded and the bound (reload). */
void spool_set_events(struct spool *sp, uint32_t mask, uint64_t max);

/* ---- the bounce mailbox ------------------------------------------------ */

/* Mailbox flags (IMAP system flags). */
enum {
	MBOX_SEEN = 1u << 0,
	MBOX_ANSWERED = 1u << 1,
	MBOX_FLAGGED = 1u << 2,
	MBOX_DELETED = 1u << 3,
	MBOX_DRAFT = 1u << 4,
};

struct spool_mbox_entry {
	uint32_t uid;
	uint32_t flags;   /* MBOX_* */
	uint64_t date_ms; /* internal date */
	const char *data; /* the message; lives until the read transaction ends */
	size_t len;
};

/* spool_mbox_get - one message by UID; false when absent. */
bool spool_mbox_get(struct spool_reader *r, uint32_t uid, struct spool_mbox_entry *e);
/* spool_mbox_foreach - messages with uid >= from, in UID order; stops when
 * fn returns false. Returns how many were visited. */
unsigned spool_mbox_foreach(struct spool_reader *r, uint32_t from,
                            bool (*fn)(const struct spool_mbox_entry *e, void *arg), void *arg);
/* spool_mbox_uidvalidity - the mailbox's UIDVALIDITY and next UID. */
void spool_mbox_ids(struct spool_reader *r, uint32_t *uidvalidity, uint32_t *uidnext);
/* spool_mbox_generation - a number that changes whenever the mailbox does
 * (any thread, no transaction): a cheap "anything new?" for IDLE. */
uint64_t spool_mbox_generation(const struct spool *sp);

/* ---- the suppression list ---------------------------------------------- */

struct spool_suppression {
	const char *addr; /* lower-case; lives until the read transaction ends */
	size_t addr_len;
	uint64_t time_ms; /* when it was added */
	const char *reason;
	size_t reason_len;
};

/* spool_suppress_get - the entry for addr (any case); false when absent. */
bool spool_suppress_get(struct spool_reader *r, const char *addr, size_t len,
                        struct spool_suppression *s);
/* spool_suppress_foreach - entries after the address `after` (NULL: from
 * the start), in address order; stops when fn returns false. Returns how
 * many were visited. */
unsigned spool_suppress_foreach(struct spool_reader *r, const char *after, size_t after_len,
                                bool (*fn)(const struct spool_suppression *s, void *arg),
                                void *arg);
/* spool_suppress_count - entries on the list. */
uint64_t spool_suppress_count(struct spool_reader *r);

/* spool_warmup_index - the day of its schedule counter c is on, on UTC
 * day today (0 = the first; a pair that never sent, or a clock set back,
 * is on its first). */
uint32_t spool_warmup_index(const struct spool_warmup *c, uint32_t today);
/* spool_warmup_left - what a schedule of n daily caps leaves c on day
 * today: UINT32_MAX (no cap) when n is 0 or c is past its last day. */
uint32_t spool_warmup_left(const struct spool_warmup *c, const uint32_t *caps, unsigned n,
                           uint32_t today);
/* spool_warmup_get - the counter for key ("SOURCE DOMAIN"); false when
 * there is none. */
bool spool_warmup_get(struct spool_reader *r, const char *key, struct spool_warmup *out);
/* spool_warmup_foreach - the counters after key `after` (NULL: from the
 * start), in key order; stops when fn returns false. Returns how many were
 * visited. */
unsigned spool_warmup_foreach(struct spool_reader *r, const char *after,
                              bool (*fn)(const struct spool_warmup *w, void *arg), void *arg);
/* spool_warmup_count - counters stored. */
uint64_t spool_warmup_count(struct spool_reader *r);

/* spool_verp_key - the secret VERP addresses are signed with (32 random
 * bytes made when the spool was created; any thread). */
const unsigned char *spool_verp_key(const struct spool *sp);

#endif
