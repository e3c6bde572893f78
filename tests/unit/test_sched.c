/* test_sched.c - the scheduler (queue/sched.c) over a real spool: jobs that
 * group a message's recipients, outcomes in the spool, retries, connection and
 * rate limits in simulated time, destination back-off, counters that add up.
 */
#include <criterion/criterion.h>
#include <string.h>

#include "base/log.h"
#include "queue/sched.h"
#include "tests/unit/support.h"

#define DAY 86400000ull

struct ops_ctx {
	char kicked[64][32]; /* destinations kicked, in order */
	unsigned nkicks;
	struct sched_limits lim; /* what configure hands out */
	unsigned configured;
	void (*on_kick)(struct sched_dest *d); /* a test's relay stand-in, or NULL */
};

static void ops_kick(struct sched_dest *d, void *ctx)
{
	struct ops_ctx *c = ctx;
	if (c->nkicks < 64)
		snprintf(c->kicked[c->nkicks], sizeof(c->kicked[0]), "%s", d->name);
	c->nkicks++;
	if (c->on_kick)
		c->on_kick(d);
}

static void ops_configure(struct sched_dest *d, void *ctx)
{
	struct ops_ctx *c = ctx;
	d->lim = c->lim;
	c->configured++;
}

static unsigned need_tokens_calls;

static void ops_need_tokens(struct sched_dest *d, void *ctx)
{
	(void)d;
	(void)ctx;
	need_tokens_calls++;
}

static const struct sched_ops ops = { .kick = ops_kick,
	                              .configure = ops_configure,
	                              .need_tokens = ops_need_tokens };
static const uint64_t delays[] = { 1000, 5000, 20000 };

static char dir[64];
static struct spool *sp;
static struct spool_reader *sched_rd, *rd;
static struct sched *s;
static struct ops_ctx ctx;
static uint64_t T0; /* simulated "now" at the start of each test */

static void setup(void)
{
	log_set_level(LOG_WARN);
	test_tmpdir(dir, sizeof(dir), "sched");
	sp = test_spool_open(dir, 3600000);
	sched_rd = spool_reader_new(sp);
	rd = spool_reader_new(sp);
	memset(&ctx, 0, sizeof(ctx));
	ctx.lim = (struct sched_limits){ .max_connections = 10,
		                         .max_msgs_per_conn = 100,
		                         .max_rcpts_per_msg = 100,
		                         .connect_timeout_ms = 1000 };
	struct sched_config cfg = {
		.retry = { .delays_ms = delays, .ndelays = 3, .max_age_ms = 3 * DAY },
		.max_outbound = 100,
	};
	s = sched_new(&cfg, &ops, &ctx, sp, sched_rd);
	T0 = rp_now_ms();
}

static void teardown(void)
{
	sched_free(s);
	spool_reader_free(sched_rd);
	spool_reader_free(rd);
	spool_close(sp);
	test_rmdir(dir);
}

TestSuite(sched, .init = setup, .fini = teardown, .timeout = 60);

/* ---- helpers ----------------------------------------------------------- */

static uint64_t submit(unsigned n, const char *domain, uint64_t submit_ms)
{
	char body[64];
	int len = snprintf(body, sizeof(body), "Subject: %u to %s\r\n\r\nhi\r\n", n, domain);
	return test_submit(sp, "sender@example.org", domain, n, body, (size_t)len, submit_ms);
}

static void add(uint64_t id, uint32_t idx, const char *domain, uint64_t submit_ms, uint64_t now)
{
	struct sched_add a = { .msgid = id, .idx = idx, .domain = domain, .submit_ms = submit_ms };
	sched_add(s, &a, now);
}

/* add_tried - as the start-up scan adds a recipient tried attempts times
 * before, next due at next_ms (0: now). */
static void add_tried(uint64_t id, uint32_t idx, const char *domain, uint64_t next_ms,
                      uint16_t attempts, uint64_t now)
{
	struct sched_add a = { .msgid = id,
		               .idx = idx,
		               .domain = domain,
		               .submit_ms = T0,
		               .next_ms = next_ms,
		               .attempts = attempts };
	sched_add(s, &a, now);
}

static void add_all(uint64_t id, unsigned n, const char *domain, uint64_t now)
{
	for (unsigned i = 0; i < n; i++)
		add(id, i, domain, T0, now);
}

/* queue_new - a message to n recipients at domain, spooled and queued at
 * T0; its id. */
static uint64_t queue_new(unsigned n, const char *domain)
{
	uint64_t id = submit(n, domain, T0);
	add_all(id, n, domain, T0);
	return id;
}

static void check_counts(const char *where, uint64_t queued, uint64_t deferred, uint64_t in_flight,
                         uint64_t delivered, uint64_t bounced)
{
	struct stats_counts c;
	sched_totals(s, &c);
	cr_assert_eq(c.queued, queued, "%s: queued %llu, want %llu", where,
	             (unsigned long long)c.queued, (unsigned long long)queued);
	cr_assert_eq(c.deferred, deferred, "%s: deferred %llu, want %llu", where,
	             (unsigned long long)c.deferred, (unsigned long long)deferred);
	cr_assert_eq(c.in_flight, in_flight, "%s: in_flight %llu, want %llu", where,
	             (unsigned long long)c.in_flight, (unsigned long long)in_flight);
	cr_assert_eq(c.delivered, delivered, "%s: delivered %llu, want %llu", where,
	             (unsigned long long)c.delivered, (unsigned long long)delivered);
	cr_assert_eq(c.bounced, bounced, "%s: bounced %llu, want %llu", where,
	             (unsigned long long)c.bounced, (unsigned long long)bounced);
}

/* done_all - report the same reply for every recipient of j. */
static void done_all(struct sched_job *j, enum attempt_stage stage, int code, const char *text,
                     uint64_t now)
{
	struct attempt_report reps[128];
	cr_assert_leq(j->nrcpt, 128);
	for (unsigned i = 0; i < j->nrcpt; i++)
		outcome_report_set(&reps[i], ATTEMPT_REPLY, stage, code, text);
	struct sched_attempt info = { .remote = "mx.test[127.0.0.1]:25", .duration_ms = 5 };
	sched_job_done(s, j, reps, &info, now);
}

/* flush - send the scheduler's updates and wait until the spool has them. */
static void flush(void)
{
	sched_run(s);
	test_spool_sync(sp);
}

struct rstate {
	uint8_t state;
	uint16_t attempts;
	uint64_t next_ms;
	char response[400];
	char remote[128];
};

static struct rstate rcpt_state(uint64_t id, uint32_t idx)
{
	struct rstate st;
	struct spool_rcpt r;
	cr_assert(spool_reader_begin(rd));
	cr_assert(spool_get_rcpt(rd, id, idx, &r), "recipient %u missing", idx);
	st.state = r.state;
	st.attempts = r.attempts;
	st.next_ms = r.next_ms;
	snprintf(st.response, sizeof(st.response), "%.*s", (int)r.response_len, r.response);
	snprintf(st.remote, sizeof(st.remote), "%.*s", (int)r.remote_len, r.remote);
	spool_reader_end(rd);
	return st;
}

static unsigned kicks_of(const char *name)
{
	unsigned n = 0;
	cr_assert_leq(ctx.nkicks, 64, "too many kicks to tell apart");
	for (unsigned i = 0; i < ctx.nkicks; i++)
		n += !strcmp(ctx.kicked[i], name);
	return n;
}

/* ---- tests ------------------------------------------------------------- */

Test(sched, add_kicks_and_configures)
{
	uint64_t id = submit(2, "example.test", T0);
	cr_assert_null(sched_dest_find(s, "example.test"));
	add_all(id, 2, "example.test", T0);
	struct sched_dest *d = sched_dest_find(s, "example.test");
	cr_assert_not_null(d);
	cr_assert_eq(sched_dest_get(s, "example.test"), d);
	cr_assert_eq(ctx.configured, 1, "configure once per destination");
	cr_assert_eq(d->lim.max_rcpts_per_msg, 100);
	cr_assert(sched_pending_kicks(s));
	cr_assert_eq(ctx.nkicks, 0, "kicks wait for sched_run");
	sched_run(s);
	cr_assert_eq(ctx.nkicks, 1, "one kick however many recipients");
	cr_assert_str_eq(ctx.kicked[0], "example.test");
	cr_assert_not(sched_pending_kicks(s));
	check_counts("after add", 2, 0, 0, 0, 0);
	sched_run(s);
	cr_assert_eq(ctx.nkicks, 1, "nothing new, no kick");
	/* Reconfigure asks again and kicks destinations with work. */
	ctx.lim.max_rcpts_per_msg = 7;
	sched_reconfigure(s);
	cr_assert_eq(d->lim.max_rcpts_per_msg, 7);
	sched_run(s);
	cr_assert_eq(kicks_of("example.test"), 2);
	struct sched_job *j = sched_job_next(s, d, T0);
	cr_assert_not_null(j);
	done_all(j, STAGE_CONTENT, 250, "250 ok", T0);
}

Test(sched, add_deferred_waits_for_its_time)
{
	/* As the start-up scan does: a recipient tried before, due later. */
	uint64_t id = submit(1, "later.test", T0);
	add_tried(id, 0, "later.test", T0 + 5000, 3, T0);
	check_counts("deferred", 0, 1, 0, 0, 0);
	sched_run(s);
	cr_assert_eq(ctx.nkicks, 0, "nothing to do yet");
	struct sched_dest *d = sched_dest_find(s, "later.test");
	cr_assert_not(sched_dest_may_connect(s, d, T0));
	sched_tick(s, T0 + 4999);
	check_counts("not yet", 0, 1, 0, 0, 0);
	sched_tick(s, T0 + 5000);
	check_counts("due", 1, 0, 0, 0, 0);
	sched_run(s);
	cr_assert_eq(kicks_of("later.test"), 1);
	struct sched_job *j = sched_job_next(s, d, T0 + 5000);
	cr_assert_not_null(j);
	cr_assert_eq(j->rcpt[0].attempts, 3, "attempts carried over");
	done_all(j, STAGE_RCPT, 451, "451 again", T0 + 5000);
	flush();
	struct rstate st = rcpt_state(id, 0);
	cr_assert_eq(st.attempts, 4);
	cr_assert_eq(st.next_ms, T0 + 5000 + 20000, "the delay after the fourth attempt");
	/* Due exactly now counts as ready. */
	uint64_t id2 = submit(1, "later.test", T0);
	add_tried(id2, 0, "later.test", T0 + 5000, 0, T0 + 5000);
	check_counts("ready", 1, 1, 0, 0, 0);
	j = sched_job_next(s, d, T0 + 5000);
	done_all(j, STAGE_CONTENT, 250, "250", T0 + 5000);
	check_counts("end", 0, 1, 0, 1, 0);
	sched_tick(s, T0 + 25000);
	done_all(sched_job_next(s, d, T0 + 25000), STAGE_CONTENT, 250, "250", T0 + 25000);
	check_counts("end", 0, 0, 0, 2, 0);
}

Test(sched, groups_recipients_of_a_message)
{
	ctx.lim.max_rcpts_per_msg = 2;
	uint64_t a = submit(5, "example.test", T0);
	uint64_t b = submit(2, "example.test", T0);
	add_all(a, 5, "example.test", T0);
	add_all(b, 2, "example.test", T0);
	struct sched_dest *d = sched_dest_find(s, "example.test");
	cr_assert(sched_dest_may_connect(s, d, T0));
	static const struct {
		int msg;
		unsigned n;
		uint32_t first;
	} want[] = { { 0, 2, 0 }, { 0, 2, 2 }, { 0, 1, 4 }, { 1, 2, 0 } };
	struct sched_job *jobs[4];
	for (int k = 0; k < 4; k++) {
		struct sched_job *j = sched_job_next(s, d, T0);
		cr_assert_not_null(j, "job %d", k);
		jobs[k] = j;
		cr_assert_eq(j->dest, d);
		cr_assert_eq(j->msgid, want[k].msg ? b : a, "job %d", k);
		cr_assert_eq(j->nrcpt, want[k].n, "job %d: %u recipients", k, j->nrcpt);
		cr_assert_eq(j->submit_ms, T0);
		cr_assert_eq(j->sender_len, 18);
		cr_assert(!memcmp(j->sender, "sender@example.org", 18));
		char body[64];
		int len = snprintf(body, sizeof(body), "Subject: %u to example.test\r\n\r\nhi\r\n",
		                   want[k].msg ? 2u : 5u);
		cr_assert_eq(buf_used(&j->body), (size_t)len);
		cr_assert(!memcmp(buf_head(&j->body), body, (size_t)len));
		for (unsigned i = 0; i < j->nrcpt; i++) {
			char addr[64];
			int n =
			    snprintf(addr, sizeof(addr), "rcpt%u@example.test", want[k].first + i);
			cr_assert_eq(j->rcpt[i].addr_len, (size_t)n, "job %d rcpt %u", k, i);
			cr_assert(!memcmp(j->rcpt[i].addr, addr, (size_t)n), "job %d rcpt %u", k,
			          i);
			cr_assert_eq(j->rcpt[i].notify, NOTIFY_FAILURE);
			cr_assert_eq(j->rcpt[i].attempts, 0);
		}
	}
	cr_assert_null(sched_job_next(s, d, T0), "nothing left");
	cr_assert_not(sched_dest_may_connect(s, d, T0), "no work, no session");
	check_counts("all in flight", 0, 0, 7, 0, 0);
	for (int k = 0; k < 4; k++)
		done_all(jobs[k], STAGE_CONTENT, 250, "250 2.0.0 ok", T0 + 10);
	check_counts("all delivered", 0, 0, 0, 7, 0);
	flush();
	for (uint32_t i = 0; i < 5; i++) {
		struct rstate st = rcpt_state(a, i);
		cr_assert_eq(st.state, SPOOL_DELIVERED, "a.%u", i);
		cr_assert_eq(st.attempts, 1);
		cr_assert_str_eq(st.response, "250 2.0.0 ok");
		cr_assert_str_eq(st.remote, "mx.test[127.0.0.1]:25");
	}
	cr_assert_eq(rcpt_state(b, 1).state, SPOOL_DELIVERED);
}

Test(sched, own_body_is_a_job_of_its_own)
{
	struct iovec body = { .iov_base = (void *)"shared\r\n", .iov_len = 8 };
	struct iovec vars[2] = { { .iov_base = (void *)"one\r\n", .iov_len = 5 },
		                 { .iov_base = (void *)"two\r\n", .iov_len = 5 } };
	struct spool_rcpt rc[3] = { { .addr = "v1@x.test", .addr_len = 9, .variant = 1 },
		                    { .addr = "v2@x.test", .addr_len = 9, .variant = 2 },
		                    { .addr = "s@x.test", .addr_len = 8 } };
	struct spool_req req = { .type = SPOOL_REQ_SUBMIT };
	req.u.submit.msg = (struct spool_msg){ .id = spool_next_id(sp),
		                               .submit_ms = T0,
		                               .flags = MSG_F_VARIANTS,
		                               .nrcpt = 3,
		                               .body_len = 8,
		                               .sender = "",
		                               .envid = "",
		                               .source = "" };
	req.u.submit.rcpts = rc;
	req.u.submit.body = &body;
	req.u.submit.nbody = 1;
	req.u.submit.variants = vars;
	req.u.submit.nvariants = 2;
	cr_assert_eq(test_spool_call(sp, &req), SPOOL_OK);
	uint64_t id = req.u.submit.msg.id;
	for (uint32_t i = 0; i < 3; i++) {
		struct sched_add a = { .msgid = id,
			               .idx = i,
			               .domain = "x.test",
			               .submit_ms = T0,
			               .own_body = i < 2 };
		sched_add(s, &a, T0);
	}
	struct sched_dest *d = sched_dest_find(s, "x.test");
	static const char *const bodies[3] = { "one\r\n", "two\r\n", "shared\r\n" };
	for (int k = 0; k < 3; k++) {
		struct sched_job *j = sched_job_next(s, d, T0);
		cr_assert_not_null(j);
		cr_assert_eq(j->nrcpt, 1, "job %d", k);
		cr_assert_eq(j->sender_len, 0);
		cr_assert_eq(buf_used(&j->body), strlen(bodies[k]), "job %d", k);
		cr_assert(!memcmp(buf_head(&j->body), bodies[k], strlen(bodies[k])), "job %d", k);
		done_all(j, STAGE_CONTENT, 250, "250 ok", T0);
	}
	cr_assert_null(sched_job_next(s, d, T0));
	check_counts("done", 0, 0, 0, 3, 0);
}

Test(sched, outcomes_reach_the_spool)
{
	uint64_t id = queue_new(3, "example.test");
	struct sched_dest *d = sched_dest_find(s, "example.test");
	struct sched_job *j = sched_job_next(s, d, T0);
	cr_assert_eq(j->nrcpt, 3);
	struct attempt_report reps[3];
	outcome_report_set(&reps[0], ATTEMPT_REPLY, STAGE_RCPT, 250, "250 2.1.5 ok");
	outcome_report_set(&reps[1], ATTEMPT_REPLY, STAGE_RCPT, 451, "451 4.3.0 try later");
	outcome_report_set(&reps[2], ATTEMPT_REPLY, STAGE_RCPT, 550, "550 5.1.1 no such user");
	uint64_t now = T0 + 100;
	sched_job_done(s, j, reps, NULL, now);
	check_counts("after the job", 0, 1, 0, 1, 1);
	struct stats_counts c;
	sched_totals(s, &c);
	cr_assert_eq(c.deferrals, 1);
	flush();
	struct rstate st = rcpt_state(id, 0);
	cr_assert_eq(st.state, SPOOL_DELIVERED);
	st = rcpt_state(id, 1);
	cr_assert_eq(st.state, SPOOL_DEFERRED);
	cr_assert_eq(st.attempts, 1);
	cr_assert_eq(st.next_ms, now + 1000, "first retry delay");
	cr_assert_str_eq(st.response, "451 4.3.0 try later");
	st = rcpt_state(id, 2);
	cr_assert_eq(st.state, SPOOL_BOUNCED);
	cr_assert_str_eq(st.response, "550 5.1.1 no such user");

	/* The deferred recipient comes back at its retry time, not before. */
	unsigned kicks = ctx.nkicks;
	sched_tick(s, now + 999);
	sched_run(s);
	check_counts("before the retry", 0, 1, 0, 1, 1);
	cr_assert_eq(ctx.nkicks, kicks);
	cr_assert_null(sched_job_next(s, d, now + 999));
	sched_tick(s, now + 1000);
	check_counts("at the retry", 1, 0, 0, 1, 1);
	sched_run(s);
	cr_assert_eq(ctx.nkicks, kicks + 1, "the destination is kicked");
	j = sched_job_next(s, d, now + 1000);
	cr_assert_not_null(j);
	cr_assert_eq(j->nrcpt, 1);
	cr_assert(!memcmp(j->rcpt[0].addr, "rcpt1@example.test", 18));
	cr_assert_eq(j->rcpt[0].attempts, 1);
	/* Second failure: the second delay. */
	done_all(j, STAGE_RCPT, 450, "450 4.2.1 busy", now + 1000);
	flush();
	st = rcpt_state(id, 1);
	cr_assert_eq(st.attempts, 2);
	cr_assert_eq(st.next_ms, now + 1000 + 5000);
	sched_tick(s, now + 6000);
	j = sched_job_next(s, d, now + 6000);
	cr_assert_not_null(j);
	done_all(j, STAGE_CONTENT, 250, "250 ok", now + 6000);
	check_counts("end", 0, 0, 0, 2, 1);
	flush();
	cr_assert_eq(rcpt_state(id, 1).state, SPOOL_DELIVERED);
	cr_assert_eq(rcpt_state(id, 1).attempts, 3);
	/* Every recipient is final: the message is done and its body gone. */
	struct spool_msg m;
	struct buf b = { 0 };
	cr_assert(spool_reader_begin(rd));
	cr_assert(spool_get_msg(rd, id, &m));
	cr_assert_eq(m.pending, 0);
	cr_assert(m.flags & MSG_F_DONE);
	cr_assert_not(spool_get_body(rd, id, 0, &b));
	spool_reader_end(rd);
}

Test(sched, expired_recipient_bounces)
{
	uint64_t old = T0 - 4 * DAY;
	uint64_t id = submit(1, "example.test", old);
	add(id, 0, "example.test", old, T0);
	struct sched_dest *d = sched_dest_find(s, "example.test");
	struct sched_job *j = sched_job_next(s, d, T0);
	cr_assert_not_null(j);
	cr_assert_eq(j->submit_ms, old);
	done_all(j, STAGE_RCPT, 451, "451 4.3.0 try later", T0);
	check_counts("expired", 0, 0, 0, 0, 1);
	flush();
	struct rstate st = rcpt_state(id, 0);
	cr_assert_eq(st.state, SPOOL_BOUNCED);
	cr_assert_str_eq(st.response, "451 4.3.0 try later", "the last reply is the diagnostic");
}

Test(sched, too_many_recipients_retry_at_once)
{
	uint64_t id = queue_new(3, "example.test");
	struct sched_dest *d = sched_dest_find(s, "example.test");
	struct sched_job *j = sched_job_next(s, d, T0);
	struct attempt_report reps[3];
	outcome_report_set(&reps[0], ATTEMPT_REPLY, STAGE_RCPT, 250, "250 ok");
	outcome_report_set(&reps[1], ATTEMPT_REPLY, STAGE_RCPT, 452, "452 4.5.3 too many");
	outcome_report_set(&reps[2], ATTEMPT_REPLY, STAGE_RCPT, 552, "552 too many");
	reps[1].after_accept = reps[2].after_accept = true; /* recipient 0 was accepted */
	sched_job_done(s, j, reps, NULL, T0);
	check_counts("requeued", 2, 0, 0, 1, 0);
	struct stats_counts c;
	sched_totals(s, &c);
	cr_assert_eq(c.deferrals, 0, "not a deferral");
	j = sched_job_next(s, d, T0);
	cr_assert_not_null(j, "ready in the same instant");
	cr_assert_eq(j->nrcpt, 2);
	cr_assert_eq(j->rcpt[0].attempts, 0, "not counted as an attempt");
	done_all(j, STAGE_CONTENT, 250, "250 ok", T0);
	flush();
	cr_assert_eq(rcpt_state(id, 1).attempts, 1);
	cr_assert_eq(rcpt_state(id, 2).state, SPOOL_DELIVERED);
}

Test(sched, connection_limits)
{
	ctx.lim.max_connections = 2;
	ctx.lim.max_rcpts_per_msg = 1;
	struct sched_dest *d = sched_dest_get(s, "example.test");
	cr_assert_not(sched_dest_may_connect(s, d, T0), "no work yet");
	queue_new(4, "example.test");
	cr_assert(sched_dest_may_connect(s, d, T0));
	sched_session_opened(s, d);
	cr_assert(sched_dest_may_connect(s, d, T0));
	sched_session_opened(s, d);
	cr_assert_not(sched_dest_may_connect(s, d, T0), "max_connections reached");
	struct stats_counts c;
	sched_totals(s, &c);
	cr_assert_eq(c.connections, 2);
	sched_run(s);
	unsigned kicks = ctx.nkicks;
	sched_session_closed(s, d);
	cr_assert(sched_dest_may_connect(s, d, T0));
	sched_run(s);
	cr_assert_eq(ctx.nkicks, kicks + 1, "a closed session with work left kicks");
	sched_session_closed(s, d);
	sched_totals(s, &c);
	cr_assert_eq(c.connections, 0);
	for (int k = 0; k < 4; k++)
		done_all(sched_job_next(s, d, T0), STAGE_CONTENT, 250, "250", T0);
	check_counts("done", 0, 0, 0, 4, 0);
}

Test(sched, a_new_destination_starts_with_a_few_sessions)
{
	ctx.lim.max_connections = 50;
	ctx.lim.max_rcpts_per_msg = 1;
	queue_new(40, "new.test");
	struct sched_dest *d = sched_dest_find(s, "new.test");
	unsigned n = 0;
	while (n < d->nready_jobs && sched_dest_may_connect(s, d, T0)) { /* as the relay */
		sched_session_opened(s, d);
		n++;
	}
	cr_assert_eq(n, SCHED_INITIAL_CONNECTIONS, "%u sessions before any reached the server", n);
	/* The first session ready for mail (sched_dest_ok, after EHLO) lifts
	 * the limit and kicks the destination. */
	sched_run(s);
	unsigned kicks = kicks_of("new.test");
	sched_dest_ok(s, d);
	sched_run(s);
	cr_assert_eq(kicks_of("new.test"), kicks + 1, "the rest of the work is kicked");
	while (n < d->nready_jobs && sched_dest_may_connect(s, d, T0)) {
		sched_session_opened(s, d);
		n++;
	}
	cr_assert_eq(n, 40, "one session per job once the destination works (%u)", n);
	for (unsigned k = 0; k < n; k++)
		sched_session_closed(s, d);
	struct sched_job *j;
	while ((j = sched_job_next(s, d, T0)))
		done_all(j, STAGE_CONTENT, 250, "250", T0);
	check_counts("all", 0, 0, 0, 40, 0);
}

Test(sched, shard_wide_session_limit)
{
	struct sched_config cfg = {
		.retry = { .delays_ms = delays, .ndelays = 3, .max_age_ms = 3 * DAY },
		.max_outbound = 1,
	};
	sched_set_config(s, &cfg);
	uint64_t a = submit(1, "a.test", T0);
	uint64_t b = submit(1, "b.test", T0);
	add(a, 0, "a.test", T0, T0);
	add(b, 0, "b.test", T0, T0);
	struct sched_dest *da = sched_dest_find(s, "a.test"), *db = sched_dest_find(s, "b.test");
	cr_assert(sched_dest_may_connect(s, da, T0));
	sched_session_opened(s, da);
	cr_assert_not(sched_dest_may_connect(s, db, T0), "the shard is at its limit");
	sched_run(s);
	unsigned kicks = kicks_of("b.test");
	done_all(sched_job_next(s, da, T0), STAGE_CONTENT, 250, "250", T0);
	sched_session_closed(s, da);
	sched_run(s);
	cr_assert_eq(kicks_of("b.test"), kicks + 1,
	             "the freed slot goes to the waiting destination");
	cr_assert(sched_dest_may_connect(s, db, T0));
	sched_session_opened(s, db);
	done_all(sched_job_next(s, db, T0), STAGE_CONTENT, 250, "250", T0);
	sched_session_closed(s, db);
	check_counts("done", 0, 0, 0, 2, 0);
}

static unsigned run_rate(double rate, uint64_t span_ms, uint64_t *times, unsigned max)
{
	ctx.lim.rate = rate;
	ctx.lim.max_rcpts_per_msg = 1;
	queue_new(64, "rate.test");
	struct sched_dest *d = sched_dest_find(s, "rate.test");
	unsigned n = 0;
	for (uint64_t t = T0; t < T0 + span_ms; t += 10) {
		sched_tick(s, t);
		struct sched_job *j;
		while ((j = sched_job_next(s, d, t))) {
			cr_assert_lt(n, max);
			times[n++] = t;
			done_all(j, STAGE_CONTENT, 250, "250", t);
		}
	}
	return n;
}

Test(sched, rate_limit_in_simulated_time)
{
	uint64_t times[64];
	/* 5 per second for 10 s: one at once, then one every 200 ms. */
	unsigned n = run_rate(5, 10000, times, 64);
	cr_assert_geq(n, 50, "only %u jobs in 10 s", n);
	cr_assert_leq(n, 55, "%u jobs in 10 s at 5/s", n);
	for (unsigned i = 0; i < n; i++) {
		/* In any one-second window: at most the burst plus a second's worth. */
		unsigned in_window = 0;
		for (unsigned k = i; k < n && times[k] < times[i] + 1000; k++)
			in_window++;
		cr_assert_leq(in_window, 10, "%u jobs in the second after %llu", in_window,
		              (unsigned long long)(times[i] - T0));
		if (i > 5)
			cr_assert_geq(times[i] - times[i - 1], 190,
			              "job %u only %llu ms after the "
			              "previous",
			              i, (unsigned long long)(times[i] - times[i - 1]));
	}
	/* Steady state: 5 per second. */
	unsigned mid = 0;
	for (unsigned i = 0; i < n; i++)
		mid += times[i] >= T0 + 2000 && times[i] < T0 + 7000;
	cr_assert(mid >= 23 && mid <= 26, "%u jobs between 2 s and 7 s", mid);
}

Test(sched, slow_rate)
{
	uint64_t times[16];
	unsigned n = run_rate(0.5, 10000, times, 16);
	cr_assert(n >= 5 && n <= 6, "%u jobs in 10 s at 0.5/s", n);
	for (unsigned i = 1; i < n; i++)
		cr_assert_geq(times[i] - times[i - 1], 1990);
}

/* A shared rate ([cluster]): tokens come only from sched_tokens_add, never
 * from the clock; the destination asks once per wait and is kicked when
 * they come. */
Test(sched, shared_rate_takes_tokens_from_outside)
{
	ctx.lim.rate = 1000; /* the clock alone would give plenty */
	ctx.lim.rate_shared = true;
	ctx.lim.max_rcpts_per_msg = 1;
	need_tokens_calls = 0;
	queue_new(5, "shared.test");
	struct sched_dest *d = sched_dest_find(s, "shared.test");
	sched_run(s);
	d->tokens = 0; /* whatever a new destination starts with */
	cr_assert_null(sched_job_next(s, d, T0), "no token: no job");
	cr_assert_eq(need_tokens_calls, 1);
	cr_assert_null(sched_job_next(s, d, T0 + 5000), "time makes no tokens");
	cr_assert_not(sched_dest_may_connect(s, d, T0 + 5000));
	sched_tick(s, T0 + 5000);
	cr_assert_eq(need_tokens_calls, 1, "asked once per wait");
	unsigned kicks = ctx.nkicks;
	sched_tokens_add(s, d, 2);
	sched_run(s);
	cr_assert_gt(ctx.nkicks, kicks, "tokens came: kicked");
	struct sched_job *j;
	unsigned got = 0;
	while ((j = sched_job_next(s, d, T0 + 5000))) {
		got++;
		done_all(j, STAGE_CONTENT, 250, "250", T0 + 5000);
	}
	cr_assert_eq(got, 2, "two tokens, two jobs (%u)", got);
	cr_assert_eq(need_tokens_calls, 2, "asked again once they ran out");
	sched_tokens_add(s, d, 3);
	while ((j = sched_job_next(s, d, T0 + 6000)))
		done_all(j, STAGE_CONTENT, 250, "250", T0 + 6000);
	check_counts("all", 0, 0, 0, 5, 0);
}

Test(sched, rate_limited_destination_waits_and_is_kicked)
{
	ctx.lim.rate = 2;
	ctx.lim.max_rcpts_per_msg = 1;
	queue_new(6, "rate.test");
	struct sched_dest *d = sched_dest_find(s, "rate.test");
	sched_run(s);
	/* The bucket holds a tenth of a second's worth, at least one token,
	 * and a new destination starts with one. */
	done_all(sched_job_next(s, d, T0), STAGE_CONTENT, 250, "250", T0);
	cr_assert_null(sched_job_next(s, d, T0), "out of tokens");
	cr_assert_not(sched_dest_may_connect(s, d, T0));
	sched_run(s); /* the first session to reach the server kicks */
	unsigned kicks = ctx.nkicks;
	sched_tick(s, T0 + 400);
	sched_run(s);
	cr_assert_eq(ctx.nkicks, kicks, "not yet: 0.8 tokens");
	sched_tick(s, T0 + 600);
	sched_run(s);
	cr_assert_eq(ctx.nkicks, kicks + 1, "a token is back: kicked");
	cr_assert(sched_dest_may_connect(s, d, T0 + 600));
	struct sched_job *j = sched_job_next(s, d, T0 + 600);
	cr_assert_not_null(j);
	done_all(j, STAGE_CONTENT, 250, "250", T0 + 600);
	check_counts("four left", 4, 0, 0, 2, 0);
	/* Drain the rest so no job is out at the end. */
	for (uint64_t t = T0 + 600; t < T0 + 5000; t += 100) {
		sched_tick(s, t);
		while ((j = sched_job_next(s, d, t)))
			done_all(j, STAGE_CONTENT, 250, "250", t);
	}
	check_counts("all", 0, 0, 0, 6, 0);
	/* After a long idle time the bucket still holds one token at 2/s. */
	uint64_t id2 = submit(6, "rate.test", T0);
	uint64_t later = T0 + 60000;
	add_all(id2, 6, "rate.test", later);
	unsigned burst = 0;
	while ((j = sched_job_next(s, d, later))) {
		burst++;
		done_all(j, STAGE_CONTENT, 250, "250", later);
	}
	cr_assert_eq(burst, 1, "a burst of %u jobs at rate 2/s", burst);
	for (uint64_t t = later; t < later + 5000; t += 100) {
		sched_tick(s, t);
		while ((j = sched_job_next(s, d, t)))
			done_all(j, STAGE_CONTENT, 250, "250", t);
	}
	check_counts("all again", 0, 0, 0, 12, 0);
}

Test(sched, dest_failed_defers_and_holds)
{
	uint64_t id = queue_new(4, "down.test");
	struct sched_dest *d = sched_dest_find(s, "down.test");
	struct attempt_report rep;
	outcome_report_set(&rep, ATTEMPT_CONNECT_FAIL, STAGE_CONNECT, 0, "connection refused");
	sched_dest_failed(s, d, &rep, "mx.down.test[192.0.2.1]:25", T0);
	check_counts("held", 0, 4, 0, 0, 0);
	struct stats_counts c;
	sched_totals(s, &c);
	cr_assert_eq(c.deferrals, 4);
	cr_assert_eq(d->fails, 1);
	cr_assert_eq(d->hold_until, T0 + 1000);
	cr_assert_str_eq(d->hold_reason, "connection refused");
	cr_assert_not(sched_dest_may_connect(s, d, T0));
	cr_assert_null(sched_job_next(s, d, T0));
	flush();
	for (uint32_t i = 0; i < 4; i++) {
		struct rstate st = rcpt_state(id, i);
		cr_assert_eq(st.state, SPOOL_DEFERRED);
		cr_assert_eq(st.attempts, 1);
		cr_assert_eq(st.next_ms, T0 + 1000);
		cr_assert_str_eq(st.response, "4.4.1 connection refused");
		cr_assert_str_eq(st.remote, "mx.down.test[192.0.2.1]:25");
	}
	/* New mail for a held destination waits for the hold. */
	uint64_t id2 = submit(1, "down.test", T0);
	add(id2, 0, "down.test", T0, T0 + 10);
	check_counts("new mail held", 0, 5, 0, 0, 0);
	sched_tick(s, T0 + 999);
	check_counts("still held", 0, 5, 0, 0, 0);
	sched_tick(s, T0 + 1000);
	check_counts("hold over", 5, 0, 0, 0, 0);
	cr_assert(sched_dest_may_connect(s, d, T0 + 1000));
	/* A second failure backs off longer. */
	sched_dest_failed(s, d, &rep, NULL, T0 + 1000);
	cr_assert_eq(d->fails, 2);
	cr_assert_eq(d->hold_until, T0 + 1000 + 5000);
	check_counts("held again", 0, 5, 0, 0, 0);
	/* No retry is planned inside the hold, even a first one (1 s). */
	flush();
	cr_assert_eq(rcpt_state(id2, 0).next_ms, T0 + 6000);
	cr_assert_eq(rcpt_state(id, 3).next_ms, T0 + 6000);
	sched_tick(s, T0 + 2000);
	check_counts("still held again", 0, 5, 0, 0, 0);
	sched_tick(s, T0 + 6000);
	/* A session that reaches the server resets the failure count. */
	struct sched_job *j = sched_job_next(s, d, T0 + 6000);
	cr_assert_not_null(j);
	done_all(j, STAGE_CONTENT, 250, "250", T0 + 6000);
	cr_assert_eq(d->fails, 0);
	sched_dest_failed(s, d, &rep, NULL, T0 + 6000);
	cr_assert_eq(d->hold_until, T0 + 6000 + 1000, "back to the first delay");
	sched_dest_ok(s, d);
	cr_assert_eq(d->fails, 0);
	sched_tick(s, T0 + 60000);
	while ((j = sched_job_next(s, d, T0 + 60000)))
		done_all(j, STAGE_CONTENT, 250, "250", T0 + 60000);
	check_counts("end", 0, 0, 0, 5, 0);
}

Test(sched, dest_failed_permanently_bounces)
{
	uint64_t id = queue_new(3, "nx.test");
	struct sched_dest *d = sched_dest_find(s, "nx.test");
	struct attempt_report rep;
	outcome_report_set(&rep, ATTEMPT_DNS_PERM, STAGE_CONNECT, 0, "nx.test: no such domain");
	sched_dest_failed(s, d, &rep, NULL, T0);
	check_counts("bounced", 0, 0, 0, 0, 3);
	cr_assert_not(sched_dest_may_connect(s, d, T0));
	flush();
	for (uint32_t i = 0; i < 3; i++) {
		struct rstate st = rcpt_state(id, i);
		cr_assert_eq(st.state, SPOOL_BOUNCED);
		cr_assert_str_eq(st.response, "5.1.2 nx.test: no such domain");
	}
}

Test(sched, reply_421_backs_off_the_destination)
{
	ctx.lim.max_rcpts_per_msg = 1;
	uint64_t id = queue_new(3, "busy.test");
	struct sched_dest *d = sched_dest_find(s, "busy.test");
	struct sched_job *j = sched_job_next(s, d, T0);
	done_all(j, STAGE_MAIL, 421, "421 4.7.0 too busy", T0);
	/* The reported recipient and the two still queued all wait. */
	check_counts("backed off", 0, 3, 0, 0, 0);
	cr_assert_eq(d->hold_until, T0 + 1000);
	cr_assert_null(sched_job_next(s, d, T0 + 999));
	flush();
	cr_assert_eq(rcpt_state(id, 0).attempts, 1);
	cr_assert_str_eq(rcpt_state(id, 2).response, "421 4.7.0 too busy");
	sched_tick(s, T0 + 1000);
	check_counts("back", 3, 0, 0, 0, 0);
	while ((j = sched_job_next(s, d, T0 + 1000)))
		done_all(j, STAGE_CONTENT, 250, "250", T0 + 1000);
	check_counts("end", 0, 0, 0, 3, 0);
}

Test(sched, finished_recipients_are_dropped_from_jobs)
{
	uint64_t id = queue_new(3, "example.test");
	/* Someone else (a purge, an earlier run) made two of them final. */
	test_update(sp, id, 0, SPOOL_BOUNCED, 1, 0, "purged");
	test_update(sp, id, 2, SPOOL_DELIVERED, 1, 0, "250");
	struct sched_dest *d = sched_dest_find(s, "example.test");
	struct sched_job *j = sched_job_next(s, d, T0);
	cr_assert_not_null(j);
	cr_assert_eq(j->nrcpt, 1);
	cr_assert(!memcmp(j->rcpt[0].addr, "rcpt1@example.test", 18));
	check_counts("one left", 0, 0, 1, 0, 0);
	done_all(j, STAGE_CONTENT, 250, "250", T0);
	check_counts("done", 0, 0, 0, 1, 0);
	/* A message that is all done yields no job at all. */
	uint64_t id2 = queue_new(2, "example.test");
	test_update(sp, id2, 0, SPOOL_BOUNCED, 1, 0, "x");
	test_update(sp, id2, 1, SPOOL_BOUNCED, 1, 0, "x");
	cr_assert_null(sched_job_next(s, d, T0));
	check_counts("nothing", 0, 0, 0, 1, 0);
}

static void count_dest(struct sched_dest *d, void *arg)
{
	(void)d;
	(*(unsigned *)arg)++;
}

Test(sched, many_destinations_and_counters_add_up)
{
	/* 40 destinations (the hash table grows), random outcomes, and after
	 * every step the recipients are all accounted for. */
	enum { NDEST = 40, NR = 3 };
	char names[NDEST][32];
	for (int i = 0; i < NDEST; i++) {
		snprintf(names[i], sizeof(names[i]), "d%02d.test", i);
		queue_new(NR, names[i]);
	}
	unsigned ndest = 0;
	sched_foreach_dest(s, count_dest, &ndest);
	cr_assert_eq(ndest, NDEST);
	sched_run(s);
	cr_assert_eq(ctx.nkicks, NDEST);
	uint64_t delivered = 0, bounced = 0, now = T0;
	uint64_t x = 12345;
	for (int round = 0; round < 20; round++) {
		now += 1000;
		sched_tick(s, now);
		for (int i = 0; i < NDEST; i++) {
			struct sched_dest *d = sched_dest_find(s, names[i]);
			cr_assert_not_null(d);
			struct sched_job *j = sched_job_next(s, d, now);
			if (!j)
				continue;
			x ^= x << 13;
			x ^= x >> 7;
			x ^= x << 17;
			int pick = (int)(x % 3);
			static const int codes[3] = { 250, 451, 550 };
			if (codes[pick] == 250)
				delivered += j->nrcpt;
			else if (codes[pick] == 550)
				bounced += j->nrcpt;
			done_all(j, STAGE_CONTENT, codes[pick], "reply", now);
			struct stats_counts c;
			sched_totals(s, &c);
			cr_assert_eq(c.delivered, delivered);
			cr_assert_eq(c.bounced, bounced);
			cr_assert_eq(c.queued + c.deferred + c.in_flight + delivered + bounced,
			             (uint64_t)NDEST * NR, "round %d: recipients lost or doubled",
			             round);
		}
		sched_run(s);
	}
	cr_assert_gt(delivered, 0);
	cr_assert_gt(bounced, 0);
	cr_assert_gt(sched_memory(s), 0);
}

/* ---- retries, expiry and DSNs ------------------------------------------ */

/* submit_with - a message from sender (may be "" for <>) with envelope flags;
 * recipient i is rcpt<i>@domains[i] (or @domain when domains is NULL) with
 * NOTIFY notify[i] (FAILURE when notify is NULL). */
static uint64_t submit_with(unsigned n, const char *domain, const char *const *domains,
                            const char *sender, uint32_t flags, const uint8_t *notify,
                            uint64_t submit_ms)
{
	static char body[128]; /* lives until the spool has it: the call waits */
	int len = snprintf(body, sizeof(body),
	                   "Subject: %u to %s\r\nX-Test: dsn\r\n\r\nthe body text\r\n", n, domain);
	return test_submit_with(sp, sender, domain, domains, n, flags, notify, body, (size_t)len,
	                        submit_ms);
}

/* The bounce mailbox, read back whole. */
struct mbox_all {
	char *msg[64];
	unsigned n;
};

static bool mbox_collect(const struct spool_mbox_entry *e, void *arg)
{
	struct mbox_all *a = arg;
	cr_assert_lt(a->n, 64);
	a->msg[a->n++] = strndup(e->data, e->len);
	return true;
}

static unsigned mbox_read(struct mbox_all *a)
{
	memset(a, 0, sizeof(*a));
	cr_assert(spool_reader_begin(rd));
	spool_mbox_foreach(rd, 1, mbox_collect, a);
	spool_reader_end(rd);
	return a->n;
}

static void mbox_free(struct mbox_all *a)
{
	for (unsigned i = 0; i < a->n; i++)
		free(a->msg[i]);
	a->n = 0;
}

/* dsn_for - the DSN about message id (its X-Ringpost-Queue-ID), or NULL. */
static const char *dsn_for(const struct mbox_all *a, uint64_t id)
{
	char want[64], hex[17];
	rp_id_format(id, hex);
	snprintf(want, sizeof(want), "X-Ringpost-Queue-ID: %s\r\n", hex);
	const char *found = NULL;
	for (unsigned i = 0; i < a->n; i++)
		if (strstr(a->msg[i], want)) {
			cr_assert_null(found, "two DSNs for message %s", hex);
			found = a->msg[i];
		}
	return found;
}

static unsigned count_str(const char *hay, const char *needle)
{
	unsigned n = 0;
	for (const char *p = hay; (p = strstr(p, needle)); p += strlen(needle))
		n++;
	return n;
}

static void set_retry(const uint64_t *d, unsigned nd, unsigned jitter, uint32_t max_outbound)
{
	struct sched_config cfg = {
		.retry = { .delays_ms = d,
		           .ndelays = nd,
		           .max_age_ms = 3 * DAY,
		           .jitter_pct = jitter },
		.max_outbound = max_outbound,
		.hostname = "mta.sched.test",
	};
	sched_set_config(s, &cfg);
}

Test(sched, retry_schedule_and_jitter_bounds)
{
	/* 60 messages of 2 recipients fail again and again: every next
	 * attempt lies within +-10% of the schedule's delay (the last one
	 * repeating), spread to both sides, never before it is due. */
	static const uint64_t dl[] = { 1000, 2000, 4000 };
	set_retry(dl, 3, 10, 100);
	enum { NM = 60, NR = 2 };
	uint64_t ids[NM];
	for (unsigned m = 0; m < NM; m++)
		ids[m] = queue_new(NR, "jitter.test");
	struct sched_dest *d = sched_dest_find(s, "jitter.test");
	uint64_t now = T0;
	for (unsigned round = 0; round < 5; round++) {
		uint64_t nominal = dl[round < 3 ? round : 2], span = nominal / 10;
		struct sched_job *j;
		unsigned n = 0;
		while ((j = sched_job_next(s, d, now))) {
			for (unsigned i = 0; i < j->nrcpt; i++)
				cr_assert_eq(j->rcpt[i].attempts, round);
			n += j->nrcpt;
			done_all(j, STAGE_RCPT, 451, "451 4.7.1 greylisted", now);
		}
		cr_assert_eq(n, NM * NR, "round %u: %u recipients tried", round, n);
		check_counts("all deferred", 0, NM * NR, 0, 0, 0);
		flush();
		uint64_t lo = UINT64_MAX, hi = 0;
		for (unsigned m = 0; m < NM; m++)
			for (uint32_t i = 0; i < NR; i++) {
				struct rstate st = rcpt_state(ids[m], i);
				cr_assert_eq(st.state, SPOOL_DEFERRED);
				cr_assert_eq(st.attempts, round + 1);
				cr_assert_str_eq(st.response, "451 4.7.1 greylisted");
				cr_assert(st.next_ms >= now + nominal - span &&
				              st.next_ms <= now + nominal + span,
				          "round %u: next attempt %+lld ms, want %llu +- %llu",
				          round, (long long)(st.next_ms - now),
				          (unsigned long long)nominal, (unsigned long long)span);
				lo = RP_MIN(lo, st.next_ms);
				hi = st.next_ms > hi ? st.next_ms : hi;
			}
		cr_assert_lt(lo, now + nominal - span / 2, "round %u: jitter never goes low",
		             round);
		cr_assert_gt(hi, now + nominal + span / 2, "round %u: jitter never goes high",
		             round);
		sched_tick(s, lo - 1);
		check_counts("none early", 0, NM * NR, 0, 0, 0);
		sched_tick(s, hi);
		check_counts("all due", NM * NR, 0, 0, 0, 0);
		now = hi;
	}
	struct sched_job *j;
	while ((j = sched_job_next(s, d, now)))
		done_all(j, STAGE_CONTENT, 250, "250 ok", now);
	check_counts("delivered", 0, 0, 0, NM * NR, 0);
	flush();
	cr_assert_eq(rcpt_state(ids[0], 1).attempts, 6);
}

/* drain_ticking - a 20 ms scheduler tick, and a session that takes every
 * job as soon as there is one, from `from` to `to`; returns the jobs. */
static unsigned drain_ticking(struct sched_dest *d, uint64_t from, uint64_t to, unsigned *rcpts)
{
	unsigned jobs = 0;
	for (uint64_t t = from; t <= to; t += 20) {
		sched_tick(s, t);
		struct sched_job *j;
		while ((j = sched_job_next(s, d, t))) {
			jobs++;
			*rcpts += j->nrcpt;
			done_all(j, STAGE_CONTENT, 250, "250 ok", t);
		}
	}
	return jobs;
}

Test(sched, a_retried_message_keeps_its_recipients_together)
{
	/* README: recipients of one message to one domain share a
	 * transaction; a retry must not split them into one per recipient. */
	static const uint64_t dl[] = { 1000, 2000 };
	set_retry(dl, 2, 10, 100);
	queue_new(10, "grey.test");
	struct sched_dest *d = sched_dest_find(s, "grey.test");
	struct sched_job *j = sched_job_next(s, d, T0);
	cr_assert_eq(j->nrcpt, 10);
	done_all(j, STAGE_RCPT, 451, "451 4.7.1 greylisted", T0);
	unsigned rcpts = 0;
	unsigned jobs = drain_ticking(d, T0, T0 + 2000, &rcpts);
	cr_assert_eq(rcpts, 10);
	cr_assert_eq(jobs, 1, "the retry took %u transactions for one message", jobs);

	/* The same after a destination-level failure: 3 messages of 5. */
	for (int k = 0; k < 3; k++)
		queue_new(5, "down.test");
	struct sched_dest *dd = sched_dest_find(s, "down.test");
	struct attempt_report rep;
	outcome_report_set(&rep, ATTEMPT_CONNECT_FAIL, STAGE_CONNECT, 0, "connection refused");
	sched_dest_failed(s, dd, &rep, "127.0.0.1:9", T0);
	check_counts("held", 0, 15, 0, 10, 0);
	rcpts = 0;
	jobs = drain_ticking(dd, T0, T0 + 3000, &rcpts);
	cr_assert_eq(rcpts, 15);
	cr_assert_eq(jobs, 3, "3 messages took %u transactions after the back-off", jobs);
}

Test(sched, max_age_bounces_with_a_dsn)
{
	static const uint64_t dl[] = { 1000 };
	set_retry(dl, 1, 10, 100);
	uint64_t old = T0 - 3 * DAY - 1, young = T0 - 3 * DAY + 60000;
	uint64_t a = submit(2, "slow.test", old);
	uint64_t b = submit(1, "slow.test", young);
	add(a, 0, "slow.test", old, T0);
	add(a, 1, "slow.test", old, T0);
	add(b, 0, "slow.test", young, T0);
	struct sched_dest *d = sched_dest_find(s, "slow.test");
	struct sched_job *j;
	while ((j = sched_job_next(s, d, T0)))
		done_all(j, STAGE_RCPT, 451, "451 4.3.0 try later", T0);
	check_counts("two expired, one deferred", 0, 1, 0, 0, 2);
	flush();
	struct rstate st = rcpt_state(a, 1);
	cr_assert_eq(st.state, SPOOL_BOUNCED);
	cr_assert_eq(st.attempts, 1);
	cr_assert_eq(rcpt_state(b, 0).state, SPOOL_DEFERRED);
	struct mbox_all mb;
	cr_assert_eq(mbox_read(&mb), 1, "one DSN for the expired message, got %u", mb.n);
	const char *dsn = dsn_for(&mb, a);
	cr_assert_not_null(dsn);
	cr_assert_eq(count_str(dsn, "\r\nFinal-Recipient: rfc822; "), 2, "%s", dsn);
	cr_assert_not_null(strstr(dsn, "Final-Recipient: rfc822; rcpt0@slow.test\r\n"));
	cr_assert_not_null(strstr(dsn, "Final-Recipient: rfc822; rcpt1@slow.test\r\n"));
	cr_assert_eq(count_str(dsn, "\r\nAction: failed\r\nStatus: 4.4.7\r\n"), 2, "%s", dsn);
	cr_assert_not_null(strstr(dsn, "\r\nDiagnostic-Code: X-ringpost; delivery time expired; "
	                               "last error: 451 4.3.0 try later\r\n"),
	                   "%s", dsn);
	cr_assert_not_null(strstr(dsn, "\r\nReporting-MTA: dns; mta.sched.test\r\n"));
	cr_assert_not_null(strstr(dsn, "\r\nRemote-MTA: dns; mx.test\r\n"));
	cr_assert_not_null(strstr(dsn, "\r\nTo: <sender@example.org>\r\n"));
	mbox_free(&mb);
}

Test(sched, dsn_per_message_notify_ret_and_null_sender)
{
	static const uint8_t notify[4] = { NOTIFY_FAILURE, NOTIFY_NEVER, NOTIFY_SUCCESS,
		                           NOTIFY_FAILURE | NOTIFY_DELAY };
	uint64_t hdrs = submit_with(4, "dsn.test", NULL, "s@origin.test", 0, notify, T0);
	uint64_t full = submit_with(1, "dsn.test", NULL, "s@origin.test", MSG_F_RET_FULL, NULL, T0);
	uint64_t null = submit_with(2, "dsn.test", NULL, "", 0, NULL, T0);
	uint64_t never = submit_with(1, "dsn.test", NULL, "s@origin.test", 0,
	                             (const uint8_t[]){ NOTIFY_NEVER }, T0);
	add_all(hdrs, 4, "dsn.test", T0);
	add_all(full, 1, "dsn.test", T0);
	add_all(null, 2, "dsn.test", T0);
	add_all(never, 1, "dsn.test", T0);
	struct sched_dest *d = sched_dest_find(s, "dsn.test");
	struct sched_job *j;
	unsigned jobs = 0;
	while ((j = sched_job_next(s, d, T0))) {
		jobs++;
		done_all(j, STAGE_RCPT, 550, "550 5.1.1 no such user", T0);
	}
	cr_assert_eq(jobs, 4);
	check_counts("all bounced", 0, 0, 0, 0, 8);
	flush();
	struct mbox_all mb;
	cr_assert_eq(mbox_read(&mb), 2, "DSNs for two messages, got %u", mb.n);
	cr_assert_null(dsn_for(&mb, null), "never a DSN for the null sender");
	cr_assert_null(dsn_for(&mb, never), "never a DSN for NOTIFY=NEVER");
	const char *h = dsn_for(&mb, hdrs);
	cr_assert_not_null(h);
	/* One DSN per message; only the recipients that asked for failures. */
	cr_assert_eq(count_str(h, "\r\nFinal-Recipient: "), 2, "%s", h);
	cr_assert_not_null(strstr(h, "Final-Recipient: rfc822; rcpt0@dsn.test\r\n"));
	cr_assert_not_null(strstr(h, "Final-Recipient: rfc822; rcpt3@dsn.test\r\n"));
	cr_assert_eq(count_str(h, "\r\nStatus: 5.1.1\r\n"), 2);
	cr_assert_eq(count_str(h, "\r\nDiagnostic-Code: smtp; 550 5.1.1 no such user\r\n"), 2);
	cr_assert_not_null(strstr(h, "Content-Type: text/rfc822-headers\r\n\r\n"
	                             "Subject: 4 to dsn.test\r\nX-Test: dsn\r\n\r\n--"),
	                   "the header section, no body: %s", h);
	cr_assert_null(strstr(h, "the body text"));
	const char *f = dsn_for(&mb, full);
	cr_assert_not_null(f);
	cr_assert_not_null(strstr(f,
	                          "Content-Type: message/rfc822\r\n\r\n"
	                          "Subject: 1 to dsn.test\r\nX-Test: dsn\r\n\r\nthe body text\r\n"),
	                   "RET=FULL returns the whole message: %s", f);
	mbox_free(&mb);
}

static void fail_loop_kick(struct sched_dest *d)
{
	if (strcmp(d->name, "loop.test"))
		return;
	/* What delivery.c does when the route leads back to ourselves. */
	struct attempt_report rep;
	outcome_report_set(&rep, ATTEMPT_LOOP, STAGE_CONNECT, 0,
	                   "mail for loop.test loops back to myself");
	sched_dest_failed(s, d, &rep, NULL, rp_now_ms());
}

Test(sched, dsn_for_a_failure_during_a_kick_keeps_the_original)
{
	/* A failure decided inside sched_run (the relay's kick) must get a
	 * DSN with the original's headers, though its final state reaches
	 * the writer (which deletes the body) in the same sched_run. */
	uint64_t id = queue_new(1, "loop.test");
	ctx.on_kick = fail_loop_kick;
	sched_run(s);
	ctx.on_kick = NULL;
	test_spool_sync(sp);
	flush();
	check_counts("bounced", 0, 0, 0, 0, 1);
	struct rstate st = rcpt_state(id, 0);
	cr_assert_eq(st.state, SPOOL_BOUNCED);
	cr_assert_str_eq(st.response, "5.4.6 mail for loop.test loops back to myself");
	struct mbox_all mb;
	cr_assert_eq(mbox_read(&mb), 1);
	cr_assert_not_null(strstr(mb.msg[0], "\r\nStatus: 5.4.6\r\n"));
	cr_assert_not_null(strstr(mb.msg[0], "Content-Type: text/rfc822-headers\r\n\r\n"
	                                     "Subject: 1 to loop.test\r\n"),
	                   "the original's headers are missing: %s", mb.msg[0]);
	mbox_free(&mb);
}

/* ---- administration ---------------------------------------------------- */

Test(sched, purge_with_bounce_takes_only_its_destination)
{
	static const char *const ab[3] = { "a.test", "a.test", "b.test" };
	uint64_t m1 = submit_with(3, "a.test", ab, "s@origin.test", 0, NULL, T0);
	uint64_t m2 = submit(2, "a.test", T0);
	uint64_t m3 = submit(1, "a.test", T0);
	uint64_t m4 = submit(2, "b.test", T0);
	/* m2 deferred, m3 in flight, m1 ready; b.test has m1.2 and m4. */
	add_all(m2, 2, "a.test", T0);
	struct sched_dest *a = sched_dest_find(s, "a.test");
	done_all(sched_job_next(s, a, T0), STAGE_RCPT, 451, "451 later", T0);
	add_all(m3, 1, "a.test", T0);
	struct sched_job *inflight = sched_job_next(s, a, T0);
	cr_assert_not_null(inflight);
	add(m1, 0, "a.test", T0, T0);
	add(m1, 1, "a.test", T0, T0);
	add(m1, 2, "b.test", T0, T0);
	add_all(m4, 2, "b.test", T0);
	struct sched_dest *b = sched_dest_find(s, "b.test");
	check_counts("before", 5, 2, 1, 0, 0);

	cr_assert_eq(sched_dest_purge(s, a, true, T0 + 10), 5);
	cr_assert_eq(a->n.queued + a->n.deferred, 0);
	cr_assert_eq(a->n.bounced, 5);
	cr_assert_eq(b->n.queued, 3, "b.test untouched");
	cr_assert_null(sched_job_next(s, a, T0 + 10));
	/* The attempt in flight ends: its outcome no longer counts. */
	done_all(inflight, STAGE_CONTENT, 250, "250 ok", T0 + 20);
	check_counts("purged", 3, 0, 0, 0, 5);
	flush();
	for (uint32_t i = 0; i < 2; i++) {
		struct rstate st = rcpt_state(m1, i);
		cr_assert_eq(st.state, SPOOL_BOUNCED);
		cr_assert_str_eq(st.response, "5.0.0 purged by the administrator");
		cr_assert_eq(rcpt_state(m2, i).state, SPOOL_BOUNCED);
	}
	cr_assert_eq(rcpt_state(m3, 0).state, SPOOL_BOUNCED, "in flight, purged all the same");
	cr_assert_eq(rcpt_state(m1, 2).state, SPOOL_QUEUED);
	struct mbox_all mb;
	cr_assert_eq(mbox_read(&mb), 3, "one DSN per purged message, got %u", mb.n);
	const char *d1 = dsn_for(&mb, m1);
	cr_assert_not_null(d1);
	cr_assert_eq(count_str(d1, "\r\nFinal-Recipient: "), 2, "only a.test's: %s", d1);
	cr_assert_null(strstr(d1, "rcpt2@b.test\r\n"));
	cr_assert_eq(count_str(d1, "\r\nDiagnostic-Code: X-ringpost; purged by the "
	                           "administrator\r\n"),
	             2);
	cr_assert_not_null(dsn_for(&mb, m2));
	cr_assert_not_null(dsn_for(&mb, m3));
	mbox_free(&mb);
	/* The rest of m1 and all of m4 still go out. */
	struct sched_job *j;
	unsigned n = 0;
	while ((j = sched_job_next(s, b, T0 + 30))) {
		n += j->nrcpt;
		done_all(j, STAGE_CONTENT, 250, "250 ok", T0 + 30);
	}
	cr_assert_eq(n, 3);
	check_counts("end", 0, 0, 0, 3, 5);
}

Test(sched, purge_without_bounce_drops_silently)
{
	uint64_t m1 = submit(3, "a.test", T0);
	uint64_t m2 = submit(1, "c.test", T0);
	add_all(m1, 3, "a.test", T0);
	add_all(m2, 1, "c.test", T0);
	struct sched_dest *a = sched_dest_find(s, "a.test");
	done_all(sched_job_next(s, a, T0), STAGE_RCPT, 451, "451 later", T0);
	cr_assert_eq(sched_dest_purge(s, a, false, T0), 3);
	/* Purging an empty destination is harmless. */
	cr_assert_eq(sched_dest_purge(s, a, false, T0), 0);
	check_counts("dropped", 1, 0, 0, 0, 3);
	flush();
	struct rstate st = rcpt_state(m1, 2);
	cr_assert_eq(st.state, SPOOL_BOUNCED);
	cr_assert_str_eq(st.response, "5.0.0 purged by the administrator (dropped, no DSN)");
	struct mbox_all mb;
	cr_assert_eq(mbox_read(&mb), 0, "no DSN for a drop");
	sched_tick(s, T0 + DAY);
	cr_assert_null(sched_job_next(s, a, T0 + DAY), "nothing comes back");
	done_all(sched_job_next(s, sched_dest_find(s, "c.test"), T0), STAGE_CONTENT, 250, "250",
	         T0);
	check_counts("end", 0, 0, 0, 1, 3);
}

Test(sched, msg_purge_takes_only_that_message)
{
	uint64_t m1 = submit(3, "a.test", T0);
	uint64_t m2 = submit(2, "a.test", T0);
	uint64_t m3 = submit(2, "a.test", T0);
	uint64_t m4 = submit(1, "a.test", T0);
	add_all(m2, 2, "a.test", T0);
	struct sched_add da = { .msgid = m1,
		                .idx = 0,
		                .domain = "a.test",
		                .submit_ms = T0,
		                .next_ms = T0 + 5000,
		                .attempts = 1 };
	sched_add(s, &da, T0);
	add(m1, 1, "a.test", T0, T0);
	add(m1, 2, "a.test", T0, T0);
	add_all(m3, 2, "a.test", T0);
	add_all(m4, 1, "a.test", T0);
	struct sched_dest *a = sched_dest_find(s, "a.test");
	struct sched_job *inflight = sched_job_next(s, a, T0); /* m2 */
	cr_assert_eq(inflight->msgid, m2);
	cr_assert_eq(sched_msg_purge(s, a, m1, false, T0), 3);
	cr_assert_eq(sched_msg_purge(s, a, m2, true, T0), 2, "in flight");
	check_counts("m1 and m2 purged", 3, 0, 2, 0, 5);
	/* The others keep their order and their grouping. */
	struct sched_job *j = sched_job_next(s, a, T0);
	cr_assert_eq(j->msgid, m3);
	cr_assert_eq(j->nrcpt, 2);
	done_all(j, STAGE_CONTENT, 250, "250", T0);
	j = sched_job_next(s, a, T0);
	cr_assert_eq(j->msgid, m4);
	done_all(j, STAGE_CONTENT, 250, "250", T0);
	cr_assert_null(sched_job_next(s, a, T0));
	done_all(inflight, STAGE_CONTENT, 250, "250", T0);
	check_counts("end", 0, 0, 0, 3, 5);
	flush();
	cr_assert_eq(rcpt_state(m1, 0).state, SPOOL_BOUNCED);
	cr_assert_eq(rcpt_state(m2, 1).state, SPOOL_BOUNCED);
	cr_assert_eq(rcpt_state(m3, 1).state, SPOOL_DELIVERED);
	struct mbox_all mb;
	cr_assert_eq(mbox_read(&mb), 1, "a DSN for the bounced purge only");
	cr_assert_not_null(dsn_for(&mb, m2));
	mbox_free(&mb);
}

/* defer_many - n recipients of dest at pseudo-random due times, as the
 * start-up scan queues them. */
static uint64_t defer_many(const char *dest, unsigned n, uint64_t *x)
{
	uint64_t last = 0;
	for (unsigned k = 0; k < n; k += 50) {
		unsigned m = n - k < 50 ? n - k : 50;
		uint64_t id = submit(m, dest, T0);
		for (unsigned i = 0; i < m; i++) {
			*x ^= *x << 13;
			*x ^= *x >> 7;
			*x ^= *x << 17;
			uint64_t next = T0 + 1000 + *x % 100000;
			add_tried(id, i, dest, next, 2, T0);
			if (next > last)
				last = next;
		}
	}
	return last;
}

Test(sched, purge_and_retry_reach_every_deferred_recipient)
{
	/* Recipients of three destinations share the retry heap; taking one
	 * destination's out must find every one of them. */
	uint64_t x = 0x2545f4914f6cdd1dull, last = 0;
	static const char *const names[3] = { "x.test", "y.test", "z.test" };
	for (int round = 0; round < 3; round++)
		for (int k = 0; k < 3; k++) {
			uint64_t l = defer_many(names[k], 100, &x);
			last = l > last ? l : last;
		}
	check_counts("deferred", 0, 900, 0, 0, 0);
	struct sched_dest *dx = sched_dest_find(s, "x.test"), *dy = sched_dest_find(s, "y.test"),
	                  *dz = sched_dest_find(s, "z.test");
	cr_assert_eq(sched_dest_purge(s, dy, false, T0), 300);
	cr_assert_eq(dy->n.deferred, 0);
	cr_assert_eq(sched_dest_retry(s, dx, T0), 300);
	cr_assert_eq(dx->n.deferred, 0);
	cr_assert_eq(dx->n.queued, 300);
	check_counts("after", 300, 300, 0, 0, 300);
	/* Later, only z.test's come due: nothing purged or retried is left behind. */
	sched_tick(s, last);
	cr_assert_eq(dy->n.queued + dy->n.deferred, 0);
	cr_assert_eq(dz->n.queued, 300);
	cr_assert_eq(dx->n.queued, 300);
	check_counts("end", 600, 0, 0, 0, 300);
}

Test(sched, retry_ends_the_back_off_now)
{
	queue_new(3, "down.test");
	uint64_t other = submit(1, "other.test", T0);
	add_tried(other, 0, "other.test", T0 + 60000, 1, T0);
	struct sched_dest *d = sched_dest_find(s, "down.test");
	struct attempt_report rep;
	outcome_report_set(&rep, ATTEMPT_CONNECT_FAIL, STAGE_CONNECT, 0, "connection refused");
	sched_dest_failed(s, d, &rep, NULL, T0);
	cr_assert_not(sched_dest_may_connect(s, d, T0 + 10));
	sched_run(s);
	unsigned kicks = kicks_of("down.test");
	cr_assert_eq(sched_dest_retry(s, d, T0 + 10), 3);
	cr_assert_eq(d->hold_until, 0);
	cr_assert_eq(d->fails, 0);
	check_counts("ready", 3, 1, 0, 0, 0);
	sched_run(s);
	cr_assert_eq(kicks_of("down.test"), kicks + 1, "retry kicks the destination");
	cr_assert(sched_dest_may_connect(s, d, T0 + 10));
	struct sched_job *j = sched_job_next(s, d, T0 + 10);
	cr_assert_not_null(j);
	cr_assert_eq(j->nrcpt, 3);
	cr_assert_eq(j->rcpt[0].attempts, 1, "the failed attempt still counts");
	done_all(j, STAGE_CONTENT, 250, "250", T0 + 10);
	check_counts("other still deferred", 0, 1, 0, 3, 0);
}

Test(sched, suspend_holds_and_resume_releases_everything)
{
	queue_new(3, "sus.test");
	uint64_t m2 = submit(1, "sus.test", T0);
	add_tried(m2, 0, "sus.test", T0 + 1000, 1, T0);
	struct sched_dest *d = sched_dest_find(s, "sus.test");
	sched_run(s);
	sched_dest_suspend(s, d, true);
	cr_assert_not(sched_dest_may_connect(s, d, T0));
	cr_assert_null(sched_job_next(s, d, T0));
	/* Retries come due and new mail arrives: all of it waits. */
	sched_tick(s, T0 + 1000);
	uint64_t m3 = submit(2, "sus.test", T0);
	add_all(m3, 2, "sus.test", T0 + 1000);
	cr_assert_null(sched_job_next(s, d, T0 + 1000));
	check_counts("suspended", 6, 0, 0, 0, 0);
	struct stats_snapshot snap = { 0 };
	sched_stats(s, &snap);
	cr_assert_eq(snap.ndomains, 1);
	cr_assert(snap.domains[0].suspended);
	stats_free(&snap);
	sched_run(s);
	unsigned kicks = kicks_of("sus.test");
	sched_dest_suspend(s, d, false);
	sched_run(s);
	cr_assert_eq(kicks_of("sus.test"), kicks + 1, "resume kicks the destination");
	cr_assert(sched_dest_may_connect(s, d, T0 + 1000));
	struct sched_job *j;
	unsigned n = 0;
	while ((j = sched_job_next(s, d, T0 + 1000))) {
		n += j->nrcpt;
		done_all(j, STAGE_CONTENT, 250, "250", T0 + 1000);
	}
	cr_assert_eq(n, 6);
	check_counts("all delivered", 0, 0, 0, 6, 0);
	flush();
	cr_assert_eq(rcpt_state(m2, 0).attempts, 2);
	cr_assert_eq(rcpt_state(m3, 1).state, SPOOL_DELIVERED);
}

/* ---- sessions: the shard-wide limit and failing destinations ----------- */

/* A stand-in for delivery.c's pools: a kick opens sessions while the
 * scheduler lets the destination have them (as pool_kick does: no more
 * than it has jobs for); a session later carries one job and closes. */
static struct {
	struct sched_dest *live[256]; /* open sessions, oldest first (a ring) */
	unsigned head, tail;
	char order[256][16]; /* destinations in the order sessions opened */
	unsigned norder;
	uint64_t now;
} sim;

static unsigned sim_live(const struct sched_dest *d)
{
	unsigned n = 0;
	for (unsigned i = sim.head; i != sim.tail; i++)
		n += sim.live[i % 256] == d;
	return n;
}

static void sim_kick(struct sched_dest *d)
{
	while (sim_live(d) < d->nready_jobs && sched_dest_may_connect(s, d, sim.now)) {
		cr_assert_lt(sim.tail - sim.head, 256);
		cr_assert_lt(sim.norder, 256);
		sched_session_opened(s, d);
		sim.live[sim.tail++ % 256] = d;
		snprintf(sim.order[sim.norder++], sizeof(sim.order[0]), "%s", d->name);
	}
}

/* sim_step - the oldest session delivers one job, closes, and the
 * scheduler runs. False when no session is open. */
static bool sim_step(void)
{
	if (sim.head == sim.tail)
		return false;
	struct sched_dest *d = sim.live[sim.head++ % 256];
	struct sched_job *j = sched_job_next(s, d, sim.now);
	if (j)
		done_all(j, STAGE_CONTENT, 250, "250", sim.now);
	sched_session_closed(s, d);
	sched_run(s);
	return true;
}

static void sim_start(uint32_t max_outbound)
{
	memset(&sim, 0, sizeof(sim));
	sim.now = T0;
	set_retry(delays, 3, 0, max_outbound);
	ctx.lim.max_rcpts_per_msg = 1;
	ctx.on_kick = sim_kick;
}

static void sim_order(char *out, size_t n)
{
	size_t o = 0;
	out[0] = '\0';
	for (unsigned i = 0; i < sim.norder && o < n; i++)
		o += (size_t)snprintf(out + o, n - o, "%s%c", i ? " " : "", sim.order[i][0]);
}

Test(sched, shard_limit_turns_round_robin)
{
	/* Two shard-wide slots, four destinations with 6 jobs each, kicked in
	 * order: a.test takes both slots and asks for a third before the
	 * others ask for their first; from then on sessions go round in the
	 * order the destinations asked, each one's next request at the back. */
	sim_start(2);
	static const char *const names[] = { "a.test", "b.test", "c.test", "d.test" };
	for (int k = 0; k < 4; k++) {
		uint64_t id = submit(6, names[k], T0);
		add_all(id, 6, names[k], T0);
	}
	sched_run(s);
	while (sim_step())
		;
	check_counts("all delivered", 0, 0, 0, 24, 0);
	char order[600];
	sim_order(order, sizeof(order));
	cr_assert_str_eq(order, "a a a b c d a b c d a b c d a b c d b c d b c d",
	                 "sessions opened in the order %s", order);
}

Test(sched, shard_limit_slot_is_not_taken_by_a_busier_destination)
{
	/* One slot; b.test waits for it. a.test, holding it, gets more mail
	 * (a kick) just before its session ends: the slot is still b's. */
	sim_start(1);
	uint64_t a1 = submit(1, "a.test", T0), b1 = submit(1, "b.test", T0);
	add_all(a1, 1, "a.test", T0);
	add_all(b1, 1, "b.test", T0);
	sched_run(s);
	cr_assert_eq(sim.norder, 1);
	queue_new(3, "a.test");
	while (sim_step())
		;
	check_counts("all delivered", 0, 0, 0, 5, 0);
	char order[600];
	sim_order(order, sizeof(order));
	cr_assert_str_eq(order, "a b a a a", "sessions opened in the order %s", order);
}

Test(sched, shard_limit_slot_unused_by_its_waiter_goes_to_the_next)
{
	/* One slot; b.test and c.test wait. By the time the slot is free,
	 * b.test is suspended: c.test must get it rather than wait forever. */
	sim_start(1);
	static const char *const names[] = { "a.test", "b.test", "c.test" };
	for (int k = 0; k < 3; k++) {
		uint64_t id = submit(1, names[k], T0);
		add_all(id, 1, names[k], T0);
	}
	sched_run(s);
	cr_assert_eq(sim.norder, 1);
	sched_dest_suspend(s, sched_dest_find(s, "b.test"), true);
	sim_step(); /* a.test's session ends */
	for (int i = 0; i < 3 && sim.head == sim.tail; i++)
		sched_run(s); /* as the shard's tick would */
	char order[600];
	sim_order(order, sizeof(order));
	cr_assert_str_eq(order, "a c", "sessions opened in the order %s", order);
	sim_step();
	check_counts("b.test still held", 1, 0, 0, 2, 0);
	sched_dest_suspend(s, sched_dest_find(s, "b.test"), false);
	sched_run(s);
	while (sim_step())
		;
	check_counts("all delivered", 0, 0, 0, 3, 0);
}

Test(sched, a_failing_destination_is_probed_by_one_session)
{
	ctx.lim.max_rcpts_per_msg = 1;
	queue_new(20, "down.test");
	struct sched_dest *d = sched_dest_find(s, "down.test");
	/* A new destination may open several sessions at once... */
	cr_assert(sched_dest_may_connect(s, d, T0));
	sched_session_opened(s, d);
	cr_assert(sched_dest_may_connect(s, d, T0));
	sched_session_opened(s, d);
	/* ...both are refused: the destination backs off as a whole. */
	struct attempt_report rep;
	outcome_report_set(&rep, ATTEMPT_CONNECT_FAIL, STAGE_CONNECT, 0, "connection refused");
	sched_dest_failed(s, d, &rep, "127.0.0.1:9", T0);
	sched_dest_failed(s, d, &rep, "127.0.0.1:9", T0);
	sched_session_closed(s, d);
	sched_session_closed(s, d);
	cr_assert_eq(d->fails, 1, "one back-off for both refusals");
	cr_assert_not(sched_dest_may_connect(s, d, T0 + 999));
	/* When the back-off ends, one session tries; no more until it works. */
	sched_tick(s, T0 + 1000);
	cr_assert(sched_dest_may_connect(s, d, T0 + 1000));
	sched_session_opened(s, d);
	cr_assert_not(sched_dest_may_connect(s, d, T0 + 1000),
	              "a second session to a destination that is failing");
	sched_dest_failed(s, d, &rep, "127.0.0.1:9", T0 + 1000);
	sched_session_closed(s, d);
	cr_assert_eq(d->fails, 2);
	sched_tick(s, T0 + 6000);
	cr_assert(sched_dest_may_connect(s, d, T0 + 6000));
	sched_session_opened(s, d);
	cr_assert_not(sched_dest_may_connect(s, d, T0 + 6000));
	sched_run(s);
	unsigned kicks = kicks_of("down.test");
	/* The probe reaches the server: more sessions may follow at once. */
	sched_dest_ok(s, d);
	cr_assert_eq(d->fails, 0);
	sched_run(s);
	cr_assert_eq(kicks_of("down.test"), kicks + 1, "a working destination is kicked");
	cr_assert(sched_dest_may_connect(s, d, T0 + 6000));
	sched_session_closed(s, d);
	struct sched_job *j;
	while ((j = sched_job_next(s, d, T0 + 6000)))
		done_all(j, STAGE_CONTENT, 250, "250", T0 + 6000);
	check_counts("end", 0, 0, 0, 20, 0);
}

Test(sched, a_huge_failing_destination_settles_in_slices)
{
	/* 60,000 ready recipients refused at once: one call settles at most
	 * SCHED_SETTLE_MAX of them (one loop iteration's worth) and the ticks
	 * the rest, with the same report; meanwhile no session starts. */
	enum { NM = 1000, NR = 60, N = NM * NR };
	static uint64_t ids[NM];
	for (unsigned m = 0; m < NM; m++)
		ids[m] = queue_new(NR, "big.test");
	struct sched_dest *d = sched_dest_find(s, "big.test");
	struct attempt_report rep;
	outcome_report_set(&rep, ATTEMPT_CONNECT_FAIL, STAGE_CONNECT, 0, "connection refused");
	sched_dest_failed(s, d, &rep, "127.0.0.1:9", T0);
	check_counts("first slice", N - SCHED_SETTLE_MAX, SCHED_SETTLE_MAX, 0, 0, 0);
	cr_assert_not(sched_dest_may_connect(s, d, T0 + 1));
	cr_assert_null(sched_job_next(s, d, T0 + 1), "a job while its failure is being settled");
	unsigned ticks = 0;
	while (d->n.queued) {
		uint64_t before = d->n.queued;
		sched_tick(s, T0 + 1 + ticks++);
		cr_assert_leq(before - d->n.queued, SCHED_SETTLE_MAX, "a tick settled %llu",
		              (unsigned long long)(before - d->n.queued));
		cr_assert_lt(ticks, 10);
	}
	cr_assert_eq(ticks, (N - SCHED_SETTLE_MAX + SCHED_SETTLE_MAX - 1) / SCHED_SETTLE_MAX);
	check_counts("all deferred", 0, N, 0, 0, 0);
	cr_assert_eq(d->fails, 1, "one back-off, not one per slice");
	flush();
	struct rstate st = rcpt_state(ids[NM - 1], NR - 1);
	cr_assert_eq(st.state, SPOOL_DEFERRED);
	cr_assert_eq(st.attempts, 1);
	cr_assert_not_null(strstr(st.response, "connection refused"), "'%s'", st.response);
	cr_assert_str_eq(st.remote, "127.0.0.1:9");
	cr_assert_geq(st.next_ms, d->hold_until);

	/* Retry them all: one tick's worth leaves the heap at once, the rest
	 * on the next tick; nothing is lost, the order is the messages'. */
	cr_assert_eq(sched_dest_retry(s, d, T0 + 20), N);
	check_counts("retried", SCHED_TICK_MAX_DUE, N - SCHED_TICK_MAX_DUE, 0, 0, 0);
	sched_tick(s, T0 + 21);
	check_counts("all ready", N, 0, 0, 0, 0);
	cr_assert(sched_dest_may_connect(s, d, T0 + 21));
	unsigned jobs = 0;
	struct sched_job *j;
	while ((j = sched_job_next(s, d, T0 + 21))) {
		cr_assert_eq(j->nrcpt, NR);
		cr_assert_eq(j->msgid, ids[jobs], "job %u is not message %u's", jobs, jobs);
		done_all(j, STAGE_CONTENT, 250, "250", T0 + 21);
		jobs++;
	}
	check_counts("delivered", 0, 0, 0, N, 0);
}

Test(sched, a_huge_domain_purge_goes_in_slices)
{
	/* 60,000 recipients, half deferred and half ready, dropped: one call
	 * settles SCHED_SETTLE_MAX, the ticks the rest; mail that arrives
	 * during the purge is not part of it. */
	enum { NM = 1000, NR = 60, N = NM * NR };
	static uint64_t ids[NM];
	for (unsigned m = 0; m < NM; m++) {
		ids[m] = submit(NR, "big.test", T0);
		for (unsigned i = 0; i < NR; i++)
			add_tried(ids[m], i, "big.test", m % 2 ? T0 + 60000 : 0, 1, T0);
	}
	check_counts("before", N / 2, N / 2, 0, 0, 0);
	struct sched_dest *d = sched_dest_find(s, "big.test");
	cr_assert_eq(sched_dest_purge(s, d, false, T0 + 1), N);
	check_counts("first slice", N - SCHED_SETTLE_MAX, 0, 0, 0, SCHED_SETTLE_MAX);
	cr_assert_null(sched_job_next(s, d, T0 + 1), "a purged recipient was handed out");
	uint64_t late = submit(1, "big.test", T0 + 2);
	add(late, 0, "big.test", T0 + 2, T0 + 2);
	unsigned ticks = 0;
	while (d->n.bounced < N) {
		sched_tick(s, T0 + 3 + ticks++);
		cr_assert_lt(ticks, 10);
	}
	cr_assert_eq(ticks, (N - 1) / SCHED_SETTLE_MAX);
	check_counts("purged", 1, 0, 0, 0, N);
	flush();
	cr_assert_eq(rcpt_state(ids[NM - 1], NR - 1).state, SPOOL_BOUNCED);
	cr_assert_eq(rcpt_state(ids[0], 0).state, SPOOL_BOUNCED);
	struct mbox_all mb;
	cr_assert_eq(mbox_read(&mb), 0, "a drop wrote %u DSNs", mb.n);
	mbox_free(&mb);
	struct sched_job *j = sched_job_next(s, d, T0 + 20);
	cr_assert_not_null(j, "mail submitted during the purge was purged");
	cr_assert_eq(j->msgid, late);
	done_all(j, STAGE_CONTENT, 250, "250 ok", T0 + 20);
	check_counts("end", 0, 0, 0, 1, N);
}

Test(sched, a_domain_purge_with_bounces_goes_in_smaller_slices)
{
	enum { NM = 50, NR = 60, N = NM * NR };
	for (unsigned m = 0; m < NM; m++)
		queue_new(NR, "big.test");
	struct sched_dest *d = sched_dest_find(s, "big.test");
	cr_assert_eq(sched_dest_purge(s, d, true, T0 + 1), N);
	check_counts("first slice", N - SCHED_PURGE_DSN_MAX, 0, 0, 0, SCHED_PURGE_DSN_MAX);
	for (unsigned t = 0; d->n.bounced < N; t++) {
		sched_tick(s, T0 + 2 + t);
		cr_assert_lt(t, 10);
	}
	flush();
	struct mbox_all mb;
	unsigned ndsn = mbox_read(&mb);
	/* One DSN per message, or two for a message cut by a slice. */
	cr_assert_geq(ndsn, NM);
	cr_assert_leq(ndsn, NM + (N + SCHED_PURGE_DSN_MAX - 1) / SCHED_PURGE_DSN_MAX);
	mbox_free(&mb);
}

Test(sched, mail_waiting_behind_a_back_off_is_recorded_deferred)
{
	uint64_t m1 = queue_new(1, "down.test");
	struct sched_dest *d = sched_dest_find(s, "down.test");
	struct attempt_report rep;
	outcome_report_set(&rep, ATTEMPT_CONNECT_FAIL, STAGE_CONNECT, 0, "connection refused");
	sched_dest_failed(s, d, &rep, "127.0.0.1:9", T0);
	cr_assert_gt(d->hold_until, T0);
	/* New mail while the destination backs off: not tried, but deferred
	 * until the hold ends, in the spool as in the counters. */
	uint64_t m2 = submit(1, "down.test", T0 + 10);
	add(m2, 0, "down.test", T0 + 10, T0 + 10);
	check_counts("held", 0, 2, 0, 0, 0);
	flush();
	struct rstate st = rcpt_state(m2, 0);
	cr_assert_eq(st.state, SPOOL_DEFERRED);
	cr_assert_eq(st.next_ms, d->hold_until);
	cr_assert_eq(st.attempts, 0, "no attempt was made");
	cr_assert_str_eq(st.response, "");
	/* The one that was tried keeps its attempt and reply. */
	st = rcpt_state(m1, 0);
	cr_assert_eq(st.attempts, 1);
	cr_assert_not_null(strstr(st.response, "connection refused"));
	cr_assert_str_eq(st.remote, "127.0.0.1:9");
}

Test(sched, a_failure_during_a_purge_leaves_the_purged_final)
{
	/* A purge is still settling when the destination fails: the failure
	 * settles only what is ready (mail queued after the purge); the
	 * purged recipients stay final, never retries. */
	enum { NM = 500, NR = 60, N = NM * NR };
	static uint64_t ids[NM];
	for (unsigned m = 0; m < NM; m++)
		ids[m] = queue_new(NR, "big.test");
	struct sched_dest *d = sched_dest_find(s, "big.test");
	cr_assert_eq(sched_dest_purge(s, d, false, T0 + 1), N);
	check_counts("first slice", N - SCHED_SETTLE_MAX, 0, 0, 0, SCHED_SETTLE_MAX);
	uint64_t late = submit(1, "big.test", T0 + 2);
	add(late, 0, "big.test", T0 + 2, T0 + 2);
	struct attempt_report rep;
	outcome_report_set(&rep, ATTEMPT_CONNECT_FAIL, STAGE_CONNECT, 0, "connection refused");
	sched_dest_failed(s, d, &rep, "127.0.0.1:9", T0 + 3);
	check_counts("failed", N - SCHED_SETTLE_MAX, 1, 0, 0, SCHED_SETTLE_MAX);
	for (unsigned t = 0; d->n.bounced < N; t++) {
		sched_tick(s, T0 + 4 + t);
		cr_assert_lt(t, 10);
	}
	check_counts("purged", 0, 1, 0, 0, N);
	flush();
	struct rstate st = rcpt_state(ids[NM - 1], NR - 1);
	cr_assert_eq(st.state, SPOOL_BOUNCED);
	cr_assert_eq(st.attempts, 0, "a purged recipient was counted as tried");
	st = rcpt_state(late, 0);
	cr_assert_eq(st.state, SPOOL_DEFERRED);
	cr_assert_eq(st.attempts, 1);
}

Test(sched, a_purge_during_a_failure_takes_the_rest)
{
	/* A failure is still settling when the domain is purged: the purge
	 * takes the deferred recipients and the ones the failure has not
	 * reached yet; all end bounced, none deferred. */
	enum { NM = 500, NR = 60, N = NM * NR };
	for (unsigned m = 0; m < NM; m++)
		queue_new(NR, "big.test");
	struct sched_dest *d = sched_dest_find(s, "big.test");
	struct attempt_report rep;
	outcome_report_set(&rep, ATTEMPT_CONNECT_FAIL, STAGE_CONNECT, 0, "connection refused");
	sched_dest_failed(s, d, &rep, "127.0.0.1:9", T0);
	check_counts("first slice", N - SCHED_SETTLE_MAX, SCHED_SETTLE_MAX, 0, 0, 0);
	cr_assert_eq(sched_dest_purge(s, d, false, T0 + 1), N);
	for (unsigned t = 0; d->n.bounced < N; t++) {
		sched_tick(s, T0 + 2 + t);
		cr_assert_lt(t, 10);
	}
	check_counts("purged", 0, 0, 0, 0, N);
	/* Nothing is left to settle: the destination takes mail again once
	 * its back-off ends. */
	uint64_t late = submit(1, "big.test", T0 + 20);
	add(late, 0, "big.test", d->hold_until, d->hold_until);
	struct sched_job *j = sched_job_next(s, d, d->hold_until);
	cr_assert_not_null(j);
	done_all(j, STAGE_CONTENT, 250, "250", d->hold_until);
	check_counts("end", 0, 0, 0, 1, N);
}

Test(sched, slices_share_one_budget_round_robin)
{
	/* Two domain purges settle SCHED_SETTLE_MAX recipients per tick
	 * together, not each; a destination that still has work after its
	 * turn goes behind the other. */
	enum { NR = 64, MA = 3 * SCHED_SETTLE_MAX / NR, MB = 2 * SCHED_SETTLE_MAX / NR };
	for (unsigned m = 0; m < MA; m++)
		queue_new(NR, "a.test");
	for (unsigned m = 0; m < MB; m++)
		queue_new(NR, "b.test");
	struct sched_dest *a = sched_dest_find(s, "a.test"), *b = sched_dest_find(s, "b.test");
	cr_assert_eq(sched_dest_purge(s, a, false, T0), MA * NR);
	cr_assert_eq(sched_dest_purge(s, b, false, T0), MB * NR);
	cr_assert_eq(a->n.bounced, SCHED_SETTLE_MAX, "a's first slice");
	cr_assert_eq(b->n.bounced, SCHED_SETTLE_MAX, "b's first slice");
	sched_tick(s, T0 + 1);
	cr_assert_eq(a->n.bounced + b->n.bounced, 3 * SCHED_SETTLE_MAX, "one budget per tick");
	cr_assert_eq(a->n.bounced, 2 * SCHED_SETTLE_MAX, "a's turn");
	sched_tick(s, T0 + 2);
	cr_assert_eq(b->n.bounced, MB * NR, "b's turn came before a's next one");
	cr_assert_eq(a->n.queued, SCHED_SETTLE_MAX);
	sched_tick(s, T0 + 3);
	check_counts("purged", 0, 0, 0, 0, (MA + MB) * NR);
}

/* The session's TLS goes into the recipient's record after the relay, while the DSN's
 * Remote-MTA and its "host ... said" keep the relay alone. */
Test(sched, tls_facts_in_the_record_not_in_the_dsn)
{
	uint64_t id = submit(2, "tls.test", T0);
	add_all(id, 2, "tls.test", T0);
	struct sched_dest *d = sched_dest_find(s, "tls.test");
	struct sched_job *j = sched_job_next(s, d, T0);
	cr_assert_eq(j->nrcpt, 2);
	struct attempt_report reps[2];
	outcome_report_set(&reps[0], ATTEMPT_REPLY, STAGE_CONTENT, 250, "250 2.0.0 ok");
	outcome_report_set(&reps[1], ATTEMPT_REPLY, STAGE_RCPT, 550, "550 5.1.1 no such user");
	struct sched_attempt info = { .remote = "mx.test[127.0.0.1]:25",
		                      .tls = "TLSv1.3/TLS_AES_256_GCM_SHA384 verified=yes",
		                      .duration_ms = 5 };
	sched_job_done(s, j, reps, &info, T0 + 10);
	flush();
	const char *want = "mx.test[127.0.0.1]:25 tls=TLSv1.3/TLS_AES_256_GCM_SHA384 verified=yes";
	cr_assert_str_eq(rcpt_state(id, 0).remote, want);
	cr_assert_str_eq(rcpt_state(id, 1).remote, want);
	struct mbox_all mb;
	cr_assert_eq(mbox_read(&mb), 1, "one DSN, got %u", mb.n);
	const char *dsn = dsn_for(&mb, id);
	cr_assert_not_null(dsn);
	cr_assert_not_null(strstr(dsn, "\r\nRemote-MTA: dns; mx.test\r\n"), "%s", dsn);
	cr_assert_not_null(strstr(dsn, "host mx.test[127.0.0.1]:25 said: 550"), "%s", dsn);
	cr_assert_null(strstr(dsn, "tls="), "%s", dsn);
	mbox_free(&mb);
}
