/* fuzz_imap_mime.c - what the bounce mailbox tells IMAP clients about a
 * stored message (api/imap_mime.c, api/imap_envelope.c, api/imap_fetch.c,
 * api/imap_search.c), the message being whatever a remote server sent to
 * the bounce MX: the MIME tree, BODYSTRUCTURE and BODY of every entity,
 * ENVELOPE with address lists and groups, header field iteration and
 * unfolding, section lookup, FETCH of a fixed set of items and SEARCH
 * with a fixed set of criteria.
 *
 * Input: the stored message. Oracles: every entity lies inside the
 * message and inside its parent; the tree links are consistent; header
 * fields found lie inside the message and come in order.
 */
#include <stdlib.h>
#include <string.h>

#include "api/imap_fetch.h"
#include "api/imap_mime.h"
#include "api/imap_parse.h"
#include "api/imap_search.h"
#include "fuzz.h"

static const char fetch_items[] =
    "(FLAGS UID INTERNALDATE RFC822.SIZE ENVELOPE BODY BODYSTRUCTURE BODY.PEEK[HEADER] "
    "BODY.PEEK[TEXT] BODY.PEEK[1] BODY.PEEK[1.MIME] BODY.PEEK[2.1.HEADER] "
    "BODY.PEEK[HEADER.FIELDS (From Subject)] BODY.PEEK[HEADER.FIELDS.NOT (Received)] "
    "BODY.PEEK[1.2.3]<2.40> BODY.PEEK[]<0.100> RFC822.HEADER)\r\n";
static const char search_criteria[] =
    "OR (FROM \"daemon\" SUBJECT fail) (NOT HEADER Content-Type report) BODY 5.1.1 "
    "TEXT x SENTBEFORE 1-Jan-2030 SENTSINCE 1-Jan-1990 LARGER 10 SMALLER 100000\r\n";

static void check_tree(const struct imap_mime *m, size_t len)
{
	fuzz_check(m->n >= 1 && m->n <= IMAP_MIME_PARTS);
	for (unsigned i = 0; i < m->n; i++) {
		const struct imap_mime_part *p = &m->part[i];
		fuzz_check(p->hdr <= len && p->hdr_len <= len - p->hdr);
		fuzz_check(p->body <= len && p->body_len <= len - p->body);
		fuzz_check(p->type && p->subtype);
		if (p->parent >= 0) {
			const struct imap_mime_part *up = &m->part[p->parent];
			fuzz_check((unsigned)p->parent < i);
			fuzz_check(p->hdr >= up->body &&
			           p->body + p->body_len <= up->body + up->body_len);
		} else {
			fuzz_check(i == 0);
		}
		unsigned kids = 0;
		for (int c = p->child; c >= 0; c = m->part[c].next) {
			fuzz_check((unsigned)c < m->n && m->part[c].parent == (int)i);
			fuzz_check(++kids <= m->n);
		}
		fuzz_check(kids == p->nchildren);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *msg = fuzz_copy(data, size);
	struct imap_fetch_scratch *sc = calloc(1, sizeof(*sc));
	struct imap_mime *m = &sc->mime;
	imap_mime_parse(m, msg, size);
	check_tree(m, size);
	struct buf out = { 0 };
	for (unsigned i = 0; i < m->n; i++) {
		imap_bodystructure(&out, m, i, true);
		imap_bodystructure(&out, m, i, false);
	}
	uint32_t path[3] = { 1, 2, 1 };
	for (unsigned k = 0; k <= 3; k++) {
		int e = imap_mime_find(m, path, k);
		fuzz_check(e >= -1 && e < (int)m->n);
	}
	const struct imap_mime_part *root = &m->part[0];
	imap_envelope(&out, msg + root->hdr, root->hdr_len);
	size_t off = 0, last = 0;
	struct imap_header_field f;
	while (imap_header_next(msg + root->hdr, root->hdr_len, &off, &f)) {
		fuzz_check(f.start >= last && f.end > f.start && f.end <= root->hdr_len);
		fuzz_check(f.name >= msg && f.value + f.value_len <= msg + size);
		last = f.end;
		size_t ul;
		imap_unfold(&sc->tmp, f.value, f.value_len, &ul);
		imap_address_list(&out, f.value, f.value_len);
	}
	const char *v;
	size_t vl;
	imap_header_find(msg + root->hdr, root->hdr_len, "Date", &v, &vl);
	buf_free(&out);

	/* FETCH and SEARCH as a client would run them on it. */
	char cmd[sizeof(fetch_items)], crit[sizeof(search_criteria)];
	memcpy(cmd, fetch_items, sizeof(cmd));
	memcpy(crit, search_criteria, sizeof(crit));
	struct imap_parser ps;
	struct imap_fetch fe = { 0 };
	imap_parser_init(&ps, cmd, sizeof(cmd) - 1);
	fuzz_check(imap_fetch_parse(&ps, &fe));
	struct imap_fetch_msg fm = {
		.seq = 1, .uid = 7, .date_ms = 1136214245000ull, .data = msg, .len = size
	};
	struct buf resp = { 0 };
	imap_fetch_write(&resp, &fe, &fm, sc);
	imap_fetch_free(&fe);
	buf_free(&resp);
	struct imap_search q = { 0 };
	imap_parser_init(&ps, crit, sizeof(crit) - 1);
	fuzz_check(imap_search_parse(&ps, &q) == IMAP_SEARCH_OK);
	imap_search_resolve(&q, 1, 7);
	struct imap_search_msg sm = {
		.seq = 1, .uid = 7, .date_ms = 1136214245000ull, .data = msg, .len = size
	};
	imap_search_match(&q, &sm);
	imap_search_free(&q);
	buf_free(&sc->tmp);
	free(sc);
	free(msg);
	return 0;
}
