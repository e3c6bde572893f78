/* fuzz_dsn.c - delivery status notifications (queue/dsn.c) built from
 * what remote servers and senders control: the remote replies quoted as
 * diagnostics, remote MTA names, ORCPT and ENVID values, the sender, and
 * the original message returned in the DSN (RET=FULL or its headers).
 *
 * Input: a flags byte, then fields separated by a line "--": sender,
 * envid, then per recipient "addr TAB orcpt TAB remote TAB diag" lines,
 * then the original message. Oracles: the DSN is CRLF lines; parsed back
 * as our own bounce MX would (queue/bounce.c), it is an RFC 3464 DSN for
 * those recipients with the verdict the actions say; parsed as MIME
 * (api/imap_mime.c) it is a multipart/report of exactly three parts,
 * whatever the original or the diagnostics hold (no part can be faked).
 */
#include <stdlib.h>
#include <string.h>

#include "api/imap_mime.h"
#include "base/msg_header.h"
#include "fuzz.h"
#include "queue/bounce.h"
#include "queue/dsn.h"

#define MAX_RCPT 8

static const char *const actions[] = { "failed", "delayed", "delivered" };
static const enum bounce_kind kinds[] = { BOUNCE_FAILED, BOUNCE_DELAYED, BOUNCE_DELIVERED };
static const char *const statuses[] = { "5.1.1", "4.4.1", "2.0.0" };

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_in in = { data, size };
	uint8_t flags = fuzz_u8(&in);
	const uint8_t *f[3] = { 0 };
	size_t fl[3] = { 0 };
	for (unsigned i = 0; i < 3; i++)
		fuzz_field(&in, "\n--\n", &f[i], &fl[i]);
	char *fields[3];
	for (unsigned i = 0; i < 3; i++)
		fields[i] = fuzz_dup(f[i], fl[i]);

	struct dsn_rcpt r[MAX_RCPT];
	unsigned n = 0;
	char *line = fields[2];
	while (line && *line && n < MAX_RCPT) {
		char *next = strchr(line, '\n');
		if (next)
			*next++ = '\0';
		char *part[4] = { line, NULL, NULL, NULL };
		for (unsigned k = 1; k < 4 && part[k - 1]; k++) {
			part[k] = strchr(part[k - 1], '\t');
			if (part[k])
				*part[k]++ = '\0';
		}
		unsigned a = (flags >> 1) % 3;
		r[n] = (struct dsn_rcpt){ .addr = part[0],
			                  .addr_len = strlen(part[0]),
			                  .orcpt = part[1],
			                  .orcpt_len = part[1] ? strlen(part[1]) : 0,
			                  .action = actions[a],
			                  .status = statuses[a],
			                  .diag = part[3] ? part[3] : "",
			                  .diag_smtp = flags & 8,
			                  .remote = part[2],
			                  .last_attempt_ms = 1136214245000ull };
		n++;
		line = next;
	}
	struct buf orig = { 0 }; /* the original as the spool keeps it: CRLF lines */
	buf_append(&orig, in.p, in.n);
	msg_normalize_newlines(&orig, 0);
	struct dsn_info d = { .reporting_mta = "mx.fuzz.test",
		              .queue_id = 0x0123456789abcdefull,
		              .envid = fields[1],
		              .envid_len = fl[1],
		              .arrival_ms = 1136214245000ull,
		              .now_ms = 1136214345000ull,
		              .sender = fields[0],
		              .sender_len = fl[0],
		              .rcpts = r,
		              .nrcpts = n,
		              .original = buf_head(&orig),
		              .original_len = buf_used(&orig),
		              .full = flags & 1 };
	struct buf out = { 0 };
	dsn_build(&d, &out);

	const char *p = buf_head(&out);
	for (size_t i = 0; i + 1 < buf_used(&out); i++)
		if (p[i] == '\n')
			fuzz_check(i > 0 && p[i - 1] == '\r');
	struct imap_mime *mm = malloc(sizeof(*mm));
	imap_mime_parse(mm, p, buf_used(&out));
	fuzz_check(mm->part[0].kind == IMAP_MIME_MULTIPART && mm->part[0].nchildren == 3);
	free(mm);
	if (n) {
		struct bounce_report *rep = malloc(sizeof(*rep));
		bounce_parse(p, buf_used(&out), rep);
		fuzz_check(rep->format == BOUNCE_FMT_DSN);
		fuzz_check(rep->nrcpt + rep->rcpt_dropped == n);
		fuzz_check(rep->kind == kinds[(flags >> 1) % 3]);
		free(rep);
	}
	buf_free(&out);
	buf_free(&orig);
	for (unsigned i = 0; i < 3; i++)
		free(fields[i]);
	return 0;
}
