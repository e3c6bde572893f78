/* test_sched.c - the scheduler (queue/sched.c) over a real spool: jobs that
 * group a message's recipients, outcomes in the spool, retries, connection and
 * rate limits in simulated time, destination back-off, counters that add up.
 */
#include <criterion/criterion.h>
#include <string.h>

#include "queue/log.h"
#include "queue/sched.h"
#include "tests/unit/support.h"

#define DAY 86400000ull

struct ops_ctx {
	char kicked[64][32]; /* destinations kicked, in order */
	unsigned nkicks;
	struct sched_limits lim; /* what configure hands out */
	unsigned configured;
};

static void ops_kick(struct sched_dest *d, void *ctx)
{
	struct ops_ctx *c = ctx;
	if (c->nkicks < 64)
		snprintf(c->kicked[c->nkicks], sizeof(c->kicked[0]), "%s", d->name);
	c->nkicks++;
}

static void ops_configure(struct sched_dest *d, void *ctx)
{
	struct ops_ctx *c = ctx;
	d->lim = c->lim;
	c->configured++;
}

static const struct sched_ops ops = {.kick = ops_kick, .configure = ops_configure};
static const uint64_t delays[] = {1000, 5000, 20000};

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
	ctx.lim = (struct sched_limits){.max_connections = 10,
					.max_msgs_per_conn = 100,
					.max_rcpts_per_msg = 100,
					.connect_timeout_ms = 1000};
	struct sched_config cfg = {
		.retry = {.delays_ms = delays, .ndelays = 3, .max_age_ms = 3 * DAY},
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
	struct sched_add a = {.msgid = id, .idx = idx, .domain = domain, .submit_ms = submit_ms};
	sched_add(s, &a, now);
}

static void add_all(uint64_t id, unsigned n, const char *domain, uint64_t now)
{
	for (unsigned i = 0; i < n; i++)
		add(id, i, domain, T0, now);
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
	struct sched_attempt info = {.remote = "mx.test[127.0.0.1]:25", .duration_ms = 5};
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
	char remote[64];
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
	struct sched_add a = {.msgid = id,
			      .idx = 0,
			      .domain = "later.test",
			      .submit_ms = T0,
			      .next_ms = T0 + 5000,
			      .attempts = 3};
	sched_add(s, &a, T0);
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
	a = (struct sched_add){.msgid = id2,
			       .idx = 0,
			       .domain = "later.test",
			       .submit_ms = T0,
			       .next_ms = T0 + 5000};
	sched_add(s, &a, T0 + 5000);
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
	} want[] = {{0, 2, 0}, {0, 2, 2}, {0, 1, 4}, {1, 2, 0}};
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
			int n = snprintf(addr, sizeof(addr), "rcpt%u@example.test",
					 want[k].first + i);
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
	struct iovec body = {.iov_base = (void *)"shared\r\n", .iov_len = 8};
	struct iovec vars[2] = {{.iov_base = (void *)"one\r\n", .iov_len = 5},
				{.iov_base = (void *)"two\r\n", .iov_len = 5}};
	struct spool_rcpt rc[3] = {{.addr = "v1@x.test", .addr_len = 9, .variant = 1},
				   {.addr = "v2@x.test", .addr_len = 9, .variant = 2},
				   {.addr = "s@x.test", .addr_len = 8}};
	struct spool_req req = {.type = SPOOL_REQ_SUBMIT};
	req.u.submit.msg = (struct spool_msg){.id = spool_next_id(sp),
					      .submit_ms = T0,
					      .flags = MSG_F_VARIANTS,
					      .nrcpt = 3,
					      .body_len = 8,
					      .sender = "",
					      .envid = "",
					      .source = ""};
	req.u.submit.rcpts = rc;
	req.u.submit.body = &body;
	req.u.submit.nbody = 1;
	req.u.submit.variants = vars;
	req.u.submit.nvariants = 2;
	cr_assert_eq(test_spool_call(sp, &req), SPOOL_OK);
	uint64_t id = req.u.submit.msg.id;
	for (uint32_t i = 0; i < 3; i++) {
		struct sched_add a = {.msgid = id,
				      .idx = i,
				      .domain = "x.test",
				      .submit_ms = T0,
				      .own_body = i < 2};
		sched_add(s, &a, T0);
	}
	struct sched_dest *d = sched_dest_find(s, "x.test");
	static const char *const bodies[3] = {"one\r\n", "two\r\n", "shared\r\n"};
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
	uint64_t id = submit(3, "example.test", T0);
	add_all(id, 3, "example.test", T0);
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
	struct buf b = {0};
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
	uint64_t id = submit(3, "example.test", T0);
	add_all(id, 3, "example.test", T0);
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
	uint64_t id = submit(4, "example.test", T0);
	add_all(id, 4, "example.test", T0);
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

Test(sched, shard_wide_session_limit)
{
	struct sched_config cfg = {
		.retry = {.delays_ms = delays, .ndelays = 3, .max_age_ms = 3 * DAY},
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
	uint64_t id = submit(64, "rate.test", T0);
	add_all(id, 64, "rate.test", T0);
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

Test(sched, rate_limited_destination_waits_and_is_kicked)
{
	ctx.lim.rate = 2;
	ctx.lim.max_rcpts_per_msg = 1;
	uint64_t id = submit(6, "rate.test", T0);
	add_all(id, 6, "rate.test", T0);
	struct sched_dest *d = sched_dest_find(s, "rate.test");
	sched_run(s);
	/* The bucket holds a tenth of a second's worth, at least one token,
	 * and a new destination starts with one. */
	done_all(sched_job_next(s, d, T0), STAGE_CONTENT, 250, "250", T0);
	cr_assert_null(sched_job_next(s, d, T0), "out of tokens");
	cr_assert_not(sched_dest_may_connect(s, d, T0));
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
	uint64_t id = submit(4, "down.test", T0);
	add_all(id, 4, "down.test", T0);
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
	uint64_t id = submit(3, "nx.test", T0);
	add_all(id, 3, "nx.test", T0);
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
	uint64_t id = submit(3, "busy.test", T0);
	add_all(id, 3, "busy.test", T0);
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
	uint64_t id = submit(3, "example.test", T0);
	add_all(id, 3, "example.test", T0);
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
	uint64_t id2 = submit(2, "example.test", T0);
	add_all(id2, 2, "example.test", T0);
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
	uint64_t ids[NDEST];
	char names[NDEST][32];
	for (int i = 0; i < NDEST; i++) {
		snprintf(names[i], sizeof(names[i]), "d%02d.test", i);
		ids[i] = submit(NR, names[i], T0);
		add_all(ids[i], NR, names[i], T0);
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
			static const int codes[3] = {250, 451, 550};
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
