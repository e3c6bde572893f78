/* dns_cache.c - the resolver's answer cache: TTLs, negative entries, a
 * bounded LRU, and lookups in flight shared by everyone who asks. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dns_impl.h"
#include "base/util.h"

void dns_result_ref(struct dns_result *res)
{
	res->refs++;
}

void dns_result_unref(struct dns_result *res)
{
	if (!res || --res->refs)
		return;
	free(res);
}

struct dns_result *dns_result_new(enum dns_status st, unsigned n, size_t names)
{
	/* One allocation: the result, its hops, then the names. */
	size_t size = sizeof(struct dns_result) + n * sizeof(struct dns_hop) + names;
	struct dns_result *res = xcalloc(1, size);
	res->refs = 1;
	res->status = st;
	res->hops = (struct dns_hop *)(res + 1);
	res->names = (char *)(res->hops + n);
	res->error = "";
	return res;
}

struct dns_result *dns_result_failed(enum dns_status st, uint64_t ttl_ms, const char *fmt, ...)
{
	/* The reason is kept only as long as it is: a cache full of good
	 * answers carries no room for one. */
	char why[160];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	size_t len = strlen(why) + 1;
	struct dns_result *res = dns_result_new(st, 0, len);
	memcpy(res->names, why, len);
	res->error = res->names;
	res->expires_ms = rp_mono_ms() + ttl_ms;
	return res;
}

static size_t result_bytes(const struct dns_result *res)
{
	size_t names = 0;
	for (unsigned i = 0; i < res->nhops; i++) /* one name per exchanger, not per address */
		if (!i || res->hops[i].host != res->hops[i - 1].host)
			names += strlen(res->hops[i].host) + 1;
	if (res->error[0])
		names += strlen(res->error) + 1;
	return sizeof(*res) + res->nhops * sizeof(struct dns_hop) + names;
}

/* lru_front - e is the most recently used entry. */
static void lru_front(struct dns_resolver *r, struct dns_entry *e)
{
	rp_list_del(&e->lru);
	rp_list_add(&r->lru, &e->lru);
}

static void entry_free(struct dns_resolver *r, struct dns_entry *e)
{
	struct dns_entry **pp = &r->htab[e->hash & (r->hsize - 1)];
	while (*pp != e)
		pp = &(*pp)->hnext;
	*pp = e->hnext;
	rp_list_del(&e->lru);
	if (e->res) {
		r->st.memory -= result_bytes(e->res);
		dns_result_unref(e->res);
	}
	r->st.memory -= sizeof(*e) + strlen(e->key) + 1;
	free(e->key);
	free(e);
	r->nentries--;
}

/* evict - drop least recently used answers (never a lookup in flight). */
static void evict(struct dns_resolver *r)
{
	struct rp_list *pos = r->lru.prev;
	while (pos != &r->lru && r->nentries > r->cfg.cache_size) {
		struct rp_list *prev = pos->prev;
		struct dns_entry *e = rp_list_entry(pos, struct dns_entry, lru);
		if (!e->pending) {
			entry_free(r, e);
			r->st.evictions++;
		}
		pos = prev;
	}
}

static void grow(struct dns_resolver *r)
{
	uint32_t nsize = r->hsize * 2;
	struct dns_entry **nt = xcalloc(nsize, sizeof(*nt));
	for (uint32_t i = 0; i < r->hsize; i++) {
		struct dns_entry *e = r->htab[i];
		while (e) {
			struct dns_entry *next = e->hnext;
			e->hnext = nt[e->hash & (nsize - 1)];
			nt[e->hash & (nsize - 1)] = e;
			e = next;
		}
	}
	free(r->htab);
	r->htab = nt;
	r->hsize = nsize;
}

void dns_cache_init(struct dns_resolver *r)
{
	r->hsize = 1024;
	r->htab = xcalloc(r->hsize, sizeof(*r->htab));
	rp_list_init(&r->lru);
}

void dns_cache_free(struct dns_resolver *r)
{
	struct rp_list *first;
	while ((first = rp_list_first(&r->lru))) {
		struct dns_entry *e = rp_list_entry(first, struct dns_entry, lru);
		while (e->waiters) {
			struct dns_waiter *w = e->waiters;
			e->waiters = w->next;
			free(w);
		}
		entry_free(r, e);
	}
	free(r->htab);
	r->htab = NULL;
}

struct dns_entry *dns_cache_get(struct dns_resolver *r, const char *key, bool *start)
{
	uint32_t h = (uint32_t)rp_hash64(key, strlen(key));
	*start = false;
	for (struct dns_entry *e = r->htab[h & (r->hsize - 1)]; e; e = e->hnext) {
		if (e->hash != h || strcmp(e->key, key))
			continue;
		lru_front(r, e);
		if (e->pending || rp_mono_ms() < e->res->expires_ms)
			return e;
		/* Expired: look it up again; the old answer goes. */
		r->st.memory -= result_bytes(e->res);
		dns_result_unref(e->res);
		e->res = NULL;
		e->pending = true;
		*start = true;
		return e;
	}
	if (r->nentries + 1 > r->hsize)
		grow(r);
	struct dns_entry *e = xcalloc(1, sizeof(*e));
	e->key = xstrdup(key);
	e->hash = h;
	e->pending = true;
	e->hnext = r->htab[h & (r->hsize - 1)];
	r->htab[h & (r->hsize - 1)] = e;
	lru_front(r, e);
	r->nentries++;
	r->st.memory += sizeof(*e) + strlen(key) + 1;
	*start = true;
	evict(r);
	return e;
}

void dns_cache_wait(struct dns_resolver *r, struct dns_entry *e, dns_cb cb, void *arg)
{
	if (!e->pending) {
		r->st.hits++;
		struct dns_result *res = e->res;
		dns_result_ref(res); /* the callback may evict the entry */
		cb(arg, res);
		dns_result_unref(res);
		return;
	}
	struct dns_waiter *w = xmalloc(sizeof(*w));
	w->cb = cb;
	w->arg = arg;
	/* Append: waiters are answered in the order they asked. */
	w->next = NULL;
	struct dns_waiter **pp = &e->waiters;
	while (*pp)
		pp = &(*pp)->next;
	*pp = w;
}

void dns_cache_complete(struct dns_resolver *r, struct dns_entry *e, struct dns_result *res)
{
	e->res = res;
	e->pending = false;
	r->st.memory += result_bytes(res);
	struct dns_waiter *w = e->waiters;
	e->waiters = NULL;
	dns_result_ref(res); /* waiters may start lookups that evict e */
	while (w) {
		struct dns_waiter *next = w->next;
		w->cb(w->arg, res);
		free(w);
		w = next;
	}
	dns_result_unref(res);
	evict(r);
}

void dns_forget_waiter(struct dns_resolver *r, dns_cb cb, void *arg)
{
	struct rp_list *pos, *tmp;
	rp_list_foreach_safe(pos, tmp, &r->lru)
	{
		struct dns_entry *e = rp_list_entry(pos, struct dns_entry, lru);
		struct dns_waiter **pp = &e->waiters;
		while (*pp) {
			if ((*pp)->cb == cb && (*pp)->arg == arg) {
				struct dns_waiter *w = *pp;
				*pp = w->next;
				free(w);
			} else {
				pp = &(*pp)->next;
			}
		}
	}
}

void dns_get_stats(const struct dns_resolver *r, struct dns_stats *out)
{
	*out = r->st;
	out->entries = r->nentries;
}
