/* api_submit.c - POST /v1/messages and POST /v1/messages/batch.
 *
 * A request is parsed (jansson), every message validated and built (MIME,
 * or the caller's raw message), committed through the one submission path
 * (queue/submit.h), and answered
 * with 202 only when every accepted message of the request is durable.
 * Validation names the field: 400 for wrong shapes, 422 for bad addresses,
 * 413 for sizes, 503 (Retry-After) when the spool refuses new mail.
 * {{name}} in subject, text and html is rendered per recipient (recipient
 * vars over message vars); only then does each recipient get its own body.
 * Rendering is bounded while it runs: one recipient's copy by
 * max_message_size, everything one request renders by API_RENDER_MAX
 * (413 either way, never gigabytes first). Every header value is checked
 * after rendering: CR, LF or NUL in it is a 400 naming the field.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>

#include "base/addr.h"
#include "base/log.h"
#include "base/msg_header.h"
#include "base/util.h"
#include "http.h"
#include "mime.h"
#include "queue/submit.h"
#include "template.h"
#include "api_submit_impl.h"

#define TO_LIST_MAX 10 /* more recipients than this: To: undisclosed-recipients:; */

/* What one request may render for its recipients' own copies in all (they
 * stay in memory until the request is answered): 4 x max_request_size, at
 * least 64 MiB. */
#define API_RENDER_FACTOR 4
#define API_RENDER_MIN    (64ull << 20)

struct api_submit {
	struct api_session *s;
	json_t *doc;
	bool batch;
	unsigned n, pending;
	struct api_msg *msgs;
	json_t **objs;                /* the messages' JSON (in doc); NULL
	                               * until the body is parsed */
	unsigned next;                /* the next one to prepare */
	struct api_submit *work_next; /* srv->work_head list */
	uint64_t render_max;          /* bytes of per-recipient copies it may
	                               * render in all (API_RENDER_*) */
	uint64_t render_left;         /* of which still left */
};

/* Work on submissions (parsing, then validating, composing and handing
 * messages to the spool) per loop iteration and shard, across requests:
 * a few 1,000-message batches arriving together held the loop for 140 ms. */
#define API_WORK_SLICE_NS 4000000ull

void api_msg_error(struct api_msg *m, int status, const char *code, const char *fmt, ...)
{
	if (m->status)
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(m->message, sizeof(m->message), fmt, ap);
	va_end(ap);
	m->status = status;
	snprintf(m->code, sizeof(m->code), "%s", code);
}

/* ---- fields ------------------------------------------------------------ */

static const char *opt_string(struct api_msg *m, json_t *o, const char *key, size_t *len)
{
	json_t *v = json_object_get(o, key);
	if (!v || json_is_null(v))
		return NULL;
	if (!json_is_string(v)) {
		api_msg_error(m, 400, "bad_field", "%s must be a string", key);
		return NULL;
	}
	if (len)
		*len = json_string_length(v);
	return json_string_value(v);
}

static bool scalar_vars(struct api_msg *m, json_t *vars, const char *where)
{
	if (!vars)
		return true;
	if (!json_is_object(vars)) {
		api_msg_error(m, 400, "bad_field", "%s must be an object", where);
		return false;
	}
	const char *k;
	json_t *v;
	json_object_foreach(vars, k, v)
	{
		if (json_is_object(v) || json_is_array(v)) {
			api_msg_error(m, 400, "bad_field",
			              "%s.%s must be a string, number or boolean", where, k);
			return false;
		}
	}
	return true;
}

static bool parse_recipients(struct api_msg *m, json_t *to, uint32_t max)
{
	json_t *one = NULL;
	size_t n;
	if (json_is_string(to) || json_is_object(to)) {
		one = to;
		n = 1;
	} else if (json_is_array(to)) {
		n = json_array_size(to);
	} else {
		api_msg_error(m, 400, "bad_field", "to must be an array of addresses");
		return false;
	}
	if (!n) {
		api_msg_error(m, 400, "bad_field", "to must name at least one recipient");
		return false;
	}
	if (n > max) {
		api_msg_error(m, 400, "bad_field", "to has %zu recipients; at most %u are allowed",
		              n, max);
		return false;
	}
	m->to = xcalloc(n, sizeof(*m->to));
	m->nrcpt = (unsigned)n;
	for (size_t i = 0; i < n; i++) {
		json_t *e = one ? one : json_array_get(to, i);
		struct api_rcpt *r = &m->to[i];
		char where[40];
		snprintf(where, sizeof(where), "to[%zu]", i);
		json_t *email = e;
		if (json_is_object(e)) {
			const char *k;
			json_t *v;
			json_object_foreach(e, k, v)
			{
				if (strcmp(k, "email") && strcmp(k, "vars")) {
					api_msg_error(m, 400, "bad_field", "%s: unknown field '%s'",
					              where, k);
					return false;
				}
			}
			email = json_object_get(e, "email");
			r->vars = json_object_get(e, "vars");
			char vw[48];
			snprintf(vw, sizeof(vw), "%s.vars", where);
			if (!scalar_vars(m, r->vars, vw))
				return false;
		}
		if (!json_is_string(email)) {
			api_msg_error(m, 400, "bad_field",
			              "%s must be an address or {\"email\", \"vars\"}", where);
			return false;
		}
		r->email = json_string_value(email);
		r->len = json_string_length(email);
		if (!api_check_address(m, where, r->email, r->len, &r->at))
			return false;
	}
	return true;
}

/* ---- rendering --------------------------------------------------------- */

struct lookup_ctx {
	json_t *rcpt_vars, *msg_vars;
	char scratch[64];
};

static const char *lookup(void *arg, const char *name, size_t len, size_t *vlen)
{
	struct lookup_ctx *c = arg;
	json_t *v = NULL;
	if (c->rcpt_vars)
		v = json_object_getn(c->rcpt_vars, name, len);
	if (!v && c->msg_vars)
		v = json_object_getn(c->msg_vars, name, len);
	if (!v)
		return NULL;
	if (json_is_string(v)) {
		*vlen = json_string_length(v);
		return json_string_value(v);
	}
	if (json_is_integer(v))
		*vlen = (size_t)snprintf(c->scratch, sizeof(c->scratch), "%lld",
		                         (long long)json_integer_value(v));
	else if (json_is_real(v)) /* %g's 6 digits would print 1234567.89 as 1.23457e+06 */
		*vlen =
		    (size_t)snprintf(c->scratch, sizeof(c->scratch), "%.15g", json_real_value(v));
	else if (json_is_true(v))
		*vlen = (size_t)snprintf(c->scratch, sizeof(c->scratch), "true");
	else if (json_is_false(v))
		*vlen = (size_t)snprintf(c->scratch, sizeof(c->scratch), "false");
	else
		*vlen = 0, c->scratch[0] = '\0';
	return c->scratch;
}

/* render - s[0..n) rendered with lc's vars into a new string (the
 * caller frees it), at most *left bytes, which it takes from *left; NULL
 * (nothing kept) when the rendering would pass it. */
static char *render(const char *s, size_t n, struct lookup_ctx *lc, bool html, uint64_t *left,
                    size_t *out_len)
{
	struct buf b = { 0 };
	size_t max = (size_t)RP_MIN(*left, (uint64_t)SIZE_MAX);
	if (!template_render(&b, s, n, lookup, lc, html ? TEMPLATE_HTML : TEMPLATE_RAW, max)) {
		buf_free(&b);
		return NULL;
	}
	*out_len = buf_used(&b);
	*left -= buf_used(&b);
	return buf_cstr(&b); /* the buf's storage, freed by the caller */
}

/* check_size - the message as built against max_message_size; which names
 * the recipient for a per-recipient body ("" for the shared one). */
static bool check_size(struct api_msg *m, const struct submission *sub,
                       const struct api_config *cfg, const char *which)
{
	uint64_t n = submission_size(sub);
	if (n <= cfg->max_message_size)
		return true;
	api_msg_error(m, 413, "too_large", "the message%s is %llu bytes; the limit is %llu", which,
	              (unsigned long long)n, (unsigned long long)cfg->max_message_size);
	return false;
}

/* ---- one-click unsubscribe (RFC 2369, RFC 8058) ------------------------ */

#define UNSUB_MAX 900 /* bytes of one rendered URI: the field stays under 998 */

/* parse_unsubscribe - "unsubscribe": {"url": "https://...", "mailto": "..."}
 * (either or both, {{vars}} allowed). */
static bool parse_unsubscribe(struct api_msg *m, json_t *u, struct mime_parts *mp)
{
	if (!u || json_is_null(u))
		return true;
	if (!json_is_object(u)) {
		api_msg_error(m, 400, "bad_field",
		              "unsubscribe must be an object: {\"url\", \"mailto\"}");
		return false;
	}
	const char *k;
	json_t *v;
	json_object_foreach(u, k, v)
	{
		if (strcmp(k, "url") && strcmp(k, "mailto")) {
			api_msg_error(m, 400, "bad_field", "unsubscribe: unknown field '%s'", k);
			return false;
		}
		if (!json_is_string(v) || !json_string_length(v)) {
			api_msg_error(m, 400, "bad_field",
			              "unsubscribe.%s must be a non-empty string", k);
			return false;
		}
	}
	json_t *url = json_object_get(u, "url"), *mt = json_object_get(u, "mailto");
	if (!url && !mt) {
		api_msg_error(m, 400, "bad_field", "unsubscribe needs url, mailto or both");
		return false;
	}
	if (url) {
		mp->unsub_url = json_string_value(url);
		mp->unsub_url_len = json_string_length(url);
		if (mp->unsub_url_len < 9 || strncasecmp(mp->unsub_url, "https://", 8)) {
			api_msg_error(
			    m, 400, "bad_field",
			    "unsubscribe.url must be an https:// URL (RFC 8058 one-click)");
			return false;
		}
	}
	if (mt) {
		mp->unsub_mailto = json_string_value(mt);
		mp->unsub_mailto_len = json_string_length(mt);
	}
	for (unsigned i = 0; i < mp->nh; i++)
		if (!strncasecmp(mp->hv[i].name, "List-Unsubscribe", 16)) {
			api_msg_error(m, 400, "bad_field",
			              "headers.%s cannot be combined with unsubscribe",
			              mp->hv[i].name);
			return false;
		}
	return true;
}

/* unsub_uri - "<URI>" appended to out: s rendered (values percent-encoded)
 * with lc's vars, or as written when lc is NULL; checked to be a URI. */
static bool unsub_uri(struct api_msg *m, const char *what, const char *s, size_t n,
                      struct lookup_ctx *lc, struct buf *out)
{
	buf_puts(out, "<");
	size_t start = buf_used(out);
	if (!strcmp(what, "mailto") && (n < 7 || strncasecmp(s, "mailto:", 7)))
		buf_puts(out, "mailto:");
	if (lc && !template_render(out, s, n, lookup, lc, TEMPLATE_URL, UNSUB_MAX + 1)) {
		api_msg_error(m, 400, "bad_field", "unsubscribe.%s is longer than %d bytes", what,
		              UNSUB_MAX);
		return false;
	}
	if (!lc)
		buf_append(out, s, n);
	size_t len = buf_used(out) - start;
	const unsigned char *p = (const unsigned char *)buf_head(out) + start;
	if (memchr(p, '{', len) || memchr(p, '}', len)) {
		api_msg_error(m, 400, "bad_field",
		              "unsubscribe.%s has a {{placeholder}} no vars give (or a brace)",
		              what);
		return false;
	}
	for (size_t i = 0; i < len; i++)
		if (p[i] <= ' ' || p[i] >= 0x7f || p[i] == '<' || p[i] == '>' || p[i] == '"') {
			api_msg_error(
			    m, 400, "bad_field",
			    "unsubscribe.%s must be a URI: no blanks, quotes, angle brackets "
			    "or non-ASCII (percent-encode them)",
			    what);
			return false;
		}
	if (len > UNSUB_MAX) {
		api_msg_error(m, 400, "bad_field", "unsubscribe.%s is longer than %d bytes", what,
		              UNSUB_MAX);
		return false;
	}
	buf_puts(out, ">");
	return true;
}

/* unsub_headers - hv[0..nh) = the caller's fields, then List-Unsubscribe
 * (its value in val) and, for a URL, List-Unsubscribe-Post. */
static bool unsub_headers(struct api_msg *m, const struct mime_parts *mp, struct lookup_ctx *lc,
                          struct buf *val, struct mime_header *hv, unsigned *nh)
{
	if (mp->nh)
		memcpy(hv, mp->hv, mp->nh * sizeof(*hv));
	*nh = mp->nh;
	if (!mp->unsub_url && !mp->unsub_mailto)
		return true;
	buf_reset(val);
	if (mp->unsub_url && !unsub_uri(m, "url", mp->unsub_url, mp->unsub_url_len, lc, val))
		return false;
	if (mp->unsub_url && mp->unsub_mailto)
		buf_puts(val, ", ");
	if (mp->unsub_mailto &&
	    !unsub_uri(m, "mailto", mp->unsub_mailto, mp->unsub_mailto_len, lc, val))
		return false;
	hv[(*nh)++] = (struct mime_header){ .name = "List-Unsubscribe", .value = buf_cstr(val) };
	if (mp->unsub_url)
		hv[(*nh)++] = (struct mime_header){ .name = "List-Unsubscribe-Post",
			                            .value = "List-Unsubscribe=One-Click" };
	return true;
}

/* mime_of - the MIME description of the parts (to, bodies and ids set by
 * the caller). */
static void mime_of(const struct mime_parts *mp, struct mime_message *mm)
{
	memset(mm, 0, sizeof(*mm));
	mm->from = mp->from;
	mm->subject = mp->subject;
	mm->text = mp->text;
	mm->text_len = mp->text_len;
	mm->html = mp->html;
	mm->html_len = mp->html_len;
	mm->headers = mp->hv;
	mm->nheaders = mp->nh;
	mm->attachments = mp->att;
	mm->nattachments = mp->natt;
}

/* build_shared - one body for every recipient (no placeholders). */
static bool build_shared(struct api_msg *m, const struct mime_parts *mp,
                         const struct api_config *cfg)
{
	struct mime_message mm;
	char mid[64], id[17], err[200];
	struct buf to = { 0 }, uv = { 0 };
	mime_of(mp, &mm);
	struct mime_header *hv = xcalloc(mp->nh + 2, sizeof(*hv));
	unsigned nh;
	if (!unsub_headers(m, mp, NULL, &uv, hv, &nh)) {
		free(hv);
		buf_free(&uv);
		return false;
	}
	mm.headers = hv;
	mm.nheaders = nh;
	rp_id_format(m->sub.id, id);
	if (mp->to_override) {
		buf_puts(&to, mp->to_override);
	} else if (m->nrcpt <= TO_LIST_MAX) {
		for (unsigned i = 0; i < m->nrcpt; i++) {
			if (i)
				buf_puts(&to, ", ");
			buf_append(&to, m->to[i].email, m->to[i].len);
		}
	} else {
		buf_puts(&to, "undisclosed-recipients:;");
	}
	mm.to = buf_cstr(&to);
	snprintf(mid, sizeof(mid), "%s@%s", id, cfg->hostname);
	mm.message_id = mid;
	mm.date_ms = m->sub.submit_ms;
	bool built = mime_build(&mm, &m->body, err, sizeof(err));
	buf_free(&to);
	buf_free(&uv);
	free(hv);
	if (!built) {
		api_msg_error(m, 400, "bad_field", "%s", err);
		return false;
	}
	submission_content(&m->sub, buf_head(&m->body), buf_used(&m->body));
	return check_size(m, &m->sub, cfg, "");
}

/* A recipient's rendered subject, text and html (each NULL when absent). */
struct rendered {
	char *subject, *text, *html;
	size_t sl, tl, hl;
};

static void rendered_free(struct rendered *r)
{
	free(r->subject);
	free(r->text);
	free(r->html);
	memset(r, 0, sizeof(*r));
}

/* render_rcpt - to[i]'s subject, text and html, bounded while they are
 * rendered by max_message_size and by what the request may still render;
 * false (answered 413 or 400, nothing kept) when a bound is passed or the
 * subject holds a line break once rendered. */
static bool render_rcpt(struct api_msg *m, const struct mime_parts *mp, unsigned i,
                        struct lookup_ctx *lc, const struct api_config *cfg, struct rendered *r)
{
	uint64_t *req_left = &m->req->render_left;
	bool by_request = *req_left < cfg->max_message_size;
	uint64_t left = RP_MIN(cfg->max_message_size, *req_left);
	memset(r, 0, sizeof(*r));
	if ((mp->subject &&
	     !(r->subject = render(mp->subject, mp->subj_len, lc, false, &left, &r->sl))) ||
	    (mp->text && !(r->text = render(mp->text, mp->text_len, lc, false, &left, &r->tl))) ||
	    (mp->html && !(r->html = render(mp->html, mp->html_len, lc, true, &left, &r->hl)))) {
		rendered_free(r);
		if (by_request)
			api_msg_error(
			    m, 413, "too_large",
			    "the request renders more than %llu bytes for its recipients (at "
			    "to[%u]); send fewer recipients or messages per request",
			    (unsigned long long)(m->req->render_max), i);
		else
			api_msg_error(
			    m, 413, "too_large",
			    "the message for to[%u] renders to more than %llu bytes, the limit", i,
			    (unsigned long long)cfg->max_message_size);
		return false;
	}
	if (r->subject && !mime_header_value_ok(r->subject, r->sl)) {
		rendered_free(r);
		api_msg_error(
		    m, 400, "bad_field",
		    "subject for to[%u] has a line break (CR or LF) or a NUL byte once its "
		    "vars are in",
		    i);
		return false;
	}
	return true;
}

/* build_variants - each recipient its own body, with its vars rendered
 * into subject, text and html; the prefix is written into each. */
static bool build_variants(struct api_msg *m, const struct mime_parts *mp,
                           const struct api_config *cfg)
{
	struct mime_message mm;
	char mid[64], id[17], err[200];
	mime_of(mp, &mm);
	rp_id_format(m->sub.id, id);
	mm.date_ms = m->sub.submit_ms;
	mm.message_id = mid;
	const struct buf *prefix = submission_prefix(&m->sub);
	m->variants = xcalloc(m->nrcpt, sizeof(*m->variants));
	m->viov = xcalloc(m->nrcpt, sizeof(*m->viov));
	struct mime_header *hv = xcalloc(mp->nh + 2, sizeof(*hv));
	struct buf uv = { 0 };
	bool ok = false;
	mm.headers = hv;
	for (unsigned i = 0; i < m->nrcpt; i++) {
		struct lookup_ctx lc = { .rcpt_vars = m->to[i].vars, .msg_vars = mp->vars };
		if (!unsub_headers(m, mp, &lc, &uv, hv, &mm.nheaders))
			goto out;
		struct rendered r;
		if (!render_rcpt(m, mp, i, &lc, cfg, &r))
			goto out;
		char to[ADDR_MAX + 1];
		snprintf(to, sizeof(to), "%.*s", (int)m->to[i].len, m->to[i].email);
		mm.to = mp->to_override ? mp->to_override : to;
		mm.subject = r.subject;
		mm.text = r.text;
		mm.text_len = r.tl;
		mm.html = r.html;
		mm.html_len = r.hl;
		snprintf(mid, sizeof(mid), "%s.%u@%s", id, i, cfg->hostname);
		buf_append(&m->variants[i], buf_head(prefix), buf_used(prefix));
		bool built = mime_build(&mm, &m->variants[i], err, sizeof(err));
		rendered_free(&r);
		if (!built) {
			api_msg_error(m, 400, "bad_field", "to[%u]: %s", i, err);
			goto out;
		}
		/* The copy stays in memory until the request is answered. */
		m->req->render_left -= RP_MIN(m->req->render_left, buf_used(&m->variants[i]));
		if (buf_used(&m->variants[i]) > cfg->max_message_size) {
			api_msg_error(m, 413, "too_large",
			              "the message for to[%u] is %zu bytes; the limit is %llu", i,
			              buf_used(&m->variants[i]),
			              (unsigned long long)cfg->max_message_size);
			goto out;
		}
		m->viov[i].iov_base = buf_head(&m->variants[i]);
		m->viov[i].iov_len = buf_used(&m->variants[i]);
	}
	submission_variants(&m->sub, m->viov);
	ok = true;
out:
	free(hv);
	buf_free(&uv);
	return ok;
}

/* build_mime - subject/text/html/headers/attachments into one body, or one
 * per recipient when placeholders are used. */
static bool build_mime(struct api_msg *m, json_t *o, const struct api_config *cfg)
{
	struct mime_parts mp = { 0 };
	mp.from = opt_string(m, o, "from", NULL);
	mp.subject = opt_string(m, o, "subject", &mp.subj_len);
	mp.text = opt_string(m, o, "text", &mp.text_len);
	mp.html = opt_string(m, o, "html", &mp.html_len);
	if (m->status)
		return false;
	if (!mp.text && !mp.html) {
		api_msg_error(m, 400, "bad_field", "one of text, html or raw is required");
		return false;
	}
	if (mp.subject && !mime_header_value_ok(mp.subject, mp.subj_len)) {
		api_msg_error(
		    m, 400, "bad_field",
		    "subject has a line break (CR or LF) or a NUL byte (header injection)");
		return false;
	}
	mp.vars = json_object_get(o, "vars");
	bool ok = false;
	if (!scalar_vars(m, mp.vars, "vars") ||
	    !api_parse_headers(m, json_object_get(o, "headers"), &mp) ||
	    !parse_unsubscribe(m, json_object_get(o, "unsubscribe"), &mp) ||
	    !api_parse_attachments(m, json_object_get(o, "attachments"), &mp))
		goto out;
	bool per_rcpt =
	    (mp.unsub_url && template_has_vars(mp.unsub_url, mp.unsub_url_len)) ||
	    (mp.unsub_mailto && template_has_vars(mp.unsub_mailto, mp.unsub_mailto_len)) ||
	    (mp.subject && template_has_vars(mp.subject, mp.subj_len)) ||
	    (mp.text && template_has_vars(mp.text, mp.text_len)) ||
	    (mp.html && template_has_vars(mp.html, mp.html_len));
	ok = per_rcpt ? build_variants(m, &mp, cfg) : build_shared(m, &mp, cfg);
out:
	free(mp.hv);
	free(mp.att);
	buf_free(&mp.att_data);
	return ok;
}

/* raw_unsubscribe - a raw message's unsubscribe fields, written into
 * m->body ahead of it (no {{vars}}: a raw message is sent as it is). */
static bool raw_unsubscribe(struct api_msg *m, json_t *u, const char *raw, size_t len)
{
	struct mime_parts mp = { 0 };
	if (!u || json_is_null(u))
		return true;
	if (!parse_unsubscribe(m, u, &mp))
		return false;
	if ((mp.unsub_url && template_has_vars(mp.unsub_url, mp.unsub_url_len)) ||
	    (mp.unsub_mailto && template_has_vars(mp.unsub_mailto, mp.unsub_mailto_len))) {
		api_msg_error(m, 400, "bad_field",
		              "unsubscribe: {{vars}} need text or html (raw is sent as it is)");
		return false;
	}
	struct msg_header_info hi;
	const char *v;
	size_t vl;
	msg_header_scan(raw, len, &hi);
	if (msg_header_get(raw, hi.end, "List-Unsubscribe", &v, &vl) ||
	    msg_header_get(raw, hi.end, "List-Unsubscribe-Post", &v, &vl)) {
		api_msg_error(m, 400, "bad_field",
		              "raw has List-Unsubscribe already; drop unsubscribe");
		return false;
	}
	struct mime_header hv[2];
	unsigned nh;
	struct buf val = { 0 };
	bool ok = unsub_headers(m, &mp, NULL, &val, hv, &nh);
	for (unsigned i = 0; ok && i < nh; i++)
		mime_encode_header(&m->body, hv[i].name, hv[i].value, false);
	buf_free(&val);
	return ok;
}

/* build_raw - the caller's own RFC 5322 message. */
static bool build_raw(struct api_msg *m, json_t *o, const struct api_config *cfg)
{
	static const char *const excluded[] = { "subject", "text", "html", "headers",
		                                "attachments" };
	for (size_t i = 0; i < RP_ARRAY_LEN(excluded); i++)
		if (json_object_get(o, excluded[i])) {
			api_msg_error(m, 400, "bad_field", "raw cannot be combined with %s",
			              excluded[i]);
			return false;
		}
	size_t len = 0;
	const char *raw = opt_string(m, o, "raw", &len);
	if (!raw) { /* null: nothing to send, and it must say so (fuzz_json_submit) */
		api_msg_error(m, 400, "bad_field", "raw must be a string");
		return false;
	}
	if (memchr(raw, '\0', len)) {
		api_msg_error(m, 400, "bad_field", "raw contains a NUL byte");
		return false;
	}
	if (!raw_unsubscribe(m, json_object_get(o, "unsubscribe"), raw, len))
		return false;
	size_t at = buf_used(&m->body);
	buf_append(&m->body, raw, len);
	msg_normalize_newlines(&m->body, at);
	struct msg_header_info hi;
	msg_header_scan(buf_head(&m->body), buf_used(&m->body), &hi);
	if (!hi.fields) {
		api_msg_error(m, 400, "bad_field",
		              "raw is not an RFC 5322 message (no header fields)");
		return false;
	}
	if (hi.received > MSG_HOPS_MAX) {
		api_msg_error(
		    m, 400, "too_many_hops",
		    "raw has %u Received: fields; more than %u means a mail loop (RFC 5321 "
		    "6.3)",
		    hi.received, MSG_HOPS_MAX);
		return false;
	}
	submission_complete(&m->sub, buf_head(&m->body), buf_used(&m->body), cfg->hostname);
	submission_content(&m->sub, buf_head(&m->body), buf_used(&m->body));
	if (!addr_is_ascii(raw, len))
		m->sub.flags |= MSG_F_8BIT;
	return check_size(m, &m->sub, cfg, "");
}

/* ---- one message ------------------------------------------------------- */

static void msg_committed(struct submission *sub, void *arg);

static const char *const message_fields[] = {
	"from",    "to",   "subject",     "text", "html",
	"headers", "vars", "attachments", "raw",  "unsubscribe",
};

/* msg_build - validate one message o and build it into m (envelope,
 * content): true when it is ready to commit, else m->status says why.
 * Needs no session: spool only numbers the message. */
static bool msg_build(struct api_msg *m, json_t *o, const struct api_config *cfg,
                      struct spool *spool, const char *source)
{
	if (!json_is_object(o)) {
		api_msg_error(m, 400, "bad_field", "a message must be a JSON object");
		return false;
	}
	const char *k;
	json_t *v;
	json_object_foreach(o, k, v)
	{
		bool known = false;
		for (size_t i = 0; i < RP_ARRAY_LEN(message_fields); i++)
			known |= !strcmp(k, message_fields[i]);
		if (!known) {
			api_msg_error(m, 400, "bad_field", "unknown field '%s'", k);
			return false;
		}
	}
	const char *from = opt_string(m, o, "from", NULL);
	if (m->status)
		return false;
	if (!from) {
		api_msg_error(m, 400, "bad_field", "from is required");
		return false;
	}
	/* One mailbox, its display name whole words: "A <a@x> <b@y>" or an
	 * open quote cannot smuggle a second address or a header. */
	const char *fa, *fname, *why;
	size_t fl, fnl;
	if ((why = mime_mailbox_split(from, strlen(from), &fname, &fnl, &fa, &fl))) {
		api_msg_error(m, 400, "bad_field", "from %s", why);
		return false;
	}
	if (!api_check_address(m, "from", fa, fl, NULL))
		return false;
	json_t *to = json_object_get(o, "to");
	if (!to) {
		api_msg_error(m, 400, "bad_field", "to is required");
		return false;
	}
	if (!parse_recipients(m, to, cfg->max_recipients))
		return false;
	if (!spool_accepting(spool)) {
		api_msg_error(m, 503, "unavailable", "the spool is full; retry later");
		return false;
	}
	bool utf8 = !addr_is_ascii(fa, fl);
	submission_sender(&m->sub, fa, fl, 0, NULL, 0);
	for (unsigned i = 0; i < m->nrcpt; i++) {
		submission_add_rcpt(&m->sub, m->to[i].email, m->to[i].len, 0, NULL, 0);
		utf8 |= !addr_is_ascii(m->to[i].email, m->to[i].len);
	}
	if (utf8)
		m->sub.flags |= MSG_F_SMTPUTF8;
	submission_start(&m->sub, spool, source);
	struct submit_trace t = {
		.from = "api", .from_ip = source, .by = cfg->hostname, .with = "HTTP"
	};
	submission_trace(&m->sub, &t);
	return json_object_get(o, "raw") ? build_raw(m, o, cfg) : build_mime(m, o, cfg);
}

/* prepare - validate and build one message; on success it is handed to the
 * spool (m->req) and the request waits for it. */
static void prepare(struct api_submit *sub, struct api_msg *m, json_t *o)
{
	struct api_server *srv = sub->s->srv;
	const struct api_config *cfg = srv->cfg;
	char source[96];
	m->req = sub;
	snprintf(source, sizeof(source), "key #%d %s", sub->s->req.key_index, sub->s->peer);
	if (!msg_build(m, o, cfg, srv->spool, source))
		return;
	sub->pending++;
	submission_sign(&m->sub, cfg->signers, cfg->dkim);
	submission_commit(&m->sub, srv->spool, loop_inbox(srv->loop), msg_committed, m);
}

static void msg_free(struct api_msg *m)
{
	submission_free(&m->sub);
	buf_free(&m->body);
	if (m->variants)
		for (unsigned i = 0; i < m->nrcpt; i++)
			buf_free(&m->variants[i]);
	free(m->variants);
	free(m->viov);
	free(m->to);
}

/* ---- answers ----------------------------------------------------------- */

static void result_json(struct buf *b, const struct api_msg *m)
{
	char id[17];
	if (m->status) {
		buf_printf(b, "{\"error\":{\"code\":\"%s\",\"message\":", m->code);
		http_json_str(b, m->message, strlen(m->message));
		buf_puts(b, "}}");
		return;
	}
	rp_id_format(m->sub.id, id);
	buf_printf(b, "{\"id\":\"%s\",\"recipients\":[", id);
	for (unsigned i = 0; i < m->nrcpt; i++) {
		buf_puts(b, i ? ",{\"email\":" : "{\"email\":");
		http_json_str(b, m->to[i].email, m->to[i].len);
		buf_printf(b, ",\"id\":\"%s.%u\"%s}", id, i,
		           submission_rcpt_suppressed(&m->sub, i) ? ",\"state\":\"suppressed\""
		                                                  : "");
	}
	buf_puts(b, "]}");
}

static void submit_finish(struct api_submit *sub)
{
	struct api_session *s = sub->s;
	struct buf b = { 0 };
	if (!s->released) {
		if (!sub->batch) {
			struct api_msg *m = &sub->msgs[0];
			if (m->status) {
				http_error(s, m->status, m->code, "%s", m->message);
			} else {
				result_json(&b, m);
				http_respond_json(s, 202, &b);
			}
		} else {
			buf_puts(&b, "{\"results\":[");
			for (unsigned i = 0; i < sub->n; i++) {
				if (i)
					buf_puts(&b, ",");
				result_json(&b, &sub->msgs[i]);
			}
			buf_puts(&b, "]}");
			http_respond_json(s, 202, &b);
		}
	}
	buf_free(&b);
	for (unsigned i = 0; i < sub->n; i++)
		msg_free(&sub->msgs[i]);
	free(sub->msgs);
	free(sub->objs);
	json_decref(sub->doc);
	free(sub);
	http_end_async(s);
}

/* msg_committed - the spool answered for one message: route its
 * recipients, and answer the request when it was the last. */
static void msg_committed(struct submission *ms, void *arg)
{
	struct api_msg *m = arg;
	struct api_submit *sub = m->req;
	struct api_server *srv = sub->s->srv;
	enum spool_status st = submission_status(ms);
	if (st == SPOOL_OK) {
		submission_route(ms, srv->ops->route, srv->ctx);
		srv->accepted++;
		srv->suppressed += submission_suppressed(ms);
		if (log_enabled(LOG_INFO)) {
			char id[17], from[LOG_VALUE_MAX];
			size_t slen;
			const char *sender = submission_sender_addr(ms, &slen);
			rp_id_format(ms->id, id);
			log_info("api accepted id=%s from=%s nrcpt=%u size=%llu client=%s", id,
			         log_addr(from, sizeof(from), sender, slen), m->nrcpt,
			         (unsigned long long)submission_size(ms), sub->s->peer);
		}
	} else if (st == SPOOL_EFULL) {
		api_msg_error(m, 503, "unavailable", "the spool is full; retry later");
	} else {
		api_msg_error(m, 503, "unavailable",
		              "the spool could not store the message; retry later");
	}
	if (m->status)
		srv->rejected++;
	if (--sub->pending == 0)
		submit_finish(sub);
}

#define API_PROBE_MIN    (256u * 1024) /* bodies above this have their memory checked */
#define API_PROBE_FACTOR 6             /* JSON values, lexer copies, MIME (QP: 3x) */

/* parse - the request's body as JSON, and its messages: false after
 * answering an error (the submission is then over). */
static bool parse(struct api_submit *sub)
{
	struct api_session *s = sub->s;
	/* The body is JSON whatever the Content-Type says: `curl -d` sends
	 * application/x-www-form-urlencoded, and refusing it helps nobody. */
	json_error_t je;
	/* Memory for a large body first: jansson's out-of-memory paths are
	 * not safe (SIGSEGV, "double free" inside json_loadb under RLIMIT_AS)
	 * and the MIME built from the document takes up to three times its
	 * text again. A request that cannot have that much now is a 503
	 * (Retry-After), never a crash. Advisory: other threads allocate too. */
	size_t len = buf_used(&s->req.body);
	if (len > API_PROBE_MIN) {
		/* mmap, not malloc: an address-space reservation never touched,
		 * and no change to malloc's mmap threshold. */
		size_t n = len * API_PROBE_FACTOR;
		void *probe =
		    mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (probe == MAP_FAILED) {
			http_error(s, 503, "unavailable",
			           "no memory for a request of %zu bytes; retry later", len);
			return false;
		}
		munmap(probe, n);
	}
	sub->doc =
	    json_loadb(buf_head(&s->req.body), buf_used(&s->req.body), JSON_REJECT_DUPLICATES, &je);
	if (!sub->doc) {
		http_error(s, 400, "bad_json", "invalid JSON at line %d, column %d: %s", je.line,
		           je.column, je.text);
		return false;
	}
	if (!sub->batch) {
		sub->n = 1;
		sub->objs = xmalloc(sizeof(*sub->objs));
		sub->objs[0] = sub->doc;
	} else {
		json_t *msgs = json_object_get(sub->doc, "messages");
		if (!json_is_object(sub->doc) || json_object_size(sub->doc) != 1 ||
		    !json_is_array(msgs)) {
			http_error(s, 400, "bad_field", "the body must be {\"messages\": [...]}");
			return false;
		}
		size_t n = json_array_size(msgs);
		if (!n) {
			http_error(s, 400, "bad_field", "messages is empty");
			return false;
		}
		if (n > s->srv->cfg->max_batch) {
			http_error(s, 413, "too_large",
			           "messages has %zu entries; at most %u per batch", n,
			           s->srv->cfg->max_batch);
			return false;
		}
		sub->n = (unsigned)n;
		sub->objs = xcalloc(n, sizeof(*sub->objs));
		for (size_t i = 0; i < n; i++)
			sub->objs[i] = json_array_get(msgs, i);
	}
	sub->msgs = xcalloc(sub->n, sizeof(*sub->msgs));
	/* Hold one count so that early commits cannot finish the request
	 * before every message has been handed over. */
	sub->pending = 1;
	return true;
}

static void work_pop(struct api_server *srv)
{
	struct api_submit *sub = srv->work_head;
	srv->work_head = sub->work_next;
	if (!srv->work_head)
		srv->work_tail = NULL;
}

/* work - parse queued requests and prepare their messages, oldest request
 * first, for about API_WORK_SLICE_NS of this iteration; the rest in the
 * next ones. A body is parsed in one go (jansson has no incremental
 * parser): one 1,000-message batch costs ~20 ms, and no longer eight of
 * them that arrived together in one iteration. */
static void work(struct loop_defer *d)
{
	struct api_server *srv = RP_CONTAINER_OF(d, struct api_server, work);
	uint64_t start = rp_mono_ns();
	bool first = true;
	while (srv->work_head && (first || rp_mono_ns() - start < API_WORK_SLICE_NS)) {
		first = false;
		struct api_submit *sub = srv->work_head;
		if (!sub->objs) {
			if (sub->s->released || !parse(sub)) { /* gone, or answered */
				work_pop(srv);
				struct api_session *s = sub->s;
				json_decref(sub->doc);
				free(sub);
				http_end_async(s);
			}
			continue;
		}
		while (sub->next < sub->n) {
			struct api_msg *m = &sub->msgs[sub->next];
			prepare(sub, m, sub->objs[sub->next]);
			if (m->status)
				srv->rejected++;
			sub->next++;
			if ((sub->next & 15) == 0 && rp_mono_ns() - start >= API_WORK_SLICE_NS)
				break;
		}
		if (sub->next < sub->n)
			break;
		work_pop(srv);
		if (--sub->pending == 0)
			submit_finish(sub);
	}
	if (srv->work_head)
		loop_defer_next(srv->loop, &srv->work, work);
}

/* submit - queue the request; its answer comes once its messages are
 * durable (or refused). */
static void submit(struct api_session *s, bool batch)
{
	struct api_server *srv = s->srv;
	struct api_submit *sub = xcalloc(1, sizeof(*sub));
	sub->s = s;
	sub->batch = batch;
	sub->render_max = RP_MAX(srv->cfg->max_request * API_RENDER_FACTOR, API_RENDER_MIN);
	sub->render_left = sub->render_max;
	http_begin_async(s);
	if (srv->work_tail)
		srv->work_tail->work_next = sub;
	else
		srv->work_head = sub;
	srv->work_tail = sub;
	/* At the end of this batch of completions (a no-op when the work is
	 * already queued, for now or for the next iteration). */
	loop_defer(srv->loop, &srv->work, work);
}

void api_submit_one(struct api_session *s, const char *arg)
{
	(void)arg;
	submit(s, false);
}

void api_submit_batch(struct api_session *s, const char *arg)
{
	(void)arg;
	submit(s, true);
}

int api_submit_check(const char *json, size_t len, const struct api_config *cfg, struct spool *sp,
                     char *err, size_t errlen, api_check_fn each, void *arg)
{
	json_error_t je;
	json_t *o = json_loadb(json, len, JSON_REJECT_DUPLICATES, &je);
	if (!o) {
		snprintf(err, errlen, "bad_json: %s", je.text);
		return 400;
	}
	struct api_submit req = { .render_left = RP_MAX(cfg->max_request * API_RENDER_FACTOR,
		                                        API_RENDER_MIN) };
	req.render_max = req.render_left;
	struct api_msg m = { .req = &req };
	bool built = msg_build(&m, o, cfg, sp, "key #0 check");
	rp_assert(built == !m.status); /* else it would be answered as accepted */
	for (unsigned i = 0; built && each && i < (m.variants ? m.nrcpt : 1); i++) {
		const struct buf *v = m.variants ? &m.variants[i] : submission_prefix(&m.sub);
		each(arg, buf_head(v), buf_used(v), m.variants ? NULL : m.sub.body[2].iov_base,
		     m.variants ? 0 : m.sub.body[2].iov_len);
	}
	int status = m.status;
	if (status)
		snprintf(err, errlen, "%s: %s", m.code, m.message);
	msg_free(&m);
	json_decref(o);
	return status;
}
