/* smtp_reply.h - SMTP reply parsing for the client side (RFC 5321 4.2).
 *
 * Pure and allocation-free. smtp_reply_parse takes one complete reply
 * (single- or multi-line) from the front of a byte buffer; the result points
 * into that buffer and lives as long as those bytes.
 */
#ifndef RP_SMTP_REPLY_H
#define RP_SMTP_REPLY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SMTP_REPLY_LINE_MAX  2048 /* we accept longer than the RFC's 512 */
#define SMTP_REPLY_MAX_LINES 128

struct smtp_reply {
	int code;        /* 200..599 */
	unsigned lines;  /* number of lines */
	const char *raw; /* the whole reply, line ends included */
	size_t raw_len;
	char enh[16]; /* enhanced status "5.1.1" of the first line, or "" */
};

/* smtp_reply_parse - one reply from p[0..n). Returns bytes consumed (> 0),
 * -2 when more bytes are needed, -1 on bad syntax (a line that does not
 * start with a 3-digit code, mismatched codes, or limits exceeded). */
long smtp_reply_parse(const char *p, size_t n, struct smtp_reply *r);
/* smtp_reply_summary - "550 5.1.1 text" from all lines joined by spaces,
 * control bytes dropped, truncated to fit outlen (>= 8). */
void smtp_reply_summary(const struct smtp_reply *r, char *out, size_t outlen);

/* EHLO capabilities we use. */
enum {
	SMTP_CAP_PIPELINING = 1u << 0,
	SMTP_CAP_SIZE = 1u << 1,
	SMTP_CAP_8BITMIME = 1u << 2,
	SMTP_CAP_CHUNKING = 1u << 3,
	SMTP_CAP_SMTPUTF8 = 1u << 4,
	SMTP_CAP_STARTTLS = 1u << 5,
	SMTP_CAP_ENHANCEDSTATUSCODES = 1u << 6,
	SMTP_CAP_DSN = 1u << 7,
	SMTP_CAP_AUTH = 1u << 8,
};

struct smtp_caps {
	unsigned flags;    /* SMTP_CAP_* */
	uint64_t size_max; /* SIZE limit, 0 when none announced */
};

/* smtp_caps_parse - capabilities from an EHLO reply (lines after the first). */
void smtp_caps_parse(const struct smtp_reply *r, struct smtp_caps *caps);

#endif
