/* bounce_impl.h - what the parts of the bounce parser share (not an API).
 *
 *   bounce.c       bounce_parse: the order of belief, DSN and ARF fields,
 *                  the original's Message-ID, the output strings
 *   bounce_mime.c  header fields, Content-Type, the MIME walk (a flat list
 *                  of the parts that matter), base64 and quoted-printable
 *   bounce_text.c  the human-readable text: Exim, Postfix, qmail, quoted
 *                  SMTP replies, RFC 3463 codes
 *
 * Everything points into the caller's message or into the one decoding
 * buffer of struct bctx; nothing is allocated.
 */
#ifndef RP_BOUNCE_IMPL_H
#define RP_BOUNCE_IMPL_H

#include <stdbool.h>
#include <stddef.h>

#include "bounce.h"

/* A byte range: of the message, of the decoding buffer, or of a copy. */
struct bspan {
	const char *p;
	size_t n;
};

/* ---- header fields (bounce_mime.c) ------------------------------------ */

enum bfield_res {
	BF_FIELD, /* a field: name and value set */
	BF_BLANK, /* a blank line (consumed) */
	BF_JUNK,  /* a line that is no field (not consumed) */
	BF_END,   /* the end of the range */
};

struct bfield {
	struct bspan name;  /* without the colon */
	struct bspan value; /* raw: leading blanks skipped, folds (CRLF + WSP)
	                     * kept, the final line end excluded */
};

/* bfield_next - the field, blank line or junk line at p[*off..n); moves
 * *off past what it consumed. Linear in what it consumes. */
enum bfield_res bfield_next(const char *p, size_t n, size_t *off, struct bfield *f);
/* bspan_is - s is name, ASCII case-insensitive. */
bool bspan_is(struct bspan s, const char *name);
/* bline_next - the line at p[*off..n) without its line end; moves *off
 * past the line end. False at the end. */
bool bline_next(const char *p, size_t n, size_t *off, struct bspan *line);
/* bci_find - the first place needle (lower-case ASCII) occurs in p[0..n),
 * case-insensitive, or NULL. */
const char *bci_find(const char *p, size_t n, const char *needle);
/* bci_any - the first of needles (a NULL-terminated list) found, or NULL. */
const char *bci_any(const char *p, size_t n, const char *const *needles);
/* btrim - without leading and trailing blanks, CR and LF. */
struct bspan btrim(struct bspan s);

/* ---- MIME structure (bounce_mime.c) ----------------------------------- */

enum bpart_type {
	BP_TEXT,    /* text/plain (or no Content-Type) */
	BP_DSN,     /* message/delivery-status, message/global-delivery-status */
	BP_ARF,     /* message/feedback-report */
	BP_HEADERS, /* text/rfc822-headers, message/global-headers */
	BP_MESSAGE, /* message/rfc822, message/global: body is a whole message */
};

enum bcte {
	CTE_IDENTITY, /* 7bit, 8bit, binary, or anything unknown */
	CTE_BASE64,
	CTE_QP,
};

struct bpart {
	enum bpart_type type;
	enum bcte cte;
	struct bspan body; /* still encoded */
	bool returned;     /* the original a multipart/report returns */
	bool attached;     /* inside a message/rfc822 that is not returned (forwarded) */
};

/* Facts from the top-level header section. */
struct btop {
	bool auto_reply;     /* Auto-Submitted, X-Autoreply, Precedence, subject */
	bool subject_auto;   /* Subject: Automatic reply, Out of Office, ... */
	bool from_daemon;    /* From: MAILER-DAEMON, postmaster, Mail Delivery ... */
	bool subject_bounce; /* Subject: Undeliverable, failure notice, ... */
	struct bspan failed; /* X-Failed-Recipients value (Exim and others) */
	struct bspan in_reply_to;
};

struct bmime {
	struct bpart parts[BOUNCE_MAX_PARTS]; /* leaves that matter, in document order */
	unsigned nparts;
	unsigned visited; /* entities looked at (the BOUNCE_MAX_PARTS cap) */
	bool limited;     /* a cap was hit */
	struct btop top;
};

/* bmime_walk - the MIME structure of msg[0..len) into *m (overwritten). */
void bmime_walk(const char *msg, size_t len, struct bmime *m);
/* bpart_content - the part's content, decoded into buf[0..cap) when it is
 * encoded; identity content is returned in place, at most max bytes of
 * it. Sets *limited when something was cut. */
struct bspan bpart_content(const struct bpart *pt, char *buf, size_t cap, size_t max,
                           bool *limited);

/* ---- output strings (bounce.c) ---------------------------------------- */

/* bout_text - copy p[0..n) into dst[0..size) as bounce.h promises: blanks
 * and line ends to one space, control bytes dropped, invalid UTF-8 to '?',
 * trimmed, cut at a character boundary. Stops reading when dst is full. */
void bout_text(char *dst, size_t size, const char *p, size_t n);
/* bout_addr - an address field value: "rfc822; <a@b>" -> "a@b". */
void bout_addr(char *dst, size_t size, const char *p, size_t n);
/* bout_diag - a diagnostic: "smtp; 550-5.1.1 a\r\n 550-5.1.1 b" ->
 * "550 5.1.1 a b" (the type and repeated continuation prefixes dropped);
 * sets *code to the reply code it starts with, or 0. */
void bout_diag(char *dst, size_t size, const char *p, size_t n, int *code);
/* benh_scan - the RFC 3463 code "c.s.d" at p[0..n) (class 2, 4 or 5;
 * subject and detail 1-3 digits, not followed by a digit or ".digit"):
 * its length, or 0. strict: the subject is one digit 0-7 (free text). */
size_t benh_scan(const char *p, size_t n, bool strict);
/* brcpt_commit - complete r (a missing status from its reply code or
 * kind, a missing kind from its status) and add it to the report: into
 * rcpt[] while there is room, else counted in rcpt_dropped; its kind
 * joins the verdict either way. A recipient of no kind is dropped. */
void brcpt_commit(struct bounce_report *out, struct bounce_rcpt *r);

/* ---- the human-readable text (bounce_text.c) -------------------------- */

/* btext_parse - recipients from a bounce's text into out (format set);
 * false when the text says nothing we trust. */
bool btext_parse(struct bspan text, const struct btop *top, struct bounce_report *out);
/* btext_inline_msgid - the Message-ID of a copy of the original below a
 * "This is a copy of the message" line in text, if any. */
bool btext_inline_msgid(struct bspan text, struct bspan *msgid);

#endif
