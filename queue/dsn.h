/* dsn.h - delivery status notifications (RFC 3464 in RFC 6522 multipart/report).
 *
 * Builds the whole DSN message from what the caller read from the spool;
 * only its MIME boundary is not a function of the input (128 random bits,
 * checked not to occur in the quoted message). The caller decides whether
 * one is due (never for a bounce, never for NOTIFY=NEVER).
 */
#ifndef RP_DSN_H
#define RP_DSN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/buf.h"

struct dsn_rcpt {
	const char *addr; /* Final-Recipient */
	size_t addr_len;
	const char *orcpt; /* Original-Recipient as given ("rfc822;a@b"), or NULL */
	size_t orcpt_len;
	const char *action; /* "failed", "delayed", "delivered" */
	const char *status; /* "5.1.1" */
	const char *diag;   /* the remote reply or our description */
	bool diag_smtp;     /* diag is an SMTP reply (Diagnostic-Code: smtp;) */
	const char *remote; /* Remote-MTA host or address, or NULL */
	uint64_t last_attempt_ms;
};

struct dsn_info {
	const char *reporting_mta; /* our hostname */
	uint64_t queue_id;
	const char *envid; /* Original-Envelope-Id, may be NULL */
	size_t envid_len;
	uint64_t arrival_ms;
	uint64_t now_ms;
	const char *sender; /* the original envelope sender (To: of the DSN) */
	size_t sender_len;
	const struct dsn_rcpt *rcpts;
	unsigned nrcpts;
	const char *original; /* the original message, or its header section */
	size_t original_len;
	bool full; /* original is the full message (RET=FULL) */
};

/* dsn_build - append the DSN message (CRLF lines) to out. */
void dsn_build(const struct dsn_info *d, struct buf *out);

#endif
