/* test_spool_events.c - delivery events in the spool (queue/spool_events.c):
 * which changes record which event, in commit order, with the recipient's
 * fields; reading after a sequence number; deleting what was posted; the
 * backlog bound; the numbers surviving a reopen; a refused submit
 * recording nothing; the event list parser.
 */
#include <criterion/criterion.h>
#include <jansson.h>
#include <string.h>

#include "queue/spool.h"
#include "queue/spool_impl.h"
#include "tests/unit/support.h"

static char dir[64];
static struct spool *sp;
static struct spool_reader *rd;

static void open_spool(uint32_t mask, uint64_t max)
{
	sp = test_spool_open(dir, 3600000);
	spool_set_events(sp, mask, max);
	rd = spool_reader_new(sp);
}

static void setup(void)
{
	test_tmpdir(dir, sizeof(dir), "spool-events");
	open_spool(SPOOL_EV_DEFAULTS | SPOOL_EV_BIT(SPOOL_EV_ACCEPTED), 0);
}

static void teardown(void)
{
	spool_reader_free(rd);
	spool_close(sp);
	test_rmdir(dir);
}

TestSuite(spool_events, .init = setup, .fini = teardown, .timeout = 60);

/* read_all - the events after `after` as a parsed JSON array. */
static json_t *read_all(uint64_t after, unsigned max, uint64_t *last)
{
	struct buf b = { 0 };
	buf_puts(&b, "[");
	uint64_t l = 0;
	cr_assert(spool_reader_begin(rd));
	spool_events_read(rd, after, max, 1u << 20, &b, &l);
	spool_reader_end(rd);
	buf_puts(&b, "]");
	json_error_t err;
	json_t *a = json_loadb(buf_head(&b), buf_used(&b), 0, &err);
	cr_assert_not_null(a, "not JSON (%s): %.*s", err.text, (int)buf_used(&b), buf_head(&b));
	buf_free(&b);
	if (last)
		*last = l;
	return a;
}

static const char *field(json_t *a, size_t i, const char *name)
{
	json_t *v = json_object_get(json_array_get(a, i), name);
	cr_assert_not_null(v, "event %zu has no %s", i, name);
	return json_is_string(v) ? json_string_value(v) : json_is_null(v) ? "null" : "?";
}

static long long num(json_t *a, size_t i, const char *name)
{
	json_t *v = json_object_get(json_array_get(a, i), name);
	cr_assert(json_is_integer(v), "event %zu: %s not a number", i, name);
	return json_integer_value(v);
}

Test(spool_events, changes_record_events_in_order)
{
	uint64_t id = test_submit(sp, "s@x.example", "y.example", 2, "hi\r\n", 4, rp_now_ms());
	test_update(sp, id, 0, SPOOL_DEFERRED, 1, rp_now_ms() + 60000, "451 4.3.0 later");
	test_update(sp, id, 0, SPOOL_DELIVERED, 2, 0, "250 2.0.0 \"ok\"\n\x01");
	test_update(sp, id, 1, SPOOL_BOUNCED, 1, 0, "550 5.1.1 no such user");
	/* A final state is never undone: no event for the late report. */
	test_update(sp, id, 1, SPOOL_DELIVERED, 2, 0, "250 late");
	test_spool_sync(sp);

	uint64_t last = 0;
	json_t *a = read_all(0, 100, &last);
	cr_assert_eq(json_array_size(a), 5, "%zu events", json_array_size(a));
	const char *want[] = { "accepted", "accepted", "deferred", "delivered", "bounced" };
	for (size_t i = 0; i < 5; i++)
		cr_assert_str_eq(field(a, i, "event"), want[i], "event %zu", i);
	char ids[17];
	rp_id_format(id, ids);
	cr_assert_str_eq(field(a, 3, "id"), ids);
	char rid[40];
	snprintf(rid, sizeof(rid), "%s.0", ids);
	cr_assert_str_eq(field(a, 3, "recipient_id"), rid);
	cr_assert_eq(num(a, 2, "attempts"), 1);
	cr_assert_eq(num(a, 3, "attempts"), 2);
	cr_assert_str_eq(field(a, 3, "response"), "250 2.0.0 \"ok\"\n\x01", "escaped and back");
	cr_assert_str_eq(field(a, 4, "response"), "550 5.1.1 no such user");
	cr_assert_str_eq(field(a, 0, "response"), "null");
	cr_assert(strstr(field(a, 0, "time"), "T") && strchr(field(a, 0, "time"), 'Z'));
	cr_assert_str_neq(field(a, 0, "recipient"), "null");
	json_decref(a);

	struct spool_events_info info;
	spool_events_info(sp, &info);
	cr_assert_eq(info.backlog, 5);
	cr_assert_eq(info.last_seq, last);
	cr_assert_eq(info.recorded, 5);

	/* Reading after a sequence number, and at most max. */
	a = read_all(last - 2, 1, NULL);
	cr_assert_eq(json_array_size(a), 1);
	cr_assert_str_eq(field(a, 0, "event"), "delivered");
	json_decref(a);
}

Test(spool_events, unwanted_types_are_not_recorded)
{
	spool_set_events(sp, SPOOL_EV_BIT(SPOOL_EV_BOUNCED), 0);
	uint64_t id = test_submit(sp, "s@x.example", "y.example", 2, "hi\r\n", 4, rp_now_ms());
	test_update(sp, id, 0, SPOOL_DELIVERED, 1, 0, "250 ok");
	test_update(sp, id, 1, SPOOL_BOUNCED, 1, 0, "550 no");
	test_spool_sync(sp);
	json_t *a = read_all(0, 100, NULL);
	cr_assert_eq(json_array_size(a), 1);
	cr_assert_str_eq(field(a, 0, "event"), "bounced");
	json_decref(a);
	/* No webhook: nothing at all. */
	spool_set_events(sp, 0, 0);
	test_submit(sp, "s@x.example", "y.example", 1, "hi\r\n", 4, rp_now_ms());
	test_spool_sync(sp);
	struct spool_events_info info;
	spool_events_info(sp, &info);
	cr_assert_eq(info.backlog, 1);
}

Test(spool_events, done_deletes_what_was_posted)
{
	uint64_t id = test_submit(sp, "s@x.example", "y.example", 3, "hi\r\n", 4, rp_now_ms());
	test_spool_sync(sp);
	uint64_t last;
	json_t *a = read_all(0, 2, &last);
	json_decref(a);
	struct spool_req req = { .type = SPOOL_REQ_EVENTS_DONE, .u.events_done.upto = last };
	cr_assert_eq(test_spool_call(sp, &req), SPOOL_OK);
	struct spool_events_info info;
	spool_events_info(sp, &info);
	cr_assert_eq(info.backlog, 1);
	a = read_all(0, 100, NULL);
	cr_assert_eq(json_array_size(a), 1, "only the third is left");
	json_decref(a);
	(void)id;

	/* The sequence and the backlog survive a reopen. */
	spool_reader_free(rd);
	spool_close(sp);
	open_spool(SPOOL_EV_DEFAULTS, 0);
	struct spool_events_info again;
	spool_events_info(sp, &again);
	cr_assert_eq(again.backlog, 1);
	cr_assert_eq(again.last_seq, info.last_seq);
	test_submit(sp, "s@x.example", "y.example", 1, "hi\r\n", 4, rp_now_ms());
	test_update(sp, id, 0, SPOOL_DELIVERED, 1, 0, "250 ok");
	test_spool_sync(sp);
	spool_events_info(sp, &again);
	cr_assert_eq(again.last_seq, info.last_seq + 1, "accepted is off now, delivered is on");
}

Test(spool_events, backlog_bound_drops_the_oldest)
{
	spool_set_events(sp, SPOOL_EV_BIT(SPOOL_EV_ACCEPTED), 4);
	test_submit(sp, "s@x.example", "y.example", 10, "hi\r\n", 4, rp_now_ms());
	test_spool_sync(sp);
	struct spool_events_info info;
	spool_events_info(sp, &info);
	cr_assert_eq(info.backlog, 4);
	cr_assert_eq(info.dropped, 6);
	cr_assert_eq(info.recorded, 10);
	json_t *a = read_all(0, 100, NULL);
	cr_assert_eq(json_array_size(a), 4);
	cr_assert(strstr(field(a, 0, "recipient_id"), ".6"), "the newest four are kept: %s",
	          field(a, 0, "recipient_id"));
	json_decref(a);
}

Test(spool_events, a_refused_submit_records_nothing)
{
	/* A submit too large for the spool is refused: no event for it, the
	 * others' events in order, the numbers agree. */
	size_t big = 80u << 20;
	char *body = xmalloc(big);
	memset(body, 'x', big);
	uint64_t ok1 = test_submit(sp, "s@x.example", "y.example", 1, "a\r\n", 3, rp_now_ms());
	uint64_t id = spool_next_id(sp);
	struct spool_rcpt r = { .addr = "z@y.example", .addr_len = 11 };
	struct iovec iov = { .iov_base = body, .iov_len = big };
	struct spool_req req = { .type = SPOOL_REQ_SUBMIT };
	req.u.submit.msg = (struct spool_msg){ .id = id,
		                               .nrcpt = 1,
		                               .body_len = big,
		                               .sender = "s@x",
		                               .sender_len = 3,
		                               .submit_ms = rp_now_ms() };
	req.u.submit.rcpts = &r;
	req.u.submit.body = &iov;
	req.u.submit.nbody = 1;
	cr_assert_neq(test_spool_call(sp, &req), SPOOL_OK);
	free(body);
	uint64_t ok2 = test_submit(sp, "s@x.example", "y.example", 1, "b\r\n", 3, rp_now_ms());
	test_spool_sync(sp);
	json_t *a = read_all(0, 100, NULL);
	cr_assert_eq(json_array_size(a), 2);
	char i1[17], i2[17];
	rp_id_format(ok1, i1);
	rp_id_format(ok2, i2);
	cr_assert_str_eq(field(a, 0, "id"), i1);
	cr_assert_str_eq(field(a, 1, "id"), i2);
	json_decref(a);
	struct spool_events_info info;
	spool_events_info(sp, &info);
	cr_assert_eq(info.backlog, 2);
}

Test(spool_events_names, mask_parse)
{
	uint32_t m = 0;
	char err[200];
	cr_assert(spool_ev_mask_parse("", &m, err, sizeof(err)));
	cr_assert_eq(m, SPOOL_EV_DEFAULTS);
	cr_assert_eq(m & SPOOL_EV_BIT(SPOOL_EV_ACCEPTED), 0, "accepted only when asked for");
	cr_assert(spool_ev_mask_parse(" delivered,bounced , accepted", &m, err, sizeof(err)));
	cr_assert_eq(m, SPOOL_EV_BIT(SPOOL_EV_DELIVERED) | SPOOL_EV_BIT(SPOOL_EV_BOUNCED) |
	                    SPOOL_EV_BIT(SPOOL_EV_ACCEPTED));
	cr_assert_not(spool_ev_mask_parse("delivered, opened", &m, err, sizeof(err)));
	cr_assert(strstr(err, "'opened'"), "%s", err);
	cr_assert_not(spool_ev_mask_parse("deliver", &m, err, sizeof(err)));
	for (unsigned t = 0; t < SPOOL_EV_TYPES; t++) {
		cr_assert(spool_ev_mask_parse(spool_ev_name(t), &m, err, sizeof(err)));
		cr_assert_eq(m, SPOOL_EV_BIT(t));
	}
}
