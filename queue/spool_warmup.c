/* spool_warmup.c - warm-up counters: what each source address sent each
 * domain, per UTC day, for [domain] warmup (relay/warmup.c keeps them in
 * memory and hands changed ones to the writer about once a second).
 *
 * Keys: "SOURCE DOMAIN" (SOURCE "*" when no [domain] source is set).
 * Values: a version, then three little words (first day, day, count):
 * small, fixed, and read back as stored. A value of an unknown version is
 * treated as absent (the warm-up starts again rather than guessing).
 */
#include <stdio.h>
#include <string.h>

#include "base/util.h"
#include "spool_impl.h"

#define WARMUP_VERSION 1

struct warmup_val {
	uint32_t version;
	uint32_t first_day, day, count;
};

uint32_t spool_warmup_index(const struct spool_warmup *c, uint32_t today)
{
	return c->first_day && today > c->first_day ? today - c->first_day : 0;
}

uint32_t spool_warmup_left(const struct spool_warmup *c, const uint32_t *caps, unsigned n,
                           uint32_t today)
{
	uint32_t k = spool_warmup_index(c, today);
	if (k >= n)
		return UINT32_MAX;
	uint32_t sent = c->day == today ? c->count : 0;
	return caps[k] > sent ? caps[k] - sent : 0;
}

int spool_apply_warmup(struct spool *sp, MDB_txn *txn, struct spool_req *req)
{
	for (unsigned i = 0; i < req->u.warmup.n; i++) {
		const struct spool_warmup *w = &req->u.warmup.v[i];
		size_t klen = strnlen(w->key, sizeof(w->key));
		if (!klen || klen == sizeof(w->key))
			continue; /* not a key warmup.c makes */
		struct warmup_val val = { WARMUP_VERSION, w->first_day, w->day, w->count };
		MDB_val k = { .mv_size = klen, .mv_data = (void *)w->key };
		MDB_val v = { .mv_size = sizeof(val), .mv_data = &val };
		int rc = mdb_put(txn, sp->dbi_warmup, &k, &v, 0);
		if (rc)
			return rc;
	}
	return 0;
}

/* decode - a stored value into out (key set by the caller). */
static bool decode(const MDB_val *v, struct spool_warmup *out)
{
	struct warmup_val val;
	if (v->mv_size != sizeof(val))
		return false;
	memcpy(&val, v->mv_data, sizeof(val));
	if (val.version != WARMUP_VERSION)
		return false;
	out->first_day = val.first_day;
	out->day = val.day;
	out->count = val.count;
	return true;
}

bool spool_warmup_get(struct spool_reader *r, const char *key, struct spool_warmup *out)
{
	rp_assert(r->active);
	size_t klen = strlen(key);
	if (!klen || klen >= sizeof(out->key))
		return false;
	MDB_val k = { .mv_size = klen, .mv_data = (void *)key }, v;
	if (mdb_get(r->txn, r->sp->dbi_warmup, &k, &v) || !decode(&v, out))
		return false;
	memcpy(out->key, key, klen + 1);
	return true;
}

unsigned spool_warmup_foreach(struct spool_reader *r, const char *after,
                              bool (*fn)(const struct spool_warmup *w, void *arg), void *arg)
{
	rp_assert(r->active);
	MDB_cursor *cur;
	if (mdb_cursor_open(r->txn, r->sp->dbi_warmup, &cur))
		return 0;
	unsigned n = 0;
	MDB_val k = { 0 }, v;
	int rc;
	if (after && after[0]) {
		k.mv_size = strlen(after);
		k.mv_data = (void *)after;
		rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
		if (!rc && k.mv_size == strlen(after) && !memcmp(k.mv_data, after, k.mv_size))
			rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT); /* after, not from */
	} else {
		rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
	}
	for (; !rc; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
		struct spool_warmup w;
		if (k.mv_size >= sizeof(w.key) || !decode(&v, &w))
			continue;
		memcpy(w.key, k.mv_data, k.mv_size);
		w.key[k.mv_size] = '\0';
		n++;
		if (!fn(&w, arg))
			break;
	}
	mdb_cursor_close(cur);
	return n;
}

uint64_t spool_warmup_count(struct spool_reader *r)
{
	rp_assert(r->active);
	MDB_stat st;
	if (mdb_stat(r->txn, r->sp->dbi_warmup, &st))
		return 0;
	return st.ms_entries;
}
