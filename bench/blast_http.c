/* blast_http.c - the "http" and "http-batch" modes of ringpost-blast: an
 * HTTP/1.1 client of ringpost's API (README.md, HTTP API) on keep-alive
 * connections.
 *
 * http sends one POST /v1/messages per message, http-batch one POST
 * /v1/messages/batch {"messages": [...]} per transaction of job->count
 * messages; with --pipeline N up to N requests are in flight on a
 * connection, and answered in order (RFC 9112 9.3.2). A request is one
 * write: a header template with the bearer key, Content-Length, and the
 * JSON objects of blast_msg_json. Responses are read with http-parser:
 * 202 counts as accepted, any other status fails the request's messages
 * under that status; a batch's 202 is read entry by entry, {"id": ...}
 * accepted and {"error": {"code": C}} failed under C. A response without
 * keep-alive retires the session (the run replaces it once it is idle).
 */
#include "blast.h"

#include <http_parser.h>
#include <stdio.h>

#include "base/log.h"

#define BATCH_OPEN  "{\"messages\":["
#define BATCH_CLOSE "]}"

struct http_st {
	http_parser parser; /* HTTP_RESPONSE; parser.data is the session */
	struct buf body;    /* the response body being read (http-batch only) */
	bool complete;      /* a response ended: the parser is paused until it is counted */
};

/* The request head up to Content-Length's value; one mode per process. */
static struct {
	char head[1400];
	size_t len;
} tmpl;

/* ---- requests ---------------------------------------------------------- */

/* tmpl_make - "POST PATH HTTP/1.1", Host, Authorization, Content-Type and
 * "Content-Length: " for o (--key is at most 1000 bytes, checked by blast.c). */
static void tmpl_make(const struct blast_opts *o)
{
	int n = snprintf(tmpl.head, sizeof(tmpl.head),
	                 "POST %s HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\n"
	                 "Content-Type: application/json\r\nContent-Length: ",
	                 o->mode->batches ? "/v1/messages/batch" : "/v1/messages", o->server_text,
	                 o->key);
	rp_assert(n > 0 && (size_t)n < sizeof(tmpl.head));
	tmpl.len = (size_t)n;
}

/* http_send - the request for s->job in one write. */
static void http_send(struct blast_sess *s)
{
	const struct blast_opts *o = blast_opts_of(s);
	const struct blast_job *job = &s->job;
	struct buf *out = conn_outbuf(&s->conn);
	uint64_t len = job->size;
	if (o->mode->batches)
		len = strlen(BATCH_OPEN) + (uint64_t)job->count * (job->size + 1) - 1 +
		      strlen(BATCH_CLOSE);
	char *w = buf_reserve(out, tmpl.len + 24);
	memcpy(w, tmpl.head, tmpl.len);
	size_t n = tmpl.len + bench_utoa(w + tmpl.len, len);
	memcpy(w + n, "\r\n\r\n", 4);
	buf_commit(out, n + 4);
	if (!o->mode->batches) {
		blast_msg_json(job->seq, job->size, job->sent_real_ns, out);
	} else {
		buf_append(out, BATCH_OPEN, strlen(BATCH_OPEN));
		for (uint32_t k = 0; k < job->count; k++) {
			if (k)
				buf_append(out, ",", 1);
			blast_msg_json(job->seq + k, job->size, job->sent_real_ns, out);
		}
		buf_append(out, BATCH_CLOSE, strlen(BATCH_CLOSE));
	}
	conn_flush_soon(&s->conn);
}

/* ---- batch results ----------------------------------------------------- */

/* A tiny JSON reader over a complete document: never allocates, and each
 * function returns the position after what it read, or NULL on bad input. */

/* js_ws - skip whitespace. */
static const char *js_ws(const char *p, const char *end)
{
	while (p < end && (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n'))
		p++;
	return p;
}

/* js_lit - the character c (after whitespace). */
static const char *js_lit(const char *p, const char *end, char c)
{
	p = js_ws(p, end);
	return p < end && *p == c ? p + 1 : NULL;
}

/* js_str - a string; its raw (still escaped) contents are [*s, *s + *n). */
static const char *js_str(const char *p, const char *end, const char **s, size_t *n)
{
	p = js_lit(p, end, '"');
	if (!p)
		return NULL;
	const char *start = p;
	for (; p < end; p++) {
		if (*p == '\\') {
			p++;
			continue;
		}
		if (*p == '"') {
			*s = start;
			*n = (size_t)(p - start);
			return p + 1;
		}
	}
	return NULL;
}

/* js_skip - any value (objects and arrays nested up to 64 deep). */
static const char *js_skip(const char *p, const char *end)
{
	unsigned depth = 0;
	p = js_ws(p, end);
	do {
		if (p >= end)
			return NULL;
		const char *s;
		size_t n;
		switch (*p) {
		case '"':
			p = js_str(p, end, &s, &n);
			if (!p)
				return NULL;
			break;
		case '{':
		case '[':
			if (++depth > 64)
				return NULL;
			p++;
			break;
		case '}':
		case ']':
			if (!depth)
				return NULL;
			depth--;
			p++;
			break;
		default: /* numbers, literals, and ',' ':' inside containers */
			p++;
			while (p < end && !strchr(",:{}[]\" \t\r\n", *p))
				p++;
		}
		p = js_ws(p, end);
	} while (depth);
	return p;
}

/* js_key_is - the raw key [s, s + n) is name. */
static bool js_key_is(const char *s, size_t n, const char *name)
{
	return n == strlen(name) && !memcmp(s, name, n);
}

/* error_code - the "code" string of an {"error": {...}} object into code
 * (cut to its size; "error" when absent). */
static const char *error_code(const char *p, const char *end, char *code, size_t size)
{
	snprintf(code, size, "error");
	if (!(p = js_lit(p, end, '{')))
		return NULL;
	if ((p = js_ws(p, end)) < end && *p == '}')
		return p + 1;
	for (;;) {
		const char *k, *v;
		size_t kn, vn;
		if (!(p = js_str(p, end, &k, &kn)) || !(p = js_lit(p, end, ':')))
			return NULL;
		const char *q = js_ws(p, end);
		if (js_key_is(k, kn, "code") && q < end && *q == '"') {
			if (!(p = js_str(q, end, &v, &vn)))
				return NULL;
			snprintf(code, size, "%.*s", (int)RP_MIN(vn, size - 1), v);
		} else if (!(p = js_skip(p, end))) {
			return NULL;
		}
		p = js_ws(p, end);
		if (p < end && *p == ',') {
			p++;
			continue;
		}
		return p < end && *p == '}' ? p + 1 : NULL;
	}
}

/* batch_entry - one entry of results: *code is "" for {"id": ...}, else
 * its error's code. */
static const char *batch_entry(const char *p, const char *end, char *code, size_t size)
{
	code[0] = '\0';
	bool id = false, err = false;
	if (!(p = js_lit(p, end, '{')))
		return NULL;
	if ((p = js_ws(p, end)) < end && *p == '}')
		return NULL; /* neither an id nor an error */
	for (;;) {
		const char *k;
		size_t kn;
		if (!(p = js_str(p, end, &k, &kn)) || !(p = js_lit(p, end, ':')))
			return NULL;
		if (js_key_is(k, kn, "error")) {
			err = true;
			p = error_code(p, end, code, size);
		} else {
			id |= js_key_is(k, kn, "id");
			p = js_skip(p, end);
		}
		if (!p)
			return NULL;
		p = js_ws(p, end);
		if (p < end && *p == ',') {
			p++;
			continue;
		}
		if (p >= end || *p != '}' || id == err)
			return NULL;
		return p + 1;
	}
}

/* batch_results - count a batch's {"results": [...]} against the oldest
 * request: errors fail one message each under their code; entries missing
 * (or an unreadable body) fail the rest under "protocol". The entries with
 * an id are what blast_sess_done then accepts. */
static void batch_results(struct blast_sess *s, const char *p, size_t n)
{
	const struct blast_tx *t = blast_sess_oldest(s);
	const char *end = p + n;
	uint32_t ok = 0;
	const char *k;
	size_t kn;
	if (!(p = js_lit(p, end, '{')) || !(p = js_str(p, end, &k, &kn)) ||
	    !js_key_is(k, kn, "results") || !(p = js_lit(p, end, ':')) ||
	    !(p = js_lit(p, end, '['))) {
		blast_sess_fail_msgs(s, t->count, "protocol");
		return;
	}
	if ((p = js_ws(p, end)) < end && *p == ']')
		p = NULL; /* no entries: all missing */
	while (p) {
		char code[16];
		if (!(p = batch_entry(p, end, code, sizeof(code))))
			break;
		if (code[0])
			blast_sess_fail_msgs(s, 1, code);
		else
			ok++;
		p = js_ws(p, end);
		if (p < end && *p == ',')
			p++;
		else
			break;
	}
	if (t->count > t->failed + ok)
		blast_sess_fail_msgs(s, t->count - t->failed - ok, "protocol");
}

/* ---- responses --------------------------------------------------------- */

/* on_message_begin - a response starts: drop the last body. */
static int on_message_begin(http_parser *p)
{
	struct blast_sess *s = p->data;
	struct http_st *st = blast_sess_state(s);
	buf_reset(&st->body);
	return 0;
}

/* on_body - keep a batch's body for batch_results. */
static int on_body(http_parser *p, const char *at, size_t n)
{
	struct blast_sess *s = p->data;
	if (blast_opts_of(s)->mode->batches)
		buf_append(&((struct http_st *)blast_sess_state(s))->body, at, n);
	return 0;
}

/* on_message_complete - stop here: the response is counted before the
 * parser reads the next one. */
static int on_message_complete(http_parser *p)
{
	struct blast_sess *s = p->data;
	struct http_st *st = blast_sess_state(s);
	st->complete = true;
	http_parser_pause(p, 1);
	return 0;
}

static const http_parser_settings parser_settings = {
	.on_message_begin = on_message_begin,
	.on_body = on_body,
	.on_message_complete = on_message_complete,
};

/* response - count one complete response against the oldest request. */
static void response(struct blast_sess *s, struct http_st *st)
{
	int status = st->parser.status_code;
	char key[8];
	snprintf(key, sizeof(key), "%03d", RP_MIN(RP_MAX(status, 0), 999));
	log_debug("blast http %u: <- %d (%zu body bytes)", s->conn.io.slot, status,
	          buf_used(&st->body));
	if (status / 100 == 1)
		return; /* interim (100 Continue): the final answer follows */
	if (!blast_sess_oldest(s)) {
		/* Unasked: a 503 at accept (too many clients), then a close. */
		blast_sess_fail(s, key);
		return;
	}
	if (!http_should_keep_alive(&st->parser))
		blast_sess_retire(s);
	if (status == 202 && blast_opts_of(s)->mode->batches)
		batch_results(s, buf_head(&st->body), buf_used(&st->body));
	else if (status != 202 && status / 100 == 2)
		blast_sess_fail_msgs(s, UINT32_MAX, key); /* only 202 means queued */
	blast_sess_done(s, status);
}

/* http_data - parse every complete response and count it. */
static void http_data(struct blast_sess *s)
{
	struct http_st *st = blast_sess_state(s);
	struct buf *in = &s->conn.in;
	while (buf_used(in) && !conn_closing(&s->conn)) {
		if (s->state == BS_QUIT) {
			buf_consume(in, buf_used(in));
			return;
		}
		size_t n =
		    http_parser_execute(&st->parser, &parser_settings, buf_head(in), buf_used(in));
		if (st->complete) {
			buf_consume(in, n);
			st->complete = false;
			http_parser_pause(&st->parser, 0);
			response(s, st);
			continue;
		}
		if (HTTP_PARSER_ERRNO(&st->parser) != HPE_OK) {
			log_debug("blast http %u: unparsable response: %s", s->conn.io.slot,
			          http_errno_name(HTTP_PARSER_ERRNO(&st->parser)));
			blast_sess_fail(s, "protocol");
			return;
		}
		buf_consume(in, n);
		break;
	}
}

/* ---- the session ------------------------------------------------------- */

/* http_start - connected: no greeting in HTTP, messages can go at once. */
static void http_start(struct blast_sess *s)
{
	struct http_st *st = blast_sess_state(s);
	if (!tmpl.len)
		tmpl_make(blast_opts_of(s));
	http_parser_init(&st->parser, HTTP_RESPONSE);
	st->parser.data = s;
	blast_sess_ready(s);
}

/* http_release - the body buffer. */
static void http_release(struct blast_sess *s)
{
	struct http_st *st = blast_sess_state(s);
	buf_free(&st->body);
}

const struct blast_mode blast_mode_http = {
	.name = "http",
	.state_size = sizeof(struct http_st),
	.format = BLAST_MSG_JSON,
	.batches = false,
	.pipelines = true,
	.start = http_start,
	.send = http_send,
	.data = http_data,
	.quit = NULL, /* HTTP has no goodbye: the close is it */
	.release = http_release,
};

const struct blast_mode blast_mode_http_batch = {
	.name = "http-batch",
	.state_size = sizeof(struct http_st),
	.format = BLAST_MSG_JSON,
	.batches = true,
	.pipelines = true,
	.start = http_start,
	.send = http_send,
	.data = http_data,
	.quit = NULL,
	.release = http_release,
};
