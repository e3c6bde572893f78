/* http.h - the HTTP/1.1 session shared by the API's handlers (internal).
 *
 * http.c parses requests (http-parser), enforces limits and auth, routes, and
 * writes responses; the handlers in api_submit.c and api_query.c answer.
 * A handler either responds before returning, or calls http_begin_async and
 * later http_respond + http_end_async. Pipelined requests are answered in
 * order: the parser is paused while a request is being answered.
 */
#ifndef RP_HTTP_H
#define RP_HTTP_H

#include <http_parser.h>
#include <stdbool.h>
#include <stdint.h>

#include "api.h"
#include "base/buf.h"
#include "base/climit.h"
#include "base/conn.h"
#include "base/list.h"

#define HTTP_MAX_HEADER 16384 /* request line + headers */
#define HTTP_MAX_URL    8192

struct api_server {
	struct loop *loop;
	struct spool *spool;
	struct spool_reader *reader;
	const struct api_config *cfg;
	unsigned char *key_digests; /* SHA-256 of each cfg->keys[i] */
	const struct api_ops *ops;
	void *ctx;
	struct rp_list sessions; /* open sessions */
	unsigned nsessions;
	bool shutting_down;
	void (*gone)(void *ctx);         /* a session was freed */
	uint64_t accepted;               /* messages accepted */
	uint64_t suppressed;             /* recipients suppressed at submission */
	uint64_t rejected;               /* messages refused */
	uint64_t requests;               /* requests served */
	struct climit *climit;           /* connections per client address (all shards) */
	struct climit_log limit_log;     /* budget of cut-off log lines */
	uint64_t limits[CLIMIT_REASONS]; /* clients refused, slowed or cut off */
	/* Submissions whose messages are still to prepare, oldest first
	 * (api_submit.c: at most API_PREPARE_MAX per loop iteration). */
	struct api_submit *work_head, *work_tail;
	struct loop_defer work;
};

struct api_submit;

struct http_request {
	enum http_method method;
	struct buf url;
	struct buf body;
	struct buf field, value; /* the header being read */
	bool in_value;           /* value bytes were the last seen */
	size_t header_bytes;
	int key_index;       /* matching [api] key + 1, 0 = none */
	unsigned key_scopes; /* that key's API_SCOPE_* bits, 0 = none */
	char key_name[72];   /* that key's name (for logs and 403s), "" = none */
	bool early;          /* answered at its headers, the body unread (no key) */
	bool expect_continue;
	bool complete;
	int error; /* a limit was hit: answer this status */
	const char *error_code;
	const char *error_msg;
};

struct api_session {
	struct conn conn;
	struct api_server *srv;
	struct rp_list link; /* on srv->sessions */
	http_parser parser;
	struct http_request req;
	struct loop_timer timer;
	struct climit_session lim; /* [limits]: its connection, its request rate */
	uint64_t req_start_ms;     /* the request's first byte came (0: between requests) */
	uint64_t body_start_ms;    /* its headers were complete and a body follows */
	uint64_t body_bytes;       /* of the body so far */
	char peer[64];
	bool busy;        /* a handler is answering asynchronously */
	bool dispatching; /* inside a handler call */
	bool keep_alive;  /* of the request being answered */
	bool released;    /* the conn is gone; free when the handler ends */
};

/* http_respond - write a complete response (body as given). */
void http_respond(struct api_session *s, int status, const char *ctype, const char *body,
                  size_t len, const char *extra_headers);
/* http_respond_json - a JSON body from a buf (consumed). */
void http_respond_json(struct api_session *s, int status, struct buf *body);
/* http_error - {"error": {"code", "message"}} with status. */
RP_PRINTF(4, 5)
void http_error(struct api_session *s, int status, const char *code, const char *fmt, ...);
/* http_begin_async / http_end_async - bracket an asynchronous answer. */
void http_begin_async(struct api_session *s);
void http_end_async(struct api_session *s);
/* http_json_str - append s[0..n) as a JSON string literal. */
void http_json_str(struct buf *b, const char *str, size_t n);
/* http_json_str_or_null - the C string s as a JSON string, null when empty. */
void http_json_str_or_null(struct buf *b, const char *s);
/* http_query_param - the value of name in the request's query string
 * (copied into out, percent-decoded); false when absent. */
bool http_query_param(const struct api_session *s, const char *name, char *out, size_t outlen);
/* http_query_limit - ?limit=N into *limit when given (1 .. max); a bad
 * value is answered 400 naming it and false returned. */
bool http_query_limit(struct api_session *s, unsigned max, unsigned *limit);
/* http_page_end - a paged list's end: closes its array (b holds
 * {"total",...,"NAME":[ and n entries), adds "next": last when the page
 * is full (n == limit: the client asks again with after=last), and
 * answers 200 with it. */
void http_page_end(struct api_session *s, struct buf *b, unsigned n, unsigned limit,
                   const char *last);
/* http_url_decode - percent-decode in[0..n) into out (NUL-terminated;
 * '+' is a space when plus_space: query strings); false when it did not
 * fit or held an encoded NUL. */
bool http_url_decode(const char *in, size_t n, bool plus_space, char *out, size_t outlen);
/* api_iso_time - "2026-12-07T09:00:00.000Z" (or null for 0) as JSON. */
void api_iso_time(struct buf *b, uint64_t ms);

/* Handlers (api_submit.c, api_query.c). arg is the path after the route's
 * prefix (for prefix routes), NUL-terminated. */
void api_submit_one(struct api_session *s, const char *arg);
void api_submit_batch(struct api_session *s, const char *arg);
void api_message_status(struct api_session *s, const char *arg);
void api_message_purge(struct api_session *s, const char *arg);
void api_stats(struct api_session *s, const char *arg);
void api_metrics(struct api_session *s, const char *arg);
void api_healthz(struct api_session *s, const char *arg);
void api_queue_list(struct api_session *s, const char *arg);
void api_queue_admin(struct api_session *s, const char *arg);
void api_bounce_list(struct api_session *s, const char *arg);
void api_bounce_get(struct api_session *s, const char *arg);
void api_suppress_list(struct api_session *s, const char *arg);
void api_suppress_add(struct api_session *s, const char *arg);
void api_suppress_del(struct api_session *s, const char *arg);
/* api_warmup_list - GET /v1/warmup: the warm-up counters (api_warmup.c). */
void api_warmup_list(struct api_session *s, const char *arg);
/* api_dashboard - the dashboard page (dashboard.c); no key needed. */
void api_dashboard(struct api_session *s, const char *arg);

/* api_check_fn - one message as it would be stored: head[0..hlen) then
 * body[0..blen) (a recipient's own copy, whole in head, when {{vars}}
 * make one per recipient). */
typedef void (*api_check_fn)(void *arg, const char *head, size_t hlen, const char *body,
                             size_t blen);
/* api_submit_check - the JSON text of one message validated and built as
 * POST /v1/messages does, without a session and without a commit (tests,
 * fuzzing): 0 when it would be committed, each message passed to each
 * (may be NULL); else the HTTP status with "code: message" in err. sp only
 * numbers the message. */
int api_submit_check(const char *json, size_t len, const struct api_config *cfg, struct spool *sp,
                     char *err, size_t errlen, api_check_fn each, void *arg);

#endif
