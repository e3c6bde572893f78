/* bench_histo.h - a log-linear latency histogram in microseconds.
 *
 * Fixed memory (18 KB), no allocation, relative error under 1.6%: 64 linear
 * sub-buckets per power of two, exact below 128 us. One thread writes a
 * histogram; others may read it (and merge several) at any time.
 */
#ifndef RP_BENCH_HISTO_H
#define RP_BENCH_HISTO_H

#include <stdint.h>

#include "bench_util.h"

#define HISTO_SUB_BITS 6
#define HISTO_SUB      (1u << HISTO_SUB_BITS)
#define HISTO_MAX_EXP  40 /* values up to 2^41 us (25 days) */
#define HISTO_BUCKETS  ((HISTO_MAX_EXP - HISTO_SUB_BITS + 2) * HISTO_SUB)

struct histo {
	bench_ctr n;                    /* values recorded */
	bench_ctr max;                  /* largest value, us */
	bench_ctr count[HISTO_BUCKETS]; /* values per bucket */
};

/* Percentiles of one or more merged histograms, in milliseconds. */
struct histo_summary {
	uint64_t n;
	double p50, p99, p999, max;
};

/* histo_add - record v microseconds (owning thread only). */
void histo_add(struct histo *h, uint64_t us);
/* histo_summarize - percentiles over hs[0..nh) merged; any thread. */
void histo_summarize(struct histo *const *hs, unsigned nh, struct histo_summary *out);

#endif
