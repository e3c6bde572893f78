/* imap_msgs.c - the commands on messages: FETCH, STORE, SEARCH and their
 * UID forms, UID EXPUNGE (RFC 3501 6.4, RFC 4315), and the session's
 * requests to the spool writer.
 *
 * Sequence numbers must exist (BAD otherwise; "*" in an empty mailbox
 * names nothing); UIDs that do not are skipped. FETCH without PEEK first
 * sets \Seen with the writer (not under EXAMINE); then the answers are made
 * in slices (imap.c) from the stored messages, each FETCH response carrying
 * FLAGS when they changed since the client last heard. A message expunged
 * meanwhile is left out. STORE answers with the flags as stored.
 */
#include <stdlib.h>
#include <strings.h>

#include "base/log.h"
#include "base/util.h"
#include "imap_impl.h"

/* ---- spool requests ----------------------------------------------------- */

/* A request to the writer that a session waits for. */
struct imap_write {
	struct spool_req req;
	struct imap_session *s;
	uint32_t *uids;
	void (*then)(struct imap_session *s, enum spool_status st);
};

static void write_done(struct mq_item *item, void *ctx)
{
	struct imap_write *w = RP_CONTAINER_OF(item, struct imap_write, req.item);
	struct imap_session *s = w->s;
	void (*then)(struct imap_session *, enum spool_status) = w->then;
	enum spool_status st = w->req.status;
	(void)ctx;
	free(w->uids);
	free(w);
	if (!imap_request_done(s) || conn_closing(&s->conn))
		return;
	if (st != SPOOL_OK)
		log_warn("imap %s: the spool refused a mailbox change (status %d)", s->peer,
		         (int)st);
	then(s, st);
}

void imap_spool_write(struct imap_session *s, enum spool_req_type type, uint32_t *uids, unsigned n,
                      uint8_t set, uint8_t clear,
                      void (*then)(struct imap_session *s, enum spool_status st))
{
	struct imap_write *w = xcalloc(1, sizeof(*w));
	w->s = s;
	w->uids = uids;
	w->then = then;
	w->req.type = type;
	w->req.reply_to = loop_inbox(s->srv->p.loop);
	w->req.reply_fn = write_done;
	if (type == SPOOL_REQ_MBOX_STORE) {
		w->req.u.store.uids = uids;
		w->req.u.store.n = n;
		w->req.u.store.set = set;
		w->req.u.store.clear = clear;
	} else {
		rp_assert(type == SPOOL_REQ_MBOX_EXPUNGE);
		w->req.u.expunge.uids = uids;
		w->req.u.expunge.n = n;
	}
	s->inflight++;
	imap_set_wait(s, IW_SPOOL);
	spool_request(s->srv->p.spool, &w->req);
}

/* ---- sets --------------------------------------------------------------- */

/* set_ok - resolve the job's set against the view. Sequence numbers past
 * the last are an error, except at the other end of a range with "*". */
static bool set_ok(struct imap_session *s, struct imap_job *j)
{
	const struct imap_view *v = &s->view;
	struct imap_seqset *set = &j->set;
	if (j->set_uid) {
		imap_seqset_resolve(set, v->n ? v->uids[v->n - 1] : 0);
		return true;
	}
	uint32_t n = v->n;
	unsigned w = 0;
	for (unsigned i = 0; i < set->n; i++) {
		struct imap_range r = set->r[i];
		if (r.lo == IMAP_STAR || r.hi == IMAP_STAR) {
			if (!n)
				continue; /* "*" names nothing in an empty mailbox */
			r.lo = r.lo == IMAP_STAR ? r.lo : RP_MIN(r.lo, n);
			r.hi = r.hi == IMAP_STAR ? r.hi : RP_MIN(r.hi, n);
		} else if (r.lo > n || r.hi > n) {
			return false;
		}
		set->r[w++] = r;
	}
	set->n = w;
	imap_seqset_resolve(set, n);
	return true;
}

/* lower_bound - the first view index whose UID is >= uid. */
static uint32_t lower_bound(const struct imap_view *v, uint32_t uid)
{
	uint32_t lo = 0, hi = v->n;
	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;
		if (v->uids[mid] < uid)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* next_index - the job's next view index in its set, in increasing order. */
static bool next_index(struct imap_session *s, uint32_t *idx)
{
	struct imap_job *j = s->job;
	const struct imap_view *v = &s->view;
	while (j->ri < j->set.n) {
		const struct imap_range *r = &j->set.r[j->ri];
		if (!j->started) {
			j->idx = j->set_uid ? lower_bound(v, r->lo) : r->lo - 1;
			j->started = true;
		}
		if (j->idx < v->n && (j->set_uid ? v->uids[j->idx] <= r->hi : j->idx < r->hi)) {
			*idx = j->idx++;
			return true;
		}
		j->ri++;
		j->started = false;
	}
	return false;
}

static void rewind_set(struct imap_job *j)
{
	j->ri = 0;
	j->started = false;
}

/* set_uids - the UIDs of the job's set whose cached flags lack any of
 * without (all of them when without is 0); allocated. */
static uint32_t *set_uids(struct imap_session *s, uint8_t without, unsigned *n)
{
	uint32_t idx, cap = 64;
	uint32_t *uids = xmalloc(cap * sizeof(*uids));
	*n = 0;
	rewind_set(s->job);
	while (next_index(s, &idx)) {
		if (without && (s->view.flags[idx] & without) == without)
			continue;
		if (*n == cap) {
			cap *= 2;
			uids = xrealloc(uids, cap * sizeof(*uids));
		}
		uids[(*n)++] = s->view.uids[idx];
	}
	rewind_set(s->job);
	return uids;
}

static struct imap_job *job_new(struct imap_session *s, enum imap_job_kind kind, bool uid)
{
	struct imap_job *j = xcalloc(1, sizeof(*j));
	j->kind = kind;
	j->uid = j->set_uid = uid;
	rp_assert(!s->job);
	s->job = j;
	return j;
}

void imap_job_free(struct imap_job *j)
{
	imap_seqset_free(&j->set);
	imap_fetch_free(&j->fetch);
	imap_search_free(&j->search);
	if (j->sc) {
		buf_free(&j->sc->tmp);
		free(j->sc);
	}
	free(j);
}

/* ---- slices ------------------------------------------------------------- */

/* step_fetch - one message's FETCH response (or nothing when it is gone). */
static void step_fetch(struct imap_session *s, uint32_t idx, struct buf *out)
{
	struct imap_job *j = s->job;
	struct imap_view *v = &s->view;
	struct spool_mbox_entry e;
	if (!spool_mbox_get(s->srv->p.reader, v->uids[idx], &e))
		return;
	uint8_t flags = (uint8_t)(e.flags & 0x1f);
	if (j->kind == JOB_STORE) {
		imap_view_set_flags(v, idx, flags);
		if (j->silent)
			return;
		buf_printf(out, "* %u FETCH (FLAGS ", idx + 1);
		imap_put_flags(out, flags);
		if (j->uid)
			buf_printf(out, " UID %u", e.uid);
		buf_puts(out, ")\r\n");
		return;
	}
	struct imap_fetch_msg m = { .seq = idx + 1,
		                    .uid = e.uid,
		                    .flags = flags,
		                    .date_ms = e.date_ms,
		                    .data = e.data,
		                    .len = e.len,
		                    .add_flags = flags != v->flags[idx] };
	imap_view_set_flags(v, idx, flags);
	imap_fetch_write(out, &j->fetch, &m, j->sc);
}

/* step_search - one message against the criteria. */
static void step_search(struct imap_session *s, uint32_t idx, struct buf *out)
{
	struct imap_job *j = s->job;
	struct imap_view *v = &s->view;
	struct spool_mbox_entry e;
	if ((v->flags[idx] & VIEW_GONE) || !spool_mbox_get(s->srv->p.reader, v->uids[idx], &e))
		return;
	struct imap_search_msg m = { .seq = idx + 1,
		                     .uid = e.uid,
		                     .flags = (uint8_t)(e.flags & 0x1f),
		                     .date_ms = e.date_ms,
		                     .data = e.data,
		                     .len = e.len };
	if (imap_search_match(&j->search, &m))
		buf_printf(out, " %u", j->uid ? e.uid : idx + 1);
}

bool imap_job_step(struct imap_session *s, uint64_t deadline_ns)
{
	struct buf *out = imap_out(s);
	uint32_t idx;
	bool more;
	while ((more = next_index(s, &idx))) {
		if (s->job->kind == JOB_SEARCH)
			step_search(s, idx, out);
		else
			step_fetch(s, idx, out);
		if (rp_mono_ns() >= deadline_ns || conn_pending_out(&s->conn) > IMAP_OUT_HIGH)
			break;
	}
	imap_flush(s);
	return !more;
}

void imap_job_finish(struct imap_session *s)
{
	struct imap_job *j = s->job;
	const char *u = j->uid ? "UID " : "";
	switch (j->kind) {
	case JOB_FETCH:
		imap_done_sync(s, j->uid, "OK %sFETCH completed", u);
		return;
	case JOB_STORE:
		imap_done_sync(s, j->uid, "OK %sSTORE completed", u);
		return;
	case JOB_SEARCH:
		buf_puts(imap_out(s), "\r\n");
		imap_done_sync(s, j->uid, "OK %sSEARCH completed", u);
		return;
	}
	rp_panic("job kind %d", (int)j->kind);
}

/* ---- FETCH -------------------------------------------------------------- */

static void fetch_seen(struct imap_session *s, enum spool_status st)
{
	(void)st; /* without \Seen the data still goes out */
	imap_job_start(s);
}

static void fetch(struct imap_session *s, struct imap_parser *ps, bool uid)
{
	struct imap_job *j = job_new(s, JOB_FETCH, uid);
	if (!imap_p_seqset(ps, &j->set) || !imap_p_sp(ps) || !imap_fetch_parse(ps, &j->fetch) ||
	    !imap_p_eol(ps)) {
		imap_bad(s, "Syntax: %sFETCH set items", uid ? "UID " : "");
		return;
	}
	if (!set_ok(s, j)) {
		imap_bad(s, "Invalid message sequence number");
		return;
	}
	if (uid && !j->fetch.has_uid)
		imap_fetch_add(&j->fetch, IMAP_FA_UID);
	if (j->fetch.need_data)
		j->sc = xcalloc(1, sizeof(*j->sc));
	if (j->fetch.sets_seen && !s->view.readonly) {
		unsigned n;
		uint32_t *uids = set_uids(s, MBOX_SEEN, &n);
		if (n) {
			imap_spool_write(s, SPOOL_REQ_MBOX_STORE, uids, n, MBOX_SEEN, 0,
			                 fetch_seen);
			return;
		}
		free(uids);
	}
	imap_job_start(s);
}

void imap_cmd_fetch(struct imap_session *s, struct imap_parser *ps)
{
	fetch(s, ps, false);
}

/* ---- STORE -------------------------------------------------------------- */

/* flags - a flag list or flags separated by spaces: MBOX_* in *out.
 * Keywords are accepted and dropped (PERMANENTFLAGS has no \*). */
static bool flags(struct imap_parser *ps, uint8_t *out)
{
	static const struct {
		const char *name;
		uint8_t bit;
	} names[] = { { "Seen", MBOX_SEEN },
		      { "Answered", MBOX_ANSWERED },
		      { "Flagged", MBOX_FLAGGED },
		      { "Deleted", MBOX_DELETED },
		      { "Draft", MBOX_DRAFT } };
	bool list = imap_p_char(ps, '(');
	*out = 0;
	if (list && imap_p_char(ps, ')'))
		return true;
	do {
		struct imap_str w;
		bool sys = imap_p_char(ps, '\\');
		if (!imap_p_atom(ps, &w))
			return false;
		if (!sys)
			continue;
		unsigned i = 0;
		while (i < RP_ARRAY_LEN(names) && !imap_str_is(&w, names[i].name))
			i++;
		if (i == RP_ARRAY_LEN(names))
			return false; /* \Recent or an unknown system flag */
		*out |= names[i].bit;
	} while (imap_p_sp(ps));
	return !list || imap_p_char(ps, ')');
}

static void stored(struct imap_session *s, enum spool_status st)
{
	if (st != SPOOL_OK) {
		imap_done(s, "NO [SERVERBUG] The spool refused the change");
		return;
	}
	imap_job_start(s);
}

static void store(struct imap_session *s, struct imap_parser *ps, bool uid)
{
	struct imap_job *j = job_new(s, JOB_STORE, uid);
	struct imap_str item;
	uint8_t f;
	if (!imap_p_seqset(ps, &j->set) || !imap_p_sp(ps) || !imap_p_atom(ps, &item) ||
	    !imap_p_sp(ps) || !flags(ps, &f) || !imap_p_eol(ps)) {
		imap_bad(s, "Syntax: %sSTORE set [+-]FLAGS[.SILENT] (flags)", uid ? "UID " : "");
		return;
	}
	char op = item.n && (item.p[0] == '+' || item.p[0] == '-') ? item.p[0] : 0;
	struct imap_str base = { item.p + (op != 0), item.n - (op != 0) };
	j->silent = base.n > 7 && !strncasecmp(base.p + base.n - 7, ".SILENT", 7);
	base.n -= j->silent ? 7 : 0;
	if (!imap_str_is(&base, "FLAGS")) {
		imap_bad(s, "Unknown STORE item");
		return;
	}
	if (!set_ok(s, j)) {
		imap_bad(s, "Invalid message sequence number");
		return;
	}
	if (s->view.readonly) {
		imap_done(s, "NO [READ-ONLY] The mailbox was opened with EXAMINE");
		return;
	}
	uint8_t all = MBOX_SEEN | MBOX_ANSWERED | MBOX_FLAGGED | MBOX_DELETED | MBOX_DRAFT;
	j->store_set = op == '-' ? 0 : f;
	j->store_clear = op == '+' ? 0 : op == '-' ? f : (uint8_t)(all & ~f);
	unsigned n;
	uint32_t *uids = set_uids(s, 0, &n);
	if (!n) {
		free(uids);
		imap_done_sync(s, uid, "OK %sSTORE completed", uid ? "UID " : "");
		return;
	}
	imap_spool_write(s, SPOOL_REQ_MBOX_STORE, uids, n, j->store_set, j->store_clear, stored);
}

void imap_cmd_store(struct imap_session *s, struct imap_parser *ps)
{
	store(s, ps, false);
}

/* ---- SEARCH ------------------------------------------------------------- */

static void search(struct imap_session *s, struct imap_parser *ps, bool uid)
{
	struct imap_job *j = job_new(s, JOB_SEARCH, uid);
	const struct imap_view *v = &s->view;
	switch (imap_search_parse(ps, &j->search)) {
	case IMAP_SEARCH_OK:
		break;
	case IMAP_SEARCH_BAD:
		imap_bad(s, "Syntax error in the search criteria");
		return;
	case IMAP_SEARCH_BADCHARSET:
		imap_done(s, "NO [BADCHARSET (US-ASCII UTF-8)] Unsupported charset");
		return;
	}
	imap_search_resolve(&j->search, v->n, v->n ? v->uids[v->n - 1] : 0);
	j->set_uid = false; /* every message, by sequence number */
	j->set.r = xcalloc(1, sizeof(*j->set.r));
	j->set.n = v->n ? 1 : 0;
	j->set.r[0] = (struct imap_range){ 1, v->n };
	buf_puts(imap_out(s), "* SEARCH");
	imap_job_start(s);
}

void imap_cmd_search(struct imap_session *s, struct imap_parser *ps)
{
	search(s, ps, false);
}

/* ---- UID ---------------------------------------------------------------- */

static void uid_expunge(struct imap_session *s, struct imap_parser *ps)
{
	struct imap_seqset set;
	if (!imap_p_seqset(ps, &set) || !imap_p_eol(ps)) {
		imap_seqset_free(&set); /* parsed, but junk after it (empty when not parsed) */
		imap_bad(s, "Syntax: UID EXPUNGE set");
		return;
	}
	if (s->view.readonly) {
		imap_seqset_free(&set);
		imap_done(s, "NO [READ-ONLY] The mailbox was opened with EXAMINE");
		return;
	}
	const struct imap_view *v = &s->view;
	imap_seqset_resolve(&set, v->n ? v->uids[v->n - 1] : 0);
	unsigned n;
	uint32_t *uids = imap_deleted_uids(s, &set, &n);
	imap_seqset_free(&set);
	imap_expunge_uids(s, uids, n, false);
}

void imap_cmd_uid(struct imap_session *s, struct imap_parser *ps)
{
	struct imap_str sub;
	if (!imap_p_atom(ps, &sub) || !imap_p_sp(ps)) {
		imap_bad(s, "Syntax: UID FETCH|STORE|SEARCH|EXPUNGE ...");
		return;
	}
	if (imap_str_is(&sub, "FETCH"))
		fetch(s, ps, true);
	else if (imap_str_is(&sub, "STORE"))
		store(s, ps, true);
	else if (imap_str_is(&sub, "SEARCH"))
		search(s, ps, true);
	else if (imap_str_is(&sub, "EXPUNGE"))
		uid_expunge(s, ps);
	else if (imap_str_is(&sub, "COPY") || imap_str_is(&sub, "MOVE"))
		imap_cmd_refused(s, ps);
	else
		imap_bad(s, "Unknown UID command");
}
