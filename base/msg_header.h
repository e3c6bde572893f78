/* msg_header.h - RFC 5322 header section scanning.
 *
 * Pure and allocation-free; works on normalised messages (CRLF line ends)
 * and tolerates bare LF. Used when ringpost adds trace and missing headers,
 * builds DSNs and reports on messages.
 */
#ifndef RP_MSG_HEADER_H
#define RP_MSG_HEADER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"

struct msg_header_info {
	size_t end;          /* offset of the first body byte (after the blank line),
	                      * or of the first line that is not a header field */
	bool blank_line;     /* a blank line separates header and body */
	bool has_date;       /* a Date: field */
	bool has_message_id; /* a Message-ID: field */
	bool has_from;       /* a From: field */
	unsigned fields;     /* header fields seen */
	unsigned received;   /* Received: fields (trace, one per hop) */
};

/* More Received: fields than this in a message's header section mean a
 * mail loop (RFC 5321 6.3): it is refused with 554 5.4.6 (SMTP) or a 400
 * too_many_hops (API raw). Postfix's hopcount_limit has the same default. */
#define MSG_HOPS_MAX 50

/* msg_header_scan - find the header section of p[0..n) and note fields
 * (only the header section: a Received: line in the body is not a hop). */
void msg_header_scan(const char *p, size_t n, struct msg_header_info *info);
/* msg_header_get - the raw value of the first field called name (case-
 * insensitive) in p[0..hdr_end): points past the colon and leading blanks,
 * continuation lines included, final line end excluded. */
bool msg_header_get(const char *p, size_t hdr_end, const char *name, const char **val, size_t *len);

/* msg_normalize_newlines - rewrite bare LF and lone CR as CRLF in msg[from..]. */
void msg_normalize_newlines(struct buf *msg, size_t from);
/* msg_add_missing - append the Date: and Message-ID: fields hi says the
 * message lacks (Message-ID <ID@hostname>), and the blank line a message
 * without a header section needs before its content. */
void msg_add_missing(struct buf *out, const struct msg_header_info *hi, bool has_content,
                     uint64_t id, const char *hostname, uint64_t now_ms);

#endif
