/* imap_mbox.c - the one mailbox, INBOX, as IMAP sessions see it: SELECT,
 * EXAMINE, LIST, LSUB, STATUS, CHECK, CLOSE, UNSELECT, EXPUNGE, IDLE, and
 * the untagged updates (RFC 3501 7.3-7.4, RFC 2177).
 *
 * Each server (shard) keeps a snapshot of the mailbox (UIDs and flags),
 * read again only when the spool's mailbox generation has moved on; a
 * session's view (the UIDs its sequence numbers stand for and the flags it
 * last told the client) is a shared snapshot until it must differ.
 * imap_sync compares view and snapshot: expunges (announced highest first,
 * so no number shifts under the client; held back during FETCH, STORE and
 * SEARCH), flag changes, then new messages (EXISTS); the update from one
 * snapshot to the next is made once and replayed to every view that was
 * the old one. There is no \Recent: RECENT is always 0.
 */
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>

#include "base/log.h"
#include "base/util.h"
#include "imap_impl.h"

#define SYSTEM_FLAGS "(\\Answered \\Flagged \\Deleted \\Seen \\Draft)"

/* ---- snapshots ---------------------------------------------------------- */

static bool snap_add(const struct spool_mbox_entry *e, void *arg)
{
	struct imap_snap *sn = arg;
	if (sn->n == sn->cap) {
		sn->cap = sn->cap ? 2 * sn->cap : 64;
		sn->uids = xrealloc(sn->uids, sn->cap * sizeof(*sn->uids));
		sn->flags = xrealloc(sn->flags, sn->cap);
	}
	sn->uids[sn->n] = e->uid;
	sn->flags[sn->n] = (uint8_t)(e->flags & 0x1f);
	sn->n++;
	return true;
}

static void snap_unref(struct imap_snap *sn)
{
	if (!sn)
		return;
	rp_assert(sn->refs > 0);
	if (--sn->refs)
		return;
	free(sn->uids);
	free(sn->flags);
	free(sn);
}

const struct imap_snap *imap_snap_get(struct imap_server *srv)
{
	struct imap_snap *sn = srv->snap;
	uint64_t gen = spool_mbox_generation(srv->p.spool);
	if (sn && sn->gen == gen)
		return sn;
	if (!sn || sn->refs > 1) { /* views share it: it stays as it is */
		snap_unref(sn);
		sn = srv->snap = xcalloc(1, sizeof(*sn));
		sn->refs = 1;
	}
	sn->n = 0;
	sn->gen = gen - 1; /* not valid until read */
	if (!spool_reader_begin(srv->p.reader))
		return NULL;
	/* The generation was read first: a change committed after it moves
	 * it on, and the next look reads again. */
	spool_mbox_ids(srv->p.reader, &sn->uidvalidity, &sn->uidnext);
	spool_mbox_foreach(srv->p.reader, 1, snap_add, sn);
	spool_reader_end(srv->p.reader);
	sn->gen = gen;
	return sn;
}

/* diff_forget - drop the cached update. */
static void diff_forget(struct imap_server *srv)
{
	snap_unref(srv->diff_from);
	snap_unref(srv->diff_to);
	srv->diff_from = srv->diff_to = NULL;
	buf_free(&srv->diff);
}

void imap_snap_free(struct imap_server *srv)
{
	diff_forget(srv);
	snap_unref(srv->snap);
	srv->snap = NULL;
}

/* ---- views -------------------------------------------------------------- */

/* view_share - the view becomes exactly snapshot sn. */
static void view_share(struct imap_view *v, struct imap_snap *sn)
{
	if (v->shared) {
		snap_unref(v->shared);
	} else {
		free(v->uids);
		free(v->flags);
	}
	sn->refs++;
	v->shared = sn;
	v->uids = sn->uids;
	v->flags = sn->flags;
	v->n = sn->n;
	v->cap = 0;
	v->gen = sn->gen;
	v->gone = false;
}

/* view_own - arrays of its own (room for n entries), the content kept. */
static void view_own(struct imap_view *v, uint32_t n)
{
	if (!v->shared && n <= v->cap)
		return;
	uint32_t cap = RP_MAX(n, v->n + v->n / 4 + 16);
	uint32_t *uids = xmalloc((size_t)cap * sizeof(*uids));
	uint8_t *flags = xmalloc(cap);
	if (v->n) {
		memcpy(uids, v->uids, (size_t)v->n * sizeof(*uids));
		memcpy(flags, v->flags, v->n);
	}
	if (v->shared) {
		snap_unref(v->shared);
		v->shared = NULL;
	} else {
		free(v->uids);
		free(v->flags);
	}
	v->uids = uids;
	v->flags = flags;
	v->cap = cap;
}

void imap_view_free(struct imap_view *v)
{
	if (v->shared) {
		snap_unref(v->shared);
	} else {
		free(v->uids);
		free(v->flags);
	}
	memset(v, 0, sizeof(*v));
}

void imap_view_set_flags(struct imap_view *v, uint32_t idx, uint8_t flags)
{
	if (v->flags[idx] == flags)
		return;
	view_own(v, v->n);
	v->flags[idx] = flags;
}

/* ---- updates ------------------------------------------------------------ */

/* count_gone - entries of the view not in sn (announced highest first when
 * announce; else marked VIEW_GONE in a view of its own). */
static uint32_t count_gone(struct imap_session *s, const struct imap_snap *sn, bool announce)
{
	struct imap_view *v = &s->view;
	struct buf *out = imap_out(s);
	uint32_t gone = 0;
	int64_t j = (int64_t)sn->n - 1;
	for (uint32_t i = v->n; i-- > 0;) {
		while (j >= 0 && sn->uids[j] > v->uids[i])
			j--;
		if (j >= 0 && sn->uids[j] == v->uids[i])
			continue;
		gone++;
		if (announce) {
			buf_printf(out, "* %u EXPUNGE\r\n", i + 1);
		} else if (!(v->flags[i] & VIEW_GONE)) {
			view_own(v, v->n);
			v->flags[i] |= VIEW_GONE;
			v->gone = true;
		}
	}
	return gone;
}

/* flag_changes - FETCH FLAGS for the entries that stay and whose flags
 * moved: numbered without the gone ones when they were announced; the
 * view's flags follow when keep (it will not become the snapshot). */
static void flag_changes(struct imap_session *s, const struct imap_snap *sn, bool expunged,
                         bool keep)
{
	struct imap_view *v = &s->view;
	struct buf *out = imap_out(s);
	uint32_t j = 0, seq = 0;
	for (uint32_t i = 0; i < v->n; i++) {
		while (j < sn->n && sn->uids[j] < v->uids[i])
			j++;
		bool here = j < sn->n && sn->uids[j] == v->uids[i];
		if (!here && expunged)
			continue; /* announced: no longer numbered */
		seq++;
		if (!here || sn->flags[j] == v->flags[i])
			continue;
		buf_printf(out, "* %u FETCH (UID %u FLAGS ", seq, v->uids[i]);
		imap_put_flags(out, sn->flags[j]);
		buf_puts(out, ")\r\n");
		if (keep)
			imap_view_set_flags(v, i, sn->flags[j]);
	}
}

/* new_count - snapshot entries past uid_last (new mail); *first: the first. */
static uint32_t new_count(const struct imap_view *v, const struct imap_snap *sn, uint32_t *first)
{
	uint32_t lo = 0, hi = sn->n;
	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;
		if (sn->uids[mid] <= v->uid_last)
			lo = mid + 1;
		else
			hi = mid;
	}
	*first = lo;
	return sn->n - lo;
}

/* sync_cached - the update from v's snapshot to sn was computed for
 * another view already: the same bytes. False when it was not. */
static bool sync_cached(struct imap_session *s, struct imap_snap *sn, bool expunge_ok)
{
	struct imap_server *srv = s->srv;
	struct imap_view *v = &s->view;
	if (!v->shared || v->shared != srv->diff_from || sn != srv->diff_to ||
	    (srv->diff_gone && !expunge_ok))
		return false;
	buf_append(imap_out(s), buf_head(&srv->diff), buf_used(&srv->diff));
	uint32_t first;
	if (new_count(v, sn, &first))
		v->uid_last = sn->uids[sn->n - 1];
	view_share(v, sn);
	imap_flush(s);
	return true;
}

void imap_sync(struct imap_session *s, bool expunge_ok)
{
	if (s->state != IMAP_SELECTED)
		return;
	struct imap_server *srv = s->srv;
	struct imap_view *v = &s->view;
	struct imap_snap *sn = (struct imap_snap *)imap_snap_get(srv);
	if (!sn || (sn->gen == v->gen && !(expunge_ok && v->gone)) ||
	    sync_cached(s, sn, expunge_ok))
		return;
	struct imap_snap *from = v->shared;
	struct buf *out = imap_out(s);
	size_t mark = buf_used(out);
	uint32_t gone = count_gone(s, sn, expunge_ok);
	flag_changes(s, sn, expunge_ok, gone && !expunge_ok);
	uint32_t first, add = new_count(v, sn, &first);
	if (add)
		buf_printf(out, "* %u EXISTS\r\n", gone && !expunge_ok ? v->n + add : sn->n);
	if (from && from != sn &&
	    (!gone || expunge_ok)) { /* the same for every view that is from */
		diff_forget(srv);
		from->refs++;
		sn->refs++;
		srv->diff_from = from;
		srv->diff_to = sn;
		srv->diff_gone = gone > 0;
		if (buf_used(out) > mark)
			buf_append(&srv->diff, buf_head(out) + mark, buf_used(out) - mark);
	}
	if (!gone || expunge_ok) {
		/* What stays is every snapshot entry up to uid_last, and the new
		 * ones join: the view is the snapshot. */
		view_share(v, sn);
	} else {
		view_own(v, v->n + add);
		if (add) { /* (an empty snapshot has no arrays) */
			memcpy(v->uids + v->n, sn->uids + first, (size_t)add * sizeof(*v->uids));
			memcpy(v->flags + v->n, sn->flags + first, add);
		}
		v->n += add;
		v->gen = sn->gen;
	}
	if (add)
		v->uid_last = sn->uids[sn->n - 1];
	imap_flush(s);
}

void imap_done_sync(struct imap_session *s, bool expunge_ok, const char *fmt, ...)
{
	char text[256];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	imap_sync(s, expunge_ok);
	imap_done(s, "%s", text);
}

/* ---- SELECT, EXAMINE, UNSELECT, CLOSE ----------------------------------- */

/* is_inbox - the one mailbox name there is (any case, RFC 3501 5.1). */
static bool is_inbox(const struct imap_str *name)
{
	return imap_str_is(name, "INBOX");
}

static void deselect(struct imap_session *s)
{
	imap_view_free(&s->view);
	imap_set_state(s, IMAP_AUTH);
}

static void select_mailbox(struct imap_session *s, struct imap_parser *ps, bool readonly)
{
	struct imap_str name;
	if (!imap_p_astring(ps, &name) || !imap_p_eol(ps)) {
		imap_bad(s, "Syntax: %s mailbox", readonly ? "EXAMINE" : "SELECT");
		return;
	}
	if (s->state == IMAP_SELECTED)
		deselect(s); /* RFC 3501 6.3.1: even when this one fails */
	if (!is_inbox(&name)) {
		imap_done(s, "NO [NONEXISTENT] There is only INBOX");
		return;
	}
	const struct imap_snap *sn = imap_snap_get(s->srv);
	if (!sn) {
		imap_done(s, "NO [UNAVAILABLE] The mailbox cannot be read now");
		return;
	}
	struct imap_view *v = &s->view;
	view_share(v, (struct imap_snap *)sn);
	v->uid_last = RP_MAX(sn->n ? sn->uids[sn->n - 1] : 0, sn->uidnext ? sn->uidnext - 1 : 0);
	v->readonly = readonly;
	uint32_t unseen = 0;
	for (uint32_t i = 0; i < v->n && !unseen; i++)
		if (!(v->flags[i] & MBOX_SEEN))
			unseen = i + 1;
	imap_untagged(s, "FLAGS " SYSTEM_FLAGS);
	imap_untagged(s, "%u EXISTS", v->n);
	imap_untagged(s, "0 RECENT");
	if (unseen)
		imap_untagged(s, "OK [UNSEEN %u] First unseen", unseen);
	imap_untagged(s, "OK [UIDVALIDITY %u] UIDs valid", sn->uidvalidity);
	imap_untagged(s, "OK [UIDNEXT %u] Predicted next UID", sn->uidnext);
	imap_untagged(s, "OK [PERMANENTFLAGS %s] Flags permitted", readonly ? "()" : SYSTEM_FLAGS);
	imap_set_state(s, IMAP_SELECTED);
	if (readonly)
		imap_done(s, "OK [READ-ONLY] EXAMINE completed");
	else
		imap_done(s, "OK [READ-WRITE] SELECT completed");
}

void imap_cmd_select(struct imap_session *s, struct imap_parser *ps)
{
	select_mailbox(s, ps, false);
}

void imap_cmd_examine(struct imap_session *s, struct imap_parser *ps)
{
	select_mailbox(s, ps, true);
}

void imap_cmd_unselect(struct imap_session *s, struct imap_parser *ps)
{
	if (!imap_p_eol(ps)) {
		imap_bad(s, "UNSELECT takes no arguments");
		return;
	}
	deselect(s);
	imap_done(s, "OK UNSELECT completed");
}

uint32_t *imap_deleted_uids(struct imap_session *s, const struct imap_seqset *set, unsigned *n)
{
	const struct imap_snap *sn = imap_snap_get(s->srv);
	struct imap_view *v = &s->view;
	uint32_t *uids = xmalloc((v->n + 1) * sizeof(*uids)), j = 0;
	*n = 0;
	for (uint32_t i = 0; sn && i < v->n; i++) {
		while (j < sn->n && sn->uids[j] < v->uids[i])
			j++;
		if (j < sn->n && sn->uids[j] == v->uids[i] && (sn->flags[j] & MBOX_DELETED) &&
		    (!set || imap_seqset_has(set, v->uids[i])))
			uids[(*n)++] = v->uids[i];
	}
	return uids;
}

static void expunged(struct imap_session *s, enum spool_status st)
{
	if (st != SPOOL_OK) {
		imap_done_sync(s, true, "NO [SERVERBUG] The spool refused the expunge");
		return;
	}
	imap_done_sync(s, true, "OK EXPUNGE completed");
}

static void closed(struct imap_session *s, enum spool_status st)
{
	deselect(s);
	if (st != SPOOL_OK)
		imap_done(s, "NO [SERVERBUG] The spool refused the expunge");
	else
		imap_done(s, "OK CLOSE completed");
}

void imap_expunge_uids(struct imap_session *s, uint32_t *uids, unsigned n, bool close)
{
	if (!n) {
		free(uids);
		if (close)
			closed(s, SPOOL_OK);
		else
			expunged(s, SPOOL_OK);
		return;
	}
	imap_spool_write(s, SPOOL_REQ_MBOX_EXPUNGE, uids, n, 0, 0, close ? closed : expunged);
}

void imap_cmd_close(struct imap_session *s, struct imap_parser *ps)
{
	if (!imap_p_eol(ps)) {
		imap_bad(s, "CLOSE takes no arguments");
		return;
	}
	if (s->view.readonly) { /* EXAMINE: nothing is expunged */
		closed(s, SPOOL_OK);
		return;
	}
	unsigned n;
	uint32_t *uids = imap_deleted_uids(s, NULL, &n);
	imap_expunge_uids(s, uids, n, true);
}

void imap_cmd_expunge(struct imap_session *s, struct imap_parser *ps)
{
	if (!imap_p_eol(ps)) {
		imap_bad(s, "EXPUNGE takes no arguments");
		return;
	}
	if (s->view.readonly) {
		imap_done(s, "NO [READ-ONLY] The mailbox was opened with EXAMINE");
		return;
	}
	unsigned n;
	uint32_t *uids = imap_deleted_uids(s, NULL, &n);
	imap_expunge_uids(s, uids, n, false);
}

void imap_cmd_check(struct imap_session *s, struct imap_parser *ps)
{
	if (!imap_p_eol(ps)) {
		imap_bad(s, "CHECK takes no arguments");
		return;
	}
	imap_done_sync(s, true, "OK CHECK completed");
}

/* ---- LIST, LSUB, STATUS ------------------------------------------------- */

/* wild_match - a LIST pattern against a name: '*' anything, '%' anything
 * but the hierarchy delimiter '/'; ASCII case-insensitive (INBOX is). */
static bool wild_match(const char *p, size_t pn, const char *s, size_t sn)
{
	size_t pi = 0, si = 0, star_p = SIZE_MAX, star_s = 0;
	while (si < sn) {
		if (pi < pn && (p[pi] == '*' || p[pi] == '%')) {
			star_p = pi++;
			star_s = si;
		} else if (pi < pn &&
		           tolower((unsigned char)p[pi]) == tolower((unsigned char)s[si])) {
			pi++;
			si++;
		} else if (star_p != SIZE_MAX && (p[star_p] == '*' || s[star_s] != '/')) {
			pi = star_p + 1;
			si = ++star_s;
		} else {
			return false;
		}
	}
	while (pi < pn && (p[pi] == '*' || p[pi] == '%'))
		pi++;
	return pi == pn;
}

static void list(struct imap_session *s, struct imap_parser *ps, bool lsub)
{
	struct imap_str ref, pat;
	const char *cmd = lsub ? "LSUB" : "LIST";
	if (!imap_p_astring(ps, &ref) || !imap_p_sp(ps) || !imap_p_list_mailbox(ps, &pat) ||
	    !imap_p_eol(ps)) {
		imap_bad(s, "Syntax: %s reference pattern", cmd);
		return;
	}
	if (!pat.n && !lsub) { /* the hierarchy delimiter and root */
		imap_untagged(s, "LIST (\\Noselect) \"/\" \"\"");
	} else {
		struct buf name = { 0 }; /* the reference, then the pattern */
		buf_append(&name, ref.p, ref.n);
		buf_append(&name, pat.p, pat.n);
		if (wild_match(buf_head(&name), buf_used(&name), "INBOX", 5))
			imap_untagged(s, "%s (%s) \"/\" INBOX", cmd, lsub ? "" : "\\HasNoChildren");
		buf_free(&name);
	}
	imap_done_sync(s, true, "OK %s completed", cmd);
}

void imap_cmd_list(struct imap_session *s, struct imap_parser *ps)
{
	list(s, ps, false);
}

void imap_cmd_lsub(struct imap_session *s, struct imap_parser *ps)
{
	list(s, ps, true);
}

void imap_cmd_status(struct imap_session *s, struct imap_parser *ps)
{
	struct imap_str name, item;
	if (!imap_p_astring(ps, &name) || !imap_p_sp(ps) || !imap_p_char(ps, '(')) {
		imap_bad(s, "Syntax: STATUS mailbox (items)");
		return;
	}
	const struct imap_snap *sn = is_inbox(&name) ? imap_snap_get(s->srv) : NULL;
	struct buf b = { 0 };
	do {
		if (!imap_p_atom(ps, &item)) {
			buf_free(&b);
			imap_bad(s, "Syntax: STATUS mailbox (items)");
			return;
		}
		uint32_t v = 0;
		if (imap_str_is(&item, "MESSAGES")) {
			v = sn ? sn->n : 0;
		} else if (imap_str_is(&item, "UIDNEXT")) {
			v = sn ? sn->uidnext : 0;
		} else if (imap_str_is(&item, "UIDVALIDITY")) {
			v = sn ? sn->uidvalidity : 0;
		} else if (imap_str_is(&item, "UNSEEN")) {
			for (uint32_t i = 0; sn && i < sn->n; i++)
				v += !(sn->flags[i] & MBOX_SEEN);
		} else if (!imap_str_is(&item, "RECENT")) {
			buf_free(&b);
			imap_bad(s, "Unknown STATUS item");
			return;
		}
		buf_printf(&b, "%s%.*s %u", buf_used(&b) ? " " : "", (int)item.n, item.p, v);
	} while (imap_p_sp(ps));
	if (!imap_p_char(ps, ')') || !imap_p_eol(ps)) {
		buf_free(&b);
		imap_bad(s, "Syntax: STATUS mailbox (items)");
		return;
	}
	if (!is_inbox(&name)) {
		buf_free(&b);
		imap_done(s, "NO [NONEXISTENT] There is only INBOX");
		return;
	}
	if (!sn) {
		buf_free(&b);
		imap_done(s, "NO [UNAVAILABLE] The mailbox cannot be read now");
		return;
	}
	imap_untagged(s, "STATUS INBOX (%s)", buf_cstr(&b));
	buf_free(&b);
	imap_done_sync(s, true, "OK STATUS completed");
}

/* ---- IDLE and the rest -------------------------------------------------- */

void imap_cmd_idle(struct imap_session *s, struct imap_parser *ps)
{
	if (!imap_p_eol(ps)) {
		imap_bad(s, "IDLE takes no arguments");
		return;
	}
	buf_puts(imap_out(s), "+ idling\r\n");
	imap_flush(s);
	imap_set_wait(s, IW_IDLE);
	imap_sync(s, true);
}

void imap_idle_line(struct imap_session *s, const char *line, size_t len)
{
	if (len == 4 && !strncasecmp(line, "DONE", 4)) {
		imap_done_sync(s, true, "OK IDLE terminated");
		return;
	}
	imap_bad(s, "Expected DONE");
}

void imap_cmd_subscribe(struct imap_session *s, struct imap_parser *ps)
{
	struct imap_str name;
	if (!imap_p_astring(ps, &name) || !imap_p_eol(ps)) {
		imap_bad(s, "Syntax: SUBSCRIBE mailbox");
		return;
	}
	if (!is_inbox(&name)) {
		imap_done(s, "NO [NONEXISTENT] There is only INBOX");
		return;
	}
	imap_done_sync(s, true, "OK Completed (INBOX is always subscribed)");
}

void imap_cmd_refused(struct imap_session *s, struct imap_parser *ps)
{
	(void)ps;
	imap_done_sync(s, true,
	               "NO [CANNOT] This server has one mailbox, INBOX, and only reads it");
}
