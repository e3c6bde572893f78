/* api_suppress.c - the suppression list over HTTP:
 *   GET    /v1/suppressions[?address=A][&after=A][&limit=N]
 *   POST   /v1/suppressions  {"address", "reason"}
 *   DELETE /v1/suppressions/{address}
 *
 * Reads use the shard's spool reader; changes go through the spool writer
 * and are answered once durable. Listing is paged in address order
 * (`after` is the last address of the previous page), at most 1,000 a page.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/addr.h"
#include "base/log.h"
#include "base/util.h"
#include "http.h"

#define PAGE_DEFAULT 100
#define PAGE_MAX     1000
#define REASON_MAX   400

/* An add or remove on its way to the writer. */
struct suppress_op {
	struct spool_req req;
	struct api_session *s;
	char addr[ADDR_MAX + 1];
	char reason[REASON_MAX + 1];
};

static void entry_json(struct buf *b, const struct spool_suppression *e)
{
	buf_puts(b, "{\"address\":");
	http_json_str(b, e->addr, e->addr_len);
	buf_puts(b, ",\"reason\":");
	http_json_str(b, e->reason, e->reason_len);
	buf_puts(b, ",\"since\":");
	api_iso_time(b, e->time_ms);
	buf_puts(b, "}");
}

struct page {
	struct buf *b;
	unsigned n, limit;
	char last[ADDR_MAX + 1];
};

static bool page_item(const struct spool_suppression *e, void *arg)
{
	struct page *pg = arg;
	if (pg->n == pg->limit)
		return false;
	if (pg->n++)
		buf_puts(pg->b, ",");
	entry_json(pg->b, e);
	snprintf(pg->last, sizeof(pg->last), "%.*s", (int)RP_MIN(e->addr_len, (size_t)ADDR_MAX),
	         e->addr);
	return true;
}

void api_suppress_list(struct api_session *s, const char *arg)
{
	(void)arg;
	struct api_server *srv = s->srv;
	char addr[ADDR_MAX + 1], after[ADDR_MAX + 1];
	unsigned limit = PAGE_DEFAULT;
	if (!http_query_limit(s, PAGE_MAX, &limit))
		return;
	bool one = http_query_param(s, "address", addr, sizeof(addr));
	bool paged = http_query_param(s, "after", after, sizeof(after));
	if (!spool_reader_begin(srv->reader)) {
		http_error(s, 503, "unavailable", "the spool cannot be read right now");
		return;
	}
	struct buf b = { 0 };
	if (one) {
		struct spool_suppression e;
		if (!spool_suppress_get(srv->reader, addr, strlen(addr), &e)) {
			spool_reader_end(srv->reader);
			buf_free(&b);
			http_error(s, 404, "not_found", "%s is not on the suppression list", addr);
			return;
		}
		entry_json(&b, &e);
		spool_reader_end(srv->reader);
		http_respond_json(s, 200, &b);
		return;
	}
	uint64_t total = spool_suppress_count(srv->reader);
	buf_printf(&b, "{\"total\":%llu,\"suppressions\":[", (unsigned long long)total);
	struct page pg = { .b = &b, .limit = limit };
	spool_suppress_foreach(srv->reader, paged ? after : NULL, paged ? strlen(after) : 0,
	                       page_item, &pg);
	spool_reader_end(srv->reader);
	http_page_end(s, &b, pg.n, limit, pg.last);
}

/* op_done - the writer answered. */
static void op_done(struct mq_item *item, void *ctx)
{
	struct suppress_op *op = RP_CONTAINER_OF(item, struct suppress_op, req.item);
	struct api_session *s = op->s;
	(void)ctx;
	if (!s->released) {
		if (op->req.status != SPOOL_OK) {
			http_error(s, 503, "unavailable",
			           "the spool could not store it; retry later");
		} else if (!op->req.u.suppress.add && !op->req.u.suppress.existed) {
			http_error(s, 404, "not_found", "%s is not on the suppression list",
			           op->addr);
		} else {
			struct buf b = { 0 };
			buf_puts(&b, "{\"address\":");
			http_json_str(&b, op->addr, strlen(op->addr));
			buf_printf(&b, ",\"%s\":true}",
			           op->req.u.suppress.add ? "added" : "removed");
			http_respond_json(
			    s, op->req.u.suppress.add && !op->req.u.suppress.existed ? 201 : 200,
			    &b);
		}
		char a[LOG_VALUE_MAX];
		log_info("api suppression %s address=%s", op->req.u.suppress.add ? "add" : "remove",
		         log_value(a, sizeof(a), op->addr, strlen(op->addr)));
	}
	free(op);
	http_end_async(s);
}

/* submit_op - hand an add or remove to the writer. */
static void submit_op(struct api_session *s, const char *addr, const char *reason, bool add)
{
	struct suppress_op *op = xcalloc(1, sizeof(*op));
	op->s = s;
	snprintf(op->addr, sizeof(op->addr), "%s", addr);
	rp_lower(op->addr);
	snprintf(op->reason, sizeof(op->reason), "%s", reason ? reason : "");
	op->req.type = SPOOL_REQ_SUPPRESS;
	op->req.reply_to = loop_inbox(s->srv->loop);
	op->req.reply_fn = op_done;
	op->req.u.suppress.addr = op->addr;
	op->req.u.suppress.addr_len = strlen(op->addr);
	op->req.u.suppress.add = add;
	op->req.u.suppress.reason = op->reason;
	op->req.u.suppress.reason_len = strlen(op->reason);
	http_begin_async(s);
	spool_request(s->srv->spool, &op->req);
}

/* address_ok - a mailbox we could ever send to (422 otherwise). */
static bool address_ok(struct api_session *s, const char *a)
{
	enum addr_error e = addr_check(a, strlen(a), true, NULL);
	if (e == ADDR_OK)
		return true;
	http_error(s, 422, "invalid_address", "'%.200s' is not a valid address (%s)", a,
	           addr_error_str(e));
	return false;
}

void api_suppress_add(struct api_session *s, const char *arg)
{
	(void)arg;
	json_error_t je;
	json_t *doc =
	    json_loadb(buf_head(&s->req.body), buf_used(&s->req.body), JSON_REJECT_DUPLICATES, &je);
	if (!doc) {
		http_error(s, 400, "bad_json", "invalid JSON at line %d, column %d: %s", je.line,
		           je.column, je.text);
		return;
	}
	json_t *a = json_object_get(doc, "address"), *r = json_object_get(doc, "reason");
	const char *k;
	json_t *v;
	json_object_foreach(doc, k, v)
	{
		if (strcmp(k, "address") && strcmp(k, "reason")) {
			http_error(s, 400, "bad_field", "unknown field '%s'", k);
			json_decref(doc);
			return;
		}
	}
	if (!json_is_object(doc) || !json_is_string(a)) {
		http_error(s, 400, "bad_field", "address is required (a string)");
	} else if (r && !json_is_null(r) && !json_is_string(r)) {
		http_error(s, 400, "bad_field", "reason must be a string");
	} else if (json_string_length(a) > ADDR_MAX) {
		http_error(s, 422, "invalid_address", "address is longer than %d bytes", ADDR_MAX);
	} else if (r && json_is_string(r) &&
	           (json_string_length(r) > REASON_MAX || strpbrk(json_string_value(r), "\r\n") ||
	            memchr(json_string_value(r), '\0', json_string_length(r)))) {
		http_error(s, 400, "bad_field", "reason must be one line of at most %d bytes",
		           REASON_MAX);
	} else if (address_ok(s, json_string_value(a))) {
		submit_op(s, json_string_value(a),
		          r && json_is_string(r) ? json_string_value(r) : "added by the API", true);
	}
	json_decref(doc);
}

void api_suppress_del(struct api_session *s, const char *arg)
{
	char addr[ADDR_MAX + 1];
	if (!http_url_decode(arg, strlen(arg), false, addr, sizeof(addr)) || !*addr) {
		http_error(s, 404, "not_found", "no such address");
		return;
	}
	submit_op(s, addr, NULL, false);
}
