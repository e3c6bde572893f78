/* test_pop3.c - the pure parts of POP3 (api/pop3_proto.c): the command
 * parser and numeric arguments, message sizes, the multi-line output of
 * RETR and TOP (CRLF lines, dot-stuffing, the terminator, TOP's line
 * count), output produced in slices of any budget, and cross-checks
 * against the SMTP code's independent stuffer and DATA receiver
 * (relay/smtp_data.c) on random messages.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/pop3_proto.h"
#include "relay/smtp_data.h"

#define S(x) x, sizeof(x) - 1

/* ---- the command parser --------------------------------------------------- */

struct parse_case {
	const char *line;
	enum pop3_cmd_id id;
	const char *arg; /* expected argument */
};

static const struct parse_case parse_cases[] = {
	{ "USER alice", POP3_CMD_USER, "alice" },
	{ "user alice", POP3_CMD_USER, "alice" },
	{ "uSeR alice  ", POP3_CMD_USER, "alice" },               /* trailing blanks dropped */
	{ "PASS  two  spaces ", POP3_CMD_PASS, " two  spaces " }, /* kept in a password */
	{ "PASS", POP3_CMD_PASS, "" },
	{ "STAT", POP3_CMD_STAT, "" },
	{ "LIST", POP3_CMD_LIST, "" },
	{ "LIST 1", POP3_CMD_LIST, "1" },
	{ "UIDL 22", POP3_CMD_UIDL, "22" },
	{ "RETR 3", POP3_CMD_RETR, "3" },
	{ "TOP 1 10", POP3_CMD_TOP, "1 10" },
	{ "top 1 0", POP3_CMD_TOP, "1 0" },
	{ "DELE 4", POP3_CMD_DELE, "4" },
	{ "RSET", POP3_CMD_RSET, "" },
	{ "NOOP", POP3_CMD_NOOP, "" },
	{ "QUIT", POP3_CMD_QUIT, "" },
	{ "CAPA", POP3_CMD_CAPA, "" },
	{ "STLS", POP3_CMD_STLS, "" },
	{ "AUTH PLAIN AGEAYg==", POP3_CMD_AUTH, "PLAIN AGEAYg==" },
	{ "APOP a b", POP3_CMD_APOP, "a b" },
	{ "QUIT ", POP3_CMD_QUIT, "" },
	{ "", POP3_CMD_UNKNOWN, "" },
	{ " ", POP3_CMD_UNKNOWN, "" },
	{ " QUIT", POP3_CMD_UNKNOWN, "QUIT" },
	{ "QUITX", POP3_CMD_UNKNOWN, "" },
	{ "QUI", POP3_CMD_UNKNOWN, "" },
	{ "TO 1 1", POP3_CMD_UNKNOWN, "1 1" },
	{ "HELO x", POP3_CMD_UNKNOWN, "x" },
	{ "\xc3\xa9TAT", POP3_CMD_UNKNOWN, "" },
	{ "RETR\t1", POP3_CMD_UNKNOWN, "" }, /* a tab is not the separator */
};

Test(pop3_parse, table)
{
	for (size_t i = 0; i < sizeof(parse_cases) / sizeof(parse_cases[0]); i++) {
		const struct parse_case *t = &parse_cases[i];
		struct pop3_cmd c;
		pop3_cmd_parse(t->line, strlen(t->line), &c);
		cr_assert_eq(c.id, t->id, "'%s': id %d, want %d", t->line, c.id, t->id);
		cr_assert_eq(c.arg_len, strlen(t->arg), "'%s': arg '%.*s', want '%s'", t->line,
		             (int)c.arg_len, c.arg, t->arg);
		cr_assert(!memcmp(c.arg, t->arg, c.arg_len), "'%s': arg '%.*s', want '%s'", t->line,
		          (int)c.arg_len, c.arg, t->arg);
		cr_assert_not_null(c.name);
	}
}

Test(pop3_parse, nul_and_8bit_bytes)
{
	/* A NUL inside the keyword is not a command; in an argument it stays. */
	struct pop3_cmd c;
	pop3_cmd_parse(S("US\0R x"), &c);
	cr_assert_eq(c.id, POP3_CMD_UNKNOWN);
	pop3_cmd_parse(S("USER a\0b"), &c);
	cr_assert_eq(c.id, POP3_CMD_USER);
	cr_assert_eq(c.arg_len, 3);
	/* Every single byte, and every byte after a valid keyword: no crash,
	 * and the argument stays inside the line. */
	for (int b = 0; b < 256; b++) {
		char line[8] = "RETR ";
		line[5] = (char)b;
		pop3_cmd_parse(line, 6, &c);
		cr_assert_eq(c.id, POP3_CMD_RETR);
		cr_assert(c.arg >= line && c.arg + c.arg_len <= line + 6);
		pop3_cmd_parse(line + 5, 1, &c);
		cr_assert_eq(c.id, POP3_CMD_UNKNOWN);
	}
}

struct num_case {
	const char *arg;
	unsigned min, max;
	int n;           /* expected count, -1 = refused */
	uint32_t v0, v1; /* the values */
};

static const struct num_case num_cases[] = {
	{ "", 0, 1, 0, 0, 0 },
	{ "", 1, 1, -1, 0, 0 },
	{ "1", 0, 1, 1, 1, 0 },
	{ "0", 1, 1, 1, 0, 0 }, /* 0 parses; "no such message" is the caller's */
	{ "007", 1, 1, 1, 7, 0 },
	{ "4294967295", 1, 1, 1, 4294967295u, 0 },
	{ "4294967296", 1, 1, -1, 0, 0 },
	{ "99999999999999999999", 1, 1, -1, 0, 0 },
	{ "1 2", 1, 1, -1, 0, 0 },
	{ "1 2", 2, 2, 2, 1, 2 },
	{ "1  2", 2, 2, 2, 1, 2 },
	{ "1", 2, 2, -1, 0, 0 },
	{ "1 2 3", 2, 2, -1, 0, 0 },
	{ "-1", 1, 1, -1, 0, 0 },
	{ "+1", 1, 1, -1, 0, 0 },
	{ "1x", 1, 1, -1, 0, 0 },
	{ "x", 0, 1, -1, 0, 0 },
	{ "1 x", 2, 2, -1, 0, 0 },
	{ "0x10", 1, 1, -1, 0, 0 },
	{ "1\t2", 2, 2, -1, 0, 0 },
};

Test(pop3_parse, numbers)
{
	for (size_t i = 0; i < sizeof(num_cases) / sizeof(num_cases[0]); i++) {
		const struct num_case *t = &num_cases[i];
		char line[64];
		snprintf(line, sizeof(line), "TOP %s", t->arg);
		struct pop3_cmd c;
		pop3_cmd_parse(line, strlen(line), &c);
		uint32_t v[2] = { 0, 0 };
		int n = pop3_cmd_numbers(&c, t->min, t->max, v);
		cr_assert_eq(n, t->n, "'%s' (%u..%u): %d, want %d", t->arg, t->min, t->max, n,
		             t->n);
		if (n >= 1)
			cr_assert_eq(v[0], t->v0, "'%s': %u", t->arg, v[0]);
		if (n >= 2)
			cr_assert_eq(v[1], t->v1, "'%s': %u", t->arg, v[1]);
	}
}

/* ---- output ---------------------------------------------------------------- */

/* emit_all - the whole reply body (message lines and terminator), produced
 * with the given budget per call. */
static void emit_all(const char *p, size_t n, bool top, uint64_t lines, size_t budget,
                     struct buf *out)
{
	struct pop3_emit e;
	pop3_emit_init(&e, top, lines);
	unsigned calls = 0;
	while (!e.done) {
		size_t got = pop3_emit_run(&e, p, n, out, budget);
		cr_assert_gt(got, 0, "a call before done appended nothing");
		cr_assert_leq(got, budget + 3, "budget %zu, appended %zu", budget, got);
		cr_assert_lt(++calls, 10u * (unsigned)n + 10, "no progress");
	}
	cr_assert_eq(pop3_emit_run(&e, p, n, out, budget), 0, "appended after done");
}

static void assert_buf(const struct buf *b, const char *want, size_t wlen, const char *what)
{
	cr_assert_eq(buf_used(b), wlen, "%s: %zu bytes, want %zu: '%.*s'", what, buf_used(b), wlen,
	             (int)buf_used(b), buf_head(b));
	cr_assert(!wlen || !memcmp(buf_head(b), want, wlen), "%s: '%.*s', want '%s'", what,
	          (int)buf_used(b), buf_head(b), want);
}

struct emit_case {
	const char *in;
	size_t in_len;
	const char *out; /* RETR's reply body */
	size_t out_len;
};

#define E(in, out)                                                                                 \
	{                                                                                          \
		in, sizeof(in) - 1, out, sizeof(out) - 1                                           \
	}

static const struct emit_case emit_cases[] = {
	E("", ".\r\n"),
	E("a\r\n", "a\r\n.\r\n"),
	E("a", "a\r\n.\r\n"),   /* a last line without CRLF gets one */
	E("a\n", "a\r\n.\r\n"), /* bare LF */
	E("a\nb", "a\r\nb\r\n.\r\n"),
	E("\r\n", "\r\n.\r\n"),
	E("\n\n", "\r\n\r\n.\r\n"),
	E(".\r\n", "..\r\n.\r\n"),     /* a line of one dot */
	E("..x\r\n", "...x\r\n.\r\n"), /* every leading dot gets one more */
	E("a\r\n.\r\nb\r\n", "a\r\n..\r\nb\r\n.\r\n"),
	E("x.\r\n.y", "x.\r\n..y\r\n.\r\n"), /* dots elsewhere stay */
	E("a\rb\r\n", "a\rb\r\n.\r\n"),      /* a lone CR inside a line stays */
	E("a\r", "a\r\n.\r\n"),              /* ... a CR at the very end ends the line */
	E("\r", "\r\n.\r\n"),
	E("a\r\r\n", "a\r\r\n.\r\n"),
	E("\x80\xff\0\r\n", "\x80\xff\0\r\n.\r\n"),
	E("\r\n.\r\n", "\r\n..\r\n.\r\n"), /* a stored CRLF.CRLF cannot end the reply */
};

Test(pop3_emit, retr_table)
{
	for (size_t i = 0; i < sizeof(emit_cases) / sizeof(emit_cases[0]); i++) {
		const struct emit_case *t = &emit_cases[i];
		for (size_t budget = 1; budget <= 64;
		     budget = budget < 8 ? budget + 1 : budget * 2) {
			struct buf out = { 0 };
			char what[64];
			snprintf(what, sizeof(what), "case %zu budget %zu", i, budget);
			emit_all(t->in, t->in_len, false, 0, budget, &out);
			assert_buf(&out, t->out, t->out_len, what);
			buf_free(&out);
		}
	}
}

struct top_case {
	const char *in;
	uint32_t lines;
	const char *out;
};

static const struct top_case top_cases[] = {
	{ "H: 1\r\nH: 2\r\n\r\nb1\r\nb2\r\nb3\r\n", 0, "H: 1\r\nH: 2\r\n\r\n.\r\n" },
	{ "H: 1\r\nH: 2\r\n\r\nb1\r\nb2\r\nb3\r\n", 1, "H: 1\r\nH: 2\r\n\r\nb1\r\n.\r\n" },
	{ "H: 1\r\nH: 2\r\n\r\nb1\r\nb2\r\nb3\r\n", 3,
	  "H: 1\r\nH: 2\r\n\r\nb1\r\nb2\r\nb3\r\n.\r\n" },
	{ "H: 1\r\nH: 2\r\n\r\nb1\r\nb2\r\nb3\r\n", 99,
	  "H: 1\r\nH: 2\r\n\r\nb1\r\nb2\r\nb3\r\n.\r\n" },
	{ "H: 1\r\n\r\n\r\n.b2\r\n", 1, "H: 1\r\n\r\n\r\n.\r\n" }, /* an empty body line counts */
	{ "H: 1\r\n\r\n\r\n.b2\r\n", 2, "H: 1\r\n\r\n\r\n..b2\r\n.\r\n" },
	{ "H: 1\r\nH: 2\r\n", 0, "H: 1\r\nH: 2\r\n.\r\n" }, /* no body at all */
	{ "H: 1\nH: 2", 5, "H: 1\r\nH: 2\r\n.\r\n" },
	{ "H: 1\n\nb1\nb2", 1, "H: 1\r\n\r\nb1\r\n.\r\n" },
	{ "H: 1\n\nb1\nb2", 2, "H: 1\r\n\r\nb1\r\nb2\r\n.\r\n" },
	{ "\r\nbody\r\n", 0, "\r\n.\r\n" }, /* no header: the separator first */
	{ "", 3, ".\r\n" },
};

Test(pop3_emit, top_table)
{
	for (size_t i = 0; i < sizeof(top_cases) / sizeof(top_cases[0]); i++) {
		const struct top_case *t = &top_cases[i];
		for (size_t budget = 1; budget <= 4096; budget *= 4) {
			struct buf out = { 0 };
			char what[64];
			snprintf(what, sizeof(what), "TOP case %zu budget %zu", i, budget);
			emit_all(t->in, strlen(t->in), true, t->lines, budget, &out);
			assert_buf(&out, t->out, strlen(t->out), what);
			buf_free(&out);
		}
	}
}

Test(pop3_emit, long_line_in_small_slices)
{
	/* A line far longer than any budget is cut, and its dot is stuffed once. */
	size_t n = 100000;
	char *in = malloc(n + 2);
	memset(in, 'x', n);
	in[0] = '.';
	in[n] = '\r';
	in[n + 1] = '\n';
	struct buf out = { 0 };
	emit_all(in, n + 2, false, 0, 7, &out);
	cr_assert_eq(buf_used(&out), n + 1 + 2 + 3);
	cr_assert(!memcmp(buf_head(&out), "..xxx", 5));
	cr_assert(!memcmp(buf_head(&out) + buf_used(&out) - 5, "\r\n.\r\n", 5));
	buf_free(&out);
	free(in);
}

Test(pop3_size, table)
{
	struct {
		const char *in;
		size_t len;
		uint64_t size;
	} t[] = {
		{ S(""), 0 },     { S("a"), 3 },        { S("a\r\n"), 3 },  { S("a\n"), 3 },
		{ S("\n"), 2 },   { S("a\r\nb"), 6 },   { S(".\r\n"), 3 },  { S("a\r"), 3 },
		{ S("a\rb"), 5 }, { S("\r\n\r\n"), 4 }, { S("\n\n\n"), 6 }, { S("x\0y\n"), 5 },
	};
	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++)
		cr_assert_eq(pop3_msg_size(t[i].in, t[i].len), t[i].size, "case %zu: %llu", i,
		             (unsigned long long)pop3_msg_size(t[i].in, t[i].len));
}

/* ---- random messages --------------------------------------------------------- */

/* unstuff - RETR's reply body back to the lines a client keeps (the
 * terminator removed, a leading dot dropped): a plain reference. */
static void unstuff(const struct buf *reply, struct buf *out)
{
	const char *p = buf_head(reply), *end = p + buf_used(reply);
	cr_assert_geq(buf_used(reply), 3);
	cr_assert(!memcmp(end - 3, ".\r\n", 3), "no terminator");
	cr_assert(buf_used(reply) == 3 || !memcmp(end - 5, "\r\n", 2), "terminator not on a line");
	end -= 3;
	while (p < end) {
		const char *crlf = memmem(p, (size_t)(end - p), "\r\n", 2);
		cr_assert_not_null(crlf, "a line without CRLF");
		if (*p == '.') {
			cr_assert(crlf > p + 1 && p[1] == '.', "a lone dot line inside the reply");
			p++;
		}
		buf_append(out, p, (size_t)(crlf - p) + 2);
		p = crlf + 2;
	}
}

static unsigned long long rng_state = 0x9e3779b97f4a7c15ull;

static unsigned rnd(unsigned n)
{
	rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
	return (unsigned)(rng_state >> 33) % n;
}

/* random_msg - bytes biased to what matters: dots, CR, LF, 8-bit, NUL. */
static size_t random_msg(char *p, size_t max, bool crlf_only)
{
	static const char alphabet[] = { '.', '.', '\n', '\n', 'a', 'b', ' ', '\x80', '\0', '\r' };
	size_t n = rnd((unsigned)max);
	for (size_t i = 0; i < n; i++) {
		char ch = alphabet[rnd(crlf_only ? 9 : 10)];
		if (crlf_only && ch == '\n' && i + 1 < n) {
			p[i++] = '\r';
			ch = '\n';
		} else if (crlf_only && ch == '\n') {
			ch = 'z';
		}
		p[i] = ch;
	}
	return n;
}

Test(pop3_emit, random_round_trip)
{
	char in[300];
	for (int iter = 0; iter < 20000; iter++) {
		size_t n = random_msg(in, sizeof(in), false);
		struct buf whole = { 0 }, sliced = { 0 }, lines = { 0 };
		emit_all(in, n, false, 0, 1u << 20, &whole);
		emit_all(in, n, false, 0, 1 + rnd(40), &sliced);
		cr_assert_eq(buf_used(&whole), buf_used(&sliced), "iteration %d", iter);
		cr_assert(!buf_used(&whole) ||
		              !memcmp(buf_head(&whole), buf_head(&sliced), buf_used(&whole)),
		          "iteration %d: slices differ", iter);
		unstuff(&whole, &lines);
		cr_assert_eq(buf_used(&lines), pop3_msg_size(in, n), "iteration %d: size", iter);
		/* TOP with more lines than the message has is the whole message. */
		struct buf top = { 0 };
		emit_all(in, n, true, 1000, 1 + rnd(40), &top);
		cr_assert_eq(buf_used(&top), buf_used(&whole), "iteration %d: TOP 1000", iter);
		cr_assert(!buf_used(&top) ||
		          !memcmp(buf_head(&top), buf_head(&whole), buf_used(&top)));
		buf_free(&whole);
		buf_free(&sliced);
		buf_free(&lines);
		buf_free(&top);
	}
}

Test(pop3_emit, agrees_with_the_smtp_code)
{
	/* On stored (CRLF) messages, RETR's reply is what the SMTP client's
	 * stuffer makes, and the SMTP server's DATA receiver reads the
	 * message back exactly from it. */
	char in[300];
	for (int iter = 0; iter < 20000; iter++) {
		size_t n = random_msg(in, sizeof(in), true);
		struct buf ours = { 0 }, theirs = { 0 }, back = { 0 };
		emit_all(in, n, false, 0, 1 + rnd(64), &ours);
		smtp_dot_stuff(in, n, &theirs);
		cr_assert_eq(buf_used(&ours), buf_used(&theirs), "iteration %d: %zu vs %zu", iter,
		             buf_used(&ours), buf_used(&theirs));
		cr_assert(!memcmp(buf_head(&ours), buf_head(&theirs), buf_used(&ours)),
		          "iteration %d: the stuffed bodies differ", iter);
		struct smtp_data_rx rx;
		bool done = false;
		smtp_data_rx_init(&rx, 1 << 20, 1 << 20);
		size_t used =
		    smtp_data_rx_feed(&rx, buf_head(&ours), buf_used(&ours), &back, &done);
		cr_assert(done, "iteration %d: the receiver saw no end", iter);
		cr_assert_eq(used, buf_used(&ours), "iteration %d: ended early at %zu", iter, used);
		cr_assert_eq(buf_used(&back), pop3_msg_size(in, n), "iteration %d", iter);
		buf_free(&ours);
		buf_free(&theirs);
		buf_free(&back);
	}
}

Test(pop3_emit, top_counts_body_lines)
{
	/* TOP n of a random message: the headers and blank line, then exactly
	 * min(n, body lines) lines; the line after them is never sent. */
	char in[300];
	for (int iter = 0; iter < 5000; iter++) {
		size_t n = random_msg(in, sizeof(in), true);
		uint32_t want = rnd(6);
		struct buf reply = { 0 }, lines = { 0 }, all = { 0 };
		emit_all(in, n, true, want, 1 + rnd(32), &reply);
		unstuff(&reply, &lines);
		emit_all(in, n, false, 0, 1 << 20, &all);
		struct buf full = { 0 };
		unstuff(&all, &full);
		/* The TOP lines are a prefix of the whole message's lines. */
		cr_assert_leq(buf_used(&lines), buf_used(&full));
		cr_assert(!buf_used(&lines) ||
		          !memcmp(buf_head(&lines), buf_head(&full), buf_used(&lines)));
		/* Where the body starts: after the first empty line. */
		size_t hdr = buf_used(&full);
		if (hdr && !memcmp(buf_head(&full), "\r\n", 2)) {
			hdr = 2;
		} else if (hdr) {
			const char *sep = memmem(buf_head(&full), hdr, "\r\n\r\n", 4);
			if (sep)
				hdr = (size_t)(sep - buf_head(&full)) + 4;
		}
		cr_assert_geq(buf_used(&lines), hdr, "iteration %d: headers cut", iter);
		unsigned body = 0;
		for (size_t i = hdr; i + 1 < buf_used(&lines); i++)
			body += buf_head(&lines)[i] == '\r' && buf_head(&lines)[i + 1] == '\n';
		unsigned total = 0;
		for (size_t i = hdr; i + 1 < buf_used(&full); i++)
			total += buf_head(&full)[i] == '\r' && buf_head(&full)[i + 1] == '\n';
		cr_assert_eq(body, RP_MIN(want, total),
		             "iteration %d: %u body lines for TOP %u (%u)", iter, body, want,
		             total);
		buf_free(&reply);
		buf_free(&lines);
		buf_free(&all);
		buf_free(&full);
	}
}
