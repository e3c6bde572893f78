/* bench_util.h - small helpers shared by ringpost-sink and ringpost-blast.
 *
 * Process set-up (descriptor limit), address parsing, a fast PRNG, fixed-
 * width number writers for the hot paths, JSON string escaping and single-
 * writer counters that another thread may read at any time.
 */
#ifndef RP_BENCH_UTIL_H
#define RP_BENCH_UTIL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "base/buf.h"

/* A counter with one writer thread and any number of readers: relaxed
 * loads and stores compile to plain moves, so the hot path pays nothing. */
typedef _Atomic uint64_t bench_ctr;

/* bench_ctr_add - add v (only the owning thread may call this). */
static inline void bench_ctr_add(bench_ctr *c, uint64_t v)
{
	atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + v,
	                      memory_order_relaxed);
}

/* bench_ctr_get - read from any thread. */
static inline uint64_t bench_ctr_get(const bench_ctr *c)
{
	return atomic_load_explicit((bench_ctr *)c, memory_order_relaxed);
}

/* bench_parse_hostport - "1.2.3.4:25" or "[::1]:25" (IP literals only).
 * Returns false on bad syntax. */
bool bench_parse_hostport(const char *s, struct sockaddr_storage *ss, socklen_t *len);

/* bench_realtime_ns - CLOCK_REALTIME in ns (what X-Bench-Sent carries). */
uint64_t bench_realtime_ns(void);

/* A splitmix64 generator: fast, seedable, one per thread. */
struct bench_rand {
	uint64_t s;
};

/* bench_rand_next - 64 random bits. */
static inline uint64_t bench_rand_next(struct bench_rand *r)
{
	uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* bench_rand_unit - uniform in [0, 1). */
static inline double bench_rand_unit(struct bench_rand *r)
{
	return (double)(bench_rand_next(r) >> 11) * (1.0 / 9007199254740992.0);
}

/* bench_put_dec - v as exactly width decimal digits (zero-padded, the
 * high digits dropped if v is wider) at p. */
void bench_put_dec(char *p, unsigned width, uint64_t v);
/* bench_put_hex - v as exactly width lower-case hex digits at p. */
void bench_put_hex(char *p, unsigned width, uint64_t v);
/* bench_utoa - v in decimal at p (no NUL); returns the digits written (<= 20). */
unsigned bench_utoa(char *p, uint64_t v);

/* bench_json_str - append s[0..n) as a quoted JSON string. */
void bench_json_str(struct buf *b, const char *s, size_t n);
/* bench_json_num - append a finite double with up to 3 decimals ("0" for NaN). */
void bench_json_num(struct buf *b, double v);

#endif
