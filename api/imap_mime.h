/* imap_mime.h - what IMAP tells about a message's structure (RFC 3501
 * 7.4.2): a MIME parse into a tree of entities, BODYSTRUCTURE and BODY
 * from it, ENVELOPE from a header section, and the sections BODY[...] names.
 *
 * Pure; no allocation: the tree lives in a caller-provided struct whose
 * entities point into the message, which must outlive it. Malformed input
 * never fails: it gives some tree (RFC 2046 defaults, missing boundaries
 * end at the parent's end, nesting past IMAP_MIME_DEPTH and parts past
 * IMAP_MIME_PARTS are not looked into).
 */
#ifndef RP_IMAP_MIME_H
#define RP_IMAP_MIME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/buf.h"

#define IMAP_MIME_PARTS 256 /* entities per message */
#define IMAP_MIME_DEPTH 16  /* nesting of multiparts and messages */

enum imap_mime_kind {
	IMAP_MIME_LEAF,      /* anything that is not looked into */
	IMAP_MIME_MULTIPART, /* children: its body parts (maybe none) */
	IMAP_MIME_MESSAGE,   /* message/rfc822: one child, the encapsulated message */
};

/* One entity: a header section and a body (offsets into the message). */
struct imap_mime_part {
	size_t hdr, hdr_len;        /* the header section, blank line included */
	size_t body, body_len;      /* the body */
	uint32_t lines;             /* LFs in the body (text and message/rfc822) */
	uint8_t kind;               /* enum imap_mime_kind */
	bool defaulted;             /* no usable Content-Type: the default applies */
	bool is_message;            /* a message's top entity (the root, or an
	                             * encapsulated message): HEADER and TEXT apply */
	const char *type, *subtype; /* media type and subtype (in the message, or
	                             * static strings for defaults) */
	uint32_t type_len, subtype_len;
	const char *params; /* the Content-Type value after the subtype */
	size_t params_len;
	int16_t parent, child, next; /* tree links (-1 = none) */
	uint16_t nchildren;
};

struct imap_mime {
	const char *msg; /* the message parsed */
	size_t len;
	unsigned n;       /* entities; part[0] is the whole message */
	size_t close_end; /* parsing: where the last close delimiter's line ended */
	struct imap_mime_part part[IMAP_MIME_PARTS];
};

/* imap_mime_parse - the tree of msg[0..len). */
void imap_mime_parse(struct imap_mime *m, const char *msg, size_t len);
/* imap_bodystructure - append BODYSTRUCTURE (extended) or BODY of entity i. */
void imap_bodystructure(struct buf *out, const struct imap_mime *m, unsigned i, bool extended);
/* imap_mime_find - the entity a section part path names ("1.2" as {1,2}):
 * its index, or -1 when there is none. With n == 0, the root. */
int imap_mime_find(const struct imap_mime *m, const uint32_t *path, unsigned n);

/* imap_envelope - append ENVELOPE for the header section hdr[0..len). */
void imap_envelope(struct buf *out, const char *hdr, size_t len);
/* imap_address_list - append an address list (RFC 3501 address
 * structures, groups included) parsed from a header value, NIL when empty. */
void imap_address_list(struct buf *out, const char *v, size_t n);

/* ---- header sections ---------------------------------------------------- */

/* One header field as imap_header_next finds it. */
struct imap_header_field {
	const char *name; /* field name */
	size_t name_len;
	const char *value; /* after the colon and leading blanks; folded lines
	                    * included, the final line end not */
	size_t value_len;
	size_t start, end; /* the whole field, final line end included */
};

/* imap_header_next - the field at *off in hdr[0..len), then *off moves past
 * it; false at the end of the fields (the blank line or a non-field line). */
bool imap_header_next(const char *hdr, size_t len, size_t *off, struct imap_header_field *f);
/* imap_header_find - the first field called name; false when absent. */
bool imap_header_find(const char *hdr, size_t len, const char *name, const char **v, size_t *vl);
/* imap_unfold - v without line ends and with outer blanks trimmed, into out
 * (cleared first); returns out's bytes. */
const char *imap_unfold(struct buf *out, const char *v, size_t n, size_t *outlen);

#endif
