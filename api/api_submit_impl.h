/* api_submit_impl.h - what api_submit.c and api_fields.c share: one
 * message of a request as it is validated, and the field checks that
 * live apart from composing and committing it. */
#ifndef RINGPOST_API_SUBMIT_IMPL_H
#define RINGPOST_API_SUBMIT_IMPL_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/uio.h>

#include "base/buf.h"
#include "base/util.h"
#include "mime.h"
#include "queue/submit.h"

struct api_submit;

struct api_rcpt {
	const char *email; /* JSON string, lives with the JSON document */
	size_t len;
	size_t at;    /* offset of '@' */
	json_t *vars; /* recipient vars object or NULL */
};

struct api_msg {
	struct submission sub;  /* envelope, recipients, prefix, the commit */
	struct api_submit *req; /* the request it belongs to */
	int status;             /* 0 = accepted so far; else its HTTP status */
	char code[24];
	char message[320];
	struct buf body;      /* the shared content (after the prefix) */
	struct buf *variants; /* per-recipient bodies, prefix included */
	struct iovec *viov;
	struct api_rcpt *to;
	unsigned nrcpt;
};

/* The parts of a message that the JSON fields give, shared by every
 * recipient's copy. Strings point into the JSON document. */
struct mime_parts {
	const char *from, *subject, *text, *html;
	size_t subj_len, text_len, html_len;
	json_t *vars;           /* message vars, or NULL */
	struct mime_header *hv; /* extra header fields */
	unsigned nh;
	const char *to_override;  /* headers.To */
	const char *unsub_url;    /* unsubscribe.url (https), or NULL */
	const char *unsub_mailto; /* unsubscribe.mailto, or NULL */
	size_t unsub_url_len, unsub_mailto_len;
	struct mime_attachment *att;
	unsigned natt;
	struct buf att_data; /* the decoded attachments */
};

/* api_msg_error - the message's first error (later ones are dropped). */
void api_msg_error(struct api_msg *m, int status, const char *code, const char *fmt, ...)
    RP_PRINTF(4, 5);
/* api_check_address - a valid address, else a 422 naming field. */
bool api_check_address(struct api_msg *m, const char *field, const char *a, size_t n, size_t *at);
/* api_parse_headers - the "headers" object: extra fields, with To apart. */
bool api_parse_headers(struct api_msg *m, json_t *hdrs, struct mime_parts *mp);
/* api_parse_attachments - decoded into one buffer, then pointed at. */
bool api_parse_attachments(struct api_msg *m, json_t *atts, struct mime_parts *mp);

#endif
