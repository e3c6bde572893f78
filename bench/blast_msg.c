/* blast_msg.c - the messages ringpost-blast sends: realistic headers and
 * 76-character body lines, exactly the requested size; as RFC 5322 content
 * (SMTP) or as the HTTP API's JSON message object.
 *
 * Everything is built once at start-up: the header lines after To: are a
 * template with fixed-width fields (sequence number, Date, Message-ID,
 * X-Bench-Sent) patched in place, and the body is a prefix of one long
 * template. Writing a message is three memcpys and four patches. The JSON
 * object is the same: {"from", "to": [...], then a template with the
 * subject's number and "headers": {"X-Bench-Sent"} to patch, and "text"
 * a prefix of the body template with each CRLF written as the escape \n
 * (two bytes either way). One generator per process (the blaster is one
 * thread).
 */
#include "blast.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#define BODY_LINE    76 /* characters per body line, CRLF excluded */
#define LOCAL_DIGITS 6  /* recipients are userNNNNNN@domain */
#define SEQ_DIGITS   16

struct gen {
	char **domains; /* --domains names */
	size_t *domain_len;
	unsigned ndomains;
	unsigned rcpts;
	char *from_line; /* "From: Ringpost Blast <addr>\r\nTo: " */
	size_t from_len;
	char tail[512]; /* "\r\nSubject: ..." up to the blank line */
	size_t tail_len;
	size_t off_subject, off_date, off_msgid, off_sent; /* patch points in tail */
	char *body; /* body template, body_len bytes of CRLF lines */
	size_t body_len;
	char *json_head; /* {"from":"...","to":[ */
	size_t json_head_len;
	char json_tail[256]; /* ],"subject":...,"text":" with placeholders */
	size_t json_tail_len;
	size_t json_off_subject, json_off_sent; /* patch points in json_tail */
	char *json_body;                        /* the body template with "\\n" for each CRLF */
	char **rcpt_list;                       /* --rcpt-file, or NULL */
	size_t nrcpt_list;
	const char *file; /* --body-file, or NULL */
	size_t file_len;
	uint64_t date_sec; /* second the cached Date was made for */
	char date[32];
};

static struct gen g;

/* make_tail - the header lines after To:, with placeholders to patch. */
static void make_tail(uint32_t run_id)
{
	struct buf b = { 0 };
	buf_puts(&b, "\r\nSubject: ringpost bench message ");
	g.off_subject = buf_used(&b);
	buf_printf(&b, "%0*d\r\nDate: ", SEQ_DIGITS, 0);
	g.off_date = buf_used(&b);
	buf_puts(&b, "Thu, 01 Jan 1970 00:00:00 +0000\r\nMessage-ID: <");
	g.off_msgid = buf_used(&b);
	buf_printf(&b, "%0*d.%08x@blast.bench.test>\r\nX-Bench-Sent: ", SEQ_DIGITS, 0, run_id);
	g.off_sent = buf_used(&b);
	buf_puts(&b, "0000000000000000000\r\nMIME-Version: 1.0\r\n"
	             "Content-Type: text/plain; charset=us-ascii\r\n"
	             "Content-Transfer-Encoding: 7bit\r\n\r\n");
	rp_assert(buf_used(&b) <= sizeof(g.tail));
	g.tail_len = buf_used(&b);
	memcpy(g.tail, buf_head(&b), g.tail_len);
	buf_free(&b);
}

/* make_body - len bytes (or more) of lines of words, none starting with a dot. */
static void make_body(size_t len)
{
	static const char *const words[] = {
		"ringpost",   "relay", "queue",  "message", "delivery", "bench", "latency",
		"throughput", "spool", "domain", "session", "pipeline", "chunk", "sender",
		"recipient",  "the",   "of",     "and",     "to",       "a",     "in",
		"is",         "it",    "for",    "on",
	};
	struct bench_rand r = { .s = 42 };
	size_t lines = len / (BODY_LINE + 2) + 2;
	g.body_len = lines * (BODY_LINE + 2);
	g.body = xmalloc(g.body_len);
	char *p = g.body;
	for (size_t i = 0; i < lines; i++) {
		size_t n = 0;
		while (n < BODY_LINE) {
			const char *w = words[bench_rand_next(&r) % RP_ARRAY_LEN(words)];
			size_t wl = strlen(w);
			if (n && n < BODY_LINE)
				p[n++] = ' ';
			for (size_t k = 0; k < wl && n < BODY_LINE; k++)
				p[n++] = w[k];
		}
		p[BODY_LINE] = '\r';
		p[BODY_LINE + 1] = '\n';
		p += BODY_LINE + 2;
	}
}

/* make_json - the JSON object's fixed parts around "to" and the text. */
static void make_json(const char *from)
{
	struct buf b = { 0 };
	buf_puts(&b, "{\"from\":");
	bench_json_str(&b, from, strlen(from));
	buf_puts(&b, ",\"to\":[");
	g.json_head_len = buf_used(&b);
	g.json_head = xmemdup(buf_head(&b), g.json_head_len);
	buf_reset(&b);
	buf_puts(&b, "],\"subject\":\"ringpost bench message ");
	g.json_off_subject = buf_used(&b);
	buf_printf(&b, "%0*d\",\"headers\":{\"X-Bench-Sent\":\"", SEQ_DIGITS, 0);
	g.json_off_sent = buf_used(&b);
	buf_puts(&b, "0000000000000000000\"},\"text\":\"");
	rp_assert(buf_used(&b) <= sizeof(g.json_tail));
	g.json_tail_len = buf_used(&b);
	memcpy(g.json_tail, buf_head(&b), g.json_tail_len);
	buf_free(&b);
}

/* make_json_body - the text template: the body template with each CRLF
 * as the JSON escape \n (after make_body). */
static void make_json_body(void)
{
	g.json_body = xmemdup(g.body, g.body_len);
	for (size_t i = BODY_LINE; i + 1 < g.body_len; i += BODY_LINE + 2) {
		g.json_body[i] = '\\';
		g.json_body[i + 1] = 'n';
	}
}

/* blast_msg_init - domains, the From/To prefix, the header tail and the body template. */
uint32_t blast_msg_init(const struct blast_opts *o)
{
	struct bench_rand r = { .s = o->seed ^ (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32) };
	g.ndomains = o->domains;
	g.rcpts = o->rcpts;
	g.rcpt_list = o->rcpt_list;
	g.nrcpt_list = o->nrcpt_list;
	g.file = o->body;
	g.file_len = o->body_len;
	g.domains = xcalloc(g.ndomains, sizeof(*g.domains));
	g.domain_len = xcalloc(g.ndomains, sizeof(*g.domain_len));
	size_t longest = 0;
	for (unsigned i = 0; i < g.ndomains; i++) {
		char d[256];
		/* The format was checked: one %u and nothing else to expand. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
		snprintf(d, sizeof(d), o->domain_format, i);
#pragma GCC diagnostic pop
		g.domains[i] = xstrdup(d);
		g.domain_len[i] = strlen(d);
		longest = RP_MAX(longest, g.domain_len[i]);
	}
	struct buf b = { 0 };
	buf_printf(&b, "From: Ringpost Blast <%s>\r\nTo: ", o->from);
	g.from_len = buf_used(&b);
	g.from_line = xmemdup(buf_head(&b), g.from_len);
	buf_free(&b);
	make_tail((uint32_t)bench_rand_next(&r));
	/* The largest header: every recipient on the longest domain. */
	size_t addr = 4 + LOCAL_DIGITS + 1 + longest;         /* user + digits + @ + domain */
	size_t to = g.rcpts * (addr + 2) + (g.rcpts - 1) * 2; /* <a>, <b> */
	size_t min = g.from_len + to + g.tail_len + 2;        /* and one body line end */
	make_json(o->from);
	size_t json_to = g.rcpts * (addr + 2) + (g.rcpts - 1);                 /* "a","b" */
	size_t json_min = g.json_head_len + json_to + g.json_tail_len + 1 + 2; /* a text byte, "} */
	if (o->mode->format == BLAST_MSG_JSON)
		min = json_min;
	make_body(RP_MAX((size_t)o->size_max, RP_MAX(min, json_min)) + BODY_LINE + 2);
	make_json_body();
	return g.file ? (uint32_t)g.file_len : (uint32_t)min;
}

/* blast_msg_rcpt - userNNNNNN@domain, domain = (seq * R + j) mod D. */
size_t blast_msg_rcpt(uint64_t seq, unsigned j, char *out)
{
	uint64_t i = seq * g.rcpts + j;
	if (g.rcpt_list) {
		const char *a = g.rcpt_list[i % g.nrcpt_list];
		size_t n = strlen(a);
		memcpy(out, a, n);
		return n;
	}
	unsigned d = (unsigned)(i % g.ndomains);
	memcpy(out, "user", 4);
	bench_put_dec(out + 4, LOCAL_DIGITS, (i / g.ndomains) % 1000000);
	out[4 + LOCAL_DIGITS] = '@';
	memcpy(out + 5 + LOCAL_DIGITS, g.domains[d], g.domain_len[d]);
	return 5 + LOCAL_DIGITS + g.domain_len[d];
}

/* date_patch - RFC 5322 date, fixed width (two-digit day), cached per second. */
static void date_patch(char *p, uint64_t real_ns)
{
	static const char days[] = "SunMonTueWedThuFriSat";
	static const char months[] = "JanFebMarAprMayJunJulAugSepOctNovDec";
	uint64_t sec = real_ns / 1000000000ull;
	if (sec != g.date_sec) {
		time_t t = (time_t)sec;
		struct tm tm;
		gmtime_r(&t, &tm);
		memcpy(g.date, days + 3 * tm.tm_wday, 3);
		memcpy(g.date + 3, ", ", 2);
		bench_put_dec(g.date + 5, 2, (uint64_t)tm.tm_mday);
		g.date[7] = ' ';
		memcpy(g.date + 8, months + 3 * tm.tm_mon, 3);
		g.date[11] = ' ';
		bench_put_dec(g.date + 12, 4, (uint64_t)tm.tm_year + 1900);
		g.date[16] = ' ';
		bench_put_dec(g.date + 17, 2, (uint64_t)tm.tm_hour);
		g.date[19] = ':';
		bench_put_dec(g.date + 20, 2, (uint64_t)tm.tm_min);
		g.date[22] = ':';
		bench_put_dec(g.date + 23, 2, (uint64_t)tm.tm_sec);
		memcpy(g.date + 25, " +0000", 6);
		g.date_sec = sec;
	}
	memcpy(p, g.date, 31);
}

/* blast_msg_write - the From/To lines, the patched tail, a prefix of the body. */
void blast_msg_write(const struct blast_job *job, struct buf *out)
{
	if (g.file) { /* --body-file: as given (job->size is its length) */
		buf_append(out, g.file, g.file_len);
		return;
	}
	char *start = buf_reserve(out, job->size);
	char *p = start;
	memcpy(p, g.from_line, g.from_len);
	p += g.from_len;
	for (unsigned j = 0; j < g.rcpts; j++) {
		if (j) {
			memcpy(p, ", ", 2);
			p += 2;
		}
		*p++ = '<';
		p += blast_msg_rcpt(job->seq, j, p);
		*p++ = '>';
	}
	memcpy(p, g.tail, g.tail_len);
	bench_put_dec(p + g.off_subject, SEQ_DIGITS, job->seq);
	date_patch(p + g.off_date, job->sent_real_ns);
	bench_put_hex(p + g.off_msgid, SEQ_DIGITS, job->seq);
	bench_put_dec(p + g.off_sent, 19, job->sent_real_ns);
	p += g.tail_len;
	size_t head = (size_t)(p - start);
	rp_assert(head + 2 <= job->size);
	size_t body = job->size - head;
	memcpy(p, g.body, body);
	/* End on CRLF without leaving a lone CR or LF at the cut. */
	if (p[body - 2] == '\n')
		p[body - 3] = '.';
	p[body - 2] = '\r';
	p[body - 1] = '\n';
	buf_commit(out, job->size);
}

/* blast_msg_json - {"from", "to", patched subject and X-Bench-Sent, "text"
 * cut to fit}: exactly size bytes. */
void blast_msg_json(uint64_t seq, uint32_t size, uint64_t sent_real_ns, struct buf *out)
{
	char *start = buf_reserve(out, size);
	char *p = start;
	memcpy(p, g.json_head, g.json_head_len);
	p += g.json_head_len;
	for (unsigned j = 0; j < g.rcpts; j++) {
		if (j)
			*p++ = ',';
		*p++ = '"';
		p += blast_msg_rcpt(seq, j, p);
		*p++ = '"';
	}
	memcpy(p, g.json_tail, g.json_tail_len);
	bench_put_dec(p + g.json_off_subject, SEQ_DIGITS, seq);
	bench_put_dec(p + g.json_off_sent, 19, sent_real_ns);
	p += g.json_tail_len;
	size_t head = (size_t)(p - start);
	rp_assert(head + 3 <= size);
	size_t text = size - head - 2;
	memcpy(p, g.json_body, text);
	/* Cut through an escape: no lone backslash before the closing quote. */
	if (p[text - 1] == '\\')
		p[text - 1] = '.';
	p[text] = '"';
	p[text + 1] = '}';
	buf_commit(out, size);
}

/* blast_msg_free - the templates of blast_msg_init, and the --rcpt-file
 * and --body-file contents it took over. */
void blast_msg_free(void)
{
	for (size_t i = 0; i < g.nrcpt_list; i++)
		free(g.rcpt_list[i]);
	free(g.rcpt_list);
	free((char *)g.file);
	for (unsigned i = 0; i < g.ndomains; i++)
		free(g.domains[i]);
	free(g.domains);
	free(g.domain_len);
	free(g.from_line);
	free(g.body);
	free(g.json_head);
	free(g.json_body);
	memset(&g, 0, sizeof(g));
}
