/* fuzz_imap.c - the IMAP command codec (api/imap_parse.c) and the SEARCH
 * and FETCH specifications (api/imap_search.c, api/imap_fetch.c) as the
 * server runs them: commands framed with their literals from input that
 * arrives in pieces, the tag and the command name, then each command's
 * arguments as imap.c, imap_auth.c, imap_mbox.c and imap_msgs.c read them
 * (astrings, LIST patterns, STATUS items, sequence sets, STORE flags,
 * dates, SEARCH criteria, FETCH items); a parsed SEARCH is matched and a
 * parsed FETCH answered against a small fixed mailbox.
 *
 * Input: what a client sends (commands and literals). Oracles: framing
 * does not depend on how the bytes arrive (up to the first framing
 * error); a command is never longer than the input; a resolved sequence
 * set is sorted and disjoint.
 */
#include <stdlib.h>
#include <string.h>

#include "api/imap_fetch.h"
#include "api/imap_parse.h"
#include "api/imap_search.h"
#include "fuzz.h"
#include "queue/spool.h"

static const char msg1[] =
    "Date: Mon, 2 Jan 2006 15:04:05 +0000\r\nFrom: MAILER-DAEMON@mx.example\r\n"
    "To: bounce-1@bounces.example\r\nSubject: Undelivered\r\nMessage-ID: <1@x>\r\n"
    "Content-Type: multipart/report; report-type=delivery-status; boundary=b\r\n\r\n"
    "--b\r\nContent-Type: text/plain\r\n\r\nfailed\r\n--b\r\n"
    "Content-Type: message/delivery-status\r\n\r\nFinal-Recipient: rfc822; x@y\r\n"
    "Action: failed\r\nStatus: 5.1.1\r\n\r\n--b\r\nContent-Type: message/rfc822\r\n\r\n"
    "From: a@example.org\r\nSubject: hi\r\n\r\noriginal\r\n--b--\r\n";
static const char msg2[] =
    "From: \"Ann\" <a@example.org>, group: b@x, c@y;\r\nSubject: =?utf-8?q?caf=C3=A9?=\r\n"
    "\r\nplain body\r\nsecond line\r\n";
static const char *const mailbox[] = { msg1, msg2, "no header at all\n" };
#define NMSG (sizeof(mailbox) / sizeof(mailbox[0]))

static void check_set(const struct imap_seqset *set)
{
	for (unsigned i = 0; i < set->n; i++) {
		fuzz_check(set->r[i].lo <= set->r[i].hi);
		if (i)
			fuzz_check(set->r[i - 1].hi < set->r[i].lo);
	}
}

static bool seqset(struct imap_parser *ps, struct imap_seqset *set)
{
	if (!imap_p_seqset(ps, set))
		return false;
	imap_seqset_resolve(set, NMSG);
	check_set(set);
	for (uint32_t v = 0; v <= NMSG + 1; v++)
		imap_seqset_has(set, v);
	return true;
}

static void search(struct imap_parser *ps)
{
	struct imap_search q = { 0 };
	if (imap_search_parse(ps, &q) != IMAP_SEARCH_OK)
		return;
	imap_search_resolve(&q, NMSG, NMSG + 10);
	for (unsigned i = 0; i < NMSG; i++) {
		struct imap_search_msg m = { .seq = i + 1,
			                     .uid = i + 11,
			                     .flags = (uint8_t)(i * 5),
			                     .date_ms = 1136214245000ull + i * 86400000ull,
			                     .data = mailbox[i],
			                     .len = strlen(mailbox[i]) };
		imap_search_match(&q, &m);
	}
	imap_search_free(&q);
}

static void fetch(struct imap_parser *ps, bool uid)
{
	struct imap_seqset set = { 0 };
	struct imap_fetch f = { 0 };
	if (!seqset(ps, &set) || !imap_p_sp(ps)) {
		imap_seqset_free(&set);
		return;
	}
	if (imap_fetch_parse(ps, &f)) {
		if (uid)
			imap_fetch_add(&f, IMAP_FA_UID);
		struct imap_fetch_scratch *sc = calloc(1, sizeof(*sc));
		struct buf out = { 0 };
		for (unsigned i = 0; i < NMSG; i++) {
			struct imap_fetch_msg m = { .seq = i + 1,
				                    .uid = i + 11,
				                    .flags = (uint8_t)(i * 7),
				                    .date_ms = 1136214245000ull,
				                    .data = mailbox[i],
				                    .len = strlen(mailbox[i]),
				                    .add_flags = i == 1 };
			imap_fetch_write(&out, &f, &m, sc);
		}
		buf_free(&out);
		buf_free(&sc->tmp);
		free(sc);
		imap_fetch_free(&f);
	}
	imap_seqset_free(&set);
}

static void store(struct imap_parser *ps)
{
	struct imap_seqset set = { 0 };
	struct imap_str item, w;
	if (seqset(ps, &set) && imap_p_sp(ps) && imap_p_atom(ps, &item) && imap_p_sp(ps)) {
		bool list = imap_p_char(ps, '(');
		if (!(list && imap_p_char(ps, ')')))
			do {
				imap_p_char(ps, '\\');
				if (!imap_p_atom(ps, &w))
					break;
			} while (imap_p_sp(ps));
		if (list)
			imap_p_char(ps, ')');
	}
	imap_seqset_free(&set);
}

static void command(char *cmd, size_t n)
{
	struct imap_parser ps;
	struct imap_str tag, name, a, b;
	imap_parser_init(&ps, cmd, n);
	if (imap_p_eol(&ps) || !imap_p_tag(&ps, &tag) || !imap_p_sp(&ps) ||
	    !imap_p_atom(&ps, &name))
		return;
	if (!imap_p_eol(&ps) && !imap_p_sp(&ps))
		return;
	bool uid = imap_str_is(&name, "UID");
	if (uid && (!imap_p_atom(&ps, &name) || !imap_p_sp(&ps)))
		return;
	if (imap_str_is(&name, "LOGIN")) {
		if (imap_p_astring(&ps, &a) && imap_p_sp(&ps) && imap_p_astring(&ps, &b))
			imap_p_eol(&ps);
	} else if (imap_str_is(&name, "AUTHENTICATE")) {
		if (imap_p_atom(&ps, &a) && imap_p_sp(&ps))
			imap_p_atom(&ps, &b);
	} else if (imap_str_is(&name, "SELECT") || imap_str_is(&name, "EXAMINE") ||
	           imap_str_is(&name, "CREATE") || imap_str_is(&name, "SUBSCRIBE")) {
		imap_p_astring(&ps, &a);
	} else if (imap_str_is(&name, "LIST") || imap_str_is(&name, "LSUB")) {
		if (imap_p_astring(&ps, &a) && imap_p_sp(&ps))
			imap_p_list_mailbox(&ps, &b);
	} else if (imap_str_is(&name, "STATUS")) {
		if (imap_p_astring(&ps, &a) && imap_p_sp(&ps) && imap_p_char(&ps, '('))
			do {
				if (!imap_p_atom(&ps, &b))
					break;
			} while (imap_p_sp(&ps));
	} else if (imap_str_is(&name, "FETCH")) {
		fetch(&ps, uid);
	} else if (imap_str_is(&name, "STORE")) {
		store(&ps);
	} else if (imap_str_is(&name, "SEARCH")) {
		search(&ps);
	} else if (imap_str_is(&name, "EXPUNGE") || imap_str_is(&name, "COPY")) {
		struct imap_seqset set = { 0 };
		if (seqset(&ps, &set) && imap_p_sp(&ps))
			imap_p_astring(&ps, &a);
		imap_seqset_free(&set);
	} else if (imap_str_is(&name, "APPEND")) {
		int64_t days;
		if (imap_p_astring(&ps, &a) && imap_p_sp(&ps))
			imap_p_date(&ps, &days);
	} else {
		struct imap_str s;
		while (!imap_p_eol(&ps) && imap_p_string(&ps, &s) && imap_p_sp(&ps))
			;
	}
}

#define NOT_DONE ((size_t)1 << 62) /* in ends[]: that frame was an error */

/* frames - the commands in p[0..n), scanned as bytes arrive: all at once
 * when step is 0, else step bytes more each time. */
static unsigned frames(const char *p, size_t n, size_t step, size_t *ends, unsigned max, bool run)
{
	struct imap_frame f;
	size_t start = 0, avail = step ? RP_MIN(step, n) : n;
	unsigned k = 0, conts = 0;
	imap_frame_reset(&f);
	while (start < n && k < max) {
		enum imap_frame_status st = imap_frame_scan(&f, p + start, avail - start);
		size_t len = 0;
		switch (st) {
		case IMAP_FRAME_CONTINUE: /* "+ Ready" goes out; scan on */
			fuzz_check(++conts < 100000);
			continue;
		case IMAP_FRAME_MORE:
			if (avail == n)
				return k;
			avail = step ? RP_MIN(avail + step, n) : n;
			continue;
		case IMAP_FRAME_DONE:
			fuzz_check(f.len > 0 && f.len <= avail - start);
			len = f.len;
			if (run) {
				char *cmd = fuzz_copy(p + start, len);
				command(cmd, len);
				free(cmd);
			}
			break;
		case IMAP_FRAME_LONG_LINE:
		case IMAP_FRAME_BIG_LITERAL:
		case IMAP_FRAME_TOO_BIG: {
			const char *tag;
			size_t tl;
			imap_frame_tag(p + start, avail - start, &tag, &tl);
			len = f.len;
			if (!len) { /* skip to the next LF */
				const char *nl = memchr(p + start, '\n', avail - start);
				if (!nl)
					return k;
				len = (size_t)(nl - (p + start)) + 1;
			}
			break;
		}
		}
		fuzz_check(len <= avail - start);
		ends[k++] = (start + len) | (st == IMAP_FRAME_DONE ? 0 : NOT_DONE);
		start += len;
		imap_frame_reset(&f);
		if (avail < start)
			avail = start;
	}
	return k;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	enum { MAX = 256 };
	size_t a[MAX], b[MAX];
	char *p = fuzz_copy(data, size);
	unsigned na = frames(p, size, 0, a, MAX, true);
	unsigned nb = frames(p, size, 1 + size % 13, b, MAX, false);
	/* Whole or in pieces, the same commands, up to the first error (a
	 * long line is reported as soon as it is too long, with or without
	 * its end, so what follows may be cut differently). */
	for (unsigned i = 0; i < na && i < nb; i++) {
		if ((a[i] | b[i]) & NOT_DONE)
			break;
		fuzz_check(a[i] == b[i]);
	}
	free(p);
	return 0;
}
