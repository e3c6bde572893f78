/* warmup.c - warm-up schedules: per source address and destination domain,
 * messages a day (see warmup.h).
 *
 * Counters are kept in a hash table keyed "SOURCE DOMAIN", each read from
 * the spool the first time this process needs it and authoritative after
 * that (only this shard changes it). Changed ones go to the spool writer
 * within FLUSH_MS, fire and forget: a crash loses at most that second's
 * counts (the cap can be exceeded by what was sent in it, never by more).
 */
#include "warmup.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "base/util.h"

#define FLUSH_MS    1000
#define FLUSH_BATCH 4096 /* counters per writer request, at most */
#define DAY_MS      86400000ull
#define CAP_MAX     10000000u

struct entry {
	struct spool_warmup c;
	struct entry *next; /* hash chain */
	bool dirty;         /* on w->dirty */
};

struct warmup {
	struct spool *sp;
	struct spool_reader *reader;
	struct loop *loop;
	struct loop_timer flush;
	struct entry **tab;
	uint32_t size, n;
	struct entry **dirty; /* changed since the last flush */
	unsigned ndirty, dirty_cap;
};

/* ---- schedules --------------------------------------------------------- */

bool warmup_parse(const char *text, uint32_t *caps, unsigned *n, char *err, size_t errlen)
{
	unsigned k = 0;
	const char *p = text;
	while (*p == ' ' || *p == '\t')
		p++;
	while (*p) {
		char *end;
		if (*p < '0' || *p > '9') {
			snprintf(err, errlen, "day %u: expected a number of messages like 50/d",
			         k + 1);
			return false;
		}
		unsigned long v = strtoul(p, &end, 10);
		if (v < 1 || v > CAP_MAX || end[0] != '/' || end[1] != 'd') {
			snprintf(err, errlen, "day %u: expected N/d with N from 1 to %u", k + 1,
			         CAP_MAX);
			return false;
		}
		if (k == CFG_WARMUP_MAX) {
			snprintf(err, errlen, "more than %u days", CFG_WARMUP_MAX);
			return false;
		}
		caps[k++] = (uint32_t)v;
		p = end + 2;
		while (*p == ' ' || *p == '\t')
			p++;
		if (*p == ',') {
			p++;
			while (*p == ' ' || *p == '\t')
				p++;
			if (!*p) {
				snprintf(err, errlen, "nothing after the last comma");
				return false;
			}
		} else if (*p) {
			snprintf(err, errlen, "day %u: expected a comma after %lu/d", k, v);
			return false;
		}
	}
	*n = k;
	return true;
}

uint32_t warmup_day(uint64_t unix_ms)
{
	return (uint32_t)(unix_ms / DAY_MS);
}

uint64_t warmup_day_end_ms(uint64_t unix_ms)
{
	return ((uint64_t)warmup_day(unix_ms) + 1) * DAY_MS;
}

uint32_t warmup_allowed(const struct cfg_domain *cd, const struct spool_warmup *c, uint32_t today)
{
	return spool_warmup_left(c, cd->warmup, cd->nwarmup, today);
}

/* ---- counters ---------------------------------------------------------- */

struct warmup *warmup_new(struct spool *sp, struct loop *loop)
{
	struct warmup *w = xcalloc(1, sizeof(*w));
	w->sp = sp;
	w->reader = spool_reader_new(sp);
	w->loop = loop;
	w->size = 64;
	w->tab = xcalloc(w->size, sizeof(*w->tab));
	return w;
}

void warmup_free(struct warmup *w)
{
	if (!w)
		return;
	warmup_flush(w);
	loop_timer_disarm(w->loop, &w->flush);
	for (uint32_t i = 0; i < w->size; i++)
		while (w->tab[i]) {
			struct entry *e = w->tab[i];
			w->tab[i] = e->next;
			free(e);
		}
	free(w->tab);
	free(w->dirty);
	spool_reader_free(w->reader);
	free(w);
}

/* grow - twice the buckets, when the table is full. */
static void grow(struct warmup *w)
{
	uint32_t size = w->size * 2;
	struct entry **tab = xcalloc(size, sizeof(*tab));
	for (uint32_t i = 0; i < w->size; i++)
		while (w->tab[i]) {
			struct entry *e = w->tab[i];
			w->tab[i] = e->next;
			uint32_t h = (uint32_t)rp_hash64(e->c.key, strlen(e->c.key)) & (size - 1);
			e->next = tab[h];
			tab[h] = e;
		}
	free(w->tab);
	w->tab = tab;
	w->size = size;
}

/* get - the counter of (src, domain): from the table, else the spool, else
 * a new one; NULL when the key would be too long (no such domain). */
static struct entry *get(struct warmup *w, const char *src, const char *domain)
{
	char key[SPOOL_WARMUP_KEY_MAX];
	int klen = snprintf(key, sizeof(key), "%s %s", src[0] ? src : "*", domain);
	if (klen < 0 || (size_t)klen >= sizeof(key))
		return NULL;
	uint32_t h = (uint32_t)rp_hash64(key, (size_t)klen) & (w->size - 1);
	for (struct entry *e = w->tab[h]; e; e = e->next)
		if (!strcmp(e->c.key, key))
			return e;
	struct entry *e = xcalloc(1, sizeof(*e));
	bool found = false;
	if (spool_reader_begin(w->reader)) {
		found = spool_warmup_get(w->reader, key, &e->c);
		spool_reader_end(w->reader);
	}
	if (!found)
		memcpy(e->c.key, key, (size_t)klen + 1);
	if (w->n >= w->size) {
		grow(w);
		h = (uint32_t)rp_hash64(key, (size_t)klen) & (w->size - 1);
	}
	e->next = w->tab[h];
	w->tab[h] = e;
	w->n++;
	return e;
}

uint32_t warmup_left(struct warmup *w, const struct cfg_domain *cd, const char *src,
                     const char *domain, uint64_t now_ms)
{
	if (!cd->nwarmup)
		return WARMUP_NO_CAP;
	struct entry *e = get(w, src, domain);
	return e ? warmup_allowed(cd, &e->c, warmup_day(now_ms)) : WARMUP_NO_CAP;
}

static void flush_timer(struct loop_timer *t)
{
	warmup_flush(RP_CONTAINER_OF(t, struct warmup, flush));
}

void warmup_take(struct warmup *w, const struct cfg_domain *cd, const char *src, const char *domain,
                 uint64_t now_ms)
{
	if (!cd->nwarmup)
		return;
	struct entry *e = get(w, src, domain);
	uint32_t today = warmup_day(now_ms);
	if (!e || warmup_allowed(cd, &e->c, today) == WARMUP_NO_CAP)
		return; /* warmed up: nothing to count */
	if (!e->c.first_day)
		e->c.first_day = today;
	if (e->c.day != today) {
		e->c.day = today;
		e->c.count = 0;
	}
	e->c.count++;
	if (!e->dirty) {
		e->dirty = true;
		if (w->ndirty == w->dirty_cap) {
			w->dirty_cap = w->dirty_cap ? w->dirty_cap * 2 : 16;
			w->dirty = xrealloc(w->dirty, w->dirty_cap * sizeof(*w->dirty));
		}
		w->dirty[w->ndirty++] = e;
	}
	if (!loop_timer_armed(&w->flush))
		loop_timer_arm(w->loop, &w->flush, FLUSH_MS, flush_timer);
}

void warmup_flush(struct warmup *w)
{
	for (unsigned at = 0; at < w->ndirty; at += FLUSH_BATCH) {
		unsigned n = RP_MIN(w->ndirty - at, (unsigned)FLUSH_BATCH);
		/* One allocation, freed by the writer (no one waits). */
		struct spool_req *req = xcalloc(1, sizeof(*req) + n * sizeof(struct spool_warmup));
		struct spool_warmup *v = (struct spool_warmup *)(req + 1);
		for (unsigned i = 0; i < n; i++) {
			struct entry *e = w->dirty[at + i];
			v[i] = e->c;
			e->dirty = false;
		}
		req->type = SPOOL_REQ_WARMUP;
		req->u.warmup.v = v;
		req->u.warmup.n = n;
		spool_request(w->sp, req);
	}
	w->ndirty = 0;
}
