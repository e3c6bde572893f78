/* warmup.h - warm-up schedules for new sending addresses ([domain]
 * warmup = 50/d, 100/d, ...): how many messages each source address may
 * send each destination domain on each UTC day since it first sent there.
 * One per shard (for the domains it owns), on the shard's thread; the
 * counters live in the spool (spool_warmup.c) and survive restarts.
 *
 * A message is one transaction: one copy of a message to one domain,
 * whatever its number of recipients there. It counts when a session takes
 * it (the receiver sees the attempt, delivered or not). Day k of a pair's
 * schedule is the k-th UTC day since its first message (calendar days, as
 * providers' warm-up plans count them); past the last day there is no cap.
 */
#ifndef RP_WARMUP_H
#define RP_WARMUP_H

#include <stdbool.h>
#include <stdint.h>

#include "base/loop.h"
#include "config.h"
#include "queue/spool.h"

#define WARMUP_NO_CAP UINT32_MAX /* spool_warmup_left's "no cap" */

/* warmup_parse - "50/d, 100/d, 500/d" into caps (CFG_WARMUP_MAX at most)
 * and n ("" = none); false with the reason in err. */
bool warmup_parse(const char *text, uint32_t *caps, unsigned *n, char *err, size_t errlen);
/* warmup_day - the UTC day number of a unix time in ms. */
uint32_t warmup_day(uint64_t unix_ms);
/* warmup_day_end_ms - the next UTC midnight after unix_ms. */
uint64_t warmup_day_end_ms(uint64_t unix_ms);
/* warmup_allowed - what cd's schedule leaves for counter c on day today:
 * WARMUP_NO_CAP when it has none or the pair is past its last day. */
uint32_t warmup_allowed(const struct cfg_domain *cd, const struct spool_warmup *c, uint32_t today);

struct warmup;

/* warmup_new - counters read from sp as they are first needed, written
 * back about once a second (timers on loop). */
struct warmup *warmup_new(struct spool *sp, struct loop *loop);
/* warmup_free - write what changed, then free. */
void warmup_free(struct warmup *w);
/* warmup_left - messages source src ("" = none set: the kernel's choice)
 * may still send domain today under cd's schedule (WARMUP_NO_CAP: no cap). */
uint32_t warmup_left(struct warmup *w, const struct cfg_domain *cd, const char *src,
                     const char *domain, uint64_t now_ms);
/* warmup_take - src took a message for domain (counted while cd's
 * schedule applies to the pair). */
void warmup_take(struct warmup *w, const struct cfg_domain *cd, const char *src, const char *domain,
                 uint64_t now_ms);
/* warmup_flush - hand the changed counters to the spool writer. */
void warmup_flush(struct warmup *w);

#endif
