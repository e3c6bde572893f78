/* spool_events.c - delivery events for webhooks, kept in the spool.
 *
 * An event is written by the writer thread in the same transaction as the
 * state change it reports (a submission, an attempt's outcome, a report
 * from the bounce MX), so a crash keeps both or neither. Keys are a be64
 * sequence number that only grows (MDB_APPEND); the value is the event as
 * the webhook posts it, one JSON object, so the poster only joins them.
 *
 * The backlog is bounded by events_max: recording one more drops the
 * oldest (counted), never the mail. The poster reads in sequence order and
 * asks the writer to delete what the endpoint took (EVENTS_DONE); that
 * delete is not synced: after a crash an event may be posted twice (at
 * least once), never lost.
 *
 * Numbers (sequence, backlog, dropped) change inside a transaction that
 * may be aborted, so the writer keeps two copies: ev, what is committed,
 * and ev_txn, what the open transaction would make of it.
 */
#include <stdio.h>
#include <string.h>

#include "spool_impl.h"
#include "base/util.h"

static const char *const ev_names[SPOOL_EV_TYPES] = {
	[SPOOL_EV_ACCEPTED] = "accepted",     [SPOOL_EV_DELIVERED] = "delivered",
	[SPOOL_EV_DEFERRED] = "deferred",     [SPOOL_EV_BOUNCED] = "bounced",
	[SPOOL_EV_SUPPRESSED] = "suppressed", [SPOOL_EV_COMPLAINED] = "complained",
};

const char *spool_ev_name(unsigned type)
{
	return type < SPOOL_EV_TYPES ? ev_names[type] : "unknown";
}

bool spool_ev_mask_parse(const char *list, uint32_t *mask, char *err, size_t errlen)
{
	uint32_t m = 0;
	const char *p = list;
	for (;;) {
		while (*p == ' ' || *p == '\t' || *p == ',')
			p++;
		if (!*p)
			break;
		size_t n = strcspn(p, " \t,");
		unsigned t;
		for (t = 0; t < SPOOL_EV_TYPES; t++)
			if (strlen(ev_names[t]) == n && !strncmp(p, ev_names[t], n))
				break;
		if (t == SPOOL_EV_TYPES) {
			snprintf(err, errlen,
			         "unknown event '%.*s' (accepted, delivered, deferred, bounced, "
			         "suppressed, complained)",
			         (int)RP_MIN(n, (size_t)40), p);
			return false;
		}
		m |= SPOOL_EV_BIT(t);
		p += n;
	}
	*mask = m ? m : SPOOL_EV_DEFAULTS;
	return true;
}

int spool_events_load(struct spool *sp, MDB_txn *txn)
{
	MDB_stat st;
	int rc = mdb_stat(txn, sp->dbi_events, &st);
	if (rc)
		return rc;
	memset(&sp->ev, 0, sizeof(sp->ev));
	sp->ev.count = st.ms_entries;
	MDB_cursor *cur;
	rc = mdb_cursor_open(txn, sp->dbi_events, &cur);
	if (rc)
		return rc;
	MDB_val k, v;
	rc = mdb_cursor_get(cur, &k, &v, MDB_LAST);
	if (rc == 0 && k.mv_size == 8)
		sp->ev.seq = rp_get_be64(k.mv_data);
	mdb_cursor_close(cur);
	sp->ev_txn = sp->ev;
	spool_events_published(sp);
	return rc == MDB_NOTFOUND ? 0 : rc;
}

void spool_events_published(struct spool *sp)
{
	sp->ev = sp->ev_txn;
	atomic_store(&sp->ev_count_pub, sp->ev.count);
	atomic_store(&sp->ev_dropped_pub, sp->ev.dropped);
	atomic_store(&sp->ev_recorded_pub, sp->ev.recorded);
	atomic_store(&sp->ev_seq_pub, sp->ev.seq);
}

/* drop_oldest - make room for one more event under the bound. */
static int drop_oldest(struct spool *sp, MDB_txn *txn)
{
	uint64_t max = atomic_load(&sp->ev_max);
	if (!max || sp->ev_txn.count < max)
		return 0;
	MDB_cursor *cur;
	int rc = mdb_cursor_open(txn, sp->dbi_events, &cur);
	if (rc)
		return rc;
	MDB_val k, v;
	while (sp->ev_txn.count >= max && (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST)) == 0) {
		rc = mdb_cursor_del(cur, 0);
		if (rc)
			break;
		sp->ev_txn.count--;
		sp->ev_txn.dropped++;
	}
	mdb_cursor_close(cur);
	return rc == MDB_NOTFOUND ? 0 : rc;
}

int spool_event_put(struct spool *sp, MDB_txn *txn, unsigned type, const struct spool_rcpt *r,
                    unsigned attempts, const char *response, size_t response_len,
                    const char *remote, size_t remote_len, uint64_t now_ms)
{
	if (!spool_event_wanted(sp, type))
		return 0;
	char id[17], when[32];
	rp_id_format(r->msgid, id);
	rp_iso_time(now_ms, when);
	/* Built before any write: r, response and remote may point into
	 * pages this transaction is about to change. */
	struct buf b = { 0 };
	buf_printf(&b, "{\"event\":\"%s\",\"id\":\"%s\",\"recipient_id\":\"%s.%u\",\"recipient\":",
	           ev_names[type], id, id, r->idx);
	buf_json_str(&b, r->addr, r->addr_len);
	buf_printf(&b, ",\"time\":\"%s\",\"attempts\":%u,\"response\":", when, attempts);
	if (response_len)
		buf_json_str(&b, response, RP_MIN(response_len, (size_t)1000));
	else
		buf_puts(&b, "null");
	buf_puts(&b, ",\"remote\":");
	if (remote_len)
		buf_json_str(&b, remote, RP_MIN(remote_len, (size_t)300));
	else
		buf_puts(&b, "null");
	buf_puts(&b, "}");

	int rc = drop_oldest(sp, txn);
	if (!rc) {
		unsigned char kb[8];
		rp_put_be64(kb, sp->ev_txn.seq + 1);
		MDB_val k = { .mv_size = 8, .mv_data = kb },
		        v = { .mv_size = buf_used(&b), .mv_data = buf_head(&b) };
		rc = mdb_put(txn, sp->dbi_events, &k, &v, MDB_APPEND);
	}
	buf_free(&b);
	if (rc)
		return rc;
	sp->ev_txn.seq++;
	sp->ev_txn.count++;
	sp->ev_txn.recorded++;
	return 0;
}

int spool_apply_events_done(struct spool *sp, MDB_txn *txn, struct spool_req *req)
{
	uint64_t upto = req->u.events_done.upto;
	MDB_cursor *cur;
	int rc = mdb_cursor_open(txn, sp->dbi_events, &cur);
	if (rc)
		return rc;
	MDB_val k, v;
	while ((rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST)) == 0) {
		if (k.mv_size != 8 || rp_get_be64(k.mv_data) > upto)
			break;
		rc = mdb_cursor_del(cur, 0);
		if (rc)
			break;
		if (sp->ev_txn.count)
			sp->ev_txn.count--;
	}
	mdb_cursor_close(cur);
	return rc == MDB_NOTFOUND ? 0 : rc;
}

unsigned spool_events_read(struct spool_reader *r, uint64_t after, unsigned max, size_t max_bytes,
                           struct buf *out, uint64_t *last)
{
	MDB_cursor *cur;
	if (mdb_cursor_open(r->txn, r->sp->dbi_events, &cur))
		return 0;
	unsigned char kb[8];
	rp_put_be64(kb, after + 1);
	MDB_val k = { .mv_size = 8, .mv_data = kb }, v;
	unsigned n = 0;
	size_t start = buf_used(out);
	int rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
	while (rc == 0 && n < max && k.mv_size == 8) {
		/* One event always goes, however large: the poster must move on. */
		if (n && buf_used(out) - start + v.mv_size + 1 > max_bytes)
			break;
		if (n)
			buf_append(out, ",", 1);
		buf_append(out, v.mv_data, v.mv_size);
		*last = rp_get_be64(k.mv_data);
		n++;
		rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
	}
	mdb_cursor_close(cur);
	return n;
}

void spool_events_info(const struct spool *sp, struct spool_events_info *out)
{
	out->last_seq = atomic_load(&sp->ev_seq_pub);
	out->backlog = atomic_load(&sp->ev_count_pub);
	out->dropped = atomic_load(&sp->ev_dropped_pub);
	out->recorded = atomic_load(&sp->ev_recorded_pub);
}

void spool_set_events(struct spool *sp, uint32_t mask, uint64_t max)
{
	atomic_store(&sp->ev_max, max);
	atomic_store(&sp->ev_mask, mask);
}
