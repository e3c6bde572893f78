/* pop3_proto.h - the pure parts of POP3 (RFC 1939, RFC 2449): command
 * lines, numeric arguments, message sizes, and multi-line message output
 * (CRLF lines, dot-stuffed, TOP's line count). No I/O, no allocation
 * except appending to the caller's buffer; every function is safe on any
 * bytes (8-bit, NUL, bare CR or LF).
 *
 * A stored message is sent as lines: each LF ends a line (a CR just
 * before it belongs to the line ending), a last line without LF is ended
 * too, and every line goes out with CRLF. A message's size ("exact size",
 * RFC 1939 section 11) counts those lines with their CRLF, before dot
 * stuffing, so LIST, STAT and the octets a client receives agree.
 */
#ifndef RP_POP3_PROTO_H
#define RP_POP3_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/buf.h"

/* Commands (RFC 1939, CAPA RFC 2449, STLS RFC 2595, AUTH RFC 5034). */
enum pop3_cmd_id {
	POP3_CMD_UNKNOWN = 0,
	POP3_CMD_USER,
	POP3_CMD_PASS,
	POP3_CMD_APOP,
	POP3_CMD_AUTH,
	POP3_CMD_STLS,
	POP3_CMD_CAPA,
	POP3_CMD_STAT,
	POP3_CMD_LIST,
	POP3_CMD_UIDL,
	POP3_CMD_RETR,
	POP3_CMD_TOP,
	POP3_CMD_DELE,
	POP3_CMD_RSET,
	POP3_CMD_NOOP,
	POP3_CMD_QUIT,
	POP3_CMD_COUNT,
};

/* One parsed command line; arg points into the line. */
struct pop3_cmd {
	enum pop3_cmd_id id;
	const char *name; /* the command's name ("RETR"), or "?" when unknown */
	const char *arg;  /* after the first space ("" when none); PASS keeps
	                   * its spaces (RFC 1939 section 7) */
	size_t arg_len;
};

/* pop3_cmd_parse - split line (len bytes, CRLF removed) into keyword and
 * argument. The keyword is matched case-insensitively; anything else
 * (8-bit, too long, empty) gives POP3_CMD_UNKNOWN. Never fails. */
void pop3_cmd_parse(const char *line, size_t len, struct pop3_cmd *c);

/* pop3_cmd_numbers - the argument as exactly min..max decimal numbers
 * separated by spaces (no sign, each <= UINT32_MAX): how many were read,
 * or -1 for anything else. */
int pop3_cmd_numbers(const struct pop3_cmd *c, unsigned min, unsigned max, uint32_t *out);

/* pop3_msg_size - the octets of message p[0..n) as sent: CRLF lines. */
uint64_t pop3_msg_size(const char *p, size_t n);

/* Where the output of one message (RETR, TOP) is; copyable, no pointer. */
struct pop3_emit {
	size_t off;          /* next byte of the stored message to read */
	uint64_t lines_left; /* TOP: body lines still to send */
	bool top;            /* TOP: headers, then lines_left body lines */
	bool in_body;        /* the header/body separator has been sent */
	bool bol;            /* the next byte starts an output line */
	bool line_empty;     /* the line being sent has no byte yet */
	bool done;           /* everything, ".\r\n" included, is out */
};

/* pop3_emit_init - RETR (top false) or TOP with lines body lines. */
void pop3_emit_init(struct pop3_emit *e, bool top, uint64_t lines);
/* pop3_emit_run - append the next part of message p[0..n) to out: CRLF
 * lines, a '.' doubled at the start of a line, and after the last line
 * the terminating ".\r\n" (then e->done). Stops once about budget bytes
 * were appended (a line ending or a stuffed dot may pass it by two);
 * the same e and message continue it. Returns the bytes appended; a call
 * before done always appends at least one. */
size_t pop3_emit_run(struct pop3_emit *e, const char *p, size_t n, struct buf *out, size_t budget);

#endif
