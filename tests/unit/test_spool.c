/* test_spool.c - the LMDB spool (queue/spool.c, spool_record.c,
 * spool_writer.c): record encoding, submits answered through an mq, bodies
 * read back byte for byte across chunks, state updates, reopening, expiry.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <string.h>
#include <sys/uio.h>

#include "queue/spool.h"
#include "queue/spool_impl.h"
#include "tests/unit/support.h"

/* ---- records ----------------------------------------------------------- */

static void assert_bytes(const char *p, size_t n, const char *want, size_t wn, const char *what)
{
	cr_assert_eq(n, wn, "%s: length %zu, want %zu", what, n, wn);
	cr_assert(!n || !memcmp(p, want, n), "%s differs", what);
}

#define STR(s) (s), (sizeof(s) - 1)

Test(spool_record, msg_round_trip)
{
	struct spool_msg m = {
		.id = 77,
		.submit_ms = 1795749565123ull,
		.done_ms = 1795749999999ull,
		.body_len = 123456789012ull,
		.flags = MSG_F_SMTPUTF8 | MSG_F_RET_HDRS | MSG_F_DONE,
		.nrcpt = 100000,
		.pending = 99999,
	};
	m.sender = "bounce+x@example.com";
	m.sender_len = strlen(m.sender);
	m.envid = "QQ314159";
	m.envid_len = 8;
	m.source = "smtp [127.0.0.1] helo=client.example";
	m.source_len = strlen(m.source);
	size_t n = spool_msg_size(&m);
	cr_assert_eq(n, spool_msg_size(&m));
	char *buf = xmalloc(n);
	spool_msg_encode(&m, buf);
	struct spool_msg d;
	memset(&d, 0xcc, sizeof(d));
	d.id = 4242;
	cr_assert(spool_msg_decode(buf, n, &d));
	cr_assert_eq(d.id, 4242, "the id comes from the key, not the value");
	cr_assert_eq(d.submit_ms, m.submit_ms);
	cr_assert_eq(d.done_ms, m.done_ms);
	cr_assert_eq(d.body_len, m.body_len);
	cr_assert_eq(d.flags, m.flags);
	cr_assert_eq(d.nrcpt, m.nrcpt);
	cr_assert_eq(d.pending, m.pending);
	assert_bytes(d.sender, d.sender_len, m.sender, m.sender_len, "sender");
	assert_bytes(d.envid, d.envid_len, m.envid, m.envid_len, "envid");
	assert_bytes(d.source, d.source_len, m.source, m.source_len, "source");
	cr_assert(d.sender >= buf && d.source + d.source_len <= buf + n, "views into the value");

	/* Every truncation, one byte too many, and a wrong version fail. */
	for (size_t k = 0; k < n; k++)
		cr_assert_not(spool_msg_decode(buf, k, &d), "truncated to %zu decodes", k);
	char *longer = xmalloc(n + 1);
	memcpy(longer, buf, n);
	longer[n] = 'x';
	cr_assert_not(spool_msg_decode(longer, n + 1, &d));
	buf[0] = 2;
	cr_assert_not(spool_msg_decode(buf, n, &d), "unknown version");
	buf[0] = 1;
	cr_assert(spool_msg_decode(buf, n, &d));
	free(longer);
	free(buf);
}

Test(spool_record, msg_empty_strings_and_clamp)
{
	struct spool_msg m = { .sender = "", .envid = "", .source = "" };
	char small[256];
	size_t n = spool_msg_size(&m);
	cr_assert_lt(n, sizeof(small));
	spool_msg_encode(&m, small);
	struct spool_msg d;
	cr_assert(spool_msg_decode(small, n, &d));
	cr_assert_eq(d.sender_len + d.envid_len + d.source_len, 0);
	/* Over-long envid and source are clamped to 65535 bytes. */
	char *big = xmalloc(70000);
	memset(big, 'e', 70000);
	m.envid = big;
	m.envid_len = 70000;
	m.source = big;
	m.source_len = 65535;
	n = spool_msg_size(&m);
	char *buf = xmalloc(n);
	spool_msg_encode(&m, buf);
	cr_assert(spool_msg_decode(buf, n, &d));
	cr_assert_eq(d.envid_len, 65535);
	cr_assert_eq(d.source_len, 65535);
	free(buf);
	free(big);
}

Test(spool_record, msg_corrupt_lengths)
{
	struct spool_msg m = {
		.sender = "a@b", .sender_len = 3, .envid = "", .source = "s", .source_len = 1
	};
	size_t n = spool_msg_size(&m);
	char buf[256];
	spool_msg_encode(&m, buf);
	struct spool_msg d;
	cr_assert(spool_msg_decode(buf, n, &d));
	/* Flip each byte of the header in turn: lengths that no longer add
	 * up must be refused, and nothing may read past the value. */
	size_t hdr = n - 4;
	unsigned refused = 0;
	for (size_t k = 0; k < hdr; k++) {
		char copy[256];
		memcpy(copy, buf, n);
		copy[k] ^= 0x41;
		if (!spool_msg_decode(copy, n, &d)) {
			refused++;
			continue;
		}
		cr_assert_leq(d.sender_len + d.envid_len + d.source_len, 4);
	}
	cr_assert_geq(refused, 9, "version and length bytes must be checked (%u)", refused);
}

Test(spool_record, rcpt_round_trip)
{
	struct spool_rcpt r = {
		.msgid = 1,
		.idx = 2,
		.variant = 3,
		.state = SPOOL_DEFERRED,
		.notify = NOTIFY_SUCCESS | NOTIFY_DELAY,
		.attempts = 65535,
		.next_ms = 1795749565123ull,
		.last_ms = 1795749000000ull,
	};
	r.addr = "user@example.com";
	r.addr_len = strlen(r.addr);
	r.orcpt = "rfc822;user@example.com";
	r.orcpt_len = strlen(r.orcpt);
	r.response = "451 4.3.0 try again later";
	r.response_len = strlen(r.response);
	r.remote = "mx.example.com[192.0.2.1]:25";
	r.remote_len = strlen(r.remote);
	size_t n = spool_rcpt_size(&r);
	char *buf = xmalloc(n);
	spool_rcpt_encode(&r, buf);
	struct spool_rcpt d;
	memset(&d, 0xcc, sizeof(d));
	d.msgid = 10;
	d.idx = 20;
	cr_assert(spool_rcpt_decode(buf, n, &d));
	cr_assert_eq(d.msgid, 10, "msgid and idx come from the key");
	cr_assert_eq(d.idx, 20);
	cr_assert_eq(d.variant, 3);
	cr_assert_eq(d.state, SPOOL_DEFERRED);
	cr_assert_eq(d.notify, NOTIFY_SUCCESS | NOTIFY_DELAY);
	cr_assert_eq(d.attempts, 65535);
	cr_assert_eq(d.next_ms, r.next_ms);
	cr_assert_eq(d.last_ms, r.last_ms);
	assert_bytes(d.addr, d.addr_len, r.addr, r.addr_len, "addr");
	assert_bytes(d.orcpt, d.orcpt_len, r.orcpt, r.orcpt_len, "orcpt");
	assert_bytes(d.response, d.response_len, r.response, r.response_len, "response");
	assert_bytes(d.remote, d.remote_len, r.remote, r.remote_len, "remote");
	for (size_t k = 0; k < n; k++)
		cr_assert_not(spool_rcpt_decode(buf, k, &d), "truncated to %zu decodes", k);
	char *longer = xmalloc(n + 3);
	memcpy(longer, buf, n);
	cr_assert_not(spool_rcpt_decode(longer, n + 3, &d));
	buf[0] = 0;
	cr_assert_not(spool_rcpt_decode(buf, n, &d), "unknown version");
	free(longer);
	free(buf);
	/* NULL strings with zero length encode as empty. */
	struct spool_rcpt e = { .addr = "x@y", .addr_len = 3 };
	char small[256];
	spool_rcpt_encode(&e, small);
	cr_assert(spool_rcpt_decode(small, spool_rcpt_size(&e), &d));
	assert_bytes(d.addr, d.addr_len, STR("x@y"), "addr");
	cr_assert_eq(d.orcpt_len + d.response_len + d.remote_len, 0);
}

Test(spool_record, state_names)
{
	cr_assert_str_eq(spool_state_name(SPOOL_QUEUED), "queued");
	cr_assert_str_eq(spool_state_name(SPOOL_DEFERRED), "deferred");
	cr_assert_str_eq(spool_state_name(SPOOL_DELIVERED), "delivered");
	cr_assert_str_eq(spool_state_name(SPOOL_BOUNCED), "bounced");
	cr_assert_str_eq(spool_state_name(9), "unknown");
	cr_assert_not(SPOOL_STATE_FINAL(SPOOL_QUEUED));
	cr_assert_not(SPOOL_STATE_FINAL(SPOOL_DEFERRED));
	cr_assert(SPOOL_STATE_FINAL(SPOOL_DELIVERED));
	cr_assert(SPOOL_STATE_FINAL(SPOOL_BOUNCED));
}

/* ---- a real spool ------------------------------------------------------ */

static char dir[64];
static struct spool *sp;
static struct spool_reader *rd;

static void open_with(uint64_t keep_done_ms)
{
	test_tmpdir(dir, sizeof(dir), "spool");
	sp = test_spool_open(dir, keep_done_ms);
	rd = spool_reader_new(sp);
}

static void setup(void)
{
	open_with(3600000);
}

static void teardown(void)
{
	spool_reader_free(rd);
	spool_close(sp);
	test_rmdir(dir);
}

TestSuite(spool, .init = setup, .fini = teardown, .timeout = 60);

/* pattern - deterministic, non-repeating body bytes. */
static char *pattern(size_t n, unsigned seed)
{
	char *p = xmalloc(n ? n : 1);
	uint32_t x = 2463534242u ^ seed;
	for (size_t i = 0; i < n; i++) {
		x ^= x << 13;
		x ^= x >> 17;
		x ^= x << 5;
		p[i] = (char)x;
	}
	return p;
}

static void assert_body(uint64_t id, uint32_t variant, const char *want, size_t n)
{
	struct buf b = { 0 };
	buf_append(&b, "pre", 3); /* spool_get_body appends */
	cr_assert(spool_reader_begin(rd));
	cr_assert(spool_get_body(rd, id, variant, &b), "body %u of %016llx missing", variant,
	          (unsigned long long)id);
	spool_reader_end(rd);
	cr_assert_eq(buf_used(&b), 3 + n, "body length %zu, want %zu", buf_used(&b) - 3, n);
	cr_assert(!memcmp(buf_head(&b), "pre", 3));
	cr_assert(!memcmp(buf_head(&b) + 3, want, n), "body bytes differ");
	buf_free(&b);
}

/* A size that spans several body chunks whatever the page size. */
#define BIG_PIECE (3u * 4096u + 555u)

Test(spool, submit_and_read_back)
{
	size_t n = 2 * BIG_PIECE + 12345;
	char *body = pattern(n, 1);
	/* The body arrives in odd pieces, including an empty one. */
	size_t cuts[] = { 0, 1, 1000, BIG_PIECE - 7, BIG_PIECE + 100, n - 3, n };
	struct iovec iov[6];
	for (int i = 0; i < 6; i++) {
		iov[i].iov_base = body + cuts[i];
		iov[i].iov_len = cuts[i + 1] - cuts[i];
	}
	struct spool_rcpt rc[3] = {
		{ .addr = "a@one.example", .addr_len = 13, .notify = NOTIFY_NEVER },
		{ .addr = "b@two.example",
		  .addr_len = 13,
		  .orcpt = "rfc822;B@two.example",
		  .orcpt_len = 20,
		  .notify = NOTIFY_SUCCESS | NOTIFY_FAILURE },
		{ .addr = "c@one.example", .addr_len = 13, .state = SPOOL_BOUNCED, .attempts = 9 },
	};
	struct spool_req req = { .type = SPOOL_REQ_SUBMIT };
	struct spool_submit *s = &req.u.submit;
	uint64_t now = rp_now_ms();
	s->msg.id = spool_next_id(sp);
	s->msg.submit_ms = now;
	s->msg.body_len = n;
	s->msg.flags = MSG_F_8BIT | MSG_F_RET_FULL;
	s->msg.nrcpt = 3;
	s->msg.pending = 1; /* the writer sets pending itself */
	s->msg.done_ms = 5;
	s->msg.sender = "sender@example.org";
	s->msg.sender_len = 18;
	s->msg.envid = "ENV1";
	s->msg.envid_len = 4;
	s->msg.source = "smtp [127.0.0.1]";
	s->msg.source_len = 16;
	s->rcpts = rc;
	s->body = iov;
	s->nbody = 6;
	cr_assert_eq(test_spool_call(sp, &req), SPOOL_OK);
	uint64_t id = s->msg.id;

	struct spool_msg m;
	cr_assert(spool_reader_begin(rd));
	cr_assert(spool_get_msg(rd, id, &m));
	cr_assert_eq(m.id, id);
	cr_assert_eq(m.submit_ms, now);
	cr_assert_eq(m.done_ms, 0);
	cr_assert_eq(m.body_len, n);
	cr_assert_eq(m.flags, MSG_F_8BIT | MSG_F_RET_FULL);
	cr_assert_eq(m.nrcpt, 3);
	cr_assert_eq(m.pending, 3);
	assert_bytes(m.sender, m.sender_len, STR("sender@example.org"), "sender");
	assert_bytes(m.envid, m.envid_len, STR("ENV1"), "envid");
	assert_bytes(m.source, m.source_len, STR("smtp [127.0.0.1]"), "source");
	cr_assert_not(spool_get_msg(rd, id + 1, &m), "no such message");
	for (uint32_t i = 0; i < 3; i++) {
		struct spool_rcpt r;
		cr_assert(spool_get_rcpt(rd, id, i, &r));
		cr_assert_eq(r.msgid, id);
		cr_assert_eq(r.idx, i);
		cr_assert_eq(r.state, SPOOL_QUEUED,
		             "a new recipient is queued whatever was passed");
		cr_assert_eq(r.attempts, 0);
		cr_assert_eq(r.notify, rc[i].notify);
		cr_assert_eq(r.variant, 0);
		assert_bytes(r.addr, r.addr_len, rc[i].addr, rc[i].addr_len, "addr");
		assert_bytes(r.orcpt, r.orcpt_len, rc[i].orcpt, rc[i].orcpt_len, "orcpt");
	}
	struct spool_rcpt r;
	cr_assert_not(spool_get_rcpt(rd, id, 3, &r));
	spool_reader_end(rd);
	assert_body(id, 0, body, n);
	/* No variant 1 for this message. */
	struct buf b = { 0 };
	cr_assert(spool_reader_begin(rd));
	cr_assert_not(spool_get_body(rd, id, 1, &b));
	cr_assert_not(spool_get_body(rd, id + 1, 0, &b));
	spool_reader_end(rd);
	cr_assert_eq(buf_used(&b), 0);
	free(body);
}

Test(spool, body_sizes_around_the_chunk)
{
	/* Around the leaf chunk, twice it, one page, and many pages. */
	size_t in = sp->inline_max, pg = sp->page_max;
	const size_t sizes[] = { 0,          1,      in - 1, in,     in + 1,      2 * in,
		                 2 * in + 1, pg - 1, pg,     pg + 1, 3 * pg + 17, 100000 };
	enum { N = sizeof(sizes) / sizeof(sizes[0]) };
	cr_assert_gt(in, 900, "leaf chunks are about a quarter page");
	cr_assert_gt(pg, 4 * in, "an overflow chunk is a page");
	uint64_t ids[N];
	char *bodies[N];
	for (int i = 0; i < N; i++) {
		bodies[i] = pattern(sizes[i], (unsigned)i + 10);
		ids[i] = test_submit(sp, "s@example.org", "example.net", 1, bodies[i], sizes[i],
		                     rp_now_ms());
		if (i)
			cr_assert_gt(ids[i], ids[i - 1], "ids increase");
	}
	/* Read back after all writes: neighbours must not bleed into each other. */
	for (int i = 0; i < N; i++) {
		assert_body(ids[i], 0, bodies[i], sizes[i]);
		free(bodies[i]);
	}
	/* Every chunk fits a leaf node or exactly one overflow page; an empty
	 * body has one empty chunk. */
	MDB_txn *txn;
	MDB_cursor *cur;
	cr_assert_eq(mdb_txn_begin(sp->env, NULL, MDB_RDONLY, &txn), 0);
	cr_assert_eq(mdb_cursor_open(txn, sp->dbi_body, &cur), 0);
	for (int i = 0; i < N; i++) {
		unsigned char kb[16];
		spool_key_body(kb, ids[i], 0, 0);
		MDB_val k = { .mv_size = 16, .mv_data = kb }, v;
		size_t chunks = 0, total = 0, want = 0;
		for (size_t left = sizes[i]; left || !want;) {
			size_t c = spool_body_chunk(sp, left);
			left -= c;
			want++;
		}
		int rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
		for (; rc == 0 && !memcmp(k.mv_data, kb, 12);
		     rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
			cr_assert_eq(rp_get_be32((unsigned char *)k.mv_data + 12), chunks);
			cr_assert(v.mv_size <= in || v.mv_size == pg, "chunk of %zu bytes",
			          v.mv_size);
			total += v.mv_size;
			chunks++;
		}
		cr_assert_eq(chunks, want, "size %zu: %zu chunks, want %zu", sizes[i], chunks,
		             want);
		cr_assert_eq(total, sizes[i]);
	}
	mdb_cursor_close(cur);
	mdb_txn_abort(txn);
}

Test(spool, chunk_policy)
{
	size_t in = sp->inline_max, pg = sp->page_max;
	cr_assert_eq(spool_body_chunk(sp, 0), 0);
	cr_assert_eq(spool_body_chunk(sp, in), in);
	cr_assert_eq(spool_body_chunk(sp, in + 1), in, "leaf chunks below a page");
	cr_assert_eq(spool_body_chunk(sp, pg - 1), in);
	cr_assert_eq(spool_body_chunk(sp, pg), pg, "a whole page");
	cr_assert_eq(spool_body_chunk(sp, 10 * pg + 5), pg, "never more than a page");
	/* Four leaf chunks fit one page: 16-byte header, and per entry a
	 * 2-byte index, an 8-byte node header and the 16-byte key. */
	cr_assert_leq(16 + 4 * (2 + 8 + 16 + in), sp->page_size);
	cr_assert_gt(16 + 4 * (2 + 8 + 16 + in + 2), sp->page_size - 8);
	/* One overflow page really holds page_max bytes: LMDB's OVPAGES. */
	cr_assert_eq((16 + pg - 1) / sp->page_size + 1, 1);
	cr_assert_eq((16 + pg) / sp->page_size + 1, 2);
}

Test(spool, variants)
{
	static const char shared[] = "shared body\r\n";
	char *v2 = pattern(BIG_PIECE + 99, 7);
	struct iovec body = { .iov_base = (void *)shared, .iov_len = sizeof(shared) - 1 };
	struct iovec vars[2] = {
		{ .iov_base = (void *)"variant one\r\n", .iov_len = 13 },
		{ .iov_base = v2, .iov_len = BIG_PIECE + 99 },
	};
	struct spool_rcpt rc[3] = {
		{ .addr = "a@x.example", .addr_len = 11, .variant = 1 },
		{ .addr = "b@x.example", .addr_len = 11, .variant = 2 },
		{ .addr = "c@x.example", .addr_len = 11, .variant = 0 },
	};
	struct spool_req req = { .type = SPOOL_REQ_SUBMIT };
	struct spool_submit *s = &req.u.submit;
	s->msg.id = spool_next_id(sp);
	s->msg.flags = MSG_F_VARIANTS;
	s->msg.nrcpt = 3;
	s->msg.body_len = sizeof(shared) - 1;
	s->msg.sender = "";
	s->msg.envid = "";
	s->msg.source = "";
	s->rcpts = rc;
	s->body = &body;
	s->nbody = 1;
	s->variants = vars;
	s->nvariants = 2;
	cr_assert_eq(test_spool_call(sp, &req), SPOOL_OK);
	assert_body(s->msg.id, 0, shared, sizeof(shared) - 1);
	assert_body(s->msg.id, 1, "variant one\r\n", 13);
	assert_body(s->msg.id, 2, v2, BIG_PIECE + 99);
	cr_assert(spool_reader_begin(rd));
	struct spool_rcpt r;
	cr_assert(spool_get_rcpt(rd, s->msg.id, 1, &r));
	cr_assert_eq(r.variant, 2);
	struct spool_msg m;
	cr_assert(spool_get_msg(rd, s->msg.id, &m));
	cr_assert_eq(m.sender_len, 0, "the null sender is stored as \"\"");
	spool_reader_end(rd);
	free(v2);
}

struct visit {
	uint32_t idx[16];
	unsigned n;
	unsigned stop_after;
};

static bool visit_rcpt(const struct spool_rcpt *rc, void *arg)
{
	struct visit *v = arg;
	v->idx[v->n++] = rc->idx;
	return v->n != v->stop_after;
}

Test(spool, foreach_rcpt)
{
	uint64_t a = test_submit(sp, "s@x", "a.example", 12, "x\r\n", 3, rp_now_ms());
	uint64_t b = test_submit(sp, "s@x", "b.example", 2, "y\r\n", 3, rp_now_ms());
	struct visit v = { 0 };
	cr_assert(spool_reader_begin(rd));
	cr_assert_eq(spool_foreach_rcpt(rd, a, visit_rcpt, &v), 12);
	for (unsigned i = 0; i < 12; i++)
		cr_assert_eq(v.idx[i], i, "index order (10 after 9, not after 1)");
	v = (struct visit){ .stop_after = 3 };
	cr_assert_eq(spool_foreach_rcpt(rd, a, visit_rcpt, &v), 3, "stops when fn says so");
	v = (struct visit){ 0 };
	cr_assert_eq(spool_foreach_rcpt(rd, b, visit_rcpt, &v), 2);
	cr_assert_eq(spool_foreach_rcpt(rd, b + 1000, visit_rcpt, &v), 0);
	spool_reader_end(rd);
}

static struct spool_rcpt get_rcpt(uint64_t id, uint32_t idx, char *resp, size_t resplen)
{
	struct spool_rcpt r;
	cr_assert(spool_reader_begin(rd));
	cr_assert(spool_get_rcpt(rd, id, idx, &r), "recipient %u missing", idx);
	snprintf(resp, resplen, "%.*s", (int)r.response_len, r.response);
	r.response = NULL;
	r.addr = r.orcpt = r.remote = NULL;
	spool_reader_end(rd);
	return r;
}

static struct spool_msg get_msg(uint64_t id)
{
	struct spool_msg m;
	cr_assert(spool_reader_begin(rd));
	cr_assert(spool_get_msg(rd, id, &m), "message missing");
	m.sender = m.envid = m.source = NULL;
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

Test(spool, updates_and_done)
{
	uint64_t t0 = rp_now_ms();
	uint64_t id = test_submit(sp, "s@x.example", "y.example", 3, "hello\r\n", 7, t0);
	char resp[1100];

	test_update(sp, id, 0, SPOOL_DEFERRED, 1, t0 + 60000, "451 4.3.0 later");
	struct spool_rcpt r = get_rcpt(id, 0, resp, sizeof(resp));
	cr_assert_eq(r.state, SPOOL_DEFERRED);
	cr_assert_eq(r.attempts, 1);
	cr_assert_eq(r.next_ms, t0 + 60000);
	cr_assert_geq(r.last_ms, t0);
	cr_assert_str_eq(resp, "451 4.3.0 later");
	cr_assert_eq(get_msg(id).pending, 3, "deferred is not final");

	test_update(sp, id, 0, SPOOL_DELIVERED, 2, 0, "250 2.0.0 ok");
	r = get_rcpt(id, 0, resp, sizeof(resp));
	cr_assert_eq(r.state, SPOOL_DELIVERED);
	cr_assert_eq(r.attempts, 2);
	cr_assert_str_eq(resp, "250 2.0.0 ok");
	cr_assert_eq(get_msg(id).pending, 2);

	/* A final state is never undone, and does not count twice. */
	test_update(sp, id, 0, SPOOL_DEFERRED, 3, t0, "451 late report");
	test_update(sp, id, 0, SPOOL_BOUNCED, 3, 0, "550 late report");
	r = get_rcpt(id, 0, resp, sizeof(resp));
	cr_assert_eq(r.state, SPOOL_DELIVERED);
	cr_assert_str_eq(resp, "250 2.0.0 ok");
	cr_assert_eq(get_msg(id).pending, 2);

	/* Long responses are cut to 1000 bytes. */
	char longresp[3000];
	memset(longresp, 'r', sizeof(longresp) - 1);
	longresp[sizeof(longresp) - 1] = '\0';
	test_update(sp, id, 1, SPOOL_BOUNCED, 1, 0, longresp);
	r = get_rcpt(id, 1, resp, sizeof(resp));
	cr_assert_eq(r.state, SPOOL_BOUNCED);
	cr_assert_eq(strlen(resp), 1000);
	struct spool_msg m = get_msg(id);
	cr_assert_eq(m.pending, 1);
	cr_assert_eq(m.flags & MSG_F_DONE, 0);
	cr_assert_eq(m.done_ms, 0);
	cr_assert(body_exists(id), "the body stays while a recipient is pending");

	test_update(sp, id, 2, SPOOL_DELIVERED, 1, 0, "250 ok");
	m = get_msg(id);
	cr_assert_eq(m.pending, 0);
	cr_assert(m.flags & MSG_F_DONE);
	cr_assert_geq(m.done_ms, t0);
	cr_assert_not(body_exists(id), "the body goes with the last final recipient");
	/* The status stays readable for keep_done. */
	cr_assert_eq(get_rcpt(id, 2, resp, sizeof(resp)).state, SPOOL_DELIVERED);
	cr_assert_eq(get_rcpt(id, 1, resp, sizeof(resp)).state, SPOOL_BOUNCED);

	/* Updates for unknown messages or recipients are ignored. */
	test_update(sp, id + 999, 0, SPOOL_DELIVERED, 1, 0, "250");
	test_update(sp, id, 77, SPOOL_DELIVERED, 1, 0, "250");
	cr_assert_eq(get_msg(id).pending, 0);
}

Test(spool, batch_update_in_one_request)
{
	uint64_t a = test_submit(sp, "s@x", "y.example", 2, "a\r\n", 3, rp_now_ms());
	uint64_t b = test_submit(sp, "s@x", "y.example", 1, "b\r\n", 3, rp_now_ms());
	struct spool_update u[3] = {
		{ .msgid = a, .idx = 0, .state = SPOOL_DELIVERED, .attempts = 1 },
		{ .msgid = a, .idx = 1, .state = SPOOL_DEFERRED, .attempts = 1, .next_ms = 7 },
		{ .msgid = b, .idx = 0, .state = SPOOL_BOUNCED, .attempts = 1 },
	};
	struct spool_req req = { .type = SPOOL_REQ_UPDATE, .u.update = { .v = u, .n = 3 } };
	cr_assert_eq(test_spool_call(sp, &req), SPOOL_OK);
	char resp[64];
	cr_assert_eq(get_rcpt(a, 0, resp, sizeof(resp)).state, SPOOL_DELIVERED);
	cr_assert_eq(get_rcpt(a, 1, resp, sizeof(resp)).next_ms, 7);
	cr_assert_eq(get_msg(a).pending, 1);
	cr_assert_eq(get_msg(b).pending, 0);
	cr_assert(body_exists(a));
	cr_assert_not(body_exists(b));
}

Test(spool, sync_and_usage)
{
	struct spool_usage u0, u1;
	spool_usage(sp, &u0);
	cr_assert_eq(u0.map_size, 64ull << 20);
	cr_assert(spool_accepting(sp));
	test_submit(sp, "s@x", "y.example", 1, "a\r\n", 3, rp_now_ms());
	test_spool_sync(sp);
	spool_usage(sp, &u1);
	cr_assert_geq(u1.commits, u0.commits + 1);
	cr_assert_geq(u1.syncs, u0.syncs + 2, "a submit and a sync are both synced");
}

struct scan {
	uint64_t ids[16];
	uint32_t idx[16];
	unsigned n;
};

static void scan_fn(const struct spool_msg *m, const struct spool_rcpt *rc, void *arg)
{
	struct scan *s = arg;
	cr_assert_lt(s->n, 16);
	cr_assert_eq(m->id, rc->msgid, "the envelope belongs to the recipient");
	cr_assert_eq(m->nrcpt, 3);
	cr_assert(!SPOOL_STATE_FINAL(rc->state));
	s->ids[s->n] = rc->msgid;
	s->idx[s->n] = rc->idx;
	s->n++;
}

Test(spool, reopen_scan_pending_and_ids)
{
	uint64_t t0 = rp_now_ms();
	uint64_t a = test_submit(sp, "s@x", "y.example", 3, "a\r\n", 3, t0);
	uint64_t b = test_submit(sp, "s@x", "y.example", 3, "b\r\n", 3, t0);
	uint64_t c = test_submit(sp, "s@x", "y.example", 3, "c\r\n", 3, t0);
	test_update(sp, a, 1, SPOOL_DELIVERED, 1, 0, "250");
	test_update(sp, b, 0, SPOOL_DEFERRED, 1, t0 + 1000, "451");
	test_update(sp, b, 2, SPOOL_BOUNCED, 1, 0, "550");
	for (uint32_t i = 0; i < 3; i++)
		test_update(sp, c, i, SPOOL_DELIVERED, 1, 0, "250");

	spool_reader_free(rd);
	spool_close(sp);
	sp = test_spool_open(dir, 3600000);
	rd = spool_reader_new(sp);

	struct scan s = { 0 };
	cr_assert(spool_reader_begin(rd));
	cr_assert_eq(spool_scan_pending(rd, scan_fn, &s), 4);
	spool_reader_end(rd);
	static const uint32_t want_idx[4] = { 0, 2, 0, 1 };
	uint64_t want_ids[4] = { a, a, b, b };
	cr_assert_eq(s.n, 4);
	for (unsigned i = 0; i < 4; i++) {
		cr_assert_eq(s.ids[i], want_ids[i], "entry %u", i);
		cr_assert_eq(s.idx[i], want_idx[i], "entry %u", i);
	}
	char resp[64];
	struct spool_rcpt r = get_rcpt(b, 0, resp, sizeof(resp));
	cr_assert_eq(r.state, SPOOL_DEFERRED);
	cr_assert_eq(r.next_ms, t0 + 1000);
	cr_assert_str_eq(resp, "451");
	uint64_t d = spool_next_id(sp);
	cr_assert_gt(d, c, "ids keep increasing after a reopen");
	cr_assert_gt(spool_next_id(sp), d);
}

Test(spool, ids_never_go_back)
{
	/* A message stamped in the future (clock stepped back since): the next
	 * ids continue after it. */
	uint64_t future = (rp_now_ms() + 3600000) << 16;
	struct spool_rcpt rc = { .addr = "a@b", .addr_len = 3 };
	struct iovec body = { .iov_base = (void *)"x", .iov_len = 1 };
	struct spool_req req = { .type = SPOOL_REQ_SUBMIT };
	req.u.submit.msg = (struct spool_msg){
		.id = future, .nrcpt = 1, .body_len = 1, .sender = "", .envid = "", .source = ""
	};
	req.u.submit.rcpts = &rc;
	req.u.submit.body = &body;
	req.u.submit.nbody = 1;
	cr_assert_eq(test_spool_call(sp, &req), SPOOL_OK);
	/* The same id twice is refused. */
	struct spool_req again = req;
	cr_assert_neq(test_spool_call(sp, &again), SPOOL_OK);
	spool_reader_free(rd);
	spool_close(sp);
	sp = test_spool_open(dir, 3600000);
	rd = spool_reader_new(sp);
	cr_assert_eq(spool_next_id(sp), future + 1);
	uint64_t next = test_submit(sp, "s@x", "y.example", 1, "z", 1, rp_now_ms());
	cr_assert_gt(next, future);
	/* An id below the largest stored one cannot be appended; it still goes in. */
	struct spool_req low = req;
	low.u.submit.msg.id = rp_now_ms() << 16;
	cr_assert_lt(low.u.submit.msg.id, future);
	cr_assert_eq(test_spool_call(sp, &low), SPOOL_OK);
	assert_body(future, 0, "x", 1);
	assert_body(next, 0, "z", 1);
	assert_body(low.u.submit.msg.id, 0, "x", 1);
}

Test(spool, full_map_fails_alone)
{
	spool_reader_free(rd);
	spool_close(sp);
	char err[256];
	struct spool_options o = { .dir = dir, .max_size = 10ull << 20, .keep_done_ms = 1000 };
	sp = spool_open(&o, err, sizeof(err));
	cr_assert_not_null(sp, "%s", err);
	rd = spool_reader_new(sp);
	size_t n = 12u << 20;
	char *big = pattern(n, 3);
	struct spool_rcpt rc = { .addr = "a@b", .addr_len = 3 };
	struct iovec body = { .iov_base = big, .iov_len = n };
	struct spool_req req = { .type = SPOOL_REQ_SUBMIT };
	req.u.submit.msg = (struct spool_msg){ .id = spool_next_id(sp),
		                               .nrcpt = 1,
		                               .body_len = n,
		                               .sender = "",
		                               .envid = "",
		                               .source = "" };
	req.u.submit.rcpts = &rc;
	req.u.submit.body = &body;
	req.u.submit.nbody = 1;
	cr_assert_eq(test_spool_call(sp, &req), SPOOL_EFULL);
	cr_assert(spool_reader_begin(rd));
	struct spool_msg m;
	cr_assert_not(spool_get_msg(rd, req.u.submit.msg.id, &m), "nothing of it is stored");
	spool_reader_end(rd);
	/* A small message still goes in. */
	uint64_t id = test_submit(sp, "s@x", "y.example", 1, "ok\r\n", 4, rp_now_ms());
	assert_body(id, 0, "ok\r\n", 4);
	free(big);
}

Test(spool, close_answers_everything_promptly)
{
	spool_reader_free(rd);
	rd = NULL;
	/* Requests without a reply_to are freed by the writer; one that
	 * arrives just before the stop must neither be lost nor delay it. */
	for (int i = 0; i < 3; i++) {
		struct spool_req *req = xcalloc(1, sizeof(*req));
		req->type = SPOOL_REQ_UPDATE; /* empty: nothing to write or sync */
		spool_request(sp, req);
		uint64_t start = rp_mono_ms();
		spool_close(sp);
		sp = NULL;
		/* The writer's idle wait is 1 s; closing must not sit it out. */
		cr_assert_lt(rp_mono_ms() - start, 800, "spool_close took %llu ms",
		             (unsigned long long)(rp_mono_ms() - start));
		sp = test_spool_open(dir, 3600000);
	}
}

struct submitter {
	struct spool *sp;
	uint64_t ids[40];
};

static void *submit_many(void *arg)
{
	struct submitter *s = arg;
	for (int i = 0; i < 40; i++) {
		char body[64];
		int n = snprintf(body, sizeof(body), "body %016llx\r\n", (unsigned long long)i);
		s->ids[i] = test_submit(s->sp, "s@x", "y.example", 2, body, (size_t)n, rp_now_ms());
	}
	return NULL;
}

Test(spool, concurrent_submits)
{
	struct submitter s[4];
	pthread_t t[4];
	for (int i = 0; i < 4; i++) {
		s[i].sp = sp;
		cr_assert_eq(pthread_create(&t[i], NULL, submit_many, &s[i]), 0);
	}
	for (int i = 0; i < 4; i++)
		pthread_join(t[i], NULL);
	for (int i = 0; i < 4; i++) {
		for (int k = 0; k < 40; k++) {
			char body[64];
			int n =
			    snprintf(body, sizeof(body), "body %016llx\r\n", (unsigned long long)k);
			assert_body(s[i].ids[k], 0, body, (size_t)n);
			for (int j = 0; j < i; j++)
				for (int l = 0; l < 40; l++)
					cr_assert_neq(s[i].ids[k], s[j].ids[l], "duplicate id");
		}
	}
}

Test(spool, open_errors)
{
	char err[512] = "", path[128];
	/* A directory under a regular file cannot be made. */
	snprintf(path, sizeof(path), "%s/file", dir);
	FILE *f = fopen(path, "w");
	cr_assert_not_null(f);
	fclose(f);
	snprintf(path, sizeof(path), "%s/file/spool", dir);
	struct spool_options o = { .dir = path, .max_size = 64ull << 20 };
	cr_assert_null(spool_open(&o, err, sizeof(err)));
	cr_assert(strstr(err, path) == err, "'%s' must name %s", err, path);
	/* A spool written by another format version is refused. */
	spool_reader_free(rd);
	rd = NULL;
	spool_close(sp);
	sp = NULL;
	MDB_env *env;
	MDB_txn *txn;
	MDB_dbi meta;
	uint32_t v = 99;
	cr_assert_eq(mdb_env_create(&env), 0);
	cr_assert_eq(mdb_env_set_maxdbs(env, 16), 0);
	cr_assert_eq(mdb_env_set_mapsize(env, 64ull << 20), 0);
	cr_assert_eq(mdb_env_open(env, dir, 0, 0640), 0);
	cr_assert_eq(mdb_txn_begin(env, NULL, 0, &txn), 0);
	cr_assert_eq(mdb_dbi_open(txn, "meta", 0, &meta), 0);
	MDB_val k = { .mv_size = 7, .mv_data = "version" }, val = { .mv_size = 4, .mv_data = &v };
	cr_assert_eq(mdb_put(txn, meta, &k, &val, 0), 0);
	cr_assert_eq(mdb_txn_commit(txn), 0);
	mdb_env_close(env);
	o.dir = dir;
	err[0] = '\0';
	cr_assert_null(spool_open(&o, err, sizeof(err)));
	cr_assert(strstr(err, "spool format 99"), "%s", err);
}

/* A separate suite: these open their own spool. */
TestSuite(spool_expiry, .fini = teardown, .timeout = 60);

Test(spool_expiry, keep_done_zero_forgets_at_once)
{
	open_with(0);
	uint64_t id = test_submit(sp, "s@x", "y.example", 2, "a\r\n", 3, rp_now_ms());
	test_update(sp, id, 0, SPOOL_DELIVERED, 1, 0, "250");
	cr_assert(body_exists(id));
	test_update(sp, id, 1, SPOOL_BOUNCED, 1, 0, "550");
	struct spool_msg m;
	struct spool_rcpt r;
	cr_assert(spool_reader_begin(rd));
	cr_assert_not(spool_get_msg(rd, id, &m));
	cr_assert_not(spool_get_rcpt(rd, id, 0, &r));
	cr_assert_not(spool_get_rcpt(rd, id, 1, &r));
	spool_reader_end(rd);
	cr_assert_not(body_exists(id));
}

Test(spool_expiry, keep_done_expires)
{
	open_with(1);
	uint64_t keep = test_submit(sp, "s@x", "y.example", 1, "keep\r\n", 6, rp_now_ms());
	uint64_t id = test_submit(sp, "s@x", "y.example", 1, "a\r\n", 3, rp_now_ms());
	test_update(sp, id, 0, SPOOL_DELIVERED, 1, 0, "250");
	/* Expiry runs in the writer's maintenance pass, about once a second. */
	uint64_t deadline = rp_mono_ms() + 10000;
	bool gone = false;
	while (!gone && rp_mono_ms() < deadline) {
		struct spool_msg m;
		cr_assert(spool_reader_begin(rd));
		gone = !spool_get_msg(rd, id, &m);
		spool_reader_end(rd);
		if (!gone)
			usleep(50000);
	}
	cr_assert(gone, "a finished message must be forgotten after keep_done");
	struct spool_rcpt r;
	cr_assert(spool_reader_begin(rd));
	cr_assert_not(spool_get_rcpt(rd, id, 0, &r));
	struct spool_msg m;
	cr_assert(spool_get_msg(rd, keep, &m), "a pending message is kept");
	spool_reader_end(rd);
	assert_body(keep, 0, "keep\r\n", 6);
}
