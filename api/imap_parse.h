/* imap_parse.h - the IMAP4rev1 codec (RFC 3501 section 9): commands framed
 * with their literals, the tokens of their arguments, sequence sets and
 * dates; and the writers for the strings responses carry.
 *
 * Pure. The framer and the tokenizer never allocate: tokens point into the
 * caller's command buffer, which quoted strings are unescaped in (so it
 * must be writable and outlive the tokens). Sequence sets are the one
 * exception: their ranges are allocated (imap_seqset_free).
 */
#ifndef RP_IMAP_PARSE_H
#define RP_IMAP_PARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/buf.h"

#define IMAP_LINE_MAX    8192         /* one line of a command, literals not counted */
#define IMAP_LITERAL_MAX 65536        /* one literal (nobody appends here) */
#define IMAP_COMMAND_MAX (256u << 10) /* a whole command with its literals */

/* ---- framing ------------------------------------------------------------ */

enum imap_frame_status {
	IMAP_FRAME_MORE,        /* not a whole command yet: call again with more bytes */
	IMAP_FRAME_DONE,        /* a whole command: len bytes, final CRLF included */
	IMAP_FRAME_CONTINUE,    /* a synchronising literal was announced: send the
	                         * continuation request ("+ ..."), then call again */
	IMAP_FRAME_LONG_LINE,   /* a line over IMAP_LINE_MAX; len = through its LF
	                         * when it has one, else 0 (skip up to the next LF) */
	IMAP_FRAME_BIG_LITERAL, /* a literal over IMAP_LITERAL_MAX; len = through the
	                         * line announcing it, sync = its form */
	IMAP_FRAME_TOO_BIG,     /* the command with its literals over IMAP_COMMAND_MAX */
};

/* Where the framer is in the command at the front of the input. Zeroed (or
 * imap_frame_reset) before each command. */
struct imap_frame {
	size_t pos;        /* bytes scanned */
	size_t line_start; /* where the current line begins */
	size_t lit_end;    /* end of the literal being received (0 = none) */
	size_t len;        /* result length (see the statuses) */
	uint32_t literal;  /* the size the last literal announced */
	bool sync;         /* that literal is synchronising ({n}, not {n+}) */
};

/* imap_frame_reset - start on a new command. */
void imap_frame_reset(struct imap_frame *f);
/* imap_frame_scan - look at the input p[0..n) (the command starts at p;
 * n only grows between calls, until the caller consumes the command). */
enum imap_frame_status imap_frame_scan(struct imap_frame *f, const char *p, size_t n);
/* imap_frame_tag - the tag at the start of a command line, for answering a
 * command that cannot be parsed; false when there is none. */
bool imap_frame_tag(const char *p, size_t n, const char **tag, size_t *len);

/* ---- tokens ------------------------------------------------------------- */

/* A token: bytes in the command buffer, not NUL-terminated. */
struct imap_str {
	char *p;
	size_t n;
};

/* The rest of a command, being parsed. end is before the final CRLF. */
struct imap_parser {
	char *p, *end;
};

/* imap_parser_init - parse a framed command of n bytes (its CRLF included). */
void imap_parser_init(struct imap_parser *ps, char *cmd, size_t n);
/* imap_p_eol - nothing is left. */
bool imap_p_eol(const struct imap_parser *ps);
/* imap_p_peek - the next byte (0 at the end). */
char imap_p_peek(const struct imap_parser *ps);
/* imap_p_char - consume c when it comes next. */
bool imap_p_char(struct imap_parser *ps, char c);
/* imap_p_sp - exactly one space. */
bool imap_p_sp(struct imap_parser *ps);
/* imap_p_tag - a tag (ATOM-CHARs but '+'). */
bool imap_p_tag(struct imap_parser *ps, struct imap_str *out);
/* imap_p_atom - one or more ATOM-CHARs. */
bool imap_p_atom(struct imap_parser *ps, struct imap_str *out);
/* imap_p_string - a quoted string (unescaped in place) or a literal. */
bool imap_p_string(struct imap_parser *ps, struct imap_str *out);
/* imap_p_astring - an atom (ASTRING-CHARs) or a string. */
bool imap_p_astring(struct imap_parser *ps, struct imap_str *out);
/* imap_p_list_mailbox - a LIST pattern: list-chars ('%' and '*' too) or a string. */
bool imap_p_list_mailbox(struct imap_parser *ps, struct imap_str *out);
/* imap_p_number - a number that fits 32 bits. */
bool imap_p_number(struct imap_parser *ps, uint32_t *out);
/* imap_p_date - "d-Mon-yyyy", quoted or not: days since 1970-01-01. */
bool imap_p_date(struct imap_parser *ps, int64_t *days);
/* imap_str_is - the token equals s, ASCII case-insensitive. */
bool imap_str_is(const struct imap_str *t, const char *s);

/* ---- sequence sets ------------------------------------------------------ */

#define IMAP_STAR 0 /* "*" in a set, until resolved (0 is no number) */

struct imap_range {
	uint32_t lo, hi;
};

struct imap_seqset {
	struct imap_range *r; /* allocated; imap_seqset_free */
	unsigned n;
	bool star; /* "*" occurs */
};

/* imap_p_seqset - a sequence-set (numbers are non-zero; "*" allowed). */
bool imap_p_seqset(struct imap_parser *ps, struct imap_seqset *set);
/* imap_seqset_resolve - "*" becomes star, each range lo <= hi, sorted and
 * merged: afterwards ranges are disjoint and increasing. */
void imap_seqset_resolve(struct imap_seqset *set, uint32_t star);
/* imap_seqset_has - v is in a resolved set. */
bool imap_seqset_has(const struct imap_seqset *set, uint32_t v);
/* imap_seqset_free - release the ranges; the set is empty again. */
void imap_seqset_free(struct imap_seqset *set);

/* ---- dates -------------------------------------------------------------- */

/* imap_days_from_civil - days since 1970-01-01 of a Gregorian date. */
int64_t imap_days_from_civil(int64_t y, unsigned m, unsigned d);
/* imap_month - 1..12 for "Jan".."Dec" (any case), 0 otherwise. */
unsigned imap_month(const char *p, size_t n);

/* ---- writers ------------------------------------------------------------ */

/* imap_put_string - a quoted string when it can be one (7-bit, no CR, LF or
 * NUL, not too long), a literal otherwise. */
void imap_put_string(struct buf *b, const char *p, size_t n);
/* imap_put_nstring - imap_put_string, or NIL for p == NULL. */
void imap_put_nstring(struct buf *b, const char *p, size_t n);
/* imap_put_astring - an atom when the bytes are one, a string otherwise. */
void imap_put_astring(struct buf *b, const char *p, size_t n);
/* imap_put_literal - "{n}" CRLF and the bytes. */
void imap_put_literal(struct buf *b, const char *p, size_t n);
/* imap_put_date_time - INTERNALDATE: "dd-Mon-yyyy hh:mm:ss +0000" (UTC). */
void imap_put_date_time(struct buf *b, uint64_t unix_ms);

#endif
