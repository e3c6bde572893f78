/* outcome.h - the one place that decides what a delivery attempt means.
 *
 * Protocol code reports facts (a reply, a connection failure, a timeout, a
 * DNS answer); outcome_decide turns each into delivered / retry at T /
 * failed now, and says whether the whole destination should back off.
 * Everything here is pure: no clocks, no randomness of its own, no I/O.
 */
#ifndef RP_OUTCOME_H
#define RP_OUTCOME_H

#include <stdbool.h>
#include <stdint.h>

/* What kind of thing happened. */
enum attempt_kind {
	ATTEMPT_REPLY,        /* the server answered with code/enh/text */
	ATTEMPT_CONNECT_FAIL, /* no connection (refused, unreachable, connect timeout) */
	ATTEMPT_TIMEOUT,      /* the server went silent mid-session */
	ATTEMPT_LOST,         /* the connection broke mid-session */
	ATTEMPT_TLS_FAIL,     /* TLS handshake failed where TLS was required */
	ATTEMPT_DNS_TEMP,     /* SERVFAIL, timeout: try later */
	ATTEMPT_DNS_PERM,     /* NXDOMAIN: the domain does not exist */
	ATTEMPT_NULL_MX,      /* RFC 7505: the domain accepts no mail */
	ATTEMPT_NO_ROUTE,     /* nowhere to send it (no route, no usable address) */
	ATTEMPT_LOOP,         /* the destination is ourselves */
	ATTEMPT_LOCAL,        /* a local problem (spool read failed) */
	ATTEMPT_ABANDONED,    /* we stopped (shutdown, purge): not an attempt */
	ATTEMPT_TOO_BIG,      /* larger than the server's announced SIZE */
	ATTEMPT_NEEDS_UTF8,   /* SMTPUTF8 message, server lacks SMTPUTF8 */
};

/* Which command the reply answered (matters for 552 and 452). */
enum attempt_stage {
	STAGE_CONNECT,
	STAGE_GREETING,
	STAGE_EHLO,
	STAGE_MAIL,
	STAGE_RCPT,
	STAGE_DATA,    /* the DATA or BDAT command itself */
	STAGE_CONTENT, /* the reply after the content (final dot / BDAT LAST) */
	STAGE_OTHER,
};

struct attempt_report {
	enum attempt_kind kind;
	enum attempt_stage stage;
	int code;          /* SMTP reply code for ATTEMPT_REPLY */
	char enh[16];      /* enhanced status from the reply, or "" */
	char text[320];    /* one-line reply or error description */
	bool after_accept; /* a RCPT reply that came after an accepted RCPT in
	                    * the same transaction (tells "too many recipients"
	                    * from "not now") */
};

enum outcome_action {
	OUTCOME_DELIVERED,
	OUTCOME_RETRY,
	OUTCOME_FAIL,
};

/* What a receiver's temporary refusal says about how we connect (the
 * phrasings of outcome.c's table): too many sessions at once, or mail too
 * fast. Neither backs the destination off: delivery lowers its effective
 * concurrency or rate, and the refused recipients come back soon. */
enum outcome_signal {
	SIGNAL_NONE,
	SIGNAL_CONCURRENCY,
	SIGNAL_RATE,
};
/* outcome_signal_of - a 4xx reply's signal (SIGNAL_NONE for anything else). */
enum outcome_signal outcome_signal_of(const struct attempt_report *rep);
const char *outcome_signal_name(enum outcome_signal s);
#define OUTCOME_SHAPE_RETRY_MS 5000 /* a recipient refused by such a signal: back after this */

struct outcome {
	enum outcome_action action;
	bool dest_backoff;          /* the destination as a whole should pause */
	bool counts;                /* counts as a delivery attempt */
	uint64_t next_ms;           /* OUTCOME_RETRY: when (unix ms) */
	char status[16];            /* RFC 3463 status for DSNs and the API: "5.1.1" */
	bool no_dsn;                /* a failure that must not produce a DSN (purge, drop) */
	enum outcome_signal signal; /* a concurrency or rate refusal (then no back-off) */
};

struct retry_policy {
	const uint64_t *delays_ms; /* delays between attempts; the last repeats */
	unsigned ndelays;
	uint64_t max_age_ms; /* a recipient still failing after this bounces */
	unsigned jitter_pct; /* +- this percentage, spread by a random input */
};

/* outcome_decide - decide for one recipient. attempts counts attempts
 * before this one; age_ms is the time since submission; rnd is any random
 * 64-bit value (jitter). */
void outcome_decide(const struct attempt_report *rep, unsigned attempts, uint64_t age_ms,
                    uint64_t now_ms, uint64_t rnd, const struct retry_policy *pol,
                    struct outcome *out);
/* outcome_retry_delay - the delay after the n-th failed attempt (n >= 1),
 * with jitter from rnd. */
uint64_t outcome_retry_delay(const struct retry_policy *pol, unsigned n, uint64_t rnd);
/* outcome_report_set - fill a report (text formatted; enh derived from the
 * text for replies). */
void outcome_report_set(struct attempt_report *rep, enum attempt_kind kind,
                        enum attempt_stage stage, int code, const char *text);
/* outcome_hard_bounce - whether a permanent failure says the address
 * itself is dead, so that later mail to it is suppressed: status is the
 * RFC 3463 code ("5.1.1"; NULL or "" reads it from a "550 5.1.1 ..."
 * reply at the start of text), text the reply or diagnostic (may be
 * NULL). True for 5.1.1, 5.1.2, 5.1.3, 5.1.6, 5.1.10 and 5.2.1; for 5.0.0,
 * 5.1.0, 5.2.0 and 5.7.1 only when the text says the user is unknown,
 * disabled or does not exist and says nothing of policy (spam, blocks,
 * rates, the sender); false for everything else (4.x.x, 5.2.2 mailbox
 * full, 5.3.x, 5.4.x, other 5.7.x). Pure; the rules and phrases are the
 * tables in outcome.c. */
bool outcome_hard_bounce(const char *status, const char *text);
/* outcome_kind_name - "reply", "connect-failed", ... for logs. */
const char *outcome_kind_name(enum attempt_kind k);
/* outcome_action_name - "delivered", "deferred", "bounced". */
const char *outcome_action_name(enum outcome_action a);

#endif
