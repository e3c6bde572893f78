/* spool_suppress.c - the suppression list: addresses that hard-bounced or
 * complained (or that an operator added), which later mail must not be
 * sent to (see spool.h).
 *
 * Keys are addresses lower-cased whole (local parts are case-blind in
 * practice, and a list that missed "Bob@x" for "bob@x" would be worse
 * than one that merges them). Values: a small header, then the reason.
 * With [queue] suppress, a submission's recipients are checked inside the
 * submit transaction itself, so no message slips between a check and its
 * commit.
 */
#include <stdio.h>
#include <stdlib.h>

#include "base/util.h"
#include "spool_impl.h"

#define SUPPRESS_REASON_MAX 400
#define SUPPRESS_VERSION    1

struct spool_suppress_hdr {
	uint8_t version;
	uint8_t pad[7];
	uint64_t time_ms;
};

/* lower_key - addr lower-cased into out; false when too long or empty. */
static bool lower_key(const char *addr, size_t len, char out[SUPPRESS_ADDR_MAX], size_t *n)
{
	if (!len || len >= SUPPRESS_ADDR_MAX)
		return false;
	for (size_t i = 0; i < len; i++)
		out[i] = (addr[i] >= 'A' && addr[i] <= 'Z') ? (char)(addr[i] - 'A' + 'a') : addr[i];
	*n = len;
	return true;
}

/* decode - a stored entry into s (addr already set). */
static bool decode(const MDB_val *v, struct spool_suppression *s)
{
	struct spool_suppress_hdr h;
	if (v->mv_size < sizeof(h))
		return false;
	memcpy(&h, v->mv_data, sizeof(h));
	if (h.version != SUPPRESS_VERSION)
		return false;
	s->time_ms = h.time_ms;
	s->reason = (const char *)v->mv_data + sizeof(h);
	s->reason_len = v->mv_size - sizeof(h);
	return true;
}

int spool_suppress_put(struct spool *sp, MDB_txn *txn, const char *addr, size_t len,
                       const char *reason, size_t reason_len, uint64_t now_ms)
{
	char key[SUPPRESS_ADDR_MAX];
	size_t klen;
	if (!lower_key(addr, len, key, &klen))
		return 0; /* nothing that long is a deliverable address */
	reason_len = RP_MIN(reason_len, (size_t)SUPPRESS_REASON_MAX);
	struct spool_suppress_hdr h = { .version = SUPPRESS_VERSION, .time_ms = now_ms };
	MDB_val k = { .mv_size = klen, .mv_data = key }, v = { .mv_size = sizeof(h) + reason_len };
	int rc = mdb_put(txn, sp->dbi_suppress, &k, &v, MDB_RESERVE);
	if (rc)
		return rc;
	memcpy(v.mv_data, &h, sizeof(h));
	if (reason_len)
		memcpy((char *)v.mv_data + sizeof(h), reason, reason_len);
	return 0;
}

bool spool_suppressed(struct spool *sp, MDB_txn *txn, const char *addr, size_t len,
                      const char **reason, size_t *reason_len)
{
	char key[SUPPRESS_ADDR_MAX];
	size_t klen;
	if (!lower_key(addr, len, key, &klen))
		return false;
	MDB_val k = { .mv_size = klen, .mv_data = key }, v;
	if (mdb_get(txn, sp->dbi_suppress, &k, &v))
		return false;
	struct spool_suppression s;
	if (!decode(&v, &s))
		return false;
	*reason = s.reason;
	*reason_len = s.reason_len;
	return true;
}

int spool_apply_suppress(struct spool *sp, MDB_txn *txn, struct spool_req *req)
{
	char key[SUPPRESS_ADDR_MAX];
	size_t klen;
	const char *reason;
	size_t rlen;
	req->u.suppress.existed = spool_suppressed(sp, txn, req->u.suppress.addr,
	                                           req->u.suppress.addr_len, &reason, &rlen);
	if (req->u.suppress.add)
		return spool_suppress_put(sp, txn, req->u.suppress.addr, req->u.suppress.addr_len,
		                          req->u.suppress.reason, req->u.suppress.reason_len,
		                          rp_now_ms());
	if (!req->u.suppress.existed ||
	    !lower_key(req->u.suppress.addr, req->u.suppress.addr_len, key, &klen))
		return 0;
	MDB_val k = { .mv_size = klen, .mv_data = key };
	int rc = mdb_del(txn, sp->dbi_suppress, &k, NULL);
	return rc == MDB_NOTFOUND ? 0 : rc;
}

/* ---- reads ------------------------------------------------------------- */

bool spool_suppress_get(struct spool_reader *r, const char *addr, size_t len,
                        struct spool_suppression *s)
{
	char key[SUPPRESS_ADDR_MAX];
	size_t klen;
	MDB_cursor *cur;
	rp_assert(r->active);
	if (!lower_key(addr, len, key, &klen) || mdb_cursor_open(r->txn, r->sp->dbi_suppress, &cur))
		return false;
	/* MDB_SET_KEY points k at the stored key, which lives with the
	 * transaction (our buffer does not). */
	MDB_val k = { .mv_size = klen, .mv_data = key }, v;
	bool ok = mdb_cursor_get(cur, &k, &v, MDB_SET_KEY) == 0 && decode(&v, s);
	if (ok) {
		s->addr = k.mv_data;
		s->addr_len = k.mv_size;
	}
	mdb_cursor_close(cur);
	return ok;
}

unsigned spool_suppress_foreach(struct spool_reader *r, const char *after, size_t after_len,
                                bool (*fn)(const struct spool_suppression *s, void *arg), void *arg)
{
	MDB_cursor *cur;
	unsigned n = 0;
	rp_assert(r->active);
	if (mdb_cursor_open(r->txn, r->sp->dbi_suppress, &cur))
		return 0;
	char key[SUPPRESS_ADDR_MAX];
	size_t klen = 0;
	MDB_val k, v;
	int rc;
	if (after && lower_key(after, after_len, key, &klen)) {
		k.mv_size = klen;
		k.mv_data = key;
		rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
		if (rc == 0 && k.mv_size == klen && !memcmp(k.mv_data, key, klen))
			rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT); /* strictly after */
	} else {
		rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
	}
	for (; rc == 0; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
		struct spool_suppression s = { .addr = k.mv_data, .addr_len = k.mv_size };
		if (!decode(&v, &s))
			continue;
		n++;
		if (!fn(&s, arg))
			break;
	}
	mdb_cursor_close(cur);
	return n;
}

uint64_t spool_suppress_count(struct spool_reader *r)
{
	MDB_stat st;
	rp_assert(r->active);
	return mdb_stat(r->txn, r->sp->dbi_suppress, &st) == 0 ? st.ms_entries : 0;
}

const unsigned char *spool_verp_key(const struct spool *sp)
{
	return sp->verp_key;
}
