/* api_warmup.c - the warm-up counters over HTTP ([domain] warmup):
 *   GET /v1/warmup[?after=KEY][&limit=N]
 *
 * One entry per source address and destination domain that has sent
 * under a schedule: where it is in its schedule today and what it sent.
 * Read from the spool with the shard's reader (the shards write their
 * counters back within a second, so a count can lag that much); the
 * schedules are the running config's (api_ops.warmup_schedule). Paged in
 * key order like the suppression list: `next` is the `after` of the next
 * page, at most 1,000 entries a page.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "http.h"

#define PAGE_DEFAULT 100
#define PAGE_MAX     1000
#define DAY_MS       86400000ull

struct page {
	struct api_server *srv;
	struct buf *b;
	unsigned n, limit;
	uint32_t today;
	char last[SPOOL_WARMUP_KEY_MAX];
};

/* entry_json - one counter: {"source", "domain", "since", "day", "days",
 * "cap", "sent"}; source null for "*" (no [domain] source), cap null when
 * there is none today (warmed up, or no schedule now). */
static void entry_json(struct page *pg, const struct spool_warmup *w)
{
	struct buf *b = pg->b;
	const char *sp = strchr(w->key, ' ');
	if (!sp)
		return;
	const char *domain = sp + 1;
	const uint32_t *caps = NULL;
	unsigned n = pg->srv->ops->warmup_schedule
	                 ? pg->srv->ops->warmup_schedule(pg->srv->ctx, domain, &caps)
	                 : 0;
	uint32_t left = spool_warmup_left(w, caps, n, pg->today);
	buf_puts(b, "{\"source\":");
	if (sp - w->key == 1 && w->key[0] == '*')
		buf_puts(b, "null");
	else
		http_json_str(b, w->key, (size_t)(sp - w->key));
	buf_puts(b, ",\"domain\":");
	http_json_str(b, domain, strlen(domain));
	buf_puts(b, ",\"since\":");
	api_iso_time(b, (uint64_t)w->first_day * DAY_MS);
	uint32_t sent = w->day == pg->today ? w->count : 0;
	buf_printf(b, ",\"day\":%u,\"days\":%u,\"cap\":", spool_warmup_index(w, pg->today) + 1, n);
	if (left == UINT32_MAX)
		buf_puts(b, "null");
	else
		buf_printf(b, "%u", left + sent);
	buf_printf(b, ",\"sent\":%u}", sent);
}

static bool page_item(const struct spool_warmup *w, void *arg)
{
	struct page *pg = arg;
	if (pg->n == pg->limit)
		return false;
	if (pg->n++)
		buf_puts(pg->b, ",");
	entry_json(pg, w);
	snprintf(pg->last, sizeof(pg->last), "%s", w->key);
	return true;
}

void api_warmup_list(struct api_session *s, const char *arg)
{
	(void)arg;
	struct api_server *srv = s->srv;
	char after[SPOOL_WARMUP_KEY_MAX];
	unsigned limit = PAGE_DEFAULT;
	if (!http_query_limit(s, PAGE_MAX, &limit))
		return;
	bool paged = http_query_param(s, "after", after, sizeof(after));
	if (!spool_reader_begin(srv->reader)) {
		http_error(s, 503, "unavailable", "the spool cannot be read right now");
		return;
	}
	struct buf b = { 0 };
	buf_printf(&b, "{\"total\":%llu,\"warmup\":[",
	           (unsigned long long)spool_warmup_count(srv->reader));
	struct page pg = {
		.srv = srv, .b = &b, .limit = limit, .today = (uint32_t)(rp_now_ms() / DAY_MS)
	};
	spool_warmup_foreach(srv->reader, paged ? after : NULL, page_item, &pg);
	spool_reader_end(srv->reader);
	http_page_end(s, &b, pg.n, limit, pg.last);
}
