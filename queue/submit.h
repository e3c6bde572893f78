/* submit.h - the one way a message enters the queue.
 *
 * SMTP submission, the HTTP API and start-up recovery (and later the bounce
 * MX and IMAP APPEND) all go through here. A struct submission collects the
 * envelope and the recipients, builds the header fields ringpost adds in
 * front of the content (Received:, and Date:/Message-ID: when the message
 * lacks them), is committed through the spool writer (group commit: the
 * callback runs once the message is durable, or refused), and then routes
 * its recipients to their schedulers with one call. Protocol code never
 * builds spool records or scheduler entries itself.
 *
 * A submission is owned by its caller and reused across transactions
 * (submission_reset); its memory and the content it points at must stay
 * valid from submission_commit until the callback has run.
 */
#ifndef RP_SUBMIT_H
#define RP_SUBMIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "base/buf.h"
#include "base/mq.h"
#include "sched.h"
#include "spool.h"

struct submission;

/* submit_route_fn - queue recipients on their schedulers (the daemon's
 * shard_route); domains in adds are only valid during the call. */
typedef void (*submit_route_fn)(void *ctx, const struct sched_add *adds, unsigned n);
/* submit_done_fn - the commit is over: submission_status says how. Runs on
 * the thread that owns reply_to. */
typedef void (*submit_done_fn)(struct submission *s, void *arg);

/* One recipient; strings are offsets into the submission's strings. */
struct submit_rcpt {
	uint32_t addr_off, addr_len;     /* the mailbox */
	uint32_t orcpt_off, orcpt_len;   /* DSN ORCPT "type;addr", decoded, or empty */
	uint32_t domain_off, domain_len; /* lower-case, NUL-terminated */
	uint8_t notify;                  /* NOTIFY_* */
};

/* What the Received: field says (RFC 5321 4.4). */
struct submit_trace {
	const char *from;    /* the client's name: EHLO argument, "api" */
	const char *from_ip; /* "[192.0.2.1]", "[IPv6:...]", or a source description */
	const char *tls;     /* "using TLSv1.3 with cipher ...", or NULL */
	const char *by;      /* our host name */
	const char *with;    /* "ESMTP", "UTF8SMTP", "HTTP" */
	bool for_rcpt;       /* name the recipient when there is exactly one */
};

struct submission {
	struct spool_req req; /* the commit: the spool's while in flight */
	uint64_t id;          /* message id (submission_start) */
	uint64_t submit_ms;   /* unix ms of acceptance */
	uint32_t flags;       /* MSG_F_* */
	struct buf strings;   /* sender, envid, source, recipients */
	uint32_t sender_off, sender_len;
	uint32_t envid_off, envid_len;
	uint32_t source_off, source_len;
	uint32_t submitter_off, submitter_len;
	struct submit_rcpt *rcpts;
	unsigned nrcpt, rcap;
	struct buf prefix;              /* header fields ringpost adds */
	struct iovec body[2];           /* prefix, then the caller's content */
	const struct iovec *variants;   /* per-recipient bodies (caller's), or NULL */
	struct spool_rcpt *spool_rcpts; /* built at commit */
	struct sched_add *adds;         /* built at routing */
	unsigned spool_cap, adds_cap;
	submit_done_fn done;
	void *arg;
};

/* submission_init - an empty submission (or zero it: the same). */
void submission_init(struct submission *s);
/* submission_reset - empty it for the next message; memory is kept (up to
 * a bound). Not while a commit is in flight. */
void submission_reset(struct submission *s);
/* submission_free - release its memory. Not while a commit is in flight. */
void submission_free(struct submission *s);

/* submission_sender - the reverse path ("" = <>, which also marks the
 * message MSG_F_BOUNCE), flags (MSG_F_*) and the DSN ENVID (decoded). */
void submission_sender(struct submission *s, const char *addr, size_t len, uint32_t flags,
                       const char *envid, size_t envid_len);
/* submission_add_rcpt - one more recipient (copied); addr must be a valid
 * address (addr_check). Returns its index. */
unsigned submission_add_rcpt(struct submission *s, const char *addr, size_t len, uint8_t notify,
                             const char *orcpt, size_t orcpt_len);
/* submission_rcpt_addr - recipient i's address (valid until the next add). */
const char *submission_rcpt_addr(const struct submission *s, unsigned i, size_t *len);
/* submission_sender_addr - the reverse path (valid until the next add). */
const char *submission_sender_addr(const struct submission *s, size_t *len);

/* submission_start - give the message its id and time of acceptance, and
 * say where it came from (spool record, e.g. "[192.0.2.1]:41916"). */
void submission_start(struct submission *s, struct spool *sp, const char *source);
/* submission_submitter - who submitted it (the authenticated user; "" = none). */
void submission_submitter(struct submission *s, const char *user);
/* submit_received - a Received: field (RFC 5321 4.4) into b: from t, with
 * id, dated date_ms, "for <for_rcpt>" when given (and short). */
void submit_received(struct buf *b, const struct submit_trace *t, const char *id, uint64_t date_ms,
                     const char *for_rcpt, size_t for_len);
/* submission_trace - append the Received: field to the prefix. */
void submission_trace(struct submission *s, const struct submit_trace *t);
/* submission_complete - append what content (a whole RFC 5322 message,
 * CRLF lines) lacks: Date:, Message-ID: <ID@hostname>, and the blank line
 * that a message without a header section needs. */
void submission_complete(struct submission *s, const char *content, size_t len,
                         const char *hostname);
/* submission_prefix - the header fields added so far (to write in front of
 * each per-recipient body). */
const struct buf *submission_prefix(const struct submission *s);
/* submission_content - the shared body after the prefix (caller's memory). */
void submission_content(struct submission *s, const void *p, size_t n);
/* submission_variants - recipient i gets body v[i] (whole, prefix included)
 * instead of the shared one; v has nrcpt entries (caller's memory). */
void submission_variants(struct submission *s, const struct iovec *v);
/* submission_size - bytes stored: the shared body and every variant. */
uint64_t submission_size(const struct submission *s);

/* submission_commit - hand it to the spool writer; done(s, arg) runs on
 * reply_to's thread once it is durable (or refused). */
void submission_commit(struct submission *s, struct spool *sp, struct mq *reply_to,
                       submit_done_fn done, void *arg);
/* submission_status - the commit's result (SPOOL_OK: durable). */
enum spool_status submission_status(const struct submission *s);
/* submission_route - the message is durable: queue its recipients (those
 * on the suppression list are final already and stay out). */
void submission_route(struct submission *s, submit_route_fn route, void *ctx);
/* submission_rcpt_suppressed - after the commit: recipient i was on the
 * suppression list (state SPOOL_SUPPRESSED, never tried). */
bool submission_rcpt_suppressed(const struct submission *s, unsigned i);
/* submission_suppressed - how many recipients were. */
unsigned submission_suppressed(const struct submission *s);

/* submit_recover - start-up: route every recipient that is not final, as
 * the spool records it (state, attempts, next attempt). Returns how many. */
uint64_t submit_recover(struct spool *sp, submit_route_fn route, void *ctx);
/* submit_domain - the lower-case domain of addr (after its last '@') into
 * out (NUL-terminated); its length, or -1 when there is none or it does not
 * fit. */
int submit_domain(const char *addr, size_t len, char *out, size_t outlen);

#endif
