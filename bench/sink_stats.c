/* sink_stats.c - ringpost-sink counters: the domain registry, session
 * counts with peaks, and the JSON line (bench/README.md) summed over loops.
 *
 * Per-message counters are per loop (no sharing on the hot path); session
 * counts are shared atomics because their peaks must be global.
 */
#include "sink.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define OTHER_NAME "(other)"

/* sink_stats_init - zeroed registry and counters; big arrays stay virtual
 * until touched (calloc of this size maps fresh zero pages). */
void sink_stats_init(struct sink *sk)
{
	sk->domains = xcalloc(1, sizeof(*sk->domains));
	pthread_mutex_init(&sk->domains->lock, NULL);
	sk->domains->table = xcalloc(2 * SINK_MAX_DOMAINS, sizeof(uint32_t));
	for (unsigned i = 0; i < sk->opt.threads; i++) {
		struct sink_loop *sl = &sk->loops[i];
		sl->ctr.dom = xcalloc(SINK_MAX_DOMAINS, sizeof(*sl->ctr.dom));
		sl->dom_mark = xcalloc(SINK_MAX_DOMAINS, sizeof(*sl->dom_mark));
		sl->cache.cap = 64;
		sl->cache.slots = xcalloc(sl->cache.cap, sizeof(uint32_t));
	}
}

/* registry_get - find or add a name under the lock; the last id is "(other)". */
static uint32_t registry_get(struct sink_domains *d, const char *name, size_t n, uint64_t h)
{
	const uint32_t mask = 2 * SINK_MAX_DOMAINS - 1;
	pthread_mutex_lock(&d->lock);
	uint32_t count = atomic_load_explicit(&d->count, memory_order_relaxed);
	if (count >= SINK_MAX_DOMAINS - 1) {
		name = OTHER_NAME;
		n = strlen(OTHER_NAME);
		h = rp_hash64(name, n);
	}
	uint32_t i = (uint32_t)h & mask;
	for (;; i = (i + 1) & mask) {
		uint32_t v = d->table[i];
		if (!v)
			break;
		uint32_t id = v - 1;
		if (d->hashes[id] == h && strlen(d->names[id]) == n &&
		    !memcmp(d->names[id], name, n)) {
			pthread_mutex_unlock(&d->lock);
			return id;
		}
	}
	uint32_t id = count;
	d->names[id] = xstrndup(name, n);
	d->hashes[id] = h;
	d->table[i] = id + 1;
	atomic_store_explicit(&d->count, count + 1, memory_order_release);
	pthread_mutex_unlock(&d->lock);
	return id;
}

/* cache_insert - remember id in the thread's table, growing it at half load. */
static void cache_insert(struct sink_dom_cache *c, const struct sink_domains *d, uint32_t id)
{
	if (2 * (c->used + 1) > c->cap) {
		uint32_t *old = c->slots, ocap = c->cap;
		c->cap *= 2;
		c->slots = xcalloc(c->cap, sizeof(uint32_t));
		c->used = 0;
		for (uint32_t i = 0; i < ocap; i++)
			if (old[i])
				cache_insert(c, d, old[i] - 1);
		free(old);
	}
	uint32_t mask = c->cap - 1;
	uint32_t i = (uint32_t)d->hashes[id] & mask;
	while (c->slots[i])
		i = (i + 1) & mask;
	c->slots[i] = id + 1;
	c->used++;
}

/* sink_domain_id - lower-case, look in the thread cache, then the registry. */
uint32_t sink_domain_id(struct sink_loop *sl, const char *dom, size_t n)
{
	char low[256];
	struct sink_domains *d = sl->sk->domains;
	if (n >= sizeof(low))
		n = sizeof(low) - 1;
	for (size_t i = 0; i < n; i++) {
		char c = dom[i];
		low[i] = (c >= 'A' && c <= 'Z') ? (char)(c + 32) : c;
	}
	uint64_t h = rp_hash64(low, n);
	uint32_t mask = sl->cache.cap - 1;
	for (uint32_t i = (uint32_t)h & mask; sl->cache.slots[i]; i = (i + 1) & mask) {
		uint32_t id = sl->cache.slots[i] - 1;
		/* names[id] was published before this thread cached id. */
		if (d->hashes[id] == h && !strncmp(d->names[id], low, n) && !d->names[id][n])
			return id;
	}
	uint32_t id = registry_get(d, low, n, h);
	if (d->hashes[id] == h)
		cache_insert(&sl->cache, d, id);
	return id;
}

/* raise_peak - peak = max(peak, v) without a lock. */
static void raise_peak(_Atomic int64_t *peak, int64_t v)
{
	int64_t p = atomic_load_explicit(peak, memory_order_relaxed);
	while (v > p && !atomic_compare_exchange_weak_explicit(peak, &p, v, memory_order_relaxed,
	                                                       memory_order_relaxed))
		;
}

/* sink_domain_join - count the session for its domain and raise the peak. */
void sink_domain_join(struct sink *sk, uint32_t id)
{
	int64_t v = atomic_fetch_add_explicit(&sk->domains->sessions[id], 1, memory_order_relaxed);
	raise_peak(&sk->domains->peak[id], v + 1);
}

/* sink_domain_leave - the session closed. */
void sink_domain_leave(struct sink *sk, uint32_t id)
{
	atomic_fetch_sub_explicit(&sk->domains->sessions[id], 1, memory_order_relaxed);
}

/* sink_sessions_add - open sessions, all loops, with the peak. */
void sink_sessions_add(struct sink *sk, int delta)
{
	int64_t v = atomic_fetch_add_explicit(&sk->sessions, delta, memory_order_relaxed) + delta;
	if (delta > 0)
		raise_peak(&sk->peak_sessions, v);
}

/* json_u64 - append "key": v. */
static void json_u64(struct buf *b, const char *key, uint64_t v, bool comma)
{
	buf_printf(b, "%s\"%s\": %llu", comma ? ", " : "", key, (unsigned long long)v);
}

/* json_domains - the "domains" object, summed over loops. */
static void json_domains(struct sink *sk, struct buf *out)
{
	struct sink_domains *d = sk->domains;
	uint32_t count = atomic_load_explicit(&d->count, memory_order_acquire);
	buf_puts(out, ", \"domains\": {");
	for (uint32_t id = 0; id < count; id++) {
		uint64_t m = 0, r = 0, by = 0;
		for (unsigned t = 0; t < sk->opt.threads; t++) {
			const struct sink_dom_ctr *c = &sk->loops[t].ctr.dom[id];
			m += bench_ctr_get(&c->messages);
			r += bench_ctr_get(&c->recipients);
			by += bench_ctr_get(&c->bytes);
		}
		if (id)
			buf_puts(out, ", ");
		const char *name = d->names[id][0] ? d->names[id] : "(none)";
		bench_json_str(out, name, strlen(name));
		buf_puts(out, ": {");
		json_u64(out, "messages", m, false);
		json_u64(out, "recipients", r, true);
		json_u64(out, "bytes", by, true);
		int64_t s = atomic_load_explicit(&d->sessions[id], memory_order_relaxed);
		json_u64(out, "sessions", s > 0 ? (uint64_t)s : 0, true);
		json_u64(out, "peak_sessions",
		         (uint64_t)atomic_load_explicit(&d->peak[id], memory_order_relaxed), true);
		buf_puts(out, "}");
	}
	buf_puts(out, "}");
}

/* json_tls - the "tls" object (with --tls-cert), summed over loops. */
static void json_tls(struct sink *sk, struct buf *out)
{
	uint64_t open = 0, hs = 0, resumed = 0, failed = 0, msgs = 0;
	for (unsigned t = 0; t < sk->opt.threads; t++) {
		const struct sink_counters *c = &sk->loops[t].ctr;
		open += bench_ctr_get(&c->tls_open);
		hs += bench_ctr_get(&c->tls_handshakes);
		resumed += bench_ctr_get(&c->tls_resumed);
		failed += bench_ctr_get(&c->tls_failed);
		msgs += bench_ctr_get(&c->tls_messages);
	}
	buf_puts(out, ", \"tls\": {");
	json_u64(out, "sessions", open, false);
	json_u64(out, "handshakes", hs, true);
	json_u64(out, "resumed", resumed, true);
	json_u64(out, "failed", failed, true);
	json_u64(out, "messages", msgs, true);
	buf_puts(out, "}");
}

/* sink_stats_json - sum every loop's counters into one line. */
void sink_stats_json(struct sink *sk, struct buf *out)
{
	uint64_t msgs = 0, rcpts = 0, bytes = 0, dropped = 0, dropped_250 = 0, saved = 0;
	uint64_t silenced = 0, tarpitted = 0;
	struct histo *hs[256];
	unsigned nh = 0;
	for (unsigned t = 0; t < sk->opt.threads; t++) {
		struct sink_counters *c = &sk->loops[t].ctr;
		msgs += bench_ctr_get(&c->messages);
		rcpts += bench_ctr_get(&c->recipients);
		bytes += bench_ctr_get(&c->bytes);
		dropped += bench_ctr_get(&c->dropped);
		dropped_250 += bench_ctr_get(&c->dropped_250);
		silenced += bench_ctr_get(&c->silenced);
		tarpitted += bench_ctr_get(&c->tarpitted);
		saved += bench_ctr_get(&c->saved);
		if (nh < RP_ARRAY_LEN(hs))
			hs[nh++] = &c->latency;
	}
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	buf_printf(out, "{\"t\": %lld.%03ld", (long long)ts.tv_sec, ts.tv_nsec / 1000000);
	json_u64(out, "messages", msgs, true);
	json_u64(out, "recipients", rcpts, true);
	json_u64(out, "bytes", bytes, true);
	int64_t s = atomic_load_explicit(&sk->sessions, memory_order_relaxed);
	json_u64(out, "sessions", s > 0 ? (uint64_t)s : 0, true);
	json_u64(out, "peak_sessions",
	         (uint64_t)atomic_load_explicit(&sk->peak_sessions, memory_order_relaxed), true);
	json_u64(out, "dropped", dropped, true);
	if (sk->opt.faults.drop250 > 0)
		json_u64(out, "dropped_250", dropped_250, true);
	if (sk->opt.faults.silence > 0)
		json_u64(out, "silenced", silenced, true);
	if (sk->opt.faults.tarpit > 0)
		json_u64(out, "tarpitted", tarpitted, true);
	if (sk->opt.save_dir)
		json_u64(out, "saved", saved, true);
	buf_puts(out, ", \"rejected\": {");
	bool first = true;
	for (unsigned code = 0; code < SINK_MAX_CODE; code++) {
		uint64_t n = 0;
		for (unsigned t = 0; t < sk->opt.threads; t++)
			n += bench_ctr_get(&sk->loops[t].ctr.rejected[code]);
		if (!n)
			continue;
		buf_printf(out, "%s\"%u\": %llu", first ? "" : ", ", code, (unsigned long long)n);
		first = false;
	}
	buf_puts(out, "}");
	if (sk->tls)
		json_tls(sk, out);
	struct histo_summary hsum;
	histo_summarize(hs, nh, &hsum);
	buf_puts(out, ", \"latency_ms\": {");
	json_u64(out, "n", hsum.n, false);
	buf_puts(out, ", \"p50\": ");
	bench_json_num(out, hsum.p50);
	buf_puts(out, ", \"p99\": ");
	bench_json_num(out, hsum.p99);
	buf_puts(out, ", \"p999\": ");
	bench_json_num(out, hsum.p999);
	buf_puts(out, ", \"max\": ");
	bench_json_num(out, hsum.max);
	buf_puts(out, "}");
	json_domains(sk, out);
	buf_puts(out, "}\n");
}
