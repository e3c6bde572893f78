/* spool_writer.c - the spool's single writer thread: group commit.
 *
 * Everything that arrived since the last commit goes into one write
 * transaction. A batch that holds a submit (or an explicit sync) is synced
 * with mdb_env_sync before any of its requests is answered: an answered
 * submit is on disk. State updates ride along without forcing a sync; losing
 * one to a power cut only repeats a delivery attempt.
 *
 * A request that fails (map full, disk full) fails alone: the batch is then
 * replayed with one nested transaction per request.
 *
 * Room: new mail is taken only while it leaves [queue] min_free on the disk
 * (free pages inside data.mdb count) and the map's reserve; the numbers are
 * refreshed at every batch that holds a submit and each submit's size is
 * counted against them, so a burst cannot run the disk dry between two
 * maintenance ticks. The reserve is for what must go on while new mail is
 * refused: state updates, deletes, DSNs.
 *
 * When the disk fills anyway (another process took the space), requests
 * nobody waits for (state updates, DSNs) are not dropped: they wait in the
 * writer, in order, and are tried again every maintenance tick until space
 * returns. Dropping them would leave delivered mail queued in the spool,
 * never freeing its pages (a disk full for good) and delivered again after
 * a restart.
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "base/log.h"
#include "spool_impl.h"
#include "base/util.h"

#define BATCH_MAX_REQS    4096
#define BATCH_MAX_BYTES   (64u << 20)
#define MAINT_INTERVAL_MS 1000
#define EXPIRE_PER_TXN    2000
#define EXPIRE_BUDGET_MS  200           /* per maintenance pass: the writer has mail to commit */
#define FULL_LOG_MS       10000         /* at most one "disk full" line this often */
#define USAGE_REFRESH_MS  100           /* spool and disk usage read at most this often... */
#define USAGE_LOW_ROOM    (256ll << 20) /* ...unless new mail has less room than this */

struct writer;
static int message_done(struct writer *w, MDB_txn *txn, struct spool_msg *m);

struct writer {
	struct spool *sp;
	uint64_t max_id;    /* largest message id stored: larger ones may MDB_APPEND */
	struct buf scratch; /* re-encoding records */
	int64_t room;       /* bytes new mail may still take in this batch */
	/* Requests without a reply that failed for lack of room, oldest
	 * first, linked through item.next: tried again every tick. */
	struct mq_item *held, **held_tail;
	unsigned nheld;
	uint64_t full_logged_ms; /* last "disk full" log line */
	uint64_t usage_ms;       /* last spool_refresh_usage for new mail */
};

/* status_of - map an LMDB/errno code to what the client is told. */
static enum spool_status status_of(int rc)
{
	switch (rc) {
	case 0:
		return SPOOL_OK;
	case MDB_MAP_FULL:
	case ENOSPC:
	case EDQUOT:
		return SPOOL_EFULL;
	default:
		return SPOOL_EIO;
	}
}

static int put_body(struct writer *w, MDB_txn *txn, uint64_t id, uint32_t variant,
                    const struct iovec *iov, unsigned niov, unsigned flags)
{
	struct spool *sp = w->sp;
	size_t total = 0;
	for (unsigned i = 0; i < niov; i++)
		total += iov[i].iov_len;
	unsigned i = 0;
	size_t ioff = 0, done = 0;
	uint32_t chunk = 0;
	/* An empty body still gets one (empty) chunk so that it exists. */
	do {
		size_t n = spool_body_chunk(sp, total - done);
		unsigned char kb[16];
		spool_key_body(kb, id, variant, chunk++);
		MDB_val k = { .mv_size = sizeof(kb), .mv_data = kb }, v = { .mv_size = n };
		int rc = mdb_put(txn, sp->dbi_body, &k, &v, MDB_RESERVE | flags);
		if (rc)
			return rc;
		char *dst = v.mv_data;
		size_t left = n;
		while (left) {
			size_t take = RP_MIN(left, iov[i].iov_len - ioff);
			if (take) /* an empty piece (no signature) may have no base */
				memcpy(dst, (const char *)iov[i].iov_base + ioff, take);
			dst += take;
			left -= take;
			ioff += take;
			if (ioff == iov[i].iov_len) {
				i++;
				ioff = 0;
			}
		}
		done += n;
	} while (done < total);
	return 0;
}

/* check_suppressed - mark s's recipients that are on the suppression list
 * (state SPOOL_SUPPRESSED, the others SPOOL_QUEUED); returns the record
 * text of each marked one (NULL when none is), for the caller to free. */
static char **check_suppressed(struct spool *sp, MDB_txn *txn, struct spool_submit *s)
{
	char **why = NULL;
	for (uint32_t i = 0; i < s->msg.nrcpt; i++) {
		struct spool_rcpt *r = &s->rcpts[i];
		const char *reason;
		size_t rlen;
		r->state = SPOOL_QUEUED;
		if (!sp->opt.suppress ||
		    !spool_suppressed(sp, txn, r->addr, r->addr_len, &reason, &rlen))
			continue;
		if (!why)
			why = xcalloc(s->msg.nrcpt, sizeof(*why));
		struct buf b = { 0 };
		buf_printf(&b, "5.7.0 suppressed: %.*s", (int)RP_MIN(rlen, (size_t)300), reason);
		why[i] = buf_cstr(&b); /* copied now: the LMDB page may move */
		r->state = SPOOL_SUPPRESSED;
	}
	return why;
}

/* submit_cost - what s may take in the spool, generously: its bodies, its
 * records, per-chunk overhead and a page or two of tree growth. */
static int64_t submit_cost(const struct spool *sp, const struct spool_submit *s)
{
	uint64_t bytes = s->msg.body_len;
	for (unsigned i = 0; i < s->nvariants; i++)
		bytes += s->variants[i].iov_len;
	bytes += bytes / 8 + spool_msg_size(&s->msg) + 2ull * sp->page_size;
	for (uint32_t i = 0; i < s->msg.nrcpt; i++)
		bytes += spool_rcpt_size(&s->rcpts[i]) + 32;
	return (int64_t)bytes;
}

static int apply_submit(struct writer *w, MDB_txn *txn, struct spool_submit *s)
{
	struct spool *sp = w->sp;
	int64_t cost = submit_cost(sp, s);
	if (cost > w->room)
		return MDB_MAP_FULL; /* answered 452 4.3.1 / 503 */
	w->room -= cost;
	uint64_t id = s->msg.id;
	/* max_id is never below the largest key stored, so a larger id may
	 * be appended in every database (all keys start with the id). */
	unsigned flags = id > w->max_id ? MDB_APPEND : 0;
	unsigned char kb[16];

	/* Recipients on the suppression list are final at once (checked in
	 * this transaction: nothing slips between a check and the commit). */
	char **why = check_suppressed(sp, txn, s);
	s->msg.pending = 0;
	for (uint32_t i = 0; i < s->msg.nrcpt; i++)
		s->msg.pending += s->rcpts[i].state != SPOOL_SUPPRESSED;
	s->msg.done_ms = s->msg.pending ? 0 : rp_now_ms();
	if (!s->msg.pending)
		s->msg.flags |= MSG_F_DONE;
	spool_key_id(kb, id);
	MDB_val k = { .mv_size = 8, .mv_data = kb }, v = { .mv_size = spool_msg_size(&s->msg) };
	int rc = mdb_put(txn, sp->dbi_msg, &k, &v, MDB_RESERVE | MDB_NOOVERWRITE | flags);
	if (rc)
		return rc;
	spool_msg_encode(&s->msg, v.mv_data);

	/* Nobody to deliver to: the body is not worth storing. */
	rc = s->msg.pending ? put_body(w, txn, id, 0, s->body, s->nbody, flags) : 0;
	for (unsigned i = 0; !rc && s->msg.pending && i < s->nvariants; i++)
		rc = put_body(w, txn, id, i + 1, &s->variants[i], 1, flags);

	for (uint32_t i = 0; !rc && i < s->msg.nrcpt; i++) {
		struct spool_rcpt *r = &s->rcpts[i];
		r->msgid = id;
		r->idx = i;
		r->attempts = 0;
		if (r->state == SPOOL_SUPPRESSED) {
			r->response = why[i];
			r->response_len = strlen(why[i]);
			r->last_ms = rp_now_ms();
		}
		spool_key_rcpt(kb, id, i);
		MDB_val rk = { .mv_size = 12, .mv_data = kb },
		        rv = { .mv_size = spool_rcpt_size(r) };
		rc = mdb_put(txn, sp->dbi_rcpt, &rk, &rv, MDB_RESERVE | flags);
		if (!rc)
			spool_rcpt_encode(r, rv.mv_data);
		if (!rc && r->state == SPOOL_SUPPRESSED)
			rc = spool_event_put(sp, txn, SPOOL_EV_SUPPRESSED, r, 0, r->response,
			                     r->response_len, NULL, 0, r->last_ms);
		else if (!rc)
			rc = spool_event_put(sp, txn, SPOOL_EV_ACCEPTED, r, 0, NULL, 0, NULL, 0,
			                     s->msg.submit_ms);
		r->response = NULL; /* why[i] goes below; the caller reads the state */
		r->response_len = 0;
	}
	if (why) {
		for (uint32_t i = 0; i < s->msg.nrcpt; i++)
			free(why[i]);
		free(why);
	}
	if (rc)
		return rc;
	if (!s->msg.pending)
		rc = message_done(w, txn, &s->msg);
	if (id > w->max_id)
		w->max_id = id;
	return rc;
}

/* delete_prefix - delete every key of dbi starting with the 8-byte id. */
static int delete_prefix(MDB_txn *txn, MDB_dbi dbi, uint64_t id, size_t keylen)
{
	unsigned char kb[16] = { 0 };
	MDB_cursor *cur;
	int rc = mdb_cursor_open(txn, dbi, &cur);
	if (rc)
		return rc;
	rp_put_be64(kb, id);
	MDB_val k = { .mv_size = keylen, .mv_data = kb }, v;
	/* Re-seek after each delete: simpler to trust than a cursor's
	 * position after mdb_cursor_del at the end of a page. */
	for (;;) {
		k.mv_size = keylen;
		k.mv_data = kb;
		rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
		if (rc || k.mv_size < 8 || rp_get_be64(k.mv_data) != id)
			break;
		rc = mdb_cursor_del(cur, 0);
		if (rc)
			break;
	}
	mdb_cursor_close(cur);
	return rc == MDB_NOTFOUND ? 0 : rc;
}

/* message_done - the last recipient of id became final. */
static int message_done(struct writer *w, MDB_txn *txn, struct spool_msg *m)
{
	struct spool *sp = w->sp;
	int rc = delete_prefix(txn, sp->dbi_body, m->id, 16);
	if (rc)
		return rc;
	unsigned char kb[16];
	if (!sp->opt.keep_done_ms) {
		rc = delete_prefix(txn, sp->dbi_rcpt, m->id, 12);
		if (rc)
			return rc;
		spool_key_id(kb, m->id);
		MDB_val k = { .mv_size = 8, .mv_data = kb };
		rc = mdb_del(txn, sp->dbi_msg, &k, NULL);
		return rc == MDB_NOTFOUND ? 0 : rc;
	}
	rp_put_be64(kb, m->done_ms + sp->opt.keep_done_ms);
	rp_put_be64(kb + 8, m->id);
	MDB_val k = { .mv_size = 16, .mv_data = kb }, v = { .mv_size = 0, .mv_data = "" };
	return mdb_put(txn, sp->dbi_expire, &k, &v, 0);
}

static int apply_update(struct writer *w, MDB_txn *txn, const struct spool_update *u)
{
	struct spool *sp = w->sp;
	unsigned char kb[12];
	spool_key_rcpt(kb, u->msgid, u->idx);
	MDB_val k = { .mv_size = 12, .mv_data = kb }, v;
	int rc = mdb_get(txn, sp->dbi_rcpt, &k, &v);
	if (rc == MDB_NOTFOUND)
		return 0; /* purged or expired meanwhile */
	if (rc)
		return rc;
	struct spool_rcpt r = { .msgid = u->msgid, .idx = u->idx };
	if (!spool_rcpt_decode(v.mv_data, v.mv_size, &r))
		return 0;
	bool was_final = SPOOL_STATE_FINAL(r.state);
	if (was_final)
		return 0; /* a final state is never undone */
	if (u->suppress && u->state == SPOOL_BOUNCED && sp->opt.suppress) {
		/* The address is copied first: r.addr points into a page the
		 * list's own write may move. */
		char addr[SUPPRESS_ADDR_MAX];
		size_t alen = RP_MIN(r.addr_len, sizeof(addr));
		memcpy(addr, r.addr, alen);
		rc = spool_suppress_put(sp, txn, addr, alen, u->response,
		                        RP_MIN(u->response_len, (size_t)300), rp_now_ms());
		if (rc)
			return rc;
		if ((rc = mdb_get(txn, sp->dbi_rcpt, &k, &v)) != 0 ||
		    !spool_rcpt_decode(v.mv_data, v.mv_size, &r))
			return rc;
	}
	r.state = u->state;
	r.next_ms = u->next_ms;
	if (!u->wait_only) {
		r.attempts = u->attempts;
		r.last_ms = u->last_ms;
		r.response = u->response;
		r.response_len = RP_MIN(u->response_len, (size_t)1000);
		r.remote = u->remote;
		r.remote_len = RP_MIN(u->remote_len, (size_t)300);
	}
	/* Encode off-page: r.addr points into the page the put replaces. */
	buf_reset(&w->scratch);
	char *dst = buf_reserve(&w->scratch, spool_rcpt_size(&r));
	spool_rcpt_encode(&r, dst);
	MDB_val nv = { .mv_size = spool_rcpt_size(&r), .mv_data = dst };
	rc = mdb_put(txn, sp->dbi_rcpt, &k, &nv, 0);
	if (rc)
		return rc;
	unsigned ev = u->state == SPOOL_DELIVERED                   ? SPOOL_EV_DELIVERED
	              : u->state == SPOOL_BOUNCED                   ? SPOOL_EV_BOUNCED
	              : u->state == SPOOL_DEFERRED && !u->wait_only ? SPOOL_EV_DEFERRED
	                                                            : SPOOL_EV_TYPES;
	if (ev != SPOOL_EV_TYPES && spool_event_wanted(sp, ev)) {
		/* From the copy just written: r pointed into the replaced page. */
		struct spool_rcpt er = { .msgid = u->msgid, .idx = u->idx };
		if (spool_rcpt_decode(dst, nv.mv_size, &er))
			rc = spool_event_put(sp, txn, ev, &er, er.attempts, er.response,
			                     er.response_len, er.remote, er.remote_len,
			                     u->wait_only ? rp_now_ms() : er.last_ms);
		if (rc)
			return rc;
	}
	if (!SPOOL_STATE_FINAL(u->state))
		return 0;

	/* One fewer recipient pending on the message. */
	unsigned char mk[8];
	spool_key_id(mk, u->msgid);
	MDB_val mkey = { .mv_size = 8, .mv_data = mk }, mv;
	rc = mdb_get(txn, sp->dbi_msg, &mkey, &mv);
	if (rc)
		return rc == MDB_NOTFOUND ? 0 : rc;
	struct spool_msg m = { .id = u->msgid };
	if (!spool_msg_decode(mv.mv_data, mv.mv_size, &m))
		return 0;
	if (m.pending)
		m.pending--;
	if (!m.pending) {
		m.flags |= MSG_F_DONE;
		m.done_ms = rp_now_ms();
	}
	buf_reset(&w->scratch);
	dst = buf_reserve(&w->scratch, spool_msg_size(&m));
	spool_msg_encode(&m, dst);
	MDB_val nmv = { .mv_size = spool_msg_size(&m), .mv_data = dst };
	rc = mdb_put(txn, sp->dbi_msg, &mkey, &nmv, 0);
	if (rc || m.pending)
		return rc;
	return message_done(w, txn, &m);
}

static int apply(struct writer *w, MDB_txn *txn, struct spool_req *req)
{
	switch (req->type) {
	case SPOOL_REQ_SUBMIT:
		return apply_submit(w, txn, &req->u.submit);
	case SPOOL_REQ_UPDATE:
		for (unsigned i = 0; i < req->u.update.n; i++) {
			int rc = apply_update(w, txn, &req->u.update.v[i]);
			if (rc)
				return rc;
		}
		return 0;
	case SPOOL_REQ_SYNC:
		return 0;
	case SPOOL_REQ_MBOX_PUT:
		return spool_apply_mbox_put(w->sp, txn, req);
	case SPOOL_REQ_MBOX_STORE:
		return spool_apply_mbox_store(w->sp, txn, req);
	case SPOOL_REQ_MBOX_EXPUNGE:
		return spool_apply_mbox_expunge(w->sp, txn, req);
	case SPOOL_REQ_SUPPRESS:
		return spool_apply_suppress(w->sp, txn, req);
	case SPOOL_REQ_INBOUND:
		return spool_apply_inbound(w->sp, txn, req);
	case SPOOL_REQ_EVENTS_DONE:
		return spool_apply_events_done(w->sp, txn, req);
	case SPOOL_REQ_WARMUP:
		return spool_apply_warmup(w->sp, txn, req);
	}
	rp_panic("unknown request type %d", (int)req->type);
}

/* needs_sync - what is answered only once it is on disk: new mail, a
 * report received (the bounce MX says 250 for it), an operator's
 * suppression change, and an explicit sync. */
static bool needs_sync(const struct spool_req *req)
{
	return req->type == SPOOL_REQ_SUBMIT || req->type == SPOOL_REQ_SYNC ||
	       req->type == SPOOL_REQ_INBOUND || req->type == SPOOL_REQ_SUPPRESS ||
	       (req->type == SPOOL_REQ_MBOX_PUT && req->u.mbox.durable);
}

/* touches_mbox - whether a request changes the mailbox (IDLE wakes). */
static bool touches_mbox(const struct spool_req *req)
{
	return req->type == SPOOL_REQ_MBOX_PUT || req->type == SPOOL_REQ_MBOX_STORE ||
	       req->type == SPOOL_REQ_MBOX_EXPUNGE || req->type == SPOOL_REQ_INBOUND;
}

/* reply - answer req; one nobody waits for is freed, or held for the next
 * tick when it failed for lack of room. */
static void reply(struct writer *w, struct spool_req *req)
{
	if (req->reply_to) {
		mq_push(req->reply_to, &req->item, req->reply_fn);
	} else if (req->status == SPOOL_EFULL) {
		req->item.next = NULL;
		*w->held_tail = &req->item;
		w->held_tail = &req->item.next;
		w->nheld++;
	} else {
		free(req);
	}
}

/* log_failure - a failed transaction; "no room" at most every FULL_LOG_MS
 * (while the disk is full every batch fails the same way). */
static void log_failure(struct writer *w, const char *what, int rc)
{
	if (status_of(rc) == SPOOL_EFULL) {
		uint64_t now = rp_mono_ms();
		if (w->full_logged_ms && now - w->full_logged_ms < FULL_LOG_MS)
			return;
		w->full_logged_ms = now;
	}
	log_error("spool: %s: %s", what, mdb_strerror(rc));
}

/* has_submit - whether new mail is among reqs (room is then refreshed). */
static bool has_submit(struct spool_req **reqs, unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		if (reqs[i]->type == SPOOL_REQ_SUBMIT)
			return true;
	return false;
}

static void commit_batch(struct writer *w, struct spool_req **reqs, unsigned n)
{
	struct spool *sp = w->sp;
	MDB_txn *txn;
	bool sync = false;
	/* Fresh numbers for new mail: a second of it can fill a small disk.
	 * Between two refreshes each batch's new mail is taken off the room
	 * (below), so they are needed only every USAGE_REFRESH_MS, or at
	 * every batch once the room runs low. */
	if (has_submit(reqs, n)) {
		uint64_t now = rp_mono_ms();
		if (now - w->usage_ms >= USAGE_REFRESH_MS ||
		    atomic_load(&sp->room) < USAGE_LOW_ROOM) {
			spool_refresh_usage(sp, false);
			w->usage_ms = now;
		}
	}
	w->room = atomic_load(&sp->room);
	int rc = mdb_txn_begin(sp->env, NULL, 0, &txn);
	if (rc) {
		log_failure(w, "cannot begin a write transaction", rc);
		for (unsigned i = 0; i < n; i++) {
			reqs[i]->status = status_of(rc);
			reply(w, reqs[i]);
		}
		return;
	}
	/* Fast path: everything in one transaction. */
	sp->ev_txn = sp->ev;
	unsigned i;
	for (i = 0; i < n; i++) {
		rc = apply(w, txn, reqs[i]);
		if (rc)
			break;
		reqs[i]->status = SPOOL_OK;
		sync |= needs_sync(reqs[i]);
	}
	if (rc) {
		/* Slow path: one nested transaction per request, so that one
		 * failure (map or disk full) does not sink the others. */
		mdb_txn_abort(txn);
		if (rc != MDB_MAP_FULL)
			log_warn("spool: batch failed (%s), retrying requests one by one",
			         mdb_strerror(rc));
		sync = false;
		w->room = atomic_load(&sp->room); /* the fast path's counts are void */
		rc = mdb_txn_begin(sp->env, NULL, 0, &txn);
		sp->ev_txn = sp->ev;
		for (i = 0; !rc && i < n; i++) {
			MDB_txn *child = NULL;
			struct spool_evstate ev = sp->ev_txn;
			int crc = mdb_txn_begin(sp->env, txn, 0, &child);
			if (!crc)
				crc = apply(w, child, reqs[i]);
			if (!crc)
				crc = mdb_txn_commit(child);
			else if (child)
				mdb_txn_abort(child);
			if (crc)
				sp->ev_txn = ev; /* its events went with it */
			reqs[i]->status = status_of(crc);
			if (!crc)
				sync |= needs_sync(reqs[i]);
		}
		if (rc) {
			for (i = 0; i < n; i++) {
				reqs[i]->status = status_of(rc);
				reply(w, reqs[i]);
			}
			return;
		}
	}
	rc = mdb_txn_commit(txn);
	atomic_fetch_add(&sp->commits, 1);
	if (!rc) {
		atomic_store(&sp->room, w->room); /* until the next refresh */
		spool_events_published(sp);
	}
	if (!rc && sync) {
		rc = mdb_env_sync(sp->env, 1);
		atomic_fetch_add(&sp->syncs, 1);
	}
	if (rc) {
		log_failure(w, "commit failed", rc);
		for (i = 0; i < n; i++)
			reqs[i]->status = status_of(rc);
	}
	bool mbox = false;
	for (i = 0; i < n; i++)
		mbox |= !rc && reqs[i]->status == SPOOL_OK && touches_mbox(reqs[i]);
	if (mbox)
		spool_mbox_changed(sp);
	for (i = 0; i < n; i++)
		reply(w, reqs[i]);
}

static size_t req_bytes(const struct spool_req *req)
{
	if (req->type != SPOOL_REQ_SUBMIT)
		return 64;
	return req->u.submit.msg.body_len + 256;
}

static void process(struct writer *w, struct mq_item *list)
{
	struct spool_req *batch[BATCH_MAX_REQS];
	unsigned n = 0;
	size_t bytes = 0;
	while (list) {
		struct mq_item *next = list->next;
		list->next = NULL;
		struct spool_req *req = RP_CONTAINER_OF(list, struct spool_req, item);
		if (n == BATCH_MAX_REQS || (n && bytes + req_bytes(req) > BATCH_MAX_BYTES)) {
			commit_batch(w, batch, n);
			n = 0;
			bytes = 0;
		}
		batch[n++] = req;
		bytes += req_bytes(req);
		list = next;
	}
	if (n)
		commit_batch(w, batch, n);
}

bool spool_commit_deletes(struct spool *sp, MDB_txn *txn, MDB_cursor *cur, unsigned n)
{
	mdb_cursor_close(cur);
	if (!n) {
		mdb_txn_abort(txn);
		return false;
	}
	if (mdb_txn_commit(txn))
		return false;
	atomic_fetch_add(&sp->commits, 1);
	return true;
}

/* expire_batch - forget up to EXPIRE_PER_TXN finished messages in one
 * transaction: those whose keep_done time has passed, or, with evict, the
 * oldest ones whatever their time. Returns how many. */
static unsigned expire_batch(struct writer *w, uint64_t now, bool evict)
{
	struct spool *sp = w->sp;
	MDB_txn *txn;
	MDB_cursor *cur;
	unsigned n = 0;
	if (mdb_txn_begin(sp->env, NULL, 0, &txn))
		return 0;
	if (mdb_cursor_open(txn, sp->dbi_expire, &cur)) {
		mdb_txn_abort(txn);
		return 0;
	}
	MDB_val k, v;
	int rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
	while (rc == 0 && n < EXPIRE_PER_TXN && k.mv_size == 16 &&
	       (evict || rp_get_be64(k.mv_data) <= now)) {
		uint64_t id = rp_get_be64((const unsigned char *)k.mv_data + 8);
		unsigned char mk[8];
		spool_key_id(mk, id);
		MDB_val mkey = { .mv_size = 8, .mv_data = mk };
		if (delete_prefix(txn, sp->dbi_rcpt, id, 12) ||
		    delete_prefix(txn, sp->dbi_body, id, 16))
			break;
		int drc = mdb_del(txn, sp->dbi_msg, &mkey, NULL);
		if (drc && drc != MDB_NOTFOUND)
			break;
		if (mdb_cursor_del(cur, 0))
			break;
		n++;
		rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
	}
	if (!spool_commit_deletes(sp, txn, cur, n))
		return 0;
	if (evict)
		atomic_fetch_add(&sp->evicted, n);
	return n;
}

/* expire - forget finished messages whose keep_done time has passed, for
 * at most EXPIRE_BUDGET_MS. Kept status must never cost new mail its
 * room: while the live data passes half the spool's size, the oldest
 * finished messages go early. */
static void expire(struct writer *w)
{
	struct spool *sp = w->sp;
	uint64_t start = rp_mono_ms(), now = rp_now_ms(), total = 0;
	bool evict = atomic_load(&sp->used) > sp->opt.max_size / 2 || !spool_accepting(sp);
	for (;;) {
		unsigned n = expire_batch(w, now, evict);
		total += n;
		if (n < EXPIRE_PER_TXN || rp_mono_ms() - start >= EXPIRE_BUDGET_MS)
			break;
		if (evict) {
			spool_refresh_usage(sp, false);
			evict =
			    atomic_load(&sp->used) > sp->opt.max_size / 2 || !spool_accepting(sp);
		}
	}
	if (total)
		log_debug("spool: forgot %llu finished messages%s", (unsigned long long)total,
		          evict ? " (early: the spool is over half full, or the disk is)" : "");
}

/* retry_held - try the held requests again, in order; those that still
 * find no room are held again. */
static void retry_held(struct writer *w)
{
	struct mq_item *list = w->held;
	unsigned n = w->nheld;
	if (!list)
		return;
	w->held = NULL;
	w->held_tail = &w->held;
	w->nheld = 0;
	process(w, list);
	if (!w->nheld) {
		log_info("spool: %u delayed state updates written", n);
	} else if (!w->full_logged_ms || rp_mono_ms() - w->full_logged_ms >= FULL_LOG_MS) {
		w->full_logged_ms = rp_mono_ms();
		log_warn("spool: %u state updates wait for room (disk or spool full)", w->nheld);
	}
}

/* drop_held - at the stop: what still found no room is lost (those
 * recipients are attempted again after the restart: at least once). */
static void drop_held(struct writer *w)
{
	if (w->nheld)
		log_error("spool: %u state updates could not be written (no room); their "
		          "recipients will be attempted again after a restart",
		          w->nheld);
	while (w->held) {
		struct mq_item *next = w->held->next;
		free(RP_CONTAINER_OF(w->held, struct spool_req, item));
		w->held = next;
	}
	w->held_tail = &w->held;
	w->nheld = 0;
}

static void *writer_main(void *arg)
{
	struct writer w = { .sp = arg };
	struct spool *sp = w.sp;
	w.held_tail = &w.held;
	uint64_t last_maint = rp_mono_ms();
	log_set_thread("writer");
	/* The largest stored id: everything above it may be appended. */
	w.max_id = atomic_load(&sp->next_id) - 1;
	for (;;) {
		struct pollfd pfd = { .fd = sp->inbox.efd, .events = POLLIN };
		/* Once stopping, never sleep: the stop's doorbell may have been
		 * read together with a request's, and only the queue is left. */
		int prc = poll(&pfd, 1, atomic_load(&sp->stopping) ? 0 : MAINT_INTERVAL_MS);
		if (prc > 0) {
			uint64_t v;
			ssize_t r = read(sp->inbox.efd, &v, sizeof(v));
			(void)r;
		}
		struct mq_item *list = mq_take(&sp->inbox);
		if (list)
			process(&w, list);
		uint64_t now = rp_mono_ms();
		if (now - last_maint >= MAINT_INTERVAL_MS) {
			last_maint = now;
			spool_refresh_usage(sp, true);
			retry_held(&w);
			expire(&w);
			spool_mbox_expire(sp, rp_now_ms());
		}
		if (!list && atomic_load(&sp->stopping))
			break;
	}
	spool_refresh_usage(sp, false);
	retry_held(&w);
	drop_held(&w);
	buf_free(&w.scratch);
	return NULL;
}

bool spool_writer_start(struct spool *sp, char *err, size_t errlen)
{
	int rc = pthread_create(&sp->writer, NULL, writer_main, sp);
	if (rc) {
		snprintf(err, errlen, "cannot start the spool writer: %s", strerror(rc));
		return false;
	}
	sp->writer_started = true;
	return true;
}

void spool_writer_stop(struct spool *sp)
{
	if (!sp->writer_started)
		return;
	atomic_store(&sp->stopping, true);
	uint64_t one = 1;
	ssize_t r = write(sp->inbox.efd, &one, sizeof(one));
	(void)r;
	pthread_join(sp->writer, NULL);
	sp->writer_started = false;
}

void spool_request(struct spool *sp, struct spool_req *req)
{
	mq_push(&sp->inbox, &req->item, NULL);
}
