/* smtp_data.h - message content on the wire: DATA un-stuffing on receive,
 * dot-stuffing on send, BDAT content checks (RFC 5321 4.5.2, RFC 3030).
 *
 * Stored messages are normalised: every line ends in CRLF, no dot-stuffing.
 * Only CRLF "." CRLF ends DATA: a bare LF or lone CR never does (SMTP
 * smuggling). Both are accepted as line ends and stored as CRLF, so the
 * message cannot carry a smuggled terminator to the next hop.
 */
#ifndef RP_SMTP_DATA_H
#define RP_SMTP_DATA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/buf.h"

enum {
	SMTP_DATA_TOO_BIG = 1u << 0,   /* more than max_size bytes: content was dropped */
	SMTP_DATA_LONG_LINE = 1u << 1, /* a line longer than max_line (CRLF included) */
	SMTP_DATA_BARE_LF = 1u << 2,   /* a bare LF or lone CR was normalised to CRLF */
	SMTP_DATA_8BIT = 1u << 3,      /* bytes >= 0x80 present */
	SMTP_DATA_NUL = 1u << 4,       /* a NUL byte */
};

/* Streaming receiver for the DATA phase. */
struct smtp_data_rx {
	uint64_t max_size; /* content bytes kept at most */
	uint64_t size;     /* content bytes seen */
	unsigned max_line; /* longest line allowed, CRLF included */
	unsigned line_len; /* bytes of the current line so far, its leading dot included */
	unsigned flags;    /* SMTP_DATA_* */
	bool line_start;   /* the next byte starts a line */
	bool dot_first;    /* the current line began with a dot (not yet stored) */
	bool cr_pending;   /* a CR ended the last chunk; its meaning awaits the next byte */
	bool prev_crlf;    /* the previous line ended in a real CRLF */
};

/* smtp_data_rx_init - start a DATA phase (the DATA command line ended the
 * previous line with CRLF). */
void smtp_data_rx_init(struct smtp_data_rx *rx, uint64_t max_size, unsigned max_line);
/* smtp_data_rx_feed - consume bytes from p[0..n), append content to msg.
 * Returns bytes consumed; *done is set when CRLF.CRLF was seen (then the
 * bytes after it were not consumed: they are the next command). */
size_t smtp_data_rx_feed(struct smtp_data_rx *rx, const char *p, size_t n, struct buf *msg,
                         bool *done);

/* Line state of BDAT content across chunks. */
struct smtp_chunk_state {
	unsigned line_len; /* bytes of the current line so far */
	bool last_cr;      /* the previous byte was a CR */
	unsigned flags;    /* SMTP_DATA_* seen so far */
};

/* smtp_chunk_init - start checking a new message's chunks. */
void smtp_chunk_init(struct smtp_chunk_state *st);
/* smtp_chunk_check - scan BDAT content p[0..n) for bare LF, long lines,
 * 8-bit and NUL bytes, adding SMTP_DATA_* flags to st->flags. */
void smtp_chunk_check(struct smtp_chunk_state *st, const char *p, size_t n, unsigned max_line);

/* smtp_dot_stuff - append body p[0..n) dot-stuffed, a final CRLF if the
 * body lacks one, and the terminating ".\r\n". Every line end goes out as
 * CRLF: a lone CR or bare LF in the body (never in a stored message, but
 * whatever the input) is a line end too, and a dot after it is stuffed,
 * so "<CR>.<CR>" or "<LF>.<LF>" (SMTP smuggling) can never be emitted. */
void smtp_dot_stuff(const char *p, size_t n, struct buf *out);
/* smtp_crlf_only - whether every line end of p[0..n) is CRLF (no lone CR,
 * no bare LF). */
bool smtp_crlf_only(const char *p, size_t n);
/* smtp_crlf_canon - append p[0..n) with each lone CR and bare LF as CRLF
 * (for BDAT, which is sent as it is). */
void smtp_crlf_canon(const char *p, size_t n, struct buf *out);

#endif
