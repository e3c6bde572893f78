/* fuzz_pop3.c - the pure parts of POP3 (api/pop3_proto.c): command lines,
 * their numeric arguments, and a stored message sent as RETR and TOP do
 * (CRLF lines, dot-stuffing, TOP's line count) in budgeted slices.
 *
 * Input: command lines up to a line "--" alone, then a message. Oracles:
 * the argument lies inside the line; numbers are within the count asked
 * for; RETR's octets before stuffing are pop3_msg_size's, whatever the
 * budget; the output is CRLF lines ending in "." CRLF, with no lone "."
 * line before it (and no CR inside a line for a normalised message);
 * TOP never sends more than RETR.
 */
#include <stdlib.h>
#include <string.h>

#include "api/pop3_proto.h"
#include "base/msg_header.h"
#include "fuzz.h"

static void command(const char *line, size_t len)
{
	struct pop3_cmd c;
	pop3_cmd_parse(line, len, &c);
	fuzz_check(c.name != NULL);
	fuzz_check(c.arg_len == 0 || (c.arg >= line && c.arg + c.arg_len <= line + len));
	uint32_t v[3];
	for (unsigned min = 0; min <= 2; min++) {
		int n = pop3_cmd_numbers(&c, min, 2, v);
		fuzz_check(n == -1 || ((unsigned)n >= min && n <= 2));
	}
}

/* emit - the message sent in slices of budget bytes; returns its bytes. */
static size_t emit(const char *p, size_t n, bool top, uint64_t lines, size_t budget,
                   struct buf *out)
{
	struct pop3_emit e;
	pop3_emit_init(&e, top, lines);
	unsigned calls = 0;
	while (!e.done) {
		size_t before = buf_used(out);
		size_t k = pop3_emit_run(&e, p, n, out, budget);
		fuzz_check(k > 0 && k == buf_used(out) - before);
		fuzz_check(k <= budget + 2 || budget == 0 || k <= 3);
		fuzz_check(++calls <= 4 * n + 16);
	}
	return buf_used(out);
}

/* unstuffed - the octets of a multi-line response before dot-stuffing,
 * its terminator excluded; checks its shape on the way (a lone CR inside
 * a line is passed on as stored: only a normalised message, as the bounce
 * MX stores them, has none). */
static uint64_t unstuffed(const struct buf *b, bool normalised)
{
	const char *p = buf_head(b);
	size_t n = buf_used(b), i = 0;
	uint64_t total = 0;
	fuzz_check(n >= 3 && !memcmp(p + n - 3, ".\r\n", 3));
	while (i < n - 3) {
		const char *nl = memchr(p + i, '\n', n - i);
		fuzz_check(nl && nl > p + i && nl[-1] == '\r');
		size_t len = (size_t)(nl - (p + i)) + 1;
		if (normalised)
			fuzz_check(!memchr(p + i, '\r', len - 2));
		if (p[i] == '.') {
			fuzz_check(len > 3 && p[i + 1] == '.'); /* stuffed, never a lone "." */
			total += len - 1;
		} else {
			total += len;
		}
		i += len;
	}
	fuzz_check(i == n - 3);
	return total;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_in in = { data, size };
	const uint8_t *p;
	size_t n;
	while (fuzz_field(&in, "\n", &p, &n)) {
		if (n && p[n - 1] == '\r')
			n--;
		if (n == 2 && !memcmp(p, "--", 2))
			break;
		char *line = fuzz_copy(p, n);
		command(line, n);
		free(line);
	}
	char *msg = fuzz_copy(in.p, in.n);
	uint64_t size_of = pop3_msg_size(msg, in.n);
	size_t budget = in.n ? 1 + in.p[0] % 97 : 1;
	struct buf whole = { 0 }, sliced = { 0 }, top = { 0 };
	emit(msg, in.n, false, 0, 1u << 20, &whole);
	emit(msg, in.n, false, 0, budget, &sliced);
	fuzz_check(buf_used(&whole) == buf_used(&sliced) &&
	           !memcmp(buf_head(&whole), buf_head(&sliced), buf_used(&whole)));
	fuzz_check(unstuffed(&whole, false) == size_of);
	emit(msg, in.n, true, budget % 5, budget, &top);
	unstuffed(&top, false);
	fuzz_check(buf_used(&top) <= buf_used(&whole) + 2);
	/* As stored: normalised line ends. */
	struct buf norm = { 0 }, out = { 0 };
	buf_append(&norm, in.p, in.n);
	msg_normalize_newlines(&norm, 0);
	emit(buf_head(&norm), buf_used(&norm), false, 0, budget, &out);
	fuzz_check(unstuffed(&out, true) == pop3_msg_size(buf_head(&norm), buf_used(&norm)));
	buf_free(&norm);
	buf_free(&out);
	buf_free(&whole);
	buf_free(&sliced);
	buf_free(&top);
	free(msg);
	return 0;
}
