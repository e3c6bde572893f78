/* imap_fetch.h - FETCH (RFC 3501 6.4.5, 7.4.2): the data items a command
 * asks for, and one message's FETCH response.
 *
 * Pure: items are parsed from a command (their header field names point
 * into the command buffer, which must outlive them); responses are appended
 * to a buffer, message data as literals.
 */
#ifndef RP_IMAP_FETCH_H
#define RP_IMAP_FETCH_H

#include <stdbool.h>
#include <stdint.h>

#include "base/buf.h"
#include "imap_mime.h"
#include "imap_parse.h"

#define IMAP_PART_DEPTH 16 /* numbers in a section part ("1.2.3") */

enum imap_fetch_att {
	IMAP_FA_FLAGS,
	IMAP_FA_UID,
	IMAP_FA_INTERNALDATE,
	IMAP_FA_SIZE,          /* RFC822.SIZE */
	IMAP_FA_ENVELOPE,      /* ENVELOPE */
	IMAP_FA_BODY,          /* BODY: the structure without extension data */
	IMAP_FA_BODYSTRUCTURE, /* BODYSTRUCTURE */
	IMAP_FA_SECTION,       /* BODY[...] and BODY.PEEK[...] */
	IMAP_FA_RFC822,        /* BODY[], named RFC822 */
	IMAP_FA_RFC822_HEADER, /* BODY.PEEK[HEADER], named RFC822.HEADER */
	IMAP_FA_RFC822_TEXT,   /* BODY[TEXT], named RFC822.TEXT */
};

enum imap_section {
	IMAP_SEC_ALL,        /* BODY[] or BODY[1.2]: the whole message, or a part's body */
	IMAP_SEC_HEADER,     /* HEADER */
	IMAP_SEC_FIELDS,     /* HEADER.FIELDS (...) */
	IMAP_SEC_FIELDS_NOT, /* HEADER.FIELDS.NOT (...) */
	IMAP_SEC_TEXT,       /* TEXT */
	IMAP_SEC_MIME,       /* MIME (after a part number) */
};

struct imap_fetch_item {
	uint8_t att;     /* enum imap_fetch_att */
	uint8_t section; /* enum imap_section (IMAP_FA_SECTION) */
	bool peek;       /* BODY.PEEK: \Seen is not set */
	bool partial;    /* <start.count> */
	uint8_t nparts;
	uint32_t part[IMAP_PART_DEPTH];
	uint32_t start, count;
	struct imap_str *fields; /* HEADER.FIELDS names (allocated; into the command) */
	unsigned nfields;
};

struct imap_fetch {
	struct imap_fetch_item *items; /* allocated */
	unsigned n, cap;
	bool need_data; /* some item reads the message */
	bool need_mime; /* some item needs the MIME tree */
	bool sets_seen; /* BODY[...] without PEEK, RFC822, RFC822.TEXT */
	bool has_flags, has_uid;
};

/* imap_fetch_parse - the items after "FETCH set SP": a macro (ALL, FAST,
 * FULL), one item or a parenthesised list. False on bad syntax (f is then
 * freed). */
bool imap_fetch_parse(struct imap_parser *ps, struct imap_fetch *f);
/* imap_fetch_add - one more item of a kind without arguments (UID FETCH
 * adds UID). */
void imap_fetch_add(struct imap_fetch *f, enum imap_fetch_att att);
/* imap_fetch_free - release the items. */
void imap_fetch_free(struct imap_fetch *f);

/* One message, as the response is made from it. */
struct imap_fetch_msg {
	uint32_t seq, uid;
	uint8_t flags; /* MBOX_* */
	uint64_t date_ms;
	const char *data; /* the message (may be NULL when no item reads it) */
	size_t len;
	bool add_flags; /* the flags changed: FLAGS goes out even if not asked */
};

/* Scratch memory reused from message to message. */
struct imap_fetch_scratch {
	struct imap_mime mime;
	struct buf tmp;
};

/* imap_fetch_write - append "* seq FETCH (...)" CRLF for m. */
void imap_fetch_write(struct buf *out, const struct imap_fetch *f, const struct imap_fetch_msg *m,
                      struct imap_fetch_scratch *sc);
/* imap_put_flags - "(\Seen ...)" for MBOX_* flags. */
void imap_put_flags(struct buf *out, uint8_t flags);

#endif
