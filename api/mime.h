/* mime.h - building RFC 5322 / MIME messages from structured parts.
 *
 * Pure and synchronous: the caller owns every input; output is appended to
 * a struct buf. Lines end in CRLF and never exceed 998 octets. Non-ASCII
 * header text becomes RFC 2047 encoded words; bodies are 7bit when they can
 * be, quoted-printable or base64 otherwise; attachments are base64.
 */
#ifndef RP_MIME_H
#define RP_MIME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/base64.h"
#include "base/buf.h"

struct mime_header {
	const char *name;  /* a valid field name (mime_header_name_ok) */
	const char *value; /* UTF-8, no CR or LF (mime_header_value_ok) */
};

struct mime_attachment {
	const char *filename;     /* UTF-8; encoded per RFC 2231 when not ASCII */
	const char *content_type; /* "type/subtype", default application/octet-stream */
	const unsigned char *data;
	size_t len;
};

struct mime_message {
	const char *from;    /* header value: "a@b" or "Name <a@b>" */
	const char *to;      /* header value, may list several */
	const char *subject; /* UTF-8, may be NULL */
	const char *text;    /* text/plain part, may be NULL */
	size_t text_len;
	const char *html; /* text/html part, may be NULL */
	size_t html_len;
	const struct mime_header *headers; /* extra fields */
	unsigned nheaders;
	const struct mime_attachment *attachments;
	unsigned nattachments;
	const char *message_id; /* without angle brackets */
	uint64_t date_ms;       /* unix ms for Date: */
};

/* mime_build - append the whole message. Returns false (with a reason) for
 * inputs the validators would have refused: a header value (From, To,
 * Subject, extra fields) with CR, LF or NUL, a From that is not one
 * mailbox, a bad attachment type. Boundaries come from getrandom. */
bool mime_build(const struct mime_message *m, struct buf *out, char *err, size_t errlen);
/* mime_mailbox_split - s[0..n) as "addr" or "display-name <addr>" (blanks
 * around it ignored): the address in addr[0..alen), the display name as
 * written in name[0..nlen) (nlen 0 when there is none). The angle-addr
 * starts at the first '<' outside a quoted string, so "A <a@x> <b@y>"
 * gives the address "a@x> <b@y" (which addr_check refuses). Returns NULL,
 * or why s is no mailbox ("has a line break", "has an unbalanced quote in
 * its display name", ...). The address itself is for addr_check. */
const char *mime_mailbox_split(const char *s, size_t n, const char **name, size_t *nlen,
                               const char **addr, size_t *alen);
/* mime_header_name_ok - RFC 5322 field name (printable ASCII, no colon). */
bool mime_header_name_ok(const char *name);
/* mime_header_value_ok - no CR, LF or NUL (header injection). */
bool mime_header_value_ok(const char *value, size_t len);
/* mime_header_reserved - fields ringpost sets itself (From, To, Date, ...). */
bool mime_header_reserved(const char *name);
/* mime_encode_header - append "Name: value" folded, with encoded words for
 * non-ASCII; an address list keeps its addresses plain. */
void mime_encode_header(struct buf *out, const char *name, const char *value, bool addresses);
/* mime_qp_encode - append quoted-printable (RFC 2045) of p[0..n). */
void mime_qp_encode(struct buf *out, const char *p, size_t n);

#endif
