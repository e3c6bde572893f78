/* fuzz_msg_header.c - header sections of messages clients submit
 * (base/msg_header.c): the scan that finds the header end and the fields
 * ringpost must add, field lookup with folded values, line-end
 * normalisation, and the fields added (as srv_commit and the API do).
 *
 * Input: a message (any bytes). Oracles: the header end lies within the
 * message; a value found lies inside the header section; normalising
 * leaves no bare CR or LF and is idempotent; once the missing fields are
 * added, a new scan finds Date and Message-ID.
 */
#include <stdlib.h>
#include <string.h>

#include "base/msg_header.h"
#include "fuzz.h"

static const char *const names[] = { "From",       "To",       "Subject",      "Date",
	                             "Message-ID", "Received", "Content-Type", "X-" };

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *p = fuzz_copy(data, size);
	struct msg_header_info hi;
	msg_header_scan(p, size, &hi);
	fuzz_check(hi.end <= size);
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		const char *v;
		size_t vl;
		if (msg_header_get(p, hi.end, names[i], &v, &vl))
			fuzz_check(v >= p && v + vl <= p + hi.end);
	}

	struct buf b = { 0 };
	buf_append(&b, "X: y\r\n", 6);
	buf_append(&b, p, size);
	msg_normalize_newlines(&b, 6);
	const char *q = buf_head(&b);
	size_t n = buf_used(&b);
	for (size_t i = 0; i < n; i++) {
		if (q[i] == '\r')
			fuzz_check(i + 1 < n && q[i + 1] == '\n');
		if (q[i] == '\n')
			fuzz_check(i > 0 && q[i - 1] == '\r');
	}
	struct buf again = { 0 };
	buf_append(&again, q, n);
	msg_normalize_newlines(&again, 0);
	fuzz_check(buf_used(&again) == n && !memcmp(buf_head(&again), q, n));

	/* The fields ringpost adds go in front of the normalised message. */
	struct msg_header_info nh;
	msg_header_scan(q + 6, n - 6, &nh);
	struct buf whole = { 0 };
	msg_add_missing(&whole, &nh, n > 6, 0x0123456789abcdefull, "fuzz.test", 1136214245000ull);
	buf_append(&whole, q + 6, n - 6);
	struct msg_header_info after;
	msg_header_scan(buf_head(&whole), buf_used(&whole), &after);
	fuzz_check(after.has_date && after.has_message_id);
	buf_free(&b);
	buf_free(&again);
	buf_free(&whole);
	free(p);
	return 0;
}
