/* bounce.h - what a message arriving at the bounce MX reports.
 *
 * bounce_parse reads one RFC 5322 message (CRLF or bare LF lines, possibly
 * damaged or hostile) and says whether it is a delivery report, a
 * complaint, or neither, and for whom. It is pure: no I/O, no clocks, no
 * allocation; everything it returns is copied into the caller's struct.
 * Work is linear in the input (every MIME level rescans at most its own
 * range, and there are at most BOUNCE_MAX_DEPTH levels); it uses about
 * 40 KiB of stack (one decoding buffer of BOUNCE_TEXT_MAX bytes).
 *
 * Formats, in the order they are believed:
 *   1. an ARF complaint (RFC 5965): a message/feedback-report part;
 *   2. an RFC 3464 DSN: a message/delivery-status (or RFC 6533
 *      message/global-delivery-status) part with at least one recipient;
 *   3. the human-readable text (the first text/plain parts, up to four,
 *      outside any returned or attached message): Exim's, Postfix's and
 *      qmail-send's own layouts, then any SMTP reply quoted in it ("550
 *      5.1.1 ..."), then any RFC 3463 status in it ("Status: 5.2.2"). The
 *      last two also need a sign that the message is about a failed
 *      delivery (a phrase in the text, a MAILER-DAEMON sender, a bounce
 *      subject), so that a vacation message or a newsletter quoting "550"
 *      is not taken for a bounce.
 * What the original message said (a returned message/rfc822 or
 * text/rfc822-headers part, an inline copy below a bounce text) is never
 * taken for the report; only its Message-ID is read.
 *
 * Policy (is this address dead?) is not decided here: see
 * outcome_hard_bounce in outcome.h.
 */
#ifndef RP_BOUNCE_H
#define RP_BOUNCE_H

#include <stdbool.h>
#include <stddef.h>

/* Caps. Depth: the message is level 0, its parts level 1, theirs 2, ...;
 * parts below level BOUNCE_MAX_DEPTH are not read. */
#define BOUNCE_MAX_RCPT   16          /* recipients kept per report */
#define BOUNCE_MAX_DEPTH  8           /* MIME levels read */
#define BOUNCE_MAX_PARTS  64          /* MIME entities looked at, all levels */
#define BOUNCE_HEADER_MAX (64 * 1024) /* header section bytes read per entity */
#define BOUNCE_TEXT_MAX   (32 * 1024) /* bytes of one part's content read (decoded) */

/* What a report says about a recipient; ordered so that a larger value is
 * worse news (the verdict over several recipients is the largest). */
enum bounce_kind {
	BOUNCE_NONE,      /* not a report we understand */
	BOUNCE_DELIVERED, /* Action: delivered / relayed / expanded */
	BOUNCE_DELAYED,   /* still being tried: Action: delayed, or a 4.x.x / 4xx */
	BOUNCE_FAILED,    /* given up: Action: failed, or a 5.x.x / 5xx */
	BOUNCE_COMPLAINT, /* an ARF feedback report (RFC 5965) */
};

/* Where the answer came from. */
enum bounce_format {
	BOUNCE_FMT_NONE,
	BOUNCE_FMT_DSN,         /* RFC 3464 message/delivery-status */
	BOUNCE_FMT_ARF,         /* RFC 5965 message/feedback-report */
	BOUNCE_FMT_EXIM,        /* Exim's text ("...address(es) failed:") */
	BOUNCE_FMT_POSTFIX,     /* Postfix's text ("This is the mail system at host") */
	BOUNCE_FMT_QMAIL,       /* qmail-send's text ("Hi. This is the qmail-send program") */
	BOUNCE_FMT_TEXT_REPLY,  /* an SMTP reply quoted in the text ("550 5.1.1 ...") */
	BOUNCE_FMT_TEXT_STATUS, /* an RFC 3463 status in the text ("Status: 5.2.2") */
};

/* Every string below is NUL-terminated, truncated to its size (never in
 * the middle of a UTF-8 sequence), and holds no control characters: CR,
 * LF and TAB become spaces (runs of blanks become one), NUL and other
 * control bytes are dropped, leading and trailing blanks trimmed. */
struct bounce_rcpt {
	enum bounce_kind kind;   /* FAILED, DELAYED, DELIVERED or COMPLAINT */
	int smtp_code;           /* the remote SMTP reply code, or 0 */
	char status[16];         /* RFC 3463 "5.1.1"; derived when not given:
	                          * from the reply's enhanced code, else its
	                          * code (550 -> "5.0.0"), else the Action */
	char final_rcpt[256];    /* the address (Final-Recipient, addr-type and
	                          * angle brackets stripped), or "" if unknown */
	char original_rcpt[256]; /* Original-Recipient, stripped likewise, or "" */
	char diag[400];          /* the remote reply ("550 5.1.1 text", multi-line
	                          * replies joined) or the report's own words */
	char remote_mta[256];    /* Remote-MTA host (type stripped), or "" */
};

struct bounce_report {
	enum bounce_kind kind;     /* the verdict: the worst of all recipients */
	enum bounce_format format; /* where it came from */
	unsigned nrcpt;            /* rcpt[] entries used */
	unsigned rcpt_dropped;     /* recipients beyond BOUNCE_MAX_RCPT (counted in kind) */
	struct bounce_rcpt rcpt[BOUNCE_MAX_RCPT];
	char original_message_id[256];    /* the original's Message-ID without <>: from
	                                   * the returned headers or message, an inline
	                                   * copy, or In-Reply-To; "" if none */
	char reporting_mta[256];          /* DSN Reporting-MTA (type stripped) */
	char envelope_id[128];            /* DSN Original-Envelope-Id (RFC 3461 ENVID) */
	char feedback_type[32];           /* ARF Feedback-Type, lower case ("abuse") */
	char arf_original_rcpt[256];      /* ARF Original-Rcpt-To, else Removal-Recipient,
	                                   * else the returned message's To: address */
	char arf_original_mail_from[256]; /* ARF Original-Mail-From */
	bool auto_reply;                  /* the message calls itself automatic (Auto-Submitted,
	                                   * X-Autoreply, Precedence, an out-of-office subject) */
	bool limited;                     /* a cap (depth, parts, header or text bytes) was hit:
	                                   * parts of the message were not read */
};

/* bounce_parse - read msg[0..len) (need not be NUL-terminated; NUL bytes
 * are data) into *out, which is overwritten. Returns true when it is a
 * report of a known kind (out->kind != BOUNCE_NONE, out->nrcpt >= 1);
 * false otherwise, with out->kind BOUNCE_NONE and out->nrcpt 0 (the other
 * fields may still say what was seen, e.g. auto_reply). An ARF complaint
 * has one recipient of kind COMPLAINT whose final_rcpt is
 * arf_original_rcpt (possibly ""). Never fails otherwise. */
bool bounce_parse(const char *msg, size_t len, struct bounce_report *out);

/* bounce_kind_name - "none", "delivered", "delayed", "failed", "complaint". */
const char *bounce_kind_name(enum bounce_kind k);
/* bounce_format_name - "none", "dsn", "arf", "exim", "postfix", "qmail",
 * "text-reply", "text-status". */
const char *bounce_format_name(enum bounce_format f);

#endif
