/* http.c - HTTP/1.1 sessions for the API: parsing, limits, auth, routing,
 * responses (see http.h).
 *
 * Limits: request line + headers 16 KiB (431), URL 8 KiB (414), body
 * [api] max_request (413, answered before the body is read when the length
 * is declared, by Content-Length or by a chunk's size), keep-alive idle
 * time. Any parse error gets 400 and the connection is closed; a limit error
 * too, since the rest of the stream can no longer be trusted to be in step.
 * A request with a body but no valid key is answered (401, or 404/405) at
 * its headers: no byte of a body is buffered before authentication.
 * [limits] (base/climit.h): connections per client address (429), requests
 * per second per connection (slowed), headers within header_timeout and a
 * body within data_timeout (408), no reading while the unread responses
 * pass output_buffer. Refused requests close with the body discarded.
 */
#include "http.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <netinet/in.h>
#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>

#include "base/log.h"
#include "base/util.h"

#define PAUSE_INPUT_BYTES (8u << 20)

static void session_process(struct api_session *s);
static void session_free(struct api_session *s);
static void arm_timer(struct api_session *s);
static bool route_public(struct api_session *s);

/* ---- responses --------------------------------------------------------- */

static const char *reason(int status)
{
	switch (status) {
	case 100:
		return "Continue";
	case 200:
		return "OK";
	case 202:
		return "Accepted";
	case 400:
		return "Bad Request";
	case 401:
		return "Unauthorized";
	case 403:
		return "Forbidden";
	case 404:
		return "Not Found";
	case 405:
		return "Method Not Allowed";
	case 408:
		return "Request Timeout";
	case 413:
		return "Payload Too Large";
	case 414:
		return "URI Too Long";
	case 415:
		return "Unsupported Media Type";
	case 422:
		return "Unprocessable Entity";
	case 429:
		return "Too Many Requests";
	case 431:
		return "Request Header Fields Too Large";
	case 500:
		return "Internal Server Error";
	case 503:
		return "Service Unavailable";
	}
	return "Unknown";
}

void http_respond(struct api_session *s, int status, const char *ctype, const char *body,
                  size_t len, const char *extra_headers)
{
	struct buf *out = conn_outbuf(&s->conn);
	if (conn_closing(&s->conn))
		return;
	buf_printf(out,
	           "HTTP/1.1 %d %s\r\nServer: ringpost\r\nContent-Type: %s\r\nContent-Length: "
	           "%zu\r\n%s%s\r\n",
	           status, reason(status), ctype, len, extra_headers ? extra_headers : "",
	           s->keep_alive ? "" : "Connection: close\r\n");
	/* HEAD: the headers GET would get, Content-Length included, no body. */
	if (s->req.method != HTTP_HEAD || !(s->req.complete || s->req.early))
		buf_append(out, body, len);
	conn_flush_soon(&s->conn);
	s->srv->requests++;
}

void http_respond_json(struct api_session *s, int status, struct buf *body)
{
	buf_append(body, "\n", 1);
	http_respond(s, status, "application/json", buf_head(body), buf_used(body), NULL);
	buf_free(body);
}

void http_json_str(struct buf *b, const char *str, size_t n)
{
	buf_json_str(b, str, n);
}

void http_json_str_or_null(struct buf *b, const char *s)
{
	if (s[0])
		buf_json_str(b, s, strlen(s));
	else
		buf_puts(b, "null");
}

void http_error(struct api_session *s, int status, const char *code, const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	struct buf b = { 0 };
	buf_printf(&b, "{\"error\":{\"code\":\"%s\",\"message\":", code);
	http_json_str(&b, msg, strlen(msg));
	buf_puts(&b, "}}\n");
	const char *extra = NULL;
	if (status == 503 || status == 429)
		extra = "Retry-After: 30\r\n";
	else if (status == 401)
		extra = "WWW-Authenticate: Bearer realm=\"ringpost\"\r\n";
	http_respond(s, status, "application/json", buf_head(&b), buf_used(&b), extra);
	buf_free(&b);
}

/* ---- auth -------------------------------------------------------------- */

/* key_digests - hash the configured keys once per config, not per request. */
static void key_digests(struct api_server *srv)
{
	free(srv->key_digests);
	srv->key_digests = xcalloc(srv->cfg->nkeys + 1, SHA256_DIGEST_LENGTH);
	for (unsigned i = 0; i < srv->cfg->nkeys; i++)
		SHA256((const unsigned char *)srv->cfg->keys[i], strlen(srv->cfg->keys[i]),
		       srv->key_digests + (size_t)i * SHA256_DIGEST_LENGTH);
}

/* key_match - constant-time: compares digests of equal length, for every
 * key, without stopping at the first match. Returns key index + 1 or 0
 * (config_load refuses two keys with one token, so at most one matches). */
static int key_match(const struct api_server *srv, const char *token, size_t n)
{
	unsigned char have[SHA256_DIGEST_LENGTH];
	unsigned found = 0;
	SHA256((const unsigned char *)token, n, have);
	for (unsigned i = 0; i < srv->cfg->nkeys; i++) {
		const unsigned char *want = srv->key_digests + (size_t)i * SHA256_DIGEST_LENGTH;
		unsigned mask = 0u - (unsigned)(CRYPTO_memcmp(want, have, sizeof(have)) == 0);
		found = (found & ~mask) | ((i + 1) & mask);
	}
	return (int)found;
}

/* key_remember - what the request's key may do and its name, copied now:
 * a reload may replace the key list before the request is dispatched. */
static void key_remember(struct api_session *s)
{
	struct http_request *r = &s->req;
	const struct api_config *cfg = s->srv->cfg;
	r->key_scopes = 0;
	r->key_name[0] = '\0';
	if (!r->key_index || (unsigned)r->key_index > cfg->nkeys)
		return;
	unsigned i = (unsigned)r->key_index - 1;
	r->key_scopes = cfg->key_scopes ? cfg->key_scopes[i]
	                                : API_SCOPE_SUBMIT | API_SCOPE_READ | API_SCOPE_ADMIN;
	if (cfg->key_names)
		snprintf(r->key_name, sizeof(r->key_name), "%s", cfg->key_names[i]);
	else
		snprintf(r->key_name, sizeof(r->key_name), "#%u", i + 1);
}

const char *api_scope_name(unsigned scopes)
{
	if (scopes & API_SCOPE_ADMIN)
		return "admin";
	if (scopes & API_SCOPE_READ)
		return "read";
	if (scopes & API_SCOPE_SUBMIT)
		return "submit";
	return "none";
}

/* ---- parsing ----------------------------------------------------------- */

static struct api_session *of(http_parser *p)
{
	return p->data;
}

static int fail(struct api_session *s, int status, const char *code, const char *msg)
{
	if (!s->req.error) {
		s->req.error = status;
		s->req.error_code = code;
		s->req.error_msg = msg;
	}
	return -1;
}

static bool header_is(const struct buf *b, const char *name)
{
	return buf_used(b) == strlen(name) && !strncasecmp(buf_head(b), name, buf_used(b));
}

static void header_done(struct api_session *s)
{
	struct http_request *r = &s->req;
	if (!buf_used(&r->field))
		return;
	const char *v = buf_cstr(&r->value);
	if (header_is(&r->field, "Authorization")) {
		while (*v == ' ')
			v++;
		if (!strncasecmp(v, "Bearer ", 7)) {
			const char *t = v + 7;
			while (*t == ' ')
				t++;
			size_t n = strlen(t);
			while (n && t[n - 1] == ' ')
				n--;
			r->key_index = key_match(s->srv, t, n);
			key_remember(s);
		}
	} else if (header_is(&r->field, "Expect")) {
		r->expect_continue = !strncasecmp(v, "100-continue", 12);
	}
	buf_reset(&r->field);
	buf_reset(&r->value);
	r->in_value = false;
}

static int on_message_begin(http_parser *p)
{
	struct http_request *r = &of(p)->req;
	buf_reset(&r->url);
	buf_reset(&r->body);
	buf_reset(&r->field);
	buf_reset(&r->value);
	r->in_value = false;
	r->header_bytes = 0;
	r->key_index = 0;
	r->key_scopes = 0;
	r->key_name[0] = '\0';
	r->expect_continue = false;
	r->complete = false;
	r->early = false;
	of(p)->req_start_ms = loop_now_ms(of(p)->srv->loop);
	return 0;
}

static int on_url(http_parser *p, const char *at, size_t n)
{
	struct api_session *s = of(p);
	if (buf_used(&s->req.url) + n > HTTP_MAX_URL)
		return fail(s, 414, "uri_too_long", "the request URI is longer than 8 KiB");
	buf_append(&s->req.url, at, n);
	return 0;
}

static int header_bytes(struct api_session *s, size_t n)
{
	s->req.header_bytes += n;
	if (s->req.header_bytes > HTTP_MAX_HEADER)
		return fail(s, 431, "headers_too_large", "request headers exceed 16 KiB");
	return 0;
}

static int on_header_field(http_parser *p, const char *at, size_t n)
{
	struct api_session *s = of(p);
	if (s->req.in_value)
		header_done(s);
	buf_append(&s->req.field, at, n);
	return header_bytes(s, n);
}

static int on_header_value(http_parser *p, const char *at, size_t n)
{
	struct api_session *s = of(p);
	s->req.in_value = true;
	buf_append(&s->req.value, at, n);
	return header_bytes(s, n);
}

static int on_headers_complete(http_parser *p)
{
	struct api_session *s = of(p);
	header_done(s);
	s->req.method = (enum http_method)p->method;
	uint64_t max = s->srv->cfg->max_request;
	bool body = (p->flags & F_CHUNKED) || ((p->flags & F_CONTENTLENGTH) && p->content_length);
	if (body && !s->req.key_index && !route_public(s)) {
		s->req.early = true; /* dispatch answers, from the headers alone */
		return fail(s, 401, "unauthorized", "no valid key");
	}
	if ((p->flags & F_CONTENTLENGTH) && p->content_length > max)
		return fail(s, 413, "too_large", "the request body exceeds the size limit");
	if (body)
		s->body_start_ms = loop_now_ms(s->srv->loop);
	if (s->req.expect_continue && !(p->flags & F_CHUNKED) && p->content_length > 0)
		conn_puts(&s->conn, "HTTP/1.1 100 Continue\r\n\r\n");
	return 0;
}

/* on_chunk_header - a chunk announces its size: refuse one that cannot fit
 * now, as for a declared Content-Length, rather than wait for its bytes. */
static int on_chunk_header(http_parser *p)
{
	struct api_session *s = of(p);
	if (p->content_length > s->srv->cfg->max_request - buf_used(&s->req.body))
		return fail(s, 413, "too_large", "the request body exceeds the size limit");
	return 0;
}

static int on_body(http_parser *p, const char *at, size_t n)
{
	struct api_session *s = of(p);
	if (s->req.error)
		return 0; /* refused below: its Content-Length is read, then answered */
	if (buf_used(&s->req.body) + n > s->srv->cfg->max_request)
		return fail(s, 413, "too_large", "the request body exceeds the size limit");
	/* The body's size is the client's choice: no memory for it is a 503
	 * (Retry-After) for this request, never an abort of the daemon. The
	 * rest of a body of known length is read and dropped, so that the
	 * client, still sending, gets to read the answer. */
	if (!buf_try_reserve(&s->req.body, n)) {
		buf_free(&s->req.body);
		fail(s, 503, "unavailable", "no memory for the request body; retry later");
		return (p->flags & F_CHUNKED) ? -1 : 0;
	}
	buf_append(&s->req.body, at, n);
	s->body_bytes += n;
	return 0;
}

static int on_message_complete(http_parser *p)
{
	struct api_session *s = of(p);
	s->req.complete = true;
	s->req_start_ms = s->body_start_ms = s->body_bytes = 0;
	s->keep_alive = http_should_keep_alive(p) && !s->srv->shutting_down;
	http_parser_pause(p, 1);
	return 0;
}

static const http_parser_settings settings = {
	.on_message_begin = on_message_begin,
	.on_url = on_url,
	.on_header_field = on_header_field,
	.on_header_value = on_header_value,
	.on_headers_complete = on_headers_complete,
	.on_body = on_body,
	.on_chunk_header = on_chunk_header,
	.on_message_complete = on_message_complete,
};

/* ---- routing ----------------------------------------------------------- */

typedef void (*handler_fn)(struct api_session *s, const char *arg);

struct route {
	const char *path; /* exact path, or prefix when it ends in '/' */
	enum http_method method;
	handler_fn fn;
	unsigned scope; /* the API_SCOPE_* a key needs; 0 = no key needed */
};

#define SUBMIT API_SCOPE_SUBMIT
#define READ   API_SCOPE_READ
#define ADMIN  API_SCOPE_ADMIN

/* Who may do what: submit keys only submit, read keys only look, admin
 * keys (and bare tokens) do everything. */
static const struct route routes[] = {
	{ "/v1/messages", HTTP_POST, api_submit_one, SUBMIT },
	{ "/v1/messages/batch", HTTP_POST, api_submit_batch, SUBMIT },
	{ "/v1/messages/", HTTP_GET, api_message_status, READ },
	{ "/v1/messages/", HTTP_DELETE, api_message_purge, ADMIN },
	{ "/v1/stats", HTTP_GET, api_stats, READ },
	{ "/metrics", HTTP_GET, api_metrics, READ },
	{ "/healthz", HTTP_GET, api_healthz, 0 },
	{ "/v1/queue", HTTP_GET, api_queue_list, READ },
	{ "/v1/queue/", HTTP_POST, api_queue_admin, ADMIN },
	{ "/v1/bounces", HTTP_GET, api_bounce_list, READ },
	{ "/v1/bounces/", HTTP_GET, api_bounce_get, READ },
	{ "/v1/suppressions", HTTP_GET, api_suppress_list, READ },
	{ "/v1/suppressions", HTTP_POST, api_suppress_add, ADMIN },
	{ "/v1/suppressions/", HTTP_DELETE, api_suppress_del, ADMIN },
	{ "/v1/warmup", HTTP_GET, api_warmup_list, READ },
	{ "/", HTTP_GET, api_dashboard, 0 },
	{ "/", HTTP_HEAD, api_dashboard, 0 },
	{ "/ui", HTTP_GET, api_dashboard, 0 },
	{ "/ui", HTTP_HEAD, api_dashboard, 0 },
};

#undef SUBMIT
#undef READ
#undef ADMIN

/* route_match - whether path fits r; *arg is what follows a prefix ("/"
 * alone is exact: the dashboard, not every path). */
static bool route_match(const struct route *r, const char *path, const char **arg)
{
	size_t n = strlen(r->path);
	if (n > 1 && r->path[n - 1] == '/') {
		if (strncmp(path, r->path, n) || !path[n])
			return false;
		/* "/v1/messages/batch" is its own route, not an id. */
		*arg = path + n;
		return true;
	}
	*arg = "";
	return !strcmp(path, r->path);
}

/* route_find - the route for method and path (an exact route beats a
 * prefix one: "/v1/messages/batch"), *arg what follows a prefix; NULL
 * when none fits. */
static const struct route *route_find(const char *method, const char *path, const char **arg)
{
	const struct route *hit = NULL;
	for (size_t i = 0; i < RP_ARRAY_LEN(routes); i++) {
		const char *a;
		if (strcmp(http_method_str(routes[i].method), method) ||
		    !route_match(&routes[i], path, &a))
			continue;
		if (!hit || !*a) {
			hit = &routes[i];
			*arg = a;
		}
	}
	return hit;
}

unsigned api_route_scope(const char *method, const char *path)
{
	const char *arg;
	const struct route *r = route_find(method, path, &arg);
	return r ? r->scope : API_SCOPE_ADMIN;
}

/* authorize - whether the request's key may use route r; when not, the
 * 401 (no valid key) or 403 (a key without the scope) is answered here.
 * Logs name the key, never its token. */
static bool authorize(struct api_session *s, const struct route *r, const char *path)
{
	struct http_request *q = &s->req;
	if (!r->scope)
		return true;
	if (!q->key_index) {
		http_error(s, 401, "unauthorized",
		           "a valid 'Authorization: Bearer KEY' header is required");
		return false;
	}
	char qpath[160];
	log_quote(qpath, sizeof(qpath), path, strlen(path));
	if (!(q->key_scopes & r->scope)) {
		log_warn("api forbidden method=%s path=%s key=%s scope=%s needs=%s client=%s",
		         http_method_str(q->method), qpath, q->key_name,
		         api_scope_name(q->key_scopes), api_scope_name(r->scope), s->peer);
		http_error(s, 403, "forbidden", "key %s has scope %s; this needs %s", q->key_name,
		           api_scope_name(q->key_scopes), api_scope_name(r->scope));
		return false;
	}
	log_debug("api request method=%s path=%s key=%s client=%s", http_method_str(q->method),
	          qpath, q->key_name, s->peer);
	return true;
}

/* route_public - whether the request (headers in) goes to a route that
 * needs no key. */
static bool route_public(struct api_session *s)
{
	const char *url = buf_cstr(&s->req.url);
	char path[HTTP_MAX_URL + 1];
	size_t plen = strcspn(url, "?#");
	memcpy(path, url, plen);
	path[plen] = '\0';
	const char *arg;
	const struct route *r = route_find(http_method_str(s->req.method), path, &arg);
	return r && !r->scope;
}

static void dispatch(struct api_session *s)
{
	struct http_request *r = &s->req;
	char *url = buf_cstr(&r->url);
	char path[HTTP_MAX_URL + 1];
	size_t plen = strcspn(url, "?#");
	memcpy(path, url, plen);
	path[plen] = '\0';
	const struct route *hit = NULL;
	const char *arg = "";
	char allow[128] = "";
	for (size_t i = 0; i < RP_ARRAY_LEN(routes); i++) {
		const char *a;
		if (!route_match(&routes[i], path, &a))
			continue;
		/* An exact route beats a prefix one ("/v1/messages/batch"). */
		if (routes[i].method == r->method && (!hit || !*a)) {
			hit = &routes[i];
			arg = a;
		}
		if (!strstr(allow, http_method_str(routes[i].method))) {
			if (allow[0])
				strcat(allow, ", ");
			strcat(allow, http_method_str(routes[i].method));
		}
	}
	if (!hit) {
		if (allow[0]) {
			char extra[160];
			snprintf(extra, sizeof(extra), "Allow: %s\r\n", allow);
			char body[200];
			int n = snprintf(body, sizeof(body),
			                 "{\"error\":{\"code\":\"method_not_allowed\",\"message\":"
			                 "\"%s is not allowed here; use %s\"}}\n",
			                 http_method_str(r->method), allow);
			http_respond(s, 405, "application/json", body, (size_t)n, extra);
			return;
		}
		http_error(s, 404, "not_found", "no such endpoint: %s", path);
		return;
	}
	if (!authorize(s, hit, path))
		return;
	s->dispatching = true;
	hit->fn(s, arg);
	s->dispatching = false;
}

bool http_url_decode(const char *in, size_t n, bool plus_space, char *out, size_t outlen)
{
	const char *v = in, *e = in + n;
	size_t o = 0;
	bool whole = true;
	for (; v < e; v++) {
		if (o + 1 >= outlen) {
			whole = false;
			break;
		}
		if (*v == '%' && e - v >= 3 && isxdigit((unsigned char)v[1]) &&
		    isxdigit((unsigned char)v[2])) {
			char hx[3] = { v[1], v[2], 0 };
			char c = (char)strtol(hx, NULL, 16);
			if (!c)
				whole = false; /* no NUL inside a C string */
			else
				out[o++] = c;
			v += 2;
		} else {
			out[o++] = (plus_space && *v == '+') ? ' ' : *v;
		}
	}
	out[o] = '\0';
	return whole;
}

void api_iso_time(struct buf *b, uint64_t ms)
{
	if (!ms) {
		buf_puts(b, "null");
		return;
	}
	char out[32];
	rp_iso_time(ms, out);
	buf_printf(b, "\"%s\"", out);
}

bool http_query_param(const struct api_session *s, const char *name, char *out, size_t outlen)
{
	const char *url = buf_head(&s->req.url);
	size_t n = buf_used(&s->req.url), nl = strlen(name);
	const char *q = memchr(url, '?', n);
	if (!q)
		return false;
	const char *p = q + 1, *end = url + n;
	while (p < end) {
		const char *amp = memchr(p, '&', (size_t)(end - p));
		const char *e = amp ? amp : end;
		if ((size_t)(e - p) >= nl && !strncmp(p, name, nl) &&
		    (p + nl == e || p[nl] == '=')) {
			const char *v = p + nl + (p + nl < e);
			http_url_decode(v, (size_t)(e - v), true, out, outlen);
			return true;
		}
		p = amp ? amp + 1 : end;
	}
	return false;
}

void http_page_end(struct api_session *s, struct buf *b, unsigned n, unsigned limit,
                   const char *last)
{
	buf_puts(b, "]");
	if (n == limit) {
		buf_puts(b, ",\"next\":");
		http_json_str(b, last, strlen(last));
	}
	buf_puts(b, "}");
	http_respond_json(s, 200, b);
}

bool http_query_limit(struct api_session *s, unsigned max, unsigned *limit)
{
	char lim[16];
	if (!http_query_param(s, "limit", lim, sizeof(lim)))
		return true;
	char *end;
	unsigned long v = strtoul(lim, &end, 10);
	if (!*lim || *end || !v || v > max) {
		http_error(s, 400, "bad_field", "limit must be a number from 1 to %u", max);
		return false;
	}
	*limit = (unsigned)v;
	return true;
}

/* ---- session ----------------------------------------------------------- */

static void reset_for_next(struct api_session *s)
{
	buf_shrink(&s->req.body, 64 * 1024);
	buf_shrink(&s->req.url, 4096);
	s->req.complete = false;
	http_parser_pause(&s->parser, 0);
	if (!s->keep_alive)
		conn_close_after_flush(&s->conn);
}

void http_begin_async(struct api_session *s)
{
	s->busy = true;
}

void http_end_async(struct api_session *s)
{
	s->busy = false;
	if (s->released) {
		session_free(s);
		return;
	}
	if (s->dispatching)
		return; /* answered before the handler returned: dispatch goes on */
	reset_for_next(s);
	conn_recv_resume(&s->conn);
	session_process(s);
	conn_recv_poke(&s->conn); /* the input it consumed: read on (conn.h) */
	arm_timer(s);
}

/* limit - count a client limit that struck s and log it (within budget). */
static void limit(struct api_session *s, enum climit_reason r, const char *detail)
{
	s->srv->limits[r]++;
	climit_log_cut(&s->srv->limit_log, loop_now_ms(s->srv->loop), "http", s->peer, r, detail);
}

static void on_timeout(struct loop_timer *t)
{
	struct api_session *s = RP_CONTAINER_OF(t, struct api_session, timer);
	const struct climit_config *lc = s->srv->cfg->limits;
	uint64_t now = loop_now_ms(s->srv->loop);
	if (s->busy) {
		/* Not idle: look again later, or the session would never time
		 * out once the answer is written (only new data re-arms). */
		loop_timer_arm(s->srv->loop, &s->timer, s->srv->cfg->idle_timeout_ms, on_timeout);
		return;
	}
	if (conn_out_blocked(&s->conn)) {
		limit(s, CLIMIT_IDLE, "responses not read for too long: closed");
		conn_close(&s->conn);
		return;
	}
	const char *what = NULL;
	if (s->body_start_ms && now >= climit_data_deadline(lc, s->body_start_ms, s->body_bytes))
		what = "the request body did not come in time";
	else if (!s->body_start_ms && s->req_start_ms &&
	         now >= s->req_start_ms + lc->header_timeout_ms)
		what = "the request headers did not come in time";
	if (!what) { /* keep-alive idle: the ordinary end of a session */
		conn_close(&s->conn);
		return;
	}
	char detail[120];
	snprintf(detail, sizeof(detail), "%s: 408, closed", what);
	limit(s, CLIMIT_SLOW, detail);
	s->keep_alive = false;
	http_error(s, 408, "request_timeout", "%s", what);
	conn_close_after_flush(&s->conn);
}

/* arm_timer - the session's next deadline: keep-alive idle between
 * requests; a request's line and headers within header_timeout of its
 * first byte (more bytes do not extend it); its body within data_timeout
 * plus a second per min_data_rate bytes, and never idle for idle_timeout. */
static void arm_timer(struct api_session *s)
{
	if (s->released || conn_closing(&s->conn))
		return;
	const struct climit_config *lc = s->srv->cfg->limits;
	uint64_t now = loop_now_ms(s->srv->loop), at = now + s->srv->cfg->idle_timeout_ms;
	if (!s->busy && s->body_start_ms)
		at = RP_MIN(at, climit_data_deadline(lc, s->body_start_ms, s->body_bytes));
	else if (!s->busy && s->req_start_ms)
		at = RP_MIN(at, s->req_start_ms + lc->header_timeout_ms);
	loop_timer_arm(s->srv->loop, &s->timer, at > now ? at - now : 1, on_timeout);
}

/* gate - whether the input may be parsed now (climit_gate): a new request
 * counts against commands_per_second. */
static bool gate(struct api_session *s)
{
	enum climit_reason why;
	bool counted = !s->req_start_ms; /* between requests: a new one begins */
	if (climit_gate(&s->lim, &s->conn, s->srv->cfg->limits, counted, loop_now_ms(s->srv->loop),
	                &why))
		return true;
	if (why == CLIMIT_RATE)
		limit(s, why, "over [limits] commands_per_second (requests): slowed");
	else if (why == CLIMIT_OUTPUT)
		limit(s, why, "responses not read: reading stopped");
	return false;
}

static void session_process(struct api_session *s)
{
	struct buf *in = &s->conn.in;
	while (!s->busy && !conn_closing(&s->conn) && buf_used(in)) {
		if (!gate(s))
			break;
		size_t n = http_parser_execute(&s->parser, &settings, buf_head(in), buf_used(in));
		enum http_errno e = HTTP_PARSER_ERRNO(&s->parser);
		if (s->req.complete && !s->req.error) {
			buf_consume(in, n);
			dispatch(s);
			if (!s->busy)
				reset_for_next(s);
			continue;
		}
		if (e == HPE_OK && !s->req.complete) {
			buf_consume(in, n);
			break;
		}
		/* A limit or a syntax error: answer and close, dropping what
		 * else comes (a body we will not read). */
		s->keep_alive = false;
		if (s->req.early)
			dispatch(s); /* 401, or 404/405: the route decides */
		else if (s->req.error)
			http_error(s, s->req.error, s->req.error_code, "%s", s->req.error_msg);
		else if (e == HPE_HEADER_OVERFLOW)
			http_error(s, 431, "headers_too_large", "request headers exceed 16 KiB");
		else
			http_error(s, 400, "bad_request", "malformed HTTP request (%s)",
			           http_errno_name(e));
		buf_consume(in, buf_used(in));
		conn_close_discarding(&s->conn);
		return;
	}
	if (s->busy && buf_used(in) > PAUSE_INPUT_BYTES)
		conn_recv_pause(&s->conn);
}

static void on_data(struct conn *c)
{
	struct api_session *s = RP_CONTAINER_OF(c, struct api_session, conn);
	session_process(s);
	arm_timer(s);
}

static void on_closed(struct conn *c, int err)
{
	(void)c;
	(void)err;
}

static void on_released(struct conn *c)
{
	struct api_session *s = RP_CONTAINER_OF(c, struct api_session, conn);
	s->released = true;
	climit_conn_close(s->srv->climit, &s->lim.ticket);
	loop_timer_disarm(s->srv->loop, &s->timer);
	if (!s->busy)
		session_free(s);
}

static const struct conn_ops http_conn_ops = {
	.data = on_data,
	.closed = on_closed,
	.released = on_released,
};

static void session_free(struct api_session *s)
{
	struct api_server *srv = s->srv;
	rp_list_del(&s->link);
	srv->nsessions--;
	buf_free(&s->req.url);
	buf_free(&s->req.body);
	buf_free(&s->req.field);
	buf_free(&s->req.value);
	free(s);
	if (srv->gone)
		srv->gone(srv->ctx);
}

void api_session_start(struct api_server *srv, int fd)
{
	struct api_session *s = xcalloc(1, sizeof(*s));
	s->srv = srv;
	conn_init(&s->conn, srv->loop, &http_conn_ops, s);
	conn_peer_name(fd, s->peer, sizeof(s->peer));
	conn_set_out_max(&s->conn, srv->cfg->limits->output_buffer);
	struct sockaddr_storage ss;
	socklen_t sslen = sizeof(ss);
	if (getpeername(fd, (struct sockaddr *)&ss, &sslen))
		memset(&ss, 0, sizeof(ss));
	s->lim.exempt = climit_exempt(srv->cfg->limits, (struct sockaddr *)&ss);
	http_parser_init(&s->parser, HTTP_REQUEST);
	s->parser.data = s;
	s->keep_alive = true;
	rp_list_add(&srv->sessions, &s->link);
	srv->nsessions++;
	conn_attach(&s->conn, fd);
	if (srv->cfg->tls) /* HTTPS: TLS from the first byte */
		conn_tls_server(&s->conn, srv->cfg->tls);
	if (srv->nsessions > srv->cfg->max_clients || srv->shutting_down) {
		s->keep_alive = false;
		http_error(s, 503, "unavailable", "too many connections, try again later");
		conn_close_discarding(&s->conn);
		return;
	}
	if (!climit_conn_open(srv->climit, srv->cfg->limits, CLIMIT_API, (struct sockaddr *)&ss,
	                      &s->lim.ticket)) {
		limit(s, CLIMIT_CONNECTIONS, "too many connections from its address: 429");
		s->keep_alive = false;
		http_error(s, 429, "too_many_connections",
		           "too many connections from your address, try again later");
		conn_close_discarding(&s->conn);
		return;
	}
	arm_timer(s);
}

/* ---- server ------------------------------------------------------------ */

struct api_server *api_server_new(struct loop *loop, struct spool *spool,
                                  struct spool_reader *reader, const struct api_config *cfg,
                                  const struct api_ops *ops, void *ctx)
{
	struct api_server *srv = xcalloc(1, sizeof(*srv));
	srv->loop = loop;
	srv->spool = spool;
	srv->reader = reader;
	srv->cfg = cfg;
	srv->ops = ops;
	srv->ctx = ctx;
	rp_list_init(&srv->sessions);
	key_digests(srv);
	http_parser_set_max_header_size(HTTP_MAX_HEADER);
	return srv;
}

void api_server_free(struct api_server *srv)
{
	if (!srv)
		return;
	rp_assert(srv->nsessions == 0);
	free(srv->key_digests);
	free(srv);
}

void api_server_set_config(struct api_server *srv, const struct api_config *cfg)
{
	srv->cfg = cfg;
	key_digests(srv);
}

void api_shutdown_all(struct api_server *srv)
{
	srv->shutting_down = true;
	struct rp_list *pos, *tmp;
	rp_list_foreach_safe(pos, tmp, &srv->sessions)
	{
		struct api_session *s = rp_list_entry(pos, struct api_session, link);
		if (s->busy || s->released) {
			s->keep_alive = false; /* answers, then closes */
			continue;
		}
		conn_close(&s->conn);
	}
}

unsigned api_sessions(const struct api_server *srv)
{
	return srv->nsessions;
}

void api_set_climit(struct api_server *srv, struct climit *cl)
{
	srv->climit = cl;
}

void api_set_session_gone(struct api_server *srv, void (*fn)(void *ctx))
{
	srv->gone = fn;
}

void api_fill_stats(const struct api_server *srv, struct stats_snapshot *part)
{
	part->accepted_api += srv->accepted;
	part->suppressed += srv->suppressed;
	part->rejected += srv->rejected;
	part->inbound_connections += srv->nsessions;
	for (unsigned r = 0; r < CLIMIT_REASONS; r++)
		part->client_limits[CLIMIT_API][r] += srv->limits[r];
}
