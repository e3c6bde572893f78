/* test_spool_mbox.c - the bounce mailbox (queue/spool_mbox.c) and the
 * suppression list (queue/spool_suppress.c) through a real spool: requests
 * go to the writer thread as the relay sends them, results are read back
 * with the reader API. Covers UIDs and UIDVALIDITY across reopens, flags,
 * expunge, expiry, the change counter and callback, the list itself, and
 * the three ways onto it: submits (checked), INBOUND reports and hard
 * bounces in SPOOL_REQ_UPDATE.
 */
#include <criterion/criterion.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/uio.h>

#include "queue/spool.h"
#include "tests/unit/support.h"

/* ---- a real spool with the options under test -------------------------- */

static char dir[64];
static struct spool *sp;
static struct spool_reader *rd;
static struct spool_options opt;
static atomic_uint changes;   /* mbox_changed calls */
static atomic_uint wrong_arg; /* ... with an arg other than the one given */

static void on_changed(void *arg)
{
	if (arg != &changes)
		atomic_fetch_add(&wrong_arg, 1);
	atomic_fetch_add(&changes, 1);
}

static void open_spool(void)
{
	char err[256] = "";
	sp = spool_open(&opt, err, sizeof(err));
	cr_assert_not_null(sp, "spool_open: %s", err);
	rd = spool_reader_new(sp);
}

static void close_spool(void)
{
	spool_reader_free(rd);
	spool_close(sp);
	rd = NULL;
	sp = NULL;
}

/* reopen - close and open the same directory with opt as it is now. */
static void reopen(void)
{
	close_spool();
	open_spool();
}

static void setup(void)
{
	test_tmpdir(dir, sizeof(dir), "mbox");
	opt = (struct spool_options){
		.dir = dir,
		.max_size = 64ull << 20,
		.keep_done_ms = 3600000,
		.suppress = true,
		.mbox_changed = on_changed,
		.mbox_arg = &changes,
	};
	atomic_store(&changes, 0);
	atomic_store(&wrong_arg, 0);
	open_spool();
}

static void teardown(void)
{
	close_spool();
	test_rmdir(dir);
}

TestSuite(mbox, .init = setup, .fini = teardown, .timeout = 60);
TestSuite(suppress, .init = setup, .fini = teardown, .timeout = 60);
TestSuite(inbound, .init = setup, .fini = teardown, .timeout = 60);
TestSuite(update_suppress, .init = setup, .fini = teardown, .timeout = 60);

/* ---- requests ---------------------------------------------------------- */

/* mbox_put - append a message; its UID. */
static uint32_t mbox_put(const char *data, uint64_t date_ms, uint8_t flags, bool durable)
{
	struct spool_req req = { .type = SPOOL_REQ_MBOX_PUT };
	req.u.mbox.data = data;
	req.u.mbox.len = strlen(data);
	req.u.mbox.date_ms = date_ms;
	req.u.mbox.flags = flags;
	req.u.mbox.durable = durable;
	req.u.mbox.uid = 0xdeadbeef;
	cr_assert_eq(test_spool_call(sp, &req), SPOOL_OK);
	cr_assert_neq(req.u.mbox.uid, 0xdeadbeef, "the writer sets the uid");
	return req.u.mbox.uid;
}

static void mbox_store(const uint32_t *uids, unsigned n, uint8_t set, uint8_t clear)
{
	struct spool_req req = { .type = SPOOL_REQ_MBOX_STORE };
	req.u.store.uids = uids;
	req.u.store.n = n;
	req.u.store.set = set;
	req.u.store.clear = clear;
	cr_assert_eq(test_spool_call(sp, &req), SPOOL_OK);
}

/* mbox_expunge - remove uids; how many were there. */
static unsigned mbox_expunge(const uint32_t *uids, unsigned n)
{
	struct spool_req req = { .type = SPOOL_REQ_MBOX_EXPUNGE };
	req.u.expunge.uids = uids;
	req.u.expunge.n = n;
	req.u.expunge.removed = 12345;
	cr_assert_eq(test_spool_call(sp, &req), SPOOL_OK);
	return req.u.expunge.removed;
}

/* suppress_req - add or remove addr; whether it was on the list. */
static bool suppress_req(const char *addr, bool add, const char *reason)
{
	struct spool_req req = { .type = SPOOL_REQ_SUPPRESS };
	req.u.suppress.addr = addr;
	req.u.suppress.addr_len = strlen(addr);
	req.u.suppress.add = add;
	req.u.suppress.reason = reason;
	req.u.suppress.reason_len = reason ? strlen(reason) : 0;
	req.u.suppress.existed = !add; /* the opposite of the likely answer */
	cr_assert_eq(test_spool_call(sp, &req), SPOOL_OK);
	return req.u.suppress.existed;
}

/* submit - a message to addrs (state[i]: what the writer made of each). */
static uint64_t submit(const char *const *addrs, unsigned n, uint8_t *state)
{
	struct spool_rcpt rc[8];
	struct iovec body = { .iov_base = (void *)"body\r\n", .iov_len = 6 };
	cr_assert_leq(n, 8);
	memset(rc, 0, sizeof(rc));
	struct spool_req req = { .type = SPOOL_REQ_SUBMIT };
	struct spool_submit *s = &req.u.submit;
	s->msg = (struct spool_msg){ .id = spool_next_id(sp),
		                     .submit_ms = rp_now_ms(),
		                     .nrcpt = n,
		                     .body_len = 6,
		                     .sender = "s@x.example",
		                     .sender_len = 11,
		                     .envid = "",
		                     .source = "test",
		                     .source_len = 4 };
	for (unsigned i = 0; i < n; i++) {
		rc[i].addr = addrs[i];
		rc[i].addr_len = strlen(addrs[i]);
		rc[i].notify = NOTIFY_FAILURE;
		rc[i].state = SPOOL_DEFERRED; /* the writer decides, not the caller */
	}
	s->rcpts = rc;
	s->body = &body;
	s->nbody = 1;
	cr_assert_eq(test_spool_call(sp, &req), SPOOL_OK, "submit failed");
	for (unsigned i = 0; i < n; i++)
		state[i] = rc[i].state;
	return s->msg.id;
}

/* update - one recipient's state after an attempt, with or without the
 * hard-bounce suppress flag. */
static void update(uint64_t id, uint32_t idx, uint8_t state, const char *response, bool suppress)
{
	struct spool_update u = {
		.msgid = id,
		.idx = idx,
		.state = state,
		.attempts = 1,
		.next_ms = state == SPOOL_DEFERRED ? rp_now_ms() + 60000 : 0,
		.last_ms = rp_now_ms(),
		.response = response,
		.response_len = strlen(response),
		.remote = "mx.test[192.0.2.1]:25",
		.remote_len = 21,
		.suppress = suppress,
	};
	struct spool_req req = { .type = SPOOL_REQ_UPDATE, .u.update = { .v = &u, .n = 1 } };
	cr_assert_eq(test_spool_call(sp, &req), SPOOL_OK);
}

/* ---- reads (copied out of the read transaction) ------------------------ */

struct mbox_copy {
	bool found;
	uint32_t uid, flags;
	uint64_t date_ms;
	char data[256];
	size_t len;
};

static struct mbox_copy mbox_get(uint32_t uid)
{
	struct mbox_copy c = { 0 };
	struct spool_mbox_entry e;
	cr_assert(spool_reader_begin(rd));
	c.found = spool_mbox_get(rd, uid, &e);
	if (c.found) {
		cr_assert_lt(e.len, sizeof(c.data));
		c.uid = e.uid;
		c.flags = e.flags;
		c.date_ms = e.date_ms;
		memcpy(c.data, e.data, e.len);
		c.len = e.len;
	}
	spool_reader_end(rd);
	return c;
}

static void mbox_ids(uint32_t *uidvalidity, uint32_t *uidnext)
{
	cr_assert(spool_reader_begin(rd));
	spool_mbox_ids(rd, uidvalidity, uidnext);
	spool_reader_end(rd);
}

struct uid_list {
	uint32_t uid[64];
	unsigned n, stop_after;
};

static bool collect_uid(const struct spool_mbox_entry *e, void *arg)
{
	struct uid_list *l = arg;
	cr_assert_lt(l->n, 64);
	l->uid[l->n++] = e->uid;
	return l->n != l->stop_after;
}

/* mbox_uids - the UIDs from `from` on; how many foreach says it visited. */
static unsigned mbox_uids(uint32_t from, struct uid_list *l)
{
	l->n = 0;
	cr_assert(spool_reader_begin(rd));
	unsigned n = spool_mbox_foreach(rd, from, collect_uid, l);
	spool_reader_end(rd);
	cr_assert_eq(n, l->n);
	return n;
}

struct rcpt_copy {
	uint8_t state;
	uint16_t attempts;
	uint64_t last_ms;
	char addr[400];
	char response[1100];
};

static struct rcpt_copy get_rcpt(uint64_t id, uint32_t idx)
{
	struct rcpt_copy c = { 0 };
	struct spool_rcpt r;
	cr_assert(spool_reader_begin(rd));
	cr_assert(spool_get_rcpt(rd, id, idx, &r), "recipient %u missing", idx);
	c.state = r.state;
	c.attempts = r.attempts;
	c.last_ms = r.last_ms;
	snprintf(c.addr, sizeof(c.addr), "%.*s", (int)r.addr_len, r.addr);
	snprintf(c.response, sizeof(c.response), "%.*s", (int)r.response_len, r.response);
	spool_reader_end(rd);
	return c;
}

static struct spool_msg get_msg(uint64_t id)
{
	struct spool_msg m;
	cr_assert(spool_reader_begin(rd));
	cr_assert(spool_get_msg(rd, id, &m), "message missing");
	m.sender = m.envid = m.source = m.submitter = NULL;
	spool_reader_end(rd);
	return m;
}

static bool body_exists(uint64_t id)
{
	struct buf b = { 0 };
	cr_assert(spool_reader_begin(rd));
	bool found = spool_get_body(rd, id, 0, &b);
	spool_reader_end(rd);
	buf_free(&b);
	return found;
}

struct listed {
	bool found;
	char addr[400];
	char reason[500];
	uint64_t time_ms;
};

/* listed - the suppression entry for addr (any case). */
static struct listed listed(const char *addr)
{
	struct listed l = { 0 };
	struct spool_suppression s;
	cr_assert(spool_reader_begin(rd));
	l.found = spool_suppress_get(rd, addr, strlen(addr), &s);
	if (l.found) {
		snprintf(l.addr, sizeof(l.addr), "%.*s", (int)s.addr_len, s.addr);
		snprintf(l.reason, sizeof(l.reason), "%.*s", (int)s.reason_len, s.reason);
		l.time_ms = s.time_ms;
	}
	spool_reader_end(rd);
	return l;
}

static uint64_t suppress_count(void)
{
	cr_assert(spool_reader_begin(rd));
	uint64_t n = spool_suppress_count(rd);
	spool_reader_end(rd);
	return n;
}

/* ---- the mailbox ------------------------------------------------------- */

Test(mbox, put_assigns_increasing_uids)
{
	uint64_t t0 = rp_now_ms();
	static const char *const data[] = { "Subject: one\r\n\r\nfirst\r\n",
		                            "Subject: two\r\n\r\nsecond\r\n", "" };
	static const uint8_t flags[] = { 0, MBOX_SEEN | MBOX_FLAGGED, MBOX_DRAFT };
	uint32_t uid[3];
	for (unsigned i = 0; i < 3; i++)
		uid[i] = mbox_put(data[i], t0 - 1000 * i, flags[i], i == 0);
	cr_assert_eq(uid[0], 1, "a new mailbox starts at UID 1");
	cr_assert_eq(uid[1], 2);
	cr_assert_eq(uid[2], 3);
	for (unsigned i = 0; i < 3; i++) {
		struct mbox_copy c = mbox_get(uid[i]);
		cr_assert(c.found, "uid %u", uid[i]);
		cr_assert_eq(c.uid, uid[i]);
		cr_assert_eq(c.flags, flags[i]);
		cr_assert_eq(c.date_ms, t0 - 1000 * i);
		cr_assert_eq(c.len, strlen(data[i]));
		cr_assert(!memcmp(c.data, data[i], c.len), "message %u differs", i);
	}
	cr_assert_not(mbox_get(0).found);
	cr_assert_not(mbox_get(4).found);

	uint32_t uv, next;
	mbox_ids(&uv, &next);
	cr_assert_eq(next, 4);
	cr_assert_geq(uv, (uint32_t)(t0 / 1000) - 120, "UIDVALIDITY: when the spool was made");
	cr_assert_leq(uv, (uint32_t)(rp_now_ms() / 1000));

	/* foreach: UID order from `from`, stopping when told. */
	struct uid_list l = { 0 };
	cr_assert_eq(mbox_uids(0, &l), 3);
	cr_assert_eq(l.uid[0], 1);
	cr_assert_eq(l.uid[2], 3);
	cr_assert_eq(mbox_uids(2, &l), 2);
	cr_assert_eq(l.uid[0], 2);
	cr_assert_eq(mbox_uids(4, &l), 0);
	l.stop_after = 1;
	cr_assert_eq(mbox_uids(1, &l), 1, "stops when fn says so");
}

Test(mbox, uids_and_uidvalidity_survive_reopen)
{
	uint32_t a = mbox_put("a\r\n", rp_now_ms(), 0, true);
	uint32_t b = mbox_put("b\r\n", rp_now_ms(), MBOX_SEEN, true);
	uint32_t uv0, next0;
	mbox_ids(&uv0, &next0);
	cr_assert_eq(next0, b + 1);
	/* A second passes: a UIDVALIDITY made again on open would differ. */
	usleep(1100000);
	reopen();
	uint32_t uv1, next1;
	mbox_ids(&uv1, &next1);
	cr_assert_eq(uv1, uv0, "UIDVALIDITY is fixed when the spool is made");
	cr_assert_eq(next1, next0);
	struct mbox_copy c = mbox_get(b);
	cr_assert(c.found);
	cr_assert_eq(c.flags, MBOX_SEEN);
	cr_assert_str_eq(c.data, "b\r\n");
	cr_assert(mbox_get(a).found);
	uint32_t d = mbox_put("d\r\n", rp_now_ms(), 0, false);
	cr_assert_eq(d, b + 1, "UIDs continue after a reopen");

	/* The newest message expunged: its UID is never given again, not
	 * even after a reopen (RFC 3501 2.3.1.1). */
	cr_assert_eq(mbox_expunge(&d, 1), 1);
	mbox_ids(&uv1, &next1);
	cr_assert_eq(next1, d + 1, "uidnext remembers past the expunged newest");
	uint32_t e = mbox_put("e\r\n", rp_now_ms(), 0, false);
	cr_assert_eq(e, d + 1);
	uint32_t all[3] = { a, b, e };
	cr_assert_eq(mbox_expunge(all, 3), 3);
	reopen();
	mbox_ids(&uv1, &next1);
	cr_assert_eq(uv1, uv0);
	cr_assert_eq(next1, e + 1, "an empty mailbox still knows its uidnext");
	cr_assert_eq(mbox_put("f\r\n", rp_now_ms(), 0, false), e + 1);
}

Test(mbox, store_flags)
{
	uint32_t u1 = mbox_put("one\r\n", 1000, 0, false);
	uint32_t u2 = mbox_put("two\r\n", 2000, MBOX_ANSWERED, false);
	uint32_t u3 = mbox_put("three\r\n", 3000, MBOX_DELETED, false);

	/* Set on two of them (and a missing UID, skipped). */
	uint32_t set[3] = { u1, 999, u3 };
	mbox_store(set, 3, MBOX_SEEN | MBOX_FLAGGED, 0);
	cr_assert_eq(mbox_get(u1).flags, MBOX_SEEN | MBOX_FLAGGED);
	cr_assert_eq(mbox_get(u2).flags, MBOX_ANSWERED, "not named: unchanged");
	cr_assert_eq(mbox_get(u3).flags, MBOX_SEEN | MBOX_FLAGGED | MBOX_DELETED);
	cr_assert_not(mbox_get(999).found, "a store does not create messages");

	/* Clear. */
	mbox_store(&u3, 1, 0, MBOX_DELETED | MBOX_SEEN);
	cr_assert_eq(mbox_get(u3).flags, MBOX_FLAGGED);
	/* Set, then clear: clear wins for a bit in both. */
	mbox_store(&u2, 1, MBOX_DRAFT | MBOX_SEEN, MBOX_SEEN | MBOX_ANSWERED);
	cr_assert_eq(mbox_get(u2).flags, MBOX_DRAFT);
	/* Setting what is already set changes nothing. */
	mbox_store(&u1, 1, MBOX_SEEN, 0);
	cr_assert_eq(mbox_get(u1).flags, MBOX_SEEN | MBOX_FLAGGED);

	/* The message and its date are kept through flag changes. */
	struct mbox_copy c = mbox_get(u3);
	cr_assert_str_eq(c.data, "three\r\n");
	cr_assert_eq(c.date_ms, 3000);
	c = mbox_get(u2);
	cr_assert_str_eq(c.data, "two\r\n");
	cr_assert_eq(c.date_ms, 2000);
	reopen();
	cr_assert_eq(mbox_get(u2).flags, MBOX_DRAFT, "flags are stored");
}

Test(mbox, expunge)
{
	uint32_t u[5];
	for (unsigned i = 0; i < 5; i++)
		u[i] = mbox_put("x\r\n", rp_now_ms(), 0, false);
	/* Missing UIDs, and a UID named twice, are skipped. */
	uint32_t gone[5] = { u[1], 777, u[3], u[1], 0 };
	cr_assert_eq(mbox_expunge(gone, 5), 2);
	cr_assert_not(mbox_get(u[1]).found);
	cr_assert_not(mbox_get(u[3]).found);
	struct uid_list l = { 0 };
	cr_assert_eq(mbox_uids(0, &l), 3);
	cr_assert_eq(l.uid[0], u[0]);
	cr_assert_eq(l.uid[1], u[2]);
	cr_assert_eq(l.uid[2], u[4]);
	cr_assert_eq(mbox_expunge(gone, 5), 0, "nothing left of them");
	cr_assert_eq(mbox_expunge(NULL, 0), 0);
	uint32_t uv, next;
	mbox_ids(&uv, &next);
	cr_assert_eq(next, u[4] + 1);
}

Test(mbox, change_counter_and_callback)
{
	uint64_t g = spool_mbox_generation(sp);
	unsigned c = atomic_load(&changes);
	cr_assert_eq(c, 0, "nothing changed yet");

	uint32_t uid = mbox_put("x\r\n", rp_now_ms(), 0, false);
	cr_assert_eq(spool_mbox_generation(sp), g + 1, "a put");
	cr_assert_eq(atomic_load(&changes), c + 1, "the callback runs before the reply");
	mbox_store(&uid, 1, MBOX_SEEN, 0);
	cr_assert_eq(spool_mbox_generation(sp), g + 2, "a store");
	cr_assert_eq(atomic_load(&changes), c + 2);
	cr_assert_eq(mbox_expunge(&uid, 1), 1);
	cr_assert_eq(spool_mbox_generation(sp), g + 3, "an expunge");
	cr_assert_eq(atomic_load(&changes), c + 3);

	/* Requests that leave the mailbox alone do not wake IDLE. */
	const char *to[1] = { "a@y.example" };
	uint8_t st[1];
	uint64_t id = submit(to, 1, st);
	update(id, 0, SPOOL_DELIVERED, "250 ok", false);
	suppress_req("z@y.example", true, "test");
	test_spool_sync(sp);
	cr_assert_eq(spool_mbox_generation(sp), g + 3);
	cr_assert_eq(atomic_load(&changes), c + 3);

	/* A report arriving stores a copy: a change. */
	struct spool_req req = { .type = SPOOL_REQ_INBOUND };
	req.u.mbox.data = "report\r\n";
	req.u.mbox.len = 8;
	req.u.mbox.date_ms = rp_now_ms();
	cr_assert_eq(test_spool_call(sp, &req), SPOOL_OK);
	cr_assert_eq(spool_mbox_generation(sp), g + 4, "an inbound report");
	cr_assert_eq(atomic_load(&changes), c + 4);
	cr_assert_eq(atomic_load(&wrong_arg), 0, "the callback gets mbox_arg");
}

Test(mbox, durable_put_is_synced)
{
	struct spool_usage u0, u1, u2;
	spool_usage(sp, &u0);
	mbox_put("lazy\r\n", rp_now_ms(), 0, false);
	spool_usage(sp, &u1);
	cr_assert_geq(u1.commits, u0.commits + 1);
	cr_assert_eq(u1.syncs, u0.syncs, "a put that need not be durable is not synced");
	mbox_put("durable\r\n", rp_now_ms(), 0, true);
	spool_usage(sp, &u2);
	cr_assert_eq(u2.syncs, u1.syncs + 1, "a durable put is synced before the answer");
}

/* wait_mbox_count - until the mailbox holds n messages (the writer's
 * maintenance pass runs about once a second); false on timeout. */
static bool wait_mbox_count(unsigned n)
{
	uint64_t deadline = rp_mono_ms() + 10000;
	struct uid_list l = { 0 };
	while (rp_mono_ms() < deadline) {
		if (mbox_uids(0, &l) == n)
			return true;
		usleep(50000);
	}
	return false;
}

Test(mbox, expiry_by_max_messages)
{
	opt.mbox_max_messages = 3;
	reopen();
	uint32_t u[5];
	for (unsigned i = 0; i < 5; i++)
		u[i] = mbox_put("m\r\n", rp_now_ms(), 0, false);
	unsigned after_puts = atomic_load(&changes);
	cr_assert(wait_mbox_count(3), "max_messages 3 must leave 3 messages");
	/* A later pass leaves them alone. */
	usleep(1500000);
	struct uid_list l = { 0 };
	cr_assert_eq(mbox_uids(0, &l), 3);
	cr_assert_eq(l.uid[0], u[2], "the oldest go first");
	cr_assert_eq(l.uid[1], u[3]);
	cr_assert_eq(l.uid[2], u[4]);
	cr_assert_gt(atomic_load(&changes), after_puts, "expiry is a change too");
	cr_assert_eq(atomic_load(&wrong_arg), 0, "the callback gets mbox_arg");
	uint32_t uv, next;
	mbox_ids(&uv, &next);
	cr_assert_eq(next, u[4] + 1);
}

Test(mbox, expiry_by_max_age)
{
	opt.mbox_max_age_ms = 60000;
	reopen();
	uint64_t now = rp_now_ms();
	uint32_t old1 = mbox_put("old\r\n", now - 7200000, 0, false);
	uint32_t old2 = mbox_put("old\r\n", now - 61000, MBOX_FLAGGED, false);
	uint32_t young = mbox_put("young\r\n", now - 30000, 0, false);
	uint32_t fresh = mbox_put("fresh\r\n", now, 0, false);
	cr_assert(wait_mbox_count(2), "messages older than max_age must go");
	usleep(1500000);
	cr_assert_not(mbox_get(old1).found);
	cr_assert_not(mbox_get(old2).found, "flags do not keep a message");
	cr_assert(mbox_get(young).found);
	cr_assert(mbox_get(fresh).found);
}

Test(mbox, no_limits_no_expiry)
{
	uint32_t u = mbox_put("ancient\r\n", 1, 0, false);
	for (unsigned i = 0; i < 4; i++)
		mbox_put("m\r\n", rp_now_ms(), 0, false);
	usleep(2200000); /* two maintenance passes */
	cr_assert(mbox_get(u).found, "max_messages 0 and max_age 0 keep everything");
	struct uid_list l = { 0 };
	cr_assert_eq(mbox_uids(0, &l), 5);
}

/* ---- the suppression list ---------------------------------------------- */

Test(suppress, add_and_remove_in_any_case)
{
	uint64_t t0 = rp_now_ms();
	cr_assert_eq(suppress_count(), 0);
	cr_assert_not(suppress_req("Bob@Example.COM", true, "550 5.1.1 gone"), "new");
	uint64_t t1 = rp_now_ms();
	struct listed l = listed("bob@example.com");
	cr_assert(l.found);
	cr_assert_str_eq(l.addr, "bob@example.com", "stored lower-case");
	cr_assert_str_eq(l.reason, "550 5.1.1 gone");
	cr_assert_geq(l.time_ms, t0);
	cr_assert_leq(l.time_ms, t1);
	cr_assert(listed("BOB@EXAMPLE.COM").found, "looked up in any case");
	cr_assert_not(listed("bob@example.co").found);
	cr_assert_not(listed("bob@example.comm").found);
	cr_assert_eq(suppress_count(), 1);

	/* Adding again (another case) updates the entry: it existed. */
	cr_assert(suppress_req("BOB@example.com", true, "operator"));
	cr_assert_str_eq(listed("bob@example.com").reason, "operator");
	cr_assert_eq(suppress_count(), 1);

	/* Removing in yet another case. */
	cr_assert(suppress_req("bOb@eXample.com", false, NULL), "it was there");
	cr_assert_not(listed("bob@example.com").found);
	cr_assert_eq(suppress_count(), 0);
	cr_assert_not(suppress_req("bob@example.com", false, NULL), "already gone");
	cr_assert_eq(suppress_count(), 0);

	/* No reason at all is fine. */
	cr_assert_not(suppress_req("c@d.example", true, NULL));
	l = listed("c@d.example");
	cr_assert(l.found);
	cr_assert_str_eq(l.reason, "");
	reopen();
	cr_assert(listed("C@D.example").found, "the list is stored");
	cr_assert_eq(suppress_count(), 1);
}

Test(suppress, limits)
{
	/* Reasons are cut to 400 bytes. */
	char reason[1000];
	memset(reason, 'r', sizeof(reason) - 1);
	reason[sizeof(reason) - 1] = '\0';
	suppress_req("long@reason.example", true, reason);
	cr_assert_eq(strlen(listed("long@reason.example").reason), 400);
	/* The longest address kept is 319 bytes; longer ones cannot be
	 * deliverable addresses and are not stored (the request still
	 * succeeds). */
	char addr[330];
	memset(addr, 'a', sizeof(addr));
	memcpy(addr + 319 - 10, "@x.example", 11); /* 319 bytes */
	cr_assert_eq(strlen(addr), 319);
	suppress_req(addr, true, "long");
	cr_assert(listed(addr).found);
	memset(addr, 'a', sizeof(addr));
	memcpy(addr + 320 - 10, "@x.example", 11); /* 320 bytes */
	suppress_req(addr, true, "too long");
	cr_assert_not(listed(addr).found);
	cr_assert_eq(suppress_count(), 2);
	/* An empty address is never on the list. */
	cr_assert_not(suppress_req("", true, "empty"));
	cr_assert_not(listed("").found);
	cr_assert_eq(suppress_count(), 2);
}

struct page {
	char addr[32][64];
	unsigned n, limit;
};

static bool page_fn(const struct spool_suppression *s, void *arg)
{
	struct page *p = arg;
	cr_assert_lt(p->n, 32);
	snprintf(p->addr[p->n], sizeof(p->addr[p->n]), "%.*s", (int)s->addr_len, s->addr);
	p->n++;
	return p->n != p->limit;
}

/* page - up to limit entries after `after` (NULL: from the start). */
static unsigned page(const char *after, unsigned limit, struct page *p)
{
	p->n = 0;
	p->limit = limit;
	cr_assert(spool_reader_begin(rd));
	unsigned n = spool_suppress_foreach(rd, after, after ? strlen(after) : 0, page_fn, p);
	spool_reader_end(rd);
	cr_assert_eq(n, p->n, "foreach counts what it visited");
	return n;
}

Test(suppress, foreach_pages_in_address_order)
{
	/* Added in reverse order, some in upper case. */
	for (int i = 24; i >= 0; i--) {
		char a[64];
		snprintf(a, sizeof(a), i % 3 ? "user%02d@page.example" : "USER%02d@Page.Example",
		         i);
		suppress_req(a, true, "paging");
	}
	cr_assert_eq(suppress_count(), 25);
	struct page p;
	char after[64] = "";
	unsigned seen = 0;
	for (int pg = 0; pg < 3; pg++) {
		unsigned n = page(pg ? after : NULL, 10, &p);
		cr_assert_eq(n, pg < 2 ? 10 : 5, "page %d: %u entries", pg, n);
		for (unsigned i = 0; i < n; i++) {
			char want[64];
			snprintf(want, sizeof(want), "user%02u@page.example", seen + i);
			cr_assert_str_eq(p.addr[i], want, "page %d entry %u", pg, i);
		}
		seen += n;
		snprintf(after, sizeof(after), "%s", p.addr[n - 1]);
	}
	cr_assert_eq(page(after, 10, &p), 0, "after the last entry: nothing");
	/* `after` is strictly after, in any case, and need not be listed. */
	cr_assert_eq(page("USER09@PAGE.EXAMPLE", 1, &p), 1);
	cr_assert_str_eq(p.addr[0], "user10@page.example");
	cr_assert_eq(page("user09", 1, &p), 1);
	cr_assert_str_eq(p.addr[0], "user09@page.example");
	cr_assert_eq(page("a", 0, &p), 25, "limit 0: fn never stops it");
	cr_assert_eq(page("zzz", 10, &p), 0);
	suppress_req("user10@page.example", false, NULL);
	cr_assert_eq(page("user09@page.example", 1, &p), 1);
	cr_assert_str_eq(p.addr[0], "user11@page.example", "removed entries are gone");
	cr_assert_eq(suppress_count(), 24);
}

/* ---- submits check the list -------------------------------------------- */

Test(suppress, submit_marks_listed_recipients)
{
	uint64_t t0 = rp_now_ms();
	cr_assert_not(suppress_req("Rcpt1@Sup.Example", true, "550 5.1.1 hard bounce"));
	const char *to[3] = { "rcpt0@sup.example", "RCPT1@SUP.EXAMPLE", "rcpt2@sup.example" };
	uint8_t st[3];
	uint64_t id = submit(to, 3, st);
	cr_assert_eq(st[0], SPOOL_QUEUED);
	cr_assert_eq(st[1], SPOOL_SUPPRESSED, "the caller learns it at once");
	cr_assert_eq(st[2], SPOOL_QUEUED);

	struct rcpt_copy r = get_rcpt(id, 1);
	cr_assert_eq(r.state, SPOOL_SUPPRESSED);
	cr_assert_str_eq(spool_state_name(r.state), "suppressed");
	cr_assert_str_eq(r.response, "5.7.0 suppressed: 550 5.1.1 hard bounce");
	cr_assert_str_eq(r.addr, "RCPT1@SUP.EXAMPLE", "the address is kept as given");
	cr_assert_eq(r.attempts, 0, "never tried");
	cr_assert_geq(r.last_ms, t0);
	cr_assert_eq(get_rcpt(id, 0).state, SPOOL_QUEUED);
	cr_assert_str_eq(get_rcpt(id, 0).response, "");
	cr_assert_eq(get_rcpt(id, 2).state, SPOOL_QUEUED);

	struct spool_msg m = get_msg(id);
	cr_assert_eq(m.nrcpt, 3);
	cr_assert_eq(m.pending, 2, "a suppressed recipient is final");
	cr_assert_eq(m.flags & MSG_F_DONE, 0);
	cr_assert(body_exists(id));

	/* A final state is never undone. */
	update(id, 1, SPOOL_DELIVERED, "250 ok", false);
	cr_assert_eq(get_rcpt(id, 1).state, SPOOL_SUPPRESSED);
	cr_assert_eq(get_msg(id).pending, 2);
}

static void count_pending(const struct spool_msg *m, const struct spool_rcpt *rc, void *arg)
{
	(void)m;
	cr_assert_neq(rc->state, SPOOL_SUPPRESSED);
	(*(unsigned *)arg)++;
}

Test(suppress, suppressed_recipients_are_not_pending)
{
	suppress_req("b@scan.example", true, "x");
	const char *to[3] = { "a@scan.example", "b@scan.example", "c@scan.example" };
	uint8_t st[3];
	submit(to, 3, st);
	unsigned n = 0;
	cr_assert(spool_reader_begin(rd));
	cr_assert_eq(spool_scan_pending(rd, count_pending, &n), 2);
	spool_reader_end(rd);
	cr_assert_eq(n, 2);
}

Test(suppress, submit_all_suppressed_is_done)
{
	uint64_t t0 = rp_now_ms();
	suppress_req("only@sup.example", true, "complained");
	const char *to[1] = { "Only@Sup.Example" };
	uint8_t st[1];
	uint64_t id = submit(to, 1, st);
	cr_assert_eq(st[0], SPOOL_SUPPRESSED);
	struct spool_msg m = get_msg(id);
	cr_assert_eq(m.pending, 0);
	cr_assert(m.flags & MSG_F_DONE, "nobody left to deliver to");
	cr_assert_geq(m.done_ms, t0);
	cr_assert_not(body_exists(id), "no body is kept for nobody");
	cr_assert_str_eq(get_rcpt(id, 0).response, "5.7.0 suppressed: complained");
}

Test(suppress, submit_without_the_option)
{
	suppress_req("rcpt1@sup.example", true, "listed");
	opt.suppress = false;
	reopen();
	const char *to[3] = { "rcpt0@sup.example", "rcpt1@sup.example", "RCPT1@SUP.EXAMPLE" };
	uint8_t st[3];
	uint64_t id = submit(to, 3, st);
	for (unsigned i = 0; i < 3; i++) {
		cr_assert_eq(st[i], SPOOL_QUEUED, "recipient %u", i);
		cr_assert_eq(get_rcpt(id, i).state, SPOOL_QUEUED, "recipient %u", i);
	}
	cr_assert_eq(get_msg(id).pending, 3);
	cr_assert(listed("rcpt1@sup.example").found, "the list itself is kept");
	/* Back on: the same list applies again. */
	opt.suppress = true;
	reopen();
	id = submit(to, 3, st);
	cr_assert_eq(st[0], SPOOL_QUEUED);
	cr_assert_eq(st[1], SPOOL_SUPPRESSED);
	cr_assert_eq(st[2], SPOOL_SUPPRESSED);
	cr_assert_eq(get_msg(id).pending, 1);
}

/* ---- INBOUND: reports that arrive -------------------------------------- */

/* inbound - a report with its mailbox copy and events; its UID. */
static uint32_t inbound(const char *copy, uint64_t date_ms, struct spool_event *ev, unsigned n)
{
	struct spool_req req = { .type = SPOOL_REQ_INBOUND };
	req.u.mbox.data = copy;
	req.u.mbox.len = strlen(copy);
	req.u.mbox.date_ms = date_ms;
	req.u.mbox.flags = 0;
	req.u.mbox.uid = 0xdeadbeef;
	req.events = ev;
	req.nevents = n;
	cr_assert_eq(test_spool_call(sp, &req), SPOOL_OK);
	cr_assert_neq(req.u.mbox.uid, 0xdeadbeef, "the writer sets the uid");
	return req.u.mbox.uid;
}

static struct spool_event event(uint64_t id, uint32_t idx, uint8_t state, const char *response,
                                bool suppress, const char *addr, const char *reason)
{
	(void)addr; /* what a report names: never listed (only a record's address is) */
	return (struct spool_event){
		.msgid = id,
		.idx = idx,
		.state = state,
		.response = response,
		.response_len = response ? strlen(response) : 0,
		.suppress = suppress,
		.reason = reason,
		.found = !id, /* the opposite of the right answer below */
	};
}

/* delivered_message - three recipients at domain: 0 and 1 delivered, 2
 * deferred. */
static uint64_t delivered_message(const char *domain)
{
	char a[3][64];
	const char *to[3];
	for (unsigned i = 0; i < 3; i++) {
		snprintf(a[i], sizeof(a[i]), "rcpt%u@%s", i, domain);
		to[i] = a[i];
	}
	uint8_t st[3];
	uint64_t id = submit(to, 3, st);
	update(id, 0, SPOOL_DELIVERED, "250 2.0.0 ok 0", false);
	update(id, 1, SPOOL_DELIVERED, "250 2.0.0 ok 1", false);
	update(id, 2, SPOOL_DEFERRED, "451 4.3.0 later", false);
	return id;
}

Test(inbound, events_change_recipients_and_the_list)
{
	uint64_t t0 = rp_now_ms();
	uint64_t id = delivered_message("In.Example");
	uint64_t missing = id + 100000; /* no such message (expired, say) */
	unsigned c0 = atomic_load(&changes);
	struct spool_event ev[5] = {
		/* A delivered recipient bounced after all; its record's
		 * address is listed, not the one the report carries. */
		event(id, 0, SPOOL_BOUNCED, "550 5.1.1 mailbox gone", true, "reporter@else.example",
		      "async bounce"),
		/* Another complained; not to be listed. */
		event(id, 1, SPOOL_COMPLAINED, "abuse report", false, NULL, NULL),
		/* A report for a recipient not delivered yet changes nothing. */
		event(id, 2, SPOOL_BOUNCED, "550 5.1.1 early", false, NULL, NULL),
		/* The record is gone: the report's own address is listed. */
		event(missing, 0, SPOOL_BOUNCED, "550 x", true, "Gone@Expired.Example",
		      "bounce for an expired message"),
		/* No recipient named at all (a complaint without VERP). */
		event(0, 0, SPOOL_COMPLAINED, NULL, true, "FBL@Report.Example", "complaint"),
	};
	static const char copy[] = "From: MAILER-DAEMON@in.example\r\n\r\nreport\r\n";
	uint32_t uid = inbound(copy, t0 - 5000, ev, 5);
	uint64_t t1 = rp_now_ms();

	cr_assert(ev[0].found);
	cr_assert(ev[1].found);
	cr_assert(ev[2].found, "there, though not changed");
	cr_assert_not(ev[3].found);
	cr_assert_not(ev[4].found);

	struct rcpt_copy r = get_rcpt(id, 0);
	cr_assert_eq(r.state, SPOOL_BOUNCED);
	cr_assert_str_eq(r.response, "550 5.1.1 mailbox gone (delivered before: 250 2.0.0 ok 0)",
	                 "the report, and the delivery it follows");
	cr_assert_str_eq(r.addr, "rcpt0@In.Example");
	r = get_rcpt(id, 1);
	cr_assert_eq(r.state, SPOOL_COMPLAINED);
	cr_assert_str_eq(spool_state_name(r.state), "complained");
	cr_assert_str_eq(r.response, "abuse report (delivered before: 250 2.0.0 ok 1)");
	r = get_rcpt(id, 2);
	cr_assert_eq(r.state, SPOOL_DEFERRED);
	cr_assert_str_eq(r.response, "451 4.3.0 later");
	cr_assert_eq(get_msg(id).pending, 1, "the pending count is untouched");

	struct listed l = listed("rcpt0@in.example");
	cr_assert(l.found, "the bounced recipient is listed");
	cr_assert_str_eq(l.reason, "async bounce");
	cr_assert_geq(l.time_ms, t0);
	cr_assert_leq(l.time_ms, t1);
	cr_assert_not(listed("reporter@else.example").found);
	cr_assert_not(listed("rcpt1@in.example").found, "suppress was not asked for");
	/* A report's own words never list an address: only a recipient
	 * record's (else one recipient could suppress anyone). */
	cr_assert_not(listed("gone@expired.example").found);
	cr_assert_not(listed("fbl@report.example").found);
	cr_assert_eq(suppress_count(), 1);

	/* The mailbox copy. */
	struct mbox_copy m = mbox_get(uid);
	cr_assert(m.found);
	cr_assert_str_eq(m.data, copy);
	cr_assert_eq(m.date_ms, t0 - 5000);
	cr_assert_eq(m.flags, 0);
	cr_assert_eq(atomic_load(&changes), c0 + 1);
}

Test(inbound, bounced_may_still_complain)
{
	uint64_t id = delivered_message("b.example");
	struct spool_event e1[2] = {
		event(id, 0, SPOOL_BOUNCED, "550 first", false, NULL, NULL),
		event(id, 1, SPOOL_COMPLAINED, "complaint first", false, NULL, NULL),
	};
	uint32_t u1 = inbound("one\r\n", rp_now_ms(), e1, 2);
	/* A second bounce for a bounced recipient changes nothing. */
	struct spool_event again = event(id, 0, SPOOL_BOUNCED, "550 second", false, NULL, NULL);
	uint32_t u2 = inbound("two\r\n", rp_now_ms(), &again, 1);
	cr_assert(again.found);
	cr_assert_eq(get_rcpt(id, 0).state, SPOOL_BOUNCED);
	cr_assert_str_eq(get_rcpt(id, 0).response, "550 first (delivered before: 250 2.0.0 ok 0)");
	char longresp[1500];
	memset(longresp, 'c', sizeof(longresp) - 1);
	longresp[sizeof(longresp) - 1] = '\0';
	struct spool_event e2[2] = {
		event(id, 0, SPOOL_COMPLAINED, longresp, false, NULL, NULL),
		event(id, 1, SPOOL_BOUNCED, "550 too late", false, NULL, NULL),
	};
	uint32_t u3 = inbound("three\r\n", rp_now_ms(), e2, 2);
	cr_assert_eq(u2, u1 + 1, "each report gets its own UID");
	cr_assert_eq(u3, u2 + 1);
	struct rcpt_copy r = get_rcpt(id, 0);
	cr_assert_eq(r.state, SPOOL_COMPLAINED, "bounced, then complained");
	const char *before = " (bounced before: 550 first (delivered before: 250 2.0.0 ok 0))";
	cr_assert_eq(strlen(r.response), 500 + strlen(before),
	             "the report's own text is cut to 500 bytes");
	cr_assert_str_eq(r.response + 500, before);
	r = get_rcpt(id, 1);
	cr_assert_eq(r.state, SPOOL_COMPLAINED, "a complaint is not undone by a bounce");
	cr_assert_str_eq(r.response, "complaint first (delivered before: 250 2.0.0 ok 1)");
	cr_assert(e2[0].found);
	cr_assert(e2[1].found);
	cr_assert_str_eq(mbox_get(u1).data, "one\r\n");
	cr_assert_str_eq(mbox_get(u2).data, "two\r\n");
	cr_assert_str_eq(mbox_get(u3).data, "three\r\n");
}

Test(inbound, without_the_option_nothing_is_listed)
{
	opt.suppress = false;
	reopen();
	uint64_t id = delivered_message("off.example");
	struct spool_event ev[2] = {
		event(id, 0, SPOOL_BOUNCED, "550 gone", true, NULL, "bounce"),
		event(0, 0, SPOOL_COMPLAINED, NULL, true, "fbl@off.example", "complaint"),
	};
	uint32_t uid = inbound("r\r\n", rp_now_ms(), ev, 2);
	cr_assert(ev[0].found);
	cr_assert_eq(get_rcpt(id, 0).state, SPOOL_BOUNCED, "states still change");
	cr_assert_eq(suppress_count(), 0);
	cr_assert_not(listed("rcpt0@off.example").found);
	cr_assert_not(listed("fbl@off.example").found);
	cr_assert(mbox_get(uid).found, "the copy is still kept");
}

/* ---- UPDATE with suppress: hard bounces -------------------------------- */

Test(update_suppress, hard_bounce_lists_the_address)
{
	uint64_t t0 = rp_now_ms();
	const char *to[4] = { "rcpt0@Dead.Example", "rcpt1@dead.example", "rcpt2@dead.example",
		              "rcpt3@dead.example" };
	uint8_t st[4];
	uint64_t id = submit(to, 4, st);
	static const char resp[] = "550 5.1.1 <rcpt0@dead.example>: no such user";
	update(id, 0, SPOOL_BOUNCED, resp, true);
	uint64_t t1 = rp_now_ms();
	struct listed l = listed("rcpt0@dead.example");
	cr_assert(l.found, "a hard bounce lists the recipient's address");
	cr_assert_str_eq(l.addr, "rcpt0@dead.example");
	cr_assert_str_eq(l.reason, resp, "the response is the reason");
	cr_assert_geq(l.time_ms, t0);
	cr_assert_leq(l.time_ms, t1);
	/* The record itself is updated as without the flag. */
	struct rcpt_copy r = get_rcpt(id, 0);
	cr_assert_eq(r.state, SPOOL_BOUNCED);
	cr_assert_str_eq(r.response, resp);
	cr_assert_str_eq(r.addr, "rcpt0@Dead.Example");
	cr_assert_eq(r.attempts, 1);
	cr_assert_eq(get_msg(id).pending, 3);

	/* Without the flag: bounced, not listed. */
	update(id, 1, SPOOL_BOUNCED, "550 5.7.1 policy", false);
	cr_assert_eq(get_rcpt(id, 1).state, SPOOL_BOUNCED);
	cr_assert_not(listed("rcpt1@dead.example").found);
	/* The flag on anything but a bounce: not listed. */
	update(id, 2, SPOOL_DEFERRED, "450 4.2.0 busy", true);
	cr_assert_eq(get_rcpt(id, 2).state, SPOOL_DEFERRED);
	cr_assert_not(listed("rcpt2@dead.example").found);
	/* An update for a recipient already final changes nothing, the list
	 * included. */
	update(id, 1, SPOOL_BOUNCED, "550 again", true);
	cr_assert_not(listed("rcpt1@dead.example").found);
	cr_assert_str_eq(get_rcpt(id, 1).response, "550 5.7.1 policy");
	cr_assert_eq(suppress_count(), 1);

	/* A long response: the reason is cut to 300 bytes, the record's
	 * response to 1000. */
	char longresp[1200];
	memset(longresp, 'x', sizeof(longresp) - 1);
	memcpy(longresp, "550 ", 4);
	longresp[sizeof(longresp) - 1] = '\0';
	update(id, 3, SPOOL_BOUNCED, longresp, true);
	l = listed("rcpt3@dead.example");
	cr_assert(l.found);
	cr_assert_eq(strlen(l.reason), 300);
	cr_assert_eq(strncmp(l.reason, longresp, 300), 0);
	cr_assert_eq(strlen(get_rcpt(id, 3).response), 1000);
	cr_assert_eq(get_msg(id).pending, 1);

	/* The next message to that address is suppressed at submission. */
	const char *again[2] = { "RCPT0@DEAD.EXAMPLE", "rcpt1@dead.example" };
	uint8_t st2[2];
	uint64_t id2 = submit(again, 2, st2);
	cr_assert_eq(st2[0], SPOOL_SUPPRESSED);
	cr_assert_eq(st2[1], SPOOL_QUEUED);
	cr_assert_str_eq(get_rcpt(id2, 0).response, "5.7.0 suppressed: " /* then the reason */
	                                            "550 5.1.1 <rcpt0@dead.example>: no such user");
}

Test(update_suppress, batch_and_unknown_recipients)
{
	const char *to[2] = { "a@batch.example", "b@batch.example" };
	uint8_t st[2];
	uint64_t id = submit(to, 2, st);
	struct spool_update u[3] = {
		{ .msgid = id,
		  .idx = 0,
		  .state = SPOOL_BOUNCED,
		  .attempts = 1,
		  .suppress = true,
		  .response = "550 a",
		  .response_len = 5 },
		{ .msgid = id,
		  .idx = 7,
		  .state = SPOOL_BOUNCED,
		  .attempts = 1,
		  .suppress = true,
		  .response = "550 none",
		  .response_len = 8 },
		{ .msgid = id,
		  .idx = 1,
		  .state = SPOOL_BOUNCED,
		  .attempts = 1,
		  .suppress = true,
		  .response = "550 b",
		  .response_len = 5 },
	};
	struct spool_req req = { .type = SPOOL_REQ_UPDATE, .u.update = { .v = u, .n = 3 } };
	cr_assert_eq(test_spool_call(sp, &req), SPOOL_OK);
	cr_assert_str_eq(listed("a@batch.example").reason, "550 a");
	cr_assert_str_eq(listed("b@batch.example").reason, "550 b");
	cr_assert_eq(suppress_count(), 2, "an unknown recipient lists nothing");
	struct spool_msg m = get_msg(id);
	cr_assert_eq(m.pending, 0);
	cr_assert(m.flags & MSG_F_DONE);
	cr_assert_not(body_exists(id));
	cr_assert_eq(get_rcpt(id, 0).state, SPOOL_BOUNCED);
	cr_assert_str_eq(get_rcpt(id, 1).addr, "b@batch.example");
}

Test(update_suppress, option_off_lists_nothing)
{
	opt.suppress = false;
	reopen();
	const char *to[1] = { "dead@off.example" };
	uint8_t st[1];
	uint64_t id = submit(to, 1, st);
	update(id, 0, SPOOL_BOUNCED, "550 5.1.1 unknown", true);
	struct rcpt_copy r = get_rcpt(id, 0);
	cr_assert_eq(r.state, SPOOL_BOUNCED, "the bounce itself is recorded");
	cr_assert_str_eq(r.response, "550 5.1.1 unknown");
	cr_assert_not(listed("dead@off.example").found);
	cr_assert_eq(suppress_count(), 0);
	cr_assert_eq(get_msg(id).pending, 0);
}
