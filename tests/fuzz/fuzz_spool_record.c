/* fuzz_spool_record.c - spool record decoding (queue/spool_record.c,
 * queue/spool_mbox.c): message envelopes, recipient records and bounce
 * mailbox entries as read back from LMDB, where a damaged or old-format
 * value must be refused, never trusted.
 *
 * Input: a selector byte, then the stored value. Oracles: every decoded
 * string lies inside the value; a decoded record encodes to a value of
 * its size that decodes to the same fields.
 */
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "queue/spool.h"
#include "queue/spool_impl.h"

static void inside(const char *v, size_t n, const char *p, size_t len)
{
	fuzz_check(len == 0 || (p >= v && p + len <= v + n));
}

static bool same(const char *a, size_t al, const char *b, size_t bl)
{
	return al == bl && (!al || !memcmp(a, b, al));
}

static void msg(const char *v, size_t n)
{
	struct spool_msg m = { .id = 42 }, back = { .id = 42 };
	if (!spool_msg_decode(v, n, &m))
		return;
	fuzz_check(m.id == 42);
	inside(v, n, m.sender, m.sender_len);
	inside(v, n, m.envid, m.envid_len);
	inside(v, n, m.source, m.source_len);
	inside(v, n, m.submitter, m.submitter_len);
	size_t sz = spool_msg_size(&m);
	char *enc = malloc(sz);
	spool_msg_encode(&m, enc);
	fuzz_check(spool_msg_decode(enc, sz, &back));
	fuzz_check(back.flags == m.flags && back.nrcpt == m.nrcpt && back.pending == m.pending &&
	           back.submit_ms == m.submit_ms && back.done_ms == m.done_ms &&
	           back.body_len == m.body_len);
	fuzz_check(same(back.sender, back.sender_len, m.sender, m.sender_len));
	fuzz_check(same(back.envid, back.envid_len, m.envid, m.envid_len));
	fuzz_check(same(back.source, back.source_len, m.source, m.source_len));
	fuzz_check(same(back.submitter, back.submitter_len, m.submitter, m.submitter_len));
	free(enc);
}

static void rcpt(const char *v, size_t n)
{
	struct spool_rcpt r = { .msgid = 7, .idx = 3 }, back = { .msgid = 7, .idx = 3 };
	if (!spool_rcpt_decode(v, n, &r))
		return;
	spool_state_name(r.state);
	inside(v, n, r.addr, r.addr_len);
	inside(v, n, r.orcpt, r.orcpt_len);
	inside(v, n, r.response, r.response_len);
	inside(v, n, r.remote, r.remote_len);
	size_t sz = spool_rcpt_size(&r);
	char *enc = malloc(sz);
	spool_rcpt_encode(&r, enc);
	fuzz_check(spool_rcpt_decode(enc, sz, &back));
	fuzz_check(back.variant == r.variant && back.state == r.state && back.notify == r.notify &&
	           back.attempts == r.attempts && back.next_ms == r.next_ms &&
	           back.last_ms == r.last_ms);
	fuzz_check(same(back.addr, back.addr_len, r.addr, r.addr_len));
	fuzz_check(same(back.orcpt, back.orcpt_len, r.orcpt, r.orcpt_len));
	fuzz_check(same(back.response, back.response_len, r.response, r.response_len));
	fuzz_check(same(back.remote, back.remote_len, r.remote, r.remote_len));
	free(enc);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!size)
		return 0;
	uint8_t which = data[0] % 3;
	char *v = fuzz_copy(data + 1, size - 1);
	size_t n = size - 1;
	if (which == 0) {
		msg(v, n);
	} else if (which == 1) {
		rcpt(v, n);
	} else {
		struct spool_mbox_entry e;
		if (spool_mbox_decode(v, n, &e))
			inside(v, n, e.data, e.len);
	}
	free(v);
	return 0;
}
