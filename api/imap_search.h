/* imap_search.h - SEARCH criteria (RFC 3501 6.4.4): parsed into a tree
 * once per command, matched against one message at a time.
 *
 * Pure. Strings point into the command buffer (which must outlive the
 * tree); sequence sets are allocated (imap_search_free). Substrings match
 * ASCII case-insensitively in the stored bytes (no decoding); dates compare
 * whole days, the internal date in UTC and the Date: field as written.
 * There are no keywords and no \Recent here: KEYWORD, NEW and RECENT match
 * nothing, UNKEYWORD and OLD everything.
 */
#ifndef RP_IMAP_SEARCH_H
#define RP_IMAP_SEARCH_H

#include <stdbool.h>
#include <stdint.h>

#include "imap_parse.h"

#define IMAP_SEARCH_DEPTH 32 /* nesting of NOT, OR and parentheses */

struct imap_search_node {
	uint8_t key;           /* what it tests (private to imap_search.c) */
	int32_t child, next;   /* AND, OR, NOT: operands; next: the sibling (-1 = none) */
	uint32_t num;          /* LARGER, SMALLER */
	int64_t days;          /* dates: days since 1970-01-01 */
	struct imap_str str;   /* the substring */
	struct imap_str field; /* HEADER's field name */
	struct imap_seqset set;
	bool uid; /* set holds UIDs */
};

struct imap_search {
	struct imap_search_node *nodes; /* allocated */
	unsigned n, cap;
	int root;
	bool need_data; /* some criterion reads the message */
};

enum imap_search_status {
	IMAP_SEARCH_OK,
	IMAP_SEARCH_BAD,        /* syntax: BAD */
	IMAP_SEARCH_BADCHARSET, /* NO [BADCHARSET (US-ASCII UTF-8)] */
};

/* imap_search_parse - the criteria after "SEARCH SP" up to the end of the
 * command, CHARSET included. On failure q is freed. */
enum imap_search_status imap_search_parse(struct imap_parser *ps, struct imap_search *q);
/* imap_search_resolve - "*" in sets: the last sequence number and UID. */
void imap_search_resolve(struct imap_search *q, uint32_t last_seq, uint32_t last_uid);
/* imap_search_free - release the tree. */
void imap_search_free(struct imap_search *q);

/* One message, as criteria see it. */
struct imap_search_msg {
	uint32_t seq, uid;
	uint8_t flags; /* MBOX_* */
	uint64_t date_ms;
	const char *data; /* may be NULL unless need_data */
	size_t len;
};

/* imap_search_match - whether m meets every criterion. */
bool imap_search_match(const struct imap_search *q, const struct imap_search_msg *m);

/* imap_sent_days - the day of a Date: field value ("[Mon, ]2 Jan 2006 ...")
 * as written; false when it is not one. */
bool imap_sent_days(const char *v, size_t n, int64_t *days);

#endif
