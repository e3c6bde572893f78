/* fuzz_smtp_data.c - message content on the wire (relay/smtp_data.c): the
 * DATA receiver (dot-unstuffing, the end-of-data state machine, bare LF
 * and lone CR normalisation, size and line limits) fed in random chunk
 * splits, the BDAT content checks likewise, and dot-stuffing on send.
 *
 * Input: a byte seeding the chunk sizes, a byte choosing the size limit,
 * then the bytes that follow the DATA command. Oracles:
 * - the chunks do not matter: the content (unless too big), flags and
 *   end position are those of one call with every byte;
 * - the end of data is only ever CRLF "." CRLF (or "." CRLF first);
 * - what is stored has CRLF line ends only (no bare CR or LF);
 * - dot-stuffing what is stored and receiving it again gives it back,
 *   and no lone "." line but the terminator is on the wire, whatever
 *   a next hop takes for a line end (SMTP smuggling);
 * - BDAT's flags and line state do not depend on the chunks either.
 */
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "relay/smtp_data.h"

struct rx_result {
	struct buf msg;
	unsigned flags;
	size_t used; /* bytes consumed through the end of data, or all */
	bool done;
};

static void receive(const char *p, size_t n, uint64_t max, uint32_t seed, struct rx_result *r)
{
	struct smtp_data_rx rx;
	smtp_data_rx_init(&rx, max, 1000);
	memset(r, 0, sizeof(*r));
	size_t off = 0;
	while (off < n && !r->done) {
		size_t k = n - off;
		if (seed) {
			seed = seed * 1103515245u + 12345u;
			k = RP_MIN(k, 1 + (size_t)(seed >> 16) % 24);
		}
		/* Each chunk in its own allocation: a read past it is caught. */
		char *c = fuzz_copy(p + off, k);
		size_t used = smtp_data_rx_feed(&rx, c, k, &r->msg, &r->done);
		free(c);
		fuzz_check(used <= k);
		fuzz_check(r->done || used == k);
		off += used;
	}
	r->used = off;
	r->flags = rx.flags;
}

static void check_crlf(const struct buf *b)
{
	const char *p = buf_head(b);
	size_t n = buf_used(b);
	for (size_t i = 0; i < n; i++) {
		if (p[i] == '\r')
			fuzz_check(i + 1 < n && p[i + 1] == '\n');
		if (p[i] == '\n')
			fuzz_check(i > 0 && p[i - 1] == '\r');
	}
	fuzz_check(n == 0 || (n >= 2 && p[n - 2] == '\r' && p[n - 1] == '\n'));
}

/* no_smuggle - in a stuffed message, a lone "." between line ends of any
 * kind (CR or LF, as a lax next hop may read them) is only the final
 * terminator. */
static void no_smuggle(const struct buf *wire)
{
	const char *p = buf_head(wire);
	size_t n = buf_used(wire);
	for (size_t i = 0; i + 1 < n; i++) {
		bool start = i == 0 || p[i - 1] == '\r' || p[i - 1] == '\n';
		if (p[i] == '.' && start && (p[i + 1] == '\r' || p[i + 1] == '\n'))
			fuzz_check(i + 3 == n);
	}
}

static void bdat(const char *p, size_t n, uint32_t seed)
{
	struct smtp_chunk_state one, split;
	smtp_chunk_init(&one);
	smtp_chunk_init(&split);
	char *all = fuzz_copy(p, n);
	smtp_chunk_check(&one, all, n, 1000);
	free(all);
	size_t off = 0;
	while (off < n) {
		seed = seed * 1103515245u + 12345u;
		size_t k = RP_MIN(n - off, 1 + (size_t)(seed >> 16) % 24);
		char *c = fuzz_copy(p + off, k);
		smtp_chunk_check(&split, c, k, 1000);
		free(c);
		off += k;
	}
	fuzz_check(one.flags == split.flags);
	fuzz_check(one.line_len == split.line_len && one.last_cr == split.last_cr);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_in in = { data, size };
	uint32_t seed = fuzz_u8(&in) + 1u;
	uint64_t max = fuzz_u8(&in) < 32 ? 64 : 1u << 20; /* sometimes tiny: TOO_BIG */
	const char *p = (const char *)in.p;
	size_t n = in.n;

	struct rx_result whole, split;
	receive(p, n, max, 0, &whole);
	receive(p, n, max, seed, &split);
	fuzz_check(whole.done == split.done && whole.used == split.used);
	fuzz_check(whole.flags == split.flags);
	if (!(whole.flags & SMTP_DATA_TOO_BIG)) { /* else the content is refused, cut anywhere */
		fuzz_check(buf_used(&whole.msg) == buf_used(&split.msg));
		fuzz_check(
		    !buf_used(&whole.msg) ||
		    !memcmp(buf_head(&whole.msg), buf_head(&split.msg), buf_used(&whole.msg)));
	}

	if (whole.done) {
		/* Only CRLF "." CRLF ends the content (DATA itself ended a line). */
		size_t u = whole.used;
		fuzz_check(u >= 3 && !memcmp(p + u - 3, ".\r\n", 3));
		fuzz_check(u == 3 || (p[u - 5] == '\r' && p[u - 4] == '\n'));
		if (!(whole.flags & SMTP_DATA_TOO_BIG)) {
			check_crlf(&whole.msg);
			/* Stuffed for the next hop and received again: the same. */
			struct buf wire = { 0 };
			struct rx_result again;
			smtp_dot_stuff(buf_head(&whole.msg), buf_used(&whole.msg), &wire);
			no_smuggle(&wire);
			receive(buf_head(&wire), buf_used(&wire), 1u << 30, seed, &again);
			fuzz_check(again.done && again.used == buf_used(&wire));
			fuzz_check(buf_used(&again.msg) == buf_used(&whole.msg));
			fuzz_check(!buf_used(&whole.msg) ||
			           !memcmp(buf_head(&again.msg), buf_head(&whole.msg),
			                   buf_used(&whole.msg)));
			buf_free(&wire);
			buf_free(&again.msg);
		}
	}
	buf_free(&whole.msg);
	buf_free(&split.msg);

	/* Any bytes as BDAT content; and as a body to stuff (it must end in
	 * exactly one terminator whatever it holds). */
	bdat(p, n, seed);
	struct buf wire = { 0 };
	smtp_dot_stuff(p, n, &wire);
	struct rx_result back;
	receive(buf_head(&wire), buf_used(&wire), 1u << 30, 0, &back);
	fuzz_check(back.done && back.used == buf_used(&wire));
	buf_free(&wire);
	buf_free(&back.msg);
	return 0;
}
