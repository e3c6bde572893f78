/* test_warmup.c - warm-up schedules (relay/warmup.c, queue/spool_warmup.c):
 * the schedule parser, UTC days, what a schedule leaves on each day of a
 * pair's warm-up, counting per source and domain, and the counters in a
 * real spool surviving a reopen, listed in key order and after a key.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <string.h>

#include "relay/warmup.h"
#include "tests/unit/support.h"

#define DAY 86400000ull

static struct cfg_domain schedule(const char *text)
{
	struct cfg_domain cd;
	memset(&cd, 0, sizeof(cd));
	char err[160];
	cr_assert(warmup_parse(text, cd.warmup, &cd.nwarmup, err, sizeof(err)), "%s: %s", text,
	          err);
	return cd;
}

Test(warmup, parse)
{
	struct cfg_domain cd = schedule("50/d, 100/d,500/d ,  1000/d");
	cr_assert_eq(cd.nwarmup, 4);
	cr_assert(cd.warmup[0] == 50 && cd.warmup[1] == 100 && cd.warmup[2] == 500 &&
	          cd.warmup[3] == 1000);
	cd = schedule("");
	cr_assert_eq(cd.nwarmup, 0, "empty: no warm-up (a domain can turn [domain *]'s off)");
	const char *bad[] = { "50",   "0/d", "50/d,",      "50/w",  "50/d 100/d",
		              "-5/d", "x/d", "10000001/d", "50/dd", ",50/d" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		uint32_t caps[CFG_WARMUP_MAX];
		unsigned n = 0;
		char err[160] = "";
		cr_assert_not(warmup_parse(bad[i], caps, &n, err, sizeof(err)), "%s accepted",
		              bad[i]);
		cr_assert(err[0], "%s: no reason", bad[i]);
	}
	char many[CFG_WARMUP_MAX * 8 + 16] = "";
	for (unsigned i = 0; i <= CFG_WARMUP_MAX; i++)
		strcat(many, i ? ", 1/d" : "1/d");
	uint32_t caps[CFG_WARMUP_MAX];
	unsigned n = 0;
	char err[160];
	cr_assert_not(warmup_parse(many, caps, &n, err, sizeof(err)), "more days than fit");
}

Test(warmup, utc_days)
{
	uint64_t t = 20429ull * DAY + 3600000; /* 2025-12-07 01:00Z */
	cr_assert_eq(warmup_day(t), 20429);
	cr_assert_eq(warmup_day_end_ms(t), 20430ull * DAY);
	cr_assert_eq(warmup_day_end_ms(20430ull * DAY - 1), 20430ull * DAY);
	cr_assert_eq(warmup_day_end_ms(20430ull * DAY), 20431ull * DAY, "midnight starts a day");
}

Test(warmup, allowed_by_day)
{
	struct cfg_domain cd = schedule("50/d, 100/d");
	struct spool_warmup c = { 0 };
	cr_assert_eq(warmup_allowed(&cd, &c, 1000), 50, "never sent: the first day's cap");
	c.first_day = 1000;
	c.day = 1000;
	c.count = 20;
	cr_assert_eq(warmup_allowed(&cd, &c, 1000), 30);
	c.count = 50;
	cr_assert_eq(warmup_allowed(&cd, &c, 1000), 0);
	c.count = 60; /* a crash lost the flush before a restart sent more */
	cr_assert_eq(warmup_allowed(&cd, &c, 1000), 0);
	cr_assert_eq(warmup_allowed(&cd, &c, 1001), 100, "day 2: its cap, nothing sent yet");
	cr_assert_eq(warmup_allowed(&cd, &c, 1002), WARMUP_NO_CAP, "past the last day");
	cr_assert_eq(warmup_allowed(&cd, &c, 999), 50, "a clock set back: the first day again");
	struct cfg_domain none = schedule("");
	cr_assert_eq(warmup_allowed(&none, &c, 1000), WARMUP_NO_CAP);
}

static char dir[64];

static struct loop *new_loop(void)
{
	struct loop_config cfg = {
		.sq_entries = 64, .cq_entries = 256, .buf_count = 16, .buf_size = 4096
	};
	struct loop *l = loop_new(&cfg);
	cr_assert_not_null(l, "loop_new: %s", strerror(errno));
	return l;
}

struct keys_arg {
	char (*keys)[SPOOL_WARMUP_KEY_MAX];
	unsigned *n;
};

static bool collect(const struct spool_warmup *w, void *arg)
{
	struct keys_arg *a = arg;
	snprintf(a->keys[*a->n], SPOOL_WARMUP_KEY_MAX, "%s", w->key);
	return ++*a->n < 4;
}

Test(warmup, counts_per_pair_and_persists)
{
	test_tmpdir(dir, sizeof(dir), "warmup");
	struct spool *sp = test_spool_open(dir, 3600000);
	struct loop *l = new_loop();
	struct cfg_domain cd = schedule("3/d, 5/d");
	struct cfg_domain none = schedule("");
	uint64_t now = 20429ull * DAY + 1000;
	struct warmup *w = warmup_new(sp, l);
	cr_assert_eq(warmup_left(w, &cd, "192.0.2.1", "a.test", now), 3);
	for (int i = 0; i < 3; i++)
		warmup_take(w, &cd, "192.0.2.1", "a.test", now);
	cr_assert_eq(warmup_left(w, &cd, "192.0.2.1", "a.test", now), 0);
	cr_assert_eq(warmup_left(w, &cd, "192.0.2.2", "a.test", now), 3, "per source");
	cr_assert_eq(warmup_left(w, &cd, "192.0.2.1", "b.test", now), 3, "per domain");
	warmup_take(w, &cd, "", "b.test", now);
	cr_assert_eq(warmup_left(w, &cd, "", "b.test", now), 2, "no source: one pair too");
	warmup_take(w, &none, "192.0.2.9", "c.test", now);
	cr_assert_eq(warmup_left(w, &none, "192.0.2.9", "c.test", now), WARMUP_NO_CAP);
	cr_assert_eq(warmup_left(w, &cd, "192.0.2.1", "a.test", now + DAY), 5, "the next day");
	warmup_free(w); /* writes what changed */
	test_spool_sync(sp);

	w = warmup_new(sp, l);
	cr_assert_eq(warmup_left(w, &cd, "192.0.2.1", "a.test", now), 0, "read back: spent");
	cr_assert_eq(warmup_left(w, &cd, "", "b.test", now), 2);
	cr_assert_eq(warmup_left(w, &cd, "192.0.2.1", "a.test", now + DAY), 5);
	warmup_take(w, &cd, "192.0.2.1", "a.test", now + DAY);
	cr_assert_eq(warmup_left(w, &cd, "192.0.2.1", "a.test", now + DAY), 4);
	cr_assert_eq(warmup_left(w, &cd, "192.0.2.1", "a.test", now + 2 * DAY), WARMUP_NO_CAP,
	             "day 3 of a 2-day schedule: warmed up");
	warmup_free(w);
	test_spool_sync(sp);

	struct spool_reader *rd = spool_reader_new(sp);
	cr_assert(spool_reader_begin(rd));
	struct spool_warmup c;
	cr_assert(spool_warmup_get(rd, "192.0.2.1 a.test", &c));
	cr_assert(c.first_day == 20429 && c.day == 20430 && c.count == 1, "%u %u %u", c.first_day,
	          c.day, c.count);
	cr_assert(spool_warmup_get(rd, "* b.test", &c), "no source is stored as *");
	cr_assert_not(spool_warmup_get(rd, "192.0.2.9 c.test", &c), "no schedule: not stored");
	cr_assert_eq(spool_warmup_count(rd), 2);
	char keys[4][SPOOL_WARMUP_KEY_MAX];
	unsigned n = 0;
	spool_warmup_foreach(rd, NULL, collect, &(struct keys_arg){ keys, &n });
	cr_assert(n == 2 && !strcmp(keys[0], "* b.test") && !strcmp(keys[1], "192.0.2.1 a.test"),
	          "in key order");
	n = 0;
	spool_warmup_foreach(rd, "* b.test", collect, &(struct keys_arg){ keys, &n });
	cr_assert(n == 1 && !strcmp(keys[0], "192.0.2.1 a.test"), "after a key: the ones past it");
	n = 0;
	spool_warmup_foreach(rd, "+", collect, &(struct keys_arg){ keys, &n });
	cr_assert_eq(n, 1, "after a key that is not there: from the next one");
	spool_reader_end(rd);
	spool_reader_free(rd);
	loop_free(l);
	spool_close(sp);
	test_rmdir(dir);
}
