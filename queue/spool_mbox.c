/* spool_mbox.c - the bounce mailbox store: one INBOX of messages keyed by
 * UID, with flags and an internal date (see spool.h).
 *
 * UIDs are given in order and never reused ("uidnext" remembers past the
 * newest expunged message); UIDVALIDITY is fixed when the spool is made,
 * so both survive restarts (RFC 3501 2.3.1.1). The writer applies puts,
 * flag changes, expunges and arriving reports inside its transactions and
 * enforces [mailbox] max_messages and max_age in its maintenance; readers
 * use short read transactions.
 */
#include <stdio.h>
#include <stdlib.h>

#include "base/log.h"
#include "base/util.h"
#include "spool_impl.h"

#define EXPIRE_MAX 10000 /* mailbox messages removed per maintenance pass */

bool spool_mbox_decode(const void *p, size_t n, struct spool_mbox_entry *e)
{
	struct spool_mbox_hdr h;
	if (n < sizeof(h))
		return false;
	memcpy(&h, p, sizeof(h));
	if (h.version != SPOOL_MBOX_VERSION)
		return false;
	e->flags = h.flags;
	e->date_ms = h.date_ms;
	e->data = (const char *)p + sizeof(h);
	e->len = n - sizeof(h);
	return true;
}

bool spool_mbox_get(struct spool_reader *r, uint32_t uid, struct spool_mbox_entry *e)
{
	unsigned char kb[4];
	rp_put_be32(kb, uid);
	MDB_val k = { .mv_size = 4, .mv_data = kb }, v;
	rp_assert(r->active);
	if (mdb_get(r->txn, r->sp->dbi_mbox, &k, &v))
		return false;
	e->uid = uid;
	return spool_mbox_decode(v.mv_data, v.mv_size, e);
}

unsigned spool_mbox_foreach(struct spool_reader *r, uint32_t from,
                            bool (*fn)(const struct spool_mbox_entry *e, void *arg), void *arg)
{
	unsigned char kb[4];
	MDB_cursor *cur;
	unsigned n = 0;
	rp_assert(r->active);
	rp_put_be32(kb, from);
	if (mdb_cursor_open(r->txn, r->sp->dbi_mbox, &cur))
		return 0;
	MDB_val k = { .mv_size = 4, .mv_data = kb }, v;
	for (int rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); rc == 0;
	     rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
		struct spool_mbox_entry e;
		if (k.mv_size != 4 || !spool_mbox_decode(v.mv_data, v.mv_size, &e))
			continue;
		e.uid = rp_get_be32(k.mv_data);
		n++;
		if (!fn(&e, arg))
			break;
	}
	mdb_cursor_close(cur);
	return n;
}

void spool_mbox_ids(struct spool_reader *r, uint32_t *uidvalidity, uint32_t *uidnext)
{
	MDB_val k = { .mv_size = 11, .mv_data = "uidvalidity" }, v;
	rp_assert(r->active);
	*uidvalidity = 1;
	*uidnext = 1;
	if (!mdb_get(r->txn, r->sp->dbi_mbox_meta, &k, &v) && v.mv_size == 4)
		memcpy(uidvalidity, v.mv_data, 4);
	MDB_cursor *cur;
	if (mdb_cursor_open(r->txn, r->sp->dbi_mbox, &cur))
		return;
	MDB_val ck, cv;
	if (mdb_cursor_get(cur, &ck, &cv, MDB_LAST) == 0 && ck.mv_size == 4)
		*uidnext = rp_get_be32(ck.mv_data) + 1;
	mdb_cursor_close(cur);
	k.mv_size = 7;
	k.mv_data = "uidnext";
	if (!mdb_get(r->txn, r->sp->dbi_mbox_meta, &k, &v) && v.mv_size == 4) {
		uint32_t stored;
		memcpy(&stored, v.mv_data, 4);
		if (stored > *uidnext)
			*uidnext = stored;
	}
}

uint64_t spool_mbox_generation(const struct spool *sp)
{
	return atomic_load(&sp->mbox_gen);
}

void spool_mbox_changed(struct spool *sp)
{
	atomic_fetch_add(&sp->mbox_gen, 1);
	if (sp->opt.mbox_changed)
		sp->opt.mbox_changed(sp->opt.mbox_arg);
}

/* ---- writes ------------------------------------------------------------ */

/* spool_apply_mbox_put - the next UID (never reused: "uidnext" remembers it
 * even after the newest message is expunged). */
int spool_apply_mbox_put(struct spool *sp, MDB_txn *txn, struct spool_req *req)
{
	uint32_t uid = 1;
	MDB_val nk = { .mv_size = 7, .mv_data = "uidnext" }, nv;
	int rc = mdb_get(txn, sp->dbi_mbox_meta, &nk, &nv);
	if (rc == 0 && nv.mv_size == 4)
		memcpy(&uid, nv.mv_data, 4);
	else if (rc != MDB_NOTFOUND)
		return rc;
	unsigned char kb[4];
	rp_put_be32(kb, uid);
	struct spool_mbox_hdr h = { .version = SPOOL_MBOX_VERSION,
		                    .flags = req->u.mbox.flags,
		                    .date_ms = req->u.mbox.date_ms };
	MDB_val k = { .mv_size = 4, .mv_data = kb }, v = { .mv_size = sizeof(h) + req->u.mbox.len };
	rc = mdb_put(txn, sp->dbi_mbox, &k, &v, MDB_RESERVE | MDB_APPEND);
	if (rc == MDB_KEYEXIST) {
		/* "uidnext" is behind the newest message (a damaged meta
		 * record): go on after the newest, never over a message. */
		MDB_cursor *cur;
		MDB_val lk, lv;
		if ((rc = mdb_cursor_open(txn, sp->dbi_mbox, &cur)) != 0)
			return rc;
		rc = mdb_cursor_get(cur, &lk, &lv, MDB_LAST);
		mdb_cursor_close(cur);
		if (rc || lk.mv_size != 4 || rp_get_be32(lk.mv_data) == UINT32_MAX)
			return rc ? rc : MDB_KEYEXIST;
		uid = rp_get_be32(lk.mv_data) + 1;
		rp_put_be32(kb, uid);
		rc = mdb_put(txn, sp->dbi_mbox, &k, &v, MDB_RESERVE | MDB_APPEND);
	}
	if (rc)
		return rc;
	memcpy(v.mv_data, &h, sizeof(h));
	memcpy((char *)v.mv_data + sizeof(h), req->u.mbox.data, req->u.mbox.len);
	uint32_t next = uid + 1;
	nv.mv_size = 4;
	nv.mv_data = &next;
	rc = mdb_put(txn, sp->dbi_mbox_meta, &nk, &nv, 0);
	if (!rc)
		req->u.mbox.uid = uid;
	return rc;
}

/* rewrite_flags - the record at k (a cursor's current value v) with new flags. */
static int rewrite_flags(MDB_txn *txn, MDB_dbi dbi, MDB_val *k, MDB_val *v, uint8_t flags)
{
	struct spool_mbox_hdr h;
	if (v->mv_size < sizeof(h))
		return 0;
	memcpy(&h, v->mv_data, sizeof(h));
	if (h.flags == flags)
		return 0;
	/* A copy: the value points into a page the put may replace. */
	char *copy = xmalloc(v->mv_size);
	memcpy(copy, v->mv_data, v->mv_size);
	h.flags = flags;
	memcpy(copy, &h, sizeof(h));
	MDB_val nv = { .mv_size = v->mv_size, .mv_data = copy };
	int rc = mdb_put(txn, dbi, k, &nv, 0);
	free(copy);
	return rc;
}

int spool_apply_mbox_store(struct spool *sp, MDB_txn *txn, struct spool_req *req)
{
	for (unsigned i = 0; i < req->u.store.n; i++) {
		unsigned char kb[4];
		rp_put_be32(kb, req->u.store.uids[i]);
		MDB_val k = { .mv_size = 4, .mv_data = kb }, v;
		int rc = mdb_get(txn, sp->dbi_mbox, &k, &v);
		if (rc == MDB_NOTFOUND)
			continue;
		if (rc)
			return rc;
		struct spool_mbox_hdr h;
		if (v.mv_size < sizeof(h))
			continue;
		memcpy(&h, v.mv_data, sizeof(h));
		uint8_t flags = (uint8_t)((h.flags | req->u.store.set) & ~req->u.store.clear);
		rc = rewrite_flags(txn, sp->dbi_mbox, &k, &v, flags);
		if (rc)
			return rc;
	}
	return 0;
}

int spool_apply_mbox_expunge(struct spool *sp, MDB_txn *txn, struct spool_req *req)
{
	req->u.expunge.removed = 0;
	for (unsigned i = 0; i < req->u.expunge.n; i++) {
		unsigned char kb[4];
		rp_put_be32(kb, req->u.expunge.uids[i]);
		MDB_val k = { .mv_size = 4, .mv_data = kb };
		int rc = mdb_del(txn, sp->dbi_mbox, &k, NULL);
		if (rc == MDB_NOTFOUND)
			continue;
		if (rc)
			return rc;
		req->u.expunge.removed++;
	}
	return 0;
}

/* apply_event - what a report says about one recipient: its record's
 * state (a delivered recipient becomes bounced or complained; a bounced
 * one may still complain), and the suppression list (the record's address;
 * nothing when the record is gone). */
static int apply_event(struct spool *sp, MDB_txn *txn, struct spool_event *ev, uint64_t now)
{
	unsigned char kb[12];
	const char *addr = NULL;
	size_t addr_len = 0;
	char *copy = NULL;
	int rc = 0;
	ev->found = false;
	if (ev->msgid) {
		spool_key_rcpt(kb, ev->msgid, ev->idx);
		MDB_val k = { .mv_size = 12, .mv_data = kb }, v;
		rc = mdb_get(txn, sp->dbi_rcpt, &k, &v);
		struct spool_rcpt r = { .msgid = ev->msgid, .idx = ev->idx };
		if (rc == 0 && spool_rcpt_decode(v.mv_data, v.mv_size, &r)) {
			ev->found = true;
			copy = xmalloc(r.addr_len + 1); /* r points into the page we replace */
			memcpy(copy, r.addr, r.addr_len);
			addr = copy;
			addr_len = r.addr_len;
			bool change = r.state == SPOOL_DELIVERED ||
			              (r.state == SPOOL_BOUNCED && ev->state == SPOOL_COMPLAINED);
			if (change) {
				/* The record keeps what happened first: the delivery's
				 * reply (or the bounce a complaint follows). */
				struct buf resp = { 0 }, b = { 0 };
				buf_append(&resp, ev->response,
				           RP_MIN(ev->response_len, (size_t)500));
				if (r.response_len)
					buf_printf(
					    &resp, " (%s before: %.*s)",
					    r.state == SPOOL_DELIVERED ? "delivered" : "bounced",
					    (int)RP_MIN(r.response_len, (size_t)400), r.response);
				r.state = ev->state;
				r.response = buf_head(&resp);
				r.response_len = RP_MIN(buf_used(&resp), (size_t)1000);
				spool_rcpt_encode(&r, buf_reserve(&b, spool_rcpt_size(&r)));
				MDB_val nv = { .mv_size = spool_rcpt_size(&r), .mv_data = b.data };
				rc = mdb_put(txn, sp->dbi_rcpt, &k, &nv, 0);
				/* The event from the copy written (r pointed into the
				 * replaced page), with the report's own words. */
				struct spool_rcpt er = { .msgid = ev->msgid, .idx = ev->idx };
				if (!rc && spool_rcpt_decode(b.data, nv.mv_size, &er))
					rc = spool_event_put(
					    sp, txn,
					    ev->state == SPOOL_COMPLAINED ? SPOOL_EV_COMPLAINED
					                                  : SPOOL_EV_BOUNCED,
					    &er, er.attempts, ev->response,
					    RP_MIN(ev->response_len, (size_t)500), NULL, 0, now);
				buf_free(&b);
				buf_free(&resp);
			} else {
				rc = 0;
			}
		} else if (rc == MDB_NOTFOUND) {
			rc = 0;
		}
	}
	if (!rc && ev->suppress && sp->opt.suppress && addr && addr_len)
		rc = spool_suppress_put(sp, txn, addr, addr_len, ev->reason,
		                        ev->reason ? strlen(ev->reason) : 0, now);
	free(copy);
	return rc;
}

int spool_apply_inbound(struct spool *sp, MDB_txn *txn, struct spool_req *req)
{
	int rc = spool_apply_mbox_put(sp, txn, req);
	uint64_t now = rp_now_ms();
	for (unsigned i = 0; !rc && i < req->nevents; i++)
		rc = apply_event(sp, txn, &req->events[i], now);
	return rc;
}

/* ---- expiry ------------------------------------------------------------ */

unsigned spool_mbox_expire(struct spool *sp, uint64_t now_ms)
{
	uint32_t max_n = sp->opt.mbox_max_messages;
	uint64_t max_age = sp->opt.mbox_max_age_ms;
	if (!max_n && !max_age)
		return 0;
	MDB_txn *txn;
	if (mdb_txn_begin(sp->env, NULL, 0, &txn))
		return 0;
	MDB_stat st;
	uint64_t count = mdb_stat(txn, sp->dbi_mbox, &st) == 0 ? st.ms_entries : 0;
	MDB_cursor *cur;
	unsigned n = 0;
	if (mdb_cursor_open(txn, sp->dbi_mbox, &cur)) {
		mdb_txn_abort(txn);
		return 0;
	}
	MDB_val k, v;
	int rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
	/* Oldest first (UIDs grow with time): past the count, then past the age. */
	while (rc == 0 && n < EXPIRE_MAX) {
		struct spool_mbox_entry e;
		bool too_many = max_n && count - n > max_n;
		bool too_old = max_age && spool_mbox_decode(v.mv_data, v.mv_size, &e) &&
		               e.date_ms + max_age < now_ms;
		if (!too_many && !too_old)
			break;
		if (mdb_cursor_del(cur, 0))
			break;
		n++;
		rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
	}
	if (!spool_commit_deletes(sp, txn, cur, n))
		return 0;
	log_info("mailbox: expunged %u old messages (max_messages %u, max_age %llus)", n, max_n,
	         (unsigned long long)(max_age / 1000));
	spool_mbox_changed(sp);
	return n;
}
