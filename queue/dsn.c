/* dsn.c - RFC 3464 delivery status notifications (see dsn.h).
 *
 * Layout (RFC 6522):
 *   multipart/report; report-type=delivery-status
 *     text/plain                 what happened, for people
 *     message/delivery-status    per-message and per-recipient fields
 *     text/rfc822-headers        the original header section (RET=HDRS or
 *     or message/rfc822          unspecified), or the whole message (RET=FULL)
 */
#include "dsn.h"

#include <stdio.h>
#include <string.h>

#include "base/util.h"

/* printable - append s[0..n) with control bytes replaced (field values). */
static void printable(struct buf *out, const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		char ch = (c < 32 || c == 127) ? ' ' : (char)c;
		buf_append(out, &ch, 1);
	}
}

/* remote_mta - the Remote-MTA field from the relay as the client names it
 * ("mx.example[192.0.2.1]:25", "192.0.2.1:25", "[2001:db8::1]:25"): the
 * exchanger's host name, or the address as a literal when there is none.
 * RFC 3464 2.3.5 wants an MTA name of type dns, never a port. */
static void remote_mta(struct buf *out, const char *remote)
{
	size_t n = strlen(remote);
	const char *lb = strchr(remote, '[');
	buf_puts(out, "Remote-MTA: dns; ");
	if (lb && lb > remote) { /* name[address]:port */
		printable(out, remote, (size_t)(lb - remote));
	} else if (lb) { /* [address]:port */
		const char *rb = strchr(lb, ']');
		printable(out, lb, rb ? (size_t)(rb - lb) + 1 : n);
	} else { /* address:port */
		const char *colon = strrchr(remote, ':');
		buf_puts(out, "[");
		printable(out, remote, colon ? (size_t)(colon - remote) : n);
		buf_puts(out, "]");
	}
	buf_puts(out, "\r\n");
}

/* occurs - whether text a DSN quotes (the original, the diagnostics, the
 * addresses) holds b: then b cannot be its boundary. */
static bool occurs(const struct dsn_info *d, const char *b)
{
	size_t bl = strlen(b);
	if (d->original && memmem(d->original, d->original_len, b, bl))
		return true;
	if (d->envid && memmem(d->envid, d->envid_len, b, bl))
		return true;
	for (unsigned i = 0; i < d->nrcpts; i++) {
		const struct dsn_rcpt *r = &d->rcpts[i];
		if (memmem(r->addr, r->addr_len, b, bl) || strstr(r->diag, b) ||
		    (r->orcpt && memmem(r->orcpt, r->orcpt_len, b, bl)) ||
		    (r->remote && strstr(r->remote, b)))
			return true;
	}
	return false;
}

/* dsn_boundary - "=_rp_dsn_" and 128 bits from the kernel's CSPRNG: no one
 * can predict it (not from the queue id, not from the time) to end a part
 * early with text in the returned message, and it occurs nowhere in what
 * the DSN quotes (checked; drawn again in the 2^-128 case). */
static void dsn_boundary(const struct dsn_info *d, char out[48])
{
	static const char hex[] = "0123456789abcdef";
	do {
		unsigned char r[16];
		if (!rp_random_bytes(r, sizeof(r)))
			rp_panic("getrandom failed: no DSN boundary can be made");
		memcpy(out, "=_rp_dsn_", 9);
		for (size_t i = 0; i < sizeof(r); i++) {
			out[9 + 2 * i] = hex[r[i] >> 4];
			out[10 + 2 * i] = hex[r[i] & 15];
		}
		out[41] = '\0';
	} while (occurs(d, out));
}

static void date_field(struct buf *out, const char *name, uint64_t ms)
{
	char date[64];
	rp_rfc5322_date(ms, date, sizeof(date));
	buf_printf(out, "%s: %s\r\n", name, date);
}

void dsn_build(const struct dsn_info *d, struct buf *out)
{
	char id[17], boundary[48];
	rp_id_format(d->queue_id, id);
	dsn_boundary(d, boundary);
	bool delayed = d->nrcpts && !strcmp(d->rcpts[0].action, "delayed");

	date_field(out, "Date", d->now_ms);
	buf_printf(out, "From: Mail Delivery System <MAILER-DAEMON@%s>\r\n", d->reporting_mta);
	buf_puts(out, "To: <");
	printable(out, d->sender, d->sender_len);
	buf_puts(out, ">\r\n");
	buf_printf(out, "Subject: %s\r\n",
	           delayed ? "Delayed Mail (still being retried)"
	                   : "Undelivered Mail Returned to Sender");
	buf_printf(out, "Message-ID: <%s.dsn.%llu@%s>\r\n", id, (unsigned long long)d->now_ms,
	           d->reporting_mta);
	buf_puts(out, "Auto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\n");
	buf_printf(out,
	           "Content-Type: multipart/report; report-type=delivery-status;\r\n"
	           "\tboundary=\"%s\"\r\n\r\n",
	           boundary);
	buf_puts(out, "This is a MIME-encapsulated message.\r\n\r\n");

	/* Human-readable part. */
	buf_printf(out,
	           "--%s\r\nContent-Type: text/plain; charset=utf-8\r\n"
	           "Content-Transfer-Encoding: 8bit\r\n\r\n",
	           boundary);
	buf_printf(out, "This is the mail system at host %s.\r\n\r\n", d->reporting_mta);
	if (delayed)
		buf_puts(
		    out,
		    "Your message could not be delivered yet. It will be tried again.\r\n\r\n");
	else
		buf_puts(out, "I'm sorry to have to inform you that your message could not\r\n"
		              "be delivered to one or more recipients.\r\n\r\n");
	for (unsigned i = 0; i < d->nrcpts; i++) {
		const struct dsn_rcpt *r = &d->rcpts[i];
		buf_puts(out, "<");
		printable(out, r->addr, r->addr_len);
		buf_puts(out, ">: ");
		if (r->remote) {
			buf_puts(out, "host ");
			printable(out, r->remote, strlen(r->remote));
			buf_puts(out, " said: ");
		}
		printable(out, r->diag, strlen(r->diag));
		buf_puts(out, "\r\n\r\n");
	}

	/* Machine-readable part. */
	buf_printf(out, "--%s\r\nContent-Type: message/delivery-status\r\n\r\n", boundary);
	buf_printf(out, "Reporting-MTA: dns; %s\r\nX-Ringpost-Queue-ID: %s\r\n", d->reporting_mta,
	           id);
	if (d->envid && d->envid_len) {
		buf_puts(out, "Original-Envelope-Id: ");
		printable(out, d->envid, d->envid_len);
		buf_puts(out, "\r\n");
	}
	date_field(out, "Arrival-Date", d->arrival_ms);
	for (unsigned i = 0; i < d->nrcpts; i++) {
		const struct dsn_rcpt *r = &d->rcpts[i];
		buf_puts(out, "\r\n");
		if (r->orcpt && r->orcpt_len) {
			buf_puts(out, "Original-Recipient: ");
			printable(out, r->orcpt, r->orcpt_len);
			buf_puts(out, "\r\n");
		}
		buf_puts(out, "Final-Recipient: rfc822; ");
		printable(out, r->addr, r->addr_len);
		buf_printf(out, "\r\nAction: %s\r\nStatus: %s\r\n", r->action, r->status);
		if (r->remote)
			remote_mta(out, r->remote);
		buf_printf(out, "Diagnostic-Code: %s; ", r->diag_smtp ? "smtp" : "X-ringpost");
		printable(out, r->diag, strlen(r->diag));
		buf_puts(out, "\r\n");
		if (r->last_attempt_ms)
			date_field(out, "Last-Attempt-Date", r->last_attempt_ms);
	}
	buf_puts(out, "\r\n");

	/* The original. */
	buf_printf(out, "--%s\r\nContent-Type: %s\r\n\r\n", boundary,
	           d->full ? "message/rfc822" : "text/rfc822-headers");
	buf_append(out, d->original, d->original_len);
	if (d->original_len < 2 || memcmp(d->original + d->original_len - 2, "\r\n", 2))
		buf_puts(out, "\r\n");
	buf_printf(out, "\r\n--%s--\r\n", boundary);
}
