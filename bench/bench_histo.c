/* bench_histo.c - log-linear latency histogram (see bench_histo.h).
 *
 * Bucket of v: b = max(0, floor(log2 v) - SUB_BITS), index = b * SUB + (v >> b).
 * Indexes are contiguous: [0, 2 SUB) is exact, then SUB buckets per octave.
 */
#include "bench_histo.h"

#include <stdlib.h>

#define HISTO_LIMIT ((1ull << (HISTO_MAX_EXP + 1)) - 1)

/* bucket_of - index of the bucket holding v. */
static unsigned bucket_of(uint64_t v)
{
	if (v > HISTO_LIMIT)
		v = HISTO_LIMIT;
	if (v < 2 * HISTO_SUB)
		return (unsigned)v;
	unsigned e = 63u - (unsigned)__builtin_clzll(v);
	unsigned b = e - HISTO_SUB_BITS;
	return b * HISTO_SUB + (unsigned)(v >> b);
}

/* bucket_mid - a representative value (the middle) of bucket i. */
static double bucket_mid(unsigned i)
{
	if (i < 2 * HISTO_SUB)
		return (double)i;
	unsigned b = i / HISTO_SUB - 1;
	uint64_t sub = i - b * HISTO_SUB;
	uint64_t lo = sub << b, hi = ((sub + 1) << b) - 1;
	return ((double)lo + (double)hi) / 2.0;
}

/* histo_add - record one value in its bucket; the owner thread only. */
void histo_add(struct histo *h, uint64_t us)
{
	bench_ctr_add(&h->count[bucket_of(us)], 1);
	bench_ctr_add(&h->n, 1);
	if (us > bench_ctr_get(&h->max))
		atomic_store_explicit(&h->max, us, memory_order_relaxed);
}

/* histo_summarize - merge the buckets, then walk them to each rank. */
void histo_summarize(struct histo *const *hs, unsigned nh, struct histo_summary *out)
{
	uint64_t *sum = xcalloc(HISTO_BUCKETS, sizeof(*sum));
	uint64_t n = 0, max = 0;
	for (unsigned k = 0; k < nh; k++) {
		for (unsigned i = 0; i < HISTO_BUCKETS; i++) {
			uint64_t c = bench_ctr_get(&hs[k]->count[i]);
			sum[i] += c;
			n += c; /* the buckets, not h->n: a consistent total for the ranks */
		}
		uint64_t m = bench_ctr_get(&hs[k]->max);
		if (m > max)
			max = m;
	}
	const double qs[3] = { 0.50, 0.99, 0.999 };
	double res[3] = { 0, 0, 0 };
	for (unsigned q = 0; q < 3 && n; q++) {
		uint64_t rank = (uint64_t)(qs[q] * (double)n + 0.999999);
		if (rank < 1)
			rank = 1;
		uint64_t cum = 0;
		for (unsigned i = 0; i < HISTO_BUCKETS; i++) {
			cum += sum[i];
			if (cum >= rank) {
				res[q] = bucket_mid(i);
				break;
			}
		}
		if (res[q] > (double)max)
			res[q] = (double)max;
	}
	out->n = n;
	out->p50 = res[0] / 1000.0;
	out->p99 = res[1] / 1000.0;
	out->p999 = res[2] / 1000.0;
	out->max = (double)max / 1000.0;
	free(sum);
}
